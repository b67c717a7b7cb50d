/*
 * gx_core.c — status and assertion helpers, the arena, tensors, the tape and
 * the reverse-mode sweep, and the parameter registry.
 *
 * The tape is a singly linked list of nodes allocated in the arena, newest
 * first, so backward is a plain walk from the head and gx_ctx_reset drops it
 * with everything else in O(1).
 */
#include "gx_impl.h"
#include "gx_cuda.h"

#include <execinfo.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* ------------------------------------------------------------ errors */

const char *gx_status_str(gx_status s) {
    switch (s) {
    case GX_OK: return "ok";
    case GX_ERR_NOMEM: return "out of memory";
    case GX_ERR_INVALID: return "invalid argument";
    case GX_ERR_SHAPE: return "shape mismatch";
    case GX_ERR_IO: return "i/o error";
    case GX_ERR_FORMAT: return "malformed data";
    case GX_ERR_NOTFOUND: return "not found";
    case GX_ERR_UNSUPPORTED: return "unsupported";
    case GX_ERR_BUSY: return "busy";
    case GX_ERR_TIMEOUT: return "timeout";
    case GX_ERR_CLOSED: return "closed";
    }
    return "unknown status";
}

gx_status gx_err_set(gx_err *err, gx_status s, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return s;
}

void gx_assert_fail(const char *expr, const char *file, int line, const char *msg) {
    fprintf(stderr, "GX_ASSERT failed at %s:%d: %s%s%s\n", file, line, expr,
            msg ? " — " : "", msg ? msg : "");
    void *frames[32];
    int n = backtrace(frames, 32);
    backtrace_symbols_fd(frames, n, 2);
    abort();
}

/* ------------------------------------------------------------ arena */

struct gx_arena_block {
    gx_arena_block *prev;
    size_t cap, used;
    /* data follows, 64-byte aligned */
};

#define GX_ARENA_ALIGN 64
#define GX_BLOCK_HDR ((sizeof(gx_arena_block) + GX_ARENA_ALIGN - 1) & ~(size_t)(GX_ARENA_ALIGN - 1))

static gx_arena_block *gx_arena_block_new(size_t cap) {
    gx_arena_block *b = aligned_alloc(GX_ARENA_ALIGN, GX_BLOCK_HDR + cap);
    if (!b) return NULL;
    b->prev = NULL; b->cap = cap; b->used = 0;
    return b;
}

void gx_arena_init(gx_arena *a, size_t initial_bytes, size_t limit_bytes) {
    memset(a, 0, sizeof *a);
    a->limit = limit_bytes;
    if (initial_bytes) {
        initial_bytes = (initial_bytes + GX_ARENA_ALIGN - 1) & ~(size_t)(GX_ARENA_ALIGN - 1);
        a->head = gx_arena_block_new(initial_bytes);
    }
}

void gx_arena_free(gx_arena *a) {
    gx_arena_block *b = a->head;
    while (b) { gx_arena_block *p = b->prev; free(b); b = p; }
    memset(a, 0, sizeof *a);
}

void *gx_arena_alloc(gx_arena *a, size_t bytes) {
    size_t need = (bytes + GX_ARENA_ALIGN - 1) & ~(size_t)(GX_ARENA_ALIGN - 1);
    if (need == 0) need = GX_ARENA_ALIGN;
    if (a->limit && a->used_total + need > a->limit) return NULL;
    gx_arena_block *b = a->head;
    if (!b || b->cap - b->used < need) {
        size_t cap = b ? b->cap * 2 : (size_t)1 << 20;
        if (cap < need) cap = need;
        gx_arena_block *nb = gx_arena_block_new(cap);
        if (!nb) return NULL;
        nb->prev = b;
        a->head = b = nb;
    }
    void *p = (uint8_t *)b + GX_BLOCK_HDR + b->used;
    b->used += need;
    a->used_total += need;
    if (a->used_total > a->high_water) a->high_water = a->used_total;
    return p;
}

size_t gx_arena_capacity(const gx_arena *a) {
    size_t c = 0;
    for (gx_arena_block *b = a->head; b; b = b->prev) c += b->cap;
    return c;
}

