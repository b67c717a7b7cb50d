/*
 * test_server.c — galaxyd's HTTP layer (daemon/gx_server*.c): the pure
 * helpers (route table, 405 Allow lists, static-path resolution and
 * traversal refusal, status mapping, request ids, API keys, JSON error
 * bodies, option checks), then the real server in process: started on an
 * ephemeral port with a tiny checkpoint and spoken to over a raw socket
 * (GET /healthz, POST /v1/classify whose answer must equal the model's own
 * prediction for the same bytes, storing and reading back an object), and
 * refused start-up on a corrupt checkpoint.
 */
#include "gx_test.h"
#include "gx_server.h"
#include "gx_serve_model.h"
#include "gx_http_parse.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

/* From test_serve_model.c. */
int tserve_write_good(const char *path, uint64_t seed, int size);
int tserve_mkdtemp(char *dir, size_t cap);
void tserve_rmtree(const char *dir);

/* ------------------------------------------------------------ routing */

GX_TEST(server_route_table) {
    gx_route_match m;
    CHECK(gx_server_route("GET", "/healthz", &m) == 200 && m.id == GX_RT_HEALTHZ);
    CHECK(gx_server_route("HEAD", "/metrics", &m) == 200 && m.id == GX_RT_METRICS);
    CHECK(gx_server_route("POST", "/v1/classify", &m) == 200 && m.id == GX_RT_CLASSIFY);
    CHECK(m.flags & GX_RF_AUTH_WRITE);
    CHECK(m.flags & GX_RF_BODY);
    CHECK(gx_server_route("POST", "/v1/classify/batch", &m) == 200 && m.id == GX_RT_BATCH);
    CHECK(gx_server_route("GET", "/v1/models/", &m) == 200 && m.id == GX_RT_MODELS);   /* one trailing / */
    CHECK(m.flags & GX_RF_AUTH_READ);
    CHECK(gx_server_route("GET", "/v1/objects/NGC_1300", &m) == 200 && m.id == GX_RT_OBJECT);
    CHECK(m.n_params == 1 && strcmp(m.params[0], "NGC_1300") == 0);
    CHECK(strcmp(m.name, "/v1/objects/{object_id}") == 0);
    CHECK(gx_server_route("POST", "/v2/models/wm/versions/abc/infer", &m) == 200 && m.id == GX_RT_V2_INFER);
    CHECK(m.n_params == 2 && !strcmp(m.params[0], "wm") && !strcmp(m.params[1], "abc"));
    CHECK(m.flags & GX_RF_V2);
    CHECK(gx_server_route("GET", "/v2/models/wm/ready", &m) == 200 && m.id == GX_RT_V2_MODEL_READY);
    CHECK(gx_server_route("GET", "/v2", &m) == 200 && m.id == GX_RT_V2_SERVER);
    /* Wrong method on an existing path: 405 and the methods for Allow. */
    CHECK(gx_server_route("POST", "/healthz", &m) == 405);
    CHECK(m.methods & GX_M_GET);
    CHECK(!(m.methods & GX_M_POST));
    CHECK(gx_server_route("GET", "/v1/classify", &m) == 405 && (m.methods & GX_M_POST));
    CHECK(gx_server_route("DELETE", "/v2/models/wm/infer", &m) == 405 && (m.flags & GX_RF_V2));
    /* OPTIONS matches every existing path. */
    CHECK(gx_server_route("OPTIONS", "/v1/classify", &m) == 200 && (m.methods & GX_M_OPTIONS));
    /* API paths that do not exist are 404 (never static files). */
    CHECK(gx_server_route("GET", "/v1/nothing", &m) == 404 && m.id == GX_RT_NONE);
    CHECK(gx_server_route("GET", "/v1/objects/", &m) == 404);          /* empty {object_id} */
    CHECK(gx_server_route("GET", "/v1/objects/a/b", &m) == 404);
    CHECK(gx_server_route("GET", "/v2/nothing", &m) == 404 && (m.flags & GX_RF_V2));
    char longp[400] = "/v1/objects/";
    memset(longp + strlen(longp), 'a', 300);
    CHECK(gx_server_route("GET", longp, &m) == 404);                   /* param over the limit */
    /* Everything else is a static file, GET/HEAD only. */
    CHECK(gx_server_route("GET", "/", &m) == 200 && m.id == GX_RT_STATIC);
    CHECK(gx_server_route("GET", "/css/app.css", &m) == 200 && m.id == GX_RT_STATIC);
    CHECK(gx_server_route("POST", "/index.html", &m) == 405 && (m.methods & GX_M_GET));
    CHECK(gx_server_route("GET", "/v1x", &m) == 200 && m.id == GX_RT_STATIC);
}

