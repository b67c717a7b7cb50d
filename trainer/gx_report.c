/*
 * gx_report.c — Markdown reports from the metrics database and the bundled
 * model file (contract: gx_report.h).
 *
 * Reports read the database with plain SQL on the gx_db connection (the
 * long-format metrics table: one row per run, epoch, split, name), collect
 * each run's newest "test" epoch into a small name -> value list, and print
 * tables with open_memstream, so the result is one string that tests can
 * inspect and the tool can write atomically. Nothing here writes to the
 * database.
 *
 * The bundle reuses gx_eval_wm for the numbers (one definition of the test
 * part and of every metric) and only copies the checkpoint's tensors and
 * metadata into a new safetensors writer with the added "test_metrics" key.
 */
#include "gx_report.h"
#include "gx_two_models.h"

#include "gx_metrics.h"

#include <jansson.h>
#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

/* ================================================================ reports */

/* One stored metric value (name as in gx_train_wm.h). */
typedef struct rep_metric {
    char  *name;
    double value;              /* NaN for NULL */
} rep_metric;

/* One run: its row in runs and its test metrics at the newest epoch. */
typedef struct rep_run {
    int64_t     id;
    char       *kind;          /* runs.model_kind */
    char       *config;        /* runs.config_json */
    int         epoch;         /* -1: no test metrics */
    rep_metric *m;
    int         n;
} rep_run;

static void rep_run_free(rep_run *r) {
    for (int i = 0; i < r->n; i++) free(r->m[i].name);
    free(r->m);
    free(r->kind);
    free(r->config);
    memset(r, 0, sizeof *r);
}

static char *rep_strdup(const unsigned char *s) {
    return strdup(s ? (const char *)s : "");
}

/* The value of metric `name` (NaN when absent or NULL). */
static double rep_get(const rep_run *r, const char *name) {
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->m[i].name, name)) return r->m[i].value;
    return NAN;
}

static int rep_has(const rep_run *r, const char *name) {
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->m[i].name, name)) return 1;
    return 0;
}

static gx_status rep_sql_err(sqlite3 *h, gx_err *err) {
    return gx_err_set(err, GX_ERR_IO, "report: database: %s", sqlite3_errmsg(h));
}

/* The run row; GX_ERR_NOTFOUND when the id is not in runs. */
static gx_status rep_load_run_row(sqlite3 *h, rep_run *r, gx_err *err) {
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(h, "SELECT model_kind, config_json FROM runs WHERE id = ?", -1, &q, NULL) != SQLITE_OK)
        return rep_sql_err(h, err);
    sqlite3_bind_int64(q, 1, r->id);
    gx_status s = GX_OK;
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        r->kind = rep_strdup(sqlite3_column_text(q, 0));
        r->config = rep_strdup(sqlite3_column_text(q, 1));
        if (!r->kind || !r->config) s = gx_err_set(err, GX_ERR_NOMEM, "report: out of memory");
    } else if (rc == SQLITE_DONE) {
        s = gx_err_set(err, GX_ERR_NOTFOUND, "--runs: no run %lld in the database", (long long)r->id);
    } else {
        s = rep_sql_err(h, err);
    }
    sqlite3_finalize(q);
    return s;
}

/* The test metrics of the run's newest evaluated epoch (none: epoch -1). */
static gx_status rep_load_metrics(sqlite3 *h, rep_run *r, gx_err *err) {
    sqlite3_stmt *q = NULL;
    r->epoch = -1;
    const char *sql = "SELECT epoch, name, value FROM metrics WHERE run_id = ?1 AND split = 'test' AND "
                      "epoch = (SELECT MAX(epoch) FROM metrics WHERE run_id = ?1 AND split = 'test')";
    if (sqlite3_prepare_v2(h, sql, -1, &q, NULL) != SQLITE_OK) return rep_sql_err(h, err);
    sqlite3_bind_int64(q, 1, r->id);
    gx_status s = GX_OK;
    int rc = SQLITE_DONE, cap = 0;
    while (s == GX_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (r->n == cap) {
            cap = cap ? 2 * cap : 64;
            rep_metric *p = realloc(r->m, (size_t)cap * sizeof *p);
            if (!p) { s = gx_err_set(err, GX_ERR_NOMEM, "report: out of memory"); break; }
            r->m = p;
        }
        r->epoch = sqlite3_column_int(q, 0);
        r->m[r->n].name = rep_strdup(sqlite3_column_text(q, 1));
        r->m[r->n].value = sqlite3_column_type(q, 2) == SQLITE_NULL ? NAN : sqlite3_column_double(q, 2);
        if (!r->m[r->n].name) s = gx_err_set(err, GX_ERR_NOMEM, "report: out of memory");
        else r->n++;
    }
    if (s == GX_OK && rc != SQLITE_DONE) s = rep_sql_err(h, err);
    sqlite3_finalize(q);
    return s;
}

