/*
 * gx_morph_dist.c — distances between images and between distributions,
 * shared by the morphology checks and the CF-INN metrics (spec §2):
 * SSIM (Wang et al. 2004, as skimage.metrics.structural_similarity with
 * Gaussian weights) and the 1-Wasserstein distance, exact and binned as
 * in the two-models paper.
 */
#include "gx_morph.h"
#include "gx_morph_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SSIM_SIGMA 1.5
#define SSIM_TRUNCATE 3.5
#define SSIM_K1 0.01
#define SSIM_K2 0.03

/* SSIM's Gaussian window, restricted to the pixels the mean is taken over.
 *
 * skimage filters the whole image (scipy.ndimage.gaussian_filter, mode
 * 'reflect') and then averages only the pixels at least `pad` (= the
 * window radius, 5) from the border. The window of such a pixel never
 * reaches past the border, so the boundary mode cannot matter there: the
 * filter is computed in 'valid' mode only, rows first, on a ring of 2r+1
 * horizontally filtered rows, and all five moments (mu_x, mu_y, E[x^2],
 * E[y^2], E[xy]) come out of the same pass. Mathematically the same sums as
 * filtering each moment image separately (the taps are the same normalised
 * weights; only the summation order differs, ~1e-16; the test compares
 * with the full-image recipe to 1e-12). The taps are symmetric, so each sum
 * pairs w[t] (v[-t] + v[+t]), written as a short tree: a single running sum
 * is one long chain of dependent adds, and the compiler may not reorder it
 * (no -ffast-math). Kept in double: the variance E[x^2] - mu_x^2 cancels,
 * and on [0,1] images float would cost ~1e-7 per moment, amplified up to
 * 1/C2 ~ 1e3 in flat regions. Measured on the 2-core AVX2 box (loaded,
 * CPU time): 45 us per 64x64 band instead of ~400 us for the five
 * full-image filters, which were most of the counterfactual grid's metrics
 * time (docs/benchmarks.md). */

#define SSIM_NM 5   /* moments: x, y, xx, yy, xy */
#define SSIM_R 5    /* window radius: (int)(SSIM_TRUNCATE * SSIM_SIGMA + 0.5), as scipy */
#define SSIM_NW (2 * SSIM_R + 1)
_Static_assert(SSIM_NW == 11, "ssim_out_row spells out 11 window rows");

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define SSIM_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SSIM_CLONES
#endif

/* Horizontal pass of one image row: h[m][j] = sum_t w[t] * moment_m(j + t)
 * for the nv = nx - 2r valid columns. p: 5 * nx scratch. */
SSIM_CLONES
static void ssim_row(const float *restrict a, const float *restrict b, int nx, int nv,
                     const double *restrict w, double *restrict p, double *restrict h) {
    double *restrict px = p, *restrict py = p + nx, *restrict pxx = p + 2 * nx,
           *restrict pyy = p + 3 * nx, *restrict pxy = p + 4 * nx;
    #pragma omp simd
    for (int j = 0; j < nx; j++) {
        double x = a[j], y = b[j];
        px[j] = x; py[j] = y; pxx[j] = x * x; pyy[j] = y * y; pxy[j] = x * y;
    }
    /* Taps innermost with a constant count: the sum stays in a register. */
    for (int m = 0; m < SSIM_NM; m++) {
        const double *restrict src = p + m * nx;
        double *restrict dst = h + m * nv;
        #pragma omp simd
        for (int j = 0; j < nv; j++) {
            const double *q = src + j;
            dst[j] = (w[5] * q[5] + w[0] * (q[0] + q[10])) +
                     (w[1] * (q[1] + q[9]) + w[2] * (q[2] + q[8])) +
                     (w[3] * (q[3] + q[7]) + w[4] * (q[4] + q[6]));
        }
    }
}

/* Vertical pass for one output row from the ring rows[t] (t = 0..nw-1, in
 * image order), then the SSIM map of that row, summed. u: 5 * nv scratch.
 * *bad is set when a value is not finite. */
