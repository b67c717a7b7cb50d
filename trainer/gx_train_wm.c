/*
 * gx_train_wm.c — the WaveletMamba training loop and checkpoint evaluation
 * (contract and file formats: gx_train_wm.h).
 *
 * Shape of one training call:
 *   open dataset -> stratified 70/15/15 split (seed) -> database -> model
 *   (init from seed, or weights + optimiser from train_state on resume) ->
 *   loaders -> for each epoch: train (micro-batches, accumulation, clip,
 *   AdamW, warm-up + cosine per optimiser step), validate, colour stats,
 *   checkpoints (last, best), metrics rows, training state -> final colour
 *   statistics over the training part -> run finished.
 *
 * Why the pieces are where they are:
 *  - Per-step randomness is derived, not carried: before each micro-batch
 *    m.rng = fork(fork(seed', epoch), step). A resumed process reaches the
 *    same stream without having to save any generator.
 *  - The state file holds the weights as well as the optimiser, so it is
 *    self-sufficient: a kill between "last" and the state file leaves the
 *    previous (complete) state, and resuming redoes that epoch exactly.
 *  - Validation runs the model in eval mode with grad off: BN running stats
 *    are read, not moved; m.rng is not touched (coordinate dropout and VIB
 *    noise are training-only), so it cannot perturb the next epoch.
 *  - The loader thread (trainer/gx_loader.c) prepares batches while this
 *    thread computes; its output depends on (seed, epoch) only.
 *  - On the device (opts.device, gx_train_device): one code path for both.
 *    Batches go in through gx_to_ctx, outputs come back through gx_to_host
 *    (both no-ops on the CPU); the device is waited for once per optimiser
 *    step and after each evaluation pass (an error fails the run). The
 *    parameters' host copies are made current once per epoch end, before
 *    the colour buffers are set there (then uploaded) and before anything
 *    reads them (task matrix rows, checkpoints, state file).
 * Memory: one gx_ctx arena for activations, reset after every micro-batch
 * (after the first step the arena no longer grows); evaluation buffers are
 * malloc'ed once per pass (O(N*K)).
 */
#include "gx_train_wm.h"

#include "gx_dataset.h"
#include "gx_db.h"
#include "gx_loader.h"
#include "gx_metrics.h"
#include "gx_sha256.h"
#include "gx_train_common.h"
#include "gx_train_state.h"

#include <jansson.h>
#include <sqlite3.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WM_STATE_FORMAT "galaxyd-train-state-1"
#define WM_CKPT_FORMAT  "galaxyd-checkpoint-1"
/* Salt of the per-step stream, so it differs from the init stream of the
 * same seed (gx_wm_init draws from seed itself). */
#define WM_STEP_SALT 0x5eed5a1751ull

/* ================================================================ options */

gx_status gx_train_wm_opts_default(gx_train_wm_opts *o, const char *config, gx_err *err) {
    memset(o, 0, sizeof *o);
    if (!config || !strcmp(config, "default")) { o->model = gx_wm_config_default(); o->config_name = "default"; }
    else if (!strcmp(config, "small")) { o->model = gx_wm_config_small(); o->config_name = "small"; }
    else if (!strcmp(config, "tiny")) { o->model = gx_wm_config_tiny(); o->config_name = "tiny"; }
    else return gx_err_set(err, GX_ERR_INVALID, "--config: unknown config '%s' (tiny, small, default)", config);
    /* Spec "Training defaults": batch 512 reached by 64 x 8 accumulation. */
    o->epochs = 120; o->batch = 64; o->accum = 8; o->seed = 1;
    o->lr_start = 1e-4; o->lr_peak = 1e-3; o->lr_end = 5e-6; o->warmup_epochs = -1;
    o->weight_decay = 5e-4; o->beta1 = 0.9; o->beta2 = 0.999; o->eps = 1e-8; o->clip = 1.0;
    o->crop_frac = 1.0; o->balanced = 1; o->augment = 1; o->aug = GX_PRE_AUG_DEFAULT;
    o->prefetch = 2; o->coord_dropout = 0.1; o->vib_sample = 1;
    o->loss = gx_wm_loss_cfg_default();
    o->progress = -1;
    return GX_OK;
}

/* The --set table: name, type ('d' double, 'i' int, 'l' int64, 'u' uint64), offset. */
#define K_(name, t, field) { name, t, offsetof(gx_train_wm_opts, field) }
static const gx_train_set_key wm_set_keys[] = {
    K_("lr_start", 'd', lr_start), K_("lr_peak", 'd', lr_peak), K_("lr_end", 'd', lr_end),
    K_("warmup_epochs", 'd', warmup_epochs), K_("weight_decay", 'd', weight_decay),
    K_("beta1", 'd', beta1), K_("beta2", 'd', beta2), K_("eps", 'd', eps), K_("clip", 'd', clip),
    K_("crop_frac", 'd', crop_frac), K_("balanced", 'i', balanced), K_("augment", 'i', augment),
    K_("prefetch", 'i', prefetch), K_("max_train", 'l', max_train),
    K_("coord_dropout", 'd', coord_dropout), K_("vib_sample", 'i', vib_sample),
    K_("threads", 'i', threads), K_("epochs", 'i', epochs), K_("batch", 'i', batch),
    K_("accum", 'i', accum), K_("seed", 'u', seed), K_("size", 'l', model.size),
    K_("c1", 'l', model.c1), K_("c2", 'l', model.c2), K_("d_model", 'l', model.d_model),
    K_("d_state", 'l', model.d_state), K_("d_conv", 'l', model.d_conv),
    K_("expand", 'l', model.expand), K_("dt_rank", 'l', model.dt_rank),
    K_("grid", 'l', model.grid), K_("fusion", 'l', model.fusion),
    K_("resnet_width", 'l', model.resnet_width),
    K_("w_cls", 'd', loss.w_cls), K_("w_red", 'd', loss.w_red), K_("w_vib", 'd', loss.w_vib),
    K_("w_lsi", 'd', loss.w_lsi), K_("hk_weight_max", 'd', loss.hk_weight_max),
    K_("hk_start_epoch", 'i', loss.hk_start_epoch), K_("hk_ramp_end_epoch", 'i', loss.hk_ramp_end_epoch),
    K_("sk_lambda", 'd', loss.sk_lambda), K_("sk_iters", 'i', loss.sk_iters),
    K_("sk_eps", 'd', loss.sk_eps), K_("hk_bins", 'i', loss.hk_bins), K_("hk_delta", 'd', loss.hk_delta),
    K_("focal_gamma0", 'd', loss.focal_gamma0), K_("focal_alpha", 'd', loss.focal_alpha),
    K_("focal_alpha0", 'd', loss.focal_alpha0), K_("colour_weights", 'i', loss.colour_weights),
    K_("aug_rot", 'd', aug.rot_max_deg), K_("aug_hflip", 'd', aug.p_hflip),
    K_("aug_vflip", 'd', aug.p_vflip), K_("aug_brightness", 'd', aug.brightness),
    K_("aug_contrast", 'd', aug.contrast), K_("aug_p_contrast", 'd', aug.p_contrast),
    K_("aug_noise_lo", 'd', aug.noise_lo), K_("aug_noise_hi", 'd', aug.noise_hi),
    K_("aug_p_noise", 'd', aug.p_noise),
};
#undef K_

gx_status gx_train_wm_set(gx_train_wm_opts *o, const char *key, const char *value, gx_err *err) {
    if (!key || !value) return gx_err_set(err, GX_ERR_INVALID, "--set: expected key=value");
    if (!strcmp(key, "z_train")) {
        int v = !strcmp(value, "all") ? 0 : !strcmp(value, "spec_selected") ? 1 : -1;
        if (v < 0)
            return gx_err_set(err, GX_ERR_INVALID, "--set z_train: bad value '%s' (all or spec_selected)", value);
        o->z_train_spec = v;
        return GX_OK;
    }
    if (!strcmp(key, "backbone")) {        /* the ResNet-18 baseline (gx_wavelet_mamba.h) */
        int v = !strcmp(value, "wavelet") ? 0 : !strcmp(value, "resnet18") ? 1 : -1;
        if (v < 0)
            return gx_err_set(err, GX_ERR_INVALID, "--set backbone: bad value '%s' (wavelet or resnet18)", value);
        o->model.backbone = (gx_wm_backbone)v;
        return GX_OK;
    }
    if (!strcmp(key, "delta_mode") || !strcmp(key, "hk_mode")) {
        int is_delta = key[0] == 'd';
        const char *a = is_delta ? "mean" : "sample", *b = is_delta ? "token" : "batch";
        int v = !strcmp(value, a) ? 0 : !strcmp(value, b) ? 1 : -1;
        if (v < 0)
            return gx_err_set(err, GX_ERR_INVALID, "--set %s: bad value '%s' (%s or %s)", key, value, a, b);
        if (is_delta) o->model.delta_mode = (gx_wm_delta_mode)v;
        else o->loss.hk_mode = (gx_wm_hk_mode)v;
        return GX_OK;
    }
    return gx_train_set_apply(o, wm_set_keys, sizeof wm_set_keys / sizeof wm_set_keys[0], key, value, err);
}

