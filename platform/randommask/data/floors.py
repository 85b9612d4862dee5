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
- **Counting in the evaluation's geometry** (``base_table_span_k`` and ``base_table_span_2k``, keyed
  by m = 1..8, and ``best_counting_span_k`` / ``best_counting_span_2k``, the lowest of each; made
  by the driver, :func:`geometry_tables`): back-off count tables (``data.counting``, both strands of
  the training split) scored on exactly the bases each fixed evaluation set hides, each predicted
  from the bases the model sees there: on each side, past the hidden bases next to it (at most 2),
  up to m contiguous visible bases (fewer where the window ends or another hidden base stands; none
  where no base shows within reach), counted at the same offsets. This is the line a per-base loss
  must beat. The plain ``base_table`` (add-one, one strand, m full bases each side, every
  validation base) is kept for comparison; it sees bases the model does not, so it is not the line.
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
from randommask.data.tokenizer import INVALID, NUM_SPECIAL, kmer_ids_from_codes

if TYPE_CHECKING:  # torch is imported where the tensors are made, not at module load
    import torch

    from randommask.data.counting import Queries

FLANK_BP = 3  # 4**6 flank contexts x 4 bases: well sampled on a bacterial genome (~300 per cell)
PIECE_BP = 1 << 20
BASE_TABLE_FLANKS = (1, 2, 3, 4)  # m bases each side: 4**(2m) contexts; m = 4 is ~17 training counts each on E. coli
# Back-off tables keep improving while long contexts inform: on E. coli (both strands) to m = 10.
COUNTING_FLANKS = tuple(range(1, 11))
# In an evaluation's geometry every (bases, gap) shape of context is a counting pass over the training
# split, so the tables stop at m = 8, and a side is read past at most 2 hidden bases (its nearest
# visible base within 3 positions: one codon); a side farther away is not read.
GEOMETRY_FLANKS = tuple(range(1, 9))
GEOMETRY_MAX_GAP = 2


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
                   storage_options: dict | None = None,
                   eval_sets: dict[str, tuple["torch.Tensor", "torch.Tensor"]] | None = None) -> dict[str, Any]:
    """The data's references for ``k``-mers of a prepared dataset (see the module's docstring); with
    the fixed evaluation sets ``{name: (inputs, labels)}``, their geometry-matched count tables too."""
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
    if eval_sets:
        out.update(geometry_tables(train, eval_sets, k, stride))
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


def table_keys(eval_set: str) -> tuple[str, str]:
    """The floors.json keys of one evaluation set's geometry-matched tables and their best line."""
    return f"base_table_{eval_set}", f"best_counting_{eval_set}"


def window_codes(truth: np.ndarray, k: int, stride: int = 1) -> np.ndarray:
    """(B, n_bases) nucleotide codes of tokenized windows (INVALID where no valid k-mer covers a
    base), read off the true tokens ``truth`` (B, L) with [CLS] first and [SEP] last."""
    batch, length = truth.shape
    n_bases = (length - 3) * stride + k
    codes = np.full((batch, n_bases), INVALID, dtype=np.uint8)
    kmers = truth[:, 1:-1].astype(np.int64) - NUM_SPECIAL  # (B, n_kmers); < 0 for [UNK]
    for j in range(k):  # offset j of token t is base t * stride + j
        at = np.arange(kmers.shape[1]) * stride + j
        digit = np.where(kmers >= 0, (kmers >> (2 * (k - 1 - j))) & 3, INVALID).astype(np.uint8)
        codes[:, at] = np.where(codes[:, at] < INVALID, codes[:, at], digit)
    return codes


