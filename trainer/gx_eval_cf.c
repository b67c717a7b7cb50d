/*
 * gx_eval_cf.c — a CF-INN checkpoint on the test part of its split:
 * classification, reconstruction, counterfactual metrics with the
 * background check and the judge; rows in SQLite; the bundle (contract:
 * gx_eval_cf.h).
 *
 * Shape of one evaluation: checkpoint (+ judge) -> dataset -> the split
 * rebuilt from split_seed -> pass 1 over the test part (timed): posteriors,
 * nll, x~ -> pass 2 over the first cf_n test images: K-1 counterfactuals
 * each (gx_cf_counterfactuals), the segment of x once per image, the judge
 * on the image's counterfactuals -> means -> rows / report / JSON.
 * Memory: one arena reset per batch or image; per-image buffers are
 * allocated once per evaluation (O(K * 3 * S * S)).
 */
#include "gx_eval_cf.h"

#include "gx_cf_inn.h"
#include "gx_dataset.h"
#include "gx_db.h"
#include "gx_image.h"
#include "gx_loader.h"
#include "gx_morph.h"
#include "gx_report.h"
#include "gx_train_cf.h"
#include "gx_train_common.h"
#include "gx_train_wm.h"
#include "gx_two_models.h"

#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static double ec_mean(double sum, int64_t n) { return n > 0 ? sum / (double)n : NAN; }

void gx_eval_cf_opts_default(gx_eval_cf_opts *o) {
    memset(o, 0, sizeof *o);
    o->split_seed = -1;
    o->batch = 64;
}

/* ================================================================ background */

/* Means of |xcf - xrec| (over bands) outside / inside segmap (S*S, 1 =
 * galaxy). 0 when either side has no pixel. */
static int ec_bg_means(const int32_t *seg, const float *xrec, const float *xcf, int S, double *out_mean,
                       double *in_mean) {
    int64_t n = (int64_t)S * S, n_in = 0;
    double s_in = 0, s_out = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = 0;
        for (int c = 0; c < 3; c++) d += fabs((double)xcf[c * n + i] - (double)xrec[c * n + i]);
        if (seg[i]) { s_in += d; n_in++; }
        else s_out += d;
    }
    if (n_in == 0 || n_in == n) { *out_mean = *in_mean = NAN; return 0; }
    *in_mean = s_in / (3.0 * (double)n_in);
    *out_mean = s_out / (3.0 * (double)(n - n_in));
    return 1;
}

/* gx_tm_morph_image + gx_morph_segment. */
gx_status gx_eval_cf_segment(const float *x, int S, float *img, int32_t *seg, int *found, gx_err *err) {
    gx_tm_morph_image(x, S, img);
    return gx_morph_segment(img, NULL, S, S, seg, found, err);
}

gx_status gx_eval_cf_background(const float *x, const float *xrec, const float *xcf, int S,
                                double *out_mean, double *in_mean, int *found, gx_err *err) {
    if (!x || !xrec || !xcf || !out_mean || !in_mean || !found)
        return gx_err_set(err, GX_ERR_INVALID, "cf background: NULL argument");
    if (S < 11 || S > GX_MORPH_MAX_SIDE)
        return gx_err_set(err, GX_ERR_INVALID, "cf background: size %d outside [11, %d]", S, GX_MORPH_MAX_SIDE);
    float *img = malloc((size_t)S * (size_t)S * sizeof *img);
    int32_t *seg = malloc((size_t)S * (size_t)S * sizeof *seg);
    gx_status s = img && seg ? GX_OK : gx_err_set(err, GX_ERR_NOMEM, "cf background: out of memory");
    *found = 0;
    *out_mean = *in_mean = NAN;
    if (s == GX_OK) s = gx_eval_cf_segment(x, S, img, seg, found, err);
    if (s == GX_OK && *found) *found = ec_bg_means(seg, xrec, xcf, S, out_mean, in_mean);
    free(img);
    free(seg);
    return s;
}

/* ===================================================================== rows */

/* The scalar metrics of a result, in one table: rows, JSON and the report
 * read it, so the three never disagree on a name. */
typedef struct { const char *name; size_t off; char type; } ec_field;   /* 'd' double, 'i' int64 */
#define F_(n, f, t) { n, offsetof(gx_eval_cf_result, f), t }
static const ec_field ec_fields[] = {
    F_("accuracy", cls.accuracy, 'd'), F_("auc_macro", cls.auc_macro, 'd'), F_("auc_micro", cls.auc_micro, 'd'),
    F_("ap_macro", cls.ap_macro, 'd'), F_("nll", nll, 'd'), F_("rec_ssim", rec_ssim, 'd'),
    F_("rec_msd", rec_msd, 'd'), F_("n_test", n, 'i'), F_("z2_class_probe", z2_class_probe, 'd'),
    F_("cf_valid_hidden", cf_valid_hidden, 'd'), F_("cf_valid_reencoded", cf_valid_reencoded, 'd'),
    F_("cf_valid_judge", cf_valid_judge, 'd'), F_("cf_fallback", cf_fallback, 'd'),
    F_("judge_acc_x", judge_acc_x, 'd'), F_("judge_acc_rec", judge_acc_rec, 'd'),
    F_("cf_judge_unchanged", cf_judge_unchanged, 'd'),
    F_("cf_msd_x_cf", cf_msd_x_cf, 'd'), F_("cf_ssim_x_cf", cf_ssim_x_cf, 'd'),
    F_("cf_msd_rec_cf", cf_msd_rec_cf, 'd'), F_("cf_ssim_rec_cf", cf_ssim_rec_cf, 'd'),
    F_("cf_msd_x_rec", cf_msd_x_rec, 'd'), F_("cf_ssim_x_rec", cf_ssim_x_rec, 'd'),
    F_("cf_n", cf_count, 'i'), F_("cf_images", cf_images, 'i'),
    F_("cf_bg_out", cf_bg_out, 'd'), F_("cf_bg_in", cf_bg_in, 'd'), F_("cf_bg_ratio", cf_bg_ratio, 'd'),
    F_("cf_bg_frac_ok", cf_bg_frac_ok, 'd'), F_("cf_bg_n", cf_bg_n, 'i'),
    F_("images_per_s", images_per_s, 'd'), F_("n_params", n_params, 'i'),
};
#undef F_
#define EC_NFIELDS ((int)(sizeof ec_fields / sizeof ec_fields[0]))

