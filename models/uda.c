/*
 * uda.c — the DeepAstroUDA network (models/gx_uda.h, spec/uda.md): a
 * torchvision-style ResNet trunk whose every batch norm keeps one statistic
 * set per domain (gx_resnet with bn_sets = 2: d0 source, d1 target), and a
 * cosine classifier with temperature; inference helpers and checkpoints.
 *
 * Everything differentiable is built from engine ops (conv, BN, ReLU, pools,
 * L2 normalise, linear, softmax), so gradients come from the ops' backwards
 * and the PyTorch parity test (tests/unit/test_uda.c) covers the whole path.
 * Parameter groups: the backbone is group 0, the head group 1 (the spec's
 * learning rates 0.001 / 0.01).
 */
#include "gx_cuda.h"
#include "gx_uda.h"
#include "gx_resnet18.h"
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define UDA_CKPT_FORMAT "galaxyd-checkpoint-1"
#define UDA_PREDICT_CHUNK 32

/* ---------------------------------------------------------------- config */

static gx_uda_config uda_config(gx_uda_backbone bb, int64_t size) {
    gx_uda_config c = { bb, size, 2, 0.05 };   /* K = 2: the noise-shift experiment */
    return c;
}

gx_uda_config gx_uda_config_tiny(void) { return uda_config(GX_UDA_TINY, 32); }
gx_uda_config gx_uda_config_resnet18(void) { return uda_config(GX_UDA_RESNET18, 64); }
gx_uda_config gx_uda_config_resnet50(void) { return uda_config(GX_UDA_RESNET50, 64); }

static const char *const uda_backbone_names[] = { "tiny", "resnet18", "resnet50" };

/* The trunk of each backbone (BN sets: one per domain). */
static gx_resnet_config uda_resnet_config(gx_uda_backbone bb) {
    gx_resnet_config r = { 0, { 2, 2, 2, 2 }, { 64, 128, 256, 512 }, 3, 2 };
    if (bb == GX_UDA_TINY) {
        for (int l = 0; l < 4; l++) { r.blocks[l] = 1; r.widths[l] = 8 << l; }
    } else if (bb == GX_UDA_RESNET50) {
        r.bottleneck = 1;
        const int b50[4] = { 3, 4, 6, 3 };
        memcpy(r.blocks, b50, sizeof b50);
    }
    return r;
}

int64_t gx_uda_feature_dim(const gx_uda_config *cfg) {
    gx_resnet_config r = uda_resnet_config(cfg->backbone);
    return r.widths[3] * (r.bottleneck ? 4 : 1);
}

char *gx_uda_config_json(const gx_uda_config *cfg) {
    int bb = (int)cfg->backbone;
    json_t *j = json_pack("{s:s,s:I,s:I,s:f}",
                          "backbone", bb >= 0 && bb <= 2 ? uda_backbone_names[bb] : "tiny",
                          "size", (json_int_t)cfg->size, "classes", (json_int_t)cfg->classes,
                          "temperature", cfg->temperature);
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    return s;
}

/* Every key is required and bounded: gx_uda_init asserts on its config and
 * would otherwise allocate whatever a corrupt file claims. */
gx_status gx_uda_config_parse(const char *json, gx_uda_config *cfg, gx_err *err) {
    json_error_t je;
    json_t *j = json ? json_loads(json, 0, &je) : NULL;
    if (!j || !json_is_object(j)) {
        json_decref(j);
        return gx_err_set(err, GX_ERR_FORMAT, "uda config: not a JSON object");
    }
    gx_uda_config c;
    memset(&c, 0, sizeof c);
    const char *bad = NULL;
    const char *bs = json_string_value(json_object_get(j, "backbone"));
    int bb = -1;
    for (int i = 0; bs && i < 3; i++)
        if (!strcmp(bs, uda_backbone_names[i])) bb = i;
    json_t *sz = json_object_get(j, "size"), *k = json_object_get(j, "classes");
    json_t *t = json_object_get(j, "temperature");
    if (bb < 0) bad = "backbone";
    else if (!json_is_integer(sz) || json_integer_value(sz) < 8 || json_integer_value(sz) > 1024)
        bad = "size";
    else if (!json_is_integer(k) || json_integer_value(k) < 2 ||
             json_integer_value(k) > GX_UDA_MAX_CLASSES)
        bad = "classes";
    else if (!json_is_number(t) || !(json_number_value(t) > 0) || json_number_value(t) > 10)
        bad = "temperature";
    if (!bad) {
        c.backbone = (gx_uda_backbone)bb;
        c.size = (int64_t)json_integer_value(sz);
        c.classes = (int64_t)json_integer_value(k);
        c.temperature = json_number_value(t);
    }
    json_decref(j);
    if (bad) return gx_err_set(err, GX_ERR_FORMAT, "uda config: key '%s' missing or invalid", bad);
    *cfg = c;
    return GX_OK;
}

