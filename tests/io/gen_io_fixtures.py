#!/usr/bin/python3
"""gen_io_fixtures.py — writes the image fixtures for tests/unit/test_io_*.c.

The files are written by tools independent of the C decoders: PIL (9.4) for
PNG and JPEG, astropy (5.2) for FITS, and a few lines of zlib + struct below
for the PNG variants PIL cannot write (16-bit colour, 16-bit gray+alpha,
Adam7 interlacing). Next to each image, NAME.expect holds what the decoder
must return, computed here in numpy:

    float32 little-endian, 3*h*w values (CHW, [0,1])   then   uint8 h*w mask

For PNG that is the source array / (2^bits - 1); for JPEG it is PIL's own
decode of the file; for FITS it is the documented mapping (io/gx_image.h):
linear for unsigned integer data, otherwise the asinh stretch with sky =
per-band median and alpha = Q * p99.5 / sinh(Q), Q = 8, over the pixels
valid in every band. MANIFEST lists name, h, w, replicated flag.

The resize fixtures come from PyTorch's interpolate(bilinear, antialias=True).
Run: /usr/bin/python3 tests/io/gen_io_fixtures.py   (writes tests/fixtures/io/)
"""
import io
import os
import struct
import zlib

import numpy as np
from PIL import Image
from astropy.io import fits

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "io")
H, W = 7, 13          # odd sizes on purpose
MANIFEST = []


def pattern(c, h, w, bits):
    """Deterministic, non-separable test pattern, values 0..2^bits-1."""
    y, x = np.mgrid[0:h, 0:w]
    mod = 1 << bits
    mult = 1 if bits <= 8 else 257
    bands = [((x * 37 + y * 11 + k * 85 + x * y * 3) * mult + k * 7) % mod for k in range(c)]
    return np.stack(bands).astype(np.uint16 if bits > 8 else np.uint8)


def alpha_pattern(h, w, bits):
    y, x = np.mgrid[0:h, 0:w]
    a = np.where((x + 2 * y) % 5 == 0, 0, (1 << bits) - 1 - ((x + y) % 3))
    return a.astype(np.uint16 if bits > 8 else np.uint8)


def write_expect(name, data_chw, mask, replicated):
    """data_chw: float array (1 or 3, h, w) in [0,1]; mask (h, w) bool."""
    d = np.asarray(data_chw, dtype=np.float64)
    if d.shape[0] == 1:
        d = np.repeat(d, 3, axis=0)
    h, w = d.shape[1:]
    with open(os.path.join(OUT, name + ".expect"), "wb") as f:
        f.write(d.astype("<f4").tobytes())
        f.write(np.asarray(mask, dtype=np.uint8).tobytes())
    MANIFEST.append(f"{name} {h} {w} {int(replicated)}")


def save_bytes(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- PNG (PIL)

def pil_png(name, img, **kw):
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    save_bytes(name, buf.getvalue())


def png_fixtures():
    ones = np.ones((H, W), bool)
    g8 = pattern(1, H, W, 8)
    pil_png("gray8.png", Image.fromarray(g8[0], "L"))
    write_expect("gray8.png", g8 / 255.0, ones, True)

    g16 = pattern(1, H, W, 16)
    pil_png("gray16.png", Image.fromarray(g16[0].astype(np.uint16), "I;16"))
    write_expect("gray16.png", g16 / 65535.0, ones, True)

    a8 = alpha_pattern(H, W, 8)
    la = np.stack([g8[0], a8], axis=-1)
    pil_png("gray_alpha8.png", Image.fromarray(la, "LA"))
    write_expect("gray_alpha8.png", g8 / 255.0, a8 != 0, True)

    rgb = pattern(3, H, W, 8)
    pil_png("rgb8.png", Image.fromarray(np.moveaxis(rgb, 0, -1), "RGB"))
    write_expect("rgb8.png", rgb / 255.0, ones, False)

    rgba = np.concatenate([rgb, a8[None]], axis=0)
    pil_png("rgba8.png", Image.fromarray(np.moveaxis(rgba, 0, -1), "RGBA"))
    write_expect("rgba8.png", rgb / 255.0, a8 != 0, False)

    # 1-bit bilevel gray
    y, x = np.mgrid[0:H, 0:W]
    bit = ((x * 3 + y) % 7 < 3)
    pil_png("gray1.png", Image.fromarray(bit).convert("1"))
    write_expect("gray1.png", bit[None].astype(np.float64), ones, True)

    # palette, with and without a transparent entry (tRNS)
    pal_rgb = np.array([[0, 0, 0], [255, 0, 0], [0, 200, 50], [10, 20, 250], [128, 128, 128]],
                       np.uint8)
    idx = ((x + 2 * y) % 5).astype(np.uint8)
    pimg = Image.fromarray(idx, "P")
    pimg.putpalette(pal_rgb.flatten().tolist())
    pil_png("palette.png", pimg)
    exp = np.moveaxis(pal_rgb[idx], -1, 0) / 255.0
    write_expect("palette.png", exp, ones, False)
    pil_png("palette_trns.png", pimg, transparency=3)
    write_expect("palette_trns.png", exp, idx != 3, False)


# ------------------------------------------------- PNG (zlib + struct)

def png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(
        ">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def raw_png(hwc, bits, color_type, interlace=False):
    """Minimal PNG writer: filter type 0 on every scanline; Adam7 if asked."""
    h, w = hwc.shape[:2]
    dt = ">u2" if bits == 16 else "u1"

    def scanlines(sub):
        return b"".join(b"\x00" + row.astype(dt).tobytes() for row in sub)

    if not interlace:
        raw = scanlines(hwc.reshape(h, w, -1))
    else:
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
                  (1, 0, 2, 2), (0, 1, 1, 2)]
        raw = b""
        for x0, y0, dx, dy in passes:
            sub = hwc[y0::dy, x0::dx]
            if sub.shape[0] and sub.shape[1]:
                raw += scanlines(sub.reshape(sub.shape[0], sub.shape[1], -1))
    ihdr = struct.pack(">IIBBBBB", w, h, bits, color_type, 0, 0, 1 if interlace else 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) +
            png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))


