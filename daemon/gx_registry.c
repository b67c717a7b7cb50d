/*
 * gx_registry.c — the served models and their hot swap (contract in
 * gx_registry.h).
 *
 * Design:
 *  - A registry is immutable once built: entries (model + running batcher)
 *    are fixed at load, so readers need no lock, only a reference. The
 *    reference count is atomic; the registry closes when it reaches zero.
 *  - The holder is one pointer behind a mutex. acquire() takes the mutex
 *    only long enough to read the pointer and add a reference, so a swap is
 *    atomic for acquirers: each request sees the old registry or the new
 *    one, whole, for its whole life. A reload builds the new registry
 *    completely before taking the mutex; a failure changes nothing.
 *  - Closing a registry closes each batcher (which answers every job still
 *    queued) and then frees its model (the batcher uses the model until its
 *    worker has exited). Normally nothing is queued by then: every submitter
 *    holds a reference until its done(). If the last reference is dropped
 *    on one of the registry's own workers (a done() callback releasing it),
 *    closing there would make the worker join itself, so the close is handed
 *    to a detached thread instead.
 *  - Reloads are serialised by their own mutex, so SIGHUP and the admin
 *    route never hold two new registries at once.
 */
#include "gx_registry.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct gx_registry {
    int refs;                  /* atomic */
    int n;
    gx_registry_entry e[GX_REGISTRY_MAX_MODELS];
};

struct gx_registry_holder {
    pthread_mutex_t mu;        /* guards cur */
    pthread_mutex_t reload_mu; /* one reload at a time */
    gx_registry    *cur;
};

/* ------------------------------------------------------------ building */

static void registry_close(gx_registry *r) {
    for (int i = 0; i < r->n; i++) {
        gx_batcher_close(r->e[i].batcher);   /* drains first: it uses the model */
        gx_serve_model_free(r->e[i].model);
    }
    free(r);
}

static int name_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_checkpoint_name(const char *n) {
    static const char ext[] = ".safetensors";
    size_t len = strlen(n), k = sizeof ext - 1;
    return n[0] != '.' && len > k && !strcmp(n + len - k, ext);
}

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
}

/* The checkpoint files of dir (regular files, symlinks followed), sorted. */
static gx_status list_checkpoints(const char *dir, char **names, int *count, gx_err *err) {
    *count = 0;
    DIR *d = opendir(dir);
    if (!d) return gx_err_set(err, GX_ERR_IO, "models %s: cannot open: %s", dir, strerror(errno));
    gx_status s = GX_OK;
    struct dirent *de;
    while (s == GX_OK && (de = readdir(d))) {
        if (!is_checkpoint_name(de->d_name)) continue;
        size_t len = strlen(dir) + strlen(de->d_name) + 2;
        char *p = malloc(len);
        struct stat st;
        if (!p) { s = gx_err_set(err, GX_ERR_NOMEM, "models %s: out of memory", dir); break; }
        snprintf(p, len, "%s/%s", dir, de->d_name);
        if (stat(p, &st) != 0 || !S_ISREG(st.st_mode)) { free(p); continue; }
        if (*count == GX_REGISTRY_MAX_MODELS) {
            free(p);
            s = gx_err_set(err, GX_ERR_INVALID, "models %s: more than %d checkpoints", dir, GX_REGISTRY_MAX_MODELS);
            break;
        }
        names[(*count)++] = p;
    }
    closedir(d);
    if (s == GX_OK && *count == 0) s = gx_err_set(err, GX_ERR_NOTFOUND, "no checkpoints in %s", dir);
    if (s != GX_OK) { free_names(names, *count); *count = 0; return s; }
    qsort(names, (size_t)*count, sizeof *names, name_cmp);
    return GX_OK;
}

/* Loads one checkpoint and starts its batcher as entry r->n. */
static gx_status registry_add(gx_registry *r, const char *path, const gx_batcher_opts *bo, gx_err *err) {
    gx_registry_entry *e = &r->e[r->n];
    gx_status s = gx_serve_model_load_on(&e->model, path, NULL, bo ? bo->device : NULL, err);
    if (s != GX_OK) return s;
    e->info = gx_serve_model_info(e->model);
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->e[i].info->name, e->info->name)) {
            gx_serve_model_free(e->model);
            return gx_err_set(err, GX_ERR_INVALID, "%s: a model named '%s' is already loaded", path, e->info->name);
        }
    gx_err e2;
    if ((s = gx_batcher_open(&e->batcher, e->model, bo, &e2)) != GX_OK) {
        gx_serve_model_free(e->model);
        return gx_err_set(err, s, "%s: %s", path, e2.msg);
    }
    r->n++;
    return GX_OK;
}

