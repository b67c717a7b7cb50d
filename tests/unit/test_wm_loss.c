/*
 * test_wm_loss.c — WaveletMamba's training losses (models/wm_loss.c).
 *
 * Parity: tests/fixtures/wm_loss.safetensors, written by
 * tests/models/gen_wm_loss.py (PyTorch float64 from the spec), B = 13, K = 10,
 * D = 256, true redshifts with NaN, 0 and a negative value, colours on both
 * sides of the valid g-r range; every term, the total and the gradient of the
 * total with respect to logits, redshift, mu, logvar, prior_mu, prior_logvar
 * and lsi_c_log, in HK mode `sample` (lambda 0.5, weight 0.035) and `batch`
 * (lambda 0.1, weight 0.30).
 * Tolerances (f32 engine vs f64 reference on the same f32 inputs):
 *   terms and total: atol 1e-7 + rtol 1e-5; gradients: atol 1e-7 + rtol 2e-5.
 *   Observed: ~1e-7 relative on the terms and most gradients (f32 rounding of
 *   the cross-entropy, exp and log(1 + z) of a rounded 1 + z), ~3e-6 relative
 *   on the batch-mode redshift gradient (the soft-histogram exponents reach
 *   ~80, where f32 exp carries ~80 ulp; Sinkhorn itself iterates in double).
 *
 * Hand-checked: gamma at its clamps (inner +1 and the outer 1 and 5) with the
 * focal value and its gradient against a double formula with gamma constant;
 * the colour weights at the validity bounds and either side of m +- o for
 * both offset rules; an all-missing redshift batch (red = hk = 0, finite
 * gradients); excluded samples change nothing; the VIB/LSI values at KL = 0;
 * the HK schedule. Integration: the tiny model's training outputs through
 * gx_wm_loss_inputs, backward reaching lsi_c_log, priors, heads and stem.
 */
#include "gx_test.h"
#include "gx_wm_loss.h"

#include <string.h>

#define V_ATOL 1e-7
#define V_RTOL 1e-5
#define G_ATOL 1e-7
#define G_RTOL 2e-5

/* ------------------------------------------------------------- parity */

static const char *const grad_keys[] = { "logits", "redshift", "mu", "logvar",
                                         "prior_mu", "prior_logvar", "lsi_c_log" };

static void parity_case(gx_test_state *T, const gx_st_file *f, const char *tag,
                        gx_wm_loss_cfg cfg) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 24);
    gx_tensor *t[7];
    for (int k = 0; k < 7; k++) {
        t[k] = gx_fixture_tensor(T, &ctx, f, grad_keys[k]);
        if (!t[k]) { gx_ctx_free(&ctx); return; }
        t[k]->requires_grad = 1;
    }
    gx_tensor *c4 = gx_fixture_tensor(T, &ctx, f, "c4");
    gx_tensor *z = gx_fixture_tensor(T, &ctx, f, "z_true");
    const gx_st_tensor *lab = gx_st_find(f, "labels");          /* I32 [B] */
    CHECK(lab && lab->dtype == GX_ST_I32 && lab->nbytes == 13 * sizeof(int32_t));
    if (!c4 || !z || !lab || lab->nbytes != 13 * sizeof(int32_t)) { gx_ctx_free(&ctx); return; }
    int32_t labels[13];
    memcpy(labels, lab->data, sizeof labels);

    ctx.grad_enabled = 1;
    gx_wm_loss_in in = { .logits = t[0], .labels = labels, .redshift = t[1], .z_true = z->data,
                         .mu = t[2], .logvar = t[3], .prior_mu = t[4], .prior_logvar = t[5],
                         .c4 = c4, .lsi_c_log = t[6] };
    gx_wm_loss_out L = gx_wm_loss(&ctx, &cfg, &in);
    CHECK(L.total->ndim == 0);
    CHECK(L.n_red == 9);

    char key[64];
    const char *names[6] = { "cls", "red", "hk", "vib", "lsi", "total" };
    double vals[6] = { L.cls, L.red, L.hk, L.vib, L.lsi, L.total_value };
    for (int k = 0; k < 6; k++) {
        gx_real v = (gx_real)vals[k];
        snprintf(key, sizeof key, "%s.%s", tag, names[k]);
        gx_fixture_check(T, f, key, &v, 1, V_ATOL, V_RTOL);
    }
    gx_real gz[2] = { (gx_real)L.gamma, (gx_real)L.zmax };
    snprintf(key, sizeof key, "%s.gamma", tag);
    gx_fixture_check(T, f, key, gz, 1, 1e-6, 1e-6);
    snprintf(key, sizeof key, "%s.zmax", tag);
    gx_fixture_check(T, f, key, gz + 1, 1, 1e-6, 1e-6);

    gx_backward(&ctx, L.total, NULL);
    for (int k = 0; k < 7; k++) {
        CHECK_MSG(t[k]->grad != NULL, "%s: no gradient for %s", tag, grad_keys[k]);
        if (!t[k]->grad) continue;
        snprintf(key, sizeof key, "%s.grad.%s", tag, grad_keys[k]);
        gx_fixture_check(T, f, key, t[k]->grad, t[k]->numel, G_ATOL, G_RTOL);
    }
    gx_ctx_free(&ctx);
}

