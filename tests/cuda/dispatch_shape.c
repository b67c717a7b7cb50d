/*
 * dispatch_shape.c — pooling, shape, the selective scan, Sinkhorn and the
 * optimiser reached through the gx API with device tensors
 * (kernels/cuda/gx_cuda_ops_shape.c), against the same calls on the CPU.
 *
 * Tolerances are those of tests/cuda/test_cuda.c for the same launchers:
 * pooling and resizing 1e-6 + 1e-6 (max pooling's forward is exact, its
 * backward sums); copies exact, 1e-6 where two gradients add into one
 * buffer; the scan 1e-4 + 1e-4 (float atomics); Sinkhorn 1e-5 + 1e-5; the
 * optimiser 1e-6 after three steps, the clipping norm 1e-9 relative. The
 * builders use only this file's ops (zeros and concat to plant an empty
 * Sinkhorn bin, nearest x2 to plant max-pool ties), so a failure points
 * here and not at another family's dispatch.
 *
 * The optimiser's device-state plumbing (mirror made at the first step,
 * checkpoint download and upload, free back to the pool) is also run on an
 * emulated exec, which needs no GPU: those tests run everywhere.
 */
#include "dispatch_util.h"

#include <stdlib.h>
#include <string.h>

#define TOL_POOL ((gx_gpu_tol){ 1e-6, 1e-6, 1 })   /* test_cuda.c ATOL_E */
#define TOL_SUM2 ((gx_gpu_tol){ 1e-6, 1e-6, 1 })   /* copies adding twice into one gradient */
#define TOL_SCAN ((gx_gpu_tol){ 1e-4, 1e-4, 1 })   /* ATOL_G: float atomics over the batch */
#define TOL_SK   ((gx_gpu_tol){ 1e-5, 1e-5, 1 })   /* ATOL_R */

/* ================================================================ pooling */

typedef struct { int kind; int64_t oh, ow; } pool_arg;   /* kind 1: bilinear */

static gx_tensor *build_resample(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const pool_arg *a = arg;
    return a->kind ? gx_resize_bilinear(ctx, in[0], a->oh, a->ow) : gx_adaptive_avg_pool2d(ctx, in[0], a->oh, a->ow);
}

/* test_cuda.c's geometries (overlapping bins 7 -> 3, upsampling 5 -> 8,
 * global 8 -> 1, identity), plus 33 channels, odd sizes, a 1x1 input. */
static void run_resample(gx_test_state *T, int kind) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    static const int64_t R[][6] = {   /* B, C, H, W, oh, ow */
        { 2, 3, 7, 5, 3, 3 }, { 2, 3, 5, 6, 8, 9 }, { 2, 3, 8, 8, 1, 1 }, { 2, 3, 6, 7, 6, 7 },
        { 3, 33, 9, 11, 4, 5 }, { 1, 2, 1, 1, 3, 2 }, { 2, 1, 13, 4, 5, 9 },
    };
    char label[96];
    for (size_t k = 0; k < sizeof R / sizeof *R; k++) {
        const int64_t *r = R[k];
        pool_arg a = { kind, r[4], r[5] };
        gx_gpu_input in[1] = { { 4, GX_SHAPE(r[0], r[1], r[2], r[3]), -1, 1, 1 } };
        snprintf(label, sizeof label, "%s %lldx%lld -> %lldx%lld", kind ? "resize_bilinear" : "adaptive_avg_pool2d",
                 (long long)r[2], (long long)r[3], (long long)r[4], (long long)r[5]);
        gx_gpu_check(T, &g, label, build_resample, &a, 1, in, TOL_POOL);
    }
    gx_gpu_close(&g);
}

GX_TEST(dispatch_adaptive_avg_pool2d) { run_resample(T, 0); }
GX_TEST(dispatch_resize_bilinear) { run_resample(T, 1); }

static gx_tensor *build_nearest(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    (void)arg;
    return gx_upsample_nearest2x(ctx, in[0]);
}

