/*
 * gx_metrics.c — classification and redshift metrics for evaluation.
 *
 * Design:
 *  - Ranking metrics (ROC AUC, AP) sort (score, label) pairs once and walk
 *    them in groups of equal score. Grouping is what makes ties behave as in
 *    scikit-learn (average ranks for AUC; one threshold per distinct score
 *    for AP), and it also makes the result independent of the order samples
 *    arrive in, which qsort alone would not guarantee.
 *  - AUC is computed as the Mann-Whitney U statistic from ranks:
 *        AUC = (sum of positive ranks - P(P+1)/2) / (P N)
 *    which equals the area under the trapezoidal ROC curve sklearn draws.
 *  - Everything is O(N log N) per class with one scratch buffer of N*K
 *    pairs reused for every class and for the micro average.
 *  - Missing redshifts are filtered into compact scratch arrays first, so
 *    every redshift formula below is a plain loop over used pairs.
 */
#include "gx_metrics.h"

#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

/* A score and whether its sample is positive for the class at hand. */
/* Pairs rather than an index array: qsort has no context argument, and
 * keeping the label beside its score keeps the walk cache-friendly. */
typedef struct { double s; int pos; } gx_pair;

/* Total order on finite scores (NaN is rejected before sorting). */
static int pair_cmp_asc(const void *a, const void *b) {
    double x = ((const gx_pair *)a)->s, y = ((const gx_pair *)b)->s;
    return (x > y) - (x < y);
}

/* ------------------------------------------------------ ranking metrics */

/* AUC of n pairs (sorted in place). Ranks are 1-based; a run of t equal
 * scores starting at rank r shares the rank r + (t-1)/2. */
static double auc_pairs(gx_pair *p, int64_t n) {
    qsort(p, (size_t)n, sizeof *p, pair_cmp_asc);
    double rank_sum = 0;
    int64_t n_pos = 0;
    for (int64_t i = 0; i < n;) {
        int64_t j = i, pos = 0;
        while (j < n && p[j].s == p[i].s) pos += p[j++].pos;
        double avg_rank = 0.5 * (double)(i + 1 + j);   /* mean of ranks i+1 .. j */
        rank_sum += avg_rank * (double)pos;
        n_pos += pos;
        i = j;
    }
    int64_t n_neg = n - n_pos;
    if (n_pos == 0 || n_neg == 0) return NAN;
    double u = rank_sum - 0.5 * (double)n_pos * (double)(n_pos + 1);
    return u / ((double)n_pos * (double)n_neg);
}

/* AP of n pairs (sorted in place). Walking thresholds from the highest
 * score down, each distinct score adds (recall gained) x (precision there). */
static double ap_pairs(gx_pair *p, int64_t n) {
    qsort(p, (size_t)n, sizeof *p, pair_cmp_asc);
    int64_t n_pos = 0;
    for (int64_t i = 0; i < n; i++) n_pos += p[i].pos;
    if (n_pos == 0) return NAN;
    double ap = 0;
    int64_t tp = 0, seen = 0;
    for (int64_t i = n - 1; i >= 0;) {
        int64_t j = i, pos = 0;
        while (j >= 0 && p[j].s == p[i].s) { pos += p[j].pos; j--; }
        seen += i - j;
        tp += pos;
        /* Recall rises by pos/P; precision at this threshold is tp/seen. */
        ap += ((double)pos / (double)n_pos) * ((double)tp / (double)seen);
        i = j;
    }
    return ap;
}

/* Copies the caller's arrays into pairs (the sort must not reorder them);
 * NULL when a score is not finite or malloc fails, which the public
 * wrappers report as NaN. */
static gx_pair *pairs_from(const double *score, const uint8_t *positive, int64_t n) {
    gx_pair *p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
    if (!p) return NULL;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(score[i])) { free(p); return NULL; }
        p[i].s = score[i];
        p[i].pos = positive[i] != 0;
    }
    return p;
}

double gx_metric_roc_auc(const double *score, const uint8_t *positive, int64_t n) {
    gx_pair *p = pairs_from(score, positive, n);
    if (!p) return NAN;
    double r = auc_pairs(p, n);
    free(p);
    return r;
}

