/*
 * gx_cuda.h — the CUDA backend's public API (plain C; compiles without nvcc).
 *
 * Three layers:
 *  1. Discovery: gx_cuda_probe (how many usable devices, or why none) and
 *     gx_device_select (the --device flag's answer, with the log line that
 *     says which backend runs and why). Present in every build: a CPU-only
 *     build (CUDA=0, or the f64 library) answers "built without CUDA".
 *  2. Memory: one pool per device (cudaMalloc'd slabs carved into size
 *     classes, no managed memory), a device arena per worker (bump allocator
 *     reset per batch, like gx_arena), pinned host staging buffers, one
 *     stream (+ cuBLAS handle) per worker. The pool's and the arena's
 *     bookkeeping is host-side C over an allocator callback
 *     (kernels/gx_cuda_host.c), so it is tested on machines without a GPU.
 *  3. Launchers (only when GX_HAVE_CUDA, i.e. built with nvcc): one per op
 *     family of kernels/gx_*.c, forward and backward, on device pointers,
 *     enqueued on a stream. They do not synchronise and return nothing: the
 *     first launch or cuBLAS error is kept in the stream and reported, naming
 *     the launcher, by gx_cuda_stream_sync. Shapes are the CPU ops' shapes
 *     (see each family's header); backward launchers ACCUMULATE (+=) into
 *     gradient buffers, as the CPU backward functions do.
 *
 * 4. Tensors on the device: gx_cuda_exec (a worker's stream + device
 *    arena), placement through gx_ctx.cuda, transfers, parameters
 *    (kernels/gx_device.c); op dispatch in kernels/cuda/gx_cuda_ops_*.c.
 */
#ifndef GX_CUDA_H
#define GX_CUDA_H

#include "gx.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ discovery */

/* Number of usable CUDA devices; 0 with a reason in why ("no CUDA driver",
 * "no device", "built without CUDA", ...). why may be NULL. */
int gx_cuda_probe(char *why, size_t n);

/* Picks the backend for want = "cpu", "cuda" or "auto" (NULL = "auto").
 * "cuda" and "auto" fall back to the CPU when no device is usable: the
 * binaries must run on machines without a GPU. Writes one log line into log,
 * e.g. "device: cuda:0" or "device: cpu (cuda requested: no CUDA driver)";
 * a fallback from an explicit "cuda" is marked "warning:". Returns
 * GX_ERR_INVALID (naming the value) for anything else. */
gx_status gx_device_select(const char *want, gx_device *out, char *log, size_t n);

/* -------------------------------------------------------- memory: pool */

/* Device memory comes from a backend (cudaMalloc/cudaFree on a GPU; malloc in
 * the host tests). alloc returns NULL on failure. */
typedef struct gx_cuda_backend {
    void *(*alloc)(void *user, size_t bytes);
    void  (*free)(void *user, void *p);
    void *user;
} gx_cuda_backend;

#define GX_CUDA_ALIGN      256              /* every block, like cudaMalloc */
#define GX_CUDA_MIN_CLASS  256              /* smallest size class */
#define GX_CUDA_MAX_CLASS  ((size_t)1 << 26) /* 64 MiB: larger goes direct */
#define GX_CUDA_NCLASS     19               /* 2^8 .. 2^26 */
#define GX_CUDA_SLAB       ((size_t)1 << 26) /* classes below this share slabs */

typedef struct gx_cuda_pool gx_cuda_pool;

/* The power-of-two class a request falls in (0 .. GX_CUDA_NCLASS-1), or -1
 * when it goes straight to the backend (> GX_CUDA_MAX_CLASS, or 0 bytes). */
int    gx_cuda_pool_class(size_t bytes);
/* Bytes a request really occupies: its class size, or the request rounded
 * up to GX_CUDA_ALIGN for direct allocations. */
size_t gx_cuda_pool_block_bytes(size_t bytes);

/* limit_bytes 0 = unlimited; else reserving past it fails with GX_ERR_NOMEM. */
gx_status gx_cuda_pool_create(const gx_cuda_backend *be, size_t limit_bytes,
                              gx_cuda_pool **out, gx_err *err);
/* Returns every slab to the backend (blocks still out become invalid). */
void      gx_cuda_pool_destroy(gx_cuda_pool *p);
/* Thread-safe. NULL when the backend or the limit refuses, after giving
 * back every wholly free slab (of any class) and trying once more. */
void     *gx_cuda_pool_alloc(gx_cuda_pool *p, size_t bytes);
/* bytes must be the size given to gx_cuda_pool_alloc (sized free: the pool
 * keeps no per-block headers in device memory). */
void      gx_cuda_pool_free(gx_cuda_pool *p, void *ptr, size_t bytes);
/* Bytes reserved from the backend / handed out to callers now. */
size_t    gx_cuda_pool_reserved(const gx_cuda_pool *p);
size_t    gx_cuda_pool_in_use(const gx_cuda_pool *p);

/* ------------------------------------------------------- memory: arena */

/* Per-worker bump allocator over pool blocks, reset per batch. Like
 * gx_arena it chains chunks while growing, and the reset coalesces them
 * into one chunk of the high-water size, so a steady loop stops touching
 * the pool after its first batch. Not thread-safe (one per worker). */
