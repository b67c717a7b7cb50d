/*
 * test_prom.c — galaxyd's Prometheus registry (daemon/gx_prom.c).
 *
 * Every test renders and parses the text back line by line with a small
 * exposition-format reader (HELP/TYPE lines, samples "name{labels} value"),
 * which itself checks the format's rules: HELP and TYPE at most once per
 * family and before its samples, every sample belonging to a declared
 * family (histograms through _bucket/_sum/_count), one space before the
 * value. Then the numbers: counters add up, histogram buckets are
 * cumulative with +Inf == _count == the number of observations, and label
 * values come back escaped.
 */
#include "gx_test.h"

#include "gx_prom.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------- exposition reader */

#define PR_MAX 256

typedef struct pr_sample { char name[96]; char labels[256]; double v; } pr_sample;
typedef struct pr_family { char name[96]; char type[16]; char help[256]; int n_help, n_type; } pr_family;
typedef struct pr_doc {
    pr_sample s[PR_MAX];
    int n;
    pr_family f[32];
    int nf;
    int errors;
} pr_doc;

static pr_family *pr_fam(pr_doc *d, const char *name) {
    for (int i = 0; i < d->nf; i++)
        if (strcmp(d->f[i].name, name) == 0) return &d->f[i];
    if (d->nf == 32) return NULL;
    pr_family *f = &d->f[d->nf++];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    return f;
}

/* The family a sample name belongs to (a histogram's _bucket/_sum/_count). */
static pr_family *pr_owner(pr_doc *d, const char *name) {
    for (int i = 0; i < d->nf; i++) {
        pr_family *f = &d->f[i];
        size_t k = strlen(f->name);
        if (strcmp(name, f->name) == 0 && strcmp(f->type, "histogram") != 0) return f;
        if (strcmp(f->type, "histogram") == 0 && strncmp(name, f->name, k) == 0 &&
            (!strcmp(name + k, "_bucket") || !strcmp(name + k, "_sum") || !strcmp(name + k, "_count")))
            return f;
    }
    return NULL;
}

static void pr_parse(gx_test_state *T, const char *text, pr_doc *d) {
    memset(d, 0, sizeof *d);
    const char *p = text;
    CHECK(text && text[strlen(text) - 1] == '\n');
    while (p && *p) {
        const char *e = strchr(p, '\n');
        if (!e) { d->errors++; break; }
        char line[1024];
        size_t n = (size_t)(e - p);
        if (n >= sizeof line) { d->errors++; p = e + 1; continue; }
        memcpy(line, p, n);
        line[n] = 0;
        p = e + 1;
        char name[96], rest[512];
        if (strncmp(line, "# HELP ", 7) == 0) {
            if (sscanf(line + 7, "%95s %511[^\n]", name, rest) < 1) { d->errors++; continue; }
            pr_family *f = pr_fam(d, name);
            if (f->n_type || f->n_help++) d->errors++;   /* HELP once, before TYPE */
            const char *h = line + 7 + strlen(name);
            snprintf(f->help, sizeof f->help, "%s", *h ? h + 1 : "");
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            char type[16];
            if (sscanf(line + 7, "%95s %15s", name, type) != 2) { d->errors++; continue; }
            pr_family *f = pr_fam(d, name);
            if (f->n_type++) d->errors++;
            snprintf(f->type, sizeof f->type, "%s", type);
        } else {
            if (d->n == PR_MAX) { d->errors++; continue; }
            pr_sample *s = &d->s[d->n++];
            char *sp = strrchr(line, ' ');
            if (!sp) { d->errors++; continue; }
            *sp = 0;
            char *end;
            s->v = strtod(sp + 1, &end);
            if (*end || end == sp + 1) d->errors++;
            char *br = strchr(line, '{');
            if (br) {
                size_t ln = strlen(line);
                if (line[ln - 1] != '}') d->errors++;
                line[ln - 1] = 0;
                snprintf(s->labels, sizeof s->labels, "%s", br + 1);
                *br = 0;
            }
            snprintf(s->name, sizeof s->name, "%s", line);
            if (!pr_owner(d, s->name)) d->errors++;   /* a sample before/without its TYPE */
        }
    }
}

/* The value of sample name{labels}; NaN when absent (or present twice). */
static double pr_get(const pr_doc *d, const char *name, const char *labels) {
    double v = NAN;
    int hits = 0;
    for (int i = 0; i < d->n; i++)
        if (strcmp(d->s[i].name, name) == 0 && strcmp(d->s[i].labels, labels) == 0) {
            v = d->s[i].v;
            hits++;
        }
    return hits == 1 ? v : NAN;
}

