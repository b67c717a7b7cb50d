/*
 * test_parity_optim.c — optimiser trajectories and gradient clipping against
 * PyTorch (tests/parity/gen_optim.py -> tests/fixtures/optim.safetensors).
 *
 * The same four parameters, per-step learning rates and gradients are
 * replayed through gx_optim_step; every parameter is compared after every
 * one of the 10 steps. A BUFFER and a FROZEN tensor ride along and must stay
 * untouched. Tolerance: |got - want| <= 1e-6 + 1e-5*|want| (f32 engine
 * against torch float64 stored as f32; updates are O(lr) ~ 1e-2, so this
 * checks the update itself to ~1e-4 relative or better).
 */
#include "gx_test.h"

#include <stdlib.h>
#include <string.h>

#define OPT_STEPS 10
#define OPT_ATOL 1e-6
#define OPT_RTOL 1e-5

static const char *const opt_names[4] = { "p0", "p1", "p2", "p3" };

/* The registry of gen_optim.py: decay on p0/p2, groups {p0,p1} and {p2,p3}. */
static void opt_registry(gx_params *p) {
    gx_params_init(p);
    gx_params_add(p, "p0", 2, GX_SHAPE(3, 5), GX_PARAM_DECAY);
    gx_params_add(p, "p1", 1, GX_SHAPE(7), 0);
    gx_params_add(p, "buf", 1, GX_SHAPE(3), GX_PARAM_BUFFER);
    gx_params_add(p, "p2", 2, GX_SHAPE(2, 3), GX_PARAM_DECAY);
    gx_params_add(p, "frozen", 1, GX_SHAPE(2), GX_PARAM_FROZEN | GX_PARAM_DECAY);
    gx_params_add(p, "p3", 1, GX_SHAPE(4), 0);
    gx_params_find(p, "p2")->group = 1;
    gx_params_find(p, "p3")->group = 1;
    gx_params_find(p, "frozen")->group = 1;
}

/* Fills dst (n values) from row `row` of fixture tensor key. */
static int opt_row(gx_test_state *T, const gx_st_file *f, const char *key, int row, gx_real *dst, int64_t n) {
    const gx_st_tensor *t = gx_st_find(f, key);
    CHECK_MSG(t != NULL, "fixture tensor %s missing", key);
    if (!t) return 0;
    int64_t total = gx_shape_numel(t->ndim, t->shape);
    gx_real *all = malloc((size_t)total * sizeof *all);
    gx_err err = {{0}};
    int ok = gx_st_to_real(t, all, total, &err) == GX_OK && (row + 1) * n <= total;
    if (ok) memcpy(dst, all + row * n, (size_t)n * sizeof *dst);
    free(all);
    CHECK_MSG(ok, "fixture tensor %s row %d: %s", key, row, err.msg);
    return ok;
}

static void opt_replay(gx_test_state *T, const char *tag, gx_optim_cfg cfg) {
    gx_st_file f;
    if (!gx_fixture_open(T, &f, "optim.safetensors")) return;
    gx_params p;
    opt_registry(&p);
    char key[64];
    for (int i = 0; i < 4; i++) {
        gx_param *q = gx_params_find(&p, opt_names[i]);
        snprintf(key, sizeof key, "init.%s", opt_names[i]);
        opt_row(T, &f, key, 0, q->t.data, q->t.numel);
    }
    gx_params_find(&p, "buf")->t.data[1] = 3;
    gx_params_find(&p, "frozen")->t.data[0] = 5;
    gx_optim o;
    gx_err err = {{0}};
    CHECK(gx_optim_init(&o, &p, &cfg, &err) == GX_OK);
    gx_real lr2[2];
    for (int s = 0; s < OPT_STEPS; s++) {
        opt_row(T, &f, "lr", s, lr2, 2);
        double lr[2] = { lr2[0], lr2[1] };
        for (int i = 0; i < 4; i++) {
            gx_param *q = gx_params_find(&p, opt_names[i]);
            snprintf(key, sizeof key, "grad.%s", opt_names[i]);
            opt_row(T, &f, key, s, q->t.grad, q->t.numel);
        }
        gx_optim_step(&o, &p, lr);
        for (int i = 0; i < 4; i++) {
            gx_param *q = gx_params_find(&p, opt_names[i]);
            gx_real want[16];
            snprintf(key, sizeof key, "%s.%s", tag, opt_names[i]);
            opt_row(T, &f, key, s, want, q->t.numel);
            char label[96];
            snprintf(label, sizeof label, "%s step %d", key, s + 1);
            gx_test_allclose(T, label, q->t.data, want, q->t.numel, OPT_ATOL, OPT_RTOL);
        }
    }
    CHECK(o.step == OPT_STEPS);
    CHECK(gx_params_find(&p, "buf")->t.data[1] == 3 && gx_params_find(&p, "buf")->t.data[0] == 0);
    CHECK(gx_params_find(&p, "frozen")->t.data[0] == 5 && gx_params_find(&p, "frozen")->t.data[1] == 0);
    gx_optim_free(&o);
    gx_params_free(&p);
    gx_st_close(&f);
}