GX_TEST(wm_loss_parity_sample_and_batch_modes) {
    gx_st_file f;
    if (!gx_fixture_open(T, &f, "wm_loss.safetensors")) return;
    gx_wm_loss_cfg s = gx_wm_loss_cfg_default();
    CHECK(s.hk_mode == GX_WM_HK_SAMPLE && s.sk_lambda == 0.5 && s.hk_weight == 0.035);
    parity_case(T, &f, "s", s);
    gx_wm_loss_cfg b = gx_wm_loss_cfg_table3();
    CHECK(b.hk_mode == GX_WM_HK_BATCH && b.sk_lambda == 0.1);
    b.hk_weight = gx_wm_loss_hk_weight(&b, 10);    /* end of the ramp: 0.30 */
    CHECK_NEAR(b.hk_weight, 0.30, 1e-12);
    parity_case(T, &f, "b", b);
    gx_st_close(&f);
}

/* ------------------------------------------------------- focal, gamma */

/* Focal loss alone (other weights 0, HK off), value and d/dlogits, against
 * the double formula with gamma a constant:
 *   d/dce [alpha (1-p)^g ce] = alpha ((1-p)^g + g (1-p)^(g-1) p ce),
 *   dce/dlogit_k = softmax_k - [k == y]. */
static void focal_case(gx_test_state *T, const char *label, double gamma0, double scale,
                       double want_gamma) {
    enum { B = 3, K = 4 };
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    gx_wm_loss_cfg cfg = gx_wm_loss_cfg_default();
    cfg.w_red = cfg.w_vib = cfg.w_lsi = cfg.hk_weight = 0.0;
    cfg.w_cls = 1.0;
    cfg.focal_gamma0 = gamma0;
    const int32_t y[B] = { 0, 2, 1 };
    const double base[B * K] = { 0.3, -0.7, 1.1, 0.2, -0.4, 0.9, 0.1, 0.5, 1.3, -1.2, 0.6, -0.1 };
    gx_real lg[B * K];
    for (int i = 0; i < B * K; i++) lg[i] = (gx_real)(scale * base[i]);
    gx_tensor *logits = gx_tensor_from(&ctx, 2, GX_SHAPE(B, K), lg);
    logits->requires_grad = 1;
    gx_tensor *zh = gx_tensor_from(&ctx, 1, GX_SHAPE(B), (gx_real[]){ 0.5, 0.6, 0.7 });
    gx_tensor *mu = gx_tensor_zeros(&ctx, 2, GX_SHAPE(B, 2));
    gx_tensor *lv = gx_tensor_zeros(&ctx, 2, GX_SHAPE(B, 2));
    gx_tensor *pm = gx_tensor_zeros(&ctx, 1, GX_SHAPE(2));
    gx_tensor *plv = gx_tensor_zeros(&ctx, 1, GX_SHAPE(2));
    gx_tensor *c4 = gx_tensor_zeros(&ctx, 2, GX_SHAPE(B, 4));
    gx_tensor *cl = gx_tensor_scalar(&ctx, 0);
    const gx_real zt[B] = { 0.4, 0.5, 0.6 };
    ctx.grad_enabled = 1;
    gx_wm_loss_in in = { logits, y, zh, zt, mu, lv, pm, plv, c4, cl };
    gx_wm_loss_out L = gx_wm_loss(&ctx, &cfg, &in);

    double ce[B], p[B][K], mean = 0;
    for (int i = 0; i < B; i++) {
        double mx = -1e300, s = 0;
        for (int k = 0; k < K; k++) mx = fmax(mx, (double)lg[i * K + k]);
        for (int k = 0; k < K; k++) s += exp((double)lg[i * K + k] - mx);
        for (int k = 0; k < K; k++) p[i][k] = exp((double)lg[i * K + k] - mx) / s;
        ce[i] = -log(p[i][y[i]]);
        mean += ce[i] / B;
    }
    if (want_gamma < 0) {   /* interior: the spec's formula on the double mean */
        double d = fmin(fmax(0.5 * (mean - 0.5), -1.0), 1.0);
        want_gamma = fmin(fmax(gamma0 + d, 1.0), 5.0);
        CHECK_MSG(want_gamma > 1.0 && want_gamma < 5.0 && fabs(d) < 1.0, "%s: not interior", label);
    }
    CHECK_MSG(fabs(L.gamma - want_gamma) < 1e-6, "%s: gamma %.9g want %.9g", label, L.gamma, want_gamma);
    double g = L.gamma, want = 0;
    for (int i = 0; i < B; i++) {
        double a = y[i] == 0 ? 0.85 : 0.6, q = 1 - exp(-ce[i]);
        want += a * pow(q, g) * ce[i] / B;
    }
    CHECK_MSG(fabs(L.cls - want) <= 1e-6 + 1e-5 * want, "%s: cls %.9g want %.9g", label, L.cls, want);
    CHECK_NEAR(L.total_value, want, 1e-6 + 1e-5 * want);
    gx_backward(&ctx, L.total, NULL);
    CHECK(logits->grad != NULL);
    for (int i = 0; i < B && logits->grad; i++) {
        double a = y[i] == 0 ? 0.85 : 0.6, pc = exp(-ce[i]), q = 1 - pc;
        double dce = a * (pow(q, g) + g * pow(q, g - 1) * pc * ce[i]) / B;
        for (int k = 0; k < K; k++) {
            double want_g = dce * (p[i][k] - (k == y[i]));
            CHECK_MSG(fabs(logits->grad[i * K + k] - want_g) <= 2e-6 + 1e-4 * fabs(want_g),
                      "%s: dlogits[%d,%d] = %.9g, want %.9g", label, i, k,
                      (double)logits->grad[i * K + k], want_g);
        }
    }
    gx_ctx_free(&ctx);
}

