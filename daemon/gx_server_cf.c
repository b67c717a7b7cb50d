/*
 * gx_server_cf.c — galaxyd's routes for the "cf-inn" model kind
 * (spec/cf-inn.md; shapes in api/openapi.yaml):
 *
 *   POST /v1/counterfactuals                 classify's input forms (several
 *                                            multipart `file` parts allowed) and
 *                                            `targets` = all | indices/names
 *   GET  /v1/counterfactuals/{id}            the stored answer
 *   GET  /v1/counterfactuals/{id}/{file}     {target}.png (x_cf), input.png,
 *                                            reconstruction.png, grid.png
 *   GET  /v1/counterfactuals/{id}/{target}/overlay.png   clip(x + (x_cf - x~))
 *   GET  /v1/counterfactuals/{id}/{target}/diff.png      mean over bands of
 *                                            x_cf - x~, diverging map + legend
 *   POST /v1/counterfactual.png?target=K     one x_cf as a PNG, nothing stored
 *   GET  /v1/generate.png?class=K&seed=S&n=N new galaxies of class K, tiled
 *
 * Every PNG route takes ?scale=1..16 (nearest-neighbour enlargement).
 *
 * Counterfactuals do not go through the batcher: a request decodes its
 * images, then takes the model's lock (gx_serve_model_lock: one arena per
 * model, shared with the batcher's forward passes) for the classification
 * and gx_cf_counterfactuals, and answers from the request thread. When a
 * wavelet-mamba model is loaded too, each x_cf is resized (io's bilinear
 * resize) to that model's input size and classified by it: valid_independent
 * says whether it names the target class (compared by class name, so the two
 * models need not list their classes in the same order; null when the
 * target's name is not one of its classes).
 *
 * Results are kept in the counterfactual store (gx_cf_store.h) as float
 * images, so the PNG URLs render later exactly (overlay and diff from the
 * float differences, not from 8-bit PNGs); they expire after --cf-ttl-s and
 * the oldest are evicted past --cf-cache-mb. An expired or evicted id is 404
 * with code "expired"; an unknown one 404 "not_found".
 *
 * Image layouts (before ?scale): tiles of S x S separated by CF_GAP white
 * pixels. grid.png of one input: one row [x, x~, x_cf of each target in the
 * requested order]. grid.png of a request with several inputs (its group
 * id): the CF-INN paper's Figure 3, one row per input, one column per class
 * c: the input itself where c is its predicted class (the diagonal when the
 * inputs are one per class, in class order), else its x_cf for c, gray when
 * c was not a target. diff.png: the S x S map, a CF_GAP white band, then a
 * legend strip of CF_LEGEND rows running from -range (left, blue) to +range
 * (right, red); range = max |d| (1 when d is 0) is in X-Diff-Range.
 */
#include "gx_server_impl.h"

#include "gx_cf_inn.h"
#include "gx_cf_store.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CF_GAP 2               /* white pixels between tiles */
#define CF_LEGEND 6            /* rows of the diff legend strip */
#define CF_SCALE_MAX 16
#define CF_SIDE_MAX 8192       /* largest PNG side we render (after scale) */
#define CF_GEN_MAX 64          /* images per /v1/generate.png */
#define CF_MAXK GX_CF_STORE_MAX_TARGETS

/* ------------------------------------------------------------ store */

gx_status srv_cf_open(gx_server *s, gx_err *err) {
    gx_cf_store_opts o = { (int64_t)s->o.cf_cache_mb << 20, (int64_t)s->o.cf_ttl_s * 1000 };
    return gx_cf_store_open(&s->cf_store, s->db_path, &o, err);
}

void srv_cf_close(gx_server *s) {
    if (!s) return;
    gx_cf_store_close(s->cf_store);
    s->cf_store = NULL;
}

/* ------------------------------------------------------------ arguments */

/* The route's own fields. */
typedef struct cf_args {
    char targets[1024];        /* "" = absent (all) */
    char target[160];
    int  has_target;
    int  scale;
} cf_args;

static void cf_args_fail(srv_fields *f, const char *fmt, const char *name, const char *v, size_t n) {
    char m[sizeof f->error];
    snprintf(m, sizeof m, fmt, name, (int)(n < 64 ? n : 64), v);
    srv_field_fail(f, m);
}

static int cf_extra(void *ctx, srv_fields *f, const char *name, const char *v, size_t n) {
    cf_args *a = ctx;
    if (!strcmp(name, "scale")) {
        char t[32];
        gx_err e;
        long long k = 0;
        snprintf(t, sizeof t, "%.*s", (int)(n < 31 ? n : 31), v);
        if (n >= 31 || gx_parse_int("scale", t, 1, CF_SCALE_MAX, &k, &e) != GX_OK)
            cf_args_fail(f, "field '%s': '%.*s' is not an integer in 1..16", name, v, n);
        else a->scale = (int)k;
        return 1;
    }
    int one = !strcmp(name, "target");
    char *dst = one ? a->target : a->targets;
    size_t cap = one ? sizeof a->target : sizeof a->targets;
    if (n >= cap || memchr(v, 0, n)) { cf_args_fail(f, "field '%s': too long ('%.*s...')", name, v, n); return 1; }
    memcpy(dst, v, n);
    dst[n] = 0;
    if (one) a->has_target = 1;
    return 1;
}

/* A class of the model from text: a decimal index in 0..K-1 or a class
 * name. 0 with msg set when it is neither. */
