/*
 * gx_cuda_host.c — the host-side half of the CUDA backend, compiled in every
 * build: device selection, the device pool's and arena's bookkeeping, and
 * (when there is no CUDA in this build) the answers of a CPU-only build.
 *
 * The pool and the arena never touch device memory themselves: blocks come
 * from a gx_cuda_backend (cudaMalloc on a GPU, malloc in tests), and all free
 * lists live in host memory (a free list threaded through the blocks would
 * need a device write per free). That keeps their logic testable on machines
 * without a GPU (tests/unit/test_cuda_select.c).
 */
#include "gx_cuda.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* -------------------------------------------------------------- select */

gx_status gx_device_select(const char *want, gx_device *out, char *log, size_t n) {
    char tmp[2];
    if (!log || n == 0) { log = tmp; n = sizeof tmp; }
    if (!want) want = "auto";
    *out = GX_DEVICE_CPU;
    if (strcmp(want, "cpu") == 0) {
        snprintf(log, n, "device: cpu (requested)");
        return GX_OK;
    }
    if (strcmp(want, "cuda") != 0 && strcmp(want, "auto") != 0) {
        snprintf(log, n, "device: '%s' is not one of cpu, cuda, auto", want);
        return GX_ERR_INVALID;
    }
    char why[160];
    int ndev = gx_cuda_probe(why, sizeof why);
    if (ndev > 0) {
        *out = GX_DEVICE_CUDA;
        snprintf(log, n, "device: cuda:0 (%d device%s usable)", ndev, ndev > 1 ? "s" : "");
        return GX_OK;
    }
    /* Falling back from an explicit request is worth a warning; from auto
     * it is the expected answer on a machine without a GPU. */
    snprintf(log, n, "%sdevice: cpu (%s requested: %s)",
             strcmp(want, "cuda") == 0 ? "warning: " : "", want, why);
    return GX_OK;
}

/* ---------------------------------------------------------------- pool */

int gx_cuda_pool_class(size_t bytes) {
    if (bytes == 0 || bytes > GX_CUDA_MAX_CLASS) return -1;
    int c = 0;
    size_t sz = GX_CUDA_MIN_CLASS;
    while (sz < bytes) { sz <<= 1; c++; }
    return c;
}

static size_t gx_cuda_class_size(int c) { return (size_t)GX_CUDA_MIN_CLASS << c; }

size_t gx_cuda_pool_block_bytes(size_t bytes) {
    int c = gx_cuda_pool_class(bytes);
    if (c >= 0) return gx_cuda_class_size(c);
    return (bytes + GX_CUDA_ALIGN - 1) & ~(size_t)(GX_CUDA_ALIGN - 1);
}

/* A growable array of pointers (free blocks of one class, or slabs). */
typedef struct { void **v; size_t n, cap; } gx_cuda_ptrs;

static int gx_cuda_ptrs_push(gx_cuda_ptrs *a, void *p) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        void **v = realloc(a->v, cap * sizeof *v);
        if (!v) return 0;
        a->v = v; a->cap = cap;
    }
    a->v[a->n++] = p;
    return 1;
}

/* What one backend allocation is: its size and the class it was cut for
 * (-1: a direct allocation, one block). */
typedef struct { size_t bytes; int cls; } gx_cuda_slab_info;

struct gx_cuda_pool {
    gx_cuda_backend be;
    pthread_mutex_t mu;
    gx_cuda_ptrs free_[GX_CUDA_NCLASS];
    gx_cuda_ptrs slabs;        /* every backend allocation */
    gx_cuda_slab_info *info;   /* slabs.v[i]'s size and class */
    size_t info_cap;
    size_t limit, reserved, in_use;
};

gx_status gx_cuda_pool_create(const gx_cuda_backend *be, size_t limit_bytes,
                              gx_cuda_pool **out, gx_err *err) {
    *out = NULL;
    if (!be || !be->alloc || !be->free)
        return gx_err_set(err, GX_ERR_INVALID, "gx_cuda_pool_create: backend has no alloc/free");
    gx_cuda_pool *p = calloc(1, sizeof *p);
    if (!p) return gx_err_set(err, GX_ERR_NOMEM, "gx_cuda_pool_create: out of host memory");
    p->be = *be;
    p->limit = limit_bytes;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        return gx_err_set(err, GX_ERR_NOMEM, "gx_cuda_pool_create: pthread_mutex_init failed");
    }
    *out = p;
    return GX_OK;
}

