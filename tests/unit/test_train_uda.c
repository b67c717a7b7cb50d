/*
 * test_train_uda.c — the DeepAstroUDA trainer and the offline scorer
 * (trainer/gx_train_uda.h) end to end on tiny synthetic surveys rendered
 * here (source: sdss, galaxy10; target: decals, galaxy10 + lenses; 32x32,
 * tiny backbone):
 *   - --known / --exclude class maps, --set parsing;
 *   - split metrics against hand-computed values (unknown as class K,
 *     sklearn macro averages, AUC of the anomaly score);
 *   - a 4-epoch run: run row, every per-epoch metric name per split, tuner
 *     rows, checkpoints recorded with the sha256 of the file and the tuned
 *     rho as anomaly_threshold, the source cross-entropy falling;
 *   - resume: stop after 2 epochs, resume to 4 -> last checkpoint and
 *     training state bit-identical to the uninterrupted run;
 *   - the lambda = 0 baseline: no AC/ES rows, target BN set = source set;
 *   - score: every object stored once with the checkpoint's threshold, a
 *     re-run writes nothing, the stored score equals a direct prediction of
 *     the same prepared image, the h5 hash rule.
 * The shared fixture (data + run A) is built once per process.
 */
#include "gx_test.h"
#include "test_train_util.h"

#include "gx_anomaly_store.h"
#include "gx_db.h"
#include "gx_sha256.h"
#include "gx_synth.h"
#include "gx_train_uda.h"

#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------- options */

GX_TEST(train_uda_classmap) {
    gx_uda_classmap cm;
    gx_err err;
    CHECK(gx_uda_classmap_parse("smooth=2+3+4,disk=5+Unbarred Tight Spiral+7", "0,8,9", 11, &cm, &err) == GX_OK);
    CHECK(cm.K == 2 && !strcmp(cm.names[0], "smooth") && !strcmp(cm.names[1], "disk"));
    CHECK(cm.map[2] == 0 && cm.map[3] == 0 && cm.map[4] == 0 && cm.map[5] == 1 && cm.map[6] == 1 && cm.map[7] == 1);
    CHECK(cm.map[0] == -1 && cm.map[8] == -1 && cm.map[9] == -1);
    CHECK(cm.map[1] == 2 && cm.map[10] == 2);            /* merging and lens: unknown */
    CHECK(gx_uda_classmap_parse("1,2+4", NULL, 10, &cm, &err) == GX_OK);
    CHECK(cm.K == 2 && strstr(cm.names[1], "+") != NULL && cm.map[0] == 2);
    /* Default: every source class (minus excluded) is known. */
    CHECK(gx_uda_classmap_parse(NULL, "3", 10, &cm, &err) == GX_OK);
    CHECK(cm.K == 9 && cm.map[3] == -1 && cm.map[4] == 3 && cm.map[10] == 9);
    CHECK(gx_uda_classmap_parse("1,1", NULL, 10, &cm, &err) == GX_ERR_INVALID && strstr(err.msg, "twice"));
    CHECK(gx_uda_classmap_parse("1,nope", NULL, 10, &cm, &err) == GX_ERR_INVALID && strstr(err.msg, "nope"));
    CHECK(gx_uda_classmap_parse("1,2", "2", 10, &cm, &err) == GX_ERR_INVALID && strstr(err.msg, "exclude"));
    CHECK(gx_uda_classmap_parse("4", NULL, 10, &cm, &err) == GX_ERR_INVALID);   /* K >= 2 */
}

GX_TEST(train_uda_set_options) {
    gx_train_uda_opts o;
    gx_err err;
    gx_train_uda_opts_default(&o);
    CHECK(o.lambda == 0.005 && o.batch_source == 36 && o.batch_target == 36 && o.patience == 12);
    CHECK(o.lr_backbone == 1e-3 && o.lr_head == 1e-2 && o.model.backbone == GX_UDA_RESNET18);
    CHECK(gx_train_uda_set(&o, "lambda", "0", &err) == GX_OK && o.lambda == 0);
    CHECK(gx_train_uda_set(&o, "patience", "3", &err) == GX_OK && o.patience == 3);
    CHECK(gx_train_uda_set(&o, "experiment", "noise", &err) == GX_OK && !strcmp(o.experiment, "noise"));
    CHECK(gx_train_uda_set(&o, "bogus", "1", &err) == GX_ERR_NOTFOUND && strstr(err.msg, "bogus"));
    CHECK(gx_train_uda_set(&o, "lr_head", "fast", &err) == GX_ERR_INVALID && strstr(err.msg, "lr_head"));
    CHECK(gx_train_uda_backbone(&o, "tiny", &err) == GX_OK && o.model.backbone == GX_UDA_TINY);
    CHECK(gx_train_uda_backbone(&o, "vgg", &err) == GX_ERR_INVALID && strstr(err.msg, "vgg"));
}

