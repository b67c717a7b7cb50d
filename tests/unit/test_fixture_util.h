/*
 * test_fixture_util.h — fixtures shared by the unit tests that work on
 * files: a SQLite file in a fresh mkdtemp directory removed with its
 * -wal/-shm/-journal side files (the stores and the metrics database), the
 * removal of a whole fixture tree, one integer from a SQL query, the byte-for-byte comparison of two
 * safetensors files (resume tests), and the tiny synthetic survey the
 * trainer tests train on.
 *
 * Static inline so that a test file includes only what it uses without
 * unused-function warnings, and nothing here needs a link-time home.
 */
#ifndef TEST_FIXTURE_UTIL_H
#define TEST_FIXTURE_UTIL_H

#include "gx_test.h"
#include "gx_safetensors.h"
#include "gx_synth.h"

#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The first column of the first row of a query as an integer; -1 when the
 * query fails or returns no row (a count or a flag checked by the tests). */
static inline long long tfx_sql_int(sqlite3 *h, const char *sql) {
    sqlite3_stmt *st;
    long long v = -1;
    if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* A database file path in its own directory. */
typedef struct tfx_tmpdb { char dir[64]; char path[128]; } tfx_tmpdb;

/* Makes /tmp/gx_test_<tag>_XXXXXX and names <dir>/<file> in it. A test
 * cannot run without its directory: a failing mkdtemp aborts. */
static inline void tfx_tmpdb_init(tfx_tmpdb *t, const char *tag, const char *file) {
    snprintf(t->dir, sizeof t->dir, "/tmp/gx_test_%s_XXXXXX", tag);
    if (!mkdtemp(t->dir)) { perror("mkdtemp"); abort(); }
    snprintf(t->path, sizeof t->path, "%s/%s", t->dir, file);
}

/* Removes the database with the side files SQLite may leave, then the
 * directory (which fails, visibly to nobody but harmlessly, if a test left
 * other files there). */
static inline void tfx_tmpdb_free(tfx_tmpdb *t) {
    static const char *const suffix[] = { "", "-wal", "-shm", "-journal" };
    char p[160];
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s%s", t->path, suffix[i]);
        unlink(p);
    }
    rmdir(t->dir);
}

static inline int tfx_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

/* Removes dir and everything below it ("" or NULL: nothing). */
static inline void tfx_rmtree(const char *dir) {
    if (dir && dir[0]) nftw(dir, tfx_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Every tensor of two safetensors files equal byte for byte (and at least
 * one tensor); each difference is a CHECK failure naming the tensor. */
static inline int tfx_same_tensors(gx_test_state *T, const char *pa, const char *pb) {
    gx_st_file a, b;
    gx_err err;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    int ok = gx_st_read(&a, pa, &err) == GX_OK && gx_st_read(&b, pb, &err) == GX_OK;
    CHECK_MSG(ok, "read %s / %s: %s", pa, pb, err.msg);
    if (ok) ok = a.n == b.n && a.n > 0;
    for (int i = 0; ok && i < a.n; i++) {
        const gx_st_tensor *t = gx_st_find(&b, a.tensors[i].name);
        if (!t || t->nbytes != a.tensors[i].nbytes || memcmp(t->data, a.tensors[i].data, t->nbytes)) {
            CHECK_MSG(0, "tensor %s differs between %s and %s", a.tensors[i].name, pa, pb);
            ok = 0;
        }
    }
    gx_st_close(&a);
    gx_st_close(&b);
    return ok;
}

/* A balanced synthetic survey of n 32x32 galaxies (the default classes and
 * surveys) rendered from seed into path; tag names the writer in the file. */
static inline gx_status tfx_synth_small(const char *path, uint64_t seed, int n, const char *tag, gx_err *err) {
    gx_synth_opts so;
    gx_synth_opts_default(&so);
    so.seed = seed; so.n = n; so.size = 32; so.balanced = 1;
    return gx_synth_write(&so, path, NULL, tag, NULL, NULL, err);
}

#endif
