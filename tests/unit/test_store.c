/*
 * test_store.c — galaxyd's prediction store (daemon/gx_store.c) on a real
 * SQLite file in a fresh mkdtemp directory per test.
 *
 * Covered: model registration is idempotent; predictions page through with
 * a cursor while rows are being inserted between pages (no duplicate, no
 * gap, strict (created_at, id) order); the survey / class / since filters
 * alone and together; a bad cursor (and every other bad query field) is
 * GX_ERR_INVALID naming the field; created_at never goes back even when
 * the newest stored row is in the future; get_object (not found, several
 * images of one object, null fields); CSV quoting read back by an RFC 4180
 * reader; the file survives close/reopen with the WAL folded in; writers on
 * several threads. Times are moved with a second raw connection where a
 * test needs rows at known instants.
 */
#include "gx_test.h"
#include "test_fixture_util.h"

#include "gx_http_parse.h"
#include "gx_store.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------ fixture */

typedef tfx_tmpdb st_tmp;

static void st_tmp_init(st_tmp *t) { tfx_tmpdb_init(t, "store", "s.db"); }
static void st_tmp_free(st_tmp *t) { tfx_tmpdb_free(t); }

#define ST_K 4

static void st_info(gx_serve_info *info, const char *name, char ver_digit) {
    memset(info, 0, sizeof *info);
    snprintf(info->name, sizeof info->name, "%s", name);
    snprintf(info->kind, sizeof info->kind, "wavelet-mamba");
    memset(info->version, ver_digit, 64);
    snprintf(info->path, sizeof info->path, "/models/%s.safetensors", name);
    snprintf(info->device, sizeof info->device, "cpu");
    info->input_size = 64;
    info->crop_frac = 0.75;
    info->n_classes = ST_K;
    static const char *cls[ST_K] = { "Smooth", "Disk, \"Edge-on\"", "Spiral", "Merger" };
    for (int k = 0; k < ST_K; k++) snprintf(info->class_names[k], 48, "%s", cls[k]);
    info->n_params = 1234;
    info->run_id = 42;                       /* not in this database */
    info->config_json = (char *)"{\"depth\":2}";
    info->test_metrics_json = (char *)"{}";
}

/* One prediction; the image hash is derived from img so tests choose
 * whether two uploads are "the same image". */
typedef struct st_pred_buf {
    gx_serve_meta meta;
    float probs[ST_K];
    gx_store_pred p;
} st_pred_buf;

static gx_store_pred *st_pred(st_pred_buf *b, int64_t model_id, const char *object_id,
                              const char *survey, int img, int cls) {
    memset(b, 0, sizeof *b);
    snprintf(b->meta.format, sizeof b->meta.format, "png");
    b->meta.width = b->meta.height = 64;
    b->meta.bands = 3;
    snprintf(b->meta.sha256, sizeof b->meta.sha256, "%064x", (unsigned)img);
    for (int k = 0; k < ST_K; k++) b->probs[k] = k == cls ? 0.7f : 0.1f;
    static const char *names[ST_K] = { "Smooth", "Disk, \"Edge-on\"", "Spiral", "Merger" };
    b->p = (gx_store_pred){ .object_id = object_id, .survey = survey, .ra = NAN, .dec = NAN,
                            .meta = &b->meta, .model_id = model_id, .model_name = "wm",
                            .model_version = "x", .class_index = cls,
                            .class_name = names[cls], .probs = b->probs, .n_classes = ST_K,
                            .redshift = 0.125, .latency_ms = 3.5 };
    return &b->p;
}

static gx_store *st_open(gx_test_state *T, const st_tmp *t, int64_t *model_id) {
    gx_store *s = NULL;
    gx_err err = { "" };
    CHECK_MSG(gx_store_open(&s, t->path, &err) == GX_OK, "%s", err.msg);
    if (s && model_id) {
        gx_serve_info info;
        st_info(&info, "wm", 'a');
        CHECK_MSG(gx_store_register_model(s, &info, model_id, &err) == GX_OK, "%s", err.msg);
    }
    return s;
}

static int64_t st_put(gx_test_state *T, gx_store *s, gx_store_pred *p) {
    int64_t id = -1;
    char at[32] = "";
    gx_err err = { "" };
    CHECK_MSG(gx_store_put_prediction(s, p, &id, at, &err) == GX_OK, "%s", err.msg);
    CHECK(strlen(at) == 24 && at[10] == 'T' && at[23] == 'Z');
    return id;
}

