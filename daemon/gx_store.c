/*
 * gx_store.c — galaxyd's prediction store: served models, objects and
 * predictions in the SQLite database of trainer/gx_db.h.
 *
 * Design:
 *  - One connection (gx_db_open: WAL, foreign keys, busy timeout,
 *    migrations) behind one mutex; every statement is prepared once at open
 *    and reset after use. SQLite serialises writers anyway, and each call is
 *    one short statement or one small transaction, so a second connection
 *    would buy nothing but lock contention.
 *  - created_at is chosen by SQLite (strftime with milliseconds, UTC) but
 *    never earlier than the newest stored prediction: if the wall clock
 *    steps back, new rows still sort after every existing one, so a client
 *    paging with a cursor can never miss a row inserted behind its cursor.
 *    (Rows with equal created_at are ordered by id, which only grows.)
 *  - Pagination is keyset: WHERE (created_at, id) > (?, ?) ORDER BY
 *    created_at, id LIMIT limit+1 on the predictions_cursor index (or
 *    predictions_class_cursor with ?class=); the extra row says whether a
 *    next page exists without a COUNT. ?since= is folded into the same
 *    lower bound (created_at >= since  <=>  (created_at, id) > (since, 0),
 *    ids being >= 1), so each page is one index range scan.
 *  - The filter combinations (survey yes/no x class yes/no) are four
 *    prepared statements rather than "? IS NULL OR ..." clauses, which would
 *    stop SQLite from using the indexes.
 *  - A prediction carries its own survey (the request's, else its object's
 *    at that time; migrations/0002_serving.sql says why), so ?survey= is an
 *    index range in cursor order like ?class=.
 *  - Field types in the JSON (documented in gx_store.h): ids and class
 *    index are integers; survey, class_name, ra, dec, confidence, redshift
 *    and latency_ms are null when not stored; probs is an array of numbers.
 */
#include "gx_store.h"

#include "gx_anomaly_store.h"
#include "gx_db.h"
#include "gx_http_parse.h"

#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define ST_TIME_NOW  "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
#define ST_TIME_LEN  24            /* "2024-05-01T12:00:00.123Z" */

/* The columns of one prediction item, shared by the list and object views. */
#define ST_ITEM_COLS                                                                     \
    "p.id, o.external_id, p.survey, o.ra, o.dec, m.name, m.version, p.class_index, "      \
    "p.class_name, p.confidence, p.probs_json, p.redshift, p.latency_ms, p.created_at "
#define ST_ITEM_FROM                                                                     \
    "FROM predictions p JOIN objects o ON o.id = p.object_id "                           \
    "JOIN served_models m ON m.id = p.model_id "

enum { ST_LIST_SURVEY = 1, ST_LIST_CLASS = 2 };

struct gx_store {
    pthread_mutex_t mu;
    gx_db        *db;
    sqlite3      *h;
    sqlite3_stmt *now;          /* created_at for a new row */
    sqlite3_stmt *model_find, *model_ins;
    sqlite3_stmt *obj_find, *obj_fill, *obj_ins, *pred_ins;
    sqlite3_stmt *obj_rows, *obj_preds;
    sqlite3_stmt *since_norm;
    sqlite3_stmt *list[4];      /* by ST_LIST_* bits */
};

/* ------------------------------------------------------------ helpers */

/* The result-code mapping, binds, statement reset and sha256 check are
 * trainer/gx_anomaly_store.h's: both stores write the objects table, with
 * the same rules. */
static gx_status st_fail(gx_store *s, int rc, gx_err *err, const char *what) {
    return gx_err_set(err, gx_anomaly_sql_status(rc), "store: %s: %s", what, sqlite3_errmsg(s->h));
}

/* Steps a statement that returns no rows. */
static gx_status st_exec(gx_store *s, sqlite3_stmt *st, gx_err *err, const char *what) {
    int rc = sqlite3_step(st);
    gx_status r = rc == SQLITE_DONE ? GX_OK : st_fail(s, rc, err, what);
    gx_anomaly_stmt_reset(st);
    return r;
}

