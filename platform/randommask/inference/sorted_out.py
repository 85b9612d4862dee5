"""OUT's Parquet files rewritten in genome order: by contig (the FASTA's order; names it does not
have after, by name), position, then id, REF and ALT, so that reading the folder in file-name order
gives the rows sorted, as a VCF is.

Ray Data sorts (a distributed sort: the driver holds one batch at a time) and the driver writes the
sorted stream to ``_sorting/`` in files of at most ``ROWS_PER_FILE`` rows. Up to ``DRIVER_ROWS``
rows the driver sorts them itself: there a Ray Data sort's fixed cost (seconds) is most of the work. The swap is two-phase, so
a crash at any point loses no row and duplicates none: ``_sorting/_swap.json`` (the files to remove
and the parts to move in) is written last; whoever finds it finishes the swap (:func:`recover`, at
the start of every run), and ``_sorting/`` without it is a sort that never finished and is dropped.
``_sorted.json`` names the parts of the last sort, so a rerun that adds nothing does not sort again.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Callable

from randommask.common import storage
from randommask.inference import provenance as prov_io
from randommask.inference import runtime
from randommask.inference.alleles import contig_aliases

SORTING = "_sorting"
SWAP = "_swap.json"
SORTED = "_sorted.json"
ROWS_PER_FILE = 1_000_000
DRIVER_ROWS = 200_000  # about 30 MB of score rows in the driver
RANK = "_contig_rank"


def contig_ranks(names: set[str], fasta_contigs: list[str]) -> dict[str, int]:
    """Each contig name's place: the FASTA's order (through ``chr``/``MT`` aliases), then the names
    the FASTA lacks, by name."""
    order = {c: i for i, c in enumerate(fasta_contigs)}
    aliases = contig_aliases(names, fasta_contigs)
    ranks = {n: order[aliases.get(n, n)] for n in names if aliases.get(n, n) in order}
    for j, n in enumerate(sorted(n for n in names if n not in ranks)):
        ranks[n] = len(order) + j
    return ranks


def _with_rank(table, ranks: dict[str, int]):
    import pyarrow as pa

    return table.append_column(RANK, pa.array([ranks[c] for c in table.column("chrom").to_pylist()], pa.int64()))


def _names(out: str, storage_options: dict | None) -> list[str]:
    return [f.rsplit("/", 1)[-1] for f in runtime.parquet_files(out, storage_options)]


def recover(out: str, storage_options: dict | None = None, log: Callable[[str], None] = print) -> None:
    """Finish a swap a crash interrupted after its commit point; drop a sort that never reached it."""
    fs, path = storage.filesystem(out, storage_options)
    sorting = f"{path.rstrip('/')}/{SORTING}"
    if not fs.exists(sorting):
        return
    swap = f"{sorting}/{SWAP}"
    if fs.exists(swap):
        plan = json.loads(fs.cat_file(swap))
        _swap(fs, path.rstrip("/"), plan)
        log(f"sort     finished the interrupted sort of {out}")
    else:
        fs.rm(sorting, recursive=True)


def _swap(fs, path: str, plan: dict[str, Any]) -> None:
    for name in plan["remove"]:
        if fs.exists(f"{path}/{name}"):
            fs.rm(f"{path}/{name}")
    for name in plan["parts"]:
        if fs.exists(f"{path}/{SORTING}/{name}"):
            fs.mv(f"{path}/{SORTING}/{name}", f"{path}/{name}")
    with fs.open(f"{path}/{SORTED}", "wb") as f:
        f.write(json.dumps({"parts": plan["parts"]}).encode())
    fs.rm(f"{path}/{SORTING}", recursive=True)


def is_sorted(out: str, storage_options: dict | None = None) -> bool:
    """OUT holds exactly the parts of its last sort."""
    marker = storage.join(out, SORTED)
    if not storage.exists(marker, storage_options):
        return False
    return json.loads(storage.read_bytes(marker, storage_options))["parts"] == _names(out, storage_options)


def sort_out(out: str, keys: list[str], fasta_contigs: list[str], prov: dict[str, Any] | None = None,
             storage_options: dict | None = None, log: Callable[[str], None] = print,
             driver_rows: int = DRIVER_ROWS) -> int:
    """Rewrite OUT sorted by contig rank, then ``keys`` (in the driver up to ``driver_rows`` rows, else
    through Ray Data); returns the rows written (0 when OUT was already sorted or is empty)."""
    import pyarrow.parquet as pq

    files = runtime.parquet_files(out, storage_options)
    if not files or is_sorted(out, storage_options):
        return 0
    ranks = contig_ranks(runtime.distinct_values(out, "chrom", storage_options), fasta_contigs)
    fs, path = storage.filesystem(out, storage_options)
    path = path.rstrip("/")
    if fs.exists(f"{path}/{SORTING}"):
        fs.rm(f"{path}/{SORTING}", recursive=True)
    fs.makedirs(f"{path}/{SORTING}", exist_ok=True)
    token, parts, rows, writer, handle, in_file = secrets.token_hex(4), [], 0, None, None, 0
    try:
        for batch in _sorted_batches(files, out, ranks, [RANK, *keys], storage_options, driver_rows):
            table = batch.drop_columns([RANK])
            table = prov_io.with_metadata(table, prov) if prov else table
            while table.num_rows:
                if writer is None or in_file == ROWS_PER_FILE:
                    if writer is not None:
                        writer.close()
                        handle.close()
                    parts.append(f"sorted-{len(parts):06d}-{token}.parquet")
                    handle = fs.open(f"{path}/{SORTING}/{parts[-1]}", "wb")
                    writer, in_file = pq.ParquetWriter(handle, table.schema), 0
                take = table.slice(0, ROWS_PER_FILE - in_file)
                writer.write_table(take)
                in_file, rows, table = in_file + take.num_rows, rows + take.num_rows, table.slice(take.num_rows)
    finally:
        if writer is not None:
            writer.close()
            handle.close()
    plan = {"remove": [f.rsplit("/", 1)[-1] for f in files], "parts": parts}
    with fs.open(f"{path}/{SORTING}/{SWAP}", "wb") as f:  # the commit point
        f.write(json.dumps(plan).encode())
    _swap(fs, path, plan)
    log(f"sort     {rows} row(s) of {out} in genome order: {len(files)} file(s) -> {len(parts)}")
    return rows


def _sorted_batches(files: list[str], out: str, ranks: dict[str, int], keys: list[str],
                    storage_options: dict | None, driver_rows: int):
    """OUT's rows with their contig rank, sorted by ``keys``, as Arrow tables in order."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from randommask.common.ray_runtime import ensure_ray

    fs, _ = storage.filesystem(out, storage_options)
    rows = 0
    for name in files:
        with fs.open(name, "rb") as f:
            rows += pq.ParquetFile(f).metadata.num_rows
    if rows <= driver_rows:
        tables = []
        for name in files:
            with fs.open(name, "rb") as f:
                tables.append(pq.read_table(f).replace_schema_metadata(None))
        yield _with_rank(pa.concat_tables(tables), ranks).sort_by([(k, "ascending") for k in keys])
        return
    ensure_ray()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = True  # the sorted blocks reach the driver in order
    try:
        _, read_fs = storage.ray_storage(out, storage_options)
        ds = ray.data.read_parquet(files, filesystem=read_fs)
        ds = ds.map_batches(_with_rank, fn_kwargs={"ranks": ranks}, batch_format="pyarrow").sort(keys)
        yield from ds.iter_batches(batch_format="pyarrow", batch_size=65536)
    finally:
        ctx.execution_options.preserve_order = False
