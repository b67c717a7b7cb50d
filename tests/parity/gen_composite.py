"""gen_composite.py — PyTorch fixtures for composite blocks built from several ops.

1. conv-BN-ReLU stack (training mode, running statistics updated, then eval):
   x [2,3,9,7] -> conv3x3 3->8 pad 1 -> BN -> ReLU -> conv3x3 8->8 stride 2 pad 1 -> BN -> ReLU
2. The SSM block of spec/wavelet-mamba.md ("SSM block", delta mode `mean` and `token`):
   LN -> in_proj -> split xs/zs -> causal depthwise conv1d + SiLU on both -> delta = softplus(dt_proj(A_proj(xs)))
   -> ZOH scan -> out_proj(y * zs * (1 + D)).
Everything is computed in float64 from float32-representable inputs; the C test
(tests/unit/test_parity_composite.c) runs the same blocks with the engine's ops in f32.
"""
import torch
import torch.nn.functional as F

from gx_fixture import grads, leaf, save

torch.manual_seed(0)
out = {}

# ---------------------------------------------------------------- conv-BN-ReLU
x = leaf(2, 3, 9, 7, seed=1)
w1 = leaf(8, 3, 3, 3, lo=-0.4, hi=0.4, seed=2); b1 = leaf(8, lo=-0.1, hi=0.1, seed=3)
g1 = leaf(8, lo=0.5, hi=1.5, seed=4); be1 = leaf(8, lo=-0.2, hi=0.2, seed=5)
w2 = leaf(8, 8, 3, 3, lo=-0.3, hi=0.3, seed=6); b2 = leaf(8, lo=-0.1, hi=0.1, seed=7)
g2 = leaf(8, lo=0.5, hi=1.5, seed=8); be2 = leaf(8, lo=-0.2, hi=0.2, seed=9)
rm1, rv1 = torch.zeros(8, dtype=torch.float64), torch.ones(8, dtype=torch.float64)
rm2, rv2 = torch.zeros(8, dtype=torch.float64), torch.ones(8, dtype=torch.float64)


def cbr(x, training):
    h = F.conv2d(x, w1, b1, stride=1, padding=1)
    h = F.relu(F.batch_norm(h, rm1, rv1, g1, be1, training=training, momentum=0.1, eps=1e-5))
    h = F.conv2d(h, w2, b2, stride=2, padding=1)
    return F.relu(F.batch_norm(h, rm2, rv2, g2, be2, training=training, momentum=0.1, eps=1e-5))


params = {"x": x, "w1": w1, "b1": b1, "g1": g1, "be1": be1, "w2": w2, "b2": b2, "g2": g2, "be2": be2}
for k, v in params.items():
    out["cbr." + k] = v
y = cbr(x, True)
gout, gs = grads(y, list(params.values()), seed=10)
out["cbr.train.y"] = y
out["cbr.train.gout"] = gout
for k, g in zip(params, gs):
    out["cbr.train.grad." + k] = g
out["cbr.train.rm1"], out["cbr.train.rv1"] = rm1.clone(), rv1.clone()
out["cbr.train.rm2"], out["cbr.train.rv2"] = rm2.clone(), rv2.clone()
out["cbr.eval.y"] = cbr(x, False).detach()

# ---------------------------------------------------------------- SSM block
B, L, D, E, N, R, K = 2, 9, 6, 12, 4, 3, 4
u = leaf(B, L, D, seed=20)
p = {
    "ln_w": leaf(D, lo=0.5, hi=1.5, seed=21), "ln_b": leaf(D, lo=-0.1, hi=0.1, seed=22),
    "in_w": leaf(2 * E, D, lo=-0.4, hi=0.4, seed=23), "in_b": leaf(2 * E, lo=-0.1, hi=0.1, seed=24),
    "conv_w": leaf(E, 1, K, lo=-0.5, hi=0.5, seed=25), "conv_b": leaf(E, lo=-0.1, hi=0.1, seed=26),
    "gconv_w": leaf(E, 1, K, lo=-0.5, hi=0.5, seed=27), "gconv_b": leaf(E, lo=-0.1, hi=0.1, seed=28),
    "A_log": leaf(E, N, lo=-1.0, hi=1.0, seed=29),
    "Aproj_w": leaf(R, E, lo=-0.4, hi=0.4, seed=30),
    "dt_w": leaf(E, R, lo=-0.5, hi=0.5, seed=31), "dt_b": leaf(E, lo=-2.0, hi=-1.0, seed=32),
    "Bm": leaf(E, N, lo=-1.0, hi=1.0, seed=33), "Cm": leaf(E, N, lo=-1.0, hi=1.0, seed=34),
    "Dp": leaf(E, lo=-0.5, hi=0.5, seed=35),
    "out_w": leaf(D, E, lo=-0.3, hi=0.3, seed=36), "out_b": leaf(D, lo=-0.1, hi=0.1, seed=37),
}


def causal_dw(x, w, b):
    # x [B,L,E] -> Conv1d over time with left padding K-1, truncated to L outputs
    y = F.conv1d(x.transpose(1, 2), w, b, padding=K - 1, groups=E)[..., :L]
    return y.transpose(1, 2)


def ssm_block(u, mode):
    h = F.layer_norm(u, (D,), p["ln_w"], p["ln_b"], eps=1e-5)
    h = F.linear(h, p["in_w"], p["in_b"])
    xs, zs = h[..., :E], h[..., E:]
    xs = F.silu(causal_dw(xs, p["conv_w"], p["conv_b"]))
    zs = F.silu(causal_dw(zs, p["gconv_w"], p["gconv_b"]))
    A = -torch.exp(p["A_log"])
    delta = F.softplus(F.linear(F.linear(xs, p["Aproj_w"]), p["dt_w"], p["dt_b"]))
    if mode == "mean":
        delta = delta.mean(dim=1, keepdim=True).expand(B, L, E)
    dA = delta.unsqueeze(-1) * A                       # [B,L,E,N]
    abar = torch.exp(dA)
    small = dA.abs() < 1e-6
    bfac = torch.where(small, delta.unsqueeze(-1).expand_as(dA), (abar - 1) / A)
    bbar = bfac * p["Bm"]
    hstate = torch.zeros(B, E, N, dtype=u.dtype)
    ys = []
    for t in range(L):
        hstate = abar[:, t] * hstate + bbar[:, t] * xs[:, t].unsqueeze(-1)
        ys.append((hstate * p["Cm"]).sum(-1))
    y = torch.stack(ys, dim=1)
    return F.linear(y * zs * (1 + p["Dp"]), p["out_w"], p["out_b"])


out["ssm.u"] = u
for k, v in p.items():
    out["ssm." + k] = v
for mode in ("mean", "token"):
    y = ssm_block(u, mode)
    inputs = [u] + list(p.values())
    gout, gs = grads(y, inputs, seed=40)
    out[f"ssm.{mode}.y"] = y
    out[f"ssm.{mode}.gout"] = gout
    for k, g in zip(["u"] + list(p), gs):
        out[f"ssm.{mode}.grad.{k}"] = g

save("composite.safetensors", out, {"source": "tests/parity/gen_composite.py", "torch": torch.__version__})