/* Column as JSON: NULL -> null, by storage class otherwise. */
static json_t *st_col_json(sqlite3_stmt *st, int c) {
    switch (sqlite3_column_type(st, c)) {
    case SQLITE_NULL: return json_null();
    case SQLITE_INTEGER: return json_integer(sqlite3_column_int64(st, c));
    case SQLITE_FLOAT: return json_real(sqlite3_column_double(st, c));
    default: return json_string((const char *)sqlite3_column_text(st, c));
    }
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" exactly: what we write, hence what a cursor holds. */
static int st_is_stamp(const char *t, size_t n) {
    static const char pat[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    if (n != ST_TIME_LEN) return 0;
    for (size_t i = 0; i < n; i++) {
        if (pat[i] == 'd' ? !(t[i] >= '0' && t[i] <= '9') : t[i] != pat[i]) return 0;
    }
    return 1;
}

/* ------------------------------------------------------------ open/close */

static const char *st_list_sql(int which, char *buf, size_t n) {
    snprintf(buf, n,
             "SELECT " ST_ITEM_COLS ST_ITEM_FROM
             "WHERE (p.created_at, p.id) > (?1, ?2)%s%s "
             "ORDER BY p.created_at, p.id LIMIT ?5",
             (which & ST_LIST_SURVEY) ? " AND p.survey = ?3" : "",
             (which & ST_LIST_CLASS) ? " AND p.class_index = ?4" : "");
    return buf;
}

static gx_status st_prepare_all(gx_store *s, gx_err *err) {
    struct { sqlite3_stmt **st; const char *sql; } q[] = {
        { &s->now, "SELECT max(" ST_TIME_NOW ", coalesce((SELECT max(created_at) FROM predictions), ''))" },
        { &s->model_find, "SELECT id FROM served_models WHERE name = ?1 AND version = ?2" },
        /* DO NOTHING: another process may register the same pair between
         * our find and this insert; the second find then sees its row. */
        { &s->model_ins,
          "INSERT INTO served_models (name, version, model_kind, checkpoint_path, checkpoint_sha256,"
          " run_id, classes_json, preprocess_json, config_json)"
          " VALUES (?1, ?2, ?3, ?4, ?5, (SELECT id FROM runs WHERE id = ?6), ?7, ?8, ?9)"
          " ON CONFLICT (name, version) DO NOTHING" },
        { &s->obj_find,
          "SELECT id FROM objects WHERE external_id = ?1 AND image_sha256 = ?2 ORDER BY id LIMIT 1" },
        /* First known values win: a later upload of the same image does not
         * rewrite what earlier predictions were listed with. */
        { &s->obj_fill,
          "UPDATE objects SET survey = coalesce(survey, ?2),"
          " ra  = CASE WHEN ra IS NULL AND dec IS NULL THEN ?3 ELSE ra END,"
          " dec = CASE WHEN ra IS NULL AND dec IS NULL THEN ?4 ELSE dec END WHERE id = ?1" },
        { &s->obj_ins,
          "INSERT INTO objects (external_id, image_sha256, format, width, height, bands, ra, dec,"
          " survey, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)" },
        { &s->pred_ins,
          "INSERT INTO predictions (object_id, model_id, class_index, class_name, confidence,"
          " probs_json, redshift, latency_ms, created_at, survey) VALUES (?1, ?2, ?3, ?4, ?5, ?6,"
          " ?7, ?8, ?9, coalesce(?10, (SELECT survey FROM objects WHERE id = ?1)))" },
        { &s->obj_rows,
          "SELECT survey, ra, dec, created_at FROM objects WHERE external_id = ?1"
          " ORDER BY created_at DESC, id DESC" },
        { &s->obj_preds,
          "SELECT " ST_ITEM_COLS ST_ITEM_FROM "WHERE o.external_id = ?1"
          " ORDER BY p.created_at DESC, p.id DESC LIMIT ?2" },
        { &s->since_norm, "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', ?1)" },
    };
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        int rc = sqlite3_prepare_v3(s->h, q[i].sql, -1, SQLITE_PREPARE_PERSISTENT, q[i].st, NULL);
        if (rc != SQLITE_OK) return st_fail(s, rc, err, "prepare");
    }
    for (int w = 0; w < 4; w++) {
        char sql[1024];
        int rc = sqlite3_prepare_v3(s->h, st_list_sql(w, sql, sizeof sql), -1,
                                    SQLITE_PREPARE_PERSISTENT, &s->list[w], NULL);
        if (rc != SQLITE_OK) return st_fail(s, rc, err, "prepare list");
    }
    return GX_OK;
}

static void st_finalize_all(gx_store *s) {
    sqlite3_stmt *all[] = { s->now, s->model_find, s->model_ins, s->obj_find, s->obj_fill, s->obj_ins,
                            s->pred_ins, s->obj_rows, s->obj_preds, s->since_norm,
                            s->list[0], s->list[1], s->list[2], s->list[3] };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) sqlite3_finalize(all[i]);
}

