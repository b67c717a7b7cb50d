"""Every route of api/openapi.yaml, every content type, against a real galaxyd.

Each response goes through OpenAPI.check (status documented, body valid
against its schema). The last test asserts that every operation of the
document was answered 2xx at least once in this session.
"""
import base64
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import uuid

import pytest
import requests

from conftest import (API_KEY, DEVICE, MODEL, ROOT, Galaxyd, same_numbers, auth, fits_bytes, galaxy_pixels, galaxy_png,
                      metric, multipart, pixels_to_chw, png_bytes, raw_http, tool, wait_for)

FIX = os.path.join(ROOT, "tests", "fixtures", "io")
S = 32   # the tiny config's input size (checked against /v1/models below)


def classify(http, server, spec, data, ctype, params=None, status=200, headers=None):
    h = {"Content-Type": ctype} if ctype else {}
    h.update(headers or {})
    r = http.post(server.url("/v1/classify"), data=data, headers=h, params=params, timeout=60)
    body = spec.check(r)
    assert r.status_code == status, f"{r.status_code}: {r.text[:500]}"
    return body


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def assert_same_answer(a, b):
    assert same_numbers(a["probs"], b["probs"]), (a["probs"], b["probs"])
    assert same_numbers(a["redshift"], b["redshift"])
    assert a["class_index"] == b["class_index"] and a["class_name"] == b["class_name"]
    assert a["model_version"] == b["model_version"]


# ------------------------------------------------------------------ health, models

def test_health_and_readiness(server, spec, http):
    for path, want in (("/healthz", {"status": "ok"}), ("/v2/health/live", {"live": True}),
                       ("/v2/health/ready", {"ready": True})):
        r = requests.get(server.url(path), timeout=10)   # no key: health is public
        assert r.status_code == 200
        assert spec.check(r) == want
    r = requests.get(server.url("/readyz"), timeout=10)
    body = spec.check(r)
    assert r.status_code == 200 and body == {"status": "ready", "models": 1}
    r = http.get(server.url("/v2"), timeout=10)
    body = spec.check(r)
    assert r.status_code == 200 and body["name"] == "galaxyd"


def test_head_and_options(server, spec):
    r = requests.head(server.url("/healthz"), timeout=10)
    spec.check(r)
    assert r.status_code == 200 and r.content == b""
    r = requests.options(server.url("/v1/classify"), timeout=10)
    spec.check(r)
    assert r.status_code == 204 and "POST" in r.headers["Allow"]


def test_request_id_echoed_or_generated(server, spec):
    r = requests.get(server.url("/healthz"), headers={"X-Request-Id": "client-id.42_x"}, timeout=10)
    spec.check(r)
    assert r.headers["X-Request-Id"] == "client-id.42_x"
    r = requests.get(server.url("/healthz"), headers={"X-Request-Id": "bad id with spaces"}, timeout=10)
    spec.check(r)
    assert re.fullmatch(r"[0-9a-f]{16}", r.headers["X-Request-Id"]), r.headers["X-Request-Id"]
    r2 = requests.get(server.url("/healthz"), timeout=10)
    assert r2.headers["X-Request-Id"] != r.headers["X-Request-Id"]


def test_models(server, spec, http, env):
    r = http.get(server.url("/v1/models"), timeout=10)
    body = spec.check(r)
    assert r.status_code == 200
    (m,) = body["models"]
    assert m["name"] == MODEL and m["kind"] == "wavelet-mamba" and m["default"] is True
    assert m["version"] == sha256_file(os.path.join(env["models"], MODEL + ".safetensors"))
    assert m["input_size"] == S and m["n_classes"] == 10 and len(m["classes"]) == 10
    assert m["n_params"] > 1000 and m["device"] == DEVICE
    assert m["config"]["size"] == S