/* Refuses option values the loop cannot run with, naming the option. */
static gx_status wm_opts_check(const gx_train_wm_opts *o, gx_err *err) {
    if (!o->data || !o->db_path || !o->out_dir)
        return gx_err_set(err, GX_ERR_INVALID, "train: --data, --db and --out are required");
    if (o->epochs < 1) return gx_err_set(err, GX_ERR_INVALID, "--epochs must be >= 1 (got %d)", o->epochs);
    if (o->batch < 2) return gx_err_set(err, GX_ERR_INVALID, "--batch must be >= 2 (batch norm; got %d)", o->batch);
    if (o->accum < 1) return gx_err_set(err, GX_ERR_INVALID, "--accum must be >= 1 (got %d)", o->accum);
    if (o->model.size < 8 || o->model.size > 1024)
        return gx_err_set(err, GX_ERR_INVALID, "--size must be in [8, 1024] (got %lld)", (long long)o->model.size);
    if (!(o->crop_frac > 0 && o->crop_frac <= 1))
        return gx_err_set(err, GX_ERR_INVALID, "--set crop_frac: must be in (0, 1]");
    if (!(o->coord_dropout >= 0 && o->coord_dropout <= 1))
        return gx_err_set(err, GX_ERR_INVALID, "--set coord_dropout: must be in [0, 1]");
    if (o->lr_peak <= 0 || o->lr_start < 0 || o->lr_end < 0)
        return gx_err_set(err, GX_ERR_INVALID, "--set lr_*: learning rates must be >= 0 (peak > 0)");
    if (o->clip < 0) return gx_err_set(err, GX_ERR_INVALID, "--set clip: must be >= 0");
    if (o->prefetch < 1) return gx_err_set(err, GX_ERR_INVALID, "--set prefetch: must be >= 1");
    if (o->model.resnet_width < 1 || o->model.resnet_width > 1024)
        return gx_err_set(err, GX_ERR_INVALID, "--set resnet_width: must be in [1, 1024]");
    if (o->loss.colour_weights != 0 && o->loss.colour_weights != 1)
        return gx_err_set(err, GX_ERR_INVALID, "--set colour_weights: must be 0 or 1 (got %d)",
                          o->loss.colour_weights);
    return GX_OK;
}

/* ============================================================= small utils */

static void wm_iso_time(char *buf, size_t n) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Quantile q of sorted x[n] with linear interpolation (torch.quantile's
 * default, which the model's batch colour statistics also use). */
static double wm_quantile_sorted(const double *x, int64_t n, double q) {
    if (n <= 0) return NAN;
    double pos = q * (double)(n - 1);
    int64_t lo = (int64_t)floor(pos);
    int64_t hi = lo + 1 < n ? lo + 1 : n - 1;
    return x[lo] + (pos - (double)lo) * (x[hi] - x[lo]);
}

static int wm_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median and IQR (q75 - q25) of each of the 4 colour columns of col[n,4]
 * (non-finite values skipped) into the host copies of the model's buffers
 * (the buffers themselves on the CPU); the caller uploads them
 * (gx_params_sync_device). No finite value leaves the buffers as they are. */
static void wm_set_colour_stats(gx_wm_model *m, const double *col, int64_t n) {
    double *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    if (!v) return;
    /* Writable: the trainer owns its parameters (gx_tensor_host_data hands
     * out the host copy read-only for serving). */
    gx_real *med = (gx_real *)gx_tensor_host_data(m->color_median);
    gx_real *iqr = (gx_real *)gx_tensor_host_data(m->color_iqr);
    for (int c = 0; c < 4; c++) {
        int64_t k = 0;
        for (int64_t i = 0; i < n; i++)
            if (isfinite(col[i * 4 + c])) v[k++] = col[i * 4 + c];
        if (k == 0) continue;
        qsort(v, (size_t)k, sizeof *v, wm_cmp_double);
        med[c] = (gx_real)wm_quantile_sorted(v, k, 0.5);
        iqr[c] = (gx_real)(wm_quantile_sorted(v, k, 0.75) - wm_quantile_sorted(v, k, 0.25));
    }
    free(v);
}

/* Copies a loader batch into arena tensors (the loader's floats may be a
 * different type from gx_real in the f64 build), built on the host and moved
 * to where ctx computes (gx_to_ctx: the same tensor on the CPU). */
static gx_tensor *wm_batch_x(gx_ctx *ctx, const gx_batch *b, int64_t S) {
    gx_tensor *x = gx_tensor_new_host(ctx, 4, GX_SHAPE(b->n, 3, S, S));
    for (int64_t i = 0; i < x->numel; i++) x->data[i] = (gx_real)b->x[i];
    return gx_to_ctx(ctx, x);
}

/* A host tensor on any ctx: gx_wm_forward cleans coordinates on the host
 * and uploads what it needs (no read back of a device copy). */
static gx_tensor *wm_batch_coords(gx_ctx *ctx, const gx_batch *b) {
    gx_tensor *c = gx_tensor_new_host(ctx, 2, GX_SHAPE(b->n, 2));
    for (int64_t i = 0; i < 2 * b->n; i++) c->data[i] = (gx_real)b->coords[i];
    return c;
}

/* Counts rows of host logits whose first argmax equals the label, and adds
 * each row's plain cross-entropy to *ce. The focal loss is no progress measure: its
 * gamma falls as the cross-entropy falls, so it can rise while the model
 * improves; the plain cross-entropy is logged beside it. */
static int64_t wm_count_correct(const gx_tensor *logits, const int32_t *label, double *ce) {
    int64_t B = logits->shape[0], K = logits->shape[1], ok = 0;
    for (int64_t i = 0; i < B; i++) {
        const gx_real *r = logits->data + i * K;
        int64_t a = 0;
        for (int64_t k = 1; k < K; k++) if (r[k] > r[a]) a = k;
        ok += (a == label[i]);
        double mx = r[a], sum = 0;
        for (int64_t k = 0; k < K; k++) sum += exp((double)r[k] - mx);
        *ce += log(sum) - ((double)r[label[i]] - mx);
    }
    return ok;
}

/* ============================================================ JSON metadata */

static char *wm_config_json(const gx_wm_config *c) {
    json_t *j = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:s}",
        "size", (json_int_t)c->size, "c1", (json_int_t)c->c1, "c2", (json_int_t)c->c2,
        "d_model", (json_int_t)c->d_model, "d_state", (json_int_t)c->d_state,
        "d_conv", (json_int_t)c->d_conv, "expand", (json_int_t)c->expand,
        "dt_rank", (json_int_t)c->dt_rank, "grid", (json_int_t)c->grid,
        "fusion", (json_int_t)c->fusion, "classes", (json_int_t)c->classes,
        "delta_mode", c->delta_mode == GX_WM_DELTA_TOKEN ? "token" : "mean");
    /* The image branch (ResNet-18 baseline or the wavelet encoder). */
    if (j && (json_object_set_new(j, "backbone", json_string(c->backbone == GX_WM_BACKBONE_RESNET18
                                                             ? "resnet18" : "wavelet")) ||
              json_object_set_new(j, "resnet_width", json_integer((json_int_t)c->resnet_width)))) {
        json_decref(j);
        j = NULL;
    }
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    return s;
}

/* Parses wm_config_json's output; every key is required. The bounds (far
 * above any real config) and the multiples of 4 are checked here because
 * gx_wm_init asserts on them and would otherwise allocate whatever a
 * corrupt file claims: a bad checkpoint must be refused, not abort. */
