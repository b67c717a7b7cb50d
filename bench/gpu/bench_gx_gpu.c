/*
 * bench_gx_gpu.c — our side of `make bench-gpu` (mk/bench_gpu.mk): the three
 * models on the CUDA backend, the cases bench/gpu/bench_torch.py times for
 * PyTorch, so that bench/gpu/compare.py can put the two side by side.
 *
 *   wm   WaveletMamba, default config at 64x64 (tiny at 32 with --quick):
 *        inference images/s (eval) at each --batches, launched op by op and
 *        (a second row, "graph": true) replayed as one CUDA graph captured
 *        for that batch (galaxyd's way, daemon/gx_serve_graph.c: the
 *        coordinates cleaned on the host and uploaded with the images, here
 *        all missing), training images/s at
 *        each --train-batches (forward in training mode, loss = mean CE +
 *        mean (log(1+z_hat) - log(1+z))^2, backward, AdamW: bench_torch's
 *        step and bench/wm/bench_wm.c's).
 *   cf   CF-INN default: classify images/s (gx_cf_classify: chunks of 32) and
 *        the 10-class counterfactual grid of one image (grids/s).
 *   uda  DeepAstroUDA resnet18 (tiny with --quick): predict images/s
 *        (gx_uda_predict, target BN set, chunks of 32).
 *
 * Every timed call starts from host memory and ends with the answer on the
 * host, as galaxyd's worker does: the batch is uploaded (bench_torch's input
 * is already on the device: our rows pay one host->device copy more) and
 * the outputs read back, which waits for the device. The model weights are
 * seeded, not trained (timing does not depend on the values).
 *
 * Without a usable GPU it prints "bench_gx_gpu: skipped: no GPU (<why>)" on
 * stderr and exits 0. Built with CUDA_EMU=1 (the host emulation of the
 * backend) it runs everywhere: tests/cli/test_bench_gpu.py uses that as a
 * smoke test of the program, not as a measurement.
 *
 * --precisions fp32,tf32 (default both; fp32 with --quick) runs every case
 * once per precision, each on a fresh device whose cuBLAS handle is FP32
 * exact (fp32) or may use TF32 tensor cores (tf32, galaxyd --tf32); the
 * convolutions' GEMMs follow, the other kernels are FP32 either way.
 *
 * Output: one JSON object per case on stdout (keys shared with
 * bench_torch.py: bench, model, config, image, mode, batch, precision,
 * ms_median, ms_p90, iters, per_s, per_s_unit), plus pool_in_use_bytes (the
 * device pool's bytes handed out after the case: the model's parameters and
 * optimiser state and the arena's blocks, which it keeps at its high water)
 * and graph (true for a row replayed as a CUDA graph).
 *
 *   bench_gx_gpu [--quick] [--seconds S] [--models wm,cf,uda]
 *                [--batches 1,32,256] [--train-batches 32,256]
 *                [--precisions fp32,tf32]
 */
#include "gx.h"
#include "gx_cf_inn.h"
#include "gx_cuda.h"
#include "gx_train_common.h"
#include "gx_uda.h"
#include "gx_wavelet_mamba.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BG_MAX_REPS  4096
#define BG_MAX_LIST  8

typedef struct bg_opts {
    int    quick;
    double seconds;
    const char *models;
    int    batches[BG_MAX_LIST], nb;
    int    train_batches[BG_MAX_LIST], ntb;
    int    fp32, tf32;     /* which precisions to run */
} bg_opts;

/* What one timed case needs: the device, a ctx on it, the rows' labels. */
typedef struct bg_env {
    gx_train_device dev;
    gx_ctx ctx;
    const bg_opts *o;
    const char *precision;  /* "fp32" or "tf32": the device's cuBLAS mode */
    int graph;              /* the row's calls replay a CUDA graph */
} bg_env;

static double bg_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int bg_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void bg_die(const char *what, const gx_err *err) {
    fprintf(stderr, "bench_gx_gpu: %s: %s\n", what, err ? err->msg : "out of memory");
    exit(1);
}

