/*
 * gx_anomaly_store.c — stored anomaly scores (contract: gx_anomaly_store.h;
 * schema: migrations/0001_init.sql + 0003_anomaly.sql).
 *
 * Design:
 *  - Writes: one object row per (external_id, image_sha256) — the same
 *    lookup daemon/gx_store.c uses for predictions, so a cutout that was
 *    both classified and scored is one object — then INSERT ... ON CONFLICT
 *    (object_id, model_id) DO NOTHING on the unique index of 0003. A
 *    re-sent image therefore costs two index lookups and writes nothing,
 *    which is what makes `galaxy-train score` resumable by simply running
 *    it again.
 *  - Transactions: gx_anomaly_put and gx_anomaly_put_many each run in one
 *    transaction (BEGIN IMMEDIATE through gx_db_begin: take the write lock
 *    up front instead of failing to upgrade a read lock under a concurrent
 *    writer); inside a caller's own transaction they use a savepoint, so an
 *    error still undoes exactly this call.
 *  - Reads: keyset pagination in (score DESC, id DESC). The filters pick
 *    which of the 0003 indexes leads (model / survey / model+survey / none),
 *    the cursor is a row-value bound on that index, and the join to objects
 *    and served_models is forced to be the inner loop (CROSS JOIN), so a page
 *    is one index range scan with no sort (tests check EXPLAIN QUERY PLAN).
 *    The SQL text has only the clauses in use (no "? IS NULL OR ..." that
 *    would defeat the indexes); it is prepared per call, which costs
 *    microseconds against a page of up to 1000 rows.
 *  - Thumbnails (0007): written after the score row of the same call, so
 *    they share its transaction; encoded only when the image has none yet
 *    (one primary-key lookup first), so a re-sent image costs no PNG
 *    encoding. A row's version and whether a thumbnail exists are
 *    correlated subqueries on the objects_external_sha index and the
 *    thumbnails' primary key: per row of a page, never a scan or a sort.
 */
#include "gx_anomaly_store.h"
#include "gx_image.h"

#include <limits.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ helpers */

gx_status gx_anomaly_sql_status(int rc) {
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT: case SQLITE_MISMATCH: case SQLITE_RANGE: return GX_ERR_INVALID;
    case SQLITE_NOTADB: case SQLITE_CORRUPT: return GX_ERR_FORMAT;
    case SQLITE_NOMEM: return GX_ERR_NOMEM;
    default: return GX_ERR_IO;
    }
}

static gx_status as_fail(sqlite3 *h, int rc, gx_err *err, const char *what) {
    return gx_err_set(err, gx_anomaly_sql_status(rc), "anomaly store: %s: %s", what, sqlite3_errmsg(h));
}

void gx_anomaly_bind_text(sqlite3_stmt *st, int i, const char *v) {
    if (v) sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(st, i);
}

void gx_anomaly_bind_real(sqlite3_stmt *st, int i, double v) {
    if (isnan(v)) sqlite3_bind_null(st, i);
    else sqlite3_bind_double(st, i, v);
}

