/*
 * bench_cf.c — the CF-INN (spec/cf-inn.md, default config: 64x64, d 64,
 * d1 16) on the engine. scripts/bench_cf.sh runs it beside bench/cf/ref_cf.py
 * (the same work on tests/models/cfinn_ref.py's PyTorch modules).
 *
 *   bench_cf classify B   gx_cf_classify of B images (pred, softmax, nll)
 *   bench_cf train B      one training step as galaxy-train cf-inn takes it:
 *                         forward with noise 0.05 on z1 and the decoder, all
 *                         losses (IB, MMD, SSIM + L1), backward, clip at 8,
 *                         Adam (beta2 0.99; mixture means at 3x lr)
 *   bench_cf cfgrid       gx_cf_counterfactuals of one image to all 10
 *                         classes (source included), re-encode and metrics;
 *                         latency p50/p99/mean over GX_BENCH_CF_RUNS (100, at least 30)
 *   bench_cf cfphases     the same algorithm rebuilt from the public pieces
 *                         (encode+flow of x; inverse flow of the 9 targets;
 *                         decode of x~ and the 9 x_cf as one batch; their
 *                         re-encode as one batch; the pair metrics) with
 *                         each phase timed: where the grid's time goes
 *                         (serially, as one batch: gx_cf_counterfactuals
 *                         splits phases 2-5 over the threads, so at several
 *                         threads the grid is faster than their sum)
 *
 * Output rows (tab-separated):
 *   row  case batch ms images/s arena_bytes peak_rss_bytes reps
 *   lat  cfgrid 10 p50_ms p99_ms mean_ms arena_bytes peak_rss_bytes runs cpu_p50_ms
 *   phase name calls median_ms cpu_median_ms
 * (cpu: process CPU time, all threads; see cb_cpu)
 * Seconds per throughput case: GX_BENCH_SECONDS (default 1; at least 3
 * reps). Threads: GX_BENCH_THREADS. The model is freshly initialised (seed
 * 1): the time of every phase is independent of the weights' values.
 */
#include "gx.h"
#include "gx_cf_inn.h"
#include "gx_morph.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define CB_MAX_REPS 512

static double cb_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Process CPU time (all threads): on a machine shared with other work the
 * wall clock counts the time other processes held the cores; with one
 * thread the CPU time is the work itself. */
