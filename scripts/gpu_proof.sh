#!/usr/bin/env bash
# gpu_proof.sh [tests|bench|all] — the CUDA proof, run ON the GPU machine in one
# device call (issue 10; kernels/cuda/README.md, "Proof in a GPU session").
#
# Prepare on the dev box first: scripts/gpu_bundle.sh (writes .gpu/). Then, with
# the device tool:   run  command="scripts/gpu_proof.sh all"  carry=[".gpu"]
# (one call: a machine stays warm only ~30 s between calls, and a new start
# costs minutes of the session's ~30).
#
#   tests  .gpu/bin/test_cuda_host (bodies on the CPU), .gpu/bin/test_cuda
#          (every launcher against the CPU op on the GPU),
#          .gpu/bin/test_cuda_dispatch (the gx ops, the models and the trainers
#          with their tensors on the device against the CPU), then test_cuda
#          under compute-sanitizer --tool memcheck
#   bench  bench/gpu/bench_torch.py --device cuda with the image's python3 (the
#          PyTorch side of `make bench-gpu`), then .gpu/bin/bench_gx_gpu (ours)
#          and bench/gpu/compare.py (the table with the ratios), then galaxyd
#          end to end: scripts/bench_serve.sh over .gpu/bin with BENCH_DEVICE=cuda
#          (the bundled models on the device; galaxy-loadgen on loopback: the
#          single-image p50/p99 at one connection, throughput at 16 and 64)
#   all    both (default)
#
# Everything goes to $OUT (the device tool brings back at most 8 files):
#   env.txt  nvidia-smi, the libraries the binaries resolved, the bundle's MANIFEST
#   test_cuda.txt (test_cuda_host's output, then test_cuda's)  test_cuda_dispatch.txt
#   memcheck.txt  torch.jsonl  galaxyd.jsonl
#   bench.txt  bench_torch's table, then compare.py's, then bench_serve.sh's
#   summary.txt  one line per stage: exit status and seconds
# Stage time limits (seconds, environment): T_TESTS (240), T_MEMCHECK (240),
# T_BENCH (420), T_SERVE (150); BENCH_ARGS (extra bench_torch.py flags, e.g.
# "--compile off"); SERVE_SECONDS (bench_serve.sh's seconds per run, default 5).
set -u

what=${1:-all}
case "$what" in tests|bench|all) ;; *) echo "usage: $0 [tests|bench|all]" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-proof-out}
mkdir -p "$OUT"
T_TESTS=${T_TESTS:-240}
T_MEMCHECK=${T_MEMCHECK:-240}
T_BENCH=${T_BENCH:-420}
T_SERVE=${T_SERVE:-150}
BENCH_ARGS=${BENCH_ARGS:-}
PY=${PY:-python3}

# stage NAME LIMIT FILE CMD...: runs CMD with a time limit, output to $OUT/FILE,
# and appends "NAME rc N, S s" to summary.txt.
stage() {
    local name=$1 limit=$2 file=$3; shift 3
    local t0=$SECONDS rc
    echo "== $name (limit ${limit}s) -> $OUT/$file"
    timeout "$limit" "$@" >> "$OUT/$file" 2>&1
    rc=$?
    echo "$name rc $rc, $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
    tail -n 5 "$OUT/$file"
}

# cuda_lib_dirs: where the image keeps cudart/cuBLAS (the toolkit's lib64, or
# the pip wheels PyTorch uses).
cuda_lib_dirs() {
    local d
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
        [ -e "$d/libcublas.so.13" ] && printf ':%s' "$d"
    done
    "$PY" - <<'EOF' 2>/dev/null
import glob, os
try:
    import nvidia
    for p in nvidia.__path__:
        for d in sorted(glob.glob(os.path.join(p, "*", "lib"))):
            if glob.glob(os.path.join(d, "libcublas*.so*")) or glob.glob(os.path.join(d, "libcudart*.so*")):
                print(":" + d, end="")
except Exception:
    pass
EOF
}

: > "$OUT/summary.txt"
{
    date -u +%Y-%m-%dT%H:%M:%SZ
    nvidia-smi 2>&1 || echo "nvidia-smi failed"
    echo; cat .gpu/MANIFEST 2>&1
} > "$OUT/env.txt"

