/*
 * dispatch_util.h — the harness of test_cuda_dispatch: an op (or a whole
 * model) reached through the gx API with its inputs on the device, against
 * the same call on the CPU.
 *
 *   static gx_tensor *build(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
 *       return gx_relu(ctx, in[0]);
 *   }
 *   GX_TEST(dispatch_relu) {
 *       gx_gpu_env g;
 *       if (!gx_gpu_open(T, &g)) return;          // prints "...: skipped: no GPU (why)"
 *       gx_gpu_input in[1] = { { 2, GX_SHAPE(4, 5), -1, 1, 1 } };
 *       gx_gpu_check(T, &g, "relu", build, NULL, 1, in, GX_GPU_TOL_EXACT);
 *       gx_gpu_close(&g);
 *   }
 *
 * gx_gpu_check makes the inputs from a seeded stream (the same values on
 * both sides), runs build in a CPU ctx and in a device ctx (ctx->cuda set,
 * inputs uploaded, so every op inside runs through GX_CUDA_DISPATCH), checks
 * that the device output is a device tensor, compares the outputs, then runs
 * backward on both from the same seed (fixed random weights) and compares
 * the gradient of every input that asks for one. Without a GPU gx_gpu_open
 * prints one "skipped: no GPU" line per test and returns 0.
 */
#ifndef DISPATCH_UTIL_H
#define DISPATCH_UTIL_H

#include "gx_test.h"
#include "gx_cuda.h"

typedef struct gx_gpu_env {
    gx_cuda_pool *pool;
    gx_cuda_exec  exec;
} gx_gpu_env;

typedef struct gx_gpu_input {
    int            ndim;
    const int64_t *shape;      /* e.g. GX_SHAPE(4, 5) */
    double  lo, hi;            /* uniform values in [lo, hi) */
    int     grad;              /* 1: compare this input's gradient */
} gx_gpu_input;

/* Tolerances: |gpu - cpu| <= atol + rtol |cpu|, outputs and gradients. */
typedef struct gx_gpu_tol { double atol, rtol; int backward; } gx_gpu_tol;
#define GX_GPU_TOL_EXACT ((gx_gpu_tol){ 0, 0, 1 })        /* same math, same rounding */
#define GX_GPU_TOL_ELEM  ((gx_gpu_tol){ 1e-6, 1e-5, 1 })  /* libm vs CUDA math */
#define GX_GPU_TOL_GEMM  ((gx_gpu_tol){ 1e-5, 1e-4, 1 })  /* cuBLAS summation order */
#define GX_GPU_TOL_MODEL ((gx_gpu_tol){ 1e-4, 1e-3, 0 })  /* a whole forward (issue: 1e-3 relative) */

typedef gx_tensor *(*gx_gpu_fn)(gx_ctx *ctx, gx_tensor *const *in, void *arg);

int  gx_gpu_open(gx_test_state *T, gx_gpu_env *g);
/* Pool bytes out beyond the exec's own arena (which keeps its coalesced
 * block for the next ctx): 0 once every parameter and optimiser block is
 * back. */
size_t gx_gpu_leaked(const gx_gpu_env *g);
void gx_gpu_close(gx_gpu_env *g);
/* Returns 1 when everything agreed. n_in <= GX_NODE_MAX_IN. */
int  gx_gpu_check(gx_test_state *T, gx_gpu_env *g, const char *label, gx_gpu_fn fn, void *arg,
                  int n_in, const gx_gpu_input *in, gx_gpu_tol tol);

#endif
