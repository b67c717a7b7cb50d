/*
 * dispatch_train_uda.c — the DeepAstroUDA trainer (trainer/gx_train_uda.h)
 * run on the device against the same run on the CPU: tiny synthetic source
 * and target surveys (as tests/unit/test_train_uda.c renders them, fewer
 * images), the tiny backbone at 32 px, 2 epochs of 4 steps from one seed.
 *
 *   - cpu_vs_device (lambda 0.05: CE + AC + ES, the memory bank, the head
 *     renormalised every step): both runs finish; every per-epoch loss row
 *     within 1e-3 relative (+1e-5: a GPU's float rounding; the emulation is
 *     nearly exact), the tuner and lr rows equal (with 2 epochs the tuner
 *     cannot move, so no loss difference can change them), the
 *     source-validation accuracy within one image; last.safetensors tensor by tensor within
 *     2e-3 + 1e-2 relative (8 SGD steps; a GPU may flip an ES mask bit or an
 *     AC key of a sample sitting on the boundary, which moves a weight by
 *     about lambda lr / B per step, ~1e-5: far inside); the device
 *     checkpoint loads and predicts like the CPU one.
 *   - resume_across_devices: a CPU run stopped after epoch 1, resumed on
 *     the device for epoch 2, ends where the uninterrupted CPU run ends
 *     (same tolerances): the device takes up host weights, SGD momentum and
 *     the bank from the state file; and the reverse (device, then CPU).
 *   - baseline_lambda0: no target in training; the target BN set copied
 *     from the source set on the host copies and uploaded each epoch: the
 *     device checkpoint has d1 == d0 exactly, and matches the CPU run.
 *   - score_device: gx_uda_score with the device stores the CPU's scores.
 *
 * gx_gpu_open only decides skip/run (the trainer opens its own device).
 */
#include "dispatch_util.h"

#include "gx_db.h"
#include "gx_synth.h"
#include "gx_train_uda.h"
#include "unit/test_train_util.h"

#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#define TU_LOSS_RTOL 1e-3
#define TU_LOSS_ATOL 1e-5
#define TU_W_ATOL    2e-3
#define TU_W_RTOL    1e-2

typedef struct {
    int ready, ok;
    ttu_dirs d;                 /* data: the source survey */
    char tgt[160];
} tu_fixture;

static tu_fixture TUF;

static void tu_cleanup(void) {
    if (TUF.d.dir[0]) tfx_rmtree(TUF.d.dir);
}

static gx_status tu_synth(const char *path, const char *survey, int classes, uint64_t seed, gx_err *err) {
    gx_synth_opts so;
    gx_synth_opts_default(&so);
    so.seed = seed;
    so.n = 64;
    so.size = 32;
    so.balanced = 1;
    so.n_classes = classes;
    so.n_surveys = 1;
    so.surveys[0] = gx_synth_survey_find(survey);
    return gx_synth_write(&so, path, NULL, "dispatch_train_uda", NULL, NULL, err);
}

/* The two surveys, made once per process. */
static tu_fixture *tu_get(gx_test_state *T) {
    if (TUF.ready) return TUF.ok ? &TUF : NULL;
    TUF.ready = 1;
    if (!ttu_dirs_init(T, &TUF.d, "dispatch_train_uda", "sdss.h5", "runs.db")) return NULL;
    atexit(tu_cleanup);
    snprintf(TUF.tgt, sizeof TUF.tgt, "%s/decals.h5", TUF.d.dir);
    gx_err err;
    gx_status s = tu_synth(TUF.d.data, "sdss", 10, 31, &err);
    if (s == GX_OK) s = tu_synth(TUF.tgt, "decals", 11, 32, &err);
    CHECK_MSG(s == GX_OK, "synth: %s", err.msg);
    TUF.ok = s == GX_OK;
    return TUF.ok ? &TUF : NULL;
}

static void tu_opts(gx_train_uda_opts *o, const tu_fixture *F, const char *out, gx_device dev, double lambda) {
    gx_err err;
    gx_train_uda_opts_default(o);
    gx_train_uda_backbone(o, "tiny", &err);
    o->source = F->d.data;
    o->target = F->tgt;
    o->db_path = F->d.db;
    o->out_dir = out;
    o->known = "smooth=2+3+4,disk=5+6+7";
    o->exclude = "0,8,9";
    o->epochs = 2;
    o->batch_source = o->batch_target = 8;
    o->eval_batch = 16;
    o->seed = 5;
    o->progress = 0;
    o->lambda = lambda;
    o->device = dev;
}

