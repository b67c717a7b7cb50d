/*
 * gx_train_cf.c — the CF-INN training loop (contract and files:
 * gx_train_cf.h). Built like trainer/gx_train_wm.c, whose conventions it
 * keeps (split, loader, database rows, atomic files, resume), with what the
 * CF-INN needs on top: the mixture means' own learning rate, the warm-up
 * without the IB term, m-hat, and the counterfactual metrics.
 *
 * Shape of one call:
 *   dataset -> stratified 70/15/15 split (seed) -> database -> model (init,
 *   or weights + Adam state from train_state on resume) -> loaders -> per
 *   epoch: train (noise on z1, losses, backward, clip, Adam with two groups;
 *   the epoch's approximate m-hat gathered on the way), validate (losses,
 *   accuracy, recall, reconstruction), counterfactual metrics on the first
 *   cf_eval_n validation images, rows, checkpoints, state -> exact m-hat
 *   over the training part into last and best -> run finished.
 *
 * Why: per-step randomness is derived from (seed, epoch, step), the state
 * file is self-sufficient (weights + optimiser) and written last, and every
 * evaluation runs with the tape off on weights it does not change: together
 * these make a resumed run bit-identical to an uninterrupted one.
 * Memory: one gx_ctx arena, reset after every batch; evaluation buffers are
 * malloc'ed once per pass (O(N*K) and cf_eval_n images).
 *
 * Device (opts.device, gx_train_device): one path for both. The model's
 * parameters (and the judge's: it classifies counterfactuals the device
 * decoded, in the same ctx) go to the device after init/resume; batches go
 * in through gx_to_ctx; everything the host reads (loss values, h, the
 * posteriors, x~) comes back through gx_to_host, once per tensor and batch;
 * the host reads parameters (mu, m-hat) from their host copies after
 * gx_params_sync_host, and m-hat, which the host computes, is written into
 * the host copies and uploaded (cf_mhat_store). On the CPU the transfers are
 * no-ops and the numbers are those of the CPU-only loop.
 */
#include "gx_train_cf.h"

#include "gx_dataset.h"
#include "gx_eval_cf.h"
#include "gx_db.h"
#include "gx_loader.h"
#include "gx_metrics.h"
#include "gx_morph.h"
#include "gx_train_common.h"
#include "gx_train_state.h"
#include "gx_train_wm.h"

#include <jansson.h>
#include <math.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CF_STATE_FORMAT "galaxyd-cf-train-state-1"
/* Salts: the per-step streams differ from the init stream of the same seed,
 * and validation's MMD samples from training's. */
#define CF_STEP_SALT 0xcf5eed5a17ull
#define CF_VAL_SALT  0xcf7a1da7e5ull

/* ================================================================ options */

gx_status gx_train_cf_opts_default(gx_train_cf_opts *o, const char *config, gx_err *err) {
    memset(o, 0, sizeof *o);
    if (!config || !strcmp(config, "default")) { o->model = gx_cf_config_default(); o->config_name = "default"; }
    else if (!strcmp(config, "tiny")) { o->model = gx_cf_config_tiny(); o->config_name = "tiny"; }
    else return gx_err_set(err, GX_ERR_INVALID, "--config: unknown config '%s' (tiny, default)", config);
    o->epochs = 100; o->batch = 128; o->seed = 1;
    o->lr = 3e-4; o->mu_lr_mult = 3; o->lr_decay = 0.99;
    o->beta1 = 0.9; o->beta2 = 0.99; o->eps = 1e-8; o->clip = 8;
    o->noise_sigma = 0.05;
    o->loss = gx_cf_loss_cfg_default();
    o->crop_frac = 1.0; o->augment = 1;
    /* The spec's augmentation: rotation 0-360 and flips, nothing photometric
     * (a counterfactual should change morphology, not learned colour noise). */
    o->aug = GX_PRE_AUG_NONE;
    o->aug.rot_max_deg = 360; o->aug.p_hflip = 0.5; o->aug.p_vflip = 0.5; o->aug.clamp = 1;
    o->prefetch = 2; o->cf_eval_n = 64; o->progress = -1; o->split_seed = -1;
    return GX_OK;
}

/* The --set table: name, type ('d' double, 'i' int, 'l' int64, 'u' uint64), offset. */
#define K_(name, t, field) { name, t, offsetof(gx_train_cf_opts, field) }
static const gx_train_set_key cf_set_keys[] = {
    K_("lr", 'd', lr), K_("mu_lr_mult", 'd', mu_lr_mult), K_("lr_decay", 'd', lr_decay),
    K_("beta1", 'd', beta1), K_("beta2", 'd', beta2), K_("eps", 'd', eps), K_("clip", 'd', clip),
    K_("warmup_epochs", 'i', warmup_epochs), K_("noise_sigma", 'd', noise_sigma),
    K_("epochs", 'i', epochs), K_("batch", 'i', batch), K_("seed", 'u', seed),
    K_("size", 'l', model.size), K_("crop_frac", 'd', crop_frac), K_("balanced", 'i', balanced),
    K_("augment", 'i', augment), K_("prefetch", 'i', prefetch), K_("max_train", 'l', max_train),
    K_("cf_eval_n", 'i', cf_eval_n), K_("threads", 'i', threads), K_("split_seed", 'l', split_seed),
    K_("half", 'i', half),
    K_("d", 'l', model.d), K_("d1", 'l', model.d1), K_("hidden", 'l', model.hidden),
    K_("blocks", 'l', model.blocks), K_("subnet", 'l', model.subnet), K_("clamp", 'd', model.clamp),
    K_("beta", 'd', loss.beta), K_("label_smooth", 'd', loss.label_smooth),
    K_("w_rec", 'd', loss.w_rec), K_("w_mmd", 'd', loss.w_mmd), K_("w_ib", 'd', loss.w_ib),
    K_("w_cyc", 'd', loss.w_cyc), K_("w_bg", 'd', loss.w_bg), K_("w_z2", 'd', loss.w_z2),
    K_("ssim_weight", 'd', loss.ssim_weight),
    K_("aug_rot", 'd', aug.rot_max_deg), K_("aug_hflip", 'd', aug.p_hflip), K_("aug_vflip", 'd', aug.p_vflip),
};
#undef K_

gx_status gx_train_cf_set(gx_train_cf_opts *o, const char *key, const char *value, gx_err *err) {
    return gx_train_set_apply(o, cf_set_keys, sizeof cf_set_keys / sizeof cf_set_keys[0], key, value, err);
}

