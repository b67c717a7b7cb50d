/*
 * gx_train_wm.h — the WaveletMamba training loop and its evaluation, as
 * library functions (trainer/gx_train_wm.c) so that tests call them
 * directly and tools/galaxy-train.c is only argument parsing.
 *
 *   gx_train_wm_opts o;
 *   gx_train_wm_opts_default(&o, "tiny");
 *   o.data = "g10.h5"; o.db_path = "runs.sqlite"; o.out_dir = "out"; o.epochs = 3;
 *   gx_train_wm_set(&o, "lr_peak", "2e-3", &err);           // --set key=value
 *   gx_train_wm_result r;
 *   if (gx_train_wm(&o, &r, &err) != GX_OK) puts(err.msg);
 *
 * Files in out_dir:
 *   last.safetensors  the weights after the newest epoch; best.safetensors the
 *                     weights of the epoch with the best validation accuracy.
 *                     Metadata: format "galaxyd-checkpoint-1", model
 *                     "wavelet-mamba", config (JSON of gx_wm_config), classes
 *                     (JSON list of names), preprocess (JSON size, crop_frac),
 *                     run_id, epoch (0-based), created, plus split_seed (so
 *                     eval can rebuild the same test part) and val_accuracy.
 *   train_state.safetensors  everything a resume needs: the weights (so the
 *                     pair is consistent whichever file a kill -9 interrupted),
 *                     the optimiser moments and step, and metadata epoch (the
 *                     last complete one), best_val_accuracy, run_id, seed.
 * Every file is written atomically (temp + fsync + rename); the state file
 * after the checkpoint. Resuming loads the state file only and restarts at
 * the epoch after its epoch; an interrupted later checkpoint is rewritten.
 *
 * Determinism (what makes resume bit-identical): model init from the seed;
 * the loader is a function of (seed, epoch); per micro-batch randomness (VIB
 * noise, coordinate dropout) comes from m.rng = fork(fork(seed, epoch), step),
 * never from a generator carried across steps; BN running statistics are
 * buffers saved with the weights; validation reads but never changes the
 * model state that training uses.
 *
 * Colour statistics (feature_extractor.color_stats.median/iqr): the model normalises colours
 * with batch statistics in training and with these buffers in evaluation.
 * Each epoch they are set from the raw colours seen during that epoch's
 * training steps (free, approximate: augmented images, weights moving), so
 * validation metrics and the best checkpoint are meaningful; after the last
 * epoch they are recomputed exactly over the training part (no augmentation,
 * final weights, median and linear-interpolated IQR per colour) and stored in
 * last.safetensors.
 *
 * Per epoch the database (migrations/) receives, split "train": loss_total,
 * loss_cls, loss_red, loss_hk, loss_vib, loss_lsi (means over micro-batches),
 * accuracy (on the augmented training batches), lr (at the epoch's end),
 * ce (plain cross-entropy: the focal loss is no progress measure, its gamma
 * falls with the cross-entropy), images_per_s, grad_norm (mean before clipping), task_matrix_ij (raw learned
 * 2x2 matrix) and task_weight_ij (its row softmax, what the heads use);
 * split "val": the same loss terms plus accuracy, ce, recall_<k> for every class
 * k, auc_macro, auc_micro, ap_macro, auc_skipped, z_log_mse, z_mae, z_r2,
 * z_bias, z_nmad, z_outlier_rate, z_n, z_bin<b>_log_mse, z_bin<b>_bias,
 * z_bin<b>_n (b = 0..3 for [0,.5) [.5,1) [1,1.5) [1.5,2)).
 *
 * The run's config_json (runs table) is the model config (the checkpoint's
 * "config" keys) plus "train": the resolved options (config name, epochs,
 * batch, accum, seed, max_train, schedule, z_train, and the loss switches
 * w_*, colour_weights, hk_weight_max, hk_mode, hk_*_epoch, sk_lambda,
 * sk_iters), which `galaxy-train report` labels runs by.
 */
#ifndef GX_TRAIN_WM_H
#define GX_TRAIN_WM_H

#include "gx.h"
#include "gx_image.h"

#include <signal.h>
#include "gx_wavelet_mamba.h"
#include "gx_wm_loss.h"
#include "gx_metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GX_TRAIN_MAX_SIZES 16