def test_metrics_text(server, spec, http):
    classify(http, server, spec, galaxy_png(1), "image/png")
    r = requests.get(server.url("/metrics"), timeout=10)
    text = spec.check(r)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    assert metric(text, "galaxyd_requests_total", {"route": "/v1/classify", "status": "200"}) >= 1
    assert metric(text, "galaxyd_images_processed_total", {"model": MODEL}) >= 1
    assert metric(text, "galaxyd_batches_total", {"model": MODEL}) >= 1
    assert metric(text, "galaxyd_models_loaded") == 1
    for fam in ("galaxyd_request_duration_seconds", "galaxyd_batch_size", "galaxyd_forward_seconds_total",
                "galaxyd_queue_depth", "galaxyd_errors_total", "galaxyd_cuda_graph_captures_total",
                "galaxyd_cuda_graph_replays_total"):
        assert f"# TYPE {fam} " in text, f"{fam} missing from /metrics"
    # On the device (--cuda-graphs defaults on) the classify above replayed a
    # captured graph; on the CPU there are none.
    caps = metric(text, "galaxyd_cuda_graph_captures_total", {"model": MODEL})
    reps = metric(text, "galaxyd_cuda_graph_replays_total", {"model": MODEL})
    if DEVICE.startswith("cuda"):
        assert caps >= 1 and reps >= 1, (caps, reps)
    else:
        assert caps == 0 and reps == 0, (caps, reps)


# ------------------------------------------------------------------ classify, every form

def test_classify_png_answer(server, spec, http):
    png = galaxy_png(7)
    a = classify(http, server, spec, png, "image/png")
    assert a["model"] == MODEL and a["stored"] is False
    probs = a["probs"]
    assert len(probs) == 10 and abs(sum(probs) - 1) < 1e-5
    assert a["class_index"] == max(range(10), key=lambda k: probs[k])
    assert a["probabilities"][a["class_name"]] == probs[a["class_index"]]
    assert a["image"] == {"format": "png", "width": 32, "height": 32, "bands": 3,
                          "sha256": hashlib.sha256(png).hexdigest()}
    assert a["timing"]["batch_size"] >= 1 and a["timing"]["total_ms"] >= a["timing"]["forward_ms"]
    b = classify(http, server, spec, png, "image/png")
    assert_same_answer(a, b)   # same image twice: the same numbers, bit for bit


def test_classify_every_form_agrees(server, spec, http):
    png = galaxy_png(11)
    ref = classify(http, server, spec, png, "image/png")
    same = [classify(http, server, spec, png, "application/octet-stream")]
    body, ct = multipart([("file", png, "cutout.png", "image/png")])
    same.append(classify(http, server, spec, body, ct))
    body, ct = multipart([("file", png, "cutout.bin", None)])   # part without its own type: sniffed
    same.append(classify(http, server, spec, body, ct))
    b64 = base64.b64encode(png).decode()
    same.append(classify(http, server, spec, json.dumps({"image": b64}), "application/json"))
    same.append(classify(http, server, spec, json.dumps({"image": "data:image/png;base64," + b64}),
                         "application/json; charset=utf-8"))
    for s in same:
        assert_same_answer(ref, s)
    other = classify(http, server, spec, galaxy_png(12), "image/png")
    assert other["image"]["sha256"] != ref["image"]["sha256"]
    assert other["probs"] != ref["probs"], "two different images got identical probabilities"


@pytest.mark.parametrize("name", ["baseline_rgb.jpg", "progressive_rgb.jpg", "baseline_gray.jpg"])
def test_classify_jpeg(server, spec, http, name):
    with open(os.path.join(FIX, name), "rb") as f:
        jpg = f.read()
    a = classify(http, server, spec, jpg, "image/jpeg")
    assert a["image"]["format"] == "jpeg" and abs(sum(a["probs"]) - 1) < 1e-5
    body, ct = multipart([("file", jpg, name, "image/jpeg")])
    assert_same_answer(a, classify(http, server, spec, body, ct))


def test_classify_fits(server, spec, http, env):
    with open(env["fits"][0], "rb") as f:
        fits = f.read()
    a = classify(http, server, spec, fits, "application/fits")
    assert a["image"]["format"] == "fits" and a["image"]["bands"] == 3
    assert a["image"]["width"] == 32 and a["image"]["height"] == 32
    assert_same_answer(a, classify(http, server, spec, fits, "image/fits"))
    body, ct = multipart([("file", fits, "c.fits", "application/fits")])
    assert_same_answer(a, classify(http, server, spec, body, ct))
    one = classify(http, server, spec, fits_bytes(1, 40, 24), "application/fits")   # our own writer
    assert one["image"]["format"] == "fits" and one["image"]["width"] == 40 and one["image"]["height"] == 24
    for path in (os.path.join(FIX, "f32_cube_nan.fits"), os.path.join(FIX, "i16_scaled_cube.fits")):
        with open(path, "rb") as f:
            classify(http, server, spec, f.read(), "application/fits")