GX_TEST(dispatch_upsample_nearest2x) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    gx_gpu_input a[1] = { { 4, GX_SHAPE(2, 3, 5, 4), -1, 1, 1 } };
    gx_gpu_check(T, &g, "nearest2x 5x4", build_nearest, NULL, 1, a, TOL_POOL);
    gx_gpu_input b[1] = { { 4, GX_SHAPE(1, 40, 3, 7), -1, 1, 1 } };
    gx_gpu_check(T, &g, "nearest2x 40 channels 3x7", build_nearest, NULL, 1, b, TOL_POOL);
    gx_gpu_close(&g);
}

typedef struct { int ks, stride, pad, ties; } mp_arg;

/* ties: pooled after a nearest x2, so every window holds equal values and
 * the first maximum in row-major order must win on both sides. */
static gx_tensor *build_maxpool(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const mp_arg *a = arg;
    gx_tensor *x = a->ties ? gx_upsample_nearest2x(ctx, in[0]) : in[0];
    return gx_max_pool2d(ctx, x, a->ks, a->stride, a->pad);
}

GX_TEST(dispatch_max_pool2d) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    static const int C[][8] = {   /* B, C, H, W, ks, stride, pad, ties */
        { 2, 3, 9, 8, 3, 2, 1, 0 }, { 2, 3, 8, 8, 2, 2, 0, 0 }, { 2, 3, 7, 6, 3, 1, 1, 0 },
        { 1, 35, 5, 7, 3, 2, 1, 0 }, { 2, 3, 5, 4, 3, 2, 1, 1 }, { 1, 2, 3, 3, 2, 1, 1, 1 },
    };
    char label[96];
    for (size_t k = 0; k < sizeof C / sizeof *C; k++) {
        const int *c = C[k];
        mp_arg a = { c[4], c[5], c[6], c[7] };
        gx_gpu_input in[1] = { { 4, GX_SHAPE(c[0], c[1], c[2], c[3]), -1, 1, 1 } };
        snprintf(label, sizeof label, "max_pool2d %dx%d k%d s%d p%d%s", c[2], c[3], c[4], c[5], c[6],
                 c[7] ? " ties" : "");
        gx_gpu_check(T, &g, label, build_maxpool, &a, 1, in, TOL_POOL);
    }
    gx_gpu_close(&g);
}

/* ================================================================== shape */

static gx_tensor *build_reshape(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    (void)arg;
    return gx_reshape(ctx, in[0], 3, GX_SHAPE(3, -1, 2));
}

/* Two views of x joined: x's gradient is the sum of both (accumulated). */
static gx_tensor *build_reshape_twice(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    (void)arg;
    gx_tensor *v[2] = { gx_reshape(ctx, in[0], 2, GX_SHAPE(2, 12)), gx_reshape(ctx, in[0], 2, GX_SHAPE(-1, 12)) };
    return gx_concat(ctx, 2, v, 0);
}

GX_TEST(dispatch_reshape) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    gx_gpu_input in[1] = { { 2, GX_SHAPE(4, 6), -1, 1, 1 } };
    gx_gpu_check(T, &g, "reshape [4,6] -> [3,-1,2]", build_reshape, NULL, 1, in, GX_GPU_TOL_EXACT);
    gx_gpu_check(T, &g, "reshape twice, joined", build_reshape_twice, NULL, 1, in, TOL_SUM2);
    /* A device view aliases its input, as on the CPU. */
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    ctx.cuda = &g.exec;
    gx_tensor *x = gx_tensor_zeros(&ctx, 2, GX_SHAPE(4, 6));
    gx_tensor *y = gx_reshape(&ctx, x, 1, GX_SHAPE(24));
    CHECK(y->device == GX_DEVICE_CUDA && y->data == x->data && y->ndim == 1 && y->shape[0] == 24);
    gx_err err;
    CHECK_MSG(gx_cuda_exec_sync(&g.exec, &err) == GX_OK, "%s", err.msg);
    gx_ctx_free(&ctx);
    gx_gpu_close(&g);
}

