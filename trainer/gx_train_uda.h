/*
 * gx_train_uda.h — DeepAstroUDA training (spec/uda.md), offline anomaly
 * scoring of a dataset into the anomaly store, as library functions
 * (trainer/gx_train_uda.c) so tests call exactly what `galaxy-train uda` and
 * `galaxy-train score` run.
 *
 *   gx_train_uda_opts o;
 *   gx_train_uda_opts_default(&o);
 *   o.source = "sdss.h5"; o.target = "decals.h5"; o.db_path = "runs.db"; o.out_dir = "out";
 *   gx_train_uda_set(&o, "lambda", "0", &err);              // --set key=value
 *   gx_train_uda_result r;
 *   if (gx_train_uda(&o, &r, &err) != GX_OK) puts(err.msg);
 *
 * Classes (--known): a comma list of known classes in label order; each item
 * is a dataset class id or name (gx_class_lookup), or a '+'-joined group of
 * them that becomes one known class, optionally named: "spiral=5+6+7".
 * Default: every class present in the source file. Classes of neither list
 * are "unknown" (label K) in both domains; --exclude drops classes from both
 * domains entirely (e.g. the Galaxy10 classes the LSST experiment does not
 * use). Source images of unknown classes are left out of the source
 * altogether (the source is the labelled domain of the K known classes, as
 * in the paper, where the unknown class exists in the target only), so the
 * source test part has no unknown object: its unknown_accuracy and
 * anomaly_auc are NaN.
 *
 * Data: the source is split 70/15/15 (seeded, stratified on the mapped
 * labels, before the unknown classes are dropped); the target is split 80/20 into an unlabelled training part and a
 * test part by a seeded permutation that never reads the target labels
 * (they are used for evaluation only). Images are prepared like galaxyd's
 * (gx_loader: centre crop crop_frac + resize to the model size), then
 * augmented in training: flips (loader), a random multiple of 90° and a
 * small random crop (scale 0.9-1 of the side, resized back), drawn from
 * fork(seed, epoch, step, row) streams. The AC views of a target batch are
 * its 90° rotation and a 1.17x zoom (centre crop of side S/1.17, resized
 * back), stacked after it in one target-BN forward pass.
 *
 * An epoch is max(source batches, target batches) steps of 36 + 36 images;
 * the shorter side starts another pass (its own seeded order) when it runs
 * out. Optimiser: SGD Nesterov 0.9, weight decay 5e-4 on conv weights and
 * the head; lr_backbone (1e-3) for group 0, lr_head (1e-2) for the head
 * (group 1), each times (1 + 10 min(1, t/T))^-0.75, T = decay_epochs (10)
 * epochs of steps. The head rows are renormalised before every forward.
 *
 * lambda = 0 is the no-adaptation baseline: target images are not used in
 * training at all; the target BN set is kept equal to the source set
 * (copied before every evaluation and save), so the target is evaluated by
 * the source-only model and the checkpoint serves it as galaxyd expects.
 *
 * Per epoch (database, model_kind "uda"), split "train": loss_ce, loss_ac,
 * loss_es, loss_total (means over steps), rho, margin (in force during the
 * epoch), es_active_frac, tuner_rho, tuner_margin (after this epoch's tuner
 * step), tuner_changed (1 when it changed rho or m), lr_backbone, lr_head,
 * images_per_s; split "source_val": accuracy (argmax over the known
 * classes: the early-stopping and best-checkpoint criterion); splits
 * "source_test" and "target_test": accuracy, precision_macro, recall_macro,
 * f1_macro (the unknown counted as class K; sklearn's macro over the labels
 * present in truth or prediction, 0 for an undefined ratio), known_accuracy,
 * unknown_accuracy (NaN when the part holds no unknown object), anomaly_auc
 * (ROC AUC of H/ln K, unknown vs known) and n. Prediction: argmax p, or K
 * when H > rho (the tuner's rho after the epoch: what the checkpoint stores).
 *
 * Files in out_dir: last.safetensors / best.safetensors (gx_uda_save:
 * anomaly_threshold = rho, margin, test_metrics = the target_test metrics of
 * that epoch), both recorded in the checkpoints table with their sha256;
 * train_state.safetensors (weights, SGD momentum, the memory bank, the tuner
 * and the loop position) for --resume. Every file is atomic; the state goes
 * last. Early stopping: after `patience` (12) epochs without a better
 * source-validation accuracy the run ends ("finished").
 *
 * Determinism (what makes resume bit-identical): init from the seed, loader
 * order and augmentation from (seed, epoch key), per-step randomness (AC slot
 * sampling, augmentation, views) from fork(seed, epoch, step), BN running
 * statistics and the bank saved in the state.
 */
