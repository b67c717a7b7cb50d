#!/usr/bin/env bash
# bench_serve.sh BUILD — galaxyd's serving benchmark (`make bench-serve`, issue 5):
#
#   1. raw: BUILD/bench_serve_fwd times decode+preprocess of one 64x64 PNG and the
#      model's batched forward (gx_serve_model_predict) at batch 1 and --max-batch;
#   2. served: galaxyd on loopback, BUILD/galaxy-loadgen posting the same PNG over
#      1, 16 and 64 keep-alive connections (closed loop): throughput, p50/p99, status
#      counts, server RSS. The 1-connection run uses --batch-delay-us 1 (a lone
#      client has no one to wait for), the others galaxyd's defaults;
#   3. efficiency = served images/s at 64 connections / raw images/s at --max-batch;
#      per-request overhead = p50 at 1 connection - raw forward ms at batch 1
#      (HTTP + decode + preprocess + queue hand-off + JSON);
#   4. overload: open loop at 2x the measured 64-connection capacity: share of 503s,
#      p99 of the served (2xx) requests, server RSS sampled every 0.5 s (min/max).
#
# The model: MODELS (default models/default) when it holds a checkpoint, else a tiny
# checkpoint trained here (as the tests do; the table says which). Env knobs:
# BENCH_SECONDS (per run, default 5), BENCH_WARMUP (seconds of load before each run,
# default 1), BENCH_MAX_BATCH (default 32), PORT_HOST,
# BENCH_DEVICE (cpu|cuda|auto: galaxyd's and the raw forward's --device; unset =
# their default, auto), BENCH_TF32=1 (--tf32 on both). On the GPU machine
# scripts/gpu_proof.sh runs this with BENCH_DEVICE=cuda over the bundle's binaries;
# on a device the raw forward is also timed with --cuda-graphs off and on.
set -uo pipefail
# shellcheck source=bench_lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/bench_lib.sh" "$@"
secs=${BENCH_SECONDS:-5}
maxb=${BENCH_MAX_BATCH:-32}
# Seconds of load before each measured run: a fresh galaxyd on a device
# captures a CUDA graph for each padded batch size on first use (a few
# forward passes), which the warm-up absorbs.
warm=${BENCH_WARMUP:-1}
devflags=()
[ -n "${BENCH_DEVICE:-}" ] && devflags+=(--device "$BENCH_DEVICE")
[ "${BENCH_TF32:-0}" = 1 ] && devflags+=(--tf32)
bench_tmp
bench_need bench-serve galaxyd galaxy-loadgen bench_serve_fwd

