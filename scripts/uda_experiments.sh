#!/usr/bin/env bash
# uda_experiments.sh [noise|cross|all] — DeepAstroUDA's two experiments
# (spec/uda.md "Experiments the trainer reproduces") on galaxy-synth surveys,
# each trained with adaptation (lambda LAMBDA) and without (lambda 0, the
# source-only baseline), ending in `galaxy-train report --kind uda`
# (the paper's Tables 1-2 layout) -> $WORK/uda_tables.md and stdout.
#
#  noise  the paper's LSST Y10 <-> Y1 noise shift, both directions: the same
#         galaxies' population rendered with the lsst-y10 (low noise) and
#         lsst-y1 (high noise) depths; known classes elliptical (Round Smooth +
#         In-between Round Smooth) and spiral (the three spiral classes);
#         mergers are the unknown class (present in the target only: the
#         trainer drops unknown classes from the source); the other Galaxy10
#         classes are excluded (--exclude 0,4,8,9).
#  cross  SDSS -> DECaLS: nine known classes (Galaxy10 without In-between
#         Round Smooth, --exclude 3) and strong lenses, rendered in the target
#         only (--classes galaxy10+lens), as the unknown class.
#
# Parameters (environment; the defaults run in a few minutes on 2 cores and
# are far below the paper's scale, so expect much lower numbers):
#   BUILD     build directory with galaxy-train / galaxy-synth (default build)
#   WORK      work directory (default $BUILD/uda_experiments)
#   N         objects per survey file (default 1500)
#   SIZE      cutout side = model input (default 32)
#   BACKBONE  tiny | resnet18 | resnet50 (default tiny; the paper: resnet50 at 256)
#   EPOCHS    epochs per run (default 5; early stopping after PATIENCE)
#   PATIENCE  early-stopping patience (default 12)
#   SEEDS     space-separated seeds, one run pair each (default "1"; the paper: 5)
#   LAMBDA    weight of AC + ES for the adapted runs (default 0.005)
#   THREADS   compute threads (default: leave to OpenMP)
#   DB        metrics database (default $WORK/uda.sqlite)
#   EXTRA     more --set KEY=VALUE items for every run, space separated
# A larger run: N=20000 SIZE=64 BACKBONE=resnet18 EPOCHS=100 SEEDS="1 2 3 4 5".
set -euo pipefail

what=${1:-all}
case "$what" in noise|cross|all) ;; *) echo "usage: $0 [noise|cross|all]" >&2; exit 2 ;; esac

BUILD=${BUILD:-build}
WORK=${WORK:-$BUILD/uda_experiments}
N=${N:-1500}
SIZE=${SIZE:-32}
BACKBONE=${BACKBONE:-tiny}
EPOCHS=${EPOCHS:-5}
PATIENCE=${PATIENCE:-12}
SEEDS=${SEEDS:-1}
LAMBDA=${LAMBDA:-0.005}
THREADS=${THREADS:-}
DB=${DB:-$WORK/uda.sqlite}
EXTRA=${EXTRA:-}

SYNTH=$BUILD/galaxy-synth
TRAIN=$BUILD/galaxy-train
for b in "$SYNTH" "$TRAIN"; do
    [ -x "$b" ] || { echo "$0: $b not found (make BUILD=$BUILD first)" >&2; exit 2; }
done
mkdir -p "$WORK"

# survey FILE SURVEY SEED [CLASSES]: render once (same seed + flags = same file).
survey() {
    local out=$1 sv=$2 seed=$3 classes=${4:-galaxy10}
    [ -f "$out" ] && return 0
    echo "== galaxy-synth $sv ($classes, $N objects, ${SIZE}px) -> $out"
    "$SYNTH" --out "$out" --n "$N" --size "$SIZE" --seed "$seed" --survey "$sv" --classes "$classes" \
        --balanced --quiet
}

# The model input is the cutout side (no resize), whatever the backbone's default.
sets=(--set "patience=$PATIENCE" --set "size=$SIZE")
if [ -n "$THREADS" ]; then sets+=(--set "threads=$THREADS"); fi
for kv in $EXTRA; do sets+=(--set "$kv"); done

runs=()
# pair NAME SOURCE TARGET KNOWN EXCLUDE: the adapted and the baseline run per seed.
pair() {
    local name=$1 src=$2 tgt=$3 known=$4 exclude=$5
    for seed in $SEEDS; do
        for lam in "$LAMBDA" 0; do
            local tag=$name-s$seed-l$lam
            echo "== galaxy-train uda $name (seed $seed, lambda $lam)"
            "$TRAIN" uda --source "$src" --target "$tgt" --db "$DB" --out "$WORK/$tag" \
                --backbone "$BACKBONE" --known "$known" --exclude "$exclude" --lambda "$lam" \
                --epochs "$EPOCHS" --seed "$seed" --set "experiment=$name" "${sets[@]}" --quiet \
                | tee "$WORK/$tag.log"
            runs+=("$(sed -n 's/^run \([0-9]*\):.*/\1/p' "$WORK/$tag.log" | tail -1)")
        done
    done
}

if [ "$what" = noise ] || [ "$what" = all ]; then
    # One seed for both depths: the same population, two noise levels.
    survey "$WORK/lsst_y10.h5" lsst-y10 11
    survey "$WORK/lsst_y1.h5" lsst-y1 11
    known="elliptical=2+3,spiral=5+6+7"
    pair "LSST Y10 → Y1" "$WORK/lsst_y10.h5" "$WORK/lsst_y1.h5" "$known" 0,4,8,9
    pair "LSST Y1 → Y10" "$WORK/lsst_y1.h5" "$WORK/lsst_y10.h5" "$known" 0,4,8,9
fi
if [ "$what" = cross ] || [ "$what" = all ]; then
    survey "$WORK/sdss.h5" sdss 21
    survey "$WORK/decals_lens.h5" decals 22 galaxy10+lens
    pair "SDSS → DECaLS (lens unknown)" "$WORK/sdss.h5" "$WORK/decals_lens.h5" 0,1,2,4,5,6,7,8,9 3
fi

ids=$(IFS=,; echo "${runs[*]}")
"$TRAIN" report --db "$DB" --kind uda --runs "$ids" --out "$WORK/uda_tables.md"
cat "$WORK/uda_tables.md"
