"""ref_cf.py CASE [B] — the PyTorch side of scripts/bench_cf.sh: the same work as
bench/cf/bench_cf.c on tests/models/cfinn_ref.py's modules (imported, not copied),
default config (64x64, d 64, d1 16), float32, eager:

  classify B   eval, no_grad: encoder, flow (with log|det|), g, argmin, softmax, nll
  train B      train mode: noise 0.05 on z1, decoder, cfinn_ref.losses (IB, MMD,
               SSIM + L1 at the spec's weights), backward, clip_grad_norm_ 8, Adam
               (betas 0.9/0.99, eps 1e-8, lr 3e-4, mixture means 3e-4 x 3)
  cfgrid       one image to all 10 classes, the algorithm of models/cf_inn_cf.c:
               encode + flow, decode x~, the alpha rule per target (double),
               inverse flow of the 9 hidden targets (batch 9), decode (batch 9),
               re-encode + flow of the 9 and of x~, MSD and SSIM of the three pairs
               per target; p50/p99/mean over GX_BENCH_CF_RUNS (100, at least 30)
  cfphases     the same grid with each phase timed

Prints the rows bench_cf prints. Threads: GX_BENCH_THREADS (default: nproc).
"""
import math
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "models"))
import cfinn_ref  # noqa: E402

SECONDS = float(os.environ.get("GX_BENCH_SECONDS", "1"))
RUNS = max(30, int(os.environ.get("GX_BENCH_CF_RUNS", "100")))
torch.set_num_threads(int(os.environ.get("GX_BENCH_THREADS", os.cpu_count())))
CFG = cfinn_ref.CONFIGS["default"]
MARGIN = 0.5


def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def model():
    torch.manual_seed(1)
    return cfinn_ref.CFINN(CFG, small_flow=True, seed=1).float()


def images(n):
    torch.manual_seed(2)
    return torch.rand(n, 3, CFG["S"], CFG["S"])


def repeat(fn, min_reps=3):
    fn()
    times, start = [], time.perf_counter()
    while len(times) < 512:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start >= SECONDS and len(times) >= min_reps:
            break
    times.sort()
    return times[len(times) // 2], len(times)


def hidden(m, x):
    z = m.encoder(x)
    h, ld = m.flow(z[:, :CFG["d1"]])
    return z, h, ld


def nearest(m, h):
    return torch.cdist(h.double(), m.mixture.mu.double()).argmin(1)


# ------------------------------------------------------------------ classify / train

def classify(B):
    m = model().eval()
    x = images(B)

    def step():
        with torch.no_grad():
            _, h, ld = hidden(m, x)
            g = m.logits(h)
            pred = nearest(m, h)
            probs = torch.softmax(g, 1)
            nll = -torch.logsumexp(g, 1) - ld
        return pred, probs, nll

    med, reps = repeat(step)
    print(f"row\tclassify\t{B}\t{med * 1e3:.3f}\t{B / med:.1f}\tn/a\t{rss()}\t{reps}", flush=True)


def train(B):
    m = model().train()
    x = images(B)
    labels = torch.arange(B) % CFG["K"]
    mu = [m.mixture.mu]
    rest = [p for n, p in m.named_parameters() if n != "mixture.mu"]
    opt = torch.optim.Adam([{"params": rest, "lr": 3e-4}, {"params": mu, "lr": 9e-4}],
                           betas=(0.9, 0.99), eps=1e-8)

    def step():
        noise = torch.randn(B, CFG["d1"]) * cfinn_ref.NOISE_SIGMA
        nsamp = torch.randn(B, CFG["d"])
        out = m(x, noise)
        L = cfinn_ref.losses(m, out, x, labels, nsamp)
        opt.zero_grad()
        L["total"].backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 8.0)
        opt.step()

    med, reps = repeat(step)
    print(f"row\ttrain\t{B}\t{med * 1e3:.3f}\t{B / med:.1f}\tn/a\t{rss()}\t{reps}", flush=True)


# ------------------------------------------------------------------ counterfactuals

def alpha_bounds(h, delta, mu, q):
    """[L, U] of alpha with g_q - g_c >= MARGIN for every c != q along h + alpha delta."""
    dm = mu[q][None, :] - mu                               # [K,d1]
    a = dm @ h - 0.5 * ((mu[q] ** 2).sum() - (mu ** 2).sum(1))
    b = dm @ delta
    keep = torch.arange(mu.shape[0]) != q
    a, b = a[keep], b[keep]
    if bool(((b == 0) & (a < MARGIN)).any()):
        return None
    t = (MARGIN - a) / b
    lo = t[b > 0].max().item() if bool((b > 0).any()) else -math.inf
    hi = t[b < 0].min().item() if bool((b < 0).any()) else math.inf
    return (lo, hi) if lo <= hi else None


def alpha_for(h, delta, mu, p, q):
    lu = alpha_bounds(h, delta, mu, q)
    if lu is None:
        return None
    lo, hi = lu
    w = mu[q] - mu[p]
    dw = (delta * w).sum().item()
    a1 = math.nan
    if (w * w).sum().item() > 0 and dw != 0:
        bw = (-0.5 * (mu[p] + mu[q]) * w).sum().item()
        a1 = 0.8 + 0.5 * ((-bw - (h * w).sum().item()) / dw)
    if not math.isfinite(a1):
        a1 = lo if math.isfinite(lo) else hi if math.isfinite(hi) else 0.0
    return min(max(a1, lo), hi)


