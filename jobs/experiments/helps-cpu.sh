#!/usr/bin/env bash
# The helps-cpu experiment (docs/experiments.md section 5, issue 38): does in-domain pretraining help
# GUE fine-tuning more than no pretraining, and RandomMask more than span? jobs/configs/helps-cpu.yaml
# (128-bp windows, 4 x 128 model, warmup then linear decay), on a corpus of every GUE train.csv cleaned
# of every GUE dev and test set. Arms, paired by pretraining seed:
#   k1-bert        single-nucleotide tokens, BERT 15% masking (the positive control);
#   k6-span        6-mers, DNABERT span masking;
#   k6-randommask  6-mers, RandomMask, its five phases spread evenly over the run;
# and, per seed and k, the untrained control (control_init.py). For each final and control: zero-shot
# on the corpus's validation split (finals), the linear probe beside the bag of k-mers, and fine-tuning
# with the learning rate chosen on dev from $LRS on $SEARCH_SEEDS fine-tuning seed(s), then $FT_SEEDS seeds in all at that rate.
#
# Resumable in pieces: rerun it and it goes on where it stopped (a pretraining from its last checkpoint;
# finished runs, probes and fine-tuning trials are kept). Results go to $KEEP as they come, with
# history.txt (which commit ran each piece). Run it from a separate clone at a fixed commit:
#   git clone . /work/helps && cd /work/helps && make venv && \
#     KEEP=/work/main/docs/experiments/helps-cpu nohup setsid jobs/experiments/helps-cpu.sh > /work/helps.log 2>&1 &
# SEEDS="0 1" ARMS="k1-bert k6-span k6-randommask" STAGES="pretrain downstream" narrow it.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-outputs/experiments/helps-cpu}
RM=${RANDOMMASK:-.venv/bin/randommask}
PY=${PYTHON:-.venv/bin/python}
GUE=${GUE:-../shared/data/gue}
TASKS=${TASKS:-mouse/0,mouse/2,prom/prom_core_all,prom/prom_core_tata,tf/0,tf/2}
SEEDS=${SEEDS:-0 1}
ARMS=${ARMS:-k1-bert k6-span k6-randommask}
STAGES=${STAGES:-pretrain downstream}
KEEP=${KEEP:-docs/experiments/helps-cpu}
CONFIG=jobs/configs/helps-cpu.yaml
LRS=${LRS:-1e-4,3e-4,1e-3}
FT_SEEDS=${FT_SEEDS:-2}
SEARCH_SEEDS=${SEARCH_SEEDS:-1}   # the rate chosen on seed 0's dev score, seed 1 at that rate only
# 10,000 training rows at most (prom_core_all, tf/0, tf/2 are capped; the same rows for every model):
# every row would take about 90 min of fine-tuning per model, 15 h for the ten (docs/experiments.md 5)
MAX_TRAIN=${MAX_TRAIN:-10000}
POSITIONS=${POSITIONS:-5000}
# Zero-shot windows: the corpus's validation records are single GUE sequences of 70 and 101 bp, so the
# pretraining window (128 bp) fits none; 69 bp (the shortest sequence, made odd) lets every record count.
ZS_WINDOW=${ZS_WINDOW:-69}
THREADS=${THREADS:-1}
MAX_STEPS=$($PY -c "import yaml; print(yaml.safe_load(open('$CONFIG'))['optim']['max_steps'])")

mkdir -p "$KEEP"
note() {  # one line of $KEEP/history.txt: what ran, from which commit (runs span several clones)
  echo "$(date -u +%Y-%m-%dT%H:%MZ) $* (commit $(git rev-parse --short HEAD))" >> "$KEEP/history.txt"
}

if [ ! -f "$OUT/prepared/manifest.json" ]; then
  note "corpus: data prepare of every GUE train.csv, --exclude the GUE root"
  # shellcheck disable=SC2046
  $RM data prepare $(ls "$GUE"/*/*/train.csv) --exclude "$GUE" --val-fraction 0.05 --out "$OUT/prepared" --no-progress
  cp "$OUT/prepared/manifest.json" "$KEEP/corpus.manifest.json"
fi

