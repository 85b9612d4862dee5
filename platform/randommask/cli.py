"""The ``randommask`` command line."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from randommask.errors import UserError


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks against the DNABERT-style baseline (one JSON line each)")
    bs = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    t = bs.add_parser("tokenize", help="k-mer tokenization of 512-bp genome windows")
    t.add_argument("--windows", type=int, default=2000)
    t.add_argument("--window-bp", type=int, default=512)
    m = bs.add_parser("mask", help="RandomMask on a (batch x seq-len) token batch")
    m.add_argument("--batch", type=int, default=32)
    m.add_argument("--seq-len", type=int, default=512)
    m.add_argument("--step", type=int, default=200000, help="schedule step (default: a late, wide phase)")
    s = bs.add_parser("mlm-step", help="forward+backward with the sparse MLM loss vs the full-vocabulary loss")
    s.add_argument("--preset", default="tiny")
    s.add_argument("--batch", type=int, default=16)
    s.add_argument("--seq-len", type=int, default=512)
    s.add_argument("--steps", type=int, default=5)
    s.add_argument("--device", default="cpu")
    s.add_argument("--compile", action="store_true", help="torch.compile the sparse step")
    pl = bs.add_parser("pipeline", help="pretraining_dataset tokens/s from a local S3 server to a torch consumer")
    pl.add_argument("--epochs", type=int, default=3)
    pl.add_argument("--batch", type=int, default=256)
    pl.add_argument("--window-bp", type=int, default=512)
    to = bs.add_parser("train-overhead", help="the pretraining step in a Ray Train worker vs a plain process")
    to.add_argument("--preset", default="tiny")
    to.add_argument("--batch", type=int, default=32)
    to.add_argument("--window-bp", type=int, default=128)
    to.add_argument("--steps", type=int, default=40)
    e2e = bs.add_parser("e2e", help="a whole pretraining through Ray Train vs a DNABERT-style training loop")
    e2e.add_argument("--preset", default="tiny")
    e2e.add_argument("--batch", type=int, default=32)
    e2e.add_argument("--window-bp", type=int, default=128)
    e2e.add_argument("--steps", type=int, default=300)
    e2e.add_argument("--warmup", type=int, default=30, help="steps left out of the timing, both sides")
    em = bs.add_parser("embed", help="randommask embed (Ray Data, an actor pool) vs a plain transformers loop")
    em.add_argument("--preset", default="tiny")
    em.add_argument("--regions", type=int, default=400)
    em.add_argument("--region-bp", type=int, default=500)
    em.add_argument("--batch", type=int, default=64)
    for q in (t, m, s, pl, to, e2e, em):
        q.add_argument("--genome", help="FASTA file (default: the 300-kb E. coli slice shipped with the package; "
                       "make bench passes the whole genome)")
        q.add_argument("--k", type=int, default=6)
        q.add_argument("--seed", type=int, default=0)


def _run_bench(args: argparse.Namespace) -> None:
    from randommask.tools.bench import BENCHES, print_result

    options = {k: v for k, v in vars(args).items() if k not in ("command", "bench")}
    print_result(BENCHES[args.bench](**options))


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="prepare a genome and run a local RandomMask pretraining (make demo)")
    p.add_argument("--genome", help="FASTA file or URL (default: the 300-kb E. coli slice shipped with the package; "
                   "make demo passes the whole genome from ../shared)")
    p.add_argument("--config", help="default: the package's demo-cpu.yaml (jobs/configs/demo-cpu.yaml in the checkout)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")


def _run_demo(args: argparse.Namespace) -> None:
    from randommask.common import storage
    from randommask.common.assets import DEMO_CONFIG, GENOME_SLICE
    from randommask.data.genome import is_fasta_name
    from randommask.data.prepare import prepare
    from randommask.training.config import load_config

    genome = args.genome or str(GENOME_SLICE)
    if storage.is_local(genome) and not Path(genome).is_file():
        raise UserError(f"no genome at {genome}; run 'make demo GENOME=<FASTA path or URL>'")
    if not is_fasta_name(genome):
        raise UserError(f"{genome}: not a FASTA name (.fa .fasta .fna, optionally .gz)")
    stem = Path(genome.rstrip("/")).name.split(".")[0]
    prepared = str(Path("outputs") / "prepared" / stem)
    name = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = load_config(args.config or DEMO_CONFIG, [f"data.prepared={prepared}", f"run.name={name}", *args.set])
    print(f"demo     RandomMask pretraining of the {cfg.model.preset} model on {Path(genome).name}", flush=True)
    m = prepare([genome], prepared, show_progress=False)
    print(f"data     {m['totals']['bases']:,} bp prepared into {prepared} "
          f"(validation {m['totals']['validation_fraction']:.1%})", flush=True)
    _pretrain_and_report(cfg)


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="RandomMask pretraining on Ray Train (resumes a run of the same name)")
    p.add_argument("--config", required=True, help="YAML config (see jobs/configs/ and docs/pretraining.md)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, value in YAML: --set optim.lr=3e-4 --set masking.phase_ends=[10,20]")


def _run_pretrain(args: argparse.Namespace) -> None:
    from randommask.training.config import load_config

    _pretrain_and_report(load_config(args.config, args.set))


def _pretrain_and_report(cfg) -> None:
    from randommask.data.floors import best_table
    from randommask.training.driver import pretrain

    c = cfg
    print(f"run      {c.run.name}: {c.masking.strategy} masking, {c.model.preset} model, {c.optim.max_steps} steps, "
          f"{c.scaling.num_workers} worker(s) x {c.optim.batch_size} windows of {c.data.window_bp} bp -> "
          f"{c.run.storage_path}", flush=True)
    s = pretrain(cfg)
    minutes, seconds = divmod(int(s["seconds"]), 60)
    print(f"done     {s['step']}/{s['max_steps']} steps, {s['tokens']:,} tokens in {minutes}m{seconds:02d}s")
    if s["train_loss"] is not None:
        mask = f"{s['train_mask_loss']:.3f}" if s["train_mask_loss"] is not None else "-"
        print(f"loss     train on [MASK] inputs {mask} (all labelled positions {s['train_loss']:.3f})")
    if s["eval_span_k_mask_loss"] is not None:
        print(f"eval     on [MASK] inputs, fixed validation masks: span-k {s['eval_span_k_mask_loss']:.3f} "
              f"(acc {s['eval_span_k_mask_acc']:.3f}) | span-2k {s['eval_span_2k_mask_loss']:.3f} "
              f"(acc {s['eval_span_2k_mask_acc']:.3f})")
    f = s["floors"] or {}
    if f.get("overlap_only_span_k") is not None:
        print(f"         overlap only (a perfect reader of the visible bases that knows no DNA): span-k "
              f"{f['overlap_only_span_k']:.3f} | span-2k {f['overlap_only_span_2k']:.3f}")
    if s.get("eval_span_k_base_loss") is not None:
        best = best_table(f)
        table = f"best count table {best[1]:.3f} ({best[0]} base(s) each side)" if best else "no count table"
        print(f"per base eval span-k {s['eval_span_k_base_loss']:.3f} | span-2k {s['eval_span_2k_base_loss']:.3f} nats "
              f"per hidden base; chance {math.log(4):.3f}, {table}: below the table is DNA knowledge beyond counting")
    if f.get("context_free") is not None:
        line = f"floors   context-free floor {f['context_free']:.3f} ({f['k']}-mer frequencies, no context)"
        if f.get("eval_span_k_overlap") is not None:
            line += f" | span-k overlap floor ~{f['eval_span_k_overlap']:.3f} (hidden base read off its neighbours, approx.)"
        print(line)
        if s["eval_span_k_mask_loss"] is not None:
            gap = f["context_free"] - s["eval_span_k_mask_loss"]
            print(f"         eval span-k is {gap:+.3f} nats below the context-free floor"
                  + ("" if gap > 0.05 else ": no context use yet (a run judged before its collapse looks like this)"))
    if s["final"]:
        print(f"model    {s['final']}  (AutoModelForMaskedLM / AutoTokenizer .from_pretrained)")
    else:
        print(f"stopped  at step {s['step']}; run the same command again to resume")
    print(f"metrics  {s['metrics']}")
    print(f"plot     {s['plot']}")


def add_storage_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("object storage (credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
    g.add_argument("--endpoint-url", help="S3-compatible endpoint (default: AWS_ENDPOINT_URL)")
    g.add_argument("--anon", action="store_true", help="anonymous access, for public buckets")


def storage_options_from(args: argparse.Namespace) -> dict | None:
    opts: dict = {}
    if getattr(args, "endpoint_url", None):
        opts["endpoint_url"] = args.endpoint_url
    if getattr(args, "anon", False):
        opts["anon"] = True
    return opts or None


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="prepare genomes for pretraining")
    ds = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = ds.add_parser("prepare", help="FASTA files (local or s3://) -> shards + manifest.json")
    q.add_argument("sources", nargs="+", metavar="SRC", help="FASTA files, directories or globs; local or URLs")
    q.add_argument("--out", required=True, metavar="DST", help="local directory or s3:// prefix")
    q.add_argument("--val-fraction", type=float, default=0.01, help="bases held out for validation (default 0.01)")
    q.add_argument("--seed", type=int, default=0, help="seed of the validation split")
    q.add_argument("--min-length", type=int, default=1, help="drop records shorter than this (bp)")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_storage_options(q)


def _run_data(args: argparse.Namespace) -> None:
    from randommask.data.prepare import prepare

    t0 = time.perf_counter()
    m = prepare(args.sources, args.out, val_fraction=args.val_fraction, seed=args.seed, min_length=args.min_length,
                storage_options=storage_options_from(args), show_progress=not args.no_progress)
    t = m["totals"]
    print(f"prepared {t['records']} records, {t['bases']:,} bp from {t['files']} file(s) in "
          f"{time.perf_counter() - t0:.1f}s: train {t['train_bases']:,} bp, validation {t['validation_bases']:,} bp "
          f"({t['validation_fraction']:.2%}), N {t['n_bases']:,} bp, soft-masked {t['soft_bases']:,} bp"
          + (f", {t['skipped_records']} record(s) under --min-length skipped" if t["skipped_records"] else ""))
    print(f"manifest {args.out.rstrip('/')}/manifest.json")


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a checkpoint on GUE datasets, one Ray Tune trial per (dataset, seed)")
    p.add_argument("--checkpoint", required=True, help="a run's final/, a Ray checkpoint, a run directory, or any "
                   "DNABERT-compatible Hugging Face directory (local or s3://)")
    p.add_argument("--gue-dir", required=True, help="GUE root: <group>/<dataset>/{train,dev,test}.csv (local or s3://)")
    p.add_argument("--tasks", default="all", help="'all' (missing datasets are listed and skipped) or "
                   "comma-separated names or groups, e.g. prom/prom_core_all,tf")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--max-train", type=int, help="subsample training rows (the same rows for every seed)")
    p.add_argument("--max-eval", type=int, help="subsample dev and test rows")
    p.add_argument("--protocol", choices=["published", "fast"], default="published",
                   help="published (default): DNABERT-2's per-dataset scripts, the lowest dev loss every eval_steps "
                   "restored for test; fast: the same values, the best dev metric once per epoch (docs/finetune.md)")
    p.add_argument("--epochs", type=int, help="override the protocol's epochs (makes the protocol custom)")
    p.add_argument("--lr", type=float, help="override the protocol's learning rate, 3e-5 (makes it custom)")
    p.add_argument("--batch-size", type=int, help="override the protocol's batch size, 32 (makes it custom)")
    p.add_argument("--lora", action="store_true", help="LoRA (peft) instead of full fine-tuning")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="a fraction shares a GPU between trials")
    p.add_argument("--baselines", help="CSV dataset,model,metric,value of published results to compare with")
    p.add_argument("--out", required=True)
    add_storage_options(p)


def _run_finetune(args: argparse.Namespace) -> None:
    from randommask.finetune import finetune

    r = finetune(args.checkpoint, args.gue_dir, args.tasks, args.out, seeds=args.seeds, max_train=args.max_train,
                 max_eval=args.max_eval, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                 protocol=args.protocol, lora=args.lora,
                 cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial, baselines=args.baselines,
                 storage_options=storage_options_from(args))
    for row in r["datasets"]:
        score = f"{row['score_mean']:.4f} ± {row['score_std']:.4f}" if "score_mean" in row else "failed"
        rank = f"  rank {row['rank']}/{row['rank_of']}" if "rank" in row else ""
        failed = f"  ({row['seeds_failed']} seed(s) failed)" if row["seeds_failed"] else ""
        print(f"{row['dataset']:<24} {row['metric']:<8} {score}  n={row['seeds_ok']}{rank}{failed}")
    if r["overall"] is not None:
        print(f"overall                  {r['overall']:.4f}")
    print(f"protocol {r['protocol']} ({r['selection']}, {r['precision']})"
          + (f"; published numbers not shown: {r['not_comparable']}" if r["not_comparable"] else ""))
    print(f"results  {args.out.rstrip('/')}/results.md (.csv, .json)")
    if r["failed_trials"]:
        raise UserError(f"{r['failed_trials']} trial(s) failed; see {args.out.rstrip('/')}/results.md")


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="Ray Tune over mask schedules and the pretraining config (resumes)")
    p.add_argument("--config", required=True, help="sweep YAML (see jobs/configs/sweep-tiny.yaml, docs/sweeps.md)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a sweep field")


def _run_sweep(args: argparse.Namespace) -> None:
    from randommask.sweep.driver import sweep

    out = sweep(args.config, args.set)
    for row in out["trials"]:
        params = " ".join(f"{k}={v}" for k, v in row.items() if "." in k)
        loss = f"{row['eval_span_k_mask_loss']:.4f}" if row.get("eval_span_k_mask_loss") is not None else "-"
        probe = f" probe {row['probe_score']:.4f}" if row.get("probe_score") is not None else ""
        print(f"trial {row['trial']:<12} {row['status']:<8} steps {row['steps']:>6} eval span-k [MASK] {loss}{probe}  {params}")
    f = out["floors"] or {}
    if f.get("context_free") is not None:
        print(f"floors   context-free floor {f['context_free']:.3f}, span-k overlap reference "
              f"~{f.get('eval_span_k_overlap') or float('nan'):.3f} (the trials' [MASK]-only losses lie between)")
    if out["best"] is not None:
        print(f"best     {out['best']['trial']} -> {out['best_yaml']}")
    print(f"trials   {out['trials_csv']}")
    print(f"curves   {out['curves']}")
    # A sweep with failed trials, or with no winner, must fail its job (a RayJob would "succeed").
    failed = [row for row in out["trials"] if row["status"] == "error"]
    if failed:
        raise UserError(f"{len(failed)} of {len(out['trials'])} trial(s) failed (trial {failed[0]['trial']}: "
                        f"{failed[0]['error']}); see {out['trials_csv']}")
    if out["best"] is None:
        raise UserError(f"no finished trial has the objective metric; nothing to choose from (see {out['trials_csv']})")


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="the paper's analyses as a report: loss dynamics, k-mer embeddings, "
                       "attention concentration (docs/analysis.md)")
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="a run directory, its final/ or a step_*/, or any "
                   "DNABERT-compatible model directory (local or s3://)")
    p.add_argument("--compare", nargs="+", default=[], metavar="OTHER", help="more runs or checkpoints, side by side")
    p.add_argument("--prepared", help="prepared dataset whose validation windows the attention is measured on "
                   "(default: the first run's data.prepared)")
    p.add_argument("--finetune-results", nargs=2, metavar=("A", "B"), help="two `randommask finetune --out` "
                   "directories (or results.json), e.g. overlapping and non-overlapping k-mers")
    p.add_argument("--windows", type=int, default=256, help="validation windows for attention (default 256)")
    p.add_argument("--window-bp", type=int, help="window length (default: the run's data.window_bp, else 512)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="report directory: report.html, report.json, *.png")
    add_storage_options(p)


def _run_analyze(args: argparse.Namespace) -> None:
    from randommask.evaluation.analysis import analyze

    r = analyze([args.run, *args.compare], args.out, prepared=args.prepared, finetune_results=args.finetune_results,
                windows=args.windows, window_bp=args.window_bp, batch_size=args.batch_size, device=args.device,
                storage_options=storage_options_from(args), show_progress=not args.no_progress)
    for run in r["runs"]:
        loss, emb, att = run.get("loss") or {}, run["embeddings"], run.get("attention")
        line = f"{run['label']:<24}"
        if loss.get("final_eval_span_k_mask_loss") is not None:
            line += f" eval span-k [MASK] {loss['final_eval_span_k_mask_loss']:.3f}"
            if loss.get("floor_context_free") is not None:
                line += f" (context-free floor {loss['floor_context_free']:.3f})"
        if loss.get("final_eval_span_k_base_loss") is not None:
            table = loss.get("best_table_base_loss")
            line += (f"  per base span-k {loss['final_eval_span_k_base_loss']:.3f} span-2k "
                     f"{loss['final_eval_span_2k_base_loss']:.3f}" + (f" (best table {table:.3f})" if table else ""))
        line += f"  emb silhouette {emb['silhouette_central']:+.3f} kNN {emb['knn_central']:.3f}"
        if att:
            line += "  attention entropy by layer " + " ".join(f"{x:.2f}" for x in att["entropy_by_layer"])
        print(line)
    print(f"report   {os.path.join(args.out, 'report.html')} (.json, {', '.join(r['pngs'])})")


def _add_inference_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a run's final/, a run directory, or any DNABERT-compatible directory (local or s3://)")
    p.add_argument("--fasta", required=True, help="the genome: plain, bgzip or gzip FASTA, local or s3:// (indexed "
                   "with pyfaidx; see docs/inference.md)")
    p.add_argument("--out", required=True, help="a folder of Parquet files (local or s3://); a rerun skips what is there")
    p.add_argument("--window-bp", type=int, help="bases the model sees at once (default: all its positions; give the "
                   "pretraining's data.window_bp for a model trained on shorter windows)")
    p.add_argument("--actors", type=int, default=1, help="model copies (Ray Data actors) working at once")
    p.add_argument("--cpus-per-actor", type=float, default=1.0)
    p.add_argument("--gpus-per-actor", type=float, default=0.0, help="on GPU clusters, e.g. 1 (bf16 on CUDA)")
    add_storage_options(p)


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="one embedding per BED region, as Ray Data batch inference, to Parquet")
    _add_inference_common(p)
    p.add_argument("--regions", required=True, help="BED file (0-based, half-open; 4th column: name), local or s3://")
    p.add_argument("--pool", choices=["mean", "cls"], default="mean",
                   help="mean: fp32 mean over the region's k-mer tokens ([CLS]/[SEP] excluded); cls: the [CLS] vector")
    p.add_argument("--layer", type=int, default=-1, help="hidden layer to pool (-1: the last; 0: the embeddings)")
    p.add_argument("--batch-size", type=int, default=64, help="regions per batch")
    p.add_argument("--no-tile", action="store_true", help="refuse regions longer than the model's positions "
                   "instead of embedding them in tiles")


def _run_embed(args: argparse.Namespace) -> None:
    from randommask.inference.embed import embed

    s = embed(args.checkpoint, args.fasta, args.regions, args.out, pool=args.pool, layer=args.layer,
              batch_size=args.batch_size, window_bp=args.window_bp, tile=not args.no_tile, actors=args.actors,
              cpus_per_actor=args.cpus_per_actor, gpus_per_actor=args.gpus_per_actor,
              storage_options=storage_options_from(args))
    rate = f", {s['embedded'] / s['seconds']:.1f} regions/s" if s["seconds"] else ""
    print(f"embedded {s['embedded']} region(s) ({s['tiles']} tile(s)), {s['skipped']} already there; "
          f"{s['dim']}-dim {s['pool']} of layer {s['layer']}; {s['seconds']:.1f} s{rate}")
    print(f"out      {s['out']} (Parquet: chrom, start, end, name, embedding)")


def _add_score_variants(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score-variants", help="zero-shot masked-LM scores (log-likelihood ratio) of the SNVs of a VCF")
    _add_inference_common(p)
    p.add_argument("--vcf", required=True, help="VCF (plain or gzip), local or s3://; multi-allelic ALTs are split, "
                   "indels and symbolic alleles skipped")
    p.add_argument("--batch-size", type=int, default=64, help="variants per batch")
    p.add_argument("--strands", choices=("both", "forward"), default="both",
                   help="average the forward and reverse-complement scores (default), or the forward strand alone")


def _run_score_variants(args: argparse.Namespace) -> None:
    from randommask.inference.variants import score_variants

    s = score_variants(args.checkpoint, args.fasta, args.vcf, args.out, window_bp=args.window_bp,
                       strands=args.strands, batch_size=args.batch_size, actors=args.actors, cpus_per_actor=args.cpus_per_actor,
                       gpus_per_actor=args.gpus_per_actor, storage_options=storage_options_from(args))
    print(f"scored   {s['scored']} SNV(s), {s['errors']} reported with an error (REF mismatch, N, contig), "
          f"{s['skipped_indels']} indel(s) and {s['skipped_symbolic']} symbolic allele(s) skipped; "
          f"windows of {s['window_bp']} bp, {s['strands']} strand(s); {s['seconds']:.1f} s")
    print(f"out      {s['out']} (Parquet: chrom, pos, id, ref, alt, llr, p_ref, p_alt, entropy, error)")


def _add_zeroshot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("zeroshot", help="mean log P(ref base) at held-out positions, beside count tables of the "
                       "flanking bases and chance")
    p.add_argument("checkpoint", help="a run's final/, a checkpoint step_*/, a run directory, or any "
                   "DNABERT-compatible directory (local or s3://)")
    p.add_argument("--prepared", required=True, help="prepared data (randommask data prepare): positions come from "
                   "its validation split, the tables from its training split")
    p.add_argument("--positions", type=int, default=5000, help="held-out positions (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the positions drawn")
    p.add_argument("--out", required=True, help="the JSON file to write (local or s3://)")
    p.add_argument("--window-bp", type=int, help="bases the model sees (default: its run's data.window_bp, else all "
                   "its positions; made odd, centred on the base)")
    p.add_argument("--strands", choices=("both", "forward"), default="both")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    add_storage_options(p)


def _run_zeroshot(args: argparse.Namespace) -> None:
    from randommask.inference.zeroshot import standing, zeroshot

    r = zeroshot(args.checkpoint, args.prepared, args.out, positions=args.positions, seed=args.seed,
                 window_bp=args.window_bp, strands=args.strands, threads=args.threads,
                 storage_options=storage_options_from(args))
    print(f"zeroshot {standing(r)}")
    print(f"out      {args.out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="randommask", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(sub)
    _add_data(sub)
    _add_pretrain(sub)
    _add_finetune(sub)
    _add_sweep(sub)
    _add_analyze(sub)
    _add_embed(sub)
    _add_score_variants(sub)
    _add_zeroshot(sub)
    _add_bench(sub)
    return parser


COMMANDS = {"demo": _run_demo, "data": _run_data, "pretrain": _run_pretrain, "finetune": _run_finetune, "sweep": _run_sweep,
            "embed": _run_embed, "score-variants": _run_score_variants, "zeroshot": _run_zeroshot,
            "analyze": _run_analyze, "bench": _run_bench}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except UserError as e:
        print(f"randommask: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the training's own failure, already one line
        if type(e).__name__ != "TrainingFailed":
            raise
        print(f"randommask: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("randommask: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
