#!/usr/bin/python3
"""uda_bn_probe.py: which batch-norm statistics suit a uda checkpoint on a survey?

An experiment tool for docs/experiments.md (issue 7), not part of the product.
It loads a checkpoint written by `galaxy-train uda` into the independent
PyTorch model of the spec (tests/models/uda_ref.py), classifies every image of
an HDF5 survey, and prints, for each way of normalising, the known-class
accuracy and the ROC AUC of the anomaly score H / ln K for the unknown
class(es) against the known ones:

  target set       the checkpoint's d1 set, as `galaxy-train score` and the
                   /v1/anomaly routes use it by default
  source set       the d0 set (`--domain source`)
  target affine, re-estimated
                   d1's gamma/beta with fresh running statistics: one pass in
                   training mode over the survey in batches of 36 (cumulative
                   average, no momentum), i.e. AdaBN with the final weights
  ... with views   the same, but each batch carries its two AC views (90°
                   rotation, 1.17x centre zoom) as the trainer's target pass does

Usage:
  /usr/bin/python3 scripts/uda_bn_probe.py --model models/default/uda.safetensors \\
      --data decals_lens.h5 --known 0,1,2,4,5,6,7,8,9 --unknown 10
"""
import argparse
import copy
import json
import os
import struct
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "models"))
from ref_common import read_safetensors  # noqa: E402
from uda_ref import UDAModel  # noqa: E402

ZOOM = 1.17       # trainer/gx_train_uda.c UDA_ZOOM
BATCH = 36        # spec: 36 target images per step


def load_model(path):
    sd = read_safetensors(path)
    K = sd["head.weight"].shape[0]
    widths = sd["backbone.conv1.weight"].shape[0]
    name = {8: "tiny", 64: "resnet50" if "backbone.layer1.0.conv3.weight" in sd else "resnet18"}[widths]
    m = UDAModel(name, K)
    missing, unexpected = m.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        sys.exit(f"{path}: not a uda checkpoint of the spec's model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return m, K


def checkpoint_size(path):
    """The input size the checkpoint was trained at (metadata "config")."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        meta = json.loads(f.read(n)).get("__metadata__", {})
    return int(json.loads(meta.get("config", "{}")).get("size", 64))


def load_data(path, size):
    with h5py.File(path, "r") as f:
        x = torch.from_numpy(f["images"][:]).permute(0, 3, 1, 2).float() / 255
        y = f["ans"][:].astype(int)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x, y


def probs(m, x, d):
    m.eval()
    with torch.no_grad():
        return torch.cat([m(x[i:i + 500], d)[2] for i in range(0, len(x), 500)]).numpy()


def auc(pos, neg):
    """ROC AUC by ranks (ties counted half)."""
    s = np.concatenate([pos, neg])
    order = s.argsort(kind="mergesort")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    for v in np.unique(s):
        tie = s == v
        ranks[tie] = ranks[tie].mean()
    return (ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def report(label, p, y, known, unknown, K):
    kmap = {c: i for i, c in enumerate(known)}
    ok = np.isin(y, known)
    yk = np.array([kmap.get(v, -1) for v in y])
    acc = (p.argmax(1)[ok] == yk[ok]).mean()
    H = -(p * np.log(p + 1e-5)).sum(1) / np.log(K)
    unk = np.isin(y, unknown)
    a = f"{auc(H[unk], H[ok]):.3f}" if unk.any() and ok.any() else "-"
    print(f"{label:<40} known-class acc {acc:.3f}   anomaly AUC {a}")


def zoom_view(b):
    S = b.shape[-1]
    cs = int(round(S / ZOOM))
    o = (S - cs) // 2
    return F.interpolate(b[:, :, o:o + cs, o:o + cs], size=(S, S), mode="bilinear", align_corners=False)


def reestimate(m, x, views, seed):
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None
    m.train()
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    with torch.no_grad():
        for i in range(0, len(x) - BATCH + 1, BATCH):
            b = x[perm[i:i + BATCH]]
            if views:
                b = torch.cat([b, torch.rot90(b, 1, (2, 3)), zoom_view(b)])
            m(b, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--known", required=True, help="comma list of the known classes, in the checkpoint's order")
    ap.add_argument("--unknown", default="", help="comma list of the unknown classes")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    known = [int(v) for v in a.known.split(",")]
    unknown = [int(v) for v in a.unknown.split(",") if v]
    m, K = load_model(a.model)
    if K != len(known):
        sys.exit(f"--known names {len(known)} classes, the checkpoint has {K}")
    size = checkpoint_size(a.model)
    x, y = load_data(a.data, size)
    print(f"{a.model} on all {len(x)} images of {a.data}")
    report("target set (d1, as trained)", probs(m, x, 1), y, known, unknown, K)
    report("source set (d0)", probs(m, x, 0), y, known, unknown, K)
    trained = copy.deepcopy(m.state_dict())
    reestimate(m, x, False, a.seed)
    report("target affine, statistics re-estimated", probs(m, x, 1), y, known, unknown, K)
    m.load_state_dict(trained)
    reestimate(m, x, True, a.seed)
    report("... with the AC views in each batch", probs(m, x, 1), y, known, unknown, K)


if __name__ == "__main__":
    main()
