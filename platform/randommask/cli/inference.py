"""Commands that use a trained model: embeddings, variant scores, zero-shot standing."""

from __future__ import annotations

import argparse
from typing import Callable

from randommask.cli.options import add_allow_untrained, add_storage_options, storage_options_from


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a run's final/, a run directory, or any DNABERT-compatible directory (local or s3://)")
    p.add_argument("--fasta", required=True, help="the genome: plain, bgzip or gzip FASTA, local or s3:// (indexed "
                   "with pyfaidx; see docs/inference.md)")
    p.add_argument("--out", required=True, help="a folder of Parquet files (local or s3://); a rerun with the same "
                   "checkpoint and settings skips what is there, one with others is refused")
    p.add_argument("--overwrite", action="store_true", help="replace the results in --out made with another "
                   "checkpoint or other settings, instead of refusing")
    p.add_argument("--window-bp", type=int, help="bases the model sees at once (default: its pretraining window, "
                   "recorded in its config.json; else its run's data.window_bp; else all its positions)")
    add_allow_untrained(p)
    p.add_argument("--actors", type=int, default=1, help="model copies (Ray Data actors) working at once")
    p.add_argument("--cpus-per-actor", type=float, default=1.0)
    p.add_argument("--gpus-per-actor", type=float, default=0.0, help="on GPU clusters, e.g. 1 (bf16 on CUDA)")
    add_storage_options(p)


def add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="one embedding per BED region, as Ray Data batch inference, to Parquet")
    _add_common(p)
    p.add_argument("--regions", required=True, help="BED file (0-based, half-open; 4th column: name), local or s3://")
    p.add_argument("--pool", choices=["mean", "cls"], default="mean",
                   help="mean: fp32 mean over the region's k-mer tokens ([CLS]/[SEP] excluded); cls: the [CLS] vector")
    p.add_argument("--layer", type=int, default=-1, help="hidden layer to pool (-1: the last; 0: the embeddings)")
    p.add_argument("--batch-size", type=int, default=64, help="regions per batch")
    p.add_argument("--no-tile", action="store_true", help="read each region whole: refuse one longer than the "
                   "model's positions (or than its trained window, without --allow-untrained-positions) instead of "
                   "embedding it in tiles")
    p.add_argument("--strands", choices=("auto", "both", "forward"), default="auto",
                   help="auto: a BED + or - region on its strand, one without a strand as the mean of both; both: "
                   "the mean of both strands for every region; forward: as the genome reads, strand ignored")


def run_embed(args: argparse.Namespace) -> None:
    from randommask.inference.embed import embed

    s = embed(args.checkpoint, args.fasta, args.regions, args.out, pool=args.pool, layer=args.layer,
              batch_size=args.batch_size, window_bp=args.window_bp, tile=not args.no_tile, strands=args.strands,
              actors=args.actors, allow_untrained_positions=args.allow_untrained_positions,
              cpus_per_actor=args.cpus_per_actor, gpus_per_actor=args.gpus_per_actor, overwrite=args.overwrite,
              storage_options=storage_options_from(args))
    rate = f", {s['embedded'] / s['seconds']:.1f} regions/s" if s["seconds"] else ""
    print(f"embedded {s['embedded']} region(s) ({s['tiles']} tile(s)), {s['skipped']} already there; "
          f"{s['dim']}-dim {s['pool']} of layer {s['layer']}, strands {s['strands']}; {s['seconds']:.1f} s{rate}")
    print(f"out      {s['out']} (Parquet: chrom, start, end, name, strands, embedding)")


