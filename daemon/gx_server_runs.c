/*
 * gx_server_runs.c — read-only routes over the training side of the
 * database (runs, per-epoch metrics, checkpoints, reports), for the
 * dashboard (web/) and for scripts. Shapes in api/openapi.yaml.
 *
 *   GET /v1/runs                         runs, newest first (cursor paging)
 *   GET /v1/runs/{run_id}                one run + which (split, name) series it has
 *   GET /v1/runs/{run_id}/metrics        ?split=&name=&format=series|long
 *   GET /v1/runs/{run_id}/checkpoints    its checkpoints, by epoch
 *   GET /v1/runs/{run_id}/confusion      ?epoch=N|best&split=: one confusion matrix
 *                                        with per-class recall (migrations/0006)
 *   GET /v1/reports/{kind}               ?runs=1,2,3: galaxy-train report as Markdown
 *                                        (every kind gx_report_kind_parse knows)
 *
 * Each request opens its own connection to --db (gx_db_open: WAL, busy
 * timeout; the migrations already ran at server start, so the open only
 * reads) and closes it at the end. The store's connection is not borrowed:
 * it is one connection behind one mutex for the prediction path, and a
 * dashboard reading a long learning curve must not hold that mutex. WAL
 * readers never block galaxy-train writing the same file, so the curves of
 * a running training grow while the page refreshes.
 */
#include "gx_server_impl.h"

#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "gx_db.h"
#include "gx_metrics.h"
#include "gx_report.h"

#include <limits.h>

#define RUNS_LIMIT_DEFAULT 100
#define RUNS_LIMIT_MAX 1000
#define RUNS_METRIC_ROWS_MAX 200000   /* bounds one answer (~10 MB of JSON) */

/* Opens the server's database for this request. */
static gx_status runs_db_open(srv_req *r, gx_db **db, gx_err *err) {
    return gx_db_open(db, r->srv->db_path, err);
}

static enum MHD_Result runs_sql_error(srv_req *r, sqlite3 *h, const char *what) {
    return srv_error(r, 500, "internal", "database error reading %s: %s", what, sqlite3_errmsg(h));
}

/* A text column as a JSON string, or null. */
static json_t *runs_col_text(sqlite3_stmt *st, int i) {
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? json_string((const char *)t) : json_null();
}

/* A JSON-object text column parsed; NULL, unparsable or non-object text
 * becomes {} so one odd row does not hide the rest (the columns are written
 * by our own binaries, always as objects). */
static json_t *runs_col_json(sqlite3_stmt *st, int i) {
    const unsigned char *t = sqlite3_column_text(st, i);
    json_t *v = t ? json_loads((const char *)t, 0, NULL) : NULL;
    if (json_is_object(v)) return v;
    json_decref(v);
    return json_object();
}

static json_t *runs_col_real(sqlite3_stmt *st, int i) {
    if (sqlite3_column_type(st, i) == SQLITE_NULL) return json_null();
    double v = sqlite3_column_double(st, i);
    return isfinite(v) ? json_real(v) : json_null();
}

/* The parsers below return GX_ERR_INVALID with a message naming the field;
 * the handlers answer it as 400 bad_field. */

/* The run id of the path: a positive integer. */
static gx_status runs_path_id(srv_req *r, int64_t *id, gx_err *err) {
    long long v;
    gx_status s = gx_parse_int("run_id", r->rm.params[0], 1, INT64_MAX, &v, err);
    if (s == GX_OK) *id = v;
    return s;
}

/* ------------------------------------------------------------ run objects */

#define RUNS_COLS "r.id, r.model_kind, r.status, r.started_at, r.finished_at, r.seed, " \
                  "r.git_commit, r.command_line, r.config_json, " \
                  "(SELECT MAX(epoch) FROM metrics m WHERE m.run_id = r.id)"