GX_TEST(wm_loss_focal_gamma_at_the_clamps) {
    gx_wm_loss_cfg cfg = gx_wm_loss_cfg_default();
    /* gamma = clamp(g0 + clamp(0.5 (m - 0.5), -1, 1), 1, 5) */
    CHECK_NEAR(gx_wm_loss_focal_gamma(&cfg, 0.5), 2.5, 1e-15);
    CHECK_NEAR(gx_wm_loss_focal_gamma(&cfg, 1.5), 3.0, 1e-15);
    CHECK_NEAR(gx_wm_loss_focal_gamma(&cfg, 2.5), 3.5, 1e-15);    /* inner clamp reached */
    CHECK_NEAR(gx_wm_loss_focal_gamma(&cfg, 40.0), 3.5, 1e-15);
    CHECK_NEAR(gx_wm_loss_focal_gamma(&cfg, 0.0), 2.25, 1e-15);   /* ce >= 0: inner -1 unreachable */
    CHECK_NEAR(gx_wm_loss_focal_gamma(&cfg, -10.0), 1.5, 1e-15);  /* the inner lower clamp */
    cfg.focal_gamma0 = 0.5;
    CHECK_NEAR(gx_wm_loss_focal_gamma(&cfg, 0.1), 1.0, 1e-15);    /* outer lower clamp */
    cfg.focal_gamma0 = 4.9;
    CHECK_NEAR(gx_wm_loss_focal_gamma(&cfg, 3.0), 5.0, 1e-15);    /* outer upper clamp */
}

/* The focal loss through gx_wm_loss at gamma's clamps: logits x -6 make the
 * true classes of rows 0 and 1 unlikely (mean ce ~ 3 > 2.5: inner clamp 3.5,
 * and 5 with gamma0 4.9); logits x 0.05 are nearly uniform (ce ~ log 4), so
 * gamma0 0.5 gives 0.94 -> clamped to 1; x 0.2 is interior (2.5 + ~0.44). */
