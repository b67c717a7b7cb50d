/*
 * gx_cuda_mem.cu — the CUDA runtime side of the backend: the device probe,
 * the cudaMalloc backend of the pool (kernels/gx_cuda_host.c keeps the
 * bookkeeping), pinned host buffers, streams with their cuBLAS handles and
 * the asynchronous copies.
 */
#include "gx_cuda_impl.cuh"

#include <stdlib.h>
#include <string.h>

extern "C" int gx_cuda_probe(char *why, size_t n) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    const char *r = NULL;
    if (e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice) {
        /* Without libcuda the runtime answers InsufficientDriver; keep the
         * message short and stable for the log line. */
        r = e == cudaErrorNoDevice ? "no device" : "no CUDA driver";
    } else if (e != cudaSuccess) {
        r = cudaGetErrorString(e);
    } else if (count == 0) {
        r = "no device";
    }
    if (r) {
        cudaGetLastError();                /* clear the sticky error */
        if (why && n) snprintf(why, n, "%s", r);
        return 0;
    }
    if (why && n) snprintf(why, n, "%d device(s)", count);
    return count;
}

/* ---------------------------------------------------------------- pool */

static void *gx_cu_dev_alloc(void *user, size_t bytes) {
    int dev = (int)(intptr_t)user;
    void *p = NULL;
    if (cudaSetDevice(dev) != cudaSuccess || cudaMalloc(&p, bytes) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return p;
}

static void gx_cu_dev_free(void *user, void *p) {
    cudaSetDevice((int)(intptr_t)user);
    cudaFree(p);
}

extern "C" gx_status gx_cuda_device_backend(int device, gx_cuda_backend *out, gx_err *err) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || device < 0 || device >= count) {
        cudaGetLastError();
        return gx_err_set(err, GX_ERR_INVALID, "gx_cuda_device_backend: device %d not available (%d found)",
                          device, count);
    }
    out->alloc = gx_cu_dev_alloc;
    out->free = gx_cu_dev_free;
    out->user = (void *)(intptr_t)device;
    return GX_OK;
}

extern "C" gx_status gx_cuda_host_alloc(size_t bytes, void **out, gx_err *err) {
    *out = NULL;
    cudaError_t e = cudaHostAlloc(out, bytes, cudaHostAllocDefault);
    if (e != cudaSuccess) {
        cudaGetLastError();
        *out = NULL;
        return gx_err_set(err, GX_ERR_NOMEM, "gx_cuda_host_alloc: %zu pinned bytes: %s", bytes,
                          cudaGetErrorString(e));
    }
    return GX_OK;
}

extern "C" void gx_cuda_host_free(void *p) {
    if (p) cudaFreeHost(p);
}

/* ------------------------------------------------------------- streams */

extern "C" gx_status gx_cuda_stream_create(int device, int tf32, gx_cuda_stream **out, gx_err *err) {
    *out = NULL;
    gx_cuda_stream *s = (gx_cuda_stream *)calloc(1, sizeof *s);
    if (!s) return gx_err_set(err, GX_ERR_NOMEM, "gx_cuda_stream_create: out of host memory");
    s->device = device;
    s->tf32 = tf32;
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&s->st, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        cudaGetLastError();
        free(s);
        return gx_err_set(err, GX_ERR_UNSUPPORTED, "gx_cuda_stream_create: device %d: %s", device,
                          cudaGetErrorString(e));
    }
    cublasStatus_t b = cublasCreate(&s->blas);
    if (b == CUBLAS_STATUS_SUCCESS) b = cublasSetStream(s->blas, s->st);
    /* FP32 exact by default; TF32 tensor cores only when asked for. */
    if (b == CUBLAS_STATUS_SUCCESS)
        b = cublasSetMathMode(s->blas, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_PEDANTIC_MATH);
    if (b != CUBLAS_STATUS_SUCCESS) {
        if (s->blas) cublasDestroy(s->blas);
        cudaStreamDestroy(s->st);
        free(s);
        return gx_err_set(err, GX_ERR_UNSUPPORTED, "gx_cuda_stream_create: cuBLAS status %d", (int)b);
    }
    *out = s;
    return GX_OK;
}

extern "C" void gx_cuda_stream_destroy(gx_cuda_stream *s) {
    if (!s) return;
    cudaStreamSynchronize(s->st);
    cublasDestroy(s->blas);
    cudaStreamDestroy(s->st);
    free(s);
}

/* Inside a capture a copy would bake a host address into the graph and a
 * wait would invalidate the capture: both are refused by name, so the
 * failed capture says which call of the body was not capturable. */
static int gx_cu_refuse_in_capture(gx_cuda_stream *s, const char *what) {
    if (!s->capturing) return 0;
    if (!s->first_err[0])
        snprintf(s->first_err, sizeof s->first_err, "%s inside a CUDA graph capture (not capturable)", what);
    return 1;
}