void gx_anomaly_stmt_reset(sqlite3_stmt *st) {
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

int gx_anomaly_is_hex64(const char *h) {
    if (!h) return 0;
    for (int i = 0; i < 64; i++)
        if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f'))) return 0;
    return h[64] == 0;
}

static void as_copy_col(sqlite3_stmt *st, int c, char *dst, size_t n) {
    const unsigned char *t = sqlite3_column_text(st, c);
    snprintf(dst, n, "%s", t ? (const char *)t : "");
}

static double as_col_real(sqlite3_stmt *st, int c) {
    return sqlite3_column_type(st, c) == SQLITE_NULL ? NAN : sqlite3_column_double(st, c);
}

/* ---------------------------------------------------------- transactions */

/* One call = one transaction, or a savepoint inside the caller's. */
typedef struct as_txn { gx_db *db; int nested; } as_txn;

static gx_status as_txn_begin(as_txn *t, gx_db *db, gx_err *err) {
    t->db = db;
    t->nested = !sqlite3_get_autocommit(gx_db_handle(db));
    return t->nested ? gx_db_exec(db, "SAVEPOINT gx_anomaly", err) : gx_db_begin(db, err);
}

static gx_status as_txn_end(as_txn *t, gx_status s, gx_err *err) {
    if (s == GX_OK) {
        s = t->nested ? gx_db_exec(t->db, "RELEASE gx_anomaly", err) : gx_db_commit(t->db, err);
        if (s == GX_OK) return GX_OK;
    }
    if (t->nested) {
        gx_db_exec(t->db, "ROLLBACK TO gx_anomaly", NULL);
        gx_db_exec(t->db, "RELEASE gx_anomaly", NULL);
    } else {
        gx_db_rollback(t->db);
    }
    return s;
}

/* -------------------------------------------------------------- models */

gx_status gx_anomaly_model_id(gx_db *db, const char *name, const char *sha256, const char *path,
                              double threshold, const char *classes_json, int64_t *id, gx_err *err) {
    *id = 0;
    if (!db || !name || !*name || !path)
        return gx_err_set(err, GX_ERR_INVALID, "anomaly store: model name and path are required");
    if (!gx_anomaly_is_hex64(sha256))
        return gx_err_set(err, GX_ERR_INVALID, "anomaly store: model sha256 must be 64 lowercase hex digits");
    sqlite3 *h = gx_db_handle(db);
    /* DO NOTHING: galaxyd may register the same (name, version) between a
     * find and an insert; the find after the insert sees whichever row won. */
    static const char *const sql[2] = {
        "INSERT INTO served_models (name, version, model_kind, checkpoint_path, checkpoint_sha256,"
        " classes_json, anomaly_threshold) VALUES (?1, ?2, 'uda', ?3, ?2, ?4, ?5)"
        " ON CONFLICT (name, version) DO NOTHING",
        "SELECT id FROM served_models WHERE name = ?1 AND version = ?2",
    };
    gx_status s = GX_OK;
    for (int k = 0; k < 2 && s == GX_OK; k++) {
        sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v2(h, sql[k], -1, &st, NULL);
        if (rc != SQLITE_OK) return as_fail(h, rc, err, "prepare model");
        gx_anomaly_bind_text(st, 1, name);
        gx_anomaly_bind_text(st, 2, sha256);
        if (k == 0) {
            gx_anomaly_bind_text(st, 3, path);
            gx_anomaly_bind_text(st, 4, classes_json);
            gx_anomaly_bind_real(st, 5, threshold);
        }
        rc = sqlite3_step(st);
        if (k == 0 && rc != SQLITE_DONE) s = as_fail(h, rc, err, "register model");
        if (k == 1 && rc == SQLITE_ROW) *id = sqlite3_column_int64(st, 0);
        else if (k == 1) s = as_fail(h, rc, err, "find model");
        sqlite3_finalize(st);
    }
    return s;
}

/* --------------------------------------------------------------- writes */

/* The statements of one put / put_many call, prepared once for all rows. */
typedef struct as_put_stmts {
    sqlite3 *h;
    sqlite3_stmt *obj_find, *obj_ins, *score_ins, *score_get, *thumb_has, *thumb_ins;
} as_put_stmts;

static void as_put_close(as_put_stmts *p) {
    sqlite3_finalize(p->obj_find);
    sqlite3_finalize(p->obj_ins);
    sqlite3_finalize(p->score_ins);
    sqlite3_finalize(p->score_get);
    sqlite3_finalize(p->thumb_has);
    sqlite3_finalize(p->thumb_ins);
}

static gx_status as_put_open(as_put_stmts *p, gx_db *db, gx_err *err) {
    memset(p, 0, sizeof *p);
    p->h = gx_db_handle(db);
    struct { sqlite3_stmt **st; const char *sql; } q[] = {
        { &p->obj_find,
          "SELECT id FROM objects WHERE external_id = ?1 AND image_sha256 = ?2 ORDER BY id LIMIT 1" },
        { &p->obj_ins,
          "INSERT INTO objects (external_id, image_sha256, format, width, height, bands, ra, dec, survey)"
          " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)" },
        { &p->score_ins,
          "INSERT INTO anomaly_scores (object_id, model_id, score, threshold, is_anomaly, class_index,"
          " image_sha256, survey, ra, dec, class_name) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
          " ON CONFLICT (object_id, model_id) DO NOTHING" },
        { &p->score_get,
          "SELECT id, created_at FROM anomaly_scores WHERE object_id = ?1 AND model_id = ?2" },
        { &p->thumb_has, "SELECT 1 FROM anomaly_thumbs WHERE image_sha256 = ?1" },
        { &p->thumb_ins,
          "INSERT OR IGNORE INTO anomaly_thumbs (image_sha256, png, width, height) VALUES (?1, ?2, ?3, ?3)" },
    };
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        int rc = sqlite3_prepare_v2(p->h, q[i].sql, -1, q[i].st, NULL);
        if (rc != SQLITE_OK) {
            gx_status s = as_fail(p->h, rc, err, "prepare");
            as_put_close(p);
            return s;
        }
    }
    return GX_OK;
}

