#!/usr/bin/env python3
"""gen_dataset_fixtures.py — writes the small Galaxy10-layout HDF5 fixtures
read by tests/unit/test_dataset.c, and the CSV fuzz seeds.

  tests/fixtures/io/galaxy10_small.h5  24 images 12x16 (non-square on purpose, so a
      height/width swap fails), the real Galaxy10 DECaLS key names and dtypes
      (images uint8 NxHxWx3, ans uint8, ra/dec/redshift/pxscale float64) plus the
      synthetic generator's extras (spec/synth.md "Output"); labels i % 11 (Lens
      included); redshift NaN for i % 4 == 1.
  tests/fixtures/io/galaxy10_plain.h5  the same without extras, labels i % 10.
  tests/fixtures/io/csv/*.csv          seeds for tests/fuzz/fuzz_csv.c.

Every value is a closed-form function of the index so the C test recomputes it
(keep these formulas in sync with test_dataset.c). Run with /usr/bin/python3
(h5py); output is deterministic.
"""
import os
import numpy as np
import h5py

N, H, W = 24, 12, 16
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "io")


def base_arrays(n_label_classes):
    i = np.arange(N)
    y = np.arange(H)[None, :, None, None]
    x = np.arange(W)[None, None, :, None]
    c = np.arange(3)[None, None, None, :]
    images = ((i[:, None, None, None] * 37 + y * 11 + x * 3 + c * 101) % 256).astype(np.uint8)
    z = 0.01 * (i + 1)
    z[i % 4 == 1] = np.nan  # missing spectroscopic redshift, as in the real file
    return {
        "images": images,
        "ans": (i % n_label_classes).astype(np.uint8),
        "ra": (150.0 + 0.5 * i).astype(np.float64),
        "dec": (-2.0 + 0.25 * i).astype(np.float64),
        "redshift": z.astype(np.float64),
        "pxscale": np.full(N, 0.262, dtype=np.float64),
    }


def extras():
    i = np.arange(N)
    f = lambda a: np.asarray(a, dtype=np.float32)
    return {
        "domain": (i % 3).astype(np.uint8),
        "spec_selected": (i % 2 == 0).astype(np.uint8),
        "mag_r": f(16.0 + 0.25 * i),
        "color_gr": f(0.5 + 0.01 * i),
        "r_eff_arcsec": f(1.0 + 0.1 * i),
        "sersic_n": f(1.0 + 0.125 * i),
        "axis_ratio": f(0.2 + 0.03 * i),
        "position_angle": f(7.5 * i),
    }


def write(path, arrays, meta=None):
    with h5py.File(path, "w", track_order=False) as h:
        for k, v in arrays.items():
            h.create_dataset(k, data=v)
        if meta:
            h.attrs["meta"] = meta
    print(path, os.path.getsize(path), "bytes")


def write_csv_seeds():
    seeds = {
        "basic.csv": "file,label,ra,dec,redshift,domain\na.png,0,150.5,-2.0,0.05,0\nb.png,3,151,-1.5,,1\n",
        "names.csv": "\ufefffile,label\r\nx.jpg,Round Smooth\r\ny.jpg,edge_on_with_bulge\r\nz.jpg,LENS\r\n",
        "quoted.csv": 'label,"file",extra\n2,"dir/with,comma.png","say ""hi"""\n\n5,"multi\nline.png",x\n',
        "nan.csv": "redshift,file,label,ra,dec\nnan,p.fits,9,1e2,-0.5e1\nNaN,q.fits,1,0,0\n",
        "bad.csv": "file,label,redshift\na.png,Spiral,abc\n",
    }
    d = os.path.join(OUT, "csv")
    os.makedirs(d, exist_ok=True)
    for name, text in seeds.items():
        with open(os.path.join(d, name), "w", encoding="utf-8", newline="") as f:
            f.write(text)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    a = base_arrays(11)
    a.update(extras())
    write(os.path.join(OUT, "galaxy10_small.h5"), a,
          meta="gen_dataset_fixtures.py (synthetic-layout test fixture)")
    write(os.path.join(OUT, "galaxy10_plain.h5"), base_arrays(10))
    write_csv_seeds()