static double ec_field_get(const gx_eval_cf_result *r, int i) {
    const char *p = (const char *)r + ec_fields[i].off;
    return ec_fields[i].type == 'd' ? *(const double *)p : (double)*(const int64_t *)p;
}

/* Every field, cf_valid_judge too: NaN without a judge is stored NULL and
 * so replaces the row of an earlier evaluation that had one. */
static void ec_fill_rows(const gx_eval_cf_result *r, gx_train_rows *w) {
    w->n = 0;
    for (int i = 0; i < EC_NFIELDS; i++) gx_train_row(w, "test", ec_field_get(r, i), "%s", ec_fields[i].name);
    for (int k = 0; k < r->cls.k && k < GX_METRICS_MAX_CLASSES; k++)
        gx_train_row(w, "test", r->cls.recall[k], "recall_%d", k);
}

static json_t *ec_num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static const char *ec_base(const char *p) {
    const char *b = p ? strrchr(p, '/') : NULL;
    return b ? b + 1 : p;
}

char *gx_eval_cf_metrics_json(const gx_eval_cf_result *r, const char *data, const char *judge) {
    json_t *j = json_object(), *rec = json_array();
    if (!j || !rec) { json_decref(j); json_decref(rec); return NULL; }
    for (int i = 0; i < EC_NFIELDS; i++) {
        double v = ec_field_get(r, i);
        json_object_set_new(j, ec_fields[i].name,
                            ec_fields[i].type == 'i' ? json_integer((json_int_t)v) : ec_num(v));
    }
    for (int k = 0; k < r->cls.k && k < GX_METRICS_MAX_CLASSES; k++) json_array_append_new(rec, ec_num(r->cls.recall[k]));
    json_object_set_new(j, "recall", rec);
    json_object_set_new(j, "data", json_string(data ? ec_base(data) : ""));
    json_object_set_new(j, "judge", judge ? json_string(ec_base(judge)) : json_null());
    json_object_set_new(j, "part", json_string("test"));
    json_object_set_new(j, "split_seed", json_integer((json_int_t)r->split_seed));
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    return s;
}

/* ============================================================== environment */

typedef struct ec_env {
    const gx_eval_cf_opts *o;
    gx_cf_model m;
    int         model_ready;
    gx_cf_meta  meta;
    gx_wm_model judge;
    int         judge_ready;
    gx_dataset *ds;
    int64_t    *idx[3], cnt[3];
    int64_t     n_test;
    gx_ctx      ctx;
    gx_loader  *L;
    gx_train_device dev;       /* o->device: model and judge there */
} ec_env;

static gx_status ec_load_model(ec_env *E, gx_err *err) {
    gx_st_file f;
    memset(&f, 0, sizeof f);
    gx_err e2;
    gx_status s = gx_st_read(&f, E->o->checkpoint, &e2);
    if (s == GX_OK && (s = gx_cf_load(&f, &E->m, &E->meta, &e2)) == GX_OK) E->model_ready = 1;
    gx_st_close(&f);
    if (s != GX_OK) return gx_err_set(err, s, "--checkpoint %s: %s", E->o->checkpoint, e2.msg);
    /* Checked before the long classification pass, not after it. */
    int any = 0;
    for (int64_t c = 0; c < E->m.cfg.classes; c++) any |= E->m.mhat_valid->data[c] != 0;
    if (!any)
        return gx_err_set(err, GX_ERR_INVALID, "--checkpoint %s: no m-hat (galaxy-train cf-inn stores it "
                          "with every checkpoint)", E->o->checkpoint);
    return GX_OK;
}

static gx_status ec_load_judge(ec_env *E, gx_err *err) {
    gx_st_file f;
    memset(&f, 0, sizeof f);
    gx_err e2;
    gx_status s = gx_st_read(&f, E->o->judge, &e2);
    if (s == GX_OK && (s = gx_wm_checkpoint_load(&f, &E->judge, &e2)) == GX_OK) E->judge_ready = 1;
    gx_st_close(&f);
    if (s != GX_OK) return gx_err_set(err, s, "--judge %s: %s", E->o->judge, e2.msg);
    if (E->judge.cfg.classes != E->m.cfg.classes)
        return gx_err_set(err, GX_ERR_INVALID, "--judge %s: %lld classes, the cf-inn model has %lld", E->o->judge,
                          (long long)E->judge.cfg.classes, (long long)E->m.cfg.classes);
    return GX_OK;
}