/* Every run id with test metrics, ascending (the default selection). */
static gx_status rep_default_runs(sqlite3 *h, int64_t **ids, int *n, gx_err *err) {
    sqlite3_stmt *q = NULL;
    *ids = NULL;
    *n = 0;
    if (sqlite3_prepare_v2(h, "SELECT DISTINCT run_id FROM metrics WHERE split = 'test' ORDER BY run_id",
                           -1, &q, NULL) != SQLITE_OK)
        return rep_sql_err(h, err);
    gx_status s = GX_OK;
    int rc = SQLITE_DONE, cap = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW && *n < GX_REPORT_MAX_RUNS) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            int64_t *p = realloc(*ids, (size_t)cap * sizeof *p);
            if (!p) { s = gx_err_set(err, GX_ERR_NOMEM, "report: out of memory"); break; }
            *ids = p;
        }
        (*ids)[(*n)++] = sqlite3_column_int64(q, 0);
    }
    if (s == GX_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) s = rep_sql_err(h, err);
    sqlite3_finalize(q);
    return s;
}

/* ------------------------------------------------------------- config */

/* The run config's "train" object, or NULL. */
static json_t *rep_train_obj(json_t *root) {
    json_t *t = root ? json_object_get(root, "train") : NULL;
    return json_is_object(t) ? t : NULL;
}

static double rep_json_num(json_t *o, const char *key, double dflt) {
    json_t *v = o ? json_object_get(o, key) : NULL;
    return json_is_number(v) ? json_number_value(v) : dflt;
}

const char *gx_report_loss_label(const char *config_json, char *buf, size_t n) {
    json_t *root = config_json ? json_loads(config_json, 0, NULL) : NULL;
    json_t *t = rep_train_obj(root);
    if (!t) {
        snprintf(buf, n, "?");
    } else {
        /* Keys absent from an older run's "train" take the loss defaults. */
        gx_wm_loss_cfg d = gx_wm_loss_cfg_default();
        int colour = rep_json_num(t, "colour_weights", d.colour_weights) != 0;
        /* HK counts only if its schedule switched it on within the run. */
        double epochs = rep_json_num(t, "epochs", INFINITY);
        int hk = rep_json_num(t, "hk_weight_max", d.hk_weight_max) > 0 &&
                 rep_json_num(t, "hk_start_epoch", d.hk_start_epoch) < epochs;
        snprintf(buf, n, "%s", colour && hk ? "+both" : colour ? "+colour" : hk ? "+HK" : "MSE only");
    }
    json_decref(root);
    return buf;
}

/* Display names of the stored backbone / model-kind strings. */
static const char *rep_backbone_name(const char *s) {
    if (!strcmp(s, "wavelet") || !strcmp(s, "wavelet-mamba")) return "WaveletMamba";
    if (!strcmp(s, "resnet18")) return "ResNet-18";
    return s;
}

/* "backbone / config" for the compare table: the config's "backbone" (top
 * level, as wm_config_json writes it, or in "train") else the model kind;
 * the config name from "train". */
static void rep_model_label(const rep_run *r, char *buf, size_t n) {
    json_t *root = json_loads(r->config, 0, NULL);
    json_t *t = rep_train_obj(root);
    const char *bb = json_string_value(json_object_get(root, "backbone"));
    if (!bb) bb = json_string_value(json_object_get(t, "backbone"));
    const char *cfg = json_string_value(json_object_get(t, "config"));
    snprintf(buf, n, "%s / %s", rep_backbone_name(bb && *bb ? bb : r->kind), cfg && *cfg ? cfg : "—");
    json_decref(root);
}

static void rep_z_train(const rep_run *r, char *buf, size_t n) {
    json_t *root = json_loads(r->config, 0, NULL);
    const char *z = json_string_value(json_object_get(rep_train_obj(root), "z_train"));
    snprintf(buf, n, "%s", z ? z : "—");
    json_decref(root);
}

/* ------------------------------------------------------------- printing */

/* A Markdown cell: '|' escaped, newlines flattened. */
static void rep_cell(FILE *f, const char *s) {
    fputs("| ", f);
    for (; *s; s++) {
        if (*s == '|') fputs("\\|", f);
        else fputc(*s == '\n' || *s == '\r' ? ' ' : *s, f);
    }
    fputc(' ', f);
}

/* A number cell; "—" when not finite. */
static void rep_num(FILE *f, double v, const char *fmt) {
    char b[64];
    if (isfinite(v)) snprintf(b, sizeof b, fmt, v);
    else snprintf(b, sizeof b, "—");
    rep_cell(f, b);
}

