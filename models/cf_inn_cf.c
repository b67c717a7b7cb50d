/*
 * cf_inn_cf.c — what the trained CF-INN is for (spec/cf-inn.md,
 * "Classification" and "Counterfactuals"): classification by the nearest
 * mixture mean, the empirical hidden means m-hat, counterfactual images with
 * the validity guarantee, new galaxies of a class, and the checkpoint file.
 *
 * Everything here is evaluation: the tape is off, and the caller's context
 * is scratch memory — it is reset after every chunk of images and before
 * each function returns (what a function hands back is copied out first).
 *
 * Numbers that decide something (distances to the means, the alpha of a
 * counterfactual, posteriors) are computed in double from the float hidden
 * vectors, so a decision never hinges on float rounding order: the
 * guarantee's margin (g_q - g_c >= 0.5) is checked on h_cf as it is rounded
 * to the float that goes into F^-1.
 *
 * The counterfactual rule (spec steps 2-4), for source p and target q:
 *   Delta = mhat_q - mhat_p (mu instead of a class's mhat when that class
 *   never got one: fallback = 2);
 *   alpha0 puts h + alpha0 Delta on the bisector of mu_p, mu_q; alpha1 =
 *   0.8 + 0.5 alpha0 (a little past it, as ECINN);
 *   g_q - g_c = a_c + alpha b_c along the line; the guarantee asks
 *   a_c + alpha b_c >= 0.5 for every c != q, i.e. alpha in [L, U];
 *   alpha = clamp(alpha1, L, U) when L <= U, else the same with
 *   Delta = mu_q - h (fallback = 1). That line reaches mu_q at alpha 1,
 *   where g_q - g_c = |mu_q - mu_c|^2 / 2, so it is feasible whenever the
 *   means are at least 1 apart; if even it is not (collapsed means), alpha
 *   is 1 (h_cf = mu_q) and reached_hidden says honestly what happened.
 *
 * Latency of the full grid (issue 6): x~ and every x_cf are decoded as one
 * batch and re-encoded as one batch per thread (gx_ctx_for_parts: each op is
 * batch invariant, so every image's bits are those of running it alone,
 * whatever the thread count; test_cf_cf checks the grid against one target
 * at a time), the pair metrics run per target on the same threads, the
 * (x, x~) metrics are computed once, and
 * the source's own slot (x_cf = x~) takes its pair values by definition
 * (MSD 0, SSIM 1) instead of computing them.
 */
#include "gx_cf_inn.h"

#include "gx_morph.h"

#include "gx_cuda.h"
#include <jansson.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CF_CHUNK 32                  /* images per forward in classify/generate */
#define CF_CKPT_FORMAT "galaxyd-checkpoint-1"
#define CF_MARGIN 0.5                /* the guarantee's g_q - g_c */

/* ------------------------------------------------------------ small utils */

/* Arena tensor [n,3,S,S] from float images (gx_real may be double), where
 * the ctx computes.
 *
 * Device note: the counterfactual search (nearest means, alphas, metrics)
 * runs on the host. Activations come back through gx_to_host; parameters
 * are read through gx_tensor_host_data (their host copy, current while
 * serving). */
static gx_tensor *cf_images(gx_ctx *ctx, const float *x, int64_t n, int64_t S) {
    gx_tensor *t = gx_tensor_new_host(ctx, 4, GX_SHAPE(n, 3, S, S));
    for (int64_t i = 0; i < t->numel; i++) t->data[i] = (gx_real)x[i];
    return gx_to_ctx(ctx, t);
}

static void cf_to_float(const gx_real *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = (float)src[i];
}

/* Squared distance of h [d1] (float or double through the two pointers)
 * to mean row c of mu [K,d1], in double. */
static double cf_dist2(const gx_real *h, const gx_real *mu, int64_t c, int64_t d1) {
    double s = 0;
    for (int64_t j = 0; j < d1; j++) {
        double t = (double)h[j] - (double)mu[c * d1 + j];
        s += t * t;
    }
    return s;
}

/* The nearest mean (first in a tie), the spec's y-hat. */
static int64_t cf_nearest(const gx_real *h, const gx_real *mu, int64_t K, int64_t d1) {
    int64_t best = 0;
    double bd = cf_dist2(h, mu, 0, d1);
    for (int64_t c = 1; c < K; c++) {
        double dc = cf_dist2(h, mu, c, d1);
        if (dc < bd) { bd = dc; best = c; }
    }
    return best;
}

/* Row outputs of one hidden vector: probs [K] = softmax(g), nll =
 * -logsumexp(g) - logdet with g_c = -|h - mu_c|^2/2 - log K. */
static void cf_posterior(const gx_real *h, const gx_real *mu, int64_t K, int64_t d1, double logdet,
                         float *probs, float *nll) {
    double g[GX_CF_MAX_CLASSES], mx = -INFINITY, sum = 0;
    for (int64_t c = 0; c < K; c++) {
        g[c] = -0.5 * cf_dist2(h, mu, c, d1) - log((double)K);
        if (g[c] > mx) mx = g[c];
    }
    for (int64_t c = 0; c < K; c++) sum += exp(g[c] - mx);
    if (probs)
        for (int64_t c = 0; c < K; c++) probs[c] = (float)(exp(g[c] - mx) / sum);
    if (nll) *nll = (float)(-(mx + log(sum)) - logdet);
}

