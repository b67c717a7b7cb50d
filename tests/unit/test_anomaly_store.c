/*
 * test_anomaly_store.c — trainer/gx_anomaly_store.c on migrations 0001-0003:
 * idempotent puts, image versions, keyset pages stable under inserts, every
 * filter, bad cursors and parameters, one-transaction rollback of put_many,
 * and EXPLAIN QUERY PLAN of the page shapes (no temp b-tree, an index scan);
 * thumbnails (0007): stored with the score in its transaction, the pixels of
 * the model input, one per image, shrunk when large, found by version.
 *
 * Each test works on its own database in a fresh mkdtemp directory.
 */
#include "gx_test.h"
#include "test_fixture_util.h"

#include "gx_anomaly_store.h"
#include "gx_db.h"
#include "gx_image.h"

#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct { tfx_tmpdb f; gx_db *db; } adb;

static int adb_open(adb *t) {
    tfx_tmpdb_init(&t->f, "anom", "a.db");
    gx_err err;
    t->db = NULL;
    if (gx_db_open(&t->db, t->f.path, &err) != GX_OK) { printf("open: %s\n", err.msg); return 0; }
    return 1;
}

static void adb_close(adb *t) {
    gx_db_close(t->db);
    tfx_tmpdb_free(&t->f);
}

/* A deterministic fake hash: 64 hex digits from a number. */
static void fake_sha(unsigned v, char out[65]) {
    for (int i = 0; i < 64; i++) out[i] = "0123456789abcdef"[(v * 2654435761u + (unsigned)i * 40503u) >> 28 & 15];
    snprintf(out + 56, 9, "%08x", v);
}

static const char *const SHA_A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char *const SHA_B = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

static int64_t model(gx_db *db, const char *name, const char *sha) {
    int64_t id = 0;
    gx_err err;
    if (gx_anomaly_model_id(db, name, sha, "/m.safetensors", 0.4, "[\"a\",\"b\"]", &id, &err) != GX_OK)
        printf("model: %s\n", err.msg);
    return id;
}

static gx_anomaly_rec rec(const char *ext, const char *sha, int64_t model_id, double score) {
    gx_anomaly_rec r;
    memset(&r, 0, sizeof r);
    r.external_id = ext;
    r.image_sha256 = sha;
    r.model_id = model_id;
    r.score = score;
    r.threshold = 0.5;
    r.is_anomaly = score > 0.5;
    r.class_index = 1;
    r.class_name = "Round Smooth";
    r.ra = NAN;
    r.dec = NAN;
    r.format = "h5";
    r.width = r.height = 64;
    r.bands = 3;
    return r;
}

GX_TEST(anomaly_model_id_is_stable) {
    adb t;
    if (!adb_open(&t)) { CHECK(0); return; }
    int64_t a = model(t.db, "uda", SHA_A), a2 = model(t.db, "uda", SHA_A), b = model(t.db, "uda", SHA_B);
    CHECK(a > 0 && a == a2 && b > 0 && b != a);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT count(*) FROM served_models WHERE model_kind = 'uda'") == 2);
    gx_err err;
    int64_t id;
    CHECK(gx_anomaly_model_id(t.db, "uda", "xyz", "/p", 0.1, NULL, &id, &err) == GX_ERR_INVALID);
    adb_close(&t);
}

