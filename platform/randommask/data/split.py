"""The validation split of prepared data: held-out blocks ``(record, start, end)``.

Genomes: blocks at seeded positions, spread across records and along each one. Packed corpora of
short records: the same blocks widened to whole records, so validation holds whole records.
"""

from __future__ import annotations

import numpy as np


def validation_blocks(lengths: np.ndarray, val_fraction: float, seed: int) -> list[tuple[int, int, int]]:
    """Contiguous held-out blocks ``(record, start, end)``, about ``val_fraction`` of all bases.

    The genome (records end to end) is cut into equal strata and one block is placed at a seeded
    position in each, so blocks spread across records and along each one. Windows are later cut
    inside either a training or a validation interval, never across, so no validation window can
    overlap a training window whatever the window size.
    """
    total = int(lengths.sum())
    if val_fraction <= 0 or total == 0:
        return []
    target = max(1, round(total * val_fraction))
    block = int(np.clip(target // 16, 4096, 1_000_000))
    n_blocks = max(1, round(target / block))
    rng = np.random.default_rng([seed, 0x5A11])
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    stratum = total / n_blocks
    chosen: list[tuple[int, int, int]] = []
    for i in range(n_blocks):
        p = int(i * stratum + rng.random() * stratum)
        r = int(np.searchsorted(offsets, p, side="right") - 1)
        length = int(lengths[r])
        size = min(block, length)
        start = int(np.clip(p - offsets[r] - size // 2, 0, length - size))
        chosen.append((r, start, start + size))
    chosen.sort()
    merged: list[tuple[int, int, int]] = []
    for r, s, e in chosen:
        if merged and merged[-1][0] == r and s <= merged[-1][2]:
            merged[-1] = (r, merged[-1][1], max(e, merged[-1][2]))
        else:
            merged.append((r, s, e))
    return merged


def record_aligned_blocks(lengths: np.ndarray, members: np.ndarray, val_fraction: float,
                          seed: int) -> list[tuple[int, int, int]]:
    """The genome-style validation blocks (validation_blocks), each widened to whole records:
    its start moved back to the start of the record it cuts (or on to the next record, from a join),
    its end on to that record's end. ``members``: (n, 3) rows (contig, start, end), sorted."""
    out: list[tuple[int, int, int]] = []
    for r, s, e in validation_blocks(lengths, val_fraction, seed):
        lo, hi = np.searchsorted(members[:, 0], [r, r + 1])
        starts, ends = members[lo:hi, 1], members[lo:hi, 2]
        first = int(np.searchsorted(ends, s, side="right"))  # first record ending after s
        last = int(np.searchsorted(starts, e, side="left")) - 1  # last record starting before e
        if first > last:
            continue
        block = (r, int(starts[first]), int(ends[last]))
        if out and out[-1][0] == r and block[1] <= out[-1][2]:
            block = (r, out[-1][1], max(out[-1][2], block[2]))
            out.pop()
        out.append(block)
    return out
