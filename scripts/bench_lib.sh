# bench_lib.sh — what the scripts/bench_*.sh benchmarks share; sourced, not run:
#
#   . "$(dirname "$0")/bench_lib.sh" "$@"
#
# sets build (the first argument, default build), py (PYTHON, default
# /usr/bin/python3), here (the repository) and bench_name (the script's file
# name, for messages), and defines:
#
#   bench_need TARGET BIN...   exits 1 unless every BUILD/BIN is built (the
#                              message names `make BUILD=... TARGET`)
#   bench_tmp                  a temp dir in $tmp, removed on exit together
#                              with a galaxyd still running (server_pid)
#   bench_have_torch [MOD...]  have_torch=1 when $py imports torch (and MODs)
#   bench_stamp                commit (with "(+ uncommitted changes)"),
#                              load_before and date_start for the report
#   bench_rows_table C T       the engine-beside-PyTorch markdown table of
#                              the "row" lines in C (engine) and T (torch)
#   kv KEY LINE                the value of KEY=value in LINE
#   bench_server_start NAME [VAR=VALUE...] [FLAGS...]
#                              galaxyd on a free loopback port (database
#                              $tmp/NAME.sqlite, output $tmp/NAME.out/.err,
#                              the environment VAR=VALUE and galaxyd FLAGS);
#                              sets server_pid and port; 1 when it died
#   bench_server_stop          stops it
# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables set here are the sourcing script's
build=${1:-build}
py=${PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bench_name=$(basename "$0")
server_pid=

bench_need() {
  local target=$1 b; shift
  for b in "$@"; do
    [ -x "$build/$b" ] || { echo "$bench_name: $build/$b not built (make BUILD=$build $target)" >&2; exit 1; }
  done
}

bench_cleanup() {
  [ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$tmp"
}

bench_tmp() {
  tmp=$(mktemp -d)
  trap bench_cleanup EXIT
}

# shellcheck disable=SC2120  # the extra modules are optional
bench_have_torch() {
  local mods=torch m
  for m in "$@"; do mods="$mods, $m"; done
  have_torch=0
  "$py" -c "import $mods" 2>/dev/null && have_torch=1
}

bench_stamp() {
  commit=$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)
  if ! git -C "$here" diff --quiet HEAD 2>/dev/null; then commit="$commit (+ uncommitted changes)"; fi
  load_before=$(cut -d' ' -f1-3 /proc/loadavg)
  date_start=$(date -u '+%Y-%m-%d %H:%M UTC')
}

# Rows "row<TAB>case<TAB>batch<TAB>ms<TAB>images/s<TAB>arena<TAB>peak RSS" (bytes or
# n/a), matched on (case, batch); engine order; n/a where torch has no row.
bench_rows_table() {
  echo "| case | batch | C ms | torch ms | ratio | C images/s | torch images/s | C arena | C peak RSS | torch peak RSS |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  awk -F'\t' 'function mib(b) { return (b == "n/a" || b == "") ? "n/a" : sprintf("%.0f MiB", b / 1048576) }
    FILENAME == ARGV[1] && $1 == "row" { k = $2 SUBSEP $3; n++; key[n] = k; c[k] = $0 }
    FILENAME == ARGV[2] && $1 == "row" { t[$2 SUBSEP $3] = $0 }
    END { for (i = 1; i <= n; i++) { k = key[i]; split(c[k], a, "\t"); tm = "n/a"; tips = "n/a"; trss = "n/a"; r = "n/a"
            if (k in t) { split(t[k], b, "\t"); tm = b[4]; tips = b[5]; trss = mib(b[7]); r = sprintf("%.2f", b[4] / a[4]) }
            printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", a[2], a[3], a[4], tm, r, a[5], tips, mib(a[6]), mib(a[7]), trss } }' \
    "$1" "$2"
}

kv() {   # kv KEY LINE -> value of KEY=value in LINE
  sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"
}

bench_server_start() {
  local name=$1 envs=()
  shift
  while [ $# -gt 0 ] && [[ $1 != -* && $1 == *=* ]]; do envs+=("$1"); shift; done
  [ -f "$tmp/web/index.html" ] || { mkdir -p "$tmp/web" && echo '<!doctype html><title>bench</title>' > "$tmp/web/index.html"; }
  env "${envs[@]}" "$build/galaxyd" --host 127.0.0.1 --port 0 --db "$tmp/$name.sqlite" --web "$tmp/web" \
      --access-log /dev/null "$@" > "$tmp/$name.out" 2> "$tmp/$name.err" &
  server_pid=$!
  port=
  for _ in $(seq 1 600); do
    port=$(sed -n 's/^galaxyd listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$tmp/$name.out" 2>/dev/null)
    [ -n "$port" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/$name.err" >&2; return 1; }
    sleep 0.1
  done
  [ -n "$port" ]
}

bench_server_stop() {
  kill -TERM "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; server_pid=
}
