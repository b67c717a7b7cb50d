/*
 * gx_train_cf.h — the CF-INN training loop (spec/cf-inn.md, "Training"), as
 * a library function (trainer/gx_train_cf.c) so that tests call it directly
 * and tools/galaxy-train.c (`galaxy-train cf-inn`) only parses arguments.
 * It follows the WaveletMamba trainer (trainer/gx_train_wm.h): the same
 * split, loader, database rows, atomic checkpoints and resume contract.
 *
 *   gx_train_cf_opts o;
 *   gx_train_cf_opts_default(&o, "tiny", &err);
 *   o.data = "g10.h5"; o.db_path = "runs.sqlite"; o.out_dir = "out"; o.epochs = 3;
 *   gx_train_cf_set(&o, "lr", "1e-3", &err);                 // --set key=value
 *   gx_train_cf_result r;
 *   if (gx_train_cf(&o, &r, &err) != GX_OK) puts(err.msg);
 *
 * Training (the spec's): L = w_rec L_R + w_mmd L_MMD + w_ib L_IB (+ w_cyc L_cyc
 * + w_bg L_bg + w_z2 L_z2, the latent cycle, background and z2 class-mean
 * terms of models/cf_inn_loss.c, our additions, 0 by default; L_bg's mask is
 * the segmentation of each augmented image, the recipe the background metric
 * uses; warm-up epochs leave out L_IB and L_z2, the terms that read labels) on batches
 * of the training part (seeded stratified 70/15/15 split, the loader's
 * rotation + flip augmentation), Adam (betas 0.9/0.99, no weight decay),
 * lr 3e-4 for everything but the mixture means, which run at mu_lr_mult (3)
 * times it; the learning rate is multiplied by lr_decay (0.99) each epoch;
 * global gradient-norm clip 8. The first warmup_epochs epochs (default 0;
 * the spec's option is 10) train L_R + L_MMD only. z1 gets noise sigma
 * noise_sigma (0.05) in training, none in evaluation.
 *
 * m-hat: the counterfactual metrics of each epoch need m-hat. It is taken
 * for free from that epoch's training batches (h with training noise, on
 * augmented images, weights moving: an approximation, like the WaveletMamba
 * colour statistics); after the last epoch it is recomputed exactly over the
 * training part (no augmentation, final weights) and stored in
 * last.safetensors, and best.safetensors gets the same from its own weights.
 *
 * Files in out_dir (each written atomically; the state file last):
 *   last.safetensors, best.safetensors (best validation accuracy): CF-INN
 *     checkpoints (models/gx_cf_inn.h gx_cf_save: format
 *     "galaxyd-checkpoint-1", model "cf-inn", config, classes, preprocess,
 *     run_id, epoch, created), with mhat/mhat_valid;
 *   train_state.safetensors: weights + Adam moments and step + metadata
 *     format "galaxyd-cf-train-state-1", epoch (the last complete one),
 *     run_id, best_val_accuracy, best_epoch, seed. Resuming loads it only.
 *
 * Determinism (what makes a resumed run equal to an uninterrupted one): the
 * init is a function of the seed; the loader of (seed, epoch); the per-batch
 * noise (z1 noise, MMD reference samples) comes from
 * fork(fork(fork(seed', epoch), step), 0 or 1), never from a carried
 * generator; validation reads the weights but never changes them (the
 * approximate m-hat is rewritten from scratch every epoch).
 *
 * Per epoch the database (runs.model_kind "cf-inn") receives, split "train":
 * loss_total, loss_x, loss_y, loss_ib, loss_mmd, loss_rec, loss_cyc (with w_cyc), loss_bg
 * (with w_bg), loss_z2 (with w_z2), rec_ssim (the
 * loss's SSIM), accuracy (nearest mean of the noisy h, augmented batches),
 * lr, images_per_s, grad_norm (mean before clipping); split "val" (eval
 * mode, no noise): the same loss terms, accuracy, recall_<k> for every
 * class k, auc_macro, nll (mean hidden-space negative log-likelihood),
 * rec_ssim and rec_msd (x against its reconstruction, the spec's SSIM),
 * z2_class_probe (gx_metric_centroid_probe of z2 with the true classes:
 * how much class the spec's class-independent z2 carries) and,
 * over the first cf_eval_n validation images x their K-1 other classes:
 * cf_valid_hidden, cf_valid_reencoded, cf_valid_judge (only with a judge),
 * cf_fallback (share of targets that needed Delta = mu_q - h), cf_msd_x_cf,
 * cf_ssim_x_cf, cf_msd_rec_cf, cf_ssim_rec_cf, cf_msd_x_rec, cf_ssim_x_rec.
 *
 * A resumed run takes seed, split_seed and half from its database row
 * (runs.seed and config_json "train"), so it trains on the same images
 * whatever the resuming call passes.
 *
 * The judge (--judge): a wavelet-mamba checkpoint (gx_wm_checkpoint_load)
 * whose class count equals the dataset's. Each x_cf is resized to the judge's
 * input size with io's antialiased bilinear resize when the sizes differ,
 * and cf_valid_judge is the share it classifies as the target.
 */
#ifndef GX_TRAIN_CF_H
#define GX_TRAIN_CF_H

