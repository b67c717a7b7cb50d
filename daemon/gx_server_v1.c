/*
 * gx_server_v1.c — galaxyd's own routes: /healthz, /readyz, /metrics and
 * /v1/... (shapes in api/openapi.yaml).
 *
 * Classify and batch decode + preprocess in the request thread (a failure
 * answers that image alone), then hand one job per image to the model's
 * batcher (gx_server.c suspends the connection); the *_finish functions run
 * on the resumed call and turn each job's outputs into JSON, storing the
 * prediction when the client gave an object_id.
 */
#include "gx_server_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ shared */

/* The model of the request (r->reg is held until the request completes). */
static int v1_pick_model(srv_req *r, const char *name) {
    if (!r->reg) r->reg = gx_registry_acquire(r->srv->models);
    if (!r->reg) return 0;
    r->entry = name && name[0] ? gx_registry_find(r->reg, name) : gx_registry_default(r->reg);
    return r->entry != NULL;
}

json_t *srv_result_json(srv_req *r, int i, int class_index, json_t *own) {
    const gx_serve_info *info = r->entry->info;
    const gx_job *j = &r->jobs[i];
    const srv_item *it = &r->items[i];
    json_t *probs = json_array(), *named = json_object();
    for (int k = 0; probs && named && k < info->n_classes; k++) {
        json_array_append_new(probs, json_real(j->probs[k]));
        json_object_set_new(named, info->class_names[k], json_real(j->probs[k]));
    }
    int ci = class_index >= 0 && class_index < info->n_classes ? class_index : 0;
    json_t *o = json_pack("{s:s, s:s, s:s, s:i, s:s, s:o, s:o}",
                          "request_id", r->id, "model", info->name, "model_version", info->version,
                          "class_index", class_index, "class_name", info->class_names[ci],
                          "probabilities", named, "probs", probs);
    json_t *tail = json_pack("{s:b, s:{s:f, s:f, s:f, s:f, s:i}, s:{s:s, s:i, s:i, s:i, s:s}}",
                             "stored", 0,
                             "timing", "decode_ms", it->decode_ms, "queue_ms", j->queue_ms,
                             "forward_ms", j->forward_ms, "total_ms", srv_ms_since(r->t0_ns),
                             "batch_size", j->batch_size,
                             "image", "format", it->meta.format, "width", it->meta.width,
                             "height", it->meta.height, "bands", it->meta.bands,
                             "sha256", it->meta.sha256);
    /* jansson keeps insertion order, also through json_object_update: the
     * members come out in the order gx_server_impl.h gives. */
    int bad = !o || !own || !tail || json_object_update(o, own) || json_object_update(o, tail);
    json_decref(own);
    json_decref(tail);
    if (bad) {
        json_decref(o);
        return NULL;
    }
    if (it->f.object_id[0]) json_object_set_new(o, "object_id", json_string(it->f.object_id));
    if (it->f.survey[0]) json_object_set_new(o, "survey", json_string(it->f.survey));
    if (!isnan(it->f.ra)) json_object_set_new(o, "ra", json_real(it->f.ra));
    if (!isnan(it->f.dec)) json_object_set_new(o, "dec", json_real(it->f.dec));
    return o;
}

/* Item i's classification: the shared members with the model's own class
 * and its redshift (NaN for cf-inn and uda models: null, JSON has no NaN). */
static json_t *v1_classification_json(srv_req *r, int i) {
    const gx_job *j = &r->jobs[i];
    json_t *z = isfinite(j->redshift) ? json_real(j->redshift) : json_null();
    return srv_result_json(r, i, j->class_index, json_pack("{s:o}", "redshift", z));
}