static json_t *runs_row_json(sqlite3_stmt *st) {
    return json_pack("{s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
                     "id", (json_int_t)sqlite3_column_int64(st, 0),
                     "model_kind", runs_col_text(st, 1), "status", runs_col_text(st, 2),
                     "started_at", runs_col_text(st, 3), "finished_at", runs_col_text(st, 4),
                     "seed", sqlite3_column_type(st, 5) == SQLITE_NULL ? json_null()
                                                                        : json_integer(sqlite3_column_int64(st, 5)),
                     "git_commit", runs_col_text(st, 6), "command_line", runs_col_text(st, 7),
                     "config", runs_col_json(st, 8),
                     "last_epoch", sqlite3_column_type(st, 9) == SQLITE_NULL ? json_null()
                                                                             : json_integer(sqlite3_column_int64(st, 9)));
}

/* ?model_kind= and ?status= are optional filters, ?limit= 1..1000, and
 * ?cursor= the id after which (in id DESC order) the page starts: ids only
 * grow, so a page boundary is stable while new runs begin. */
typedef struct runs_list_q {
    const char *kind, *status;
    long long limit, cursor;       /* cursor 0 = first page */
} runs_list_q;

static gx_status runs_list_parse(srv_req *r, runs_list_q *q, gx_err *err) {
    const char *lim = srv_query(r, "limit"), *cur = srv_query(r, "cursor");
    q->kind = srv_query(r, "model_kind"), q->status = srv_query(r, "status");
    q->limit = RUNS_LIMIT_DEFAULT, q->cursor = 0;
    gx_status s = GX_OK;
    if (lim) s = gx_parse_int("limit", lim, 1, RUNS_LIMIT_MAX, &q->limit, err);
    if (s == GX_OK && cur) s = gx_parse_int("cursor", cur, 1, INT64_MAX, &q->cursor, err);
    if (s == GX_OK && q->kind) s = gx_parse_ident("model_kind", q->kind, err);
    if (s == GX_OK && q->status) s = gx_parse_ident("status", q->status, err);
    return s;
}

static enum MHD_Result runs_list_run(srv_req *r, sqlite3 *h, const runs_list_q *q) {
    sqlite3_stmt *st = NULL;
    const char *sql = "SELECT " RUNS_COLS " FROM runs r"
                      " WHERE (?1 IS NULL OR r.model_kind = ?1) AND (?2 IS NULL OR r.status = ?2)"
                      "   AND (?3 = 0 OR r.id < ?3) ORDER BY r.id DESC LIMIT ?4";
    if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK) return runs_sql_error(r, h, "runs");
    if (q->kind) sqlite3_bind_text(st, 1, q->kind, -1, SQLITE_STATIC);
    if (q->status) sqlite3_bind_text(st, 2, q->status, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, q->cursor);
    sqlite3_bind_int64(st, 4, q->limit + 1);   /* one more: is there a next page? */
    json_t *items = json_array();
    int rc, n = 0;
    int64_t last = 0, more = 0;
    while (items && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == q->limit) { more = 1; break; }
        last = sqlite3_column_int64(st, 0);
        if (json_array_append_new(items, runs_row_json(st)) != 0) { json_decref(items); items = NULL; }
        n++;
    }
    int bad = items && !more && rc != SQLITE_DONE;
    sqlite3_finalize(st);
    if (bad) { json_decref(items); return runs_sql_error(r, h, "runs"); }
    if (!items) return srv_error(r, 500, "internal", "out of memory listing runs");
    char next[24];
    snprintf(next, sizeof next, "%lld", (long long)last);
    return srv_json(r, 200, json_pack("{s:o, s:o}", "items", items,
                                      "next_cursor", more ? json_string(next) : json_null()));
}

