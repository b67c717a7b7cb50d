#!/usr/bin/env bash
# bench.sh BUILD — runs BUILD/bench_kernels (the engine) and bench/ref_torch.py
# (PyTorch, same shapes, same thread count), op by op and alternating (engine,
# then torch, for each op: both sides of a ratio are measured minutes apart at
# most, under the same load), joins their tab-separated outputs on
# (op, shape, pass) and prints one markdown table, preceded by the machine,
# date, commit and BLAS in use. Called by `make bench` after building
# BUILD/bench_kernels.
#
# These are measurements, not tests: the script fails only when the C binary
# is missing. Without PyTorch the torch columns read n/a.
#
# Environment: GX_BENCH_THREADS (default nproc; both sides), GX_BENCH_SECONDS
# (measuring time per case and pass, default 1), GX_BENCH_OPS (comma-separated
# op names: sgemm,linear,conv2d,conv2d_dw,ssm_scan,sinkhorn_hk), PYTHON (default /usr/bin/python3), GX_BENCH_KEEP (a directory:
# keep the raw outputs there).
set -uo pipefail
build=${1:-build}
bin="$build/bench_kernels"
py=${PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "$0")/.." && pwd)

if [ ! -x "$bin" ]; then
  echo "bench.sh: $bin not found (run: make BUILD=$build bench)" >&2
  exit 1
fi

export GX_BENCH_THREADS=${GX_BENCH_THREADS:-$(nproc)}
export GX_BENCH_SECONDS=${GX_BENCH_SECONDS:-1}
# Each side sets its own thread count through its API; keep the libraries'
# own defaults from interfering with that.
unset OMP_NUM_THREADS OPENBLAS_NUM_THREADS MKL_NUM_THREADS

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ------------------------------------------------------------ the machine
model=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
blas_alt=$(update-alternatives --display libblas.so.3-x86_64-linux-gnu 2>/dev/null |
           sed -n 's/^ *link currently points to //p')
commit=$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git -C "$here" diff --quiet HEAD 2>/dev/null; then commit="$commit (+ uncommitted changes)"; fi
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

date_start=$(date -u '+%Y-%m-%d %H:%M UTC')

