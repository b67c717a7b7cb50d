"""http_fuzz.py — a seeded, grammar-driven fuzzer of galaxyd's whole HTTP surface.

The libFuzzer targets (tests/fuzz/) hammer each decoder and parser in
isolation; this one hammers the daemon as a survey pipeline meets it: every
operation of api/openapi.yaml, with path and query parameters drawn from
their schemas or from a list of hostile values, bodies of every documented
media type (valid cutouts, mutated ones, JSON and multipart built from the
request schemas with fields of the wrong type), a wrong or missing API key
now and then, and ids harvested from earlier answers so that the stored-result
routes (counterfactual PNGs, anomaly histories, runs) are reached with ids
that exist.

Invariants checked on every answer (a failure raises FuzzFailure with the
request that broke it, which `reproduce` sends again):
  * an answer arrives (no reset, no hang past the timeout);
  * it is never 500: a client cannot make the daemon fail internally;
  * it conforms to api/openapi.yaml (openapi_check: documented status,
    media type, JSON schema, X-Request-Id, Allow on 405);
  * every few requests, /healthz still answers 200.
The caller checks what only the end shows: galaxyd exits 0 on SIGTERM and its
log has no sanitizer report.

Used by test_http_fuzz.py (a short campaign in `make test` and, under
AddressSanitizer + UBSan, in `make test-asan`) and by `make fuzz-http` (a long
one: GX_HTTP_FUZZ_SECS, a fresh seed each run unless GX_HTTP_FUZZ_SEED).
"""
import base64
import json
import os
import random
import threading
from collections import Counter
import time
import urllib.parse

import requests

from conftest import API_KEY, ROOT, fits_bytes, galaxy_png, multipart

HOSTILE = ["", "0", "-1", "1", "2", "9", "10", "65", "-0", "1e309", "-1e309", "nan", "NaN", "inf", "-inf",
           "0x10", " 5", "5 ", "1.5", "999999999999999999999", "-9223372036854775809", "%00", "%FF", "..",
           "../..", "%2e%2e", "a" * 300, "\u00fcn\u00efc\u00f6de", "null", "true", "[]", "{}", "a,b,,c",
           "0,0", "all", "ALL", "Round Smooth", "round smooth", "-", "_", ".", "x.png", "grid.png",
           "'; DROP TABLE objects; --", "\\", "/", "?", "#", "%", "+", "1,2,3,4,5,6,7,8,9,10,11",
           "2026-11-24T00:00:00Z", "2026-13-45T99:99:99Z", "source", "target", "json", "csv", "votable", "xml"]

JSON_HOSTILE = [None, True, False, 0, -1, 1, 1.5, 1e308, -1e308, 2 ** 63, -2 ** 63 - 1, "", "x", "a" * 500,
                [], [1, 2], ["a"], {}, {"a": 1}, [[[]]], "NaN"]

IO_FIXTURE_DIR = os.path.join(ROOT, "tests", "fixtures", "io")


class FuzzFailure(AssertionError):
    def __init__(self, msg, req):
        super().__init__(msg)
        self.req = req


def corpus_images():
    """Valid cutouts of each format the routes decode (PNG, JPEG, FITS)."""
    out = [("image/png", galaxy_png(s)) for s in range(4)]
    out.append(("image/png", galaxy_png(7, size=64)))
    out.append(("image/fits", fits_bytes(3, 32, 32)))
    out.append(("application/fits", fits_bytes(1, 24, 24, bitpix=16)))
    for name in sorted(os.listdir(IO_FIXTURE_DIR)) if os.path.isdir(IO_FIXTURE_DIR) else []:
        ext = os.path.splitext(name)[1].lower()
        ctype = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".fits": "image/fits"}.get(ext)
        if ctype:
            with open(os.path.join(IO_FIXTURE_DIR, name), "rb") as f:
                data = f.read()
            if len(data) < 200_000:
                out.append((ctype, data))
    return out


def mutate(rnd, data):
    """A byte-level mutation of data: flips, truncation, insertion, splice."""
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(5)
        if op == 0 and b:
            i = rnd.randrange(len(b))
            b[i] ^= 1 << rnd.randrange(8)
        elif op == 1 and b:
            del b[rnd.randrange(len(b)):]
        elif op == 2:
            i = rnd.randrange(len(b) + 1)
            b[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 16)))
        elif op == 3 and len(b) > 8:
            i, j = sorted(rnd.sample(range(len(b)), 2))
            b[i:j] = b[i:j][::-1]
        elif op == 4 and b:
            i = rnd.randrange(len(b))
            b[i:i + 4] = rnd.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"])
    return bytes(b)


