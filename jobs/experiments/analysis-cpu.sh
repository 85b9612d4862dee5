#!/usr/bin/env bash
# The paper's analyses on CPU (docs/experiments.md, "The paper's analyses on CPU runs"):
# RandomMask and DNABERT's span masking on a 4-layer tiny model, otherwise identical (data, seed,
# initial weights, 3,000 steps of 32 windows), then `randommask analyze` on both. Then the paper's
# first observation: a non-overlapping 6-mer model (stride 6, BERT masking) on the same windows,
# both fine-tuned on two GUE datasets, compared with --finetune-results.
# Usage: jobs/experiments/analysis-cpu.sh [OUT]   (about 45 minutes on 2 CPUs)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-outputs/experiments/analysis-cpu}
RM=${RANDOMMASK:-.venv/bin/randommask}
GENOME=${GENOME:-../shared/data/genomes/ecoli_536.fna.gz}
STEPS=${STEPS:-3000}

$RM data prepare "$GENOME" --out "$OUT/prepared" --no-progress
P=$((STEPS / 5))
common=(--config jobs/configs/pretrain-tiny.yaml --set "data.prepared=$OUT/prepared" --set "run.storage_path=$OUT/runs"
        --set "optim.max_steps=$STEPS" --set "optim.warmup_steps=100" --set "run.eval_every=$P"
        --set "run.checkpoint_every=$STEPS" --set "run.log_every=20" --set "run.eval_windows=256"
        --set "model.overrides={num_hidden_layers: 4, num_attention_heads: 4}")
$RM pretrain "${common[@]}" --set run.name=randommask --set "masking.phase_ends=[$P,$((2*P)),$((3*P)),$((4*P)),$STEPS]"
$RM pretrain "${common[@]}" --set run.name=span --set masking.strategy=span \
    --set masking.phase_ends=null --set masking.sampling=null
$RM analyze "$OUT/runs/randommask" --compare "$OUT/runs/span" --windows 256 --no-progress --out "$OUT/report"

$RM pretrain "${common[@]}" --set run.name=nonoverlap --set data.stride=6 --set masking.strategy=bert \
    --set masking.phase_ends=null --set masking.sampling=null
for run in span nonoverlap; do
  $RM finetune --checkpoint "$OUT/runs/$run/final" --gue-dir "${GUE:-../shared/data/gue}" \
      --tasks prom/prom_core_all,tf/0 --seeds 3 --max-train 2000 --max-eval 1000 --epochs 3 --lr 1e-4 \
      --out "$OUT/finetune/$run"
done
$RM analyze "$OUT/runs/span" --compare "$OUT/runs/nonoverlap" --windows 256 --no-progress \
    --finetune-results "$OUT/finetune/span" "$OUT/finetune/nonoverlap" --out "$OUT/report-kmers"
