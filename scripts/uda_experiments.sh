#!/usr/bin/env bash
# uda_experiments.sh [noise|cross|all] — DeepAstroUDA's two experiments
# (spec/uda.md "Experiments the trainer reproduces") on galaxy-synth surveys,
# each trained with adaptation (lambda LAMBDA) and without (lambda 0, the
# source-only baseline), ending in `galaxy-train report --kind uda`
# (the paper's Tables 1-2 layout) -> $WORK/uda-<what>_tables.md and stdout.
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
# Parameters (environment; the defaults are the runs reported in
# docs/experiments.md, far below the paper's scale: with THREADS=1, `noise`
# and `cross` each take about 20 minutes per seed, side by side on 2 shared
# cores):
#   BUILD     build directory with galaxy-train / galaxy-synth (default build)
#   WORK      work directory (default $BUILD/uda_experiments)
#   N         objects per survey file (default 6000, balanced over the classes)
#   SIZE      cutout side = model input (default 32)
#   Z0        galaxy-synth redshift scale (default 0.07: galaxies large enough on
#             the sky for their morphology to show at 32 px, as for the bundled
#             WaveletMamba; galaxy-synth's own default 0.18 leaves most of them
#             a few pixels across, and a tiny backbone then learns little). For `noise`,
#             Z0=0.35 gives fainter galaxies on which the Y1 noise costs a
#             source-only model 11-12 points (docs/experiments.md, session 6)
#   BACKBONE  tiny | resnet18 | resnet50 (default tiny; the paper: resnet50 at 256)
#   EPOCHS    epochs per run (default 20; early stopping after PATIENCE)
#   PATIENCE  early-stopping patience (default 12)
#   SEEDS     space-separated seeds, one run pair each (default "1"; the paper: 5)
#   LAMBDA    weight of AC + ES for the adapted runs (default 0.005)
#   THREADS   compute threads (default: leave to OpenMP)
#   DB        metrics database (default $WORK/uda-<what>.sqlite, so that `noise`
#             and `cross` can run at the same time, each with its own table)
#   EXTRA     more --set KEY=VALUE items for every run, space separated
# Survey files are named by their parameters (N, SIZE, Z0) and reused when
# present; checkpoints go to $WORK/<experiment>-s<seed>-l<lambda>/.
# A larger run: N=20000 SIZE=64 BACKBONE=resnet18 EPOCHS=100 SEEDS="1 2 3 4 5".
set -euo pipefail

what=${1:-all}
case "$what" in noise|cross|all) ;; *) echo "usage: $0 [noise|cross|all]" >&2; exit 2 ;; esac

BUILD=${BUILD:-build}
WORK=${WORK:-$BUILD/uda_experiments}
N=${N:-6000}
SIZE=${SIZE:-32}
Z0=${Z0:-0.07}
BACKBONE=${BACKBONE:-tiny}
EPOCHS=${EPOCHS:-20}
PATIENCE=${PATIENCE:-12}
SEEDS=${SEEDS:-1}
LAMBDA=${LAMBDA:-0.005}
THREADS=${THREADS:-}
DB=${DB:-$WORK/uda-$what.sqlite}
TABLES=${DB%.sqlite}_tables.md
EXTRA=${EXTRA:-}

SYNTH=$BUILD/galaxy-synth
TRAIN=$BUILD/galaxy-train
for b in "$SYNTH" "$TRAIN"; do
    [ -x "$b" ] || { echo "$0: $b not found (make BUILD=$BUILD first)" >&2; exit 2; }
done
mkdir -p "$WORK"

# survey NAME SURVEY SEED [CLASSES]: renders $WORK/NAME-n<N>-s<SIZE>-z<Z0>.h5
# once (same seed + flags = same bytes) and sets $file to its path.
survey() {
    local sv=$2 seed=$3 classes=${4:-galaxy10}
    file="$WORK/$1-n$N-s$SIZE-z$Z0.h5"
    [ -f "$file" ] && return 0
    echo "== galaxy-synth $sv ($classes, $N objects, ${SIZE}px, z0 $Z0) -> $file"
    "$SYNTH" --out "$file" --n "$N" --size "$SIZE" --seed "$seed" --survey "$sv" --classes "$classes" \
        --z0 "$Z0" --balanced --quiet
}

# The model input is the cutout side (no resize), whatever the backbone's default.
sets=(--set "patience=$PATIENCE" --set "size=$SIZE")
if [ -n "$THREADS" ]; then sets+=(--set "threads=$THREADS"); fi
for kv in $EXTRA; do sets+=(--set "$kv"); done

runs=()
# pair SLUG NAME SOURCE TARGET KNOWN EXCLUDE: the adapted and the baseline run per seed.
pair() {
    local slug=$1 name=$2 src=$3 tgt=$4 known=$5 exclude=$6
    for seed in $SEEDS; do
        for lam in "$LAMBDA" 0; do
            local tag=$slug-s$seed-l$lam
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
    survey lsst_y10 lsst-y10 11; y10=$file
    survey lsst_y1 lsst-y1 11; y1=$file
    known="elliptical=2+3,spiral=5+6+7"
    pair y10-y1 "LSST Y10 → Y1" "$y10" "$y1" "$known" 0,4,8,9
    pair y1-y10 "LSST Y1 → Y10" "$y1" "$y10" "$known" 0,4,8,9
fi
if [ "$what" = cross ] || [ "$what" = all ]; then
    survey sdss sdss 21; sdss=$file
    survey decals_lens decals 22 galaxy10+lens; decals=$file
    pair sdss-decals "SDSS → DECaLS (lens unknown)" "$sdss" "$decals" 0,1,2,4,5,6,7,8,9 3
fi

ids=$(IFS=,; echo "${runs[*]}")
"$TRAIN" report --db "$DB" --kind uda --runs "$ids" --out "$TABLES"
cat "$TABLES"
