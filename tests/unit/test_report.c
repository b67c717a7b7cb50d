/*
 * test_report.c — the bias-correction experiment's pieces and the reports:
 *   - z_train=spec_selected: option parsing; refused (naming the file) on a
 *     Galaxy10-layout file without the column; with every flag 0 the
 *     training redshift terms are exactly 0 while validation still scores
 *     redshifts; with mixed flags the weights equal those of a run on a
 *     copy of the file whose unselected redshifts are NaN (the option is
 *     "missing redshift for unselected training objects", nothing else),
 *     while validation keeps every object; the run's config records it;
 *   - galaxy-train bundle: the copy holds the same tensors byte for byte
 *     and every metadata key, loads into a model with gx_params_load
 *     (strict), and its test_metrics JSON matches an independent eval;
 *   - reports from a database filled by hand: labels from the loss switches,
 *     newest test epoch, "—" for missing values, relative column, bins,
 *     the compare table's model labels and formats, unknown run ids.
 */
#include "gx_test.h"
#include "test_fixture_util.h"
#include "gx_db.h"
#include "gx_report.h"
#include "gx_synth.h"
#include "gx_train_wm.h"
#include "gx_wm_loss.h"

#include <hdf5.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

static const char *rp_nz(const char *s) { return s ? s : ""; }

static int rp_copy(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    char buf[65536];
    size_t k;
    int ok = a && b;
    while (ok && (k = fread(buf, 1, sizeof buf, a)) > 0) ok = fwrite(buf, 1, k, b) == k;
    if (a) fclose(a);
    if (b && fclose(b) != 0) ok = 0;
    return ok;
}

/* Reads (and, with `put`, overwrites) a 1-D dataset of the HDF5 file. */
static int rp_h5(const char *path, const char *name, hid_t type, void *data, int put) {
    hid_t f = H5Fopen(path, put ? H5F_ACC_RDWR : H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return 0;
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    herr_t e = d < 0 ? -1 : put ? H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data)
                                : H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (d >= 0) H5Dclose(d);
    H5Fclose(f);
    return e >= 0;
}

static double rp_metric(gx_db *db, int64_t run, int epoch, const char *split, const char *name) {
    int ep[64], n = 0;
    double v[64];
    gx_err err;
    if (gx_db_metric_get(db, run, split, name, ep, v, 64, &n, &err) != GX_OK) return NAN;
    for (int i = 0; i < n && i < 64; i++)
        if (ep[i] == epoch) return v[i];
    return NAN;
}

/* Every tensor of two safetensors files equal byte for byte. */
static int rp_same_tensors(const char *pa, const char *pb) {
    gx_st_file a, b;
    gx_err err;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    int ok = gx_st_read(&a, pa, &err) == GX_OK && gx_st_read(&b, pb, &err) == GX_OK && a.n == b.n && a.n > 0;
    for (int i = 0; ok && i < a.n; i++) {
        const gx_st_tensor *t = gx_st_find(&b, a.tensors[i].name);
        ok = t && t->dtype == a.tensors[i].dtype && t->nbytes == a.tensors[i].nbytes &&
             !memcmp(t->data, a.tensors[i].data, t->nbytes);
    }
    gx_st_close(&a);
    gx_st_close(&b);
    return ok;
}

/* ------------------------------------------------- z_train fixture */

#define RP_N 48

typedef struct {
    int ready, ok;
    char dir[64], db[128];
    char zero[128], mixed[128], nanz[128];   /* flags all 0; i % 2; mixed with NaN z */
    char out_zero[128], out_mixed[128], out_nanz[128];
    gx_train_wm_result r_zero, r_mixed, r_nanz;
} rp_fixture;

static rp_fixture RPX;

static void rp_cleanup(void) { tfx_rmtree(RPX.dir); }

static void rp_opts(gx_train_wm_opts *o, const char *data, const char *out) {
    gx_err err;
    gx_train_wm_opts_default(o, "tiny", &err);
    o->data = data;
    o->db_path = RPX.db;
    o->out_dir = out;
    o->epochs = 1;
    o->batch = 8;
    o->accum = 1;
    o->seed = 3;
    o->progress = 0;
    o->warmup_epochs = 0;
    /* HK on from the first epoch, so its term is exercised too. */
    o->loss.hk_weight_max = 0.3;
    o->loss.hk_start_epoch = 0;
    o->loss.hk_ramp_end_epoch = 0;
    o->loss.sk_iters = 10;
}

static int rp_train(gx_test_state *T, const char *data, const char *out, int spec, gx_train_wm_result *r) {
    gx_train_wm_opts o;
    gx_err err;
    rp_opts(&o, data, out);
    CHECK(gx_train_wm_set(&o, "z_train", spec ? "spec_selected" : "all", &err) == GX_OK);
    gx_status s = gx_train_wm(&o, r, &err);
    CHECK_MSG(s == GX_OK, "train %s: %s", data, err.msg);
    return s == GX_OK;
}

