"""uda_ref.py — an independent PyTorch implementation of spec/uda.md (DeepAstroUDA) and the
exporter of the C model's golden fixture tests/fixtures/uda_tiny.safetensors.

Written from the spec, as nn.Modules whose state_dict names are the ones models/uda.c
registers: a torchvision-style ResNet under "backbone." whose every BatchNorm is a
DomainBN holding one BatchNorm2d per domain ("bn1.d0.weight": source, "bn1.d1.*": target),
and the cosine head "head.weight" [K,E] (no bias).

  f = G(x; BN set d)                       global-average-pooled features [B,E]
  logits = W f / max(|f|, 1e-12) / T       T = 0.05, rows of W unit norm (renormalised
                                           before every optimiser step, outside autograd)
  p = softmax(logits)
  L_CE  = sum_i w_{y_i} (-ln p_{i,y_i}) / sum_i w_{y_i}
  L_ES  = mean_i  (-|H(p_i) - rho| if |H(p_i) - rho| > m else 0),  H = -sum p ln(p + 1e-5)
  L_AC  = -mean over pairs [s ln(p_i.p_j + 1e-7) + (1 - s) ln(1 - p_i.p_j + 1e-7)]
          pairs: every row r of the target batch and its views (row v*B + i is view v of
          image i) x every filled bank slot j not in the batch (s = 1 iff the two top-k
          feature index sets are equal; both labelled source: s = 1[y_i = y_j]), plus every
          unordered pair of two views of the same image (s = 1). The bank is detached.

Top-k index set of a feature row: the k largest entries (k = 3 for K <= 3, else 7), ties
broken towards the lower index, stored as the sorted index list. The fixture's inputs are
chosen so the k-th and (k+1)-th values are well apart (the C side recomputes the sets from
its own f).

Fixture (tiny backbone: widths 8/16/32/64, one BasicBlock per stage; K = 4; 36x36 inputs
so layer4 keeps 2x2 pixels for training-mode BN): the state_dict (F16-rounded weights,
distinct non-trivial running statistics per BN set), eval outputs with either set, the
training forward of a source batch (set 0) and of a target batch with two views (set 1),
the running statistics after both, each loss with its gradient with respect to p (losses
evaluated on p as a leaf), the total loss L = CE + lam (AC + ES) with lam = 0.5 (the
spec's 0.005 would bury the AC/ES gradients under CE's in a parity test) and the gradient
of every parameter (full for <= 512 elements, else 64 samples + L2 norm + sum, as
wm_ref.py), and the parameter counts of the resnet18 / resnet50 variants.

Usage:
  /usr/bin/python3 tests/models/uda_ref.py           # writes the fixture
  /usr/bin/python3 tests/models/uda_ref.py --count   # parameter counts only
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from ref_common import (FIXDIR, count, f32, grad_entries, random_bn_stats, round_f16, state_f16,
                        write_safetensors)

SOURCE = "tests/models/uda_ref.py"     # the fixtures' __metadata__ source

BACKBONES = {
    # bottleneck, blocks per stage, widths
    "tiny":     (False, [1, 1, 1, 1], [8, 16, 32, 64]),
    "resnet18": (False, [2, 2, 2, 2], [64, 128, 256, 512]),
    "resnet50": (True, [3, 4, 6, 3], [64, 128, 256, 512]),
}
T_HEAD = 0.05


class DomainBN(nn.Module):
    """One BatchNorm2d per domain: d0 (source), d1 (target)."""

    def __init__(self, c):
        super().__init__()
        self.d0 = nn.BatchNorm2d(c)
        self.d1 = nn.BatchNorm2d(c)

    def forward(self, x, d):
        return (self.d0 if d == 0 else self.d1)(x)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = DomainBN(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = DomainBN(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.ModuleList([nn.Conv2d(cin, planes, 1, stride, bias=False),
                                             DomainBN(planes)])

    def forward(self, x, d):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x), d))), d)
        idt = x if self.downsample is None else self.downsample[1](self.downsample[0](x), d)
        return F.relu(out + idt)


class Bottleneck(nn.Module):
    """torchvision v1.5: the stride on the 3x3 conv."""
    expansion = 4

    def __init__(self, cin, planes, stride):
        super().__init__()
        out = 4 * planes
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = DomainBN(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = DomainBN(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = DomainBN(out)
        self.downsample = None
        if stride != 1 or cin != out:
            self.downsample = nn.ModuleList([nn.Conv2d(cin, out, 1, stride, bias=False),
                                             DomainBN(out)])

    def forward(self, x, d):
        h = F.relu(self.bn1(self.conv1(x), d))
        h = F.relu(self.bn2(self.conv2(h), d))
        h = self.bn3(self.conv3(h), d)
        idt = x if self.downsample is None else self.downsample[1](self.downsample[0](x), d)
        return F.relu(h + idt)


class ResNet(nn.Module):
    """torchvision ResNet without fc, DomainBN everywhere: x -> f [B, E]."""

    def __init__(self, name, cin=3):
        super().__init__()
        bottleneck, blocks, widths = BACKBONES[name]
        blk = Bottleneck if bottleneck else BasicBlock
        self.conv1 = nn.Conv2d(cin, widths[0], 7, 2, 3, bias=False)
        self.bn1 = DomainBN(widths[0])
        c = widths[0]
        for i in range(4):
            layer = []
            for j in range(blocks[i]):
                layer.append(blk(c, widths[i], 2 if (i > 0 and j == 0) else 1))
                c = widths[i] * blk.expansion
            setattr(self, f"layer{i + 1}", nn.ModuleList(layer))
        self.E = c
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x, d):
        h = F.max_pool2d(F.relu(self.bn1(self.conv1(x), d)), 3, 2, 1)
        for i in range(1, 5):
            for b in getattr(self, f"layer{i}"):
                h = b(h, d)
        return h.mean(dim=(2, 3))


class UDAModel(nn.Module):
    def __init__(self, backbone, K):
        super().__init__()
        self.backbone = ResNet(backbone)
        self.head = nn.Linear(self.backbone.E, K, bias=False)
        with torch.no_grad():
            self.head.weight.normal_(0, 0.01)
            self.renorm()

    @torch.no_grad()
    def renorm(self):
        w = self.head.weight
        w.div_(w.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def forward(self, x, d):
        f = self.backbone(x, d)
        fn = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
        logits = self.head(fn) / T_HEAD
        return f, logits, torch.softmax(logits, dim=1)


# ------------------------------------------------------------------------------ losses

def topk_of(K):
    return 3 if K <= 3 else 7


def topk_set(row, k):
    """The k largest entries' indices (ties: lower index first), sorted ascending."""
    order = sorted(range(row.numel()), key=lambda i: (-float(row[i]), i))
    return sorted(order[:k])