static int cf_class_of(const gx_serve_info *in, const char *t, int64_t *k, char *msg, size_t mn, const char *field) {
    char *end;
    long long v = strtoll(t, &end, 10);
    if (end != t && !*end) {
        if (v >= 0 && v < in->n_classes) { *k = v; return 1; }
        snprintf(msg, mn, "field '%s': class %lld is outside 0..%d", field, v, in->n_classes - 1);
        return 0;
    }
    for (int c = 0; c < in->n_classes; c++)
        if (!strcmp(in->class_names[c], t)) { *k = c; return 1; }
    snprintf(msg, mn, "field '%s': '%.64s' is neither a class index (0..%d) nor a class name of model '%s'", field,
             t, in->n_classes - 1, in->name);
    return 0;
}

/* "all" (or absent) -> every class; else a comma list of indices/names. */
static int cf_parse_targets(const gx_serve_info *in, const char *text, int64_t *t, int *nt, char *msg, size_t mn) {
    *nt = 0;
    if (!text[0] || !strcmp(text, "all")) {
        for (int c = 0; c < in->n_classes; c++) t[(*nt)++] = c;
        return 1;
    }
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", text);
    for (char *p = buf, *next; p; p = next) {
        next = strchr(p, ',');
        if (next) *next++ = 0;
        while (*p == ' ') p++;
        for (size_t l = strlen(p); l && p[l - 1] == ' '; l--) p[l - 1] = 0;
        int64_t k;
        if (!*p) { snprintf(msg, mn, "field 'targets': empty entry in '%.64s'", text); return 0; }
        if (!cf_class_of(in, p, &k, msg, mn, "targets")) return 0;
        for (int i = 0; i < *nt; i++)
            if (t[i] == k) { snprintf(msg, mn, "field 'targets': class %lld appears twice", (long long)k); return 0; }
        if (*nt >= CF_MAXK) { snprintf(msg, mn, "field 'targets': more than %d classes", CF_MAXK); return 0; }
        t[(*nt)++] = k;
    }
    return 1;
}

/* ?scale=, 1 when absent; 0 with an answer queued when bad. */
static int cf_scale_query(srv_req *r, int *scale) {
    const char *v = srv_query(r, "scale");
    *scale = 1;
    if (!v) return 1;
    long long k;
    gx_err e;
    if (gx_parse_int("scale", v, 1, CF_SCALE_MAX, &k, &e) != GX_OK) {
        srv_error(r, 400, "bad_field", "field 'scale': '%.32s' is not an integer in 1..%d", v, CF_SCALE_MAX);
        return 0;
    }
    *scale = (int)k;
    return 1;
}

/* ------------------------------------------------------------ model */

/* The cf-inn model of the request: by name (it must be of kind cf-inn) or
 * the first one loaded. 0 with an answer queued when there is none. */