def direction(m, h, p, q):
    mu = m.mixture.mu.detach().double()
    mh = m.mhat.double()
    valid = m.mhat_valid
    sp = mh[p] if valid[p] > 0.5 else mu[p]
    sq = mh[q] if valid[q] > 0.5 else mu[q]
    delta = sq - sp
    a = alpha_for(h, delta, mu, p, q)
    if a is None:
        delta = mu[q] - h
        a = alpha_for(h, delta, mu, p, q)
        a = 1.0 if a is None else a
    return h + a * delta


def pair_metrics(a, b):
    """MSD and the mean over bands of SSIM per pair (a, b [n,3,S,S])."""
    msd = ((a - b) ** 2).mean(dim=(1, 2, 3))
    _, s = cfinn_ref.ssim(a, b)
    return msd, s


def cf_grid(m, x, ph=None):
    """x [1,3,S,S]; all K targets. ph: list of phase end times (filled when given)."""
    d1, K = CFG["d1"], CFG["K"]
    mark = (lambda: ph.append(time.perf_counter())) if ph is not None else (lambda: None)
    with torch.no_grad():
        mark()
        z, h, _ = hidden(m, x)
        mark()
        xrec = m.decoder(z)
        mark()
        hd = h[0].double()
        p = int(nearest(m, h)[0])
        targets = [q for q in range(K) if q != p]
        hcf = torch.stack([direction(m, hd, p, q) for q in targets]).float()
        reached_hidden = nearest(m, hcf) == torch.tensor(targets)
        mark()
        zc = torch.cat([m.flow.inverse(hcf), z[:, d1:].expand(len(targets), -1)], 1)
        mark()
        xcf = m.decoder(zc)
        mark()
        _, h2, _ = hidden(m, xcf)
        pred = nearest(m, h2)
        mark()
        _, hs, _ = hidden(m, xrec)
        self_pred = nearest(m, hs)
        mark()
        grid = torch.cat([xcf[:p], xrec, xcf[p:]], 0)        # target order 0..K-1
        xs, xr = x.expand(K, -1, -1, -1), xrec.expand(K, -1, -1, -1)
        metrics = [pair_metrics(xs, grid), pair_metrics(xr, grid), pair_metrics(x, xrec)]
        mark()
    return grid, reached_hidden, pred, self_pred, metrics


def grid_model():
    m = model().eval()
    xs = images(64)
    with torch.no_grad():      # m-hat over 64 images (not timed), as bench_cf
        _, h, _ = hidden(m, xs)
        pred = nearest(m, h)
        for c in range(CFG["K"]):
            sel = pred == c
            if bool(sel.any()):
                m.mhat[c] = h[sel].mean(0)
                m.mhat_valid[c] = 1
    return m, xs[:1]


def quantile(sorted_t, q):
    i = min(len(sorted_t) - 1, math.ceil(q * (len(sorted_t) - 1) - 1e-6))
    return sorted_t[i]


def cfgrid():
    m, x = grid_model()
    t = []
    for r in range(RUNS + 2):
        t0 = time.perf_counter()
        cf_grid(m, x)
        if r >= 2:
            t.append(time.perf_counter() - t0)
    mean = sum(t) / len(t)
    t.sort()
    print(f"lat\tcfgrid\t{CFG['K']}\t{quantile(t, 0.5) * 1e3:.3f}\t{quantile(t, 0.99) * 1e3:.3f}\t"
          f"{mean * 1e3:.3f}\tn/a\t{rss()}\t{len(t)}", flush=True)


PHASES = ["encode+flow x (batch 1)", "decode x~ (batch 1)",
          "alpha rule (9 targets, Python)", "inverse flow (batch 9)", "decode x_cf (batch 9)",
          "re-encode+flow x_cf (batch 9)", "re-encode+flow x~ (batch 1)",
          "metrics: MSD + 3-band SSIM of 21 pairs"]


def cfphases():
    m, x = grid_model()
    cols = [[] for _ in PHASES]
    for r in range(RUNS + 2):
        ph = []
        cf_grid(m, x, ph)
        if r >= 2:
            for i in range(len(PHASES)):
                cols[i].append(ph[i + 1] - ph[i])
    total = 0.0
    for name, c in zip(PHASES, cols):
        c.sort()
        total += c[len(c) // 2]
        print(f"phase\t{name}\t{len(c)}\t{c[len(c) // 2] * 1e3:.3f}")
    print(f"phase\tsum of medians\t{RUNS}\t{total * 1e3:.3f}", flush=True)


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    B = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    if what == "classify":
        classify(B)
    elif what == "train":
        train(B)
    elif what == "cfgrid":
        cfgrid()
    elif what == "cfphases":
        cfphases()
    else:
        sys.exit("usage: ref_cf.py classify B | train B | cfgrid | cfphases")


if __name__ == "__main__":
    main()