GX_TEST(optim_parity_adamw) {
    gx_optim_cfg c = gx_optim_defaults(GX_OPT_ADAMW);
    c.weight_decay = 0.05;
    opt_replay(T, "adamw", c);
}

GX_TEST(optim_parity_adam) {
    gx_optim_cfg c = gx_optim_defaults(GX_OPT_ADAM);
    c.beta1 = 0.8;
    c.beta2 = 0.99;
    c.eps = 1e-6;
    c.weight_decay = 0.1;
    opt_replay(T, "adam", c);
}

GX_TEST(optim_parity_sgd_nesterov) {
    gx_optim_cfg c = gx_optim_defaults(GX_OPT_SGD);
    c.momentum = 0.9;
    c.nesterov = 1;
    c.weight_decay = 0.01;
    opt_replay(T, "sgd_nesterov", c);
}

GX_TEST(optim_parity_sgd_momentum) {
    gx_optim_cfg c = gx_optim_defaults(GX_OPT_SGD);
    c.momentum = 0.5;
    c.weight_decay = 0.02;
    opt_replay(T, "sgd_momentum", c);
}

GX_TEST(optim_parity_sgd_plain) {
    gx_optim_cfg c = gx_optim_defaults(GX_OPT_SGD);
    c.weight_decay = 0.03;
    opt_replay(T, "sgd_plain", c);
}

/* clip_grad_norm_ on the same four shapes (plus a buffer that must not
 * count): one case above the threshold, one below. */
GX_TEST(optim_parity_clip_grad_norm) {
    gx_st_file f;
    if (!gx_fixture_open(T, &f, "optim.safetensors")) return;
    const char *cases[2] = { "clip", "noclip" };
    const double max_norm[2] = { 1.0, 100.0 };
    for (int c = 0; c < 2; c++) {
        gx_params p;
        opt_registry(&p);
        char key[64];
        const char *names[4] = { "p0", "p1", "p2", "p3" };
        for (int i = 0; i < 4; i++) {
            gx_param *q = gx_params_find(&p, names[i]);
            snprintf(key, sizeof key, "%s.g%d", cases[c], i);
            opt_row(T, &f, key, 0, q->t.grad, q->t.numel);
        }
        gx_params_find(&p, "buf")->t.data[0] = 1000;   /* data, not grad: ignored */
        double norm = gx_clip_grad_norm(&p, max_norm[c]);
        gx_real want_norm;
        snprintf(key, sizeof key, "%s.norm", cases[c]);
        opt_row(T, &f, key, 0, &want_norm, 1);
        CHECK_NEAR(norm, want_norm, 1e-5 * want_norm);
        for (int i = 0; i < 4; i++) {
            gx_param *q = gx_params_find(&p, names[i]);
            snprintf(key, sizeof key, "%s.out%d", cases[c], i);
            gx_fixture_check(T, &f, key, q->t.grad, q->t.numel, 1e-7, 1e-5);
        }
        gx_params_free(&p);
    }
    gx_st_close(&f);
}