static enum MHD_Result runs_list(srv_req *r) {
    runs_list_q q;
    gx_err err = { { 0 } };
    if (runs_list_parse(r, &q, &err) != GX_OK) return srv_error(r, 400, "bad_field", "%s", err.msg);
    gx_db *db = NULL;
    if (runs_db_open(r, &db, &err) != GX_OK)
        return srv_error(r, 500, "internal", "cannot open the database: %s", err.msg);
    enum MHD_Result ret = runs_list_run(r, gx_db_handle(db), &q);
    gx_db_close(db);
    return ret;
}

/* The (split, name) pairs a run has rows for, with their epoch count: what
 * the dashboard offers as charts without fetching every value first. */
static json_t *runs_series_index(sqlite3 *h, int64_t id) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(h, "SELECT split, name, COUNT(*), MIN(epoch), MAX(epoch) FROM metrics"
                              " WHERE run_id = ? GROUP BY split, name ORDER BY split, name",
                           -1, &st, NULL) != SQLITE_OK)
        return NULL;
    sqlite3_bind_int64(st, 1, id);
    json_t *arr = json_array();
    int rc;
    while (arr && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *o = json_pack("{s:o, s:o, s:I, s:I, s:I}", "split", runs_col_text(st, 0),
                              "name", runs_col_text(st, 1),
                              "n", (json_int_t)sqlite3_column_int64(st, 2),
                              "first_epoch", (json_int_t)sqlite3_column_int64(st, 3),
                              "last_epoch", (json_int_t)sqlite3_column_int64(st, 4));
        if (json_array_append_new(arr, o) != 0) { json_decref(arr); arr = NULL; }
    }
    if (arr && rc != SQLITE_DONE) { json_decref(arr); arr = NULL; }
    sqlite3_finalize(st);
    return arr;
}

/* The run row itself; *found = 0 when there is none. NULL on a database
 * error. */
static json_t *runs_get_row(sqlite3 *h, int64_t id, int *found) {
    sqlite3_stmt *st = NULL;
    *found = 0;
    if (sqlite3_prepare_v2(h, "SELECT " RUNS_COLS " FROM runs r WHERE r.id = ?", -1, &st, NULL) != SQLITE_OK)
        return NULL;
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    json_t *o = NULL;
    if (rc == SQLITE_ROW) *found = 1, o = runs_row_json(st);
    else if (rc == SQLITE_DONE) o = json_object();
    sqlite3_finalize(st);
    return o;
}

static enum MHD_Result runs_get_in(srv_req *r, sqlite3 *h, int64_t id) {
    int found;
    json_t *o = runs_get_row(h, id, &found);
    if (!o) return runs_sql_error(r, h, "the run");
    if (!found) { json_decref(o); return srv_error(r, 404, "not_found", "no run %lld in the database", (long long)id); }
    json_t *series = runs_series_index(h, id);
    if (!series) { json_decref(o); return runs_sql_error(r, h, "the run's metrics"); }
    json_object_set_new(o, "series", series);
    return srv_json(r, 200, o);
}

/* GX_ERR_NOTFOUND unless the run exists (so an empty metrics list means
 * "no rows yet", never "no such run"); GX_ERR_IO on a database error. */
static gx_status runs_exists(sqlite3 *h, int64_t id, gx_err *err) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(h, "SELECT 1 FROM runs WHERE id = ?", -1, &st, NULL) != SQLITE_OK)
        return gx_err_set(err, GX_ERR_IO, "database error reading runs: %s", sqlite3_errmsg(h));
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW) return GX_OK;
    if (rc == SQLITE_DONE) return gx_err_set(err, GX_ERR_NOTFOUND, "no run %lld in the database", (long long)id);
    return gx_err_set(err, GX_ERR_IO, "database error reading runs: %s", sqlite3_errmsg(h));
}

static enum MHD_Result runs_exists_error(srv_req *r, gx_status s, const gx_err *err) {
    return s == GX_ERR_NOTFOUND ? srv_error(r, 404, "not_found", "%s", err->msg)
                                : srv_error(r, 500, "internal", "%s", err->msg);
}

/* ------------------------------------------------------------ metrics */

