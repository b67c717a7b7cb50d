/*
 * gx_morph.c — the measurement pipeline of spec/morphology.md §1, in
 * statmorph 0.7.2's order (SourceMorphology.__init__ and its lazy
 * properties). Each step names the statmorph property it reproduces.
 *
 * Everything happens on the "postage stamp" (statmorph's _slice_stamp): a
 * square of 2.5× the segment's bounding box (at least 48 px), clipped to the
 * image. Images are held as doubles carrying float32 values; where statmorph
 * keeps a float32 array (filters, the S difference image, the sky box
 * reductions) the value is rounded to float at the same step.
 *
 * Memory: one allocation per call sized from the stamp (about 12 doubles
 * per stamp pixel), released before returning; nothing global.
 */
#include "gx_morph.h"
#include "gx_morph_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOVAL (-99.0)

typedef struct {
    const gx_morph_opts *o;
    int ny, nx;            /* stamp shape */
    size_t n;
    double *img;           /* _cutout_stamp_maskzeroed */
    double *nobg;          /* _cutout_stamp_maskzeroed_no_bg */
    double *raw;           /* image values in the stamp (for sn_per_pixel's check) */
    uint8_t *mask;         /* _mask_stamp: other labels, user mask, non-finite, outliers */
    uint8_t *seg;          /* segment pixels (segmap == label) */
    uint8_t *skybad;       /* stamp segmap != 0 or user mask: not sky */
    uint8_t *gini_seg;     /* _segmap_gini */
    uint8_t *b1, *b2, *b3; /* scratch masks */
    double *t1, *t2, *t3;  /* scratch images */
    double *fw;            /* filter work (n + 2·max side + slack) */
    int32_t *lab, *stack;
    int flag;
    uint32_t warn;
    double xc, yc;         /* centroid (stamp coordinates) */
    int xmax_px, ymax_px;  /* brightest pixel of the segment */
    double rp_c0;          /* Petrosian radius about the centroid */
    int sky_ok, sky_i, sky_j, sky_s;
    float sky_asym;        /* _sky_asymmetry (float32, as statmorph) */
} mctx;

static void raise_flag(mctx *c, int level, uint32_t bit) {
    if (level > c->flag) c->flag = level;
    c->warn |= bit;
}

/* ------------------------------------------------------------------ names */
const gx_morph_field gx_morph_fields[] = {
#define F(x) { #x, offsetof(gx_morph_result, x) }
    F(concentration), F(asymmetry), F(smoothness), F(gini), F(m20), F(gini_m20_bulge),
    F(gini_m20_merger), F(r20), F(r50), F(r80), F(rpetro_circ), F(rpetro_ellip), F(flux_circ),
    F(flux_ellip), F(elongation_asymmetry), F(ellipticity_asymmetry), F(orientation_asymmetry),
    F(elongation_centroid), F(ellipticity_centroid), F(orientation_centroid), F(xc_centroid),
    F(yc_centroid), F(xc_asymmetry), F(yc_asymmetry), F(sky_mean), F(sky_median), F(sky_sigma),
#undef F
};
const int gx_morph_nfields = (int)(sizeof gx_morph_fields / sizeof gx_morph_fields[0]);

const char *gx_morph_warn_str(uint32_t bit) {
    static const char *const names[GX_MORPH_W_COUNT] = {
        "nonpositive_flux", "no_source", "no_finite_pixels", "centroid", "petrosian",
        "skybox", "asym_bounds", "asym_drift", "asym_centroid_used", "asym_center_masked",
        "moments", "radii", "smoothness", "gini_segmap", "gini_disjoint", "gini_m20",
        "not_background_subtracted", "segmaps_differ", "mid_segmap", "smoothness_unresolved",
    };
    for (int k = 0; k < GX_MORPH_W_COUNT; k++)
        if (bit == (1u << k)) return names[k];
    return "?";
}

gx_morph_opts gx_morph_opts_default(void) {
    gx_morph_opts o = { 0.2, 1.0, 1.5, 0.25, 0.2, 32, 10.0, 2.5, 48, 0.25 };
    return o;
}

static void result_fail(gx_morph_result *r, uint32_t bit, const char *why) {
    for (int k = 0; k < gx_morph_nfields; k++)
        *(double *)((char *)r + gx_morph_fields[k].offset) = NOVAL;
    r->flag = GX_MORPH_FAILED;
    r->warn |= bit;
    snprintf(r->reason, sizeof r->reason, "%s", why);
    r->smooth_k = -99;
    r->asym_nfev = 0;
}

/* ------------------------------------------------------------- petrosian */
typedef struct { mctx *c; double x, y, elong, theta; int ellip; } petro_arg;

/* _aperture_mean: sum / unmasked overlap area (0 when the area is 0). */
static double ap_mean(mctx *c, const gxm_ap *ap) {
    const double *im[1] = { c->img };
    double s, area;
    if (!gxm_ap_sums(ap, im, 1, c->ny, c->nx, c->mask, &s, &area) || area == 0) return 0.0;
    return s / area;
}

/* _petrosian_function_circ / _ellip: annulus mean / aperture mean − eta. */
static double petro_fn(double r, void *arg) {
    petro_arg *p = arg;
    mctx *c = p->c;
    double w = c->o->annulus_width;
    gxm_ap ann, in;
    if (p->ellip) {
        double a_out = r + 0.5 * w;
        ann = gxm_ellipse(p->x, p->y, a_out, a_out / p->elong, p->theta);
        ann.a_in = r - 0.5 * w;
        in = gxm_ellipse(p->x, p->y, r, r / p->elong, p->theta);
    } else {
        ann = gxm_circle(p->x, p->y, r + 0.5 * w);
        ann.a_in = r - 0.5 * w;
        in = gxm_circle(p->x, p->y, r);
    }
    double m_ann = fabs(ap_mean(c, &ann)), m_in = fabs(ap_mean(c, &in));
    double ratio;
    if (m_in == 0) {
        ratio = (double)(m_ann != 0);
        raise_flag(c, 2, GX_MORPH_W_PETRO);
    } else {
        ratio = m_ann / m_in;
    }
    return ratio - c->o->eta;
}

