/*
 * gx_server_anomaly.c — galaxyd's anomaly routes for the "uda" model kind
 * (DeepAstroUDA, spec/uda.md; shapes in api/openapi.yaml):
 *
 *   POST /v1/anomaly          one cutout, the input forms of /v1/classify
 *                             plus `domain` = source | target (default target)
 *   POST /v1/anomaly/batch    many `file` parts (fields before a part are its own)
 *   GET  /v1/anomalies        stored scores, highest first; json | csv | votable
 *   GET  /v1/anomalies/{object_id}   one object's scores, newest first
 *   GET  /v1/anomalies/{object_id}/thumb.png[?version=N]   the stored
 *                             thumbnail of a version (default: the newest
 *                             version that has one), image/png
 *
 * An answer is the known-class prediction, the entropy H, the score H / ln K
 * in [0, 1], the model's tuned threshold on the same scale and is_anomaly =
 * score > threshold. Jobs go through the model's batcher like classify's
 * (gx_job.source_domain picks the BN set, gx_job.score carries H / ln K).
 *
 * Storage: with an object_id the score is written through
 * trainer/gx_anomaly_store.h — the store `galaxy-train score` writes too, so
 * online and offline scores share one table and one idempotency rule (the
 * same object, image and model is one row: re-sending answers the stored
 * id). A stored score also stores a thumbnail of the model's input (the
 * job's x, see gx_anomaly_store.h), which list and history rows link as
 * thumbnail_url. The store wants a gx_db of its own (one connection per thread of
 * use), so this file keeps one connection beside gx_store's, behind a mutex,
 * opened at server start (srv_anomaly_open) and closed at stop. A model's
 * served_models id is looked up once per (name, version) and cached.
 *
 * The input is read as classify's (gx_server_input.c: same forms, same
 * field rules) with one more field of the routes' own, `domain`, which
 * classify's JSON form would refuse as unknown.
 */
#include "gx_server_impl.h"

#include "gx_anomaly_store.h"
#include "gx_db.h"
#include "gx_votable.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define AN_MODEL_CACHE 32          /* (name, version) -> served_models.id */
#define AN_HISTORY_MAX 100         /* scores in GET /v1/anomalies/{object_id} */
#define AN_VOTABLE_TYPE "application/x-votable+xml"

typedef struct an_model_id {
    char    name[64], version[65];
    int64_t id;
} an_model_id;

struct srv_anomaly {
    pthread_mutex_t mu;            /* the connection is used by one thread at a time */
    gx_db *db;
    an_model_id cache[AN_MODEL_CACHE];
    int n_cache;
};

gx_status srv_anomaly_open(gx_server *s, gx_err *err) {
    struct srv_anomaly *a = calloc(1, sizeof *a);
    if (!a) return gx_err_set(err, GX_ERR_NOMEM, "anomaly store: out of memory");
    if (pthread_mutex_init(&a->mu, NULL)) {
        free(a);
        return gx_err_set(err, GX_ERR_NOMEM, "anomaly store: cannot create a mutex");
    }
    gx_status st = gx_db_open(&a->db, s->db_path, err);
    if (st != GX_OK) {
        pthread_mutex_destroy(&a->mu);
        free(a);
        return st;
    }
    s->anomaly = a;
    return GX_OK;
}

void srv_anomaly_close(gx_server *s) {
    struct srv_anomaly *a = s ? s->anomaly : NULL;
    if (!a) return;
    gx_db_close(a->db);
    pthread_mutex_destroy(&a->mu);
    free(a);
    s->anomaly = NULL;
}

/* ------------------------------------------------------------ fields */

/* The one field of these routes beyond classify's: the BN domain,
 * source | target, into srv_fields.source. */
static int an_domain(void *ctx, srv_fields *f, const char *name, const char *v, size_t n) {
    (void)ctx, (void)name;
    if (n == 6 && memcmp(v, "source", 6) == 0) {
        f->source = 1;
    } else if (n == 6 && memcmp(v, "target", 6) == 0) {
        f->source = 0;
    } else {
        char m[96];
        snprintf(m, sizeof m, "field 'domain': '%.*s' is not source or target", (int)(n < 32 ? n : 32), v);
        srv_field_fail(f, m);
    }
    return 1;
}