static gx_status wm_config_parse(const char *s, gx_wm_config *c, gx_err *err) {
    json_error_t je;
    json_t *j = s ? json_loads(s, 0, &je) : NULL;
    if (!j || !json_is_object(j)) {
        json_decref(j);
        return gx_err_set(err, GX_ERR_FORMAT, "checkpoint: metadata 'config' is not a JSON object");
    }
    static const char *const keys[] = { "size", "c1", "c2", "d_model", "d_state", "d_conv",
                                        "expand", "dt_rank", "grid", "fusion", "classes" };
    int64_t *dst[] = { &c->size, &c->c1, &c->c2, &c->d_model, &c->d_state, &c->d_conv,
                       &c->expand, &c->dt_rank, &c->grid, &c->fusion, &c->classes };
    static const int64_t lo[] = { 8, 1, 4, 1, 1, 1, 1, 1, 1, 4, 1 };
    static const int64_t hi[] = { 1024, 1024, 1024, 1024, 256, 16, 8, 1024, 64, 1024, 1024 };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = json_object_get(j, keys[i]);
        if (!json_is_integer(v) || json_integer_value(v) < lo[i] || json_integer_value(v) > hi[i] ||
            ((i == 2 || i == 9) && json_integer_value(v) % 4)) {
            json_decref(j);
            return gx_err_set(err, GX_ERR_FORMAT, "checkpoint: config key '%s' missing or invalid", keys[i]);
        }
        *dst[i] = (int64_t)json_integer_value(v);
    }
    const char *dm = json_string_value(json_object_get(j, "delta_mode"));
    c->delta_mode = dm && !strcmp(dm, "token") ? GX_WM_DELTA_TOKEN : GX_WM_DELTA_MEAN;
    /* backbone / resnet_width: absent in checkpoints from before the
     * ResNet-18 baseline, which are wavelet models. */
    json_t *bb = json_object_get(j, "backbone"), *rw = json_object_get(j, "resnet_width");
    const char *bs = bb ? json_string_value(bb) : "wavelet";
    c->backbone = bs && !strcmp(bs, "resnet18") ? GX_WM_BACKBONE_RESNET18 : GX_WM_BACKBONE_WAVELET;
    c->resnet_width = rw ? (int64_t)json_integer_value(rw) : 64;
    const char *bad = !bs || (strcmp(bs, "wavelet") && strcmp(bs, "resnet18")) ? "backbone"
                    : rw && (!json_is_integer(rw) || c->resnet_width < 1 || c->resnet_width > 1024)
                    ? "resnet_width" : NULL;
    json_decref(j);                      /* bs points into j: not used below */
    if (bad) return gx_err_set(err, GX_ERR_FORMAT, "checkpoint: config key '%s' invalid", bad);
    return GX_OK;
}

/* The run's config_json (runs table): the model config plus a "train"
 * object with the resolved training options, so reports (trainer/gx_report.h)
 * can label a run by its loss switches without parsing the command line.
 * Takes ownership of model_json; NULL when out of memory. */
static char *wm_run_config_json(char *model_json, const gx_train_wm_opts *o) {
    json_t *j = model_json ? json_loads(model_json, 0, NULL) : NULL;
    free(model_json);
    const gx_wm_loss_cfg *l = &o->loss;
    json_t *t = json_pack("{s:s,s:i,s:i,s:i,s:I,s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:i,s:i,s:f,s:s,"
                          "s:f,s:f,s:f,s:f,s:i,s:f,s:s,s:i,s:i,s:f,s:i}",
        "config", o->config_name ? o->config_name : "", "epochs", o->epochs, "batch", o->batch,
        "accum", o->accum, "seed", (json_int_t)o->seed, "max_train", (json_int_t)o->max_train,
        "lr_start", o->lr_start, "lr_peak", o->lr_peak, "lr_end", o->lr_end,
        "warmup_epochs", o->warmup_epochs, "weight_decay", o->weight_decay, "clip", o->clip,
        "balanced", o->balanced, "augment", o->augment, "coord_dropout", o->coord_dropout,
        "z_train", o->z_train_spec ? "spec_selected" : "all",
        "w_cls", l->w_cls, "w_red", l->w_red, "w_vib", l->w_vib, "w_lsi", l->w_lsi,
        "colour_weights", l->colour_weights, "hk_weight_max", l->hk_weight_max,
        "hk_mode", l->hk_mode == GX_WM_HK_BATCH ? "batch" : "sample",
        "hk_start_epoch", l->hk_start_epoch, "hk_ramp_end_epoch", l->hk_ramp_end_epoch,
        "sk_lambda", l->sk_lambda, "sk_iters", l->sk_iters);
    return gx_train_config_json(j, t);
}

/* ============================================================== the run */

typedef struct wm_run {
    gx_train_wm_opts o;            /* a copy: resume may override the seed */
    gx_dataset *ds;
    int64_t    *split[3];          /* train, val, test dataset indices */
    int64_t     nsplit[3];
    gx_loader  *train_L, *val_L;
    gx_db      *db;
    gx_wm_model m;
    int         model_ready;
    gx_optim    opt;
    int         opt_ready;
    gx_ctx      ctx;
    gx_train_device dev;           /* where the model computes (opts.device) */
    int64_t     run_id;
    int         start_epoch;       /* first epoch this call trains */
    double      best_acc;
    int         best_epoch;
    int64_t     batches, opt_steps_per_epoch, warmup_steps, total_steps;
    gx_train_paths paths;
    double     *col;               /* raw colours seen in this epoch's training [col_n,4] */
    int64_t     col_n, col_cap;
    gx_train_clock clk;            /* progress display; its steps are micro-batches */
    int         interrupted;       /* *o.stop was seen */
} wm_run;

/* Training-epoch accumulators (sums over micro-batches). */
typedef struct wm_epoch_stats {
    double loss[6];                /* total, cls, red, hk, vib, lsi */
    int64_t nb, n, correct;
    double ce;                     /* sum of per-sample cross-entropy */
    double grad_norm_sum;
    int64_t n_steps;
    double lr, seconds;
} wm_epoch_stats;

static const char *const wm_loss_names[6] = { "loss_total", "loss_cls", "loss_red",
                                              "loss_hk", "loss_vib", "loss_lsi" };

static void wm_loss_add(double acc[6], const gx_wm_loss_out *L) {
    acc[0] += L->total_value; acc[1] += L->cls; acc[2] += L->red;
    acc[3] += L->hk; acc[4] += L->vib; acc[5] += L->lsi;
}

/* Appends a batch's raw colours [B,4] (a host tensor) to the epoch's colour buffer. */
static void wm_col_append(wm_run *R, const gx_tensor *colors) {
    int64_t B = colors->shape[0];
    if (R->col_n + B > R->col_cap) {
        int64_t cap = (R->col_n + B) * 2;
        double *p = realloc(R->col, (size_t)cap * 4 * sizeof *p);
        if (!p) return;              /* statistics from fewer samples; not fatal */
        R->col = p;
        R->col_cap = cap;
    }
    for (int64_t i = 0; i < 4 * B; i++) R->col[R->col_n * 4 + i] = (double)colors->data[i];
    R->col_n += B;
}

/* ------------------------------------------------------- host copies */

/* Colour statistics of col[n,4] into the buffers: host copies (made current
 * by gx_train_params_to_host, which the caller ran since the last step)
 * edited, then uploaded, all of them (nothing on the CPU). */
static gx_status wm_colour_stats_update(wm_run *R, const double *col, int64_t n, gx_err *err) {
    wm_set_colour_stats(&R->m, col, n);
    return gx_train_params_to_device(&R->m.params, NULL, err);
}

/* ------------------------------------------------------------ optimiser */

/* One optimiser step on the accumulated gradients (already averaged over
 * the micro-batches): schedule, clipping, AdamW, zero grads. A non-finite
 * gradient norm skips the update (the step counter does not move). On the
 * device it ends with the step's wait: the first device error of the step
 * (a launch, a transfer of its micro-batches) fails the run. */
static gx_status wm_opt_step(wm_run *R, wm_epoch_stats *es, gx_err *err) {
    const gx_train_wm_opts *o = &R->o;
    double lr = gx_lr_warmup_cosine(R->opt.step, R->warmup_steps, R->total_steps,
                                    o->lr_start, o->lr_peak, o->lr_end);
    double norm = gx_clip_grad_norm(&R->m.params, o->clip > 0 ? o->clip : INFINITY);
    if (isfinite(norm)) {
        double lrs[GX_OPT_MAX_GROUPS];
        for (int g = 0; g < GX_OPT_MAX_GROUPS; g++) lrs[g] = lr;
        gx_optim_step(&R->opt, &R->m.params, lrs);
        es->grad_norm_sum += norm;
        es->n_steps++;
    }
    es->lr = lr;
    gx_params_zero_grad(&R->m.params);
    return gx_train_device_sync(&R->dev, err);
}

/* ------------------------------------------------------------- training */

/* One micro-batch: forward in training mode, the loss, backward. The
 * gradients accumulate into the parameters (scaled by 1/accum, so an
 * optimiser step sees the mean over its micro-batches); the activations are
 * dropped at the end (arena reset). Returns the loss value for display. */
