#!/usr/bin/env bash
# bench_uda.sh BUILD — DeepAstroUDA (ResNet-18 backbone, 64x64, K 2) on the
# engine (BUILD/bench_uda) beside the same work on tests/models/uda_ref.py's
# PyTorch modules (bench/uda/ref_uda.py), same thread count: predict images/s
# at batch 1 and 32, and a training step at 36 source + 36 target images
# (with the target's two AC views: 144 rows through the backbone). Each case
# runs in its own process on each side, so peak RSS is per case. Prints one
# markdown table.
set -uo pipefail
build=${1:-build}
py=${PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "$0")/.." && pwd)
export GX_BENCH_THREADS=${GX_BENCH_THREADS:-$(nproc)}
export GX_BENCH_SECONDS=${GX_BENCH_SECONDS:-1}
export GX_BENCH_UDA_BANK=${GX_BENCH_UDA_BANK:-2048}
unset OMP_NUM_THREADS OPENBLAS_NUM_THREADS MKL_NUM_THREADS
if [ ! -x "$build/bench_uda" ]; then
  echo "bench_uda.sh: $build/bench_uda not built (make BUILD=$build bench-uda)" >&2
  exit 1
fi
have_torch=0
"$py" -c 'import torch' 2>/dev/null && have_torch=1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
: > "$tmp/c.tsv"; : > "$tmp/t.tsv"; : > "$tmp/t.err"
commit=$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git -C "$here" diff --quiet HEAD 2>/dev/null; then commit="$commit (+ uncommitted changes)"; fi
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
date_start=$(date -u '+%Y-%m-%d %H:%M UTC')
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
echo "| case | batch | C ms | torch ms | ratio | C images/s | torch images/s | C arena | C peak RSS | torch peak RSS |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
awk -F'\t' 'function mib(b) { return (b == "n/a" || b == "") ? "n/a" : sprintf("%.0f MiB", b / 1048576) }
  FILENAME == ARGV[1] && $1 == "row" { k = $2 SUBSEP $3; n++; key[n] = k; c[k] = $0 }
  FILENAME == ARGV[2] && $1 == "row" { t[$2 SUBSEP $3] = $0 }
  END { for (i = 1; i <= n; i++) { k = key[i]; split(c[k], a, "\t"); tm = "n/a"; tips = "n/a"; trss = "n/a"; r = "n/a"
          if (k in t) { split(t[k], b, "\t"); tm = b[4]; tips = b[5]; trss = mib(b[7]); r = sprintf("%.2f", b[4] / a[4]) }
          printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", a[2], a[3], a[4], tm, r, a[5], tips, mib(a[6]), mib(a[7]), trss } }' \
  "$tmp/c.tsv" "$tmp/t.tsv"
echo
echo "ratio = torch time / engine time (> 1: the engine is faster). predict = eval forward with the"
echo "target BN set, softmax, entropy, argmax (gx_uda_predict). train = galaxy-train uda's step at"
echo "36+36 (source CE; target + 2 views: ES and AC against a full bank of $GX_BENCH_UDA_BANK slots;"
echo "lambda 0.005; backward; SGD Nesterov); images/s counts the 72 source + target images."