GX_TEST(anomaly_put_is_idempotent_and_versions_objects) {
    adb t;
    if (!adb_open(&t)) { CHECK(0); return; }
    int64_t m1 = model(t.db, "uda", SHA_A), m2 = model(t.db, "uda2", SHA_B);
    gx_err err;
    gx_anomaly_rec r = rec("obj-1", SHA_A, m1, 0.7);
    r.survey = "decals";
    r.ra = 150.5;
    r.dec = 2.25;
    CHECK(gx_anomaly_put(t.db, &r, &err) == GX_OK);
    CHECK(r.id > 0 && r.object_row > 0 && !r.existed && strlen(r.created_at) == 24);
    /* Same object, same image, same model: the same row, nothing written. */
    gx_anomaly_rec again = rec("obj-1", SHA_A, m1, 0.1);
    CHECK(gx_anomaly_put(t.db, &again, &err) == GX_OK);
    CHECK(again.existed && again.id == r.id && again.object_row == r.object_row);
    CHECK(strcmp(again.created_at, r.created_at) == 0);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT count(*) FROM anomaly_scores") == 1);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT count(*) FROM objects") == 1);
    /* Another model scores the same object version: same object row. */
    gx_anomaly_rec other = rec("obj-1", SHA_A, m2, 0.2);
    CHECK(gx_anomaly_put(t.db, &other, &err) == GX_OK);
    CHECK(!other.existed && other.object_row == r.object_row && other.id != r.id);
    /* A new image for the same external id is a new version. */
    char sha[65];
    fake_sha(7, sha);
    gx_anomaly_rec v2 = rec("obj-1", sha, m1, 0.9);
    CHECK(gx_anomaly_put(t.db, &v2, &err) == GX_OK);
    CHECK(!v2.existed && v2.object_row != r.object_row);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT count(*) FROM objects WHERE external_id = 'obj-1'") == 2);
    /* History: every score of the external id, newest first. */
    gx_anomaly_row rows[8];
    int n = 0;
    CHECK(gx_anomaly_history(t.db, "obj-1", rows, 8, &n, &err) == GX_OK);
    CHECK(n == 3);
    if (n == 3) {
        CHECK(rows[0].id == v2.id && rows[2].id == r.id);
        CHECK(strcmp(rows[2].survey, "decals") == 0 && rows[2].ra == 150.5 && rows[2].dec == 2.25);
        CHECK(strcmp(rows[2].class_name, "Round Smooth") == 0 && rows[2].class_index == 1);
        CHECK(strcmp(rows[2].image_sha256, SHA_A) == 0 && strcmp(rows[2].model_version, SHA_A) == 0);
        CHECK(isnan(rows[0].ra) && rows[0].survey[0] == 0);
        CHECK(rows[2].is_anomaly == 1 && fabs(rows[2].score - 0.7) < 1e-12);
    }
    CHECK(gx_anomaly_history(t.db, "nobody", rows, 8, &n, &err) == GX_OK && n == 0);
    adb_close(&t);
}

GX_TEST(anomaly_put_refuses_bad_records) {
    adb t;
    if (!adb_open(&t)) { CHECK(0); return; }
    int64_t m = model(t.db, "uda", SHA_A);
    gx_err err;
    gx_anomaly_rec r = rec(NULL, SHA_A, m, 0.5);
    CHECK(gx_anomaly_put(t.db, &r, &err) == GX_ERR_INVALID && strstr(err.msg, "external_id"));
    r = rec("x", "ABC", m, 0.5);
    CHECK(gx_anomaly_put(t.db, &r, &err) == GX_ERR_INVALID && strstr(err.msg, "image_sha256"));
    r = rec("x", SHA_A, m, NAN);
    CHECK(gx_anomaly_put(t.db, &r, &err) == GX_ERR_INVALID && strstr(err.msg, "score"));
    r = rec("x", SHA_A, 0, 0.5);
    CHECK(gx_anomaly_put(t.db, &r, &err) == GX_ERR_INVALID && strstr(err.msg, "model_id"));
    r = rec("x", SHA_A, m + 99, 0.5);            /* no such model: foreign key */
    CHECK(gx_anomaly_put(t.db, &r, &err) == GX_ERR_INVALID);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT count(*) FROM anomaly_scores") == 0);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT count(*) FROM objects") == 0);   /* the object insert was rolled back */
    adb_close(&t);
}

