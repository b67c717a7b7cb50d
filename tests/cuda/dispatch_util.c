/*
 * dispatch_util.c — see dispatch_util.h.
 */
#include "dispatch_util.h"

#include <stdlib.h>
#include <string.h>

int gx_gpu_open(gx_test_state *T, gx_gpu_env *g) {
    memset(g, 0, sizeof *g);
    char why[160];
    if (gx_cuda_probe(why, sizeof why) <= 0) {
        printf("%s: skipped: no GPU (%s)\n", T->name, why);
        /* The one thing checkable here: the probe says why (the runner
         * counts a test without checks as a failure). */
        CHECK_MSG(why[0] != 0, "the probe gave no reason");
        return 0;
    }
    gx_cuda_backend be;
    gx_err err;
    gx_status st = gx_cuda_device_backend(0, &be, &err);
    if (st == GX_OK) st = gx_cuda_pool_create(&be, 0, &g->pool, &err);
    if (st == GX_OK) st = gx_cuda_exec_init(&g->exec, g->pool, 0, 0, &err);
    CHECK_MSG(st == GX_OK, "device setup: %s", err.msg);
    if (st != GX_OK) {
        if (g->pool) gx_cuda_pool_destroy(g->pool);
        memset(g, 0, sizeof *g);
        return 0;
    }
    return 1;
}

size_t gx_gpu_leaked(const gx_gpu_env *g) {
    return gx_cuda_pool_in_use(g->pool) - gx_cuda_arena_capacity(&g->exec.arena);
}

void gx_gpu_close(gx_gpu_env *g) {
    gx_cuda_exec_free(&g->exec);
    if (g->pool) gx_cuda_pool_destroy(g->pool);
    memset(g, 0, sizeof *g);
}

/* The inputs of one side: host values (the same stream on both sides). */
static void make_inputs(gx_ctx *ctx, int n_in, const gx_gpu_input *in, gx_tensor **out, gx_real **vals) {
    for (int i = 0; i < n_in; i++) {
        out[i] = gx_tensor_from(ctx, in[i].ndim, in[i].shape, vals[i]);
        out[i]->requires_grad = (uint8_t)(in[i].grad != 0);
    }
}

int gx_gpu_check(gx_test_state *T, gx_gpu_env *g, const char *label, gx_gpu_fn fn, void *arg,
                 int n_in, const gx_gpu_input *in, gx_gpu_tol tol) {
    GX_ASSERT(n_in >= 0 && n_in <= GX_NODE_MAX_IN);
    int ok = 1;
    gx_ctx c, d;
    gx_ctx_init(&c, 16 << 20);
    gx_ctx_init(&d, 16 << 20);
    d.cuda = &g->exec;
    c.grad_enabled = d.grad_enabled = tol.backward;

    gx_rng rng;
    gx_rng_init(&rng, 0x5eed);
    gx_real *vals[GX_NODE_MAX_IN];
    for (int i = 0; i < n_in; i++) {
        int64_t n = gx_shape_numel(in[i].ndim, in[i].shape);
        vals[i] = gx_ctx_alloc(&c, (size_t)(n ? n : 1) * sizeof(gx_real));
        gx_rng_fill_uniform(&rng, vals[i], n, in[i].lo, in[i].hi);
    }
    gx_tensor *xc[GX_NODE_MAX_IN], *xd[GX_NODE_MAX_IN];
    make_inputs(&c, n_in, in, xc, vals);
    make_inputs(&d, n_in, in, xd, vals);

    gx_tensor *yc = fn(&c, xc, arg), *yd = fn(&d, xd, arg);
    CHECK_MSG(yd->device == GX_DEVICE_CUDA, "%s: the output is not a device tensor", label);
    CHECK_MSG(gx_tensor_same_shape(yc, yd), "%s: output shapes differ", label);
    gx_tensor *yh = gx_to_host(&d, yd);
    gx_err err;
    gx_status st = gx_cuda_exec_sync(&g->exec, &err);
    CHECK_MSG(st == GX_OK, "%s: device error: %s", label, err.msg);
    char what[200];
    snprintf(what, sizeof what, "%s: output", label);
    ok &= st == GX_OK && gx_test_allclose(T, what, yh->data, yc->data, yc->numel, tol.atol, tol.rtol);

    if (tol.backward && yc->requires_grad) {
        CHECK_MSG(yd->requires_grad, "%s: the device op recorded no backward", label);
        gx_real *seed = gx_ctx_alloc(&c, (size_t)yc->numel * sizeof(gx_real));
        gx_rng_fill_uniform(&rng, seed, yc->numel, -1, 1);
        gx_backward(&c, yc, seed);
        if (yd->requires_grad) gx_backward(&d, yd, seed);
        for (int i = 0; i < n_in; i++) {
            if (!in[i].grad) continue;
            int64_t n = xc[i]->numel;
            gx_real *gd = gx_ctx_alloc(&c, (size_t)(n ? n : 1) * sizeof(gx_real));
            memset(gd, 0, (size_t)n * sizeof(gx_real));
            if (xd[i]->grad) gx_cuda_exec_download(&g->exec, gd, xd[i]->grad, (size_t)n * sizeof(gx_real));
            st = gx_cuda_exec_sync(&g->exec, &err);
            CHECK_MSG(st == GX_OK, "%s: device error in backward: %s", label, err.msg);
            CHECK_MSG(xc[i]->grad != NULL && xd[i]->grad != NULL, "%s: input %d got no gradient", label, i);
            if (!xc[i]->grad || !xd[i]->grad || st != GX_OK) { ok = 0; continue; }
            snprintf(what, sizeof what, "%s: d/d input %d", label, i);
            ok &= gx_test_allclose(T, what, gd, xc[i]->grad, n, tol.atol, tol.rtol);
        }
    }
    gx_ctx_free(&d);
    gx_ctx_free(&c);
    return ok;
}