def entropy(p):
    return -(p * torch.log(p + 1e-5)).sum(dim=1)


def loss_ce(p, labels, class_w):
    w = class_w[labels]
    nll = -torch.log(p.gather(1, labels[:, None]).squeeze(1))
    return (w * nll).sum() / w.sum()


def loss_es(p, rho, m):
    dev = (entropy(p) - rho).abs()
    active = dev > m
    return torch.where(active, -dev, torch.zeros_like(dev)).mean(), float(active.double().mean())


def loss_ac(p, keys, bank, batch_idx, B, n_views):
    """p [n_views*B, K] (rows v*B+i), keys: top-k sets of those rows; bank: dict."""
    terms = []
    inb = set(batch_idx)
    for j in range(bank["n"]):
        if not bank["filled"][j] or j in inb:
            continue
        for r in range(p.shape[0]):
            # The batch rows are unlabelled target rows: the top-k rule.
            s = 1.0 if keys[r] == bank["keys"][j] else 0.0
            sh = (p[r] * bank["p"][j]).sum()
            terms.append(s * torch.log(sh + 1e-7) + (1 - s) * torch.log(1 - sh + 1e-7))
    for i in range(B):
        for v in range(n_views):
            for w in range(v + 1, n_views):
                sh = (p[v * B + i] * p[w * B + i]).sum()
                terms.append(torch.log(sh + 1e-7))
    return -torch.stack(terms).mean(), len(terms)


# ----------------------------------------------------------------------------- fixture

K_FIX, S_FIX, BS, BT, VIEWS, LAM = 4, 36, 3, 2, 3, 0.5


