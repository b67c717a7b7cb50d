/*
 * bench_anomaly.c — the anomaly store at survey scale (`make bench-anomaly`):
 * fills a fresh database with N scores (default 1,000,000) through
 * gx_anomaly_put_many, the call `galaxy-train score` makes, then times the
 * queries GET /v1/anomalies runs:
 *
 *   top       min_score=0.9 & limit=100, first page
 *   survey    survey=S & min_score=0.9 & limit=100, first page
 *   deep      limit=100 at a cursor half-way down the whole list
 *             (every page is an index range scan: no OFFSET, so depth
 *             should not matter)
 *
 * Each is run R times (default 200) and reported as p50 / p99 in ms, beside
 * the fill rate and the file size. Measurements, not pass/fail.
 *
 *   build/bench_anomaly [--rows N] [--reps R] [--db PATH] [--keep]
 *
 * Scores are uniform in [0, 1) from a seeded generator (10% above 0.9),
 * four surveys, ra/dec uniform on the sky; one object per row.
 */
#include "gx.h"
#include "gx_anomaly_store.h"
#include "gx_db.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BA_CHUNK 10000     /* rows per put_many call (one transaction) */

typedef struct ba_opts {
    int64_t rows;
    int reps, keep;
    char db[512];
} ba_opts;

static double ba_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static uint64_t ba_mix(uint64_t x) {   /* splitmix64 */
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static double ba_unif(uint64_t *s) {
    *s = ba_mix(*s);
    return (double)(*s >> 11) * 0x1.0p-53;
}

static int ba_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int ba_parse(int argc, char **argv, ba_opts *o) {
    o->rows = 1000000, o->reps = 200, o->keep = 0;
    snprintf(o->db, sizeof o->db, "/tmp/bench_anomaly_%d.sqlite", (int)getpid());
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rows") && i + 1 < argc) o->rows = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) o->reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--db") && i + 1 < argc) snprintf(o->db, sizeof o->db, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--keep")) o->keep = 1;
        else {
            fprintf(stderr, "usage: bench_anomaly [--rows N] [--reps R] [--db PATH] [--keep]\n");
            return 0;
        }
    }
    if (o->rows < 1000 || o->reps < 1) {
        fprintf(stderr, "bench_anomaly: --rows must be >= 1000 and --reps >= 1\n");
        return 0;
    }
    return 1;
}

/* Fills rows [0, n) in chunks; the id/sha text lives in one buffer per chunk. */
static gx_status ba_fill(gx_db *db, int64_t model_id, int64_t n, gx_err *err) {
    static const char *const surveys[4] = { "decals", "sdss", "lsst-y1", "lsst-y10" };
    gx_anomaly_rec *r = calloc(BA_CHUNK, sizeof *r);
    char (*ids)[32] = calloc(BA_CHUNK, sizeof *ids);
    char (*sha)[65] = calloc(BA_CHUNK, sizeof *sha);
    if (!r || !ids || !sha) {
        free(r), free(ids), free(sha);
        return gx_err_set(err, GX_ERR_NOMEM, "bench: out of memory");
    }
    uint64_t rng = 12345;
    gx_status s = GX_OK;
    for (int64_t i0 = 0; i0 < n && s == GX_OK; i0 += BA_CHUNK) {
        int64_t b = n - i0 < BA_CHUNK ? n - i0 : BA_CHUNK;
        for (int64_t k = 0; k < b; k++) {
            int64_t i = i0 + k;
            snprintf(ids[k], sizeof ids[k], "obj-%lld", (long long)i);
            for (int w = 0; w < 4; w++)
                snprintf(sha[k] + 16 * w, 17, "%016llx", (unsigned long long)ba_mix((uint64_t)i * 4 + (uint64_t)w));
            double score = ba_unif(&rng);
            r[k] = (gx_anomaly_rec){
                .external_id = ids[k], .survey = surveys[i % 4], .image_sha256 = sha[k], .format = "png",
                .width = 64, .height = 64, .bands = 3, .ra = 360 * ba_unif(&rng),
                .dec = asin(2 * ba_unif(&rng) - 1) * 180 / M_PI, .model_id = model_id, .score = score,
                .threshold = 0.5, .is_anomaly = score > 0.5, .class_index = (int)(i % 9), .class_name = "class",
            };
        }
        s = gx_anomaly_put_many(db, r, b, err);
        if (((i0 / BA_CHUNK) % 10) == 9 || i0 + b >= n)
            fprintf(stderr, "\r  filled %lld / %lld", (long long)(i0 + b), (long long)n);
    }
    fputc('\n', stderr);
    free(r), free(ids), free(sha);
    return s;
}

