#!/usr/bin/env bash
# The downstream part of the plateau experiment (docs/experiments.md section 4): what the finals'
# representations are worth, beside a no-pretraining control of each seed (the same initial weights,
# never trained) and a bag of k-mers. For each finished final of plateau-cpu.sh, and the control of
# each of its seeds:
#   probe     `randommask probe` on the six GUE datasets in ../shared/data/gue: logistic regression on
#             frozen mean-pooled features, the sequences read as 24-bp windows (what the models were
#             pretrained on; their later position embeddings never trained), full training and test sets;
#   finetune  `randommask finetune`, the published protocol (DNABERT-2's per-dataset values, lr 3e-5,
#             batch 32, the lowest dev loss restored for test), training sets capped at $MAX_TRAIN rows
#             (the three large ones; the published runs use them whole), full dev and test sets,
#             $FT_SEEDS fine-tuning seeds.
# Results go to $KEEP as {run}.probe.json and {run}.finetune.json; plateau_cpu_summary.py reads them.
# Rerun it and it resumes (finished probes and trials are kept). Run it from a separate clone at a
# fixed commit, like plateau-cpu.sh, pointing OUT at that run's outputs:
#   OUT=/work/plateau/outputs/experiments/plateau-cpu KEEP=$PWD/docs/experiments/plateau-cpu \
#     jobs/experiments/plateau-finetune.sh
# THREADS=1 (the default) keeps the probe from oversubscribing cores a pretraining also uses.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-outputs/experiments/plateau-cpu}
RM=${RANDOMMASK:-.venv/bin/randommask}
PY=${PYTHON:-.venv/bin/python}
GUE=${GUE:-../shared/data/gue}
TASKS=${TASKS:-mouse/0,mouse/2,prom/prom_core_all,prom/prom_core_tata,tf/0,tf/2}
SEEDS=${SEEDS:-0 1 2}
ARMS=${ARMS:-span randommask wide-now}
KEEP=${KEEP:-docs/experiments/plateau-cpu}
MAX_TRAIN=${MAX_TRAIN:-10000}
FT_SEEDS=${FT_SEEDS:-2}
THREADS=${THREADS:-1}
WINDOW_BP=24  # plateau-cpu.yaml's data.window_bp, for the controls too (they have no run config)

note() {  # one line of $KEEP/history.txt, as plateau-cpu.sh writes them
  echo "$(date -u +%Y-%m-%dT%H:%MZ) $* (commit $(git rev-parse --short HEAD))" >> "$KEEP/history.txt"
}

collect() {
  local f
  for f in "$OUT"/probe/*.probe.json; do [ -f "$f" ] && cp "$f" "$KEEP/"; done
  for f in "$OUT"/finetune/*/results.json; do
    [ -f "$f" ] && cp "$f" "$KEEP/$(basename "$(dirname "$f")").finetune.json"
  done
  if $PY jobs/experiments/plateau_cpu_summary.py "$KEEP" > "$KEEP/summary.md.tmp"; then
    mv "$KEEP/summary.md.tmp" "$KEEP/summary.md"
  else
    rm -f "$KEEP/summary.md.tmp"; echo "plateau-finetune: summary.md not updated (see the error above)" >&2
  fi
}

downstream() {  # $1: the run's name, $2: its final model directory
  mkdir -p "$OUT/probe"
  if [ ! -f "$OUT/probe/$1.probe.json" ]; then
    note "$1: probe"
    $RM probe "$2" --gue-dir "$GUE" --tasks "$TASKS" --window-bp "$WINDOW_BP" --threads "$THREADS" \
        --out "$OUT/probe/$1.probe.json"
    collect
  fi
  if [ ! -f "$OUT/finetune/$1/results.json" ]; then  # written once all its trials are done
    note "$1: finetune"
    $RM finetune --checkpoint "$2" --gue-dir "$GUE" --tasks "$TASKS" --seeds "$FT_SEEDS" --max-train "$MAX_TRAIN" \
        --out "$OUT/finetune/$1" --mlflow-uri none
    collect
  fi
}

mkdir -p "$KEEP"
for seed in $SEEDS; do
  any=0
  for arm in $ARMS; do
    final="$OUT/runs/$arm-s$seed/final"
    [ -f "$final/config.json" ] || continue
    any=1
    downstream "$arm-s$seed" "$final"
  done
  [ "$any" = 1 ] || continue
  control="$OUT/controls/no-pretraining-s$seed"
  [ -f "$control/config.json" ] || $PY jobs/experiments/control_init.py jobs/configs/plateau-cpu.yaml "$seed" "$control"
  downstream "no-pretraining-s$seed" "$control"
done
collect
