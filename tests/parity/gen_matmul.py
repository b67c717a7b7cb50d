"""gen_matmul.py — PyTorch fixtures for the matmul family (kernels/gx_matmul.c).

Cases: linear with 3-D input and bias, linear without bias; batched matmul
(4-D) and matmul with a shared 2-D right operand; Gram a b^T and a a^T;
pairwise squared distances vs torch.cdist(a, b) ** 2. Each case stores its
inputs, output, the upstream gradient gout and every input gradient.
Computed in float64 from float32-representable inputs.
"""
import torch
import torch.nn.functional as F

from gx_fixture import grads, leaf, save

out = {}


def case(name, fn, inputs, seed):
    """inputs: list of (key, tensor); fn(*tensors) -> output."""
    ts = [t for _, t in inputs]
    y = fn(*ts)
    gout, gs = grads(y, ts, seed=seed)
    for (k, t), g in zip(inputs, gs):
        out[f"{name}.{k}"] = t
        out[f"{name}.grad.{k}"] = g
    out[f"{name}.y"], out[f"{name}.gout"] = y, gout


case("linear3d", F.linear, [("x", leaf(2, 3, 5, seed=1)), ("w", leaf(4, 5, seed=2)), ("b", leaf(4, seed=3))], 4)
case("linear_nb", F.linear, [("x", leaf(7, 3, seed=5)), ("w", leaf(2, 3, seed=6))], 7)
case("bmm4d", torch.matmul, [("a", leaf(2, 3, 4, 5, seed=8)), ("b", leaf(2, 3, 5, 2, seed=9))], 10)
case("mm_shared", torch.matmul, [("a", leaf(3, 4, 5, seed=11)), ("b", leaf(5, 6, seed=12))], 13)
case("gram", lambda a, b: a @ b.T, [("a", leaf(5, 7, seed=14)), ("b", leaf(6, 7, seed=15))], 16)
case("gram_self", lambda a: a @ a.T, [("a", leaf(5, 7, seed=17))], 18)
case("sqdist", lambda a, b: torch.cdist(a, b) ** 2, [("a", leaf(5, 3, seed=19)), ("b", leaf(6, 3, seed=20))], 21)

save("matmul.safetensors", out)
