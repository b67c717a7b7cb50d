/*
 * test_cf_cf.c — what models/cf_inn_cf.c promises:
 *   - the counterfactual alpha rule on hand-built hidden spaces (encoder
 *     output fixed through its last bias, flow set to the identity, means and
 *     m-hat placed by hand): alpha1 inside [L, U], clamped at L, clamped at
 *     U, the Delta = mu_q - h fallback, a class without m-hat (fallback 2),
 *     the source class itself, and no m-hat at all; every alpha checked
 *     against hand-computed values and the guarantee g_q - g_c >= 0.5;
 *   - on random models with m-hat computed, every target is reached in
 *     hidden space;
 *   - save -> load gives identical outputs; corrupt or mismatched files are
 *     refused naming the tensor or key;
 *   - generation is deterministic per seed and image i depends on (seed, i);
 *   - the full grid (x~ and every x_cf decoded as one batch, re-encoded as
 *     one batch, the (x, x~) metrics computed once) gives bit for bit what
 *     one target at a time gives, and its metrics are the definitions'.
 */
#include "gx_test.h"
#include "gx_cf_inn.h"
#include "gx_morph.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* --------------------------------------------------------- hand-built */

/* A 3-class model whose h is the constant hv (encoder fc2 weight 0, bias
 * = [hv, 0...]) and whose flow is the identity (last subnet layers 0,
 * permutations identity). mu rows given (the other coordinates 0). */
static void hb_model(gx_cf_model *m, const double h2[2], const double mu[3][2]) {
    gx_cf_config c = gx_cf_config_tiny();
    c.classes = 3;
    c.d1 = 4;
    gx_cf_init(m, c, 7);
    memset(m->enc_fc2.w->data, 0, (size_t)m->enc_fc2.w->numel * sizeof(gx_real));
    memset(m->enc_fc2.b->data, 0, (size_t)m->enc_fc2.b->numel * sizeof(gx_real));
    m->enc_fc2.b->data[0] = (gx_real)h2[0];
    m->enc_fc2.b->data[1] = (gx_real)h2[1];
    for (int b = 0; b < c.blocks; b++) {
        gx_cf_block *bl = &m->block[b];
        gx_cf_lin *last[2] = { &bl->n1[2], &bl->n2[2] };
        for (int k = 0; k < 2; k++) {
            memset(last[k]->w->data, 0, (size_t)last[k]->w->numel * sizeof(gx_real));
            memset(last[k]->b->data, 0, (size_t)last[k]->b->numel * sizeof(gx_real));
        }
        for (int64_t j = 0; j < c.d1; j++) bl->perm_buf->data[j] = (gx_real)j;
    }
    gx_err err;
    GX_ASSERT(gx_cf_sync_perms(m, &err) == GX_OK);
    memset(m->mu->data, 0, (size_t)m->mu->numel * sizeof(gx_real));
    for (int k = 0; k < 3; k++) {
        m->mu->data[k * 4] = (gx_real)mu[k][0];
        m->mu->data[k * 4 + 1] = (gx_real)mu[k][1];
    }
    memset(m->mhat->data, 0, (size_t)m->mhat->numel * sizeof(gx_real));
}

static void hb_mhat(gx_cf_model *m, int k, double a, double b, int valid) {
    m->mhat->data[k * 4] = (gx_real)a;
    m->mhat->data[k * 4 + 1] = (gx_real)b;
    m->mhat_valid->data[k] = (gx_real)valid;
}

static float *hb_image(int64_t S, uint64_t seed) {
    float *x = malloc((size_t)(3 * S * S) * sizeof *x);
    gx_rng r;
    gx_rng_init(&r, seed);
    for (int64_t i = 0; i < 3 * S * S; i++) x[i] = (float)gx_rng_uniform(&r);
    return x;
}

/* min over c != q of g_q - g_c at h + alpha delta (2-D, other coords 0). */
static double hb_margin(const double mu[3][2], const double h[2], const double delta[2], double alpha, int q) {
    double y[2] = { h[0] + alpha * delta[0], h[1] + alpha * delta[1] }, best = INFINITY;
    for (int c = 0; c < 3; c++) {
        if (c == q) continue;
        double dq = (y[0] - mu[q][0]) * (y[0] - mu[q][0]) + (y[1] - mu[q][1]) * (y[1] - mu[q][1]);
        double dc = (y[0] - mu[c][0]) * (y[0] - mu[c][0]) + (y[1] - mu[c][1]) * (y[1] - mu[c][1]);
        double g = 0.5 * (dc - dq);
        if (g < best) best = g;
    }
    return best;
}

