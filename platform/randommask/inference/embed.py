"""``randommask embed``: one vector per BED region, as Ray Data batch inference.

Regions -> their sequence (pyfaidx, in Ray Data tasks) -> tiles that fit the model -> tokens ->
a fixed pool of encoder actors (bf16 on CUDA, fp32 on CPU) -> pooled vectors -> Parquet:
``chrom``, ``start``, ``end``, ``name``, ``embedding`` (fixed-size list of float32).

Strands (``--strands``): ``auto`` (default) embeds a BED ``+`` region as the genome reads, a ``-``
region from its reverse complement, and a region without a strand (no 6th column, or ``.``) as the
mean of both strands' vectors; ``both`` averages the two strands for every region; ``forward`` reads
every region as the genome does, its strand ignored.

``--pool mean``: the fp32 mean of the chosen layer's hidden states over the region's k-mer
tokens; [CLS] and [SEP] are not included, and no context outside the region is added. A region
longer than the trained window (``data.window``) is cut into tiles overlapping by ``k - stride`` bases, so each
k-mer is in exactly one tile and the mean counts each once. ``--pool cls``: the [CLS] vector, for a
tiled region the mean of its tiles' [CLS] vectors weighted by their k-mer counts.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from randommask.common.checkpoints import provenance
from randommask.errors import UserError
from randommask.inference import fasta as fasta_io
from randommask.inference import provenance as prov_io
from randommask.inference import runtime
from randommask.inference.regions import read_bed, tiles

KEY = ["chrom", "start", "end", "name"]
EMBED_STRANDS = ("auto", "both", "forward")
TILES_PER_FORWARD = 64  # tiles in one forward pass: bounds activation memory whatever the batch


def read_strands(region_strand: str, strands: str) -> str:
    """The strands a region is read on ("+", "-" or "+-" for both) under ``--strands``."""
    if strands == "forward":
        return "+"
    if strands == "both" or region_strand not in ("+", "-"):
        return "+-"
    return region_strand


def tokenize_regions(batch: dict[str, np.ndarray], fasta: str, k: int, stride: int, max_kmers: int,
                     storage_options: dict | None = None) -> dict[str, np.ndarray]:
    """Ray Data task: each region's sequence on each of its strands, cut into tiles, as token ids
    (n_strands * n_tiles, width), the strands one after the other."""
    from randommask.data.tokenizer import KmerTokenizer, reverse_complement

    fa = fasta_io.open_fasta(fasta, storage_options, log=lambda *_: None)
    tok = KmerTokenizer(k, stride)
    ids = []
    for chrom, start, end, strands in zip(batch["chrom"], batch["start"], batch["end"], batch["strands"]):
        seq = fa[str(chrom)][int(start):int(end)]
        parts = []
        for strand in str(strands):
            read = seq if strand == "+" else reverse_complement(seq)
            parts += [read[a:b] for a, b in tiles(len(read), max_kmers, k, stride)]
        ids.append(tok.encode_batch(parts)["input_ids"].astype(np.int32))
    return {**batch, "ids": runtime.object_column(ids)}


class Embedder:
    """Ray Data actor: the encoder, loaded once; pools each region's tiles into one vector."""

    def __init__(self, checkpoint: str, pool: str, layer: int, gpu: bool, threads: int | None,
                 storage_options: dict | None = None, provenance: dict | None = None) -> None:
        self.model, _, self.device = runtime.load_model(checkpoint, "encoder", gpu, threads, storage_options)
        self.pool, self.layer, self.provenance = pool, layer, provenance

    def __call__(self, batch: dict[str, np.ndarray]):
        import pyarrow as pa

        # each strand's tiles pooled on their own, then the strands' vectors averaged
        per_strand, owner = [], []
        for i, (ids, strands) in enumerate(zip(batch["ids"], batch["strands"])):
            n = len(str(strands))
            per_strand += np.split(ids, n)
            owner += [i] * n
        each = self.embed(per_strand)  # every region is read on at least one strand
        vectors = np.zeros((len(batch["ids"]), each.shape[1]), np.float64)
        np.add.at(vectors, np.array(owner), each)
        vectors = (vectors / np.bincount(owner, minlength=len(vectors))[:, None]).astype(np.float32)
        dim = vectors.shape[1]
        flat = pa.array(vectors.reshape(-1), type=pa.float32())
        table = pa.table({"chrom": pa.array([str(c) for c in batch["chrom"]]),
                          "start": pa.array(batch["start"].astype(np.int64)),
                          "end": pa.array(batch["end"].astype(np.int64)),
                          "name": pa.array([str(n) for n in batch["name"]]),
                          "strands": pa.array([str(s) for s in batch["strands"]]),
                          "embedding": pa.FixedSizeListArray.from_arrays(flat, dim)})
        return prov_io.with_metadata(table, self.provenance) if self.provenance else table

    def embed(self, regions: list[np.ndarray]) -> np.ndarray:
        """One vector per region from its tiles' token ids (each (n_tiles, width), [PAD]-padded)."""
        import torch

        from randommask.data.tokenizer import PAD
        from randommask.training.model import autocast

        owner = np.concatenate([np.full(len(r), i) for i, r in enumerate(regions)])
        width = max(r.shape[1] for r in regions)
        ids = np.full((len(owner), width), PAD, dtype=np.int64)
        row = 0
        for r in regions:
            ids[row : row + len(r), : r.shape[1]] = r
            row += len(r)
        ids_t = torch.from_numpy(ids)
        attn = (ids_t != PAD).long()
        kmers = attn.clone()
        kmers[:, 0] = 0  # [CLS]
        kmers[torch.arange(len(kmers)), attn.sum(1) - 1] = 0  # [SEP]
        sums, cls_vecs = [], []
        with torch.no_grad():
            for i in range(0, len(ids_t), TILES_PER_FORWARD):
                sl = slice(i, i + TILES_PER_FORWARD)
                with autocast(self.device):
                    out = self.model(input_ids=ids_t[sl].to(self.device), attention_mask=attn[sl].to(self.device),
                                     output_hidden_states=self.layer != -1)
                hidden = (out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]).float().cpu()
                sums.append((hidden * kmers[sl].unsqueeze(-1)).sum(1))
                cls_vecs.append(hidden[:, 0])
        tile_sum, tile_cls = torch.cat(sums), torch.cat(cls_vecs)
        counts = kmers.sum(1).float()
        owner_t = torch.from_numpy(owner)
        total = torch.zeros(len(regions)).index_add_(0, owner_t, counts)
        if self.pool == "mean":
            pooled = torch.zeros(len(regions), tile_sum.shape[1]).index_add_(0, owner_t, tile_sum)
        else:
            pooled = torch.zeros(len(regions), tile_cls.shape[1]).index_add_(0, owner_t, tile_cls * counts[:, None])
        return (pooled / total[:, None]).numpy().astype(np.float32)