/* Model, judge, data, the split and the test loader. */
static gx_status ec_open(ec_env *E, gx_eval_cf_result *r, gx_err *err) {
    const gx_eval_cf_opts *o = E->o;
    gx_status s = ec_load_model(E, err);
    if (s == GX_OK && o->judge) s = ec_load_judge(E, err);
    if (s != GX_OK) return s;
    if (o->split_seed >= 0) r->split_seed = o->split_seed;
    else if (E->meta.has_split_seed) r->split_seed = E->meta.split_seed;
    else
        return gx_err_set(err, GX_ERR_INVALID, "--checkpoint %s has no metadata 'split_seed': pass --split-seed "
                          "(the training seed unless --set split_seed was given)", o->checkpoint);
    r->run_id = E->meta.run_id;
    r->epoch = E->meta.epoch;
    gx_err e2;
    if ((s = gx_dataset_open(o->data, NULL, &E->ds, &e2)) != GX_OK)
        return gx_err_set(err, s, "--data %s: %s", o->data, e2.msg);
    if (E->ds->n_classes > E->m.cfg.classes)
        return gx_err_set(err, GX_ERR_INVALID, "--data %s: %d classes, the checkpoint has %lld", o->data,
                          E->ds->n_classes, (long long)E->m.cfg.classes);
    s = gx_split_stratified(E->ds->label, E->ds->n, E->ds->n_classes, (double[3]){ .70, .15, .15 },
                            (uint64_t)r->split_seed, E->idx, E->cnt, err);
    if (s != GX_OK) return s;
    E->n_test = E->cnt[2];
    if (o->max_test > 0 && o->max_test < E->n_test) E->n_test = o->max_test;
    if (E->n_test < 1) return gx_err_set(err, GX_ERR_INVALID, "--data %s: the test part is empty", o->data);
    gx_loader_opts lo = GX_LOADER_OPTS_DEFAULT;
    lo.batch = o->batch > 0 ? o->batch : 64;
    lo.size = (int)E->m.cfg.size;
    lo.crop_frac = E->meta.crop_frac;
    lo.seed = (uint64_t)r->split_seed;
    return gx_loader_open(&E->L, E->ds, E->idx[2], E->n_test, &lo, err);
}

static void ec_close(ec_env *E) {
    gx_loader_close(E->L);
    for (int k = 0; k < 3; k++) free(E->idx[k]);
    gx_dataset_close(E->ds);
    if (E->judge_ready) gx_wm_free(&E->judge);
    if (E->model_ready) gx_cf_free(&E->m);
    gx_ctx_free(&E->ctx);
    gx_train_device_close(&E->dev);   /* after the models and the ctx gave their blocks back */
}

/* ========================================================= pass 1: classify */

typedef struct ec_cls_acc {
    gx_real *probs;            /* [n,K] */
    float   *z2;               /* [n,d2] */
    int32_t *label;
    int64_t  n;
    double   nll, msd, ssim;
    int64_t  n_ssim;
} ec_cls_acc;

gx_eval_cf_image_stats gx_eval_cf_image(const gx_cf_out *out, int64_t i, const float *x, int64_t K, int64_t S,
                                        float *xr, gx_real *probs, float *z2) {
    gx_eval_cf_image_stats st = { 0 };
    const int64_t px = 3 * S * S, plane = S * S;
    /* Read here on the host: a device pass must hand over host copies (on
     * the emulation device memory is host memory, so only this catches it). */
    GX_ASSERT_MSG(out->g->device != GX_DEVICE_CUDA && out->logdet->device != GX_DEVICE_CUDA &&
                  out->xrec->device != GX_DEVICE_CUDA, "gx_eval_cf_image: outputs on the device (gx_to_host them)");
    const gx_real *g = out->g->data + i * K;
    double mx = g[0], sum = 0, se = 0, ss = 0;
    for (int64_t c = 1; c < K; c++) mx = g[c] > mx ? g[c] : mx;
    for (int64_t c = 0; c < K; c++) sum += exp((double)g[c] - mx);
    for (int64_t c = 0; c < K; c++) probs[c] = (gx_real)(exp((double)g[c] - mx) / sum);
    st.nll = -(mx + log(sum)) - (double)out->logdet->data[i];
    if (z2 && out->z2) {
        const int64_t d2 = out->z2->shape[1];
        for (int64_t j = 0; j < d2; j++) z2[j] = (float)out->z2->data[i * d2 + j];
    }
    const gx_real *ri = out->xrec->data + i * px;
    for (int64_t j = 0; j < px; j++) {
        double t = (double)ri[j] - x[j];
        se += t * t;
        if (xr) xr[j] = (float)ri[j];
    }
    st.msd = se / (double)px;
    int ok = xr != NULL;
    for (int c = 0; ok && c < 3; c++) {
        double v;
        gx_err e;
        ok = gx_morph_ssim(x + c * plane, xr + c * plane, (int)S, (int)S, 1.0, &v, &e) == GX_OK;
        ss += v;
    }
    st.ssim = ss / 3;
    st.ssim_ok = ok;
    return st;
}

gx_cf_out gx_eval_cf_out_host(gx_ctx *ctx, const gx_cf_out *out) {
    gx_cf_out h = *out;
    h.g = gx_to_host(ctx, out->g);
    h.logdet = gx_to_host(ctx, out->logdet);
    h.xrec = gx_to_host(ctx, out->xrec);
    h.z2 = out->z2 ? gx_to_host(ctx, out->z2) : NULL;
    return h;
}

/* Per-image numbers of one batch (gx_eval_cf_image); xr: 3*S*S float
 * scratch for gx_morph_ssim. */