gx_status gx_store_open(gx_store **out, const char *db_path, gx_err *err) {
    *out = NULL;
    if (!db_path || !*db_path) return gx_err_set(err, GX_ERR_INVALID, "store: no database path");
    gx_store *s = calloc(1, sizeof *s);
    if (!s) return gx_err_set(err, GX_ERR_NOMEM, "store: out of memory");
    gx_status r = gx_db_open(&s->db, db_path, err);
    if (r != GX_OK) { free(s); return r; }
    s->h = gx_db_handle(s->db);
    r = st_prepare_all(s, err);
    if (r == GX_OK && pthread_mutex_init(&s->mu, NULL) != 0)
        r = gx_err_set(err, GX_ERR_NOMEM, "store: cannot create mutex");
    if (r != GX_OK) {
        st_finalize_all(s);
        gx_db_close(s->db);
        free(s);
        return r;
    }
    *out = s;
    return GX_OK;
}

void gx_store_close(gx_store *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    st_finalize_all(s);
    /* Fold the WAL back into the main file so the database is one
     * self-contained file after a clean shutdown (copyable, backup-able). */
    gx_db_exec(s->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL);
    gx_db_close(s->db);
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ------------------------------------------------------------- models */

static char *st_classes_json(const gx_serve_info *info) {
    json_t *a = json_array();
    for (int k = 0; a && k < info->n_classes; k++)
        json_array_append_new(a, json_string(info->class_names[k]));
    char *t = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    return t;
}

static char *st_preprocess_json(const gx_serve_info *info) {
    json_t *o = json_pack("{s:i, s:f}", "input_size", info->input_size, "crop_frac", info->crop_frac);
    char *t = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return t;
}

/* The id of (name, version), or 0 when not registered. */
static gx_status st_model_find(gx_store *s, const gx_serve_info *info, int64_t *id, gx_err *err) {
    sqlite3_stmt *st = s->model_find;
    gx_anomaly_bind_text(st, 1, info->name);
    gx_anomaly_bind_text(st, 2, info->version);
    int rc = sqlite3_step(st);
    *id = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    gx_anomaly_stmt_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? GX_OK : st_fail(s, rc, err, "finding model");
}

static gx_status st_model_insert(gx_store *s, const gx_serve_info *info, gx_err *err) {
    char *classes = st_classes_json(info), *pre = st_preprocess_json(info);
    if (!classes || !pre) {
        free(classes); free(pre);
        return gx_err_set(err, GX_ERR_NOMEM, "store: out of memory");
    }
    sqlite3_stmt *st = s->model_ins;
    gx_anomaly_bind_text(st, 1, info->name);
    gx_anomaly_bind_text(st, 2, info->version);
    gx_anomaly_bind_text(st, 3, info->kind);
    gx_anomaly_bind_text(st, 4, info->path);
    gx_anomaly_bind_text(st, 5, info->version);
    /* The run lives in the trainer's database, which need not be this one:
     * the subquery keeps the foreign key only when the run is here. */
    sqlite3_bind_int64(st, 6, info->run_id);
    gx_anomaly_bind_text(st, 7, classes);
    gx_anomaly_bind_text(st, 8, pre);
    gx_anomaly_bind_text(st, 9, info->config_json);
    gx_status r = st_exec(s, st, err, "registering model");
    free(classes);
    free(pre);
    return r;
}

/* A read when the pair is known (the common case: callers may register on
 * every stored prediction), an insert only the first time. */
gx_status gx_store_register_model(gx_store *s, const gx_serve_info *info, int64_t *model_id,
                                  gx_err *err) {
    if (!s || !info || !model_id) return gx_err_set(err, GX_ERR_INVALID, "store: bad arguments");
    if (!info->name[0]) return gx_err_set(err, GX_ERR_INVALID, "store: model without a name");
    if (!gx_anomaly_is_hex64(info->version))
        return gx_err_set(err, GX_ERR_INVALID, "store: model '%s': version is not a sha256",
                          info->name);
    if (info->n_classes < 1 || info->n_classes > GX_SERVE_MAX_CLASSES)
        return gx_err_set(err, GX_ERR_INVALID, "store: model '%s': %d classes", info->name,
                          info->n_classes);
    pthread_mutex_lock(&s->mu);
    int64_t id = 0;
    gx_status r = st_model_find(s, info, &id, err);
    if (r == GX_OK && id == 0) {
        r = st_model_insert(s, info, err);
        if (r == GX_OK) r = st_model_find(s, info, &id, err);
        if (r == GX_OK && id == 0) r = gx_err_set(err, GX_ERR_IO, "store: model row vanished");
    }
    pthread_mutex_unlock(&s->mu);
    if (r == GX_OK) *model_id = id;
    return r;
}

/* -------------------------------------------------------- predictions */

static gx_status st_check_pred(const gx_store_pred *p, gx_err *err) {
    gx_status r = gx_parse_ident("object_id", p->object_id, err);
    if (r == GX_OK && p->survey) r = gx_parse_ident("survey", p->survey, err);
    if (r != GX_OK) return r;
    if (isinf(p->ra) || isinf(p->dec))
        return gx_err_set(err, GX_ERR_INVALID, "field '%s': not finite", isinf(p->ra) ? "ra" : "dec");
    if (!p->meta || !gx_anomaly_is_hex64(p->meta->sha256))
        return gx_err_set(err, GX_ERR_INVALID, "store: prediction without the image's sha256");
    if (p->model_id <= 0) return gx_err_set(err, GX_ERR_INVALID, "store: no model id");
    if (p->n_classes < 1 || p->n_classes > GX_SERVE_MAX_CLASSES || !p->probs)
        return gx_err_set(err, GX_ERR_INVALID, "store: %d class probabilities", p->n_classes);
    if (p->class_index < 0 || p->class_index >= p->n_classes)
        return gx_err_set(err, GX_ERR_INVALID, "store: class index %d outside [0, %d)",
                          p->class_index, p->n_classes);
    for (int k = 0; k < p->n_classes; k++)
        if (!isfinite(p->probs[k]))
            return gx_err_set(err, GX_ERR_INVALID, "store: probability %d is not finite", k);
    return GX_OK;
}

/* probs as compact JSON; 9 significant digits read back to the same float. */
static char *st_probs_json(const float *probs, int n, float *max_p) {
    json_t *a = json_array();
    *max_p = probs[0];
    for (int k = 0; a && k < n; k++) {
        if (probs[k] > *max_p) *max_p = probs[k];
        if (json_array_append_new(a, json_real(probs[k])) != 0) { json_decref(a); return NULL; }
    }
    char *t = a ? json_dumps(a, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(a);
    return t;
}

/* The object row for (object_id, sha256): found (and filled) or inserted. */
static gx_status st_object_row(gx_store *s, const gx_store_pred *p, const char *now, int64_t *oid,
                               gx_err *err) {
    sqlite3_stmt *st = s->obj_find;
    gx_anomaly_bind_text(st, 1, p->object_id);
    gx_anomaly_bind_text(st, 2, p->meta->sha256);
    int rc = sqlite3_step(st);
    *oid = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    gx_anomaly_stmt_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return st_fail(s, rc, err, "finding object");
    if (*oid) {
        st = s->obj_fill;
        sqlite3_bind_int64(st, 1, *oid);
        gx_anomaly_bind_text(st, 2, p->survey);
        gx_anomaly_bind_real(st, 3, p->ra);
        gx_anomaly_bind_real(st, 4, p->dec);
        return st_exec(s, st, err, "updating object");
    }
    st = s->obj_ins;
    gx_anomaly_bind_text(st, 1, p->object_id);
    gx_anomaly_bind_text(st, 2, p->meta->sha256);
    gx_anomaly_bind_text(st, 3, p->meta->format[0] ? p->meta->format : NULL);
    sqlite3_bind_int(st, 4, p->meta->width);
    sqlite3_bind_int(st, 5, p->meta->height);
    sqlite3_bind_int(st, 6, p->meta->bands);
    gx_anomaly_bind_real(st, 7, p->ra);
    gx_anomaly_bind_real(st, 8, p->dec);
    gx_anomaly_bind_text(st, 9, p->survey);
    gx_anomaly_bind_text(st, 10, now);
    gx_status r = st_exec(s, st, err, "inserting object");
    if (r == GX_OK) *oid = sqlite3_last_insert_rowid(s->h);
    return r;
}

static gx_status st_now(gx_store *s, char now[32], gx_err *err) {
    int rc = sqlite3_step(s->now);
    const char *t = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(s->now, 0) : NULL;
    gx_status r = GX_OK;
    if (t && strlen(t) < 32) strcpy(now, t);
    else r = st_fail(s, rc == SQLITE_ROW ? SQLITE_ERROR : rc, err, "reading the clock");
    gx_anomaly_stmt_reset(s->now);
    return r;
}

/* The body of put_prediction inside its transaction. */
static gx_status st_put_locked(gx_store *s, const gx_store_pred *p, const char *probs,
                               float conf, int64_t *pid, char now[32], gx_err *err) {
    int64_t oid;
    gx_status r = st_now(s, now, err);
    if (r == GX_OK) r = st_object_row(s, p, now, &oid, err);
    if (r != GX_OK) return r;
    sqlite3_stmt *st = s->pred_ins;
    sqlite3_bind_int64(st, 1, oid);
    sqlite3_bind_int64(st, 2, p->model_id);
    sqlite3_bind_int(st, 3, p->class_index);
    gx_anomaly_bind_text(st, 4, p->class_name);
    sqlite3_bind_double(st, 5, conf);
    gx_anomaly_bind_text(st, 6, probs);
    gx_anomaly_bind_real(st, 7, isfinite(p->redshift) ? p->redshift : NAN);
    gx_anomaly_bind_real(st, 8, isfinite(p->latency_ms) ? p->latency_ms : NAN);
    gx_anomaly_bind_text(st, 9, now);
    gx_anomaly_bind_text(st, 10, p->survey);
    r = st_exec(s, st, err, "inserting prediction");
    if (r == GX_OK) *pid = sqlite3_last_insert_rowid(s->h);
    return r;
}

gx_status gx_store_put_prediction(gx_store *s, const gx_store_pred *p, int64_t *pred_id,
                                  char created_at[32], gx_err *err) {
    if (!s || !p) return gx_err_set(err, GX_ERR_INVALID, "store: bad arguments");
    gx_status r = st_check_pred(p, err);
    if (r != GX_OK) return r;
    float conf;
    char *probs = st_probs_json(p->probs, p->n_classes, &conf);
    if (!probs) return gx_err_set(err, GX_ERR_NOMEM, "store: out of memory");
    char now[32];
    int64_t pid = 0;
    pthread_mutex_lock(&s->mu);
    r = gx_db_begin(s->db, err);
    if (r == GX_OK) {
        r = st_put_locked(s, p, probs, conf, &pid, now, err);
        if (r == GX_OK) r = gx_db_commit(s->db, err);
        if (r != GX_OK) gx_db_rollback(s->db);
    }
    pthread_mutex_unlock(&s->mu);
    free(probs);
    if (r != GX_OK) return r;
    if (pred_id) *pred_id = pid;
    if (created_at) strcpy(created_at, now);
    return GX_OK;
}

/* ------------------------------------------------------------- reading */

/* One row of ST_ITEM_COLS as a JSON item. */
static json_t *st_item(sqlite3_stmt *st) {
    static const char *keys[] = { "id", "object_id", "survey", "ra", "dec", "model",
                                  "model_version", "class_index", "class_name", "confidence",
                                  "probs", "redshift", "latency_ms", "created_at" };
    json_t *o = json_object();
    for (int c = 0; o && c < 14; c++) {
        json_t *v;
        if (c == 10) {
            const char *t = (const char *)sqlite3_column_text(st, c);
            v = t ? json_loads(t, 0, NULL) : NULL;
            if (!json_is_array(v)) { json_decref(v); v = json_array(); }
        } else {
            v = st_col_json(st, c);
        }
        if (json_object_set_new(o, keys[c], v) != 0) { json_decref(o); return NULL; }
    }
    return o;
}

/* Runs a prepared item query into a fresh array (at most max rows; *more
 * set when another row exists). */
static gx_status st_items(gx_store *s, sqlite3_stmt *st, int max, json_t **items, int *more,
                          gx_err *err) {
    json_t *a = json_array();
    if (!a) return gx_err_set(err, GX_ERR_NOMEM, "store: out of memory");
    int rc, n = 0;
    *more = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == max) { *more = 1; break; }
        json_t *it = st_item(st);
        if (!it || json_array_append_new(a, it) != 0) {
            json_decref(a);
            gx_anomaly_stmt_reset(st);
            return gx_err_set(err, GX_ERR_NOMEM, "store: out of memory");
        }
        n++;
    }
    gx_status r = (rc == SQLITE_ROW || rc == SQLITE_DONE) ? GX_OK : st_fail(s, rc, err, "query");
    gx_anomaly_stmt_reset(st);
    if (r != GX_OK) { json_decref(a); return r; }
    *items = a;
    return GX_OK;
}

