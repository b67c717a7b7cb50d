"""The read-only training routes (daemon/gx_server_runs.c) against
api/openapi.yaml and against the database galaxy-train wrote.

galaxyd here opens a copy of the trainer's own database (the session's tiny
real run, tests/daemon/conftest.py `env`), so every number the routes answer
can be compared with what sqlite3 reads from the same file.
"""
import json
import os
import sqlite3

import pytest
import requests

from conftest import Galaxyd, auth, API_KEY  # noqa: F401  (auth used with --protect-reads)


def _copy_db(src, dst):
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)


@pytest.fixture(scope="module")
def runs_srv(env, tmp_path_factory):
    t = tmp_path_factory.mktemp("runs")
    db = str(t / "galaxyd.sqlite")
    _copy_db(os.path.join(env["dir"], "r.sqlite"), db)
    # A second run, written the way galaxy-train writes one (a run that is
    # still going: no finished_at, one epoch so far, a NaN stored as NULL).
    with sqlite3.connect(db) as c:
        cur = c.execute("INSERT INTO runs(model_kind, config_json, seed, status) VALUES ('uda', '{\"k\": 3}', 9, 'running')")
        rid = cur.lastrowid
        c.executemany("INSERT INTO metrics(run_id, epoch, split, name, value) VALUES (?, ?, ?, ?, ?)",
                      [(rid, 0, "train", "rho", 0.4), (rid, 0, "train", "m", None), (rid, 0, "target", "accuracy", 0.5)])
    s = Galaxyd(str(t / "srv"), env["models"], env["web"], db=db)
    yield s, db, rid
    assert s.stop() == 0


def get(s, path, spec, status=200):
    r = requests.get(s.url(path), timeout=10)
    body = spec.check(r)
    assert r.status_code == status, (path, r.status_code, r.text[:300])
    return body


def test_list_runs(runs_srv, spec):
    s, db, rid = runs_srv
    body = get(s, "/v1/runs", spec)
    with sqlite3.connect(db) as c:
        want = [r[0] for r in c.execute("SELECT id FROM runs ORDER BY id DESC")]
    assert [r["id"] for r in body["items"]] == want and body["next_cursor"] is None
    first = body["items"][-1]
    assert first["model_kind"] == "wavelet-mamba" and first["status"] == "finished"
    assert first["finished_at"] and first["config"]["train"]["batch"] == 16
    assert first["last_epoch"] == 0                   # the tiny run trains one epoch (0-based)
    new = body["items"][0]
    assert new["id"] == rid and new["status"] == "running" and new["finished_at"] is None and new["seed"] == 9
    assert new["config"] == {"k": 3}


def test_list_filters_and_paging(runs_srv, spec):
    s, db, rid = runs_srv
    assert [r["id"] for r in get(s, "/v1/runs?model_kind=uda", spec)["items"]] == [rid]
    assert [r["status"] for r in get(s, "/v1/runs?status=finished", spec)["items"]] == ["finished"]
    assert get(s, "/v1/runs?model_kind=cf-inn", spec)["items"] == []
    p1 = get(s, "/v1/runs?limit=1", spec)
    assert len(p1["items"]) == 1 and p1["next_cursor"]
    p2 = get(s, f"/v1/runs?limit=1&cursor={p1['next_cursor']}", spec)
    assert p2["items"][0]["id"] < p1["items"][0]["id"] and p2["next_cursor"] is None


def test_get_run_series_index(runs_srv, spec):
    s, db, rid = runs_srv
    body = get(s, "/v1/runs/1", spec)
    with sqlite3.connect(db) as c:
        want = c.execute("SELECT COUNT(DISTINCT split || '/' || name) FROM metrics WHERE run_id = 1").fetchone()[0]
    assert len(body["series"]) == want > 0
    pairs = {(x["split"], x["name"]) for x in body["series"]}
    assert ("val", "accuracy") in pairs and ("train", "lr") in pairs


def test_metrics_series_equal_database(runs_srv, spec):
    s, db, rid = runs_srv
    body = get(s, "/v1/runs/1/metrics", spec)
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT split, name, epoch, value FROM metrics WHERE run_id = 1").fetchall()
    got = {(x["split"], x["name"], e): v for x in body["series"] for e, v in zip(x["epochs"], x["values"])}
    assert len(got) == len(rows)
    for split, name, epoch, value in rows:
        g = got[(split, name, epoch)]
        assert (g is None and value is None) or abs(g - value) <= 1e-8 * max(1, abs(value)), (split, name)
    one = get(s, "/v1/runs/1/metrics?split=val&name=accuracy", spec)
    assert [(x["split"], x["name"]) for x in one["series"]] == [("val", "accuracy")]