/* numpy.linspace(lo, hi, num)[k]. */
static double linspace_k(double lo, double hi, int num, int k) {
    if (k == num - 1) return hi;
    double step = (hi - lo) / (num - 1);
    return (double)k * step + lo;
}

/* _rpetro_circ_generic / _rpetro_ellip_generic: coarse scan for a sign
 * change (the curve of growth need not be monotonic), then Brent. */
static double rpetro(mctx *c, double x, double y, int ellip, double elong, double theta) {
    petro_arg p = { c, x, y, elong, theta, ellip };
    double diag = sqrt((double)c->nx * c->nx + (double)c->ny * c->ny);
    double lo = c->o->annulus_width, hi = ellip ? diag * elong : diag;
    double rmin = NAN, rmax = NAN;
    for (int k = 0; k < 100; k++) {
        double r = linspace_k(lo, hi, 100, k);
        double v = petro_fn(r, &p);
        if (v == 0) return r;
        if (v > 0) { rmin = r; continue; }
        if (isnan(rmin)) {
            raise_flag(c, 2, GX_MORPH_W_PETRO);
            return lo;
        }
        rmax = r;
        break;
    }
    if (isnan(rmax)) {
        raise_flag(c, 2, GX_MORPH_W_PETRO);
        return hi;
    }
    int ok;
    double r = gxm_brentq(petro_fn, &p, rmin, rmax, 1e-6, &ok);
    if (!ok) raise_flag(c, 2, GX_MORPH_W_PETRO);
    return r;
}

/* --------------------------------------------------------------- sky box */
/* _slice_skybox: first s×s box (row-major, i < ny − s, j < nx − s) free of
 * sources and user-masked pixels; s = 32, 16, ..., 2. A 2-D prefix count
 * of "not sky" pixels makes each test O(1). */
static void find_skybox(mctx *c) {
    int ny = c->ny, nx = c->nx;
    int32_t *cnt = c->lab;  /* (ny+1)×(nx+1) ints fit: lab has n + ny + nx + 1 */
    for (int j = 0; j <= nx; j++) cnt[j] = 0;
    for (int i = 1; i <= ny; i++) {
        cnt[(size_t)i * (nx + 1)] = 0;
        for (int j = 1; j <= nx; j++)
            cnt[(size_t)i * (nx + 1) + j] = c->skybad[(size_t)(i - 1) * nx + j - 1] +
                                            cnt[(size_t)(i - 1) * (nx + 1) + j] +
                                            cnt[(size_t)i * (nx + 1) + j - 1] -
                                            cnt[(size_t)(i - 1) * (nx + 1) + j - 1];
    }
    int s = c->o->skybox_size;
    c->sky_ok = 0;
    for (;;) {
        for (int i = 0; i < ny - s; i++)
            for (int j = 0; j < nx - s; j++) {
                size_t w = (size_t)nx + 1;
                int32_t bad = cnt[(i + s) * w + j + s] - cnt[i * w + j + s] - cnt[(i + s) * w + j] +
                              cnt[i * w + j];
                if (bad == 0) {
                    c->sky_ok = 1; c->sky_i = i; c->sky_j = j; c->sky_s = s;
                    return;
                }
            }
        if (s <= 2) {
            raise_flag(c, 2, GX_MORPH_W_SKYBOX);
            return;
        }
        s /= 2;
    }
}

/* Copies the sky box (float32 values) row-major into f. */
static void skybox_copy(const mctx *c, float *f) {
    int s = c->sky_s;
    for (int i = 0; i < s; i++)
        for (int j = 0; j < s; j++)
            f[i * s + j] = (float)c->img[(size_t)(c->sky_i + i) * c->nx + c->sky_j + j];
}

/* numpy's np.sum over an s×s strided float32 view: pairwise per row,
 * rows accumulated in order. */
static float rows_sum_f(const float *f, int s) {
    float acc = 0.0f;
    for (int i = 0; i < s; i++) acc += gxm_pairwise_f(f + (size_t)i * s, s);
    return acc;
}