/* Three copies of one rendered survey with rewritten flags / redshifts,
 * and one training run on each. */
static rp_fixture *rp_get(gx_test_state *T) {
    if (RPX.ready) return RPX.ok ? &RPX : NULL;
    RPX.ready = 1;
    snprintf(RPX.dir, sizeof RPX.dir, "/tmp/gx_report_XXXXXX");
    if (!mkdtemp(RPX.dir)) { CHECK_MSG(0, "mkdtemp failed"); RPX.dir[0] = 0; return NULL; }
    atexit(rp_cleanup);
    snprintf(RPX.db, sizeof RPX.db, "%s/runs.sqlite", RPX.dir);
    snprintf(RPX.zero, sizeof RPX.zero, "%s/zero.h5", RPX.dir);
    snprintf(RPX.mixed, sizeof RPX.mixed, "%s/mixed.h5", RPX.dir);
    snprintf(RPX.nanz, sizeof RPX.nanz, "%s/nanz.h5", RPX.dir);
    snprintf(RPX.out_zero, sizeof RPX.out_zero, "%s/out_zero", RPX.dir);
    snprintf(RPX.out_mixed, sizeof RPX.out_mixed, "%s/out_mixed", RPX.dir);
    snprintf(RPX.out_nanz, sizeof RPX.out_nanz, "%s/out_nanz", RPX.dir);
    gx_err err;
    gx_status s = tfx_synth_small(RPX.zero, 9, RP_N, "test_report", &err);
    CHECK_MSG(s == GX_OK, "synth: %s", err.msg);
    if (s != GX_OK) return NULL;
    uint8_t flag[RP_N];
    double z[RP_N];
    int ok = rp_copy(RPX.zero, RPX.mixed) && rp_copy(RPX.zero, RPX.nanz);
    ok = ok && rp_h5(RPX.zero, "redshift", H5T_NATIVE_DOUBLE, z, 0);
    for (int i = 0; i < RP_N; i++) flag[i] = 0;
    ok = ok && rp_h5(RPX.zero, "spec_selected", H5T_NATIVE_UINT8, flag, 1);
    for (int i = 0; i < RP_N; i++) flag[i] = (uint8_t)(i % 2);
    ok = ok && rp_h5(RPX.mixed, "spec_selected", H5T_NATIVE_UINT8, flag, 1);
    ok = ok && rp_h5(RPX.nanz, "spec_selected", H5T_NATIVE_UINT8, flag, 1);
    for (int i = 0; i < RP_N; i++) if (!flag[i]) z[i] = NAN;
    ok = ok && rp_h5(RPX.nanz, "redshift", H5T_NATIVE_DOUBLE, z, 1);
    CHECK_MSG(ok, "rewriting the HDF5 copies failed");
    if (!ok) return NULL;
    ok = rp_train(T, RPX.zero, RPX.out_zero, 1, &RPX.r_zero) &&
         rp_train(T, RPX.mixed, RPX.out_mixed, 1, &RPX.r_mixed) &&
         rp_train(T, RPX.nanz, RPX.out_nanz, 0, &RPX.r_nanz);
    RPX.ok = ok;
    return ok ? &RPX : NULL;
}

/* ---------------------------------------------------------- z_train */

GX_TEST(report_z_train_option) {
    gx_train_wm_opts o;
    gx_err err;
    CHECK(gx_train_wm_opts_default(&o, "tiny", &err) == GX_OK);
    CHECK(o.z_train_spec == 0 && o.loss.colour_weights == 1);
    CHECK(gx_train_wm_set(&o, "z_train", "spec_selected", &err) == GX_OK && o.z_train_spec == 1);
    CHECK(gx_train_wm_set(&o, "z_train", "all", &err) == GX_OK && o.z_train_spec == 0);
    CHECK(gx_train_wm_set(&o, "z_train", "spectro", &err) == GX_ERR_INVALID);
    CHECK_MSG(strstr(err.msg, "z_train") && strstr(err.msg, "spectro"), "%s", err.msg);
    CHECK(gx_train_wm_set(&o, "colour_weights", "0", &err) == GX_OK && o.loss.colour_weights == 0);
    /* A Galaxy10-layout file has no spec_selected column: refused by name. */
    char data[512], dir[64] = "/tmp/gx_report_g10_XXXXXX", db[128];
    const char *fx = getenv("GX_FIXTURE_DIR");
    snprintf(data, sizeof data, "%s/io/galaxy10_plain.h5", fx ? fx : "tests/fixtures");
    if (!mkdtemp(dir)) { CHECK_MSG(0, "mkdtemp"); return; }
    snprintf(db, sizeof db, "%s/runs.sqlite", dir);
    gx_train_wm_opts_default(&o, "tiny", &err);
    o.data = data; o.db_path = db; o.out_dir = dir; o.epochs = 1; o.batch = 4; o.progress = 0;
    gx_train_wm_set(&o, "z_train", "spec_selected", &err);
    gx_train_wm_result r;
    CHECK(gx_train_wm(&o, &r, &err) == GX_ERR_INVALID);
    CHECK_MSG(strstr(err.msg, "galaxy10_plain.h5") && strstr(err.msg, "spec_selected"), "%s", err.msg);
    /* A bad colour_weights value is named. */
    o.z_train_spec = 0;
    o.loss.colour_weights = 2;
    CHECK(gx_train_wm(&o, &r, &err) == GX_ERR_INVALID);
    CHECK_MSG(strstr(err.msg, "colour_weights") != NULL, "%s", err.msg);
    tfx_rmtree(dir);
}