GX_TEST(anomaly_put_many_rolls_back_as_one) {
    adb t;
    if (!adb_open(&t)) { CHECK(0); return; }
    int64_t m = model(t.db, "uda", SHA_A);
    gx_err err;
    char shas[5][65], ids[5][16];
    gx_anomaly_rec r[5];
    for (int i = 0; i < 5; i++) {
        fake_sha((unsigned)i + 1, shas[i]);
        snprintf(ids[i], sizeof ids[i], "o%d", i);
        r[i] = rec(ids[i], shas[i], m, 0.1 * i);
    }
    r[3].score = INFINITY;                        /* the 4th fails: none may stay */
    CHECK(gx_anomaly_put_many(t.db, r, 5, &err) == GX_ERR_INVALID);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT count(*) FROM anomaly_scores") == 0);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT count(*) FROM objects") == 0);
    r[3].score = 0.3;
    CHECK(gx_anomaly_put_many(t.db, r, 5, &err) == GX_OK);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT count(*) FROM anomaly_scores") == 5);
    int existed = 0;
    for (int i = 0; i < 5; i++) existed += r[i].existed;
    CHECK(existed == 0);
    /* Inside a caller's transaction: a savepoint; a failure undoes only this call. */
    CHECK(gx_db_begin(t.db, &err) == GX_OK);
    gx_anomaly_rec ok = rec("inner", SHA_B, m, 0.5), badr = rec("inner2", SHA_B, m, NAN);
    CHECK(gx_anomaly_put(t.db, &ok, &err) == GX_OK);
    CHECK(gx_anomaly_put(t.db, &badr, &err) == GX_ERR_INVALID);
    CHECK(gx_db_commit(t.db, &err) == GX_OK);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT count(*) FROM anomaly_scores") == 6);
    /* Re-running the whole batch writes nothing and reports every row as existing. */
    CHECK(gx_anomaly_put_many(t.db, r, 5, &err) == GX_OK);
    existed = 0;
    for (int i = 0; i < 5; i++) existed += r[i].existed;
    CHECK(existed == 5);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT count(*) FROM anomaly_scores") == 6);
    adb_close(&t);
}

/* n rows, scores with ties (i % 7) / 7, surveys alternating, two models. */
static void fill(gx_db *db, int n, int64_t m1, int64_t m2, int base) {
    gx_anomaly_rec *r = calloc((size_t)n, sizeof *r);
    char (*shas)[65] = calloc((size_t)n, 65), (*ids)[16] = calloc((size_t)n, 16);
    for (int i = 0; i < n; i++) {
        fake_sha((unsigned)(base + i), shas[i]);
        snprintf(ids[i], 16, "f%d", base + i);
        r[i] = rec(ids[i], shas[i], i % 3 == 0 ? m2 : m1, (double)((base + i) % 7) / 7.0);
        r[i].survey = i % 2 ? "sdss" : "decals";
    }
    gx_err err;
    if (gx_anomaly_put_many(db, r, n, &err) != GX_OK) printf("fill: %s\n", err.msg);
    free(r);
    free(shas);
    free(ids);
}

/* Every page of q; ids into out (cap), returns the count; -1 on error. */
static int all_pages(gx_db *db, gx_anomaly_query q, int64_t *out, int cap, int check_order) {
    gx_anomaly_row rows[1000];
    char cur[128] = "";
    int total = 0;
    double last_s = INFINITY;
    int64_t last_id = INT64_MAX;
    for (int guard = 0; guard < 1000; guard++) {
        int n = 0;
        gx_err err;
        q.cursor = cur[0] ? cur : NULL;
        char next[128];
        if (gx_anomaly_query_page(db, &q, rows, &n, next, &err) != GX_OK) { printf("%s\n", err.msg); return -1; }
        for (int i = 0; i < n; i++) {
            if (check_order && !(rows[i].score < last_s || (rows[i].score == last_s && rows[i].id < last_id)))
                return -1;
            last_s = rows[i].score;
            last_id = rows[i].id;
            if (total < cap) out[total] = rows[i].id;
            total++;
        }
        if (!next[0]) return total;
        snprintf(cur, sizeof cur, "%s", next);
    }
    return -1;
}

static gx_anomaly_query q0(int limit) {
    gx_anomaly_query q;
    memset(&q, 0, sizeof q);
    q.min_score = NAN;
    q.limit = limit;
    return q;
}

GX_TEST(anomaly_pages_cover_everything_once_in_order) {
    adb t;
    if (!adb_open(&t)) { CHECK(0); return; }
    int64_t m1 = model(t.db, "uda", SHA_A), m2 = model(t.db, "uda2", SHA_B);
    fill(t.db, 100, m1, m2, 0);
    int64_t ids[200];
    for (int lim = 1; lim <= 101; lim += 25) {
        int n = all_pages(t.db, q0(lim), ids, 200, 1);
        CHECK_MSG(n == 100, "limit %d: %d rows", lim, n);
        /* No duplicates. */
        int dup = 0;
        for (int i = 0; i < n && i < 200; i++)
            for (int j = i + 1; j < n && j < 200; j++) dup += ids[i] == ids[j];
        CHECK(dup == 0);
    }
    /* Exactly a full last page: no empty extra page promised. */
    gx_anomaly_row rows[100];
    int n;
    char next[128];
    gx_err err;
    gx_anomaly_query q = q0(100);
    CHECK(gx_anomaly_query_page(t.db, &q, rows, &n, next, &err) == GX_OK && n == 100 && next[0] == 0);
    adb_close(&t);
}