static int cf_pick_model(srv_req *r, const char *name) {
    if (!srv_pick_kind(r, name, "cf-inn", "counterfactuals")) return 0;
    const gx_cf_model *cf = gx_serve_model_impl(r->entry->model);
    if (cf->cfg.size != r->entry->info->input_size) {
        srv_error(r, 500, "internal", "model '%s': preprocess size %d differs from the model's %lld",
                  r->entry->info->name, r->entry->info->input_size, (long long)cf->cfg.size);
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------ compute */

/* One input's counterfactuals. */
typedef struct cf_run {
    int64_t S, nt;
    int64_t targets[CF_MAXK];
    float  *x, *xrec, *xcf;    /* [3SS], [3SS], [nt,3SS] (one malloc: x) */
    gx_cf_result res[CF_MAXK];
    int64_t pred;
    float   probs[CF_MAXK], nll;
    int     indep[CF_MAXK];    /* -1 none, else 0/1 */
    char    id[GX_CF_STORE_ID_MAX];
} cf_run;

static void cf_run_free(cf_run *u) {
    free(u->x);
    u->x = u->xrec = u->xcf = NULL;
}

static gx_status cf_run_alloc(cf_run *u, int64_t S, const int64_t *targets, int nt, gx_err *err) {
    memset(u, 0, sizeof *u);
    u->S = S, u->nt = nt;
    memcpy(u->targets, targets, (size_t)nt * sizeof *targets);
    size_t px = (size_t)(3 * S * S);
    u->x = malloc((2 + (size_t)nt) * px * sizeof *u->x);
    if (!u->x) return gx_err_set(err, GX_ERR_NOMEM, "out of memory for %d counterfactuals", nt);
    u->xrec = u->x + px;
    u->xcf = u->x + 2 * px;
    for (int t = 0; t < nt; t++) u->indep[t] = -1;
    return GX_OK;
}

/* Classification and counterfactuals of u->x under the model's lock. */
static gx_status cf_compute(gx_serve_model *m, cf_run *u, gx_err *err) {
    gx_serve_model_lock(m);
    gx_ctx *ctx = gx_serve_model_ctx(m);
    gx_cf_model *cf = gx_serve_model_impl(m);
    gx_status s = gx_cf_classify(ctx, cf, u->x, 1, &u->pred, u->probs, &u->nll, NULL, err);
    if (s == GX_OK) s = gx_cf_counterfactuals(ctx, cf, u->x, u->targets, (int)u->nt, u->xrec, u->xcf, u->res, err);
    gx_ctx_reset(ctx);
    gx_err de;
    gx_status ds = gx_serve_model_device_status(m, &de);
    /* A device error wins: whatever else failed, failed on its garbage. */
    if (ds != GX_OK) s = gx_err_set(err, ds, "%s", de.msg);
    gx_serve_model_unlock(m);
    return s;
}

/* n images of side S resized to side T into dst (n*3*T*T). */
static gx_status cf_resize(const float *src, int n, int S, int T, float *dst, gx_err *err) {
    for (int i = 0; i < n; i++) {
        gx_image a, b;
        memset(&b, 0, sizeof b);
        gx_status s = gx_image_alloc(&a, 3, S, S, err);
        if (s != GX_OK) return s;
        memcpy(a.data, src + (size_t)i * 3 * S * S, (size_t)3 * S * S * sizeof *a.data);
        s = gx_pre_resize(&a, T, T, &b, err);
        if (s == GX_OK) memcpy(dst + (size_t)i * 3 * T * T, b.data, (size_t)3 * T * T * sizeof *dst);
        gx_image_free(&a);
        gx_image_free(&b);
        if (s != GX_OK) return s;
    }
    return GX_OK;
}

/* valid_independent of each x_cf: the wavelet-mamba model's class name is
 * the target's name. Best effort: on any failure the values stay null. */
static void cf_independent(const gx_registry_entry *wm, const gx_serve_info *cfi, cf_run *u) {
    const gx_serve_info *wi = wm->info;
    int T = wi->input_size, S = (int)u->S, nt = (int)u->nt, K = wi->n_classes;
    float *xs = malloc((size_t)nt * 3 * T * T * sizeof *xs);
    float *lg = malloc((size_t)nt * K * sizeof *lg), *pr = malloc((size_t)nt * K * sizeof *pr);
    float *z = malloc((size_t)nt * sizeof *z);
    gx_err err;
    gx_status s = xs && lg && pr && z ? GX_OK : GX_ERR_NOMEM;
    if (s == GX_OK && T != S) s = cf_resize(u->xcf, nt, S, T, xs, &err);
    else if (s == GX_OK) memcpy(xs, u->xcf, (size_t)nt * 3 * T * T * sizeof *xs);
    gx_serve_out out = { lg, pr, z, NULL };
    if (s == GX_OK) s = gx_serve_model_predict(wm->model, xs, T, NULL, nt, &out, &err);
    for (int t = 0; s == GX_OK && t < nt; t++) {
        int best = 0;
        for (int k = 1; k < K; k++)
            if (pr[t * K + k] > pr[t * K + best]) best = k;
        const char *want = cfi->class_names[u->targets[t]];
        int known = 0;
        for (int k = 0; k < K; k++) known |= !strcmp(wi->class_names[k], want);
        u->indep[t] = known ? !strcmp(wi->class_names[best], want) : -1;
    }
    free(xs), free(lg), free(pr), free(z);
}

/* ------------------------------------------------------------ JSON */

static json_t *cf_num(double v) {
    return isfinite(v) ? json_real(v) : json_null();
}

static void cf_iso_ms(int64_t ms, char *buf, size_t n) {
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char b[32];
    strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, n, "%s.%03dZ", b, (int)(ms % 1000));
}

static json_t *cf_target_json(const gx_serve_info *in, const cf_run *u, int t) {
    const gx_cf_result *c = &u->res[t];
    char url[GX_CF_STORE_ID_MAX + 64], ov[GX_CF_STORE_ID_MAX + 64], df[GX_CF_STORE_ID_MAX + 64];
    long long q = (long long)c->target;
    snprintf(url, sizeof url, "/v1/counterfactuals/%s/%lld.png", u->id, q);
    snprintf(ov, sizeof ov, "/v1/counterfactuals/%s/%lld/overlay.png", u->id, q);
    snprintf(df, sizeof df, "/v1/counterfactuals/%s/%lld/diff.png", u->id, q);
    return json_pack("{s:s, s:I, s:s, s:s, s:s, s:s, s:o, s:i, s:b, s:b, s:o, s:o, s:o, s:o, s:o}",
                     "id", u->id, "target", (json_int_t)c->target, "target_name", in->class_names[c->target],
                     "url", url, "overlay_url", ov, "diff_url", df, "alpha", cf_num(c->alpha),
                     "fallback", c->fallback, "valid_hidden", c->reached_hidden,
                     "valid_reencoded", c->reached_reencoded,
                     "valid_independent", u->indep[t] < 0 ? json_null() : json_boolean(u->indep[t]),
                     "msd", cf_num(c->msd_x_cf), "ssim", cf_num(c->ssim_x_cf),
                     "msd_reconstruction", cf_num(c->msd_rec_cf), "ssim_reconstruction", cf_num(c->ssim_rec_cf));
}

/* The answer's entry of one input (what GET /v1/counterfactuals/{id} returns). */
static json_t *cf_input_json(const gx_serve_info *in, const cf_run *u, int index) {
    json_t *cfs = json_array(), *probs = json_array();
    for (int t = 0; cfs && t < u->nt; t++) json_array_append_new(cfs, cf_target_json(in, u, t));
    for (int k = 0; probs && k < in->n_classes; k++) json_array_append_new(probs, cf_num(u->probs[k]));
    char b[4][GX_CF_STORE_ID_MAX + 48];
    snprintf(b[0], sizeof b[0], "/v1/counterfactuals/%s", u->id);
    snprintf(b[1], sizeof b[1], "/v1/counterfactuals/%s/input.png", u->id);
    snprintf(b[2], sizeof b[2], "/v1/counterfactuals/%s/reconstruction.png", u->id);
    snprintf(b[3], sizeof b[3], "/v1/counterfactuals/%s/grid.png", u->id);
    double msd_rec = u->nt ? u->res[0].msd_x_rec : NAN, ssim_rec = u->nt ? u->res[0].ssim_x_rec : NAN;
    return json_pack("{s:s, s:i, s:s, s:s, s:I, s:s, s:o, s:o, s:i, s:i, s:s, s:s, s:s, s:s,"
                     " s:{s:o, s:o}, s:o}",
                     "id", u->id, "index", index, "model", in->name, "model_version", in->version,
                     "class_index", (json_int_t)u->pred, "class_name", in->class_names[u->pred],
                     "log_likelihood", cf_num(-(double)u->nll), "probs", probs, "n_classes", in->n_classes,
                     "size", (int)u->S, "url", b[0], "input_url", b[1], "reconstruction_url", b[2],
                     "grid_url", b[3], "reconstruction", "msd", cf_num(msd_rec), "ssim", cf_num(ssim_rec),
                     "counterfactuals", cfs ? cfs : json_array());
}

/* ------------------------------------------------------------ POST /v1/counterfactuals */

static gx_status cf_store_run(srv_req *r, const cf_run *u, const char *group, int index, json_t *entry,
                              int64_t now, gx_err *err) {
    const gx_serve_info *in = r->entry->info;
    gx_cf_record rec;
    memset(&rec, 0, sizeof rec);
    snprintf(rec.id, sizeof rec.id, "%s", u->id);
    snprintf(rec.group_id, sizeof rec.group_id, "%s", group);
    rec.input_index = index;
    snprintf(rec.model_name, sizeof rec.model_name, "%s", in->name);
    snprintf(rec.model_version, sizeof rec.model_version, "%s", in->version);
    rec.size = (int)u->S;
    rec.source_class = u->pred;
    rec.n_targets = (int)u->nt;
    memcpy(rec.targets, u->targets, (size_t)u->nt * sizeof *u->targets);
    rec.x = u->x, rec.xrec = u->xrec, rec.xcf = u->xcf;
    rec.result_json = json_dumps(entry, JSON_COMPACT);
    if (!rec.result_json) return gx_err_set(err, GX_ERR_NOMEM, "out of memory");
    gx_status s = gx_cf_store_put(r->srv->cf_store, &rec, now, err);
    free(rec.result_json);
    return s;
}

/* Decodes input i into u->x (an error answers the request). */
static int cf_prepare(srv_req *r, const srv_input *in, int i, cf_run *u) {
    gx_err err = { { 0 } };
    gx_status s = gx_serve_prepare(r->entry->info, in->img[i], in->len[i], &r->srv->limits, u->x, NULL, &err);
    if (s == GX_OK) return 1;
    const char *code;
    int st = gx_server_status_map(s, GX_STAGE_DECODE, &code);
    if (in->n > 1) srv_error(r, st, code, "image %d: %s", i, err.msg);
    else srv_error(r, st, code, "%s", err.msg);
    return 0;
}

static enum MHD_Result cf_post_runs(srv_req *r, const srv_input *in, cf_run *runs, const int64_t *t, int nt) {
    gx_err err = { { 0 } };
    gx_registry_entry *wm = gx_registry_find_kind(r->reg, "wavelet-mamba");
    char group[17];
    gx_server_request_id_new(r->srv->id_seed, atomic_fetch_add(&r->srv->id_counter, 1), group);
    int64_t now = gx_cf_store_now_ms();
    char expires[40];
    cf_iso_ms(now + (int64_t)r->srv->o.cf_ttl_s * 1000, expires, sizeof expires);
    json_t *inputs = json_array();
    for (int i = 0; i < in->n; i++) {
        cf_run *u = &runs[i];
        if (cf_run_alloc(u, r->entry->info->input_size, t, nt, &err) != GX_OK)
            { json_decref(inputs); return srv_error(r, 500, "internal", "%s", err.msg); }
        if (in->n == 1) snprintf(u->id, sizeof u->id, "%s", group);
        else snprintf(u->id, sizeof u->id, "%s-%d", group, i);
        if (!cf_prepare(r, in, i, u)) { json_decref(inputs); return MHD_YES; }
        gx_status s = cf_compute(r->entry->model, u, &err);
        if (s != GX_OK) {
            json_decref(inputs);
            if (s == GX_ERR_INVALID) return srv_error(r, 422, "bad_field", "model '%s': %s", r->entry->info->name, err.msg);
            return srv_error(r, 500, "internal", "counterfactuals failed: %s", err.msg);
        }
        if (wm) cf_independent(wm, r->entry->info, u);
        json_t *e = cf_input_json(r->entry->info, u, i);
        gx_status ps = GX_OK;
        if (!e || (ps = cf_store_run(r, u, group, i, e, now, &err)) != GX_OK) {
            json_decref(e);
            json_decref(inputs);
            if (!e) return srv_error(r, 500, "internal", "out of memory building the answer");
            return srv_error(r, ps == GX_ERR_NOMEM ? 413 : 500, ps == GX_ERR_NOMEM ? "payload_too_large" : "internal",
                             "storing the counterfactuals failed: %s", err.msg);
        }
        json_array_append_new(inputs, e);
    }
    char grid[80];
    snprintf(grid, sizeof grid, "/v1/counterfactuals/%s/grid.png", group);
    return srv_json(r, 200, json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:s, s:o}", "request_id", r->id, "id", group,
                                      "model", r->entry->info->name, "model_version", r->entry->info->version,
                                      "independent_model", wm ? json_string(wm->info->name) : json_null(),
                                      "grid_url", grid, "expires_at", expires, "inputs", inputs));
}