GX_TEST(report_z_train_unselected_leave_redshift_terms) {
    rp_fixture *F = rp_get(T);
    if (!F) return;
    gx_db *db;
    gx_err err;
    CHECK(gx_db_open(&db, F->db, &err) == GX_OK);
    /* Every flag 0: no training object has a redshift, so red and HK are
     * exactly 0, but validation still scores every object. */
    int64_t rz = F->r_zero.run_id;
    CHECK(rp_metric(db, rz, 0, "train", "loss_red") == 0.0);
    CHECK(rp_metric(db, rz, 0, "train", "loss_hk") == 0.0);
    CHECK(rp_metric(db, rz, 0, "val", "loss_red") > 0.0);
    CHECK(rp_metric(db, rz, 0, "val", "z_n") > 0);
    CHECK(rp_metric(db, rz, 0, "train", "loss_cls") > 0.0);
    /* Mixed flags: the selected half trains the redshift head. */
    int64_t rm = F->r_mixed.run_id, rn = F->r_nanz.run_id;
    CHECK(rp_metric(db, rm, 0, "train", "loss_red") > 0.0);
    CHECK(rp_metric(db, rm, 0, "train", "loss_hk") > 0.0);
    /* The training side equals a run whose unselected redshifts are NaN ... */
    CHECK(rp_metric(db, rm, 0, "train", "loss_red") == rp_metric(db, rn, 0, "train", "loss_red"));
    CHECK(rp_metric(db, rm, 0, "train", "loss_total") == rp_metric(db, rn, 0, "train", "loss_total"));
    char a[256], b[256];
    snprintf(a, sizeof a, "%s/last.safetensors", F->out_mixed);
    snprintf(b, sizeof b, "%s/last.safetensors", F->out_nanz);
    CHECK_MSG(rp_same_tensors(a, b), "weights of z_train=spec_selected differ from the NaN-redshift run");
    /* ... while validation keeps every object's redshift. */
    double zn_m = rp_metric(db, rm, 0, "val", "z_n"), zn_n = rp_metric(db, rn, 0, "val", "z_n");
    CHECK_MSG(zn_m > zn_n, "val z_n %g (spec_selected) vs %g (NaN copy)", zn_m, zn_n);
    /* The run's config records the setting and the loss switches. */
    char st[32];
    CHECK(gx_db_run_status(db, rm, st, sizeof st, &err) == GX_OK && !strcmp(st, "finished"));
    sqlite3_stmt *q = NULL;
    sqlite3_prepare_v2(gx_db_handle(db), "SELECT config_json FROM runs WHERE id = ?", -1, &q, NULL);
    sqlite3_bind_int64(q, 1, rm);
    CHECK(sqlite3_step(q) == SQLITE_ROW);
    json_t *j = json_loads((const char *)sqlite3_column_text(q, 0), 0, NULL);
    json_t *t = json_object_get(j, "train");
    CHECK(json_is_object(t));
    CHECK(!strcmp(rp_nz(json_string_value(json_object_get(t, "z_train"))), "spec_selected"));
    CHECK(json_integer_value(json_object_get(t, "colour_weights")) == 1);
    CHECK_NEAR(json_number_value(json_object_get(t, "hk_weight_max")), 0.3, 0);
    CHECK(json_integer_value(json_object_get(j, "d_model")) > 0);   /* the model config is still there */
    char label[32];
    CHECK(!strcmp(gx_report_loss_label((const char *)sqlite3_column_text(q, 0), label, sizeof label), "+both"));
    json_decref(j);
    sqlite3_finalize(q);
    gx_db_close(db);
}

/* --------------------------------------------- colour_weights switch */