static void rep_pct(FILE *f, double v) { rep_num(f, 100.0 * v, "%.2f%%"); }

static void rep_params(FILE *f, double v) {
    char b[64];
    if (!isfinite(v)) snprintf(b, sizeof b, "—");
    else if (v >= 1e6) snprintf(b, sizeof b, "%.2f M", v / 1e6);
    else if (v >= 1e3) snprintf(b, sizeof b, "%.1f k", v / 1e3);
    else snprintf(b, sizeof b, "%.0f", v);
    rep_cell(f, b);
}

static void rep_header(FILE *f, const char *const *cols, int n, const char *align) {
    for (int i = 0; i < n; i++) rep_cell(f, cols[i]);
    fputs("|\n", f);
    for (int i = 0; i < n; i++) fprintf(f, "|%s", align[i] == 'r' ? "---:" : "---");
    fputs("|\n", f);
}

/* Stored redshift bins: b = 0, 1, ... while some run has z_bin<b>_*
 * (returned). Of those, the bins where some run has a finite log-MSE or
 * bias go to show[] (*n_show); a bin no test object fell in (all NULL, e.g.
 * z >= 0.5 in a low-redshift survey) would only be a column of dashes. */
static int rep_bins(const rep_run *runs, int n, int show[16], int *n_show) {
    int nb = 0;
    *n_show = 0;
    for (int b = 0; b < 16; b++) {
        char a[48], c[48];
        snprintf(a, sizeof a, "z_bin%d_log_mse", b);
        snprintf(c, sizeof c, "z_bin%d_bias", b);
        int any = 0, finite = 0;
        for (int i = 0; i < n; i++) {
            any |= rep_has(&runs[i], a) || rep_has(&runs[i], c);
            finite |= isfinite(rep_get(&runs[i], a)) || isfinite(rep_get(&runs[i], c));
        }
        if (!any) break;
        nb = b + 1;
        if (finite) show[(*n_show)++] = b;
    }
    return nb;
}

static void rep_bin_name(int b, char *buf, size_t n) {
    if (b < GX_Z_BINS) snprintf(buf, n, "z∈[%g,%g)", gx_z_bin_edges[b], gx_z_bin_edges[b + 1]);
    else snprintf(buf, n, "bin %d", b);
}

/* Notes under a table: the epoch each run was read at, runs without data. */
static void rep_notes(FILE *f, const rep_run *runs, int n) {
    fputs("\nTest-part metrics as stored by `galaxy-train eval --db` (newest evaluated epoch of each run:", f);
    for (int i = 0; i < n; i++) {
        if (runs[i].epoch >= 0) fprintf(f, " run %lld epoch %d;", (long long)runs[i].id, runs[i].epoch + 1);
        else fprintf(f, " run %lld not evaluated;", (long long)runs[i].id);
    }
    fputs(" epochs 1-based). \"—\": not stored.\n", f);
}