static void ec_cls_add(ec_cls_acc *a, const gx_cf_out *out, const gx_batch *b, int64_t K, int64_t S, int64_t d2,
                       float *xr) {
    for (int64_t i = 0; i < b->n; i++, a->n++) {
        gx_eval_cf_image_stats st = gx_eval_cf_image(out, i, b->x + i * 3 * S * S, K, S, xr, a->probs + a->n * K,
                                                     a->z2 + a->n * d2);
        a->label[a->n] = b->label[i];
        a->nll += st.nll;
        a->msd += st.msd;
        if (st.ssim_ok) { a->ssim += st.ssim; a->n_ssim++; }
    }
}

static gx_status ec_classify(ec_env *E, gx_eval_cf_result *r, gx_err *err) {
    const int64_t K = E->m.cfg.classes, S = E->m.cfg.size, d2 = E->m.cfg.d - E->m.cfg.d1;
    ec_cls_acc a;
    memset(&a, 0, sizeof a);
    a.probs = malloc((size_t)(E->n_test * K) * sizeof *a.probs);
    a.z2 = malloc((size_t)(E->n_test * (d2 > 0 ? d2 : 1)) * sizeof *a.z2);
    a.label = malloc((size_t)E->n_test * sizeof *a.label);
    float *xr = malloc((size_t)(3 * S * S) * sizeof *xr);
    gx_status s = a.probs && a.z2 && a.label && xr ? GX_OK : gx_err_set(err, GX_ERR_NOMEM, "eval: out of memory");
    if (s == GX_OK) s = gx_loader_start_epoch(E->L, 0, err);
    gx_ctx *ctx = &E->ctx;
    ctx->grad_enabled = 0;
    gx_batch b;
    int rc = 0;
    double t0 = gx_train_now();
    while (s == GX_OK && (rc = gx_loader_next(E->L, &b, err)) == 1) {
        gx_tensor *x = gx_tensor_new_host(ctx, 4, GX_SHAPE(b.n, 3, S, S));
        for (int64_t i = 0; i < x->numel; i++) x->data[i] = (gx_real)b.x[i];
        gx_cf_out out = gx_cf_forward(ctx, &E->m, gx_to_ctx(ctx, x), 0.0, NULL, 1);
        gx_cf_out ho = gx_eval_cf_out_host(ctx, &out);
        ec_cls_add(&a, &ho, &b, K, S, d2, xr);
        gx_ctx_reset(ctx);
    }
    double dt = gx_train_now() - t0;
    if (s == GX_OK && rc < 0) s = GX_ERR_IO;
    if (s == GX_OK) s = gx_metrics_classify(a.probs, a.label, a.n, (int)K, &r->cls, err);
    if (s == GX_OK) {
        r->n = a.n;
        r->nll = ec_mean(a.nll, a.n);
        r->rec_msd = ec_mean(a.msd, a.n);
        r->rec_ssim = ec_mean(a.ssim, a.n_ssim);
        r->z2_class_probe = gx_metric_centroid_probe(a.z2, a.label, a.n, d2, (int)K);   /* NaN when d2 is 0 */
        r->images_per_s = dt > 0 ? (double)a.n / dt : NAN;
        r->n_params = gx_params_count(&E->m.params, 0);
    }
    free(a.probs);
    free(a.z2);
    free(a.label);
    free(xr);
    return s;
}

/* ================================================== pass 2: counterfactuals */

/* The judge's classes of n images xs [n,3,S,S] (resized to its input size
 * when that differs, as the trainer's judge does) into pred. */
static gx_status ec_judge(ec_env *E, const float *xs, int64_t n, int64_t *pred, gx_err *err) {
    return gx_cf_judge_classes(&E->ctx, &E->judge, xs, n, E->m.cfg.size, pred, err);
}

/* Sums over counterfactuals, in the order of the result's cf fields. */
enum { EC_HID, EC_REENC, EC_JUDGE, EC_FALLBACK, EC_MSD_XCF, EC_SSIM_XCF, EC_MSD_RCF, EC_SSIM_RCF,
       EC_MSD_XR, EC_SSIM_XR, EC_BG_OUT, EC_BG_IN, EC_BG_OK, EC_JUDGE_X, EC_JUDGE_REC, EC_JUDGE_SAME, EC_NS };

typedef struct ec_cf_work {
    float   *xrec, *xcf, *xj, *img;    /* [px], [K*px], [(K+1)*px], [S*S] */
    int32_t *seg;                      /* [S*S] */
    double   sum[EC_NS];
    int64_t  count, n_bg, images;
} ec_cf_work;

static void ec_cf_work_free(ec_cf_work *w) {
    free(w->xrec); free(w->xcf); free(w->xj); free(w->img); free(w->seg);
}

/* The K-1 counterfactuals of one image x [3,S,S] (true class y) into w's
 * sums. With a judge, x and x~ go into the judge's batch too: its accuracy on
 * the inputs and on their reconstructions is the ceiling its agreement with
 * decoded counterfactuals can be read against. */
