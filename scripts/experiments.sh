#!/usr/bin/env bash
# experiments.sh [bias|compare|all] — the two experiments of issue 4 on a
# galaxy-synth survey, each ending in a Markdown table from the database:
#
#  bias     the paper's Table 3: the redshift head trained on spec_selected
#           objects only (--set z_train=spec_selected), tested on all; four
#           runs with the same seed and data that differ only in the redshift
#           loss switches: MSE only, +colour (colour-aware weights), +HK
#           (Hellinger-Kantorovich term, the paper's Table-3 HK settings:
#           batch mode, Sinkhorn lambda 0.1, weight 0.30), +both. Each run's
#           last checkpoint is evaluated on the test part (galaxy-train eval
#           --db), then `galaxy-train report --kind bias` -> $WORK/table3_bias.md.
#  compare  the paper's Table 2: WaveletMamba vs a ResNet-18 backbone with the
#           same heads (--set backbone=resnet18), same trainer, data, seed and
#           default losses -> `report --kind compare` -> $WORK/table2_compare.md.
#
# Parameters (environment; the defaults run in about 10 minutes on 2 cores):
#   BUILD      build directory with galaxy-train / galaxy-synth (default build)
#   WORK       work directory (default $BUILD/experiments)
#   DATA       the survey file; generated if absent: galaxy-synth, N objects,
#              64x64, the default redshift scale (z0 0.18: objects up to z ~ 1,
#              so the per-bin columns of the bias table are filled), balanced, seed 7 (default $WORK/synth6k.h5)
#   N          objects to generate (default 6000)
#   CONFIG     tiny | small | default (default tiny)
#   SIZE       input size (default 32)
#   EPOCHS     epochs per run (default 5)
#   MAX_TRAIN  training objects used per epoch (default 2048; 0 = the whole training part)
#   BATCH      micro-batch (default 32; no accumulation)
#   SEED       seed of every run (default 1)
#   HK_START, HK_RAMP_END  0-based epochs of the HK weight schedule (default: 1 and 1
#              when EPOCHS > 2, else 0 and 0; the paper: 2 and 10 of 120 epochs)
#   THREADS    compute threads (default: leave to OpenMP)
#   RESNET_WIDTH  base width of the ResNet-18 run (default: the trainer's, 64 =
#              the standard ResNet-18; smaller is cheaper but no longer ResNet-18)
#   DB         metrics database (default $WORK/experiments.sqlite)
#   EXTRA      more --set KEY=VALUE items for every run, space separated
# The paper-scale run: CONFIG=default SIZE=64 EPOCHS=120 MAX_TRAIN=0 BATCH=64
# HK_START=2 HK_RAMP_END=10 (and accumulation via EXTRA="accum=8").
set -euo pipefail

what=${1:-all}
case "$what" in bias|compare|all) ;; *) echo "usage: $0 [bias|compare|all]" >&2; exit 2 ;; esac

BUILD=${BUILD:-build}
WORK=${WORK:-$BUILD/experiments}
N=${N:-6000}
DATA=${DATA:-$WORK/synth6k.h5}
CONFIG=${CONFIG:-tiny}
SIZE=${SIZE:-32}
EPOCHS=${EPOCHS:-5}
MAX_TRAIN=${MAX_TRAIN:-2048}
BATCH=${BATCH:-32}
SEED=${SEED:-1}
if [ "$EPOCHS" -gt 2 ]; then hk0=1; else hk0=0; fi
HK_START=${HK_START:-$hk0}
HK_RAMP_END=${HK_RAMP_END:-$HK_START}
THREADS=${THREADS:-}
DB=${DB:-$WORK/experiments.sqlite}
EXTRA=${EXTRA:-}
RESNET_WIDTH=${RESNET_WIDTH:-}

train="$BUILD/galaxy-train"
synth="$BUILD/galaxy-synth"
for b in "$train" "$synth"; do
    [ -x "$b" ] || { echo "$0: $b not built (make BUILD=$BUILD)" >&2; exit 2; }
done
mkdir -p "$WORK"

# Prints a command, then runs it (the log shows the exact commands).
run() { printf '+ %s\n' "$*" >&2; "$@"; }

if [ ! -f "$DATA" ]; then
    run "$synth" --out "$DATA" --n "$N" --size 64 --seed 7 --balanced --quiet
fi

# Flags shared by every run.
common=(--data "$DATA" --db "$DB" --config "$CONFIG" --size "$SIZE" --epochs "$EPOCHS"
        --batch "$BATCH" --accum 1 --seed "$SEED" --quiet
        --set max_train="$MAX_TRAIN" --set warmup_epochs=$(( EPOCHS > 4 ? 1 : 0 )))
[ -n "$THREADS" ] && common+=(--set threads="$THREADS")
for kv in $EXTRA; do common+=(--set "$kv"); done

# HK as in the paper's Table-3 runs (batch mode, lambda 0.1, weight 0.30).
hk_on=(--set hk_weight_max=0.30 --set hk_mode=batch --set sk_lambda=0.1
       --set hk_start_epoch="$HK_START" --set hk_ramp_end_epoch="$HK_RAMP_END")
hk_off=(--set hk_weight_max=0)

# train_eval NAME FLAGS...: one training run into $WORK/NAME, then the test-part
# evaluation of its last checkpoint stored in the database. Sets $run_id.
train_eval() {
    local name=$1; shift
    local out="$WORK/$name" log="$WORK/$name.log"
    rm -rf "$out"
    run "$train" wavelet-mamba "${common[@]}" --out "$out" "$@" | tee "$log"
    run_id=$(sed -n 's/^run \([0-9][0-9]*\):.*/\1/p' "$log" | tail -1)
    [ -n "$run_id" ] || { echo "$0: $name: no run id in $log" >&2; exit 1; }
    run "$train" eval --checkpoint "$out/last.safetensors" --data "$DATA" --db "$DB" | tee -a "$log"
}

if [ "$what" = bias ] || [ "$what" = all ]; then
    ids=()
    train_eval bias-mse    --set z_train=spec_selected --set colour_weights=0 "${hk_off[@]}"; ids+=("$run_id")
    train_eval bias-colour --set z_train=spec_selected --set colour_weights=1 "${hk_off[@]}"; ids+=("$run_id")
    train_eval bias-hk     --set z_train=spec_selected --set colour_weights=0 "${hk_on[@]}";  ids+=("$run_id")
    train_eval bias-both   --set z_train=spec_selected --set colour_weights=1 "${hk_on[@]}";  ids+=("$run_id")
    runs=$(IFS=,; echo "${ids[*]}")
    run "$train" report --db "$DB" --runs "$runs" --kind bias --out "$WORK/table3_bias.md"
    cat "$WORK/table3_bias.md"
fi

if [ "$what" = compare ] || [ "$what" = all ]; then
    ids=()
    train_eval cmp-wavelet  --set backbone=wavelet;  ids+=("$run_id")
    rn=(--set backbone=resnet18)
    [ -n "$RESNET_WIDTH" ] && rn+=(--set resnet_width="$RESNET_WIDTH")
    train_eval cmp-resnet18 "${rn[@]}"; ids+=("$run_id")
    runs=$(IFS=,; echo "${ids[*]}")
    run "$train" report --db "$DB" --runs "$runs" --kind compare --out "$WORK/table2_compare.md"
    cat "$WORK/table2_compare.md"
fi