/* Eval hidden vectors of a batch: z = E(x), h = F(z1), logdet. */
static gx_tensor *cf_hidden(gx_ctx *ctx, gx_cf_model *m, gx_tensor *x, gx_tensor **z,
                            gx_tensor **logdet) {
    gx_tensor *zz = gx_cf_encode(ctx, m, x);
    gx_tensor *z1 = gx_slice(ctx, zz, 1, 0, m->cfg.d1);
    if (z) *z = zz;
    return gx_cf_flow(ctx, m, z1, logdet);
}

static gx_status cf_check_model(const gx_cf_model *m, gx_err *err) {
    if (!m || !m->mu || m->cfg.classes < 1 || m->cfg.classes > GX_CF_MAX_CLASSES)
        return gx_err_set(err, GX_ERR_INVALID, "cf-inn: model not initialised");
    return GX_OK;
}

/* ---------------------------------------------------------- classification */

/* Rows [lo, hi) of a classification, CF_CHUNK images per forward (the ctx
 * is reset after each: the caller's too, for part 0, as documented). */
typedef struct cf_cls_job {
    gx_cf_model *m;
    const float *x;
    int64_t *pred;
    float *probs, *nll, *h_out;
} cf_cls_job;

static void cf_classify_part(gx_ctx *ctx, int64_t lo, int64_t hi, void *arg) {
    const cf_cls_job *J = arg;
    gx_cf_model *m = J->m;
    const int64_t K = m->cfg.classes, d1 = m->cfg.d1, S = m->cfg.size, px = 3 * S * S;
    for (int64_t i0 = lo; i0 < hi; i0 += CF_CHUNK) {
        int64_t b = hi - i0 < CF_CHUNK ? hi - i0 : CF_CHUNK;
        gx_tensor *ld = NULL;
        gx_tensor *h = cf_hidden(ctx, m, cf_images(ctx, J->x + i0 * px, b, S), NULL, &ld);
        const gx_real *hv = gx_to_host(ctx, h)->data, *ldv = gx_to_host(ctx, ld)->data;
        const gx_real *mu = gx_tensor_host_data(m->mu);
        for (int64_t i = 0; i < b; i++) {
            const gx_real *hrow = hv + i * d1;
            if (J->pred) J->pred[i0 + i] = cf_nearest(hrow, mu, K, d1);
            cf_posterior(hrow, mu, K, d1, (double)ldv[i], J->probs ? J->probs + (i0 + i) * K : NULL,
                         J->nll ? J->nll + i0 + i : NULL);
            if (J->h_out) cf_to_float(hrow, J->h_out + (i0 + i) * d1, d1);
        }
        gx_ctx_reset(ctx);
    }
}

gx_status gx_cf_classify(gx_ctx *ctx, gx_cf_model *m, const float *x, int64_t n, int64_t *pred,
                         float *probs, float *nll, float *h_out, gx_err *err) {
    gx_status s = cf_check_model(m, err);
    if (s != GX_OK) return s;
    if (n < 0 || (n > 0 && !x)) return gx_err_set(err, GX_ERR_INVALID, "cf classify: %lld images", (long long)n);
    int grad = ctx->grad_enabled;
    ctx->grad_enabled = 0;
    /* The images split over the threads, each part on its own context
     * (batch invariant: the same bits as one thread). */
    cf_cls_job J = { m, x, pred, probs, nll, h_out };
    gx_ctx_for_parts(ctx, n, 0, cf_classify_part, &J);
    ctx->grad_enabled = grad;
    return GX_OK;
}

gx_status gx_cf_compute_mhat(gx_ctx *ctx, gx_cf_model *m, const float *x, int64_t n, gx_err *err) {
    gx_status s = cf_check_model(m, err);
    if (s != GX_OK) return s;
    const int64_t K = m->cfg.classes, d1 = m->cfg.d1;
    if (m->params.cuda)   /* it writes parameters: a host-side step of training and bundling */
        return gx_err_set(err, GX_ERR_UNSUPPORTED, "cf m-hat: the parameters are on the device (compute it on the CPU)");
    int64_t *pred = malloc((size_t)(n > 0 ? n : 1) * sizeof *pred);
    float *h = malloc((size_t)(n > 0 ? n : 1) * (size_t)d1 * sizeof *h);
    double *sum = calloc((size_t)(K * d1), sizeof *sum);
    int64_t cnt[GX_CF_MAX_CLASSES] = { 0 };
    if (!pred || !h || !sum) s = gx_err_set(err, GX_ERR_NOMEM, "cf m-hat: out of memory for %lld images", (long long)n);
    if (s == GX_OK) s = gx_cf_classify(ctx, m, x, n, pred, NULL, NULL, h, err);
    if (s == GX_OK) {
        for (int64_t i = 0; i < n; i++) {
            cnt[pred[i]]++;
            for (int64_t j = 0; j < d1; j++) sum[pred[i] * d1 + j] += (double)h[i * d1 + j];
        }
        /* A class nobody was predicted as keeps a zero row and valid 0:
         * counterfactuals then use its mixture mean. */
        for (int64_t c = 0; c < K; c++) {
            for (int64_t j = 0; j < d1; j++)
                m->mhat->data[c * d1 + j] = cnt[c] ? (gx_real)(sum[c * d1 + j] / (double)cnt[c]) : 0;
            m->mhat_valid->data[c] = cnt[c] ? 1 : 0;
        }
    }
    free(pred);
    free(h);
    free(sum);
    return s;
}

