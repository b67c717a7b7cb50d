/*
 * gx_two_models_run.c — `galaxy-train two-models` (contract in
 * gx_two_models.h): two CF-INN trainings on disjoint halves, the four checks
 * of spec/morphology.md §2 plus the counterfactual realism check, the rows
 * in SQLite and the Markdown + PNG report.
 *
 * The halves: the trainer's own seeded 70/15/15 split (gx_split_stratified
 * with the split seed), capped at n_train, then even positions for A and odd
 * positions for B. The split is a stratified shuffle, so both halves have
 * the class mix of the whole and share no object; both models validate on
 * the same validation part, and the held-out real images of the checks are
 * the test part, which neither model has seen.
 */
#include "gx_two_models.h"

#include "gx_dataset.h"
#include "gx_db.h"
#include "gx_image.h"
#include "gx_loader.h"
#include "gx_morph.h"
#include "gx_safetensors.h"
#include "gx_train_cf.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TM_MEM_BINS 30    /* memorisation histogram on [0.98, 1.01] */
#define TM_AB_BINS  30    /* A-vs-B histogram on [0.75, 1.05] */
#define TM_INV_BINS 100   /* the paper's binned W1 */
#define TM_MORPH_BINS 20
#define TM_MEM_COPY 0.99  /* a sample "copies" above this max cosine */

void gx_two_models_opts_default(gx_two_models_opts *o) {
    memset(o, 0, sizeof *o);
    o->config_name = "tiny";
    o->seed = 1;
    o->n_gen = 200;
    o->n_real = 300;
    o->progress = -1;
}

/* Everything one run holds; freed by tm_free. */
typedef struct tm_run {
    const gx_two_models_opts *o;
    gx_dataset *ds;
    int64_t    *split[3], nsplit[3];
    int64_t    *half[2], nhalf[2];
    gx_cf_model m[2];
    int         m_ready[2];
    gx_db      *db;
    int64_t     run_id;
    gx_ctx      ctx;
    /* draws and images */
    int64_t    *cls;
    float      *eps, *gen[2], *real, *train[2];
    int32_t    *real_label;
    int64_t     n_real, n_train_img[2];
    FILE       *md;
} tm_run;

static void tm_free(tm_run *R) {
    for (int k = 0; k < 3; k++) free(R->split[k]);
    for (int k = 0; k < 2; k++) {
        free(R->half[k]);
        free(R->gen[k]);
        free(R->train[k]);
        if (R->m_ready[k]) gx_cf_free(&R->m[k]);
    }
    free(R->cls), free(R->eps), free(R->real), free(R->real_label);
    if (R->md) fclose(R->md);
    gx_ctx_free(&R->ctx);
    gx_db_close(R->db);
    gx_dataset_close(R->ds);
}

/* ------------------------------------------------------------- the data */

static gx_status tm_split(tm_run *R, gx_err *err) {
    const gx_two_models_opts *o = R->o;
    gx_status s = gx_dataset_open(o->data, NULL, &R->ds, err);
    if (s != GX_OK) return s;
    s = gx_split_stratified(R->ds->label, R->ds->n, R->ds->n_classes, (double[3]){ .70, .15, .15 }, o->seed,
                            R->split, R->nsplit, err);
    if (s != GX_OK) return s;
    int64_t n = R->nsplit[0];
    if (o->n_train > 0 && o->n_train < n) n = o->n_train;
    if (n < 4 || R->nsplit[2] < 2)
        return gx_err_set(err, GX_ERR_INVALID, "--data %s: too few images for two halves (%lld training, "
                          "%lld test)", o->data, (long long)n, (long long)R->nsplit[2]);
    for (int h = 0; h < 2; h++) {
        R->half[h] = malloc((size_t)(n / 2 + 1) * sizeof *R->half[h]);
        if (!R->half[h]) return gx_err_set(err, GX_ERR_NOMEM, "two-models: out of memory");
        R->nhalf[h] = 0;
        for (int64_t i = h; i < n; i += 2) R->half[h][R->nhalf[h]++] = R->split[0][i];
    }
    return GX_OK;
}

/* Images of idx[0..n) at the model's size, unaugmented, into *x (and labels). */
static gx_status tm_load(tm_run *R, const int64_t *idx, int64_t n, float **x, int32_t **label, gx_err *err) {
    int S = (int)R->m[0].cfg.size;
    int64_t per = 3LL * S * S;
    *x = malloc((size_t)(n * per) * sizeof **x);
    if (label) *label = malloc((size_t)n * sizeof **label);
    if (!*x || (label && !*label)) return gx_err_set(err, GX_ERR_NOMEM, "two-models: out of memory for %lld images",
                                                     (long long)n);
    gx_loader_opts lo = GX_LOADER_OPTS_DEFAULT;
    lo.batch = 64;
    lo.size = S;
    lo.seed = R->o->seed;
    gx_loader *L;
    gx_status s = gx_loader_open(&L, R->ds, idx, n, &lo, err);
    if (s != GX_OK) return s;
    int64_t got = 0;
    gx_batch b;
    int rc;
    if ((s = gx_loader_start_epoch(L, 0, err)) == GX_OK) {
        while ((rc = gx_loader_next(L, &b, err)) == 1) {
            memcpy(*x + got * per, b.x, (size_t)(b.n * per) * sizeof **x);
            if (label) memcpy(*label + got, b.label, (size_t)b.n * sizeof **label);
            got += b.n;
        }
        if (rc < 0) s = GX_ERR_IO;
    }
    gx_loader_close(L);
    return s;
}

/* --------------------------------------------------------------- training */