/* Refuses a record the tables would store wrongly, naming the field. */
static gx_status as_rec_check(const gx_anomaly_rec *r, gx_err *err) {
    if (!r->external_id || !*r->external_id)
        return gx_err_set(err, GX_ERR_INVALID, "anomaly store: external_id is required");
    if (strlen(r->external_id) >= sizeof ((gx_anomaly_row *)0)->object_id)
        return gx_err_set(err, GX_ERR_INVALID, "anomaly store: external_id longer than %zu bytes",
                          sizeof ((gx_anomaly_row *)0)->object_id - 1);
    if (!gx_anomaly_is_hex64(r->image_sha256))
        return gx_err_set(err, GX_ERR_INVALID, "anomaly store: image_sha256 of '%s' must be 64 lowercase hex",
                          r->external_id);
    if (r->model_id <= 0) return gx_err_set(err, GX_ERR_INVALID, "anomaly store: model_id must be >= 1");
    if (!isfinite(r->score))
        return gx_err_set(err, GX_ERR_INVALID, "anomaly store: score of '%s' is not finite", r->external_id);
    if (r->is_anomaly != 0 && r->is_anomaly != 1)
        return gx_err_set(err, GX_ERR_INVALID, "anomaly store: is_anomaly must be 0 or 1");
    if (r->thumb_x && (r->thumb_side < 1 || r->thumb_side > 4096))
        return gx_err_set(err, GX_ERR_INVALID, "anomaly store: thumb_side of '%s' must be in [1, 4096]",
                          r->external_id);
    if (r->thumb_png && (r->thumb_png_n < 1 || r->thumb_png_n > INT_MAX || r->thumb_png_side < 1 ||
                         r->thumb_png_side > 4096))
        return gx_err_set(err, GX_ERR_INVALID, "anomaly store: thumbnail PNG of '%s': %zu bytes, side %d",
                          r->external_id, r->thumb_png_n, r->thumb_png_side);
    return GX_OK;
}

/* The object row of (external_id, sha), inserted when new. */
static gx_status as_object_row(as_put_stmts *p, const gx_anomaly_rec *r, int64_t *row, gx_err *err) {
    gx_anomaly_bind_text(p->obj_find, 1, r->external_id);
    gx_anomaly_bind_text(p->obj_find, 2, r->image_sha256);
    int rc = sqlite3_step(p->obj_find);
    *row = rc == SQLITE_ROW ? sqlite3_column_int64(p->obj_find, 0) : 0;
    gx_anomaly_stmt_reset(p->obj_find);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return as_fail(p->h, rc, err, "find object");
    if (*row) return GX_OK;
    sqlite3_stmt *st = p->obj_ins;
    gx_anomaly_bind_text(st, 1, r->external_id);
    gx_anomaly_bind_text(st, 2, r->image_sha256);
    gx_anomaly_bind_text(st, 3, r->format);
    if (r->width > 0) sqlite3_bind_int(st, 4, r->width);
    if (r->height > 0) sqlite3_bind_int(st, 5, r->height);
    if (r->bands > 0) sqlite3_bind_int(st, 6, r->bands);
    gx_anomaly_bind_real(st, 7, r->ra);
    gx_anomaly_bind_real(st, 8, r->dec);
    gx_anomaly_bind_text(st, 9, r->survey);
    rc = sqlite3_step(st);
    gx_anomaly_stmt_reset(st);
    if (rc != SQLITE_DONE) return as_fail(p->h, rc, err, "insert object");
    *row = sqlite3_last_insert_rowid(p->h);
    return GX_OK;
}

