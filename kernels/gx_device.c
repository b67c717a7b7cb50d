/*
 * gx_device.c — tensors on the device: a worker's exec (stream + device
 * arena), placement of a ctx's tensors, the transfer ops gx_to_device /
 * gx_to_host with their backward, and parameters uploaded once.
 *
 * The ops themselves dispatch in their family files (GX_CUDA_DISPATCH) to
 * kernels/cuda/gx_cuda_ops_*.c; this file is only the memory plumbing, so it
 * is compiled into every build and tested on machines without a GPU through
 * an emulated exec (host memory behind the pool, memcpy for copies).
 */
#include "gx_impl.h"
#include "gx_cuda.h"

#include <math.h>
#include <stdlib.h>

/* ------------------------------------------------------------ the exec */

gx_status gx_cuda_exec_init(gx_cuda_exec *e, gx_cuda_pool *pool, int device, int tf32, gx_err *err) {
    memset(e, 0, sizeof *e);
    gx_status st = gx_cuda_stream_create(device, tf32, &e->stream, err);
    if (st != GX_OK) return st;
    e->pool = pool;
    gx_cuda_arena_init(&e->arena, pool, 0);
    return GX_OK;
}

void gx_cuda_exec_init_emulated(gx_cuda_exec *e, gx_cuda_pool *pool) {
    memset(e, 0, sizeof *e);
    e->pool = pool;
    e->emulated = 1;
    gx_cuda_arena_init(&e->arena, pool, 0);
}

gx_status gx_cuda_exec_init_on(gx_cuda_exec *e, const gx_cuda_exec *owner, gx_err *err) {
    memset(e, 0, sizeof *e);
    if (!owner->stream) return gx_err_set(err, GX_ERR_UNSUPPORTED, "gx_cuda_exec_init_on: the owner has no stream");
    e->stream = owner->stream;
    e->borrowed = 1;
    e->pool = owner->pool;
    gx_cuda_arena_init(&e->arena, e->pool, 0);
    return GX_OK;
}

void gx_cuda_exec_free(gx_cuda_exec *e) {
    if (e->stream && e->borrowed) {
        gx_err ignored;
        gx_cuda_stream_sync(e->stream, &ignored);   /* its queued work may still use the arena */
    } else if (e->stream) {
        gx_cuda_stream_destroy(e->stream); /* waits for the stream */
    }
    gx_cuda_arena_free(&e->arena);
    memset(e, 0, sizeof *e);
}

static void gx_cuda_exec_note(gx_cuda_exec *e, gx_status st, const gx_err *err) {
    if (st == GX_OK || e->status != GX_OK) return;
    e->status = st;
    e->err = *err;
}

/* Waits for the stream; its error joins the kept one, which is returned and
 * kept (for the caller's gx_cuda_exec_sync). */
static gx_status gx_cuda_exec_wait(gx_cuda_exec *e) {
    e->waits++;
    if (e->stream) {
        gx_err se;
        gx_status st = gx_cuda_stream_sync(e->stream, &se);
        gx_cuda_exec_note(e, st, &se);
    }
    return e->status;
}

gx_status gx_cuda_exec_sync(gx_cuda_exec *e, gx_err *err) {
    gx_status st = gx_cuda_exec_wait(e);
    if (st != GX_OK && err) *err = e->err;
    e->status = GX_OK;
    return st;
}

void gx_cuda_exec_upload(gx_cuda_exec *e, void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    if (e->emulated) memcpy(dst, src, bytes);
    else gx_cuda_upload(e->stream, dst, src, bytes);
}

void gx_cuda_exec_download(gx_cuda_exec *e, void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    if (e->emulated) memcpy(dst, src, bytes);
    else gx_cuda_download(e->stream, dst, src, bytes);
}

void gx_cuda_exec_memset0(gx_cuda_exec *e, void *dst, size_t bytes) {
    if (!bytes) return;
    if (e->emulated) memset(dst, 0, bytes);
    else gx_cuda_memset0(e->stream, dst, bytes);
}