/* Runs SQL on a second, raw connection to the same file (moving times). */
static void st_sql(gx_test_state *T, const st_tmp *t, const char *sql) {
    sqlite3 *h = NULL;
    CHECK(sqlite3_open(t->path, &h) == SQLITE_OK);
    sqlite3_busy_timeout(h, 5000);
    char *msg = NULL;
    CHECK_MSG(sqlite3_exec(h, sql, NULL, NULL, &msg) == SQLITE_OK, "%s: %s", sql, msg ? msg : "");
    sqlite3_free(msg);
    sqlite3_close(h);
}

/* One integer from a query on a second, raw connection (-1 on error). */
static long long st_q_int(const st_tmp *t, const char *sql) {
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    long long v = -1;
    if (sqlite3_open(t->path, &h) == SQLITE_OK && sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(h);
    return v;
}

/* A whole listing (all pages of `limit`) into ids[]; returns the count. */
static int st_list_all(gx_test_state *T, gx_store *s, gx_store_query q, int64_t *ids, int cap) {
    char cur[GX_STORE_CURSOR_MAX] = "";
    int n = 0;
    for (int page = 0; page < 10000; page++) {
        q.cursor = cur[0] ? cur : NULL;
        json_t *items = NULL;
        char next[GX_STORE_CURSOR_MAX];
        gx_err err = { "" };
        if (gx_store_list_predictions(s, &q, &items, next, sizeof next, &err) != GX_OK) {
            CHECK_MSG(0, "list: %s", err.msg);
            return n;
        }
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it) if (n < cap) ids[n++] = json_integer_value(json_object_get(it, "id"));
        CHECK(json_array_size(items) <= (size_t)q.limit);
        json_decref(items);
        if (!next[0]) break;
        strcpy(cur, next);
    }
    return n;
}

/* ---------------------------------------------------------------- tests */

GX_TEST(store_register_model_idempotent) {
    st_tmp t; st_tmp_init(&t);
    int64_t a = 0, b = 0, c = 0;
    gx_store *s = st_open(T, &t, &a);
    gx_serve_info info;
    gx_err err = { "" };
    st_info(&info, "wm", 'a');
    CHECK(gx_store_register_model(s, &info, &b, &err) == GX_OK && b == a && a > 0);
    st_info(&info, "wm", 'b');                      /* a new checkpoint: a new row */
    CHECK(gx_store_register_model(s, &info, &c, &err) == GX_OK && c != a);
    st_info(&info, "wm", 'G');                      /* not hex */
    CHECK(gx_store_register_model(s, &info, &c, &err) == GX_ERR_INVALID);
    CHECK(strstr(err.msg, "not a sha256") != NULL);
    /* Run 42 is not in this database: stored as NULL, not an FK failure. */
    CHECK(st_q_int(&t, "SELECT count(*) FROM served_models WHERE run_id IS NULL"
                       " AND classes_json LIKE '[\"Smooth\",%' AND preprocess_json LIKE '%\"input_size\":64%'") == 2);
    st_sql(T, &t, "INSERT INTO runs (id, model_kind) VALUES (42, 'wavelet-mamba')");
    st_info(&info, "wm", 'c');
    CHECK(gx_store_register_model(s, &info, &c, &err) == GX_OK);
    CHECK(st_q_int(&t, "SELECT run_id FROM served_models WHERE version LIKE 'ccc%'") == 42);
    gx_store_close(s);
    st_tmp_free(&t);
}

/* Pages of 3 while 2 new rows arrive between pages: every row that existed
 * when paging began is seen exactly once, the order is strictly increasing
 * in (created_at, id), and rows inserted meanwhile (which always sort
 * after) are seen too, without duplicates. */
