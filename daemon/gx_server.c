/*
 * gx_server.c — galaxyd's HTTP server on libmicrohttpd: lifecycle, the
 * request state machine, responses, suspend/resume around the batchers,
 * static files, the access log and request metrics (routes live in
 * gx_server_v1.c and gx_server_v2.c; the lifecycle of a request is drawn in
 * gx_server_impl.h).
 *
 * libmicrohttpd's defaults are not ours (no connection timeout, 1020
 * connections, 32 KiB per connection), so every limit is set from the
 * options. A suspended connection never times out and a client that goes
 * away is not noticed while suspended: every job therefore carries its own
 * deadline (the batcher answers an expired job with GX_ERR_TIMEOUT without
 * computing it), and stop() waits for every accepted request to be answered
 * before it stops the daemon.
 */
#include "gx_server_impl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ options */

void gx_server_opts_default(gx_server_opts *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8080;
    o->db_path = "galaxyd.sqlite";
    o->models_dir = "models/default";
    o->web_dir = "web";
    o->threads = 4;
    o->batch = GX_BATCHER_OPTS_DEFAULT;
    o->max_body = (size_t)16 << 20;
    o->max_pixels = (int64_t)4096 * 4096;
    o->max_batch_parts = 64;
    o->max_connections = 256;
    o->conn_timeout_s = 30;
    o->max_header_bytes = 64 << 10;
    o->deadline_ms = 10000;
    o->drain_timeout_ms = -1;       /* deadline_ms + 5000 */
    o->cf_cache_mb = 64;
    o->cf_ttl_s = 3600;
}

gx_status gx_server_opts_check(const gx_server_opts *o, gx_err *err) {
    if (o->port < 0 || o->port > 65535) return gx_err_set(err, GX_ERR_INVALID, "--port: %d not in 0..65535", o->port);
    if (o->threads < 1 || o->threads > 256) return gx_err_set(err, GX_ERR_INVALID, "--threads: %d not in 1..256", o->threads);
    if (o->batch.max_batch < 1 || o->batch.max_batch > 4096)
        return gx_err_set(err, GX_ERR_INVALID, "--max-batch: %d not in 1..4096", o->batch.max_batch);
    if (o->batch.batch_delay_us < 0 || o->batch.batch_delay_us > 10000000)
        return gx_err_set(err, GX_ERR_INVALID, "--batch-delay-us: %d not in 0..10000000", o->batch.batch_delay_us);
    if (o->batch.max_queue < 1 || o->batch.max_queue > 1000000)
        return gx_err_set(err, GX_ERR_INVALID, "--max-queue: %d not in 1..1000000", o->batch.max_queue);
    if (o->max_body < 1024 || o->max_body > ((size_t)1 << 31))
        return gx_err_set(err, GX_ERR_INVALID, "--max-body: %zu not in 1024..2147483648", o->max_body);
    if (o->max_pixels < 64 || o->max_pixels > ((int64_t)1 << 30))
        return gx_err_set(err, GX_ERR_INVALID, "--max-pixels: %lld not in 64..2^30", (long long)o->max_pixels);
    if (o->max_batch_parts < 1 || o->max_batch_parts > 4096)
        return gx_err_set(err, GX_ERR_INVALID, "--max-batch-parts: %d not in 1..4096", o->max_batch_parts);
    if (o->max_connections < 1 || o->max_connections > 100000)
        return gx_err_set(err, GX_ERR_INVALID, "--max-connections: %d not in 1..100000", o->max_connections);
    if (o->conn_timeout_s < 1 || o->conn_timeout_s > 3600)
        return gx_err_set(err, GX_ERR_INVALID, "--conn-timeout: %d not in 1..3600", o->conn_timeout_s);
    if (o->max_header_bytes < 4096 || o->max_header_bytes > (1 << 24))
        return gx_err_set(err, GX_ERR_INVALID, "--max-header-bytes: %zu not in 4096..16777216", o->max_header_bytes);
    if (o->deadline_ms < 1 || o->deadline_ms > 3600000)
        return gx_err_set(err, GX_ERR_INVALID, "--deadline-ms: %d not in 1..3600000", o->deadline_ms);
    if (o->cf_cache_mb < 1 || o->cf_cache_mb > 65536)
        return gx_err_set(err, GX_ERR_INVALID, "--cf-cache-mb: %d not in 1..65536", o->cf_cache_mb);
    if (o->cf_ttl_s < 1 || o->cf_ttl_s > 30 * 86400)
        return gx_err_set(err, GX_ERR_INVALID, "--cf-ttl-s: %d not in 1..2592000", o->cf_ttl_s);
    if (!o->host || !o->host[0]) return gx_err_set(err, GX_ERR_INVALID, "--host: empty");
    if (!o->models_dir || !o->models_dir[0]) return gx_err_set(err, GX_ERR_INVALID, "--models: empty");
    if (!o->db_path || !o->db_path[0]) return gx_err_set(err, GX_ERR_INVALID, "--db: empty");
    return GX_OK;
}

/* ------------------------------------------------------------ small helpers */

static int64_t srv_now_ns(void) { return gx_batcher_now_ns(); }