/* Runs o; 1 when it finished (checked). */
static int tu_run(gx_test_state *T, const gx_train_uda_opts *o, gx_train_uda_result *r, const char *what) {
    gx_err err;
    gx_status s = gx_train_uda(o, r, &err);
    CHECK_MSG(s == GX_OK, "%s: %s", what, err.msg);
    return s == GX_OK;
}

static double tu_metric(sqlite3 *h, int64_t run, int epoch, const char *split, const char *name) {
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT value FROM metrics WHERE run_id=%lld AND epoch=%d AND split='%s' AND name='%s'",
             (long long)run, epoch, split, name);
    sqlite3_stmt *st;
    double v = NAN;
    if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK) return NAN;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) v = sqlite3_column_double(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Per-epoch rows of runs a (CPU) and b (device): losses close, the rows no
 * loss difference can move equal. lambda 0 has no AC/ES rows. */
static void tu_rows_agree(gx_test_state *T, int64_t a, int64_t b, int epochs, int adapt) {
    gx_db *db;
    gx_err err;
    if (gx_db_open(&db, TUF.d.db, &err) != GX_OK) { CHECK_MSG(0, "db: %s", err.msg); return; }
    sqlite3 *h = gx_db_handle(db);
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM runs WHERE id IN (%lld,%lld) AND status='finished'",
             (long long)a, (long long)b);
    CHECK(tfx_sql_int(h, sql) == 2);
    const char *loss[] = { "loss_ce", "loss_total", "loss_ac", "loss_es" };
    const char *same[] = { "rho", "margin", "tuner_rho", "tuner_margin", "tuner_changed", "lr_backbone", "lr_head" };
    for (int e = 0; e < epochs; e++) {
        for (int i = 0; i < (adapt ? 4 : 2); i++) {
            double x = tu_metric(h, a, e, "train", loss[i]), y = tu_metric(h, b, e, "train", loss[i]);
            CHECK_MSG(isfinite(x) && fabs(y - x) <= TU_LOSS_ATOL + TU_LOSS_RTOL * fabs(x),
                      "epoch %d %s: cpu %.9g device %.9g", e, loss[i], x, y);
        }
        /* A mean over 4 steps of fractions of 8: one sample on the margin
         * flipping on a GPU moves it by 1/32. */
        double fa = tu_metric(h, a, e, "train", "es_active_frac"), fb = tu_metric(h, b, e, "train", "es_active_frac");
        CHECK_MSG(!adapt || fabs(fa - fb) <= 1.0 / 32 + 1e-12, "epoch %d es_active_frac: cpu %g device %g", e, fa, fb);
        for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
            double x = tu_metric(h, a, e, "train", same[i]), y = tu_metric(h, b, e, "train", same[i]);
            CHECK_MSG(x == y, "epoch %d %s: cpu %.17g device %.17g", e, same[i], x, y);
        }
        /* At most one of the ~6 validation images may change its argmax
         * on a GPU (a near tie); the emulation gives the same value. */
        double va = tu_metric(h, a, e, "source_val", "accuracy"), vb = tu_metric(h, b, e, "source_val", "accuracy");
        CHECK_MSG(isfinite(va) && fabs(va - vb) <= 0.2, "epoch %d source_val accuracy: cpu %g device %g", e, va, vb);
        double ta = tu_metric(h, a, e, "target_test", "anomaly_auc"), tb = tu_metric(h, b, e, "target_test", "anomaly_auc");
        CHECK_MSG(fabs(ta - tb) <= 0.05, "epoch %d target_test anomaly_auc: cpu %g device %g", e, ta, tb);
    }
    ttu_check_checkpoint_sha(T, h, b);
    gx_db_close(db);
}