/* ---------------------------------------------------------- the alpha rule */

/* The interval [L, U] of alpha with a_c + alpha b_c >= margin for every
 * c != q along h + alpha delta. 0 when empty. */
static int cf_alpha_bounds(const double *h, const double *delta, const gx_real *mu, int64_t K,
                           int64_t d1, int64_t q, double *L, double *U) {
    *L = -INFINITY;
    *U = INFINITY;
    const gx_real *mq = mu + q * d1;
    double nq = 0;
    for (int64_t j = 0; j < d1; j++) nq += (double)mq[j] * mq[j];
    for (int64_t c = 0; c < K; c++) {
        if (c == q) continue;
        const gx_real *mc = mu + c * d1;
        double a = 0, b = 0, nc = 0;
        for (int64_t j = 0; j < d1; j++) {
            double dm = (double)mq[j] - mc[j];
            a += h[j] * dm;
            b += delta[j] * dm;
            nc += (double)mc[j] * mc[j];
        }
        a -= 0.5 * (nq - nc);
        if (b > 0) { double t = (CF_MARGIN - a) / b; if (t > *L) *L = t; }
        else if (b < 0) { double t = (CF_MARGIN - a) / b; if (t < *U) *U = t; }
        else if (a < CF_MARGIN) return 0;      /* the line never gains on c */
    }
    return *L <= *U;
}

/* alpha for one direction delta, or 0 returned when no alpha satisfies
 * the guarantee along it. */
static int cf_alpha(const double *h, const double *delta, const gx_real *mu, int64_t K, int64_t d1,
                    int64_t p, int64_t q, double *alpha) {
    double L, U;
    if (!cf_alpha_bounds(h, delta, mu, K, d1, q, &L, &U)) return 0;
    /* alpha0: h + alpha0 delta on the bisector w.x + b = 0 of mu_p, mu_q. */
    const gx_real *mp = mu + p * d1, *mq = mu + q * d1;
    double nw = 0, hw = 0, dw = 0, bw = 0;
    for (int64_t j = 0; j < d1; j++) {
        double w = (double)mq[j] - mp[j];
        nw += w * w;
        hw += h[j] * w;
        dw += delta[j] * w;
        bw += -0.5 * ((double)mp[j] + mq[j]) * w;
    }
    double a1 = NAN;
    if (nw > 0 && dw != 0) a1 = 0.8 + 0.5 * ((-bw - hw) / dw);   /* w unnormalised: ratios agree */
    /* No bisector crossing along delta: the nearest feasible alpha. */
    if (!isfinite(a1)) a1 = isfinite(L) ? L : isfinite(U) ? U : 0;
    *alpha = fmin(fmax(a1, L), U);
    return 1;
}

/* Direction, alpha and fallback for target q (q != p); delta [d1] out. */
static void cf_direction(const gx_cf_model *m, const double *h, int64_t p, int64_t q, double *delta,
                         double *alpha, int *fallback) {
    const int64_t K = m->cfg.classes, d1 = m->cfg.d1;
    const gx_real *mu = gx_tensor_host_data(m->mu), *mh = gx_tensor_host_data(m->mhat);
    const gx_real *valid = gx_tensor_host_data(m->mhat_valid);
    /* A class without an m-hat (never predicted in training) uses its mean. */
    const gx_real *sp = valid[p] > 0.5 ? mh + p * d1 : mu + p * d1;
    const gx_real *sq = valid[q] > 0.5 ? mh + q * d1 : mu + q * d1;
    *fallback = (valid[p] > 0.5 && valid[q] > 0.5) ? 0 : 2;
    for (int64_t j = 0; j < d1; j++) delta[j] = (double)sq[j] - sp[j];
    if (cf_alpha(h, delta, mu, K, d1, p, q, alpha)) return;
    *fallback = 1;
    for (int64_t j = 0; j < d1; j++) delta[j] = (double)mu[q * d1 + j] - h[j];
    if (!cf_alpha(h, delta, mu, K, d1, p, q, alpha)) *alpha = 1;   /* collapsed means: land on mu_q */
}

/* ------------------------------------------------------------ image pairs */

static double cf_msd(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        double t = (double)a[i] - b[i];
        s += t * t;
    }
    return n ? s / (double)n : NAN;
}

