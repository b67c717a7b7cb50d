/*
 * bench_wm.c — WaveletMamba throughput on the engine: inference images/s at
 * batch 1 and 32 and training images/s at batch 32, for the tiny, small and
 * default configs at 64x64. scripts/bench_wm.sh runs it beside
 * bench/wm/ref_wm.py (the tests/ PyTorch implementation of the spec).
 *
 * Training step, the same on both sides: forward in training mode, loss =
 * mean cross-entropy + mean (log(1+z_hat) - log(1+z))^2, backward, AdamW
 * step. (The full loss adds the Sinkhorn HK term, benchmarked on its own in
 * bench_kernels; the focal/VIB terms are elementwise.)
 *
 * Output: "row<TAB>config<TAB>pass<TAB>batch<TAB>ms<TAB>images/s<TAB>arena bytes
 * <TAB>peak RSS bytes<TAB>reps". Seconds per case: GX_BENCH_SECONDS (default 1),
 * at least 3 reps (2 for training the default config).
 */
#include "gx.h"
#include "gx_wavelet_mamba.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double wb_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static long wb_peak_rss(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss * 1024L;
}

static int wb_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One training step: forward (training), CE + log-redshift MSE, backward, AdamW. */
static void wb_train_step(gx_ctx *ctx, gx_wm_model *m, gx_optim *opt, gx_tensor *x,
                          const int32_t *labels, gx_tensor *logz) {
    ctx->grad_enabled = 1;
    gx_wm_out o = gx_wm_forward(ctx, m, x, NULL, 1);
    gx_tensor *ce = gx_mean_all(ctx, gx_cross_entropy(ctx, o.logits, labels, 0.0));
    gx_tensor *lz = gx_log(ctx, gx_add_scalar(ctx, o.redshift, 1.0));
    gx_tensor *red = gx_mean_all(ctx, gx_square(ctx, gx_sub(ctx, lz, logz)));
    gx_backward(ctx, gx_add(ctx, ce, red), NULL);
    double lr[GX_OPT_MAX_GROUPS] = { 1e-3 };
    gx_optim_step(opt, &m->params, lr);
    gx_params_zero_grad(&m->params);
}

static void wb_case(const char *name, gx_wm_config cfg, int train, int B, double seconds) {
    gx_wm_model m;
    gx_wm_init(&m, cfg, 1);
    m.coord_dropout = 0;
    if (!train) gx_params_freeze(&m.params);   /* as galaxyd serves it */
    gx_ctx ctx;
    gx_ctx_init(&ctx, 64 << 20);
    gx_ctx data;
    gx_ctx_init(&data, 1 << 20);
    gx_rng rng;
    gx_rng_init(&rng, 2);
    int64_t S = 64;
    gx_tensor *x = gx_tensor_new(&data, 4, GX_SHAPE(B, 3, S, S));
    gx_rng_fill_uniform(&rng, x->data, x->numel, 0, 1);
    gx_tensor *logz = gx_tensor_new(&data, 1, GX_SHAPE(B));
    int32_t *labels = malloc((size_t)B * sizeof *labels);
    for (int i = 0; i < B; i++) { labels[i] = i % 10; logz->data[i] = (gx_real)log1p(0.05 + 0.01 * i); }
    gx_optim opt;
    gx_optim_cfg oc = gx_optim_defaults(GX_OPT_ADAMW);
    gx_err err;
    if (gx_optim_init(&opt, &m.params, &oc, &err) != GX_OK) { fprintf(stderr, "%s\n", err.msg); exit(1); }

    double t[256];
    int reps = 0, min_reps = (train && B >= 32 && cfg.c1 >= 64) ? 2 : 3;
    double start = wb_now();
    for (int warm = 1; reps < 256; warm = 0) {
        double t0 = wb_now();
        if (train) wb_train_step(&ctx, &m, &opt, x, labels, logz);
        else { ctx.grad_enabled = 0; (void)gx_wm_forward(&ctx, &m, x, NULL, 0); }
        double dt = wb_now() - t0;
        gx_ctx_reset(&ctx);
        if (warm) { start = wb_now(); continue; }
        t[reps++] = dt;
        if (wb_now() - start >= seconds && reps >= min_reps) break;
    }
    qsort(t, (size_t)reps, sizeof t[0], wb_cmp);
    double med = t[reps / 2];
    printf("row\t%s\t%s\t%d\t%.3f\t%.1f\t%zu\t%ld\t%d\n", name, train ? "train" : "infer", B,
           med * 1e3, B / med, ctx.arena.high_water, wb_peak_rss(), reps);
    fflush(stdout);
    gx_optim_free(&opt);
    free(labels);
    gx_ctx_free(&data);
    gx_ctx_free(&ctx);
    gx_wm_free(&m);
}

int main(int argc, char **argv) {
    const char *only = argc > 1 ? argv[1] : NULL;      /* tiny | small | default */
    const char *env = getenv("GX_BENCH_SECONDS");
    double seconds = env ? atof(env) : 1.0;
    const char *th = getenv("GX_BENCH_THREADS");
    if (th) gx_set_threads(atoi(th));
    struct { const char *name; gx_wm_config cfg; } cfgs[] = {
        { "tiny", gx_wm_config_tiny() }, { "small", gx_wm_config_small() },
        { "default", gx_wm_config_default() } };
    for (int i = 0; i < 3; i++) {
        if (only && strcmp(only, cfgs[i].name) != 0) continue;
        cfgs[i].cfg.size = 64;
        wb_case(cfgs[i].name, cfgs[i].cfg, 0, 1, seconds);
        wb_case(cfgs[i].name, cfgs[i].cfg, 0, 32, seconds);
        wb_case(cfgs[i].name, cfgs[i].cfg, 1, 32, seconds);
    }
    return 0;
}
