"""The two references a [MASK]-only MLM loss is read against, computed from the prepared data.

- **Context-free floor**: what a model that knows only the k-mer frequencies scores at a [MASK]
  position: the cross-entropy of the validation split's k-mers under the training split's k-mer
  frequencies (add-one smoothed). A loss at this level uses no context at all.
- **Overlap reference**: with span-k masking over overlapping (stride-1) k-mers, the k
  masked tokens hide one base; every other base of their k-mers is visible in the neighbours. A
  model that reads the neighbours perfectly pays about the conditional entropy of that hidden base
  given its flanks. This is a plug-in estimate of H(base | ``flank`` bases on each side) on the
  training split: approximate, and a transformer that uses wider context can go below it. DNABERT's
  "collapse" is the fall from the first line to this one. For each fixed evaluation set the
  reference is scaled by the bases its [MASK] positions really hide (:func:`eval_reference`):
  spans clipped at window edges and wider spans hide more, a kept token inside a span shows its base.

Beside them, the references of the per-base loss (``training.baseloss``), in nats per hidden base:

- **Base tables** (``base_table``, keyed by m = 1..4): the held-out loss of a count table that
  predicts a base from m bases on each side (add-one smoothed counts of the training split, scored
  on the validation split). A model knows DNA beyond counting when its per-base loss is below the
  best of them. Chance is ln 4.
- **Overlap-only** (``overlap_only_span_k``, ``overlap_only_span_2k``, made by the driver): the
  [MASK]-only token loss of a perfect overlap reader that knows no DNA, ln 4 per hidden base.

The others are in nats, per [MASK] position. Runs write them to ``<run>/floors.json``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from randommask.common import storage
from randommask.data.genome import CODE_MASK
from randommask.data.tokenizer import NUM_SPECIAL, kmer_ids_from_codes

if TYPE_CHECKING:  # torch is imported where the tensors are made, not at module load
    import torch

FLANK_BP = 3  # 4**6 flank contexts x 4 bases: well sampled on a bacterial genome (~300 per cell)
PIECE_BP = 1 << 20
BASE_TABLE_FLANKS = (1, 2, 3, 4)  # m bases each side: 4**(2m) contexts; m = 4 is ~17 training counts each on E. coli


def split_codes(prepared: str, split: str, max_bases: int | None = None,
                storage_options: dict | None = None) -> list[np.ndarray]:
    """Nucleotide codes of a split's intervals (one array per piece of at most 1 Mbp, never joined
    across intervals). Over ``max_bases``, evenly spaced pieces up to that many bases."""
    from randommask.data.prepare import read_manifest
    from randommask.data.stream import split_intervals

    manifest = read_manifest(prepared, storage_options)
    records = manifest["records"]
    pieces = [(int(r), s, min(s + PIECE_BP, int(e))) for r, start, e in split_intervals(manifest, split)
              for s in range(int(start), int(e), PIECE_BP)]
    total = sum(e - s for _, s, e in pieces)
    if max_bases is not None and total > max_bases and pieces:
        n = max(1, int(len(pieces) * max_bases / total))
        pieces = [pieces[i] for i in np.unique(np.linspace(0, len(pieces) - 1, n).round().astype(int))]
    out = []
    for rec, s, e in pieces:
        base = records[rec]["offset"]
        raw = storage.read_bytes(storage.join(prepared, records[rec]["shard"]), storage_options,
                                 start=base + s, end=base + e)
        out.append(np.frombuffer(raw, dtype=np.uint8) & CODE_MASK)
    return out


def kmer_counts(pieces: list[np.ndarray], k: int, stride: int = 1) -> np.ndarray:
    counts = np.zeros(4**k, dtype=np.int64)
    for codes in pieces:
        if len(codes) < k:
            continue
        ids = kmer_ids_from_codes(codes, k, stride).astype(np.int64)
        ids = ids[ids >= NUM_SPECIAL] - NUM_SPECIAL  # k-mers touching N are [UNK]: not counted
        counts += np.bincount(ids, minlength=4**k)
    return counts


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def context_free_floor(train: list[np.ndarray], validation: list[np.ndarray], k: int, stride: int = 1) -> float:
    """Cross-entropy (nats) of validation k-mers under add-one smoothed training k-mer frequencies."""
    q = kmer_counts(train, k, stride) + 1.0
    v = kmer_counts(validation, k, stride)
    if v.sum() == 0:
        raise ValueError("no valid validation k-mer")
    return float(-(v * np.log(q / q.sum())).sum() / v.sum())


def overlap_reference(train: list[np.ndarray], flank: int = FLANK_BP) -> float:
    """Plug-in H(base | ``flank`` bases on each side), nats, on the training split."""
    width = 2 * flank + 1
    joint = kmer_counts(train, width).reshape(4**flank, 4, 4**flank)  # (left, middle, right)
    context = joint.sum(axis=1)
    return _entropy(joint.ravel()) - _entropy(context.ravel())


def base_table(train: list[np.ndarray], flank: int) -> np.ndarray:
    """log P(base | ``flank`` bases on each side), add-one smoothed counts of the training split:
    a (4**flank, 4, 4**flank) array indexed (left, middle, right) as k-mer ids are, first base most
    significant."""
    joint = kmer_counts(train, 2 * flank + 1).reshape(4**flank, 4, 4**flank) + 1.0
    return np.log(joint / joint.sum(axis=1, keepdims=True))


def base_table_loss(train: list[np.ndarray], validation: list[np.ndarray], flank: int) -> float:
    """Held-out nats per base of :func:`base_table` on the validation split's bases with ``flank``
    valid bases on each side."""
    held_out = kmer_counts(validation, 2 * flank + 1)
    return float(-(held_out * base_table(train, flank).ravel()).sum() / held_out.sum())


def compute_floors(prepared: str, k: int, stride: int = 1, max_train_bases: int = 64 << 20,
                   storage_options: dict | None = None) -> dict[str, Any]:
    """The data's references for ``k``-mers of a prepared dataset (see the module's docstring)."""
    train = split_codes(prepared, "train", max_train_bases, storage_options)
    validation = split_codes(prepared, "validation", None, storage_options)
    out: dict[str, Any] = {"k": k, "stride": stride, "context_free": None,
                           "overlap_per_base": round(overlap_reference(train), 4), "overlap_flank_bp": FLANK_BP,
                           "train_bases_used": int(sum(len(p) for p in train)),
                           "validation_bases": int(sum(len(p) for p in validation))}
    if validation and kmer_counts(validation, k, stride).sum():
        out["context_free"] = round(context_free_floor(train, validation, k, stride), 4)
    out["base_table"] = None
    if validation and kmer_counts(validation, 2 * max(BASE_TABLE_FLANKS) + 1).sum():
        out["base_table"] = {str(m): round(base_table_loss(train, validation, m), 4) for m in BASE_TABLE_FLANKS}
    return out


def eval_reference(inputs: "torch.Tensor", labels: "torch.Tensor", k: int, stride: int, per_base: float) -> float | None:
    """The overlap reference of one fixed evaluation set: over its [MASK] positions, the mean number
    of bases no visible token shows, times the per-base conditional entropy. It is ``per_base`` for
    a span of k stride-1 tokens away from the edges; less where a kept token inside a span shows the
    hidden base; more at window edges and for wider spans."""
    from randommask.data.tokenizer import MASK

    at_mask = (labels != -100) & (inputs == MASK)
    if not at_mask.any():
        return None
    return float(hidden_bases(inputs, labels, k, stride)[at_mask].double().mean()) * per_base


def floor_lines(floors: dict | None, eval_set: str = "span_k") -> list[tuple[float, str]]:
    """(value, label) of the references of one evaluation set that exist, for plots and summaries."""
    if not floors:
        return []
    lines = []
    if floors.get("context_free") is not None:
        lines.append((floors["context_free"], f"context-free floor ({floors['k']}-mer frequencies)"))
    if floors.get(f"eval_{eval_set}_overlap") is not None:
        lines.append((floors[f"eval_{eval_set}_overlap"], f"{eval_set.replace('_', '-')} overlap reference (approx.)"))
    if floors.get(f"overlap_only_{eval_set}") is not None:
        lines.append((floors[f"overlap_only_{eval_set}"],
                      f"{eval_set.replace('_', '-')} overlap only (reads every visible base, knows no DNA)"))
    return lines


def base_lines(floors: dict | None) -> list[tuple[float, str]]:
    """(value, label) of the per-base loss's references: chance and the best count table."""
    lines = [(round(math.log(4), 4), "chance (ln 4)")]
    best = best_table(floors)
    if best is not None:
        lines.append((best[1], f"best count table ({best[0]} base(s) each side)"))
    return lines


