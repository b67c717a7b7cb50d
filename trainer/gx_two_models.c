/*
 * gx_two_models.c — the two-models checks (contract in gx_two_models.h).
 *
 * The measures are plain loops over float images; the model steps run in
 * eval mode without a tape, in chunks of TM_CHUNK rows so the arena stays
 * bounded whatever the number of draws.
 */
#include "gx_two_models.h"

#include "gx_morph.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TM_CHUNK 32

/* ------------------------------------------------------------- measures */

/* The spec's normalisation into out (n floats, double accumulation). */
static void tm_normalise(const float *x, int64_t n, double *out) {
    double mean = 0, ss = 0;
    for (int64_t i = 0; i < n; i++) mean += x[i];
    mean /= (double)n;
    for (int64_t i = 0; i < n; i++) {
        out[i] = x[i] - mean;
        ss += out[i] * out[i];
    }
    double norm = sqrt(ss);
    if (norm == 0) norm = 0.001;
    for (int64_t i = 0; i < n; i++) out[i] /= norm;
}

double gx_tm_cosine(const float *a, const float *b, int64_t n) {
    double *u = malloc((size_t)n * 2 * sizeof *u);
    if (!u) return NAN;
    tm_normalise(a, n, u);
    tm_normalise(b, n, u + n);
    double dot = 0;
    for (int64_t i = 0; i < n; i++) dot += u[i] * u[n + i];
    free(u);
    return dot;
}

/* Flip f of one C*S*S image: bit 0 horizontal (columns), bit 1 vertical. */
static void tm_flip(const double *src, int C, int S, int f, double *dst) {
    for (int c = 0; c < C; c++)
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                int sy = (f & 2) ? S - 1 - y : y, sx = (f & 1) ? S - 1 - x : x;
                dst[((int64_t)c * S + y) * S + x] = src[((int64_t)c * S + sy) * S + sx];
            }
}

gx_status gx_tm_max_cosine(const float *gen, int64_t ng, const float *train, int64_t ntr, int C, int S,
                           double *maxcos, gx_err *err) {
    if (!gen || !train || !maxcos || ng < 1 || ntr < 1 || C < 1 || S < 1)
        return gx_err_set(err, GX_ERR_INVALID, "two-models: max cosine needs images (ng %lld, ntr %lld)",
                          (long long)ng, (long long)ntr);
    int64_t n = (int64_t)C * S * S;
    /* Training images with their 4 flips, normalised once: [ntr*4, n]. */
    double *tr = malloc((size_t)(ntr * 4 * n) * sizeof *tr), *g = malloc((size_t)(ng * n) * sizeof *g);
    double *tmp = malloc((size_t)n * sizeof *tmp);
    if (!tr || !g || !tmp) {
        free(tr), free(g), free(tmp);
        return gx_err_set(err, GX_ERR_NOMEM, "two-models: out of memory for %lld training images",
                          (long long)ntr);
    }
    for (int64_t t = 0; t < ntr; t++) {
        tm_normalise(train + t * n, n, tmp);
        for (int f = 0; f < 4; f++) tm_flip(tmp, C, S, f, tr + (t * 4 + f) * n);
    }
    for (int64_t i = 0; i < ng; i++) tm_normalise(gen + i * n, n, g + i * n);
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < ng; i++) {
        double best = -2;
        for (int64_t t = 0; t < ntr * 4; t++) {
            const double *a = g + i * n, *b = tr + t * n;
            double dot = 0;
            for (int64_t k = 0; k < n; k++) dot += a[k] * b[k];
            if (dot > best) best = dot;
        }
        maxcos[i] = best;
    }
    free(tr), free(g), free(tmp);
    return GX_OK;
}

void gx_tm_histogram(const double *v, int64_t n, int nbins, double lo, double hi, int64_t *counts) {
    memset(counts, 0, (size_t)nbins * sizeof *counts);
    double w = (hi - lo) / nbins;
    for (int64_t i = 0; i < n; i++) {
        int b = w > 0 ? (int)floor((v[i] - lo) / w) : 0;
        if (b < 0) b = 0;
        if (b >= nbins) b = nbins - 1;
        counts[b]++;
    }
}

/* ------------------------------------------------------------ model steps */