def test_classify_other_png_kinds(server, spec, http):
    """Gray, gray+alpha, palette, 16-bit and interlaced PNGs all decode."""
    for name in ("gray8.png", "gray16.png", "gray_alpha8.png", "palette_trns.png", "interlaced_rgb8.png",
                 "rgb16.png"):
        with open(os.path.join(FIX, name), "rb") as f:
            a = classify(http, server, spec, f.read(), "image/png")
        assert a["image"]["format"] == "png" and abs(sum(a["probs"]) - 1) < 1e-5, name
    big = png_bytes(100, 60, galaxy_pixels(3, 100)[:100 * 60 * 3])   # not square, not S: crop + resize
    a = classify(http, server, spec, big, "image/png")
    assert (a["image"]["width"], a["image"]["height"]) == (100, 60)


def test_fields_from_query_form_and_json(server, spec, http):
    png = galaxy_png(21)
    q = classify(http, server, spec, png, "image/png", params={"ra": "150.25", "dec": "-2.5", "survey": "sdss"})
    assert q["ra"] == 150.25 and q["dec"] == -2.5 and q["survey"] == "sdss" and q["stored"] is False
    body, ct = multipart([("ra", "150.25", None, None), ("dec", "-2.5", None, None),
                          ("survey", "sdss", None, None), ("file", png, "a.png", "image/png")])
    f = classify(http, server, spec, body, ct)
    j = classify(http, server, spec, json.dumps({"image": base64.b64encode(png).decode(), "ra": 150.25,
                                                 "dec": -2.5, "survey": "sdss"}), "application/json")
    for other in (f, j):
        assert_same_answer(q, other)
        assert (other["ra"], other["dec"], other["survey"]) == (150.25, -2.5, "sdss")
    # body fields win over the query string
    w = classify(http, server, spec, body, ct, params={"ra": "10", "survey": "decals"})
    assert w["ra"] == 150.25 and w["survey"] == "sdss"


def test_model_selection(server, spec, http):
    png = galaxy_png(5)
    a = classify(http, server, spec, png, "image/png")
    assert_same_answer(a, classify(http, server, spec, png, "image/png", params={"model": MODEL}))
    r = http.post(server.url("/v1/classify"), params={"model": "no-such-model"}, data=png,
                  headers={"Content-Type": "image/png"}, timeout=30)
    body = spec.check(r)
    assert r.status_code == 404 and body["error"]["code"] == "not_found"


# ------------------------------------------------------------------ stored objects, predictions

def test_object_round_trip(server, spec, http):
    oid = "obj-" + uuid.uuid4().hex[:12]
    png = galaxy_png(31)
    a = classify(http, server, spec, png, "image/png",
                 params={"object_id": oid, "survey": "decals", "ra": "12.5", "dec": "45"})
    assert a["stored"] is True and a["object_id"] == oid
    assert isinstance(a["prediction_id"], int) and a["created_at"]
    r = http.get(server.url(f"/v1/objects/{oid}"), timeout=10)
    rec = spec.check(r)
    assert r.status_code == 200
    assert rec["object_id"] == oid and rec["survey"] == "decals" and rec["ra"] == 12.5 and rec["dec"] == 45
    (p,) = rec["predictions"]
    assert p["id"] == a["prediction_id"] and p["probs"] == a["probs"]
    assert p["class_index"] == a["class_index"] and p["class_name"] == a["class_name"]
    assert p["redshift"] == a["redshift"] and p["model_version"] == a["model_version"]
    assert p["created_at"] == a["created_at"]
    # a second prediction of the same object comes first (newest first)
    body = json.dumps({"image": base64.b64encode(galaxy_png(32)).decode(), "object_id": oid})
    b = classify(http, server, spec, body, "application/json")
    assert b["stored"] is True and b["prediction_id"] > a["prediction_id"]
    rec = spec.check(http.get(server.url(f"/v1/objects/{oid}"), timeout=10))
    assert [p["id"] for p in rec["predictions"]] == [b["prediction_id"], a["prediction_id"]]
    r = http.get(server.url("/v1/objects/never-stored-" + uuid.uuid4().hex[:8]), timeout=10)
    body = spec.check(r)
    assert r.status_code == 404 and body["error"]["code"] == "not_found"