GX_TEST(wm_loss_focal_value_and_gradient_with_constant_gamma) {
    focal_case(T, "inner clamp", 2.5, -6.0, 3.5);
    focal_case(T, "outer low", 0.5, 0.05, 1.0);
    focal_case(T, "outer high", 4.9, -6.0, 5.0);
    focal_case(T, "interior", 2.5, 0.2, -1.0);
}

/* ----------------------------------------------------- colour weights */

GX_TEST(wm_loss_colour_weights_fallback_offset_thresholds) {
    /* Twelve samples at m = 0.75 and probes symmetric about it: s ~ 0.05
     * <= 0.1, so o = 0.1 and the thresholds are 0.85 / 0.65. */
    gx_real gr[16];
    for (int i = 0; i < 12; i++) gr[i] = (gx_real)0.75;
    gr[12] = (gx_real)0.8501; gr[13] = (gx_real)0.6499;   /* just outside: 1.0 / 0.3 */
    gr[14] = (gx_real)0.8499; gr[15] = (gx_real)0.6501;   /* just inside: 0.7 */
    double w[16];
    gx_wm_loss_colour_weights(gr, 1, 16, w);
    for (int i = 0; i < 12; i++) CHECK(w[i] == 0.7);
    CHECK(w[12] == 1.0);
    CHECK(w[13] == 0.3);
    CHECK(w[14] == 0.7);
    CHECK(w[15] == 0.7);
}

GX_TEST(wm_loss_colour_weights_std_offset_thresholds) {
    /* Two clusters (10 at 0.5, 10 at 1.0) and four probes at m +- (o +- 1e-3):
     * s ~ 0.25 > 0.1, so o = 0.3 s ~ 0.077 (< 0.1: a 0.1 offset would put all
     * four probes in the middle class). o is found by a fixed point, since
     * the probes move s a little. */
    gx_real gr[24];
    for (int i = 0; i < 10; i++) { gr[i] = (gx_real)0.5; gr[10 + i] = (gx_real)1.0; }
    double o = 0.077;
    for (int it = 0; it < 30; it++) {
        gr[20] = (gx_real)(0.75 + o + 1e-3); gr[21] = (gx_real)(0.75 - o - 1e-3);
        gr[22] = (gx_real)(0.75 + o - 1e-3); gr[23] = (gx_real)(0.75 - o + 1e-3);
        double m = 0, ss = 0;
        for (int i = 0; i < 24; i++) m += gr[i] / 24.0;
        for (int i = 0; i < 24; i++) ss += (gr[i] - m) * (gr[i] - m);
        o = 0.3 * sqrt(ss / 23.0);
    }
    CHECK(o > 0.07 && o < 0.09);
    double w[24];
    gx_wm_loss_colour_weights(gr, 1, 24, w);
    for (int i = 0; i < 10; i++) CHECK(w[i] == 0.3 && w[10 + i] == 1.0);
    CHECK(w[20] == 1.0);
    CHECK(w[21] == 0.3);
    CHECK(w[22] == 0.7);
    CHECK(w[23] == 0.7);
}

GX_TEST(wm_loss_colour_weights_valid_range_bounds) {
    /* Valid values close together (o = 0.1 around their mean) weigh 0.7, so a
     * bound counted as valid shows as 0.7, an invalid colour as 0.3. Bounds
     * are inclusive: 0.2 (as f32) and 1.5. */
    double w[5];
    gx_real lo[5] = { (gx_real)0.2, (gx_real)0.22, (gx_real)0.24, (gx_real)0.1999, NAN };
    gx_wm_loss_colour_weights(lo, 1, 5, w);
    CHECK(w[0] == 0.7 && w[1] == 0.7 && w[2] == 0.7);
    CHECK(w[3] == 0.3 && w[4] == 0.3);
    gx_real hi[5] = { (gx_real)1.5, (gx_real)1.48, (gx_real)1.46, (gx_real)1.5001, -INFINITY };
    gx_wm_loss_colour_weights(hi, 1, 5, w);
    CHECK(w[0] == 0.7 && w[1] == 0.7 && w[2] == 0.7);
    CHECK(w[3] == 0.3 && w[4] == 0.3);
    /* one valid colour: s falls back to 0.1, o = 0.1, itself in the middle */
    gx_real one[3] = { (gx_real)0.9, (gx_real)3.0, (gx_real)-1.0 };
    gx_wm_loss_colour_weights(one, 1, 3, w);
    CHECK(w[0] == 0.7 && w[1] == 0.3 && w[2] == 0.3);
    /* stride 4 reads column 1 of c4 */
    gx_real c4[8] = { 9, (gx_real)0.5, 9, 9, 9, (gx_real)0.1, 9, 9 };
    gx_wm_loss_colour_weights(c4 + 1, 4, 2, w);
    CHECK(w[0] == 0.7 && w[1] == 0.3);
}