double srv_ms_since(int64_t t0_ns) { return (double)(srv_now_ns() - t0_ns) / 1e6; }

const char *srv_query(srv_req *r, const char *key) {
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *srv_header(srv_req *r, const char *key) {
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, key);
}

static void srv_iso_now(char *buf, size_t n) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char b[32];
    strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, n, "%.20s.%03dZ", b, (int)(ts.tv_nsec / 1000000));
}

/* ------------------------------------------------------------ responses */

static int srv_add_headers(struct MHD_Response *resp, const char *const *h) {
    for (; h && h[0]; h += 2)
        if (h[1] && MHD_add_response_header(resp, h[0], h[1]) != MHD_YES) return 0;
    return 1;
}

enum MHD_Result srv_respond(srv_req *r, int status, const char *ctype, char *body, size_t len,
                            const char *const *extra) {
    gx_server *s = r->srv;
    if (r->answered) { free(body); return MHD_YES; }
    struct MHD_Response *resp = body ?
        MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE) :
        MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp) { free(body); return MHD_NO; }
    const char *common[] = {
        "X-Request-Id", r->id,
        "Content-Type", ctype,
        "Cache-Control", r->rm.id == GX_RT_STATIC ? NULL : "no-store",
        "Connection", atomic_load(&s->draining) || r->close_conn ? "close" : NULL,
        "Access-Control-Allow-Origin", s->cors_origin[0] ? s->cors_origin : NULL,
        "Vary", s->cors_origin[0] ? "Origin" : NULL,
        "Access-Control-Expose-Headers",
        s->cors_origin[0] ? "X-Request-Id, Retry-After, X-Next-Cursor, Allow" : NULL,
        NULL,
    };
    int ok = srv_add_headers(resp, common) && srv_add_headers(resp, extra);
    enum MHD_Result q = ok ? MHD_queue_response(r->conn, (unsigned)status, resp) : MHD_NO;
    MHD_destroy_response(resp);
    r->answered = 1;
    r->status = status;
    r->bytes = len;
    return q;
}

enum MHD_Result srv_json(srv_req *r, int status, json_t *o) {
    char *txt = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(o);
    if (!txt) return srv_error(r, 500, "internal", "out of memory building the answer");
    size_t n = strlen(txt);
    return srv_respond(r, status, "application/json", txt, n, NULL);
}

enum MHD_Result srv_error(srv_req *r, int status, const char *code, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *body = (r->rm.flags & GX_RF_V2) ? gx_server_v2_error_json(msg)
                                          : gx_server_error_json(code, msg);
    if (!body) return MHD_NO;
    char allow[128] = "";
    gx_server_allow(r->rm.methods ? r->rm.methods : GX_M_GET | GX_M_HEAD, allow, sizeof allow);
    const char *extra[] = {
        "Allow", status == 405 ? allow : NULL,
        "Retry-After", status == 503 ? "1" : NULL,
        "WWW-Authenticate", status == 401 ? "Bearer realm=\"galaxyd\"" : NULL,
        NULL,
    };
    r->err_code = code;
    return srv_respond(r, status, "application/json", body, strlen(body), extra);
}

enum MHD_Result srv_error_status(srv_req *r, gx_status s, gx_srv_stage stage, const char *msg) {
    const char *code;
    int st = gx_server_status_map(s, stage, &code);
    return srv_error(r, st, code, "%s", msg);
}

/* ------------------------------------------------------------ jobs */

gx_status srv_alloc_items(srv_req *r, int n, gx_err *err) {
    const gx_serve_info *info = r->entry->info;
    size_t per = (size_t)3 * (size_t)info->input_size * (size_t)info->input_size;
    r->n = n;
    r->items = calloc((size_t)n, sizeof *r->items);
    r->jobs = calloc((size_t)n, sizeof *r->jobs);
    r->x = malloc((size_t)n * per * sizeof *r->x);
    if (!r->items || !r->jobs || !r->x)
        return gx_err_set(err, GX_ERR_NOMEM, "out of memory for %d images", n);
    for (int i = 0; i < n; i++) srv_fields_init(&r->items[i].f);
    return GX_OK;
}

/* The batcher's worker calls this once per job. Only the last job of the
 * request resumes the connection; the handler holds one extra count until
 * it has suspended, so a resume can never come before the suspend. */
static void srv_job_done(gx_job *job, void *user) {
    (void)job;
    srv_req *r = user;
    struct MHD_Connection *c = r->conn;   /* read before the count drops: r may go */
    if (atomic_fetch_sub(&r->pending, 1) == 1) MHD_resume_connection(c);
}

enum MHD_Result srv_submit_and_suspend(srv_req *r, srv_finish_fn finish) {
    return srv_submit_overlap_suspend(r, NULL, NULL, finish);
}

