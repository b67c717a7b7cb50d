/*
 * gx_cuda_pool.cu — adaptive average pooling, bilinear resize and nearest x2
 * upsampling and max pooling on the GPU, twin of kernels/gx_pool.c (the same PyTorch index
 * rules; see there). The per-element bodies are in gx_cuda_body.cuh.
 *
 * Forward: one thread per output value. Backward as a gather, one thread
 * per input value summing the outputs that read it in the CPU's order, so
 * there are no atomics and the results do not depend on scheduling.
 */
#include "gx_cuda_impl.cuh"
#include "gx_cuda_body.cuh"

__global__ void gx_cu_adapt_k(const float *x, float *y, int64_t total, int64_t H, int64_t W,
                              int64_t oh, int64_t ow) {
    GX_CU_LOOP(k, total) y[k] = gx_cu_adapt_at(x, k, H, W, oh, ow);
}
__global__ void gx_cu_adapt_bw_k(const float *g, float *gx, int64_t total, int64_t H, int64_t W,
                                 int64_t oh, int64_t ow) {
    GX_CU_LOOP(k, total) gx[k] = gx_cu_adapt_bw_at(g, gx[k], k, H, W, oh, ow);
}
__global__ void gx_cu_bilin_k(const float *x, float *y, int64_t total, int64_t H, int64_t W,
                              int64_t oh, int64_t ow) {
    GX_CU_LOOP(k, total) y[k] = gx_cu_bilin_at(x, k, H, W, oh, ow);
}
__global__ void gx_cu_bilin_bw_k(const float *g, float *gx, int64_t total, int64_t H, int64_t W,
                                 int64_t oh, int64_t ow) {
    GX_CU_LOOP(k, total) gx[k] = gx_cu_bilin_bw_at(g, gx[k], k, H, W, oh, ow);
}
__global__ void gx_cu_near_k(const float *x, float *y, int64_t total, int64_t W) {
    GX_CU_LOOP(k, total) y[k] = gx_cu_near_at(x, k, W);
}
__global__ void gx_cu_near_bw_k(const float *g, float *gx, int64_t total, int64_t W) {
    GX_CU_LOOP(k, total) gx[k] = gx_cu_near_bw_at(g, gx[k], k, W);
}

/* Launch over n elements; the kernels share the (.., H, W, oh, ow) tail. */
#define GX_CU_POOL_LAUNCH(kern, n, ...)                                              \
    do {                                                                             \
        if ((n) <= 0) return;                                                        \
        kern<<<gx_cu_blocks(n), GX_CU_THREADS, 0, s->st>>>(__VA_ARGS__);             \
        GX_CU_CHECK(s);                                                              \
    } while (0)

extern "C" void gx_cu_adaptive_avg_pool_fwd(gx_cuda_stream *s, const float *x, float *y, int64_t P,
                                            int64_t H, int64_t W, int64_t oh, int64_t ow) {
    GX_CU_SKIP(s);
    GX_CU_POOL_LAUNCH(gx_cu_adapt_k, P * oh * ow, x, y, P * oh * ow, H, W, oh, ow);
}
extern "C" void gx_cu_adaptive_avg_pool_bwd(gx_cuda_stream *s, const float *g, float *gx, int64_t P,
                                            int64_t H, int64_t W, int64_t oh, int64_t ow) {
    GX_CU_SKIP(s);
    GX_CU_POOL_LAUNCH(gx_cu_adapt_bw_k, P * H * W, g, gx, P * H * W, H, W, oh, ow);
}
extern "C" void gx_cu_resize_bilinear_fwd(gx_cuda_stream *s, const float *x, float *y, int64_t P,
                                          int64_t H, int64_t W, int64_t oh, int64_t ow) {
    GX_CU_SKIP(s);
    GX_CU_POOL_LAUNCH(gx_cu_bilin_k, P * oh * ow, x, y, P * oh * ow, H, W, oh, ow);
}
extern "C" void gx_cu_resize_bilinear_bwd(gx_cuda_stream *s, const float *g, float *gx, int64_t P,
                                          int64_t H, int64_t W, int64_t oh, int64_t ow) {
    GX_CU_SKIP(s);
    GX_CU_POOL_LAUNCH(gx_cu_bilin_bw_k, P * H * W, g, gx, P * H * W, H, W, oh, ow);
}
extern "C" void gx_cu_upsample_nearest2x_fwd(gx_cuda_stream *s, const float *x, float *y, int64_t P,
                                             int64_t H, int64_t W) {
    GX_CU_SKIP(s);
    GX_CU_POOL_LAUNCH(gx_cu_near_k, P * 4 * H * W, x, y, P * 4 * H * W, W);
}
extern "C" void gx_cu_upsample_nearest2x_bwd(gx_cuda_stream *s, const float *g, float *gx, int64_t P,
                                             int64_t H, int64_t W) {
    GX_CU_SKIP(s);
    GX_CU_POOL_LAUNCH(gx_cu_near_bw_k, P * H * W, g, gx, P * H * W, W);
}

/* ---------------------------------------------------------- max pool */

__global__ void gx_cu_maxpool_k(const float *x, float *y, int64_t total, int64_t H, int64_t W, int64_t oh,
                                int64_t ow, int ks, int st, int pad) {
    GX_CU_LOOP(k, total) {
        const int64_t p = k / (ow * oh);
        y[k] = x[p * H * W + gx_cu_maxpool_arg(x, k, H, W, oh, ow, ks, st, pad)];
    }
}
__global__ void gx_cu_maxpool_bw_k(const float *x, const float *g, float *gx, int64_t total, int64_t H,
                                   int64_t W, int64_t oh, int64_t ow, int ks, int st, int pad) {
    GX_CU_LOOP(k, total) gx[k] = gx_cu_maxpool_bw_at(x, g, gx[k], k, H, W, oh, ow, ks, st, pad);
}

extern "C" void gx_cu_max_pool2d_fwd(gx_cuda_stream *s, const float *x, float *y, int64_t P, int64_t H,
                                     int64_t W, int ks, int stride, int pad) {
    GX_CU_SKIP(s);
    const int64_t oh = (H + 2 * pad - ks) / stride + 1, ow = (W + 2 * pad - ks) / stride + 1;
    GX_CU_POOL_LAUNCH(gx_cu_maxpool_k, P * oh * ow, x, y, P * oh * ow, H, W, oh, ow, ks, stride, pad);
}
extern "C" void gx_cu_max_pool2d_bwd(gx_cuda_stream *s, const float *x, const float *g, float *gx, int64_t P,
                                     int64_t H, int64_t W, int ks, int stride, int pad) {
    GX_CU_SKIP(s);
    const int64_t oh = (H + 2 * pad - ks) / stride + 1, ow = (W + 2 * pad - ks) / stride + 1;
    GX_CU_POOL_LAUNCH(gx_cu_maxpool_bw_k, P * H * W, x, g, gx, P * H * W, H, W, oh, ow, ks, stride, pad);
}