/* Stores item i's prediction (only called with an object_id) and marks o. */
static gx_status v1_store(srv_req *r, int i, json_t *o, gx_err *err) {
    const gx_serve_info *info = r->entry->info;
    const gx_job *j = &r->jobs[i];
    const srv_item *it = &r->items[i];
    int64_t model_id = 0, pred_id = 0;
    char created[32] = "";
    gx_status s = gx_store_register_model(r->srv->store, info, &model_id, err);
    if (s != GX_OK) return s;
    int ci = j->class_index >= 0 && j->class_index < info->n_classes ? j->class_index : 0;
    gx_store_pred p = {
        .object_id = it->f.object_id, .survey = it->f.survey[0] ? it->f.survey : NULL,
        .ra = it->f.ra, .dec = it->f.dec, .meta = &it->meta, .model_id = model_id,
        .model_name = info->name, .model_version = info->version,
        .class_index = j->class_index, .class_name = info->class_names[ci],
        .probs = j->probs, .n_classes = info->n_classes, .redshift = j->redshift,
        .latency_ms = srv_ms_since(r->t0_ns),
    };
    s = gx_store_put_prediction(r->srv->store, &p, &pred_id, created, err);
    if (s != GX_OK) return s;
    json_object_set_new(o, "stored", json_true());
    json_object_set_new(o, "prediction_id", json_integer(pred_id));
    json_object_set_new(o, "created_at", json_string(created));
    gx_prom_counter_add(r->srv->prom, "galaxyd_predictions_stored_total", "", 1);
    return GX_OK;
}

/* ------------------------------------------------------------ /v1/classify */

static enum MHD_Result v1_classify_finish(srv_req *r) {
    srv_item *it = &r->items[0];
    gx_job *j = &r->jobs[0];
    if (it->status) return srv_error(r, it->status, it->code, "%s", it->message);
    if (j->status != GX_OK) return srv_error_status(r, j->status, GX_STAGE_JOB, j->error);
    json_t *o = v1_classification_json(r, 0);
    if (!o) return srv_error(r, 500, "internal", "out of memory building the answer");
    if (r->extra) json_object_update(o, r->extra);
    if (it->f.object_id[0]) {
        gx_err err = { { 0 } };
        if (v1_store(r, 0, o, &err) != GX_OK) {
            json_decref(o);
            return srv_error(r, 500, "internal", "storing the prediction failed: %s", err.msg);
        }
    }
    return srv_json(r, 200, o);
}

/* ?morph: 0 or 1 in *on; 0 returned when the request was answered (400). */
static int v1_morph_flag(srv_req *r, int *on) {
    const char *mq = srv_query(r, "morph");
    *on = mq && (!strcmp(mq, "1") || !strcmp(mq, "true"));
    if (mq && !*on && strcmp(mq, "0") && strcmp(mq, "false")) {
        srv_error(r, 400, "bad_field", "field 'morph': '%.32s' is not 0, 1, true or false", mq);
        return 0;
    }
    return 1;
}

typedef struct v1_extras { const void *img; size_t n; int morph; } v1_extras;

/* Members computed from the upload while the batcher runs the classifier
 * (srv_submit_overlap_suspend): ?morph=1 adds "morphology"
 * (gx_server_morph.c), a loaded cf-inn model adds "cf_inn"
 * (gx_server_cf.c). A morphology failure becomes the item's error, which
 * v1_classify_finish answers. */
static void v1_classify_extras(srv_req *r, void *ctx) {
    const v1_extras *x = ctx;
    json_t *cf = srv_cf_classify_json(r, x->img, x->n);
    if (!x->morph && !cf) return;
    r->extra = json_object();
    if (cf) json_object_set_new(r->extra, "cf_inn", cf);
    if (!x->morph) return;
    srv_item *it = &r->items[0];
    int http = 500;
    const char *code = "internal";
    gx_err err = { { 0 } };
    json_t *m = srv_morph_json(r, x->img, x->n, srv_query(r, "band"), &http, &code, &err);
    if (!m) {
        it->status = http, it->code = code;
        snprintf(it->message, sizeof it->message, "morphology: %.*s",
                 (int)(sizeof it->message - sizeof "morphology: "), err.msg);
        return;
    }
    json_object_set_new(r->extra, "morphology", m);
}