/* One counterfactual to target 1 of the hand-built model; checks source,
 * alpha, fallback, the guarantee and that h + alpha delta is past the
 * bisector of mu_0 and mu_1. */
static void hb_case(gx_test_state *T, const char *label, const double mu[3][2], const double mh0[2],
                    const double mh1[2], int valid1, double want_alpha, int want_fallback,
                    const double want_delta[2]) {
    const double h[2] = { 1, 0 };
    gx_cf_model m;
    hb_model(&m, h, mu);
    hb_mhat(&m, 0, mh0[0], mh0[1], 1);
    hb_mhat(&m, 1, mh1[0], mh1[1], valid1);
    gx_ctx ctx;
    gx_ctx_init(&ctx, 8 << 20);
    float *x = hb_image(m.cfg.size, 1);
    gx_cf_result r;
    gx_err err;
    int64_t q = 1;
    gx_status s = gx_cf_counterfactuals(&ctx, &m, x, &q, 1, NULL, NULL, &r, &err);
    CHECK_MSG(s == GX_OK, "%s: %s", label, err.msg);
    CHECK_MSG(r.source == 0 && r.target == 1, "%s: source %lld target %lld", label, (long long)r.source,
              (long long)r.target);
    CHECK_MSG(fabs(r.alpha - want_alpha) < 1e-6, "%s: alpha %.9g, want %.9g", label, r.alpha, want_alpha);
    CHECK_MSG(r.fallback == want_fallback, "%s: fallback %d, want %d", label, r.fallback, want_fallback);
    CHECK_MSG(r.reached_hidden == 1, "%s: not reached in hidden space", label);
    double mg = hb_margin(mu, h, want_delta, r.alpha, 1);
    CHECK_MSG(mg >= 0.5 - 1e-6, "%s: g_q - g_c = %g < 0.5", label, mg);
    /* Past the bisector of mu_0, mu_1: (y - (mu0+mu1)/2).(mu1 - mu0) > 0. */
    double y0 = h[0] + r.alpha * want_delta[0], y1 = h[1] + r.alpha * want_delta[1];
    double side = (y0 - 0.5 * (mu[0][0] + mu[1][0])) * (mu[1][0] - mu[0][0]) +
                  (y1 - 0.5 * (mu[0][1] + mu[1][1])) * (mu[1][1] - mu[0][1]);
    CHECK_MSG(side > 0, "%s: h_cf not past the bisector (%g)", label, side);
    CHECK(isfinite(r.msd_x_cf) && isfinite(r.ssim_x_cf) && isfinite(r.msd_x_rec));
    free(x);
    gx_ctx_free(&ctx);
    gx_cf_free(&m);
}

GX_TEST(cf_alpha_rule_hand_built) {
    const double mu[3][2] = { { 0, 0 }, { 6, 0 }, { 0, 6 } };
    const double mh0[2] = { 1, 0 };
    /* Delta (4,0): alpha0 = 0.5 (h + alpha0 Delta = (3,0), the bisector),
     * alpha1 = 1.05; L = 12.5/24, no upper bound -> alpha1. */
    hb_case(T, "alpha1 inside", mu, mh0, (double[2]){ 5, 0 }, 1, 1.05, 0, (double[2]){ 4, 0 });
    /* Delta (1,0): alpha0 = 2, alpha1 = 1.8 < L = (0.5 + 12)/6. */
    hb_case(T, "clamped at L", mu, mh0, (double[2]){ 2, 0 }, 1, 12.5 / 6, 0, (double[2]){ 1, 0 });
    /* mu_2 = (9,0) beyond mu_1; Delta (10,0): alpha1 = 0.9 would cross the
     * mu_1/mu_2 bisector; U = (0.5 - 19.5)/(-30). */
    const double mu_u[3][2] = { { 0, 0 }, { 6, 0 }, { 9, 0 } };
    hb_case(T, "clamped at U", mu_u, mh0, (double[2]){ 11, 0 }, 1, 19.0 / 30, 0, (double[2]){ 10, 0 });
    /* Delta (0,6) never gains on class 0 (b_0 = 0, a_0 = -12 < 0.5): the
     * fallback Delta = mu_1 - h = (5,0): alpha0 0.4, alpha1 1.0 >= L. */
    hb_case(T, "fallback", mu, mh0, (double[2]){ 1, 6 }, 1, 1.0, 1, (double[2]){ 5, 0 });
    /* Class 1 without m-hat: mu_1 stands in, Delta = (5,0), fallback 2. */
    hb_case(T, "no m-hat for q", mu, mh0, (double[2]){ 99, 99 }, 0, 1.0, 2, (double[2]){ 5, 0 });
}