enum MHD_Result srv_submit_overlap_suspend(srv_req *r, srv_during_fn during, void *ctx, srv_finish_fn finish) {
    const gx_serve_info *info = r->entry->info;
    size_t per = (size_t)3 * (size_t)info->input_size * (size_t)info->input_size;
    int64_t deadline = srv_now_ns() + (int64_t)r->srv->o.deadline_ms * 1000000;
    atomic_store(&r->pending, 1);
    r->finish = finish;
    for (int i = 0; i < r->n; i++) {
        srv_item *it = &r->items[i];
        if (it->status) continue;
        gx_job *j = &r->jobs[i];
        j->x = r->x + (size_t)i * per;
        j->coords[0] = (float)it->f.ra;
        j->coords[1] = (float)it->f.dec;
        j->deadline_ns = deadline;
        j->done = srv_job_done;
        j->user = r;
        gx_err err = { { 0 } };
        atomic_fetch_add(&r->pending, 1);
        gx_status s = gx_batcher_submit(r->entry->batcher, j, &err);
        if (s != GX_OK) {
            atomic_fetch_sub(&r->pending, 1);
            it->status = gx_server_status_map(s, GX_STAGE_SUBMIT, &it->code);
            srv_strcpy(it->message, sizeof it->message,
                       s == GX_ERR_BUSY ? "the model's queue is full, retry later" : err.msg);
        }
    }
    /* The handler's extra count keeps done() from resuming (and finish from
     * running) until the suspend below, so during may still write to r. */
    if (during && atomic_load(&r->pending) > 1) during(r, ctx);
    if (atomic_load(&r->pending) == 1) {   /* every job failed or is already done */
        atomic_store(&r->pending, 0);
        r->finish = NULL;
        return finish(r);
    }
    MHD_suspend_connection(r->conn);
    if (atomic_fetch_sub(&r->pending, 1) == 1) MHD_resume_connection(r->conn);
    return MHD_YES;
}

/* ------------------------------------------------------------ static files */

static enum MHD_Result srv_static(srv_req *r) {
    gx_server *s = r->srv;
    char real[PATH_MAX];
    if (gx_server_static_resolve(s->web_root, r->path, real, sizeof real) != 200)
        return srv_error(r, 404, "not_found", "no such file: %s", r->path);
    int fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0) close(fd);
        return srv_error(r, 404, "not_found", "no such file: %s", r->path);
    }
    struct MHD_Response *resp = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
    if (!resp) { close(fd); return MHD_NO; }
    const char *h[] = {
        "X-Request-Id", r->id, "Content-Type", gx_server_mime(real),
        "X-Content-Type-Options", "nosniff", "Cache-Control", "no-cache",
        "Access-Control-Allow-Origin", s->cors_origin[0] ? s->cors_origin : NULL,
        "Connection", atomic_load(&s->draining) ? "close" : NULL, NULL,
    };
    srv_add_headers(resp, h);
    enum MHD_Result q = MHD_queue_response(r->conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    r->answered = 1, r->status = 200, r->bytes = (size_t)st.st_size;
    return q;
}

/* ------------------------------------------------------------ slow clients */

/* libmicrohttpd's connection timeout is an idle timeout: a client sending a
 * header byte just under it holds its connection, its memory and a slot of
 * --max-connections forever. So every connection is tracked (NOTIFY_CONNECTION)
 * with the time its current request began (the accept, or the end of the
 * previous request on a keep-alive connection), and a watchdog thread shuts
 * down the socket of one whose request is still not fully received
 * conn_timeout_s later. shutdown() only makes libmicrohttpd read EOF and
 * clean up by itself: the fd stays its own to close. libmicrohttpd sends
 * CLOSED before it closes the fd, and CLOSED unlinks the entry under
 * conn_mu, so the watchdog never touches an fd that was closed and reused.
 * A request received in full (dispatched, maybe suspended waiting for the
 * model) is not incomplete: from then on its job deadline applies. */

#define SRV_WATCHDOG_PERIOD_NS (250 * 1000000LL)

static srv_conn *srv_conn_of(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static void srv_conn_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                            enum MHD_ConnectionNotificationCode code) {
    gx_server *s = cls;
    srv_conn *cc = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        cc = ci ? calloc(1, sizeof *cc) : NULL;
        if (!cc) return;                   /* untracked: only the idle timeout applies */
        cc->fd = ci->connect_fd;
        atomic_store(&cc->began_ns, srv_now_ns());
        pthread_mutex_lock(&s->conn_mu);
        cc->next = s->conns;
        if (s->conns) s->conns->prev = cc;
        s->conns = cc;
        pthread_mutex_unlock(&s->conn_mu);
        *socket_context = cc;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && cc) {
        pthread_mutex_lock(&s->conn_mu);
        if (cc->prev) cc->prev->next = cc->next;
        else s->conns = cc->next;
        if (cc->next) cc->next->prev = cc->prev;
        pthread_mutex_unlock(&s->conn_mu);
        *socket_context = NULL;
        free(cc);
    }
}

/* Checks the raw request target (the URI log callback sees it before
 * libmicrohttpd percent-decodes it) for control characters; srv_first
 * answers what it records. Returns NULL: the request's con_cls stays NULL
 * until srv_access makes it. */
static void *srv_uri_log(void *cls, const char *uri, struct MHD_Connection *c) {
    (void)cls;
    srv_conn *cc = srv_conn_of(c);
    if (!cc || !uri) return NULL;
    const char *q = strchr(uri, '?');
    size_t np = q ? (size_t)(q - uri) : strlen(uri);
    unsigned t = (gx_server_target_has_ctl(uri, np) ? SRV_TARGET_CTL_PATH : 0) |
                 (q && gx_server_target_has_ctl(q + 1, strlen(q + 1)) ? SRV_TARGET_CTL_QUERY : 0);
    atomic_store(&cc->target, t);
    return NULL;
}

