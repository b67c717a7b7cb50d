"""compare.py — the table of `make bench-gpu`: our rows (bench_gx_gpu, galaxyd.jsonl)
beside bench_torch.py's (torch.jsonl) for the same model, mode and batch.

  /usr/bin/python3 bench/gpu/compare.py TORCH.jsonl GALAXYD.jsonl

Columns: ours per second, one row per precision we ran (fp32: cuBLAS FP32 exact;
tf32: TF32 tensor cores; "graph" after it: the calls replayed a CUDA graph); PyTorch eager fp32 (the like-for-like reference for our
fp32 row) and the ratio ours / eager; the best PyTorch row of any precision and
compile mode (AMP, torch.compile) and the ratio to that. A case one side lacks shows "—". Rows with an
"error" key (a mode that failed on that machine) are listed under the table.
"""
import json
import sys


def load(path):
    rows = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    rows.append(json.loads(line))
    except FileNotFoundError:
        pass
    return rows


def key(r):
    return (r.get("model"), r.get("mode"), int(r.get("batch", 0)))


def fmt(v):
    return "—" if v is None else (f"{v:,.1f}" if v >= 10 else f"{v:.3g}")


def table(torch_rows, ours):
    eager, best, errors = {}, {}, []
    for r in torch_rows:
        if "error" in r:
            errors.append(r)
            continue
        k = key(r)
        if r.get("precision") == "fp32" and r.get("compile") == "eager":
            eager[k] = r
        if k not in best or r["per_s"] > best[k]["per_s"]:
            best[k] = r
    out = ["| model | mode | batch | config | ours /s | our precision | PyTorch eager fp32 /s | ours / eager | "
           "best PyTorch /s (mode) | ours / best |",
           "|---|---|---:|---|---:|---|---:|---:|---:|---:|"]
    keys = sorted({key(r) for r in ours} | set(eager), key=lambda k: (k[0] or "", k[1] or "", k[2]))
    for k in keys:
        mine_rows = sorted((r for r in ours if key(r) == k),
                           key=lambda r: (r.get("precision", ""), bool(r.get("graph")))) or [None]
        e, b = eager.get(k), best.get(k)
        for o in mine_rows:
            mine = o["per_s"] if o else None
            ratio = lambda ref: f"{mine / ref['per_s']:.2f}×" if (mine and ref and ref["per_s"] > 0) else "—"  # noqa: E731
            bmode = f"{fmt(b['per_s'])} ({b.get('precision')}, {b.get('compile')})" if b else "—"
            cfg = (o or e or b or {}).get("config", "")
            prec = (o.get("precision", "fp32") + (" graph" if o.get("graph") else "")) if o else "—"
            out.append(f"| {k[0]} | {k[1]} | {k[2]} | {cfg} | {fmt(mine)} | {prec} | "
                       f"{fmt(e['per_s'] if e else None)} | {ratio(e)} | {bmode} | {ratio(b)} |")
    for r in errors:
        out.append(f"\nPyTorch {key(r)} {r.get('precision')}/{r.get('compile')}: {r['error']}")
    return "\n".join(out)


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    print(table(load(argv[1]), load(argv[2])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