double gx_metric_average_precision(const double *score, const uint8_t *positive,
                                   int64_t n) {
    gx_pair *p = pairs_from(score, positive, n);
    if (!p) return NAN;
    double r = ap_pairs(p, n);
    free(p);
    return r;
}

/* ------------------------------------------------------ small statistics */

static int dbl_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double gx_metric_median(double *x, int64_t n) {
    if (n <= 0) return NAN;
    /* Sorting is O(n log n) where a selection would be O(n); evaluation
     * sets are small (thousands) and sorting keeps it obviously right. */
    qsort(x, (size_t)n, sizeof *x, dbl_cmp);
    return (n % 2) ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

double gx_metric_cv(const double *x, int n) {
    if (n <= 0) return NAN;
    double mean = 0, var = 0;
    for (int i = 0; i < n; i++) mean += x[i];
    mean /= n;
    for (int i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    var /= n;                               /* population variance */
    return mean == 0 ? NAN : sqrt(var) / mean;
}

/* The class means of fold f's rows (i % 2 == f) into mean [k,d] (double),
 * cnt [k]. */
static void probe_means(const float *feat, const int32_t *label, int64_t n, int64_t d, int k, int f, double *mean,
                        int64_t *cnt) {
    memset(mean, 0, (size_t)k * (size_t)d * sizeof *mean);
    memset(cnt, 0, (size_t)k * sizeof *cnt);
    for (int64_t i = f; i < n; i += 2) {
        if (label[i] < 0 || label[i] >= k) continue;
        for (int64_t j = 0; j < d; j++) mean[label[i] * d + j] += (double)feat[i * d + j];
        cnt[label[i]]++;
    }
    for (int c = 0; c < k; c++)
        for (int64_t j = 0; cnt[c] && j < d; j++) mean[c * d + j] /= (double)cnt[c];
}

/* The class c with cnt[c] > 0 whose mean is nearest to row [d] (ties: the
 * lower c); -1 when no class has a row. */
static int probe_nearest(const float *row, const double *mean, const int64_t *cnt, int64_t d, int k) {
    int best = -1;
    double best_d = INFINITY;
    for (int c = 0; c < k; c++) {
        if (!cnt[c]) continue;
        double s = 0;
        for (int64_t j = 0; j < d; j++) {
            double t = (double)row[j] - mean[c * d + j];
            s += t * t;
        }
        if (s < best_d) { best_d = s; best = c; }
    }
    return best;
}

double gx_metric_centroid_probe(const float *feat, const int32_t *label, int64_t n, int64_t d, int k) {
    if (!feat || !label || n < 2 || d < 1 || k < 1) return NAN;
    for (int64_t i = 0; i < n * d; i++)
        if (!isfinite(feat[i])) return NAN;
    double *mean = malloc((size_t)k * (size_t)d * sizeof *mean);
    int64_t *cnt = malloc((size_t)k * sizeof *cnt), hits = 0, scored = 0;
    for (int f = 0; mean && cnt && f < 2; f++) {
        /* Means from the other fold, then this fold's rows against them. */
        probe_means(feat, label, n, d, k, 1 - f, mean, cnt);
        for (int64_t i = f; i < n; i += 2) {
            if (label[i] < 0 || label[i] >= k) continue;
            int c = probe_nearest(feat + i * d, mean, cnt, d, k);
            if (c < 0) continue;
            scored++;
            hits += c == label[i];
        }
    }
    int ok = mean && cnt;
    free(mean);
    free(cnt);
    return ok && scored > 0 ? (double)hits / (double)scored : NAN;
}

/* -------------------------------------------------------- classification */

/* First index of the row maximum (numpy / torch argmax on ties). */
static int row_argmax(const gx_real *row, int k) {
    int best = 0;
    for (int c = 1; c < k; c++)
        if (row[c] > row[best]) best = c;
    return best;
}

/* Validates inputs and fills accuracy, confusion, support and recall. */
static gx_status cls_counts(const gx_real *probs, const int32_t *labels, int64_t n, int k,
                            gx_cls_metrics *m, gx_err *err) {
    int64_t correct = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t t = labels[i];
        if (t >= k)
            return gx_err_set(err, GX_ERR_INVALID, "metrics: label %d of sample %lld >= k=%d",
                              (int)t, (long long)i, k);
        for (int c = 0; c < k; c++)
            if (!isfinite((double)probs[i * k + c]))
                return gx_err_set(err, GX_ERR_INVALID,
                                  "metrics: probs[%lld,%d] is not finite", (long long)i, c);
        if (t < 0) continue;                      /* unlabelled */
        int p = row_argmax(probs + i * k, k);
        m->confusion[t * k + p]++;
        m->support[t]++;
        correct += (p == t);
        m->n++;
    }
    /* Recall of an absent class is undefined, not 0: NaN keeps it out of
     * any mean a caller takes and shows as null in the metrics DB. */
    m->accuracy = m->n ? (double)correct / (double)m->n : NAN;
    for (int c = 0; c < k; c++)
        m->recall[c] = m->support[c] ? (double)m->confusion[c * k + c] / (double)m->support[c]
                                     : NAN;
    return GX_OK;
}

/* Fills scratch with column c of the labelled rows against (label == c). */
static int64_t cls_column(const gx_real *probs, const int32_t *labels, int64_t n, int k,
                          int c, gx_pair *p) {
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] < 0) continue;
        p[m].s = (double)probs[i * k + c];
        p[m].pos = labels[i] == c;
        m++;
    }
    return m;
}

