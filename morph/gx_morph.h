/*
 * gx_morph.h — non-parametric galaxy morphology measured the way statmorph
 * 0.7.2 measures it (spec/morphology.md §1), plus the distances used to
 * compare morphology distributions (SSIM, 1-Wasserstein; spec §2).
 *
 * Design
 * - One call measures one source: gx_morph_measure(image, segmap, label,
 *   mask) fills a gx_morph_result with every statistic and statmorph's flag.
 *   gx_morph_measure_auto() first builds the segmentation map with the
 *   paper's recipe (gx_morph_segment) when the caller has none.
 *   gx_morph_measure_batch() runs N cutouts over OpenMP (the daemon's and the
 *   two-models trainer's entry point: they only need this header).
 * - The library follows statmorph's algorithm step by step, not only its
 *   definitions: the same "postage stamp" around the segment, the same
 *   exact pixel/aperture overlaps as photutils' method='exact', scipy's
 *   Nelder–Mead (same initial simplex, same stopping rule) for the
 *   asymmetry centre, scipy's Brent root finder for the radii, the same
 *   boundary modes for the box and Gaussian filters. Where statmorph keeps
 *   an intermediate image in the input dtype (float32 here) the C code
 *   rounds it to float at the same point, so agreement is limited by
 *   summation order, not by a different method (see tests/unit/test_morph.c:
 *   the statmorph golden values are reproduced to statmorph's own 1e-5).
 * - Errors: a NULL pointer, non-positive size or an absurd size returns a
 *   gx_status with a message naming the argument. Anything about the *data*
 *   (empty, constant, all-NaN image, no source found, non-positive flux) is
 *   a measurement outcome, not an error: GX_OK with flag 4 (every statistic
 *   -99) and result->reason telling why. The library never aborts on data.
 *
 * Flags (statmorph's): 0 good, 1 suspect, 2 bad (values still returned),
 * 4 failed (values -99). result->warn has one bit per cause (GX_MORPH_W_*)
 * so a caller can tell *why*; gx_morph_warn_str() names a bit.
 * Not reproduced: flags that statmorph raises only from statistics this
 * library does not compute (MID multimode/intensity/deviation, shape and
 * outer asymmetry, rhalf/rmax, Sérsic fits). The Gini-vs-MID segmap
 * comparison (flag 1) *is* reproduced: the MID segmap is built for it.
 *
 * Smoothness at small radii (spec step 7): the box-car size is
 * k = int(0.25·rp_circ). When k ≤ 1 (rp_circ < 8 px, common for 64×64
 * cutouts of distant galaxies) the "smoothed" image equals the image, so
 * S = 0 exactly, in statmorph as here. The result then carries
 * GX_MORPH_W_S_UNRESOLVED (informational; it does not change the flag, as
 * in statmorph) and smooth_k = k, so callers can drop S instead of reading
 * 0 as "perfectly smooth". For k = 2..3 S is dominated by pixel noise.
 *
 * Coordinates: x = column, y = row, pixel centres at integers (as
 * statmorph/photutils). Positions in the result are relative to the input
 * image (not the stamp). Angles are radians, counter-clockwise from +x.
 */
#ifndef GX_MORPH_H
#define GX_MORPH_H

#include "gx.h"

#include <stddef.h>
#include <stdint.h>

/* Largest accepted image side: far above any cutout, small enough that
 * ny*nx*sizeof(double)*~12 work buffers cannot overflow. */
#define GX_MORPH_MAX_SIDE 8192

/* Flag values (statmorph). */
enum {
    GX_MORPH_GOOD = 0,
    GX_MORPH_SUSPECT = 1,
    GX_MORPH_BAD = 2,
    GX_MORPH_FAILED = 4
};