static enum MHD_Result v1_classify(srv_req *r) {
    static const srv_input_spec spec = { 1, "/v1/classify/batch", NULL, NULL, NULL };
    srv_input in;
    enum MHD_Result q = srv_input_read(r, &spec, &in);
    if (r->answered) return q;
    if (!v1_pick_model(r, in.f.model))
        return srv_error(r, 404, "not_found", "model '%s' not found (GET /v1/models lists them)", in.f.model);
    gx_err err = { { 0 } };
    if (srv_alloc_items(r, 1, &err) != GX_OK) return srv_error(r, 500, "internal", "%s", err.msg);
    r->items[0].f = in.f;
    srv_prepare(r, 0, in.img[0], in.len[0]);
    if (r->items[0].status)
        return srv_error(r, r->items[0].status, r->items[0].code, "%s", r->items[0].message);
    v1_extras x = { in.img[0], in.len[0], 0 };
    if (!v1_morph_flag(r, &x.morph)) return MHD_YES;
    return srv_submit_overlap_suspend(r, v1_classify_extras, &x, v1_classify_finish);
}

/* ------------------------------------------------------------ /v1/classify/batch */

static json_t *v1_batch_item(srv_req *r, int i) {
    srv_item *it = &r->items[i];
    json_t *o = NULL;
    srv_item_job_status(r, i);
    if (!it->status) {
        o = v1_classification_json(r, i);
        gx_err err = { { 0 } };
        if (o && it->f.object_id[0] && v1_store(r, i, o, &err) != GX_OK) {
            json_decref(o);
            o = NULL;
            char m[600];
            snprintf(m, sizeof m, "storing the prediction failed: %s", err.msg);
            srv_item_fail(it, 500, "internal", m);
        }
    }
    return srv_batch_entry(r, i, o);
}

static enum MHD_Result v1_batch_finish(srv_req *r) {
    return srv_batch_answer(r, v1_batch_item);
}

static enum MHD_Result v1_batch_run(srv_req *r, const srv_input_spec *spec, const srv_batch *b) {
    if (!v1_pick_model(r, b->base.model))
        return srv_error(r, 404, "not_found", "model '%s' not found (GET /v1/models lists them)", b->base.model);
    gx_err err = { { 0 } };
    if (srv_alloc_items(r, b->files, &err) != GX_OK) return srv_error(r, 500, "internal", "%s", err.msg);
    srv_batch_items(r, spec, b);
    return srv_submit_and_suspend(r, v1_batch_finish);
}

static enum MHD_Result v1_batch(srv_req *r) {
    const srv_input_spec spec = { r->srv->o.max_batch_parts, NULL, NULL, NULL, NULL };
    srv_batch b;
    enum MHD_Result q = srv_batch_read(r, &spec, &b);
    if (!r->answered) q = v1_batch_run(r, &spec, &b);
    srv_batch_free(&b);
    return q;
}

/* ------------------------------------------------------------ reads */

static json_t *v1_parse_json_or_empty(const char *text) {
    json_t *v = text ? json_loads(text, 0, NULL) : NULL;
    if (!json_is_object(v)) { json_decref(v); v = json_object(); }
    return v;
}

static enum MHD_Result v1_models(srv_req *r) {
    gx_registry *reg = gx_registry_acquire(r->srv->models);
    json_t *arr = json_array();
    gx_registry_entry *def = reg ? gx_registry_default(reg) : NULL;
    for (int i = 0; reg && arr && i < gx_registry_count(reg); i++) {
        gx_registry_entry *e = gx_registry_at(reg, i);
        const gx_serve_info *in = e->info;
        json_t *cls = json_array();
        for (int k = 0; cls && k < in->n_classes; k++) json_array_append_new(cls, json_string(in->class_names[k]));
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:i, s:f, s:i, s:o, s:I, s:o, s:o, s:o, s:b}",
                              "name", in->name, "kind", in->kind, "version", in->version,
                              "device", in->device, "input_size", in->input_size,
                              "crop_frac", in->crop_frac, "n_classes", in->n_classes, "classes", cls,
                              "n_params", (json_int_t)in->n_params,
                              "run_id", in->run_id >= 0 ? json_integer(in->run_id) : json_null(),
                              "test_metrics", v1_parse_json_or_empty(in->test_metrics_json),
                              "config", v1_parse_json_or_empty(in->config_json), "default", e == def);
        /* uda: the tuned rho, on the score scale of /v1/anomaly (rho / ln K). */
        if (o && isfinite(in->anomaly_threshold))
            json_object_set_new(o, "anomaly_threshold", json_real(in->anomaly_threshold));
        char why[512];
        if (o && gx_serve_model_device_failed(e->model, why, sizeof why))
            json_object_set_new(o, "device_error", json_string(why));
        if (!o || json_array_append_new(arr, o) != 0) { json_decref(arr); arr = NULL; }
    }
    gx_registry_release(reg);
    if (!arr) return srv_error(r, 500, "internal", "out of memory");
    return srv_json(r, 200, json_pack("{s:o}", "models", arr));
}

