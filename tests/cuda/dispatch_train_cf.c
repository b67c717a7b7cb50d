/*
 * dispatch_train_cf.c — `galaxy-train cf-inn --device cuda` (issue 10): the
 * CF-INN trainer (trainer/gx_train_cf.c) run on the CPU and on the device
 * from the same seed on a tiny synthetic survey, with every loss term on
 * (IB, MMD, reconstruction, and the cycle and background terms, whose mask
 * the host segments), validation with the counterfactual metrics and the
 * m-hat after training:
 *   - both runs finish; their per-epoch rows agree (losses within 1e-3
 *     relative: a GPU differs from the CPU by float rounding, summation
 *     order in cuBLAS and the reductions, which over a few steps stays near
 *     1e-5 relative; 1e-3 is the bar and what dispatch_models holds
 *     whole forwards to; accuracies within one image of the validation part);
 *   - last.safetensors of both hold close tensors (parameters within what
 *     Adam allows, see dispatch_models.c: 2 lr per step for a parameter whose
 *     true gradient is rounding noise) and loads as a CF-INN whose m-hat
 *     serves counterfactuals;
 *   - a run the CPU started (stop after epoch 1) resumes on the device and
 *     ends close to the uninterrupted CPU run;
 *   - without a device (a build without CUDA) --device cuda fails in setup
 *     with the device's words.
 * Without a GPU (normal builds) the first tests print "skipped: no GPU";
 * make test runs them on the host emulation (tests/cuda/emu).
 */
#include "dispatch_train_util.h"

#include "gx_cf_inn.h"
#include "gx_db.h"
#include "gx_train_cf.h"
#include "gx_train_wm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { DTC_EPOCHS = 2, DTC_STEPS = 2 };
#define DTC_LR 1e-3

/* The tiny run: 40 galaxies (28 train, 6 val), 16 training images in
 * batches of 8 (2 steps an epoch), 2 counterfactual images, all five loss
 * terms. */
static void dtc_opts(gx_train_cf_opts *o, const ttu_dirs *d, const char *out, gx_device dev) {
    gx_err err;
    gx_train_cf_opts_default(o, "tiny", &err);
    o->data = d->data;
    o->db_path = d->db;
    o->out_dir = out;
    o->epochs = DTC_EPOCHS;
    o->batch = 8;
    o->max_train = 8 * DTC_STEPS;
    o->seed = 21;
    o->lr = DTC_LR;
    o->progress = 0;
    o->prefetch = 1;
    o->cf_eval_n = 2;
    o->loss.w_cyc = 1;
    o->loss.w_bg = 5;
    o->device = dev;
}

static int dtc_fixture(gx_test_state *T, ttu_dirs *d, const char *tag) {
    if (!ttu_dirs_init(T, d, tag, "synth.h5", "runs.sqlite")) return 0;
    gx_err err;
    gx_status s = tfx_synth_small(d->data, 7, 40, tag, &err);
    CHECK_MSG(s == GX_OK, "synth: %s", err.msg);
    return s == GX_OK;
}

/* Every row of (split, name) per epoch of the two runs, within
 * atol + rtol |cpu|. */
static void dtc_rows_close(gx_test_state *T, gx_db *db, int64_t run_c, int64_t run_d, const char *split,
                           const char *name, double atol, double rtol) {
    dtu_rows_close(T, db, run_c, run_d, split, name, DTC_EPOCHS, atol, rtol, NULL);
}

static int dtc_load(gx_test_state *T, const char *dir, gx_cf_model *m) {
    char path[256];
    snprintf(path, sizeof path, "%s/last.safetensors", dir);
    gx_st_file f;
    memset(&f, 0, sizeof f);
    gx_err err;
    gx_status s = gx_st_read(&f, path, &err);
    if (s == GX_OK) s = gx_cf_load(&f, m, NULL, &err);
    gx_st_close(&f);
    CHECK_MSG(s == GX_OK, "%s: %s", path, err.msg);
    return s == GX_OK;
}