#ifndef GX_TRAIN_UDA_H
#define GX_TRAIN_UDA_H

#include "gx.h"
#include "gx_dataset.h"
#include "gx_uda.h"

#include <signal.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gx_train_uda_opts {
    const char *source, *target;   /* dataset paths (io/gx_dataset.h) */
    const char *db_path, *out_dir;
    gx_uda_config model;       /* backbone, size, temperature; classes from --known */
    const char *known;         /* --known list (NULL: every source class) */
    const char *exclude;       /* --exclude list of class ids/names (NULL: none) */
    const char *experiment;    /* label for reports (NULL: "<source> → <target>") */
    double   lambda;           /* 0.005; 0 = no-adaptation baseline */
    int      epochs;           /* 100 */
    int      batch_source, batch_target;   /* 36, 36 */
    uint64_t seed;             /* 1 */
    int64_t  resume_run;       /* 0 = new run */
    int      stop_after;       /* tests: return after this many epochs (0 = all) */
    double   lr_backbone, lr_head;         /* 1e-3, 1e-2 */
    double   momentum, weight_decay;       /* 0.9, 5e-4 */
    double   lr_gamma, lr_power, decay_epochs;   /* 10, 0.75, 10 */
    int      patience;         /* 12 */
    int64_t  ac_max_slots;     /* 0 = every bank slot */
    double   crop_frac;        /* 1.0 */
    int      augment;          /* 1 */
    int64_t  max_source, max_target;   /* > 0: use only the first N training indices */
    int      eval_batch;       /* 64 */
    int      threads;          /* > 0: gx_set_threads */
    gx_device device;          /* where the run computes (--device; the zero value is the
                                  CPU): gx_train_device in gx_train_common.h */
    int      tf32;             /* 1: cuBLAS may use TF32 tensor cores on the device
                                  (--tf32; not in config_json, like the device) */
    int      progress;         /* -1 auto, 0 quiet, 1 a line per epoch */
    const char *command_line;
    const volatile sig_atomic_t *stop;   /* as gx_train_wm_opts.stop */
} gx_train_uda_opts;

void gx_train_uda_opts_default(gx_train_uda_opts *o);
/* --backbone tiny | resnet18 | resnet50 (sets model from its config). */
gx_status gx_train_uda_backbone(gx_train_uda_opts *o, const char *name, gx_err *err);
/* --set key=value: lambda, epochs, seed, batch_source, batch_target,
 * lr_backbone, lr_head, momentum, weight_decay, lr_gamma, lr_power,
 * decay_epochs, patience, ac_max_slots, crop_frac, augment, max_source,
 * max_target, eval_batch, threads, size, temperature, experiment.
 * GX_ERR_NOTFOUND names an unknown key, GX_ERR_INVALID a bad value. */
gx_status gx_train_uda_set(gx_train_uda_opts *o, const char *key, const char *value, gx_err *err);

/* The class map of --known / --exclude: map[c] for dataset class c is the
 * known label (0..K-1), K (unknown) or -1 (excluded); names[k] the known
 * class names (group names, or the class names joined with '+'). */
typedef struct gx_uda_classmap {
    int  K;
    int  map[GX_CLASSES_MAX];
    char names[GX_UDA_MAX_CLASSES][48];
} gx_uda_classmap;
/* n_classes: the source dataset's class count (for the default list). */
gx_status gx_uda_classmap_parse(const char *known, const char *exclude, int n_classes,
                                gx_uda_classmap *cm, gx_err *err);

