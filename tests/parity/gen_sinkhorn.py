"""gen_sinkhorn.py — PyTorch fixtures for gx_sinkhorn_hk (kernels/gx_sinkhorn.c).

Inputs as spec/wavelet-mamba.md "Hellinger-Kantorovich term" builds them:
40 bins on [zmin, zmax] with zmin = 1e-6, zmax = min(max(2, 1.2 max zhat,
1.2 max z), 3); centres c = linspace(zmin, zmax, 40); the soft histogram of a
value v has weights exp(-(v - c_j)^2 / (2 sigma^2)), sigma = (zmax - zmin)/80,
normalised to sum 1; a = histograms of zhat, b = histograms of z (one row per
sample). Cost C_ij = (c_i - c_j)^2 + 1. Sinkhorn: K = exp(clamp(-C/lambda,
-100, 100)), v = 1, 50 iterations of u = a/(K v + 1e-4), v = b/(K^T u + 1e-4);
HK = sqrt(max(sum u K v C, 0) + 1e-8) per row. lambda 0.5 and 0.1.
Outputs and gradients with respect to a and b (C is a constant), float64.
Writes tests/fixtures/sinkhorn.safetensors: sk.{a,b,C} and
sk.<lam>.{out,gout,grad.a,grad.b} for lam in (l05, l01).
"""
import torch

from gx_fixture import grads, save

NBINS, ITERS, EPS = 40, 50, 1e-4

zhat = torch.tensor([0.31, 1.12, 0.052, 2.2, 0.74], dtype=torch.float64)
z = torch.tensor([0.35, 0.95, 0.11, 1.9, 0.74], dtype=torch.float64)
zmin = 1e-6
zmax = min(max(2.0, 1.2 * float(zhat.max()), 1.2 * float(z.max())), 3.0)
centres = torch.linspace(zmin, zmax, NBINS, dtype=torch.float64)
sigma = (zmax - zmin) / 80


def soft_hist(v):
    w = torch.exp(-((v.unsqueeze(-1) - centres) ** 2) / (2 * sigma ** 2))
    return w / w.sum(-1, keepdim=True)


def f32_leaf(t):
    # Round through float32 so the C side sees exactly the same inputs.
    return t.float().double().requires_grad_(True)


def sinkhorn_hk(a, b, C, lam):
    K = torch.exp(torch.clamp(-C / lam, -100, 100))
    v = torch.ones_like(b)
    for _ in range(ITERS):
        u = a / (v @ K.T + EPS)        # (K v) per row
        v = b / (u @ K + EPS)          # (K^T u) per row
    S = ((u @ (K * C)) * v).sum(-1)
    return torch.sqrt(torch.clamp(S, min=0) + 1e-8)


a = f32_leaf(soft_hist(zhat))
b = f32_leaf(soft_hist(z))
C = ((centres.unsqueeze(1) - centres.unsqueeze(0)) ** 2 + 1.0).float().double()
out = {"sk.a": a, "sk.b": b, "sk.C": C}
for name, lam, seed in (("l05", 0.5, 70), ("l01", 0.1, 71)):
    hk = sinkhorn_hk(a, b, C, lam)
    gout, (ga, gb) = grads(hk, [a, b], seed=seed)
    out[f"sk.{name}.out"] = hk
    out[f"sk.{name}.gout"] = gout
    out[f"sk.{name}.grad.a"] = ga
    out[f"sk.{name}.grad.b"] = gb

save("sinkhorn.safetensors", out, {"source": "tests/parity/gen_sinkhorn.py", "torch": torch.__version__})
