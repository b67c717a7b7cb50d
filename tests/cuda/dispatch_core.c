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

/* ------------------------------------------------------------ CUDA graphs */

/* y = relu(2x + 1) on the fixed input x, activations in ctx (rewound
 * before each replay, as galaxyd's slots do). */
typedef struct graph_case {
    gx_ctx    *ctx;
    gx_tensor *x;
    gx_real   *y;              /* where the last run of the body put its output (the
                                  tensor struct is in ctx's arena, which rewinds) */
    int        upload, wait;   /* what a bad body does inside the capture */
} graph_case;

static void graph_case_body(void *arg) {
    graph_case *c = arg;
    if (c->upload) {
        gx_tensor *h = gx_tensor_new_host(c->ctx, 1, GX_SHAPE(4));
        memset(h->data, 0, 4 * sizeof(gx_real));
        gx_to_device(c->ctx, h);
    }
    gx_tensor *y = gx_relu(c->ctx, gx_affine(c->ctx, c->x, 2.0, 1.0));
    c->y = y->data;
    if (c->wait) gx_to_host(c->ctx, y);
}

static void graph_case_values(gx_cuda_exec *e, gx_tensor *x, double shift) {
    gx_real h[257];
    for (int i = 0; i < 257; i++) h[i] = (gx_real)(i - 128 + shift);
    gx_cuda_exec_upload(e, x->data, h, sizeof h);
}

/* Capture records and computes nothing; each replay computes from the
 * input's current values at the captured addresses. */
GX_TEST(dispatch_graph_capture_replay) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    gx_err err;
    gx_cuda_exec in_e, run_e;
    CHECK_MSG(gx_cuda_exec_init_on(&in_e, &g.exec, &err) == GX_OK, "%s", err.msg);
    CHECK_MSG(gx_cuda_exec_init_on(&run_e, &g.exec, &err) == GX_OK, "%s", err.msg);
    gx_ctx in_ctx, ctx;
    gx_ctx_init(&in_ctx, 0);
    gx_ctx_init(&ctx, 0);
    in_ctx.cuda = &in_e;
    ctx.cuda = &run_e;
    gx_tensor *x = gx_tensor_zeros(&in_ctx, 1, GX_SHAPE(257));
    graph_case c = { &ctx, x, NULL, 0, 0 };
    graph_case_body(&c);   /* warm-up: the arena reaches its size */
    CHECK(gx_cuda_exec_sync(&run_e, &err) == GX_OK);
    gx_real *warm_y = c.y;
    gx_ctx_reset(&ctx);
    /* A sentinel where the output will be (a rewound arena allocates as
     * before): the capture must not overwrite it. */
    gx_real seven[257];
    for (int i = 0; i < 257; i++) seven[i] = 7;
    gx_cuda_exec_upload(&run_e, warm_y, seven, sizeof seven);
    graph_case_values(&in_e, x, 0.0);
    gx_cuda_graph *graph = NULL;
    CHECK_MSG(gx_cuda_graph_capture(g.exec.stream, graph_case_body, &c, &graph, &err) == GX_OK, "%s", err.msg);
    CHECK(c.y == warm_y);
    gx_real got[257];
    gx_cuda_exec_download(&run_e, got, c.y, sizeof got);
    CHECK(gx_cuda_exec_sync(&run_e, &err) == GX_OK);
    CHECK_MSG(got[200] == 7 && got[0] == 7, "the capture computed: y[200] = %g", (double)got[200]);
    gx_real *captured = c.y;
    for (int rep = 0; rep < 3; rep++) {
        double shift = rep * 10.5;
        gx_ctx_reset(&ctx);
        graph_case_values(&in_e, x, shift);
        gx_cuda_graph_launch(g.exec.stream, graph);
        gx_cuda_exec_download(&run_e, got, captured, sizeof got);
        CHECK_MSG(gx_cuda_exec_sync(&run_e, &err) == GX_OK, "%s", err.msg);
        CHECK(c.y == captured);   /* the emulation's replay re-ran the body */
        int bad = 0;
        for (int i = 0; i < 257; i++) {
            double v = 2 * (i - 128 + shift) + 1;
            bad += got[i] != (gx_real)(v > 0 ? v : 0);
        }
        CHECK_MSG(bad == 0, "replay %d: %d values wrong", rep, bad);
    }
    gx_cuda_graph_destroy(graph);

    /* Bodies a graph cannot hold fail the capture by name and leave the
     * stream clean and usable. */
    static const char *const why[2] = { "host-to-device copy", "not capturable" };
    for (int bad = 0; bad < 2; bad++) {
        graph_case b = { &ctx, x, NULL, bad == 0, bad == 1 };
        gx_ctx_reset(&ctx);
        graph = NULL;
        CHECK(gx_cuda_graph_capture(g.exec.stream, graph_case_body, &b, &graph, &err) == GX_ERR_UNSUPPORTED);
        CHECK(graph == NULL);
        CHECK_MSG(strstr(err.msg, why[bad]) != NULL, "capture %d: %s", bad, err.msg);
        CHECK_MSG(gx_cuda_stream_sync(g.exec.stream, &err) == GX_OK, "after the failed capture: %s", err.msg);
        /* The refused wait (gx_to_host) is also kept by the exec that ran
         * it, like any transfer error: its next sync reports it once. */
        gx_status kept = gx_cuda_exec_sync(&run_e, &err);
        CHECK(bad == 1 ? kept != GX_OK : kept == GX_OK);
        gx_ctx_reset(&ctx);
        gx_tensor *h = gx_to_host(&ctx, gx_relu(&ctx, x));
        CHECK(gx_cuda_exec_sync(&run_e, &err) == GX_OK && h->data[256] == (gx_real)(128 + 21.0));
    }
    gx_ctx_free(&ctx);
    gx_ctx_free(&in_ctx);
    gx_cuda_exec_free(&run_e);
    gx_cuda_exec_free(&in_e);
    CHECK_MSG(gx_gpu_leaked(&g) == 0, "%zu bytes still out of the pool", gx_gpu_leaked(&g));
    gx_gpu_close(&g);
}

