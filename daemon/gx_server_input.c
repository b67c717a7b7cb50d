/*
 * gx_server_input.c — how galaxyd's image routes read their input, in one
 * place so that /v1/classify, /v1/anomaly, /v1/counterfactuals,
 * /v1/counterfactual.png and /v1/morphology (and the two batch routes) take
 * the same forms with the same rules:
 *
 *   fields       ra, dec, object_id, survey, model from the query, form
 *                parts or JSON members (srv_field_set), plus a route's own
 *                names through its srv_extra_fn; the first bad value is kept
 *                in srv_fields.error and answered as 400 bad_field
 *   one request  a raw image body, multipart/form-data with 'file' parts, or
 *                JSON {"image": base64, ...} (srv_input_read)
 *   batch        multipart/form-data: the fields before a 'file' part are its
 *                own, query fields and a 'model' part are everyone's
 *                (srv_batch_read, srv_batch_items), and the answer is
 *                {request_id, model, model_version, results[]} with a
 *                status per image (srv_batch_answer)
 *
 * Each image is decoded and preprocessed in the request thread exactly as
 * the trainer does (srv_prepare); a failure answers that image alone.
 */
#include "gx_server_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SRV_ACCEPTED "image/png, image/jpeg, application/fits, image/fits, " \
                     "application/octet-stream, multipart/form-data, application/json"
/* Parts a one-image multipart body may hold: its file and room for fields. */
#define SRV_ONE_PARTS 16

/* ------------------------------------------------------------ fields */

void srv_fields_init(srv_fields *f) {
    memset(f, 0, sizeof *f);
    f->ra = f->dec = NAN;
}

void srv_field_fail(srv_fields *f, const char *msg) {
    if (!f->error[0]) srv_strcpy(f->error, sizeof f->error, msg);
}

/* The index of a field name (0 ra, 1 dec, 2 object_id, 3 survey, 4 model)
 * or -1; ra and dec are the numeric ones. */
static int in_field_index(const char *name) {
    static const char *known[] = { "ra", "dec", "object_id", "survey", "model" };
    for (int i = 0; i < 5; i++)
        if (strcmp(name, known[i]) == 0) return i;
    return -1;
}

int srv_field_set(srv_fields *f, const char *name, const char *value, size_t len) {
    int k = in_field_index(name);
    if (k < 0) return 0;
    char v[512];
    if (len >= sizeof v || memchr(value, 0, len)) {
        char m[96];
        snprintf(m, sizeof m, "field '%s': too long or holds a NUL byte", name);
        srv_field_fail(f, m);
        return 1;
    }
    memcpy(v, value, len);
    v[len] = 0;
    gx_err err = { { 0 } };
    gx_status s = GX_OK;
    double d = NAN;
    switch (k) {
    case 0:
        s = gx_parse_double("ra", v, 0, 360, &d, &err);
        if (s == GX_OK && d >= 360) s = gx_err_set(&err, GX_ERR_INVALID, "field 'ra': %s is not in [0, 360)", v);
        if (s == GX_OK) f->ra = d;
        break;
    case 1:
        s = gx_parse_double("dec", v, -90, 90, &d, &err);
        if (s == GX_OK) f->dec = d;
        break;
    case 2: case 3:
        s = gx_parse_ident(name, v, &err);
        if (s == GX_OK) srv_strcpy(k == 2 ? f->object_id : f->survey, SRV_FIELD_MAX, v);
        break;
    case 4:
        s = gx_parse_ident("model", v, &err);
        if (s == GX_OK && len >= sizeof f->model)
            s = gx_err_set(&err, GX_ERR_INVALID, "field 'model': longer than %zu characters",
                           sizeof f->model - 1);
        if (s == GX_OK) memcpy(f->model, v, len + 1);
        break;
    }
    if (s != GX_OK) srv_field_fail(f, err.msg);
    return 1;
}

void srv_fields_from_query(srv_req *r, srv_fields *f) {
    static const char *keys[] = { "ra", "dec", "object_id", "survey", "model" };
    for (int i = 0; i < 5; i++) {
        const char *v = srv_query(r, keys[i]);
        if (v) srv_field_set(f, keys[i], v, strlen(v));
    }
}

