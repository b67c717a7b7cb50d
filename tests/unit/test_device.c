/*
 * test_device.c — the device plumbing of kernels/gx_device.c on an emulated
 * exec (its "device" memory is host memory from a pool over malloc, copies
 * are memcpy): placement of a ctx's tensors, gradients and the backward
 * seed, the transfer ops and the gradients that cross them, parameters
 * moved to the pool and back, and a pool that refuses. The ops themselves
 * need a GPU (tests/cuda/dispatch_*.c).
 */
#include "gx_test.h"

#include "gx_cuda.h"
#include <math.h>
#include <string.h>

typedef struct {
    gx_cuda_pool *pool;
    gx_cuda_exec exec;
    gx_ctx ctx;
} dev_fixture;

static void dev_open(gx_test_state *T, dev_fixture *f, size_t limit) {
    gx_cuda_backend be = gx_cuda_host_backend();
    gx_err err;
    CHECK(gx_cuda_pool_create(&be, limit, &f->pool, &err) == GX_OK);
    gx_cuda_exec_init_emulated(&f->exec, f->pool);
    gx_ctx_init(&f->ctx, 1 << 20);
    f->ctx.cuda = &f->exec;
}

static void dev_close(gx_test_state *T, dev_fixture *f) {
    gx_ctx_free(&f->ctx);
    gx_cuda_exec_free(&f->exec);
    CHECK_MSG(gx_cuda_pool_in_use(f->pool) == 0, "%zu bytes still out", gx_cuda_pool_in_use(f->pool));
    gx_cuda_pool_destroy(f->pool);
}

GX_TEST(device_ctx_places_new_tensors_on_the_device) {
    dev_fixture f;
    dev_open(T, &f, 0);
    size_t before = gx_cuda_pool_in_use(f.pool);
    gx_tensor *a = gx_tensor_new(&f.ctx, 2, GX_SHAPE(3, 5));
    CHECK(a->device == GX_DEVICE_CUDA && a->numel == 15);
    CHECK(gx_cuda_pool_in_use(f.pool) > before);     /* from the pool, not the host arena */
    gx_tensor *z = gx_tensor_zeros(&f.ctx, 1, GX_SHAPE(7));
    for (int i = 0; i < 7; i++) CHECK(z->data[i] == 0);
    const gx_real src[4] = { 1.5f, -2, 3, 4.25f };
    gx_tensor *u = gx_tensor_from(&f.ctx, 2, GX_SHAPE(2, 2), src);
    CHECK(u->device == GX_DEVICE_CUDA && memcmp(u->data, src, sizeof src) == 0);
    gx_tensor *s = gx_tensor_scalar(&f.ctx, 0.75f);
    CHECK(s->device == GX_DEVICE_CUDA && s->data[0] == 0.75f);
    gx_tensor *h = gx_tensor_new_host(&f.ctx, 1, GX_SHAPE(3));
    CHECK(h->device == GX_DEVICE_CPU);
    CHECK(gx_tensor_like(&f.ctx, h)->device == GX_DEVICE_CUDA);  /* the ctx decides */
    /* A reset keeps the high-water block for the next batch, and the same
     * allocations fit again without growing the pool. */
    size_t reserved = gx_cuda_pool_reserved(f.pool);
    gx_ctx_reset(&f.ctx);
    gx_tensor_new(&f.ctx, 2, GX_SHAPE(3, 5));
    gx_tensor_zeros(&f.ctx, 1, GX_SHAPE(7));
    CHECK(gx_cuda_pool_reserved(f.pool) == reserved);
    gx_err err;
    CHECK(gx_cuda_exec_sync(&f.exec, &err) == GX_OK);
    dev_close(T, &f);
}

