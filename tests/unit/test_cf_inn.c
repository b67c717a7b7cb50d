/*
 * test_cf_inn.c — the CF-INN's networks and losses (models/cf_inn.c,
 * models/cf_inn_loss.c) against the independent PyTorch implementation in
 * tests/models/cfinn_ref.py, plus the flow's invertibility, its log|det|
 * against the Jacobian, per-sample determinism and SSIM against morph/.
 *
 * Fixtures (tiny config, batch 4, 32x32): tests/fixtures/cfinn_tiny.safetensors
 * holds the weights under the checkpoint names (F16, loaded strictly by name:
 * permutations and mixture means included); cfinn_tiny_io.safetensors the
 * inputs, labels, training noise and MMD samples, eval and training outputs,
 * every loss term, the gradient of the total loss w.r.t. the input and every
 * parameter (in full up to 512 elements; else 64 evenly spaced elements, the
 * L2 norm and the sum), an inverse-flow case and the default config's
 * parameter count.
 *
 * Tolerances (reference in float64 from the same F16-rounded weights; the
 * engine runs in f32): outputs and loss terms atol 1e-4 + rtol 1e-4;
 * gradients the shared parity rule of test_wm_util.h (relative L2 error per
 * tensor <= 3e-3); the worst relative L2 error is printed (measured ~1e-5:
 * no batch norm here, so f32 keeps far more digits than the rule needs).
 */
#include "gx_test.h"
#include "test_wm_util.h"
#include "gx_cf_inn.h"
#include "gx_morph.h"
#include <stdlib.h>
#include <string.h>

/* Tiny model with the fixture's weights; 0 (and a test failure) on error. */
static int load_tiny(gx_test_state *T, gx_cf_model *m) {
    gx_st_file wf;
    gx_cf_init(m, gx_cf_config_tiny(), 99);
    if (!gx_fixture_open(T, &wf, "cfinn_tiny.safetensors")) return 0;
    gx_err err;
    gx_status st = gx_params_load(&m->params, &wf, 1, &err);
    gx_st_close(&wf);
    CHECK_MSG(st == GX_OK, "gx_params_load: %s", err.msg);
    if (st == GX_OK) {
        st = gx_cf_sync_perms(m, &err);
        CHECK_MSG(st == GX_OK, "gx_cf_sync_perms: %s", err.msg);
    }
    return st == GX_OK;
}

/* The tiny fixture model and the fixture file `name`; on failure the model
 * is freed and 0 returned. */
static int open_tiny_with(gx_test_state *T, gx_cf_model *m, gx_st_file *f, const char *name) {
    if (!load_tiny(T, m)) { gx_cf_free(m); return 0; }
    if (!gx_fixture_open(T, f, name)) { gx_cf_free(m); return 0; }
    return 1;
}

/* ------------------------------------------------------------ parameters */

static double min_pair_dist(const gx_tensor *mu, double *max_out) {
    int64_t K = mu->shape[0], d = mu->shape[1];
    double dmin = INFINITY, dmax = 0;
    for (int64_t a = 0; a < K; a++)
        for (int64_t b = a + 1; b < K; b++) {
            double s = 0;
            for (int64_t j = 0; j < d; j++) s += pow((double)mu->data[a * d + j] - mu->data[b * d + j], 2);
            dmin = fmin(dmin, sqrt(s));
            dmax = fmax(dmax, sqrt(s));
        }
    if (max_out) *max_out = dmax;
    return dmin;
}

GX_TEST(cf_param_counts_names_and_init) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    gx_st_file f;
    if (!gx_fixture_open(T, &f, "cfinn_tiny_io.safetensors")) { gx_ctx_free(&ctx); return; }
    gx_tensor *ref_def = gx_fixture_tensor(T, &ctx, &f, "count.default");
    gx_tensor *ref_tiny = gx_fixture_tensor(T, &ctx, &f, "count.tiny");
    gx_cf_model m;
    gx_cf_init(&m, gx_cf_config_default(), 1);
    int64_t n = gx_params_count(&m.params, 0);
    printf("  cf-inn default: %lld parameters (PyTorch reference %.0f)\n", (long long)n,
           ref_def ? ref_def->data[0] : -1.0);
    CHECK(ref_def && n == (int64_t)ref_def->data[0]);
    /* d1 16 >= K 10: the IB-INN means, every pair exactly 5 apart. */
    double dmax, dmin = min_pair_dist(m.mu, &dmax);
    CHECK_NEAR(dmin, 5.0, 1e-5);
    CHECK_NEAR(dmax, 5.0, 1e-5);
    CHECK_NEAR(m.mu->data[3 * 16 + 3], 5.0 / sqrt(2.0), 1e-6);
    gx_param *p = gx_params_find(&m.params, "mixture.mu");
    CHECK(p && p->group == 1 && !(p->flags & (GX_PARAM_DECAY | GX_PARAM_BUFFER)));
    p = gx_params_find(&m.params, "flow.block7.n2.4.weight");
    CHECK(p && p->t.shape[0] == 16 && p->t.shape[1] == 256 && p->group == 0);
    /* x0.1 init: |w| <= 0.1/sqrt(256). */
    double wmax = 0;
    for (int64_t i = 0; p && i < p->t.numel; i++) wmax = fmax(wmax, fabs(p->t.data[i]));
    CHECK(wmax > 0 && wmax <= 0.1 / 16 + 1e-9);
    p = gx_params_find(&m.params, "flow.block0.perm");
    CHECK(p && (p->flags & GX_PARAM_BUFFER));
    CHECK(gx_params_find(&m.params, "mhat") && gx_params_find(&m.params, "mhat_valid"));
    CHECK(gx_params_find(&m.params, "decoder.out.weight")->t.shape[1] == 32);
    CHECK(gx_params_find(&m.params, "encoder.fc1.weight")->t.shape[1] == 4 * 4 * 256);
    gx_cf_free(&m);

    gx_cf_init(&m, gx_cf_config_tiny(), 1);
    n = gx_params_count(&m.params, 0);
    printf("  cf-inn tiny: %lld parameters\n", (long long)n);
    CHECK(ref_tiny && n == (int64_t)ref_tiny->data[0]);
    /* d1 8 < K 10: seeded Gaussian means, the closest pair 5 apart. */
    dmin = min_pair_dist(m.mu, &dmax);
    CHECK_NEAR(dmin, 5.0, 1e-5);
    CHECK(dmax > 5.0 && dmax < 50.0);
    int differs = 0;
    for (int b = 0; b < 4; b++) {
        int seen[8] = { 0 };
        for (int i = 0; i < 8; i++) {
            CHECK(m.block[b].perm[i] >= 0 && m.block[b].perm[i] < 8);
            seen[m.block[b].perm[i]]++;
            CHECK(m.block[b].inv_perm[m.block[b].perm[i]] == i);
            differs |= m.block[b].perm[i] != i;
        }
        for (int i = 0; i < 8; i++) CHECK(seen[i] == 1);
    }
    CHECK(differs);
    gx_cf_free(&m);
    gx_st_close(&f);
    gx_ctx_free(&ctx);
}