static const char *const an_fields[] = { "domain", NULL };

/* ------------------------------------------------------------ model */

/* The uda model of the request: by name (it must be of kind uda) or the
 * first uda model. 0 with an answer queued when there is none. */
static int an_pick_model(srv_req *r, const char *name) {
    return srv_pick_kind(r, name, "uda", "anomaly scores");
}

/* served_models.id of the request's model (cached per name + version). */
static gx_status an_model_id_get(gx_server *s, const gx_serve_info *in, int64_t *id, gx_err *err) {
    struct srv_anomaly *a = s->anomaly;
    for (int i = 0; i < a->n_cache; i++)
        if (!strcmp(a->cache[i].version, in->version) && !strcmp(a->cache[i].name, in->name)) {
            *id = a->cache[i].id;
            return GX_OK;
        }
    json_t *cls = json_array();
    for (int k = 0; cls && k < in->n_classes; k++) json_array_append_new(cls, json_string(in->class_names[k]));
    char *cj = cls ? json_dumps(cls, JSON_COMPACT) : NULL;
    json_decref(cls);
    if (!cj) return gx_err_set(err, GX_ERR_NOMEM, "out of memory");
    gx_status st = gx_anomaly_model_id(a->db, in->name, in->version, in->path, in->anomaly_threshold, cj, id, err);
    free(cj);
    if (st == GX_OK && a->n_cache < AN_MODEL_CACHE) {
        an_model_id *c = &a->cache[a->n_cache++];
        srv_strcpy(c->name, sizeof c->name, in->name);
        srv_strcpy(c->version, sizeof c->version, in->version);
        c->id = *id;
    }
    return st;
}

/* ------------------------------------------------------------ answers */

/* The anomaly score of a job, bit for bit as `galaxy-train score` stores
 * it: H of the model's p (the job's probs are its float values) summed in
 * double as gx_uda_predict does, rounded to float like its entropy output,
 * over ln K in double. (gx_job.score holds the same value rounded to float.) */
static double an_score(const gx_job *j, int K) {
    double h = 0;
    for (int k = 0; k < K; k++) h -= (double)j->probs[k] * log((double)j->probs[k] + 1e-5);
    return (double)(float)h / log((double)K);
}

/* The predicted known class: the first largest p, as gx_uda_predict picks. */
static int an_class(const gx_job *j, int K) {
    int a = 0;
    for (int k = 1; k < K; k++)
        if (j->probs[k] > j->probs[a]) a = k;
    return a;
}

/* Item i's answer (the job is done and fine): the shared members with the
 * known class, then entropy, score, threshold, is_anomaly and domain. */
static json_t *an_result_json(srv_req *r, int i) {
    const gx_serve_info *info = r->entry->info;
    const gx_job *j = &r->jobs[i];
    double score = an_score(j, info->n_classes), thr = info->anomaly_threshold;
    json_t *own = json_pack("{s:f, s:f, s:o, s:b, s:s}",
                            "entropy", score * log((double)info->n_classes), "score", score,
                            "threshold", isfinite(thr) ? json_real(thr) : json_null(),
                            "is_anomaly", isfinite(thr) && score > thr,
                            "domain", j->source_domain ? "source" : "target");
    return srv_result_json(r, i, an_class(j, info->n_classes), own);
}