/* red with colour_weights = 0 is the plain mean of squared log(1+z)
 * errors over samples with a redshift; with 1 it is the colour-weighted
 * sum over the same samples / their count. Checked against both formulas
 * by hand, on inputs whose colour weights are not all equal. */
GX_TEST(report_loss_colour_weights_switch) {
    enum { B = 6, K = 3, D = 2 };
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    gx_tensor *logits = gx_tensor_new(&ctx, 2, GX_SHAPE(B, K));
    gx_tensor *zh = gx_tensor_new(&ctx, 1, GX_SHAPE(B));
    gx_tensor *mu = gx_tensor_new(&ctx, 2, GX_SHAPE(B, D)), *lv = gx_tensor_new(&ctx, 2, GX_SHAPE(B, D));
    gx_tensor *pm = gx_tensor_new(&ctx, 1, GX_SHAPE(D)), *pl = gx_tensor_new(&ctx, 1, GX_SHAPE(D));
    gx_tensor *c4 = gx_tensor_new(&ctx, 2, GX_SHAPE(B, 4));
    gx_tensor *lsi = gx_tensor_scalar(&ctx, 0);
    int32_t labels[B] = { 0, 1, 2, 0, 1, 2 };
    const gx_real zt[B] = { 0.1f, 0.3f, NAN, 0.05f, 0.2f, -1.0f };      /* two without a redshift */
    const gx_real gr[B] = { 0.3f, 1.4f, 0.8f, 0.5f, 0.9f, 2.0f };
    for (int i = 0; i < B; i++) {
        for (int k = 0; k < K; k++) logits->data[i * K + k] = (gx_real)(0.1 * (i - k));
        zh->data[i] = (gx_real)(0.05 + 0.07 * i);
        for (int c = 0; c < 4; c++) c4->data[i * 4 + c] = c == 1 ? gr[i] : 0;
    }
    gx_wm_loss_in in = { .logits = logits, .labels = labels, .redshift = zh, .z_true = zt, .mu = mu,
                         .logvar = lv, .prior_mu = pm, .prior_logvar = pl, .c4 = c4, .lsi_c_log = lsi };
    gx_wm_loss_cfg cfg = gx_wm_loss_cfg_default();
    cfg.hk_weight = 0;
    double w[B], plain = 0, weighted = 0;
    gx_wm_loss_colour_weights(gr, 1, B, w);
    int n = 0, unequal = 0;
    for (int i = 0; i < B; i++) {
        if (!gx_wm_loss_has_redshift(zt[i])) continue;
        double d = log1p((double)zh->data[i]) - log1p((double)zt[i]);
        plain += d * d;
        weighted += w[i] * d * d;
        unequal |= w[i] != w[0];
        n++;
    }
    CHECK(n == 4 && unequal);
    cfg.colour_weights = 0;
    gx_wm_loss_out a = gx_wm_loss(&ctx, &cfg, &in);
    cfg.colour_weights = 1;
    gx_wm_loss_out b = gx_wm_loss(&ctx, &cfg, &in);
    CHECK(a.n_red == 4 && b.n_red == 4);
    CHECK_NEAR(a.red, plain / n, 1e-6);
    CHECK_NEAR(b.red, weighted / n, 1e-6);
    CHECK(fabs(a.red - b.red) > 1e-4);
    CHECK_NEAR(a.cls, b.cls, 0);                                        /* only red changes */
    gx_ctx_free(&ctx);
}

/* ------------------------------------------------------------- bundle */