GX_TEST(server_allow_and_methods) {
    char b[64];
    gx_server_allow(GX_M_GET | GX_M_HEAD | GX_M_OPTIONS, b, sizeof b);
    CHECK(strcmp(b, "GET, HEAD, OPTIONS") == 0);
    gx_server_allow(GX_M_POST, b, sizeof b);
    CHECK(strcmp(b, "POST") == 0);
    gx_server_allow(GX_M_GET | GX_M_POST, b, 8);    /* truncation stays a valid string */
    CHECK(strlen(b) < 8);
    CHECK(gx_server_method_bit("GET") == GX_M_GET);
    CHECK(gx_server_method_bit("BREW") == GX_M_OTHER);
    CHECK(gx_server_method_bit("get") == GX_M_OTHER);     /* methods are case-sensitive */
}

/* ------------------------------------------------------------ static files */

static void ts_write(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) { fputs(text, f); fclose(f); }
}

GX_TEST(server_static_resolve_refuses_escapes) {
    char dir[64], web[128], root[PATH_MAX], p[PATH_MAX], out[PATH_MAX];
    CHECK(tserve_mkdtemp(dir, sizeof dir));
    snprintf(web, sizeof web, "%s/web", dir);
    mkdir(web, 0755);
    snprintf(p, sizeof p, "%s/index.html", web); ts_write(p, "<html>");
    snprintf(p, sizeof p, "%s/.env", web); ts_write(p, "SECRET=1");
    snprintf(p, sizeof p, "%s/secret.txt", dir); ts_write(p, "secret");
    snprintf(p, sizeof p, "%s/sub", web); mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/sub/a.css", web); ts_write(p, "a{}");
    snprintf(p, sizeof p, "%s/docs", web); mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/docs/index.html", web); ts_write(p, "docs");
    snprintf(p, sizeof p, "%s/out", web);
    CHECK(symlink("../secret.txt", p) == 0);                 /* leads outside */
    snprintf(p, sizeof p, "%s/in", web);
    CHECK(symlink("index.html", p) == 0);                    /* stays inside */
    CHECK(realpath(web, root) != NULL);

    CHECK(gx_server_static_resolve(root, "/", out, sizeof out) == 200);
    CHECK(strstr(out, "/web/index.html") != NULL);
    CHECK(gx_server_static_resolve(root, "/sub/a.css", out, sizeof out) == 200);
    CHECK(gx_server_static_resolve(root, "/docs", out, sizeof out) == 200);   /* its index.html */
    CHECK(strstr(out, "/docs/index.html") != NULL);
    CHECK(gx_server_static_resolve(root, "/docs/", out, sizeof out) == 200);
    CHECK(gx_server_static_resolve(root, "/sub", out, sizeof out) == 404);    /* no listing */
    CHECK(gx_server_static_resolve(root, "/sub/", out, sizeof out) == 404);
    CHECK(gx_server_static_resolve(root, "/in", out, sizeof out) == 200);
    CHECK(gx_server_static_resolve(root, "/out", out, sizeof out) == 404);    /* symlink out */
    CHECK(gx_server_static_resolve(root, "/../secret.txt", out, sizeof out) == 404);
    CHECK(gx_server_static_resolve(root, "/sub/../../secret.txt", out, sizeof out) == 404);
    CHECK(gx_server_static_resolve(root, "/sub/..", out, sizeof out) == 404);
    CHECK(gx_server_static_resolve(root, "/.env", out, sizeof out) == 404);   /* hidden */
    CHECK(gx_server_static_resolve(root, "/sub\\..\\..\\secret.txt", out, sizeof out) == 404);
    CHECK(gx_server_static_resolve(root, "/missing.js", out, sizeof out) == 404);
    CHECK(gx_server_static_resolve(root, "relative", out, sizeof out) == 404);
    CHECK(gx_server_static_resolve("", "/", out, sizeof out) == 404);          /* static disabled */
    CHECK(gx_server_static_resolve(root, "/index.html", out, 4) == 404);       /* no room */

    CHECK(strncmp(gx_server_mime("a/b/index.html"), "text/html", 9) == 0);
    CHECK(strncmp(gx_server_mime("x.CSS"), "text/css", 8) == 0);
    CHECK(strcmp(gx_server_mime("x.svg"), "image/svg+xml") == 0);
    CHECK(strcmp(gx_server_mime("dir.d/noext"), "application/octet-stream") == 0);
    tserve_rmtree(dir);
}

