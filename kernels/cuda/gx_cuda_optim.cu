/*
 * gx_cuda_optim.cu — the optimisers' per-tensor update on the GPU, twin of
 * gx_adam_update / gx_sgd_update in kernels/gx_optim.c: one thread per
 * element, arithmetic in double rounded once (bodies in gx_cuda_body.cuh).
 * The step counting, per-group learning rates and which tensors are trained
 * stay on the host (gx_optim), which calls this per parameter.
 */
#include "gx_cuda_impl.cuh"
#include "gx_cuda_body.cuh"

__global__ void gx_cu_adam_k(float *x, const float *g, float *m, float *v, int64_t n, double b1, double b2,
                             double eps, double step_size, double bc2_sqrt, double shrink, double l2) {
    GX_CU_LOOP(k, n) gx_cu_adam_at(x, g, m, v, k, b1, b2, eps, step_size, bc2_sqrt, shrink, l2);
}

__global__ void gx_cu_sgd_k(float *x, const float *g, float *buf, int64_t n, double mu, int nesterov, int first,
                            double lr, double wd) {
    GX_CU_LOOP(k, n) gx_cu_sgd_at(x, g, buf, k, mu, nesterov, first, lr, wd);
}

extern "C" void gx_cu_optim_update(gx_cuda_stream *s, const gx_optim_cfg *c, float *x, const float *g,
                                   float *state, int64_t n, int64_t t, double lr, double wd) {
    if (n <= 0) return;
    if (c->kind == GX_OPT_SGD) {
        gx_cu_sgd_k<<<gx_cu_blocks(n), GX_CU_THREADS, 0, s->st>>>(x, g, c->momentum != 0 ? state : NULL, n,
                                                                  c->momentum, c->nesterov, t == 1, lr, wd);
    } else {
        const gx_cu_adam_sc sc = gx_cu_adam_scalars(c, t, lr, wd);
        gx_cu_adam_k<<<gx_cu_blocks(n), GX_CU_THREADS, 0, s->st>>>(x, g, state, state + n, n, c->beta1, c->beta2,
                                                                   c->eps, sc.step_size, sc.bc2_sqrt, sc.shrink,
                                                                   sc.l2);
    }
    GX_CU_CHECK(s);
}