GX_TEST(report_bundle_roundtrip) {
    rp_fixture *F = rp_get(T);
    if (!F) return;
    char ck[256], out[256];
    snprintf(ck, sizeof ck, "%s/last.safetensors", F->out_mixed);
    snprintf(out, sizeof out, "%s/bundle.safetensors", F->dir);
    gx_bundle_opts o;
    memset(&o, 0, sizeof o);
    o.checkpoint = ck; o.data = F->mixed; o.out = out; o.batch = 16;
    o.sizes[0] = 24; o.sizes[1] = 32; o.n_sizes = 2;
    gx_eval_wm_result r;
    gx_err err;
    CHECK_MSG(gx_bundle_write(&o, &r, &err) == GX_OK, "bundle: %s", err.msg);
    CHECK(rp_same_tensors(ck, out));
    gx_st_file a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    CHECK(gx_st_read(&a, ck, &err) == GX_OK);
    CHECK_MSG(gx_st_read(&b, out, &err) == GX_OK, "read bundle: %s", err.msg);
    /* Every original key kept, and exactly one more. */
    CHECK(b.n_meta == a.n_meta + 1 && !gx_st_meta(&a, "test_metrics"));
    for (int i = 0; i < a.n_meta; i++) {
        const char *v = gx_st_meta(&b, a.meta_keys[i]);
        CHECK_MSG(v && !strcmp(v, a.meta_vals[i]), "metadata %s changed", a.meta_keys[i]);
    }
    /* The weights load strictly into a model of the stored config. */
    json_t *cfgj = json_loads(rp_nz(gx_st_meta(&b, "config")), 0, NULL);
    gx_wm_config cfg = gx_wm_config_tiny();
    cfg.classes = json_integer_value(json_object_get(cfgj, "classes"));
    cfg.size = json_integer_value(json_object_get(cfgj, "size"));
    json_decref(cfgj);
    CHECK(cfg.classes >= 2);
    gx_wm_model m;
    gx_wm_init(&m, cfg, 77);
    CHECK_MSG(gx_params_load(&m.params, &b, 1, &err) == GX_OK, "load: %s", err.msg);
    int same = 1;
    for (int i = 0; i < m.params.n; i++) {
        const gx_param *p = m.params.items[i];
        const gx_st_tensor *t = gx_st_find(&a, p->name);
        if (!t || t->dtype != GX_ST_F32) { same = 0; continue; }
        const float *d = t->data;
        for (int64_t k = 0; k < p->t.numel; k++) same &= (float)p->t.data[k] == d[k];
    }
    CHECK_MSG(same, "loaded weights differ from the checkpoint");
    gx_wm_free(&m);
    /* test_metrics parses and agrees with the evaluation it came from, and
     * with an independent eval of the original checkpoint. */
    json_error_t je;
    json_t *j = json_loads(rp_nz(gx_st_meta(&b, "test_metrics")), 0, &je);
    CHECK_MSG(json_is_object(j), "test_metrics: %s", je.text);
    gx_eval_wm_opts eo;
    memset(&eo, 0, sizeof eo);
    eo.checkpoint = ck; eo.data = F->mixed; eo.batch = 16;
    gx_eval_wm_result r2;
    CHECK(gx_eval_wm(&eo, &r2, &err) == GX_OK);
    CHECK(r.n == r2.n && r.n > 0);
    CHECK_NEAR(json_number_value(json_object_get(j, "accuracy")), r2.cls.accuracy, 0);
    CHECK_NEAR(json_number_value(json_object_get(j, "z_log_mse")), r2.z.log_mse, 1e-15);
    CHECK(json_integer_value(json_object_get(j, "n_test")) == r.n);
    CHECK(json_integer_value(json_object_get(j, "z_n")) == r.z.n && r.z.n > 0);
    static const char *const keys[] = { "auc_macro", "ap_macro", "z_bias", "z_nmad", "z_outlier_rate",
                                        "z_mae", "z_r2", "size_cv", "images_per_s" };
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        json_t *v = json_object_get(j, keys[k]);
        CHECK_MSG(json_is_number(v) || json_is_null(v), "test_metrics.%s missing", keys[k]);
    }
    CHECK_NEAR(json_number_value(json_object_get(j, "z_bias")), r.z.bias, 1e-15);
    CHECK(json_array_size(json_object_get(j, "recall")) == (size_t)cfg.classes);
    CHECK(!strcmp(rp_nz(json_string_value(json_object_get(j, "data"))), "mixed.h5"));
    json_t *sa = json_object_get(j, "size_accuracy");
    CHECK(json_object_size(sa) == 2);
    CHECK_NEAR(json_number_value(json_object_get(sa, "24")), r.accuracy[0], 0);
    CHECK_NEAR(json_number_value(json_object_get(sa, "32")), r.accuracy[1], 0);
    CHECK(json_integer_value(json_object_get(j, "n_params")) == r.n_params && r.n_params > 1000);
    json_decref(j);
    gx_st_close(&a);
    gx_st_close(&b);
    /* Errors name the flag and the file. */
    o.out = "/nonexistent_dir_gx/bundle.safetensors";
    CHECK(gx_bundle_write(&o, NULL, &err) != GX_OK);
    CHECK_MSG(strstr(err.msg, "--out") && strstr(err.msg, "nonexistent_dir_gx"), "%s", err.msg);
    o.out = out;
    o.checkpoint = F->mixed;
    CHECK(gx_bundle_write(&o, NULL, &err) != GX_OK);
    CHECK_MSG(strstr(err.msg, "--checkpoint") != NULL, "%s", err.msg);
}

