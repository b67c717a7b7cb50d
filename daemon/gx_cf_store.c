/*
 * gx_cf_store.c — the counterfactual result cache (contract in
 * gx_cf_store.h; table cf_results, migrations/0004_counterfactuals.sql).
 *
 * put() is one transaction: drop what expired, evict the oldest held rows
 * while the new result would not fit, insert. Dropping sets the blobs to
 * NULL and bytes to 0 and records why, so the size cap is simply
 * SUM(bytes) and a stale URL can still be told apart from a mistyped one.
 * Dropped rows older than GX_CF_TOMBSTONE_MS are deleted in the same
 * transaction, which bounds the table by the request rate of one week.
 */
#include "gx_cf_store.h"

#include "gx_db.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How long a dropped row keeps answering "expired"/"evicted". */
#define GX_CF_TOMBSTONE_MS ((int64_t)7 * 24 * 3600 * 1000)

struct gx_cf_store {
    pthread_mutex_t mu;
    gx_db *db;
    gx_cf_store_opts o;
};

int64_t gx_cf_store_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static gx_status cs_sql_err(gx_cf_store *s, gx_err *err, const char *what) {
    return gx_err_set(err, GX_ERR_IO, "counterfactual store: %s: %s", what,
                      sqlite3_errmsg(gx_db_handle(s->db)));
}

gx_status gx_cf_store_open(gx_cf_store **out, const char *db_path, const gx_cf_store_opts *o,
                           gx_err *err) {
    *out = NULL;
    if (!o || o->max_bytes < 1) return gx_err_set(err, GX_ERR_INVALID, "--cf-cache-mb: must be >= 1");
    if (o->ttl_ms < 1) return gx_err_set(err, GX_ERR_INVALID, "--cf-ttl-s: must be >= 1");
    gx_cf_store *s = calloc(1, sizeof *s);
    if (!s) return gx_err_set(err, GX_ERR_NOMEM, "counterfactual store: out of memory");
    if (pthread_mutex_init(&s->mu, NULL)) {
        free(s);
        return gx_err_set(err, GX_ERR_NOMEM, "counterfactual store: cannot create a mutex");
    }
    gx_status st = gx_db_open(&s->db, db_path, err);
    if (st != GX_OK) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        return st;
    }
    s->o = *o;
    *out = s;
    return GX_OK;
}

void gx_cf_store_close(gx_cf_store *s) {
    if (!s) return;
    gx_db_close(s->db);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

void gx_cf_record_free(gx_cf_record *r) {
    if (!r) return;
    free(r->result_json);
    free(r->x);
    free(r->xrec);
    free(r->xcf);
    r->result_json = NULL;
    r->x = r->xrec = r->xcf = NULL;
}

/* ------------------------------------------------------------ put */

static int cs_id_ok(const char *id) {
    size_t n = strnlen(id, GX_CF_STORE_ID_MAX);
    if (n == 0 || n >= GX_CF_STORE_ID_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static gx_status cs_check(const gx_cf_record *r, gx_err *err) {
    if (!cs_id_ok(r->id)) return gx_err_set(err, GX_ERR_INVALID, "counterfactual store: bad id");
    if (!cs_id_ok(r->group_id)) return gx_err_set(err, GX_ERR_INVALID, "counterfactual store: bad group id");
    if (r->size < 1 || r->size > 4096)
        return gx_err_set(err, GX_ERR_INVALID, "counterfactual store: size %d not in 1..4096", r->size);
    if (r->n_targets < 0 || r->n_targets > GX_CF_STORE_MAX_TARGETS)
        return gx_err_set(err, GX_ERR_INVALID, "counterfactual store: %d targets (at most %d)", r->n_targets,
                          GX_CF_STORE_MAX_TARGETS);
    if (!r->x || !r->xrec || (r->n_targets > 0 && !r->xcf) || !r->result_json)
        return gx_err_set(err, GX_ERR_INVALID, "counterfactual store: record without its images or JSON");
    return GX_OK;
}

/* Runs one statement with up to two integer parameters. */
static gx_status cs_exec_ii(gx_cf_store *s, const char *sql, int64_t a, int64_t b, gx_err *err) {
    sqlite3_stmt *st = NULL;
    sqlite3 *h = gx_db_handle(s->db);
    if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK) return cs_sql_err(s, err, "prepare");
    int np = sqlite3_bind_parameter_count(st);
    if (np >= 1) sqlite3_bind_int64(st, 1, a);
    if (np >= 2) sqlite3_bind_int64(st, 2, b);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? GX_OK : cs_sql_err(s, err, "write");
}

/* One integer from a query with one integer parameter. */
static gx_status cs_scalar(gx_cf_store *s, const char *sql, int64_t a, int64_t *v, gx_err *err) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(gx_db_handle(s->db), sql, -1, &st, NULL) != SQLITE_OK) return cs_sql_err(s, err, "prepare");
    if (sqlite3_bind_parameter_count(st) >= 1) sqlite3_bind_int64(st, 1, a);
    int rc = sqlite3_step(st);
    *v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? GX_OK : cs_sql_err(s, err, "read");
}

