"""Streaming pretraining windows from prepared shards through Ray Data.

The driver builds a small *plan* from the manifest alone (no sequence is read there): training
and validation intervals, candidate windows, and which of them pass the N filter (from the
manifest's runs of non-ACGT bases). Windows are grouped into *blocks* (consecutive windows of one
interval: one ranged read) and blocks into *chunks* (one Ray Data task). For training, the block
order and the order inside each chunk are permutations drawn from (seed, epoch), so each epoch
sees new cuts in a new order; validation windows are fixed, in genome order, never reverse
complemented, and evaluation takes an evenly spaced subset of them (``validation_windows``).

Because the plan knows how many windows each chunk yields, position ``start_sample`` of an epoch
maps to (chunk, offset) directly: a consumer resumes mid-epoch without replaying it.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from randommask.common import storage
from randommask.data.config import DataSection
from randommask.data.genome import CODE_MASK, SOFT_BIT
from randommask.data.prepare import read_manifest
from randommask.data.tokenizer import INVALID, KmerTokenizer, reverse_complement_codes
from randommask.errors import UserError

SPLITS = ("train", "validation")
READ_RETRIES = 3  # whole-chunk retries in the read task, after the storage layer's own (see ReadChunk)


@dataclass
class EpochPlan:
    """What one consumer reads in one epoch: chunk rows for Ray Data, and their sizes."""

    chunks: list[dict[str, Any]]
    num_samples: int  # windows this consumer gets in this epoch (after the N filter)
    split: str
    window_bp: int


def split_intervals(manifest: dict, split: str) -> np.ndarray:
    """(n, 3) int64 rows (record, start, end) for the split, in genome order."""
    lengths = np.array([r["length"] for r in manifest["records"]], dtype=np.int64)
    val = sorted((v["record"], v["start"], v["end"]) for v in manifest["validation"])
    if split == "validation":
        return np.array(val, dtype=np.int64).reshape(-1, 3)
    rows, i = [], 0
    for rec, length in enumerate(lengths):
        pos = 0
        while i < len(val) and val[i][0] == rec:
            _, s, e = val[i]
            if s > pos:
                rows.append((rec, pos, s))
            pos = max(pos, e)
            i += 1
        if pos < length:
            rows.append((rec, pos, int(length)))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def _invalid_before(nruns: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Count of non-ACGT bases in global coordinates [0, x), vectorized over x."""
    if len(nruns) == 0:
        return np.zeros_like(x)
    starts, ends = nruns[:, 0], nruns[:, 1]
    full = np.concatenate(([0], np.cumsum(ends - starts)))
    i = np.searchsorted(starts, x, side="right")  # runs starting before x
    partial = np.where(i > 0, np.minimum(x, ends[np.maximum(i - 1, 0)]) - starts[np.maximum(i - 1, 0)], 0)
    return full[np.maximum(i - 1, 0)] * (i > 0) + np.maximum(partial, 0)


def load_nruns(prepared: str, manifest: dict, storage_options: dict | None) -> np.ndarray:
    return np.load(io.BytesIO(storage.read_bytes(storage.join(prepared, manifest["nruns"]), storage_options)))


