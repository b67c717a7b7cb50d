"""ref_io.py — the io benchmark's inputs and its Python reference.

  ref_io.py make DIR   writes the benchmark images into DIR: for sizes 64 and 256,
                       a smooth galaxy-like RGB scene with noise as PNG (8-bit RGB,
                       PIL), JPEG (quality 90, PIL) and FITS (3-plane float32 cube,
                       astropy) — written by independent tools, decoded by both sides.
  ref_io.py time DIR   decodes each file repeatedly with PIL / astropy into float32
                       CHW in [0,1] and prints "row<TAB>format<TAB>size<TAB>images/s".

What the reference does per image (comparable work to gx_image_decode):
  PNG/JPEG: Image.open(BytesIO).convert("RGB") -> float32 / 255 -> CHW.
  FITS:     fits.open(BytesIO) -> float32 data -> per-band asinh stretch with the
            band median as sky and Q = 8, alpha from the 99.5th percentile
            (what io/gx_image.h documents for the engine), clipped to [0,1].
Single-threaded on both sides: one request decodes one image.
"""
import io
import os
import sys
import time

import numpy as np

SIZES = (64, 256)
SECONDS = float(os.environ.get("GX_BENCH_SECONDS", "1"))


def scene(size, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size - 0.5
    r = np.sqrt((x / 0.8) ** 2 + y ** 2)
    gal = np.exp(-r / 0.08)
    bands = np.stack([gal * s for s in (0.6, 0.8, 1.0)])
    bands += rng.normal(0, 0.02, bands.shape)
    return np.clip(bands, 0, 1).astype(np.float32)


def make(d):
    from astropy.io import fits
    from PIL import Image
    os.makedirs(d, exist_ok=True)
    for s in SIZES:
        im = scene(s, s)
        rgb = (np.transpose(im, (1, 2, 0)) * 255 + 0.5).astype(np.uint8)
        Image.fromarray(rgb, "RGB").save(os.path.join(d, f"img{s}.png"))
        Image.fromarray(rgb, "RGB").save(os.path.join(d, f"img{s}.jpg"), quality=90)
        fits.PrimaryHDU(im * 1000.0 + 100.0).writeto(os.path.join(d, f"img{s}.fits"), overwrite=True)


def decode_pil(b):
    from PIL import Image
    a = np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def decode_fits(b):
    from astropy.io import fits
    with fits.open(io.BytesIO(b)) as h:
        a = np.asarray(h[0].data, dtype=np.float32)
    q = 8.0
    sky = np.median(a.reshape(3, -1), axis=1)[:, None, None]
    x = a - sky
    alpha = q * np.percentile(x, 99.5) / np.sinh(q)
    return np.clip(np.arcsinh(q * x / alpha) / q, 0, 1)


def rate(fn, b):
    fn(b)
    n, t0 = 0, time.perf_counter()
    while True:
        fn(b)
        n += 1
        dt = time.perf_counter() - t0
        if dt >= SECONDS and n >= 3:
            return n / dt


def timeit(d):
    for s in SIZES:
        for fmt, ext, fn in (("png", "png", decode_pil), ("jpeg", "jpg", decode_pil), ("fits", "fits", decode_fits)):
            with open(os.path.join(d, f"img{s}.{ext}"), "rb") as f:
                b = f.read()
            print(f"row\t{fmt}\t{s}\t{rate(fn, b):.1f}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("make", "time"):
        sys.exit("usage: ref_io.py make|time DIR")
    (make if sys.argv[1] == "make" else timeit)(sys.argv[2])
