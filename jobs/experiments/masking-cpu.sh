#!/usr/bin/env bash
# The first honest experiment (docs/experiments.md): bert vs DNABERT span vs RandomMask masking at
# equal compute on CPU. Three `small` pretrainings on E. coli (same model, steps, batch, data, seed),
# then each fine-tuned on prom/prom_core_all and tf/0 (subsampled) with 3 seeds.
# Usage: jobs/experiments/masking-cpu.sh [OUT]   (about 30 minutes on 2 CPUs)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-outputs/experiments/masking-cpu}
RM=${RANDOMMASK:-.venv/bin/randommask}
GENOME=${GENOME:-../shared/data/genomes/ecoli_536.fna.gz}
GUE=${GUE:-../shared/data/gue}

$RM data prepare "$GENOME" --out "$OUT/prepared" --no-progress
common=(--config jobs/configs/pretrain-small.yaml --set "data.prepared=$OUT/prepared" --set "run.storage_path=$OUT/runs")
$RM pretrain "${common[@]}" --set run.name=randommask
$RM pretrain "${common[@]}" --set run.name=span --set masking.strategy=span \
    --set masking.phase_ends=null --set masking.sampling=null
$RM pretrain "${common[@]}" --set run.name=bert --set masking.strategy=bert \
    --set masking.phase_ends=null --set masking.sampling=null

if [ "${PRETRAIN_ONLY:-0}" = 1 ]; then exit 0; fi
for run in randommask span bert; do
  $RM finetune --checkpoint "$OUT/runs/$run/final" --gue-dir "$GUE" --tasks prom/prom_core_all,tf/0 \
      --seeds 3 --max-train 2000 --max-eval 1000 --epochs 3 --lr 1e-4 --out "$OUT/finetune/$run" \
      --baselines ../shared/data/gue-published-baselines.csv
done
