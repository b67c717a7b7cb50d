"""ref_wm.py [CONFIG] — the PyTorch side of scripts/bench_wm.sh: the tests/ PyTorch
implementation of spec/wavelet-mamba.md (tests/models/wm_ref.py), float32, at 64x64:
inference images/s at batch 1 and 32 (eval, no_grad) and training images/s at batch 32
(train mode; loss = mean CE + mean (log(1+z_hat) - log(1+z))^2; backward; AdamW step),
the same work as bench/wm/bench_wm.c. Prints the same tab-separated rows.
Threads: GX_BENCH_THREADS (default: nproc).
"""
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "models"))
import wm_ref  # noqa: E402

SECONDS = float(os.environ.get("GX_BENCH_SECONDS", "1"))
torch.set_num_threads(int(os.environ.get("GX_BENCH_THREADS", os.cpu_count())))


def case(name, train, B):
    cfg = dict(wm_ref.CONFIGS[name], S=64)
    torch.manual_seed(1)
    model = wm_ref.WaveletMambaModel(cfg).float()
    x = torch.rand(B, 3, 64, 64)
    labels = torch.arange(B) % 10
    logz = torch.log1p(0.05 + 0.01 * torch.arange(B, dtype=torch.float32))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        if train:
            model.train()
            o = model(x)
            loss = F.cross_entropy(o["logits"], labels) + ((torch.log1p(o["redshift"]) - logz) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        else:
            model.eval()
            with torch.no_grad():
                model(x)

    step()
    times, start = [], time.perf_counter()
    min_reps = 2 if (train and name == "default") else 3
    while len(times) < 256:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start >= SECONDS and len(times) >= min_reps:
            break
    times.sort()
    med = times[len(times) // 2]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"row\t{name}\t{'train' if train else 'infer'}\t{B}\t{med * 1e3:.3f}\t{B / med:.1f}\tn/a\t{rss}\t{len(times)}",
          flush=True)


if __name__ == "__main__":
    names = sys.argv[1:] or ["tiny", "small", "default"]
    for n in names:
        case(n, False, 1)
        case(n, False, 32)
        case(n, True, 32)