typedef struct gx_cuda_arena {
    gx_cuda_pool *pool;
    void  **chunks;           /* pool blocks, newest last */
    size_t *sizes;            /* their requested sizes (for the sized free) */
    int     nchunks, cap;
    size_t  off;              /* bytes used in the newest chunk */
    size_t  used_total;       /* bytes handed out since the last reset */
    size_t  high_water;
    size_t  initial;
} gx_cuda_arena;

void      gx_cuda_arena_init(gx_cuda_arena *a, gx_cuda_pool *pool, size_t initial_bytes);
void      gx_cuda_arena_free(gx_cuda_arena *a);
/* GX_CUDA_ALIGN-aligned; NULL when the pool refuses. */
void     *gx_cuda_arena_alloc(gx_cuda_arena *a, size_t bytes);
/* Frees everything handed out; returns GX_ERR_NOMEM if coalescing failed
 * (the arena is then empty but usable). */
gx_status gx_cuda_arena_reset(gx_cuda_arena *a);
size_t    gx_cuda_arena_capacity(const gx_cuda_arena *a);

/* ------------------------------------------- device runtime (nvcc builds) */

/* The cudaMalloc/cudaFree backend for device `device` (user = NULL). */
gx_status gx_cuda_device_backend(int device, gx_cuda_backend *out, gx_err *err);

/* Pinned (page-locked) host memory for uploads; free with
 * gx_cuda_host_free. */
gx_status gx_cuda_host_alloc(size_t bytes, void **out, gx_err *err);
void      gx_cuda_host_free(void *p);

/* A worker's stream with its cuBLAS handle. tf32: let cuBLAS use TF32
 * tensor cores for FP32 GEMMs (CUBLAS_TF32_TENSOR_OP_MATH); 0 keeps FP32
 * exact (CUBLAS_DEFAULT_MATH, pedantic about reduced precision). */
typedef struct gx_cuda_stream gx_cuda_stream;
gx_status gx_cuda_stream_create(int device, int tf32, gx_cuda_stream **out, gx_err *err);
void      gx_cuda_stream_destroy(gx_cuda_stream *s);
/* Waits for the stream; reports the first error of any launcher since the
 * last sync (naming it), then clears it. */
gx_status gx_cuda_stream_sync(gx_cuda_stream *s, gx_err *err);
/* Records msg as the stream's error (if it has none yet) and makes every
 * later launch and copy on it a no-op until the next sync: what follows a
 * refused device allocation (gx_cuda_ctx_alloc) must not run on the
 * placeholder address it got. Skipped downloads fill their host buffer with
 * NaN bytes (0xff), so host code reads nothing stale. */
void      gx_cuda_stream_fail(gx_cuda_stream *s, const char *msg);
/* Ends that skipping. Not a sync's doing: the waits inside a pass
 * (gx_to_host, the clipping norm's read) must not let launches run on
 * placeholders again, so the stream resumes when the ctx that got them is
 * reset (gx_cuda_device_reset); the error stays for gx_cuda_exec_sync. */
void      gx_cuda_stream_resume(gx_cuda_stream *s);
/* Asynchronous copies on the stream (host memory should be pinned for real
 * overlap). */
void gx_cuda_upload(gx_cuda_stream *s, void *dst_dev, const void *src_host, size_t bytes);
void gx_cuda_download(gx_cuda_stream *s, void *dst_host, const void *src_dev, size_t bytes);
void gx_cuda_memset0(gx_cuda_stream *s, void *dst_dev, size_t bytes);

/* CUDA graphs: a pass recorded once and replayed by one launch, so a small
 * batch pays one launch instead of hundreds (galaxyd's padded batches,
 * daemon/gx_serve_graph.c).
 *
 * gx_cuda_graph_capture runs body(arg) with the stream capturing
 * (cudaStreamCaptureModeRelaxed): its launches, memsets and device-to-device
 * work are recorded, not run. The body must be a pure function of device
 * memory: no host-to-device or device-to-host copy (the graph would replay
 * whatever the host buffer held at capture) and no wait for the stream
 * (gx_to_host, a sync); either fails the capture with a message naming it.
 * Every address the body touches is baked into the graph: the caller keeps
 * its inputs, outputs and activations where they were (an arena that is not
 * reset into other hands) for the graph's lifetime. A failed capture leaves
 * the stream usable and without a pending error; *out is NULL.
 * gx_cuda_graph_launch enqueues one replay on the stream (errors at the next
 * sync, as for any launch). Builds without CUDA answer GX_ERR_UNSUPPORTED.
 *
 * The host emulation (tests/cuda/emu) records nothing: it skips the body's
 * launches during the capture (so nothing is computed, as on a GPU) and
 * replays by running body(arg) again, checking that it makes the same
 * number of launches; host code that would make a different graph on
 * replay, or read a stale address, shows up as a wrong answer or an error
 * in the tests. */
typedef struct gx_cuda_graph gx_cuda_graph;
typedef void (*gx_cuda_graph_body)(void *arg);
gx_status gx_cuda_graph_capture(gx_cuda_stream *s, gx_cuda_graph_body body, void *arg, gx_cuda_graph **out,
                                gx_err *err);
void      gx_cuda_graph_launch(gx_cuda_stream *s, gx_cuda_graph *g);
void      gx_cuda_graph_destroy(gx_cuda_graph *g);