static void rep_bias(FILE *f, const rep_run *runs, int n) {
    int show[16], nb;
    int n_stored = rep_bins(runs, n, show, &nb);
    const char *fixed[] = { "Run", "Loss", "z train", "log-MSE", "vs MSE only", "Bias",
                            "Outlier rate", "NMAD" };
    enum { NF = sizeof fixed / sizeof fixed[0] };
    char names[2 * 16][48];
    const char *cols[NF + 2 * 16];
    char align[NF + 2 * 16];
    for (int i = 0; i < NF; i++) { cols[i] = fixed[i]; align[i] = i < 3 ? 'l' : 'r'; }
    for (int b = 0; b < nb; b++) {
        char z[32];
        rep_bin_name(show[b], z, sizeof z);
        snprintf(names[2 * b], sizeof names[0], "%s log-MSE", z);
        snprintf(names[2 * b + 1], sizeof names[0], "%s bias", z);
        cols[NF + 2 * b] = names[2 * b];
        cols[NF + 2 * b + 1] = names[2 * b + 1];
        align[NF + 2 * b] = align[NF + 2 * b + 1] = 'r';
    }
    fputs("## Photo-z bias correction (Table 3 style)\n\n", f);
    rep_header(f, cols, NF + 2 * nb, align);
    /* The reference for the relative column: the first "MSE only" row. */
    double ref = NAN;
    int ref_row = -1;
    char label[32], zt[32], id[32];
    for (int i = 0; i < n && ref_row < 0; i++) {
        if (!strcmp(gx_report_loss_label(runs[i].config, label, sizeof label), "MSE only")) {
            ref = rep_get(&runs[i], "z_log_mse");
            ref_row = i;
        }
    }
    for (int i = 0; i < n; i++) {
        const rep_run *r = &runs[i];
        snprintf(id, sizeof id, "%lld", (long long)r->id);
        rep_cell(f, id);
        rep_cell(f, gx_report_loss_label(r->config, label, sizeof label));
        rep_z_train(r, zt, sizeof zt);
        rep_cell(f, zt);
        double lm = rep_get(r, "z_log_mse");
        rep_num(f, lm, "%.5f");
        if (i == ref_row) rep_cell(f, "(ref)");
        else rep_num(f, isfinite(ref) && ref > 0 ? 100.0 * (lm / ref - 1.0) : NAN, "%+.2f%%");
        rep_num(f, rep_get(r, "z_bias"), "%+.4f");
        rep_pct(f, rep_get(r, "z_outlier_rate"));
        rep_num(f, rep_get(r, "z_nmad"), "%.4f");
        for (int b = 0; b < nb; b++) {
            char k[48];
            snprintf(k, sizeof k, "z_bin%d_log_mse", show[b]);
            rep_num(f, rep_get(r, k), "%.5f");
            snprintf(k, sizeof k, "z_bin%d_bias", show[b]);
            rep_num(f, rep_get(r, k), "%+.4f");
        }
        fputs("|\n", f);
    }
    /* Bin populations (the same test part for every run of one data file). */
    for (int i = 0; i < n; i++) {
        if (runs[i].epoch < 0) continue;
        fprintf(f, "\nTest objects with a redshift, per bin (run %lld):", (long long)runs[i].id);
        for (int b = 0; b < n_stored; b++) {
            char k[48], z[32];
            snprintf(k, sizeof k, "z_bin%d_n", b);
            rep_bin_name(b, z, sizeof z);
            double v = rep_get(&runs[i], k);
            if (isfinite(v)) fprintf(f, " %s %.0f;", z, v);
            else fprintf(f, " %s —;", z);
        }
        double zn = rep_get(&runs[i], "z_n");
        if (isfinite(zn)) fprintf(f, " all %.0f.\n", zn);
        else fputs(" all —.\n", f);
        break;
    }
    if (nb < n_stored) {
        fputs("Bins without a value in any run (no test object with such a redshift) are not shown:", f);
        for (int b = 0, k = 0; b < n_stored; b++) {
            char z[32];
            if (k < nb && show[k] == b) { k++; continue; }
            rep_bin_name(b, z, sizeof z);
            fprintf(f, " %s", z);
        }
        fputs(".\n", f);
    }
    rep_notes(f, runs, n);
    fputs("Loss: the run's redshift loss switches (--set colour_weights, hk_weight_max): MSE only = "
          "plain log-MSE, +colour = colour-aware weights, +HK = Hellinger-Kantorovich term, "
          "+both = both. Bias = mean(ẑ − z); outlier rate = share with |ẑ − z| > 0.15 (1 + z); "
          "NMAD = 1.4826 median |δ − median δ|, δ = (ẑ − z)/(1 + z).\n", f);
}

static void rep_compare(FILE *f, const rep_run *runs, int n) {
    const char *cols[] = { "Run", "Model", "Params", "Accuracy", "Macro AUC", "Macro AP",
                           "log-MSE", "NMAD", "Outlier rate", "images/s" };
    fputs("## Model comparison (Table 2 style)\n\n", f);
    rep_header(f, cols, sizeof cols / sizeof cols[0], "llrrrrrrrr");
    char id[32], model[256];
    for (int i = 0; i < n; i++) {
        const rep_run *r = &runs[i];
        snprintf(id, sizeof id, "%lld", (long long)r->id);
        rep_cell(f, id);
        rep_model_label(r, model, sizeof model);
        rep_cell(f, model);
        rep_params(f, rep_get(r, "n_params"));
        rep_pct(f, rep_get(r, "accuracy"));
        rep_num(f, rep_get(r, "auc_macro"), "%.4f");
        rep_num(f, rep_get(r, "ap_macro"), "%.4f");
        rep_num(f, rep_get(r, "z_log_mse"), "%.5f");
        rep_num(f, rep_get(r, "z_nmad"), "%.4f");
        rep_pct(f, rep_get(r, "z_outlier_rate"));
        rep_num(f, rep_get(r, "images_per_s"), "%.1f");
        fputs("|\n", f);
    }
    rep_notes(f, runs, n);
    fputs("Params: trainable parameters. images/s: evaluation throughput at the checkpoint's input "
          "size (eval batch, data loading included) on the machine that ran the eval.\n", f);
}

/* ------------------------------------------------------------- uda report */

/* One uda run at its best epoch (the newest "best" checkpoint: the epoch of
 * the highest source-validation accuracy), for the Tables 1-2 report. */
