/*
 * gx_server_v2.c — the Open Inference Protocol (KServe v2) REST routes, so
 * that standard inference clients talk to galaxyd: health, server and model
 * metadata, and infer on JSON tensors. Errors use the protocol's own body
 * {"error": "..."} (srv_error picks it from the route's GX_RF_V2 flag).
 *
 * Infer takes already-preprocessed FP32 tensors ([N,3,S,S], optional
 * coords [N,2]); each row becomes one job on the model's batcher, the same
 * queue /v1/classify uses, so a row's outputs equal that image's answer on
 * /v1 bit for bit.
 */
#include "gx_server_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { V2_OUT_LOGITS = 1, V2_OUT_PROBS = 2, V2_OUT_REDSHIFT = 4, V2_OUT_ALL = 7 };
static const char *const v2_out_names[3] = { "logits", "probabilities", "redshift" };

/* The model named in the path, and the version when the path has one. */
static gx_registry_entry *v2_model(srv_req *r, char *msg, size_t n) {
    if (!r->reg) r->reg = gx_registry_acquire(r->srv->models);
    gx_registry_entry *e = r->reg ? gx_registry_find(r->reg, r->rm.params[0]) : NULL;
    if (!e) { snprintf(msg, n, "model '%.100s' not found", r->rm.params[0]); return NULL; }
    if (r->rm.n_params > 1 && strcmp(r->rm.params[1], e->info->version) != 0) {
        snprintf(msg, n, "model '%.100s' has no version '%.100s' (serving %s)", r->rm.params[0],
                 r->rm.params[1], e->info->version);
        return NULL;
    }
    return e;
}

static json_t *v2_tensor_meta(const char *name, int nd, const json_int_t *shape) {
    json_t *sh = json_array();
    for (int i = 0; sh && i < nd; i++) json_array_append_new(sh, json_integer(shape[i]));
    return json_pack("{s:s, s:s, s:o}", "name", name, "datatype", "FP32", "shape", sh);
}

static enum MHD_Result v2_model_metadata(srv_req *r) {
    char msg[400];
    gx_registry_entry *e = v2_model(r, msg, sizeof msg);
    if (!e) return srv_error(r, 404, "not_found", "%s", msg);
    const gx_serve_info *in = e->info;
    json_int_t S = in->input_size, K = in->n_classes;
    json_t *inputs = json_pack("[o, o]", v2_tensor_meta("input", 4, (json_int_t[]){ -1, 3, S, S }),
                               v2_tensor_meta("coords", 2, (json_int_t[]){ -1, 2 }));
    json_t *outputs = json_pack("[o, o, o]", v2_tensor_meta("logits", 2, (json_int_t[]){ -1, K }),
                                v2_tensor_meta("probabilities", 2, (json_int_t[]){ -1, K }),
                                v2_tensor_meta("redshift", 1, (json_int_t[]){ -1 }));
    return srv_json(r, 200, json_pack("{s:s, s:[s], s:s, s:o, s:o}", "name", in->name, "versions",
                                      in->version, "platform", "galaxyd-c", "inputs", inputs,
                                      "outputs", outputs));
}

/* ------------------------------------------------------------ infer: parsing */

/* Flattens data (flat, or nested to the tensor's shape) into out[want];
 * every leaf must be a number that is finite as a float. */
static int v2_flatten(const json_t *a, float *out, size_t want, size_t *got, int depth, char *msg, size_t n) {
    if (depth > 8) { snprintf(msg, n, "data nested deeper than the shape"); return 0; }
    size_t i;
    const json_t *v;
    json_array_foreach(a, i, v) {
        if (json_is_array(v)) {
            if (!v2_flatten(v, out, want, got, depth + 1, msg, n)) return 0;
            continue;
        }
        if (!json_is_number(v)) { snprintf(msg, n, "data holds a non-number"); return 0; }
        if (*got >= want) { snprintf(msg, n, "data has more than the %zu values of its shape", want); return 0; }
        float f = (float)json_number_value(v);
        if (!isfinite(f)) { snprintf(msg, n, "data holds a value that is not a finite FP32"); return 0; }
        out[(*got)++] = f;
    }
    return 1;
}

/* Checks one input tensor's datatype and shape against want[nd] (want[0] =
 * -1: any batch size, returned in *N), then flattens its data. */