static enum MHD_Result v1_object(srv_req *r) {
    gx_err err = { { 0 } };
    json_t *o = NULL;
    gx_status s = gx_parse_ident("object_id", r->rm.params[0], &err);
    if (s == GX_OK) s = gx_store_get_object(r->srv->store, r->rm.params[0], &o, &err);
    if (s != GX_OK) return srv_error_status(r, s, GX_STAGE_STORE, err.msg);
    return srv_json(r, 200, o);
}

/* ?class= is an index or a class name of the default model. */
static int v1_class_arg(srv_req *r, const char *v, int *out, gx_err *err) {
    long long k;
    if (gx_parse_int("class", v, 0, GX_SERVE_MAX_CLASSES - 1, &k, err) == GX_OK) { *out = (int)k; return 1; }
    gx_registry *reg = gx_registry_acquire(r->srv->models);
    gx_registry_entry *e = reg ? gx_registry_default(reg) : NULL;
    int found = -1;
    for (int i = 0; e && i < e->info->n_classes; i++)
        if (strcmp(e->info->class_names[i], v) == 0) found = i;
    gx_registry_release(reg);
    if (found < 0) { gx_err_set(err, GX_ERR_INVALID, "field 'class': '%.64s' is neither a class index nor a class name", v); return 0; }
    *out = found;
    return 1;
}

static enum MHD_Result v1_predictions(srv_req *r) {
    gx_store_query q = { .survey = srv_query(r, "survey"), .class_index = -1,
                         .since = srv_query(r, "since"), .limit = 100, .cursor = srv_query(r, "cursor") };
    const char *lim = srv_query(r, "limit"), *cls = srv_query(r, "class"), *fmt = srv_query(r, "format");
    gx_err err = { { 0 } };
    long long l;
    if (lim) {
        if (gx_parse_int("limit", lim, 1, GX_STORE_LIMIT_MAX, &l, &err) != GX_OK)
            return srv_error(r, 400, "bad_field", "%s", err.msg);
        q.limit = (int)l;
    }
    if (cls && !v1_class_arg(r, cls, &q.class_index, &err)) return srv_error(r, 400, "bad_field", "%s", err.msg);
    int csv = fmt && strcmp(fmt, "csv") == 0;
    if (fmt && !csv && strcmp(fmt, "json") != 0)
        return srv_error(r, 400, "bad_field", "field 'format': '%.32s' is not json or csv", fmt);
    json_t *items = NULL;
    char next[GX_STORE_CURSOR_MAX] = "";
    gx_status s = gx_store_list_predictions(r->srv->store, &q, &items, next, sizeof next, &err);
    if (s != GX_OK) return srv_error_status(r, s, GX_STAGE_STORE, err.msg);
    if (!csv)
        return srv_json(r, 200, json_pack("{s:o, s:o}", "items", items,
                                          "next_cursor", next[0] ? json_string(next) : json_null()));
    char *text = gx_store_items_csv(items);
    json_decref(items);
    if (!text) return srv_error(r, 500, "internal", "out of memory writing CSV");
    const char *h[] = { "X-Next-Cursor", next[0] ? next : NULL, NULL };
    return srv_respond(r, 200, "text/csv; charset=utf-8", text, strlen(text), h);
}

/* ------------------------------------------------------------ health, metrics, admin */

/* Appends the batchers' statistics (they live in the batchers, not in
 * gx_prom) to the exposition text. */
