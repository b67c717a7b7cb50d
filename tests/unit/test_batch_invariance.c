/*
 * test_batch_invariance.c — with ctx->batch_invariant set (gx_ctx_init's
 * default, what galaxyd runs), a sample's eval outputs are bit for bit the
 * outputs of that sample run alone, whatever the batch size and the
 * sample's position in it.
 *
 * Model level: tiny and small WaveletMamba, up to 64 distinct images with
 * distinct coordinates (one row NaN), BN running statistics and colour
 * buffers moved off their init values. Every image runs alone (the
 * reference), then inside batches of 2, 7, 16, 33 and 64 built from a
 * rotated image order (wrapping around, so a batch larger than the image
 * set holds an image several times), so each image sits at several
 * positions; logits, redshift and mu must memcmp equal. With 1 OpenMP
 * thread on 64 images; with 2 threads on fewer images (each forward is far
 * slower when the machine is oversubscribed; the code paths are the same).
 * The reference is taken at the same thread count.
 * Op level: gx_linear (the op whose BLAS call used to fold the batch into
 * one GEMM) and conv2d on odd shapes, against per-sample calls.
 */
#include "gx_test.h"
#include "gx_wavelet_mamba.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BI_IMAGES 64   /* images generated; a case may use the first n */
#define BI_MU 256

/* ------------------------------------------------------------ helpers */

/* Largest |a-b| over n values, for failure messages. */
static double bi_maxdiff(const gx_real *a, const gx_real *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m || isnan(d)) m = d;
    }
    return m;
}

/* Running statistics and colour buffers away from 0/1, so eval BN and the
 * colour normalisation do real arithmetic. */
static void bi_perturb_buffers(gx_wm_model *m, uint64_t seed) {
    gx_rng r;
    gx_rng_init(&r, seed);
    for (int i = 0; i < m->params.n; i++) {
        gx_param *p = m->params.items[i];
        if (!(p->flags & GX_PARAM_BUFFER)) continue;
        int var = strstr(p->name, "running_var") || strstr(p->name, "iqr");
        gx_rng_fill_uniform(&r, p->t.data, p->t.numel, var ? 0.5 : -0.3, var ? 2.0 : 0.3);
    }
}

/* Per-image reference outputs of one configuration. */
typedef struct {
    int64_t K;
    gx_real *logits;   /* [BI_IMAGES, K] */
    gx_real *red;      /* [BI_IMAGES] */
    gx_real *mu;       /* [BI_IMAGES, BI_MU] */
} bi_ref;

typedef struct {
    gx_wm_model m;
    gx_ctx ctx;        /* forward passes (reset after each) */
    gx_ctx data;       /* the images and coordinates */
    gx_tensor *x;      /* [BI_IMAGES, 3, S, S] */
    gx_tensor *c;      /* [BI_IMAGES, 2] */
    int64_t S;
    int n_img;         /* images in use (the first n_img) */
} bi_case;

static void bi_case_init(bi_case *k, gx_wm_config cfg, int64_t S, int n_img, uint64_t seed) {
    gx_wm_init(&k->m, cfg, seed);
    bi_perturb_buffers(&k->m, seed + 1);
    gx_ctx_init(&k->ctx, 64 << 20);   /* batch_invariant on: the default */
    gx_ctx_init(&k->data, 1 << 20);
    k->S = S;
    k->n_img = n_img;
    k->x = gx_tensor_new(&k->data, 4, GX_SHAPE(BI_IMAGES, 3, S, S));
    gx_rng r;
    gx_rng_init(&r, seed + 2);
    gx_rng_fill_uniform(&r, k->x->data, k->x->numel, 0.02, 0.98);
    k->c = gx_tensor_new(&k->data, 2, GX_SHAPE(BI_IMAGES, 2));
    for (int i = 0; i < BI_IMAGES; i++) {
        k->c->data[2 * i] = (gx_real)(5.3 * i + 0.25);
        k->c->data[2 * i + 1] = (gx_real)(1.7 * i - 50.0);
    }
    k->c->data[2 * 5 + 1] = NAN;   /* one sample with missing coordinates */
}

static void bi_case_free(bi_case *k) {
    gx_ctx_free(&k->ctx);
    gx_ctx_free(&k->data);
    gx_wm_free(&k->m);
}

