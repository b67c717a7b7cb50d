/*
 * test_morph_api.c — morph/ beyond the statmorph comparison: bad input never
 * crashes and says why, the exact aperture geometry, the smoothness rule at
 * small radii, the batch entry point, SSIM and the 1-Wasserstein distances
 * (references from skimage / scipy in tests/fixtures/morph/morph_dist.safetensors,
 * written by tests/morph/gen_morph_dist.py).
 */
#include "gx_morph.h"
#include "gx_morph_impl.h"
#include "gx_safetensors.h"
#include "gx_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define N 64

/* A Sérsic-like blob with deterministic noise, centred at (cx, cy). */
static void blob(float *im, double cx, double cy, double re, double q, double noise, unsigned seed) {
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            double dx = j - cx, dy = (i - cy) / q;
            double r = sqrt(dx * dx + dy * dy);
            seed = seed * 1103515245u + 12345u;
            double u = ((seed >> 8) & 0xffff) / 65536.0 - 0.5;
            im[i * N + j] = (float)(exp(-1.678 * (r / re - 1.0)) * 0.05 + noise * u);
        }
}

static int all_minus99(const gx_morph_result *r) {
    for (int k = 0; k < gx_morph_nfields; k++)
        if (gx_morph_get(r, k) != -99.0) return 0;
    return 1;
}

GX_TEST(morph_bad_images_flag_4_with_reason) {
    float *im = malloc(N * N * sizeof *im);
    gx_morph_result r;
    gx_err err;
    /* empty (all zero) and constant: no source */
    for (int v = 0; v < 2; v++) {
        for (int p = 0; p < N * N; p++) im[p] = v ? 3.5f : 0.0f;
        CHECK(gx_morph_measure_auto(im, NULL, N, N, NULL, &r, NULL, &err) == GX_OK);
        CHECK(r.flag == GX_MORPH_FAILED && (r.warn & GX_MORPH_W_NO_SOURCE));
        CHECK(all_minus99(&r) && strlen(r.reason) > 0);
    }
    /* all NaN */
    for (int p = 0; p < N * N; p++) im[p] = NAN;
    CHECK(gx_morph_measure_auto(im, NULL, N, N, NULL, &r, NULL, &err) == GX_OK);
    CHECK(r.flag == GX_MORPH_FAILED && (r.warn & GX_MORPH_W_NO_FINITE));
    /* all NaN with a caller's segmap: same answer through gx_morph_measure */
    int32_t *seg = calloc(N * N, sizeof *seg);
    for (int p = 0; p < 100; p++) seg[p] = 1;
    CHECK(gx_morph_measure(im, seg, 1, NULL, N, N, NULL, &r, &err) == GX_OK);
    CHECK(r.flag == GX_MORPH_FAILED && (r.warn & GX_MORPH_W_NO_FINITE) && all_minus99(&r));
    /* negative segment (statmorph's test_catastrophic) */
    for (int p = 0; p < N * N; p++) im[p] = -1.0f;
    CHECK(gx_morph_measure(im, seg, 1, NULL, N, N, NULL, &r, &err) == GX_OK);
    CHECK(r.flag == GX_MORPH_FAILED && (r.warn & GX_MORPH_W_NONPOS_FLUX));
    /* a galaxy with NaN holes and an inf: measured, holes masked */
    blob(im, 31.3, 32.6, 6.0, 0.7, 0.002, 1);
    im[5 * N + 40] = NAN;
    im[33 * N + 30] = NAN;
    im[50 * N + 10] = INFINITY;
    CHECK(gx_morph_measure_auto(im, NULL, N, N, NULL, &r, NULL, &err) == GX_OK);
    CHECK_MSG(r.flag <= GX_MORPH_BAD && r.concentration > 1 && r.concentration < 6,
              "NaN holes: flag %d C %g", r.flag, r.concentration);
    free(seg);
    free(im);
}