SSIM_CLONES
static double ssim_out_row(double *const *rows, int nv, const double *restrict w, double c1,
                           double c2, double *restrict u, int *bad) {
    for (int m = 0; m < SSIM_NM; m++) {
        double *restrict dst = u + m * nv;
        const double *r0 = rows[0] + m * nv, *r1 = rows[1] + m * nv, *r2 = rows[2] + m * nv,
                     *r3 = rows[3] + m * nv, *r4 = rows[4] + m * nv, *r5 = rows[5] + m * nv,
                     *r6 = rows[6] + m * nv, *r7 = rows[7] + m * nv, *r8 = rows[8] + m * nv,
                     *r9 = rows[9] + m * nv, *r10 = rows[10] + m * nv;
        #pragma omp simd
        for (int j = 0; j < nv; j++)
            dst[j] = (w[5] * r5[j] + w[0] * (r0[j] + r10[j])) +
                     (w[1] * (r1[j] + r9[j]) + w[2] * (r2[j] + r8[j])) +
                     (w[3] * (r3[j] + r7[j]) + w[4] * (r4[j] + r6[j]));
    }
    const double *ux = u, *uy = u + nv, *uxx = u + 2 * nv, *uyy = u + 3 * nv, *uxy = u + 4 * nv;
    double sum = 0;
    int nonfinite = 0;
    #pragma omp simd reduction(+:sum) reduction(|:nonfinite)
    for (int j = 0; j < nv; j++) {
        double vx = uxx[j] - ux[j] * ux[j], vy = uyy[j] - uy[j] * uy[j];
        double vxy = uxy[j] - ux[j] * uy[j];
        double s = ((2 * ux[j] * uy[j] + c1) * (2 * vxy + c2)) /
                   ((ux[j] * ux[j] + uy[j] * uy[j] + c1) * (vx + vy + c2));
        nonfinite |= !isfinite(s);
        sum += s;
    }
    *bad |= nonfinite;
    return sum;
}

gx_status gx_morph_ssim(const float *a, const float *b, int ny, int nx, double data_range,
                        double *ssim, gx_err *err) {
    const int r = SSIM_R, nw = SSIM_NW;
    if (!a || !b || !ssim) return gx_err_set(err, GX_ERR_INVALID, "ssim: NULL image or output");
    if (ny < nw || nx < nw || ny > GX_MORPH_MAX_SIDE || nx > GX_MORPH_MAX_SIDE)
        return gx_err_set(err, GX_ERR_INVALID, "ssim: image %dx%d, each side must be %d..%d", ny, nx,
                          nw, GX_MORPH_MAX_SIDE);
    if (!(data_range > 0) || !isfinite(data_range))
        return gx_err_set(err, GX_ERR_INVALID, "ssim: data_range %g must be > 0", data_range);
    const int nv = nx - 2 * r;
    /* taps [nw], row products [5 nx], ring [nw][5 nv], vertical sums [5 nv] */
    size_t need = (size_t)nw + SSIM_NM * (size_t)nx + ((size_t)nw + 1) * SSIM_NM * (size_t)nv;
    double *buf = malloc(need * sizeof *buf);
    if (!buf) return gx_err_set(err, GX_ERR_NOMEM, "ssim: %zu-value buffers", need);
    double *w = buf, *p = w + nw, *ring = p + SSIM_NM * nx, *u = ring + (size_t)nw * SSIM_NM * nv;
    /* scipy's _gaussian_kernel1d: exp(-x^2 / 2 sigma^2), normalised by its
     * (pairwise) sum. */
    for (int k = -r; k <= r; k++) w[k + r] = exp(-0.5 / (SSIM_SIGMA * SSIM_SIGMA) * (double)(k * k));
    double wsum = gxm_pairwise_d(w, nw);
    for (int k = 0; k < nw; k++) w[k] /= wsum;
    double c1 = (SSIM_K1 * data_range) * (SSIM_K1 * data_range);
    double c2 = (SSIM_K2 * data_range) * (SSIM_K2 * data_range);
    double sum = 0, *rows[SSIM_NW];
    int bad = 0;
    for (int i = 0; i < ny; i++) {
        ssim_row(a + (size_t)i * nx, b + (size_t)i * nx, nx, nv, w, p,
                 ring + (size_t)(i % nw) * SSIM_NM * nv);
        if (i < nw - 1) continue;
        for (int t = 0; t < nw; t++) rows[t] = ring + (size_t)((i - nw + 1 + t) % nw) * SSIM_NM * nv;
        sum += ssim_out_row(rows, nv, w, c1, c2, u, &bad);
    }
    free(buf);
    if (bad) return gx_err_set(err, GX_ERR_INVALID, "ssim: non-finite pixel values");
    *ssim = sum / ((double)(ny - 2 * r) * (double)nv);
    return GX_OK;
}

static int cmp_d(const void *p, const void *q) {
    double x = *(const double *)p, y = *(const double *)q;
    return (x > y) - (x < y);
}

