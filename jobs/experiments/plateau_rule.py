"""The plateau experiment's reading rule (docs/experiments.md section 4, written before the runs
finished), computed item by item once at least two seed pairs are complete: the seed spreads, the
paired differences against them, and which of "holds", "fails" or "in between" the items give.
Called by plateau_cpu_summary.py; the rule's wording is docs/experiments.md's, not this file's."""

from __future__ import annotations

import statistics

LAST_S = 12000  # the rule: a seed whose span has not plateaued by then cannot test the mechanism
FALL = 0.01  # the rule: RandomMask's per-base losses fall by more than this after span's plateau
METRICS = (("eval_span_k_base_loss", "span-k per base", -1), ("eval_span_2k_base_loss", "span-2k per base", -1),
           ("zeroshot", "zero-shot", 1))  # sign: +1 where higher is better
# Not the rule's: zero-shot moves 0.01-0.02 between consecutive checkpoints of one run, so the mean over
# the last three checkpoints is shown beside the finals' to say whether a reading rests on one checkpoint.
LATE = ("zeroshot_late", "zero-shot, mean of the last 3 checkpoints (not the rule's)", 1)


def _finals(runs: dict, zs: dict, late: dict, name: str, final: int) -> dict[str, float]:
    out = {k: runs[name][final][k] for k, _, _ in METRICS[:2]}
    out["zeroshot"] = zs[name]["mean_log_p_ref"]
    if name in late:
        out["zeroshot_late"] = late[name]
    return out


def rule_section(runs: dict, zs: dict, late: dict, done: set[str], seeds: list[str], plateau,
                 final: int) -> list[str]:
    """Markdown lines; empty until two seeds have all three arms finished and scored. ``late``: run
    name -> mean zero-shot over its last three 1,000-step checkpoints, where all three were scored."""
    arms = ("span", "randommask", "wide-now")
    full = [s for s in seeds if all(f"{a}-s{s}" in done and f"{a}-s{s}" in zs for a in arms)]
    if len(full) < 2:
        return []
    v = {a: {s: _finals(runs, zs, late, f"{a}-s{s}", final) for s in full} for a in arms}
    shown = METRICS + ((LATE,) if all(LATE[0] in v[a][s] for a in arms for s in full) else ())
    sd = {a: {k: statistics.stdev(v[a][s][k] for s in full) for k, _, _ in shown} for a in arms}
    out = ["", f"## The reading rule, item by item ({len(full)} complete seeds: {', '.join(full)})", "",
           "Seed spread: the sample standard deviation over seeds of each arm's final. A difference "
           "counts when every pair shows it by more than the larger of the two arms' spreads.", "",
           "| metric | " + " | ".join(f"{a} mean ± seed sd" for a in arms) + " |", "|---|" + "---:|" * len(arms)]
    for k, label, _ in shown:
        out.append(f"| {label} | " + " | ".join(
            f"{statistics.mean(v[a][s][k] for s in full):.4f} ± {sd[a][k]:.4f}" for a in arms) + " |")
    verdicts = {}
    out += ["", "RandomMask's advantage per pair (positive: RandomMask better), against the spread:", "",
            "| against | metric | " + " | ".join(f"seed {s}" for s in full) + " | spread | reading |",
            "|---|---|" + "---:|" * len(full) + "---:|---|"]
    for other in ("span", "wide-now"):
        for k, label, sign in shown:
            adv = [sign * (v["randommask"][s][k] - v[other][s][k]) for s in full]
            spread = max(sd["randommask"][k], sd[other][k])
            reading = ("RandomMask better" if all(x > spread for x in adv)
                       else other + " better" if all(-x > spread for x in adv) else "cannot tell apart")
            verdicts[(other, k)] = reading
            out.append(f"| {other} | {label} | " + " | ".join(f"{x:+.4f}" for x in adv) + f" | {spread:.4f} | {reading} |")
    falls, tables, plateaus = [], [], []
    for s in full:
        S = plateau(runs[f"span-s{s}"])
        plateaus.append(f"seed {s}: {'none' if S is None else f'{S:,}'}")
        ev = runs[f"randommask-s{s}"]
        if S is not None and S < final and S in ev:  # S at the last step: nothing after it to test
            falls.append(all(ev[S][k] - ev[final][k] > FALL for k, _, _ in METRICS[:2]))
        z = zs[f"randommask-s{s}"]
        tables.append(z["vs_best_table_sem"] is not None and z["vs_best_table"] > 2 * z["vs_best_table_sem"])
    better = all(verdicts[("span", k)] == "RandomMask better" for k, _, _ in METRICS)
    within = all(verdicts[("span", k)] == "cannot tell apart" for k, _, _ in METRICS)
    wins = [label for k, label, _ in METRICS if verdicts[("wide-now", k)] == "RandomMask better"]
    curriculum = ("beats wide spans beyond the spread on " + ", ".join(wins)) if wins else \
        "beats wide spans beyond the spread on none of the three"
    out += ["", f"- Span's plateau S: {'; '.join(plateaus)}. The rule as written (for 15,000 steps) says a seed "
            f"whose span has not plateaued by {LAST_S:,} cannot test the mechanism; with every arm run to "
            f"{final:,}, plateau and 3,000 steps more allows S up to {final - 3000:,}.",
            f"- RandomMask keeps falling after span's plateau (> {FALL} on both per-base losses): "
            f"{sum(falls)} of the {len(falls)} pairs whose S leaves steps after it ({len(full) - len(falls)} cannot test it).",
            f"- RandomMask's zero-shot beats the best count table by 2 standard errors: {sum(tables)} of {len(full)}.",
            f"- Ends better than span beyond the spread on all three metrics: {'yes' if better else 'no'}; "
            f"within the spread on all three: {'yes' if within else 'no'}.",
            "- By the rule: **" + ("the mechanism holds here" if better and len(falls) == len(full) and all(falls) and all(tables)
                                   else "it fails" if within else "in between: read the items") + "**; the curriculum "
            + curriculum + "."]
    return out