static int in_is_extra(const srv_input_spec *spec, const char *name) {
    for (int i = 0; spec->extra && spec->extra[i]; i++)
        if (!strcmp(spec->extra[i], name)) return 1;
    return 0;
}

/* A form or JSON field: the route's own, else classify's (1 when known). */
static int in_field(const srv_input_spec *spec, srv_fields *f, const char *name, const char *v, size_t n) {
    if (in_is_extra(spec, name)) return spec->fn(spec->ctx, f, name, v, n);
    return srv_field_set(f, name, v, n);
}

/* Every image's defaults: the query's fields, classify's and the route's. */
static void in_defaults(srv_req *r, const srv_input_spec *spec, srv_fields *f) {
    srv_fields_init(f);
    srv_fields_from_query(r, f);
    for (int i = 0; spec->extra && spec->extra[i]; i++) {
        const char *v = srv_query(r, spec->extra[i]);
        if (v) spec->fn(spec->ctx, f, spec->extra[i], v, strlen(v));
    }
}

/* ------------------------------------------------------------ one image */

void srv_item_fail(srv_item *it, int status, const char *code, const char *msg) {
    it->status = status;
    it->code = code;
    srv_strcpy(it->message, sizeof it->message, msg);
}

void srv_prepare(srv_req *r, int i, const void *img, size_t n) {
    srv_item *it = &r->items[i];
    const gx_serve_info *info = r->entry->info;
    size_t per = (size_t)3 * (size_t)info->input_size * (size_t)info->input_size;
    if (n == 0) { srv_item_fail(it, 400, "bad_field", "field 'file': the image is empty"); return; }
    gx_err err = { { 0 } };
    int64_t t0 = gx_batcher_now_ns();
    gx_status s = gx_serve_prepare(info, img, n, &r->srv->limits, r->x + (size_t)i * per, &it->meta, &err);
    it->decode_ms = srv_ms_since(t0);
    if (s != GX_OK) {
        it->status = gx_server_status_map(s, GX_STAGE_DECODE, &it->code);
        srv_strcpy(it->message, sizeof it->message, err.msg);
    }
}

/* A failed gx_multipart_parse: GX_ERR_NOMEM is its "more parts than
 * allowed" (a size limit, 413); anything else is a malformed body (400). */
static enum MHD_Result in_multipart_error(srv_req *r, gx_status st, const gx_err *err) {
    if (st == GX_ERR_NOMEM) return srv_error(r, 413, "payload_too_large", "multipart body: %s", err->msg);
    return srv_error(r, 400, "bad_field", "multipart body: %s", err->msg);
}

/* The count of 'file' parts a route takes. */
static enum MHD_Result in_check_files(srv_req *r, const srv_input_spec *spec, int files) {
    if (spec->batch_route && files != 1)
        return srv_error(r, 400, "bad_field", "field 'file': expected exactly one part named 'file', got %d"
                         " (use %s for many)", files, spec->batch_route);
    if (files == 0) return srv_error(r, 400, "bad_field", "field 'file': no part named 'file'");
    if (files > spec->max_images)
        return srv_error(r, 413, "payload_too_large", "%d file parts exceed the limit of %d for this route", files,
                         spec->max_images);
    return MHD_YES;
}

static enum MHD_Result in_multipart(srv_req *r, const char *boundary, const srv_input_spec *spec, srv_input *in) {
    int max = spec->max_images;
    int maxp = spec->batch_route ? SRV_ONE_PARTS : 4 * max + 16, np = 0, files = 0;
    gx_mpart *parts = calloc((size_t)maxp, sizeof *parts);
    if (!parts) return srv_error(r, 500, "internal", "out of memory");
    gx_err err = { { 0 } };
    gx_status st = gx_multipart_parse(r->body, r->len, boundary, parts, maxp, &np, &err);
    if (st != GX_OK) {
        free(parts);
        return in_multipart_error(r, st, &err);
    }
    for (int i = 0; i < np; i++) {
        if (strcmp(parts[i].name, "file") != 0) {
            in_field(spec, &in->f, parts[i].name, (const char *)parts[i].data, parts[i].len);
            continue;
        }
        if (files < max && files < SRV_INPUT_MAX) {
            in->img[files] = parts[i].data;
            in->len[files] = parts[i].len;
        }
        files++;
    }
    free(parts);
    enum MHD_Result q = in_check_files(r, spec, files);
    if (!r->answered) in->n = files;
    return q;
}

