"""galaxyd's anomaly routes (daemon/gx_server_anomaly.c) against a real
DeepAstroUDA checkpoint from `galaxy-train uda` (conftest's uda_env), served
beside the WaveletMamba one:

  POST /v1/anomaly, POST /v1/anomaly/batch, GET /v1/anomalies (json, csv,
  votable), GET /v1/anomalies/{object_id}

Every response is checked against api/openapi.yaml. What is asserted: the
input forms agree, the score is H / ln K of the answered probabilities and
the threshold the checkpoint's rho / ln K, the domain picks another BN set,
batched answers equal single ones, storing is idempotent per (object, image,
model) and a new image is a new version, online scores equal the offline
scorer's (`galaxy-train score`) bit for bit, pages concatenate to the full
sorted list and stay stable under inserts, every filter, CSV and VOTable
(xml.etree, and astropy.io.votable when /usr/bin/python3 has it), bad
inputs answer 4xx with /healthz fine after each.
"""
import base64
import hashlib
import csv
import io
import json
import math
import os
import struct
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest
import requests

from conftest import (API_KEY, MODEL, Galaxyd, same_numbers, fits_bytes, galaxy_png, healthy, keyed_session, multipart,
                      post_checked, serve, tool)

VOT_NS = "http://www.ivoa.net/xml/VOTable/v1.3"
UDA = "uda"


