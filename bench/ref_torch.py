#!/usr/bin/env python3
"""ref_torch.py — the PyTorch side of `make bench`.

Runs the same cases as bench/bench_kernels.c (same shapes, same thread
count, same warm-up / repeat / median policy) and prints the same
tab-separated lines, which scripts/bench.sh joins with the C output:

    meta  <key> <value>
    row   <op> <shape> <pass> <median_ms> <items_per_s> <gflops> <mem_bytes> <reps>
    peak  mm <shape> <median_ms> <gflops>

Passes: `fwd` runs under torch.no_grad() (like the C side's grad_enabled=0);
`fwd+bwd` makes every input a leaf with requires_grad, runs the forward and
out.backward(ones), and drops the leaves' .grad before the next call (the C
side resets its arena, which frees its gradients).

Memory column (NOT the same quantity as the C side's arena high-water):
bytes of the tensors a call keeps alive — the output, the tensors autograd
saved for backward (collected with saved_tensors_hooks, deduplicated by
storage, inputs excluded) and, for fwd+bwd, the leaves' gradients.
Temporaries freed inside an op are not counted, so this is a lower bound
on PyTorch's peak; the C number counts all scratch and is an upper bound
of the same kind.

FLOP formulas: see the comment at the top of bench/bench_kernels.c (the
GFLOP/s column of the table is the C side's; this script prints its own
for reference).

The scan reference is the recurrence of kernels/gx_scan.h written the way a
PyTorch user would: ZOH discretisation vectorised over [B, L, E, N], then a
Python loop over t on [B, E, N] tensors, autograd for the backward. Sinkhorn
is the iteration of kernels/gx_sinkhorn.h, batched, autograd backward.

Environment: GX_BENCH_THREADS (default nproc), GX_BENCH_SECONDS (1),
GX_BENCH_MINREPS (3), GX_BENCH_MAXREPS (200), GX_BENCH_OPS (comma-separated op
names, exact match; sgemm selects the torch.mm peak).
"""
import math
import os
import re
import statistics
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # bench.sh prints n/a for the torch columns
    print("meta\ttorch\tmissing")
    sys.exit(0)


def env_num(name, default):
    v = os.environ.get(name, "")
    return float(v) if v else default


THREADS = int(env_num("GX_BENCH_THREADS", os.cpu_count() or 1))
SECONDS = env_num("GX_BENCH_SECONDS", 1.0)
MIN_REPS = max(1, int(env_num("GX_BENCH_MINREPS", 3)))
MAX_REPS = max(MIN_REPS, int(env_num("GX_BENCH_MAXREPS", 200)))
OPS = set(filter(None, os.environ.get("GX_BENCH_OPS", "").split(","))) or None


# ------------------------------------------------------------------ ops

def ssm_scan(xs, delta, A, Bm, Cm):
    """xs, delta [B, L, E]; A, Bm, Cm [E, N] -> y [B, L, E] (gx_scan.h)."""
    dA = delta.unsqueeze(-1) * A                          # [B, L, E, N]
    Abar = torch.exp(dA)
    # ZOH: (exp(dA) - 1)/A * B, and delta*B where |dA| < 1e-6.
    Bbar = torch.where(dA.abs() < 1e-6, delta.unsqueeze(-1) * Bm, (Abar - 1) / A * Bm)
    Bx = Bbar * xs.unsqueeze(-1)                          # [B, L, E, N]
    # unbind, not Abar[:, t]: the backward of L separate selects would
    # allocate L full-size [B, L, E, N] gradient buffers; unbind's backward
    # stacks once. This is the fairest plain-PyTorch version of the loop.
    h = xs.new_zeros(xs.shape[0], xs.shape[2], A.shape[1])
    ys = []
    for a_t, bx_t in zip(Abar.unbind(1), Bx.unbind(1)):
        h = a_t * h + bx_t                                # [B, E, N]
        ys.append((h * Cm).sum(-1))                       # [B, E]
    return torch.stack(ys, dim=1)


def sinkhorn_hk(a, b, C, lam=0.5, iters=50, eps=1e-4):
    """a, b [B, n]; C [n, n] -> [B] (gx_sinkhorn.h, the spec's settings)."""
    K = torch.exp(torch.clamp(-C / lam, -100, 100))
    v = torch.ones_like(b)
    for _ in range(iters):
        u = a / (v @ K.t() + eps)        # (K v) for every row
        v = b / (u @ K + eps)            # (K^T u)
    s = ((u @ (K * C)) * v).sum(-1)      # sum_ij u_i K_ij C_ij v_j
    return torch.sqrt(torch.clamp(s, min=0) + 1e-8)


# ---------------------------------------------------------------- cases

def case_linear(B, I=256, O=256):
    x = torch.randn(B, I)
    w = torch.randn(O, I) / math.sqrt(I)
    b = torch.randn(O) * 0.1
    return dict(op="linear", shape=f"{B}x{I}->{O}", items=B, leaves=[x, w, b],
                fn=lambda x, w, b: F.linear(x, w, b), flops=2.0 * B * I * O, bwd_factor=3)