void gx_arena_reset(gx_arena *a) {
    /* With several blocks, replace them by one block big enough for the
     * high-water mark, so the next step runs without any malloc. */
    if (a->head && a->head->prev) {
        size_t cap = a->high_water;
        gx_arena_block *b = a->head;
        while (b) { gx_arena_block *p = b->prev; free(b); b = p; }
        a->head = gx_arena_block_new(cap);
    } else if (a->head) {
        a->head->used = 0;
    }
    a->used_total = 0;
}

/* ------------------------------------------------------------ tensors */

int64_t gx_shape_numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

int gx_tensor_dim(const gx_tensor *t, int dim) {
    int d = dim < 0 ? dim + t->ndim : dim;
    GX_ASSERT_MSG(d >= 0 && d < t->ndim, "dim %d out of range for a %d-D tensor", dim, t->ndim);
    return d;
}

int gx_tensor_same_shape(const gx_tensor *a, const gx_tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

char *gx_tensor_shape_str(const gx_tensor *t, char *buf, size_t n) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (int i = 0; i < t->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? "," : "", (long long)t->shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

void *gx_ctx_alloc(gx_ctx *ctx, size_t bytes) {
    void *p = gx_arena_alloc(&ctx->arena, bytes);
    GX_ASSERT_MSG(p != NULL, "activation arena exhausted (%zu bytes requested, %zu in use, limit %zu)",
                  bytes, ctx->arena.used_total, ctx->arena.limit);
    return p;
}

static gx_tensor *gx_tensor_header(gx_ctx *ctx, int ndim, const int64_t *shape) {
    GX_ASSERT(ndim >= 0 && ndim <= GX_MAX_DIMS);
    gx_tensor *t = gx_ctx_alloc(ctx, sizeof *t);
    memset(t, 0, sizeof *t);
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        GX_ASSERT_MSG(shape[i] >= 0, "negative dimension %lld", (long long)shape[i]);
        t->shape[i] = shape[i];
    }
    t->numel = gx_shape_numel(ndim, shape);
    return t;
}

gx_tensor *gx_tensor_new_host(gx_ctx *ctx, int ndim, const int64_t *shape) {
    gx_tensor *t = gx_tensor_header(ctx, ndim, shape);
    t->data = gx_ctx_alloc(ctx, (size_t)t->numel * sizeof(gx_real));
    return t;
}

/* A ctx with a device exec places everything it makes on the device. */
gx_tensor *gx_tensor_new(gx_ctx *ctx, int ndim, const int64_t *shape) {
    if (!ctx->cuda) return gx_tensor_new_host(ctx, ndim, shape);
    gx_tensor *t = gx_tensor_header(ctx, ndim, shape);
    t->data = gx_cuda_ctx_alloc(ctx, (size_t)t->numel * sizeof(gx_real));
    t->device = GX_DEVICE_CUDA;
    return t;
}

gx_tensor *gx_tensor_zeros(gx_ctx *ctx, int ndim, const int64_t *shape) {
    gx_tensor *t = gx_tensor_new(ctx, ndim, shape);
    size_t bytes = (size_t)t->numel * sizeof(gx_real);
    if (t->device == GX_DEVICE_CUDA) gx_cuda_exec_memset0(ctx->cuda, t->data, bytes);
    else memset(t->data, 0, bytes);
    return t;
}

gx_tensor *gx_tensor_like(gx_ctx *ctx, const gx_tensor *t) {
    return gx_tensor_new(ctx, t->ndim, t->shape);
}

/* src is host memory in both cases. */
gx_tensor *gx_tensor_from(gx_ctx *ctx, int ndim, const int64_t *shape, const gx_real *src) {
    gx_tensor *t = gx_tensor_new(ctx, ndim, shape);
    size_t bytes = (size_t)t->numel * sizeof(gx_real);
    if (t->device == GX_DEVICE_CUDA) gx_cuda_exec_upload(ctx->cuda, t->data, src, bytes);
    else memcpy(t->data, src, bytes);
    return t;
}

gx_tensor *gx_tensor_scalar(gx_ctx *ctx, gx_real v) {
    return gx_tensor_from(ctx, 0, NULL, &v);
}

/* ------------------------------------------------------------ context, tape */

void gx_ctx_init(gx_ctx *ctx, size_t arena_bytes) {
    memset(ctx, 0, sizeof *ctx);
    /* On by default: it costs well under 1% (gx_matmul.c), and a caller
     * that forgets it would get answers that depend on the batch. */
    ctx->batch_invariant = 1;
    gx_arena_init(&ctx->arena, arena_bytes, 0);
}

void gx_ctx_free(gx_ctx *ctx) {
    /* The ctx's device activations go with it (an exec serves one ctx at a
     * time); the exec itself, and its pool blocks, stay for the next ctx. */
    if (ctx->cuda) gx_cuda_device_reset(ctx->cuda);
    for (int i = 0; i < ctx->n_side; i++) gx_ctx_free(&ctx->side[i]);
    free(ctx->side);
    free(ctx->scratch);
    gx_arena_free(&ctx->arena);
    memset(ctx, 0, sizeof *ctx);
}

void *gx_ctx_scratch(gx_ctx *ctx, size_t bytes) {
    if (bytes <= ctx->scratch_cap) return ctx->scratch;
    size_t cap = (bytes + GX_ARENA_ALIGN - 1) & ~(size_t)(GX_ARENA_ALIGN - 1);
    void *p = aligned_alloc(GX_ARENA_ALIGN, cap);
    if (!p) return NULL;
    free(ctx->scratch);
    ctx->scratch = p;
    ctx->scratch_cap = cap;
    return p;
}

void gx_ctx_reset(gx_ctx *ctx) {
    /* Queued kernels may still read the device arena: wait for them before
     * its blocks can go back to the pool (the error stays for the caller's
     * next gx_cuda_exec_sync). */
    if (ctx->cuda) gx_cuda_device_reset(ctx->cuda);
    gx_arena_reset(&ctx->arena);
    ctx->tape = NULL;
    ctx->n_nodes = 0;
}

/* n_side side contexts for gx_ctx_for_parts (one per thread of a split
 * call); fewer when the array cannot grow (a side context's arena itself
 * grows on demand). Returns how many there are. */
static int gx_ctx_sides(gx_ctx *ctx, int want) {
    if (want <= ctx->n_side) return want;
    gx_ctx *s = realloc(ctx->side, (size_t)want * sizeof *s);
    if (!s) return ctx->n_side;
    for (int i = ctx->n_side; i < want; i++) {
        gx_ctx_init(&s[i], 0);
        s[i].arena.limit = ctx->arena.limit;   /* a cap on the ctx caps each part */
    }
    ctx->side = s;
    ctx->n_side = want;
    return want;
}

/* How many parts: a multiple of the threads, up to GX_PARTS_PER_THREAD
 * each, while a part keeps at least GX_PART_MIN_ROWS rows (its GEMMs stay
 * wide enough to run at speed); never fewer parts than min(threads, n).
 * More parts than threads let a thread that lost its core for a while
 * (the HTTP threads, another process: a 2-core VM has no spare core) take
 * fewer of them instead of holding the others at the end of the region
 * (docs/benchmarks.md, 2026-11-24 "parts"). 8 rows, not 4: a ResNet-18
 * part of 4 images gives its 2x2 and 4x4 layers 16 and 64 columns side by
 * side; UDA predict at batch 32 on 2 threads took 76 ms in 8 parts of 4
 * and 66.6 in 4 of 8, CF-INN classify 19.4-19.9 -> 17.7-18.5 ms
 * (2026-11-25, docs/benchmarks.md). */
#define GX_PARTS_PER_THREAD 4
#define GX_PART_MIN_ROWS 8
static int64_t gx_parts_count(int64_t n, int64_t threads, int max_parts) {
    int64_t k = n / (threads * GX_PART_MIN_ROWS);
    if (k > GX_PARTS_PER_THREAD) k = GX_PARTS_PER_THREAD;
    if (k < 1) k = 1;
    int64_t p = threads * k;
    if (max_parts > 0 && p > max_parts) p = max_parts;
    return p > n ? n : p;
}

int gx_ctx_for_parts(gx_ctx *ctx, int64_t n, int max_parts, gx_part_fn fn, void *arg) {
    if (n <= 0) return 0;
    /* gx_get_threads' value, read here directly: gx_core.c is linked
     * without gx_blas.c (the fuzz targets) and without OpenMP (1). */
#ifdef _OPENMP
    const int64_t threads = omp_in_parallel() ? 1 : omp_get_max_threads();
#else
    const int64_t threads = 1;
#endif
    if (threads < 2 || ctx->grad_enabled || ctx->cuda) {
        fn(ctx, 0, n, arg);
        return 1;
    }
    int64_t np = gx_parts_count(n, threads, max_parts);
    int nt = (int)(np < threads ? np : threads);
    if (np > 1) nt = gx_ctx_sides(ctx, nt);
    if (nt < 2) np = nt = 1;   /* no side context could be made: one part on ctx */
    for (int i = 0; np > 1 && i < nt; i++) {   /* may change between calls */
        ctx->side[i].batch_invariant = ctx->batch_invariant;
        ctx->side[i].sk_avx2_only = ctx->sk_avx2_only;
    }
    /* Contiguous parts, sizes differing by at most one: part i is
     * [i n / np, (i + 1) n / np). Several parts: thread t runs the parts it
     * takes (dynamically) on side context t, reset after each, so the
     * memory is one part per thread whatever the split. A single part
     * (n = 1) runs on ctx, still inside a team of two, the second thread
     * idle: OpenBLAS's sgemm does not give the same bits at 1 and 2
     * threads, so every part's ops must run on one thread for a row's bits
     * not to depend on whether its batch was split (a lone image against
     * the same image among 63 others). */
    #pragma omp parallel num_threads(nt > 1 ? nt : 2)
    {
#ifdef _OPENMP
        omp_set_num_threads(1);   /* nested regions of this part: one thread */
        const int t = omp_get_thread_num();
#else
        const int t = 0;
#endif
        gx_ctx *c = np > 1 ? &ctx->side[t] : ctx;
        #pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < np; i++) {
            fn(c, n * i / np, n * (i + 1) / np, arg);
            if (np > 1) gx_ctx_reset(c);
        }
    }
    return (int)np;
}

