#!/usr/bin/env bash
# bench_wm.sh BUILD — WaveletMamba inference and training throughput on the
# engine (BUILD/bench_wm) beside the tests/ PyTorch implementation of the spec
# (bench/wm/ref_wm.py), same thread count, config by config (each side in its
# own process per config, so peak RSS is per config). Prints one markdown table.
set -uo pipefail
build=${1:-build}
py=${PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "$0")/.." && pwd)
export GX_BENCH_THREADS=${GX_BENCH_THREADS:-$(nproc)}
unset OMP_NUM_THREADS OPENBLAS_NUM_THREADS
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
: > "$tmp/c.tsv"; : > "$tmp/t.tsv"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for cfg in ${GX_BENCH_CONFIGS:-tiny small default}; do
  echo "bench_wm.sh: $cfg (engine)" >&2
  "$build/bench_wm" "$cfg" >> "$tmp/c.tsv"
  echo "bench_wm.sh: $cfg (torch)" >&2
  "$py" "$here/bench/wm/ref_wm.py" "$cfg" >> "$tmp/t.tsv" 2>> "$tmp/t.err" || cat "$tmp/t.err" >&2
done
echo "== WaveletMamba throughput at 64x64 ($GX_BENCH_THREADS threads both sides)"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$here" rev-parse --short HEAD 2>/dev/null), load avg $load_before before, $(cut -d' ' -f1-3 /proc/loadavg) after"
echo
echo "| config | pass | batch | C ms | torch ms | ratio | C images/s | torch images/s | C arena | C peak RSS | torch peak RSS |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
awk -F'\t' 'function mib(b) { return (b == "n/a" || b == "") ? "n/a" : sprintf("%.0f MiB", b / 1048576) }
  FILENAME == ARGV[1] && $1 == "row" { k = $2 SUBSEP $3 SUBSEP $4; n++; key[n] = k; c[k] = $0 }
  FILENAME == ARGV[2] && $1 == "row" { t[$2 SUBSEP $3 SUBSEP $4] = $0 }
  END { for (i = 1; i <= n; i++) { k = key[i]; split(c[k], a, "\t"); tm = "n/a"; tips = "n/a"; trss = "n/a"; r = "n/a"
          if (k in t) { split(t[k], b, "\t"); tm = b[5]; tips = b[6]; trss = mib(b[8]); r = sprintf("%.2f", b[5] / a[5]) }
          printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", a[2], a[3], a[4], a[5], tm, r, a[6], tips, mib(a[7]), mib(a[8]), trss } }' \
  "$tmp/c.tsv" "$tmp/t.tsv"
echo
echo "ratio = torch time / engine time (> 1: the engine is faster). Training = forward (train mode),"
echo "CE + log-redshift MSE, backward, AdamW step, on both sides. C arena = activation arena high-water."
