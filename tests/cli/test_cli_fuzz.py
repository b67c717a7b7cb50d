"""A seeded fuzz campaign over the command lines of galaxy-synth, galaxy-train
(every command), galaxyd and galaxy-loadgen.

The flags of each program come from its own --help, so a new flag is fuzzed
the day it is documented. Each run gets 0-6 of them, with values drawn from
what the flag expects (numbers, names, lists) or from a list of hostile ones
(empty, negative, huge, NaN, overlong, a directory, /dev/null, a missing file,
a corrupt HDF5 or safetensors file, a truncated checkpoint), sometimes a flag
twice, without its value, an unknown flag or a stray word. Invariants:

  * the process ends by itself with 0, 1 (a runtime error) or 2 (a usage
    error): never a signal, never a sanitizer report;
  * a failure says why on stderr;
  * a usage error (2) changes nothing: the run's scratch folder, where every
    output path points, stays empty.

A run still going after its time limit is doing real work (training, serving):
galaxyd must then stop cleanly on SIGTERM (exit 0); others are killed.

`make test` runs it for GX_CLI_FUZZ_SECS (default 20 s) with seed
GX_CLI_FUZZ_SEED (default 1); `make test-asan` again on the sanitizer build.
A failure prints the seed and the exact command line.
"""
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

BUILD = os.environ.get("GALAXYD_BUILD", "build")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from sanitizer_marks import sanitizer_report  # noqa: E402
SECS = float(os.environ.get("GX_CLI_FUZZ_SECS", "20"))
SEED = int(os.environ.get("GX_CLI_FUZZ_SEED", "1"))
RUN_LIMIT = 8.0          # seconds before a run counts as doing real work
SERVE_LIMIT = 2.0        # the same for galaxyd: serving is its real work
FLAG_RE = re.compile(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)")

HOSTILE = ["", "0", "-1", "1", "2", "3", "7", "32", "1e309", "nan", "-inf", "0x10", "1.5", " 4", "4 ",
           "99999999999999999999", "-9223372036854775808", "a" * 600, "\u00fcn\u00efc\u00f6de", "all",
           "0,1,2", "1,,2", "0,0", "x=1", "=", "lr=nan", "epochs=-3", "size=0", "threads=999999",
           "smooth=2+3+4,disk=5+6", "cpu", "cuda", "auto", "sdss", "decals", "lsst-y1", "galaxy10+lens",
           "tiny", "default", "resnet18", "uda", "table2", "--", "-"]


def tool(name):
    return os.path.join(ROOT, BUILD, name)


