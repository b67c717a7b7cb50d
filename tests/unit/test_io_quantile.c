/*
 * test_io_quantile.c — the selection-based quantile behind the FITS asinh
 * stretch (sky median, 99.5th percentile) equals the sorted-array definition
 * numpy uses, on random data with many duplicates, all sizes 1..200.
 */
#include "gx_test.h"
#include "gx_image_impl.h"

#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double quantile_by_sort(const double *v, size_t n, double q) {
    double *s = malloc(n * sizeof *s);
    memcpy(s, v, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_double);
    double pos = q * (double)(n - 1);
    size_t lo = (size_t)floor(pos), hi = lo + 1 < n ? lo + 1 : lo;
    double t = pos - (double)lo;
    double r = t == 0.0 ? s[lo] : s[lo] + (s[hi] - s[lo]) * t;
    free(s);
    return r;
}

GX_TEST(io_quantile_selection_matches_sorted_definition) {
    gx_rng rng;
    gx_rng_init(&rng, 99);
    static const double qs[] = { 0.0, 0.1, 0.5, 0.73, 0.995, 1.0 };
    double v[200], w[200];
    for (size_t n = 1; n <= 200; n++) {
        for (size_t i = 0; i < n; i++)   /* few distinct values: many ties */
            v[i] = (n % 3 == 0) ? floor(gx_rng_uniform(&rng) * 5) : gx_rng_normal(&rng);
        for (size_t k = 0; k < sizeof qs / sizeof qs[0]; k++) {
            memcpy(w, v, n * sizeof *w);
            double got = gx_quantile_inplace(w, n, qs[k]);
            double want = quantile_by_sort(v, n, qs[k]);
            CHECK_MSG(got == want, "n=%zu q=%g: got %.17g want %.17g", n, qs[k], got, want);
        }
    }
}