static float *bg_images(int64_t n, int64_t S, uint64_t seed) {
    int64_t k = n * 3 * S * S;
    gx_real *tmp = malloc((size_t)k * sizeof *tmp);
    float *x = malloc((size_t)k * sizeof *x);
    if (!tmp || !x) bg_die("images", NULL);
    gx_rng rng;
    gx_rng_init(&rng, seed);
    gx_rng_fill_uniform(&rng, tmp, k, 0, 1);
    for (int64_t i = 0; i < k; i++) x[i] = (float)tmp[i];
    free(tmp);
    return x;
}

/* Runs fn after two untimed calls until o->seconds passed (at least 5 reps,
 * 2 with --quick); prints the JSON row. per_call: images (or grids) a call
 * handles. Each call ends with a device sync, so the time is the device's. */
typedef void (*bg_fn)(bg_env *e, void *arg);

static void bg_time(bg_env *e, const char *model, const char *config, int64_t S, const char *mode, int B,
                    const char *unit, bg_fn fn, void *arg) {
    static double t[BG_MAX_REPS];
    gx_err err;
    int warm = e->o->quick ? 1 : 2, min_reps = e->o->quick ? 2 : 5;
    for (int i = 0; i < warm; i++) fn(e, arg);
    if (gx_train_device_sync(&e->dev, &err) != GX_OK) bg_die(mode, &err);
    int n = 0;
    double start = bg_now();
    while (n < BG_MAX_REPS) {
        double t0 = bg_now();
        fn(e, arg);
        if (gx_train_device_sync(&e->dev, &err) != GX_OK) bg_die(mode, &err);
        t[n++] = bg_now() - t0;
        if (bg_now() - start >= e->o->seconds && n >= min_reps) break;
    }
    qsort(t, (size_t)n, sizeof t[0], bg_cmp);
    double med = t[n / 2], p90 = t[(n * 9) / 10 < n ? (n * 9) / 10 : n - 1];
    printf("{\"bench\": \"galaxyd\", \"device\": \"cuda\", \"model\": \"%s\", \"config\": \"%s\", "
           "\"image\": \"%lldx%lld\", \"mode\": \"%s\", \"batch\": %d, \"precision\": \"%s\", "
           "\"ms_median\": %.4f, \"ms_p90\": %.4f, \"iters\": %d, \"per_s\": %.2f, \"per_s_unit\": \"%s\", "
           "\"pool_in_use_bytes\": %zu, \"graph\": %s}\n",
           model, config, (long long)S, (long long)S, mode, B, e->precision, med * 1e3, p90 * 1e3, n, (double)B / med, unit,
           gx_cuda_pool_in_use(e->dev.pool), e->graph ? "true" : "false");
    fflush(stdout);
}

/* ------------------------------------------------------------ WaveletMamba */

typedef struct { gx_wm_model *m; gx_optim *opt; const float *x; int64_t B, S; int32_t *labels; gx_real *logz; } bg_wm;

static gx_tensor *bg_wm_input(gx_ctx *ctx, const bg_wm *w) {
    gx_tensor *x = gx_tensor_new_host(ctx, 4, GX_SHAPE(w->B, 3, w->S, w->S));
    for (int64_t i = 0; i < x->numel; i++) x->data[i] = (gx_real)w->x[i];
    return gx_to_ctx(ctx, x);
}

static void bg_wm_infer(bg_env *e, void *arg) {
    bg_wm *w = arg;
    e->ctx.grad_enabled = 0;
    gx_wm_out o = gx_wm_forward(&e->ctx, w->m, bg_wm_input(&e->ctx, w), NULL, 0);
    (void)gx_to_host(&e->ctx, o.logits);
    gx_ctx_reset(&e->ctx);
}

/* The eval pass as a CUDA graph, in a gx_cuda_pass as galaxyd's slots. */
typedef struct {
    bg_wm *w;
    gx_cuda_pass pass;
    gx_tensor *x, *clean, *mask;
    gx_real *logits;        /* the body's output (its struct is in the rewound arena) */
    gx_real *hx, *hl;
} bg_wm_graph;

