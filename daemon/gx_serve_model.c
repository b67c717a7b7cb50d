/*
 * gx_serve_model.c — a checkpoint as galaxyd serves it (contract in
 * gx_serve_model.h).
 *
 * Loading: the file is read once (gx_st_read); its bytes are hashed for the
 * version, the trainer's own loader (gx_wm_checkpoint_load, shared with
 * `galaxy-train eval`) checks format, kind and config and loads every tensor,
 * and the rest of the metadata (classes, preprocess, run_id, test_metrics)
 * is validated here. Every refusal names the file.
 *
 * Preprocessing is the trainer's path for a folder dataset, call for call:
 * gx_image_decode with the default stretch (what gx_dataset_get does; the
 * decoders already turn gray into three bands and alpha into the mask), then
 * gx_pre_prepare with the checkpoint's size and crop_frac (what the loader
 * does before augmenting, and evaluation never augments).
 *
 * Predict: eval mode, no tape, activations in the model's own arena reset
 * after each chunk. Rows are processed in chunks of at most
 * GX_SERVE_CHUNK_DEFAULT so the arena's size is bounded by one chunk whatever
 * n is; after the first chunk of the largest size the arena is one block of
 * its high-water size and later calls do not malloc. Chunking cannot change
 * a row's answer: in eval mode no sample sees the rest of its batch. On a
 * device a chunk is padded and replayed as a CUDA graph when the model has
 * graphs on and its kind graph hooks (gx_serve_graph.h); a chunk without a
 * graph (CF-INN rows of another size, UDA rows of mixed domains, a size
 * whose capture failed) runs as below.
 */
#include "gx_serve_model.h"
#include "gx_serve_impl.h"

#include "gx_sha256.h"
#include "gx_train_wm.h"
#include "gx_wavelet_mamba.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Rows per forward inside predict (memory bound; see the file comment). */
#define GX_SERVE_CHUNK_DEFAULT 32

/* The kinds galaxyd can serve, by metadata "model". */
static const gx_serve_kind *const serve_kinds[] = {
    &gx_serve_kind_wm,
    &gx_serve_kind_uda,
    &gx_serve_kind_cf,
};

/* ------------------------------------------------------ wavelet-mamba kind */

static gx_status wm_kind_load(gx_serve_model *m, const gx_st_file *f, gx_err *err) {
    gx_wm_model *wm = calloc(1, sizeof *wm);
    if (!wm) return gx_err_set(err, GX_ERR_NOMEM, "out of memory");
    gx_status s = gx_wm_checkpoint_load(f, wm, err);
    if (s != GX_OK) {
        free(wm);   /* gx_wm_checkpoint_load frees what it made on error */
        return s;
    }
    m->impl = wm;
    m->params = &wm->params;
    m->cfg_classes = wm->cfg.classes;
    m->cfg_size = wm->cfg.size;
    return GX_OK;
}

static void wm_kind_free(gx_serve_model *m) {
    gx_wm_free(m->impl);
    free(m->impl);
}

/* The answers of b rows from their logits [b,K] and redshifts (score NaN). */
static void wm_rows_answer(const gx_real *logits, const gx_real *zh, int b, int64_t K, const gx_serve_out *out) {
    gx_serve_softmax_rows(logits, b, K, out->logits, out->probs);
    for (int64_t i = 0; i < b; i++) {
        out->redshift[i] = (float)zh[i];
        if (out->score) out->score[i] = NAN;
    }
}