static void *srv_watchdog_main(void *arg) {
    gx_server *s = arg;
    int64_t limit = (int64_t)s->o.conn_timeout_s * 1000000000;
    pthread_mutex_lock(&s->conn_mu);
    while (!s->conn_stop) {
        int64_t now = srv_now_ns();
        for (srv_conn *cc = s->conns; cc; cc = cc->next)
            if (!cc->cut && !atomic_load(&cc->received) && now - atomic_load(&cc->began_ns) > limit) {
                shutdown(cc->fd, SHUT_RDWR);
                cc->cut = 1;
            }
        int64_t t = now + SRV_WATCHDOG_PERIOD_NS;
        struct timespec ts = { (time_t)(t / 1000000000), (long)(t % 1000000000) };
        pthread_cond_timedwait(&s->conn_cv, &s->conn_mu, &ts);
    }
    pthread_mutex_unlock(&s->conn_mu);
    return NULL;
}

/* The watchdog's lock and condition variable (on the monotonic clock that
 * srv_now_ns reads), set up before anything can fail and need srv_free. */
static gx_status srv_watchdog_init(gx_server *s, gx_err *err) {
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0) return gx_err_set(err, GX_ERR_NOMEM, "server: condattr init failed");
    int rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (rc == 0) rc = pthread_cond_init(&s->conn_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) return gx_err_set(err, GX_ERR_NOMEM, "server: cond init failed");
    if (pthread_mutex_init(&s->conn_mu, NULL) != 0) {
        pthread_cond_destroy(&s->conn_cv);
        return gx_err_set(err, GX_ERR_NOMEM, "server: mutex init failed");
    }
    return GX_OK;
}

static void srv_watchdog_stop(gx_server *s) {
    if (!s->watchdog_running) return;
    pthread_mutex_lock(&s->conn_mu);
    s->conn_stop = 1;
    pthread_cond_signal(&s->conn_cv);
    pthread_mutex_unlock(&s->conn_mu);
    pthread_join(s->watchdog, NULL);
    s->watchdog_running = 0;
}

/* ------------------------------------------------------------ the handler */

static enum MHD_Result srv_options(srv_req *r) {
    char allow[128];
    gx_server_allow(r->rm.methods, allow, sizeof allow);
    int cors = r->srv->cors_origin[0] != 0;
    const char *h[] = {
        "Allow", allow,
        "Access-Control-Allow-Methods", cors ? allow : NULL,
        "Access-Control-Allow-Headers", cors ? "Authorization, Content-Type, X-API-Key, X-Request-Id" : NULL,
        "Access-Control-Max-Age", cors ? "600" : NULL,
        NULL,
    };
    return srv_respond(r, 204, "text/plain", NULL, 0, h);
}

/* 1 when the route may run: no key configured, a route that needs none,
 * or the right key in Authorization: Bearer / X-API-Key. */
static int srv_authorized(srv_req *r) {
    gx_server *s = r->srv;
    if (!s->api_key[0]) return 1;
    unsigned need = GX_RF_AUTH_WRITE | (s->o.protect_reads ? GX_RF_AUTH_READ : 0);
    if (!(r->rm.flags & need)) return 1;
    const char *k = gx_server_key_from_headers(srv_header(r, "Authorization"), srv_header(r, "X-API-Key"));
    return k && gx_server_key_equal(k, s->api_key);
}

static srv_req *srv_req_new(gx_server *s, struct MHD_Connection *c, const char *url,
                            const char *method) {
    srv_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->srv = s;
    r->conn = c;
    r->t0_ns = srv_now_ns();
    srv_strcpy(r->method, sizeof r->method, method);
    srv_strcpy(r->path, sizeof r->path, url);
    const char *cid = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
    if (cid && gx_server_request_id_ok(cid)) srv_strcpy(r->id, sizeof r->id, cid);
    else gx_server_request_id_new(s->id_seed, atomic_fetch_add(&s->id_counter, 1), r->id);
    r->route_status = gx_server_route(method, r->path, &r->rm);
    r->cc = srv_conn_of(c);
    if (r->cc) r->target = atomic_exchange(&r->cc->target, 0);
    atomic_fetch_add(&s->inflight, 1);
    return r;
}

/* Host and Content-Length headers, counted across repeats (libmicrohttpd
 * keeps every copy but frames the body by the first Content-Length). */
typedef struct srv_hdr_scan {
    int hosts;
    const char *length;             /* the first Content-Length */
    int length_conflict;            /* another one with a different value */
} srv_hdr_scan;

static enum MHD_Result srv_hdr_scan_one(void *cls, enum MHD_ValueKind kind, const char *key,
                                        const char *value) {
    (void)kind;
    srv_hdr_scan *h = cls;
    if (!key) return MHD_YES;
    if (!value) value = "";
    if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0) h->hosts++;
    else if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (!h->length) h->length = value;
        else if (strcmp(h->length, value) != 0) h->length_conflict = 1;
    }
    return MHD_YES;
}