GX_TEST(server_target_control_chars) {
#define TCTL(t) gx_server_target_has_ctl(t, strlen(t))
    CHECK(TCTL("/index.html%00.js"));
    CHECK(TCTL("/a%0a") && TCTL("/a%0D") && TCTL("/a%1f") && TCTL("/a%7F"));
    CHECK(TCTL("/a\x01" "b") && TCTL("/a\tb"));           /* raw control bytes */
    CHECK(!TCTL("/index.html") && !TCTL("/a%20b") && !TCTL("/%2e%2e/x"));
    CHECK(!TCTL("/%2500"));                                 /* decodes once, to the text "%00" */
    CHECK(!TCTL("/a%0") && !TCTL("/a%") && !TCTL("/a%zz")); /* malformed escapes are text */
    CHECK(!TCTL("/%c3%a9"));                                /* UTF-8 is not control */
    CHECK(gx_server_target_has_ctl("/a%00", 3) == 0);      /* only n bytes are read */
    CHECK(gx_server_target_has_ctl("/a%00", 5) == 1);
    CHECK(gx_server_target_has_ctl("", 0) == 0);
#undef TCTL
}

/* ------------------------------------------------------------ errors, ids, keys */

GX_TEST(server_status_mapping) {
    const char *c;
    CHECK(gx_server_status_map(GX_ERR_INVALID, GX_STAGE_PARSE, &c) == 400 && !strcmp(c, "bad_field"));
    CHECK(gx_server_status_map(GX_ERR_FORMAT, GX_STAGE_PARSE, &c) == 400);
    CHECK(gx_server_status_map(GX_ERR_NOMEM, GX_STAGE_DECODE, &c) == 413 && !strcmp(c, "payload_too_large"));
    CHECK(gx_server_status_map(GX_ERR_FORMAT, GX_STAGE_DECODE, &c) == 422 && !strcmp(c, "undecodable_image"));
    CHECK(gx_server_status_map(GX_ERR_UNSUPPORTED, GX_STAGE_DECODE, &c) == 422);
    CHECK(gx_server_status_map(GX_ERR_BUSY, GX_STAGE_SUBMIT, &c) == 503 && !strcmp(c, "queue_full"));
    CHECK(gx_server_status_map(GX_ERR_CLOSED, GX_STAGE_SUBMIT, &c) == 503 && !strcmp(c, "unavailable"));
    CHECK(gx_server_status_map(GX_ERR_TIMEOUT, GX_STAGE_JOB, &c) == 504 && !strcmp(c, "timeout"));
    CHECK(gx_server_status_map(GX_ERR_SHAPE, GX_STAGE_JOB, &c) == 500 && !strcmp(c, "internal"));
    CHECK(gx_server_status_map(GX_ERR_NOTFOUND, GX_STAGE_STORE, &c) == 404 && !strcmp(c, "not_found"));
    CHECK(gx_server_status_map(GX_ERR_INVALID, GX_STAGE_STORE, &c) == 400);
    CHECK(gx_server_status_map(GX_ERR_IO, GX_STAGE_STORE, &c) == 500);
    /* No client mistake maps to 500 at the parse or decode stage. */
    for (int s = GX_ERR_NOMEM; s <= GX_ERR_CLOSED; s++) {
        CHECK(gx_server_status_map((gx_status)s, GX_STAGE_PARSE, NULL) < 500);
        if (s != GX_ERR_NOTFOUND && s != GX_ERR_BUSY && s != GX_ERR_TIMEOUT && s != GX_ERR_CLOSED)
            CHECK_MSG(gx_server_status_map((gx_status)s, GX_STAGE_DECODE, NULL) < 500, "decode %d", s);
    }
}