typedef struct rep_uda_run {
    int64_t id;
    char    exp[256];
    double  lambda;
    int     epoch;             /* -1: no metrics */
    double  v[6];              /* source acc, target acc, target F1, unknown acc, AUC, known acc */
} rep_uda_run;

static const struct { const char *split, *name; } rep_uda_cols[6] = {
    { "source_test", "accuracy" }, { "target_test", "accuracy" }, { "target_test", "f1_macro" },
    { "target_test", "unknown_accuracy" }, { "target_test", "anomaly_auc" },
    { "target_test", "known_accuracy" },
};

/* One number from SQL with ?1 = run id, ?2 = epoch; NaN when none/NULL. */
static double rep_uda_num(sqlite3 *h, const char *sql, int64_t run, int epoch, const char *a, const char *b) {
    sqlite3_stmt *q = NULL;
    double v = NAN;
    if (sqlite3_prepare_v2(h, sql, -1, &q, NULL) != SQLITE_OK) return NAN;
    sqlite3_bind_int64(q, 1, run);
    sqlite3_bind_int(q, 2, epoch);
    if (a) sqlite3_bind_text(q, 3, a, -1, SQLITE_STATIC);
    if (b) sqlite3_bind_text(q, 4, b, -1, SQLITE_STATIC);
    if (sqlite3_step(q) == SQLITE_ROW && sqlite3_column_type(q, 0) != SQLITE_NULL) v = sqlite3_column_double(q, 0);
    sqlite3_finalize(q);
    return v;
}

static gx_status rep_uda_load(sqlite3 *h, rep_uda_run *r, gx_err *err) {
    rep_run rr;
    memset(&rr, 0, sizeof rr);
    rr.id = r->id;
    gx_status s = rep_load_run_row(h, &rr, err);
    if (s == GX_OK && strcmp(rr.kind, "uda"))
        s = gx_err_set(err, GX_ERR_INVALID, "--runs: run %lld is a %s run, not uda", (long long)r->id, rr.kind);
    if (s == GX_OK) {
        json_t *root = json_loads(rr.config, 0, NULL), *t = rep_train_obj(root);
        const char *e = json_string_value(json_object_get(t, "experiment"));
        snprintf(r->exp, sizeof r->exp, "%s", e && *e ? e : "?");
        r->lambda = rep_json_num(t, "lambda", NAN);
        json_decref(root);
        double be = rep_uda_num(h, "SELECT epoch FROM checkpoints WHERE run_id = ?1 AND kind = 'best' "
                                   "ORDER BY id DESC LIMIT 1", r->id, 0, NULL, NULL);
        if (!isfinite(be))
            be = rep_uda_num(h, "SELECT max(epoch) FROM metrics WHERE run_id = ?1 AND split = 'target_test'",
                             r->id, 0, NULL, NULL);
        r->epoch = isfinite(be) ? (int)be : -1;
        for (int c = 0; c < 6; c++)
            r->v[c] = r->epoch < 0 ? NAN
                    : rep_uda_num(h, "SELECT value FROM metrics WHERE run_id = ?1 AND epoch = ?2 AND split = ?3 "
                                     "AND name = ?4", r->id, r->epoch, rep_uda_cols[c].split, rep_uda_cols[c].name);
    }
    rep_run_free(&rr);
    return s;
}

/* Mean (± population std when several runs) of column c over the runs of
 * experiment exp whose lambda is (baseline ? 0 : > 0), as a cell. */
static void rep_uda_cell(FILE *f, const rep_uda_run *r, int n, const char *exp, int baseline, int c, int *count) {
    double sum = 0, sq = 0;
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(r[i].exp, exp) || (baseline ? r[i].lambda != 0 : !(r[i].lambda > 0)) || !isfinite(r[i].v[c]))
            continue;
        sum += r[i].v[c];
        sq += r[i].v[c] * r[i].v[c];
        k++;
    }
    char b[64];
    if (!k) snprintf(b, sizeof b, "—");
    else if (k == 1) snprintf(b, sizeof b, "%.3f", sum);
    else snprintf(b, sizeof b, "%.3f ± %.3f", sum / k, sqrt(fmax(0, sq / k - (sum / k) * (sum / k))));
    rep_cell(f, b);
    if (count) *count = k;
}