/* ---------------------------------------------- redshift participation */

/* A small batch of model outputs for the tests below (B rows, D = 3). */
typedef struct {
    gx_tensor *logits, *zh, *mu, *lv, *pm, *plv, *c4, *cl;
    int32_t y[8];
    gx_real z[8];
} wm_batch;

static void wm_batch_make(gx_ctx *ctx, wm_batch *b, int B, const double *zh, const double *z,
                          double gr) {
    gx_rng rng;
    gx_rng_init(&rng, 77);
    b->logits = gx_test_leaf(ctx, &rng, 2, GX_SHAPE(B, 5), -1, 1);
    b->mu = gx_test_leaf(ctx, &rng, 2, GX_SHAPE(B, 3), -1, 1);
    b->lv = gx_test_leaf(ctx, &rng, 2, GX_SHAPE(B, 3), -1, 1);
    b->pm = gx_test_leaf(ctx, &rng, 1, GX_SHAPE(3), -0.2, 0.2);
    b->plv = gx_test_leaf(ctx, &rng, 1, GX_SHAPE(3), -0.2, 0.2);
    b->cl = gx_tensor_scalar(ctx, (gx_real)0.1);
    b->cl->requires_grad = 1;
    b->zh = gx_tensor_new(ctx, 1, GX_SHAPE(B));
    b->zh->requires_grad = 1;
    b->c4 = gx_tensor_zeros(ctx, 2, GX_SHAPE(B, 4));
    for (int i = 0; i < B; i++) {
        b->zh->data[i] = (gx_real)zh[i];
        b->z[i] = (gx_real)z[i];
        b->y[i] = i % 5;
        b->c4->data[i * 4 + 1] = (gx_real)gr;
    }
}

static gx_wm_loss_in wm_batch_in(wm_batch *b) {
    return (gx_wm_loss_in){ b->logits, b->y, b->zh, b->z, b->mu, b->lv, b->pm, b->plv, b->c4, b->cl };
}

static int all_finite(const gx_real *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite((double)x[i])) return 0;
    return 1;
}

GX_TEST(wm_loss_all_missing_redshift_gives_zero_and_finite_gradients) {
    const double zh[4] = { 0.3, 1.2, 0.8, 2.0 }, z[4] = { NAN, 0.0, -0.5, INFINITY };
    for (int mode = 0; mode < 2; mode++) {
        gx_ctx ctx;
        gx_ctx_init(&ctx, 1 << 22);
        wm_batch b;
        wm_batch_make(&ctx, &b, 4, zh, z, 0.7);
        gx_wm_loss_cfg cfg = gx_wm_loss_cfg_default();
        cfg.hk_mode = (gx_wm_hk_mode)mode;
        ctx.grad_enabled = 1;
        gx_wm_loss_in in = wm_batch_in(&b);
        gx_wm_loss_out L = gx_wm_loss(&ctx, &cfg, &in);
        CHECK(L.n_red == 0);
        CHECK(L.red == 0.0 && L.hk == 0.0);
        CHECK_NEAR(L.total_value, 0.9 * L.cls + 0.25 * L.vib + L.lsi, 1e-6);
        CHECK(isfinite(L.total_value) && L.cls > 0 && L.vib > 0 && L.lsi > 0);
        gx_backward(&ctx, L.total, NULL);
        CHECK(b.logits->grad && all_finite(b.logits->grad, b.logits->numel));
        CHECK(b.mu->grad && all_finite(b.mu->grad, b.mu->numel));
        CHECK(b.lv->grad && all_finite(b.lv->grad, b.lv->numel));
        CHECK(b.cl->grad && all_finite(b.cl->grad, 1));
        /* the redshift head gets no gradient at all, or exact zeros */
        if (b.zh->grad)
            for (int i = 0; i < 4; i++) CHECK(b.zh->grad[i] == 0);
        gx_ctx_free(&ctx);
    }
}