static int cmp_f(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* sky_mean, sky_median, sky_sigma, _sky_asymmetry (float32 like numpy). */
static void sky_stats(mctx *c, gx_morph_result *r, float *f) {
    if (!c->sky_ok) {
        r->sky_mean = r->sky_median = r->sky_sigma = NOVAL;
        r->skybox_size = 0;
        return;
    }
    int s = c->sky_s, n = s * s;
    skybox_copy(c, f);
    float mean = rows_sum_f(f, s) / (float)n;
    float *d = f + n;
    for (int k = 0; k < n; k++) { d[k] = f[k] - mean; d[k] = d[k] * d[k]; }
    float var = gxm_pairwise_f(d, n) / (float)n;
    for (int k = 0; k < n; k++) d[k] = fabsf(f[n - 1 - k] - f[k]);  /* bkg[::-1, ::-1] − bkg */
    c->sky_asym = gxm_pairwise_f(d, n) / (float)n;
    memcpy(d, f, (size_t)n * sizeof *d);
    qsort(d, (size_t)n, sizeof *d, cmp_f);
    float med = (d[n / 2 - 1] + d[n / 2]) / 2.0f;
    r->sky_mean = mean;
    r->sky_median = med;
    r->sky_sigma = sqrtf(var);
    r->skybox_size = s;
}

/* _sky_smoothness for box-car k (float32). */
static double sky_smoothness(mctx *c, int k, float *f) {
    int s = c->sky_s, n = s * s;
    skybox_copy(c, f);
    /* t3 holds 5 stamp-sized double planes and s² < stamp size: input in
     * plane 0, smoothed in plane 1, floats (f, caller's) from plane 2 on. */
    double *in = c->t3, *sm = c->t3 + c->n;
    for (int q = 0; q < n; q++) in[q] = f[q];
    gxm_uniform_filter(in, sm, s, s, k, 1, c->fw);
    float *d = f + n;
    for (int q = 0; q < n; q++) {
        float v = f[q] - (float)sm[q];
        d[q] = v < 0 ? 0.0f : v;
    }
    return gxm_pairwise_f(d, n) / (float)n;
}

/* ------------------------------------------------------------- asymmetry */
typedef struct { mctx *c; double r; int nfev; } asym_arg;

/* _asymmetry_function(center, image, 'cas'). */
static double asym_fn(const double *ctr, void *arg) {
    asym_arg *a = arg;
    mctx *c = a->c;
    int ny = c->ny, nx = c->nx;
    double xc = ctr[0], yc = ctr[1];
    a->nfev++;
    if (xc < 0 || xc >= nx || yc < 0 || yc >= ny) {
        raise_flag(c, 1, GX_MORPH_W_ASYM_BOUNDS);
        return 100.0;
    }
    gxm_ap ap = gxm_circle(xc, yc, a->r);
    /* Only the aperture's bounding box matters: fill |I| and |I180 − I|
     * there (zero on mask ∪ rot180(mask)), leave the rest untouched. */
    int i0 = (int)floor(yc - a->r + 0.5), i1 = (int)ceil(yc + a->r + 0.5);
    int j0 = (int)floor(xc - a->r + 0.5), j1 = (int)ceil(xc + a->r + 0.5);
    if (i0 < 0) i0 = 0;
    if (j0 < 0) j0 = 0;
    if (i1 > ny) i1 = ny;
    if (j1 > nx) j1 = nx;
    const double *I = c->img;
    /* 2·yc − i and 2·xc − j are exact in double, so the fractional parts
     * (bilinear weights) are the same for every pixel and the integer
     * parts shift by one per row/column: precompute them once. */
    double fr = 2.0 * yc, fc = 2.0 * xc;
    double dr = fr - floor(fr), dc = fc - floor(fc);
    long rb = (long)floor(fr), cb = (long)floor(fc);
    int rceil = dr != 0, cceil = dc != 0;
    long rn = lround(fr), cn = lround(fc);  /* nearest (mask, skimage order 0) */
    for (int i = i0; i < i1; i++) {
        long r0 = rb - i, r1 = r0 + rceil, ri = rn - i;
        /* lround(2yc − i) equals lround(2yc) − i except at exact .5 ties
         * of a negative argument; those rows fall outside the image. */
        int r0ok = r0 >= 0 && r0 < ny, r1ok = r1 >= 0 && r1 < ny, riok = ri >= 0 && ri < ny;
        for (int j = j0; j < j1; j++) {
            size_t p = (size_t)i * nx + j;
            long c0 = cb - j, c1 = c0 + cceil, ci = cn - j;
            int m180 = riok && ci >= 0 && ci < nx && c->mask[(size_t)ri * nx + ci];
            int ms = c->mask[p] || m180;
            c->b1[p] = (uint8_t)ms;
            if (ms) { c->t1[p] = 0; c->t2[p] = 0; continue; }
            int c0ok = c0 >= 0 && c0 < nx, c1ok = c1 >= 0 && c1 < nx;
            double tl = r0ok && c0ok ? I[(size_t)r0 * nx + c0] : 0.0;
            double tr = r0ok && c1ok ? I[(size_t)r0 * nx + c1] : 0.0;
            double bl = r1ok && c0ok ? I[(size_t)r1 * nx + c0] : 0.0;
            double br = r1ok && c1ok ? I[(size_t)r1 * nx + c1] : 0.0;
            double top = (1 - dc) * tl + dc * tr;
            double bot = (1 - dc) * bl + dc * br;
            double v180 = (1 - dr) * top + dr * bot;
            c->t1[p] = fabs(I[p]);
            c->t2[p] = fabs(v180 - I[p]);
        }
    }
    const double *ims[2] = { c->t1, c->t2 };
    double s[2], area;
    if (!gxm_ap_sums(&ap, ims, 2, ny, nx, c->b1, s, &area)) s[0] = 0;
    if (s[0] == 0.0) {
        raise_flag(c, 1, GX_MORPH_W_ASYM_BOUNDS);
        return 100.0;
    }
    if (!c->sky_ok) return s[1] / s[0];
    return (s[1] - area * (double)c->sky_asym) / s[0];
}

/* _asymmetry_center: Nelder–Mead from the centroid; if it drifts more than
 * 0.25·rp_c0, again from the brightest pixel; if that drifts too, the
 * centroid (flag 2). */
static void asym_center(mctx *c, double out[2], int *nfev) {
    asym_arg a = { c, c->o->petro_extent_cas * c->rp_c0, 0 };
    double x[2] = { c->xc, c->yc };
    gxm_fmin2(asym_fn, &a, x, 1e-6, 1e-4);
    double dist = c->o->petro_fraction_cas * c->rp_c0;
    if (hypot(x[0] - c->xc, x[1] - c->yc) > dist) {
        raise_flag(c, 1, GX_MORPH_W_ASYM_DRIFT);
        double b[2] = { c->xmax_px, c->ymax_px };
        x[0] = b[0]; x[1] = b[1];
        gxm_fmin2(asym_fn, &a, x, 1e-6, 1e-4);
        if (hypot(x[0] - b[0], x[1] - b[1]) > dist) {
            raise_flag(c, 2, GX_MORPH_W_ASYM_CENTROID);
            x[0] = c->xc; x[1] = c->yc;
        }
    }
    int ic = (int)x[1], jc = (int)x[0];
    if (c->img[(size_t)ic * c->nx + jc] == 0) raise_flag(c, 2, GX_MORPH_W_ASYM_MASKED);
    out[0] = x[0];
    out[1] = x[1];
    *nfev = a.nfev;
}

/* ------------------------------------------------------------------ shape */
/* _covariance_generic + eigenvalues, ellipticity, elongation, orientation. */
static void shape_at(mctx *c, double xc, double yc, double *elong, double *ellip, double *theta) {
    double m0 = 0, xx = 0, xy = 0, yy = 0;
    for (int i = 0; i < c->ny; i++)
        for (int j = 0; j < c->nx; j++) {
            double v = c->nobg[(size_t)i * c->nx + j];
            double dx = j - xc, dy = i - yc;
            m0 += v; xx += v * dx * dx; xy += v * dx * dy; yy += v * dy * dy;
        }
    double x2 = xx / m0, y2 = yy / m0, cxy = xy / m0;
    if (x2 <= 0 || y2 <= 0) raise_flag(c, 2, GX_MORPH_W_MOMENTS);
    /* SExtractor's regularisation of infinitely thin sources. */
    const double rho = 1.0 / 12.0;
    for (int it = 0; fabs(x2 * y2 - cxy * cxy) < rho * rho && it < 1000000; it++) {
        x2 += x2 >= 0 ? rho : -rho;
        y2 += y2 >= 0 ? rho : -rho;
    }
    double h = 0.5 * (x2 + y2), d = sqrt(0.25 * (x2 - y2) * (x2 - y2) + cxy * cxy);
    double l1 = fabs(h + d), l2 = fabs(h - d);
    if (l2 > l1) { double t = l1; l1 = l2; l2 = t; }
    double a = sqrt(l1), b = sqrt(l2);
    *ellip = 1.0 - b / a;
    *elong = a / b;
    *theta = 0.5 * atan2(2.0 * cxy, x2 - y2);
}

/* ------------------------------------------------------------ radii, C */
typedef struct { mctx *c; double x, y, frac, total; } frac_arg;

static double frac_fn(double r, void *arg) {
    frac_arg *f = arg;
    if (r == 0) return -f->frac;
    gxm_ap ap = gxm_circle(f->x, f->y, r);
    const double *im[1] = { f->c->img };
    double s = 0;
    gxm_ap_sums(&ap, im, 1, f->c->ny, f->c->nx, NULL, &s, NULL);
    return fabs(s) / f->total - f->frac;
}

/* _radius_at_fraction_of_total_circ via _radius_at_fraction_of_total_cas. */
static double radius_frac(mctx *c, double x, double y, double r_total, double frac) {
    gxm_ap ap = gxm_circle(x, y, r_total);
    const double *im[1] = { c->img };
    double tot = 0;
    gxm_ap_sums(&ap, im, 1, c->ny, c->nx, NULL, &tot, NULL);
    double r = r_total;
    if (tot == 0) {
        raise_flag(c, 2, GX_MORPH_W_RADII);
    } else {
        if (tot < 0) { raise_flag(c, 2, GX_MORPH_W_RADII); tot = fabs(tot); }
        frac_arg f = { c, x, y, frac, tot };
        double rmin = 0, rmax = NAN;
        for (int k = 0; k < 100; k++) {
            double rk = linspace_k(0.0, r_total, 100, k);
            if (frac_fn(rk, &f) <= 0) rmin = rk;
            else { rmax = rk; break; }
        }
        int ok = 0;
        r = isnan(rmax) ? NAN : gxm_brentq(frac_fn, &f, rmin, rmax, 1e-6, &ok);
        if (!ok) r = NAN;
    }
    if (isnan(r) || r <= 0) {
        raise_flag(c, 2, GX_MORPH_W_RADII);
        return NOVAL;
    }
    return r;
}

/* ----------------------------------------------------------------- Gini */
/* _segmap_gini: Gaussian blur σ = 0.2·rp_ellip, threshold = mean of the
 * blurred image in the elliptical annulus rp_ellip ± ½ about the centroid
 * (no mask, full geometric area), 8-connected part holding the maximum. */
static gx_status gini_segmap(mctx *c, double rpe, double elong, double theta) {
    double sigma = c->o->petro_fraction_gini * rpe;
    int need = gxm_gaussian_work(c->ny, c->nx, sigma, 4.0);
    double *w = malloc((size_t)need * sizeof *w);
    if (!w) return GX_ERR_NOMEM;
    double *sm = c->t1;
    gxm_gaussian_filter(c->img, sm, c->ny, c->nx, sigma, 4.0, 0, 1, w);
    free(w);
    double a_out = rpe + 0.5 * c->o->annulus_width;
    gxm_ap ann = gxm_ellipse(c->xc, c->yc, a_out, a_out / elong, theta);
    ann.a_in = rpe - 0.5 * c->o->annulus_width;
    const double *im[1] = { sm };
    double s = NAN;
    if (!gxm_ap_sums(&ann, im, 1, c->ny, c->nx, NULL, &s, NULL)) s = NAN;
    double thr = s / gxm_ap_area(&ann);
    size_t n = c->n, nabove = 0, pmax = 0;
    for (size_t p = 0; p < n; p++) {
        c->b2[p] = sm[p] >= thr;
        nabove += c->b2[p];
        if (sm[p] > sm[pmax]) pmax = p;
    }
    int nf = gxm_label8(c->b2, c->ny, c->nx, c->lab, c->stack);
    if (nf == 0 || nabove == n) {
        raise_flag(c, 2, GX_MORPH_W_GINI_SEGMAP);
        memcpy(c->gini_seg, c->b2, n);
        return GX_OK;
    }
    if (nf > 1) raise_flag(c, 1, GX_MORPH_W_GINI_DISJOINT);
    int32_t keep = c->lab[pmax];
    for (size_t p = 0; p < n; p++) c->gini_seg[p] = keep != 0 && c->lab[p] == keep;
    return GX_OK;
}

static double gini_coef(mctx *c) {
    double *v = c->t2;
    int64_t m = 0;
    for (size_t p = 0; p < c->n; p++)
        if (c->gini_seg[p]) v[m++] = fabs(c->img[p]);
    gxm_sort(v, m);
    float *vf = (float *)c->t3;
    for (int64_t k = 0; k < m; k++) vf[k] = (float)v[k];
    float den = m > 0 ? gxm_pairwise_f(vf, m) : 0.0f;
    if (m <= 1 || den == 0) {
        raise_flag(c, 2, GX_MORPH_W_GINI_M20);
        return NOVAL;
    }
    double *t = c->t1;
    for (int64_t k = 0; k < m; k++) t[k] = (double)(2 * (k + 1) - m - 1) * v[k];
    double num = gxm_pairwise_d(t, m);
    return num / (double)((float)(m - 1) * den);  /* float(n-1)·float32 stays float32 */
}

/* m20: 20% brightest pixels of the Gini segmap, second moments about the
 * segmap's own centroid. */
static double m20_coef(mctx *c) {
    size_t n = c->n;
    double *J = c->t2;
    double m0 = 0, mx = 0, my = 0;
    int any = 0;
    for (size_t p = 0; p < n; p++) {
        J[p] = c->gini_seg[p] ? c->img[p] : 0.0;
        any |= c->gini_seg[p];
    }
    if (!any) return NOVAL;
    for (int i = 0; i < c->ny; i++)
        for (int j = 0; j < c->nx; j++) {
            double v = J[(size_t)i * c->nx + j];
            m0 += v; mx += v * j; my += v * i;
        }
    if (m0 <= 0) {
        raise_flag(c, 2, GX_MORPH_W_GINI_M20);
        return NOVAL;
    }
    double xc = mx / m0, yc = my / m0;
    /* statmorph sorts the whole stamp (zeros included); the zeros change
     * neither the cumulative sum nor the threshold, so only the segmap's
     * pixels are sorted (the total's rounding may differ by an ulp). */
    double *sorted = c->t3;
    size_t ns = 0;
    for (size_t p = 0; p < n; p++)
        if (J[p] != 0) sorted[ns++] = J[p];
    gxm_sort(sorted, (int64_t)ns);
    double tot = gxm_pairwise_d(sorted, (int64_t)ns), cum = 0;
    double thr = NAN;
    for (size_t k = 0; k < ns; k++) {
        cum += sorted[k];
        if (cum / tot >= 0.8) { thr = sorted[k]; break; }
    }
    if (isnan(thr)) {
        raise_flag(c, 2, GX_MORPH_W_GINI_M20);
        return NOVAL;
    }
    double a2 = 0, b2 = 0, a20 = 0, b20 = 0;
    for (int i = 0; i < c->ny; i++)
        for (int j = 0; j < c->nx; j++) {
            double v = J[(size_t)i * c->nx + j];
            double dx2 = (j - xc) * (j - xc), dy2 = (i - yc) * (i - yc);
            a2 += v * dx2; b2 += v * dy2;
            if (v >= thr) { a20 += v * dx2; b20 += v * dy2; }
        }
    double mt = a2 + b2, m20 = a20 + b20;
    if (m20 <= 0 || mt <= 0) {
        raise_flag(c, 2, GX_MORPH_W_GINI_M20);
        return NOVAL;
    }
    return log10(m20 / mt);
}

/* ------------------------------------------------------------ smoothness */
static double smoothness(mctx *c, double x, double y, double rp, int *kout) {
    int k = (int)(c->o->petro_fraction_cas * rp);
    *kout = k;
    if (k <= 1) c->warn |= GX_MORPH_W_S_UNRESOLVED;
    double *sm = c->t1, *diff = c->t2;
    gxm_uniform_filter(c->img, sm, c->ny, c->nx, k, 1, c->fw);
    for (size_t p = 0; p < c->n; p++) {
        float v = (float)c->img[p] - (float)sm[p];
        diff[p] = v < 0 ? 0.0 : v;
    }
    gxm_ap ap = gxm_circle(x, y, c->o->petro_extent_cas * rp);
    ap.a_in = c->o->petro_fraction_cas * rp;
    const double *ims[2] = { c->img, diff };
    double s[2];
    if (!gxm_ap_sums(&ap, ims, 2, c->ny, c->nx, NULL, s, NULL)) s[0] = 0;
    if (s[0] <= 0) {
        raise_flag(c, 2, GX_MORPH_W_SMOOTHNESS);
        return NOVAL;
    }
    double S;
    if (!c->sky_ok) {
        S = s[1] / s[0];
    } else {
        float bs = (float)sky_smoothness(c, k, (float *)(c->t3 + 2 * c->n));
        S = (s[1] - gxm_ap_area(&ap) * (double)bs) / s[0];
    }
    if (!isfinite(S)) {
        raise_flag(c, 2, GX_MORPH_W_SMOOTHNESS);
        return NOVAL;
    }
    return S;
}

/* ------------------------------------------------------------ MID segmap */
typedef struct { mctx *c; const float *sorted; int64_t m; const double *nn; } mid_arg;

/* _segmap_mid_main_clump: pixels >= the q-quantile, 8-connected to the
 * brightest pixel. Leaves the clump in c->b2; returns its size. */
static size_t mid_clump(mid_arg *a, double q, float *thr_out) {
    mctx *c = a->c;
    float thr = a->sorted[(int64_t)(q * (double)(a->m - 1))];
    for (size_t p = 0; p < c->n; p++) c->b1[p] = a->nn[p] >= thr;
    gxm_label8(c->b1, c->ny, c->nx, c->lab, c->stack);
    int32_t keep = c->lab[(size_t)c->ymax_px * c->nx + c->xmax_px];
    size_t cnt = 0;
    for (size_t p = 0; p < c->n; p++) {
        c->b2[p] = keep != 0 && c->lab[p] == keep;
        cnt += c->b2[p];
    }
    *thr_out = thr;
    return cnt;
}

static double mid_fn(double q, void *arg) {
    mid_arg *a = arg;
    mctx *c = a->c;
    float thr;
    size_t cnt = mid_clump(a, q, &thr);
    float *v = (float *)c->t3;
    size_t k = 0;
    for (size_t p = 0; p < c->n; p++)
        if (c->b2[p]) v[k++] = (float)a->nn[p];
    float mean = cnt ? gxm_pairwise_f(v, (int64_t)k) / (float)k : 0.0f;
    float ratio;
    if (mean == 0) {
        ratio = 1.0f;
        raise_flag(c, 2, GX_MORPH_W_MID);
    } else {
        ratio = thr / mean;
    }
    return (double)(ratio - (float)c->o->eta);
}

/* _segmap_mid, then _check_segmaps (Gini vs MID overlap). */
static void check_segmaps(mctx *c) {
    double *nn = c->t1;
    float *sorted = (float *)c->t2;
    int64_t m = 0;
    for (size_t p = 0; p < c->n; p++) {
        nn[p] = c->nobg[p] > 0 ? c->nobg[p] : 0.0;
        if (c->seg[p] && !c->mask[p]) ((double *)c->t3)[m++] = nn[p];
    }
    gxm_sort(c->t3, m);
    for (int64_t k = 0; k < m; k++) sorted[k] = (float)c->t3[k];
    uint8_t *mid = c->b3;
    mid_arg a = { c, sorted, m, nn };
    if (m == 0) {
        memcpy(mid, c->gini_seg, c->n);
    } else if (mid_fn(0.0, &a) > 0.0) {
        memcpy(mid, c->gini_seg, c->n);  /* MID segmap undefined: statmorph uses Gini's */
    } else {
        int ok;
        double q = gxm_brentq(mid_fn, &a, 0.0, 1.0, 1.0 / (double)m, &ok);
        if (!ok || isnan(q)) q = 0.0;
        float thr;
        mid_clump(&a, q, &thr);
        double *fl = c->t3, *sm = c->t3 + c->n;
        for (size_t p = 0; p < c->n; p++) fl[p] = c->b2[p];
        gxm_uniform_filter(fl, sm, c->ny, c->nx, 3, 0, c->fw);
        size_t pb = (size_t)c->ymax_px * c->nx + c->xmax_px;
        for (size_t p = 0; p < c->n; p++) c->b1[p] = sm[p] > 0.5;
        if (!c->b1[pb]) {
            c->b1[pb] = 1;
            raise_flag(c, 2, GX_MORPH_W_MID);
        }
        gxm_label8(c->b1, c->ny, c->nx, c->lab, c->stack);
        int32_t keep = c->lab[pb];
        for (size_t p = 0; p < c->n; p++) mid[p] = c->lab[p] == keep;
    }
    size_t ag = 0, am = 0, ov = 0;
    for (size_t p = 0; p < c->n; p++) {
        ag += c->gini_seg[p];
        am += mid[p];
        ov += c->gini_seg[p] && mid[p];
    }
    size_t amax = ag > am ? ag : am;
    if (amax == 0) raise_flag(c, 2, GX_MORPH_W_GINI_SEGMAP);
    else if ((double)ov / (double)amax < c->o->segmap_overlap_ratio)
        raise_flag(c, 1, GX_MORPH_W_SEGMAPS_DIFFER);
}

/* ------------------------------------------------------------ the stamp */
/* _slice_stamp from the segment's bounding box. Returns 0 if label absent. */
static int stamp_slice(const int32_t *seg, int32_t label, int ny, int nx, const gx_morph_opts *o,
                       int *y0, int *y1, int *x0, int *x1) {
    int xmin = nx, xmax = -1, ymin = ny, ymax = -1;
    for (int i = 0; i < ny; i++)
        for (int j = 0; j < nx; j++)
            if (seg[(size_t)i * nx + j] == label) {
                if (j < xmin) xmin = j;
                if (j > xmax) xmax = j;
                if (i < ymin) ymin = i;
                if (i > ymax) ymax = i;
            }
    if (xmax < 0) return 0;
    int dx = xmax + 1 - xmin, dy = ymax + 1 - ymin;
    int xc = xmin + dx / 2, yc = ymin + dy / 2;
    int dist = (int)((dx > dy ? dx : dy) * o->cutout_extent / 2.0);
    int minc = o->min_cutout_size - o->min_cutout_size % 2;
    if (dist < minc / 2) dist = minc / 2;
    *y0 = yc - dist < 0 ? 0 : yc - dist;
    *y1 = yc + dist > ny ? ny : yc + dist;
    *x0 = xc - dist < 0 ? 0 : xc - dist;
    *x1 = xc + dist > nx ? nx : xc + dist;
    return 1;
}

/* Outliers (Lotz et al. 2004) as statmorph's _get_badpixels: mean and
 * variance of the 8 neighbours (astropy convolve, boundary 'extend', NaN
 * filled with 0, image² squared in float32). */
static int bad_pixels(const float *im, int ny, int nx, int sx, int y0, int x0, double nsig,
                      uint8_t *bad) {
    int count = 0;
    for (int i = 0; i < ny; i++)
        for (int j = 0; j < nx; j++) {
            double m1 = 0, m2 = 0;
            for (int di = -1; di <= 1; di++)
                for (int dj = -1; dj <= 1; dj++) {
                    int a = i + di < 0 ? 0 : (i + di >= ny ? ny - 1 : i + di);
                    int b = j + dj < 0 ? 0 : (j + dj >= nx ? nx - 1 : j + dj);
                    float v = im[(size_t)(y0 + a) * sx + x0 + b];
                    float v2 = v * v;
                    double w = (di == 0 && dj == 0) ? 0.0 : 0.125;
                    m1 += (isnan(v) ? 0.0 : (double)v) * w;
                    m2 += (isnan(v2) ? 0.0 : (double)v2) * w;
                }
            double sd = sqrt(m2 - m1 * m1);
            float v = im[(size_t)(y0 + i) * sx + x0 + j];
            int b = fabs((double)v - m1) > nsig * sd;
            bad[(size_t)i * nx + j] = (uint8_t)b;
            count += b;
        }
    return count;
}

/* ------------------------------------------------------------ the driver */
static gx_status check_args(const float *image, int ny, int nx, gx_morph_result *out, gx_err *err) {
    if (!out) return gx_err_set(err, GX_ERR_INVALID, "morph: result pointer is NULL");
    if (!image) return gx_err_set(err, GX_ERR_INVALID, "morph: image is NULL");
    if (ny <= 0 || nx <= 0 || ny > GX_MORPH_MAX_SIDE || nx > GX_MORPH_MAX_SIDE)
        return gx_err_set(err, GX_ERR_INVALID, "morph: image shape %dx%d (each side 1..%d)", ny,
                          nx, GX_MORPH_MAX_SIDE);
    return GX_OK;
}

static gx_status check_opts(const gx_morph_opts *o, gx_err *err) {
    if (!(o->eta > 0 && o->eta < 1)) return gx_err_set(err, GX_ERR_INVALID, "morph opts: eta %g not in (0,1)", o->eta);
    if (!(o->annulus_width > 0)) return gx_err_set(err, GX_ERR_INVALID, "morph opts: annulus_width %g <= 0", o->annulus_width);
    if (!(o->petro_extent_cas > 0) || !(o->petro_fraction_cas > 0) || !(o->petro_fraction_gini > 0))
        return gx_err_set(err, GX_ERR_INVALID, "morph opts: petro_extent_cas/petro_fraction_cas/petro_fraction_gini must be > 0");
    if (o->skybox_size < 2) return gx_err_set(err, GX_ERR_INVALID, "morph opts: skybox_size %d < 2", o->skybox_size);
    if (!(o->cutout_extent >= 1)) return gx_err_set(err, GX_ERR_INVALID, "morph opts: cutout_extent %g < 1", o->cutout_extent);
    if (o->min_cutout_size < 2) return gx_err_set(err, GX_ERR_INVALID, "morph opts: min_cutout_size %d < 2", o->min_cutout_size);
    return GX_OK;
}

static void stamp_fill(mctx *c, const float *image, const int32_t *segmap, int32_t label,
                       const uint8_t *mask, int nx_full, int y0, int x0, uint8_t *bad) {
    for (int i = 0; i < c->ny; i++)
        for (int j = 0; j < c->nx; j++) {
            size_t p = (size_t)i * c->nx + j, q = (size_t)(y0 + i) * nx_full + x0 + j;
            float v = image[q];
            int32_t s = segmap[q];
            int um = mask && mask[q];
            int m = (s != 0 && s != label) || um || !isfinite(v) || (bad && bad[p]);
            c->mask[p] = (uint8_t)m;
            c->seg[p] = s == label;
            c->skybad[p] = s != 0 || um;
            c->raw[p] = v;
            c->img[p] = m ? 0.0 : (double)v;
            c->nobg[p] = (m || s != label) ? 0.0 : (double)v;
        }
}

static gx_status measure_stamp(mctx *c, gx_morph_result *r);

gx_status gx_morph_measure(const float *image, const int32_t *segmap, int32_t label,
                           const uint8_t *mask, int ny, int nx, const gx_morph_opts *opts,
                           gx_morph_result *out, gx_err *err) {
    gx_status st = check_args(image, ny, nx, out, err);
    if (st) return st;
    if (!segmap) return gx_err_set(err, GX_ERR_INVALID, "morph: segmap is NULL (use gx_morph_measure_auto)");
    gx_morph_opts dflt = gx_morph_opts_default();
    const gx_morph_opts *o = opts ? opts : &dflt;
    if ((st = check_opts(o, err))) return st;
    memset(out, 0, sizeof *out);
    int y0, y1, x0, x1;
    if (label <= 0 || !stamp_slice(segmap, label, ny, nx, o, &y0, &y1, &x0, &x1))
        return gx_err_set(err, GX_ERR_INVALID, "morph: label %d is not in the segmap", (int)label);
    mctx c;
    memset(&c, 0, sizeof c);
    c.o = o;
    c.ny = y1 - y0;
    c.nx = x1 - x0;
    c.n = (size_t)c.ny * c.nx;
    size_t n = c.n, side = (size_t)(c.ny > c.nx ? c.ny : c.nx);
    /* doubles: img nobg raw t1 t2 + t3 (3n: scratch, sorted copies, sky
     * floats) + fw (n + 2·side + 64); bytes: 7 masks; ints: lab + stack. */
    size_t nd = 11 * n + 2 * side + 64;
    size_t ni = 2 * (n + side + 2) + (size_t)(c.ny + 1) * (c.nx + 1);
    char *blk = malloc(nd * sizeof(double) + ni * sizeof(int32_t) + 7 * n + 16);
    if (!blk) return gx_err_set(err, GX_ERR_NOMEM, "morph: %zu-pixel stamp work buffers", n);
    double *d = (double *)blk;
    c.img = d; c.nobg = d + n; c.raw = d + 2 * n; c.t1 = d + 3 * n; c.t2 = d + 4 * n;
    c.t3 = d + 5 * n;   /* 5n..10n (+ sky box room) */
    c.fw = d + 10 * n;
    int32_t *ip = (int32_t *)(d + nd);
    c.lab = ip;
    c.stack = ip + (n + side + 2) + (size_t)(c.ny + 1) * (c.nx + 1);
    uint8_t *bp = (uint8_t *)(ip + ni);
    c.mask = bp; c.seg = bp + n; c.skybad = bp + 2 * n; c.gini_seg = bp + 3 * n;
    c.b1 = bp + 4 * n; c.b2 = bp + 5 * n;
    uint8_t *bad = bp + 6 * n;
    c.b3 = bad;  /* the outlier map is only needed until stamp_fill */
    out->num_badpixels = -1;
    if (o->n_sigma_outlier > 0)
        out->num_badpixels = bad_pixels(image, c.ny, c.nx, nx, y0, x0, o->n_sigma_outlier, bad);
    stamp_fill(&c, image, segmap, label, mask, nx, y0, x0, o->n_sigma_outlier > 0 ? bad : NULL);
    out->xmin_stamp = x0; out->ymin_stamp = y0; out->nx_stamp = c.nx; out->ny_stamp = c.ny;
    st = measure_stamp(&c, out);
    free(blk);
    if (st) return gx_err_set(err, st, "morph: out of memory in a %zu-pixel stamp", n);
    return GX_OK;
}

/* Steps 1–11 of the spec on a filled stamp. */
static gx_status measure_stamp(mctx *c, gx_morph_result *r) {
    size_t n = c->n;
    /* total flux of the segment (np.sum of a float32 array) */
    float *f = (float *)c->t3;
    size_t nfin = 0;
    for (size_t p = 0; p < n; p++) {
        f[p] = (float)c->nobg[p];
        nfin += isfinite(c->raw[p]) != 0;
    }
    if (nfin == 0) {
        result_fail(r, GX_MORPH_W_NO_FINITE, "no finite pixel in the stamp");
        return GX_OK;
    }
    if (!(gxm_pairwise_f(f, (int64_t)n) > 0)) {
        result_fail(r, GX_MORPH_W_NONPOS_FLUX, "total flux of the segment is not positive");
        return GX_OK;
    }
    /* centroid and brightest pixel */
    double m0 = 0, mx = 0, my = 0;
    size_t pmax = 0;
    int have = 0;
    for (int i = 0; i < c->ny; i++)
        for (int j = 0; j < c->nx; j++) {
            size_t p = (size_t)i * c->nx + j;
            double v = c->nobg[p];
            m0 += v; mx += v * j; my += v * i;
            if (!have || (float)v > (float)c->nobg[pmax]) { pmax = p; have = 1; }
        }
    c->xc = mx / m0;
    c->yc = my / m0;
    if (c->yc < 0 || c->yc >= c->ny || c->xc < 0 || c->xc >= c->nx) {
        c->yc = c->ny / 2.0;
        c->xc = c->nx / 2.0;
        raise_flag(c, 2, GX_MORPH_W_CENTROID);
    }
    if (c->img[(size_t)(int)c->yc * c->nx + (int)c->xc] == 0) raise_flag(c, 2, GX_MORPH_W_CENTROID);
    c->xmax_px = (int)(pmax % c->nx);
    c->ymax_px = (int)(pmax / c->nx);
    r->xc_centroid = c->xc + r->xmin_stamp;
    r->yc_centroid = c->yc + r->ymin_stamp;
    shape_at(c, c->xc, c->yc, &r->elongation_centroid, &r->ellipticity_centroid,
             &r->orientation_centroid);

    /* sky box, Petrosian radius about the centroid, asymmetry centre */
    find_skybox(c);
    sky_stats(c, r, (float *)(c->t3 + 2 * n));
    c->rp_c0 = rpetro(c, c->xc, c->yc, 0, 1.0, 0.0);
    double ac[2];
    asym_center(c, ac, &r->asym_nfev);
    r->xc_asymmetry = ac[0] + r->xmin_stamp;
    r->yc_asymmetry = ac[1] + r->ymin_stamp;
    shape_at(c, ac[0], ac[1], &r->elongation_asymmetry, &r->ellipticity_asymmetry,
             &r->orientation_asymmetry);
    double el = r->elongation_asymmetry, th = r->orientation_asymmetry;

    /* Petrosian radii about the asymmetry centre, fluxes within 2 rp */
    r->rpetro_circ = rpetro(c, ac[0], ac[1], 0, 1.0, 0.0);
    r->rpetro_ellip = rpetro(c, ac[0], ac[1], 1, el, th);
    {
        const double *im[1] = { c->img };
        double s = 0;
        gxm_ap ap = gxm_circle(ac[0], ac[1], 2.0 * r->rpetro_circ);
        gxm_ap_sums(&ap, im, 1, c->ny, c->nx, NULL, &s, NULL);
        r->flux_circ = fabs(s);
        double a = 2.0 * r->rpetro_ellip;
        ap = gxm_ellipse(ac[0], ac[1], a, a / el, th);
        gxm_ap_sums(&ap, im, 1, c->ny, c->nx, NULL, &s, NULL);
        r->flux_ellip = fabs(s);
    }

    /* Gini, M20 and the two combinations */
    if (gini_segmap(c, r->rpetro_ellip, el, th)) return GX_ERR_NOMEM;
    r->gini = gini_coef(c);
    r->m20 = m20_coef(c);
    if (r->gini == NOVAL || r->m20 == NOVAL) {
        r->gini_m20_bulge = r->gini_m20_merger = NOVAL;
    } else {
        r->gini_m20_bulge = -0.693 * r->m20 + 4.95 * r->gini - 3.96;
        r->gini_m20_merger = 0.139 * r->m20 + 0.990 * r->gini - 0.327;
    }
    /* sn_per_pixel's validity check (the value itself needs a gain). */
    {
        int ok = 0;
        double ss = r->sky_sigma;
        for (size_t p = 0; p < n && !ok; p++)
            ok = c->gini_seg[p] && !c->mask[p] && c->img[p] >= 0 && (fabs(c->raw[p]) > 0 || ss != 0);
        if (!ok) raise_flag(c, 2, GX_MORPH_W_GINI_M20);
    }

    /* A (at the centre found above), r20/r50/r80, C, S */
    {
        asym_arg a = { c, c->o->petro_extent_cas * c->rp_c0, 0 };
        r->asymmetry = asym_fn(ac, &a);
    }
    double rup = c->o->petro_extent_cas * r->rpetro_circ;
    r->r20 = radius_frac(c, ac[0], ac[1], rup, 0.2);
    r->r50 = radius_frac(c, ac[0], ac[1], rup, 0.5);
    r->r80 = radius_frac(c, ac[0], ac[1], rup, 0.8);
    r->concentration = (r->r20 == NOVAL || r->r80 == NOVAL) ? NOVAL : 5.0 * log10(r->r80 / r->r20);
    r->smoothness = smoothness(c, ac[0], ac[1], r->rpetro_circ, &r->smooth_k);

    /* statmorph's closing checks */
    if (fabsf((float)r->sky_mean) > (float)r->sky_sigma) raise_flag(c, 2, GX_MORPH_W_NOT_BGSUB);
    check_segmaps(c);
    r->flag = c->flag;
    r->warn |= c->warn;
    return GX_OK;
}