/* HTTP framing and target errors (RFC 9112): answered before routing. A
 * body whose length is in doubt (two different Content-Lengths, the
 * request-smuggling pattern) also closes the connection, because where
 * the next request would begin is unknowable. */
static enum MHD_Result srv_check_protocol(srv_req *r, const char *version) {
    srv_hdr_scan h = { 0, NULL, 0 };
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, srv_hdr_scan_one, &h);
    if (h.length_conflict) {
        r->close_conn = 1;
        return srv_error(r, 400, "bad_field", "header 'Content-Length': given more than once with "
                         "different values");
    }
    if (h.hosts > 1) return srv_error(r, 400, "bad_field", "header 'Host': given more than once");
    if (h.hosts == 0 && version && strcmp(version, MHD_HTTP_VERSION_1_1) == 0)
        return srv_error(r, 400, "bad_field", "header 'Host': missing (HTTP/1.1 requires it)");
    /* A decoded NUL would cut the path short ("/index.html%00.js" would
     * serve index.html) and no route, file or field holds a control
     * character, so the raw target decides (srv_uri_log). */
    if (r->target & SRV_TARGET_CTL_PATH)
        return srv_error(r, 404, "not_found", "no such path: it holds a control character");
    if (r->target & SRV_TARGET_CTL_QUERY)
        return srv_error(r, 400, "bad_field", "query string: a control character (%%00-%%1F, %%7F)");
    return MHD_YES;
}

/* The first call: everything that can be answered before reading a byte of
 * the body (an oversized body is refused from its Content-Length). */
static enum MHD_Result srv_first(srv_req *r, const char *version) {
    enum MHD_Result q = srv_check_protocol(r, version);
    if (r->answered) return q;
    if (r->route_status == 404)
        return srv_error(r, 404, "not_found", "no route for %s %s", r->method, r->path);
    if (r->route_status == 405)
        return srv_error(r, 405, "method_not_allowed", "%s is not allowed on %s", r->method, r->path);
    if (gx_server_method_bit(r->method) == GX_M_OPTIONS) return srv_options(r);
    if (!srv_authorized(r))
        return srv_error(r, 401, "unauthorized", "missing or wrong API key "
                         "(Authorization: Bearer <key> or X-API-Key: <key>)");
    const char *cl = srv_header(r, "Content-Length");
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(cl, &end, 10);
        if (errno || end == cl || v > r->srv->o.max_body)
            return srv_error(r, 413, "payload_too_large", "body of %s bytes exceeds the limit of %zu bytes",
                             cl, r->srv->o.max_body);
    }
    return MHD_YES;
}

/* Accumulates the body up to max_body; past it the rest is read and dropped
 * (libmicrohttpd cannot answer in the middle of an upload) and the request
 * gets 413 at its end. A client that keeps sending far past the limit is
 * disconnected. */