void gx_tm_draw(const gx_cf_model *m, uint64_t seed, int64_t n, int64_t *cls, float *eps) {
    int64_t d = m->cfg.d, K = m->cfg.classes;
    gx_rng rng;
    gx_rng_init(&rng, seed);
    gx_real *e = malloc((size_t)(n * d) * sizeof *e);
    if (e) gx_rng_fill_normal(&rng, e, n * d, 0, 1);
    for (int64_t i = 0; i < n * d; i++) eps[i] = e ? (float)e[i] : 0.0f;
    for (int64_t i = 0; i < n; i++) cls[i] = i % K;
    free(e);
}

gx_status gx_tm_decode(gx_ctx *ctx, gx_cf_model *m, const int64_t *cls, const float *eps, int64_t n, float *x,
                       gx_err *err) {
    int64_t d = m->cfg.d, d1 = m->cfg.d1, d2 = d - d1, S = m->cfg.size, per = 3 * S * S;
    int grad = ctx->grad_enabled;
    ctx->grad_enabled = 0;
    for (int64_t i0 = 0; i0 < n; i0 += TM_CHUNK) {
        int64_t b = n - i0 < TM_CHUNK ? n - i0 : TM_CHUNK;
        gx_tensor *h = gx_tensor_new(ctx, 2, GX_SHAPE(b, d1));
        gx_tensor *z2 = gx_tensor_new(ctx, 2, GX_SHAPE(b, d2));
        for (int64_t i = 0; i < b; i++) {
            const float *e = eps + (i0 + i) * d;
            const gx_real *mu = m->mu->data + cls[i0 + i] * d1;
            for (int64_t k = 0; k < d1; k++) h->data[i * d1 + k] = mu[k] + (gx_real)e[k];
            for (int64_t k = 0; k < d2; k++) z2->data[i * d2 + k] = (gx_real)e[d1 + k];
        }
        gx_tensor *z1 = gx_cf_flow_inverse(ctx, m, h);
        gx_tensor *xr = gx_cf_decode(ctx, m, gx_concat(ctx, 2, (gx_tensor *const[]){ z1, z2 }, 1));
        for (int64_t i = 0; i < b * per; i++) x[i0 * per + i] = (float)xr->data[i];
        gx_ctx_reset(ctx);
    }
    ctx->grad_enabled = grad;
    (void)err;
    return GX_OK;
}

/* Index of the nearest mixture mean to h (d1 values). */
static int64_t tm_nearest(const gx_cf_model *m, const gx_real *h) {
    int64_t d1 = m->cfg.d1, best = 0;
    double bd = INFINITY;
    for (int64_t c = 0; c < m->cfg.classes; c++) {
        double s = 0;
        for (int64_t k = 0; k < d1; k++) {
            double t = h[k] - m->mu->data[c * d1 + k];
            s += t * t;
        }
        if (s < bd) bd = s, best = c;
    }
    return best;
}

gx_status gx_tm_encode_eps(gx_ctx *ctx, gx_cf_model *m, const float *x, const int64_t *cls, int64_t n,
                           float *eps_out, gx_err *err) {
    int64_t d = m->cfg.d, d1 = m->cfg.d1, S = m->cfg.size, per = 3 * S * S;
    int grad = ctx->grad_enabled;
    ctx->grad_enabled = 0;
    for (int64_t i0 = 0; i0 < n; i0 += TM_CHUNK) {
        int64_t b = n - i0 < TM_CHUNK ? n - i0 : TM_CHUNK;
        gx_tensor *xt = gx_tensor_new(ctx, 4, GX_SHAPE(b, 3, S, S));
        for (int64_t i = 0; i < b * per; i++) xt->data[i] = (gx_real)x[i0 * per + i];
        gx_cf_out o = gx_cf_forward(ctx, m, xt, 0, NULL, 0);
        for (int64_t i = 0; i < b; i++) {
            const gx_real *h = o.h->data + i * d1, *z = o.z->data + i * d;
            int64_t c = cls ? cls[i0 + i] : tm_nearest(m, h);
            float *e = eps_out + (i0 + i) * d;
            for (int64_t k = 0; k < d1; k++) e[k] = (float)(h[k] - m->mu->data[c * d1 + k]);
            for (int64_t k = d1; k < d; k++) e[k] = (float)z[k];
        }
        gx_ctx_reset(ctx);
    }
    ctx->grad_enabled = grad;
    (void)err;
    return GX_OK;
}

