"""The ``randommask`` command line."""

from __future__ import annotations

import argparse
import sys
import time
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
    for q in (t, m, s, pl):
        q.add_argument("--genome", help="FASTA file (default: ../shared/data/genomes/ecoli_536.fna.gz)")
        q.add_argument("--k", type=int, default=6)
        q.add_argument("--seed", type=int, default=0)


def _run_bench(args: argparse.Namespace) -> None:
    from randommask import bench

    common = dict(genome=args.genome, k=args.k, seed=args.seed)
    if args.bench == "tokenize":
        result = bench.bench_tokenize(windows=args.windows, window_bp=args.window_bp, **common)
    elif args.bench == "mask":
        result = bench.bench_mask(batch=args.batch, seq_len=args.seq_len, step=args.step, **common)
    elif args.bench == "pipeline":
        result = bench.bench_pipeline(epochs=args.epochs, batch=args.batch, window_bp=args.window_bp, **common)
    else:
        result = bench.bench_mlm_step(preset=args.preset, batch=args.batch, seq_len=args.seq_len, steps=args.steps,
                                      device=args.device, compile=args.compile, **common)
    bench.print_result(result)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="tokenize, mask and train a few steps on a real genome")
    p.add_argument("--genome", help="FASTA file (default: ../shared/data/genomes/ecoli_536.fna.gz)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)


def _run_demo(args: argparse.Namespace) -> None:
    import torch

    from randommask.bench import resolve_genome
    from randommask.genome import cut_windows, genome_codes
    from randommask.masking import make_masker
    from randommask.model import build_mlm, mlm_forward
    from randommask.tokenizer import KmerTokenizer

    torch.manual_seed(args.seed)
    path = resolve_genome(args.genome)
    t0 = time.perf_counter()
    codes = genome_codes(path)
    tok = KmerTokenizer(6)
    window_bp = 512 - 2 + tok.k - 1  # 512 tokens with [CLS] and [SEP]
    print(f"genome   {path.name}: {len(codes):,} bp read in {time.perf_counter() - t0:.2f}s")
    # A schedule short enough to cross every phase within the demo.
    phase_ends = [max(1, args.steps // 5) * i for i in range(1, 6)]
    masker = make_masker("randommask", tok.k, phase_ends=phase_ends)
    model = build_mlm("small", tok.k)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    print(f"model    small BERT, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
          f"vocab {tok.vocab_size} ({tok.k}-mers)")
    print(f"masking  RandomMask, phase ends {phase_ends}")
    gen = torch.Generator().manual_seed(args.seed)
    for step in range(args.steps):
        windows = cut_windows(codes, window_bp, args.batch, seed=args.seed * 100003 + step)
        ids = torch.from_numpy(tok.encode_windows(windows)).long()
        inputs, labels = masker(ids, step, gen)
        t = time.perf_counter()
        loss, correct, n = mlm_forward(model, inputs, labels, torch.ones_like(ids))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        lo, hi = masker.span_bounds(step)
        print(f"step {step + 1:3d}/{args.steps}  loss {loss.item():.3f}  acc {float(correct) / max(1, float(n)):.3f}  "
              f"span {lo}-{hi}  masked {float(n) / ids.numel():.1%}  "
              f"{ids.numel() / (time.perf_counter() - t):,.0f} tok/s", flush=True)
    print(f"done     {args.steps} steps of {args.batch}x{ids.shape[1]} tokens in {time.perf_counter() - t0:.1f}s")


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
    from randommask.prepare import prepare

    t0 = time.perf_counter()
    m = prepare(args.sources, args.out, val_fraction=args.val_fraction, seed=args.seed, min_length=args.min_length,
                storage_options=storage_options_from(args), show_progress=not args.no_progress)
    t = m["totals"]
    print(f"prepared {t['records']} records, {t['bases']:,} bp from {t['files']} file(s) in "
          f"{time.perf_counter() - t0:.1f}s: train {t['train_bases']:,} bp, validation {t['validation_bases']:,} bp "
          f"({t['validation_fraction']:.2%}), N {t['n_bases']:,} bp, soft-masked {t['soft_bases']:,} bp"
          + (f", {t['skipped_records']} record(s) under --min-length skipped" if t["skipped_records"] else ""))
    print(f"manifest {args.out.rstrip('/')}/manifest.json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="randommask", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(sub)
    _add_data(sub)
    _add_bench(sub)
    return parser


COMMANDS = {"demo": _run_demo, "data": _run_data, "bench": _run_bench}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except UserError as e:
        print(f"randommask: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("randommask: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
