/*
 * gx_train_uda.c — the DeepAstroUDA training loop, its evaluation and the
 * offline scorer (contract and file formats: gx_train_uda.h; model and
 * losses: models/gx_uda.h; spec/uda.md).
 *
 * Shape of one training call:
 *   open source + target -> class map -> splits -> database (run) -> model,
 *   SGD, bank, tuner (fresh, or from train_state on resume) -> loaders ->
 *   per epoch: steps of (source CE) + lambda (target AC + ES), SGD with two
 *   lr groups and inverse decay, bank update -> tuner step -> source-val
 *   accuracy, source/target test metrics -> rows, checkpoints, state ->
 *   early stopping.
 *
 * Why the pieces are where they are: as in gx_train_wm.c, per-step
 * randomness is derived from (seed, epoch, step), never carried, and the
 * state file holds everything else the loop reads (weights, BN statistics,
 * momentum, bank, tuner, best/patience counters), so a resumed run equals an
 * uninterrupted one bit for bit. Evaluation runs with grad off in eval mode
 * and touches neither the bank nor any generator.
 *
 * Device (opts.device, gx_train_device; also gx_score_opts.device): one
 * path for both. The weights go to the device after init/resume; batches
 * are built on the host and moved with gx_to_ctx; the host reads, once per
 * tensor and step, the target's p and f (the AC op and the bank live on the
 * host), the source's p and f (bank), the loss values (one transfer) and the
 * head, which is renormalised on the host and uploaded (gx_uda_renorm_head);
 * one gx_train_device_sync per step and per evaluation batch; the host
 * copies are made current before the files are written, and the baseline's
 * BN copy is made on them and uploaded. On the CPU the transfers are no-ops
 * and every number is the CPU-only loop's.
 */
#include "gx_train_uda.h"
#include "gx_train_common.h"
#include "gx_train_state.h"

#include "gx_anomaly_store.h"
#include "gx_db.h"
#include "gx_loader.h"
#include "gx_metrics.h"
#include "gx_sha256.h"
#include "gx_synth.h"

#include <jansson.h>
#include <math.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define UDA_STATE_FORMAT "galaxyd-uda-train-state-1"
#define UDA_STEP_SALT    0x0da5eed5a17ull
#define UDA_ZOOM         1.17
#define UDA_PASS_KEY(e, p) ((int64_t)(e) * 4096 + (p))

/* ================================================================ options */

void gx_train_uda_opts_default(gx_train_uda_opts *o) {
    memset(o, 0, sizeof *o);
    o->model = gx_uda_config_resnet18();
    o->lambda = 0.005;
    o->epochs = 100;
    o->batch_source = o->batch_target = 36;
    o->seed = 1;
    o->lr_backbone = 1e-3;
    o->lr_head = 1e-2;
    o->momentum = 0.9;
    o->weight_decay = 5e-4;
    o->lr_gamma = 10;
    o->lr_power = 0.75;
    o->decay_epochs = 10;
    o->patience = 12;
    o->crop_frac = 1.0;
    o->augment = 1;
    o->eval_batch = 64;
    o->progress = -1;
}

gx_status gx_train_uda_backbone(gx_train_uda_opts *o, const char *name, gx_err *err) {
    if (!name) return gx_err_set(err, GX_ERR_INVALID, "--backbone: needs a value");
    if (!strcmp(name, "tiny")) o->model = gx_uda_config_tiny();
    else if (!strcmp(name, "resnet18")) o->model = gx_uda_config_resnet18();
    else if (!strcmp(name, "resnet50")) o->model = gx_uda_config_resnet50();
    else return gx_err_set(err, GX_ERR_INVALID, "--backbone: unknown backbone '%s' (tiny, resnet18, resnet50)", name);
    return GX_OK;
}

#define K_(name, t, field) { name, t, offsetof(gx_train_uda_opts, field) }
static const gx_train_set_key uda_set_keys[] = {
    K_("lambda", 'd', lambda), K_("epochs", 'i', epochs), K_("seed", 'u', seed),
    K_("batch_source", 'i', batch_source), K_("batch_target", 'i', batch_target),
    K_("lr_backbone", 'd', lr_backbone), K_("lr_head", 'd', lr_head), K_("momentum", 'd', momentum),
    K_("weight_decay", 'd', weight_decay), K_("lr_gamma", 'd', lr_gamma), K_("lr_power", 'd', lr_power),
    K_("decay_epochs", 'd', decay_epochs), K_("patience", 'i', patience),
    K_("ac_max_slots", 'l', ac_max_slots), K_("crop_frac", 'd', crop_frac), K_("augment", 'i', augment),
    K_("max_source", 'l', max_source), K_("max_target", 'l', max_target),
    K_("eval_batch", 'i', eval_batch), K_("threads", 'i', threads), K_("size", 'l', model.size),
    K_("temperature", 'd', model.temperature),
};
#undef K_

gx_status gx_train_uda_set(gx_train_uda_opts *o, const char *key, const char *value, gx_err *err) {
    if (!key || !value) return gx_err_set(err, GX_ERR_INVALID, "--set: expected key=value");
    if (!strcmp(key, "experiment")) { o->experiment = value; return GX_OK; }
    return gx_train_set_apply(o, uda_set_keys, sizeof uda_set_keys / sizeof uda_set_keys[0], key, value, err);
}

static gx_status uda_opts_check(const gx_train_uda_opts *o, gx_err *err) {
    if (!o->source || !o->target || !o->db_path || !o->out_dir)
        return gx_err_set(err, GX_ERR_INVALID, "uda: --source, --target, --db and --out are required");
    if (o->epochs < 1) return gx_err_set(err, GX_ERR_INVALID, "--epochs must be >= 1 (got %d)", o->epochs);
    if (o->batch_source < 2 || o->batch_target < 2)
        return gx_err_set(err, GX_ERR_INVALID, "--set batch_source/batch_target: must be >= 2 (batch norm)");
    if (!(o->lambda >= 0)) return gx_err_set(err, GX_ERR_INVALID, "--lambda must be >= 0");
    if (o->model.size < 8 || o->model.size > 1024)
        return gx_err_set(err, GX_ERR_INVALID, "--set size: must be in [8, 1024] (got %lld)", (long long)o->model.size);
    if (!(o->crop_frac > 0 && o->crop_frac <= 1))
        return gx_err_set(err, GX_ERR_INVALID, "--set crop_frac: must be in (0, 1]");
    if (!(o->lr_backbone >= 0 && o->lr_head >= 0 && o->momentum >= 0 && o->weight_decay >= 0))
        return gx_err_set(err, GX_ERR_INVALID, "--set lr_*/momentum/weight_decay: must be >= 0");
    if (o->patience < 1) return gx_err_set(err, GX_ERR_INVALID, "--set patience: must be >= 1");
    if (o->eval_batch < 1) return gx_err_set(err, GX_ERR_INVALID, "--set eval_batch: must be >= 1");
    if (!(o->model.temperature > 0)) return gx_err_set(err, GX_ERR_INVALID, "--set temperature: must be > 0");
    return GX_OK;
}

/* ============================================================ class map */

/* One class id from "5" or "Round Smooth"; -1 when neither. */
static int uda_class_of(const char *t) {
    while (*t == ' ') t++;
    char *end;
    long v = strtol(t, &end, 10);
    if (end != t) {
        while (*end == ' ') end++;
        return !*end && v >= 0 && v < GX_CLASSES_MAX ? (int)v : -1;
    }
    return gx_class_lookup(t);
}

static gx_status uda_parse_exclude(const char *exclude, gx_uda_classmap *cm, gx_err *err) {
    char buf[1024];
    if (!exclude) return GX_OK;
    if (strlen(exclude) >= sizeof buf) return gx_err_set(err, GX_ERR_INVALID, "--exclude: list too long");
    snprintf(buf, sizeof buf, "%s", exclude);
    for (char *sv = NULL, *t = strtok_r(buf, ",", &sv); t; t = strtok_r(NULL, ",", &sv)) {
        int c = uda_class_of(t);
        if (c < 0) return gx_err_set(err, GX_ERR_INVALID, "--exclude: unknown class '%s'", t);
        cm->map[c] = -1;
    }
    return GX_OK;
}

/* One --known item: [name=]member[+member...]. */
static gx_status uda_parse_group(char *item, gx_uda_classmap *cm, const int *excluded, gx_err *err) {
    if (cm->K >= GX_UDA_MAX_CLASSES) return gx_err_set(err, GX_ERR_INVALID, "--known: too many classes");
    char *eq = strchr(item, '='), *members = item, *name = NULL;
    if (eq) { *eq = 0; name = item; members = eq + 1; }
    char joined[48] = "";
    int k = cm->K, n = 0;
    for (char *sv = NULL, *t = strtok_r(members, "+", &sv); t; t = strtok_r(NULL, "+", &sv), n++) {
        int c = uda_class_of(t);
        if (c < 0) return gx_err_set(err, GX_ERR_INVALID, "--known: unknown class '%s'", t);
        if (excluded[c]) return gx_err_set(err, GX_ERR_INVALID, "--known: class %d is also in --exclude", c);
        if (cm->map[c] >= 0 && cm->map[c] < k)
            return gx_err_set(err, GX_ERR_INVALID, "--known: class %d is listed twice", c);
        cm->map[c] = k;
        const char *cn = gx_class_name(c);
        size_t l = strlen(joined);
        snprintf(joined + l, sizeof joined - l, "%s%s", l ? "+" : "", cn ? cn : "?");
    }
    if (n == 0) return gx_err_set(err, GX_ERR_INVALID, "--known: empty item");
    snprintf(cm->names[k], sizeof cm->names[k], "%s", name && *name ? name : joined);
    cm->K++;
    return GX_OK;
}