def case_conv(op, B, Cin=128, Cout=128, H=64, W=64, groups=1):
    cg = Cin // groups
    x = torch.randn(B, Cin, H, W)
    w = torch.randn(Cout, cg, 3, 3) / math.sqrt(9.0 * cg)
    b = torch.randn(Cout) * 0.1
    return dict(op=op, shape=f"{B}x{Cin}x{H}x{W}->{Cout}", items=B, leaves=[x, w, b],
                fn=lambda x, w, b: F.conv2d(x, w, b, stride=1, padding=1, groups=groups),
                flops=2.0 * B * Cout * H * W * cg * 9, bwd_factor=3)


def case_scan(B=32, L=64, E=256, N=16):
    xs = torch.randn(B, L, E)
    delta = torch.empty(B, L, E).uniform_(1e-3, 0.1)
    A = torch.empty(E, N).uniform_(-16, -1)
    Bm = torch.randn(E, N)
    Cm = torch.randn(E, N)
    return dict(op="ssm_scan", shape=f"B{B} L{L} E{E} N{N}", items=B,
                leaves=[xs, delta, A, Bm, Cm], fn=ssm_scan, flops=0, bwd_factor=0)


def case_sinkhorn(B=512, n=40):
    a = torch.empty(B, n).uniform_(0.1, 1.0)
    a = a / a.sum(-1, keepdim=True)
    b = torch.empty(B, n).uniform_(0.1, 1.0)
    b = b / b.sum(-1, keepdim=True)
    c = torch.linspace(1e-6, 2.0, n)
    C = (c[:, None] - c[None, :]) ** 2 + 1.0
    return dict(op="sinkhorn_hk", shape=f"B{B} n{n} it50", items=B, leaves=[a, b],
                fn=lambda a, b: sinkhorn_hk(a, b, C), flops=4.0 * B * 50 * n * n, bwd_factor=0)


CASES = [
    ("linear", lambda: case_linear(1)),
    ("linear", lambda: case_linear(32)),
    ("linear", lambda: case_linear(512)),
    ("conv2d", lambda: case_conv("conv2d", 1)),
    ("conv2d", lambda: case_conv("conv2d", 32)),
    ("conv2d_dw", lambda: case_conv("conv2d_dw", 32, groups=128)),
    ("ssm_scan", case_scan),
    ("sinkhorn_hk", case_sinkhorn),
]


# --------------------------------------------------------------- timing

def storage_key(t):
    s = t.storage()
    return s.data_ptr(), s.nbytes()


def one_call(c, backward, track=None):
    """One forward (+ backward). With track (a dict), records kept bytes."""
    if not backward:
        with torch.no_grad():
            out = c["fn"](*c["leaves"])
        if track is not None:
            track[storage_key(out)[0]] = storage_key(out)[1]
        return
    leaves = [t.detach().requires_grad_(True) for t in c["leaves"]]
    if track is None:
        out = c["fn"](*leaves)
    else:
        leaf_ptrs = {storage_key(t)[0] for t in leaves}

        def pack(t):
            p, n = storage_key(t)
            if p not in leaf_ptrs:
                track[p] = n
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = c["fn"](*leaves)
        track[storage_key(out)[0]] = storage_key(out)[1]
    out.backward(torch.ones_like(out))
    if track is not None:
        for t in leaves:
            track[("grad", storage_key(t.grad)[0])] = storage_key(t.grad)[1]


def measure(c, backward):
    t0 = time.perf_counter()
    one_call(c, backward)                      # warm-up
    if time.perf_counter() - t0 < 0.05 * SECONDS:
        one_call(c, backward)
    times = []
    start = time.perf_counter()
    while len(times) < MAX_REPS and (len(times) < MIN_REPS or time.perf_counter() - start < SECONDS):
        a = time.perf_counter()
        one_call(c, backward)
        times.append(time.perf_counter() - a)
    track = {}
    one_call(c, backward, track)               # untimed: the hooks cost time
    return statistics.median(times), len(times), sum(track.values())


def bench_mm(n=2048):
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    start = time.perf_counter()
    while len(times) < 64 and (len(times) < MIN_REPS or time.perf_counter() - start < SECONDS):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    print(f"peak\tmm\t{n}x{n}x{n}\t{med * 1e3:.4f}\t{2.0 * n ** 3 / med * 1e-9:.2f}", flush=True)


def blas_info():
    m = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    return f"BLAS_INFO={m.group(1)}" if m else "BLAS_INFO unknown"


def main():
    torch.set_num_threads(THREADS)
    torch.manual_seed(1234)
    print(f"meta\ttorch\t{torch.__version__}")
    print(f"meta\ttorch_threads\t{torch.get_num_threads()}")
    print(f"meta\ttorch_blas\t{blas_info()}")
    print("meta\ttorch_memory\toutput + autograd-saved tensors (+ leaf grads) kept by one call; "
          "temporaries not counted", flush=True)
    if not OPS or "sgemm" in OPS:
        bench_mm()
    for op, make in CASES:
        if OPS and op not in OPS:
            continue
        c = make()
        for backward in (False, True):
            med, reps, mem = measure(c, backward)
            flops = c["flops"] * (c["bwd_factor"] if backward else 1)
            gf = f"{flops / med * 1e-9:.2f}" if flops > 0 else "n/a"
            print(f"row\t{c['op']}\t{c['shape']}\t{'fwd+bwd' if backward else 'fwd'}\t{med * 1e3:.4f}\t"
                  f"{c['items'] / med:.1f}\t{gf}\t{mem}\t{reps}", flush=True)


if __name__ == "__main__":
    main()
