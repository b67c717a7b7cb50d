/*
 * gx_prom.c — Prometheus metrics in the text exposition format 0.0.4.
 *
 * Design:
 *  - A registry of families (name, type, help) in describe order, each with
 *    its series (one per label set). galaxyd has ~15 families of at most a
 *    few dozen series each (routes x statuses), so lookups are linear
 *    strcmp scans: a few hundred nanoseconds per update under the mutex,
 *    cheaper than a hash table's bookkeeping at this size and trivially
 *    correct. A label set is validated once, when its series is created.
 *  - Histograms keep per-bucket (non-cumulative) counts; render makes them
 *    cumulative and adds the +Inf bucket (= _count), _sum and _count.
 *  - Output order is deterministic: families in describe order (families
 *    first seen through an update, without describe, follow in creation
 *    order with a TYPE line and no HELP), series sorted by label text.
 *  - The API returns nothing: metrics must never fail a request. Misuse
 *    (a counter update on a histogram family, a negative counter add, a
 *    malformed label set, out of memory) drops the update.
 */
#include "gx_prom.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROM_MAX_BUCKETS 64

typedef enum { PROM_COUNTER, PROM_GAUGE, PROM_HISTOGRAM } prom_type;

typedef struct prom_series {
    char     *labels;          /* `k="v",k2="v2"` or "" */
    double    value;           /* counter / gauge */
    int       n_buckets;       /* histogram: finite upper bounds */
    double   *le;              /* [n_buckets] ascending */
    uint64_t *counts;          /* [n_buckets + 1]: last = above every bound */
    double    sum;
    uint64_t  count;
} prom_series;

typedef struct prom_family {
    char        *name;
    char        *help;         /* NULL when never described */
    prom_type    type;
    prom_series *series;
    int          n, cap;
} prom_family;

struct gx_prom {
    pthread_mutex_t mu;
    prom_family    *fam;
    int             n, cap;
};

/* 0.5 ms .. 10 s: request latency from a cached answer to a slow batch. */
static const double prom_latency_buckets[] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, NAN
};

/* ------------------------------------------------------------ registry */

gx_prom *gx_prom_new(void) {
    gx_prom *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    if (pthread_mutex_init(&p->mu, NULL) != 0) { free(p); return NULL; }
    return p;
}

static void prom_series_free(prom_series *s) {
    free(s->labels);
    free(s->le);
    free(s->counts);
}

void gx_prom_free(gx_prom *p) {
    if (!p) return;
    for (int i = 0; i < p->n; i++) {
        prom_family *f = &p->fam[i];
        for (int j = 0; j < f->n; j++) prom_series_free(&f->series[j]);
        free(f->series);
        free(f->name);
        free(f->help);
    }
    free(p->fam);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* Metric names: [a-zA-Z_:][a-zA-Z0-9_:]* (the exposition format's rule). */
static int prom_name_ok(const char *s) {
    if (!s || !*s) return 0;
    for (const char *c = s; *c; c++) {
        int alpha = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || *c == '_' || *c == ':';
        if (!alpha && !(c > s && *c >= '0' && *c <= '9')) return 0;
    }
    return 1;
}

/* A label set as the callers pre-format it: `k="v"` pairs joined by ',',
 * values with \\, \" and \n escapes only, no raw newline; "le" is reserved
 * (histograms add it). Checked once per new series, so a caller mistake
 * cannot corrupt the exposition text. */
static int prom_labels_ok(const char *s) {
    if (!s || !*s) return 1;
    const char *c = s;
    for (;;) {
        const char *k = c;
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || *c == '_')) return 0;
        while ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || *c == '_' ||
               (*c >= '0' && *c <= '9'))
            c++;
        if (c - k == 2 && k[0] == 'l' && k[1] == 'e') return 0;
        if (*c++ != '=' || *c++ != '"') return 0;
        for (;; c++) {
            if (*c == 0 || *c == '\n') return 0;
            if (*c == '"') break;
            if (*c == '\\') {
                c++;
                if (*c != '\\' && *c != '"' && *c != 'n') return 0;
            }
        }
        c++;
        if (*c == 0) return 1;
        if (*c++ != ',') return 0;
    }
}

static prom_family *prom_family_find(gx_prom *p, const char *name) {
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->fam[i].name, name) == 0) return &p->fam[i];
    return NULL;
}

static prom_family *prom_family_add(gx_prom *p, const char *name, prom_type type) {
    if (!prom_name_ok(name)) return NULL;
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 16;
        prom_family *f = realloc(p->fam, (size_t)cap * sizeof *f);
        if (!f) return NULL;
        p->fam = f;
        p->cap = cap;
    }
    prom_family *f = &p->fam[p->n];
    memset(f, 0, sizeof *f);
    f->name = strdup(name);
    if (!f->name) return NULL;
    f->type = type;
    p->n++;
    return f;
}