typedef struct runs_metric_q {
    const char *split, *name;
    int long_format;
} runs_metric_q;

static gx_status runs_metric_parse(srv_req *r, runs_metric_q *q, gx_err *err) {
    const char *fmt = srv_query(r, "format");
    q->split = srv_query(r, "split"), q->name = srv_query(r, "name");
    gx_status s = GX_OK;
    if (q->split) s = gx_parse_ident("split", q->split, err);
    if (s == GX_OK && q->name) s = gx_parse_ident("name", q->name, err);
    if (s != GX_OK) return s;
    q->long_format = fmt && strcmp(fmt, "long") == 0;
    if (fmt && !q->long_format && strcmp(fmt, "series") != 0)
        return gx_err_set(err, GX_ERR_INVALID, "field 'format': '%.32s' is not series or long", fmt);
    return GX_OK;
}

/* Appends one row to the series object its (split, name) belongs to; rows
 * arrive ordered by (split, name, epoch), so that is the last one or a new
 * one. */
static int runs_series_add(json_t *series, sqlite3_stmt *st) {
    const char *split = (const char *)sqlite3_column_text(st, 1);
    const char *name = (const char *)sqlite3_column_text(st, 2);
    size_t n = json_array_size(series);
    json_t *cur = n ? json_array_get(series, n - 1) : NULL;
    if (!cur || strcmp(json_string_value(json_object_get(cur, "split")), split ? split : "") != 0 ||
        strcmp(json_string_value(json_object_get(cur, "name")), name ? name : "") != 0) {
        cur = json_pack("{s:s, s:s, s:[], s:[]}", "split", split ? split : "", "name", name ? name : "",
                        "epochs", "values");
        if (!cur || json_array_append_new(series, cur) != 0) return 0;
    }
    return json_array_append_new(json_object_get(cur, "epochs"), json_integer(sqlite3_column_int64(st, 0))) == 0 &&
           json_array_append_new(json_object_get(cur, "values"), runs_col_real(st, 3)) == 0;
}

static int runs_long_add(json_t *items, sqlite3_stmt *st) {
    json_t *o = json_pack("{s:I, s:o, s:o, s:o}", "epoch", (json_int_t)sqlite3_column_int64(st, 0),
                          "split", runs_col_text(st, 1), "name", runs_col_text(st, 2),
                          "value", runs_col_real(st, 3));
    return o && json_array_append_new(items, o) == 0;
}

static enum MHD_Result runs_metrics_in(srv_req *r, sqlite3 *h, int64_t id, const runs_metric_q *q) {
    gx_err err = { { 0 } };
    gx_status s = runs_exists(h, id, &err);
    if (s != GX_OK) return runs_exists_error(r, s, &err);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(h, "SELECT epoch, split, name, value FROM metrics WHERE run_id = ?1"
                              " AND (?2 IS NULL OR split = ?2) AND (?3 IS NULL OR name = ?3)"
                              " ORDER BY split, name, epoch LIMIT ?4", -1, &st, NULL) != SQLITE_OK)
        return runs_sql_error(r, h, "metrics");
    sqlite3_bind_int64(st, 1, id);
    if (q->split) sqlite3_bind_text(st, 2, q->split, -1, SQLITE_STATIC);
    if (q->name) sqlite3_bind_text(st, 3, q->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, RUNS_METRIC_ROWS_MAX);
    json_t *arr = json_array();
    int rc;
    while (arr && (rc = sqlite3_step(st)) == SQLITE_ROW)
        if (!(q->long_format ? runs_long_add(arr, st) : runs_series_add(arr, st))) { json_decref(arr); arr = NULL; }
    int bad = arr && rc != SQLITE_DONE;
    sqlite3_finalize(st);
    if (bad) { json_decref(arr); return runs_sql_error(r, h, "metrics"); }
    if (!arr) return srv_error(r, 500, "internal", "out of memory reading metrics");
    return srv_json(r, 200, json_pack("{s:I, s:o}", "run_id", (json_int_t)id,
                                      q->long_format ? "items" : "series", arr));
}