/* dirA/file and dirB/file: the same tensors within the weight tolerance. */
static void tu_files_close(gx_test_state *T, const char *dirA, const char *dirB, const char *file) {
    char pa[256], pb[256];
    snprintf(pa, sizeof pa, "%s/%s", dirA, file);
    snprintf(pb, sizeof pb, "%s/%s", dirB, file);
    gx_st_file fa, fb;
    memset(&fa, 0, sizeof fa);
    memset(&fb, 0, sizeof fb);
    gx_err err;
    int ok = gx_st_read(&fa, pa, &err) == GX_OK && gx_st_read(&fb, pb, &err) == GX_OK;
    CHECK_MSG(ok, "%s: %s", file, err.msg);
    int compared = 0;
    for (int i = 0; ok && i < fa.n; i++) {
        const gx_st_tensor *ta = &fa.tensors[i], *tb = gx_st_find(&fb, ta->name);
        CHECK_MSG(tb && tb->nbytes == ta->nbytes && tb->dtype == ta->dtype, "%s: tensor %s", file, ta->name);
        if (!tb || tb->nbytes != ta->nbytes || ta->dtype != GX_ST_F32) continue;
        int64_t n = (int64_t)(ta->nbytes / 4);
        gx_real *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
        if (!x || !y) { free(x); free(y); CHECK_MSG(0, "out of memory"); break; }
        for (int64_t k = 0; k < n; k++) {
            x[k] = ((const float *)ta->data)[k];
            y[k] = ((const float *)tb->data)[k];
        }
        char what[320];
        snprintf(what, sizeof what, "%s %s", file, ta->name);
        gx_test_allclose(T, what, y, x, n, TU_W_ATOL, TU_W_RTOL);
        compared++;
        free(x);
        free(y);
    }
    CHECK_MSG(!ok || compared > 20, "%s: only %d float tensors compared", file, compared);
    gx_st_close(&fa);
    gx_st_close(&fb);
}

/* The device checkpoint loads, and its predictions of the same images are
 * the CPU checkpoint's (target BN set: what galaxyd serves). */
static void tu_checkpoints_predict_alike(gx_test_state *T, const char *dirA, const char *dirB, int64_t run_b) {
    const char *dirs[2] = { dirA, dirB };
    gx_uda_model m[2];
    gx_uda_meta meta[2];
    int loaded = 0;
    gx_err err;
    for (int k = 0; k < 2; k++) {
        char p[256];
        snprintf(p, sizeof p, "%s/last.safetensors", dirs[k]);
        gx_st_file f;
        memset(&f, 0, sizeof f);
        gx_status s = gx_st_read(&f, p, &err);
        if (s == GX_OK) s = gx_uda_load(&f, &m[k], &meta[k], &err);
        gx_st_close(&f);
        CHECK_MSG(s == GX_OK, "%s: %s", p, err.msg);
        if (s != GX_OK) break;
        loaded++;
    }
    if (loaded == 2) {
        CHECK(meta[1].run_id == run_b && meta[1].epoch == 1 && meta[1].rho == meta[0].rho);
        enum { N = 6, S = 32 };
        float *x = malloc((size_t)N * 3 * S * S * sizeof *x), pr[2][N * 2], en[2][N];
        gx_rng rng;
        gx_rng_init(&rng, 11);
        for (int64_t i = 0; x && i < (int64_t)N * 3 * S * S; i++) x[i] = (float)gx_rng_uniform(&rng);
        gx_ctx ctx;
        gx_ctx_init(&ctx, 32u << 20);
        for (int k = 0; x && k < 2; k++)
            CHECK(gx_uda_predict(&ctx, &m[k], x, S, N, GX_UDA_TARGET, pr[k], en[k], NULL, &err) == GX_OK);
        for (int i = 0; x && i < N * 2; i++)
            CHECK_MSG(fabsf(pr[1][i] - pr[0][i]) <= 1e-3f, "prob %d: cpu %g device %g", i, pr[0][i], pr[1][i]);
        gx_ctx_free(&ctx);
        free(x);
    }
    for (int k = 0; k < loaded; k++) gx_uda_free(&m[k]);
}

/* A gx_gpu_open for the skip line only: the trainer opens its own device. */
static int tu_gpu(gx_test_state *T) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return 0;
    gx_gpu_close(&g);
    return 1;
}

GX_TEST(dispatch_train_uda_cpu_vs_device) {
    if (!tu_gpu(T)) return;
    tu_fixture *F = tu_get(T);
    if (!F) return;
    char outA[160], outB[160];
    snprintf(outA, sizeof outA, "%s/cpu", F->d.dir);
    snprintf(outB, sizeof outB, "%s/dev", F->d.dir);
    gx_train_uda_opts oa, ob;
    gx_train_uda_result ra, rb;
    tu_opts(&oa, F, outA, GX_DEVICE_CPU, 0.05);
    tu_opts(&ob, F, outB, GX_DEVICE_CUDA, 0.05);
    if (!tu_run(T, &oa, &ra, "cpu run") || !tu_run(T, &ob, &rb, "device run")) return;
    CHECK(ra.epochs_done == 2 && rb.epochs_done == 2 && rb.best_epoch == ra.best_epoch);
    CHECK_MSG(fabs(rb.last_train_loss - ra.last_train_loss) <= TU_LOSS_ATOL + TU_LOSS_RTOL * fabs(ra.last_train_loss),
              "last train loss: cpu %.9g device %.9g", ra.last_train_loss, rb.last_train_loss);
    tu_rows_agree(T, ra.run_id, rb.run_id, 2, 1);
    tu_files_close(T, outA, outB, "last.safetensors");
    tu_files_close(T, outA, outB, "train_state.safetensors");   /* momentum and the bank too */
    tu_checkpoints_predict_alike(T, outA, outB, rb.run_id);
}