gx_status gx_uda_classmap_parse(const char *known, const char *exclude, int n_classes,
                                gx_uda_classmap *cm, gx_err *err) {
    memset(cm, 0, sizeof *cm);
    int excluded[GX_CLASSES_MAX] = { 0 };
    for (int c = 0; c < GX_CLASSES_MAX; c++) cm->map[c] = GX_CLASSES_MAX;   /* placeholder: unknown */
    gx_status s = uda_parse_exclude(exclude, cm, err);
    if (s != GX_OK) return s;
    for (int c = 0; c < GX_CLASSES_MAX; c++) excluded[c] = cm->map[c] < 0;
    char buf[1024];
    if (known) {
        if (strlen(known) >= sizeof buf) return gx_err_set(err, GX_ERR_INVALID, "--known: list too long");
        snprintf(buf, sizeof buf, "%s", known);
        for (char *sv = NULL, *t = strtok_r(buf, ",", &sv); t && s == GX_OK; t = strtok_r(NULL, ",", &sv))
            s = uda_parse_group(t, cm, excluded, err);
    } else {
        for (int c = 0; c < n_classes && c < GX_CLASSES_MAX && s == GX_OK; c++) {
            if (excluded[c]) continue;
            char item[16];
            snprintf(item, sizeof item, "%d", c);
            s = uda_parse_group(item, cm, excluded, err);
        }
    }
    if (s != GX_OK) return s;
    if (cm->K < 2) return gx_err_set(err, GX_ERR_INVALID, "--known: needs at least 2 known classes (got %d)", cm->K);
    for (int c = 0; c < GX_CLASSES_MAX; c++)
        if (cm->map[c] == GX_CLASSES_MAX) cm->map[c] = cm->K;   /* neither known nor excluded */
    return GX_OK;
}

static char *uda_classes_json(const gx_uda_classmap *cm) {
    json_t *a = json_array();
    for (int k = 0; a && k < cm->K; k++) json_array_append_new(a, json_string(cm->names[k]));
    char *s = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    return s;
}

/* ============================================================== metrics */

gx_status gx_uda_split_metrics_compute(const float *probs, const float *entropy,
                                       const int32_t *labels, int64_t n, int K, double rho,
                                       gx_uda_split_metrics *out, gx_err *err) {
    enum { MAXC = GX_UDA_MAX_CLASSES + 1 };
    int64_t tp[MAXC] = { 0 }, npred[MAXC] = { 0 }, sup[MAXC] = { 0 };
    int64_t correct = 0, kn = 0, kok = 0, un = 0, uok = 0;
    memset(out, 0, sizeof *out);
    if (K < 2 || K > GX_UDA_MAX_CLASSES) return gx_err_set(err, GX_ERR_INVALID, "metrics: K %d out of range", K);
    double *score = malloc((size_t)(n > 0 ? n : 1) * sizeof *score);
    uint8_t *pos = malloc((size_t)(n > 0 ? n : 1));
    if (!score || !pos) {
        free(score);
        free(pos);
        return gx_err_set(err, GX_ERR_NOMEM, "metrics: out of memory");
    }
    gx_status s = GX_OK;
    for (int64_t i = 0; i < n; i++) {
        int y = labels[i];
        if (y < 0 || y > K) { s = gx_err_set(err, GX_ERR_INVALID, "metrics: label %d outside [0, %d]", y, K); break; }
        const float *p = probs + i * K;
        int a = 0;
        for (int k = 1; k < K; k++) if (p[k] > p[a]) a = k;
        int pred = entropy[i] > rho ? K : a;
        sup[y]++;
        npred[pred]++;
        out->confusion[y * (K + 1) + pred]++;
        tp[y] += pred == y;
        correct += pred == y;
        if (y < K) { kn++; kok += pred == y; } else { un++; uok += pred == K; }
        score[i] = (double)entropy[i] / log((double)K);
        pos[i] = y == K;
    }
    if (s == GX_OK) {
        /* sklearn's macro average over the labels in truth or prediction. */
        double P = 0, R = 0, F = 0;
        int L = 0;
        for (int c = 0; c <= K; c++) {
            if (!sup[c] && !npred[c]) continue;
            double pc = npred[c] ? (double)tp[c] / npred[c] : 0, rc = sup[c] ? (double)tp[c] / sup[c] : 0;
            P += pc;
            R += rc;
            F += pc + rc > 0 ? 2 * pc * rc / (pc + rc) : 0;
            L++;
        }
        out->n = n;
        out->accuracy = n ? (double)correct / n : NAN;
        out->precision_macro = L ? P / L : NAN;
        out->recall_macro = L ? R / L : NAN;
        out->f1_macro = L ? F / L : NAN;
        out->known_accuracy = kn ? (double)kok / kn : NAN;
        out->unknown_accuracy = un ? (double)uok / un : NAN;
        out->anomaly_auc = gx_metric_roc_auc(score, pos, n);
    }
    free(score);
    free(pos);
    return s;
}

/* ============================================================ small utils */

static const char *uda_basename(const char *p) {
    const char *b = p ? strrchr(p, '/') : NULL;
    return b ? b + 1 : p ? p : "";
}

/* ------------------------------------------------------- augmentation */

/* k quarter turns counter-clockwise (as displayed), np.rot90 convention:
 * out[y][x] = in[x][S-1-y] per turn. src and dst are [3,S,S] and distinct. */
static void uda_rot90(float *dst, const float *src, int S, int k) {
    k &= 3;
    for (int c = 0; c < 3; c++) {
        const float *a = src + (size_t)c * S * S;
        float *b = dst + (size_t)c * S * S;
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                int sy = y, sx = x;
                switch (k) {
                case 0: break;
                case 1: sy = x; sx = S - 1 - y; break;
                case 2: sy = S - 1 - y; sx = S - 1 - x; break;
                default: sy = S - 1 - x; sx = y; break;
                }
                b[(size_t)y * S + x] = a[(size_t)sy * S + sx];
            }
    }
}

/* Crops the cs x cs window at (oy, ox) of row [3,S,S] and resizes it back
 * to S x S (gx_pre_resize: the loader's antialiased bilinear), in place. */
static gx_status uda_crop_resize(float *row, int S, int cs, int oy, int ox, gx_err *err) {
    if (cs >= S) return GX_OK;
    gx_image crop, out;
    memset(&out, 0, sizeof out);
    gx_status s = gx_image_alloc(&crop, 3, cs, cs, err);
    if (s != GX_OK) return s;
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < cs; y++)
            memcpy(crop.data + ((size_t)c * cs + y) * cs, row + ((size_t)c * S + oy + y) * S + ox,
                   (size_t)cs * sizeof(float));
    s = gx_pre_resize(&crop, S, S, &out, err);
    if (s == GX_OK) memcpy(row, out.data, (size_t)3 * S * S * sizeof(float));
    gx_image_free(&crop);
    gx_image_free(&out);
    return s;
}

/* Training augmentation of one row (the loader already flipped it): a
 * random multiple of 90° and a crop of 0.9-1 of the side at a random place. */
static gx_status uda_augment_row(float *row, float *tmp, int S, gx_rng *rng, gx_err *err) {
    int k = (int)(gx_rng_u32(rng) & 3);
    double sc = 0.9 + 0.1 * gx_rng_uniform(rng);
    double fy = gx_rng_uniform(rng), fx = gx_rng_uniform(rng);
    uda_rot90(tmp, row, S, k);
    memcpy(row, tmp, (size_t)3 * S * S * sizeof(float));
    int cs = (int)lround(sc * S);
    if (cs < 1) cs = 1;
    return uda_crop_resize(row, S, cs, (int)(fy * (S - cs + 1)) % (S - cs + 1),
                           (int)(fx * (S - cs + 1)) % (S - cs + 1), err);
}

/* ================================================================ the run */

typedef struct uda_run {
    gx_train_uda_opts o;           /* a copy: resume replaces the seed */
    gx_uda_classmap cm;
    gx_dataset *src, *tgt;
    int64_t    *s_split[3], s_n[3];   /* source train / val / test (dataset indices) */
    int64_t    *t_split[3], t_n[3];   /* target train / - / test */
    gx_loader  *s_L, *t_L, *sval_L, *stest_L, *ttest_L;
    gx_db      *db;
    gx_uda_model m;
    int         model_ready;
    gx_optim    opt;
    int         opt_ready;
    gx_uda_bank bank;
    int         bank_ready;
    gx_uda_tuner tuner;
    double      class_w[GX_UDA_MAX_CLASSES];
    gx_ctx      ctx;           /* training and evaluation (a device ctx with --device cuda) */
    gx_train_device dev;       /* closed last: the model, optimiser and ctx hold its memory */
    int64_t     run_id;
    int         start_epoch, best_epoch, since_best;
    double      best_acc;
    int64_t     steps_per_epoch, s_batches, t_batches, decay_steps;
    int         s_pass, t_pass;    /* passes started in the current epoch */
    float      *tmp;               /* one [3,S,S] row of scratch */
    int32_t    *bn_pairs;          /* (d0 index, d1 index) param pairs for the baseline */
    int         n_bn_pairs;
    gx_train_paths paths;
    char       *classes_json;
    gx_train_clock clk;
    int         interrupted;
} uda_run;

typedef struct uda_epoch_stats {
    double ce, ac, es, total, es_frac;
    int64_t steps, images;
    double seconds, lr_backbone, lr_head, rho, margin;
} uda_epoch_stats;

