"""POST /v1/morphology and classify's ?morph=1 (daemon/gx_server_morph.c).

Checked against api/openapi.yaml; asserted: every statistic of morph/
gx_morph.h is answered with the flag and its causes; the input forms agree;
the measurement is at the upload's native size (not the model's); band=mean
is the mean of the bands (a gray upload gives the same numbers for every
band; a coloured one differs between bands); a source-less image is flag 4
with -99 values and a reason; classify's morphology equals the route's; bad
inputs are 4xx and /healthz stays fine.
"""
import base64
import json

import pytest

from conftest import galaxy_pixels, galaxy_png, healthy, multipart, png_bytes, post_checked

STATS = ["concentration", "asymmetry", "smoothness", "gini", "m20", "gini_m20_bulge", "gini_m20_merger",
         "r20", "r50", "r80", "rpetro_circ", "rpetro_ellip", "flux_circ", "flux_ellip", "elongation_asymmetry",
         "ellipticity_asymmetry", "orientation_asymmetry", "xc_centroid", "yc_centroid", "xc_asymmetry",
         "yc_asymmetry", "sky_mean", "sky_median", "sky_sigma"]


def morph(http, server, spec, body, query="", ctype="image/png", status=200):
    return post_checked(http, spec, server.url("/v1/morphology" + query), body, ctype, status)


def gray_png(seed, size):
    rgb = galaxy_pixels(seed, size)
    g = bytes(rgb[i * 3 + 1] for i in range(size * size))
    return png_bytes(size, size, g, channels=1)


def test_every_statistic(http, server, spec):
    b = morph(http, server, spec, galaxy_png(3))
    assert b["band"] == "mean" and b["flag"] in (0, 1, 2) and b["flag_name"] in ("good", "suspect", "bad")
    for k in STATS:
        assert k in b["statistics"] and isinstance(b["statistics"][k], float), k
    s = b["statistics"]
    assert 0 < s["gini"] < 1 and s["m20"] < 0 and 0 < s["r20"] < s["r50"] < s["r80"]
    assert b["image"] == {"width": 32, "height": 32, "bands": 3}
    assert isinstance(b["warnings"], list) and b["reason"] == ""
    # the galaxy sits near the centre of galaxy_pixels' cutout
    assert abs(s["xc_centroid"] - 16) < 5 and abs(s["yc_centroid"] - 16) < 5
    healthy(server)


def test_input_forms_agree(http, server, spec):
    png = galaxy_png(4)
    raw = morph(http, server, spec, png, "?band=r")
    mp, ctype = multipart([("band", "r", None, None), ("file", png, "g.png", "image/png")])
    form = morph(http, server, spec, mp, ctype=ctype)
    js = morph(http, server, spec, json.dumps({"image": base64.b64encode(png).decode(), "band": "r"}),
               ctype="application/json")
    for b in (raw, form, js):
        b.pop("request_id")
    assert raw == form == js and raw["band"] == "r"


def test_native_resolution_and_bands(http, server, spec):
    big = morph(http, server, spec, galaxy_png(5, size=48))
    assert big["image"]["width"] == 48 and big["image"]["height"] == 48   # the model's input is 32
    g = gray_png(6, 40)
    per = [morph(http, server, spec, g, f"?band={b}")["statistics"] for b in ("mean", "g", "r", "z", "1")]
    assert all(p == per[0] for p in per), "a gray upload is the same image in every band"
    col = galaxy_png(7)
    m, r, z = (morph(http, server, spec, col, f"?band={b}")["statistics"] for b in ("mean", "r", "z"))
    assert m != r and r != z, "a coloured upload's bands are measured separately"


def test_no_source_is_flag_4(http, server, spec):
    flat = png_bytes(32, 32, bytes([40]) * (32 * 32 * 3))
    b = morph(http, server, spec, flat)
    assert b["flag"] == 4 and b["flag_name"] == "failed" and b["reason"]
    assert b["statistics"]["gini"] == -99 and b["statistics"]["concentration"] == -99
    healthy(server)


def test_classify_morph(http, server, spec):
    png = galaxy_png(8)
    r = http.post(server.url("/v1/classify?morph=1"), data=png, headers={"Content-Type": "image/png"}, timeout=60)
    body = spec.check(r)
    assert r.status_code == 200
    alone = morph(http, server, spec, png)
    alone.pop("request_id")
    assert body["morphology"] == alone
    r = http.post(server.url("/v1/classify?morph=1&band=z"), data=png, headers={"Content-Type": "image/png"},
                  timeout=60)
    assert spec.check(r)["morphology"]["band"] == "z"
    r = http.post(server.url("/v1/classify"), data=png, headers={"Content-Type": "image/png"}, timeout=60)
    assert "morphology" not in spec.check(r)


@pytest.mark.parametrize("path,body,ctype,status", [
    ("/v1/morphology?band=q", None, "image/png", 400),
    ("/v1/morphology?band=", None, "image/png", 400),
    ("/v1/morphology", b"garbage", "image/png", 422),
    ("/v1/morphology", b"", "image/png", 400),
    ("/v1/morphology", None, "text/plain", 415),
    ("/v1/morphology", b"{\"image\": 3}", "application/json", 400),
    ("/v1/morphology", b"{\"image\": \"AAAA\", \"what\": \"x\"}", "application/json", 400),
    ("/v1/classify?morph=2", None, "image/png", 400),
    ("/v1/classify?morph=1&band=9", None, "image/png", 400),
])
def test_bad_inputs(http, server, spec, path, body, ctype, status):
    r = http.post(server.url(path), data=galaxy_png(1) if body is None else body, headers={"Content-Type": ctype},
                  timeout=60)
    spec.check(r)
    assert r.status_code == status, r.text
    if "morph=1" in path:
        # computed while the classifier runs, answered after it (v1_classify_extras)
        assert r.json()["error"]["message"].startswith("morphology: "), r.text
    healthy(server)
    r = http.get(server.url("/v1/morphology"), timeout=10)
    spec.check(r)
    assert r.status_code == 405