# The bundle's binaries travel packed (gpu_bundle.sh: the carry limit).
if [ -f .gpu/bin.tar.xz ] && [ ! -x .gpu/bin/test_cuda ]; then
    tar -xJf .gpu/bin.tar.xz -C .gpu
fi

# The bundle's libraries serve both halves (bench_gx_gpu needs them too).
if [ -f .gpu/lib.tar.xz ]; then
    lib=$(mktemp -d)
    tar -xJf .gpu/lib.tar.xz -C "$lib"
    export LD_LIBRARY_PATH="$lib$(cuda_lib_dirs)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    { echo; echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"; ldd .gpu/bin/test_cuda; } >> "$OUT/env.txt" 2>&1
fi

if [ "$what" != bench ]; then
    if [ ! -x .gpu/bin/test_cuda ]; then
        echo "tests: .gpu/bin/test_cuda missing: run scripts/gpu_bundle.sh on the dev box and carry .gpu" \
            | tee -a "$OUT/summary.txt"
    else
        : > "$OUT/test_cuda.txt"
        stage test_cuda_host "$T_TESTS" test_cuda.txt .gpu/bin/test_cuda_host
        stage test_cuda "$T_TESTS" test_cuda.txt .gpu/bin/test_cuda
        stage test_cuda_dispatch "$T_TESTS" test_cuda_dispatch.txt .gpu/bin/test_cuda_dispatch
        cs=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
        if [ -n "$cs" ]; then
            stage memcheck "$T_MEMCHECK" memcheck.txt "$cs" --tool memcheck --leak-check full \
                --error-exitcode 1 .gpu/bin/test_cuda
        else
            echo "memcheck: compute-sanitizer not found" | tee -a "$OUT/summary.txt"
        fi
    fi
fi

if [ "$what" != tests ]; then
    # bench_torch.py writes one JSON object per measurement on stdout and its
    # table on stderr: keep them apart.
    t0=$SECONDS
    echo "== bench_torch (limit ${T_BENCH}s) -> $OUT/torch.jsonl, $OUT/torch.txt"
    # shellcheck disable=SC2086
    timeout "$T_BENCH" "$PY" bench/gpu/bench_torch.py --device cuda $BENCH_ARGS \
        > "$OUT/torch.jsonl" 2> "$OUT/bench.txt"
    rc=$?
    echo "bench_torch rc $rc, $((SECONDS - t0)) s, $(wc -l < "$OUT/torch.jsonl") rows" | tee -a "$OUT/summary.txt"
    tail -n 30 "$OUT/bench.txt"
    if [ -x .gpu/bin/bench_gx_gpu ]; then
        t0=$SECONDS
        echo "== bench_gx_gpu (limit ${T_BENCH}s) -> $OUT/galaxyd.jsonl"
        timeout "$T_BENCH" .gpu/bin/bench_gx_gpu > "$OUT/galaxyd.jsonl" 2>> "$OUT/bench.txt"
        rc=$?
        echo "bench_gx_gpu rc $rc, $((SECONDS - t0)) s, $(wc -l < "$OUT/galaxyd.jsonl") rows" | tee -a "$OUT/summary.txt"
        { echo; echo "== ours / PyTorch"; "$PY" bench/gpu/compare.py "$OUT/torch.jsonl" "$OUT/galaxyd.jsonl"; } \
            | tee -a "$OUT/bench.txt"
    else
        echo "bench_gx_gpu: .gpu/bin/bench_gx_gpu missing (run scripts/gpu_bundle.sh)" | tee -a "$OUT/summary.txt"
    fi
    if [ -x .gpu/bin/galaxyd ]; then
        { echo; echo "== galaxyd end to end on the device (scripts/bench_serve.sh)"; } >> "$OUT/bench.txt"
        stage serve "$T_SERVE" bench.txt env BENCH_DEVICE=cuda BENCH_SECONDS="${SERVE_SECONDS:-5}" \
            PYTHON="$PY" scripts/bench_serve.sh .gpu/bin
    else
        echo "serve: .gpu/bin/galaxyd missing (run scripts/gpu_bundle.sh)" | tee -a "$OUT/summary.txt"
    fi
fi
cat "$OUT/summary.txt"
