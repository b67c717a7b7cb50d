"""ref_common.py — what the PyTorch reference models' fixture exporters (uda_ref.py,
wm_ref.py, cfinn_ref.py) share: the safetensors writer and reader, the fixture directory,
the F16 / float32 rounding of weights and inputs, random BatchNorm running statistics, the
parameter count, and the gradient layout tests/unit/test_wm_util.h reads (full for tensors
of at most 512 elements; else 64 evenly spaced elements gs.<name> at indices gi.<name>,
the L2 norm gn.<name> and the sum gsum.<name>).

Imported by name from the scripts' own directory (python puts a script's directory first
on sys.path; the bench/ scripts that import the reference models add tests/models).
"""
import json
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from st_file import write_st_file  # noqa: E402

FIXDIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")


def write_safetensors(path, tensors, source):
    """tensors: {name: (dtype_str, tensor)}; F16 / F32 data, sorted by name; source (the
    exporting script) goes into the header's __metadata__."""
    header, blobs, off = {}, [], 0
    for key in sorted(tensors):
        dt, t = tensors[key]
        t = t.detach().contiguous()
        t = t.to(torch.float16 if dt == "F16" else torch.float32)
        data = t.numpy().tobytes()
        header[key] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    header["__metadata__"] = {"source": source, "torch": torch.__version__}
    write_st_file(path, header, blobs)
    print(f"wrote {path} ({len(tensors)} tensors, {off} data bytes)")


def read_safetensors(path):
    """{name: float64 tensor} of an F16/F32 safetensors file."""
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header, data = json.loads(blob[8:8 + n]), blob[8 + n:]
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        dt = {"F16": torch.float16, "F32": torch.float32}[v["dtype"]]
        out[k] = torch.frombuffer(bytearray(data[a:b]), dtype=dt).reshape(v["shape"]).double()
    return out


def f32(t):
    """t rounded through float32, as float64 (what the C side reads back)."""
    return t.float().double()


def count(model):
    return sum(p.numel() for p in model.parameters())


def random_bn_stat(name, t, g):
    """A non-trivial running statistic drawn from g when name is one (mean in [-0.1, 0.1),
    var in [0.5, 1.5)), so eval mode is exercised; other tensors are left alone."""
    if name.endswith("running_mean"):
        t.copy_(torch.rand(t.shape, generator=g) * 0.2 - 0.1)
    elif name.endswith("running_var"):
        t.copy_(torch.rand(t.shape, generator=g) + 0.5)


def random_bn_stats(model, g):
    """random_bn_stat on every buffer of model. Call under torch.no_grad()."""
    for name, b in model.named_buffers():
        random_bn_stat(name, b, g)


def round_f16(model):
    """Rounds every floating parameter and buffer to F16, so the stored weights are the
    evaluated ones. Call under torch.no_grad()."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            t.copy_(t.half().float())


def state_f16(model):
    """A copy of the state_dict without num_batches_tracked (clone: state_dict() shares
    storage, and a training pass would update the running statistics), and the same as
    F16 fixture entries."""
    sd = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    return sd, {k: ("F16", v) for k, v in sd.items()}


def grad_entries(model, out):
    """Every parameter's gradient into out (zeros where it has none), in the layout above."""
    for name, p in model.named_parameters():
        gr = (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).clone()
        if gr.numel() <= 512:
            out["g." + name] = ("F32", gr)
        else:
            n = gr.numel()
            idx = torch.tensor([(k * n) // 64 for k in range(64)])
            out["gi." + name] = ("F32", idx.double())
            out["gs." + name] = ("F32", gr[idx])
            out["gn." + name] = ("F32", gr.norm().reshape(1))
            out["gsum." + name] = ("F32", gr.sum().reshape(1))