static const char *const cf_post_fields[] = { "targets", NULL };

static enum MHD_Result cf_post(srv_req *r) {
    cf_args a;
    memset(&a, 0, sizeof a);
    const srv_input_spec spec = { r->srv->o.max_batch_parts < SRV_INPUT_MAX ? r->srv->o.max_batch_parts
                                  : SRV_INPUT_MAX, NULL, cf_post_fields, cf_extra, &a };
    srv_input in;
    enum MHD_Result q = srv_input_read(r, &spec, &in);
    if (r->answered) return q;
    if (!cf_pick_model(r, in.f.model)) return MHD_YES;
    int64_t t[CF_MAXK];
    int nt = 0;
    char msg[300];
    if (!cf_parse_targets(r->entry->info, a.targets, t, &nt, msg, sizeof msg))
        return srv_error(r, 400, "bad_field", "%s", msg);
    cf_run *runs = calloc((size_t)in.n, sizeof *runs);
    if (!runs) return srv_error(r, 500, "internal", "out of memory");
    q = cf_post_runs(r, &in, runs, t, nt);
    for (int i = 0; i < in.n; i++) cf_run_free(&runs[i]);
    free(runs);
    return q;
}

/* ------------------------------------------------------------ images */

/* A float RGB canvas (CHW), filled with a background value. */
typedef struct cf_canvas { float *d; int h, w; } cf_canvas;