/* The image's thumbnail, unless it has one. */
static gx_status as_thumb_put(as_put_stmts *p, const gx_anomaly_rec *r, gx_err *err) {
    gx_anomaly_bind_text(p->thumb_has, 1, r->image_sha256);
    int rc = sqlite3_step(p->thumb_has);
    gx_anomaly_stmt_reset(p->thumb_has);
    if (rc == SQLITE_ROW) return GX_OK;
    if (rc != SQLITE_DONE) return as_fail(p->h, rc, err, "find thumbnail");
    uint8_t *png = NULL;
    size_t n = r->thumb_png_n;
    int side = r->thumb_png_side;
    if (!r->thumb_png) {
        gx_status s = gx_anomaly_thumb_png(r->thumb_x, r->thumb_side, &png, &n, &side, err);
        if (s != GX_OK) return s;
    }
    sqlite3_bind_text(p->thumb_ins, 1, r->image_sha256, -1, SQLITE_STATIC);
    sqlite3_bind_blob(p->thumb_ins, 2, r->thumb_png ? r->thumb_png : png, (int)n, SQLITE_STATIC);
    sqlite3_bind_int(p->thumb_ins, 3, side);
    rc = sqlite3_step(p->thumb_ins);
    gx_anomaly_stmt_reset(p->thumb_ins);
    free(png);
    return rc == SQLITE_DONE ? GX_OK : as_fail(p->h, rc, err, "insert thumbnail");
}

static gx_status as_put_one(as_put_stmts *p, gx_anomaly_rec *r, gx_err *err) {
    gx_status s = as_rec_check(r, err);
    if (s == GX_OK) s = as_object_row(p, r, &r->object_row, err);
    if (s != GX_OK) return s;
    sqlite3_stmt *st = p->score_ins;
    sqlite3_bind_int64(st, 1, r->object_row);
    sqlite3_bind_int64(st, 2, r->model_id);
    sqlite3_bind_double(st, 3, r->score);
    gx_anomaly_bind_real(st, 4, r->threshold);
    sqlite3_bind_int(st, 5, r->is_anomaly);
    sqlite3_bind_int(st, 6, r->class_index);
    gx_anomaly_bind_text(st, 7, r->image_sha256);
    gx_anomaly_bind_text(st, 8, r->survey);
    gx_anomaly_bind_real(st, 9, r->ra);
    gx_anomaly_bind_real(st, 10, r->dec);
    gx_anomaly_bind_text(st, 11, r->class_name);
    int rc = sqlite3_step(st);
    gx_anomaly_stmt_reset(st);
    /* A foreign-key failure (unknown model_id) is a constraint error. */
    if (rc != SQLITE_DONE) return as_fail(p->h, rc, err, "insert score");
    r->existed = sqlite3_changes(p->h) == 0;
    st = p->score_get;
    sqlite3_bind_int64(st, 1, r->object_row);
    sqlite3_bind_int64(st, 2, r->model_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        r->id = sqlite3_column_int64(st, 0);
        as_copy_col(st, 1, r->created_at, sizeof r->created_at);
    }
    gx_anomaly_stmt_reset(st);
    if (rc != SQLITE_ROW) return as_fail(p->h, rc, err, "read score");
    return r->thumb_x || r->thumb_png ? as_thumb_put(p, r, err) : GX_OK;
}

