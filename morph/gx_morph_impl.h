/*
 * gx_morph_impl.h — private pieces of morph/: exact aperture photometry
 * (gx_morph_geom.c) and the numerical building blocks ported from scipy /
 * numpy (gx_morph_num.c). Each mirrors the routine statmorph calls so the
 * two implementations take the same path (see gx_morph.h).
 */
#ifndef GX_MORPH_IMPL_H
#define GX_MORPH_IMPL_H

#include <stdint.h>

/* ---- apertures (photutils, method='exact') -------------------------------- */
/* A circle (b == a, theta unused) or an ellipse of semi-axes a >= b (any
 * order works), rotated by theta (radians, counter-clockwise from +x),
 * centred at (x, y) in pixel coordinates. r_in/a_in > 0 makes an annulus
 * whose inner shape is the same ellipse scaled by a_in/a. */
typedef struct gxm_ap {
    double x, y;
    double a, b, theta;
    double a_in;          /* 0: no hole */
    int ellipse;          /* 0: circle (exact circle code), 1: ellipse */
} gxm_ap;

static inline gxm_ap gxm_circle(double x, double y, double r) {
    gxm_ap ap = { x, y, r, r, 0.0, 0.0, 0 };
    return ap;
}
static inline gxm_ap gxm_ellipse(double x, double y, double a, double b, double th) {
    gxm_ap ap = { x, y, a, b, th, 0.0, 1 };
    return ap;
}

/* Geometric area (photutils' ap.area). */
double gxm_ap_area(const gxm_ap *ap);

/* Sums over the aperture: s[k] = Σ w·img_k over in-image pixels with
 * weight > 0 and mask == 0 (mask may be NULL), for nimg images (1..3) sharing
 * the weights; *area (may be NULL) = Σ w over in-image pixels with mask == 0
 * (photutils' area_overlap). Returns 0 when the aperture misses the image
 * (photutils returns NaN then; callers treat it explicitly). */
int gxm_ap_sums(const gxm_ap *ap, const double *const *img, int nimg, int ny, int nx,
                const uint8_t *mask, double *s, double *area);

/* Exact overlap area of the pixel [x0,x1]×[y0,y1] (origin at the centre)
 * with a circle of radius r / an ellipse (rx, ry, theta). Exposed for tests. */
double gxm_circle_pixel_overlap(double x0, double y0, double x1, double y1, double r);
double gxm_ellipse_pixel_overlap(double x0, double y0, double x1, double y1, double rx,
                                 double ry, double theta);

/* ---- numerics (scipy / numpy ports) ---------------------------------------- */
typedef double (*gxm_fn1)(double x, void *arg);
typedef double (*gxm_fn2)(const double *x, void *arg);

/* scipy.optimize.brentq(f, a, b, xtol, rtol=4·eps, maxiter=100). f(a), f(b)
 * must have opposite signs (else returns NAN and *ok = 0). */
double gxm_brentq(gxm_fn1 f, void *arg, double a, double b, double xtol, int *ok);

/* scipy.optimize.fmin (Nelder–Mead, 2-D): initial simplex x0, x0 with one
 * coordinate ×1.05 (or 0.00025 if zero), xatol, fatol, maxfev = 400. x is
 * updated in place; returns the number of evaluations. */
int gxm_fmin2(gxm_fn2 f, void *arg, double x[2], double xatol, double fatol);

/* numpy's pairwise summation of n doubles / floats (np.sum on contiguous
 * data), so float32 reductions round like statmorph's. */
double gxm_pairwise_d(const double *a, int64_t n);
float gxm_pairwise_f(const float *a, int64_t n);

/* scipy.ndimage.uniform_filter(size) on a ny×nx image, mode 'reflect'
 * (each axis in turn; rows first). f32: round after each pass like a
 * float32 array. work: ny*nx + max(ny,nx) + 2*size doubles. size <= 1 copies. */
void gxm_uniform_filter(const double *in, double *out, int ny, int nx, int size, int f32,
                        double *work);
/* scipy.ndimage.gaussian_filter(sigma, truncate, mode='constant' (cval 0)
 * or 'reflect'). Same conventions; gxm_gaussian_work() doubles of work. */
void gxm_gaussian_filter(const double *in, double *out, int ny, int nx, double sigma,
                         double truncate, int reflect, int f32, double *work);
int gxm_gaussian_work(int ny, int nx, double sigma, double truncate);

/* 8-connected labels of in != 0 (labels 1..n in raster order of first
 * pixel, as scipy.ndimage.label). stack: ny*nx ints. Returns n. */
int gxm_label8(const uint8_t *in, int ny, int nx, int32_t *lab, int32_t *stack);

/* ascending sort of doubles (in place). */
void gxm_sort(double *a, int64_t n);

#endif