GX_TEST(cf_config_json_round_trip_and_refusals) {
    gx_cf_config c = gx_cf_config_default(), back;
    c.classes = 7;
    c.clamp = 1.5;
    char *s = gx_cf_config_json(&c);
    CHECK(s != NULL);
    gx_err err;
    CHECK(s && gx_cf_config_parse(s, &back, &err) == GX_OK);
    CHECK(s && memcmp(&c, &back, sizeof c) == 0);
    free(s);
    static const struct { const char *json, *key; } bad[] = {
        { "[1]", "JSON object" },
        { "{\"size\":64}", "'d'" },
        { "{\"size\":48,\"d\":64,\"d1\":16,\"enc_ch\":[1,2,3,4],\"hidden\":5,\"dec_ch\":[1,2,3,4],"
          "\"blocks\":2,\"subnet\":3,\"clamp\":2,\"classes\":10}", "'size'" },
        { "{\"size\":64,\"d\":64,\"d1\":64,\"enc_ch\":[1,2,3,4],\"hidden\":5,\"dec_ch\":[1,2,3,4],"
          "\"blocks\":2,\"subnet\":3,\"clamp\":2,\"classes\":10}", "'d1'" },
        { "{\"size\":64,\"d\":64,\"d1\":16,\"enc_ch\":[1,2,3],\"hidden\":5,\"dec_ch\":[1,2,3,4],"
          "\"blocks\":2,\"subnet\":3,\"clamp\":2,\"classes\":10}", "'enc_ch'" },
        { "{\"size\":64,\"d\":64,\"d1\":16,\"enc_ch\":[1,2,3,4],\"hidden\":5,\"dec_ch\":[1,2,3,4],"
          "\"blocks\":99,\"subnet\":3,\"clamp\":2,\"classes\":10}", "'blocks'" },
        { "{\"size\":64,\"d\":64,\"d1\":16,\"enc_ch\":[1,2,3,4],\"hidden\":5,\"dec_ch\":[1,2,3,4],"
          "\"blocks\":2,\"subnet\":3,\"classes\":10}", "'clamp'" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err.msg[0] = 0;
        gx_status st = gx_cf_config_parse(bad[i].json, &back, &err);
        CHECK_MSG(st == GX_ERR_FORMAT && strstr(err.msg, bad[i].key), "case %zu: %s", i, err.msg);
    }
}

GX_TEST(cf_sync_perms_refuses_a_non_permutation) {
    gx_cf_model m;
    gx_cf_init(&m, gx_cf_config_tiny(), 3);
    gx_err err;
    gx_real *p = m.block[2].perm_buf->data;
    p[1] = p[0];                                   /* a duplicate */
    CHECK(gx_cf_sync_perms(&m, &err) == GX_ERR_FORMAT && strstr(err.msg, "flow.block2.perm"));
    p[1] = 2.5;                                    /* not an integer */
    CHECK(gx_cf_sync_perms(&m, &err) == GX_ERR_FORMAT && strstr(err.msg, "flow.block2.perm"));
    gx_cf_free(&m);
}

/* -------------------------------------------------------- PyTorch parity */

static void check_out(gx_test_state *T, const gx_st_file *f, const char *pre, const gx_cf_out *o) {
    gx_fixture_checkf(T, f, o->z->data, o->z->numel, OUT_ATOL, OUT_RTOL, "%s.z", pre);
    gx_fixture_checkf(T, f, o->h->data, o->h->numel, OUT_ATOL, OUT_RTOL, "%s.h", pre);
    gx_fixture_checkf(T, f, o->logdet->data, o->logdet->numel, OUT_ATOL, OUT_RTOL, "%s.logdet", pre);
    gx_fixture_checkf(T, f, o->g->data, o->g->numel, OUT_ATOL, OUT_RTOL, "%s.g", pre);
    gx_fixture_checkf(T, f, o->xrec->data, o->xrec->numel, OUT_ATOL, OUT_RTOL, "%s.xrec", pre);
}

/* Worst relative L2 error of a parameter gradient (full or sampled). */
static double grad_rel_err(gx_test_state *T, gx_ctx *ctx, const gx_st_file *f, const gx_param *p) {
    char key[256];
    snprintf(key, sizeof key, "g.%s", p->name);
    double d = 0, r = 0;
    if (gx_st_find(f, key)) {
        gx_tensor *want = gx_fixture_tensor(T, ctx, f, key);
        for (int64_t i = 0; want && i < p->t.numel; i++) {
            d += pow((double)p->t.grad[i] - want->data[i], 2);
            r += pow((double)want->data[i], 2);
        }
    } else {
        gx_tensor *idx = gx_fixture_tensorf(T, ctx, f, "gi.%s", p->name);
        gx_tensor *want = gx_fixture_tensorf(T, ctx, f, "gs.%s", p->name);
        for (int64_t i = 0; idx && want && i < idx->numel; i++) {
            d += pow((double)p->t.grad[(int64_t)idx->data[i]] - want->data[i], 2);
            r += pow((double)want->data[i], 2);
        }
    }
    return sqrt(d) / (sqrt(r) + 1e-30);
}

GX_TEST(cf_parity_tiny_outputs_losses_gradients) {
    gx_cf_model m;
    gx_st_file f;
    if (!open_tiny_with(T, &m, &f, "cfinn_tiny_io.safetensors")) return;
    gx_ctx ctx;
    gx_ctx_init(&ctx, 64 << 20);
    gx_tensor *x = gx_fixture_tensor(T, &ctx, &f, "in.x");
    gx_tensor *lab = gx_fixture_tensor(T, &ctx, &f, "in.labels");
    gx_tensor *noise = gx_fixture_tensor(T, &ctx, &f, "in.noise");
    gx_tensor *mmd_n = gx_fixture_tensor(T, &ctx, &f, "in.mmd_n");
    if (!x || !lab || !noise || !mmd_n) goto done;
    CHECK_MSG(x->shape[0] == 4 && lab->numel == 4, "the fixture's batch must be 4");
    if (x->shape[0] != 4 || lab->numel != 4) goto done;
    int64_t labels[4];
    for (int64_t i = 0; i < lab->numel; i++) labels[i] = (int64_t)lab->data[i];

    /* Eval: no noise. */
    gx_cf_out o = gx_cf_forward(&ctx, &m, x, 0.0, NULL, 1);
    check_out(T, &f, "eval", &o);

    /* Training: the fixture's noise on z1, the losses with its MMD samples. */
    ctx.grad_enabled = 1;
    x->requires_grad = 1;
    gx_params_zero_grad(&m.params);
    o = gx_cf_forward_noise(&ctx, &m, x, noise, 1);
    check_out(T, &f, "train", &o);
    CHECK(o.z1->shape[1] == 8 && o.z2->shape[1] == 8);
    gx_cf_loss_cfg lc = gx_cf_loss_cfg_default();
    gx_cf_loss_terms L = gx_cf_loss_given(&ctx, &m, &o, x, labels, NULL, mmd_n, &lc);
    const struct { const char *key; gx_tensor *t; } terms[] = {
        { "loss.l_x", L.l_x }, { "loss.l_y", L.l_y }, { "loss.l_ib", L.l_ib },
        { "loss.l_mmd", L.l_mmd }, { "loss.l_rec", L.l_rec }, { "loss.ssim", L.ssim },
        { "loss.total", L.total },
    };
    for (size_t i = 0; i < sizeof terms / sizeof terms[0]; i++) {
        CHECK_MSG(terms[i].t && terms[i].t->numel == 1, "%s missing", terms[i].key);
        if (terms[i].t) gx_fixture_check(T, &f, terms[i].key, terms[i].t->data, 1, OUT_ATOL, OUT_RTOL);
    }
    printf("  total %.6f (L_X %.5f, L_Y %.5f, MMD %.5f, L_R %.5f, SSIM %.5f)\n", L.total->data[0],
           L.l_x->data[0], L.l_y->data[0], L.l_mmd->data[0], L.l_rec->data[0], L.ssim->data[0]);
    double per[4];
    gx_real per_r[4];
    gx_cf_ssim(&ctx, o.xrec, x, 11, 1.5, per);
    for (int i = 0; i < 4; i++) per_r[i] = (gx_real)per[i];
    gx_fixture_check(T, &f, "loss.ssim_per", per_r, 4, OUT_ATOL, OUT_RTOL);
    gx_backward(&ctx, L.total, NULL);
    gx_tensor *gref = gx_fixture_tensor(T, &ctx, &f, "grad.in.x");
    CHECK(x->grad != NULL);
    if (x->grad && gref) check_full(T, "input x", x->grad, gref->data, x->numel);
    int checked = 0;
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < m.params.n; i++) {
        gx_param *p = m.params.items[i];
        if (p->flags & GX_PARAM_BUFFER) continue;
        check_param_grad(T, &f, &ctx, p);
        double e = grad_rel_err(T, &ctx, &f, p);
        if (e > worst) { worst = e; worst_name = p->name; }
        checked++;
    }
    printf("  checked the gradients of %d parameters and the input; worst relative L2 error "
           "%.2e (%s)\n", checked, worst, worst_name);
    CHECK(checked == 75);
done:
    gx_ctx_free(&ctx);
    gx_st_close(&f);
    gx_cf_free(&m);
}