static void uda_run_free(uda_run *R) {
    gx_loader *L[] = { R->s_L, R->t_L, R->sval_L, R->stest_L, R->ttest_L };
    for (int i = 0; i < 5; i++) gx_loader_close(L[i]);
    if (R->opt_ready) gx_optim_free(&R->opt);
    if (R->bank_ready) gx_uda_bank_free(&R->bank);
    if (R->model_ready) gx_uda_free(&R->m);
    gx_ctx_free(&R->ctx);
    gx_train_device_close(&R->dev);
    gx_db_close(R->db);
    for (int k = 0; k < 3; k++) { free(R->s_split[k]); free(R->t_split[k]); }
    gx_dataset_close(R->src);
    gx_dataset_close(R->tgt);
    free(R->tmp);
    free(R->bn_pairs);
    free(R->classes_json);
}

/* ---------------------------------------------------------------- splits */

/* Dataset indices of ds whose class is not excluded, with mapped labels. */
static gx_status uda_keep(const gx_dataset *ds, const gx_uda_classmap *cm, int use_labels,
                          int64_t **keep, int32_t **lab, int64_t *n, gx_err *err) {
    *keep = malloc((size_t)(ds->n > 0 ? ds->n : 1) * sizeof **keep);
    *lab = malloc((size_t)(ds->n > 0 ? ds->n : 1) * sizeof **lab);
    if (!*keep || !*lab) return gx_err_set(err, GX_ERR_NOMEM, "uda: out of memory");
    *n = 0;
    for (int64_t i = 0; i < ds->n; i++) {
        int y = cm->map[ds->label[i]];
        if (y < 0) continue;
        (*keep)[*n] = i;
        (*lab)[(*n)++] = use_labels ? y : 0;
    }
    return GX_OK;
}

/* Splits keep[] by fracs (stratified on lab with n_cls classes) into
 * dataset-index parts; drop_unknown removes label K from every part. */
static gx_status uda_split(const int64_t *keep, const int32_t *lab, int64_t n, int n_cls,
                           const double fracs[3], uint64_t seed, const gx_uda_classmap *cm,
                           int drop_unknown, int64_t *out[3], int64_t cnt[3], gx_err *err) {
    gx_status s = gx_split_stratified(lab, n, n_cls, fracs, seed, out, cnt, err);
    if (s != GX_OK) return s;
    for (int k = 0; k < 3; k++) {
        int64_t w = 0;
        for (int64_t i = 0; i < cnt[k]; i++) {
            int64_t pos = out[k][i];
            if (drop_unknown && lab[pos] == cm->K) continue;
            out[k][w++] = keep[pos];
        }
        cnt[k] = w;
    }
    return GX_OK;
}

static gx_status uda_make_splits(uda_run *R, gx_err *err) {
    int64_t *keep = NULL, n = 0;
    int32_t *lab = NULL;
    gx_status s = uda_keep(R->src, &R->cm, 1, &keep, &lab, &n, err);
    if (s == GX_OK)
        s = uda_split(keep, lab, n, R->cm.K + 1, (double[3]){ .70, .15, .15 }, R->o.seed, &R->cm, 1,
                      R->s_split, R->s_n, err);
    free(keep);
    free(lab);
    keep = NULL;
    lab = NULL;
    /* The target split never reads its labels: all 0, one "class". */
    if (s == GX_OK) s = uda_keep(R->tgt, &R->cm, 0, &keep, &lab, &n, err);
    if (s == GX_OK)
        s = uda_split(keep, lab, n, 1, (double[3]){ .80, 0, .20 }, R->o.seed ^ 0x7a26e7ull, &R->cm, 0,
                      R->t_split, R->t_n, err);
    free(keep);
    free(lab);
    if (s != GX_OK) return s;
    if (R->o.max_source > 0 && R->o.max_source < R->s_n[0]) R->s_n[0] = R->o.max_source;
    if (R->o.max_target > 0 && R->o.max_target < R->t_n[0]) R->t_n[0] = R->o.max_target;
    if (R->s_n[0] < 2 || R->s_n[1] < 1 || R->s_n[2] < 1)
        return gx_err_set(err, GX_ERR_INVALID, "--source %s: too few known-class samples for a 70/15/15 split "
                          "(train %lld, val %lld, test %lld)", R->o.source, (long long)R->s_n[0],
                          (long long)R->s_n[1], (long long)R->s_n[2]);
    if (R->t_n[0] < 2 || R->t_n[2] < 1)
        return gx_err_set(err, GX_ERR_INVALID, "--target %s: too few samples for an 80/20 split", R->o.target);
    /* w_k = N / (K n_k) over the source training part; an absent class 0. */
    int64_t nk[GX_UDA_MAX_CLASSES] = { 0 };
    for (int64_t i = 0; i < R->s_n[0]; i++) nk[R->cm.map[R->src->label[R->s_split[0][i]]]]++;
    for (int k = 0; k < R->cm.K; k++)
        R->class_w[k] = nk[k] ? (double)R->s_n[0] / ((double)R->cm.K * (double)nk[k]) : 0;
    return GX_OK;
}

/* -------------------------------------------------------------- loaders */

static gx_status uda_open_loader(gx_loader **L, gx_dataset *ds, const int64_t *idx, int64_t n, int batch,
                                 int train, const gx_train_uda_opts *o, uint64_t seed, gx_err *err) {
    gx_loader_opts lo = GX_LOADER_OPTS_DEFAULT;
    lo.batch = batch;
    lo.size = (int)o->model.size;
    lo.crop_frac = o->crop_frac;
    lo.augment = train && o->augment;
    lo.aug = GX_PRE_AUG_NONE;
    lo.aug.p_hflip = lo.aug.p_vflip = 0.5;     /* rotations and crops: uda_augment_row */
    lo.drop_last = train && n >= batch;
    lo.prefetch = 2;
    lo.seed = seed;
    return gx_loader_open(L, ds, idx, n, &lo, err);
}

static gx_status uda_open_loaders(uda_run *R, gx_err *err) {
    const gx_train_uda_opts *o = &R->o;
    gx_status s = uda_open_loader(&R->s_L, R->src, R->s_split[0], R->s_n[0], o->batch_source, 1, o, o->seed, err);
    if (s == GX_OK && o->lambda > 0)
        s = uda_open_loader(&R->t_L, R->tgt, R->t_split[0], R->t_n[0], o->batch_target, 1, o, o->seed ^ 0x7a26e7ull, err);
    if (s == GX_OK) s = uda_open_loader(&R->sval_L, R->src, R->s_split[1], R->s_n[1], o->eval_batch, 0, o, o->seed, err);
    if (s == GX_OK) s = uda_open_loader(&R->stest_L, R->src, R->s_split[2], R->s_n[2], o->eval_batch, 0, o, o->seed, err);
    if (s == GX_OK) s = uda_open_loader(&R->ttest_L, R->tgt, R->t_split[2], R->t_n[2], o->eval_batch, 0, o, o->seed, err);
    if (s != GX_OK) return s;
    R->s_batches = gx_loader_batches_per_epoch(R->s_L);
    R->t_batches = R->t_L ? gx_loader_batches_per_epoch(R->t_L) : 0;
    R->steps_per_epoch = R->s_batches > R->t_batches ? R->s_batches : R->t_batches;
    R->decay_steps = (int64_t)llround(o->decay_epochs * (double)R->steps_per_epoch);
    return GX_OK;
}

/* ------------------------------------------------------------ baseline BN */

/* (d0, d1) parameter index pairs: "x.d0.y" and its "x.d1.y". */
static gx_status uda_bn_pairs(uda_run *R, gx_err *err) {
    const gx_params *p = &R->m.params;
    R->bn_pairs = malloc((size_t)(p->n > 0 ? p->n : 1) * 2 * sizeof *R->bn_pairs);
    if (!R->bn_pairs) return gx_err_set(err, GX_ERR_NOMEM, "uda: out of memory");
    for (int i = 0; i < p->n; i++) {
        const char *d0 = strstr(p->items[i]->name, ".d0.");
        if (!d0) continue;
        char twin[sizeof p->items[i]->name];
        snprintf(twin, sizeof twin, "%s", p->items[i]->name);
        twin[d0 - p->items[i]->name + 2] = '1';
        for (int j = 0; j < p->n; j++)
            if (!strcmp(p->items[j]->name, twin)) {
                R->bn_pairs[2 * R->n_bn_pairs] = i;
                R->bn_pairs[2 * R->n_bn_pairs + 1] = j;
                R->n_bn_pairs++;
                break;
            }
    }
    return GX_OK;
}

/* The baseline (lambda 0) never trains the target BN set: it mirrors the
 * source set, so evaluating or serving "target" runs the source-only model.
 * The copy is made on the host copies and uploaded (device runs; once an
 * epoch). */
static gx_status uda_sync_bn(uda_run *R, gx_err *err) {
    if (R->o.lambda > 0) return GX_OK;
    gx_status s = gx_train_params_to_host(&R->m.params, err);
    for (int k = 0; s == GX_OK && k < R->n_bn_pairs; k++) {
        gx_param *a = R->m.params.items[R->bn_pairs[2 * k]], *b = R->m.params.items[R->bn_pairs[2 * k + 1]];
        /* Writable: the trainer owns its parameters. */
        if (a->t.numel == b->t.numel)
            memcpy((gx_real *)gx_tensor_host_data(&b->t), gx_tensor_host_data(&a->t),
                   (size_t)a->t.numel * sizeof(gx_real));
    }
    return s == GX_OK ? gx_train_params_to_device(&R->m.params, NULL, err) : s;
}

/* ---------------------------------------------------------------- config */

/* The run's config_json: the model config plus "train" (what reports label
 * runs by: experiment, lambda, source, target, known classes). */
