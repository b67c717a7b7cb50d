#!/bin/sh
# scripts/bench_morph.sh BUILD [PYTHON] — morph/ vs statmorph on the same
# 64x64 cutouts rendered by galaxy-synth (all ten classes, four surveys).
# N cutouts for the C batch, M (<= N) for the one-to-one comparison:
# statmorph takes ~1-2 s per cutout, so M stays small. Set N/M in the
# environment to change them.
set -eu
BUILD=${1:-build}
PY=${2:-build-morph/venv/bin/python}
N=${N:-1000}
M=${M:-40}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$BUILD"/galaxy-synth --out "$TMP/b.h5" --n "$N" --size 64 --seed 21 \
    --survey decals,sdss,lsst-y1,lsst-y10 --balanced --fits "$TMP/fits" --quiet
if ! "$PY" -c "import statmorph" 2>/dev/null; then
    echo "bench-morph: statmorph not importable by $PY; C timings only" >&2
    echo "  (python3 -m venv build-morph/venv && build-morph/venv/bin/pip install statmorph==0.7.2)" >&2
    /usr/bin/python3 - "$TMP/fits" "$TMP/cut.f32" <<'PYEOF'
import os, struct, sys
import numpy as np
from astropy.io import fits
d = sys.argv[1]
names = sorted(f for f in os.listdir(d) if f.endswith(".fits"))
np.stack([fits.getdata(os.path.join(d, f))[1].astype("<f4") for f in names]).tofile(sys.argv[2])
PYEOF
    exec "$BUILD"/bench_morph "$TMP/cut.f32" "$M"
fi
"$PY" bench/morph/bench_statmorph.py prepare "$TMP/fits" "$TMP/cut.f32"
"$BUILD"/bench_morph "$TMP/cut.f32" "$M" "$PY"