def _store(http, server, spec, survey, seeds):
    ids = []
    for s in seeds:
        a = classify(http, server, spec, galaxy_png(100 + s), "image/png",
                     params={"object_id": f"{survey}-{s}", "survey": survey})
        ids.append(a["prediction_id"])
    return ids


def _pages(http, server, spec, params):
    got, cursor, pages = [], None, 0
    while True:
        p = dict(params, **({"cursor": cursor} if cursor else {}))
        r = http.get(server.url("/v1/predictions"), params=p, timeout=10)
        page = spec.check(r)
        assert r.status_code == 200
        got += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            return got, pages
        assert pages < 100


def test_predictions_paging(server, spec, http):
    survey = "pg" + uuid.uuid4().hex[:10]
    ids = _store(http, server, spec, survey, range(5))
    items, pages = _pages(http, server, spec, {"survey": survey, "limit": 2})
    assert [i["id"] for i in items] == ids and pages == 3
    assert all(i["survey"] == survey for i in items)
    # the cursor is stable while rows are added: a row stored between pages
    # shows up once, at the end; nothing is repeated or skipped
    r = http.get(server.url("/v1/predictions"), params={"survey": survey, "limit": 2}, timeout=10)
    first = spec.check(r)
    more = _store(http, server, spec, survey, [5])
    rest, _ = _pages(http, server, spec, {"survey": survey, "limit": 2, "cursor": first["next_cursor"]})
    assert [i["id"] for i in first["items"] + rest] == ids + more
    # class filter: by index and by name
    k = items[0]["class_index"]
    by_idx, _ = _pages(http, server, spec, {"survey": survey, "class": str(k)})
    assert by_idx and all(i["class_index"] == k for i in by_idx)
    assert {i["id"] for i in by_idx} == {i["id"] for i in items + rest if i["class_index"] == k}
    by_name, _ = _pages(http, server, spec, {"survey": survey, "class": items[0]["class_name"]})
    assert [i["id"] for i in by_name] == [i["id"] for i in by_idx]
    # since: everything is after 2000, nothing after 2100
    assert len(_pages(http, server, spec, {"survey": survey, "since": "2000-01-01T00:00:00Z"})[0]) == 6
    assert _pages(http, server, spec, {"survey": survey, "since": "2100-01-01T00:00:00Z"})[0] == []


def test_predictions_csv(server, spec, http):
    survey = "csv" + uuid.uuid4().hex[:10]
    ids = _store(http, server, spec, survey, range(3))
    rows, cursor, pages = [], None, 0
    while True:
        params = {"survey": survey, "limit": 2, "format": "csv", **({"cursor": cursor} if cursor else {})}
        r = http.get(server.url("/v1/predictions"), params=params, timeout=10)
        text = spec.check(r)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
        lines = text.strip("\r\n").splitlines()
        header = lines[0].split(",")
        assert "id" in header and "object_id" in header
        assert [h for h in header if re.fullmatch(r"p\d+", h)] == [f"p{k}" for k in range(10)]
        for line in lines[1:]:
            rows.append(dict(zip(header, line.split(","))))
        pages += 1
        cursor = r.headers.get("X-Next-Cursor")
        if not cursor:
            break
        assert pages < 10
    assert pages == 2 and [int(r["id"]) for r in rows] == ids
    j, _ = _pages(http, server, spec, {"survey": survey})
    for row, item in zip(rows, j):
        assert row["object_id"] == item["object_id"]
        assert [float(row[f"p{k}"]) for k in range(10)] == pytest.approx(item["probs"], abs=1e-6)


# ------------------------------------------------------------------ batch