static void v1_batcher_metrics(FILE *f, gx_registry *reg) {
    static const char *le[8] = { "1", "2", "4", "8", "16", "32", "64", "+Inf" };
    fputs("# HELP galaxyd_queue_depth Jobs waiting in the model's queue\n# TYPE galaxyd_queue_depth gauge\n", f);
    int n = reg ? gx_registry_count(reg) : 0;
    gx_batcher_stats *st = calloc((size_t)(n ? n : 1), sizeof *st);
    if (!st) return;
    char (*lab)[160] = calloc((size_t)(n ? n : 1), sizeof *lab);
    if (!lab) { free(st); return; }
    for (int i = 0; i < n; i++) {
        gx_registry_entry *e = gx_registry_at(reg, i);
        gx_batcher_stats_get(e->batcher, &st[i]);
        gx_prom_label_escape(e->info->name, lab[i], sizeof lab[i]);
        fprintf(f, "galaxyd_queue_depth{model=\"%s\"} %lld\n", lab[i], (long long)st[i].queue_depth);
    }
    fputs("# HELP galaxyd_batch_size Jobs per forward pass\n# TYPE galaxyd_batch_size histogram\n", f);
    for (int i = 0; i < n; i++) {
        long long cum = 0;
        for (int b = 0; b < 8; b++) {
            cum += st[i].batch_size_hist[b];
            fprintf(f, "galaxyd_batch_size_bucket{model=\"%s\",le=\"%s\"} %lld\n", lab[i], le[b], cum);
        }
        fprintf(f, "galaxyd_batch_size_sum{model=\"%s\"} %lld\ngalaxyd_batch_size_count{model=\"%s\"} %lld\n",
                lab[i], (long long)st[i].images, lab[i], (long long)st[i].batches);
    }
    static const struct { const char *name, *help; } c[] = {
        { "galaxyd_forward_seconds_total", "Time spent in forward passes" },
        { "galaxyd_batches_total", "Forward passes" },
        { "galaxyd_images_processed_total", "Images computed" },
        { "galaxyd_queue_timeouts_total", "Jobs answered 504 because their deadline passed in the queue" },
        { "galaxyd_queue_rejected_total", "Jobs refused because the queue was full" },
        { "galaxyd_cuda_graph_captures_total", "CUDA graphs captured, one per padded batch size used "
                                               "(0 on the CPU or with --cuda-graphs off)" },
        { "galaxyd_cuda_graph_replays_total", "Forward chunks replayed as a CUDA graph" },
    };
    for (int m = 0; m < 7; m++) {
        fprintf(f, "# HELP %s %s (current model registry)\n# TYPE %s counter\n", c[m].name, c[m].help, c[m].name);
        for (int i = 0; i < n; i++) {
            int64_t caps = 0, reps = 0;
            if (m >= 5) gx_serve_model_graph_counts(gx_registry_at(reg, i)->model, &caps, &reps);
            double v = m == 0 ? st[i].forward_ms_total / 1e3 : m == 1 ? (double)st[i].batches
                     : m == 2 ? (double)st[i].images : m == 3 ? (double)st[i].timeouts
                     : m == 4 ? (double)st[i].rejected : m == 5 ? (double)caps : (double)reps;
            fprintf(f, "%s{model=\"%s\"} %.17g\n", c[m].name, lab[i], v);
        }
    }
    free(lab);
    free(st);
}

static enum MHD_Result v1_metrics(srv_req *r) {
    gx_server *s = r->srv;
    gx_prom_gauge_set(s->prom, "galaxyd_inflight_requests", "", atomic_load(&s->inflight));
    char *base = gx_prom_render(s->prom);
    char *text = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&text, &n);
    if (!base || !f) {
        free(base);
        if (f) { fclose(f); free(text); }
        return srv_error(r, 500, "internal", "out of memory rendering metrics");
    }
    fputs(base, f);
    free(base);
    gx_registry *reg = gx_registry_acquire(s->models);
    v1_batcher_metrics(f, reg);
    gx_registry_release(reg);
    fclose(f);
    return srv_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, n, NULL);
}

