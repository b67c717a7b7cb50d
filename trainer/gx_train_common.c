/*
 * gx_train_common.c — the plumbing the trainers share (gx_train_common.h).
 * Written once so that the three trainers name their files, draw their
 * progress, store their rows and close their runs the same way.
 */
#include "gx_train_common.h"

#include "gx_dataset.h"
#include "gx_sha256.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

double gx_train_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

gx_status gx_train_setup_common(const char *out_dir, int threads, gx_train_paths *p, gx_ctx *ctx, gx_err *err) {
    if (mkdir(out_dir, 0777) != 0 && errno != EEXIST)
        return gx_err_set(err, GX_ERR_IO, "--out %s: cannot create: %s", out_dir, strerror(errno));
    snprintf(p->last, sizeof p->last, "%s/last.safetensors", out_dir);
    snprintf(p->best, sizeof p->best, "%s/best.safetensors", out_dir);
    snprintf(p->state, sizeof p->state, "%s/train_state.safetensors", out_dir);
    if (threads > 0) gx_set_threads(threads);
    gx_ctx_init(ctx, 64u << 20);
    return GX_OK;
}

gx_status gx_train_device_open(gx_train_device *d, gx_device kind, gx_err *err) {
    return gx_train_device_open_tf32(d, kind, 0, err);
}

gx_status gx_train_device_open_tf32(gx_train_device *d, gx_device kind, int tf32, gx_err *err) {
    memset(d, 0, sizeof *d);
    d->kind = kind;
    if (kind != GX_DEVICE_CUDA) return GX_OK;
    gx_cuda_backend be;
    gx_err e2;
    gx_status s = gx_cuda_device_backend(0, &be, &e2);
    if (s == GX_OK) s = gx_cuda_pool_create(&be, 0, &d->pool, &e2);
    if (s == GX_OK && (s = gx_cuda_exec_init(&d->exec, d->pool, 0, tf32 != 0, &e2)) == GX_OK) d->exec_ready = 1;
    if (s != GX_OK) {
        gx_train_device_close(d);
        return gx_err_set(err, GX_ERR_IO, "device cuda:0: %s", e2.msg);
    }
    return GX_OK;
}

gx_status gx_train_device_params(gx_train_device *d, gx_params *p, const char *what, gx_err *err) {
    if (d->kind != GX_DEVICE_CUDA || p->cuda) return GX_OK;
    gx_err e2;
    gx_status s = gx_params_to_cuda(p, &d->exec, &e2);
    return s == GX_OK ? GX_OK : gx_err_set(err, s, "device cuda:0: %s: %s", what, e2.msg);
}

gx_status gx_train_params_to_host(gx_params *p, gx_err *err) {
    gx_err e2;
    gx_status s = gx_params_sync_host(p, &e2);
    return s == GX_OK ? GX_OK : gx_err_set(err, s, "device cuda:0: %s", e2.msg);
}

gx_status gx_train_params_to_device(gx_params *p, const char *what, gx_err *err) {
    gx_err e2;
    gx_status s = gx_params_sync_device(p, &e2);
    if (s == GX_OK) return GX_OK;
    return what ? gx_err_set(err, s, "device cuda:0: %s: %s", what, e2.msg)
                : gx_err_set(err, s, "device cuda:0: %s", e2.msg);
}

void gx_train_device_ctx(gx_train_device *d, gx_ctx *ctx) {
    if (d->kind == GX_DEVICE_CUDA) ctx->cuda = &d->exec;
}

gx_status gx_train_device_sync(gx_train_device *d, gx_err *err) {
    if (d->kind != GX_DEVICE_CUDA) return GX_OK;
    gx_err e2;
    gx_status s = gx_cuda_exec_sync(&d->exec, &e2);
    return s == GX_OK ? GX_OK : gx_err_set(err, s, "device cuda:0: %s", e2.msg);
}

gx_status gx_train_device_error(gx_train_device *d, gx_status s, gx_err *err) {
    if (s == GX_OK || d->kind != GX_DEVICE_CUDA || d->exec.status == GX_OK) return s;
    return gx_train_device_sync(d, err);
}

void gx_train_device_close(gx_train_device *d) {
    if (d->exec_ready) gx_cuda_exec_free(&d->exec);
    if (d->pool) gx_cuda_pool_destroy(d->pool);
    memset(d, 0, sizeof *d);
}

void gx_train_clock_init(gx_train_clock *c, int progress) {
    memset(c, 0, sizeof *c);
    /* progress 1 asks for the per-epoch lines only: no carriage returns in a log. */
    c->tty = progress != 1 && isatty(2);
}

void gx_train_progress(gx_train_clock *c, int progress, int epoch, int epochs, int64_t step, int64_t steps,
                       double loss, double ips) {
    if (progress == 0 || !c->tty) return;
    double now = gx_train_now();
    if (now - c->t_last_print < 0.25) return;   /* at most ~4 updates/s */
    c->t_last_print = now;
    int64_t left = (int64_t)(epochs - epoch - 1) * steps + (steps - step - 1);
    double per = c->steps_done > 0 ? (now - c->t_start) / (double)c->steps_done : 0;
    double eta = per * (double)(left > 0 ? left : 0);
    fprintf(stderr, "\repoch %d/%d  step %lld/%lld  loss %.4f  %.1f img/s  ETA %02d:%02d:%02d   ",
            epoch + 1, epochs, (long long)step + 1, (long long)steps, loss, ips,
            (int)(eta / 3600), (int)fmod(eta / 60, 60), (int)fmod(eta, 60));
    fflush(stderr);
}

void gx_train_row(gx_train_rows *w, const char *split, double v, const char *fmt, ...) {
    if (w->n >= GX_TRAIN_MAX_ROWS) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->name[w->n], sizeof w->name[0], fmt, ap);
    va_end(ap);
    w->row[w->n] = (gx_db_metric){ split, w->name[w->n], v };
    w->n++;
}

char *gx_train_classes_json(int k) {
    json_t *a = json_array();
    for (int i = 0; i < k; i++) {
        const char *n = gx_class_name(i);
        char tmp[32];
        if (!n) { snprintf(tmp, sizeof tmp, "class_%d", i); n = tmp; }
        json_array_append_new(a, json_string(n));
    }
    char *s = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return s;
}

char *gx_train_config_json(json_t *model, json_t *train) {
    char *s = NULL;
    if (model && train) {
        int rc = json_object_set_new(model, "train", train);
        train = NULL;                /* set_new takes it, on failure too */
        if (rc == 0) s = json_dumps(model, JSON_COMPACT | JSON_SORT_KEYS);
    }
    json_decref(train);
    json_decref(model);
    return s;
}

gx_status gx_train_checkpoint_put(gx_db *db, int64_t run_id, int epoch, const char *kind, const char *path,
                                  const char *metrics_json, gx_err *err) {
    char sha[65];
    gx_status s = gx_sha256_file(path, sha, err);
    if (s == GX_OK)
        s = gx_db_checkpoint_put(db, &(gx_db_checkpoint){ run_id, epoch, kind, path, sha, metrics_json }, NULL, err);
    return s;
}

void gx_train_run_finish(gx_db *db, int64_t run_id, gx_status s, int finished) {
    if (!db || run_id <= 0) return;
    gx_err e2;
    gx_db_run_finish(db, run_id, s != GX_OK ? "failed" : finished ? "finished" : "interrupted", &e2);
}