#define CS_DROP "UPDATE cf_results SET x = NULL, xrec = NULL, xcf = NULL, bytes = 0, "

/* Expired results lose their images; old tombstones go. */
static gx_status cs_expire(gx_cf_store *s, int64_t now_ms, gx_err *err) {
    gx_status st = cs_exec_ii(s, CS_DROP "dropped = 'expired' WHERE dropped IS NULL AND expires_ms <= ?1",
                              now_ms, 0, err);
    if (st == GX_OK)
        st = cs_exec_ii(s, "DELETE FROM cf_results WHERE dropped IS NOT NULL AND expires_ms <= ?1",
                        now_ms - GX_CF_TOMBSTONE_MS, 0, err);
    return st;
}

/* Evicts the oldest held results until `need` more bytes fit. */
static gx_status cs_make_room(gx_cf_store *s, int64_t need, gx_err *err) {
    int64_t held = 0;
    gx_status st = cs_scalar(s, "SELECT COALESCE(SUM(bytes), 0) FROM cf_results WHERE dropped IS NULL", 0, &held,
                             err);
    while (st == GX_OK && held + need > s->o.max_bytes) {
        int64_t rowid = 0, bytes = 0;
        st = cs_scalar(s, "SELECT rowid FROM cf_results WHERE dropped IS NULL ORDER BY created_ms, rowid LIMIT 1",
                       0, &rowid, err);
        if (st == GX_OK) st = cs_scalar(s, "SELECT bytes FROM cf_results WHERE rowid = ?1", rowid, &bytes, err);
        if (st != GX_OK) break;
        if (rowid == 0) break;   /* nothing left to evict (cannot happen: need <= max_bytes) */
        st = cs_exec_ii(s, CS_DROP "dropped = 'evicted' WHERE rowid = ?1", rowid, 0, err);
        held -= bytes;
    }
    return st;
}

static gx_status cs_insert(gx_cf_store *s, const gx_cf_record *r, int64_t now_ms, size_t img, gx_err *err) {
    char targets[GX_CF_STORE_MAX_TARGETS * 24 + 4];
    size_t k = 0;
    targets[k++] = '[';
    for (int i = 0; i < r->n_targets; i++)
        k += (size_t)snprintf(targets + k, sizeof targets - k, "%s%lld", i ? "," : "", (long long)r->targets[i]);
    snprintf(targets + k, sizeof targets - k, "]");
    static const char sql[] =
        "INSERT INTO cf_results (id, group_id, input_index, model_name, model_version, size, source_class,"
        " targets_json, result_json, x, xrec, xcf, bytes, created_ms, expires_ms)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)";
    sqlite3_stmt *st = NULL;
    sqlite3 *h = gx_db_handle(s->db);
    if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK) return cs_sql_err(s, err, "prepare");
    sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->group_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, r->input_index);
    sqlite3_bind_text(st, 4, r->model_name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, r->model_version, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 6, r->size);
    sqlite3_bind_int64(st, 7, r->source_class);
    sqlite3_bind_text(st, 8, targets, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 9, r->result_json, -1, SQLITE_STATIC);
    sqlite3_bind_blob64(st, 10, r->x, img, SQLITE_STATIC);
    sqlite3_bind_blob64(st, 11, r->xrec, img, SQLITE_STATIC);
    if (r->n_targets > 0) sqlite3_bind_blob64(st, 12, r->xcf, img * (size_t)r->n_targets, SQLITE_STATIC);
    else sqlite3_bind_zeroblob(st, 12, 0);
    sqlite3_bind_int64(st, 13, (int64_t)(img * (size_t)(2 + r->n_targets)));
    sqlite3_bind_int64(st, 14, now_ms);
    sqlite3_bind_int64(st, 15, now_ms + s->o.ttl_ms);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if ((rc & 0xff) == SQLITE_CONSTRAINT)   /* extended codes may be on */
        return gx_err_set(err, GX_ERR_INVALID, "counterfactual store: id '%s' is already stored", r->id);
    return rc == SQLITE_DONE ? GX_OK : cs_sql_err(s, err, "insert");
}