/* ------------------------------------- tensors on the device (gx_device.c)
 *
 * A gx_cuda_exec is one worker's device side: its stream and the arena that
 * holds the activations, gradients and scratch of a gx_ctx. Setting
 * ctx->cuda = &exec makes every tensor the ctx creates (gx_tensor_new and
 * friends, op outputs, gradients) a device tensor (device GX_DEVICE_CUDA,
 * data/grad device pointers); the gx_tensor structs, the tape and host
 * scratch stay in the ctx's host arena. An op whose inputs are device
 * tensors runs on the device (kernels/cuda/gx_cuda_ops_*.c); mixing host and
 * device inputs in one op is a programmer error (asserted). Data crosses
 * only through gx_to_device / gx_to_host, which are ops: gradients flow back
 * across them.
 *
 * Launches are asynchronous and report nothing; the first error of the
 * stream (or of a transfer) comes back from gx_cuda_exec_sync, which the
 * caller runs once per batch or step. gx_ctx_reset synchronises first, so a
 * reset never hands memory that queued kernels still read to another user of
 * the pool; gx_ctx_free releases the ctx's device activations the same way.
 * An exec serves one ctx at a time.
 *
 * An emulated exec (gx_cuda_exec_init_emulated) keeps "device" memory in
 * host memory from a pool over malloc and copies with memcpy: it exercises
 * the placement, transfer and parameter plumbing on machines without a GPU
 * (tests/unit/test_device.c). No op can run on it (asserted). */
typedef struct gx_cuda_exec {
    gx_cuda_stream *stream;   /* NULL when emulated */
    gx_cuda_pool   *pool;     /* not owned; shared by the workers of a device */
    gx_cuda_arena   arena;    /* the ctx's device memory, reset with it */
    int             emulated;
    int             borrowed; /* the stream is another exec's (gx_cuda_exec_init_on) */
    gx_status       status;   /* first error seen by a transfer op, kept */
    gx_err          err;      /*   until gx_cuda_exec_sync reports it */
    int64_t         waits;    /* times the host waited for the stream (reads
                                 back, syncs): a pass that a CUDA graph could
                                 capture adds none before its outputs are read */
} gx_cuda_exec;

/* A stream on `device` (tf32: see gx_cuda_stream_create) over pool. */
gx_status gx_cuda_exec_init(gx_cuda_exec *e, gx_cuda_pool *pool, int device, int tf32, gx_err *err);
void      gx_cuda_exec_init_emulated(gx_cuda_exec *e, gx_cuda_pool *pool);
/* A second arena on owner's stream and pool (a ctx whose memory must stay
 * put while owner's ctx is reset: a CUDA graph's inputs and activations).
 * Its free waits for the stream but leaves it to owner, which must outlive
 * it. GX_ERR_UNSUPPORTED when owner has no stream (emulated). */
gx_status gx_cuda_exec_init_on(gx_cuda_exec *e, const gx_cuda_exec *owner, gx_err *err);
void      gx_cuda_exec_free(gx_cuda_exec *e);
/* Waits for the device; returns (and clears) the first error since the last
 * call, of a launch, a transfer or a device allocation. */
gx_status gx_cuda_exec_sync(gx_cuda_exec *e, gx_err *err);
/* Copies that honour emulation (async on the stream otherwise; host source
 * memory may be reused when an upload returns: pageable copies are staged). */
void gx_cuda_exec_upload(gx_cuda_exec *e, void *dst_dev, const void *src_host, size_t bytes);
void gx_cuda_exec_download(gx_cuda_exec *e, void *dst_host, const void *src_dev, size_t bytes);
void gx_cuda_exec_memset0(gx_cuda_exec *e, void *dst_dev, size_t bytes);
/* x *= s in place (device memory; gx_params_scale_grad on the device). */
void gx_cuda_exec_scale(gx_cuda_exec *e, gx_real *x_dev, int64_t n, double s);
/* The malloc backend of an emulated pool (user = NULL). */
gx_cuda_backend gx_cuda_host_backend(void);

/* Device scratch from the ctx's device arena; aborts with a message when the
 * pool refuses (like gx_ctx_alloc on the host arena). */
void *gx_cuda_ctx_alloc(gx_ctx *ctx, size_t bytes);
/* The exec an op on device tensors runs on: asserts that ctx has one and
 * that it is not emulated (naming op). */
gx_cuda_exec *gx_cuda_op_exec(gx_ctx *ctx, const char *op);

/* Transfer ops. gx_to_device: a device copy of a host tensor (a device
 * tensor is returned as is); ctx->cuda must be set. gx_to_host: a host copy
 * of a device tensor (a host tensor is returned as is); it waits for the
 * device, and on a device error records it in the exec and returns NaNs.
 * Both are recorded on the tape: the gradient of the copy is added to the
 * original's across the same boundary. */
gx_tensor *gx_to_device(gx_ctx *ctx, gx_tensor *t);
gx_tensor *gx_to_host(gx_ctx *ctx, gx_tensor *t);
/* The values of n one-element tensors (a loss and its terms) on the host,
 * out[i] (NaN for a NULL t[i]): the device ones joined and read back in one
 * transfer (one wait for the device, not one per value), host ones read
 * directly. Not recorded on the tape. n <= GX_TO_HOST_MAX_SCALARS. */
#define GX_TO_HOST_MAX_SCALARS 16
void gx_to_host_scalars(gx_ctx *ctx, int n, gx_tensor *const *t, double *out);
/* t where ctx computes: gx_to_device with a device ctx, t itself without
 * (model code that builds a small tensor on the host and feeds it to ops). */