static gx_status ec_cf_image(ec_env *E, const float *x, int32_t y, ec_cf_work *w, gx_err *err) {
    const int64_t K = E->m.cfg.classes, S = E->m.cfg.size, px = 3 * S * S;
    int64_t targets[GX_CF_MAX_CLASSES] = { 0 }, jpred[GX_CF_MAX_CLASSES + 1];
    gx_cf_result res[GX_CF_MAX_CLASSES];
    for (int64_t c = 0; c < K; c++) targets[c] = c;
    gx_status s = gx_cf_counterfactuals(&E->ctx, &E->m, x, targets, (int)K, w->xrec, w->xcf, res, err);
    int found = 0;
    if (s == GX_OK) s = gx_eval_cf_segment(x, (int)S, w->img, w->seg, &found, err);
    int64_t nj = 0;
    for (int64_t t = 0; s == GX_OK && t < K; t++) {
        const gx_cf_result *r = &res[t];
        if (r->target == r->source) continue;
        const float *xc = w->xcf + t * px;
        double v[EC_BG_OUT] = { r->reached_hidden, r->reached_reencoded, 0, r->fallback == 1, r->msd_x_cf,
                                r->ssim_x_cf, r->msd_rec_cf, r->ssim_rec_cf, r->msd_x_rec, r->ssim_x_rec };
        for (int k = 0; k < EC_BG_OUT; k++) w->sum[k] += v[k];
        double bo, bi;
        if (found && ec_bg_means(w->seg, w->xrec, xc, (int)S, &bo, &bi)) {
            w->sum[EC_BG_OUT] += bo;
            w->sum[EC_BG_IN] += bi;
            w->sum[EC_BG_OK] += bo <= GX_EVAL_CF_BG_GOAL * bi;
            w->n_bg++;
        }
        if (E->judge_ready) memcpy(w->xj + nj * px, xc, (size_t)px * sizeof *xc);
        nj++;
        w->count++;
    }
    if (s == GX_OK && E->judge_ready) {
        /* K-1 counterfactuals, then x~ (the source slot), then x: K+1 images. */
        memcpy(w->xj + nj * px, w->xrec, (size_t)px * sizeof *x);
        memcpy(w->xj + (nj + 1) * px, x, (size_t)px * sizeof *x);
        s = ec_judge(E, w->xj, nj + 2, jpred, err);
        for (int64_t t = 0, k = 0; s == GX_OK && t < K; t++)
            if (res[t].target != res[t].source) {
                w->sum[EC_JUDGE_SAME] += jpred[k] == jpred[nj];
                w->sum[EC_JUDGE] += jpred[k++] == res[t].target;
            }
        if (s == GX_OK) {
            w->sum[EC_JUDGE_REC] += jpred[nj] == y;
            w->sum[EC_JUDGE_X] += jpred[nj + 1] == y;
        }
    }
    w->images++;
    return s;
}

static gx_status ec_counterfactuals(ec_env *E, gx_eval_cf_result *r, gx_err *err) {
    const int64_t K = E->m.cfg.classes, S = E->m.cfg.size, px = 3 * S * S;
    const int64_t limit = E->o->cf_n > 0 && E->o->cf_n < E->n_test ? E->o->cf_n : E->n_test;
    ec_cf_work w;
    memset(&w, 0, sizeof w);
    w.xrec = malloc((size_t)px * sizeof *w.xrec);
    w.xcf = malloc((size_t)(K * px) * sizeof *w.xcf);
    w.xj = malloc((size_t)((K + 1) * px) * sizeof *w.xj);
    w.img = malloc((size_t)(S * S) * sizeof *w.img);
    w.seg = malloc((size_t)(S * S) * sizeof *w.seg);
    gx_status s = w.xrec && w.xcf && w.xj && w.img && w.seg
                ? GX_OK : gx_err_set(err, GX_ERR_NOMEM, "eval: counterfactuals: out of memory");
    if (s == GX_OK) s = gx_loader_start_epoch(E->L, 0, err);
    gx_batch b;
    int rc = 0;
    while (s == GX_OK && w.images < limit && (rc = gx_loader_next(E->L, &b, err)) == 1)
        for (int64_t i = 0; s == GX_OK && i < b.n && w.images < limit; i++)
            s = ec_cf_image(E, b.x + i * px, b.label[i], &w, err);
    if (s == GX_OK && rc < 0) s = GX_ERR_IO;
    if (s == GX_OK) {
        double *f[EC_BG_OUT] = { &r->cf_valid_hidden, &r->cf_valid_reencoded, &r->cf_valid_judge, &r->cf_fallback,
                                 &r->cf_msd_x_cf, &r->cf_ssim_x_cf, &r->cf_msd_rec_cf, &r->cf_ssim_rec_cf,
                                 &r->cf_msd_x_rec, &r->cf_ssim_x_rec };
        for (int k = 0; k < EC_BG_OUT; k++) *f[k] = ec_mean(w.sum[k], w.count);
        r->judge_acc_x = E->judge_ready ? ec_mean(w.sum[EC_JUDGE_X], w.images) : NAN;
        r->judge_acc_rec = E->judge_ready ? ec_mean(w.sum[EC_JUDGE_REC], w.images) : NAN;
        r->cf_judge_unchanged = E->judge_ready ? ec_mean(w.sum[EC_JUDGE_SAME], w.count) : NAN;
        if (!E->judge_ready) r->cf_valid_judge = NAN;
        r->cf_images = w.images;
        r->cf_count = w.count;
        r->cf_bg_n = w.n_bg;
        r->cf_bg_out = ec_mean(w.sum[EC_BG_OUT], w.n_bg);
        r->cf_bg_in = ec_mean(w.sum[EC_BG_IN], w.n_bg);
        r->cf_bg_ratio = r->cf_bg_in > 0 ? r->cf_bg_out / r->cf_bg_in : NAN;
        r->cf_bg_frac_ok = ec_mean(w.sum[EC_BG_OK], w.n_bg);
    }
    ec_cf_work_free(&w);
    return s;
}

/* ==================================================================== grid */

typedef struct ec_canvas {
    float *px;                 /* [3,H,W] */
    int    H, W, tile, gap, scale;
} ec_canvas;

