/*
 * gx_batcher.c — the per-model request queue and its worker (contract in
 * gx_batcher.h).
 *
 * Design:
 *  - One mutex guards the queue (a singly linked FIFO through job->next),
 *    the closing flag and the statistics; one condition variable, on
 *    CLOCK_MONOTONIC like every deadline, wakes the worker on a submit or on
 *    close. Request threads never wait on anything but the mutex.
 *  - The worker waits for the first job, then for a fuller batch until the
 *    oldest job has waited batch_delay_us or max_batch jobs are queued (or
 *    the batcher is closing: then nothing waits). It takes the batch under
 *    the lock and computes without it, so submits go on during a forward.
 *  - Expired jobs are taken out while the batch is formed and do not count
 *    towards max_batch: under overload a queue of stale jobs is flushed in
 *    one pass and each is answered GX_ERR_TIMEOUT without computing.
 *  - Outputs are written into the jobs without the lock (a taken job
 *    belongs to the worker until its done()); statistics are updated under
 *    the lock before any done() of the batch runs, so a caller that has seen
 *    every done() also sees the statistics that include them. done() is
 *    called with no lock held, in queue order, exactly once per accepted job.
 *  - Memory is fixed at open: one input buffer of max_batch images and the
 *    output rows; the queue itself is the callers' jobs (bounded by
 *    max_queue), so overload costs no memory here.
 */
#include "gx_batcher.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct gx_batcher {
    gx_serve_model *model;
    gx_batcher_opts o;
    int64_t         S, K;         /* input side, classes */
    pthread_t       thread;
    /* guarded by mu */
    pthread_mutex_t mu;
    pthread_cond_t  cv;           /* worker: a submit, or close */
    gx_job         *head, *tail;
    int64_t         depth;
    int             closing;
    int             flushing;     /* draining: take batches without waiting for more */
    gx_batcher_stats st;          /* st.queue_depth is filled in by stats_get */
    /* worker only */
    gx_job        **batch;        /* [max_batch] */
    float          *x;            /* [max_batch, 3, S, S] */
    float          *coords;       /* [max_batch, 2] */
    float          *logits, *probs, *redshift;   /* [max_batch, K], [max_batch, K], [max_batch] */
    float          *score;        /* [max_batch] */
    int8_t         *domain;       /* [max_batch] */
};

int64_t gx_batcher_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static struct timespec ns_to_ts(int64_t ns) {
    struct timespec ts = { (time_t)(ns / 1000000000), (long)(ns % 1000000000) };
    return ts;
}

/* Bucket of gx_batcher_stats.batch_size_hist for a batch of n (>= 1). */
static int hist_bucket(int n) {
    int k = 0;
    while (k < 7 && n > (1 << k)) k++;
    return k;
}

/* ------------------------------------------------------------- worker */

/* Queue-order list of jobs a batch hands to done(). */
typedef struct { gx_job *head, *tail; int n; } job_list;

static void list_push(job_list *l, gx_job *j) {
    j->next = NULL;
    if (l->tail) l->tail->next = j;
    else l->head = j;
    l->tail = j;
    l->n++;
}

/* Under the lock: takes up to max_batch live jobs into b->batch and every
 * expired job met on the way into *expired. Returns the live count. */
static int take_batch(gx_batcher *b, int64_t now, job_list *expired) {
    int n = 0;
    while (b->head && n < b->o.max_batch) {
        gx_job *j = b->head;
        b->head = j->next;
        if (!b->head) b->tail = NULL;
        b->depth--;
        j->queue_ms = (double)(now - j->submit_ns) / 1e6;
        if (j->deadline_ns > 0 && now >= j->deadline_ns) list_push(expired, j);
        else b->batch[n++] = j;
    }
    return n;
}

static void job_fail(gx_job *j, gx_status s, const char *msg) {
    j->status = s;
    size_t k = strlen(msg);   /* truncated to the job's buffer on purpose */
    if (k >= sizeof j->error) k = sizeof j->error - 1;
    memcpy(j->error, msg, k);
    j->error[k] = 0;
    j->forward_ms = 0;
    j->batch_size = 0;
}