/* Refuses what the loop cannot run with, naming the option. */
static gx_status cf_opts_check(const gx_train_cf_opts *o, gx_err *err) {
    const gx_cf_config *c = &o->model;
    if (!o->data || !o->db_path || !o->out_dir)
        return gx_err_set(err, GX_ERR_INVALID, "cf-inn: --data, --db and --out are required");
    if (o->epochs < 1) return gx_err_set(err, GX_ERR_INVALID, "--epochs must be >= 1 (got %d)", o->epochs);
    if (o->batch < 2) return gx_err_set(err, GX_ERR_INVALID, "--batch must be >= 2 (the MMD needs pairs; got %d)", o->batch);
    /* The model's own bounds (models/cf_inn.c), through its config parser,
     * so the trainer refuses exactly what a checkpoint load would. */
    char *cj = gx_cf_config_json(c);
    gx_err e2;
    gx_status s = cj ? gx_cf_config_parse(cj, &(gx_cf_config){ 0 }, &e2) : GX_ERR_NOMEM;
    free(cj);
    if (s != GX_OK)
        return gx_err_set(err, GX_ERR_INVALID, "--size/--set: %s (size must be 16 * 2^k, 2 <= d1 < d)",
                          s == GX_ERR_NOMEM ? "out of memory" : e2.msg);
    if (!(o->lr > 0) || !(o->mu_lr_mult > 0) || !(o->lr_decay > 0 && o->lr_decay <= 1))
        return gx_err_set(err, GX_ERR_INVALID, "--set lr/mu_lr_mult/lr_decay: need lr > 0, mult > 0, decay in (0, 1]");
    if (o->clip < 0) return gx_err_set(err, GX_ERR_INVALID, "--set clip: must be >= 0");
    if (o->warmup_epochs < 0) return gx_err_set(err, GX_ERR_INVALID, "--set warmup_epochs: must be >= 0");
    if (!(o->noise_sigma >= 0)) return gx_err_set(err, GX_ERR_INVALID, "--set noise_sigma: must be >= 0");
    if (!(o->crop_frac > 0 && o->crop_frac <= 1))
        return gx_err_set(err, GX_ERR_INVALID, "--set crop_frac: must be in (0, 1]");
    if (o->prefetch < 1) return gx_err_set(err, GX_ERR_INVALID, "--set prefetch: must be >= 1");
    if (o->cf_eval_n < 0) return gx_err_set(err, GX_ERR_INVALID, "--set cf_eval_n: must be >= 0");
    if (o->half < 0 || o->half > 2) return gx_err_set(err, GX_ERR_INVALID, "--set half: must be 0, 1 or 2");
    if (o->split_seed < -1) return gx_err_set(err, GX_ERR_INVALID, "--set split_seed: must be >= 0 (-1: the seed)");
    return GX_OK;
}

/* ============================================================= small utils */

/* The nearest mixture mean of each row of h [B,d1] (first in a tie). */
static int64_t cf_nearest_row(const gx_real *h, const gx_real *mu, int64_t K, int64_t d1) {
    int64_t best = 0;
    double bd = INFINITY;
    for (int64_t c = 0; c < K; c++) {
        double s = 0;
        for (int64_t j = 0; j < d1; j++) {
            double t = (double)h[j] - (double)mu[c * d1 + j];
            s += t * t;
        }
        if (s < bd) { bd = s; best = c; }
    }
    return best;
}

/* ---------------------------------------------------------- m-hat sums */

/* Sums of h per predicted class, turned into m->mhat / mhat_valid. */
typedef struct cf_mhat_acc {
    double  *sum;                  /* [K,d1] */
    int64_t  cnt[GX_CF_MAX_CLASSES];
} cf_mhat_acc;

static void cf_mhat_reset(cf_mhat_acc *a, int64_t K, int64_t d1) {
    memset(a->sum, 0, (size_t)(K * d1) * sizeof *a->sum);
    memset(a->cnt, 0, sizeof a->cnt);
}

static void cf_mhat_add(cf_mhat_acc *a, const gx_real *h, int64_t c, int64_t d1) {
    a->cnt[c]++;
    for (int64_t j = 0; j < d1; j++) a->sum[c * d1 + j] += (double)h[j];
}

/* The host computes m-hat: with the parameters on the device it writes
 * their host copies (made current first: the upload that follows sends
 * every host copy) and uploads them; on the CPU it writes the buffers. The
 * host copies are current afterwards (validation and checkpoints read
 * them). */
static gx_status cf_mhat_store(const cf_mhat_acc *a, gx_cf_model *m, gx_err *err) {
    int64_t K = m->cfg.classes, d1 = m->cfg.d1;
    gx_status s = gx_train_params_to_host(&m->params, err);
    if (s != GX_OK) return s;
    gx_real *mh = (gx_real *)gx_tensor_host_data(m->mhat), *valid = (gx_real *)gx_tensor_host_data(m->mhat_valid);
    for (int64_t c = 0; c < K; c++) {
        for (int64_t j = 0; j < d1; j++)
            mh[c * d1 + j] = a->cnt[c] ? (gx_real)(a->sum[c * d1 + j] / (double)a->cnt[c]) : 0;
        valid[c] = a->cnt[c] ? 1 : 0;
    }
    return gx_train_params_to_device(&m->params, "m-hat", err);
}

/* ============================================================ JSON metadata */

/* runs.config_json: the model config plus "train" with the resolved options. */
static char *cf_run_config_json(const gx_train_cf_opts *o) {
    char *mj = gx_cf_config_json(&o->model);
    json_t *j = mj ? json_loads(mj, 0, NULL) : NULL;
    free(mj);
    const gx_cf_loss_cfg *l = &o->loss;
    json_t *t = json_pack("{s:s,s:i,s:i,s:I,s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:i,s:f,s:i,s:i,s:f,s:f,s:f,s:f,s:f,"
                          "s:f,s:f,s:f,s:f,s:i,s:s?,s:s?,s:I,s:i}",
        "config", o->config_name ? o->config_name : "", "epochs", o->epochs, "batch", o->batch,
        "seed", (json_int_t)o->seed, "max_train", (json_int_t)o->max_train, "lr", o->lr,
        "mu_lr_mult", o->mu_lr_mult, "lr_decay", o->lr_decay, "beta1", o->beta1, "beta2", o->beta2,
        "clip", o->clip, "warmup_epochs", o->warmup_epochs, "noise_sigma", o->noise_sigma,
        "balanced", o->balanced, "augment", o->augment, "beta", l->beta, "label_smooth", l->label_smooth,
        "w_rec", l->w_rec, "w_mmd", l->w_mmd, "w_ib", l->w_ib, "w_cyc", l->w_cyc, "w_bg", l->w_bg, "w_z2", l->w_z2,
        "ssim_weight", l->ssim_weight,
        "cf_eval_n", o->cf_eval_n, "judge", o->judge, "init", o->init, "split_seed", (json_int_t)o->split_seed,
        "half", o->half);
    return gx_train_config_json(j, t);
}

/* ---------------------------------------------------------- metric rows */

/* An epoch's rows and the validation metrics, whose confusion matrix is
 * stored too. */
typedef struct cf_rows {
    gx_train_rows  rows;
    gx_cls_metrics val_cls;
} cf_rows;

/* The loss terms, in the order of gx_cf_loss_terms after total. */
enum { CF_L_TOTAL, CF_L_X, CF_L_Y, CF_L_IB, CF_L_MMD, CF_L_REC, CF_L_CYC, CF_L_BG, CF_L_Z2, CF_L_SSIM, CF_NL };
static const char *const cf_loss_names[CF_NL] = { "loss_total", "loss_x", "loss_y", "loss_ib",
                                                  "loss_mmd", "loss_rec", "loss_cyc", "loss_bg",
                                                  "loss_z2", "rec_ssim" };

/* Sums of the loss terms weighted by batch size; a term the loss did not
 * compute (weight 0, e.g. IB in warm-up) stays NaN. */
typedef struct cf_loss_acc { double sum[CF_NL]; int have[CF_NL]; int64_t n; } cf_loss_acc;

/* One batch's loss values: have[i] when the loss computed term i. */
typedef struct cf_loss_vals { double v[CF_NL]; int have[CF_NL]; } cf_loss_vals;