GX_TEST(cf_counterfactual_self_and_no_mhat) {
    const double mu[3][2] = { { 0, 0 }, { 6, 0 }, { 0, 6 } };
    gx_cf_model m;
    hb_model(&m, (double[2]){ 1, 0 }, mu);
    gx_ctx ctx;
    gx_ctx_init(&ctx, 8 << 20);
    float *x = hb_image(m.cfg.size, 2);
    int64_t S = m.cfg.size, px = 3 * S * S, tg[3] = { 0, 1, 2 };
    gx_cf_result r[3];
    gx_err err;
    /* No m-hat at all: refused, saying so. */
    CHECK(gx_cf_counterfactuals(&ctx, &m, x, tg, 3, NULL, NULL, r, &err) == GX_ERR_INVALID);
    CHECK(strstr(err.msg, "m-hat") != NULL);
    hb_mhat(&m, 0, 1, 0, 1);
    hb_mhat(&m, 1, 5, 0, 1);
    hb_mhat(&m, 2, 0, 5, 1);
    float *xr = malloc((size_t)px * sizeof *xr), *xc = malloc((size_t)(3 * px) * sizeof *xc);
    CHECK_MSG(gx_cf_counterfactuals(&ctx, &m, x, tg, 3, xr, xc, r, &err) == GX_OK, "%s", err.msg);
    /* The source itself: alpha 0, the reconstruction, reached both ways
     * (the encoder ignores x here, so x_cf re-encodes to h again). */
    CHECK(r[0].source == 0 && r[0].alpha == 0 && r[0].fallback == 0 && r[0].reached_hidden);
    CHECK(!memcmp(xc, xr, (size_t)px * sizeof *xr));
    CHECK(r[0].msd_rec_cf == 0 && fabs(r[0].ssim_rec_cf - 1) < 1e-9);
    CHECK(r[1].reached_hidden && r[2].reached_hidden);
    /* This encoder maps every image to class 0: never re-encoded as 1 or 2. */
    CHECK(r[0].reached_reencoded == 1 && r[1].reached_reencoded == 0 && r[2].reached_reencoded == 0);
    CHECK(memcmp(xc + px, xr, (size_t)px * sizeof *xr) != 0);
    /* A bad target is refused. */
    int64_t badq = 3;
    CHECK(gx_cf_counterfactuals(&ctx, &m, x, &badq, 1, NULL, NULL, r, &err) == GX_ERR_INVALID);
    free(xr);
    free(xc);
    free(x);
    gx_ctx_free(&ctx);
    gx_cf_free(&m);
}

/* ------------------------------------------------------- random models */

/* A random m-hat (N(0, 4^2) entries, seeded) for every class, all valid:
 * Delta from m-hat for every target. */
static void random_mhat_for_every_class(gx_cf_model *m, uint64_t seed) {
    gx_rng rr;
    gx_rng_init(&rr, seed);
    gx_rng_fill_normal(&rr, m->mhat->data, m->mhat->numel, 0.0, 4.0);
    for (int64_t c = 0; c < m->cfg.classes; c++) m->mhat_valid->data[c] = 1;
}

static float *rand_images(int64_t n, int64_t S, uint64_t seed) {
    float *x = malloc((size_t)(n * 3 * S * S) * sizeof *x);
    gx_rng r;
    gx_rng_init(&r, seed);
    /* A smooth blob of random position and brightness on noise: images the
     * encoder does not map all to one point. */
    for (int64_t i = 0; i < n; i++) {
        double cx = gx_rng_uniform(&r) * S, cy = gx_rng_uniform(&r) * S, a = gx_rng_uniform(&r);
        double w = 2 + 6 * gx_rng_uniform(&r);
        for (int64_t c = 0; c < 3; c++)
            for (int64_t y = 0; y < S; y++)
                for (int64_t xx = 0; xx < S; xx++) {
                    double d2 = ((double)xx - cx) * ((double)xx - cx) + ((double)y - cy) * ((double)y - cy);
                    double v = a * exp(-d2 / (2 * w * w)) + 0.1 * gx_rng_uniform(&r);
                    x[((i * 3 + c) * S + y) * S + xx] = (float)(v > 1 ? 1 : v);
                }
    }
    return x;
}

/* Counterfactuals of the first n images to every other class: counts of
 * targets, of those reached in hidden space, and by fallback kind. */