static double cb_cpu(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static long cb_peak_rss(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss * 1024L;
}

static int cb_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Quantile q in [0,1] of n sorted values, rounding the rank up (numpy's
 * method "higher"): p99 of 100 runs is the second largest. */
static double cb_quantile(const double *sorted, int n, double q) {
    int i = (int)(q * (n - 1) + 0.999999);
    return sorted[i < n ? i : n - 1];
}

static void cb_die(const char *what, const gx_err *err) {
    fprintf(stderr, "bench_cf: %s: %s\n", what, err ? err->msg : "failed");
    exit(1);
}

/* Everything one case needs: model, contexts, n images of the model's size. */
typedef struct cb_env {
    gx_cf_model m;
    gx_ctx ctx, data;
    float *x;            /* [n,3,S,S] */
    int64_t n, px;
} cb_env;

static void cb_env_init(cb_env *e, int64_t n) {
    gx_cf_init(&e->m, gx_cf_config_default(), 1);
    gx_ctx_init(&e->ctx, 64 << 20);
    gx_ctx_init(&e->data, 1 << 20);
    e->n = n;
    e->px = 3 * e->m.cfg.size * e->m.cfg.size;
    e->x = malloc((size_t)(n * e->px) * sizeof *e->x);
    gx_real *tmp = malloc((size_t)(n * e->px) * sizeof *tmp);
    if (!e->x || !tmp) cb_die("images", NULL);
    gx_rng rng;
    gx_rng_init(&rng, 2);
    gx_rng_fill_uniform(&rng, tmp, n * e->px, 0, 1);
    for (int64_t i = 0; i < n * e->px; i++) e->x[i] = (float)tmp[i];
    free(tmp);
}

static void cb_env_free(cb_env *e) {
    free(e->x);
    gx_ctx_free(&e->data);
    gx_ctx_free(&e->ctx);
    gx_cf_free(&e->m);
}

/* Repeats fn until `seconds` passed and min_reps ran (after one warm-up);
 * returns the median in seconds and the rep count in *reps. */
typedef void (*cb_fn)(cb_env *e, void *arg);
static double cb_repeat(cb_env *e, cb_fn fn, void *arg, double seconds, int min_reps, int *reps) {
    static double t[CB_MAX_REPS];
    fn(e, arg);
    int n = 0;
    double start = cb_now();
    while (n < CB_MAX_REPS) {
        double t0 = cb_now();
        fn(e, arg);
        t[n++] = cb_now() - t0;
        if (cb_now() - start >= seconds && n >= min_reps) break;
    }
    qsort(t, (size_t)n, sizeof t[0], cb_cmp);
    *reps = n;
    return t[n / 2];
}

/* ------------------------------------------------------------- classify */

typedef struct { int64_t *pred; float *probs, *nll; } cb_cls;

static void cb_classify_once(cb_env *e, void *arg) {
    cb_cls *c = arg;
    gx_err err;
    if (gx_cf_classify(&e->ctx, &e->m, e->x, e->n, c->pred, c->probs, c->nll, NULL, &err) != GX_OK)
        cb_die("classify", &err);
}

static void cb_classify(int64_t B, double seconds) {
    cb_env e;
    cb_env_init(&e, B);
    gx_params_freeze(&e.m.params);   /* as galaxyd serves it */
    cb_cls c = { malloc((size_t)B * sizeof *c.pred), malloc((size_t)(B * e.m.cfg.classes) * sizeof *c.probs),
                 malloc((size_t)B * sizeof *c.nll) };
    if (!c.pred || !c.probs || !c.nll) cb_die("classify buffers", NULL);
    int reps;
    double med = cb_repeat(&e, cb_classify_once, &c, seconds, 3, &reps);
    printf("row\tclassify\t%lld\t%.3f\t%.1f\t%zu\t%ld\t%d\n", (long long)B, med * 1e3, (double)B / med,
           e.ctx.arena.high_water, cb_peak_rss(), reps);
    free(c.pred); free(c.probs); free(c.nll);
    cb_env_free(&e);
}

/* ---------------------------------------------------------------- train */

typedef struct { gx_optim opt; gx_tensor *x; int64_t *labels; gx_rng rng; gx_cf_loss_cfg lc; } cb_train_st;

/* The step of trainer/gx_train_cf.c (cf_train_step) at its defaults:
 * lr 3e-4, mixture means 3x, clip 8. */
static void cb_train_once(cb_env *e, void *arg) {
    cb_train_st *s = arg;
    gx_ctx *ctx = &e->ctx;
    ctx->grad_enabled = 1;
    gx_cf_out o = gx_cf_forward(ctx, &e->m, s->x, 0.05, &s->rng, 1);
    gx_cf_loss_terms L = gx_cf_loss(ctx, &e->m, &o, s->x, s->labels, NULL, &s->rng, &s->lc);
    gx_backward(ctx, L.total, NULL);
    (void)gx_clip_grad_norm(&e->m.params, 8.0);
    double lrs[GX_OPT_MAX_GROUPS];
    for (int g = 0; g < GX_OPT_MAX_GROUPS; g++) lrs[g] = 3e-4;
    lrs[1] = 9e-4;
    gx_optim_step(&s->opt, &e->m.params, lrs);
    gx_params_zero_grad(&e->m.params);
    gx_ctx_reset(ctx);
}

static void cb_train(int64_t B, double seconds) {
    cb_env e;
    cb_env_init(&e, B);
    cb_train_st s;
    s.lc = gx_cf_loss_cfg_default();
    gx_rng_init(&s.rng, 3);
    s.x = gx_tensor_new(&e.data, 4, GX_SHAPE(B, 3, e.m.cfg.size, e.m.cfg.size));
    for (int64_t i = 0; i < s.x->numel; i++) s.x->data[i] = (gx_real)e.x[i];
    s.labels = malloc((size_t)B * sizeof *s.labels);
    if (!s.labels) cb_die("labels", NULL);
    for (int64_t i = 0; i < B; i++) s.labels[i] = i % e.m.cfg.classes;
    gx_optim_cfg oc = gx_optim_defaults(GX_OPT_ADAM);
    oc.beta1 = 0.9; oc.beta2 = 0.99; oc.eps = 1e-8; oc.weight_decay = 0;
    gx_err err;
    if (gx_optim_init(&s.opt, &e.m.params, &oc, &err) != GX_OK) cb_die("optimiser", &err);
    int reps;
    double med = cb_repeat(&e, cb_train_once, &s, seconds, 3, &reps);
    printf("row\ttrain\t%lld\t%.3f\t%.1f\t%zu\t%ld\t%d\n", (long long)B, med * 1e3, (double)B / med,
           e.ctx.arena.high_water, cb_peak_rss(), reps);
    gx_optim_free(&s.opt);
    free(s.labels);
    cb_env_free(&e);
}

/* -------------------------------------------------------- counterfactuals */

#define CB_GRID_IMAGES 64    /* images m-hat is computed from (not timed) */

static void cb_grid_setup(cb_env *e) {
    gx_err err;
    if (gx_cf_compute_mhat(&e->ctx, &e->m, e->x, e->n, &err) != GX_OK) cb_die("m-hat", &err);
}

static int cb_runs(void) {
    const char *r = getenv("GX_BENCH_CF_RUNS");
    int n = r ? atoi(r) : 100;
    return n < 30 ? 30 : n > CB_MAX_REPS ? CB_MAX_REPS : n;
}

static void cb_cfgrid(void) {
    cb_env e;
    cb_env_init(&e, CB_GRID_IMAGES);
    cb_grid_setup(&e);
    gx_params_freeze(&e.m.params);   /* as galaxyd serves it */
    const int K = (int)e.m.cfg.classes, runs = cb_runs();
    int64_t targets[GX_CF_MAX_CLASSES];
    for (int k = 0; k < K; k++) targets[k] = k;
    float *xrec = malloc((size_t)e.px * sizeof *xrec), *xcf = malloc((size_t)(K * e.px) * sizeof *xcf);
    gx_cf_result res[GX_CF_MAX_CLASSES];
    static double t[CB_MAX_REPS], tc[CB_MAX_REPS];
    if (!xrec || !xcf) cb_die("grid buffers", NULL);
    gx_err err;
    for (int r = -2; r < runs; r++) {              /* two warm-up grids */
        double t0 = cb_now(), c0 = cb_cpu();
        if (gx_cf_counterfactuals(&e.ctx, &e.m, e.x, targets, K, xrec, xcf, res, &err) != GX_OK)
            cb_die("counterfactuals", &err);
        if (r >= 0) { t[r] = cb_now() - t0; tc[r] = cb_cpu() - c0; }
    }
    double mean = 0;
    for (int r = 0; r < runs; r++) mean += t[r] / runs;
    qsort(t, (size_t)runs, sizeof t[0], cb_cmp);
    qsort(tc, (size_t)runs, sizeof tc[0], cb_cmp);
    printf("lat\tcfgrid\t%d\t%.3f\t%.3f\t%.3f\t%zu\t%ld\t%d\t%.3f\n", K, cb_quantile(t, runs, 0.5) * 1e3,
           cb_quantile(t, runs, 0.99) * 1e3, mean * 1e3, e.ctx.arena.high_water, cb_peak_rss(), runs,
           cb_quantile(tc, runs, 0.5) * 1e3);
    free(xrec);
    free(xcf);
    cb_env_free(&e);
}

/* ------------------------------------------------------ phases of the grid */

enum { PH_ENC, PH_INV, PH_DEC, PH_REENC, PH_METRICS, PH_N };
static const char *const cb_phase_name[PH_N] = {
    "encode+flow x (batch 1)", "inverse flow (batch 9)", "decode x~ and 9 x_cf (batch 10)",
    "re-encode+flow x~ and 9 x_cf (batch 10)", "metrics: 19 MSD + 57 band SSIM" };

static gx_tensor *cb_hidden(gx_ctx *ctx, gx_cf_model *m, gx_tensor *x, gx_tensor **z) {
    gx_tensor *zz = gx_cf_encode(ctx, m, x);
    if (z) *z = zz;
    return gx_cf_flow(ctx, m, gx_slice(ctx, zz, 1, 0, m->cfg.d1), NULL);
}

static void cb_pair(const float *a, const float *b, int64_t S, double *acc) {
    const int64_t px = 3 * S * S;
    for (int64_t i = 0; i < px; i++) { double d = (double)a[i] - b[i]; *acc += d * d; }
    for (int c = 0; c < 3; c++) {
        double v = 0;
        gx_err e;
        if (gx_morph_ssim(a + c * S * S, b + c * S * S, (int)S, (int)S, 1.0, &v, &e) != GX_OK) cb_die("ssim", &e);
        *acc += v;
    }
}

/* The pair metrics of gx_cf_counterfactuals: MSD and per-band SSIM of
 * (x, x~) once, then of (x, x_cf) and (x~, x_cf) for the K-1 targets other
 * than the source (xcf holds those). */
static double cb_metrics(const float *x, const float *xrec, const float *xcf, int nq, int64_t S) {
    const int64_t px = 3 * S * S;
    double acc = 0;
    cb_pair(x, xrec, S, &acc);
    for (int k = 0; k < nq; k++) {
        cb_pair(x, xcf + k * px, S, &acc);
        cb_pair(xrec, xcf + k * px, S, &acc);
    }
    return acc;
}

static void cb_to_float(const gx_tensor *t, float *dst) {
    for (int64_t i = 0; i < t->numel; i++) dst[i] = (float)t->data[i];
}

/* Wall and CPU clocks of one phase boundary. */
typedef struct { double wall, cpu; } cb_mark;
static cb_mark cb_mark_now(void) { return (cb_mark){ cb_now(), cb_cpu() }; }

/* One grid, phase by phase, as gx_cf_counterfactuals runs it; ph[PH_N] and
 * phc[PH_N] receive wall and CPU seconds. The hidden targets are h + 0.5
 * (mu_q - h): the alpha rule itself is microseconds of scalar work on
 * d1 = 16 numbers and is left out. */
static void cb_grid_phases(cb_env *e, float *xrec, float *xcf, double *ph, double *phc) {
    gx_cf_model *m = &e->m;
    gx_ctx *ctx = &e->ctx;
    const int64_t K = m->cfg.classes, d = m->cfg.d, d1 = m->cfg.d1, S = m->cfg.size, nq = K - 1;
    ctx->grad_enabled = 0;
    cb_mark t[PH_N + 1];
    t[0] = cb_mark_now();
    gx_tensor *x = gx_tensor_new(ctx, 4, GX_SHAPE(1, 3, S, S));
    for (int64_t i = 0; i < e->px; i++) x->data[i] = (gx_real)e->x[i];
    gx_tensor *z = NULL, *h = cb_hidden(ctx, m, x, &z);
    t[1] = cb_mark_now();
    gx_tensor *hq = gx_tensor_new(ctx, 2, GX_SHAPE(nq, d1));
    for (int64_t q = 0; q < nq; q++)
        for (int64_t j = 0; j < d1; j++)
            hq->data[q * d1 + j] = (gx_real)(0.5 * (h->data[j] + m->mu->data[(q + 1) * d1 + j]));
    gx_tensor *zq = gx_cf_flow_inverse(ctx, m, hq);
    gx_tensor *z2 = gx_tensor_new(ctx, 2, GX_SHAPE(nq, d - d1));
    for (int64_t q = 0; q < nq; q++) memcpy(z2->data + q * (d - d1), z->data + d1, (size_t)(d - d1) * sizeof *z2->data);
    gx_tensor *parts[2] = { zq, z2 };
    gx_tensor *rows[2] = { z, gx_concat(ctx, 2, parts, 1) };
    gx_tensor *zall = gx_concat(ctx, 2, rows, 0);
    t[2] = cb_mark_now();
    gx_tensor *xc = gx_cf_decode(ctx, m, zall);
    cb_to_float(xc, xrec);                     /* x~, then the 9 x_cf in one buffer */
    memcpy(xcf, xrec + e->px, (size_t)(nq * e->px) * sizeof *xcf);
    t[3] = cb_mark_now();
    (void)cb_hidden(ctx, m, xc, NULL);
    t[4] = cb_mark_now();
    volatile double sink = cb_metrics(e->x, xrec, xcf, (int)nq, S);
    (void)sink;
    t[5] = cb_mark_now();
    gx_ctx_reset(ctx);
    for (int p = 0; p < PH_N; p++) {
        ph[p] = t[p + 1].wall - t[p].wall;
        phc[p] = t[p + 1].cpu - t[p].cpu;
    }
}

static double cb_median_col(const double *ph, int runs, int p, double *col) {
    for (int r = 0; r < runs; r++) col[r] = ph[(size_t)r * PH_N + p];
    qsort(col, (size_t)runs, sizeof col[0], cb_cmp);
    return col[runs / 2];
}

static void cb_cfphases(void) {
    cb_env e;
    cb_env_init(&e, 1);
    const int64_t K = e.m.cfg.classes;
    const int runs = cb_runs();
    /* xrec holds x~ and the K-1 x_cf as decoded (one batch). */
    float *xrec = malloc((size_t)(K * e.px) * sizeof *xrec), *xcf = malloc((size_t)(K * e.px) * sizeof *xcf);
    double *ph = malloc((size_t)runs * PH_N * sizeof *ph), *phc = malloc((size_t)runs * PH_N * sizeof *phc);
    double col[CB_MAX_REPS], total = 0, total_c = 0;
    if (!xrec || !xcf || !ph || !phc) cb_die("phase buffers", NULL);
    for (int r = -2; r < runs; r++) {
        double tmp[PH_N], tmpc[PH_N];
        cb_grid_phases(&e, xrec, xcf, tmp, tmpc);
        if (r >= 0) {
            memcpy(ph + (size_t)r * PH_N, tmp, sizeof tmp);
            memcpy(phc + (size_t)r * PH_N, tmpc, sizeof tmpc);
        }
    }
    for (int p = 0; p < PH_N; p++) {
        double w = cb_median_col(ph, runs, p, col), c = cb_median_col(phc, runs, p, col);
        total += w;
        total_c += c;
        printf("phase\t%s\t%d\t%.3f\t%.3f\n", cb_phase_name[p], runs, w * 1e3, c * 1e3);
    }
    printf("phase\tsum of medians\t%d\t%.3f\t%.3f\n", runs, total * 1e3, total_c * 1e3);
    free(ph);
    free(phc);
    free(xrec);
    free(xcf);
    cb_env_free(&e);
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    int64_t B = argc > 2 ? atoll(argv[2]) : 1;
    const char *env = getenv("GX_BENCH_SECONDS");
    double seconds = env ? atof(env) : 1.0;
    const char *th = getenv("GX_BENCH_THREADS");
    if (th) gx_set_threads(atoi(th));
    if (B < 1 || B > 4096) { fprintf(stderr, "bench_cf: batch %lld outside 1..4096\n", (long long)B); return 2; }
    if (strcmp(what, "classify") == 0) cb_classify(B, seconds);
    else if (strcmp(what, "train") == 0) cb_train(B, seconds);
    else if (strcmp(what, "cfgrid") == 0) cb_cfgrid();
    else if (strcmp(what, "cfphases") == 0) cb_cfphases();
    else {
        fprintf(stderr, "usage: bench_cf classify B | train B | cfgrid | cfphases\n");
        return 2;
    }
    fflush(stdout);
    return 0;
}
