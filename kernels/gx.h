/*
 * gx.h — the public API of the galaxyd numeric engine.
 *
 * One tensor type, one context (arena + tape), one parameter registry, and a
 * flat set of ops, each with a forward and a backward written side by side in
 * one file per op family (kernels/gx_<family>.c). The API is deliberately
 * small: models are written as plain C functions calling ops on a context.
 *
 *   gx_ctx ctx; gx_ctx_init(&ctx, 64 << 20);
 *   ctx.grad_enabled = 1;
 *   gx_tensor *y = gx_linear(&ctx, x, w, b);      // recorded on the tape
 *   gx_tensor *l = gx_mean_all(&ctx, gx_square(&ctx, y));
 *   gx_backward(&ctx, l, NULL);                    // fills w->grad, b->grad
 *   gx_ctx_reset(&ctx);                            // frees all activations
 *
 * Precision: the element type is gx_real, float by default. The same sources
 * compile with -DGX_F64 into a double-precision library that the gradient
 * checks use: finite differences in double are then exact enough to check
 * every backward to ~1e-7, and the code under test is the code we ship.
 *
 * Errors: three tiers (see STYLE.md). GX_ASSERT is always on and aborts with
 * file:line; it guards programmer errors (shape mismatches inside a model).
 * Anything fed by the outside world (files, configs) returns gx_status with a
 * message in a caller-supplied gx_err buffer. Library code never exit()s.
 *
 * Op families and their headers (each implemented in the .c of the same name):
 *   gx_elem.h     unary, scalar and broadcasting binary elementwise ops
 *   gx_reduce.h   sum/mean/max over a dim, softmax family, cross-entropy,
 *                 gather/one-hot, L2 normalise
 *   gx_matmul.h   linear, batched matmul, Gram and pairwise distances
 *   gx_conv.h     conv2d (groups, depthwise), causal depthwise conv1d
 *   gx_norm.h     batch norm (named statistic sets), layer norm
 *   gx_pool.h     adaptive average pooling, bilinear resize, nearest x2
 *   gx_shape.h    reshape, permute, concat, split, slice, flip
 *   gx_scan.h     the selective state-space scan of WaveletMamba
 *   gx_sinkhorn.h entropic Sinkhorn for the Hellinger-Kantorovich term
 *   gx_optim.h    AdamW, Adam, SGD (Nesterov), schedules, clipping
 *   gx_safetensors.h  checkpoint read/write with strict validation
 *
 * Adding an op (at most five touch points): its declaration in the family
 * header, forward+backward in the family .c, its CUDA twin in kernels/cuda/,
 * a gradient check in tests/grad/, a parity case in tests/parity/.
 */
#ifndef GX_H
#define GX_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- basics */

#ifndef GX_REAL_DEFINED
#define GX_REAL_DEFINED
#ifdef GX_F64
typedef double gx_real;
#else
typedef float gx_real;
#endif
#endif
#ifdef GX_F64
#define GX_REAL_NAME "f64"
#else
#define GX_REAL_NAME "f32"
#endif

#define GX_MAX_DIMS 6
#define GX_NODE_MAX_IN 6

typedef enum {
    GX_OK = 0,
    GX_ERR_NOMEM,       /* allocation failed or a configured limit was hit */
    GX_ERR_INVALID,     /* bad argument or value */
    GX_ERR_SHAPE,       /* shape mismatch between a file and a model */
    GX_ERR_IO,          /* open/read/write/fsync/rename failed */
    GX_ERR_FORMAT,      /* malformed file contents */
    GX_ERR_NOTFOUND,    /* a named item (tensor, key) does not exist */
    GX_ERR_UNSUPPORTED, /* valid but not handled (e.g. a dtype) */
    GX_ERR_BUSY,        /* a bounded queue is full: retry later */
    GX_ERR_TIMEOUT,     /* a deadline passed before the work was done */
    GX_ERR_CLOSED       /* the service is shutting down or was closed */
} gx_status;

