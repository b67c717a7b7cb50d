/*
 * gx_morph_segment.c — the segmentation recipe used with statmorph when the
 * caller has no segmentation map (statmorph's tutorial, spec §1), the
 * "auto" and batch entry points built on it.
 *
 * Recipe: threshold = 3σ-clipped mean + 1.5·clipped σ (median centre,
 * ddof 0, ≤ 10 iterations, in double precision), pixels strictly above
 * it (photutils.detect_sources), 8-connected components of at least 5
 * pixels, the largest kept (the first in raster order on ties, as
 * np.argmax over photutils' labels), then scipy's uniform_filter(size=10,
 * mode='reflect') of the 0/1 map and > 0.5.
 */
#include "gx_morph.h"
#include "gx_morph_impl.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEG_NSIGMA 1.5
#define SEG_CLIP_SIGMA 3.0
#define SEG_CLIP_ITERS 10
#define SEG_NPIXELS 5
#define SEG_BOX 10

static double median_sorted(const double *a, int64_t n) {
    return (n % 2) ? a[n / 2] : 0.5 * (a[n / 2 - 1] + a[n / 2]);
}

/* astropy sigma_clipped_stats(sigma=3, maxiters=10): returns mean and std
 * of the survivors; v is sorted and compacted in place. */
static void sigma_clip(double *v, int64_t n, double *mean, double *std) {
    gxm_sort(v, n);
    int64_t lo = 0, hi = n;  /* survivors are v[lo, hi) since v is sorted */
    for (int it = 0; it < SEG_CLIP_ITERS && hi > lo; it++) {
        int64_t m = hi - lo;
        double med = median_sorted(v + lo, m), mu = 0, var = 0;
        for (int64_t k = lo; k < hi; k++) mu += v[k];
        mu /= (double)m;
        for (int64_t k = lo; k < hi; k++) var += (v[k] - mu) * (v[k] - mu);
        double sd = sqrt(var / (double)m);
        double bmin = med - SEG_CLIP_SIGMA * sd, bmax = med + SEG_CLIP_SIGMA * sd;
        int64_t nlo = lo, nhi = hi;
        while (nlo < nhi && v[nlo] < bmin) nlo++;
        while (nhi > nlo && v[nhi - 1] > bmax) nhi--;
        int changed = (nlo != lo) || (nhi != hi);
        lo = nlo;
        hi = nhi;
        if (!changed) break;
    }
    int64_t m = hi - lo;
    double mu = 0, var = 0;
    for (int64_t k = lo; k < hi; k++) mu += v[k];
    mu = m ? mu / (double)m : NAN;
    for (int64_t k = lo; k < hi; k++) var += (v[k] - mu) * (v[k] - mu);
    *mean = mu;
    *std = m ? sqrt(var / (double)m) : NAN;
}

gx_status gx_morph_segment(const float *image, const uint8_t *mask, int ny, int nx,
                           int32_t *segmap, int *found, gx_err *err) {
    if (!image || !segmap || !found)
        return gx_err_set(err, GX_ERR_INVALID, "morph segment: image, segmap and found must be non-NULL");
    if (ny <= 0 || nx <= 0 || ny > GX_MORPH_MAX_SIDE || nx > GX_MORPH_MAX_SIDE)
        return gx_err_set(err, GX_ERR_INVALID, "morph segment: image shape %dx%d (each side 1..%d)",
                          ny, nx, GX_MORPH_MAX_SIDE);
    size_t n = (size_t)ny * nx, side = (size_t)(ny > nx ? ny : nx);
    *found = 0;
    memset(segmap, 0, n * sizeof *segmap);
    double *v = malloc((3 * n + side + SEG_BOX + 2) * sizeof *v);
    int32_t *lab = malloc(2 * n * sizeof *lab);
    uint8_t *above = malloc(n);
    if (!v || !lab || !above) {
        free(v); free(lab); free(above);
        return gx_err_set(err, GX_ERR_NOMEM, "morph segment: %zu-pixel work buffers", n);
    }
    int64_t m = 0;
    for (size_t p = 0; p < n; p++)
        if (isfinite(image[p]) && !(mask && mask[p])) v[m++] = image[p];
    double mean = NAN, sd = NAN;
    if (m > 0) sigma_clip(v, m, &mean, &sd);
    double thr = mean + SEG_NSIGMA * sd;
    int nlab = 0;
    if (isfinite(thr)) {
        for (size_t p = 0; p < n; p++)
            above[p] = isfinite(image[p]) && !(mask && mask[p]) && (double)image[p] > thr;
        nlab = gxm_label8(above, ny, nx, lab, lab + n);
    }
    /* areas per label in v (reused), the largest with >= 5 pixels */
    int best = 0;
    if (nlab > 0) {
        double *area = v;
        memset(area, 0, (size_t)(nlab + 1) * sizeof *area);
        for (size_t p = 0; p < n; p++) area[lab[p]] += lab[p] > 0;
        for (int k = 1; k <= nlab; k++)
            if (area[k] >= SEG_NPIXELS && (best == 0 || area[k] > area[best])) best = k;
    }
    if (best > 0) {
        double *fl = v, *sm = v + n, *work = v + 2 * n;
        for (size_t p = 0; p < n; p++) fl[p] = lab[p] == best;
        gxm_uniform_filter(fl, sm, ny, nx, SEG_BOX, 0, work);
        for (size_t p = 0; p < n; p++) {
            segmap[p] = sm[p] > 0.5;
            *found |= segmap[p];
        }
    }
    free(v); free(lab); free(above);
    return GX_OK;
}