/* ------------------------------------------------------------ morphology */

/* Statistics compared between generated and real images (spec §2). */
static const char *const tm_morph_stats[GX_TM_MORPH_NSTATS] = { "concentration", "asymmetry", "smoothness",
                                                                 "gini", "m20" };

const char *gx_tm_morph_stat_name(int i) {
    return i >= 0 && i < GX_TM_MORPH_NSTATS ? tm_morph_stats[i] : "?";
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void gx_tm_morph_image(const float *x, int S, float *out) {
    int64_t n = (int64_t)S * S;
    for (int64_t i = 0; i < n; i++) out[i] = (x[i] + x[n + i] + x[2 * n + i]) / 3.0f;
    /* Sky level: the median of the outermost 3-pixel frame (our cutouts are
     * centred on the galaxy; the frame is sky in all but the largest ones). */
    int fw = S >= 12 ? 3 : 1, m = 0;
    float *frame = malloc((size_t)(4 * fw * S) * sizeof *frame);
    if (!frame) return;
    for (int y = 0; y < S; y++)
        for (int xx = 0; xx < S; xx++)
            if (y < fw || y >= S - fw || xx < fw || xx >= S - fw) frame[m++] = out[(int64_t)y * S + xx];
    qsort(frame, (size_t)m, sizeof *frame, cmp_float);
    float sky = m ? frame[m / 2] : 0;
    free(frame);
    for (int64_t i = 0; i < n; i++) out[i] -= sky;
}

gx_status gx_tm_morph_measure(const float *x, int64_t n, int S, double *stats, int *ok, gx_err *err) {
    int64_t per = (int64_t)S * S;
    float *img = calloc((size_t)(n * per), sizeof *img);
    gx_morph_result *r = malloc((size_t)n * sizeof *r);
    if (!img || !r) {
        free(img), free(r);
        return gx_err_set(err, GX_ERR_NOMEM, "two-models: out of memory for %lld morphology images", (long long)n);
    }
    for (int64_t i = 0; i < n; i++) gx_tm_morph_image(x + i * 3 * per, S, img + i * per);
    gx_status s = gx_morph_measure_batch(img, NULL, n, S, S, NULL, 0, r, err);
    for (int64_t i = 0; s == GX_OK && i < n; i++) {
        const double v[GX_TM_MORPH_NSTATS] = { r[i].concentration, r[i].asymmetry, r[i].smoothness, r[i].gini,
                                               r[i].m20 };
        ok[i] = r[i].flag <= GX_MORPH_BAD;
        for (int k = 0; k < GX_TM_MORPH_NSTATS; k++) {
            stats[i * GX_TM_MORPH_NSTATS + k] = v[k];
            /* statmorph's -99 marks a statistic it could not compute even
             * when the flag is only 2 ("bad"): such a row would dominate W1. */
            if (!isfinite(v[k]) || v[k] == -99.0) ok[i] = 0;
        }
    }
    free(img), free(r);
    return s;
}

/* The values of statistic k over the rows with ok set. */
static int64_t tm_column(const double *stats, const int *ok, int64_t n, int k, double *out) {
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (ok[i]) out[m++] = stats[i * GX_TM_MORPH_NSTATS + k];
    return m;
}

gx_status gx_tm_morph_w1(const double *sa, const int *oka, int64_t na, const double *sb, const int *okb,
                         int64_t nb, double *w1, gx_err *err) {
    double *u = malloc((size_t)(na + nb) * sizeof *u);
    if (!u) return gx_err_set(err, GX_ERR_NOMEM, "two-models: out of memory");
    gx_status s = GX_OK;
    for (int k = 0; k < GX_TM_MORPH_NSTATS; k++) {
        int64_t ma = tm_column(sa, oka, na, k, u), mb = tm_column(sb, okb, nb, k, u + na);
        w1[k] = NAN;
        if (ma > 0 && mb > 0 && (s = gx_morph_w1_exact(u, ma, u + na, mb, &w1[k], err)) != GX_OK) break;
    }
    free(u);
    return s;
}
