/*
 * gx_synth.h — the synthetic galaxy survey behind `galaxy-synth` (spec/synth.md).
 *
 * Design: rendering is split in three layers so each can be tested alone.
 *   1. gx_synth_draw: the physical catalogue entry of object i (class, z,
 *      magnitude, colour, size, shape, sky position, components). It depends
 *      only on (seed, i), never on the survey, so the same galaxy can be seen
 *      by several surveys (--paired) and rows can be rendered in any order
 *      on any number of threads.
 *   2. gx_synth_render: the noiseless image of one object in one survey:
 *      analytic Sersic components (with spiral / lopsided / clump / dust
 *      modulations) sampled at 2x oversampling, PSF (Moffat beta 3.5 as a
 *      sum of three Gaussians, separable) and 2x2 binning, in nanomaggies
 *      per pixel; then gx_synth_noise adds sky + source noise at the
 *      survey's depth, scaled by the depth map.
 *   3. gx_synth_write: the HDF5 file (Galaxy10 DECaLS layout) streamed in
 *      blocks, plus optional FITS + CSV folder.
 * Units: fluxes in nanomaggies (m = 22.5 - 2.5 log10 f), angles in arcsec,
 * distances in Mpc. Bands are always (g, r, z) in that order.
 * No global mutable state: every function is thread-safe.
 */
#ifndef GX_SYNTH_H
#define GX_SYNTH_H

#include "gx.h"
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GX_SYNTH_VERSION "1.0"
#define GX_SYNTH_NCLASS_MAX 11     /* ten Galaxy10 classes + lens */
#define GX_SYNTH_NSURVEY 4
#define GX_SYNTH_MAXCOMP 16        /* components per object (clumps included) */

/* ---------------------------------------------------------------- surveys */
typedef struct gx_synth_survey {
    const char *name;
    double pxscale;       /* arcsec / pixel */
    double fwhm[3];       /* PSF FWHM in arcsec, bands g, r, z */
    double depth_r;       /* 5-sigma point-source limiting r magnitude */
} gx_synth_survey;

/* The table of spec/synth.md (id = domain: 0 decals, 1 sdss, 2 lsst-y1, 3 lsst-y10). */
const gx_synth_survey *gx_synth_survey_get(int id);
int gx_synth_survey_find(const char *name);        /* -1 when unknown */
const char *gx_synth_class_name(int cls);

/* ---------------------------------------------------------------- options */
typedef struct gx_synth_opts {
    uint64_t seed;
    int64_t n;            /* objects (rows = n * n_surveys with paired) */
    int size;             /* cutout side S in pixels */
    int n_classes;        /* 10 (galaxy10) or 11 (galaxy10+lens) */
    int balanced;         /* 1: uniform class frequencies */
    int paired;           /* 1: every object rendered in every listed survey */
    int n_surveys;
    int surveys[GX_SYNTH_NSURVEY];   /* survey ids, in row order */
    double z0;            /* p(z) ~ z^2 exp(-(z/z0)^1.5); default 0.18 */
    double zmin, zmax;    /* default 0.005, 1.2 */
    double ra0, ra1, dec0, dec1;     /* footprint (deg); default 150..160, 0..10 */
    double depth_amp;     /* depth map amplitude, mag; default 0.3 */
    double spec_rlim;     /* spectroscopic limit r; default 17.77 */
    double stretch_Q;     /* asinh softening; default 8 */
    double stretch_sat;   /* surface brightness (nmgy/arcsec^2, r band) mapped to 1; default 300 */
    int noise;            /* 0: noiseless (tests); default 1 */
} gx_synth_opts;

void gx_synth_opts_default(gx_synth_opts *o);

/* ---------------------------------------------------------------- objects */
typedef enum {
    GX_MOD_NONE = 0,
    GX_MOD_SPIRAL,        /* 1 + a cos(m (phi - ln(r)/tan(pitch)) ) : log spiral arms */
    GX_MOD_LOPSIDED,      /* 1 + a cos(phi - phase) : m=1 distortion */
    GX_MOD_ARC            /* lensed source: rendered through the SIS lens equation */
} gx_synth_mod;