/* ------------------------------------------------------------ checkpoints */

static enum MHD_Result runs_checkpoints_in(srv_req *r, sqlite3 *h, int64_t id) {
    gx_err err = { { 0 } };
    gx_status s = runs_exists(h, id, &err);
    if (s != GX_OK) return runs_exists_error(r, s, &err);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(h, "SELECT id, epoch, kind, path, sha256, metrics_json, created_at FROM checkpoints"
                              " WHERE run_id = ? ORDER BY epoch, id", -1, &st, NULL) != SQLITE_OK)
        return runs_sql_error(r, h, "checkpoints");
    sqlite3_bind_int64(st, 1, id);
    json_t *arr = json_array();
    int rc;
    while (arr && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *o = json_pack("{s:I, s:I, s:o, s:o, s:o, s:o, s:o}",
                              "id", (json_int_t)sqlite3_column_int64(st, 0),
                              "epoch", (json_int_t)sqlite3_column_int64(st, 1),
                              "kind", runs_col_text(st, 2), "path", runs_col_text(st, 3),
                              "sha256", runs_col_text(st, 4), "metrics", runs_col_json(st, 5),
                              "created_at", runs_col_text(st, 6));
        if (!o || json_array_append_new(arr, o) != 0) { json_decref(arr); arr = NULL; }
    }
    int bad = arr && rc != SQLITE_DONE;
    sqlite3_finalize(st);
    if (bad) { json_decref(arr); return runs_sql_error(r, h, "checkpoints"); }
    if (!arr) return srv_error(r, 500, "internal", "out of memory reading checkpoints");
    return srv_json(r, 200, json_pack("{s:I, s:o}", "run_id", (json_int_t)id, "items", arr));
}

/* ------------------------------------------------------------ confusion */

/* ?epoch= is a 0-based epoch or "best" (the default); ?split= one split,
 * else the first present of RUNS_SPLIT_PREF (then any, alphabetically). */
typedef struct runs_conf_q {
    int         epoch;         /* -1: best */
    const char *split;
} runs_conf_q;

static const char *const RUNS_SPLIT_PREF[] = { "test", "target_test", "val", "source_test" };

static gx_status runs_conf_parse(srv_req *r, runs_conf_q *q, gx_err *err) {
    const char *ep = srv_query(r, "epoch");
    q->split = srv_query(r, "split");
    q->epoch = -1;
    if (ep && strcmp(ep, "best") != 0) {
        long long v;
        if (gx_parse_int("epoch", ep, 0, INT_MAX, &v, err) != GX_OK)
            return gx_err_set(err, GX_ERR_INVALID, "field 'epoch': '%.32s' is not an epoch (0-based) or best", ep);
        q->epoch = (int)v;
    }
    return q->split ? gx_parse_ident("split", q->split, err) : GX_OK;
}

/* One integer from SQL with ?1 = run, ?2 = epoch, ?3 = split (NULL: any;
 * a statement may leave ?2 or ?3 out: binding an absent one is a no-op);
 * *found = 0 when the row or the value is NULL. 0 on a database error. */
static int runs_conf_int(sqlite3 *h, const char *sql, int64_t run, int epoch, const char *split, int *v,
                         int *found) {
    sqlite3_stmt *st = NULL;
    *found = 0;
    if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK) return 0;
    sqlite3_bind_int64(st, 1, run);
    sqlite3_bind_int(st, 2, epoch);
    if (split) sqlite3_bind_text(st, 3, split, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) *v = sqlite3_column_int(st, 0), *found = 1;
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE;
}

#define RUNS_CONF_AT "SELECT 1 FROM confusion WHERE run_id = ?1 AND epoch = ?2 AND (?3 IS NULL OR split = ?3) LIMIT 1"