/* Eval forward of images idx[0..n) as one batch, in that order. */
static gx_wm_out bi_forward(bi_case *k, const int *idx, int n) {
    int64_t per = 3 * k->S * k->S;
    gx_tensor *x = gx_tensor_new(&k->ctx, 4, GX_SHAPE(n, 3, k->S, k->S));
    gx_tensor *c = gx_tensor_new(&k->ctx, 2, GX_SHAPE(n, 2));
    for (int j = 0; j < n; j++) {
        memcpy(x->data + j * per, k->x->data + idx[j] * per, (size_t)per * sizeof(gx_real));
        memcpy(c->data + 2 * j, k->c->data + 2 * idx[j], 2 * sizeof(gx_real));
    }
    return gx_wm_forward(&k->ctx, &k->m, x, c, 0);
}

static void bi_ref_take(bi_case *k, bi_ref *ref) {
    ref->K = k->m.cfg.classes;
    ref->logits = malloc((size_t)(BI_IMAGES * ref->K) * sizeof(gx_real));
    ref->red = malloc((size_t)BI_IMAGES * sizeof(gx_real));
    ref->mu = malloc((size_t)(BI_IMAGES * BI_MU) * sizeof(gx_real));
    GX_ASSERT(ref->logits && ref->red && ref->mu);
    for (int i = 0; i < k->n_img; i++) {
        gx_wm_out o = bi_forward(k, &i, 1);
        memcpy(ref->logits + i * ref->K, o.logits->data, (size_t)ref->K * sizeof(gx_real));
        ref->red[i] = o.redshift->data[0];
        memcpy(ref->mu + i * BI_MU, o.mu->data, BI_MU * sizeof(gx_real));
        gx_ctx_reset(&k->ctx);
    }
}

static void bi_ref_free(bi_ref *ref) {
    free(ref->logits);
    free(ref->red);
    free(ref->mu);
}

/* Batches of n images covering all n_img of them, in the order rot,
 * rot+1, ... (mod n_img; the last batch wraps around and repeats a few). Returns the number of mismatching
 * samples; the first few are reported with their largest difference. */
static int bi_check_batches(gx_test_state *T, bi_case *k, const bi_ref *ref, int n, int rot,
                            const char *label) {
    int *idx = malloc((size_t)n * sizeof(int)), bad = 0;
    GX_ASSERT(idx);
    for (int start = 0; start < k->n_img; start += n) {
        for (int j = 0; j < n; j++) idx[j] = (rot + start + j) % k->n_img;
        gx_wm_out o = bi_forward(k, idx, n);
        for (int j = 0; j < n; j++) {
            int i = idx[j];
            const gx_real *lg = o.logits->data + j * ref->K, *mu = o.mu->data + j * BI_MU;
            int ok = !memcmp(lg, ref->logits + i * ref->K, (size_t)ref->K * sizeof(gx_real)) &&
                     !memcmp(&o.redshift->data[j], &ref->red[i], sizeof(gx_real)) &&
                     !memcmp(mu, ref->mu + i * BI_MU, BI_MU * sizeof(gx_real));
            if (ok) continue;
            if (bad++ < 3)
                CHECK_MSG(0, "%s: image %d at position %d of a batch of %d differs from its batch-of-1 "
                          "result (max |diff| logits %g, redshift %g, mu %g)", label, i, j, n,
                          bi_maxdiff(lg, ref->logits + i * ref->K, ref->K),
                          bi_maxdiff(&o.redshift->data[j], &ref->red[i], 1),
                          bi_maxdiff(mu, ref->mu + i * BI_MU, BI_MU));
        }
        gx_ctx_reset(&k->ctx);
    }
    free(idx);
    return bad;
}

/* One configuration on n_img images at `threads` threads: references, then
 * every batch size in `sizes`. */
static void bi_model_case(gx_test_state *T, const char *name, gx_wm_config cfg, int64_t S,
                          int n_img, int threads, const int *sizes, int n_sizes) {
    int saved = gx_get_threads();
    gx_set_threads(threads);
    bi_case k;
    bi_case_init(&k, cfg, S, n_img, 31);
    bi_ref ref;
    bi_ref_take(&k, &ref);
    char label[96];
    snprintf(label, sizeof label, "%s %lldx%lld, %d thread(s)", name, (long long)S, (long long)S,
             threads);
    for (int s = 0; s < n_sizes; s++) {
        int bad = bi_check_batches(T, &k, &ref, sizes[s], (7 * s + 3) % n_img, label);
        CHECK_MSG(bad == 0, "%s: %d of the samples in batches of %d differ", label, bad, sizes[s]);
    }
    bi_ref_free(&ref);
    bi_case_free(&k);
    gx_set_threads(saved);
}

