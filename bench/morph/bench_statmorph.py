#!/usr/bin/env python3
"""bench_statmorph.py — the statmorph side of `make bench-morph`.

  prepare FITS_DIR OUT.f32      r-band planes of galaxy-synth's --fits output
                                -> N x 64 x 64 float32 (raw, little-endian)
  time CUTOUTS.f32 M            statmorph 0.7.2 on the first M cutouts, each
                                segmented with the recipe of spec/morphology.md
                                (tests/morph/gen_morph_fixtures.recipe_segmap),
                                prints "statmorph_ms_per_cutout X" and the
                                segmentation share.
Needs the statmorph environment (see tests/morph/gen_morph_fixtures.py).
"""
import os
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "morph"))


def prepare(fits_dir, out):
    from astropy.io import fits
    names = sorted(f for f in os.listdir(fits_dir) if f.endswith(".fits"))
    cube = np.stack([fits.getdata(os.path.join(fits_dir, f))[1].astype("<f4") for f in names])
    cube.tofile(out)
    print(f"prepared {len(names)} cutouts {cube.shape[1]}x{cube.shape[2]} -> {out}")


def time_statmorph(path, m):
    import statmorph
    from gen_morph_fixtures import recipe_segmap
    cube = np.fromfile(path, dtype="<f4").reshape(-1, 64, 64)[:m]
    t_seg = t_all = 0.0
    done = 0
    for img in cube:
        t0 = time.perf_counter()
        seg = recipe_segmap(img)
        t1 = time.perf_counter()
        if seg is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                statmorph.SourceMorphology(img, seg.astype(np.int32), 1, gain=1.0)
        t2 = time.perf_counter()
        t_seg += t1 - t0
        t_all += t2 - t0
        done += 1
    print(f"statmorph {statmorph.__version__}: {done} cutouts, segmentation {1e3 * t_seg / done:.2f} ms/cutout")
    print(f"statmorph_ms_per_cutout {1e3 * t_all / done:.3f}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "prepare":
        prepare(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "time":
        time_statmorph(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(__doc__)