/* -------------------------------------------------------------- the flow */

GX_TEST(cf_flow_inverse_is_exact) {
    gx_cf_model m;
    gx_st_file f;
    if (!open_tiny_with(T, &m, &f, "cfinn_tiny_io.safetensors")) return;
    gx_ctx ctx;
    gx_ctx_init(&ctx, 16 << 20);
    /* Parity of the inverse with PyTorch's. */
    gx_tensor *h = gx_fixture_tensor(T, &ctx, &f, "inv.h");
    if (h) {
        gx_tensor *z = gx_cf_flow_inverse(&ctx, &m, h);
        gx_fixture_check(T, &f, "inv.z1", z->data, z->numel, OUT_ATOL, OUT_RTOL);
    }
    /* F^-1(F(z)) = z and F(F^-1(h)) = h for 64 points z ~ N(0, I) (where
     * the MMD term keeps the latents). */
    gx_rng r;
    gx_rng_init(&r, 5);
    gx_tensor *z = gx_tensor_new(&ctx, 2, GX_SHAPE(64, 8));
    gx_rng_fill_normal(&r, z->data, z->numel, 0.0, 1.0);
    gx_tensor *ld = NULL;
    gx_tensor *fz = gx_cf_flow(&ctx, &m, z, &ld);
    gx_tensor *back = gx_cf_flow_inverse(&ctx, &m, fz);
    double err = 0, moved = 0;
    for (int64_t i = 0; i < z->numel; i++) {
        err = fmax(err, fabs(back->data[i] - z->data[i]));
        moved = fmax(moved, fabs(fz->data[i] - z->data[i]));
    }
    printf("  max |F^-1(F(z)) - z| = %.2e (max |F(z) - z| = %.2f)\n", err, moved);
    CHECK(err <= 1e-5);
    CHECK(moved > 0.5);                            /* the flow is far from the identity */
    gx_tensor *fb = gx_cf_flow(&ctx, &m, gx_cf_flow_inverse(&ctx, &m, z), NULL);
    gx_test_allclose(T, "F(F^-1(h))", fb->data, z->data, z->numel, 1e-5, 0);
    gx_ctx_free(&ctx);
    gx_st_close(&f);
    gx_cf_free(&m);
}