static char *uda_run_config_json(const uda_run *R) {
    const gx_train_uda_opts *o = &R->o;
    char *mj = gx_uda_config_json(&R->m.cfg);
    json_t *j = mj ? json_loads(mj, 0, NULL) : NULL;
    free(mj);
    char label[512];
    snprintf(label, sizeof label, "%s → %s", uda_basename(o->source), uda_basename(o->target));
    json_t *t = json_pack("{s:s,s:s,s:s,s:s,s:s,s:f,s:i,s:i,s:i,s:I,s:f,s:f,s:f,s:f,s:f,s:i,s:I,s:I,s:i,s:f}",
        "experiment", o->experiment ? o->experiment : label, "source", o->source, "target", o->target,
        "known", o->known ? o->known : "", "exclude", o->exclude ? o->exclude : "",
        "lambda", o->lambda, "epochs", o->epochs, "batch_source", o->batch_source,
        "batch_target", o->batch_target, "seed", (json_int_t)o->seed, "lr_backbone", o->lr_backbone,
        "lr_head", o->lr_head, "momentum", o->momentum, "weight_decay", o->weight_decay,
        "decay_epochs", o->decay_epochs, "patience", o->patience, "max_source", (json_int_t)o->max_source,
        "max_target", (json_int_t)o->max_target, "augment", o->augment, "crop_frac", o->crop_frac);
    json_t *cls = R->classes_json ? json_loads(R->classes_json, 0, NULL) : NULL;
    int ok = t && cls;
    if (ok) ok = json_object_set_new(t, "classes", cls) == 0;   /* takes cls, on failure too */
    else json_decref(cls);
    if (!ok) {
        json_decref(t);
        t = NULL;                      /* no config without its classes */
    }
    return gx_train_config_json(j, t);
}

/* ----------------------------------------------------------------- state */

static gx_status uda_bank_to_writer(const gx_uda_bank *b, gx_st_writer *w, gx_err *err) {
    gx_status s = gx_st_writer_add(w, "bank.p", GX_ST_F32, 1, GX_SHAPE(b->n * b->K), b->p, err);
    if (s == GX_OK) s = gx_st_writer_add(w, "bank.topk_idx", GX_ST_I32, 1, GX_SHAPE(b->n * b->topk), b->topk_idx, err);
    if (s == GX_OK) s = gx_st_writer_add(w, "bank.domain", GX_ST_I8, 1, GX_SHAPE(b->n), b->domain, err);
    if (s == GX_OK) s = gx_st_writer_add(w, "bank.label", GX_ST_I32, 1, GX_SHAPE(b->n), b->label, err);
    if (s == GX_OK) s = gx_st_writer_add(w, "bank.filled", GX_ST_U8, 1, GX_SHAPE(b->n), b->filled, err);
    return s;
}

static gx_status uda_bank_load(gx_uda_bank *b, const gx_st_file *f, gx_err *err) {
    struct { const char *name; void *dst; size_t bytes; } t[] = {
        { "bank.p", b->p, (size_t)(b->n * b->K) * sizeof *b->p },
        { "bank.topk_idx", b->topk_idx, (size_t)(b->n * b->topk) * sizeof *b->topk_idx },
        { "bank.domain", b->domain, (size_t)b->n * sizeof *b->domain },
        { "bank.label", b->label, (size_t)b->n * sizeof *b->label },
        { "bank.filled", b->filled, (size_t)b->n * sizeof *b->filled },
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        const gx_st_tensor *st = gx_st_find(f, t[i].name);
        if (!st || st->nbytes != t[i].bytes)
            return gx_err_set(err, GX_ERR_FORMAT, "state: tensor %s missing or of the wrong size", t[i].name);
    }
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) memcpy(t[i].dst, gx_st_find(f, t[i].name)->data, t[i].bytes);
    return GX_OK;
}

static gx_status uda_write_state(uda_run *R, int epoch, gx_err *err) {
    gx_st_writer w;
    gx_st_writer_init(&w);
    const gx_uda_tuner *t = &R->tuner;
    gx_train_loop loop = { epoch, R->run_id, R->best_acc, R->best_epoch };
    gx_status s = gx_train_state_begin(&w, &R->m.params, &R->opt, UDA_STATE_FORMAT, R->o.seed, &loop, err);
    if (s == GX_OK && R->bank_ready) s = uda_bank_to_writer(&R->bank, &w, err);
    struct { const char *k, *fmt; double v; } m[] = {
        { "since_best", "%.0f", R->since_best }, { "tuner_rho", "%.17g", t->rho },
        { "tuner_margin", "%.17g", t->margin }, { "tuner_j", "%.0f", t->j }, { "tuner_e", "%.0f", t->e },
        { "tuner_c", "%.0f", t->c }, { "tuner_l_min", "%.17g", t->l_min },
    };
    for (size_t i = 0; s == GX_OK && i < sizeof m / sizeof *m; i++)
        s = gx_train_meta_num(&w, m[i].k, m[i].fmt, m[i].v, err);
    if (s == GX_OK) s = gx_st_writer_write(&w, R->paths.state, err);
    gx_st_writer_free(&w);
    return gx_train_device_error(&R->dev, s, err);   /* the optimiser state's download */
}

/* A number from the state's metadata; 0 when missing or malformed. */
static int uda_meta_get(const gx_st_file *f, const char *key, double *v) {
    const char *s = gx_st_meta(f, key);
    char *end;
    if (!s) return 0;
    *v = strtod(s, &end);
    return end != s && !*end;
}

static gx_status uda_load_state(uda_run *R, gx_err *err) {
    gx_st_file f;
    gx_train_loop loop;
    gx_status s = gx_train_state_open(&f, R->paths.state, UDA_STATE_FORMAT, "uda training state",
                                      R->o.resume_run, R->o.seed, &R->m.params, &R->opt, &loop, err);
    if (s != GX_OK) return s;
    static const char *const keys[] = { "since_best", "tuner_rho", "tuner_margin", "tuner_j", "tuner_e",
                                        "tuner_c", "tuner_l_min" };
    double v[7];
    int ok = 1;
    for (int i = 0; ok && i < 7; i++) ok = uda_meta_get(&f, keys[i], &v[i]);
    if (!ok) s = gx_err_set(err, GX_ERR_FORMAT, "%s is not a uda training state file", R->paths.state);
    if (s == GX_OK && R->bank_ready) s = uda_bank_load(&R->bank, &f, err);
    if (s == GX_OK) {
        R->start_epoch = loop.epoch + 1;
        R->best_acc = loop.best_acc;
        R->best_epoch = loop.best_epoch;
        R->since_best = (int)v[0];
        R->tuner.rho = v[1];
        R->tuner.margin = v[2];
        R->tuner.j = (int)v[3];
        R->tuner.e = (int)v[4];
        R->tuner.c = (int)v[5];
        R->tuner.l_min = v[6];
    }
    gx_st_close(&f);
    return s;
}

/* ----------------------------------------------------------------- setup */

static gx_status uda_open_data(uda_run *R, gx_err *err) {
    gx_train_uda_opts *o = &R->o;
    gx_err e2;
    gx_status s = gx_dataset_open(o->source, NULL, &R->src, &e2);
    if (s != GX_OK) return gx_err_set(err, s, "--source %s: %s", o->source, e2.msg);
    if ((s = gx_dataset_open(o->target, NULL, &R->tgt, &e2)) != GX_OK)
        return gx_err_set(err, s, "--target %s: %s", o->target, e2.msg);
    if ((s = gx_uda_classmap_parse(o->known, o->exclude, R->src->n_classes, &R->cm, err)) != GX_OK) return s;
    R->classes_json = uda_classes_json(&R->cm);
    if (!R->classes_json) return gx_err_set(err, GX_ERR_NOMEM, "uda: out of memory");
    return GX_OK;
}

static gx_status uda_setup_model(uda_run *R, gx_err *err) {
    gx_train_uda_opts *o = &R->o;
    o->model.classes = R->cm.K;
    gx_uda_init(&R->m, o->model, o->seed);
    R->model_ready = 1;                /* gx_uda_init: head group 1 (lr_head), backbone 0 */
    gx_optim_cfg oc = gx_optim_defaults(GX_OPT_SGD);
    oc.momentum = o->momentum;
    oc.nesterov = o->momentum > 0;
    oc.weight_decay = o->weight_decay;
    gx_status s = gx_optim_init(&R->opt, &R->m.params, &oc, err);
    if (s != GX_OK) return s;
    R->opt_ready = 1;
    if (o->lambda > 0) {
        if ((s = gx_uda_bank_init(&R->bank, R->src->n + R->tgt->n, R->cm.K, err)) != GX_OK) return s;
        R->bank_ready = 1;
    }
    gx_uda_tuner_init(&R->tuner, R->cm.K);
    return uda_bn_pairs(R, err);
}

