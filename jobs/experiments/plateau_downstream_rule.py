"""The plateau experiment's downstream reading rule (docs/experiments.md section 4, "Downstream",
written 2026-12-03 before any arm but span-s0 had a final), computed item by item once at least two
pretraining seeds have every run's probe and fine-tuning. Called by plateau_downstream.py; the rule's
wording is docs/experiments.md's, not this file's."""

from __future__ import annotations

import statistics

ARMS = ("span", "randommask", "wide-now")
CONTROL = "no-pretraining"


def per_seed(r: dict) -> dict[str, dict[str, float]]:
    """dataset -> {fine-tuning seed: test score}, in seed order, from a {run}.finetune.json."""
    return {ds["dataset"]: dict(sorted(ds.get("per_seed", {}).items())) for ds in r["datasets"]}


def _ft_mean(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """{fine-tuning seed: mean over datasets}, for the seeds every dataset has."""
    seeds = set.intersection(*(set(v) for v in scores.values()))
    return {s: statistics.mean(scores[ds][s] for ds in scores) for s in sorted(seeds)}


def _sd(xs) -> float:
    xs = list(xs)
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def _reading(diffs: list[float], spreads: list[float], better: str, worse: str) -> str:
    """``better`` where every pair's difference is above its spread, ``worse`` where every one is below
    minus it."""
    if all(d > sp for d, sp in zip(diffs, spreads)):
        return better
    if all(-d > sp for d, sp in zip(diffs, spreads)):
        return worse
    return "cannot tell apart"


def rule_section(probes: dict, tunes: dict) -> list[str]:
    """Markdown lines; empty until two pretraining seeds have the probe and fine-tuning of span,
    RandomMask and the control (``wide-now`` enters where it has both too)."""
    seeds = sorted({n.rsplit("-s", 1)[1] for n in tunes}, key=lambda s: (not s.isdigit(), s))
    have = lambda a, s: f"{a}-s{s}" in probes and f"{a}-s{s}" in tunes  # noqa: E731
    full = [s for s in seeds if all(have(a, s) for a in ("span", "randommask", CONTROL))]
    if len(full) < 2:
        return []
    arms = [a for a in ARMS if all(have(a, s) for s in full)]
    ft = {a: {s: per_seed(tunes[f"{a}-s{s}"]) for s in full} for a in arms + [CONTROL]}
    datasets = list(ft["span"][full[0]])
    out = ["", f"## The downstream reading rule, item by item ({len(full)} complete seeds: {', '.join(full)})", "",
           "*Does a pretraining help?* Final − the same seed's control, fine-tuning test MCC, per seed pair "
           "(in brackets: the larger of the two runs' sd over fine-tuning seeds; for the mean, the sd over "
           "fine-tuning seeds of the mean over datasets). It helps where every pair is above its spread, "
           "hurts where every pair is below minus it.", "",
           "| dataset | " + " | ".join(f"{a} − control" for a in arms) + " |", "|---|" + "---|" * len(arms)]
    for ds in datasets + ["mean"]:
        cells = []
        for a in arms:
            diffs, spreads = [], []
            for s in full:
                x, c = ft[a][s], ft[CONTROL][s]
                xa, xc = (_ft_mean(x), _ft_mean(c)) if ds == "mean" else (x.get(ds, {}), c.get(ds, {}))
                diffs.append(statistics.mean(xa.values()) - statistics.mean(xc.values()))
                spreads.append(max(_sd(xa.values()), _sd(xc.values())))
            cells.append(", ".join(f"{d:+.3f} ({sp:.3f})" for d, sp in zip(diffs, spreads)) + ": "
                         + _reading(diffs, spreads, "helps", "hurts"))
        out.append(f"| {'**mean**' if ds == 'mean' else ds} | " + " | ".join(cells) + " |")
    probe_rows = []
    for a in arms:
        diffs = [probes[f"{a}-s{s}"]["mean"]["model"] - probes[f"{CONTROL}-s{s}"]["mean"]["model"] for s in full]
        probe_rows.append(f"{a} " + ", ".join(f"{d:+.3f}" for d in diffs) + ": "
                          + _reading(diffs, [0.0] * len(diffs), "helps", "hurts"))
    out += ["", "Probe (mean over datasets; one probe per model, so no fine-tuning spread: the sign in every pair): "
            + "; ".join(probe_rows) + "."]
    zeros = [sum(v == 0.0 for xs in ft[CONTROL][s].values() for v in xs.values()) for s in full]
    trials = [sum(len(xs) for xs in ft[CONTROL][s].values()) for s in full]
    out.append(f"Control trials left at MCC 0: {sum(zeros)} of {sum(trials)} "
               f"({', '.join(f'seed {s}: {z} of {t}' for s, z, t in zip(full, zeros, trials))}).")
    # RandomMask against span, and against wide-now (the curriculum), over the pretraining seeds' spread.
    means = {a: {"probe": [probes[f"{a}-s{s}"]["mean"]["model"] for s in full],
                 "fine-tuning": [statistics.mean(_ft_mean(ft[a][s]).values()) for s in full]} for a in arms}
    out += ["", "*Is RandomMask's representation better?* RandomMask − the other arm, mean test MCC over the "
            "datasets, per seed pair, against the larger of the two arms' sd over pretraining seeds.", "",
            "| RandomMask − | measure | " + " | ".join(f"seed {s}" for s in full) + " | spread | reading |",
            "|---|---|" + "---:|" * len(full) + "---:|---|"]
    overall = []
    for other in [a for a in arms if a != "randommask"]:
        readings = []
        for kind in ("probe", "fine-tuning"):
            diffs = [x - y for x, y in zip(means["randommask"][kind], means[other][kind])]
            spread = max(_sd(means["randommask"][kind]), _sd(means[other][kind]))
            readings.append(_reading(diffs, [spread] * len(diffs), "RandomMask better", f"{other} better"))
            out.append(f"| {other} | {kind} | " + " | ".join(f"{d:+.3f}" for d in diffs) + f" | {spread:.3f} | "
                       + readings[-1] + " |")
        # The rule asks for both measures: a representation better on one and not the other is "in between".
        overall.append(f"against {other}, {readings[0] if len(set(readings)) == 1 else 'in between'}")
    out += ["", "By the rule (the probe's and fine-tuning's means both): " + "; ".join(overall) + "."]
    beyond = []
    for a in arms:
        won = [ds for ds in datasets if all(probes[f"{a}-s{s}"]["results"][ds]["model"]
                                            > probes[f"{a}-s{s}"]["results"][ds]["kmer_bag"] for s in full)]
        mean_won = all(probes[f"{a}-s{s}"]["mean"]["model"] > probes[f"{a}-s{s}"]["mean"]["kmer_bag"] for s in full)
        beyond.append(f"{a}: {', '.join(won) if won else 'none'}" + ("; and the mean" if mean_won else ""))
    out += ["", "*Beyond k-mer content* (the probe beats the bag of k-mers in every seed): " + "; ".join(beyond) + "."]
    return out