def add_score_variants(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score-variants", help="zero-shot masked-LM scores (log-likelihood ratio) of the SNVs of a VCF; every allele gets a row")
    _add_common(p)
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--vcf", help="VCF (plain or gzip), local or s3://; every ALT gets a row: SNVs (after trimming "
                       "shared bases) scored, the rest with their reason in the error column")
    given.add_argument("--variants", help="a table instead of a VCF: Parquet, CSV or TSV with columns chrom, pos "
                       "(1-based), ref, alt and optionally id")
    p.add_argument("--region", action="append", metavar="CHR:START-END", help="only the records in this region "
                   "(1-based, inclusive; or a whole contig), read through the VCF's tabix/CSI index; repeatable")
    p.add_argument("--batch-size", type=int, default=64, help="variants per batch")
    p.add_argument("--out-vcf", metavar="FILE.vcf.gz", help="also write the scored records as a VCF with INFO RM_LLR, "
                   "RM_PREF, RM_PALT, RM_ENTROPY (and RM_ERR), sorted, bgzipped and tabix-indexed (local or s3://)")
    p.add_argument("--strands", choices=("both", "forward"), default="both",
                   help="average the forward and reverse-complement scores (default), or the forward strand alone")


def run_score_variants(args: argparse.Namespace) -> None:
    from randommask.inference.variants import score_variants

    s = score_variants(args.checkpoint, args.fasta, args.vcf, args.out, window_bp=args.window_bp, variants=args.variants,
                       regions=args.region, out_vcf=args.out_vcf, allow_untrained_positions=args.allow_untrained_positions,
                       strands=args.strands, batch_size=args.batch_size, actors=args.actors, cpus_per_actor=args.cpus_per_actor,
                       gpus_per_actor=args.gpus_per_actor, overwrite=args.overwrite,
                       storage_options=storage_options_from(args))
    reasons = ", ".join(f"{kind} {n}" for kind, n in s["not_scored"].items())
    print(f"scored   {s['scored']} SNV(s), {s['errors']} reported with an error{f' ({reasons})' if reasons else ''}; "
          f"windows of {s['window_bp']} bp, {s['strands']} strand(s); {s['seconds']:.1f} s")
    print(f"out      {s['out']} (Parquet: chrom, pos, id, ref, alt, norm_pos, norm_ref, norm_alt, llr, p_ref, p_alt, "
          "entropy, error; in genome order)")
    if s.get("vcf"):
        print(f"vcf      {args.out_vcf} ({s['vcf']['records']} record(s), {s['vcf']['alts']} ALT(s); tabix-indexed)")


def add_zeroshot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("zeroshot", help="mean log P(ref base) at held-out positions, beside count tables of the "
                       "flanking bases and chance")
    p.add_argument("checkpoint", help="a run's final/, a checkpoint step_*/, a run directory, or any "
                   "DNABERT-compatible directory (local or s3://)")
    p.add_argument("--prepared", required=True, help="prepared data (randommask data prepare): positions come from "
                   "its validation split, the tables from its training split")
    p.add_argument("--positions", type=int, default=5000, help="held-out positions (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the positions drawn")
    p.add_argument("--out", required=True, help="the JSON file to write (local or s3://)")
    p.add_argument("--window-bp", type=int, help="bases the model sees (default: its pretraining window, recorded in "
                   "its config.json; else its run's data.window_bp; else all its positions; made odd, centred on the base)")
    add_allow_untrained(p)
    p.add_argument("--strands", choices=("both", "forward"), default="both")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    add_storage_options(p)


def run_zeroshot(args: argparse.Namespace) -> None:
    from randommask.inference.zeroshot import standing, zeroshot

    r = zeroshot(args.checkpoint, args.prepared, args.out, positions=args.positions, seed=args.seed,
                 window_bp=args.window_bp, strands=args.strands, threads=args.threads,
                 allow_untrained_positions=args.allow_untrained_positions,
                 storage_options=storage_options_from(args))
    print(f"zeroshot {standing(r)}")
    print(f"out      {args.out}")


def register(sub: argparse._SubParsersAction) -> dict[str, Callable[[argparse.Namespace], None]]:
    add_embed(sub)
    add_score_variants(sub)
    add_zeroshot(sub)
    return {"embed": run_embed, "score-variants": run_score_variants, "zeroshot": run_zeroshot}
