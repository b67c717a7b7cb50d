"""--device cpu|cuda|auto on galaxyd and galaxy-train (issue 10: the binaries run
on machines without a GPU, the CPU backend is chosen, and a log line says why).

This machine has no GPU (CI neither), so `cuda` must fall back with a warning
line that names the reason; a bad value is a usage error naming it. On a GPU
machine the lines say what runs on cuda:0 (galaxyd: every model; galaxy-train:
its trainers; its other commands say they run on the CPU); these assertions
accept those lines too.

The last tests drive galaxy-train --device cuda end to end on the host
emulation of the CUDA backend (GALAXYD_EMU_BUILD: the binaries built with
CUDA_EMU=1, mk/cuda_emu.mk; make test builds them): every op of the run goes
through the device dispatch, and its numbers must match the CPU binary's.
"""
import json
import os
import re
import shutil
import sqlite3
import subprocess

import pytest

BUILD = os.environ.get("GALAXYD_BUILD", "build")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CPU_LINE = re.compile(r"device: cpu \((cuda requested: .+|cuda:0 .+ found, but this command does not run on the CUDA backend)\)")
GALAXYD_LINE = re.compile(r"galaxyd: (warning: )?device: (cpu \(cuda requested: .+\)|cuda:0 .+ \(every model on the device\))")


def tool(name):
    return os.path.join(ROOT, BUILD, name)


def run(args):
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def test_galaxy_train_device_cuda_falls_back_with_a_reason():
    r = run([tool("galaxy-train"), "--device", "cuda", "report", "--help"])
    assert r.returncode == 0, r.stderr
    assert CPU_LINE.search(r.stderr), r.stderr
    assert "usage: galaxy-train report" in r.stdout
    r = run([tool("galaxy-train"), "report", "--device=cpu", "--help"])
    assert r.returncode == 0 and "galaxy-train: device: cpu (requested)" in r.stderr, r.stderr


def test_galaxy_train_without_device_prints_no_device_line():
    r = run([tool("galaxy-train"), "report", "--help"])
    assert r.returncode == 0 and "device:" not in r.stderr, r.stderr


def test_bad_device_value_is_a_usage_error_naming_it():
    for prog, args in (("galaxy-train", ["cf-inn"]), ("galaxyd", [])):
        r = run([tool(prog), "--device", "gpu"] + args)
        assert r.returncode == 2, (prog, r.returncode, r.stderr)
        assert "'gpu' is not one of cpu, cuda, auto" in r.stderr, (prog, r.stderr)
        assert "listening" not in r.stdout