typedef struct { int perm[GX_MAX_DIMS]; } perm_arg;

static gx_tensor *build_permute(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    return gx_permute(ctx, in[0], ((const perm_arg *)arg)->perm);
}

GX_TEST(dispatch_permute) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    perm_arg p4 = { { 2, 0, 3, 1 } }, p3 = { { 1, 0, 2 } }, p6 = { { 5, 3, 1, 0, 4, 2 } }, p2 = { { 1, 0 } };
    gx_gpu_input a[1] = { { 4, GX_SHAPE(2, 3, 4, 5), -1, 1, 1 } };
    gx_gpu_check(T, &g, "permute 4-D (2,0,3,1)", build_permute, &p4, 1, a, GX_GPU_TOL_EXACT);
    gx_gpu_input b[1] = { { 3, GX_SHAPE(5, 7, 33), -1, 1, 1 } };
    gx_gpu_check(T, &g, "permute 3-D, last dim kept", build_permute, &p3, 1, b, GX_GPU_TOL_EXACT);
    gx_gpu_input c[1] = { { 6, GX_SHAPE(2, 1, 3, 2, 4, 3), -1, 1, 1 } };
    gx_gpu_check(T, &g, "permute 6-D", build_permute, &p6, 1, c, GX_GPU_TOL_EXACT);
    gx_gpu_input d[1] = { { 2, GX_SHAPE(37, 65), -1, 1, 1 } };
    gx_gpu_check(T, &g, "permute transpose 37x65", build_permute, &p2, 1, d, GX_GPU_TOL_EXACT);
    gx_gpu_close(&g);
}

typedef struct { int n, dim; int idx[10]; } cat_arg;   /* inputs in[idx[0..n)] along dim */

static gx_tensor *build_concat(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const cat_arg *a = arg;
    gx_tensor *xs[10];
    for (int k = 0; k < a->n; k++) xs[k] = in[a->idx[k]];
    return gx_concat(ctx, a->n, xs, a->dim);
}

GX_TEST(dispatch_concat) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    /* Three inputs along the middle dim, input 1 without a gradient (the
     * launcher's NULL entry). */
    cat_arg mid = { 3, 1, { 0, 1, 2 } };
    gx_gpu_input a[3] = { { 3, GX_SHAPE(2, 3, 5), -1, 1, 1 }, { 3, GX_SHAPE(2, 1, 5), -1, 1, 0 },
                          { 3, GX_SHAPE(2, 4, 5), -1, 1, 1 } };
    gx_gpu_check(T, &g, "concat dim 1", build_concat, &mid, 3, a, GX_GPU_TOL_EXACT);
    cat_arg first = { 2, 0, { 0, 1 } }, last = { 2, -1, { 0, 1 } };
    gx_gpu_input b[2] = { { 2, GX_SHAPE(3, 40), -1, 1, 1 }, { 2, GX_SHAPE(5, 40), -1, 1, 1 } };
    gx_gpu_check(T, &g, "concat dim 0", build_concat, &first, 2, b, GX_GPU_TOL_EXACT);
    gx_gpu_input c[2] = { { 3, GX_SHAPE(2, 3, 7), -1, 1, 1 }, { 3, GX_SHAPE(2, 3, 33), -1, 1, 1 } };
    gx_gpu_check(T, &g, "concat dim -1", build_concat, &last, 2, c, GX_GPU_TOL_EXACT);
    /* More inputs than a tape node holds (the CPU entry's nested concat),
     * two of them used twice: their gradients add. */
    cat_arg many = { 8, 1, { 0, 1, 2, 3, 4, 5, 0, 2 } };
    gx_gpu_input d[6] = { { 2, GX_SHAPE(3, 1), -1, 1, 1 }, { 2, GX_SHAPE(3, 2), -1, 1, 1 },
                          { 2, GX_SHAPE(3, 3), -1, 1, 1 }, { 2, GX_SHAPE(3, 4), -1, 1, 1 },
                          { 2, GX_SHAPE(3, 5), -1, 1, 1 }, { 2, GX_SHAPE(3, 6), -1, 1, 1 } };
    gx_gpu_check(T, &g, "concat of 8 (nested)", build_concat, &many, 6, d, TOL_SUM2);
    gx_gpu_close(&g);
}