gx_tensor *gx_to_ctx(gx_ctx *ctx, gx_tensor *t);
/* Host-readable values of t: t->data for a host tensor; for a parameter on
 * the device (t->name set: a gx_params tensor) its host copy, which is
 * current while the parameters are read-only (inference). Asserts for a
 * device activation (use gx_to_host). */
const gx_real *gx_tensor_host_data(const gx_tensor *t);

/* Parameters on the device. gx_params_to_cuda moves every tensor's data (and
 * gradient buffer) into blocks of e's pool, uploaded once; the host buffers
 * stay as host_data/host_grad. Call it after loading a checkpoint; the
 * parameters are then read-only inputs for any number of workers' execs on
 * the same device (it waits until the uploads are done). The pool must
 * outlive the parameters (gx_params_free returns the blocks to it).
 * gx_params_sync_host downloads data (and gradients) into the host copies,
 * e.g. before a checkpoint is written from them. A trainer on the device
 * owns its parameters alone, so it may update them (gx_optim_step). */
gx_status gx_params_to_cuda(gx_params *p, gx_cuda_exec *e, gx_err *err);
gx_status gx_params_sync_host(gx_params *p, gx_err *err);
/* The reverse: uploads every host copy over the device data, after the
 * host changed values in place (e.g. a buffer a trainer computes on the
 * host, such as WaveletMamba's colour statistics). Gradients stay. */
gx_status gx_params_sync_device(gx_params *p, gx_err *err);

/* A device pass replayed as a CUDA graph (gx_cuda_graph_capture), with the
 * memory a graph needs: every address it touches stays put. The inputs
 * live in in_ctx, whose arena is never reset while the pass lives; the
 * body's activations in ctx, whose arena is only rewound to the same start
 * (one chunk of its high-water size, so the addresses repeat). Both arenas
 * are on owner's stream (gx_cuda_exec_init_on); grad is off in both.
 *
 *   gx_cuda_pass p;
 *   gx_cuda_pass_init(&p, &model_exec, &err);
 *   x = gx_tensor_zeros(&p.in_ctx, ...);           // the inputs, once
 *   gx_cuda_pass_capture(&p, body, arg, &err);      // body computes on p.ctx
 *   per call: gx_cuda_pass_begin(&p); upload into x; gx_cuda_pass_launch(&p);
 *             download from the outputs' captured addresses; sync.
 *
 * gx_cuda_pass_capture runs body eagerly twice (a warm-up: cuBLAS
 * initialises, the arena reaches its size; then, rewound to one chunk, at
 * the addresses the capture will use), rewinds, captures, and fails
 * (GX_ERR_UNSUPPORTED) if the arena grew during the capture; the capture
 * computes nothing. gx_cuda_pass_verify, right after a capture (before any
 * new upload), replays once on the same inputs and checks that its n
 * outputs (device addresses out[k] of numel[k] values, where the body put
 * them) equal the second eager pass's to float rounding (1e-5 relative; NaN
 * as NaN; bit for bit in the emulation): a graph that replays something else
 * (stale host data baked in, host-dependent work) is refused with
 * GX_ERR_UNSUPPORTED. gx_cuda_pass_begin rewinds ctx (a wait on
 * the stream: call it before the uploads; the emulation's replay re-runs
 * the body, which must allocate as the capture did). */
typedef struct gx_cuda_pass {
    gx_cuda_exec   in_exec, run_exec;
    gx_ctx         in_ctx, ctx;
    gx_cuda_graph *graph;
    gx_cuda_stream *stream;   /* owner's */
} gx_cuda_pass;
gx_status gx_cuda_pass_init(gx_cuda_pass *p, const gx_cuda_exec *owner, gx_err *err);
gx_status gx_cuda_pass_capture(gx_cuda_pass *p, gx_cuda_graph_body body, void *arg, gx_err *err);
gx_status gx_cuda_pass_verify(gx_cuda_pass *p, int n, gx_real *const *out, const int64_t *numel, gx_err *err);
void      gx_cuda_pass_begin(gx_cuda_pass *p);
void      gx_cuda_pass_launch(gx_cuda_pass *p);
/* Waits for the stream, then frees the graph and both arenas (safe on a
 * zeroed or failed pass). */
void      gx_cuda_pass_free(gx_cuda_pass *p);

#if defined(GX_HAVE_CUDA) && GX_HAVE_CUDA && !defined(GX_F64)
/* ------------------------------------------------------------ launchers
 * Device pointers are float (the f32 engine). Names are gx_cu_<cpu op>. */

/* Elementwise unary (kernels/gx_elem.c): y = F(x; p0, p1) and
 * gx += g * D(x, y; p0, p1). p0/p1 as the CPU op: leaky slope; affine a, b;
 * pow p; clamp lo, hi; step t. Math in double through gx_math.h. */
typedef enum {
    GX_CU_RELU, GX_CU_LEAKY_RELU, GX_CU_GELU, GX_CU_SILU, GX_CU_SIGMOID, GX_CU_SOFTPLUS,
    GX_CU_TANH, GX_CU_EXP, GX_CU_LOG, GX_CU_ATAN, GX_CU_SIN, GX_CU_COS, GX_CU_SQRT,
    GX_CU_SQUARE, GX_CU_ABS, GX_CU_NEG, GX_CU_AFFINE, GX_CU_POW, GX_CU_CLAMP, GX_CU_STEP,
    GX_CU_NUNARY
} gx_cu_unary;
void gx_cu_unary_fwd(gx_cuda_stream *s, gx_cu_unary op, double p0, double p1,
                     const float *x, float *y, int64_t n);