GX_TEST(report_bundle_metrics_json_nulls) {
    gx_eval_wm_result r;
    memset(&r, 0, sizeof r);
    r.n = 5;
    r.cls.k = 3;
    r.cls.accuracy = 0.6;
    r.cls.recall[0] = 1; r.cls.recall[1] = NAN; r.cls.recall[2] = 0.5;
    r.cls.auc_macro = NAN;
    r.z.log_mse = 0.25;
    r.z.nmad = NAN;
    r.n_sizes = 1; r.sizes[0] = 64; r.accuracy[0] = 0.6; r.cv = 0;
    char *s = gx_bundle_metrics_json(&r, "/a/b/survey.h5", 1);
    CHECK(s != NULL);
    json_t *j = json_loads(rp_nz(s), 0, NULL);
    CHECK(json_is_object(j));
    CHECK(json_is_null(json_object_get(j, "auc_macro")) && json_is_null(json_object_get(j, "z_nmad")));
    json_t *rec = json_object_get(j, "recall");
    CHECK(json_array_size(rec) == 3 && json_is_null(json_array_get(rec, 1)));
    CHECK_NEAR(json_number_value(json_array_get(rec, 2)), 0.5, 0);
    CHECK(!strcmp(rp_nz(json_string_value(json_object_get(j, "data"))), "survey.h5"));
    CHECK(!strcmp(rp_nz(json_string_value(json_object_get(j, "part"))), "all"));
    CHECK_NEAR(json_number_value(json_object_get(json_object_get(j, "size_accuracy"), "64")), 0.6, 0);
    json_decref(j);
    free(s);
}

/* ------------------------------------------------------------ reports */

static const char *rp_cfg(int colour, double hk, const char *backbone) {
    static char buf[4][512];
    static int k;
    char *b = buf[k++ % 4];
    snprintf(b, 512, "{\"d_model\":16,%s%s%s\"train\":{\"config\":\"tiny\",\"epochs\":10,"
             "\"colour_weights\":%d,\"hk_weight_max\":%g,\"hk_start_epoch\":2,\"z_train\":\"spec_selected\"}}",
             backbone ? "\"backbone\":\"" : "", backbone ? backbone : "", backbone ? "\"," : "", colour, hk);
    return b;
}

static int64_t rp_run(gx_test_state *T, gx_db *db, const char *cfg) {
    int64_t id = 0;
    gx_err err;
    CHECK_MSG(gx_db_run_begin(db, &(gx_db_run_info){ .model_kind = "wavelet-mamba", .config_json = cfg,
                                                     .seed = 1 }, &id, &err) == GX_OK, "%s", err.msg);
    return id;
}

static void rp_put(gx_test_state *T, gx_db *db, int64_t run, int epoch, const char *name, double v) {
    gx_err err;
    CHECK_MSG(gx_db_metric_put(db, run, epoch, "test", name, v, &err) == GX_OK, "%s", err.msg);
}

/* The cells of the table row that starts with "| <id> |" (NULL if none). */
static int rp_row(const char *md, int64_t id, char cells[][64], int max) {
    char key[32];
    snprintf(key, sizeof key, "\n| %lld |", (long long)id);
    const char *p = strstr(md, key);
    if (!p) return 0;
    p += 2;
    int n = 0;
    while (*p && *p != '\n' && n < max) {
        const char *e = strchr(p, '|');
        const char *nl = strchr(p, '\n');
        if (!e || (nl && nl < e)) break;
        int len = (int)(e - p);
        char c[128];
        snprintf(c, sizeof c, "%.*s", len, p);
        char *s = c, *z = c + strlen(c);
        while (*s == ' ') s++;
        while (z > s && z[-1] == ' ') *--z = 0;
        snprintf(cells[n], 64, "%s", s);
        if (p != e) n++;
        p = e + 1;
    }
    return n;
}

GX_TEST(report_loss_labels) {
    char b[32];
    CHECK(!strcmp(gx_report_loss_label(rp_cfg(0, 0, NULL), b, sizeof b), "MSE only"));
    CHECK(!strcmp(gx_report_loss_label(rp_cfg(1, 0, NULL), b, sizeof b), "+colour"));
    CHECK(!strcmp(gx_report_loss_label(rp_cfg(0, 0.3, NULL), b, sizeof b), "+HK"));
    CHECK(!strcmp(gx_report_loss_label(rp_cfg(1, 0.3, NULL), b, sizeof b), "+both"));
    /* HK scheduled to start after the last epoch never ran. */
    CHECK(!strcmp(gx_report_loss_label("{\"train\":{\"epochs\":2,\"hk_start_epoch\":2,\"hk_weight_max\":0.3,"
                                       "\"colour_weights\":0}}", b, sizeof b), "MSE only"));
    /* Absent keys take the loss defaults (colour on, HK 0.035 from epoch 2). */
    CHECK(!strcmp(gx_report_loss_label("{\"train\":{\"epochs\":5}}", b, sizeof b), "+both"));
    CHECK(!strcmp(gx_report_loss_label("{\"d_model\":16}", b, sizeof b), "?"));
    CHECK(!strcmp(gx_report_loss_label("not json", b, sizeof b), "?"));
    CHECK(gx_report_kind_parse("bias") == GX_REPORT_BIAS && gx_report_kind_parse("compare") == GX_REPORT_COMPARE);
    CHECK(gx_report_kind_parse("table") == -1);
}