GX_TEST(morph_bad_arguments_return_status) {
    float im[16] = { 0 };
    int32_t seg[16] = { 0 };
    gx_morph_result r;
    gx_err err;
    CHECK(gx_morph_measure(NULL, seg, 1, NULL, 4, 4, NULL, &r, &err) == GX_ERR_INVALID);
    CHECK(strstr(err.msg, "image") != NULL);
    CHECK(gx_morph_measure(im, seg, 1, NULL, 0, 4, NULL, &r, &err) == GX_ERR_INVALID);
    CHECK(gx_morph_measure(im, seg, 1, NULL, 4, 4, NULL, &r, &err) == GX_ERR_INVALID);
    CHECK_MSG(strstr(err.msg, "label 1") != NULL, "msg: %s", err.msg);
    gx_morph_opts o = gx_morph_opts_default();
    o.eta = 1.5;
    seg[5] = 1;
    CHECK(gx_morph_measure(im, seg, 1, NULL, 4, 4, &o, &r, &err) == GX_ERR_INVALID);
    CHECK(strstr(err.msg, "eta") != NULL);
    CHECK(gx_morph_measure_auto(im, NULL, 4, GX_MORPH_MAX_SIDE + 1, NULL, &r, NULL, &err) == GX_ERR_INVALID);
    /* tiny images: a result, never a crash */
    for (int n = 1; n <= 6; n++) {
        float t[36];
        int32_t s[36];
        for (int p = 0; p < n * n; p++) { t[p] = (float)(p % 3) + 0.5f; s[p] = 1; }
        gx_status st = gx_morph_measure(t, s, 1, NULL, n, n, NULL, &r, &err);
        CHECK_MSG(st == GX_OK && r.flag >= 0 && r.flag <= 4, "%dx%d: st %d flag %d", n, n, st, r.flag);
    }
}

GX_TEST(morph_exact_overlap_sums_to_area) {
    /* Circle and ellipse weights over a big grid add up to the analytic
     * area (pixels fully inside/outside and the boundary formulas agree). */
    int ny = 80, nx = 90;
    double *one = malloc((size_t)ny * nx * sizeof *one);
    for (int p = 0; p < ny * nx; p++) one[p] = 1.0;
    const double *im[1] = { one };
    double s, area;
    gxm_ap shapes[4] = { gxm_circle(40.3, 37.7, 13.21), gxm_ellipse(44.1, 38.9, 20.5, 7.25, 0.61),
                         gxm_ellipse(45.0, 40.0, 3.0, 0.4, -1.2), gxm_circle(44.5, 40.5, 0.3) };
    shapes[0].a_in = 4.5;  /* annulus */
    for (int k = 0; k < 4; k++) {
        CHECK(gxm_ap_sums(&shapes[k], im, 1, ny, nx, NULL, &s, &area));
        CHECK_NEAR(s, gxm_ap_area(&shapes[k]), 1e-9 * gxm_ap_area(&shapes[k]));
        CHECK_NEAR(area, s, 1e-12);
    }
    /* one pixel: the quarter disc of radius 1 centred on a pixel corner */
    CHECK_NEAR(gxm_circle_pixel_overlap(0, 0, 1, 1, 1.0), M_PI / 4, 1e-14);
    CHECK_NEAR(gxm_ellipse_pixel_overlap(0, 0, 1, 1, 1.0, 1.0, 0.3), M_PI / 4, 1e-12);
    /* an ellipse with a = b is the circle, pixel by pixel */
    for (double x0 = -3.2; x0 < 3; x0 += 0.37)
        CHECK_NEAR(gxm_ellipse_pixel_overlap(x0, 0.8, x0 + 1, 1.8, 2.1, 2.1, 0.9),
                   gxm_circle_pixel_overlap(x0, 0.8, x0 + 1, 1.8, 2.1), 1e-12);
    /* masked pixels leave the area and the sums; off-image apertures: 0 */
    uint8_t *mask = calloc((size_t)ny * nx, 1);
    mask[38 * nx + 40] = 1;
    gxm_ap c = gxm_circle(40.0, 38.0, 5.0);
    CHECK(gxm_ap_sums(&c, im, 1, ny, nx, mask, &s, &area));
    CHECK_NEAR(area, M_PI * 25 - 1.0, 1e-9);
    gxm_ap off = gxm_circle(-50, -50, 3);
    CHECK(gxm_ap_sums(&off, im, 1, ny, nx, NULL, &s, &area) == 0);
    free(mask);
    free(one);
}