/* The epoch to show: the asked one; for "best" the epoch of the newest best
 * checkpoint (as the dashboard and galaxyd's loader pick it) when it has a
 * matrix, else the last epoch that has one. *why says which. *epoch = -1
 * when there is none. 0 on a database error. */
static int runs_conf_epoch(sqlite3 *h, int64_t run, const runs_conf_q *q, int *epoch, const char **why) {
    int v, found;
    *epoch = -1;
    if (q->epoch >= 0) {
        *why = "requested";
        if (!runs_conf_int(h, RUNS_CONF_AT, run, q->epoch, q->split, &v, &found)) return 0;
        if (found) *epoch = q->epoch;
        return 1;
    }
    if (!runs_conf_int(h, "SELECT epoch FROM checkpoints WHERE run_id = ?1 AND kind = 'best'"
                          " ORDER BY epoch DESC, id DESC LIMIT 1", run, 0, NULL, &v, &found))
        return 0;
    int best = v;
    if (found && !runs_conf_int(h, RUNS_CONF_AT, run, best, q->split, &v, &found)) return 0;
    if (found) { *epoch = best, *why = "best_checkpoint"; return 1; }
    if (!runs_conf_int(h, "SELECT MAX(epoch) FROM confusion WHERE run_id = ?1 AND (?3 IS NULL OR split = ?3)",
                       run, 0, q->split, &v, &found))
        return 0;
    if (found) *epoch = v, *why = "last_epoch";
    return 1;
}

/* The rank of a split in RUNS_SPLIT_PREF (the list's length when absent). */
static size_t runs_split_rank(const char *split) {
    size_t n = sizeof RUNS_SPLIT_PREF / sizeof RUNS_SPLIT_PREF[0], k = 0;
    if (!split) return n;
    while (k < n && strcmp(split, RUNS_SPLIT_PREF[k]) != 0) k++;
    return k;
}

/* The splits with a matrix at the epoch (JSON array): the preferred ones in
 * RUNS_SPLIT_PREF order, then the rest alphabetically. NULL on a database
 * error or out of memory. */
static json_t *runs_conf_splits(sqlite3 *h, int64_t run, int epoch) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(h, "SELECT DISTINCT split FROM confusion WHERE run_id = ?1 AND epoch = ?2 ORDER BY split",
                           -1, &st, NULL) != SQLITE_OK)
        return NULL;
    sqlite3_bind_int64(st, 1, run);
    sqlite3_bind_int(st, 2, epoch);
    json_t *all = json_array(), *out = json_array();
    int rc = SQLITE_DONE;
    while (all && (rc = sqlite3_step(st)) == SQLITE_ROW) json_array_append_new(all, runs_col_text(st, 0));
    sqlite3_finalize(st);
    size_t n = sizeof RUNS_SPLIT_PREF / sizeof RUNS_SPLIT_PREF[0], i;
    json_t *v;
    /* Pass p takes the splits of rank p; the last pass the unranked ones. */
    for (size_t p = 0; all && out && p <= n; p++)
        json_array_foreach(all, i, v)
            if (runs_split_rank(json_string_value(v)) == p) json_array_append(out, v);
    if (!all || rc != SQLITE_DONE) { json_decref(out); out = NULL; }
    json_decref(all);
    return out;
}

/* The run's class names padded to k ("class <i>" where unknown). */
static json_t *runs_conf_classes(sqlite3 *h, int64_t run, int k) {
    sqlite3_stmt *st = NULL;
    json_t *names = NULL, *out = json_array();
    if (sqlite3_prepare_v2(h, "SELECT classes_json FROM run_classes WHERE run_id = ?", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, run);
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
            names = json_loads((const char *)sqlite3_column_text(st, 0), 0, NULL);
        sqlite3_finalize(st);
    }
    for (int i = 0; out && i < k; i++) {
        const char *n = json_string_value(json_array_get(names, (size_t)i));
        char tmp[24];
        if (!n) snprintf(tmp, sizeof tmp, "class %d", i), n = tmp;
        json_array_append_new(out, json_string(n));
    }
    json_decref(names);
    return out;
}