/* x *= s in place on the device (gradients of a partial accumulation
 * group): the affine launcher with y aliasing x, one element per thread. */
void gx_cuda_exec_scale(gx_cuda_exec *e, gx_real *x, int64_t n, double s) {
    if (n <= 0) return;
    if (e->emulated) {
        for (int64_t k = 0; k < n; k++) x[k] = (gx_real)(x[k] * s);
        return;
    }
#if GX_CUDA_ON
    gx_cu_unary_fwd(e->stream, GX_CU_AFFINE, s, 0.0, x, x, n);
#else
    GX_ASSERT_MSG(0, "gx_cuda_exec_scale: a device exec in a build without CUDA");
#endif
}

static void *gx_host_backend_alloc(void *user, size_t bytes) {
    (void)user;
    return aligned_alloc(GX_CUDA_ALIGN, (bytes + GX_CUDA_ALIGN - 1) / GX_CUDA_ALIGN * GX_CUDA_ALIGN);
}
static void gx_host_backend_free(void *user, void *p) { (void)user; free(p); }

gx_cuda_backend gx_cuda_host_backend(void) {
    return (gx_cuda_backend){ gx_host_backend_alloc, gx_host_backend_free, NULL };
}

/* Called by gx_ctx_reset: the arena's blocks may go back to the pool. */
void gx_cuda_device_reset(gx_cuda_exec *e) {
    gx_cuda_exec_wait(e);
    /* The pass that got placeholder addresses is over (gx_cuda_ctx_alloc):
     * launches may run again; its error stays kept for gx_cuda_exec_sync. */
    if (e->stream) gx_cuda_stream_resume(e->stream);
    gx_status st = gx_cuda_arena_reset(&e->arena);
    if (st != GX_OK) {
        gx_err me;
        gx_err_set(&me, st, "device arena: coalescing to %zu bytes failed", e->arena.high_water);
        gx_cuda_exec_note(e, st, &me);
    }
}

/* ------------------------------------------------------ ctx placement */

/* Out of device memory in the middle of a pass is the device's error, not
 * the program's: the stream is failed (gx_cuda_stream_fail: every later
 * launch and copy is skipped until the sync reports "out of device memory")
 * and the caller gets a placeholder address that nothing will touch, so the
 * pass runs to its end on the host and the batch or step fails at its sync.
 * An emulated exec (no stream: tests) still asserts. */
#define GX_CUDA_PLACEHOLDER ((void *)(uintptr_t)GX_CUDA_ALIGN)

void *gx_cuda_ctx_alloc(gx_ctx *ctx, size_t bytes) {
    GX_ASSERT_MSG(ctx->cuda, "device memory requested from a ctx without a device");
    gx_cuda_exec *e = ctx->cuda;
    void *p = gx_cuda_arena_alloc(&e->arena, bytes ? bytes : 1);
    if (p) return p;
    GX_ASSERT_MSG(e->stream, "device arena: the pool refused %zu bytes (%zu in use, %zu reserved)", bytes,
                  gx_cuda_pool_in_use(e->pool), gx_cuda_pool_reserved(e->pool));
    char msg[160];
    snprintf(msg, sizeof msg, "out of device memory: the activations needed %zu bytes more (%zu in use, %zu reserved)",
             bytes, gx_cuda_pool_in_use(e->pool), gx_cuda_pool_reserved(e->pool));
    gx_cuda_stream_fail(e->stream, msg);
    return GX_CUDA_PLACEHOLDER;
}

gx_cuda_exec *gx_cuda_op_exec(gx_ctx *ctx, const char *op) {
    GX_ASSERT_MSG(ctx->cuda, "%s: device tensors in a ctx without a device (set ctx->cuda)", op);
    GX_ASSERT_MSG(!ctx->cuda->emulated, "%s: an emulated device runs no ops", op);
    return ctx->cuda;
}