gx_status gx_registry_load(gx_registry **out, const char *dir, const gx_batcher_opts *bo, gx_err *err) {
    *out = NULL;
    if (!dir) return gx_err_set(err, GX_ERR_INVALID, "gx_registry_load: no models directory");
    struct stat st;
    if (stat(dir, &st) != 0) return gx_err_set(err, GX_ERR_IO, "models %s: %s", dir, strerror(errno));
    char *names[GX_REGISTRY_MAX_MODELS];
    int n = 0;
    gx_status s = GX_OK;
    if (S_ISDIR(st.st_mode)) s = list_checkpoints(dir, names, &n, err);
    else if (!(names[0] = strdup(dir))) s = gx_err_set(err, GX_ERR_NOMEM, "models %s: out of memory", dir);
    else n = 1;
    if (s != GX_OK) return s;
    gx_registry *r = calloc(1, sizeof *r);
    if (!r) s = gx_err_set(err, GX_ERR_NOMEM, "models %s: out of memory", dir);
    for (int i = 0; s == GX_OK && i < n; i++) s = registry_add(r, names[i], bo, err);
    free_names(names, n);
    if (s != GX_OK) {
        if (r) registry_close(r);
        return s;
    }
    r->refs = 1;
    *out = r;
    return GX_OK;
}

int gx_registry_count(const gx_registry *r) {
    return r ? r->n : 0;
}

gx_registry_entry *gx_registry_at(gx_registry *r, int i) {
    return r && i >= 0 && i < r->n ? &r->e[i] : NULL;
}

gx_registry_entry *gx_registry_find(gx_registry *r, const char *name) {
    for (int i = 0; r && name && i < r->n; i++)
        if (!strcmp(r->e[i].info->name, name)) return &r->e[i];
    return NULL;
}

gx_registry_entry *gx_registry_find_kind(gx_registry *r, const char *kind) {
    gx_registry_entry *e = gx_registry_find(r, kind);
    if (e && !strcmp(e->info->kind, kind)) return e;
    for (int i = 0; r && kind && i < r->n; i++)
        if (!strcmp(r->e[i].info->kind, kind)) return &r->e[i];
    return NULL;
}

gx_registry_entry *gx_registry_default(gx_registry *r) {
    gx_registry_entry *e = gx_registry_find_kind(r, "wavelet-mamba");
    return e ? e : gx_registry_at(r, 0);
}

/* ---------------------------------------------------------- references */

static void *registry_close_main(void *arg) {
    registry_close(arg);
    return NULL;
}

void gx_registry_retain(gx_registry *r) {
    if (r) __atomic_add_fetch(&r->refs, 1, __ATOMIC_RELAXED);
}

void gx_registry_release(gx_registry *r) {
    if (!r || __atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
    int on_worker = 0;
    for (int i = 0; i < r->n; i++) on_worker |= gx_batcher_on_worker(r->e[i].batcher);
    if (!on_worker) { registry_close(r); return; }
    pthread_t t;
    pthread_attr_t a;
    int ok = pthread_attr_init(&a) == 0;
    ok = ok && pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED) == 0 &&
         pthread_create(&t, &a, registry_close_main, r) == 0;
    pthread_attr_destroy(&a);
    /* No thread to close it on: leaking one registry beats a deadlock. */
    if (!ok) fprintf(stderr, "galaxyd: cannot start a thread to close an old model registry (leaked)\n");
}

gx_status gx_registry_holder_new(gx_registry_holder **out, gx_registry *initial, gx_err *err) {
    *out = NULL;
    if (!initial) return gx_err_set(err, GX_ERR_INVALID, "gx_registry_holder_new: no registry");
    gx_registry_holder *h = calloc(1, sizeof *h);
    if (!h) return gx_err_set(err, GX_ERR_NOMEM, "registry holder: out of memory");
    if (pthread_mutex_init(&h->mu, NULL)) {
        free(h);
        return gx_err_set(err, GX_ERR_NOMEM, "registry holder: cannot create a mutex");
    }
    if (pthread_mutex_init(&h->reload_mu, NULL)) {
        pthread_mutex_destroy(&h->mu);
        free(h);
        return gx_err_set(err, GX_ERR_NOMEM, "registry holder: cannot create a mutex");
    }
    h->cur = initial;
    *out = h;
    return GX_OK;
}

gx_registry *gx_registry_acquire(gx_registry_holder *h) {
    pthread_mutex_lock(&h->mu);
    gx_registry *r = h->cur;
    gx_registry_retain(r);
    pthread_mutex_unlock(&h->mu);
    return r;
}

gx_status gx_registry_reload(gx_registry_holder *h, const char *dir, const gx_batcher_opts *bo, gx_err *err) {
    pthread_mutex_lock(&h->reload_mu);
    gx_registry *r = NULL;
    gx_status s = gx_registry_load(&r, dir, bo, err);
    gx_registry *old = NULL;
    if (s == GX_OK) {
        pthread_mutex_lock(&h->mu);
        old = h->cur;
        h->cur = r;
        pthread_mutex_unlock(&h->mu);
    }
    pthread_mutex_unlock(&h->reload_mu);
    gx_registry_release(old);   /* closes now, or when its last request ends */
    return s;
}

void gx_registry_holder_free(gx_registry_holder *h) {
    if (!h) return;
    pthread_mutex_lock(&h->mu);
    gx_registry *r = h->cur;
    h->cur = NULL;
    pthread_mutex_unlock(&h->mu);
    gx_registry_release(r);
    pthread_mutex_destroy(&h->mu);
    pthread_mutex_destroy(&h->reload_mu);
    free(h);
}