/* ----------------------------------------------------------------- model */

static void uda_init(gx_uda_model *m, gx_uda_config cfg, uint64_t seed, int shapes_only) {
    GX_ASSERT_MSG(cfg.backbone >= GX_UDA_TINY && cfg.backbone <= GX_UDA_RESNET50,
                  "gx_uda_init: backbone %d", (int)cfg.backbone);
    GX_ASSERT_MSG(cfg.classes >= 1 && cfg.classes <= GX_UDA_MAX_CLASSES && cfg.temperature > 0,
                  "gx_uda_init: classes %lld / temperature %g", (long long)cfg.classes,
                  cfg.temperature);
    memset(m, 0, sizeof *m);
    m->cfg = cfg;
    if (shapes_only) gx_params_init_shapes(&m->params);
    else gx_params_init(&m->params);
    gx_rng rng;
    gx_rng_init(&rng, seed);
    gx_resnet *net = malloc(sizeof *net);
    GX_ASSERT_MSG(net != NULL, "gx_uda_init: out of memory");
    gx_resnet_config rc = uda_resnet_config(cfg.backbone);
    gx_rng bb_rng = gx_rng_fork(&rng, 1);
    gx_resnet_init(net, &m->params, "backbone", &rc, &bb_rng);
    m->net = net;
    int64_t E = gx_resnet_features(net);
    m->head = gx_params_add(&m->params, "head.weight", 2, GX_SHAPE(cfg.classes, E), GX_PARAM_DECAY);
    gx_params_find(&m->params, "head.weight")->group = 1;
    gx_rng hr = gx_rng_fork(&rng, 2);
    if (!m->head->data) return;   /* a shapes-only registry */
    gx_rng_fill_normal(&hr, m->head->data, m->head->numel, 0.0, 0.01);
    gx_uda_renorm_head(m);
}

void gx_uda_init(gx_uda_model *m, gx_uda_config cfg, uint64_t seed) { uda_init(m, cfg, seed, 0); }
void gx_uda_init_shapes(gx_uda_model *m, gx_uda_config cfg) { uda_init(m, cfg, 0, 1); }

void gx_uda_free(gx_uda_model *m) {
    if (m->net) {
        gx_resnet_free(m->net);
        free(m->net);
    }
    gx_params_free(&m->params);
    memset(m, 0, sizeof *m);
}

gx_uda_out gx_uda_forward(gx_ctx *ctx, gx_uda_model *m, gx_tensor *x, int domain, int training) {
    GX_ASSERT_MSG(domain == GX_UDA_SOURCE || domain == GX_UDA_TARGET, "gx_uda_forward: domain %d",
                  domain);
    gx_uda_out o;
    o.f = gx_resnet_forward(ctx, m->net, x, domain, training);
    /* Cosine head: W f/max(|f|,1e-12) / T (rows of W kept at unit norm). */
    gx_tensor *fn = gx_l2_normalize(ctx, o.f, 1, 1e-12);
    o.logits = gx_scale(ctx, gx_linear(ctx, fn, m->head, NULL), 1.0 / m->cfg.temperature);
    o.p = gx_softmax(ctx, o.logits, 1);
    return o;
}

/* Waits for e; an error stays kept for the caller's next gx_cuda_exec_sync
 * (the trainer's per-step sync reports it). */
static gx_status uda_exec_wait(gx_cuda_exec *e) {
    gx_err err;
    gx_status s = gx_cuda_exec_sync(e, &err);
    if (s != GX_OK) {
        e->status = s;
        e->err = err;
    }
    return s;
}

/* On the device the head (K x E, small) makes a round trip: downloaded into
 * its host copy, renormalised there with the same double arithmetic as on
 * the CPU (so both give the same bits), uploaded. The host copy is then
 * current too. A device error leaves the head as it is (reported by the
 * caller's next sync). */