def galaxyd_start_stop(tmp_path, flags):
    """Starts galaxyd with flags and the bundled uda model, waits for its
    listening line, stops it; returns its stderr."""
    p = subprocess.Popen([tool("galaxyd")] + flags + ["--port", "0", "--models",
                          os.path.join(ROOT, "models", "default", "uda.safetensors"),
                          "--db", str(tmp_path / "d.sqlite"), "--web", os.path.join(ROOT, "web")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = p.stdout.readline()
        assert first.startswith("galaxyd listening on http://"), first
    finally:
        p.terminate()
        _, err = p.communicate(timeout=60)
    return err


def test_galaxyd_device_cuda_starts_on_the_cpu(tmp_path):
    err = galaxyd_start_stop(tmp_path, ["--device", "cuda"])
    assert GALAXYD_LINE.search(err), err


def test_galaxyd_tf32_is_ignored_on_the_cpu_and_says_so(tmp_path):
    err = galaxyd_start_stop(tmp_path, ["--device", "cpu", "--tf32"])
    assert "galaxyd: --tf32 ignored: the models run on the CPU" in err, err
    r = run([tool("galaxyd"), "--help"])
    assert "--tf32" in r.stdout


def test_galaxyd_cuda_graphs_flag(tmp_path):
    r = run([tool("galaxyd"), "--cuda-graphs", "maybe"])
    assert r.returncode == 2, r.stderr
    assert "--cuda-graphs: 'maybe' is not on or off" in r.stderr, r.stderr
    assert "listening" not in r.stdout
    err = galaxyd_start_stop(tmp_path, ["--device", "cpu", "--cuda-graphs", "off"])
    assert "galaxyd:" in err
    assert "--cuda-graphs on|off" in run([tool("galaxyd"), "--help"]).stdout


EMU = os.environ.get("GALAXYD_EMU_BUILD", "")


def emu_tool(name):
    path = os.path.join(ROOT, EMU, name) if EMU else ""
    if not path or not os.path.exists(path):
        pytest.skip("no emulated build (GALAXYD_EMU_BUILD=%r): run through make test" % EMU)
    return path


def metric(db, split, name):
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT m.epoch, m.value FROM metrics m JOIN runs r ON r.id = m.run_id "
                         "WHERE m.split = ? AND m.name = ? ORDER BY m.epoch", (split, name)).fetchall()
    return [v for _, v in rows]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    h5 = tmp_path_factory.mktemp("devtrain") / "s.h5"
    subprocess.run([tool("galaxy-synth"), "--out", str(h5), "--n", "60", "--size", "32",
                    "--seed", "4", "--balanced", "--quiet"], check=True)
    return h5


def trainer_args(cmd, h5):
    common = ["--seed", "3", "--quiet", "--set", "threads=1", "--epochs", "2"]
    if cmd == "uda":   # the same survey as source and target: the plumbing, not adaptation
        return ["uda", "--source", str(h5), "--target", str(h5), "--backbone", "tiny",
                "--set", "batch_source=8", "--set", "batch_target=8", "--set", "max_source=24",
                "--set", "max_target=24"] + common
    extra = {"wavelet-mamba": ["--accum", "1", "--set", "sk_iters=10"], "cf-inn": ["--set", "cf_eval_n=4"]}[cmd]
    return [cmd, "--data", str(h5), "--config", "tiny", "--batch", "8", "--set", "max_train=24"] + common + extra


# Rows compared per trainer (split, name): a loss and the validation accuracy.
ROWS = {"wavelet-mamba": (("train", "loss_total"), ("val", "loss_total"), ("val", "accuracy")),
        "cf-inn": (("train", "loss_total"), ("val", "loss_total"), ("val", "accuracy")),
        "uda": (("train", "loss_total"), ("train", "loss_ce"), ("source_val", "accuracy"))}


@pytest.mark.parametrize("cmd", sorted(ROWS))
def test_galaxy_train_on_the_emulated_device_matches_the_cpu(synth, tmp_path, cmd):
    emu = emu_tool("galaxy-train")
    base = trainer_args(cmd, synth)
    cpu = subprocess.run([tool("galaxy-train")] + base + ["--db", str(tmp_path / "c.sqlite"),
                         "--out", str(tmp_path / "c")], capture_output=True, text=True, timeout=300)
    assert cpu.returncode == 0, cpu.stderr
    dev = subprocess.run([emu, "--device", "cuda"] + base + ["--db", str(tmp_path / "d.sqlite"),
                         "--out", str(tmp_path / "d")], capture_output=True, text=True, timeout=300)
    assert dev.returncode == 0, dev.stderr
    assert re.search(r"galaxy-train: device: cuda:0 .*\(training and validation on the device\)", dev.stderr), dev.stderr
    # The same run: the emulation computes with the CPU ops, so the curves
    # agree to the float rounding of the device ops' other summation orders
    # (1e-4 relative leaves room; a wrong step would be far off) ...
    seen = []
    for split, name in ROWS[cmd]:
        a, b = metric(tmp_path / "c.sqlite", split, name), metric(tmp_path / "d.sqlite", split, name)
        assert len(a) == 2 and len(b) == 2, (split, name, a, b)
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6), (split, name, a, b)
        seen += list(zip(a, b))
    # ... but not bit for bit: that rounding is the mark of the device path
    # (a run that ignored --device would reproduce the CPU's numbers exactly).
    assert any(x != y for x, y in seen), "the --device cuda run reproduced the CPU bit for bit"
    assert os.path.getsize(tmp_path / "d" / "last.safetensors") == os.path.getsize(tmp_path / "c" / "last.safetensors")
    if cmd == "uda":   # offline scoring with the device-trained checkpoint, on the device
        sc = subprocess.run([emu, "--device", "cuda", "score", "--model", str(tmp_path / "d" / "last.safetensors"),
                             "--data", str(synth), "--db", str(tmp_path / "s.sqlite"), "--quiet"],
                            capture_output=True, text=True, timeout=300)
        assert sc.returncode == 0, sc.stderr
        assert "(scoring on the device)" in sc.stderr, sc.stderr
        with sqlite3.connect(tmp_path / "s.sqlite") as c:
            assert c.execute("SELECT COUNT(*) FROM anomaly_scores").fetchone()[0] == 60


