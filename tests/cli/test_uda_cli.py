"""galaxy-train uda / score / report --kind uda through the real binaries.

Issue 7 (part 2): train DeepAstroUDA for one epoch with the tiny backbone on two
small synthetic surveys, score a file into the anomaly store twice (the second
run must find every object stored and write nothing), and print the Tables 1-2
style report. Bad flags exit 2 with a message naming the flag.
"""
import os
import sqlite3
import subprocess

import pytest

BUILD = os.environ.get("GALAXYD_BUILD", "build")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tool(name):
    return os.path.join(ROOT, BUILD, name)


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def surveys(tmp_path_factory):
    d = tmp_path_factory.mktemp("uda")
    src, tgt = d / "sdss.h5", d / "decals.h5"
    for path, survey, seed, classes in ((src, "sdss", "3", "galaxy10"), (tgt, "decals", "4", "galaxy10+lens")):
        subprocess.run([tool("galaxy-synth"), "--out", str(path), "--n", "150", "--size", "32", "--seed", seed,
                        "--survey", survey, "--classes", classes, "--balanced", "--quiet"], check=True)
    return d, src, tgt


def train(d, src, tgt, out, lam, epochs="1"):
    return run([tool("galaxy-train"), "uda", "--source", str(src), "--target", str(tgt), "--db", str(d / "r.db"),
                "--out", str(d / out), "--backbone", "tiny", "--known", "smooth=2+3+4,disk=5+6+7",
                "--exclude", "0,8,9", "--lambda", lam, "--epochs", epochs, "--seed", "7",
                "--set", "batch_source=16", "--set", "batch_target=16", "--set", "threads=1",
                "--set", "experiment=sdss-decals", "--quiet"])


@pytest.fixture(scope="module")
def trained(surveys):
    d, src, tgt = surveys
    a = train(d, src, tgt, "uda", "0.005")
    assert a.returncode == 0, a.stderr
    b = train(d, src, tgt, "base", "0")
    assert b.returncode == 0, b.stderr
    return d, src, tgt


def test_train_one_epoch_writes_rows_and_checkpoints(trained):
    d, _, _ = trained
    db = sqlite3.connect(d / "r.db")
    runs = db.execute("SELECT id, status FROM runs WHERE model_kind = 'uda' ORDER BY id").fetchall()
    assert [s for _, s in runs] == ["finished", "finished"]
    rid = runs[0][0]
    names = {(s, n) for s, n in db.execute("SELECT split, name FROM metrics WHERE run_id = ? AND epoch = 0", (rid,))}
    for n in ("loss_ce", "loss_ac", "loss_es", "loss_total", "rho", "margin", "es_active_frac", "tuner_rho",
              "tuner_margin"):
        assert ("train", n) in names
    for split in ("source_test", "target_test"):
        for n in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "known_accuracy", "unknown_accuracy",
                  "anomaly_auc"):
            assert (split, n) in names
    kinds = sorted(k for (k,) in db.execute("SELECT kind FROM checkpoints WHERE run_id = ?", (rid,)))
    assert kinds == ["best", "last"]
    assert (d / "uda" / "best.safetensors").exists() and (d / "uda" / "train_state.safetensors").exists()


def test_score_twice_second_writes_nothing(trained):
    d, _, tgt = trained
    db_path = d / "scores.db"
    args = [tool("galaxy-train"), "score", "--model", str(d / "uda" / "best.safetensors"), "--data", str(tgt),
            "--db", str(db_path), "--batch", "32", "--quiet"]
    first = run(args)
    assert first.returncode == 0, first.stderr
    assert "scored 150 of 150" in first.stdout
    db = sqlite3.connect(db_path)
    before = db.execute("SELECT count(*), max(id) FROM anomaly_scores").fetchone()
    objects = db.execute("SELECT count(*) FROM objects").fetchone()[0]
    assert before[0] == 150 and objects == 150
    second = run(args)
    assert second.returncode == 0, second.stderr
    assert "scored 0 of 150 objects (150 already stored" in second.stdout
    after = db.execute("SELECT count(*), max(id) FROM anomaly_scores").fetchone()
    assert after == before and db.execute("SELECT count(*) FROM objects").fetchone()[0] == objects
    row = db.execute("SELECT o.external_id, a.score, a.threshold, a.survey, m.model_kind FROM anomaly_scores a "
                     "JOIN objects o ON o.id = a.object_id JOIN served_models m ON m.id = a.model_id "
                     "WHERE o.external_id = 'decals.h5:0'").fetchone()
    assert row is not None and 0 <= row[1] <= 1 and row[2] > 0 and row[3] == "decals" and row[4] == "uda"


def test_report_prints_the_table(trained):
    d, _, _ = trained
    r = run([tool("galaxy-train"), "report", "--db", str(d / "r.db"), "--kind", "uda"])
    assert r.returncode == 0, r.stderr
    assert "| Experiment | No adaptation: target acc |" in r.stdout
    row = [l for l in r.stdout.splitlines() if l.startswith("| sdss-decals |")]
    assert len(row) == 1
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    assert cells[-1] == "1 / 1"
    for c in cells[1:7]:
        assert c != "—" and 0 <= float(c) <= 1


def test_bad_flags_exit_2(surveys):
    d, src, tgt = surveys
    r = run([tool("galaxy-train"), "uda", "--source", str(src), "--target", str(tgt), "--db", str(d / "x.db"),
             "--out", str(d / "x"), "--backbone", "vgg"])
    assert r.returncode == 2 and "--backbone" in r.stderr
    r = run([tool("galaxy-train"), "uda", "--source", str(src), "--db", str(d / "x.db"), "--out", str(d / "x")])
    assert r.returncode == 2 and "--target" in r.stderr
    r = run([tool("galaxy-train"), "score", "--model", "m.safetensors", "--data", str(tgt), "--db",
             str(d / "x.db"), "--domain", "sideways"])
    assert r.returncode == 2 and "--domain" in r.stderr
    r = run([tool("galaxy-train"), "score", "--model", str(d / "missing.safetensors"), "--data", str(tgt),
             "--db", str(d / "x.db"), "--quiet"])
    assert r.returncode == 1 and "--model" in r.stderr
