/*
 * gx_server_util.c — the pure helpers of galaxyd's HTTP layer (contract in
 * gx_server.h): the route table, static-path resolution, the mapping from a
 * gx_status to an HTTP status and error code, request ids, API keys and
 * JSON error bodies. Nothing here touches libmicrohttpd, so the unit tests
 * cover every branch without a socket.
 */
#include "gx_server.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <jansson.h>

/* ------------------------------------------------------------ routes */

typedef struct srv_route_def {
    const char *pat;           /* "/v1/objects/{object_id}": {x} matches one segment */
    unsigned    methods;
    gx_route_id id;
    unsigned    flags;
} srv_route_def;

#define RD (GX_M_GET | GX_M_HEAD)
/* One table, so the OpenAPI file, the 405 Allow header and the tests agree
 * on what exists. Versioned KServe paths map to the same handlers (the
 * version must be the served one). */
static const srv_route_def srv_routes[] = {
    { "/healthz",            RD,        GX_RT_HEALTHZ,     0 },
    { "/readyz",             RD,        GX_RT_READYZ,      0 },
    { "/metrics",            RD,        GX_RT_METRICS,     0 },
    { "/v1/models",          RD,        GX_RT_MODELS,      GX_RF_AUTH_READ },
    { "/v1/classify",        GX_M_POST, GX_RT_CLASSIFY,    GX_RF_AUTH_WRITE | GX_RF_BODY },
    { "/v1/classify/batch",  GX_M_POST, GX_RT_BATCH,       GX_RF_AUTH_WRITE | GX_RF_BODY },
    { "/v1/objects/{object_id}", RD,    GX_RT_OBJECT,      GX_RF_AUTH_READ },
    { "/v1/predictions",     RD,        GX_RT_PREDICTIONS, GX_RF_AUTH_READ },
    { "/v1/admin/reload",    GX_M_POST, GX_RT_RELOAD,      GX_RF_AUTH_WRITE },
    { "/v1/runs",            RD,        GX_RT_RUNS,        GX_RF_AUTH_READ },
    { "/v1/runs/{run_id}",   RD,        GX_RT_RUN,         GX_RF_AUTH_READ },
    { "/v1/runs/{run_id}/metrics", RD,  GX_RT_RUN_METRICS, GX_RF_AUTH_READ },
    { "/v1/runs/{run_id}/checkpoints", RD, GX_RT_RUN_CHECKPOINTS, GX_RF_AUTH_READ },
    { "/v1/runs/{run_id}/confusion", RD, GX_RT_RUN_CONFUSION, GX_RF_AUTH_READ },
    { "/v1/reports/{kind}",  RD,        GX_RT_REPORT,      GX_RF_AUTH_READ },
    { "/v1/anomaly",         GX_M_POST, GX_RT_ANOMALY,     GX_RF_AUTH_WRITE | GX_RF_BODY },
    { "/v1/anomaly/batch",   GX_M_POST, GX_RT_ANOMALY_BATCH, GX_RF_AUTH_WRITE | GX_RF_BODY },
    { "/v1/anomalies",       RD,        GX_RT_ANOMALIES,   GX_RF_AUTH_READ },
    { "/v1/anomalies/{object_id}", RD,  GX_RT_ANOMALY_OBJECT, GX_RF_AUTH_READ },
    /* Object ids hold no '/' (gx_parse_ident), so this three-segment path
     * never meets the two-segment one above, whatever the id ("thumb.png"
     * alone is an id there). */
    { "/v1/anomalies/{object_id}/thumb.png", RD, GX_RT_ANOMALY_THUMB, GX_RF_AUTH_READ },
    { "/v1/counterfactuals", GX_M_POST, GX_RT_CF,         GX_RF_AUTH_WRITE | GX_RF_BODY },
    { "/v1/counterfactuals/{id}", RD,   GX_RT_CF_GET,      GX_RF_AUTH_READ },
    { "/v1/counterfactuals/{id}/{file}", RD, GX_RT_CF_FILE, GX_RF_AUTH_READ },
    { "/v1/counterfactuals/{id}/{target}/overlay.png", RD, GX_RT_CF_OVERLAY, GX_RF_AUTH_READ },
    { "/v1/counterfactuals/{id}/{target}/diff.png", RD, GX_RT_CF_DIFF, GX_RF_AUTH_READ },
    { "/v1/counterfactual.png", GX_M_POST, GX_RT_CF_PNG,   GX_RF_AUTH_WRITE | GX_RF_BODY },
    { "/v1/generate.png",    RD,        GX_RT_GENERATE,    GX_RF_AUTH_READ },
    { "/v1/morphology",      GX_M_POST, GX_RT_MORPH,       GX_RF_AUTH_WRITE | GX_RF_BODY },
    { "/v2",                 RD,        GX_RT_V2_SERVER,   GX_RF_V2 | GX_RF_AUTH_READ },
    { "/v2/health/live",     RD,        GX_RT_V2_LIVE,     GX_RF_V2 },
    { "/v2/health/ready",    RD,        GX_RT_V2_READY,    GX_RF_V2 },
    { "/v2/models/{name}",   RD,        GX_RT_V2_MODEL,    GX_RF_V2 | GX_RF_AUTH_READ },
    { "/v2/models/{name}/versions/{version}", RD, GX_RT_V2_MODEL, GX_RF_V2 | GX_RF_AUTH_READ },
    { "/v2/models/{name}/ready", RD,    GX_RT_V2_MODEL_READY, GX_RF_V2 | GX_RF_AUTH_READ },
    { "/v2/models/{name}/versions/{version}/ready", RD, GX_RT_V2_MODEL_READY,
      GX_RF_V2 | GX_RF_AUTH_READ },
    { "/v2/models/{name}/infer", GX_M_POST, GX_RT_V2_INFER,
      GX_RF_V2 | GX_RF_AUTH_WRITE | GX_RF_BODY },
    { "/v2/models/{name}/versions/{version}/infer", GX_M_POST, GX_RT_V2_INFER,
      GX_RF_V2 | GX_RF_AUTH_WRITE | GX_RF_BODY },
};
#undef RD