/* The values of the terms the loss computed, read back in one transfer. */
static void cf_loss_values(gx_ctx *ctx, const gx_cf_loss_terms *L, cf_loss_vals *lv) {
    gx_tensor *t[CF_NL] = { L->total, L->l_x, L->l_y, L->l_ib, L->l_mmd, L->l_rec, L->l_cyc, L->l_bg, L->l_z2, L->ssim };
    gx_to_host_scalars(ctx, CF_NL, t, lv->v);
    for (int i = 0; i < CF_NL; i++) lv->have[i] = t[i] != NULL;
}

static void cf_loss_add(cf_loss_acc *a, const cf_loss_vals *lv, int64_t n) {
    for (int i = 0; i < CF_NL; i++)
        if (lv->have[i]) { a->sum[i] += lv->v[i] * (double)n; a->have[i] = 1; }
    a->n += n;
}

/* n_terms: CF_NL, or CF_L_SSIM to leave out the loss's SSIM (validation
 * reports the spec's metric SSIM under that name instead). */
static void cf_loss_rows(gx_train_rows *w, const char *split, const cf_loss_acc *a, int n_terms) {
    for (int i = 0; i < n_terms; i++)
        gx_train_row(w, split, a->have[i] && a->n ? a->sum[i] / (double)a->n : NAN, "%s", cf_loss_names[i]);
}

/* ============================================================== the run */

typedef struct cf_run {
    gx_train_cf_opts o;            /* a copy: resume may override the seed */
    gx_dataset *ds;
    int64_t    *split[3];
    int64_t     nsplit[3];
    gx_loader  *train_L, *val_L;
    gx_db      *db;
    gx_cf_model m;
    int         model_ready;
    gx_wm_model judge;
    int         judge_ready;
    gx_optim    opt;
    int         opt_ready;
    gx_ctx      ctx;
    gx_train_device dev;           /* closed last, after everything on it */
    int64_t     run_id;
    int         start_epoch;
    double      best_acc;
    int         best_epoch;
    int64_t     batches;
    gx_train_paths paths;
    char       *classes_json;
    cf_mhat_acc mh;                /* this epoch's approximate m-hat */
    gx_train_clock clk;
    int         interrupted;
} cf_run;

typedef struct cf_epoch_stats {
    cf_loss_acc loss;
    int64_t n, correct, n_steps;
    double grad_norm_sum, lr, seconds;
} cf_epoch_stats;

/* Learning rate of epoch e (x lr_decay per epoch). */
static double cf_lr(const gx_train_cf_opts *o, int epoch) { return o->lr * pow(o->lr_decay, epoch); }

/* The batch's images where ctx computes (filled on the host, moved). */
static gx_tensor *cf_batch_x(gx_ctx *ctx, const gx_batch *b, int64_t S) {
    gx_tensor *x = gx_tensor_new_host(ctx, 4, GX_SHAPE(b->n, 3, S, S));
    for (int64_t i = 0; i < x->numel; i++) x->data[i] = (gx_real)b->x[i];
    return gx_to_ctx(ctx, x);
}

static int64_t *cf_batch_labels(gx_ctx *ctx, const gx_batch *b) {
    int64_t *y = gx_ctx_alloc(ctx, (size_t)b->n * sizeof *y);
    for (int64_t i = 0; i < b->n; i++) y[i] = b->label[i];
    return y;
}

/* The background mask of the background term, [n,1,S,S] with 1 outside the
 * galaxy's segment (gx_eval_cf_segment: the segmentation the background
 * metric uses), computed on the augmented images of the batch. An image without a segment gets no
 * background pixel (nothing to keep). NULL when the term is off. A host
 * tensor on every device: the loss reads the mask on the host. */
static gx_tensor *cf_batch_bg(gx_ctx *ctx, const gx_batch *b, int64_t S, const gx_cf_loss_cfg *lc) {
    if (lc->w_bg == 0) return NULL;
    int64_t P = S * S;
    gx_tensor *bg = gx_tensor_new_host(ctx, 4, GX_SHAPE(b->n, 1, S, S));
    float *img = gx_ctx_alloc(ctx, (size_t)P * sizeof *img);
    int32_t *seg = gx_ctx_alloc(ctx, (size_t)P * sizeof *seg);
    for (int64_t i = 0; i < b->n; i++) {
        int found = 0;
        gx_err err = { 0 };
        if (gx_eval_cf_segment(b->x + i * 3 * P, (int)S, img, seg, &found, &err) != GX_OK) found = 0;
        for (int64_t p = 0; p < P; p++) bg->data[i * P + p] = found && !seg[p] ? 1 : 0;
    }
    return bg;
}

/* The loss configuration of an epoch: warm-up epochs drop the terms that read labels. */
static gx_cf_loss_cfg cf_epoch_loss(const gx_train_cf_opts *o, int epoch) {
    gx_cf_loss_cfg lc = o->loss;
    /* Warm-up is the spec's L_R + L_MMD without labels: the two terms that
     * read them wait (the cycle and background terms do not). */
    if (epoch < o->warmup_epochs) lc.w_ib = lc.w_z2 = 0;
    return lc;
}

/* ------------------------------------------------------------- training */

/* Accuracy and the approximate m-hat from the noisy h of a batch, against
 * the means after this step's update (the host reads of one step, after
 * everything is queued). */
static void cf_step_classes(cf_run *R, gx_tensor *h, const gx_batch *b, cf_epoch_stats *es) {
    gx_ctx *ctx = &R->ctx;
    gx_cf_model *m = &R->m;
    int64_t K = m->cfg.classes, d1 = m->cfg.d1;
    int grad = ctx->grad_enabled;
    ctx->grad_enabled = 0;
    const gx_real *hv = gx_to_host(ctx, h)->data, *mu = gx_to_host(ctx, m->mu)->data;
    ctx->grad_enabled = grad;
    for (int64_t i = 0; i < b->n; i++) {
        const gx_real *hi = hv + i * d1;
        int64_t p = cf_nearest_row(hi, mu, K, d1);
        es->correct += p == b->label[i];
        cf_mhat_add(&R->mh, hi, p, d1);
    }
    es->n += b->n;
}

/* One batch: forward with noise, losses, backward, clip, Adam; *loss: the
 * loss value for display. A device error ends the run (the step's one
 * sync). */
static gx_status cf_train_step(cf_run *R, const gx_cf_loss_cfg *lc, const gx_rng *ep, const gx_batch *b,
                               double lr, cf_epoch_stats *es, double *loss, gx_err *err) {
    gx_ctx *ctx = &R->ctx;
    gx_cf_model *m = &R->m;
    /* Derived per step, never carried: see the file comment. */
    gx_rng st = gx_rng_fork(ep, (uint64_t)b->step);
    gx_rng noise = gx_rng_fork(&st, 0), mmd = gx_rng_fork(&st, 1);
    ctx->grad_enabled = 1;
    gx_tensor *x = cf_batch_x(ctx, b, m->cfg.size);
    int64_t *y = cf_batch_labels(ctx, b);
    gx_cf_out out = gx_cf_forward(ctx, m, x, R->o.noise_sigma, &noise, lc->w_rec > 0);
    gx_cf_loss_terms L = gx_cf_loss(ctx, m, &out, x, y, cf_batch_bg(ctx, b, m->cfg.size, lc), &mmd, lc);
    gx_backward(ctx, L.total, NULL);
    double norm = gx_clip_grad_norm(&m->params, R->o.clip > 0 ? R->o.clip : INFINITY);
    if (isfinite(norm)) {
        /* Group 1 is the mixture means (3x lr); everything else group 0. */
        double lrs[GX_OPT_MAX_GROUPS];
        for (int g = 0; g < GX_OPT_MAX_GROUPS; g++) lrs[g] = lr;
        lrs[1] = lr * R->o.mu_lr_mult;
        gx_optim_step(&R->opt, &m->params, lrs);
        es->grad_norm_sum += norm;
        es->n_steps++;
    }
    gx_params_zero_grad(&m->params);
    cf_loss_vals lv;
    cf_loss_values(ctx, &L, &lv);
    cf_loss_add(&es->loss, &lv, b->n);
    /* h was computed with the weights of this step. */
    cf_step_classes(R, out.h, b, es);
    *loss = lv.v[CF_L_TOTAL];
    gx_ctx_reset(ctx);
    return gx_train_device_sync(&R->dev, err);
}