/* ------------------------------------------------------------- metrics */

GX_TEST(train_uda_split_metrics) {
    /* K = 2, rho = 0.5. Rows: (p0, p1, H, label). */
    const float probs[] = { .9f, .1f,  .2f, .8f,  .6f, .4f,  .7f, .3f,  .5f, .5f,  .1f, .9f };
    const float ent[] = { .1f, .2f, .6f, .3f, .69f, .4f };
    const int32_t lab[] = { 0, 1, 2, 1, 2, 1 };
    /* preds: 0, 1, 2 (H > rho), 0, 2, 1 -> correct: 1,1,1,0,1,1 = 5/6 */
    gx_uda_split_metrics m;
    gx_err err;
    CHECK(gx_uda_split_metrics_compute(probs, ent, lab, 6, 2, 0.5, &m, &err) == GX_OK);
    CHECK_NEAR(m.accuracy, 5.0 / 6, 1e-12);
    /* class 0: tp 1, pred 2, sup 1 -> P .5 R 1 F 2/3; class 1: tp 2, pred 2, sup 3 -> P 1 R 2/3 F .8;
     * class 2: tp 2, pred 2, sup 2 -> 1, 1, 1. */
    CHECK_NEAR(m.precision_macro, (0.5 + 1 + 1) / 3, 1e-12);
    CHECK_NEAR(m.recall_macro, (1 + 2.0 / 3 + 1) / 3, 1e-12);
    CHECK_NEAR(m.f1_macro, (2.0 / 3 + 0.8 + 1) / 3, 1e-12);
    CHECK_NEAR(m.known_accuracy, 3.0 / 4, 1e-12);
    CHECK_NEAR(m.unknown_accuracy, 1.0, 1e-12);
    /* Unknown entropies .6, .69 above every known one (.1 .2 .3 .4): AUC 1. */
    CHECK_NEAR(m.anomaly_auc, 1.0, 1e-12);
    CHECK(m.n == 6);
    /* No unknown object: unknown accuracy and AUC undefined (NaN, not 0). */
    const int32_t lab2[] = { 0, 1, 0, 0, 0, 1 };
    CHECK(gx_uda_split_metrics_compute(probs, ent, lab2, 6, 2, 0.5, &m, &err) == GX_OK);
    CHECK(isnan(m.unknown_accuracy) && isnan(m.anomaly_auc) && isfinite(m.f1_macro));
    const int32_t bad[] = { 0, 3, 0, 0, 0, 0 };
    CHECK(gx_uda_split_metrics_compute(probs, ent, bad, 6, 2, 0.5, &m, &err) == GX_ERR_INVALID);
}

/* -------------------------------------------------------- shared fixture */

typedef struct {
    int ready, ok;
    ttu_dirs d;                  /* data: the source survey */
    char tgt[128], outC[128], scoredb[128];
    gx_train_uda_result A;
} uda_fixture;

static uda_fixture FX;

static void fx_cleanup(void) {
    tfx_rmtree(FX.d.dir);
}

static void fx_opts(gx_train_uda_opts *o, const char *out) {
    gx_err err;
    gx_train_uda_opts_default(o);
    gx_train_uda_backbone(o, "tiny", &err);
    o->source = FX.d.data;
    o->target = FX.tgt;
    o->db_path = FX.d.db;
    o->out_dir = out;
    o->known = "smooth=2+3+4,disk=5+6+7";
    o->exclude = "0,8,9";
    o->epochs = 4;
    o->batch_source = o->batch_target = 12;
    o->seed = 3;
    o->progress = 0;
    o->lambda = 0.05;             /* the AC/ES terms must move something in 4 epochs */
}