unsigned gx_server_method_bit(const char *m) {
    static const struct { const char *name; unsigned bit; } t[] = {
        { "GET", GX_M_GET }, { "HEAD", GX_M_HEAD }, { "POST", GX_M_POST }, { "PUT", GX_M_PUT },
        { "DELETE", GX_M_DELETE }, { "OPTIONS", GX_M_OPTIONS }, { "PATCH", GX_M_PATCH },
    };
    for (size_t i = 0; m && i < sizeof t / sizeof t[0]; i++)
        if (strcmp(m, t[i].name) == 0) return t[i].bit;
    return GX_M_OTHER;
}

/* Segment-wise match of path (without query, one trailing '/' dropped)
 * against pat; {x} captures a non-empty segment of < GX_ROUTE_PARAM_MAX
 * bytes. */
static int srv_pattern_match(const char *pat, const char *path, size_t path_n, gx_route_match *m) {
    const char *p = pat, *s = path, *end = path + path_n;
    int np = 0;
    while (*p && s < end) {
        if (*p != '/' || *s != '/') return 0;
        p++, s++;
        const char *pe = strchr(p, '/'), *se = memchr(s, '/', (size_t)(end - s));
        size_t pl = pe ? (size_t)(pe - p) : strlen(p), sl = se ? (size_t)(se - s) : (size_t)(end - s);
        if (pl > 1 && p[0] == '{') {
            if (sl == 0 || sl >= GX_ROUTE_PARAM_MAX || np >= GX_ROUTE_MAX_PARAMS) return 0;
            if (m) { memcpy(m->params[np], s, sl); m->params[np][sl] = 0; }
            np++;
        } else if (pl != sl || memcmp(p, s, pl) != 0) {
            return 0;
        }
        p += pl, s += sl;
    }
    if (*p || s != end) return 0;
    if (m) m->n_params = np;
    return 1;
}