/* A JSON value as field text: numbers and strings as themselves, an array
 * of them joined with commas (targets: [1, "Merging"]). 0 for other types. */
static int in_json_text(json_t *v, char *buf, size_t n, const char **s, size_t *len) {
    if (json_is_string(v)) { *s = json_string_value(v); *len = json_string_length(v); return 1; }
    if (json_is_number(v)) {
        snprintf(buf, n, json_is_integer(v) ? "%.0f" : "%.17g", json_number_value(v));
        *s = buf, *len = strlen(buf);
        return 1;
    }
    if (!json_is_array(v) || json_array_size(v) == 0) return 0;
    size_t k = 0, i;
    json_t *e;
    json_array_foreach(v, i, e) {
        char one[160];
        const char *t;
        size_t tl;
        if (json_is_array(e) || !in_json_text(e, one, sizeof one, &t, &tl) || k + tl + 2 >= n) return 0;
        if (k) buf[k++] = ',';
        memcpy(buf + k, t, tl);
        k += tl;
    }
    buf[k] = 0;
    *s = buf, *len = k;
    return 1;
}

/* "field 'x': unknown (accepted: image, ra, ..., <the route's own>)". */
static enum MHD_Result in_json_unknown(srv_req *r, const srv_input_spec *spec, const char *key) {
    char names[256] = "";
    size_t k = 0;
    for (int i = 0; spec->extra && spec->extra[i] && k < sizeof names; i++)
        k += (size_t)snprintf(names + k, sizeof names - k, ", %s", spec->extra[i]);
    return srv_error(r, 400, "bad_field", "field '%.64s': unknown (accepted: image, ra, dec, object_id, survey, "
                     "model%s)", key, names);
}

/* Types are strict as in api/openapi.yaml (ra and dec numbers, classify's
 * other fields strings): unlike query and form fields, JSON has types of
 * its own. A route's own fields may also be numbers or arrays of them. */
static enum MHD_Result in_json(srv_req *r, const srv_input_spec *spec, srv_input *in) {
    json_error_t je;
    json_t *doc = json_loadb((const char *)r->body, r->len, JSON_REJECT_DUPLICATES, &je);
    if (!doc) return srv_error(r, 400, "bad_field", "JSON body: %s (line %d)", je.text, je.line);
    r->doc = doc;
    if (!json_is_object(doc)) return srv_error(r, 400, "bad_field", "JSON body: expected an object");
    const char *key;
    json_t *v;
    json_object_foreach(doc, key, v) {
        if (!strcmp(key, "image")) continue;
        int extra = in_is_extra(spec, key), k = in_field_index(key);
        if (!extra && k < 0) return in_json_unknown(r, spec, key);
        char buf[1024];
        const char *s;
        size_t n;
        int numeric = !extra && k <= 1;
        if (!in_json_text(v, buf, sizeof buf, &s, &n) || (numeric && !json_is_number(v)) ||
            (!numeric && !extra && !json_is_string(v)))
            return srv_error(r, 400, "bad_field", "field '%.64s': must be a JSON %s", key,
                             numeric ? "number" : extra ? "string, number or array of them" : "string");
        in_field(spec, &in->f, key, s, n);
    }
    json_t *im = json_object_get(doc, "image");
    if (!json_is_string(im)) return srv_error(r, 400, "bad_field", "field 'image': missing or not a base64 string");
    gx_err err = { { 0 } };
    size_t n = 0;
    if (gx_base64_decode(json_string_value(im), json_string_length(im), &r->aux, &n, &err) != GX_OK)
        return srv_error(r, 400, "bad_field", "field 'image': %s", err.msg);
    in->img[0] = r->aux;
    in->len[0] = n;
    in->n = 1;
    return MHD_YES;
}

