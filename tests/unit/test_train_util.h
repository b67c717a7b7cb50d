/*
 * test_train_util.h — scaffolding shared by the trainer tests
 * (test_train_wm.c, test_train_cf.c, test_train_uda.c): the fixture's
 * folder with its dataset, database and output folders, the comparison of
 * two runs' files (resume tests), the checkpoint files' sha256 against
 * the ones the database recorded, and a UDA checkpoint's two BN sets.
 *
 * Static inline, as test_fixture_util.h (which this builds on).
 */
#ifndef TEST_TRAIN_UTIL_H
#define TEST_TRAIN_UTIL_H

#include "gx_sha256.h"
#include "gx_test.h"
#include "test_fixture_util.h"

#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

/* A trainer fixture's files: a fresh /tmp/gx_<tag>_XXXXXX holding the
 * dataset, the database and the output folders of runs A and B. */
typedef struct ttu_dirs {
    char dir[64], data[128], db[128], outA[128], outB[128];
} ttu_dirs;

/* Makes the folder and names the files in it (data and db: file names);
 * the folder is removed at exit with tfx_rmtree by the caller's cleanup.
 * 0 (a failed check) when mkdtemp fails. */
static inline int ttu_dirs_init(gx_test_state *T, ttu_dirs *d, const char *tag, const char *data,
                                const char *db) {
    snprintf(d->dir, sizeof d->dir, "/tmp/gx_%s_XXXXXX", tag);
    if (!mkdtemp(d->dir)) { CHECK_MSG(0, "mkdtemp failed"); d->dir[0] = 0; return 0; }
    snprintf(d->data, sizeof d->data, "%s/%s", d->dir, data);
    snprintf(d->db, sizeof d->db, "%s/%s", d->dir, db);
    snprintf(d->outA, sizeof d->outA, "%s/A", d->dir);
    snprintf(d->outB, sizeof d->outB, "%s/B", d->dir);
    return 1;
}

/* dirA/file and dirB/file hold the same tensors (tfx_same_tensors): a
 * resumed run against the uninterrupted one. */
static inline int ttu_same_file(gx_test_state *T, const char *dirA, const char *dirB, const char *file) {
    char pa[256], pb[256];
    snprintf(pa, sizeof pa, "%s/%s", dirA, file);
    snprintf(pb, sizeof pb, "%s/%s", dirB, file);
    return tfx_same_tensors(T, pa, pb);
}

/* The sha256 of the file at path, as it is now, is want (64 hex digits). */
static inline int ttu_sha_matches(const char *path, const char *want) {
    char hex[65];
    gx_err err;
    return path && want && gx_sha256_file(path, hex, &err) == GX_OK && !strcmp(hex, want);
}

/* The newest checkpoint row of each kind ("last", "best") of run names a
 * file whose sha256 is the one recorded. */
static inline void ttu_check_checkpoint_sha(gx_test_state *T, sqlite3 *h, int64_t run) {
    const char *kinds[2] = { "last", "best" };
    for (int k = 0; k < 2; k++) {
        sqlite3_stmt *q;
        sqlite3_prepare_v2(h, "SELECT path, sha256 FROM checkpoints WHERE run_id = ? AND kind = ? "
                              "ORDER BY id DESC LIMIT 1", -1, &q, NULL);
        sqlite3_bind_int64(q, 1, run);
        sqlite3_bind_text(q, 2, kinds[k], -1, SQLITE_STATIC);
        if (sqlite3_step(q) == SQLITE_ROW)
            CHECK_MSG(ttu_sha_matches((const char *)sqlite3_column_text(q, 0),
                                      (const char *)sqlite3_column_text(q, 1)), "%s sha256", kinds[k]);
        else
            CHECK_MSG(0, "no %s checkpoint row", kinds[k]);
        sqlite3_finalize(q);
    }
}

/* Every BN tensor of the checkpoint at path with ".d0." in its name (the
 * source set of a UDA model) equals byte for byte its ".d1." twin (the
 * target set), as a lambda-0 baseline leaves them, and there are at least
 * min_pairs of them. */
static inline int ttu_bn_twins_equal(gx_test_state *T, const char *path, int min_pairs) {
    gx_st_file f;
    gx_err err;
    memset(&f, 0, sizeof f);
    CHECK_MSG(gx_st_read(&f, path, &err) == GX_OK, "%s: %s", path, err.msg);
    int pairs = 0, same = 0;
    for (int i = 0; i < f.n; i++) {
        const gx_st_tensor *t0 = &f.tensors[i];
        const char *d0 = strstr(t0->name, ".d0.");
        if (!d0) continue;
        char twin[256];
        snprintf(twin, sizeof twin, "%s", t0->name);
        twin[d0 - t0->name + 2] = '1';
        const gx_st_tensor *t1 = gx_st_find(&f, twin);
        int eq = t1 && t1->nbytes == t0->nbytes && !memcmp(t1->data, t0->data, t1->nbytes);
        CHECK_MSG(eq, "%s differs from %s in %s", twin, t0->name, path);
        pairs++;
        same += eq;
    }
    CHECK_MSG(pairs >= min_pairs, "%s: %d BN pairs, want %d or more", path, pairs, min_pairs);
    gx_st_close(&f);
    return pairs >= min_pairs && same == pairs;
}

#endif