/* The checkpoint's tensors whose tolerance is not the parameters' (see
 * dtc_checkpoints_close). */
static const dtu_tol_rule dtc_tol_rules[] = {
    { "mhat_valid", 0, 0 }, { ".perm", 0, 0 },   /* flags and permutations: exact */
    { "mhat", 1e-3, 1e-2 },
};

/* The two runs' last.safetensors: parameters within 2 lr per step (see the
 * file comment) + 1e-3 relative; m-hat (means of h over the training part,
 * by the predicted class) within 1e-3 + 1e-2 relative and the same classes
 * valid (a GPU's rounding could move one image across a boundary, which
 * shifts two means by a fraction of their spread: then this fails loudly). */
static void dtc_checkpoints_close(gx_test_state *T, const char *dir_c, const char *dir_d, int steps) {
    char pc[256], pd[256];
    snprintf(pc, sizeof pc, "%s/last.safetensors", dir_c);
    snprintf(pd, sizeof pd, "%s/last.safetensors", dir_d);
    dtu_files_close_by_name(T, pc, pd, 2.0 * steps * DTC_LR, 1e-3, dtc_tol_rules,
                            (int)(sizeof dtc_tol_rules / sizeof *dtc_tol_rules), DTU_F32_ONLY, NULL);
    gx_cf_model mc, md;   /* both load as CF-INN models */
    if (!dtc_load(T, dir_c, &mc)) return;
    if (!dtc_load(T, dir_d, &md)) { gx_cf_free(&mc); return; }
    /* Loadable and usable: the device run's m-hat serves counterfactuals. */
    const int64_t K = md.cfg.classes, S = md.cfg.size, px = 3 * S * S;
    float *x = calloc((size_t)px, sizeof *x), *xcf = malloc((size_t)(K * px) * sizeof *xcf);
    for (int64_t i = 0; i < px; i++) x[i] = (float)((i % 37) / 37.0);
    int64_t targets[GX_CF_MAX_CLASSES];
    for (int64_t k = 0; k < K; k++) targets[k] = k;
    gx_cf_result res[GX_CF_MAX_CLASSES];
    gx_ctx ctx;
    gx_ctx_init(&ctx, 32 << 20);
    gx_err err;
    CHECK_MSG(gx_cf_counterfactuals(&ctx, &md, x, targets, (int)K, NULL, xcf, res, &err) == GX_OK, "%s", err.msg);
    gx_ctx_free(&ctx);
    free(x);
    free(xcf);
    gx_cf_free(&mc);
    gx_cf_free(&md);
}

/* The loss terms of both splits and the accuracies (one image of 6 apart:
 * a flipped decision, see above). */
static const char *const dtc_losses[] = { "loss_total", "loss_x", "loss_y", "loss_ib", "loss_mmd",
                                          "loss_rec", "loss_cyc", "loss_bg" };

