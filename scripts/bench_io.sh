#!/usr/bin/env bash
# bench_io.sh BUILD — decode throughput of io/ (BUILD/bench_io) next to PIL and
# astropy (bench/io/ref_io.py) on the same files, written by PIL/astropy into a
# temp dir. Prints one markdown table; a measurement, not a test.
set -uo pipefail
build=${1:-build}
py=${PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
if ! "$py" "$here/bench/io/ref_io.py" make "$tmp/img" 2> "$tmp/make.err"; then
  echo "bench_io.sh: could not write the images (PIL/astropy missing?):"; cat "$tmp/make.err"; exit 1
fi
"$build/bench_io" "$tmp/img" > "$tmp/c.tsv"
"$py" "$here/bench/io/ref_io.py" time "$tmp/img" > "$tmp/py.tsv" 2> "$tmp/py.err" || cat "$tmp/py.err"
echo "== io decode throughput (single thread, from memory, to float CHW in [0,1])"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$here" rev-parse --short HEAD 2>/dev/null), load avg $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| format | size | galaxyd images/s | PIL/astropy images/s | ratio |"
echo "|---|---:|---:|---:|---:|"
awk -F'\t' 'FILENAME == ARGV[1] && $1 == "row" { k = $2 SUBSEP $3; n++; key[n] = k; fmt[n] = $2; sz[n] = $3; c[k] = $4 }
  FILENAME == ARGV[2] && $1 == "row" { p[$2 SUBSEP $3] = $4 }
  END { for (i = 1; i <= n; i++) { k = key[i]; r = (k in p) ? sprintf("%.2f", c[k] / p[k]) : "n/a"
        printf "| %s | %dx%d | %.0f | %s | %s |\n", fmt[i], sz[i], sz[i], c[k], (k in p) ? sprintf("%.0f", p[k]) : "n/a", r } }' \
  "$tmp/c.tsv" "$tmp/py.tsv"
echo
echo "ratio = galaxyd / reference throughput (> 1: galaxyd is faster). Reference: PIL for PNG/JPEG,"
echo "astropy + numpy asinh stretch for FITS (bench/io/ref_io.py)."
