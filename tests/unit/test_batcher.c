/*
 * test_batcher.c — daemon/gx_batcher.c: concurrent submitters get exactly
 * the single-image answers, the bounded queue refuses at once, deadlines,
 * close() draining, batch formation (max_batch, delay) and statistics.
 *
 * Several tests park the worker inside a "gate" job's done() callback, so
 * the queue can be filled deterministically while nothing is taken from it.
 */
#include "gx_test.h"
#include "gx_batcher.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* From test_serve_model.c. */
int tserve_write_good(const char *path, uint64_t seed, int size);
int tserve_mkdtemp(char *dir, size_t cap);
void tserve_rmtree(const char *dir);
void tserve_random_images(float *x, int n, int S, uint64_t seed);

enum { TB_S = 16, TB_K = 10, TB_PER = 3 * TB_S * TB_S };

/* ------------------------------------------------------------ helpers */

typedef struct tb_sync {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int done_count;
    int entered, gate_open;    /* the gate job is inside done() / may leave */
} tb_sync;

typedef struct tb_job {
    gx_job   job;
    tb_sync *sy;
    int      calls;            /* done() calls (exactly 1 expected) */
    int      gate;             /* 1: block in done() until the gate opens */
    int64_t  done_ns;
} tb_job;

static void tb_sync_init(tb_sync *s) {
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
}

static void tb_sync_destroy(tb_sync *s) {
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}

static void tb_done(gx_job *job, void *user) {
    tb_job *j = user;
    (void)job;
    tb_sync *s = j->sy;
    pthread_mutex_lock(&s->mu);
    j->calls++;
    j->done_ns = gx_batcher_now_ns();
    s->done_count++;
    pthread_cond_broadcast(&s->cv);
    if (j->gate) {
        s->entered = 1;
        while (!s->gate_open) pthread_cond_wait(&s->cv, &s->mu);
    }
    pthread_mutex_unlock(&s->mu);
}

static void tb_job_init(tb_job *j, tb_sync *s, const float *x, int64_t deadline_ns) {
    memset(j, 0, sizeof *j);
    j->sy = s;
    j->job.x = x;
    j->job.coords[0] = j->job.coords[1] = NAN;
    j->job.deadline_ns = deadline_ns;
    j->job.done = tb_done;
    j->job.user = j;
}

/* Waits until done_count >= n (or 20 s); returns 1 on success. */
static int tb_wait_count(tb_sync *s, int n) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 20;
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    while (s->done_count < n && rc == 0) rc = pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    int ok = s->done_count >= n;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

static int tb_wait_entered(tb_sync *s) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 20;
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    while (!s->entered && rc == 0) rc = pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    int ok = s->entered;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

