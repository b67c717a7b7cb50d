/*
 * galaxy-loadgen — a small HTTP/1.1 keep-alive load generator for galaxyd's
 * serving benchmark (scripts/bench_serve.sh, `make bench-serve`).
 *
 * Design: N connections, one pthread each, every connection sends the same
 * request (fixed body read once from a file) and reads the whole answer
 * before sending the next (no pipelining, like a browser or curl). Two modes:
 *
 *   closed loop (default)  each connection sends its next request as soon as
 *                          the previous answer is in: throughput at N
 *                          outstanding requests;
 *   open loop (--rate R)   requests are scheduled at R per second in total,
 *                          spread over the connections; the latency of a
 *                          request counts from its scheduled time, not from
 *                          when the connection got free, so a slow server is
 *                          not flattered (no coordinated omission). Used to
 *                          offer a fixed multiple of capacity.
 *
 * Latencies are kept per thread in growing arrays (one double per request;
 * a 10 s run at 10 000 req/s is 800 KB) and merged at the end for exact
 * percentiles, separately for all answers and for the 2xx ones ("p99 of
 * served requests" under overload, where 503s answer in microseconds).
 * Connection errors are counted and the connection is reopened.
 *
 * Unique bodies (--seq TOKEN, scripts/bench_uda_ingest.sh): an idempotent
 * route (POST /v1/anomaly/batch with object ids) stores nothing new when the
 * same body comes again, so every occurrence of TOKEN in the request is
 * overwritten, per request, with the next number of a counter shared by all
 * connections, zero-padded to TOKEN's width (the Content-Length stays).
 * Each connection patches a copy of its own.
 *
 * Output: a human summary on stderr and one line of key=value pairs on
 * stdout (the bench script parses it). Errors name the flag; exit 2.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LG_MAX_HEADERS 16
#define LG_MAX_CONNS 4096
#define LG_RESP_MAX (64 << 20)   /* answers larger than this are an error */
#define LG_SEQ_MAXW 18            /* --seq TOKEN width: the counter fits in a long long */

static void usage(FILE *f) {
    fprintf(f,
        "usage: galaxy-loadgen --url http://HOST:PORT/PATH [options]\n"
        "\n"
        "Sends the same HTTP/1.1 request over N keep-alive connections and reports\n"
        "throughput, latency percentiles and status counts. The last stdout line is\n"
        "key=value pairs: conns requests seconds rps p50_ms p90_ms p99_ms max_ms\n"
        "ok_p50_ms ok_p99_ms status_2xx status_503 status_other errors all_2xx\n"
        "(all_2xx: 2xx answers including the warm-up's).\n"
        "\n"
        "  --url URL            target (http only), e.g. http://127.0.0.1:8080/v1/classify\n"
        "  --body FILE          request body (POST); without it the request is a GET\n"
        "  --content-type T     Content-Type of the body (default application/octet-stream)\n"
        "  --header 'K: V'      extra header (repeatable, at most %d)\n"
        "  --method M           override the method (default POST with --body, else GET)\n"
        "  --connections N      concurrent connections, one thread each (default 1)\n"
        "  --duration S         measured seconds (default 5)\n"
        "  --warmup S           unmeasured seconds before (default 1)\n"
        "  --rate R             open loop: R requests/s in total (default: closed loop)\n"
        "  --timeout S          per-answer receive timeout (default 30)\n"
        "  --seq TOKEN          overwrite every TOKEN in the request with a per-request\n"
        "                       counter (0, 1, ... shared by all connections), zero-padded\n"
        "                       to TOKEN's width (1-%d chars): unique bodies\n"
        "  --quiet              no summary on stderr\n"
        "  --help               this text\n", LG_MAX_HEADERS, LG_SEQ_MAXW);
}

/* ------------------------------------------------------------- config */

typedef struct lg_cfg {
    char    host[256], port[16], path[2048];
    char   *request;          /* headers + body, sent as one write */
    size_t  request_n;
    int     conns;
    double  duration, warmup, rate, timeout;
    int     quiet;
    size_t *seq_at, seq_n, seq_w;  /* --seq: offsets of TOKEN in request, its width */
    atomic_llong *seq;             /* the next number (main's, shared) */
} lg_cfg;

typedef struct lg_samples { double *v; size_t n, cap; } lg_samples;