gx_status gx_anomaly_put_many(gx_db *db, gx_anomaly_rec *r, int64_t n, gx_err *err) {
    if (!db || (n > 0 && !r)) return gx_err_set(err, GX_ERR_INVALID, "anomaly store: no database or records");
    if (n <= 0) return GX_OK;
    as_put_stmts p;
    gx_status s = as_put_open(&p, db, err);
    if (s != GX_OK) return s;
    as_txn t;
    s = as_txn_begin(&t, db, err);
    if (s == GX_OK) {
        for (int64_t i = 0; i < n && s == GX_OK; i++) s = as_put_one(&p, &r[i], err);
        /* Finalise before COMMIT: a statement left mid-step would hold the read. */
        as_put_close(&p);
        s = as_txn_end(&t, s, err);
    } else {
        as_put_close(&p);
    }
    return s;
}

gx_status gx_anomaly_put(gx_db *db, gx_anomaly_rec *r, gx_err *err) {
    return gx_anomaly_put_many(db, r, 1, err);
}

gx_status gx_anomaly_exists(gx_db *db, const char *external_id, const char *image_sha256,
                            int64_t model_id, int *exists, gx_err *err) {
    *exists = 0;
    if (!db || !external_id || !image_sha256)
        return gx_err_set(err, GX_ERR_INVALID, "anomaly store: exists needs an object id and a hash");
    sqlite3 *h = gx_db_handle(db);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(h,
        "SELECT 1 FROM objects o CROSS JOIN anomaly_scores a ON a.object_id = o.id AND a.model_id = ?3"
        " WHERE o.external_id = ?1 AND o.image_sha256 = ?2 LIMIT 1", -1, &st, NULL);
    if (rc != SQLITE_OK) return as_fail(h, rc, err, "prepare exists");
    gx_anomaly_bind_text(st, 1, external_id);
    gx_anomaly_bind_text(st, 2, image_sha256);
    sqlite3_bind_int64(st, 3, model_id);
    rc = sqlite3_step(st);
    *exists = rc == SQLITE_ROW;
    gx_status s = rc == SQLITE_ROW || rc == SQLITE_DONE ? GX_OK : as_fail(h, rc, err, "exists");
    sqlite3_finalize(st);
    return s;
}

/* --------------------------------------------------------------- cursor */

static const char as_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* base64url without padding; out must hold 4*ceil(n/3)+1 bytes. */
static void as_b64_encode(const unsigned char *in, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        out[o++] = as_b64[(v >> 18) & 63];
        out[o++] = as_b64[(v >> 12) & 63];
        if (i + 1 < n) out[o++] = as_b64[(v >> 6) & 63];
        if (i + 2 < n) out[o++] = as_b64[v & 63];
    }
    out[o] = 0;
}

static int as_b64_val(char c) {
    const char *p = c ? strchr(as_b64, c) : NULL;
    return p ? (int)(p - as_b64) : -1;
}

/* Decodes base64url (no padding) into out (cap bytes, NUL-terminated);
 * 0 on a bad character, a bad length or overflow. */
static int as_b64_decode(const char *in, char *out, size_t cap) {
    size_t n = strlen(in), o = 0;
    if (n % 4 == 1) return 0;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        size_t k = 0;
        for (; k < 4 && i + k < n; k++) {
            int d = as_b64_val(in[i + k]);
            if (d < 0) return 0;
            v |= (uint32_t)d << (18 - 6 * k);
        }
        size_t bytes = k - 1;                 /* 4 chars -> 3 bytes, 3 -> 2, 2 -> 1 */
        if (o + bytes + 1 > cap) return 0;
        for (size_t b = 0; b < bytes; b++) out[o++] = (char)((v >> (16 - 8 * b)) & 0xff);
    }
    out[o] = 0;
    return 1;
}

static void as_cursor_encode(double score, int64_t id, char out[128]) {
    char txt[64];
    int n = snprintf(txt, sizeof txt, "%.17g|%lld", score, (long long)id);
    as_b64_encode((const unsigned char *)txt, (size_t)n, out);
}

