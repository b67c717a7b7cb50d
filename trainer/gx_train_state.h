/*
 * gx_train_state.h — what the three trainers (wavelet-mamba, cf-inn, uda)
 * share: the --set option table, and the training-state file every trainer writes after each
 * epoch and reads on --resume (wavelet-mamba, cf-inn, uda): one safetensors
 * file with the weights, the optimiser's moments and the loop position as
 * metadata ("format", "seed", "epoch", "run_id", "best_val_accuracy",
 * "best_epoch"). A trainer with more to keep (uda: memory bank, tuner) adds
 * its own tensors and keys between begin and write, and reads them from the
 * still-open file after gx_train_state_open.
 *
 *   gx_st_writer w; gx_st_writer_init(&w);
 *   s = gx_train_state_begin(&w, &params, &opt, "galaxyd-train-state-1", seed, &loop, err);
 *   ... extras ...
 *   if (s == GX_OK) s = gx_st_writer_write(&w, path, err);   // temp name, fsync, rename
 *   gx_st_writer_free(&w);
 */
#ifndef GX_TRAIN_STATE_H
#define GX_TRAIN_STATE_H

#include "gx.h"
#include "gx_optim.h"
#include "gx_safetensors.h"

#include <stddef.h>

/* One row of a trainer's --set table: the option's name, its type ('d'
 * double, 'i' int, 'l' int64_t, 'u' uint64_t) and its offset in the
 * trainer's options struct. */
typedef struct gx_train_set_key {
    const char *key;
    char        type;
    size_t      off;
} gx_train_set_key;

/* Parses value strictly (the whole string; finite doubles; 'i' within int,
 * 'u' not negative) into the field of opts that key names in keys[0..n).
 * GX_ERR_NOTFOUND "--set: unknown key 'K'"; GX_ERR_INVALID names the key
 * and the bad value. opts is changed only on GX_OK. */
gx_status gx_train_set_apply(void *opts, const gx_train_set_key *keys, size_t n, const char *key,
                             const char *value, gx_err *err);

/* Where a run stands after a completed epoch. */
typedef struct gx_train_loop {
    int     epoch;          /* the last completed epoch, 0-based */
    int64_t run_id;
    double  best_acc;       /* best validation accuracy so far */
    int     best_epoch;
} gx_train_loop;

/* A numeric metadata entry printed with fmt ("%.0f" for integers, "%.17g"
 * for doubles that must round-trip). */
gx_status gx_train_meta_num(gx_st_writer *w, const char *key, const char *fmt, double v, gx_err *err);

/* Adds the weights, the optimiser state and the common metadata to w. */
gx_status gx_train_state_begin(gx_st_writer *w, const gx_params *p, const gx_optim *opt, const char *format,
                               uint64_t seed, const gx_train_loop *loop, gx_err *err);

/* Reads path into f, checks its format (GX_ERR_FORMAT "PATH is not a WHAT
 * file" when it or a common key is missing), that it belongs to want_run
 * and want_seed (GX_ERR_INVALID naming both), then loads the weights (not
 * strict: the file also holds "optim.*") and the optimiser, and fills loop.
 * On GX_OK f stays open for the caller's extras (gx_st_close it); on error
 * it is closed. */
gx_status gx_train_state_open(gx_st_file *f, const char *path, const char *format, const char *what,
                              int64_t want_run, uint64_t want_seed, gx_params *p, gx_optim *opt,
                              gx_train_loop *loop, gx_err *err);

/* The whole file of a trainer without extras: begin, then written to path
 * (temp name, fsync, rename). */
gx_status gx_train_state_write(const char *path, const gx_params *p, const gx_optim *opt, const char *format,
                               uint64_t seed, const gx_train_loop *loop, gx_err *err);

/* gx_train_state_open for a trainer without extras: the file is closed
 * again before this returns. */
gx_status gx_train_state_load(const char *path, const char *format, const char *what, int64_t want_run,
                              uint64_t want_seed, gx_params *p, gx_optim *opt, gx_train_loop *loop, gx_err *err);

/* An integer metadata entry; 0 when missing or not a whole integer. */
int gx_train_meta_i64(const gx_st_file *f, const char *key, int64_t *v);

#endif
