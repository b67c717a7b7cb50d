#!/usr/bin/env python3
"""gen_reduce.py — PyTorch parity fixture for the reduction family (gx_reduce.h).

Writes tests/fixtures/reduce.safetensors, read by tests/unit/test_parity_reduce.c.
Inputs are rounded to float32 then everything runs in float64; outputs and
gradients are stored as float32, class indices as int32.

Keys, per case NAME: NAME.x, NAME.out, NAME.gout, NAME.gx (and NAME.target
for cross-entropy / gather / one-hot, which has no gradient). The dims,
keepdim flags, label smoothing and eps values are repeated in the C test's
case table; keep the two in sync.
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gx_fixture as fx  # noqa: E402

X3 = (3, 5, 7)     # odd sizes; dim 1 is a middle dim
X2 = (4, 9)

# name: (shape, function of x) — mirrored by CASES in test_parity_reduce.c.
CASES = {
    "sum_d1": (X3, lambda x: x.sum(1)),
    "sum_dlast_keep": (X3, lambda x: x.sum(-1, keepdim=True)),
    "mean_d0": (X3, lambda x: x.mean(0)),
    "mean_d1_keep": (X3, lambda x: x.mean(1, keepdim=True)),
    "max_d1": (X3, lambda x: x.max(1).values),
    "max_dlast_keep": (X2, lambda x: x.max(-1, keepdim=True).values),
    "sum_all": (X3, lambda x: x.sum()),
    "mean_all": (X3, lambda x: x.mean()),
    "softmax_d1": (X3, lambda x: torch.softmax(x, 1)),
    "softmax_dlast": (X2, lambda x: torch.softmax(x, -1)),
    "log_softmax_d1": (X3, lambda x: torch.log_softmax(x, 1)),
    "log_softmax_dlast": (X2, lambda x: torch.log_softmax(x, -1)),
    "logsumexp_d1_keep": (X3, lambda x: torch.logsumexp(x, 1, keepdim=True)),
    "logsumexp_dlast": (X2, lambda x: torch.logsumexp(x, -1)),
    "l2_d1": (X3, lambda x: F.normalize(x, dim=1, eps=1e-12)),
    "l2_dlast": (X2, lambda x: F.normalize(x, dim=-1, eps=1e-12)),
}

B, K = 6, 7
TARGET = torch.tensor([2, 0, 6, 3, 1, 6], dtype=torch.int64)


def main():
    out = {}
    seed = 200
    for name, (shape, fn) in CASES.items():
        x = fx.leaf(*shape, lo=-3, hi=3, seed=seed)
        seed += 1
        y = fn(x)
        gout, (gx,) = fx.grads(y, [x], seed=seed)
        out.update({f"{name}.x": x, f"{name}.out": y, f"{name}.gout": gout, f"{name}.gx": gx})

    # l2_normalize where some rows have a norm below eps (divided by eps).
    x = fx.leaf(4, 5, lo=-3, hi=3, seed=seed).detach()
    x[1] *= 1e-3
    x[3] *= 1e-4
    x = x.float().double().requires_grad_(True)
    y = F.normalize(x, dim=1, eps=0.01)
    gout, (gx,) = fx.grads(y, [x], seed=seed + 1)
    out.update({"l2_eps.x": x, "l2_eps.out": y, "l2_eps.gout": gout, "l2_eps.gx": gx})
    seed += 2

    # Cross-entropy without and with label smoothing, gather, one-hot.
    for name, ls in (("ce_ls0", 0.0), ("ce_ls01", 0.1)):
        x = fx.leaf(B, K, lo=-3, hi=3, seed=seed)
        seed += 1
        y = F.cross_entropy(x, TARGET, reduction="none", label_smoothing=ls)
        gout, (gx,) = fx.grads(y, [x], seed=seed)
        out.update({f"{name}.x": x, f"{name}.out": y, f"{name}.gout": gout, f"{name}.gx": gx,
                    f"{name}.target": TARGET.to(torch.int32)})
    x = fx.leaf(B, K, lo=-3, hi=3, seed=seed)
    y = x.gather(1, TARGET[:, None])[:, 0]
    gout, (gx,) = fx.grads(y, [x], seed=seed + 1)
    out.update({"gather.x": x, "gather.out": y, "gather.gout": gout, "gather.gx": gx,
                "gather.target": TARGET.to(torch.int32)})
    out["one_hot.target"] = TARGET.to(torch.int32)
    out["one_hot.out"] = F.one_hot(TARGET, K).double()

    fx.save("reduce.safetensors", out, {"generator": "tests/parity/gen_reduce.py",
                                         "torch": torch.__version__})


if __name__ == "__main__":
    main()