static gx_status as_cursor_decode(const char *c, double *score, int64_t *id, gx_err *err) {
    char txt[96], *end;
    if (strlen(c) > 120 || !as_b64_decode(c, txt, sizeof txt) || strlen(txt) == 0)
        return gx_err_set(err, GX_ERR_INVALID, "cursor: not a cursor returned by this server");
    char *bar = strchr(txt, '|');
    if (!bar) return gx_err_set(err, GX_ERR_INVALID, "cursor: not a cursor returned by this server");
    *bar = 0;
    *score = strtod(txt, &end);
    if (end == txt || *end || !isfinite(*score))
        return gx_err_set(err, GX_ERR_INVALID, "cursor: bad score in cursor");
    long long v = strtoll(bar + 1, &end, 10);
    if (end == bar + 1 || *end || v < 1) return gx_err_set(err, GX_ERR_INVALID, "cursor: bad id in cursor");
    *id = v;
    return GX_OK;
}

/* ---------------------------------------------------------------- reads */

#define AS_ROW_COLS                                                                              \
    "a.id, o.external_id, a.survey, a.ra, a.dec, a.score, a.threshold, a.is_anomaly, "           \
    "a.class_index, a.class_name, a.image_sha256, m.version, a.created_at, "                    \
    "(SELECT COUNT(*) FROM objects ov WHERE ov.external_id = o.external_id AND ov.id <= o.id), "  \
    "EXISTS (SELECT 1 FROM anomaly_thumbs th WHERE th.image_sha256 = a.image_sha256) "
/* CROSS JOIN: anomaly_scores stays the outer loop, walked in index order. */
#define AS_ROW_FROM                                                                              \
    "FROM anomaly_scores a CROSS JOIN objects o ON o.id = a.object_id "                         \
    "CROSS JOIN served_models m ON m.id = a.model_id "

static void as_read_row(sqlite3_stmt *st, gx_anomaly_row *r) {
    memset(r, 0, sizeof *r);
    r->id = sqlite3_column_int64(st, 0);
    as_copy_col(st, 1, r->object_id, sizeof r->object_id);
    as_copy_col(st, 2, r->survey, sizeof r->survey);
    r->ra = as_col_real(st, 3);
    r->dec = as_col_real(st, 4);
    r->score = as_col_real(st, 5);
    r->threshold = as_col_real(st, 6);
    r->is_anomaly = sqlite3_column_int(st, 7);
    r->class_index = sqlite3_column_type(st, 8) == SQLITE_NULL ? -1 : sqlite3_column_int(st, 8);
    as_copy_col(st, 9, r->class_name, sizeof r->class_name);
    as_copy_col(st, 10, r->image_sha256, sizeof r->image_sha256);
    as_copy_col(st, 11, r->model_version, sizeof r->model_version);
    as_copy_col(st, 12, r->created_at, sizeof r->created_at);
    r->version = sqlite3_column_int(st, 13);
    r->has_thumb = sqlite3_column_int(st, 14);
}

/* ISO-8601 text -> the stored form ("YYYY-MM-DDTHH:MM:SS.mmmZ"), by
 * SQLite's own date parser; GX_ERR_INVALID names the parameter. */
static gx_status as_norm_time(sqlite3 *h, const char *what, const char *in, char out[32], gx_err *err) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(h, "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', ?1)", -1, &st, NULL);
    if (rc != SQLITE_OK) return as_fail(h, rc, err, "prepare time");
    gx_anomaly_bind_text(st, 1, in);
    rc = sqlite3_step(st);
    const unsigned char *t = rc == SQLITE_ROW ? sqlite3_column_text(st, 0) : NULL;
    gx_status s = t ? GX_OK : gx_err_set(err, GX_ERR_INVALID, "%s: '%.64s' is not an ISO-8601 time", what, in);
    if (t) snprintf(out, 32, "%s", (const char *)t);
    sqlite3_finalize(st);
    return s;
}

/* The page query for q's filters (see the file comment). Parameters:
 * ?1 model, ?2 survey, ?3/?4 cursor score/id, ?5 min score, ?6 since,
 * ?7 until, ?8 limit. */