GX_TEST(morph_numerics_match_scipy_rules) {
    /* pairwise sums: exact on integers, numpy's blocking on 1000 floats */
    double a[1000];
    for (int k = 0; k < 1000; k++) a[k] = k;
    CHECK_NEAR(gxm_pairwise_d(a, 1000), 499500.0, 0);
    /* box filter of a constant is the constant, of a 0/1 step in reflect
     * mode the running mean */
    double in[5 * 6], out[5 * 6], work[5 * 6 + 64];
    for (int p = 0; p < 30; p++) in[p] = 2.0;
    gxm_uniform_filter(in, out, 5, 6, 3, 0, work);
    for (int p = 0; p < 30; p++) CHECK_NEAR(out[p], 2.0, 1e-15);
    /* 8-connectivity: diagonal neighbours join, a gap splits */
    uint8_t b[9] = { 1, 0, 0, 0, 1, 0, 0, 0, 1 };
    int32_t lab[9], st[9];
    CHECK(gxm_label8(b, 3, 3, lab, st) == 1);
    uint8_t b2[9] = { 1, 0, 1, 0, 0, 0, 1, 0, 1 };
    CHECK(gxm_label8(b2, 3, 3, lab, st) == 4);
    CHECK(lab[0] == 1 && lab[2] == 2 && lab[6] == 3 && lab[8] == 4);
}

static double cube_minus_2(double x, void *arg) { (void)arg; return x * x * x - 2.0; }
static double bowl(const double *x, void *arg) {
    (void)arg;
    return (x[0] - 1.5) * (x[0] - 1.5) + 3 * (x[1] + 0.5) * (x[1] + 0.5);
}

GX_TEST(morph_brent_and_nelder_mead) {
    int ok;
    double r = gxm_brentq(cube_minus_2, NULL, 0.0, 3.0, 1e-12, &ok);
    CHECK(ok);
    CHECK_NEAR(r, cbrt(2.0), 1e-11);
    gxm_brentq(cube_minus_2, NULL, 2.0, 3.0, 1e-12, &ok);
    CHECK(!ok);  /* no sign change */
    double x[2] = { 4.0, 2.0 };
    int nfev = gxm_fmin2(bowl, NULL, x, 1e-8, 1e-12);
    CHECK(nfev > 10 && nfev <= 400);
    CHECK_NEAR(x[0], 1.5, 1e-6);
    CHECK_NEAR(x[1], -0.5, 1e-6);
}

GX_TEST(morph_smoothness_zero_when_unresolved) {
    /* A compact galaxy: rp_circ < 8 px, so k = int(0.25 rp) <= 1 and S = 0
     * exactly (statmorph's rule), with the informational warn bit. A large
     * one: k >= 2, S measured, no bit. */
    float *im = malloc(N * N * sizeof *im);
    gx_morph_result r;
    gx_err err;
    blob(im, 32.2, 31.7, 1.5, 0.9, 0.001, 3);
    CHECK(gx_morph_measure_auto(im, NULL, N, N, NULL, &r, NULL, &err) == GX_OK);
    CHECK_MSG(r.rpetro_circ < 8 && r.smooth_k <= 1, "rp %g k %d", r.rpetro_circ, r.smooth_k);
    CHECK(r.smoothness == 0.0 && (r.warn & GX_MORPH_W_S_UNRESOLVED));
    blob(im, 32.2, 31.7, 9.0, 0.9, 0.001, 3);
    CHECK(gx_morph_measure_auto(im, NULL, N, N, NULL, &r, NULL, &err) == GX_OK);
    CHECK_MSG(r.smooth_k >= 2 && !(r.warn & GX_MORPH_W_S_UNRESOLVED), "rp %g k %d", r.rpetro_circ, r.smooth_k);
    CHECK(r.smoothness != 0.0);
    free(im);
}

GX_TEST(morph_batch_matches_single) {
    int n = 6;
    float *im = malloc((size_t)n * N * N * sizeof *im);
    for (int k = 0; k < n; k++) blob(im + (size_t)k * N * N, 30 + k, 33 - k * 0.5, 3 + k, 0.5 + 0.08 * k, 0.002, 7u + k);
    for (int p = 0; p < N * N; p++) im[(size_t)2 * N * N + p] = 0.0f;  /* an empty one in the batch */
    gx_morph_result *rb = calloc((size_t)n, sizeof *rb);
    gx_err err;
    CHECK(gx_morph_measure_batch(im, NULL, n, N, N, NULL, 2, rb, &err) == GX_OK);
    for (int k = 0; k < n; k++) {
        gx_morph_result r;
        CHECK(gx_morph_measure_auto(im + (size_t)k * N * N, NULL, N, N, NULL, &r, NULL, &err) == GX_OK);
        CHECK(r.flag == rb[k].flag);
        for (int q = 0; q < gx_morph_nfields; q++)
            CHECK_MSG(gx_morph_get(&r, q) == gx_morph_get(&rb[k], q), "cutout %d %s", k, gx_morph_fields[q].name);
    }
    CHECK(rb[2].flag == GX_MORPH_FAILED);
    CHECK(strcmp(gx_morph_warn_str(GX_MORPH_W_S_UNRESOLVED), "smoothness_unresolved") == 0);
    CHECK(strcmp(gx_morph_warn_str(3u), "?") == 0);
    free(rb);
    free(im);
}