static void wm_kind_forward(gx_serve_model *m, gx_ctx *ctx, const float *x, int64_t side, const float *coords,
                            const int8_t *domain, int b, const gx_serve_out *out) {
    (void)domain;
    int64_t per = 3 * side * side;
    gx_tensor *xt = gx_tensor_new_host(ctx, 4, GX_SHAPE(b, 3, side, side));
    for (int64_t i = 0; i < (int64_t)b * per; i++) xt->data[i] = (gx_real)x[i];
    gx_tensor *ct = NULL;
    if (coords) {
        ct = gx_tensor_new_host(ctx, 2, GX_SHAPE(b, 2));
        for (int64_t i = 0; i < 2 * (int64_t)b; i++) ct->data[i] = (gx_real)coords[i];
        /* Stays on the host: gx_wm_forward cleans it there and uploads. */
    }
    gx_wm_out o = gx_wm_forward(ctx, m->impl, gx_to_ctx(ctx, xt), ct, 0);
    const gx_real *zh = gx_to_host(ctx, o.redshift)->data;
    wm_rows_answer(gx_to_host(ctx, o.logits)->data, zh, b, m->info.n_classes, out);
}

/* CUDA graph hooks (gx_serve_graph.h): one variant; outputs logits and
 * redshift, read as wm_kind_forward reads them. */
static int wm_graph_variant(const gx_serve_model *m, const int8_t *domain, int b, int64_t side) {
    (void)m, (void)domain, (void)b, (void)side;
    return 0;
}

static void wm_graph_pass(gx_serve_model *m, gx_ctx *ctx, int variant, gx_tensor *x, gx_tensor *clean,
                          gx_tensor *mask, gx_tensor *out[2]) {
    (void)variant;
    gx_wm_out o = gx_wm_forward_clean(ctx, m->impl, x, clean, mask);
    out[0] = o.logits;
    out[1] = o.redshift;
}

static void wm_graph_read(gx_serve_model *m, const gx_real *const o[2], int b, const gx_serve_out *out) {
    wm_rows_answer(o[0], o[1], b, m->info.n_classes, out);
}

const gx_serve_kind gx_serve_kind_wm = { "wavelet-mamba", wm_kind_load, wm_kind_free, wm_kind_forward, 1,
                                         wm_graph_variant, wm_graph_pass, wm_graph_read };

void gx_serve_softmax_rows(const gx_real *logits, int b, int64_t K, float *logits_out, float *probs_out) {
    for (int64_t i = 0; i < b; i++) {
        const gx_real *r = logits + i * K;
        double mx = r[0], sum = 0;
        for (int64_t k = 1; k < K; k++) mx = r[k] > mx ? r[k] : mx;
        for (int64_t k = 0; k < K; k++) sum += exp((double)r[k] - mx);
        for (int64_t k = 0; k < K; k++) {
            logits_out[i * K + k] = (float)r[k];
            probs_out[i * K + k] = (float)(exp((double)r[k] - mx) / sum);
        }
    }
}

/* ------------------------------------------------------------- loading */

/* "dir/name.safetensors" -> "name" (the route name). */
static gx_status serve_name_from_path(const char *path, char *name, size_t cap, gx_err *err) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    static const char ext[] = ".safetensors";
    if (n > sizeof ext - 1 && !strcmp(base + n - (sizeof ext - 1), ext)) n -= sizeof ext - 1;
    if (n == 0 || n >= cap)
        return gx_err_set(err, GX_ERR_INVALID, "%s: model name must be 1..%zu characters", path, cap - 1);
    memcpy(name, base, n);
    name[n] = 0;
    return GX_OK;
}

/* metadata "classes": a JSON list of K strings (K = the config's classes). */
static gx_status serve_parse_classes(gx_serve_info *in, const char *js, int64_t K, gx_err *err) {
    if (K > GX_SERVE_MAX_CLASSES)
        return gx_err_set(err, GX_ERR_UNSUPPORTED, "%s: %lld classes (at most %d are served)", in->path,
                          (long long)K, GX_SERVE_MAX_CLASSES);
    json_t *a = js ? json_loads(js, 0, NULL) : NULL;
    gx_status s = GX_OK;
    if (!json_is_array(a) || (int64_t)json_array_size(a) != K)
        s = gx_err_set(err, GX_ERR_FORMAT, "%s: metadata 'classes' is not a list of %lld names", in->path,
                       (long long)K);
    for (size_t i = 0; s == GX_OK && i < (size_t)K; i++) {
        const char *c = json_string_value(json_array_get(a, i));
        if (!c || !*c || strlen(c) >= sizeof in->class_names[0])
            s = gx_err_set(err, GX_ERR_FORMAT, "%s: metadata 'classes'[%zu] is not a name of 1..%zu characters",
                           in->path, i, sizeof in->class_names[0] - 1);
        else
            strcpy(in->class_names[i], c);
    }
    json_decref(a);
    if (s == GX_OK) in->n_classes = (int)K;
    return s;
}