static int pr_count(const pr_doc *d, const char *name) {
    int k = 0;
    for (int i = 0; i < d->n; i++) k += strcmp(d->s[i].name, name) == 0;
    return k;
}

/* ---------------------------------------------------------------- tests */

GX_TEST(prom_counters_add_up) {
    gx_prom *p = gx_prom_new();
    CHECK(p != NULL);
    if (!p) return;
    gx_prom_describe(p, "galaxyd_requests_total", "counter", "HTTP requests by route and status");
    gx_prom_describe(p, "galaxyd_queue_depth", "gauge", "Jobs waiting");
    const char *a = "route=\"/v1/classify\",status=\"200\"", *b = "route=\"/healthz\",status=\"200\"";
    double want_a = 0;
    for (int i = 0; i < 50; i++) {
        gx_prom_counter_add(p, "galaxyd_requests_total", a, i % 3);
        want_a += i % 3;
    }
    gx_prom_counter_add(p, "galaxyd_requests_total", b, 1);
    gx_prom_counter_add(p, "galaxyd_requests_total", b, 0.5);
    gx_prom_gauge_set(p, "galaxyd_queue_depth", "model=\"wm\"", 7);
    gx_prom_gauge_add(p, "galaxyd_queue_depth", "model=\"wm\"", -2);
    gx_prom_gauge_set(p, "galaxyd_queue_depth", "", 3);
    char *text = gx_prom_render(p);
    pr_doc *d = malloc(sizeof *d);
    pr_parse(T, text, d);
    CHECK_MSG(d->errors == 0, "format errors in:\n%s", text);
    CHECK(pr_get(d, "galaxyd_requests_total", a) == want_a);
    CHECK(pr_get(d, "galaxyd_requests_total", b) == 1.5);
    CHECK(pr_get(d, "galaxyd_queue_depth", "model=\"wm\"") == 5);
    CHECK(pr_get(d, "galaxyd_queue_depth", "") == 3);
    CHECK(d->nf == 2 && strcmp(d->f[0].type, "counter") == 0 && strcmp(d->f[1].type, "gauge") == 0);
    CHECK(strcmp(d->f[0].help, "HTTP requests by route and status") == 0);
    /* Families in describe order, series sorted by label text. */
    CHECK(strstr(text, "# HELP galaxyd_requests_total") < strstr(text, "# HELP galaxyd_queue_depth"));
    CHECK(strstr(text, "route=\"/healthz\"") < strstr(text, "route=\"/v1/classify\""));
    free(d);
    free(text);
    gx_prom_free(p);
}

GX_TEST(prom_histogram_buckets_cumulative) {
    gx_prom *p = gx_prom_new();
    if (!p) { CHECK(0); return; }
    gx_prom_describe(p, "galaxyd_batch_size", "histogram", "Images per forward pass");
    static const double bk[] = { 1, 2, 4, 8, 16, NAN };
    /* Observations 0..20, each once: le is inclusive, so 1 -> le="1". */
    double sum = 0;
    for (int v = 0; v <= 20; v++) {
        gx_prom_hist_observe(p, "galaxyd_batch_size", "model=\"wm\"", bk, v);
        sum += v;
    }
    gx_prom_hist_observe(p, "galaxyd_batch_size", "model=\"wm\"", bk, NAN);   /* dropped */
    char *text = gx_prom_render(p);
    pr_doc *d = malloc(sizeof *d);
    pr_parse(T, text, d);
    CHECK_MSG(d->errors == 0, "format errors in:\n%s", text);
    static const char *le[] = { "1", "2", "4", "8", "16", "+Inf" };
    static const double want[] = { 2, 3, 5, 9, 17, 21 };   /* counts of v <= le among 0..20 */
    double prev = 0;
    for (int i = 0; i < 6; i++) {
        char lab[64];
        snprintf(lab, sizeof lab, "model=\"wm\",le=\"%s\"", le[i]);
        double c = pr_get(d, "galaxyd_batch_size_bucket", lab);
        CHECK_MSG(c == want[i], "le=%s: %g, want %g", le[i], c, want[i]);
        CHECK(c >= prev);
        prev = c;
    }
    CHECK(pr_count(d, "galaxyd_batch_size_bucket") == 6);
    CHECK(pr_get(d, "galaxyd_batch_size_count", "model=\"wm\"") == 21);
    CHECK(pr_get(d, "galaxyd_batch_size_sum", "model=\"wm\"") == sum);
    /* The bucket lines come in ascending le order, +Inf last. */
    CHECK(strstr(text, "le=\"16\"") < strstr(text, "le=\"+Inf\""));
    CHECK(strstr(text, "le=\"2\"") < strstr(text, "le=\"4\""));
    free(d);
    free(text);
    gx_prom_free(p);
}