arm_settings() {  # what each arm changes in helps-cpu.yaml
  case "$1" in
    k6-span) ;;
    k6-randommask)
      ends=$($PY -c "n=$MAX_STEPS; print('[' + ','.join(str(n * i // 5) for i in range(1, 6)) + ']')")
      echo "--set masking.strategy=randommask --set masking.phase_ends=$ends" ;;
    k1-bert) echo "--set data.k=1 --set masking.strategy=bert" ;;
    *) echo "helps-cpu: unknown arm $1" >&2; exit 2 ;;
  esac
}
arm_k() { case "$1" in k1-*) echo 1 ;; *) echo 6 ;; esac; }

collect() {  # the small, durable results
  local run name f
  for run in "$OUT"/runs/*/; do
    name=$(basename "$run")
    [ -f "$run/metrics.jsonl" ] && cp "$run/metrics.jsonl" "$KEEP/$name.metrics.jsonl"
    [ -f "$run/floors.json" ] && cp "$run/floors.json" "$KEEP/$name.floors.json"
  done
  for f in "$OUT"/zeroshot/*.json "$OUT"/probe/*.probe.json; do [ -f "$f" ] && cp "$f" "$KEEP/"; done
  for f in "$OUT"/finetune/*/results.json; do
    [ -f "$f" ] && cp "$f" "$KEEP/$(basename "$(dirname "$f")").finetune.json"
  done
  # written aside and renamed: a failure leaves the last summary whole, and warns rather than stopping runs
  if $PY jobs/experiments/helps_cpu_summary.py "$KEEP" > "$KEEP/summary.md.tmp"; then
    mv "$KEEP/summary.md.tmp" "$KEEP/summary.md"
  else
    rm -f "$KEEP/summary.md.tmp"; echo "helps-cpu: summary.md not updated (see the error above)" >&2
  fi
  return 0
}

downstream() {  # $1: a model's name, $2: its directory
  mkdir -p "$OUT/probe"
  if [ ! -f "$OUT/probe/$1.probe.json" ]; then
    note "$1: probe"
    $RM probe "$2" --gue-dir "$GUE" --tasks "$TASKS" --threads "$THREADS" --out "$OUT/probe/$1.probe.json"
    collect
  fi
  if [ ! -f "$OUT/finetune/$1/results.json" ]; then  # written once all its trials are done
    note "$1: finetune, lr on dev from $LRS"
    $RM finetune --checkpoint "$2" --gue-dir "$GUE" --tasks "$TASKS" --seeds "$FT_SEEDS" --lr "$LRS" \
        --search-seeds "$SEARCH_SEEDS" \
        ${MAX_TRAIN:+--max-train "$MAX_TRAIN"} --out "$OUT/finetune/$1" --mlflow-uri none
    collect
  fi
}

common=(--config "$CONFIG" --set "data.prepared=$OUT/prepared" --set "run.storage_path=$OUT/runs"
        --set observability.progress=false)
for seed in $SEEDS; do
  for arm in $ARMS; do
    run="$arm-s$seed"
    final="$OUT/runs/$run/final"
    if [[ " $STAGES " == *" pretrain "* ]] && [ ! -f "$final/config.json" ]; then
      note "$run: pretrain"
      # shellcheck disable=SC2046
      $RM pretrain "${common[@]}" --set "run.name=$run" --set "run.seed=$seed" $(arm_settings "$arm")
      collect
    fi
    [ -f "$final/config.json" ] || continue
    if [ ! -f "$OUT/zeroshot/$run.zeroshot.json" ]; then
      mkdir -p "$OUT/zeroshot"
      note "$run: zeroshot"
      $RM zeroshot "$final" --prepared "$OUT/prepared" --positions "$POSITIONS" --seed 0 \
          --window-bp "$ZS_WINDOW" --out "$OUT/zeroshot/$run.zeroshot.json"
      collect
    fi
    [[ " $STAGES " == *" downstream "* ]] && downstream "$run" "$final"
  done
  if [[ " $STAGES " == *" downstream "* ]]; then
    for k in $(for arm in $ARMS; do arm_k "$arm"; done | sort -u); do
      control="$OUT/controls/k$k-untrained-s$seed"
      [ -f "$control/config.json" ] || $PY jobs/experiments/control_init.py "$CONFIG" "$seed" "$control" "data.k=$k"
      downstream "k$k-untrained-s$seed" "$control"
    done
  fi
done
collect
