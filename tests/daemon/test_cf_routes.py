"""galaxyd's counterfactual routes (daemon/gx_server_cf.c) against a real
CF-INN checkpoint from `galaxy-train cf-inn` (conftest's cf_env), served
beside the WaveletMamba one (and alone, for the cases without a second
classifier):

  POST /v1/counterfactuals, GET /v1/counterfactuals/{id}[/{file}],
  GET .../{target}/overlay.png and .../diff.png, POST /v1/counterfactual.png,
  GET /v1/generate.png, and classify's cf_inn member.

Every response is checked against api/openapi.yaml. What is asserted: the
input forms agree; the answer's numbers are consistent (the source target is
the reconstruction, probabilities sum to 1, valid_independent present exactly
when a wavelet-mamba model is loaded); the PNGs decode to the documented
sizes, input.png is the uploaded pixels, grid tiles are the single images,
overlay is clip(x + x_cf - x~) and diff's colours follow the sign of
x_cf - x~; ?scale enlarges by nearest neighbour; GETs are idempotent; a
multi-input request's grid is the Figure 3 layout; expiry and the size cap
answer 404 "expired"; bad inputs answer 4xx and /healthz stays fine.
"""
import base64
import json
import os
import time

import pytest
import requests

from conftest import (MODEL, Galaxyd, auth, galaxy_png, galaxy_pixels, healthy, keyed_session, multipart, png_bytes,
                      png_decode, post_checked, serve)

CF = "cf-inn"
GAP = 2


def px(img, x, y):
    w, h, ch, rows = img
    return tuple(rows[y][x * ch:(x + 1) * ch])


def tile(img, x0, y0, s):
    """The s x s block at (x0, y0) as a list of pixel tuples."""
    return [px(img, x0 + x, y0 + y) for y in range(s) for x in range(s)]


# ------------------------------------------------------------------ fixtures

def _server(env, cf_env, name, models, extra=()):
    return Galaxyd(os.path.join(cf_env["dir"], name), models, env["web"],
                   extra=["--deadline-ms", "30000"] + list(extra), api_key_file=env["key_file"])


@pytest.fixture(scope="module")
def cf_server(env, cf_env):
    yield from serve(_server(env, cf_env, "srv", cf_env["models"]))


@pytest.fixture()
def ch(cf_server):
    yield from keyed_session()


def post_cf(http, server, spec, body, query="", ctype="image/png", status=200):
    return post_checked(http, spec, server.url("/v1/counterfactuals" + query), body, ctype, status, timeout=120)


def get(http, server, spec, path, status=200):
    r = http.get(server.url(path), timeout=60)
    spec.check(r)
    assert r.status_code == status, r.text[:300]
    return r


def classes(http, server):
    for m in http.get(server.url("/v1/models"), timeout=10).json()["models"]:
        if m["kind"] == CF:
            return m["classes"], m["input_size"]
    raise AssertionError("no cf-inn model listed")


# ------------------------------------------------------------------ POST /v1/counterfactuals

def test_all_targets_answer(ch, cf_server, spec):
    names, S = classes(ch, cf_server)
    K = len(names)
    body = post_cf(ch, cf_server, spec, galaxy_png(11))
    assert body["model"] == CF and body["independent_model"] == MODEL
    assert len(body["inputs"]) == 1
    e = body["inputs"][0]
    assert e["id"] == body["id"] and e["size"] == S and e["n_classes"] == K
    assert abs(sum(e["probs"]) - 1) < 1e-4
    assert e["class_index"] == max(range(K), key=lambda k: e["probs"][k])
    assert e["class_name"] == names[e["class_index"]]
    cfs = e["counterfactuals"]
    assert [c["target"] for c in cfs] == list(range(K))
    for c in cfs:
        assert c["target_name"] == names[c["target"]]
        assert c["url"] == f"/v1/counterfactuals/{e['id']}/{c['target']}.png"
        # both models list Galaxy10's classes: the WM judged every x_cf
        assert isinstance(c["valid_independent"], bool)
        assert c["ssim"] is None or -1 <= c["ssim"] <= 1
        assert c["msd"] >= 0
    own = cfs[e["class_index"]]
    # the source class's "counterfactual" is the reconstruction itself
    assert own["alpha"] == 0 and own["valid_hidden"] and own["msd_reconstruction"] == 0
    assert own["msd"] == pytest.approx(e["reconstruction"]["msd"], rel=1e-6)
    healthy(cf_server)