#include "gx.h"
#include "gx_image.h"
#include "gx_cf_inn.h"
#include "gx_wavelet_mamba.h"

#include <signal.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gx_train_cf_opts {
    const char *data;          /* dataset path (io/gx_dataset.h) */
    const char *db_path;       /* SQLite file (created if absent) */
    const char *out_dir;       /* checkpoints and training state (created if absent) */
    const char *config_name;   /* "tiny" | "default" (informational) */
    const char *judge;         /* wavelet-mamba checkpoint, or NULL */
    const char *init;          /* a cf-inn checkpoint whose weights a new run starts
                                  from (fine-tuning; the optimiser starts fresh), or
                                  NULL: the seeded init */
    gx_cf_config model;        /* widths; .size the input size; .classes is replaced
                                  by the dataset's class count */
    int      epochs;           /* 100 */
    int      batch;            /* 128 */
    uint64_t seed;             /* init, split, loader, per-step noise */
    int64_t  resume_run;       /* 0: new run; else continue it from out_dir's
                                  train_state (none: start over); the run's seed
                                  from the database replaces `seed` */
    int      stop_after;       /* tests: return after this many completed epochs */
    /* optimiser */
    double lr;                 /* 3e-4 */
    double mu_lr_mult;         /* 3: the mixture means' learning rate factor */
    double lr_decay;           /* 0.99 per epoch */
    double beta1, beta2, eps;  /* 0.9, 0.99, 1e-8 */
    double clip;               /* 8 (0 = off) */
    int    warmup_epochs;      /* 0: epochs with L_R + L_MMD only */
    double noise_sigma;        /* 0.05 */
    gx_cf_loss_cfg loss;       /* gx_cf_loss_cfg_default() */
    /* data */
    double     crop_frac;      /* 1.0 */
    int        balanced;       /* class-balanced sampling (0) */
    int        augment;        /* 1 */
    gx_pre_aug aug;            /* rotation 0-360 and flips only */
    int        prefetch;       /* 2 */
    int64_t    max_train;      /* > 0: only the first max_train training indices */
    int64_t    split_seed;     /* seed of the 70/15/15 split; -1 (default): `seed` */
    int        half;           /* 0: the whole training part (after max_train);
                                  1 / 2: only its even / odd positions (two models
                                  on disjoint halves of one split, trainer/gx_two_models.h) */
    int        cf_eval_n;      /* 64: validation images for the counterfactual metrics */
    int        threads;        /* > 0: gx_set_threads */
    gx_device device;          /* where the run computes (--device; the zero value is the
                                  CPU): gx_train_device in gx_train_common.h */
    int    tf32;               /* 1: cuBLAS may use TF32 tensor cores on the device
                                  (--tf32; not in config_json, like the device) */
    int        progress;       /* -1 auto, 0 quiet, 1 a line per epoch */
    const char *command_line;  /* stored with the run (may be NULL) */
    /* Non-NULL and non-zero (a SIGINT handler sets it): stop at the next
     * batch, drop the partial epoch, mark the run interrupted, return GX_OK
     * with result.interrupted. */
    const volatile sig_atomic_t *stop;
} gx_train_cf_opts;

/* Defaults for "tiny" (gx_cf_config_tiny) or "default"; GX_ERR_INVALID for
 * another name. */
gx_status gx_train_cf_opts_default(gx_train_cf_opts *o, const char *config, gx_err *err);
/* One option by name, as --set key=value. Keys: lr, mu_lr_mult, lr_decay,
 * beta1, beta2, eps, clip, warmup_epochs, noise_sigma, epochs, batch, seed,
 * size, crop_frac, balanced, augment, prefetch, max_train, split_seed, half,
 * cf_eval_n, threads; model widths d, d1, hidden, blocks, subnet, clamp; losses beta,
 * label_smooth, w_rec, w_mmd, w_ib, w_cyc, w_bg, w_z2, ssim_weight; augmentation aug_rot,
 * aug_hflip, aug_vflip. GX_ERR_NOTFOUND names an unknown key,
 * GX_ERR_INVALID the key and the bad value. */
gx_status gx_train_cf_set(gx_train_cf_opts *o, const char *key, const char *value, gx_err *err);

typedef struct gx_train_cf_result {
    int64_t run_id;
    int     epochs_done;       /* completed epochs (resume included) */
    double  best_val_accuracy;
    int     best_epoch;
    double  first_train_loss, last_train_loss;   /* of this call's epochs */
    double  images_per_s;      /* training throughput of the last epoch */
    int     interrupted;
} gx_train_cf_result;

gx_status gx_train_cf(const gx_train_cf_opts *o, gx_train_cf_result *r, gx_err *err);

/* The judge's classes (argmax of a wavelet-mamba checkpoint's logits) of n
 * images xs [n,3,S,S] into pred; each image is resized to the judge's input
 * size with io's antialiased bilinear resize when the sizes differ. Uses ctx
 * with grad off and resets it; shared by the trainer's per-epoch metric and
 * galaxy-train eval/bundle (trainer/gx_eval_cf.c). */
gx_status gx_cf_judge_classes(gx_ctx *ctx, gx_wm_model *judge, const float *xs, int64_t n, int64_t S,
                             int64_t *pred, gx_err *err);

#ifdef __cplusplus
}
#endif
#endif