static gx_status tm_train(tm_run *R, int h, int64_t *run_id, gx_err *err) {
    const gx_two_models_opts *o = R->o;
    gx_train_cf_opts t;
    gx_status s = gx_train_cf_opts_default(&t, o->config_name, err);
    if (s != GX_OK) return s;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%c", o->out_dir, h ? 'B' : 'A');
    t.data = o->data;
    t.db_path = o->db_path;
    t.out_dir = dir;
    t.config_name = o->config_name;
    if (o->epochs > 0) t.epochs = o->epochs;
    if (o->batch > 0) t.batch = o->batch;
    t.seed = o->seed + (uint64_t)h;
    t.split_seed = o->seed;
    t.max_train = o->n_train;
    t.half = h + 1;
    t.progress = o->progress;
    t.command_line = o->command_line;
    t.device = o->device;
    t.tf32 = o->tf32;
    for (int i = 0; i < o->n_sets; i++) {
        char kv[256];
        snprintf(kv, sizeof kv, "%s", o->sets[i]);
        char *eq = strchr(kv, '=');
        if (!eq) return gx_err_set(err, GX_ERR_INVALID, "--set %s: expected key=value", o->sets[i]);
        *eq = 0;
        if ((s = gx_train_cf_set(&t, kv, eq + 1, err)) != GX_OK) return s;
    }
    char path[1100];
    snprintf(path, sizeof path, "%s/last.safetensors", dir);
    int reuse = o->reuse && access(path, R_OK) == 0;
    if (!reuse) {
        if (o->progress != 0) fprintf(stderr, "two-models: training model %c on %lld images\n", h ? 'B' : 'A',
                                      (long long)R->nhalf[h]);
        gx_train_cf_result res;
        if ((s = gx_train_cf(&t, &res, err)) != GX_OK) return s;
    } else if (o->progress != 0) {
        fprintf(stderr, "two-models: reusing %s\n", path);
    }
    gx_st_file f;
    memset(&f, 0, sizeof f);
    gx_err e2;
    gx_cf_meta meta;
    if ((s = gx_st_read(&f, path, &e2)) == GX_OK) s = gx_cf_load(&f, &R->m[h], &meta, &e2);
    gx_st_close(&f);
    if (s != GX_OK) return gx_err_set(err, s, "%s: %s", path, e2.msg);
    R->m_ready[h] = 1;
    *run_id = meta.run_id;
    return GX_OK;
}

/* ------------------------------------------------------------ statistics */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double tm_median(const double *v, int64_t n) {
    double *c = malloc((size_t)n * sizeof *c);
    if (!c || n == 0) { free(c); return NAN; }
    memcpy(c, v, (size_t)n * sizeof *c);
    qsort(c, (size_t)n, sizeof *c, cmp_double);
    double m = n % 2 ? c[n / 2] : 0.5 * (c[n / 2 - 1] + c[n / 2]);
    free(c);
    return m;
}

static double tm_corr(const double *a, const double *b, int64_t n) {
    double ma = 0, mb = 0, sab = 0, saa = 0, sbb = 0;
    for (int64_t i = 0; i < n; i++) ma += a[i], mb += b[i];
    ma /= (double)n, mb /= (double)n;
    for (int64_t i = 0; i < n; i++) {
        sab += (a[i] - ma) * (b[i] - mb);
        saa += (a[i] - ma) * (a[i] - ma);
        sbb += (b[i] - mb) * (b[i] - mb);
    }
    return saa > 0 && sbb > 0 ? sab / sqrt(saa * sbb) : 0;
}

/* ---------------------------------------------------------------- storage */

typedef struct tm_rows {
    gx_db_metric row[1024];
    char         name[1024][64];
    int          n;
} tm_rows;

static void tm_put(tm_rows *w, double v, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void tm_put(tm_rows *w, double v, const char *fmt, ...) {
    if (w->n >= 1024) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->name[w->n], sizeof w->name[0], fmt, ap);
    va_end(ap);
    w->row[w->n] = (gx_db_metric){ "two_models", w->name[w->n], v };
    w->n++;
}

static gx_status tm_hist_store(tm_run *R, const char *name, const int64_t *c, int nb, double lo, double hi,
                               gx_err *err) {
    sqlite3 *h = gx_db_handle(R->db);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(h, "INSERT OR REPLACE INTO histograms(run_id, name, bin, lo, hi, count) "
                              "VALUES (?, ?, ?, ?, ?, ?)", -1, &st, NULL) != SQLITE_OK)
        return gx_err_set(err, GX_ERR_IO, "two-models: histograms: %s", sqlite3_errmsg(h));
    gx_status s = gx_db_begin(R->db, err);
    double w = (hi - lo) / nb;
    for (int b = 0; s == GX_OK && b < nb; b++) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, R->run_id);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, b);
        sqlite3_bind_double(st, 4, lo + b * w);
        sqlite3_bind_double(st, 5, lo + (b + 1) * w);
        sqlite3_bind_double(st, 6, (double)c[b]);
        if (sqlite3_step(st) != SQLITE_DONE)
            s = gx_err_set(err, GX_ERR_IO, "two-models: histogram %s: %s", name, sqlite3_errmsg(h));
    }
    sqlite3_finalize(st);
    if (s == GX_OK) return gx_db_commit(R->db, err);
    gx_db_rollback(R->db);
    return s;
}

/* A bar chart of one or two histograms (A blue, B / reference orange,
 * overlap darker) as a 360x150 PNG beside the report. */