static double wm_train_micro(wm_run *R, const gx_wm_loss_cfg *lc, const gx_rng *ep,
                             const gx_batch *b, wm_epoch_stats *es) {
    const gx_train_wm_opts *o = &R->o;
    gx_ctx *ctx = &R->ctx;
    /* Derived per step, never carried over: see the file comment. */
    R->m.rng = gx_rng_fork(ep, (uint64_t)b->step);
    ctx->grad_enabled = 1;
    gx_tensor *x = wm_batch_x(ctx, b, o->model.size);
    gx_tensor *coords = wm_batch_coords(ctx, b);
    gx_real *zt = gx_ctx_alloc(ctx, (size_t)b->n * sizeof *zt);   /* NaN stays NaN: no redshift */
    for (int64_t i = 0; i < b->n; i++) zt[i] = (gx_real)b->redshift[i];
    /* z_train=spec_selected: photometric-only objects train the classifier
     * but not the redshift head (NaN = missing to the loss). Only here:
     * validation and test passes keep every redshift. */
    if (o->z_train_spec)
        for (int64_t i = 0; i < b->n; i++)
            if (!R->ds->spec_selected[b->index[i]]) zt[i] = (gx_real)NAN;
    gx_wm_out out = gx_wm_forward(ctx, &R->m, x, coords, 1);
    gx_wm_loss_in in = gx_wm_loss_inputs(&out, &R->m, b->label, zt);
    gx_wm_loss_out L = gx_wm_loss(ctx, lc, &in);
    gx_real seed_grad = (gx_real)(1.0 / o->accum);
    gx_backward(ctx, L.total, &seed_grad);
    wm_loss_add(es->loss, &L);
    es->nb++;
    es->n += b->n;
    /* Read on the host: one download per output and batch (none on the CPU). */
    es->correct += wm_count_correct(gx_to_host(ctx, out.logits), b->label, &es->ce);
    wm_col_append(R, gx_to_host(ctx, out.colors));
    gx_ctx_reset(ctx);
    return L.total_value;
}

/* One training epoch: the loader's batches for (seed, epoch), an optimiser
 * step every `accum` micro-batches, and one for a partial group at the end
 * (its gradient rescaled to a mean over the micro-batches it holds). */
static gx_status wm_train_epoch(wm_run *R, int epoch, wm_epoch_stats *es, gx_err *err) {
    const gx_train_wm_opts *o = &R->o;
    gx_wm_loss_cfg lc = o->loss;
    lc.hk_weight = gx_wm_loss_hk_weight(&lc, epoch);   /* HK schedule: per epoch */
    gx_rng base, ep;
    gx_rng_init(&base, o->seed ^ WM_STEP_SALT);
    ep = gx_rng_fork(&base, (uint64_t)epoch);
    memset(es, 0, sizeof *es);
    R->col_n = 0;
    gx_status s = gx_loader_start_epoch(R->train_L, epoch, err);
    if (s != GX_OK) return s;
    gx_params_zero_grad(&R->m.params);
    int pending = 0, rc;
    gx_batch b;
    double t0 = gx_train_now();
    while ((rc = gx_loader_next(R->train_L, &b, err)) == 1) {
        if (o->stop && *o->stop) { R->interrupted = 1; return GX_OK; }
        double loss = wm_train_micro(R, &lc, &ep, &b, es);
        if (++pending == o->accum) {
            pending = 0;
            if ((s = wm_opt_step(R, es, err)) != GX_OK) return s;
        }
        R->clk.steps_done++;
        double dt = gx_train_now() - t0;
        gx_train_progress(&R->clk, o->progress, epoch, o->epochs, b.step, R->batches, loss,
                          dt > 0 ? (double)es->n / dt : 0);
    }
    if (rc < 0) return GX_ERR_IO;    /* err names the sample (loader) */
    if (pending > 0) {
        gx_params_scale_grad(&R->m.params, (double)o->accum / pending);
        if ((s = wm_opt_step(R, es, err)) != GX_OK) return s;
    }
    es->seconds = gx_train_now() - t0;
    return GX_OK;
}

/* ----------------------------------------------------------- evaluation */

/* Everything one evaluation pass collects (malloc'ed for n samples). */
typedef struct wm_eval_acc {
    int64_t  n, cap;
    int      k;
    gx_real *probs;                /* [n,k] softmax of the logits */
    int32_t *label;                /* [n] */
    gx_real *zpred;                /* [n] */
    double  *ztrue;                /* [n] NaN = missing */
    double  *col;                  /* [n,4] raw colours */
    double   loss[6];              /* sums over batches (when a loss config is given) */
    int64_t  nb;
} wm_eval_acc;

static void wm_eval_free(wm_eval_acc *a) {
    free(a->probs); free(a->label); free(a->zpred); free(a->ztrue); free(a->col);
    memset(a, 0, sizeof *a);
}

static gx_status wm_eval_alloc(wm_eval_acc *a, int64_t cap, int k, gx_err *err) {
    memset(a, 0, sizeof *a);
    a->cap = cap > 0 ? cap : 1;
    a->k = k;
    a->probs = malloc((size_t)a->cap * (size_t)k * sizeof *a->probs);
    a->label = malloc((size_t)a->cap * sizeof *a->label);
    a->zpred = malloc((size_t)a->cap * sizeof *a->zpred);
    a->ztrue = malloc((size_t)a->cap * sizeof *a->ztrue);
    a->col = malloc((size_t)a->cap * 4 * sizeof *a->col);
    if (!a->probs || !a->label || !a->zpred || !a->ztrue || !a->col) {
        wm_eval_free(a);
        return gx_err_set(err, GX_ERR_NOMEM, "eval: out of memory for %lld samples", (long long)cap);
    }
    return GX_OK;
}

/* Appends one batch's outputs (softmax in double, max-shifted), read on
 * the host (one download per output; none on the CPU). */
static void wm_eval_add(wm_eval_acc *a, gx_ctx *ctx, const gx_wm_out *out, const gx_batch *b) {
    int64_t K = a->k;
    const gx_real *logits = gx_to_host(ctx, out->logits)->data;
    const gx_real *zpred = gx_to_host(ctx, out->redshift)->data;
    const gx_real *col = gx_to_host(ctx, out->colors)->data;
    for (int64_t i = 0; i < b->n && a->n < a->cap; i++, a->n++) {
        const gx_real *r = logits + i * K;
        double mx = r[0], sum = 0;
        for (int64_t k = 1; k < K; k++) mx = r[k] > mx ? r[k] : mx;
        for (int64_t k = 0; k < K; k++) sum += exp((double)r[k] - mx);
        for (int64_t k = 0; k < K; k++)
            a->probs[a->n * K + k] = (gx_real)(exp((double)r[k] - mx) / sum);
        a->label[a->n] = b->label[i];
        a->zpred[a->n] = zpred[i];
        a->ztrue[a->n] = b->redshift[i];
        for (int c = 0; c < 4; c++) a->col[a->n * 4 + c] = (double)col[i * 4 + c];
    }
}

/* Runs the model in eval mode (no grad) over one epoch of loader L. With lc,
 * the loss terms are computed too (their means go into a->loss / a->nb). */
static gx_status wm_eval_pass(gx_ctx *ctx, gx_wm_model *m, gx_loader *L, int64_t S,
                              const gx_wm_loss_cfg *lc, wm_eval_acc *a, gx_err *err) {
    gx_status s = gx_loader_start_epoch(L, 0, err);
    if (s != GX_OK) return s;
    gx_batch b;
    int rc;
    while ((rc = gx_loader_next(L, &b, err)) == 1) {
        ctx->grad_enabled = 0;
        gx_tensor *x = wm_batch_x(ctx, &b, S);
        gx_tensor *coords = wm_batch_coords(ctx, &b);
        gx_wm_out out = gx_wm_forward(ctx, m, x, coords, 0);
        if (lc) {
            gx_real *zt = gx_ctx_alloc(ctx, (size_t)b.n * sizeof *zt);
            for (int64_t i = 0; i < b.n; i++) zt[i] = (gx_real)b.redshift[i];
            gx_wm_loss_in in = gx_wm_loss_inputs(&out, m, b.label, zt);
            gx_wm_loss_out Lo = gx_wm_loss(ctx, lc, &in);
            wm_loss_add(a->loss, &Lo);
            a->nb++;
        }
        wm_eval_add(a, ctx, &out, &b);
        gx_ctx_reset(ctx);
    }
    ctx->grad_enabled = 1;
    return rc < 0 ? GX_ERR_IO : GX_OK;
}

/* ---------------------------------------------------------- metric rows */