GX_TEST(dispatch_train_cf_cpu_and_device_agree) {
    if (!dtu_have_device(T)) return;   /* the trainer opens its own device */
    ttu_dirs d;
    if (!dtc_fixture(T, &d, "dtrain_cf")) { tfx_rmtree(d.dir); return; }
    gx_train_cf_opts o;
    gx_train_cf_result rc, rd;
    gx_err err;
    dtc_opts(&o, &d, d.outA, GX_DEVICE_CPU);
    CHECK_MSG(gx_train_cf(&o, &rc, &err) == GX_OK, "cpu run: %s", err.msg);
    dtc_opts(&o, &d, d.outB, GX_DEVICE_CUDA);
    CHECK_MSG(gx_train_cf(&o, &rd, &err) == GX_OK, "device run: %s", err.msg);
    CHECK(rc.epochs_done == DTC_EPOCHS && rd.epochs_done == DTC_EPOCHS && !rd.interrupted);
    CHECK_NEAR(rd.last_train_loss, rc.last_train_loss, 1e-5 + 1e-3 * fabs(rc.last_train_loss));
    gx_db *db;
    CHECK(gx_db_open(&db, d.db, &err) == GX_OK);
    dtu_check_finished(T, db, rc.run_id);
    dtu_check_finished(T, db, rd.run_id);
    for (size_t i = 0; i < sizeof dtc_losses / sizeof dtc_losses[0]; i++) {
        dtc_rows_close(T, db, rc.run_id, rd.run_id, "train", dtc_losses[i], 1e-5, 1e-3);
        dtc_rows_close(T, db, rc.run_id, rd.run_id, "val", dtc_losses[i], 1e-5, 1e-3);
    }
    dtc_rows_close(T, db, rc.run_id, rd.run_id, "train", "rec_ssim", 1e-5, 1e-3);
    dtc_rows_close(T, db, rc.run_id, rd.run_id, "val", "rec_ssim", 1e-5, 1e-3);
    dtc_rows_close(T, db, rc.run_id, rd.run_id, "val", "nll", 1e-4, 1e-3);
    dtc_rows_close(T, db, rc.run_id, rd.run_id, "train", "grad_norm", 1e-5, 1e-3);
    dtc_rows_close(T, db, rc.run_id, rd.run_id, "train", "accuracy", 1.0 / 16 + 1e-9, 0);
    dtc_rows_close(T, db, rc.run_id, rd.run_id, "val", "accuracy", 1.0 / 6 + 1e-9, 0);
    dtc_rows_close(T, db, rc.run_id, rd.run_id, "val", "cf_msd_x_cf", 1e-4, 1e-2);
    gx_db_close(db);
    dtc_checkpoints_close(T, d.outA, d.outB, DTC_EPOCHS * DTC_STEPS);
    tfx_rmtree(d.dir);
}

/* A run the CPU started and stopped after its first epoch, resumed on the
 * device (weights and Adam moments from the CPU's state file): it ends
 * where the CPU's uninterrupted run ends, within the same tolerances. */
GX_TEST(dispatch_train_cf_resume_cpu_run_on_device) {
    if (!dtu_have_device(T)) return;
    ttu_dirs d;
    if (!dtc_fixture(T, &d, "dtrain_cf_resume")) { tfx_rmtree(d.dir); return; }
    gx_train_cf_opts o;
    gx_train_cf_result ra, rb;
    gx_err err;
    dtc_opts(&o, &d, d.outA, GX_DEVICE_CPU);
    CHECK_MSG(gx_train_cf(&o, &ra, &err) == GX_OK, "cpu run: %s", err.msg);
    dtc_opts(&o, &d, d.outB, GX_DEVICE_CPU);
    o.stop_after = 1;
    CHECK_MSG(gx_train_cf(&o, &rb, &err) == GX_OK, "cpu run, first epoch: %s", err.msg);
    CHECK(rb.interrupted && rb.epochs_done == 1);
    dtc_opts(&o, &d, d.outB, GX_DEVICE_CUDA);
    o.resume_run = rb.run_id;
    int64_t run = rb.run_id;
    CHECK_MSG(gx_train_cf(&o, &rb, &err) == GX_OK, "device resume: %s", err.msg);
    CHECK(rb.run_id == run && rb.epochs_done == DTC_EPOCHS && !rb.interrupted);
    gx_db *db;
    CHECK(gx_db_open(&db, d.db, &err) == GX_OK);
    dtu_check_finished(T, db, run);
    dtc_rows_close(T, db, ra.run_id, run, "train", "loss_total", 1e-5, 1e-3);
    dtc_rows_close(T, db, ra.run_id, run, "val", "loss_total", 1e-5, 1e-3);
    gx_db_close(db);
    dtc_checkpoints_close(T, d.outA, d.outB, DTC_STEPS);
    tfx_rmtree(d.dir);
}

/* A build without a device: --device cuda stops in setup with the device's
 * words and no run row (there is nothing to mark failed yet). On the
 * emulation and on a GPU the device opens, so this is skipped there. */
