"""ref_uda.py CASE ... — the PyTorch side of scripts/bench_uda.sh: the same work as
bench/uda/bench_uda.c on tests/models/uda_ref.py's modules (imported, not copied):
DeepAstroUDA, ResNet-18 backbone, 64x64, K 2, float32, eager.

  predict B      eval, no_grad, target BN set: features, cosine logits, softmax,
                 entropy (uda_ref.entropy), argmax
  train BS BT    head renorm; source forward (BS, set 0, train mode) + uda_ref.loss_ce;
                 target forward of BT images and their two views (3*BT rows, set 1) +
                 uda_ref.loss_es + adaptive clustering against a full bank of
                 GX_BENCH_UDA_BANK (2048) slots; CE + 0.005 (AC + ES); backward; SGD
                 (Nesterov 0.9, weight decay 5e-4 on conv weights and the head, lr 1e-3,
                 head 1e-2); bank update. The views are built once, as on the C side.

The AC term is vectorised here (uda_ref.loss_ac is a per-pair Python loop written for
the parity fixture, far too slow to time): s = 1 iff the sorted top-k feature index sets
agree, every batch row x every bank slot outside the batch, plus the view pairs.
Prints the rows bench_uda prints. Threads: GX_BENCH_THREADS (default: nproc).
"""
import math
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "models"))
import uda_ref  # noqa: E402

SECONDS = float(os.environ.get("GX_BENCH_SECONDS", "1"))
BANK = int(os.environ.get("GX_BENCH_UDA_BANK", "2048"))
torch.set_num_threads(int(os.environ.get("GX_BENCH_THREADS", os.cpu_count())))
K, S, LAMBDA = 2, 64, 0.005


def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def repeat(fn):
    fn()
    times, start = [], time.perf_counter()
    while len(times) < 256:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start >= SECONDS and len(times) >= 3:
            break
    times.sort()
    return times[len(times) // 2], len(times)


def model():
    torch.manual_seed(1)
    return uda_ref.UDAModel("resnet18", K).float()


def predict(B):
    m = model().eval()
    torch.manual_seed(2)
    x = torch.rand(B, 3, S, S)

    def step():
        with torch.no_grad():
            _, _, p = m(x, 1)
            return p, uda_ref.entropy(p), p.argmax(1)

    med, reps = repeat(step)
    print(f"row\tpredict\t{B}\t{med * 1e3:.3f}\t{B / med:.1f}\tn/a\t{rss()}\t{reps}", flush=True)


def keys_of(f, k):
    return torch.topk(f, k, dim=1).indices.sort(dim=1).values


def loss_ac(p, keys, bank_p, bank_keys, eligible, B, n_views):
    sh = p @ bank_p[eligible].T                                     # [R, M]
    s = (keys[:, None, :] == bank_keys[eligible][None, :, :]).all(-1).to(p.dtype)
    t_bank = s * torch.log(sh + 1e-7) + (1 - s) * torch.log(1 - sh + 1e-7)
    pv = p.reshape(n_views, B, -1)
    t_views = [torch.log((pv[v] * pv[w]).sum(1) + 1e-7) for v in range(n_views) for w in range(v + 1, n_views)]
    terms = torch.cat([t_bank.reshape(-1)] + t_views)
    return -terms.mean()


def train(BS, BT):
    m = model().train()
    torch.manual_seed(3)
    xs = torch.rand(BS, 3, S, S)
    xt = uda_ref.make_views(torch.rand(BT, 3, S, S))
    ys = torch.arange(BS) % K
    class_w = torch.ones(K)
    k = uda_ref.topk_of(K)
    E = m.backbone.E
    n = max(BANK, BS + BT)
    bank_p = torch.softmax(torch.randn(n, K) * 2, 1)
    bank_keys = keys_of(torch.rand(n, E), k)
    it = torch.arange(n // 2, n // 2 + BT)
    eligible = torch.ones(n, dtype=torch.bool)
    eligible[it] = False
    rho, margin = math.log(K) / 2, 0.5 if K < 5 else 1.35       # the tuner's start
    conv_w = [p for name, p in m.backbone.named_parameters() if p.dim() == 4]
    bn = [p for name, p in m.backbone.named_parameters() if p.dim() != 4]
    opt = torch.optim.SGD([{"params": conv_w, "lr": 1e-3, "weight_decay": 5e-4},
                           {"params": bn, "lr": 1e-3, "weight_decay": 0.0},
                           {"params": [m.head.weight], "lr": 1e-2, "weight_decay": 5e-4}],
                          lr=1e-3, momentum=0.9, nesterov=True)

    def step():
        m.renorm()
        fs, _, ps = m(xs, 0)
        ce = uda_ref.loss_ce(ps, ys, class_w)
        ft, _, pt = m(xt, 1)
        es, _ = uda_ref.loss_es(pt[:BT], rho, margin)
        ac = loss_ac(pt, keys_of(ft.detach(), k), bank_p, bank_keys, eligible, BT, 3)
        total = ce + LAMBDA * (ac + es)
        opt.zero_grad()
        total.backward()
        opt.step()
        with torch.no_grad():                                       # bank update
            bank_p[:BS] = ps.detach()
            bank_keys[:BS] = keys_of(fs.detach(), k)
            bank_p[it] = pt[:BT].detach()
            bank_keys[it] = keys_of(ft[:BT].detach(), k)

    med, reps = repeat(step)
    print(f"row\ttrain\t{BS}+{BT}\t{med * 1e3:.3f}\t{(BS + BT) / med:.1f}\tn/a\t{rss()}\t{reps}", flush=True)


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    a = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    b = int(sys.argv[3]) if len(sys.argv) > 3 else a
    if what == "predict":
        predict(a)
    elif what == "train":
        train(a, b)
    else:
        sys.exit("usage: ref_uda.py predict B | train BS BT")


if __name__ == "__main__":
    main()