typedef struct { int dim; int64_t start, end; } slice_arg;

static gx_tensor *build_slice(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const slice_arg *a = arg;
    return gx_slice(ctx, in[0], a->dim, a->start, a->end);
}

GX_TEST(dispatch_slice) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    static const slice_arg S[] = { { 1, 2, 6 }, { -1, 0, 3 }, { 0, 3, 4 }, { 2, 1, 5 }, { 1, 0, 7 } };
    gx_gpu_input in[1] = { { 3, GX_SHAPE(4, 7, 5), -1, 1, 1 } };
    char label[64];
    for (size_t k = 0; k < sizeof S / sizeof *S; k++) {
        snprintf(label, sizeof label, "slice dim %d [%lld, %lld)", S[k].dim, (long long)S[k].start,
                 (long long)S[k].end);
        gx_gpu_check(T, &g, label, build_slice, (void *)&S[k], 1, in, GX_GPU_TOL_EXACT);
    }
    gx_gpu_close(&g);
}

/* Three parts, joined as (part 2, part 0): part 1 gets no gradient. */
static gx_tensor *build_split(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    (void)arg;
    gx_tensor *parts[3];
    gx_split(ctx, in[0], 1, 3, GX_SHAPE(3, 5, 2), parts);
    gx_tensor *two[2] = { parts[2], parts[0] };
    return gx_concat(ctx, 2, two, 1);
}

GX_TEST(dispatch_split) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    gx_gpu_input in[1] = { { 3, GX_SHAPE(3, 10, 34), -1, 1, 1 } };
    gx_gpu_check(T, &g, "split (3,5,2), parts 2 and 0 joined", build_split, NULL, 1, in, GX_GPU_TOL_EXACT);
    gx_gpu_close(&g);
}

static gx_tensor *build_flip(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    return gx_flip(ctx, in[0], *(const int *)arg);
}

GX_TEST(dispatch_flip) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    static const int dims[] = { 0, 1, -1 };
    gx_gpu_input in[1] = { { 3, GX_SHAPE(3, 5, 7), -1, 1, 1 } };
    char label[32];
    for (size_t k = 0; k < sizeof dims / sizeof *dims; k++) {
        snprintf(label, sizeof label, "flip dim %d", dims[k]);
        gx_gpu_check(T, &g, label, build_flip, (void *)&dims[k], 1, in, GX_GPU_TOL_EXACT);
    }
    gx_gpu_close(&g);
}

/* ========================================================= selective scan */

static gx_tensor *build_scan(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    (void)arg;
    return gx_ssm_scan(ctx, in[0], in[1], in[2], in[3], in[4]);
}

