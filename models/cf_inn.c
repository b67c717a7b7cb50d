/*
 * cf_inn.c — the CF-INN's networks (spec/cf-inn.md): encoder E, decoder D,
 * the invertible flow F with its log|det| and exact inverse, and the
 * Gaussian-mixture logits of the hidden space; configs and their JSON form;
 * parameter registration and initialisation. Everything is engine ops, so
 * training gets every gradient from the ops' backwards.
 *
 * Design decisions:
 *  - The flow's fixed permutation is a product with a 0/1 matrix (gx_linear
 *    with a constant weight, nothing recorded for the weight). The engine has
 *    no index-select op; x*1 + sum of exact zeros is exact in floating point,
 *    so the permutation is exact (finite inputs) and its backward is the
 *    inverse permutation of the gradient, for free. d1 <= a few dozen, so the
 *    d1 x d1 product costs nothing next to the subnets.
 *  - g_c(h) is a broadcast difference (h [B,1,d1] - mu [K,d1]), not the Gram
 *    expansion: exact per sample (no cancellation for h near mu_c), and a
 *    sample's g never depends on the rest of the batch.
 *  - Mixture means with d1 < K: K points cannot all be 5 apart in fewer than
 *    K-1 dimensions, so we draw a seeded Gaussian configuration, centre it and
 *    scale it so that the CLOSEST pair is 5 apart (every pair at least 5, the
 *    spec's purpose: well separated classes at the start).
 *  - Initialisation draws each tensor from its own fork of the seed stream, so
 *    adding a tensor does not shift the others' values.
 */
#include "gx_cf_inn.h"
#include "gx_cuda.h"
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CF_PI 3.14159265358979323846

/* ------------------------------------------------------------------ configs */

gx_cf_config gx_cf_config_default(void) {
    return (gx_cf_config){ .size = 64, .d = 64, .d1 = 16, .enc_ch = { 32, 64, 128, 256 },
                           .hidden = 512, .dec_ch = { 128, 64, 32, 32 }, .blocks = 8,
                           .subnet = 256, .clamp = 2.0, .classes = 10 };
}

gx_cf_config gx_cf_config_tiny(void) {
    return (gx_cf_config){ .size = 32, .d = 16, .d1 = 8, .enc_ch = { 8, 16, 32, 64 },
                           .hidden = 64, .dec_ch = { 32, 16, 8, 8 }, .blocks = 4,
                           .subnet = 32, .clamp = 2.0, .classes = 10 };
}

/* The bounds every config must meet (far above any real one): a checkpoint's
 * config is checked against them before gx_cf_init allocates what it claims.
 * Returns the name of the first bad field, or NULL. */
static const char *cf_config_bad_field(const gx_cf_config *c) {
    int pow2 = c->size >= 16 && c->size <= 1024 && c->size % 16 == 0 &&
               ((c->size / 16) & (c->size / 16 - 1)) == 0;
    if (!pow2) return "size";
    if (c->d < 2 || c->d > 4096) return "d";
    if (c->d1 < 2 || c->d1 >= c->d || c->d1 > 256) return "d1";
    for (int i = 0; i < 4; i++) {
        if (c->enc_ch[i] < 1 || c->enc_ch[i] > 4096) return "enc_ch";
        if (c->dec_ch[i] < 1 || c->dec_ch[i] > 4096) return "dec_ch";
    }
    if (c->hidden < 1 || c->hidden > 16384) return "hidden";
    if (c->blocks < 1 || c->blocks > GX_CF_MAX_BLOCKS) return "blocks";
    if (c->subnet < 1 || c->subnet > 16384) return "subnet";
    if (!(c->clamp > 0 && c->clamp <= 100)) return "clamp";
    if (c->classes < 2 || c->classes > GX_CF_MAX_CLASSES) return "classes";
    return NULL;
}

