#!/usr/bin/env bash
# run_tests.sh BUILD [EMU_BUILD] — runs every test binary in BUILD (and
# EMU_BUILD/test_cuda_dispatch: the dispatch tests on the host emulation of the
# CUDA backend, mk/cuda_emu.mk) and prints one closing line
# "all: N passed, N failed" summing them (the line CI reads).
# Output goes to stdout through a temp file (not tee /dev/stderr: reopening
# /dev/stderr truncates a log file that stderr is redirected to).
set -uo pipefail
build=${1:-build}
emu=${2:-}
# Idle OpenMP workers sleep instead of spinning: on 2 shared cores a spinning
# team slows every other test process (the dispatch tests on the host
# emulation ran 5x slower with libgomp's default active wait).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
total_pass=0; total_fail=0; status=0
log=$(mktemp); trap 'rm -f "$log"' EXIT
# test_cuda_dispatch: the ops and models on device tensors against the CPU; on a
# machine without a GPU (CI) every test prints "<name>: skipped: no GPU (why)".
exes=("$build/test_unit" "$build/test_grad" "$build/test_cuda_dispatch")
[ -n "$emu" ] && exes+=("$emu/test_cuda_dispatch")
for exe in "${exes[@]}"; do
  echo "== $exe"
  "$exe" 2>&1 | tee "$log"; rc=${PIPESTATUS[0]}
  out=$(tail -n 1 "$log")
  if [[ $out =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    total_pass=$((total_pass + BASH_REMATCH[1])); total_fail=$((total_fail + BASH_REMATCH[2]))
  else
    echo "run_tests.sh: $exe ended without a summary (crashed? rc=$rc)"
    total_fail=$((total_fail + 1))
  fi
  [ "$rc" -ne 0 ] && status=1
done
# Black-box tests of the binaries (pytest, Debian's python3): tests/cli (galaxy-train
# kill -9 + resume), tests/daemon (galaxyd over HTTP) and tests/browser (the dashboard in
# headless Chromium), against the binaries of $build (and galaxy-train of $emu);
# then tests/daemon against galaxyd of $emu (serving on the emulated device).
# run_pytest LABEL ENV... -- DIRS...: one pytest pass, its counts added to the totals.
run_pytest() {
  local label=$1; shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  echo "== pytest $* ($label)"
  env "${envs[@]}" /usr/bin/python3 -m pytest -q -p no:cacheprovider "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]} summary p f
  summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed|error)' "$log" | tail -n 1)
  p=$(grep -oE '[0-9]+ passed' <<<"$summary" | grep -oE '[0-9]+' || echo 0)
  f=$(grep -oE '[0-9]+ (failed|errors?)' <<<"$summary" | awk '{s += $1} END {print s + 0}')
  [ -z "$f" ] && f=0
  total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "run_tests.sh: pytest exited $rc without failures counted"; total_fail=$((total_fail + 1))
  fi
  [ "$rc" -ne 0 ] && status=1
}
pydirs=()
for d in tests/cli tests/daemon tests/browser; do [ -d "$d" ] && pydirs+=("$d"); done
# GALAXYD_EMU_BUILD: galaxy-train built over the emulated CUDA backend
# (tests/cli/test_device_flag.py trains on its "device").
[ ${#pydirs[@]} -gt 0 ] && run_pytest "GALAXYD_BUILD=$build GALAXYD_EMU_BUILD=$emu" \
  GALAXYD_BUILD="$build" GALAXYD_EMU_BUILD="$emu" -- "${pydirs[@]}"
# tests/daemon once more against galaxyd built over the emulation: its default
# --device auto finds the emulated GPU, so every route runs on device tensors
# (galaxy-synth and galaxy-train from $build: the offline scorer is the CPU's).
if [ -n "$emu" ] && [ -x "$emu/galaxyd" ] && [ -d tests/daemon ]; then
  run_pytest "galaxyd on the emulated device: GALAXYD_BUILD=$emu GALAXYD_DEVICE=cuda:0" \
    GALAXYD_BUILD="$emu" GALAXYD_TRAIN_BUILD="$build" GALAXYD_DEVICE=cuda:0 -- tests/daemon
fi
echo "all: $total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ] && [ "$status" -eq 0 ]