/* Caller-owned buffer for a human-readable error message. */
typedef struct { char msg[512]; } gx_err;

const char *gx_status_str(gx_status s);
/* printf into err (if non-NULL) and return s; lets callers write
 * `return gx_err_set(err, GX_ERR_FORMAT, "tensor %s: ...", name);` */
gx_status gx_err_set(gx_err *err, gx_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Always-on assertion for programmer errors: prints file:line, the
 * expression and a backtrace, then aborts. */
#define GX_ASSERT(cond) \
    do { if (!(cond)) gx_assert_fail(#cond, __FILE__, __LINE__, NULL); } while (0)
#define GX_ASSERT_MSG(cond, ...) \
    do { if (!(cond)) { char gx__m[256]; snprintf(gx__m, sizeof gx__m, __VA_ARGS__); \
         gx_assert_fail(#cond, __FILE__, __LINE__, gx__m); } } while (0)
void gx_assert_fail(const char *expr, const char *file, int line, const char *msg)
    __attribute__((noreturn));

/* ---------------------------------------------------------------- tensor */

typedef enum { GX_DEVICE_CPU = 0, GX_DEVICE_CUDA = 1 } gx_device;

/* A dense, contiguous, row-major tensor of gx_real. Ops that reorder data
 * (permute, flip, concat, ...) copy; reshape shares data. The struct itself
 * and (for activations) data/grad live in the context's arena. */
typedef struct gx_tensor {
    gx_real *data;             /* numel elements */
    gx_real *grad;             /* numel elements, or NULL until a gradient flows */
    int64_t  shape[GX_MAX_DIMS];
    int64_t  numel;
    int      ndim;             /* 0 (scalar) .. GX_MAX_DIMS */
    uint8_t  requires_grad;    /* leaf parameter, or output of a recorded op */
    uint8_t  device;           /* gx_device: where data and grad live (kernels/gx_device.c) */
    uint8_t  frozen;           /* a parameter whose values no longer change (gx_params_freeze) */
    const char *name;          /* parameter name, or NULL for activations */
    void    *cache;            /* of a frozen parameter: a derived copy an op keeps (a conv's
                                  packed or tap-major weights, gx_conv.c), made on first use,
                                  freed with it */
} gx_tensor;

/* Shape literal helper: gx_tensor_new(ctx, 3, GX_SHAPE(B, C, L)). */
#define GX_SHAPE(...) ((const int64_t[]){__VA_ARGS__})

int64_t gx_shape_numel(int ndim, const int64_t *shape);
/* Normalise a possibly negative dim index (-1 = last); asserts range. */
int     gx_tensor_dim(const gx_tensor *t, int dim);
int     gx_tensor_same_shape(const gx_tensor *a, const gx_tensor *b);
/* Writes e.g. "[32,3,64,64]" into buf. Returns buf. */
char   *gx_tensor_shape_str(const gx_tensor *t, char *buf, size_t n);

/* --------------------------------------------------------------- arena */

/* Bump allocator for everything that lives for one step or batch. It grows
 * by chaining blocks; gx_arena_reset coalesces them into one block of the
 * high-water size, so after the first step a training loop never mallocs. */
typedef struct gx_arena_block gx_arena_block;
typedef struct gx_arena {
    gx_arena_block *head;      /* current block (newest) */
    size_t used_total;         /* bytes handed out since the last reset */
    size_t high_water;         /* max used_total seen */
    size_t limit;              /* 0 = unlimited; else a hard cap in bytes */
} gx_arena;

void   gx_arena_init(gx_arena *a, size_t initial_bytes, size_t limit_bytes);
void   gx_arena_free(gx_arena *a);
/* 64-byte aligned; NULL only when the limit is hit or malloc fails. */
void  *gx_arena_alloc(gx_arena *a, size_t bytes);
void   gx_arena_reset(gx_arena *a);
size_t gx_arena_capacity(const gx_arena *a);

/* --------------------------------------------------------- context, tape */

typedef struct gx_ctx gx_ctx;
typedef struct gx_node gx_node;
struct gx_cuda_exec;
typedef void (*gx_backward_fn)(gx_ctx *ctx, gx_node *node);

/* One recorded op. Backward functions read out->grad and accumulate (+=)
 * into the gradients of their inputs obtained with gx_grad(). Small scalar
 * arguments go in i[]/f[]; anything bigger in `saved` (arena memory). */
struct gx_node {
    gx_backward_fn backward;
    gx_node   *prev;                    /* tape is a singly linked list, newest first */
    const char *op;                     /* op name, for debugging and errors */
    gx_tensor *out;
    gx_tensor *in[GX_NODE_MAX_IN];
    int        n_in;
    int64_t    i[8];
    double     f[4];
    void      *saved;
};

struct gx_ctx {
    gx_arena arena;            /* activations, their gradients, tape nodes */
    gx_node *tape;             /* newest node, or NULL */
    int64_t  n_nodes;
    int      grad_enabled;     /* record ops whose inputs require grad */
    int      batch_invariant;  /* 1 (gx_ctx_init's default): a sample's
                                  forward bits equal its batch-of-1 result
                                  (x's leading dim is the batch); 0 lets
                                  gx_linear fold the batch into one GEMM
                                  and convs run over the whole batch
                                  (training may; gx_matmul.c, gx_conv.c) */
    int      sk_avx2_only;     /* 1: the packed-weight conv GEMM keeps its
                                  AVX2 block on an AVX-512 CPU (same bits;
                                  for the test that compares the two) */
    struct gx_cuda_exec *cuda; /* NULL: every tensor this ctx makes lives in
                                  host memory. Else (gx_device.c) new tensors,
                                  gradients and scratch live on that device and
                                  ops on device tensors run there; the tensor
                                  structs and the tape stay in host memory */
    struct gx_ctx *side;       /* gx_ctx_for_parts' contexts, one per thread of
                                  a split call (kept between calls: their
                                  arenas are warm) */
    int      n_side;
    void    *scratch;          /* gx_ctx_scratch's buffer: host memory outside
                                  the arena, kept (and grown) between calls */
    size_t   scratch_cap;
};

void gx_ctx_init(gx_ctx *ctx, size_t arena_bytes);
void gx_ctx_free(gx_ctx *ctx);
/* Drops the tape and every activation. Parameters are untouched. */
void gx_ctx_reset(gx_ctx *ctx);
/* A host buffer of at least `bytes` for one op's temporaries, valid until
 * the next gx_ctx_scratch call on ctx (contents undefined), or NULL when
 * memory is short. For the large, call-long temporaries that the arena
 * should not keep for the rest of a step: a fresh malloc of that size is a
 * fresh mmap, and the kernel zeroed its pages on every call (10% of a UDA
 * training step's cycles in clear_page). Freed with ctx. */
void *gx_ctx_scratch(gx_ctx *ctx, size_t bytes);

/* Coarse parallelism for inference: fn(part_ctx, lo, hi, arg) runs once for
 * each of P contiguous parts [lo, hi) of [0, n) (sizes within one, in any
 * order), on up to min(threads, P) threads at once. P is a multiple of the
 * threads, up to 4 parts per thread while a part keeps at least 8 rows,
 * never fewer than min(threads, n), and at most max_parts when that is > 0
 * (see gx_parts_count). A thread takes the next part when it is done with
 * one, so one that loses its core for a while does fewer. With several
 * parts, thread t runs its parts on side context t of ctx (made on first
 * use, kept, reset after every part, freed with ctx), so the memory is one
 * part per thread; a single part runs on ctx itself. Inside fn every op
 * runs on one thread (nested OpenMP regions and BLAS see an active region),
 * so one OpenMP region stands for the hundreds of small ones the ops would
 * open: on a 2-core VM those cost more than they gain (docs/benchmarks.md).
 * A single part (n = 1) also runs its ops on one thread: OpenBLAS's GEMM
 * bits depend on its thread count, so a row's bits must not depend on
 * whether its batch was split. fn must write its results to memory it owns
 * (tensors in a side context are gone when the part ends) and must only
 * read shared data. With grad enabled, on a device ctx, inside an OpenMP
 * region or at one thread, it is one plain call fn(ctx, 0, n, arg) (at one
 * thread the same single-threaded ops). Every row's bits are then the same
 * whatever n, the split and the thread count, when the ops fn runs are
 * batch invariant over the split dim (ctx's default). Returns P. */
typedef void (*gx_part_fn)(gx_ctx *ctx, int64_t lo, int64_t hi, void *arg);
int gx_ctx_for_parts(gx_ctx *ctx, int64_t n, int max_parts, gx_part_fn fn, void *arg);

/* New arena tensor, data uninitialised / zeroed. */
gx_tensor *gx_tensor_new(gx_ctx *ctx, int ndim, const int64_t *shape);
gx_tensor *gx_tensor_zeros(gx_ctx *ctx, int ndim, const int64_t *shape);
gx_tensor *gx_tensor_like(gx_ctx *ctx, const gx_tensor *t);
/* Arena tensor holding a copy of n values (n must equal the shape's numel). */
gx_tensor *gx_tensor_from(gx_ctx *ctx, int ndim, const int64_t *shape, const gx_real *src);
gx_tensor *gx_tensor_scalar(gx_ctx *ctx, gx_real v);
/* A host tensor whatever ctx->cuda says (for values the host computes). */
gx_tensor *gx_tensor_new_host(gx_ctx *ctx, int ndim, const int64_t *shape);
/* Arena scratch memory for op implementations (aborts on exhaustion). */
void      *gx_ctx_alloc(gx_ctx *ctx, size_t bytes);

/* Called by an op after computing its output: when grad is enabled and any
 * input requires grad, records a node, marks out->requires_grad and returns
 * the node (so the op can fill i/f/saved). Otherwise returns NULL. */
gx_node *gx_tape_record(gx_ctx *ctx, const char *op, gx_backward_fn bw,
                        gx_tensor *out, int n_in, gx_tensor *const *in);
/* The gradient buffer of t, allocated zeroed in the arena on first use.
 * Returns NULL when t does not require grad (backward code must check). */
gx_real *gx_grad(gx_ctx *ctx, gx_tensor *t);
/* Reverse-mode sweep from t. seed = dL/dt (numel values) or NULL for ones.
 * Gradients accumulate into parameters' grad buffers. */
void gx_backward(gx_ctx *ctx, gx_tensor *t, const gx_real *seed);

/* ---------------------------------------------------------- parameters */

enum {
    GX_PARAM_DECAY  = 1u << 0,   /* weight decay applies */
    GX_PARAM_BUFFER = 1u << 1,   /* saved state without gradient (running stats) */
    GX_PARAM_FROZEN = 1u << 2    /* has no gradient and is not optimised */
};

typedef struct gx_param {
    gx_tensor t;                 /* t.data / t.grad are owned by the registry */
    gx_real  *host_data;         /* after gx_params_to_cuda: the host copy of */
    gx_real  *host_grad;         /*   t.data / t.grad (t then points at the device) */
    char      name[160];         /* dotted PyTorch-style name */
    unsigned  flags;
    int       group;             /* optimiser parameter group (per-group lr) */
} gx_param;

/* The model's parameters and buffers, in registration order (which is also
 * checkpoint order). Each gx_param is separately allocated so tensor
 * pointers stay valid while the registry grows. */
typedef struct gx_params {
    gx_param **items;
    int n, cap;
    struct gx_cuda_exec *cuda;   /* set by gx_params_to_cuda: the exec whose
                                    pool holds the parameters (gx_device.c) */
    int shape_only;              /* gx_params_init_shapes: names and shapes only */
} gx_params;

void       gx_params_init(gx_params *p);
/* A registry that records names, shapes and flags only, so that a model's
 * parameter list can be compared with a checkpoint before the model is
 * allocated: a checkpoint of a few bytes whose config claims huge widths is
 * then refused without allocating (or initialising) gigabytes. Tensors of
 * more than GX_PARAMS_SHAPE_SMALL elements get data NULL and no gradient;
 * smaller ones (biases, norms, tables a model writes directly) get memory,
 * so a model's init runs unchanged except that its random fills skip NULL
 * data. Such a registry is only for gx_params_check and gx_params_free. */
#define GX_PARAMS_SHAPE_SMALL 65536
void       gx_params_init_shapes(gx_params *p);
void       gx_params_free(gx_params *p);
/* Registers a zero-initialised tensor; aborts on a duplicate name. */
gx_tensor *gx_params_add(gx_params *p, const char *name, int ndim,
                         const int64_t *shape, unsigned flags);
gx_param  *gx_params_find(const gx_params *p, const char *name);
void       gx_params_zero_grad(gx_params *p);
/* Frees every gradient buffer and marks the tensors as not requiring one:
 * for a model that only runs forward (galaxyd), whose parameters then take
 * half the host and device memory. Before gx_params_to_cuda. */
void       gx_params_drop_grads(gx_params *p);
/* Promises that no parameter's values change from here on (a model that
 * only serves): an op may then keep a derived copy with the tensor, made
 * on first use (gx_conv2d keeps its packed or tap-major weight copy: about
 * the size of the weights that take those paths, and no copy per call).
 * Freed by gx_params_free. */
void       gx_params_freeze(gx_params *p);
/* Number of elements over parameters whose flags intersect `mask`
 * (mask 0 = every trainable parameter, i.e. not BUFFER/FROZEN). */
int64_t    gx_params_count(const gx_params *p, unsigned mask);
/* Multiply every gradient by s (gradient accumulation averages with it). */
void       gx_params_scale_grad(gx_params *p, double s);

/* ------------------------------------------------------------------ rng */

/* Counter-based RNG (Philox4x32-10). A stream is (seed, counter): value i of
 * a fill depends only on seed and counter+i, so fills are reproducible for a
 * seed whatever the thread count, and the GPU can use the same function. */
typedef struct gx_rng { uint64_t seed; uint64_t counter; } gx_rng;

void     gx_rng_init(gx_rng *r, uint64_t seed);
/* Derive an independent stream (e.g. per epoch, per sample). */
gx_rng   gx_rng_fork(const gx_rng *r, uint64_t stream);
uint32_t gx_rng_u32(gx_rng *r);
double   gx_rng_uniform(gx_rng *r);               /* [0, 1) */
double   gx_rng_normal(gx_rng *r);                /* N(0, 1) */
void     gx_rng_fill_uniform(gx_rng *r, gx_real *out, int64_t n, double lo, double hi);
void     gx_rng_fill_normal(gx_rng *r, gx_real *out, int64_t n, double mean, double std);

/* ------------------------------------------------------------- threads */

/* Number of threads OpenMP regions use (also applied to OpenBLAS). */
void gx_set_threads(int n);
int  gx_get_threads(void);

#ifdef __cplusplus
}
#endif

#include "gx_elem.h"
#include "gx_reduce.h"
#include "gx_matmul.h"
#include "gx_conv.h"
#include "gx_norm.h"
#include "gx_pool.h"
#include "gx_shape.h"
#include "gx_scan.h"
#include "gx_sinkhorn.h"
#include "gx_optim.h"
#include "gx_safetensors.h"

#endif /* GX_H */
