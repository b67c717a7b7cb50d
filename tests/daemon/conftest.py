"""Shared fixtures and helpers of the galaxyd black-box tests (tests/daemon/).

Everything runs against the real binaries of $GALAXYD_BUILD (default build/):
a tiny WaveletMamba checkpoint is trained ONCE per session with galaxy-synth +
galaxy-train (about 20 s of CPU), then galaxyd instances are started on port 0
with a fresh database and stopped with SIGTERM (exit code 0 is asserted).

Helpers the test modules import (`from conftest import ...`):
  Galaxyd            a running server (url(), rss_kb(), stop(), log())
  png_bytes, galaxy_png, fits_bytes, multipart
                     image and body writers in pure Python (no PIL/numpy/astropy:
                     CI's Python may lack them)
  raw_http           one request over a raw socket (lying headers, unnormalised
                     paths, slow clients), parsed answer
  metric             one sample from the /metrics text
"""
import glob
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
import zlib

import pytest
import requests

from openapi_check import OpenAPI

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("GALAXYD_BUILD", "build")
# galaxy-synth and galaxy-train may come from another build (e.g. a plain one
# while galaxyd is a sanitizer build: training under ASan is slow and is not
# what these tests test).
TRAIN_BUILD = os.environ.get("GALAXYD_TRAIN_BUILD", BUILD)
# The device galaxyd serves from: "cpu", or "cuda:0" when GALAXYD_BUILD is
# built over the host emulation of the CUDA backend (scripts/run_tests.sh runs
# these tests a second time that way: every route on device tensors).
DEVICE = os.environ.get("GALAXYD_DEVICE", "cpu")
API_KEY = "test-key-0123456789abcdef"
MODEL = "wavelet-mamba"
LISTEN_RE = re.compile(r"galaxyd listening on http://([^:/\s]+):(\d+)")


def tool(name):
    build = TRAIN_BUILD if name in ("galaxy-synth", "galaxy-train") else BUILD
    return os.path.join(ROOT, build, name)


def same_numbers(a, b):
    """a == b for numbers or lists of numbers: bit for bit on the CPU (the engine
    is batch-invariant: a sample's answer never depends on its batch-mates);
    on the device within float rounding (1e-5 relative), since the device's
    GEMMs sum in an order chosen by the batch's shape."""
    if DEVICE == "cpu":
        return a == b
    return a == pytest.approx(b, rel=1e-5, abs=1e-7)


def auth(key=API_KEY):
    return {"Authorization": f"Bearer {key}"}


def wait_for(pred, timeout, what, interval=0.02):
    """Polls pred() until it returns a true value (returned) or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# ------------------------------------------------------------------ images

def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(w, h, pixels, channels=3, depth=8):
    """A PNG of raw interleaved 8-bit samples (bytes of h*w*channels)."""
    assert len(pixels) == w * h * channels
    color = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\x00" + pixels[y * w * channels:(y + 1) * w * channels] for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(raw, 6)) + _png_chunk(b"IEND", b""))


def galaxy_pixels(seed, size=32):
    """Deterministic galaxy-like RGB cutout: an elliptical exponential profile
    at a seeded position, size and colour, plus sky noise. Different seeds give
    clearly different images (so a mixed-up answer would show)."""
    rnd = random.Random(seed)
    cx, cy = size / 2 + rnd.uniform(-3, 3), size / 2 + rnd.uniform(-3, 3)
    r0 = rnd.uniform(1.5, size / 5)
    q = rnd.uniform(0.3, 1.0)
    th = rnd.uniform(0, 3.14159)
    cs, sn = math.cos(th), math.sin(th)
    amp = [rnd.uniform(120, 255) for _ in range(3)]
    out = bytearray()
    for y in range(size):
        for x in range(size):
            dx, dy = x - cx, y - cy
            u, v = dx * cs + dy * sn, (-dx * sn + dy * cs) / q
            f = math.exp(-((u * u + v * v) ** 0.5) / r0)
            for c in range(3):
                val = amp[c] * f + rnd.gauss(12, 4)
                out.append(max(0, min(255, int(val))))
    return bytes(out)


def png_decode(data):
    """(width, height, channels, rows) of an 8-bit non-interlaced PNG;
    rows[y] is a bytes of width*channels samples (galaxyd's own PNGs:
    the counterfactual images, thumbnails)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, color, _, _, interlace = ihdr
    assert depth == 8 and interlace == 0
    ch = {0: 1, 2: 3, 6: 4, 4: 2}[color]
    raw = zlib.decompress(idat)
    stride = w * ch
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - ch] if i >= ch else 0
            b = prev[i]
            c = prev[i - ch] if i >= ch else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, ch, rows


