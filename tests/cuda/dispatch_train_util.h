/*
 * dispatch_train_util.h — what the trainer-on-the-device tests
 * (dispatch_train_wm.c, dispatch_train_cf.c, dispatch_train_uda.c) share:
 * the skip line without a device, a run's "finished" status, and the two
 * comparisons of a device run with the CPU run of the same seed:
 *   - dtu_rows_close: the per-epoch metric rows of (split, name) in the
 *     database, |b - a| <= atol + rtol |a| (a per-epoch tolerance with
 *     dtu_rows_close_by_epoch, where later epochs drift further);
 *   - dtu_files_close: every tensor of two safetensors files, float tensors
 *     within atol + rtol |a| (per-name tolerances with
 *     dtu_files_close_by_name);
 *   - dtu_files_norm_close: the float tensors of a name prefix, each as a
 *     whole: ||b - a||_2 <= rel ||a||_2.
 * Each test file keeps its own tolerances and says why; these only check.
 *
 * Static inline, as unit/test_train_util.h (which this builds on).
 */
#ifndef DISPATCH_TRAIN_UTIL_H
#define DISPATCH_TRAIN_UTIL_H

#include "dispatch_util.h"
#include "gx_db.h"
#include "unit/test_train_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The most epochs a rows comparison reads (the runs here have 1 or 2). */
enum { DTU_MAX_EPOCHS = 8 };

/* Opens and closes the device only for the skip line: the trainers open
 * their own. 1 when a device (or the host emulation) is there. */
static inline int dtu_have_device(gx_test_state *T) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return 0;
    gx_gpu_close(&g);
    return 1;
}

/* The run's status in the database is "finished". */
static inline void dtu_check_finished(gx_test_state *T, gx_db *db, int64_t run) {
    char st[32] = "";
    gx_err err;
    CHECK_MSG(gx_db_run_status(db, run, st, sizeof st, &err) == GX_OK, "run %lld: %s", (long long)run, err.msg);
    CHECK_MSG(!strcmp(st, "finished"), "run %lld: %s", (long long)run, st);
}

typedef struct dtu_tol { double atol, rtol; } dtu_tol;

/* Runs a and b (a: the reference, the CPU) each have exactly `epochs` rows
 * of (split, name), for epochs 0 .. epochs - 1, both finite, and row e of b
 * is within tol[e] of a's (tol[n_tol - 1] for the epochs past n_tol):
 * |b - a| <= atol + rtol |a|. The largest relative gap |b - a| / |a| goes
 * to *max_rel_gap when it is not NULL (it is only raised). */
static inline void dtu_rows_close_by_epoch(gx_test_state *T, gx_db *db, int64_t a, int64_t b, const char *split,
                                           const char *name, int epochs, const dtu_tol *tol, int n_tol,
                                           double *max_rel_gap) {
    int ea[DTU_MAX_EPOCHS], eb[DTU_MAX_EPOCHS], na = 0, nb = 0;
    double va[DTU_MAX_EPOCHS], vb[DTU_MAX_EPOCHS];
    gx_err err;
    CHECK(epochs > 0 && epochs <= DTU_MAX_EPOCHS && n_tol > 0);
    CHECK_MSG(gx_db_metric_get(db, a, split, name, ea, va, DTU_MAX_EPOCHS, &na, &err) == GX_OK, "%s", err.msg);
    CHECK_MSG(gx_db_metric_get(db, b, split, name, eb, vb, DTU_MAX_EPOCHS, &nb, &err) == GX_OK, "%s", err.msg);
    CHECK_MSG(na == epochs && nb == epochs, "%s %s: %d and %d rows, want %d", split, name, na, nb, epochs);
    for (int e = 0; e < na && e < nb && e < epochs && e < DTU_MAX_EPOCHS; e++) {
        const dtu_tol *t = &tol[e < n_tol ? e : n_tol - 1];
        double d = fabs(vb[e] - va[e]);
        CHECK_MSG(ea[e] == e && eb[e] == e && isfinite(va[e]) && isfinite(vb[e]) && d <= t->atol + t->rtol * fabs(va[e]),
                  "%s %s epoch %d (%d, %d): run %lld %.9g, run %lld %.9g (atol %g, rtol %g)", split, name, e, ea[e],
                  eb[e], (long long)b, vb[e], (long long)a, va[e], t->atol, t->rtol);
        if (max_rel_gap && isfinite(d) && d / (fabs(va[e]) + 1e-12) > *max_rel_gap)
            *max_rel_gap = d / (fabs(va[e]) + 1e-12);
    }
}