GX_TEST(store_cursor_pages_while_inserting) {
    st_tmp t; st_tmp_init(&t);
    int64_t mid = 0;
    gx_store *s = st_open(T, &t, &mid);
    st_pred_buf b;
    int64_t before[10];
    for (int i = 0; i < 10; i++) {
        char oid[16];
        snprintf(oid, sizeof oid, "obj%d", i);
        before[i] = st_put(T, s, st_pred(&b, mid, oid, "sdss", i, i % ST_K));
    }
    int64_t seen[200];
    char seen_at[200][32];
    int n_seen = 0, inserted = 10, pages = 0;
    char cur[GX_STORE_CURSOR_MAX] = "";
    for (;;) {
        gx_store_query q = { .class_index = -1, .limit = 3, .cursor = cur[0] ? cur : NULL };
        json_t *items = NULL;
        char next[GX_STORE_CURSOR_MAX];
        gx_err err = { "" };
        CHECK_MSG(gx_store_list_predictions(s, &q, &items, next, sizeof next, &err) == GX_OK, "%s", err.msg);
        if (!items) break;
        pages++;
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it) {
            seen[n_seen] = json_integer_value(json_object_get(it, "id"));
            snprintf(seen_at[n_seen], 32, "%s", json_string_value(json_object_get(it, "created_at")));
            n_seen++;
        }
        json_decref(items);
        if (!next[0] || n_seen > 150) break;
        strcpy(cur, next);
        if (inserted < 30) {                       /* two new rows between pages */
            for (int k = 0; k < 2; k++, inserted++) {
                char oid[16];
                snprintf(oid, sizeof oid, "late%d", inserted);
                st_put(T, s, st_pred(&b, mid, oid, "sdss", inserted, 0));
            }
        }
    }
    CHECK_MSG(n_seen == inserted, "saw %d rows of %d", n_seen, inserted);
    for (int i = 1; i < n_seen; i++) {
        int c = strcmp(seen_at[i - 1], seen_at[i]);
        CHECK_MSG(c < 0 || (c == 0 && seen[i - 1] < seen[i]), "row %d out of order", i);
    }
    for (int i = 0; i < 10; i++) {
        int hits = 0;
        for (int j = 0; j < n_seen; j++) hits += seen[j] == before[i];
        CHECK_MSG(hits == 1, "row %lld seen %d times", (long long)before[i], hits);
    }
    /* 3 read and 2 added per page: the reader catches up after 8 pages. */
    CHECK_MSG(pages == 8 && inserted == 24, "%d pages, %d rows", pages, inserted);
    gx_store_close(s);
    st_tmp_free(&t);
}

GX_TEST(store_filters_survey_class_since) {
    st_tmp t; st_tmp_init(&t);
    int64_t mid = 0;
    gx_store *s = st_open(T, &t, &mid);
    st_pred_buf b;
    /* 12 rows: survey by i % 3 (sdss, decals, none), class i % 4. */
    const char *surveys[3] = { "sdss", "decals", NULL };
    for (int i = 0; i < 12; i++) {
        char oid[16];
        snprintf(oid, sizeof oid, "o%d", i);
        st_put(T, s, st_pred(&b, mid, oid, surveys[i % 3], i, i % ST_K));
    }
    /* Row id i+1 gets the time 2024-01-(i+1) 00:00:00.000 (ids are 1..12). */
    st_sql(T, &t, "UPDATE predictions SET created_at = printf('2024-01-%02dT00:00:00.000Z', id)");
    int64_t ids[64];
    int n = st_list_all(T, s, (gx_store_query){ .survey = "sdss", .class_index = -1, .limit = 2 }, ids, 64);
    CHECK(n == 4);
    for (int i = 0; i < n; i++) CHECK((ids[i] - 1) % 3 == 0);
    n = st_list_all(T, s, (gx_store_query){ .class_index = 2, .limit = 1 }, ids, 64);
    CHECK(n == 3);
    for (int i = 0; i < n; i++) CHECK((ids[i] - 1) % 4 == 2);
    n = st_list_all(T, s, (gx_store_query){ .survey = "decals", .class_index = 1, .limit = 5 }, ids, 64);
    CHECK(n == 1 && ids[0] == 2);               /* decals: i = 1,4,7,10; class 1: i = 1,5,9 */
    n = st_list_all(T, s, (gx_store_query){ .class_index = -1, .since = "2024-01-10", .limit = 2 }, ids, 64);
    CHECK(n == 3 && ids[0] == 10 && ids[2] == 12);   /* inclusive lower bound */
    n = st_list_all(T, s, (gx_store_query){ .class_index = -1, .since = "2024-01-10T01:00:00+01:00",
                                            .limit = 100 }, ids, 64);
    CHECK(n == 3 && ids[0] == 10);               /* +01:00 is converted to UTC */
    n = st_list_all(T, s, (gx_store_query){ .class_index = -1, .since = "2024-01-10T00:00:00.001Z",
                                            .limit = 100 }, ids, 64);
    CHECK(n == 2 && ids[0] == 11);
    /* All three: sdss (i = 0,3,6,9) and class 1 (i = 1,5,9) is i = 9, id 10. */
    n = st_list_all(T, s, (gx_store_query){ .survey = "sdss", .class_index = 1,
                                            .since = "2024-01-02", .limit = 100 }, ids, 64);
    CHECK(n == 1 && ids[0] == 10);
    n = st_list_all(T, s, (gx_store_query){ .survey = "sdss", .class_index = 1,
                                            .since = "2024-01-11", .limit = 100 }, ids, 64);
    CHECK(n == 0);
    n = st_list_all(T, s, (gx_store_query){ .survey = "hst", .class_index = -1, .limit = 100 }, ids, 64);
    CHECK(n == 0);
    gx_store_close(s);
    st_tmp_free(&t);
}