def test_metrics_long_format_and_null(runs_srv, spec):
    s, db, rid = runs_srv
    body = get(s, f"/v1/runs/{rid}/metrics?format=long", spec)
    assert {(r["split"], r["name"], r["value"]) for r in body["items"]} == {
        ("train", "rho", 0.4), ("train", "m", None), ("target", "accuracy", 0.5)}
    assert get(s, f"/v1/runs/{rid}/metrics?name=nothing", spec)["series"] == []


def test_checkpoints(runs_srv, spec):
    s, db, rid = runs_srv
    body = get(s, "/v1/runs/1/checkpoints", spec)
    kinds = {c["kind"] for c in body["items"]}
    assert kinds == {"best", "last"}
    with sqlite3.connect(db) as c:
        shas = {r[0] for r in c.execute("SELECT sha256 FROM checkpoints WHERE run_id = 1")}
    assert {c["sha256"] for c in body["items"]} == shas
    with sqlite3.connect(db) as c:
        stored = {r[0]: json.loads(r[1]) for r in c.execute("SELECT id, metrics_json FROM checkpoints WHERE run_id = 1")}
    got = {c["id"]: c["metrics"] for c in body["items"]}
    assert got.keys() == stored.keys()
    for k, m in stored.items():      # the API prints numbers with 9 significant digits
        assert got[k].keys() == m.keys()
        for name, v in m.items():
            assert got[k][name] == v if not isinstance(v, float) else abs(got[k][name] - v) <= 1e-8 * max(1, abs(v))
    assert get(s, f"/v1/runs/{rid}/checkpoints", spec)["items"] == []


def test_reports(runs_srv, env, spec, tmp_path):
    s, db, rid = runs_srv
    # No run has test metrics yet: the report says so (404, in words).
    r = requests.get(s.url("/v1/reports/compare"), timeout=10)
    spec.check(r)
    assert r.status_code == 404 and "test metrics" in r.json()["error"]["message"]
    # Asked for a run by id, the bias table has its row (values "—": not evaluated).
    r = requests.get(s.url("/v1/reports/bias?runs=1"), timeout=10)
    spec.check(r)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/markdown")
    assert "| 1 |" in r.text


@pytest.mark.parametrize("path,status,field", [
    ("/v1/runs/0", 400, "run_id"), ("/v1/runs/abc", 400, "run_id"), ("/v1/runs/999999", 404, None),
    ("/v1/runs/999999/metrics", 404, None), ("/v1/runs/999999/checkpoints", 404, None),
    ("/v1/runs?limit=0", 400, "limit"), ("/v1/runs?limit=1001", 400, "limit"), ("/v1/runs?cursor=x", 400, "cursor"),
    ("/v1/runs?model_kind=a%20b", 400, "model_kind"), ("/v1/runs/1/metrics?format=wide", 400, "format"),
    ("/v1/runs/1/metrics?split=a/b", 400, "split"), ("/v1/reports/nope", 404, None), ("/v1/reports/BIAS", 404, None),
    ("/v1/reports/bias?runs=1,", 400, "runs"), ("/v1/reports/bias?runs=1,x", 400, "runs"),
    ("/v1/reports/bias?runs=424242", 404, None),
])
def test_bad_requests(runs_srv, spec, path, status, field):
    s, db, rid = runs_srv
    r = requests.get(s.url(path), timeout=10)
    spec.check(r)
    assert r.status_code == status, (path, r.text)
    if field:
        assert f"'{field}'" in r.json()["error"]["message"]
    assert requests.get(s.url("/healthz"), timeout=5).status_code == 200


def test_post_is_405(runs_srv, spec):
    s, db, rid = runs_srv
    r = requests.post(s.url("/v1/runs"), data=b"{}", timeout=10)
    spec.check(r)
    assert r.status_code == 405 and "GET" in r.headers["Allow"]


def test_protect_reads(env, spec, tmp_path):
    """With --protect-reads the runs routes need the key like every data GET."""
    s = Galaxyd(str(tmp_path / "srv"), env["models"], env["web"], api_key_file=env["key_file"], extra=["--protect-reads"])
    try:
        r = requests.get(s.url("/v1/runs"), timeout=10)
        spec.check(r)
        assert r.status_code == 401
        r = requests.get(s.url("/v1/runs"), headers=auth(), timeout=10)
        spec.check(r)
        assert r.status_code == 200 and r.json()["items"] == []     # a fresh database has no runs
    finally:
        assert s.stop() == 0