static enum MHD_Result srv_body(srv_req *r, const char *data, size_t n) {
    size_t max = r->srv->o.max_body;
    if (r->too_large || r->len + n > max || !(r->rm.flags & GX_RF_BODY)) {
        if (r->rm.flags & GX_RF_BODY) r->too_large = 1;
        free(r->body);
        r->body = NULL, r->len = r->cap = 0;
        r->discarded += n;
        return r->discarded > 4 * max + ((size_t)1 << 20) ? MHD_NO : MHD_YES;
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 64 << 10;
        while (cap < r->len + n + 1) cap *= 2;
        if (cap > max + 1) cap = max + 1;
        unsigned char *b = realloc(r->body, cap);
        if (!b) { r->too_large = 1; return MHD_YES; }
        r->body = b, r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = 0;      /* JSON and text parsers may rely on a terminator */
    return MHD_YES;
}

static enum MHD_Result srv_dispatch(srv_req *r) {
    if (r->too_large)
        return srv_error(r, 413, "payload_too_large", "body exceeds the limit of %zu bytes",
                         r->srv->o.max_body);
    if (r->rm.id == GX_RT_STATIC) return srv_static(r);
    if (r->rm.flags & GX_RF_V2) return srv_v2_dispatch(r);
    return srv_v1_dispatch(r);
}

static enum MHD_Result srv_access(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *data_size, void **con_cls) {
    srv_req *r = *con_cls;
    if (!r) {
        r = srv_req_new(cls, c, url, method);
        if (!r) return MHD_NO;
        *con_cls = r;
        return srv_first(r, version);
    }
    if (*data_size) {
        size_t n = *data_size;
        *data_size = 0;
        return r->answered ? MHD_YES : srv_body(r, data, n);
    }
    /* The request has arrived in full: from here its time is the job
     * deadline's, not the slow-client watchdog's. */
    if (r->cc) atomic_store(&r->cc->received, 1);
    if (r->answered) return MHD_YES;
    if (r->finish) {                       /* resumed: every job is done */
        srv_finish_fn f = r->finish;
        r->finish = NULL;
        return f(r);
    }
    return srv_dispatch(r);
}

/* ------------------------------------------------------------ completion */

static void srv_access_log(srv_req *r, double ms) {
    gx_server *s = r->srv;
    char t[40], path[2200], method[48];
    srv_iso_now(t, sizeof t);
    gx_server_json_escape(r->path, path, sizeof path);
    gx_server_json_escape(r->method, method, sizeof method);
    char line[3000];
    int n = snprintf(line, sizeof line,
                     "{\"time\":\"%s\",\"id\":\"%s\",\"method\":\"%s\",\"path\":\"%s\","
                     "\"route\":\"%s\",\"status\":%d,\"bytes\":%zu,\"ms\":%.3f%s%s%s}\n",
                     t, r->id, method, path, r->rm.name, r->status, r->bytes, ms,
                     r->err_code ? ",\"error\":\"" : "", r->err_code ? r->err_code : "",
                     r->err_code ? "\"" : "");
    if (n > 0) {
        /* One write per line: stdio locks the stream per call, so lines
         * from different threads never interleave. */
        fwrite(line, 1, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1, s->log);
        fflush(s->log);
    }
}

static void srv_metrics_observe(srv_req *r, double ms) {
    gx_server *s = r->srv;
    char labels[160];
    snprintf(labels, sizeof labels, "route=\"%s\",status=\"%d\"", r->rm.name, r->status);
    gx_prom_counter_add(s->prom, "galaxyd_requests_total", labels, 1);
    snprintf(labels, sizeof labels, "route=\"%s\"", r->rm.name);
    gx_prom_hist_observe(s->prom, "galaxyd_request_duration_seconds", labels, NULL, ms / 1e3);
    if (r->err_code) {
        snprintf(labels, sizeof labels, "kind=\"%s\"", r->err_code);
        gx_prom_counter_add(s->prom, "galaxyd_errors_total", labels, 1);
    }
    for (int i = 0; i < r->n; i++)
        if (r->items && r->items[i].status && r->items[i].code) {
            snprintf(labels, sizeof labels, "kind=\"%s\"", r->items[i].code);
            gx_prom_counter_add(s->prom, "galaxyd_errors_total", labels, 1);
        }
}

static void srv_req_free(srv_req *r) {
    free(r->body);
    free(r->items);
    free(r->jobs);
    free(r->x);
    free(r->aux);
    json_decref(r->doc);
    json_decref(r->extra);
    gx_registry_release(r->reg);
    free(r);
}

static void srv_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                          enum MHD_RequestTerminationCode toe) {
    (void)toe;
    gx_server *s = cls;
    srv_conn *cc = srv_conn_of(c);
    if (cc) {                              /* a keep-alive connection's next request begins */
        atomic_store(&cc->began_ns, srv_now_ns());
        atomic_store(&cc->received, 0);
    }
    srv_req *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    double ms = srv_ms_since(r->t0_ns);
    if (!r->answered) r->status = 499;     /* the client went away before an answer */
    srv_access_log(r, ms);
    srv_metrics_observe(r, ms);
    /* Jobs still queued point into r (only possible when stop() gave up
     * waiting): leaking r is the only safe choice then. */
    if (atomic_load(&r->pending) <= 0 || !r->finish) srv_req_free(r);
    atomic_fetch_sub(&s->inflight, 1);
}

/* ------------------------------------------------------------ lifecycle */

static void srv_describe_metrics(gx_prom *p) {
    gx_prom_describe(p, "galaxyd_requests_total", "counter", "HTTP requests by route and status");
    gx_prom_describe(p, "galaxyd_request_duration_seconds", "histogram",
                     "Request latency from the first byte of headers to the answer, by route");
    gx_prom_describe(p, "galaxyd_errors_total", "counter",
                     "Error answers by kind (error code), including batch parts");
    gx_prom_describe(p, "galaxyd_inflight_requests", "gauge", "Requests being handled now");
    gx_prom_describe(p, "galaxyd_models_loaded", "gauge", "Models in the current registry");
    gx_prom_describe(p, "galaxyd_reloads_total", "counter", "Model reloads by result");
    gx_prom_describe(p, "galaxyd_predictions_stored_total", "counter", "Predictions written to the database");
}

static gx_status srv_read_key(gx_server *s, const char *path, gx_err *err) {
    FILE *f = fopen(path, "r");
    if (!f) return gx_err_set(err, GX_ERR_IO, "--api-key-file %s: %s", path, strerror(errno));
    char line[512] = "";
    int ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
        line[--n] = 0;
    if (!ok || n < 8)
        return gx_err_set(err, GX_ERR_INVALID, "--api-key-file %s: the first line must hold a key of at "
                          "least 8 characters", path);
    memcpy(s->api_key, line, n + 1);
    return GX_OK;
}

/* Records each model of the current registry in served_models. */
static gx_status srv_register_models(gx_server *s, gx_err *err) {
    gx_registry *reg = gx_registry_acquire(s->models);
    gx_status st = GX_OK;
    for (int i = 0; reg && st == GX_OK && i < gx_registry_count(reg); i++) {
        int64_t id;
        st = gx_store_register_model(s->store, gx_registry_at(reg, i)->info, &id, err);
    }
    if (reg) gx_prom_gauge_set(s->prom, "galaxyd_models_loaded", "", gx_registry_count(reg));
    gx_registry_release(reg);
    return st;
}