/* metadata "preprocess": {"size": S, "crop_frac": c}; absent keys take the
 * config's size and 1.0 (what `galaxy-train eval` assumes). */
static gx_status serve_parse_preprocess(gx_serve_info *in, const char *js, int64_t cfg_size, gx_err *err) {
    json_t *p = js ? json_loads(js, 0, NULL) : json_object();
    gx_status s = GX_OK;
    json_t *sz = json_object_get(p, "size"), *cf = json_object_get(p, "crop_frac");
    if (!json_is_object(p))
        s = gx_err_set(err, GX_ERR_FORMAT, "%s: metadata 'preprocess' is not a JSON object", in->path);
    else if (sz && (!json_is_integer(sz) || json_integer_value(sz) < 8 || json_integer_value(sz) > 1024))
        s = gx_err_set(err, GX_ERR_FORMAT, "%s: metadata 'preprocess' size must be an integer in [8, 1024]",
                       in->path);
    else if (cf && (!json_is_number(cf) || !(json_number_value(cf) > 0 && json_number_value(cf) <= 1)))
        s = gx_err_set(err, GX_ERR_FORMAT, "%s: metadata 'preprocess' crop_frac must be in (0, 1]", in->path);
    if (s == GX_OK) {
        in->input_size = sz ? (int)json_integer_value(sz) : (int)cfg_size;
        in->crop_frac = cf ? json_number_value(cf) : 1.0;
    }
    json_decref(p);
    return s;
}

/* A JSON object's text, normalised (compact, sorted keys); malloc'ed. */
static gx_status serve_json_object(const char *path, const char *key, const char *js, char **out,
                                   gx_err *err) {
    json_t *j = json_loads(js, 0, NULL);
    *out = json_is_object(j) ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    int was_object = json_is_object(j);
    json_decref(j);
    if (!was_object) return gx_err_set(err, GX_ERR_FORMAT, "%s: metadata '%s' is not a JSON object", path, key);
    if (!*out) return gx_err_set(err, GX_ERR_NOMEM, "%s: out of memory", path);
    return GX_OK;
}

/* Everything in info that comes from the metadata (the weights are loaded). */
static gx_status serve_fill_info(gx_serve_model *m, const gx_st_file *f, gx_err *err) {
    gx_serve_info *in = &m->info;
    snprintf(in->kind, sizeof in->kind, "%s", m->kind->name);
    snprintf(in->device, sizeof in->device, "cpu");
    gx_status s = serve_parse_classes(in, gx_st_meta(f, "classes"), m->cfg_classes, err);
    if (s == GX_OK) s = serve_parse_preprocess(in, gx_st_meta(f, "preprocess"), m->cfg_size, err);
    if (s == GX_OK) s = serve_json_object(in->path, "config", gx_st_meta(f, "config"), &in->config_json, err);
    const char *tm = gx_st_meta(f, "test_metrics");
    if (s == GX_OK) s = serve_json_object(in->path, "test_metrics", tm ? tm : "{}", &in->test_metrics_json, err);
    in->run_id = -1;
    const char *rid = gx_st_meta(f, "run_id");
    if (rid) {
        char *end;
        long long v = strtoll(rid, &end, 10);
        if (end != rid && !*end && v > 0) in->run_id = v;
    }
    /* Parameters, not buffers (BN running statistics, colour statistics). */
    in->n_params = 0;
    for (int i = 0; i < m->params->n; i++)
        if (!(m->params->items[i]->flags & GX_PARAM_BUFFER)) in->n_params += m->params->items[i]->t.numel;
    return s;
}

