/*
 * bench_uda_score.c — the compute side of offline scoring, for
 * scripts/bench_uda_ingest.sh: what `galaxy-train score` does per image
 * (trainer/gx_train_uda.c, uda_score_batch) minus the anomaly store, timed
 * in two phases on the same checkpoint and the same file:
 *
 *   prepare   gx_dataset_get (HDF5 read, uint8 -> float CHW), sha256 of the
 *             row's uint8 pixels (the store's image hash), gx_pre_prepare
 *             (crop + antialiased resize to the checkpoint's size): one pass
 *             over every image;
 *   predict   gx_uda_predict (BN set: target) of the prepared images in
 *             batches of B (score's --batch, default 64): whole passes over
 *             the file, repeated until GX_BENCH_SECONDS (default 1), median.
 *
 * The scorer's own images/s beside these shows what the store (the
 * idempotency lookup and the inserts, one transaction per batch) costs.
 *
 *   bench_uda_score CKPT DATA.h5 [B]
 *
 * Output rows: "row case batch images seconds images/s peak_rss_bytes
 * reps" (seconds = one pass). Threads: GX_BENCH_THREADS (default: the
 * OpenMP default).
 */
#include "gx.h"
#include "gx_dataset.h"
#include "gx_image.h"
#include "gx_safetensors.h"
#include "gx_sha256.h"
#include "gx_uda.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define US_MAX_REPS 256

static double us_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static long us_peak_rss(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss * 1024L;
}

static int us_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The benchmark's inputs and outputs: every prepared image of the file. */
typedef struct us_run {
    gx_uda_model m;
    int          model_ready;
    double       crop_frac;
    gx_dataset  *ds;
    float       *x, *probs, *ent;
    int64_t     *pred;
    int64_t      n, batch;
    gx_ctx       ctx;
} us_run;

static gx_status us_load(us_run *u, const char *ckpt, const char *data, gx_err *err) {
    gx_st_file f;
    memset(&f, 0, sizeof f);
    gx_uda_meta meta;
    gx_status s = gx_st_read(&f, ckpt, err);
    if (s == GX_OK) s = gx_uda_load(&f, &u->m, &meta, err);
    gx_st_close(&f);
    if (s != GX_OK) return s;
    u->model_ready = 1;
    gx_params_freeze(&u->m.params);   /* as `galaxy-train score` scores: conv weights packed once */
    u->crop_frac = meta.crop_frac > 0 ? meta.crop_frac : 1.0;
    if ((s = gx_dataset_open(data, NULL, &u->ds, err)) != GX_OK) return s;
    u->n = u->ds->n;
    const size_t row = (size_t)3 * u->m.cfg.size * u->m.cfg.size, K = (size_t)u->m.cfg.classes;
    const size_t n = (size_t)(u->n > 0 ? u->n : 1);
    u->x = malloc(n * row * sizeof *u->x);
    u->probs = malloc(n * K * sizeof *u->probs);
    u->ent = malloc(n * sizeof *u->ent);
    u->pred = malloc(n * sizeof *u->pred);
    if (!u->x || !u->probs || !u->ent || !u->pred) return gx_err_set(err, GX_ERR_NOMEM, "out of memory");
    return GX_OK;
}

/* One image: read, hash its uint8 pixels, prepare into row i of x. */
static gx_status us_prepare_one(us_run *u, int64_t i, gx_err *err) {
    gx_image im, px;
    memset(&px, 0, sizeof px);
    gx_status s = gx_dataset_get(u->ds, i, &im, err);
    if (s != GX_OK) return s;
    size_t hw = (size_t)im.h * im.w;
    uint8_t *b = malloc(hw * 3);
    if (!b) s = gx_err_set(err, GX_ERR_NOMEM, "out of memory");
    if (s == GX_OK) {
        /* the scorer's hash: the stored HWC bytes back from v/255 */
        for (size_t p = 0; p < hw; p++)
            for (int c = 0; c < 3; c++) b[p * 3 + c] = (uint8_t)lrintf(im.data[c * hw + p] * 255.0f);
        char sha[65];
        gx_sha256_hex(b, hw * 3, sha);
        gx_pre_opts po = { u->crop_frac, (int)u->m.cfg.size };
        s = gx_pre_prepare(&im, &po, &px, err);
    }
    if (s == GX_OK) {
        size_t row = (size_t)3 * u->m.cfg.size * u->m.cfg.size;
        memcpy(u->x + row * (size_t)i, px.data, row * sizeof *u->x);
    }
    free(b);
    gx_image_free(&im);
    gx_image_free(&px);
    return s;
}

