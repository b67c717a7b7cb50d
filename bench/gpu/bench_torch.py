"""bench_torch.py — the PyTorch side of `make bench-gpu` (mk/bench_gpu.mk): times the tests/
PyTorch implementations of the specs on one device, the reference our CUDA path is to be
compared with (issue 10).

  wm   WaveletMamba (tests/models/wm_ref.py), default config at 64x64: inference images/s
       (eval, no_grad) at batch 1, 32, 256; training images/s (train mode; loss = mean CE +
       mean (log(1+z_hat) - log(1+z))^2, backward, AdamW step: bench/wm/ref_wm.py's step).
  cf   CF-INN (tests/models/cfinn_ref.py via bench/cf/ref_cf.py): classify images/s at the
       same batches, and the 10-class counterfactual grid of one image (grids/s; ref_cf's
       cf_grid, eager only: its alpha rule runs on the host).
  uda  DeepAstroUDA with the torchvision-free ResNet-18 of tests/models/uda_ref.py: predict
       images/s (eval, target BN set) and the training step of bench/uda/ref_uda.py (source
       CE + target ES + adaptive clustering against the bank, SGD) at BS = BT = batch/2.

Each case runs eager and, with torch >= 2 and --compile auto|on, torch.compile(model)
(mode default); fp32 always, and on CUDA also AMP (autocast, --amp-dtype bf16 or fp16 with
a GradScaler). Timing: --warmup untimed iterations, then at least --iters timed ones (and
at least --min-seconds), each between two torch.cuda.synchronize() calls on CUDA; the
median is reported. Peak memory: torch.cuda.max_memory_allocated() over the case on CUDA,
the process's peak RSS on the CPU. FLOPs: counted analytically once per case on the
forward of the timed batch, with torch.utils.flop_counter.FlopCounterMode when it exists
(every aten matmul/conv, the scan's einsums included), else forward hooks on nn.Conv1d,
nn.Conv2d and nn.Linear (2 * MACs; functional convs and the scan are then not counted:
a lower bound). Training FLOPs are taken as 3x the forward's (backward ~ 2x forward).
Achieved TFLOP/s = FLOPs per image * images/s; the GPU's dense peak for the precision
comes from a datasheet table (or --peak-tflops).

wm_ref.py creates tensors without a device (the scan state, the zero coordinate
features), so on CUDA the default device is set to the benchmark device
(torch.set_default_device, or the default tensor type before torch 2.0).

Output: one JSON object per measurement on stdout; a table on stderr.

  /usr/bin/python3 bench/gpu/bench_torch.py --device cuda
  /usr/bin/python3 bench/gpu/bench_torch.py --device cpu --quick     # smoke (tiny configs)
"""
import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
for sub in (("tests", "models"), ("bench", "cf"), ("bench", "uda")):
    sys.path.insert(0, os.path.join(ROOT, *sub))
import cfinn_ref  # noqa: E402
import ref_cf  # noqa: E402
import ref_uda  # noqa: E402
import uda_ref  # noqa: E402
import wm_ref  # noqa: E402