def test_classify_batch(server, spec, http, env):
    pngs = [galaxy_png(40 + i) for i in range(3)]
    singles = [classify(http, server, spec, p, "image/png") for p in pngs]
    with open(env["fits"][1], "rb") as f:
        fits = f.read()
    single_fits = classify(http, server, spec, fits, "application/fits")
    oid = "batch-" + uuid.uuid4().hex[:10]
    body, ct = multipart([
        ("file", pngs[0], "a.png", "image/png"),
        ("object_id", oid, None, None), ("ra", "1.5", None, None),
        ("file", pngs[1], "b.png", "image/png"),
        ("file", b"\x89PNG\r\n\x1a\n this is not a png", "bad.png", "image/png"),
        ("file", fits, "c.fits", "application/fits"),
        ("file", pngs[2], "d.png", None),
    ])
    r = http.post(server.url("/v1/classify/batch"), data=body, headers={"Content-Type": ct}, timeout=60)
    out = spec.check(r)
    assert r.status_code == 200, r.text
    res = out["results"]
    assert [x["index"] for x in res] == [0, 1, 2, 3, 4]
    assert [x["status"] for x in res] == [200, 200, 422, 200, 200]
    assert [x.get("filename") for x in res] == ["a.png", "b.png", "bad.png", "c.fits", "d.png"]
    assert res[2]["error"]["code"] == "undecodable_image"
    for got, want in ((res[0], singles[0]), (res[1], singles[1]), (res[3], single_fits), (res[4], singles[2])):
        assert_same_answer(got, want)
    # fields apply to the next file part only
    assert res[1]["object_id"] == oid and res[1]["stored"] is True and res[1]["ra"] == 1.5
    assert res[0]["stored"] is False and "object_id" not in res[0] and "object_id" not in res[4]
    rec = spec.check(http.get(server.url(f"/v1/objects/{oid}"), timeout=10))
    assert rec["predictions"][0]["id"] == res[1]["prediction_id"]


def test_batch_part_limit(server, spec, http):
    parts = [("file", galaxy_png(60), f"{i}.png", "image/png") for i in range(9)]   # --max-batch-parts 8
    body, ct = multipart(parts)
    r = http.post(server.url("/v1/classify/batch"), data=body, headers={"Content-Type": ct}, timeout=60)
    out = spec.check(r)
    assert r.status_code == 413 and out["error"]["code"] == "payload_too_large"
    body, ct = multipart(parts[:8])
    r = http.post(server.url("/v1/classify/batch"), data=body, headers={"Content-Type": ct}, timeout=60)
    out = spec.check(r)
    assert r.status_code == 200 and len(out["results"]) == 8


# ------------------------------------------------------------------ KServe v2

def v2(http, server, spec, method, path, status=200, **kw):
    r = http.request(method, server.url(path), timeout=60, **kw)
    body = spec.check(r)
    assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text[:400]}"
    return body


def test_v2_metadata(server, spec, http, env):
    version = sha256_file(os.path.join(env["models"], MODEL + ".safetensors"))
    md = v2(http, server, spec, "GET", f"/v2/models/{MODEL}")
    assert md["name"] == MODEL and version in md["versions"]
    inp = {t["name"]: t for t in md["inputs"]}
    assert inp["input"]["datatype"] == "FP32" and inp["input"]["shape"][1:] == [3, S, S]
    assert {t["name"] for t in md["outputs"]} == {"logits", "probabilities", "redshift"}
    assert v2(http, server, spec, "GET", f"/v2/models/{MODEL}/versions/{version}") == md
    assert v2(http, server, spec, "GET", f"/v2/models/{MODEL}/ready") == {"name": MODEL, "ready": True}
    assert v2(http, server, spec, "GET", f"/v2/models/{MODEL}/versions/{version}/ready")["ready"] is True
    for path in ("/v2/models/nope", "/v2/models/nope/ready", f"/v2/models/{MODEL}/versions/{'0' * 64}",
                 f"/v2/models/{MODEL}/versions/{'0' * 64}/ready"):
        err = v2(http, server, spec, "GET", path, status=404)
        assert isinstance(err["error"], str) and err["error"]