/* The family for an update of `type`: found (and of that type) or created. */
static prom_family *prom_family_get(gx_prom *p, const char *name, prom_type type) {
    if (!name) return NULL;
    prom_family *f = prom_family_find(p, name);
    if (!f) return prom_family_add(p, name, type);
    return f->type == type ? f : NULL;
}

/* Copies the bucket bounds (NaN-terminated, ascending, finite) into s. */
static int prom_series_buckets(prom_series *s, const double *b) {
    if (!b) b = prom_latency_buckets;
    int n = 0;
    while (n < PROM_MAX_BUCKETS && !isnan(b[n])) {
        if (!isfinite(b[n]) || (n > 0 && !(b[n] > b[n - 1]))) return 0;
        n++;
    }
    if (n == PROM_MAX_BUCKETS && !isnan(b[n])) return 0;
    s->le = malloc((size_t)(n ? n : 1) * sizeof *s->le);
    s->counts = calloc((size_t)n + 1, sizeof *s->counts);
    if (!s->le || !s->counts) return 0;
    memcpy(s->le, b, (size_t)n * sizeof *s->le);
    s->n_buckets = n;
    return 1;
}

static prom_series *prom_series_get(prom_family *f, const char *labels, const double *buckets) {
    if (!labels) labels = "";
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->series[i].labels, labels) == 0) return &f->series[i];
    if (!prom_labels_ok(labels)) return NULL;
    if (f->n == f->cap) {
        int cap = f->cap ? 2 * f->cap : 8;
        prom_series *s = realloc(f->series, (size_t)cap * sizeof *s);
        if (!s) return NULL;
        f->series = s;
        f->cap = cap;
    }
    prom_series *s = &f->series[f->n];
    memset(s, 0, sizeof *s);
    s->labels = strdup(labels);
    if (!s->labels || (f->type == PROM_HISTOGRAM && !prom_series_buckets(s, buckets))) {
        prom_series_free(s);
        return NULL;
    }
    f->n++;
    return s;
}

/* ------------------------------------------------------------- updates */

void gx_prom_describe(gx_prom *p, const char *name, const char *type, const char *help) {
    if (!p || !name || !type) return;
    prom_type t;
    if (strcmp(type, "counter") == 0) t = PROM_COUNTER;
    else if (strcmp(type, "gauge") == 0) t = PROM_GAUGE;
    else if (strcmp(type, "histogram") == 0) t = PROM_HISTOGRAM;
    else return;
    pthread_mutex_lock(&p->mu);
    prom_family *f = prom_family_find(p, name);
    if (!f) f = prom_family_add(p, name, t);
    /* Re-describing keeps the first type (series already hold its data) but
     * takes the newest help text. */
    if (f && f->type == t) {
        char *h = strdup(help ? help : "");
        if (h) { free(f->help); f->help = h; }
    }
    pthread_mutex_unlock(&p->mu);
}

void gx_prom_counter_add(gx_prom *p, const char *name, const char *labels, double v) {
    if (!p || !(v >= 0) || !isfinite(v)) return;   /* counters only go up */
    pthread_mutex_lock(&p->mu);
    prom_family *f = prom_family_get(p, name, PROM_COUNTER);
    prom_series *s = f ? prom_series_get(f, labels, NULL) : NULL;
    if (s) s->value += v;
    pthread_mutex_unlock(&p->mu);
}

static void prom_gauge(gx_prom *p, const char *name, const char *labels, double v, int add) {
    if (!p || isnan(v)) return;
    pthread_mutex_lock(&p->mu);
    prom_family *f = prom_family_get(p, name, PROM_GAUGE);
    prom_series *s = f ? prom_series_get(f, labels, NULL) : NULL;
    if (s) s->value = add ? s->value + v : v;
    pthread_mutex_unlock(&p->mu);
}

void gx_prom_gauge_set(gx_prom *p, const char *name, const char *labels, double v) {
    prom_gauge(p, name, labels, v, 0);
}

void gx_prom_gauge_add(gx_prom *p, const char *name, const char *labels, double v) {
    prom_gauge(p, name, labels, v, 1);
}

void gx_prom_hist_observe(gx_prom *p, const char *name, const char *labels,
                          const double *buckets, double v) {
    if (!p || isnan(v)) return;
    pthread_mutex_lock(&p->mu);
    prom_family *f = prom_family_get(p, name, PROM_HISTOGRAM);
    prom_series *s = f ? prom_series_get(f, labels, buckets) : NULL;
    if (s) {
        int b = 0;
        while (b < s->n_buckets && !(v <= s->le[b])) b++;   /* le: upper bound inclusive */
        s->counts[b]++;
        s->sum += v;
        s->count++;
    }
    pthread_mutex_unlock(&p->mu);
}

/* -------------------------------------------------------------- render */

typedef struct prom_buf { char *s; size_t n, cap; int failed; } prom_buf;

static void pb_printf(prom_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pb_printf(prom_buf *b, const char *fmt, ...) {
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (k < 0) { b->failed = 1; return; }
        if ((size_t)k < b->cap - b->n) { b->n += (size_t)k; return; }
        size_t cap = 2 * b->cap + (size_t)k + 1;
        char *s = realloc(b->s, cap);
        if (!s) { b->failed = 1; return; }
        b->s = s;
        b->cap = cap;
    }
}