static gx_status fx_synth(const char *path, int survey, int classes, uint64_t seed, gx_err *err) {
    gx_synth_opts so;
    gx_synth_opts_default(&so);
    so.seed = seed;
    so.n = 110;
    so.size = 32;
    so.balanced = 1;
    so.n_classes = classes;
    so.n_surveys = 1;
    so.surveys[0] = survey;
    return gx_synth_write(&so, path, NULL, "test_train_uda", NULL, NULL, err);
}

static uda_fixture *fx_get(gx_test_state *T) {
    if (FX.ready) return FX.ok ? &FX : NULL;
    FX.ready = 1;
    if (!ttu_dirs_init(T, &FX.d, "train_uda", "sdss.h5", "runs.db")) return NULL;
    atexit(fx_cleanup);
    snprintf(FX.tgt, sizeof FX.tgt, "%s/decals.h5", FX.d.dir);
    snprintf(FX.scoredb, sizeof FX.scoredb, "%s/score.db", FX.d.dir);
    snprintf(FX.outC, sizeof FX.outC, "%s/C", FX.d.dir);
    gx_err err;
    gx_status s = fx_synth(FX.d.data, gx_synth_survey_find("sdss"), 10, 21, &err);
    if (s == GX_OK) s = fx_synth(FX.tgt, gx_synth_survey_find("decals"), 11, 22, &err);
    CHECK_MSG(s == GX_OK, "synth: %s", err.msg);
    if (s != GX_OK) return NULL;
    gx_train_uda_opts o;
    fx_opts(&o, FX.d.outA);
    s = gx_train_uda(&o, &FX.A, &err);
    CHECK_MSG(s == GX_OK, "train A: %s", err.msg);
    if (s != GX_OK) return NULL;
    FX.ok = 1;
    return &FX;
}

static double q_num(sqlite3 *h, const char *sql) {
    sqlite3_stmt *st;
    double v = NAN;
    if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK) return NAN;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) v = sqlite3_column_double(st, 0);
    sqlite3_finalize(st);
    return v;
}

static double metric(sqlite3 *h, int64_t run, int epoch, const char *split, const char *name) {
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT value FROM metrics WHERE run_id=%lld AND epoch=%d AND split='%s' AND name='%s'",
             (long long)run, epoch, split, name);
    return q_num(h, sql);
}

static int has_metric(sqlite3 *h, int64_t run, int epoch, const char *split, const char *name) {
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM metrics WHERE run_id=%lld AND epoch=%d AND split='%s' AND name='%s'",
             (long long)run, epoch, split, name);
    return q_num(h, sql) == 1;
}

/* ----------------------------------------------------------------- tests */