static void cf_reach_all(gx_test_state *T, gx_ctx *ctx, gx_cf_model *m, const float *x, const int64_t *pred,
                         int n, int *total, int *reached, int fb[3]) {
    int64_t K = m->cfg.classes, px = 3 * m->cfg.size * m->cfg.size, tg[GX_CF_MAX_CLASSES];
    gx_cf_result r[GX_CF_MAX_CLASSES];
    gx_err err;
    for (int64_t c = 0; c < K; c++) tg[c] = c;
    for (int i = 0; i < n; i++) {
        CHECK_MSG(gx_cf_counterfactuals(ctx, m, x + i * px, tg, (int)K, NULL, NULL, r, &err) == GX_OK,
                  "%s", err.msg);
        for (int64_t c = 0; c < K; c++) {
            CHECK(r[c].source == pred[i] && isfinite(r[c].alpha));
            if (r[c].source == c) continue;
            (*total)++;
            *reached += r[c].reached_hidden;
            fb[r[c].fallback]++;
        }
    }
}

/* MSD and band-mean SSIM (gx_morph_ssim) of two [3,S,S] images. */
static void grid_pair(const float *a, const float *b, int64_t S, double *msd, double *ssim) {
    double s = 0, q = 0;
    for (int64_t i = 0; i < 3 * S * S; i++) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    for (int c = 0; c < 3; c++) {
        double v = NAN;
        gx_err e;
        if (gx_morph_ssim(a + c * S * S, b + c * S * S, (int)S, (int)S, 1.0, &v, &e) != GX_OK) v = NAN;
        q += v;
    }
    *msd = s / (double)(3 * S * S);
    *ssim = q / 3;
}

GX_TEST(cf_grid_equals_targets_one_at_a_time) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 16 << 20);
    gx_cf_model m;
    gx_cf_init(&m, gx_cf_config_tiny(), 5);
    const int64_t S = m.cfg.size, K = m.cfg.classes, px = 3 * S * S, n = 8;
    float *x = rand_images(n, S, 77);
    gx_err err;
    random_mhat_for_every_class(&m, 78);
    int64_t tg[GX_CF_MAX_CLASSES];
    for (int64_t c = 0; c < K; c++) tg[c] = K - 1 - c;                /* source somewhere inside */
    float *xr = malloc((size_t)px * sizeof *xr), *xc = malloc((size_t)(K * px) * sizeof *xc);
    float *xr1 = malloc((size_t)px * sizeof *xr1), *xc1 = malloc((size_t)px * sizeof *xc1);
    CHECK(xr && xc && xr1 && xc1);
    for (int64_t i = 0; i < 2 && xr && xc && xr1 && xc1; i++) {
        gx_cf_result r[GX_CF_MAX_CLASSES], r1;
        CHECK_MSG(gx_cf_counterfactuals(&ctx, &m, x + i * px, tg, (int)K, xr, xc, r, &err) == GX_OK, "%s", err.msg);
        int self_seen = 0;
        for (int64_t t = 0; t < K; t++) {
            CHECK(gx_cf_counterfactuals(&ctx, &m, x + i * px, &tg[t], 1, xr1, xc1, &r1, &err) == GX_OK);
            CHECK_MSG(!memcmp(xc + t * px, xc1, (size_t)px * sizeof *xc1), "image %lld target %lld: x_cf bits differ",
                      (long long)i, (long long)tg[t]);
            CHECK(!memcmp(xr, xr1, (size_t)px * sizeof *xr1));
            CHECK(!memcmp(&r[t], &r1, sizeof r1));
            /* The metrics are the definitions' values on the returned images. */
            double msd, ssim;
            grid_pair(x + i * px, xc + t * px, S, &msd, &ssim);
            CHECK(r[t].msd_x_cf == msd && r[t].ssim_x_cf == ssim);
            grid_pair(x + i * px, xr, S, &msd, &ssim);
            CHECK(r[t].msd_x_rec == msd && r[t].ssim_x_rec == ssim);
            if (r[t].source == tg[t]) {
                self_seen = 1;
                CHECK(r[t].msd_rec_cf == 0 && r[t].ssim_rec_cf == 1 && r[t].alpha == 0);
            } else {
                grid_pair(xr, xc + t * px, S, &msd, &ssim);
                CHECK(r[t].msd_rec_cf == msd && r[t].ssim_rec_cf == ssim && msd > 0);
            }
        }
        CHECK(self_seen);
    }
    free(xr); free(xc); free(xr1); free(xc1);
    free(x);
    gx_cf_free(&m);
    gx_ctx_free(&ctx);
}