static void bg_wm_graph_body(void *arg) {
    bg_wm_graph *G = arg;
    G->logits = gx_wm_forward_clean(&G->pass.ctx, G->w->m, G->x, G->clean, G->mask).logits->data;
}

static void bg_wm_graph_free(bg_wm_graph *G) {
    gx_cuda_pass_free(&G->pass);
    free(G->hx);
    free(G->hl);
}

/* 0 with the graph captured; 1 (why on stderr) when it cannot be. */
static int bg_wm_graph_init(bg_env *e, bg_wm *w, bg_wm_graph *G) {
    memset(G, 0, sizeof *G);
    G->w = w;
    gx_err err;
    if (gx_cuda_pass_init(&G->pass, &e->dev.exec, &err) != GX_OK) {
        fprintf(stderr, "bench_gx_gpu: no graph rows: %s\n", err.msg);
        return 1;
    }
    const int64_t B = w->B, S = w->S;
    G->x = gx_tensor_zeros(&G->pass.in_ctx, 4, GX_SHAPE(B, 3, S, S));
    G->clean = gx_tensor_zeros(&G->pass.in_ctx, 2, GX_SHAPE(B, 2));   /* all missing: mask 0 */
    G->mask = gx_tensor_zeros(&G->pass.in_ctx, 2, GX_SHAPE(B, 1));
    G->hx = malloc((size_t)(B * 3 * S * S) * sizeof *G->hx);
    G->hl = malloc((size_t)(B * w->m->cfg.classes) * sizeof *G->hl);
    if (!G->hx || !G->hl) bg_die("graph buffers", NULL);
    if (gx_cuda_pass_capture(&G->pass, bg_wm_graph_body, G, &err) != GX_OK) {
        fprintf(stderr, "bench_gx_gpu: no graph row at batch %lld: %s\n", (long long)B, err.msg);
        return 1;
    }
    return 0;
}

static void bg_wm_infer_graph(bg_env *e, void *arg) {
    (void)e;
    bg_wm_graph *G = arg;
    const bg_wm *w = G->w;
    const int64_t n = G->x->numel;
    for (int64_t i = 0; i < n; i++) G->hx[i] = (gx_real)w->x[i];
    gx_real *logits = G->logits;                 /* the capture's address */
    gx_cuda_pass_begin(&G->pass);
    gx_cuda_exec_upload(&G->pass.in_exec, G->x->data, G->hx, (size_t)n * sizeof(gx_real));
    gx_cuda_pass_launch(&G->pass);
    gx_cuda_exec_download(&G->pass.in_exec, G->hl, logits, (size_t)(w->B * w->m->cfg.classes) * sizeof(gx_real));
}

static void bg_wm_train(bg_env *e, void *arg) {
    bg_wm *w = arg;
    gx_ctx *ctx = &e->ctx;
    ctx->grad_enabled = 1;
    gx_wm_out o = gx_wm_forward(ctx, w->m, bg_wm_input(ctx, w), NULL, 1);
    gx_tensor *logz = gx_tensor_new_host(ctx, 1, GX_SHAPE(w->B));
    memcpy(logz->data, w->logz, (size_t)w->B * sizeof(gx_real));
    gx_tensor *ce = gx_mean_all(ctx, gx_cross_entropy(ctx, o.logits, w->labels, 0.0));
    gx_tensor *lz = gx_log(ctx, gx_add_scalar(ctx, o.redshift, 1.0));
    gx_tensor *red = gx_mean_all(ctx, gx_square(ctx, gx_sub(ctx, lz, gx_to_ctx(ctx, logz))));
    gx_params_zero_grad(&w->m->params);
    gx_backward(ctx, gx_add(ctx, ce, red), NULL);
    double lr[GX_OPT_MAX_GROUPS];
    for (int g = 0; g < GX_OPT_MAX_GROUPS; g++) lr[g] = 1e-3;
    gx_optim_step(w->opt, &w->m->params, lr);
    gx_ctx_reset(ctx);
}