/* Epoch 1 on `first`, epoch 2 resumed on the other device, into out. */
static int tu_run_switched(gx_test_state *T, const tu_fixture *F, const char *out, gx_device first,
                           int64_t *run) {
    gx_train_uda_opts o;
    gx_train_uda_result r1, r2;
    tu_opts(&o, F, out, first, 0.05);
    o.stop_after = 1;
    if (!tu_run(T, &o, &r1, "epoch 1")) return 0;
    CHECK(r1.epochs_done == 1 && r1.interrupted);
    o.stop_after = 0;
    o.resume_run = r1.run_id;
    o.device = first == GX_DEVICE_CPU ? GX_DEVICE_CUDA : GX_DEVICE_CPU;
    if (!tu_run(T, &o, &r2, "epoch 2 (resumed)")) return 0;
    CHECK(r2.run_id == r1.run_id && r2.epochs_done == 2);
    *run = r1.run_id;
    return 1;
}

GX_TEST(dispatch_train_uda_resume_across_devices) {
    if (!tu_gpu(T)) return;
    tu_fixture *F = tu_get(T);
    if (!F) return;
    char outA[160], outC[160], outD[160];
    snprintf(outA, sizeof outA, "%s/cpu_full", F->d.dir);
    snprintf(outC, sizeof outC, "%s/cpu_then_dev", F->d.dir);
    snprintf(outD, sizeof outD, "%s/dev_then_cpu", F->d.dir);
    gx_train_uda_opts oa;
    gx_train_uda_result ra;
    int64_t rc, rd;
    tu_opts(&oa, F, outA, GX_DEVICE_CPU, 0.05);
    if (!tu_run(T, &oa, &ra, "cpu run")) return;
    /* The device takes up host weights, momentum and bank from a CPU state
     * file, and the CPU takes them up from a device run's. */
    if (tu_run_switched(T, F, outC, GX_DEVICE_CPU, &rc)) {
        tu_rows_agree(T, ra.run_id, rc, 2, 1);
        tu_files_close(T, outA, outC, "last.safetensors");
        tu_files_close(T, outA, outC, "train_state.safetensors");
    }
    if (tu_run_switched(T, F, outD, GX_DEVICE_CUDA, &rd)) {
        tu_rows_agree(T, ra.run_id, rd, 2, 1);
        tu_files_close(T, outA, outD, "last.safetensors");
        tu_files_close(T, outA, outD, "train_state.safetensors");
    }
}

GX_TEST(dispatch_train_uda_baseline_lambda0) {
    if (!tu_gpu(T)) return;
    tu_fixture *F = tu_get(T);
    if (!F) return;
    char outA[160], outB[160];
    snprintf(outA, sizeof outA, "%s/base_cpu", F->d.dir);
    snprintf(outB, sizeof outB, "%s/base_dev", F->d.dir);
    gx_train_uda_opts oa, ob;
    gx_train_uda_result ra, rb;
    tu_opts(&oa, F, outA, GX_DEVICE_CPU, 0);
    tu_opts(&ob, F, outB, GX_DEVICE_CUDA, 0);
    if (!tu_run(T, &oa, &ra, "cpu baseline") || !tu_run(T, &ob, &rb, "device baseline")) return;
    tu_rows_agree(T, ra.run_id, rb.run_id, 2, 0);
    tu_files_close(T, outA, outB, "last.safetensors");
    /* Every target BN tensor equals its source twin in the device file. */
    char p[256];
    snprintf(p, sizeof p, "%s/last.safetensors", outB);
    gx_st_file f;
    memset(&f, 0, sizeof f);
    gx_err err;
    CHECK_MSG(gx_st_read(&f, p, &err) == GX_OK, "%s", err.msg);
    int pairs = 0;
    for (int i = 0; i < f.n; i++) {
        const char *d0 = strstr(f.tensors[i].name, ".d0.");
        if (!d0) continue;
        char twin[256];
        snprintf(twin, sizeof twin, "%s", f.tensors[i].name);
        twin[d0 - f.tensors[i].name + 2] = '1';
        const gx_st_tensor *t1 = gx_st_find(&f, twin);
        CHECK_MSG(t1 && t1->nbytes == f.tensors[i].nbytes && !memcmp(t1->data, f.tensors[i].data, t1->nbytes),
                  "%s differs from %s", twin, f.tensors[i].name);
        pairs++;
    }
    CHECK_MSG(pairs >= 20, "%d BN pairs", pairs);
    gx_st_close(&f);
}