/* Stores item i's score (it has an object_id) and marks o. */
static gx_status an_store(srv_req *r, int i, json_t *o, gx_err *err) {
    const gx_serve_info *info = r->entry->info;
    const gx_job *j = &r->jobs[i];
    const srv_item *it = &r->items[i];
    struct srv_anomaly *a = r->srv->anomaly;
    int ci = an_class(j, info->n_classes);
    double thr = info->anomaly_threshold, score = an_score(j, info->n_classes);
    gx_anomaly_rec rec = {
        .external_id = it->f.object_id, .survey = it->f.survey[0] ? it->f.survey : NULL,
        .image_sha256 = it->meta.sha256, .format = it->meta.format, .width = it->meta.width,
        .height = it->meta.height, .bands = it->meta.bands, .ra = it->f.ra, .dec = it->f.dec,
        .score = score, .threshold = thr, .is_anomaly = isfinite(thr) && score > thr,
        .class_index = ci, .class_name = info->class_names[ci],
        .thumb_x = j->x, .thumb_side = info->input_size,
    };
    pthread_mutex_lock(&a->mu);
    gx_status s = an_model_id_get(r->srv, info, &rec.model_id, err);
    if (s == GX_OK) s = gx_anomaly_put(a->db, &rec, err);
    pthread_mutex_unlock(&a->mu);
    if (s != GX_OK) return s;
    json_object_set_new(o, "stored", json_true());
    json_object_set_new(o, "anomaly_id", json_integer(rec.id));
    json_object_set_new(o, "created_at", json_string(rec.created_at));
    return GX_OK;
}

/* Item i's answer or its error (batch style: status + error). */
static json_t *an_item(srv_req *r, int i, int batch) {
    srv_item *it = &r->items[i];
    srv_item_job_status(r, i);
    json_t *o = NULL;
    if (!it->status) {
        o = an_result_json(r, i);
        gx_err err = { { 0 } };
        if (o && it->f.object_id[0] && an_store(r, i, o, &err) != GX_OK) {
            json_decref(o);
            o = NULL;
            it->status = 500, it->code = "internal";
            snprintf(it->message, sizeof it->message, "storing the score failed: %.300s", err.msg);
        }
        if (!o && !it->status) srv_item_fail(it, 500, "internal", "out of memory");
    }
    return batch ? srv_batch_entry(r, i, o) : o;
}

/* ------------------------------------------------------------ POST /v1/anomaly */

static enum MHD_Result an_one_finish(srv_req *r) {
    json_t *o = an_item(r, 0, 0);
    if (!o) return srv_error(r, r->items[0].status, r->items[0].code, "%s", r->items[0].message);
    return srv_json(r, 200, o);
}

static enum MHD_Result an_one(srv_req *r) {
    static const srv_input_spec spec = { 1, "/v1/anomaly/batch", an_fields, an_domain, NULL };
    srv_input in;
    enum MHD_Result q = srv_input_read(r, &spec, &in);
    if (r->answered) return q;
    if (!an_pick_model(r, in.f.model)) return MHD_YES;
    gx_err err = { { 0 } };
    if (srv_alloc_items(r, 1, &err) != GX_OK) return srv_error(r, 500, "internal", "%s", err.msg);
    r->items[0].f = in.f;
    r->jobs[0].source_domain = (int8_t)in.f.source;
    srv_prepare(r, 0, in.img[0], in.len[0]);
    if (r->items[0].status)
        return srv_error(r, r->items[0].status, r->items[0].code, "%s", r->items[0].message);
    return srv_submit_and_suspend(r, an_one_finish);
}

/* ------------------------------------------------------------ POST /v1/anomaly/batch */

static json_t *an_batch_item(srv_req *r, int i) {
    return an_item(r, i, 1);
}

static enum MHD_Result an_batch_finish(srv_req *r) {
    return srv_batch_answer(r, an_batch_item);
}

static enum MHD_Result an_batch_run(srv_req *r, const srv_input_spec *spec, const srv_batch *b) {
    if (!an_pick_model(r, b->base.model)) return MHD_YES;
    gx_err err = { { 0 } };
    if (srv_alloc_items(r, b->files, &err) != GX_OK) return srv_error(r, 500, "internal", "%s", err.msg);
    srv_batch_items(r, spec, b);
    for (int k = 0; k < b->files; k++) r->jobs[k].source_domain = (int8_t)r->items[k].f.source;
    return srv_submit_and_suspend(r, an_batch_finish);
}

static enum MHD_Result an_batch(srv_req *r) {
    const srv_input_spec spec = { r->srv->o.max_batch_parts, NULL, an_fields, an_domain, NULL };
    srv_batch b;
    enum MHD_Result q = srv_batch_read(r, &spec, &b);
    if (!r->answered) q = an_batch_run(r, &spec, &b);
    srv_batch_free(&b);
    return q;
}