static void bg_run_wm(bg_env *e) {
    const char *name = e->o->quick ? "tiny" : "default";
    gx_wm_config cfg = e->o->quick ? gx_wm_config_tiny() : gx_wm_config_default();
    if (!e->o->quick) cfg.size = 64;
    gx_wm_model m;
    gx_optim opt;
    gx_err err;
    gx_wm_init(&m, cfg, 1);
    if (gx_train_device_params(&e->dev, &m.params, "wavelet-mamba", &err) != GX_OK) bg_die("wm", &err);
    gx_optim_cfg oc = gx_optim_defaults(GX_OPT_ADAMW);
    if (gx_optim_init(&opt, &m.params, &oc, &err) != GX_OK) bg_die("wm optimiser", &err);
    int maxb = 1;
    for (int i = 0; i < e->o->nb; i++) maxb = e->o->batches[i] > maxb ? e->o->batches[i] : maxb;
    for (int i = 0; i < e->o->ntb; i++) maxb = e->o->train_batches[i] > maxb ? e->o->train_batches[i] : maxb;
    bg_wm w = { &m, &opt, bg_images(maxb, cfg.size, 2), 0, cfg.size,
                malloc((size_t)maxb * sizeof(int32_t)), malloc((size_t)maxb * sizeof(gx_real)) };
    if (!w.labels || !w.logz) bg_die("wm labels", NULL);
    for (int i = 0; i < maxb; i++) {
        w.labels[i] = (int32_t)(i % cfg.classes);
        w.logz[i] = (gx_real)log1p(0.05 + 0.01 * i);
    }
    for (int i = 0; i < e->o->nb; i++) {
        w.B = e->o->batches[i];
        bg_time(e, "wavelet-mamba", name, cfg.size, "infer", (int)w.B, "images/s", bg_wm_infer, &w);
        bg_wm_graph G;
        if (bg_wm_graph_init(e, &w, &G) == 0) {
            e->graph = 1;
            bg_time(e, "wavelet-mamba", name, cfg.size, "infer", (int)w.B, "images/s", bg_wm_infer_graph, &G);
            e->graph = 0;
        }
        bg_wm_graph_free(&G);
    }
    for (int i = 0; i < e->o->ntb; i++) {
        w.B = e->o->train_batches[i];
        bg_time(e, "wavelet-mamba", name, cfg.size, "train", (int)w.B, "images/s", bg_wm_train, &w);
    }
    free((void *)w.x); free(w.labels); free(w.logz);
    gx_optim_free(&opt);
    gx_wm_free(&m);
}

/* ------------------------------------------------------------------ CF-INN */

typedef struct { gx_cf_model *m; const float *x; int64_t B; int64_t *pred; float *probs, *nll; float *xcf; } bg_cf;

static void bg_cf_classify(bg_env *e, void *arg) {
    bg_cf *c = arg;
    gx_err err;
    if (gx_cf_classify(&e->ctx, c->m, c->x, c->B, c->pred, c->probs, c->nll, NULL, &err) != GX_OK)
        bg_die("cf classify", &err);
    gx_ctx_reset(&e->ctx);
}

static void bg_cf_grid(bg_env *e, void *arg) {
    bg_cf *c = arg;
    int64_t targets[GX_CF_MAX_CLASSES];
    gx_cf_result res[GX_CF_MAX_CLASSES];
    int K = (int)c->m->cfg.classes;
    for (int k = 0; k < K; k++) targets[k] = k;
    gx_err err;
    if (gx_cf_counterfactuals(&e->ctx, c->m, c->x, targets, K, NULL, c->xcf, res, &err) != GX_OK)
        bg_die("cf grid", &err);
    gx_ctx_reset(&e->ctx);
}