char *gx_cf_config_json(const gx_cf_config *c) {
    json_t *j = json_pack("{s:I,s:I,s:I,s:[IIII],s:I,s:[IIII],s:I,s:I,s:f,s:I}",
        "size", (json_int_t)c->size, "d", (json_int_t)c->d, "d1", (json_int_t)c->d1,
        "enc_ch", (json_int_t)c->enc_ch[0], (json_int_t)c->enc_ch[1], (json_int_t)c->enc_ch[2],
        (json_int_t)c->enc_ch[3], "hidden", (json_int_t)c->hidden,
        "dec_ch", (json_int_t)c->dec_ch[0], (json_int_t)c->dec_ch[1], (json_int_t)c->dec_ch[2],
        (json_int_t)c->dec_ch[3], "blocks", (json_int_t)c->blocks,
        "subnet", (json_int_t)c->subnet, "clamp", c->clamp, "classes", (json_int_t)c->classes);
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    return s;
}

/* One integer key, or an array of 4 when arr is set. */
static int cf_json_ints(json_t *j, const char *key, int64_t *dst, int arr) {
    json_t *v = json_object_get(j, key);
    if (!arr) {
        if (!json_is_integer(v)) return 0;
        *dst = (int64_t)json_integer_value(v);
        return 1;
    }
    if (!json_is_array(v) || json_array_size(v) != 4) return 0;
    for (size_t i = 0; i < 4; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_integer(e)) return 0;
        dst[i] = (int64_t)json_integer_value(e);
    }
    return 1;
}

gx_status gx_cf_config_parse(const char *json, gx_cf_config *cfg, gx_err *err) {
    json_error_t je;
    json_t *j = json ? json_loads(json, 0, &je) : NULL;
    if (!j || !json_is_object(j)) {
        json_decref(j);
        return gx_err_set(err, GX_ERR_FORMAT, "cf-inn config: not a JSON object");
    }
    gx_cf_config c;
    memset(&c, 0, sizeof c);
    static const char *const keys[] = { "size", "d", "d1", "enc_ch", "hidden", "dec_ch",
                                        "blocks", "subnet", "classes" };
    int64_t *dst[] = { &c.size, &c.d, &c.d1, c.enc_ch, &c.hidden, c.dec_ch, &c.blocks,
                       &c.subnet, &c.classes };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (!cf_json_ints(j, keys[i], dst[i], i == 3 || i == 5)) {
            json_decref(j);
            return gx_err_set(err, GX_ERR_FORMAT, "cf-inn config: key '%s' missing or not %s",
                              keys[i], i == 3 || i == 5 ? "a list of 4 integers" : "an integer");
        }
    json_t *cl = json_object_get(j, "clamp");
    int clamp_ok = json_is_number(cl);
    c.clamp = clamp_ok ? json_number_value(cl) : 0;
    json_decref(j);
    if (!clamp_ok) return gx_err_set(err, GX_ERR_FORMAT, "cf-inn config: key 'clamp' missing or not a number");
    const char *bad = cf_config_bad_field(&c);
    if (bad) return gx_err_set(err, GX_ERR_FORMAT, "cf-inn config: key '%s' out of range", bad);
    *cfg = c;
    return GX_OK;
}

/* ------------------------------------------------------------ registration */

typedef struct {
    gx_params *p;
    gx_rng     rng;
    uint64_t   stream;
} cf_reg;

/* Skips a tensor without memory (gx_cf_init_shapes); the stream advances. */
static void cf_fill_uniform(cf_reg *r, gx_tensor *t, double bound) {
    gx_rng s = gx_rng_fork(&r->rng, r->stream++);
    if (t->data) gx_rng_fill_uniform(&s, t->data, t->numel, -bound, bound);
}

/* Weight [out, in...] and bias [out] with PyTorch's default init
 * U(+-1/sqrt(fan_in)) for both, times `scale` (0.1 for the flow subnets). */
static gx_cf_lin cf_reg_weight(cf_reg *r, const char *prefix, int ndim, const int64_t *shape,
                               double scale) {
    char name[160];
    int64_t fan_in = 1;
    for (int i = 1; i < ndim; i++) fan_in *= shape[i];
    double bound = scale / sqrt((double)fan_in);
    gx_cf_lin l;
    snprintf(name, sizeof name, "%s.weight", prefix);
    l.w = gx_params_add(r->p, name, ndim, shape, 0);
    cf_fill_uniform(r, l.w, bound);
    snprintf(name, sizeof name, "%s.bias", prefix);
    l.b = gx_params_add(r->p, name, 1, shape, 0);
    cf_fill_uniform(r, l.b, bound);
    return l;
}