static int srv_is_api_path(const char *path) {
    return strncmp(path, "/v1/", 4) == 0 || strcmp(path, "/v1") == 0 ||
           strncmp(path, "/v2/", 4) == 0 || strcmp(path, "/v2") == 0;
}

int gx_server_route(const char *method, const char *path, gx_route_match *m) {
    memset(m, 0, sizeof *m);
    m->name = "unmatched";
    size_t n = strlen(path);
    if (n > 1 && path[n - 1] == '/') n--;   /* "/v1/models/" is "/v1/models" */
    unsigned bit = gx_server_method_bit(method), allowed = 0;
    if (strncmp(path, "/v2", 3) == 0) m->flags = GX_RF_V2;
    for (size_t i = 0; i < sizeof srv_routes / sizeof srv_routes[0]; i++) {
        const srv_route_def *r = &srv_routes[i];
        gx_route_match tmp;
        if (!srv_pattern_match(r->pat, path, n, &tmp)) continue;
        allowed |= r->methods;
        if ((r->methods & bit) || bit == GX_M_OPTIONS) {
            m->id = r->id, m->name = r->pat, m->flags = r->flags, m->n_params = tmp.n_params;
            memcpy(m->params, tmp.params, sizeof m->params);
        }
    }
    m->methods = allowed ? (allowed | GX_M_OPTIONS) : 0;
    if (m->id != GX_RT_NONE) return 200;
    if (allowed) return 405;
    if (path[0] == '/' && !srv_is_api_path(path)) {
        m->id = GX_RT_STATIC, m->name = "static", m->flags = 0;
        m->methods = GX_M_GET | GX_M_HEAD | GX_M_OPTIONS;
        if (bit & m->methods) return 200;
        m->id = GX_RT_NONE;
        return 405;
    }
    return 404;
}

void gx_server_allow(unsigned methods, char *buf, size_t n) {
    static const struct { unsigned bit; const char *name; } t[] = {
        { GX_M_GET, "GET" }, { GX_M_HEAD, "HEAD" }, { GX_M_POST, "POST" }, { GX_M_PUT, "PUT" },
        { GX_M_DELETE, "DELETE" }, { GX_M_PATCH, "PATCH" }, { GX_M_OPTIONS, "OPTIONS" },
    };
    size_t k = 0;
    if (n) buf[0] = 0;
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (!(methods & t[i].bit)) continue;
        int w = snprintf(buf + k, n > k ? n - k : 0, "%s%s", k ? ", " : "", t[i].name);
        if (w < 0 || (size_t)w >= (n > k ? n - k : 0)) return;
        k += (size_t)w;
    }
}

/* ------------------------------------------------------------ static files */

/* Refuses what must never reach the file system: "..", "." and hidden
 * segments, backslashes, control bytes. Percent-decoding already happened
 * (libmicrohttpd decodes the path), so "%2e%2e" arrives here as "..". */
static int srv_static_path_ok(const char *path) {
    if (path[0] != '/' || strlen(path) > 1024) return 0;
    for (const char *c = path; *c; c++)
        if (*c == '\\' || (unsigned char)*c < 0x20 || *c == 0x7f) return 0;
    for (const char *seg = path; seg; seg = strchr(seg + 1, '/'))
        if (seg[1] == '.') return 0;
    return 1;
}

/* realpath(cand) must be a regular file strictly inside root. */
static int srv_inside_regular(const char *root, const char *cand, char *out, size_t n) {
    char real[PATH_MAX];
    if (!realpath(cand, real)) return 404;
    size_t rl = strlen(root);
    if (strncmp(real, root, rl) != 0 || real[rl] != '/') return 404;
    struct stat st;
    if (stat(real, &st) != 0) return 404;
    if (S_ISDIR(st.st_mode)) return 301;    /* caller looks for index.html */
    if (!S_ISREG(st.st_mode) || strlen(real) >= n) return 404;
    strcpy(out, real);
    return 200;
}