def test_v2_infer_equals_classify(server, spec, http, env):
    """The same preprocessed pixels through /v2 infer and through /v1/classify
    (a 32x32 PNG: crop 1 and resize to 32 leave io/'s decoded floats as they
    are) give the same probabilities and redshift bit for bit (both print
    float32 with 9 significant digits, which round-trips), in a batch of 3
    rows or alone, flat or nested."""
    seeds = (70, 71, 72)
    pix = [galaxy_pixels(s) for s in seeds]
    ref = [classify(http, server, spec, png_bytes(S, S, p), "image/png") for p in pix]
    flat = [v for p in pix for v in pixels_to_chw(p, S)]
    req = {"id": "req-1", "inputs": [{"name": "input", "shape": [3, 3, S, S], "datatype": "FP32", "data": flat}]}
    version = ref[0]["model_version"]
    out = v2(http, server, spec, "POST", f"/v2/models/{MODEL}/infer", json=req)
    assert out["model_name"] == MODEL and out["model_version"] == version and out["id"] == "req-1"
    o = {t["name"]: t for t in out["outputs"]}
    assert o["probabilities"]["shape"] == [3, 10] and o["logits"]["shape"] == [3, 10]
    assert o["redshift"]["shape"] in ([3], [3, 1])
    for i, a in enumerate(ref):
        probs = o["probabilities"]["data"][i * 10:(i + 1) * 10]
        logits = o["logits"]["data"][i * 10:(i + 1) * 10]
        assert same_numbers(probs, a["probs"])   # CPU: bit for bit (9 significant digits round-trip a float32)
        assert max(range(10), key=lambda k: logits[k]) == a["class_index"]
        assert same_numbers(o["redshift"]["data"][i], a["redshift"])
    # nested data, one row, an output subset, the version route
    nested = [[[flat[(c * S + y) * S:(c * S + y + 1) * S] for y in range(S)] for c in range(3)]]
    req = {"inputs": [{"name": "input", "shape": [1, 3, S, S], "datatype": "FP32", "data": nested}],
           "outputs": [{"name": "probabilities"}]}
    out = v2(http, server, spec, "POST", f"/v2/models/{MODEL}/versions/{version}/infer", json=req)
    assert [t["name"] for t in out["outputs"]] == ["probabilities"]
    assert same_numbers(out["outputs"][0]["data"], ref[0]["probs"])
    # coords are accepted
    req = {"inputs": [{"name": "input", "shape": [1, 3, S, S], "datatype": "FP32", "data": flat[:3 * S * S]},
                      {"name": "coords", "shape": [1, 2], "datatype": "FP32", "data": [150.0, 2.0]}]}
    out = v2(http, server, spec, "POST", f"/v2/models/{MODEL}/infer", json=req)
    q = classify(http, server, spec, png_bytes(S, S, pix[0]), "image/png", params={"ra": "150", "dec": "2"})
    probs = {t["name"]: t for t in out["outputs"]}["probabilities"]["data"]
    assert probs == q["probs"]


def test_v2_infer_errors(server, spec, http):
    url = f"/v2/models/{MODEL}/infer"
    bad = [
        {"inputs": [{"name": "input", "shape": [1, 3, S, S], "datatype": "FP32", "data": [0.5] * 10}]},
        {"inputs": [{"name": "input", "shape": [1, 3, S + 1, S + 1], "datatype": "FP32",
                     "data": [0.5] * (3 * (S + 1) ** 2)}]},
        {"inputs": [{"name": "input", "shape": [1, 3, S, S], "datatype": "INT32", "data": [1] * (3 * S * S)}]},
        {"inputs": [{"name": "input", "shape": [1, 3, S, S], "datatype": "FP32", "data": ["x"] * (3 * S * S)}]},
        {"inputs": []},
        {"nothing": 1},
    ]
    for req in bad:
        err = v2(http, server, spec, "POST", url, status=400, json=req)
        assert isinstance(err["error"], str) and err["error"]
    err = v2(http, server, spec, "POST", "/v2/models/nope/infer", status=404,
             json={"inputs": [{"name": "input", "shape": [1, 3, S, S], "datatype": "FP32",
                               "data": [0.5] * (3 * S * S)}]})
    assert isinstance(err["error"], str)
    err = v2(http, server, spec, "POST", url, status=413,
             json={"inputs": [{"name": "input", "shape": [9, 3, S, S], "datatype": "FP32",
                               "data": [0.5] * (9 * 3 * S * S)}]})
    assert isinstance(err["error"], str)


# ------------------------------------------------------------------ auth, reload

