/*
 * gx_db.h — the metrics database shared by galaxy-train and galaxyd.
 *
 * One SQLite file in WAL mode (readers never block the writer, so the
 * dashboard can read learning curves while a run writes them), foreign keys
 * on, a busy timeout so two processes sharing the file wait instead of
 * failing. The schema lives in migrations/NNNN_name.sql; the build embeds
 * them (scripts/embed_migrations.sh -> gx_migrations[]) and gx_db_open
 * applies the pending ones, each in its own transaction, recording them in
 * schema_migrations(version, name, applied_at). A database whose schema is
 * newer than the binary's newest migration is refused: an old binary must
 * not write into tables whose meaning it does not know.
 *
 *   gx_db *db; gx_err err;
 *   if (gx_db_open(&db, "galaxyd.db", &err) != GX_OK) { puts(err.msg); ... }
 *   int64_t run;
 *   gx_db_run_begin(db, &(gx_db_run_info){ .model_kind = "uda", .seed = 7 }, &run, &err);
 *   gx_db_metric_put(db, run, 3, "val", "accuracy", 0.81, &err);
 *   gx_db_run_finish(db, run, "finished", &err);
 *   gx_db_close(db);
 *
 * Threads: a gx_db is one SQLite connection; use it from one thread at a
 * time (the daemon opens one per worker). Every function returns gx_status
 * and writes a message into err (may be NULL) on failure; none aborts on a
 * database error. Non-finite metric values are stored as NULL and read back
 * as NaN (SQLite has no NaN).
 */
#ifndef GX_DB_H
#define GX_DB_H

#include "gx.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One schema migration: version parsed from the NNNN_ file prefix, the rest
 * of the file name, and the file's SQL text (may hold many statements). */
typedef struct gx_migration {
    int         version;       /* > 0, strictly increasing in the array */
    const char *name;          /* e.g. "init" for 0001_init.sql */
    const char *sql;
} gx_migration;

/* Generated at build time from the .sql files in migrations/ (build/gen/migrations.c). */
extern const gx_migration gx_migrations[];
extern const int gx_migrations_count;

typedef struct gx_db gx_db;    /* opaque: the connection plus prepared statements */

/* Opens (creating if absent) the database at path, sets WAL mode, foreign
 * keys and a 5 s busy timeout, and applies pending migrations from
 * gx_migrations[]. Errors: GX_ERR_IO (cannot open; WAL refused),
 * GX_ERR_FORMAT (the file is not an SQLite database),
 * GX_ERR_UNSUPPORTED (schema newer than this binary: message names both
 * versions), GX_ERR_FORMAT (a migration failed: message names it and SQLite's
 * error; that migration's changes are rolled back, earlier ones stay). On
 * error *out is NULL and nothing is leaked. A migration must not hold its
 * own BEGIN/COMMIT: gx_db wraps each in a transaction. */
gx_status gx_db_open(gx_db **out, const char *path, gx_err *err);

/* The same with an explicit migration list (tests inject failing or
 * "future" lists through this; production code calls gx_db_open). */
gx_status gx_db_open_with(gx_db **out, const char *path, const gx_migration *migs,
                          int n_migs, gx_err *err);

void gx_db_close(gx_db *db);   /* NULL is fine */

/* Newest applied schema version (0 = none), and how many migrations this
 * open applied (0 when the file was already up to date). */
int gx_db_schema_version(const gx_db *db);
int gx_db_migrations_applied(const gx_db *db);

/* The underlying connection (struct sqlite3 *), for the daemon's own queries
 * and for tests; declared void * so this header does not need sqlite3.h. */
void *gx_db_handle(gx_db *db);

/* Runs SQL that returns no rows (e.g. "PRAGMA wal_checkpoint"). */
gx_status gx_db_exec(gx_db *db, const char *sql, gx_err *err);