GX_TEST(store_bad_queries_name_the_field) {
    st_tmp t; st_tmp_init(&t);
    int64_t mid = 0;
    gx_store *s = st_open(T, &t, &mid);
    st_pred_buf b;
    st_put(T, s, st_pred(&b, mid, "o1", NULL, 1, 0));
    st_put(T, s, st_pred(&b, mid, "o2", NULL, 2, 0));
    /* Cursors: junk, valid base64url of junk, a stamp with a bad id, padding. */
    char c1[64], c2[64], c3[64];
    char *e = gx_base64url_encode((const unsigned char *)"hello", 5);
    snprintf(c1, sizeof c1, "%s", e); free(e);
    e = gx_base64url_encode((const unsigned char *)"2024-01-01T00:00:00.000Z|12a", 28);
    snprintf(c2, sizeof c2, "%s", e); free(e);
    e = gx_base64url_encode((const unsigned char *)"2024-01-01 00:00:00.000Z|12", 27);
    snprintf(c3, sizeof c3, "%s", e); free(e);
    char longc[200];
    memset(longc, 'A', 150);
    longc[150] = 0;
    static const char *junk[] = { "garbage!", "", "QUJD=", "a b" };
    const char *bad_cursors[] = { junk[0], junk[1], junk[2], junk[3], c1, c2, c3, longc };
    for (size_t i = 0; i < sizeof bad_cursors / sizeof bad_cursors[0]; i++) {
        gx_store_query q = { .class_index = -1, .limit = 10, .cursor = bad_cursors[i] };
        json_t *items = (json_t *)1;
        char next[GX_STORE_CURSOR_MAX];
        gx_err err = { "" };
        CHECK_MSG(gx_store_list_predictions(s, &q, &items, next, sizeof next, &err) == GX_ERR_INVALID,
                  "cursor %zu accepted", i);
        CHECK_MSG(strstr(err.msg, "'cursor'") != NULL, "cursor %zu: %s", i, err.msg);
        CHECK(items == NULL && next[0] == 0);
    }
    static const struct { gx_store_query q; const char *field; } bad[] = {
        { { .class_index = -1, .limit = 0 }, "'limit'" },
        { { .class_index = -1, .limit = 1001 }, "'limit'" },
        { { .class_index = -2, .limit = 5 }, "'class'" },
        { { .class_index = 99, .limit = 5 }, "'class'" },
        { { .survey = "sd ss", .class_index = -1, .limit = 5 }, "'survey'" },
        { { .class_index = -1, .limit = 5, .since = "yesterday" }, "'since'" },
        { { .class_index = -1, .limit = 5, .since = "2460000.5" }, "'since'" },   /* julian day */
        { { .class_index = -1, .limit = 5, .since = "2024-13-01" }, "'since'" },
        { { .class_index = -1, .limit = 5, .since = "2024-01-01 00:00" }, "'since'" },
        { { .class_index = -1, .limit = 5, .since = "2024-01-01T00:00:00.Z" }, "'since'" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *items = NULL;
        char next[GX_STORE_CURSOR_MAX];
        gx_err err = { "" };
        CHECK_MSG(gx_store_list_predictions(s, &bad[i].q, &items, next, sizeof next, &err) == GX_ERR_INVALID,
                  "query %zu accepted", i);
        CHECK_MSG(strstr(err.msg, bad[i].field) != NULL, "query %zu: \"%s\" lacks %s", i, err.msg,
                  bad[i].field);
    }
    /* A good cursor still works after all that, and one page of 1 has a next. */
    json_t *items = NULL;
    char next[GX_STORE_CURSOR_MAX];
    gx_err err;
    gx_store_query q = { .class_index = -1, .limit = 1 };
    CHECK(gx_store_list_predictions(s, &q, &items, next, sizeof next, &err) == GX_OK && next[0]);
    json_decref(items);
    q.cursor = next;
    char next2[GX_STORE_CURSOR_MAX];
    CHECK(gx_store_list_predictions(s, &q, &items, next2, sizeof next2, &err) == GX_OK);
    CHECK(json_array_size(items) == 1 && next2[0] == 0);
    json_decref(items);
    gx_store_close(s);
    st_tmp_free(&t);
}

GX_TEST(store_put_refusals) {
    st_tmp t; st_tmp_init(&t);
    int64_t mid = 0;
    gx_store *s = st_open(T, &t, &mid);
    st_pred_buf b;
    gx_err err = { "" };
    gx_store_pred *p = st_pred(&b, mid, "bad id", NULL, 1, 0);
    CHECK(gx_store_put_prediction(s, p, NULL, NULL, &err) == GX_ERR_INVALID && strstr(err.msg, "'object_id'"));
    p = st_pred(&b, mid, "ok", "../x", 1, 0);
    CHECK(gx_store_put_prediction(s, p, NULL, NULL, &err) == GX_ERR_INVALID && strstr(err.msg, "'survey'"));
    p = st_pred(&b, mid, "ok", NULL, 1, 0);
    p->ra = INFINITY;
    CHECK(gx_store_put_prediction(s, p, NULL, NULL, &err) == GX_ERR_INVALID && strstr(err.msg, "'ra'"));
    p = st_pred(&b, mid, "ok", NULL, 1, 0);
    p->meta = NULL;
    CHECK(gx_store_put_prediction(s, p, NULL, NULL, &err) == GX_ERR_INVALID && strstr(err.msg, "sha256"));
    p = st_pred(&b, mid, "ok", NULL, 1, 0);
    p->class_index = ST_K;
    CHECK(gx_store_put_prediction(s, p, NULL, NULL, &err) == GX_ERR_INVALID && strstr(err.msg, "class index"));
    p = st_pred(&b, mid, "ok", NULL, 1, 0);
    b.probs[2] = NAN;
    CHECK(gx_store_put_prediction(s, p, NULL, NULL, &err) == GX_ERR_INVALID && strstr(err.msg, "probability 2"));
    p = st_pred(&b, mid + 100, "ok", NULL, 1, 0);  /* no such model: the foreign key refuses */
    CHECK(gx_store_put_prediction(s, p, NULL, NULL, &err) == GX_ERR_INVALID);
    /* Nothing of the failed attempts was kept (the transaction rolled back). */
    json_t *o = NULL;
    CHECK(gx_store_get_object(s, "ok", &o, &err) == GX_ERR_NOTFOUND && o == NULL);
    CHECK(strstr(err.msg, "'ok' not found") != NULL);
    gx_store_close(s);
    st_tmp_free(&t);
}

GX_TEST(store_get_object_fields) {
    st_tmp t; st_tmp_init(&t);
    int64_t mid = 0;
    gx_store *s = st_open(T, &t, &mid);
    st_pred_buf b;
    gx_err err = { "" };
    json_t *o = NULL;
    CHECK(gx_store_get_object(s, "NGC1300", &o, &err) == GX_ERR_NOTFOUND);
    /* First upload without survey or position: those are null. */
    int64_t p1 = st_put(T, s, st_pred(&b, mid, "NGC1300", NULL, 7, 2));
    CHECK(gx_store_get_object(s, "NGC1300", &o, &err) == GX_OK);
    CHECK(json_is_null(json_object_get(o, "survey")) && json_is_null(json_object_get(o, "ra")) &&
          json_is_null(json_object_get(o, "dec")));
    CHECK(json_is_string(json_object_get(o, "first_seen")));
    json_decref(o);
    /* The same image again, now with survey and position: the row is reused
     * and filled in; a second image adds a row. */
    gx_store_pred *p = st_pred(&b, mid, "NGC1300", "sdss", 7, 2);
    p->ra = 49.92;
    p->dec = -19.41;
    int64_t p2 = st_put(T, s, p);
    p = st_pred(&b, mid, "NGC1300", "decals", 8, 1);
    p->redshift = NAN;
    int64_t p3 = st_put(T, s, p);
    CHECK(gx_store_get_object(s, "NGC1300", &o, &err) == GX_OK);
    CHECK(strcmp(json_string_value(json_object_get(o, "object_id")), "NGC1300") == 0);
    CHECK(strcmp(json_string_value(json_object_get(o, "survey")), "decals") == 0);   /* newest */
    CHECK_NEAR(json_real_value(json_object_get(o, "ra")), 49.92, 0);
    CHECK_NEAR(json_real_value(json_object_get(o, "dec")), -19.41, 0);
    json_t *preds = json_object_get(o, "predictions");
    CHECK(json_array_size(preds) == 3);
    CHECK(json_integer_value(json_object_get(json_array_get(preds, 0), "id")) == p3);  /* newest first */
    CHECK(json_integer_value(json_object_get(json_array_get(preds, 2), "id")) == p1);
    json_t *it = json_array_get(preds, 1);
    CHECK(json_integer_value(json_object_get(it, "id")) == p2);
    CHECK(strcmp(json_string_value(json_object_get(it, "survey")), "sdss") == 0);
    CHECK(strcmp(json_string_value(json_object_get(it, "model")), "wm") == 0);
    CHECK(strlen(json_string_value(json_object_get(it, "model_version"))) == 64);
    CHECK(json_integer_value(json_object_get(it, "class_index")) == 2);
    CHECK(strcmp(json_string_value(json_object_get(it, "class_name")), "Spiral") == 0);
    CHECK_NEAR(json_real_value(json_object_get(it, "confidence")), 0.7f, 0);
    json_t *probs = json_object_get(it, "probs");
    CHECK(json_array_size(probs) == ST_K);
    CHECK((float)json_real_value(json_array_get(probs, 2)) == 0.7f);   /* exact float round trip */
    CHECK((float)json_real_value(json_array_get(probs, 0)) == 0.1f);
    CHECK_NEAR(json_real_value(json_object_get(it, "redshift")), 0.125, 0);
    CHECK_NEAR(json_real_value(json_object_get(it, "latency_ms")), 3.5, 0);
    CHECK(json_is_null(json_object_get(json_array_get(preds, 0), "redshift")));
    json_decref(o);
    /* Two object rows (two images), not three. */
    CHECK(st_q_int(&t, "SELECT count(*) FROM objects WHERE external_id = 'NGC1300'") == 2);
    gx_store_close(s);
    st_tmp_free(&t);
}

/* A stored row in the future (clock stepped back since): new rows still
 * sort after it, so a cursor past it cannot skip them. */
GX_TEST(store_created_at_never_goes_back) {
    st_tmp t; st_tmp_init(&t);
    int64_t mid = 0;
    gx_store *s = st_open(T, &t, &mid);
    st_pred_buf b;
    st_put(T, s, st_pred(&b, mid, "a", NULL, 1, 0));
    st_sql(T, &t, "UPDATE predictions SET created_at = '2999-01-01T00:00:00.000Z'");
    int64_t id2 = -1;
    char at[32];
    gx_err err;
    CHECK(gx_store_put_prediction(s, st_pred(&b, mid, "b", NULL, 2, 0), &id2, at, &err) == GX_OK);
    CHECK(strcmp(at, "2999-01-01T00:00:00.000Z") >= 0);
    int64_t ids[8];
    int n = st_list_all(T, s, (gx_store_query){ .class_index = -1, .limit = 1 }, ids, 8);
    CHECK(n == 2 && ids[1] == id2);
    gx_store_close(s);
    st_tmp_free(&t);
}

/* ---- CSV, read back with a small RFC 4180 reader ------------------------ */

/* Splits CSV text into rows of fields (in place); returns the row count. */
static int csv_read(char *text, char *rows[][32], int *nf, int max_rows) {
    int r = 0;
    char *p = text;
    while (*p && r < max_rows) {
        int f = 0;
        for (;;) {
            char *out = p, *start = p;
            if (*p == '"') {
                p++;
                for (;;) {
                    if (*p == '"' && p[1] == '"') { *out++ = '"'; p += 2; }
                    else if (*p == '"') { p++; break; }
                    else if (!*p) return -1;
                    else *out++ = *p++;
                }
            } else {
                while (*p && *p != ',' && *p != '\r' && *p != '\n') *out++ = *p++;
            }
            char sep = *p;
            *out = 0;
            if (f < 32) rows[r][f++] = start;
            if (sep == ',') { p++; continue; }
            if (sep == '\r' && p[1] == '\n') { p += 2; break; }
            return -1;   /* rows must end in CRLF */
        }
        nf[r++] = f;
    }
    return r;
}

GX_TEST(store_csv_quoting_reads_back) {
    st_tmp t; st_tmp_init(&t);
    int64_t mid = 0;
    gx_store *s = st_open(T, &t, &mid);
    st_pred_buf b;
    gx_store_pred *p = st_pred(&b, mid, "o1", "sdss", 1, 1);   /* class "Disk, \"Edge-on\"" */
    p->ra = 10.5;
    p->dec = -3.25;
    st_put(T, s, p);
    st_put(T, s, st_pred(&b, mid, "o2", NULL, 2, 3));
    json_t *items = NULL;
    char next[GX_STORE_CURSOR_MAX];
    gx_err err;
    gx_store_query q = { .class_index = -1, .limit = 10 };
    CHECK(gx_store_list_predictions(s, &q, &items, next, sizeof next, &err) == GX_OK);
    char *csv = gx_store_items_csv(items);
    CHECK(csv != NULL);
    if (!csv) { json_decref(items); gx_store_close(s); st_tmp_free(&t); return; }
    CHECK(strstr(csv, ",\"Disk, \"\"Edge-on\"\"\",") != NULL);
    static char *rows[8][32];
    int nf[8];
    int n = csv_read(csv, rows, nf, 8);
    CHECK(n == 3);
    CHECK(nf[0] == 13 + ST_K && strcmp(rows[0][0], "id") == 0 && strcmp(rows[0][13], "p0") == 0);
    CHECK(strcmp(rows[0][12], "created_at") == 0 && strcmp(rows[0][8], "class_name") == 0);
    for (int r = 1; r < n; r++) {
        CHECK(nf[r] == nf[0]);
        json_t *it = json_array_get(items, (size_t)r - 1);
        CHECK(atoll(rows[r][0]) == json_integer_value(json_object_get(it, "id")));
        CHECK(strcmp(rows[r][8], json_string_value(json_object_get(it, "class_name"))) == 0);
        CHECK(strcmp(rows[r][12], json_string_value(json_object_get(it, "created_at"))) == 0);
        for (int k = 0; k < ST_K; k++)
            CHECK((float)strtod(rows[r][13 + k], NULL) ==
                  (float)json_real_value(json_array_get(json_object_get(it, "probs"), (size_t)k)));
    }
    CHECK(strcmp(rows[1][8], "Disk, \"Edge-on\"") == 0);
    CHECK(strcmp(rows[1][2], "sdss") == 0 && strtod(rows[1][3], NULL) == 10.5 && strcmp(rows[1][4], "-3.25") == 0);
    CHECK(rows[2][2][0] == 0 && rows[2][3][0] == 0);   /* null survey / ra: empty fields */
    free(csv);
    CHECK(gx_store_items_csv(NULL) == NULL);
    json_t *empty = json_array();
    csv = gx_store_items_csv(empty);
    CHECK(csv && strcmp(csv, "id,object_id,survey,ra,dec,model,model_version,class_index,class_name,"
                             "confidence,redshift,latency_ms,created_at\r\n") == 0);
    free(csv);
    json_decref(empty);
    json_decref(items);
    gx_store_close(s);
    st_tmp_free(&t);
}

GX_TEST(store_survives_close_reopen) {
    st_tmp t; st_tmp_init(&t);
    int64_t mid = 0, mid2 = 0;
    gx_store *s = st_open(T, &t, &mid);
    st_pred_buf b;
    int64_t id = st_put(T, s, st_pred(&b, mid, "keep", "sdss", 5, 3));
    gx_store_close(s);
    /* Clean close folds the WAL into the main file. */
    char wal[160];
    snprintf(wal, sizeof wal, "%s-wal", t.path);
    struct stat sb;
    CHECK(stat(wal, &sb) != 0 || sb.st_size == 0);
    s = st_open(T, &t, &mid2);
    CHECK(mid2 == mid);
    json_t *o = NULL;
    gx_err err;
    CHECK(gx_store_get_object(s, "keep", &o, &err) == GX_OK);
    json_t *it = json_array_get(json_object_get(o, "predictions"), 0);
    CHECK(json_integer_value(json_object_get(it, "id")) == id);
    CHECK(json_integer_value(json_object_get(it, "class_index")) == 3);
    json_decref(o);
    gx_store_close(s);
    /* A file that is not a database is refused at open with a message. */
    FILE *f = fopen(t.path, "wb");
    fputs("this is not sqlite, just text that is long enough to be a header........", f);
    fclose(f);
    unlink(wal);
    gx_store *bad = NULL;
    CHECK(gx_store_open(&bad, t.path, &err) != GX_OK && bad == NULL && err.msg[0]);
    gx_store_close(NULL);
    st_tmp_free(&t);
}

typedef struct { gx_store *s; int64_t mid; int id; int fails; } st_thr;

static void *st_writer(void *arg) {
    st_thr *w = arg;
    st_pred_buf b;
    for (int i = 0; i < 40; i++) {
        char oid[32];
        snprintf(oid, sizeof oid, "t%d-%d", w->id, i);
        gx_err err;
        if (gx_store_put_prediction(w->s, st_pred(&b, w->mid, oid, NULL, w->id * 1000 + i, i % ST_K),
                                    NULL, NULL, &err) != GX_OK)
            w->fails++;
    }
    return NULL;
}

GX_TEST(store_threads_write_and_page) {
    st_tmp t; st_tmp_init(&t);
    int64_t mid = 0;
    gx_store *s = st_open(T, &t, &mid);
    pthread_t th[4];
    st_thr w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (st_thr){ s, mid, i, 0 };
        pthread_create(&th[i], NULL, st_writer, &w[i]);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++) CHECK(w[i].fails == 0);
    int64_t ids[256];
    int n = st_list_all(T, s, (gx_store_query){ .class_index = -1, .limit = 7 }, ids, 256);
    CHECK(n == 160);
    for (int i = 1; i < n; i++) CHECK(ids[i] > ids[i - 1]);   /* one writer at a time: ids follow time */
    gx_store_close(s);
    st_tmp_free(&t);
}