/* One training epoch over the loader's batches for (seed, epoch). */
static gx_status cf_train_epoch(cf_run *R, int epoch, cf_epoch_stats *es, gx_err *err) {
    const gx_train_cf_opts *o = &R->o;
    gx_cf_loss_cfg lc = cf_epoch_loss(o, epoch);
    gx_rng base, ep;
    gx_rng_init(&base, o->seed ^ CF_STEP_SALT);
    ep = gx_rng_fork(&base, (uint64_t)epoch);
    memset(es, 0, sizeof *es);
    es->lr = cf_lr(o, epoch);
    cf_mhat_reset(&R->mh, R->m.cfg.classes, R->m.cfg.d1);
    gx_status s = gx_loader_start_epoch(R->train_L, epoch, err);
    if (s != GX_OK) return s;
    gx_params_zero_grad(&R->m.params);
    gx_batch b;
    int rc;
    double t0 = gx_train_now();
    while ((rc = gx_loader_next(R->train_L, &b, err)) == 1) {
        if (o->stop && *o->stop) { R->interrupted = 1; return GX_OK; }
        double loss;
        if ((s = cf_train_step(R, &lc, &ep, &b, es->lr, es, &loss, err)) != GX_OK) return s;
        R->clk.steps_done++;
        double dt = gx_train_now() - t0;
        gx_train_progress(&R->clk, o->progress, epoch, o->epochs, b.step, R->batches, loss,
                          dt > 0 ? (double)es->n / dt : 0);
    }
    if (rc < 0) return GX_ERR_IO;     /* err names the sample (loader) */
    es->seconds = gx_train_now() - t0;
    return GX_OK;
}

/* ----------------------------------------------------------- validation */

/* What a validation pass collects. */
typedef struct cf_val_acc {
    int64_t  n, cap;
    int      k;
    gx_real *probs;                /* [n,k] posteriors */
    float   *z2;                   /* [n,d2] (z2_class_probe) */
    int64_t  d2;
    int32_t *label;                /* [n] */
    double   nll, rec_msd, rec_ssim;   /* sums over images */
    int64_t  n_ssim;
    cf_loss_acc loss;
    float   *cf_x;                 /* [cf_n, 3,S,S]: the images of the counterfactual metrics */
    int64_t  cf_n, cf_cap;
} cf_val_acc;

static void cf_val_free(cf_val_acc *a) {
    free(a->probs); free(a->z2); free(a->label); free(a->cf_x);
    memset(a, 0, sizeof *a);
}

static gx_status cf_val_alloc(cf_val_acc *a, int64_t cap, int k, int64_t d2, int64_t cf_cap, int64_t px,
                              gx_err *err) {
    memset(a, 0, sizeof *a);
    a->cap = cap > 0 ? cap : 1;
    a->k = k;
    a->d2 = d2;
    a->z2 = malloc((size_t)a->cap * (size_t)(d2 > 0 ? d2 : 1) * sizeof *a->z2);
    a->cf_cap = cf_cap < cap ? cf_cap : cap;
    a->probs = malloc((size_t)a->cap * (size_t)k * sizeof *a->probs);
    a->label = malloc((size_t)a->cap * sizeof *a->label);
    a->cf_x = malloc((size_t)(a->cf_cap > 0 ? a->cf_cap : 1) * (size_t)px * sizeof *a->cf_x);
    if (a->probs && a->z2 && a->label && a->cf_x) return GX_OK;
    cf_val_free(a);
    return gx_err_set(err, GX_ERR_NOMEM, "validation: out of memory for %lld samples", (long long)cap);
}

/* Per-image numbers of one validation batch (gx_eval_cf_image, as the
 * test evaluation takes them; out on the host) and the images of the
 * counterfactual metrics. */
static void cf_val_add(cf_val_acc *a, const gx_cf_out *out, const gx_batch *b, int64_t S) {
    int64_t K = a->k, px = 3 * S * S;
    float *xr = malloc((size_t)px * sizeof *xr);   /* NULL: no SSIM this batch */
    for (int64_t i = 0; i < b->n && a->n < a->cap; i++, a->n++) {
        const float *xi = b->x + i * px;
        gx_eval_cf_image_stats st = gx_eval_cf_image(out, i, xi, K, S, xr, a->probs + a->n * K, a->z2 + a->n * a->d2);
        a->label[a->n] = b->label[i];
        a->nll += st.nll;
        a->rec_msd += st.msd;
        if (st.ssim_ok) { a->rec_ssim += st.ssim; a->n_ssim++; }
        if (a->cf_n < a->cf_cap) memcpy(a->cf_x + (a->cf_n++) * px, xi, (size_t)px * sizeof *xi);
    }
    free(xr);
}

/* Eval-mode pass over the validation part: losses (MMD samples from a
 * stream of their own, so the numbers repeat), posteriors, reconstruction. */
static gx_status cf_val_pass(cf_run *R, const gx_cf_loss_cfg *lc, cf_val_acc *a, gx_err *err) {
    gx_ctx *ctx = &R->ctx;
    gx_status s = gx_loader_start_epoch(R->val_L, 0, err);
    if (s != GX_OK) return s;
    gx_rng base;
    gx_rng_init(&base, R->o.seed ^ CF_VAL_SALT);
    gx_batch b;
    int rc;
    while ((rc = gx_loader_next(R->val_L, &b, err)) == 1) {
        ctx->grad_enabled = 0;
        gx_rng mmd = gx_rng_fork(&base, (uint64_t)b.step);
        gx_tensor *x = cf_batch_x(ctx, &b, R->m.cfg.size);
        gx_cf_out out = gx_cf_forward(ctx, &R->m, x, 0.0, &mmd, 1);
        /* The unbiased MMD needs two samples: a last batch of one only
         * counts for the per-image metrics. */
        if (b.n >= 2) {
            gx_cf_loss_terms L = gx_cf_loss(ctx, &R->m, &out, x, cf_batch_labels(ctx, &b),
                                            cf_batch_bg(ctx, &b, R->m.cfg.size, lc), &mmd, lc);
            cf_loss_vals lv;
            cf_loss_values(ctx, &L, &lv);
            cf_loss_add(&a->loss, &lv, b.n);
        }
        gx_cf_out ho = gx_eval_cf_out_host(ctx, &out);
        cf_val_add(a, &ho, &b, R->m.cfg.size);
        gx_ctx_reset(ctx);
    }
    ctx->grad_enabled = 1;
    if (rc < 0) return GX_ERR_IO;
    return gx_train_device_sync(&R->dev, err);
}