def galaxy_png(seed, size=32):
    return png_bytes(size, size, galaxy_pixels(seed, size))


def pixels_to_chw(pixels, size):
    """Interleaved 8-bit RGB -> flat CHW float32 values exactly as io/ decodes
    a PNG: (float)(v * (1.0 / 255.0)) (float64 product, rounded to float32)."""
    inv = 1.0 / 255.0
    f32 = lambda d: struct.unpack("<f", struct.pack("<f", d))[0]
    table = [f32(v * inv) for v in range(256)]
    n = size * size
    return [table[pixels[i * 3 + c]] for c in range(3) for i in range(n)]


def _fits_card(key, value=None, comment=""):
    if value is None:
        card = key
    else:
        if isinstance(value, bool):
            v = "T" if value else "F"
            v = v.rjust(20)
        elif isinstance(value, (int, float)):
            v = str(value).rjust(20)
        else:
            v = ("'" + value + "'").ljust(20)
        card = f"{key:<8}= {v}" + (f" / {comment}" if comment else "")
    return card.ljust(80)[:80].encode("ascii")


def fits_bytes(planes, w, h, bitpix=-32, extra_cards=(), end=True, pad=True, data=None):
    """A primary-HDU FITS image: `planes` planes of h*w values (big endian),
    NAXIS3 = planes when > 1. `data` overrides the encoded pixel bytes (for
    broken files); `end`/`pad` can be turned off to build broken headers."""
    naxis = 3 if planes > 1 else 2
    cards = [_fits_card("SIMPLE", True), _fits_card("BITPIX", bitpix), _fits_card("NAXIS", naxis),
             _fits_card("NAXIS1", w), _fits_card("NAXIS2", h)]
    if naxis == 3:
        cards.append(_fits_card("NAXIS3", planes))
    cards += [_fits_card(k, v) for k, v in extra_cards]
    if end:
        cards.append(_fits_card("END"))
    hdr = b"".join(cards)
    if pad:
        hdr += b" " * (-len(hdr) % 2880)
    if data is None:
        rnd = random.Random(w * 1000 + h)
        fmt = {-32: ">f", -64: ">d", 16: ">h", 32: ">i", 8: ">B"}[bitpix]
        vals = [rnd.uniform(0, 1) if bitpix < 0 else rnd.randint(0, 100) for _ in range(planes * w * h)]
        data = b"".join(struct.pack(fmt, v) for v in vals)
    if pad:
        data += b"\x00" * (-len(data) % 2880)
    return hdr + data


def multipart(parts, boundary="gxTestBoundary7MA4YWxk"):
    """parts: list of (name, value bytes|str, filename|None, content_type|None).
    Returns (body, content_type header)."""
    out = b""
    for name, value, filename, ctype in parts:
        if isinstance(value, str):
            value = value.encode()
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n".encode()
        if ctype:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + value + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


# ------------------------------------------------------------------ raw HTTP

class RawAnswer:
    def __init__(self, status, headers, body, closed):
        self.status, self.headers, self.body, self.closed = status, headers, body, closed

    def json(self):
        return json.loads(self.body)