void gx_cu_unary_bwd(gx_cuda_stream *s, gx_cu_unary op, double p0, double p1,
                     const float *x, const float *y, const float *g, float *gx, int64_t n);

/* Broadcasting binary ops (NumPy rules, up to GX_MAX_DIMS dims). */
typedef enum { GX_CU_ADD, GX_CU_SUB, GX_CU_MUL, GX_CU_DIV, GX_CU_MAX } gx_cu_binary;
void gx_cu_binary_fwd(gx_cuda_stream *s, gx_cu_binary op,
                      const float *a, int na, const int64_t *ashape,
                      const float *b, int nb, const int64_t *bshape,
                      float *out, int no, const int64_t *oshape);
/* Gradients of a and b (either may be NULL: not needed) for out's gradient
 * g; accumulated over broadcast dims. out is needed by div and max (their
 * backward reads the output, as the CPU's); scratch: oshape's numel floats. */
void gx_cu_binary_bwd(gx_cuda_stream *s, gx_cu_binary op,
                      const float *a, int na, const int64_t *ashape,
                      const float *b, int nb, const int64_t *bshape,
                      const float *out, const float *g, int no, const int64_t *oshape,
                      float *ga, float *gb, float *scratch);
/* acc (shape to) += g (shape from) summed over the broadcast dims, in double
 * (gx_reduce_broadcast_add's twin). */
void gx_cu_reduce_broadcast_add(gx_cuda_stream *s, float *acc, int nt, const int64_t *to,
                                const float *g, int nf, const int64_t *from);

/* Reductions over the middle dim of x viewed as [outer, n, inner]
 * (kernels/gx_reduce.c). y [outer, inner]. */
typedef enum { GX_CU_SUM, GX_CU_MEAN, GX_CU_MAXR } gx_cu_reduce;
void gx_cu_reduce_fwd(gx_cuda_stream *s, gx_cu_reduce op, const float *x, float *y,
                      int64_t outer, int64_t n, int64_t inner);
/* gx += broadcast of g (sum/mean), or g to the first maximal element (max,
 * which needs x and y). */
void gx_cu_reduce_bwd(gx_cuda_stream *s, gx_cu_reduce op, const float *x, const float *y,
                      const float *g, float *gx, int64_t outer, int64_t n, int64_t inner);
/* softmax / log-softmax over the middle dim; backward from y. */
void gx_cu_softmax_fwd(gx_cuda_stream *s, int log, const float *x, float *y,
                       int64_t outer, int64_t n, int64_t inner);
void gx_cu_softmax_bwd(gx_cuda_stream *s, int log, const float *y, const float *g, float *gx,
                       int64_t outer, int64_t n, int64_t inner);
/* Per-sample cross-entropy of logits [B, K] against target[B] (device
 * int32), label smoothing ls; loss [B]. lse [B] is saved for backward. */
void gx_cu_cross_entropy_fwd(gx_cuda_stream *s, const float *logits, const int32_t *target,
                             double ls, float *loss, double *lse, int64_t B, int64_t K);
void gx_cu_cross_entropy_bwd(gx_cuda_stream *s, const float *logits, const int32_t *target,
                             double ls, const double *lse, const float *g, float *glogits,
                             int64_t B, int64_t K);

/* GEMM through cuBLAS, row-major like gx_gemm:
 * C = alpha op(A) op(B) + beta C, A [M,K] (or [K,M] transposed), etc.
 * batch > 1 runs a strided batched GEMM (stride 0 shares an operand). */
void gx_cu_gemm(gx_cuda_stream *s, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                float alpha, const float *A, int64_t lda, const float *B, int64_t ldb,
                float beta, float *C, int64_t ldc);
void gx_cu_gemm_batched(gx_cuda_stream *s, int trans_a, int trans_b, int64_t M, int64_t N,
                        int64_t K, float alpha, const float *A, int64_t lda, int64_t sA,
                        const float *B, int64_t ldb, int64_t sB, float beta, float *C,
                        int64_t ldc, int64_t sC, int64_t batch);

/* Layer norm over the last dim D of rows x [R, D]; gamma/beta may be NULL.
 * mean/rstd [R] (double, as the CPU's) are saved for backward. */
void gx_cu_layernorm_fwd(gx_cuda_stream *s, const float *x, const float *gamma, const float *beta,
                         float *y, double *mean, double *rstd, int64_t R, int64_t D, double eps);
void gx_cu_layernorm_bwd(gx_cuda_stream *s, const float *x, const float *gamma,
                         const double *mean, const double *rstd, const float *g,
                         float *gx, float *ggamma, float *gbeta, int64_t R, int64_t D);
/* Batch norm over dim 1 of x [B, C, S] (S = product of the trailing dims).
 * training: batch statistics into mean/rstd [C] (saved for backward) and the
 * running statistics updated in place (may be NULL); eval: running ones. */
void gx_cu_batchnorm_fwd(gx_cuda_stream *s, const float *x, const float *gamma, const float *beta,
                         float *run_mean, float *run_var, int training, double momentum,
                         double eps, float *y, double *mean, double *rstd,
                         int64_t B, int64_t C, int64_t S);