class HttpFuzzer:
    def __init__(self, spec, base_url, seed, images, timeout=60.0):
        self.spec = spec
        self.base = base_url
        self.rnd = random.Random(seed)
        self.timeout = timeout
        self.ops = [(m, t) for m, t in spec.operations() if m != "HEAD"]
        self.images = images           # corpus_images(), shared by the clients
        self.pool = {"id": [], "object_id": [], "run_id": ["1"], "target": ["0", "1"], "name": [],
                     "kind": ["bias", "compare", "uda", "two-models"], "file": ["grid.png", "input.png",
                                                                               "reconstruction.png", "0.png"]}
        self.session = requests.Session()
        self.sent = 0
        self.statuses = Counter()
        self.ok_ops = Counter()       # "METHOD template" -> answers 2xx

    # ------------------------------------------------------------ values
    def _schema_value(self, schema):
        s = self.spec.resolve(schema or {})
        if "enum" in s:
            return str(self.rnd.choice(s["enum"]))
        t = s.get("type")
        if t == "integer":
            lo, hi = s.get("minimum", -5), s.get("maximum", 100)
            return str(self.rnd.randint(int(lo), int(min(hi, lo + 1000))))
        if t == "number":
            lo = s.get("minimum", -100.0)
            hi = s.get("maximum", s.get("exclusiveMaximum", 100.0))
            return repr(self.rnd.uniform(lo, hi))
        if t == "boolean":
            return self.rnd.choice(["true", "false", "1", "0"])
        return self.rnd.choice(["galaxy-1", "decals", "x", "all", "0,1", "2", "Round Smooth"])

    def _param_value(self, p):
        name = p["name"]
        r = self.rnd.random()
        if name in self.pool and self.pool[name] and r < 0.5:
            return self.rnd.choice(self.pool[name])
        if r < 0.8:
            return self._schema_value(p.get("schema"))
        return self.rnd.choice(HOSTILE)

    def _path(self, tmpl, params):
        byname = {p["name"]: p for p in params if p.get("in") == "path"}
        out = []
        for seg in tmpl.split("/"):
            if seg.startswith("{") and seg.endswith("}"):
                name = seg[1:-1]
                p = byname.get(name, {"name": name, "schema": {"type": "string"}})
                v = self._param_value(p)
                if tmpl == "/{file}" and self.rnd.random() < 0.5:
                    v = self.rnd.choice(["index.html", "app.js", "sub/", "../secret", "%2e%2e/x", ".hidden"])
                out.append(urllib.parse.quote(v, safe="/%" if tmpl == "/{file}" else "%"))
            else:
                out.append(seg)
        return "/".join(out) or "/"

    def _query(self, params):
        q = []
        for p in params:
            if p.get("in") == "query" and self.rnd.random() < 0.6:
                q.append((p["name"], self._param_value(p)))
        if self.rnd.random() < 0.1:
            q.append((self.rnd.choice(["bogus", "limit", "cursor", "scale", "targets"]), self.rnd.choice(HOSTILE)))
        if q and self.rnd.random() < 0.05:
            q.append(q[0])   # a repeated parameter
        return q

    # ------------------------------------------------------------ bodies
    def _image(self):
        ctype, data = self.rnd.choice(self.images)
        if self.rnd.random() < 0.35:
            data = mutate(self.rnd, data)
        return ctype, data

    def _json_value(self, schema, depth=0):
        s = self.spec.resolve(schema or {})
        if self.rnd.random() < 0.15 or depth > 3:
            return self.rnd.choice(JSON_HOSTILE)
        if "oneOf" in s or "anyOf" in s:
            return self._json_value(self.rnd.choice(s.get("oneOf") or s.get("anyOf")), depth + 1)
        t = s.get("type")
        if isinstance(t, list):
            t = self.rnd.choice(t)
            s = dict(s, type=t)
        if t == "object" or "properties" in s:
            return self._json_object(s, depth + 1)
        if t == "array":
            return [self._json_value(s.get("items"), depth + 1) for _ in range(self.rnd.randint(0, 3))]
        if s.get("contentEncoding") == "base64" or s.get("format") == "byte":
            return base64.b64encode(self._image()[1]).decode()
        v = self._schema_value(s)
        if t == "integer":
            return int(v)
        if t == "number":
            return float(v)
        if t == "boolean":
            return v in ("true", "1")
        return v

    def _json_object(self, s, depth):
        obj = {}
        for name, sub in (s.get("properties") or {}).items():
            if name in ("image", "images") or self.rnd.random() < 0.6:
                if name == "image":
                    obj[name] = base64.b64encode(self._image()[1]).decode() if self.rnd.random() < 0.85 \
                        else self.rnd.choice(JSON_HOSTILE)
                else:
                    obj[name] = self._json_value(sub, depth)
        if self.rnd.random() < 0.1:
            obj["unexpected_field"] = self.rnd.choice(JSON_HOSTILE)
        return obj

    def _multipart(self, schema):
        s = self.spec.resolve(schema or {})
        parts = []
        for _ in range(self.rnd.choice([1, 1, 1, 2, 3])):
            ctype, data = self._image()
            parts.append(("file", data, "cutout" + self.rnd.choice([".png", ".fits", ".jpg", ""]), ctype))
        for name, sub in (s.get("properties") or {}).items():
            if name != "file" and self.rnd.random() < 0.4:
                v = self._schema_value(sub) if self.rnd.random() < 0.7 else self.rnd.choice(HOSTILE)
                parts.insert(self.rnd.randrange(len(parts) + 1), (name, v, None, None))
        if self.rnd.random() < 0.05:
            parts.append(("surplus", b"\x00" * 10, "x.bin", "application/octet-stream"))
        return multipart(parts)

    def _v2_infer_body(self):
        """An Open Inference Protocol request that is right in shape for a
        32-px model most of the time, with one thing wrong now and then."""
        n, S = self.rnd.choice([1, 1, 2, 3]), self.rnd.choice([32, 32, 32, 64, 16])
        shape = [n, 3, S, S]
        data = [round(self.rnd.random(), 4) for _ in range(n * 3 * S * S)]
        inp = {"name": "input", "shape": shape, "datatype": "FP32", "data": data}
        req = {"inputs": [inp]}
        if self.rnd.random() < 0.3:
            req["inputs"].append({"name": "coords", "shape": [n, 2], "datatype": "FP32",
                                  "data": [self.rnd.uniform(-10, 370), self.rnd.uniform(-100, 100)] * n})
        if self.rnd.random() < 0.3:
            req["outputs"] = [{"name": self.rnd.choice(["logits", "probabilities", "redshift", "bogus"])}]
        if self.rnd.random() < 0.1:
            inp["data"] = [data[i * 3 * S * S:(i + 1) * 3 * S * S] for i in range(n)]   # nested per row
        if self.rnd.random() < 0.35:
            k = self.rnd.randrange(7)
            if k == 0:
                inp["shape"] = self.rnd.choice([[n, S, S, 3], [n, 3, S], [0, 3, S, S], [-1, 3, S, S], [n, 3, S, S, 1]])
            elif k == 1:
                inp["datatype"] = self.rnd.choice(["INT8", "FP64", "fp32", "", 5])
            elif k == 2:
                inp["data"] = inp["data"][:-1]
            elif k == 3:
                inp["data"][self.rnd.randrange(len(inp["data"]))] = self.rnd.choice(JSON_HOSTILE)
            elif k == 4:
                inp["name"] = self.rnd.choice(["INPUT", "", "coords", "x"])
            elif k == 5:
                req["inputs"].append(dict(inp))
            else:
                return json.dumps(req).replace("0.", "NaN", 1).encode()   # not JSON: NaN is no number
        return json.dumps(req).encode()

    def _body(self, op):
        if op.get("operationId", "").startswith("v2Infer") and self.rnd.random() < 0.6:
            return self._v2_infer_body(), "application/json"
        rb = self.spec.resolve(op.get("requestBody") or {})
        content = rb.get("content") or {}
        if not content or self.rnd.random() < 0.03:
            return None, None
        mtype = self.rnd.choice(sorted(content))
        schema = content[mtype].get("schema")
        if mtype == "application/json":
            r = self.rnd.random()
            if r < 0.8:
                body = json.dumps(self._json_value(schema)).encode()
            elif r < 0.9:
                body = mutate(self.rnd, json.dumps(self._json_value(schema)).encode())
            else:
                body = self.rnd.choice([b"", b"{", b"[1,2", b'{"image":', b"\xff\xfe", b"nul", b'"x"'])
            return body, mtype
        if mtype == "multipart/form-data":
            body, ctype = self._multipart(schema)
            if self.rnd.random() < 0.1:
                body = mutate(self.rnd, body)
            return body, ctype
        ctype, data = self._image()
        # The declared type is usually the data's, sometimes another one of the operation's.
        return data, (ctype if ctype in content and self.rnd.random() < 0.8 else mtype)

    # ------------------------------------------------------------ one request
    def next_request(self):
        method, tmpl = self.rnd.choice(self.ops)
        item = self.spec.resolve(self.spec.doc["paths"][tmpl])
        op = self.spec.resolve(item[method.lower()])
        params = [self.spec.resolve(p) for p in item.get("parameters", []) + op.get("parameters", [])]
        if self.rnd.random() < 0.03:
            method = self.rnd.choice(["PUT", "DELETE", "PATCH", "OPTIONS", "GET", "POST"])
        req = {"method": method, "path": self._path(tmpl, params), "query": self._query(params),
               "headers": {}, "body": None}
        r = self.rnd.random()
        if r < 0.88:
            req["headers"]["Authorization"] = f"Bearer {API_KEY}"
        elif r < 0.94:
            req["headers"]["Authorization"] = self.rnd.choice(["Bearer wrong", "Basic xyz", "Bearer ", "bearer " + API_KEY])
        if method in ("POST", "PUT", "PATCH"):
            body, ctype = self._body(op)
            req["body"] = body
            if ctype and self.rnd.random() < 0.97:
                req["headers"]["Content-Type"] = ctype
        return req

    def send(self, req):
        url = request_url(self.base, req)
        try:
            resp = self.session.request(req["method"], url, data=req["body"], headers=req["headers"],
                                        timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as e:
            raise FuzzFailure(f"no answer: {e!r}", req) from None
        self.sent += 1
        self.statuses[resp.status_code] += 1
        if 200 <= resp.status_code < 300:
            self.ok_ops[f"{req['method']} {self.spec.match(req['path'])}"] += 1
        if resp.status_code == 500:
            raise FuzzFailure(f"500 from {req['method']} {url}: {resp.text[:500]}", req)
        try:
            body = self.spec.check(resp)
        except AssertionError as e:
            raise FuzzFailure(str(e), req) from None
        self._harvest(body)
        return resp

    def _harvest(self, body):
        """Ids and names of the answer, for later requests' path parameters."""
        if not isinstance(body, (dict, list)):
            return
        stack = [body]
        while stack:
            v = stack.pop()
            if isinstance(v, list):
                stack.extend(v[:20])
            elif isinstance(v, dict):
                for k, x in v.items():
                    if isinstance(x, (dict, list)):
                        stack.append(x)
                    elif k in ("id", "object_id", "run_id", "name") and isinstance(x, (str, int)):
                        lst = self.pool.setdefault(k, [])
                        if str(x) not in lst:
                            lst.append(str(x))
                            del lst[:-50]
                    elif k in ("target", "class_name", "predicted_class") and isinstance(x, (str, int)):
                        if str(x) not in self.pool["target"]:
                            self.pool["target"].append(str(x))

    def healthy(self):
        try:
            r = requests.get(self.base + "/healthz", timeout=self.timeout)
        except requests.RequestException as e:
            raise FuzzFailure(f"/healthz did not answer after {self.sent} requests: {e!r}", {}) from None
        if r.status_code != 200:
            raise FuzzFailure(f"/healthz answered {r.status_code} after {self.sent} requests", {})

    def campaign(self, seconds, health_every=20, stop=None):
        """Sends requests until seconds pass (or stop, a threading.Event, is
        set by another client's failure)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (stop and stop.is_set()):
            self.send(self.next_request())
            if self.sent % health_every == 0:
                self.healthy()
        self.healthy()
        return self.sent


def parallel_campaign(spec_factory, base_url, seed, seconds, clients):
    """clients fuzzers (seeds seed, seed+1, ...) against one server at once,
    each on its own connection: the stores, caches and model queues see
    concurrent, interleaved traffic. Returns the fuzzers; raises the first
    FuzzFailure (with .client, its index) after stopping the others."""
    images = corpus_images()
    fuzzers = [HttpFuzzer(spec_factory(), base_url, seed + i, images) for i in range(clients)]
    stop, failures = threading.Event(), []

    def run(i):
        try:
            fuzzers[i].campaign(seconds, stop=stop)
        except FuzzFailure as e:
            e.client = i
            failures.append(e)
            stop.set()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    return fuzzers


def request_url(base_url, req):
    """The URL of a generated (or saved) request."""
    query = req.get("query")
    return base_url + req["path"] + ("?" + urllib.parse.urlencode(query) if query else "")


def describe(req, limit=600):
    """The failing request as text (body shortened), for the failure message."""
    body = req.get("body")
    shown = None if body is None else (body[:limit] + (b"..." if len(body) > limit else b""))
    return json.dumps({"method": req.get("method"), "path": req.get("path"), "query": req.get("query"),
                       "headers": req.get("headers"), "body_len": None if body is None else len(body),
                       "body_head": None if shown is None else shown.decode("latin-1")}, indent=1)


def save(req, path):
    """The failing request to path (JSON, body in base64) for `reproduce`."""
    rec = dict(req)
    rec["body"] = None if req.get("body") is None else base64.b64encode(req["body"]).decode()
    with open(path, "w") as f:
        json.dump(rec, f, indent=1)


def reproduce(path, base_url):
    """Sends a saved request again; returns (status, body text)."""
    with open(path) as f:
        req = json.load(f)
    if req.get("body") is not None:
        req["body"] = base64.b64decode(req["body"])
    r = requests.request(req["method"], request_url(base_url, req), data=req["body"], headers=req["headers"],
                         timeout=60)
    return r.status_code, r.text