/* dst (device) += src (host), n values. */
static void gx_cuda_add_from_host(gx_ctx *ctx, gx_real *dst, const gx_real *src, int64_t n) {
    gx_cuda_exec *e = ctx->cuda;
    if (e->emulated) {
        for (int64_t i = 0; i < n; i++) dst[i] += src[i];
        return;
    }
#if GX_CUDA_ON
    gx_real *tmp = gx_cuda_ctx_alloc(ctx, (size_t)n * sizeof(gx_real));
    gx_cuda_exec_upload(e, tmp, src, (size_t)n * sizeof(gx_real));
    gx_cu_accumulate(e->stream, dst, tmp, n);
#else
    GX_ASSERT_MSG(0, "a device exec in a build without CUDA");
#endif
}

/* dst (host) += src (device), n values; waits for the device. */
static void gx_cuda_add_to_host(gx_ctx *ctx, gx_real *dst, const gx_real *src, int64_t n) {
    gx_real *tmp = gx_ctx_alloc(ctx, (size_t)n * sizeof(gx_real));
    gx_cuda_exec_download(ctx->cuda, tmp, src, (size_t)n * sizeof(gx_real));
    if (gx_cuda_exec_wait(ctx->cuda) != GX_OK)
        for (int64_t i = 0; i < n; i++) tmp[i] = (gx_real)NAN;
    for (int64_t i = 0; i < n; i++) dst[i] += tmp[i];
}

void gx_cuda_seed_grad(gx_ctx *ctx, gx_tensor *t, const gx_real *seed) {
    gx_real *ones = NULL;
    if (!seed) {
        ones = gx_ctx_alloc(ctx, (size_t)t->numel * sizeof(gx_real));
        for (int64_t i = 0; i < t->numel; i++) ones[i] = 1;
    }
    gx_cuda_add_from_host(ctx, t->grad, seed ? seed : ones, t->numel);
}

/* ------------------------------------------------------ transfer ops */

static void gx_to_device_bw(gx_ctx *ctx, gx_node *nd) {
    gx_real *gi = gx_grad(ctx, nd->in[0]);
    if (gi) gx_cuda_add_to_host(ctx, gi, nd->out->grad, nd->out->numel);
}

gx_tensor *gx_to_device(gx_ctx *ctx, gx_tensor *t) {
    if (t->device == GX_DEVICE_CUDA) return t;
    GX_ASSERT_MSG(ctx->cuda, "gx_to_device: the ctx has no device (set ctx->cuda)");
    gx_tensor *out = gx_tensor_from(ctx, t->ndim, t->shape, t->data);
    gx_tape_record(ctx, "to_device", gx_to_device_bw, out, 1, &t);
    return out;
}

static void gx_to_host_bw(gx_ctx *ctx, gx_node *nd) {
    gx_real *gi = gx_grad(ctx, nd->in[0]);
    if (gi) gx_cuda_add_from_host(ctx, gi, nd->out->grad, nd->out->numel);
}

gx_tensor *gx_to_host(gx_ctx *ctx, gx_tensor *t) {
    if (t->device != GX_DEVICE_CUDA) return t;
    GX_ASSERT_MSG(ctx->cuda, "gx_to_host: a device tensor in a ctx without a device");
    gx_tensor *out = gx_tensor_new_host(ctx, t->ndim, t->shape);
    gx_cuda_exec_download(ctx->cuda, out->data, t->data, (size_t)t->numel * sizeof(gx_real));
    /* A failed device leaves NaNs, never stale or uninitialised values; the
     * error itself reaches the caller through gx_cuda_exec_sync. */
    if (gx_cuda_exec_wait(ctx->cuda) != GX_OK)
        for (int64_t i = 0; i < out->numel; i++) out->data[i] = (gx_real)NAN;
    gx_tape_record(ctx, "to_host", gx_to_host_bw, out, 1, &t);
    return out;
}

gx_tensor *gx_to_ctx(gx_ctx *ctx, gx_tensor *t) {
    return ctx->cuda ? gx_to_device(ctx, t) : t;
}