/* Per-class AUC/AP and their macro means over classes that have both
 * positives and negatives; micro AUC over the flattened one-hot matrix. */
static void cls_ranking(const gx_real *probs, const int32_t *labels, int64_t n, int k,
                        gx_cls_metrics *m, gx_pair *scratch) {
    double auc_sum = 0, ap_sum = 0;
    int used = 0;
    for (int c = 0; c < k; c++) {
        int has_pos = m->support[c] > 0, has_neg = m->support[c] < m->n;
        if (!has_pos || !has_neg) {
            m->skipped[c] = 1;
            m->n_skipped++;
            m->auc[c] = m->ap[c] = NAN;
            continue;
        }
        int64_t cnt = cls_column(probs, labels, n, k, c, scratch);
        m->auc[c] = auc_pairs(scratch, cnt);
        cnt = cls_column(probs, labels, n, k, c, scratch);   /* AP needs its own sort */
        m->ap[c] = ap_pairs(scratch, cnt);
        auc_sum += m->auc[c];
        ap_sum += m->ap[c];
        used++;
    }
    m->auc_macro = used ? auc_sum / used : NAN;
    m->ap_macro = used ? ap_sum / used : NAN;
    /* Micro: every (sample, class) cell is one binary decision; the n*k
     * cells fill the whole scratch buffer. */
    int64_t cnt = 0;
    for (int c = 0; c < k; c++) cnt += cls_column(probs, labels, n, k, c, scratch + cnt);
    m->auc_micro = auc_pairs(scratch, cnt);
}

gx_status gx_metrics_classify(const gx_real *probs, const int32_t *labels, int64_t n,
                              int k, gx_cls_metrics *out, gx_err *err) {
    if (k < 1 || k > GX_METRICS_MAX_CLASSES)
        return gx_err_set(err, GX_ERR_INVALID, "metrics: k=%d outside [1, %d]", k,
                          GX_METRICS_MAX_CLASSES);
    if (n < 0) return gx_err_set(err, GX_ERR_INVALID, "metrics: n=%lld", (long long)n);
    memset(out, 0, sizeof *out);
    out->k = k;
    gx_status s = cls_counts(probs, labels, n, k, out, err);
    if (s != GX_OK) return s;
    gx_pair *scratch = malloc((size_t)(n * k > 0 ? n * k : 1) * sizeof *scratch);
    if (!scratch)
        return gx_err_set(err, GX_ERR_NOMEM, "metrics: no memory for %lld x %d scores",
                          (long long)n, k);
    cls_ranking(probs, labels, n, k, out, scratch);
    free(scratch);
    return GX_OK;
}

