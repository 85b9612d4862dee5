"""What embedding and variant scoring share: a model on each actor, Ray Data's pipeline from
Python rows to Parquet, and resuming by skipping rows already written."""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterator

import numpy as np

from randommask.common import storage
from randommask.errors import UserError


def read_text(uri: str, flag: str, storage_options: dict | None = None) -> str:
    """A small input file (BED, VCF), local or s3://, plain or gzip/bgzip, as text; errors name ``flag``."""
    import gzip

    try:
        raw = storage.read_bytes(uri, storage_options)
    except UserError:
        raise
    except Exception as e:
        raise UserError(storage.describe_error(e, f"{flag} {uri}")) from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise UserError(f"{flag} {uri}: cannot decompress ({e})") from None
    return raw.decode("utf-8", errors="replace")


def load_model(checkpoint: str, kind: str, gpu: bool, threads: int | None, storage_options: dict | None = None):
    """(model in eval mode, tokenizer, device) on this process: an encoder (``BertModel``) or the
    masked-LM (``BertForMaskedLM``); a remote checkpoint is fetched once per node."""
    import torch
    import transformers
    from transformers import BertForMaskedLM, BertModel

    from randommask.common.checkpoints import node_checkpoint
    from randommask.data.tokenizer import KmerTokenizer

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    if threads:
        torch.set_num_threads(int(threads))
    local = node_checkpoint(checkpoint, storage_options)
    cls = BertModel if kind == "encoder" else BertForMaskedLM
    kwargs = {"add_pooling_layer": False} if kind == "encoder" else {}
    model = cls.from_pretrained(local, attn_implementation="sdpa", **kwargs).eval()
    device = torch.device("cuda" if gpu and torch.cuda.is_available() else "cpu")
    return model.to(device), KmerTokenizer.from_pretrained(local), device


def masked_log_probs(model, ids, attention_mask=None):
    """Log-probabilities over the vocabulary at the [MASK] tokens of ``ids`` only, row by row in token
    order ((number of [MASK] tokens, vocabulary)): the encoder runs on every token, the MLM head only
    where it is read, which is most of a small model's work when run on every token."""
    import torch

    from randommask.data.tokenizer import MASK

    hidden = model.bert(input_ids=ids, attention_mask=attention_mask).last_hidden_state
    return torch.log_softmax(model.cls(hidden[ids == MASK]).float(), -1)


def model_limits(checkpoint: str, storage_options: dict | None = None) -> tuple[Any, Any, Any]:
    """(tokenizer, config, trained window (``data.window.TrainedWindow``)) of a checkpoint, read in the
    driver before any work starts."""
    from transformers import BertConfig

    from randommask.common.checkpoints import node_checkpoint
    from randommask.data.tokenizer import KmerTokenizer
    from randommask.data.window import trained_window

    local = node_checkpoint(checkpoint, storage_options)
    tok = KmerTokenizer.from_pretrained(local)
    return tok, BertConfig.from_pretrained(local), trained_window(local, checkpoint, tok)


def parquet_files(out: str, storage_options: dict | None = None) -> list[str]:
    """The Parquet files under OUT (names and folders starting with ``_`` or ``.`` are ours, not
    results)."""
    fs, path = storage.filesystem(out, storage_options)
    try:
        fs.invalidate_cache(path)  # Ray's writers add files after this process listed OUT (s3fs caches listings)
        names = fs.find(path)  # [] where OUT does not exist
    except FileNotFoundError:
        return []
    except Exception as e:
        raise UserError(storage.describe_error(e, out)) from None
    root = path.rstrip("/") + "/"
    keep = []
    for name in names:
        parts = name[len(root):].split("/") if name.startswith(root) else [name.rsplit("/", 1)[-1]]
        if parts[-1].endswith(".parquet") and not any(p.startswith(("_", ".")) for p in parts):
            keep.append(name)  # not under _sorting/ (a sort in progress) or another folder of ours
    return sorted(keep)


def written_keys(out: str, columns: list[str], storage_options: dict | None = None) -> set[tuple]:
    """Keys of the rows already in OUT's Parquet files: a rerun skips them."""
    import pyarrow.parquet as pq

    fs, _ = storage.filesystem(out, storage_options)
    keys: set[tuple] = set()
    for name in parquet_files(out, storage_options):
        try:
            with fs.open(name, "rb") as f:
                table = pq.read_table(f, columns=columns)
        except Exception as e:
            raise UserError(f"--out {out}: {name} is not a readable Parquet file of these results ({e}); "
                            "move it away or use a new --out") from None
        keys.update(zip(*(table.column(c).to_pylist() for c in columns)))
    return keys


def column_chunks(out: str, column: str, storage_options: dict | None = None) -> Iterator[Any]:
    """One column of OUT's Parquet files, a file at a time (an Arrow array each): memory bounded by
    the largest file, not by OUT."""
    import pyarrow.parquet as pq

    fs, _ = storage.filesystem(out, storage_options)
    for name in parquet_files(out, storage_options):
        with fs.open(name, "rb") as f:
            yield pq.read_table(f, columns=[column]).column(column)


def distinct_values(out: str, column: str, storage_options: dict | None = None) -> set:
    """The distinct values of one column of OUT, a file at a time."""
    import pyarrow.compute as pc

    values: set = set()
    for chunk in column_chunks(out, column, storage_options):
        values.update(pc.unique(chunk).to_pylist())
    return values


def run_pipeline(rows: list[dict], out: str, prepare: Callable, prepare_kwargs: dict, actor: type,
                 actor_kwargs: dict, batch_size: int, actors: int, cpus_per_actor: float, gpus_per_actor: float,
                 storage_options: dict | None = None, read: Callable | None = None,
                 read_kwargs: dict | None = None) -> dict[str, Any]:
    """rows -> [``read``: one task per row, each a read unit whose records it streams out in
    batches] -> ``prepare`` (Ray Data tasks: genome reads, tokens) -> a fixed pool of ``actor`` (the
    model, one copy per actor) -> Parquet under OUT. Returns counts and timings. A UserError raised in
    a task reaches the caller as itself (one line), not as Ray's wrapped traceback."""
    import ray

    from randommask.common.ray_runtime import ensure_ray

    ensure_ray()
    ray.data.DataContext.get_current().enable_progress_bars = False
    t0 = time.time()
    if read is not None:
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        ds = ds.map_batches(read, fn_kwargs=read_kwargs or {}, batch_size=1, batch_format="numpy")
    else:
        ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), math.ceil(len(rows) / batch_size))))
    ds = ds.map_batches(prepare, fn_kwargs=prepare_kwargs, batch_size=batch_size, batch_format="numpy")
    ds = ds.map_batches(actor, fn_constructor_kwargs=actor_kwargs, batch_size=batch_size, batch_format="numpy",
                        concurrency=actors, num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None)
    path, fs = storage.ray_storage(out, storage_options)
    try:
        ds.write_parquet(path, filesystem=fs)
    except Exception as e:
        message = task_user_error(e)
        if message is None:
            raise
        raise UserError(message) from None
    return {"rows": len(rows), "seconds": round(time.time() - t0, 2)}


def task_user_error(exc: BaseException) -> str | None:
    """The message of a UserError raised in a Ray task, from what reaches the driver: Ray Data
    passes on the task's formatted traceback, not the exception object."""
    import re

    found = re.findall(rf"{re.escape(UserError.__module__)}\.UserError: (.+)", str(exc))
    return found[-1].strip() if found else None


def object_column(items: list) -> np.ndarray:
    """A numpy object array of arrays (ragged per row), as Ray Data takes variable-shaped tensors."""
    col = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        col[i] = item
    return col