/* The classification and redshift metric set of one evaluation. */
static gx_status gx_train_rows_eval(gx_train_rows *w, const char *split, const wm_eval_acc *a,
                              gx_cls_metrics *cm, gx_z_metrics *zm, gx_err *err) {
    gx_status s = gx_metrics_classify(a->probs, a->label, a->n, a->k, cm, err);
    if (s == GX_OK) s = gx_metrics_redshift(a->zpred, a->ztrue, a->n, zm, err);
    if (s != GX_OK) return s;
    gx_train_row(w, split, cm->accuracy, "accuracy");
    double ce = 0;
    for (int64_t i = 0; i < a->n; i++) {
        double p = (double)a->probs[i * a->k + a->label[i]];
        ce -= log(p > 1e-30 ? p : 1e-30);
    }
    gx_train_row(w, split, a->n ? ce / (double)a->n : NAN, "ce");
    for (int k = 0; k < a->k; k++) gx_train_row(w, split, cm->recall[k], "recall_%d", k);
    gx_train_row(w, split, cm->auc_macro, "auc_macro");
    gx_train_row(w, split, cm->auc_micro, "auc_micro");
    gx_train_row(w, split, cm->ap_macro, "ap_macro");
    gx_train_row(w, split, cm->n_skipped, "auc_skipped");
    gx_train_row(w, split, zm->log_mse, "z_log_mse");
    gx_train_row(w, split, zm->mae, "z_mae");
    gx_train_row(w, split, zm->r2, "z_r2");
    gx_train_row(w, split, zm->bias, "z_bias");
    gx_train_row(w, split, zm->nmad, "z_nmad");
    gx_train_row(w, split, zm->outlier_rate, "z_outlier_rate");
    gx_train_row(w, split, (double)zm->n, "z_n");
    for (int bn = 0; bn < GX_Z_BINS; bn++) {
        gx_train_row(w, split, zm->bin_log_mse[bn], "z_bin%d_log_mse", bn);
        gx_train_row(w, split, zm->bin_bias[bn], "z_bin%d_bias", bn);
        gx_train_row(w, split, (double)zm->bin_n[bn], "z_bin%d_n", bn);
    }
    return GX_OK;
}

/* ---------------------------------------------------------- checkpoints */

/* Serialises a writer, hashes the bytes, writes them atomically. */
static gx_status wm_write_hashed(const gx_st_writer *w, const char *path, char sha[65], gx_err *err) {
    uint8_t *buf = NULL;
    size_t len = 0;
    gx_status s = gx_st_writer_serialize(w, &buf, &len, err);
    if (s != GX_OK) return s;
    if (sha) gx_sha256_hex(buf, len, sha);
    s = gx_file_write_atomic(path, buf, len, err);
    free(buf);
    return s;
}

/* The checkpoint of the current weights (see gx_train_wm.h for the keys). */
static gx_status wm_write_checkpoint(wm_run *R, const char *path, int epoch, double val_acc,
                                     char sha[65], gx_err *err) {
    gx_st_writer w;
    gx_st_writer_init(&w);
    char *cfg = wm_config_json(&R->m.cfg), *cls = gx_train_classes_json((int)R->m.cfg.classes);
    char pre[128], created[32];
    snprintf(pre, sizeof pre, "{\"size\":%lld,\"crop_frac\":%.17g}", (long long)R->m.cfg.size,
             R->o.crop_frac);
    wm_iso_time(created, sizeof created);
    gx_status s = (cfg && cls) ? GX_OK : gx_err_set(err, GX_ERR_NOMEM, "checkpoint: JSON");
    if (s == GX_OK) s = gx_params_to_writer(&R->m.params, &w, err);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "format", WM_CKPT_FORMAT, err);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "model", "wavelet-mamba", err);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "config", cfg, err);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "classes", cls, err);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "preprocess", pre, err);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "created", created, err);
    if (s == GX_OK) s = gx_train_meta_num(&w, "run_id", "%.0f", (double)R->run_id, err);
    if (s == GX_OK) s = gx_train_meta_num(&w, "epoch", "%.0f", epoch, err);
    if (s == GX_OK) s = gx_train_meta_num(&w, "split_seed", "%.0f", (double)R->o.seed, err);
    if (s == GX_OK) s = gx_train_meta_num(&w, "val_accuracy", "%.17g", val_acc, err);
    if (s == GX_OK) s = wm_write_hashed(&w, path, sha, err);
    free(cfg);
    free(cls);
    gx_st_writer_free(&w);
    return s;
}

/* The training state after `epoch` completed (weights + optimiser + loop). */
static gx_status wm_write_state(wm_run *R, int epoch, gx_err *err) {
    gx_train_loop loop = { epoch, R->run_id, R->best_acc, R->best_epoch };
    gx_status s = gx_train_state_write(R->paths.state, &R->m.params, &R->opt, WM_STATE_FORMAT, R->o.seed, &loop, err);
    return gx_train_device_error(&R->dev, s, err);   /* the optimiser state's download */
}

/* Restores weights, optimiser and loop position from the state file. */
static gx_status wm_load_state(wm_run *R, gx_err *err) {
    gx_train_loop loop;
    gx_status s = gx_train_state_load(R->paths.state, WM_STATE_FORMAT, "training state", R->o.resume_run,
                                      R->o.seed, &R->m.params, &R->opt, &loop, err);
    if (s != GX_OK) return s;
    R->start_epoch = loop.epoch + 1;
    R->best_acc = loop.best_acc;
    R->best_epoch = loop.best_epoch;
    return GX_OK;
}

/* ---------------------------------------------------------- setup/teardown */

static void wm_run_free(wm_run *R) {
    gx_loader_close(R->train_L);
    gx_loader_close(R->val_L);
    if (R->opt_ready) gx_optim_free(&R->opt);
    if (R->model_ready) gx_wm_free(&R->m);
    gx_ctx_free(&R->ctx);
    gx_train_device_close(&R->dev);   /* after the blocks above went back to its pool */
    gx_db_close(R->db);
    for (int k = 0; k < 3; k++) free(R->split[k]);
    gx_dataset_close(R->ds);
    free(R->col);
}

static gx_status wm_open_loader(gx_loader **L, gx_dataset *ds, const int64_t *idx, int64_t n,
                                const gx_train_wm_opts *o, int64_t S, int train, uint64_t seed,
                                gx_err *err) {
    gx_loader_opts lo = GX_LOADER_OPTS_DEFAULT;
    lo.batch = o->batch;
    lo.size = (int)S;
    lo.crop_frac = o->crop_frac;
    lo.balanced = train ? o->balanced : 0;
    lo.augment = train ? o->augment : 0;
    lo.aug = o->aug;
    /* Training drops a final partial batch (batch norm on 1 sample is
     * degenerate) unless that would leave no batch at all. */
    lo.drop_last = train && n >= o->batch;
    lo.prefetch = o->prefetch;
    lo.seed = seed;
    return gx_loader_open(L, ds, idx, n, &lo, err);
}