# Dense (no sparsity) peak TFLOP/s from NVIDIA's datasheets: fp32 (CUDA cores), tf32 and
# bf16/fp16 (tensor cores). Matched against torch.cuda.get_device_name().
PEAKS = [
    ("H200", dict(fp32=67.0, tf32=494.7, half=989.4)),
    ("H100 PCIe", dict(fp32=51.2, tf32=378.0, half=756.0)),
    ("H100 NVL", dict(fp32=60.0, tf32=417.5, half=835.0)),
    ("H100", dict(fp32=67.0, tf32=494.7, half=989.4)),          # SXM (80GB HBM3)
    ("A100", dict(fp32=19.5, tf32=156.0, half=312.0)),
]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny configs, small batches, few iterations")
    p.add_argument("--models", default="wm,cf,uda", help="comma list of wm, cf, uda")
    p.add_argument("--batches", default=None, help="inference batches (default 1,32,256; quick 1,8)")
    p.add_argument("--train-batches", default=None, help="training batches (default 32,256 on cuda, 32 on cpu; quick 8)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations (default 5; quick 1)")
    p.add_argument("--iters", type=int, default=None, help="minimum timed iterations (default 20; quick 3)")
    p.add_argument("--min-seconds", type=float, default=None, help="minimum timed seconds (default 2; quick 0)")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="also time torch.compile (auto: when torch >= 2 and not --quick)")
    p.add_argument("--precisions", default=None, help="fp32,amp (default: fp32,amp on cuda, fp32 on cpu)")
    p.add_argument("--amp-dtype", choices=("bf16", "fp16"), default="bf16")
    p.add_argument("--tf32", action="store_true", help="allow TF32 in matmuls and convs (PyTorch's defaults otherwise)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: nproc)")
    p.add_argument("--peak-tflops", type=float, default=None, help="override the datasheet peak")
    a = p.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch.cuda.is_available() is False")
    q = a.quick
    a.batches = [int(v) for v in (a.batches or ("1,8" if q else "1,32,256")).split(",")]
    tb = a.train_batches or ("8" if q else ("32,256" if a.device == "cuda" else "32"))
    a.train_batches = [int(v) for v in tb.split(",")]
    a.warmup = a.warmup if a.warmup is not None else (1 if q else 5)
    a.iters = a.iters if a.iters is not None else (3 if q else 20)
    a.min_seconds = a.min_seconds if a.min_seconds is not None else (0.0 if q else 2.0)
    a.precisions = (a.precisions or ("fp32,amp" if a.device == "cuda" else "fp32")).split(",")
    a.models = a.models.split(",")
    return a


# ------------------------------------------------------------------------ environment

def torch_major():
    return int(torch.__version__.split(".")[0])


def set_default_device(dev):
    """wm_ref.py / cfinn_ref.py / ref_cf.py make tensors without a device."""
    if dev == "cpu":
        return
    if hasattr(torch, "set_default_device"):
        torch.set_default_device(dev)
    else:
        torch.set_default_tensor_type(torch.cuda.FloatTensor)


def sync(dev):
    if dev == "cuda":
        torch.cuda.synchronize()


def device_name(dev):
    return torch.cuda.get_device_name(0) if dev == "cuda" else (platform.processor() or platform.machine())


def peak_tflops(args, prec):
    if args.peak_tflops:
        return args.peak_tflops
    if args.device != "cuda":
        return None
    name = torch.cuda.get_device_name(0)
    for key, pk in PEAKS:
        if key in name:
            if prec == "amp":
                return pk["half"]
            return pk["tf32"] if torch.backends.cuda.matmul.allow_tf32 else pk["fp32"]
    return None


def autocast(args, prec):
    if prec != "amp":
        return contextlib.nullcontext()
    dt = torch.bfloat16 if args.amp_dtype == "bf16" else torch.float16
    return torch.autocast(device_type=args.device, dtype=dt)


# ------------------------------------------------------------------------------ flops