def embed(checkpoint: str, fasta: str, regions: str, out: str, pool: str = "mean", layer: int = -1,
          batch_size: int = 64, window_bp: int | None = None, tile: bool = True, strands: str = "auto", actors: int = 1,
          cpus_per_actor: float = 1.0, gpus_per_actor: float = 0.0, overwrite: bool = False,
          allow_untrained_positions: bool = False, storage_options: dict | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Embed every region of the BED file into Parquet files under ``out``; returns a summary."""
    if pool not in ("mean", "cls"):
        raise UserError(f"--pool {pool!r}: choose mean or cls")
    if strands not in EMBED_STRANDS:
        raise UserError(f"--strands {strands!r}: choose one of {', '.join(EMBED_STRANDS)}")
    for flag, value in (("--batch-size", batch_size), ("--actors", actors)):
        if value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    tok, config, trained = runtime.model_limits(checkpoint, storage_options)
    n_layers = config.num_hidden_layers
    if not -(n_layers + 1) <= layer <= n_layers:
        raise UserError(f"--layer {layer}: the model has {n_layers} layers (0 is the embeddings, -1 the last)")
    all_kmers = tok.num_kmers(tok.bases_for(config.max_position_embeddings))
    if window_bp is not None:
        if tok.num_kmers(window_bp) < 1:
            raise UserError(f"--window-bp {window_bp}: shorter than one {tok.k}-mer")
        max_kmers = min(all_kmers, tok.num_kmers(window_bp))
        trained.require(max_kmers + 2, f"--window-bp {window_bp} (tiles of {max_kmers} {tok.k}-mers)",
                        allow_untrained_positions, log)
    else:  # tiles of the trained window; --no-tile: a region may take all the positions, if trained
        max_kmers = min(all_kmers, tok.num_kmers(trained.default_bp(tok))) if tile else all_kmers
    fa = fasta_io.open_fasta(fasta, storage_options, log)
    regs = read_bed(regions, fasta_io.contig_lengths(fa), tok.k, storage_options)
    if not tile:
        for r in regs:
            need = tok.num_kmers(r.end - r.start)
            what = f"--no-tile: region {r.name} ({r.chrom}:{r.start}-{r.end})"
            if need > max_kmers:
                raise UserError(f"{what} needs {need} k-mer tokens, the model takes {max_kmers}; drop --no-tile "
                                "to embed it in tiles")
            trained.require(need + 2, what, allow_untrained_positions, log)
    prov = provenance("embed", checkpoint, {"pool": pool, "layer": layer, "max_kmers": max_kmers,
                                                    "tile": tile, "strands": strands}, storage_options)
    prov_io.claim(out, prov, overwrite, storage_options, log)
    done = runtime.written_keys(out, KEY, storage_options)
    todo = [r for r in regs if (r.chrom, r.start, r.end, r.name) not in done]
    n_tiles = sum(len(tiles(r.end - r.start, max_kmers, tok.k, tok.stride)) * len(read_strands(r.strand, strands))
                  for r in todo)
    log(f"embed {len(regs)} region(s) ({len(regs) - len(todo)} already in {out}, {len(todo)} to do, "
        f"{n_tiles} tile(s) of at most {max_kmers} {tok.k}-mers), pool {pool}, layer {layer}, strands {strands}, "
        f"{actors} actor(s)")
    summary = {"regions": len(regs), "skipped": len(regs) - len(todo), "embedded": len(todo), "tiles": n_tiles,
               "max_kmers": max_kmers,
               "dim": config.hidden_size, "pool": pool, "layer": layer, "strands": strands, "out": out, "seconds": 0.0}
    if todo:
        rows = [{"chrom": r.chrom, "start": r.start, "end": r.end, "name": r.name,
                 "strands": read_strands(r.strand, strands)} for r in todo]
        ran = runtime.run_pipeline(
            rows, out, tokenize_regions,
            dict(fasta=fasta, k=tok.k, stride=tok.stride, max_kmers=max_kmers, storage_options=storage_options),
            Embedder, dict(checkpoint=checkpoint, pool=pool, layer=layer, gpu=gpus_per_actor > 0,
                           threads=max(1, int(cpus_per_actor)), storage_options=storage_options, provenance=prov),
            batch_size, actors, cpus_per_actor, gpus_per_actor, storage_options)
        summary["seconds"] = ran["seconds"]
        summary["tokens"] = sum(tok.num_kmers(r.end - r.start) for r in todo)
    return summary
