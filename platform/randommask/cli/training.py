"""Commands that prepare data, pretrain, fine-tune, sweep and analyze."""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import Callable

from randommask.cli.options import add_allow_untrained, add_storage_options, storage_options_from
from randommask.errors import UserError


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="prepare a genome and run a local RandomMask pretraining (make demo)")
    p.add_argument("--genome", help="FASTA file or URL (default: the 300-kb E. coli slice shipped with the package; "
                   "make demo passes the whole genome from ../shared)")
    p.add_argument("--config", help="default: the package's demo-cpu.yaml (jobs/configs/demo-cpu.yaml in the checkout)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")


def run_demo(args: argparse.Namespace) -> None:
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


def add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="RandomMask pretraining on Ray Train (resumes a run of the same name)")
    p.add_argument("--config", required=True, help="YAML config (see jobs/configs/ and docs/pretraining.md)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, value in YAML: --set optim.lr=3e-4 --set masking.phase_ends=[10,20]")


def run_pretrain(args: argparse.Namespace) -> None:
    from randommask.training.config import load_config

    _pretrain_and_report(load_config(args.config, args.set))


def _pretrain_and_report(cfg) -> None:
    from randommask.data.floors import best_counting
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
        lines = {name: best_counting(f, name) for name in ("span_k", "span_2k")}
        table = " | ".join(f"{name.replace('_', '-')} {b[1]:.3f}" for name, b in lines.items() if b) or "none"
        print(f"per base eval span-k {s['eval_span_k_base_loss']:.3f} | span-2k {s['eval_span_2k_base_loss']:.3f} nats "
              f"per hidden base; chance {math.log(4):.3f}; best counting in each set's geometry {table}: "
              "below it is DNA knowledge beyond counting")
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
    t = s.get("tracking")
    if t:
        missing = f"; {t['missing']} update(s) never reached it (the run directory has them)" if t["missing"] else ""
        print(f"tracking MLflow run {t['run_id']} at {t['uri']}{missing}")


def add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="prepare genomes for pretraining")
    ds = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = ds.add_parser("prepare", help="FASTA files or sequence tables (local or s3://) -> shards + manifest.json")
    q.add_argument("sources", nargs="+", metavar="SRC", help="FASTA files, tables (.csv/.tsv with a 'sequence' "
                   "column, optionally .gz), directories or globs; local or URLs")
    q.add_argument("--out", required=True, metavar="DST", help="local directory or s3:// prefix")
    q.add_argument("--val-fraction", type=float, default=0.01, help="bases held out for validation (default 0.01)")
    q.add_argument("--seed", type=int, default=0, help="seed of the validation split")
    q.add_argument("--min-length", type=int, default=1, help="drop records shorter than this (bp)")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    c = q.add_argument_group("corpora of short records (docs/data.md: tables, packing, decontamination)")
    c.add_argument("--exclude", nargs="+", default=[], metavar="PATH", help="drop every record sharing a k-mer "
                   "(either strand) with these: FASTA, tables, globs, or a GUE root (its dev and test tables); "
                   "default: none")
    c.add_argument("--exclude-kmer", type=int, default=31, metavar="K", help="k of --exclude (default 31)")
    c.add_argument("--join-n", type=int, default=6, metavar="N", help="N bases between packed records: at least "
                   "the tokenizer's k (default 6)")
    c.add_argument("--pack", action="store_true", help="pack FASTA records into contigs too, deduplicated "
                   "(tables and --exclude always pack; default: FASTA records stay whole records)")
    q.add_argument("--resources", metavar="JSON", help="Ray resources each task also asks for, e.g. "
                   "'{\"randommask_cpu_node\": 1}' to run only on nodes that offer it (the KubeRay cpu group)")
    add_storage_options(q)


def run_data(args: argparse.Namespace) -> None:
    from randommask.data.corpus import CorpusOptions
    from randommask.data.prepare import parse_resources, prepare

    t0 = time.perf_counter()
    corpus = CorpusOptions(exclude=tuple(args.exclude), exclude_kmer=args.exclude_kmer, join_n=args.join_n,
                           pack=args.pack)
    m = prepare(args.sources, args.out, val_fraction=args.val_fraction, seed=args.seed, min_length=args.min_length,
                storage_options=storage_options_from(args), show_progress=not args.no_progress,
                resources=parse_resources(args.resources), corpus=corpus)
    t = m["totals"]
    if "packing" in m:
        x = m["exclude"]
        print(f"corpus   {t['records_read']:,} records read, {t['duplicates']:,} duplicates, {t['dropped_overlap']:,} "
              f"dropped for a {x['kmer']}-mer shared with {len(x['files'])} excluded file(s), {t['records_kept']:,} "
              f"kept ({t['bases_kept']:,} bp) in {t['records']} contigs joined by {m['packing']['join_n']} N; "
              f"validation {m['packing']['validation_records']:,} whole records")
    print(f"prepared {t['records']} records, {t['bases']:,} bp from {t['files']} file(s) in "
          f"{time.perf_counter() - t0:.1f}s: train {t['train_bases']:,} bp, validation {t['validation_bases']:,} bp "
          f"({t['validation_fraction']:.2%}), N {t['n_bases']:,} bp, soft-masked {t['soft_bases']:,} bp"
          + (f", {t['skipped_records']} record(s) under --min-length skipped" if t["skipped_records"] else ""))
    print(f"manifest {args.out.rstrip('/')}/manifest.json")


