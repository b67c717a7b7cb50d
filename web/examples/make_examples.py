#!/usr/bin/python3
"""Renders the dashboard's bundled example cutouts (web/examples/*.png and
index.json) with galaxy-synth: one 64x64 DECaLS-like galaxy for each of a few
Galaxy10 classes, so "Inspect a galaxy" can be tried without a file at hand.

    /usr/bin/python3 web/examples/make_examples.py [BUILD]      # default build/

Deterministic (fixed seed); the PNGs are committed, so run it again only when
galaxy-synth's rendering changes. Needs h5py (Debian python3-h5py) to read the
HDF5 file; PNGs are written with zlib alone.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib

import h5py

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# Galaxy10 DECaLS class names in label order (spec/synth.md).
CLASSES = ["Disturbed", "Merging", "Round Smooth", "In-between Round Smooth", "Cigar Shaped Smooth",
           "Barred Spiral", "Unbarred Tight Spiral", "Unbarred Loose Spiral", "Edge-on without Bulge",
           "Edge-on with Bulge"]
PICK = [2, 4, 5, 6, 8, 1]   # a visibly varied handful


def png(w, h, rgb):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + rgb[y * w * 3:(y + 1) * w * 3] for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    synth = os.path.join(ROOT, build, "galaxy-synth")
    with tempfile.TemporaryDirectory() as tmp:
        h5 = os.path.join(tmp, "e.h5")
        subprocess.run([synth, "--out", h5, "--n", "60", "--size", "64", "--seed", "11", "--balanced",
                        "--quiet"], check=True)
        with h5py.File(h5, "r") as f:
            labels, images, z = f["ans"][:], f["images"], f["redshift"][:]
            out = []
            for k in PICK:
                i = int(next(j for j in range(len(labels)) if labels[j] == k))
                name = f"{k}_" + CLASSES[k].lower().replace(" ", "_").replace("-", "_") + ".png"
                with open(os.path.join(HERE, name), "wb") as fp:
                    fp.write(png(64, 64, images[i].tobytes()))
                out.append({"file": name, "class_index": k, "class_name": CLASSES[k],
                            "redshift": round(float(z[i]), 4)})
    with open(os.path.join(HERE, "index.json"), "w") as fp:
        json.dump({"generator": "web/examples/make_examples.py (galaxy-synth --seed 11 --size 64)",
                   "examples": out}, fp, indent=1)
        fp.write("\n")


if __name__ == "__main__":
    main()