gx_status gx_cf_store_put(gx_cf_store *s, const gx_cf_record *r, int64_t now_ms, gx_err *err) {
    gx_status st = cs_check(r, err);
    if (st != GX_OK) return st;
    size_t img = (size_t)3 * (size_t)r->size * (size_t)r->size * sizeof(float);
    int64_t need = (int64_t)(img * (size_t)(2 + r->n_targets));
    if (need > s->o.max_bytes)
        return gx_err_set(err, GX_ERR_NOMEM, "counterfactual result of %lld bytes exceeds the cache of %lld bytes "
                          "(--cf-cache-mb)", (long long)need, (long long)s->o.max_bytes);
    pthread_mutex_lock(&s->mu);
    st = gx_db_begin(s->db, err);
    if (st == GX_OK) {
        st = cs_expire(s, now_ms, err);
        if (st == GX_OK) st = cs_make_room(s, need, err);
        if (st == GX_OK) st = cs_insert(s, r, now_ms, img, err);
        if (st == GX_OK) st = gx_db_commit(s->db, err);
        else gx_db_rollback(s->db);
    }
    pthread_mutex_unlock(&s->mu);
    return st;
}

/* ------------------------------------------------------------ get */

/* Copies a blob of exactly n bytes into a new buffer. */
static gx_status cs_blob(sqlite3_stmt *st, int col, size_t n, float **out, const char *id, gx_err *err) {
    const void *b = sqlite3_column_blob(st, col);
    if ((size_t)sqlite3_column_bytes(st, col) != n || (n > 0 && !b))
        return gx_err_set(err, GX_ERR_FORMAT, "counterfactual '%s': stored image has %d bytes, want %zu", id,
                          sqlite3_column_bytes(st, col), n);
    *out = malloc(n ? n : 1);
    if (!*out) return gx_err_set(err, GX_ERR_NOMEM, "counterfactual '%s': out of memory", id);
    if (n) memcpy(*out, b, n);
    return GX_OK;
}

/* "[1,2,3]" -> targets (integers only; what cs_insert wrote). */
static gx_status cs_parse_targets(const char *t, gx_cf_record *r, gx_err *err) {
    r->n_targets = 0;
    const char *p = t && *t == '[' ? t + 1 : NULL;
    while (p && *p && *p != ']') {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || r->n_targets >= GX_CF_STORE_MAX_TARGETS) { p = NULL; break; }
        r->targets[r->n_targets++] = v;
        p = *end == ',' ? end + 1 : end;
    }
    if (!p || *p != ']') return gx_err_set(err, GX_ERR_FORMAT, "counterfactual '%s': bad targets_json", r->id);
    return GX_OK;
}

static void cs_copy_text(sqlite3_stmt *st, int col, char *dst, size_t n) {
    const unsigned char *t = sqlite3_column_text(st, col);
    snprintf(dst, n, "%s", t ? (const char *)t : "");
}

static gx_status cs_row(sqlite3_stmt *st, gx_cf_record *r, gx_err *err) {
    cs_copy_text(st, 0, r->group_id, sizeof r->group_id);
    r->input_index = sqlite3_column_int(st, 1);
    cs_copy_text(st, 2, r->model_name, sizeof r->model_name);
    cs_copy_text(st, 3, r->model_version, sizeof r->model_version);
    r->size = sqlite3_column_int(st, 4);
    r->source_class = sqlite3_column_int64(st, 5);
    gx_status s = cs_parse_targets((const char *)sqlite3_column_text(st, 6), r, err);
    const unsigned char *js = sqlite3_column_text(st, 7);
    if (s == GX_OK && !(r->result_json = strdup(js ? (const char *)js : "{}")))
        s = gx_err_set(err, GX_ERR_NOMEM, "counterfactual '%s': out of memory", r->id);
    size_t img = (size_t)3 * (size_t)r->size * (size_t)r->size * sizeof(float);
    if (s == GX_OK) s = cs_blob(st, 8, img, &r->x, r->id, err);
    if (s == GX_OK) s = cs_blob(st, 9, img, &r->xrec, r->id, err);
    if (s == GX_OK) s = cs_blob(st, 10, img * (size_t)r->n_targets, &r->xcf, r->id, err);
    r->created_ms = sqlite3_column_int64(st, 11);
    r->expires_ms = sqlite3_column_int64(st, 12);
    if (s != GX_OK) gx_cf_record_free(r);
    return s;
}