/* -------------------------------------------------------------- redshift */

/* Used pairs' true z and dz go into zt[], dz[] (compacted); returns count. */
static int64_t z_filter(const gx_real *z_pred, const double *z_true, int64_t n,
                        double *zt, double *zp) {
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        double p = (double)z_pred[i], t = z_true[i];
        if (!isfinite(p) || !isfinite(t) || t <= 0) continue;
        zt[m] = t;
        zp[m] = p;
        m++;
    }
    return m;
}

/* Squared log error; 1+zp is clamped so a wild prediction below -1 gives a
 * large finite error instead of NaN poisoning the mean. */
static double z_log_err2(double zp, double zt) {
    double l = log(fmax(1.0 + zp, 1e-6)) - log1p(zt);
    return l * l;
}

/* Bin index of a true redshift, or -1 beyond the last edge (z >= 2 is
 * still in the global metrics, only not in a bin). */
static int z_bin_of(double zt) {
    for (int b = 0; b < GX_Z_BINS; b++)
        if (zt >= gx_z_bin_edges[b] && zt < gx_z_bin_edges[b + 1]) return b;
    return -1;
}

/* Means, R^2, outliers and per-bin sums over the m used pairs. */
static void z_moments(const double *zt, const double *zp, int64_t m, gx_z_metrics *o) {
    double s_log = 0, s_abs = 0, s_dz = 0, s_dz2 = 0, s_zt = 0, outl = 0;
    double b_log[GX_Z_BINS] = { 0 }, b_dz[GX_Z_BINS] = { 0 };
    for (int64_t i = 0; i < m; i++) {
        double dz = zp[i] - zt[i], l2 = z_log_err2(zp[i], zt[i]);
        s_log += l2; s_abs += fabs(dz); s_dz += dz; s_dz2 += dz * dz; s_zt += zt[i];
        outl += fabs(dz) > 0.15 * (1.0 + zt[i]);
        int b = z_bin_of(zt[i]);
        if (b >= 0) { o->bin_n[b]++; b_log[b] += l2; b_dz[b] += dz; }
    }
    /* With no used pair every mean becomes NaN through inv. */
    double inv = m ? 1.0 / (double)m : NAN;
    o->log_mse = s_log * inv; o->mae = s_abs * inv; o->bias = s_dz * inv;
    o->outlier_rate = outl * inv;
    double mean_zt = s_zt * inv, ss_tot = 0;
    for (int64_t i = 0; i < m; i++) ss_tot += (zt[i] - mean_zt) * (zt[i] - mean_zt);
    if (m < 2)            o->r2 = NAN;                   /* sklearn: undefined */
    else if (ss_tot > 0)  o->r2 = 1.0 - s_dz2 / ss_tot;
    else                  o->r2 = s_dz2 == 0 ? 1.0 : 0.0;
    for (int b = 0; b < GX_Z_BINS; b++) {
        double bi = o->bin_n[b] ? 1.0 / (double)o->bin_n[b] : NAN;
        o->bin_log_mse[b] = b_log[b] * bi;
        o->bin_bias[b] = b_dz[b] * bi;
    }
}

/* NMAD of d = dz/(1+zt); uses zp[] as scratch (it is not needed after). */
static double z_nmad(const double *zt, double *zp, int64_t m) {
    if (m == 0) return NAN;
    for (int64_t i = 0; i < m; i++) zp[i] = (zp[i] - zt[i]) / (1.0 + zt[i]);
    /* median() reorders; the absolute deviations do not care about order. */
    double med = gx_metric_median(zp, m);
    for (int64_t i = 0; i < m; i++) zp[i] = fabs(zp[i] - med);
    return 1.4826 * gx_metric_median(zp, m);
}

