"""Benchmarks: our hot paths against the DNABERT-style baseline, measured in the same process.

Each prints one JSON line: our figure, the baseline's, and the ratio. They are measurements, not
tests; run them on an idle machine. ``kernels``: one process; ``cluster``: through Ray (training);
``inference``: batch inference through Ray Data.
"""

from __future__ import annotations

import json

from randommask.tools.bench.cluster import bench_e2e, bench_pipeline, bench_train_overhead
from randommask.tools.bench.corpus import bench_exclude
from randommask.tools.bench.inference import bench_embed, bench_score_variants
from randommask.tools.bench.kernels import bench_mask, bench_mlm_step, bench_tokenize

# `randommask bench NAME` runs BENCHES[NAME] with the command's options as keyword arguments.
BENCHES = {"tokenize": bench_tokenize, "mask": bench_mask, "mlm-step": bench_mlm_step, "pipeline": bench_pipeline,
           "train-overhead": bench_train_overhead, "e2e": bench_e2e, "embed": bench_embed,
           "score-variants": bench_score_variants, "exclude": bench_exclude}


def print_result(result: dict) -> None:
    print(json.dumps(result), flush=True)