static void tb_open_gate(tb_sync *s) {
    pthread_mutex_lock(&s->mu);
    s->gate_open = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* A model from a fresh temporary checkpoint. */
static gx_serve_model *tb_model(gx_test_state *T, char *dir, size_t cap, uint64_t seed) {
    char p[128];
    gx_err err;
    gx_serve_model *m = NULL;
    if (!tserve_mkdtemp(dir, cap)) { dir[0] = 0; return NULL; }
    snprintf(p, sizeof p, "%s/m.safetensors", dir);
    CHECK(tserve_write_good(p, seed, TB_S));
    gx_status s = gx_serve_model_load(&m, p, NULL, &err);
    CHECK_MSG(s == GX_OK, "load: %s", err.msg);
    return m;
}

/* Parks the worker in a gate job's done(); returns 1 when it is there.
 * nfill filler jobs go with the gate so its batch is full at once (no
 * waiting for batch_delay_us); their done() runs after the gate opens. */
static int tb_park_fill(gx_test_state *T, gx_batcher *b, tb_sync *s, tb_job *gate, tb_job *fill, int nfill,
                        const float *x) {
    gx_err err;
    tb_job_init(gate, s, x, 0);
    gate->gate = 1;
    CHECK(gx_batcher_submit(b, &gate->job, &err) == GX_OK);
    for (int i = 0; i < nfill; i++) {
        tb_job_init(&fill[i], s, x, 0);
        CHECK(gx_batcher_submit(b, &fill[i].job, &err) == GX_OK);
    }
    int ok = tb_wait_entered(s);
    CHECK_MSG(ok, "the worker never reached the gate job");
    return ok;
}

static int tb_park(gx_test_state *T, gx_batcher *b, tb_sync *s, tb_job *gate, const float *x) {
    return tb_park_fill(T, b, s, gate, NULL, 0, x);
}

/* ------------------------------------------------- concurrency, equality */

enum { TB_THREADS = 8, TB_PER_THREAD = 20, TB_IMAGES = 40 };

typedef struct tb_thread {
    gx_batcher *b;
    const float *x;            /* [TB_IMAGES, 3, S, S] */
    const float *coords;       /* [TB_IMAGES, 2] */
    int t;
    tb_sync sy;
    tb_job jobs[TB_PER_THREAD];
    int submitted;
} tb_thread;

static int tb_image_of(int t, int j) {
    return (t * 7 + j * 3) % TB_IMAGES;
}

static void *tb_submitter(void *arg) {
    tb_thread *th = arg;
    gx_err err;
    for (int j = 0; j < TB_PER_THREAD; j++) {
        int i = tb_image_of(th->t, j);
        tb_job_init(&th->jobs[j], &th->sy, th->x + (int64_t)i * TB_PER, 0);
        th->jobs[j].job.coords[0] = th->coords[2 * i];
        th->jobs[j].job.coords[1] = th->coords[2 * i + 1];
        if (gx_batcher_submit(th->b, &th->jobs[j].job, &err) == GX_OK) th->submitted++;
        if (j % 5 == 4) usleep(500);   /* vary the batch composition */
    }
    tb_wait_count(&th->sy, th->submitted);
    return NULL;
}

GX_TEST(batcher_threads_equal_single_predictions) {
    char dir[64];
    gx_serve_model *m = tb_model(T, dir, sizeof dir, 21);
    if (!m) { tserve_rmtree(dir); return; }
    float *x = malloc(sizeof(float) * TB_IMAGES * TB_PER), coords[2 * TB_IMAGES];
    float ref_lg[TB_IMAGES][TB_K], ref_pr[TB_IMAGES][TB_K], ref_z[TB_IMAGES];
    tserve_random_images(x, TB_IMAGES, TB_S, 77);
    gx_err err;
    for (int i = 0; i < TB_IMAGES; i++) {
        coords[2 * i] = i % 2 ? (float)(3.0 * i) : NAN;
        coords[2 * i + 1] = i % 2 ? (float)(i - 20.0) : NAN;
        CHECK(gx_serve_model_predict(m, x + i * TB_PER, TB_S, coords + 2 * i, 1,
                                     &(gx_serve_out){ ref_lg[i], ref_pr[i], &ref_z[i], NULL }, &err) == GX_OK);
    }
    gx_batcher *b = NULL;
    CHECK(gx_batcher_open(&b, m, &(gx_batcher_opts){ 8, 2000, 256, NULL }, &err) == GX_OK);
    tb_thread *th = calloc(TB_THREADS, sizeof *th);
    pthread_t tid[TB_THREADS];
    for (int t = 0; t < TB_THREADS; t++) {
        th[t] = (tb_thread){ .b = b, .x = x, .coords = coords, .t = t };
        tb_sync_init(&th[t].sy);
        pthread_create(&tid[t], NULL, tb_submitter, &th[t]);
    }
    for (int t = 0; t < TB_THREADS; t++) pthread_join(tid[t], NULL);
    gx_batcher_stats st;
    gx_batcher_stats_get(b, &st);
    gx_batcher_close(b);
    int bitwise = 0, shared = 0, total = 0, max_bs = 0;
    for (int t = 0; t < TB_THREADS; t++) {
        CHECK(th[t].submitted == TB_PER_THREAD);
        for (int j = 0; j < TB_PER_THREAD; j++) {
            const gx_job *jb = &th[t].jobs[j].job;
            int i = tb_image_of(t, j);
            CHECK(th[t].jobs[j].calls == 1);
            CHECK_MSG(jb->status == GX_OK, "job %d/%d: %s", t, j, jb->error);
            if (jb->status != GX_OK) continue;
            total++;
            shared += jb->batch_size > 1;
            max_bs = jb->batch_size > max_bs ? jb->batch_size : max_bs;
            int same = !memcmp(jb->logits, ref_lg[i], sizeof ref_lg[i]) &&
                       !memcmp(jb->probs, ref_pr[i], sizeof ref_pr[i]) && jb->redshift == ref_z[i];
            bitwise += same;
            int amax = 0;
            for (int k = 0; k < TB_K; k++) {
                CHECK_MSG(fabsf(jb->logits[k] - ref_lg[i][k]) <= 1e-6f * (1 + fabsf(ref_lg[i][k])),
                          "job %d/%d logit %d: %.9g vs %.9g", t, j, k, jb->logits[k], ref_lg[i][k]);
                CHECK(fabsf(jb->probs[k] - ref_pr[i][k]) <= 1e-6f);
                if (ref_lg[i][k] > ref_lg[i][amax]) amax = k;
            }
            CHECK(fabsf(jb->redshift - ref_z[i]) <= 1e-6f * (1 + fabsf(ref_z[i])));
            CHECK(jb->class_index == amax);
            CHECK(jb->forward_ms > 0 && jb->queue_ms >= 0);
        }
        tb_sync_destroy(&th[t].sy);
    }
    printf("  batcher: %d of %d jobs bitwise equal to single-image predict; %d shared a batch (max %d)\n",
           bitwise, total, shared, max_bs);
    CHECK(total == TB_THREADS * TB_PER_THREAD);
    CHECK(max_bs <= 8 && shared > 0);
    /* Statistics: every image once, histogram consistent. */
    CHECK(st.images == TB_THREADS * TB_PER_THREAD && st.queue_depth == 0);
    CHECK(st.batches >= st.images / 8 && st.batches <= st.images);
    int64_t hs = 0;
    for (int k = 0; k < 8; k++) hs += st.batch_size_hist[k];
    CHECK(hs == st.batches);
    CHECK(st.batch_size_hist[6] == 0 && st.batch_size_hist[7] == 0 && st.forward_ms_total > 0);
    CHECK(st.timeouts == 0 && st.rejected == 0);
    free(th);
    free(x);
    gx_serve_model_free(m);
    tserve_rmtree(dir);
}

/* ------------------------------------------------- queue full, deadline */

GX_TEST(batcher_queue_full_is_busy_at_once) {
    char dir[64];
    gx_serve_model *m = tb_model(T, dir, sizeof dir, 22);
    if (!m) { tserve_rmtree(dir); return; }
    float *x = malloc(sizeof(float) * TB_PER);
    tserve_random_images(x, 1, TB_S, 1);
    gx_batcher *b = NULL;
    gx_err err;
    CHECK(gx_batcher_open(&b, m, &(gx_batcher_opts){ 1, 0, 4, NULL }, &err) == GX_OK);
    tb_sync s;
    tb_sync_init(&s);
    tb_job gate, jobs[5];
    if (tb_park(T, b, &s, &gate, x)) {
        for (int i = 0; i < 4; i++) {
            tb_job_init(&jobs[i], &s, x, 0);
            CHECK(gx_batcher_submit(b, &jobs[i].job, &err) == GX_OK);
        }
        tb_job_init(&jobs[4], &s, x, 0);
        int64_t t0 = gx_batcher_now_ns();
        CHECK(gx_batcher_submit(b, &jobs[4].job, &err) == GX_ERR_BUSY);
        CHECK((gx_batcher_now_ns() - t0) < 50000000);    /* immediately, not after a wait */
        CHECK(strstr(err.msg, "queue full") != NULL);
        gx_batcher_stats st;
        gx_batcher_stats_get(b, &st);
        CHECK(st.queue_depth == 4 && st.rejected == 1);
        tb_open_gate(&s);
    }
    gx_batcher_close(b);
    CHECK(gate.calls == 1);
    for (int i = 0; i < 4; i++) CHECK(jobs[i].calls == 1 && jobs[i].job.status == GX_OK);
    CHECK(jobs[4].calls == 0);       /* refused: done() never runs */
    tb_sync_destroy(&s);
    free(x);
    gx_serve_model_free(m);
    tserve_rmtree(dir);
}

GX_TEST(batcher_expired_deadline_times_out) {
    char dir[64];
    gx_serve_model *m = tb_model(T, dir, sizeof dir, 23);
    if (!m) { tserve_rmtree(dir); return; }
    float *x = malloc(sizeof(float) * TB_PER);
    tserve_random_images(x, 1, TB_S, 2);
    gx_batcher *b = NULL;
    gx_err err;
    CHECK(gx_batcher_open(&b, m, &(gx_batcher_opts){ 4, 100, 16, NULL }, &err) == GX_OK);
    tb_sync s;
    tb_sync_init(&s);
    tb_job gate, soon, late, none, past;
    if (tb_park(T, b, &s, &gate, x)) {
        int64_t now = gx_batcher_now_ns();
        tb_job_init(&soon, &s, x, now + 1000000);            /* 1 ms */
        tb_job_init(&late, &s, x, now + 20000000000LL);      /* 20 s */
        tb_job_init(&none, &s, x, 0);
        tb_job_init(&past, &s, x, now - 1);
        CHECK(gx_batcher_submit(b, &soon.job, &err) == GX_OK);
        CHECK(gx_batcher_submit(b, &late.job, &err) == GX_OK);
        CHECK(gx_batcher_submit(b, &none.job, &err) == GX_OK);
        CHECK(gx_batcher_submit(b, &past.job, &err) == GX_OK);
        usleep(20000);
        tb_open_gate(&s);
        CHECK(tb_wait_count(&s, 5));
        CHECK(soon.job.status == GX_ERR_TIMEOUT && soon.job.batch_size == 0 && soon.job.error[0]);
        CHECK(past.job.status == GX_ERR_TIMEOUT);
        CHECK(soon.job.queue_ms >= 15);
        CHECK(late.job.status == GX_OK && none.job.status == GX_OK);
        /* Expired jobs do not take batch places: the two live ones shared one. */
        CHECK(late.job.batch_size == 2 && none.job.batch_size == 2);
        gx_batcher_stats st;
        gx_batcher_stats_get(b, &st);
        CHECK(st.timeouts == 2 && st.images == 3);
    }
    gx_batcher_close(b);
    CHECK(soon.calls == 1 && late.calls == 1 && none.calls == 1 && past.calls == 1);
    tb_sync_destroy(&s);
    free(x);
    gx_serve_model_free(m);
    tserve_rmtree(dir);
}

/* ---------------------------------------------------------------- close */

static void *tb_closer(void *arg) {
    gx_batcher_close(arg);
    return NULL;
}

GX_TEST(batcher_close_answers_queued_and_refuses_new) {
    char dir[64];
    gx_serve_model *m = tb_model(T, dir, sizeof dir, 24);
    if (!m) { tserve_rmtree(dir); return; }
    float *x = malloc(sizeof(float) * TB_PER);
    tserve_random_images(x, 1, TB_S, 3);
    gx_batcher *b = NULL;
    gx_err err;
    /* A long delay: close must not wait for it. */
    CHECK(gx_batcher_open(&b, m, &(gx_batcher_opts){ 4, 5000000, 64, NULL }, &err) == GX_OK);
    tb_sync s;
    tb_sync_init(&s);
    enum { NQ = 10, NX = 40 };
    tb_job gate, fill[3], q[NQ + NX];
    int accepted = 0;
    if (tb_park_fill(T, b, &s, &gate, fill, 3, x)) {
        for (int i = 0; i < NQ; i++) {
            tb_job_init(&q[i], &s, x, 0);
            accepted += gx_batcher_submit(b, &q[i].job, &err) == GX_OK;
        }
        pthread_t ct;
        pthread_create(&ct, NULL, tb_closer, b);
        /* Until the closer has flagged the batcher, a submit still gets in
         * (and must be answered); after it, GX_ERR_CLOSED without done(). */
        gx_status st = GX_OK;
        int k = NQ;
        for (; k < NQ + NX && st == GX_OK; k++) {
            tb_job_init(&q[k], &s, x, 0);
            st = gx_batcher_submit(b, &q[k].job, &err);
            if (st == GX_OK) { accepted++; usleep(2000); }
        }
        CHECK_MSG(st == GX_ERR_CLOSED, "submit while closing: %s", gx_status_str(st));
        CHECK(strstr(err.msg, "shutting down") != NULL);
        int64_t t0 = gx_batcher_now_ns();
        tb_open_gate(&s);
        pthread_join(ct, NULL);
        CHECK((gx_batcher_now_ns() - t0) < 3000000000LL);    /* did not wait 5 s per batch */
        for (int i = 0; i < k; i++) {
            int refused = i == k - 1;
            CHECK(q[i].calls == (refused ? 0 : 1));
            if (!refused) CHECK(q[i].job.status == GX_OK);
        }
        CHECK(s.done_count == accepted + 4);
        for (int i = 0; i < 3; i++) CHECK(fill[i].calls == 1 && fill[i].job.batch_size == 4);
    } else {
        gx_batcher_close(b);
    }
    tb_sync_destroy(&s);
    free(x);
    gx_serve_model_free(m);
    tserve_rmtree(dir);
}

/* ------------------------------------------------------- batch formation */

GX_TEST(batcher_batch_formation_max_batch_and_delay) {
    char dir[64];
    gx_serve_model *m = tb_model(T, dir, sizeof dir, 25);
    if (!m) { tserve_rmtree(dir); return; }
    float *x = malloc(sizeof(float) * TB_PER);
    tserve_random_images(x, 1, TB_S, 4);
    gx_err err;
    tb_sync s;
    tb_sync_init(&s);
    /* (a) 20 queued jobs, max_batch 4: five batches of exactly 4. */
    gx_batcher *b = NULL;
    CHECK(gx_batcher_open(&b, m, &(gx_batcher_opts){ 4, 1000, 64, NULL }, &err) == GX_OK);
    tb_job gate, q[20];
    if (tb_park(T, b, &s, &gate, x)) {
        for (int i = 0; i < 20; i++) {
            tb_job_init(&q[i], &s, x, 0);
            CHECK(gx_batcher_submit(b, &q[i].job, &err) == GX_OK);
        }
        tb_open_gate(&s);
        CHECK(tb_wait_count(&s, 21));
        for (int i = 0; i < 20; i++) CHECK_MSG(q[i].job.batch_size == 4, "job %d batch %d", i, q[i].job.batch_size);
        gx_batcher_stats st;
        gx_batcher_stats_get(b, &st);
        CHECK(st.batches == 6 && st.batch_size_hist[0] == 1 && st.batch_size_hist[2] == 5);
    }
    gx_batcher_close(b);
    /* (b) a lone job waits the delay (100 ms) for company, not much longer. */
    tb_sync_destroy(&s);
    tb_sync_init(&s);
    CHECK(gx_batcher_open(&b, m, &(gx_batcher_opts){ 32, 100000, 64, NULL }, &err) == GX_OK);
    tb_job one, three[3];
    tb_job_init(&one, &s, x, 0);
    int64_t t0 = gx_batcher_now_ns();
    CHECK(gx_batcher_submit(b, &one.job, &err) == GX_OK);
    CHECK(tb_wait_count(&s, 1));
    double waited = (double)(one.done_ns - t0) / 1e6;
    CHECK_MSG(waited >= 99 && one.job.queue_ms >= 99, "waited %.1f ms (queue %.1f)", waited, one.job.queue_ms);
    CHECK_MSG(one.job.queue_ms < 2000, "queue %.1f ms", one.job.queue_ms);
    CHECK(one.job.batch_size == 1);
    /* Three jobs inside one delay window share a batch. */
    for (int i = 0; i < 3; i++) {
        tb_job_init(&three[i], &s, x, 0);
        CHECK(gx_batcher_submit(b, &three[i].job, &err) == GX_OK);
    }
    CHECK(tb_wait_count(&s, 4));
    for (int i = 0; i < 3; i++) CHECK(three[i].job.batch_size == 3);
    gx_batcher_close(b);
    /* (c) A full batch does not wait for the delay (5 s). */
    CHECK(gx_batcher_open(&b, m, &(gx_batcher_opts){ 2, 5000000, 64, NULL }, &err) == GX_OK);
    tb_job two[2];
    t0 = gx_batcher_now_ns();
    for (int i = 0; i < 2; i++) {
        tb_job_init(&two[i], &s, x, 0);
        CHECK(gx_batcher_submit(b, &two[i].job, &err) == GX_OK);
    }
    CHECK(tb_wait_count(&s, 6));
    CHECK((gx_batcher_now_ns() - t0) < 2000000000LL && two[0].job.batch_size == 2);
    gx_batcher_close(b);
    /* (d) Options: 0 = default, out-of-range refused naming the flag. */
    CHECK(gx_batcher_open(&b, m, &(gx_batcher_opts){ 0, 0, 0, NULL }, &err) == GX_OK);
    const gx_batcher_opts *eo = gx_batcher_get_opts(b);
    CHECK(eo->max_batch == 32 && eo->batch_delay_us == 2000 && eo->max_queue == 256);
    gx_batcher_close(b);
    CHECK(gx_batcher_open(&b, m, &(gx_batcher_opts){ 5000, 0, 0, NULL }, &err) == GX_ERR_INVALID && !b);
    CHECK(strstr(err.msg, "max-batch") != NULL);
    CHECK(gx_batcher_open(&b, m, &(gx_batcher_opts){ 1, -5, 1, NULL }, &err) == GX_ERR_INVALID);
    tb_sync_destroy(&s);
    free(x);
    gx_serve_model_free(m);
    tserve_rmtree(dir);
}