gx_status gx_metrics_redshift(const gx_real *z_pred, const double *z_true, int64_t n,
                              gx_z_metrics *out, gx_err *err) {
    if (n < 0) return gx_err_set(err, GX_ERR_INVALID, "metrics: n=%lld", (long long)n);
    memset(out, 0, sizeof *out);
    double *buf = malloc((size_t)(n > 0 ? 2 * n : 1) * sizeof *buf);
    if (!buf) return gx_err_set(err, GX_ERR_NOMEM, "metrics: no memory for %lld redshifts",
                                (long long)n);
    double *zt = buf, *zp = buf + n;
    int64_t m = z_filter(z_pred, z_true, n, zt, zp);
    out->n = m;
    out->n_missing = n - m;
    z_moments(zt, zp, m, out);
    out->nmad = z_nmad(zt, zp, m);
    free(buf);
    return GX_OK;
}

/* ------------------------------------------------------------- storage */

/* Confusion matrices go to SQLite here, beside the metrics that describe
 * the same evaluation, rather than in gx_db.c: gx_db knows runs, metric rows
 * and checkpoints; what a confusion row means is this file's business.
 * The statements are prepared per call: an epoch writes at most a few
 * matrices of <= 64*64 cells, once. */

static gx_status mx_fail(sqlite3 *h, gx_err *err, const char *what) {
    int rc = sqlite3_extended_errcode(h) & 0xff;
    gx_status s = rc == SQLITE_CONSTRAINT ? GX_ERR_INVALID : rc == SQLITE_NOMEM ? GX_ERR_NOMEM : GX_ERR_IO;
    return gx_err_set(err, s, "confusion: %s: %s", what, sqlite3_errmsg(h));
}

static gx_status mx_check(const gx_metrics_confusion *c, gx_err *err) {
    if (!c || !c->split || !c->split[0] || !c->counts)
        return gx_err_set(err, GX_ERR_INVALID, "confusion: split and counts are required");
    if (c->k < 1 || c->k > GX_METRICS_CONFUSION_MAX_K)
        return gx_err_set(err, GX_ERR_INVALID, "confusion: %s: k = %d outside [1, %d]", c->split, c->k,
                          GX_METRICS_CONFUSION_MAX_K);
    for (int i = 0; i < c->k * c->k; i++)
        if (c->counts[i] < 0)
            return gx_err_set(err, GX_ERR_INVALID, "confusion: %s: negative count at (%d, %d)", c->split,
                              i / c->k, i % c->k);
    return GX_OK;
}

gx_status gx_metrics_confusion_put(gx_db *db, int64_t run_id, int epoch, const gx_metrics_confusion *c,
                                   gx_err *err) {
    gx_status s = mx_check(c, err);
    if (s != GX_OK) return s;
    sqlite3 *h = gx_db_handle(db);
    sqlite3_stmt *del = NULL, *ins = NULL;
    /* A re-evaluated epoch replaces its matrix; a smaller k must not leave
     * the old outer cells behind, hence delete-then-insert. */
    if (sqlite3_prepare_v2(h, "DELETE FROM confusion WHERE run_id = ?1 AND epoch = ?2 AND split = ?3",
                           -1, &del, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(h, "INSERT INTO confusion (run_id, epoch, split, true_class, pred_class, count)"
                              " VALUES (?1, ?2, ?3, ?4, ?5, ?6)", -1, &ins, NULL) != SQLITE_OK) {
        s = mx_fail(h, err, "prepare");
    }
    if (s == GX_OK) {
        sqlite3_bind_int64(del, 1, run_id);
        sqlite3_bind_int(del, 2, epoch);
        sqlite3_bind_text(del, 3, c->split, -1, SQLITE_STATIC);
        if (sqlite3_step(del) != SQLITE_DONE) s = mx_fail(h, err, c->split);
    }
    for (int i = 0; s == GX_OK && i < c->k * c->k; i++) {
        sqlite3_bind_int64(ins, 1, run_id);
        sqlite3_bind_int(ins, 2, epoch);
        sqlite3_bind_text(ins, 3, c->split, -1, SQLITE_STATIC);
        sqlite3_bind_int(ins, 4, i / c->k);
        sqlite3_bind_int(ins, 5, i % c->k);
        sqlite3_bind_int64(ins, 6, c->counts[i]);
        if (sqlite3_step(ins) != SQLITE_DONE) s = mx_fail(h, err, c->split);
        sqlite3_reset(ins);
    }
    sqlite3_finalize(del);
    sqlite3_finalize(ins);
    return s;
}

static gx_status mx_classes_put(gx_db *db, int64_t run_id, const char *classes_json, gx_err *err) {
    sqlite3 *h = gx_db_handle(db);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(h, "INSERT OR REPLACE INTO run_classes (run_id, classes_json) VALUES (?1, ?2)",
                           -1, &st, NULL) != SQLITE_OK)
        return mx_fail(h, err, "prepare classes");
    sqlite3_bind_int64(st, 1, run_id);
    sqlite3_bind_text(st, 2, classes_json, -1, SQLITE_STATIC);
    gx_status s = sqlite3_step(st) == SQLITE_DONE ? GX_OK : mx_fail(h, err, "class names");
    sqlite3_finalize(st);
    return s;
}

