/*
 * dispatch_core.c — the device plumbing on a real GPU: transfers and their
 * gradients (the same checks as tests/unit/test_device.c on the emulated
 * exec), and parameters uploaded once and read by an op.
 */
#include "dispatch_util.h"

#include <string.h>

GX_TEST(dispatch_transfer_round_trip) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    ctx.cuda = &g.exec;
    ctx.grad_enabled = 1;
    gx_rng rng;
    gx_rng_init(&rng, 3);
    gx_tensor *x = gx_tensor_new_host(&ctx, 2, GX_SHAPE(33, 7));
    gx_rng_fill_normal(&rng, x->data, x->numel, 0, 1);
    x->requires_grad = 1;
    gx_tensor *d = gx_to_device(&ctx, x);
    gx_tensor *h = gx_to_host(&ctx, d);
    CHECK(d->device == GX_DEVICE_CUDA && h->device == GX_DEVICE_CPU);
    CHECK(memcmp(h->data, x->data, (size_t)x->numel * sizeof(gx_real)) == 0);
    gx_real *seed = gx_ctx_alloc(&ctx, (size_t)x->numel * sizeof(gx_real));
    gx_rng_fill_uniform(&rng, seed, x->numel, -1, 1);
    gx_backward(&ctx, h, seed);
    CHECK(x->grad && memcmp(x->grad, seed, (size_t)x->numel * sizeof(gx_real)) == 0);
    gx_err err;
    CHECK_MSG(gx_cuda_exec_sync(&g.exec, &err) == GX_OK, "%s", err.msg);
    gx_ctx_free(&ctx);
    gx_gpu_close(&g);
}

GX_TEST(dispatch_params_upload_once) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    gx_params p;
    gx_params_init(&p);
    gx_tensor *w = gx_params_add(&p, "w", 2, GX_SHAPE(64, 65), GX_PARAM_DECAY);
    gx_rng rng;
    gx_rng_init(&rng, 4);
    gx_rng_fill_normal(&rng, w->data, w->numel, 0, 1);
    gx_err err;
    CHECK_MSG(gx_params_to_cuda(&p, &g.exec, &err) == GX_OK, "%s", err.msg);
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    ctx.cuda = &g.exec;
    gx_tensor *h = gx_to_host(&ctx, w);
    CHECK(memcmp(h->data, p.items[0]->host_data, (size_t)w->numel * sizeof(gx_real)) == 0);
    CHECK(gx_cuda_exec_sync(&g.exec, &err) == GX_OK);
    gx_ctx_free(&ctx);
    gx_params_free(&p);
    CHECK_MSG(gx_gpu_leaked(&g) == 0, "%zu bytes still out of the pool", gx_gpu_leaked(&g));
    gx_gpu_close(&g);
}