void gx_to_host_scalars(gx_ctx *ctx, int n, gx_tensor *const *t, double *out) {
    GX_ASSERT_MSG(n >= 0 && n <= GX_TO_HOST_MAX_SCALARS, "gx_to_host_scalars: %d values (at most %d)", n,
                  GX_TO_HOST_MAX_SCALARS);
    gx_tensor *parts[GX_TO_HOST_MAX_SCALARS];
    int where[GX_TO_HOST_MAX_SCALARS], k = 0;
    for (int i = 0; i < n; i++) {
        out[i] = NAN;
        if (!t[i]) continue;
        GX_ASSERT_MSG(t[i]->numel == 1, "gx_to_host_scalars: value %d has %lld elements, not 1", i,
                      (long long)t[i]->numel);
        if (t[i]->device != GX_DEVICE_CUDA) { out[i] = (double)t[i]->data[0]; continue; }
        where[k] = i;
        parts[k++] = t[i];
    }
    if (k == 0) return;
    int grad = ctx->grad_enabled;
    ctx->grad_enabled = 0;
    for (int j = 0; j < k; j++) parts[j] = gx_reshape(ctx, parts[j], 1, GX_SHAPE(1));
    const gx_real *h = gx_to_host(ctx, k == 1 ? parts[0] : gx_concat(ctx, k, parts, 0))->data;
    ctx->grad_enabled = grad;
    for (int j = 0; j < k; j++) out[where[j]] = (double)h[j];
}

const gx_real *gx_tensor_host_data(const gx_tensor *t) {
    if (t->device != GX_DEVICE_CUDA) return t->data;
    GX_ASSERT_MSG(t->name, "gx_tensor_host_data: a device activation has no host copy (use gx_to_host)");
    /* gx_param starts with its tensor (gx.h), so a parameter's tensor
     * pointer is its gx_param. */
    const gx_param *q = (const gx_param *)(const void *)t;
    GX_ASSERT_MSG(q->host_data, "gx_tensor_host_data: %s has no host copy", t->name);
    return q->host_data;
}

/* --------------------------------------------------------- parameters */

static size_t gx_param_bytes(const gx_param *q) {
    return (size_t)(q->t.numel ? q->t.numel : 1) * sizeof(gx_real);
}

gx_status gx_params_to_cuda(gx_params *p, gx_cuda_exec *e, gx_err *err) {
    if (p->cuda) return gx_err_set(err, GX_ERR_INVALID, "gx_params_to_cuda: the parameters are on a device already");
    /* All blocks first, so a refusal leaves the parameters on the host. */
    void **blk = calloc((size_t)(2 * p->n + 1), sizeof *blk);
    if (!blk) return gx_err_set(err, GX_ERR_NOMEM, "gx_params_to_cuda: out of host memory");
    gx_status st = GX_OK;
    size_t total = 0;
    for (int i = 0; i < p->n && st == GX_OK; i++) {
        const gx_param *q = p->items[i];
        size_t b = gx_param_bytes(q);
        blk[2 * i] = gx_cuda_pool_alloc(e->pool, b);
        if (q->t.grad) blk[2 * i + 1] = gx_cuda_pool_alloc(e->pool, b);
        if (!blk[2 * i] || (q->t.grad && !blk[2 * i + 1]))
            st = gx_err_set(err, GX_ERR_NOMEM, "gx_params_to_cuda: out of device memory: %zu bytes for %s "
                            "refused (%zu bytes of parameters placed before it, %zu bytes reserved)", b, q->name,
                            total, gx_cuda_pool_reserved(e->pool));
        total += b * (q->t.grad ? 2 : 1);
    }
    if (st != GX_OK) {
        for (int i = 0; i < p->n; i++) {
            size_t b = gx_param_bytes(p->items[i]);
            if (blk[2 * i]) gx_cuda_pool_free(e->pool, blk[2 * i], b);
            if (blk[2 * i + 1]) gx_cuda_pool_free(e->pool, blk[2 * i + 1], b);
        }
        free(blk);
        return st;
    }
    for (int i = 0; i < p->n; i++) {
        gx_param *q = p->items[i];
        size_t b = gx_param_bytes(q);
        gx_cuda_exec_upload(e, blk[2 * i], q->t.data, b);
        q->host_data = q->t.data;
        q->t.data = blk[2 * i];
        if (q->t.grad) {
            gx_cuda_exec_memset0(e, blk[2 * i + 1], b);
            q->host_grad = q->t.grad;
            q->t.grad = blk[2 * i + 1];
        }
        q->t.device = GX_DEVICE_CUDA;
    }
    free(blk);
    p->cuda = e;
    return gx_cuda_exec_sync(e, err);
}