static int cf_canvas_new(cf_canvas *c, int h, int w, float bg) {
    c->h = h, c->w = w;
    c->d = malloc((size_t)3 * h * w * sizeof *c->d);
    if (!c->d) return 0;
    for (size_t i = 0; i < (size_t)3 * h * w; i++) c->d[i] = bg;
    return 1;
}

/* Copies an S x S CHW tile to (y0, x0). */
static void cf_canvas_put(cf_canvas *c, const float *img, int S, int y0, int x0) {
    for (int ch = 0; ch < 3; ch++)
        for (int y = 0; y < S; y++)
            memcpy(c->d + ((size_t)ch * c->h + y0 + y) * c->w + x0, img + ((size_t)ch * S + y) * S,
                   (size_t)S * sizeof *img);
}

/* PNG of a CHW canvas enlarged scale times (nearest), with extra headers. */
static enum MHD_Result cf_send_png(srv_req *r, const cf_canvas *c, int scale, const char *const *extra) {
    if ((int64_t)c->h * scale > CF_SIDE_MAX || (int64_t)c->w * scale > CF_SIDE_MAX)
        return srv_error(r, 400, "bad_field", "field 'scale': %dx%d at scale %d exceeds %d pixels a side", c->w, c->h,
                         scale, CF_SIDE_MAX);
    int H = c->h * scale, W = c->w * scale;
    float *big = c->d;
    if (scale > 1) {
        big = malloc((size_t)3 * H * W * sizeof *big);
        if (!big) return srv_error(r, 500, "internal", "out of memory");
        for (int ch = 0; ch < 3; ch++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++)
                    big[((size_t)ch * H + y) * W + x] = c->d[((size_t)ch * c->h + y / scale) * c->w + x / scale];
    }
    uint8_t *png = NULL;
    size_t n = 0;
    gx_err err = { { 0 } };
    gx_status s = gx_png_encode(big, 3, H, W, &png, &n, &err);
    if (big != c->d) free(big);
    if (s != GX_OK) return srv_error(r, 500, "internal", "PNG encoding failed: %s", err.msg);
    return srv_respond(r, 200, "image/png", (char *)png, n, extra);
}

static enum MHD_Result cf_send_tile(srv_req *r, const float *img, int S, int scale, const char *const *extra) {
    cf_canvas c = { (float *)img, S, S };
    return cf_send_png(r, &c, scale, extra);
}

/* ------------------------------------------------------------ GET stored */

/* Loads a stored result (an error answers the request). */
static int cf_load(srv_req *r, const char *id, gx_cf_record *rec) {
    gx_err err = { { 0 } };
    gx_status s = gx_cf_store_get(r->srv->cf_store, id, gx_cf_store_now_ms(), rec, &err);
    if (s == GX_OK) return 1;
    if (s == GX_ERR_NOTFOUND) srv_error(r, 404, rec->dropped[0] ? "expired" : "not_found", "%s", err.msg);
    else srv_error(r, 500, "internal", "%s", err.msg);
    return 0;
}

/* The position of a URL's {target} among the stored targets (an index or a
 * target_name from the stored answer); -1 with a 404 answered. */
static int cf_target_pos(srv_req *r, const gx_cf_record *rec, const char *t) {
    char *end;
    long long v = strtoll(t, &end, 10);
    int numeric = end != t && !*end;
    json_t *doc = numeric ? NULL : json_loads(rec->result_json, 0, NULL);
    json_t *cfs = json_object_get(doc, "counterfactuals");
    for (int i = 0; i < rec->n_targets; i++) {
        const char *name = json_string_value(json_object_get(json_array_get(cfs, (size_t)i), "target_name"));
        if ((numeric && rec->targets[i] == v) || (!numeric && name && !strcmp(name, t))) {
            json_decref(doc);
            return i;
        }
    }
    json_decref(doc);
    srv_error(r, 404, "not_found", "counterfactual '%s' has no target '%.64s' (it was computed for %d target%s: "
              "GET /v1/counterfactuals/%s lists them)", rec->id, t, rec->n_targets, rec->n_targets == 1 ? "" : "s",
              rec->id);
    return -1;
}