# ---------------------------------------------------------------- the model
models=${MODELS:-$here/models/default}
model_note="bundled ($models)"
if ! ls "$models"/*.safetensors >/dev/null 2>&1; then
  echo "bench_serve.sh: no checkpoint in $models; training a tiny one (about a minute)" >&2
  "$build/galaxy-synth" --out "$tmp/s.h5" --n 240 --size 32 --seed 3 --balanced --quiet || exit 1
  "$build/galaxy-train" wavelet-mamba --config tiny --data "$tmp/s.h5" --db "$tmp/r.sqlite" --out "$tmp/ck" \
      --epochs 1 --batch 16 --accum 1 --set max_train=64 --quiet || exit 1
  mkdir -p "$tmp/models" && cp "$tmp/ck/best.safetensors" "$tmp/models/wavelet-mamba.safetensors"
  models=$tmp/models
  model_note="tiny test checkpoint (no bundled model found)"
fi
# The raw forward measured is the WaveletMamba's. With a cf-inn bundle in the
# directory, /v1/classify also runs the CF-INN's classification of each image
# (beside the forward; docs/serving.md), so the efficiency counts that work as
# serving overhead; MODELS=DIR with the WaveletMamba alone leaves it out.
ckpt="$models/wavelet-mamba.safetensors"
[ -f "$ckpt" ] || ckpt=$(ls "$models"/*.safetensors | head -n 1)

# ---------------------------------------------------------------- the cutout: a 64x64 RGB PNG
"$py" - "$tmp/cutout.png" <<'EOF' || exit 1
import math, random, struct, sys, zlib
rnd, S = random.Random(5), 64
px = bytearray()
for y in range(S):
    px.append(0)   # filter byte
    for x in range(S):
        f = math.exp(-math.hypot(x - 31.5, (y - 30.0) / 0.6) / 6.0)
        px += bytes(max(0, min(255, int(a * f + rnd.gauss(12, 4)))) for a in (230, 200, 160))
def chunk(k, d):
    return struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d) & 0xffffffff)
png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", S, S, 8, 2, 0, 0, 0))
       + chunk(b"IDAT", zlib.compress(bytes(px), 6)) + chunk(b"IEND", b""))
open(sys.argv[1], "wb").write(png)
EOF

rss_mib() {
  awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null
}

start_server() {   # start_server NAME FLAGS... -> sets server_pid, port
  local name=$1; shift
  bench_server_start "$name" --models "$models" --max-batch "$maxb" "${devflags[@]}" "$@"
}
loadgen() {   # loadgen ARGS... (url and body are filled in)
  "$build/galaxy-loadgen" --url "http://127.0.0.1:$port/v1/classify" --body "$tmp/cutout.png" \
      --content-type image/png --quiet "$@" | tail -n 1
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- 1. raw forward
echo "bench_serve.sh: raw forward ($ckpt)" >&2
raw=$("$build/bench_serve_fwd" "${devflags[@]}" "$ckpt" "$tmp/cutout.png" "$secs" 1 "$maxb") || exit 1
raw_device=$(kv name "$(grep '^device' <<<"$raw")")
prep_us=$(kv us "$(grep '^prepare' <<<"$raw")")
raw1=$(grep '^forward batch=1 ' <<<"$raw")
rawb=$(grep "^forward batch=$maxb " <<<"$raw")
raw1_ms=$(kv ms "$raw1"); raw1_ips=$(kv images_per_s "$raw1")
rawb_ms=$(kv ms "$rawb"); rawb_ips=$(kv images_per_s "$rawb")
# On a device, galaxyd's CUDA graphs (daemon/gx_serve_graph.c) against none:
# the same forward at padded sizes, eager then replayed (printed as is).
if [ "${raw_device#cuda}" != "$raw_device" ]; then
  gbs=(1)
  for b in 4 8 "$maxb"; do [ "$b" -le "$maxb" ] && [ "$b" -gt "${gbs[-1]}" ] && gbs+=("$b"); done
  for gr in off on; do
    echo "bench_serve.sh: raw forward, --cuda-graphs $gr" >&2
    "$build/bench_serve_fwd" "${devflags[@]}" --cuda-graphs "$gr" "$ckpt" "$tmp/cutout.png" "$secs" "${gbs[@]}" \
      | sed "s/^/graphs $gr: /" || exit 1
  done
fi

# ---------------------------------------------------------------- 2. served, closed loop
declare -A row
for c in 1 16 64; do
  echo "bench_serve.sh: served, $c connection(s)" >&2
  if [ "$c" = 1 ]; then start_server "c$c" --batch-delay-us 1 || exit 1
  else start_server "c$c" --max-queue 1024 || exit 1; fi
  out=$(loadgen --connections "$c" --duration "$secs" --warmup "$warm")
  row[$c]="$out rss_mib=$(rss_mib "$server_pid")"
  # galaxyd's own device line (stderr), e.g. "galaxyd: device: cuda:0 (...)".
  [ "$c" = 1 ] && served_device=$(sed -n 's/^galaxyd: \(warning: \)\{0,1\}device: \([^ ]*\).*/\2/p' "$tmp/c1.err" | head -n 1)
  bench_server_stop
done

cap=$(kv ok_rps "${row[64]}")
eff=$(awk -v s="$cap" -v r="$rawb_ips" 'BEGIN { printf "%.2f", (r > 0) ? s / r : 0 }')
overhead=$(awk -v p="$(kv p50_ms "${row[1]}")" -v f="$raw1_ms" 'BEGIN { printf "%.2f", p - f }')