static int v2_tensor(const json_t *t, const char *name, int nd, const int64_t *want, int64_t *N,
                     float *out, int max_n, char *msg, size_t n) {
    const json_t *dt = json_object_get(t, "datatype"), *sh = json_object_get(t, "shape"),
                 *data = json_object_get(t, "data");
    if (!json_is_string(dt) || strcmp(json_string_value(dt), "FP32") != 0) {
        snprintf(msg, n, "input '%s': datatype must be FP32", name);
        return 0;
    }
    if (!json_is_array(sh) || (int)json_array_size(sh) != nd) {
        snprintf(msg, n, "input '%s': shape must have %d dimensions", name, nd);
        return 0;
    }
    size_t total = 1;
    for (int d = 0; d < nd; d++) {
        const json_t *v = json_array_get(sh, (size_t)d);
        json_int_t k = json_is_integer(v) ? json_integer_value(v) : -2;
        if (d == 0 && (k < 1 || k > max_n || (*N > 0 && k != *N))) {
            snprintf(msg, n, "input '%s': batch size %lld must be in 1..%d%s", name, (long long)k, max_n,
                     *N > 0 ? " and match the other inputs" : "");
            return k > max_n ? -413 : 0;
        }
        if (d > 0 && k != want[d]) {
            snprintf(msg, n, "input '%s': dimension %d is %lld, must be %lld", name, d, (long long)k,
                     (long long)want[d]);
            return 0;
        }
        total *= (size_t)k;
        if (d == 0) *N = k;
    }
    if (!out) return 1;
    if (!json_is_array(data)) { snprintf(msg, n, "input '%s': data must be an array", name); return 0; }
    size_t got = 0;
    char m2[200] = "";
    if (!v2_flatten(data, out, total, &got, 0, m2, sizeof m2)) {
        snprintf(msg, n, "input '%s': %s", name, m2);
        return 0;
    }
    if (got != total) {
        snprintf(msg, n, "input '%s': data has %zu values, shape needs %zu", name, got, total);
        return 0;
    }
    return 1;
}

/* Which outputs the request asks for (all when it names none). */
static int v2_outputs(srv_req *r, const json_t *req, char *msg, size_t n) {
    const json_t *outs = json_object_get(req, "outputs");
    if (!outs) { r->v2_outputs = V2_OUT_ALL; return 1; }
    if (!json_is_array(outs)) { snprintf(msg, n, "'outputs' must be an array"); return 0; }
    size_t i;
    const json_t *o;
    r->v2_outputs = 0;
    json_array_foreach(outs, i, o) {
        const char *name = json_string_value(json_object_get(o, "name"));
        int k = -1;
        for (int j = 0; name && j < 3; j++)
            if (strcmp(name, v2_out_names[j]) == 0) k = j;
        if (k < 0) {
            snprintf(msg, n, "unknown output '%.64s' (logits, probabilities, redshift)", name ? name : "");
            return 0;
        }
        r->v2_outputs |= 1u << k;
    }
    if (!r->v2_outputs) r->v2_outputs = V2_OUT_ALL;
    return 1;
}

/* Finds the "input" and optional "coords" tensors; unknown names refused. */
static int v2_find_inputs(const json_t *req, const json_t **in, const json_t **co, char *msg, size_t n) {
    const json_t *inputs = json_object_get(req, "inputs");
    *in = *co = NULL;
    if (!json_is_array(inputs) || json_array_size(inputs) == 0) {
        snprintf(msg, n, "'inputs' must be a non-empty array");
        return 0;
    }
    size_t i;
    const json_t *t;
    json_array_foreach(inputs, i, t) {
        const char *name = json_string_value(json_object_get(t, "name"));
        const json_t **slot = !name ? NULL : !strcmp(name, "input") ? in : !strcmp(name, "coords") ? co : NULL;
        if (!slot) { snprintf(msg, n, "unknown input '%.64s' (input, coords)", name ? name : ""); return 0; }
        if (*slot) { snprintf(msg, n, "input '%s' given twice", name); return 0; }
        *slot = t;
    }
    if (!*in) { snprintf(msg, n, "input 'input' is missing"); return 0; }
    return 1;
}

/* ------------------------------------------------------------ infer */

static json_t *v2_output(const char *name, int N, int K, const gx_job *jobs, int which) {
    json_t *data = json_array(), *shape = json_array();
    json_array_append_new(shape, json_integer(N));
    if (which != 2) json_array_append_new(shape, json_integer(K));
    for (int i = 0; data && i < N; i++) {
        if (which == 2) { json_array_append_new(data, json_real(jobs[i].redshift)); continue; }
        const float *v = which == 0 ? jobs[i].logits : jobs[i].probs;
        for (int k = 0; k < K; k++) json_array_append_new(data, json_real(v[k]));
    }
    return json_pack("{s:s, s:o, s:s, s:o}", "name", name, "shape", shape, "datatype", "FP32", "data", data);
}

static enum MHD_Result v2_infer_finish(srv_req *r) {
    for (int i = 0; i < r->n; i++) {
        if (r->items[i].status)
            return srv_error(r, r->items[i].status, r->items[i].code, "%s", r->items[i].message);
        if (r->jobs[i].status != GX_OK)
            return srv_error_status(r, r->jobs[i].status, GX_STAGE_JOB, r->jobs[i].error);
    }
    const gx_serve_info *in = r->entry->info;
    json_t *outs = json_array();
    for (int k = 0; outs && k < 3; k++)
        if (r->v2_outputs & (1u << k)) json_array_append_new(outs, v2_output(v2_out_names[k], r->n, in->n_classes, r->jobs, k));
    json_t *o = json_pack("{s:s, s:s, s:o}", "model_name", in->name, "model_version", in->version, "outputs", outs);
    const json_t *id = json_object_get(r->doc, "id");
    if (o && json_is_string(id)) json_object_set(o, "id", (json_t *)id);
    return srv_json(r, 200, o);
}