GX_TEST(morph_ssim_and_w1_match_skimage_scipy) {
    gx_st_file f;
    if (!gx_fixture_open(T, &f, "morph/morph_dist.safetensors")) return;
    const gx_st_tensor *ta = gx_st_find(&f, "ssim.a"), *tb = gx_st_find(&f, "ssim.b");
    const gx_st_tensor *tv = gx_st_find(&f, "ssim.value"), *tu = gx_st_find(&f, "w1.u");
    const gx_st_tensor *tw = gx_st_find(&f, "w1.v"), *tval = gx_st_find(&f, "w1.value");
    const gx_st_tensor *tbin = gx_st_find(&f, "w1.binned");
    CHECK(ta && tb && tv && tu && tw && tval && tbin);
    if (!(ta && tb && tv && tu && tw && tval && tbin)) { gx_st_close(&f); return; }
    int ny = (int)ta->shape[0], nx = (int)ta->shape[1];
    const float *a = ta->data, *b = tb->data;
    const double *want = tv->data;
    double s;
    gx_err err;
    CHECK(gx_morph_ssim(a, b, ny, nx, 1.0, &s, &err) == GX_OK);
    CHECK_NEAR(s, want[0], 1e-10);
    CHECK(gx_morph_ssim(a, a, ny, nx, 1.0, &s, &err) == GX_OK);
    CHECK_NEAR(s, want[1], 1e-12);
    CHECK(gx_morph_ssim(a, b, ny, nx, 2.5, &s, &err) == GX_OK);
    CHECK_NEAR(s, want[2], 1e-10);
    CHECK(gx_morph_ssim(a, b, 8, 8, 1.0, &s, &err) == GX_ERR_INVALID);
    CHECK(gx_morph_ssim(a, b, ny, nx, 0.0, &s, &err) == GX_ERR_INVALID);

    const double *u = tu->data, *v = tw->data;
    int64_t nu = tu->shape[0], nv = tw->shape[0];
    double w1;
    CHECK(gx_morph_w1_exact(u, nu, v, nv, &w1, &err) == GX_OK);
    CHECK_NEAR(w1, ((const double *)tval->data)[0], 1e-12);
    CHECK(gx_morph_w1_exact(u, nu, u, nu, &w1, &err) == GX_OK);
    CHECK_NEAR(w1, 0.0, 0);
    double shifted[300];
    for (int k = 0; k < nu && k < 300; k++) shifted[k] = u[k] + 0.75;
    CHECK(gx_morph_w1_exact(u, nu, shifted, nu, &w1, &err) == GX_OK);
    CHECK_NEAR(w1, 0.75, 1e-12);  /* a shift moves every quantile by 0.75 */
    double p[100], q[100];
    CHECK(gx_morph_w1_binned(u, nu, v, nv, 100, 0, 0, &w1, p, q, &err) == GX_OK);
    CHECK_NEAR(w1, ((const double *)tbin->data)[0], 1e-12);
    double sp = 0, sq = 0;
    for (int k = 0; k < 100; k++) { sp += p[k]; sq += q[k]; }
    CHECK_NEAR(sp, 1.0, 1e-12);
    CHECK_NEAR(sq, 1.0, 1e-12);
    double bad[2] = { 1.0, NAN };
    CHECK(gx_morph_w1_exact(u, nu, bad, 2, &w1, &err) == GX_ERR_INVALID);
    CHECK(strstr(err.msg, "v[1]") != NULL);
    CHECK(gx_morph_w1_binned(u, nu, v, nv, 0, 0, 0, &w1, NULL, NULL, &err) == GX_ERR_INVALID);
    gx_st_close(&f);
}