/* matrix rows, recall = diagonal / row sum (null for an empty row), support. */
static json_t *runs_conf_body(const int64_t *c, int k) {
    json_t *m = json_array(), *rec = json_array(), *sup = json_array();
    int64_t n = 0, diag = 0;
    for (int t = 0; t < k; t++) {
        json_t *row = json_array();
        int64_t sum = 0;
        for (int p = 0; p < k; p++) sum += c[t * k + p], json_array_append_new(row, json_integer(c[t * k + p]));
        json_array_append_new(m, row);
        json_array_append_new(rec, sum ? json_real((double)c[t * k + t] / (double)sum) : json_null());
        json_array_append_new(sup, json_integer(sum));
        n += sum, diag += c[t * k + t];
    }
    return json_pack("{s:o, s:o, s:o, s:I, s:o}", "matrix", m, "recall", rec, "support", sup, "n", (json_int_t)n,
                     "accuracy", n ? json_real((double)diag / (double)n) : json_null());
}

static enum MHD_Result runs_confusion_in(srv_req *r, gx_db *db, int64_t id, const runs_conf_q *q) {
    sqlite3 *h = gx_db_handle(db);
    gx_err err = { { 0 } };
    gx_status s = runs_exists(h, id, &err);
    if (s != GX_OK) return runs_exists_error(r, s, &err);
    int epoch;
    const char *why = "";
    if (!runs_conf_epoch(h, id, q, &epoch, &why)) return runs_sql_error(r, h, "confusion matrices");
    if (epoch < 0) {
        char at[32] = "";
        if (q->epoch >= 0) snprintf(at, sizeof at, " at epoch %d", q->epoch);
        return srv_error(r, 404, "not_found", "run %lld has no %s%sconfusion matrix%s (trainers store one per "
                         "evaluated epoch since schema 0006)", (long long)id, q->split ? q->split : "",
                         q->split ? " " : "", at);
    }
    json_t *splits = runs_conf_splits(h, id, epoch);
    if (!splits) return runs_sql_error(r, h, "confusion splits");
    const char *split = q->split ? q->split : json_string_value(json_array_get(splits, 0));
    int64_t *c = malloc(sizeof *c * GX_METRICS_CONFUSION_MAX_K * GX_METRICS_CONFUSION_MAX_K);
    int k = 0;
    if (!c) s = gx_err_set(&err, GX_ERR_NOMEM, "out of memory");
    else s = gx_metrics_confusion_get(db, id, epoch, split, c, GX_METRICS_CONFUSION_MAX_K, &k, &err);
    json_t *o = s == GX_OK ? runs_conf_body(c, k) : NULL;
    free(c);
    if (s != GX_OK || !o) {
        json_decref(splits);
        return s == GX_ERR_NOTFOUND ? srv_error(r, 404, "not_found", "%s", err.msg)
                                    : srv_error(r, 500, "internal", "reading the confusion matrix: %s",
                                                s != GX_OK ? err.msg : "out of memory");
    }
    json_object_set_new(o, "run_id", json_integer(id));
    json_object_set_new(o, "epoch", json_integer(epoch));
    json_object_set_new(o, "epoch_source", json_string(why));
    json_object_set_new(o, "split", json_string(split));
    json_object_set_new(o, "splits", splits);
    json_object_set_new(o, "classes", runs_conf_classes(h, id, k));
    return srv_json(r, 200, o);
}

/* ------------------------------------------------------------ reports */

/* ?runs=1,2,3 (at most GX_REPORT_MAX_RUNS ids) into ids and *n; absent =
 * *n 0: every run the report covers. */