/* --------------------------------------------- counterfactual metrics */

enum { CF_M_HID, CF_M_REENC, CF_M_JUDGE, CF_M_FALLBACK, CF_M_MSD_XCF, CF_M_SSIM_XCF, CF_M_MSD_RCF,
       CF_M_SSIM_RCF, CF_M_MSD_XR, CF_M_SSIM_XR, CF_NM };
static const char *const cf_m_names[CF_NM] = {
    "cf_valid_hidden", "cf_valid_reencoded", "cf_valid_judge", "cf_fallback", "cf_msd_x_cf",
    "cf_ssim_x_cf", "cf_msd_rec_cf", "cf_ssim_rec_cf", "cf_msd_x_rec", "cf_ssim_x_rec" };

gx_status gx_cf_judge_classes(gx_ctx *ctx, gx_wm_model *judge, const float *xs, int64_t n, int64_t S,
                             int64_t *pred, gx_err *err) {
    const int64_t J = judge->cfg.size, K = judge->cfg.classes;
    ctx->grad_enabled = 0;
    /* Filled on the host, then where ctx (and the judge's parameters) are. */
    gx_tensor *x = gx_tensor_new_host(ctx, 4, GX_SHAPE(n, 3, J, J));
    gx_status s = GX_OK;
    for (int64_t i = 0; s == GX_OK && i < n; i++) {
        gx_image im, rs;
        memset(&rs, 0, sizeof rs);
        const float *src = xs + i * 3 * S * S;
        if (J != S) {
            s = gx_image_alloc(&im, 3, (int)S, (int)S, err);
            if (s == GX_OK) {
                memcpy(im.data, src, (size_t)(3 * S * S) * sizeof *src);
                s = gx_pre_resize(&im, (int)J, (int)J, &rs, err);
                gx_image_free(&im);
            }
            src = rs.data;
        }
        for (int64_t j = 0; s == GX_OK && j < 3 * J * J; j++) x->data[i * 3 * J * J + j] = (gx_real)src[j];
        gx_image_free(&rs);
    }
    if (s == GX_OK) {
        gx_wm_out out = gx_wm_forward(ctx, judge, gx_to_ctx(ctx, x), NULL, 0);
        const gx_real *lv = gx_to_host(ctx, out.logits)->data;
        for (int64_t i = 0; i < n; i++) {
            const gx_real *l = lv + i * K;
            int64_t a = 0;
            for (int64_t c = 1; c < K; c++) if (l[c] > l[a]) a = c;
            pred[i] = a;
        }
    }
    gx_ctx_reset(ctx);
    return s;
}

/* The judge's classes of n counterfactuals xcf [n,3,S,S]; the training
 * context goes back to recording afterwards. */
static gx_status cf_judge(cf_run *R, const float *xcf, int64_t n, int64_t *pred, gx_err *err) {
    gx_status s = gx_cf_judge_classes(&R->ctx, &R->judge, xcf, n, R->m.cfg.size, pred, err);
    R->ctx.grad_enabled = 1;
    return s;
}

/* Counterfactual metrics over the collected images x their K-1 other
 * classes, into sums[CF_NM] / *count. */
static gx_status cf_cf_metrics(cf_run *R, const cf_val_acc *a, double sums[CF_NM], int64_t *count,
                               gx_err *err) {
    const int64_t K = R->m.cfg.classes, S = R->m.cfg.size, px = 3 * S * S;
    int64_t targets[GX_CF_MAX_CLASSES], jpred[GX_CF_MAX_CLASSES];
    gx_cf_result res[GX_CF_MAX_CLASSES];
    float *xcf = malloc((size_t)(K * px) * sizeof *xcf), *xj = malloc((size_t)(K * px) * sizeof *xj);
    gx_status s = xcf && xj ? GX_OK : gx_err_set(err, GX_ERR_NOMEM, "cf metrics: out of memory");
    for (int64_t c = 0; c < K; c++) targets[c] = c;
    memset(sums, 0, CF_NM * sizeof *sums);
    *count = 0;
    for (int64_t i = 0; s == GX_OK && i < a->cf_n; i++) {
        s = gx_cf_counterfactuals(&R->ctx, &R->m, a->cf_x + i * px, targets, (int)K, NULL, xcf, res, err);
        int64_t nj = 0;
        for (int64_t t = 0; s == GX_OK && t < K; t++) {
            if (res[t].target == res[t].source) continue;
            const gx_cf_result *r = &res[t];
            double v[CF_NM] = { r->reached_hidden, r->reached_reencoded, 0, r->fallback == 1, r->msd_x_cf,
                                r->ssim_x_cf, r->msd_rec_cf, r->ssim_rec_cf, r->msd_x_rec, r->ssim_x_rec };
            for (int k = 0; k < CF_NM; k++) sums[k] += v[k];
            if (R->judge_ready) memcpy(xj + nj * px, xcf + t * px, (size_t)px * sizeof *xj);
            nj++;
            (*count)++;
        }
        if (s == GX_OK && R->judge_ready && nj > 0) {
            s = cf_judge(R, xj, nj, jpred, err);
            for (int64_t t = 0, k = 0; s == GX_OK && t < K; t++)
                if (res[t].target != res[t].source) sums[CF_M_JUDGE] += jpred[k++] == res[t].target;
        }
    }
    free(xcf);
    free(xj);
    if (s == GX_OK) s = gx_train_device_sync(&R->dev, err);
    return s;
}

/* Validation rows: losses, classification, reconstruction, counterfactuals. */
static gx_status cf_rows_val(cf_run *R, int epoch, gx_train_rows *w, gx_cls_metrics *cm, double *acc,
                             gx_err *err) {
    gx_cf_loss_cfg lc = cf_epoch_loss(&R->o, epoch);
    const int64_t S = R->m.cfg.size, px = 3 * S * S;
    cf_val_acc a;
    gx_status s = cf_val_alloc(&a, R->nsplit[1], (int)R->m.cfg.classes, R->m.cfg.d - R->m.cfg.d1, R->o.cf_eval_n,
                               px, err);
    if (s != GX_OK) return s;
    s = cf_val_pass(R, &lc, &a, err);
    if (s == GX_OK) s = gx_metrics_classify(a.probs, a.label, a.n, a.k, cm, err);
    double sums[CF_NM];
    int64_t cnt = 0;
    if (s == GX_OK) s = cf_cf_metrics(R, &a, sums, &cnt, err);
    if (s == GX_OK) {
        cf_loss_rows(w, "val", &a.loss, CF_L_SSIM);
        gx_train_row(w, "val", cm->accuracy, "accuracy");
        for (int k = 0; k < a.k; k++) gx_train_row(w, "val", cm->recall[k], "recall_%d", k);
        gx_train_row(w, "val", cm->auc_macro, "auc_macro");
        gx_train_row(w, "val", a.n ? a.nll / (double)a.n : NAN, "nll");
        gx_train_row(w, "val", a.n ? a.rec_msd / (double)a.n : NAN, "rec_msd");
        gx_train_row(w, "val", a.n_ssim ? a.rec_ssim / (double)a.n_ssim : NAN, "rec_ssim");
        gx_train_row(w, "val", gx_metric_centroid_probe(a.z2, a.label, a.n, a.d2, a.k), "z2_class_probe");
        for (int k = 0; k < CF_NM; k++) {
            if (k == CF_M_JUDGE && !R->judge_ready) continue;
            gx_train_row(w, "val", cnt ? sums[k] / (double)cnt : NAN, "%s", cf_m_names[k]);
        }
        gx_train_row(w, "val", (double)cnt, "cf_n");
        *acc = cm->accuracy;
    }
    cf_val_free(&a);
    return s;
}

