"""Device faults in the middle of a run: galaxy-train and galaxyd fail cleanly.

No GPU here, so the faults are injected into the host emulation of the CUDA
backend (tests/cuda/emu/gx_cuda_emu.c, binaries of GALAXYD_EMU_BUILD built with
CUDA_EMU=1; make test builds them):
  GX_EMU_FAULT_AT=N       the N-th launch or copy of the process records "an
                          illegal memory access was encountered (emulated
                          fault at launch N)" on its stream and does not run;
  GX_EMU_FAULT_STICKY=1   and so does every later one (the device is lost, as
                          after a real illegal access), every sync repeats it;
  GX_EMU_DEVICE_BYTES=B   the device has B bytes (allocations past it fail);
  GX_EMU_FAULT_COUNT=1    the launches of the run are printed at exit.
N is never a constant here: it is computed from the counts of fault-free
runs of the same command, so adding a kernel moves it with the code.

What "fail cleanly" means, asserted below: the exit status is 1 (under ASan a
leak on the failure path would make it 23 and print a report), the message
names the device and the device's words, the run's row says failed, what an
earlier epoch wrote is intact and loads, no temp file is left; galaxyd answers
the failed request with a JSON 5xx, keeps serving, and reports a device that
stays failed on /healthz, /readyz, /v2/health/* and /v1/models.
"""
import hashlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import requests

from test_device_flag import ROOT, emu_tool, synth, tool, trainer_args  # noqa: F401 (synth: a fixture)

