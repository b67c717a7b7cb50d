"""gen_norm.py — PyTorch fixtures for the norm family (kernels/gx_norm.c).

Cases:
  bn4d:   batch norm on x [3,4,5,3] in training for three calls (inputs
          x0, x1, x2), running statistics updated each call (momentum 0.1,
          eps 1e-5, starting from mean 0 / var 1); outputs and gradients of
          every call; then eval mode on x_eval with the updated statistics,
          with gradients. The C test runs it through a gx_bn_layer with two
          statistic sets (using set 1) to check the layer too.
  bn2d:   batch norm on [7,3] in training without affine parameters.
  ln3d:   layer norm over the last dim of [2,3,7] with gamma/beta.
  ln2d:   layer norm of [4,10] without affine parameters (eps 1e-6).
Run: /usr/bin/python3 tests/parity/gen_norm.py
"""
import torch
import torch.nn.functional as F

from gx_fixture import grads, leaf, save

out = {}

# ---------------------------------------------------------------- bn4d
C = 4
gamma = leaf(C, lo=0.5, hi=1.5, seed=1)
beta = leaf(C, lo=-0.3, hi=0.3, seed=2)
rm = torch.zeros(C, dtype=torch.float64)
rv = torch.ones(C, dtype=torch.float64)
out["bn4d.gamma"], out["bn4d.beta"] = gamma, beta
for k in range(3):
    # Different scale and offset per call so the running stats move.
    x = leaf(3, C, 5, 3, lo=-1.0 - k, hi=2.0 + 0.5 * k, seed=10 + k)
    y = F.batch_norm(x, rm, rv, gamma, beta, training=True, momentum=0.1, eps=1e-5)
    gout, (gx, gg, gb) = grads(y, [x, gamma, beta], seed=300 + k)
    p = f"bn4d.train{k}."
    out[p + "x"], out[p + "y"], out[p + "gout"] = x, y, gout
    out[p + "grad.x"], out[p + "grad.gamma"], out[p + "grad.beta"] = gx, gg, gb
    out[p + "running_mean"], out[p + "running_var"] = rm.clone(), rv.clone()
x = leaf(2, C, 3, 5, lo=-2.0, hi=2.0, seed=20)
y = F.batch_norm(x, rm, rv, gamma, beta, training=False, momentum=0.1, eps=1e-5)
gout, (gx, gg, gb) = grads(y, [x, gamma, beta], seed=310)
out["bn4d.eval.x"], out["bn4d.eval.y"], out["bn4d.eval.gout"] = x, y, gout
out["bn4d.eval.grad.x"], out["bn4d.eval.grad.gamma"], out["bn4d.eval.grad.beta"] = gx, gg, gb

# ---------------------------------------------------------------- bn2d, no affine
x = leaf(7, 3, lo=-1.0, hi=3.0, seed=30)
rm2, rv2 = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
y = F.batch_norm(x, rm2, rv2, None, None, training=True, momentum=0.2, eps=1e-3)
gout, (gx,) = grads(y, [x], seed=320)
out["bn2d.x"], out["bn2d.y"], out["bn2d.gout"], out["bn2d.grad.x"] = x, y, gout, gx
out["bn2d.running_mean"], out["bn2d.running_var"] = rm2, rv2

# ---------------------------------------------------------------- layer norm
x = leaf(2, 3, 7, lo=-2.0, hi=1.0, seed=40)
g = leaf(7, lo=0.5, hi=1.5, seed=41)
b = leaf(7, lo=-0.5, hi=0.5, seed=42)
y = F.layer_norm(x, (7,), g, b, eps=1e-5)
gout, (gx, gg, gb) = grads(y, [x, g, b], seed=330)
out["ln3d.x"], out["ln3d.gamma"], out["ln3d.beta"], out["ln3d.y"], out["ln3d.gout"] = x, g, b, y, gout
out["ln3d.grad.x"], out["ln3d.grad.gamma"], out["ln3d.grad.beta"] = gx, gg, gb

x = leaf(4, 10, lo=-1.0, hi=1.0, seed=50)
y = F.layer_norm(x, (10,), None, None, eps=1e-6)
gout, (gx,) = grads(y, [x], seed=340)
out["ln2d.x"], out["ln2d.y"], out["ln2d.gout"], out["ln2d.grad.x"] = x, y, gout, gx

save("norm.safetensors", out, {"source": "tests/parity/gen_norm.py", "torch": torch.__version__})