typedef struct lg_thread {
    const lg_cfg *cfg;
    int           index;
    double        t_start, t_measure, t_end;   /* CLOCK_MONOTONIC seconds */
    lg_samples    all, ok;
    double        last_done;                    /* when the last measured answer came */
    int64_t       n_2xx, n_503, n_other, n_err;
    int64_t       n_2xx_all;                    /* warm-up included */
    int           fail;                         /* out of memory */
} lg_thread;

static double lg_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void lg_sleep_until(double t) {
    double d = t - lg_now();
    if (d <= 0) return;
    struct timespec ts = { (time_t)d, (long)((d - (double)(time_t)d) * 1e9) };
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {}
}

static int lg_push(lg_samples *s, double v) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 4096;
        double *p = realloc(s->v, cap * sizeof *p);
        if (!p) return -1;
        s->v = p;
        s->cap = cap;
    }
    s->v[s->n++] = v;
    return 0;
}

/* "http://host:port/path" -> parts (port default 80, path default "/"). */
static int lg_parse_url(const char *url, lg_cfg *c) {
    if (strncmp(url, "http://", 7)) return -1;
    const char *h = url + 7, *slash = strchr(h, '/');
    size_t hl = slash ? (size_t)(slash - h) : strlen(h);
    const char *colon = memchr(h, ':', hl);
    size_t hostl = colon ? (size_t)(colon - h) : hl;
    if (hostl == 0 || hostl >= sizeof c->host) return -1;
    memcpy(c->host, h, hostl);
    c->host[hostl] = 0;
    size_t pl = colon ? hl - hostl - 1 : 2;
    if (pl == 0 || pl >= sizeof c->port) return -1;
    if (colon) { memcpy(c->port, colon + 1, pl); c->port[pl] = 0; }
    else snprintf(c->port, sizeof c->port, "80");
    snprintf(c->path, sizeof c->path, "%s", slash ? slash : "/");
    return 0;
}

static char *lg_read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long len = ftell(f);
        if (len >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)len + 1))) {
            if (fread(buf, 1, (size_t)len, f) != (size_t)len) { free(buf); buf = NULL; }
            else *n = (size_t)len;
        }
    }
    fclose(f);
    return buf;
}

/* The whole request (headers then body) in one buffer. */
static int lg_build_request(lg_cfg *c, const char *method, const char *ctype, const char *body, size_t body_n,
                            char headers[][512], int n_headers) {
    size_t cap = 4096 + body_n + (size_t)n_headers * 520 + strlen(c->path);
    char *r = malloc(cap);
    if (!r) return -1;
    int k = snprintf(r, cap, "%s %s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: galaxy-loadgen\r\n", method, c->path,
                     c->host, c->port);
    for (int i = 0; i < n_headers; i++) k += snprintf(r + k, cap - (size_t)k, "%s\r\n", headers[i]);
    if (body) k += snprintf(r + k, cap - (size_t)k, "Content-Type: %s\r\nContent-Length: %zu\r\n", ctype, body_n);
    k += snprintf(r + k, cap - (size_t)k, "\r\n");
    if (body_n) memcpy(r + k, body, body_n);
    c->request = r;
    c->request_n = (size_t)k + body_n;
    return 0;
}

/* --seq: the offsets of every occurrence of tok in the request. */
static int lg_find_seq(lg_cfg *c, const char *tok) {
    size_t w = strlen(tok), cap = 0;
    for (size_t i = 0; i + w <= c->request_n; i++) {
        if (memcmp(c->request + i, tok, w)) continue;
        if (c->seq_n == cap) {
            cap = cap ? 2 * cap : 64;
            size_t *p = realloc(c->seq_at, cap * sizeof *p);
            if (!p) return -1;
            c->seq_at = p;
        }
        c->seq_at[c->seq_n++] = i;
        i += w - 1;
    }
    c->seq_w = w;
    return 0;
}

/* --seq: req (this connection's copy) with the next counter value. */
static void lg_patch_seq(const lg_cfg *c, char *req) {
    long long k = atomic_fetch_add(c->seq, 1);
    char num[LG_SEQ_MAXW + 1];
    snprintf(num, sizeof num, "%0*lld", (int)c->seq_w, k);
    for (size_t i = 0; i < c->seq_n; i++) memcpy(req + c->seq_at[i], num, c->seq_w);
}

/* ------------------------------------------------------------- connection */

static int lg_connect(const lg_cfg *c) {
    struct addrinfo hints = { 0 }, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(c->host, c->port, &hints, &res) != 0) return -1;
    int fd = -1;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) { close(fd); fd = -1; }
    }
    freeaddrinfo(res);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = { (time_t)c->timeout, (suseconds_t)((c->timeout - (double)(time_t)c->timeout) * 1e6) };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return fd;
}

