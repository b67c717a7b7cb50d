/*
 * gx_train_common.h — the plumbing the three training loops (wavelet-mamba,
 * cf-inn, uda) and the cf-inn evaluation share, so that each is written once:
 * the output folder and its files, the progress line, the metric rows, the
 * run's config_json and class names, the checkpoint's database row and the
 * run's final status. (The --set parser and the training-state file live in
 * gx_train_state.h.)
 */
#ifndef GX_TRAIN_COMMON_H
#define GX_TRAIN_COMMON_H

#include "gx.h"
#include "gx_cuda.h"
#include "gx_db.h"

#include <jansson.h>
#include <stdint.h>

/* Seconds on the monotonic clock. */
double gx_train_now(void);

/* ---------------------------------------------------------------- setup */

/* The files of a run's output folder. */
typedef struct gx_train_paths {
    char last[1024];           /* DIR/last.safetensors */
    char best[1024];           /* DIR/best.safetensors */
    char state[1024];          /* DIR/train_state.safetensors */
} gx_train_paths;

/* What every trainer does first: creates out_dir when absent (GX_ERR_IO
 * "--out DIR: cannot create: ..."), names its files in p, sets the OpenMP
 * threads (threads > 0; 0 keeps the default) and opens the 64 MiB arena ctx
 * (not on an error; a zeroed ctx is safe to gx_ctx_free). */
gx_status gx_train_setup_common(const char *out_dir, int threads, gx_train_paths *p, gx_ctx *ctx, gx_err *err);

/* ----------------------------------------------------------------- device */

/* Where a run computes (galaxy-train --device). On the CPU nothing but kind
 * is used. With CUDA: one pool on device 0 and one exec (stream + device
 * arena), since a trainer is one worker. The trainer then:
 *   - calls gx_train_device_params for every parameter registry it trains or
 *     runs (after loading or resuming, before gx_optim_init's first step),
 *     and gx_train_device_ctx for each ctx it computes in;
 *   - builds batches as host tensors (gx_tensor_new_host) and moves them
 *     with gx_to_ctx, reads results through gx_to_host (or, for parameters,
 *     gx_params_sync_host then gx_tensor_host_data);
 *   - calls gx_train_device_sync once per step: a device error ends the run
 *     with the device's words;
 *   - synchronises the parameters to the host before a checkpoint is
 *     written (gx_params_sync_host), and uploads host edits of a buffer
 *     (gx_params_sync_device);
 *   - frees its models, optimisers and ctxs before gx_train_device_close
 *     (their device blocks go back to the pool it destroys). */
typedef struct gx_train_device {
    gx_device     kind;        /* GX_DEVICE_CPU (the zero value) or GX_DEVICE_CUDA */
    gx_cuda_pool *pool;
    gx_cuda_exec  exec;
    int           exec_ready;
} gx_train_device;

/* Opens kind (the caller's gx_device_select answer). GX_ERR_IO "device
 * cuda:0: ..." when the device cannot be set up; on an error d is closed. */
gx_status gx_train_device_open(gx_train_device *d, gx_device kind, gx_err *err);
/* The same with tf32 = 1: cuBLAS may use TF32 tensor cores for the matrix
 * products (gx_cuda_stream_create; ignored on the CPU). */
gx_status gx_train_device_open_tf32(gx_train_device *d, gx_device kind, int tf32, gx_err *err);
/* Parameters onto the device (nothing on the CPU); names what in the error. */
gx_status gx_train_device_params(gx_train_device *d, gx_params *p, const char *what, gx_err *err);
/* The parameters' host copies made current (gx_params_sync_host), or host
 * edits of them uploaded (gx_params_sync_device); nothing for parameters on
 * the CPU. A device error is worded "device cuda:0: [what: ]...". */
gx_status gx_train_params_to_host(gx_params *p, gx_err *err);
gx_status gx_train_params_to_device(gx_params *p, const char *what, gx_err *err);
/* ctx computes on the device (nothing on the CPU). */
void      gx_train_device_ctx(gx_train_device *d, gx_ctx *ctx);
/* Waits for the device; its first error since the last call (GX_OK on the CPU). */
gx_status gx_train_device_sync(gx_train_device *d, gx_err *err);
/* s, the error of a call that waited for the device inside the engine (the
 * optimiser state's download in gx_train_state_write): when the device's
 * error is kept on the exec, it is returned worded as gx_train_device_sync
 * words it ("device cuda:0: ..."); otherwise s and err as they are. */
gx_status gx_train_device_error(gx_train_device *d, gx_status s, gx_err *err);
void      gx_train_device_close(gx_train_device *d);

/* --------------------------------------------------------------- progress */

/* The progress line of a training call. */
typedef struct gx_train_clock {
    int     tty;               /* draw it: stderr is a terminal and progress is not 1 */
    double  t_start;           /* when this call's first epoch began */
    double  t_last_print;
    int64_t steps_done;        /* steps trained in this call (the ETA's rate) */
} gx_train_clock;

/* tty from the trainer's progress option (-1 auto, 0 off, 1 lines only),
 * the rest zero. */
void gx_train_clock_init(gx_train_clock *c, int progress);

/* Redraws "\repoch E/N  step S/T  loss L  X img/s  ETA hh:mm:ss" on stderr
 * when c->tty, progress is not 0 and 0.25 s have passed since the last one
 * (a few updates a second). epoch and step are 0-based; steps is per epoch;
 * the ETA is this call's mean time per step times the steps left. */
void gx_train_progress(gx_train_clock *c, int progress, int epoch, int epochs, int64_t step, int64_t steps,
                       double loss, double ips);

/* ------------------------------------------------------------ metric rows */

#define GX_TRAIN_MAX_ROWS 160

/* An epoch's (or evaluation's) metric rows for gx_metrics_epoch_put; the
 * names are stored here (at most 47 characters). */
typedef struct gx_train_rows {
    gx_db_metric row[GX_TRAIN_MAX_ROWS];
    char name[GX_TRAIN_MAX_ROWS][48];
    int n;
} gx_train_rows;

/* Appends the row (split, printf name, v); past GX_TRAIN_MAX_ROWS rows it
 * is dropped. split must outlive w. */
void gx_train_row(gx_train_rows *w, const char *split, double v, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ------------------------------------------------------------------- JSON */

/* ["name", ...] of k dataset classes (gx_class_name; "class_<i>" where it
 * has none); malloc'ed, NULL when out of memory. */
char *gx_train_classes_json(int k);

/* runs.config_json: the model's config object with the training options
 * under "train", compact with sorted keys. Takes both (either may be NULL,
 * then the result is NULL); malloc'ed, NULL when out of memory. */
char *gx_train_config_json(json_t *model, json_t *train);

/* --------------------------------------------------------------- database */

/* The checkpoint row of a file just written: its sha256 and
 * (run_id, epoch, kind "last"/"best", path, metrics_json). */
gx_status gx_train_checkpoint_put(gx_db *db, int64_t run_id, int epoch, const char *kind, const char *path,
                                  const char *metrics_json, gx_err *err);

/* The run's final status: "failed" when s is an error, else "finished" or
 * "interrupted". Nothing without a database or a run row; an error here
 * is dropped (the run's own status is what the caller returns). */
void gx_train_run_finish(gx_db *db, int64_t run_id, gx_status s, int finished);

#endif