static gx_cf_lin cf_reg_linear(cf_reg *r, const char *prefix, int64_t in, int64_t out,
                               double scale) {
    return cf_reg_weight(r, prefix, 2, GX_SHAPE(out, in), scale);
}

static gx_cf_lin cf_reg_conv(cf_reg *r, const char *prefix, int64_t in, int64_t out, int64_t k) {
    return cf_reg_weight(r, prefix, 4, GX_SHAPE(out, in, k, k), 1.0);
}

static void cf_reg_encoder_decoder(cf_reg *r, gx_cf_model *m) {
    const gx_cf_config *c = &m->cfg;
    char name[64];
    int64_t s = c->size / 16, flat = c->enc_ch[3] * s * s, in = 3;
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "encoder.conv%d", i);
        m->enc_conv[i] = cf_reg_conv(r, name, in, c->enc_ch[i], 4);
        in = c->enc_ch[i];
    }
    m->enc_fc1 = cf_reg_linear(r, "encoder.fc1", flat, c->hidden, 1.0);
    m->enc_fc2 = cf_reg_linear(r, "encoder.fc2", c->hidden, c->d, 1.0);
    m->dec_fc1 = cf_reg_linear(r, "decoder.fc1", c->d, c->hidden, 1.0);
    m->dec_fc2 = cf_reg_linear(r, "decoder.fc2", c->hidden, flat, 1.0);
    in = c->enc_ch[3];
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "decoder.conv%d", i);
        m->dec_conv[i] = cf_reg_conv(r, name, in, c->dec_ch[i], 3);
        in = c->dec_ch[i];
    }
    m->dec_out = cf_reg_conv(r, "decoder.out", in, 3, 3);
}

/* Subnet lin(in->w), ReLU, lin(w->w), ReLU, lin(w->out) as nn.Sequential
 * indices 0, 2, 4; weights and biases x0.1 so F starts near the identity. */
static void cf_reg_subnet(cf_reg *r, gx_cf_lin *n, const char *prefix, int64_t in, int64_t w,
                          int64_t out) {
    char name[160];
    const int64_t dims[4] = { in, w, w, out };
    for (int k = 0; k < 3; k++) {
        snprintf(name, sizeof name, "%s.%d", prefix, 2 * k);
        n[k] = cf_reg_linear(r, name, dims[k], dims[k + 1], 0.1);
    }
}

/* Seeded Fisher-Yates shuffle of 0..n-1 into the block's buffer. */
static void cf_random_perm(cf_reg *r, gx_tensor *buf) {
    int64_t n = buf->numel;
    gx_rng s = gx_rng_fork(&r->rng, r->stream++);
    for (int64_t i = 0; i < n; i++) buf->data[i] = (gx_real)i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(gx_rng_u32(&s) % (uint32_t)(i + 1));
        gx_real t = buf->data[i];
        buf->data[i] = buf->data[j];
        buf->data[j] = t;
    }
}

static void cf_reg_flow(cf_reg *r, gx_cf_model *m) {
    const gx_cf_config *c = &m->cfg;
    int64_t da = c->d1 / 2, db = c->d1 - da;
    char name[160];
    for (int b = 0; b < c->blocks; b++) {
        gx_cf_block *bl = &m->block[b];
        snprintf(name, sizeof name, "flow.block%d.perm", b);
        bl->perm_buf = gx_params_add(r->p, name, 1, GX_SHAPE(c->d1), GX_PARAM_BUFFER);
        cf_random_perm(r, bl->perm_buf);
        bl->perm = malloc((size_t)c->d1 * sizeof *bl->perm);
        bl->inv_perm = malloc((size_t)c->d1 * sizeof *bl->inv_perm);
        GX_ASSERT(bl->perm && bl->inv_perm);
        if (!r->p->shape_only) {
            snprintf(name, sizeof name, "flow.block%d.perm_matrix", b);
            bl->pmat = gx_params_add(&m->consts, name, 2, GX_SHAPE(c->d1, c->d1), GX_PARAM_BUFFER);
            snprintf(name, sizeof name, "flow.block%d.inv_perm_matrix", b);
            bl->inv_pmat = gx_params_add(&m->consts, name, 2, GX_SHAPE(c->d1, c->d1), GX_PARAM_BUFFER);
        }
        snprintf(name, sizeof name, "flow.block%d.n1", b);
        cf_reg_subnet(r, bl->n1, name, da, c->subnet, 2 * db);
        snprintf(name, sizeof name, "flow.block%d.n2", b);
        cf_reg_subnet(r, bl->n2, name, db, c->subnet, 2 * da);
    }
}