static gx_status srv_copy_opts(gx_server *s, const gx_server_opts *o, gx_err *err) {
    s->o = *o;
    if (o->drain_timeout_ms < 0) s->o.drain_timeout_ms = o->deadline_ms + 5000;
#define SRV_COPY(dst, src, flag)                                                                   \
    do {                                                                                           \
        if ((src) && strlen(src) >= sizeof dst)                                                    \
            return gx_err_set(err, GX_ERR_INVALID, flag ": value too long");                       \
        srv_strcpy(dst, sizeof dst, src);                                                          \
    } while (0)
    SRV_COPY(s->host, o->host, "--host");
    SRV_COPY(s->db_path, o->db_path, "--db");
    SRV_COPY(s->models_dir, o->models_dir, "--models");
    SRV_COPY(s->access_log, o->access_log, "--access-log");
    SRV_COPY(s->cors_origin, o->cors_origin, "--cors-origin");
#undef SRV_COPY
    s->o.host = s->host, s->o.db_path = s->db_path, s->o.models_dir = s->models_dir;
    s->o.web_dir = NULL, s->o.access_log = NULL, s->o.cors_origin = NULL, s->o.api_key_file = NULL;
    for (const char *c = s->cors_origin; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            return gx_err_set(err, GX_ERR_INVALID, "--cors-origin: control characters");
    /* The web root as a real path, so that resolved files can be checked to
     * lie inside it; a missing directory only disables static files. */
    if (o->web_dir && o->web_dir[0] && !realpath(o->web_dir, s->web_root)) {
        fprintf(stderr, "galaxyd: --web %s: %s (static files disabled)\n", o->web_dir, strerror(errno));
        s->web_root[0] = 0;
    }
    s->limits = GX_IMAGE_LIMITS_DEFAULT;
    s->limits.max_pixels = o->max_pixels;
    s->limits.max_width = s->limits.max_height = o->max_pixels;
    return GX_OK;
}

static gx_status srv_open_parts(gx_server *s, const gx_server_opts *o, gx_err *err) {
    gx_status st = o->api_key_file ? srv_read_key(s, o->api_key_file, err) : GX_OK;
    if (st != GX_OK) return st;
    s->log = stderr;
    if (s->access_log[0]) {
        s->log = fopen(s->access_log, "a");
        if (!s->log) { s->log = stderr; return gx_err_set(err, GX_ERR_IO, "--access-log %s: %s", s->access_log, strerror(errno)); }
        s->log_owned = 1;
    }
    s->prom = gx_prom_new();
    if (!s->prom) return gx_err_set(err, GX_ERR_NOMEM, "metrics: out of memory");
    srv_describe_metrics(s->prom);
    gx_registry *reg = NULL;
    st = gx_registry_load(&reg, s->models_dir, &s->o.batch, err);
    if (st != GX_OK) return st;
    st = gx_registry_holder_new(&s->models, reg, err);
    if (st != GX_OK) { gx_registry_release(reg); return st; }
    st = gx_store_open(&s->store, s->db_path, err);
    if (st == GX_OK) st = srv_register_models(s, err);
    if (st == GX_OK) st = srv_anomaly_open(s, err);
    if (st == GX_OK) st = srv_cf_open(s, err);
    return st;
}

/* The listening address: a numeric IPv4/IPv6 address or a host name. */
static gx_status srv_resolve(const char *host, int port, struct sockaddr_storage *ss, int *v6, gx_err *err) {
    struct addrinfo hints = { 0 }, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host, ps, &hints, &ai);
    if (rc != 0 || !ai) return gx_err_set(err, GX_ERR_INVALID, "--host %s: %s", host, gai_strerror(rc));
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *v6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);
    return GX_OK;
}

static gx_status srv_start_mhd(gx_server *s, gx_err *err) {
    struct sockaddr_storage ss;
    int v6 = 0;
    gx_status st = srv_resolve(s->host, s->o.port, &ss, &v6, err);
    if (st != GX_OK) return st;
    /* Before the daemon, so that a failed start leaves nothing running
     * (srv_free stops the watchdog). */
    if (pthread_create(&s->watchdog, NULL, srv_watchdog_main, s) != 0)
        return gx_err_set(err, GX_ERR_NOMEM, "server: cannot start the connection watchdog thread");
    s->watchdog_running = 1;
    /* poll(), not epoll: libmicrohttpd 0.9.75's MHD_quiesce_daemon takes
     * the listening socket out of each pool thread's epoll set from the
     * caller's thread while that thread may be removing it too, with no
     * lock, and panics (abort) on the loser's ENOENT: "Failed to remove
     * listen FD from epoll set" (daemon.c:5531, 1 stop in ~400 in our
     * tests). Under poll() a quiesced thread just stops polling the socket.
     * With at most --max-connections sockets per thread, poll's linear
     * scan costs nothing measurable (docs/benchmarks.md, 2026-11-24). */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    s->mhd = MHD_start_daemon(flags, (uint16_t)s->o.port, NULL, NULL, srv_access, s,
                              MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                              MHD_OPTION_THREAD_POOL_SIZE, (unsigned)s->o.threads,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->o.max_connections,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->o.conn_timeout_s,
                              MHD_OPTION_CONNECTION_MEMORY_LIMIT, s->o.max_header_bytes,
                              MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
                              MHD_OPTION_NOTIFY_COMPLETED, srv_completed, s,
                              MHD_OPTION_NOTIFY_CONNECTION, srv_conn_notify, s,
                              MHD_OPTION_URI_LOG_CALLBACK, srv_uri_log, s,
                              MHD_OPTION_END);
    if (!s->mhd)
        return gx_err_set(err, GX_ERR_IO, "cannot listen on %s:%d (address in use, or not an address "
                          "of this machine)", s->host, s->o.port);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : s->o.port;
    return GX_OK;
}