def add_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a checkpoint on GUE datasets, one Ray Tune trial per (dataset, seed)")
    p.add_argument("--checkpoint", required=True, help="a run's final/, a Ray checkpoint, a run directory, or any "
                   "DNABERT-compatible Hugging Face directory (local or s3://)")
    p.add_argument("--gue-dir", required=True, help="GUE root: <group>/<dataset>/{train,dev,test}.csv (local or s3://)")
    p.add_argument("--tasks", default="all", help="'all' (missing datasets are listed and skipped) or "
                   "comma-separated names or groups, e.g. prom/prom_core_all,tf")
    p.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds per dataset (and per rate in an --lr search; default: 3)")
    p.add_argument("--max-train", type=int, help="subsample training rows (the same rows for every seed)")
    p.add_argument("--max-eval", type=int, help="subsample dev and test rows")
    p.add_argument("--protocol", choices=["published", "fast"], default="published",
                   help="published (default): DNABERT-2's per-dataset scripts, the lowest dev loss every eval_steps "
                   "restored for test; fast: the same values, the best dev metric once per epoch (docs/finetune.md)")
    p.add_argument("--epochs", type=int, help="override the protocol's epochs (makes the protocol custom)")
    p.add_argument("--lr", help="one rate overrides the protocol's learning rate, 3e-5 (makes it custom); a "
                   "comma-separated list, e.g. 1e-4,3e-4,1e-3, is searched: one trial per (dataset, rate, seed), each "
                   "dataset's rate chosen by its mean dev score by the protocol's criterion, test reported for that "
                   "rate only (default: the protocol's rate, no search; docs/finetune.md)")
    p.add_argument("--search-seeds", type=int, help="in an --lr search, compare the rates on the first N seeds only, "
                   "then run the other seeds at each dataset's chosen rate (default: every seed runs every rate)")
    p.add_argument("--batch-size", type=int, help="override the protocol's batch size, 32 (makes it custom)")
    p.add_argument("--lora", action="store_true", help="LoRA (peft) instead of full fine-tuning")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="a fraction shares a GPU between trials")
    p.add_argument("--baselines", help="CSV dataset,model,metric,value of published results to compare with")
    p.add_argument("--save-models", action="store_true", help="keep each trial's selected model (LoRA merged) with "
                   "a model card under OUT/models/<dataset>__seed<k>/, a Hugging Face directory")
    p.add_argument("--mlflow-uri", help="log a parent run and one run per (dataset, seed) trial to this MLflow "
                   "tracking server (default: MLFLOW_TRACKING_URI; none: off, even where that is set)")
    p.add_argument("--out", required=True)
    add_allow_untrained(p)
    add_storage_options(p)


def run_finetune(args: argparse.Namespace) -> None:
    from randommask.finetune import finetune
    from randommask.finetune.search import parse_rates

    lr = parse_rates(args.lr) if args.lr is not None else None
    r = finetune(args.checkpoint, args.gue_dir, args.tasks, args.out, seeds=args.seeds, max_train=args.max_train,
                 max_eval=args.max_eval, epochs=args.epochs, lr=lr, batch_size=args.batch_size,
                 protocol=args.protocol, lora=args.lora,
                 cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial, baselines=args.baselines,
                 storage_options=storage_options_from(args), mlflow_uri=args.mlflow_uri, save_models=args.save_models,
                 allow_untrained_positions=args.allow_untrained_positions, search_seeds=args.search_seeds)
    for row in r["datasets"]:
        score = f"{row['score_mean']:.4f} ± {row['score_std']:.4f}" if "score_mean" in row else "failed"
        rank = f"  rank {row['rank']}/{row['rank_of']}" if "rank" in row else ""
        failed = f"  ({row['seeds_failed']} seed(s) failed)" if row["seeds_failed"] else ""
        chosen = row.get("lr_search", {}).get("selected")
        rate = f"  lr {chosen:g} (chosen on dev)" if chosen is not None else ""
        print(f"{row['dataset']:<24} {row['metric']:<8} {score}  n={row['seeds_ok']}{rank}{rate}{failed}")
    if r["overall"] is not None:
        print(f"overall                  {r['overall']:.4f}")
    print(f"protocol {r['protocol']} ({r['selection']}, {r['precision']})"
          + (f"; published numbers not shown: {r['not_comparable']}" if r["not_comparable"] else ""))
    print(f"results  {args.out.rstrip('/')}/results.md (.csv, .json)")
    if args.save_models:
        print(f"models   {args.out.rstrip('/')}/models/<dataset>__seed<k>/ (each with its model card, README.md)")
    if r["failed_trials"]:
        raise UserError(f"{r['failed_trials']} trial(s) failed; see {args.out.rstrip('/')}/results.md")


