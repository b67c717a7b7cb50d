/*
 * bench_uda.c — DeepAstroUDA (spec/uda.md) with the ResNet-18 backbone at
 * 64x64 on the engine. scripts/bench_uda.sh runs it beside bench/uda/ref_uda.py
 * (the same work on tests/models/uda_ref.py's PyTorch modules).
 *
 *   bench_uda predict B     gx_uda_predict of B images (target BN set; probs,
 *                           entropy, prediction)
 *   bench_uda train BS BT   one training step as galaxy-train uda takes it
 *                           (trainer/gx_train_uda.c, uda_step): head renorm,
 *                           source forward (BS images, source BN, training),
 *                           weighted CE; target forward of BT images and their
 *                           two AC views (rot90, zoom: 3*BT rows, target BN),
 *                           entropy separation, adaptive clustering against a
 *                           full memory bank of GX_BENCH_UDA_BANK slots (2048:
 *                           a 1500-object survey pair's training images),
 *                           total = CE + 0.005 (AC + ES); backward; SGD
 *                           (Nesterov 0.9, weight decay 5e-4, lr 1e-3 / 1e-2
 *                           head); bank update. The views are built once
 *                           (data preparation, not the model's step; the
 *                           augmentation is left out on both sides).
 *
 * Output rows: "row case batch ms images/s arena_bytes peak_rss_bytes reps";
 * the train row's batch reads "BS+BT" and images/s counts BS + BT images (the
 * trainer's count). Seconds per case: GX_BENCH_SECONDS (default 1; at least
 * 3 reps). Threads: GX_BENCH_THREADS. Classes: 2 (the config's default, the
 * noise-shift experiment).
 */
#include "gx.h"
#include "gx_uda.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define UB_MAX_REPS 256

static double ub_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static long ub_peak_rss(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss * 1024L;
}

static int ub_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void ub_die(const char *what, const gx_err *err) {
    fprintf(stderr, "bench_uda: %s: %s\n", what, err ? err->msg : "out of memory");
    exit(1);
}

static void *ub_alloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) ub_die("alloc", NULL);
    return p;
}

/* Median seconds of fn after one warm-up call, repeated until `seconds`
 * and 3 reps. */
typedef void (*ub_fn)(void *arg);
static double ub_repeat(ub_fn fn, void *arg, double seconds, int *reps) {
    static double t[UB_MAX_REPS];
    fn(arg);
    int n = 0;
    double start = ub_now();
    while (n < UB_MAX_REPS) {
        double t0 = ub_now();
        fn(arg);
        t[n++] = ub_now() - t0;
        if (ub_now() - start >= seconds && n >= 3) break;
    }
    qsort(t, (size_t)n, sizeof t[0], ub_cmp);
    *reps = n;
    return t[n / 2];
}

/* --------------------------------------------------------------- predict */

typedef struct {
    gx_uda_model *m;
    gx_ctx *ctx;
    float *x, *probs, *entropy;
    int64_t *pred, n;
} ub_pred;

static void ub_predict_once(void *arg) {
    ub_pred *p = arg;
    gx_err err;
    if (gx_uda_predict(p->ctx, p->m, p->x, p->m->cfg.size, p->n, GX_UDA_TARGET, p->probs, p->entropy,
                       p->pred, &err) != GX_OK)
        ub_die("predict", &err);
}

static void ub_predict(gx_uda_model *m, int64_t B, double seconds) {
    gx_params_freeze(&m->params);   /* as galaxyd and `galaxy-train score` serve it */
    gx_ctx ctx;
    gx_ctx_init(&ctx, 64 << 20);
    const int64_t px = 3 * m->cfg.size * m->cfg.size, K = m->cfg.classes;
    ub_pred p = { m, &ctx, ub_alloc((size_t)(B * px) * sizeof(float)), ub_alloc((size_t)(B * K) * sizeof(float)),
                  ub_alloc((size_t)B * sizeof(float)), ub_alloc((size_t)B * sizeof(int64_t)), B };
    gx_rng rng;
    gx_rng_init(&rng, 2);
    for (int64_t i = 0; i < B * px; i++) p.x[i] = (float)gx_rng_uniform(&rng);
    int reps;
    double med = ub_repeat(ub_predict_once, &p, seconds, &reps);
    printf("row\tpredict\t%lld\t%.3f\t%.1f\t%zu\t%ld\t%d\n", (long long)B, med * 1e3, (double)B / med,
           ctx.arena.high_water, ub_peak_rss(), reps);
    free(p.x); free(p.probs); free(p.entropy); free(p.pred);
    gx_ctx_free(&ctx);
}

