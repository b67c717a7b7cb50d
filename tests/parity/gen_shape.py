"""gen_shape.py — PyTorch fixtures for the shape family (kernels/gx_shape.c).

Cases (odd sizes throughout): reshape, permute (4-D and 6-D), concat of three
inputs along a middle and the last dim, split into three parts, slice and
flip. Each case stores its inputs, output, the fixed upstream gradient
(`gout`) and every input gradient. Run: /usr/bin/python3 tests/parity/gen_shape.py
"""
import torch

from gx_fixture import grads, leaf, save

out = {}


def case(name, fn, inputs, seed):
    """Runs fn(*inputs) in float64 and stores inputs, output and gradients."""
    y = fn(*inputs)
    gout, gs = grads(y, inputs, seed=seed)
    for i, (x, g) in enumerate(zip(inputs, gs)):
        out[f"{name}.x{i}"] = x
        out[f"{name}.grad.x{i}"] = g
    out[f"{name}.y"] = y
    out[f"{name}.gout"] = gout


case("reshape", lambda x: x.reshape(5, -1, 3), [leaf(3, 5, 7, seed=1)], 101)
case("permute4", lambda x: x.permute(2, 0, 3, 1), [leaf(2, 3, 5, 7, seed=2)], 102)
case("permute6", lambda x: x.permute(5, 3, 0, 4, 1, 2), [leaf(2, 3, 1, 5, 2, 3, seed=3)], 103)
case("concat1", lambda a, b, c: torch.cat([a, b, c], dim=1),
     [leaf(2, 3, 5, seed=4), leaf(2, 1, 5, seed=5), leaf(2, 4, 5, seed=6)], 104)
case("concat_last", lambda a, b, c: torch.cat([a, b, c], dim=-1),
     [leaf(3, 2, seed=7), leaf(3, 5, seed=8), leaf(3, 1, seed=9)], 105)


def split_rejoin(x):
    # Re-joined in another order so every part's gradient lands elsewhere
    # (the C side then needs only shape ops).
    a, b, c = torch.split(x, [2, 3, 4], dim=2)
    return torch.cat([c, a, b], dim=2)


case("split", split_rejoin, [leaf(3, 2, 9, seed=10)], 106)
case("slice", lambda x: x[:, 2:5, :], [leaf(3, 7, 5, seed=11)], 107)
case("flip0", lambda x: torch.flip(x, [0]), [leaf(3, 5, seed=12)], 108)
case("flip2", lambda x: torch.flip(x, [2]), [leaf(2, 3, 5, 3, seed=13)], 109)

save("shape.safetensors", out, {"source": "tests/parity/gen_shape.py", "torch": torch.__version__})