/* log|det A| of an n x n matrix (row-major, double) by LU with partial pivoting. */
static double log_abs_det(double *a, int n) {
    double ld = 0;
    for (int k = 0; k < n; k++) {
        int piv = k;
        for (int i = k + 1; i < n; i++)
            if (fabs(a[i * n + k]) > fabs(a[piv * n + k])) piv = i;
        for (int j = 0; j < n && piv != k; j++) {
            double t = a[k * n + j];
            a[k * n + j] = a[piv * n + j];
            a[piv * n + j] = t;
        }
        ld += log(fabs(a[k * n + k]));
        for (int i = k + 1; i < n; i++) {
            double f = a[i * n + k] / a[k * n + k];
            for (int j = k; j < n; j++) a[i * n + j] -= f * a[k * n + j];
        }
    }
    return ld;
}

/* log|det J| from the Jacobian's rows (one backward of <h, e_i> per
 * output) equals the flow's logdet. The rows of the subnets' last layers that
 * make s are scaled x3 so s reaches the clamp's bend and logdet is far from
 * 0; t is left alone: scaling it too makes J so ill-conditioned (cond ~1e8,
 * measured in float64 with PyTorch) that a float Jacobian's determinant
 * means nothing. */
GX_TEST(cf_flow_logdet_matches_jacobian) {
    gx_cf_model m;
    if (!load_tiny(T, &m)) { gx_cf_free(&m); return; }
    for (int b = 0; b < m.cfg.blocks; b++)
        for (int k = 0; k < 2; k++) {
            gx_tensor *w = k ? m.block[b].n2[2].w : m.block[b].n1[2].w;
            for (int64_t i = 0; i < w->numel / 2; i++) w->data[i] *= 3;   /* rows of s */
        }
    gx_ctx ctx;
    gx_ctx_init(&ctx, 16 << 20);
    enum { D1 = 8 };
    gx_rng r;
    gx_rng_init(&r, 8);
    double biggest = 0, worst = 0;
    for (int s = 0; s < 6; s++) {
        gx_real z0[D1];
        gx_rng_fill_normal(&r, z0, D1, 0.0, 1.0);
        double J[D1 * D1], logdet = 0;
        for (int i = 0; i < D1; i++) {
            gx_ctx_reset(&ctx);
            ctx.grad_enabled = 1;
            gx_tensor *z = gx_tensor_from(&ctx, 2, GX_SHAPE(1, D1), z0);
            z->requires_grad = 1;
            gx_tensor *ld = NULL, *h = gx_cf_flow(&ctx, &m, z, &ld);
            gx_tensor *e = gx_tensor_zeros(&ctx, 2, GX_SHAPE(1, D1));
            e->data[i] = 1;
            gx_backward(&ctx, dot(&ctx, h, e), NULL);         /* d<h, e_i>/dz = row i */
            for (int j = 0; j < D1; j++) J[i * D1 + j] = z->grad[j];
            logdet = ld->data[0];
        }
        double want = log_abs_det(J, D1);
        biggest = fmax(biggest, fabs(want));
        worst = fmax(worst, fabs(logdet - want));
        CHECK_MSG(fabs(logdet - want) <= 1e-4 * (1 + fabs(want)), "sample %d: logdet %.7f, log|det J| %.7f",
                  s, logdet, want);
    }
    printf("  largest |log det J| checked: %.3f, worst |logdet - log|det J|| %.2e\n", biggest, worst);
    CHECK(biggest > 1.0);
    gx_ctx_free(&ctx);
    gx_cf_free(&m);
}

/* ------------------------------------------------------ serving properties */

