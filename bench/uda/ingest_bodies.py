"""ingest_bodies.py OUTDIR DATA.h5 N... — request bodies for the /v1/anomaly/batch half of
scripts/bench_uda_ingest.sh: OUTDIR/batch_N.body, a multipart/form-data body of N `file`
parts, the first N images of DATA.h5 as lossless 64x64 8-bit PNGs (what a pipeline would
post), each preceded by its own object_id, survey and ra/dec fields.

The object ids hold the token @@@@@@@@@@ (galaxy-loadgen --seq overwrites it with a
per-request counter): "ubN-<counter>-<k>", so every request stores N new rows instead of
answering the stored ones (the route is idempotent per object, image and model), and the
rows in the database can be checked against the images sent. Prints the Content-Type.
"""
import os
import struct
import sys
import zlib

import h5py
import numpy as np

BOUNDARY = "gxBenchUdaIngest9f3b"
TOKEN = "@" * 10


def png(img):
    """A PNG of an H x W x 3 uint8 array (filter 0 rows, zlib level 6)."""
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(k, d):
        return struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def field(name, value):
    return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n').encode()


def body(images, ra, dec, n):
    out = b""
    for k in range(n):
        out += field("object_id", f"ub{n}-{TOKEN}-{k}") + field("survey", "bench")
        out += field("ra", f"{ra[k]:.6f}") + field("dec", f"{dec[k]:.6f}")
        out += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{k}.png"\r\n'
                f"Content-Type: image/png\r\n\r\n").encode() + png(images[k]) + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def main():
    if len(sys.argv) < 4:
        sys.exit("usage: ingest_bodies.py OUTDIR DATA.h5 N...")
    out, data, ns = sys.argv[1], sys.argv[2], [int(a) for a in sys.argv[3:]]
    with h5py.File(data, "r") as f:
        n = max(ns)
        if f["images"].shape[0] < n:
            sys.exit(f"ingest_bodies.py: {data}: {f['images'].shape[0]} images, {n} needed")
        images = np.asarray(f["images"][:n], dtype=np.uint8)
        ra, dec = np.asarray(f["ra"][:n]), np.asarray(f["dec"][:n])
    for k in ns:
        with open(os.path.join(out, f"batch_{k}.body"), "wb") as fh:
            fh.write(body(images, ra, dec, k))
    print(f"multipart/form-data; boundary={BOUNDARY}")


if __name__ == "__main__":
    main()
