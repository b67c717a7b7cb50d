"""st_file.py — the file layout of safetensors, written once for the fixture writers
(tests/models/ref_common.py, tests/parity/gx_fixture.py, tests/morph/gen_morph_fixtures.py):
each builds its own header and data blobs (their dtypes and tensor order differ) and hands
them here. No torch or numpy, so the morph fixtures' separate environment can import it.
"""
import json
import os
import struct


def write_st_file(path, header, blobs):
    """header: {name: {"dtype", "shape", "data_offsets"}, optional "__metadata__"}; blobs:
    the data in offset order. The JSON header is padded with spaces to a multiple of 8
    bytes; the file is written to path.tmp and renamed over path."""
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(path + ".tmp", path)