gx_status gx_morph_measure_auto(const float *image, const uint8_t *mask, int ny, int nx,
                                const gx_morph_opts *opts, gx_morph_result *out,
                                int32_t *segmap_out, gx_err *err) {
    if (!out) return gx_err_set(err, GX_ERR_INVALID, "morph: result pointer is NULL");
    if (!image) return gx_err_set(err, GX_ERR_INVALID, "morph: image is NULL");
    if (ny <= 0 || nx <= 0 || ny > GX_MORPH_MAX_SIDE || nx > GX_MORPH_MAX_SIDE)
        return gx_err_set(err, GX_ERR_INVALID, "morph: image shape %dx%d (each side 1..%d)", ny,
                          nx, GX_MORPH_MAX_SIDE);
    int32_t *seg = segmap_out ? segmap_out : malloc((size_t)ny * nx * sizeof *seg);
    if (!seg) return gx_err_set(err, GX_ERR_NOMEM, "morph: %dx%d segmap", ny, nx);
    int found = 0;
    gx_status st = gx_morph_segment(image, mask, ny, nx, seg, &found, err);
    if (!st && !found) {
        memset(out, 0, sizeof *out);
        /* All -99 through the field table; reason says why. */
        for (int k = 0; k < gx_morph_nfields; k++)
            *(double *)((char *)out + gx_morph_fields[k].offset) = -99.0;
        out->flag = GX_MORPH_FAILED;
        out->warn = GX_MORPH_W_NO_SOURCE;
        out->smooth_k = -99;
        out->num_badpixels = -1;
        size_t nfin = 0;
        for (size_t p = 0; p < (size_t)ny * nx; p++) nfin += isfinite(image[p]) != 0;
        if (nfin == 0) out->warn |= GX_MORPH_W_NO_FINITE;
        snprintf(out->reason, sizeof out->reason, "%s",
                 nfin == 0 ? "no finite pixel in the image"
                           : "no source above the detection threshold (empty or flat image?)");
    } else if (!st) {
        st = gx_morph_measure(image, seg, 1, mask, ny, nx, opts, out, err);
    }
    if (!segmap_out) free(seg);
    return st;
}

gx_status gx_morph_measure_batch(const float *images, const uint8_t *masks, int64_t n, int ny,
                                 int nx, const gx_morph_opts *opts, int nthreads,
                                 gx_morph_result *out, gx_err *err) {
    if (n < 0 || (n > 0 && (!images || !out)))
        return gx_err_set(err, GX_ERR_INVALID, "morph batch: n %lld, images/out must be non-NULL", (long long)n);
    size_t plane = (size_t)ny * (size_t)(nx > 0 ? nx : 0);
    gx_status first = GX_OK;
    gx_err first_err = { { 0 } };
    int64_t first_i = -1;
#pragma omp parallel for schedule(dynamic, 4) num_threads(nthreads > 0 ? nthreads : omp_get_max_threads())
    for (int64_t i = 0; i < n; i++) {
        gx_err e;
        gx_status st = gx_morph_measure_auto(images + (size_t)i * plane,
                                             masks ? masks + (size_t)i * plane : NULL, ny, nx,
                                             opts, &out[i], NULL, &e);
        if (st) {
#pragma omp critical(gx_morph_batch_err)
            if (first_i < 0 || i < first_i) { first_i = i; first = st; first_err = e; }
        }
    }
    if (first_i >= 0) return gx_err_set(err, first, "morph batch: cutout %lld: %s", (long long)first_i, first_err.msg);
    return GX_OK;
}