typedef struct gx_train_uda_result {
    int64_t run_id;
    int     epochs_done;       /* completed epochs (resume included) */
    int     best_epoch;        /* 0-based; -1 none */
    double  best_val_accuracy;
    double  first_train_loss, last_train_loss;   /* of this call's epochs */
    double  rho, margin;       /* the tuner after the last epoch */
    int     tuner_changes;     /* changes in this call */
    int     early_stopped;
    int     interrupted;
} gx_train_uda_result;

gx_status gx_train_uda(const gx_train_uda_opts *o, gx_train_uda_result *r, gx_err *err);

/* Split metrics (the "source_test"/"target_test" names above) from probs
 * [n*K], entropies [n], labels [n] in 0..K (K = unknown) and rho. */
typedef struct gx_uda_split_metrics {
    int64_t n;
    double  accuracy, precision_macro, recall_macro, f1_macro;
    double  known_accuracy, unknown_accuracy, anomaly_auc;
    /* confusion[t*(K+1) + p]: true t predicted p over K+1 classes, the last
     * "unknown" (p = K when H > rho); stored per epoch for the dashboard. */
    int64_t confusion[(GX_UDA_MAX_CLASSES + 1) * (GX_UDA_MAX_CLASSES + 1)];
} gx_uda_split_metrics;
gx_status gx_uda_split_metrics_compute(const float *probs, const float *entropy,
                                       const int32_t *labels, int64_t n, int K, double rho,
                                       gx_uda_split_metrics *out, gx_err *err);

/* ----------------------------------------------------------------- scoring */

/* Scores every image of a dataset into the anomaly store
 * (trainer/gx_anomaly_store.h), as galaxyd would score the same cutouts:
 * the image is prepared with the checkpoint's size and crop (gx_pre_prepare,
 * the path of gx_serve_prepare after decoding) and run with the named BN set.
 *
 * Object id: "<file basename>:<index>" (the datasets have no object-id
 * column). Image hash (objects.image_sha256), which decides what counts as
 * the same image:
 *   - folder datasets: sha256 of the image file's bytes — exactly what
 *     galaxyd stores for an upload of that file, so an upload of the same
 *     file with the same object id finds this row;
 *   - HDF5: sha256 of the stored pixel bytes of the row (uint8, H x W x 3,
 *     as in the file's `images` dataset); format "h5". Those pixels are the
 *     image: a lossless 8-bit PNG of them decodes to the same floats, so
 *     galaxyd gives it the same score (its own hash is that of the PNG).
 * Survey: --survey, else the dataset's domain column mapped to the synthetic
 * survey names (decals, sdss, lsst-y1, lsst-y10), else none.
 * Resumable: objects whose (id, hash, model) score is stored are skipped
 * before any forward pass; each batch is stored in one transaction.
 * Model row: served_models (name = the checkpoint's base name without
 * .safetensors, version = its sha256) with threshold rho / ln K. */
typedef struct gx_score_opts {
    const char *model_path;
    const char *data;
    const char *db_path;
    const char *survey;        /* NULL: from the domain column */
    int         domain;        /* GX_UDA_TARGET (default) or GX_UDA_SOURCE */
    int         batch;         /* 64 */
    int         progress;      /* -1 auto, 0 quiet, 1 a final line */
    FILE       *print;         /* summary line (NULL: nowhere) */
    gx_device   device;        /* where the forward passes run (the zero value is the
                                  CPU; gx_train_device in gx_train_common.h) */
    int         tf32;          /* 1: TF32 tensor cores on the device (--tf32) */
} gx_score_opts;

typedef struct gx_score_result {
    int64_t n, scored, skipped, flagged;
    int64_t model_id;
} gx_score_result;

gx_status gx_uda_score(const gx_score_opts *o, gx_score_result *r, gx_err *err);

#ifdef __cplusplus
}
#endif
#endif