void gx_anomaly_page_sql(const gx_anomaly_query *q, int has_cursor, char *buf, size_t n) {
    snprintf(buf, n,
             "SELECT " AS_ROW_COLS AS_ROW_FROM "WHERE 1%s%s%s%s%s%s "
             "ORDER BY a.score DESC, a.id DESC LIMIT ?8",
             q->model_id > 0 ? " AND a.model_id = ?1" : "",
             q->survey ? " AND a.survey = ?2" : "",
             has_cursor ? " AND (a.score, a.id) < (?3, ?4)" : "",
             !isnan(q->min_score) ? " AND a.score >= ?5" : "",
             q->since ? " AND a.created_at >= ?6" : "",
             q->until ? " AND a.created_at < ?7" : "");
}

gx_status gx_anomaly_query_page(gx_db *db, const gx_anomaly_query *q, gx_anomaly_row *rows, int *n,
                                char next_cursor[128], gx_err *err) {
    *n = 0;
    next_cursor[0] = 0;
    if (!db || !q || !rows) return gx_err_set(err, GX_ERR_INVALID, "anomaly store: no database or query");
    if (q->limit < 1 || q->limit > 1000)
        return gx_err_set(err, GX_ERR_INVALID, "limit: must be in [1, 1000] (got %d)", q->limit);
    sqlite3 *h = gx_db_handle(db);
    char since[32] = "", until[32] = "";
    double cs = 0;
    int64_t ci = 0;
    gx_status s = GX_OK;
    if (q->cursor && *q->cursor) s = as_cursor_decode(q->cursor, &cs, &ci, err);
    if (s == GX_OK && q->since) s = as_norm_time(h, "since", q->since, since, err);
    if (s == GX_OK && q->until) s = as_norm_time(h, "until", q->until, until, err);
    if (s != GX_OK) return s;
    char sql[1024];
    int has_cursor = q->cursor && *q->cursor;
    gx_anomaly_page_sql(q, has_cursor, sql, sizeof sql);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(h, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) return as_fail(h, rc, err, "prepare page");
    sqlite3_bind_int64(st, 1, q->model_id);
    gx_anomaly_bind_text(st, 2, q->survey);
    sqlite3_bind_double(st, 3, cs);
    sqlite3_bind_int64(st, 4, ci);
    sqlite3_bind_double(st, 5, isnan(q->min_score) ? 0 : q->min_score);
    gx_anomaly_bind_text(st, 6, since);
    gx_anomaly_bind_text(st, 7, until);
    sqlite3_bind_int(st, 8, q->limit + 1);     /* the extra row says whether a next page exists */
    int more = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n < q->limit) as_read_row(st, &rows[(*n)++]);
        else more = 1;
    }
    if (rc != SQLITE_DONE) s = as_fail(h, rc, err, "page");
    else if (more) {
        /* The last row shown is where the next page continues. */
        as_cursor_encode(rows[*n - 1].score, rows[*n - 1].id, next_cursor);
    }
    sqlite3_finalize(st);
    return s;
}

gx_status gx_anomaly_history(gx_db *db, const char *external_id, gx_anomaly_row *rows, int cap,
                             int *n, gx_err *err) {
    *n = 0;
    if (!db || !external_id || !rows || cap < 1)
        return gx_err_set(err, GX_ERR_INVALID, "anomaly store: history needs an object id and a buffer");
    sqlite3 *h = gx_db_handle(db);
    sqlite3_stmt *st = NULL;
    /* objects_external_sha gives the object's versions, the unique index
     * their scores; the few rows of one object are then sorted. */
    int rc = sqlite3_prepare_v2(h,
        "SELECT " AS_ROW_COLS "FROM objects o CROSS JOIN anomaly_scores a ON a.object_id = o.id "
        "JOIN served_models m ON m.id = a.model_id WHERE o.external_id = ?1 "
        "ORDER BY a.created_at DESC, a.id DESC LIMIT ?2", -1, &st, NULL);
    if (rc != SQLITE_OK) return as_fail(h, rc, err, "prepare history");
    gx_anomaly_bind_text(st, 1, external_id);
    sqlite3_bind_int(st, 2, cap);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) as_read_row(st, &rows[(*n)++]);
    gx_status s = rc == SQLITE_DONE ? GX_OK : as_fail(h, rc, err, "history");
    sqlite3_finalize(st);
    return s;
}