/* ----------------------------------------------------------------- train */

typedef struct {
    gx_uda_model *m;
    gx_ctx ctx, data;
    gx_optim opt;
    gx_uda_bank bank;
    gx_tensor *xs, *xt;      /* [BS,3,S,S], [3*BT,3,S,S] (rows v*BT + i) */
    int64_t BS, BT, *ys, *is, *it;
    double class_w[GX_UDA_MAX_CLASSES];
    gx_uda_tuner tuner;      /* its starting rho and m */
    gx_rng rng;
} ub_train_st;

/* Rotates image src [3,S,S] by 90 degrees into dst. */
static void ub_rot90(gx_real *dst, const gx_real *src, int64_t S) {
    for (int64_t c = 0; c < 3; c++)
        for (int64_t y = 0; y < S; y++)
            for (int64_t x = 0; x < S; x++) dst[(c * S + y) * S + x] = src[(c * S + x) * S + (S - 1 - y)];
}

/* The zoom view: the central S/1.17 square, nearest-neighbour back to S
 * (the trainer resamples bilinearly; the cost is data preparation either way). */
static void ub_zoom(gx_real *dst, const gx_real *src, int64_t S) {
    int64_t cs = (int64_t)(S / 1.17 + 0.5), o = (S - cs) / 2;
    for (int64_t c = 0; c < 3; c++)
        for (int64_t y = 0; y < S; y++)
            for (int64_t x = 0; x < S; x++)
                dst[(c * S + y) * S + x] = src[(c * S + o + y * cs / S) * S + o + x * cs / S];
}

/* A full bank: every slot filled from random softmax rows and features,
 * half source (labelled), half target. */
static void ub_fill_bank(ub_train_st *s, int64_t n) {
    gx_err err;
    const int64_t K = s->m->cfg.classes, E = gx_uda_feature_dim(&s->m->cfg), chunk = 64;
    if (gx_uda_bank_init(&s->bank, n, K, &err) != GX_OK) ub_die("bank", &err);
    int64_t idx[64], lab[64];
    for (int64_t j0 = 0; j0 < n; j0 += chunk) {
        int64_t b = n - j0 < chunk ? n - j0 : chunk;
        gx_tensor *logit = gx_tensor_new(&s->ctx, 2, GX_SHAPE(b, K));
        gx_tensor *f = gx_tensor_new(&s->ctx, 2, GX_SHAPE(b, E));
        gx_rng_fill_normal(&s->rng, logit->data, logit->numel, 0, 2);
        gx_rng_fill_uniform(&s->rng, f->data, f->numel, 0, 1);
        gx_tensor *p = gx_softmax(&s->ctx, logit, 1);
        for (int64_t i = 0; i < b; i++) { idx[i] = j0 + i; lab[i] = (j0 + i) % K; }
        int dom = j0 < n / 2 ? GX_UDA_SOURCE : GX_UDA_TARGET;
        gx_uda_bank_update(&s->bank, idx, b, p, f, dom, dom == GX_UDA_SOURCE ? lab : NULL);
        gx_ctx_reset(&s->ctx);
    }
}

static void ub_train_once(void *arg) {
    ub_train_st *s = arg;
    gx_ctx *ctx = &s->ctx;
    ctx->grad_enabled = 1;
    ctx->batch_invariant = 0;   /* as galaxy-train uda's step (uda_step) */
    gx_uda_renorm_head(s->m);
    gx_uda_out os = gx_uda_forward(ctx, s->m, s->xs, GX_UDA_SOURCE, 1);
    gx_tensor *ce = gx_uda_loss_ce(ctx, os.p, s->ys, s->class_w);
    gx_uda_out ot = gx_uda_forward(ctx, s->m, s->xt, GX_UDA_TARGET, 1);
    gx_tensor *pt = gx_slice(ctx, ot.p, 0, 0, s->BT), *ft = gx_slice(ctx, ot.f, 0, 0, s->BT);
    gx_tensor *les = gx_uda_loss_es(ctx, pt, s->tuner.rho, s->tuner.margin, NULL);
    gx_tensor *lac = gx_uda_loss_ac(ctx, &s->bank, ot.p, ot.f, 3, s->it, s->BT, 0, &s->rng);
    gx_tensor *total = gx_add(ctx, ce, gx_scale(ctx, gx_add(ctx, lac, les), 0.005));
    gx_params_zero_grad(&s->m->params);
    gx_backward(ctx, total, NULL);
    double lrs[GX_OPT_MAX_GROUPS] = { 1e-3, 1e-2 };
    gx_optim_step(&s->opt, &s->m->params, lrs);
    gx_uda_bank_update(&s->bank, s->is, s->BS, os.p, os.f, GX_UDA_SOURCE, s->ys);
    gx_uda_bank_update(&s->bank, s->it, s->BT, pt, ft, GX_UDA_TARGET, NULL);
    gx_ctx_reset(ctx);
}