def test_galaxy_train_tf32_is_ignored_on_the_cpu_and_says_so():
    r = run([tool("galaxy-train"), "--tf32", "report", "--help"])
    assert r.returncode == 0 and "usage: galaxy-train report" in r.stdout, r.stderr
    assert "galaxy-train: --tf32 ignored: the command runs on the CPU" in r.stderr, r.stderr
    assert "--tf32" in run([tool("galaxy-train"), "--help"]).stdout


def test_galaxy_train_tf32_on_the_emulated_device_rounds_the_products(synth, tmp_path):
    """--tf32 reaches cuBLAS: the emulation rounds the GEMMs' inputs to TF32
    as the tensor cores do, so the curve moves off the FP32 one by about the
    TF32 rounding (never bit for bit), and stays close to it."""
    emu = emu_tool("galaxy-train")
    base = trainer_args("wavelet-mamba", synth)
    out = {}
    for name, extra in (("fp32", []), ("tf32", ["--tf32"])):
        r = subprocess.run([emu, "--device", "cuda"] + extra + base + ["--db", str(tmp_path / (name + ".sqlite")),
                           "--out", str(tmp_path / name)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert ("galaxy-train: matrix products in TF32 on cuda:0 (--tf32)" in r.stderr) == (name == "tf32"), r.stderr
        out[name] = metric(tmp_path / (name + ".sqlite"), "train", "loss_total")
    assert len(out["fp32"]) == 2 and out["tf32"] != out["fp32"], out
    assert out["tf32"] == pytest.approx(out["fp32"], rel=2e-2), out


def cpu_checkpoint(cmd, synth, out):
    """A 1-epoch checkpoint of cmd trained on the CPU: (last.safetensors, its database)."""
    base = trainer_args(cmd, synth)
    base[base.index("--epochs") + 1] = "1"
    out.mkdir(exist_ok=True)
    r = subprocess.run([tool("galaxy-train")] + base + ["--db", str(out / "t.sqlite"), "--out", str(out / "ck")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return str(out / "ck" / "last.safetensors"), out / "t.sqlite"


@pytest.mark.parametrize("cmd", ["wavelet-mamba", "cf-inn"])
def test_galaxy_train_eval_on_the_emulated_device_matches_the_cpu(synth, tmp_path, cmd):
    """eval runs its passes on the device (the emulation counts its launches)
    and stores the CPU's metrics: a wavelet-mamba checkpoint's, and a cf-inn
    checkpoint's with a judge and the grid (the judge on the device too).
    The cf-inn rates may move by one decision of 27 (3 images x 9 targets)."""
    emu = emu_tool("galaxy-train")
    ck, db = cpu_checkpoint(cmd, synth, tmp_path)
    if cmd == "cf-inn":
        judge, _ = cpu_checkpoint("wavelet-mamba", synth, tmp_path / "judge")
        args, tol = ["--judge", judge, "--cf-n", "3", "--grid", None], dict(rel=1e-3, abs=0.04)
    else:
        args, tol = ["--all"], dict(rel=1e-4, abs=1e-6)
    got = {}
    for name, exe, extra in (("cpu", tool("galaxy-train"), []), ("dev", emu, ["--device", "cuda"])):
        shutil.copy(db, tmp_path / (name + ".sqlite"))
        a = [str(tmp_path / (name + ".png")) if v is None else v for v in args]
        e = subprocess.run([exe] + extra + ["eval", "--checkpoint", ck, "--data", str(synth)] + a +
                           ["--db", str(tmp_path / (name + ".sqlite"))], capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, GX_EMU_FAULT_COUNT="1"))
        assert e.returncode == 0, e.stderr
        with sqlite3.connect(tmp_path / (name + ".sqlite")) as c:
            got[name] = dict(c.execute("SELECT name, value FROM metrics WHERE split = 'test' AND name != 'images_per_s'"))
        got[name + "_err"] = e.stderr
    assert "(evaluation on the device)" in got["dev_err"], got["dev_err"]
    m = re.search(r"gx_cuda_emu: (\d+) launches", got["dev_err"])
    assert m and int(m.group(1)) > 100, got["dev_err"][-2000:]      # the passes ran on the device
    assert got["cpu"].keys() == got["dev"].keys() and "accuracy" in got["cpu"], (got["cpu"], got["dev"])
    for k, v in got["cpu"].items():
        assert got["dev"][k] == pytest.approx(v, nan_ok=True, **tol), (k, v, got["dev"][k])
    if cmd == "cf-inn":
        assert os.path.getsize(tmp_path / "dev.png") > 1000


def test_galaxy_train_two_models_trains_on_the_emulated_device(synth, tmp_path):
    """two-models --device cuda: both CF-INN runs train on the device (its
    line says so and the emulation counts the launches), the checks run on
    the CPU, and the trained runs' losses are the CPU's to float rounding."""
    emu = emu_tool("galaxy-train")
    common = ["two-models", "--data", str(synth), "--epochs", "1", "--batch", "8", "--seed", "4",
              "--n-gen", "8", "--n-real", "6", "--set", "cf_eval_n=2", "--set", "threads=1", "--quiet"]
    losses = {}
    for name, exe, extra in (("cpu", tool("galaxy-train"), []), ("dev", emu, ["--device", "cuda"])):
        db, out = tmp_path / (name + ".sqlite"), tmp_path / name
        e = subprocess.run([exe] + extra + common + ["--db", str(db), "--out", str(out)], capture_output=True,
                           text=True, timeout=600, env=dict(os.environ, GX_EMU_FAULT_COUNT="1"))
        assert e.returncode == 0, e.stderr
        assert "memorisation" in e.stdout and os.path.exists(out / "report.md"), e.stdout
        if name == "dev":
            assert "(the two models train on the device, the checks on the CPU)" in e.stderr, e.stderr
            m = re.search(r"gx_cuda_emu: (\d+) launches", e.stderr)
            assert m and int(m.group(1)) > 100, e.stderr[-2000:]
        with sqlite3.connect(db) as c:
            losses[name] = c.execute("SELECT m.run_id, m.value FROM metrics m WHERE m.split = 'train' "
                                     "AND m.name = 'loss_total' ORDER BY m.run_id").fetchall()
    assert len(losses["cpu"]) == 2 and [r for r, _ in losses["dev"]] == [r for r, _ in losses["cpu"]], losses
    for (_, a), (_, b) in zip(losses["cpu"], losses["dev"]):
        assert b == pytest.approx(a, rel=1e-3), losses

def test_galaxy_train_bundle_on_the_emulated_device_matches_the_cpu(synth, tmp_path):
    """bundle evaluates on the device too: its line says so, the passes ran
    there, and the test_metrics it writes are the CPU bundle's."""
    emu = emu_tool("galaxy-train")
    ck, _ = cpu_checkpoint("wavelet-mamba", synth, tmp_path)
    meta = {}
    for name, exe, extra in (("cpu", tool("galaxy-train"), []), ("dev", emu, ["--device", "cuda"])):
        out = tmp_path / (name + ".safetensors")
        e = subprocess.run([exe] + extra + ["bundle", "--checkpoint", ck, "--data", str(synth), "--out", str(out)],
                           capture_output=True, text=True, timeout=300, env=dict(os.environ, GX_EMU_FAULT_COUNT="1"))
        assert e.returncode == 0, e.stderr
        with open(out, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            meta[name] = json.loads(json.loads(f.read(n))["__metadata__"]["test_metrics"])
        meta[name + "_err"] = e.stderr
    assert "(evaluation on the device)" in meta["dev_err"], meta["dev_err"]
    m = re.search(r"gx_cuda_emu: (\d+) launches", meta["dev_err"])
    assert m and int(m.group(1)) > 100, meta["dev_err"][-2000:]
    assert meta["cpu"].keys() == meta["dev"].keys() and "accuracy" in meta["cpu"]
    for k, v in meta["cpu"].items():
        if isinstance(v, (int, float)) and k != "images_per_s":   # a speed, not a metric
            assert meta["dev"][k] == pytest.approx(v, rel=1e-4, abs=1e-6), (k, v, meta["dev"][k])