int gx_server_static_resolve(const char *web_root, const char *path, char *out, size_t n) {
    if (!web_root || !web_root[0] || !srv_static_path_ok(path)) return 404;
    char cand[PATH_MAX];
    size_t pl = strlen(path);
    const char *idx = (path[pl - 1] == '/') ? "index.html" : "";
    if (snprintf(cand, sizeof cand, "%s%s%s", web_root, path, idx) >= (int)sizeof cand) return 404;
    int st = srv_inside_regular(web_root, cand, out, n);
    if (st != 301) return st;
    /* A directory (including the root itself, which srv_inside_regular
     * refuses as "not strictly inside"): its index.html, never a listing. */
    if (snprintf(cand, sizeof cand, "%s%s/index.html", web_root, path) >= (int)sizeof cand)
        return 404;
    st = srv_inside_regular(web_root, cand, out, n);
    return st == 200 ? 200 : 404;
}

const char *gx_server_mime(const char *path) {
    static const struct { const char *ext, *type; } t[] = {
        { "html", "text/html; charset=utf-8" }, { "htm", "text/html; charset=utf-8" },
        { "css", "text/css; charset=utf-8" }, { "js", "text/javascript; charset=utf-8" },
        { "mjs", "text/javascript; charset=utf-8" }, { "json", "application/json" },
        { "map", "application/json" }, { "svg", "image/svg+xml" }, { "png", "image/png" },
        { "jpg", "image/jpeg" }, { "jpeg", "image/jpeg" }, { "gif", "image/gif" },
        { "ico", "image/x-icon" }, { "webp", "image/webp" }, { "txt", "text/plain; charset=utf-8" },
        { "yaml", "application/yaml" }, { "yml", "application/yaml" }, { "wasm", "application/wasm" },
        { "woff", "font/woff" }, { "woff2", "font/woff2" }, { "fits", "application/fits" },
    };
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (dot && (!slash || dot > slash))
        for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
            if (strcasecmp(dot + 1, t[i].ext) == 0) return t[i].type;
    return "application/octet-stream";
}

/* ------------------------------------------------------------ errors */

int gx_server_status_map(gx_status s, gx_srv_stage stage, const char **code) {
    const char *c = "internal";
    int st = 500;
    switch (stage) {
    case GX_STAGE_PARSE:
        if (s == GX_ERR_NOMEM) st = 413, c = "payload_too_large";
        else if (s == GX_ERR_NOTFOUND) st = 404, c = "not_found";
        else if (s == GX_ERR_UNSUPPORTED) st = 415, c = "unsupported_media_type";
        else st = 400, c = "bad_field";
        break;
    case GX_STAGE_DECODE:
        if (s == GX_ERR_NOMEM) st = 413, c = "payload_too_large";
        else if (s == GX_ERR_FORMAT || s == GX_ERR_UNSUPPORTED || s == GX_ERR_INVALID ||
                 s == GX_ERR_SHAPE || s == GX_ERR_IO) st = 422, c = "undecodable_image";
        break;
    case GX_STAGE_SUBMIT:
    case GX_STAGE_JOB:
        if (s == GX_ERR_BUSY) st = 503, c = "queue_full";
        else if (s == GX_ERR_CLOSED) st = 503, c = "unavailable";
        else if (s == GX_ERR_TIMEOUT) st = 504, c = "timeout";
        break;
    case GX_STAGE_STORE:
        if (s == GX_ERR_NOTFOUND) st = 404, c = "not_found";
        else if (s == GX_ERR_INVALID || s == GX_ERR_FORMAT) st = 400, c = "bad_field";
        break;
    }
    if (code) *code = c;
    return st;
}