/* Mean over the three bands of gx_morph_ssim (the spec's SSIM); NaN when
 * the image is too small for the 11x11 window. */
static double cf_ssim(const float *a, const float *b, int64_t S) {
    double sum = 0;
    for (int c = 0; c < 3; c++) {
        double v;
        gx_err e;
        if (gx_morph_ssim(a + c * S * S, b + c * S * S, (int)S, (int)S, 1.0, &v, &e) != GX_OK) return NAN;
        sum += v;
    }
    return sum / 3;
}

/* ---------------------------------------------------------- counterfactuals */

static int cf_has_mhat(const gx_cf_model *m) {
    const gx_real *valid = gx_tensor_host_data(m->mhat_valid);
    for (int64_t c = 0; c < m->cfg.classes; c++)
        if (valid[c] > 0.5) return 1;
    return 0;
}

/* Scratch of one counterfactual call (malloc'ed: d1 and S come from files). */
typedef struct cf_work {
    double  *h, *delta;            /* [d1] */
    gx_real *hcf;                  /* [n_targets, d1] rows of the targets != p */
    float   *xrec, *xcf;           /* [3SS], [n_targets, 3SS] */
    int64_t *pred;                 /* [n_targets + 1] re-encoded classes */
    int64_t *row;                  /* [n_targets] target t's x_cf row, -1: x~ */
    gx_real *zv, *hv;              /* [d], [d1]: z = E(x) and h = F(z1) of the input */
} cf_work;

static void cf_work_free(cf_work *w) {
    free(w->h); free(w->delta); free(w->hcf); free(w->xrec); free(w->xcf); free(w->pred); free(w->row); free(w->zv); free(w->hv);
}

static gx_status cf_work_alloc(cf_work *w, int64_t d, int64_t d1, int64_t px, int n, gx_err *err) {
    memset(w, 0, sizeof *w);
    w->h = malloc((size_t)d1 * sizeof *w->h);
    w->delta = malloc((size_t)d1 * sizeof *w->delta);
    w->hcf = malloc((size_t)n * (size_t)d1 * sizeof *w->hcf);
    w->xrec = malloc((size_t)px * sizeof *w->xrec);
    w->xcf = malloc((size_t)n * (size_t)px * sizeof *w->xcf);
    w->pred = malloc((size_t)(n + 1) * sizeof *w->pred);
    w->row = malloc((size_t)n * sizeof *w->row);
    w->zv = malloc((size_t)d * sizeof *w->zv);
    w->hv = malloc((size_t)d1 * sizeof *w->hv);
    if (w->h && w->delta && w->hcf && w->xrec && w->xcf && w->pred && w->row && w->zv && w->hv) return GX_OK;
    cf_work_free(w);
    return gx_err_set(err, GX_ERR_NOMEM, "cf counterfactuals: out of memory");
}

/* One grid's decode and re-encode, split by gx_ctx_for_parts over its rows:
 * row 0 is x~ = D(z), row 1 + k the x_cf of hcf row k (F^-1 of it, with
 * z's z2). Every op is batch invariant (ctx's default), so each row's bits
 * are those of decoding or encoding it alone, whichever part runs it. */
typedef struct cf_dec_job {
    gx_cf_model *m;
    const gx_real *zv;             /* [d] z of x, on the host */
    int64_t first;                 /* first row to re-encode: 0 re-encodes x~ too */
    cf_work *w;                    /* hcf in; xrec, xcf, pred out */
    int64_t *rec_pred;             /* class of x~ (row 0's part writes it) */
} cf_dec_job;

/* z rows [lo, hi) of the grid: z itself for row 0, [F^-1(hcf), z2] after. */
static gx_tensor *cf_grid_z(gx_ctx *ctx, const cf_dec_job *J, int64_t lo, int64_t hi) {
    const int64_t d = J->m->cfg.d, d1 = J->m->cfg.d1, d2 = d - d1;
    gx_tensor *z0 = lo == 0 ? gx_tensor_from(ctx, 2, GX_SHAPE(1, d), J->zv) : NULL;
    const int64_t t0 = lo > 0 ? lo - 1 : 0, nt = hi - 1 - t0;
    if (nt <= 0) return z0;
    gx_tensor *zc = gx_cf_flow_inverse(ctx, J->m, gx_tensor_from(ctx, 2, GX_SHAPE(nt, d1), J->w->hcf + t0 * d1));
    if (d2 > 0) {
        gx_tensor *z2 = gx_tensor_new_host(ctx, 2, GX_SHAPE(nt, d2));
        for (int64_t i = 0; i < nt; i++) memcpy(z2->data + i * d2, J->zv + d1, (size_t)d2 * sizeof *z2->data);
        gx_tensor *parts[2] = { zc, gx_to_ctx(ctx, z2) };
        zc = gx_concat(ctx, 2, parts, 1);
    }
    if (!z0) return zc;
    gx_tensor *rows[2] = { z0, zc };
    return gx_concat(ctx, 2, rows, 0);
}