GX_TEST(train_uda_run_metrics_checkpoints) {
    uda_fixture *F = fx_get(T);
    if (!F) return;
    gx_db *db;
    gx_err err;
    CHECK(gx_db_open(&db, F->d.db, &err) == GX_OK);
    sqlite3 *h = gx_db_handle(db);
    int64_t run = F->A.run_id;
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM runs WHERE id=%lld AND model_kind='uda' AND status='finished'"
             " AND json_extract(config_json,'$.train.lambda') = 0.05", (long long)run);
    CHECK(q_num(h, sql) == 1);
    CHECK(F->A.epochs_done == 4 && F->A.best_epoch >= 0);
    const char *train[] = { "loss_ce", "loss_ac", "loss_es", "loss_total", "rho", "margin", "es_active_frac",
                            "tuner_rho", "tuner_margin", "tuner_changed", "lr_backbone", "lr_head" };
    const char *test[] = { "accuracy", "precision_macro", "recall_macro", "f1_macro", "known_accuracy",
                           "unknown_accuracy", "anomaly_auc" };
    for (int e = 0; e < 4; e++) {
        for (size_t i = 0; i < sizeof train / sizeof *train; i++)
            CHECK_MSG(isfinite(metric(h, run, e, "train", train[i])), "epoch %d train %s", e, train[i]);
        CHECK(isfinite(metric(h, run, e, "source_val", "accuracy")));
        for (size_t i = 0; i < sizeof test / sizeof *test; i++) {
            CHECK_MSG(has_metric(h, run, e, "source_test", test[i]), "epoch %d source_test %s", e, test[i]);
            /* The target holds mergers and lenses: every target metric is defined. */
            CHECK_MSG(isfinite(metric(h, run, e, "target_test", test[i])), "epoch %d target_test %s", e, test[i]);
        }
        /* The source holds the known classes only (unknown: target only). */
        CHECK(isnan(metric(h, run, e, "source_test", "unknown_accuracy")));
        CHECK(isfinite(metric(h, run, e, "source_test", "accuracy")));
        double af = metric(h, run, e, "train", "es_active_frac");
        CHECK(af >= 0 && af <= 1);
    }
    /* Tuner: starts at ln(K)/2 and m = 0.5 (K = 2 < 5); each epoch's rho is
     * the previous epoch's tuned value. */
    CHECK_NEAR(metric(h, run, 0, "train", "rho"), log(2.0) / 2, 1e-12);
    CHECK_NEAR(metric(h, run, 0, "train", "margin"), 0.5, 1e-12);
    for (int e = 1; e < 4; e++) {
        CHECK_NEAR(metric(h, run, e, "train", "rho"), metric(h, run, e - 1, "train", "tuner_rho"), 1e-12);
        int changed = metric(h, run, e, "train", "tuner_changed") != 0;
        int moved = metric(h, run, e, "train", "tuner_rho") != metric(h, run, e, "train", "rho") ||
                    metric(h, run, e, "train", "tuner_margin") != metric(h, run, e, "train", "margin");
        CHECK(changed == moved || (changed && !moved));   /* a change may be clamped away */
    }
    /* lr: inverse decay, the head 10x the backbone. */
    CHECK_NEAR(metric(h, run, 3, "train", "lr_head") / metric(h, run, 3, "train", "lr_backbone"), 10, 1e-9);
    CHECK(metric(h, run, 3, "train", "lr_head") < 1e-2);
    /* Checkpoints: last every epoch, best at least once, sha256 = the file. */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM checkpoints WHERE run_id=%lld AND kind='last'", (long long)run);
    CHECK(q_num(h, sql) == 4);
    ttu_check_checkpoint_sha(T, h, run);
    /* The last checkpoint carries the tuned rho and the known class names. */
    gx_st_file cf;
    memset(&cf, 0, sizeof cf);
    char path[256];
    snprintf(path, sizeof path, "%s/last.safetensors", F->d.outA);
    CHECK(gx_st_read(&cf, path, &err) == GX_OK);
    gx_uda_model m;
    gx_uda_meta meta;
    CHECK(gx_uda_load(&cf, &m, &meta, &err) == GX_OK);
    if (m.net) {
        CHECK_NEAR(meta.rho, metric(h, run, 3, "train", "tuner_rho"), 1e-12);
        CHECK(m.cfg.classes == 2 && strstr(meta.classes_json, "smooth") && strstr(meta.classes_json, "disk"));
        CHECK(meta.run_id == run && meta.epoch == 3);
        CHECK(strstr(meta.test_metrics_json, "anomaly_auc") != NULL);
        gx_uda_free(&m);
    }
    gx_st_close(&cf);
    gx_db_close(db);
}

GX_TEST(train_uda_loss_decreases) {
    uda_fixture *F = fx_get(T);
    if (!F) return;
    gx_db *db;
    gx_err err;
    CHECK(gx_db_open(&db, F->d.db, &err) == GX_OK);
    sqlite3 *h = gx_db_handle(db);
    double first = metric(h, F->A.run_id, 0, "train", "loss_ce"), last = metric(h, F->A.run_id, 3, "train", "loss_ce");
    CHECK_MSG(last < first, "source CE %g -> %g", first, last);
    CHECK(F->A.last_train_loss < F->A.first_train_loss);
    gx_db_close(db);
}

GX_TEST(train_uda_resume_bit_identical) {
    uda_fixture *F = fx_get(T);
    if (!F) return;
    gx_train_uda_opts o;
    gx_train_uda_result r;
    gx_err err;
    fx_opts(&o, F->d.outB);
    o.stop_after = 2;
    CHECK(gx_train_uda(&o, &r, &err) == GX_OK);
    CHECK(r.interrupted && r.epochs_done == 2);
    char p[256];
    snprintf(p, sizeof p, "%s/last.safetensors", F->d.outB);
    unlink(p);                       /* resume must not need it */
    fx_opts(&o, F->d.outB);
    o.resume_run = r.run_id;
    o.seed = 999;                    /* ignored: the run's seed comes from the database */
    gx_train_uda_result r2;
    CHECK_MSG(gx_train_uda(&o, &r2, &err) == GX_OK, "resume: %s", err.msg);
    CHECK(r2.run_id == r.run_id && r2.epochs_done == 4 && !r2.interrupted);
    CHECK(ttu_same_file(T, F->d.outA, F->d.outB, "last.safetensors"));
    CHECK(ttu_same_file(T, F->d.outA, F->d.outB, "train_state.safetensors"));   /* weights, momentum, the bank */
    CHECK(r2.rho == F->A.rho && r2.margin == F->A.margin);
}