/* Eval outputs of one image alone equal its row in a batch of 7, bit for bit. */
GX_TEST(cf_eval_per_sample_determinism) {
    gx_cf_model m;
    if (!load_tiny(T, &m)) { gx_cf_free(&m); return; }
    gx_ctx ctx;
    gx_ctx_init(&ctx, 64 << 20);
    int64_t per = 3 * 32 * 32;
    gx_tensor *x = gx_tensor_new(&ctx, 4, GX_SHAPE(7, 3, 32, 32));
    fill_images(x, 41);
    gx_cf_out big = gx_cf_forward(&ctx, &m, x, 0.0, NULL, 1);
    for (int s = 0; s < 7; s += 2) {
        gx_tensor *x1 = gx_tensor_from(&ctx, 4, GX_SHAPE(1, 3, 32, 32), x->data + s * per);
        gx_cf_out one = gx_cf_forward(&ctx, &m, x1, 0.0, NULL, 1);
        CHECK_MSG(!memcmp(one.z->data, big.z->data + s * 16, 16 * sizeof(gx_real)), "z of sample %d", s);
        CHECK_MSG(!memcmp(one.h->data, big.h->data + s * 8, 8 * sizeof(gx_real)), "h of sample %d", s);
        CHECK_MSG(one.logdet->data[0] == big.logdet->data[s], "logdet of sample %d", s);
        CHECK_MSG(!memcmp(one.g->data, big.g->data + s * 10, 10 * sizeof(gx_real)), "g of sample %d", s);
        CHECK_MSG(!memcmp(one.xrec->data, big.xrec->data + s * per, (size_t)per * sizeof(gx_real)),
                  "xrec of sample %d", s);
    }
    gx_ctx_free(&ctx);
    gx_cf_free(&m);
}

/* The default config runs at 64x64; the training noise moves h, not z. */
GX_TEST(cf_default_config_forward_and_noise) {
    gx_cf_model m;
    gx_cf_init(&m, gx_cf_config_default(), 4);
    gx_ctx ctx;
    gx_ctx_init(&ctx, 128 << 20);
    gx_tensor *x = gx_tensor_new(&ctx, 4, GX_SHAPE(2, 3, 64, 64));
    fill_images(x, 42);
    gx_cf_out a = gx_cf_forward(&ctx, &m, x, 0.0, NULL, 1);
    CHECK(a.z->shape[1] == 64 && a.h->shape[1] == 16 && a.g->shape[1] == 10);
    CHECK(a.xrec->ndim == 4 && a.xrec->shape[2] == 64 && a.xrec->shape[1] == 3);
    CHECK(a.logdet->ndim == 1 && a.logdet->shape[0] == 2 && isfinite(a.logdet->data[1]));
    gx_rng r;
    gx_rng_init(&r, 1);
    gx_cf_out b = gx_cf_forward(&ctx, &m, x, 0.05, &r, 0);
    CHECK(b.xrec == NULL);
    CHECK(!memcmp(a.z->data, b.z->data, (size_t)a.z->numel * sizeof(gx_real)));
    double dh = 0;
    for (int64_t i = 0; i < a.h->numel; i++) dh = fmax(dh, fabs(a.h->data[i] - b.h->data[i]));
    CHECK(dh > 1e-3 && dh < 0.5);
    gx_ctx_free(&ctx);
    gx_cf_free(&m);
}

/* -------------------------------------------------------------------- SSIM */

GX_TEST(cf_ssim_identity_and_morph_agreement) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 16 << 20);
    enum { B = 2, C = 3, H = 32, W = 29 };
    gx_tensor *a = gx_tensor_new(&ctx, 4, GX_SHAPE(B, C, H, W));
    gx_tensor *b = gx_tensor_new(&ctx, 4, GX_SHAPE(B, C, H, W));
    fill_images(a, 50);
    fill_images(b, 51);
    for (int64_t i = 0; i < a->numel; i++) b->data[i] = (gx_real)(0.6 * a->data[i] + 0.4 * b->data[i]);
    double per[B];
    gx_tensor *same = gx_cf_ssim(&ctx, a, a, 11, 1.5, per);
    CHECK_NEAR(same->data[0], 1.0, 1e-6);
    CHECK_NEAR(per[1], 1.0, 1e-6);
    gx_tensor *s = gx_cf_ssim(&ctx, a, b, 11, 1.5, per);
    double total = 0;
    for (int n = 0; n < B; n++) {
        double acc = 0;
        for (int c = 0; c < C; c++) {
            float fa[H * W], fb[H * W];
            for (int i = 0; i < H * W; i++) {
                fa[i] = (float)a->data[(n * C + c) * H * W + i];
                fb[i] = (float)b->data[(n * C + c) * H * W + i];
            }
            double v = NAN;
            gx_err err;
            CHECK(gx_morph_ssim(fa, fb, H, W, 1.0, &v, &err) == GX_OK);
            acc += v / C;
        }
        CHECK_NEAR(per[n], acc, 2e-5);
        total += acc / B;
    }
    printf("  SSIM %.6f (morph/ %.6f)\n", s->data[0], total);
    CHECK_NEAR(s->data[0], total, 2e-5);
    CHECK(total > 0.3 && total < 0.95);            /* a value that says something */
    gx_ctx_free(&ctx);
}

/* ------------------------------------------------------------- training */