GX_TEST(anomaly_pages_stable_under_inserts) {
    adb t;
    if (!adb_open(&t)) { CHECK(0); return; }
    int64_t m1 = model(t.db, "uda", SHA_A), m2 = model(t.db, "uda2", SHA_B);
    fill(t.db, 60, m1, m2, 0);
    gx_anomaly_row rows[10];
    int n = 0;
    char next[128];
    gx_err err;
    gx_anomaly_query q = q0(10);
    int64_t seen[200];
    int ns = 0;
    CHECK(gx_anomaly_query_page(t.db, &q, rows, &n, next, &err) == GX_OK && n == 10);
    for (int i = 0; i < n; i++) seen[ns++] = rows[i].id;
    double cut = rows[n - 1].score;
    /* New rows land on both sides of the cursor while paging. */
    fill(t.db, 40, m1, m2, 1000);
    char cur[128];
    snprintf(cur, sizeof cur, "%s", next);
    while (cur[0]) {
        q.cursor = cur;
        if (gx_anomaly_query_page(t.db, &q, rows, &n, next, &err) != GX_OK) { CHECK(0); break; }
        for (int i = 0; i < n && ns < 200; i++) seen[ns++] = rows[i].id;
        snprintf(cur, sizeof cur, "%s", next);
    }
    /* Every original row exactly once; new rows only below the cursor. */
    int orig = 0, dup = 0;
    for (int i = 0; i < ns; i++) {
        orig += seen[i] <= 60;
        for (int j = i + 1; j < ns; j++) dup += seen[i] == seen[j];
    }
    CHECK(orig == 60 && dup == 0);
    long long below = tfx_sql_int(gx_db_handle(t.db), "SELECT count(*) FROM anomaly_scores WHERE id > 60");
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM anomaly_scores WHERE id > 60 AND score <= %.17g", cut);
    long long expect_new = tfx_sql_int(gx_db_handle(t.db), sql);
    CHECK(below == 40);
    /* New rows with a higher score than the cursor are not shown (they are
     * on an earlier page); ties at the cursor score come after by id only
     * when their id is smaller, which new rows never are. */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM anomaly_scores WHERE id > 60 AND score < %.17g", cut);
    long long strictly = tfx_sql_int(gx_db_handle(t.db), sql);
    CHECK(ns - 60 == strictly && strictly <= expect_new);
    adb_close(&t);
}

GX_TEST(anomaly_filters) {
    adb t;
    if (!adb_open(&t)) { CHECK(0); return; }
    int64_t m1 = model(t.db, "uda", SHA_A), m2 = model(t.db, "uda2", SHA_B);
    fill(t.db, 70, m1, m2, 0);
    int64_t ids[100];
    gx_anomaly_query q = q0(7);
    q.survey = "sdss";
    CHECK(all_pages(t.db, q, ids, 100, 1) == tfx_sql_int(gx_db_handle(t.db), "SELECT count(*) FROM anomaly_scores WHERE survey='sdss'"));
    q = q0(7);
    q.model_id = m2;
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM anomaly_scores WHERE model_id=%lld", (long long)m2);
    CHECK(all_pages(t.db, q, ids, 100, 1) == tfx_sql_int(gx_db_handle(t.db), sql));
    q.survey = "decals";
    snprintf(sql, sizeof sql, "SELECT count(*) FROM anomaly_scores WHERE model_id=%lld AND survey='decals'",
             (long long)m2);
    long long want = tfx_sql_int(gx_db_handle(t.db), sql);
    CHECK(want > 0 && all_pages(t.db, q, ids, 100, 1) == want);
    q = q0(5);
    q.min_score = 4.0 / 7.0;
    int n = all_pages(t.db, q, ids, 100, 1);
    CHECK(n == tfx_sql_int(gx_db_handle(t.db), "SELECT count(*) FROM anomaly_scores WHERE score >= 4.0/7.0") && n > 0 && n < 70);
    /* Time windows: everything is "now", so a past since keeps all, a
     * future since none, a past until none. */
    q = q0(50);
    q.since = "2000-01-01";
    CHECK(all_pages(t.db, q, ids, 100, 1) == 70);
    q.since = "2999-01-01T00:00:00Z";
    CHECK(all_pages(t.db, q, ids, 100, 1) == 0);
    q = q0(50);
    q.until = "2000-01-01T00:00:00Z";
    CHECK(all_pages(t.db, q, ids, 100, 1) == 0);
    q.until = "2999-01-01";
    q.since = "2001-02-03T04:05:06.789Z";
    CHECK(all_pages(t.db, q, ids, 100, 1) == 70);
    /* Rows that carry filters show them. */
    gx_anomaly_row rows[3];
    char next[128];
    gx_err err;
    q = q0(3);
    q.survey = "decals";
    CHECK(gx_anomaly_query_page(t.db, &q, rows, &n, next, &err) == GX_OK && n == 3);
    for (int i = 0; i < n; i++) CHECK(strcmp(rows[i].survey, "decals") == 0 && rows[i].object_id[0] == 'f');
    adb_close(&t);
}