/* A prediction without a survey takes its object's known one (and is
 * found by ?survey=); a request's own survey wins for its prediction. */
GX_TEST(store_prediction_survey_from_object) {
    st_tmp t; st_tmp_init(&t);
    int64_t mid = 0;
    gx_store *s = st_open(T, &t, &mid);
    st_pred_buf b;
    st_put(T, s, st_pred(&b, mid, "m31", "sdss", 1, 0));
    int64_t inherit = st_put(T, s, st_pred(&b, mid, "m31", NULL, 1, 0));    /* same image */
    int64_t other = st_put(T, s, st_pred(&b, mid, "m31", "decals", 1, 0));  /* its own */
    int64_t fresh = st_put(T, s, st_pred(&b, mid, "m33", NULL, 2, 0));      /* nothing known */
    int64_t ids[8];
    int n = st_list_all(T, s, (gx_store_query){ .survey = "sdss", .class_index = -1, .limit = 10 }, ids, 8);
    CHECK(n == 2 && ids[1] == inherit);
    n = st_list_all(T, s, (gx_store_query){ .survey = "decals", .class_index = -1, .limit = 10 }, ids, 8);
    CHECK(n == 1 && ids[0] == other);
    json_t *o = NULL;
    gx_err err;
    CHECK(gx_store_get_object(s, "m33", &o, &err) == GX_OK);
    json_t *it = json_array_get(json_object_get(o, "predictions"), 0);
    CHECK(json_integer_value(json_object_get(it, "id")) == fresh);
    CHECK(json_is_null(json_object_get(it, "survey")) && json_is_null(json_object_get(o, "survey")));
    json_decref(o);
    gx_store_close(s);
    st_tmp_free(&t);
}
