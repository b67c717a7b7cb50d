/*
 * gx_cuda_impl.cuh — private helpers shared by the .cu files of the CUDA
 * backend (the stream struct, error capture, launch geometry).
 */
#ifndef GX_CUDA_IMPL_CUH
#define GX_CUDA_IMPL_CUH

#include "gx_cuda.h"
#include "gx_math.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

struct gx_cuda_stream {
    cudaStream_t   st;
    cublasHandle_t blas;
    int            device;
    int            tf32;
    /* First error since the last sync: launches are asynchronous, so an
     * error is reported at the next sync, naming the launcher that saw it. */
    char           first_err[200];
    int            skip;      /* gx_cuda_stream_fail: launches and copies are no-ops until the sync */
    int            capturing; /* inside gx_cuda_graph_capture: copies and waits are refused */
};

/* First statement of every launcher: nothing runs on a failed stream. */
#define GX_CU_SKIP(s) do { if ((s)->skip) return; } while (0)

/* Records a launch or runtime error (only the first sticks). */
static inline void gx_cu_note(gx_cuda_stream *s, const char *fn, cudaError_t e) {
    if (e == cudaSuccess || s->first_err[0]) return;
    snprintf(s->first_err, sizeof s->first_err, "%s: %s", fn, cudaGetErrorString(e));
}
static inline void gx_cu_note_blas(gx_cuda_stream *s, const char *fn, cublasStatus_t e) {
    if (e == CUBLAS_STATUS_SUCCESS || s->first_err[0]) return;
    snprintf(s->first_err, sizeof s->first_err, "%s: cuBLAS status %d", fn, (int)e);
}
/* After every kernel launch: catches bad launch configurations. */
#define GX_CU_CHECK(s) gx_cu_note((s), __func__, cudaGetLastError())

#define GX_CU_THREADS 256
/* Grid for n independent elements (grid-stride loops cover the rest). */
static inline unsigned gx_cu_blocks(int64_t n) {
    int64_t b = (n + GX_CU_THREADS - 1) / GX_CU_THREADS;
    if (b < 1) b = 1;
    return (unsigned)(b > 65535 * 8 ? 65535 * 8 : b);
}
#define GX_CU_LOOP(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (int64_t)gridDim.x * blockDim.x)

/* Sum of v over the block (blockDim.x a multiple of 32, <= 1024); every
 * thread gets the result. sh: 32 doubles of shared memory. */
__device__ __forceinline__ double gx_cu_block_sum(double v, double *sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
    __syncthreads();                       /* sh may still be read from a previous call */
    if (l == 0) sh[w] = v;
    __syncthreads();
    v = l < nw ? sh[l] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double gx_cu_block_max(double v, double *sh) {
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
    int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
    __syncthreads();
    if (l == 0) sh[w] = v;
    __syncthreads();
    v = l < nw ? sh[l] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

#endif
