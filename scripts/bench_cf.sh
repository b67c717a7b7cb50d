#!/usr/bin/env bash
# bench_cf.sh BUILD — the CF-INN (default config, 64x64) on the engine
# (BUILD/bench_cf) beside the same work on tests/models/cfinn_ref.py's PyTorch
# modules (bench/cf/ref_cf.py), same thread count: classify images/s at batch
# 1 and 32, a training step at batch 32, the latency of a full 10-class
# counterfactual grid (p50/p99 over GX_BENCH_CF_RUNS, default 100), and where
# the grid's time goes (phase medians). Every case runs in its own process on
# each side (engine first, then torch), so peak RSS is per case. Prints
# markdown tables. The engine's grid rows also give process CPU time, the
# figure to compare on a machine shared with other work.
set -uo pipefail
# shellcheck source=bench_lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/bench_lib.sh" "$@"
export GX_BENCH_THREADS=${GX_BENCH_THREADS:-$(nproc)}
export GX_BENCH_SECONDS=${GX_BENCH_SECONDS:-1}
export GX_BENCH_CF_RUNS=${GX_BENCH_CF_RUNS:-100}
unset OMP_NUM_THREADS OPENBLAS_NUM_THREADS MKL_NUM_THREADS
# galaxyd and galaxy-train run with OMP_WAIT_POLICY=passive unless told
# otherwise (tools/gx_tool_omp.h), so the grid is measured that way too, on
# both sides. An explicit OMP_WAIT_POLICY is kept; GX_OMP_KEEP_DEFAULT=1
# measures libgomp's default (spin, then sleep: at 2 threads on a loaded
# 2-core machine the grid then takes seconds, not milliseconds).
if [ -z "${OMP_WAIT_POLICY:-}" ] && [ -z "${GX_OMP_KEEP_DEFAULT:-}" ]; then
  export OMP_WAIT_POLICY=passive
fi
bench_need bench-cf bench_cf
bench_have_torch
bench_tmp
: > "$tmp/c.tsv"; : > "$tmp/t.tsv"; : > "$tmp/t.err"

model=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
bench_stamp

# One case on both sides, appending the rows to c.tsv / t.tsv.
run_case() {
  echo "bench_cf.sh: $* (engine)" >&2
  "$build/bench_cf" "$@" >> "$tmp/c.tsv" || echo "bench_cf.sh: engine $* failed" >&2
  if [ "$have_torch" = 1 ]; then
    echo "bench_cf.sh: $* (torch)" >&2
    "$py" "$here/bench/cf/ref_cf.py" "$@" >> "$tmp/t.tsv" 2>> "$tmp/t.err" || cat "$tmp/t.err" >&2
  fi
}
# GX_BENCH_CF_CASES: a subset, e.g. "classify:1 cfgrid" (case:batch).
for c in ${GX_BENCH_CF_CASES:-classify:1 classify:32 train:32 cfgrid cfphases}; do
  # shellcheck disable=SC2086  # case and batch are two arguments
  run_case ${c/:/ }
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

if [ "$have_torch" = 1 ]; then
  tver=$("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null)
  tblas=$("$py" -c 'import re, torch; m = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show()); print(m.group(1) if m else "unknown")' 2>/dev/null)
else
  tver="not installed"; tblas="n/a"
fi
echo "== CF-INN at 64x64, default config (d 64, d1 16): engine beside PyTorch"
echo "date:     $date_start, commit $commit"
echo "machine:  ${model:-unknown}, nproc $(nproc)"
echo "threads:  $GX_BENCH_THREADS (both sides); ${GX_BENCH_SECONDS} s per throughput case, median; grid: $GX_BENCH_CF_RUNS runs after 2 warm-ups"
echo "torch:    ${tver} (BLAS_INFO=${tblas}); engine: OpenBLAS (OpenMP build)"
echo "load avg: $load_before before, $load_after after (other work on the machine skews timings)"
echo "OpenMP:   OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset, the libgomp default (GX_OMP_KEEP_DEFAULT)}"
echo
bench_rows_table "$tmp/c.tsv" "$tmp/t.tsv"
echo
echo "| counterfactual grid (1 image, 10 targets) | p50 ms | p99 ms | mean ms | CPU p50 ms | runs | peak RSS |"
echo "|---|---:|---:|---:|---:|---:|---:|"
awk -F'\t' '$1 == "lat" { printf "| %s | %s | %s | %s | %s | %s | %.0f MiB |\n", side, $4, $5, $6, ($10 == "" ? "n/a" : $10), $9, $8 / 1048576 }' side=engine "$tmp/c.tsv"
awk -F'\t' '$1 == "lat" { printf "| %s | %s | %s | %s | %s | %s | %.0f MiB |\n", side, $4, $5, $6, ($10 == "" ? "n/a" : $10), $9, $8 / 1048576 }' side=torch "$tmp/t.tsv"
awk -F'\t' 'FILENAME == ARGV[1] && $1 == "lat" { c = $4 } FILENAME == ARGV[2] && $1 == "lat" { t = $4 }
  END { if (c != "" && t != "") printf "\nratio (torch p50 / engine p50): %.2f; goal: engine p50 <= 50 ms: %s\n", t / c, (c <= 50 ? "met" : "NOT met") }' \
  "$tmp/c.tsv" "$tmp/t.tsv"
for side in engine torch; do
  f="$tmp/c.tsv"; [ "$side" = torch ] && f="$tmp/t.tsv"
  grep -q '^phase' "$f" || continue
  echo
  echo "| grid phase ($side) | median ms | CPU median ms |"
  echo "|---|---:|---:|"
  awk -F'\t' '$1 == "phase" { printf "| %s | %s | %s |\n", $2, $4, ($5 == "" ? "n/a" : $5) }' "$f"
done
echo
echo "ratio = torch time / engine time (> 1: the engine is faster). classify = encoder, flow with"
echo "log|det|, nearest mean, softmax, nll (gx_cf_classify). train = forward with noise 0.05 and the"
echo "decoder, IB + MMD + SSIM/L1 losses, backward, clip 8, Adam (galaxy-train's step). The grid runs"
echo "gx_cf_counterfactuals (engine) and the same algorithm in ref_cf.py (torch); its phases are"
echo "timed on a re-assembly from the public pieces (engine: the alpha rule, microseconds, not timed)."
echo "C arena = activation arena high-water. CPU = process CPU time (all threads): with 1 thread the"
echo "work itself, without the time other processes held the core."