static gx_status uda_setup(uda_run *R, gx_err *err) {
    gx_train_uda_opts *o = &R->o;
    gx_status s = gx_train_setup_common(o->out_dir, o->threads, &R->paths, &R->ctx, err);
    if (s == GX_OK) s = gx_train_device_open_tf32(&R->dev, o->device, o->tf32, err);
    if (s != GX_OK) return s;
    gx_train_device_ctx(&R->dev, &R->ctx);
    R->best_acc = -1;
    R->best_epoch = -1;
    R->tmp = malloc((size_t)3 * o->model.size * o->model.size * sizeof *R->tmp);
    if (!R->tmp) return gx_err_set(err, GX_ERR_NOMEM, "uda: out of memory");
    s = uda_open_data(R, err);
    gx_err e2;
    if (s == GX_OK && (s = gx_db_open(&R->db, o->db_path, &e2)) != GX_OK)
        return gx_err_set(err, s, "--db %s: %s", o->db_path, e2.msg);
    if (s == GX_OK && o->resume_run > 0 &&
        (s = gx_db_run_seed(R->db, R->o.resume_run, "uda", &R->o.seed, &e2)) != GX_OK)
        return gx_err_set(err, s, "--resume %lld: %s", (long long)o->resume_run, e2.msg);
    if (s == GX_OK) s = uda_make_splits(R, err);
    if (s == GX_OK) s = uda_setup_model(R, err);
    if (s != GX_OK) return s;
    if (o->resume_run > 0) {
        if (access(R->paths.state, F_OK) == 0 && (s = uda_load_state(R, &e2)) != GX_OK)
            return gx_err_set(err, s, "--resume %lld: %s", (long long)o->resume_run, e2.msg);
        R->run_id = o->resume_run;
    } else {
        char *cfg = uda_run_config_json(R);
        if (!cfg) return gx_err_set(err, GX_ERR_NOMEM, "uda: run config JSON: out of memory");
        gx_db_run_info ri = { .model_kind = "uda", .config_json = cfg, .command_line = o->command_line,
                              .seed = (int64_t)o->seed };
        s = gx_db_run_begin(R->db, &ri, &R->run_id, err);
        free(cfg);
        if (s != GX_OK) return s;
    }
    /* Initialised or resumed on the host; from here on the weights live
     * where the run computes (before the first optimiser step). */
    if ((s = gx_train_device_params(&R->dev, &R->m.params, "uda model", err)) != GX_OK) return s;
    return uda_open_loaders(R, err);
}

/* ============================================================== training */

/* The next batch of L, starting another pass (its own seeded order) when
 * the current one is exhausted. */
static gx_status uda_next(gx_loader *L, int epoch, int *pass, gx_batch *b, gx_err *err) {
    for (int tries = 0; tries < 2; tries++) {
        int rc = gx_loader_next(L, b, err);
        if (rc == 1) return GX_OK;
        if (rc < 0) return GX_ERR_IO;                 /* err names the sample */
        ++*pass;
        gx_status s = gx_loader_start_epoch(L, UDA_PASS_KEY(epoch, *pass), err);
        if (s != GX_OK) return s;
    }
    return gx_err_set(err, GX_ERR_INVALID, "uda: a loader produced no batch");
}

/* Copies a batch into an arena tensor of n_views * b->n rows, augmenting the
 * originals in training (rng per row) and appending the AC views; built on
 * the host, returned where ctx computes. */
static gx_status uda_batch_tensor(uda_run *R, const gx_batch *b, int n_views, const gx_rng *step_rng,
                                  gx_tensor **out, gx_err *err) {
    int S = (int)R->o.model.size;
    size_t row = (size_t)3 * S * S;
    gx_tensor *x = gx_tensor_new_host(&R->ctx, 4, GX_SHAPE(n_views * b->n, 3, S, S));
    float *buf = malloc(row * (size_t)b->n * (size_t)n_views * sizeof *buf);
    if (!buf) return gx_err_set(err, GX_ERR_NOMEM, "uda: out of memory");
    memcpy(buf, b->x, row * (size_t)b->n * sizeof *buf);
    gx_status s = GX_OK;
    for (int64_t i = 0; R->o.augment && s == GX_OK && i < b->n; i++) {
        gx_rng r = gx_rng_fork(step_rng, (uint64_t)i);
        s = uda_augment_row(buf + row * (size_t)i, R->tmp, S, &r, err);
    }
    int cs = (int)lround(S / UDA_ZOOM);
    for (int64_t i = 0; s == GX_OK && n_views == 3 && i < b->n; i++) {
        const float *src = buf + row * (size_t)i;
        float *rot = buf + row * (size_t)(b->n + i), *zoom = buf + row * (size_t)(2 * b->n + i);
        uda_rot90(rot, src, S, 1);
        memcpy(zoom, src, row * sizeof *zoom);
        s = uda_crop_resize(zoom, S, cs, (S - cs) / 2, (S - cs) / 2, err);
    }
    for (int64_t i = 0; s == GX_OK && i < x->numel; i++) x->data[i] = (gx_real)buf[i];
    free(buf);
    *out = s == GX_OK ? gx_to_ctx(&R->ctx, x) : x;
    return s;
}

/* One step: source CE (+ lambda (AC + ES) on the target batch and its
 * views), backward, SGD with the two lr groups, bank update. On the device
 * the host reads are: the head (renormalised on the host), the target's p
 * and f (AC and the bank), the source's p and f (the bank), the loss values
 * (one transfer); then one sync. */
static gx_status uda_step_run(uda_run *R, int epoch, const gx_batch *bs, const gx_batch *bt,
                              uda_epoch_stats *es, gx_err *err) {
    const gx_train_uda_opts *o = &R->o;
    gx_ctx *ctx = &R->ctx;
    gx_rng base, sr;
    gx_rng_init(&base, o->seed ^ UDA_STEP_SALT);
    sr = gx_rng_fork(&base, (uint64_t)epoch);
    sr = gx_rng_fork(&sr, (uint64_t)R->opt.step);
    gx_rng r_src = gx_rng_fork(&sr, 1), r_tgt = gx_rng_fork(&sr, 2), r_ac = gx_rng_fork(&sr, 3);
    ctx->grad_enabled = 1;
    gx_uda_renorm_head(&R->m);
    gx_tensor *xs = NULL, *xt = NULL;
    gx_status s = uda_batch_tensor(R, bs, 1, &r_src, &xs, err);
    if (s == GX_OK && bt) s = uda_batch_tensor(R, bt, 3, &r_tgt, &xt, err);
    if (s != GX_OK) { gx_ctx_reset(ctx); return s; }
    int64_t *ys = gx_ctx_alloc(ctx, (size_t)bs->n * sizeof *ys), *is = gx_ctx_alloc(ctx, (size_t)bs->n * sizeof *is);
    for (int64_t i = 0; i < bs->n; i++) {
        ys[i] = R->cm.map[bs->label[i]];
        is[i] = bs->index[i];
    }
    gx_uda_out os = gx_uda_forward(ctx, &R->m, xs, GX_UDA_SOURCE, 1);
    gx_tensor *ce = gx_uda_loss_ce(ctx, os.p, ys, R->class_w), *total = ce;
    double frac = 0, v[4] = { 0, 0, 0, 0 };    /* total, ce, ac, es */
    gx_tensor *pt = NULL, *ft = NULL;           /* the target rows' p and f on the host */
    int64_t *it = NULL;
    if (bt) {
        it = gx_ctx_alloc(ctx, (size_t)bt->n * sizeof *it);
        for (int64_t i = 0; i < bt->n; i++) it[i] = R->src->n + bt->index[i];
        gx_uda_out ot = gx_uda_forward(ctx, &R->m, xt, GX_UDA_TARGET, 1);
        pt = gx_to_host(ctx, ot.p);
        ft = gx_to_host(ctx, ot.f);
        gx_tensor *les = gx_uda_loss_es(ctx, gx_slice(ctx, ot.p, 0, 0, bt->n), R->tuner.rho, R->tuner.margin, &frac);
        gx_tensor *lac = gx_uda_loss_ac(ctx, &R->bank, pt, ft, 3, it, bt->n, o->ac_max_slots, &r_ac);
        total = gx_add(ctx, ce, gx_scale(ctx, gx_add(ctx, lac, les), o->lambda));
        gx_to_host_scalars(ctx, 4, (gx_tensor *[]){ total, ce, lac, les }, v);
    } else {
        gx_to_host_scalars(ctx, 1, &ce, v);
        v[1] = v[0];
    }
    double tv = v[0];
    if (!isfinite(tv)) {
        /* A device error reads as NaN: its own message comes first. */
        s = gx_train_device_sync(&R->dev, err);
        gx_ctx_reset(ctx);
        return s != GX_OK ? s : gx_err_set(err, GX_ERR_INVALID, "uda: the loss became %g at epoch %d step %lld "
                                           "(try a lower lr)", tv, epoch + 1, (long long)R->opt.step);
    }
    gx_params_zero_grad(&R->m.params);
    gx_backward(ctx, total, NULL);
    double lrs[GX_OPT_MAX_GROUPS] = { 0 };
    lrs[0] = gx_lr_inverse_decay(R->opt.step, R->decay_steps, o->lr_backbone, o->lr_gamma, o->lr_power);
    lrs[1] = gx_lr_inverse_decay(R->opt.step, R->decay_steps, o->lr_head, o->lr_gamma, o->lr_power);
    gx_optim_step(&R->opt, &R->m.params, lrs);
    if (R->bank_ready) {
        /* The bank reads the first rows (the images, not their views). */
        gx_uda_bank_update(&R->bank, is, bs->n, gx_to_host(ctx, os.p), gx_to_host(ctx, os.f), GX_UDA_SOURCE, ys);
        gx_uda_bank_update(&R->bank, it, bt->n, pt, ft, GX_UDA_TARGET, NULL);
    }
    s = gx_train_device_sync(&R->dev, err);
    gx_ctx_reset(ctx);
    if (s != GX_OK) return s;
    es->ce += v[1];
    es->ac += v[2];
    es->es += v[3];
    es->total += tv;
    es->es_frac += frac;
    es->steps++;
    es->images += bs->n + (bt ? bt->n : 0);
    es->lr_backbone = lrs[0];
    es->lr_head = lrs[1];
    return GX_OK;
}

/* One training step. Batch norm in training mode makes each row's forward
 * depend on its batch-mates anyway, so the step's convs may run over the
 * whole batch (ctx->batch_invariant 0: kernels/gx_conv.c); evaluation and
 * scoring on the same ctx keep batch invariance. */