/* Samples without a redshift change nothing: red and hk of a 6-sample batch
 * with 2 missing equal those of the 4-sample batch of its participating
 * samples (all colours invalid, so every weight is 0.3 in both), whatever
 * the missing samples' predictions are (2.9 would raise zmax if counted),
 * and their predictions get zero gradient. */
/* red + hk of one batch in its own context; the gradient of red + hk with
 * respect to the predictions is copied to g. */
static gx_wm_loss_out red_hk(gx_wm_hk_mode mode, int B, const double *zh, const double *z,
                             double *g) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 22);
    wm_batch b;
    wm_batch_make(&ctx, &b, B, zh, z, 5.0);
    gx_wm_loss_cfg cfg = gx_wm_loss_cfg_default();
    cfg.hk_mode = mode;
    ctx.grad_enabled = 1;
    gx_wm_loss_in in = wm_batch_in(&b);
    gx_wm_loss_out L = gx_wm_loss(&ctx, &cfg, &in);
    gx_backward(&ctx, gx_add(&ctx, L.t_red, L.t_hk), NULL);
    for (int i = 0; i < B; i++) g[i] = b.zh->grad ? (double)b.zh->grad[i] : NAN;
    gx_ctx_free(&ctx);
    L.total = L.t_cls = L.t_red = L.t_hk = L.t_vib = L.t_lsi = NULL;   /* freed */
    return L;
}

GX_TEST(wm_loss_missing_redshift_samples_take_no_part) {
    const double zh6[6] = { 0.31, 2.9, 0.75, 1.4, 2.9, 0.05 };
    const double z6[6] = { 0.4, NAN, 0.9, 1.1, -1.0, 0.02 };
    const double zh4[4] = { 0.31, 0.75, 1.4, 0.05 }, z4[4] = { 0.4, 0.9, 1.1, 0.02 };
    for (int mode = 0; mode < 2; mode++) {
        double g6[6], g4[4];
        gx_wm_loss_out L6 = red_hk((gx_wm_hk_mode)mode, 6, zh6, z6, g6);
        gx_wm_loss_out L4 = red_hk((gx_wm_hk_mode)mode, 4, zh4, z4, g4);
        CHECK(L6.n_red == 4 && L4.n_red == 4);
        CHECK_NEAR(L6.zmax, 2.0, 1e-12);        /* 1.2 * 1.4 < 2; 2.9 would give 3 */
        CHECK_NEAR(L6.red, L4.red, 1e-7);
        CHECK_NEAR(L6.hk, L4.hk, 1e-6);
        CHECK(L6.red > 0 && L6.hk > 0);
        /* hand value of red: 0.3 * mean (log1p zh - log1p z)^2 */
        double r = 0;
        for (int i = 0; i < 4; i++) r += 0.3 * pow(log1p(zh4[i]) - log1p(z4[i]), 2) / 4;
        CHECK_NEAR(L4.red, r, 1e-6 * r + 1e-8);
        CHECK(g6[1] == 0 && g6[4] == 0);
        const int map[4] = { 0, 2, 3, 5 };
        for (int i = 0; i < 4; i++) CHECK_NEAR(g6[map[i]], g4[i], 1e-5 * fabs(g4[i]) + 1e-7);
    }
}

GX_TEST(wm_loss_hk_batch_mode_equals_sample_mode_for_identical_rows) {
    /* Identical (zh, z) rows: every histogram equals the mean one, so the
     * two modes agree; with hk_weight 0 the term is skipped and reported 0. */
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 22);
    const double zh[3] = { 0.6, 0.6, 0.6 }, z[3] = { 0.9, 0.9, 0.9 };
    wm_batch b;
    wm_batch_make(&ctx, &b, 3, zh, z, 0.5);
    gx_wm_loss_cfg cfg = gx_wm_loss_cfg_default();
    gx_wm_loss_in in = wm_batch_in(&b);
    gx_wm_loss_out Ls = gx_wm_loss(&ctx, &cfg, &in);
    cfg.hk_mode = GX_WM_HK_BATCH;
    gx_wm_loss_out Lb = gx_wm_loss(&ctx, &cfg, &in);
    CHECK(Ls.hk > 0.1);
    CHECK_NEAR(Lb.hk, Ls.hk, 1e-6 * Ls.hk);
    CHECK_NEAR(Ls.total_value - Lb.total_value, 0.0, 1e-6);
    cfg.hk_weight = 0.0;
    gx_wm_loss_out L0 = gx_wm_loss(&ctx, &cfg, &in);
    CHECK(L0.hk == 0.0);
    CHECK_NEAR(L0.total_value, Ls.total_value - 0.035 * Ls.hk, 1e-6);
    gx_ctx_free(&ctx);
}