/* ------------------------------------------------------------ GET /v1/anomalies */

static json_t *an_num_or_null(double v) {
    return isfinite(v) ? json_real(v) : json_null();
}

static json_t *an_str_or_null(const char *s) {
    return s && s[0] ? json_string(s) : json_null();
}

/* The row's thumbnail URL, or null. Object ids are [A-Za-z0-9._:+-]
 * (gx_parse_ident), all of which stand for themselves in a path. */
static json_t *an_thumb_url(const gx_anomaly_row *w) {
    if (!w->has_thumb) return json_null();
    char url[256];
    snprintf(url, sizeof url, "/v1/anomalies/%s/thumb.png?version=%d", w->object_id, w->version);
    return json_string(url);
}

static json_t *an_row_json(const gx_anomaly_row *w) {
    json_t *o = json_pack("{s:I, s:s, s:o, s:o, s:o, s:f, s:o, s:b, s:o, s:o, s:s, s:s, s:s}",
                     "id", (json_int_t)w->id, "object_id", w->object_id, "survey", an_str_or_null(w->survey),
                     "ra", an_num_or_null(w->ra), "dec", an_num_or_null(w->dec), "score", w->score,
                     "threshold", an_num_or_null(w->threshold), "is_anomaly", w->is_anomaly,
                     "class_index", w->class_index >= 0 ? json_integer(w->class_index) : json_null(),
                     "class_name", an_str_or_null(w->class_name), "image_sha256", w->image_sha256,
                     "model_version", w->model_version, "created_at", w->created_at);
    if (o) {
        json_object_set_new(o, "version", json_integer(w->version));
        json_object_set_new(o, "thumbnail_url", an_thumb_url(w));
    }
    return o;
}

static json_t *an_rows_json(const gx_anomaly_row *rows, int n) {
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++) {
        json_t *o = an_row_json(&rows[i]);
        if (!o || json_array_append_new(a, o) != 0) { json_decref(a); a = NULL; }
    }
    return a;
}

/* One CSV field (RFC 4180: quoted when it holds , " CR or LF). */
static void an_csv_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\r\n")) { fputs(s, f); return; }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static void an_csv_num(FILE *f, double v) {
    if (isfinite(v)) fprintf(f, "%.17g", v);
}

#define AN_COLUMNS "id,object_id,survey,ra,dec,score,threshold,is_anomaly,class_index,class_name," \
                   "image_sha256,model_version,created_at"

static void an_csv(FILE *f, const gx_anomaly_row *rows, int n) {
    fputs(AN_COLUMNS "\r\n", f);
    for (int i = 0; i < n; i++) {
        const gx_anomaly_row *w = &rows[i];
        fprintf(f, "%lld,", (long long)w->id);
        an_csv_field(f, w->object_id);
        fputc(',', f);
        an_csv_field(f, w->survey);
        fputc(',', f);
        an_csv_num(f, w->ra);
        fputc(',', f);
        an_csv_num(f, w->dec);
        fputc(',', f);
        an_csv_num(f, w->score);
        fputc(',', f);
        an_csv_num(f, w->threshold);
        fprintf(f, ",%d,", w->is_anomaly ? 1 : 0);
        if (w->class_index >= 0) fprintf(f, "%d", w->class_index);
        fputc(',', f);
        an_csv_field(f, w->class_name);
        fprintf(f, ",%s,%s,%s\r\n", w->image_sha256, w->model_version, w->created_at);
    }
}