static void rep_uda_table(FILE *f, const rep_uda_run *r, int n) {
    const char *cols[] = { "Experiment", "No adaptation: target acc", "DeepAstroUDA: source acc",
                           "DeepAstroUDA: target acc", "Target F1", "Unknown acc", "Anomaly AUC",
                           "Known acc", "Runs (UDA / baseline)" };
    fputs("## Domain adaptation and anomalies (DeepAstroUDA, Tables 1-2 style)\n\n", f);
    rep_header(f, cols, 9, "lrrrrrrrl");
    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (int j = 0; j < i && !seen; j++) seen = !strcmp(r[j].exp, r[i].exp);
        if (seen) continue;
        int nb = 0, nu = 0;
        char runs[64];
        rep_cell(f, r[i].exp);
        rep_uda_cell(f, r, n, r[i].exp, 1, 1, &nb);
        for (int c = 0; c < 6; c++) {
            int k = 0;
            rep_uda_cell(f, r, n, r[i].exp, 0, c, &k);
            if (c == 1) nu = k;
        }
        snprintf(runs, sizeof runs, "%d / %d", nu, nb);
        rep_cell(f, runs);
        fputs("|\n", f);
    }
    fputs("\nMetrics of each run at its best epoch (highest source-validation accuracy):", f);
    for (int i = 0; i < n; i++) {
        if (r[i].epoch >= 0)
            fprintf(f, " run %lld (λ %g) epoch %d;", (long long)r[i].id, r[i].lambda, r[i].epoch + 1);
        else
            fprintf(f, " run %lld no metrics;", (long long)r[i].id);
    }
    fputs(" epochs 1-based. Target metrics count the unknown class (target classes outside --known) as "
          "class K: a target object is predicted unknown when its entropy H exceeds the tuned ρ. "
          "No adaptation = λ 0 (source only). Anomaly AUC: ROC AUC of H / ln K, unknown vs known. "
          "Several runs: mean ± std. \"—\": not stored.\n", f);
}

/* The uda report: runs given (each must be uda) or every uda run. */
static gx_status rep_uda(sqlite3 *h, const gx_report_opts *o, FILE *f, gx_err *err) {
    int64_t *ids = NULL;
    int n = o->n_runs;
    gx_status s = GX_OK;
    if (n == 0) {
        sqlite3_stmt *q = NULL;
        if (sqlite3_prepare_v2(h, "SELECT id FROM runs WHERE model_kind = 'uda' ORDER BY id", -1, &q, NULL) != SQLITE_OK)
            return rep_sql_err(h, err);
        int cap = 0;
        while (s == GX_OK && sqlite3_step(q) == SQLITE_ROW && n < GX_REPORT_MAX_RUNS) {
            if (n == cap) {
                cap = cap ? 2 * cap : 16;
                int64_t *p = realloc(ids, (size_t)cap * sizeof *p);
                if (!p) { s = gx_err_set(err, GX_ERR_NOMEM, "report: out of memory"); break; }
                ids = p;
            }
            ids[n++] = sqlite3_column_int64(q, 0);
        }
        sqlite3_finalize(q);
        if (s == GX_OK && n == 0) s = gx_err_set(err, GX_ERR_NOTFOUND, "report: no uda run in the database");
    }
    rep_uda_run *r = s == GX_OK ? calloc((size_t)n, sizeof *r) : NULL;
    if (s == GX_OK && !r) s = gx_err_set(err, GX_ERR_NOMEM, "report: out of memory");
    for (int i = 0; s == GX_OK && i < n; i++) {
        r[i].id = o->n_runs ? o->runs[i] : ids[i];
        s = rep_uda_load(h, &r[i], err);
    }
    if (s == GX_OK) rep_uda_table(f, r, n);
    free(r);
    free(ids);
    return s;
}

int gx_report_kind_parse(const char *name) {
    if (name && !strcmp(name, "bias")) return GX_REPORT_BIAS;
    if (name && !strcmp(name, "compare")) return GX_REPORT_COMPARE;
    if (name && !strcmp(name, "uda")) return GX_REPORT_UDA;
    if (name && !strcmp(name, "two-models")) return GX_REPORT_TWO_MODELS;
    return -1;
}

/* The uda report has its own run selection and metric splits. */
static gx_status rep_uda_markdown(sqlite3 *h, const gx_report_opts *o, char **md, gx_err *err) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return gx_err_set(err, GX_ERR_NOMEM, "report: out of memory");
    if (o->source) fprintf(f, "<!-- galaxy-train report --kind uda --db %s -->\n\n", o->source);
    gx_status s = rep_uda(h, o, f, err);
    if (fclose(f) != 0 || !buf) s = s == GX_OK ? gx_err_set(err, GX_ERR_NOMEM, "report: out of memory") : s;
    if (s == GX_OK) *md = buf;
    else free(buf);
    return s;
}