GX_TEST(anomaly_bad_query_parameters) {
    adb t;
    if (!adb_open(&t)) { CHECK(0); return; }
    int64_t m1 = model(t.db, "uda", SHA_A);
    fill(t.db, 5, m1, m1, 0);
    gx_anomaly_row rows[5];
    int n;
    char next[128];
    gx_err err;
    gx_anomaly_query q = q0(0);
    CHECK(gx_anomaly_query_page(t.db, &q, rows, &n, next, &err) == GX_ERR_INVALID && strstr(err.msg, "limit"));
    q.limit = 1001;
    CHECK(gx_anomaly_query_page(t.db, &q, rows, &n, next, &err) == GX_ERR_INVALID);
    q = q0(2);
    const char *bad[] = { "!!!!", "a", "bm90IGEgY3Vyc29y" /* "not a cursor" */, "MC41fA" /* "0.5|" */,
                          "bmFufDM" /* "nan|3" */, "MC41fC0z" /* "0.5|-3" */, "MC41fDN4" /* "0.5|3x" */ };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        q.cursor = bad[i];
        CHECK_MSG(gx_anomaly_query_page(t.db, &q, rows, &n, next, &err) == GX_ERR_INVALID &&
                  strstr(err.msg, "cursor"), "cursor '%s' accepted", bad[i]);
    }
    q = q0(2);
    q.since = "yesterday-ish";
    CHECK(gx_anomaly_query_page(t.db, &q, rows, &n, next, &err) == GX_ERR_INVALID && strstr(err.msg, "since"));
    q = q0(2);
    q.until = "2024-13-45";
    CHECK(gx_anomaly_query_page(t.db, &q, rows, &n, next, &err) == GX_ERR_INVALID && strstr(err.msg, "until"));
    /* A valid cursor round-trips. */
    q = q0(2);
    CHECK(gx_anomaly_query_page(t.db, &q, rows, &n, next, &err) == GX_OK && n == 2 && next[0]);
    q.cursor = next;
    gx_anomaly_row more[2];
    char next2[128];
    CHECK(gx_anomaly_query_page(t.db, &q, more, &n, next2, &err) == GX_OK && n == 2);
    CHECK(more[0].score < rows[1].score || (more[0].score == rows[1].score && more[0].id < rows[1].id));
    adb_close(&t);
}

/* EXPLAIN QUERY PLAN text of one page shape, all rows joined. */
static void plan_of(gx_db *db, const gx_anomaly_query *q, int cur, char *out, size_t n) {
    char sql[1200], ex[1300];
    gx_anomaly_page_sql(q, cur, sql, sizeof sql);
    snprintf(ex, sizeof ex, "EXPLAIN QUERY PLAN %s", sql);
    sqlite3_stmt *st;
    out[0] = 0;
    if (sqlite3_prepare_v2(gx_db_handle(db), ex, -1, &st, NULL) != SQLITE_OK) {
        snprintf(out, n, "PREPARE FAILED: %s", sqlite3_errmsg(gx_db_handle(db)));
        return;
    }
    size_t len = 0;
    while (sqlite3_step(st) == SQLITE_ROW && len + 2 < n)
        len += (size_t)snprintf(out + len, n - len, "%s; ", (const char *)sqlite3_column_text(st, 3));
    sqlite3_finalize(st);
}