static gx_status tm_hist_png(tm_run *R, const char *file, const int64_t *a, const int64_t *b, int nb,
                             gx_err *err) {
    enum { W = 360, H = 150, PAD = 6 };
    float *img = malloc((size_t)3 * W * H * sizeof *img);
    if (!img) return gx_err_set(err, GX_ERR_NOMEM, "two-models: out of memory");
    for (int i = 0; i < 3 * W * H; i++) img[i] = 1.0f;
    int64_t mx = 1;
    for (int k = 0; k < nb; k++) {
        if (a[k] > mx) mx = a[k];
        if (b && b[k] > mx) mx = b[k];
    }
    double bw = (double)(W - 2 * PAD) / nb;
    for (int k = 0; k < nb; k++) {
        int x0 = PAD + (int)(k * bw), x1 = PAD + (int)((k + 1) * bw) - 1;
        int ha = (int)((double)a[k] / (double)mx * (H - 2 * PAD)), hb = b ? (int)((double)b[k] / (double)mx * (H - 2 * PAD)) : 0;
        for (int x = x0; x <= x1 && x < W; x++)
            for (int y = 0; y < H - 2 * PAD; y++) {
                int in_a = y < ha, in_b = y < hb, py = H - PAD - 1 - y;
                if (!in_a && !in_b) continue;
                float rgb[3] = { 0.12f, 0.47f, 0.71f };                       /* A */
                if (in_b && !in_a) rgb[0] = 1.0f, rgb[1] = 0.5f, rgb[2] = 0.05f;   /* B */
                if (in_a && in_b) rgb[0] = 0.35f, rgb[1] = 0.3f, rgb[2] = 0.35f;  /* both */
                for (int c = 0; c < 3; c++) img[((int64_t)c * H + py) * W + x] = rgb[c];
            }
    }
    for (int x = PAD; x < W - PAD; x++)                                          /* axis */
        for (int c = 0; c < 3; c++) img[((int64_t)c * H + H - PAD) * W + x] = 0;
    uint8_t *png = NULL;
    size_t n = 0;
    gx_status s = gx_png_encode(img, 3, H, W, &png, &n, err);
    free(img);
    if (s != GX_OK) return s;
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", R->o->out_dir, file);
    s = gx_file_write_atomic(path, png, n, err);
    free(png);
    return s;
}

/* ----------------------------------------------------------------- checks */

/* Draws, and both models' images of them (the memorisation and A-vs-B
 * tests share the draws; the inversion test decodes with A). */
static gx_status tm_generate(tm_run *R, gx_err *err) {
    int64_t n = R->o->n_gen, d = R->m[0].cfg.d, per = 3 * R->m[0].cfg.size * R->m[0].cfg.size;
    R->cls = malloc((size_t)n * sizeof *R->cls);
    R->eps = malloc((size_t)(n * d) * sizeof *R->eps);
    for (int h = 0; h < 2; h++) R->gen[h] = malloc((size_t)(n * per) * sizeof *R->gen[h]);
    if (!R->cls || !R->eps || !R->gen[0] || !R->gen[1]) return gx_err_set(err, GX_ERR_NOMEM, "two-models: out of memory");
    gx_tm_draw(&R->m[0], R->o->seed ^ 0x7777u, n, R->cls, R->eps);
    gx_status s = gx_tm_decode(&R->ctx, &R->m[0], R->cls, R->eps, n, R->gen[0], err);
    if (s == GX_OK) s = gx_tm_decode(&R->ctx, &R->m[1], R->cls, R->eps, n, R->gen[1], err);
    return s;
}

static gx_status tm_memorisation(tm_run *R, tm_rows *w, gx_two_models_result *r, gx_err *err) {
    int64_t n = R->o->n_gen;
    int S = (int)R->m[0].cfg.size;
    double *mc = malloc((size_t)n * sizeof *mc);
    if (!mc) return gx_err_set(err, GX_ERR_NOMEM, "two-models: out of memory");
    gx_status s = GX_OK;
    for (int h = 0; s == GX_OK && h < 2; h++) {
        int64_t nt = R->nhalf[h];
        if (R->o->n_mem_train > 0 && R->o->n_mem_train < nt) nt = R->o->n_mem_train;
        if ((s = tm_load(R, R->half[h], nt, &R->train[h], NULL, err)) != GX_OK) break;
        R->n_train_img[h] = nt;
        if ((s = gx_tm_max_cosine(R->gen[h], n, R->train[h], nt, 3, S, mc, err)) != GX_OK) break;
        int64_t copies = 0, c[TM_MEM_BINS];
        double mx = -2;
        for (int64_t i = 0; i < n; i++) {
            copies += mc[i] > TM_MEM_COPY;
            if (mc[i] > mx) mx = mc[i];
        }
        double frac = (double)copies / (double)n, med = tm_median(mc, n);
        char nm = h ? 'b' : 'a';
        tm_put(w, frac, "mem_copy_frac_%c", nm);
        tm_put(w, mx, "mem_max_cos_%c", nm);
        tm_put(w, med, "mem_median_cos_%c", nm);
        if (h) r->mem_frac_b = frac, r->mem_max_b = mx;
        else r->mem_frac_a = frac, r->mem_max_a = mx;
        gx_tm_histogram(mc, n, TM_MEM_BINS, 0.98, 1.01, c);
        char name[32];
        snprintf(name, sizeof name, "mem_cos_%c", nm);
        if ((s = tm_hist_store(R, name, c, TM_MEM_BINS, 0.98, 1.01, err)) == GX_OK)
            s = tm_hist_png(R, h ? "mem_b.png" : "mem_a.png", c, NULL, TM_MEM_BINS, err);
    }
    r->mem_pass = r->mem_frac_a < 0.01 && r->mem_frac_b < 0.01;
    tm_put(w, r->mem_pass, "mem_pass");
    free(mc);
    return s;
}