gx_status gx_params_sync_host(gx_params *p, gx_err *err) {
    if (!p->cuda) return GX_OK;
    for (int i = 0; i < p->n; i++) {
        gx_param *q = p->items[i];
        size_t b = gx_param_bytes(q);
        gx_cuda_exec_download(p->cuda, q->host_data, q->t.data, b);
        if (q->host_grad) gx_cuda_exec_download(p->cuda, q->host_grad, q->t.grad, b);
    }
    return gx_cuda_exec_sync(p->cuda, err);
}

gx_status gx_params_sync_device(gx_params *p, gx_err *err) {
    if (!p->cuda) return GX_OK;
    for (int i = 0; i < p->n; i++) {
        gx_param *q = p->items[i];
        gx_cuda_exec_upload(p->cuda, q->t.data, q->host_data, gx_param_bytes(q));
    }
    return gx_cuda_exec_sync(p->cuda, err);
}

/* gx_params_free's device half: blocks back to the pool, host buffers back
 * in t so the host half frees them. */
void gx_params_free_cuda(gx_params *p) {
    gx_cuda_exec *e = p->cuda;
    gx_cuda_exec_wait(e);
    for (int i = 0; i < p->n; i++) {
        gx_param *q = p->items[i];
        size_t b = gx_param_bytes(q);
        gx_cuda_pool_free(e->pool, q->t.data, b);
        if (q->host_grad) gx_cuda_pool_free(e->pool, q->t.grad, b);
        q->t.data = q->host_data;
        q->t.grad = q->host_grad;
        q->host_data = q->host_grad = NULL;
        q->t.device = GX_DEVICE_CPU;
    }
    p->cuda = NULL;
}

/* ---------------------------------------------- a pass replayed as a graph */

gx_status gx_cuda_pass_init(gx_cuda_pass *p, const gx_cuda_exec *owner, gx_err *err) {
    memset(p, 0, sizeof *p);
    gx_status s = gx_cuda_exec_init_on(&p->in_exec, owner, err);
    if (s == GX_OK && (s = gx_cuda_exec_init_on(&p->run_exec, owner, err)) != GX_OK) gx_cuda_exec_free(&p->in_exec);
    if (s != GX_OK) {
        memset(p, 0, sizeof *p);
        return s;
    }
    p->stream = owner->stream;
    gx_ctx_init(&p->in_ctx, 0);
    gx_ctx_init(&p->ctx, 0);
    p->in_ctx.cuda = &p->in_exec;
    p->ctx.cuda = &p->run_exec;
    p->in_ctx.grad_enabled = p->ctx.grad_enabled = 0;
    return GX_OK;
}

/* One eager run of body on the rewound arena; its device error, named. */
static gx_status gx_cuda_pass_eager(gx_cuda_pass *p, gx_cuda_graph_body body, void *arg, const char *what,
                                    gx_err *err) {
    gx_err e2;
    gx_ctx_reset(&p->ctx);
    body(arg);
    if (gx_cuda_exec_sync(&p->run_exec, &e2) != GX_OK || gx_cuda_exec_sync(&p->in_exec, &e2) != GX_OK)
        return gx_err_set(err, GX_ERR_IO, "%s: %s", what, e2.msg);
    return GX_OK;
}

