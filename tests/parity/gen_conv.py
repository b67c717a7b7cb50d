"""gen_conv.py — PyTorch fixtures for the conv family (kernels/gx_conv.c).

Each conv2d case stores <case>.x, <case>.w, [<case>.b], <case>.y, <case>.gout
and <case>.grad.{x,w,b}; tests/unit/test_parity_conv.c holds the same case
table (stride, padding, groups) and checks forward and every gradient in f32.
The causal depthwise conv1d is compared with torch Conv1d(E, E, K, groups=E,
padding=K-1) on the channels-first transpose, keeping the first L outputs.
Computed in float64 from float32-representable inputs.
"""
import torch
import torch.nn.functional as F

from gx_fixture import grads, leaf, save

out = {}

# name, x shape, w shape, stride, padding, groups, bias
CONV2D = [
    ("enc_k4s2p1", (2, 3, 8, 8), (4, 3, 4, 4), 2, 1, 1, True),
    ("k3p1_odd", (2, 3, 7, 9), (5, 3, 3, 3), 1, 1, 1, True),
    ("groups2", (1, 4, 6, 5), (6, 2, 3, 3), 1, 1, 2, True),
    ("dw3", (2, 4, 7, 9), (4, 1, 3, 3), 1, 1, 4, True),
    ("dw3s2", (1, 3, 7, 9), (3, 1, 3, 3), 2, 1, 3, False),
    ("pw1x1", (2, 5, 7, 9), (3, 5, 1, 1), 1, 0, 1, True),
    ("k7s2p3", (1, 3, 11, 9), (4, 3, 7, 7), 2, 3, 1, True),
]

seed = 100
for name, xs, ws, s, p, g, has_b in CONV2D:
    x = leaf(*xs, seed=seed)
    w = leaf(*ws, lo=-0.5, hi=0.5, seed=seed + 1)
    b = leaf(ws[0], lo=-0.2, hi=0.2, seed=seed + 2) if has_b else None
    seed += 3
    y = F.conv2d(x, w, b, stride=s, padding=p, groups=g)
    ins = [x, w] + ([b] if has_b else [])
    gout, gs = grads(y, ins, seed=seed)
    out[f"{name}.x"], out[f"{name}.w"] = x, w
    if has_b:
        out[f"{name}.b"] = b
    out[f"{name}.y"], out[f"{name}.gout"] = y, gout
    for k, gr in zip("xwb", gs):
        out[f"{name}.grad.{k}"] = gr

# Causal depthwise conv1d, channels last: x [B, L, E], w [E, 1, K], b [E].
B, L, E, K = 2, 9, 6, 4
x = leaf(B, L, E, seed=200)
w = leaf(E, 1, K, lo=-0.5, hi=0.5, seed=201)
b = leaf(E, lo=-0.2, hi=0.2, seed=202)
y = F.conv1d(x.transpose(1, 2), w, b, padding=K - 1, groups=E)[:, :, :L].transpose(1, 2)
gout, gs = grads(y, [x, w, b], seed=203)
out.update({"c1.x": x, "c1.w": w, "c1.b": b, "c1.y": y, "c1.gout": gout,
            "c1.grad.x": gs[0], "c1.grad.w": gs[1], "c1.grad.b": gs[2]})

save("conv.safetensors", out)
