/*
 * gx_metrics.h — evaluation metrics the trainer reports per epoch
 * (spec/wavelet-mamba.md "Report per epoch", spec/uda.md, spec/cf-inn.md).
 *
 * Classification, from posteriors probs [N,K] (row-major) and labels [N]:
 * accuracy, per-class recall, the confusion matrix, one-vs-rest ROC AUC per
 * class with macro and micro means, and average precision per class with
 * its macro mean. Definitions follow scikit-learn so numbers compare with
 * the papers:
 *   - ROC AUC = the Mann-Whitney statistic with average ranks for ties
 *     (a tied positive/negative pair counts 1/2), as roc_auc_score;
 *   - AP = sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds
 *     (step-wise, no interpolation; tied scores form one threshold), as
 *     average_precision_score;
 *   - micro AUC = AUC of the flattened one-hot labels [N*K] against the
 *     flattened probs [N*K] (roc_auc_score(label_binarize(y), p, "micro")).
 *   A class with no positive sample (or no negative) has no AUC/AP: it is
 *   left NaN and skipped in the macro means; n_skipped / skipped[] say so,
 *   and callers should print it rather than silently averaging fewer classes.
 * The predicted class is the first argmax of a row (numpy/torch order).
 * Labels < 0 mean "unlabelled" and are left out of every classification
 * metric; a label >= K is an error.
 *
 * Redshift, from predicted z_pred [N] and true z_true [N]: a pair takes part
 * only when both are finite and z_true > 0 (spec: NaN or <= 0 redshift takes
 * no part in the redshift terms). Then with dz = zp - zt:
 *   log_mse = mean (log(1+zp) - log(1+zt))^2   (1+zp clamped to >= 1e-6)
 *   mae = mean |dz|, bias = mean dz, r2 = 1 - sum dz^2 / sum (zt - mean zt)^2
 *   nmad = 1.4826 * median |d - median d|, d = dz / (1+zt)
 *   outlier_rate = fraction with |dz| > 0.15 (1+zt)
 *   per bin of z_true [0,0.5) [0.5,1) [1,1.5) [1.5,2): count, log_mse, bias.
 * Empty sets give NaN (never 0, which would look like a perfect score).
 * r2 of a constant z_true follows sklearn: 1 when every dz is 0, else 0.
 *
 * The end of this header stores confusion matrices per epoch (SQLite,
 * migrations/0006) for the dashboard.
 *
 * These run once per evaluation, not per step: they allocate their own
 * scratch with malloc (O(N*K)) and return GX_ERR_NOMEM if that fails. All
 * sums are in double; results do not depend on thread count or sample order
 * (ties are grouped before any sum).
 */
#ifndef GX_METRICS_H
#define GX_METRICS_H

#include "gx.h"
#include "gx_db.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GX_METRICS_MAX_CLASSES 32
#define GX_Z_BINS 4
/* Bin b of z_true is [gx_z_bin_edges[b], gx_z_bin_edges[b+1]). */
static const double gx_z_bin_edges[GX_Z_BINS + 1] = { 0.0, 0.5, 1.0, 1.5, 2.0 };

typedef struct gx_cls_metrics {
    int     k;                 /* classes */
    int64_t n;                 /* labelled samples used (label in [0,k)) */
    double  accuracy;          /* NaN when n == 0 */
    /* confusion[t*k + p]: samples of true class t predicted p (row-major
     * [k,k]; only the first k*k entries are used). */
    int64_t confusion[GX_METRICS_MAX_CLASSES * GX_METRICS_MAX_CLASSES];
    int64_t support[GX_METRICS_MAX_CLASSES];   /* samples per true class */
    double  recall[GX_METRICS_MAX_CLASSES];    /* NaN where support is 0 */
    double  auc[GX_METRICS_MAX_CLASSES];       /* one-vs-rest; NaN if skipped */
    double  ap[GX_METRICS_MAX_CLASSES];        /* NaN if skipped */
    uint8_t skipped[GX_METRICS_MAX_CLASSES];   /* 1: no positives or no negatives */
    int     n_skipped;         /* classes left out of the macro means */
    double  auc_macro;         /* mean of auc[] over classes not skipped */
    double  auc_micro;
    double  ap_macro;
} gx_cls_metrics;

typedef struct gx_z_metrics {
    int64_t n;                 /* pairs used */
    int64_t n_missing;         /* pairs left out (non-finite, or z_true <= 0) */
    double  log_mse, mae, r2, bias, nmad, outlier_rate;
    int64_t bin_n[GX_Z_BINS];
    double  bin_log_mse[GX_Z_BINS];
    double  bin_bias[GX_Z_BINS];
} gx_z_metrics;

