#!/usr/bin/env bash
# gpu_bundle.sh — prepares, on this (GPU-less) machine, what a GPU session needs
# to prove the CUDA backend in one short call (issue 10; kernels/cuda/README.md,
# "Proof in a GPU session").
#
# Why: the GPU machines lent to a session (the `device` tool) run an image with
# nvcc, PyTorch and the CUDA libraries, but without this project's Debian
# packages (OpenBLAS, SQLite, HDF5, ...) and without network access, and a
# session gets about 30 minutes of device time. So the test binaries are built
# here, with nvcc for sm_80/sm_90, and travel with the shared libraries they
# need that are not part of glibc or CUDA (bookworm's glibc 2.36 is older than
# the image's, so binaries built here run there).
#
# Writes .gpu/ (ignored by git; name it in the device run's `carry`):
#   .gpu/bin/test_cuda        every launcher against the CPU op, on the GPU
#   .gpu/bin/test_cuda_host   the kernels' bodies on the CPU (a sanity run)
#   .gpu/bin/test_cuda_dispatch  the gx ops, models and trainers on device tensors vs the CPU
#   .gpu/bin/bench_gx_gpu     our side of make bench-gpu (bench/gpu/bench_gx_gpu.c)
#   .gpu/bin/galaxyd, galaxy-loadgen, bench_serve_fwd
#                             galaxyd end to end on the device (scripts/bench_serve.sh
#                             with BENCH_DEVICE=cuda: HTTP latency and throughput)
#   .gpu/lib.tar.xz           the non-glibc, non-CUDA shared libraries they load
# The binaries travel packed too, as .gpu/bin.tar.xz (about 3 MB against 28 MB
# unpacked: each carries the same sm_80/sm_90 fatbins, and the device run's
# working tree, .gpu included, must stay under 64 MiB); gpu_proof.sh unpacks
# them into .gpu/bin there.
#   .gpu/MANIFEST             commit, nvcc, date, files, library list
# Then, on the GPU machine: scripts/gpu_proof.sh (see there).
#
# Environment: BUILD (default build-gpu: its own build directory, linked with
# --as-needed so that the binaries load only what they use), JOBS (default 2).
set -euo pipefail

BUILD=${BUILD:-build-gpu}
JOBS=${JOBS:-2}
DEST=.gpu

command -v nvcc >/dev/null || { echo "$0: nvcc not found: the CUDA objects cannot be built here" >&2; exit 2; }
cd "$(dirname "$0")/.."

bins="test_cuda test_cuda_host test_cuda_dispatch bench_gx_gpu galaxyd galaxy-loadgen bench_serve_fwd"
echo "== building in $BUILD: $bins (CUDA=1, --as-needed)"
# shellcheck disable=SC2046,SC2086  # one word per binary
make -j"$JOBS" BUILD="$BUILD" CUDA=1 LDFLAGS=-Wl,--as-needed $(printf "$BUILD/%s " $bins) >/dev/null

rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp/bin" "$DEST.tmp/lib"
for b in $bins; do cp "$BUILD/$b" "$DEST.tmp/bin/"; done

# gpu_bundle_libs BIN...: the resolved paths of every shared library the
# binaries load, minus glibc's own (the image has a newer glibc) and CUDA's
# (the image has its own toolkit and driver; cuBLAS alone is ~600 MB).
gpu_bundle_libs() {
    ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u | while read -r lib; do
        case "$(basename "$lib")" in
            libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|libresolv.so.*|ld-linux*) ;;
            libcuda.so.*|libcudart.so.*|libcublas.so.*|libcublasLt.so.*) ;;
            *) echo "$lib" ;;
        esac
    done
}
libs=$(gpu_bundle_libs "$DEST.tmp"/bin/*)
for lib in $libs; do cp -L "$lib" "$DEST.tmp/lib/"; done
tar -C "$DEST.tmp/lib" -cJf "$DEST.tmp/lib.tar.xz" .
rm -rf "$DEST.tmp/lib"

{
    echo "commit   $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- kernels tests/cuda || echo ' (+ uncommitted changes in kernels/ or tests/cuda/)')"
    echo "built    $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n)"
    echo "nvcc     $(nvcc --version | tail -n 1)"
    echo "glibc    $(ldd --version | head -n 1)"
    echo "needs    $(ldd "$DEST.tmp"/bin/test_cuda | awk '/libcu/ { print $1 }' | sort -u | tr '\n' ' ')(from the GPU machine)"
    echo "carried  $(for l in $libs; do basename "$l"; done | tr '\n' ' ')"
    (cd "$DEST.tmp" && sha256sum bin/* lib.tar.xz)
} > "$DEST.tmp/MANIFEST"
tar -C "$DEST.tmp" -cJf "$DEST.tmp/bin.tar.xz" bin
rm -rf "$DEST.tmp/bin"

rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
cat "$DEST/MANIFEST"
tree=$(git ls-files -z | xargs -0 du -cb | tail -n 1 | cut -f1)
dest=$(du -sb "$DEST" | cut -f1)
echo "== $DEST: $((dest / 1048576)) MiB, with the tracked tree $(((dest + tree) / 1048576)) MiB (a device run carries at most 64 MiB)"
[ $((dest + tree)) -le $((64 * 1048576)) ] || { echo "$0: too large to carry" >&2; exit 1; }