gx_status gx_store_get_object(gx_store *s, const char *object_id, json_t **out, gx_err *err) {
    *out = NULL;
    if (!s) return gx_err_set(err, GX_ERR_INVALID, "store: bad arguments");
    gx_status r = gx_parse_ident("object_id", object_id, err);
    if (r != GX_OK) return r;
    json_t *o = json_pack("{s:s, s:n, s:n, s:n, s:n}", "object_id", object_id, "survey", "ra",
                          "dec", "first_seen");
    if (!o) return gx_err_set(err, GX_ERR_NOMEM, "store: out of memory");
    pthread_mutex_lock(&s->mu);
    /* Rows newest first: survey and (ra, dec) are the newest known ones,
     * first_seen the oldest row's time. */
    sqlite3_stmt *st = s->obj_rows;
    gx_anomaly_bind_text(st, 1, object_id);
    int rc, rows = 0, have_pos = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        rows++;
        if (json_is_null(json_object_get(o, "survey")) && sqlite3_column_type(st, 0) != SQLITE_NULL)
            json_object_set_new(o, "survey", st_col_json(st, 0));
        if (!have_pos && (sqlite3_column_type(st, 1) != SQLITE_NULL ||
                          sqlite3_column_type(st, 2) != SQLITE_NULL)) {
            json_object_set_new(o, "ra", st_col_json(st, 1));
            json_object_set_new(o, "dec", st_col_json(st, 2));
            have_pos = 1;
        }
        json_object_set_new(o, "first_seen", st_col_json(st, 3));
    }
    gx_anomaly_stmt_reset(st);
    if (rc != SQLITE_DONE) r = st_fail(s, rc, err, "reading object");
    else if (rows == 0) r = gx_err_set(err, GX_ERR_NOTFOUND, "object '%s' not found", object_id);
    json_t *preds = NULL;
    int more;
    if (r == GX_OK) {
        gx_anomaly_bind_text(s->obj_preds, 1, object_id);
        sqlite3_bind_int(s->obj_preds, 2, GX_STORE_OBJECT_PREDICTIONS_MAX);
        r = st_items(s, s->obj_preds, GX_STORE_OBJECT_PREDICTIONS_MAX, &preds, &more, err);
    }
    pthread_mutex_unlock(&s->mu);
    if (r == GX_OK && json_object_set_new(o, "predictions", preds) != 0)
        r = gx_err_set(err, GX_ERR_NOMEM, "store: out of memory");
    if (r != GX_OK) { json_decref(o); return r; }
    *out = o;
    return GX_OK;
}