def test_input_forms_agree(ch, cf_server, spec):
    names, _ = classes(ch, cf_server)
    png = galaxy_png(12)
    raw = post_cf(ch, cf_server, spec, png, f"?targets=0,{names[1]}")
    mp, ctype = multipart([("targets", f"0, {names[1]}", None, None), ("file", png, "g.png", "image/png")])
    form = post_cf(ch, cf_server, spec, mp, ctype=ctype)
    js = post_cf(ch, cf_server, spec, json.dumps({"image": base64.b64encode(png).decode(), "targets": [0, names[1]]}),
                 ctype="application/json")
    strip = lambda b: [{k: v for k, v in c.items() if not k.endswith("url") and k != "id"}
                       for c in b["inputs"][0]["counterfactuals"]]
    assert strip(raw) == strip(form) == strip(js)
    assert [c["target"] for c in raw["inputs"][0]["counterfactuals"]] == [0, 1]
    assert len({raw["id"], form["id"], js["id"]}) == 3, "every request gets its own id"


def test_pngs_sizes_and_content(ch, cf_server, spec):
    _, S = classes(ch, cf_server)
    pixels = galaxy_pixels(13)
    e = post_cf(ch, cf_server, spec, png_bytes(32, 32, pixels), "?targets=2,5,0")["inputs"][0]
    x = png_decode(get(ch, cf_server, spec, e["input_url"]).content)
    assert x[:3] == (S, S, 3)
    if S == 32:   # same size, crop 1: preprocessing is the identity, the PNG is the upload
        assert b"".join(x[3]) == pixels
    rec = png_decode(get(ch, cf_server, spec, e["reconstruction_url"]).content)
    assert rec[:3] == (S, S, 3)
    cfs = {c["target"]: png_decode(get(ch, cf_server, spec, c["url"]).content) for c in e["counterfactuals"]}
    assert all(im[:3] == (S, S, 3) for im in cfs.values())
    # grid: one row [x, x~, x_cf(2), x_cf(5), x_cf(0)]
    g = png_decode(get(ch, cf_server, spec, e["grid_url"]).content)
    assert g[:2] == (5 * S + 4 * GAP, S)
    assert tile(g, 0, 0, S) == tile(x, 0, 0, S)
    assert tile(g, S + GAP, 0, S) == tile(rec, 0, 0, S)
    for i, t in enumerate((2, 5, 0)):
        assert tile(g, (2 + i) * (S + GAP), 0, S) == tile(cfs[t], 0, 0, S)
    assert px(g, S, 0) == (255, 255, 255), "tiles are separated by white"
    # overlay = clip(x + x_cf - x~) (from the 8-bit images: within rounding)
    c = e["counterfactuals"][0]
    ov = png_decode(get(ch, cf_server, spec, c["overlay_url"]).content)
    assert ov[:3] == (S, S, 3)
    worst = 0
    for yy in range(S):
        for xx in range(S):
            for k in range(3):
                want = min(255, max(0, px(x, xx, yy)[k] + px(cfs[2], xx, yy)[k] - px(rec, xx, yy)[k]))
                worst = max(worst, abs(px(ov, xx, yy)[k] - want))
    assert worst <= 2, f"overlay differs from clip(x + x_cf - x~) by {worst}/255"


