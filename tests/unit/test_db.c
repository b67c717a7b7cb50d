/*
 * test_db.c — the metrics database: schema migrations (fresh, idempotent
 * reopen, refusing a future schema, a failing migration rolled back), WAL
 * mode, and the trainer's writes (runs, metrics single and batched,
 * checkpoints) read back.
 *
 * Every test works on its own file in a fresh mkdtemp directory, removed at
 * the end (with the -wal/-shm side files).
 */
#include "gx_test.h"
#include "test_fixture_util.h"

#include "gx_db.h"
#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef tfx_tmpdb tmpdb;

static void tmpdb_init(tmpdb *t) { tfx_tmpdb_init(t, "db", "m.db"); }
static void tmpdb_free(tmpdb *t) { tfx_tmpdb_free(t); }

/* One integer from a query on a raw connection (or -1). */
static int table_exists(sqlite3 *h, const char *name) {
    char sql[200];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='%s'", name);
    return tfx_sql_int(h, sql) == 1;
}

GX_TEST(db_fresh_file_gets_schema_and_wal) {
    tmpdb t; tmpdb_init(&t);
    gx_db *db = NULL; gx_err err = {{0}};
    CHECK(gx_db_open(&db, t.path, &err) == GX_OK);
    if (!db) { printf("%s\n", err.msg); tmpdb_free(&t); return; }
    sqlite3 *h = gx_db_handle(db);
    CHECK(gx_migrations_count >= 1);
    CHECK(gx_migrations[0].version == 1 && strcmp(gx_migrations[0].name, "init") == 0);
    CHECK(gx_db_schema_version(db) == gx_migrations[gx_migrations_count - 1].version);
    CHECK(gx_db_migrations_applied(db) == gx_migrations_count);
    const char *tables[] = { "schema_migrations", "runs", "metrics", "checkpoints",
                             "served_models", "objects", "predictions",
                             "anomaly_scores", "counterfactuals" };
    for (size_t i = 0; i < sizeof tables / sizeof *tables; i++)
        CHECK_MSG(table_exists(h, tables[i]), "table %s missing", tables[i]);
    CHECK(tfx_sql_int(h, "SELECT count(*) FROM schema_migrations") == gx_migrations_count);
    CHECK(tfx_sql_int(h, "SELECT count(*) FROM schema_migrations WHERE version=1 AND name='init'"
                   " AND applied_at LIKE '20%Z'") == 1);
    /* Connection settings: WAL journal, foreign keys on, busy timeout. */
    sqlite3_stmt *st;
    CHECK(sqlite3_prepare_v2(h, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(st) == SQLITE_ROW);
    CHECK(strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0);
    sqlite3_finalize(st);
    CHECK(tfx_sql_int(h, "PRAGMA foreign_keys") == 1);
    CHECK(tfx_sql_int(h, "PRAGMA busy_timeout") >= 1000);
    /* The cursor indexes the daemon relies on exist. */
    CHECK(tfx_sql_int(h, "SELECT count(*) FROM sqlite_master WHERE type='index' AND name IN"
                   " ('predictions_cursor','anomaly_model_score','counterfactuals_expiry')")
          == 3);
    gx_db_close(db);
    tmpdb_free(&t);
}

GX_TEST(db_reopen_applies_nothing_and_keeps_data) {
    tmpdb t; tmpdb_init(&t);
    gx_db *db; gx_err err;
    CHECK(gx_db_open(&db, t.path, &err) == GX_OK);
    int64_t run = 0;
    CHECK(gx_db_run_begin(db, &(gx_db_run_info){ .model_kind = "uda" }, &run, &err) == GX_OK);
    gx_db_close(db);
    CHECK(gx_db_open(&db, t.path, &err) == GX_OK);
    CHECK(gx_db_migrations_applied(db) == 0);
    CHECK(gx_db_schema_version(db) == gx_migrations[gx_migrations_count - 1].version);
    CHECK(tfx_sql_int(gx_db_handle(db), "SELECT count(*) FROM schema_migrations")
          == gx_migrations_count);
    CHECK(tfx_sql_int(gx_db_handle(db), "SELECT count(*) FROM runs") == 1);
    gx_db_close(db);
    tmpdb_free(&t);
}

/* A later binary's extra migration applies on top of an existing file and
 * only that one runs. */
GX_TEST(db_pending_migration_applied_alone) {
    tmpdb t; tmpdb_init(&t);
    gx_db *db; gx_err err;
    gx_migration v1[] = { { 1, "a", "CREATE TABLE a(x INTEGER);" } };
    gx_migration v2[] = { { 1, "a", "CREATE TABLE a(x INTEGER);" },
                          { 3, "b", "CREATE TABLE b(y TEXT); INSERT INTO b VALUES ('hi');" } };
    CHECK(gx_db_open_with(&db, t.path, v1, 1, &err) == GX_OK);
    CHECK(gx_db_schema_version(db) == 1);
    gx_db_close(db);
    CHECK(gx_db_open_with(&db, t.path, v2, 2, &err) == GX_OK);
    CHECK(gx_db_migrations_applied(db) == 1);
    CHECK(gx_db_schema_version(db) == 3);
    CHECK(tfx_sql_int(gx_db_handle(db), "SELECT count(*) FROM b") == 1);
    gx_db_close(db);
    tmpdb_free(&t);
}

GX_TEST(db_future_schema_is_refused) {
    tmpdb t; tmpdb_init(&t);
    gx_db *db; gx_err err = {{0}};
    gx_migration future[] = { { 1, "a", "CREATE TABLE a(x);" },
                              { 2, "b", "CREATE TABLE b(x);" } };
    CHECK(gx_db_open_with(&db, t.path, future, 2, &err) == GX_OK);
    gx_db_close(db);
    /* An older binary (knows only version 1) must not touch it. */
    CHECK(gx_db_open_with(&db, t.path, future, 1, &err) == GX_ERR_UNSUPPORTED);
    CHECK(db == NULL);
    CHECK(strstr(err.msg, "schema version 2") != NULL);
    CHECK(strstr(err.msg, "newer than this binary knows (1)") != NULL);
    /* The real binary's list is also older than a version-999 file. */
    sqlite3 *h;
    CHECK(sqlite3_open(t.path, &h) == SQLITE_OK);
    CHECK(sqlite3_exec(h, "INSERT INTO schema_migrations(version, name) VALUES (999, 'x')",
                       NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(h);
    CHECK(gx_db_open(&db, t.path, &err) == GX_ERR_UNSUPPORTED);
    CHECK(strstr(err.msg, "999") != NULL);
    tmpdb_free(&t);
}

/* Migration 2 creates a table and then fails: its table must be gone, the
 * version must stay 1, and a fixed list must then apply cleanly. */
GX_TEST(db_failed_migration_rolls_back) {
    tmpdb t; tmpdb_init(&t);
    gx_db *db; gx_err err = {{0}};
    gx_migration bad[] = {
        { 1, "good", "CREATE TABLE a(x INTEGER); INSERT INTO a VALUES (1);" },
        { 2, "broken", "CREATE TABLE b(y INTEGER); INSERT INTO a VALUES (2);"
                       " THIS IS NOT SQL;" },
    };
    CHECK(gx_db_open_with(&db, t.path, bad, 2, &err) == GX_ERR_FORMAT);
    CHECK(db == NULL);
    CHECK(strstr(err.msg, "0002_broken") != NULL);
    sqlite3 *h;
    CHECK(sqlite3_open(t.path, &h) == SQLITE_OK);
    CHECK(table_exists(h, "a"));
    CHECK(!table_exists(h, "b"));
    CHECK(tfx_sql_int(h, "SELECT count(*) FROM a") == 1);          /* row 2 rolled back */
    CHECK(tfx_sql_int(h, "SELECT max(version) FROM schema_migrations") == 1);
    sqlite3_close(h);
    gx_migration fixed[] = { bad[0], { 2, "fixed", "CREATE TABLE b(y INTEGER);" } };
    CHECK(gx_db_open_with(&db, t.path, fixed, 2, &err) == GX_OK);
    CHECK(gx_db_migrations_applied(db) == 1);
    CHECK(table_exists(gx_db_handle(db), "b"));
    gx_db_close(db);
    tmpdb_free(&t);
}

GX_TEST(db_bad_lists_and_files_are_errors) {
    tmpdb t; tmpdb_init(&t);
    gx_db *db; gx_err err;
    gx_migration unsorted[] = { { 2, "b", "SELECT 1;" }, { 1, "a", "SELECT 1;" } };
    CHECK(gx_db_open_with(&db, t.path, unsorted, 2, &err) == GX_ERR_INVALID);
    /* A file that is not a database. */
    FILE *f = fopen(t.path, "wb");
    CHECK(f != NULL);
    if (f) { for (int i = 0; i < 200; i++) fputs("not a database at all ", f); fclose(f); }
    CHECK(gx_db_open(&db, t.path, &err) == GX_ERR_FORMAT);
    CHECK(db == NULL);
    /* A directory that does not exist. */
    CHECK(gx_db_open(&db, "/nonexistent-dir-gx/x.db", &err) == GX_ERR_IO);
    tmpdb_free(&t);
}

GX_TEST(db_runs_metrics_checkpoints_round_trip) {
    tmpdb t; tmpdb_init(&t);
    gx_db *db; gx_err err = {{0}};
    CHECK(gx_db_open(&db, t.path, &err) == GX_OK);
    int64_t run = 0;
    CHECK(gx_db_run_begin(db, &(gx_db_run_info){
              .model_kind = "wavelet-mamba", .config_json = "{\"epochs\":3}",
              .command_line = "galaxy-train wavelet-mamba --epochs 3", .seed = 42,
              .git_commit = "abc123" }, &run, &err) == GX_OK);
    CHECK(run > 0);
    char status[32];
    CHECK(gx_db_run_status(db, run, status, sizeof status, &err) == GX_OK);
    CHECK(strcmp(status, "running") == 0);
    /* Single puts; epoch 1 is written twice: the second value replaces it. */
    CHECK(gx_db_metric_put(db, run, 0, "val", "accuracy", 0.5, &err) == GX_OK);
    CHECK(gx_db_metric_put(db, run, 1, "val", "accuracy", 0.1, &err) == GX_OK);
    CHECK(gx_db_metric_put(db, run, 1, "val", "accuracy", 0.625, &err) == GX_OK);
    gx_db_metric rows[] = { { "val", "accuracy", 0.75 }, { "train", "accuracy", 0.9 },
                            { "val", "auc_macro", NAN }, { "val", "z_mae", 0.125 } };
    CHECK(gx_db_metrics_put(db, run, 2, rows, 4, &err) == GX_OK);
    int ep[8]; double v[8]; int n = 0;
    CHECK(gx_db_metric_get(db, run, "val", "accuracy", ep, v, 8, &n, &err) == GX_OK);
    CHECK(n == 3);
    CHECK(ep[0] == 0 && ep[1] == 1 && ep[2] == 2);
    CHECK(v[0] == 0.5 && v[1] == 0.625 && v[2] == 0.75);
    CHECK(gx_db_metric_get(db, run, "val", "auc_macro", ep, v, 8, &n, &err) == GX_OK);
    CHECK(n == 1 && isnan(v[0]));
    /* cap smaller than the count: partial fill, full count. */
    CHECK(gx_db_metric_get(db, run, "val", "accuracy", NULL, v, 1, &n, &err) == GX_OK);
    CHECK(n == 3 && v[0] == 0.5);
    CHECK(gx_db_metric_get(db, run, "test", "accuracy", ep, v, 8, &n, &err) == GX_OK);
    CHECK(n == 0);
    /* A metric of an unknown run violates the foreign key. */
    CHECK(gx_db_metric_put(db, run + 100, 0, "val", "accuracy", 1, &err) == GX_ERR_INVALID);
    /* Checkpoints. */
    const char *sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    int64_t ck = 0;
    CHECK(gx_db_checkpoint_put(db, &(gx_db_checkpoint){ run, 1, "best", "runs/1/best-1.st",
              sha, "{\"accuracy\":0.625}" }, &ck, &err) == GX_OK);
    CHECK(ck > 0);
    CHECK(gx_db_checkpoint_put(db, &(gx_db_checkpoint){ run, 2, "best", "runs/1/best-2.st",
              sha, NULL }, NULL, &err) == GX_OK);
    CHECK(gx_db_checkpoint_put(db, &(gx_db_checkpoint){ run, 2, "worst", "p", sha, NULL },
              NULL, &err) == GX_ERR_INVALID);
    CHECK(gx_db_checkpoint_put(db, &(gx_db_checkpoint){ run, 2, "last", "p", "abc", NULL },
              NULL, &err) == GX_ERR_INVALID);
    CHECK(gx_db_checkpoint_put(db, &(gx_db_checkpoint){ run + 7, 2, "last", "p", sha, NULL },
              NULL, &err) == GX_ERR_INVALID);
    char path[64]; int cep = -1;
    CHECK(gx_db_checkpoint_latest(db, run, "best", path, sizeof path, &cep, &err) == GX_OK);
    CHECK(strcmp(path, "runs/1/best-2.st") == 0 && cep == 2);
    CHECK(gx_db_checkpoint_latest(db, run, "last", path, sizeof path, &cep, &err)
          == GX_ERR_NOTFOUND);
    /* Finish. */
    CHECK(gx_db_run_finish(db, run, "done", &err) == GX_ERR_INVALID);
    CHECK(gx_db_run_finish(db, run + 9, "finished", &err) == GX_ERR_NOTFOUND);
    CHECK(gx_db_run_finish(db, run, "finished", &err) == GX_OK);
    CHECK(gx_db_run_status(db, run, status, sizeof status, &err) == GX_OK);
    CHECK(strcmp(status, "finished") == 0);
    sqlite3 *h = gx_db_handle(db);
    CHECK(tfx_sql_int(h, "SELECT count(*) FROM runs WHERE finished_at IS NOT NULL AND seed = 42"
                   " AND git_commit = 'abc123' AND config_json = '{\"epochs\":3}'") == 1);
    gx_db_close(db);
    tmpdb_free(&t);
}

/* A batch with one bad row stores none of its rows. */
GX_TEST(db_metrics_batch_is_atomic) {
    tmpdb t; tmpdb_init(&t);
    gx_db *db; gx_err err;
    CHECK(gx_db_open(&db, t.path, &err) == GX_OK);
    int64_t run;
    CHECK(gx_db_run_begin(db, &(gx_db_run_info){ .model_kind = "cf-inn" }, &run, &err)
          == GX_OK);
    gx_db_metric rows[] = { { "val", "accuracy", 0.5 }, { "val", NULL, 1.0 } };
    CHECK(gx_db_metrics_put(db, run, 0, rows, 2, &err) == GX_ERR_INVALID);
    CHECK(tfx_sql_int(gx_db_handle(db), "SELECT count(*) FROM metrics") == 0);
    /* The connection is usable afterwards (the transaction was closed). */
    CHECK(gx_db_metrics_put(db, run, 0, rows, 1, &err) == GX_OK);
    CHECK(tfx_sql_int(gx_db_handle(db), "SELECT count(*) FROM metrics") == 1);
    CHECK(gx_db_run_begin(db, &(gx_db_run_info){ .model_kind = NULL }, &run, &err)
          == GX_ERR_INVALID);
    gx_db_close(db);
    tmpdb_free(&t);
}