sys.path.insert(0, os.path.join(ROOT, "tests", "daemon"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from openapi_check import OpenAPI  # noqa: E402  (galaxyd's answers against api/openapi.yaml)
from sanitizer_marks import sanitizer_report  # noqa: E402

SPEC = OpenAPI()

FAULT_WORDS = "an illegal memory access was encountered (emulated fault at launch %d)"
COUNT_RE = re.compile(r"gx_cuda_emu: (\d+) launches")


def emu_env(**kv):
    """The environment of an emulated run: the fault variables as given, none
    inherited (a stray GX_EMU_* of the caller would move every count)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GX_EMU_")}
    env["OMP_WAIT_POLICY"] = "passive"
    env.update({k: str(v) for k, v in kv.items()})
    return env


def launches(stderr):
    m = COUNT_RE.search(stderr)
    assert m, "no launch count (GX_EMU_FAULT_COUNT=1) in:\n" + stderr[-2000:]
    return int(m.group(1))


def clean_exit(r, what):
    """A failure that the program reported: status 1 and no sanitizer report."""
    assert not sanitizer_report(r.stderr), f"{what}: sanitizer report:\n{r.stderr[-4000:]}"
    assert r.returncode == 1, f"{what}: exit {r.returncode}\n{r.stderr[-3000:]}"


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# ------------------------------------------------------------ galaxy-train

def train(cmd, h5, out, epochs, **faults):
    """galaxy-train CMD --device cuda on the emulation into out/ (out/db.sqlite, out/ck)."""
    os.makedirs(out, exist_ok=True)
    args = [emu_tool("galaxy-train"), "--device", "cuda"] + trainer_args(cmd, h5)
    args[args.index("--epochs") + 1] = str(epochs)
    args += ["--db", os.path.join(out, "db.sqlite"), "--out", os.path.join(out, "ck")]
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env=emu_env(**faults))


@pytest.fixture(scope="module")
def counted(tmp_path_factory, synth):
    """counted(cmd, epochs): the launches of a fault-free run (each run once)."""
    seen = {}

    def count(cmd, epochs):
        if (cmd, epochs) not in seen:
            r = train(cmd, synth, tmp_path_factory.mktemp("count"), epochs, GX_EMU_FAULT_COUNT=1)
            assert r.returncode == 0, r.stderr
            seen[cmd, epochs] = launches(r.stderr)
        return seen[cmd, epochs]
    return count


def rows(db, sql, *args):
    with sqlite3.connect(db) as c:
        return c.execute(sql, args).fetchall()


def loads_on_the_cpu(cmd, ck, h5, tmp):
    """The checkpoint loads and evaluates with the CPU binary."""
    if cmd == "uda":
        args = ["score", "--model", ck, "--data", str(h5), "--db", os.path.join(tmp, "score.sqlite"), "--quiet"]
    else:
        args = ["eval", "--checkpoint", ck, "--data", str(h5)] + (["--cf-n", "1"] if cmd == "cf-inn" else [])
    r = subprocess.run([tool("galaxy-train")] + args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{ck} does not load: {r.stderr[-2000:]}"


# One-shot faults in each trainer; a sticky one (every later launch and sync
# fails too, so the teardown runs against a lost device) in one of them.
@pytest.mark.parametrize("cmd,sticky", [("wavelet-mamba", 0), ("cf-inn", 0), ("uda", 0), ("uda", 1)])
def test_a_fault_in_epoch_2_fails_the_run_and_keeps_epoch_1(synth, tmp_path, counted, cmd, sticky):
    # Launches of a 1-epoch and a 2-epoch run: their difference is epoch 2's
    # work; what follows the last epoch (wavelet-mamba's final colour pass)
    # is in both, so n1 + a quarter of it lies inside epoch 2 as long as that
    # tail is under three quarters of an epoch. The rows checked below prove
    # it did.
    n1, n2 = counted(cmd, 1), counted(cmd, 2)
    assert n2 > n1 > 0, (n1, n2)
    N = n1 + (n2 - n1) // 4
    out = tmp_path / "f"
    r = train(cmd, synth, out, 2, GX_EMU_FAULT_AT=N, GX_EMU_FAULT_STICKY=sticky)
    clean_exit(r, cmd)
    assert "device cuda:0: cuda: " + FAULT_WORDS % N in r.stderr, r.stderr
    db, ck = str(out / "db.sqlite"), out / "ck"
    assert rows(db, "SELECT status FROM runs") == [("failed",)]
    # Epoch 1 (0-based 0) completed: its rows and checkpoint are there ...
    assert rows(db, "SELECT DISTINCT epoch FROM metrics ORDER BY epoch") == [(0,)], "the fault was not in epoch 2"
    last = rows(db, "SELECT path, sha256 FROM checkpoints WHERE kind = 'last' ORDER BY epoch")
    assert [p for p, _ in last] == [str(ck / "last.safetensors")], last
    # ... and the file is the one its row describes, and loads.
    assert sha256(last[0][0]) == last[0][1], "last.safetensors changed after its row was written"
    loads_on_the_cpu(cmd, last[0][0], synth, str(tmp_path))
    leftovers = [f for f in os.listdir(ck) if not f.endswith(".safetensors") or ".tmp" in f]
    assert leftovers == [], leftovers


@pytest.mark.parametrize("cmd", ["wavelet-mamba", "uda"])
def test_out_of_device_memory_fails_before_writing_anything(synth, tmp_path, cmd):
    r = train(cmd, synth, tmp_path, 1, GX_EMU_DEVICE_BYTES=100000)
    clean_exit(r, cmd)
    m = re.search(r"device cuda:0: .*out of device memory: (\d+) bytes for (\S+) refused", r.stderr)
    assert m, r.stderr
    assert int(m.group(1)) > 0
    assert os.listdir(tmp_path / "ck") == []
    assert rows(str(tmp_path / "db.sqlite"), "SELECT status FROM runs") in ([], [("failed",)])


# ------------------------------------------------------------------ galaxyd

@pytest.fixture(scope="module")
def served(tmp_path_factory, synth):
    """A models dir with a tiny WaveletMamba (trained on the CPU, one epoch)
    and a FITS cutout to classify."""
    emu_tool("galaxyd")
    t = tmp_path_factory.mktemp("faultsrv")
    subprocess.run([tool("galaxy-train"), "wavelet-mamba", "--config", "tiny", "--data", str(synth),
                    "--db", str(t / "r.sqlite"), "--out", str(t / "ck"), "--epochs", "1", "--batch", "8",
                    "--set", "max_train=16", "--set", "threads=1", "--quiet"], check=True, timeout=300)
    (t / "models").mkdir()
    os.link(t / "ck" / "best.safetensors", t / "models" / "wavelet-mamba.safetensors")
    subprocess.run([tool("galaxy-synth"), "--out", str(t / "c.h5"), "--n", "2", "--size", "32", "--seed", "8",
                    "--quiet", "--fits", str(t / "fits")], check=True, timeout=60)
    with open(t / "fits" / "0000000.fits", "rb") as f:
        cutout = f.read()
    return {"dir": t, "models": str(t / "models"), "cutout": cutout}


@pytest.fixture(scope="module")
def cf_served(served, synth):
    """The same with a tiny CF-INN alone (its counterfactual route)."""
    t = served["dir"] / "cf"
    t.mkdir()
    subprocess.run([tool("galaxy-train"), "cf-inn", "--config", "tiny", "--data", str(synth),
                    "--db", str(t / "r.sqlite"), "--out", str(t / "ck"), "--epochs", "1", "--batch", "8",
                    "--set", "max_train=16", "--set", "threads=1", "--set", "cf_eval_n=2", "--quiet"],
                   check=True, timeout=300)
    (t / "models").mkdir()
    os.link(t / "ck" / "last.safetensors", t / "models" / "cf-inn.safetensors")
    return dict(served, dir=t, models=str(t / "models"))


class Daemon:
    """galaxyd --device cuda|cpu on port 0 (no API key), stdout/stderr in files."""

    def __init__(self, exe, served, name, device, **faults):
        d = served["dir"] / name
        d.mkdir()
        self.err_path = d / "stderr.log"
        with open(d / "stdout.log", "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([exe, "--device", device, "--host", "127.0.0.1", "--port", "0",
                                          "--models", served["models"], "--db", str(d / "g.sqlite"),
                                          "--web", os.path.join(ROOT, "web")],
                                         stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=emu_env(**faults))
        deadline = time.monotonic() + 60
        while True:
            with open(d / "stdout.log") as f:
                m = re.search(r"listening on (http://\S+)", f.readline())
            if m:
                self.base = m.group(1)
                break
            assert self.proc.poll() is None, f"galaxyd exited {self.proc.returncode}: {self.log()}"
            assert time.monotonic() < deadline, "galaxyd did not start"
            time.sleep(0.05)

    def log(self):
        with open(self.err_path, errors="replace") as f:
            return f.read()

    def get(self, path):
        r = requests.get(self.base + path, timeout=30)
        SPEC.check(r)
        return r

    def classify(self, cutout, path="/v1/classify"):
        r = requests.post(self.base + path, data=cutout, timeout=60, headers={"Content-Type": "application/fits"})
        SPEC.check(r)
        return r

    def stop(self):
        """SIGTERM; returns (exit code, stderr)."""
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(60)
        return rc, self.log()


def emu_daemon(served, name, **faults):
    return Daemon(emu_tool("galaxyd"), served, name, "cuda", **faults)


def stopped_cleanly(d):
    rc, log = d.stop()
    assert not sanitizer_report(log), log[-4000:]
    assert rc == 0, f"galaxyd exited {rc}:\n{log[-3000:]}"
    return log


def launch_inside_first(srv, path):
    """A launch inside the first POST of the cutout to path: halfway between
    the launches of a start-and-stop (loading: the parameters' uploads) and
    those of a start, that request and a stop."""
    counts = []
    for n_req in (0, 1):
        d = emu_daemon(srv, "count%d" % n_req, GX_EMU_FAULT_COUNT=1)
        for _ in range(n_req):
            assert d.classify(srv["cutout"], path).status_code == 200
        counts.append(launches(stopped_cleanly(d)))
    assert counts[1] > counts[0], counts
    return (counts[0] + counts[1] + 1) // 2


@pytest.fixture(scope="module")
def first_classify_launch(served):
    return launch_inside_first(served, "/v1/classify")


def device_error(r, N):
    """A JSON 5xx whose message names the device and the fault."""
    assert 500 <= r.status_code < 600, (r.status_code, r.text)
    e = r.json()["error"]
    assert "cuda:0" in e["message"] and FAULT_WORDS % N in e["message"], e
    return e


def test_galaxyd_one_shot_fault_fails_one_request_and_recovers(served, first_classify_launch):
    N = first_classify_launch
    cpu = Daemon(tool("galaxyd"), served, "cpu", "cpu")
    want = cpu.classify(served["cutout"])
    stopped_cleanly(cpu)
    assert want.status_code == 200, want.text
    d = emu_daemon(served, "oneshot", GX_EMU_FAULT_AT=N)
    try:
        device_error(d.classify(served["cutout"]), N)
        # The daemon is up and well: the error cleared with its sync.
        assert d.get("/healthz").json() == {"status": "ok"}
        assert d.get("/readyz").status_code == 200
        [m] = d.get("/v1/models").json()["models"]
        assert m["device"] == "cuda:0" and "device_error" not in m, m
        again = d.classify(served["cutout"])
        assert again.status_code == 200, again.text
        a, b = again.json(), want.json()
        assert a["class_index"] == b["class_index"]
        assert a["probs"] == pytest.approx(b["probs"], rel=1e-5, abs=1e-7)
        assert a["redshift"] == pytest.approx(b["redshift"], rel=1e-5, abs=1e-7)
    finally:
        log = stopped_cleanly(d)
    assert '"path":"/v1/classify","route":"/v1/classify","status":500' in log, log[-2000:]


def test_galaxyd_sticky_fault_fails_every_request_and_health_says_so(served, first_classify_launch):
    N = first_classify_launch
    d = emu_daemon(served, "sticky", GX_EMU_FAULT_AT=N, GX_EMU_FAULT_STICKY=1)
    try:
        device_error(d.classify(served["cutout"]), N)
        for _ in range(2):   # later requests fail at once, with the first error's words
            e = device_error(d.classify(served["cutout"]), N)
            assert "restart galaxyd" in e["message"], e
        for path in ("/healthz", "/readyz"):
            r = d.get(path)
            assert r.status_code == 503, (path, r.text)
            e = r.json()["error"]
            assert e["code"] == "device_failed" and "'wavelet-mamba' on cuda:0" in e["message"], e
            assert FAULT_WORDS % N in e["message"], e
        for path, key in (("/v2/health/live", "live"), ("/v2/health/ready", "ready")):
            r = d.get(path)
            assert (r.status_code, r.json()) == (503, {key: False}), (path, r.text)
        [m] = d.get("/v1/models").json()["models"]
        assert FAULT_WORDS % N in m["device_error"], m
        assert d.proc.poll() is None
    finally:
        log = stopped_cleanly(d)
    assert log.count("galaxyd: model 'wavelet-mamba' on cuda:0: the device failed for good") == 1, log[-3000:]


def test_galaxyd_without_device_memory_for_its_models_exits_at_startup(served):
    r = subprocess.run([emu_tool("galaxyd"), "--device", "cuda", "--port", "0", "--models", served["models"],
                        "--db", str(served["dir"] / "oom.sqlite"), "--web", os.path.join(ROOT, "web")],
                       capture_output=True, text=True, timeout=120, env=emu_env(GX_EMU_DEVICE_BYTES=100000))
    # Under ASan this also proves main() destroys the device pool when
    # gx_server_start fails (it leaked the pool before).
    clean_exit(r, "galaxyd")
    assert "listening" not in r.stdout
    assert re.search(r"wavelet-mamba\.safetensors: uploading the parameters to cuda:0: .*out of device memory: "
                     r"\d+ bytes for \S+ refused", r.stderr), r.stderr


def test_galaxyd_fault_in_counterfactuals_is_the_servers_error(cf_served):
    # The CF-INN routes answered a device error 422 bad_field (a client's
    # mistake) before: the stream's error status is GX_ERR_INVALID.
    path = "/v1/counterfactuals?targets=0,1"
    N = launch_inside_first(cf_served, path)
    d = emu_daemon(cf_served, "cf-oneshot", GX_EMU_FAULT_AT=N)
    try:
        r = d.classify(cf_served["cutout"], path)
        assert r.status_code == 500 and device_error(r, N)["code"] == "internal", r.text
        again = d.classify(cf_served["cutout"], path)
        assert again.status_code == 200, again.text
        assert [c["target"] for c in again.json()["inputs"][0]["counterfactuals"]] == [0, 1]
        assert d.get("/healthz").status_code == 200
    finally:
        stopped_cleanly(d)


# ------------------------------------------- out of device memory mid-pass

def smallest(lo, hi, fits):
    """The smallest B in (lo, hi] with fits(B) (fits(lo) False, fits(hi) True),
    to 16 KiB."""
    while hi - lo > 16384:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid
    return hi


def galaxyd_starts(srv, B):
    r = subprocess.Popen([emu_tool("galaxyd"), "--device", "cuda", "--port", "0", "--models", srv["models"],
                          "--db", os.path.join(str(srv["dir"]), "probe%d.sqlite" % B), "--web",
                          os.path.join(ROOT, "web")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=emu_env(GX_EMU_DEVICE_BYTES=B))
    up = "listening" in r.stdout.readline()
    if up:
        r.send_signal(signal.SIGTERM)
    r.communicate(timeout=60)
    return up


def test_galaxyd_out_of_device_memory_in_a_request_fails_it_and_keeps_serving(served):
    # Just enough device memory for the model's parameters: the first
    # request's activations cannot be placed. The arena's refusal used to
    # abort galaxyd (GX_ASSERT); now the stream is failed, the rest of the
    # pass launches nothing, and the request fails at its sync.
    B = smallest(0, 64 << 20, lambda b: galaxyd_starts(served, b))
    d = emu_daemon(served, "oom", GX_EMU_DEVICE_BYTES=B)
    try:
        for _ in range(2):
            r = d.classify(served["cutout"])
            assert r.status_code == 500, (B, r.status_code, r.text)
            msg = r.json()["error"]["message"]
            assert "cuda:0" in msg and "out of device memory: the activations needed" in msg, msg
        # Not a lost device: health stays up, the model is not marked failed.
        assert d.get("/healthz").json() == {"status": "ok"}
        [m] = d.get("/v1/models").json()["models"]
        assert "device_error" not in m, m
    finally:
        stopped_cleanly(d)


def test_out_of_device_memory_mid_run_fails_the_run_cleanly(synth, tmp_path):
    # The parameters fit, a step's activations or optimiser state do not:
    # the run fails with the device's words (it aborted before).
    def upload_fits(b):
        r = train("wavelet-mamba", synth, tmp_path / ("p%d" % b), 1, GX_EMU_DEVICE_BYTES=b)
        return r.returncode == 0 or not re.search(r"out of device memory: \d+ bytes for \S+ refused", r.stderr)
    B = smallest(0, 256 << 20, upload_fits)
    r = train("wavelet-mamba", synth, tmp_path / "run", 1, GX_EMU_DEVICE_BYTES=B)
    clean_exit(r, "wavelet-mamba")
    assert re.search(r"device cuda:0: cuda: out of device memory: (the activations needed \d+ bytes more|"
                     r"\d+ bytes of (optimiser state|clipping scratch) refused)", r.stderr), r.stderr
    assert rows(str(tmp_path / "run" / "db.sqlite"), "SELECT status FROM runs") == [("failed",)]
    assert os.listdir(tmp_path / "run" / "ck") == []