def test_write_routes_need_the_key(server, spec):
    png = galaxy_png(1)
    for headers in ({}, auth("wrong-key"), {"X-API-Key": "wrong"}, {"Authorization": "Basic " + API_KEY}):
        r = requests.post(server.url("/v1/classify"), data=png, headers={"Content-Type": "image/png", **headers},
                          timeout=30)
        body = spec.check(r)
        assert r.status_code == 401 and body["error"]["code"] == "unauthorized", headers
    r = requests.post(server.url("/v1/classify"), data=png,
                      headers={"Content-Type": "image/png", "X-API-Key": API_KEY}, timeout=30)
    spec.check(r)
    assert r.status_code == 200
    # reads are open without --protect-reads
    r = requests.get(server.url("/v1/models"), timeout=10)
    spec.check(r)
    assert r.status_code == 200


def test_reload(server, spec, http):
    for headers in ({}, auth("nope")):
        r = requests.post(server.url("/v1/admin/reload"), headers=headers, timeout=60)
        body = spec.check(r)
        assert r.status_code == 401 and "WWW-Authenticate" in r.headers
    before = spec.check(http.get(server.url("/v1/models"), timeout=10))["models"][0]["version"]
    r = requests.post(server.url("/v1/admin/reload"), headers={"X-API-Key": API_KEY}, timeout=60)
    body = spec.check(r)
    assert r.status_code == 200 and body == {"reloaded": True, "models": [{"name": MODEL, "version": before}]}
    a = classify(http, server, spec, galaxy_png(2), "image/png")
    assert a["model_version"] == before
    reloads = lambda: metric(requests.get(server.url("/metrics"), timeout=10).text, "galaxyd_reloads_total",
                             {"result": "ok"}) or 0
    n = reloads()
    assert n >= 1
    server.send_signal(signal.SIGHUP)
    wait_for(lambda: reloads() == n + 1, 30, "the SIGHUP reload in /metrics")
    assert server.proc.poll() is None
    assert_same_answer(a, classify(http, server, spec, galaxy_png(2), "image/png"))