def count_flops(fn, root):
    """FLOPs of one call of fn (a forward of module root), and how they were counted."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        FlopCounterMode = None
    if FlopCounterMode is not None:
        with FlopCounterMode(display=False) as fc:
            fn()
        return float(fc.get_total_flops()), "FlopCounterMode"
    total = [0.0]

    def hook(mod, inp, out):
        if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
            k = math.prod(mod.kernel_size) * (mod.in_channels // mod.groups)
            total[0] += 2.0 * out.numel() * k
        elif isinstance(mod, nn.Linear):
            total[0] += 2.0 * out.numel() * mod.in_features

    hooks = [mod.register_forward_hook(hook) for mod in root.modules()
             if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    try:
        fn()
    finally:
        for h in hooks:
            h.remove()
    return total[0], "module hooks (nn.Conv1d/Conv2d/Linear only: a lower bound)"



# ----------------------------------------------------------------------------- timing

def timed(args, step):
    """Median and p90 seconds per call of step(), the number of timed calls and the
    warm-up's seconds (the first call of a torch.compile'd model includes compiling)."""
    w0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync(args.device)
    warm = time.perf_counter() - w0
    times, start = [], time.perf_counter()
    while len(times) < args.iters or time.perf_counter() - start < args.min_seconds:
        sync(args.device)
        t0 = time.perf_counter()
        step()
        sync(args.device)
        times.append(time.perf_counter() - t0)
        if len(times) >= 10000:
            break
    times.sort()
    return times[len(times) // 2], times[min(len(times) - 1, (len(times) * 9) // 10)], len(times), warm


def peak_reset(dev):
    if dev == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mem(dev):
    if dev == "cuda":
        return torch.cuda.max_memory_allocated(), "cuda_max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process_peak_rss"


ROWS = []


def emit(args, base, step, per_call, flops_fn=None, train=False):
    """Times step, prints the JSON line and keeps the row for the table."""
    row = dict(bench="torch", date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               host=platform.node(), device=args.device, device_name=device_name(args.device),
               torch=torch.__version__, threads=torch.get_num_threads(),
               tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32),
               tf32_cudnn=bool(torch.backends.cudnn.allow_tf32), warmup=args.warmup,
               **{k: v for k, v in base.items() if k != "unit"})
    peak_reset(args.device)
    try:
        med, p90, n, warm = timed(args, step)
    except Exception as e:                     # noqa: BLE001 (an unsupported mode is a result)
        row.update(error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300])
        print(json.dumps(row), flush=True)
        ROWS.append(row)
        return
    mem, kind = peak_mem(args.device)
    row.update(ms_median=round(med * 1e3, 4), ms_p90=round(p90 * 1e3, 4), iters=n, warmup_s=round(warm, 3),
               per_s=round(per_call / med, 2), per_s_unit=base.get("unit", "images/s"),
               peak_mem_bytes=int(mem), peak_mem_kind=kind)
    if flops_fn is not None:
        try:
            fl, how = flops_fn()
            fl_img = fl / per_call * (3.0 if train else 1.0)
            row.update(gflop_per_image=round(fl_img / 1e9, 4), flops_method=how + (", x3 for training" if train else ""),
                       tflops=float(f"{fl_img * (per_call / med) / 1e12:.4g}"))
            pk = peak_tflops(args, base["precision"])
            if pk:
                row.update(peak_tflops=pk, peak_frac=float(f"{row['tflops'] / pk:.4g}"))
        except Exception as e:                 # noqa: BLE001
            row.update(flops_error=f"{type(e).__name__}: {e}"[:200])
    print(json.dumps(row), flush=True)
    ROWS.append(row)


def variants(args, model):
    """(label, callable module) pairs: eager, and torch.compile when asked for."""
    out = [("eager", model)]
    want = args.compile == "on" or (args.compile == "auto" and not args.quick)
    if want and torch_major() >= 2 and hasattr(torch, "compile"):
        out.append(("torch.compile", torch.compile(model)))
    elif args.compile == "on":
        print(f"note: torch.compile needs torch >= 2 (this is {torch.__version__}): eager only", file=sys.stderr)
    return out


# ------------------------------------------------------------------------ WaveletMamba

def bench_wm(args):
    name = "tiny" if args.quick else "default"
    cfg = dict(wm_ref.CONFIGS[name])
    if not args.quick:
        cfg["S"] = 64                                     # the 64x64
    S = cfg["S"]
    base0 = dict(model="wavelet-mamba", config=name, image=f"{S}x{S}")
    for prec in args.precisions:
        # One model (and one torch.compile of it) per precision for every batch:
        # a compile per case would recompile the unrolled scan each time.
        torch.manual_seed(1)
        m = wm_ref.WaveletMambaModel(cfg).float().to(args.device).eval()
        vs = variants(args, m)
        for B in args.batches:
            x = torch.rand(B, 3, S, S, device=args.device)
            for label, fm in vs:
                def step(fm=fm, x=x):
                    with torch.no_grad(), autocast(args, prec):
                        return fm(x)["logits"]

                def flops(m=m, x=x):
                    with torch.no_grad():
                        return count_flops(lambda: m(x), m)
                emit(args, dict(base0, mode="infer", batch=B, precision=prec, compile=label), step, B, flops)
        torch.manual_seed(1)
        m = wm_ref.WaveletMambaModel(cfg).float().to(args.device).train()
        vs = variants(args, m)
        for B in args.train_batches:
            x = torch.rand(B, 3, S, S, device=args.device)
            labels = torch.arange(B, device=args.device) % cfg["K"]
            logz = torch.log1p(0.05 + 0.01 * torch.arange(B, dtype=torch.float32, device=args.device))
            for label, fm in vs:
                opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
                scaler = torch.cuda.amp.GradScaler() if (prec == "amp" and args.amp_dtype == "fp16") else None

                def step(fm=fm, opt=opt, scaler=scaler):
                    with autocast(args, prec):
                        o = fm(x)
                        loss = F.cross_entropy(o["logits"].float(), labels) + \
                            ((torch.log1p(o["redshift"].float()) - logz) ** 2).mean()
                    opt.zero_grad(set_to_none=True)
                    if scaler:
                        scaler.scale(loss).backward()
                        scaler.step(opt)
                        scaler.update()
                    else:
                        loss.backward()
                        opt.step()

                def flops(m=m, x=x):
                    return count_flops(lambda: m(x), m)
                emit(args, dict(base0, mode="train", batch=B, precision=prec, compile=label), step, B, flops,
                     train=True)


# ------------------------------------------------------------------------------ CF-INN

def bench_cf(args):
    name = "tiny" if args.quick else "default"
    ref_cf.CFG = cfinn_ref.CONFIGS[name]                  # ref_cf reads its CFG at call time
    S, d1 = ref_cf.CFG["S"], ref_cf.CFG["d1"]
    base0 = dict(model="cf-inn", config=name, image=f"{S}x{S}")
    for prec in args.precisions:
        for B in args.batches:
            m = ref_cf.model().to(args.device).eval()
            torch.manual_seed(2)
            x = torch.rand(B, 3, S, S, device=args.device)

            def classify(m=m, x=x):
                with torch.no_grad(), autocast(args, prec):
                    z = m.encoder(x)
                    h, ld = m.flow(z[:, :d1])
                    g = m.logits(h)
                    return torch.softmax(g, 1), -torch.logsumexp(g, 1) - ld

            def flops(m=m, x=x):
                with torch.no_grad():
                    return count_flops(lambda: m.logits(m.flow(m.encoder(x)[:, :d1])[0]), m)
            emit(args, dict(base0, mode="classify", batch=B, precision=prec, compile="eager"), classify, B, flops)
    # The grid: fp32 eager only (the alpha rule runs in double on the host, per target).
    m, x1 = ref_cf.grid_model()
    m, x1 = m.to(args.device), x1.to(args.device)
    emit(args, dict(base0, mode="cfgrid", batch=1, precision="fp32", compile="eager", unit="grids/s"),
         lambda: ref_cf.cf_grid(m, x1), 1)


# --------------------------------------------------------------------------------- UDA

def bench_uda(args):
    bb = "tiny" if args.quick else "resnet18"
    K, S = ref_uda.K, ref_uda.S
    base0 = dict(model="uda", config=bb, image=f"{S}x{S}")
    for prec in args.precisions:
        torch.manual_seed(1)
        m = uda_ref.UDAModel(bb, K).float().to(args.device).eval()
        vs = variants(args, m)
        for B in args.batches:
            x = torch.rand(B, 3, S, S, device=args.device)
            for label, fm in vs:
                def predict(fm=fm, x=x):
                    with torch.no_grad(), autocast(args, prec):
                        _, _, p = fm(x, 1)
                        return p, uda_ref.entropy(p.float()), p.argmax(1)

                def flops(m=m, x=x):
                    with torch.no_grad():
                        return count_flops(lambda: m(x, 1), m)
                emit(args, dict(base0, mode="predict", batch=B, precision=prec, compile=label), predict, B, flops)
        for B in args.train_batches:
            step, m, x_all = uda_train_step(args, bb, prec, max(1, B // 2))

            def flops(m=m, x_all=x_all):          # the forward rows: BS source + 3 BT target views
                return count_flops(lambda: m(x_all, 0), m)
            emit(args, dict(base0, mode="train", batch=2 * max(1, B // 2), precision=prec, compile="eager"),
                 step, 2 * max(1, B // 2), flops, train=True)


def uda_train_step(args, bb, prec, half):
    """bench/uda/ref_uda.py's train(BS, BT) step at BS = BT = half, on args.device."""
    dev, K, S = args.device, ref_uda.K, ref_uda.S
    BS = BT = half
    torch.manual_seed(1)
    m = uda_ref.UDAModel(bb, K).float().to(dev).train()
    torch.manual_seed(3)
    xs = torch.rand(BS, 3, S, S).to(dev)
    xt = uda_ref.make_views(torch.rand(BT, 3, S, S)).to(dev)
    ys = torch.arange(BS, device=dev) % K
    class_w = torch.ones(K, device=dev)
    k = uda_ref.topk_of(K)
    n = max(ref_uda.BANK, BS + BT)
    bank_p = torch.softmax(torch.randn(n, K) * 2, 1).to(dev)
    bank_keys = ref_uda.keys_of(torch.rand(n, m.backbone.E), k).to(dev)
    it = torch.arange(n // 2, n // 2 + BT, device=dev)
    eligible = torch.ones(n, dtype=torch.bool, device=dev)
    eligible[it] = False
    rho, margin = math.log(K) / 2, 0.5 if K < 5 else 1.35
    conv_w = [p for _, p in m.backbone.named_parameters() if p.dim() == 4]
    bn = [p for _, p in m.backbone.named_parameters() if p.dim() != 4]
    opt = torch.optim.SGD([{"params": conv_w, "lr": 1e-3, "weight_decay": 5e-4},
                           {"params": bn, "lr": 1e-3, "weight_decay": 0.0},
                           {"params": [m.head.weight], "lr": 1e-2, "weight_decay": 5e-4}],
                          lr=1e-3, momentum=0.9, nesterov=True)
    scaler = torch.cuda.amp.GradScaler() if (prec == "amp" and args.amp_dtype == "fp16") else None

    def step():
        m.renorm()
        with autocast(args, prec):
            fs, _, ps = m(xs, 0)
            ft, _, pt = m(xt, 1)
        fs, ps, ft, pt = fs.float(), ps.float(), ft.float(), pt.float()
        ce = uda_ref.loss_ce(ps, ys, class_w)
        es, _ = uda_ref.loss_es(pt[:BT], rho, margin)
        ac = ref_uda.loss_ac(pt, ref_uda.keys_of(ft.detach(), k), bank_p, bank_keys, eligible, BT, 3)
        total = ce + ref_uda.LAMBDA * (ac + es)
        opt.zero_grad(set_to_none=True)
        if scaler:
            scaler.scale(total).backward()
            scaler.step(opt)
            scaler.update()
        else:
            total.backward()
            opt.step()
        with torch.no_grad():
            bank_p[:BS] = ps.detach()
            bank_keys[:BS] = ref_uda.keys_of(fs.detach(), k)
            bank_p[it] = pt[:BT].detach()
            bank_keys[it] = ref_uda.keys_of(ft[:BT].detach(), k)

    return step, m, torch.cat([xs, xt], 0)


# ------------------------------------------------------------------------------ table

def table():
    cols = ("model", "config", "mode", "batch", "precision", "compile", "ms_median", "per_s", "tflops", "peak_mem_MiB")
    lines = [cols]
    for r in ROWS:
        mem = f"{r['peak_mem_bytes'] / 2**20:.0f}" if "peak_mem_bytes" in r else ""
        per = f"{r['per_s']} {r.get('per_s_unit', 'images/s')}" if "per_s" in r else ("error: " + r.get("error", ""))[:60]
        lines.append((r["model"], r["config"], r["mode"], str(r["batch"]), r["precision"], r["compile"],
                      str(r.get("ms_median", "")), per, str(r.get("tflops", "")), mem))
    w = [max(len(str(l[i])) for l in lines) for i in range(len(cols))]
    for l in lines:
        print("  ".join(str(v).ljust(w[i]) for i, v in enumerate(l)), file=sys.stderr)


def main():
    args = parse_args()
    torch.set_num_threads(args.threads or os.cpu_count())
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    set_default_device(args.device)
    print(f"bench_torch: torch {torch.__version__} on {args.device} ({device_name(args.device)}), "
          f"{'quick, ' if args.quick else ''}models {','.join(args.models)}, batches {args.batches}, "
          f"train {args.train_batches}, precisions {args.precisions}", file=sys.stderr)
    for name in args.models:
        {"wm": bench_wm, "cf": bench_cf, "uda": bench_uda}[name](args)
    table()
    return 1 if any("error" in r and r["precision"] == "fp32" and r["compile"] == "eager" for r in ROWS) else 0


if __name__ == "__main__":
    sys.exit(main())
