/*
 * gx_db.c — the SQLite metrics database: open, migrate, and the trainer's
 * writes (runs, per-epoch metrics, checkpoints).
 *
 * Design:
 *  - Opening is the only place the schema changes. Each pending migration
 *    runs inside BEGIN IMMEDIATE ... COMMIT together with the row that
 *    records it in schema_migrations, so a migration is either fully applied
 *    and recorded or not at all (SQLite DDL is transactional). The version is
 *    re-read inside the write transaction: two processes starting at once on
 *    a fresh file serialise on the write lock, and the second finds the work
 *    done instead of failing on "table already exists".
 *  - A newer schema than the binary knows is refused before anything is
 *    written; an older binary cannot know what the new columns mean.
 *  - WAL mode + synchronous=NORMAL: commits do not fsync the main file, a
 *    crash loses at most the last transactions, never consistency; readers
 *    (dashboard) never block the trainer.
 *  - The metric insert is prepared once per connection and reused: an epoch
 *    writes tens of rows, a long run tens of thousands.
 *  - Every SQLite failure becomes a gx_status plus a message naming what we
 *    were doing and SQLite's own message; nothing here aborts.
 */
#include "gx_db.h"

#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#define GX_DB_BUSY_MS 5000

/* One connection and what we learnt opening it. */
struct gx_db {
    sqlite3      *h;
    sqlite3_stmt *metric_ins;  /* prepared lazily, finalised at close */
    int           version;     /* newest applied migration */
    int           applied;     /* migrations applied by this open */
};

/* ------------------------------------------------------------ helpers */

/* Maps an SQLite result code to our status tiers: constraint failures are the
 * caller's bad values; corruption / not-a-database is a format error; the
 * rest (I/O, locked after the busy timeout, full disk) are I/O. */
static gx_status db_status_of(int rc) {
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT: case SQLITE_MISMATCH: case SQLITE_RANGE:
        return GX_ERR_INVALID;
    case SQLITE_NOTADB: case SQLITE_CORRUPT: case SQLITE_SCHEMA:
        return GX_ERR_FORMAT;
    case SQLITE_NOMEM:
        return GX_ERR_NOMEM;
    default:
        return GX_ERR_IO;
    }
}

/* Formats "db: <what>: <sqlite message>" with the mapped status. The
 * connection's message is more specific than the code's generic string. */
static gx_status db_fail(sqlite3 *h, int rc, gx_err *err, const char *what) {
    return gx_err_set(err, db_status_of(rc), "db: %s: %s", what,
                      h ? sqlite3_errmsg(h) : sqlite3_errstr(rc));
}

