#!/usr/bin/env python3
"""gen_elem.py — PyTorch parity fixture for the elementwise family (gx_elem.h).

Writes tests/fixtures/elem.safetensors, read by tests/unit/test_parity_elem.c.
Every case is computed in float64 from inputs rounded to float32 (so the C
side sees the same inputs); outputs and gradients are stored as float32.

Keys, per case NAME:
  unary : NAME.x, NAME.out, NAME.gout, NAME.gx
  binary: NAME.a, NAME.b, NAME.out, NAME.gout, NAME.ga, NAME.gb
The scalar arguments (slopes, clamp bounds, powers) are repeated in the C
test; keep the two tables in sync.
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gx_fixture as fx  # noqa: E402

# name: (function, lo, hi) — input ranges avoid kinks and invalid domains.
UNARY = {
    "relu": (torch.relu, -2, 2),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), -2, 2),
    "gelu": (lambda x: F.gelu(x), -3, 3),
    "silu": (F.silu, -3, 3),
    "sigmoid": (torch.sigmoid, -4, 4),
    "softplus": (F.softplus, -4, 4),
    "softplus_big": (F.softplus, 15, 25),          # crosses the threshold 20
    "tanh": (torch.tanh, -2, 2),
    "exp": (torch.exp, -2, 2),
    "log": (torch.log, 0.2, 3),
    "atan": (torch.atan, -3, 3),
    "sin": (torch.sin, -3, 3),
    "cos": (torch.cos, -3, 3),
    "sqrt": (torch.sqrt, 0.2, 3),
    "square": (torch.square, -2, 2),
    "abs": (torch.abs, -2, 2),
    "neg": (torch.neg, -2, 2),
    "affine": (lambda x: -1.5 * x + 0.25, -2, 2),
    "scale": (lambda x: 2.5 * x, -2, 2),
    "add_scalar": (lambda x: x + 3.0, -2, 2),
    "pow_scalar": (lambda x: x.pow(2.5), 0.3, 2),
    "clamp": (lambda x: torch.clamp(x, -0.5, 0.7), -1, 1),
    # (x > t) has no autograd; + 0 * x gives it the zero gradient gx_step has.
    "step": (lambda x: (x > 0.25).to(x.dtype) + 0 * x, -1, 1),
}

# Broadcast patterns: name -> (shape of a, shape of b).
PATTERNS = {
    "equal": ((3, 7), (3, 7)),
    "scalar": ((3, 7), ()),
    "bias": ((2, 3, 5), (5,)),
    "middle": ((2, 3, 5), (3, 1)),
    "chan4": ((4, 3, 5, 7), (1, 3, 1, 1)),
    "chan3": ((2, 3, 4, 5), (3, 1, 1)),
}

BINARY = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "div": torch.div,
    "maximum": torch.maximum,
}


def leaf_any(shape, lo, hi, seed):
    """fx.leaf for any shape, 0-D included (torch.rand needs a size)."""
    if shape:
        return fx.leaf(*shape, lo=lo, hi=hi, seed=seed)
    return fx.leaf(1, lo=lo, hi=hi, seed=seed).detach().reshape(()).requires_grad_(True)


def main():
    out = {}
    seed = 100
    for name, (fn, lo, hi) in UNARY.items():
        x = fx.leaf(3, 7, lo=lo, hi=hi, seed=seed)
        seed += 1
        y = fn(x)
        gout, (gx,) = fx.grads(y, [x], seed=seed)
        out.update({f"{name}.x": x, f"{name}.out": y, f"{name}.gout": gout, f"{name}.gx": gx})
    for op, fn in BINARY.items():
        for pat, (sa, sb) in PATTERNS.items():
            a = fx.leaf(*sa, lo=-2, hi=2, seed=seed)
            # div: b away from 0; maximum: b overlapping a's range (no ties).
            blo, bhi = (0.5, 2.0) if op == "div" else (-1.5, 1.5)
            b = leaf_any(sb, blo, bhi, seed + 1)
            seed += 2
            y = fn(a, b)
            gout, (ga, gb) = fx.grads(y, [a, b], seed=seed)
            key = f"{op}.{pat}"
            out.update({f"{key}.a": a, f"{key}.b": b, f"{key}.out": y, f"{key}.gout": gout,
                        f"{key}.ga": ga, f"{key}.gb": gb})
    fx.save("elem.safetensors", out, {"generator": "tests/parity/gen_elem.py",
                                       "torch": torch.__version__})


if __name__ == "__main__":
    main()