/* ----------------------------------------------------------- thumbnails */

gx_status gx_anomaly_thumb_png(const float *x, int side, uint8_t **png, size_t *n, int *thumb_side,
                               gx_err *err) {
    *png = NULL;
    *n = 0;
    if (!x || side < 1) return gx_err_set(err, GX_ERR_INVALID, "thumbnail: no input or side %d < 1", side);
    if (side <= GX_ANOMALY_THUMB_MAX) {
        if (thumb_side) *thumb_side = side;
        return gx_png_encode(x, 3, side, side, png, n, err);
    }
    /* Shrunk with the preprocessing's own antialiased resize, so the
     * thumbnail is a faithful small picture of what the model saw. */
    gx_image in, out;
    memset(&out, 0, sizeof out);
    gx_status s = gx_image_alloc(&in, 3, side, side, err);
    if (s != GX_OK) return s;
    memcpy(in.data, x, (size_t)3 * side * side * sizeof *x);
    s = gx_pre_resize(&in, GX_ANOMALY_THUMB_MAX, GX_ANOMALY_THUMB_MAX, &out, err);
    if (s == GX_OK) s = gx_png_encode(out.data, 3, out.h, out.w, png, n, err);
    if (s == GX_OK && thumb_side) *thumb_side = GX_ANOMALY_THUMB_MAX;
    gx_image_free(&in);
    gx_image_free(&out);
    return s;
}

gx_status gx_anomaly_thumb_get(gx_db *db, const char *external_id, int version, uint8_t **png, size_t *n,
                               int *version_out, gx_err *err) {
    *png = NULL;
    *n = 0;
    if (!db || !external_id) return gx_err_set(err, GX_ERR_INVALID, "anomaly store: thumbnail needs an object id");
    if (version < 0) return gx_err_set(err, GX_ERR_INVALID, "version: must be >= 1 (got %d)", version);
    sqlite3 *h = gx_db_handle(db);
    sqlite3_stmt *st = NULL;
    /* The object's versions numbered by row id (objects_external_sha gives
     * them), then the one asked for, or the newest that has a thumbnail. */
    int rc = sqlite3_prepare_v2(h,
        "SELECT t.png, o.v FROM (SELECT image_sha256, ROW_NUMBER() OVER (ORDER BY id) AS v FROM objects"
        " WHERE external_id = ?1) o JOIN anomaly_thumbs t ON t.image_sha256 = o.image_sha256"
        " WHERE ?2 = 0 OR o.v = ?2 ORDER BY o.v DESC LIMIT 1", -1, &st, NULL);
    if (rc != SQLITE_OK) return as_fail(h, rc, err, "prepare thumbnail");
    gx_anomaly_bind_text(st, 1, external_id);
    sqlite3_bind_int(st, 2, version);
    rc = sqlite3_step(st);
    gx_status s = GX_OK;
    if (rc == SQLITE_ROW) {
        int bytes = sqlite3_column_bytes(st, 0);
        const void *b = sqlite3_column_blob(st, 0);
        *png = malloc(bytes > 0 ? (size_t)bytes : 1);
        if (!*png) s = gx_err_set(err, GX_ERR_NOMEM, "anomaly store: out of memory");
        else {
            if (bytes > 0) memcpy(*png, b, (size_t)bytes);
            *n = (size_t)bytes;
            if (version_out) *version_out = sqlite3_column_int(st, 1);
        }
    } else if (rc == SQLITE_DONE) {
        s = version ? gx_err_set(err, GX_ERR_NOTFOUND, "object '%s' has no thumbnail for version %d", external_id,
                                 version)
                    : gx_err_set(err, GX_ERR_NOTFOUND, "object '%s' has no stored thumbnail", external_id);
    } else {
        s = as_fail(h, rc, err, "thumbnail");
    }
    sqlite3_finalize(st);
    return s;
}