/* Route names go into URLs (/v2/models/{name}): letters, digits, . _ - only. */
static gx_status serve_check_name(const char *path, const char *name, gx_err *err) {
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '.' || *c == '_' || *c == '-'))
            return gx_err_set(err, GX_ERR_INVALID, "%s: model name '%s' may hold only letters, digits, '.', "
                              "'_' and '-'", path, name);
    return GX_OK;
}

/* The kind named by the metadata "model" (wavelet-mamba when absent: the
 * first checkpoints carried no other). */
static gx_status serve_pick_kind(const gx_st_file *f, const gx_serve_kind **kind, gx_err *err) {
    const char *name = gx_st_meta(f, "model");
    if (!name) name = "wavelet-mamba";
    for (size_t i = 0; i < sizeof serve_kinds / sizeof serve_kinds[0]; i++)
        if (!strcmp(serve_kinds[i]->name, name)) {
            *kind = serve_kinds[i];
            return GX_OK;
        }
    return gx_err_set(err, GX_ERR_FORMAT, "metadata 'model' is '%.64s', which galaxyd does not serve", name);
}

gx_status gx_serve_model_load(gx_serve_model **out, const char *path, const char *name, gx_err *err) {
    return gx_serve_model_load_on(out, path, name, NULL, err);
}

/* The model's worker stream on dev and its parameters uploaded (the cast:
 * m->params is const for the rest of the daemon, which only reads it). */
static gx_status serve_place_on_device(gx_serve_model *m, const gx_serve_device *dev, gx_err *err) {
    gx_err e2;
    gx_status s = gx_cuda_exec_init(&m->exec, dev->pool, dev->index, dev->tf32, &e2);
    if (s != GX_OK) return gx_err_set(err, s, "%s: device cuda:%d: %s", m->info.path, dev->index, e2.msg);
    if ((s = gx_params_to_cuda((gx_params *)m->params, &m->exec, &e2)) != GX_OK ||
        (m->consts && (s = gx_params_to_cuda(m->consts, &m->exec, &e2)) != GX_OK)) {
        gx_cuda_exec_free(&m->exec);
        return gx_err_set(err, s, "%s: uploading the parameters to cuda:%d: %s", m->info.path, dev->index, e2.msg);
    }
    m->on_cuda = 1;
    m->graphs_on = dev->graphs;
    m->ctx.cuda = &m->exec;
    snprintf(m->info.device, sizeof m->info.device, "cuda:%d", dev->index);
    return GX_OK;
}