/* ------------------------------------------------------------ model */

static const int bi_sizes[] = { 2, 7, 16, 33, 64 };

GX_TEST(batch_invariance_wm_tiny) {
    bi_model_case(T, "tiny", gx_wm_config_tiny(), 32, BI_IMAGES, 1, bi_sizes, 5);
    bi_model_case(T, "tiny", gx_wm_config_tiny(), 32, 16, 2, bi_sizes, 5);
}

/* An odd image size: rows of the per-pixel reductions start at addresses
 * that differ between a sample alone and inside a batch. */
GX_TEST(batch_invariance_wm_tiny_odd_size) {
    static const int sizes[] = { 7, 33 };
    bi_model_case(T, "tiny", gx_wm_config_tiny(), 33, 16, 1, sizes, 2);
    bi_model_case(T, "tiny", gx_wm_config_tiny(), 33, 8, 2, sizes, 2);
}

/* The small config at the serving size 64x64. */
GX_TEST(batch_invariance_wm_small) {
    static const int sizes[] = { 2, 7, 33, 64 };
    bi_model_case(T, "small", gx_wm_config_small(), 64, BI_IMAGES, 1, sizes, 4);
    bi_model_case(T, "small", gx_wm_config_small(), 64, 8, 2, sizes, 2);
}

/* At batch 1 the invariant mode is the plain forward: the references above
 * are single-image inference as every other caller computes it. */
GX_TEST(batch_invariance_mode_equals_plain_at_batch_1) {
    bi_case k;
    bi_case_init(&k, gx_wm_config_tiny(), 32, 3, 41);
    CHECK(k.ctx.batch_invariant == 1);   /* gx_ctx_init's default */
    for (int i = 0; i < 3; i++) {
        k.ctx.batch_invariant = 1;
        gx_wm_out a = bi_forward(&k, &i, 1);
        k.ctx.batch_invariant = 0;
        gx_wm_out b = bi_forward(&k, &i, 1);
        CHECK(!memcmp(a.logits->data, b.logits->data, 10 * sizeof(gx_real)));
        CHECK(!memcmp(a.redshift->data, b.redshift->data, sizeof(gx_real)));
        gx_ctx_reset(&k.ctx);
    }
    bi_case_free(&k);
}

/* ------------------------------------------------------------ ops */

/* y = op(x) over a batch of B samples vs each sample alone (x's leading
 * dim is the batch), bitwise. */
typedef gx_tensor *(*bi_op)(gx_ctx *ctx, gx_tensor *x, void *arg);

