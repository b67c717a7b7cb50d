/*
 * gx_test.h — the project's small C test framework.
 *
 * Tests register themselves from any file (a constructor runs before main),
 * so adding a test file means adding a file: there is no central list to
 * edit. The runner (tests/gx_test.c) runs every test, or those whose name
 * contains argv[1], and ends with the line "N passed, N failed".
 *
 *   GX_TEST(conv2d_forward_hand_checked) {
 *       CHECK(x == 1);
 *       CHECK_NEAR(got, 2.0, 1e-6);
 *   }
 */
#ifndef GX_TEST_H
#define GX_TEST_H

#include "gx.h"
#include <math.h>
#include <stdio.h>

typedef struct gx_test_state {
    const char *name;
    int failures;          /* CHECK failures in the running test */
    int checks;            /* CHECKs evaluated */
    int quiet;             /* 1: count failures without printing (tests of the test tools) */
} gx_test_state;

typedef void (*gx_test_fn)(gx_test_state *T);
void gx_test_register(const char *name, gx_test_fn fn, const char *file);
void gx_test_fail(gx_test_state *T, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define GX_TEST(name)                                                          \
    static void name(gx_test_state *T);                                        \
    __attribute__((constructor)) static void name##__register(void) {          \
        gx_test_register(#name, name, __FILE__);                               \
    }                                                                          \
    static void name(gx_test_state *T)

#define CHECK(cond)                                                            \
    do { T->checks++; if (!(cond)) gx_test_fail(T, __FILE__, __LINE__, "CHECK(%s)", #cond); } while (0)
#define CHECK_MSG(cond, ...)                                                   \
    do { T->checks++; if (!(cond)) gx_test_fail(T, __FILE__, __LINE__, __VA_ARGS__); } while (0)
#define CHECK_NEAR(got, want, tol)                                             \
    do { double g__ = (double)(got), w__ = (double)(want); T->checks++;        \
         if (!(fabs(g__ - w__) <= (tol)))                                      \
             gx_test_fail(T, __FILE__, __LINE__, "%s = %.9g, want %.9g (tol %g)", \
                          #got, g__, w__, (double)(tol)); } while (0)

/* Compares n values: |got - want| <= atol + rtol*|want| everywhere. On
 * failure reports the worst element and the count of bad ones. Returns 1 if
 * all close. */
int gx_test_allclose(gx_test_state *T, const char *label, const gx_real *got,
                     const gx_real *want, int64_t n, double atol, double rtol);
int gx_test_allclose_f(gx_test_state *T, const char *label, const gx_real *got,
                       const float *want, int64_t n, double atol, double rtol);

/* y must hold exactly n values, each close to want[i] (hand-computed values
 * written as double literals). Returns 1 if so. */
int gx_test_expect(gx_test_state *T, const char *label, const gx_tensor *y,
                   const double *want, int64_t n, double atol, double rtol);

/* Leaf tensor in ctx filled with uniform values in [lo, hi) from a seeded
 * stream; requires_grad set so gradients are collected for it. */
gx_tensor *gx_test_leaf(gx_ctx *ctx, gx_rng *rng, int ndim, const int64_t *shape,
                        double lo, double hi);
/* Same, without requires_grad (constant input). */
gx_tensor *gx_test_const(gx_ctx *ctx, gx_rng *rng, int ndim, const int64_t *shape,
                         double lo, double hi);

/* ---- finite-difference gradient checks (run in the f64 build) ----------
 * fn builds an output from the inputs in[] inside ctx. The check projects
 * the output on fixed random weights r (L = sum out*r), runs backward with
 * seed r, and compares every input gradient (up to max_elems per input,
 * spread evenly; 0 = all) with central differences (L(x+h) - L(x-h))/2h.
 * Inputs that do not require grad are held constant. Returns 1 on success. */
typedef gx_tensor *(*gx_gc_fn)(gx_ctx *ctx, gx_tensor *const *in, void *arg);
/* train: evaluate fn on a ctx with batch_invariant 0 (a training step's,
 * where whole-batch forwards may run); 0 in GX_GC_DEFAULTS. */
typedef struct gx_gc_opts { double eps, atol, rtol; int64_t max_elems; int train; } gx_gc_opts;
#define GX_GC_DEFAULTS ((gx_gc_opts){ 1e-6, 1e-7, 1e-5, 0, 0 })
int gx_gradcheck(gx_test_state *T, const char *label, gx_gc_fn fn, void *arg,
                 int n_in, gx_tensor *const *in, gx_gc_opts opts);

/* ---- PyTorch fixtures (tests/fixtures/NAME.safetensors) ------------------- */
/* Opens tests/fixtures/<name> (relative to GX_FIXTURE_DIR, default
 * "tests/fixtures"); a missing or corrupt fixture fails the test. */
int gx_fixture_open(gx_test_state *T, gx_st_file *f, const char *name);
/* Arena tensor holding the fixture tensor `key` (any float dtype), with its
 * shape; NULL (and a test failure) when absent. */
gx_tensor *gx_fixture_tensor(gx_test_state *T, gx_ctx *ctx, const gx_st_file *f,
                             const char *key);
/* Compares got[0..n) with fixture tensor `key`. */
int gx_fixture_check(gx_test_state *T, const gx_st_file *f, const char *key,
                     const gx_real *got, int64_t n, double atol, double rtol);
/* The same two with a printf-style key: gx_fixture_tensorf(T, ctx, f, "%s.x", case_name). */
gx_tensor *gx_fixture_tensorf(gx_test_state *T, gx_ctx *ctx, const gx_st_file *f,
                              const char *fmt, ...) __attribute__((format(printf, 4, 5)));
int gx_fixture_checkf(gx_test_state *T, const gx_st_file *f, const gx_real *got, int64_t n,
                      double atol, double rtol, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

#endif