/* The grid splits its decode, re-encode and metrics over the threads
 * (gx_ctx_for_parts); every image and number is the same bits at 1, 2 and
 * 3 threads (parts of 10 rows: 10, 5 + 5, 3 + 3 + 4). */
GX_TEST(cf_grid_same_bits_at_any_thread_count) {
    int saved = gx_get_threads();
    gx_ctx ctx;
    gx_ctx_init(&ctx, 16 << 20);
    gx_cf_model m;
    gx_cf_init(&m, gx_cf_config_tiny(), 9);
    const int64_t S = m.cfg.size, K = m.cfg.classes, px = 3 * S * S;
    float *x = rand_images(1, S, 91);
    random_mhat_for_every_class(&m, 92);
    int64_t tg[GX_CF_MAX_CLASSES];
    for (int64_t c = 0; c < K; c++) tg[c] = c;
    float *xr[3], *xc[3];
    gx_cf_result r[3][GX_CF_MAX_CLASSES];
    gx_err err;
    for (int k = 0; k < 3; k++) {
        xr[k] = malloc((size_t)px * sizeof *xr[k]);
        xc[k] = malloc((size_t)(K * px) * sizeof *xc[k]);
        CHECK(xr[k] && xc[k]);
        if (!xr[k] || !xc[k]) continue;
        gx_set_threads(k + 1);
        CHECK_MSG(gx_cf_counterfactuals(&ctx, &m, x, tg, (int)K, xr[k], xc[k], r[k], &err) == GX_OK, "%s", err.msg);
        if (k == 0) continue;
        CHECK_MSG(!memcmp(xr[0], xr[k], (size_t)px * sizeof *xr[k]), "%d threads: x~ bits differ", k + 1);
        CHECK_MSG(!memcmp(xc[0], xc[k], (size_t)(K * px) * sizeof *xc[k]), "%d threads: x_cf bits differ", k + 1);
        CHECK_MSG(!memcmp(r[0], r[k], (size_t)K * sizeof r[0][0]), "%d threads: results differ", k + 1);
    }
    CHECK(ctx.n_side == 3);   /* the 3-thread grid ran on three side contexts */
    gx_set_threads(saved);
    for (int k = 0; k < 3; k++) { free(xr[k]); free(xc[k]); }
    free(x);
    gx_cf_free(&m);
    gx_ctx_free(&ctx);
}

/* gx_cf_classify splits its images over the threads: a batch of 37 (two
 * chunks of 32 at one thread; parts of 19 + 18 or 13 + 12 + 12) gives the
 * same bits at 1, 2 and 3 threads, and each row equals the image alone. */
GX_TEST(cf_classify_same_bits_at_any_thread_count) {
    int saved = gx_get_threads();
    gx_ctx ctx;
    gx_ctx_init(&ctx, 16 << 20);
    gx_cf_model m;
    gx_cf_init(&m, gx_cf_config_tiny(), 13);
    enum { N = 37 };
    const int64_t S = m.cfg.size, K = m.cfg.classes, d1 = m.cfg.d1, px = 3 * S * S;
    float *x = rand_images(N, S, 131);
    float *pr[3], *nl[3], *h[3];
    int64_t pred[3][N];
    gx_err err;
    for (int t = 0; t < 3; t++) {
        pr[t] = malloc((size_t)(N * K) * sizeof *pr[t]);
        nl[t] = malloc((size_t)N * sizeof *nl[t]);
        h[t] = malloc((size_t)(N * d1) * sizeof *h[t]);
        CHECK(pr[t] && nl[t] && h[t]);
        if (!pr[t] || !nl[t] || !h[t]) continue;
        gx_set_threads(t + 1);
        CHECK(gx_cf_classify(&ctx, &m, x, N, pred[t], pr[t], nl[t], h[t], &err) == GX_OK);
        if (t == 0) continue;
        CHECK_MSG(!memcmp(pred[0], pred[t], sizeof pred[0]) && !memcmp(pr[0], pr[t], (size_t)(N * K) * sizeof *pr[t]) &&
                  !memcmp(nl[0], nl[t], (size_t)N * sizeof *nl[t]) && !memcmp(h[0], h[t], (size_t)(N * d1) * sizeof *h[t]),
                  "%d threads differ from one", t + 1);
    }
    gx_set_threads(saved);
    float p1[GX_CF_MAX_CLASSES], n1;
    int64_t q1;
    for (int64_t i = 0; i < N && pr[0]; i += 12) {
        CHECK(gx_cf_classify(&ctx, &m, x + i * px, 1, &q1, p1, &n1, NULL, &err) == GX_OK);
        CHECK(q1 == pred[0][i] && n1 == nl[0][i] && !memcmp(p1, pr[0] + i * K, (size_t)K * sizeof *p1));
    }
    for (int t = 0; t < 3; t++) { free(pr[t]); free(nl[t]); free(h[t]); }
    free(x);
    gx_cf_free(&m);
    gx_ctx_free(&ctx);
}