# -------------------------------------------------------------- the runs
have_torch=0
"$py" -c 'import torch' 2>/dev/null && have_torch=1
: > "$tmp/c.tsv"; : > "$tmp/c.err"; : > "$tmp/torch.tsv"; : > "$tmp/torch.err"
all_ops="sgemm linear conv2d conv2d_dw ssm_scan sinkhorn_hk"
ops=${GX_BENCH_OPS:-$all_ops}
for op in ${ops//,/ }; do
  echo "bench.sh: $op (engine)" >&2
  GX_BENCH_OPS=$op "$bin" >> "$tmp/c.tsv" 2>> "$tmp/c.err"
  if [ "$have_torch" = 1 ]; then
    echo "bench.sh: $op (torch)" >&2
    GX_BENCH_OPS=$op "$py" "$here/bench/ref_torch.py" >> "$tmp/torch.tsv" 2>> "$tmp/torch.err" ||
      echo "bench.sh: ref_torch.py failed on $op (stderr below)" >&2
  fi
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# The header comes after the runs so that progress lines (stderr) do not
# break it up.
echo "== galaxyd kernel benchmarks"
echo "date:     $date_start"
echo "machine:  ${model:-unknown}, nproc $(nproc)"
echo "commit:   $commit"
echo "threads:  $GX_BENCH_THREADS (both sides); ${GX_BENCH_SECONDS} s per case and pass, median of the reps"
echo "libblas:  ${blas_alt:-unknown} (libblas.so.3 alternative; the engine links -lopenblas directly)"

if [ "$have_torch" = 1 ]; then
  tv=$(awk -F'\t' '$1=="meta" && $2=="torch" {print $3; exit}' "$tmp/torch.tsv")
  tb=$(awk -F'\t' '$1=="meta" && $2=="torch_blas" {print $3; exit}' "$tmp/torch.tsv")
  echo "torch:    ${tv:-?} ($tb; resolved at run time through the libblas.so.3 alternative)"
else
  echo "torch:    not installed (python3-torch): torch columns are n/a"
fi
echo "load avg: $load_before before, $load_after after (other work on the machine skews timings)"
echo

# ---------------------------------------------------------------- the join
awk -F'\t' -v have_torch="$have_torch" '
function mib(b) { if (b == "" || b == "n/a") return "n/a"
                  return (b < 1048576) ? sprintf("%.0f KiB", b / 1024) : sprintf("%.1f MiB", b / 1048576) }
function num(x) { return (x == "") ? "n/a" : x }
FNR == 1 { file++ }
file == 1 && $1 == "peak"  { c_peak = $5; c_peak_ms = $4; c_peak_shape = $3 }
file == 1 && $1 == "case"  { last_shape[$2] = $3 }
file == 1 && $1 == "skip"  { skipped[$2 SUBSEP last_shape[$2]] = $3; n++; key[n] = ""
                             op[n] = $2; shp[n] = last_shape[$2]; pass[n] = "-"; why[n] = $3 }
file == 1 && $1 == "row"   { n++; k = $2 SUBSEP $3 SUBSEP $4; key[n] = k
                             op[n] = $2; shp[n] = $3; pass[n] = $4
                             cms[k] = $5; cips[k] = $6; cgf[k] = $7; cmem[k] = $8; creps[k] = $9 }
file == 2 && $1 == "peak"  { t_peak = $5; t_peak_ms = $4 }
file == 2 && $1 == "row"   { k = $2 SUBSEP $3 SUBSEP $4; nt++; tkey[nt] = k
                             top[nt] = $2; tshp[nt] = $3; tpass[nt] = $4
                             tms[k] = $5; tgf[k] = $7; tmem[k] = $8; treps[k] = $9 }
END {
  if (c_peak_shape != "" || t_peak != "")
  printf "sgemm peak %s: engine (gx_gemm -> cblas_sgemm) %s GFLOP/s (%s ms); torch.mm %s GFLOP/s (%s ms)\n\n",
         c_peak_shape, num(c_peak), num(c_peak_ms), (have_torch ? num(t_peak) : "n/a"), (have_torch ? num(t_peak_ms) : "n/a")
  print "| op | shape | pass | C ms | torch ms | ratio | C items/s | C GFLOP/s | torch GFLOP/s | C mem | torch mem | reps C/torch |"
  print "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for (i = 1; i <= n; i++) {
    k = key[i]
    if (pass[i] == "-") {
      # A case the engine could not run (a stub that aborts, or a crash):
      # still show the torch measurements of that shape.
      shown = 0
      for (j = 1; j <= nt; j++) {
        if (top[j] != op[i] || tshp[j] != shp[i]) continue
        tk = tkey[j]; shown = 1
        printf "| %s | %s | %s | skipped (%s) | %.3f | n/a | n/a | n/a | %s | n/a | %s | -/%s |\n",
               op[i], shp[i], tpass[j], why[i], tms[tk], tgf[tk], mib(tmem[tk]), treps[tk]
      }
      if (!shown) printf "| %s | %s | - | skipped (%s) | n/a | n/a | | | | | | |\n", op[i], (shp[i] == "" ? "?" : shp[i]), why[i]
      continue
    }
    t = (k in tms) ? tms[k] : "n/a"
    ratio = (t != "n/a" && cms[k] > 0) ? sprintf("%.2f", t / cms[k]) : "n/a"
    printf "| %s | %s | %s | %.3f | %s | %s | %.1f | %s | %s | %s | %s | %s/%s |\n",
           op[i], shp[i], pass[i], cms[k], (t == "n/a" ? t : sprintf("%.3f", t)), ratio,
           cips[k], cgf[k], ((k in tgf) ? tgf[k] : "n/a"), mib(cmem[k]),
           ((k in tmem) ? mib(tmem[k]) : "n/a"), creps[k], ((k in treps) ? treps[k] : "-")
  }
}' "$tmp/c.tsv" "$tmp/torch.tsv"

cat <<'EOF'

ratio = torch time / C time (> 1: the engine is faster). items = samples of the batch.
C mem: arena high-water of the op context (outputs, scratch, tape, saved tensors, gradients).
torch mem: output + tensors autograd saved (+ leaf grads), temporaries not counted (a lower bound).
FLOP formulas: bench/bench_kernels.c (fwd+bwd of linear/conv = 3x fwd; scan and Sinkhorn backward: n/a).
EOF

if grep -q GX_ASSERT "$tmp/c.err" 2>/dev/null; then
  echo
  echo "engine aborts (stubs or failures):"
  grep 'GX_ASSERT' "$tmp/c.err" | sed 's/^/  /'
fi
if [ -s "$tmp/torch.err" ]; then
  echo
  echo "ref_torch.py stderr:"
  sed 's/^/  /' "$tmp/torch.err" | tail -n 20
fi
if [ -n "${GX_BENCH_KEEP:-}" ]; then
  mkdir -p "$GX_BENCH_KEEP" && cp "$tmp"/*.tsv "$tmp"/*.err "$GX_BENCH_KEEP"/
fi
exit 0
