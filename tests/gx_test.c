/*
 * gx_test.c — test registry, runner, comparison helpers, the finite-difference
 * gradient checker and fixture loading. Linked into both test binaries:
 * build/test_unit (f32 engine) and build/test_grad (f64 engine).
 */
#include "gx_test.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct { const char *name, *file; gx_test_fn fn; } gx_test_entry;
static gx_test_entry *g_tests;  /* filled by constructors before main */
static int g_ntests, g_cap;

void gx_test_register(const char *name, gx_test_fn fn, const char *file) {
    if (g_ntests == g_cap) {
        g_cap = g_cap ? 2 * g_cap : 256;
        g_tests = realloc(g_tests, (size_t)g_cap * sizeof *g_tests);
        if (!g_tests) abort();
    }
    g_tests[g_ntests++] = (gx_test_entry){ name, file, fn };
}

void gx_test_fail(gx_test_state *T, const char *file, int line, const char *fmt, ...) {
    T->failures++;
    if (T->quiet || T->failures > 20) return;   /* keep a broken test's output readable */
    fprintf(stderr, "    %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int gx_test_cmp(const void *a, const void *b) {
    const gx_test_entry *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    return c ? c : strcmp(x->name, y->name);
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    qsort(g_tests, (size_t)g_ntests, sizeof *g_tests, gx_test_cmp);
    int passed = 0, failed = 0;
    printf("engine precision: %s, threads: %d\n", GX_REAL_NAME, gx_get_threads());
    for (int i = 0; i < g_ntests; i++) {
        if (filter && !strstr(g_tests[i].name, filter)) continue;
        gx_test_state T = { g_tests[i].name, 0, 0, 0 };
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        g_tests[i].fn(&T);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
        if (T.failures == 0 && T.checks > 0) {
            passed++;
            printf("ok   %-52s %4d checks %8.1f ms\n", T.name, T.checks, ms);
        } else {
            failed++;
            printf("FAIL %-52s %4d of %d checks failed%s\n", T.name, T.failures, T.checks,
                   T.checks == 0 ? " (a test must check something)" : "");
        }
        fflush(stdout);
    }
    free(g_tests);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

/* ------------------------------------------------------------ comparisons */

static int gx_allclose_impl(gx_test_state *T, const char *label, const gx_real *got,
                            const gx_real *want_r, const float *want_f, int64_t n,
                            double atol, double rtol) {
    int64_t bad = 0, worst = -1;
    double worst_excess = 0;
    for (int64_t i = 0; i < n; i++) {
        double w = want_r ? (double)want_r[i] : (double)want_f[i];
        double g = (double)got[i];
        double tol = atol + rtol * fabs(w);
        double d = fabs(g - w);
        if (!(d <= tol)) {            /* also catches NaN */
            bad++;
            double ex = isnan(d) ? INFINITY : d / tol;
            if (worst < 0 || ex > worst_excess) { worst = i; worst_excess = ex; }
        }
    }
    T->checks++;
    if (bad) {
        double w = want_r ? (double)want_r[worst] : (double)want_f[worst];
        gx_test_fail(T, __FILE__, __LINE__,
                     "%s: %lld of %lld values differ; worst [%lld] got %.9g want %.9g (atol %g rtol %g)",
                     label, (long long)bad, (long long)n, (long long)worst, (double)got[worst], w, atol, rtol);
        return 0;
    }
    return 1;
}

int gx_test_allclose(gx_test_state *T, const char *label, const gx_real *got,
                     const gx_real *want, int64_t n, double atol, double rtol) {
    return gx_allclose_impl(T, label, got, want, NULL, n, atol, rtol);
}

int gx_test_allclose_f(gx_test_state *T, const char *label, const gx_real *got,
                       const float *want, int64_t n, double atol, double rtol) {
    return gx_allclose_impl(T, label, got, NULL, want, n, atol, rtol);
}

int gx_test_expect(gx_test_state *T, const char *label, const gx_tensor *y,
                   const double *want, int64_t n, double atol, double rtol) {
    T->checks++;
    if (y->numel != n) {
        gx_test_fail(T, __FILE__, __LINE__, "%s: numel %lld, want %lld", label,
                     (long long)y->numel, (long long)n);
        return 0;
    }
    gx_real *w = malloc((size_t)(n + 1) * sizeof *w);
    for (int64_t i = 0; i < n; i++) w[i] = (gx_real)want[i];
    int ok = gx_test_allclose(T, label, y->data, w, n, atol, rtol);
    free(w);
    return ok;
}

gx_tensor *gx_test_const(gx_ctx *ctx, gx_rng *rng, int ndim, const int64_t *shape,
                         double lo, double hi) {
    gx_tensor *t = gx_tensor_new(ctx, ndim, shape);
    gx_rng_fill_uniform(rng, t->data, t->numel, lo, hi);
    return t;
}

gx_tensor *gx_test_leaf(gx_ctx *ctx, gx_rng *rng, int ndim, const int64_t *shape,
                        double lo, double hi) {
    gx_tensor *t = gx_test_const(ctx, rng, ndim, shape, lo, hi);
    t->requires_grad = 1;
    return t;
}

/* ------------------------------------------------------------ gradcheck */

static double gx_gc_loss(gx_ctx *c, gx_gc_fn fn, void *arg, gx_tensor *const *in,
                         const gx_real *r) {
    gx_tensor *out = fn(c, in, arg);
    double L = 0;
    for (int64_t i = 0; i < out->numel; i++) L += (double)out->data[i] * (double)r[i];
    gx_ctx_reset(c);
    return L;
}

int gx_gradcheck(gx_test_state *T, const char *label, gx_gc_fn fn, void *arg,
                 int n_in, gx_tensor *const *in, gx_gc_opts o) {
    gx_ctx c;
    gx_ctx_init(&c, 1 << 20);
    c.batch_invariant = !o.train;
    /* Leaf gradients must outlive resets of the evaluation context. */
    gx_real *saved_grad[GX_NODE_MAX_IN * 2] = {0};
    GX_ASSERT(n_in <= GX_NODE_MAX_IN * 2);
    for (int i = 0; i < n_in; i++)
        if (in[i]->requires_grad) {
            in[i]->grad = calloc((size_t)in[i]->numel + 1, sizeof(gx_real));
            saved_grad[i] = in[i]->grad;
        }
    c.grad_enabled = 1;
    gx_tensor *out = fn(&c, in, arg);
    int64_t nout = out->numel;
    gx_real *r = malloc((size_t)(nout + 1) * sizeof(gx_real));
    gx_rng rng;
    gx_rng_init(&rng, 12345);
    gx_rng_fill_uniform(&rng, r, nout, -1.0, 1.0);
    int ok = 1;
    if (!out->requires_grad) {
        gx_test_fail(T, __FILE__, __LINE__, "%s: output does not require grad", label);
        ok = 0;
    } else {
        gx_backward(&c, out, r);
    }
    gx_ctx_reset(&c);
    c.grad_enabled = 0;
    int64_t bad = 0, checked = 0;
    for (int i = 0; i < n_in && ok; i++) {
        if (!in[i]->requires_grad) continue;
        int64_t n = in[i]->numel;
        int64_t stride = (o.max_elems > 0 && n > o.max_elems) ? n / o.max_elems : 1;
        for (int64_t j = 0; j < n; j += stride) {
            gx_real x0 = in[i]->data[j];
            in[i]->data[j] = (gx_real)(x0 + o.eps);
            double Lp = gx_gc_loss(&c, fn, arg, in, r);
            in[i]->data[j] = (gx_real)(x0 - o.eps);
            double Lm = gx_gc_loss(&c, fn, arg, in, r);
            in[i]->data[j] = x0;
            double num = (Lp - Lm) / (2 * o.eps);
            double ana = (double)saved_grad[i][j];
            double tol = o.atol + o.rtol * fmax(fabs(num), fabs(ana));
            checked++;
            if (!(fabs(num - ana) <= tol)) {
                if (bad < 5)
                    gx_test_fail(T, __FILE__, __LINE__,
                                 "%s: input %d element %lld: analytic %.10g, numeric %.10g",
                                 label, i, (long long)j, ana, num);
                bad++;
            }
        }
    }
    T->checks++;
    if (bad) {
        gx_test_fail(T, __FILE__, __LINE__, "%s: %lld of %lld gradient entries wrong", label,
                     (long long)bad, (long long)checked);
        ok = 0;
    }
    if (ok && checked == 0) {
        gx_test_fail(T, __FILE__, __LINE__, "%s: no input requires grad", label);
        ok = 0;
    }
    for (int i = 0; i < n_in; i++)
        if (saved_grad[i]) { free(saved_grad[i]); in[i]->grad = NULL; }
    free(r);
    gx_ctx_free(&c);
    return ok;
}

/* ------------------------------------------------------------ fixtures */

int gx_fixture_open(gx_test_state *T, gx_st_file *f, const char *name) {
    const char *dir = getenv("GX_FIXTURE_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "tests/fixtures", name);
    gx_err err = {{0}};
    gx_status s = gx_st_read(f, path, &err);
    T->checks++;
    if (s != GX_OK) {
        gx_test_fail(T, __FILE__, __LINE__, "fixture %s: %s (regenerate with tests/parity/gen_FAMILY.py)",
                     path, err.msg);
        return 0;
    }
    return 1;
}

gx_tensor *gx_fixture_tensor(gx_test_state *T, gx_ctx *ctx, const gx_st_file *f,
                             const char *key) {
    const gx_st_tensor *st = gx_st_find(f, key);
    if (!st) {
        gx_test_fail(T, __FILE__, __LINE__, "fixture tensor %s missing", key);
        return NULL;
    }
    gx_tensor *t = gx_tensor_new(ctx, st->ndim, st->shape);
    gx_err err = {{0}};
    if (gx_st_to_real(st, t->data, t->numel, &err) != GX_OK) {
        gx_test_fail(T, __FILE__, __LINE__, "fixture tensor %s: %s", key, err.msg);
        return NULL;
    }
    return t;
}

int gx_fixture_check(gx_test_state *T, const gx_st_file *f, const char *key,
                     const gx_real *got, int64_t n, double atol, double rtol) {
    const gx_st_tensor *st = gx_st_find(f, key);
    T->checks++;
    if (!st) {
        gx_test_fail(T, __FILE__, __LINE__, "fixture tensor %s missing", key);
        return 0;
    }
    int64_t want_n = gx_shape_numel(st->ndim, st->shape);
    if (want_n != n) {
        gx_test_fail(T, __FILE__, __LINE__, "%s: %lld values, fixture has %lld", key,
                     (long long)n, (long long)want_n);
        return 0;
    }
    gx_real *want = malloc((size_t)(n + 1) * sizeof(gx_real));
    gx_err err = {{0}};
    int ok = 0;
    if (gx_st_to_real(st, want, n, &err) != GX_OK)
        gx_test_fail(T, __FILE__, __LINE__, "%s: %s", key, err.msg);
    else
        ok = gx_test_allclose(T, key, got, want, n, atol, rtol);
    free(want);
    return ok;
}

gx_tensor *gx_fixture_tensorf(gx_test_state *T, gx_ctx *ctx, const gx_st_file *f,
                              const char *fmt, ...) {
    char key[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(key, sizeof key, fmt, ap);
    va_end(ap);
    return gx_fixture_tensor(T, ctx, f, key);
}

int gx_fixture_checkf(gx_test_state *T, const gx_st_file *f, const gx_real *got, int64_t n,
                      double atol, double rtol, const char *fmt, ...) {
    char key[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(key, sizeof key, fmt, ap);
    va_end(ap);
    return gx_fixture_check(T, f, key, got, n, atol, rtol);
}