static gx_status tm_a_vs_b(tm_run *R, tm_rows *w, gx_two_models_result *r, gx_err *err) {
    int64_t n = R->o->n_gen, per = 3 * R->m[0].cfg.size * R->m[0].cfg.size, c[TM_AB_BINS];
    double *cs = malloc((size_t)n * sizeof *cs);
    if (!cs) return gx_err_set(err, GX_ERR_NOMEM, "two-models: out of memory");
    for (int64_t i = 0; i < n; i++) cs[i] = gx_tm_cosine(R->gen[0] + i * per, R->gen[1] + i * per, per);
    r->ab_cos_median = tm_median(cs, n);
    tm_put(w, r->ab_cos_median, "ab_median_cos");
    gx_tm_histogram(cs, n, TM_AB_BINS, 0.75, 1.05, c);
    free(cs);
    gx_status s = tm_hist_store(R, "ab_cos", c, TM_AB_BINS, 0.75, 1.05, err);
    return s == GX_OK ? tm_hist_png(R, "ab.png", c, NULL, TM_AB_BINS, err) : s;
}

/* Per dimension k: u = codes[:,k] against a fresh N(0,1) sample of the same
 * size; binned W1 on u's range (the paper) and exact W1. */
static gx_status tm_w1_normal(tm_run *R, const float *codes, int64_t n, int64_t d, const char *tag, tm_rows *w,
                              double *median_binned, double *median_exact, gx_err *err) {
    double *u = malloc((size_t)n * sizeof *u), *v = malloc((size_t)n * sizeof *v), *wb = malloc((size_t)d * sizeof *wb);
    double *wx = malloc((size_t)d * sizeof *wx);
    gx_real *z = malloc((size_t)n * sizeof *z);
    gx_status s = (!u || !v || !wb || !wx || !z) ? gx_err_set(err, GX_ERR_NOMEM, "two-models: out of memory") : GX_OK;
    for (int64_t k = 0; s == GX_OK && k < d; k++) {
        gx_rng rng;
        gx_rng_init(&rng, R->o->seed * 1000003u + (uint64_t)k);
        gx_rng_fill_normal(&rng, z, n, 0, 1);
        double lo = INFINITY, hi = -INFINITY;
        for (int64_t i = 0; i < n; i++) {
            u[i] = codes[i * d + k], v[i] = z[i];
            lo = fmin(lo, fmin(u[i], v[i])), hi = fmax(hi, fmax(u[i], v[i]));
        }
        /* The paper bins on the codes' own range; codes that collapse to a
         * narrow range would then clip the whole N(0,1) sample into the edge
         * bins and look close to it. The bins span both samples instead. */
        if ((s = gx_morph_w1_binned(u, n, v, n, TM_INV_BINS, lo, hi, &wb[k], NULL, NULL, err)) != GX_OK) break;
        if ((s = gx_morph_w1_exact(u, n, v, n, &wx[k], err)) != GX_OK) break;
        tm_put(w, wb[k], "inv_w1_binned_%s_d%lld", tag, (long long)k);
        tm_put(w, wx[k], "inv_w1_exact_%s_d%lld", tag, (long long)k);
    }
    if (s == GX_OK) *median_binned = tm_median(wb, d), *median_exact = tm_median(wx, d);
    free(u), free(v), free(wb), free(wx), free(z);
    return s;
}

static gx_status tm_inversion(tm_run *R, tm_rows *w, gx_two_models_result *r, gx_err *err) {
    int64_t n = R->o->n_gen, d = R->m[0].cfg.d;
    float *ea = malloc((size_t)(n * d) * sizeof *ea), *eb = malloc((size_t)(n * d) * sizeof *eb);
    double *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
    gx_status s = (!ea || !eb || !x || !y) ? gx_err_set(err, GX_ERR_NOMEM, "two-models: out of memory") : GX_OK;
    if (s == GX_OK) s = gx_tm_encode_eps(&R->ctx, &R->m[0], R->gen[0], R->cls, n, ea, err);
    if (s == GX_OK) s = gx_tm_encode_eps(&R->ctx, &R->m[1], R->gen[0], NULL, n, eb, err);
    if (s == GX_OK) {
        double se = 0, corr_b = 0, corr_a = 0;
        for (int64_t i = 0; i < n * d; i++) se += (double)(ea[i] - R->eps[i]) * (ea[i] - R->eps[i]);
        for (int64_t k = 0; k < d; k++) {
            for (int64_t i = 0; i < n; i++) x[i] = R->eps[i * d + k], y[i] = eb[i * d + k];
            corr_b += fabs(tm_corr(x, y, n));
            for (int64_t i = 0; i < n; i++) y[i] = ea[i * d + k];
            corr_a += tm_corr(x, y, n);
        }
        r->inv_rms_a = sqrt(se / (double)(n * d));
        r->inv_corr_b = corr_b / (double)d;
        tm_put(w, r->inv_rms_a, "inv_rms_a");
        tm_put(w, corr_a / (double)d, "inv_corr_a");
        tm_put(w, r->inv_corr_b, "inv_abs_corr_b");
        s = tm_w1_normal(R, ea, n, d, "a", w, &r->inv_w1_a_median, &r->inv_w1x_a_median, err);
    }
    if (s == GX_OK) s = tm_w1_normal(R, eb, n, d, "b", w, &r->inv_w1_b_median, &r->inv_w1x_b_median, err);
    if (s == GX_OK) {
        tm_put(w, r->inv_w1_a_median, "inv_w1_binned_a_median");
        tm_put(w, r->inv_w1_b_median, "inv_w1_binned_b_median");
        tm_put(w, r->inv_w1x_a_median, "inv_w1_exact_a_median");
        tm_put(w, r->inv_w1x_b_median, "inv_w1_exact_b_median");
        r->inv_pass = r->inv_rms_a < 0.5 && r->inv_w1x_b_median < 0.25;
        tm_put(w, r->inv_pass, "inv_pass");
        /* One picture: dimension 0 of A's and B's codes (B orange). */
        int64_t ca[TM_INV_BINS], cb[TM_INV_BINS];
        for (int64_t i = 0; i < n; i++) x[i] = ea[i * d], y[i] = eb[i * d];
        gx_tm_histogram(x, n, TM_INV_BINS / 4, -4, 4, ca);
        gx_tm_histogram(y, n, TM_INV_BINS / 4, -4, 4, cb);
        if ((s = tm_hist_store(R, "inv_a_dim0", ca, TM_INV_BINS / 4, -4, 4, err)) == GX_OK &&
            (s = tm_hist_store(R, "inv_b_dim0", cb, TM_INV_BINS / 4, -4, 4, err)) == GX_OK)
            s = tm_hist_png(R, "inv_dim0.png", ca, cb, TM_INV_BINS / 4, err);
    }
    free(ea), free(eb), free(x), free(y);
    return s;
}