/* Cursor "created_at|id" <-> base64url. */
static int st_cursor_encode(const char *created_at, int64_t id, char *out, size_t n) {
    char raw[64];
    snprintf(raw, sizeof raw, "%s|%lld", created_at, (long long)id);
    char *e = gx_base64url_encode((const unsigned char *)raw, strlen(raw));
    if (!e) return 0;
    int ok = strlen(e) < n;
    if (ok) strcpy(out, e);
    free(e);
    return ok;
}

static gx_status st_cursor_decode(const char *cur, char at[32], int64_t *id, gx_err *err) {
    size_t n = strnlen(cur, GX_STORE_CURSOR_MAX);
    unsigned char *raw = NULL;
    size_t rn = 0;
    gx_err e2;
    if (n == 0 || n >= GX_STORE_CURSOR_MAX || gx_base64url_decode(cur, n, &raw, &rn, &e2) != GX_OK)
        return gx_err_set(err, GX_ERR_INVALID, "field 'cursor': not a cursor from this server");
    /* created_at (24) '|' 1..19 digits */
    int ok = rn > ST_TIME_LEN + 1 && rn <= ST_TIME_LEN + 20 && raw[ST_TIME_LEN] == '|' &&
             st_is_stamp((const char *)raw, ST_TIME_LEN);
    long long v = 0;
    for (size_t i = ST_TIME_LEN + 1; ok && i < rn; i++) {
        if (raw[i] < '0' || raw[i] > '9' || v > (INT64_MAX - 9) / 10) ok = 0;
        else v = v * 10 + (raw[i] - '0');
    }
    if (ok) {
        memcpy(at, raw, ST_TIME_LEN);
        at[ST_TIME_LEN] = 0;
        *id = v;
    }
    free(raw);
    return ok ? GX_OK : gx_err_set(err, GX_ERR_INVALID, "field 'cursor': not a cursor from this server");
}