def build_plan(prepared: str, split: str = "train", window_bp: int = 512, seed: int = 0, epoch: int = 0,
               max_n_fraction: float = 0.1, num_shards: int = 1, shard_index: int = 0,
               windows_per_block: int = 64, blocks_per_chunk: int = 16, storage_options: dict | None = None,
               manifest: dict | None = None, nruns: np.ndarray | None = None, k: int | None = None) -> EpochPlan:
    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if window_bp < 1:
        raise UserError(f"window_bp must be >= 1, got {window_bp}")
    if not 0 <= max_n_fraction <= 1:
        raise UserError(f"max_n_fraction must be in [0, 1], got {max_n_fraction}")
    if not 0 <= shard_index < num_shards:
        raise UserError(f"shard_index must be in [0, num_shards), got {shard_index} of {num_shards}")
    manifest = manifest or read_manifest(prepared, storage_options)
    join_n = manifest.get("packing", {}).get("join_n")
    if k is not None and join_n is not None and k > join_n:  # a k-mer could then span two packed records
        raise UserError(f"{prepared}: records are joined by {join_n} N, fewer than k={k}; re-run data prepare "
                        f"with --join-n {k}")
    nruns = load_nruns(prepared, manifest, storage_options) if nruns is None else nruns
    records = manifest["records"]
    intervals = split_intervals(manifest, split)
    train = split == "train"
    rng = np.random.default_rng([seed, epoch, 0x7124])

    # Candidate windows per interval: a per-(seed, epoch) offset for training, so cuts move.
    length = intervals[:, 2] - intervals[:, 1]
    room = np.maximum(length - window_bp + 1, 0)
    offset = (rng.integers(0, np.maximum(np.minimum(room, window_bp), 1)) if train and len(room)
              else np.zeros(len(intervals), dtype=np.int64))
    n_win = np.where(room > 0, (length - offset) // window_bp, 0)
    keep = n_win > 0
    intervals, offset, n_win = intervals[keep], offset[keep], n_win[keep]
    if n_win.sum() == 0:
        raise UserError(f"{prepared}: no {split} window of {window_bp} bp fits in the prepared data")

    # Blocks: up to windows_per_block consecutive windows of one interval (one ranged read).
    n_blocks = -(-n_win // windows_per_block)
    blk_interval = np.repeat(np.arange(len(intervals)), n_blocks)
    blk_first = np.arange(n_blocks.sum()) - np.repeat(np.cumsum(n_blocks) - n_blocks, n_blocks)
    blk_win = np.minimum(windows_per_block, n_win[blk_interval] - blk_first * windows_per_block)
    rec_start = intervals[blk_interval, 1] + offset[blk_interval] + blk_first * windows_per_block * window_bp
    global_off = np.array([r["global_offset"] for r in records], dtype=np.int64)
    blk_record = intervals[blk_interval, 0]
    blk_global = global_off[blk_record] + rec_start

    # N filter from the manifest's runs: valid windows per block, known before any read.
    starts = np.repeat(blk_global, blk_win) + window_bp * (
        np.arange(blk_win.sum()) - np.repeat(np.cumsum(blk_win) - blk_win, blk_win))
    invalid = _invalid_before(nruns, starts + window_bp) - _invalid_before(nruns, starts)
    ok = invalid <= max_n_fraction * window_bp
    blk_valid = np.add.reduceat(ok.astype(np.int64), np.cumsum(blk_win) - blk_win) if len(ok) else blk_win * 0

    order = rng.permutation(len(blk_win)) if train else np.arange(len(blk_win))
    order = order[blk_valid[order] > 0]
    n_chunks = -(-len(order) // blocks_per_chunk)
    shard_offset = np.array([r["offset"] for r in records], dtype=np.int64)
    chunks, total = [], 0
    for c in range(shard_index, n_chunks, num_shards):  # chunk c goes to consumer c % num_shards
        blocks = order[c * blocks_per_chunk : (c + 1) * blocks_per_chunk]
        recs = blk_record[blocks]
        n = int(blk_valid[blocks].sum())
        chunks.append({
            "chunk": c, "first_sample": total, "num_samples": n,
            "shard": [records[r]["shard"] for r in recs],
            "read_start": (shard_offset[recs] + rec_start[blocks]).tolist(),
            "num_windows": blk_win[blocks].tolist(),
            "global_start": blk_global[blocks].tolist(),
        })
        total += n
    return EpochPlan(chunks=chunks, num_samples=total, split=split, window_bp=window_bp)


class ReadChunk:
    """Ray Data UDF: one chunk row in, its windows out, tokenized."""

    def __init__(self, data: DataSection, seed: int, epoch: int, train: bool, start_sample: int = 0) -> None:
        self.prepared, self.window_bp = data.prepared, data.window_bp
        self.tok = KmerTokenizer(data.k, data.stride)
        self.seed, self.epoch, self.train, self.rc_prob = seed, epoch, train, data.rc_prob
        self.max_invalid = data.max_n_fraction * data.window_bp
        self.start_sample = start_sample
        self.storage_options = data.options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = [self.read({key: batch[key][i] for key in batch}) for i in range(len(batch["chunk"]))]
        return {key: np.concatenate([o[key] for o in out]) for key in out[0]}

    def read(self, row: dict[str, Any], timings: dict[str, float] | None = None) -> dict[str, np.ndarray]:
        """One chunk's windows; ``timings`` (seconds per stage) is filled for benchmarks."""
        t0 = time.perf_counter()
        W = self.window_bp
        n_win = np.asarray(row["num_windows"], dtype=np.int64)
        starts = np.asarray(row["read_start"], dtype=np.int64)
        fs, root = storage.filesystem(self.prepared, self.storage_options)
        paths = [f"{root.rstrip('/')}/{s}" for s in row["shard"]]
        for attempt in range(READ_RETRIES + 1):
            try:
                parts = storage.cat_ranges(fs, paths, starts.tolist(), (starts + n_win * W).tolist(), self.prepared)
                break
            except storage.TransientStorageError:
                # The storage layer already retried for its window; a few more spaced tries before the
                # error reaches the training worker (which would restart the group from a checkpoint).
                # In the task rather than as Ray task retries: Ray 2.60 deprecates map_batches' retry args.
                if attempt == READ_RETRIES:
                    raise
                time.sleep(storage.backoff(attempt, base=10.0, cap=60.0))
        t1 = time.perf_counter()
        raw = np.frombuffer(b"".join(parts), dtype=np.uint8).reshape(-1, W)  # windows in block order
        codes = raw & CODE_MASK
        ok = np.count_nonzero(codes == INVALID, axis=1) <= self.max_invalid
        coords = (np.repeat(np.asarray(row["global_start"], dtype=np.int64), n_win)
                  + W * (np.arange(n_win.sum()) - np.repeat(np.cumsum(n_win) - n_win, n_win)))
        codes, soft, coords = codes[ok], (raw[ok] & SOFT_BIT) >> 3, coords[ok]
        if len(codes) != int(row["num_samples"]):
            raise UserError(f"{self.prepared}: shard data disagrees with the manifest (chunk {row['chunk']}); "
                            "re-run data prepare")
        rc = np.zeros(len(codes), dtype=bool)
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, int(row["chunk"])])
            perm = rng.permutation(len(codes))
            codes, soft, coords = codes[perm], soft[perm], coords[perm]
            rc = rng.random(len(codes)) < self.rc_prob
            codes[rc] = reverse_complement_codes(codes[rc])
            soft[rc] = soft[rc, ::-1]
        sample = int(row["first_sample"]) + np.arange(len(codes), dtype=np.int64)
        keep = sample >= self.start_sample
        codes, soft, coords, rc, sample = codes[keep], soft[keep], coords[keep], rc[keep], sample[keep]
        t2 = time.perf_counter()
        ids = self.tok.encode_windows(codes)
        out = {
            "input_ids": ids,
            "attention_mask": np.ones(ids.shape, dtype=np.uint8),
            "soft_mask": self._token_soft_mask(soft),
            "sample": sample, "coord": coords, "rc": rc,
        }
        if timings is not None:
            t3 = time.perf_counter()
            for key, dt in (("read", t1 - t0), ("cut_filter_shuffle_rc", t2 - t1), ("tokenize", t3 - t2)):
                timings[key] = timings.get(key, 0.0) + dt
        return out

    def _token_soft_mask(self, soft: np.ndarray) -> np.ndarray:
        """1 where a token's k-mer holds any lowercase (repeat-masked) base; 0 at [CLS]/[SEP]."""
        k, s = self.tok.k, self.tok.stride
        csum = np.zeros((soft.shape[0], soft.shape[1] + 1), dtype=np.int32)
        np.cumsum(soft, axis=1, out=csum[:, 1:])
        kmers = (csum[:, k:] - csum[:, :-k] > 0)[:, ::s]
        out = np.zeros((soft.shape[0], kmers.shape[1] + 2), dtype=np.uint8)
        out[:, 1:-1] = kmers
        return out


def pretraining_dataset(data: DataSection | Mapping[str, Any], split: str = "train", *, seed: int = 0, epoch: int = 0,
                        start_sample: int = 0, num_shards: int = 1, shard_index: int = 0, windows_per_block: int = 64,
                        blocks_per_chunk: int = 16, num_cpus: float = 0.25):
    """Fixed-length tokenized windows of a prepared genome as a ``ray.data.Dataset``.

    ``data`` is the config's data section (a ``DataSection`` or its mapping, e.g.
    ``{"prepared": "s3://bucket/prepared/mine", "window_bp": 515}``): which genome, window length, k,
    stride, reverse-complement probability, N filter and storage options.

    Rows: ``input_ids`` and ``attention_mask`` (tokens of ``window_bp`` + [CLS]/[SEP]),
    ``soft_mask`` (per token: its k-mer holds a lowercase base), ``sample`` (position in this
    consumer's epoch), ``coord`` (global genome start) and ``rc`` (reverse-complemented).

    Resume mid-epoch with ``start_sample``: the rows are exactly those an uninterrupted iteration
    would yield from that position on. ``num_shards``/``shard_index`` give each of several consumers
    (training workers) its own disjoint, deterministic part of the epoch.
    """
    import ray

    from randommask.common.ray_runtime import configure_data_context, ensure_ray

    d = data_section(data)
    plan = build_plan(d.prepared, split, d.window_bp, seed, epoch, d.max_n_fraction, num_shards, shard_index,
                      windows_per_block, blocks_per_chunk, d.options, k=d.k)
    if not 0 <= start_sample <= plan.num_samples:
        raise UserError(f"start_sample {start_sample} is outside this epoch's {plan.num_samples} windows")
    ensure_ray()
    configure_data_context()
    rows = [c for c in plan.chunks if c["first_sample"] + c["num_samples"] > start_sample]
    if not rows:
        return ray.data.from_items([]).limit(0)
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    udf = ReadChunk(d, seed, epoch, split == "train", start_sample)
    return ds.map_batches(udf, batch_size=1, num_cpus=num_cpus, zero_copy_batch=True)


def data_section(data: DataSection | Mapping[str, Any]) -> DataSection:
    """``data`` as a validated DataSection (one-line UserError for a bad mapping)."""
    if isinstance(data, DataSection):
        return data
    from pydantic import ValidationError

    try:
        return DataSection.model_validate(dict(data))
    except ValidationError as e:
        first = e.errors()[0]
        raise UserError(f"data section: {'.'.join(str(x) for x in first['loc'])}: {first['msg']}") from None


def validation_windows(data: DataSection | Mapping[str, Any], limit: int = 1024) -> np.ndarray:
    """``limit`` validation windows evenly spaced over all validation windows in genome order,
    tokenized: the fixed set that evaluation and analysis use, so it samples every validation region
    (every chromosome of a large genome), not the first ones. The same for every run with the same
    data, window length and limit. Read in this process (no Ray): it is small and must not wait for
    cluster resources. Raises UserError when the dataset holds no validation window of this size."""
    # One window per block, every block in one chunk: the plan lists each valid window's position.
    d = data_section(data)
    plan = build_plan(d.prepared, "validation", d.window_bp, max_n_fraction=d.max_n_fraction, windows_per_block=1,
                      blocks_per_chunk=1 << 62, storage_options=d.options, k=d.k)
    if not plan.num_samples:
        raise UserError(f"{d.prepared}: no validation windows of {d.window_bp} bp (prepare with a larger --val-fraction "
                        "or use shorter windows)")
    (chunk,) = plan.chunks
    pick = np.unique(np.linspace(0, plan.num_samples - 1, min(limit, plan.num_samples)).round().astype(np.int64))
    row = {key: [chunk[key][i] for i in pick] for key in ("shard", "read_start", "num_windows", "global_start")}
    row.update(chunk=0, first_sample=0, num_samples=len(pick))
    return ReadChunk(d, seed=0, epoch=0, train=False).read(row)["input_ids"]