def eval_queries(inputs: "torch.Tensor", labels: "torch.Tensor", k: int, stride: int = 1,
                 width: int = max(GEOMETRY_FLANKS), max_gap: int = GEOMETRY_MAX_GAP) -> "Queries":
    """The bases one fixed evaluation set hides, as the per-base loss scores them (every selected
    token [MASK]; a base no unselected token shows, covered by a selected valid k-mer), each with
    the bases the model sees beside it: on each side, past the hidden bases next to it (at most
    ``max_gap``), up to ``width`` contiguous visible bases (none where the window ends first)."""
    from randommask.data.counting import Queries

    truth = np.where(labels.numpy() == -100, inputs.numpy(), labels.numpy())
    selected = labels.numpy() != -100
    codes = window_codes(truth, k, stride)
    visible = visible_bases(_tensor(~selected & (truth >= NUM_SPECIAL)), k, stride).numpy() & (codes < INVALID)
    covered = visible_bases(_tensor(selected & (truth >= NUM_SPECIAL)), k, stride).numpy()
    rows, pos = np.nonzero(covered & ~visible)
    n_bases = codes.shape[1]
    padded = np.zeros((len(codes), n_bases + 2), dtype=bool)  # the window's ends count as not visible
    padded[:, 1:-1] = visible
    sides = []
    for step in (-1, 1):
        # the gap: hidden bases from the query to the nearest visible one (or to the window's end)
        dist = np.arange(1, n_bases + 1)
        seen = padded[rows[:, None], (pos[:, None] + step * dist).clip(-1, n_bases) + 1]
        gap = np.where(seen.any(axis=1), seen.argmax(axis=1), 0)  # hidden bases before the nearest visible one
        at = pos[:, None] + step * (gap[:, None] + 1 + np.arange(width))
        ok = (at >= 0) & (at < n_bases) & (seen.any(axis=1) & (gap <= max_gap))[:, None]
        at = at.clip(0, n_bases - 1)
        run = ok & visible[rows[:, None], at]
        sides.append((np.where(run, codes[rows[:, None], at], INVALID), np.cumprod(run, axis=1).sum(axis=1), gap))
    (left, left_len, left_gap), (right, right_len, right_gap) = sides
    return Queries(left, right, left_len, right_len, codes[rows, pos].astype(np.int64), left_gap, right_gap)


def _tensor(array: np.ndarray) -> "torch.Tensor":
    import torch

    return torch.from_numpy(np.ascontiguousarray(array))


def geometry_tables(train: list[np.ndarray], sets: dict[str, tuple["torch.Tensor", "torch.Tensor"]], k: int,
                    stride: int = 1) -> dict[str, Any]:
    """For each evaluation set ``{name: (inputs, labels)}``: the back-off tables' held-out loss per m
    on exactly the bases it hides (``table_keys``), and the lowest of them."""
    from randommask.data.counting import BackoffTable, Queries

    queries = {name: eval_queries(inputs, labels, k, stride) for name, (inputs, labels) in sets.items()}
    ends = np.cumsum([len(q.base) for q in queries.values()])
    table = BackoffTable(train, Queries.concat(list(queries.values())), GEOMETRY_FLANKS) if ends[-1] else None
    out: dict[str, Any] = {}
    for name, end, q in zip(queries, ends, queries.values()):
        tables_key, best_key = table_keys(name)
        losses = table.losses(slice(end - len(q.base), end)) if len(q.base) else None
        out[tables_key] = {m: round(v, 4) for m, v in losses.items()} if losses else None
        out[best_key] = min(out[tables_key].values()) if losses else None
    return out


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


def base_lines(floors: dict | None, eval_sets: tuple[str, ...] = ("span_k", "span_2k")) -> list[tuple[float, str]]:
    """(value, label) of the per-base loss's references: chance and, per evaluation set, the best
    count table in that set's geometry (older floors without it: the plain table, so labelled)."""
    lines = [(round(math.log(4), 4), "chance (ln 4)")]
    for name in eval_sets:
        best = best_counting(floors, name)
        if best is not None:
            lines.append((best[1], f"best counting, {name.replace('_', '-')} geometry (m={best[0]})"))
    if len(lines) == 1 and best_table(floors) is not None:
        m, value = best_table(floors)
        lines.append((value, f"plain count table (m={m}; sees bases the model does not)"))
    return lines


def best_counting(floors: dict | None, eval_set: str) -> tuple[str, float] | None:
    """(m, loss) of the lowest geometry-matched table of one evaluation set, if the floors have them."""
    tables = {m: v for m, v in ((floors or {}).get(table_keys(eval_set)[0]) or {}).items() if v is not None}
    if not tables:
        return None
    m = min(tables, key=tables.get)
    return m, tables[m]


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