/* gx_cuda_pass (galaxyd's slots, bench_gx_gpu): the capture's warm-up sizes
 * the activations' arena; a body that needs more during the capture than
 * in its eager passes (its addresses would not survive the next rewind) is
 * refused; gx_cuda_pass_verify accepts a pure body and refuses one whose
 * work depends on host state (a graph would replay the capture's value);
 * a freed pass gives its memory back. */
typedef struct pass_case {
    gx_cuda_pass *p;
    gx_tensor *x;
    gx_real *y;
    int64_t n;
    int runs, mode;            /* mode 1: allocate 1 MiB more from the third run on (the
                                  capture); mode 2: shift the output by the run count */
} pass_case;

static void pass_case_body(void *arg) {
    pass_case *c = arg;
    if (c->mode == 1 && c->runs > 1) (void)gx_tensor_new(&c->p->ctx, 1, GX_SHAPE(1 << 18));
    gx_tensor *y = gx_sigmoid(&c->p->ctx, c->x);
    if (c->mode == 2) y = gx_add_scalar(&c->p->ctx, y, (double)c->runs);
    c->y = y->data;
    c->n = y->numel;
    c->runs++;
}

GX_TEST(dispatch_pass_capture_refuses_a_growing_arena) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    gx_err err;
    for (int mode = 0; mode < 3; mode++) {
        gx_cuda_pass p;
        CHECK_MSG(gx_cuda_pass_init(&p, &g.exec, &err) == GX_OK, "%s", err.msg);
        pass_case c = { &p, gx_tensor_zeros(&p.in_ctx, 1, GX_SHAPE(1000)), NULL, 0, 0, mode };
        gx_status s = gx_cuda_pass_capture(&p, pass_case_body, &c, &err);
        if (mode == 1) {
            CHECK(s == GX_ERR_UNSUPPORTED && !p.graph);
            CHECK_MSG(strstr(err.msg, "grew") != NULL, "%s", err.msg);
        } else {
            CHECK_MSG(s == GX_OK && p.graph, "%s", err.msg);
            gx_real *y = c.y;
            s = gx_cuda_pass_verify(&p, 1, &y, &c.n, &err);
            if (mode == 0) {
                CHECK_MSG(s == GX_OK, "%s", err.msg);
                gx_real h[1000];
                gx_cuda_pass_begin(&p);
                gx_cuda_pass_launch(&p);
                gx_cuda_exec_download(&p.in_exec, h, y, sizeof h);
                CHECK_MSG(gx_cuda_exec_sync(&p.in_exec, &err) == GX_OK, "%s", err.msg);
                CHECK(h[0] == (gx_real)0.5 && h[999] == (gx_real)0.5);
            } else {
                CHECK(s == GX_ERR_UNSUPPORTED);
                CHECK_MSG(strstr(err.msg, "differs from the eager pass") != NULL, "%s", err.msg);
            }
        }
        gx_cuda_pass_free(&p);
        CHECK_MSG(gx_gpu_leaked(&g) == 0, "%zu bytes still out of the pool", gx_gpu_leaked(&g));
    }
    gx_gpu_close(&g);
}
