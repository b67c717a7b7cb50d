#!/usr/bin/env bash
# two_models.sh BUILD — the two-models report of issue 9 on the synthetic survey
# at two dataset sizes: one galaxy-synth survey (balanced, 32 px, z0 0.07 like
# the bundled models' data), then `galaxy-train two-models` with the first
# N_SMALL and N_LARGE training images. Reports land in $WORK/n<N>/report.md;
# every number is also in $WORK/runs.sqlite. Environment:
#   WORK (build/two-models-work), N_SMALL (2000), N_LARGE (20000), EPOCHS (8),
#   CONFIG (tiny), N_GEN (200)
set -euo pipefail
build=${1:-build}
work=${WORK:-build/two-models-work}
n_small=${N_SMALL:-2000}; n_large=${N_LARGE:-20000}
epochs=${EPOCHS:-8}; config=${CONFIG:-tiny}; n_gen=${N_GEN:-200}
mkdir -p "$work"
# The survey holds enough objects for the larger size after the 70/15/15 split.
n_total=$(( (n_large * 100 + 69) / 70 + 10 ))
data="$work/synth_${n_total}.h5"
[ -f "$data" ] || "$build/galaxy-synth" --out "$data" --n "$n_total" --size 32 --seed 21 --z0 0.07 --balanced --quiet
for n in "$n_small" "$n_large"; do
  rm -rf "$work/n$n"
  "$build/galaxy-train" two-models --data "$data" --db "$work/runs.sqlite" --out "$work/n$n" \
      --config "$config" --epochs "$epochs" --seed 5 --n-train "$n" --n-gen "$n_gen" --n-real 300 \
      --n-mem-train 4000
done