static void cf_decode_part(gx_ctx *ctx, int64_t lo, int64_t hi, void *arg) {
    const cf_dec_job *J = arg;
    gx_cf_model *m = J->m;
    const int64_t d1 = m->cfg.d1, S = m->cfg.size, px = 3 * S * S;
    gx_tensor *xc = gx_cf_decode(ctx, m, cf_grid_z(ctx, J, lo, hi));     /* [hi - lo, 3, S, S] */
    const gx_real *xcv = gx_to_host(ctx, xc)->data;
    for (int64_t i = lo; i < hi; i++)
        cf_to_float(xcv + (i - lo) * px, i ? J->w->xcf + (i - 1) * px : J->w->xrec, px);
    const int64_t e0 = lo > J->first ? lo : J->first;
    if (e0 >= hi) return;
    gx_tensor *xe = e0 > lo ? gx_slice(ctx, xc, 0, e0 - lo, hi - lo) : xc;
    const gx_real *h2v = gx_to_host(ctx, cf_hidden(ctx, m, xe, NULL, NULL))->data;
    const gx_real *mu = gx_tensor_host_data(m->mu);
    for (int64_t i = e0; i < hi; i++) {
        int64_t c = cf_nearest(h2v + (i - e0) * d1, mu, m->cfg.classes, d1);
        if (i == 0) *J->rec_pred = c;
        else J->w->pred[i - 1] = c;
    }
}

/* Decodes x~ and the x_cf of the nq rows in hcf -> xrec, xcf [nq,3SS];
 * re-encodes the x_cf (and x~ when with_rec, for a target equal to the
 * source): pred[k] = class of x_cf k, *rec_pred = class of x~. One
 * decode + re-encode per thread over its share of the nq + 1 images
 * (a grid: 10 images, two parts of 5 on two threads). */
static void cf_decode_targets(gx_ctx *ctx, gx_cf_model *m, int64_t nq, int with_rec, cf_work *w,
                              int64_t *rec_pred) {
    cf_dec_job J = { m, w->zv, with_rec ? 0 : 1, w, rec_pred };
    gx_ctx_for_parts(ctx, nq + 1, 0, cf_decode_part, &J);
}

/* The per-target numbers that compare x_cf with x and x~; the (x, x~) pair
 * is the same for every target and is filled in once by the caller. */
static void cf_pair_metrics(gx_cf_result *r, const float *x, const float *xrec, const float *xcf, int64_t S) {
    int64_t px = 3 * S * S;
    r->msd_x_cf = cf_msd(x, xcf, px);
    r->msd_rec_cf = cf_msd(xrec, xcf, px);
    r->ssim_x_cf = cf_ssim(x, xcf, S);
    r->ssim_rec_cf = cf_ssim(xrec, xcf, S);
}

/* z = E(x) and h = F(z1) of the grid's input into w->zv, w->hv. */
typedef struct cf_src_job {
    gx_cf_model *m;
    const float *x;
    cf_work *w;
} cf_src_job;

static void cf_source_part(gx_ctx *ctx, int64_t lo, int64_t hi, void *arg) {
    (void)lo, (void)hi;
    const cf_src_job *J = arg;
    const int64_t d = J->m->cfg.d, d1 = J->m->cfg.d1;
    gx_tensor *z = NULL;
    gx_tensor *h = cf_hidden(ctx, J->m, cf_images(ctx, J->x, 1, J->m->cfg.size), &z, NULL);
    memcpy(J->w->zv, gx_to_host(ctx, z)->data, (size_t)d * sizeof *J->w->zv);
    memcpy(J->w->hv, gx_to_host(ctx, h)->data, (size_t)d1 * sizeof *J->w->hv);
}

/* The pair metrics of targets [lo, hi) other than the source (theirs are
 * set by definition); per target, so the parts can run side by side. */
typedef struct cf_metrics_job {
    gx_cf_result *res;
    const float *x;
    const cf_work *w;
    int64_t S;
} cf_metrics_job;

static void cf_metrics_part(gx_ctx *ctx, int64_t lo, int64_t hi, void *arg) {
    (void)ctx;
    const cf_metrics_job *J = arg;
    const int64_t px = 3 * J->S * J->S;
    for (int64_t t = lo; t < hi; t++)
        if (J->w->row[t] >= 0)
            cf_pair_metrics(&J->res[t], J->x, J->w->xrec, J->w->xcf + J->w->row[t] * px, J->S);
}