def st_metadata(path):
    """The __metadata__ of a safetensors file."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))["__metadata__"]


@pytest.fixture(scope="module")
def uda_server(env, uda_env):
    yield from serve(Galaxyd(os.path.join(uda_env["dir"], "srv"), uda_env["models"], env["web"],
                             extra=["--max-batch-parts", "8", "--deadline-ms", "30000"],
                             api_key_file=env["key_file"]))


@pytest.fixture()
def uh(uda_server):
    yield from keyed_session()


def post_png(http, server, spec, png, query="", status=200):
    return post_checked(http, spec, server.url("/v1/anomaly" + query), png, status=status)


def page(http, server, spec, query):
    r = http.get(server.url("/v1/anomalies" + query), timeout=30)
    body = spec.check(r)
    assert r.status_code == 200, r.text
    return body


def all_pages(http, server, spec, query, limit):
    rows, cursor, n = [], None, 0
    while True:
        q = f"{query}&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        b = page(http, server, spec, "?" + q.lstrip("&"))
        assert len(b["items"]) <= limit
        rows += b["items"]
        cursor = b["next_cursor"]
        n += 1
        assert n < 1000
        if not cursor:
            return rows


def sorted_key(rows):
    return [(-r["score"], -r["id"]) for r in rows]


# ------------------------------------------------------------------ answers

def test_models_lists_uda(uda_server, uh, spec):
    body = spec.check(uh.get(uda_server.url("/v1/models"), timeout=10))
    kinds = {m["name"]: m["kind"] for m in body["models"]}
    assert kinds == {UDA: "uda", MODEL: "wavelet-mamba"}
    # /v1/classify keeps its default model.
    assert [m["name"] for m in body["models"] if m["default"]] == [MODEL]
    # The uda model shows its threshold on the score scale; others have none.
    by = {m["name"]: m for m in body["models"]}
    assert "anomaly_threshold" not in by[MODEL]
    thr = by[UDA]["anomaly_threshold"]
    b = post_png(uh, uda_server, spec, galaxy_png(7))
    assert abs(thr - b["threshold"]) < 1e-9


def test_answer_is_entropy_score_and_threshold(uda_server, uh, spec, uda_env):
    b = post_png(uh, uda_server, spec, galaxy_png(101))
    meta = st_metadata(uda_env["ckpt"])
    K = len(b["probs"])
    assert K == len(json.loads(meta["classes"])) == 3
    assert b["model"] == UDA and b["domain"] == "target" and b["stored"] is False
    assert "anomaly_id" not in b and "object_id" not in b
    p = b["probs"]
    assert abs(sum(p) - 1) < 1e-5
    H = -sum(x * math.log(x + 1e-5) for x in p)
    assert abs(b["entropy"] - H) < 1e-5
    assert abs(b["score"] - H / math.log(K)) < 1e-6 and 0 <= b["score"] <= 1
    assert abs(b["threshold"] - float(meta["anomaly_threshold"]) / math.log(K)) < 1e-9
    assert b["is_anomaly"] == (b["score"] > b["threshold"])
    assert b["class_index"] == max(range(K), key=lambda k: p[k])
    assert b["class_name"] == json.loads(meta["classes"])[b["class_index"]]
    assert b["probabilities"] == dict(zip(json.loads(meta["classes"]), p))
    healthy(uda_server)


def test_input_forms_agree_and_domain_matters(uda_server, uh, spec):
    png = galaxy_png(102)
    raw = post_png(uh, uda_server, spec, png)
    body, ct = multipart([("file", png, "g.png", "image/png")])
    r = uh.post(uda_server.url("/v1/anomaly"), data=body, headers={"Content-Type": ct}, timeout=60)
    mp = spec.check(r)
    r = uh.post(uda_server.url("/v1/anomaly"), json={"image": base64.b64encode(png).decode(), "domain": "target"},
                timeout=60)
    js = spec.check(r)
    assert r.status_code == 200
    for b in (mp, js):
        assert (b["probs"], b["score"], b["class_index"], b["domain"]) == \
            (raw["probs"], raw["score"], raw["class_index"], "target")
    # The source BN set is another model of the same weights.
    src_q = post_png(uh, uda_server, spec, png, "?domain=source")
    body, ct = multipart([("domain", "source", None, None), ("file", png, "g.png", "image/png")])
    src_f = spec.check(uh.post(uda_server.url("/v1/anomaly"), data=body, headers={"Content-Type": ct}, timeout=60))
    src_j = spec.check(uh.post(uda_server.url("/v1/anomaly"),
                               json={"image": base64.b64encode(png).decode(), "domain": "source"}, timeout=60))
    for b in (src_q, src_f, src_j):
        assert b["domain"] == "source" and b["probs"] == src_q["probs"] and b["score"] == src_q["score"]
    assert src_q["probs"] != raw["probs"]
    # FITS works as for classify.
    fb = spec.check(uh.post(uda_server.url("/v1/anomaly"), data=fits_bytes(3, 32, 32),
                            headers={"Content-Type": "application/fits"}, timeout=60))
    assert fb["image"]["format"] == "fits" and 0 <= fb["score"] <= 1
    healthy(uda_server)


def test_batch_equals_single_and_bad_part(uda_server, uh, spec):
    pngs = [galaxy_png(110 + i) for i in range(4)]
    singles = [post_png(uh, uda_server, spec, p, "?domain=source" if i == 2 else "") for i, p in enumerate(pngs)]
    parts = []
    for i, p in enumerate(pngs):
        if i == 2:
            parts.append(("domain", "source", None, None))
        parts.append(("file", p, f"g{i}.png", "image/png"))
        if i == 1:
            parts.append(("file", b"not an image at all", "bad.png", "image/png"))
    body, ct = multipart(parts)
    r = uh.post(uda_server.url("/v1/anomaly/batch"), data=body, headers={"Content-Type": ct}, timeout=60)
    b = spec.check(r)
    assert r.status_code == 200 and b["model"] == UDA
    res = b["results"]
    assert [x["index"] for x in res] == list(range(5))
    assert res[2]["status"] == 422 and res[2]["error"]["code"] == "undecodable_image"
    good = [res[0], res[1], res[3], res[4]]
    for s, g in zip(singles, good):
        assert g["status"] == 200
        assert (g["probs"], g["score"], g["domain"]) == (s["probs"], s["score"], s["domain"])
    # A domain field binds to the next file only; the parts shared a forward
    # pass, so the kind's split of a mixed-domain batch was exercised.
    assert [g["domain"] for g in good] == ["target", "target", "source", "target"]
    assert max(g["timing"]["batch_size"] for g in good) >= 2
    healthy(uda_server)


# ------------------------------------------------------------------ storing

def test_idempotent_resend_and_versions(uda_server, uh, spec):
    q = "?object_id=idem-1&survey=decals&ra=150.5&dec=2.25"
    png1, png2 = galaxy_png(120), galaxy_png(121)
    a = post_png(uh, uda_server, spec, png1, q)
    assert a["stored"] is True and a["object_id"] == "idem-1" and a["anomaly_id"] >= 1
    b = post_png(uh, uda_server, spec, png1, q)
    strip = lambda d: {k: v for k, v in d.items() if k not in ("request_id", "timing")}
    assert strip(a) == strip(b)   # same id, created_at, score
    hist = spec.check(uh.get(uda_server.url("/v1/anomalies/idem-1"), timeout=10))
    assert [s["id"] for s in hist["scores"]] == [a["anomaly_id"]]
    # A new image of the same object is a new version.
    c = post_png(uh, uda_server, spec, png2, q)
    assert c["anomaly_id"] != a["anomaly_id"] and c["image"]["sha256"] != a["image"]["sha256"]
    hist = spec.check(uh.get(uda_server.url("/v1/anomalies/idem-1"), timeout=10))
    assert hist["object_id"] == "idem-1"
    assert [s["id"] for s in hist["scores"]] == [c["anomaly_id"], a["anomaly_id"]]   # newest first
    s0 = hist["scores"][1]
    assert (s0["score"], s0["image_sha256"], s0["survey"], s0["ra"], s0["dec"], s0["class_index"]) == \
        (a["score"], a["image"]["sha256"], "decals", 150.5, 2.25, a["class_index"])
    assert s0["is_anomaly"] == a["is_anomaly"] and s0["threshold"] == a["threshold"]
    # The list holds each version once.
    rows = all_pages(uh, uda_server, spec, "survey=decals", 1000)
    assert sorted(r["id"] for r in rows if r["object_id"] == "idem-1") == sorted([a["anomaly_id"], c["anomaly_id"]])
    # Batch storing goes through the same rule.
    body, ct = multipart([("object_id", "idem-1", None, None), ("survey", "decals", None, None),
                          ("ra", "150.5", None, None), ("dec", "2.25", None, None), ("file", png1, "a.png", None)])
    r = uh.post(uda_server.url("/v1/anomaly/batch"), data=body, headers={"Content-Type": ct}, timeout=60)
    (item,) = spec.check(r)["results"]
    assert item["anomaly_id"] == a["anomaly_id"] and item["created_at"] == a["created_at"]
    healthy(uda_server)


def test_online_score_equals_offline_scorer(env, uda_env, spec, tmp_path):
    """`galaxy-train score` on a folder of PNGs, then galaxyd on the same
    database: re-sending a file under the offline object id finds the
    offline row (same id) and answers the very same score."""
    folder = tmp_path / "cut"
    folder.mkdir()
    names = [f"c{i}.png" for i in range(5)]
    for i, n in enumerate(names):
        (folder / n).write_bytes(galaxy_png(300 + i))
    (folder / "catalog.csv").write_text("file,label\n" + "".join(f"{n},0\n" for n in names))
    db = str(tmp_path / "off.sqlite")
    subprocess.run([tool("galaxy-train"), "score", "--model", uda_env["ckpt"], "--data", str(folder),
                    "--db", db, "--survey", "offline", "--quiet"], check=True, timeout=300)
    s = Galaxyd(str(tmp_path / "srv"), uda_env["models"], env["web"], db=db)
    try:
        rows = spec.check(requests.get(s.url("/v1/anomalies?survey=offline&limit=100"), timeout=10))["items"]
        assert len(rows) == 5
        by_sha = {hashlib.sha256((folder / n).read_bytes()).hexdigest(): n for n in names}
        for row in rows:
            png = (folder / by_sha[row["image_sha256"]]).read_bytes()
            r = requests.post(s.url(f"/v1/anomaly?object_id={row['object_id']}&survey=offline"), data=png,
                              headers={"Content-Type": "image/png"}, timeout=60)
            b = spec.check(r)
            assert r.status_code == 200, r.text
            assert b["anomaly_id"] == row["id"] and b["created_at"] == row["created_at"]
            assert same_numbers(b["score"], row["score"]) and b["class_index"] == row["class_index"]
            assert b["is_anomaly"] == row["is_anomaly"] and b["threshold"] == row["threshold"]
        assert len(spec.check(requests.get(s.url("/v1/anomalies?limit=100"), timeout=10))["items"]) == 5
    finally:
        assert s.stop() == 0


# ------------------------------------------------------------------ listing

def fill(http, server, spec, prefix, n, seed0, survey, coords=True):
    out = []
    for i in range(n):
        q = f"?object_id={prefix}{i}&survey={survey}" + (f"&ra={10 + i}.25&dec={-5 + i}.5" if coords else "")
        out.append(post_png(http, server, spec, galaxy_png(seed0 + i), q))
    return out


def test_pagination_concatenates_and_is_stable(uda_server, uh, spec):
    fill(uh, uda_server, spec, "pg-", 14, 400, "pagesurvey")
    full = all_pages(uh, uda_server, spec, "survey=pagesurvey", 1000)
    assert len(full) == 14 and sorted_key(full) == sorted(sorted_key(full))
    assert len({r["id"] for r in full}) == 14
    for limit in (1, 3, 5, 14):
        assert all_pages(uh, uda_server, spec, "survey=pagesurvey", limit) == full
    # Rows added between pages: the pages already read never shift and the
    # rest continue after the cursor with no duplicate.
    first = page(uh, uda_server, spec, "?survey=pagesurvey&limit=4")
    added = fill(uh, uda_server, spec, "pg-late-", 4, 450, "pagesurvey")
    rest, cursor = [], first["next_cursor"]
    while cursor:
        b = page(uh, uda_server, spec, f"?survey=pagesurvey&limit=4&cursor={cursor}")
        rest += b["items"]
        cursor = b["next_cursor"]
    seen = first["items"] + rest
    ids = [r["id"] for r in seen]
    assert len(ids) == len(set(ids))
    assert {r["id"] for r in full} <= set(ids)
    last = first["items"][-1]
    for a in added:   # a late row shows up exactly when it sorts after the cursor
        after = (-a["score"], -a["anomaly_id"]) > (-last["score"], -last["id"])
        assert (a["anomaly_id"] in ids) == after
    assert sorted_key(rest) == sorted(sorted_key(rest))
    healthy(uda_server)


def test_filters(uda_server, uh, spec):
    fill(uh, uda_server, spec, "fa-", 5, 500, "filt-a")
    time.sleep(0.01)
    mid = fill(uh, uda_server, spec, "fb-", 5, 510, "filt-b")
    everything = all_pages(uh, uda_server, spec, "", 1000)
    a = [r for r in everything if r["survey"] == "filt-a"]
    b = [r for r in everything if r["survey"] == "filt-b"]
    assert len(a) == len(b) == 5
    assert all_pages(uh, uda_server, spec, "survey=filt-a", 2) == a
    # A bound between two stored scores (the JSON shows 9 digits of them).
    scores = sorted(set(r["score"] for r in everything))
    m = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2
    got = all_pages(uh, uda_server, spec, f"min_score={m!r}", 1000)
    assert got == [r for r in everything if r["score"] >= m] and 0 < len(got) < len(everything)
    assert all_pages(uh, uda_server, spec, "min_score=0", 1000) == everything
    t = mid[0]["created_at"]
    since = all_pages(uh, uda_server, spec, f"since={t}", 1000)
    assert since == [r for r in everything if r["created_at"] >= t] and len(since) < len(everything)
    until = all_pages(uh, uda_server, spec, f"until={t}", 1000)
    assert until == [r for r in everything if r["created_at"] < t] and until
    both = all_pages(uh, uda_server, spec, f"survey=filt-b&since={t}&until=2999-01-01T00:00:00Z&min_score=0", 2)
    assert both == [r for r in b if r["created_at"] >= t]
    # A date-only bound and a zone offset are ISO-8601 too.
    assert all_pages(uh, uda_server, spec, "since=2000-01-01", 1000) == everything
    assert all_pages(uh, uda_server, spec, "until=2000-01-01T00:00:00%2B01:00", 1000) == []
    healthy(uda_server)


def test_csv(uda_server, uh, spec):
    fill(uh, uda_server, spec, "csv-", 3, 600, "csvsurvey", coords=False)
    js = page(uh, uda_server, spec, "?survey=csvsurvey&limit=2")
    r = uh.get(uda_server.url("/v1/anomalies?survey=csvsurvey&limit=2&format=csv"), timeout=10)
    text = spec.check(r)
    assert r.headers["Content-Type"].startswith("text/csv") and r.headers["X-Next-Cursor"] == js["next_cursor"]
    assert text.endswith("\r\n")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["id", "object_id", "survey", "ra", "dec", "score", "threshold", "is_anomaly", "class_index",
                       "class_name", "image_sha256", "model_version", "created_at"]
    assert len(rows) == 3
    for row, item in zip(rows[1:], js["items"]):
        assert int(row[0]) == item["id"] and row[1] == item["object_id"] and row[2] == "csvsurvey"
        assert row[3] == row[4] == ""   # no ra/dec given: null
        assert abs(float(row[5]) - item["score"]) < 1e-8 and row[7] == str(int(item["is_anomaly"]))
        assert int(row[8]) == item["class_index"] and row[9] == item["class_name"]
        assert row[10:] == [item["image_sha256"], item["model_version"], item["created_at"]]
    r = uh.get(uda_server.url(f"/v1/anomalies?survey=csvsurvey&limit=2&format=csv&cursor={js['next_cursor']}"),
               timeout=10)
    spec.check(r)
    assert "X-Next-Cursor" not in r.headers and len(list(csv.reader(io.StringIO(r.text)))) == 2


def vot_parse(text):
    root = ET.fromstring(text if isinstance(text, bytes) else text.encode())
    assert root.tag == f"{{{VOT_NS}}}VOTABLE" and root.get("version") == "1.4"
    fields = root.findall(f".//{{{VOT_NS}}}FIELD")
    trs = root.findall(f".//{{{VOT_NS}}}TABLEDATA/{{{VOT_NS}}}TR")
    for tr in trs:
        assert len(tr.findall(f"{{{VOT_NS}}}TD")) == len(fields)
    return root, fields, trs


def test_votable(uda_server, uh, spec, tmp_path):
    fill(uh, uda_server, spec, "vot-", 3, 700, "votsurvey")
    post_png(uh, uda_server, spec, galaxy_png(710), "?object_id=vot-nocoord&survey=votsurvey")
    js = all_pages(uh, uda_server, spec, "survey=votsurvey", 1000)
    r = uh.get(uda_server.url("/v1/anomalies?survey=votsurvey&format=votable&limit=1000"), timeout=10)
    text = spec.check(r)
    assert r.headers["Content-Type"].startswith("application/x-votable+xml")
    root, fields, trs = vot_parse(text)
    names = [f.get("name") for f in fields]
    assert names[:6] == ["id", "object_id", "survey", "ra", "dec", "score"]
    ra, dec = fields[3], fields[4]
    assert (ra.get("datatype"), ra.get("unit"), ra.get("ucd")) == ("double", "deg", "pos.eq.ra;meta.main")
    assert (dec.get("datatype"), dec.get("unit"), dec.get("ucd")) == ("double", "deg", "pos.eq.dec;meta.main")
    assert len(trs) == len(js) == 4
    col = {n: i for i, n in enumerate(names)}
    for tr, item in zip(trs, js):
        td = [t.text or "" for t in tr.findall(f"{{{VOT_NS}}}TD")]
        assert int(td[col["id"]]) == item["id"] and td[col["object_id"]] == item["object_id"]
        assert float(td[col["score"]]) == pytest.approx(item["score"], abs=1e-8)
        assert td[col["is_anomaly"]] == ("T" if item["is_anomaly"] else "F")
        if item["ra"] is None:
            assert td[col["ra"]] == "" and td[col["dec"]] == ""   # NaN/null is an empty cell
        else:
            assert float(td[col["ra"]]) == item["ra"]
    # A page with a next cursor says so in an INFO and the header.
    r = uh.get(uda_server.url("/v1/anomalies?survey=votsurvey&format=votable&limit=1"), timeout=10)
    root, _, trs = vot_parse(spec.check(r))
    info = [i for i in root.iter(f"{{{VOT_NS}}}INFO") if i.get("name") == "next_cursor"]
    assert len(trs) == 1 and info and info[0].get("value") == r.headers["X-Next-Cursor"]
    status = [i for i in root.iter(f"{{{VOT_NS}}}INFO") if i.get("name") == "QUERY_STATUS"]
    assert status and status[0].get("value") == "OK"
    # astropy's strict parser, when this Python has astropy.
    try:
        from astropy.io.votable import parse
    except ImportError:
        pytest.skip("astropy is not importable by this Python: the XML checks above ran, astropy's did not")
    p = tmp_path / "a.xml"
    p.write_bytes(text)
    t = parse(str(p), verify="exception").get_first_table().to_table()
    assert len(t) == 4 and list(t["object_id"]) == [i["object_id"] for i in js]
    assert str(t["ra"].unit) == "deg"
    nocoord = [i for i, item in enumerate(js) if item["ra"] is None]
    assert nocoord and all(t["ra"].mask[i] for i in nocoord)


def test_empty_votable_and_no_rows(uda_server, uh, spec):
    r = uh.get(uda_server.url("/v1/anomalies?survey=nothing-here&format=votable"), timeout=10)
    _, fields, trs = vot_parse(spec.check(r))
    assert len(fields) == 13 and trs == []
    assert page(uh, uda_server, spec, "?survey=nothing-here") == {"items": [], "next_cursor": None}


# ------------------------------------------------------------------ bad inputs

BAD_LIST = [
    "min_score=abc", "min_score=1.5", "min_score=-0.1", "min_score=nan", "min_score=",
    "limit=0", "limit=1001", "limit=abc", "limit=1.5",
    "cursor=garbage!", "cursor=", "cursor=" + base64.urlsafe_b64encode(b"x|y").decode().rstrip("="),
    "cursor=" + base64.urlsafe_b64encode(b"0.5|0").decode().rstrip("="),
    "since=now", "since=12345", "since=2024-13-01", "since=2024-01-01T25:00", "until=yesterday",
    "until=2024-01-01T00:00:00+0100", "since=2024-01-01X", "format=xml", "survey=bad%20survey",
]


@pytest.mark.parametrize("query", BAD_LIST)
def test_bad_list_queries(uda_server, uh, spec, query):
    r = uh.get(uda_server.url("/v1/anomalies?" + query), timeout=10)
    body = spec.check(r)
    assert r.status_code == 400 and body["error"]["code"] == "bad_field", (query, r.text)
    name = query.split("=", 1)[0]
    assert name in body["error"]["message"], (query, body)
    healthy(uda_server)


def test_bad_posts(uda_server, uh, spec):
    png = galaxy_png(800)
    cases = [
        ("?domain=both", {"Content-Type": "image/png"}, png, 400, "domain"),
        ("?domain=", {"Content-Type": "image/png"}, png, 400, "domain"),
        ("?ra=400", {"Content-Type": "image/png"}, png, 400, "ra"),
        ("?object_id=bad%20id", {"Content-Type": "image/png"}, png, 400, "object_id"),
        ("?model=wavelet-mamba", {"Content-Type": "image/png"}, png, 400, "model"),
        ("?model=nope", {"Content-Type": "image/png"}, png, 404, "nope"),
        ("", {"Content-Type": "text/plain"}, png, 415, "accepted"),
        ("", {"Content-Type": "image/png"}, b"", 400, "empty"),
        ("", {"Content-Type": "image/png"}, b"\x89PNG\r\n\x1a\nbroken", 422, ""),
        ("", {"Content-Type": "application/json"}, json.dumps({"image": "!!"}).encode(), 400, "image"),
        ("", {"Content-Type": "application/json"},
         json.dumps({"image": base64.b64encode(png).decode(), "domain": 1}).encode(), 400, "domain"),
        ("", {"Content-Type": "application/json"},
         json.dumps({"image": base64.b64encode(png).decode(), "domain": "sauce"}).encode(), 400, "domain"),
        ("", {"Content-Type": "application/json"},
         json.dumps({"image": base64.b64encode(png).decode(), "colour": "red"}).encode(), 400, "colour"),
    ]
    for q, h, data, status, word in cases:
        r = uh.post(uda_server.url("/v1/anomaly" + q), data=data, headers=h, timeout=30)
        body = spec.check(r)
        assert r.status_code == status and word in body["error"]["message"], (q, h, r.text)
        healthy(uda_server)
    body, ct = multipart([("domain", "neither", None, None), ("file", png, "a.png", None),
                          ("file", png, "b.png", None)])
    r = uh.post(uda_server.url("/v1/anomaly/batch"), data=body, headers={"Content-Type": ct}, timeout=30)
    res = spec.check(r)["results"]
    assert res[0]["status"] == 400 and "domain" in res[0]["error"]["message"] and res[1]["status"] == 200
    r = uh.post(uda_server.url("/v1/anomaly/batch"), data=png, headers={"Content-Type": "image/png"}, timeout=30)
    assert spec.check(r) and r.status_code == 415
    body, ct = multipart([("file", png, f"{i}.png", None) for i in range(9)])
    r = uh.post(uda_server.url("/v1/anomaly/batch"), data=body, headers={"Content-Type": ct}, timeout=30)
    assert spec.check(r) and r.status_code == 413
    healthy(uda_server)


def test_unknown_and_bad_object(uda_server, uh, spec):
    r = uh.get(uda_server.url("/v1/anomalies/never-seen-object"), timeout=10)
    assert spec.check(r)["error"]["code"] == "not_found" and r.status_code == 404
    r = uh.get(uda_server.url("/v1/anomalies/bad%20object"), timeout=10)
    assert spec.check(r) and r.status_code == 400
    r = uh.get(uda_server.url("/v1/anomaly"), timeout=10)
    assert spec.check(r) and r.status_code == 405 and "POST" in r.headers["Allow"]
    r = uh.delete(uda_server.url("/v1/anomalies"), timeout=10)
    assert spec.check(r) and r.status_code == 405
    healthy(uda_server)


def test_auth(uda_server, spec):
    r = requests.post(uda_server.url("/v1/anomaly"), data=galaxy_png(1), headers={"Content-Type": "image/png"},
                      timeout=10)
    assert spec.check(r) and r.status_code == 401
    r = requests.post(uda_server.url("/v1/anomaly"), data=galaxy_png(1),
                      headers={"Content-Type": "image/png", "X-API-Key": API_KEY}, timeout=30)
    assert spec.check(r) and r.status_code == 200


def test_no_uda_model_is_404(server, http, spec):
    """The shared server serves WaveletMamba only."""
    r = http.post(server.url("/v1/anomaly"), data=galaxy_png(1), headers={"Content-Type": "image/png"}, timeout=30)
    body = spec.check(r)
    assert r.status_code == 404 and "uda" in body["error"]["message"]
    assert page(http, server, spec, "?limit=5") == {"items": [], "next_cursor": None}
    healthy(server)


def test_corrupt_uda_checkpoint_refused(env, uda_env, tmp_path):
    """A damaged uda checkpoint stops galaxyd at start, naming the file."""
    models = tmp_path / "models"
    models.mkdir()
    blob = open(uda_env["ckpt"], "rb").read()
    (models / "uda.safetensors").write_bytes(blob[:len(blob) // 2])
    r = subprocess.run([tool("galaxyd"), "--port", "0", "--models", str(models), "--db", str(tmp_path / "d.sqlite"),
                        "--web", env["web"]], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "uda.safetensors" in r.stderr and "listening" not in r.stdout