gx_node *gx_tape_record(gx_ctx *ctx, const char *op, gx_backward_fn bw,
                        gx_tensor *out, int n_in, gx_tensor *const *in) {
    if (!ctx->grad_enabled) return NULL;
    GX_ASSERT(n_in <= GX_NODE_MAX_IN);
    int any = 0;
    for (int i = 0; i < n_in; i++) any |= in[i] && in[i]->requires_grad;
    if (!any) return NULL;
    gx_node *n = gx_ctx_alloc(ctx, sizeof *n);
    memset(n, 0, sizeof *n);
    n->backward = bw;
    n->op = op;
    n->out = out;
    n->n_in = n_in;
    for (int i = 0; i < n_in; i++) n->in[i] = in[i];
    n->prev = ctx->tape;
    ctx->tape = n;
    ctx->n_nodes++;
    out->requires_grad = 1;
    return n;
}

gx_real *gx_grad(gx_ctx *ctx, gx_tensor *t) {
    if (!t || !t->requires_grad) return NULL;
    if (!t->grad) {
        size_t bytes = (size_t)t->numel * sizeof(gx_real);
        if (t->device == GX_DEVICE_CUDA) {
            GX_ASSERT_MSG(ctx->cuda, "gradient of a device tensor in a ctx without a device");
            t->grad = gx_cuda_ctx_alloc(ctx, bytes);
            gx_cuda_exec_memset0(ctx->cuda, t->grad, bytes);
        } else {
            t->grad = gx_ctx_alloc(ctx, bytes);
            memset(t->grad, 0, bytes);
        }
    }
    return t->grad;
}

