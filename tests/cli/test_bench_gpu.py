"""bench_gx_gpu (our side of make bench-gpu) and bench/gpu/compare.py.

Without a GPU the program says it skipped and exits 0 (CI, this machine). Built over
the host emulation of the CUDA backend (GALAXYD_EMU_BUILD, made by make test) it runs
its cases end to end; the numbers are meaningless there (emulated launches), so
this checks the program and the table, not a speed.
"""
import json
import os
import subprocess
import sys

import pytest

BUILD = os.environ.get("GALAXYD_BUILD", "build")
EMU = os.environ.get("GALAXYD_EMU_BUILD", "")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench", "gpu"))
import compare  # noqa: E402


def run(args):
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


def test_without_a_gpu_it_skips_with_the_reason():
    r = run([os.path.join(ROOT, BUILD, "bench_gx_gpu"), "--quick"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert r.stderr.startswith("bench_gx_gpu: skipped: no GPU ("), r.stderr


def test_bad_options_are_usage_errors():
    exe = os.path.join(ROOT, BUILD, "bench_gx_gpu")
    for args in (["--batches", "0"], ["--batches", "8x"], ["--frobnicate", "1"], ["--seconds"]):
        r = run([exe] + args)
        assert r.returncode == 2 and "bench_gx_gpu: " in r.stderr, (args, r.returncode, r.stderr)


@pytest.fixture(scope="module")
def emu_rows():
    exe = os.path.join(ROOT, EMU, "bench_gx_gpu") if EMU else ""
    if not exe or not os.path.exists(exe):
        pytest.skip("no emulated build (GALAXYD_EMU_BUILD=%r): run through make test" % EMU)
    r = run([exe, "--quick", "--seconds", "0", "--batches", "1,4", "--train-batches", "4"])
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_on_the_emulated_device_every_case_gives_a_row(emu_rows):
    got = {(r["model"], r["mode"], r["batch"]) for r in emu_rows}
    want = {("wavelet-mamba", "infer", 1), ("wavelet-mamba", "infer", 4), ("wavelet-mamba", "train", 4),
            ("cf-inn", "classify", 1), ("cf-inn", "classify", 4), ("cf-inn", "cfgrid", 1),
            ("uda", "predict", 1), ("uda", "predict", 4)}
    assert got == want
    for r in emu_rows:
        assert r["bench"] == "galaxyd" and r["precision"] == "fp32" and r["config"] == "tiny"
        assert r["iters"] >= 2 and r["ms_median"] > 0 and r["ms_p90"] >= r["ms_median"]
        assert r["per_s"] == pytest.approx(r["batch"] / (r["ms_median"] / 1e3), rel=1e-3, abs=0.006)  # printed rounded
        assert r["pool_in_use_bytes"] > 0
    # WaveletMamba inference also replayed as a CUDA graph, one row per batch;
    # nothing else is
    graphs = sorted((r["model"], r["mode"], r["batch"]) for r in emu_rows if r["graph"])
    assert graphs == [("wavelet-mamba", "infer", 1), ("wavelet-mamba", "infer", 4)], graphs


def test_compare_lists_the_graph_row_after_the_eager_one(emu_rows):
    ours = [r for r in emu_rows if r["model"] == "wavelet-mamba" and r["mode"] == "infer" and r["batch"] == 4]
    t = [line for line in compare.table([], ours).splitlines() if line.startswith("| wavelet-mamba | infer | 4 |")]
    assert len(t) == 2 and "| fp32 |" in t[0] and "| fp32 graph |" in t[1], t


def test_compare_puts_ours_beside_eager_and_the_best_pytorch(emu_rows):
    ours = [r for r in emu_rows if r["model"] == "uda" and r["batch"] == 4]
    mine = ours[0]["per_s"]
    torch_rows = [dict(model="uda", mode="predict", batch=4, precision="fp32", compile="eager", per_s=mine * 2),
                  dict(model="uda", mode="predict", batch=4, precision="amp", compile="eager", per_s=mine * 4),
                  dict(model="uda", mode="predict", batch=4, precision="amp", compile="compiled", error="boom"),
                  dict(model="uda", mode="train", batch=4, precision="fp32", compile="eager", per_s=10.0)]
    t = compare.table(torch_rows, ours).splitlines()
    row = next(line for line in t if line.startswith("| uda | predict | 4 |"))
    assert "| 0.50× |" in row and "(amp, eager) | 0.25× |" in row, row
    train = next(line for line in t if line.startswith("| uda | train | 4 |"))
    assert "| — |" in train                       # a case only PyTorch measured
    assert any("boom" in line for line in t)      # a failed PyTorch mode is listed


def test_bench_serve_runs_galaxyd_and_the_raw_forward_on_the_device():
    """scripts/bench_serve.sh with BENCH_DEVICE=cuda over the emulated build: the
    serving half of the GPU proof (scripts/gpu_proof.sh runs it over the bundle's
    binaries). Both sides must really be on the device, and every served row must
    have answers."""
    if not EMU or not os.path.exists(os.path.join(ROOT, EMU, "bench_serve_fwd")):
        pytest.skip("no emulated build (GALAXYD_EMU_BUILD=%r): run through make test" % EMU)
    # A fresh emulated galaxyd captures a graph per padded size on first use:
    # a few emulated forward passes each, seconds under ASan, which the
    # warm-up must absorb before a 1-s measurement can count answers.
    env = dict(os.environ, BENCH_DEVICE="cuda", BENCH_SECONDS="1", BENCH_WARMUP="6", BENCH_MAX_BATCH="4",
               PYTHON=sys.executable)
    r = subprocess.run([os.path.join(ROOT, "scripts", "bench_serve.sh"), os.path.join(ROOT, EMU)],
                       capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "device: raw forward on cuda:0, galaxyd on cuda:0" in out, out
    rows = [line for line in out.splitlines() if line.startswith("| served |")]
    assert len(rows) == 3, out
    for line in rows:
        ok = int(line.split("|")[6])
        assert ok > 0, line
    assert "| raw forward, batch 4 |" in out
    # galaxyd's CUDA graphs timed against none, at the padded sizes up to 4
    for gr in ("off", "on"):
        assert "graphs %s: device name=cuda:0 graphs=%s" % (gr, gr) in out, out
        assert sum(line.startswith("graphs %s: forward batch=" % gr) for line in out.splitlines()) == 2, out


def test_precisions_give_a_row_each_and_compare_lists_both():
    exe = os.path.join(ROOT, EMU, "bench_gx_gpu") if EMU else ""
    if not exe or not os.path.exists(exe):
        pytest.skip("no emulated build (GALAXYD_EMU_BUILD=%r): run through make test" % EMU)
    r = run([exe, "--quick", "--seconds", "0", "--models", "uda", "--batches", "2", "--precisions", "fp32,tf32"])
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert sorted(x["precision"] for x in rows) == ["fp32", "tf32"], rows
    torch_rows = [dict(model="uda", mode="predict", batch=2, precision="fp32", compile="eager", per_s=1.0)]
    t = [line for line in compare.table(torch_rows, rows).splitlines() if line.startswith("| uda | predict | 2 |")]
    assert len(t) == 2 and "| fp32 |" in t[0] and "| tf32 |" in t[1], t
    for bad in ("fp16", "", "fp32,,x"):
        b = run([exe, "--precisions", bad])
        assert b.returncode == 2 and "--precisions" in b.stderr, (bad, b.stderr)