void gx_uda_renorm_head(gx_uda_model *m) {
    int64_t K = m->head->shape[0], E = m->head->shape[1];
    gx_cuda_exec *e = m->head->device == GX_DEVICE_CUDA ? m->params.cuda : NULL;
    gx_real *h = e ? gx_params_find(&m->params, "head.weight")->host_data : m->head->data;
    size_t bytes = (size_t)(K * E) * sizeof *h;
    if (e) {
        gx_cuda_exec_download(e, h, m->head->data, bytes);
        if (uda_exec_wait(e) != GX_OK) return;
    }
    for (int64_t k = 0; k < K; k++) {
        gx_real *w = h + k * E;
        double ss = 0;
        for (int64_t j = 0; j < E; j++) ss += (double)w[j] * w[j];
        double inv = 1.0 / fmax(sqrt(ss), 1e-12);
        for (int64_t j = 0; j < E; j++) w[j] = (gx_real)(w[j] * inv);
    }
    if (e) gx_cuda_exec_upload(e, m->head->data, h, bytes);
}

/* One chunk of gx_uda_predict: rows i0 .. i0+b. */
static void uda_predict_chunk(gx_ctx *ctx, gx_uda_model *m, const float *x, int64_t side, int64_t b,
                              int domain, float *probs, float *entropy, int64_t *pred) {
    int64_t K = m->cfg.classes, per = 3 * side * side;
    gx_tensor *xt = gx_tensor_new_host(ctx, 4, GX_SHAPE(b, 3, side, side));
    for (int64_t i = 0; i < b * per; i++) xt->data[i] = (gx_real)x[i];
    gx_uda_out o = gx_uda_forward(ctx, m, gx_to_ctx(ctx, xt), domain, 0);
    const gx_real *pv = gx_to_host(ctx, o.p)->data;
    for (int64_t i = 0; i < b; i++) {
        const gx_real *p = pv + i * K;
        double H = 0;
        int64_t best = 0;
        for (int64_t k = 0; k < K; k++) {
            H -= (double)p[k] * log((double)p[k] + 1e-5);
            if (p[k] > p[best]) best = k;
            if (probs) probs[i * K + k] = (float)p[k];
        }
        if (entropy) entropy[i] = (float)H;
        if (pred) pred[i] = best;
    }
}

/* Rows [lo, hi) of gx_uda_predict, UDA_PREDICT_CHUNK per forward; the
 * part's ctx is reset after each (the caller's too, for part 0: it must
 * hold nothing the caller still needs), so any n runs in bounded arenas. */
typedef struct uda_pred_job {
    gx_uda_model *m;
    const float *x;
    int64_t side;
    int domain;
    float *probs, *entropy;
    int64_t *pred;
} uda_pred_job;

static void uda_predict_part(gx_ctx *ctx, int64_t lo, int64_t hi, void *arg) {
    const uda_pred_job *J = arg;
    const int64_t K = J->m->cfg.classes, per = 3 * J->side * J->side;
    for (int64_t i0 = lo; i0 < hi; i0 += UDA_PREDICT_CHUNK) {
        int64_t b = hi - i0 < UDA_PREDICT_CHUNK ? hi - i0 : UDA_PREDICT_CHUNK;
        uda_predict_chunk(ctx, J->m, J->x + i0 * per, J->side, b, J->domain, J->probs ? J->probs + i0 * K : NULL,
                          J->entropy ? J->entropy + i0 : NULL, J->pred ? J->pred + i0 : NULL);
        gx_ctx_reset(ctx);
    }
}

gx_status gx_uda_predict(gx_ctx *ctx, gx_uda_model *m, const float *x, int64_t side, int64_t n,
                         int domain, float *probs, float *entropy, int64_t *pred, gx_err *err) {
    if (!ctx || !m || !x) return gx_err_set(err, GX_ERR_INVALID, "uda predict: NULL argument");
    if (n < 1) return gx_err_set(err, GX_ERR_INVALID, "uda predict: n = %lld", (long long)n);
    if (side < 8 || side > 1024)
        return gx_err_set(err, GX_ERR_INVALID, "uda predict: image side %lld outside [8, 1024]",
                          (long long)side);
    if (domain != GX_UDA_SOURCE && domain != GX_UDA_TARGET)
        return gx_err_set(err, GX_ERR_INVALID, "uda predict: domain %d (0 source, 1 target)", domain);
    int grad = ctx->grad_enabled;
    ctx->grad_enabled = 0;
    /* The images split over the threads, each part on its own context
     * (eval-mode BN: batch invariant, the same bits as one thread). */
    uda_pred_job J = { m, x, side, domain, probs, entropy, pred };
    gx_ctx_for_parts(ctx, n, 0, uda_predict_part, &J);
    ctx->grad_enabled = grad;
    return GX_OK;
}