static int in_is_raw(const char *t) {
    return !strcmp(t, "image/png") || !strcmp(t, "image/jpeg") || !strcmp(t, "image/jpg") ||
           !strcmp(t, "application/fits") || !strcmp(t, "image/fits") || !strcmp(t, "application/octet-stream");
}

enum MHD_Result srv_input_read(srv_req *r, const srv_input_spec *spec, srv_input *in) {
    memset(in, 0, sizeof *in);
    in_defaults(r, spec, &in->f);
    const char *ct = srv_header(r, "Content-Type");
    if (!ct || !ct[0])
        return srv_error(r, 415, "unsupported_media_type", "missing Content-Type; accepted: " SRV_ACCEPTED);
    char type[128], boundary[128];
    gx_err err = { { 0 } };
    if (gx_http_content_type(ct, type, sizeof type, "boundary", boundary, sizeof boundary, &err) != GX_OK)
        return srv_error(r, 415, "unsupported_media_type", "Content-Type: %s; accepted: " SRV_ACCEPTED, err.msg);
    int raw = in_is_raw(type), mp = !strcmp(type, "multipart/form-data"), js = !strcmp(type, "application/json");
    if (!raw && !mp && !js)
        return srv_error(r, 415, "unsupported_media_type", "Content-Type '%.100s' is not accepted; accepted: "
                         SRV_ACCEPTED, type);
    if (r->len == 0)
        return srv_error(r, 400, "bad_field", "empty body: send %s image", spec->max_images == 1 ? "one" : "an");
    enum MHD_Result q = MHD_YES;
    if (mp) q = in_multipart(r, boundary, spec, in);
    else if (js) q = in_json(r, spec, in);
    else { in->img[0] = r->body; in->len[0] = r->len; in->n = 1; }
    if (r->answered) return q;
    if (in->f.error[0]) return srv_error(r, 400, "bad_field", "%s", in->f.error);
    for (int i = 0; i < in->n; i++) {
        if (in->len[i] > 0) continue;
        if (in->n == 1) return srv_error(r, 400, "bad_field", "field 'file': the image is empty");
        return srv_error(r, 400, "bad_field", "field 'file': image %d is empty", i);
    }
    return MHD_YES;
}

/* ------------------------------------------------------------ batch */

static enum MHD_Result in_batch_parts(srv_req *r, const srv_input_spec *spec, srv_batch *b) {
    in_defaults(r, spec, &b->base);
    for (int i = 0; i < b->np; i++) {
        if (strcmp(b->parts[i].name, "file") == 0) b->files++;
        else if (strcmp(b->parts[i].name, "model") == 0)
            srv_field_set(&b->base, "model", (const char *)b->parts[i].data, b->parts[i].len);
    }
    if (b->base.error[0]) return srv_error(r, 400, "bad_field", "%s", b->base.error);
    if (b->files == 0) return srv_error(r, 400, "bad_field", "field 'file': no part named 'file'");
    if (b->files > spec->max_images)
        return srv_error(r, 413, "payload_too_large", "%d file parts exceed the limit of %d", b->files,
                         spec->max_images);
    return MHD_YES;
}

enum MHD_Result srv_batch_read(srv_req *r, const srv_input_spec *spec, srv_batch *b) {
    memset(b, 0, sizeof *b);
    const char *ct = srv_header(r, "Content-Type");
    char type[128] = "", boundary[128] = "";
    gx_err err = { { 0 } };
    if (!ct || gx_http_content_type(ct, type, sizeof type, "boundary", boundary, sizeof boundary, &err) != GX_OK ||
        strcmp(type, "multipart/form-data") != 0)
        return srv_error(r, 415, "unsupported_media_type", "batch requests need multipart/form-data "
                         "(parts named 'file'); got '%.100s'", ct ? ct : "");
    if (r->len == 0) return srv_error(r, 400, "bad_field", "empty body");
    /* Field parts count too: room for every per-image field of every file. */
    int n_extra = 0;
    while (spec->extra && spec->extra[n_extra]) n_extra++;
    int maxp = (4 + n_extra) * spec->max_images + 16;
    b->parts = calloc((size_t)maxp, sizeof *b->parts);
    if (!b->parts) return srv_error(r, 500, "internal", "out of memory");
    gx_status st = gx_multipart_parse(r->body, r->len, boundary, b->parts, maxp, &b->np, &err);
    if (st != GX_OK) return in_multipart_error(r, st, &err);
    return in_batch_parts(r, spec, b);
}