/* Runs SQL without result rows (pragmas, BEGIN/COMMIT, DDL). */
static gx_status db_exec(sqlite3 *h, const char *sql, gx_err *err, const char *what) {
    int rc = sqlite3_exec(h, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? GX_OK : db_fail(h, rc, err, what);
}

static gx_status db_prepare(sqlite3 *h, const char *sql, sqlite3_stmt **st, gx_err *err) {
    int rc = sqlite3_prepare_v2(h, sql, -1, st, NULL);
    return rc == SQLITE_OK ? GX_OK : db_fail(h, rc, err, "prepare");
}

/* Binds a possibly-NULL text (SQLITE_TRANSIENT: the caller's buffer may go). */
static void db_bind_text(sqlite3_stmt *st, int i, const char *s) {
    if (s) sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else   sqlite3_bind_null(st, i);
}

/* Steps a statement that returns no rows and finalises it. */
static gx_status db_step_done(sqlite3 *h, sqlite3_stmt *st, gx_err *err, const char *what) {
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? GX_OK : db_fail(h, rc, err, what);
}

/* Newest version recorded in schema_migrations (0 when empty). */
static gx_status db_read_version(sqlite3 *h, int *version, gx_err *err) {
    sqlite3_stmt *st;
    gx_status s = db_prepare(h, "SELECT coalesce(max(version), 0) FROM schema_migrations",
                             &st, err);
    if (s != GX_OK) return s;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? GX_OK : db_fail(h, rc, err, "reading schema version");
}

/* -------------------------------------------------------- migrations */

/* The migration list must be strictly increasing and positive: a list out
 * of order would apply schema changes in the wrong order on fresh files. */
static gx_status db_check_list(const gx_migration *m, int n, gx_err *err) {
    for (int i = 0; i < n; i++) {
        if (m[i].version <= 0 || !m[i].sql || !m[i].name)
            return gx_err_set(err, GX_ERR_INVALID, "db: migration #%d is malformed", i);
        if (i > 0 && m[i].version <= m[i - 1].version)
            return gx_err_set(err, GX_ERR_INVALID,
                              "db: migrations out of order: %d after %d",
                              m[i].version, m[i - 1].version);
    }
    return GX_OK;
}

/* Applies one migration with its bookkeeping row in one transaction; skips
 * it when another process applied it while we waited for the lock. */
static gx_status db_apply_one(gx_db *db, const gx_migration *m, gx_err *err) {
    char what[160];
    snprintf(what, sizeof what, "migration %04d_%s", m->version, m->name);
    gx_status s = db_exec(db->h, "BEGIN IMMEDIATE", err, what);
    if (s != GX_OK) return s;
    int current = 0;
    s = db_read_version(db->h, &current, err);
    if (s == GX_OK && current >= m->version) {          /* done by someone else */
        db->version = current;
        return db_exec(db->h, "COMMIT", err, what);
    }
    if (s == GX_OK) {
        int rc = sqlite3_exec(db->h, m->sql, NULL, NULL, NULL);
        /* SQL errors in a migration are a defect of the shipped schema file:
         * report them as a format error naming the migration. */
        if (rc != SQLITE_OK) {
            s = gx_err_set(err, GX_ERR_FORMAT, "db: %s failed: %s", what,
                           sqlite3_errmsg(db->h));
        }
    }
    sqlite3_stmt *st = NULL;
    if (s == GX_OK) s = db_prepare(db->h,
        "INSERT INTO schema_migrations(version, name) VALUES (?, ?)", &st, err);
    if (s == GX_OK) {
        sqlite3_bind_int(st, 1, m->version);
        sqlite3_bind_text(st, 2, m->name, -1, SQLITE_STATIC);
        s = db_step_done(db->h, st, err, what);
    }
    if (s == GX_OK) s = db_exec(db->h, "COMMIT", err, what);
    if (s != GX_OK) {
        sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
        return s;
    }
    db->version = m->version;
    db->applied++;
    return GX_OK;
}

/* Connection settings. journal_mode returns the mode actually in force:
 * anything but "wal" (or "memory" for :memory: databases) means the file
 * system refused WAL, which we report rather than run without it. */
static gx_status db_configure(sqlite3 *h, gx_err *err) {
    sqlite3_busy_timeout(h, GX_DB_BUSY_MS);
    gx_status s = db_exec(h, "PRAGMA foreign_keys = ON", err, "enabling foreign keys");
    if (s != GX_OK) return s;
    sqlite3_stmt *st;
    if ((s = db_prepare(h, "PRAGMA journal_mode = WAL", &st, err)) != GX_OK) return s;
    int rc = sqlite3_step(st);
    char mode[16] = "";
    if (rc == SQLITE_ROW && sqlite3_column_text(st, 0))
        snprintf(mode, sizeof mode, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW) return db_fail(h, rc, err, "setting WAL mode");
    if (strcmp(mode, "wal") != 0 && strcmp(mode, "memory") != 0)
        return gx_err_set(err, GX_ERR_IO, "db: WAL mode refused (journal mode is '%s')", mode);
    s = db_exec(h, "PRAGMA synchronous = NORMAL", err, "setting synchronous");
    if (s != GX_OK) return s;
    return db_exec(h,
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY,"
        " name TEXT NOT NULL,"
        " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))",
        err, "creating schema_migrations");
}

/* Refuses a schema newer than the list, then applies what is pending. */
static gx_status db_migrate(gx_db *db, const char *path, const gx_migration *migs,
                            int n, gx_err *err) {
    gx_status s = db_read_version(db->h, &db->version, err);
    if (s != GX_OK) return s;
    int known = n > 0 ? migs[n - 1].version : 0;
    if (db->version > known)
        return gx_err_set(err, GX_ERR_UNSUPPORTED,
                          "db: %s has schema version %d, newer than this binary knows "
                          "(%d): use a newer galaxyd/galaxy-train or another file",
                          path, db->version, known);
    for (int i = 0; i < n; i++) {
        if (migs[i].version <= db->version) continue;
        if ((s = db_apply_one(db, &migs[i], err)) != GX_OK) return s;
    }
    return GX_OK;
}

/* -------------------------------------------------------------- open */

gx_status gx_db_open_with(gx_db **out, const char *path, const gx_migration *migs,
                          int n_migs, gx_err *err) {
    GX_ASSERT(out && path);
    *out = NULL;
    gx_status s = db_check_list(migs, n_migs, err);
    if (s != GX_OK) return s;
    gx_db *db = calloc(1, sizeof *db);
    if (!db) return gx_err_set(err, GX_ERR_NOMEM, "db: out of memory");
    int rc = sqlite3_open_v2(path, &db->h,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        s = gx_err_set(err, GX_ERR_IO, "db: cannot open %s: %s", path,
                       db->h ? sqlite3_errmsg(db->h) : sqlite3_errstr(rc));
    } else {
        sqlite3_extended_result_codes(db->h, 1);
        s = db_configure(db->h, err);
        if (s == GX_OK) s = db_migrate(db, path, migs, n_migs, err);
    }
    if (s != GX_OK) {
        gx_db_close(db);
        return s;
    }
    *out = db;
    return GX_OK;
}

/* Production entry point: the list the build embedded. */
gx_status gx_db_open(gx_db **out, const char *path, gx_err *err) {
    return gx_db_open_with(out, path, gx_migrations, gx_migrations_count, err);
}

void gx_db_close(gx_db *db) {
    if (!db) return;
    sqlite3_finalize(db->metric_ins);
    sqlite3_close(db->h);      /* all statements are finalised: cannot be BUSY */
    free(db);
}

int   gx_db_schema_version(const gx_db *db)     { return db->version; }
int   gx_db_migrations_applied(const gx_db *db) { return db->applied; }
void *gx_db_handle(gx_db *db)                    { return db->h; }

gx_status gx_db_exec(gx_db *db, const char *sql, gx_err *err) {
    return db_exec(db->h, sql, err, "exec");
}
gx_status gx_db_begin(gx_db *db, gx_err *err) {
    return db_exec(db->h, "BEGIN IMMEDIATE", err, "begin");
}
gx_status gx_db_commit(gx_db *db, gx_err *err) {
    return db_exec(db->h, "COMMIT", err, "commit");
}
void gx_db_rollback(gx_db *db) {
    /* Harmless when no transaction is open (SQLite then reports an error
     * we have nothing to do with). */
    sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
}

/* -------------------------------------------------------------- runs */

/* started_at and status come from the schema defaults, so every writer
 * (trainer, tests, a future CLI) stamps runs the same way. */
gx_status gx_db_run_begin(gx_db *db, const gx_db_run_info *info, int64_t *run_id,
                          gx_err *err) {
    if (!info || !info->model_kind || !info->model_kind[0])
        return gx_err_set(err, GX_ERR_INVALID, "db: run_begin: model_kind is required");
    sqlite3_stmt *st;
    gx_status s = db_prepare(db->h,
        "INSERT INTO runs(model_kind, config_json, command_line, seed, git_commit)"
        " VALUES (?, ?, ?, ?, ?)", &st, err);
    if (s != GX_OK) return s;
    db_bind_text(st, 1, info->model_kind);
    db_bind_text(st, 2, info->config_json ? info->config_json : "{}");
    db_bind_text(st, 3, info->command_line);
    sqlite3_bind_int64(st, 4, info->seed);
    db_bind_text(st, 5, info->git_commit);
    s = db_step_done(db->h, st, err, "run_begin");
    if (s == GX_OK && run_id) *run_id = sqlite3_last_insert_rowid(db->h);
    return s;
}

gx_status gx_db_run_finish(gx_db *db, int64_t run_id, const char *status, gx_err *err) {
    if (!status || (strcmp(status, "finished") && strcmp(status, "failed") &&
                    strcmp(status, "interrupted")))
        return gx_err_set(err, GX_ERR_INVALID, "db: run_finish: bad status '%s'",
                          status ? status : "(null)");
    sqlite3_stmt *st;
    gx_status s = db_prepare(db->h,
        "UPDATE runs SET status = ?, finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
        " WHERE id = ?", &st, err);
    if (s != GX_OK) return s;
    sqlite3_bind_text(st, 1, status, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, run_id);
    s = db_step_done(db->h, st, err, "run_finish");
    if (s == GX_OK && sqlite3_changes(db->h) == 0)
        return gx_err_set(err, GX_ERR_NOTFOUND, "db: run_finish: no run %lld",
                          (long long)run_id);
    return s;
}

gx_status gx_db_run_status(gx_db *db, int64_t run_id, char *buf, size_t n, gx_err *err) {
    sqlite3_stmt *st;
    gx_status s = db_prepare(db->h, "SELECT status FROM runs WHERE id = ?", &st, err);
    if (s != GX_OK) return s;
    sqlite3_bind_int64(st, 1, run_id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        snprintf(buf, n, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE)
        return gx_err_set(err, GX_ERR_NOTFOUND, "db: no run %lld", (long long)run_id);
    return rc == SQLITE_ROW ? GX_OK : db_fail(db->h, rc, err, "run_status");
}

gx_status gx_db_run_seed(gx_db *db, int64_t run_id, const char *kind, uint64_t *seed, gx_err *err) {
    sqlite3_stmt *q;
    gx_status s = db_prepare(db->h, "SELECT seed, model_kind FROM runs WHERE id = ?", &q, err);
    if (s != GX_OK) return s;
    sqlite3_bind_int64(q, 1, run_id);
    if (sqlite3_step(q) != SQLITE_ROW)
        s = gx_err_set(err, GX_ERR_NOTFOUND, "no run %lld in the database", (long long)run_id);
    else if (strcmp((const char *)sqlite3_column_text(q, 1), kind))
        s = gx_err_set(err, GX_ERR_INVALID, "run %lld is a %s run", (long long)run_id,
                       (const char *)sqlite3_column_text(q, 1));
    else
        *seed = (uint64_t)sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    return s;
}

/* ----------------------------------------------------------- metrics */

/* One insert on the cached statement; reset afterwards so it can be reused
 * (and so it does not hold the read snapshot open between calls). */
static gx_status db_metric_insert(gx_db *db, int64_t run_id, int epoch, const char *split,
                                  const char *name, double value, gx_err *err) {
    if (!split || !name)
        return gx_err_set(err, GX_ERR_INVALID, "db: metric: split and name are required");
    if (!db->metric_ins) {
        gx_status s = db_prepare(db->h,
            "INSERT OR REPLACE INTO metrics(run_id, epoch, split, name, value)"
            " VALUES (?, ?, ?, ?, ?)", &db->metric_ins, err);
        if (s != GX_OK) return s;
    }
    sqlite3_stmt *st = db->metric_ins;
    sqlite3_bind_int64(st, 1, run_id);
    sqlite3_bind_int(st, 2, epoch);
    sqlite3_bind_text(st, 3, split, -1, SQLITE_STATIC);   /* reset before return */
    sqlite3_bind_text(st, 4, name, -1, SQLITE_STATIC);
    if (isfinite(value)) sqlite3_bind_double(st, 5, value);
    else                 sqlite3_bind_null(st, 5);
    int rc = sqlite3_step(st);
    gx_status s = GX_OK;
    if (rc != SQLITE_DONE) {
        char what[160];
        snprintf(what, sizeof what, "metric %s/%s (run %lld, epoch %d)", split, name,
                 (long long)run_id, epoch);
        s = db_fail(db->h, rc, err, what);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return s;
}

gx_status gx_db_metric_put(gx_db *db, int64_t run_id, int epoch, const char *split,
                           const char *name, double value, gx_err *err) {
    return db_metric_insert(db, run_id, epoch, split, name, value, err);
}

/* All-or-nothing: the first failing row rolls back the rows before it, so
 * a learning curve never shows half an epoch. */
gx_status gx_db_metrics_put(gx_db *db, int64_t run_id, int epoch,
                            const gx_db_metric *rows, int n, gx_err *err) {
    gx_status s = gx_db_begin(db, err);
    for (int i = 0; s == GX_OK && i < n; i++)
        s = db_metric_insert(db, run_id, epoch, rows[i].split, rows[i].name,
                             rows[i].value, err);
    if (s == GX_OK) s = gx_db_commit(db, err);
    if (s != GX_OK) gx_db_rollback(db);
    return s;
}

/* Learning-curve read: served by the metrics primary key (run, name, split,
 * epoch), already in epoch order. */
gx_status gx_db_metric_get(gx_db *db, int64_t run_id, const char *split, const char *name,
                           int *epochs, double *values, int cap, int *n, gx_err *err) {
    sqlite3_stmt *st;
    gx_status s = db_prepare(db->h,
        "SELECT epoch, value FROM metrics WHERE run_id = ? AND name = ? AND split = ?"
        " ORDER BY epoch", &st, err);
    if (s != GX_OK) return s;
    sqlite3_bind_int64(st, 1, run_id);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, split, -1, SQLITE_STATIC);
    int count = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (count < cap) {
            if (epochs) epochs[count] = sqlite3_column_int(st, 0);
            values[count] = sqlite3_column_type(st, 1) == SQLITE_NULL
                          ? NAN : sqlite3_column_double(st, 1);
        }
        count++;
    }
    sqlite3_finalize(st);
    *n = count;
    return rc == SQLITE_DONE ? GX_OK : db_fail(db->h, rc, err, "metric_get");
}

/* ------------------------------------------------------- checkpoints */

/* Checked here as well as by the schema's CHECK so the message can say
 * what is wrong rather than "CHECK constraint failed". */
static int db_is_sha256(const char *s) {
    if (!s || strlen(s) != 64) return 0;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

gx_status gx_db_checkpoint_put(gx_db *db, const gx_db_checkpoint *ck, int64_t *id,
                               gx_err *err) {
    if (!ck->kind || (strcmp(ck->kind, "best") && strcmp(ck->kind, "last")))
        return gx_err_set(err, GX_ERR_INVALID, "db: checkpoint kind must be best or last");
    if (!db_is_sha256(ck->sha256))
        return gx_err_set(err, GX_ERR_INVALID,
                          "db: checkpoint sha256 must be 64 lowercase hex digits");
    if (!ck->path)
        return gx_err_set(err, GX_ERR_INVALID, "db: checkpoint path is required");
    sqlite3_stmt *st;
    gx_status s = db_prepare(db->h,
        "INSERT INTO checkpoints(run_id, epoch, kind, path, sha256, metrics_json)"
        " VALUES (?, ?, ?, ?, ?, ?)", &st, err);
    if (s != GX_OK) return s;
    sqlite3_bind_int64(st, 1, ck->run_id);
    sqlite3_bind_int(st, 2, ck->epoch);
    db_bind_text(st, 3, ck->kind);
    db_bind_text(st, 4, ck->path);
    db_bind_text(st, 5, ck->sha256);
    db_bind_text(st, 6, ck->metrics_json ? ck->metrics_json : "{}");
    s = db_step_done(db->h, st, err, "checkpoint_put");   /* FK: unknown run -> INVALID */
    if (s == GX_OK && id) *id = sqlite3_last_insert_rowid(db->h);
    return s;
}

gx_status gx_db_checkpoint_latest(gx_db *db, int64_t run_id, const char *kind,
                                  char *path, size_t n, int *epoch, gx_err *err) {
    sqlite3_stmt *st;
    gx_status s = db_prepare(db->h,
        "SELECT path, epoch FROM checkpoints WHERE run_id = ? AND kind = ?"
        " ORDER BY epoch DESC, id DESC LIMIT 1", &st, err);
    if (s != GX_OK) return s;
    sqlite3_bind_int64(st, 1, run_id);
    sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        snprintf(path, n, "%s", (const char *)sqlite3_column_text(st, 0));
        if (epoch) *epoch = sqlite3_column_int(st, 1);
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE)
        return gx_err_set(err, GX_ERR_NOTFOUND, "db: run %lld has no '%s' checkpoint",
                          (long long)run_id, kind);
    return rc == SQLITE_ROW ? GX_OK : db_fail(db->h, rc, err, "checkpoint_latest");
}