/* IB-INN means (spec): mu_c[K k + c] = 5/sqrt(2 floor(d1/K)) for k < floor(d1/K);
 * with d1 < K see the file comment. */
static void cf_init_means(cf_reg *r, gx_tensor *mu, int64_t K, int64_t d1) {
    int64_t per = d1 / K;
    gx_real *v = mu->data;
    if (!v) return;   /* a shapes-only registry */
    memset(v, 0, (size_t)(K * d1) * sizeof *v);
    if (per >= 1) {
        for (int64_t c = 0; c < K; c++)
            for (int64_t k = 0; k < per; k++) v[c * d1 + K * k + c] = (gx_real)(5.0 / sqrt(2.0 * per));
        return;
    }
    gx_rng s = gx_rng_fork(&r->rng, r->stream++);
    gx_rng_fill_normal(&s, v, K * d1, 0.0, 1.0);
    for (int64_t j = 0; j < d1; j++) {
        double mean = 0;
        for (int64_t c = 0; c < K; c++) mean += v[c * d1 + j];
        for (int64_t c = 0; c < K; c++) v[c * d1 + j] -= (gx_real)(mean / K);
    }
    double dmin = INFINITY;
    for (int64_t a = 0; a < K; a++)
        for (int64_t b = a + 1; b < K; b++) {
            double s2 = 0;
            for (int64_t j = 0; j < d1; j++) s2 += pow((double)v[a * d1 + j] - v[b * d1 + j], 2);
            dmin = fmin(dmin, sqrt(s2));
        }
    for (int64_t i = 0; i < K * d1; i++) v[i] = (gx_real)(v[i] * (5.0 / dmin));
}

static void cf_init(gx_cf_model *m, gx_cf_config cfg, uint64_t seed, int shapes_only) {
    const char *bad = cf_config_bad_field(&cfg);
    GX_ASSERT_MSG(!bad, "gx_cf_init: config field %s out of range", bad ? bad : "");
    memset(m, 0, sizeof *m);
    m->cfg = cfg;
    if (shapes_only) gx_params_init_shapes(&m->params);
    else gx_params_init(&m->params);
    gx_params_init(&m->consts);
    cf_reg r = { &m->params, { 0, 0 }, 0 };
    gx_rng_init(&r.rng, seed);
    cf_reg_encoder_decoder(&r, m);
    cf_reg_flow(&r, m);
    m->mu = gx_params_add(&m->params, "mixture.mu", 2, GX_SHAPE(cfg.classes, cfg.d1), 0);
    /* Parameter group 1: the spec trains the means at 3x the learning rate. */
    gx_params_find(&m->params, "mixture.mu")->group = 1;
    cf_init_means(&r, m->mu, cfg.classes, cfg.d1);
    m->mhat = gx_params_add(&m->params, "mhat", 2, GX_SHAPE(cfg.classes, cfg.d1), GX_PARAM_BUFFER);
    m->mhat_valid = gx_params_add(&m->params, "mhat_valid", 1, GX_SHAPE(cfg.classes), GX_PARAM_BUFFER);
    gx_status st = gx_cf_sync_perms(m, NULL);
    GX_ASSERT(st == GX_OK);
}

void gx_cf_init(gx_cf_model *m, gx_cf_config cfg, uint64_t seed) { cf_init(m, cfg, seed, 0); }
void gx_cf_init_shapes(gx_cf_model *m, gx_cf_config cfg) { cf_init(m, cfg, 0, 1); }

void gx_cf_free(gx_cf_model *m) {
    for (int b = 0; b < GX_CF_MAX_BLOCKS; b++) {
        free(m->block[b].perm);
        free(m->block[b].inv_perm);
    }
    gx_params_free(&m->params);
    gx_params_free(&m->consts);
    memset(m, 0, sizeof *m);
}

