/*
 * gx_batcher.h — the per-model request queue of galaxyd (daemon/gx_batcher.c).
 *
 * Request threads submit jobs (one preprocessed image each); one worker thread
 * per model takes up to max_batch jobs — or fewer once the oldest has waited
 * batch_delay_us — runs one forward pass, fills each job's outputs and calls
 * its done() callback (from the worker thread). The queue is bounded: submit
 * refuses immediately with GX_ERR_BUSY when max_queue jobs are waiting, so
 * memory never grows without bound under overload. A job whose deadline has
 * passed when the worker takes it is finished with GX_ERR_TIMEOUT without
 * computing (its client has had a 504 or has gone: libmicrohttpd does not
 * notice a disconnect while a connection is suspended).
 *
 * Shutdown (gx_batcher_close): new submits get GX_ERR_CLOSED; every job
 * already queued is still computed and answered; then the worker exits.
 *
 *   gx_batcher *b;
 *   gx_batcher_open(&b, model, &(gx_batcher_opts){ .max_batch = 32,
 *                   .batch_delay_us = 2000, .max_queue = 256 }, &err);
 *   job->x = x; job->done = resume_connection; job->user = req;
 *   if (gx_batcher_submit(b, job, &err) == GX_ERR_BUSY) -> 503 + Retry-After
 *   ...
 *   gx_batcher_close(b);
 */
#ifndef GX_BATCHER_H
#define GX_BATCHER_H

#include "gx.h"
#include "gx_serve_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gx_job gx_job;
typedef void (*gx_job_done_fn)(gx_job *job, void *user);

struct gx_job {
    /* in (set by the submitter; x and coords stay owned by the submitter
     * until done() has been called) */
    const float *x;            /* 3*S*S, S = the model's input_size */
    float        coords[2];    /* ra, dec; NaN = missing */
    int8_t       source_domain;/* uda models: 1 = the source BN set; 0 (default) = the
                                  target set (the spec's default); others ignore it */
    int64_t      deadline_ns;  /* CLOCK_MONOTONIC (gx_batcher_now_ns); 0 = none */
    gx_job_done_fn done;
    void        *user;
    /* out (valid in done()) */
    gx_status    status;       /* GX_OK, GX_ERR_TIMEOUT, or the forward's error */
    char         error[256];
    int          class_index;
    float        probs[GX_SERVE_MAX_CLASSES];
    float        logits[GX_SERVE_MAX_CLASSES];
    float        redshift;
    float        score;        /* cf-inn NLL, uda H / ln K, NaN otherwise */
    double       queue_ms;     /* submit -> batch start */
    double       forward_ms;   /* the batch's forward time */
    int          batch_size;   /* how many jobs shared the forward (0: not computed) */
    /* private */
    int64_t      submit_ns;
    gx_job      *next;
};

/* A field left 0 takes its default; open refuses values outside
 * max_batch [1, 1024], batch_delay_us [0, 10 s], max_queue [1, 1e6] (a
 * message naming the flag). batch_delay_us counts from the oldest job's
 * submit, so no job waits more than that for company. */
typedef struct gx_batcher_opts {
    int max_batch;             /* jobs per forward, default 32 */
    int batch_delay_us;        /* max wait for a fuller batch, default 2000 */
    int max_queue;             /* waiting jobs before GX_ERR_BUSY, default 256 */
    /* Where the registry loads the models this worker runs (daemon/
     * gx_serve_model.h; NULL: the CPU). Not used by the batcher itself. */
    const struct gx_serve_device *device;
} gx_batcher_opts;
#define GX_BATCHER_OPTS_DEFAULT ((gx_batcher_opts){ 32, 2000, 256, NULL })

/* Statistics for /metrics (a snapshot, any thread). */
typedef struct gx_batcher_stats {
    int64_t queue_depth;       /* jobs waiting now */
    int64_t batches, images;   /* totals */
    int64_t timeouts, rejected;
    double  forward_ms_total;
    int64_t batch_size_hist[8];/* batches of size 1, 2, 3-4, 5-8, 9-16, 17-32, 33-64, >64 */
} gx_batcher_stats;

typedef struct gx_batcher gx_batcher;

/* The model stays owned by the caller and must outlive the batcher. o NULL
 * = GX_BATCHER_OPTS_DEFAULT. */
gx_status gx_batcher_open(gx_batcher **out, gx_serve_model *model, const gx_batcher_opts *o,
                          gx_err *err);
/* GX_OK (done() will be called exactly once, from the worker), or
 * GX_ERR_BUSY / GX_ERR_CLOSED (done() is not called). */
gx_status gx_batcher_submit(gx_batcher *b, gx_job *job, gx_err *err);
void gx_batcher_stats_get(gx_batcher *b, gx_batcher_stats *s);
/* From now on the worker runs whatever is queued without waiting
 * batch_delay_us for a fuller batch (submits are still accepted). Used when
 * the server starts draining, so queued requests are answered at once. */
void gx_batcher_flush(gx_batcher *b);
/* Stops accepting, answers every queued job, joins the worker, frees. NULL
 * is fine. Must not be called from a done() callback (the worker would join
 * itself): that is a programmer error and aborts; see gx_batcher_on_worker. */
void gx_batcher_close(gx_batcher *b);

/* CLOCK_MONOTONIC now in ns: the clock of gx_job.deadline_ns. */
int64_t gx_batcher_now_ns(void);
/* The options in effect (defaults filled in). */
const gx_batcher_opts *gx_batcher_get_opts(const gx_batcher *b);
/* 1 when called on b's worker thread (i.e. from a done() callback). */
int gx_batcher_on_worker(const gx_batcher *b);

#ifdef __cplusplus
}
#endif
#endif
