"""The downstream part of the plateau experiment's summary (docs/experiments.md section 4): linear
probes on frozen features ({run}.probe.json, `randommask probe`) and fine-tuning ({run}.finetune.json,
`randommask finetune`) of the finals and of the no-pretraining controls, written by
jobs/experiments/plateau-finetune.sh. Per dataset, beside the bag of k-mers and chance (MCC 0);
paired by pretraining seed; and how many control trials stayed at MCC 0."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from plateau_downstream_rule import per_seed, rule_section  # beside this script: sys.path[0] when it is run

ARMS = ("span", "randommask", "wide-now", "no-pretraining")
PAIRS = (("randommask", "span"), ("wide-now", "span"), ("randommask", "wide-now"), ("span", "no-pretraining"),
         ("randommask", "no-pretraining"), ("wide-now", "no-pretraining"))


def _load(d: Path, kind: str) -> dict[str, dict]:
    return {p.name.split(".")[0]: json.loads(p.read_text()) for p in sorted(d.glob(f"*.{kind}.json"))}


def _finetune_scores(r: dict) -> dict[str, list[float]]:
    """dataset -> the test scores of its fine-tuning seeds, in seed order."""
    return {ds: list(v.values()) for ds, v in per_seed(r).items()}


def _order(names) -> list[str]:
    def key(n: str):
        arm, seed = n.rsplit("-s", 1)
        return (int(seed) if seed.isdigit() else 99, ARMS.index(arm) if arm in ARMS else 9, n)
    return sorted(names, key=key)


def _mean_sd(xs: list[float]) -> str:
    if not xs:
        return "–"
    return f"{statistics.mean(xs):.3f}" + (f" ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else "")


def section(d: Path) -> list[str]:
    probes, tunes = _load(d, "probe"), _load(d, "finetune")
    if not probes and not tunes:
        return ["", "## Downstream (probe, fine-tuning)", "",
                "Not run yet: jobs/experiments/plateau-finetune.sh runs them on the finals."]
    out = []
    if probes:
        runs = _order(probes)
        datasets = list(next(iter(probes.values()))["results"])
        first = probes[runs[0]]
        out += ["", "## Linear probe on frozen features (test MCC)", "",
                f"`randommask probe`: logistic regression on mean-pooled embeddings, sequences read as windows of "
                f"{first.get('window_bp') or 'whole'} bp (the pretraining's); the bag of {first['k']}-mers is the "
                "same probe on k-mer counts, chance is 0.", "",
                "| dataset | bag of k-mers | " + " | ".join(runs) + " |", "|---|---:|" + "---:|" * len(runs)]
        for ds in datasets + ["mean"]:
            row = [(probes[n]["mean"] if ds == "mean" else probes[n]["results"][ds]) for n in runs]
            out.append(f"| {ds} | {row[0]['kmer_bag']:.3f} | " + " | ".join(f"{r['model']:.3f}" for r in row) + " |")
    if tunes:
        runs = _order(tunes)
        scores = {n: _finetune_scores(tunes[n]) for n in runs}
        datasets = list(scores[runs[0]])
        some = tunes[runs[0]]
        rows = lambda n: f"at most {n:,}" if n else "all"  # noqa: E731
        out += ["", "## Fine-tuning (test MCC, mean ± sd over fine-tuning seeds)", "",
                f"`randommask finetune`, protocol {some['protocol']} (selection {some['selection']}), training rows "
                f"{rows(some.get('max_train'))}, dev and test rows {rows(some.get('max_eval'))}. Chance is 0.", "",
                "| dataset | " + " | ".join(runs) + " |", "|---|" + "---:|" * len(runs)]
        for ds in datasets:
            out.append(f"| {ds} | " + " | ".join(_mean_sd(scores[n].get(ds, [])) for n in runs) + " |")
        zeros = {n: sum(v == 0.0 for xs in scores[n].values() for v in xs) for n in runs}
        trials = {n: sum(len(xs) for xs in scores[n].values()) for n in runs}
        failed = {n: tunes[n].get("failed_trials", 0) for n in runs}
        out.append("| trials at MCC 0 (of) | " + " | ".join(f"{zeros[n]} ({trials[n]})" for n in runs) + " |")
        if any(failed.values()):
            out.append("| failed trials | " + " | ".join(str(failed[n]) for n in runs) + " |")
    lines = _paired(probes, tunes)
    if lines:
        out += ["", "## Downstream, paired by pretraining seed", "",
                "A − B in test MCC: the mean over datasets, then each dataset in the tables' order.", "",
                "| seed | A − B | probe: mean (per dataset) | fine-tuning: mean (per dataset) |", "|---|---|---|---|"]
        out += lines
    return out + rule_section(probes, tunes)


def _paired(probes: dict, tunes: dict) -> list[str]:
    seeds = sorted({n.rsplit("-s", 1)[1] for n in list(probes) + list(tunes)})
    lines = []
    for s in seeds:
        for a, b in PAIRS:
            na, nb = f"{a}-s{s}", f"{b}-s{s}"
            cells = []
            for kind, src in (("probe", probes), ("finetune", tunes)):
                if na not in src or nb not in src:
                    cells.append("–")
                    continue
                if kind == "probe":
                    diffs = {ds: src[na]["results"][ds]["model"] - src[nb]["results"][ds]["model"]
                             for ds in src[na]["results"] if ds in src[nb]["results"]}
                else:
                    fa, fb = _finetune_scores(src[na]), _finetune_scores(src[nb])
                    diffs = {ds: statistics.mean(fa[ds]) - statistics.mean(fb[ds]) for ds in fa
                             if fa[ds] and fb.get(ds)}
                cells.append(f"**{statistics.mean(diffs.values()):+.3f}** ("
                             + ", ".join(f"{v:+.3f}" for v in diffs.values()) + ")" if diffs else "–")
            if cells != ["–", "–"]:
                lines.append(f"| {s} | {a} − {b} | {cells[0]} | {cells[1]} |")
    return lines
