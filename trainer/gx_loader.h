/*
 * gx_loader.h — the training data loader: a background thread that reads
 * samples from a gx_dataset, prepares them exactly as the daemon will
 * (io/gx_image.h gx_pre_prepare: centre crop + antialiased resize to the model
 * size), augments them in training (gx_pre_augment), and hands out batches,
 * so the compute thread never waits on decoding.
 *
 *   gx_loader *L;
 *   gx_loader_opts o = GX_LOADER_OPTS_DEFAULT; o.batch = 64; o.size = 64; o.seed = 7;
 *   gx_loader_open(&L, ds, train_idx, n_train, &o, &err);
 *   for (epoch ...) {
 *       gx_loader_start_epoch(L, epoch);
 *       gx_batch b;
 *       while (gx_loader_next(L, &b, &err) == 1) { ... b.x [b.n,3,S,S] ... }
 *   }
 *   gx_loader_close(L);
 *
 * Determinism (what --resume relies on): the sample order of epoch e is a
 * function of (seed, e) only, and the augmentation of the sample at position
 * p of epoch e is drawn from gx_rng_fork of (seed, e, p, dataset index) only
 * — never from a running generator shared across samples. (p is part of the
 * key so the repeats of balanced sampling are augmented differently.) So an
 * epoch's batches are identical whether the process ran the earlier epochs
 * or was restarted at epoch e, whatever the thread count or prefetch depth.
 * Streams: order = fork(fork(init(seed), 1), e); augmentation =
 * fork(fork(fork(fork(init(seed), 2), e), p), index).
 *
 * Class-balanced sampling (balanced = 1): each epoch draws n samples (the
 * size of the index set) with replacement, every class with equal
 * probability and uniformly within the class; otherwise a seeded
 * permutation of the index set. The last partial batch is kept unless
 * drop_last.
 *
 * Errors: a sample that fails to read or decode makes gx_loader_next return
 * -1 with the message (naming the dataset index); nothing aborts. That
 * batch is skipped: the next call goes on with the following batch (or the
 * caller may start another epoch). gx_loader_next before any
 * gx_loader_start_epoch is also -1.
 *
 * Threading: one worker thread per loader; it fills prefetch + 1 batch
 * buffers allocated at open (the extra one is the batch the caller holds).
 * Within a batch, samples are read sorted by dataset index (HDF5 blocks are
 * read once) and placed at their position. start_epoch cancels the epoch in
 * progress (the worker stops after the image it is on) and close joins the
 * worker; both are safe at any point. The API itself (start_epoch, next,
 * close) is meant for one caller thread.
 */
#ifndef GX_LOADER_H
#define GX_LOADER_H

#include "gx.h"
#include "gx_dataset.h"
#include "gx_image.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gx_loader_opts {
    int        batch;        /* samples per batch */
    int        size;         /* model input size S (square) */
    double     crop_frac;    /* centre crop before resizing (1 = none) */
    int        balanced;     /* class-balanced sampling with replacement */
    int        augment;      /* apply `aug` (training) or not (evaluation) */
    gx_pre_aug aug;
    int        drop_last;    /* drop a final partial batch */
    int        prefetch;     /* batches prepared ahead (>= 1) */
    uint64_t   seed;
} gx_loader_opts;

#define GX_LOADER_OPTS_DEFAULT \
    ((gx_loader_opts){ 64, 64, 1.0, 0, 0, GX_PRE_AUG_NONE, 0, 2, 0 })

/* One batch. Arrays are owned by the loader and stay valid until the next
 * gx_loader_next / gx_loader_start_epoch / gx_loader_close. Values are
 * bit-identical for a given (dataset, index set, opts, epoch). */
typedef struct gx_batch {
    int64_t  n;              /* samples in this batch (<= opts.batch) */
    int64_t  step;           /* batch number within the epoch, from 0 */
    float   *x;              /* [n, 3, S, S] in [0,1] */
    float   *coords;         /* [n, 2] ra, dec in degrees; NaN when unknown */
    int32_t *label;          /* [n] */
    double  *redshift;       /* [n]; NaN when unknown */
    int64_t *index;          /* [n] dataset indices */
} gx_batch;

typedef struct gx_loader gx_loader;

/* idx[0..n) are the dataset indices this loader draws from (copied). */
gx_status gx_loader_open(gx_loader **L, gx_dataset *ds, const int64_t *idx, int64_t n,
                         const gx_loader_opts *o, gx_err *err);
/* Batches in one epoch (depends on n, batch, drop_last only). */
int64_t   gx_loader_batches_per_epoch(const gx_loader *L);
/* Begins epoch `epoch` (any order: resuming starts at a later epoch). */
gx_status gx_loader_start_epoch(gx_loader *L, int64_t epoch, gx_err *err);
/* 1: *b holds the next batch; 0: the epoch is over; -1: error (err set). */
int       gx_loader_next(gx_loader *L, gx_batch *b, gx_err *err);
void      gx_loader_close(gx_loader *L);

#ifdef __cplusplus
}
#endif
#endif