gx_status gx_serve_model_load_on(gx_serve_model **out, const char *path, const char *name,
                                 const gx_serve_device *dev, gx_err *err) {
    *out = NULL;
    if (!path) return gx_err_set(err, GX_ERR_INVALID, "gx_serve_model_load: no path");
    gx_serve_model *m = calloc(1, sizeof *m);
    if (!m) return gx_err_set(err, GX_ERR_NOMEM, "%s: out of memory", path);
    gx_serve_info *in = &m->info;
    in->anomaly_threshold = NAN;   /* before the kind's load(), which may set it (uda) */
    gx_status s = GX_OK;
    if (strlen(path) >= sizeof in->path)
        s = gx_err_set(err, GX_ERR_INVALID, "%.200s...: path too long", path);
    else
        strcpy(in->path, path);
    if (s == GX_OK && name) {
        if (!*name || strlen(name) >= sizeof in->name)
            s = gx_err_set(err, GX_ERR_INVALID, "%s: model name must be 1..%zu characters", path,
                           sizeof in->name - 1);
        else
            strcpy(in->name, name);
    } else if (s == GX_OK) {
        s = serve_name_from_path(path, in->name, sizeof in->name, err);
    }
    if (s == GX_OK) s = serve_check_name(path, in->name, err);
    gx_st_file f;
    memset(&f, 0, sizeof f);
    gx_err e2;
    if (s == GX_OK && (s = gx_st_read(&f, path, &e2)) != GX_OK) gx_err_set(err, s, "checkpoint %s: %s", path, e2.msg);
    if (s == GX_OK) {
        gx_sha256_hex(f.buf, f.len, in->version);
        if ((s = serve_pick_kind(&f, &m->kind, &e2)) != GX_OK)
            gx_err_set(err, s, "checkpoint %s: %s", path, e2.msg);
    }
    if (s == GX_OK) {
        /* A missing or misshapen tensor is a bad file like any other. */
        if ((s = m->kind->load(m, &f, &e2)) != GX_OK)
            s = gx_err_set(err, s == GX_ERR_NOMEM ? s : GX_ERR_FORMAT, "checkpoint %s: %s", path, e2.msg);
    }
    if (s == GX_OK) s = serve_fill_info(m, &f, err);
    /* Served models only run forward: no gradient buffers, here or on the
     * device (half the parameters' memory); and their weights never change,
     * so a CPU conv packs its weights once, not per batch (gx_params_freeze). */
    if (s == GX_OK) {
        gx_params_drop_grads((gx_params *)m->params);
        gx_params_freeze((gx_params *)m->params);
    }
    gx_st_close(&f);
    if (s != GX_OK) {
        gx_serve_model_free(m);
        return s;
    }
    m->chunk = GX_SERVE_CHUNK_DEFAULT;
    gx_ctx_init(&m->ctx, 0);   /* grows on first use, then stays one block */
    if (dev && dev->pool && m->kind->cuda && (s = serve_place_on_device(m, dev, err)) != GX_OK) {
        gx_serve_model_free(m);
        return s;
    }
    if (pthread_mutex_init(&m->mu, NULL)) {
        gx_serve_model_free(m);
        return gx_err_set(err, GX_ERR_NOMEM, "%s: cannot create a mutex", path);
    }
    m->mu_ready = 1;
    *out = m;
    return GX_OK;
}

void gx_serve_model_free(gx_serve_model *m) {
    if (!m) return;
    if (m->impl) m->kind->free(m);   /* device parameters go back to the pool first */
    if (m->mu_ready) pthread_mutex_destroy(&m->mu);
    gx_serve_graphs_free(m);   /* before the stream they borrow */
    gx_ctx_free(&m->ctx);
    if (m->on_cuda) gx_cuda_exec_free(&m->exec);
    free(m->info.config_json);
    free(m->info.test_metrics_json);
    free(m);
}

const gx_serve_info *gx_serve_model_info(const gx_serve_model *m) {
    return &m->info;
}

size_t gx_serve_model_arena_bytes(gx_serve_model *m) {
    pthread_mutex_lock(&m->mu);
    size_t n = gx_arena_capacity(&m->ctx.arena);
    for (int i = 0; i < m->ctx.n_side; i++) n += gx_arena_capacity(&m->ctx.side[i].arena);   /* gx_ctx_for_parts */
    pthread_mutex_unlock(&m->mu);
    return n;
}

/* ------------------------------------------------------------- prepare */