GX_TEST(dispatch_ssm_scan) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    /* B, L, E, N, token mode, delta's range (a tiny one takes the
     * |delta A| < 1e-6 branch everywhere), gradient of A and Cm wanted. */
    static const struct { int64_t B, L, E, N; int token; double dlo, dhi; int gAC; } C[] = {
        { 2, 9, 5, 16, 1, 0.01, 1, 1 },  { 2, 9, 5, 16, 0, 0.01, 1, 1 },   { 3, 17, 37, 5, 1, 0.01, 1, 1 },
        { 1, 4, 3, 32, 1, 0.01, 1, 1 },  { 2, 6, 40, 8, 1, 1e-8, 3e-7, 1 }, { 2, 5, 70, 16, 0, 0.01, 1, 1 },
        { 3, 8, 33, 16, 1, 0.01, 1, 0 },
    };
    char label[96];
    for (size_t k = 0; k < sizeof C / sizeof *C; k++) {
        const int64_t B = C[k].B, L = C[k].L, E = C[k].E, N = C[k].N, Ld = C[k].token ? L : 1;
        gx_gpu_input in[5] = {
            { 3, GX_SHAPE(B, L, E), -1, 1, 1 },  { 3, GX_SHAPE(B, Ld, E), C[k].dlo, C[k].dhi, 1 },
            { 2, GX_SHAPE(E, N), -3, -0.05, C[k].gAC }, { 2, GX_SHAPE(E, N), -1, 1, 1 },
            { 2, GX_SHAPE(E, N), -1, 1, C[k].gAC },
        };
        snprintf(label, sizeof label, "ssm_scan B%lld L%lld E%lld N%lld %s%s", (long long)B, (long long)L,
                 (long long)E, (long long)N, C[k].token ? "token" : "mean", C[k].dhi < 1e-6 ? " limit" : "");
        gx_gpu_check(T, &g, label, build_scan, NULL, 5, in, TOL_SCAN);
    }
    gx_gpu_close(&g);
}

/* =============================================================== Sinkhorn */

typedef struct { int64_t B, n; int iters; double lambda; int c_dev, zero_bin; } sk_arg;

/* C as the loss builds it (a squared-distance cost), on the host or the
 * device; zero_bin: a = [0 | in[0]], an empty first bin. */
static gx_tensor *build_sinkhorn(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const sk_arg *s = arg;
    const int64_t n = s->n;
    gx_real *c = gx_ctx_alloc(ctx, (size_t)(n * n) * sizeof(gx_real));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) c[i * n + j] = (gx_real)((i - j) * (i - j)) / (gx_real)(n * n);
    gx_tensor *C;
    if (s->c_dev) {
        C = gx_tensor_from(ctx, 2, GX_SHAPE(n, n), c);
    } else {
        C = gx_tensor_new_host(ctx, 2, GX_SHAPE(n, n));
        memcpy(C->data, c, (size_t)(n * n) * sizeof(gx_real));
    }
    gx_tensor *a = in[0];
    if (s->zero_bin) {
        gx_tensor *parts[2] = { gx_tensor_zeros(ctx, 2, GX_SHAPE(s->B, 1)), in[0] };
        a = gx_concat(ctx, 2, parts, 1);
    }
    return gx_sinkhorn_hk(ctx, a, in[1], C, s->lambda, s->iters, 1e-4);
}

GX_TEST(dispatch_sinkhorn_hk) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    static const sk_arg S[] = {
        { 37, 40, 50, 0.1, 0, 1 },   /* the model's sizes, an empty bin, C on the host */
        { 2, 7, 1, 0.5, 1, 0 },      /* one iteration, C on the device */
        { 5, 12, 20, 0.3, 1, 1 },
    };
    char label[96];
    for (size_t k = 0; k < sizeof S / sizeof *S; k++) {
        const int64_t B = S[k].B, n = S[k].n;
        gx_gpu_input in[2] = { { 2, GX_SHAPE(B, S[k].zero_bin ? n - 1 : n), 0.01, 1, 1 },
                               { 2, GX_SHAPE(B, n), 0.01, 1, 1 } };
        snprintf(label, sizeof label, "sinkhorn_hk B%lld n%lld iters %d", (long long)B, (long long)n, S[k].iters);
        gx_gpu_check(T, &g, label, build_sinkhorn, (void *)&S[k], 2, in, TOL_SK);
    }
    /* Forward only: nothing recorded, no denominators kept. */
    static const sk_arg F = { 4, 9, 10, 0.2, 1, 0 };
    gx_gpu_input in[2] = { { 2, GX_SHAPE(F.B, F.n), 0.01, 1, 0 }, { 2, GX_SHAPE(F.B, F.n), 0.01, 1, 0 } };
    gx_gpu_tol fwd = TOL_SK;
    fwd.backward = 0;
    gx_gpu_check(T, &g, "sinkhorn_hk forward only", build_sinkhorn, (void *)&F, 2, in, fwd);
    gx_gpu_close(&g);
}