GX_TEST(device_transfers_carry_values_and_gradients_both_ways) {
    dev_fixture f;
    dev_open(T, &f, 0);
    f.ctx.grad_enabled = 1;
    gx_rng rng;
    gx_rng_init(&rng, 7);
    gx_tensor *x = gx_tensor_new_host(&f.ctx, 2, GX_SHAPE(4, 3));
    gx_rng_fill_normal(&rng, x->data, x->numel, 0, 1);
    x->requires_grad = 1;
    gx_tensor *d = gx_to_device(&f.ctx, x);
    CHECK(d->device == GX_DEVICE_CUDA && d->requires_grad);
    CHECK(memcmp(d->data, x->data, 12 * sizeof(gx_real)) == 0);
    CHECK(gx_to_device(&f.ctx, d) == d);             /* already there: no copy */
    gx_tensor *h = gx_to_host(&f.ctx, d);
    CHECK(h->device == GX_DEVICE_CPU && h != x);
    CHECK(memcmp(h->data, x->data, 12 * sizeof(gx_real)) == 0);
    CHECK(gx_to_host(&f.ctx, h) == h);
    /* d/dx of sum(seed * h) is the seed, across both boundaries; twice the
     * seed when x also feeds the loss through a second device copy. */
    gx_real seed[12];
    for (int i = 0; i < 12; i++) seed[i] = (gx_real)(i - 5) / 4;
    gx_backward(&f.ctx, h, seed);
    CHECK(x->grad != NULL);
    for (int i = 0; i < 12; i++) CHECK_NEAR(x->grad[i], seed[i], 0);
    CHECK(d->grad != NULL);                          /* the device copy's gradient, on the device */
    for (int i = 0; i < 12; i++) CHECK_NEAR(d->grad[i], seed[i], 0);
    dev_close(T, &f);
}

GX_TEST(device_backward_seeds_a_device_output) {
    dev_fixture f;
    dev_open(T, &f, 0);
    f.ctx.grad_enabled = 1;
    gx_tensor *t = gx_tensor_zeros(&f.ctx, 1, GX_SHAPE(5));
    t->requires_grad = 1;
    gx_backward(&f.ctx, t, NULL);                    /* NULL seed = ones */
    for (int i = 0; i < 5; i++) CHECK(t->grad[i] == 1);
    const gx_real seed[5] = { 2, -1, 0.5f, 0, 3 };
    gx_backward(&f.ctx, t, seed);                    /* accumulates */
    for (int i = 0; i < 5; i++) CHECK(t->grad[i] == 1 + seed[i]);
    dev_close(T, &f);
}

static void fill_params(gx_params *p) {
    gx_tensor *w = gx_params_add(p, "layer.weight", 2, GX_SHAPE(3, 4), GX_PARAM_DECAY);
    gx_tensor *m = gx_params_add(p, "bn.running_mean", 1, GX_SHAPE(4), GX_PARAM_BUFFER);
    for (int i = 0; i < 12; i++) w->data[i] = (gx_real)i / 8;
    for (int i = 0; i < 4; i++) m->data[i] = (gx_real)-i;
}