int srv_device_failed(gx_server *s, char *msg, size_t n) {
    gx_registry *reg = gx_registry_acquire(s->models);
    int failed = 0;
    for (int i = 0; reg && !failed && i < gx_registry_count(reg); i++) {
        gx_registry_entry *e = gx_registry_at(reg, i);
        char why[512];
        if ((failed = gx_serve_model_device_failed(e->model, why, sizeof why)))
            snprintf(msg, n, "model '%s' on %s: the device failed: %s", e->info->name, e->info->device, why);
    }
    gx_registry_release(reg);
    return failed;
}

/* Up, unless a device failed for good: nothing but a restart brings the
 * models back then, and a failing liveness probe is what asks for one. */
static enum MHD_Result v1_healthz(srv_req *r) {
    char msg[768];
    if (srv_device_failed(r->srv, msg, sizeof msg)) return srv_error(r, 503, "device_failed", "%s", msg);
    return srv_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

static enum MHD_Result v1_readyz(srv_req *r) {
    char msg[768];
    if (atomic_load(&r->srv->draining))
        return srv_error(r, 503, "unavailable", "shutting down");
    if (srv_device_failed(r->srv, msg, sizeof msg)) return srv_error(r, 503, "device_failed", "%s", msg);
    gx_registry *reg = gx_registry_acquire(r->srv->models);
    int n = reg ? gx_registry_count(reg) : 0;
    gx_registry_release(reg);
    if (n < 1) return srv_error(r, 503, "unavailable", "no model loaded");
    return srv_json(r, 200, json_pack("{s:s, s:i}", "status", "ready", "models", n));
}

static enum MHD_Result v1_reload(srv_req *r) {
    gx_err err = { { 0 } };
    if (gx_server_reload(r->srv, &err) != GX_OK)
        return srv_error(r, 500, "reload_failed", "reload failed, the previous models stay: %s", err.msg);
    gx_registry *reg = gx_registry_acquire(r->srv->models);
    json_t *arr = json_array();
    for (int i = 0; reg && arr && i < gx_registry_count(reg); i++) {
        const gx_serve_info *in = gx_registry_at(reg, i)->info;
        json_array_append_new(arr, json_pack("{s:s, s:s}", "name", in->name, "version", in->version));
    }
    gx_registry_release(reg);
    if (!arr) return srv_error(r, 500, "internal", "out of memory");
    return srv_json(r, 200, json_pack("{s:b, s:o}", "reloaded", 1, "models", arr));
}

enum MHD_Result srv_v1_dispatch(srv_req *r) {
    switch (r->rm.id) {
    case GX_RT_HEALTHZ:     return v1_healthz(r);
    case GX_RT_READYZ:      return v1_readyz(r);
    case GX_RT_METRICS:     return v1_metrics(r);
    case GX_RT_MODELS:      return v1_models(r);
    case GX_RT_CLASSIFY:    return v1_classify(r);
    case GX_RT_BATCH:       return v1_batch(r);
    case GX_RT_OBJECT:      return v1_object(r);
    case GX_RT_PREDICTIONS: return v1_predictions(r);
    case GX_RT_RELOAD:      return v1_reload(r);
    case GX_RT_RUNS: case GX_RT_RUN: case GX_RT_RUN_METRICS: case GX_RT_RUN_CHECKPOINTS: case GX_RT_RUN_CONFUSION:
    case GX_RT_REPORT:      return srv_runs_dispatch(r);
    case GX_RT_ANOMALY: case GX_RT_ANOMALY_BATCH: case GX_RT_ANOMALIES:
    case GX_RT_ANOMALY_OBJECT: case GX_RT_ANOMALY_THUMB: return srv_anomaly_dispatch(r);
    case GX_RT_CF: case GX_RT_CF_GET: case GX_RT_CF_FILE: case GX_RT_CF_OVERLAY: case GX_RT_CF_DIFF:
    case GX_RT_CF_PNG: case GX_RT_GENERATE: return srv_cf_dispatch(r);
    case GX_RT_MORPH:       return srv_morph_dispatch(r);
    default:                return srv_error(r, 404, "not_found", "no route for %s %s", r->method, r->path);
    }
}