GX_TEST(train_uda_baseline_lambda0) {
    uda_fixture *F = fx_get(T);
    if (!F) return;
    gx_train_uda_opts o;
    gx_train_uda_result r;
    gx_err err;
    fx_opts(&o, F->outC);
    o.lambda = 0;
    o.epochs = 2;
    CHECK_MSG(gx_train_uda(&o, &r, &err) == GX_OK, "%s", err.msg);
    gx_db *db;
    CHECK(gx_db_open(&db, F->d.db, &err) == GX_OK);
    sqlite3 *h = gx_db_handle(db);
    CHECK(isnan(metric(h, r.run_id, 1, "train", "loss_ac")) && has_metric(h, r.run_id, 1, "train", "loss_ac"));
    CHECK_NEAR(metric(h, r.run_id, 1, "train", "loss_total"), metric(h, r.run_id, 1, "train", "loss_ce"), 1e-9);
    CHECK(isfinite(metric(h, r.run_id, 1, "target_test", "accuracy")));
    gx_db_close(db);
    /* The target BN set mirrors the source set. */
    char p[256];
    snprintf(p, sizeof p, "%s/last.safetensors", F->outC);
    ttu_bn_twins_equal(T, p, 9);
}

/* The rows a scoring database holds, in insertion order, as one string:
 * objects, scores (all but the clock) and thumbnails' bytes. */
static char *score_dump(const char *path) {
    sqlite3 *h = NULL;
    if (sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) { sqlite3_close(h); return NULL; }
    sqlite3_stmt *st = NULL;
    const char *sql =
        "SELECT o.external_id || '|' || o.image_sha256 || '|' || o.format || '|' || o.width || '|' || a.score"
        " || '|' || a.is_anomaly || '|' || a.class_index || '|' || a.survey || '|' || hex(t.png)"
        " FROM anomaly_scores a JOIN objects o ON o.id = a.object_id"
        " LEFT JOIN anomaly_thumbs t ON t.image_sha256 = o.image_sha256 ORDER BY a.id";
    size_t cap = 1 << 16, len = 0;
    char *out = malloc(cap);
    if (out && sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *r = (const char *)sqlite3_column_text(st, 0);
            size_t n = r ? strlen(r) : 0;
            if (len + n + 2 > cap) {
                char *p = realloc(out, cap = 2 * (len + n + 2));
                if (!p) { free(out); out = NULL; break; }
                out = p;
            }
            memcpy(out + len, r ? r : "", n);
            len += n;
            out[len++] = '\n';
        }
        if (out) out[len] = 0;
    }
    sqlite3_finalize(st);
    sqlite3_close(h);
    return out;
}

/* Scoring hashes, prepares and makes thumbnails on all threads: at 1 and at
 * 2 threads (and in batches of 16 or 7) it stores the same rows, in the
 * same order, with the same scores and thumbnails. */
GX_TEST(train_uda_score_same_rows_at_any_thread_count) {
    uda_fixture *F = fx_get(T);
    if (!F) return;
    char ck[256], db1[192], db2[192];
    snprintf(ck, sizeof ck, "%s/best.safetensors", F->d.outA);
    snprintf(db1, sizeof db1, "%s/score_t1.db", F->d.dir);
    snprintf(db2, sizeof db2, "%s/score_t2.db", F->d.dir);
    int saved = gx_get_threads();
    gx_score_result r1, r2;
    gx_err err;
    gx_set_threads(1);
    gx_score_opts so = { .model_path = ck, .data = F->tgt, .db_path = db1, .domain = GX_UDA_TARGET,
                         .batch = 16, .progress = 0 };
    CHECK_MSG(gx_uda_score(&so, &r1, &err) == GX_OK, "%s", err.msg);
    gx_set_threads(2);
    so.db_path = db2;
    so.batch = 7;
    CHECK_MSG(gx_uda_score(&so, &r2, &err) == GX_OK, "%s", err.msg);
    gx_set_threads(saved);
    CHECK(r1.scored == 110 && r2.scored == 110 && r1.flagged == r2.flagged);
    char *a = score_dump(db1), *b = score_dump(db2);
    CHECK(a && b && strlen(a) > 110 * 64);
    CHECK_MSG(a && b && !strcmp(a, b), "the two databases hold different rows");
    free(a);
    free(b);
}