gx_status gx_cf_counterfactuals(gx_ctx *ctx, gx_cf_model *m, const float *x,
                                const int64_t *targets, int n_targets, float *xrec_out,
                                float *xcf_out, gx_cf_result *res, gx_err *err) {
    gx_status s = cf_check_model(m, err);
    if (s != GX_OK) return s;
    const int64_t K = m->cfg.classes, d1 = m->cfg.d1, S = m->cfg.size, px = 3 * S * S;
    if (!x || !targets || !res || n_targets < 1)
        return gx_err_set(err, GX_ERR_INVALID, "cf counterfactuals: no image or no targets");
    for (int t = 0; t < n_targets; t++)
        if (targets[t] < 0 || targets[t] >= K)
            return gx_err_set(err, GX_ERR_INVALID, "cf counterfactuals: target class %lld outside 0..%lld",
                              (long long)targets[t], (long long)K - 1);
    if (!cf_has_mhat(m))
        return gx_err_set(err, GX_ERR_INVALID, "model has no m-hat (compute it over the training images: "
                          "gx_cf_compute_mhat; galaxy-train cf-inn stores it)");
    cf_work w;
    if ((s = cf_work_alloc(&w, m->cfg.d, d1, px, n_targets, err)) != GX_OK) return s;
    int grad = ctx->grad_enabled;
    ctx->grad_enabled = 0;
    /* The source's z and h as a part of one (its ops on one thread, as in
     * gx_cf_classify), so the grid's source class is classify's, bit for bit. */
    cf_src_job sj = { m, x, &w };
    gx_ctx_for_parts(ctx, 1, 1, cf_source_part, &sj);
    const gx_real *hv = w.hv, *mu = gx_tensor_host_data(m->mu);
    for (int64_t j = 0; j < d1; j++) w.h[j] = (double)hv[j];
    int64_t p = cf_nearest(hv, mu, K, d1), nq = 0;
    int any_self = 0;
    for (int t = 0; t < n_targets; t++) {
        gx_cf_result *r = &res[t];
        memset(r, 0, sizeof *r);
        r->source = p;
        r->target = targets[t];
        if (targets[t] == p) { any_self = 1; r->reached_hidden = 1; continue; }
        cf_direction(m, w.h, p, targets[t], w.delta, &r->alpha, &r->fallback);
        gx_real *row = w.hcf + nq * d1;
        for (int64_t j = 0; j < d1; j++) row[j] = (gx_real)(w.h[j] + r->alpha * w.delta[j]);
        /* Checked on the rounded h_cf, which is what F^-1 receives. */
        r->reached_hidden = cf_nearest(row, mu, K, d1) == targets[t];
        nq++;
    }
    int64_t self_pred = p;
    cf_decode_targets(ctx, m, nq, any_self, &w, &self_pred);
    double msd_x_rec = cf_msd(x, w.xrec, px), ssim_x_rec = cf_ssim(x, w.xrec, S);
    for (int t = 0, k = 0; t < n_targets; t++) {
        int self = targets[t] == p;
        w.row[t] = self ? -1 : k++;
        res[t].reached_reencoded = (self ? self_pred : w.pred[w.row[t]]) == targets[t];
        res[t].msd_x_rec = msd_x_rec;
        res[t].ssim_x_rec = ssim_x_rec;
        if (self) {
            /* x_cf is x~ itself: the (x~, x_cf) pair is a perfect match by
             * definition and (x, x_cf) is (x, x~). */
            res[t].msd_x_cf = msd_x_rec;
            res[t].ssim_x_cf = ssim_x_rec;
            res[t].msd_rec_cf = 0;
            res[t].ssim_rec_cf = 1;
        }
    }
    cf_metrics_job mj = { res, x, &w, S };
    gx_ctx_for_parts(ctx, n_targets, 0, cf_metrics_part, &mj);
    for (int t = 0; t < n_targets && xcf_out; t++) {
        const float *xc = w.row[t] < 0 ? w.xrec : w.xcf + w.row[t] * px;
        memcpy(xcf_out + (int64_t)t * px, xc, (size_t)px * sizeof *xc);
    }
    if (xrec_out) memcpy(xrec_out, w.xrec, (size_t)px * sizeof *xrec_out);
    gx_ctx_reset(ctx);
    ctx->grad_enabled = grad;
    cf_work_free(&w);
    return GX_OK;
}

/* ------------------------------------------------------------- generation */

gx_status gx_cf_generate(gx_ctx *ctx, gx_cf_model *m, int64_t k, uint64_t seed, int64_t n,
                         float *out, gx_err *err) {
    gx_status s = cf_check_model(m, err);
    if (s != GX_OK) return s;
    const int64_t K = m->cfg.classes, d = m->cfg.d, d1 = m->cfg.d1, d2 = d - d1, S = m->cfg.size;
    if (k < 0 || k >= K)
        return gx_err_set(err, GX_ERR_INVALID, "cf generate: class %lld outside 0..%lld", (long long)k, (long long)K - 1);
    if (n < 0 || (n > 0 && !out)) return gx_err_set(err, GX_ERR_INVALID, "cf generate: %lld images", (long long)n);
    int grad = ctx->grad_enabled;
    ctx->grad_enabled = 0;
    gx_rng base;
    gx_rng_init(&base, seed);
    for (int64_t i0 = 0; i0 < n; i0 += CF_CHUNK) {
        int64_t b = n - i0 < CF_CHUNK ? n - i0 : CF_CHUNK;
        gx_tensor *z = gx_tensor_new_host(ctx, 2, GX_SHAPE(b, d));
        const gx_real *mu = gx_tensor_host_data(m->mu);
        /* Image i draws from its own stream (seed, i): the first n images
         * are the same whatever n, and chunking does not matter. */
        for (int64_t i = 0; i < b; i++) {
            gx_rng r = gx_rng_fork(&base, (uint64_t)(i0 + i));
            gx_real *zi = z->data + i * d;
            gx_rng_fill_normal(&r, zi, d, 0.0, 1.0);
            for (int64_t j = 0; j < d1; j++) zi[j] += mu[k * d1 + j];   /* h ~ N(mu_k, I) */
        }
        z = gx_to_ctx(ctx, z);
        gx_tensor *h = gx_slice(ctx, z, 1, 0, d1);
        gx_tensor *zz = gx_cf_flow_inverse(ctx, m, h);
        if (d2 > 0) {
            gx_tensor *parts[2] = { zz, gx_slice(ctx, z, 1, d1, d) };
            zz = gx_concat(ctx, 2, parts, 1);
        }
        gx_tensor *x = gx_cf_decode(ctx, m, zz);
        cf_to_float(gx_to_host(ctx, x)->data, out + i0 * 3 * S * S, x->numel);
        gx_ctx_reset(ctx);
    }
    ctx->grad_enabled = grad;
    return GX_OK;
}