GX_TEST(prom_histogram_default_buckets_no_labels) {
    gx_prom *p = gx_prom_new();
    if (!p) { CHECK(0); return; }
    gx_prom_describe(p, "galaxyd_request_seconds", "histogram", "Latency");
    static const double obs[] = { 0.0001, 0.0005, 0.003, 0.2, 0.2, 7, 12 };
    for (int i = 0; i < 7; i++) gx_prom_hist_observe(p, "galaxyd_request_seconds", NULL, NULL, obs[i]);
    char *text = gx_prom_render(p);
    pr_doc *d = malloc(sizeof *d);
    pr_parse(T, text, d);
    CHECK_MSG(d->errors == 0, "format errors in:\n%s", text);
    CHECK(pr_count(d, "galaxyd_request_seconds_bucket") == 15);   /* 0.5 ms .. 10 s + Inf */
    CHECK(pr_get(d, "galaxyd_request_seconds_bucket", "le=\"0.0005\"") == 2);
    CHECK(pr_get(d, "galaxyd_request_seconds_bucket", "le=\"0.005\"") == 3);
    CHECK(pr_get(d, "galaxyd_request_seconds_bucket", "le=\"0.25\"") == 5);
    CHECK(pr_get(d, "galaxyd_request_seconds_bucket", "le=\"10\"") == 6);
    CHECK(pr_get(d, "galaxyd_request_seconds_bucket", "le=\"+Inf\"") == 7);
    CHECK(pr_get(d, "galaxyd_request_seconds_count", "") == 7);
    CHECK_NEAR(pr_get(d, "galaxyd_request_seconds_sum", ""), 19.4036, 1e-12);
    CHECK(strstr(text, "galaxyd_request_seconds_sum 19.4036\n") != NULL);   /* no empty {} */
    free(d);
    free(text);
    gx_prom_free(p);
}

GX_TEST(prom_label_escaping) {
    char out[64];
    gx_prom_label_escape("a\\b\"c\nd", out, sizeof out);
    CHECK(strcmp(out, "a\\\\b\\\"c\\nd") == 0);
    /* Truncation never splits an escape or a UTF-8 sequence. */
    gx_prom_label_escape("ab\"", out, 4);
    CHECK(strcmp(out, "ab") == 0);
    gx_prom_label_escape("ab\xc3\xa9z", out, 4);   /* "ab" + half of é would fit */
    CHECK(strcmp(out, "ab") == 0);
    gx_prom_label_escape("ab\xc3\xa9z", out, 5);
    CHECK(strcmp(out, "ab\xc3\xa9") == 0);
    gx_prom_label_escape(NULL, out, sizeof out);
    CHECK(out[0] == 0);

    gx_prom *p = gx_prom_new();
    if (!p) { CHECK(0); return; }
    gx_prom_describe(p, "galaxyd_errors_total", "counter", "Errors by kind.\nSecond line with a \\.");
    char v[64], lab[96];
    gx_prom_label_escape("bad \"image\"\n\\x", v, sizeof v);
    snprintf(lab, sizeof lab, "kind=\"%s\"", v);
    gx_prom_counter_add(p, "galaxyd_errors_total", lab, 2);
    char *text = gx_prom_render(p);
    pr_doc *d = malloc(sizeof *d);
    pr_parse(T, text, d);
    CHECK_MSG(d->errors == 0, "format errors in:\n%s", text);
    CHECK(pr_get(d, "galaxyd_errors_total", "kind=\"bad \\\"image\\\"\\n\\\\x\"") == 2);
    CHECK(strstr(text, "# HELP galaxyd_errors_total Errors by kind.\\nSecond line with a \\\\.\n") != NULL);
    free(d);
    free(text);
    gx_prom_free(p);
}