/* The NOTFOUND message for a row that is gone (or never was). */
static gx_status cs_gone(gx_cf_record *out, const char *id, const char *why, int64_t expires_ms,
                         int64_t now_ms, const gx_cf_store *s, gx_err *err) {
    int64_t ago = (now_ms - expires_ms) / 1000;
    snprintf(out->dropped, sizeof out->dropped, "%s", why);
    if (!strcmp(why, "expired"))
        return gx_err_set(err, GX_ERR_NOTFOUND, "counterfactual '%s' expired %lld s ago (results are kept %lld s: "
                          "--cf-ttl-s); POST /v1/counterfactuals again", id,
                          (long long)(ago > 0 ? ago : 0),
                          (long long)(s->o.ttl_ms / 1000));
    if (!strcmp(why, "evicted"))
        return gx_err_set(err, GX_ERR_NOTFOUND, "counterfactual '%s' was evicted to keep the cache under %lld MiB "
                          "(--cf-cache-mb); POST /v1/counterfactuals again", id,
                          (long long)(s->o.max_bytes >> 20));
    return gx_err_set(err, GX_ERR_NOTFOUND, "counterfactual '%s' is unknown", id);
}

gx_status gx_cf_store_get(gx_cf_store *s, const char *id, int64_t now_ms, gx_cf_record *out, gx_err *err) {
    memset(out, 0, sizeof *out);
    if (!id || !cs_id_ok(id)) return cs_gone(out, id ? "(bad id)" : "(null)", "", 0, now_ms, s, err);
    snprintf(out->id, sizeof out->id, "%s", id);
    static const char sql[] =
        "SELECT group_id, input_index, model_name, model_version, size, source_class, targets_json, result_json,"
        " x, xrec, xcf, created_ms, expires_ms, dropped FROM cf_results WHERE id = ?1";
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st = NULL;
    gx_status res = GX_OK;
    if (sqlite3_prepare_v2(gx_db_handle(s->db), sql, -1, &st, NULL) != SQLITE_OK) {
        res = cs_sql_err(s, err, "prepare");
    } else {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) {
            res = cs_gone(out, id, "", 0, now_ms, s, err);
        } else if (rc != SQLITE_ROW) {
            res = cs_sql_err(s, err, "read");
        } else {
            const unsigned char *d = sqlite3_column_text(st, 13);
            int64_t exp = sqlite3_column_int64(st, 12);
            if (d) res = cs_gone(out, id, (const char *)d, exp, now_ms, s, err);
            else if (exp <= now_ms) res = cs_gone(out, id, "expired", exp, now_ms, s, err);
            else res = cs_row(st, out, err);
        }
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->mu);
    return res;
}

gx_status gx_cf_store_group(gx_cf_store *s, const char *group_id, char (*ids)[GX_CF_STORE_ID_MAX], int cap,
                            int *n, gx_err *err) {
    *n = 0;
    if (!group_id || !cs_id_ok(group_id)) return gx_err_set(err, GX_ERR_NOTFOUND, "counterfactual group is unknown");
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st = NULL;
    gx_status res = GX_OK;
    if (sqlite3_prepare_v2(gx_db_handle(s->db), "SELECT id FROM cf_results WHERE group_id = ?1 ORDER BY input_index",
                           -1, &st, NULL) != SQLITE_OK) {
        res = cs_sql_err(s, err, "prepare");
    } else {
        sqlite3_bind_text(st, 1, group_id, -1, SQLITE_STATIC);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (*n < cap) cs_copy_text(st, 0, ids[*n], GX_CF_STORE_ID_MAX);
            (*n)++;
        }
        if (rc != SQLITE_DONE) res = cs_sql_err(s, err, "read");
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->mu);
    if (res == GX_OK && *n == 0) res = gx_err_set(err, GX_ERR_NOTFOUND, "counterfactual '%s' is unknown", group_id);
    return res;
}

gx_status gx_cf_store_usage(gx_cf_store *s, int64_t *rows, int64_t *bytes, gx_err *err) {
    pthread_mutex_lock(&s->mu);
    gx_status st = cs_scalar(s, "SELECT COUNT(*) FROM cf_results WHERE dropped IS NULL", 0, rows, err);
    if (st == GX_OK)
        st = cs_scalar(s, "SELECT COALESCE(SUM(bytes), 0) FROM cf_results WHERE dropped IS NULL", 0, bytes, err);
    pthread_mutex_unlock(&s->mu);
    return st;
}