def add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="Ray Tune over mask schedules and the pretraining config (resumes)")
    p.add_argument("--config", required=True, help="sweep YAML (see jobs/configs/sweep-tiny.yaml, docs/sweeps.md)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a sweep field")
    p.add_argument("--mlflow-uri", help="log the sweep and each trial to this MLflow tracking server "
                   "(default: MLFLOW_TRACKING_URI; none: off, even where that is set)")


def run_sweep(args: argparse.Namespace) -> None:
    from randommask.sweep.driver import sweep

    out = sweep(args.config, args.set, mlflow_uri=args.mlflow_uri)
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


def add_analyze(sub: argparse._SubParsersAction) -> None:
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


def run_analyze(args: argparse.Namespace) -> None:
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
            lines = (loss.get("best_counting_span_k"), loss.get("best_counting_span_2k"))
            line += (f"  per base span-k {loss['final_eval_span_k_base_loss']:.3f} span-2k "
                     f"{loss['final_eval_span_2k_base_loss']:.3f}"
                     + (f" (best counting {lines[0]:.3f} / {lines[1]:.3f})" if None not in lines else ""))
        line += f"  emb silhouette {emb['silhouette_central']:+.3f} kNN {emb['knn_central']:.3f}"
        if att:
            line += "  attention entropy by layer " + " ".join(f"{x:.2f}" for x in att["entropy_by_layer"])
        print(line)
    print(f"report   {os.path.join(args.out, 'report.html')} (.json, {', '.join(r['pngs'])})")


def add_probe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="linear probes on frozen embeddings for GUE datasets, beside a bag of k-mers "
                       "(docs/finetune.md)")
    p.add_argument("checkpoint", help="a run's final/, a checkpoint step_*/, or any DNABERT-compatible directory "
                   "(local or s3://)")
    p.add_argument("--gue-dir", required=True, help="GUE root: <group>/<dataset>/{train,dev,test}.csv (local or s3://)")
    p.add_argument("--tasks", default="all", help="'all' or comma-separated names or groups (as finetune)")
    p.add_argument("--max-train", type=int, help="subsample training rows (default: all)")
    p.add_argument("--max-eval", type=int, help="subsample test rows (default: all)")
    p.add_argument("--window-bp", type=int, help="read sequences as windows of this many bases, k-mers shared by "
                   "none (default: its pretraining window, recorded in its config.json, else its run's "
                   "data.window_bp; 0 or neither known: whole sequences)")
    add_allow_untrained(p)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--out", required=True, help="the JSON file to write (local or s3://)")
    add_storage_options(p)


def run_probe(args: argparse.Namespace) -> None:
    from randommask.evaluation.probe import probe

    r = probe(args.checkpoint, args.gue_dir, args.tasks, args.out, max_train=args.max_train, max_eval=args.max_eval,
              window_bp=args.window_bp, threads=args.threads, allow_untrained_positions=args.allow_untrained_positions,
              storage_options=storage_options_from(args))
    print(f"mean     model {r['mean']['model']:.4f}, bag of {r['k']}-mers {r['mean']['kmer_bag']:.4f}, chance 0 "
          f"({len(r['results'])} dataset(s), {len(r['skipped'])} skipped; " + (f"windows of {r['window_bp']} bp)" if r["window_bp"] else "whole sequences)"))
    print(f"out      {args.out}")


def register(sub: argparse._SubParsersAction) -> dict[str, Callable[[argparse.Namespace], None]]:
    add_demo(sub)
    add_data(sub)
    add_pretrain(sub)
    add_finetune(sub)
    add_sweep(sub)
    add_analyze(sub)
    add_probe(sub)
    return {"demo": run_demo, "data": run_data, "pretrain": run_pretrain, "finetune": run_finetune,
            "sweep": run_sweep, "analyze": run_analyze, "probe": run_probe}
