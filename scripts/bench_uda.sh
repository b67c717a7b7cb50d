#!/usr/bin/env bash
# bench_uda.sh BUILD — DeepAstroUDA (ResNet-18 backbone, 64x64, K 2) on the
# engine (BUILD/bench_uda) beside the same work on tests/models/uda_ref.py's
# PyTorch modules (bench/uda/ref_uda.py), same thread count: predict images/s
# at batch 1 and 32, and a training step at 36 source + 36 target images
# (with the target's two AC views: 144 rows through the backbone). Each case
# runs in its own process on each side, so peak RSS is per case. Prints one
# markdown table.
set -uo pipefail
# shellcheck source=bench_lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/bench_lib.sh" "$@"
export GX_BENCH_THREADS=${GX_BENCH_THREADS:-$(nproc)}
export GX_BENCH_SECONDS=${GX_BENCH_SECONDS:-1}
export GX_BENCH_UDA_BANK=${GX_BENCH_UDA_BANK:-2048}
unset OMP_NUM_THREADS OPENBLAS_NUM_THREADS MKL_NUM_THREADS
bench_need bench-uda bench_uda
bench_have_torch
bench_tmp
: > "$tmp/c.tsv"; : > "$tmp/t.tsv"; : > "$tmp/t.err"
bench_stamp
# GX_BENCH_UDA_CASES: a subset, e.g. "predict:1 train:36:36" (case:batch[:batch]).
for c in ${GX_BENCH_UDA_CASES:-predict:1 predict:32 train:36:36}; do
  echo "bench_uda.sh: $c (engine)" >&2
  # shellcheck disable=SC2086  # case and batches are separate arguments
  "$build/bench_uda" ${c//:/ } >> "$tmp/c.tsv" || echo "bench_uda.sh: engine $c failed" >&2
  if [ "$have_torch" = 1 ]; then
    echo "bench_uda.sh: $c (torch)" >&2
    # shellcheck disable=SC2086
    "$py" "$here/bench/uda/ref_uda.py" ${c//:/ } >> "$tmp/t.tsv" 2>> "$tmp/t.err" || cat "$tmp/t.err" >&2
  fi
done
echo "== DeepAstroUDA, ResNet-18 backbone at 64x64 ($GX_BENCH_THREADS threads both sides)"
echo "date: $date_start, commit $commit, load avg $load_before before, $(cut -d' ' -f1-3 /proc/loadavg) after"
echo
bench_rows_table "$tmp/c.tsv" "$tmp/t.tsv"
echo
echo "ratio = torch time / engine time (> 1: the engine is faster). predict = eval forward with the"
echo "target BN set, softmax, entropy, argmax (gx_uda_predict). train = galaxy-train uda's step at"
echo "36+36 (source CE; target + 2 views: ES and AC against a full bank of $GX_BENCH_UDA_BANK slots;"
echo "lambda 0.005; backward; SGD Nesterov); images/s counts the 72 source + target images."