GX_TEST(prom_misuse_is_dropped) {
    gx_prom *p = gx_prom_new();
    if (!p) { CHECK(0); return; }
    gx_prom_describe(p, "c_total", "counter", "c");
    gx_prom_describe(p, "h_seconds", "histogram", "h");
    gx_prom_describe(p, "x", "summary", "unsupported type: ignored");
    gx_prom_counter_add(p, "c_total", "", 1);
    gx_prom_counter_add(p, "c_total", "", -5);          /* counters only go up */
    gx_prom_counter_add(p, "c_total", "", INFINITY);
    gx_prom_counter_add(p, "c_total", "", NAN);
    gx_prom_gauge_set(p, "c_total", "", 100);           /* wrong type */
    gx_prom_counter_add(p, "h_seconds", "", 1);         /* wrong type */
    gx_prom_counter_add(p, "c_total", "a=\"1\nb\"", 1); /* raw newline in a value */
    gx_prom_counter_add(p, "c_total", "le=\"1\"", 1);   /* reserved label */
    gx_prom_counter_add(p, "c_total", "a=1", 1);        /* unquoted */
    gx_prom_counter_add(p, "c_total", "a=\"1\",", 1);   /* dangling comma */
    gx_prom_counter_add(p, "c_total", "a=\"\\q\"", 1);  /* unknown escape */
    gx_prom_counter_add(p, "bad name", "", 1);          /* not a metric name */
    static const double desc[] = { 2, 1, NAN };
    gx_prom_hist_observe(p, "h_seconds", "", desc, 1);  /* buckets not ascending */
    gx_prom_counter_add(NULL, "c_total", "", 1);         /* NULL registry: no-op */
    CHECK(gx_prom_render(NULL) == NULL);
    char *text = gx_prom_render(p);
    pr_doc *d = malloc(sizeof *d);
    pr_parse(T, text, d);
    CHECK_MSG(d->errors == 0, "format errors in:\n%s", text);
    CHECK(d->n == 1 && pr_get(d, "c_total", "") == 1);
    CHECK(pr_count(d, "h_seconds_count") == 0);
    CHECK(strstr(text, "summary") == NULL && strstr(text, "bad name") == NULL);
    free(d);
    free(text);
    gx_prom_free(p);
}

/* Same updates in a different order: byte-identical text. Undescribed
 * families come after described ones, with a TYPE line and no HELP. */
GX_TEST(prom_render_is_deterministic) {
    const char *labs[] = { "r=\"c\"", "r=\"a\"", "r=\"b\"" };
    char *text[2];
    for (int run = 0; run < 2; run++) {
        gx_prom *p = gx_prom_new();
        if (!p) { CHECK(0); return; }
        gx_prom_counter_add(p, "late_total", "", 1);
        gx_prom_describe(p, "first_total", "counter", "f");
        for (int i = 0; i < 3; i++) {
            int k = run ? 2 - i : i;
            gx_prom_counter_add(p, "first_total", labs[k], k + 1);
        }
        text[run] = gx_prom_render(p);
        gx_prom_free(p);
    }
    CHECK(text[0] && text[1] && strcmp(text[0], text[1]) == 0);
    CHECK(strstr(text[0], "# TYPE late_total counter\n") != NULL);
    CHECK(strstr(text[0], "# HELP late_total") == NULL);
    CHECK(strstr(text[0], "first_total") < strstr(text[0], "late_total"));
    pr_doc *d = malloc(sizeof *d);
    pr_parse(T, text[0], d);
    CHECK(d->errors == 0 && pr_get(d, "first_total", "r=\"b\"") == 3);
    free(d);
    free(text[0]);
    free(text[1]);
}

typedef struct { gx_prom *p; int id; } prom_thr;

static void *prom_worker(void *arg) {
    prom_thr *t = arg;
    char lab[32];
    snprintf(lab, sizeof lab, "t=\"%d\"", t->id % 2);
    for (int i = 0; i < 20000; i++) {
        gx_prom_counter_add(t->p, "n_total", lab, 1);
        gx_prom_hist_observe(t->p, "lat_seconds", "", NULL, 0.001 * (i % 7));
        if (i % 1000 == 0) free(gx_prom_render(t->p));
    }
    return NULL;
}

GX_TEST(prom_threads_lose_no_update) {
    gx_prom *p = gx_prom_new();
    if (!p) { CHECK(0); return; }
    gx_prom_describe(p, "n_total", "counter", "n");
    gx_prom_describe(p, "lat_seconds", "histogram", "l");
    pthread_t th[4];
    prom_thr arg[4];
    for (int i = 0; i < 4; i++) {
        arg[i] = (prom_thr){ p, i };
        pthread_create(&th[i], NULL, prom_worker, &arg[i]);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    char *text = gx_prom_render(p);
    pr_doc *d = malloc(sizeof *d);
    pr_parse(T, text, d);
    CHECK(d->errors == 0);
    CHECK(pr_get(d, "n_total", "t=\"0\"") == 40000 && pr_get(d, "n_total", "t=\"1\"") == 40000);
    CHECK(pr_get(d, "lat_seconds_count", "") == 80000);
    CHECK(pr_get(d, "lat_seconds_bucket", "le=\"+Inf\"") == 80000);
    free(d);
    free(text);
    gx_prom_free(p);
}
