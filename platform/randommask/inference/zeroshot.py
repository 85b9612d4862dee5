"""``randommask zeroshot``: how well a masked-LM predicts held-out reference bases, beside count tables.

At N positions drawn (seeded) from the prepared data's validation split, the model predicts the base
with the tokens that cover it masked, both strands averaged (``inference.centre``, as
``score-variants`` scores variants). Its mean log P(ref) is read between chance (-ln 4) and count
tables of the flanking bases fitted on the training split, both strands, backing off to shorter
contexts (``data.counting``, m = 1..10 bases each side, no more than the window shows), scored on
the same positions. A model at the best table's level has learned what
counting flanks gives; above it, something more. docs/inference.md describes the output.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable

import numpy as np

from randommask.common import storage
from randommask.common.checkpoints import provenance
from randommask.data.counting import BackoffTable, Queries
from randommask.data.floors import BASE_TABLE_FLANKS, COUNTING_FLANKS, split_codes
from randommask.data.tokenizer import INVALID
from randommask.errors import UserError
from randommask.inference import runtime
from randommask.inference.centre import (
    STRANDS,
    base_log_probs,
    centred_window,
    combine_strands,
    masked_windows,
    strand_windows,
)


def draw_positions(pieces: list[np.ndarray], n: int, half: int, seed: int) -> np.ndarray:
    """(n, 2 * half + 1) windows of valid codes centred on ``n`` distinct positions drawn uniformly
    from the pieces (at most as many as there are)."""
    starts, owner = [], []
    for i, codes in enumerate(pieces):
        if len(codes) < 2 * half + 1:
            continue
        bad = np.concatenate([[0], np.cumsum(codes >= INVALID)])
        first = np.arange(len(codes) - 2 * half)
        ok = first[bad[first + 2 * half + 1] == bad[first]]  # windows without N
        starts.append(ok)
        owner.append(np.full(len(ok), i))
    if not starts or not sum(len(s) for s in starts):
        return np.zeros((0, 2 * half + 1), np.uint8)
    starts, owner = np.concatenate(starts), np.concatenate(owner)
    pick = np.sort(np.random.default_rng(seed).choice(len(starts), size=min(n, len(starts)), replace=False))
    return np.stack([pieces[owner[j]][starts[j] : starts[j] + 2 * half + 1] for j in pick]).astype(np.uint8)


def table_log_p_ref(train: list[np.ndarray], windows: np.ndarray) -> dict[str, np.ndarray]:
    """{m: log P(centre base | up to m bases each side)} per window, from back-off count tables of
    the training split (both strands), m = 1..10; a window shows at most its half on each side."""
    table = BackoffTable(train, Queries.centred(windows), COUNTING_FLANKS)
    pick = windows[:, windows.shape[1] // 2].astype(np.int64)[:, None]
    return {str(m): np.take_along_axis(table.log_probs(m), pick, 1)[:, 0] for m in COUNTING_FLANKS}


def model_log_p_ref(checkpoint: str, windows: np.ndarray, strands: str, batch_size: int, threads: int | None,
                    storage_options: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """(log P(ref) with the given strands, log P(ref) of the forward strand alone), per window."""
    import torch

    from randommask.data.tokenizer import MASK
    from randommask.training.model import autocast

    model, tok, device = runtime.load_model(checkpoint, "mlm", False, threads, storage_options)
    half = windows.shape[1] // 2
    per_strand = []
    for codes, q in strand_windows(windows, half, strands):
        ids, cands = masked_windows(codes, q, tok)
        masked = int((ids[0] == MASK).sum())  # the same tokens in every window (all centred on q)
        out = []
        for i in range(0, len(ids), batch_size):
            x = torch.from_numpy(ids[i : i + batch_size].astype(np.int64)).to(device)
            with torch.no_grad(), autocast(device):
                logp = runtime.masked_log_probs(model, x).cpu().numpy().reshape(len(x), masked, -1)
            c = cands[i : i + batch_size]
            out.append(base_log_probs(np.take_along_axis(logp, c.astype(np.int64), axis=-1)))
        per_strand.append(np.concatenate(out))
    ref = windows[:, half].astype(np.int64)[:, None]
    both = combine_strands(per_strand[0], per_strand[1] if len(per_strand) > 1 else None)
    return np.take_along_axis(both, ref, 1)[:, 0], np.take_along_axis(per_strand[0], ref, 1)[:, 0]


def zeroshot(checkpoint: str, prepared: str, out: str, positions: int = 5000, seed: int = 0,
             window_bp: int | None = None, strands: str = "both", batch_size: int = 256, threads: int | None = None,
             allow_untrained_positions: bool = False, storage_options: dict | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Score the model and the tables at the same held-out positions; write the JSON to ``out``."""
    if positions < 1:
        raise UserError(f"--positions must be >= 1, got {positions}")
    if strands not in STRANDS:
        raise UserError(f"--strands {strands}: choose one of {', '.join(STRANDS)}")
    tok, config, trained = runtime.model_limits(checkpoint, storage_options)
    max_bp = tok.bases_for(config.max_position_embeddings)
    window = centred_window(min(window_bp or trained.default_bp(tok), max_bp))
    trained.require(tok.num_tokens(window), f"--window-bp {window_bp} (windows of {window} bp)" if window_bp else f"windows of {window} bp",
                    allow_untrained_positions, log)
    half = window // 2
    if half < max(BASE_TABLE_FLANKS) or window < tok.k:
        raise UserError(f"--window-bp {window}: needs at least {2 * max(BASE_TABLE_FLANKS) + 1} bases "
                        "(the tables read 4 bases each side)")
    windows = draw_positions(split_codes(prepared, "validation", None, storage_options), positions, half, seed)
    if not len(windows):
        raise UserError(f"--prepared {prepared}: no validation window of {window} bp without N; "
                        "prepare it with a larger --val-fraction or give a shorter --window-bp")
    log(f"zeroshot {len(windows)} held-out position(s) of {prepared}, windows of {window} bp, {strands} strand(s)")
    model, forward = model_log_p_ref(checkpoint, windows, strands, batch_size, threads, storage_options)
    train = split_codes(prepared, "train", 64 << 20, storage_options)
    tables = table_log_p_ref(train, windows)
    best = max(tables, key=lambda m: tables[m].mean())
    diff = model - tables[best]

    def sem(x: np.ndarray) -> float:
        return round(float(x.std(ddof=1) / math.sqrt(len(x))), 5) if len(x) > 1 else 0.0

    result = {"checkpoint": checkpoint, "prepared": prepared, "positions": positions, "seed": seed,
              "window_bp": window, "strands": strands, "n": int(len(windows)),
              "mean_log_p_ref": round(float(model.mean()), 5), "sem": sem(model),
              "mean_p_ref": round(float(np.exp(model).mean()), 5),
              "forward_mean_log_p_ref": round(float(forward.mean()), 5), "chance": round(-math.log(4), 5),
              "tables": {m: round(float(t.mean()), 5) for m, t in tables.items()},
              "table_estimator": "back-off count tables of the training split, both strands (data.counting)",
              "best_table": best, "vs_best_table": round(float(diff.mean()), 5), "vs_best_table_sem": sem(diff),
              # what produced the figures: the weights' digest and the package version
              "provenance": provenance("zeroshot", checkpoint, {"prepared": prepared, "positions": positions,
                                                                "seed": seed, "window_bp": window, "strands": strands},
                                       storage_options)}
    storage.write_bytes(out, (json.dumps(result, indent=1) + "\n").encode(), storage_options)
    return result


def standing(r: dict[str, Any]) -> str:
    """One line: where the model stands between chance and the best table."""
    best = r["tables"][r["best_table"]]
    frac = (r["mean_log_p_ref"] - r["chance"]) / (best - r["chance"]) if best != r["chance"] else float("nan")
    verdict = ("above the best table" if r["vs_best_table"] > 2 * r["vs_best_table_sem"] else
               "below the best table" if r["vs_best_table"] < -2 * r["vs_best_table_sem"] else
               "at the best table's level")
    return (f"mean log P(ref) {r['mean_log_p_ref']:.4f} ± {r['sem']:.4f} (n={r['n']}): {frac:.0%} of the way from "
            f"chance ({r['chance']:.4f}) to the best count table ({best:.4f}, {r['best_table']} base(s) each side); "
            f"{r['vs_best_table']:+.4f} ± {r['vs_best_table_sem']:.4f} vs that table: {verdict}")