static void bg_run_cf(bg_env *e) {
    const char *name = e->o->quick ? "tiny" : "default";
    gx_cf_model m;
    gx_err err;
    gx_cf_init(&m, e->o->quick ? gx_cf_config_tiny() : gx_cf_config_default(), 1);
    const int64_t S = m.cfg.size, K = m.cfg.classes;
    int maxb = 64;                         /* m-hat from 64 images, as bench_cf */
    for (int i = 0; i < e->o->nb; i++) maxb = e->o->batches[i] > maxb ? e->o->batches[i] : maxb;
    bg_cf c = { &m, bg_images(maxb, S, 2), 0, malloc((size_t)maxb * sizeof(int64_t)),
                malloc((size_t)(maxb * K) * sizeof(float)), malloc((size_t)maxb * sizeof(float)),
                malloc((size_t)(K * 3 * S * S) * sizeof(float)) };
    if (!c.pred || !c.probs || !c.nll || !c.xcf) bg_die("cf buffers", NULL);
    /* m-hat (the grid needs it) on the host, before the upload: it writes the
     * model's buffers, which are read-only once on the device. */
    gx_ctx host;
    gx_ctx_init(&host, 64u << 20);
    if (gx_cf_compute_mhat(&host, &m, c.x, 64, &err) != GX_OK) bg_die("cf m-hat", &err);
    gx_ctx_free(&host);
    if (gx_train_device_params(&e->dev, &m.params, "cf-inn", &err) != GX_OK) bg_die("cf", &err);
    for (int i = 0; i < e->o->nb; i++) {
        c.B = e->o->batches[i];
        bg_time(e, "cf-inn", name, S, "classify", (int)c.B, "images/s", bg_cf_classify, &c);
    }
    bg_time(e, "cf-inn", name, S, "cfgrid", 1, "grids/s", bg_cf_grid, &c);
    free((void *)c.x); free(c.pred); free(c.probs); free(c.nll); free(c.xcf);
    gx_cf_free(&m);
}

/* --------------------------------------------------------------------- UDA */

typedef struct { gx_uda_model *m; const float *x; int64_t B; float *probs, *ent; int64_t *pred; } bg_uda;

static void bg_uda_predict(bg_env *e, void *arg) {
    bg_uda *u = arg;
    gx_err err;
    if (gx_uda_predict(&e->ctx, u->m, u->x, u->m->cfg.size, u->B, GX_UDA_TARGET, u->probs, u->ent, u->pred,
                       &err) != GX_OK)
        bg_die("uda predict", &err);
}

static void bg_run_uda(bg_env *e) {
    const char *name = e->o->quick ? "tiny" : "resnet18";
    gx_uda_model m;
    gx_err err;
    gx_uda_init(&m, e->o->quick ? gx_uda_config_tiny() : gx_uda_config_resnet18(), 1);
    int maxb = 1;
    for (int i = 0; i < e->o->nb; i++) maxb = e->o->batches[i] > maxb ? e->o->batches[i] : maxb;
    const int64_t S = m.cfg.size, K = m.cfg.classes;
    bg_uda u = { &m, bg_images(maxb, S, 2), 0, malloc((size_t)(maxb * K) * sizeof(float)),
                 malloc((size_t)maxb * sizeof(float)), malloc((size_t)maxb * sizeof(int64_t)) };
    if (!u.probs || !u.ent || !u.pred) bg_die("uda buffers", NULL);
    if (gx_train_device_params(&e->dev, &m.params, "uda", &err) != GX_OK) bg_die("uda", &err);
    for (int i = 0; i < e->o->nb; i++) {
        u.B = e->o->batches[i];
        bg_time(e, "uda", name, S, "predict", (int)u.B, "images/s", bg_uda_predict, &u);
    }
    free((void *)u.x); free(u.probs); free(u.ent); free(u.pred);
    gx_uda_free(&m);
}

/* --------------------------------------------------------------------- main */

static int bg_list(const char *s, int *out) {
    int n = 0;
    while (*s && n < BG_MAX_LIST) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 4096) return -1;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