/* Morphology of A's samples, B's samples and held-out real images. */
static gx_status tm_morphology(tm_run *R, tm_rows *w, gx_two_models_result *r, gx_err *err) {
    int64_t ng = R->o->n_gen, nr = R->n_real;
    int S = (int)R->m[0].cfg.size;
    const int NS = GX_TM_MORPH_NSTATS;
    double *st[3];
    int *ok[3];
    const float *src[3] = { R->gen[0], R->gen[1], R->real };
    int64_t cnt[3] = { ng, ng, nr };
    gx_status s = GX_OK;
    for (int k = 0; k < 3; k++) {
        st[k] = malloc((size_t)(cnt[k] * NS) * sizeof *st[k]);
        ok[k] = malloc((size_t)cnt[k] * sizeof *ok[k]);
        if (!st[k] || !ok[k]) s = gx_err_set(err, GX_ERR_NOMEM, "two-models: out of memory");
    }
    for (int k = 0; s == GX_OK && k < 3; k++) s = gx_tm_morph_measure(src[k], cnt[k], S, st[k], ok[k], err);
    if (s == GX_OK) s = gx_tm_morph_w1(st[0], ok[0], ng, st[2], ok[2], nr, r->morph_w1_a, err);
    if (s == GX_OK) s = gx_tm_morph_w1(st[0], ok[0], ng, st[1], ok[1], ng, r->morph_w1_ab, err);
    double wb[GX_TM_MORPH_NSTATS];
    if (s == GX_OK) s = gx_tm_morph_w1(st[1], ok[1], ng, st[2], ok[2], nr, wb, err);
    for (int j = 0; s == GX_OK && j < NS; j++) {
        const char *nm = gx_tm_morph_stat_name(j);
        tm_put(w, r->morph_w1_a[j], "morph_w1_%s_a_real", nm);
        tm_put(w, wb[j], "morph_w1_%s_b_real", nm);
        tm_put(w, r->morph_w1_ab[j], "morph_w1_%s_a_b", nm);
        /* Histograms on the real images' range (a 5% margin). */
        double lo = INFINITY, hi = -INFINITY, *col = malloc((size_t)(ng > nr ? ng : nr) * sizeof *col);
        if (!col) { s = gx_err_set(err, GX_ERR_NOMEM, "two-models: out of memory"); break; }
        for (int64_t i = 0; i < nr; i++)
            if (ok[2][i]) lo = fmin(lo, st[2][i * NS + j]), hi = fmax(hi, st[2][i * NS + j]);
        if (!(hi > lo)) lo = -1, hi = 1;
        double m = 0.05 * (hi - lo);
        lo -= m, hi += m;
        int64_t ca[TM_MORPH_BINS], cr[TM_MORPH_BINS], na = 0, nrr = 0;
        for (int64_t i = 0; i < ng; i++) if (ok[0][i]) col[na++] = st[0][i * NS + j];
        gx_tm_histogram(col, na, TM_MORPH_BINS, lo, hi, ca);
        for (int64_t i = 0; i < nr; i++) if (ok[2][i]) col[nrr++] = st[2][i * NS + j];
        gx_tm_histogram(col, nrr, TM_MORPH_BINS, lo, hi, cr);
        free(col);
        char name[64], file[64];
        snprintf(name, sizeof name, "morph_%s_gen_a", nm);
        if ((s = tm_hist_store(R, name, ca, TM_MORPH_BINS, lo, hi, err)) != GX_OK) break;
        snprintf(name, sizeof name, "morph_%s_real", nm);
        if ((s = tm_hist_store(R, name, cr, TM_MORPH_BINS, lo, hi, err)) != GX_OK) break;
        snprintf(file, sizeof file, "morph_%s.png", nm);
        s = tm_hist_png(R, file, ca, cr, TM_MORPH_BINS, err);
    }
    for (int k = 0; k < 3; k++) free(st[k]), free(ok[k]);
    return s;
}

/* The realism check: counterfactuals of class q (model A, from held-out
 * images of other classes) against real held-out images of class q, W1 per
 * statistic and class. */
