"""gen_pool.py — PyTorch fixtures for the pool family (kernels/gx_pool.c).

Cases: adaptive average pooling 7->3 (overlapping bins), 64->8 (divisible),
5->8 (output larger than input: repeated rows) and a non-square 7x5 -> 3x4;
bilinear resize (align_corners=False, no antialias) up, down and mixed with
odd sizes; nearest x2 upsampling. Each case stores x, y, the upstream
gradient `gout` and grad.x. Run: /usr/bin/python3 tests/parity/gen_pool.py
"""
import torch
import torch.nn.functional as F

from gx_fixture import grads, leaf, save

out = {}


def case(name, fn, x, seed):
    y = fn(x)
    gout, (gx,) = grads(y, [x], seed=seed)
    out[f"{name}.x"], out[f"{name}.y"] = x, y
    out[f"{name}.gout"], out[f"{name}.grad.x"] = gout, gx


case("adapt_7to3", lambda x: F.adaptive_avg_pool2d(x, (3, 3)), leaf(2, 3, 7, 7, seed=1), 201)
case("adapt_64to8", lambda x: F.adaptive_avg_pool2d(x, (8, 8)), leaf(1, 2, 64, 64, seed=2), 202)
case("adapt_5to8", lambda x: F.adaptive_avg_pool2d(x, (8, 8)), leaf(1, 2, 5, 5, seed=3), 203)
case("adapt_7x5to3x4", lambda x: F.adaptive_avg_pool2d(x, (3, 4)), leaf(2, 1, 7, 5, seed=4), 204)


def bil(h, w):
    return lambda x: F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


case("bilinear_up", bil(9, 13), leaf(2, 2, 5, 7, seed=5), 205)
case("bilinear_down", bil(4, 5), leaf(1, 3, 9, 13, seed=6), 206)
case("bilinear_mixed", bil(3, 9), leaf(2, 1, 6, 4, seed=7), 207)
case("nearest2x", lambda x: F.interpolate(x, scale_factor=2, mode="nearest"), leaf(2, 3, 5, 3, seed=8), 208)

save("pool.safetensors", out, {"source": "tests/parity/gen_pool.py", "torch": torch.__version__})