/* ---------------------------------------------------------- checkpoints */

static void cf_meta_fill(const cf_run *R, int epoch, gx_cf_meta *meta) {
    memset(meta, 0, sizeof *meta);
    snprintf(meta->classes_json, sizeof meta->classes_json, "%s", R->classes_json);
    snprintf(meta->test_metrics_json, sizeof meta->test_metrics_json, "{}");
    meta->crop_frac = R->o.crop_frac;
    meta->run_id = R->run_id;
    meta->epoch = epoch;
    meta->has_split_seed = 1;   /* so `galaxy-train eval` can rebuild the test part */
    meta->split_seed = R->o.split_seed >= 0 ? R->o.split_seed : (int64_t)R->o.seed;
}

/* Writes model m as `kind` ("last"/"best") of epoch, and its db row. */
static gx_status cf_checkpoint(cf_run *R, gx_cf_model *m, const char *path, const char *kind,
                               int epoch, const char *metrics_json, gx_err *err) {
    gx_cf_meta meta;
    cf_meta_fill(R, epoch, &meta);
    gx_status s = gx_train_params_to_host(&m->params, err);
    if (s == GX_OK) s = gx_cf_save(m, &meta, path, err);
    if (s == GX_OK) s = gx_train_checkpoint_put(R->db, R->run_id, epoch, kind, path, metrics_json, err);
    return s;
}

/* The training state after `epoch` completed (weights + Adam + loop). */
static gx_status cf_write_state(cf_run *R, int epoch, gx_err *err) {
    gx_train_loop loop = { epoch, R->run_id, R->best_acc, R->best_epoch };
    /* The weights from their host copies (the Adam moments are downloaded
     * by gx_optim_state_to_writer itself). */
    gx_status s = gx_train_params_to_host(&R->m.params, err);
    if (s != GX_OK) return s;
    s = gx_train_state_write(R->paths.state, &R->m.params, &R->opt, CF_STATE_FORMAT, R->o.seed, &loop, err);
    return gx_train_device_error(&R->dev, s, err);
}

/* Restores weights, Adam and loop position from the state file. */
static gx_status cf_load_state(cf_run *R, gx_err *err) {
    gx_train_loop loop;
    gx_status s = gx_train_state_load(R->paths.state, CF_STATE_FORMAT, "cf-inn training state",
                                      R->o.resume_run, R->o.seed, &R->m.params, &R->opt, &loop, err);
    if (s != GX_OK) return s;
    /* The permutations are derived from the loaded weights' buffers. */
    if ((s = gx_cf_sync_perms(&R->m, err)) != GX_OK) return s;
    R->start_epoch = loop.epoch + 1;
    R->best_acc = loop.best_acc;
    R->best_epoch = loop.best_epoch;
    return GX_OK;
}

/* --init: a checkpoint's parameters and buffers (names and shapes must be
 * the model's: the same config and size), then the permutations derived
 * from them. A resumed run has its own weights. */
static gx_status cf_load_init(cf_run *R, gx_err *err) {
    if (R->o.resume_run > 0)
        return gx_err_set(err, GX_ERR_INVALID, "--init and --resume: a resumed run continues its own weights");
    gx_st_file f;
    memset(&f, 0, sizeof f);
    gx_err e2;
    gx_status s = gx_st_read(&f, R->o.init, &e2);
    if (s == GX_OK && (s = gx_params_load(&R->m.params, &f, 1, &e2)) == GX_OK) s = gx_cf_sync_perms(&R->m, &e2);
    gx_st_close(&f);
    if (s != GX_OK) return gx_err_set(err, s, "--init %s: %s", R->o.init, e2.msg);
    return GX_OK;
}

/* ---------------------------------------------------------- setup/teardown */

/* split_seed and half of a run's config_json "train" (kept as they are
 * when absent). */
static void cf_run_split(cf_run *R, const char *config_json) {
    json_t *j = config_json ? json_loads(config_json, 0, NULL) : NULL;
    json_t *t = json_object_get(j, "train");
    json_t *ss = json_object_get(t, "split_seed"), *hf = json_object_get(t, "half");
    if (json_is_integer(ss)) R->o.split_seed = (int64_t)json_integer_value(ss);
    if (json_is_integer(hf)) R->o.half = (int)json_integer_value(hf);
    json_decref(j);
}

/* The seed and split a run was started with; the run must be a cf-inn run. */
static gx_status cf_run_seed(cf_run *R, gx_err *err) {
    sqlite3 *h = gx_db_handle(R->db);
    sqlite3_stmt *q = NULL;
    gx_status s = GX_OK;
    if (sqlite3_prepare_v2(h, "SELECT seed, model_kind, config_json FROM runs WHERE id = ?", -1, &q, NULL) != SQLITE_OK)
        return gx_err_set(err, GX_ERR_IO, "db: %s", sqlite3_errmsg(h));
    sqlite3_bind_int64(q, 1, R->o.resume_run);
    if (sqlite3_step(q) != SQLITE_ROW)
        s = gx_err_set(err, GX_ERR_NOTFOUND, "no run %lld in the database", (long long)R->o.resume_run);
    else if (strcmp((const char *)sqlite3_column_text(q, 1), "cf-inn"))
        s = gx_err_set(err, GX_ERR_INVALID, "run %lld is a %s run", (long long)R->o.resume_run,
                       (const char *)sqlite3_column_text(q, 1));
    else {
        R->o.seed = (uint64_t)sqlite3_column_int64(q, 0);
        cf_run_split(R, (const char *)sqlite3_column_text(q, 2));
    }
    sqlite3_finalize(q);
    return s;
}

static void cf_run_free(cf_run *R) {
    gx_loader_close(R->train_L);
    gx_loader_close(R->val_L);
    if (R->opt_ready) gx_optim_free(&R->opt);
    if (R->model_ready) gx_cf_free(&R->m);
    if (R->judge_ready) gx_wm_free(&R->judge);
    gx_ctx_free(&R->ctx);
    gx_train_device_close(&R->dev);   /* after the parameters, optimiser and ctx on it */
    gx_db_close(R->db);
    for (int k = 0; k < 3; k++) free(R->split[k]);
    gx_dataset_close(R->ds);
    free(R->mh.sum);
    free(R->classes_json);
}

static gx_status cf_open_loader(gx_loader **L, gx_dataset *ds, const int64_t *idx, int64_t n,
                                const gx_train_cf_opts *o, int train, gx_err *err) {
    gx_loader_opts lo = GX_LOADER_OPTS_DEFAULT;
    lo.batch = o->batch;
    lo.size = (int)o->model.size;
    lo.crop_frac = o->crop_frac;
    lo.balanced = train ? o->balanced : 0;
    lo.augment = train ? o->augment : 0;
    lo.aug = o->aug;
    /* A final training batch of one has no MMD (it needs pairs). */
    lo.drop_last = train && n >= o->batch;
    lo.prefetch = o->prefetch;
    lo.seed = o->seed;
    return gx_loader_open(L, ds, idx, n, &lo, err);
}