/* dtu_rows_close_by_epoch with one tolerance for every epoch. */
static inline void dtu_rows_close(gx_test_state *T, gx_db *db, int64_t a, int64_t b, const char *split,
                                  const char *name, int epochs, double atol, double rtol, double *max_rel_gap) {
    const dtu_tol t = { atol, rtol };
    dtu_rows_close_by_epoch(T, db, a, b, split, name, epochs, &t, 1, max_rel_gap);
}

/* A tolerance for the tensors whose name contains `part`; the first rule
 * that matches wins (so "mhat_valid" goes before "mhat"). */
typedef struct dtu_tol_rule { const char *part; double atol, rtol; } dtu_tol_rule;

/* What dtu_files_close_by_name does with a tensor that is not F32. */
enum {
    DTU_F32_ONLY = 0,          /* a failure: every tensor is a float one */
    DTU_OTHER_BY_SIZE = 1,     /* same dtype and size in both, contents not compared (indices a GPU may order otherwise) */
};

/* The tolerance of tensor `name`: the first matching rule, else (atol, rtol). */
static inline dtu_tol dtu_tol_for(const char *name, double atol, double rtol, const dtu_tol_rule *rules, int n_rules) {
    for (int r = 0; r < n_rules; r++)
        if (strstr(name, rules[r].part)) return (dtu_tol){ rules[r].atol, rules[r].rtol };
    return (dtu_tol){ atol, rtol };
}

/* One F32 tensor of file b against its namesake ta of file a, within tol;
 * raises *max_abs_gap. 1 when it was compared. */
static inline int dtu_tensor_close(gx_test_state *T, const char *pb, const gx_st_tensor *ta, const gx_st_tensor *tb,
                                   dtu_tol tol, double *max_abs_gap) {
    int64_t n = (int64_t)(ta->nbytes / 4);
    gx_real *va = malloc((size_t)(n ? n : 1) * sizeof *va), *vb = malloc((size_t)(n ? n : 1) * sizeof *vb);
    gx_err err;
    int ok = va && vb;
    CHECK_MSG(ok, "%s: out of memory", ta->name);
    if (ok) {
        ok = gx_st_to_real(ta, va, n, &err) == GX_OK && gx_st_to_real(tb, vb, n, &err) == GX_OK;
        CHECK_MSG(ok, "%s: %s", ta->name, err.msg);
    }
    if (ok) {
        char what[320];
        snprintf(what, sizeof what, "%s %s", pb, ta->name);
        gx_test_allclose(T, what, vb, va, n, tol.atol, tol.rtol);
        for (int64_t k = 0; max_abs_gap && k < n; k++)
            if (fabs((double)vb[k] - (double)va[k]) > *max_abs_gap) *max_abs_gap = fabs((double)vb[k] - (double)va[k]);
    }
    free(va);
    free(vb);
    return ok;
}

/* Reads the files at pa and pb into a and b (checked); 1 when both were
 * read. a and b are closable (gx_st_close) either way. */
static inline int dtu_files_read(gx_test_state *T, const char *pa, const char *pb, gx_st_file *a, gx_st_file *b) {
    gx_err err;
    memset(a, 0, sizeof *a);
    memset(b, 0, sizeof *b);
    int ok = gx_st_read(a, pa, &err) == GX_OK && gx_st_read(b, pb, &err) == GX_OK;
    CHECK_MSG(ok, "read %s / %s: %s", pa, pb, err.msg);
    return ok;
}

/* The files at pa (the reference) and pb hold the same tensors (as many,
 * at least one, each of a's in b with its dtype and size), every F32
 * tensor of b within the tolerance of its name of a's: |b - a| <= atol +
 * rtol |a|; other dtypes as `other` says. The largest absolute gap goes to
 * *max_abs_gap when it is not NULL (it is only raised). Returns the number
 * of F32 tensors compared, -1 when a file could not be read (a failure). */
