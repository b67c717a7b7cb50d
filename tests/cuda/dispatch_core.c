/*
 * dispatch_core.c — the device plumbing on a real GPU: transfers and their
 * gradients (the same checks as tests/unit/test_device.c on the emulated
 * exec), and parameters uploaded once and read by an op; on the host
 * emulation, that its guard makes a host read of device memory fault.
 */
#include "dispatch_util.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* A loss's terms read in one transfer: device and host values in their
 * places, NaN for an absent term, nothing left on the tape. */
GX_TEST(dispatch_to_host_scalars_one_transfer) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    ctx.cuda = &g.exec;
    ctx.grad_enabled = 1;
    gx_tensor *x = gx_tensor_new_host(&ctx, 1, GX_SHAPE(3));
    x->data[0] = 1.5f; x->data[1] = -2; x->data[2] = 4;
    x->requires_grad = 1;
    gx_tensor *d = gx_to_device(&ctx, x);
    gx_tensor *sum = gx_sum_all(&ctx, d), *mean = gx_mean_all(&ctx, d);
    gx_tensor *host = gx_tensor_new_host(&ctx, 0, NULL);
    host->data[0] = 7;
    int64_t nodes = ctx.n_nodes;
    double v[4] = { 0, 0, 0, 0 };
    gx_to_host_scalars(&ctx, 4, (gx_tensor *[]){ mean, NULL, host, sum }, v);
    CHECK_NEAR(v[0], 3.5 / 3, 1e-6);
    CHECK(isnan(v[1]));
    CHECK(v[2] == 7);
    CHECK_NEAR(v[3], 3.5, 1e-6);
    CHECK(ctx.n_nodes == nodes && ctx.grad_enabled == 1);   /* not recorded; tape mode restored */
    gx_to_host_scalars(&ctx, 1, &sum, v);                    /* a single value: no concat */
    CHECK_NEAR(v[0], 3.5, 1e-6);
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

/* A forked child reads d's first element on the host and must die of it. */
static int host_read_faults(const gx_tensor *d) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        /* No core file, and the default action even under ASan (whose
         * handler would exit with a report instead of the signal). */
        struct rlimit none = { 0, 0 };
        setrlimit(RLIMIT_CORE, &none);
        signal(SIGSEGV, SIG_DFL);
        volatile gx_real v = d->data[0];
        (void)v;
        _exit(0);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) return -1;
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV;
}

/* The trap this guards against: in the emulation "device" memory is host
 * memory, so host code reading t->data of a device tensor would work here
 * and crash on a GPU; tests/cuda/emu keeps device slabs PROT_NONE outside
 * emulated device code. Only on the emulation with its guard on (whether a
 * host read of cudaMalloc memory faults on a GPU depends on the platform). */
GX_TEST(dispatch_emu_guard_host_read_faults) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    char why[160] = "";
    gx_cuda_probe(why, sizeof why);
    const char *guard = getenv("GX_EMU_GUARD");
    if (!strstr(why, "emulated") || (guard && strcmp(guard, "0") == 0)) {
        printf("%s: skipped: not the guarded host emulation (%s)\n", T->name, why);
        CHECK(why[0] != 0);
        gx_gpu_close(&g);
        return;
    }
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    ctx.cuda = &g.exec;
    gx_tensor *x = gx_tensor_new_host(&ctx, 1, GX_SHAPE(300));
    for (int64_t i = 0; i < x->numel; i++) x->data[i] = (gx_real)(i - 150);
    gx_tensor *d = gx_to_device(&ctx, x);
    CHECK_MSG(host_read_faults(d) == 1, "a host read of an uploaded tensor did not fault");
    /* A launch opens device memory and must close it again. */
    gx_tensor *r = gx_relu(&ctx, d);
    CHECK(r->device == GX_DEVICE_CUDA);
    CHECK_MSG(host_read_faults(r) == 1, "a host read of an op's output did not fault");
    /* The right way still works. */
    gx_tensor *h = gx_to_host(&ctx, r);
    CHECK(h->data[0] == 0 && h->data[299] == 149);
    gx_err err;
    CHECK_MSG(gx_cuda_exec_sync(&g.exec, &err) == GX_OK, "%s", err.msg);
    gx_ctx_free(&ctx);
    gx_gpu_close(&g);
}