extern "C" gx_status gx_cuda_stream_sync(gx_cuda_stream *s, gx_err *err) {
    if (gx_cu_refuse_in_capture(s, "a wait for the stream"))
        return gx_err_set(err, GX_ERR_INVALID, "cuda: %s", s->first_err);
    gx_cu_note(s, "gx_cuda_stream_sync", cudaStreamSynchronize(s->st));
    gx_cu_note(s, "gx_cuda_stream_sync", cudaGetLastError());
    if (!s->first_err[0]) return GX_OK;
    gx_status st = gx_err_set(err, GX_ERR_INVALID, "cuda: %s", s->first_err);
    s->first_err[0] = 0;
    return st;
}

extern "C" void gx_cuda_stream_fail(gx_cuda_stream *s, const char *msg) {
    if (!s->first_err[0]) snprintf(s->first_err, sizeof s->first_err, "%s", msg);
    s->skip = 1;
}

extern "C" void gx_cuda_stream_resume(gx_cuda_stream *s) { s->skip = 0; }

extern "C" void gx_cuda_upload(gx_cuda_stream *s, void *dst, const void *src, size_t bytes) {
    GX_CU_SKIP(s);
    if (gx_cu_refuse_in_capture(s, "a host-to-device copy")) return;
    gx_cu_note(s, __func__, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s->st));
}
extern "C" void gx_cuda_download(gx_cuda_stream *s, void *dst, const void *src, size_t bytes) {
    if (s->skip) {
        memset(dst, 0xff, bytes);   /* NaN bytes: the host reads nothing stale */
        return;
    }
    if (gx_cu_refuse_in_capture(s, "a device-to-host copy")) {
        memset(dst, 0xff, bytes);
        return;
    }
    gx_cu_note(s, __func__, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s->st));
}
extern "C" void gx_cuda_memset0(gx_cuda_stream *s, void *dst, size_t bytes) {
    GX_CU_SKIP(s);
    gx_cu_note(s, __func__, cudaMemsetAsync(dst, 0, bytes, s->st));
}

/* -------------------------------------------------------------- graphs */

struct gx_cuda_graph {
    cudaGraphExec_t exec;
};

/* Ends a capture that failed: whatever the stream recorded is dropped, the
 * launch error the body left is the capture's message, and the stream is
 * clean again (no pending error, launches running). */
static gx_status gx_cu_capture_failed(gx_cuda_stream *s, cudaGraph_t g, cudaError_t e, gx_err *err) {
    if (g) cudaGraphDestroy(g);
    cudaGetLastError();
    char why[200];
    snprintf(why, sizeof why, "%s", s->first_err[0] ? s->first_err : cudaGetErrorString(e));
    s->first_err[0] = 0;
    s->skip = 0;
    return gx_err_set(err, GX_ERR_UNSUPPORTED, "gx_cuda_graph_capture: %s", why);
}

extern "C" gx_status gx_cuda_graph_capture(gx_cuda_stream *s, gx_cuda_graph_body body, void *arg,
                                           gx_cuda_graph **out, gx_err *err) {
    *out = NULL;
    if (s->skip || s->first_err[0])
        return gx_err_set(err, GX_ERR_INVALID, "gx_cuda_graph_capture: the stream has an error pending (%s)",
                          s->first_err);
    /* Relaxed: a pool slab's cudaMalloc on this thread during the capture
     * must not invalidate it (the caller warms the arena up first, so it
     * should not happen, but an arena that grows is not an error). */
    cudaError_t e = cudaStreamBeginCapture(s->st, cudaStreamCaptureModeRelaxed);
    if (e != cudaSuccess) return gx_cu_capture_failed(s, NULL, e, err);
    s->capturing = 1;
    body(arg);
    s->capturing = 0;
    cudaGraph_t g = NULL;
    e = cudaStreamEndCapture(s->st, &g);
    if (e != cudaSuccess || s->first_err[0] || s->skip) return gx_cu_capture_failed(s, g, e, err);
    gx_cuda_graph *G = (gx_cuda_graph *)calloc(1, sizeof *G);
    if (!G) {
        cudaGraphDestroy(g);
        return gx_err_set(err, GX_ERR_NOMEM, "gx_cuda_graph_capture: out of host memory");
    }
    e = cudaGraphInstantiate(&G->exec, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        free(G);
        return gx_cu_capture_failed(s, NULL, e, err);
    }
    *out = G;
    return GX_OK;
}

extern "C" void gx_cuda_graph_launch(gx_cuda_stream *s, gx_cuda_graph *g) {
    GX_CU_SKIP(s);
    gx_cu_note(s, __func__, cudaGraphLaunch(g->exec, s->st));
}

extern "C" void gx_cuda_graph_destroy(gx_cuda_graph *g) {
    if (!g) return;
    cudaGraphExecDestroy(g->exec);
    free(g);
}
