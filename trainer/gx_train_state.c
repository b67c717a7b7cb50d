/*
 * gx_train_state.c — what the trainers share (gx_train_state.h): the --set
 * table parser and the training-state file.
 * One implementation so that the three trainers resume the same way: a
 * resumed run is bit-identical to an uninterrupted one only when weights,
 * optimiser moments and the loop position all come back exactly.
 */
#include "gx_train_state.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

gx_status gx_train_set_apply(void *opts, const gx_train_set_key *keys, size_t n, const char *key,
                             const char *value, gx_err *err) {
    if (!key || !value) return gx_err_set(err, GX_ERR_INVALID, "--set: expected key=value");
    for (size_t i = 0; i < n; i++) {
        const gx_train_set_key *k = &keys[i];
        if (strcmp(k->key, key)) continue;
        char *end = NULL;
        errno = 0;
        void *p = (char *)opts + k->off;
        if (k->type == 'd') {
            double v = strtod(value, &end);
            if (!*value || *end || errno || !isfinite(v))
                return gx_err_set(err, GX_ERR_INVALID, "--set %s: bad number '%s'", key, value);
            *(double *)p = v;
        } else {
            long long v = strtoll(value, &end, 10);
            if (!*value || *end || errno || (k->type == 'i' && (v < -2147483647LL || v > 2147483647LL)) ||
                (k->type == 'u' && v < 0))
                return gx_err_set(err, GX_ERR_INVALID, "--set %s: bad integer '%s'", key, value);
            if (k->type == 'i') *(int *)p = (int)v;
            else if (k->type == 'l') *(int64_t *)p = v;
            else *(uint64_t *)p = (uint64_t)v;
        }
        return GX_OK;
    }
    return gx_err_set(err, GX_ERR_NOTFOUND, "--set: unknown key '%s'", key);
}

gx_status gx_train_meta_num(gx_st_writer *w, const char *key, const char *fmt, double v, gx_err *err) {
    char b[64];
    snprintf(b, sizeof b, fmt, v);
    return gx_st_writer_meta(w, key, b, err);
}

gx_status gx_train_state_begin(gx_st_writer *w, const gx_params *p, const gx_optim *opt, const char *format,
                               uint64_t seed, const gx_train_loop *loop, gx_err *err) {
    char sd[32];
    snprintf(sd, sizeof sd, "%llu", (unsigned long long)seed);
    gx_status s = gx_params_to_writer(p, w, err);
    if (s == GX_OK) s = gx_optim_state_to_writer(opt, p, w, err);
    if (s == GX_OK) s = gx_st_writer_meta(w, "format", format, err);
    if (s == GX_OK) s = gx_train_meta_num(w, "epoch", "%.0f", loop->epoch, err);
    if (s == GX_OK) s = gx_train_meta_num(w, "run_id", "%.0f", (double)loop->run_id, err);
    if (s == GX_OK) s = gx_train_meta_num(w, "best_val_accuracy", "%.17g", loop->best_acc, err);
    if (s == GX_OK) s = gx_train_meta_num(w, "best_epoch", "%.0f", loop->best_epoch, err);
    if (s == GX_OK) s = gx_st_writer_meta(w, "seed", sd, err);
    return s;
}

int gx_train_meta_i64(const gx_st_file *f, const char *key, int64_t *v) {
    const char *s = gx_st_meta(f, key);
    char *end;
    if (!s) return 0;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (end == s || *end || errno) return 0;
    *v = x;
    return 1;
}

gx_status gx_train_state_open(gx_st_file *f, const char *path, const char *format, const char *what,
                              int64_t want_run, uint64_t want_seed, gx_params *p, gx_optim *opt,
                              gx_train_loop *loop, gx_err *err) {
    memset(f, 0, sizeof *f);
    gx_status s = gx_st_read(f, path, err);
    if (s != GX_OK) return s;
    int64_t epoch, run, best_epoch;
    const char *fmt = gx_st_meta(f, "format"), *best = gx_st_meta(f, "best_val_accuracy");
    const char *seed = gx_st_meta(f, "seed");
    if (!fmt || strcmp(fmt, format) || !gx_train_meta_i64(f, "epoch", &epoch) ||
        !gx_train_meta_i64(f, "run_id", &run) || !best || !seed || !gx_train_meta_i64(f, "best_epoch", &best_epoch))
        s = gx_err_set(err, GX_ERR_FORMAT, "%s is not a %s file", path, what);
    else if (run != want_run)
        s = gx_err_set(err, GX_ERR_INVALID, "%s belongs to run %lld", path, (long long)run);
    else if (strtoull(seed, NULL, 10) != want_seed)
        s = gx_err_set(err, GX_ERR_INVALID, "%s has seed %s, the run %llu", path, seed,
                       (unsigned long long)want_seed);
    if (s == GX_OK) s = gx_params_load(p, f, 0, err);
    if (s == GX_OK) s = gx_optim_state_load(opt, p, f, err);
    if (s != GX_OK) {
        gx_st_close(f);
        return s;
    }
    loop->epoch = (int)epoch;
    loop->run_id = run;
    loop->best_acc = strtod(best, NULL);
    loop->best_epoch = (int)best_epoch;
    return GX_OK;
}

gx_status gx_train_state_write(const char *path, const gx_params *p, const gx_optim *opt, const char *format,
                               uint64_t seed, const gx_train_loop *loop, gx_err *err) {
    gx_st_writer w;
    gx_st_writer_init(&w);
    gx_status s = gx_train_state_begin(&w, p, opt, format, seed, loop, err);
    if (s == GX_OK) s = gx_st_writer_write(&w, path, err);
    gx_st_writer_free(&w);
    return s;
}

gx_status gx_train_state_load(const char *path, const char *format, const char *what, int64_t want_run,
                              uint64_t want_seed, gx_params *p, gx_optim *opt, gx_train_loop *loop, gx_err *err) {
    gx_st_file f;
    gx_status s = gx_train_state_open(&f, path, format, what, want_run, want_seed, p, opt, loop, err);
    if (s == GX_OK) gx_st_close(&f);
    return s;
}