/* ============================================================== optimiser */

/* A registry with every kind of entry: decayed and not, two groups, a
 * frozen tensor and a buffer (neither is optimised). */
static void opt_registry(gx_params *p, uint64_t seed) {
    gx_params_init(p);
    gx_tensor *t[4] = { gx_params_add(p, "w", 2, GX_SHAPE(33, 65), GX_PARAM_DECAY),
                        gx_params_add(p, "b", 1, GX_SHAPE(13), 0),
                        gx_params_add(p, "f", 1, GX_SHAPE(4), GX_PARAM_FROZEN),
                        gx_params_add(p, "r", 1, GX_SHAPE(3), GX_PARAM_BUFFER) };
    p->items[1]->group = 1;
    gx_rng rng;
    gx_rng_init(&rng, seed);
    for (int i = 0; i < 4; i++) gx_rng_fill_uniform(&rng, t[i]->data, t[i]->numel, -1, 1);
}

/* The same random gradients into both registries (the device one through
 * its exec: t.grad is device memory there). */
static void opt_grads(gx_params *c, gx_params *d, gx_rng *rng) {
    for (int i = 0; i < c->n; i++) {
        gx_tensor *t = &c->items[i]->t;
        if (!t->grad) continue;
        gx_rng_fill_uniform(rng, t->grad, t->numel, -1, 1);
        gx_cuda_exec_upload(d->cuda, d->items[i]->t.grad, t->grad, (size_t)t->numel * sizeof(gx_real));
    }
}

/* The optimiser's state file as bytes. */
static uint8_t *opt_state_bytes(gx_test_state *T, const gx_optim *o, const gx_params *p, size_t *len) {
    gx_st_writer w;
    gx_st_writer_init(&w);
    gx_err err;
    uint8_t *buf = NULL;
    *len = 0;
    CHECK_MSG(gx_optim_state_to_writer(o, p, &w, &err) == GX_OK, "%s", err.msg);
    CHECK_MSG(gx_st_writer_serialize(&w, &buf, len, &err) == GX_OK, "%s", err.msg);
    gx_st_writer_free(&w);
    return buf;
}

static gx_optim_cfg opt_cfg(int k) {
    gx_optim_cfg c = gx_optim_defaults(k == 0 ? GX_OPT_ADAMW : k == 1 ? GX_OPT_ADAM : GX_OPT_SGD);
    if (k == 1) c.weight_decay = 0.05;
    if (k == 2) { c.momentum = 0.9; c.nesterov = 1; c.weight_decay = 0.01; }
    return c;   /* k == 3: plain SGD, no state */
}