gx_status gx_serve_prepare(const gx_serve_info *info, const void *buf, size_t n,
                           const gx_image_limits *lim, float *x, gx_serve_meta *meta, gx_err *err) {
    if (!info || !x) return gx_err_set(err, GX_ERR_INVALID, "gx_serve_prepare: NULL argument");
    gx_image raw, im;
    memset(&im, 0, sizeof im);
    gx_status s = gx_image_decode(buf, n, lim, NULL, &raw, err);
    if (s != GX_OK) return s;
    gx_pre_opts po = { info->crop_frac, info->input_size };
    s = gx_pre_prepare(&raw, &po, &im, err);
    int S = info->input_size;
    if (s == GX_OK && (im.c != 3 || im.h != S || im.w != S))
        s = gx_err_set(err, GX_ERR_SHAPE, "prepared image is %dx%dx%d, want 3x%dx%d", im.c, im.h, im.w, S, S);
    if (s == GX_OK) {
        memcpy(x, im.data, (size_t)3 * (size_t)S * (size_t)S * sizeof *x);
        if (meta) {
            memset(meta, 0, sizeof *meta);
            snprintf(meta->format, sizeof meta->format, "%s", gx_image_format_name(gx_image_sniff(buf, n)));
            meta->width = raw.w;
            meta->height = raw.h;
            meta->bands = raw.replicated ? 1 : 3;
            gx_sha256_hex(buf, n, meta->sha256);
        }
    }
    gx_image_free(&raw);
    gx_image_free(&im);
    return s;
}

/* ------------------------------------------------------------- predict */

/* The model's device error since the last sync, named "<what> on cuda:N:
 * ...". A second sync right after a failed one tells a sticky error (the
 * device is lost: the model is marked failed, see
 * gx_serve_model_device_failed) from one that cleared. Once failed, every
 * call answers the first error without touching the device. GX_ERR_IO, not
 * the stream's GX_ERR_INVALID: the routes answer INVALID as the client's
 * mistake (422), and a device error is the server's. Under m->mu. */
static gx_status serve_device_sync(gx_serve_model *m, const char *what, gx_err *err) {
    if (atomic_load(&m->device_failed))
        return gx_err_set(err, GX_ERR_IO, "%s on %s: the device failed earlier and stays failed (%s); "
                          "restart galaxyd", what, m->info.device, m->device_error);
    gx_err e2, again;
    gx_status s = gx_cuda_exec_sync(&m->exec, &e2);
    if (s == GX_OK) return s;
    if (gx_cuda_exec_sync(&m->exec, &again) != GX_OK) {
        snprintf(m->device_error, sizeof m->device_error, "%s", e2.msg);
        atomic_store(&m->device_failed, 1);
        /* Once per model: the operator's line (the access log shows 500s only). */
        fprintf(stderr, "galaxyd: model '%s' on %s: the device failed for good (%s); its requests fail and "
                "/healthz answers 503 until galaxyd is restarted\n", m->info.name, m->info.device, e2.msg);
    }
    return gx_err_set(err, GX_ERR_IO, "%s on %s: %s", what, m->info.device, e2.msg);
}

/* One chunk's rows [lo, hi) through the kind's forward on ctx: the
 * chunk is split over the threads (each row's outputs are its own: every
 * served forward is batch invariant, so the bits are those of one thread). */
typedef struct serve_job {
    gx_serve_model *m;
    const float *x;               /* the chunk's first row */
    int64_t per, side;
    const float *coords;
    const int8_t *domain;
    const gx_serve_out *out;      /* the whole request's outputs */
    int64_t row0, K;              /* the chunk's first row in out; classes */
} serve_job;

static void serve_forward_part(gx_ctx *ctx, int64_t lo, int64_t hi, void *arg) {
    const serve_job *J = arg;
    const int64_t r = J->row0 + lo, K = J->K;
    gx_serve_out o = { J->out->logits + r * K, J->out->probs + r * K, J->out->redshift + r,
                       J->out->score ? J->out->score + r : NULL };
    J->m->kind->forward(J->m, ctx, J->x + lo * J->per, J->side, J->coords ? J->coords + 2 * lo : NULL,
                        J->domain ? J->domain + lo : NULL, (int)(hi - lo), &o);
}

gx_status gx_serve_model_predict(gx_serve_model *m, const float *x, int64_t side, const float *coords, int n,
                                 gx_serve_out *out, gx_err *err) {
    return gx_serve_model_predict_ex(m, x, side, coords, NULL, n, out, err);
}