/* Runs q reps times; prints p50/p99 of the wall time and the rows of a page. */
static gx_status ba_time(gx_db *db, const char *label, const gx_anomaly_query *q, int reps, gx_err *err) {
    gx_anomaly_row *rows = calloc((size_t)q->limit, sizeof *rows);
    double *ms = calloc((size_t)reps, sizeof *ms);
    if (!rows || !ms) {
        free(rows), free(ms);
        return gx_err_set(err, GX_ERR_NOMEM, "bench: out of memory");
    }
    char next[128];
    int n = 0;
    gx_status s = GX_OK;
    for (int i = 0; i < reps && s == GX_OK; i++) {
        double t0 = ba_now_ms();
        s = gx_anomaly_query_page(db, q, rows, &n, next, err);
        ms[i] = ba_now_ms() - t0;
    }
    if (s == GX_OK) {
        qsort(ms, (size_t)reps, sizeof *ms, ba_cmp);
        int i99 = (int)ceil(0.99 * reps) - 1;
        printf("  %-8s %4d rows/page  p50 %8.3f ms  p99 %8.3f ms  (first score %.4f, %d runs)\n", label, n,
               ms[reps / 2], ms[i99 < 0 ? 0 : i99], n ? rows[0].score : NAN, reps);
    }
    free(rows), free(ms);
    return s;
}

/* The cursor after the first `depth` rows of the unfiltered list. */
static gx_status ba_deep_cursor(gx_db *db, int64_t depth, char cursor[128], gx_err *err) {
    gx_anomaly_row *rows = calloc(1000, sizeof *rows);
    if (!rows) return gx_err_set(err, GX_ERR_NOMEM, "bench: out of memory");
    gx_anomaly_query q = { .min_score = NAN, .limit = 1000 };
    char cur[128] = "";
    gx_status s = GX_OK;
    for (int64_t seen = 0; seen < depth && s == GX_OK;) {
        q.cursor = cur[0] ? cur : NULL;
        q.limit = depth - seen < 1000 ? (int)(depth - seen) : 1000;
        int n = 0;
        char next[128];
        s = gx_anomaly_query_page(db, &q, rows, &n, next, err);
        seen += n;
        memcpy(cur, next, sizeof cur);
        if (!next[0]) break;
    }
    memcpy(cursor, cur, 128);
    free(rows);
    return s;
}

int main(int argc, char **argv) {
    ba_opts o;
    if (!ba_parse(argc, argv, &o)) return 2;
    unlink(o.db);
    gx_err err = { { 0 } };
    gx_db *db = NULL;
    gx_status s = gx_db_open(&db, o.db, &err);
    int64_t model_id = 0;
    if (s == GX_OK)
        s = gx_anomaly_model_id(db, "bench-uda", "0000000000000000000000000000000000000000000000000000000000000000",
                                "bench.safetensors", 0.5, "[\"a\",\"b\"]", &model_id, &err);
    printf("bench_anomaly: %lld rows into %s\n", (long long)o.rows, o.db);
    double t0 = ba_now_ms();
    if (s == GX_OK) s = ba_fill(db, model_id, o.rows, &err);
    double fill_ms = ba_now_ms() - t0;
    if (s == GX_OK) {
        struct stat st;
        double mb = stat(o.db, &st) == 0 ? (double)st.st_size / (1 << 20) : NAN;
        printf("  fill     %.1f s, %.0f rows/s (put_many, %d rows per transaction), db %.1f MiB (+WAL)\n",
               fill_ms / 1e3, (double)o.rows / (fill_ms / 1e3), BA_CHUNK, mb);
    }
    gx_anomaly_query top = { .min_score = 0.9, .limit = 100 };
    gx_anomaly_query sur = { .min_score = 0.9, .limit = 100, .survey = "sdss" };
    if (s == GX_OK) s = ba_time(db, "top", &top, o.reps, &err);
    if (s == GX_OK) s = ba_time(db, "survey", &sur, o.reps, &err);
    char cursor[128] = "";
    if (s == GX_OK) {
        double c0 = ba_now_ms();
        s = ba_deep_cursor(db, o.rows / 2, cursor, &err);
        if (s == GX_OK)
            printf("  walk     %lld rows in pages of 1000 to reach the middle: %.1f s\n", (long long)(o.rows / 2),
                   (ba_now_ms() - c0) / 1e3);
    }
    gx_anomaly_query deep = { .min_score = NAN, .limit = 100, .cursor = cursor };
    if (s == GX_OK) s = ba_time(db, "deep", &deep, o.reps, &err);
    gx_db_close(db);
    if (!o.keep) {
        char p[600];
        unlink(o.db);
        snprintf(p, sizeof p, "%s-wal", o.db), unlink(p);
        snprintf(p, sizeof p, "%s-shm", o.db), unlink(p);
    }
    if (s != GX_OK) {
        fprintf(stderr, "bench_anomaly: %s\n", err.msg);
        return 1;
    }
    return 0;
}
