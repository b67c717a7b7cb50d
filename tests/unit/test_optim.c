/*
 * test_optim.c — optimisers, schedules, clipping and training-state files
 * on hand-computed cases (trajectories against PyTorch are in
 * test_parity_optim.c).
 */
#include "gx_test.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* w (decay, group 0), b (no decay, group 0), h (decay, group 1), a buffer. */
static void optu_registry(gx_params *p) {
    gx_params_init(p);
    gx_params_add(p, "w", 1, GX_SHAPE(2), GX_PARAM_DECAY);
    gx_params_add(p, "b", 1, GX_SHAPE(1), 0);
    gx_params_add(p, "stats", 1, GX_SHAPE(2), GX_PARAM_BUFFER);
    gx_params_add(p, "h", 1, GX_SHAPE(1), GX_PARAM_DECAY);
    gx_params_find(p, "h")->group = 1;
}

static void optu_set(gx_params *p, double val, double grad) {
    for (int i = 0; i < p->n; i++) {
        gx_tensor *t = &p->items[i]->t;
        for (int64_t k = 0; k < t->numel; k++) {
            t->data[k] = (gx_real)val;
            if (t->grad) t->grad[k] = (gx_real)grad;
        }
    }
}

GX_TEST(optim_defaults_and_init_checks) {
    gx_optim_cfg c = gx_optim_defaults(GX_OPT_ADAMW);
    CHECK(c.kind == GX_OPT_ADAMW && c.beta1 == 0.9 && c.beta2 == 0.999 && c.eps == 1e-8 && c.weight_decay == 0.01);
    CHECK(gx_optim_defaults(GX_OPT_ADAM).weight_decay == 0);
    gx_optim_cfg s = gx_optim_defaults(GX_OPT_SGD);
    CHECK(s.momentum == 0 && s.nesterov == 0 && s.weight_decay == 0);
    gx_params p;
    optu_registry(&p);
    gx_optim o;
    gx_err err = {{0}};
    /* Adam: two slots per trainable element (w 2 + b 1 + h 1), none for the buffer. */
    CHECK(gx_optim_init(&o, &p, &c, &err) == GX_OK);
    CHECK(o.state_len == 8 && o.offset[2] == -1 && o.offset[0] == 0 && o.offset[1] == 4 && o.offset[3] == 6);
    CHECK(((uintptr_t)o.state % 64) == 0);
    gx_optim_free(&o);
    CHECK(gx_optim_init(&o, &p, &s, &err) == GX_OK && o.state_len == 0);   /* plain SGD: no state */
    gx_optim_free(&o);
    s.nesterov = 1;
    CHECK(gx_optim_init(&o, &p, &s, &err) == GX_ERR_INVALID && strstr(err.msg, "Nesterov"));
    c.beta2 = 1.0;
    CHECK(gx_optim_init(&o, &p, &c, &err) == GX_ERR_INVALID && strstr(err.msg, "betas"));
    c = gx_optim_defaults(GX_OPT_ADAM);
    gx_params_find(&p, "h")->group = GX_OPT_MAX_GROUPS;
    CHECK(gx_optim_init(&o, &p, &c, &err) == GX_ERR_INVALID && strstr(err.msg, "'h'"));
    gx_params_free(&p);
}

GX_TEST(optim_adam_adamw_first_step_by_hand) {
    /* p = 1, g = 0.5, lr 0.1: m = 0.05, v = 0.00025; bias-corrected the step
     * is lr * 0.5 / (0.5 + eps) ~= 0.1. AdamW first shrinks decayed params
     * by (1 - lr*wd) = 0.999; Adam adds wd*p = 0.01 to the gradient, which
     * after normalisation still moves by ~lr. */
    const double step = 0.1 * 0.5 / (0.5 + 1e-8);
    for (int kind = 0; kind < 2; kind++) {
        gx_params p;
        optu_registry(&p);
        optu_set(&p, 1.0, 0.5);
        gx_optim_cfg c = gx_optim_defaults(kind == 0 ? GX_OPT_ADAMW : GX_OPT_ADAM);
        c.weight_decay = 0.01;
        gx_optim o;
        gx_err err = {{0}};
        CHECK(gx_optim_init(&o, &p, &c, &err) == GX_OK);
        gx_optim_step(&o, &p, (const double[]){ 0.1, 0.0 });
        gx_real *w = gx_params_find(&p, "w")->t.data;
        if (kind == 0) CHECK_NEAR(w[0], 0.999 - step, 1e-7);
        else CHECK_NEAR(w[0], 1 - 0.1 * 0.51 / (0.51 + 1e-8), 1e-7);
        CHECK_NEAR(w[1], w[0], 0);
        CHECK_NEAR(gx_params_find(&p, "b")->t.data[0], 1 - step, 1e-7);   /* no decay */
        CHECK_NEAR(gx_params_find(&p, "h")->t.data[0], 1.0, 0);   /* group 1 has lr 0: AdamW decay is lr-scaled too */
        CHECK_NEAR(gx_params_find(&p, "stats")->t.data[0], 1.0, 0);      /* buffer untouched */
        CHECK_NEAR(o.state[o.offset[1]], 0.05, 1e-8);                      /* m of b */
        CHECK_NEAR(o.state[o.offset[1] + 1], 0.00025, 1e-10);              /* v of b */
        CHECK(o.step == 1);
        gx_optim_free(&o);
        gx_params_free(&p);
    }
}

