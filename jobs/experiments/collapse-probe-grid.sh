#!/bin/bash
# The collapse-probe grid of docs/experiments.md section 3, run concurrently on one GPU (each probe is
# a small model; 16 share an H200). Each line of the grid file is "name args...". Writes $OUT/all.txt.
# Usage: OUT=dir GENOME=ecoli_536.fna.gz bash jobs/experiments/collapse-probe-grid.sh jobs/experiments/collapse-probe-grid2.txt
set -u
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
while read -r name args; do
  [ -z "$name" ] && continue
  python3 jobs/experiments/collapse-probe.py --device cuda --threads 1 --genome "$GENOME" --out "$OUT/$name.jsonl" $args > "$OUT/$name.log" 2>&1 &
done < "$1"
wait
for f in "$OUT"/*.jsonl; do sed "s|^|$(basename "$f" .jsonl) |" "$f"; done > "$OUT/all.txt"
