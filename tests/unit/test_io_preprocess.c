/*
 * test_io_preprocess.c — PNG encoding and the preprocessing pipeline.
 *
 * Resize is checked against PyTorch's interpolate(bilinear, antialias=True)
 * (fixtures resize_*.f32, computed in float64; tolerance 2e-6 absolute on
 * values in [0,1] for our double-accumulated, float-stored passes). The
 * geometric transforms are checked by exact index relations, the
 * augmentation by determinism for a given gx_rng.
 */
#include "test_io_util.h"

static void tio_fill(gx_image *im, unsigned seed) {
    size_t n = (size_t)im->c * im->h * im->w;
    for (size_t i = 0; i < n; i++) im->data[i] = (float)(((i * 2654435761u + seed) >> 7) % 1000) / 999.0f;
}

GX_TEST(io_png_encode_roundtrip) {
    gx_image im;
    gx_err err;
    CHECK(gx_image_alloc(&im, 3, 5, 9, &err) == GX_OK);
    tio_fill(&im, 1);
    for (size_t i = 0; i < 135; i++) im.data[i] = roundf(im.data[i] * 255) / 255;
    im.data[0] = -0.5f; im.data[1] = 1.5f; im.data[2] = NAN;          /* clipped */
    uint8_t *png = NULL;
    size_t n = 0;
    CHECK(gx_png_encode(im.data, 3, 5, 9, &png, &n, &err) == GX_OK);
    gx_image back;
    CHECK(png && gx_png_decode(png, n, NULL, &back, &err) == GX_OK);
    if (back.data) {
        CHECK(back.replicated == 0 && back.h == 5 && back.w == 9);
        CHECK(back.data[0] == 0.0f && back.data[1] == 1.0f && back.data[2] == 0.0f);
        gx_test_allclose(T, "rgb roundtrip", back.data + 3, im.data + 3, 132, 1e-6, 0);
    }
    gx_image_free(&back);
    free(png);
    /* gray: one band in, replicated out */
    CHECK(gx_png_encode(im.data + 45, 1, 5, 9, &png, &n, &err) == GX_OK);
    CHECK(png && gx_png_decode(png, n, NULL, &back, &err) == GX_OK);
    if (back.data) {
        CHECK(back.replicated == 1);
        gx_test_allclose(T, "gray roundtrip", back.data, im.data + 45, 45, 1e-6, 0);
        gx_test_allclose(T, "gray band 2", back.data + 90, im.data + 45, 45, 1e-6, 0);
    }
    gx_image_free(&back);
    free(png);
    CHECK(gx_png_encode(im.data, 2, 5, 9, &png, &n, &err) == GX_ERR_INVALID && png == NULL);
    CHECK(gx_png_encode(im.data, 3, 0, 9, &png, &n, &err) == GX_ERR_INVALID);
    gx_image_free(&im);
}

GX_TEST(io_png_encode_diverging) {
    uint8_t c[3];
    gx_png_diverging_color(0.0, c);
    CHECK(c[0] == 255 && c[1] == 255 && c[2] == 255);      /* zero is white */
    gx_png_diverging_color(-1.0, c);
    CHECK(c[0] == 33 && c[1] == 102 && c[2] == 172);       /* blue end */
    gx_png_diverging_color(5.0, c);
    CHECK(c[0] == 178 && c[1] == 24 && c[2] == 43);        /* clipped red end */
    gx_png_diverging_color(0.5, c);
    /* halfway: 255 + (178-255)/2 = 216.5 and 139.5 round half to even */
    CHECK(c[0] == 216 && c[1] == 140 && c[2] == 149);
    float d[6] = { -2, -1, 0, 1, 2, NAN };
    uint8_t *png = NULL;
    size_t n = 0;
    gx_err err;
    CHECK(gx_png_encode_diverging(d, 2, 3, 0, &png, &n, &err) == GX_OK);   /* range = 2 */
    gx_image back;
    CHECK(png && gx_png_decode(png, n, NULL, &back, &err) == GX_OK);
    if (back.data) {
        CHECK(back.replicated == 0);
        CHECK_NEAR(back.data[0], 33 / 255.0, 1e-6);          /* -2/2 = -1: blue */
        CHECK_NEAR(back.data[2], 1.0, 1e-6);                 /* 0: white */
        CHECK_NEAR(back.data[4], 178 / 255.0, 1e-6);         /* +1: red */
        CHECK_NEAR(back.data[5], 128 / 255.0, 1e-6);         /* NaN: gray */
        CHECK_NEAR(back.data[6 + 0], 102 / 255.0, 1e-6);     /* green of -1 (blue end) */
        CHECK_NEAR(back.data[6 + 3], 140 / 255.0, 1e-6);     /* green of +0.5 */
    }
    gx_image_free(&back);
    free(png);
}