static enum MHD_Result v2_infer_run(srv_req *r, const json_t *tin, const json_t *tco) {
    const gx_serve_info *info = r->entry->info;
    int64_t S = info->input_size, N = 0, Nc = 0;
    char msg[400];
    int maxn = r->srv->o.max_batch_parts;
    int ok = v2_tensor(tin, "input", 4, (int64_t[]){ -1, 3, S, S }, &N, NULL, maxn, msg, sizeof msg);
    if (ok == -413) return srv_error(r, 413, "payload_too_large", "%s", msg);
    if (!ok) return srv_error(r, 400, "bad_field", "%s", msg);
    gx_err err = { { 0 } };
    if (srv_alloc_items(r, (int)N, &err) != GX_OK) return srv_error(r, 500, "internal", "%s", err.msg);
    if (v2_tensor(tin, "input", 4, (int64_t[]){ -1, 3, S, S }, &N, r->x, maxn, msg, sizeof msg) != 1)
        return srv_error(r, 400, "bad_field", "%s", msg);
    if (tco) {
        float *c = malloc((size_t)N * 2 * sizeof *c);
        if (!c) return srv_error(r, 500, "internal", "out of memory");
        Nc = N;
        ok = v2_tensor(tco, "coords", 2, (int64_t[]){ -1, 2 }, &Nc, c, maxn, msg, sizeof msg);
        for (int i = 0; ok == 1 && i < N; i++) r->items[i].f.ra = c[2 * i], r->items[i].f.dec = c[2 * i + 1];
        free(c);
        if (ok != 1) return srv_error(r, 400, "bad_field", "%s", msg);
    }
    return srv_submit_and_suspend(r, v2_infer_finish);
}

static enum MHD_Result v2_infer(srv_req *r) {
    const char *ct = srv_header(r, "Content-Type");
    char type[128] = "", dummy[8];
    gx_err err = { { 0 } };
    if (ct && (gx_http_content_type(ct, type, sizeof type, "charset", dummy, sizeof dummy, &err) != GX_OK ||
               strcmp(type, "application/json") != 0))
        return srv_error(r, 415, "unsupported_media_type", "Content-Type must be application/json, got '%.100s'", ct);
    char msg[400];
    r->entry = v2_model(r, msg, sizeof msg);
    if (!r->entry) return srv_error(r, 404, "not_found", "%s", msg);
    if (r->len == 0) return srv_error(r, 400, "bad_field", "empty body");
    json_error_t je;
    r->doc = json_loadb((const char *)r->body, r->len, JSON_REJECT_DUPLICATES, &je);
    if (!r->doc) return srv_error(r, 400, "bad_field", "invalid JSON: %s (line %d)", je.text, je.line);
    if (!json_is_object(r->doc)) return srv_error(r, 400, "bad_field", "the body must be a JSON object");
    const json_t *id = json_object_get(r->doc, "id");
    if (id && !json_is_string(id)) return srv_error(r, 400, "bad_field", "'id' must be a string");
    const json_t *tin, *tco;
    if (!v2_outputs(r, r->doc, msg, sizeof msg) || !v2_find_inputs(r->doc, &tin, &tco, msg, sizeof msg))
        return srv_error(r, 400, "bad_field", "%s", msg);
    return v2_infer_run(r, tin, tco);
}

/* ------------------------------------------------------------ dispatch */

enum MHD_Result srv_v2_dispatch(srv_req *r) {
    char msg[400];
    switch (r->rm.id) {
    case GX_RT_V2_SERVER:
        return srv_json(r, 200, json_pack("{s:s, s:s, s:[]}", "name", "galaxyd", "version",
                                          GX_SERVER_VERSION, "extensions"));
    case GX_RT_V2_LIVE: {           /* a device lost for good: restart (see /healthz) */
        int live = !srv_device_failed(r->srv, msg, sizeof msg);
        return srv_json(r, live ? 200 : 503, json_pack("{s:b}", "live", live));
    }
    case GX_RT_V2_READY: {
        int ready = !atomic_load(&r->srv->draining) && !srv_device_failed(r->srv, msg, sizeof msg);
        return srv_json(r, ready ? 200 : 503, json_pack("{s:b}", "ready", ready));
    }
    case GX_RT_V2_MODEL:
        return v2_model_metadata(r);
    case GX_RT_V2_MODEL_READY: {
        gx_registry_entry *e = v2_model(r, msg, sizeof msg);
        if (!e) return srv_error(r, 404, "not_found", "%s", msg);
        return srv_json(r, 200, json_pack("{s:s, s:b}", "name", e->info->name, "ready", 1));
    }
    case GX_RT_V2_INFER:
        return v2_infer(r);
    default:
        return srv_error(r, 404, "not_found", "no route for %s %s", r->method, r->path);
    }
}