GX_TEST(anomaly_page_plans_use_cursor_indexes) {
    adb t;
    if (!adb_open(&t)) { CHECK(0); return; }
    int64_t m1 = model(t.db, "uda", SHA_A), m2 = model(t.db, "uda2", SHA_B);
    fill(t.db, 50, m1, m2, 0);
    struct { int model, survey, min, since, until; const char *index; } shapes[] = {
        { 0, 0, 0, 0, 0, "anomaly_score_cursor" },
        { 0, 0, 1, 0, 0, "anomaly_score_cursor" },
        { 0, 0, 0, 1, 1, "anomaly_score_cursor" },
        { 0, 1, 0, 0, 0, "anomaly_survey_cursor" },
        { 0, 1, 1, 1, 0, "anomaly_survey_cursor" },
        { 1, 0, 0, 0, 0, "anomaly_model_score" },
        { 1, 0, 1, 0, 1, "anomaly_model_score" },
        { 1, 1, 0, 0, 0, "anomaly_model_survey_cursor" },
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        for (int cur = 0; cur < 2; cur++) {
            gx_anomaly_query q = q0(10);
            q.model_id = shapes[i].model ? m1 : 0;
            q.survey = shapes[i].survey ? "sdss" : NULL;
            q.min_score = shapes[i].min ? 0.5 : NAN;
            q.since = shapes[i].since ? "2000-01-01" : NULL;
            q.until = shapes[i].until ? "2999-01-01" : NULL;
            char plan[1024];
            plan_of(t.db, &q, cur, plan, sizeof plan);
            CHECK_MSG(!strstr(plan, "TEMP B-TREE") && strstr(plan, shapes[i].index) &&
                      !strstr(plan, "SCAN o") && !strstr(plan, "SCAN m"),
                      "shape %zu cursor %d: %s", i, cur, plan);
        }
    }
    adb_close(&t);
}

/* ------------------------------------------------------------ thumbnails */

/* A smooth 3 x S x S input in [0,1] whose bands differ (so a band swap
 * shows), shifted by `seed` so two inputs differ. */
static float *thumb_input(int S, int seed) {
    float *x = malloc(sizeof *x * 3 * (size_t)S * (size_t)S);
    for (int c = 0; x && c < 3; c++)
        for (int i = 0; i < S * S; i++)
            x[(size_t)c * S * S + i] = (float)(((i % S) + 2 * (i / S) + 40 * c + seed) % 256) / 255.0f;
    return x;
}

/* Decodes the stored PNG of (ext, version) into im; 0 when none. */
static int thumb_decode(gx_db *db, const char *ext, int version, gx_image *im, int *found) {
    uint8_t *png = NULL;
    size_t n = 0;
    gx_err err;
    memset(im, 0, sizeof *im);
    if (gx_anomaly_thumb_get(db, ext, version, &png, &n, found, &err) != GX_OK) return 0;
    gx_status s = gx_png_decode(png, n, NULL, im, &err);
    free(png);
    return s == GX_OK;
}

