"""summary.md of the helps-cpu experiment (docs/experiments.md section 5) from the files in its folder:
the corpus, each final's per-base losses against the counting line of its own evaluation geometry and
its zero-shot against the back-off tables, the probe beside the bag of k-mers, fine-tuning with the
rate chosen on dev, all beside the untrained control of the same k and seed, and the reading rule
written in section 5 before any downstream result, item by item.
Usage: helps_cpu_summary.py DIR > DIR/summary.md"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

ARMS = ("k1-bert", "k6-span", "k6-randommask")
BASE_KEYS = ("span_k", "span_2k")


def control_of(arm: str) -> str:
    return f"{arm.split('-')[0]}-untrained"


def _load(d: Path, kind: str) -> dict[str, dict]:
    return {p.name[: -len(f".{kind}.json")]: json.loads(p.read_text()) for p in sorted(d.glob(f"*.{kind}.json"))}


def _final_eval(path: Path) -> dict | None:
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    evals = [x for x in lines if "eval_span_k_base_loss" in x]
    return evals[-1] if evals else None


def _sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def ft_seed_means(r: dict) -> dict[str, float]:
    """{fine-tuning seed: mean test score over datasets}, for the seeds every dataset has."""
    per = {ds["dataset"]: ds.get("per_seed", {}) for ds in r["datasets"]}
    seeds = set.intersection(*(set(v) for v in per.values())) if per else set()
    return {s: statistics.mean(per[ds][s] for ds in per) for s in sorted(seeds)}


def reading(diffs: list[float], spreads: list[float], better: str, worse: str) -> str:
    """``better`` where every pair's difference is above its spread, ``worse`` where every one is below
    minus it, else "cannot tell"."""
    if diffs and all(x > sp for x, sp in zip(diffs, spreads)):
        return better
    if diffs and all(-x > sp for x, sp in zip(diffs, spreads)):
        return worse
    return "cannot tell"


def rule(finals: dict, probes: dict, tunes: dict, seeds: list[str]) -> list[str]:
    """The section-5 rule, item by item, over the seeds where every model needed has its results."""
    out = ["", "## The reading rule, item by item", ""]
    # pretraining vs its control: fine-tuning against the fine-tuning seeds' spread, probe by sign
    out += ["| arm | seed | fine-tuning mean − control | spread (fine-tuning seeds) | probe mean − control |",
            "|---|---|---:|---:|---:|"]
    verdicts = []
    for arm in ARMS:
        diffs, spreads, signs = [], [], []
        for s in seeds:
            a, c = f"{arm}-s{s}", f"{control_of(arm)}-s{s}"
            if a in tunes and c in tunes:
                ma, mc = ft_seed_means(tunes[a]), ft_seed_means(tunes[c])
                diffs.append(statistics.mean(ma.values()) - statistics.mean(mc.values()))
                spreads.append(max(_sd(list(ma.values())), _sd(list(mc.values()))))
            if a in probes and c in probes:
                signs.append(probes[a]["mean"]["model"] - probes[c]["mean"]["model"])
            cells = (f"{diffs[-1]:+.4f} | {spreads[-1]:.4f}" if len(diffs) and a in tunes and c in tunes else "– | –")
            out.append(f"| {arm} | {s} | {cells} | " + (f"{signs[-1]:+.4f}" if a in probes and c in probes else "–")
                       + " |")
        complete = len(diffs) == len(seeds) >= 2
        ft = reading(diffs, spreads, "helps", "hurts") if complete else "not yet"
        probe = ("helps (every pair)" if signs and all(x > 0 for x in signs) else "hurts (every pair)"
                 if signs and all(x < 0 for x in signs) else "cannot tell") if len(signs) == len(seeds) >= 2 else "not yet"
        verdicts.append(f"- *Pretraining helps* `{arm}`? fine-tuning: **{ft}**; probe: **{probe}**.")
    out += [""] + verdicts
    # RandomMask vs span: against the pretraining seeds' spread
    metrics = {"fine-tuning mean": lambda n: statistics.mean(ft_seed_means(tunes[n]).values()) if n in tunes else None,
               "probe mean": lambda n: probes[n]["mean"]["model"] if n in probes else None}
    for key in BASE_KEYS:  # lower is better: negated, so that positive is RandomMask better throughout
        metrics[f"per base {key.replace('_', '-')}"] = (
            lambda n, key=key: -finals[n][f"eval_{key}_base_loss"] if n in finals else None)
    out += ["", "RandomMask − span per pair (positive: RandomMask better; per-base losses negated), against the "
            "pretraining seeds' spread (the larger of the two arms' sd over seeds):", "",
            "| metric | " + " | ".join(f"seed {s}" for s in seeds) + " | spread | reading |",
            "|---|" + "---:|" * len(seeds) + "---:|---|"]
    for label, get in metrics.items():
        rm = [get(f"k6-randommask-s{s}") for s in seeds]
        sp = [get(f"k6-span-s{s}") for s in seeds]
        if len(seeds) < 2 or None in rm or None in sp:
            out.append(f"| {label} | " + " | ".join("–" for _ in seeds) + " | – | not yet |")
            continue
        diffs = [a - b for a, b in zip(rm, sp)]
        spread = max(_sd(rm), _sd(sp))
        out.append(f"| {label} | " + " | ".join(f"{x:+.4f}" for x in diffs) + f" | {spread:.4f} | "
                   + reading(diffs, [spread] * len(diffs), "RandomMask better", "span better") + " |")
    # knows DNA beyond counting
    below = [f"{n} ({', '.join(k.replace('_', '-') for k in BASE_KEYS if finals[n].get(f'below_{k}'))})"
             for n in finals if any(finals[n].get(f"below_{k}") for k in BASE_KEYS)]
    out += ["", "- *Knows DNA beyond counting* (a final's per-base loss below its geometry's best counting line): "
            + (", ".join(below) if below else f"none of {len(finals)}") + "."]
    return out


def main(folder: str) -> None:
    d = Path(folder)
    out = ["# helps-cpu: summary", "", "Written by `jobs/experiments/helps_cpu_summary.py` from this folder; read "
           "with docs/experiments.md section 5 (design and rule written there before any run).", ""]
    manifest = d / "corpus.manifest.json"
    if manifest.exists():
        t = json.loads(manifest.read_text())["totals"]
        out += [f"Corpus: {t.get('records_read', 0):,} records read, {t.get('duplicates', 0):,} duplicates, "
                f"{t.get('dropped_overlap', 0):,} dropped for a 31-mer shared with a GUE dev/test sequence, "
                f"{t.get('records_kept', 0):,} kept; training {t['train_bases']:,} bp, validation "
                f"{t['validation_bases']:,} bp.", ""]
    finals: dict[str, dict] = {}
    out += ["## Pretraining (final evaluation; nats per hidden base; the line: best counting in that geometry)", "",
            "| run | step | tokens | span-k per base | line | − line | span-2k per base | line | − line |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in sorted(d.glob("*.metrics.jsonl")):
        name = p.name.split(".")[0]
        ev, floors_path = _final_eval(p), d / f"{name}.floors.json"
        if ev is None or not floors_path.exists():
            continue
        floors = json.loads(floors_path.read_text())
        row = dict(ev)
        cells = []
        for key in BASE_KEYS:
            loss, line = ev.get(f"eval_{key}_base_loss"), floors.get(f"best_counting_{key}")
            row[f"below_{key}"] = loss is not None and line is not None and loss < line
            cells.append(f"{loss:.4f} | {line:.4f} | {loss - line:+.4f}" if None not in (loss, line) else "– | – | –")
        finals[name] = row
        out.append(f"| {name} | {ev['step']:,} | {ev.get('tokens', 0):,} | " + " | ".join(cells) + " |")
    zs = _load(d, "zeroshot")
    if zs:
        out += ["", "## Zero-shot on the corpus's validation split (mean log P(ref), both strands)", "",
                "| run | model | ± | best table (m) | model − best table | ± |", "|---|---:|---:|---:|---:|---:|"]
        for name, z in zs.items():
            out.append(f"| {name} | {z['mean_log_p_ref']:.4f} | {z['sem']:.4f} | {z['tables'][z['best_table']]:.4f} "
                       f"({z['best_table']}) | {z['vs_best_table']:+.4f} | {z['vs_best_table_sem']:.4f} |")
        out.append(f"\nChance: {-math.log(4):.4f}.")
    probes, tunes = _load(d, "probe"), _load(d, "finetune")
    names = sorted(set(probes) | set(tunes), key=lambda n: (n.rsplit("-s", 1)[1], n))
    if names:
        out += ["", "## Downstream (test MCC; chance 0)", "",
                "| model | probe mean | bag of k-mers | fine-tuning mean ± sd over fine-tuning seeds | rate chosen on dev, "
                "per dataset |", "|---|---:|---:|---:|---|"]
        for n in names:
            p, f = probes.get(n), tunes.get(n)
            means = list(ft_seed_means(f).values()) if f else []
            rates = ", ".join(f"{ds['dataset']} {ds['lr_search']['selected']:g}" for ds in f["datasets"]
                              if ds.get("lr_search") and ds["lr_search"].get("selected")) if f else ""
            out.append(f"| {n} | {p['mean']['model']:.3f} | {p['mean']['kmer_bag']:.3f} | " if p else f"| {n} | – | – | ")
            out[-1] += (f"{statistics.mean(means):.3f} ± {_sd(means):.3f} | {rates or '–'} |" if means else "– | – |")
    seeds = sorted({n.rsplit("-s", 1)[1] for n in list(finals) + names})
    out += rule(finals, probes, tunes, seeds)
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
