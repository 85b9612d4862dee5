"""summary.md of the plateau experiment (docs/experiments.md section 4) from the files in its folder:
where each run stands, span's plateau by the rule written before the runs, the per-base and
[MASK]-only losses beside their references, zero-shot against the count tables, and, once a seed
pair is complete, the paired differences. Usage: plateau_cpu_summary.py DIR > DIR/summary.md"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

from plateau_downstream import section  # beside this script: sys.path[0] when it is run
from plateau_rule import rule_section

ARMS = ("span", "randommask", "wide-now")
KEYS = ("eval_span_k_base_loss", "eval_span_2k_base_loss", "eval_span_k_mask_loss", "eval_span_2k_mask_loss")
MAX_STEPS = 16000


def evals(path: Path) -> dict[int, dict]:
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return {x["step"]: x for x in lines if "eval_span_k_base_loss" in x}


def plateau(ev: dict[int, dict], drop: float = 0.02) -> int | None:
    """The first multiple of 1,000 at which span-k [MASK] loss fell by less than ``drop`` over each
    of the two 1,000-step windows ending there."""
    loss = {s: x["eval_span_k_mask_loss"] for s, x in ev.items()}
    for s in sorted(loss):
        if s % 1000 or s < 2000 or any(t not in loss for t in (s - 2000, s - 1000)):
            continue
        if loss[s - 2000] - loss[s - 1000] < drop and loss[s - 1000] - loss[s] < drop:
            return s
    return None


def fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def main(folder: str) -> None:
    d = Path(folder)
    floors = json.loads((d / "floors.json").read_text()) if (d / "floors.json").exists() else {}
    tables = floors.get("base_table") or {}
    line = {k: floors.get(f"best_counting_{k}") for k in ("span_k", "span_2k")}  # the geometry-matched lines
    runs = {p.name.split(".")[0]: evals(p) for p in sorted(d.glob("*.metrics.jsonl"))}
    out = ["# plateau-cpu: summary", "",
           "Written by `jobs/experiments/plateau_cpu_summary.py` from this folder; read with docs/experiments.md "
           "section 4 (the reading rule was written there before the runs finished).", ""]
    if (d / "history.txt").exists():  # which commit made each piece of each run
        out += ["What made these results (history.txt: each pretraining piece and zero-shot scoring, with "
                "the commit of the clone that ran it):", ""]
        out += [f"- {line}" for line in (d / "history.txt").read_text().splitlines() if line.strip()] + [""]
    geometry = "; ".join(
        f"{k.replace('_', '-')} {fmt(v)} (m = 1..8: "
        + ", ".join(f"{x:.4f}" for _, x in sorted((floors.get(f'base_table_{k}') or {}).items(), key=lambda i: int(i[0])))
        + ")" for k, v in line.items() if v is not None)
    out += [f"References: per-base chance {math.log(4):.3f}; **the line: the best count table in each evaluation's "
            f"own geometry** (back-off, both strands; each hidden base predicted from the bases the model sees "
            f"beside it): {geometry or '–'}; plain count tables (m full bases each side of every validation base, "
            "add-one, one strand: they see bases the model does not, so they are not the line) "
            + ", ".join(f"m={m} {v:.3f}" for m, v in sorted(tables.items()))
            + f"; overlap only ([MASK] loss of a reader that knows no DNA) span-k {fmt(floors.get('overlap_only_span_k'))}, "
            f"span-2k {fmt(floors.get('overlap_only_span_2k'))}; context-free floor {fmt(floors.get('context_free'))}.", ""]
    out += ["## Where each run stands", "", "| run | last eval step | of | span-k per base | span-2k per base | "
            "span-k [MASK] | span-2k [MASK] | span's plateau (rule) | per base − line (span-k / span-2k) |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for name, ev in runs.items():
        if not ev:
            continue
        last = ev[max(ev)]
        p = plateau(ev) if name.startswith("span-") else None
        note = (f"step {p}" if p else "not yet") if name.startswith("span-") else ""
        above = " / ".join(f"{last[f'eval_{k}_base_loss'] - v:+.4f}" if v is not None else "–" for k, v in line.items())
        out.append(f"| {name} | {max(ev):,} | {MAX_STEPS:,} | " + " | ".join(fmt(last.get(k)) for k in KEYS)
                   + f" | {note} | {above} |")
    out += ["", "## Every 1,000 steps (per-base span-k / span-2k, nats per hidden base)", "",
            "| step | " + " | ".join(runs) + " |", "|---:|" + "---:|" * len(runs)]
    steps = sorted({s for ev in runs.values() for s in ev if s % 1000 == 0})
    for s in steps:
        cells = [f"{fmt(ev[s]['eval_span_k_base_loss'])} / {fmt(ev[s]['eval_span_2k_base_loss'])}" if s in ev else ""
                 for ev in runs.values()]
        out.append(f"| {s:,} | " + " | ".join(cells) + " |")
    zs = {p.name.split(".")[0]: json.loads(p.read_text()) for p in sorted(d.glob("*.zeroshot.json"))
          if ".step" not in p.name}
    if zs:
        out += ["", "## Zero-shot on the finals (mean log P(ref), 5,000 held-out positions, both strands)", "",
                "| run | model | ± | best table (m) | model − best table | ± |", "|---|---:|---:|---:|---:|---:|"]
        for name, z in zs.items():
            out.append(f"| {name} | {z['mean_log_p_ref']:.4f} | {z['sem']:.4f} | {z['tables'][z['best_table']]:.4f} "
                       f"({z['best_table']}) | {z['vs_best_table']:+.4f} | {fmt(z['vs_best_table_sem'], 4)} |")
        out += ["", "The tables: back-off count tables of the training split, both strands, m = 1..10 bases each "
                "side (the window shows 11). A '–' standard error: that final was not kept, so the table was "
                "recomputed at its positions and only the difference of means is known."]
    done = {n for n, ev in runs.items() if ev and max(ev) >= MAX_STEPS}
    seeds = sorted({n.rsplit("-s", 1)[1] for n in done})
    pairs = [s for s in seeds if all(f"{a}-s{s}" in done for a in ARMS[:2])]
    out += ["", "## Paired by seed (final step)", ""]
    if not pairs:
        out.append("No seed pair of `span` and `randommask` is complete yet: nothing is read against the rule.")
    else:
        out += ["| seed | key | span | randommask | wide-now | span − randommask | wide-now − randommask |",
                "|---|---|---:|---:|---:|---:|---:|"]
        for s in pairs:
            for k in KEYS[:2]:
                v = {a: runs[f"{a}-s{s}"][MAX_STEPS][k] if f"{a}-s{s}" in done else None for a in ARMS}
                curriculum = f"{v['wide-now'] - v['randommask']:+.3f}" if v["wide-now"] is not None else "–"
                out.append(f"| {s} | {k} | {fmt(v['span'])} | {fmt(v['randommask'])} | {fmt(v['wide-now'])} | "
                           f"{v['span'] - v['randommask']:+.3f} | {curriculum} |")
        out += ["", "The rule's items per seed pair: each arm's fall of the per-base losses from span's plateau "
                "S to the end (the rule asks RandomMask for more than 0.01 on both), and zero-shot on the finals "
                "(mean log P(ref); the rule asks RandomMask to beat span and the best table by 2 standard errors).",
                "", "| seed | S | arm | span-k fall after S | span-2k fall after S | zero-shot | − best table |",
                "|---|---:|---|---:|---:|---:|---:|"]
        for s in pairs:
            S = plateau(runs[f"span-s{s}"])
            for a in ARMS:
                ev = runs.get(f"{a}-s{s}")
                if f"{a}-s{s}" not in done or S is None or S not in ev:
                    continue
                # S at the last step leaves nothing after it to fall: say so rather than print 0.
                falls = [f"{ev[S][k] - ev[MAX_STEPS][k]:+.4f}" if S < MAX_STEPS else "– (S is the last step)"
                         for k in KEYS[:2]]
                z = zs.get(f"{a}-s{s}")
                zcell = (f"{z['mean_log_p_ref']:.4f} ± {z['sem']:.4f} | {z['vs_best_table']:+.4f} ± "
                         f"{fmt(z['vs_best_table_sem'], 4)}") if z else "– | –"
                out.append(f"| {s} | {S:,} | {a} | {falls[0]} | {falls[1]} | {zcell} |")
    late = {}
    for name in runs:
        steps = [d / f"{name}.step{st}.zeroshot.json" for st in range(MAX_STEPS - 2000, MAX_STEPS + 1, 1000)]
        if all(p.exists() for p in steps):
            late[name] = statistics.mean(json.loads(p.read_text())["mean_log_p_ref"] for p in steps)
    out += rule_section(runs, zs, late, done, seeds, plateau, MAX_STEPS)
    out += section(d)
    if any(v is not None for v in line.values()):
        out += ["", "The line: best counting in each evaluation's own geometry, "
                + ", ".join(f"{k.replace('_', '-')} {fmt(v, 4)}" for k, v in line.items())
                + " nats per hidden base. A per-base loss below it is DNA knowledge beyond counting the bases the "
                "model sees."]
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
