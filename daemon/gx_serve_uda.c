/*
 * gx_serve_uda.c — the "uda" serving kind (DeepAstroUDA, spec/uda.md):
 * load a checkpoint written by gx_uda_save, and run eval-mode forwards with
 * the BN set each row asks for.
 *
 * Domains: the model holds one set of BN statistics per domain (0 source,
 * 1 target; the spec's default at test time is the target). A chunk of the
 * batcher may mix rows of both domains, so the rows of each domain are
 * gathered into a tensor of their own and run as a separate forward, then
 * the outputs are scattered back to their rows. In eval mode BN uses its
 * running statistics, so a row's answer does not depend on which rows
 * shared its forward (the serving rule of gx_serve_model.h).
 *
 * Outputs: logits and p are the model's own (p = its softmax, the value
 * gx_uda_predict and so `galaxy-train score` report), the anomaly score is
 * H(p) / ln K with the spec's H = -sum_k p_k ln(p_k + 1e-5) (in [0, 1] up
 * to the 1e-5 guard; a float here: the anomaly routes recompute it in
 * double from p, bit for bit as the offline scorer); redshift is NaN.
 * info.anomaly_threshold is the checkpoint's tuned rho on the same scale
 * (rho / ln K), so is_anomaly = score > threshold <=> H > rho.
 */
#include "gx_serve_impl.h"

#include "gx_uda.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static gx_status uda_kind_load(gx_serve_model *m, const gx_st_file *f, gx_err *err) {
    gx_uda_model *u = calloc(1, sizeof *u);
    gx_uda_meta *meta = calloc(1, sizeof *meta);   /* 6 KiB of text buffers: not on the stack */
    if (!u || !meta) {
        free(u);
        free(meta);
        return gx_err_set(err, GX_ERR_NOMEM, "out of memory");
    }
    gx_status s = gx_uda_load(f, u, meta, err);
    if (s == GX_OK && u->cfg.classes < 2) {
        /* score = H / ln K needs K >= 2 (ln 1 = 0). */
        s = gx_err_set(err, GX_ERR_FORMAT, "uda config has %lld classes (at least 2 are needed for an anomaly "
                       "score)", (long long)u->cfg.classes);
        gx_uda_free(u);
    }
    if (s != GX_OK) {
        free(u);   /* gx_uda_load frees what it made on error */
        free(meta);
        return s;
    }
    m->impl = u;
    m->params = &u->params;
    m->cfg_classes = u->cfg.classes;
    m->cfg_size = u->cfg.size;
    double lnk = log((double)u->cfg.classes);
    m->info.anomaly_threshold = isfinite(meta->rho) ? meta->rho / lnk : NAN;
    free(meta);
    return GX_OK;
}

static void uda_kind_free(gx_serve_model *m) {
    gx_uda_free(m->impl);
    free(m->impl);
}

/* H(p) / ln K of one row of K probabilities (spec: H = -sum p ln(p + 1e-5)),
 * computed as gx_uda_predict and `galaxy-train score` do: H summed in
 * double, rounded to float, then divided by ln K. */
static float uda_score(const gx_real *p, int64_t K) {
    double h = 0;
    for (int64_t k = 0; k < K; k++) h -= (double)p[k] * log((double)p[k] + 1e-5);
    return (float)((double)(float)h / log((double)K));
}

/* The answers of n computed rows (logits and p, [n,K]) into rows idx[r]
 * of out (row r when idx is NULL): the anomaly score, no redshift. */
static void uda_rows_answer(const gx_real *lgv, const gx_real *pv, int n, const int *idx, int64_t K,
                            const gx_serve_out *out) {
    for (int r = 0; r < n; r++) {
        int64_t row = idx ? idx[r] : r;
        const gx_real *lg = lgv + (int64_t)r * K, *p = pv + (int64_t)r * K;
        for (int64_t k = 0; k < K; k++) {
            out->logits[row * K + k] = (float)lg[k];
            out->probs[row * K + k] = (float)p[k];
        }
        out->redshift[row] = NAN;
        if (out->score) out->score[row] = uda_score(p, K);
    }
}