static int bi_op_invariant(gx_ctx *ctx, bi_op op, void *arg, gx_tensor *x) {
    int64_t B = x->shape[0], per = x->numel / B;
    gx_tensor *y = op(ctx, x, arg);
    int64_t yper = y->numel / B;
    int64_t shape[GX_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[0] = 1;
    for (int64_t b = 0; b < B; b++) {
        gx_tensor *xb = gx_tensor_from(ctx, x->ndim, shape, x->data + b * per);
        gx_tensor *yb = op(ctx, xb, arg);
        if (yb->numel != yper || memcmp(yb->data, y->data + b * yper, (size_t)yper * sizeof(gx_real)))
            return 0;
    }
    return 1;
}

typedef struct { gx_tensor *w, *b; int stride, pad, groups; } bi_layer;

static gx_tensor *bi_linear(gx_ctx *ctx, gx_tensor *x, void *arg) {
    bi_layer *l = arg;
    return gx_linear(ctx, x, l->w, l->b);
}

static gx_tensor *bi_conv(gx_ctx *ctx, gx_tensor *x, void *arg) {
    bi_layer *l = arg;
    return gx_conv2d(ctx, x, l->w, l->b, l->stride, l->pad, l->groups);
}

/* Shapes of the model's linears (2-D heads with odd widths, 3-D token
 * projections) and a few more. */
GX_TEST(batch_invariance_linear_op) {
    static const struct { int64_t L, in, out; } cs[] = {
        { 0, 270, 256 }, { 0, 324, 256 }, { 0, 192, 128 }, { 0, 64, 5 }, { 0, 7, 3 },
        { 64, 64, 256 }, { 16, 16, 64 }, { 64, 128, 16 }, { 3, 33, 17 } };
    static const int Bs[] = { 2, 7, 33 };
    gx_ctx ctx;
    gx_ctx_init(&ctx, 16 << 20);
    ctx.batch_invariant = 1;
    gx_rng r;
    gx_rng_init(&r, 51);
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        for (size_t bi = 0; bi < sizeof Bs / sizeof Bs[0]; bi++) {
            int64_t B = Bs[bi];
            bi_layer l = { gx_tensor_new(&ctx, 2, GX_SHAPE(cs[c].out, cs[c].in)),
                           gx_tensor_new(&ctx, 1, GX_SHAPE(cs[c].out)), 1, 0, 1 };
            gx_rng_fill_uniform(&r, l.w->data, l.w->numel, -0.2, 0.2);
            gx_rng_fill_uniform(&r, l.b->data, l.b->numel, -0.2, 0.2);
            gx_tensor *x = cs[c].L ? gx_tensor_new(&ctx, 3, GX_SHAPE(B, cs[c].L, cs[c].in))
                                   : gx_tensor_new(&ctx, 2, GX_SHAPE(B, cs[c].in));
            gx_rng_fill_normal(&r, x->data, x->numel, 0.0, 1.0);
            CHECK_MSG(bi_op_invariant(&ctx, bi_linear, &l, x),
                      "linear L=%lld in=%lld out=%lld: batch of %lld differs from per-sample",
                      (long long)cs[c].L, (long long)cs[c].in, (long long)cs[c].out, (long long)B);
            gx_ctx_reset(&ctx);
        }
    }
    gx_ctx_free(&ctx);
}

/* conv2d's paths (shifted GEMM, im2col at stride 2, depthwise, small
 * outputs with the samples side by side: ResNet-18's 4x4 and 2x2 layers
 * at 64x64, 5x5 grouped, 4x4 at stride 2) and a grouped conv, on odd
 * spatial sizes. */
GX_TEST(batch_invariance_conv2d_op) {
    static const struct { int64_t cin, cout, k, H; int stride, pad, groups; } cs[] = {
        { 8, 16, 3, 13, 1, 1, 1 }, { 16, 8, 1, 9, 1, 0, 1 }, { 6, 10, 3, 11, 2, 1, 1 },
        { 12, 12, 3, 10, 1, 1, 12 }, { 8, 8, 3, 7, 1, 1, 2 }, { 3, 32, 3, 32, 1, 1, 1 },
        { 64, 64, 3, 4, 1, 1, 1 }, { 32, 48, 3, 2, 1, 1, 1 }, { 8, 8, 3, 5, 1, 1, 2 }, { 16, 40, 3, 8, 2, 1, 1 } };
    gx_ctx ctx;
    gx_ctx_init(&ctx, 16 << 20);
    ctx.batch_invariant = 1;
    gx_rng r;
    gx_rng_init(&r, 52);
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        bi_layer l = { gx_tensor_new(&ctx, 4, GX_SHAPE(cs[c].cout, cs[c].cin / cs[c].groups, cs[c].k, cs[c].k)),
                       gx_tensor_new(&ctx, 1, GX_SHAPE(cs[c].cout)), cs[c].stride, cs[c].pad, cs[c].groups };
        gx_rng_fill_uniform(&r, l.w->data, l.w->numel, -0.3, 0.3);
        gx_rng_fill_uniform(&r, l.b->data, l.b->numel, -0.3, 0.3);
        gx_tensor *x = gx_tensor_new(&ctx, 4, GX_SHAPE(7, cs[c].cin, cs[c].H, cs[c].H));
        gx_rng_fill_normal(&r, x->data, x->numel, 0.0, 1.0);
        CHECK_MSG(bi_op_invariant(&ctx, bi_conv, &l, x), "conv2d case %zu: batch of 7 differs from per-sample", c);
        gx_ctx_reset(&ctx);
    }
    gx_ctx_free(&ctx);
}