static int lg_send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Per-connection receive buffer: answers are read whole, then dropped. */
typedef struct lg_buf { char *p; size_t n, cap; } lg_buf;

static int lg_fill(int fd, lg_buf *b) {
    if (b->cap - b->n < 16384) {
        size_t cap = b->cap ? 2 * b->cap : 65536;
        if (cap > LG_RESP_MAX) return -1;
        char *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p;
        b->cap = cap;
    }
    ssize_t k;
    do k = recv(fd, b->p + b->n, b->cap - b->n - 1, 0); while (k < 0 && errno == EINTR);
    if (k <= 0) return -1;
    b->n += (size_t)k;
    b->p[b->n] = 0;
    return 0;
}

/* Case-insensitive header value inside [head, end) (NULL if absent). */
static const char *lg_header(const char *head, const char *end, const char *name) {
    size_t nl = strlen(name);
    for (const char *l = strstr(head, "\r\n"); l && l < end; l = strstr(l + 2, "\r\n")) {
        const char *s = l + 2;
        if (s + nl < end && !strncasecmp(s, name, nl) && s[nl] == ':') {
            s += nl + 1;
            while (*s == ' ' || *s == '\t') s++;
            return s;
        }
    }
    return NULL;
}

/* Reads one answer into b (kept across calls: bytes past the answer stay).
 * Returns the status (>= 100) or -1; *close_after says the server will close. */
static int lg_read_answer(int fd, lg_buf *b, int *close_after) {
    char *eoh;
    while (!b->p || !(eoh = strstr(b->p, "\r\n\r\n")))
        if (lg_fill(fd, b)) return -1;
    int status = 0;
    if (sscanf(b->p, "HTTP/1.%*d %d", &status) != 1 || status < 100) return -1;
    const char *cl = lg_header(b->p, eoh, "Content-Length");
    const char *te = lg_header(b->p, eoh, "Transfer-Encoding");
    const char *cn = lg_header(b->p, eoh, "Connection");
    *close_after = cn && !strncasecmp(cn, "close", 5);
    size_t head = (size_t)(eoh - b->p) + 4, total;
    if (te && !strncasecmp(te, "chunked", 7)) {
        size_t pos = head;   /* walk the chunks, refilling as needed */
        for (;;) {
            char *crlf;
            while (!(crlf = strstr(b->p + pos, "\r\n")))
                if (lg_fill(fd, b)) return -1;
            size_t len = strtoul(b->p + pos, NULL, 16);
            size_t next = (size_t)(crlf - b->p) + 2 + len + 2;
            while (b->n < next)
                if (lg_fill(fd, b)) return -1;
            pos = next;
            if (len == 0) break;
        }
        total = pos;
    } else if (cl) {
        total = head + strtoul(cl, NULL, 10);
        while (b->n < total)
            if (lg_fill(fd, b)) return -1;
    } else {
        /* no length: the body runs to the close */
        while (lg_fill(fd, b) == 0) {}
        total = b->n;
        *close_after = 1;
    }
    memmove(b->p, b->p + total, b->n - total);
    b->n -= total;
    b->p[b->n] = 0;
    return status;
}

static void *lg_run(void *arg) {
    lg_thread *t = arg;
    const lg_cfg *c = t->cfg;
    lg_buf b = { 0 };
    int fd = -1;
    char *req = c->request;
    if (c->seq_n && !(req = malloc(c->request_n))) { t->fail = 1; return NULL; }
    if (req != c->request) memcpy(req, c->request, c->request_n);
    /* Open loop: this connection's share of the schedule. */
    double interval = c->rate > 0 ? c->conns / c->rate : 0;
    double next = t->t_start + (c->rate > 0 ? t->index / c->rate : 0);
    for (;;) {
        double sched = lg_now();
        if (c->rate > 0) {
            if (next >= t->t_end) break;
            lg_sleep_until(next);
            sched = next;
            next += interval;
        } else if (sched >= t->t_end) {
            break;
        }
        if (fd < 0 && (fd = lg_connect(c)) < 0) {
            if (sched >= t->t_measure) t->n_err++;
            lg_sleep_until(lg_now() + 0.01);
            continue;
        }
        int close_after = 0, status = -1;
        if (c->seq_n) lg_patch_seq(c, req);
        if (lg_send_all(fd, req, c->request_n) == 0) status = lg_read_answer(fd, &b, &close_after);
        if (status >= 200 && status < 300) t->n_2xx_all++;
        double done = lg_now();
        if (status < 0 || close_after) {
            close(fd);
            fd = -1;
            b.n = 0;
        }
        if (sched < t->t_measure) continue;   /* warm-up */
        t->last_done = done;
        if (status < 0) { t->n_err++; continue; }
        double ms = (done - sched) * 1e3;
        if (lg_push(&t->all, ms)) { t->fail = 1; break; }
        if (status >= 200 && status < 300) {
            t->n_2xx++;
            if (lg_push(&t->ok, ms)) { t->fail = 1; break; }
        } else if (status == 503) {
            t->n_503++;
        } else {
            t->n_other++;
        }
    }
    if (fd >= 0) close(fd);
    free(b.p);
    if (req != c->request) free(req);
    return NULL;
}