static void ub_train(gx_uda_model *m, int64_t BS, int64_t BT, double seconds) {
    ub_train_st s;
    memset(&s, 0, sizeof s);
    s.m = m; s.BS = BS; s.BT = BT;
    gx_ctx_init(&s.ctx, 64 << 20);
    gx_ctx_init(&s.data, 1 << 20);
    gx_rng_init(&s.rng, 3);
    const int64_t S = m->cfg.size, px = 3 * S * S, K = m->cfg.classes;
    const char *bn = getenv("GX_BENCH_UDA_BANK");
    int64_t nbank = bn ? atoll(bn) : 2048;
    if (nbank < BS + BT) nbank = BS + BT;
    s.xs = gx_tensor_new(&s.data, 4, GX_SHAPE(BS, 3, S, S));
    s.xt = gx_tensor_new(&s.data, 4, GX_SHAPE(3 * BT, 3, S, S));
    gx_rng_fill_uniform(&s.rng, s.xs->data, s.xs->numel, 0, 1);
    gx_rng_fill_uniform(&s.rng, s.xt->data, BT * px, 0, 1);
    for (int64_t i = 0; i < BT; i++) {
        ub_rot90(s.xt->data + (BT + i) * px, s.xt->data + i * px, S);
        ub_zoom(s.xt->data + (2 * BT + i) * px, s.xt->data + i * px, S);
    }
    s.ys = ub_alloc((size_t)BS * sizeof *s.ys);
    s.is = ub_alloc((size_t)BS * sizeof *s.is);
    s.it = ub_alloc((size_t)BT * sizeof *s.it);
    for (int64_t i = 0; i < BS; i++) { s.ys[i] = i % K; s.is[i] = i; }
    for (int64_t i = 0; i < BT; i++) s.it[i] = nbank / 2 + i;
    for (int64_t k = 0; k < K; k++) s.class_w[k] = 1.0;
    gx_uda_tuner_init(&s.tuner, K);
    ub_fill_bank(&s, nbank);
    gx_optim_cfg oc = gx_optim_defaults(GX_OPT_SGD);
    oc.momentum = 0.9; oc.nesterov = 1; oc.weight_decay = 5e-4;
    gx_err err;
    if (gx_optim_init(&s.opt, &m->params, &oc, &err) != GX_OK) ub_die("optimiser", &err);
    int reps;
    double med = ub_repeat(ub_train_once, &s, seconds, &reps);
    printf("row\ttrain\t%lld+%lld\t%.3f\t%.1f\t%zu\t%ld\t%d\n", (long long)BS, (long long)BT, med * 1e3,
           (double)(BS + BT) / med, s.ctx.arena.high_water, ub_peak_rss(), reps);
    gx_optim_free(&s.opt);
    gx_uda_bank_free(&s.bank);
    free(s.ys); free(s.is); free(s.it);
    gx_ctx_free(&s.data);
    gx_ctx_free(&s.ctx);
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    int64_t a = argc > 2 ? atoll(argv[2]) : 1, b = argc > 3 ? atoll(argv[3]) : a;
    const char *env = getenv("GX_BENCH_SECONDS");
    double seconds = env ? atof(env) : 1.0;
    const char *th = getenv("GX_BENCH_THREADS");
    if (th) gx_set_threads(atoi(th));
    if (a < 1 || a > 4096 || b < 1 || b > 4096) { fprintf(stderr, "bench_uda: batch outside 1..4096\n"); return 2; }
    int train = strcmp(what, "train") == 0;
    if (!train && strcmp(what, "predict") != 0) {
        fprintf(stderr, "usage: bench_uda predict B | train BS BT\n");
        return 2;
    }
    gx_uda_model m;
    gx_uda_init(&m, gx_uda_config_resnet18(), 1);
    if (train) ub_train(&m, a, b, seconds);
    else ub_predict(&m, a, seconds);
    gx_uda_free(&m);
    fflush(stdout);
    return 0;
}