GX_TEST(optim_sgd_momentum_nesterov_two_steps_by_hand) {
    /* p = 1, g = 0.5 twice, lr 0.1, mu 0.9:
     *  nesterov: buf 0.5, d 0.95, p 0.905; buf 0.95, d 1.355, p 0.7695.
     *  classic:  p 0.95; buf 0.95, p 0.855. */
    for (int nest = 0; nest < 2; nest++) {
        gx_params p;
        optu_registry(&p);
        optu_set(&p, 1.0, 0.5);
        gx_optim_cfg c = gx_optim_defaults(GX_OPT_SGD);
        c.momentum = 0.9;
        c.nesterov = nest;
        gx_optim o;
        gx_err err = {{0}};
        CHECK(gx_optim_init(&o, &p, &c, &err) == GX_OK);
        const double lr[2] = { 0.1, 0.2 };
        gx_optim_step(&o, &p, lr);
        CHECK_NEAR(gx_params_find(&p, "b")->t.data[0], nest ? 0.905 : 0.95, 1e-7);
        CHECK_NEAR(gx_params_find(&p, "h")->t.data[0], nest ? 0.81 : 0.9, 1e-7);   /* group 1: lr 0.2 */
        gx_optim_step(&o, &p, lr);
        CHECK_NEAR(gx_params_find(&p, "b")->t.data[0], nest ? 0.7695 : 0.855, 1e-6);
        CHECK_NEAR(gx_params_find(&p, "stats")->t.data[1], 1.0, 0);
        gx_optim_free(&o);
        gx_params_free(&p);
    }
    /* Weight decay adds wd*p to the gradient of decayed params only. */
    gx_params p;
    optu_registry(&p);
    optu_set(&p, 2.0, 0.0);
    gx_optim_cfg c = gx_optim_defaults(GX_OPT_SGD);
    c.weight_decay = 0.5;
    gx_optim o;
    gx_err err = {{0}};
    CHECK(gx_optim_init(&o, &p, &c, &err) == GX_OK);
    gx_optim_step(&o, &p, (const double[]){ 0.1, 0.1 });
    CHECK_NEAR(gx_params_find(&p, "w")->t.data[0], 2 - 0.1 * 1.0, 1e-7);
    CHECK_NEAR(gx_params_find(&p, "b")->t.data[0], 2.0, 0);
    gx_optim_free(&o);
    gx_params_free(&p);
}

GX_TEST(optim_clip_grad_norm_by_hand) {
    gx_params p;
    gx_params_init(&p);
    gx_real *g1 = gx_params_add(&p, "a", 1, GX_SHAPE(1), 0)->grad;
    gx_real *g2 = gx_params_add(&p, "b", 1, GX_SHAPE(1), 0)->grad;
    gx_params_add(&p, "buf", 1, GX_SHAPE(1), GX_PARAM_BUFFER)->data[0] = 100;
    g1[0] = 3;
    g2[0] = 4;
    CHECK_NEAR(gx_clip_grad_norm(&p, 10.0), 5.0, 1e-12);   /* below: unchanged */
    CHECK(g1[0] == 3 && g2[0] == 4);
    CHECK_NEAR(gx_clip_grad_norm(&p, 1.0), 5.0, 1e-12);
    CHECK_NEAR(g1[0], 0.6, 1e-6);
    CHECK_NEAR(g2[0], 0.8, 1e-6);
    CHECK_NEAR(gx_clip_grad_norm(&p, 1.0), 1.0, 1e-6);
    g1[0] = NAN;
    g2[0] = 4;
    CHECK(isnan(gx_clip_grad_norm(&p, 1.0)));
    CHECK(g2[0] == 4);   /* non-finite norm: gradients untouched */
    gx_params_free(&p);
}

