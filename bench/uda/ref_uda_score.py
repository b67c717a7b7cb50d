"""ref_uda_score.py CKPT DATA.h5 [B] [--check-db DB] — the PyTorch side of scripts/bench_uda_ingest.sh:
the predict phase of offline scoring on tests/models/uda_ref.py's modules (imported, not
copied), as bench/uda/bench_uda_score.c times it on the engine.

The model is built from the checkpoint's metadata (backbone, classes, size) and its
weights are loaded (the state_dict names are the C model's, see uda_ref.py), so it is the
same model, not just the same shape. The file's images are resized to the model's side
once, untimed (F.interpolate bilinear with antialias, the engine's gx_pre_resize); then
whole passes of eval forward (target BN set), softmax, entropy and argmax in batches of B
(default 64, galaxy-train score's --batch) are timed until GX_BENCH_SECONDS (default 1),
median. Threads: GX_BENCH_THREADS (default: nproc).

Prints "row predict B images seconds images/s peak_rss_bytes reps", as bench_uda_score.

--check-db DB: the same numbers? DB holds `galaxy-train score` rows of this checkpoint and
file (object ids "<file name>:<index>"); prints "check rows max_abs_score_diff
class_agreements" against this model's H / ln K and argmax (the entropy here is
uda_ref.entropy, the spec's H with its 1e-5).
"""
import json
import math
import os
import sqlite3
import resource
import struct
import sys
import time

import h5py
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "models"))
import uda_ref  # noqa: E402

SECONDS = float(os.environ.get("GX_BENCH_SECONDS", "1"))
torch.set_num_threads(int(os.environ.get("GX_BENCH_THREADS", os.cpu_count())))
DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    """(tensors as float32 torch tensors by name, the __metadata__ dict)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        blob = f.read()
    meta = head.pop("__metadata__", {})
    out = {}
    for name, d in head.items():
        a, b = d["data_offsets"]
        arr = np.frombuffer(blob[a:b], dtype=DTYPES[d["dtype"]]).reshape(d["shape"])
        out[name] = torch.from_numpy(arr.astype(np.float32))
    return out, meta


def load_model(path):
    tensors, meta = read_safetensors(path)
    cfg = json.loads(meta["config"])
    m = uda_ref.UDAModel(cfg["backbone"], int(cfg["classes"])).float()
    missing, unexpected = m.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        sys.exit(f"ref_uda_score.py: {path}: state_dict mismatch: missing {missing[:4]}, "
                 f"unexpected {unexpected[:4]}")
    return m.eval(), int(cfg["size"])


def images(path, side):
    with h5py.File(path, "r") as f:
        x = torch.from_numpy(np.asarray(f["images"], dtype=np.float32) / 255.0)   # N,H,W,3
    x = x.permute(0, 3, 1, 2).contiguous()
    if x.shape[-1] != side:
        x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    return x


def check(m, x, data, db):
    """Stored scores of DB against this model's, row by row."""
    with torch.no_grad():
        _, _, p = m(x, 1)
    score = (uda_ref.entropy(p) / math.log(p.shape[1])).tolist()
    pred = p.argmax(1).tolist()
    prefix = os.path.basename(data) + ":"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = con.execute("SELECT o.external_id, a.score, a.class_index FROM anomaly_scores a "
                       "JOIN objects o ON o.id = a.object_id WHERE o.external_id LIKE ?", (prefix + "%",)).fetchall()
    con.close()
    diff, agree = 0.0, 0
    for ext, sc, ci in rows:
        i = int(ext[len(prefix):])
        diff = max(diff, abs(sc - score[i]))
        agree += int(ci == pred[i])
    print(f"check\t{len(rows)}\t{diff:.3g}\t{agree}", flush=True)


def main():
    args = sys.argv[1:]
    db = None
    if "--check-db" in args:
        k = args.index("--check-db")
        db = args[k + 1] if k + 1 < len(args) else sys.exit("ref_uda_score.py: --check-db needs a file")
        del args[k:k + 2]
    if len(args) not in (2, 3):
        sys.exit("usage: ref_uda_score.py CKPT DATA.h5 [B] [--check-db DB]")
    B = int(args[2]) if len(args) > 2 else 64
    m, side = load_model(args[0])
    x = images(args[1], side)
    n = x.shape[0]
    if db:
        check(m, x, args[1], db)

    def one_pass():
        with torch.no_grad():
            for i0 in range(0, n, B):
                _, _, p = m(x[i0:i0 + B], 1)
                uda_ref.entropy(p), p.argmax(1)

    one_pass()                                   # warm-up
    times, start = [], time.perf_counter()
    while len(times) < 256:
        t0 = time.perf_counter()
        one_pass()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start >= SECONDS:
            break
    times.sort()
    med = times[len(times) // 2]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"row\tpredict\t{B}\t{n}\t{med:.4f}\t{n / med:.1f}\t{rss}\t{len(times)}", flush=True)


if __name__ == "__main__":
    main()
