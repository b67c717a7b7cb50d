"""Checks galaxyd responses against api/openapi.yaml (OpenAPI 3.1).

    spec = OpenAPI()                       # loads api/openapi.yaml
    body = spec.check(resp)                # a requests.Response; returns JSON or text
    body = spec.check_raw("GET", "/x", 404, headers, raw_bytes)   # raw-socket answers

For every response:
  * a request target with a control character (%00-%1F, %7F) must have been
    answered before routing: 404 for one in the path, 400 in the query;
  * the path is matched against the path templates (a literal segment wins over
    a template; `{param}` never spans a '/'; a path outside /v1 and /v2 is the
    static-file operation /{file} whatever its depth);
  * the method must be an operation of that path. A method the path does not
    have is only allowed to be answered 405 with an Allow header (the API's
    stated convention), and a path that matches no template only 404;
  * the status must be documented for the operation (no `default` exists in
    this API, so an undocumented status is a failure);
  * the Content-Type must be one of the documented media types, and a JSON
    body is validated with jsonschema's Draft202012Validator against the
    schema, every $ref resolved against the document;
  * the headers the response object documents (Allow, Retry-After,
    WWW-Authenticate, X-Request-Id) are present and match their schemas, and
    every response carries X-Request-Id (a convention of the whole API).

Raises AssertionError with the request, status and reason on any mismatch.
"""
import json
import os
import re
import urllib.parse

import jsonschema
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC_PATH = os.path.join(ROOT, "api", "openapi.yaml")
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def control_char_status(target):
    """404 when the request target's path holds a control character
    (%00-%1F, %7F after one level of percent-decoding), 400 when its query
    does, else 0: galaxyd answers those before routing, on any path and for
    any method (a convention of the document's header)."""
    path, _, query = target.partition("?")

    def has_ctl(text):
        return any(b < 0x20 or b == 0x7f for b in urllib.parse.unquote_to_bytes(text))
    return 404 if has_ctl(path) else 400 if has_ctl(query) else 0


