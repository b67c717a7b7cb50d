"""gen_scan.py — PyTorch fixtures for gx_ssm_scan (kernels/gx_scan.c).

A plain loop over t implementing exactly spec/wavelet-mamba.md "SSM block"
steps 4-5 (zero-order hold, then h_t = Abar_t h_{t-1} + Bbar_t x_t,
y_t = sum_n h_t C), in float64, for both delta modes:
  token: delta [B, L, E]; mean: delta [B, 1, E] used at every t.
Odd sizes (B=2, L=7, E=5, N=3). Some deltas are 1e-7 so |delta*A| < 1e-6 and
Bbar takes the limit branch delta*Bm (token: scattered entries; mean: one whole
(b, e) row). Autograd through torch.where gives d/ddelta = 1, d/dA = 0 for the
limit branch's factor, as the C backward does.
Writes tests/fixtures/scan.safetensors: scan.<mode>.{xs,delta,A,Bm,Cm,y,gout}
and scan.<mode>.grad.<input>.
"""
import torch

from gx_fixture import grads, leaf, save

B, L, E, N = 2, 7, 5, 3


def ssm_scan(xs, delta, A, Bm, Cm):
    Bq, Lq, Eq = xs.shape
    d = delta.expand(Bq, Lq, Eq).unsqueeze(-1)          # [B,L,E,1]
    dA = d * A                                          # [B,L,E,N]
    abar = torch.exp(dA)
    bfac = torch.where(dA.abs() < 1e-6, d.expand_as(dA), (abar - 1) / A)
    bbar = bfac * Bm
    h = torch.zeros(Bq, Eq, A.shape[1], dtype=xs.dtype)
    ys = []
    for t in range(Lq):
        h = abar[:, t] * h + bbar[:, t] * xs[:, t].unsqueeze(-1)
        ys.append((h * Cm).sum(-1))
    return torch.stack(ys, dim=1)


def small_deltas(delta, idx):
    """Sets delta entries (flat indices) to 1e-7 (float32-representable leaf)."""
    with torch.no_grad():
        flat = delta.detach().clone().view(-1)
        flat[idx] = 1e-7
        return flat.view(delta.shape).float().double().requires_grad_(True)


out = {}
for mode, Ld, seed in (("token", L, 50), ("mean", 1, 60)):
    xs = leaf(B, L, E, seed=seed)
    delta = leaf(B, Ld, E, lo=0.05, hi=1.5, seed=seed + 1)
    if mode == "token":
        delta = small_deltas(delta, list(range(0, B * L * E, 4)))
    else:
        delta = small_deltas(delta, [E + 2])                 # b = 1, e = 2
    A = leaf(E, N, lo=-2.0, hi=-0.1, seed=seed + 2)
    Bm = leaf(E, N, seed=seed + 3)
    Cm = leaf(E, N, seed=seed + 4)
    y = ssm_scan(xs, delta, A, Bm, Cm)
    inputs = {"xs": xs, "delta": delta, "A": A, "Bm": Bm, "Cm": Cm}
    gout, gs = grads(y, list(inputs.values()), seed=seed + 5)
    for k, v in inputs.items():
        out[f"scan.{mode}.{k}"] = v
    out[f"scan.{mode}.y"] = y
    out[f"scan.{mode}.gout"] = gout
    for k, g in zip(inputs, gs):
        out[f"scan.{mode}.grad.{k}"] = g

save("scan.safetensors", out, {"source": "tests/parity/gen_scan.py", "torch": torch.__version__})