GX_TEST(optim_schedules_at_known_points) {
    /* warm-up 10 steps 0 -> 1, cosine to 0.1 at step 110. */
    CHECK_NEAR(gx_lr_warmup_cosine(0, 10, 110, 0, 1, 0.1), 0.0, 1e-15);
    CHECK_NEAR(gx_lr_warmup_cosine(5, 10, 110, 0, 1, 0.1), 0.5, 1e-15);
    CHECK_NEAR(gx_lr_warmup_cosine(10, 10, 110, 0, 1, 0.1), 1.0, 1e-15);
    CHECK_NEAR(gx_lr_warmup_cosine(60, 10, 110, 0, 1, 0.1), 0.55, 1e-12);   /* half-way: mean */
    CHECK_NEAR(gx_lr_warmup_cosine(35, 10, 110, 0, 1, 0.1), 0.1 + 0.45 * (1 + sqrt(0.5)), 1e-12);
    CHECK_NEAR(gx_lr_warmup_cosine(110, 10, 110, 0, 1, 0.1), 0.1, 1e-15);
    CHECK_NEAR(gx_lr_warmup_cosine(500, 10, 110, 0, 1, 0.1), 0.1, 1e-15);
    CHECK_NEAR(gx_lr_warmup_cosine(0, 0, 100, 0, 2, 0), 2.0, 1e-15);        /* no warm-up */
    CHECK_NEAR(gx_lr_warmup_cosine(3, 4, 10, 0.2, 1, 0), 0.8, 1e-15);       /* lr_start */
    /* inverse decay: lr0 (1 + 10 min(1, s/T))^-0.75 */
    CHECK_NEAR(gx_lr_inverse_decay(0, 100, 0.01, 10, 0.75), 0.01, 1e-15);
    CHECK_NEAR(gx_lr_inverse_decay(50, 100, 0.01, 10, 0.75), 0.01 * pow(6.0, -0.75), 1e-15);
    CHECK_NEAR(gx_lr_inverse_decay(100, 100, 0.01, 10, 0.75), 0.01 * pow(11.0, -0.75), 1e-15);
    CHECK_NEAR(gx_lr_inverse_decay(1000, 100, 0.01, 10, 0.75), 0.01 * pow(11.0, -0.75), 1e-15);
    CHECK_NEAR(gx_lr_inverse_decay(100, 100, 1.0, 1, 1), 0.5, 1e-15);
}

/* Deterministic gradients for step s. */
static void optu_grads(gx_params *p, int s) {
    for (int i = 0; i < p->n; i++) {
        gx_tensor *t = &p->items[i]->t;
        if (t->grad)
            for (int64_t k = 0; k < t->numel; k++) t->grad[k] = (gx_real)sin(1.0 + s * 0.7 + i * 1.3 + k * 0.4);
    }
}

/* 6 steps straight vs 3 steps, save params + state to a file, load into a
 * fresh registry and optimiser, 3 more steps: identical bits. */