/* The judge: a wavelet-mamba checkpoint with the dataset's class count. */
static gx_status cf_open_judge(cf_run *R, gx_err *err) {
    gx_st_file f;
    memset(&f, 0, sizeof f);
    gx_err e2;
    gx_status s = gx_st_read(&f, R->o.judge, &e2);
    if (s == GX_OK) s = gx_wm_checkpoint_load(&f, &R->judge, &e2);
    gx_st_close(&f);
    if (s != GX_OK) return gx_err_set(err, s, "--judge %s: %s", R->o.judge, e2.msg);
    R->judge_ready = 1;
    if (R->judge.cfg.classes != R->m.cfg.classes)
        return gx_err_set(err, GX_ERR_INVALID, "--judge %s: %lld classes, the data has %lld", R->o.judge,
                          (long long)R->judge.cfg.classes, (long long)R->m.cfg.classes);
    return GX_OK;
}

/* A new run's row in the database. */
static gx_status cf_begin_run(cf_run *R, gx_err *err) {
    char *cfg = cf_run_config_json(&R->o);
    if (!cfg) return gx_err_set(err, GX_ERR_NOMEM, "cf-inn: run config JSON: out of memory");
    gx_db_run_info ri = { .model_kind = "cf-inn", .config_json = cfg, .command_line = R->o.command_line,
                          .seed = (int64_t)R->o.seed };
    gx_status s = gx_db_run_begin(R->db, &ri, &R->run_id, err);
    free(cfg);
    return s;
}

/* Model and optimiser (the mixture means in group 1). */
static gx_status cf_setup_model(cf_run *R, gx_err *err) {
    /* gx_cf_init puts mixture.mu in parameter group 1 (its 3x lr). */
    gx_cf_init(&R->m, R->o.model, R->o.seed);
    R->model_ready = 1;
    gx_optim_cfg oc = gx_optim_defaults(GX_OPT_ADAM);
    oc.beta1 = R->o.beta1; oc.beta2 = R->o.beta2; oc.eps = R->o.eps; oc.weight_decay = 0;
    gx_status s = gx_optim_init(&R->opt, &R->m.params, &oc, err);
    if (s != GX_OK) return s;
    R->opt_ready = 1;
    R->mh.sum = calloc((size_t)(R->m.cfg.classes * R->m.cfg.d1), sizeof *R->mh.sum);
    if (!R->mh.sum) return gx_err_set(err, GX_ERR_NOMEM, "cf-inn: out of memory");
    return GX_OK;
}

static gx_status cf_setup(cf_run *R, gx_err *err) {
    gx_train_cf_opts *o = &R->o;
    gx_status s = gx_train_setup_common(o->out_dir, o->threads, &R->paths, &R->ctx, err);
    if (s != GX_OK) return s;
    if ((s = gx_train_device_open_tf32(&R->dev, o->device, o->tf32, err)) != GX_OK) return s;
    R->best_acc = -1;
    R->best_epoch = -1;
    gx_err e2;
    s = gx_dataset_open(o->data, NULL, &R->ds, &e2);
    if (s != GX_OK) return gx_err_set(err, s, "--data %s: %s", o->data, e2.msg);
    if (R->ds->n_classes < 2 || R->ds->n_classes > GX_CF_MAX_CLASSES)
        return gx_err_set(err, GX_ERR_INVALID, "--data %s: %d classes (2..%d)", o->data, R->ds->n_classes,
                          GX_CF_MAX_CLASSES);
    o->model.classes = R->ds->n_classes;
    R->classes_json = gx_train_classes_json(R->ds->n_classes);
    if (!R->classes_json) return gx_err_set(err, GX_ERR_NOMEM, "cf-inn: out of memory");
    if ((s = gx_db_open(&R->db, o->db_path, &e2)) != GX_OK)
        return gx_err_set(err, s, "--db %s: %s", o->db_path, e2.msg);
    /* A resumed run takes its seed from the database before the model is
     * initialised: killed before the first state file means starting over. */
    if (o->resume_run > 0 && (s = cf_run_seed(R, &e2)) != GX_OK)
        return gx_err_set(err, s, "--resume %lld: %s", (long long)o->resume_run, e2.msg);
    if ((s = cf_setup_model(R, err)) != GX_OK) return s;
    if (o->init && (s = cf_load_init(R, err)) != GX_OK) return s;
    if (o->judge && (s = cf_open_judge(R, err)) != GX_OK) return s;
    if (o->resume_run > 0) {
        if (access(R->paths.state, F_OK) == 0 && (s = cf_load_state(R, &e2)) != GX_OK)
            return gx_err_set(err, s, "--resume %lld: %s", (long long)o->resume_run, e2.msg);
        R->run_id = o->resume_run;
    } else if ((s = cf_begin_run(R, err)) != GX_OK) {
        return s;
    }
    /* Initialised or resumed: onto the device before the first step (the
     * Adam moments follow on their first update). */
    if ((s = gx_train_device_params(&R->dev, &R->m.params, "cf-inn parameters", err)) != GX_OK) return s;
    if (R->judge_ready && (s = gx_train_device_params(&R->dev, &R->judge.params, "--judge", err)) != GX_OK)
        return s;
    gx_train_device_ctx(&R->dev, &R->ctx);
    uint64_t split_seed = o->split_seed >= 0 ? (uint64_t)o->split_seed : o->seed;
    s = gx_split_stratified(R->ds->label, R->ds->n, R->ds->n_classes, (double[3]){ .70, .15, .15 },
                            split_seed, R->split, R->nsplit, err);
    if (s != GX_OK) return s;
    if (o->max_train > 0 && o->max_train < R->nsplit[0]) R->nsplit[0] = o->max_train;
    if (o->half > 0) {
        /* Even (1) or odd (2) positions: the split is a stratified shuffle,
         * so each half keeps the class mix and the halves share nothing. */
        int64_t k = 0;
        for (int64_t i = o->half - 1; i < R->nsplit[0]; i += 2) R->split[0][k++] = R->split[0][i];
        R->nsplit[0] = k;
    }
    if (R->nsplit[0] < 2 || R->nsplit[1] < 1)
        return gx_err_set(err, GX_ERR_INVALID, "--data %s: too few samples for a 70/15/15 split "
                          "(train %lld, val %lld)", o->data, (long long)R->nsplit[0], (long long)R->nsplit[1]);
    s = cf_open_loader(&R->train_L, R->ds, R->split[0], R->nsplit[0], o, 1, err);
    if (s == GX_OK) s = cf_open_loader(&R->val_L, R->ds, R->split[1], R->nsplit[1], o, 0, err);
    if (s == GX_OK) R->batches = gx_loader_batches_per_epoch(R->train_L);
    return s;
}

/* -------------------------------------------------------------- one epoch */

static void cf_rows_train(gx_train_rows *w, const cf_epoch_stats *es) {
    cf_loss_rows(w, "train", &es->loss, CF_NL);
    gx_train_row(w, "train", es->n ? (double)es->correct / (double)es->n : NAN, "accuracy");
    gx_train_row(w, "train", es->lr, "lr");
    gx_train_row(w, "train", es->seconds > 0 ? (double)es->n / es->seconds : NAN, "images_per_s");
    gx_train_row(w, "train", es->n_steps ? es->grad_norm_sum / (double)es->n_steps : NAN, "grad_norm");
}