/* All-or-nothing like gx_db_metrics_put (whose per-row insert,
 * gx_db_metric_put, opens no transaction of its own). */
gx_status gx_metrics_epoch_put(gx_db *db, int64_t run_id, int epoch, const gx_db_metric *rows, int n_rows,
                               const gx_metrics_confusion *conf, int n_conf, const char *classes_json,
                               gx_err *err) {
    gx_status s = gx_db_begin(db, err);
    for (int i = 0; s == GX_OK && i < n_rows; i++)
        s = gx_db_metric_put(db, run_id, epoch, rows[i].split, rows[i].name, rows[i].value, err);
    for (int i = 0; s == GX_OK && i < n_conf; i++) s = gx_metrics_confusion_put(db, run_id, epoch, &conf[i], err);
    if (s == GX_OK && classes_json) s = mx_classes_put(db, run_id, classes_json, err);
    if (s == GX_OK) s = gx_db_commit(db, err);
    if (s != GX_OK) gx_db_rollback(db);
    return s;
}

gx_status gx_metrics_confusion_get(gx_db *db, int64_t run_id, int epoch, const char *split, int64_t *counts,
                                   int cap, int *k, gx_err *err) {
    sqlite3 *h = gx_db_handle(db);
    sqlite3_stmt *st = NULL;
    *k = 0;
    /* The side first (every cell is stored, so it is max index + 1), then
     * the cells in primary-key order. */
    if (sqlite3_prepare_v2(h, "SELECT true_class, pred_class, count, MAX(true_class) OVER () + 1 FROM confusion"
                              " WHERE run_id = ?1 AND epoch = ?2 AND split = ?3 ORDER BY true_class, pred_class",
                           -1, &st, NULL) != SQLITE_OK)
        return mx_fail(h, err, "prepare read");
    sqlite3_bind_int64(st, 1, run_id);
    sqlite3_bind_int(st, 2, epoch);
    sqlite3_bind_text(st, 3, split ? split : "", -1, SQLITE_STATIC);
    gx_status s = GX_OK;
    int rc;
    while (s == GX_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!*k) {
            *k = sqlite3_column_int(st, 3);
            if (*k > cap) s = gx_err_set(err, GX_ERR_INVALID, "confusion: %d classes exceed the buffer of %d", *k, cap);
            else memset(counts, 0, (size_t)*k * (size_t)*k * sizeof *counts);
        }
        int t = sqlite3_column_int(st, 0), p = sqlite3_column_int(st, 1);
        if (s == GX_OK && p < *k) counts[t * *k + p] = sqlite3_column_int64(st, 2);
    }
    if (s == GX_OK && rc != SQLITE_DONE) s = mx_fail(h, err, "read");
    if (s == GX_OK && !*k)
        s = gx_err_set(err, GX_ERR_NOTFOUND, "confusion: run %lld has no %s matrix at epoch %d", (long long)run_id,
                       split ? split : "(null)", epoch);
    sqlite3_finalize(st);
    return s;
}