static const gx_vot_field an_vot_fields[] = {
    { "id", GX_VOT_LONG, "meta.record", NULL, "Score row id" },
    { "object_id", GX_VOT_CHAR, "meta.id;meta.main", NULL, "The caller's object id" },
    { "survey", GX_VOT_CHAR, "meta.dataset", NULL, "Survey name given with the cutout" },
    { "ra", GX_VOT_DOUBLE, "pos.eq.ra;meta.main", "deg", "Right ascension (as sent)" },
    { "dec", GX_VOT_DOUBLE, "pos.eq.dec;meta.main", "deg", "Declination (as sent)" },
    { "score", GX_VOT_DOUBLE, "stat.value", NULL, "Anomaly score H / ln K in [0, 1]" },
    { "threshold", GX_VOT_DOUBLE, "stat.value", NULL, "The model's threshold rho / ln K" },
    { "is_anomaly", GX_VOT_BOOLEAN, "meta.code", NULL, "score > threshold" },
    { "class_index", GX_VOT_INT, "meta.code.class", NULL, "Predicted known class" },
    { "class_name", GX_VOT_CHAR, "src.class", NULL, "Predicted known class name" },
    { "image_sha256", GX_VOT_CHAR, "meta.id", NULL, "SHA-256 of the uploaded image" },
    { "model_version", GX_VOT_CHAR, "meta.version", NULL, "SHA-256 of the checkpoint" },
    { "created_at", GX_VOT_CHAR, "time.creation", NULL, "When the score was stored (UTC, ISO-8601)" },
};

static gx_status an_votable(FILE *f, const gx_anomaly_row *rows, int n, const char *next, gx_err *err) {
    gx_vot w;
    gx_vot_begin(&w, f, "anomalies", "galaxyd stored anomaly scores (DeepAstroUDA), highest score first",
                 an_vot_fields, (int)(sizeof an_vot_fields / sizeof an_vot_fields[0]));
    if (next[0]) gx_vot_info(&w, "next_cursor", next);
    for (int i = 0; i < n; i++) {
        const gx_anomaly_row *r = &rows[i];
        gx_vot_row(&w);
        gx_vot_int(&w, r->id);
        gx_vot_str(&w, r->object_id);
        gx_vot_str(&w, r->survey[0] ? r->survey : NULL);
        gx_vot_double(&w, r->ra);
        gx_vot_double(&w, r->dec);
        gx_vot_double(&w, r->score);
        gx_vot_double(&w, r->threshold);
        gx_vot_bool(&w, r->is_anomaly);
        if (r->class_index >= 0) gx_vot_int(&w, r->class_index);
        else gx_vot_str(&w, NULL);   /* never: every stored score has a class */
        gx_vot_str(&w, r->class_name[0] ? r->class_name : NULL);
        gx_vot_str(&w, r->image_sha256);
        gx_vot_str(&w, r->model_version);
        gx_vot_str(&w, r->created_at);
    }
    return gx_vot_end(&w, err);
}

/* since/until: YYYY-MM-DD[THH:MM[:SS[.fff]]][Z|+HH:MM|-HH:MM], checked here
 * because SQLite's date parser also takes "now" and bare Julian day numbers. */
static int an_time_ok(const char *s) {
    static const char *const shapes[] = { "dddd-dd-dd", "dddd-dd-ddTdd:dd", "dddd-dd-ddTdd:dd:dd" };
    size_t n = strlen(s), base = 0;
    for (int k = 2; k >= 0 && !base; k--) {
        size_t L = strlen(shapes[k]);
        if (n < L) continue;
        size_t i = 0;
        while (i < L && (shapes[k][i] == 'd' ? (s[i] >= '0' && s[i] <= '9') : s[i] == shapes[k][i])) i++;
        if (i == L) base = L;
    }
    if (!base) return 0;
    int mo = (s[5] - '0') * 10 + (s[6] - '0'), d = (s[8] - '0') * 10 + (s[9] - '0');
    if (mo < 1 || mo > 12 || d < 1 || d > 31) return 0;
    if (base > 10 && ((s[11] - '0') * 10 + (s[12] - '0') > 23 || (s[14] - '0') * 10 + (s[15] - '0') > 59)) return 0;
    if (base > 16 && (s[17] - '0') * 10 + (s[18] - '0') > 59) return 0;
    const char *p = s + base;
    if (base == 19 && *p == '.') {
        p++;
        int digits = 0;
        while (*p >= '0' && *p <= '9') p++, digits++;
        if (digits < 1 || digits > 9) return 0;
    }
    if (!*p || (p[0] == 'Z' && !p[1])) return 1;
    if (base > 10 && (p[0] == '+' || p[0] == '-') && strlen(p) == 6 && p[1] >= '0' && p[1] <= '9' &&
        p[2] >= '0' && p[2] <= '9' && p[3] == ':' && p[4] >= '0' && p[4] <= '9' && p[5] >= '0' && p[5] <= '9')
        return 1;
    return 0;
}