/* One pass of gx_uda_predict over every prepared image. */
static gx_status us_predict_pass(us_run *u, gx_err *err) {
    const int64_t side = u->m.cfg.size, row = 3 * side * side, K = u->m.cfg.classes;
    gx_status s = GX_OK;
    for (int64_t i0 = 0; s == GX_OK && i0 < u->n; i0 += u->batch) {
        int64_t b = u->n - i0 < u->batch ? u->n - i0 : u->batch;
        s = gx_uda_predict(&u->ctx, &u->m, u->x + row * i0, side, b, GX_UDA_TARGET, u->probs + K * i0,
                           u->ent + i0, u->pred + i0, err);
        gx_ctx_reset(&u->ctx);
    }
    return s;
}

static gx_status us_bench(us_run *u, double seconds, gx_err *err) {
    double t0 = us_now();
    gx_status s = GX_OK;
    for (int64_t i = 0; s == GX_OK && i < u->n; i++) s = us_prepare_one(u, i, err);
    double prep = us_now() - t0;
    if (s != GX_OK) return s;
    printf("row\tprepare\t1\t%lld\t%.4f\t%.1f\t%ld\t1\n", (long long)u->n, prep, (double)u->n / prep,
           us_peak_rss());
    static double t[US_MAX_REPS];
    int reps = 0;
    s = us_predict_pass(u, err);                 /* warm-up */
    double start = us_now();
    while (s == GX_OK && reps < US_MAX_REPS) {
        double a = us_now();
        s = us_predict_pass(u, err);
        t[reps++] = us_now() - a;
        if (us_now() - start >= seconds) break;
    }
    if (s != GX_OK) return s;
    qsort(t, (size_t)reps, sizeof t[0], us_cmp);
    double med = t[reps / 2];
    printf("row\tpredict\t%lld\t%lld\t%.4f\t%.1f\t%ld\t%d\n", (long long)u->batch, (long long)u->n, med,
           (double)u->n / med, us_peak_rss(), reps);
    return GX_OK;
}

static void us_free(us_run *u) {
    if (u->model_ready) gx_uda_free(&u->m);
    gx_dataset_close(u->ds);
    free(u->x);
    free(u->probs);
    free(u->ent);
    free(u->pred);
    gx_ctx_free(&u->ctx);
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: bench_uda_score CKPT DATA.h5 [BATCH]\n");
        return 2;
    }
    const char *env = getenv("GX_BENCH_SECONDS"), *th = getenv("GX_BENCH_THREADS");
    double seconds = env ? atof(env) : 1.0;
    if (th) gx_set_threads(atoi(th));
    us_run u;
    memset(&u, 0, sizeof u);
    u.batch = argc > 3 ? atoll(argv[3]) : 64;
    if (u.batch < 1 || u.batch > 4096) {
        fprintf(stderr, "bench_uda_score: BATCH: expected 1..4096, got '%s'\n", argv[3]);
        return 2;
    }
    gx_ctx_init(&u.ctx, 64u << 20);
    u.ctx.grad_enabled = 0;
    gx_err err = { { 0 } };
    gx_status s = us_load(&u, argv[1], argv[2], &err);
    if (s == GX_OK && u.n < 1) s = gx_err_set(&err, GX_ERR_FORMAT, "%s: no images", argv[2]);
    if (s == GX_OK) s = us_bench(&u, seconds, &err);
    if (s != GX_OK) fprintf(stderr, "bench_uda_score: %s\n", err.msg);
    us_free(&u);
    fflush(stdout);
    return s == GX_OK ? 0 : 1;
}