def read_answer(sock, timeout):
    """Reads one HTTP/1.1 response from sock. None when the server closed
    the connection without answering (or timeout passed with no byte)."""
    sock.settimeout(timeout)
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in buf:
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            chunk = b""
        if not chunk:
            return None if not buf else RawAnswer(0, {}, buf, True)
        buf += chunk
        if time.monotonic() > deadline:
            return None
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    closed = False
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(body) < n:
            try:
                chunk = sock.recv(65536)
            except (socket.timeout, ConnectionResetError):
                chunk = b""
            if not chunk:
                closed = True
                break
            body += chunk
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        raw, body = body, b""
        while True:
            while b"\r\n" not in raw:
                chunk = sock.recv(65536)
                if not chunk:
                    return RawAnswer(status, headers, body, True)
                raw += chunk
            size_line, raw = raw.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(raw) < size + 2:
                chunk = sock.recv(65536)
                if not chunk:
                    return RawAnswer(status, headers, body + raw, True)
                raw += chunk
            body, raw = body + raw[:size], raw[size + 2:]
            if size == 0:
                break
    return RawAnswer(status, headers, body, closed)


def raw_http(port, data, timeout=15.0, host="127.0.0.1"):
    """Sends data (a whole request, or a first part of one) and reads one answer."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        return read_answer(s, timeout)


# ------------------------------------------------------------------ server

class Galaxyd:
    """One galaxyd process on an ephemeral port."""

    def __init__(self, workdir, models, web, extra=(), api_key_file=None, db=None, env=None):
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.db = db or os.path.join(workdir, "galaxyd.sqlite")
        self.out_path = os.path.join(workdir, "stdout.log")
        self.err_path = os.path.join(workdir, "stderr.log")
        args = [tool("galaxyd"), "--host", "127.0.0.1", "--port", "0", "--models", models,
                "--db", self.db, "--web", web]
        if api_key_file:
            args += ["--api-key-file", api_key_file]
        args += list(extra)
        self.args = args
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(args, stdout=out, stderr=err, cwd=ROOT, env=env,
                                         stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        self.host, self.port = self._wait_listening()
        self.base = f"http://{self.host}:{self.port}"
        wait_for(self._ready, 60, "/readyz 200")

    def _wait_listening(self, timeout=60):
        def line():
            if self.proc.poll() is not None:
                raise AssertionError(f"galaxyd exited with {self.proc.returncode} before listening:\n"
                                     f"{self.log()[-3000:]}")
            with open(self.out_path, "r", errors="replace") as f:
                first = f.readline()
            if first.endswith("\n"):
                m = LISTEN_RE.search(first)
                assert m, f"galaxyd's first stdout line is not 'galaxyd listening on ...': {first!r}"
                return m.group(1), int(m.group(2))
            return None
        return wait_for(line, timeout, "galaxyd's 'listening' line")

    def _ready(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"galaxyd exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
        try:
            return requests.get(self.url("/readyz"), timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def url(self, path):
        return self.base + path

    def rss_kb(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def sanitized(self):
        """True when galaxyd runs with AddressSanitizer (its quarantine holds
        freed memory on purpose, so RSS bounds do not apply)."""
        with open(f"/proc/{self.pid}/maps") as f:
            return "libasan" in f.read()

    def log(self):
        with open(self.err_path, "r", errors="replace") as f:
            err = f.read()
        with open(self.out_path, "r", errors="replace") as f:
            out = f.read()
        return out + err

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Sends sig, waits, returns the exit code (kills after timeout)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"galaxyd did not exit within {timeout} s of signal {sig}")
        if self.proc.returncode != 0:
            # pytest shows a failing test's captured stdout: a rare abort at
            # shutdown is then diagnosable from the CI log alone.
            print(f"galaxyd exited with {self.proc.returncode}; its log ends:\n{self.log()[-4000:]}")
        return self.proc.returncode


def metric(text, name, labels=None):
    """The value of one sample of the Prometheus text (labels: dict subset), or None."""
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if labels and any(got.get(k) != v for k, v in labels.items()):
            continue
        return float(m.group(4))
    return None


# ------------------------------------------------------------------ helpers of the route tests

def serve(s):
    """For a fixture: yields the started galaxyd s, then stops it with
    SIGTERM; a non-zero exit code fails the last test using it."""
    yield s
    rc = s.stop()
    assert rc == 0, f"galaxyd exited {rc} on SIGTERM:\n{s.log()[-3000:]}"


def keyed_session():
    """For a fixture: a requests session with the API key."""
    with requests.Session() as sess:
        sess.headers.update(auth())
        yield sess


def healthy(server):
    """Asserts that the server still answers /healthz."""
    r = requests.get(server.url("/healthz"), timeout=10)
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def post_checked(http, spec, url, body, ctype="image/png", status=200, timeout=60):
    """POSTs body, checks the answer against api/openapi.yaml and asserts
    its status; returns the checked body."""
    r = http.post(url, data=body, headers={"Content-Type": ctype}, timeout=timeout)
    out = spec.check(r)
    assert r.status_code == status, r.text
    return out


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="session")
def spec():
    return OpenAPI()


@pytest.fixture(scope="session")
def env(tmp_path_factory):
    """Builds the shared material once: a synthetic survey (HDF5 + FITS
    cutouts), a tiny trained checkpoint in models/, a second checkpoint for
    reload tests, an API key file and a web root with a symlink out of it."""
    for name in ("galaxyd", "galaxy-synth", "galaxy-train"):
        assert os.access(tool(name), os.X_OK), f"{tool(name)} missing: build it (make BUILD={BUILD})"
    t = tmp_path_factory.mktemp("gxd")
    h5, fits_dir = str(t / "s.h5"), str(t / "fits")
    subprocess.run([tool("galaxy-synth"), "--out", h5, "--n", "240", "--size", "32", "--seed", "3",
                    "--balanced", "--quiet", "--fits", fits_dir], check=True, timeout=300)
    ck = str(t / "ck")
    subprocess.run([tool("galaxy-train"), "wavelet-mamba", "--config", "tiny", "--data", h5,
                    "--db", str(t / "r.sqlite"), "--out", ck, "--epochs", "1", "--batch", "16",
                    "--accum", "1", "--set", "max_train=64", "--quiet"], check=True, timeout=600)
    models = t / "models"
    models.mkdir()
    shutil.copy(os.path.join(ck, "best.safetensors"), models / f"{MODEL}.safetensors")
    key_file = t / "api.key"
    key_file.write_text(API_KEY + "\n")
    web = t / "web"
    (web / "sub").mkdir(parents=True)
    (web / "empty").mkdir()
    (web / "index.html").write_text("<!doctype html><title>galaxyd test</title><h1>galaxyd</h1>\n")
    (web / "app.js").write_text("console.log('galaxyd test');\n")
    (web / "sub" / "index.html").write_text("<p>sub</p>\n")
    (web / ".hidden").write_text("hidden\n")
    (t / "secret.txt").write_text("SECRET-OUTSIDE-WEB\n")
    os.symlink(str(t / "secret.txt"), str(web / "leak.txt"))
    os.symlink(str(t), str(web / "uplink"))
    fits_files = sorted(glob.glob(os.path.join(fits_dir, "*.fits")))
    assert len(fits_files) >= 16, "galaxy-synth --fits wrote too few files"
    return {
        "dir": str(t), "h5": h5, "fits": fits_files, "ck": ck, "models": str(models),
        "best": os.path.join(ck, "best.safetensors"), "last": os.path.join(ck, "last.safetensors"),
        "key_file": str(key_file), "web": str(web),
    }


def start(env, name, extra=(), api_key=True, models=None, proc_env=None):
    """A galaxyd of its own for one test (stop it with .stop()); proc_env:
    its environment (default: the tests')."""
    return Galaxyd(os.path.join(env["dir"], "srv-" + name), models or env["models"], env["web"],
                   extra=extra, api_key_file=env["key_file"] if api_key else None, env=proc_env)


# Limits of the shared server: small enough that the bad-input corpus can
# cross them cheaply, large enough for every legitimate request of the tests.
SHARED_FLAGS = ["--max-body", str(1 << 20), "--max-batch-parts", "8", "--conn-timeout", "2",
                "--deadline-ms", "30000", "--max-pixels", str(1024 * 1024)]


@pytest.fixture(scope="session")
def server(env):
    """The shared galaxyd (API key configured). Stopped with SIGTERM at the
    end of the session; a non-zero exit code fails the last test using it."""
    yield from serve(Galaxyd(os.path.join(env["dir"], "shared"), env["models"], env["web"], extra=SHARED_FLAGS,
                             api_key_file=env["key_file"]))


@pytest.fixture()
def http(server):
    """A requests session with the API key."""
    yield from keyed_session()


@pytest.fixture(scope="session")
def uda_env(env):
    """A tiny DeepAstroUDA checkpoint from the real trainer (`galaxy-train uda
    --backbone tiny`, one epoch on two small synthetic surveys, a few
    seconds) and a models dir serving it beside the WaveletMamba one (the
    shared server keeps its single model: test_routes counts on it)."""
    t = os.path.join(env["dir"], "uda")
    os.makedirs(t)
    src, tgt = os.path.join(t, "src.h5"), os.path.join(t, "tgt.h5")
    for path, seed, survey in ((src, 5, "sdss"), (tgt, 6, "decals")):
        subprocess.run([tool("galaxy-synth"), "--out", path, "--n", "120", "--size", "32", "--seed", str(seed),
                        "--balanced", "--quiet", "--survey", survey], check=True, timeout=300)
    ck = os.path.join(t, "ck")
    subprocess.run([tool("galaxy-train"), "uda", "--source", src, "--target", tgt, "--db", os.path.join(t, "r.sqlite"),
                    "--out", ck, "--backbone", "tiny", "--epochs", "1", "--known", "0,1,2",
                    "--set", "max_source=48", "--set", "max_target=48", "--quiet"], check=True, timeout=600)
    models = os.path.join(t, "models")
    os.makedirs(models)
    shutil.copy(os.path.join(ck, "best.safetensors"), os.path.join(models, "uda.safetensors"))
    shutil.copy(os.path.join(env["models"], f"{MODEL}.safetensors"), os.path.join(models, f"{MODEL}.safetensors"))
    return {"dir": t, "models": models, "ckpt": os.path.join(models, "uda.safetensors")}


@pytest.fixture(scope="session")
def cf_env(env):
    """A tiny CF-INN checkpoint from the real trainer (`galaxy-train cf-inn
    --config tiny`, one epoch on the session's synthetic survey, a few
    seconds; it stores m-hat, so counterfactuals work) and two models dirs:
    `models` serves it beside the WaveletMamba one (valid_independent,
    classify's cf_inn), `cf_only` serves it alone."""
    t = os.path.join(env["dir"], "cf")
    os.makedirs(t)
    ck = os.path.join(t, "ck")
    subprocess.run([tool("galaxy-train"), "cf-inn", "--config", "tiny", "--data", env["h5"],
                    "--db", os.path.join(t, "r.sqlite"), "--out", ck, "--epochs", "1", "--batch", "16",
                    "--set", "max_train=48", "--quiet"], check=True, timeout=600)
    models, cf_only = os.path.join(t, "models"), os.path.join(t, "cf_only")
    os.makedirs(models)
    os.makedirs(cf_only)
    for d in (models, cf_only):
        shutil.copy(os.path.join(ck, "best.safetensors"), os.path.join(d, "cf-inn.safetensors"))
    shutil.copy(os.path.join(env["models"], f"{MODEL}.safetensors"), os.path.join(models, f"{MODEL}.safetensors"))
    return {"dir": t, "models": models, "cf_only": cf_only, "ckpt": os.path.join(models, "cf-inn.safetensors")}


def pytest_collection_modifyitems(items):
    """The route-coverage check must run last, after every test file (its
    name sorts it last within test_routes.py only, not across files)."""
    items.sort(key=lambda it: it.name == "test_zz_every_operation_answered")