def raw_png_fixtures():
    ones = np.ones((H, W), bool)
    rgb16 = pattern(3, H, W, 16)
    save_bytes("rgb16.png", raw_png(np.moveaxis(rgb16, 0, -1), 16, 2))
    write_expect("rgb16.png", rgb16 / 65535.0, ones, False)

    a16 = alpha_pattern(H, W, 16)
    rgba16 = np.concatenate([rgb16, a16[None]], axis=0)
    save_bytes("rgba16.png", raw_png(np.moveaxis(rgba16, 0, -1), 16, 6))
    write_expect("rgba16.png", rgb16 / 65535.0, a16 != 0, False)

    g16 = pattern(1, H, W, 16)
    la16 = np.stack([g16[0], a16], axis=-1)
    save_bytes("gray_alpha16.png", raw_png(la16, 16, 4))
    write_expect("gray_alpha16.png", g16 / 65535.0, a16 != 0, True)

    # Adam7: 8-bit RGB and 16-bit gray, at a size where every pass is non-empty
    h, w = 11, 10
    rgb = pattern(3, h, w, 8)
    save_bytes("interlaced_rgb8.png", raw_png(np.moveaxis(rgb, 0, -1), 8, 2, interlace=True))
    write_expect("interlaced_rgb8.png", rgb / 255.0, np.ones((h, w), bool), False)
    g = pattern(1, h, w, 16)
    save_bytes("interlaced_gray16.png", raw_png(g[0], 16, 0, interlace=True))
    write_expect("interlaced_gray16.png", g / 65535.0, np.ones((h, w), bool), True)


# ---------------------------------------------------------------- JPEG (PIL)

def smooth(c, h, w):
    y, x = np.mgrid[0:h, 0:w]
    bands = [128 + 100 * np.sin(x / 5.0 + k) * np.cos(y / 7.0 - k) for k in range(c)]
    return np.clip(np.stack(bands), 0, 255).astype(np.uint8)


def jpeg_fixtures():
    h, w = 19, 23
    rgb = Image.fromarray(np.moveaxis(smooth(3, h, w), 0, -1), "RGB")
    gray = Image.fromarray(smooth(1, h, w)[0], "L")
    for name, img, kw in [("baseline_rgb.jpg", rgb, {}),
                          ("progressive_rgb.jpg", rgb, {"progressive": True}),
                          ("baseline_gray.jpg", gray, {}),
                          ("progressive_gray.jpg", gray, {"progressive": True}),
                          ("rgb_444.jpg", rgb, {"subsampling": 0})]:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90, **kw)
        save_bytes(name, buf.getvalue())
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())))   # PIL's own decode
        chw = dec[None] if dec.ndim == 2 else np.moveaxis(dec, -1, 0)
        write_expect(name, chw / 255.0, np.ones((h, w), bool), dec.ndim == 2)


# -------------------------------------------------------------- FITS (astropy)