GX_TEST(optim_state_save_load_resumes_exactly) {
    const gx_opt_kind kinds[2] = { GX_OPT_ADAMW, GX_OPT_SGD };
    for (int kk = 0; kk < 2; kk++) {
        gx_optim_cfg c = gx_optim_defaults(kinds[kk]);
        c.momentum = 0.9;
        const double lr[2] = { 0.05, 0.01 };
        gx_params a, b;
        gx_optim oa, ob;
        gx_err err = {{0}};
        optu_registry(&a);
        optu_set(&a, 0.3, 0);
        CHECK(gx_optim_init(&oa, &a, &c, &err) == GX_OK);
        for (int s = 0; s < 3; s++) { optu_grads(&a, s); gx_optim_step(&oa, &a, lr); }
        gx_st_writer w;
        gx_st_writer_init(&w);
        CHECK(gx_params_to_writer(&a, &w, &err) == GX_OK);
        CHECK(gx_optim_state_to_writer(&oa, &a, &w, &err) == GX_OK);
        char path[64];
        snprintf(path, sizeof path, "/tmp/gx_optim_state_%d.safetensors", (int)getpid());
        CHECK_MSG(gx_st_writer_write(&w, path, &err) == GX_OK, "%s", err.msg);
        gx_st_writer_free(&w);
        for (int s = 3; s < 6; s++) { optu_grads(&a, s); gx_optim_step(&oa, &a, lr); }

        optu_registry(&b);
        CHECK(gx_optim_init(&ob, &b, &c, &err) == GX_OK);
        gx_st_file f;
        CHECK_MSG(gx_st_read(&f, path, &err) == GX_OK, "%s", err.msg);
        CHECK(gx_st_find(&f, kk == 0 ? "optim.v.w" : "optim.buf.w") != NULL);
        CHECK(gx_params_load(&b, &f, 0, &err) == GX_OK);
        CHECK_MSG(gx_optim_state_load(&ob, &b, &f, &err) == GX_OK, "%s", err.msg);
        CHECK(ob.step == 3);
        /* Loading into another kind of optimiser is refused, state unchanged. */
        gx_optim oc;
        gx_optim_cfg other = gx_optim_defaults(kinds[1 - kk]);
        other.momentum = 0.9;
        CHECK(gx_optim_init(&oc, &b, &other, &err) == GX_OK);
        CHECK(gx_optim_state_load(&oc, &b, &f, &err) == GX_ERR_INVALID && strstr(err.msg, "is for"));
        CHECK(oc.step == 0);
        gx_optim_free(&oc);
        gx_st_close(&f);
        unlink(path);
        for (int s = 3; s < 6; s++) { optu_grads(&b, s); gx_optim_step(&ob, &b, lr); }
        for (int i = 0; i < a.n; i++)
            CHECK_MSG(memcmp(a.items[i]->t.data, b.items[i]->t.data, (size_t)a.items[i]->t.numel * sizeof(gx_real)) == 0,
                      "kind %d: %s differs after resume", kk, a.items[i]->name);
        CHECK(memcmp(oa.state, ob.state, (size_t)oa.state_len * sizeof(gx_real)) == 0);
        gx_optim_free(&oa);
        gx_optim_free(&ob);
        gx_params_free(&a);
        gx_params_free(&b);
    }
}

GX_TEST(optim_state_load_refuses_missing_moment_all_or_nothing) {
    gx_params p;
    optu_registry(&p);
    gx_optim_cfg c = gx_optim_defaults(GX_OPT_ADAM);
    gx_optim o;
    gx_err err = {{0}};
    CHECK(gx_optim_init(&o, &p, &c, &err) == GX_OK);
    /* A file with everything except the second moment of "h" (last param). */
    gx_st_writer w;
    gx_st_writer_init(&w);
    const gx_real ones[2] = { 1, 1 };
    gx_st_writer_add_real(&w, "optim.m.w", 1, GX_SHAPE(2), ones, &err);
    gx_st_writer_add_real(&w, "optim.v.w", 1, GX_SHAPE(2), ones, &err);
    gx_st_writer_add_real(&w, "optim.m.b", 1, GX_SHAPE(1), ones, &err);
    gx_st_writer_add_real(&w, "optim.v.b", 1, GX_SHAPE(1), ones, &err);
    gx_st_writer_add_real(&w, "optim.m.h", 1, GX_SHAPE(1), ones, &err);
    int64_t step = 4;
    gx_st_writer_add(&w, "optim.step", GX_ST_I64, 0, NULL, &step, &err);
    gx_st_writer_meta(&w, "optim.kind", "adam", &err);
    uint8_t *buf;
    size_t len;
    CHECK(gx_st_writer_serialize(&w, &buf, &len, &err) == GX_OK);
    gx_st_file f;
    CHECK(gx_st_parse(&f, buf, len, &err) == GX_OK);
    CHECK(gx_optim_state_load(&o, &p, &f, &err) == GX_ERR_NOTFOUND && strstr(err.msg, "optim.v.h"));
    CHECK(o.step == 0);
    int untouched = 1;
    for (int64_t i = 0; i < o.state_len; i++) untouched &= o.state[i] == 0;
    CHECK(untouched);
    gx_st_close(&f);
    free(buf);
    /* Wrong shape of a moment: named with both shapes. */
    gx_st_writer_add_real(&w, "optim.v.h", 1, GX_SHAPE(2), ones, &err);
    CHECK(gx_st_writer_serialize(&w, &buf, &len, &err) == GX_OK);
    CHECK(gx_st_parse(&f, buf, len, &err) == GX_OK);
    CHECK(gx_optim_state_load(&o, &p, &f, &err) == GX_ERR_SHAPE && strstr(err.msg, "optim.v.h") && strstr(err.msg, "[2]"));
    CHECK(o.step == 0);
    gx_st_close(&f);
    free(buf);
    gx_st_writer_free(&w);
    gx_optim_free(&o);
    gx_params_free(&p);
}
