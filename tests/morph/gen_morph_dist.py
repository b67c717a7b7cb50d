#!/usr/bin/env python3
"""gen_morph_dist.py — references for the SSIM and 1-Wasserstein code of morph/.

Writes tests/fixtures/morph/morph_dist.safetensors:
  ssim.a, ssim.b (F32 48x40), ssim.value (F64[3]): skimage.metrics.
      structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
      use_sample_covariance=False, data_range=R) for (a,b,R=1), (a,a,1), (a,b,2.5)
  w1.u (F64[300]), w1.v (F64[170]), w1.value (F64[1]): scipy.stats.
      wasserstein_distance(u, v)
  w1.binned (F64[1]): the two-models paper's binned W1 with 100 bins on the
      range of u, computed here with numpy histograms.
Run with the statmorph environment (scikit-image, scipy), see
gen_morph_fixtures.py.
"""
import os
import sys

import numpy as np
from scipy.stats import wasserstein_distance
from skimage.metrics import structural_similarity

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_morph_fixtures import ROOT, save_safetensors  # noqa: E402


def main():
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:48, 0:40]
    a = np.exp(-((x - 20.3) ** 2 + (y - 23.1) ** 2) / 60.0) + 0.05 * rng.standard_normal((48, 40))
    b = np.exp(-((x - 18.0) ** 2 / 90.0 + (y - 25.0) ** 2 / 40.0)) + 0.05 * rng.standard_normal((48, 40))
    a, b = a.astype(np.float32), b.astype(np.float32)
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    ssim = [structural_similarity(a.astype(np.float64), b.astype(np.float64), data_range=1.0, **kw),
            structural_similarity(a.astype(np.float64), a.astype(np.float64), data_range=1.0, **kw),
            structural_similarity(a.astype(np.float64), b.astype(np.float64), data_range=2.5, **kw)]
    u = rng.standard_normal(300)
    v = 0.3 + 1.4 * rng.standard_normal(170)
    lo, hi = u.min(), u.max()
    p = np.histogram(np.clip(u, lo, hi), bins=100, range=(lo, hi))[0] / len(u)
    q = np.histogram(np.clip(v, lo, hi), bins=100, range=(lo, hi))[0] / len(v)
    binned = (hi - lo) / 100 * np.abs(np.cumsum(p - q)).sum()
    tensors = {"ssim.a": a, "ssim.b": b, "ssim.value": np.array(ssim), "w1.u": u, "w1.v": v,
               "w1.value": np.array([wasserstein_distance(u, v)]), "w1.binned": np.array([binned])}
    print("ssim", ssim, "w1", tensors["w1.value"], "binned", binned)
    save_safetensors(os.path.join(ROOT, "tests", "fixtures", "morph", "morph_dist.safetensors"),
                     tensors, {"generator": "tests/morph/gen_morph_dist.py"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