/* The two-models table lives with the checks (trainer/gx_two_models_run.c). */
static gx_status rep_two_models_markdown(gx_db *db, const gx_report_opts *o, char **md, gx_err *err) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return gx_err_set(err, GX_ERR_NOMEM, "report: out of memory");
    if (o->source) fprintf(f, "<!-- galaxy-train report --kind two-models --db %s -->\n\n", o->source);
    gx_status s = gx_two_models_report(db, o->runs, o->n_runs, f, err);
    if (fclose(f) != 0 || !buf) s = s == GX_OK ? gx_err_set(err, GX_ERR_NOMEM, "report: out of memory") : s;
    if (s == GX_OK) *md = buf;
    else free(buf);
    return s;
}

gx_status gx_report_markdown(gx_db *db, const gx_report_opts *o, char **md, gx_err *err) {
    *md = NULL;
    if (!db || !o) return gx_err_set(err, GX_ERR_INVALID, "report: no database");
    if (o->kind != GX_REPORT_BIAS && o->kind != GX_REPORT_COMPARE && o->kind != GX_REPORT_UDA &&
        o->kind != GX_REPORT_TWO_MODELS)
        return gx_err_set(err, GX_ERR_INVALID, "--kind: unknown report kind %d", (int)o->kind);
    if (o->n_runs < 0 || o->n_runs > GX_REPORT_MAX_RUNS || (o->n_runs > 0 && !o->runs))
        return gx_err_set(err, GX_ERR_INVALID, "--runs: between 1 and %d run ids", GX_REPORT_MAX_RUNS);
    sqlite3 *h = gx_db_handle(db);
    if (o->kind == GX_REPORT_UDA) return rep_uda_markdown(h, o, md, err);
    if (o->kind == GX_REPORT_TWO_MODELS) return rep_two_models_markdown(db, o, md, err);
    int64_t *ids = NULL;
    int n = o->n_runs;
    gx_status s = GX_OK;
    if (n == 0) s = rep_default_runs(h, &ids, &n, err);
    if (s == GX_OK && n == 0)
        s = gx_err_set(err, GX_ERR_NOTFOUND, "report: no run has test metrics (run galaxy-train eval --db first)");
    rep_run *runs = s == GX_OK ? calloc((size_t)n, sizeof *runs) : NULL;
    if (s == GX_OK && !runs) s = gx_err_set(err, GX_ERR_NOMEM, "report: out of memory");
    for (int i = 0; s == GX_OK && i < n; i++) {
        runs[i].id = o->n_runs ? o->runs[i] : ids[i];
        s = rep_load_run_row(h, &runs[i], err);
        if (s == GX_OK) s = rep_load_metrics(h, &runs[i], err);
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *f = s == GX_OK ? open_memstream(&buf, &len) : NULL;
    if (s == GX_OK && !f) s = gx_err_set(err, GX_ERR_NOMEM, "report: out of memory");
    if (s == GX_OK) {
        if (o->source) fprintf(f, "<!-- galaxy-train report --kind %s --db %s -->\n\n",
                               o->kind == GX_REPORT_BIAS ? "bias" : "compare", o->source);
        if (o->kind == GX_REPORT_BIAS) rep_bias(f, runs, n);
        else rep_compare(f, runs, n);
        if (fclose(f) != 0 || !buf) s = gx_err_set(err, GX_ERR_NOMEM, "report: out of memory");
        if (s == GX_OK) *md = buf;
        else free(buf);
    }
    for (int i = 0; runs && i < n; i++) rep_run_free(&runs[i]);
    free(runs);
    free(ids);
    return s;
}

/* ================================================================= bundle */

/* A finite number, or null (JSON has no NaN). */
static json_t *bun_num(double v) {
    return isfinite(v) ? json_real(v) : json_null();
}

char *gx_bundle_metrics_json(const gx_eval_wm_result *r, const char *data, int all) {
    const char *base = data ? strrchr(data, '/') : NULL;
    base = base ? base + 1 : data ? data : "";
    json_t *j = json_object(), *rec = json_array(), *sz = json_array(), *sacc = json_object();
    if (!j || !rec || !sz || !sacc) {
        json_decref(j); json_decref(rec); json_decref(sz); json_decref(sacc);
        return NULL;
    }
    const gx_cls_metrics *c = &r->cls;
    const gx_z_metrics *z = &r->z;
    for (int k = 0; k < c->k && k < GX_METRICS_MAX_CLASSES; k++) json_array_append_new(rec, bun_num(c->recall[k]));
    for (int i = 0; i < r->n_sizes; i++) {
        char key[16];
        snprintf(key, sizeof key, "%d", r->sizes[i]);
        json_array_append_new(sz, json_integer(r->sizes[i]));
        json_object_set_new(sacc, key, bun_num(r->accuracy[i]));
    }
    json_object_set_new(j, "accuracy", bun_num(c->accuracy));
    json_object_set_new(j, "auc_macro", bun_num(c->auc_macro));
    json_object_set_new(j, "auc_micro", bun_num(c->auc_micro));
    json_object_set_new(j, "ap_macro", bun_num(c->ap_macro));
    json_object_set_new(j, "recall", rec);
    json_object_set_new(j, "z_log_mse", bun_num(z->log_mse));
    json_object_set_new(j, "z_bias", bun_num(z->bias));
    json_object_set_new(j, "z_nmad", bun_num(z->nmad));
    json_object_set_new(j, "z_outlier_rate", bun_num(z->outlier_rate));
    json_object_set_new(j, "z_mae", bun_num(z->mae));
    json_object_set_new(j, "z_r2", bun_num(z->r2));
    json_object_set_new(j, "z_n", json_integer((json_int_t)z->n));
    json_object_set_new(j, "n_test", json_integer((json_int_t)r->n));
    json_object_set_new(j, "data", json_string(base));
    json_object_set_new(j, "part", json_string(all ? "all" : "test"));
    json_object_set_new(j, "sizes", sz);
    json_object_set_new(j, "size_accuracy", sacc);
    json_object_set_new(j, "size_cv", bun_num(r->cv));
    json_object_set_new(j, "images_per_s", bun_num(r->images_per_s));
    json_object_set_new(j, "n_params", json_integer((json_int_t)r->n_params));
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    return s;
}

/* Copies every tensor (bytes unchanged) and metadata key but drop_key of f into w. */
static gx_status bun_copy(const gx_st_file *f, gx_st_writer *w, const char *drop_key, gx_err *err) {
    gx_status s = GX_OK;
    for (int i = 0; s == GX_OK && i < f->n; i++) {
        const gx_st_tensor *t = &f->tensors[i];
        s = gx_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, err);
    }
    for (int i = 0; s == GX_OK && i < f->n_meta; i++)
        if (!drop_key || strcmp(f->meta_keys[i], drop_key))
            s = gx_st_writer_meta(w, f->meta_keys[i], f->meta_vals[i], err);
    return s;
}