/* ------------------------------------------------------------- report */

static int lg_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v (NAN when empty). */
static double lg_pct(const double *v, size_t n, double p) {
    if (n == 0) return NAN;
    size_t k = (size_t)ceil(p / 100.0 * (double)n);
    return v[k ? k - 1 : 0];
}

static int lg_merge(lg_thread *t, int n, int ok, lg_samples *out) {
    size_t total = 0;
    for (int i = 0; i < n; i++) total += ok ? t[i].ok.n : t[i].all.n;
    out->v = malloc((total ? total : 1) * sizeof *out->v);
    if (!out->v) return -1;
    out->n = 0;
    for (int i = 0; i < n; i++) {
        lg_samples *s = ok ? &t[i].ok : &t[i].all;
        if (s->n) memcpy(out->v + out->n, s->v, s->n * sizeof *s->v);
        out->n += s->n;
    }
    qsort(out->v, out->n, sizeof *out->v, lg_cmp);
    return 0;
}

static int lg_report(const lg_cfg *c, lg_thread *t) {
    lg_samples all = { 0 }, ok = { 0 };
    if (lg_merge(t, c->conns, 0, &all) || lg_merge(t, c->conns, 1, &ok)) {
        free(all.v);
        fprintf(stderr, "galaxy-loadgen: out of memory for the latency samples\n");
        return 1;
    }
    int64_t n2 = 0, n503 = 0, nother = 0, nerr = 0, n2all = 0;
    for (int i = 0; i < c->conns; i++) {
        n2 += t[i].n_2xx; n503 += t[i].n_503; nother += t[i].n_other; nerr += t[i].n_err;
        n2all += t[i].n_2xx_all;
    }
    /* The measured window: from its start to the last answer (an open-loop
     * run against a slow server overruns --duration; its rate is what was
     * served, not what was offered). */
    double last = 0;
    for (int i = 0; i < c->conns; i++)
        if (t[i].last_done > last) last = t[i].last_done;
    double secs = last > t[0].t_measure ? last - t[0].t_measure : c->duration;
    if (secs < c->duration) secs = c->duration;
    double rps = (double)all.n / secs;
    double p50 = lg_pct(all.v, all.n, 50), p90 = lg_pct(all.v, all.n, 90), p99 = lg_pct(all.v, all.n, 99);
    double mx = all.n ? all.v[all.n - 1] : NAN;
    double okp50 = lg_pct(ok.v, ok.n, 50), okp99 = lg_pct(ok.v, ok.n, 99);
    if (!c->quiet)
        fprintf(stderr, "galaxy-loadgen: %d conns, %.1f s%s: %zu answers (%.1f/s, %.1f 2xx/s), "
                "p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms; 2xx %lld, 503 %lld, other %lld, errors %lld\n",
                c->conns, secs, c->rate > 0 ? " open loop" : "", all.n, rps, (double)n2 / secs, p50, p90, p99, mx,
                (long long)n2, (long long)n503, (long long)nother, (long long)nerr);
    printf("conns=%d requests=%zu seconds=%.3f rps=%.2f ok_rps=%.2f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f "
           "max_ms=%.3f ok_p50_ms=%.3f ok_p99_ms=%.3f status_2xx=%lld status_503=%lld status_other=%lld "
           "errors=%lld all_2xx=%lld\n",
           c->conns, all.n, secs, rps, (double)n2 / secs, p50, p90, p99, mx, okp50, okp99, (long long)n2,
           (long long)n503, (long long)nother, (long long)nerr, (long long)n2all);
    free(all.v);
    free(ok.v);
    return 0;
}

/* ------------------------------------------------------------- main */

static int lg_bad(const char *flag, const char *why) {
    fprintf(stderr, "galaxy-loadgen: %s: %s (see --help)\n", flag, why);
    return 2;
}