/* ISO-8601 as clients write it: YYYY-MM-DD[THH:MM[:SS[.f+]][Z|+HH:MM|-HH:MM]].
 * Checked here (SQLite's own parser also takes julian day numbers and
 * spaces), then normalised by SQLite to our stored form, UTC. */
static int st_since_shape(const char *t) {
    static const char *pats[] = { "dddd-dd-dd", "dddd-dd-ddTdd:dd", "dddd-dd-ddTdd:dd:dd" };
    size_t n = strnlen(t, 64);
    if (n >= 64) return 0;
    size_t i = 0;
    int matched = 0;
    for (int k = 2; k >= 0 && !matched; k--) {
        size_t m = strlen(pats[k]);
        if (n < m) continue;
        int ok = 1;
        for (size_t j = 0; j < m && ok; j++)
            ok = pats[k][j] == 'd' ? (t[j] >= '0' && t[j] <= '9') : t[j] == pats[k][j];
        if (ok) { i = m; matched = k + 1; }
    }
    if (!matched) return 0;
    if (matched == 3 && t[i] == '.') {
        size_t f = ++i;
        while (t[i] >= '0' && t[i] <= '9') i++;
        if (i == f) return 0;
    }
    if (matched == 1) return t[i] == 0;
    if (t[i] == 'Z') return t[i + 1] == 0;
    if (t[i] == '+' || t[i] == '-') {
        const char *z = t + i + 1;
        return strlen(z) == 5 && z[0] >= '0' && z[0] <= '9' && z[1] >= '0' && z[1] <= '9' &&
               z[2] == ':' && z[3] >= '0' && z[3] <= '9' && z[4] >= '0' && z[4] <= '9';
    }
    return t[i] == 0;
}