GX_TEST(report_bias_table) {
    char dir[64] = "/tmp/gx_report_db_XXXXXX", path[128];
    if (!mkdtemp(dir)) { CHECK_MSG(0, "mkdtemp"); return; }
    snprintf(path, sizeof path, "%s/r.sqlite", dir);
    gx_db *db;
    gx_err err;
    CHECK(gx_db_open(&db, path, &err) == GX_OK);
    int64_t other = rp_run(T, db, rp_cfg(1, 0, NULL));       /* no test metrics: left out by default */
    gx_db_metric_put(db, other, 0, "val", "z_log_mse", 0.5, &err);
    int64_t r[4];
    const double lm[4] = { 0.020, 0.018, 0.015, 0.014 };
    for (int i = 0; i < 4; i++) {
        r[i] = rp_run(T, db, rp_cfg(i & 1, i >= 2 ? 0.3 : 0, NULL));
        /* An older evaluation (epoch 3) that the report must not use. */
        rp_put(T, db, r[i], 3, "z_log_mse", 9.0);
        rp_put(T, db, r[i], 9, "z_log_mse", lm[i]);
        rp_put(T, db, r[i], 9, "z_bias", -0.01 * (i + 1));
        rp_put(T, db, r[i], 9, "z_outlier_rate", 0.05 - 0.01 * i);
        rp_put(T, db, r[i], 9, "z_nmad", 0.03);
        rp_put(T, db, r[i], 9, "z_n", 100);
        for (int b = 0; b < 4; b++) {
            char k[32];
            snprintf(k, sizeof k, "z_bin%d_log_mse", b);
            rp_put(T, db, r[i], 9, k, b == 3 ? NAN : 0.01 * (b + 1));     /* empty top bin: NULL */
            snprintf(k, sizeof k, "z_bin%d_bias", b);
            if (!(i == 2 && b == 1)) rp_put(T, db, r[i], 9, k, 0.1 * b);   /* one value absent */
            snprintf(k, sizeof k, "z_bin%d_n", b);
            rp_put(T, db, r[i], 9, k, b == 3 ? 0 : 40 - 10 * b);
        }
        /* A bin stored with no value anywhere (no test object): not a column. */
        rp_put(T, db, r[i], 9, "z_bin4_log_mse", NAN);
        rp_put(T, db, r[i], 9, "z_bin4_bias", NAN);
        rp_put(T, db, r[i], 9, "z_bin4_n", 0);
    }
    gx_report_opts o = { .kind = GX_REPORT_BIAS, .source = path };
    char *md = NULL;
    CHECK_MSG(gx_report_markdown(db, &o, &md, &err) == GX_OK, "%s", err.msg);
    if (!md) { gx_db_close(db); return; }
    CHECK(strstr(md, "Table 3") && strstr(md, "| Run | Loss |"));
    CHECK(strstr(md, "z∈[0,0.5) log-MSE") && strstr(md, "z∈[1.5,2) bias") && !strstr(md, "bin 4 log-MSE"));
    CHECK(strstr(md, "not shown: bin 4.") != NULL);
    char c[32][64];
    static const char *const labels[4] = { "MSE only", "+colour", "+HK", "+both" };
    for (int i = 0; i < 4; i++) {
        int n = rp_row(md, r[i], c, 32);
        CHECK_MSG(n == 8 + 8, "row of run %lld has %d cells", (long long)r[i], n);
        if (n < 16) continue;
        CHECK_MSG(!strcmp(c[1], labels[i]), "run %d label '%s'", i, c[1]);
        CHECK(!strcmp(c[2], "spec_selected"));
        char want[32];
        snprintf(want, sizeof want, "%.5f", lm[i]);
        CHECK_MSG(!strcmp(c[3], want), "log-MSE cell '%s', want %s (newest epoch)", c[3], want);
        snprintf(want, sizeof want, "%+.2f%%", 100 * (lm[i] / lm[0] - 1));
        CHECK_MSG(!strcmp(c[4], i == 0 ? "(ref)" : want), "relative cell '%s'", c[4]);
        snprintf(want, sizeof want, "%+.4f", -0.01 * (i + 1));
        CHECK(!strcmp(c[5], want));
        snprintf(want, sizeof want, "%.2f%%", 100 * (0.05 - 0.01 * i));
        CHECK_MSG(!strcmp(c[6], want), "outlier cell '%s' want '%s'", c[6], want);
        CHECK(!strcmp(c[7], "0.0300"));
        CHECK(!strcmp(c[8], "0.01000") && !strcmp(c[10], "0.02000"));
        CHECK(!strcmp(c[14], "—"));                                    /* NULL bin log-MSE */
        CHECK(!strcmp(c[11], i == 2 ? "—" : "+0.1000"));               /* absent bin bias */
    }
    CHECK(rp_row(md, other, c, 32) == 0);
    CHECK(strstr(md, "epoch 10") != NULL);                             /* 1-based epoch note */
    CHECK(strstr(md, "z∈[0,0.5) 40;") != NULL);                        /* bin population */
    free(md);
    /* Asked runs, in the asked order; a run without test metrics prints dashes. */
    int64_t ids[3] = { r[3], other, r[0] };
    o.runs = ids;
    o.n_runs = 3;
    CHECK(gx_report_markdown(db, &o, &md, &err) == GX_OK);
    if (md) {
        char k3[32], k1[32], k0[32];
        snprintf(k3, sizeof k3, "\n| %lld |", (long long)r[3]);
        snprintf(k1, sizeof k1, "\n| %lld |", (long long)other);
        snprintf(k0, sizeof k0, "\n| %lld |", (long long)r[0]);
        const char *p3 = strstr(md, k3), *p1 = strstr(md, k1), *p0 = strstr(md, k0);
        CHECK(p3 && p1 && p0 && p3 < p1 && p1 < p0);
        CHECK(rp_row(md, other, c, 32) == 16 && !strcmp(c[3], "—") && !strcmp(c[1], "+colour"));
        char note[48];
        snprintf(note, sizeof note, "run %lld not evaluated", (long long)other);
        CHECK(strstr(md, note) != NULL);
        free(md);
    }
    int64_t bad[1] = { 999 };
    o.runs = bad;
    o.n_runs = 1;
    CHECK(gx_report_markdown(db, &o, &md, &err) == GX_ERR_NOTFOUND && md == NULL);
    CHECK_MSG(strstr(err.msg, "999") != NULL, "%s", err.msg);
    gx_db_close(db);
    tfx_rmtree(dir);
}