static int lg_num(const char *flag, const char *s, double lo, double hi, double *out) {
    char *end;
    double v = s ? strtod(s, &end) : NAN;
    if (!s || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "galaxy-loadgen: %s: expected a number in [%g, %g], got '%s'\n", flag, lo, hi,
                s ? s : "(missing)");
        return 2;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv) {
    lg_cfg c = { .conns = 1, .duration = 5, .warmup = 1, .rate = 0, .timeout = 30 };
    const char *url = NULL, *body_path = NULL, *ctype = "application/octet-stream", *method = NULL, *seq = NULL;
    static char headers[LG_MAX_HEADERS][512];
    int n_headers = 0;
    double v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--quiet")) { c.quiet = 1; continue; }
        else if (!val) return lg_bad(a, "needs a value");
        else if (!strcmp(a, "--url")) url = val;
        else if (!strcmp(a, "--body")) body_path = val;
        else if (!strcmp(a, "--content-type")) ctype = val;
        else if (!strcmp(a, "--method")) method = val;
        else if (!strcmp(a, "--seq")) {
            if (!*val || strlen(val) > LG_SEQ_MAXW) return lg_bad(a, "TOKEN must be 1-18 characters");
            seq = val;
        }
        else if (!strcmp(a, "--header")) {
            if (n_headers == LG_MAX_HEADERS || strlen(val) >= sizeof headers[0] || !strchr(val, ':'))
                return lg_bad(a, "at most 16 headers of the form 'Name: value' (< 512 chars)");
            snprintf(headers[n_headers++], sizeof headers[0], "%s", val);
        }
        else if (!strcmp(a, "--connections")) { rc = lg_num(a, val, 1, LG_MAX_CONNS, &v); c.conns = (int)v; }
        else if (!strcmp(a, "--duration")) rc = lg_num(a, val, 0.1, 86400, &c.duration);
        else if (!strcmp(a, "--warmup")) rc = lg_num(a, val, 0, 3600, &c.warmup);
        else if (!strcmp(a, "--rate")) rc = lg_num(a, val, 0.001, 1e7, &c.rate);
        else if (!strcmp(a, "--timeout")) rc = lg_num(a, val, 0.01, 3600, &c.timeout);
        else return lg_bad(a, "unknown option");
        if (rc) return rc;
        i++;
    }
    if (!url) return lg_bad("--url", "required");
    if (lg_parse_url(url, &c)) return lg_bad("--url", "expected http://HOST[:PORT][/PATH]");
    char *body = NULL;
    size_t body_n = 0;
    if (body_path && !(body = lg_read_file(body_path, &body_n))) return lg_bad("--body", "cannot read the file");
    if (lg_build_request(&c, method ? method : body ? "POST" : "GET", ctype, body, body_n, headers, n_headers)) {
        free(body);
        fprintf(stderr, "galaxy-loadgen: out of memory\n");
        return 1;
    }
    free(body);
    atomic_llong seq_next = 0;
    c.seq = &seq_next;
    if (seq && lg_find_seq(&c, seq)) { fprintf(stderr, "galaxy-loadgen: out of memory\n"); return 1; }
    if (seq && !c.seq_n) {
        free(c.request);
        return lg_bad("--seq", "TOKEN does not occur in the request");
    }
    lg_thread *t = calloc((size_t)c.conns, sizeof *t);
    pthread_t *th = calloc((size_t)c.conns, sizeof *th);
    if (!t || !th) { fprintf(stderr, "galaxy-loadgen: out of memory\n"); return 1; }
    double t0 = lg_now() + 0.05;
    int started = 0, status = 0;
    for (int i = 0; i < c.conns; i++) {
        t[i] = (lg_thread){ .cfg = &c, .index = i, .t_start = t0, .t_measure = t0 + c.warmup,
                            .t_end = t0 + c.warmup + c.duration };
        if (pthread_create(&th[i], NULL, lg_run, &t[i])) {
            fprintf(stderr, "galaxy-loadgen: cannot start thread %d\n", i);
            status = 1;
            break;
        }
        started++;
    }
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < started; i++)
        if (t[i].fail) { fprintf(stderr, "galaxy-loadgen: out of memory for samples\n"); status = 1; }
    if (status == 0) status = lg_report(&c, t);
    for (int i = 0; i < c.conns; i++) { free(t[i].all.v); free(t[i].ok.v); }
    free(t);
    free(th);
    free(c.request);
    free(c.seq_at);
    return status;
}