/* Computes the batch (no lock held) and fills every job's outputs. */
static gx_status run_forward(gx_batcher *b, int n, double *ms, gx_err *err) {
    int64_t per = 3 * b->S * b->S;
    for (int i = 0; i < n; i++) {
        memcpy(b->x + i * per, b->batch[i]->x, (size_t)per * sizeof *b->x);
        b->coords[2 * i] = b->batch[i]->coords[0];
        b->coords[2 * i + 1] = b->batch[i]->coords[1];
        b->domain[i] = b->batch[i]->source_domain ? 0 : 1;   /* predict_ex: 0 source, 1 target */
    }
    gx_serve_out out = { b->logits, b->probs, b->redshift, b->score };
    int64_t t0 = gx_batcher_now_ns();
    gx_status s = gx_serve_model_predict_ex(b->model, b->x, b->S, b->coords, b->domain, n, &out, err);
    *ms = (double)(gx_batcher_now_ns() - t0) / 1e6;
    for (int i = 0; i < n; i++) {
        gx_job *j = b->batch[i];
        if (s != GX_OK) { job_fail(j, s, err->msg); continue; }
        const float *lg = b->logits + i * b->K, *pr = b->probs + i * b->K;
        int a = 0;
        for (int k = 0; k < b->K; k++) {
            j->logits[k] = lg[k];
            j->probs[k] = pr[k];
            if (lg[k] > lg[a]) a = k;
        }
        j->class_index = a;
        j->redshift = b->redshift[i];
        j->score = b->score[i];
        j->status = GX_OK;
        j->error[0] = 0;
        j->forward_ms = *ms;
        j->batch_size = n;
    }
    return s;
}

/* One batch: timeouts, the forward, statistics, then every done(). Called
 * and returns without the lock. */
static void run_batch(gx_batcher *b, int n, job_list *expired) {
    for (gx_job *j = expired->head; j; j = j->next)
        job_fail(j, GX_ERR_TIMEOUT, "deadline passed while queued");
    double ms = 0;
    gx_err err;
    if (n > 0) run_forward(b, n, &ms, &err);
    pthread_mutex_lock(&b->mu);
    b->st.timeouts += expired->n;
    if (n > 0) {
        b->st.batches++;
        b->st.images += n;
        b->st.forward_ms_total += ms;
        b->st.batch_size_hist[hist_bucket(n)]++;
    }
    pthread_mutex_unlock(&b->mu);
    /* next is read before done(): after it the job may be gone. */
    for (gx_job *j = expired->head, *nx; j; j = nx) {
        nx = j->next;
        j->done(j, j->user);
    }
    for (int i = 0; i < n; i++) b->batch[i]->done(b->batch[i], b->batch[i]->user);
}

static void *batcher_main(void *arg) {
    gx_batcher *b = arg;
    int64_t delay_ns = (int64_t)b->o.batch_delay_us * 1000;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->head && !b->closing) pthread_cond_wait(&b->cv, &b->mu);
        if (!b->head) break;                 /* closing, and everything answered */
        /* A fuller batch is worth waiting for until the oldest job has
         * waited batch_delay_us; a closing batcher does not wait. */
        while (b->head && !b->closing && !b->flushing && b->depth < b->o.max_batch) {
            int64_t until = b->head->submit_ns + delay_ns;
            if (gx_batcher_now_ns() >= until) break;
            struct timespec ts = ns_to_ts(until);
            pthread_cond_timedwait(&b->cv, &b->mu, &ts);
        }
        if (!b->head) continue;
        job_list expired = { NULL, NULL, 0 };
        int n = take_batch(b, gx_batcher_now_ns(), &expired);
        pthread_mutex_unlock(&b->mu);
        run_batch(b, n, &expired);
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* ---------------------------------------------------------------- API */

static gx_status check_opts(gx_batcher_opts *o, gx_err *err) {
    gx_batcher_opts d = GX_BATCHER_OPTS_DEFAULT;
    if (o->max_batch == 0) o->max_batch = d.max_batch;
    if (o->batch_delay_us == 0) o->batch_delay_us = d.batch_delay_us;
    if (o->max_queue == 0) o->max_queue = d.max_queue;
    if (o->max_batch < 1 || o->max_batch > 1024)
        return gx_err_set(err, GX_ERR_INVALID, "--max-batch must be in [1, 1024] (got %d)", o->max_batch);
    if (o->batch_delay_us < 0 || o->batch_delay_us > 10000000)
        return gx_err_set(err, GX_ERR_INVALID, "--batch-delay-us must be in [0, 10000000] (got %d)",
                          o->batch_delay_us);
    if (o->max_queue < 1 || o->max_queue > 1000000)
        return gx_err_set(err, GX_ERR_INVALID, "--max-queue must be in [1, 1000000] (got %d)", o->max_queue);
    return GX_OK;
}

static void batcher_free_buffers(gx_batcher *b) {
    free(b->batch);
    free(b->x);
    free(b->coords);
    free(b->logits);
    free(b->probs);
    free(b->redshift);
    free(b->score);
    free(b->domain);
}