/* Dataset, split, database, model, optimiser, loaders; a new run or a resume. */
static gx_status wm_setup(wm_run *R, gx_err *err) {
    gx_train_wm_opts *o = &R->o;
    gx_status s = gx_train_setup_common(o->out_dir, o->threads, &R->paths, &R->ctx, err);
    if (s == GX_OK) s = gx_train_device_open_tf32(&R->dev, o->device, o->tf32, err);
    if (s != GX_OK) return s;
    R->best_acc = -1;
    R->best_epoch = -1;
    gx_err e2;
    s = gx_dataset_open(o->data, NULL, &R->ds, &e2);
    if (s != GX_OK) return gx_err_set(err, s, "--data %s: %s", o->data, e2.msg);
    if (o->z_train_spec && !R->ds->spec_selected)
        return gx_err_set(err, GX_ERR_INVALID, "--set z_train=spec_selected: %s has no spec_selected "
                          "column (galaxy-synth files have one; Galaxy10 files do not)", o->data);
    s = gx_db_open(&R->db, o->db_path, &e2);
    if (s != GX_OK) return gx_err_set(err, s, "--db %s: %s", o->db_path, e2.msg);
    o->model.classes = R->ds->n_classes;
    /* A resumed run takes its seed from the database (before the model is
     * initialised: a kill before the first state file means starting over
     * exactly as the run began). */
    if (o->resume_run > 0 &&
        (s = gx_db_run_seed(R->db, R->o.resume_run, "wavelet-mamba", &R->o.seed, &e2)) != GX_OK)
        return gx_err_set(err, s, "--resume %lld: %s", (long long)o->resume_run, e2.msg);
    gx_wm_init(&R->m, o->model, o->seed);
    R->model_ready = 1;
    R->m.coord_dropout = o->coord_dropout;
    R->m.vib_sample = o->vib_sample;
    gx_optim_cfg oc = gx_optim_defaults(GX_OPT_ADAMW);
    oc.beta1 = o->beta1; oc.beta2 = o->beta2; oc.eps = o->eps; oc.weight_decay = o->weight_decay;
    if ((s = gx_optim_init(&R->opt, &R->m.params, &oc, err)) != GX_OK) return s;
    R->opt_ready = 1;
    if (o->resume_run > 0) {
        /* No state file: killed during the first epoch; start at epoch 0. */
        if (access(R->paths.state, F_OK) == 0 && (s = wm_load_state(R, &e2)) != GX_OK)
            return gx_err_set(err, s, "--resume %lld: %s", (long long)o->resume_run, e2.msg);
        R->run_id = o->resume_run;
    } else {
        char *cfg = wm_config_json(&o->model);
        cfg = wm_run_config_json(cfg, o);
        if (!cfg) return gx_err_set(err, GX_ERR_NOMEM, "train: run config JSON: out of memory");
        gx_db_run_info ri = { .model_kind = "wavelet-mamba", .config_json = cfg,
                              .command_line = o->command_line, .seed = (int64_t)o->seed };
        s = gx_db_run_begin(R->db, &ri, &R->run_id, err);
        free(cfg);
        if (s != GX_OK) return s;
    }
    /* Initialised or resumed: onto the device before the first step (the
     * optimiser's state follows at that step), activations there too. */
    if ((s = gx_train_device_params(&R->dev, &R->m.params, "wavelet-mamba parameters", err)) != GX_OK) return s;
    gx_train_device_ctx(&R->dev, &R->ctx);
    /* The split uses the (possibly restored) seed, so a resume sees the same parts. */
    s = gx_split_stratified(R->ds->label, R->ds->n, R->ds->n_classes, (double[3]){ .70, .15, .15 },
                            o->seed, R->split, R->nsplit, err);
    if (s != GX_OK) return s;
    if (o->max_train > 0 && o->max_train < R->nsplit[0]) R->nsplit[0] = o->max_train;
    if (R->nsplit[0] < 2 || R->nsplit[1] < 1)
        return gx_err_set(err, GX_ERR_INVALID, "--data %s: too few samples for a 70/15/15 split "
                          "(train %lld, val %lld)", o->data, (long long)R->nsplit[0], (long long)R->nsplit[1]);
    s = wm_open_loader(&R->train_L, R->ds, R->split[0], R->nsplit[0], o, o->model.size, 1, o->seed, err);
    if (s == GX_OK)
        s = wm_open_loader(&R->val_L, R->ds, R->split[1], R->nsplit[1], o, o->model.size, 0, o->seed, err);
    if (s != GX_OK) return s;
    R->batches = gx_loader_batches_per_epoch(R->train_L);
    R->opt_steps_per_epoch = (R->batches + o->accum - 1) / o->accum;
    R->total_steps = R->opt_steps_per_epoch * o->epochs;
    double wu = o->warmup_epochs >= 0 ? o->warmup_epochs : 10.0 * o->epochs / 120.0;
    R->warmup_steps = (int64_t)llround(wu * (double)R->opt_steps_per_epoch);
    return GX_OK;
}

/* -------------------------------------------------------------- one epoch */

/* Training-split rows: loss terms, accuracy, lr, throughput, task matrix. */
static void gx_train_rows_train(gx_train_rows *w, const wm_run *R, const wm_epoch_stats *es) {
    for (int t = 0; t < 6; t++) gx_train_row(w, "train", es->nb ? es->loss[t] / es->nb : NAN, "%s", wm_loss_names[t]);
    gx_train_row(w, "train", es->n ? (double)es->correct / es->n : NAN, "accuracy");
    gx_train_row(w, "train", es->n ? es->ce / es->n : NAN, "ce");
    gx_train_row(w, "train", es->lr, "lr");
    gx_train_row(w, "train", es->seconds > 0 ? es->n / es->seconds : NAN, "images_per_s");
    gx_train_row(w, "train", es->n_steps ? es->grad_norm_sum / es->n_steps : NAN, "grad_norm");
    const gx_real *rm = gx_tensor_host_data(R->m.relationship);   /* synchronised by wm_end_epoch */
    for (int i = 0; i < 2; i++) {
        double a = rm[2 * i], b = rm[2 * i + 1], mx = a > b ? a : b;
        double ea = exp(a - mx), eb = exp(b - mx);
        gx_train_row(w, "train", a, "task_matrix_%d0", i);
        gx_train_row(w, "train", b, "task_matrix_%d1", i);
        gx_train_row(w, "train", ea / (ea + eb), "task_weight_%d0", i);
        gx_train_row(w, "train", eb / (ea + eb), "task_weight_%d1", i);
    }
}

/* The epoch's metric rows with the validation confusion matrix and the
 * class names, in one transaction (the dashboard's best-epoch matrix). */
static gx_status wm_epoch_put(wm_run *R, int epoch, const gx_train_rows *rows, const gx_cls_metrics *cm, gx_err *err) {
    char *cls = gx_train_classes_json((int)R->m.cfg.classes);
    if (!cls) return gx_err_set(err, GX_ERR_NOMEM, "metrics: out of memory");
    gx_metrics_confusion cf = { "val", cm->k, cm->confusion };
    gx_status s = gx_metrics_epoch_put(R->db, R->run_id, epoch, rows->row, rows->n, &cf, 1, cls, err);
    free(cls);
    return s;
}

/* Validation, checkpoints, metric rows and the state file of one epoch. */
static gx_status wm_end_epoch(wm_run *R, int epoch, const wm_epoch_stats *es, gx_err *err) {
    /* Host copies current: the colour buffers are set there, and the task
     * matrix rows and the files below read them (validation moves no
     * parameter). Colour buffers from this epoch's training colours, so
     * eval-mode validation normalises colours the way training did. */
    gx_status s = gx_train_params_to_host(&R->m.params, err);
    if (s == GX_OK) s = wm_colour_stats_update(R, R->col, R->col_n, err);
    if (s != GX_OK) return s;
    gx_wm_loss_cfg lc = R->o.loss;
    lc.hk_weight = gx_wm_loss_hk_weight(&lc, epoch);
    wm_eval_acc a;
    s = wm_eval_alloc(&a, R->nsplit[1], (int)R->m.cfg.classes, err);
    if (s != GX_OK) return s;
    s = wm_eval_pass(&R->ctx, &R->m, R->val_L, R->m.cfg.size, &lc, &a, err);
    if (s == GX_OK) s = gx_train_device_sync(&R->dev, err);   /* NaN metrics from a device error: refused */
    gx_train_rows *rows = calloc(1, sizeof *rows);   /* ~8 KB of names: kept off the stack */
    gx_cls_metrics cm;
    gx_z_metrics zm;
    if (!rows) s = gx_err_set(err, GX_ERR_NOMEM, "metrics: out of memory");
    if (s == GX_OK) s = gx_train_rows_eval(rows, "val", &a, &cm, &zm, err);
    if (s == GX_OK) {
        for (int t = 0; t < 6; t++) gx_train_row(rows, "val", a.nb ? a.loss[t] / a.nb : NAN, "%s", wm_loss_names[t]);
        gx_train_rows_train(rows, R, es);
    }
    wm_eval_free(&a);
    char sha[65], js[96];
    double acc = s == GX_OK ? cm.accuracy : NAN;
    snprintf(js, sizeof js, "{\"val_accuracy\":%.17g}", isfinite(acc) ? acc : 0.0);
    if (s == GX_OK) s = wm_epoch_put(R, epoch, rows, &cm, err);
    if (s == GX_OK) s = wm_write_checkpoint(R, R->paths.last, epoch, acc, sha, err);
    if (s == GX_OK)
        s = gx_db_checkpoint_put(R->db, &(gx_db_checkpoint){ R->run_id, epoch, "last", R->paths.last, sha, js },
                                 NULL, err);
    if (s == GX_OK && isfinite(acc) && acc > R->best_acc) {
        R->best_acc = acc;
        R->best_epoch = epoch;
        s = wm_write_checkpoint(R, R->paths.best, epoch, acc, sha, err);
        if (s == GX_OK)
            s = gx_db_checkpoint_put(R->db, &(gx_db_checkpoint){ R->run_id, epoch, "best", R->paths.best, sha, js },
                                     NULL, err);
    }
    /* The state goes last: until it is renamed into place, a resume redoes
     * this epoch from the previous state. */
    if (s == GX_OK) s = wm_write_state(R, epoch, err);
    if (s == GX_OK && R->o.progress != 0) {
        if (R->clk.tty) fputc('\n', stderr);
        fprintf(stderr, "epoch %d/%d  loss %.4f  train acc %.3f  val acc %.3f  %.1f img/s  %.1f s\n",
                epoch + 1, R->o.epochs, es->nb ? es->loss[0] / es->nb : NAN,
                es->n ? (double)es->correct / es->n : NAN, acc,
                es->seconds > 0 ? es->n / es->seconds : 0.0, es->seconds);
    }
    free(rows);
    return s;
}