def counts():
    out = {}
    for name, K in (("tiny", 4), ("resnet18", 10), ("resnet50", 10)):
        m = UDAModel(name, K)
        out[name] = (K, count(m))
        print(f"uda backbone={name} K={K}: {count(m)} parameters (E = {m.backbone.E})")
    return out


def min_gap(f, k):
    """Smallest gap between the k-th and (k+1)-th largest entry over the rows."""
    s = f.sort(dim=1, descending=True).values
    return float((s[:, k - 1] - s[:, k]).min())


def make_views(x):
    """View 1: 90 degree rotation; view 2: 1.17x zoom with a centre crop."""
    S = x.shape[-1]
    c = int(round(S / 1.17))
    o = (S - c) // 2
    zoom = F.interpolate(x[..., o:o + c, o:o + c], size=(S, S), mode="bilinear", align_corners=False)
    return torch.cat([x, torch.rot90(x, 1, (2, 3)), zoom], dim=0)


def export_fixture():
    torch.manual_seed(0)
    model = UDAModel("tiny", K_FIX)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        random_bn_stats(model, g)
        for name, p in model.named_parameters():     # distinct affine per BN set
            if ".d0." in name or ".d1." in name:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + (torch.rand(p.shape, generator=g) - 0.5) * 0.4)
        round_f16(model)
    model = model.double()
    sd, out = state_f16(model)
    k = topk_of(K_FIX)

    # Inputs: retry seeds until every top-k set the test depends on has a clear gap.
    for attempt in range(50):
        gi = torch.Generator().manual_seed(100 + attempt)
        xe = f32(torch.rand(3, 3, S_FIX, S_FIX, generator=gi) * 0.9 + 0.05)
        xs = f32(torch.rand(BS, 3, S_FIX, S_FIX, generator=gi) * 0.9 + 0.05)
        xt = f32(make_views(torch.rand(BT, 3, S_FIX, S_FIX, generator=gi) * 0.9 + 0.05))
        model.train()
        with torch.no_grad():
            saved = {n: b.clone() for n, b in model.named_buffers()}
            ft = model(xt, 1)[0]
            for n, b in model.named_buffers():
                b.copy_(saved[n])
        if min_gap(ft, k) > 2e-3 * float(ft.abs().max()):
            break
    else:
        raise SystemExit("no input with well separated top-k features")
    out["in.x_eval"], out["in.x_src"], out["in.x_tgt"] = ("F32", xe), ("F32", xs), ("F32", xt)

    model.eval()
    with torch.no_grad():
        for d in (0, 1):
            f, lg, p = model(xe, d)
            out[f"eval.d{d}.f"], out[f"eval.d{d}.logits"], out[f"eval.d{d}.p"] = \
                ("F32", f), ("F32", lg), ("F32", p)

    model.train()
    fs, ls_, ps = model(xs, 0)
    ft, lt, pt = model(xt, 1)
    for nm, t in (("f", fs), ("logits", ls_), ("p", ps)):
        out[f"train.src.{nm}"] = ("F32", t)
    for nm, t in (("f", ft), ("logits", lt), ("p", pt)):
        out[f"train.tgt.{nm}"] = ("F32", t)
    for name, b in model.named_buffers():
        if "running" in name:
            out["train.buf." + name] = ("F32", b)

    # Loss inputs.
    labels = torch.tensor([2, 0, 2])
    class_w = f32(torch.tensor([0.7, 1.6, 0.9, 1.3], dtype=torch.float64))
    H = entropy(pt[:BT].detach())
    rho = float(f32(torch.tensor(H.median().item())))     # some above, some below
    dev = sorted(float(v) for v in (H - rho).abs())
    # m halfway across the widest gap between sorted deviations: away from the kink.
    gaps = [(dev[i + 1] - dev[i], i) for i in range(len(dev) - 1)]
    _, gi_ = max(gaps)
    margin = float(f32(torch.tensor(0.5 * (dev[gi_] + dev[gi_ + 1]))))
    keys = [topk_set(ft[r].detach(), k) for r in range(ft.shape[0])]
    bank = make_bank(g, keys, k)
    batch_idx = [3, 7]
    out["loss.labels"] = ("F32", labels.double())
    out["loss.class_w"] = ("F32", class_w)
    out["loss.rho_margin"] = ("F32", torch.tensor([rho, margin], dtype=torch.float64))
    out["loss.batch_idx"] = ("F32", torch.tensor(batch_idx, dtype=torch.float64))
    out["bank.p"] = ("F32", bank["p"])
    out["bank.topk"] = ("F32", torch.tensor(bank["keys"], dtype=torch.float64))
    out["bank.domain"] = ("F32", torch.tensor(bank["domain"], dtype=torch.float64))
    out["bank.label"] = ("F32", torch.tensor(bank["label"], dtype=torch.float64))
    out["bank.filled"] = ("F32", torch.tensor(bank["filled"], dtype=torch.float64))
    out["train.tgt.topk"] = ("F32", torch.tensor(keys, dtype=torch.float64))

    # Each loss on p as a leaf (the test feeds the same stored p into the C loss).
    def on_leaf(p0, fn):
        pl = f32(p0.detach()).clone().requires_grad_(True)
        v = fn(pl)
        v = v[0] if isinstance(v, tuple) else v
        v.backward()
        return pl, v, pl.grad
    _, v, gr = on_leaf(ps, lambda p: loss_ce(p, labels, class_w))
    out["loss.ce"], out["loss.ce.grad"] = ("F32", v.reshape(1)), ("F32", gr)
    _, v, gr = on_leaf(pt[:BT], lambda p: loss_es(p, rho, margin))
    _, frac = loss_es(pt[:BT].detach(), rho, margin)
    out["loss.es"], out["loss.es.grad"] = ("F32", v.reshape(1)), ("F32", gr)
    out["loss.es.active_frac"] = ("F32", torch.tensor([frac], dtype=torch.float64))
    npairs = [0]

    def ac(p):
        v, n = loss_ac(p, keys, bank, batch_idx, BT, VIEWS)
        npairs[0] = n
        return v
    _, v, gr = on_leaf(pt, ac)
    out["loss.ac"], out["loss.ac.grad"] = ("F32", v.reshape(1)), ("F32", gr)
    out["loss.ac.npairs"] = ("F32", torch.tensor([npairs[0]], dtype=torch.float64))
    print(f"rho {rho:.4f} margin {margin:.4f} es active {frac:.3f}, ac pairs {npairs[0]}, "
          f"s=1 bank pairs {sum(keys[r] == bank['keys'][j] for r in range(len(keys)) for j in range(bank['n']) if bank['filled'][j] and j not in batch_idx)}")

    # The total through the model: every parameter gradient.
    L = loss_ce(ps, labels, class_w) + LAM * (ac(pt) + loss_es(pt[:BT], rho, margin)[0])
    L.backward()
    out["loss.total"] = ("F32", L.detach().reshape(1))
    out["loss.lambda"] = ("F32", torch.tensor([LAM], dtype=torch.float64))
    grad_entries(model, out)

    for name, (K, n) in counts().items():
        out[f"count.{name}"] = ("F32", torch.tensor([K, n], dtype=torch.float64))
    write_safetensors(os.path.join(FIXDIR, "uda_tiny.safetensors"), out, SOURCE)


def make_bank(g, keys, k, n=10):
    """Hand-filled bank: slots 1, 4 and 8 share a batch row's top-k set (s = 1), the rest
    random sets; slot 5 unfilled, slots 3 and 7 are the batch's own (excluded)."""
    E = 64
    p = torch.softmax(torch.randn(n, K_FIX, generator=g, dtype=torch.float64) * 2, dim=1)
    bkeys = []
    for j in range(n):
        if j in (1, 4, 8):
            bkeys.append(list(keys[{1: 0, 4: 3, 8: 5}[j]]))
        else:
            bkeys.append(sorted(torch.randperm(E, generator=g)[:k].tolist()))
    domain = [0, 1, 0, 1, 1, 0, 0, 1, 1, 0]
    label = [1 if d == 0 else -1 for d in domain]
    label[2], label[9] = 3, 0
    filled = [1, 1, 1, 1, 1, 0, 1, 1, 1, 1]
    return dict(n=n, p=f32(p), keys=bkeys, domain=domain, label=label, filled=filled)


if __name__ == "__main__":
    if "--count" in sys.argv:
        counts()
    else:
        export_fixture()