/* The query of GET /v1/anomalies; 0 with an answer queued on a bad field. */
static int an_list_query(srv_req *r, gx_anomaly_query *q, int *format) {
    memset(q, 0, sizeof *q);
    q->min_score = NAN;
    q->limit = 100;
    const char *ms = srv_query(r, "min_score"), *lim = srv_query(r, "limit"), *fmt = srv_query(r, "format");
    const char *names[2] = { "since", "until" };
    gx_err err = { { 0 } };
    long long l;
    if (ms && gx_parse_double("min_score", ms, 0, 1, &q->min_score, &err) != GX_OK) {
        srv_error(r, 400, "bad_field", "%s", err.msg);
        return 0;
    }
    if (lim) {
        if (gx_parse_int("limit", lim, 1, GX_STORE_LIMIT_MAX, &l, &err) != GX_OK) {
            srv_error(r, 400, "bad_field", "%s", err.msg);
            return 0;
        }
        q->limit = (int)l;
    }
    q->survey = srv_query(r, "survey");
    if (q->survey && gx_parse_ident("survey", q->survey, &err) != GX_OK) {
        srv_error(r, 400, "bad_field", "%s", err.msg);
        return 0;
    }
    for (int k = 0; k < 2; k++) {
        const char *t = srv_query(r, names[k]);
        if (t && !an_time_ok(t)) {
            srv_error(r, 400, "bad_field", "field '%s': '%.64s' is not an ISO-8601 time "
                      "(YYYY-MM-DD[THH:MM[:SS[.fff]]][Z|+HH:MM])", names[k], t);
            return 0;
        }
        if (k == 0) q->since = t;
        else q->until = t;
    }
    q->cursor = srv_query(r, "cursor");
    if (q->cursor && !q->cursor[0]) {
        srv_error(r, 400, "bad_field", "field 'cursor': empty (omit it for the first page)");
        return 0;
    }
    *format = !fmt || !strcmp(fmt, "json") ? 0 : !strcmp(fmt, "csv") ? 1 : !strcmp(fmt, "votable") ? 2 : -1;
    if (*format < 0) {
        srv_error(r, 400, "bad_field", "field 'format': '%.32s' is not json, csv or votable", fmt);
        return 0;
    }
    return 1;
}

/* The page as CSV or VOTable text (format 1 or 2). */
static enum MHD_Result an_list_text(srv_req *r, const gx_anomaly_row *rows, int n, const char *next, int format) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return srv_error(r, 500, "internal", "out of memory");
    gx_err err = { { 0 } };
    gx_status s = GX_OK;
    if (format == 1) an_csv(f, rows, n);
    else s = an_votable(f, rows, n, next, &err);
    if (fclose(f) != 0 && s == GX_OK) s = gx_err_set(&err, GX_ERR_NOMEM, "out of memory writing the page");
    if (s != GX_OK) {
        free(text);
        return srv_error(r, 500, "internal", "%s", err.msg);
    }
    const char *h[] = { "X-Next-Cursor", next[0] ? next : NULL, NULL };
    return srv_respond(r, 200, format == 1 ? "text/csv; charset=utf-8" : AN_VOTABLE_TYPE "; charset=utf-8",
                       text, len, h);
}