/* "fp32,tf32" -> o->fp32, o->tf32; -1 for anything else or an empty list. */
static int bg_precisions(const char *s, bg_opts *o) {
    o->fp32 = o->tf32 = 0;
    while (*s) {
        size_t n = strcspn(s, ",");
        if (n == 4 && !strncmp(s, "fp32", 4)) o->fp32 = 1;
        else if (n == 4 && !strncmp(s, "tf32", 4)) o->tf32 = 1;
        else return -1;
        s += n;
        if (*s == ',') s++;
    }
    return o->fp32 || o->tf32 ? 0 : -1;
}

static void bg_usage(FILE *f) {
    fprintf(f, "usage: bench_gx_gpu [--quick] [--seconds S] [--models wm,cf,uda] [--batches 1,32,256]\n"
               "                    [--train-batches 32,256] [--precisions fp32,tf32]\n"
               "Times WaveletMamba, CF-INN and UDA on GPU 0 (the CUDA backend); one JSON line per case.\n"
               "--quick: tiny configs, small batches, fp32 only (a smoke run). Without a GPU: a skip line, exit 0.\n"
               "--precisions: fp32 (cuBLAS FP32 exact) and/or tf32 (TF32 tensor cores), default both.\n");
}

static int bg_parse(int argc, char **argv, bg_opts *o) {
    *o = (bg_opts){ .seconds = 2.0, .models = "wm,cf,uda" };
    const char *b = NULL, *tb = NULL, *pr = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { bg_usage(stdout); return 0; }
        if (!strcmp(a, "--quick")) { o->quick = 1; continue; }
        if (!v) { fprintf(stderr, "bench_gx_gpu: %s: unknown or missing its value\n", a); return 2; }
        if (!strcmp(a, "--seconds")) o->seconds = atof(v);
        else if (!strcmp(a, "--models")) o->models = v;
        else if (!strcmp(a, "--batches")) b = v;
        else if (!strcmp(a, "--train-batches")) tb = v;
        else if (!strcmp(a, "--precisions")) pr = v;
        else { fprintf(stderr, "bench_gx_gpu: %s: unknown option\n", a); return 2; }
        i++;
    }
    o->nb = bg_list(b ? b : o->quick ? "1,8" : "1,32,256", o->batches);
    o->ntb = bg_list(tb ? tb : o->quick ? "8" : "32,256", o->train_batches);
    if (o->nb < 0 || o->ntb < 0) {
        fprintf(stderr, "bench_gx_gpu: --batches/--train-batches: comma list of integers in [1, 4096]\n");
        return 2;
    }
    if (bg_precisions(pr ? pr : o->quick ? "fp32" : "fp32,tf32", o)) {
        fprintf(stderr, "bench_gx_gpu: --precisions: comma list of fp32, tf32 (got '%s')\n", pr);
        return 2;
    }
    return 1;
}

int main(int argc, char **argv) {
    bg_opts o;
    int rc = bg_parse(argc, argv, &o);
    if (rc != 1) return rc;
    char why[160];
    if (gx_cuda_probe(why, sizeof why) <= 0) {
        fprintf(stderr, "bench_gx_gpu: skipped: no GPU (%s)\n", why);
        return 0;
    }
    for (int tf32 = 0; tf32 <= 1; tf32++) {
        if (!(tf32 ? o.tf32 : o.fp32)) continue;
        bg_env e = { .o = &o, .precision = tf32 ? "tf32" : "fp32" };
        gx_err err;
        if (gx_train_device_open_tf32(&e.dev, GX_DEVICE_CUDA, tf32, &err) != GX_OK) bg_die("device", &err);
        gx_ctx_init(&e.ctx, 64u << 20);
        gx_train_device_ctx(&e.dev, &e.ctx);
        if (strstr(o.models, "wm")) bg_run_wm(&e);
        if (strstr(o.models, "cf")) bg_run_cf(&e);
        if (strstr(o.models, "uda")) bg_run_uda(&e);
        gx_ctx_free(&e.ctx);
        gx_train_device_close(&e.dev);
    }
    return 0;
}
