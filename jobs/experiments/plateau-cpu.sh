#!/usr/bin/env bash
# The plateau experiment (docs/experiments.md section 4): does span masking stop learning once it
# reads the overlap, and does RandomMask keep it learning? jobs/configs/plateau-cpu.yaml (constant
# learning rate, 16,000 steps), three arms paired by seed:
#   span        DNABERT's span of k tokens throughout;
#   randommask  the first widening at step 2,000 (span has collapsed by then), then every 3,000
#               steps to 14 tokens at step 11,000, kept to the end: boundaries 6, 8, 10, 12, 14
#               tokens, lengths uniform up to the boundary;
#   wide-now    spans uniform in [6, 14] from step 2,000, all at once: wider spans, no curriculum.
# Then `randommask zeroshot` on every arm's checkpoints (when this commit has the command).
#
# About 0.5 s per step alone on 2 CPUs (2.2 hours per run; measured on span-s0), so it runs in pieces: rerun it and it resumes where it
# stopped (a pretraining from its last checkpoint; finished runs and zero-shot files are skipped).
# After each piece it copies the small results to $KEEP (default docs/experiments/plateau-cpu) to be
# committed, with history.txt: which commit ran each piece. Run it from a separate clone at a fixed
# commit, so that edits do not change a run in flight:
#   git clone . /tmp/plateau && cd /tmp/plateau && make venv && \
#     KEEP=$OLDPWD/docs/experiments/plateau-cpu jobs/experiments/plateau-cpu.sh
# SEEDS="0 1" ARMS="span randommask wide-now" narrow it; the order is seed by seed, so pairs finish first.
#
# A machine's outputs/ may not outlive a session: `plateau-cpu.sh park` (run before stopping) copies the
# newest checkpoint of each unfinished run to $KEEP/parked/ (about 12 MB a run) to be committed, and a
# clone at that commit continues each run from its parked checkpoint (run.resume_from) when outputs/
# has none. A finished run's parked copy is removed.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-outputs/experiments/plateau-cpu}
RM=${RANDOMMASK:-.venv/bin/randommask}
GENOME=${GENOME:-../shared/data/genomes/ecoli_536.fna.gz}
SEEDS=${SEEDS:-0 1 2}
ARMS=${ARMS:-span randommask wide-now}
KEEP=${KEEP:-docs/experiments/plateau-cpu}
PARKED=${PARKED:-docs/experiments/plateau-cpu/parked}   # this clone's own, as committed
POSITIONS=${POSITIONS:-5000}

mkdir -p "$KEEP"
[ -f "$OUT/prepared/manifest.json" ] || $RM data prepare "$GENOME" --out "$OUT/prepared" --val-fraction 0.04 --no-progress
common=(--config jobs/configs/plateau-cpu.yaml --set "data.prepared=$OUT/prepared" --set "run.storage_path=$OUT/runs"
        --set observability.progress=false)

arm_settings() {  # the masking of each arm; everything else is plateau-cpu.yaml
  case "$1" in
    span) ;;
    randommask) echo "--set masking.strategy=randommask --set masking.phase_ends=[2000,5000,8000,11000,16000]" ;;
    wide-now) echo "--set masking.strategy=randommask --set masking.phase_ends=[2000,16000] --set masking.span_step=8" ;;
    *) echo "plateau-cpu: unknown arm $1" >&2; exit 2 ;;
  esac
}

note() {  # one line of $KEEP/history.txt: what ran, from which commit (runs span several clones)
  echo "$(date -u +%Y-%m-%dT%H:%MZ) $* (commit $(git rev-parse --short HEAD))" >> "$KEEP/history.txt"
}

collect() {  # the small, durable results
  local run name  # not the loop's $run, which zeroshot is called with next
  for run in "$OUT"/runs/*/; do
    name=$(basename "$run")
    [ -f "$run/metrics.jsonl" ] && cp "$run/metrics.jsonl" "$KEEP/$name.metrics.jsonl"
    [ -f "$run/floors.json" ] && cp "$run/floors.json" "$KEEP/floors.json"
  done
  for z in "$OUT"/zeroshot/*.json; do
    [ -f "$z" ] && cp "$z" "$KEEP/$(basename "$z")"
  done
  # Written aside and renamed, so a failure leaves the last summary whole; it warns rather than
  # stopping hours of runs over a table.
  if ${PYTHON:-.venv/bin/python} jobs/experiments/plateau_cpu_summary.py "$KEEP" > "$KEEP/summary.md.tmp"; then
    mv "$KEEP/summary.md.tmp" "$KEEP/summary.md"
  else
    rm -f "$KEEP/summary.md.tmp"; echo "plateau-cpu: summary.md not updated (see the error above)" >&2
  fi
}

zeroshot() {  # the final and each 1,000-step checkpoint, on the same held-out positions
  $RM zeroshot --help > /dev/null 2>&1 || return 0
  local run="$OUT/runs/$1" out="$OUT/zeroshot"
  mkdir -p "$out"
  [ -f "$out/$1.zeroshot.json" ] || { note "$1: zeroshot of the final"; $RM zeroshot "$run/final" \
      --prepared "$OUT/prepared" --positions "$POSITIONS" --seed 0 --out "$out/$1.zeroshot.json"; }
  for ckpt in "$run"/step_*/; do
    [ -d "$ckpt" ] || continue
    step=$(basename "$ckpt"); step=$((10#${step#step_}))
    [ -f "$out/$1.step$step.zeroshot.json" ] || { note "$1: zeroshot of step $step"; $RM zeroshot "$ckpt" \
        --prepared "$OUT/prepared" --positions "$POSITIONS" --seed 0 --out "$out/$1.step$step.zeroshot.json"; }
  done
}

park() {  # the newest checkpoint of each unfinished run, written aside and renamed
  for run in "$OUT"/runs/*/; do
    name=$(basename "$run")
    if [ -f "$run/final/config.json" ]; then rm -rf "${KEEP:?}/parked/$name"; continue; fi
    newest=$(find "$run" -maxdepth 1 -name 'step_*' -type d | sort | tail -1)
    [ -n "$newest" ] || continue
    rm -rf "$KEEP/parked/$name.tmp" && mkdir -p "$KEEP/parked/$name.tmp"
    cp -r "$newest" "$KEEP/parked/$name.tmp/"
    rm -rf "${KEEP:?}/parked/$name" && mv "$KEEP/parked/$name.tmp" "$KEEP/parked/$name"
    echo "plateau-cpu: parked $name at $(basename "$newest") in $KEEP/parked/$name"
  done
}
if [ "${1:-}" = park ]; then park; collect; exit 0; fi

for seed in $SEEDS; do
  for arm in $ARMS; do
    run="$arm-s$seed"
    if [ ! -f "$OUT/runs/$run/final/config.json" ]; then
      parked=$(find "$PARKED/$run" -maxdepth 1 -name 'step_*' -type d 2>/dev/null | sort | tail -1 || true)
      # used only while outputs/ has no checkpoint of this run: Ray's own resume comes first
      resume=(); [ -z "$parked" ] || resume=(--set "run.resume_from=$parked")
      own=$(find "$OUT/runs/$run" -maxdepth 1 -name 'step_*' -type d 2>/dev/null | sort | tail -1 || true)
      note "$run: pretrain from ${own:-${parked:-step 0}}"
      # shellcheck disable=SC2046
      $RM pretrain "${common[@]}" --set "run.name=$run" --set "run.seed=$seed" $(arm_settings "$arm") "${resume[@]}"
    fi
    collect
    zeroshot "$run"
    collect
  done
done