gx_status gx_cf_sync_perms(gx_cf_model *m, gx_err *err) {
    int64_t d1 = m->cfg.d1;
    for (int b = 0; b < m->cfg.blocks; b++) {
        gx_cf_block *bl = &m->block[b];
        for (int64_t i = 0; i < d1; i++) bl->inv_perm[i] = -1;
        for (int64_t i = 0; i < d1; i++) {
            double v = gx_tensor_host_data(bl->perm_buf)[i];   /* its host copy on a device */
            int64_t k = (int64_t)v;
            if (!(v >= 0 && v < (double)d1) || (double)k != v || bl->inv_perm[k] >= 0)
                return gx_err_set(err, GX_ERR_FORMAT,
                                  "flow.block%d.perm is not a permutation of 0..%lld (entry %lld = %g)",
                                  b, (long long)(d1 - 1), (long long)i, v);
            bl->perm[i] = k;
            bl->inv_perm[k] = i;
        }
        if (!bl->pmat) continue;   /* a shapes-only model */
        /* P[i][perm[i]] = 1: x P^T gathers column perm[i] into column i. */
        gx_real *p = bl->pmat->data, *q = bl->inv_pmat->data;
        memset(p, 0, (size_t)(d1 * d1) * sizeof *p);
        memset(q, 0, (size_t)(d1 * d1) * sizeof *q);
        for (int64_t i = 0; i < d1; i++) {
            p[i * d1 + bl->perm[i]] = 1;
            q[i * d1 + bl->inv_perm[i]] = 1;
        }
    }
    return GX_OK;
}

gx_status gx_cf_consts_to_cuda(gx_cf_model *m, struct gx_cuda_exec *e, gx_err *err) {
    return gx_params_to_cuda(&m->consts, e, err);
}

/* ---------------------------------------------------------------- forward */

static gx_tensor *cf_lin(gx_ctx *ctx, gx_tensor *x, const gx_cf_lin *l) {
    return gx_linear(ctx, x, l->w, l->b);
}

gx_tensor *gx_cf_encode(gx_ctx *ctx, gx_cf_model *m, gx_tensor *x) {
    const gx_cf_config *c = &m->cfg;
    GX_ASSERT_MSG(x->ndim == 4 && x->shape[1] == 3 && x->shape[2] == c->size && x->shape[3] == c->size,
                  "gx_cf_encode: x must be [B,3,%lld,%lld]", (long long)c->size, (long long)c->size);
    int64_t B = x->shape[0], s = c->size / 16;
    gx_tensor *y = x;
    for (int i = 0; i < 4; i++)
        y = gx_leaky_relu(ctx, gx_conv2d(ctx, y, m->enc_conv[i].w, m->enc_conv[i].b, 2, 1, 1), 0.2);
    y = gx_reshape(ctx, y, 2, GX_SHAPE(B, c->enc_ch[3] * s * s));   /* NCHW flatten */
    y = gx_leaky_relu(ctx, cf_lin(ctx, y, &m->enc_fc1), 0.2);
    return cf_lin(ctx, y, &m->enc_fc2);
}

gx_tensor *gx_cf_decode(gx_ctx *ctx, gx_cf_model *m, gx_tensor *z) {
    const gx_cf_config *c = &m->cfg;
    GX_ASSERT_MSG(z->ndim == 2 && z->shape[1] == c->d, "gx_cf_decode: z must be [B,%lld]",
                  (long long)c->d);
    int64_t B = z->shape[0], s = c->size / 16;
    gx_tensor *y = gx_leaky_relu(ctx, cf_lin(ctx, z, &m->dec_fc1), 0.2);
    y = gx_reshape(ctx, cf_lin(ctx, y, &m->dec_fc2), 4, GX_SHAPE(B, c->enc_ch[3], s, s));
    /* Upsample x2 + 3x3 conv as one fused op (gx_upconv2x3: the same
     * weights, 2.25x fewer multiply-adds; equal up to float summation order),
     * with LeakyReLU as its epilogue when nothing is taped (inference: the
     * 4x4 first layer then also takes exact per-parity GEMMs, equal up to
     * float order). With grad on it is the unfused upconv + leaky_relu pair:
     * training is unchanged. */
    for (int i = 0; i < 4; i++)
        y = gx_upconv2x3_leaky(ctx, y, m->dec_conv[i].w, m->dec_conv[i].b, 0.2);
    return gx_sigmoid(ctx, gx_conv2d(ctx, y, m->dec_out.w, m->dec_out.b, 1, 1, 1));
}