static gx_status uda_step(uda_run *R, int epoch, const gx_batch *bs, const gx_batch *bt,
                          uda_epoch_stats *es, gx_err *err) {
    const int keep = R->ctx.batch_invariant;
    R->ctx.batch_invariant = 0;
    gx_status s = uda_step_run(R, epoch, bs, bt, es, err);
    R->ctx.batch_invariant = keep;
    return s;
}

static gx_status uda_train_epoch(uda_run *R, int epoch, uda_epoch_stats *es, gx_err *err) {
    memset(es, 0, sizeof *es);
    es->rho = R->tuner.rho;
    es->margin = R->tuner.margin;
    R->s_pass = R->t_pass = 0;
    gx_status s = gx_loader_start_epoch(R->s_L, UDA_PASS_KEY(epoch, 0), err);
    if (s == GX_OK && R->t_L) s = gx_loader_start_epoch(R->t_L, UDA_PASS_KEY(epoch, 0), err);
    double t0 = gx_train_now();
    for (int64_t step = 0; s == GX_OK && step < R->steps_per_epoch; step++) {
        if (R->o.stop && *R->o.stop) { R->interrupted = 1; return GX_OK; }
        gx_batch bs, bt;
        s = uda_next(R->s_L, epoch, &R->s_pass, &bs, err);
        if (s == GX_OK && R->t_L) s = uda_next(R->t_L, epoch, &R->t_pass, &bt, err);
        if (s == GX_OK) s = uda_step(R, epoch, &bs, R->t_L ? &bt : NULL, es, err);
        R->clk.steps_done++;
        double dt = gx_train_now() - t0;
        gx_train_progress(&R->clk, R->o.progress, epoch, R->o.epochs, step, R->steps_per_epoch,
                          es->steps ? es->total / es->steps : NAN, dt > 0 ? (double)es->images / dt : 0);
    }
    es->seconds = gx_train_now() - t0;
    return s;
}

/* ============================================================ evaluation */

/* What one evaluation pass collects (malloc'ed for cap samples). */
typedef struct uda_eval_acc {
    int64_t  n, cap;
    float   *probs, *ent;
    int32_t *label;
} uda_eval_acc;

static void uda_eval_free(uda_eval_acc *a) {
    free(a->probs);
    free(a->ent);
    free(a->label);
    memset(a, 0, sizeof *a);
}

/* Eval-mode predictions of every image of loader L with BN set `domain`;
 * labels mapped through the class map. */
static gx_status uda_eval_pass(uda_run *R, gx_loader *L, int64_t cap, int domain, uda_eval_acc *a,
                               gx_err *err) {
    memset(a, 0, sizeof *a);
    int K = R->cm.K;
    a->cap = cap > 0 ? cap : 1;
    a->probs = malloc((size_t)a->cap * (size_t)K * sizeof *a->probs);
    a->ent = malloc((size_t)a->cap * sizeof *a->ent);
    a->label = malloc((size_t)a->cap * sizeof *a->label);
    if (!a->probs || !a->ent || !a->label) return gx_err_set(err, GX_ERR_NOMEM, "uda: eval: out of memory");
    gx_status s = gx_loader_start_epoch(L, 0, err);
    gx_batch b;
    int rc = 0;
    while (s == GX_OK && (rc = gx_loader_next(L, &b, err)) == 1) {
        int64_t n = b.n < a->cap - a->n ? b.n : a->cap - a->n;
        R->ctx.grad_enabled = 0;
        s = gx_uda_predict(&R->ctx, &R->m, b.x, R->o.model.size, n, domain, a->probs + a->n * K,
                           a->ent + a->n, NULL, err);
        if (s == GX_OK) s = gx_train_device_sync(&R->dev, err);   /* its error, not NaN predictions */
        gx_ctx_reset(&R->ctx);
        for (int64_t i = 0; s == GX_OK && i < n; i++) a->label[a->n + i] = R->cm.map[b.label[i]];
        if (s == GX_OK) a->n += n;
    }
    R->ctx.grad_enabled = 1;
    if (s == GX_OK && rc < 0) s = GX_ERR_IO;
    return s;
}

/* Source-validation accuracy: argmax over the known classes (no unknown). */
static gx_status uda_val_accuracy(uda_run *R, double *acc, gx_err *err) {
    uda_eval_acc a;
    gx_status s = uda_eval_pass(R, R->sval_L, R->s_n[1], GX_UDA_SOURCE, &a, err);
    int64_t ok = 0;
    for (int64_t i = 0; s == GX_OK && i < a.n; i++) {
        const float *p = a.probs + i * R->cm.K;
        int m = 0;
        for (int k = 1; k < R->cm.K; k++) if (p[k] > p[m]) m = k;
        ok += m == a.label[i];
    }
    *acc = s == GX_OK && a.n ? (double)ok / a.n : NAN;
    uda_eval_free(&a);
    return s;
}

static gx_status uda_test_metrics(uda_run *R, int target, double rho, gx_uda_split_metrics *m, gx_err *err) {
    uda_eval_acc a;
    gx_status s = target ? uda_eval_pass(R, R->ttest_L, R->t_n[2], GX_UDA_TARGET, &a, err)
                         : uda_eval_pass(R, R->stest_L, R->s_n[2], GX_UDA_SOURCE, &a, err);
    if (s == GX_OK) s = gx_uda_split_metrics_compute(a.probs, a.ent, a.label, a.n, R->cm.K, rho, m, err);
    uda_eval_free(&a);
    return s;
}

/* ------------------------------------------------------------ metric rows */

typedef struct uda_rows {
    gx_db_metric row[64];
    int n;
} uda_rows;

static void uda_row(uda_rows *w, const char *split, const char *name, double v) {
    if (w->n < 64) w->row[w->n++] = (gx_db_metric){ split, name, v };
}

static void uda_rows_split(uda_rows *w, const char *split, const gx_uda_split_metrics *m) {
    uda_row(w, split, "accuracy", m->accuracy);
    uda_row(w, split, "precision_macro", m->precision_macro);
    uda_row(w, split, "recall_macro", m->recall_macro);
    uda_row(w, split, "f1_macro", m->f1_macro);
    uda_row(w, split, "known_accuracy", m->known_accuracy);
    uda_row(w, split, "unknown_accuracy", m->unknown_accuracy);
    uda_row(w, split, "anomaly_auc", m->anomaly_auc);
    uda_row(w, split, "n", (double)m->n);
}

static char *uda_metrics_json(const gx_uda_split_metrics *m, double val_acc) {
    json_t *j = json_object();
    struct { const char *k; double v; } f[] = {
        { "accuracy", m->accuracy }, { "precision_macro", m->precision_macro },
        { "recall_macro", m->recall_macro }, { "f1_macro", m->f1_macro },
        { "known_accuracy", m->known_accuracy }, { "unknown_accuracy", m->unknown_accuracy },
        { "anomaly_auc", m->anomaly_auc }, { "source_val_accuracy", val_acc },
    };
    for (size_t i = 0; j && i < sizeof f / sizeof *f; i++)
        json_object_set_new(j, f[i].k, isfinite(f[i].v) ? json_real(f[i].v) : json_null());
    if (j) {
        json_object_set_new(j, "n_test", json_integer((json_int_t)m->n));
        json_object_set_new(j, "part", json_string("target_test"));
    }
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    return s;
}

/* ------------------------------------------------------------ checkpoints */

static gx_status uda_write_checkpoint(uda_run *R, const char *path, const char *kind, int epoch,
                                      const char *metrics_json, gx_err *err) {
    gx_uda_meta meta;
    memset(&meta, 0, sizeof meta);
    snprintf(meta.classes_json, sizeof meta.classes_json, "%s", R->classes_json);
    snprintf(meta.test_metrics_json, sizeof meta.test_metrics_json, "%s", metrics_json ? metrics_json : "{}");
    meta.crop_frac = R->o.crop_frac;
    meta.run_id = R->run_id;
    meta.epoch = epoch;
    meta.rho = R->tuner.rho;
    meta.margin = R->tuner.margin;
    gx_status s = gx_uda_save(&R->m, &meta, path, err);
    if (s == GX_OK) s = gx_train_checkpoint_put(R->db, R->run_id, epoch, kind, path, metrics_json, err);
    return s;
}

/* The epoch's rows with both test matrices ((K+1) classes, the last
 * "unknown") and the class names, in one transaction. */
static gx_status uda_epoch_put(uda_run *R, int epoch, const uda_rows *w, const gx_uda_split_metrics *ms,
                               const gx_uda_split_metrics *mt, gx_err *err) {
    json_t *a = json_loads(R->classes_json, 0, NULL);
    char *cls = a && json_array_append_new(a, json_string("unknown")) == 0 ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    if (!cls) return gx_err_set(err, GX_ERR_NOMEM, "uda: out of memory");
    int k = R->cm.K + 1;
    gx_metrics_confusion cf[2] = { { "source_test", k, ms->confusion }, { "target_test", k, mt->confusion } };
    gx_status s = gx_metrics_epoch_put(R->db, R->run_id, epoch, w->row, w->n, cf, 2, cls, err);
    free(cls);
    return s;
}