void gx_cuda_pool_destroy(gx_cuda_pool *p) {
    if (!p) return;
    for (size_t i = 0; i < p->slabs.n; i++) p->be.free(p->be.user, p->slabs.v[i]);
    for (int c = 0; c < GX_CUDA_NCLASS; c++) free(p->free_[c].v);
    free(p->slabs.v);
    free(p->info);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* Records slab s (bytes, class cls) in the slab list. */
static int gx_cuda_pool_record(gx_cuda_pool *p, void *s, size_t bytes, int cls) {
    if (!gx_cuda_ptrs_push(&p->slabs, s)) return 0;
    if (p->info_cap < p->slabs.cap) {
        gx_cuda_slab_info *info = realloc(p->info, p->slabs.cap * sizeof *info);
        if (!info) { p->slabs.n--; return 0; }
        p->info = info;
        p->info_cap = p->slabs.cap;
    }
    p->info[p->slabs.n - 1] = (gx_cuda_slab_info){ bytes, cls };
    return 1;
}

/* Forgets slab i (swap with the last) and gives it back to the backend. */
static void gx_cuda_pool_drop_slab(gx_cuda_pool *p, size_t i) {
    void *s = p->slabs.v[i];
    p->reserved -= p->info[i].bytes;
    p->slabs.v[i] = p->slabs.v[p->slabs.n - 1];
    p->info[i] = p->info[p->slabs.n - 1];
    p->slabs.n--;
    p->be.free(p->be.user, s);
}

/* Gives back every class slab whose blocks are all free (their entries
 * leave the free list): memory one class no longer uses can serve another
 * after a refusal. Returns the bytes given back. Only on the failure path:
 * O(slabs x free blocks). */
static size_t gx_cuda_pool_trim(gx_cuda_pool *p) {
    size_t given = 0;
    for (size_t i = 0; i < p->slabs.n;) {
        int c = p->info[i].cls;
        if (c < 0) { i++; continue; }
        char *base = p->slabs.v[i];
        size_t bytes = p->info[i].bytes, blocks = bytes / gx_cuda_class_size(c), free_here = 0;
        gx_cuda_ptrs *fl = &p->free_[c];
        for (size_t k = 0; k < fl->n; k++)
            free_here += (char *)fl->v[k] >= base && (char *)fl->v[k] < base + bytes;
        if (free_here != blocks) { i++; continue; }
        size_t m = 0;   /* keep the other slabs' blocks, in their order */
        for (size_t k = 0; k < fl->n; k++)
            if (!((char *)fl->v[k] >= base && (char *)fl->v[k] < base + bytes)) fl->v[m++] = fl->v[k];
        fl->n = m;
        given += bytes;
        gx_cuda_pool_drop_slab(p, i);   /* slot i now holds another slab: not i++ */
    }
    return given;
}

/* Reserves `bytes` from the backend within the limit, recording the slab
 * (class cls, -1 for a direct block). A refusal first gives back the
 * wholly free slabs of every class and tries once more. */
static void *gx_cuda_pool_reserve(gx_cuda_pool *p, size_t bytes, int cls) {
    void *s = NULL;
    for (int attempt = 0; attempt < 2 && !s; attempt++) {
        if (attempt == 1 && gx_cuda_pool_trim(p) == 0) break;
        if (p->limit && p->reserved + bytes > p->limit) continue;
        s = p->be.alloc(p->be.user, bytes);
    }
    if (!s) return NULL;
    if (!gx_cuda_pool_record(p, s, bytes, cls)) { p->be.free(p->be.user, s); return NULL; }
    p->reserved += bytes;
    return s;
}

/* Refills class c's free list with one slab cut into blocks (one block per
 * slab for classes of GX_CUDA_SLAB bytes). */
static int gx_cuda_pool_refill(gx_cuda_pool *p, int c) {
    size_t bs = gx_cuda_class_size(c);
    size_t slab = bs >= GX_CUDA_SLAB ? bs : GX_CUDA_SLAB;
    /* Small classes take a smaller slab first when the limit is tight. */
    if (p->limit && p->reserved + slab > p->limit && p->reserved + bs <= p->limit) slab = bs;
    char *s = gx_cuda_pool_reserve(p, slab, c);
    /* A device short of a whole slab may still hold this block: the small
     * allocations a nearly full GPU can serve should not fail for want of
     * 64 MiB. */
    if (!s && slab > bs) {
        slab = bs;
        s = gx_cuda_pool_reserve(p, slab, c);
    }
    if (!s) return 0;
    gx_cuda_ptrs *fl = &p->free_[c];
    /* Pushed in reverse so blocks are handed out in address order. */
    for (size_t off = slab; off >= bs; off -= bs)
        if (!gx_cuda_ptrs_push(fl, s + off - bs)) return fl->n > 0;
    return 1;
}

static void gx_cuda_pool_unreserve(gx_cuda_pool *p, void *ptr) {
    for (size_t i = 0; i < p->slabs.n; i++)
        if (p->slabs.v[i] == ptr) { gx_cuda_pool_drop_slab(p, i); return; }
}

void *gx_cuda_pool_alloc(gx_cuda_pool *p, size_t bytes) {
    if (bytes == 0) return NULL;
    size_t bb = gx_cuda_pool_block_bytes(bytes);
    int c = gx_cuda_pool_class(bytes);
    void *r = NULL;
    pthread_mutex_lock(&p->mu);
    if (c < 0) {
        r = gx_cuda_pool_reserve(p, bb, -1);  /* direct: freed straight back */
    } else if (p->free_[c].n > 0 || gx_cuda_pool_refill(p, c)) {
        r = p->free_[c].v[--p->free_[c].n];
    }
    if (r) p->in_use += bb;
    pthread_mutex_unlock(&p->mu);
    return r;
}

void gx_cuda_pool_free(gx_cuda_pool *p, void *ptr, size_t bytes) {
    if (!ptr) return;
    size_t bb = gx_cuda_pool_block_bytes(bytes);
    int c = gx_cuda_pool_class(bytes);
    pthread_mutex_lock(&p->mu);
    GX_ASSERT_MSG(p->in_use >= bb, "gx_cuda_pool_free: %zu bytes freed, %zu in use", bb, p->in_use);
    p->in_use -= bb;
    if (c < 0) {
        gx_cuda_pool_unreserve(p, ptr);
    } else if (!gx_cuda_ptrs_push(&p->free_[c], ptr)) {
        /* Out of host memory for the free list: the block is lost to this
         * pool until destroy (its slab is still recorded). */
    }
    pthread_mutex_unlock(&p->mu);
}

size_t gx_cuda_pool_reserved(const gx_cuda_pool *p) { return p->reserved; }
size_t gx_cuda_pool_in_use(const gx_cuda_pool *p) { return p->in_use; }

/* --------------------------------------------------------------- arena */

static size_t gx_cuda_align_up(size_t n) {
    return (n + GX_CUDA_ALIGN - 1) & ~(size_t)(GX_CUDA_ALIGN - 1);
}

void gx_cuda_arena_init(gx_cuda_arena *a, gx_cuda_pool *pool, size_t initial_bytes) {
    memset(a, 0, sizeof *a);
    a->pool = pool;
    a->initial = initial_bytes ? gx_cuda_align_up(initial_bytes) : ((size_t)1 << 20);
}

static void gx_cuda_arena_release(gx_cuda_arena *a) {
    for (int i = 0; i < a->nchunks; i++) gx_cuda_pool_free(a->pool, a->chunks[i], a->sizes[i]);
    a->nchunks = 0;
    a->off = 0;
}

void gx_cuda_arena_free(gx_cuda_arena *a) {
    gx_cuda_arena_release(a);
    free(a->chunks);
    free(a->sizes);
    memset(a, 0, sizeof *a);
}

/* Appends a chunk of at least `bytes` (doubling the newest chunk's size). */
static int gx_cuda_arena_grow(gx_cuda_arena *a, size_t bytes) {
    if (a->nchunks == a->cap) {
        int cap = a->cap ? a->cap * 2 : 8;
        void **c = realloc(a->chunks, (size_t)cap * sizeof *c);
        if (!c) return 0;
        a->chunks = c;
        size_t *s = realloc(a->sizes, (size_t)cap * sizeof *s);
        if (!s) return 0;
        a->sizes = s;
        a->cap = cap;
    }
    size_t want = a->nchunks ? 2 * a->sizes[a->nchunks - 1] : a->initial;
    if (want < bytes) want = bytes;
    void *p = gx_cuda_pool_alloc(a->pool, want);
    if (!p) return 0;
    a->chunks[a->nchunks] = p;
    a->sizes[a->nchunks] = want;
    a->nchunks++;
    a->off = 0;
    return 1;
}

void *gx_cuda_arena_alloc(gx_cuda_arena *a, size_t bytes) {
    size_t n = gx_cuda_align_up(bytes ? bytes : 1);
    if (a->nchunks == 0 || a->off + n > gx_cuda_pool_block_bytes(a->sizes[a->nchunks - 1]))
        if (!gx_cuda_arena_grow(a, n)) return NULL;
    void *p = (char *)a->chunks[a->nchunks - 1] + a->off;
    a->off += n;
    a->used_total += n;
    if (a->used_total > a->high_water) a->high_water = a->used_total;
    return p;
}

gx_status gx_cuda_arena_reset(gx_cuda_arena *a) {
    a->used_total = 0;
    if (a->nchunks <= 1) { a->off = 0; return GX_OK; }
    /* Several chunks: one chunk of the high-water size replaces them. */
    gx_cuda_arena_release(a);
    size_t hw = a->high_water > a->initial ? a->high_water : a->initial;
    a->initial = hw;
    return gx_cuda_arena_grow(a, hw) ? GX_OK : GX_ERR_NOMEM;
}

size_t gx_cuda_arena_capacity(const gx_cuda_arena *a) {
    size_t c = 0;
    for (int i = 0; i < a->nchunks; i++) c += gx_cuda_pool_block_bytes(a->sizes[i]);
    return c;
}

/* ------------------------------------------------ a build without CUDA */

/* The f64 library never has a CUDA backend (the kernels are f32). */
#if !(defined(GX_HAVE_CUDA) && GX_HAVE_CUDA) || defined(GX_F64)

static gx_status gx_cuda_none(gx_err *err, const char *fn) {
    return gx_err_set(err, GX_ERR_UNSUPPORTED, "%s: built without CUDA", fn);
}

int gx_cuda_probe(char *why, size_t n) {
    if (why && n) snprintf(why, n, "built without CUDA");
    return 0;
}

gx_status gx_cuda_device_backend(int device, gx_cuda_backend *out, gx_err *err) {
    (void)device;
    memset(out, 0, sizeof *out);
    return gx_cuda_none(err, "gx_cuda_device_backend");
}

gx_status gx_cuda_host_alloc(size_t bytes, void **out, gx_err *err) {
    (void)bytes;
    *out = NULL;
    return gx_cuda_none(err, "gx_cuda_host_alloc");
}
void gx_cuda_host_free(void *p) { (void)p; }

gx_status gx_cuda_stream_create(int device, int tf32, gx_cuda_stream **out, gx_err *err) {
    (void)device; (void)tf32;
    *out = NULL;
    return gx_cuda_none(err, "gx_cuda_stream_create");
}
void gx_cuda_stream_destroy(gx_cuda_stream *s) { (void)s; }
gx_status gx_cuda_stream_sync(gx_cuda_stream *s, gx_err *err) {
    (void)s;
    return gx_cuda_none(err, "gx_cuda_stream_sync");
}
/* No stream can exist in this build, so these are never reached with one. */
void gx_cuda_upload(gx_cuda_stream *s, void *d, const void *h, size_t b) { (void)s; (void)d; (void)h; (void)b; }
void gx_cuda_download(gx_cuda_stream *s, void *h, const void *d, size_t b) { (void)s; (void)d; (void)h; (void)b; }
void gx_cuda_memset0(gx_cuda_stream *s, void *d, size_t b) { (void)s; (void)d; (void)b; }
void gx_cuda_stream_fail(gx_cuda_stream *s, const char *msg) { (void)s; (void)msg; }
void gx_cuda_stream_resume(gx_cuda_stream *s) { (void)s; }
gx_status gx_cuda_graph_capture(gx_cuda_stream *s, gx_cuda_graph_body body, void *arg, gx_cuda_graph **out,
                                gx_err *err) {
    (void)s; (void)body; (void)arg;
    *out = NULL;
    return gx_cuda_none(err, "gx_cuda_graph_capture");
}
void gx_cuda_graph_launch(gx_cuda_stream *s, gx_cuda_graph *g) { (void)s; (void)g; }
void gx_cuda_graph_destroy(gx_cuda_graph *g) { (void)g; }

#endif