GX_TEST(server_error_bodies) {
    char *b = gx_server_error_json("bad_field", "field 'ra': \"x\" \xff\x01 bad");
    CHECK(b != NULL);
    json_error_t je;
    json_t *o = b ? json_loads(b, 0, &je) : NULL;
    CHECK_MSG(o != NULL, "not JSON: %s", b ? b : "(null)");
    json_t *e = json_object_get(o, "error");
    CHECK(json_object_size(o) == 1 && json_object_size(e) == 2);
    CHECK(strcmp(json_string_value(json_object_get(e, "code")), "bad_field") == 0);
    const char *msg = json_string_value(json_object_get(e, "message"));
    CHECK(msg && strstr(msg, "field 'ra': \"x\"") == msg);
    CHECK(msg && strchr(msg, '\xff') == NULL);                /* invalid UTF-8 replaced */
    json_decref(o);
    free(b);
    b = gx_server_v2_error_json("");
    o = b ? json_loads(b, 0, &je) : NULL;
    CHECK(json_is_string(json_object_get(o, "error")) && json_object_size(o) == 1);
    CHECK(strlen(json_string_value(json_object_get(o, "error"))) > 0);    /* never empty */
    json_decref(o);
    free(b);
    char esc[64];
    gx_server_json_escape("/a\"b\\\n\x80", esc, sizeof esc);
    CHECK(strcmp(esc, "/a\\\"b\\\\\\u000a\\u0080") == 0);
    gx_server_json_escape("abcdefgh", esc, 4);
    CHECK(strcmp(esc, "abc") == 0);
}

GX_TEST(server_request_ids) {
    CHECK(gx_server_request_id_ok("abc-123_X.y"));
    CHECK(!gx_server_request_id_ok(""));
    CHECK(!gx_server_request_id_ok("a b"));
    CHECK(!gx_server_request_id_ok("a\r\nX-Evil: 1"));
    char longid[80];
    memset(longid, 'a', 65);
    longid[65] = 0;
    CHECK(!gx_server_request_id_ok(longid));
    longid[64] = 0;
    CHECK(gx_server_request_id_ok(longid));
    /* 1000 ids of one seed: 16 hex digits, all distinct, valid as client ids. */
    enum { N = 1000 };
    static char ids[N][17];
    int dup = 0, bad = 0;
    for (int i = 0; i < N; i++) {
        gx_server_request_id_new(0x1234, (uint64_t)i, ids[i]);
        bad += strlen(ids[i]) != 16 || strspn(ids[i], "0123456789abcdef") != 16;
        for (int j = 0; j < i; j++) dup += strcmp(ids[i], ids[j]) == 0;
    }
    CHECK(bad == 0);
    CHECK(dup == 0);
    char a[17], b[17];
    gx_server_request_id_new(1, 5, a);
    gx_server_request_id_new(2, 5, b);
    CHECK(strcmp(a, b) != 0);                  /* the seed matters */
}

GX_TEST(server_api_keys) {
    CHECK(gx_server_key_equal("s3cret-key", "s3cret-key"));
    CHECK(!gx_server_key_equal("s3cret-key", "s3cret-kez"));
    CHECK(!gx_server_key_equal("s3cret-key", "s3cret-key2"));
    CHECK(!gx_server_key_equal("s3cret-key", "s3cret"));
    CHECK(!gx_server_key_equal("", ""));        /* an empty key never matches */
    CHECK(strcmp(gx_server_key_from_headers("Bearer abc", NULL), "abc") == 0);
    CHECK(strcmp(gx_server_key_from_headers("bearer   abc", NULL), "abc") == 0);
    CHECK(strcmp(gx_server_key_from_headers("Basic xyz", "k2"), "k2") == 0);
    CHECK(strcmp(gx_server_key_from_headers(NULL, "k2"), "k2") == 0);
    CHECK(gx_server_key_from_headers("Bearer ", "") == NULL);
    CHECK(gx_server_key_from_headers(NULL, NULL) == NULL);
}