GX_TEST(cf_random_models_reach_every_target) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 16 << 20);
    int fb_all[2][3] = { { 0, 0, 0 }, { 0, 0, 0 } };
    for (uint64_t seed = 1; seed <= 3; seed++) {
        gx_cf_model m;
        gx_cf_init(&m, gx_cf_config_tiny(), seed);
        int64_t S = m.cfg.size, n = 40;
        float *x = rand_images(n, S, seed + 100);
        gx_err err;
        CHECK_MSG(gx_cf_compute_mhat(&ctx, &m, x, n, &err) == GX_OK, "%s", err.msg);
        /* m-hat_c is the mean h of the images predicted c. */
        int64_t pred[40];
        float h[40 * 8];
        CHECK(gx_cf_classify(&ctx, &m, x, n, pred, NULL, NULL, h, &err) == GX_OK);
        int64_t c0 = pred[0], cnt = 0;
        double mean0 = 0;
        for (int64_t i = 0; i < n; i++) if (pred[i] == c0) { mean0 += h[i * 8]; cnt++; }
        CHECK_NEAR(m.mhat->data[c0 * 8], mean0 / (double)cnt, 1e-5);
        CHECK(m.mhat_valid->data[c0] == 1);
        /* Phase 0: the computed m-hat (a random model sends most images to
         * one class, so the other classes have none: fallback 2). Phase 1:
         * random m-hat for every class, which exercises Delta from m-hat and
         * the mu_q - h fallback. */
        for (int phase = 0; phase < 2; phase++) {
            if (phase == 1) random_mhat_for_every_class(&m, seed + 7);
            int total = 0, reached = 0, fb[3] = { 0, 0, 0 };
            cf_reach_all(T, &ctx, &m, x, pred, 5, &total, &reached, fb);
            CHECK_MSG(reached == total, "seed %llu phase %d: %d of %d targets reached in hidden space",
                      (unsigned long long)seed, phase, reached, total);
            fb_all[phase][0] += fb[0]; fb_all[phase][1] += fb[1]; fb_all[phase][2] += fb[2];
        }
        free(x);
        gx_cf_free(&m);
    }
    for (int ph = 0; ph < 2; ph++)
        printf("  %s m-hat: Delta from m-hat %d, mu_q - h fallback %d, class without m-hat %d\n",
               ph ? "random" : "computed", fb_all[ph][0], fb_all[ph][1], fb_all[ph][2]);
    CHECK(fb_all[1][0] > 0 && fb_all[1][1] > 0);
    gx_ctx_free(&ctx);
}

/* ----------------------------------------------------------- checkpoints */

static const char *cls3 = "[\"a\",\"b\",\"c\"]";
static const char *cls10 = "[\"0\",\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]";

static void tmp_path(char *buf, size_t n, const char *tag) {
    snprintf(buf, n, "/tmp/gx_cf_cf_%d_%s.safetensors", (int)getpid(), tag);
}

static gx_cf_meta meta_of(const char *classes) {
    gx_cf_meta me;
    memset(&me, 0, sizeof me);
    snprintf(me.classes_json, sizeof me.classes_json, "%s", classes);
    snprintf(me.test_metrics_json, sizeof me.test_metrics_json, "{\"accuracy\":0.5}");
    me.crop_frac = 0.8;
    me.run_id = 42;
    me.epoch = 3;
    return me;
}

/* Loads path into m; returns the status and leaves the message in err. */
static gx_status load_path(const char *path, gx_cf_model *m, gx_cf_meta *meta, gx_err *err) {
    gx_st_file f;
    memset(&f, 0, sizeof f);
    gx_status s = gx_st_read(&f, path, err);
    if (s == GX_OK) s = gx_cf_load(&f, m, meta, err);
    gx_st_close(&f);
    return s;
}

