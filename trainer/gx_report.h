/*
 * gx_report.h — reports from the metrics database and the bundled-model
 * file: what `galaxy-train report` and `galaxy-train bundle` run
 * (trainer/gx_report.c; the tool only parses arguments).
 *
 * Reports: Markdown tables of the runs' test metrics, as written by
 * `galaxy-train eval --db` (gx_eval_wm): split "test", under the run id and
 * epoch of the evaluated checkpoint. A run evaluated more than once (best
 * and last checkpoints) has test rows at several epochs: a report takes the
 * newest epoch that has any, and says so under the table.
 *
 *   gx_report_opts o = { .kind = GX_REPORT_BIAS, .runs = ids, .n_runs = 4 };
 *   char *md;
 *   if (gx_report_markdown(db, &o, &md, &err) == GX_OK) { fputs(md, stdout); free(md); }
 *
 *  bias     the paper's Table 3: one row per run, labelled by its loss
 *           switches from the run's config_json "train" object
 *           (colour_weights, hk_weight_max): "MSE only", "+colour", "+HK",
 *           "+both"; columns overall log-MSE, bias, outlier rate, NMAD,
 *           log-MSE relative to the first "MSE only" row, then log-MSE and
 *           bias for every redshift bin stored (z_bin<b>_log_mse /
 *           z_bin<b>_bias, b = 0, 1, ... while any run has one).
 *  compare  the paper's Table 2: model (backbone / config), trainable
 *           parameters, accuracy, macro AUC, macro AP, log-MSE, NMAD,
 *           outlier rate, images/s (evaluation throughput).
 *  uda      DeepAstroUDA's Tables 1-2 (model_kind "uda" runs, written by
 *           gx_train_uda; runs not asked for: every uda run): one row per
 *           experiment (config "train.experiment"), no-adaptation (lambda 0)
 *           target accuracy beside the adapted runs' source / target
 *           accuracy, target macro F1, unknown and known accuracy, anomaly
 *           AUC, each at the run's best epoch (source-validation accuracy);
 *           several runs of one kind: mean ± std.
 * A value that is absent (or stored NULL/NaN) prints as "—". Runs: the ids
 * asked for, in that order (an id that is not in the database is an error
 * naming it); none asked: every run that has test metrics, by id.
 *
 * Bundle: the checkpoint that galaxyd ships (models/default/), evaluated
 * on its test part with gx_eval_wm and copied (tensors byte for byte, every
 * metadata key) with one more metadata key, "test_metrics", a JSON object:
 *   accuracy, auc_macro, auc_micro, ap_macro, recall (per class, in the
 *   order of the "classes" key; null where a class has no test sample),
 *   z_log_mse, z_bias, z_nmad, z_outlier_rate, z_mae, z_r2, z_n, n_test,
 *   data (the data file's base name), part ("test" or "all"),
 *   sizes (list), size_accuracy (object: size as text -> accuracy),
 *   size_cv, images_per_s, n_params.
 * Non-finite values are written as null. The file is written atomically
 * (gx_st_writer_write: temp + fsync + rename), so --out may name the
 * checkpoint itself.
 */
#ifndef GX_REPORT_H
#define GX_REPORT_H

#include "gx.h"
#include "gx_db.h"
#include "gx_train_wm.h"

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- reports */

typedef enum { GX_REPORT_BIAS = 0, GX_REPORT_COMPARE = 1, GX_REPORT_UDA = 2, GX_REPORT_TWO_MODELS = 3 } gx_report_kind;

#define GX_REPORT_MAX_RUNS 256

typedef struct gx_report_opts {
    gx_report_kind kind;
    const int64_t *runs;       /* run ids in row order; NULL / n_runs 0: all with test metrics */
    int            n_runs;     /* <= GX_REPORT_MAX_RUNS */
    const char    *source;     /* named under the title (e.g. the database path); may be NULL */
} gx_report_opts;

/* "bias" / "compare" / "uda" / "two-models" -> kind; -1 for another name. */
int gx_report_kind_parse(const char *name);

/* The report as a malloc'ed NUL-terminated Markdown string (*md; the caller
 * frees). GX_ERR_NOTFOUND names a run id that is not in the database;
 * GX_ERR_INVALID a bad option; GX_ERR_IO a database error. */
gx_status gx_report_markdown(gx_db *db, const gx_report_opts *o, char **md, gx_err *err);

/* The row label of the bias table for a run's config_json: "MSE only",
 * "+colour", "+HK", "+both"; "?" when the config has no "train" object
 * (a run from before the switches were recorded). Writes into buf. */
const char *gx_report_loss_label(const char *config_json, char *buf, size_t n);

/* ----------------------------------------------------------------- bundle */

typedef struct gx_bundle_opts {
    const char *checkpoint;    /* written by gx_train_wm */
    const char *data;          /* the dataset it was trained on (its test part is used) */
    const char *out;           /* the .safetensors to write */
    int  sizes[GX_TRAIN_MAX_SIZES];   /* eval sizes; n_sizes 0 = the checkpoint's */
    int  n_sizes;
    int  batch;                /* evaluation batch; 0 = 64 */
    FILE *print;               /* eval report and a summary line (NULL: nowhere) */
    gx_device device;          /* where the evaluation runs (as gx_eval_wm_opts) */
    int  tf32;
} gx_bundle_opts;

/* Evaluates and writes the bundle (see above). r (may be NULL) receives the
 * evaluation. Errors name the flag and file (--checkpoint, --data, --out). */
gx_status gx_bundle_write(const gx_bundle_opts *o, gx_eval_wm_result *r, gx_err *err);

/* The bundle file of either model kind (gx_bundle_write; gx_cf_bundle_write
 * in gx_eval_cf.h): every tensor of checkpoint (bytes unchanged) and its
 * metadata but drop_key (NULL: every key; an old "test_metrics" then keeps
 * its place), then "test_metrics" = metrics_json; written atomically to out
 * (which may be checkpoint). *n_tensors: the tensors copied. Errors name
 * --checkpoint or --out and the file. */
gx_status gx_bundle_copy(const char *checkpoint, const char *out, const char *drop_key, const char *metrics_json,
                         int *n_tensors, gx_err *err);

/* The "test_metrics" JSON text (malloc'ed; NULL when out of memory) for an
 * evaluation; `data` is reduced to its base name. Exposed for tests. */
char *gx_bundle_metrics_json(const gx_eval_wm_result *r, const char *data, int all);

#ifdef __cplusplus
}
#endif
#endif
