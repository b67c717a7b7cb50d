/*
 * gx_cuda_optim.cu — the optimisers' per-tensor update on the GPU, twin of
 * gx_adam_update / gx_sgd_update in kernels/gx_optim.c: one thread per
 * element, arithmetic in double rounded once (bodies in gx_cuda_body.cuh).
 * The step counting, per-group learning rates and which tensors are trained
 * stay on the host (gx_optim), which calls this per parameter.
 * Gradient clipping's global norm (gx_clip_grad_norm) is here too: it never
 * leaves the device (the scaling kernels read it), so clipping costs no sync.
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
    GX_CU_SKIP(s);
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

/* ------------------------------------------------------------ clipping */

/* gx_clip_grad_norm's sum of squares: one block per GX_CU_CHUNK elements
 * of each tensor (threads at fixed strides, then gx_cu_block_sum), every
 * tensor's partials at its own offset of part; one thread then adds all
 * partials in order. The result is the same bits on every run; it differs
 * from the CPU's serial double sum only in the order of the double adds. */
__global__ void gx_cu_sumsq_k(const float *g, int64_t n, double *part) {
    __shared__ double sh[32];
    const int64_t nch = (n + GX_CU_CHUNK - 1) / GX_CU_CHUNK;
    for (int64_t ch = blockIdx.x; ch < nch; ch += gridDim.x) {
        const double v = gx_cu_block_sum(gx_cu_chunk_part(g, n, ch, threadIdx.x, blockDim.x, 1), sh);
        if (threadIdx.x == 0) part[ch] = v;
    }
}

__global__ void gx_cu_norm_k(const double *part, int64_t np, double *norm) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double ss = 0;
    for (int64_t i = 0; i < np; i++) ss += part[i];
    norm[0] = sqrt(ss);
}

/* Reads the norm on the device, so the host never waits for it. */
__global__ void gx_cu_clip_scale_k(float *g, int64_t n, const double *norm, double max_norm) {
    const double c = gx_cu_clip_coef(norm[0], max_norm);
    if (c == 1.0) return;
    GX_CU_LOOP(k, n) g[k] = (float)((double)g[k] * c);
}

extern "C" int64_t gx_cu_clip_scratch(int nt, const int64_t *n) {
    int64_t np = 0;
    for (int t = 0; t < nt; t++) np += gx_cu_chunk_count(n[t]);
    return np > 0 ? np : 1;
}

extern "C" void gx_cu_clip_grad_norm(gx_cuda_stream *s, int nt, float *const *g, const int64_t *n,
                                     double max_norm, double *part, double *norm_out) {
    GX_CU_SKIP(s);
    int64_t off = 0;
    for (int t = 0; t < nt; t++) {
        const int64_t nch = gx_cu_chunk_count(n[t]);
        if (nch == 0) continue;
        gx_cu_sumsq_k<<<(unsigned)(nch > 65535 ? 65535 : nch), GX_CU_THREADS, 0, s->st>>>(g[t], n[t], part + off);
        GX_CU_CHECK(s);
        off += nch;
    }
    gx_cu_norm_k<<<1, 32, 0, s->st>>>(part, off, norm_out);
    GX_CU_CHECK(s);
    for (int t = 0; t < nt; t++) {
        if (n[t] <= 0) continue;
        gx_cu_clip_scale_k<<<gx_cu_blocks(n[t]), GX_CU_THREADS, 0, s->st>>>(g[t], n[t], norm_out, max_norm);
        GX_CU_CHECK(s);
    }
}