/* Tuner, evaluation, rows, checkpoints and state after epoch `epoch`. */
static gx_status uda_end_epoch(uda_run *R, int epoch, const uda_epoch_stats *es, int *changed, gx_err *err) {
    double L = es->steps ? es->total / es->steps : NAN;
    *changed = gx_uda_tuner_step(&R->tuner, L);
    double val = NAN;
    gx_uda_split_metrics ms, mt;
    gx_status s = uda_sync_bn(R, err);
    if (s == GX_OK) s = uda_val_accuracy(R, &val, err);
    if (s == GX_OK) s = uda_test_metrics(R, 0, R->tuner.rho, &ms, err);
    if (s == GX_OK) s = uda_test_metrics(R, 1, R->tuner.rho, &mt, err);
    /* The files below are written from the parameters' host copies. */
    if (s == GX_OK) s = gx_train_params_to_host(&R->m.params, err);
    if (s != GX_OK) return s;
    uda_rows w = { .n = 0 };
    double st = es->steps ? (double)es->steps : NAN;
    uda_row(&w, "train", "loss_ce", es->ce / st);
    uda_row(&w, "train", "loss_ac", R->o.lambda > 0 ? es->ac / st : NAN);
    uda_row(&w, "train", "loss_es", R->o.lambda > 0 ? es->es / st : NAN);
    uda_row(&w, "train", "loss_total", L);
    uda_row(&w, "train", "rho", es->rho);
    uda_row(&w, "train", "margin", es->margin);
    uda_row(&w, "train", "es_active_frac", R->o.lambda > 0 ? es->es_frac / st : NAN);
    uda_row(&w, "train", "tuner_rho", R->tuner.rho);
    uda_row(&w, "train", "tuner_margin", R->tuner.margin);
    uda_row(&w, "train", "tuner_changed", *changed ? 1 : 0);
    uda_row(&w, "train", "lr_backbone", es->lr_backbone);
    uda_row(&w, "train", "lr_head", es->lr_head);
    uda_row(&w, "train", "images_per_s", es->seconds > 0 ? es->images / es->seconds : NAN);
    uda_row(&w, "source_val", "accuracy", val);
    uda_rows_split(&w, "source_test", &ms);
    uda_rows_split(&w, "target_test", &mt);
    s = uda_epoch_put(R, epoch, &w, &ms, &mt, err);
    char *js = uda_metrics_json(&mt, val);
    if (s == GX_OK && !js) s = gx_err_set(err, GX_ERR_NOMEM, "uda: out of memory");
    if (s == GX_OK) s = uda_write_checkpoint(R, R->paths.last, "last", epoch, js, err);
    if (s == GX_OK && isfinite(val) && val > R->best_acc) {
        R->best_acc = val;
        R->best_epoch = epoch;
        R->since_best = 0;
        s = uda_write_checkpoint(R, R->paths.best, "best", epoch, js, err);
    } else {
        R->since_best++;
    }
    free(js);
    if (s == GX_OK) s = uda_write_state(R, epoch, err);
    if (s == GX_OK && R->o.progress != 0) {
        if (R->clk.tty) fputc('\n', stderr);
        fprintf(stderr, "epoch %d/%d  loss %.4f (ce %.4f)  rho %.3f m %.3f%s  source val %.3f  target acc %.3f "
                "unknown %.3f auc %.3f  %.1f s\n", epoch + 1, R->o.epochs, L, es->ce / st, R->tuner.rho,
                R->tuner.margin, *changed ? " (tuned)" : "", val, mt.accuracy, mt.unknown_accuracy,
                mt.anomaly_auc, es->seconds);
    }
    return s;
}

gx_status gx_train_uda(const gx_train_uda_opts *opts, gx_train_uda_result *res, gx_err *err) {
    memset(res, 0, sizeof *res);
    res->first_train_loss = res->last_train_loss = NAN;
    res->best_epoch = -1;
    gx_status s = uda_opts_check(opts, err);
    if (s != GX_OK) return s;
    uda_run *R = calloc(1, sizeof *R);
    if (!R) return gx_err_set(err, GX_ERR_NOMEM, "uda: out of memory");
    R->o = *opts;
    gx_train_clock_init(&R->clk, R->o.progress);
    s = uda_setup(R, err);
    R->clk.t_start = gx_train_now();
    int end = R->o.epochs, stopped_early = 0;
    if (R->o.stop_after > 0 && R->o.stop_after < end) end = R->o.stop_after;
    /* A resumed run that had already stopped early stays stopped. */
    if (s == GX_OK && R->since_best >= R->o.patience) stopped_early = 1;
    for (int e = R->start_epoch; s == GX_OK && !stopped_early && e < end; e++) {
        uda_epoch_stats es;
        int changed = 0;
        s = uda_train_epoch(R, e, &es, err);
        if (s == GX_OK && R->interrupted) break;
        if (s == GX_OK) s = uda_end_epoch(R, e, &es, &changed, err);
        if (s != GX_OK) break;
        double l = es.steps ? es.total / es.steps : NAN;
        if (e == R->start_epoch) res->first_train_loss = l;
        res->last_train_loss = l;
        res->tuner_changes += changed;
        res->epochs_done = e + 1;
        stopped_early = R->since_best >= R->o.patience;
    }
    int finished = s == GX_OK && !R->interrupted && (stopped_early || end == R->o.epochs);
    res->interrupted = s == GX_OK && !finished;
    res->early_stopped = stopped_early;
    gx_train_run_finish(R->db, R->run_id, s, finished);
    res->run_id = R->run_id;
    if (res->epochs_done == 0) res->epochs_done = R->start_epoch;
    res->best_epoch = R->best_epoch;
    res->best_val_accuracy = R->best_acc;
    res->rho = R->tuner.rho;
    res->margin = R->tuner.margin;
    uda_run_free(R);
    free(R);
    return s;
}

/* ================================================================ scoring */

typedef struct uda_scorer {
    const gx_score_opts *o;
    gx_uda_model m;
    int          model_ready;
    gx_uda_meta  meta;
    char         sha[65], name[256];
    char         class_names[GX_UDA_MAX_CLASSES][48];
    double       threshold;    /* rho / ln K: the score scale */
    gx_dataset  *ds;
    gx_db       *db;
    gx_ctx       ctx;
    gx_train_device dev;       /* closed after the model and ctx are freed */
    int64_t      model_id;
} uda_scorer;

static gx_status uda_score_model(uda_scorer *S, gx_err *err) {
    const gx_score_opts *o = S->o;
    gx_st_file f;
    memset(&f, 0, sizeof f);
    gx_err e2;
    gx_status s = gx_st_read(&f, o->model_path, &e2);
    if (s == GX_OK) s = gx_uda_load(&f, &S->m, &S->meta, &e2);
    gx_st_close(&f);
    if (s != GX_OK) return gx_err_set(err, s, "--model %s: %s", o->model_path, e2.msg);
    S->model_ready = 1;
    gx_params_freeze(&S->m.params);   /* scoring only: conv weights packed once */
    if ((s = gx_train_device_params(&S->dev, &S->m.params, "uda model", err)) != GX_OK) return s;
    if ((s = gx_sha256_file(o->model_path, S->sha, err)) != GX_OK) return s;
    snprintf(S->name, sizeof S->name, "%s", uda_basename(o->model_path));
    char *dot = strstr(S->name, ".safetensors");
    if (dot && !dot[12]) *dot = 0;
    int K = (int)S->m.cfg.classes;
    S->threshold = S->meta.rho / log((double)K);
    json_t *a = json_loads(S->meta.classes_json, 0, NULL);
    for (int k = 0; k < K && k < GX_UDA_MAX_CLASSES; k++) {
        const char *n = json_string_value(json_array_get(a, (size_t)k));
        snprintf(S->class_names[k], sizeof S->class_names[k], "%s", n ? n : "");
    }
    json_decref(a);
    return GX_OK;
}

/* One dataset row of a scoring batch, through the stages of
 * uda_score_batch. */
typedef struct uda_item {
    gx_image  im;          /* the decoded image */
    gx_status s;           /* the first failure of this row's stages */
    gx_err    err;
    const char *fmt;
    int       exists;      /* already scored by this model */
    int64_t   slot;        /* row of the batch's input tensor, or -1 */
    uint8_t  *png;         /* its thumbnail */
    size_t    png_n;
    int       png_side;
} uda_item;

/* px [hw, 3] (HWC bytes) = lrintf(255 * im [3, hw]) (CHW floats): the
 * bytes an HDF5 row stored. Built without errno semantics for lrintf, GCC
 * inlines it as one conversion instruction (cvtss2si: the same rounding, to
 * nearest with ties to even) instead of a libm call per value; those calls
 * were 5% of a 1-thread scoring run. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-math-errno")))
#endif
static void uda_score_bytes(const float *im, size_t hw, uint8_t *px) {
    for (int c = 0; c < 3; c++)
        for (size_t p = 0; p < hw; p++) px[p * 3 + c] = (uint8_t)lrintf(im[c * hw + p] * 255.0f);
}

/* Image hash and format of dataset row i (its image already in it->im). */
static gx_status uda_score_hash(const uda_scorer *S, int64_t i, uda_item *it, char sha[65], gx_err *err) {
    if (S->ds->kind == GX_DATASET_FOLDER) {
        /* The file's own bytes: what galaxyd hashes for an upload of it. */
        FILE *fp = fopen(S->ds->file[i], "rb");
        unsigned char head[16] = { 0 };
        size_t nh = fp ? fread(head, 1, sizeof head, fp) : 0;
        if (fp) fclose(fp);
        it->fmt = gx_image_format_name(gx_image_sniff(head, nh));
        return gx_sha256_file(S->ds->file[i], sha, err);
    }
    /* HDF5: the stored uint8 HWC pixels (decoded as v/255, so exact). */
    const gx_image *im = &it->im;
    size_t hw = (size_t)im->h * im->w;
    uint8_t *px = malloc(hw * 3);
    if (!px) return gx_err_set(err, GX_ERR_NOMEM, "score: out of memory");
    uda_score_bytes(im->data, hw, px);
    gx_sha256_hex(px, hw * 3, sha);
    free(px);
    it->fmt = "h5";
    return GX_OK;
}