static enum MHD_Result cf_get(srv_req *r) {
    const char *id = r->rm.params[0];
    char ids[SRV_INPUT_MAX][GX_CF_STORE_ID_MAX];
    int n = 0;
    gx_err err = { { 0 } };
    if (gx_cf_store_group(r->srv->cf_store, id, ids, SRV_INPUT_MAX, &n, &err) == GX_OK && n > 1) {
        json_t *inputs = json_array();
        for (int i = 0; i < n && i < SRV_INPUT_MAX; i++) {
            gx_cf_record rec;
            if (!cf_load(r, ids[i], &rec)) { json_decref(inputs); return MHD_YES; }
            json_array_append_new(inputs, json_loads(rec.result_json, 0, NULL));
            gx_cf_record_free(&rec);
        }
        return srv_json(r, 200, json_pack("{s:s, s:o}", "id", id, "inputs", inputs));
    }
    gx_cf_record rec;
    if (!cf_load(r, id, &rec)) return MHD_YES;
    json_t *o = json_loads(rec.result_json, 0, NULL);
    gx_cf_record_free(&rec);
    if (!o) return srv_error(r, 500, "internal", "stored answer of '%s' is not JSON", id);
    return srv_json(r, 200, o);
}

/* One row: x, x~, then every stored x_cf. */
static enum MHD_Result cf_grid_row(srv_req *r, const gx_cf_record *rec, int scale) {
    int S = rec->size, cols = 2 + rec->n_targets;
    size_t px = (size_t)3 * S * S;
    cf_canvas c;
    if (!cf_canvas_new(&c, S, cols * S + (cols - 1) * CF_GAP, 1.0f)) return srv_error(r, 500, "internal", "out of memory");
    cf_canvas_put(&c, rec->x, S, 0, 0);
    cf_canvas_put(&c, rec->xrec, S, 0, S + CF_GAP);
    for (int t = 0; t < rec->n_targets; t++) cf_canvas_put(&c, rec->xcf + t * px, S, 0, (2 + t) * (S + CF_GAP));
    enum MHD_Result q = cf_send_png(r, &c, scale, NULL);
    free(c.d);
    return q;
}

/* Figure 3: one row per input, one column per class. */
static enum MHD_Result cf_grid_figure(srv_req *r, char (*ids)[GX_CF_STORE_ID_MAX], int n, int scale) {
    gx_cf_record *recs = calloc((size_t)n, sizeof *recs);
    if (!recs) return srv_error(r, 500, "internal", "out of memory");
    enum MHD_Result q = MHD_YES;
    int ok = 1, K = 0, S = 0;
    for (int i = 0; ok && i < n; i++) {
        ok = cf_load(r, ids[i], &recs[i]);
        json_t *doc = ok ? json_loads(recs[i].result_json, 0, NULL) : NULL;
        int k = (int)json_integer_value(json_object_get(doc, "n_classes"));
        json_decref(doc);
        if (ok && (k < 1 || (K && k != K) || (S && recs[i].size != S))) {
            q = srv_error(r, 500, "internal", "stored results of '%s' disagree on classes or size", ids[i]);
            ok = 0;
        }
        K = k, S = recs[i].size;
    }
    cf_canvas c = { NULL, 0, 0 };
    if (ok && !cf_canvas_new(&c, n * S + (n - 1) * CF_GAP, K * S + (K - 1) * CF_GAP, 1.0f)) {
        q = srv_error(r, 500, "internal", "out of memory");
        ok = 0;
    }
    float *gray = ok ? malloc((size_t)3 * S * S * sizeof *gray) : NULL;
    for (int i = 0; gray && i < 3 * S * S; i++) gray[i] = 0.5f;
    if (ok && !gray) { q = srv_error(r, 500, "internal", "out of memory"); ok = 0; }
    for (int i = 0; ok && i < n; i++)
        for (int col = 0; col < K; col++) {
            const float *tile = gray;
            if (col == recs[i].source_class) tile = recs[i].x;
            for (int t = 0; col != recs[i].source_class && t < recs[i].n_targets; t++)
                if (recs[i].targets[t] == col) tile = recs[i].xcf + (size_t)t * 3 * S * S;
            cf_canvas_put(&c, tile, S, i * (S + CF_GAP), col * (S + CF_GAP));
        }
    if (ok) q = cf_send_png(r, &c, scale, NULL);
    free(gray);
    free(c.d);
    for (int i = 0; i < n; i++) gx_cf_record_free(&recs[i]);
    free(recs);
    return q;
}

static enum MHD_Result cf_grid(srv_req *r, const char *id, int scale) {
    char ids[SRV_INPUT_MAX][GX_CF_STORE_ID_MAX];
    int n = 0;
    gx_err err = { { 0 } };
    if (gx_cf_store_group(r->srv->cf_store, id, ids, SRV_INPUT_MAX, &n, &err) == GX_OK && n > 1)
        return cf_grid_figure(r, ids, n < SRV_INPUT_MAX ? n : SRV_INPUT_MAX, scale);
    gx_cf_record rec;
    if (!cf_load(r, id, &rec)) return MHD_YES;
    enum MHD_Result q = cf_grid_row(r, &rec, scale);
    gx_cf_record_free(&rec);
    return q;
}