/* Tile (row, col) of block b (0 upper, 1 lower) at its top-left corner. */
static void ec_tile_origin(const ec_canvas *c, int rows, int b, int row, int col, int *y0, int *x0) {
    int band = 3 * c->gap;         /* between the blocks */
    *y0 = b * (rows * (c->tile + c->gap) + band) + row * (c->tile + c->gap) + c->gap;
    *x0 = col * (c->tile + c->gap) + c->gap;
}

/* Paints an S x S tile from rgb(i) (i = pixel index), enlarged by scale. */
static void ec_paint(ec_canvas *c, int y0, int x0, int S, const float *img, const float *mono, double range,
                     const int32_t *mask) {
    int64_t plane = (int64_t)c->H * c->W;
    for (int y = 0; y < S * c->scale; y++)
        for (int x = 0; x < S * c->scale; x++) {
            int64_t i = (int64_t)(y / c->scale) * S + x / c->scale, o = (int64_t)(y0 + y) * c->W + x0 + x;
            float v[3];
            if (img) {
                for (int k = 0; k < 3; k++) v[k] = img[k * S * S + i];
            } else if (mask) {
                v[0] = v[1] = v[2] = mask[i] ? 0.85f : 0.15f;
            } else {
                uint8_t rgb[3];
                gx_png_diverging_color(range > 0 ? mono[i] / range : 0, rgb);
                for (int k = 0; k < 3; k++) v[k] = rgb[k] / 255.0f;
            }
            for (int k = 0; k < 3; k++) c->px[k * plane + o] = v[k];
        }
}

/* The first test image of each true class (xs [K,3,S,S], have[K]). */
static gx_status ec_grid_inputs(ec_env *E, float *xs, int *have, gx_err *err) {
    const int64_t K = E->m.cfg.classes, px = 3 * E->m.cfg.size * E->m.cfg.size;
    int64_t got = 0;
    gx_status s = gx_loader_start_epoch(E->L, 0, err);
    gx_batch b;
    int rc = 0;
    while (s == GX_OK && got < K && (rc = gx_loader_next(E->L, &b, err)) == 1)
        for (int64_t i = 0; i < b.n; i++) {
            int32_t c = b.label[i];
            if (c < 0 || c >= K || have[c]) continue;
            memcpy(xs + c * px, b.x + i * px, (size_t)px * sizeof *xs);
            have[c] = 1;
            got++;
        }
    return s == GX_OK && rc < 0 ? GX_ERR_IO : s;
}

static gx_status ec_write_file(const char *path, const uint8_t *buf, size_t n, gx_err *err) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return gx_err_set(err, GX_ERR_IO, "--grid %s: cannot write", path);
    int bad = fwrite(buf, 1, n, f) != n;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        remove(tmp);
        return gx_err_set(err, GX_ERR_IO, "--grid %s: write failed", path);
    }
    return GX_OK;
}

/* Counterfactuals of the grid's inputs and the canvas (see the header). */
static gx_status ec_grid_render(ec_env *E, const float *xs, const int *have, int rows, ec_canvas *cv,
                                double *range, gx_err *err) {
    const int64_t K = E->m.cfg.classes, S = E->m.cfg.size, px = 3 * S * S;
    int64_t targets[GX_CF_MAX_CLASSES] = { 0 };
    gx_cf_result res[GX_CF_MAX_CLASSES];
    for (int64_t c = 0; c < K; c++) targets[c] = c;
    float *cf = malloc((size_t)(K * K * px) * sizeof *cf), *rec = malloc((size_t)(K * px) * sizeof *rec);
    float *d = malloc((size_t)(S * S) * sizeof *d), *img = malloc((size_t)(S * S) * sizeof *img);
    int32_t *seg = malloc((size_t)(S * S) * sizeof *seg);
    gx_status s = cf && rec && d && img && seg ? GX_OK : gx_err_set(err, GX_ERR_NOMEM, "--grid: out of memory");
    *range = 0;
    for (int64_t c = 0; s == GX_OK && c < K; c++)
        if (have[c]) s = gx_cf_counterfactuals(&E->ctx, &E->m, xs + c * px, targets, (int)K, rec + c * px,
                                               cf + c * K * px, res, err);
    for (int64_t c = 0; s == GX_OK && c < K; c++)
        for (int64_t t = 0; have[c] && t < K; t++)
            for (int64_t i = 0; i < S * S; i++) {
                const float *a = cf + (c * K + t) * px, *r = rec + c * px;
                double v = fabs((a[i] + a[S * S + i] + a[2 * S * S + i] - r[i] - r[S * S + i] - r[2 * S * S + i]) / 3);
                *range = v > *range ? v : *range;
            }
    for (int64_t c = 0, row = 0; s == GX_OK && c < K; c++) {
        if (!have[c]) continue;
        int y0, x0, found = 0;
        ec_tile_origin(cv, rows, 0, (int)row, 0, &y0, &x0);
        ec_paint(cv, y0, x0, (int)S, xs + c * px, NULL, 0, NULL);
        s = gx_eval_cf_segment(xs + c * px, (int)S, img, seg, &found, err);
        ec_tile_origin(cv, rows, 1, (int)row, 0, &y0, &x0);
        if (s == GX_OK) ec_paint(cv, y0, x0, (int)S, NULL, NULL, 0, seg);
        for (int64_t t = 0; s == GX_OK && t < K; t++) {
            const float *a = cf + (c * K + t) * px, *r = rec + c * px;
            ec_tile_origin(cv, rows, 0, (int)row, (int)t + 1, &y0, &x0);
            ec_paint(cv, y0, x0, (int)S, a, NULL, 0, NULL);
            for (int64_t i = 0; i < S * S; i++)
                d[i] = (a[i] + a[S * S + i] + a[2 * S * S + i] - r[i] - r[S * S + i] - r[2 * S * S + i]) / 3;
            ec_tile_origin(cv, rows, 1, (int)row, (int)t + 1, &y0, &x0);
            ec_paint(cv, y0, x0, (int)S, NULL, d, *range, NULL);
        }
        row++;
    }
    free(cf); free(rec); free(d); free(img); free(seg);
    return s;
}

