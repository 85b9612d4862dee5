"""The tables of docs/experiments.md section 3.4, from the files collapse-cpu.sh keeps in
docs/experiments/collapse-cpu/: [MASK]-only eval losses at the last step (mean ± std over pretraining
seeds, beside the floors) and GUE fine-tuning (mean ± std over every pretraining x fine-tuning seed,
beside the no-pretraining control and chance), with the paired span - randommask differences.

Usage: python jobs/experiments/collapse_cpu_summary.py [DIR] > DIR/summary.md
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys

import numpy as np

ARMS = ("span", "randommask", "bert", "no-pretraining")


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    a = np.array(values, dtype=float)
    sd = a.std(ddof=1) if len(a) > 1 else float("nan")
    return f"{a.mean():.3f} ± {sd:.3f} (n={len(a)})"


def runs(folder: str, suffix: str) -> dict[str, dict[int, str]]:
    """{arm: {pretraining seed: path}} for files named ARM-sSEED<suffix>."""
    out: dict[str, dict[int, str]] = {}
    for path in sorted(glob.glob(os.path.join(folder, f"*{suffix}"))):
        m = re.fullmatch(rf"(.+)-s(\d+){re.escape(suffix)}", os.path.basename(path))
        if m and m.group(1) in ARMS:
            out.setdefault(m.group(1), {})[int(m.group(2))] = path
    return out


def evals(path: str) -> dict[int, dict]:
    """{step: metrics line} for the lines of a metrics.jsonl that carry an evaluation."""
    rows = (json.loads(line) for line in open(path))
    return {r["step"]: r for r in rows if "eval_span_k_mask_loss" in r}


def pretraining_table(folder: str) -> list[str]:
    floors = json.load(open(os.path.join(folder, "floors.json")))
    found = runs(folder, ".metrics.jsonl")
    lines = [f"Floors: context-free {floors['context_free']:.2f}; overlap references (plug-in, approximate) "
             f"span-k {floors['eval_span_k_overlap']:.2f}, span-2k {floors['eval_span_2k_overlap']:.2f} nats.", "",
             "| arm | step | seeds | span-k [MASK] loss | span-2k [MASK] loss |", "|---|---:|---|---:|---:|"]
    curves = {arm: {s: evals(p) for s, p in found[arm].items()} for arm in ARMS if arm in found}
    last = {arm: {s: c[max(c)] for s, c in by_seed.items()} for arm, by_seed in curves.items()}
    for arm, by_seed in last.items():
        steps = {r["step"] for r in by_seed.values()}
        lines.append(f"| {arm} | {'/'.join(map(str, sorted(steps)))} | {','.join(map(str, sorted(by_seed)))} | "
                     f"{mean_std([r['eval_span_k_mask_loss'] for r in by_seed.values()])} | "
                     f"{mean_std([r['eval_span_2k_mask_loss'] for r in by_seed.values()])} |")
    lines += ["", "Over training (mean over the seeds above; span-k / span-2k):", "",
              "| step | " + " | ".join(last) + " |", "|---:|" + "---:|" * len(last)]
    steps = sorted(set.intersection(*(set(c) for by_seed in curves.values() for c in by_seed.values())))
    for step in [s for s in steps if s % 1000 == 0]:
        cells = [f"{np.mean([c[step]['eval_span_k_mask_loss'] for c in curves[a].values()]):.3f} / "
                 f"{np.mean([c[step]['eval_span_2k_mask_loss'] for c in curves[a].values()]):.3f}" for a in last]
        lines.append(f"| {step:,} | " + " | ".join(cells) + " |")
    if "span" in last and "randommask" in last:
        lines += ["", "Paired by seed (span − randommask; same weights, data and masks until the first widening):", "",
                  "| seed | span-k | span-2k |", "|---:|---:|---:|"]
        gaps = {key: [] for key in ("eval_span_k_mask_loss", "eval_span_2k_mask_loss")}
        for s in sorted(set(last["span"]) & set(last["randommask"])):
            for key in gaps:
                gaps[key].append(last["span"][s][key] - last["randommask"][s][key])
            lines.append(f"| {s} | " + " | ".join(f"{g[-1]:+.3f}" for g in gaps.values()) + " |")
        lines.append("| mean ± std | " + " | ".join(mean_std(g) for g in gaps.values()) + " |")
    return lines


def finetune_table(folder: str) -> list[str]:
    found = runs(folder, ".finetune.json")
    # scores[arm][dataset] = {(pretraining seed, fine-tuning seed): MCC}
    scores: dict[str, dict[str, dict[tuple[int, int], float]]] = {}
    for arm, seeds in found.items():
        for s, path in seeds.items():
            for row in json.load(open(path))["datasets"]:
                for ft, v in row.get("per_seed", {}).items():
                    scores.setdefault(arm, {}).setdefault(row["dataset"], {})[(s, int(ft))] = v
    arms = [a for a in ARMS if a in scores]
    if not arms:
        return ["No fine-tuning results yet."]
    datasets = list(dict.fromkeys(d for a in arms for d in scores[a]))
    lines = ["Test MCC (chance 0), mean ± std over every pretraining × fine-tuning seed:", "",
             "| dataset | " + " | ".join(arms) + " |", "|---|" + "---:|" * len(arms)]
    for d in datasets:
        lines.append(f"| {d} | " + " | ".join(mean_std(list(scores[a].get(d, {}).values())) for a in arms) + " |")
    # the six-dataset mean per (pretraining, fine-tuning) seed pair, then its spread
    avg = {}
    for a in arms:
        pairs = set.intersection(*(set(scores[a].get(d, {})) for d in datasets))
        avg[a] = {p: float(np.mean([scores[a][d][p] for d in datasets])) for p in sorted(pairs)}
    lines.append("| **mean of datasets** | " + " | ".join(mean_std(list(avg[a].values())) for a in arms) + " |")
    lines += ["", "Per pretraining seed (mean of datasets and fine-tuning seeds), the spread that pretraining adds:", "",
              "| arm | " + " | ".join(f"seed {s}" for s in sorted({p[0] for a in arms for p in avg[a]})) + " |",
              "|---|" + "---:|" * len({p[0] for a in arms for p in avg[a]})]
    for a in arms:
        by_pt: dict[int, list[float]] = {}
        for (s, _), v in avg[a].items():
            by_pt.setdefault(s, []).append(v)
        lines.append(f"| {a} | " + " | ".join(f"{np.mean(v):.3f}" for _, v in sorted(by_pt.items())) + " |")
    lines += ["", "Paired differences of the mean of datasets (same pretraining and fine-tuning seeds):", "",
              "| pair | mean ± std | pairs above 0 |", "|---|---:|---:|"]
    for a, b in (("randommask", "span"), ("bert", "span"), ("span", "no-pretraining"),
                 ("randommask", "no-pretraining"), ("bert", "no-pretraining")):
        if a in avg and b in avg:
            diffs = [avg[a][p] - avg[b][p] for p in sorted(set(avg[a]) & set(avg[b]))]
            if diffs:
                lines.append(f"| {a} − {b} | {mean_std(diffs)} | {sum(d > 0 for d in diffs)}/{len(diffs)} |")
    return lines


def main() -> None:
    folder = sys.argv[1] if len(sys.argv) > 1 else "docs/experiments/collapse-cpu"
    print("\n".join(["# collapse-cpu comparison: summary", "", "## Pretraining ([MASK]-only eval loss, nats, last step)",
                     "", *pretraining_table(folder), "", "## GUE fine-tuning", "", *finetune_table(folder)]))


if __name__ == "__main__":
    main()