/* The BN domain of row i (domain NULL or not 0: the target). */
static int uda_row_domain(const int8_t *domain, int i) {
    return domain && domain[i] == 0 ? GX_UDA_SOURCE : GX_UDA_TARGET;
}

/* Forwards the rows idx[0..nd) of x (all of domain d) and scatters the
 * outputs back to those rows of out. */
static void uda_forward_domain(gx_serve_model *m, gx_ctx *ctx, const float *x, int64_t side, const int *idx,
                               int nd, int d, const gx_serve_out *out) {
    int64_t per = 3 * side * side, K = m->info.n_classes;
    gx_tensor *xt = gx_tensor_new_host(ctx, 4, GX_SHAPE(nd, 3, side, side));
    for (int r = 0; r < nd; r++) {
        const float *src = x + (int64_t)idx[r] * per;
        gx_real *dst = xt->data + (int64_t)r * per;
        for (int64_t i = 0; i < per; i++) dst[i] = (gx_real)src[i];
    }
    gx_uda_out o = gx_uda_forward(ctx, m->impl, gx_to_ctx(ctx, xt), d, 0);
    uda_rows_answer(gx_to_host(ctx, o.logits)->data, gx_to_host(ctx, o.p)->data, nd, idx, K, out);
}

/* Rows gathered per domain forward (the predict chunk is 32: one window). */
#define UDA_WINDOW 64

static void uda_kind_forward(gx_serve_model *m, gx_ctx *ctx, const float *x, int64_t side, const float *coords,
                             const int8_t *domain, int b, const gx_serve_out *out) {
    (void)coords;   /* UDA uses no sky position */
    int idx[UDA_WINDOW];
    for (int i0 = 0; i0 < b; i0 += UDA_WINDOW) {
        int n = b - i0 < UDA_WINDOW ? b - i0 : UDA_WINDOW;
        for (int d = GX_UDA_SOURCE; d <= GX_UDA_TARGET; d++) {
            int nd = 0;
            for (int i = i0; i < i0 + n; i++)
                if (uda_row_domain(domain, i) == d) idx[nd++] = i;
            if (nd) uda_forward_domain(m, ctx, x, side, idx, nd, d, out);
        }
    }
}

/* CUDA graph hooks (gx_serve_graph.h): the variant is the chunk's BN
 * domain when all its rows share one (a pipeline's batch does), else none
 * (mixed rows run eagerly, gathered per domain as above); outputs logits
 * and p, read as uda_forward_domain reads them. */
static int uda_graph_variant(const gx_serve_model *m, const int8_t *domain, int b, int64_t side) {
    (void)m, (void)side;
    int d = uda_row_domain(domain, 0);
    for (int i = 1; i < b; i++)
        if (uda_row_domain(domain, i) != d) return -1;
    return d;
}

static void uda_graph_pass(gx_serve_model *m, gx_ctx *ctx, int variant, gx_tensor *x, gx_tensor *clean,
                           gx_tensor *mask, gx_tensor *out[2]) {
    (void)clean, (void)mask;   /* UDA uses no sky position */
    gx_uda_out o = gx_uda_forward(ctx, m->impl, x, variant, 0);
    out[0] = o.logits;
    out[1] = o.p;
}

static void uda_graph_read(gx_serve_model *m, const gx_real *const o[2], int b, const gx_serve_out *out) {
    uda_rows_answer(o[0], o[1], b, NULL, m->info.n_classes, out);
}

const gx_serve_kind gx_serve_kind_uda = { "uda", uda_kind_load, uda_kind_free, uda_kind_forward, 1,
                                          uda_graph_variant, uda_graph_pass, uda_graph_read };