gx_status gx_serve_model_predict_ex(gx_serve_model *m, const float *x, int64_t side, const float *coords,
                                    const int8_t *domain, int n, gx_serve_out *out, gx_err *err) {
    if (!m || !x || !out || !out->logits || !out->probs || !out->redshift)
        return gx_err_set(err, GX_ERR_INVALID, "predict: NULL argument");
    if (n < 1) return gx_err_set(err, GX_ERR_INVALID, "predict: n must be >= 1 (got %d)", n);
    if (side < 8 || side > 1024)
        return gx_err_set(err, GX_ERR_INVALID, "predict: image side %lld is outside [8, 1024]", (long long)side);
    int64_t K = m->info.n_classes, per = 3 * side * side;
    /* The batcher's worker is normally the only caller; the lock makes a
     * direct call from another thread (e.g. a whole-tensor /v2 infer) wait
     * instead of sharing the arena. */
    pthread_mutex_lock(&m->mu);
    /* A failed device runs nothing more: the request fails at once. */
    gx_status st = m->on_cuda && atomic_load(&m->device_failed) ? serve_device_sync(m, "predict", err) : GX_OK;
    for (int i0 = 0; i0 < n && st == GX_OK; i0 += m->chunk) {
        int b = n - i0 < m->chunk ? n - i0 : m->chunk;
        serve_job J = { m, x + (int64_t)i0 * per, per, side, coords ? coords + 2 * (int64_t)i0 : NULL,
                        domain ? domain + i0 : NULL, out, i0, K };
        gx_serve_graph *g;
        gx_err ge;
        if (gx_serve_graph_get(m, J.domain, b, side, &g, &ge) != GX_OK) {
            /* A device error while building the graph: sync again, which
             * tells a sticky fault (the model is marked failed) from one
             * that cleared; either way this request fails with it. */
            st = serve_device_sync(m, "predict", err);
            if (st == GX_OK) st = gx_err_set(err, GX_ERR_IO, "predict on %s: %s", m->info.device, ge.msg);
            continue;
        }
        if (g) {
            gx_serve_graph_run(m, g, J.x, J.coords, b);
            st = serve_device_sync(m, "predict", err);
            gx_serve_out o = { out->logits + i0 * K, out->probs + i0 * K, out->redshift + i0,
                               out->score ? out->score + i0 : NULL };
            if (st == GX_OK) gx_serve_graph_read(m, g, b, &o);
            continue;
        }
        m->ctx.grad_enabled = 0;
        gx_ctx_for_parts(&m->ctx, b, 0, serve_forward_part, &J);
        gx_ctx_reset(&m->ctx);
        /* A device failure leaves NaN outputs (gx_to_host); the request
         * fails with the device's words rather than answering them. */
        if (m->on_cuda) st = serve_device_sync(m, "predict", err);
    }
    pthread_mutex_unlock(&m->mu);
    return st;
}

void gx_serve_model_graph_counts(gx_serve_model *m, int64_t *captures, int64_t *replays) {
    *captures = atomic_load(&m->graph_captures);
    *replays = atomic_load(&m->graph_replays);
}

void *gx_serve_model_impl(gx_serve_model *m) {
    return m->impl;
}

gx_status gx_serve_model_device_status(gx_serve_model *m, gx_err *err) {
    return m->on_cuda ? serve_device_sync(m, m->info.name, err) : GX_OK;
}

int gx_serve_model_device_failed(gx_serve_model *m, char *why, size_t n) {
    if (!atomic_load(&m->device_failed)) return 0;
    if (why && n) snprintf(why, n, "%s", m->device_error);
    return 1;
}

gx_ctx *gx_serve_model_ctx(gx_serve_model *m) {
    return &m->ctx;
}

void gx_serve_model_lock(gx_serve_model *m) {
    pthread_mutex_lock(&m->mu);
}

void gx_serve_model_unlock(gx_serve_model *m) {
    pthread_mutex_unlock(&m->mu);
}
