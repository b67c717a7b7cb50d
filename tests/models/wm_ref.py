"""wm_ref.py — an independent PyTorch implementation of spec/wavelet-mamba.md, and the
exporter of the C model's golden fixtures: tests/fixtures/wm_tiny.safetensors (the tiny
model's state_dict, nothing else, so the C side loads it strictly by name) and
tests/fixtures/wm_tiny_io.safetensors (inputs, outputs, gradients).

Written from the spec (not from the authors' code), as nn.Modules whose parameter and
buffer names are the spec's, so `state_dict()` names are exactly the names the C model
registers (models/wavelet_mamba.c) and a checkpoint of the authors' model loads by name.

Serving rules as in the spec: per-sample Delta mean, stored colour statistics at inference
(batch median / IQR in training), z = mu at inference, missing coordinates (NaN) give zero
coordinate features. In training, batch median (torch.median: lower median) and IQR
(torch.quantile, linear interpolation) are differentiable exactly as autograd makes them:
the gradient reaches the order statistics that were selected / interpolated.

ResNet-18 baseline (backbone="resnet18", models/gx_resnet18.h): the wavelet encoder is
replaced by a torchvision-style ResNet-18 trunk `feature_extractor.resnet.` (torchvision's
names, no fc) and `feature_extractor.resnet_proj` (lin 8w->256) gives w; the morphology
branch reads the trunk's pooled features (shared_feature_projection lin 8w->256). Its
fixture (tests/fixtures/wm_rn18*.safetensors) uses base width w = 8 (every code path of
w = 64 at 1/64 of the weights) on the tiny config: every tensor the two models share is
taken from the committed wm_tiny.safetensors, so wm_rn18.safetensors stores only the
trunk, resnet_proj and shared_feature_projection (the C test loads both files).

Usage:
  /usr/bin/python3 tests/models/wm_ref.py            # writes both fixtures, prints counts
  /usr/bin/python3 tests/models/wm_ref.py --count    # parameter counts only
  /usr/bin/python3 tests/models/wm_ref.py --rn18     # the ResNet-18 and token fixtures
  /usr/bin/python3 tests/models/wm_ref.py --token    # only the token-mode fixture
                                                     # (wm_tiny_token_io: delta mode `token`
                                                     # on the committed tiny weights and inputs)

Fixture size: the tiny config still has ~1 M parameters (everything after the image branch
keeps the full widths), so weights are stored as F16 (the model is evaluated with exactly
those rounded values, in float64), and gradients are stored in full only for tensors of at
most 512 elements; for larger ones we store 64 evenly spaced elements (gs.<name>, indices in
gi.<name>) plus the gradient's L2 norm (gn.<name>) and its plain sum (gsum.<name>).
"""
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from ref_common import (FIXDIR, count, grad_entries, random_bn_stat, random_bn_stats, read_safetensors,
                        round_f16, state_f16, write_safetensors)

SOURCE = "tests/models/wm_ref.py"     # the fixtures' __metadata__ source

CONFIGS = {
    # size, c1, c2, d_model, d_state, d_conv, expand, dt_rank, G, F, K
    "default": dict(S=64, c1=64, c2=128, D=128, N=16, dconv=4, expand=2, R=16, G=8, F=256, K=10),
    "small":   dict(S=64, c1=32, c2=64, D=64, N=16, dconv=4, expand=2, R=16, G=8, F=128, K=10),
    "tiny":    dict(S=32, c1=8, c2=16, D=16, N=4, dconv=4, expand=2, R=4, G=4, F=32, K=10),
}


def conv3(i, o):
    return nn.Conv2d(i, o, 3, padding=1)


def conv1(i, o, groups=1):
    return nn.Conv2d(i, o, 1, groups=groups)