static gx_status ec_grid(ec_env *E, gx_err *err) {
    const gx_eval_cf_opts *o = E->o;
    const int64_t K = E->m.cfg.classes, S = E->m.cfg.size;
    int have[GX_CF_MAX_CLASSES] = { 0 }, rows = 0;
    float *xs = malloc((size_t)(K * 3 * S * S) * sizeof *xs);
    if (!xs) return gx_err_set(err, GX_ERR_NOMEM, "--grid: out of memory");
    gx_status s = ec_grid_inputs(E, xs, have, err);
    for (int64_t c = 0; c < K; c++) rows += have[c];
    ec_canvas cv = { NULL, 0, 0, 0, 2, o->grid_scale > 0 ? o->grid_scale : 3 };
    cv.tile = (int)S * cv.scale;
    cv.W = (int)(K + 1) * (cv.tile + cv.gap) + cv.gap;
    cv.H = 2 * rows * (cv.tile + cv.gap) + 3 * cv.gap + cv.gap;
    if (s == GX_OK && rows == 0) s = gx_err_set(err, GX_ERR_INVALID, "--grid: the test part has no image");
    if (s == GX_OK && !(cv.px = malloc((size_t)3 * cv.H * cv.W * sizeof *cv.px)))
        s = gx_err_set(err, GX_ERR_NOMEM, "--grid: out of memory");
    for (int64_t i = 0; s == GX_OK && i < (int64_t)3 * cv.H * cv.W; i++) cv.px[i] = 1.0f;
    double range = 0;
    if (s == GX_OK) s = ec_grid_render(E, xs, have, rows, &cv, &range, err);
    uint8_t *png = NULL;
    size_t n = 0;
    if (s == GX_OK) s = gx_png_encode(cv.px, 3, cv.H, cv.W, &png, &n, err);
    if (s == GX_OK) s = ec_write_file(o->grid_path, png, n, err);
    if (s == GX_OK && o->print)
        fprintf(o->print, "grid: %s (%d rows, %dx%d px; difference range +-%.4f)\n", o->grid_path, rows, cv.W, cv.H,
                range);
    free(png);
    free(cv.px);
    free(xs);
    return s;
}

/* ================================================================== report */

static void ec_print(FILE *f, const gx_eval_cf_result *r, const gx_eval_cf_opts *o) {
    if (!f) return;
    const gx_cls_metrics *c = &r->cls;
    fprintf(f, "cf-inn %s on the test part of %s (split seed %lld): %lld images\n", o->checkpoint, o->data,
            (long long)r->split_seed, (long long)r->n);
    fprintf(f, "  accuracy %.4f  auc macro %.4f micro %.4f  ap macro %.4f  nll %.3f\n  recall:", c->accuracy,
            c->auc_macro, c->auc_micro, c->ap_macro, r->nll);
    for (int k = 0; k < c->k; k++) fprintf(f, " %d:%.3f", k, c->recall[k]);
    fprintf(f, "\n  reconstruction: SSIM %.4f  MSD %.5f   (%.1f images/s)\n", r->rec_ssim, r->rec_msd, r->images_per_s);
    fprintf(f, "  z2 (the spec's class-independent part): nearest class mean finds the class of %.4f "
            "(chance about %.3f)\n", r->z2_class_probe, c->k > 0 ? 1.0 / c->k : NAN);
    fprintf(f, "counterfactuals: %lld (%lld images x their other classes)\n", (long long)r->cf_count,
            (long long)r->cf_images);
    fprintf(f, "  valid: hidden %.4f  re-encoded %.4f  judge %.4f  fallback %.4f\n", r->cf_valid_hidden,
            r->cf_valid_reencoded, r->cf_valid_judge, r->cf_fallback);
    if (isfinite(r->judge_acc_x))
        fprintf(f, "  judge accuracy: inputs x %.4f  reconstructions x~ %.4f; counterfactuals it classes as x~ %.4f\n",
                r->judge_acc_x, r->judge_acc_rec, r->cf_judge_unchanged);
    fprintf(f, "  MSD / SSIM: (x, x_cf) %.5f / %.4f  (x~, x_cf) %.5f / %.4f  (x, x~) %.5f / %.4f\n", r->cf_msd_x_cf,
            r->cf_ssim_x_cf, r->cf_msd_rec_cf, r->cf_ssim_rec_cf, r->cf_msd_x_rec, r->cf_ssim_x_rec);
    fprintf(f, "  background: mean |x_cf - x~| outside %.5f, inside %.5f, ratio %.4f (goal <= %.2f); "
            "%.1f%% of %lld counterfactuals at or under the goal\n", r->cf_bg_out, r->cf_bg_in, r->cf_bg_ratio,
            GX_EVAL_CF_BG_GOAL, 100 * r->cf_bg_frac_ok, (long long)r->cf_bg_n);
}