/* {file}: grid.png, input.png, reconstruction.png or {target}.png. */
static enum MHD_Result cf_get_file(srv_req *r) {
    const char *id = r->rm.params[0], *file = r->rm.params[1];
    int scale;
    if (!cf_scale_query(r, &scale)) return MHD_YES;
    size_t n = strlen(file);
    if (n < 5 || strcmp(file + n - 4, ".png") != 0)
        return srv_error(r, 404, "not_found", "no file '%.64s' (grid.png, input.png, reconstruction.png or "
                         "{target}.png)", file);
    if (!strcmp(file, "grid.png")) return cf_grid(r, id, scale);
    gx_cf_record rec;
    if (!cf_load(r, id, &rec)) return MHD_YES;
    enum MHD_Result q;
    if (!strcmp(file, "input.png")) {
        q = cf_send_tile(r, rec.x, rec.size, scale, NULL);
    } else if (!strcmp(file, "reconstruction.png")) {
        q = cf_send_tile(r, rec.xrec, rec.size, scale, NULL);
    } else {
        char t[GX_ROUTE_PARAM_MAX];
        snprintf(t, sizeof t, "%.*s", (int)(n - 4), file);
        int pos = cf_target_pos(r, &rec, t);
        q = pos < 0 ? MHD_YES : cf_send_tile(r, rec.xcf + (size_t)pos * 3 * rec.size * rec.size, rec.size, scale, NULL);
    }
    gx_cf_record_free(&rec);
    return q;
}

/* clip(x + (x_cf - x~)): the counterfactual change laid on the real input. */
static enum MHD_Result cf_overlay(srv_req *r, const gx_cf_record *rec, int pos, int scale) {
    int S = rec->size;
    size_t px = (size_t)3 * S * S;
    float *o = malloc(px * sizeof *o);
    if (!o) return srv_error(r, 500, "internal", "out of memory");
    const float *xc = rec->xcf + (size_t)pos * px;
    for (size_t i = 0; i < px; i++) {
        float v = rec->x[i] + (xc[i] - rec->xrec[i]);
        o[i] = v < 0 ? 0 : v > 1 ? 1 : v;
    }
    enum MHD_Result q = cf_send_tile(r, o, S, scale, NULL);
    free(o);
    return q;
}

/* Mean over bands of x_cf - x~ in the diverging map, with a legend strip. */
static enum MHD_Result cf_diff(srv_req *r, const gx_cf_record *rec, int pos, int scale) {
    int S = rec->size;
    size_t hw = (size_t)S * S;
    const float *xc = rec->xcf + (size_t)pos * 3 * hw;
    float *d = malloc(hw * sizeof *d);
    cf_canvas c = { NULL, 0, 0 };
    if (!d || !cf_canvas_new(&c, S + CF_GAP + CF_LEGEND, S, 1.0f)) {
        free(d);
        return srv_error(r, 500, "internal", "out of memory");
    }
    double range = 0;
    for (size_t i = 0; i < hw; i++) {
        d[i] = ((xc[i] - rec->xrec[i]) + (xc[hw + i] - rec->xrec[hw + i]) + (xc[2 * hw + i] - rec->xrec[2 * hw + i])) / 3;
        if (fabs(d[i]) > range) range = fabs(d[i]);
    }
    if (range == 0) range = 1;
    uint8_t rgb[3];
    for (int y = 0; y < S + CF_GAP + CF_LEGEND; y++)
        for (int x = 0; x < S; x++) {
            if (y >= S && y < S + CF_GAP) continue;
            double t = y < S ? d[(size_t)y * S + x] / range : -1 + 2 * (x + 0.5) / S;
            gx_png_diverging_color(t, rgb);
            for (int ch = 0; ch < 3; ch++) c.d[((size_t)ch * c.h + y) * c.w + x] = rgb[ch] / 255.0f;
        }
    char rs[32];
    snprintf(rs, sizeof rs, "%.6g", range);
    const char *h[] = { "X-Diff-Range", rs, NULL };
    enum MHD_Result q = cf_send_png(r, &c, scale, h);
    free(d);
    free(c.d);
    return q;
}

static enum MHD_Result cf_get_target(srv_req *r, int diff) {
    int scale;
    if (!cf_scale_query(r, &scale)) return MHD_YES;
    gx_cf_record rec;
    if (!cf_load(r, r->rm.params[0], &rec)) return MHD_YES;
    int pos = cf_target_pos(r, &rec, r->rm.params[1]);
    enum MHD_Result q = MHD_YES;
    if (pos >= 0) q = diff ? cf_diff(r, &rec, pos, scale) : cf_overlay(r, &rec, pos, scale);
    gx_cf_record_free(&rec);
    return q;
}

/* ------------------------------------------------------------ POST /v1/counterfactual.png */

static const char *const cf_png_fields[] = { "target", "scale", NULL };

static enum MHD_Result cf_png(srv_req *r) {
    cf_args a;
    memset(&a, 0, sizeof a);
    a.scale = 1;
    const srv_input_spec spec = { 1, NULL, cf_png_fields, cf_extra, &a };
    srv_input in;
    enum MHD_Result q = srv_input_read(r, &spec, &in);
    if (r->answered) return q;
    if (!a.has_target) return srv_error(r, 400, "bad_field", "field 'target': missing (a class index or name)");
    if (!cf_pick_model(r, in.f.model)) return MHD_YES;
    int64_t t;
    char msg[300];
    if (!cf_class_of(r->entry->info, a.target, &t, msg, sizeof msg, "target"))
        return srv_error(r, 400, "bad_field", "%s", msg);
    cf_run u;
    gx_err err = { { 0 } };
    if (cf_run_alloc(&u, r->entry->info->input_size, &t, 1, &err) != GX_OK)
        return srv_error(r, 500, "internal", "%s", err.msg);
    if (cf_prepare(r, &in, 0, &u)) {
        gx_status s = cf_compute(r->entry->model, &u, &err);
        if (s != GX_OK) {
            q = srv_error(r, s == GX_ERR_INVALID ? 422 : 500, s == GX_ERR_INVALID ? "bad_field" : "internal",
                          "counterfactual failed: %s", err.msg);
        } else {
            char h[4][32];
            snprintf(h[0], sizeof h[0], "%lld", (long long)u.pred);
            snprintf(h[1], sizeof h[1], "%lld", (long long)t);
            snprintf(h[2], sizeof h[2], "%d", u.res[0].reached_hidden);
            snprintf(h[3], sizeof h[3], "%d", u.res[0].reached_reencoded);
            const char *hd[] = { "X-Source-Class", h[0], "X-Target-Class", h[1], "X-Valid-Hidden", h[2],
                                 "X-Valid-Reencoded", h[3], NULL };
            q = cf_send_tile(r, u.xcf, (int)u.S, a.scale, hd);
        }
    }
    cf_run_free(&u);
    return q;
}