void gx_backward(gx_ctx *ctx, gx_tensor *t, const gx_real *seed) {
    GX_ASSERT_MSG(t->requires_grad, "backward from a tensor that does not require grad");
    gx_real *g = gx_grad(ctx, t);
    if (t->device == GX_DEVICE_CUDA) gx_cuda_seed_grad(ctx, t, seed);
    else for (int64_t i = 0; i < t->numel; i++) g[i] += seed ? seed[i] : 1;
    /* Nodes run newest first. A node whose output received no gradient
     * (e.g. an unused branch) is skipped. Grad recording is off during the
     * sweep so backward code that calls ops does not extend the tape. */
    int saved = ctx->grad_enabled;
    ctx->grad_enabled = 0;
    for (gx_node *n = ctx->tape; n; n = n->prev)
        if (n->out->grad) n->backward(ctx, n);
    ctx->grad_enabled = saved;
}

/* ------------------------------------------------------------ parameters */

void gx_params_init(gx_params *p) { memset(p, 0, sizeof *p); }

void gx_params_init_shapes(gx_params *p) {
    gx_params_init(p);
    p->shape_only = 1;
}

void gx_params_free(gx_params *p) {
    if (p->cuda) gx_params_free_cuda(p);
    for (int i = 0; i < p->n; i++) {
        free(p->items[i]->t.data);
        free(p->items[i]->t.grad);
        free(p->items[i]->t.cache);
        free(p->items[i]);
    }
    free(p->items);
    memset(p, 0, sizeof *p);
}