/* ------------------------------------------------------------ checkpoints */

/* 1 when js is a JSON array of exactly k strings. */
static int cf_classes_ok(const char *js, int64_t k) {
    json_t *a = js ? json_loads(js, 0, NULL) : NULL;
    int ok = json_is_array(a) && (int64_t)json_array_size(a) == k;
    for (size_t i = 0; ok && i < json_array_size(a); i++) ok = json_is_string(json_array_get(a, i));
    json_decref(a);
    return ok;
}

static gx_status cf_meta_int(gx_st_writer *w, const char *key, long long v, gx_err *err) {
    char b[32];
    snprintf(b, sizeof b, "%lld", v);
    return gx_st_writer_meta(w, key, b, err);
}

gx_status gx_cf_save(const gx_cf_model *m, const gx_cf_meta *meta, const char *path, gx_err *err) {
    if (!m || !meta || !path) return gx_err_set(err, GX_ERR_INVALID, "cf save: NULL argument");
    if (!cf_classes_ok(meta->classes_json, m->cfg.classes))
        return gx_err_set(err, GX_ERR_INVALID, "cf save: classes must be a JSON list of %lld names",
                          (long long)m->cfg.classes);
    if (!(meta->crop_frac > 0 && meta->crop_frac <= 1))
        return gx_err_set(err, GX_ERR_INVALID, "cf save: crop_frac %g outside (0, 1]", meta->crop_frac);
    char *cfg = gx_cf_config_json(&m->cfg);
    char pre[128], created[32];
    snprintf(pre, sizeof pre, "{\"size\":%lld,\"crop_frac\":%.17g}", (long long)m->cfg.size, meta->crop_frac);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);
    gx_st_writer w;
    gx_st_writer_init(&w);
    gx_status s = cfg ? GX_OK : gx_err_set(err, GX_ERR_NOMEM, "cf save: config JSON");
    if (s == GX_OK) s = gx_params_to_writer(&m->params, &w, err);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "format", CF_CKPT_FORMAT, err);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "model", "cf-inn", err);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "config", cfg, err);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "classes", meta->classes_json, err);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "preprocess", pre, err);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "created", created, err);
    if (s == GX_OK) s = cf_meta_int(&w, "run_id", (long long)meta->run_id, err);
    if (s == GX_OK) s = cf_meta_int(&w, "epoch", meta->epoch, err);
    if (s == GX_OK && meta->has_split_seed) s = cf_meta_int(&w, "split_seed", (long long)meta->split_seed, err);
    if (s == GX_OK && meta->test_metrics_json[0] && strcmp(meta->test_metrics_json, "{}"))
        s = gx_st_writer_meta(&w, "test_metrics", meta->test_metrics_json, err);
    if (s == GX_OK) s = gx_st_writer_write(&w, path, err);
    gx_st_writer_free(&w);
    free(cfg);
    return s;
}

/* Integer metadata: absent -> dflt, present but not an integer -> 0. */
static int cf_meta_i64(const gx_st_file *f, const char *key, int64_t dflt, int64_t *v) {
    const char *s = gx_st_meta(f, key);
    *v = dflt;
    if (!s) return 1;
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (end == s || *end || errno) return 0;
    *v = x;
    return 1;
}

/* preprocess {"size": S (= the config's), "crop_frac": (0,1]} -> crop. */
static gx_status cf_meta_preprocess(const gx_st_file *f, int64_t S, double *crop, gx_err *err) {
    const char *ps = gx_st_meta(f, "preprocess");
    *crop = 1.0;
    if (!ps) return GX_OK;
    json_t *p = json_loads(ps, 0, NULL);
    json_t *sz = json_object_get(p, "size"), *cf = json_object_get(p, "crop_frac");
    int ok = json_is_object(p) && (!sz || (json_is_integer(sz) && json_integer_value(sz) == S)) &&
             (!cf || json_is_number(cf));
    if (ok && cf) *crop = json_number_value(cf);
    json_decref(p);
    if (!ok || !(*crop > 0 && *crop <= 1))
        return gx_err_set(err, GX_ERR_FORMAT, "metadata 'preprocess' is not {\"size\":%lld,\"crop_frac\":(0,1]}",
                          (long long)S);
    return GX_OK;
}