static gx_status tm_realism(tm_run *R, tm_rows *w, gx_err *err) {
    gx_cf_model *m = &R->m[0];
    int64_t K = m->cfg.classes, S = m->cfg.size, per = 3 * S * S, NS = GX_TM_MORPH_NSTATS;
    int64_t nsrc = R->n_real < 40 ? R->n_real : 40;
    float *xcf = malloc((size_t)(nsrc * per) * sizeof *xcf);
    double *sc = malloc((size_t)(nsrc * NS) * sizeof *sc), *sr = malloc((size_t)(R->n_real * NS) * sizeof *sr);
    int *okc = malloc((size_t)nsrc * sizeof *okc), *okr = malloc((size_t)R->n_real * sizeof *okr);
    float *real_q = malloc((size_t)(R->n_real * per) * sizeof *real_q);
    gx_cf_result *res = malloc(sizeof *res);
    gx_status s = (!xcf || !sc || !sr || !okc || !okr || !real_q || !res)
                      ? gx_err_set(err, GX_ERR_NOMEM, "two-models: out of memory") : GX_OK;
    for (int64_t q = 0; s == GX_OK && q < K; q++) {
        int64_t nq = 0, nc = 0;
        for (int64_t i = 0; i < R->n_real; i++)
            if (R->real_label[i] == q) memcpy(real_q + nq++ * per, R->real + i * per, (size_t)per * sizeof *real_q);
        for (int64_t i = 0; s == GX_OK && i < nsrc; i++) {
            if (R->real_label[i] == q) continue;
            s = gx_cf_counterfactuals(&R->ctx, m, R->real + i * per, &q, 1, NULL, xcf + nc * per, res, err);
            gx_ctx_reset(&R->ctx);
            nc++;
        }
        double w1[GX_TM_MORPH_NSTATS];
        for (int j = 0; j < NS; j++) w1[j] = NAN;
        if (s == GX_OK && nq > 0 && nc > 0 && (s = gx_tm_morph_measure(xcf, nc, (int)S, sc, okc, err)) == GX_OK &&
            (s = gx_tm_morph_measure(real_q, nq, (int)S, sr, okr, err)) == GX_OK)
            s = gx_tm_morph_w1(sc, okc, nc, sr, okr, nq, w1, err);
        for (int j = 0; s == GX_OK && j < NS; j++)
            tm_put(w, w1[j], "realism_w1_%s_c%lld", gx_tm_morph_stat_name((int)j), (long long)q);
    }
    free(xcf), free(sc), free(sr), free(okc), free(okr), free(real_q), free(res);
    return s;
}

/* ----------------------------------------------------------------- report */

static void tm_report(tm_run *R, const tm_rows *w, const gx_two_models_result *r) {
    FILE *f = R->md;
    const gx_two_models_opts *o = R->o;
    fprintf(f, "# Two-models report (run %lld)\n\n", (long long)r->run_id);
    fprintf(f, "CF-INN config `%s`, data `%s`; models A (run %lld) and B (run %lld) trained on disjoint "
               "halves of %lld images each; %d generated samples per model; %lld held-out real images.\n\n",
            o->config_name, o->data, (long long)r->run_a, (long long)r->run_b, (long long)r->half_n, o->n_gen,
            (long long)R->n_real);
    fprintf(f, "## Verdicts\n\n| check | result | rule |\n|---|---|---|\n");
    fprintf(f, "| memorisation | **%s** | < 1%% of samples with max cosine > %.2f to the own training set "
               "(A %.1f%%, B %.1f%%) |\n", r->mem_pass ? "pass" : "fail", TM_MEM_COPY, 100 * r->mem_frac_a,
            100 * r->mem_frac_b);
    fprintf(f, "| inversion | **%s** | A's RMS(eps' - eps) < 0.5 (%.3f) and median exact W1 of B's codes "
               "to N(0,1) < 0.25 (%.3f) |\n\n", r->inv_pass ? "pass" : "fail", r->inv_rms_a, r->inv_w1x_b_median);
    fprintf(f, "## Memorisation\n\nMax cosine over the own training half (%lld / %lld images searched, with "
               "flips): A max %.4f, B max %.4f.\n\n![A](mem_a.png) ![B](mem_b.png)\n\n",
            (long long)R->n_train_img[0], (long long)R->n_train_img[1], r->mem_max_a, r->mem_max_b);
    fprintf(f, "## A vs B\n\nSame draws through both models: median paired cosine %.4f "
               "(histogram on [0.75, 1.05]).\n\n![A vs B](ab.png)\n\n", r->ab_cos_median);
    fprintf(f, "## Inversion\n\n| | value |\n|---|---|\n| RMS of A's re-encoded eps - eps | %.4f |\n"
               "| mean abs corr(eps, B's codes) per dim | %.4f |\n| median binned W1(A's codes, N(0,1)) | %.4f |\n"
               "| median binned W1(B's codes, N(0,1)) | %.4f |\n| median exact W1(A's codes, N(0,1)) | %.4f |\n"
               "| median exact W1(B's codes, N(0,1)) | %.4f |\n\nDimension 0 of A's (blue) and B's (orange) "
               "codes: ![inversion](inv_dim0.png)\n\n", r->inv_rms_a, r->inv_corr_b, r->inv_w1_a_median,
            r->inv_w1_b_median, r->inv_w1x_a_median, r->inv_w1x_b_median);
    fprintf(f, "## Morphology (exact W1 per statistic)\n\n| statistic | A vs real | A vs B | histogram (A blue, "
               "real orange) |\n|---|---|---|---|\n");
    for (int j = 0; j < GX_TM_MORPH_NSTATS; j++)
        fprintf(f, "| %s | %.4f | %.4f | ![%s](morph_%s.png) |\n", gx_tm_morph_stat_name(j), r->morph_w1_a[j],
                r->morph_w1_ab[j], gx_tm_morph_stat_name(j), gx_tm_morph_stat_name(j));
    fprintf(f, "\n## Counterfactual realism (model A; W1 of class-q counterfactuals vs real class q)\n\n"
               "| class |");
    for (int j = 0; j < GX_TM_MORPH_NSTATS; j++) fprintf(f, " %s |", gx_tm_morph_stat_name(j));
    fprintf(f, "\n|---|---|---|---|---|---|\n");
    for (int64_t q = 0; q < R->m[0].cfg.classes; q++) {
        fprintf(f, "| %lld |", (long long)q);
        for (int j = 0; j < GX_TM_MORPH_NSTATS; j++) {
            char name[64];
            snprintf(name, sizeof name, "realism_w1_%s_c%lld", gx_tm_morph_stat_name(j), (long long)q);
            double v = NAN;
            for (int i = 0; i < w->n; i++)
                if (!strcmp(w->name[i], name)) v = w->row[i].value;
            fprintf(f, " %.4f |", v);
        }
        fprintf(f, "\n");
    }
    fprintf(f, "\nEvery number above is in the database: metrics of run %lld (split `two_models`), "
               "histograms in the `histograms` table.\n", (long long)r->run_id);
}