GX_TEST(report_compare_table) {
    char dir[64] = "/tmp/gx_report_db_XXXXXX", path[128];
    if (!mkdtemp(dir)) { CHECK_MSG(0, "mkdtemp"); return; }
    snprintf(path, sizeof path, "%s/r.sqlite", dir);
    gx_db *db;
    gx_err err;
    CHECK(gx_db_open(&db, path, &err) == GX_OK);
    /* Empty database: an error that says what to run. */
    gx_report_opts o = { .kind = GX_REPORT_COMPARE };
    char *md = NULL;
    CHECK(gx_report_markdown(db, &o, &md, &err) == GX_ERR_NOTFOUND);
    CHECK(strstr(err.msg, "eval") != NULL);
    int64_t a = rp_run(T, db, rp_cfg(1, 0.035, NULL));
    int64_t b = rp_run(T, db, rp_cfg(1, 0.035, "resnet18"));
    rp_put(T, db, a, 0, "n_params", 3512345);
    rp_put(T, db, a, 0, "accuracy", 0.8172);
    rp_put(T, db, a, 0, "auc_macro", 0.976);
    rp_put(T, db, a, 0, "ap_macro", 0.9);
    rp_put(T, db, a, 0, "z_log_mse", 0.0194);
    rp_put(T, db, a, 0, "z_nmad", 0.031);
    rp_put(T, db, a, 0, "z_outlier_rate", 0.02);
    rp_put(T, db, a, 0, "images_per_s", 24.3);
    rp_put(T, db, b, 0, "n_params", 11200);
    rp_put(T, db, b, 0, "accuracy", 0.79);
    CHECK(gx_report_markdown(db, &o, &md, &err) == GX_OK);
    if (!md) { gx_db_close(db); return; }
    CHECK(strstr(md, "Table 2") && strstr(md, "| Run | Model | Params |"));
    char c[16][64];
    CHECK(rp_row(md, a, c, 16) == 10);
    CHECK(!strcmp(c[1], "WaveletMamba / tiny") && !strcmp(c[2], "3.51 M") && !strcmp(c[3], "81.72%"));
    CHECK(!strcmp(c[4], "0.9760") && !strcmp(c[5], "0.9000") && !strcmp(c[6], "0.01940"));
    CHECK(!strcmp(c[7], "0.0310") && !strcmp(c[8], "2.00%") && !strcmp(c[9], "24.3"));
    CHECK(rp_row(md, b, c, 16) == 10);
    CHECK(!strcmp(c[1], "ResNet-18 / tiny") && !strcmp(c[2], "11.2 k") && !strcmp(c[3], "79.00%"));
    CHECK(!strcmp(c[4], "—") && !strcmp(c[9], "—"));
    free(md);
    gx_db_close(db);
    tfx_rmtree(dir);
}