/* ----------------------------------------------------------- checkpoints */

static void uda_iso_time(char *buf, size_t n) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static gx_status uda_meta_num(gx_st_writer *w, const char *key, const char *fmt, double v,
                              gx_err *err) {
    char b[64];
    snprintf(b, sizeof b, fmt, v);
    return gx_st_writer_meta(w, key, b, err);
}

/* ["class_0", ...]: the classes key when the caller gives none. */
static char *uda_default_classes(int64_t K) {
    json_t *a = json_array();
    for (int64_t k = 0; a && k < K; k++) {
        char n[32];
        snprintf(n, sizeof n, "class_%lld", (long long)k);
        json_array_append_new(a, json_string(n));
    }
    char *s = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    return s;
}

/* The defaults a NULL meta stands for (the tuner's starting rho and m). */
static void uda_meta_default(const gx_uda_model *m, gx_uda_meta *d) {
    memset(d, 0, sizeof *d);
    d->crop_frac = 1.0;
    d->run_id = -1;
    gx_uda_tuner t;
    gx_uda_tuner_init(&t, m->cfg.classes);
    d->rho = t.rho;
    d->margin = t.margin;
}

static gx_status uda_write_meta(gx_st_writer *w, const gx_uda_model *m, const gx_uda_meta *meta,
                                const char *cfg, const char *cls, gx_err *err) {
    char pre[128], created[32];
    snprintf(pre, sizeof pre, "{\"size\":%lld,\"crop_frac\":%.17g}", (long long)m->cfg.size,
             meta->crop_frac);
    uda_iso_time(created, sizeof created);
    gx_status s = gx_st_writer_meta(w, "format", UDA_CKPT_FORMAT, err);
    if (s == GX_OK) s = gx_st_writer_meta(w, "model", "uda", err);
    if (s == GX_OK) s = gx_st_writer_meta(w, "config", cfg, err);
    if (s == GX_OK) s = gx_st_writer_meta(w, "classes", cls, err);
    if (s == GX_OK) s = gx_st_writer_meta(w, "preprocess", pre, err);
    if (s == GX_OK) s = gx_st_writer_meta(w, "created", created, err);
    if (s == GX_OK) s = uda_meta_num(w, "run_id", "%.0f", (double)meta->run_id, err);
    if (s == GX_OK) s = uda_meta_num(w, "epoch", "%.0f", meta->epoch, err);
    if (s == GX_OK) s = uda_meta_num(w, "anomaly_threshold", "%.17g", meta->rho, err);
    if (s == GX_OK) s = uda_meta_num(w, "margin", "%.17g", meta->margin, err);
    if (s == GX_OK)
        s = gx_st_writer_meta(w, "test_metrics",
                              meta->test_metrics_json[0] ? meta->test_metrics_json : "{}", err);
    return s;
}

gx_status gx_uda_save(const gx_uda_model *m, const gx_uda_meta *meta, const char *path,
                      gx_err *err) {
    gx_uda_meta def;
    if (!meta) {
        uda_meta_default(m, &def);
        meta = &def;
    }
    char *cfg = gx_uda_config_json(&m->cfg);
    char *cls = meta->classes_json[0] ? strdup(meta->classes_json)
                                      : uda_default_classes(m->cfg.classes);
    gx_st_writer w;
    gx_st_writer_init(&w);
    gx_status s = (cfg && cls) ? GX_OK : gx_err_set(err, GX_ERR_NOMEM, "uda checkpoint: JSON");
    if (s == GX_OK) s = gx_params_to_writer(&m->params, &w, err);
    if (s == GX_OK) s = uda_write_meta(&w, m, meta, cfg, cls, err);
    if (s == GX_OK) s = gx_st_writer_write(&w, path, err);
    free(cfg);
    free(cls);
    gx_st_writer_free(&w);
    return s;
}

/* A metadata number: *ok cleared when present but not a finite number;
 * absent keys keep *v. */