void gx_cu_batchnorm_bwd(gx_cuda_stream *s, const float *x, const float *gamma, int training,
                         const double *mean, const double *rstd, const float *g,
                         float *gx, float *ggamma, float *gbeta, int64_t B, int64_t C, int64_t S);

/* conv2d as F.conv2d (dilation 1) via im2col + cuBLAS, per sample and group.
 * x [B,Cin,H,W], w [Cout,Cin/groups,kh,kw], bias [Cout] or NULL. col:
 * scratch of Cin*kh*kw*Ho*Wo floats (one sample, every group). */
typedef struct {
    int64_t B, Cin, H, W, Cout, kh, kw;
    int stride, pad, groups;
} gx_cu_conv_shape;
int64_t gx_cu_conv_col_floats(const gx_cu_conv_shape *c);
void gx_cu_conv2d_fwd(gx_cuda_stream *s, const gx_cu_conv_shape *c, const float *x,
                      const float *w, const float *bias, float *y, float *col);
/* gx/gw/gb may each be NULL (not needed); accumulate. */
void gx_cu_conv2d_bwd(gx_cuda_stream *s, const gx_cu_conv_shape *c, const float *x,
                      const float *w, const float *g, float *gx, float *gw, float *gb, float *col);

/* Pooling and resampling of [P = B*C planes, H, W] (kernels/gx_pool.c). */
void gx_cu_adaptive_avg_pool_fwd(gx_cuda_stream *s, const float *x, float *y, int64_t P,
                                 int64_t H, int64_t W, int64_t oh, int64_t ow);
void gx_cu_adaptive_avg_pool_bwd(gx_cuda_stream *s, const float *g, float *gx, int64_t P,
                                 int64_t H, int64_t W, int64_t oh, int64_t ow);
void gx_cu_resize_bilinear_fwd(gx_cuda_stream *s, const float *x, float *y, int64_t P,
                               int64_t H, int64_t W, int64_t oh, int64_t ow);
void gx_cu_resize_bilinear_bwd(gx_cuda_stream *s, const float *g, float *gx, int64_t P,
                               int64_t H, int64_t W, int64_t oh, int64_t ow);
void gx_cu_upsample_nearest2x_fwd(gx_cuda_stream *s, const float *x, float *y, int64_t P,
                                  int64_t H, int64_t W);
void gx_cu_upsample_nearest2x_bwd(gx_cuda_stream *s, const float *g, float *gx, int64_t P,
                                  int64_t H, int64_t W);

/* Max pooling as gx_max_pool2d (square window ks, stride s, padding pad <=
 * ks/2). Backward recomputes each window's argmax (nothing saved) and
 * gathers per input value: no atomics, the CPU's order of adds. */
void gx_cu_max_pool2d_fwd(gx_cuda_stream *s, const float *x, float *y, int64_t P, int64_t H, int64_t W,
                          int ks, int stride, int pad);
void gx_cu_max_pool2d_bwd(gx_cuda_stream *s, const float *x, const float *g, float *gx, int64_t P,
                          int64_t H, int64_t W, int ks, int stride, int pad);

/* Causal depthwise conv1d, channels last (gx_conv1d_causal_dw): x [B,L,E],
 * w [E,1,K], bias [E] or NULL -> y [B,L,E]. gx/gw/gb may be NULL; accumulate. */
void gx_cu_conv1d_causal_dw_fwd(gx_cuda_stream *s, const float *x, const float *w, const float *bias,
                                float *y, int64_t B, int64_t L, int64_t E, int64_t K);
void gx_cu_conv1d_causal_dw_bwd(gx_cuda_stream *s, const float *x, const float *w, const float *g,
                                float *gx, float *gw, float *gb, int64_t B, int64_t L, int64_t E, int64_t K);

/* The selective scan (kernels/gx_scan.c): xs [B,L,E], delta [B,Ld,E]
 * (Ld = L or 1), A/Bm/Cm [E,N] -> y [B,L,E]. One thread block per (sample,
 * group of channels), one thread per (channel, state), state in registers.
 * N <= 32. Backward recomputes the states (nothing saved); gA/gB/gC are
 * summed over the batch with atomics, so their bits may vary run to run. */
void gx_cu_ssm_scan_fwd(gx_cuda_stream *s, const float *xs, const float *delta, const float *A,
                        const float *Bm, const float *Cm, float *y,
                        int64_t B, int64_t L, int64_t Ld, int64_t E, int64_t N);
/* H: scratch of B*L*E*N doubles (the recomputed states, in double like
 * the CPU's). */
void gx_cu_ssm_scan_bwd(gx_cuda_stream *s, const float *xs, const float *delta, const float *A,
                        const float *Bm, const float *Cm, const float *g,
                        float *gxs, float *gdelta, float *gA, float *gB, float *gC, double *H,
                        int64_t B, int64_t L, int64_t Ld, int64_t E, int64_t N);
/* Entropic Sinkhorn of the Hellinger-Kantorovich term (kernels/gx_sinkhorn.c):
 * a, b [B, n], C [n, n] -> out [B]. One thread per row (the iterations are a
 * serial chain per row). mats: 4n^2 doubles (K, K^T, K o C, its transpose),
 * filled by the forward and read by the backward. pq: B*iters*2n + B doubles
 * (the denominators of every iteration, then S per row), or NULL when no
 * backward follows. work: B*7n doubles of scratch. */
