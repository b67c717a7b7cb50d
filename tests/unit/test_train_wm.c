/*
 * test_train_wm.c — the WaveletMamba trainer end to end on a tiny synthetic
 * survey (60 galaxies, 32x32, rendered here with synth/gx_synth.h):
 *   - SHA-256 against the FIPS 180-4 example vectors;
 *   - --set parsing (unknown key / bad value named in the message);
 *   - a 3-epoch run: the run row, every per-epoch metric name, last/best
 *     checkpoints whose recorded sha256 matches the file, checkpoint
 *     metadata, colour statistics set, training loss falling;
 *   - resume: 2 epochs, "kill" (the call returns; last.safetensors is even
 *     deleted), resume to 3 -> weights and optimiser state bit-identical to
 *     the uninterrupted run;
 *   - eval across sizes: an accuracy per size and a finite CV, stored.
 * The shared fixture (dataset + run A) is built once per process.
 */
#include "gx_test.h"
#include "test_train_util.h"
#include "gx_db.h"
#include "gx_sha256.h"
#include "gx_synth.h"
#include "gx_train_wm.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------- SHA-256 */

GX_TEST(train_wm_sha256_vectors) {
    char hex[65];
    gx_sha256_hex("abc", 3, hex);
    CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    gx_sha256_hex("", 0, hex);
    CHECK(!strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    const char *m56 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    gx_sha256_hex(m56, strlen(m56), hex);
    CHECK(!strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
    /* One million 'a' fed in uneven pieces (exercises the partial-block path). */
    gx_sha256 s;
    gx_sha256_init(&s);
    char a[997];
    memset(a, 'a', sizeof a);
    size_t left = 1000000;
    while (left) {
        size_t k = left < sizeof a ? left : (left % 7 ? 997 : 61);
        gx_sha256_update(&s, a, k);
        left -= k;
    }
    uint8_t d[32];
    gx_sha256_final(&s, d);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    CHECK(!strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"));
}

/* ------------------------------------------------------------- options */

GX_TEST(train_wm_set_options) {
    gx_train_wm_opts o;
    gx_err err;
    CHECK(gx_train_wm_opts_default(&o, "tiny", &err) == GX_OK);
    CHECK(o.model.size == 32 && o.accum == 8 && fabs(o.lr_peak - 1e-3) < 1e-15);
    CHECK(gx_train_wm_opts_default(&o, "huge", &err) == GX_ERR_INVALID);
    CHECK(strstr(err.msg, "huge") != NULL);
    gx_train_wm_opts_default(&o, "small", &err);
    CHECK(gx_train_wm_set(&o, "lr_peak", "2e-3", &err) == GX_OK && o.lr_peak == 2e-3);
    CHECK(gx_train_wm_set(&o, "d_model", "24", &err) == GX_OK && o.model.d_model == 24);
    CHECK(gx_train_wm_set(&o, "hk_mode", "batch", &err) == GX_OK && o.loss.hk_mode == GX_WM_HK_BATCH);
    CHECK(gx_train_wm_set(&o, "sk_iters", "20", &err) == GX_OK && o.loss.sk_iters == 20);
    CHECK(gx_train_wm_set(&o, "aug_rot", "90", &err) == GX_OK && o.aug.rot_max_deg == 90);
    CHECK(gx_train_wm_set(&o, "no_such_key", "1", &err) == GX_ERR_NOTFOUND);
    CHECK(strstr(err.msg, "no_such_key") != NULL);
    CHECK(gx_train_wm_set(&o, "lr_peak", "fast", &err) == GX_ERR_INVALID);
    CHECK(strstr(err.msg, "lr_peak") && strstr(err.msg, "fast"));
    CHECK(gx_train_wm_set(&o, "batch", "1.5", &err) == GX_ERR_INVALID);
    CHECK(gx_train_wm_set(&o, "delta_mode", "sideways", &err) == GX_ERR_INVALID);
    CHECK(strstr(err.msg, "delta_mode") != NULL);
}

/* -------------------------------------------------------- shared fixture */

typedef struct {
    int ready, ok;
    ttu_dirs d;
    gx_train_wm_result A;
} wm_fixture;

static wm_fixture FX;

/* The fixture's directory (~100 MB of checkpoints) goes at process exit,
 * whichever test ran last. */
static void fx_cleanup(void) {
    tfx_rmtree(FX.d.dir);
}

static void fx_opts(gx_train_wm_opts *o, const char *out) {
    gx_err err;
    gx_train_wm_opts_default(o, "tiny", &err);
    o->data = FX.d.data;
    o->db_path = FX.d.db;
    o->out_dir = out;
    o->epochs = 3;
    o->batch = 8;
    o->accum = 1;
    o->seed = 11;
    o->progress = 0;
    o->lr_peak = 3e-3;
    o->warmup_epochs = 0.5;
    o->loss.sk_iters = 20;       /* HK turns on at epoch 2; keep it cheap */
}

/* Renders the dataset and runs A (3 epochs uninterrupted) once. */
static wm_fixture *fx_get(gx_test_state *T) {
    if (FX.ready) return FX.ok ? &FX : NULL;
    FX.ready = 1;
    if (!ttu_dirs_init(T, &FX.d, "train_wm", "synth.h5", "runs.sqlite")) return NULL;
    atexit(fx_cleanup);
    gx_err err;
    gx_status s = tfx_synth_small(FX.d.data, 5, 60, "test_train_wm", &err);
    CHECK_MSG(s == GX_OK, "synth: %s", err.msg);
    if (s != GX_OK) return NULL;
    gx_train_wm_opts o;
    fx_opts(&o, FX.d.outA);
    s = gx_train_wm(&o, &FX.A, &err);
    CHECK_MSG(s == GX_OK, "train A: %s", err.msg);
    if (s != GX_OK) return NULL;
    FX.ok = 1;
    return &FX;
}

/* ----------------------------------------------------------------- tests */

GX_TEST(train_wm_run_metrics_checkpoints) {
    wm_fixture *F = fx_get(T);
    if (!F) return;
    CHECK(F->A.epochs_done == 3);
    CHECK(F->A.run_id >= 1);
    CHECK(F->A.best_val_accuracy >= 0 && F->A.best_val_accuracy <= 1);
    CHECK(F->A.images_per_s > 0);
    gx_db *db;
    gx_err err;
    CHECK(gx_db_open(&db, F->d.db, &err) == GX_OK);
    char st[32];
    CHECK(gx_db_run_status(db, F->A.run_id, st, sizeof st, &err) == GX_OK && !strcmp(st, "finished"));
    /* Every metric name, one row per epoch. */
    static const char *const val_names[] = {
        "loss_total", "loss_cls", "loss_red", "loss_hk", "loss_vib", "loss_lsi", "accuracy", "ce",
        "recall_0", "auc_macro", "auc_micro", "ap_macro", "z_log_mse", "z_mae", "z_r2", "z_bias",
        "z_nmad", "z_outlier_rate", "z_bin0_log_mse", "z_bin0_bias", "z_bin3_log_mse", "z_bin3_bias" };
    static const char *const train_names[] = {
        "loss_total", "loss_cls", "loss_red", "loss_hk", "loss_vib", "loss_lsi", "accuracy", "lr",
        "images_per_s", "grad_norm", "task_matrix_00", "task_matrix_01", "task_matrix_10",
        "task_matrix_11", "task_weight_00", "task_weight_11" };
    int ep[8], n;
    double v[8];
    for (size_t i = 0; i < sizeof val_names / sizeof *val_names; i++) {
        CHECK(gx_db_metric_get(db, F->A.run_id, "val", val_names[i], ep, v, 8, &n, &err) == GX_OK);
        CHECK_MSG(n == 3 && ep[0] == 0 && ep[2] == 2, "val %s: %d rows", val_names[i], n);
    }
    for (size_t i = 0; i < sizeof train_names / sizeof *train_names; i++) {
        CHECK(gx_db_metric_get(db, F->A.run_id, "train", train_names[i], ep, v, 8, &n, &err) == GX_OK);
        CHECK_MSG(n == 3 && isfinite(v[2]), "train %s: %d rows", train_names[i], n);
    }
    /* Per-class recall for every class of the dataset (10 with a balanced synth). */
    CHECK(gx_db_metric_get(db, F->A.run_id, "val", "recall_9", ep, v, 8, &n, &err) == GX_OK && n == 3);
    /* HK is off for epochs 0, 1 (defaults) and on at 2. */
    CHECK(gx_db_metric_get(db, F->A.run_id, "train", "loss_hk", ep, v, 8, &n, &err) == GX_OK);
    CHECK(n == 3 && v[0] == 0 && v[1] == 0 && v[2] > 0);
    /* Learning rate: warm-up then cosine -> falls after the peak, ends near lr_end. */
    CHECK(gx_db_metric_get(db, F->A.run_id, "train", "lr", ep, v, 8, &n, &err) == GX_OK);
    CHECK(n == 3 && v[2] < v[1] && v[2] < 3e-3);
    /* Checkpoints: the newest row of each kind has the file's sha256. */
    ttu_check_checkpoint_sha(T, gx_db_handle(db), F->A.run_id);
    gx_db_close(db);
    /* Checkpoint metadata and the stored colour statistics. */
    char path[256];
    snprintf(path, sizeof path, "%s/last.safetensors", F->d.outA);
    gx_st_file f;
    memset(&f, 0, sizeof f);
    CHECK(gx_st_read(&f, path, &err) == GX_OK);
    CHECK(gx_st_meta(&f, "format") && !strcmp(gx_st_meta(&f, "format"), "galaxyd-checkpoint-1"));
    CHECK(gx_st_meta(&f, "model") && !strcmp(gx_st_meta(&f, "model"), "wavelet-mamba"));
    CHECK(gx_st_meta(&f, "config") && strstr(gx_st_meta(&f, "config"), "\"d_model\":16"));
    CHECK(gx_st_meta(&f, "classes") && strstr(gx_st_meta(&f, "classes"), "Disturbed"));
    CHECK(gx_st_meta(&f, "preprocess") && strstr(gx_st_meta(&f, "preprocess"), "\"size\":32"));
    CHECK(gx_st_meta(&f, "epoch") && !strcmp(gx_st_meta(&f, "epoch"), "2"));
    CHECK(gx_st_meta(&f, "run_id") && gx_st_meta(&f, "created"));
    const gx_st_tensor *iqr = gx_st_find(&f, "feature_extractor.color_stats.iqr");
    CHECK(iqr != NULL);
    if (iqr) {
        float q[4];
        memcpy(q, iqr->data, sizeof q);
        CHECK(q[0] > 0 && q[0] != 1.0f && isfinite(q[3]));   /* set from data, not the init 1 */
    }
    gx_st_close(&f);
}

/* The loss goes down on an easy setting: no augmentation, plain sampling,
 * constant lr 3e-3, 40 training images. Measured by the plain cross-entropy:
 * the focal loss_cls is no such measure (its gamma falls with the CE). */
GX_TEST(train_wm_loss_decreases) {
    wm_fixture *F = fx_get(T);
    if (!F) return;
    char out[160];
    snprintf(out, sizeof out, "%s/C", F->d.dir);
    gx_train_wm_opts o;
    gx_train_wm_result r;
    gx_err err;
    fx_opts(&o, out);
    o.augment = 0;
    o.balanced = 0;
    o.lr_start = o.lr_end = 3e-3;
    o.warmup_epochs = 0;
    CHECK_MSG(gx_train_wm(&o, &r, &err) == GX_OK, "train C: %s", err.msg);
    gx_db *db;
    int n;
    double v[4];
    CHECK(gx_db_open(&db, F->d.db, &err) == GX_OK);
    CHECK(gx_db_metric_get(db, r.run_id, "train", "ce", NULL, v, 4, &n, &err) == GX_OK);
    CHECK_MSG(n == 3 && v[1] < v[0] && v[2] < v[1], "train ce %g %g %g", v[0], v[1], v[2]);
    gx_db_close(db);
}

GX_TEST(train_wm_resume_bit_identical) {
    wm_fixture *F = fx_get(T);
    if (!F) return;
    gx_train_wm_opts o;
    gx_train_wm_result r;
    gx_err err;
    fx_opts(&o, F->d.outB);
    o.stop_after = 2;                 /* "killed" after two complete epochs */
    CHECK_MSG(gx_train_wm(&o, &r, &err) == GX_OK, "train B: %s", err.msg);
    CHECK(r.epochs_done == 2 && r.interrupted);
    int64_t run = r.run_id;
    CHECK(run != F->A.run_id);
    gx_db *db;
    char st[32];
    CHECK(gx_db_open(&db, F->d.db, &err) == GX_OK);
    CHECK(gx_db_run_status(db, run, st, sizeof st, &err) == GX_OK && !strcmp(st, "interrupted"));
    gx_db_close(db);
    /* A kill may leave a half-written temp file or a stale "last": resume
     * must rely on train_state only. */
    char path[256];
    snprintf(path, sizeof path, "%s/last.safetensors", F->d.outB);
    unlink(path);
    /* The wrong run id is refused, naming both. */
    fx_opts(&o, F->d.outB);
    o.resume_run = run + 100;
    CHECK(gx_train_wm(&o, &r, &err) != GX_OK);
    /* A fresh call (new model, new loaders) resumes to epoch 3; --seed is
     * deliberately different: the run's own seed must win. */
    fx_opts(&o, F->d.outB);
    o.resume_run = run;
    o.seed = 999;
    CHECK_MSG(gx_train_wm(&o, &r, &err) == GX_OK, "resume B: %s", err.msg);
    CHECK(r.epochs_done == 3 && r.run_id == run);
    CHECK(ttu_same_file(T, F->d.outA, F->d.outB, "last.safetensors"));
    CHECK(ttu_same_file(T, F->d.outA, F->d.outB, "train_state.safetensors"));   /* optimiser moments and step too */
    CHECK(gx_db_open(&db, F->d.db, &err) == GX_OK);
    CHECK(gx_db_run_status(db, run, st, sizeof st, &err) == GX_OK && !strcmp(st, "finished"));
    int n;
    double va[4], vb[4];
    CHECK(gx_db_metric_get(db, F->A.run_id, "val", "accuracy", NULL, va, 4, &n, &err) == GX_OK && n == 3);
    CHECK(gx_db_metric_get(db, run, "val", "accuracy", NULL, vb, 4, &n, &err) == GX_OK && n == 3);
    CHECK(va[2] == vb[2] && va[0] == vb[0]);
    gx_db_close(db);
    /* Killed during the first epoch: the run row exists but no state file.
     * Resuming starts over from the run's seed and still ends equal to A. */
    char outD[160];
    snprintf(outD, sizeof outD, "%s/D", F->d.dir);
    fx_opts(&o, outD);
    o.stop_after = 1;
    CHECK_MSG(gx_train_wm(&o, &r, &err) == GX_OK, "train D: %s", err.msg);
    run = r.run_id;
    snprintf(path, sizeof path, "%s/train_state.safetensors", outD);
    CHECK(unlink(path) == 0);
    fx_opts(&o, outD);
    o.resume_run = run;
    o.seed = 12345;
    CHECK_MSG(gx_train_wm(&o, &r, &err) == GX_OK, "resume D: %s", err.msg);
    CHECK(r.epochs_done == 3);
    CHECK(ttu_same_file(T, F->d.outA, outD, "last.safetensors"));
}

/* A stop request (what galaxy-train's SIGINT handler sets) ends the call at
 * the next micro-batch: no partial epoch is kept, the run is interrupted. */
GX_TEST(train_wm_stop_flag) {
    wm_fixture *F = fx_get(T);
    if (!F) return;
    char out[160];
    snprintf(out, sizeof out, "%s/E", F->d.dir);
    static volatile sig_atomic_t stop = 1;
    gx_train_wm_opts o;
    gx_train_wm_result r;
    gx_err err;
    fx_opts(&o, out);
    o.stop = &stop;
    CHECK_MSG(gx_train_wm(&o, &r, &err) == GX_OK, "train E: %s", err.msg);
    CHECK(r.interrupted && r.epochs_done == 0);
    gx_db *db;
    char st[32];
    CHECK(gx_db_open(&db, F->d.db, &err) == GX_OK);
    CHECK(gx_db_run_status(db, r.run_id, st, sizeof st, &err) == GX_OK && !strcmp(st, "interrupted"));
    gx_db_close(db);
    snprintf(out, sizeof out, "%s/E/last.safetensors", F->d.dir);
    CHECK(access(out, F_OK) != 0);
}

GX_TEST(train_wm_eval_sizes) {
    wm_fixture *F = fx_get(T);
    if (!F) return;
    char ck[256];
    snprintf(ck, sizeof ck, "%s/best.safetensors", F->d.outA);
    gx_eval_wm_opts o;
    memset(&o, 0, sizeof o);
    o.checkpoint = ck;
    o.data = F->d.data;
    o.db_path = F->d.db;
    o.sizes[0] = 24; o.sizes[1] = 32; o.sizes[2] = 48;
    o.n_sizes = 3;
    o.batch = 16;
    o.all = 1;                         /* 60 samples; the test part alone is 9 */
    gx_eval_wm_result r;
    gx_err err;
    CHECK_MSG(gx_eval_wm(&o, &r, &err) == GX_OK, "eval: %s", err.msg);
    CHECK(r.n == 60 && r.n_sizes == 3);
    double mean = 0, var = 0;
    for (int i = 0; i < 3; i++) {
        CHECK(r.accuracy[i] >= 0 && r.accuracy[i] <= 1);
        mean += r.accuracy[i] / 3;
    }
    for (int i = 0; i < 3; i++) var += (r.accuracy[i] - mean) * (r.accuracy[i] - mean) / 3;
    CHECK(isfinite(r.cv) && r.cv >= 0);
    CHECK_NEAR(r.cv, sqrt(var) / mean, 1e-12);
    CHECK_NEAR(r.accuracy[1], r.accuracy_nominal, 0);
    gx_db *db;
    int n;
    double v[4];
    CHECK(gx_db_open(&db, F->d.db, &err) == GX_OK);
    CHECK(gx_db_metric_get(db, F->A.run_id, "test", "accuracy_s48", NULL, v, 4, &n, &err) == GX_OK);
    CHECK(n == 1 && v[0] == r.accuracy[2]);
    CHECK(gx_db_metric_get(db, F->A.run_id, "test", "size_cv", NULL, v, 4, &n, &err) == GX_OK && n == 1);
    CHECK(gx_db_metric_get(db, F->A.run_id, "test", "z_nmad", NULL, v, 4, &n, &err) == GX_OK && n == 1);
    gx_db_close(db);
    /* The default (test part only, nominal size) works too; a bad file is an error. */
    o.all = 0; o.n_sizes = 0; o.db_path = NULL;
    CHECK_MSG(gx_eval_wm(&o, &r, &err) == GX_OK, "eval test part: %s", err.msg);
    CHECK(r.n_sizes == 1 && r.sizes[0] == 32 && r.n >= 6 && r.n <= 12);
    o.checkpoint = F->d.data;
    CHECK(gx_eval_wm(&o, &r, &err) != GX_OK);
}
