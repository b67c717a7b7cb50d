/*
 * test_eval_cf.c — CF-INN evaluation and bundle (trainer/gx_eval_cf.h):
 *   - the background numbers on a hand-built galaxy: |x_cf - x~| split by the
 *     segment of x (not of x_cf), exact means, no segment -> found 0;
 *   - an evaluation of a tiny trained model: the split comes from the
 *     checkpoint's split_seed, predictions equal gx_cf_classify on the same
 *     test images, counterfactual counts, the rows stored under the run
 *     (split "test"), the judge's row NULL without a judge, a checkpoint without
 *     split_seed refused unless one is given; the grid PNG's layout;
 *   - the bundle: tensors byte for byte, every metadata key kept,
 *     test_metrics = the evaluation (and readable by gx_cf_load), bundling
 *     the bundle in place replaces test_metrics instead of adding a second.
 * The fixture (60 synthetic galaxies, a 2-epoch tiny model) is built once.
 */
#include "gx_test.h"
#include "gx_cf_inn.h"
#include "gx_db.h"
#include "gx_eval_cf.h"
#include "gx_loader.h"
#include "gx_dataset.h"
#include "gx_morph.h"
#include "gx_synth.h"
#include "gx_train_cf.h"
#include "gx_train_wm.h"
#include "gx_two_models.h"

#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------- background */

/* A round galaxy (Gaussian, centre cx,cy) on a flat sky with a faint
 * deterministic ripple, [3,S,S]. */
static void blob(float *x, int S, double cx, double cy, double sig, double amp) {
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < S; y++)
            for (int i = 0; i < S; i++) {
                double r2 = (i - cx) * (i - cx) + (y - cy) * (y - cy);
                double sky = 0.05 + 0.004 * sin(1.7 * i + 2.3 * y + c);
                x[(c * S + y) * S + i] = (float)(sky + amp * (1 - 0.1 * c) * exp(-r2 / (2 * sig * sig)));
            }
}

GX_TEST(eval_cf_background_hand_built) {
    enum { S = 32 };
    static float x[3 * S * S], xrec[3 * S * S], xcf[3 * S * S], img[S * S], other[3 * S * S];
    static int32_t seg[S * S];
    gx_err err;
    blob(x, S, 15.5, 15.5, 3.0, 0.8);
    /* The segment the evaluation must use: of x, prepared as two-models does. */
    gx_tm_morph_image(x, S, img);
    int found = 0;
    CHECK(gx_morph_segment(img, NULL, S, S, seg, &found, &err) == GX_OK && found);
    CHECK(seg[16 * S + 16] == 1 && seg[0] == 0 && seg[S * S - 1] == 0);
    int64_t n_in = 0;
    for (int i = 0; i < S * S; i++) n_in += seg[i];
    CHECK(n_in > 10 && n_in < S * S / 2);
    /* x~ differs from x (a dimmer copy); x_cf = x~ + a inside, -b outside,
     * with alternating signs per band: the means are of |x_cf - x~|. */
    const double a = 0.2, b = 0.01;
    for (int k = 0; k < 3 * S * S; k++) {
        int p = k % (S * S), c = k / (S * S);
        xrec[k] = 0.9f * x[k];
        double d = seg[p] ? a : b;
        xcf[k] = (float)(xrec[k] + ((c + p) % 2 ? d : -d));
    }
    double out, in;
    CHECK(gx_eval_cf_background(x, xrec, xcf, S, &out, &in, &found, &err) == GX_OK);
    CHECK(found == 1);
    CHECK_NEAR(in, a, 1e-6);
    CHECK_NEAR(out, b, 1e-6);
    /* The segment is x's: a galaxy elsewhere in x_cf or x~ changes nothing. */
    blob(other, S, 5, 26, 2.0, 0.9);
    for (int k = 0; k < 3 * S * S; k++) { xrec[k] += other[k]; xcf[k] += other[k]; }
    double out2, in2;
    CHECK(gx_eval_cf_background(x, xrec, xcf, S, &out2, &in2, &found, &err) == GX_OK && found);
    CHECK_NEAR(in2, a, 1e-5);
    CHECK_NEAR(out2, b, 1e-5);
    /* Nothing to segment: found 0, NaN, not an error. */
    for (int k = 0; k < 3 * S * S; k++) x[k] = 0.25f;
    CHECK(gx_eval_cf_background(x, xrec, xcf, S, &out, &in, &found, &err) == GX_OK);
    CHECK(found == 0 && isnan(out) && isnan(in));
    CHECK(gx_eval_cf_background(NULL, xrec, xcf, S, &out, &in, &found, &err) == GX_ERR_INVALID);
    CHECK(gx_eval_cf_background(x, xrec, xcf, 8, &out, &in, &found, &err) == GX_ERR_INVALID);
}