GX_TEST(cf_save_load_round_trip) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 16 << 20);
    gx_cf_model a, b;
    gx_cf_init(&a, gx_cf_config_tiny(), 9);
    int64_t S = a.cfg.size, K = a.cfg.classes, n = 12, px = 3 * S * S;
    float *x = rand_images(n, S, 5);
    gx_err err;
    CHECK(gx_cf_compute_mhat(&ctx, &a, x, n, &err) == GX_OK);
    char path[128];
    tmp_path(path, sizeof path, "rt");
    gx_cf_meta me = meta_of(cls10), got;
    CHECK_MSG(gx_cf_save(&a, &me, path, &err) == GX_OK, "save: %s", err.msg);
    CHECK_MSG(load_path(path, &b, &got, &err) == GX_OK, "load: %s", err.msg);
    CHECK(!strcmp(got.classes_json, cls10) && got.crop_frac == 0.8 && got.run_id == 42 && got.epoch == 3);
    CHECK(strstr(got.test_metrics_json, "accuracy") != NULL);
    CHECK(b.cfg.d == a.cfg.d && b.cfg.blocks == a.cfg.blocks && b.cfg.classes == K);
    /* Identical outputs: classification and counterfactuals. */
    int64_t pa[12], pb[12];
    float pra[12 * 10], prb[12 * 10], na[12], nb[12];
    CHECK(gx_cf_classify(&ctx, &a, x, n, pa, pra, na, NULL, &err) == GX_OK);
    CHECK(gx_cf_classify(&ctx, &b, x, n, pb, prb, nb, NULL, &err) == GX_OK);
    CHECK(!memcmp(pa, pb, sizeof pa) && !memcmp(pra, prb, sizeof pra) && !memcmp(na, nb, sizeof na));
    int64_t tg[2] = { 1, 7 };
    gx_cf_result ra[2], rb[2];
    float *xa = malloc((size_t)(2 * px) * sizeof *xa), *xb = malloc((size_t)(2 * px) * sizeof *xb);
    CHECK(gx_cf_counterfactuals(&ctx, &a, x, tg, 2, NULL, xa, ra, &err) == GX_OK);
    CHECK(gx_cf_counterfactuals(&ctx, &b, x, tg, 2, NULL, xb, rb, &err) == GX_OK);
    CHECK(!memcmp(xa, xb, (size_t)(2 * px) * sizeof *xa));
    CHECK(ra[0].alpha == rb[0].alpha && ra[1].alpha == rb[1].alpha);
    /* The checkpoint's metadata keys. */
    gx_st_file f;
    memset(&f, 0, sizeof f);
    CHECK(gx_st_read(&f, path, &err) == GX_OK);
    CHECK(gx_st_meta(&f, "model") && !strcmp(gx_st_meta(&f, "model"), "cf-inn"));
    CHECK(gx_st_meta(&f, "preprocess") && strstr(gx_st_meta(&f, "preprocess"), "\"size\":32"));
    CHECK(gx_st_meta(&f, "created") && gx_st_find(&f, "mhat") && gx_st_find(&f, "flow.block0.perm"));
    gx_st_close(&f);
    /* Saving with the wrong number of class names is refused. */
    me = meta_of(cls3);
    CHECK(gx_cf_save(&a, &me, path, &err) == GX_ERR_INVALID);
    free(xa);
    free(xb);
    free(x);
    unlink(path);
    gx_cf_free(&a);
    gx_cf_free(&b);
    gx_ctx_free(&ctx);
}

/* Writes every tensor of p except `skip` plus cf-inn metadata with cfg. */
static gx_status write_custom(const gx_params *p, const char *skip, const gx_cf_config *cfg,
                              const char *model, const char *path, gx_err *err) {
    gx_st_writer w;
    gx_st_writer_init(&w);
    char *cj = gx_cf_config_json(cfg);
    gx_status s = GX_OK;
    for (int i = 0; s == GX_OK && i < p->n; i++) {
        const gx_param *q = p->items[i];
        if (skip && !strcmp(q->name, skip)) continue;
        s = gx_st_writer_add_real(&w, q->name, q->t.ndim, q->t.shape, q->t.data, err);
    }
    if (s == GX_OK) s = gx_st_writer_meta(&w, "format", "galaxyd-checkpoint-1", err);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "model", model, err);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "config", cj, err);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "classes", cls10, err);
    if (s == GX_OK) s = gx_st_writer_write(&w, path, err);
    gx_st_writer_free(&w);
    free(cj);
    return s;
}