/* x [B,n] -> y[:, i] = x[:, idx[i]] as x P^T with the constant 0/1 matrix P
 * (see the file comment): the model's copy (gx_cf_model.consts) where x
 * is, else uploaded for this pass. */
static gx_tensor *cf_permute(gx_ctx *ctx, gx_tensor *x, const gx_tensor *P) {
    gx_tensor *p = (gx_tensor *)P;
    if (p->device != x->device) p = gx_to_ctx(ctx, p);
    return gx_linear(ctx, x, p, NULL);
}

static gx_tensor *cf_subnet(gx_ctx *ctx, const gx_cf_lin *n, gx_tensor *x) {
    gx_tensor *y = gx_relu(ctx, cf_lin(ctx, x, &n[0]));
    y = gx_relu(ctx, cf_lin(ctx, y, &n[1]));
    return cf_lin(ctx, y, &n[2]);
}

/* Subnet output r [B, 2k] -> soft-clamped s = c (2/pi) atan(r[:, :k] / c)
 * and t = r[:, k:]. */
static void cf_scale_shift(gx_ctx *ctx, gx_tensor *r, double clamp, gx_tensor **s, gx_tensor **t) {
    int64_t k = r->shape[1] / 2;
    gx_tensor *raw = gx_slice(ctx, r, 1, 0, k);
    *s = gx_scale(ctx, gx_atan(ctx, gx_scale(ctx, raw, 1.0 / clamp)), clamp * 2.0 / CF_PI);
    *t = gx_slice(ctx, r, 1, k, 2 * k);
}

/* One block: permutation, then the GLOW coupling; adds its log|det| to *ld. */
static gx_tensor *cf_block_fwd(gx_ctx *ctx, const gx_cf_model *m, const gx_cf_block *bl,
                               gx_tensor *z, gx_tensor **ld) {
    int64_t d1 = m->cfg.d1, da = d1 / 2;
    gx_tensor *u = cf_permute(ctx, z, bl->pmat), *s1, *t1, *s2, *t2;
    gx_tensor *ua = gx_slice(ctx, u, 1, 0, da), *ub = gx_slice(ctx, u, 1, da, d1);
    cf_scale_shift(ctx, cf_subnet(ctx, bl->n2, ub), m->cfg.clamp, &s2, &t2);
    gx_tensor *va = gx_add(ctx, gx_mul(ctx, gx_exp(ctx, s2), ua), t2);
    cf_scale_shift(ctx, cf_subnet(ctx, bl->n1, va), m->cfg.clamp, &s1, &t1);
    gx_tensor *vb = gx_add(ctx, gx_mul(ctx, gx_exp(ctx, s1), ub), t1);
    if (ld) {
        gx_tensor *l = gx_add(ctx, gx_sum(ctx, s1, 1, 0), gx_sum(ctx, s2, 1, 0));
        *ld = *ld ? gx_add(ctx, *ld, l) : l;
    }
    gx_tensor *parts[2] = { va, vb };
    return gx_concat(ctx, 2, parts, 1);
}

/* The block's inverse: undo the second half-step, then the first, then the
 * permutation (spec 'Inverse'). */
static gx_tensor *cf_block_inv(gx_ctx *ctx, const gx_cf_model *m, const gx_cf_block *bl,
                               gx_tensor *v) {
    int64_t d1 = m->cfg.d1, da = d1 / 2;
    gx_tensor *va = gx_slice(ctx, v, 1, 0, da), *vb = gx_slice(ctx, v, 1, da, d1), *s1, *t1, *s2, *t2;
    cf_scale_shift(ctx, cf_subnet(ctx, bl->n1, va), m->cfg.clamp, &s1, &t1);
    gx_tensor *ub = gx_mul(ctx, gx_sub(ctx, vb, t1), gx_exp(ctx, gx_neg(ctx, s1)));
    cf_scale_shift(ctx, cf_subnet(ctx, bl->n2, ub), m->cfg.clamp, &s2, &t2);
    gx_tensor *ua = gx_mul(ctx, gx_sub(ctx, va, t2), gx_exp(ctx, gx_neg(ctx, s2)));
    gx_tensor *parts[2] = { ua, ub };
    return cf_permute(ctx, gx_concat(ctx, 2, parts, 1), bl->inv_pmat);
}