typedef struct gx_train_wm_opts {
    const char *data;          /* dataset path (io/gx_dataset.h) */
    const char *db_path;       /* SQLite file (created if absent) */
    const char *out_dir;       /* checkpoints and training state (created if absent) */
    const char *config_name;   /* "tiny" | "small" | "default" (informational) */
    gx_wm_config model;        /* widths; .size is the input size; .classes is
                                  replaced by the dataset's class count */
    int      epochs;           /* total epochs of the schedule */
    int      batch;            /* micro-batch size */
    int      accum;            /* micro-batches per optimiser step */
    uint64_t seed;             /* init, split, loader, per-step noise */
    int64_t  resume_run;       /* 0: new run; else continue this run from out_dir's
                                  train_state (none yet: killed in the first epoch,
                                  start over); the run's seed from the database
                                  replaces `seed` */
    int      stop_after;       /* tests: return after this many completed epochs
                                  (0 = run to the end), as if killed */
    /* optimiser and schedule (spec "Training defaults") */
    double lr_start, lr_peak, lr_end;   /* 1e-4 -> 1e-3 -> 5e-6 */
    double warmup_epochs;      /* < 0: 10 epochs scaled by epochs/120 (10 at 120) */
    double weight_decay;       /* 5e-4 (AdamW, decoupled) */
    double beta1, beta2, eps;  /* 0.9, 0.999, 1e-8 */
    double clip;               /* global grad-norm clip, 1.0 (0 = off) */
    /* data */
    double     crop_frac;      /* 1.0 */
    int        balanced;       /* class-balanced sampling in training (1) */
    int        augment;        /* training augmentation on (1) */
    gx_pre_aug aug;            /* GX_PRE_AUG_DEFAULT */
    int        prefetch;       /* loader batches ahead (2) */
    int64_t    max_train;      /* > 0: use only the first max_train training indices */
    /* model behaviour in training */
    double coord_dropout;      /* 0.1 */
    int    vib_sample;         /* 1 */
    gx_wm_loss_cfg loss;       /* gx_wm_loss_cfg_default() */
    int    z_train_spec;       /* --set z_train=spec_selected (1) | all (0, default).
                                  1: training-part objects whose spec_selected flag
                                  is 0 count as having no redshift, so they leave
                                  the redshift terms (red, HK) only; validation and
                                  test metrics use every object (the paper's Table 3
                                  setting: train on the spectroscopic sample, test
                                  on all). The dataset needs a spec_selected column
                                  (galaxy-synth files have one, Galaxy10 does not:
                                  then training refuses to start, naming the file). */
    int    threads;            /* > 0: gx_set_threads; 0 = leave */
    gx_device device;          /* where the run computes (--device; the zero value is the
                                  CPU): gx_train_device in gx_train_common.h */
    int    tf32;               /* 1: cuBLAS may use TF32 tensor cores on the device
                                  (--tf32; not in config_json, like the device) */
    int    progress;           /* -1 auto (\r line on a tty, a line per epoch
                                  otherwise), 0 quiet, 1 a line per epoch */
    const char *command_line;  /* stored with the run (may be NULL) */
    /* When non-NULL and *stop becomes non-zero (a SIGINT handler sets it),
     * training stops at the next micro-batch: the partial epoch is dropped
     * (the last complete one stays on disk, resumable), the run is marked
     * "interrupted" and gx_train_wm returns GX_OK with result.interrupted. */
    const volatile sig_atomic_t *stop;
} gx_train_wm_opts;

/* Defaults for a named config ("tiny", "small", "default"); GX_ERR_INVALID
 * for another name. */
gx_status gx_train_wm_opts_default(gx_train_wm_opts *o, const char *config, gx_err *err);
/* Sets one option by name, as --set key=value does. Keys: the fields above
 * (lr_start, lr_peak, lr_end, warmup_epochs, weight_decay, beta1, beta2, eps,
 * clip, crop_frac, balanced, augment, prefetch, max_train, coord_dropout,
 * vib_sample, threads, epochs, batch, accum, seed, size), model widths (c1,
 * c2, d_model, d_state, d_conv, expand, dt_rank, grid, fusion, delta_mode =
 * mean|token, backbone = wavelet|resnet18, resnet_width), loss (w_cls, w_red, w_vib, w_lsi, hk_weight_max,
 * hk_start_epoch, hk_ramp_end_epoch, hk_mode = sample|batch, sk_lambda,
 * sk_iters, sk_eps, hk_bins, hk_delta, focal_gamma0, focal_alpha,
 * focal_alpha0, colour_weights = 0|1), z_train = all|spec_selected
 * and augmentation (aug_rot, aug_hflip, aug_vflip,
 * aug_brightness, aug_contrast, aug_p_contrast, aug_noise_lo, aug_noise_hi,
 * aug_p_noise). GX_ERR_NOTFOUND names an unknown key; GX_ERR_INVALID names
 * the key and the bad value. */