/* ------------------------------------------------------------ VIB, LSI */

GX_TEST(wm_loss_vib_and_lsi_by_hand) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    /* D = 2, prior N(0, 1): mu = (1, 0), logvar = (0, log 2):
     * kl = 0.5 (1 + 1 - 1) = 0.5 and 0.5 (-log 2 + 2 - 1); KL = mean of the two. */
    const double D0 = 0.5, D1 = 0.5 * (1.0 - log(2.0)), KL = 0.5 * (D0 + D1), c = 0.4;
    gx_tensor *logits = gx_tensor_zeros(&ctx, 2, GX_SHAPE(1, 3));
    gx_tensor *zh = gx_tensor_from(&ctx, 1, GX_SHAPE(1), (gx_real[]){ 0.5 });
    gx_tensor *mu = gx_tensor_from(&ctx, 2, GX_SHAPE(1, 2), (gx_real[]){ 1, 0 });
    gx_tensor *lv = gx_tensor_from(&ctx, 2, GX_SHAPE(1, 2), (gx_real[]){ 0, (gx_real)log(2.0) });
    gx_tensor *pm = gx_tensor_zeros(&ctx, 1, GX_SHAPE(2));
    gx_tensor *plv = gx_tensor_zeros(&ctx, 1, GX_SHAPE(2));
    gx_tensor *c4 = gx_tensor_zeros(&ctx, 2, GX_SHAPE(1, 4));
    gx_tensor *cl = gx_tensor_scalar(&ctx, (gx_real)c);
    mu->requires_grad = cl->requires_grad = 1;
    const int32_t y[1] = { 1 };
    const gx_real z[1] = { NAN };
    ctx.grad_enabled = 1;
    gx_wm_loss_cfg cfg = gx_wm_loss_cfg_default();
    gx_wm_loss_in in = { logits, y, zh, z, mu, lv, pm, plv, c4, cl };
    gx_wm_loss_out L = gx_wm_loss(&ctx, &cfg, &in);
    CHECK_NEAR(L.vib, KL, 1e-6);
    double lsi = 0.12 * sqrt(exp(c) * KL);
    CHECK_NEAR(L.lsi, lsi, 1e-6);
    /* uniform logits over 3 classes: ce = log 3, gamma = 2.5 + 0.5 (log 3 - 0.5) */
    CHECK_NEAR(L.gamma, 2.5 + 0.5 * (log(3.0) - 0.5), 1e-6);
    gx_backward(&ctx, L.total, NULL);
    /* d lsi / d c = lsi / 2; d total / d mu_0 = 0.25 * (mu_0 / D) + lsi/(2 KL) * (mu_0 / D) */
    CHECK(cl->grad && mu->grad);
    if (cl->grad) CHECK_NEAR(cl->grad[0], 0.5 * lsi, 1e-6);
    if (mu->grad) {
        CHECK_NEAR(mu->grad[0], 0.25 * 0.5 + lsi / (2 * KL) * 0.5, 1e-6);
        CHECK_NEAR(mu->grad[1], 0.0, 1e-7);
    }
    /* KL = 0 (posterior = prior): clamped to 1e-8 inside the square root */
    gx_tensor *lv2 = gx_tensor_zeros(&ctx, 2, GX_SHAPE(1, 2));
    gx_tensor *mu2 = gx_tensor_zeros(&ctx, 2, GX_SHAPE(1, 2));
    gx_wm_loss_in in2 = { logits, y, zh, z, mu2, lv2, pm, plv, c4, cl };
    gx_wm_loss_out L2 = gx_wm_loss(&ctx, &cfg, &in2);
    CHECK_NEAR(L2.vib, 0.0, 1e-7);
    CHECK_NEAR(L2.lsi, 0.12 * sqrt(exp(c) * 1e-8), 1e-9);
    gx_ctx_free(&ctx);
}

