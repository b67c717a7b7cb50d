/*
 * test_registry.c — daemon/gx_registry.c: loading a models directory (order,
 * skipped files, refusals), find/default, reload swapping while requests
 * are in flight (no request lost or failed), a failed reload that changes
 * nothing, and the last reference dropped inside a done() callback.
 */
#include "gx_test.h"
#include "gx_registry.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* From test_serve_model.c. */
int tserve_write_good(const char *path, uint64_t seed, int size);
int tserve_mkdtemp(char *dir, size_t cap);
void tserve_rmtree(const char *dir);
void tserve_random_images(float *x, int n, int S, uint64_t seed);

enum { TR_S = 16, TR_K = 10, TR_PER = 3 * TR_S * TR_S };

static int tr_write(const char *dir, const char *name, uint64_t seed) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return tserve_write_good(p, seed, TR_S);
}

static int tr_write_text(const char *dir, const char *name, const char *text) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f) return 0;
    fputs(text, f);
    return fclose(f) == 0;
}

/* A blocking request: submit one job to e and wait for its done(). */
typedef struct tr_wait {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int done, calls;
    gx_registry *release_in_done;   /* dropped inside done() when set */
} tr_wait;

static void tr_done(gx_job *job, void *user) {
    (void)job;
    tr_wait *w = user;
    if (w->release_in_done) gx_registry_release(w->release_in_done);
    pthread_mutex_lock(&w->mu);
    w->done = 1;
    w->calls++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static gx_status tr_request(gx_registry_entry *e, const float *x, gx_job *job, gx_registry *release_in_done,
                            gx_err *err) {
    tr_wait w = { .release_in_done = release_in_done };
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    memset(job, 0, sizeof *job);
    job->x = x;
    job->coords[0] = job->coords[1] = NAN;
    job->done = tr_done;
    job->user = &w;
    gx_status s = gx_batcher_submit(e->batcher, job, err);
    if (s == GX_OK) {
        pthread_mutex_lock(&w.mu);
        while (!w.done) pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        s = w.calls == 1 ? job->status : GX_ERR_INVALID;
    }
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return s;
}

/* ----------------------------------------------------------------- load */

GX_TEST(registry_load_find_default) {
    char dir[64], sub[128], one[128];
    CHECK(tserve_mkdtemp(dir, sizeof dir));
    CHECK(tr_write(dir, "b.safetensors", 1) && tr_write(dir, "wavelet-mamba.safetensors", 2) &&
          tr_write(dir, "a.safetensors", 3));
    /* Skipped: other extensions, hidden files, directories, temp files. */
    CHECK(tr_write_text(dir, "notes.txt", "not a model"));
    CHECK(tr_write_text(dir, ".hidden.safetensors", "garbage"));
    CHECK(tr_write_text(dir, "a.safetensors.tmp.123", "garbage"));
    snprintf(sub, sizeof sub, "%s/sub.safetensors", dir);
    CHECK(mkdir(sub, 0700) == 0);
    gx_registry *r = NULL;
    gx_err err;
    gx_status s = gx_registry_load(&r, dir, NULL, &err);
    CHECK_MSG(s == GX_OK, "load: %s", err.msg);
    if (s == GX_OK) {
        CHECK(gx_registry_count(r) == 3);
        CHECK(!strcmp(gx_registry_at(r, 0)->info->name, "a"));
        CHECK(!strcmp(gx_registry_at(r, 1)->info->name, "b"));
        CHECK(!strcmp(gx_registry_at(r, 2)->info->name, "wavelet-mamba"));
        CHECK(gx_registry_at(r, 3) == NULL && gx_registry_at(r, -1) == NULL);
        CHECK(gx_registry_find(r, "b") == gx_registry_at(r, 1));
        CHECK(gx_registry_find(r, "zzz") == NULL && gx_registry_find(r, NULL) == NULL);
        CHECK(gx_registry_default(r) == gx_registry_at(r, 2));
        /* Each entry answers through its own batcher. */
        float x[TR_PER];
        tserve_random_images(x, 1, TR_S, 5);
        gx_job ja, jb;
        CHECK(tr_request(gx_registry_find(r, "a"), x, &ja, NULL, &err) == GX_OK);
        CHECK(tr_request(gx_registry_find(r, "b"), x, &jb, NULL, &err) == GX_OK);
        CHECK(memcmp(ja.logits, jb.logits, sizeof ja.logits) != 0);   /* different weights */
        gx_registry_release(r);
    }
    /* A single file; no wavelet-mamba -> the first is the default. */
    snprintf(one, sizeof one, "%s/b.safetensors", dir);
    CHECK(gx_registry_load(&r, one, NULL, &err) == GX_OK);
    if (r) {
        CHECK(gx_registry_count(r) == 1 && gx_registry_default(r) == gx_registry_at(r, 0));
        CHECK(!strcmp(gx_registry_default(r)->info->name, "b"));
        gx_registry_release(r);
    }
    /* Empty directory, missing path, a corrupt checkpoint among good ones. */
    CHECK(gx_registry_load(&r, sub, NULL, &err) == GX_ERR_NOTFOUND && !r);
    CHECK(strstr(err.msg, "no checkpoints in") && strstr(err.msg, sub));
    snprintf(one, sizeof one, "%s/absent", dir);
    CHECK(gx_registry_load(&r, one, NULL, &err) == GX_ERR_IO && strstr(err.msg, one));
    CHECK(tr_write_text(dir, "c.safetensors", "corrupt"));
    snprintf(one, sizeof one, "%s/c.safetensors", dir);
    CHECK(gx_registry_load(&r, dir, NULL, &err) == GX_ERR_FORMAT && !r);
    CHECK_MSG(strstr(err.msg, one) != NULL, "message: %s", err.msg);
    /* Bad batcher options fail the load too. */
    unlink(one);
    CHECK(gx_registry_load(&r, dir, &(gx_batcher_opts){ -1, 0, 0, NULL }, &err) == GX_ERR_INVALID && !r);
    tserve_rmtree(dir);
}

/* ------------------------------------------------------------- reload */

enum { TR_THREADS = 4, TR_REQS = 12 };

typedef struct tr_client {
    gx_registry_holder *h;
    const float *x;
    const char *v1, *v2;            /* the two versions' hashes */
    const float *ref1, *ref2;       /* [K] logits of x under each version */
    int ok, failed, wrong, seen1, seen2;
} tr_client;

static void *tr_client_main(void *arg) {
    tr_client *c = arg;
    for (int i = 0; i < TR_REQS; i++) {
        gx_registry *r = gx_registry_acquire(c->h);
        gx_registry_entry *e = gx_registry_default(r);
        gx_job job;
        gx_err err;
        gx_status s = tr_request(e, c->x, &job, NULL, &err);
        if (s != GX_OK) { c->failed++; gx_registry_release(r); continue; }
        /* The answer matches the model version the request saw. */
        int is1 = !strcmp(e->info->version, c->v1), is2 = !strcmp(e->info->version, c->v2);
        const float *ref = is1 ? c->ref1 : c->ref2;
        int good = is1 || is2;
        for (int k = 0; good && k < TR_K; k++) good = fabsf(job.logits[k] - ref[k]) <= 1e-6f * (1 + fabsf(ref[k]));
        c->ok += good;
        c->wrong += !good;
        c->seen1 += is1;
        c->seen2 += is2;
        gx_registry_release(r);
    }
    return NULL;
}

/* Reference logits of image x under checkpoint path, and its version. */
static int tr_reference(gx_test_state *T, const char *path, const float *x, float *lg, char *version) {
    gx_serve_model *m = NULL;
    gx_err err;
    float pr[TR_K], z;
    gx_status s = gx_serve_model_load(&m, path, NULL, &err);
    CHECK_MSG(s == GX_OK, "%s", err.msg);
    if (s == GX_OK) s = gx_serve_model_predict(m, x, TR_S, (float[2]){ NAN, NAN }, 1, &(gx_serve_out){ lg, pr, &z, NULL }, &err);
    if (m) strcpy(version, gx_serve_model_info(m)->version);
    gx_serve_model_free(m);
    return s == GX_OK;
}

GX_TEST(registry_reload_under_load_and_failed_reload) {
    char d1[64], d2[64], d3[64], p1[128], p2[128], v1[65] = "", v2[65] = "";
    CHECK(tserve_mkdtemp(d1, sizeof d1) && tserve_mkdtemp(d2, sizeof d2) && tserve_mkdtemp(d3, sizeof d3));
    CHECK(tr_write(d1, "wavelet-mamba.safetensors", 31) && tr_write(d2, "wavelet-mamba.safetensors", 32));
    /* d3: a good model and a corrupt one -> the reload must fail whole. */
    CHECK(tr_write(d3, "wavelet-mamba.safetensors", 33) && tr_write_text(d3, "zz.safetensors", "corrupt"));
    snprintf(p1, sizeof p1, "%s/wavelet-mamba.safetensors", d1);
    snprintf(p2, sizeof p2, "%s/wavelet-mamba.safetensors", d2);
    float x[TR_PER], ref1[TR_K], ref2[TR_K];
    tserve_random_images(x, 1, TR_S, 8);
    if (!tr_reference(T, p1, x, ref1, v1) || !tr_reference(T, p2, x, ref2, v2)) goto out;
    gx_registry *r0 = NULL;
    gx_registry_holder *h = NULL;
    gx_err err;
    gx_batcher_opts bo = { 4, 500, 64, NULL };
    CHECK(gx_registry_load(&r0, d1, &bo, &err) == GX_OK);
    CHECK(gx_registry_holder_new(&h, r0, &err) == GX_OK);
    if (!h) { gx_registry_release(r0); goto out; }
    tr_client c[TR_THREADS];
    pthread_t tid[TR_THREADS];
    for (int t = 0; t < TR_THREADS; t++) {
        c[t] = (tr_client){ .h = h, .x = x, .v1 = v1, .v2 = v2, .ref1 = ref1, .ref2 = ref2 };
        pthread_create(&tid[t], NULL, tr_client_main, &c[t]);
    }
    /* Swap 1 -> 2 -> 1 -> 2 while the clients run; after each swap a new
     * acquire sees the new version at once. */
    const char *dirs[4] = { d2, d1, d2, d1 }, *vers[4] = { v2, v1, v2, v1 };
    for (int i = 0; i < 4; i++) {
        usleep(30000);
        gx_status s = gx_registry_reload(h, dirs[i], &bo, &err);
        CHECK_MSG(s == GX_OK, "reload %d: %s", i, err.msg);
        gx_registry *r = gx_registry_acquire(h);
        CHECK(!strcmp(gx_registry_default(r)->info->version, vers[i]));
        gx_registry_release(r);
    }
    /* A failed reload: error names the bad file, the registry is unchanged. */
    gx_registry *before = gx_registry_acquire(h);
    gx_status s = gx_registry_reload(h, d3, &bo, &err);
    CHECK(s == GX_ERR_FORMAT && strstr(err.msg, "zz.safetensors"));
    gx_registry *after = gx_registry_acquire(h);
    CHECK(after == before && !strcmp(gx_registry_default(after)->info->version, v1));
    gx_registry_release(after);
    gx_registry_release(before);
    for (int t = 0; t < TR_THREADS; t++) pthread_join(tid[t], NULL);
    int ok = 0, seen1 = 0, seen2 = 0;
    for (int t = 0; t < TR_THREADS; t++) {
        CHECK_MSG(c[t].failed == 0 && c[t].wrong == 0, "client %d: %d failed, %d wrong", t, c[t].failed, c[t].wrong);
        ok += c[t].ok;
        seen1 += c[t].seen1;
        seen2 += c[t].seen2;
    }
    CHECK(ok == TR_THREADS * TR_REQS);
    printf("  registry reload: %d requests answered (%d by version 1, %d by version 2)\n", ok, seen1, seen2);
    gx_registry_holder_free(h);
out:
    tserve_rmtree(d1);
    tserve_rmtree(d2);
    tserve_rmtree(d3);
}

/* The last reference dropped inside done() (on the registry's own worker):
 * no self-join deadlock; the close runs on a helper thread. */
GX_TEST(registry_release_last_reference_in_done) {
    char dir[64];
    CHECK(tserve_mkdtemp(dir, sizeof dir));
    CHECK(tr_write(dir, "m.safetensors", 41));
    gx_registry *r = NULL;
    gx_err err;
    CHECK(gx_registry_load(&r, dir, NULL, &err) == GX_OK);
    if (r) {
        float x[TR_PER];
        tserve_random_images(x, 1, TR_S, 9);
        gx_job job;
        CHECK(tr_request(gx_registry_default(r), x, &job, r, &err) == GX_OK);
        usleep(300000);   /* let the helper thread finish before the leak check */
    }
    tserve_rmtree(dir);
}
