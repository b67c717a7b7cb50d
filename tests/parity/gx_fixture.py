"""gx_fixture.py — shared helpers for the PyTorch parity fixture scripts.

Each tests/parity/gen_<family>.py builds small cases with PyTorch (Debian's
python3-torch), runs the op forward and backward with a fixed upstream
gradient, and writes inputs, outputs and every gradient to
tests/fixtures/<family>.safetensors, which is committed. The C tests in
tests/unit/ load them and compare. Rerun with `make fixtures`.

Written without the `safetensors` package (not in Debian): the format is an
8-byte little-endian header length, a JSON header, and raw tensor bytes.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from st_file import write_st_file  # noqa: E402

FIXTURE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")


def save(name, tensors, metadata=None):
    """Write {key: tensor} as float32 (int tensors as I32/I64) to tests/fixtures/<name>."""
    header, blobs, off = {}, [], 0
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        if t.dtype in (torch.float64, torch.float32, torch.float16):
            t, dt = t.to(torch.float32), "F32"
        elif t.dtype == torch.int64:
            dt = "I64"
        elif t.dtype == torch.int32:
            dt = "I32"
        else:
            raise TypeError(f"{key}: unsupported dtype {t.dtype}")
        data = t.numpy().tobytes()
        header[key] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    os.makedirs(FIXTURE_DIR, exist_ok=True)
    path = os.path.join(FIXTURE_DIR, name)
    write_st_file(path, header, blobs)
    print(f"wrote {path} ({len(tensors)} tensors, {off} bytes)")


def grads(out, inputs, seed=0):
    """Backward with a fixed random upstream gradient; returns (gout, [grads])."""
    g = torch.Generator().manual_seed(seed)
    gout = torch.rand(out.shape, generator=g, dtype=out.dtype) * 2 - 1
    gs = torch.autograd.grad(out, inputs, gout, allow_unused=True)
    return gout, [torch.zeros_like(i) if gi is None else gi for i, gi in zip(inputs, gs)]


def leaf(*shape, lo=-1.0, hi=1.0, seed=0, dtype=torch.float64):
    """A reproducible leaf tensor (computed in float64, stored as float32)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(*shape, generator=g, dtype=dtype) * (hi - lo) + lo
    # Round through float32 so the C side sees exactly the same inputs.
    return t.float().double().requires_grad_(True)