/* After the last epoch: exact colour statistics over the training part
 * (no augmentation, final weights), stored in last.safetensors. */
static gx_status wm_final_colour_stats(wm_run *R, gx_err *err) {
    gx_loader *L = NULL;
    gx_train_wm_opts o = R->o;
    o.balanced = 0;
    o.augment = 0;
    gx_status s = wm_open_loader(&L, R->ds, R->split[0], R->nsplit[0], &o, o.model.size, 0, o.seed, err);
    wm_eval_acc a;
    memset(&a, 0, sizeof a);
    if (s == GX_OK) s = wm_eval_alloc(&a, R->nsplit[0], (int)R->m.cfg.classes, err);
    if (s == GX_OK) s = wm_eval_pass(&R->ctx, &R->m, L, o.model.size, NULL, &a, err);
    if (s == GX_OK) s = gx_train_device_sync(&R->dev, err);
    if (s == GX_OK) s = gx_train_params_to_host(&R->m.params, err);          /* the checkpoint reads the host copies */
    if (s == GX_OK) s = wm_colour_stats_update(R, a.col, a.n, err);
    wm_eval_free(&a);
    gx_loader_close(L);
    char sha[65];
    int last = o.epochs - 1;
    if (s == GX_OK) s = wm_write_checkpoint(R, R->paths.last, last, NAN, sha, err);
    if (s == GX_OK)
        s = gx_db_checkpoint_put(R->db, &(gx_db_checkpoint){ R->run_id, last, "last", R->paths.last, sha,
                                 "{\"colour_stats\":\"training set\"}" }, NULL, err);
    return s;
}

gx_status gx_train_wm(const gx_train_wm_opts *opts, gx_train_wm_result *res, gx_err *err) {
    gx_status s = wm_opts_check(opts, err);
    if (s != GX_OK) return s;
    wm_run *R = calloc(1, sizeof *R);
    if (!R) return gx_err_set(err, GX_ERR_NOMEM, "train: out of memory");
    R->o = *opts;
    gx_train_clock_init(&R->clk, R->o.progress);
    s = wm_setup(R, err);
    memset(res, 0, sizeof *res);
    res->first_train_loss = res->last_train_loss = NAN;
    R->clk.t_start = gx_train_now();
    int end = R->o.epochs;
    if (R->o.stop_after > 0 && R->o.stop_after < end) end = R->o.stop_after;
    for (int e = R->start_epoch; s == GX_OK && e < end; e++) {
        wm_epoch_stats es;
        s = wm_train_epoch(R, e, &es, err);
        if (s == GX_OK && R->interrupted) break;
        if (s == GX_OK) s = wm_end_epoch(R, e, &es, err);
        if (s == GX_OK) {
            double l = es.nb ? es.loss[0] / es.nb : NAN;
            if (e == R->start_epoch) res->first_train_loss = l;
            res->last_train_loss = l;
            res->images_per_s = es.seconds > 0 ? es.n / es.seconds : 0;
            res->epochs_done = e + 1;
        }
    }
    int finished = s == GX_OK && end == R->o.epochs && !R->interrupted;
    res->interrupted = s == GX_OK && !finished;
    if (finished) s = wm_final_colour_stats(R, err);
    gx_train_run_finish(R->db, R->run_id, s, finished);
    res->run_id = R->run_id;
    if (res->epochs_done == 0) res->epochs_done = R->start_epoch;
    res->best_val_accuracy = R->best_acc;
    res->best_epoch = R->best_epoch;
    wm_run_free(R);
    free(R);
    return s;
}

/* ================================================================== eval */

gx_status gx_wm_checkpoint_load(const gx_st_file *f, gx_wm_model *m, gx_err *err) {
    const char *fmt = gx_st_meta(f, "format"), *kind = gx_st_meta(f, "model");
    gx_wm_config cfg;
    memset(&cfg, 0, sizeof cfg);   /* fields the config JSON lacks take 0 = their defaults */
    memset(m, 0, sizeof *m);
    if (!fmt || strcmp(fmt, WM_CKPT_FORMAT))
        return gx_err_set(err, GX_ERR_FORMAT, "not a galaxyd checkpoint (format '%s')", fmt ? fmt : "none");
    if (!kind || strcmp(kind, "wavelet-mamba"))
        return gx_err_set(err, GX_ERR_FORMAT, "checkpoint of model '%s', not wavelet-mamba",
                          kind ? kind : "none");
    gx_status s = wm_config_parse(gx_st_meta(f, "config"), &cfg, err);
    if (s != GX_OK) return s;
    /* The file must hold what the config describes before the model is
     * allocated: a small file with a huge config is refused here, not after
     * gigabytes are allocated and initialised (gx_params_init_shapes). */
    gx_wm_init_shapes(m, cfg);
    s = gx_params_check(&m->params, f, 1, err);
    gx_wm_free(m);
    if (s != GX_OK) return s;
    gx_wm_init(m, cfg, 0);
    s = gx_params_load(&m->params, f, 1, err);
    if (s != GX_OK) gx_wm_free(m);
    return s;
}

/* Loads a checkpoint into a freshly initialised model. */
static gx_status wm_eval_load(const char *path, gx_wm_model *m, int *model_ready, double *crop,
                              uint64_t *split_seed, int64_t *run_id, int *epoch, gx_err *err) {
    gx_st_file f;
    memset(&f, 0, sizeof f);
    gx_err e2;
    gx_status s = gx_st_read(&f, path, &e2);
    if (s == GX_OK) s = gx_wm_checkpoint_load(&f, m, &e2);
    if (s != GX_OK) {
        gx_st_close(&f);
        return gx_err_set(err, s, "--checkpoint %s: %s", path, e2.msg);
    }
    *model_ready = 1;
    int64_t v;
    *split_seed = gx_train_meta_i64(&f, "split_seed", &v) ? (uint64_t)v : 1;
    *run_id = gx_train_meta_i64(&f, "run_id", &v) ? v : 0;
    *epoch = gx_train_meta_i64(&f, "epoch", &v) ? (int)v : 0;
    json_t *p = json_loads(gx_st_meta(&f, "preprocess") ? gx_st_meta(&f, "preprocess") : "{}", 0, NULL);
    json_t *cf = p ? json_object_get(p, "crop_frac") : NULL;
    *crop = json_is_number(cf) ? json_number_value(cf) : 1.0;
    json_decref(p);
    gx_st_close(&f);
    return GX_OK;
}

static void wm_eval_print(FILE *fp, int S, const gx_cls_metrics *cm, const gx_z_metrics *zm) {
    if (!fp) return;
    fprintf(fp, "size %d: n %lld  accuracy %.4f  auc macro %.4f micro %.4f  ap macro %.4f",
            S, (long long)cm->n, cm->accuracy, cm->auc_macro, cm->auc_micro, cm->ap_macro);
    if (cm->n_skipped) fprintf(fp, " (%d classes without positives skipped)", cm->n_skipped);
    fprintf(fp, "\n  recall:");
    for (int k = 0; k < cm->k; k++) fprintf(fp, " %d:%.3f", k, cm->recall[k]);
    fprintf(fp, "\n  redshift (n %lld): log-MSE %.5f  MAE %.4f  R2 %.4f  bias %.4f  NMAD %.4f  "
            "outliers %.4f\n", (long long)zm->n, zm->log_mse, zm->mae, zm->r2, zm->bias, zm->nmad,
            zm->outlier_rate);
}

/* What one evaluation holds: the model, its data, the rows to store. */
typedef struct wm_eval_env {
    const gx_eval_wm_opts *o;
    gx_wm_model m;
    int         model_ready, epoch;
    double      crop;
    uint64_t    split_seed;
    int64_t     run_id;
    gx_dataset *ds;
    int64_t    *idx[3], cnt[3];    /* the stratified split (its seed from the checkpoint) */
    int64_t    *all;               /* 0..n-1 with --all */
    const int64_t *eidx;           /* the evaluated indices (test part or all) */
    int64_t     en;
    gx_ctx      ctx;
    gx_train_rows    *rows;
    gx_train_device dev;           /* o->device: the model and its passes there */
} wm_eval_env;