gx_status gx_train_wm_set(gx_train_wm_opts *o, const char *key, const char *value, gx_err *err);

typedef struct gx_train_wm_result {
    int64_t run_id;
    int     epochs_done;       /* completed epochs (total, resume included) */
    double  best_val_accuracy;
    int     best_epoch;
    double  last_train_loss, first_train_loss;   /* of this call's epochs */
    double  images_per_s;      /* training throughput of the last epoch */
    int     interrupted;       /* stopped through opts.stop or stop_after */
} gx_train_wm_result;

/* Runs (or resumes) training. Errors in data, database or files return a
 * status with a message; nothing aborts on bad input. */
gx_status gx_train_wm(const gx_train_wm_opts *o, gx_train_wm_result *r, gx_err *err);

/* ------------------------------------------------------------- checkpoints */

/* Checks a parsed checkpoint written by gx_train_wm (metadata format
 * "galaxyd-checkpoint-1", model "wavelet-mamba", a valid config) and loads
 * its weights into m, which this initialises from the config (gx_params_load,
 * strict, all-or-nothing). On GX_OK the caller owns m (gx_wm_free); on an
 * error m holds nothing. Messages do not name the file: callers prefix it.
 * Used by `galaxy-train eval` and by galaxyd (daemon/gx_serve_model.c). */
gx_status gx_wm_checkpoint_load(const gx_st_file *f, gx_wm_model *m, gx_err *err);

/* ------------------------------------------------------------- evaluation */

typedef struct gx_eval_wm_opts {
    const char *checkpoint;    /* a checkpoint written by gx_train_wm */
    const char *data;          /* dataset; its test part (split_seed of the
                                  checkpoint, 70/15/15) is evaluated */
    const char *db_path;       /* NULL: do not store */
    int  sizes[GX_TRAIN_MAX_SIZES];   /* input sizes; n_sizes 0 = the checkpoint's */
    int  n_sizes;
    int  batch;                /* 64 */
    int  all;                  /* 1: evaluate every sample, not only the test part */
    FILE *print;               /* where to print the report (NULL: nowhere) */
    gx_device device;          /* where the forward passes run (the zero value is the CPU;
                                  gx_train_device in gx_train_common.h) */
    int  tf32;                 /* 1: TF32 tensor cores on the device */
} gx_eval_wm_opts;

typedef struct gx_eval_wm_result {
    int64_t n;                 /* samples evaluated */
    int     n_sizes;
    int     sizes[GX_TRAIN_MAX_SIZES];
    double  accuracy[GX_TRAIN_MAX_SIZES];
    double  cv;                /* population std / mean of accuracy[] */
    double  accuracy_nominal;  /* at the checkpoint's size */
    double  auc_macro, z_log_mse, z_nmad;   /* at the checkpoint's size */
    gx_cls_metrics cls;        /* the full sets at the checkpoint's size */
    gx_z_metrics   z;
    double  images_per_s;      /* evaluation throughput at the checkpoint's size
                                  (batch o.batch, loader included) */
    int64_t n_params;          /* trainable parameters (gx_params_count mask 0) */
} gx_eval_wm_result;

/* Evaluates a checkpoint (eval mode: BN running statistics, the stored
 * colour statistics, z = mu). The full metric set (the val names above) is
 * computed at the checkpoint's nominal size, always; each asked size adds
 * its accuracy (accuracy_s<size>), and size_cv is the CV over the asked
 * sizes; images_per_s (inference throughput) and n_params come with the
 * full set (trainer/gx_report.h reads them for the Table-2 report). Stored, when db_path is given, under the checkpoint's run and epoch
 * with split "test". Printed to o->print. */
gx_status gx_eval_wm(const gx_eval_wm_opts *o, gx_eval_wm_result *r, gx_err *err);

#ifdef __cplusplus
}
#endif
#endif
