"""The routes the dashboard gained for issue 8, against api/openapi.yaml and
against the databases the real trainers wrote:

  GET /v1/runs/{run_id}/confusion           the per-epoch confusion matrices
                                            (migrations/0006) of wavelet-mamba,
                                            cf-inn and uda runs
  GET /v1/anomalies/{object_id}/thumb.png   the thumbnails (migrations/0007)
                                            stored with anomaly scores, online
                                            and by `galaxy-train score`

Each trainer's database is the session's own tiny run (conftest's env,
cf_env, uda_env), copied, so the answers can be compared with what sqlite3
reads from the same file: the matrix is the stored cells, its recall is the
trainer's own recall_<k> metric rows, its total is the evaluated split. The
thumbnails are decoded (a small pure-Python PNG reader) and compared with the
pixels that were sent. Bad inputs answer 4xx JSON errors.
"""
import os
import sqlite3
import subprocess

import pytest
import requests

from conftest import Galaxyd, galaxy_pixels, galaxy_png, healthy, keyed_session, png_decode, serve, tool


def _copy_db(src, dst):
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)


def get(s, path, spec, status=200, session=None):
    r = (session or requests).get(s.url(path), timeout=30)
    body = spec.check(r)
    assert r.status_code == status, (path, r.status_code, r.text[:300])
    return body, r


# ------------------------------------------------------------------ confusion