/* Copies msg replacing control bytes and every non-ASCII byte with '?', so
 * json_string never refuses it (messages quote client input, which may be
 * any bytes). */
static void srv_ascii(const char *in, char *out, size_t n) {
    size_t k = 0;
    for (; in && *in && k + 1 < n; in++)
        out[k++] = ((unsigned char)*in < 0x20 || (unsigned char)*in >= 0x7f) ? '?' : *in;
    if (n) out[k] = 0;
}

char *gx_server_error_json(const char *code, const char *message) {
    char c[64], m[1024];
    srv_ascii(code, c, sizeof c);
    srv_ascii(message && message[0] ? message : "error", m, sizeof m);
    json_t *o = json_pack("{s:{s:s,s:s}}", "error", "code", c, "message", m);
    char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return txt;
}

char *gx_server_v2_error_json(const char *message) {
    char m[1024];
    srv_ascii(message && message[0] ? message : "error", m, sizeof m);
    json_t *o = json_pack("{s:s}", "error", m);
    char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return txt;
}

/* ------------------------------------------------------------ request ids */

int gx_server_request_id_ok(const char *s) {
    size_t n = 0;
    for (; s && s[n]; n++)
        if (!(isalnum((unsigned char)s[n]) || s[n] == '.' || s[n] == '_' || s[n] == '-') || n >= 64)
            return 0;
    return n >= 1;
}

void gx_server_request_id_new(uint64_t seed, uint64_t counter, char out[17]) {
    /* splitmix64's finaliser is a bijection, and seed + counter*odd is one
     * in counter: distinct counters give distinct ids for one server. */
    uint64_t z = seed + counter * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    snprintf(out, 17, "%016llx", (unsigned long long)z);
}

/* ------------------------------------------------------------ auth */

int gx_server_key_equal(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b), n = la > lb ? la : lb;
    unsigned d = (unsigned)(la ^ lb);
    /* Every byte up to the longer length is compared, whatever differs
     * first: the time says nothing about where the guess went wrong. */
    for (size_t i = 0; i < n; i++) {
        unsigned char ca = i < la ? (unsigned char)a[i] : 0, cb = i < lb ? (unsigned char)b[i] : 0;
        d |= (unsigned)(ca ^ cb);
    }
    return d == 0 && la > 0;
}

const char *gx_server_key_from_headers(const char *authorization, const char *x_api_key) {
    if (authorization && strncasecmp(authorization, "Bearer ", 7) == 0) {
        const char *k = authorization + 7;
        while (*k == ' ') k++;
        if (*k) return k;
    }
    if (x_api_key && *x_api_key) return x_api_key;
    return NULL;
}

void gx_server_json_escape(const char *in, char *out, size_t n) {
    size_t k = 0;
    for (; in && *in; in++) {
        unsigned char c = (unsigned char)*in;
        char tmp[8];
        if (c == '"' || c == '\\') snprintf(tmp, sizeof tmp, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f) snprintf(tmp, sizeof tmp, "\\u%04x", c);
        else tmp[0] = (char)c, tmp[1] = 0;
        size_t tl = strlen(tmp);
        if (k + tl + 1 > n) break;
        memcpy(out + k, tmp, tl);
        k += tl;
    }
    if (n) out[k] = 0;
}

/* Percent-escapes are decoded one level, as libmicrohttpd decodes them;
 * "%2500" is the text "%00", not a NUL, and a malformed escape is text. */
int gx_server_target_has_ctl(const char *t, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned v = (unsigned char)t[i];
        if (v == '%' && i + 2 < n && isxdigit((unsigned char)t[i + 1]) && isxdigit((unsigned char)t[i + 2])) {
            char hex[3] = { t[i + 1], t[i + 2], 0 };
            v = (unsigned)strtoul(hex, NULL, 16);
            i += 2;
        }
        if (v < 0x20 || v == 0x7f) return 1;
    }
    return 0;
}