class SSMBlock(nn.Module):
    """Spec 'SSM block': LN, in_proj, causal dw conv1d + SiLU (x and gate), Delta, ZOH scan."""

    def __init__(self, D, N, dconv, expand, R, delta_mode):
        super().__init__()
        E = expand * D
        self.E, self.N, self.dconv, self.delta_mode = E, N, dconv, delta_mode
        self.input_norm = nn.LayerNorm(D)
        self.in_proj = nn.Linear(D, 2 * E)
        self.conv1d = nn.Conv1d(E, E, dconv, groups=E)
        self.gate_conv1d = nn.Conv1d(E, E, dconv, groups=E)
        self.A_log = nn.Parameter(torch.empty(E, N).uniform_(-4, -1))
        self.B = nn.Parameter(nn.init.xavier_uniform_(torch.empty(E, N)))
        self.C = nn.Parameter(nn.init.xavier_uniform_(torch.empty(E, N)))
        self.D = nn.Parameter(torch.ones(E))
        self.A_proj = nn.Linear(E, R, bias=False)
        self.dt_proj = nn.Linear(R, E)
        self.out_proj = nn.Linear(E, D)

    def causal(self, conv, x):                       # x [B,L,E]
        L = x.shape[1]
        y = F.conv1d(F.pad(x.transpose(1, 2), (self.dconv - 1, 0)), conv.weight, conv.bias,
                     groups=self.E)
        return y[..., :L].transpose(1, 2)

    def forward(self, u):                            # u [B,L,D]
        h = self.in_proj(self.input_norm(u))
        xs, zs = h[..., :self.E], h[..., self.E:]
        xs = F.silu(self.causal(self.conv1d, xs))
        zs = F.silu(self.causal(self.gate_conv1d, zs))
        A = -torch.exp(self.A_log)
        delta = F.softplus(self.dt_proj(self.A_proj(xs)))         # [B,L,E]
        if self.delta_mode == "mean":
            delta = delta.mean(dim=1, keepdim=True).expand_as(delta)   # per sample
        dA = delta.unsqueeze(-1) * A                                   # [B,L,E,N]
        abar = torch.exp(dA)
        fac = torch.where(dA.abs() < 1e-6, delta.unsqueeze(-1).expand_as(dA), (abar - 1) / A)
        bbar = fac * self.B
        hs = torch.zeros(u.shape[0], self.E, self.N, dtype=u.dtype)
        ys = []
        for t in range(u.shape[1]):
            hs = abar[:, t] * hs + bbar[:, t] * xs[:, t].unsqueeze(-1)
            ys.append((hs * self.C).sum(-1))
        y = torch.stack(ys, dim=1)
        return self.out_proj(y * zs * (1 + self.D))


class MambaScanner(nn.Module):
    def __init__(self, cfg, delta_mode):
        super().__init__()
        self.ssm_blocks = nn.ModuleList([
            SSMBlock(cfg["D"], cfg["N"], cfg["dconv"], cfg["expand"], cfg["R"], delta_mode)
            for _ in range(4)])


class DirectionAggregator(nn.Module):
    def __init__(self, D):
        super().__init__()
        self.gated_conv = conv3(4 * D, D)
        self.gate_conv = conv3(4 * D, D)

    def forward(self, x):
        return F.gelu(self.gated_conv(x)) * torch.sigmoid(self.gate_conv(x))


