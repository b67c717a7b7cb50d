#!/usr/bin/env python3
"""gen_morph_fixtures.py — statmorph reference values for tests/unit/test_morph.c.

Writes tests/fixtures/morph/morph_cases.safetensors:
  golden.image/segmap/mask/values  statmorph's own test image (slice.fits,
                                   162x162, shipped in the statmorph package)
                                   and statmorph's values on it, computed live;
  caseNN.image/segmap[/mask]/values  64x64 r-band cutouts rendered with
                                   build-morph/galaxy-synth across the ten
                                   classes and four surveys, noisy, noiseless
                                   and masked, segmented with the recipe of
                                   spec/morphology.md, measured by statmorph.
values are float64 in the order of metadata "stats" (flag last); metadata
"caseNN" describes each case (class, survey, kind).

statmorph needs numpy 2 / photutils >= 2 / scikit-image >= 0.25, newer than
Debian's (which torch 1.13 needs), so run this with a separate environment:

  /usr/bin/python3 -m venv build-morph/venv
  build-morph/venv/bin/pip install statmorph==0.7.2
  build-morph/venv/bin/python tests/morph/gen_morph_fixtures.py

CI never runs this script: the fixture is committed. It uses only numpy to
write safetensors (the format is an 8-byte header length, a JSON header
and the raw bytes), so it needs no torch.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import scipy.ndimage as ndi
import statmorph
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from photutils.segmentation import detect_sources

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from st_file import write_st_file  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "morph", "morph_cases.safetensors")

STATS = ["rpetro_circ", "rpetro_ellip", "r20", "r50", "r80", "concentration", "asymmetry",
         "smoothness", "gini", "m20", "gini_m20_bulge", "gini_m20_merger", "xc_centroid",
         "yc_centroid", "xc_asymmetry", "yc_asymmetry", "elongation_asymmetry",
         "orientation_asymmetry", "sky_mean", "sky_median", "sky_sigma", "flux_circ",
         "flux_ellip", "flag"]
SURVEYS = ["decals", "sdss", "lsst-y1", "lsst-y10"]


def save_safetensors(path, tensors, metadata):
    header, blobs, off = {}, [], 0
    # 8-byte dtypes first so every tensor is aligned to its element size.
    order = sorted(tensors, key=lambda k: (-tensors[k].dtype.itemsize, k))
    names = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.uint8): "U8",
             np.dtype(np.int32): "I32"}
    for key in order:
        a = np.ascontiguousarray(tensors[key])
        data = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[key] = {"dtype": names[a.dtype], "shape": list(a.shape),
                       "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_st_file(path, header, blobs)
    print(f"wrote {path} ({len(tensors)} tensors, {off} bytes)")


def recipe_segmap(image, mask=None):
    """spec/morphology.md: 3-sigma clipped mean + 1.5 sigma, > threshold,
    8-connected >= 5 px, largest, uniform_filter(10, reflect) > 0.5.
    Statistics in float64 (the C code does the same)."""
    data = image.astype(np.float64)
    good = np.isfinite(data)
    if mask is not None:
        good &= ~mask
    mean, _, std = sigma_clipped_stats(data[good], sigma=3.0, maxiters=10)
    thr = mean + 1.5 * std
    det = np.where(good, data, -np.inf)
    segm = detect_sources(det, thr, n_pixels=5)  # connectivity 8, pixels > thr
    if segm is None:
        return None
    label = int(np.argmax(segm.areas)) + 1
    seg = segm.data == segm.labels[label - 1]
    seg = ndi.uniform_filter(np.float64(seg), size=10) > 0.5
    return seg if seg.any() else None


def measure(image, segmap, mask):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = statmorph.SourceMorphology(image, segmap.astype(np.int32), 1, mask=mask, gain=1.0)
    return np.array([float(m[k]) for k in STATS], dtype=np.float64), m


def render(synth, tmp, seed, n, noise):
    out = os.path.join(tmp, f"s{seed}")
    cmd = [synth, "--out", out + ".h5", "--n", str(n), "--size", "64", "--seed", str(seed),
           "--survey", ",".join(SURVEYS), "--balanced", "--fits", out, "--quiet"]
    if not noise:
        cmd.append("--no-noise")
    subprocess.run(cmd, check=True)
    rows = [line.strip().split(",") for line in open(os.path.join(out, "catalog.csv"))][1:]
    for r in rows:
        img = fits.getdata(os.path.join(out, r[0]))[1].astype(np.float32)  # r band
        yield img, int(r[1]), SURVEYS[int(r[6])]


def star_mask(img, rng):
    """A masked 'foreground star': a disc of radius 3-5 px 10-20 px from the centre."""
    ny, nx = img.shape
    ang = rng.uniform(0, 2 * np.pi)
    d, r = rng.uniform(10, 20), rng.uniform(3, 5)
    y, x = np.mgrid[0:ny, 0:nx]
    cy, cx = ny / 2 + d * np.sin(ang), nx / 2 + d * np.cos(ang)
    return (x - cx) ** 2 + (y - cy) ** 2 < r * r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--synth", default=os.path.join(ROOT, "build-morph", "galaxy-synth"))
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    tensors, meta = {}, {"stats": ",".join(STATS), "statmorph": statmorph.__version__,
                         "generator": "tests/morph/gen_morph_fixtures.py"}

    # statmorph's own test image, with its segmap and mask.
    path = os.path.join(os.path.dirname(statmorph.__file__), "tests", "data", "slice.fits")
    with fits.open(path) as h:
        image = h[0].data.astype(np.float32)
        segmap = h[1].data.astype(np.int32)
        mask = np.bool_(h[2].data)
    vals, _ = measure(image, segmap, mask)
    tensors.update({"golden.image": image, "golden.segmap": segmap.astype(np.uint8),
                    "golden.mask": mask.astype(np.uint8), "golden.values": vals})

    rng = np.random.default_rng(9)
    cases, want = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        # noisy: one per (class, survey) until each class has two surveys.
        for img, cls, sv in render(args.synth, tmp, 11, 400, True):
            key = (cls, sv)
            if key in want or sum(1 for k in want if k[0] == cls) >= 2:
                continue
            seg = recipe_segmap(img)
            if seg is None:
                continue
            want[key] = 1
            cases.append((img, seg, None, f"class={cls} survey={sv} kind=noisy"))
        # masked: a star mask on noisy cutouts of six classes.
        done = set()
        for img, cls, sv in render(args.synth, tmp, 12, 200, True):
            if cls in done or len(done) >= 6:
                continue
            m = star_mask(img, rng)
            seg = recipe_segmap(img, m)
            if seg is None:
                continue
            done.add(cls)
            cases.append((img, seg, m, f"class={cls} survey={sv} kind=masked"))
        # noiseless: five classes.
        done = set()
        for img, cls, sv in render(args.synth, tmp, 13, 100, False):
            if cls in done or len(done) >= 5:
                continue
            seg = recipe_segmap(img)
            if seg is None:
                continue
            done.add(cls)
            cases.append((img, seg, None, f"class={cls} survey={sv} kind=clean"))

    t0 = time.time()
    for k, (img, seg, m, desc) in enumerate(cases):
        vals, _ = measure(img, seg, m)
        name = f"case{k:02d}"
        tensors[f"{name}.image"] = img
        tensors[f"{name}.segmap"] = seg.astype(np.uint8)
        if m is not None:
            tensors[f"{name}.mask"] = m.astype(np.uint8)
        tensors[f"{name}.values"] = vals
        meta[name] = desc
        print(f"{name} {desc:40s} flag={int(vals[-1])} C={vals[5]:.4f} A={vals[6]:.4f} "
              f"S={vals[7]:.4f} G={vals[8]:.4f} M20={vals[9]:.4f}")
    meta["ncases"] = len(cases)
    print(f"statmorph: {len(cases)} cutouts in {time.time() - t0:.1f} s")
    save_safetensors(args.out, tensors, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