def test_diff_colours_and_legend(ch, cf_server, spec):
    _, S = classes(ch, cf_server)
    e = post_cf(ch, cf_server, spec, galaxy_png(14), "?targets=3")["inputs"][0]
    c = e["counterfactuals"][0]
    r = get(ch, cf_server, spec, c["diff_url"])
    rng = float(r.headers["X-Diff-Range"])
    assert rng > 0
    d = png_decode(r.content)
    assert d[:3] == (S, S + GAP + 6, 3)
    # legend: blue at the left end, white in the middle, red at the right end
    left, mid, right = px(d, 0, S + GAP + 2), px(d, S // 2, S + GAP + 2), px(d, S - 1, S + GAP + 2)
    assert left[2] > left[0] + 100, left       # io's map: -1 is (33, 102, 172)
    assert right[0] > right[2] + 100, right    # +1 is (178, 24, 43)
    assert min(mid) > 200
    assert px(d, 0, S) == (255, 255, 255)
    # range = max |d|: some map pixel is a saturated end of the colour map
    ends = {(33, 102, 172), (178, 24, 43)}
    assert any(px(d, xx, yy) in ends for yy in range(S) for xx in range(S))
    # map colours follow the sign of mean(x_cf - x~) where it is clearly not
    # 0 (beyond the 8-bit rounding of the two PNGs it is computed from here)
    xc = png_decode(get(ch, cf_server, spec, c["url"]).content)
    rec = png_decode(get(ch, cf_server, spec, e["reconstruction_url"]).content)
    checked = 0
    for yy in range(S):
        for xx in range(S):
            m = sum(px(xc, xx, yy)[k] - px(rec, xx, yy)[k] for k in range(3)) / 3 / 255
            if abs(m) > max(0.4 * rng, 4 / 255):
                col = px(d, xx, yy)
                assert (col[0] > col[2]) == (m > 0), f"pixel {xx},{yy}: d={m:.3f}, colour {col}"
                checked += 1
    assert checked > 0 or rng < 10 / 255


def test_scale_and_idempotent_gets(ch, cf_server, spec):
    _, S = classes(ch, cf_server)
    e = post_cf(ch, cf_server, spec, galaxy_png(15), "?targets=1")["inputs"][0]
    c = e["counterfactuals"][0]
    a = get(ch, cf_server, spec, c["url"]).content
    assert get(ch, cf_server, spec, c["url"]).content == a, "a stored result renders the same bytes every time"
    assert get(ch, cf_server, spec, f"/v1/counterfactuals/{e['id']}/1.png").content == a
    name = c["target_name"]
    assert get(ch, cf_server, spec, f"/v1/counterfactuals/{e['id']}/{requests.utils.quote(name)}.png").content == a
    base = png_decode(a)
    big = png_decode(get(ch, cf_server, spec, c["url"] + "?scale=4").content)
    assert big[:2] == (4 * S, 4 * S)
    for (xx, yy) in ((0, 0), (5, 9), (4 * S - 1, 4 * S - 1), (17, 70)):
        assert px(big, xx, yy) == px(base, xx // 4, yy // 4)
    g3 = png_decode(get(ch, cf_server, spec, e["grid_url"] + "?scale=3").content)
    assert g3[:2] == (3 * (3 * S + 2 * GAP), 3 * S)
    d2 = png_decode(get(ch, cf_server, spec, c["diff_url"] + "?scale=2").content)
    assert d2[:2] == (2 * S, 2 * (S + GAP + 6))
    stored = get(ch, cf_server, spec, f"/v1/counterfactuals/{e['id']}").json()
    assert stored == e
    assert get(ch, cf_server, spec, f"/v1/counterfactuals/{e['id']}").json() == stored


def test_several_inputs_figure3(ch, cf_server, spec):
    names, S = classes(ch, cf_server)
    K = len(names)
    pngs = [galaxy_png(20 + i) for i in range(3)]
    mp, ctype = multipart([("targets", b"0,1,2,3", None, None)] +
                          [("file", p, f"g{i}.png", "image/png") for i, p in enumerate(pngs)])
    body = post_cf(ch, cf_server, spec, mp, ctype=ctype)
    gid = body["id"]
    ins = body["inputs"]
    assert [e["id"] for e in ins] == [f"{gid}-{i}" for i in range(3)]
    assert [e["index"] for e in ins] == [0, 1, 2]
    # each input equals the same image posted alone
    for i in (0, 2):
        alone = post_cf(ch, cf_server, spec, pngs[i], "?targets=0,1,2,3")["inputs"][0]
        assert alone["class_index"] == ins[i]["class_index"]
        assert [c["alpha"] for c in alone["counterfactuals"]] == [c["alpha"] for c in ins[i]["counterfactuals"]]
    g = png_decode(get(ch, cf_server, spec, f"/v1/counterfactuals/{gid}/grid.png").content)
    assert g[:2] == (K * S + (K - 1) * GAP, 3 * S + 2 * GAP)
    for i, e in enumerate(ins):
        y0 = i * (S + GAP)
        x = png_decode(get(ch, cf_server, spec, e["input_url"]).content)
        p = e["class_index"]
        assert tile(g, p * (S + GAP), y0, S) == tile(x, 0, 0, S), "the input sits in its predicted class's column"
        for c in e["counterfactuals"]:
            if c["target"] != p:
                xc = png_decode(get(ch, cf_server, spec, c["url"]).content)
                assert tile(g, c["target"] * (S + GAP), y0, S) == tile(xc, 0, 0, S)
        for col in range(4, K):
            if col != p:
                assert set(tile(g, col * (S + GAP), y0, S)) == {(128, 128, 128)}, "not a target: gray"
    # one input's own grid is its row layout
    gi = png_decode(get(ch, cf_server, spec, ins[1]["grid_url"]).content)
    assert gi[:2] == (6 * S + 5 * GAP, S)
    allj = get(ch, cf_server, spec, f"/v1/counterfactuals/{gid}").json()
    assert allj["id"] == gid and allj["inputs"] == ins


# ------------------------------------------------------------------ PNG routes

def test_counterfactual_png_matches_stored(ch, cf_server, spec):
    names, S = classes(ch, cf_server)
    png = galaxy_png(16)
    r = ch.post(cf_server.url(f"/v1/counterfactual.png?target={requests.utils.quote(names[4])}"), data=png,
                headers={"Content-Type": "image/png"}, timeout=60)
    spec.check(r)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
    assert r.headers["X-Target-Class"] == "4"
    e = post_cf(ch, cf_server, spec, png, "?targets=4")["inputs"][0]
    c = e["counterfactuals"][0]
    assert r.headers["X-Source-Class"] == str(e["class_index"])
    assert r.headers["X-Valid-Hidden"] == str(int(c["valid_hidden"]))
    assert r.headers["X-Valid-Reencoded"] == str(int(c["valid_reencoded"]))
    assert r.content == get(ch, cf_server, spec, c["url"]).content
    r2 = ch.post(cf_server.url("/v1/counterfactual.png?target=4&scale=2"), data=png,
                 headers={"Content-Type": "image/png"}, timeout=60)
    spec.check(r2)
    assert png_decode(r2.content)[:2] == (2 * S, 2 * S)


def test_generate(ch, cf_server, spec):
    names, S = classes(ch, cf_server)
    one = png_decode(get(ch, cf_server, spec, "/v1/generate.png?class=2&seed=7").content)
    assert one[:2] == (S, S)
    r5 = get(ch, cf_server, spec, "/v1/generate.png?class=2&seed=7&n=5")
    five = png_decode(r5.content)
    assert five[:2] == (3 * S + 2 * GAP, 2 * S + GAP)
    assert tile(five, 0, 0, S) == tile(one, 0, 0, S), "image i does not depend on n"
    assert get(ch, cf_server, spec, "/v1/generate.png?class=2&seed=7&n=5").content == r5.content
    other = png_decode(get(ch, cf_server, spec, "/v1/generate.png?class=2&seed=8").content)
    assert tile(other, 0, 0, S) != tile(one, 0, 0, S)
    byname = get(ch, cf_server, spec, f"/v1/generate.png?class={requests.utils.quote(names[2])}&seed=7").content
    assert png_decode(byname)[3] == one[3]
    big = png_decode(get(ch, cf_server, spec, "/v1/generate.png?class=0&n=64&scale=2").content)
    assert big[:2] == (2 * (8 * S + 7 * GAP), 2 * (8 * S + 7 * GAP))


def test_classify_gains_cf_inn(ch, cf_server, spec):
    png = galaxy_png(17)
    r = ch.post(cf_server.url("/v1/classify"), data=png, headers={"Content-Type": "image/png"}, timeout=60)
    body = spec.check(r)
    assert r.status_code == 200 and body["model"] == MODEL
    e = post_cf(ch, cf_server, spec, png, "?targets=0")["inputs"][0]
    assert body["cf_inn"] == {"model": CF, "class_index": e["class_index"], "class_name": e["class_name"],
                              "log_likelihood": pytest.approx(e["log_likelihood"], rel=1e-5)}


# ------------------------------------------------------------------ bad inputs

BAD = [
    ("POST", "/v1/counterfactuals?targets=NoSuchClass", 400, "bad_field"),
    ("POST", "/v1/counterfactuals?targets=99", 400, "bad_field"),
    ("POST", "/v1/counterfactuals?targets=-1", 400, "bad_field"),
    ("POST", "/v1/counterfactuals?targets=1,1", 400, "bad_field"),
    ("POST", "/v1/counterfactuals?targets=1,,2", 400, "bad_field"),
    ("POST", f"/v1/counterfactuals?model={MODEL}", 400, "bad_field"),
    ("POST", "/v1/counterfactuals?model=nope", 404, "not_found"),
    ("POST", "/v1/counterfactual.png", 400, "bad_field"),
    ("POST", "/v1/counterfactual.png?target=10", 400, "bad_field"),
    ("POST", "/v1/counterfactual.png?target=1&scale=0", 400, "bad_field"),
    ("GET", "/v1/counterfactuals/deadbeefdeadbeef", 404, "not_found"),
    ("GET", "/v1/counterfactuals/deadbeefdeadbeef/grid.png", 404, "not_found"),
    ("GET", "/v1/counterfactuals/deadbeefdeadbeef/1.png", 404, "not_found"),
    ("GET", "/v1/counterfactuals/deadbeefdeadbeef/1/diff.png", 404, "not_found"),
    ("GET", "/v1/generate.png", 400, "bad_field"),
    ("GET", "/v1/generate.png?class=99", 400, "bad_field"),
    ("GET", "/v1/generate.png?class=Nope", 400, "bad_field"),
    ("GET", "/v1/generate.png?class=1&n=65", 400, "bad_field"),
    ("GET", "/v1/generate.png?class=1&n=0", 400, "bad_field"),
    ("GET", "/v1/generate.png?class=1&seed=-3", 400, "bad_field"),
    ("GET", "/v1/generate.png?class=1&scale=17", 400, "bad_field"),
    ("GET", "/v1/generate.png?class=1&scale=x", 400, "bad_field"),
    ("GET", f"/v1/generate.png?class=1&model={MODEL}", 400, "bad_field"),
]


@pytest.mark.parametrize("method,path,status,code", BAD)
def test_bad_inputs(ch, cf_server, spec, method, path, status, code):
    kw = {"data": galaxy_png(1), "headers": {"Content-Type": "image/png"}} if method == "POST" else {}
    r = ch.request(method, cf_server.url(path), timeout=60, **kw)
    body = spec.check(r)
    assert r.status_code == status, r.text
    assert body["error"]["code"] == code
    healthy(cf_server)


def test_bad_stored_lookups(ch, cf_server, spec):
    e = post_cf(ch, cf_server, spec, galaxy_png(18), "?targets=1,2")["inputs"][0]
    for path, status in ((f"/v1/counterfactuals/{e['id']}/3.png", 404),
                         (f"/v1/counterfactuals/{e['id']}/Nope/overlay.png", 404),
                         (f"/v1/counterfactuals/{e['id']}/9/diff.png", 404),
                         (f"/v1/counterfactuals/{e['id']}/other.txt", 404),
                         (f"/v1/counterfactuals/{e['id']}/1.png?scale=0", 400),
                         (f"/v1/counterfactuals/{e['id']}/grid.png?scale=99", 400)):
        get(ch, cf_server, spec, path, status)
        healthy(cf_server)
    for body, ctype, status in ((b"not an image", "image/png", 422), (b"", "image/png", 400),
                                (galaxy_png(1), "text/plain", 415), (b"{\"image\": 5}", "application/json", 400),
                                (b"{\"image\": \"AAAA\", \"targets\": {}}", "application/json", 400)):
        post_cf(ch, cf_server, spec, body, ctype=ctype, status=status)
        healthy(cf_server)


# ------------------------------------------------------------------ expiry, cap, no second model

def test_expiry_and_cap(env, cf_env, spec):
    s = _server(env, cf_env, "srv-ttl", cf_env["cf_only"], ["--cf-ttl-s", "1", "--cf-cache-mb", "1"])
    try:
        with requests.Session() as h:
            h.headers.update(auth())
            b = post_cf(h, s, spec, galaxy_png(30), "?targets=1")
            assert b["independent_model"] is None
            assert b["inputs"][0]["counterfactuals"][0]["valid_independent"] is None
            url = b["inputs"][0]["counterfactuals"][0]["url"]
            get(h, s, spec, url)
            time.sleep(1.3)
            r = get(h, s, spec, url, 404)
            err = r.json()["error"]
            assert err["code"] == "expired" and "expired" in err["message"] and "--cf-ttl-s" in err["message"]
            get(h, s, spec, f"/v1/counterfactuals/{b['id']}", 404)
            healthy(s)
            # a classify on a server whose only model is the cf-inn: no redshift
            r = h.post(s.url("/v1/classify"), data=galaxy_png(30), headers={"Content-Type": "image/png"}, timeout=60)
            body = spec.check(r)
            assert r.status_code == 200 and body["redshift"] is None and body["cf_inn"]["model"] == CF
    finally:
        assert s.stop() == 0
    s = _server(env, cf_env, "srv-cap", cf_env["cf_only"], ["--cf-cache-mb", "1"])
    try:
        with requests.Session() as h:
            h.headers.update(auth())
            ids = [post_cf(h, s, spec, galaxy_png(40 + i))["id"] for i in range(9)]   # ~150 KB each at 32 px
            r = get(h, s, spec, f"/v1/counterfactuals/{ids[0]}/grid.png", 404)
            assert r.json()["error"]["code"] == "expired" and "--cf-cache-mb" in r.json()["error"]["message"]
            get(h, s, spec, f"/v1/counterfactuals/{ids[-1]}/grid.png")
            healthy(s)
    finally:
        assert s.stop() == 0


def test_flags(env, tmp_path):
    import subprocess
    from conftest import tool
    r = subprocess.run([tool("galaxyd"), "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "--cf-cache-mb" in r.stdout and "--cf-ttl-s" in r.stdout
    for flag, v in (("--cf-ttl-s", "0"), ("--cf-cache-mb", "0"), ("--cf-cache-mb", "x")):
        r = subprocess.run([tool("galaxyd"), "--port", "0", "--models", env["models"], "--db",
                            str(tmp_path / "d.sqlite"), "--web", env["web"], flag, v],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and flag in r.stderr, (flag, v, r.stderr)
        assert "listening" not in r.stdout