GX_TEST(server_opts_check) {
    gx_server_opts o;
    gx_err err;
    gx_server_opts_default(&o);
    CHECK(gx_server_opts_check(&o, &err) == GX_OK);
    CHECK(strcmp(o.host, "127.0.0.1") == 0);             /* loopback unless told otherwise */
    CHECK(o.max_body == (size_t)16 << 20 && o.batch.max_batch == 32 && o.batch.max_queue == 256);
    o.port = 70000;
    CHECK(gx_server_opts_check(&o, &err) == GX_ERR_INVALID && strstr(err.msg, "--port"));
    gx_server_opts_default(&o);
    o.threads = 0;
    CHECK(gx_server_opts_check(&o, &err) == GX_ERR_INVALID && strstr(err.msg, "--threads"));
    gx_server_opts_default(&o);
    o.max_batch_parts = 0;
    CHECK(gx_server_opts_check(&o, &err) == GX_ERR_INVALID && strstr(err.msg, "--max-batch-parts"));
    gx_server_opts_default(&o);
    o.deadline_ms = 0;
    CHECK(gx_server_opts_check(&o, &err) == GX_ERR_INVALID && strstr(err.msg, "--deadline-ms"));
}

/* ------------------------------------------------------------ in process */

typedef struct ts_resp {
    int status;
    char head[4096];
    char *body;        /* malloc'd, NUL-terminated */
    size_t body_n;
} ts_resp;

/* One request over a fresh loopback connection (Connection: close), the
 * whole answer read until EOF. */
static int ts_http(int port, const char *head, const void *body, size_t n, ts_resp *r) {
    memset(r, 0, sizeof *r);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    struct timeval tv = { 20, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { close(fd); return 0; }
    int ok = send(fd, head, strlen(head), MSG_NOSIGNAL) == (ssize_t)strlen(head);
    if (ok && n) ok = send(fd, body, n, MSG_NOSIGNAL) == (ssize_t)n;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (ssize_t k; ok && buf && (k = recv(fd, buf + len, cap - len - 1, 0)) > 0;) {
        len += (size_t)k;
        if (len + 1 == cap) { char *nb = realloc(buf, cap *= 2); if (!nb) { ok = 0; break; } buf = nb; }
    }
    close(fd);
    if (!ok || !buf) { free(buf); return 0; }
    buf[len] = 0;
    char *sep = strstr(buf, "\r\n\r\n");
    if (!sep || sscanf(buf, "HTTP/1.1 %d", &r->status) != 1) { free(buf); return 0; }
    size_t hl = (size_t)(sep - buf);
    snprintf(r->head, sizeof r->head, "%.*s", (int)(hl < sizeof r->head ? hl : sizeof r->head - 1), buf);
    r->body_n = len - hl - 4;
    r->body = malloc(r->body_n + 1);
    if (r->body) memcpy(r->body, sep + 4, r->body_n + 1);
    free(buf);
    return r->body != NULL;
}

/* A 3-band PNG cutout of w x h with a smooth seeded pattern. */
static uint8_t *ts_png(int w, int h, int seed, size_t *n) {
    float *x = malloc((size_t)3 * w * h * sizeof *x);
    if (!x) return NULL;
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < h; i++)
            for (int j = 0; j < w; j++)
                x[(c * h + i) * w + j] = 0.5f + 0.4f * sinf(0.3f * (float)(i + seed) + 0.2f * (float)(j * (c + 1)));
    uint8_t *png = NULL;
    gx_err err;
    if (gx_png_encode(x, 3, h, w, &png, n, &err) != GX_OK) png = NULL;
    free(x);
    return png;
}

/* The model's own answer for the same bytes (decode, preprocess, predict). */
static int ts_reference(const char *ck, const uint8_t *png, size_t n, float *probs, int *K) {
    gx_serve_model *m = NULL;
    gx_err err;
    if (gx_serve_model_load(&m, ck, NULL, &err) != GX_OK) return 0;
    const gx_serve_info *in = gx_serve_model_info(m);
    int S = in->input_size;
    *K = in->n_classes;
    float *x = malloc((size_t)3 * S * S * sizeof *x), lg[GX_SERVE_MAX_CLASSES], z;
    float nan2[2] = { NAN, NAN };
    gx_serve_out out = { lg, probs, &z, NULL };
    int ok = x && gx_serve_prepare(in, png, n, NULL, x, NULL, &err) == GX_OK &&
             gx_serve_model_predict(m, x, S, nan2, 1, &out, &err) == GX_OK;
    free(x);
    gx_serve_model_free(m);
    return ok;
}