GX_TEST(train_uda_score_idempotent) {
    uda_fixture *F = fx_get(T);
    if (!F) return;
    char ck[256];
    snprintf(ck, sizeof ck, "%s/best.safetensors", F->d.outA);
    gx_score_opts so = { .model_path = ck, .data = F->tgt, .db_path = F->scoredb, .domain = GX_UDA_TARGET,
                         .batch = 16, .progress = 0 };
    gx_score_result r, r2;
    gx_err err;
    CHECK_MSG(gx_uda_score(&so, &r, &err) == GX_OK, "%s", err.msg);
    CHECK(r.n == 110 && r.scored == 110 && r.skipped == 0 && r.model_id > 0);
    CHECK(gx_uda_score(&so, &r2, &err) == GX_OK);
    CHECK(r2.scored == 0 && r2.skipped == 110 && r2.model_id == r.model_id);
    gx_db *db;
    CHECK(gx_db_open(&db, F->scoredb, &err) == GX_OK);
    sqlite3 *h = gx_db_handle(db);
    CHECK(q_num(h, "SELECT count(*) FROM anomaly_scores") == 110);
    CHECK(q_num(h, "SELECT count(*) FROM anomaly_scores WHERE score < 0 OR score > 1.000001") == 0);
    CHECK(q_num(h, "SELECT count(*) FROM anomaly_scores WHERE survey = 'decals'") == 110);
    CHECK(q_num(h, "SELECT count(*) FROM served_models WHERE name = 'best' AND model_kind = 'uda'") == 1);
    CHECK(q_num(h, "SELECT count(*) FROM objects WHERE format = 'h5' AND width = 32") == 110);
    /* Object 7: its id, the h5 hash rule, and its score equal to a direct
     * prediction of the same prepared pixels. */
    gx_anomaly_row rows[4];
    int n = 0;
    CHECK(gx_anomaly_history(db, "decals.h5:7", rows, 4, &n, &err) == GX_OK && n == 1);
    gx_dataset *ds;
    gx_image im;
    CHECK(gx_dataset_open(F->tgt, NULL, &ds, &err) == GX_OK);
    CHECK(gx_dataset_get(ds, 7, &im, &err) == GX_OK);
    uint8_t px[32 * 32 * 3];
    for (int p = 0; p < 32 * 32; p++)
        for (int c = 0; c < 3; c++) px[p * 3 + c] = (uint8_t)lrintf(im.data[c * 32 * 32 + p] * 255.0f);
    char hex[65];
    gx_sha256_hex(px, sizeof px, hex);
    CHECK(n == 1 && !strcmp(rows[0].image_sha256, hex));
    gx_st_file f;
    memset(&f, 0, sizeof f);
    gx_uda_model m;
    gx_uda_meta meta;
    CHECK(gx_st_read(&f, ck, &err) == GX_OK && gx_uda_load(&f, &m, &meta, &err) == GX_OK);
    gx_image x;
    gx_pre_opts po = { meta.crop_frac, (int)m.cfg.size };
    CHECK(gx_pre_prepare(&im, &po, &x, &err) == GX_OK);
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    float probs[2], ent;
    int64_t pred;
    CHECK(gx_uda_predict(&ctx, &m, x.data, m.cfg.size, 1, GX_UDA_TARGET, probs, &ent, &pred, &err) == GX_OK);
    if (n == 1) {
        CHECK(rows[0].score == (double)ent / log(2.0));
        CHECK(rows[0].class_index == pred);
        CHECK_NEAR(rows[0].threshold, meta.rho / log(2.0), 1e-12);
        CHECK(rows[0].is_anomaly == (rows[0].score > rows[0].threshold));
    }
    gx_ctx_free(&ctx);
    gx_image_free(&x);
    gx_image_free(&im);
    gx_uda_free(&m);
    gx_st_close(&f);
    gx_dataset_close(ds);
    gx_db_close(db);
}