/* A part's file name as valid JSON text (ASCII; others become '?'). */
static void in_filename(char *out, size_t n, const char *in) {
    size_t k = 0;
    for (; *in && k + 1 < n; in++)
        out[k++] = ((unsigned char)*in < 0x20 || (unsigned char)*in >= 0x7f) ? '?' : *in;
    out[k] = 0;
}

void srv_batch_items(srv_req *r, const srv_input_spec *spec, const srv_batch *b) {
    srv_fields next = b->base;
    int k = 0;
    for (int i = 0; i < b->np; i++) {
        const gx_mpart *p = &b->parts[i];
        if (strcmp(p->name, "file") != 0) {
            if (strcmp(p->name, "model") != 0) in_field(spec, &next, p->name, (const char *)p->data, p->len);
            continue;
        }
        srv_item *it = &r->items[k];
        it->f = next;
        in_filename(it->filename, sizeof it->filename, p->filename);
        if (next.error[0]) srv_item_fail(it, 400, "bad_field", next.error);
        else srv_prepare(r, k, p->data, p->len);
        next = b->base;
        k++;
    }
}

void srv_batch_free(srv_batch *b) {
    free(b->parts);
    b->parts = NULL;
}

/* ------------------------------------------------------------ answers */

void srv_item_job_status(srv_req *r, int i) {
    srv_item *it = &r->items[i];
    const gx_job *j = &r->jobs[i];
    if (it->status || j->status == GX_OK) return;
    it->status = gx_server_status_map(j->status, GX_STAGE_JOB, &it->code);
    srv_strcpy(it->message, sizeof it->message, j->error[0] ? j->error : gx_status_str(j->status));
}

json_t *srv_batch_entry(srv_req *r, int i, json_t *o) {
    const srv_item *it = &r->items[i];
    if (o) json_object_set_new(o, "status", json_integer(200));
    else o = json_pack("{s:i, s:{s:s, s:s}}", "status", it->status, "error", "code",
                       it->code ? it->code : "internal", "message", it->message[0] ? it->message : "error");
    if (!o) return NULL;
    json_object_set_new(o, "index", json_integer(i));
    if (it->filename[0]) json_object_set_new(o, "filename", json_string(it->filename));
    return o;
}

enum MHD_Result srv_batch_answer(srv_req *r, json_t *(*entry)(srv_req *r, int i)) {
    json_t *results = json_array();
    for (int i = 0; results && i < r->n; i++) {
        json_t *o = entry(r, i);
        if (!o || json_array_append_new(results, o) != 0) { json_decref(results); results = NULL; }
    }
    if (!results) return srv_error(r, 500, "internal", "out of memory building the answer");
    const gx_serve_info *info = r->entry->info;
    return srv_json(r, 200, json_pack("{s:s, s:s, s:s, s:o}", "request_id", r->id, "model", info->name,
                                      "model_version", info->version, "results", results));
}

/* ------------------------------------------------------------ models */

int srv_pick_kind(srv_req *r, const char *name, const char *kind, const char *need) {
    if (!r->reg) r->reg = gx_registry_acquire(r->srv->models);
    r->entry = NULL;
    if (r->reg) r->entry = name && name[0] ? gx_registry_find(r->reg, name) : gx_registry_find_kind(r->reg, kind);
    if (!r->entry) {
        if (name && name[0]) srv_error(r, 404, "not_found", "model '%s' not found (GET /v1/models lists them)", name);
        else srv_error(r, 404, "not_found", "no model of kind '%s' is loaded (GET /v1/models lists them)", kind);
        return 0;
    }
    if (strcmp(r->entry->info->kind, kind) != 0) {
        srv_error(r, 400, "bad_field", "field 'model': '%s' is a %s model; %s need a %s model",
                  r->entry->info->name, r->entry->info->kind, need, kind);
        return 0;
    }
    return 1;
}