/* A few Adam steps on a fixed batch lower the total loss (all three terms on). */
GX_TEST(cf_adam_steps_lower_total_loss) {
    gx_cf_model m;
    gx_cf_init(&m, gx_cf_config_tiny(), 14);
    gx_ctx ctx;
    gx_ctx_init(&ctx, 64 << 20);
    gx_err err;
    gx_optim opt;
    gx_optim_cfg oc = gx_optim_defaults(GX_OPT_ADAM);
    oc.beta2 = 0.99;
    CHECK(gx_optim_init(&opt, &m.params, &oc, &err) == GX_OK);
    enum { NB = 8 };
    int64_t y[NB] = { 0, 1, 2, 3, 4, 5, 6, 7 };
    gx_tensor *x0 = gx_tensor_new(&ctx, 4, GX_SHAPE(NB, 3, 32, 32));
    fill_images(x0, 60);
    gx_real *img = malloc(sizeof(gx_real) * (size_t)x0->numel);
    CHECK(img != NULL);
    if (!img) goto done;
    memcpy(img, x0->data, sizeof(gx_real) * (size_t)x0->numel);
    gx_cf_loss_cfg lc = gx_cf_loss_cfg_default();
    double first = 0, last = 0;
    const double lr[2] = { 1e-3, 3e-3 };
    for (int step = 0; step < 10; step++) {
        gx_ctx_reset(&ctx);
        ctx.grad_enabled = 1;
        gx_rng noise, mmd;
        gx_rng_init(&noise, 100 + step);
        gx_rng_init(&mmd, 200);                    /* same samples: a fixed objective */
        gx_tensor *x = gx_tensor_from(&ctx, 4, GX_SHAPE(NB, 3, 32, 32), img);
        gx_params_zero_grad(&m.params);
        gx_cf_out o = gx_cf_forward(&ctx, &m, x, 0.05, &noise, 1);
        gx_cf_loss_terms L = gx_cf_loss(&ctx, &m, &o, x, y, NULL, &mmd, &lc);
        if (step == 0) first = L.total->data[0];
        last = L.total->data[0];
        gx_backward(&ctx, L.total, NULL);
        gx_optim_step(&opt, &m.params, lr);
    }
    printf("  total loss %.4f -> %.4f after 10 Adam steps\n", first, last);
    CHECK(isfinite(last) && last < 0.95 * first);
done:
    free(img);
    gx_optim_free(&opt);
    gx_ctx_free(&ctx);
    gx_cf_free(&m);
}

/* gx_cf_loss's terms follow their weights: a zero weight leaves the term NULL. */
GX_TEST(cf_loss_weights_skip_terms) {
    gx_cf_model m;
    gx_cf_init(&m, gx_cf_config_tiny(), 15);
    gx_ctx ctx;
    gx_ctx_init(&ctx, 32 << 20);
    gx_tensor *x = gx_tensor_new(&ctx, 4, GX_SHAPE(3, 3, 32, 32));
    fill_images(x, 61);
    int64_t y[3] = { 1, 2, 9 };
    gx_cf_out o = gx_cf_forward(&ctx, &m, x, 0.0, NULL, 0);
    gx_cf_loss_cfg lc = gx_cf_loss_cfg_default();
    lc.w_rec = 0;
    gx_rng r;
    gx_rng_init(&r, 3);
    gx_cf_loss_terms L = gx_cf_loss(&ctx, &m, &o, x, y, NULL, &r, &lc);
    CHECK(L.l_rec == NULL && L.ssim == NULL && L.l_mmd && L.l_ib);
    CHECK_NEAR(L.total->data[0], 10 * L.l_mmd->data[0] + L.l_ib->data[0], 1e-4);
    /* The MMD of a sample against itself-shaped noise is small but the
     * estimator is unbiased, so it may be negative; of a shifted set, large. */
    gx_tensor *z = gx_tensor_new(&ctx, 2, GX_SHAPE(64, 4)), *n = gx_tensor_new(&ctx, 2, GX_SHAPE(64, 4));
    gx_rng_fill_normal(&r, z->data, z->numel, 0.0, 1.0);
    gx_rng_fill_normal(&r, n->data, n->numel, 0.0, 1.0);
    double near = gx_cf_mmd(&ctx, z, n)->data[0];
    for (int64_t i = 0; i < z->numel; i++) z->data[i] += 3;
    double far = gx_cf_mmd(&ctx, z, n)->data[0];
    printf("  MMD same distribution %.4f, shifted by 3: %.4f\n", near, far);
    CHECK(fabs(near) < 0.1 && far > 1.0);
    gx_ctx_free(&ctx);
    gx_cf_free(&m);
}

/* The tiny fixture model, the io fixture and an added term's fixture;
 * on failure everything opened is closed again and 0 returned. */
static int open_term_fixtures(gx_test_state *T, gx_cf_model *m, gx_st_file *fio, gx_st_file *f,
                              const char *term_fixture) {
    if (!open_tiny_with(T, m, fio, "cfinn_tiny_io.safetensors")) return 0;
    if (!gx_fixture_open(T, f, term_fixture)) {
        gx_st_close(fio);
        gx_cf_free(m);
        return 0;
    }
    return 1;
}

/* One of our added loss terms (models/cf_inn_loss.c) against its PyTorch
 * twin in tests/models/cfinn_ref.py, on the fixture model and inputs: the
 * value, the input gradient and every parameter gradient. bg NULL: the
 * latent cycle term (fixture cfinn_tiny_cyc), else the background term with
 * that mask (cfinn_tiny_bg). The forward is the eval one (no noise). */
static void cf_added_term_parity(gx_test_state *T, gx_ctx *ctx, gx_cf_model *m, gx_st_file *f, gx_tensor *x,
                                 const gx_tensor *bg, const char *what) {
    gx_tensor *gref = gx_fixture_tensor(T, ctx, f, "grad.in.x");
    if (!gref) return;
    ctx->grad_enabled = 1;
    x->requires_grad = 1;
    x->grad = NULL;
    gx_params_zero_grad(&m->params);
    gx_cf_out o = gx_cf_forward(ctx, m, x, 0.0, NULL, bg != NULL);
    gx_tensor *l = bg ? gx_cf_background_loss(ctx, m, &o, bg) : gx_cf_cycle_loss(ctx, m, &o);
    CHECK(l && l->numel == 1);
    if (!l) return;
    gx_fixture_check(T, f, bg ? "loss.l_bg" : "loss.l_cyc", l->data, 1, OUT_ATOL, OUT_RTOL);
    gx_backward(ctx, l, NULL);
    CHECK(x->grad != NULL);
    if (x->grad) check_full(T, what, x->grad, gref->data, x->numel);
    int checked = 0;
    double worst = 0;
    for (int i = 0; i < m->params.n; i++) {
        gx_param *p = m->params.items[i];
        if (p->flags & GX_PARAM_BUFFER) continue;
        check_param_grad(T, f, ctx, p);
        double e = grad_rel_err(T, ctx, f, p);
        if (e > worst) worst = e;
        checked++;
    }
    printf("  %s %.6f; %d parameter gradients, worst relative L2 error %.2e\n", what, l->data[0], checked,
           worst);
    CHECK(checked == 75);
}