static gx_status st_since(gx_store *s, const char *since, char out[32], gx_err *err) {
    if (!st_since_shape(since))
        return gx_err_set(err, GX_ERR_INVALID,
                          "field 'since': not an ISO-8601 time (YYYY-MM-DD[THH:MM[:SS[.fff]]][Z])");
    gx_anomaly_bind_text(s->since_norm, 1, since);
    int rc = sqlite3_step(s->since_norm);
    const char *t = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(s->since_norm, 0) : NULL;
    int ok = t && st_is_stamp(t, strlen(t));
    if (ok) strcpy(out, t);
    gx_anomaly_stmt_reset(s->since_norm);
    return ok ? GX_OK : gx_err_set(err, GX_ERR_INVALID, "field 'since': not a valid date/time");
}

static gx_status st_check_query(const gx_store_query *q, size_t next_n, gx_err *err) {
    if (q->limit < 1 || q->limit > GX_STORE_LIMIT_MAX)
        return gx_err_set(err, GX_ERR_INVALID, "field 'limit': %d is out of range [1, %d]",
                          q->limit, GX_STORE_LIMIT_MAX);
    if (q->class_index < -1 || q->class_index >= GX_SERVE_MAX_CLASSES)
        return gx_err_set(err, GX_ERR_INVALID, "field 'class': %d is not a class index",
                          q->class_index);
    if (q->survey) {
        gx_status r = gx_parse_ident("survey", q->survey, err);
        if (r != GX_OK) return r;
    }
    if (next_n < GX_STORE_CURSOR_MAX)
        return gx_err_set(err, GX_ERR_INVALID, "store: next_cursor buffer under %d bytes",
                          GX_STORE_CURSOR_MAX);
    return GX_OK;
}

gx_status gx_store_list_predictions(gx_store *s, const gx_store_query *q, json_t **items,
                                    char *next_cursor, size_t next_n, gx_err *err) {
    *items = NULL;
    if (next_cursor && next_n) next_cursor[0] = 0;
    if (!s || !q || !next_cursor) return gx_err_set(err, GX_ERR_INVALID, "store: bad arguments");
    gx_status r = st_check_query(q, next_n, err);
    char lo_at[32] = "";          /* exclusive lower bound (lo_at, lo_id) */
    int64_t lo_id = 0;
    if (r == GX_OK && q->cursor) r = st_cursor_decode(q->cursor, lo_at, &lo_id, err);
    if (r != GX_OK) return r;
    pthread_mutex_lock(&s->mu);
    if (q->since) {
        char since[32];
        r = st_since(s, q->since, since, err);
        if (r == GX_OK && strcmp(since, lo_at) > 0) {   /* (since, 0) is the higher bound */
            strcpy(lo_at, since);
            lo_id = 0;
        }
    }
    json_t *a = NULL;
    int more = 0;
    if (r == GX_OK) {
        int w = (q->survey ? ST_LIST_SURVEY : 0) | (q->class_index >= 0 ? ST_LIST_CLASS : 0);
        sqlite3_stmt *st = s->list[w];
        gx_anomaly_bind_text(st, 1, lo_at);
        sqlite3_bind_int64(st, 2, lo_id);
        if (q->survey) gx_anomaly_bind_text(st, 3, q->survey);
        if (q->class_index >= 0) sqlite3_bind_int(st, 4, q->class_index);
        sqlite3_bind_int(st, 5, q->limit + 1);
        r = st_items(s, st, q->limit, &a, &more, err);
    }
    pthread_mutex_unlock(&s->mu);
    if (r != GX_OK) return r;
    if (more) {
        json_t *last = json_array_get(a, json_array_size(a) - 1);
        if (!st_cursor_encode(json_string_value(json_object_get(last, "created_at")),
                              json_integer_value(json_object_get(last, "id")), next_cursor,
                              next_n)) {
            json_decref(a);
            return gx_err_set(err, GX_ERR_NOMEM, "store: cannot encode the cursor");
        }
    }
    *items = a;
    return GX_OK;
}