/* Explicit transactions, for callers batching their own writes. begin uses
 * BEGIN IMMEDIATE (take the write lock now, waiting up to the busy timeout,
 * rather than failing at the first write). */
gx_status gx_db_begin(gx_db *db, gx_err *err);
gx_status gx_db_commit(gx_db *db, gx_err *err);
void      gx_db_rollback(gx_db *db);

/* ------------------------------------------------------------------ runs */

typedef struct gx_db_run_info {
    const char *model_kind;    /* required: wavelet-mamba | cf-inn | uda */
    const char *config_json;   /* NULL -> "{}" */
    const char *command_line;  /* NULL allowed */
    int64_t     seed;
    const char *git_commit;    /* NULL when unknown */
} gx_db_run_info;

/* Inserts a run with status "running" and started_at = now. */
gx_status gx_db_run_begin(gx_db *db, const gx_db_run_info *info, int64_t *run_id,
                          gx_err *err);
/* status: "finished", "failed" or "interrupted"; sets finished_at = now.
 * GX_ERR_NOTFOUND for an unknown run, GX_ERR_INVALID for another status. */
gx_status gx_db_run_finish(gx_db *db, int64_t run_id, const char *status, gx_err *err);
/* The seed a run of model_kind `kind` was started with (what --resume
 * continues with). GX_ERR_NOTFOUND for no such run, GX_ERR_INVALID (naming
 * the kind found) for a run of another kind. */
gx_status gx_db_run_seed(gx_db *db, int64_t run_id, const char *kind, uint64_t *seed, gx_err *err);
/* Reads a run's status into buf (for tests and the dashboard). */
gx_status gx_db_run_status(gx_db *db, int64_t run_id, char *buf, size_t n, gx_err *err);

/* --------------------------------------------------------------- metrics */

/* One metric value of one epoch. Re-putting the same (run, epoch, split,
 * name) replaces the value. */
typedef struct gx_db_metric {
    const char *split;         /* "train", "val", "test", ... */
    const char *name;          /* "accuracy", "auc_macro", "z_nmad", ... */
    double      value;         /* non-finite -> stored NULL -> read NaN */
} gx_db_metric;

gx_status gx_db_metric_put(gx_db *db, int64_t run_id, int epoch, const char *split,
                           const char *name, double value, gx_err *err);
/* All n rows in one transaction: all are stored or none (an epoch's report
 * writes ~40 rows; one transaction is one fsync instead of 40). */
gx_status gx_db_metrics_put(gx_db *db, int64_t run_id, int epoch,
                            const gx_db_metric *rows, int n, gx_err *err);
/* The values of metric `name` on `split` for a run, ordered by epoch:
 * writes up to cap (epoch, value) pairs and the total count into *n (which
 * may exceed cap: call again with a bigger buffer). epochs may be NULL. */
gx_status gx_db_metric_get(gx_db *db, int64_t run_id, const char *split, const char *name,
                           int *epochs, double *values, int cap, int *n, gx_err *err);

/* ----------------------------------------------------------- checkpoints */

typedef struct gx_db_checkpoint {
    int64_t     run_id;
    int         epoch;
    const char *kind;          /* "best" or "last" */
    const char *path;
    const char *sha256;        /* 64 hex digits */
    const char *metrics_json;  /* NULL -> "{}" */
} gx_db_checkpoint;

/* Records a written checkpoint; *id (may be NULL) receives its row id.
 * GX_ERR_INVALID for a bad kind or hash, or a run that does not exist. */
gx_status gx_db_checkpoint_put(gx_db *db, const gx_db_checkpoint *ck, int64_t *id,
                               gx_err *err);
/* Path of the newest checkpoint of that kind for the run (highest epoch,
 * then newest row); GX_ERR_NOTFOUND when none. */
gx_status gx_db_checkpoint_latest(gx_db *db, int64_t run_id, const char *kind,
                                  char *path, size_t n, int *epoch, gx_err *err);

#ifdef __cplusplus
}
#endif
#endif