GX_TEST(dispatch_optim_step_and_clip) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    const double lr[2] = { 0.01, 0.003 };
    char what[96];
    for (int k = 0; k < 4; k++) {
        gx_params pc, pd;
        opt_registry(&pc, 11);
        opt_registry(&pd, 11);
        gx_err err;
        CHECK_MSG(gx_params_to_cuda(&pd, &g.exec, &err) == GX_OK, "%s", err.msg);
        gx_optim_cfg cfg = opt_cfg(k);
        gx_optim oc, od;
        CHECK(gx_optim_init(&oc, &pc, &cfg, &err) == GX_OK && gx_optim_init(&od, &pd, &cfg, &err) == GX_OK);
        gx_rng rng;
        gx_rng_init(&rng, 100 + (uint64_t)k);
        for (int step = 1; step <= 3; step++) {
            opt_grads(&pc, &pd, &rng);
            /* A no-op bound at step 1, clipped at steps 2 and 3 (the norm
             * of ~2100 uniform values is ~26), so the gradients compared
             * below are scaled ones. */
            const double max_norm = step >= 2 ? 0.5 : 1e6;
            const double nd = gx_clip_grad_norm(&pd, max_norm), nc = gx_clip_grad_norm(&pc, max_norm);
            CHECK_MSG(fabs(nd - nc) <= 1e-9 * nc, "optim %d step %d: clip norm gpu %.17g cpu %.17g", k, step, nd, nc);
            gx_optim_step(&oc, &pc, lr);
            gx_optim_step(&od, &pd, lr);
        }
        CHECK_MSG(gx_params_sync_host(&pd, &err) == GX_OK, "%s", err.msg);
        for (int i = 0; i < pc.n; i++) {
            const gx_param *qc = pc.items[i], *qd = pd.items[i];
            snprintf(what, sizeof what, "optim %d: %.32s after 3 steps", k, qc->name);
            gx_test_allclose(T, what, qd->host_data, qc->t.data, qc->t.numel, 1e-6, 1e-6);
            if (qc->t.grad) {
                snprintf(what, sizeof what, "optim %d: clipped gradient of %.32s", k, qc->name);
                gx_test_allclose(T, what, qd->host_grad, qc->t.grad, qc->t.numel, 1e-6, 1e-6);
            }
        }
        /* The moments come back from the device for the state file. */
        size_t lc, ld;
        uint8_t *bc = opt_state_bytes(T, &oc, &pc, &lc), *bd = opt_state_bytes(T, &od, &pd, &ld);
        CHECK(lc == ld && od.step == 3);
        snprintf(what, sizeof what, "optim %d: state downloaded for the file", k);
        gx_test_allclose(T, what, od.state, oc.state, oc.state_len, 1e-6, 1e-6);
        free(bc);
        free(bd);
        gx_optim_free(&od);
        gx_optim_free(&oc);
        gx_params_free(&pd);
        gx_params_free(&pc);
        CHECK_MSG(gx_cuda_pool_in_use(g.pool) == 0, "optim %d: %zu bytes still out of the pool", k,
                  gx_cuda_pool_in_use(g.pool));
    }
    gx_gpu_close(&g);
}

/* ---------------------------------------- the state plumbing, emulated */

typedef struct {
    gx_cuda_pool *pool;
    gx_cuda_exec  exec;
} emu_env;

static void emu_open(gx_test_state *T, emu_env *e) {
    gx_cuda_backend be = gx_cuda_host_backend();
    gx_err err;
    CHECK_MSG(gx_cuda_pool_create(&be, 0, &e->pool, &err) == GX_OK, "%s", err.msg);
    gx_cuda_exec_init_emulated(&e->exec, e->pool);
}

static void emu_close(gx_test_state *T, emu_env *e) {
    CHECK_MSG(gx_cuda_pool_in_use(e->pool) == 0, "%zu bytes still out of the pool", gx_cuda_pool_in_use(e->pool));
    gx_cuda_exec_free(&e->exec);
    gx_cuda_pool_destroy(e->pool);
}

static int same_params(const gx_params *a, const gx_params *b) {
    for (int i = 0; i < a->n; i++)
        if (memcmp(a->items[i]->t.data, b->items[i]->t.data, (size_t)a->items[i]->t.numel * sizeof(gx_real)))
            return 0;
    return 1;
}

/* Parameters on an emulated device: the steps go through the device mirror
 * of the state (the CPU update on it), so the trajectory, the state file
 * (downloaded from the mirror) and a resume must equal the CPU's bit for
 * bit, and the mirror must go back to the pool. */