/* ------------------------------------------------------------- fixture */

typedef struct {
    int ready, ok;
    char dir[64], data[128], db[128], out[128], ckpt[160];
    int64_t run_id;
} ec_fixture;

static ec_fixture FX;

static int fx_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

static void fx_cleanup(void) {
    if (FX.dir[0]) nftw(FX.dir, fx_rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* 60 galaxies at 32 px, a tiny CF-INN trained 2 epochs with split seed 7
 * (not its seed 11: eval must take the split's). */
static ec_fixture *fx_get(gx_test_state *T) {
    if (FX.ready) return FX.ok ? &FX : NULL;
    FX.ready = 1;
    snprintf(FX.dir, sizeof FX.dir, "/tmp/gx_eval_cf_XXXXXX");
    if (!mkdtemp(FX.dir)) { CHECK_MSG(0, "mkdtemp failed"); FX.dir[0] = 0; return NULL; }
    atexit(fx_cleanup);
    snprintf(FX.data, sizeof FX.data, "%s/synth.h5", FX.dir);
    snprintf(FX.db, sizeof FX.db, "%s/runs.sqlite", FX.dir);
    snprintf(FX.out, sizeof FX.out, "%s/ck", FX.dir);
    snprintf(FX.ckpt, sizeof FX.ckpt, "%s/last.safetensors", FX.out);
    gx_synth_opts so;
    gx_synth_opts_default(&so);
    so.seed = 5; so.n = 60; so.size = 32; so.balanced = 1;
    gx_err err;
    gx_status s = gx_synth_write(&so, FX.data, NULL, "test_eval_cf", NULL, NULL, &err);
    CHECK_MSG(s == GX_OK, "synth: %s", err.msg);
    if (s != GX_OK) return NULL;
    gx_train_cf_opts o;
    gx_train_cf_opts_default(&o, "tiny", &err);
    o.data = FX.data; o.db_path = FX.db; o.out_dir = FX.out;
    o.epochs = 2; o.batch = 8; o.seed = 11; o.split_seed = 7; o.progress = 0; o.lr = 1e-3; o.cf_eval_n = 2;
    gx_train_cf_result r;
    s = gx_train_cf(&o, &r, &err);
    CHECK_MSG(s == GX_OK, "train: %s", err.msg);
    if (s != GX_OK) return NULL;
    FX.run_id = r.run_id;
    FX.ok = 1;
    return &FX;
}

/* The test images of split seed `seed` through the eval loader settings,
 * and their labels (malloc'ed; *n images). */
static float *test_images(const char *data, uint64_t seed, int S, int64_t *n, int32_t **labels) {
    gx_dataset *ds = NULL;
    gx_err err;
    int64_t *idx[3] = { 0 }, cnt[3];
    float *x = NULL;
    *labels = NULL;
    if (gx_dataset_open(data, NULL, &ds, &err) != GX_OK) return NULL;
    if (gx_split_stratified(ds->label, ds->n, ds->n_classes, (double[3]){ .70, .15, .15 }, seed, idx, cnt, &err) ==
        GX_OK) {
        gx_loader_opts lo = GX_LOADER_OPTS_DEFAULT;
        lo.batch = (int)cnt[2];
        lo.size = S;
        lo.seed = seed;
        gx_loader *L = NULL;
        gx_batch b;
        if (gx_loader_open(&L, ds, idx[2], cnt[2], &lo, &err) == GX_OK && gx_loader_start_epoch(L, 0, &err) == GX_OK &&
            gx_loader_next(L, &b, &err) == 1) {
            x = malloc((size_t)(b.n * 3 * S * S) * sizeof *x);
            *labels = malloc((size_t)b.n * sizeof **labels);
            memcpy(x, b.x, (size_t)(b.n * 3 * S * S) * sizeof *x);
            memcpy(*labels, b.label, (size_t)b.n * sizeof **labels);
            *n = b.n;
        }
        gx_loader_close(L);
    }
    for (int k = 0; k < 3; k++) free(idx[k]);
    gx_dataset_close(ds);
    return x;
}

static double db_value(gx_test_state *T, const char *db_path, int64_t run, const char *name, int *n) {
    gx_db *db = NULL;
    gx_err err;
    double v[4] = { NAN };
    *n = 0;
    CHECK(gx_db_open(&db, db_path, &err) == GX_OK);
    if (db) CHECK(gx_db_metric_get(db, run, "test", name, NULL, v, 4, n, &err) == GX_OK);
    gx_db_close(db);
    return v[0];
}

GX_TEST(eval_cf_rows_and_split) {
    ec_fixture *F = fx_get(T);
    if (!F) return;
    gx_eval_cf_opts o;
    gx_eval_cf_opts_default(&o);
    o.checkpoint = F->ckpt; o.data = F->data; o.db_path = F->db; o.cf_n = 3; o.batch = 4;
    gx_eval_cf_result r;
    gx_err err;
    CHECK_MSG(gx_eval_cf(&o, &r, &err) == GX_OK, "eval: %s", err.msg);
    CHECK(r.split_seed == 7 && r.run_id == F->run_id && r.epoch == 1);
    /* The test part of the seed-7 split, classified as gx_cf_classify does. */
    int32_t *lab = NULL;
    int64_t n = 0;
    float *x = test_images(F->data, 7, 32, &n, &lab);
    CHECK(x != NULL && n == r.n && n >= 9);
    gx_st_file f;
    memset(&f, 0, sizeof f);
    gx_cf_model m;
    gx_ctx ctx;
    gx_ctx_init(&ctx, 16 << 20);
    CHECK(gx_st_read(&f, F->ckpt, &err) == GX_OK && gx_cf_load(&f, &m, NULL, &err) == GX_OK);
    int64_t *pred = calloc((size_t)(n > 0 ? n : 1), sizeof *pred), correct = 0;
    if (x && gx_cf_classify(&ctx, &m, x, n, pred, NULL, NULL, NULL, &err) == GX_OK)
        for (int64_t i = 0; i < n; i++) correct += pred[i] == lab[i];
    CHECK_NEAR(r.cls.accuracy, (double)correct / (double)(n ? n : 1), 1e-12);
    /* z2 = E(x)[d1:] of the same images in one batch (eval-mode ops are
     * batch invariant), probed with the true classes. */
    const int64_t d = m.cfg.d, d1 = m.cfg.d1, d2 = d - d1;
    float *z2 = malloc((size_t)(n > 0 ? n : 1) * (size_t)d2 * sizeof *z2);
    if (x && z2) {
        ctx.grad_enabled = 0;
        gx_tensor *xt = gx_tensor_new(&ctx, 4, GX_SHAPE(n, 3, 32, 32));
        for (int64_t i = 0; i < xt->numel; i++) xt->data[i] = (gx_real)x[i];
        gx_tensor *z = gx_cf_encode(&ctx, &m, xt);
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < d2; j++) z2[i * d2 + j] = (float)z->data[i * d + d1 + j];
        CHECK(d2 > 0 && r.z2_class_probe >= 0 && r.z2_class_probe <= 1);
        CHECK_NEAR(r.z2_class_probe, gx_metric_centroid_probe(z2, lab, n, d2, 10), 1e-12);
    }
    free(z2);
    int classes_present = 0, seen[10] = { 0 };
    for (int64_t i = 0; lab && i < n; i++)
        if (lab[i] >= 0 && lab[i] < 10 && !seen[lab[i]]) seen[lab[i]] = 1, classes_present++;
    gx_cf_free(&m);
    gx_st_close(&f);
    gx_ctx_free(&ctx);
    free(pred); free(x); free(lab);
    /* Counterfactual counts and ranges. */
    CHECK(r.cf_images == 3 && r.cf_count == 3 * 9);
    CHECK(r.cf_valid_hidden == 1.0);     /* the guarantee */
    CHECK(r.cf_valid_reencoded >= 0 && r.cf_valid_reencoded <= 1 && isnan(r.cf_valid_judge));
    CHECK(r.rec_ssim > -1 && r.rec_ssim <= 1 && r.rec_msd > 0 && r.cf_msd_x_rec > 0);
    CHECK(r.cf_bg_n <= r.cf_count && (r.cf_bg_n == 0 || (r.cf_bg_in > 0 && r.cf_bg_out >= 0)));
    if (r.cf_bg_n > 0) CHECK_NEAR(r.cf_bg_ratio, r.cf_bg_out / r.cf_bg_in, 1e-12);
    /* Rows under the checkpoint's run and epoch. */
    int k;
    CHECK_NEAR(db_value(T, F->db, F->run_id, "accuracy", &k), r.cls.accuracy, 1e-12);
    CHECK(k == 1);
    CHECK_NEAR(db_value(T, F->db, F->run_id, "cf_n", &k), 27, 0);
    CHECK_NEAR(db_value(T, F->db, F->run_id, "cf_bg_frac_ok", &k), r.cf_bg_frac_ok, 1e-12);
    CHECK_NEAR(db_value(T, F->db, F->run_id, "z2_class_probe", &k), r.z2_class_probe, 1e-12);
    CHECK_NEAR(db_value(T, F->db, F->run_id, "cf_ssim_rec_cf", &k), r.cf_ssim_rec_cf, 1e-12);
    db_value(T, F->db, F->run_id, "recall_9", &k);
    CHECK(k == 1);
    /* Without a judge the row is NULL (replacing an earlier judge's). */
    CHECK(isnan(db_value(T, F->db, F->run_id, "cf_valid_judge", &k)) && k == 1);
    CHECK(isnan(r.judge_acc_x) && isnan(r.judge_acc_rec) && isnan(r.cf_judge_unchanged));
    CHECK(isnan(db_value(T, F->db, F->run_id, "judge_acc_rec", &k)) && k == 1);
    /* An explicit split seed wins; another seed is another test part. */
    o.db_path = NULL;
    o.split_seed = 3;
    o.cf_n = 1;
    gx_eval_cf_result r3;
    CHECK(gx_eval_cf(&o, &r3, &err) == GX_OK && r3.split_seed == 3 && r3.cf_count == 9);
    /* The grid: a row per class present in the test part, input + 10 class
     * columns, two blocks, tiles of 32 px at scale 1 with 2-px white gaps. */
    char grid[200];
    snprintf(grid, sizeof grid, "%s/grid.png", F->dir);
    o.split_seed = -1;
    o.grid_path = grid;
    o.grid_scale = 1;
    CHECK_MSG(gx_eval_cf(&o, &r3, &err) == GX_OK, "grid: %s", err.msg);
    FILE *gf = fopen(grid, "rb");
    static uint8_t buf[1 << 20];
    size_t nb = gf ? fread(buf, 1, sizeof buf, gf) : 0;
    if (gf) fclose(gf);
    gx_image im;
    memset(&im, 0, sizeof im);
    gx_image_limits lim = GX_IMAGE_LIMITS_DEFAULT;
    CHECK(nb > 0 && gx_png_decode(buf, nb, &lim, &im, &err) == GX_OK);
    CHECK(im.w == 11 * 34 + 2 && im.h == 2 * classes_present * 34 + 8);
    if (im.data && im.w == 11 * 34 + 2) {
        int64_t plane = (int64_t)im.h * im.w;
        CHECK(im.data[0] == 1.0f && im.data[plane + 1] == 1.0f);          /* gap: white */
        double dark = 0;                                                   /* input tile: sky */
        for (int y = 2; y < 34; y++)
            for (int i = 2; i < 34; i++) dark += im.data[(int64_t)y * im.w + i] < 0.5;
        CHECK(dark > 100);
    }
    gx_image_free(&im);
}

GX_TEST(eval_cf_needs_split_seed) {
    ec_fixture *F = fx_get(T);
    if (!F) return;
    /* The fixture's weights saved without split_seed (an older checkpoint). */
    char old[200];
    snprintf(old, sizeof old, "%s/old.safetensors", F->dir);
    gx_st_file f;
    memset(&f, 0, sizeof f);
    gx_cf_model m;
    gx_cf_meta meta;
    gx_err err;
    CHECK(gx_st_read(&f, F->ckpt, &err) == GX_OK && gx_cf_load(&f, &m, &meta, &err) == GX_OK);
    CHECK(meta.has_split_seed == 1 && meta.split_seed == 7);
    meta.has_split_seed = 0;
    CHECK(gx_cf_save(&m, &meta, old, &err) == GX_OK);
    gx_cf_free(&m);
    gx_st_close(&f);
    gx_eval_cf_opts o;
    gx_eval_cf_opts_default(&o);
    o.checkpoint = old; o.data = F->data; o.cf_n = 1;
    gx_eval_cf_result r;
    CHECK(gx_eval_cf(&o, &r, &err) == GX_ERR_INVALID && strstr(err.msg, "split_seed") && strstr(err.msg, old));
    o.split_seed = 7;
    CHECK_MSG(gx_eval_cf(&o, &r, &err) == GX_OK, "%s", err.msg);
    /* Not a cf-inn checkpoint, no data: named. */
    o.checkpoint = F->data;
    CHECK(gx_eval_cf(&o, &r, &err) != GX_OK && strstr(err.msg, "--checkpoint"));
    o.checkpoint = old;
    o.data = "/nonexistent/x.h5";
    CHECK(gx_eval_cf(&o, &r, &err) != GX_OK && strstr(err.msg, "--data"));
}

/* The accuracy of the wavelet-mamba checkpoint `judge` on the first n test
 * images of split seed 7 (gx_cf_judge_classes, as eval's judge), and how many
 * distinct classes it answered. */
static double judge_accuracy(gx_test_state *T, const char *judge, const char *data, int64_t n, int *distinct) {
    int32_t *lab = NULL;
    int64_t nt = 0, pred[16] = { 0 };
    float *x = test_images(data, 7, 32, &nt, &lab);
    gx_st_file f;
    memset(&f, 0, sizeof f);
    gx_wm_model jm;
    gx_ctx ctx;
    gx_ctx_init(&ctx, 16 << 20);
    gx_err err;
    double acc = NAN;
    *distinct = 0;
    CHECK(x && n <= 16 && nt >= n);
    if (x && n <= 16 && nt >= n && gx_st_read(&f, judge, &err) == GX_OK &&
        gx_wm_checkpoint_load(&f, &jm, &err) == GX_OK) {
        if (gx_cf_judge_classes(&ctx, &jm, x, n, 32, pred, &err) == GX_OK) {
            int64_t ok = 0, seen[GX_CF_MAX_CLASSES] = { 0 };
            for (int64_t i = 0; i < n; i++) {
                ok += pred[i] == lab[i];
                if (pred[i] >= 0 && pred[i] < GX_CF_MAX_CLASSES && !seen[pred[i]]++) (*distinct)++;
            }
            acc = (double)ok / (double)n;
        }
        gx_wm_free(&jm);
    }
    CHECK_MSG(isfinite(acc), "judge %s: %s", judge, err.msg);
    gx_st_close(&f);
    gx_ctx_free(&ctx);
    free(x); free(lab);
    return acc;
}

GX_TEST(eval_cf_judge_row) {
    ec_fixture *F = fx_get(T);
    if (!F) return;
    gx_train_wm_opts wo;
    gx_train_wm_result wr;
    gx_err err;
    char wout[160], judge[200];
    snprintf(wout, sizeof wout, "%s/W", F->dir);
    gx_train_wm_opts_default(&wo, "tiny", &err);
    wo.data = F->data; wo.db_path = F->db; wo.out_dir = wout;
    wo.epochs = 1; wo.batch = 8; wo.accum = 1; wo.seed = 3; wo.progress = 0; wo.max_train = 16;
    wo.model.size = 16;                  /* another size: x_cf is resized for it */
    CHECK_MSG(gx_train_wm(&wo, &wr, &err) == GX_OK, "judge training: %s", err.msg);
    snprintf(judge, sizeof judge, "%s/last.safetensors", wout);
    gx_eval_cf_opts o;
    gx_eval_cf_opts_default(&o);
    o.checkpoint = F->ckpt; o.data = F->data; o.judge = judge; o.cf_n = 2; o.db_path = F->db;
    gx_eval_cf_result r;
    CHECK_MSG(gx_eval_cf(&o, &r, &err) == GX_OK, "%s", err.msg);
    CHECK(r.cf_count == 18 && r.cf_valid_judge >= 0 && r.cf_valid_judge <= 1);
    /* 18 judged counterfactuals: the share is a multiple of 1/18. */
    CHECK_NEAR(r.cf_valid_judge * 18, round(r.cf_valid_judge * 18), 1e-9);
    int k;
    CHECK_NEAR(db_value(T, F->db, F->run_id, "cf_valid_judge", &k), r.cf_valid_judge, 1e-12);
    CHECK(k == 1);
    /* The judge's accuracy on the 2 inputs and their reconstructions: shares
     * of 2 images, stored beside cf_valid_judge. */
    CHECK(r.judge_acc_x >= 0 && r.judge_acc_x <= 1 && r.judge_acc_rec >= 0 && r.judge_acc_rec <= 1);
    CHECK_NEAR(r.judge_acc_x * 2, round(r.judge_acc_x * 2), 1e-9);
    CHECK_NEAR(r.judge_acc_rec * 2, round(r.judge_acc_rec * 2), 1e-9);
    CHECK_NEAR(db_value(T, F->db, F->run_id, "judge_acc_x", &k), r.judge_acc_x, 1e-12);
    CHECK_NEAR(db_value(T, F->db, F->run_id, "judge_acc_rec", &k), r.judge_acc_rec, 1e-12);
    /* This tiny judge answers one class for every image: it sees every
     * counterfactual as it sees x~. */
    CHECK_MSG(r.cf_judge_unchanged == 1.0, "cf_judge_unchanged %g", r.cf_judge_unchanged);
    CHECK_NEAR(db_value(T, F->db, F->run_id, "cf_judge_unchanged", &k), 1.0, 1e-12);
    /* judge_acc_x replicated with the bundled WaveletMamba as the judge (this
     * tiny one answers one class for every image, which would prove little). */
    o.judge = "models/default/wavelet-mamba.safetensors"; o.cf_n = 3; o.db_path = NULL;
    CHECK_MSG(gx_eval_cf(&o, &r, &err) == GX_OK, "%s", err.msg);
    int distinct = 0;
    CHECK_NEAR(r.judge_acc_x, judge_accuracy(T, o.judge, F->data, 3, &distinct), 1e-12);
    CHECK_MSG(distinct >= 2, "the bundled judge gave %d distinct classes to 3 test images", distinct);
    o.judge = judge;
    /* A cf-inn file is no judge. */
    o.judge = F->ckpt;
    CHECK(gx_eval_cf(&o, &r, &err) != GX_OK && strstr(err.msg, "--judge"));
}

/* ------------------------------------------------------------- bundle */

static int same_tensor_bytes(const gx_st_file *a, const gx_st_file *b) {
    if (a->n != b->n) return 0;
    for (int i = 0; i < a->n; i++) {
        const gx_st_tensor *ta = &a->tensors[i], *tb = gx_st_find(b, ta->name);
        if (!tb || tb->dtype != ta->dtype || tb->nbytes != ta->nbytes || memcmp(ta->data, tb->data, ta->nbytes))
            return 0;
    }
    return 1;
}

GX_TEST(eval_cf_bundle_metadata_round_trip) {
    ec_fixture *F = fx_get(T);
    if (!F) return;
    char out[200], kind[32];
    snprintf(out, sizeof out, "%s/bundle.safetensors", F->dir);
    gx_err err;
    CHECK(gx_checkpoint_model_kind(F->ckpt, kind, sizeof kind, &err) == GX_OK && !strcmp(kind, "cf-inn"));
    CHECK(gx_checkpoint_model_kind(F->data, kind, sizeof kind, &err) != GX_OK && strstr(err.msg, F->data));
    gx_cf_bundle_opts bo = { .checkpoint = F->ckpt, .data = F->data, .out = out, .cf_n = 2, .split_seed = -1 };
    gx_eval_cf_result r;
    CHECK_MSG(gx_cf_bundle_write(&bo, &r, &err) == GX_OK, "%s", err.msg);
    gx_st_file a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    CHECK(gx_st_read(&a, F->ckpt, &err) == GX_OK && gx_st_read(&b, out, &err) == GX_OK);
    CHECK(same_tensor_bytes(&a, &b));
    for (int i = 0; i < a.n_meta; i++) {
        const char *v = gx_st_meta(&b, a.meta_keys[i]);
        CHECK_MSG(v && !strcmp(v, a.meta_vals[i]), "metadata %s not kept", a.meta_keys[i]);
    }
    CHECK(b.n_meta == a.n_meta + 1);
    const char *tm = gx_st_meta(&b, "test_metrics");
    json_t *j = tm ? json_loads(tm, 0, NULL) : NULL;
    CHECK(json_is_object(j));
    CHECK_NEAR(json_number_value(json_object_get(j, "accuracy")), r.cls.accuracy, 1e-12);
    CHECK(json_integer_value(json_object_get(j, "n_test")) == r.n);
    CHECK(json_integer_value(json_object_get(j, "cf_n")) == 18);
    CHECK(json_integer_value(json_object_get(j, "split_seed")) == 7);
    CHECK(json_array_size(json_object_get(j, "recall")) == 10);
    CHECK(json_is_null(json_object_get(j, "judge")));
    CHECK(!strcmp(json_string_value(json_object_get(j, "data")), "synth.h5"));
    CHECK(!strcmp(json_string_value(json_object_get(j, "part")), "test"));
    json_decref(j);
    /* What galaxyd loads: gx_cf_load reads it back with the same text. */
    gx_cf_model m;
    gx_cf_meta meta;
    CHECK(gx_cf_load(&b, &m, &meta, &err) == GX_OK && tm && !strcmp(meta.test_metrics_json, tm));
    gx_cf_free(&m);
    gx_st_close(&a);
    gx_st_close(&b);
    /* In place on the bundle: one test_metrics, the new evaluation's. */
    bo.checkpoint = out;
    bo.cf_n = 1;
    CHECK_MSG(gx_cf_bundle_write(&bo, &r, &err) == GX_OK, "%s", err.msg);
    memset(&b, 0, sizeof b);
    CHECK(gx_st_read(&b, out, &err) == GX_OK);
    int n_tm = 0;
    for (int i = 0; i < b.n_meta; i++) n_tm += !strcmp(b.meta_keys[i], "test_metrics");
    CHECK(n_tm == 1);
    j = json_loads(gx_st_meta(&b, "test_metrics"), 0, NULL);
    CHECK(json_integer_value(json_object_get(j, "cf_n")) == 9);
    json_decref(j);
    gx_st_close(&b);
    /* Missing flags are named. */
    bo.out = NULL;
    CHECK(gx_cf_bundle_write(&bo, NULL, &err) == GX_ERR_INVALID && strstr(err.msg, "--out"));
}