class WaveletMambaLayer(nn.Module):
    """Spec 'WaveletMamba block' (wm.)."""

    def __init__(self, cfg, delta_mode):
        super().__init__()
        C, D = cfg["c2"], cfg["D"]
        self.C, self.D, self.G = C, D, cfg["G"]
        self.wavelet_filters_a = nn.Parameter(torch.randn(4, C, 3, 3) * 0.3)
        self.wavelet_filters_b = nn.Parameter(torch.randn(4, C, 3, 3) * 0.3)
        self.channel_fusion_a = conv1(4 * C, 4, groups=4)
        self.channel_fusion_b = conv1(4 * C, 4, groups=4)
        self.wavelet_proj = nn.ModuleList([nn.Linear(2, D) for _ in range(4)])
        self.direction_bias = nn.Parameter(torch.randn(4, D) * 0.5)
        self.mamba_scanner = MambaScanner(cfg, delta_mode)
        self.direction_aggregator = DirectionAggregator(D)
        self.output_conv = conv1(D, C)
        self.norm = nn.LayerNorm(D)
        self.skip_weight = nn.Parameter(torch.tensor(0.2))
        self.skip_gate = nn.Sequential(conv1(C, C // 4), nn.ReLU(), conv1(C // 4, C), nn.Sigmoid())
        self.full_res_proj = conv1(8, D)

    def forward(self, x2):
        Bn, C, H, W = x2.shape
        G, D = self.G, self.D
        # Repeated-interleaved input: channel k = x2[:, k//4]; filter k = filters[k//C][k%C].
        xr = x2.repeat_interleave(4, dim=1)
        ta = F.conv2d(xr, self.wavelet_filters_a.reshape(4 * C, 1, 3, 3), padding=1, groups=4 * C)
        tb = F.conv2d(xr, self.wavelet_filters_b.reshape(4 * C, 1, 3, 3), padding=1, groups=4 * C)
        fa = self.channel_fusion_a(ta)                               # [B,4,H,W]
        fb = self.channel_fusion_b(tb)
        w8 = torch.stack([fa, fb], dim=2).reshape(Bn, 8, H, W)      # 2d: a, 2d+1: b
        w8ds = F.adaptive_avg_pool2d(w8, (G, G))
        tok = w8ds.reshape(Bn, 4, 2, G * G).permute(0, 1, 3, 2)    # [B,4,L,2]
        outs = []
        for d in range(4):
            seq = self.wavelet_proj[d](tok[:, d]) + self.direction_bias[d]
            blk = self.mamba_scanner.ssm_blocks[d]
            o = 0.5 * (blk(seq) + blk(seq.flip(1)).flip(1))           # [B,L,D]
            outs.append(o.transpose(1, 2).reshape(Bn, D, G, G))
        y = self.direction_aggregator(torch.cat(outs, dim=1))
        y = F.interpolate(y, size=(H, W), mode="bilinear", align_corners=False)
        y = y + 0.3 * self.full_res_proj(w8)
        y = self.norm(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        out = self.output_conv(y)
        return out + self.skip_weight * (self.skip_gate(x2) * x2)


class ConvBlock(nn.Module):
    def __init__(self, c2, Fw):
        super().__init__()
        self.conv1, self.bn1 = conv3(c2, c2), nn.BatchNorm2d(c2)
        self.conv2, self.bn2 = conv3(c2, Fw), nn.BatchNorm2d(Fw)

    def forward(self, x):
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class AttentionPool(nn.Module):
    def __init__(self, Fw):
        super().__init__()
        self.attention_conv = nn.Sequential(conv1(Fw, Fw // 4), nn.ReLU(), conv1(Fw // 4, 1), nn.Sigmoid())

    def forward(self, x):
        a = self.attention_conv(x)
        return (a * x).sum(dim=(2, 3)) / (a.sum(dim=(2, 3)) + 1e-8)


class FastFusion(nn.Module):
    def __init__(self, c2, Fw):
        super().__init__()
        self.conv_block = ConvBlock(c2, Fw)
        self.feature_proj = conv1(Fw, Fw)
        self.attention_pool = AttentionPool(Fw)
        self.output_proj = nn.Sequential(nn.LayerNorm(Fw), nn.Linear(Fw, 256))

    def forward(self, x):
        return self.output_proj(self.attention_pool(self.feature_proj(self.conv_block(x))))


class WaveletEncoder(nn.Module):
    def __init__(self, cfg, delta_mode):
        super().__init__()
        c1, c2 = cfg["c1"], cfg["c2"]
        self.conv_initial = nn.Sequential(conv3(3, c1), nn.BatchNorm2d(c1), nn.ReLU(),
                                          conv3(c1, c2), nn.BatchNorm2d(c2), nn.ReLU(),
                                          conv3(c2, c2), nn.BatchNorm2d(c2), nn.ReLU())
        self.wavelet_mamba_layer = WaveletMambaLayer(cfg, delta_mode)
        self.bn3 = nn.BatchNorm2d(c2)
        self.fast_fusion = FastFusion(c2, cfg["F"])

    def forward(self, x):
        x2 = self.conv_initial(x)
        x3 = F.relu(self.bn3(self.wavelet_mamba_layer(x2)) + x2)
        return self.fast_fusion(x3), x2


class BasicBlock(nn.Module):
    """torchvision's BasicBlock (expansion 1), names included."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        idt = x if self.downsample is None else self.downsample(x)
        return F.relu(out + idt)


class ResNet18Trunk(nn.Module):
    """torchvision resnet18 without fc, base width w (64 = torchvision): x -> [B, 8w]."""

    def __init__(self, width=64, cin=3):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        c = width
        for i in range(1, 5):
            out = width * 2 ** (i - 1)
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(c, out, stride), BasicBlock(out, out, 1)))
            c = out
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        h = self.layer4(self.layer3(self.layer2(self.layer1(h))))
        return h.mean(dim=(2, 3))


class ColorStats(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("median", torch.zeros(4))
        self.register_buffer("iqr", torch.ones(4))


class MorphologyAnalyzer(nn.Module):
    def __init__(self, c2):
        super().__init__()
        self.shared_feature_projection = nn.Linear(c2, 256)
        self.se_gate = nn.Sequential(nn.Linear(256 + 4 + 10, 256), nn.ReLU(), nn.Linear(256, 256), nn.Sigmoid())
        self.film_gamma = nn.Linear(256, 256)
        self.film_beta = nn.Linear(256, 256)
        self.fusion_layer = nn.Sequential(nn.LayerNorm(512), nn.ReLU(), nn.Linear(512, 256))
        self.residual_projection = nn.Linear(256, 256)

    def forward(self, pooled, c4):                 # pooled: avgpool(x2), or the ResNet features
        g_r = c4[:, 1].detach()
        k0 = torch.where(g_r > 0.8, 3, torch.where(g_r > 0.5, 6, 0))
        onehot = F.one_hot(k0, 10).to(c4.dtype)
        base = self.shared_feature_projection(pooled)
        gate = self.se_gate(torch.cat([base, c4, onehot], dim=1))
        a = base * gate
        film = self.film_gamma(a) * base + self.film_beta(a)
        return self.fusion_layer(torch.cat([film, base], dim=1)) + self.residual_projection(base)


class CoordinateEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        f = torch.exp(torch.linspace(-4.0, 1.0, 32))
        self.ra_frequencies = nn.Parameter(f.clone())
        self.dec_frequencies = nn.Parameter(f.clone())
        self.projection = nn.Sequential(nn.Linear(128, 128), nn.LayerNorm(128), nn.ReLU(),
                                        nn.Linear(128, 64), nn.LayerNorm(64))
        self.residual_proj = nn.Linear(128, 64)

    def forward(self, coords):                     # [B,2] degrees, NaN = missing
        missing = torch.isnan(coords).any(dim=1, keepdim=True)
        c = torch.nan_to_num(coords, nan=0.0)
        ra = torch.clamp(c[:, :1] / 360.0 * 2 * math.pi, 0, 2 * math.pi)
        dec = torch.clamp((c[:, 1:] + 90.0) / 180.0 * 2 * math.pi, 0, 2 * math.pi)
        a, b = ra * self.ra_frequencies, dec * self.dec_frequencies
        e = torch.cat([torch.sin(a), torch.cos(a), torch.sin(b), torch.cos(b)], dim=1)
        out = self.projection(e) + self.residual_proj(e)
        return out * (~missing).to(out.dtype)


class FeatureExtractor(nn.Module):
    def __init__(self, cfg, delta_mode, backbone="wavelet", resnet_width=64):
        super().__init__()
        self.backbone = backbone
        if backbone == "resnet18":
            self.resnet = ResNet18Trunk(resnet_width)
            self.resnet_proj = nn.Linear(8 * resnet_width, 256)
            morph_in = 8 * resnet_width
        else:
            self.wavelet_encoder = WaveletEncoder(cfg, delta_mode)
            morph_in = cfg["c2"]
        self.color_magnitude_extractor = nn.Sequential(
            nn.AdaptiveAvgPool2d((8, 8)), nn.Flatten(), nn.Linear(192, 128), nn.ReLU(),
            nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 5))
        self.color_stats = ColorStats()
        self.morphology_analyzer = MorphologyAnalyzer(morph_in)
        self.coordinate_encoder = CoordinateEncoder()
        self.image_to_task_projection = nn.Sequential(nn.Linear(512, 256), nn.LayerNorm(256), nn.ReLU())
        self.vib_mu = nn.Linear(256, 256)
        self.vib_logvar = nn.Linear(256, 256)
        self.prior_mu = nn.Parameter(torch.zeros(256))
        self.prior_logvar = nn.Parameter(torch.zeros(256))


class RelationshipModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.relationship_matrix = nn.Parameter(torch.eye(2) + 0.1 * torch.randn(2, 2))


class TaskHeads(nn.Module):
    def __init__(self, K):
        super().__init__()
        self.cls_layer1 = nn.Sequential(nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, 128))
        self.cls_residual1 = nn.Linear(256, 128)
        self.cls_norm2 = nn.LayerNorm(128)
        self.class_projection = nn.Sequential(nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, K))

    def forward(self, f):
        return self.class_projection(self.cls_norm2(self.cls_layer1(f) + self.cls_residual1(f)))


class LossParams(nn.Module):
    def __init__(self):
        super().__init__()
        self.lsi_c_log = nn.Parameter(torch.tensor(0.0))


class WaveletMambaModel(nn.Module):
    def __init__(self, cfg, delta_mode="mean", backbone="wavelet", resnet_width=64):
        super().__init__()
        self.feature_extractor = FeatureExtractor(cfg, delta_mode, backbone, resnet_width)
        self.task_relationship = RelationshipModel()
        self.task_heads = TaskHeads(cfg["K"])
        self.redshift_image_branch = nn.Sequential(
            nn.Linear(324, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
            nn.Linear(128, 1))
        with torch.no_grad():
            self.redshift_image_branch[5].bias.fill_(0.5)
        self.redshift_scale = nn.Parameter(torch.tensor(2.0))
        self.loss_function = LossParams()

    @staticmethod
    def batch_stats(c):
        """Median (lower) and IQR over the batch, differentiable as autograd makes them."""
        med = c.median(dim=0).values
        iqr = c.quantile(0.75, dim=0) - c.quantile(0.25, dim=0)
        return med, iqr

    def forward(self, x, coords=None, eps=None):
        fe = self.feature_extractor
        mags = fe.color_magnitude_extractor(x)
        c = mags[:, :4] - mags[:, 1:]
        if self.training:
            med, iqr = self.batch_stats(c)
        else:
            med, iqr = fe.color_stats.median, fe.color_stats.iqr
        c4 = (c - med) / torch.clamp(iqr, min=1e-3)
        if fe.backbone == "resnet18":
            pooled = fe.resnet(x)
            w = fe.resnet_proj(pooled)
        else:
            w, x2 = fe.wavelet_encoder(x)
            pooled = x2.mean(dim=(2, 3))
        m = fe.morphology_analyzer(pooled, c4)
        if coords is None:
            coord = torch.zeros(x.shape[0], 64, dtype=x.dtype)
        else:
            coord = fe.coordinate_encoder(coords)
        p = fe.image_to_task_projection(torch.cat([w, m], dim=1))
        mu, logvar = fe.vib_mu(p), fe.vib_logvar(p)
        z = mu if (not self.training or eps is None) else mu + eps * torch.exp(0.5 * logvar)
        Rn = torch.softmax(self.task_relationship.relationship_matrix, dim=-1)
        f_cls = Rn[0, 0] * z + Rn[0, 1] * w
        f_red = Rn[1, 0] * z + Rn[1, 1] * w
        logits = self.task_heads(f_cls)
        r = self.redshift_image_branch(torch.cat([f_red, coord, c4], dim=1)).squeeze(1)
        zhat = torch.clamp(F.softplus(r) * torch.clamp(self.redshift_scale, min=0.5), min=1e-6)
        return dict(logits=logits, redshift=zhat, mu=mu, logvar=logvar, z=z, w=w, mags=mags, c4=c4)


# ----------------------------------------------------------------------------- fixture


def export_fixture():
    torch.manual_seed(0)
    cfg = CONFIGS["tiny"]
    model = WaveletMambaModel(cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        # Non-trivial running statistics and colour statistics so eval mode is exercised.
        random_bn_stats(model, g)
        model.feature_extractor.color_stats.median.copy_(torch.rand(4, generator=g) * 0.2 - 0.1)
        model.feature_extractor.color_stats.iqr.copy_(torch.rand(4, generator=g) * 0.5 + 0.1)
        round_f16(model)
    model = model.double()
    sd, out = state_f16(model)

    Bn, S = 3, cfg["S"]
    x = (torch.rand(Bn, 3, S, S, generator=g) * 0.9 + 0.05).half().double()
    coords = torch.stack([torch.rand(Bn, generator=g) * 360, torch.rand(Bn, generator=g) * 180 - 90], 1)
    coords = coords.float().double()
    out["in.x"], out["in.coords"] = ("F32", x), ("F32", coords)
    out.update(io_tensors(model, x, coords, g))
    # Two files: the weights alone (a state_dict, loaded strictly by name) and the test data.
    write_safetensors(os.path.join(FIXDIR, "wm_tiny.safetensors"), {k: out[k] for k in sd}, SOURCE)
    write_safetensors(os.path.join(FIXDIR, "wm_tiny_io.safetensors"),
                      {k: v for k, v in out.items() if k not in sd}, SOURCE)


def io_tensors(model, x, coords, g):
    """Eval and training outputs, updated running statistics and the gradients of
    L = sum(logits R1) + sum(zhat R2) + sum(logvar R3) (R* drawn from g)."""
    out = {}
    model.eval()
    with torch.no_grad():
        ev = model(x, coords)
    for k in ("logits", "redshift", "mu", "logvar", "c4"):
        out[f"eval.{k}"] = ("F32", ev[k])

    model.train()
    xg = x.clone().requires_grad_(True)
    tr = model(xg, coords)                   # eps None: z = mu (VIB noise off)
    R1 = torch.rand(tr["logits"].shape, generator=g, dtype=torch.float64) * 2 - 1
    R2 = torch.rand(tr["redshift"].shape, generator=g, dtype=torch.float64) * 2 - 1
    R3 = torch.rand(tr["logvar"].shape, generator=g, dtype=torch.float64) * 2 - 1
    R1, R2, R3 = R1.float().double(), R2.float().double(), R3.float().double()
    loss = (tr["logits"] * R1).sum() + (tr["redshift"] * R2).sum() + (tr["logvar"] * R3).sum()
    loss.backward()
    for k in ("logits", "redshift", "mu", "logvar", "c4"):
        out[f"train.{k}"] = ("F32", tr[k])
    out["train.R1"], out["train.R2"], out["train.R3"] = ("F32", R1), ("F32", R2), ("F32", R3)
    out["grad.in.x"] = ("F32", xg.grad)
    for name, b in model.named_buffers():
        if "running" in name:
            out["train.buf." + name] = ("F32", b)
    grad_entries(model, out)
    return out


def export_rn18_fixture(width=8, batch=3, size=45):
    """The ResNet-18 baseline (tiny config, base width `width`) on batch x 3 x size^2:
    shared tensors from the committed wm_tiny.safetensors, the rest fresh."""
    tiny = read_safetensors(os.path.join(FIXDIR, "wm_tiny.safetensors"))
    torch.manual_seed(10)
    model = WaveletMambaModel(CONFIGS["tiny"], backbone="resnet18", resnet_width=width)
    g = torch.Generator().manual_seed(11)
    own = []
    with torch.no_grad():
        for name, t in model.state_dict(keep_vars=True).items():
            if name.endswith("num_batches_tracked"):
                continue
            if name in tiny and tuple(tiny[name].shape) == tuple(t.shape):
                t.copy_(tiny[name])
                continue
            own.append(name)
            random_bn_stat(name, t, g)
            t.copy_(t.half().float())
    model = model.double()
    out = {k: ("F16", v.clone()) for k, v in model.state_dict().items() if k in own}
    x = (torch.rand(batch, 3, size, size, generator=g) * 0.9 + 0.05).half().double()
    coords = torch.stack([torch.rand(batch, generator=g) * 360,
                          torch.rand(batch, generator=g) * 180 - 90], 1).float().double()
    io = {"in.x": ("F32", x), "in.coords": ("F32", coords)}
    io.update(io_tensors(model, x, coords, g))
    write_safetensors(os.path.join(FIXDIR, "wm_rn18.safetensors"), out, SOURCE)
    write_safetensors(os.path.join(FIXDIR, "wm_rn18_io.safetensors"), io, SOURCE)


def export_token_fixture():
    """Delta mode `token` (the paper's equation 4): the committed tiny weights and
    inputs, outputs and gradients of the token-mode model (the mode adds no tensor)."""
    tiny = read_safetensors(os.path.join(FIXDIR, "wm_tiny.safetensors"))
    io_in = read_safetensors(os.path.join(FIXDIR, "wm_tiny_io.safetensors"))
    torch.manual_seed(0)
    model = WaveletMambaModel(CONFIGS["tiny"], delta_mode="token").double()
    missing, unexpected = model.load_state_dict(tiny, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    g = torch.Generator().manual_seed(2)
    x, coords = io_in["in.x"], io_in["in.coords"]
    io = {"in.x": ("F32", x), "in.coords": ("F32", coords)}
    io.update(io_tensors(model, x, coords, g))
    write_safetensors(os.path.join(FIXDIR, "wm_tiny_token_io.safetensors"), io, SOURCE)


def main():
    for name, cfg in CONFIGS.items():
        torch.manual_seed(0)
        print(f"{name}: {count(WaveletMambaModel(cfg))} parameters")
    for name in ("tiny", "default"):
        torch.manual_seed(0)
        rn = WaveletMambaModel(CONFIGS[name], backbone="resnet18")
        print(f"{name} backbone=resnet18: {count(rn)} parameters "
              f"(trunk {count(rn.feature_extractor.resnet)})")
    if "--count" in sys.argv:
        return
    if "--rn18" not in sys.argv and "--token" not in sys.argv:
        export_fixture()
    if "--token" not in sys.argv:
        export_rn18_fixture()
    export_token_fixture()


if __name__ == "__main__":
    main()
