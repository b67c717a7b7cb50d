/*
 * gx_loader.c — the training data loader (contract in gx_loader.h).
 *
 * Design:
 *  - One background worker thread fills a ring of prefetch + 1 batch slots,
 *    all allocated at open. The "+ 1" is the slot the caller is holding: a
 *    batch handed out by gx_loader_next must stay valid until the next call,
 *    so that slot cannot be refilled yet, and without the extra slot a
 *    prefetch depth of 1 would mean no overlap at all.
 *  - Ring bookkeeping is three counters under one mutex: `filled` (batches
 *    of this epoch the worker has finished), `released` (batches the caller
 *    is done with) and the step being held. The worker may fill step s when
 *    s - released < n_slots; slot = s % n_slots. Two condition variables:
 *    `cv_work` wakes the worker (space freed, new epoch, quit), `cv_done`
 *    wakes the caller (a batch is ready, or the worker went idle).
 *  - Epochs are generations. gx_loader_start_epoch bumps `gen`, waits until
 *    the worker is idle (it polls `gen` between samples, so a cancelled
 *    batch stops after at most one image), then rebuilds the epoch's order
 *    while nobody reads it, resets the counters and wakes the worker. A
 *    batch finished under a stale generation is simply discarded.
 *  - Determinism: the order of epoch e comes from the stream
 *    fork(fork(seed, ORDER), e); the augmentation of the sample at position
 *    p (dataset index i) from fork(fork(fork(fork(seed, AUG), e), p), i).
 *    Nothing depends on which thread ran, on the prefetch depth or on the
 *    epochs before; position is part of the key so that the duplicates of
 *    balanced sampling (with replacement) get different augmentations.
 *  - I/O order: within a batch the samples are read sorted by dataset
 *    index (HDF5 row blocks are then read once each) and written to their
 *    place in the batch, so the output order is the epoch's order.
 *  - Errors: the first failing sample stops its batch; the slot carries the
 *    status and message, and gx_loader_next returns -1 for that batch. The
 *    caller may go on (the next call moves to the following batch) or start
 *    another epoch; the loader itself is never left in a broken state.
 */
#include "gx_loader.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Fork ids of the two top-level streams derived from opts.seed. */
#define GX_LOADER_STREAM_ORDER 1
#define GX_LOADER_STREAM_AUG   2

/* One prepared batch (arrays sized for opts.batch samples). */
typedef struct gx_slot {
    float   *x;           /* [batch, 3, S, S] */
    float   *coords;      /* [batch, 2] */
    int32_t *label;       /* [batch] */
    double  *redshift;    /* [batch] */
    int64_t *index;       /* [batch] */
    int64_t  n, step;
    gx_status status;     /* GX_OK, or the error of the batch */
    gx_err    err;
} gx_slot;

/* A sample of the batch being filled: where it goes and what it is. */
typedef struct { int64_t index, pos; } gx_pick;

struct gx_loader {
    gx_dataset     *ds;
    gx_loader_opts  o;
    int64_t         n;            /* size of the index set */
    int64_t        *idx;          /* [n] copied index set */
    int64_t        *order;        /* [n] this epoch's dataset indices by position */
    int64_t         n_batches;
    /* Class buckets for balanced sampling: the index set grouped by label.
     * cls[k] lists the classes with members; members of cls[k] are
     * by_class[cls_off[k] .. cls_off[k+1]). */
    int             n_cls;
    int            *cls;          /* [n_cls] */
    int64_t        *cls_off;      /* [n_cls + 1] */
    int64_t        *by_class;     /* [n] */
    /* Ring. */
    int             n_slots;      /* prefetch + 1 */
    gx_slot        *slots;
    gx_pick        *picks;        /* [batch] worker scratch */
    /* Shared state, guarded by mu. */
    pthread_mutex_t mu;
    pthread_cond_t  cv_work, cv_done;
    pthread_t       thread;
    uint64_t        gen;          /* bumped by start_epoch / close; polled atomically */
    int             active;       /* an epoch is set up */
    int             quit;
    int             busy;         /* the worker is filling a slot */
    int64_t         epoch;
    int64_t         filled;       /* batches finished in this epoch */
    int64_t         released;     /* batches the caller is done with */
    int             holding;      /* the caller holds batch `released` */
};

/* ------------------------------------------------------------ helpers */

/* Uniform integer in [0, m), m >= 1. A double in [0,1) has 53 random bits,
 * far more than any index set needs, so the bias is negligible. */
static int64_t rng_below(gx_rng *r, int64_t m) {
    int64_t k = (int64_t)(gx_rng_uniform(r) * (double)m);
    return k < m ? k : m - 1;
}