/* All classification metrics at once. probs: [n,k] (need not sum to 1; any
 * finite scores work for AUC/AP); labels: [n]. GX_ERR_INVALID for k outside
 * [1, GX_METRICS_MAX_CLASSES], a label >= k, or a non-finite probability. */
gx_status gx_metrics_classify(const gx_real *probs, const int32_t *labels, int64_t n,
                              int k, gx_cls_metrics *out, gx_err *err);

/* All redshift metrics (see above). z_pred from the model, z_true from the
 * dataset (double, NaN = missing). */
gx_status gx_metrics_redshift(const gx_real *z_pred, const double *z_true, int64_t n,
                              gx_z_metrics *out, gx_err *err);

/* ---- building blocks (public for tests and for other reports) ---------- */

/* Binary ROC AUC of scores [n] against positive [n] (0/1), ties by average
 * ranks. NaN when there are no positives or no negatives, a score is not
 * finite, or memory runs out. */
double gx_metric_roc_auc(const double *score, const uint8_t *positive, int64_t n);

/* Binary average precision (sklearn's step-wise definition). NaN when there
 * are no positives, a score is not finite, or memory runs out. */
double gx_metric_average_precision(const double *score, const uint8_t *positive,
                                   int64_t n);

/* Median of x [n] (mean of the two middle values for even n); reorders x.
 * NaN for n == 0. */
double gx_metric_median(double *x, int64_t n);

/* Coefficient of variation, population std / mean, of x [n] (e.g. accuracy
 * at several input sizes: the spec's "cross-size CV"). NaN when n == 0 or
 * the mean is 0. */
double gx_metric_cv(const double *x, int n);

/* How much class a feature vector carries, by the simplest classifier that
 * could read it: feat [n,d] (row i labelled label[i]) is split into two
 * folds by parity of i; each fold's rows are classified by the nearest
 * (Euclidean) class mean of the other fold, and the share classified as
 * their label is returned. Only classes in [0,k) with a row in the other
 * fold are candidates (ties: the lower class); rows with a label outside
 * [0,k) take no part. Chance is about the largest class share; 1 means the
 * classes sit apart. The CF-INN's eval applies it to z2, which the spec
 * calls class-independent (docs/models.md). NaN when no row can be scored,
 * a value is not finite, or memory runs out. */
double gx_metric_centroid_probe(const float *feat, const int32_t *label, int64_t n, int64_t d, int k);

/* ---- per-epoch storage (migrations/0006_confusion.sql) ------------------
 *
 * The trainers store each epoch's confusion matrices beside its metric rows,
 * in one transaction, so the dashboard can show the matrix of the best
 * epoch (GET /v1/runs/{run_id}/confusion). A matrix is k x k counts,
 * confusion[t*k + p] = samples of true class t predicted p (gx_cls_metrics'
 * layout; uda passes K+1 classes, the last "unknown"). Every cell is stored,
 * zeros included, so the side is known from the rows. */

#define GX_METRICS_CONFUSION_MAX_K 64

/* One split's matrix of an epoch. */
typedef struct gx_metrics_confusion {
    const char    *split;      /* "val", "test", "source_test", ... */
    int            k;          /* classes, 1..GX_METRICS_CONFUSION_MAX_K */
    const int64_t *counts;     /* [k*k], row = true class */
} gx_metrics_confusion;

/* Stores one matrix (replacing that epoch and split's cells) inside the
 * caller's transaction (or autocommit). GX_ERR_INVALID names a bad k,
 * split or negative count; a run that does not exist is GX_ERR_INVALID too
 * (foreign key). */
gx_status gx_metrics_confusion_put(gx_db *db, int64_t run_id, int epoch,
                                   const gx_metrics_confusion *c, gx_err *err);

/* One epoch's metric rows (gx_db_metrics_put's rows), its matrices and the
 * run's class names (a JSON array text indexed by class, NULL = leave as
 * stored) in one transaction: all are stored or none. What each trainer
 * calls at the end of an epoch instead of gx_db_metrics_put. It opens its
 * own transaction (gx_db_begin): call it outside one. */
gx_status gx_metrics_epoch_put(gx_db *db, int64_t run_id, int epoch,
                               const gx_db_metric *rows, int n_rows,
                               const gx_metrics_confusion *conf, int n_conf,
                               const char *classes_json, gx_err *err);

/* Reads the matrix of (run, epoch, split) into counts [cap*cap] (row-major
 * with side *k, which may exceed cap: then nothing is copied and the call
 * fails with GX_ERR_INVALID). GX_ERR_NOTFOUND when there is none. */
gx_status gx_metrics_confusion_get(gx_db *db, int64_t run_id, int epoch, const char *split,
                                   int64_t *counts, int cap, int *k, gx_err *err);

#ifdef __cplusplus
}
#endif
#endif
