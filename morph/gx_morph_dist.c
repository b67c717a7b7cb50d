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

gx_status gx_morph_ssim(const float *a, const float *b, int ny, int nx, double data_range,
                        double *ssim, gx_err *err) {
    const int win = 2 * (int)(SSIM_TRUNCATE * SSIM_SIGMA + 0.5) + 1;  /* 11 */
    if (!a || !b || !ssim) return gx_err_set(err, GX_ERR_INVALID, "ssim: NULL image or output");
    if (ny < win || nx < win || ny > GX_MORPH_MAX_SIDE || nx > GX_MORPH_MAX_SIDE)
        return gx_err_set(err, GX_ERR_INVALID, "ssim: image %dx%d, each side must be %d..%d", ny, nx,
                          win, GX_MORPH_MAX_SIDE);
    if (!(data_range > 0) || !isfinite(data_range))
        return gx_err_set(err, GX_ERR_INVALID, "ssim: data_range %g must be > 0", data_range);
    size_t n = (size_t)ny * nx;
    int work = gxm_gaussian_work(ny, nx, SSIM_SIGMA, SSIM_TRUNCATE);
    double *buf = malloc((10 * n + (size_t)work) * sizeof *buf);
    if (!buf) return gx_err_set(err, GX_ERR_NOMEM, "ssim: %zu-pixel buffers", n);
    double *x = buf, *y = buf + n, *xx = buf + 2 * n, *yy = buf + 3 * n, *xy = buf + 4 * n;
    double *ux = buf + 5 * n, *uy = buf + 6 * n, *uxx = buf + 7 * n, *uyy = buf + 8 * n,
           *uxy = buf + 9 * n, *w = buf + 10 * n;
    for (size_t p = 0; p < n; p++) {
        x[p] = a[p]; y[p] = b[p];
        xx[p] = x[p] * x[p]; yy[p] = y[p] * y[p]; xy[p] = x[p] * y[p];
    }
    gxm_gaussian_filter(x, ux, ny, nx, SSIM_SIGMA, SSIM_TRUNCATE, 1, 0, w);
    gxm_gaussian_filter(y, uy, ny, nx, SSIM_SIGMA, SSIM_TRUNCATE, 1, 0, w);
    gxm_gaussian_filter(xx, uxx, ny, nx, SSIM_SIGMA, SSIM_TRUNCATE, 1, 0, w);
    gxm_gaussian_filter(yy, uyy, ny, nx, SSIM_SIGMA, SSIM_TRUNCATE, 1, 0, w);
    gxm_gaussian_filter(xy, uxy, ny, nx, SSIM_SIGMA, SSIM_TRUNCATE, 1, 0, w);
    double c1 = (SSIM_K1 * data_range) * (SSIM_K1 * data_range);
    double c2 = (SSIM_K2 * data_range) * (SSIM_K2 * data_range);
    int pad = (win - 1) / 2;
    double sum = 0;
    int64_t cnt = 0;
    int nonfinite = 0;
    for (int i = pad; i < ny - pad; i++)
        for (int j = pad; j < nx - pad; j++) {
            size_t p = (size_t)i * nx + j;
            double vx = uxx[p] - ux[p] * ux[p], vy = uyy[p] - uy[p] * uy[p];
            double vxy = uxy[p] - ux[p] * uy[p];
            double s = ((2 * ux[p] * uy[p] + c1) * (2 * vxy + c2)) /
                       ((ux[p] * ux[p] + uy[p] * uy[p] + c1) * (vx + vy + c2));
            nonfinite |= !isfinite(s);
            sum += s;
            cnt++;
        }
    free(buf);
    if (nonfinite) return gx_err_set(err, GX_ERR_INVALID, "ssim: non-finite pixel values");
    *ssim = sum / (double)cnt;
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