/* Causes; several may be set. The flag each raises is in brackets. */
enum {
    GX_MORPH_W_NONPOS_FLUX    = 1u << 0,  /* [4] sum of the segment <= 0 */
    GX_MORPH_W_NO_SOURCE      = 1u << 1,  /* [4] segmentation found no source */
    GX_MORPH_W_NO_FINITE      = 1u << 2,  /* [4] no finite pixel at all */
    GX_MORPH_W_CENTROID       = 1u << 3,  /* [2] centroid masked or out of range */
    GX_MORPH_W_PETRO          = 1u << 4,  /* [2] Petrosian radius at a limit / zero mean flux */
    GX_MORPH_W_SKYBOX         = 1u << 5,  /* [2] no source-free sky box: no background terms */
    GX_MORPH_W_ASYM_BOUNDS    = 1u << 6,  /* [1] minimiser tried to leave the stamp / zero flux */
    GX_MORPH_W_ASYM_DRIFT     = 1u << 7,  /* [1] asym. centre drifted: restarted at brightest pixel */
    GX_MORPH_W_ASYM_CENTROID  = 1u << 8,  /* [2] drifted again: centroid used */
    GX_MORPH_W_ASYM_MASKED    = 1u << 9,  /* [2] asymmetry centre on a masked/zero pixel */
    GX_MORPH_W_MOMENTS        = 1u << 10, /* [2] non-positive second moment */
    GX_MORPH_W_RADII          = 1u << 11, /* [2] r20/r80: total flux <= 0 or no root */
    GX_MORPH_W_SMOOTHNESS     = 1u << 12, /* [2] S undefined (flux <= 0 in annulus) */
    GX_MORPH_W_GINI_SEGMAP    = 1u << 13, /* [2] Gini segmap empty or full image */
    GX_MORPH_W_GINI_DISJOINT  = 1u << 14, /* [1] Gini segmap had several parts */
    GX_MORPH_W_GINI_M20       = 1u << 15, /* [2] too few pixels / bad moments for G or M20 */
    GX_MORPH_W_NOT_BGSUB      = 1u << 16, /* [2] |sky mean| > sky sigma */
    GX_MORPH_W_SEGMAPS_DIFFER = 1u << 17, /* [1] Gini and MID segmaps overlap < 25% */
    GX_MORPH_W_MID            = 1u << 18, /* [2] MID segmap needed the brightest pixel added */
    GX_MORPH_W_S_UNRESOLVED   = 1u << 19  /* [-] k = int(0.25 rp) <= 1: S = 0 by construction */
};
#define GX_MORPH_W_COUNT 20

typedef struct gx_morph_opts {
    double eta;                  /* Petrosian eta (0.2) */
    double annulus_width;        /* Petrosian annulus width in px (1.0) */
    double petro_extent_cas;     /* A, C aperture radius in rp_circ (1.5) */
    double petro_fraction_cas;   /* S box-car and inner radius, in rp_circ (0.25) */
    double petro_fraction_gini;  /* Gini smoothing sigma in rp_ellip (0.2) */
    int    skybox_size;          /* first sky box side tried (32) */
    double n_sigma_outlier;      /* outlier rejection; <= 0 disables (10) */
    double cutout_extent;        /* stamp side / segment bounding box (2.5) */
    int    min_cutout_size;      /* smallest stamp side (48; made even) */
    double segmap_overlap_ratio; /* Gini/MID overlap below this: flag 1 (0.25) */
} gx_morph_opts;

gx_morph_opts gx_morph_opts_default(void);

typedef struct gx_morph_result {
    int      flag;               /* 0, 1, 2 or 4 (see above) */
    uint32_t warn;               /* GX_MORPH_W_* bits */
    char     reason[96];         /* why flag is 4 (empty otherwise) */

    /* the statistics (spec §1) */
    double concentration, asymmetry, smoothness, gini, m20;
    double gini_m20_bulge;       /* F(G,M20) = -0.693 M20 + 4.95 G - 3.96 */
    double gini_m20_merger;      /* S(G,M20) = 0.139 M20 + 0.990 G - 0.327 */
    double r20, r50, r80;        /* px, circles about the asymmetry centre */
    double rpetro_circ, rpetro_ellip;
    double flux_circ, flux_ellip; /* sums within 2 rp (circle / ellipse) */

    /* shape at the asymmetry centre (and at the centroid) */
    double elongation_asymmetry, ellipticity_asymmetry, orientation_asymmetry;
    double elongation_centroid, ellipticity_centroid, orientation_centroid;
    double xc_centroid, yc_centroid, xc_asymmetry, yc_asymmetry;

    /* sky box (-99 when none was found) */
    double sky_mean, sky_median, sky_sigma;
    int    skybox_size;          /* side of the box used, 0 if none */

    int    smooth_k;             /* box-car size of S; S == 0 when <= 1 */
    int    xmin_stamp, ymin_stamp, nx_stamp, ny_stamp;
    int    num_badpixels;        /* outliers masked (-1: rejection disabled) */
    int    asym_nfev;            /* asymmetry evaluations by the minimiser */
} gx_morph_result;