def programs():
    """(argv prefix, flags) of every program and galaxy-train command."""
    out = []

    def flags_of(argv):
        r = subprocess.run(argv + ["--help"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f"{argv} --help exited {r.returncode}: {r.stderr[-500:]}"
        return sorted(set(FLAG_RE.findall(r.stdout + r.stderr)) - {"--help"})

    for name in ("galaxy-synth", "galaxyd", "galaxy-loadgen"):
        if os.access(tool(name), os.X_OK):
            out.append(([tool(name)], flags_of([tool(name)])))
    r = subprocess.run([tool("galaxy-train"), "--help"], capture_output=True, text=True, timeout=30)
    cmds = re.findall(r"^  ([a-z][a-z0-9-]+)\s{2,}", r.stdout + r.stderr, re.M)
    assert len(cmds) >= 6, f"galaxy-train --help lists too few commands: {cmds}"
    for c in cmds:
        out.append(([tool("galaxy-train"), c], flags_of([tool("galaxy-train"), c])))
    return out


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    """Files the values are drawn from: a small valid survey, a tiny valid
    checkpoint of each trainer, and broken files."""
    d = tmp_path_factory.mktemp("clifuzz")
    h5 = d / "s.h5"
    subprocess.run([tool("galaxy-synth"), "--out", str(h5), "--n", "40", "--size", "32", "--seed", "2",
                    "--balanced", "--quiet"], check=True, timeout=120)
    ck = d / "wm"
    subprocess.run([tool("galaxy-train"), "wavelet-mamba", "--config", "tiny", "--data", str(h5), "--db",
                    str(d / "r.sqlite"), "--out", str(ck), "--epochs", "1", "--batch", "8", "--set",
                    "max_train=8", "--quiet"], check=True, timeout=300, capture_output=True)
    good_ck = ck / "best.safetensors"
    uck = d / "uda"
    subprocess.run([tool("galaxy-train"), "uda", "--source", str(h5), "--target", str(h5), "--db",
                    str(d / "r.sqlite"), "--out", str(uck), "--backbone", "tiny", "--epochs", "1", "--known",
                    "0,1,2", "--set", "max_source=8", "--set", "max_target=8", "--quiet"],
                   check=True, timeout=300, capture_output=True)
    models = d / "models"
    models.mkdir()
    shutil.copy(good_ck, models / "wavelet-mamba.safetensors")
    blob = good_ck.read_bytes()
    (d / "trunc.safetensors").write_bytes(blob[:len(blob) // 3])
    (d / "junk.h5").write_bytes(bytes(random.Random(5).randrange(256) for _ in range(4096)))
    (d / "empty").write_bytes(b"")
    (d / "folder").mkdir()
    return {"dir": d, "h5": str(h5), "wm": str(good_ck), "uda": str(uck / "best.safetensors"),
            "models": str(models), "db": str(d / "r.sqlite"),
            "files": [str(h5), str(good_ck), str(uck / "best.safetensors"), str(d / "trunc.safetensors"),
                      str(d / "junk.h5"), str(d / "empty"), str(d / "folder"), "/dev/null",
                      str(d / "missing.h5"), str(d / "r.sqlite"), str(models)]}


def base_argv(prog, m, scratch):
    """A command line of prog that works (small and quick), or None: the
    campaign mutates it, so most runs get past the parser into the program."""
    o = lambda name: os.path.join(scratch, name)
    train = ["--config", "tiny", "--data", m["h5"], "--db", o("r.db"), "--out", o("ck"), "--epochs", "1",
             "--batch", "8", "--quiet", "--set", "max_train=8"]
    bases = {
        "galaxy-synth": ["--out", o("s.h5"), "--n", "8", "--size", "32", "--seed", "1", "--quiet"],
        "wavelet-mamba": train,
        "cf-inn": train,
        "uda": ["--source", m["h5"], "--target", m["h5"], "--db", o("r.db"), "--out", o("ck"), "--backbone", "tiny",
                "--epochs", "1", "--known", "0,1,2", "--set", "max_source=8", "--set", "max_target=8", "--quiet"],
        "score": ["--model", m["uda"], "--data", m["h5"], "--db", o("a.db"), "--quiet"],
        "eval": ["--checkpoint", m["wm"], "--data", m["h5"]],
        "bundle": ["--checkpoint", m["wm"], "--data", m["h5"], "--out", o("b.safetensors")],
        "report": ["--db", m["db"], "--kind", "compare"],
        "galaxyd": ["--models", m["models"], "--db", o("g.db"), "--port", "0", "--host", "127.0.0.1"],
        "galaxy-loadgen": ["--url", "http://127.0.0.1:9/v1/models", "--duration", "1"],
    }
    return bases.get(prog)


def mutate_argv(rnd, argv, n_fixed, flags, material, scratch):
    """1-3 edits of a working command line (after its n_fixed leading words):
    a value replaced, a flag dropped or repeated, a flag added."""
    argv = list(argv)
    for _ in range(rnd.randint(1, 3)):
        k = rnd.random()
        flag_at = [i for i in range(n_fixed, len(argv)) if argv[i].startswith("--")]
        if k < 0.45 and flag_at:
            i = rnd.choice(flag_at)
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                argv[i + 1] = value_for(rnd, argv[i], material, scratch)
        elif k < 0.6 and flag_at:
            i = rnd.choice(flag_at)
            has_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
            del argv[i:i + (2 if has_value else 1)]
        elif k < 0.7 and flag_at:
            i = rnd.choice(flag_at)
            argv += [argv[i], value_for(rnd, argv[i], material, scratch)]
        else:
            f = rnd.choice(flags) if flags else "--bogus-flag"
            argv += [f, value_for(rnd, f, material, scratch)]
    return argv


OUTPUT_FLAGS = ("--out", "--db", "--grid", "--fits", "--log", "--pid-file", "--export")


def value_for(rnd, flag, material, scratch):
    """A value for flag: an output path in scratch, an input file, a number
    or name that fits, or a hostile one."""
    if flag in OUTPUT_FLAGS or flag.endswith("-out"):
        return rnd.choice([os.path.join(scratch, "o" + str(rnd.randrange(9))), os.path.join(scratch, "no", "dir", "x"),
                           scratch, "/dev/null"])
    r = rnd.random()
    if r < 0.45 and any(k in flag for k in ("data", "source", "target", "model", "checkpoint", "init", "judge",
                                             "resume", "models", "web", "key", "file", "catalog")):
        return rnd.choice(material["files"])
    if r < 0.75:
        return rnd.choice(["1", "2", "4", "16", "32", "0.5", "0.005", "7", "tiny", "0,1,2,4", "cpu", "source",
                           "127.0.0.1", "0"])
    return rnd.choice(HOSTILE)


def argv_for(rnd, prefix, flags, material, scratch):
    argv = list(prefix)
    for _ in range(rnd.randint(0, 6)):
        k = rnd.random()
        if k < 0.05:
            argv.append(rnd.choice(["--bogus-flag", "stray", "-x", "--"]))
            continue
        f = rnd.choice(flags) if flags else "--bogus-flag"
        argv.append(f)
        if k < 0.92:
            argv.append(value_for(rnd, f, material, scratch))
    if prefix[0].endswith("galaxyd") and "--port" not in argv:
        argv += ["--port", "0"]   # never a fixed port: runs would collide
    return argv


def run_one(argv, scratch):
    """Runs argv in scratch; (returncode, stderr, stdout, went_long)."""
    p = subprocess.Popen(argv, cwd=scratch, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        out, err = p.communicate(timeout=SERVE_LIMIT if argv[0].endswith("galaxyd") else RUN_LIMIT)
        return p.returncode, err.decode(errors="replace"), out.decode(errors="replace"), False
    except subprocess.TimeoutExpired:
        if argv[0].endswith("galaxyd"):
            p.send_signal(signal.SIGTERM)
            try:
                out, err = p.communicate(timeout=30)
                return p.returncode, err.decode(errors="replace"), out.decode(errors="replace"), True
            except subprocess.TimeoutExpired:
                pass
        p.kill()
        out, err = p.communicate()
        return None, err.decode(errors="replace"), out.decode(errors="replace"), True


def test_cli_fuzz_campaign(material, tmp_path):
    rnd = random.Random(SEED)
    progs = programs()
    deadline, n, codes = time.monotonic() + SECS, 0, Counter()
    while time.monotonic() < deadline:
        prefix, flags = rnd.choice(progs)
        scratch = str(tmp_path / f"run{n}")
        os.makedirs(scratch)
        base = base_argv(os.path.basename(prefix[-1]), material, scratch)
        if base and rnd.random() < 0.75:
            argv = mutate_argv(rnd, prefix + base, len(prefix), flags, material, scratch)
        else:
            argv = argv_for(rnd, prefix, flags, material, scratch)
        rc, err, out, went_long = run_one(argv, scratch)
        n += 1
        shown = f"seed {SEED}, run {n}: {shlex.join(argv)}\nstderr: {err[-1500:]}"
        assert not sanitizer_report(err, out), f"sanitizer report:\n{shown}"
        if went_long:
            if argv[0].endswith("galaxyd"):
                assert rc == 0, f"galaxyd did not stop cleanly on SIGTERM (exit {rc}):\n{shown}"
            codes["long"] += 1
        else:
            assert rc in (0, 1, 2), f"exit {rc} (a negative one is a signal):\n{shown}"
            assert rc == 0 or err.strip(), f"exit {rc} without a message:\n{shown}"
            if rc == 2:
                left = os.listdir(scratch)
                assert not left, f"a usage error left {left} behind:\n{shown}"
            codes[rc] += 1
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"cli fuzz: seed {SEED}, {n} runs in {SECS:g} s, outcomes {sorted(codes.items(), key=str)}")
    # Not vacuous: both kinds of refusal were met.
    assert n >= 10 and codes[2] > 0 and codes[1] + codes[0] > 0, codes