def test_reload_swaps_version_and_refuses_corrupt(env, spec, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    target = models / f"{MODEL}.safetensors"
    shutil.copy(env["best"], target)
    s = Galaxyd(str(tmp_path / "srv"), str(models), env["web"], api_key_file=env["key_file"])
    try:
        with requests.Session() as http:
            http.headers.update(auth())
            v_best, v_last = sha256_file(env["best"]), sha256_file(env["last"])
            assert v_best != v_last
            shutil.copy(env["last"], tmp_path / "tmp.safetensors")
            os.replace(tmp_path / "tmp.safetensors", target)
            r = http.post(s.url("/v1/admin/reload"), timeout=60)
            assert spec.check(r)["models"] == [{"name": MODEL, "version": v_last}]
            assert classify(http, s, spec, galaxy_png(3), "image/png")["model_version"] == v_last
            # a corrupt checkpoint fails the reload, names the file, changes nothing
            with open(env["last"], "rb") as f:
                blob = f.read()
            (tmp_path / "tmp.safetensors").write_bytes(blob[: len(blob) // 2])
            os.replace(tmp_path / "tmp.safetensors", target)
            r = http.post(s.url("/v1/admin/reload"), timeout=60)
            body = spec.check(r)
            assert r.status_code == 500 and body["error"]["code"] == "reload_failed"
            assert f"{MODEL}.safetensors" in body["error"]["message"]
            assert classify(http, s, spec, galaxy_png(3), "image/png")["model_version"] == v_last
            assert requests.get(s.url("/readyz"), timeout=10).status_code == 200
    finally:
        assert s.stop() == 0


def test_access_log_line_per_request(server, spec):
    rid = "acclog-" + uuid.uuid4().hex[:12]
    r = requests.get(server.url("/v1/models"), headers={"X-Request-Id": rid}, timeout=10)
    spec.check(r)

    def line():
        for ln in server.log().splitlines():
            if rid in ln:
                return ln
        return None
    entry = json.loads(wait_for(line, 10, "the access-log line"))
    values = json.dumps(entry)
    assert rid in values and "/v1/models" in values and "200" in values and "GET" in values


def test_cors_off_by_default_and_protect_reads(server, env, spec):
    r = requests.options(server.url("/v1/classify"), timeout=10,
                         headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert not any(h.lower().startswith("access-control-") for h in r.headers), r.headers
    r = requests.get(server.url("/v1/models"), headers={"Origin": "https://evil.example"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in r.headers
    s = Galaxyd(os.path.join(env["dir"], "srv-cors"), env["models"], env["web"], api_key_file=env["key_file"],
                extra=["--cors-origin", "https://ok.example", "--protect-reads"])
    try:
        r = requests.options(s.url("/v1/classify"), timeout=10,
                             headers={"Origin": "https://ok.example", "Access-Control-Request-Method": "POST"})
        spec.check(r)
        assert r.status_code == 204 and r.headers.get("Access-Control-Allow-Origin") == "https://ok.example"
        r = requests.get(s.url("/v1/models"), timeout=10)
        body = spec.check(r)
        assert r.status_code == 401 and body["error"]["code"] == "unauthorized"
        r = requests.get(s.url("/v1/models"), headers=auth(), timeout=10)
        spec.check(r)
        assert r.status_code == 200
        for path in ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/"):
            assert requests.get(s.url(path), timeout=10).status_code == 200, path
    finally:
        assert s.stop() == 0


# ------------------------------------------------------------------ static files

def test_static_files(server, spec):
    r = requests.get(server.url("/"), timeout=10)
    spec.check(r)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "galaxyd test" in r.text
    r = requests.get(server.url("/app.js"), timeout=10)
    spec.check(r)
    assert r.status_code == 200 and r.text == "console.log('galaxyd test');\n"
    assert "javascript" in r.headers["Content-Type"]
    r = requests.get(server.url("/sub/"), timeout=10)
    spec.check(r)
    assert r.status_code == 200 and r.text == "<p>sub</p>\n"
    for path in ("/empty/", "/.hidden", "/leak.txt", "/uplink/secret.txt", "/missing.css", "/sub/../../secret.txt"):
        r = requests.get(server.url(path), timeout=10)
        body = spec.check(r)
        assert r.status_code == 404 and body["error"]["code"] == "not_found", path
        assert "SECRET" not in r.text
    r = requests.post(server.url("/app.js"), data=b"x", timeout=10)
    spec.check(r)
    assert r.status_code == 405


def test_traversal_unnormalised(server, spec):
    """Raw request lines that requests/urllib would normalise away."""
    for target in ("/../secret.txt", "/sub/../../secret.txt", "/%2e%2e/secret.txt", "/sub/%2e%2e/%2e%2e/secret.txt",
                   "/..%2fsecret.txt", "/uplink/../secret.txt", "//etc/passwd", "/../../../../etc/passwd"):
        a = raw_http(server.port, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        assert a is not None and a.status == 404, (target, a and a.status)
        assert b"SECRET" not in a.body and b"root:" not in a.body
        spec.check_raw("GET", target, a.status, a.headers, a.body)


# ------------------------------------------------------------------ lifecycle

def test_help_and_corrupt_checkpoint(env, tmp_path):
    r = subprocess.run([tool("galaxyd"), "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    for flag in ("--host", "--port", "--models", "--db", "--web", "--api-key-file", "--max-body", "--max-queue",
                 "--max-batch", "--batch-delay-us", "--deadline-ms", "--conn-timeout"):
        assert flag in r.stdout, f"--help does not mention {flag}"
    models = tmp_path / "models"
    models.mkdir()
    with open(env["best"], "rb") as f:
        blob = f.read()
    (models / "broken.safetensors").write_bytes(blob[:1000])
    r = subprocess.run([tool("galaxyd"), "--port", "0", "--models", str(models), "--db", str(tmp_path / "d.sqlite"),
                        "--web", env["web"]], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "broken.safetensors" in r.stderr
    assert "listening" not in r.stdout


def test_zz_every_operation_answered(spec):
    """Runs last in this file: every operation of api/openapi.yaml was answered
    2xx (or, for write-only routes, at least documented statuses) by a test."""
    ok = {(m, t) for (m, t, st) in spec.seen if 200 <= st < 300}
    missing = [op for op in spec.operations() if op not in ok]
    assert not missing, f"operations never answered 2xx by the tests: {missing}"