static gx_status cf_load_meta(const gx_st_file *f, const gx_cf_model *m, gx_cf_meta *meta, gx_err *err) {
    const char *cls = gx_st_meta(f, "classes"), *tm = gx_st_meta(f, "test_metrics");
    if (!cls || !cf_classes_ok(cls, m->cfg.classes) || strlen(cls) >= sizeof meta->classes_json)
        return gx_err_set(err, GX_ERR_FORMAT, "metadata 'classes' is not a JSON list of %lld names",
                          (long long)m->cfg.classes);
    double crop;
    gx_status s = cf_meta_preprocess(f, m->cfg.size, &crop, err);
    if (s != GX_OK) return s;
    int64_t run, epoch, split;
    if (!cf_meta_i64(f, "run_id", -1, &run) || !cf_meta_i64(f, "epoch", 0, &epoch) || epoch < 0 || epoch > 1 << 30)
        return gx_err_set(err, GX_ERR_FORMAT, "metadata 'run_id' or 'epoch' is not an integer");
    if (!cf_meta_i64(f, "split_seed", -1, &split) || (gx_st_meta(f, "split_seed") && split < 0))
        return gx_err_set(err, GX_ERR_FORMAT, "metadata 'split_seed' is not an integer >= 0");
    if (tm && strlen(tm) >= sizeof meta->test_metrics_json)
        return gx_err_set(err, GX_ERR_FORMAT, "metadata 'test_metrics' is longer than %zu bytes",
                          sizeof meta->test_metrics_json - 1);
    if (!meta) return GX_OK;
    memset(meta, 0, sizeof *meta);
    snprintf(meta->classes_json, sizeof meta->classes_json, "%s", cls);
    snprintf(meta->test_metrics_json, sizeof meta->test_metrics_json, "%s", tm ? tm : "{}");
    meta->crop_frac = crop;
    meta->run_id = run;
    meta->epoch = (int)epoch;
    meta->has_split_seed = split >= 0;
    meta->split_seed = split >= 0 ? split : 0;
    return GX_OK;
}

/* The buffers the counterfactuals trust: mhat finite, mhat_valid 0 or 1. */
static gx_status cf_check_mhat(const gx_cf_model *m, gx_err *err) {
    for (int64_t i = 0; i < m->mhat->numel; i++)
        if (!isfinite((double)m->mhat->data[i]))
            return gx_err_set(err, GX_ERR_FORMAT, "tensor mhat: value %lld is not finite", (long long)i);
    for (int64_t c = 0; c < m->mhat_valid->numel; c++) {
        gx_real v = m->mhat_valid->data[c];
        if (v != 0 && v != 1)
            return gx_err_set(err, GX_ERR_FORMAT, "tensor mhat_valid: value %lld is %g, not 0 or 1",
                              (long long)c, (double)v);
    }
    return GX_OK;
}

gx_status gx_cf_load(const gx_st_file *f, gx_cf_model *m, gx_cf_meta *meta, gx_err *err) {
    const char *fmt = gx_st_meta(f, "format"), *kind = gx_st_meta(f, "model");
    memset(m, 0, sizeof *m);
    if (!fmt || strcmp(fmt, CF_CKPT_FORMAT))
        return gx_err_set(err, GX_ERR_FORMAT, "not a galaxyd checkpoint (format '%s')", fmt ? fmt : "none");
    if (!kind || strcmp(kind, "cf-inn"))
        return gx_err_set(err, GX_ERR_FORMAT, "checkpoint of model '%s', not cf-inn", kind ? kind : "none");
    gx_cf_config cfg;
    memset(&cfg, 0, sizeof cfg);
    const char *cj = gx_st_meta(f, "config");
    if (!cj) return gx_err_set(err, GX_ERR_FORMAT, "checkpoint has no metadata 'config'");
    gx_status s = gx_cf_config_parse(cj, &cfg, err);
    if (s != GX_OK) return s;
    /* The file must hold what the config describes before the model is
     * allocated (see gx_wm_checkpoint_load). */
    gx_cf_init_shapes(m, cfg);
    s = gx_params_check(&m->params, f, 1, err);
    gx_cf_free(m);
    if (s != GX_OK) return s;
    gx_cf_init(m, cfg, 0);
    s = gx_params_load(&m->params, f, 1, err);
    if (s == GX_OK) s = gx_cf_sync_perms(m, err);
    if (s == GX_OK) s = cf_check_mhat(m, err);
    if (s == GX_OK) s = cf_load_meta(f, m, meta, err);
    if (s != GX_OK) {
        gx_cf_free(m);
        memset(m, 0, sizeof *m);
    }
    return s;
}