/* Checkpoint, dataset, split, evaluated index set. */
static gx_status wm_eval_open(wm_eval_env *E, gx_err *err) {
    const gx_eval_wm_opts *o = E->o;
    gx_err e2;
    E->rows = calloc(1, sizeof *E->rows);
    if (!E->rows) return gx_err_set(err, GX_ERR_NOMEM, "eval: out of memory");
    gx_status s = wm_eval_load(o->checkpoint, &E->m, &E->model_ready, &E->crop, &E->split_seed,
                               &E->run_id, &E->epoch, err);
    if (s != GX_OK) return s;
    if ((s = gx_dataset_open(o->data, NULL, &E->ds, &e2)) != GX_OK)
        return gx_err_set(err, s, "--data %s: %s", o->data, e2.msg);
    if (E->ds->n_classes > E->m.cfg.classes)
        return gx_err_set(err, GX_ERR_INVALID, "--data %s: %d classes, the checkpoint has %lld",
                          o->data, E->ds->n_classes, (long long)E->m.cfg.classes);
    s = gx_split_stratified(E->ds->label, E->ds->n, E->ds->n_classes, (double[3]){ .70, .15, .15 },
                            E->split_seed, E->idx, E->cnt, err);
    if (s != GX_OK) return s;
    E->eidx = E->idx[2];
    E->en = E->cnt[2];
    if (o->all) {
        E->en = E->ds->n;
        E->all = malloc((size_t)(E->en > 0 ? E->en : 1) * sizeof *E->all);
        if (!E->all) return gx_err_set(err, GX_ERR_NOMEM, "eval: out of memory");
        for (int64_t i = 0; i < E->en; i++) E->all[i] = i;
        E->eidx = E->all;
    }
    if (E->en < 1) return gx_err_set(err, GX_ERR_INVALID, "--data %s: the test part is empty", o->data);
    /* On the device: the parameters go up once, each pass's batches move
     * there (wm_batch_x) and its outputs come back (wm_eval_add), as the
     * trainer's validation does. */
    if ((s = gx_train_device_open_tf32(&E->dev, o->device, o->tf32, err)) != GX_OK) return s;
    if ((s = gx_train_device_params(&E->dev, &E->m.params, "the checkpoint's model", err)) != GX_OK) return s;
    gx_train_device_ctx(&E->dev, &E->ctx);
    return GX_OK;
}

static void wm_eval_close(wm_eval_env *E) {
    free(E->all);
    for (int k = 0; k < 3; k++) free(E->idx[k]);
    gx_dataset_close(E->ds);
    if (E->model_ready) gx_wm_free(&E->m);
    gx_ctx_free(&E->ctx);
    free(E->rows);
    gx_train_device_close(&E->dev);   /* after the model and the ctx gave their blocks back */
}

/* Evaluates at input size S. full: the whole metric set into rows and r
 * (the nominal size); otherwise accuracy only. *acc receives the accuracy. */
static gx_status wm_eval_size(wm_eval_env *E, int S, int full, gx_eval_wm_result *r,
                              double *acc, gx_err *err) {
    if (S < 8 || S > 1024) return gx_err_set(err, GX_ERR_INVALID, "--sizes: %d is outside [8, 1024]", S);
    gx_train_wm_opts lo;               /* loader settings only: no augmentation, no balancing */
    memset(&lo, 0, sizeof lo);
    lo.batch = E->o->batch > 0 ? E->o->batch : 64;
    lo.crop_frac = E->crop;
    lo.prefetch = 2;
    gx_loader *L = NULL;
    wm_eval_acc a;
    memset(&a, 0, sizeof a);
    gx_cls_metrics cm;
    gx_z_metrics zm;
    gx_status s = wm_open_loader(&L, E->ds, E->eidx, E->en, &lo, S, 0, E->split_seed, err);
    if (s == GX_OK) s = wm_eval_alloc(&a, E->en, (int)E->m.cfg.classes, err);
    double t0 = gx_train_now();
    if (s == GX_OK) s = wm_eval_pass(&E->ctx, &E->m, L, S, NULL, &a, err);
    if (s == GX_OK) s = gx_train_device_sync(&E->dev, err);   /* a device error fails the eval */
    double dt = gx_train_now() - t0;
    if (s == GX_OK && full) {
        s = gx_train_rows_eval(E->rows, "test", &a, &cm, &zm, err);
        if (s == GX_OK) {
            /* Inference throughput of the whole pass (loader thread
             * overlapping), and the model size: the Table-2 columns. */
            r->images_per_s = dt > 0 ? (double)a.n / dt : NAN;
            r->n_params = gx_params_count(&E->m.params, 0);
            gx_train_row(E->rows, "test", r->images_per_s, "images_per_s");
            gx_train_row(E->rows, "test", (double)r->n_params, "n_params");
            r->cls = cm;
            r->z = zm;
            r->n = a.n;
            r->accuracy_nominal = cm.accuracy;
            r->auc_macro = cm.auc_macro;
            r->z_log_mse = zm.log_mse;
            r->z_nmad = zm.nmad;
            wm_eval_print(E->o->print, S, &cm, &zm);
        }
    } else if (s == GX_OK) {
        s = gx_metrics_classify(a.probs, a.label, a.n, a.k, &cm, err);
        if (s == GX_OK && E->o->print)
            fprintf(E->o->print, "size %d: n %lld  accuracy %.4f\n", S, (long long)cm.n, cm.accuracy);
    }
    if (s == GX_OK) *acc = cm.accuracy;
    wm_eval_free(&a);
    gx_loader_close(L);
    return s;
}

gx_status gx_eval_wm(const gx_eval_wm_opts *o, gx_eval_wm_result *r, gx_err *err) {
    memset(r, 0, sizeof *r);
    if (!o->checkpoint || !o->data)
        return gx_err_set(err, GX_ERR_INVALID, "eval: --checkpoint and --data are required");
    if (o->n_sizes < 0 || o->n_sizes > GX_TRAIN_MAX_SIZES)
        return gx_err_set(err, GX_ERR_INVALID, "--sizes: at most %d sizes", GX_TRAIN_MAX_SIZES);
    wm_eval_env E;
    memset(&E, 0, sizeof E);
    E.o = o;
    gx_ctx_init(&E.ctx, 64u << 20);
    gx_status s = wm_eval_open(&E, err);
    /* The nominal size first, always, for the full metric set; then every
     * asked size (accuracy only; the nominal one is not run twice). Only the
     * asked sizes enter the per-size list and the CV. */
    int nominal = (int)E.m.cfg.size;
    double acc_nominal = NAN;
    if (s == GX_OK) s = wm_eval_size(&E, nominal, 1, r, &acc_nominal, err);
    for (int i = 0; s == GX_OK && i < (o->n_sizes ? o->n_sizes : 1); i++) {
        int S = o->n_sizes ? o->sizes[i] : nominal;
        double acc = acc_nominal;
        if (S != nominal) s = wm_eval_size(&E, S, 0, r, &acc, err);
        if (s != GX_OK) break;
        r->sizes[r->n_sizes] = S;
        r->accuracy[r->n_sizes++] = acc;
        gx_train_row(E.rows, "test", acc, "accuracy_s%d", S);
    }
    if (s == GX_OK) {
        r->cv = gx_metric_cv(r->accuracy, r->n_sizes);
        gx_train_row(E.rows, "test", r->cv, "size_cv");
        if (o->print) {
            fprintf(o->print, "accuracy by size:");
            for (int i = 0; i < r->n_sizes; i++) fprintf(o->print, " %d:%.4f", r->sizes[i], r->accuracy[i]);
            fprintf(o->print, "\ncross-size CV: %.4f\n", r->cv);
        }
    }
    /* Stored under the checkpoint's run and epoch, split "test". */
    if (s == GX_OK && o->db_path) {
        gx_db *db = NULL;
        gx_err e2;
        if ((s = gx_db_open(&db, o->db_path, &e2)) != GX_OK)
            gx_err_set(err, s, "--db %s: %s", o->db_path, e2.msg);
        else if (E.run_id > 0)
            s = gx_metrics_epoch_put(db, E.run_id, E.epoch, E.rows->row, E.rows->n,
                                     &(gx_metrics_confusion){ "test", r->cls.k, r->cls.confusion }, 1, NULL, err);
        else if (o->print)
            fprintf(o->print, "(checkpoint has no run id: nothing stored)\n");
        gx_db_close(db);
    }
    wm_eval_close(&E);
    return s;
}