static void srv_free(gx_server *s) {
    if (!s) return;
    srv_watchdog_stop(s);             /* MHD is stopped: no connection is left */
    pthread_mutex_destroy(&s->conn_mu);
    pthread_cond_destroy(&s->conn_cv);
    gx_registry_holder_free(s->models);
    srv_anomaly_close(s);
    srv_cf_close(s);
    gx_store_close(s->store);
    gx_prom_free(s->prom);
    if (s->log_owned) fclose(s->log);
    free(s);
}

gx_status gx_server_start(gx_server **out, const gx_server_opts *o, gx_err *err) {
    *out = NULL;
    gx_status st = gx_server_opts_check(o, err);
    if (st != GX_OK) return st;
    gx_server *s = calloc(1, sizeof *s);
    if (!s) return gx_err_set(err, GX_ERR_NOMEM, "server: out of memory");
    st = srv_watchdog_init(s, err);
    if (st != GX_OK) { free(s); return st; }
    if (getrandom(&s->id_seed, sizeof s->id_seed, 0) != (ssize_t)sizeof s->id_seed)
        s->id_seed = (uint64_t)srv_now_ns() ^ ((uint64_t)getpid() << 32);
    st = srv_copy_opts(s, o, err);
    if (st == GX_OK) st = srv_open_parts(s, o, err);
    if (st == GX_OK) st = srv_start_mhd(s, err);
    if (st != GX_OK) { srv_free(s); return st; }
    *out = s;
    return GX_OK;
}

int gx_server_port(const gx_server *s) { return s->port; }

gx_status gx_server_reload(gx_server *s, gx_err *err) {
    gx_status st = gx_registry_reload(s->models, s->models_dir, &s->o.batch, err);
    if (st == GX_OK) st = srv_register_models(s, err);
    gx_prom_counter_add(s->prom, "galaxyd_reloads_total",
                        st == GX_OK ? "result=\"ok\"" : "result=\"failed\"", 1);
    return st;
}

gx_status gx_server_stop(gx_server *s) {
    if (!s) return GX_OK;
    atomic_store(&s->draining, 1);
    /* Stop accepting; connections already open keep being served (their
     * answers now carry Connection: close) until every accepted request is
     * answered, which includes every job still queued. */
    MHD_socket lfd = s->mhd ? MHD_quiesce_daemon(s->mhd) : MHD_INVALID_SOCKET;
    /* Stop listening now, not after the drain: while the socket listens the
     * kernel keeps completing handshakes into its backlog, and every such
     * client would get a reset at the end instead of a refusal now (which
     * clients and load balancers retry elsewhere). shutdown(), not close():
     * a pool thread may still be polling the descriptor, and libmicrohttpd
     * says a quiesced socket must stay open until MHD_stop_daemon. */
    if (lfd != MHD_INVALID_SOCKET) shutdown(lfd, SHUT_RDWR);
    /* Queued jobs need not wait out --batch-delay-us for batch-mates that
     * can no longer arrive. */
    gx_registry *reg = s->models ? gx_registry_acquire(s->models) : NULL;
    for (int i = 0; reg && i < gx_registry_count(reg); i++)
        gx_batcher_flush(gx_registry_at(reg, i)->batcher);
    if (reg) gx_registry_release(reg);
    int64_t give_up = srv_now_ns() + (int64_t)s->o.drain_timeout_ms * 1000000;
    /* Idle for 100 ms in a row, not just once: a keep-alive client may have
     * sent its next request just before the answer with Connection: close
     * reached it, and that request is still on its way into a pool thread. */
    int64_t idle_since = 0;
    while (srv_now_ns() < give_up) {
        int64_t now = srv_now_ns();
        if (atomic_load(&s->inflight) > 0) idle_since = 0;
        else if (!idle_since) idle_since = now;
        else if (now - idle_since >= 100 * 1000000) break;
        struct timespec ts = { 0, 5 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    int left = atomic_load(&s->inflight);
    if (left > 0) {
        /* Stopping MHD now would free connections that queued jobs still
         * point at: leave the process to exit instead. */
        fprintf(stderr, "galaxyd: %d request(s) still unanswered after %d ms; not waiting longer\n",
                left, s->o.drain_timeout_ms);
        return GX_ERR_TIMEOUT;
    }
    if (s->mhd) MHD_stop_daemon(s->mhd);
    if (lfd != MHD_INVALID_SOCKET) close(lfd);
    srv_free(s);
    return GX_OK;
}