static enum MHD_Result an_list(srv_req *r) {
    gx_anomaly_query q;
    int format = 0;
    if (!an_list_query(r, &q, &format)) return MHD_YES;
    gx_anomaly_row *rows = calloc((size_t)q.limit, sizeof *rows);
    if (!rows) return srv_error(r, 500, "internal", "out of memory");
    char next[128] = "";
    int n = 0;
    gx_err err = { { 0 } };
    struct srv_anomaly *a = r->srv->anomaly;
    pthread_mutex_lock(&a->mu);
    gx_status s = gx_anomaly_query_page(a->db, &q, rows, &n, next, &err);
    pthread_mutex_unlock(&a->mu);
    enum MHD_Result res;
    if (s != GX_OK) {
        res = srv_error_status(r, s, GX_STAGE_STORE, err.msg);
    } else if (format) {
        res = an_list_text(r, rows, n, next, format);
    } else {
        json_t *items = an_rows_json(rows, n);
        res = items ? srv_json(r, 200, json_pack("{s:o, s:o}", "items", items,
                                                 "next_cursor", next[0] ? json_string(next) : json_null()))
                    : srv_error(r, 500, "internal", "out of memory");
    }
    free(rows);
    return res;
}

/* ------------------------------------------------------------ GET /v1/anomalies/{object_id} */

static enum MHD_Result an_history(srv_req *r) {
    const char *id = r->rm.params[0];
    gx_err err = { { 0 } };
    if (gx_parse_ident("object_id", id, &err) != GX_OK) return srv_error(r, 400, "bad_field", "%s", err.msg);
    gx_anomaly_row *rows = calloc(AN_HISTORY_MAX, sizeof *rows);
    if (!rows) return srv_error(r, 500, "internal", "out of memory");
    int n = 0;
    struct srv_anomaly *a = r->srv->anomaly;
    pthread_mutex_lock(&a->mu);
    gx_status s = gx_anomaly_history(a->db, id, rows, AN_HISTORY_MAX, &n, &err);
    pthread_mutex_unlock(&a->mu);
    enum MHD_Result res;
    if (s != GX_OK) res = srv_error_status(r, s, GX_STAGE_STORE, err.msg);
    else if (n == 0) res = srv_error(r, 404, "not_found", "object '%s' has no stored anomaly score", id);
    else {
        json_t *items = an_rows_json(rows, n);
        res = items ? srv_json(r, 200, json_pack("{s:s, s:o}", "object_id", id, "scores", items))
                    : srv_error(r, 500, "internal", "out of memory");
    }
    free(rows);
    return res;
}

/* ------------------------------------------------------------ GET .../thumb.png */

static enum MHD_Result an_thumb(srv_req *r) {
    const char *id = r->rm.params[0], *v = srv_query(r, "version");
    gx_err err = { { 0 } };
    long long version = 0;
    if (gx_parse_ident("object_id", id, &err) != GX_OK ||
        (v && gx_parse_int("version", v, 1, INT32_MAX, &version, &err) != GX_OK))
        return srv_error(r, 400, "bad_field", "%s", err.msg);
    uint8_t *png = NULL;
    size_t n = 0;
    int found = 0;
    struct srv_anomaly *a = r->srv->anomaly;
    pthread_mutex_lock(&a->mu);
    gx_status s = gx_anomaly_thumb_get(a->db, id, (int)version, &png, &n, &found, &err);
    pthread_mutex_unlock(&a->mu);
    if (s == GX_ERR_NOTFOUND) return srv_error(r, 404, "not_found", "%s", err.msg);
    if (s != GX_OK) return srv_error_status(r, s, GX_STAGE_STORE, err.msg);
    char ver[16];
    snprintf(ver, sizeof ver, "%d", found);
    const char *h[] = { "X-Object-Version", ver, NULL };
    return srv_respond(r, 200, "image/png", (char *)png, n, h);
}

enum MHD_Result srv_anomaly_dispatch(srv_req *r) {
    switch (r->rm.id) {
    case GX_RT_ANOMALY:         return an_one(r);
    case GX_RT_ANOMALY_BATCH:   return an_batch(r);
    case GX_RT_ANOMALIES:       return an_list(r);
    case GX_RT_ANOMALY_OBJECT:  return an_history(r);
    case GX_RT_ANOMALY_THUMB:   return an_thumb(r);
    default:                    return srv_error(r, 404, "not_found", "no route for %s %s", r->method, r->path);
    }
}