GX_TEST(dispatch_optim_state_mirror_emulated) {
    const double lr[2] = { 0.01, 0.003 };
    for (int k = 0; k < 4; k++) {
        emu_env e;
        emu_open(T, &e);
        gx_params pc, pd;
        opt_registry(&pc, 21);
        opt_registry(&pd, 21);
        gx_err err;
        CHECK_MSG(gx_params_to_cuda(&pd, &e.exec, &err) == GX_OK, "%s", err.msg);
        gx_optim_cfg cfg = opt_cfg(k);
        gx_optim oc, od;
        CHECK(gx_optim_init(&oc, &pc, &cfg, &err) == GX_OK && gx_optim_init(&od, &pd, &cfg, &err) == GX_OK);
        gx_rng rng;
        gx_rng_init(&rng, 7);
        size_t l1c, l1d;
        opt_grads(&pc, &pd, &rng);
        gx_optim_step(&oc, &pc, lr);
        gx_optim_step(&od, &pd, lr);
        if (od.state_len > 0) {
            /* The live state is the mirror; the host copy is refreshed only
             * for a file. */
            int64_t nz = 0;
            for (int64_t i = 0; i < od.state_len; i++) nz += od.state[i] != 0;
            CHECK_MSG(nz == 0, "optim %d: the host state moved although the mirror is live", k);
        }
        uint8_t *f1c = opt_state_bytes(T, &oc, &pc, &l1c), *f1d = opt_state_bytes(T, &od, &pd, &l1d);
        CHECK_MSG(l1c == l1d && memcmp(f1c, f1d, l1c) == 0, "optim %d: state files differ after step 1", k);
        opt_grads(&pc, &pd, &rng);
        CHECK(gx_clip_grad_norm(&pd, 0.5) == gx_clip_grad_norm(&pc, 0.5));
        gx_optim_step(&oc, &pc, lr);
        gx_optim_step(&od, &pd, lr);
        CHECK_MSG(same_params(&pc, &pd), "optim %d: parameters differ after 2 steps", k);
        /* Back to step 1's state with the mirror already made: the load
         * must reach the mirror, else the next steps differ. */
        gx_st_file f;
        CHECK_MSG(gx_st_parse(&f, f1d, l1d, &err) == GX_OK, "%s", err.msg);
        CHECK_MSG(gx_optim_state_load(&oc, &pc, &f, &err) == GX_OK, "%s", err.msg);
        CHECK_MSG(gx_optim_state_load(&od, &pd, &f, &err) == GX_OK, "%s", err.msg);
        gx_st_close(&f);
        for (int s = 0; s < 2; s++) {
            opt_grads(&pc, &pd, &rng);
            gx_optim_step(&oc, &pc, lr);
            gx_optim_step(&od, &pd, lr);
        }
        CHECK_MSG(same_params(&pc, &pd), "optim %d: parameters differ after a load into the mirror", k);
        /* A resume on fresh device parameters: the loaded state is uploaded
         * into the mirror made at the first step. */
        size_t l2;
        uint8_t *f2 = opt_state_bytes(T, &od, &pd, &l2);
        gx_params pe;
        opt_registry(&pe, 99);
        for (int i = 0; i < pe.n; i++)
            memcpy(pe.items[i]->t.data, pc.items[i]->t.data, (size_t)pc.items[i]->t.numel * sizeof(gx_real));
        CHECK_MSG(gx_params_to_cuda(&pe, &e.exec, &err) == GX_OK, "%s", err.msg);
        gx_optim oe;
        CHECK(gx_optim_init(&oe, &pe, &cfg, &err) == GX_OK);
        CHECK_MSG(gx_st_parse(&f, f2, l2, &err) == GX_OK, "%s", err.msg);
        CHECK_MSG(gx_optim_state_load(&oe, &pe, &f, &err) == GX_OK, "%s", err.msg);
        gx_st_close(&f);
        gx_rng r2 = rng;
        opt_grads(&pc, &pd, &rng);
        opt_grads(&pc, &pe, &r2);
        gx_optim_step(&oc, &pc, lr);
        gx_optim_step(&oe, &pe, lr);
        CHECK_MSG(same_params(&pc, &pe), "optim %d: a resume on device parameters differs", k);
        free(f1c);
        free(f1d);
        free(f2);
        gx_optim_free(&oe);
        gx_optim_free(&od);
        gx_optim_free(&oc);
        gx_params_free(&pe);
        gx_params_free(&pd);
        gx_params_free(&pc);
        emu_close(T, &e);
    }
}