GX_TEST(anomaly_thumb_stored_with_score_and_found_by_version) {
    adb t;
    if (!adb_open(&t)) { CHECK(0); return; }
    int64_t m1 = model(t.db, "uda", SHA_A), m2 = model(t.db, "uda2", SHA_B);
    const int S = 16;
    float *x1 = thumb_input(S, 0), *x2 = thumb_input(S, 99);
    gx_err err;
    gx_anomaly_rec r = rec("ngc.1300:a", SHA_A, m1, 0.7);
    r.thumb_x = x1;
    r.thumb_side = S;
    CHECK(gx_anomaly_put(t.db, &r, &err) == GX_OK);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT count(*) FROM anomaly_thumbs") == 1);
    gx_image im;
    int found = 0;
    CHECK(thumb_decode(t.db, "ngc.1300:a", 0, &im, &found));
    CHECK(found == 1 && im.c == 3 && im.w == S && im.h == S);
    /* The pixels are the model input, 8-bit: within half a step. */
    double worst = 0;
    for (int i = 0; im.data && i < 3 * S * S; i++) worst = fmax(worst, fabs(im.data[i] - x1[i]));
    CHECK_MSG(im.data && worst <= 0.5 / 255 + 1e-6, "max |png - x| = %g", worst);
    gx_image_free(&im);
    /* Another model scoring the same image keeps the first thumbnail. */
    gx_anomaly_rec o = rec("ngc.1300:a", SHA_A, m2, 0.2);
    o.thumb_x = x2;
    o.thumb_side = S;
    CHECK(gx_anomaly_put(t.db, &o, &err) == GX_OK && !o.existed);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT count(*) FROM anomaly_thumbs") == 1);
    CHECK(thumb_decode(t.db, "ngc.1300:a", 1, &im, &found) && im.data && fabs(im.data[5] - x1[5]) < 0.003);
    gx_image_free(&im);
    /* Version 2 of the object, a new image: its own thumbnail, now the
     * default; version 1 is still there. */
    char sha[65];
    fake_sha(11, sha);
    gx_anomaly_rec v2 = rec("ngc.1300:a", sha, m1, 0.9);
    v2.thumb_x = x2;
    v2.thumb_side = S;
    CHECK(gx_anomaly_put(t.db, &v2, &err) == GX_OK);
    CHECK(thumb_decode(t.db, "ngc.1300:a", 0, &im, &found) && found == 2 && im.data &&
          fabs(im.data[5] - x2[5]) < 0.003);
    gx_image_free(&im);
    CHECK(thumb_decode(t.db, "ngc.1300:a", 1, &im, &found) && found == 1);
    gx_image_free(&im);
    /* Rows say their version and that a thumbnail exists. */
    gx_anomaly_row rows[4];
    int n = 0;
    CHECK(gx_anomaly_history(t.db, "ngc.1300:a", rows, 4, &n, &err) == GX_OK && n == 3);
    for (int i = 0; i < n; i++) {
        CHECK(rows[i].has_thumb == 1);
        CHECK(rows[i].version == (strcmp(rows[i].image_sha256, sha) == 0 ? 2 : 1));
    }
    /* Not found: an unknown object, a version past the last, a version
     * without a thumbnail; a negative version is refused. */
    uint8_t *png = NULL;
    size_t len = 0;
    CHECK(gx_anomaly_thumb_get(t.db, "nobody", 0, &png, &len, NULL, &err) == GX_ERR_NOTFOUND && !png);
    CHECK(strstr(err.msg, "nobody") != NULL);
    CHECK(gx_anomaly_thumb_get(t.db, "ngc.1300:a", 3, &png, &len, NULL, &err) == GX_ERR_NOTFOUND);
    CHECK(strstr(err.msg, "version 3") != NULL);
    gx_anomaly_rec plain = rec("plain", SHA_B, m1, 0.3);   /* no thumb_x */
    CHECK(gx_anomaly_put(t.db, &plain, &err) == GX_OK);
    CHECK(gx_anomaly_thumb_get(t.db, "plain", 0, &png, &len, NULL, &err) == GX_ERR_NOTFOUND);
    CHECK(gx_anomaly_history(t.db, "plain", rows, 4, &n, &err) == GX_OK && n == 1 && rows[0].has_thumb == 0 &&
          rows[0].version == 1);
    CHECK(gx_anomaly_thumb_get(t.db, "plain", -1, &png, &len, NULL, &err) == GX_ERR_INVALID);
    /* A re-sent image that had no thumbnail gets one; the score row is
     * still the old one (idempotency unchanged). */
    gx_anomaly_rec again = rec("plain", SHA_B, m1, 0.9);
    again.thumb_x = x1;
    again.thumb_side = S;
    CHECK(gx_anomaly_put(t.db, &again, &err) == GX_OK && again.existed && again.id == plain.id);
    CHECK(gx_anomaly_thumb_get(t.db, "plain", 0, &png, &len, NULL, &err) == GX_OK && png && len > 8);
    free(png);
    free(x1);
    free(x2);
    adb_close(&t);
}

/* A thumbnail the caller made (gx_anomaly_thumb_png, as the scorer does on
 * its threads) is stored byte for byte; one with no bytes or a bad side is
 * refused with the object named, and nothing of its batch is stored. */