def best_table(floors: dict | None) -> tuple[str, float] | None:
    """(m, loss) of the lowest held-out ``base_table`` loss, if the floors have the tables."""
    tables = {m: v for m, v in ((floors or {}).get("base_table") or {}).items() if v is not None}
    if not tables:
        return None
    m = min(tables, key=tables.get)
    return m, tables[m]


def visible_bases(shows: "torch.Tensor", k: int, stride: int = 1) -> "torch.Tensor":
    """(B, n_bases) bool: which bases of each window some showing token covers. ``shows`` (B, L) says
    which tokens show their bases; token i >= 1 is the k-mer at base (i - 1) * stride, and the window
    has (L - 3) * stride + k bases ([CLS] and [SEP] hold none)."""
    import torch

    batch, length = shows.shape
    n_bases = (length - 3) * stride + k
    start = ((torch.arange(length, device=shows.device) - 1).clamp(min=0) * stride).clamp(max=n_bases)
    ones = (shows & (torch.arange(length, device=shows.device) >= 1)).to(torch.int32)
    diff = torch.zeros(batch, n_bases + 1, dtype=torch.int32, device=shows.device)
    diff.scatter_add_(1, start.expand(batch, length), ones)
    diff.scatter_add_(1, (start + k).clamp(max=n_bases).expand(batch, length), -ones)
    return diff.cumsum(1)[:, :n_bases] > 0


def hidden_bases(inputs: "torch.Tensor", labels: "torch.Tensor", k: int, stride: int = 1) -> "torch.Tensor":
    """Per labelled position, how many bases of its k-mer no visible token shows (long, (B, L)).

    A token shows its bases when its input is its true k-mer: unselected k-mers and kept ones. A
    [MASK] or random replacement shows nothing, nor do special tokens.
    """
    import torch

    truth = torch.where(labels == -100, inputs, labels)
    hidden = (~visible_bases((inputs == truth) & (inputs >= NUM_SPECIAL), k, stride)).to(torch.int32)
    batch, length = inputs.shape
    n_bases = hidden.shape[1]
    csum = torch.zeros(batch, n_bases + 1, dtype=torch.int32)
    csum[:, 1:] = hidden.cumsum(1)
    start = (torch.arange(length) - 1).clamp(min=0) * stride
    lo, hi = start.clamp(max=n_bases), (start + k).clamp(max=n_bases)
    per_token = csum[:, hi] - csum[:, lo]
    return torch.where(labels != -100, per_token, 0).long()