static gx_status runs_report_ids(srv_req *r, int64_t *ids, int *n, gx_err *err) {
    const char *v = srv_query(r, "runs");
    *n = 0;
    for (const char *p = v; p && *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char tok[24];
        long long id;
        if (len == 0 || len >= sizeof tok || (e && !e[1]))
            return gx_err_set(err, GX_ERR_INVALID, "field 'runs': '%.64s' is not a comma-separated list of run ids", v);
        if (*n == GX_REPORT_MAX_RUNS)
            return gx_err_set(err, GX_ERR_INVALID, "field 'runs': more than %d run ids", GX_REPORT_MAX_RUNS);
        memcpy(tok, p, len), tok[len] = 0;
        gx_status s = gx_parse_int("runs", tok, 1, INT64_MAX, &id, err);
        if (s != GX_OK) return s;
        ids[(*n)++] = id;
        p += len + (e ? 1 : 0);
    }
    return GX_OK;
}

static enum MHD_Result runs_report(srv_req *r) {
    int kind = gx_report_kind_parse(r->rm.params[0]);
    if (kind < 0)
        return srv_error(r, 404, "not_found", "no report '%.64s' (reports: bias, compare, uda, two-models)", r->rm.params[0]);
    int64_t ids[GX_REPORT_MAX_RUNS];
    int n;
    gx_err err = { { 0 } };
    if (runs_report_ids(r, ids, &n, &err) != GX_OK) return srv_error(r, 400, "bad_field", "%s", err.msg);
    gx_db *db = NULL;
    if (runs_db_open(r, &db, &err) != GX_OK)
        return srv_error(r, 500, "internal", "cannot open the database: %s", err.msg);
    gx_report_opts o = { .kind = (gx_report_kind)kind, .runs = n ? ids : NULL, .n_runs = n, .source = NULL };
    char *md = NULL;
    gx_status s = gx_report_markdown(db, &o, &md, &err);
    gx_db_close(db);
    if (s == GX_ERR_NOTFOUND) return srv_error(r, 404, "not_found", "%s", err.msg);
    if (s == GX_ERR_INVALID) return srv_error(r, 400, "bad_field", "%s", err.msg);
    if (s != GX_OK) return srv_error(r, 500, "internal", "report failed: %s", err.msg);
    return srv_respond(r, 200, "text/markdown; charset=utf-8", md, strlen(md), NULL);
}

/* ------------------------------------------------------------ dispatch */

enum MHD_Result srv_runs_dispatch(srv_req *r) {
    if (r->rm.id == GX_RT_RUNS) return runs_list(r);
    if (r->rm.id == GX_RT_REPORT) return runs_report(r);
    int64_t id;
    runs_metric_q mq = { 0 };
    runs_conf_q cq = { -1, NULL };
    gx_err err = { { 0 } };
    gx_status s = runs_path_id(r, &id, &err);
    if (s == GX_OK && r->rm.id == GX_RT_RUN_METRICS) s = runs_metric_parse(r, &mq, &err);
    if (s == GX_OK && r->rm.id == GX_RT_RUN_CONFUSION) s = runs_conf_parse(r, &cq, &err);
    if (s != GX_OK) return srv_error(r, 400, "bad_field", "%s", err.msg);
    gx_db *db = NULL;
    if (runs_db_open(r, &db, &err) != GX_OK)
        return srv_error(r, 500, "internal", "cannot open the database: %s", err.msg);
    sqlite3 *h = gx_db_handle(db);
    enum MHD_Result ret;
    switch (r->rm.id) {
    case GX_RT_RUN:             ret = runs_get_in(r, h, id); break;
    case GX_RT_RUN_METRICS:     ret = runs_metrics_in(r, h, id, &mq); break;
    case GX_RT_RUN_CHECKPOINTS: ret = runs_checkpoints_in(r, h, id); break;
    case GX_RT_RUN_CONFUSION:   ret = runs_confusion_in(r, db, id, &cq); break;
    default: ret = srv_error(r, 404, "not_found", "no route for %s %s", r->method, r->path); break;
    }
    gx_db_close(db);
    return ret;
}