static int pick_cmp(const void *a, const void *b) {
    const gx_pick *x = a, *y = b;
    if (x->index != y->index) return x->index < y->index ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

static gx_rng stream(const gx_loader *L, uint64_t id) {
    gx_rng root;
    gx_rng_init(&root, L->o.seed);
    return gx_rng_fork(&root, id);
}

/* The order of an epoch: a Fisher-Yates permutation of the index set, or
 * n class-balanced draws with replacement. Pure function of (seed, epoch). */
static void build_order(gx_loader *L, int64_t epoch) {
    gx_rng base = stream(L, GX_LOADER_STREAM_ORDER);
    gx_rng r = gx_rng_fork(&base, (uint64_t)epoch);
    if (!L->o.balanced) {
        memcpy(L->order, L->idx, (size_t)L->n * sizeof *L->order);
        for (int64_t i = L->n - 1; i > 0; i--) {
            int64_t j = rng_below(&r, i + 1);
            int64_t t = L->order[i]; L->order[i] = L->order[j]; L->order[j] = t;
        }
        return;
    }
    for (int64_t p = 0; p < L->n; p++) {
        int k = (int)rng_below(&r, L->n_cls);
        int64_t lo = L->cls_off[k], m = L->cls_off[k + 1] - lo;
        L->order[p] = L->by_class[lo + rng_below(&r, m)];
    }
}

/* Groups the index set by label (counting sort; labels are < n_classes). */
static gx_status build_classes(gx_loader *L, gx_err *err) {
    int nc = L->ds->n_classes > 0 ? L->ds->n_classes : 1;
    int64_t *count = calloc((size_t)nc + 1, sizeof *count);
    L->cls = malloc((size_t)nc * sizeof *L->cls);
    L->cls_off = malloc(((size_t)nc + 1) * sizeof *L->cls_off);
    L->by_class = malloc((size_t)L->n * sizeof *L->by_class);
    if (!count || !L->cls || !L->cls_off || !L->by_class) {
        free(count);
        return gx_err_set(err, GX_ERR_NOMEM, "gx_loader_open: out of memory (class table)");
    }
    for (int64_t k = 0; k < L->n; k++) count[L->ds->label[L->idx[k]]]++;
    L->n_cls = 0;
    L->cls_off[0] = 0;
    for (int c = 0; c < nc; c++) {
        if (!count[c]) continue;                 /* absent classes are never drawn */
        L->cls[L->n_cls] = c;
        L->cls_off[L->n_cls + 1] = L->cls_off[L->n_cls] + count[c];
        count[c] = L->cls_off[L->n_cls];         /* now: the write cursor of class c */
        L->n_cls++;
    }
    for (int64_t k = 0; k < L->n; k++) {
        int64_t i = L->idx[k];
        L->by_class[count[L->ds->label[i]]++] = i;
    }
    free(count);
    return GX_OK;
}

/* ------------------------------------------------------------- worker */

static int cancelled(gx_loader *L, uint64_t gen) {
    return __atomic_load_n(&L->gen, __ATOMIC_ACQUIRE) != gen;
}

/* Reads, prepares and (optionally) augments one sample into row `pos`. */
static gx_status fill_sample(gx_loader *L, gx_slot *s, int64_t epoch, int64_t p0,
                             const gx_pick *pk, gx_err *err) {
    int64_t i = pk->index, pos = pk->pos, S = L->o.size;
    gx_image raw = { 0 }, im = { 0 };
    gx_pre_opts po = { L->o.crop_frac, L->o.size };
    gx_err e2;
    gx_status st = gx_dataset_get(L->ds, i, &raw, &e2);
    if (st == GX_OK) st = gx_pre_prepare(&raw, &po, &im, &e2);
    if (st == GX_OK && L->o.augment) {
        gx_rng a = stream(L, GX_LOADER_STREAM_AUG);
        gx_rng ae = gx_rng_fork(&a, (uint64_t)epoch);
        gx_rng ap = gx_rng_fork(&ae, (uint64_t)(p0 + pos));
        gx_rng r = gx_rng_fork(&ap, (uint64_t)i);
        st = gx_pre_augment(&im, &L->o.aug, &r, &e2);
    }
    if (st == GX_OK && (im.c != 3 || im.h != S || im.w != S))
        st = gx_err_set(&e2, GX_ERR_SHAPE, "prepared image is %dx%dx%d, want 3x%lldx%lld",
                        im.c, im.h, im.w, (long long)S, (long long)S);
    if (st == GX_OK) {
        memcpy(s->x + pos * 3 * S * S, im.data, (size_t)(3 * S * S) * sizeof(float));
        s->coords[2 * pos]     = (float)L->ds->ra[i];    /* NaN stays NaN */
        s->coords[2 * pos + 1] = (float)L->ds->dec[i];
        s->label[pos]    = L->ds->label[i];
        s->redshift[pos] = L->ds->redshift[i];
        s->index[pos]    = i;
    } else {
        gx_err_set(err, st, "loader: dataset index %lld: %s", (long long)i, e2.msg);
    }
    gx_image_free(&raw);
    gx_image_free(&im);
    return st;
}

/* Fills slot for batch `step` of the current epoch (called without the
 * lock; order/epoch are stable while busy, see start_epoch). */
static void fill_batch(gx_loader *L, int64_t step, uint64_t gen) {
    gx_slot *s = &L->slots[step % L->n_slots];
    int64_t p0 = step * L->o.batch;
    int64_t n = L->n - p0 < L->o.batch ? L->n - p0 : L->o.batch;
    s->n = n;
    s->step = step;
    s->status = GX_OK;
    s->err.msg[0] = 0;
    for (int64_t k = 0; k < n; k++) L->picks[k] = (gx_pick){ L->order[p0 + k], k };
    qsort(L->picks, (size_t)n, sizeof *L->picks, pick_cmp);
    for (int64_t k = 0; k < n && !cancelled(L, gen); k++) {
        s->status = fill_sample(L, s, L->epoch, p0, &L->picks[k], &s->err);
        if (s->status != GX_OK) break;
    }
}

static void *worker_main(void *arg) {
    gx_loader *L = arg;
    pthread_mutex_lock(&L->mu);
    for (;;) {
        while (!L->quit && !(L->active && L->filled < L->n_batches &&
                             L->filled - L->released < L->n_slots))
            pthread_cond_wait(&L->cv_work, &L->mu);
        if (L->quit) break;
        int64_t step = L->filled;
        uint64_t gen = L->gen;
        L->busy = 1;
        pthread_mutex_unlock(&L->mu);
        fill_batch(L, step, gen);
        pthread_mutex_lock(&L->mu);
        L->busy = 0;
        if (L->gen == gen) L->filled = step + 1;   /* else: stale, discarded */
        pthread_cond_broadcast(&L->cv_done);
    }
    pthread_mutex_unlock(&L->mu);
    return NULL;
}

/* --------------------------------------------------------------- API */

static gx_status check_opts(const gx_dataset *ds, const int64_t *idx, int64_t n,
                            const gx_loader_opts *o, gx_err *err) {
    if (!ds || !o || (!idx && n > 0))
        return gx_err_set(err, GX_ERR_INVALID, "gx_loader_open: NULL argument");
    if (n < 1) return gx_err_set(err, GX_ERR_INVALID, "gx_loader_open: empty index set");
    if (o->batch < 1 || o->size < 1 || o->prefetch < 1)
        return gx_err_set(err, GX_ERR_INVALID,
                          "gx_loader_open: batch %d, size %d, prefetch %d must be >= 1",
                          o->batch, o->size, o->prefetch);
    if (!(o->crop_frac > 0 && o->crop_frac <= 1))
        return gx_err_set(err, GX_ERR_INVALID, "gx_loader_open: crop_frac %g not in (0,1]",
                          o->crop_frac);
    for (int64_t k = 0; k < n; k++)
        if (idx[k] < 0 || idx[k] >= ds->n)
            return gx_err_set(err, GX_ERR_INVALID,
                              "gx_loader_open: idx[%lld] = %lld outside [0, %lld)",
                              (long long)k, (long long)idx[k], (long long)ds->n);
    return GX_OK;
}

static void free_buffers(gx_loader *L) {
    for (int k = 0; L->slots && k < L->n_slots; k++) {
        gx_slot *s = &L->slots[k];
        free(s->x); free(s->coords); free(s->label); free(s->redshift); free(s->index);
    }
    free(L->slots); free(L->picks);
    free(L->idx); free(L->order);
    free(L->cls); free(L->cls_off); free(L->by_class);
    free(L);
}

/* Allocates the ring: every per-batch byte the loader will ever own. */
static gx_status alloc_ring(gx_loader *L, gx_err *err) {
    size_t B = (size_t)L->o.batch, S = (size_t)L->o.size;
    L->slots = calloc((size_t)L->n_slots, sizeof *L->slots);
    L->picks = malloc(B * sizeof *L->picks);
    if (!L->slots || !L->picks) goto nomem;
    for (int k = 0; k < L->n_slots; k++) {
        gx_slot *s = &L->slots[k];
        s->x = malloc(B * 3 * S * S * sizeof *s->x);
        s->coords = malloc(B * 2 * sizeof *s->coords);
        s->label = malloc(B * sizeof *s->label);
        s->redshift = malloc(B * sizeof *s->redshift);
        s->index = malloc(B * sizeof *s->index);
        if (!s->x || !s->coords || !s->label || !s->redshift || !s->index) goto nomem;
    }
    return GX_OK;
nomem:
    return gx_err_set(err, GX_ERR_NOMEM, "gx_loader_open: cannot allocate %d batches of %zu x 3 x %zu x %zu",
                      L->n_slots, B, S, S);
}

gx_status gx_loader_open(gx_loader **out, gx_dataset *ds, const int64_t *idx, int64_t n,
                         const gx_loader_opts *o, gx_err *err) {
    *out = NULL;
    gx_status st = check_opts(ds, idx, n, o, err);
    if (st != GX_OK) return st;
    gx_loader *L = calloc(1, sizeof *L);
    if (!L) return gx_err_set(err, GX_ERR_NOMEM, "gx_loader_open: out of memory");
    L->ds = ds;
    L->o = *o;
    L->n = n;
    L->n_batches = o->drop_last ? n / o->batch : (n + o->batch - 1) / o->batch;
    L->n_slots = o->prefetch + 1;
    L->idx = malloc((size_t)n * sizeof *L->idx);
    L->order = malloc((size_t)n * sizeof *L->order);
    if (!L->idx || !L->order) {
        free_buffers(L);
        return gx_err_set(err, GX_ERR_NOMEM, "gx_loader_open: out of memory");
    }
    memcpy(L->idx, idx, (size_t)n * sizeof *idx);
    if ((st = build_classes(L, err)) != GX_OK || (st = alloc_ring(L, err)) != GX_OK) {
        free_buffers(L);
        return st;
    }
    pthread_mutex_init(&L->mu, NULL);
    pthread_cond_init(&L->cv_work, NULL);
    pthread_cond_init(&L->cv_done, NULL);
    if (pthread_create(&L->thread, NULL, worker_main, L) != 0) {
        pthread_cond_destroy(&L->cv_done); pthread_cond_destroy(&L->cv_work);
        pthread_mutex_destroy(&L->mu);
        free_buffers(L);
        return gx_err_set(err, GX_ERR_NOMEM, "gx_loader_open: cannot start the worker thread");
    }
    *out = L;
    return GX_OK;
}

int64_t gx_loader_batches_per_epoch(const gx_loader *L) { return L->n_batches; }

/* Cancels whatever the worker is doing and waits until it is idle. Called
 * with mu held; on return the worker touches no shared buffer until
 * `active` is set again. */
static void stop_worker(gx_loader *L) {
    __atomic_store_n(&L->gen, L->gen + 1, __ATOMIC_RELEASE);
    L->active = 0;
    while (L->busy) pthread_cond_wait(&L->cv_done, &L->mu);
}

gx_status gx_loader_start_epoch(gx_loader *L, int64_t epoch, gx_err *err) {
    if (epoch < 0)
        return gx_err_set(err, GX_ERR_INVALID, "gx_loader_start_epoch: epoch %lld < 0",
                          (long long)epoch);
    pthread_mutex_lock(&L->mu);
    stop_worker(L);
    build_order(L, epoch);              /* O(n); the worker is idle */
    L->epoch = epoch;
    L->filled = L->released = 0;
    L->holding = 0;
    L->active = 1;
    pthread_cond_signal(&L->cv_work);
    pthread_mutex_unlock(&L->mu);
    return GX_OK;
}

int gx_loader_next(gx_loader *L, gx_batch *b, gx_err *err) {
    memset(b, 0, sizeof *b);
    pthread_mutex_lock(&L->mu);
    if (!L->active) {
        pthread_mutex_unlock(&L->mu);
        gx_err_set(err, GX_ERR_INVALID, "gx_loader_next: no epoch started");
        return -1;
    }
    if (L->holding) {                   /* the previous batch is given back */
        L->holding = 0;
        L->released++;
        pthread_cond_signal(&L->cv_work);
    }
    if (L->released >= L->n_batches) {
        pthread_mutex_unlock(&L->mu);
        return 0;
    }
    while (L->filled <= L->released) pthread_cond_wait(&L->cv_done, &L->mu);
    gx_slot *s = &L->slots[L->released % L->n_slots];
    L->holding = 1;
    pthread_mutex_unlock(&L->mu);
    /* The slot is ours until the next call: the worker never refills it. */
    if (s->status != GX_OK) {
        gx_err_set(err, s->status, "%s", s->err.msg);
        return -1;
    }
    *b = (gx_batch){ s->n, s->step, s->x, s->coords, s->label, s->redshift, s->index };
    return 1;
}

void gx_loader_close(gx_loader *L) {
    if (!L) return;
    pthread_mutex_lock(&L->mu);
    stop_worker(L);
    L->quit = 1;
    pthread_cond_signal(&L->cv_work);
    pthread_mutex_unlock(&L->mu);
    pthread_join(L->thread, NULL);
    pthread_cond_destroy(&L->cv_done);
    pthread_cond_destroy(&L->cv_work);
    pthread_mutex_destroy(&L->mu);
    free_buffers(L);
}