/* ------------------------------------------------------------------- run */

static gx_status tm_begin(tm_run *R, gx_two_models_result *r, gx_err *err) {
    const gx_two_models_opts *o = R->o;
    gx_status s = gx_db_open(&R->db, o->db_path, err);
    if (s != GX_OK) return s;
    json_t *cfg = json_pack("{s:s, s:s, s:I, s:I, s:I, s:i, s:i, s:i, s:I}", "data", o->data, "config",
                            o->config_name, "seed", (json_int_t)o->seed, "run_a", (json_int_t)r->run_a, "run_b",
                            (json_int_t)r->run_b, "n_gen", o->n_gen, "n_mem_train", o->n_mem_train, "n_real",
                            o->n_real, "half_n", (json_int_t)r->half_n);
    char *js = cfg ? json_dumps(cfg, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(cfg);
    if (!js) return gx_err_set(err, GX_ERR_NOMEM, "two-models: out of memory");
    gx_db_run_info info = { "two-models", js, o->command_line, (int64_t)o->seed, NULL };
    s = gx_db_run_begin(R->db, &info, &R->run_id, err);
    free(js);
    r->run_id = R->run_id;
    return s;
}

gx_status gx_two_models_run(const gx_two_models_opts *o, gx_two_models_result *r, gx_err *err) {
    if (!o || !r || !o->data || !o->db_path || !o->out_dir)
        return gx_err_set(err, GX_ERR_INVALID, "two-models: --data, --db and --out are required");
    if (o->n_gen < 2 || o->n_real < 2)
        return gx_err_set(err, GX_ERR_INVALID, "two-models: n_gen and n_real must be >= 2");
    memset(r, 0, sizeof *r);
    if (mkdir(o->out_dir, 0777) && errno != EEXIST)
        return gx_err_set(err, GX_ERR_IO, "--out %s: %s", o->out_dir, strerror(errno));
    tm_run R;
    memset(&R, 0, sizeof R);
    R.o = o;
    gx_ctx_init(&R.ctx, 0);
    gx_status s = tm_split(&R, err);
    if (s == GX_OK) r->half_n = R.nhalf[0];
    if (s == GX_OK) s = tm_train(&R, 0, &r->run_a, err);
    if (s == GX_OK) s = tm_train(&R, 1, &r->run_b, err);
    if (s == GX_OK) s = tm_begin(&R, r, err);
    if (s == GX_OK) {
        R.n_real = R.nsplit[2] < o->n_real ? R.nsplit[2] : o->n_real;
        s = tm_load(&R, R.split[2], R.n_real, &R.real, &R.real_label, err);
    }
    tm_rows *w = calloc(1, sizeof *w);
    if (!w && s == GX_OK) s = gx_err_set(err, GX_ERR_NOMEM, "two-models: out of memory");
    if (o->progress != 0 && s == GX_OK) fprintf(stderr, "two-models: checks (%d samples per model)\n", o->n_gen);
    if (s == GX_OK) s = tm_generate(&R, err);
    if (s == GX_OK) s = tm_memorisation(&R, w, r, err);
    if (s == GX_OK) s = tm_a_vs_b(&R, w, r, err);
    if (s == GX_OK) s = tm_inversion(&R, w, r, err);
    if (s == GX_OK) s = tm_morphology(&R, w, r, err);
    if (s == GX_OK) s = tm_realism(&R, w, err);
    if (s == GX_OK) s = gx_db_metrics_put(R.db, R.run_id, 0, w->row, w->n, err);
    if (s == GX_OK) {
        char tmp[1100];
        snprintf(r->report_path, sizeof r->report_path, "%s/report.md", o->out_dir);
        snprintf(tmp, sizeof tmp, "%s.tmp", r->report_path);
        R.md = fopen(tmp, "w");
        if (!R.md) s = gx_err_set(err, GX_ERR_IO, "%s: %s", tmp, strerror(errno));
        else {
            tm_report(&R, w, r);
            int bad = fflush(R.md) != 0 || fsync(fileno(R.md)) != 0;
            fclose(R.md);
            R.md = NULL;
            if (bad || rename(tmp, r->report_path))
                s = gx_err_set(err, GX_ERR_IO, "%s: cannot write the report", r->report_path);
        }
    }
    if (R.db && R.run_id) {
        gx_err e2;
        gx_db_run_finish(R.db, R.run_id, s == GX_OK ? "finished" : "failed", &e2);
    }
    free(w);
    tm_free(&R);
    return s;
}

/* ---------------------------------------------------- report --kind two-models */

/* One metric of a two-models run (NaN when absent or NULL). */
static double tm_db_metric(sqlite3 *h, int64_t run, const char *name) {
    sqlite3_stmt *q = NULL;
    double v = NAN;
    if (sqlite3_prepare_v2(h, "SELECT value FROM metrics WHERE run_id = ? AND split = 'two_models' AND name = ? "
                              "ORDER BY epoch DESC LIMIT 1", -1, &q, NULL) != SQLITE_OK)
        return v;
    sqlite3_bind_int64(q, 1, run);
    sqlite3_bind_text(q, 2, name, -1, SQLITE_STATIC);
    if (sqlite3_step(q) == SQLITE_ROW && sqlite3_column_type(q, 0) != SQLITE_NULL) v = sqlite3_column_double(q, 0);
    sqlite3_finalize(q);
    return v;
}

static const char *tm_verdict(double v) {
    return isnan(v) ? "—" : v != 0 ? "pass" : "fail";
}

/* One table row; GX_ERR_NOTFOUND / GX_ERR_INVALID for a run that is missing
 * or of another kind. */
static gx_status tm_report_row(sqlite3 *h, int64_t run, FILE *f, gx_err *err) {
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(h, "SELECT model_kind, config_json FROM runs WHERE id = ?", -1, &q, NULL) != SQLITE_OK)
        return gx_err_set(err, GX_ERR_IO, "report: %s", sqlite3_errmsg(h));
    sqlite3_bind_int64(q, 1, run);
    gx_status s = GX_OK;
    long long half = -1;
    if (sqlite3_step(q) != SQLITE_ROW)
        s = gx_err_set(err, GX_ERR_NOTFOUND, "report: no run %lld in the database", (long long)run);
    else if (strcmp((const char *)sqlite3_column_text(q, 0), "two-models"))
        s = gx_err_set(err, GX_ERR_INVALID, "report: run %lld is a %s run, not two-models", (long long)run,
                       (const char *)sqlite3_column_text(q, 0));
    else {
        json_t *cfg = json_loads((const char *)sqlite3_column_text(q, 1), 0, NULL);
        json_t *hn = json_object_get(cfg, "half_n");
        if (json_is_integer(hn)) half = (long long)json_integer_value(hn);
        json_decref(cfg);
    }
    sqlite3_finalize(q);
    if (s != GX_OK) return s;
    fprintf(f, "| %lld | %lld | %s | %.1f%% / %.1f%% | %.3f | %s | %.3f | %.3f |", (long long)run, half,
            tm_verdict(tm_db_metric(h, run, "mem_pass")), 100 * tm_db_metric(h, run, "mem_copy_frac_a"),
            100 * tm_db_metric(h, run, "mem_copy_frac_b"), tm_db_metric(h, run, "ab_median_cos"),
            tm_verdict(tm_db_metric(h, run, "inv_pass")), tm_db_metric(h, run, "inv_rms_a"),
            tm_db_metric(h, run, "inv_w1_exact_b_median"));
    for (int j = 0; j < GX_TM_MORPH_NSTATS; j++) {
        char name[64];
        snprintf(name, sizeof name, "morph_w1_%s_a_real", gx_tm_morph_stat_name(j));
        fprintf(f, " %.3f%s", tm_db_metric(h, run, name), j + 1 < GX_TM_MORPH_NSTATS ? " /" : " |\n");
    }
    return GX_OK;
}