/* ----------------------------------------------------------------- CSV */

typedef struct st_buf { char *s; size_t n, cap; int failed; } st_buf;

static void sb_put(st_buf *b, const char *p, size_t k) {
    if (b->failed) return;
    if (b->n + k + 1 > b->cap) {
        size_t cap = 2 * b->cap + k + 1;
        char *s = realloc(b->s, cap);
        if (!s) { b->failed = 1; return; }
        b->s = s;
        b->cap = cap;
    }
    memcpy(b->s + b->n, p, k);
    b->n += k;
    b->s[b->n] = 0;
}

static void sb_str(st_buf *b, const char *p) { sb_put(b, p, strlen(p)); }

/* RFC 4180: a field with a comma, quote, CR or LF is quoted, quotes doubled. */
static void sb_csv_text(st_buf *b, const char *t) {
    if (!strpbrk(t, ",\"\r\n")) { sb_str(b, t); return; }
    sb_put(b, "\"", 1);
    for (const char *c = t; *c; c++) {
        if (*c == '"') sb_put(b, "\"\"", 2);
        else sb_put(b, c, 1);
    }
    sb_put(b, "\"", 1);
}

/* Shortest decimal that reads back to the same double. */
static void sb_real(st_buf *b, double v) {
    char t[32];
    snprintf(t, sizeof t, "%.15g", v);
    if (strtod(t, NULL) != v) snprintf(t, sizeof t, "%.17g", v);
    sb_str(b, t);
}

static void sb_csv_value(st_buf *b, const json_t *v) {
    char t[32];
    if (json_is_string(v)) sb_csv_text(b, json_string_value(v));
    else if (json_is_integer(v)) {
        snprintf(t, sizeof t, "%lld", (long long)json_integer_value(v));
        sb_str(b, t);
    } else if (json_is_real(v)) sb_real(b, json_real_value(v));
    else if (json_is_true(v)) sb_str(b, "true");
    else if (json_is_false(v)) sb_str(b, "false");
    /* null / missing: an empty field */
}

char *gx_store_items_csv(const json_t *items) {
    static const char *cols[] = { "id", "object_id", "survey", "ra", "dec", "model",
                                  "model_version", "class_index", "class_name", "confidence",
                                  "redshift", "latency_ms", "created_at" };
    const int nc = (int)(sizeof cols / sizeof cols[0]);
    if (!json_is_array(items)) return NULL;
    /* Items of different models may have different K: as many p columns as
     * the widest, empty cells for the others. */
    size_t K = 0, i;
    const json_t *it;
    json_array_foreach(items, i, it) {
        size_t k = json_array_size(json_object_get(it, "probs"));
        if (k > K) K = k;
    }
    st_buf b = { malloc(1024), 0, 1024, 0 };
    if (!b.s) return NULL;
    b.s[0] = 0;
    char t[32];
    for (int c = 0; c < nc; c++) { if (c) sb_str(&b, ","); sb_str(&b, cols[c]); }
    for (size_t k = 0; k < K; k++) { snprintf(t, sizeof t, ",p%zu", k); sb_str(&b, t); }
    sb_str(&b, "\r\n");
    json_array_foreach(items, i, it) {
        for (int c = 0; c < nc; c++) {
            if (c) sb_str(&b, ",");
            sb_csv_value(&b, json_object_get(it, cols[c]));
        }
        const json_t *probs = json_object_get(it, "probs");
        for (size_t k = 0; k < K; k++) {
            sb_str(&b, ",");
            sb_csv_value(&b, json_array_get(probs, k));
        }
        sb_str(&b, "\r\n");
    }
    if (b.failed) { free(b.s); return NULL; }
    return b.s;
}