gx_status gx_bundle_copy(const char *checkpoint, const char *out, const char *drop_key, const char *metrics_json,
                         int *n_tensors, gx_err *err) {
    gx_st_file f;
    gx_st_writer w;
    gx_err e2;
    memset(&f, 0, sizeof f);
    gx_st_writer_init(&w);
    gx_status s = gx_st_read(&f, checkpoint, &e2);
    if (s != GX_OK) gx_err_set(err, s, "--checkpoint %s: %s", checkpoint, e2.msg);
    if (s == GX_OK) s = bun_copy(&f, &w, drop_key, err);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "test_metrics", metrics_json, err);
    if (s == GX_OK && (s = gx_st_writer_write(&w, out, &e2)) != GX_OK)
        gx_err_set(err, s, "--out %s: %s", out, e2.msg);
    *n_tensors = f.n;
    gx_st_writer_free(&w);
    gx_st_close(&f);
    return s;
}

gx_status gx_bundle_write(const gx_bundle_opts *o, gx_eval_wm_result *res, gx_err *err) {
    if (!o->checkpoint) return gx_err_set(err, GX_ERR_INVALID, "--checkpoint is required");
    if (!o->data) return gx_err_set(err, GX_ERR_INVALID, "--data is required");
    if (!o->out) return gx_err_set(err, GX_ERR_INVALID, "--out is required");
    gx_eval_wm_opts eo;
    memset(&eo, 0, sizeof eo);
    eo.checkpoint = o->checkpoint;
    eo.data = o->data;
    eo.n_sizes = o->n_sizes;
    memcpy(eo.sizes, o->sizes, sizeof eo.sizes);
    eo.batch = o->batch > 0 ? o->batch : 64;
    eo.print = o->print;
    eo.device = o->device;
    eo.tf32 = o->tf32;
    gx_eval_wm_result r;
    gx_status s = gx_eval_wm(&eo, &r, err);
    if (s != GX_OK) return s;
    if (res) *res = r;
    char *js = gx_bundle_metrics_json(&r, o->data, 0);
    if (!js) return gx_err_set(err, GX_ERR_NOMEM, "bundle: out of memory");
    int n_tensors = 0;
    s = gx_bundle_copy(o->checkpoint, o->out, NULL, js, &n_tensors, err);
    if (s == GX_OK && o->print)
        fprintf(o->print, "wrote %s: %d tensors, test accuracy %.4f, log-MSE %.5f on %lld test objects\n",
                o->out, n_tensors, r.cls.accuracy, r.z.log_mse, (long long)r.n);
    free(js);
    return s;
}