GX_TEST(device_params_move_to_the_pool_and_back) {
    dev_fixture f;
    dev_open(T, &f, 0);
    gx_params p;
    gx_params_init(&p);
    fill_params(&p);
    gx_real *host_w = p.items[0]->t.data, *host_g = p.items[0]->t.grad;
    gx_err err;
    CHECK(gx_params_to_cuda(&p, &f.exec, &err) == GX_OK);
    CHECK(p.cuda == &f.exec);
    gx_param *w = p.items[0], *m = p.items[1];
    CHECK(w->t.device == GX_DEVICE_CUDA && m->t.device == GX_DEVICE_CUDA);
    CHECK(w->host_data == host_w && w->t.data != host_w && w->host_grad == host_g);
    CHECK(m->host_grad == NULL && m->t.grad == NULL);   /* buffers have no gradient */
    CHECK(memcmp(w->t.data, host_w, 12 * sizeof(gx_real)) == 0);
    for (int i = 0; i < 12; i++) CHECK(w->t.grad[i] == 0);
    CHECK(gx_params_to_cuda(&p, &f.exec, &err) == GX_ERR_INVALID);   /* twice */
    CHECK(strstr(err.msg, "already") != NULL);
    /* What the device computes reaches the host copies on request only. */
    w->t.data[5] = 42;
    w->t.grad[2] = -3;
    CHECK(host_w[5] != 42);
    CHECK(gx_params_sync_host(&p, &err) == GX_OK);
    CHECK(host_w[5] == 42 && host_g[2] == -3);
    /* A trainer's partial accumulation group scales the device gradients. */
    w->t.grad[3] = 8;
    gx_params_scale_grad(&p, 0.25);
    CHECK(w->t.grad[2] == -0.75 && w->t.grad[3] == 2 && host_g[3] != 2);
    gx_params_zero_grad(&p);
    CHECK(w->t.grad[2] == 0);
    /* A host edit of a buffer (the trainer's colour statistics) goes up on
     * request, over whatever the device held. */
    m->host_data[1] = 7;
    w->host_data[0] = -1;
    CHECK(m->t.data[1] != 7);
    CHECK(gx_params_sync_device(&p, &err) == GX_OK);
    CHECK(m->t.data[1] == 7 && w->t.data[0] == -1 && w->t.data[5] == 42);
    CHECK(gx_cuda_pool_in_use(f.pool) > 0);
    gx_params_free(&p);                               /* blocks back to the pool */
    CHECK(gx_cuda_pool_in_use(f.pool) == 0);
    dev_close(T, &f);
}

GX_TEST(device_params_refused_by_the_pool_stay_on_the_host) {
    dev_fixture f;
    /* Room for a block or two: some parameter's block is refused (which one
     * depends on the pool's slab carving) and the message names it. */
    dev_open(T, &f, 2 * GX_CUDA_MIN_CLASS);
    gx_params p;
    gx_params_init(&p);
    fill_params(&p);
    gx_params_add(&p, "big", 1, GX_SHAPE(4096), 0);
    gx_real *host_w = p.items[0]->t.data;
    gx_err err;
    CHECK(gx_params_to_cuda(&p, &f.exec, &err) == GX_ERR_NOMEM);
    CHECK_MSG(strstr(err.msg, "refused") && (strstr(err.msg, " for big") || strstr(err.msg, " for bn.running_mean") ||
                                             strstr(err.msg, " for layer.weight")), "msg = '%s'", err.msg);
    CHECK(p.cuda == NULL && p.items[0]->t.device == GX_DEVICE_CPU && p.items[0]->t.data == host_w);
    CHECK(p.items[0]->t.data[3] == (gx_real)3 / 8);
    CHECK(gx_cuda_pool_in_use(f.pool) == 0);
    gx_params_free(&p);
    dev_close(T, &f);
}

GX_TEST(device_exec_without_a_gpu_says_why) {
    char why[160];
    if (gx_cuda_probe(why, sizeof why) > 0) return;  /* a GPU: covered by test_cuda_dispatch */
    gx_cuda_backend be = gx_cuda_host_backend();
    gx_cuda_pool *pool;
    gx_err err = { "" };
    CHECK(gx_cuda_pool_create(&be, 0, &pool, &err) == GX_OK);
    gx_cuda_exec e;
    CHECK(gx_cuda_exec_init(&e, pool, 0, 0, &err) != GX_OK);
    CHECK_MSG(strstr(err.msg, "gx_cuda_stream_create") != NULL, "msg = '%s'", err.msg);
    gx_cuda_pool_destroy(pool);
}

/* On the CPU gx_to_host_scalars reads each value where it is (no op runs),
 * NaN for an absent one. */
GX_TEST(device_to_host_scalars_on_the_cpu) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    gx_tensor *a = gx_tensor_scalar(&ctx, 2.5), *b = gx_tensor_new(&ctx, 1, GX_SHAPE(1));
    b->data[0] = -4;
    int64_t nodes = ctx.n_nodes;
    double v[3];
    gx_to_host_scalars(&ctx, 3, (gx_tensor *[]){ b, NULL, a }, v);
    CHECK(v[0] == -4 && isnan(v[1]) && v[2] == 2.5);
    CHECK(ctx.n_nodes == nodes);
    gx_ctx_free(&ctx);
}