static gx_status batcher_sync_init(gx_batcher *b, gx_err *err) {
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca)) return gx_err_set(err, GX_ERR_NOMEM, "batcher: condattr");
    int bad = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) || pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (bad) return gx_err_set(err, GX_ERR_NOMEM, "batcher: cannot create a condition variable");
    if (pthread_mutex_init(&b->mu, NULL)) {
        pthread_cond_destroy(&b->cv);
        return gx_err_set(err, GX_ERR_NOMEM, "batcher: cannot create a mutex");
    }
    return GX_OK;
}

gx_status gx_batcher_open(gx_batcher **out, gx_serve_model *model, const gx_batcher_opts *o, gx_err *err) {
    *out = NULL;
    if (!model) return gx_err_set(err, GX_ERR_INVALID, "gx_batcher_open: no model");
    gx_batcher_opts opts = o ? *o : GX_BATCHER_OPTS_DEFAULT;
    gx_status s = check_opts(&opts, err);
    if (s != GX_OK) return s;
    gx_batcher *b = calloc(1, sizeof *b);
    if (!b) return gx_err_set(err, GX_ERR_NOMEM, "batcher: out of memory");
    const gx_serve_info *in = gx_serve_model_info(model);
    b->model = model;
    b->o = opts;
    b->S = in->input_size;
    b->K = in->n_classes;
    size_t mb = (size_t)opts.max_batch;
    b->batch = malloc(mb * sizeof *b->batch);
    b->x = malloc(mb * 3 * (size_t)(b->S * b->S) * sizeof *b->x);
    b->coords = malloc(mb * 2 * sizeof *b->coords);
    b->logits = malloc(mb * (size_t)b->K * sizeof *b->logits);
    b->probs = malloc(mb * (size_t)b->K * sizeof *b->probs);
    b->redshift = malloc(mb * sizeof *b->redshift);
    b->score = malloc(mb * sizeof *b->score);
    b->domain = malloc(mb * sizeof *b->domain);
    if (!b->batch || !b->x || !b->coords || !b->logits || !b->probs || !b->redshift || !b->score || !b->domain) {
        batcher_free_buffers(b);
        free(b);
        return gx_err_set(err, GX_ERR_NOMEM, "batcher %s: out of memory for %d images", in->name, opts.max_batch);
    }
    if ((s = batcher_sync_init(b, err)) != GX_OK) {
        batcher_free_buffers(b);
        free(b);
        return s;
    }
    if (pthread_create(&b->thread, NULL, batcher_main, b)) {
        pthread_mutex_destroy(&b->mu);
        pthread_cond_destroy(&b->cv);
        batcher_free_buffers(b);
        free(b);
        return gx_err_set(err, GX_ERR_NOMEM, "batcher %s: cannot start the worker thread", in->name);
    }
    *out = b;
    return GX_OK;
}

gx_status gx_batcher_submit(gx_batcher *b, gx_job *job, gx_err *err) {
    if (!b || !job || !job->x || !job->done)
        return gx_err_set(err, GX_ERR_INVALID, "gx_batcher_submit: job without input or done()");
    job->status = GX_OK;
    job->error[0] = 0;
    job->next = NULL;
    pthread_mutex_lock(&b->mu);
    if (b->closing) {
        pthread_mutex_unlock(&b->mu);
        return gx_err_set(err, GX_ERR_CLOSED, "model %s is shutting down", gx_serve_model_info(b->model)->name);
    }
    if (b->depth >= b->o.max_queue) {
        b->st.rejected++;
        pthread_mutex_unlock(&b->mu);
        return gx_err_set(err, GX_ERR_BUSY, "model %s: queue full (%d jobs waiting)",
                          gx_serve_model_info(b->model)->name, b->o.max_queue);
    }
    job->submit_ns = gx_batcher_now_ns();
    if (b->tail) b->tail->next = job;
    else b->head = job;
    b->tail = job;
    b->depth++;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    return GX_OK;
}

void gx_batcher_stats_get(gx_batcher *b, gx_batcher_stats *s) {
    pthread_mutex_lock(&b->mu);
    *s = b->st;
    s->queue_depth = b->depth;
    pthread_mutex_unlock(&b->mu);
}

const gx_batcher_opts *gx_batcher_get_opts(const gx_batcher *b) {
    return &b->o;   /* immutable after open */
}

int gx_batcher_on_worker(const gx_batcher *b) {
    return b && pthread_equal(pthread_self(), b->thread);
}

void gx_batcher_flush(gx_batcher *b) {
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    b->flushing = 1;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

void gx_batcher_close(gx_batcher *b) {
    if (!b) return;
    /* From its own worker (a done() callback) the join could never return. */
    GX_ASSERT_MSG(!gx_batcher_on_worker(b), "gx_batcher_close called from the batcher's own worker (in done())");
    pthread_mutex_lock(&b->mu);
    b->closing = 1;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->thread, NULL);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    batcher_free_buffers(b);
    free(b);
}
