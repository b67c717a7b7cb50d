#!/usr/bin/env bash
# make_models.sh BUILD — rebuilds the bundled model models/default/wavelet-mamba.safetensors
# from scratch: a galaxy-synth survey, a WaveletMamba `small` training run, and
# `galaxy-train bundle` (test-part evaluation embedded as metadata "test_metrics").
# Takes about an hour on 2 cores. Work files go to $WORK (default build/models-work).
# Every number in docs/models.md comes from this script's output.
set -euo pipefail
build=${1:-build}
work=${WORK:-build/models-work}
out=${OUT:-models/default/wavelet-mamba.safetensors}
mkdir -p "$work" "$(dirname "$out")"

# The survey: 12000 balanced objects, 64x64, low-redshift (z0 0.07: galaxies
# large enough on the sky that their morphology shows at 32 px).
data="$work/synth12k.h5"
[ -f "$data" ] || "$build/galaxy-synth" --out "$data" --n 12000 --size 64 --seed 7 --z0 0.07 --balanced --quiet

# The run: the small config at 32x32 (4x cheaper than 64x64; the model is
# size-agnostic and galaxyd resizes every upload to the checkpoint's size),
# 8 epochs over 4800 balanced training draws each, micro-batch 32, no accumulation.
rm -rf "$work/ck" "$work/runs.sqlite"
"$build/galaxy-train" wavelet-mamba --data "$data" --db "$work/runs.sqlite" --out "$work/ck" \
    --config small --size 32 --epochs 8 --batch 32 --accum 1 --seed 1 \
    --set max_train=4800 --set warmup_epochs=1

# last.safetensors carries the exact training-set colour statistics (best has
# the per-epoch approximation), and with the cosine schedule the last epoch is
# the converged one: it is what we ship.
"$build/galaxy-train" bundle --checkpoint "$work/ck/last.safetensors" --data "$data" \
    --out "$out" --sizes 32,48,64
ls -l "$out"