GX_TEST(anomaly_thumb_png_given_is_stored_as_is) {
    adb t;
    if (!adb_open(&t)) { CHECK(0); return; }
    int64_t m1 = model(t.db, "uda", SHA_A);
    const int S = 16;
    float *x = thumb_input(S, 5);
    uint8_t *png = NULL, *got = NULL;
    size_t n = 0, got_n = 0;
    int side = 0;
    gx_err err;
    CHECK(x && gx_anomaly_thumb_png(x, S, &png, &n, &side, &err) == GX_OK && side == S);
    gx_anomaly_rec r = rec("given", SHA_A, m1, 0.4);
    r.thumb_png = png;
    r.thumb_png_n = n;
    r.thumb_png_side = side;
    CHECK(gx_anomaly_put(t.db, &r, &err) == GX_OK);
    CHECK(gx_anomaly_thumb_get(t.db, "given", 0, &got, &got_n, NULL, &err) == GX_OK);
    CHECK(got && got_n == n && !memcmp(got, png, n));
    free(got);
    gx_anomaly_rec bad[2] = { rec("fine", SHA_B, m1, 0.1), rec("broken", SHA_B, m1, 0.2) };
    bad[1].thumb_png = png;
    bad[1].thumb_png_n = 0;
    bad[1].thumb_png_side = side;
    CHECK(gx_anomaly_put_many(t.db, bad, 2, &err) == GX_ERR_INVALID && strstr(err.msg, "broken"));
    bad[1].thumb_png_n = n;
    bad[1].thumb_png_side = 0;
    CHECK(gx_anomaly_put_many(t.db, bad, 2, &err) == GX_ERR_INVALID && strstr(err.msg, "thumbnail"));
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT count(*) FROM anomaly_scores") == 1);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT count(*) FROM anomaly_thumbs") == 1);
    free(png);
    free(x);
    adb_close(&t);
}

GX_TEST(anomaly_thumb_large_input_is_shrunk) {
    const int S = 150;
    float *x = thumb_input(S, 3);
    uint8_t *png = NULL;
    size_t n = 0;
    int side = 0;
    gx_err err;
    CHECK(x && gx_anomaly_thumb_png(x, S, &png, &n, &side, &err) == GX_OK);
    CHECK(side == GX_ANOMALY_THUMB_MAX);
    gx_image im;
    memset(&im, 0, sizeof im);
    CHECK(png && gx_png_decode(png, n, NULL, &im, &err) == GX_OK);
    CHECK(im.w == GX_ANOMALY_THUMB_MAX && im.h == GX_ANOMALY_THUMB_MAX);
    /* Band means survive the resize (the bands differ by design). */
    for (int c = 0; im.data && c < 3; c++) {
        double a = 0, b = 0;
        for (int i = 0; i < S * S; i++) a += x[(size_t)c * S * S + i];
        for (int i = 0; i < im.w * im.h; i++) b += im.data[(size_t)c * im.w * im.h + i];
        CHECK_NEAR(b / (im.w * im.h), a / (S * S), 0.02);
    }
    gx_image_free(&im);
    free(png);
    CHECK(gx_anomaly_thumb_png(NULL, S, &png, &n, &side, &err) == GX_ERR_INVALID);
    CHECK(gx_anomaly_thumb_png(x, 0, &png, &n, &side, &err) == GX_ERR_INVALID);
    free(x);
}

GX_TEST(anomaly_thumb_rolls_back_with_its_batch) {
    adb t;
    if (!adb_open(&t)) { CHECK(0); return; }
    int64_t m1 = model(t.db, "uda", SHA_A);
    float *x = thumb_input(8, 1);
    gx_anomaly_rec r[2] = { rec("ok", SHA_A, m1, 0.5), rec("bad", SHA_B, m1, NAN) };   /* NaN score: refused */
    r[0].thumb_x = r[1].thumb_x = x;
    r[0].thumb_side = r[1].thumb_side = 8;
    gx_err err;
    CHECK(gx_anomaly_put_many(t.db, r, 2, &err) == GX_ERR_INVALID);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT count(*) FROM anomaly_thumbs") == 0);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT count(*) FROM anomaly_scores") == 0);
    /* A bad thumb_side names the object. */
    gx_anomaly_rec b = rec("side", SHA_A, m1, 0.5);
    b.thumb_x = x;
    b.thumb_side = 0;
    CHECK(gx_anomaly_put(t.db, &b, &err) == GX_ERR_INVALID && strstr(err.msg, "side"));
    free(x);
    adb_close(&t);
}