/* Rows under the checkpoint's run and epoch, split "test". */
static gx_status ec_store(const gx_eval_cf_opts *o, const gx_eval_cf_result *r, gx_err *err) {
    gx_train_rows *w = calloc(1, sizeof *w);
    if (!w) return gx_err_set(err, GX_ERR_NOMEM, "eval: out of memory");
    ec_fill_rows(r, w);
    gx_db *db = NULL;
    gx_err e2;
    gx_status s = gx_db_open(&db, o->db_path, &e2);
    if (s != GX_OK) gx_err_set(err, s, "--db %s: %s", o->db_path, e2.msg);
    else if (r->run_id > 0 && (s = gx_db_metrics_put(db, r->run_id, r->epoch, w->row, w->n, &e2)) != GX_OK)
        gx_err_set(err, s, "--db %s: run %lld: %s", o->db_path, (long long)r->run_id, e2.msg);
    else if (r->run_id <= 0 && o->print)
        fprintf(o->print, "(checkpoint has no run id: nothing stored)\n");
    gx_db_close(db);
    free(w);
    return s;
}

gx_status gx_eval_cf(const gx_eval_cf_opts *o, gx_eval_cf_result *r, gx_err *err) {
    memset(r, 0, sizeof *r);
    r->run_id = -1;
    if (!o->checkpoint || !o->data)
        return gx_err_set(err, GX_ERR_INVALID, "eval: --checkpoint and --data are required");
    ec_env *E = calloc(1, sizeof *E);
    if (!E) return gx_err_set(err, GX_ERR_NOMEM, "eval: out of memory");
    E->o = o;
    gx_ctx_init(&E->ctx, 64u << 20);
    gx_status s = ec_open(E, r, err);
    /* On the device: the CF-INN and the judge go up once; the passes move
     * their inputs there and read what the metrics need back (as the
     * trainer's validation does). A device error fails the eval. */
    if (s == GX_OK) s = gx_train_device_open_tf32(&E->dev, o->device, o->tf32, err);
    if (s == GX_OK) s = gx_train_device_params(&E->dev, &E->m.params, "the cf-inn model", err);
    if (s == GX_OK && E->judge_ready) s = gx_train_device_params(&E->dev, &E->judge.params, "the judge", err);
    if (s == GX_OK) gx_train_device_ctx(&E->dev, &E->ctx);
    if (s == GX_OK) s = ec_classify(E, r, err);
    if (s == GX_OK) s = gx_train_device_sync(&E->dev, err);
    if (s == GX_OK) s = ec_counterfactuals(E, r, err);
    if (s == GX_OK) s = gx_train_device_sync(&E->dev, err);
    if (s == GX_OK) ec_print(o->print, r, o);
    if (s == GX_OK && o->grid_path) s = ec_grid(E, err);
    if (s == GX_OK && o->grid_path) s = gx_train_device_sync(&E->dev, err);
    if (s == GX_OK && o->db_path) s = ec_store(o, r, err);
    ec_close(E);
    free(E);
    return s;
}

/* ================================================================== bundle */

gx_status gx_checkpoint_model_kind(const char *path, char *buf, size_t n, gx_err *err) {
    gx_st_file f;
    memset(&f, 0, sizeof f);
    gx_err e2;
    gx_status s = gx_st_read(&f, path, &e2);
    if (s != GX_OK) return gx_err_set(err, s, "--checkpoint %s: %s", path, e2.msg);
    const char *k = gx_st_meta(&f, "model");
    if (!k) s = gx_err_set(err, GX_ERR_FORMAT, "--checkpoint %s: no metadata 'model'", path);
    else snprintf(buf, n, "%s", k);
    gx_st_close(&f);
    return s;
}

gx_status gx_cf_bundle_write(const gx_cf_bundle_opts *o, gx_eval_cf_result *res, gx_err *err) {
    if (!o->checkpoint) return gx_err_set(err, GX_ERR_INVALID, "--checkpoint is required");
    if (!o->data) return gx_err_set(err, GX_ERR_INVALID, "--data is required");
    if (!o->out) return gx_err_set(err, GX_ERR_INVALID, "--out is required");
    gx_eval_cf_opts eo;
    gx_eval_cf_opts_default(&eo);
    eo.checkpoint = o->checkpoint;
    eo.data = o->data;
    eo.judge = o->judge;
    eo.cf_n = o->cf_n;
    eo.split_seed = o->split_seed;
    eo.db_path = o->db_path;
    eo.grid_path = o->grid_path;
    if (o->batch > 0) eo.batch = o->batch;
    eo.print = o->print;
    eo.device = o->device;
    eo.tf32 = o->tf32;
    gx_eval_cf_result r;
    gx_status s = gx_eval_cf(&eo, &r, err);
    if (s != GX_OK) return s;
    if (res) *res = r;
    char *js = gx_eval_cf_metrics_json(&r, o->data, o->judge);
    if (!js) return gx_err_set(err, GX_ERR_NOMEM, "bundle: out of memory");
    /* gx_cf_load refuses a longer test_metrics: never write one it cannot read. */
    if (strlen(js) >= sizeof ((gx_cf_meta *)0)->test_metrics_json) {
        size_t len = strlen(js);
        free(js);
        return gx_err_set(err, GX_ERR_INVALID, "bundle: test_metrics is %zu bytes, more than a checkpoint holds", len);
    }
    /* The cf-inn checkpoint has a "test_metrics" ("{}"): the new one goes last. */
    int n_tensors = 0;
    s = gx_bundle_copy(o->checkpoint, o->out, "test_metrics", js, &n_tensors, err);
    if (s == GX_OK && o->print)
        fprintf(o->print, "wrote %s: %d tensors, test accuracy %.4f on %lld test objects, %lld counterfactuals\n",
                o->out, n_tensors, r.cls.accuracy, (long long)r.n, (long long)r.cf_count);
    free(js);
    return s;
}