gx_status gx_cuda_pass_capture(gx_cuda_pass *p, gx_cuda_graph_body body, void *arg, gx_err *err) {
    gx_err e2;
    /* The warm-up sizes the arena; the rewind coalesces it into one chunk,
     * where the second eager pass runs at the addresses the capture will
     * use (and leaves its values there for gx_cuda_pass_verify). */
    gx_status s = gx_cuda_pass_eager(p, body, arg, "the warm-up pass", err);
    if (s == GX_OK) s = gx_cuda_pass_eager(p, body, arg, "the eager pass", err);
    if (s != GX_OK) return s;
    gx_ctx_reset(&p->ctx);
    const int chunks = p->run_exec.arena.nchunks;
    s = gx_cuda_graph_capture(p->stream, body, arg, &p->graph, err);
    if (s != GX_OK) {
        gx_ctx_reset(&p->ctx);
        gx_cuda_exec_sync(&p->run_exec, &e2);   /* a refused wait is kept there: drop it */
        return s;
    }
    if (chunks != 1 || p->run_exec.arena.nchunks != 1) {
        /* A grown arena is coalesced at the next rewind: the graph's
         * addresses would go back to the pool. */
        gx_cuda_graph_destroy(p->graph);
        p->graph = NULL;
        return gx_err_set(err, GX_ERR_UNSUPPORTED, "the activations' arena grew during the capture");
    }
    return GX_OK;
}

/* Equal to float rounding (NaN as NaN): cuBLAS may pick another algorithm
 * inside a capture, which moves last bits; what the check is for (a stale
 * or host-dependent value baked into the graph) moves far more. */
static int gx_cuda_pass_same(double a, double b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return a == b || fabs(a - b) <= 1e-5 * (1.0 + fabs(a));
}

gx_status gx_cuda_pass_verify(gx_cuda_pass *p, int n, gx_real *const *out, const int64_t *numel, gx_err *err) {
    int64_t total = 0;
    for (int k = 0; k < n; k++) total += numel[k];
    gx_real *a = malloc((size_t)(total ? total : 1) * sizeof *a), *b = malloc((size_t)(total ? total : 1) * sizeof *b);
    gx_status s = a && b ? GX_OK : gx_err_set(err, GX_ERR_NOMEM, "verifying the graph: out of host memory");
    gx_err e2;
    if (s == GX_OK) {
        /* Every output's eager values first, then one replay, then its. */
        for (int64_t k = 0, off = 0; k < n; off += numel[k], k++)
            gx_cuda_exec_download(&p->in_exec, a + off, out[k], (size_t)numel[k] * sizeof *a);
        gx_cuda_pass_begin(p);
        gx_cuda_pass_launch(p);
        for (int64_t k = 0, off = 0; k < n; off += numel[k], k++)
            gx_cuda_exec_download(&p->in_exec, b + off, out[k], (size_t)numel[k] * sizeof *b);
        if (gx_cuda_exec_sync(&p->in_exec, &e2) != GX_OK || gx_cuda_exec_sync(&p->run_exec, &e2) != GX_OK)
            s = gx_err_set(err, GX_ERR_IO, "the first replay: %s", e2.msg);
    }
    for (int64_t k = 0, off = 0; s == GX_OK && k < n; off += numel[k], k++) {
        int64_t bad = 0, first = -1;
        for (int64_t i = 0; i < numel[k]; i++)
            if (!gx_cuda_pass_same(a[off + i], b[off + i]) && bad++ == 0) first = i;
        if (bad)
            s = gx_err_set(err, GX_ERR_UNSUPPORTED, "the first replay differs from the eager pass in output %d "
                           "(%lld of %lld values; first [%lld]: %g against %g)", (int)k, (long long)bad,
                           (long long)numel[k], (long long)first, (double)b[off + first], (double)a[off + first]);
    }
    free(a);
    free(b);
    return s;
}

void gx_cuda_pass_begin(gx_cuda_pass *p) { gx_ctx_reset(&p->ctx); }

void gx_cuda_pass_launch(gx_cuda_pass *p) { gx_cuda_graph_launch(p->stream, p->graph); }

void gx_cuda_pass_free(gx_cuda_pass *p) {
    if (!p->stream) return;
    gx_cuda_graph_destroy(p->graph);
    gx_ctx_free(&p->ctx);
    gx_ctx_free(&p->in_ctx);
    gx_cuda_exec_free(&p->run_exec);
    gx_cuda_exec_free(&p->in_exec);
    memset(p, 0, sizeof *p);
}