GX_TEST(cf_load_refuses_corrupt) {
    gx_cf_model a, wide, b;
    gx_cf_config c = gx_cf_config_tiny(), cw = c;
    cw.hidden = 48;
    gx_cf_init(&a, c, 1);
    gx_cf_init(&wide, cw, 1);
    char path[128];
    tmp_path(path, sizeof path, "bad");
    gx_err err;
    /* Tensors of another width under this config: the tensor is named. */
    CHECK(write_custom(&wide.params, NULL, &c, "cf-inn", path, &err) == GX_OK);
    CHECK(load_path(path, &b, NULL, &err) != GX_OK);
    CHECK_MSG(strstr(err.msg, "encoder.fc1.weight") != NULL, "message: %s", err.msg);
    /* A missing tensor is named. */
    CHECK(write_custom(&a.params, "mhat_valid", &c, "cf-inn", path, &err) == GX_OK);
    CHECK(load_path(path, &b, NULL, &err) != GX_OK);
    CHECK_MSG(strstr(err.msg, "mhat_valid") != NULL, "message: %s", err.msg);
    /* Another model's file. */
    CHECK(write_custom(&a.params, NULL, &c, "wavelet-mamba", path, &err) == GX_OK);
    CHECK(load_path(path, &b, NULL, &err) == GX_ERR_FORMAT);
    CHECK_MSG(strstr(err.msg, "wavelet-mamba") != NULL, "message: %s", err.msg);
    /* A broken permutation (a repeated index) names its block. */
    gx_real keep = a.block[2].perm_buf->data[0];
    a.block[2].perm_buf->data[0] = a.block[2].perm_buf->data[1];
    CHECK(write_custom(&a.params, NULL, &c, "cf-inn", path, &err) == GX_OK);
    CHECK(load_path(path, &b, NULL, &err) != GX_OK);
    CHECK_MSG(strstr(err.msg, "block2") || strstr(err.msg, "block 2"), "message: %s", err.msg);
    a.block[2].perm_buf->data[0] = keep;
    /* m-hat flags other than 0/1. */
    a.mhat_valid->data[4] = 0.5;
    CHECK(write_custom(&a.params, NULL, &c, "cf-inn", path, &err) == GX_OK);
    CHECK(load_path(path, &b, NULL, &err) == GX_ERR_FORMAT);
    CHECK_MSG(strstr(err.msg, "mhat_valid") != NULL, "message: %s", err.msg);
    a.mhat_valid->data[4] = 0;
    /* The intact file loads (the refusals above were about what changed). */
    CHECK(write_custom(&a.params, NULL, &c, "cf-inn", path, &err) == GX_OK);
    CHECK_MSG(load_path(path, &b, NULL, &err) == GX_OK, "intact: %s", err.msg);
    gx_cf_free(&b);
    unlink(path);
    gx_cf_free(&a);
    gx_cf_free(&wide);
}

/* ------------------------------------------------------------ generation */

GX_TEST(cf_generate_deterministic) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 16 << 20);
    gx_cf_model m;
    gx_cf_init(&m, gx_cf_config_tiny(), 4);
    int64_t S = m.cfg.size, px = 3 * S * S, n = 35;
    float *a = malloc((size_t)(n * px) * sizeof *a), *b = malloc((size_t)(n * px) * sizeof *b);
    gx_err err;
    CHECK(gx_cf_generate(&ctx, &m, 3, 77, n, a, &err) == GX_OK);
    CHECK(gx_cf_generate(&ctx, &m, 3, 77, n, b, &err) == GX_OK);
    CHECK(!memcmp(a, b, (size_t)(n * px) * sizeof *a));
    /* Image i depends on (seed, i) only: 3 images are the first 3 of 35
     * (which crossed a chunk boundary). */
    CHECK(gx_cf_generate(&ctx, &m, 3, 77, 3, b, &err) == GX_OK);
    CHECK(!memcmp(a, b, (size_t)(3 * px) * sizeof *a));
    int in01 = 1;
    for (int64_t i = 0; i < n * px; i++) in01 &= a[i] >= 0 && a[i] <= 1;
    CHECK(in01);
    CHECK(memcmp(a, a + px, (size_t)px * sizeof *a) != 0);      /* different draws */
    CHECK(gx_cf_generate(&ctx, &m, 3, 78, 3, b, &err) == GX_OK);
    CHECK(memcmp(a, b, (size_t)(3 * px) * sizeof *a) != 0);
    CHECK(gx_cf_generate(&ctx, &m, 10, 77, 1, b, &err) == GX_ERR_INVALID);
    free(a);
    free(b);
    gx_cf_free(&m);
    gx_ctx_free(&ctx);
}
