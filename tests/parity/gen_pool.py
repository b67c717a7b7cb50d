"""gen_pool.py — PyTorch fixtures for the pool family (kernels/gx_pool.c).

Cases: adaptive average pooling 7->3 (overlapping bins), 64->8 (divisible),
5->8 (output larger than input: repeated rows) and a non-square 7x5 -> 3x4;
bilinear resize (align_corners=False, no antialias) up, down and mixed with
odd sizes; nearest x2 upsampling; max pooling (ResNet's k3 s2 p1 on odd
and even sizes, k2 s2, k3 s1 p1, k4 s3 p2, and a tie case of small integers
where the first maximum in row-major order must take the gradient). Each case stores x, y, the upstream
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


def maxp(k, s, p):
    return lambda x: F.max_pool2d(x, k, s, p)


case("maxpool_k3s2p1_odd", maxp(3, 2, 1), leaf(2, 3, 9, 7, seed=9), 209)
case("maxpool_k3s2p1_even", maxp(3, 2, 1), leaf(1, 4, 16, 16, seed=10), 210)
case("maxpool_k2s2p0", maxp(2, 2, 0), leaf(2, 2, 7, 6, seed=11), 211)
case("maxpool_k3s1p1", maxp(3, 1, 1), leaf(1, 3, 5, 5, seed=12), 212)
case("maxpool_k4s3p2", maxp(4, 3, 2), leaf(2, 1, 8, 5, seed=13), 213)
# Ties: values in {0, 1, 2}, so most windows hold several maxima.
ties = torch.randint(0, 3, (2, 2, 7, 7), generator=torch.Generator().manual_seed(14))
case("maxpool_ties", maxp(3, 2, 1), ties.double().requires_grad_(True), 214)

save("pool.safetensors", out, {"source": "tests/parity/gen_pool.py", "torch": torch.__version__})