/* The latent cycle term's parity (above), then the contract around it: a
 * batch of one has no neighbour (NULL, total unchanged), and w_cyc 0 leaves
 * the spec's loss alone. */
GX_TEST(cf_cycle_term_parity_and_contract) {
    gx_cf_model m;
    gx_st_file f, fio;
    if (!open_term_fixtures(T, &m, &fio, &f, "cfinn_tiny_cyc.safetensors")) return;
    gx_ctx ctx;
    gx_ctx_init(&ctx, 64 << 20);
    gx_tensor *x = gx_fixture_tensor(T, &ctx, &fio, "in.x");
    if (!x) goto done;
    cf_added_term_parity(T, &ctx, &m, &f, x, NULL, "cycle term");
    gx_ctx_reset(&ctx);

    /* One image: no neighbour, no term; w_cyc 0: the spec's total. */
    ctx.grad_enabled = 0;
    gx_tensor *x1 = gx_tensor_new(&ctx, 4, GX_SHAPE(1, 3, 32, 32));
    fill_images(x1, 5);
    int64_t y1[1] = { 2 };
    gx_cf_out o1 = gx_cf_forward(&ctx, &m, x1, 0.0, NULL, 1);
    CHECK(gx_cf_cycle_loss(&ctx, &m, &o1) == NULL);
    gx_cf_loss_cfg lc = gx_cf_loss_cfg_default();
    lc.w_mmd = 0;
    gx_cf_loss_terms a = gx_cf_loss(&ctx, &m, &o1, x1, y1, NULL, NULL, &lc);
    lc.w_cyc = 10;
    gx_cf_loss_terms b = gx_cf_loss(&ctx, &m, &o1, x1, y1, NULL, NULL, &lc);
    CHECK(a.l_cyc == NULL && b.l_cyc == NULL);
    CHECK_NEAR(a.total->data[0], b.total->data[0], 1e-6);
done:
    gx_ctx_free(&ctx);
    gx_st_close(&f);
    gx_st_close(&fio);
    gx_cf_free(&m);
}

/* The background term's parity (cf_added_term_parity with the fixture's
 * mask), then its contract: a mask without background pixels gives no term,
 * a batch of one none either, an identical mixed decode (every sample with
 * the same z1) gives 0, and through gx_cf_loss it adds w_bg times its value
 * to the total and nothing else. */
GX_TEST(cf_background_term_parity_and_contract) {
    gx_cf_model m;
    gx_st_file f, fio;
    if (!open_term_fixtures(T, &m, &fio, &f, "cfinn_tiny_bg.safetensors")) return;
    gx_ctx ctx;
    gx_ctx_init(&ctx, 64 << 20);
    gx_tensor *x = gx_fixture_tensor(T, &ctx, &fio, "in.x");
    gx_tensor *bg = gx_fixture_tensor(T, &ctx, &f, "in.bg");
    gx_tensor *se = gx_fixture_tensor(T, &ctx, &f, "scale.encoder_fc2_z1");
    gx_tensor *sd = gx_fixture_tensor(T, &ctx, &f, "scale.decoder_fc1_z1");
    if (!x || !bg || !se || !sd) goto done;
    CHECK(bg->ndim == 4 && bg->shape[1] == 1);
    /* The fixture's well-conditioned copy (cfinn_ref.py says why): the
     * encoder writes z1 x se, the decoder reads it x sd; powers of two, so
     * exact in float. */
    int64_t d = m.cfg.d, d1 = m.cfg.d1;
    for (int64_t i = 0; i < d1 * m.enc_fc2.w->shape[1]; i++) m.enc_fc2.w->data[i] *= se->data[0];
    for (int64_t r = 0; r < m.dec_fc1.w->shape[0]; r++)
        for (int64_t j = 0; j < d1; j++) m.dec_fc1.w->data[r * d + j] *= sd->data[0];
    cf_added_term_parity(T, &ctx, &m, &f, x, bg, "background term");

    ctx.grad_enabled = 0;
    gx_cf_out o = gx_cf_forward(&ctx, &m, x, 0.0, NULL, 1);
    gx_tensor *zero = gx_tensor_new(&ctx, 4, bg->shape);   /* all galaxy */
    CHECK(gx_cf_background_loss(&ctx, &m, &o, zero) == NULL);
    /* Every sample with the first sample's z1: the mix decodes to x~. */
    gx_cf_out same = o;
    int64_t B = o.z1->shape[0];
    same.z1 = gx_tensor_new(&ctx, 2, o.z1->shape);
    for (int64_t i = 0; i < B; i++) memcpy(same.z1->data + i * d1, o.z1->data, (size_t)d1 * sizeof(gx_real));
    gx_tensor *zz[2] = { same.z1, o.z2 };
    same.xrec = gx_cf_decode(&ctx, &m, gx_concat(&ctx, 2, zz, 1));
    gx_tensor *l0 = gx_cf_background_loss(&ctx, &m, &same, bg);
    CHECK(l0 && fabs(l0->data[0]) < 1e-7);
    /* Through the total: + w_bg * term, the other terms unchanged. */
    int64_t y[4] = { 3, 0, 9, 3 };
    CHECK(B == 4);
    gx_cf_loss_cfg lc = gx_cf_loss_cfg_default();
    lc.w_mmd = 0;
    gx_cf_loss_terms a = gx_cf_loss(&ctx, &m, &o, x, y, NULL, NULL, &lc);
    lc.w_bg = 5;
    gx_cf_loss_terms b = gx_cf_loss(&ctx, &m, &o, x, y, bg, NULL, &lc);
    gx_tensor *lb = gx_cf_background_loss(&ctx, &m, &o, bg);
    CHECK(a.l_bg == NULL && b.l_bg != NULL && b.l_cyc == NULL && lb);
    if (b.l_bg && lb) {
        CHECK_NEAR(b.l_bg->data[0], lb->data[0], 1e-6);
        CHECK_NEAR(b.total->data[0], a.total->data[0] + 5 * lb->data[0], 1e-4);
    }
    /* A batch of one: no neighbour, no term. */
    gx_tensor *x1 = gx_tensor_new(&ctx, 4, GX_SHAPE(1, 3, 32, 32));
    fill_images(x1, 5);
    gx_cf_out o1 = gx_cf_forward(&ctx, &m, x1, 0.0, NULL, 1);
    gx_tensor *bg1 = gx_tensor_new(&ctx, 4, GX_SHAPE(1, 1, 32, 32));
    for (int64_t i = 0; i < bg1->numel; i++) bg1->data[i] = 1;
    CHECK(gx_cf_background_loss(&ctx, &m, &o1, bg1) == NULL);
done:
    gx_ctx_free(&ctx);
    gx_st_close(&f);
    gx_st_close(&fio);
    gx_cf_free(&m);
}