/* ------------------------------------------------------------ schedule */

GX_TEST(wm_loss_hk_weight_schedules) {
    gx_wm_loss_cfg d = gx_wm_loss_cfg_default();
    CHECK(gx_wm_loss_hk_weight(&d, 0) == 0.0);
    CHECK(gx_wm_loss_hk_weight(&d, 1) == 0.0);
    CHECK(gx_wm_loss_hk_weight(&d, 2) == 0.035);
    CHECK(gx_wm_loss_hk_weight(&d, 119) == 0.035);
    CHECK(d.w_cls == 0.90 && d.w_red == 0.10 && d.w_vib == 0.25 && d.w_lsi == 0.12);
    CHECK(d.sk_iters == 50 && d.hk_bins == 40 && d.hk_delta == 1.0 && d.sk_eps == 1e-4);
    gx_wm_loss_cfg t = gx_wm_loss_cfg_table3();
    CHECK(t.hk_weight == 0.0);
    CHECK(gx_wm_loss_hk_weight(&t, 1) == 0.0);
    CHECK(gx_wm_loss_hk_weight(&t, 2) == 0.0);
    CHECK_NEAR(gx_wm_loss_hk_weight(&t, 6), 0.15, 1e-15);
    CHECK_NEAR(gx_wm_loss_hk_weight(&t, 9), 0.2625, 1e-15);
    CHECK(gx_wm_loss_hk_weight(&t, 10) == 0.30);
    CHECK(gx_wm_loss_hk_weight(&t, 50) == 0.30);
}

/* ------------------------------------------------------- with the model */

/* The tiny model in training mode, its outputs through gx_wm_loss_inputs:
 * the total is finite and equals its weighted terms, and backward reaches
 * lsi_c_log, the priors, the redshift head and the first stem conv. */
GX_TEST(wm_loss_on_tiny_model_outputs_reaches_the_parameters) {
    gx_wm_model m;
    gx_wm_init(&m, gx_wm_config_tiny(), 5);
    gx_ctx ctx;
    gx_ctx_init(&ctx, 64 << 20);
    gx_rng rng;
    gx_rng_init(&rng, 3);
    gx_tensor *x = gx_test_const(&ctx, &rng, 4, GX_SHAPE(4, 3, 32, 32), 0, 1);
    ctx.grad_enabled = 1;
    gx_wm_out o = gx_wm_forward(&ctx, &m, x, NULL, 1);
    const int32_t y[4] = { 0, 4, 9, 2 };
    const gx_real z[4] = { 0.3f, NAN, 1.1f, 0.05f };
    gx_wm_loss_cfg cfg = gx_wm_loss_cfg_default();
    gx_wm_loss_in in = gx_wm_loss_inputs(&o, &m, y, z);
    CHECK(in.lsi_c_log == m.lsi_c_log && in.c4 == o.c4);
    gx_wm_loss_out L = gx_wm_loss(&ctx, &cfg, &in);
    CHECK(L.n_red == 3);
    CHECK(isfinite(L.total_value));
    CHECK_NEAR(L.total_value, 0.9 * L.cls + 0.1 * L.red + 0.035 * L.hk + 0.25 * L.vib + L.lsi,
               1e-5 * fabs(L.total_value));
    gx_params_zero_grad(&m.params);
    gx_backward(&ctx, L.total, NULL);
    gx_tensor *probe[4] = { m.lsi_c_log, m.prior_logvar, m.red5.w, m.stem_conv[0].w };
    for (int k = 0; k < 4; k++) {
        double n2 = 0;
        int finite = probe[k]->grad != NULL;
        for (int64_t i = 0; finite && i < probe[k]->numel; i++) {
            finite = isfinite((double)probe[k]->grad[i]);
            n2 += (double)probe[k]->grad[i] * probe[k]->grad[i];
        }
        CHECK_MSG(finite && n2 > 0, "parameter %d: gradient missing, zero or not finite", k);
    }
    /* d total / d lsi_c_log = lsi / 2 (lsi_c_log enters only there) */
    if (m.lsi_c_log->grad) CHECK_NEAR(m.lsi_c_log->grad[0], 0.5 * L.lsi, 1e-6);
    gx_ctx_free(&ctx);
    gx_wm_free(&m);
}