/* Status of one request (-1 when no answer); *close_seen: the answer
 * carried Connection: close. msg_part must occur in the body when given. */
static int ts_status(int port, const char *head, const void *body, size_t n, const char *msg_part,
                     int *close_seen) {
    ts_resp r;
    if (!ts_http(port, head, body, n, &r)) return -1;
    int st = r.status;
    if (msg_part && (!r.body || !strstr(r.body, msg_part))) st = -2;
    if (close_seen) *close_seen = strstr(r.head, "Connection: close") != NULL;
    free(r.body);
    return st;
}

/* HTTP framing, request-target and JSON type errors, and too many parts;
 * obj-7 is stored by the caller. */
static void ts_protocol_errors(gx_test_state *T, int port, const uint8_t *png, size_t n) {
    /* A decoded NUL would cut the path short: obj-7 exists, "obj-7%00x" is not it. */
    CHECK(ts_status(port, "GET /index.html%00.js HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                    NULL, 0, NULL, NULL) == 404);
    CHECK(ts_status(port, "GET /v1/objects/obj-7%00x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                    NULL, 0, NULL, NULL) == 404);
    CHECK(ts_status(port, "GET /v1/predictions?survey=a%00b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                    NULL, 0, "query string", NULL) == 400);
    CHECK(ts_status(port, "GET /healthz HTTP/1.1\r\n\r\n", NULL, 0, "'Host'", NULL) == 400);
    CHECK(ts_status(port, "GET /healthz HTTP/1.0\r\n\r\n", NULL, 0, NULL, NULL) == 200);
    int closed = 0;
    CHECK(ts_status(port, "POST /v1/classify HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
                    "Content-Length: 3\r\nContent-Length: 30\r\n\r\nabc", NULL, 0, "'Content-Length'",
                    &closed) == 400);
    CHECK(closed);
    /* JSON fields have the types of api/openapi.yaml. */
    char *b64 = gx_base64_encode(png, n);
    size_t cap = (b64 ? strlen(b64) : 0) + 128;
    char *json = malloc(cap), head[256];
    CHECK(b64 && json);
    if (!b64 || !json) { free(b64); free(json); return; }
    static const struct { const char *extra, *field; int status; } jc[] = {
        { "\"ra\": \"12\"", "'ra'", 400 }, { "\"dec\": null", "'dec'", 400 },
        { "\"survey\": 5", "'survey'", 400 }, { "\"object_id\": [\"a\"]", "'object_id'", 400 },
        { "\"ra\": 12, \"dec\": -3.5", NULL, 200 },
    };
    for (size_t i = 0; i < sizeof jc / sizeof jc[0]; i++) {
        snprintf(json, cap, "{\"image\": \"%s\", %s}", b64, jc[i].extra);
        snprintf(head, sizeof head, "POST /v1/classify HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                 "Content-Length: %zu\r\nConnection: close\r\n\r\n", strlen(json));
        int st = ts_status(port, head, json, strlen(json), jc[i].field, NULL);
        CHECK_MSG(st == jc[i].status, "JSON %s: %d", jc[i].extra, st);
    }
    free(b64);
    /* More multipart parts than a classify takes: a size limit, 413. */
    size_t k = 0;
    for (int i = 0; i < 20; i++)
        k += (size_t)snprintf(json + k, cap - k, "--XyZ\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\nv\r\n", i);
    k += (size_t)snprintf(json + k, cap - k, "--XyZ--\r\n");
    snprintf(head, sizeof head, "POST /v1/classify HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; "
             "boundary=XyZ\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", k);
    CHECK(k < cap && ts_status(port, head, json, k, "payload_too_large", NULL) == 413);
    free(json);
}

GX_TEST(server_in_process_healthz_classify_store) {
    char dir[64], models[128], ck[192], db[128], head[512];
    CHECK(tserve_mkdtemp(dir, sizeof dir));
    snprintf(models, sizeof models, "%s/models", dir);
    mkdir(models, 0755);
    snprintf(ck, sizeof ck, "%s/wm.safetensors", models);
    snprintf(db, sizeof db, "%s/g.sqlite", dir);
    CHECK(tserve_write_good(ck, 11, 16));
    gx_server_opts o;
    gx_server_opts_default(&o);
    o.port = 0, o.models_dir = models, o.db_path = db, o.web_dir = NULL, o.threads = 2;
    o.access_log = "/dev/null";
    gx_server *s = NULL;
    gx_err err;
    gx_status st = gx_server_start(&s, &o, &err);
    CHECK_MSG(st == GX_OK, "start: %s", err.msg);
    if (st != GX_OK) { tserve_rmtree(dir); return; }
    int port = gx_server_port(s);
    CHECK(port > 0);

    ts_resp r;
    CHECK(ts_http(port, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", NULL, 0, &r));
    CHECK(r.status == 200);
    CHECK(r.body && strcmp(r.body, "{\"status\":\"ok\"}") == 0);
    CHECK(strstr(r.head, "X-Request-Id: ") != NULL);
    free(r.body);

    /* A client's sane request id comes back. */
    CHECK(ts_http(port, "GET /readyz HTTP/1.1\r\nHost: t\r\nX-Request-Id: my-id.1\r\nConnection: close\r\n\r\n",
                  NULL, 0, &r));
    CHECK(r.status == 200 && strstr(r.head, "X-Request-Id: my-id.1") != NULL);
    free(r.body);

    size_t n = 0;
    uint8_t *png = ts_png(24, 20, 3, &n);
    CHECK(png != NULL);
    float want[GX_SERVE_MAX_CLASSES];
    int K = 0;
    CHECK(png && ts_reference(ck, png, n, want, &K));
    snprintf(head, sizeof head, "POST /v1/classify?object_id=obj-7&ra=150.5&dec=-2.25 HTTP/1.1\r\nHost: t\r\n"
             "Content-Type: image/png\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", n);
    CHECK(png && ts_http(port, head, png, n, &r));
    CHECK_MSG(r.status == 200, "classify: %d %s", r.status, r.body ? r.body : "");
    json_t *j = r.body ? json_loads(r.body, 0, NULL) : NULL;
    CHECK(j != NULL);
    json_t *probs = json_object_get(j, "probs");
    CHECK((int)json_array_size(probs) == K && K > 0);
    /* Bit for bit: the served probabilities are the model's own floats. */
    int same = 1;
    for (int k = 0; k < K; k++) same &= (float)json_number_value(json_array_get(probs, (size_t)k)) == want[k];
    CHECK(same);
    CHECK(json_is_true(json_object_get(j, "stored")));
    CHECK(strcmp(json_string_value(json_object_get(j, "model")), "wm") == 0);
    CHECK(json_integer_value(json_object_get(json_object_get(j, "timing"), "batch_size")) >= 1);
    json_decref(j);
    free(r.body);

    /* What was stored reads back. */
    CHECK(ts_http(port, "GET /v1/objects/obj-7 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", NULL, 0, &r));
    CHECK(r.status == 200);
    j = r.body ? json_loads(r.body, 0, NULL) : NULL;
    CHECK(json_array_size(json_object_get(j, "predictions")) == 1);
    CHECK_NEAR(json_number_value(json_object_get(j, "ra")), 150.5, 1e-9);
    json_decref(j);
    free(r.body);

    /* Errors are JSON with the right status, and the server stays up. */
    CHECK(ts_http(port, "POST /v1/classify HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n"
                  "Content-Length: 3\r\nConnection: close\r\n\r\nabc", NULL, 0, &r));
    CHECK(r.status == 415 && r.body && strstr(r.body, "image/png"));
    free(r.body);
    CHECK(ts_http(port, "POST /v1/classify HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
                  "Content-Length: 999999999999\r\nConnection: close\r\n\r\n", NULL, 0, &r));
    CHECK(r.status == 413);
    free(r.body);
    CHECK(ts_http(port, "DELETE /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", NULL, 0, &r));
    CHECK(r.status == 405 && strstr(r.head, "Allow: GET, HEAD, OPTIONS"));
    free(r.body);
    CHECK(ts_http(port, "GET /v2/models/none HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", NULL, 0, &r));
    CHECK(r.status == 404 && r.body && strncmp(r.body, "{\"error\":\"", 10) == 0);
    free(r.body);
    CHECK(ts_http(port, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", NULL, 0, &r));
    CHECK(r.status == 200);
    free(r.body);

    ts_protocol_errors(T, port, png, n);
    free(png);
    CHECK(gx_server_stop(s) == GX_OK);   /* every request answered: a full stop */
    tserve_rmtree(dir);
}

static double ts_now(void) { return (double)gx_batcher_now_ns() / 1e9; }

/* Seconds until the server closes a client that sends head and then one
 * byte every 200 ms (never idle long enough for an idle timeout); -1 when
 * still open after limit_s. */
static double ts_trickle(int port, const char *head, double limit_s) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    double t0 = ts_now(), t = -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 && send(fd, head, strlen(head), MSG_NOSIGNAL) > 0) {
        while (ts_now() - t0 < limit_s) {
            struct pollfd p = { fd, POLLIN, 0 };
            char buf[512];
            if (poll(&p, 1, 200) > 0 && recv(fd, buf, sizeof buf, 0) <= 0) { t = ts_now() - t0; break; }
            if (send(fd, "a", 1, MSG_NOSIGNAL) != 1) { t = ts_now() - t0; break; }
        }
    }
    close(fd);
    return t;
}

GX_TEST(server_drops_slow_clients_not_queued_ones) {
    char dir[64], models[128], ck[192], db[128], head[512];
    CHECK(tserve_mkdtemp(dir, sizeof dir));
    snprintf(models, sizeof models, "%s/models", dir);
    mkdir(models, 0755);
    snprintf(ck, sizeof ck, "%s/wm.safetensors", models);
    snprintf(db, sizeof db, "%s/g.sqlite", dir);
    CHECK(tserve_write_good(ck, 12, 16));
    gx_server_opts o;
    gx_server_opts_default(&o);
    o.port = 0, o.models_dir = models, o.db_path = db, o.web_dir = NULL, o.threads = 2;
    o.access_log = "/dev/null";
    o.conn_timeout_s = 1;
    /* A job waits 1.5 s for company: longer than the connection timeout. */
    o.batch.max_batch = 64, o.batch.batch_delay_us = 1500000;
    gx_server *s = NULL;
    gx_err err;
    gx_status st = gx_server_start(&s, &o, &err);
    CHECK_MSG(st == GX_OK, "start: %s", err.msg);
    if (st != GX_OK) { tserve_rmtree(dir); return; }
    int port = gx_server_port(s);
    /* Header bytes, body bytes: either way the request is never complete. */
    double t = ts_trickle(port, "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ", 6);
    CHECK_MSG(t >= 0.9 && t < 3, "header trickle dropped after %.2f s", t);
    t = ts_trickle(port, "POST /v1/classify HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
                   "Content-Length: 1000\r\n\r\n", 6);
    CHECK_MSG(t >= 0.9 && t < 3, "body trickle dropped after %.2f s", t);
    /* A request received in full and suspended in the queue is not cut. */
    size_t n = 0;
    uint8_t *png = ts_png(16, 16, 5, &n);
    CHECK(png != NULL);
    snprintf(head, sizeof head, "POST /v1/classify HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
             "Content-Length: %zu\r\nConnection: close\r\n\r\n", n);
    double t0 = ts_now();
    CHECK(png && ts_status(port, head, png, n, "\"probs\"", NULL) == 200);
    CHECK(ts_now() - t0 > 1.3);
    free(png);
    CHECK(gx_server_stop(s) == GX_OK);   /* every request answered: a full stop */
    tserve_rmtree(dir);
}

GX_TEST(server_refuses_corrupt_checkpoint) {
    char dir[64], models[128], p[192], db[128];
    CHECK(tserve_mkdtemp(dir, sizeof dir));
    snprintf(models, sizeof models, "%s/models", dir);
    mkdir(models, 0755);
    snprintf(p, sizeof p, "%s/broken.safetensors", models);
    ts_write(p, "this is not a safetensors file at all");
    snprintf(db, sizeof db, "%s/g.sqlite", dir);
    gx_server_opts o;
    gx_server_opts_default(&o);
    o.port = 0, o.models_dir = models, o.db_path = db, o.web_dir = NULL;
    gx_server *s = NULL;
    gx_err err = { { 0 } };
    CHECK(gx_server_start(&s, &o, &err) != GX_OK);
    CHECK(s == NULL);
    CHECK_MSG(strstr(err.msg, "broken.safetensors") != NULL, "message: %s", err.msg);
    tserve_rmtree(dir);
}