/* Measures source `label` of segmap (int32, ny×nx, 0 = background, other
 * labels are masked). mask: optional uint8 ny×nx, nonzero = ignore pixel.
 * image: float32 ny×nx, background-subtracted. opts NULL = defaults. */
gx_status gx_morph_measure(const float *image, const int32_t *segmap, int32_t label,
                           const uint8_t *mask, int ny, int nx, const gx_morph_opts *opts,
                           gx_morph_result *out, gx_err *err);

/* Segmentation recipe (spec §1): threshold = 3σ-clipped mean + 1.5·σ
 * (≤ 10 iterations, over unmasked finite pixels), pixels above it,
 * 8-connected components of ≥ 5 pixels, keep the largest (first on ties),
 * box filter of size 10 (reflect), keep > 0.5. Writes segmap (1 = source,
 * 0 = background). *found = 0 when nothing survives (segmap all zero). */
gx_status gx_morph_segment(const float *image, const uint8_t *mask, int ny, int nx,
                           int32_t *segmap, int *found, gx_err *err);

/* gx_morph_segment then gx_morph_measure(label 1). No source: GX_OK,
 * flag 4, GX_MORPH_W_NO_SOURCE. segmap_out (optional, ny×nx) gets the map. */
gx_status gx_morph_measure_auto(const float *image, const uint8_t *mask, int ny, int nx,
                                const gx_morph_opts *opts, gx_morph_result *out,
                                int32_t *segmap_out, gx_err *err);

/* n cutouts of ny×nx packed contiguously (masks too, or NULL), each
 * segmented with the recipe and measured; OpenMP over cutouts (nthreads
 * <= 0: the OpenMP default). Stops at the first argument error. */
gx_status gx_morph_measure_batch(const float *images, const uint8_t *masks, int64_t n,
                                 int ny, int nx, const gx_morph_opts *opts, int nthreads,
                                 gx_morph_result *out, gx_err *err);

/* Name of one GX_MORPH_W_* bit ("nonpositive_flux", ...); "?" if unknown. */
const char *gx_morph_warn_str(uint32_t bit);

/* Statistic table, for callers that iterate (daemon JSON, SQLite rows,
 * W1 per statistic): name and offset of each double in gx_morph_result. */
typedef struct { const char *name; size_t offset; } gx_morph_field;
extern const gx_morph_field gx_morph_fields[];
extern const int gx_morph_nfields;
static inline double gx_morph_get(const gx_morph_result *r, int i) {
    return *(const double *)((const char *)r + gx_morph_fields[i].offset);
}

/* ---- distances shared with the CF-INN metrics and the two-models checks -- */

/* SSIM of two ny×nx images (Wang et al. 2004 as skimage's
 * structural_similarity with gaussian_weights=True, sigma 1.5, truncate 3.5,
 * use_sample_covariance=False, K1 0.01, K2 0.03): mean SSIM over the
 * pixels at least 5 px from the border. data_range > 0 (e.g. 1 for [0,1]
 * images). ny, nx >= 11. */
gx_status gx_morph_ssim(const float *a, const float *b, int ny, int nx, double data_range,
                        double *ssim, gx_err *err);

/* Exact 1-Wasserstein distance between the empirical distributions of
 * u[0..nu) and v[0..nv): the integral of |F_u - F_v| (equal sizes: mean
 * |sort(u) - sort(v)|). Non-finite values are an error. */
gx_status gx_morph_w1_exact(const double *u, int64_t nu, const double *v, int64_t nv,
                            double *w1, gx_err *err);

/* Binned W1 as in the two-models paper: nbins equal bins on [lo, hi]
 * (lo == hi: the range of u), p and q the normalised histograms of u and v
 * (values outside the range are clipped to the edge bins),
 * W1 = Δ·Σ_k |cumsum(p − q)_k|. p_out, q_out (optional, nbins each) get the
 * histograms, for reports. */
gx_status gx_morph_w1_binned(const double *u, int64_t nu, const double *v, int64_t nv,
                             int nbins, double lo, double hi, double *w1, double *p_out,
                             double *q_out, gx_err *err);

#endif