static inline int dtu_files_close_by_name(gx_test_state *T, const char *pa, const char *pb, double atol, double rtol,
                                          const dtu_tol_rule *rules, int n_rules, int other, double *max_abs_gap) {
    gx_st_file a, b;
    int ok = dtu_files_read(T, pa, pb, &a, &b), compared = 0;
    CHECK_MSG(!ok || (a.n == b.n && a.n > 0), "%s: %d tensors, %s: %d", pa, a.n, pb, b.n);
    for (int i = 0; ok && i < a.n; i++) {
        const gx_st_tensor *ta = &a.tensors[i], *tb = gx_st_find(&b, ta->name);
        int same = tb && tb->nbytes == ta->nbytes && tb->dtype == ta->dtype;
        CHECK_MSG(same && (ta->dtype == GX_ST_F32 || other == DTU_OTHER_BY_SIZE),
                  "%s: missing, of another dtype or size in %s, or not F32", ta->name, pb);
        if (same && ta->dtype == GX_ST_F32)
            compared += dtu_tensor_close(T, pb, ta, tb, dtu_tol_for(ta->name, atol, rtol, rules, n_rules), max_abs_gap);
    }
    gx_st_close(&a);
    gx_st_close(&b);
    return ok ? compared : -1;
}

/* ||b - a||_2 / ||a||_2 of one F32 tensor pair (0 when both are zero), or
 * -1 when it could not be read (checked). */
static inline double dtu_tensor_rel_l2(gx_test_state *T, const gx_st_tensor *ta, const gx_st_tensor *tb) {
    int64_t n = (int64_t)(ta->nbytes / 4);
    gx_real *va = malloc((size_t)(n ? n : 1) * sizeof *va), *vb = malloc((size_t)(n ? n : 1) * sizeof *vb);
    gx_err err;
    double d2 = 0, a2 = 0, rel = -1;
    int ok = va && vb && gx_st_to_real(ta, va, n, &err) == GX_OK && gx_st_to_real(tb, vb, n, &err) == GX_OK;
    CHECK_MSG(ok, "%s: not readable", ta->name);
    for (int64_t k = 0; ok && k < n; k++) {
        d2 += ((double)vb[k] - va[k]) * ((double)vb[k] - va[k]);
        a2 += (double)va[k] * va[k];
    }
    if (ok) rel = d2 == 0 ? 0 : sqrt(d2) / sqrt(a2);   /* NaN or inf fail the caller's bound */
    free(va);
    free(vb);
    return rel;
}

/* Every F32 tensor of pa whose name starts with `prefix` has a namesake in
 * pb within `rel` in the L2 norm: ||b - a|| <= rel ||a||. For state that
 * a caller compares as a whole, not element by element (why: at its call).
 * The largest ratio goes to *max_rel when it is not NULL (it is only
 * raised). Returns the number of tensors compared, -1 when a file could
 * not be read (a failure). */
static inline int dtu_files_norm_close(gx_test_state *T, const char *pa, const char *pb, const char *prefix, double rel,
                                       double *max_rel) {
    gx_st_file a, b;
    int ok = dtu_files_read(T, pa, pb, &a, &b), compared = 0;
    size_t np = strlen(prefix);
    for (int i = 0; ok && i < a.n; i++) {
        const gx_st_tensor *ta = &a.tensors[i], *tb = gx_st_find(&b, ta->name);
        if (strncmp(ta->name, prefix, np) || ta->dtype != GX_ST_F32) continue;
        if (!tb || tb->nbytes != ta->nbytes || tb->dtype != ta->dtype) {
            CHECK_MSG(0, "%s: missing, or of another dtype or size in %s", ta->name, pb);
            continue;
        }
        double r = dtu_tensor_rel_l2(T, ta, tb);
        CHECK_MSG(r >= 0 && r <= rel, "%s %s: ||b - a|| / ||a|| = %.3g (bound %g)", pb, ta->name, r, rel);
        if (max_rel && !(r <= *max_rel)) *max_rel = r;
        compared++;
    }
    gx_st_close(&a);
    gx_st_close(&b);
    return ok ? compared : -1;
}

/* dtu_files_close_by_name with one tolerance for every tensor, all F32. */
static inline int dtu_files_close(gx_test_state *T, const char *pa, const char *pb, double atol, double rtol,
                                  double *max_abs_gap) {
    return dtu_files_close_by_name(T, pa, pb, atol, rtol, NULL, 0, DTU_F32_ONLY, max_abs_gap);
}

#endif