/* (external id, score, class) of every stored score of db, by id. */
static int tu_scores(gx_test_state *T, const char *path, char (*id)[64], double *score, int *cls, int cap) {
    gx_db *db;
    gx_err err;
    if (gx_db_open(&db, path, &err) != GX_OK) { CHECK_MSG(0, "%s: %s", path, err.msg); return 0; }
    sqlite3_stmt *q;
    int n = 0;
    sqlite3_prepare_v2(gx_db_handle(db), "SELECT o.external_id, s.score, s.class_index FROM anomaly_scores s "
                       "JOIN objects o ON o.id = s.object_id ORDER BY o.external_id", -1, &q, NULL);
    while (n < cap && sqlite3_step(q) == SQLITE_ROW) {
        snprintf(id[n], 64, "%s", (const char *)sqlite3_column_text(q, 0));
        score[n] = sqlite3_column_double(q, 1);
        cls[n++] = sqlite3_column_int(q, 2);
    }
    sqlite3_finalize(q);
    gx_db_close(db);
    return n;
}

/* gx_uda_score on the device stores what the CPU stores: every object of
 * the target file, scores H / ln K within 1e-4 (a forward's float rounding
 * on a GPU is ~1e-6 of p), the same class where p is not a near tie (score
 * near 1 for K = 2); a second device pass skips everything. */
GX_TEST(dispatch_train_uda_score_device) {
    if (!tu_gpu(T)) return;
    tu_fixture *F = tu_get(T);
    if (!F) return;
    char ck[192], dbc[192], dbd[192];
    snprintf(ck, sizeof ck, "%s/seeded.safetensors", F->d.dir);
    snprintf(dbc, sizeof dbc, "%s/score_cpu.db", F->d.dir);
    snprintf(dbd, sizeof dbd, "%s/score_dev.db", F->d.dir);
    gx_uda_model m;
    gx_uda_init(&m, gx_uda_config_tiny(), 21);
    gx_err err;
    CHECK_MSG(gx_uda_save(&m, NULL, ck, &err) == GX_OK, "%s", err.msg);
    gx_uda_free(&m);
    gx_score_opts so = { .model_path = ck, .data = F->tgt, .db_path = dbc, .domain = GX_UDA_TARGET,
                         .batch = 24, .progress = 0 };
    gx_score_result rc, rd, rd2;
    CHECK_MSG(gx_uda_score(&so, &rc, &err) == GX_OK, "cpu: %s", err.msg);
    so.db_path = dbd;
    so.device = GX_DEVICE_CUDA;
    CHECK_MSG(gx_uda_score(&so, &rd, &err) == GX_OK, "device: %s", err.msg);
    CHECK(rc.n == 64 && rc.scored == 64 && rd.scored == 64 && rd.skipped == 0);
    CHECK(gx_uda_score(&so, &rd2, &err) == GX_OK && rd2.scored == 0 && rd2.skipped == 64);
    enum { CAP = 80 };
    char ic[CAP][64], id[CAP][64];
    double sc[CAP], sd[CAP];
    int cc[CAP], cd[CAP];
    int nc = tu_scores(T, dbc, ic, sc, cc, CAP), nd = tu_scores(T, dbd, id, sd, cd, CAP);
    CHECK(nc == 64 && nd == 64);
    int differ = 0;
    for (int i = 0; i < nc && i < nd; i++) {
        CHECK_MSG(!strcmp(ic[i], id[i]), "row %d: %s vs %s", i, ic[i], id[i]);
        if (fabs(sd[i] - sc[i]) > 1e-4 || (sc[i] < 1 - 1e-4 && cd[i] != cc[i])) differ++;
    }
    CHECK_MSG(differ == 0, "%d of %d objects scored differently on the device", differ, nc);
}