gx_tensor *gx_params_add(gx_params *p, const char *name, int ndim,
                         const int64_t *shape, unsigned flags) {
    GX_ASSERT_MSG(strlen(name) < sizeof(((gx_param *)0)->name), "parameter name too long: %s", name);
    GX_ASSERT_MSG(!gx_params_find(p, name), "duplicate parameter name %s", name);
    GX_ASSERT(ndim >= 0 && ndim <= GX_MAX_DIMS);
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 64;
        p->items = realloc(p->items, (size_t)p->cap * sizeof *p->items);
        GX_ASSERT(p->items);
    }
    gx_param *q = calloc(1, sizeof *q);
    GX_ASSERT(q);
    snprintf(q->name, sizeof q->name, "%s", name);
    q->flags = flags;
    q->t.ndim = ndim;
    for (int i = 0; i < ndim; i++) q->t.shape[i] = shape[i];
    q->t.numel = gx_shape_numel(ndim, shape);
    q->t.name = q->name;
    size_t bytes = (size_t)(q->t.numel ? q->t.numel : 1) * sizeof(gx_real);
    if (p->shape_only) {
        /* See gx_params_init_shapes: large tensors stay unallocated. */
        if (q->t.numel <= GX_PARAMS_SHAPE_SMALL) {
            q->t.data = calloc(1, bytes);
            GX_ASSERT(q->t.data);
        }
        p->items[p->n++] = q;
        return &q->t;
    }
    q->t.data = calloc(1, bytes);
    GX_ASSERT(q->t.data);
    if (!(flags & (GX_PARAM_BUFFER | GX_PARAM_FROZEN))) {
        q->t.grad = calloc(1, bytes);
        GX_ASSERT(q->t.grad);
        q->t.requires_grad = 1;
    }
    p->items[p->n++] = q;
    return &q->t;
}

gx_param *gx_params_find(const gx_params *p, const char *name) {
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->items[i]->name, name) == 0) return p->items[i];
    return NULL;
}

void gx_params_zero_grad(gx_params *p) {
    if (p->cuda) {
        for (int i = 0; i < p->n; i++)
            if (p->items[i]->t.grad)
                gx_cuda_exec_memset0(p->cuda, p->items[i]->t.grad, (size_t)p->items[i]->t.numel * sizeof(gx_real));
        return;
    }
    for (int i = 0; i < p->n; i++)
        if (p->items[i]->t.grad)
            memset(p->items[i]->t.grad, 0, (size_t)p->items[i]->t.numel * sizeof(gx_real));
}

void gx_params_drop_grads(gx_params *p) {
    GX_ASSERT_MSG(!p->cuda, "gx_params_drop_grads: the parameters are on the device (drop before gx_params_to_cuda)");
    for (int i = 0; i < p->n; i++) {
        free(p->items[i]->t.grad);
        p->items[i]->t.grad = NULL;
        p->items[i]->t.requires_grad = 0;
    }
}

void gx_params_freeze(gx_params *p) {
    for (int i = 0; i < p->n; i++) p->items[i]->t.frozen = 1;
}

int64_t gx_params_count(const gx_params *p, unsigned mask) {
    int64_t n = 0;
    for (int i = 0; i < p->n; i++) {
        unsigned f = p->items[i]->flags;
        int take = mask ? (f & mask) != 0 : !(f & (GX_PARAM_BUFFER | GX_PARAM_FROZEN));
        if (take) n += p->items[i]->t.numel;
    }
    return n;
}

void gx_params_scale_grad(gx_params *p, double s) {
    if (p->cuda) {
        for (int i = 0; i < p->n; i++)
            if (p->items[i]->t.grad) gx_cuda_exec_scale(p->cuda, p->items[i]->t.grad, p->items[i]->t.numel, s);
        return;
    }
    for (int i = 0; i < p->n; i++) {
        gx_tensor *t = &p->items[i]->t;
        if (!t->grad) continue;
        for (int64_t k = 0; k < t->numel; k++) t->grad[k] = (gx_real)(t->grad[k] * s);
    }
}