class OpenAPI:
    def __init__(self, path=SPEC_PATH):
        with open(path, encoding="utf-8") as f:
            self.doc = yaml.safe_load(f)
        assert str(self.doc.get("openapi", "")).startswith("3.1"), "api/openapi.yaml is not OpenAPI 3.1"
        self.components = self.doc.get("components", {})
        self.routes = []   # (literal segments, regex, template), most literal first
        for tmpl in self.doc["paths"]:
            # A {param} segment is 1..255 bytes (galaxyd's GX_ROUTE_PARAM_MAX):
            # a longer one matches no route (the document's header says so).
            rx = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]{1,255}", re.escape(tmpl)) + "$"
            self.routes.append((tmpl.count("{"), re.compile(rx), tmpl))
        self.routes.sort(key=lambda r: (r[0], -len(r[2])))
        self._validators = {}
        self.seen = set()   # (METHOD, template, status) of every checked response

    # ---------------------------------------------------------- lookup
    def resolve(self, node):
        """Follows local $refs ('#/a/b/c') until node is not a reference."""
        seen = 0
        while isinstance(node, dict) and "$ref" in node and len(node) == 1:
            ref = node["$ref"]
            assert ref.startswith("#/"), f"non-local $ref {ref}"
            node = self.doc
            for part in ref[2:].split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
            seen += 1
            assert seen < 32, f"$ref loop at {ref}"
        return node

    def match(self, path):
        """The path template of a request path (query stripped), or None.
        The path is percent-decoded first, as galaxyd routes it: "%2F" in a
        segment is a '/' that splits it."""
        # (bytes as latin-1 characters, so that {1,255} counts bytes)
        path = urllib.parse.unquote_to_bytes(path.split("?", 1)[0]).decode("latin-1")
        for _, rx, tmpl in self.routes:
            if rx.match(path):
                return tmpl
        # galaxyd's router drops one trailing '/' (a convention of the
        # document's header): "/v1/models/" is "/v1/models".
        if len(path) > 1 and path.endswith("/"):
            for _, rx, tmpl in self.routes:
                if tmpl != "/{file}" and rx.match(path[:-1]):
                    return tmpl
        # Static files may sit in sub-folders of the web root: every path
        # outside the API prefixes belongs to the static-file operation.
        if "/{file}" in self.doc["paths"] and not re.match(r"^/(v1|v2)(/|$)", path):
            return "/{file}"
        return None

    def operation(self, method, path):
        tmpl = self.match(path)
        if tmpl is None:
            return None, None
        item = self.resolve(self.doc["paths"][tmpl])
        return tmpl, item.get(method.lower())

    def operations(self):
        """Every (METHOD, template) the document declares."""
        out = []
        for tmpl, item in self.doc["paths"].items():
            for m in METHODS:
                if m in self.resolve(item):
                    out.append((m.upper(), tmpl))
        return out

    def validator(self, schema):
        """A Draft 2020-12 validator for schema whose $refs resolve against the
        whole document (the schema becomes the root; components ride along)."""
        key = json.dumps(schema, sort_keys=True)
        v = self._validators.get(key)
        if v is None:
            root = dict(schema)
            root["components"] = self.components
            jsonschema.Draft202012Validator.check_schema(root)
            v = jsonschema.Draft202012Validator(root)
            self._validators[key] = v
        return v

    def schema(self, name):
        return {"$ref": f"#/components/schemas/{name}"}

    def validate(self, instance, schema, where="body"):
        errors = sorted(self.validator(schema).iter_errors(instance), key=lambda e: list(e.path))
        if errors:
            msgs = "; ".join(f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors[:5])
            raise AssertionError(f"{where} does not match the schema: {msgs}\n{str(instance)[:800]}")

    # ---------------------------------------------------------- checks
    def check(self, resp, method=None, path=None):
        """Validates a requests.Response (method/path default to its request)."""
        method = method or resp.request.method
        path = path or resp.request.path_url
        return self.check_raw(method, path, resp.status_code, resp.headers, resp.content)

    def check_raw(self, method, path, status, headers, body):
        h = {k.lower(): v for k, v in headers.items()}
        where = f"{method} {path} -> {status}"
        rid = h.get("x-request-id")
        assert rid and REQUEST_ID_RE.match(rid), f"{where}: missing or bad X-Request-Id ({rid!r})"
        is_v2 = path.startswith("/v2")
        ctl = control_char_status(path)
        if ctl:
            assert status == ctl, (f"{where}: a control character in the {'path' if ctl == 404 else 'query'} "
                                   f"is answered {ctl} before routing, whatever the method")
            return self._check_error_body(where, h, body, is_v2)
        tmpl, op = self.operation(method, path)
        if tmpl is None:
            assert status == 404, f"{where}: path matches no route of api/openapi.yaml, so only 404 is allowed"
            return self._check_error_body(where, h, body, is_v2)
        if op is None and method.upper() == "HEAD":
            _, op = self.operation("GET", path)
            if op is not None:   # HEAD is accepted wherever GET is: GET's statuses, no body
                assert str(status) in op["responses"], f"{where}: HEAD status not documented for GET {tmpl}"
                return None
        if op is None:
            if method.upper() == "OPTIONS":
                assert status == 204 and "allow" in h, f"{where}: OPTIONS must answer 204 with Allow"
                return None
            assert status == 405, f"{where}: {method} is not an operation of {tmpl}; only 405 is allowed"
            assert h.get("allow"), f"{where}: 405 without an Allow header"
            return self._check_error_body(where, h, body, is_v2)
        self.seen.add((method.upper(), tmpl, status))
        responses = op.get("responses", {})
        key = str(status)
        if key not in responses:
            key = f"{key[0]}XX" if f"{key[0]}XX" in responses else "default"
        assert key in responses, (f"{where}: status {status} is not documented for {method.upper()} {tmpl} "
                                  f"(documented: {sorted(responses)})")
        r = self.resolve(responses[key])
        for name, hdr in (r.get("headers") or {}).items():
            hdr = self.resolve(hdr)
            val = h.get(name.lower())
            assert val is not None, f"{where}: documented header {name} is missing"
            sch = self.resolve(hdr.get("schema", {}))
            if sch.get("type") == "integer":
                assert re.fullmatch(r"[0-9]+", val.strip()), f"{where}: header {name}={val!r} is not an integer"
                self.validate(int(val), sch, f"{where} header {name}")
            elif sch:
                self.validate(val, sch, f"{where} header {name}")
        content = r.get("content")
        if not content:
            assert not body, f"{where}: documented without a body, got {len(body)} bytes"
            return None
        ctype = h.get("content-type", "").split(";", 1)[0].strip().lower()
        media = content.get(ctype) or content.get("*/*")
        assert media is not None, f"{where}: Content-Type {ctype!r} not documented ({sorted(content)})"
        if method.upper() == "HEAD":
            return None
        if ctype == "application/json":
            try:
                data = json.loads(body)
            except ValueError as e:
                raise AssertionError(f"{where}: body is not JSON ({e}): {body[:200]!r}")
            if "schema" in media:
                self.validate(data, self.resolve(media["schema"]), where)
            return data
        if ctype.startswith("text/"):
            return body.decode("utf-8")
        return body

    def _check_error_body(self, where, h, body, is_v2):
        ctype = h.get("content-type", "").split(";", 1)[0].strip().lower()
        assert ctype == "application/json", f"{where}: error body is {ctype!r}, not JSON"
        try:
            data = json.loads(body)
        except ValueError as e:
            raise AssertionError(f"{where}: error body is not JSON ({e}): {body[:200]!r}")
        self.validate(data, self.schema("V2Error" if is_v2 else "Error"), where)
        return data
