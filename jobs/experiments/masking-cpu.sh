#!/usr/bin/env bash
# The first honest experiment (docs/experiments.md): bert vs DNABERT span vs RandomMask masking at
# equal compute on CPU. Three `small` pretrainings on E. coli (same model, steps, batch, data, seed),
# then each fine-tuned on prom/prom_core_all and tf/0 (subsampled) with 3 seeds, beside a control
# with the same initialisation and no pretraining.
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

# Control: the same initialisation (seed 0) with no pretraining at all.
PY=${PYTHON:-.venv/bin/python}
$PY -c "
import sys, torch
from randommask import KmerTokenizer
from randommask.training.model import build_mlm
torch.manual_seed(0)
build_mlm('small').save_pretrained(sys.argv[1]); KmerTokenizer(6).save_pretrained(sys.argv[1])
" "$OUT/runs/no-pretraining/final"

if [ "${PRETRAIN_ONLY:-0}" = 1 ]; then exit 0; fi
for run in randommask span bert no-pretraining; do
  $RM finetune --checkpoint "$OUT/runs/$run/final" --gue-dir "$GUE" --tasks prom/prom_core_all,tf/0 \
      --seeds 3 --max-train 2000 --max-eval 1000 --protocol fast --epochs 3 --lr 1e-4 --out "$OUT/finetune/$run" \
      --baselines ../shared/data/gue-published-baselines.csv
done