# ---------------------------------------------------------------- 4. overload at 2x capacity
rate=$(awk -v c="$cap" 'BEGIN { r = 2 * c; if (r < 1) r = 1; printf "%.1f", r }')
echo "bench_serve.sh: overload, open loop at $rate requests/s (2x capacity)" >&2
start_server over --max-connections 1024 || exit 1
rss0=$(rss_mib "$server_pid")
: > "$tmp/rss.txt"
( while kill -0 "$server_pid" 2>/dev/null; do rss_mib "$server_pid" >> "$tmp/rss.txt"; echo >> "$tmp/rss.txt"; sleep 0.5; done ) &
sampler=$!
over=$(loadgen --connections 512 --rate "$rate" --duration $((2 * secs)) --warmup "$warm" --timeout 60)
kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
rss_range=$(awk 'NF { if (min == "" || $1 < min) min = $1; if ($1 > max) max = $1 } END { printf "%s-%s", min, max }' "$tmp/rss.txt")
bench_server_stop
total=$(kv requests "$over"); n503=$(kv status_503 "$over")
share=$(awk -v a="$n503" -v t="$total" 'BEGIN { printf "%.1f", (t > 0) ? 100 * a / t : 0 }')

# ---------------------------------------------------------------- report
echo "== galaxyd serving benchmark: POST /v1/classify, one 64x64 PNG, loopback"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$here" rev-parse --short HEAD 2>/dev/null), $(nproc) cores, load avg $load_before before, $(cut -d' ' -f1-3 /proc/loadavg) after"
echo "model: $model_note; max batch $maxb; $secs s per run after $warm s warm-up"
echo "device: raw forward on $raw_device, galaxyd on ${served_device:-?}${BENCH_TF32:+ (BENCH_TF32=$BENCH_TF32)}"
echo
echo "| mode | connections | images/s | p50 ms | p99 ms | 2xx | 503 | other | errors | server RSS |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '| raw forward, batch 1 | - | %s | %s | - | - | - | - | - | - |\n' "$raw1_ips" "$raw1_ms"
printf '| raw forward, batch %s | - | %s | %s | - | - | - | - | - | - |\n' "$maxb" "$rawb_ips" "$rawb_ms"
for c in 1 16 64; do
  r=${row[$c]}
  printf '| served | %s | %s | %s | %s | %s | %s | %s | %s | %s MiB |\n' "$c" "$(kv ok_rps "$r")" "$(kv p50_ms "$r")" \
    "$(kv p99_ms "$r")" "$(kv status_2xx "$r")" "$(kv status_503 "$r")" "$(kv status_other "$r")" "$(kv errors "$r")" \
    "$(kv rss_mib "$r")"
done
printf '| overload, offered %s/s | 512 (open loop) | %s | %s (2xx) | %s (2xx) | %s | %s | %s | %s | %s MiB at start, %s MiB sampled |\n' \
  "$rate" "$(kv ok_rps "$over")" "$(kv ok_p50_ms "$over")" "$(kv ok_p99_ms "$over")" "$(kv status_2xx "$over")" "$n503" \
  "$(kv status_other "$over")" "$(kv errors "$over")" "$rss0" "$rss_range"
echo
echo "serving efficiency at 64 connections: $eff (served $cap images/s / raw $rawb_ips images/s at batch $maxb; goal >= 0.9)"
echo "per-request overhead: $overhead ms (p50 at 1 connection - raw forward at batch 1; goal <= 0.5 ms);"
echo "  of which decode + preprocess of the PNG: $(awk -v u="$prep_us" 'BEGIN { printf "%.3f", u / 1000 }') ms"
echo "overload at 2x capacity: $share% answered 503 (Retry-After), p99 of served requests $(kv ok_p99_ms "$over") ms"
echo "latency counts from the scheduled send time in the open-loop run (no coordinated omission)."