/* Validation, rows, checkpoints and the state of one epoch. */
static gx_status cf_end_epoch(cf_run *R, int epoch, const cf_epoch_stats *es, gx_err *err) {
    /* The approximate m-hat of this epoch; the host copies of the parameters
     * are current from here to the state file (validation reads mu and m-hat
     * there, the checkpoints write them). */
    gx_status s = cf_mhat_store(&R->mh, &R->m, err);
    if (s != GX_OK) return s;
    cf_rows *rows = calloc(1, sizeof *rows); /* ~14 KB of names: off the stack */
    if (!rows) return gx_err_set(err, GX_ERR_NOMEM, "metrics: out of memory");
    double acc = NAN;
    s = cf_rows_val(R, epoch, &rows->rows, &rows->val_cls, &acc, err);
    if (s == GX_OK) cf_rows_train(&rows->rows, es);
    if (s == GX_OK)
        s = gx_metrics_epoch_put(R->db, R->run_id, epoch, rows->rows.row, rows->rows.n,
                                 &(gx_metrics_confusion){ "val", rows->val_cls.k, rows->val_cls.confusion }, 1,
                                 R->classes_json, err);
    char js[96];
    snprintf(js, sizeof js, "{\"val_accuracy\":%.17g}", isfinite(acc) ? acc : 0.0);
    if (s == GX_OK) s = cf_checkpoint(R, &R->m, R->paths.last, "last", epoch, js, err);
    if (s == GX_OK && isfinite(acc) && acc > R->best_acc) {
        R->best_acc = acc;
        R->best_epoch = epoch;
        s = cf_checkpoint(R, &R->m, R->paths.best, "best", epoch, js, err);
    }
    /* The state goes last: until it is in place a resume redoes this epoch. */
    if (s == GX_OK) s = cf_write_state(R, epoch, err);
    if (s == GX_OK && R->o.progress != 0) {
        if (R->clk.tty) fputc('\n', stderr);
        fprintf(stderr, "epoch %d/%d  loss %.4f  train acc %.3f  val acc %.3f  %.1f img/s  %.1f s\n",
                epoch + 1, R->o.epochs, es->loss.n ? es->loss.sum[0] / (double)es->loss.n : NAN,
                es->n ? (double)es->correct / (double)es->n : NAN, acc,
                es->seconds > 0 ? (double)es->n / es->seconds : 0.0, es->seconds);
    }
    free(rows);
    return s;
}

/* The exact m-hat of model m over the training part (no augmentation, no
 * balancing, eval mode). */
static gx_status cf_exact_mhat(cf_run *R, gx_cf_model *m, gx_err *err) {
    gx_train_cf_opts o = R->o;
    o.balanced = 0;
    o.augment = 0;
    gx_loader *L = NULL;
    int64_t d1 = m->cfg.d1, K = m->cfg.classes;
    int64_t *pred = malloc((size_t)o.batch * sizeof *pred);
    float *h = malloc((size_t)o.batch * (size_t)d1 * sizeof *h);
    gx_real *hr = malloc((size_t)d1 * sizeof *hr);
    gx_status s = pred && h && hr ? GX_OK : gx_err_set(err, GX_ERR_NOMEM, "m-hat: out of memory");
    if (s == GX_OK) s = cf_open_loader(&L, R->ds, R->split[0], R->nsplit[0], &o, 0, err);
    if (s == GX_OK) s = gx_loader_start_epoch(L, 0, err);
    cf_mhat_reset(&R->mh, K, d1);
    gx_batch b;
    int rc = 0;
    while (s == GX_OK && (rc = gx_loader_next(L, &b, err)) == 1) {
        s = gx_cf_classify(&R->ctx, m, b.x, b.n, pred, NULL, NULL, h, err);
        for (int64_t i = 0; s == GX_OK && i < b.n; i++) {
            for (int64_t j = 0; j < d1; j++) hr[j] = (gx_real)h[i * d1 + j];
            cf_mhat_add(&R->mh, hr, pred[i], d1);
        }
    }
    if (s == GX_OK && rc < 0) s = GX_ERR_IO;
    if (s == GX_OK) s = gx_train_device_sync(&R->dev, err);
    if (s == GX_OK) s = cf_mhat_store(&R->mh, m, err);
    gx_loader_close(L);
    free(pred);
    free(h);
    free(hr);
    return s;
}

/* After the last epoch: exact m-hat into last (final weights) and best
 * (its own weights, read back from the file). */
static gx_status cf_finish(cf_run *R, gx_err *err) {
    const char *js = "{\"mhat\":\"training set\"}";
    int last = R->o.epochs - 1;
    gx_status s = cf_exact_mhat(R, &R->m, err);
    if (s == GX_OK) s = cf_checkpoint(R, &R->m, R->paths.last, "last", last, js, err);
    if (s != GX_OK || R->best_epoch < 0) return s;
    gx_st_file f;
    memset(&f, 0, sizeof f);
    gx_cf_model best;
    gx_cf_meta meta;
    gx_err e2;
    s = gx_st_read(&f, R->paths.best, &e2);
    if (s == GX_OK && (s = gx_cf_load(&f, &best, &meta, &e2)) == GX_OK) {
        /* Where the training ctx computes (freed before the device closes). */
        s = gx_train_device_params(&R->dev, &best.params, "best checkpoint", err);
        if (s == GX_OK) s = cf_exact_mhat(R, &best, err);
        if (s == GX_OK) s = cf_checkpoint(R, &best, R->paths.best, "best", meta.epoch, js, err);
        gx_cf_free(&best);
    } else {
        gx_err_set(err, s, "%s: %s", R->paths.best, e2.msg);
    }
    gx_st_close(&f);
    return s;
}

gx_status gx_train_cf(const gx_train_cf_opts *opts, gx_train_cf_result *res, gx_err *err) {
    memset(res, 0, sizeof *res);
    res->first_train_loss = res->last_train_loss = NAN;
    gx_status s = cf_opts_check(opts, err);
    if (s != GX_OK) return s;
    cf_run *R = calloc(1, sizeof *R);
    if (!R) return gx_err_set(err, GX_ERR_NOMEM, "cf-inn: out of memory");
    R->o = *opts;
    gx_train_clock_init(&R->clk, R->o.progress);
    s = cf_setup(R, err);
    R->clk.t_start = gx_train_now();
    int end = R->o.epochs;
    if (R->o.stop_after > 0 && R->o.stop_after < end) end = R->o.stop_after;
    for (int e = R->start_epoch; s == GX_OK && e < end; e++) {
        cf_epoch_stats es;
        s = cf_train_epoch(R, e, &es, err);
        if (s == GX_OK && R->interrupted) break;
        if (s == GX_OK) s = cf_end_epoch(R, e, &es, err);
        if (s == GX_OK) {
            double l = es.loss.n ? es.loss.sum[0] / (double)es.loss.n : NAN;
            if (e == R->start_epoch) res->first_train_loss = l;
            res->last_train_loss = l;
            res->images_per_s = es.seconds > 0 ? (double)es.n / es.seconds : 0;
            res->epochs_done = e + 1;
        }
    }
    int finished = s == GX_OK && end == R->o.epochs && !R->interrupted;
    res->interrupted = s == GX_OK && !finished;
    if (finished) s = cf_finish(R, err);
    gx_train_run_finish(R->db, R->run_id, s, finished);
    res->run_id = R->run_id;
    if (res->epochs_done == 0) res->epochs_done = R->start_epoch;
    res->best_val_accuracy = R->best_acc;
    res->best_epoch = R->best_epoch;
    cf_run_free(R);
    free(R);
    return s;
}
