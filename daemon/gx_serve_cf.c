/*
 * gx_serve_cf.c — the "cf-inn" serving kind (spec/cf-inn.md): load a
 * checkpoint written by gx_cf_save, and classify in eval mode.
 *
 * Outputs of a row: logits = g_c(h) = -|h - mu_c|^2 / 2 - log K (the
 * mixture log-densities), probs = softmax(g) (the posterior), score = the
 * hidden-space negative log-likelihood -logsumexp(g) - log|det dF/dz1| (the
 * value gx_cf_classify reports as nll, so galaxy-train and galaxyd agree),
 * redshift NaN (the CF-INN has no redshift head). argmax g is argmin
 * |h - mu_c|, the spec's y-hat, so the batcher's class index is the model's.
 *
 * Input size: the CF-INN's encoder ends at S/16 x S/16, so S is part of the
 * model (unlike the WaveletMamba's adaptive pooling). Rows of another side
 * (a /v2 tensor of the wrong size) are resized with io's bilinear resize,
 * the same filter preprocessing uses; a row that cannot be resized (out of
 * memory) answers NaN rather than a wrong class.
 *
 * Counterfactuals do not go through forward(): the routes in
 * gx_server_cf.c take the model with gx_serve_model_lock and call
 * gx_cf_counterfactuals on its arena.
 */
#include "gx_serve_impl.h"

#include "gx_cf_inn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static gx_status cf_kind_load(gx_serve_model *m, const gx_st_file *f, gx_err *err) {
    gx_cf_model *cf = calloc(1, sizeof *cf);
    if (!cf) return gx_err_set(err, GX_ERR_NOMEM, "out of memory");
    gx_status s = gx_cf_load(f, cf, NULL, err);
    if (s != GX_OK) {
        free(cf);   /* gx_cf_load frees what it made on error */
        return s;
    }
    m->impl = cf;
    m->params = &cf->params;
    m->consts = &cf->consts;   /* the permutation matrices: uploaded once with the parameters */
    m->cfg_classes = cf->cfg.classes;
    m->cfg_size = cf->cfg.size;
    return GX_OK;
}

static void cf_kind_free(gx_serve_model *m) {
    gx_cf_free(m->impl);
    free(m->impl);
}

/* Every output of rows [0, b) NaN (a row we could not compute). */
static void cf_rows_nan(int b, int64_t K, const gx_serve_out *out) {
    for (int64_t i = 0; i < (int64_t)b * K; i++) out->logits[i] = out->probs[i] = NAN;
    for (int i = 0; i < b; i++) {
        out->redshift[i] = NAN;
        if (out->score) out->score[i] = NAN;
    }
}

/* Rows of side `side` resampled to S x S into dst (b * 3*S*S floats). */
static int cf_resize_rows(const float *x, int64_t side, int b, int64_t S, float *dst) {
    for (int i = 0; i < b; i++) {
        gx_image in, out;
        gx_err e;
        memset(&out, 0, sizeof out);
        if (gx_image_alloc(&in, 3, (int)side, (int)side, &e) != GX_OK) return 0;
        memcpy(in.data, x + (int64_t)i * 3 * side * side, (size_t)(3 * side * side) * sizeof *in.data);
        gx_status s = gx_pre_resize(&in, (int)S, (int)S, &out, &e);
        if (s == GX_OK) memcpy(dst + (int64_t)i * 3 * S * S, out.data, (size_t)(3 * S * S) * sizeof *dst);
        gx_image_free(&in);
        gx_image_free(&out);
        if (s != GX_OK) return 0;
    }
    return 1;
}

/* The answers of b rows from the class scores g [b,K] and the flow's
 * log-determinants: softmax probabilities, and as the score the negative
 * hidden-space log-likelihood -(logsumexp g) - logdet. */
static void cf_rows_answer(const gx_real *gv, const gx_real *ldv, int b, int64_t K, const gx_serve_out *out) {
    gx_serve_softmax_rows(gv, b, K, out->logits, out->probs);
    for (int64_t i = 0; i < b; i++) {
        const gx_real *g = gv + i * K;
        double mx = g[0], sum = 0;
        for (int64_t k = 1; k < K; k++) mx = g[k] > mx ? g[k] : mx;
        for (int64_t k = 0; k < K; k++) sum += exp((double)g[k] - mx);
        out->redshift[i] = NAN;
        if (out->score) out->score[i] = (float)(-(mx + log(sum)) - (double)ldv[i]);
    }
}

static void cf_kind_forward(gx_serve_model *m, gx_ctx *ctx, const float *x, int64_t side, const float *coords,
                            const int8_t *domain, int b, const gx_serve_out *out) {
    (void)coords, (void)domain;   /* the CF-INN uses neither */
    gx_cf_model *cf = m->impl;
    const int64_t S = cf->cfg.size, K = cf->cfg.classes, per = 3 * S * S;
    float *resized = NULL;
    if (side != S) {
        resized = malloc((size_t)b * (size_t)per * sizeof *resized);
        if (!resized || !cf_resize_rows(x, side, b, S, resized)) {
            free(resized);
            cf_rows_nan(b, K, out);
            return;
        }
        x = resized;
    }
    gx_tensor *xt = gx_tensor_new_host(ctx, 4, GX_SHAPE(b, 3, S, S));
    for (int64_t i = 0; i < (int64_t)b * per; i++) xt->data[i] = (gx_real)x[i];
    free(resized);
    gx_cf_out o = gx_cf_forward(ctx, cf, gx_to_ctx(ctx, xt), 0.0, NULL, 0);
    cf_rows_answer(gx_to_host(ctx, o.g)->data, gx_to_host(ctx, o.logdet)->data, b, K, out);
}

/* CUDA graph hooks (gx_serve_graph.h): one variant, for rows at the
 * model's own size (others are resized on the host and run eagerly);
 * outputs the class scores g and the flow's log-determinant, read as
 * cf_kind_forward reads them. */
static int cf_graph_variant(const gx_serve_model *m, const int8_t *domain, int b, int64_t side) {
    (void)domain, (void)b;
    return side == ((const gx_cf_model *)m->impl)->cfg.size ? 0 : -1;
}

static void cf_graph_pass(gx_serve_model *m, gx_ctx *ctx, int variant, gx_tensor *x, gx_tensor *clean,
                          gx_tensor *mask, gx_tensor *out[2]) {
    (void)variant, (void)clean, (void)mask;   /* the CF-INN uses no sky position */
    gx_cf_out o = gx_cf_forward(ctx, m->impl, x, 0.0, NULL, 0);
    out[0] = o.g;
    out[1] = o.logdet;
}

static void cf_graph_read(gx_serve_model *m, const gx_real *const o[2], int b, const gx_serve_out *out) {
    cf_rows_answer(o[0], o[1], b, m->info.n_classes, out);
}

const gx_serve_kind gx_serve_kind_cf = { "cf-inn", cf_kind_load, cf_kind_free, cf_kind_forward, 1,
                                         cf_graph_variant, cf_graph_pass, cf_graph_read };
