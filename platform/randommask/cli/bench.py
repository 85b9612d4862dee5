"""``randommask bench``: each benchmark against its baseline, measured in the same run (one JSON line)."""

from __future__ import annotations

import argparse
from typing import Callable


def add_bench(sub: argparse._SubParsersAction) -> None:
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
    sv = bs.add_parser("score-variants", help="randommask score-variants (Ray Data) vs a GPN-style loop, one forward "
                       "pass per variant")
    sv.add_argument("--preset", default="tiny")
    sv.add_argument("--variants", type=int, default=10000)
    sv.add_argument("--window-bp", type=int, default=511, help="bases around each variant (odd: centred)")
    sv.add_argument("--batch", type=int, default=64)
    ex = bs.add_parser("exclude", help="drop corpus records sharing a 31-mer with excluded sequences vs Python sets "
                       "of k-mer strings")
    ex.add_argument("--corpus-mbp", type=float, default=100.0, help="corpus size, Mbp (default 100)")
    ex.add_argument("--record-bp", type=int, default=100, help="bases per corpus record, cut from --genome (default 100)")
    ex.add_argument("--exclude", nargs="+", metavar="PATH", help="excluded sequences, as data prepare --exclude takes "
                    "them (default: 17,600 random 100-bp sequences, as many as GUE's dev and test sets)")
    ex.add_argument("--kmer", type=int, default=31, help="k of the shared k-mers (default 31)")
    ex.add_argument("--baseline-mbp", type=float, default=10.0, help="corpus Mbp the baseline runs on (default 10)")
    ex.add_argument("--genome", help="FASTA file the records are cut from (default: the 300-kb E. coli slice)")
    ex.add_argument("--seed", type=int, default=0, help="seed of the record cuts (default 0)")
    for q in (t, m, s, pl, to, e2e, em, sv):
        q.add_argument("--genome", help="FASTA file (default: the 300-kb E. coli slice shipped with the package; "
                       "make bench passes the whole genome)")
        q.add_argument("--k", type=int, default=6)
        q.add_argument("--seed", type=int, default=0)


def run_bench(args: argparse.Namespace) -> None:
    from randommask.tools.bench import BENCHES, print_result

    options = {k: v for k, v in vars(args).items() if k not in ("command", "bench")}
    print_result(BENCHES[args.bench](**options))


def register(sub: argparse._SubParsersAction) -> dict[str, Callable[[argparse.Namespace], None]]:
    add_bench(sub)
    return {"bench": run_bench}