/* ------------------------------------------------------------ GET /v1/generate.png */

static enum MHD_Result cf_generate(srv_req *r) {
    const char *cls = srv_query(r, "class"), *seed = srv_query(r, "seed"), *nv = srv_query(r, "n");
    int scale;
    if (!cf_scale_query(r, &scale)) return MHD_YES;
    if (!cls) return srv_error(r, 400, "bad_field", "field 'class': missing (a class index or name)");
    long long sd = 0, n = 1;
    gx_err err = { { 0 } };
    if (seed && gx_parse_int("seed", seed, 0, 9007199254740991LL, &sd, &err) != GX_OK)
        return srv_error(r, 400, "bad_field", "%s", err.msg);
    if (nv && gx_parse_int("n", nv, 1, CF_GEN_MAX, &n, &err) != GX_OK)
        return srv_error(r, 400, "bad_field", "%s (at most %d images a request)", err.msg, CF_GEN_MAX);
    if (!cf_pick_model(r, srv_query(r, "model"))) return MHD_YES;
    int64_t k;
    char msg[300];
    if (!cf_class_of(r->entry->info, cls, &k, msg, sizeof msg, "class")) return srv_error(r, 400, "bad_field", "%s", msg);
    int S = r->entry->info->input_size, cols = (int)ceil(sqrt((double)n)), rows = (int)((n + cols - 1) / cols);
    float *img = malloc((size_t)n * 3 * S * S * sizeof *img);
    cf_canvas c = { NULL, 0, 0 };
    if (!img || !cf_canvas_new(&c, rows * S + (rows - 1) * CF_GAP, cols * S + (cols - 1) * CF_GAP, 1.0f)) {
        free(img);
        return srv_error(r, 500, "internal", "out of memory");
    }
    gx_serve_model_lock(r->entry->model);
    gx_status s = gx_cf_generate(gx_serve_model_ctx(r->entry->model), gx_serve_model_impl(r->entry->model), k,
                                 (uint64_t)sd, n, img, &err);
    gx_ctx_reset(gx_serve_model_ctx(r->entry->model));
    gx_err de;
    gx_status ds = gx_serve_model_device_status(r->entry->model, &de);
    if (ds != GX_OK) s = gx_err_set(&err, ds, "%s", de.msg);   /* a device error wins (cf_compute) */
    gx_serve_model_unlock(r->entry->model);
    enum MHD_Result q;
    if (s != GX_OK) {
        q = srv_error(r, 500, "internal", "generation failed: %s", err.msg);
    } else {
        for (int i = 0; i < n; i++)
            cf_canvas_put(&c, img + (size_t)i * 3 * S * S, S, (i / cols) * (S + CF_GAP), (i % cols) * (S + CF_GAP));
        q = cf_send_png(r, &c, scale, NULL);
    }
    free(img);
    free(c.d);
    return q;
}

/* ------------------------------------------------------------ classify's cf_inn */

json_t *srv_cf_classify_json(srv_req *r, const void *img, size_t n) {
    gx_registry_entry *e = r->reg ? gx_registry_find_kind(r->reg, "cf-inn") : NULL;
    if (!e) return NULL;
    const gx_serve_info *in = e->info;
    int S = in->input_size, K = in->n_classes;
    float *x = malloc((size_t)3 * S * S * sizeof *x), lg[CF_MAXK], pr[CF_MAXK], z = NAN, nll = NAN;
    gx_err err = { { 0 } };
    gx_status s = x ? gx_serve_prepare(in, img, n, &r->srv->limits, x, NULL, &err) : GX_ERR_NOMEM;
    gx_serve_out out = { lg, pr, &z, &nll };
    if (s == GX_OK) s = gx_serve_model_predict(e->model, x, S, NULL, 1, &out, &err);
    free(x);
    if (s != GX_OK) return NULL;
    int best = 0;
    for (int k = 1; k < K; k++)
        if (pr[k] > pr[best]) best = k;
    return json_pack("{s:s, s:i, s:s, s:o}", "model", in->name, "class_index", best, "class_name",
                     in->class_names[best], "log_likelihood", cf_num(-(double)nll));
}

/* ------------------------------------------------------------ dispatch */

enum MHD_Result srv_cf_dispatch(srv_req *r) {
    if (!r->srv->cf_store) return srv_error(r, 503, "unavailable", "the counterfactual store is not open");
    switch (r->rm.id) {
    case GX_RT_CF:         return cf_post(r);
    case GX_RT_CF_GET:     return cf_get(r);
    case GX_RT_CF_FILE:    return cf_get_file(r);
    case GX_RT_CF_OVERLAY: return cf_get_target(r, 0);
    case GX_RT_CF_DIFF:    return cf_get_target(r, 1);
    case GX_RT_CF_PNG:     return cf_png(r);
    case GX_RT_GENERATE:   return cf_generate(r);
    default:               return srv_error(r, 404, "not_found", "no route for %s %s", r->method, r->path);
    }
}