static gx_status check_samples(const char *who, const double *u, int64_t nu, const double *v,
                               int64_t nv, gx_err *err) {
    if (!u || !v || nu <= 0 || nv <= 0)
        return gx_err_set(err, GX_ERR_INVALID, "%s: both samples must be non-empty (%lld, %lld)",
                          who, (long long)nu, (long long)nv);
    for (int64_t k = 0; k < nu; k++)
        if (!isfinite(u[k])) return gx_err_set(err, GX_ERR_INVALID, "%s: u[%lld] is not finite", who, (long long)k);
    for (int64_t k = 0; k < nv; k++)
        if (!isfinite(v[k])) return gx_err_set(err, GX_ERR_INVALID, "%s: v[%lld] is not finite", who, (long long)k);
    return GX_OK;
}

gx_status gx_morph_w1_exact(const double *u, int64_t nu, const double *v, int64_t nv,
                            double *w1, gx_err *err) {
    gx_status st = check_samples("w1_exact", u, nu, v, nv, err);
    if (st) return st;
    if (!w1) return gx_err_set(err, GX_ERR_INVALID, "w1_exact: NULL output");
    double *su = malloc((size_t)(nu + nv) * sizeof *su);
    if (!su) return gx_err_set(err, GX_ERR_NOMEM, "w1_exact: %lld samples", (long long)(nu + nv));
    double *sv = su + nu;
    memcpy(su, u, (size_t)nu * sizeof *su);
    memcpy(sv, v, (size_t)nv * sizeof *sv);
    qsort(su, (size_t)nu, sizeof *su, cmp_d);
    qsort(sv, (size_t)nv, sizeof *sv, cmp_d);
    /* Walk the merged order: between consecutive values x_k < x_{k+1}
     * the CDFs are constant; add |F_u − F_v|·(x_{k+1} − x_k). */
    int64_t i = 0, j = 0;
    double acc = 0, prev = su[0] < sv[0] ? su[0] : sv[0];
    while (i < nu || j < nv) {
        double x = (j >= nv || (i < nu && su[i] <= sv[j])) ? su[i] : sv[j];
        acc += fabs((double)i / (double)nu - (double)j / (double)nv) * (x - prev);
        while (i < nu && su[i] == x) i++;
        while (j < nv && sv[j] == x) j++;
        prev = x;
    }
    free(su);
    *w1 = acc;
    return GX_OK;
}

gx_status gx_morph_w1_binned(const double *u, int64_t nu, const double *v, int64_t nv,
                             int nbins, double lo, double hi, double *w1, double *p_out,
                             double *q_out, gx_err *err) {
    gx_status st = check_samples("w1_binned", u, nu, v, nv, err);
    if (st) return st;
    if (!w1) return gx_err_set(err, GX_ERR_INVALID, "w1_binned: NULL output");
    if (nbins < 1 || nbins > 1000000)
        return gx_err_set(err, GX_ERR_INVALID, "w1_binned: nbins %d not in 1..1000000", nbins);
    if (!isfinite(lo) || !isfinite(hi) || hi < lo)
        return gx_err_set(err, GX_ERR_INVALID, "w1_binned: range [%g, %g]", lo, hi);
    if (lo == hi) {  /* the paper: bins on the range of the first sample */
        lo = hi = u[0];
        for (int64_t k = 1; k < nu; k++) { lo = fmin(lo, u[k]); hi = fmax(hi, u[k]); }
        if (lo == hi) { lo -= 0.5; hi += 0.5; }
    }
    double *p = calloc((size_t)2 * nbins, sizeof *p);
    if (!p) return gx_err_set(err, GX_ERR_NOMEM, "w1_binned: %d bins", nbins);
    double *q = p + nbins, delta = (hi - lo) / nbins;
    for (int pass = 0; pass < 2; pass++) {
        const double *s = pass ? v : u;
        int64_t ns = pass ? nv : nu;
        double *h = pass ? q : p;
        for (int64_t k = 0; k < ns; k++) {
            int b = (int)floor((s[k] - lo) / delta);
            if (b < 0) b = 0;
            if (b >= nbins) b = nbins - 1;
            h[b] += 1.0 / (double)ns;
        }
    }
    double cum = 0, acc = 0;
    for (int b = 0; b < nbins; b++) {
        cum += p[b] - q[b];
        acc += fabs(cum);
    }
    if (p_out) memcpy(p_out, p, (size_t)nbins * sizeof *p);
    if (q_out) memcpy(q_out, q, (size_t)nbins * sizeof *q);
    free(p);
    *w1 = delta * acc;
    return GX_OK;
}