GX_TEST(dispatch_train_cf_no_device_fails) {
    char why[160];
    if (gx_cuda_probe(why, sizeof why) > 0) {
        printf("%s: skipped: a device is present (%s)\n", T->name, why);
        CHECK(why[0] != 0);
        return;
    }
    ttu_dirs d;
    if (!ttu_dirs_init(T, &d, "dtrain_cf_nodev", "none.h5", "runs.sqlite")) return;
    gx_train_cf_opts o;
    gx_train_cf_result r;
    gx_err err;
    dtc_opts(&o, &d, d.outA, GX_DEVICE_CUDA);
    CHECK(gx_train_cf(&o, &r, &err) == GX_ERR_IO);
    CHECK_MSG(strstr(err.msg, "device cuda:0:") == err.msg, "%s", err.msg);
    tfx_rmtree(d.dir);
}

/* --judge on the device: the WaveletMamba judge's parameters go to the
 * device with the CF-INN's and classify the counterfactuals the device
 * decoded; cf_valid_judge (and the rest of the validation) as on the CPU.
 * The judge (tiny, 16x16: the 32x32 counterfactuals are resized) is
 * trained for one short epoch on the CPU first. */
GX_TEST(dispatch_train_cf_judge_on_device) {
    if (!dtu_have_device(T)) return;
    ttu_dirs d;
    if (!dtc_fixture(T, &d, "dtrain_cf_judge")) { tfx_rmtree(d.dir); return; }
    char wout[160], judge[200];
    snprintf(wout, sizeof wout, "%s/W", d.dir);
    snprintf(judge, sizeof judge, "%s/last.safetensors", wout);
    gx_train_wm_opts wo;
    gx_train_wm_result wr;
    gx_err err;
    gx_train_wm_opts_default(&wo, "tiny", &err);
    wo.data = d.data; wo.db_path = d.db; wo.out_dir = wout;
    wo.epochs = 1; wo.batch = 8; wo.accum = 1; wo.seed = 3; wo.progress = 0; wo.max_train = 8;
    wo.model.size = 16;
    CHECK_MSG(gx_train_wm(&wo, &wr, &err) == GX_OK, "judge training: %s", err.msg);
    gx_train_cf_opts o;
    gx_train_cf_result rc, rd;
    dtc_opts(&o, &d, d.outA, GX_DEVICE_CPU);
    o.epochs = 1;
    o.judge = judge;
    CHECK_MSG(gx_train_cf(&o, &rc, &err) == GX_OK, "cpu run: %s", err.msg);
    dtc_opts(&o, &d, d.outB, GX_DEVICE_CUDA);
    o.epochs = 1;
    o.judge = judge;
    CHECK_MSG(gx_train_cf(&o, &rd, &err) == GX_OK, "device run: %s", err.msg);
    gx_db *db;
    int nc = 0, nd = 0;
    double vc[2], vd[2];
    CHECK(gx_db_open(&db, d.db, &err) == GX_OK);
    CHECK(gx_db_metric_get(db, rc.run_id, "val", "cf_valid_judge", NULL, vc, 2, &nc, &err) == GX_OK);
    CHECK(gx_db_metric_get(db, rd.run_id, "val", "cf_valid_judge", NULL, vd, 2, &nd, &err) == GX_OK);
    /* 2 images x 4 other classes: one counterfactual of 8 may flip. */
    CHECK_MSG(nc == 1 && nd == 1 && vc[0] >= 0 && vc[0] <= 1 && fabs(vd[0] - vc[0]) <= 1.0 / 8 + 1e-9,
              "cf_valid_judge: cpu %g (%d rows), device %g (%d rows)", nc ? vc[0] : NAN, nc, nd ? vd[0] : NAN, nd);
    dtu_check_finished(T, db, rd.run_id);
    gx_db_close(db);
    tfx_rmtree(d.dir);
}