GX_TEST(io_pre_resize_matches_torch_antialias) {
    size_t n;
    uint8_t *raw = tio_read("resize_in.f32", &n);
    CHECK(raw && n == 3 * 17 * 23 * 4);
    if (!raw) return;
    gx_image in;
    gx_err err;
    gx_image_alloc(&in, 3, 17, 23, &err);
    memcpy(in.data, raw, n);
    free(raw);
    const int sz[5][2] = { { 8, 8 }, { 5, 11 }, { 17, 23 }, { 40, 31 }, { 9, 47 } };
    for (int k = 0; k < 5; k++) {
        char name[64];
        snprintf(name, sizeof name, "resize_%dx%d.f32", sz[k][0], sz[k][1]);
        float *want = (float *)tio_read(name, &n);
        CHECK(want && n == (size_t)3 * sz[k][0] * sz[k][1] * 4);
        gx_image out;
        CHECK(gx_pre_resize(&in, sz[k][0], sz[k][1], &out, &err) == GX_OK);
        if (want && out.data) {
            gx_test_allclose_f(T, name, out.data, want, (int64_t)3 * sz[k][0] * sz[k][1], 2e-6, 0);
            for (int i = 0; i < sz[k][0] * sz[k][1]; i++) CHECK(out.mask[i] == 1);
        }
        gx_image_free(&out);
        free(want);
    }
    gx_image_free(&in);
}

GX_TEST(io_pre_resize_mask_and_constant) {
    gx_image in, out;
    gx_err err;
    gx_image_alloc(&in, 3, 8, 8, &err);
    for (int i = 0; i < 3 * 64; i++) in.data[i] = 0.25f;
    for (int y = 0; y < 8; y++) for (int x = 0; x < 4; x++) in.mask[y * 8 + x] = 0;   /* left half */
    CHECK(gx_pre_resize(&in, 4, 4, &out, &err) == GX_OK);
    for (int i = 0; i < 48; i++) CHECK_NEAR(out.data[i], 0.25, 1e-7);   /* constant stays constant */
    for (int y = 0; y < 4; y++) CHECK(out.mask[y * 4 + 0] == 0 && out.mask[y * 4 + 3] == 1);
    gx_image_free(&out);
    CHECK(gx_pre_resize(&in, 0, 4, &out, &err) == GX_ERR_INVALID);
    gx_image_free(&in);
}

GX_TEST(io_pre_crop_and_prepare) {
    gx_image in, out;
    gx_err err;
    gx_image_alloc(&in, 3, 6, 9, &err);
    for (int i = 0; i < 3 * 54; i++) in.data[i] = (float)i;
    CHECK(gx_pre_center_crop(&in, 4, 5, &out, &err) == GX_OK);
    /* top-left at ((6-4)/2, (9-5)/2) = (1, 2) */
    CHECK(out.data[0] == 1 * 9 + 2 && out.data[4] == 1 * 9 + 6);
    CHECK(out.data[20 + 0] == 54 + 1 * 9 + 2 && out.data[2 * 20 + 19] == 108 + 4 * 9 + 6);
    gx_image_free(&out);
    CHECK(gx_pre_center_crop(&in, 7, 5, &out, &err) == GX_ERR_INVALID);
    /* prepare: square crop of the short side (6x6 at x0=1) then identity resize */
    gx_pre_opts o = { 1.0, 6 };
    CHECK(gx_pre_prepare(&in, &o, &out, &err) == GX_OK);
    CHECK(out.h == 6 && out.w == 6 && out.data[0] == 1 && out.data[7] == 11);
    gx_image_free(&out);
    o = (gx_pre_opts){ 0.5, 3 };      /* 3x3 centre crop at (1,3) */
    CHECK(gx_pre_prepare(&in, &o, &out, &err) == GX_OK);
    CHECK(out.h == 3 && out.data[0] == 1 * 9 + 3 && out.data[8] == 3 * 9 + 5);
    gx_image_free(&out);
    o.crop_frac = 1.5;
    CHECK(gx_pre_prepare(&in, &o, &out, &err) == GX_ERR_INVALID);
    gx_image_free(&in);
}