/* A sample value as the format wants it: +Inf, -Inf, NaN, or the shortest
 * decimal that reads back to the same double (%.15g usually suffices; %.17g
 * always does). */
static void prom_fmt(double v, char out[32]) {
    if (isnan(v)) { strcpy(out, "NaN"); return; }
    if (isinf(v)) { strcpy(out, v > 0 ? "+Inf" : "-Inf"); return; }
    snprintf(out, 32, "%.15g", v);
    if (strtod(out, NULL) != v) snprintf(out, 32, "%.17g", v);
}

/* HELP text escapes: backslash and newline. */
static void pb_help(prom_buf *b, const char *h) {
    for (; *h; h++) {
        if (*h == '\\') pb_printf(b, "\\\\");
        else if (*h == '\n') pb_printf(b, "\\n");
        else pb_printf(b, "%c", *h);
    }
}

static int prom_series_cmp(const void *a, const void *b) {
    const prom_series *x = *(prom_series *const *)a, *y = *(prom_series *const *)b;
    return strcmp(x->labels, y->labels);
}

static void prom_render_hist(prom_buf *b, const char *name, const prom_series *s) {
    const char *sep = s->labels[0] ? "," : "";
    char v[32];
    uint64_t cum = 0;
    for (int i = 0; i < s->n_buckets; i++) {
        cum += s->counts[i];
        prom_fmt(s->le[i], v);
        pb_printf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, s->labels, sep, v,
                  (unsigned long long)cum);
    }
    pb_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, s->labels, sep,
              (unsigned long long)s->count);
    prom_fmt(s->sum, v);
    if (s->labels[0]) {
        pb_printf(b, "%s_sum{%s} %s\n", name, s->labels, v);
        pb_printf(b, "%s_count{%s} %llu\n", name, s->labels, (unsigned long long)s->count);
    } else {
        pb_printf(b, "%s_sum %s\n", name, v);
        pb_printf(b, "%s_count %llu\n", name, (unsigned long long)s->count);
    }
}

static void prom_render_family(prom_buf *b, const prom_family *f) {
    static const char *type_name[] = { "counter", "gauge", "histogram" };
    if (f->help) {
        pb_printf(b, "# HELP %s ", f->name);
        pb_help(b, f->help);
        pb_printf(b, "\n");
    }
    pb_printf(b, "# TYPE %s %s\n", f->name, type_name[f->type]);
    if (f->n == 0) return;
    prom_series **order = malloc((size_t)f->n * sizeof *order);
    if (!order) { b->failed = 1; return; }
    for (int i = 0; i < f->n; i++) order[i] = &f->series[i];
    qsort(order, (size_t)f->n, sizeof *order, prom_series_cmp);
    for (int i = 0; i < f->n; i++) {
        const prom_series *s = order[i];
        if (f->type == PROM_HISTOGRAM) { prom_render_hist(b, f->name, s); continue; }
        char v[32];
        prom_fmt(s->value, v);
        if (s->labels[0]) pb_printf(b, "%s{%s} %s\n", f->name, s->labels, v);
        else pb_printf(b, "%s %s\n", f->name, v);
    }
    free(order);
}

char *gx_prom_render(gx_prom *p) {
    if (!p) return NULL;
    prom_buf b = { malloc(4096), 0, 4096, 0 };
    if (!b.s) return NULL;
    b.s[0] = 0;
    pthread_mutex_lock(&p->mu);
    /* Described families first (in describe order), then undescribed ones:
     * both in array order, which is creation order. */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < p->n; i++)
            if ((p->fam[i].help != NULL) == (pass == 0)) prom_render_family(&b, &p->fam[i]);
    pthread_mutex_unlock(&p->mu);
    if (b.failed) { free(b.s); return NULL; }
    return b.s;
}

/* --------------------------------------------------------------- labels */

void gx_prom_label_escape(const char *in, char *out, size_t n) {
    if (!out || n == 0) return;
    size_t k = 0;
    for (const char *c = in ? in : ""; *c; c++) {
        const char *esc = *c == '\\' ? "\\\\" : *c == '"' ? "\\\"" : *c == '\n' ? "\\n" : NULL;
        size_t w = esc ? 2 : 1;
        if (k + w >= n) break;           /* never split an escape */
        if (esc) { out[k++] = esc[0]; out[k++] = esc[1]; }
        else out[k++] = *c;
    }
    /* A truncated value must still be valid UTF-8: drop a partial sequence. */
    if (k > 0 && in && in[0]) {
        size_t j = k;
        while (j > 0 && ((unsigned char)out[j - 1] & 0xC0) == 0x80) j--;
        if (j > 0 && ((unsigned char)out[j - 1] & 0x80)) {
            unsigned char lead = (unsigned char)out[j - 1];
            size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
            if (k - (j - 1) < need) k = j - 1;
        }
    }
    out[k] = 0;
}