@pytest.fixture(scope="module")
def trained(env, cf_env, uda_env, tmp_path_factory):
    """One galaxyd per trainer database (the runs routes read --db), plus
    hand-made runs in the wavelet-mamba copy for the fallbacks and the
    404s."""
    t = tmp_path_factory.mktemp("dash")
    out = {}
    for kind, src in (("wavelet-mamba", os.path.join(env["dir"], "r.sqlite")),
                      ("cf-inn", os.path.join(cf_env["dir"], "r.sqlite")),
                      ("uda", os.path.join(uda_env["dir"], "r.sqlite"))):
        db = str(t / f"{kind}.sqlite")
        _copy_db(src, db)
        out[kind] = {"db": db}
    with sqlite3.connect(out["wavelet-mamba"]["db"]) as c:
        # A run with matrices at epochs 0 and 1 and no best checkpoint: best
        # falls back to the last epoch. A run whose best checkpoint's epoch
        # has no matrix falls back too. A run with no matrix at all: 404.
        ids = []
        for _ in range(3):
            ids.append(c.execute("INSERT INTO runs(model_kind, seed, status) VALUES ('cf-inn', 1, 'finished')").lastrowid)
        cells = lambda rid, ep, m: [(rid, ep, "val", i // 2, i % 2, v) for i, v in enumerate(m)]
        c.executemany("INSERT INTO confusion(run_id, epoch, split, true_class, pred_class, count) VALUES (?,?,?,?,?,?)",
                      cells(ids[0], 0, [3, 1, 2, 4]) + cells(ids[0], 1, [4, 0, 1, 5]) + cells(ids[1], 0, [1, 1, 1, 1]))
        c.execute("INSERT INTO checkpoints(run_id, epoch, kind, path, sha256) VALUES (?, 2, 'best', '/x', ?)",
                  (ids[1], "a" * 64))
        out["extra"] = ids
    servers = []
    try:
        for kind in ("wavelet-mamba", "cf-inn", "uda"):
            s = Galaxyd(str(t / f"srv-{kind}"), env["models"], env["web"], db=out[kind]["db"])
            servers.append(s)
            out[kind]["srv"] = s
        yield out
    finally:
        for s in servers:
            assert s.stop() == 0


def stored(db, run, epoch, split):
    with sqlite3.connect(db) as c:
        cells = c.execute("SELECT true_class, pred_class, count FROM confusion WHERE run_id = ? AND epoch = ?"
                          " AND split = ? ORDER BY 1, 2", (run, epoch, split)).fetchall()
        k = max(t for t, _, _ in cells) + 1
        m = [[0] * k for _ in range(k)]
        for t, p, v in cells:
            m[t][p] = v
        return m


def metric(db, run, epoch, split, name):
    with sqlite3.connect(db) as c:
        row = c.execute("SELECT value FROM metrics WHERE run_id = ? AND epoch = ? AND split = ? AND name = ?",
                        (run, epoch, split, name)).fetchone()
        return row[0] if row else None


def best_epoch(db, run):
    with sqlite3.connect(db) as c:
        return c.execute("SELECT epoch FROM checkpoints WHERE run_id = ? AND kind = 'best'"
                         " ORDER BY epoch DESC, id DESC LIMIT 1", (run,)).fetchone()[0]


@pytest.mark.parametrize("kind", ["wavelet-mamba", "cf-inn"])
def test_confusion_of_a_classifier_run(trained, spec, kind):
    """The trainers store the validation matrix of every epoch: the answer is
    those cells, its recall the trainer's recall_<k> rows."""
    s, db = trained[kind]["srv"], trained[kind]["db"]
    c, _ = get(s, "/v1/runs/1/confusion", spec)
    assert c["run_id"] == 1 and c["split"] == "val" and c["splits"] == ["val"]
    assert c["epoch"] == best_epoch(db, 1) and c["epoch_source"] == "best_checkpoint"
    assert c["matrix"] == stored(db, 1, c["epoch"], "val")
    k = len(c["matrix"])
    assert k == 10 and len(c["classes"]) == k and len(c["recall"]) == k and c["classes"][0] != "class 0"
    for t in range(k):
        want = metric(db, 1, c["epoch"], "val", f"recall_{t}")
        got = c["recall"][t]
        assert (got is None and want is None) or abs(got - want) < 1e-8, (t, got, want)   # JSON: 9 digits
        assert c["support"][t] == sum(c["matrix"][t])
    assert c["n"] == sum(c["support"]) > 0
    assert abs(c["accuracy"] - metric(db, 1, c["epoch"], "val", "accuracy")) < 1e-8
    # The same epoch asked for by number and split.
    e, _ = get(s, f"/v1/runs/1/confusion?epoch={c['epoch']}&split=val", spec)
    assert e["epoch_source"] == "requested" and e["matrix"] == c["matrix"]


def test_confusion_of_a_uda_run(trained, spec):
    """uda stores both test splits with K+1 classes, the last unknown; the
    target split is the default."""
    s, db = trained["uda"]["srv"], trained["uda"]["db"]
    c, _ = get(s, "/v1/runs/1/confusion", spec)
    assert c["split"] == "target_test" and set(c["splits"]) == {"source_test", "target_test"}
    assert c["splits"][0] == "target_test"
    assert c["classes"][-1] == "unknown" and len(c["classes"]) == 4   # --known 0,1,2 + unknown
    assert c["matrix"] == stored(db, 1, c["epoch"], "target_test")
    assert c["n"] == metric(db, 1, c["epoch"], "target_test", "n")
    assert abs(c["accuracy"] - metric(db, 1, c["epoch"], "target_test", "accuracy")) < 1e-8
    src, _ = get(s, "/v1/runs/1/confusion?split=source_test", spec)
    assert src["split"] == "source_test" and src["matrix"] == stored(db, 1, src["epoch"], "source_test")
    assert src["n"] == metric(db, 1, src["epoch"], "source_test", "n")


def test_confusion_best_falls_back_to_the_last_matrix(trained, spec):
    s = trained["wavelet-mamba"]["srv"]
    no_best, best_without, _ = trained["extra"]
    c, _ = get(s, f"/v1/runs/{no_best}/confusion", spec)
    assert (c["epoch"], c["epoch_source"]) == (1, "last_epoch")
    assert c["matrix"] == [[4, 0], [1, 5]] and c["recall"][0] == 1.0 and abs(c["recall"][1] - 5 / 6) < 1e-8
    assert c["accuracy"] == 0.9
    assert c["classes"] == ["class 0", "class 1"]          # the run stored no names
    c, _ = get(s, f"/v1/runs/{no_best}/confusion?epoch=0", spec)
    assert c["matrix"] == [[3, 1], [2, 4]] and c["epoch_source"] == "requested"
    c, _ = get(s, f"/v1/runs/{best_without}/confusion?epoch=best", spec)
    assert (c["epoch"], c["epoch_source"]) == (0, "last_epoch")


def test_confusion_bad_inputs(trained, spec):
    s = trained["wavelet-mamba"]["srv"]
    _, _, bare = trained["extra"]
    for path, status, word in [
        ("/v1/runs/999/confusion", 404, "no run 999"),
        (f"/v1/runs/{bare}/confusion", 404, "no"),
        ("/v1/runs/1/confusion?epoch=57", 404, "epoch 57"),
        ("/v1/runs/1/confusion?split=nope", 404, "nope"),
        ("/v1/runs/1/confusion?epoch=-1", 400, "epoch"),
        ("/v1/runs/1/confusion?epoch=abc", 400, "epoch"),
        ("/v1/runs/1/confusion?epoch=1.5", 400, "epoch"),
        ("/v1/runs/1/confusion?split=a%20b", 400, "split"),
        ("/v1/runs/0/confusion", 400, "run_id"),
        ("/v1/runs/x/confusion", 400, "run_id"),
    ]:
        body, _ = get(s, path, spec, status)
        assert word in body["error"]["message"], (path, body)
    r = requests.post(s.url("/v1/runs/1/confusion"), timeout=10)
    spec.check(r)
    assert r.status_code == 405
    healthy(s)


# ------------------------------------------------------------------ thumbnails

@pytest.fixture(scope="module")
def uda_srv(env, uda_env, tmp_path_factory):
    t = tmp_path_factory.mktemp("dash-uda")
    yield from serve(Galaxyd(str(t / "srv"), uda_env["models"], env["web"], api_key_file=env["key_file"]))


@pytest.fixture()
def uh(uda_srv):
    yield from keyed_session()


def model_size(http, s, kind):
    models = http.get(s.url("/v1/models"), timeout=10).json()["models"]
    return next(m["input_size"] for m in models if m["kind"] == kind)


def post_anomaly(http, s, spec, png, query):
    r = http.post(s.url("/v1/anomaly" + query), data=png, headers={"Content-Type": "image/png"}, timeout=60)
    body = spec.check(r)
    assert r.status_code == 200, r.text
    return body


def check_pixels(thumb, seed, size):
    """A thumbnail of a size x size galaxy_png(seed) sent to a model of the
    same input size is that image (crop 1, no resize): exact 8-bit values."""
    w, h, ch, rows = png_decode(thumb)
    assert (w, h, ch) == (size, size, 3)
    assert b"".join(rows) == galaxy_pixels(seed, size)


def test_thumbnails_of_stored_scores(uda_srv, uh, spec):
    size = model_size(uh, uda_srv, "uda")
    assert size <= 64, "the tiny uda model is expected to take inputs of at most 64 pixels"
    a = post_anomaly(uh, uda_srv, spec, galaxy_png(501, size), "?object_id=dash.J1:a&survey=decals")
    assert a["stored"] is True
    body, r = get(uda_srv, "/v1/anomalies/dash.J1:a/thumb.png", spec, session=uh)
    assert r.headers["Content-Type"] == "image/png" and r.headers["X-Object-Version"] == "1"
    check_pixels(body, 501, size)
    # The list and the history link it.
    hist, _ = get(uda_srv, "/v1/anomalies/dash.J1:a", spec, session=uh)
    (row,) = hist["scores"]
    assert row["version"] == 1 and row["thumbnail_url"] == "/v1/anomalies/dash.J1:a/thumb.png?version=1"
    page, _ = get(uda_srv, "/v1/anomalies?survey=decals&limit=1000", spec, session=uh)
    assert [x["thumbnail_url"] for x in page["items"] if x["object_id"] == "dash.J1:a"] == [row["thumbnail_url"]]
    # A second image of the object is version 2 and the new default; the
    # batch route stores thumbnails too.
    from conftest import multipart
    body2, ct = multipart([("object_id", "dash.J1:a", None, None), ("survey", "decals", None, None),
                           ("file", galaxy_png(502, size), "b.png", None)])
    r = uh.post(uda_srv.url("/v1/anomaly/batch"), data=body2, headers={"Content-Type": ct}, timeout=60)
    (item,) = spec.check(r)["results"]
    assert item["stored"] is True
    body, r = get(uda_srv, "/v1/anomalies/dash.J1:a/thumb.png", spec, session=uh)
    assert r.headers["X-Object-Version"] == "2"
    check_pixels(body, 502, size)
    body, r = get(uda_srv, "/v1/anomalies/dash.J1:a/thumb.png?version=1", spec, session=uh)
    check_pixels(body, 501, size)
    hist, _ = get(uda_srv, "/v1/anomalies/dash.J1:a", spec, session=uh)
    assert [x["version"] for x in hist["scores"]] == [2, 1]
    # Re-sending version 1 stores nothing new and keeps its thumbnail.
    again = post_anomaly(uh, uda_srv, spec, galaxy_png(501, size), "?object_id=dash.J1:a&survey=decals")
    assert again["anomaly_id"] == a["anomaly_id"]
    body, _ = get(uda_srv, "/v1/anomalies/dash.J1:a/thumb.png?version=1", spec, session=uh)
    check_pixels(body, 501, size)
    healthy(uda_srv)


def test_thumbnail_not_found_and_bad_inputs(uda_srv, uh, spec):
    size = model_size(uh, uda_srv, "uda")
    post_anomaly(uh, uda_srv, spec, galaxy_png(520, size), "?object_id=dash-nf")
    # An image only classified (no score) is a version without a thumbnail.
    r = uh.post(uda_srv.url("/v1/classify?object_id=dash-nf&model=wavelet-mamba"), data=galaxy_png(521, 32),
                headers={"Content-Type": "image/png"}, timeout=60)
    assert spec.check(r) and r.status_code == 200, r.text
    for path, status, word in [
        ("/v1/anomalies/nobody/thumb.png", 404, "nobody"),
        ("/v1/anomalies/dash-nf/thumb.png?version=2", 404, "version 2"),
        ("/v1/anomalies/dash-nf/thumb.png?version=9", 404, "version 9"),
        ("/v1/anomalies/dash-nf/thumb.png?version=0", 400, "version"),
        ("/v1/anomalies/dash-nf/thumb.png?version=x", 400, "version"),
        ("/v1/anomalies/a%20b/thumb.png", 400, "object_id"),
    ]:
        body, _ = get(uda_srv, path, spec, status, session=uh)
        assert word in body["error"]["message"], (path, body)
    # The default is the newest version that has one (version 1 here).
    _, r = get(uda_srv, "/v1/anomalies/dash-nf/thumb.png", spec, session=uh)
    assert r.headers["X-Object-Version"] == "1"
    # "thumb.png" alone is an object id of the history route.
    body, _ = get(uda_srv, "/v1/anomalies/thumb.png", spec, 404, session=uh)
    assert "thumb.png" in body["error"]["message"]
    healthy(uda_srv)


def test_offline_scorer_stores_thumbnails(env, uda_env, spec, tmp_path):
    """`galaxy-train score` stores a thumbnail per image in the same run; the
    server on that database serves them."""
    folder = tmp_path / "cut"
    folder.mkdir()
    names = [f"t{i}.png" for i in range(4)]
    for i, n in enumerate(names):
        (folder / n).write_bytes(galaxy_png(600 + i))
    (folder / "catalog.csv").write_text("file,label\n" + "".join(f"{n},0\n" for n in names))
    db = str(tmp_path / "off.sqlite")
    subprocess.run([tool("galaxy-train"), "score", "--model", uda_env["ckpt"], "--data", str(folder),
                    "--db", db, "--survey", "offline", "--quiet"], check=True, timeout=300)
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*) FROM anomaly_thumbs").fetchone()[0] == 4
        assert c.execute("SELECT COUNT(*) FROM anomaly_thumbs t JOIN anomaly_scores a"
                         " ON a.image_sha256 = t.image_sha256").fetchone()[0] == 4
    s = Galaxyd(str(tmp_path / "srv"), uda_env["models"], env["web"], db=db)
    try:
        rows, _ = get(s, "/v1/anomalies?survey=offline&limit=100", spec)
        assert len(rows["items"]) == 4
        size = model_size(requests, s, "uda")
        for row in rows["items"]:
            assert row["thumbnail_url"]
            body, _ = get(s, row["thumbnail_url"], spec)
            i = int(row["object_id"].rsplit(":", 1)[1])     # "<folder>:<index>", files in catalog order
            if size == 32:
                check_pixels(body, 600 + i, 32)
            else:
                assert png_decode(body)[:3] == (min(size, 64), min(size, 64), 3)
    finally:
        assert s.stop() == 0