GX_TEST(io_pre_rotate_flip_exact) {
    gx_image in, r, f;
    gx_err err;
    gx_image_alloc(&in, 3, 5, 5, &err);
    tio_fill(&in, 3);
    /* 90 degrees counter-clockwise = np.rot90: out[y][x] = in[x][w-1-y] */
    CHECK(gx_pre_rotate(&in, 90.0, &r, &err) == GX_OK);
    int bad = 0;
    for (int k = 0; k < 3; k++)
        for (int y = 0; y < 5; y++)
            for (int x = 0; x < 5; x++)
                bad += fabsf(r.data[k * 25 + y * 5 + x] - in.data[k * 25 + x * 5 + (4 - y)]) > 1e-6f;
    CHECK(bad == 0);
    for (int i = 0; i < 25; i++) CHECK(r.mask[i] == 1);
    gx_image_free(&r);
    /* 180 degrees = flip_h + flip_v */
    CHECK(gx_pre_rotate(&in, 180.0, &r, &err) == GX_OK);
    gx_pre_center_crop(&in, 5, 5, &f, &err);
    gx_pre_flip_h(&f);
    gx_pre_flip_v(&f);
    gx_test_allclose(T, "rot180", r.data, f.data, 75, 1e-6, 0);
    gx_image_free(&r);
    /* 45 degrees: corners come from outside -> 0 and invalid; centre kept */
    CHECK(gx_pre_rotate(&in, 45.0, &r, &err) == GX_OK);
    CHECK(r.mask[0] == 0 && r.data[0] == 0.0f && r.mask[12] == 1);
    CHECK_NEAR(r.data[12], in.data[12], 1e-6);
    gx_image_free(&r);
    /* flips are involutions and exact */
    gx_pre_flip_h(&f); gx_pre_flip_h(&f);
    gx_pre_flip_v(&f); gx_pre_flip_v(&f);
    gx_image g;
    gx_pre_center_crop(&in, 5, 5, &g, &err);
    gx_pre_flip_h(&g); gx_pre_flip_v(&g);
    gx_pre_flip_h(&g); gx_pre_flip_v(&g);
    CHECK(memcmp(g.data, in.data, 75 * sizeof(float)) == 0);
    gx_pre_flip_h(&g);
    CHECK(g.data[0] == in.data[4] && g.data[25 + 6] == in.data[25 + 8]);
    gx_image_free(&f); gx_image_free(&g); gx_image_free(&in);
}

GX_TEST(io_pre_photometric) {
    gx_image im;
    gx_err err;
    gx_image_alloc(&im, 3, 2, 2, &err);
    for (int i = 0; i < 12; i++) im.data[i] = 0.1f * i;      /* mean 0.55 */
    gx_pre_brightness(&im, 1.1);
    CHECK_NEAR(im.data[5], 0.55, 1e-6);
    gx_pre_contrast(&im, 2.0);                              /* mean 0.605 -> 0.605 + 2(x - .605) */
    CHECK_NEAR(im.data[0], 0.605 - 2 * 0.605, 1e-6);
    CHECK_NEAR(im.data[11], 0.605 + 2 * (1.21 - 0.605), 1e-6);
    gx_pre_clamp01(&im);
    CHECK(im.data[0] == 0.0f && im.data[11] == 1.0f);
    /* noise: deterministic, N(0, sigma) from the rng stream */
    gx_rng a, b;
    gx_rng_init(&a, 42); gx_rng_init(&b, 42);
    float z[12];
    gx_rng_fill_normal(&b, z, 12, 0.0, 0.5);
    float before[12];
    memcpy(before, im.data, sizeof before);
    gx_pre_noise(&im, 0.5, &a);
    for (int i = 0; i < 12; i++) CHECK_NEAR(im.data[i], before[i] + z[i], 1e-6);
    gx_image_free(&im);
}

GX_TEST(io_pre_augment_deterministic) {
    gx_image a, b;
    gx_err err;
    gx_image_alloc(&a, 3, 9, 11, &err);
    tio_fill(&a, 5);
    gx_pre_center_crop(&a, 9, 11, &b, &err);
    gx_pre_aug aug = GX_PRE_AUG_DEFAULT;
    aug.p_noise = 1.0;
    gx_rng r1, r2;
    gx_rng_init(&r1, 7); gx_rng_init(&r2, 7);
    CHECK(gx_pre_augment(&a, &aug, &r1, &err) == GX_OK);
    CHECK(gx_pre_augment(&b, &aug, &r2, &err) == GX_OK);
    CHECK(memcmp(a.data, b.data, sizeof(float) * 3 * 99) == 0);
    CHECK(memcmp(a.mask, b.mask, 99) == 0);
    CHECK(r1.counter == r2.counter && r1.counter == 9);     /* fixed advance */
    for (int i = 0; i < 3 * 99; i++) CHECK(a.data[i] >= 0 && a.data[i] <= 1);
    /* a different seed gives a different result; NONE is the identity */
    gx_image c, d;
    gx_pre_center_crop(&b, 9, 11, &c, &err);
    gx_rng r3; gx_rng_init(&r3, 8);
    gx_pre_augment(&c, &aug, &r3, &err);
    CHECK(memcmp(a.data, c.data, sizeof(float) * 3 * 99) != 0);
    gx_pre_center_crop(&b, 9, 11, &d, &err);
    gx_pre_aug none = GX_PRE_AUG_NONE;
    gx_pre_augment(&d, &none, &r3, &err);
    CHECK(memcmp(b.data, d.data, sizeof(float) * 3 * 99) == 0);
    CHECK(r3.counter == 18);
    gx_image_free(&a); gx_image_free(&b); gx_image_free(&c); gx_image_free(&d);
}