static void cf_check_hidden(const gx_cf_model *m, const gx_tensor *t, const char *fn) {
    GX_ASSERT_MSG(t->ndim == 2 && t->shape[1] == m->cfg.d1, "%s: input must be [B,%lld]", fn,
                  (long long)m->cfg.d1);
}

gx_tensor *gx_cf_flow(gx_ctx *ctx, gx_cf_model *m, gx_tensor *z1, gx_tensor **logdet) {
    cf_check_hidden(m, z1, "gx_cf_flow");
    gx_tensor *h = z1, *ld = NULL;
    for (int b = 0; b < m->cfg.blocks; b++) h = cf_block_fwd(ctx, m, &m->block[b], h, logdet ? &ld : NULL);
    if (logdet) *logdet = ld;
    return h;
}

gx_tensor *gx_cf_flow_inverse(gx_ctx *ctx, gx_cf_model *m, gx_tensor *h) {
    cf_check_hidden(m, h, "gx_cf_flow_inverse");
    gx_tensor *z = h;
    for (int b = (int)m->cfg.blocks - 1; b >= 0; b--) z = cf_block_inv(ctx, m, &m->block[b], z);
    return z;
}

gx_tensor *gx_cf_mixture_logits(gx_ctx *ctx, gx_cf_model *m, gx_tensor *h) {
    cf_check_hidden(m, h, "gx_cf_mixture_logits");
    int64_t B = h->shape[0], d1 = m->cfg.d1;
    gx_tensor *diff = gx_sub(ctx, gx_reshape(ctx, h, 3, GX_SHAPE(B, 1, d1)), m->mu);   /* [B,K,d1] */
    gx_tensor *sq = gx_sum(ctx, gx_square(ctx, diff), 2, 0);                           /* [B,K] */
    return gx_affine(ctx, sq, -0.5, -log((double)m->cfg.classes));
}

gx_cf_out gx_cf_forward_noise(gx_ctx *ctx, gx_cf_model *m, gx_tensor *x, gx_tensor *noise,
                              int decode) {
    gx_cf_out o;
    memset(&o, 0, sizeof o);
    int64_t d1 = m->cfg.d1;
    o.z = gx_cf_encode(ctx, m, x);
    o.z1 = gx_slice(ctx, o.z, 1, 0, d1);
    o.z2 = gx_slice(ctx, o.z, 1, d1, m->cfg.d);
    gx_tensor *zin = o.z1;
    if (noise) {
        GX_ASSERT_MSG(gx_tensor_same_shape(noise, o.z1), "gx_cf_forward_noise: noise must be [B,%lld]",
                      (long long)d1);
        zin = gx_add(ctx, o.z1, noise);
    }
    o.h = gx_cf_flow(ctx, m, zin, &o.logdet);
    o.g = gx_cf_mixture_logits(ctx, m, o.h);
    if (decode) o.xrec = gx_cf_decode(ctx, m, o.z);
    return o;
}

gx_cf_out gx_cf_forward(gx_ctx *ctx, gx_cf_model *m, gx_tensor *x, double noise_sigma,
                        gx_rng *rng, int decode) {
    gx_tensor *noise = NULL;
    if (noise_sigma > 0) {
        GX_ASSERT_MSG(rng, "gx_cf_forward: noise_sigma %g needs an rng", noise_sigma);
        noise = gx_tensor_new_host(ctx, 2, GX_SHAPE(x->shape[0], m->cfg.d1));
        gx_rng_fill_normal(rng, noise->data, noise->numel, 0.0, noise_sigma);
        noise = gx_to_ctx(ctx, noise);
    }
    return gx_cf_forward_noise(ctx, m, x, noise, decode);
}