void gx_cu_sinkhorn_fwd(gx_cuda_stream *s, const float *a, const float *b, const float *C, double lambda,
                        int iters, double eps, float *out, double *mats, double *pq, double *work,
                        int64_t B, int64_t n);
void gx_cu_sinkhorn_bwd(gx_cuda_stream *s, const float *a, const float *b, const float *g,
                        const double *mats, const double *pq, int iters, float *ga, float *gb,
                        double *work, int64_t B, int64_t n);
/* One optimiser update of one parameter tensor on the device, the per-tensor
 * step of gx_optim_step (kernels/gx_optim.c): x, g [n]; Adam(W): state =
 * m then v (2n), t = the 1-based step; SGD: state = the momentum buffer (n)
 * or NULL when momentum is 0. wd is this tensor's weight decay (0 without
 * GX_PARAM_DECAY). */
void gx_cu_optim_update(gx_cuda_stream *s, const gx_optim_cfg *c, float *x, const float *g, float *state,
                        int64_t n, int64_t t, double lr, double wd);

/* ---------------------------------------------------- shape ops (gx_shape.c)
 * A reshaped device tensor aliases its input (no launcher); the reshape's
 * backward, like any "gradient passes through" step, is gx_cu_accumulate. */

/* dst[i] += src[i], i < n (float adds, the CPU's). */
void gx_cu_accumulate(gx_cuda_stream *s, float *dst, const float *src, int64_t n);
/* y = permute(x, perm) for x of shape xshape (nd <= GX_MAX_DIMS dims);
 * backward: gx (x's shape) += permute(g, inverse perm). One thread per
 * written element (the CPU's gather in both directions: no atomics). */
void gx_cu_permute_fwd(gx_cuda_stream *s, const float *x, int nd, const int64_t *xshape, const int *perm,
                       float *y);
void gx_cu_permute_bwd(gx_cuda_stream *s, const float *g, int nd, const int64_t *xshape, const int *perm,
                       float *gx);
/* Ops along one dim of a tensor viewed as [outer, n, inner]
 * (gx_split_dims). concat: xs[k] [outer, sizes[k], inner] -> y [outer, sum,
 * inner]; its backward adds y's bands into gxs[k] (NULL entries skipped). */
void gx_cu_concat_fwd(gx_cuda_stream *s, int n, const float *const *xs, const int64_t *sizes, float *y,
                      int64_t outer, int64_t inner);
void gx_cu_concat_bwd(gx_cuda_stream *s, int n, const float *g, const int64_t *sizes, float *const *gxs,
                      int64_t outer, int64_t inner);
/* y = x[:, start:end, :] of x [outer, n, inner]; backward adds g into that
 * band of gx. gx_split is one slice per part. */
void gx_cu_slice_fwd(gx_cuda_stream *s, const float *x, float *y, int64_t outer, int64_t n, int64_t inner,
                     int64_t start, int64_t end);
void gx_cu_slice_bwd(gx_cuda_stream *s, const float *g, float *gx, int64_t outer, int64_t n, int64_t inner,
                     int64_t start, int64_t end);
/* Reverse the middle dim; backward: gx += flip(g). */
void gx_cu_flip_fwd(gx_cuda_stream *s, const float *x, float *y, int64_t outer, int64_t n, int64_t inner);
void gx_cu_flip_bwd(gx_cuda_stream *s, const float *g, float *gx, int64_t outer, int64_t n, int64_t inner);

/* gx_gather: y[b] = x[b, idx[b]] for x [B, K], idx device int32 (in range:
 * the CPU asserts it when the indices are made). Backward: one thread per
 * row, so the adds never collide. gx_one_hot: y [B, K] (no gradient). */
void gx_cu_gather_fwd(gx_cuda_stream *s, const float *x, const int32_t *idx, float *y, int64_t B, int64_t K);
void gx_cu_gather_bwd(gx_cuda_stream *s, const int32_t *idx, const float *g, float *gx, int64_t B, int64_t K);
void gx_cu_one_hot(gx_cuda_stream *s, const int32_t *idx, float *y, int64_t B, int64_t K);

/* ------------------------------------------- more reductions (gx_reduce.c) */

/* logsumexp over the middle dim of [outer, n, inner] -> y [outer, inner]
 * (an all -inf column gives -inf); backward gx += g exp(x - y), from the
 * float y as the CPU's. */
void gx_cu_logsumexp_fwd(gx_cuda_stream *s, const float *x, float *y, int64_t outer, int64_t n, int64_t inner);
void gx_cu_logsumexp_bwd(gx_cuda_stream *s, const float *x, const float *y, const float *g, float *gx,
                         int64_t outer, int64_t n, int64_t inner);
/* F.normalize(x, 2, dim, eps) over the middle dim; norm [outer*inner]
 * doubles (saved for backward: it decides the clamped branch). */
void gx_cu_l2_normalize_fwd(gx_cuda_stream *s, const float *x, float *y, double *norm, double eps,
                            int64_t outer, int64_t n, int64_t inner);
void gx_cu_l2_normalize_bwd(gx_cuda_stream *s, const float *y, const double *norm, const float *g, float *gx,
                            double eps, int64_t outer, int64_t n, int64_t inner);