static void uda_meta_double(const gx_st_file *f, const char *key, double *v, int *ok) {
    const char *s = gx_st_meta(f, key);
    if (!s) return;
    char *end;
    double d = strtod(s, &end);
    if (end == s || *end || !isfinite(d)) *ok = 0;
    else *v = d;
}

/* classes: a JSON list of exactly K strings. */
static gx_status uda_check_classes(const char *s, int64_t K, gx_err *err) {
    json_t *a = s ? json_loads(s, 0, NULL) : NULL;
    int ok = json_is_array(a) && (int64_t)json_array_size(a) == K;
    for (size_t i = 0; ok && i < json_array_size(a); i++) ok = json_is_string(json_array_get(a, i));
    json_decref(a);
    if (!ok)
        return gx_err_set(err, GX_ERR_FORMAT, "uda checkpoint: metadata 'classes' is not a list of "
                          "%lld names", (long long)K);
    if (strlen(s) >= sizeof(((gx_uda_meta *)0)->classes_json))
        return gx_err_set(err, GX_ERR_FORMAT, "uda checkpoint: metadata 'classes' too long");
    return GX_OK;
}

static gx_status uda_read_meta(const gx_st_file *f, const gx_uda_model *m, gx_uda_meta *meta,
                               gx_err *err) {
    uda_meta_default(m, meta);
    const char *cls = gx_st_meta(f, "classes");
    gx_status s = uda_check_classes(cls, m->cfg.classes, err);
    if (s != GX_OK) return s;
    snprintf(meta->classes_json, sizeof meta->classes_json, "%s", cls);
    double run = -1, epoch = 0;
    int ok = 1;
    uda_meta_double(f, "run_id", &run, &ok);
    uda_meta_double(f, "epoch", &epoch, &ok);
    if (!gx_st_meta(f, "anomaly_threshold"))
        return gx_err_set(err, GX_ERR_FORMAT, "uda checkpoint: metadata 'anomaly_threshold' missing");
    uda_meta_double(f, "anomaly_threshold", &meta->rho, &ok);
    uda_meta_double(f, "margin", &meta->margin, &ok);
    if (!ok || meta->rho < 0 || meta->margin < 0)
        return gx_err_set(err, GX_ERR_FORMAT, "uda checkpoint: a numeric metadata key (run_id, "
                          "epoch, anomaly_threshold, margin) is invalid");
    meta->run_id = (int64_t)run;
    meta->epoch = (int)epoch;
    json_t *p = json_loads(gx_st_meta(f, "preprocess") ? gx_st_meta(f, "preprocess") : "{}", 0, NULL);
    json_t *cf = p ? json_object_get(p, "crop_frac") : NULL;
    meta->crop_frac = json_is_number(cf) ? json_number_value(cf) : 1.0;
    json_decref(p);
    const char *tm = gx_st_meta(f, "test_metrics");
    snprintf(meta->test_metrics_json, sizeof meta->test_metrics_json, "%s", tm ? tm : "{}");
    return GX_OK;
}

gx_status gx_uda_load(const gx_st_file *f, gx_uda_model *m, gx_uda_meta *meta, gx_err *err) {
    memset(m, 0, sizeof *m);
    const char *fmt = gx_st_meta(f, "format"), *kind = gx_st_meta(f, "model");
    if (!fmt || strcmp(fmt, UDA_CKPT_FORMAT))
        return gx_err_set(err, GX_ERR_FORMAT, "not a galaxyd checkpoint (format '%s')",
                          fmt ? fmt : "none");
    if (!kind || strcmp(kind, "uda"))
        return gx_err_set(err, GX_ERR_FORMAT, "checkpoint of model '%s', not uda",
                          kind ? kind : "none");
    gx_uda_config cfg;
    gx_status s = gx_uda_config_parse(gx_st_meta(f, "config"), &cfg, err);
    if (s != GX_OK) return s;
    /* The file must hold what the config describes before the model is
     * allocated (see gx_wm_checkpoint_load). */
    gx_uda_init_shapes(m, cfg);
    s = gx_params_check(&m->params, f, 1, err);
    gx_uda_free(m);
    if (s != GX_OK) return s;
    gx_uda_init(m, cfg, 0);
    s = gx_params_load(&m->params, f, 1, err);
    gx_uda_meta tmp;
    if (s == GX_OK) s = uda_read_meta(f, m, meta ? meta : &tmp, err);
    if (s != GX_OK) gx_uda_free(m);
    return s;
}