def stretch(phys, Q=8.0):
    """The documented asinh stretch: phys (c,h,w) float64 with NaN/Inf."""
    mask = np.all(np.isfinite(phys), axis=0)
    sky = np.array([np.median(b[mask]) for b in phys])
    rel = phys - sky[:, None, None]
    p = np.percentile(np.concatenate([b[mask] for b in rel]), 99.5)
    alpha = Q * p / np.sinh(Q) if p > 0 else 1.0
    with np.errstate(invalid="ignore"):
        out = np.clip(np.arcsinh(Q * rel / alpha) / Q, 0, 1)
    out[:, ~mask] = 0
    return out, mask


def fits_bytes(hdul):
    buf = io.BytesIO()
    hdul.writeto(buf)
    return buf.getvalue()


def galaxy(c, h, w, seed):
    """A smooth blob on a noisy sky, in arbitrary physical units."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    r2 = (x - w / 2.0) ** 2 + ((y - h / 2.0) * 1.5) ** 2
    return np.stack([100 + 400 * (k + 1) * np.exp(-r2 / 8.0) + rng.normal(0, 5, (h, w))
                     for k in range(c)])


def fits_fixtures():
    h, w = 9, 11
    ones = np.ones((h, w), bool)
    u8 = pattern(1, h, w, 8)[0]
    save_bytes("u8_2d.fits", fits_bytes(fits.HDUList([fits.PrimaryHDU(u8)])))
    write_expect("u8_2d.fits", u8[None] / 255.0, ones, True)

    u16 = pattern(1, h, w, 16)[0].astype(np.uint16)       # astropy: BITPIX 16, BZERO 32768
    save_bytes("u16_2d.fits", fits_bytes(fits.HDUList([fits.PrimaryHDU(u16)])))
    write_expect("u16_2d.fits", u16[None] / 65535.0, ones, True)

    # int16 cube with BSCALE 0.5, BZERO 100 (physical values exactly representable)
    phys = np.round(galaxy(3, h, w, 1) * 2) / 2
    hdu = fits.PrimaryHDU(phys.copy())
    hdu.scale("int16", bscale=0.5, bzero=100)
    save_bytes("i16_scaled_cube.fits", fits_bytes(fits.HDUList([hdu])))
    write_expect("i16_scaled_cube.fits", *stretch(phys), False)

    # three int32 image HDUs after an empty primary
    bands = np.round(galaxy(3, h, w, 2)).astype(np.int32)
    hl = fits.HDUList([fits.PrimaryHDU()] + [fits.ImageHDU(b) for b in bands])
    save_bytes("i32_3hdu.fits", fits_bytes(hl))
    write_expect("i32_3hdu.fits", *stretch(bands.astype(np.float64)), False)

    # float32 cube with NaN and Inf pixels
    f32 = galaxy(3, h, w, 3).astype(np.float32)
    f32[0, 1, 2] = np.nan
    f32[1, 4, 7] = np.inf
    f32[2, 8, 0] = -np.inf
    save_bytes("f32_cube_nan.fits", fits_bytes(fits.HDUList([fits.PrimaryHDU(f32)])))
    write_expect("f32_cube_nan.fits", *stretch(f32.astype(np.float64)), False)

    # float64 2-D image, replicated
    f64 = galaxy(1, h, w, 4)
    f64[0, 3, 3] = np.nan
    save_bytes("f64_2d.fits", fits_bytes(fits.HDUList([fits.PrimaryHDU(f64[0])])))
    write_expect("f64_2d.fits", *stretch(f64), True)

    # a 3-D cube with a single plane counts as 2-D
    f1 = galaxy(1, h, w, 5).astype(np.float32)
    save_bytes("f32_1plane.fits", fits_bytes(fits.HDUList([fits.PrimaryHDU(f1)])))
    write_expect("f32_1plane.fits", *stretch(f1.astype(np.float64)), True)


# ------------------------------------------------------------ resize (torch)

def resize_fixtures():
    import torch
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(7)
    x = torch.rand(3, 17, 23, generator=g, dtype=torch.float64).float()
    save_bytes("resize_in.f32", x.numpy().astype("<f4").tobytes())
    for oh, ow in [(8, 8), (5, 11), (17, 23), (40, 31), (9, 47)]:
        y = F.interpolate(x.double()[None], size=(oh, ow), mode="bilinear",
                          align_corners=False, antialias=True)[0]
        save_bytes(f"resize_{oh}x{ow}.f32", y.numpy().astype("<f4").tobytes())


def main():
    os.makedirs(OUT, exist_ok=True)
    png_fixtures()
    raw_png_fixtures()
    jpeg_fixtures()
    fits_fixtures()
    resize_fixtures()
    with open(os.path.join(OUT, "MANIFEST"), "w") as f:
        f.write("\n".join(MANIFEST) + "\n")
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files to {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