/* Whole-tensor sum / mean (gx_sum_all, gx_mean_all) into y[0], in double:
 * fixed chunks of GX_CU_CHUNK elements summed by one block each, then the
 * chunk sums in chunk order, so the value does not depend on the launch.
 * part: gx_cu_chunk_count(n) doubles. Backward: gx += g[0] * (1 or 1/n). */
#define GX_CU_CHUNK 8192
int64_t gx_cu_chunk_count(int64_t n);
void gx_cu_sum_all_fwd(gx_cuda_stream *s, int mean, const float *x, float *y, double *part, int64_t n);
void gx_cu_sum_all_bwd(gx_cuda_stream *s, int mean, const float *g, float *gx, int64_t n);

/* Gradient clipping (gx_clip_grad_norm) over nt gradient buffers g[t] of
 * n[t] floats: norm = sqrt(sum of squares in double: each tensor's chunks,
 * tensors in order, the partials summed in that fixed order), then every g
 * scaled by max_norm / (norm + 1e-6) when that is < 1 and norm is finite.
 * Nothing is synchronised: the norm is written to norm_out (device double)
 * and read by the scaling kernels there. part: gx_cu_clip_scratch(nt, n)
 * doubles. */
int64_t gx_cu_clip_scratch(int nt, const int64_t *n);
void gx_cu_clip_grad_norm(gx_cuda_stream *s, int nt, float *const *g, const int64_t *n, double max_norm,
                          double *part, double *norm_out);

/* -------------------------------------------- matrix ops (gx_matmul.c) */

/* gx_pairwise_sqdist: a [N, D], b [M, D] -> d [N, M] = max(0, |a_i|^2 +
 * |b_j|^2 - 2 a_i.b_j), the GEMM through cuBLAS, row norms in double.
 * sq: N + M doubles of scratch. Backward (entries <= 0 get no gradient):
 * ga/gb may be NULL or the same buffer (a == b); gm: N*M floats and sums:
 * N + M doubles of scratch. gx_gram needs no launcher: gx_cu_gemm(0, 1). */
void gx_cu_pairwise_sqdist_fwd(gx_cuda_stream *s, const float *a, const float *b, float *d, double *sq,
                               int64_t N, int64_t M, int64_t D);
void gx_cu_pairwise_sqdist_bwd(gx_cuda_stream *s, const float *a, const float *b, const float *d,
                               const float *g, float *ga, float *gb, float *gm, double *sums, int64_t N,
                               int64_t M, int64_t D);

/* -------------------------------------- fused convolutions (gx_conv.c) */

/* gx_upconv2x3: nearest x2 upsample + 3x3 conv (pad 1) without the
 * upsampled tensor. x [B,Cin,H,W], w [Cout,Cin,3,3], bias [Cout] or NULL
 * -> y [B,Cout,2H,2W]. Each output parity is a 2x2 conv of x with folded
 * weights (gx_conv.c's derivation): per sample, one im2col of the four
 * parities and one strided-batched GEMM over them, then a scatter into the
 * interleaved pixels with the bias and the activation act(p0, p1) (any
 * gx_cu_unary op; act < 0 = none: gx_upconv2x3; GX_CU_LEAKY_RELU =
 * gx_upconv2x3_leaky's inference path). Scratch floats:
 * gx_cu_upconv_scratch_floats (folded weights, one sample's columns and
 * parity outputs). */
int64_t gx_cu_upconv_scratch_floats(int64_t Cin, int64_t H, int64_t W, int64_t Cout);
void gx_cu_upconv2x3_fwd(gx_cuda_stream *s, const float *x, const float *w, const float *bias, int act,
                         double p0, double p1, float *y, float *scratch, int64_t B, int64_t Cin, int64_t H,
                         int64_t W, int64_t Cout);
/* Backward of the un-activated op; gx/gw/gb may be NULL; accumulate. */
void gx_cu_upconv2x3_bwd(gx_cuda_stream *s, const float *x, const float *w, const float *g, float *gx,
                         float *gw, float *gb, float *scratch, int64_t B, int64_t Cin, int64_t H, int64_t W,
                         int64_t Cout);

/* Inference conv + batch norm (eval) + activation, fused:
 *   y = act(bn_eval(conv2d(x, w, bias)))
 * with bn_eval(v)[c] = v a_c + (beta_c - run_mean_c a_c), a_c = gamma_c /
 * sqrt(run_var_c + eps) (gamma/beta may be NULL: 1 and 0), act any
 * gx_cu_unary op with p0, p1 (act < 0: none). BN is folded into the
 * conv's epilogue: the GEMM writes the raw conv, one pass then adds the
 * bias and applies the per-channel affine and the activation, each rounded
 * as the unfused launchers round it (gx_cu_conv2d_fwd, gx_cu_batchnorm_fwd
 * eval, gx_cu_unary_fwd), so the result is bit-identical to that chain in
 * one pass over y instead of three. ab: 2*Cout doubles (a, then the shift). */
void gx_cu_conv2d_bn_act_fwd(gx_cuda_stream *s, const gx_cu_conv_shape *c, const float *x, const float *w,
                             const float *bias, const float *gamma, const float *beta, const float *run_mean,
                             const float *run_var, double eps, int act, double p0, double p1, float *y,
                             float *col, double *ab);

#endif /* GX_HAVE_CUDA */

#ifdef __cplusplus
}
#endif
#endif /* GX_CUDA_H */