/* One analytic component: Sersic(n, r_e, q, pa) at (x, y) with band fluxes. */
typedef struct gx_synth_comp {
    double x, y;          /* centre offset from the stamp centre, arcsec */
    double re;            /* half-light radius (semi-major), arcsec */
    double n;             /* Sersic index */
    double q, pa;         /* axis ratio, position angle (radians) */
    double flux[3];       /* nanomaggies, bands g, r, z */
    int mod;              /* gx_synth_mod */
    double m_amp, m_arms, m_pitch, m_phase;  /* modulation parameters */
    double lens_te;       /* GX_MOD_ARC: Einstein radius, arcsec (lens at 0,0) */
} gx_synth_comp;

typedef struct gx_synth_obj {
    int cls;
    double z, ra, dec;
    double mag_r, color_gr, color_rz;  /* whole object, apparent */
    double r_eff, sersic_n, q, pa;     /* the main (first) component */
    int spec_selected;
    double dust;          /* edge-on dust lane depth in r (0: none) */
    int n_comp;
    gx_synth_comp comp[GX_SYNTH_MAXCOMP];
} gx_synth_obj;

/* Sersic b_n: the root of gamma(2n, b) = Gamma(2n)/2 (bisection on the
 * regularised incomplete gamma function; accurate to 1e-10 for 0.2 <= n <= 10). */
double gx_sersic_bn(double n);
/* Flat LCDM (H0 70, Om 0.3) distances in Mpc. */
double gx_synth_dist_comoving(double z);
/* Catalogue entry of object i; cls >= 0 forces the class (preview), -1 draws it. */
void gx_synth_draw(const gx_synth_opts *o, int64_t i, int cls, gx_synth_obj *obj);
/* Depth (5-sigma r mag) of survey sv at (ra, dec): the depth map. */
double gx_synth_depth(const gx_synth_opts *o, int sv, double ra, double dec);
/* Sky noise sigma per pixel (nmgy) for band b of survey sv at depth `depth_r`. */
double gx_synth_sky_sigma(int sv, int band, double depth_r);

/* Noiseless render into img (3*S*S floats, band-major g, r, z, nmgy/pixel).
 * scratch: gx_synth_scratch_floats(S) floats. */
size_t gx_synth_scratch_floats(int size);
void gx_synth_render(const gx_synth_obj *obj, int sv, int size, float *img, float *scratch);
/* Same with the PSF optional (psf = 0: only the 2x2 binning; for tests). */
void gx_synth_render_ex(const gx_synth_obj *obj, int sv, int size, int psf, float *img, float *scratch);
/* Adds sky + source Poisson (Gaussian) + read noise; rng per (object, survey). */
void gx_synth_noise(const gx_synth_opts *o, const gx_synth_obj *obj, int sv, int size,
                    float *img, uint64_t row_stream);
/* asinh stretch (gx_stretch_value) to uint8 HWC (g, r, z), as in the file. */
void gx_synth_to_u8(const gx_synth_opts *o, int sv, int size, const float *img, uint8_t *out);

/* ---------------------------------------------------------------- output */
typedef void (*gx_synth_progress_fn)(int64_t done, int64_t total, void *arg);
/* Writes the HDF5 file (temp name + rename). fits_dir may be NULL. */
gx_status gx_synth_write(const gx_synth_opts *o, const char *path, const char *fits_dir,
                         const char *command, gx_synth_progress_fn progress, void *arg,
                         gx_err *err);
/* Grid PNG: rows = classes, columns = 10 examples x each listed survey. */
gx_status gx_synth_preview(const gx_synth_opts *o, const char *path, gx_err *err);

#ifdef __cplusplus
}
#endif
#endif