static const char *uda_score_survey(const uda_scorer *S, int64_t i) {
    if (S->o->survey) return S->o->survey;
    const gx_synth_survey *sv = S->ds->domain ? gx_synth_survey_get(S->ds->domain[i]) : NULL;
    return sv ? sv->name : NULL;
}

/* The record of dataset row i (its thumbnail already made). */
static void uda_score_rec(const uda_scorer *S, int64_t i, const uda_item *it, const char *ext, const char *sha,
                          gx_anomaly_rec *q) {
    memset(q, 0, sizeof *q);
    q->external_id = ext;
    q->image_sha256 = sha;
    q->survey = uda_score_survey(S, i);
    q->format = it->fmt;
    q->width = it->im.w;
    q->height = it->im.h;
    q->bands = 3;
    q->ra = S->ds->ra[i];
    q->dec = S->ds->dec[i];
    q->model_id = S->model_id;
    q->threshold = S->threshold;
    q->thumb_png = it->png;   /* of what the model sees */
    q->thumb_png_n = it->png_n;
    q->thumb_png_side = it->png_side;
}

/* One batch [i0, i1): skip stored rows, predict the rest, store them in
 * one transaction. The rows are read from the dataset and looked up in the
 * database one after the other (neither handle is shared between threads);
 * hashing, preprocessing and the thumbnails' PNGs, which were 60% of a
 * 1-thread run beside 15% for the forward pass (the bundled model, 3000
 * images, 2026-11-25), run on all threads, each row on its own. The rows
 * stored, their order and the first error reported are those of a run on
 * one thread. */
static gx_status uda_score_batch(uda_scorer *S, int64_t i0, int64_t i1, float *x, gx_anomaly_rec *recs,
                                 char (*ext)[160], char (*sha)[65], uda_item *items, gx_score_result *r,
                                 gx_err *err) {
    const int side = (int)S->m.cfg.size, K = (int)S->m.cfg.classes;
    const size_t row = (size_t)3 * side * side;
    const int64_t nb = i1 - i0;
    memset(items, 0, (size_t)nb * sizeof *items);
    for (int64_t j = 0; j < nb; j++) {
        items[j].s = gx_dataset_get(S->ds, i0 + j, &items[j].im, &items[j].err);
        snprintf(ext[j], 160, "%.100s:%lld", uda_basename(S->o->data), (long long)(i0 + j));
    }
    #pragma omp parallel for schedule(dynamic)
    for (int64_t j = 0; j < nb; j++)
        if (items[j].s == GX_OK) items[j].s = uda_score_hash(S, i0 + j, &items[j], sha[j], &items[j].err);
    int64_t n = 0;
    for (int64_t j = 0; j < nb; j++) {
        uda_item *it = &items[j];
        if (it->s == GX_OK) it->s = gx_anomaly_exists(S->db, ext[j], sha[j], S->model_id, &it->exists, &it->err);
        it->slot = it->s == GX_OK && !it->exists ? n++ : -1;
    }
    gx_pre_opts po = { S->meta.crop_frac > 0 ? S->meta.crop_frac : 1.0, side };
    #pragma omp parallel for schedule(dynamic)
    for (int64_t j = 0; j < nb; j++) {
        uda_item *it = &items[j];
        if (it->slot < 0) continue;
        gx_image px;
        memset(&px, 0, sizeof px);
        it->s = gx_pre_prepare(&it->im, &po, &px, &it->err);
        if (it->s == GX_OK) memcpy(x + row * (size_t)it->slot, px.data, row * sizeof *x);
        if (it->s == GX_OK)
            it->s = gx_anomaly_thumb_png(x + row * (size_t)it->slot, side, &it->png, &it->png_n, &it->png_side,
                                         &it->err);
        gx_image_free(&px);
    }
    gx_status s = GX_OK;
    for (int64_t j = 0; j < nb && s == GX_OK; j++) {   /* the first failure in row order */
        if (items[j].s != GX_OK) s = gx_err_set(err, items[j].s, "%s", items[j].err.msg);
        else if (items[j].exists) r->skipped++;
        else uda_score_rec(S, i0 + j, &items[j], ext[j], sha[j], &recs[items[j].slot]);
    }
    float *probs = NULL, *ent = NULL;
    int64_t *pred = NULL;
    if (s == GX_OK && n > 0) {
        probs = malloc((size_t)n * K * sizeof *probs);
        ent = malloc((size_t)n * sizeof *ent);
        pred = malloc((size_t)n * sizeof *pred);
        if (!probs || !ent || !pred) s = gx_err_set(err, GX_ERR_NOMEM, "score: out of memory");
        if (s == GX_OK) s = gx_uda_predict(&S->ctx, &S->m, x, side, n, S->o->domain, probs, ent, pred, err);
        if (s == GX_OK) s = gx_train_device_sync(&S->dev, err);   /* its error, not NaN scores */
        gx_ctx_reset(&S->ctx);
        for (int64_t j = 0; s == GX_OK && j < n; j++) {
            gx_anomaly_rec *q = &recs[j];
            q->score = (double)ent[j] / log((double)K);
            q->is_anomaly = q->score > S->threshold;     /* H > rho */
            q->class_index = (int)pred[j];
            q->class_name = S->class_names[pred[j]];
            r->flagged += q->is_anomaly;
        }
        if (s == GX_OK) s = gx_anomaly_put_many(S->db, recs, n, err);
        if (s == GX_OK) r->scored += n;
    }
    free(probs);
    free(ent);
    free(pred);
    for (int64_t j = 0; j < nb; j++) {
        gx_image_free(&items[j].im);
        free(items[j].png);
    }
    return s;
}

static gx_status uda_score_all(uda_scorer *S, gx_score_result *r, gx_err *err) {
    const gx_score_opts *o = S->o;
    int B = o->batch > 0 ? o->batch : 64, side = (int)S->m.cfg.size;
    float *x = malloc((size_t)B * 3 * side * side * sizeof *x);
    gx_anomaly_rec *recs = calloc((size_t)B, sizeof *recs);
    char (*ext)[160] = calloc((size_t)B, 160), (*sha)[65] = calloc((size_t)B, 65);
    uda_item *items = calloc((size_t)B, sizeof *items);
    gx_status s = x && recs && ext && sha && items ? GX_OK : gx_err_set(err, GX_ERR_NOMEM, "score: out of memory");
    int tty = o->progress < 0 ? isatty(2) : 0;
    double t0 = gx_train_now(), last = 0;
    r->n = S->ds->n;
    for (int64_t i0 = 0; s == GX_OK && i0 < S->ds->n; i0 += B) {
        int64_t i1 = i0 + B < S->ds->n ? i0 + B : S->ds->n;
        s = uda_score_batch(S, i0, i1, x, recs, ext, sha, items, r, err);
        double now = gx_train_now(), el = now - t0;
        if (tty && (now - last > 0.25 || i1 == S->ds->n)) {
            last = now;
            double eta = i1 > 0 ? el * (double)(S->ds->n - i1) / (double)i1 : 0;
            fprintf(stderr, "\rscore: %lld/%lld  scored %lld  skipped %lld  flagged %lld  ETA %.0f s   ",
                    (long long)i1, (long long)S->ds->n, (long long)r->scored, (long long)r->skipped,
                    (long long)r->flagged, eta);
            if (i1 == S->ds->n) fputc('\n', stderr);
        }
    }
    free(x);
    free(recs);
    free(ext);
    free(sha);
    free(items);
    return s;
}

gx_status gx_uda_score(const gx_score_opts *o, gx_score_result *r, gx_err *err) {
    memset(r, 0, sizeof *r);
    if (!o->model_path || !o->data || !o->db_path)
        return gx_err_set(err, GX_ERR_INVALID, "score: --model, --data and --db are required");
    if (o->domain != GX_UDA_SOURCE && o->domain != GX_UDA_TARGET)
        return gx_err_set(err, GX_ERR_INVALID, "--domain: must be source or target");
    uda_scorer *S = calloc(1, sizeof *S);
    if (!S) return gx_err_set(err, GX_ERR_NOMEM, "score: out of memory");
    S->o = o;
    gx_ctx_init(&S->ctx, 64u << 20);
    S->ctx.grad_enabled = 0;
    gx_err e2;
    gx_status s = gx_train_device_open_tf32(&S->dev, o->device, o->tf32, err);
    gx_train_device_ctx(&S->dev, &S->ctx);
    if (s == GX_OK) s = uda_score_model(S, err);
    if (s == GX_OK && (s = gx_dataset_open(o->data, NULL, &S->ds, &e2)) != GX_OK)
        gx_err_set(err, s, "--data %s: %s", o->data, e2.msg);
    if (s == GX_OK && (s = gx_db_open(&S->db, o->db_path, &e2)) != GX_OK)
        gx_err_set(err, s, "--db %s: %s", o->db_path, e2.msg);
    if (s == GX_OK)
        s = gx_anomaly_model_id(S->db, S->name, S->sha, o->model_path, S->threshold, S->meta.classes_json,
                                &S->model_id, err);
    r->model_id = S->model_id;
    if (s == GX_OK) s = uda_score_all(S, r, err);
    if (s == GX_OK && o->print)
        fprintf(o->print, "scored %lld of %lld objects (%lld already stored, %lld flagged) with %s (model id %lld)\n",
                (long long)r->scored, (long long)r->n, (long long)r->skipped, (long long)r->flagged, S->name,
                (long long)S->model_id);
    gx_db_close(S->db);
    gx_dataset_close(S->ds);
    if (S->model_ready) gx_uda_free(&S->m);
    gx_ctx_free(&S->ctx);
    gx_train_device_close(&S->dev);
    free(S);
    return s;
}
