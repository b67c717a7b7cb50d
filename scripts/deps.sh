#!/usr/bin/env bash
# deps.sh — installs what galaxyd needs, idempotently (nothing happens when
# everything is present). Profiles:
#   build   compiler, OpenBLAS, jansson, libpng, libjpeg-turbo, cfitsio, zlib, HDF5, SQLite,
#           libmicrohttpd: what `make` and `make test` need; clang + libFuzzer runtime for
#           the fuzz smoke run that `make test` includes; Debian's python3 with pytest,
#           requests, PyYAML and jsonschema for the daemon's HTTP tests; Chromium, its
#           driver and Selenium for the dashboard's browser test, Chart.js for its charts
#   bench   + PyTorch, NumPy, PIL, astropy, h5py: benchmarks, fixture regeneration
#   all     every profile
# Runs apt-get only for missing packages, and `apt-get update` at most once.
set -euo pipefail
profile=${1:-build}

build_pkgs=(gcc make pkg-config libopenblas-openmp-dev libjansson-dev libpng-dev libjpeg62-turbo-dev libcfitsio-dev zlib1g-dev libhdf5-dev
            libsqlite3-dev sqlite3 libmicrohttpd-dev
            clang libclang-rt-14-dev
            python3 python3-pytest python3-requests python3-yaml python3-jsonschema
            chromium chromium-driver python3-selenium libjs-chart.js)
bench_pkgs=(python3 python3-torch python3-numpy python3-pil python3-astropy python3-h5py)

case "$profile" in
  build) want=("${build_pkgs[@]}") ;;
  bench) want=("${build_pkgs[@]}" "${bench_pkgs[@]}") ;;
  all)   want=("${build_pkgs[@]}" "${bench_pkgs[@]}") ;;
  *) echo "deps.sh: unknown profile '$profile' (build|bench|all)" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps.sh: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