/* The z2 class-mean term against its PyTorch twin (cfinn_ref.py's
 * z2_class_loss, the definition as a loop over classes) on the fixture's
 * z2 [6,8] and labels (classes of 3, 2 and 1 samples): value and gradient.
 * Then its contract: one class only, or every row equal, gives 0; the term
 * is invariant to adding one vector to every row; through gx_cf_loss it
 * adds w_z2 times its value and nothing else. */
GX_TEST(cf_z2_term_parity_and_contract) {
    gx_cf_model m;
    gx_st_file f;
    if (!open_tiny_with(T, &m, &f, "cfinn_z2_term.safetensors")) return;
    gx_ctx ctx;
    gx_ctx_init(&ctx, 16 << 20);
    gx_tensor *z2 = gx_fixture_tensor(T, &ctx, &f, "in.z2");
    gx_tensor *lab = gx_fixture_tensor(T, &ctx, &f, "in.labels");
    gx_tensor *gref = gx_fixture_tensor(T, &ctx, &f, "grad.in.z2");
    if (!z2 || !lab || !gref) goto done;
    const int64_t B = z2->shape[0], d2 = z2->shape[1];
    CHECK(B == 6 && d2 == m.cfg.d - m.cfg.d1);
    int64_t y[6];
    for (int64_t i = 0; i < B; i++) y[i] = (int64_t)lab->data[i];
    ctx.grad_enabled = 1;
    z2->requires_grad = 1;
    gx_tensor *l = gx_cf_z2_class_loss(&ctx, &m, z2, y);
    gx_fixture_check(T, &f, "loss.l_z2", l->data, 1, OUT_ATOL, OUT_RTOL);
    gx_backward(&ctx, l, NULL);
    CHECK(z2->grad != NULL);
    if (z2->grad) check_full(T, "z2 term gradient", z2->grad, gref->data, z2->numel);
    ctx.grad_enabled = 0;
    /* One class: every class mean is the batch mean. */
    int64_t one[6] = { 4, 4, 4, 4, 4, 4 };
    CHECK_NEAR(gx_cf_z2_class_loss(&ctx, &m, z2, one)->data[0], 0, 1e-7);
    /* Every row equal: no scatter whatever the labels. */
    gx_tensor *same = gx_tensor_new(&ctx, 2, z2->shape);
    for (int64_t i = 0; i < B; i++) memcpy(same->data + i * d2, z2->data, (size_t)d2 * sizeof(gx_real));
    CHECK_NEAR(gx_cf_z2_class_loss(&ctx, &m, same, y)->data[0], 0, 1e-7);
    /* A shift of every row leaves the scatter alone. */
    gx_tensor *shift = gx_tensor_new(&ctx, 2, z2->shape);
    for (int64_t i = 0; i < z2->numel; i++) shift->data[i] = z2->data[i] + (gx_real)(0.5 * (double)(i % d2) - 1.0);
    CHECK_NEAR(gx_cf_z2_class_loss(&ctx, &m, shift, y)->data[0], l->data[0], 1e-5);
    /* Through the total of a model forward: + w_z2 * term, the rest unchanged. */
    gx_tensor *x = gx_tensor_new(&ctx, 4, GX_SHAPE(4, 3, 32, 32));
    fill_images(x, 3);
    int64_t y4[4] = { 3, 0, 9, 3 };
    gx_cf_out o = gx_cf_forward(&ctx, &m, x, 0.0, NULL, 1);
    gx_cf_loss_cfg lc = gx_cf_loss_cfg_default();
    lc.w_mmd = 0;
    gx_cf_loss_terms a = gx_cf_loss(&ctx, &m, &o, x, y4, NULL, NULL, &lc);
    lc.w_z2 = 1000;
    gx_cf_loss_terms b = gx_cf_loss(&ctx, &m, &o, x, y4, NULL, NULL, &lc);
    gx_tensor *lz = gx_cf_z2_class_loss(&ctx, &m, o.z2, y4);
    CHECK(a.l_z2 == NULL && b.l_z2 != NULL && lz);
    if (b.l_z2 && lz) {
        CHECK_NEAR(b.l_z2->data[0], lz->data[0], 1e-12);
        CHECK_NEAR(b.total->data[0], a.total->data[0] + 1000 * lz->data[0], 1e-4);
    }
done:
    gx_ctx_free(&ctx);
    gx_st_close(&f);
    gx_cf_free(&m);
}