gx_status gx_two_models_report(gx_db *db, const int64_t *runs, int n_runs, FILE *f, gx_err *err) {
    sqlite3 *h = gx_db_handle(db);
    int64_t *all = NULL;
    int n = n_runs;
    gx_status s = GX_OK;
    if (n == 0) {
        sqlite3_stmt *q = NULL;
        if (sqlite3_prepare_v2(h, "SELECT id FROM runs WHERE model_kind = 'two-models' AND status = 'finished' "
                                  "ORDER BY id", -1, &q, NULL) != SQLITE_OK)
            return gx_err_set(err, GX_ERR_IO, "report: %s", sqlite3_errmsg(h));
        int cap = 0;
        while (s == GX_OK && sqlite3_step(q) == SQLITE_ROW) {
            if (n == cap) {
                int64_t *p = realloc(all, (size_t)(cap = cap ? 2 * cap : 16) * sizeof *p);
                if (!p) { s = gx_err_set(err, GX_ERR_NOMEM, "report: out of memory"); break; }
                all = p;
            }
            all[n++] = sqlite3_column_int64(q, 0);
        }
        sqlite3_finalize(q);
        if (s == GX_OK && n == 0) s = gx_err_set(err, GX_ERR_NOTFOUND, "report: no finished two-models run");
        runs = all;
    }
    if (s == GX_OK)
        fprintf(f, "## Two-models checks (CF-INN)\n\n| run | images per model | memorisation | copies A / B | "
                   "A-vs-B median cos | inversion | A's RMS(eps' - eps) | B's median W1 to N(0,1) | "
                   "morphology W1 vs real: C / A / S / G / M20 |\n|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; s == GX_OK && i < n; i++) s = tm_report_row(h, runs[i], f, err);
    if (s == GX_OK)
        fputs("\nMemorisation passes with < 1% of generated samples at max cosine > 0.99 to the model's own "
              "training half; inversion with A's RMS < 0.5 and B's median exact W1 < 0.25 "
              "(docs/two-models.md). Each run's report.md has the histograms.\n", f);
    free(all);
    return s;
}
