/*
 * gx_split.c — seeded stratified train/val/test splits.
 *
 * Design: each class is split on its own (indices in ascending order,
 * Fisher-Yates shuffle with its own forked stream gx_rng_fork(seed, class),
 * proportional cut), so
 *   - every split holds each class in the requested proportion (rounded),
 *     which matters for Galaxy10's skewed classes (334 cigars vs 2645 round);
 *   - the result is a pure function of (labels, fractions, seed): no
 *     dependence on thread count, allocation, or iteration order;
 *   - a class's assignment does not change when another class grows.
 * Outputs are sorted ascending so an HDF5 reader walking a split touches
 * each cached row block once; the loader reshuffles per epoch.
 */
#include "gx_dataset.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Uniform integer in [0, bound) without modulo bias (rejection on the
 * 32-bit draw; bound < 2^32 here since class sizes fit in the index). */
static uint64_t gx_split_below(gx_rng *r, uint64_t bound) {
    if (bound <= 1) return 0;
    if (bound > 0xFFFFFFFFull) {   /* > 4 G samples in one class: use 53 bits */
        return (uint64_t)(gx_rng_uniform(r) * (double)bound) % bound;
    }
    uint32_t b = (uint32_t)bound;
    uint32_t limit = (uint32_t)(0x100000000ull - (0x100000000ull % b));
    for (;;) {
        uint32_t x = gx_rng_u32(r);
        if (limit == 0 || x < limit) return x % b;
    }
}

static int gx_cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Checks fractions and labels before any allocation. */
static gx_status gx_split_check(const int32_t *labels, int64_t n, int n_classes,
                                const double fracs[3], gx_err *err) {
    if (n < 0 || (n > 0 && !labels) || n_classes < 1)
        return gx_err_set(err, GX_ERR_INVALID, "split: bad arguments (n %lld, n_classes %d)",
                          (long long)n, n_classes);
    double sum = 0;
    for (int k = 0; k < 3; k++) {
        if (!(fracs[k] >= 0 && fracs[k] <= 1))
            return gx_err_set(err, GX_ERR_INVALID, "split: fraction %d = %g not in [0,1]",
                              k, fracs[k]);
        sum += fracs[k];
    }
    if (fabs(sum - 1.0) > 1e-6)
        return gx_err_set(err, GX_ERR_INVALID, "split: fractions %g + %g + %g sum to %g, not 1",
                          fracs[0], fracs[1], fracs[2], sum);
    for (int64_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= n_classes)
            return gx_err_set(err, GX_ERR_INVALID,
                              "split: label %d of sample %lld out of range [0, %d)",
                              labels[i], (long long)i, n_classes);
    return GX_OK;
}

/* Shuffles one class's members (ascending on entry) and appends them to
 * the three outputs at the proportional cuts. */
static void gx_split_class(int64_t *mem, int64_t m, const double fracs[3], gx_rng *r,
                           int64_t *out_idx[3], int64_t out_n[3]) {
    for (int64_t i = m - 1; i > 0; i--) {
        int64_t j = (int64_t)gx_split_below(r, (uint64_t)i + 1);
        int64_t t = mem[i]; mem[i] = mem[j]; mem[j] = t;
    }
    int64_t c1 = (int64_t)llround((double)m * fracs[0]);
    int64_t c2 = (int64_t)llround((double)m * (fracs[0] + fracs[1]));
    if (c1 > m) c1 = m;
    if (c2 > m) c2 = m;
    if (c2 < c1) c2 = c1;
    for (int64_t i = 0; i < m; i++) {
        int k = i < c1 ? 0 : (i < c2 ? 1 : 2);
        out_idx[k][out_n[k]++] = mem[i];
    }
}

gx_status gx_split_stratified(const int32_t *labels, int64_t n, int n_classes,
                              const double fracs[3], uint64_t seed,
                              int64_t *out_idx[3], int64_t out_n[3], gx_err *err) {
    for (int k = 0; k < 3; k++) { out_idx[k] = NULL; out_n[k] = 0; }
    gx_status s = gx_split_check(labels, n, n_classes, fracs, err);
    if (s != GX_OK) return s;
    /* Worst case every output holds all n; one scratch array of n holds the
     * current class's members. */
    size_t bytes = (size_t)(n > 0 ? n : 1) * sizeof(int64_t);
    int64_t *mem = malloc(bytes);
    for (int k = 0; k < 3; k++) out_idx[k] = malloc(bytes);
    if (!mem || !out_idx[0] || !out_idx[1] || !out_idx[2]) {
        free(mem);
        for (int k = 0; k < 3; k++) { free(out_idx[k]); out_idx[k] = NULL; }
        return gx_err_set(err, GX_ERR_NOMEM, "split: out of memory for %lld samples",
                          (long long)n);
    }
    gx_rng base;
    gx_rng_init(&base, seed);
    for (int c = 0; c < n_classes; c++) {
        int64_t m = 0;
        for (int64_t i = 0; i < n; i++)
            if (labels[i] == c) mem[m++] = i;
        gx_rng r = gx_rng_fork(&base, (uint64_t)c);
        gx_split_class(mem, m, fracs, &r, out_idx, out_n);
    }
    free(mem);
    for (int k = 0; k < 3; k++)
        qsort(out_idx[k], (size_t)out_n[k], sizeof(int64_t), gx_cmp_i64);
    return GX_OK;
}
