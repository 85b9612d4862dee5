"""Files shipped inside the package (package data), so defaults work from any install, editable or not."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "assets"
# A 300-kb slice of E. coli 536: the GPU check's data, and the default genome of the benchmarks and of
# `randommask demo` run without --genome (make demo and make bench pass the whole genome).
GENOME_SLICE = ASSETS / "ecoli_536_300kb.fa.gz"
DEMO_CONFIG = ASSETS / "demo-cpu.yaml"  # jobs/configs/demo-cpu.yaml links here
