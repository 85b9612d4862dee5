#!/usr/bin/env bash
# The masking comparison where it means something (docs/experiments.md section 3): in the collapse
# regime of jobs/configs/collapse-cpu.yaml (k=6, where DNABERT's span masking collapses on 2 CPUs),
# at equal compute, `span` (DNABERT), `randommask` (first widening after span has collapsed) and
# `bert`, each with 3 pretraining seeds, plus no-pretraining controls with the same initial weights;
# `randommask analyze` on the seed-0 finals; fine-tuning of every model on the six GUE datasets in
# ../shared/data/gue (2,000 training rows, 2 fine-tuning seeds).
#
# Hours on 2 CPUs (about 30 minutes per pretraining), so it runs in pieces: rerun it and it resumes
# where it stopped (a pretraining from its last checkpoint, fine-tuning skipping finished trials),
# and after each piece it copies the small results (metrics, floors, fine-tuning tables) into
# docs/experiments/collapse-cpu/ to be committed, with summary.md (jobs/experiments/collapse_cpu_summary.py).
# Usage: jobs/experiments/collapse-cpu.sh [OUT]      SEEDS="0 1 2" ARMS="span randommask bert" to narrow
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-outputs/experiments/collapse-cpu}
RM=${RANDOMMASK:-.venv/bin/randommask}
PY=${PYTHON:-.venv/bin/python}
GENOME=${GENOME:-../shared/data/genomes/ecoli_536.fna.gz}
GUE=${GUE:-../shared/data/gue}
SEEDS=${SEEDS:-0 1 2}
ARMS=${ARMS:-span randommask bert}
TASKS=prom/prom_core_all,prom/prom_core_tata,tf/0,tf/2,mouse/0,mouse/2
KEEP=docs/experiments/collapse-cpu

[ -f "$OUT/prepared/manifest.json" ] || $RM data prepare "$GENOME" --out "$OUT/prepared" --no-progress
common=(--config jobs/configs/collapse-cpu.yaml --set "data.prepared=$OUT/prepared" --set "run.storage_path=$OUT/runs"
        --set observability.progress=false)

arm_settings() {  # the masking of each arm; everything else is collapse-cpu.yaml
  case "$1" in
    span) ;;
    # Boundary 6 until step 2000 (span-6 has collapsed by then), then 8, 10, 12, 14 tokens.
    randommask) echo "--set masking.strategy=randommask --set masking.phase_ends=[2000,2750,3500,4250,5000]" ;;
    bert) echo "--set masking.strategy=bert" ;;
  esac
}

collect() {  # the small, durable results: what docs/experiments.md reads
  mkdir -p "$KEEP"
  for run in "$OUT"/runs/*/; do
    name=$(basename "$run")
    [ -f "$run/metrics.jsonl" ] && cp "$run/metrics.jsonl" "$KEEP/$name.metrics.jsonl"
    [ -f "$run/floors.json" ] && cp "$run/floors.json" "$KEEP/floors.json"
  done
  for ft in "$OUT"/finetune/*/; do
    [ -f "$ft/results.json" ] && cp "$ft/results.json" "$KEEP/$(basename "$ft").finetune.json"
  done
  for report in "$OUT"/analysis-*/report.json; do
    [ -f "$report" ] || continue
    name=$(basename "$(dirname "$report")")
    cp "$report" "$KEEP/$name.report.json"
    cp "$(dirname "$report")/loss_dynamics.png" "$KEEP/$name.loss_dynamics.png"
  done
  # The tables of experiments.md 3.4. Written aside and renamed, so a failure leaves the last
  # summary whole; it warns rather than stopping hours of runs over a table.
  if $PY jobs/experiments/collapse_cpu_summary.py "$KEEP" > "$KEEP/summary.md.tmp"; then
    mv "$KEEP/summary.md.tmp" "$KEEP/summary.md"
  else
    rm -f "$KEEP/summary.md.tmp"; echo "collapse-cpu: summary.md not updated (see the error above)" >&2
  fi
}

control() {  # the same initial weights as the pretraining of seed $1, and no pretraining
  local dir="$OUT/runs/no-pretraining-s$1/final"
  [ -f "$dir/config.json" ] && return
  $PY jobs/experiments/control_init.py jobs/configs/collapse-cpu.yaml "$1" "$dir"
}

finetune() {
  [ "${PRETRAIN_ONLY:-0}" = 1 ] && return
  $RM finetune --checkpoint "$OUT/runs/$1/final" --gue-dir "$GUE" --tasks "$TASKS" --seeds 2 \
      --max-train 2000 --max-eval 1000 --protocol fast --epochs 3 --lr 1e-4 --out "$OUT/finetune/$1" \
      --baselines ../shared/data/gue-published-baselines.csv
  collect
}

for seed in $SEEDS; do
  for arm in $ARMS; do
    run="$arm-s$seed"
    if [ ! -f "$OUT/runs/$run/final/config.json" ]; then
      # shellcheck disable=SC2046
      $RM pretrain "${common[@]}" --set "run.name=$run" --set "run.seed=$seed" $(arm_settings "$arm")
      collect
    fi
    finetune "$run"
  done
  control "$seed"
  finetune "no-pretraining-s$seed"
  report="$OUT/analysis-$(echo $ARMS | tr ' ' '-')"  # one report per set of arms, seed 0
  if [ "$seed" = 0 ] && [ ! -f "$report/report.json" ]; then
    # shellcheck disable=SC2046
    set -- $(for arm in $ARMS; do echo "$OUT/runs/$arm-s0"; done)
    first=$1; shift
    $RM analyze "$first" ${1:+--compare "$@"} --out "$report" --no-progress
    collect
  fi
done
collect
