/*
 * gx_synth_survey.c — survey effects: the survey table, depth map, noise
 * model, the rendering of analytic components, PSF convolution + binning,
 * and the display stretch to uint8.
 *
 * Design (all documented in docs/synth.md):
 *  - Components are sampled at 2x oversampling (sub-pixel centres), with a
 *    5x5 sub-sampling of the sub-pixels next to a cuspy (n > 1) centre so
 *    de Vaucouleurs cores keep their flux.
 *  - PSF: Moffat beta = 3.5 approximated by three concentric Gaussians
 *    (weights and widths fitted once to the Moffat radial profile: max
 *    error 0.14% of the peak, FWHM exact to 0.1%). Each Gaussian is
 *    separable, and the 2x2 binning is folded into the 1-D kernels (the
 *    kernel w(u) = g(u) + g(u-1) evaluated only at native-pixel outputs),
 *    so the cost is that of two 1-D passes at the native output size.
 *    Kernels are truncated at 3.5 sigma and renormalised: flux is kept.
 *  - Noise: 5-sigma point-source depth -> sky sigma per pixel via the
 *    optimal (PSF-weighted) point-source S/N: sigma_F = sigma_pix
 *    sqrt(N_eff) with N_eff = 1 / sum(P^2) = FWHM^2 / (0.2906 p^2) for a
 *    Moffat beta 3.5. Source Poisson noise as Gaussian with a gain set by
 *    400 sky electrons + 5 e read noise per pixel.
 */
#include "gx_synth.h"
#include "gx_image.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------- surveys */

static const gx_synth_survey gx_surveys[GX_SYNTH_NSURVEY] = {
    { "decals",   0.262, { 1.5, 1.3, 1.2 }, 23.6 },
    { "sdss",     0.396, { 1.6, 1.4, 1.3 }, 22.2 },
    { "lsst-y1",  0.200, { 0.9, 0.8, 0.8 }, 24.7 },
    { "lsst-y10", 0.200, { 0.9, 0.8, 0.8 }, 26.0 },
};

/* Depth offsets of g and z from r (mag): g slightly deeper, z shallower, as
 * in DECaLS (24.0 / 23.4 / 22.5). */
static const double gx_band_depth_off[3] = { 0.4, 0.0, -0.9 };
/* Display colour balance per band (Legacy Survey viewer scales g 6.0,
 * r 3.4, z 2.2, relative to r). */
static const double gx_band_scale[3] = { 1.76, 1.0, 0.65 };
/* Moffat beta 3.5 as three Gaussians: weights, sigmas in FWHM units. */
static const double gx_psf_w[3] = { 0.21787, 0.57491, 0.20722 };
static const double gx_psf_s[3] = { 0.33109, 0.51644, 0.91262 };

#define GX_SKY_E 400.0       /* sky electrons per pixel */
#define GX_READ_E 5.0        /* read noise electrons per pixel */
#define GX_KMAX 160          /* largest 1-D kernel half-width (sub-pixels) */

const gx_synth_survey *gx_synth_survey_get(int id) {
    return id >= 0 && id < GX_SYNTH_NSURVEY ? &gx_surveys[id] : NULL;
}

int gx_synth_survey_find(const char *name) {
    for (int i = 0; i < GX_SYNTH_NSURVEY; i++)
        if (strcmp(name, gx_surveys[i].name) == 0) return i;
    return -1;
}

/* --------------------------------------------------------- depth, noise */

double gx_synth_depth(const gx_synth_opts *o, int sv, double ra, double dec) {
    /* A smooth, survey-specific pattern over the footprint: one product of
     * sines with fixed phases, amplitude depth_amp mag. */
    double u = (ra - o->ra0) / (o->ra1 - o->ra0), v = (dec - o->dec0) / (o->dec1 - o->dec0);
    double m = sin(2 * M_PI * 0.65 * u + 0.7 * sv + 0.3) * cos(2 * M_PI * 0.45 * v + 1.1 * sv);
    return gx_surveys[sv].depth_r + o->depth_amp * m;
}

double gx_synth_sky_sigma(int sv, int band, double depth_r) {
    const gx_synth_survey *s = &gx_surveys[sv];
    double flim = pow(10.0, -0.4 * (depth_r + gx_band_depth_off[band] - 22.5));
    /* Moffat: sum P^2 = (beta-1)^2 / (pi alpha^2 (2 beta - 1)), with
     * alpha = FWHM / (2 sqrt(2^(1/beta) - 1)); 0.2906 / FWHM^2 at beta 3.5. */
    const double beta = 3.5, ar = 0.5 / sqrt(pow(2.0, 1.0 / beta) - 1.0);
    double p2 = (beta - 1) * (beta - 1) / (M_PI * ar * ar * (2 * beta - 1));
    double neff = s->fwhm[band] * s->fwhm[band] / (p2 * s->pxscale * s->pxscale);
    return flim / (5.0 * sqrt(neff));
}

void gx_synth_noise(const gx_synth_opts *o, const gx_synth_obj *obj, int sv, int size,
                    float *img, uint64_t row_stream) {
    gx_rng base, r;
    gx_rng_init(&base, o->seed ^ 0x6e6f697365ULL);   /* "noise": apart from the object streams */
    r = gx_rng_fork(&base, row_stream);
    double depth = gx_synth_depth(o, sv, obj->ra, obj->dec);
    const double se = sqrt(GX_SKY_E + GX_READ_E * GX_READ_E);
    int64_t px = (int64_t)size * size;
    for (int b = 0; b < 3; b++) {
        double sky = gx_synth_sky_sigma(sv, b, depth);
        float *p = img + b * px;
        for (int64_t k = 0; k < px; k++) {
            double f = p[k] > 0 ? p[k] : 0;
            p[k] += (float)(sqrt(sky * sky + f * sky / se) * gx_rng_normal(&r));
        }
    }
}

void gx_synth_to_u8(const gx_synth_opts *o, int sv, int size, const float *img, uint8_t *out) {
    /* One physical alpha for every survey (a fixed surface brightness maps
     * to 1), so brightness means the same in all of them and only noise,
     * resolution and PSF differ. */
    double p = gx_surveys[sv].pxscale, Q = o->stretch_Q;
    double alpha = o->stretch_sat * p * p * Q / sinh(Q);
    int64_t px = (int64_t)size * size;
    for (int b = 0; b < 3; b++)
        for (int64_t k = 0; k < px; k++) {
            double y = gx_stretch_value(img[b * px + k], 0.0, gx_band_scale[b], Q, alpha);
            out[k * 3 + b] = (uint8_t)lrint(y * 255.0);
        }
}

/* ---------------------------------------------------------- components */

size_t gx_synth_scratch_floats(int size) {
    size_t g = 2 * (size_t)size;
    return 3 * g * g + g * (size_t)size + 2 * (GX_KMAX + 2) + 2 * ((size_t)size + GX_KMAX + 8);
}

/* Sersic surface brightness at elliptical radius^2 r2 (arcsec^2), relative
 * to I_e. Per-sub-pixel math is in float (expf, powf, ...: about twice as
 * fast as double in glibc, and 1e-7 relative is far below the noise). */
static inline float gx_sersic_at(float r2, float re2, float inv2n, float bn) {
    float x = r2 / re2, p;
    /* pow is the costliest call here: the common n = 1 and n = 0.5 cases
     * (disks, bars, clumps) avoid it. */
    if (inv2n == 0.5f) p = sqrtf(x);
    else if (inv2n == 1.0f) p = x;
    else p = powf(x + 1e-30f, inv2n);
    return expf(-bn * (p - 1.0f));
}

/* Multiplicative modulation of a component at disk-plane (u, w); cot is
 * 1 / tan(pitch), precomputed. */
static inline float gx_modulation(const gx_synth_comp *c, float u, float w, float cot) {
    if (c->mod != GX_MOD_SPIRAL && c->mod != GX_MOD_LOPSIDED) return 1.0f;
    float rr = sqrtf(u * u + w * w) / (float)c->re + 1e-6f, phi = atan2f(w, u);
    if (c->mod == GX_MOD_LOPSIDED)
        return 1.0f + (float)c->m_amp * cosf(phi - (float)c->m_phase) * (rr < 1.5f ? rr / 1.5f : 1.0f);
    /* Log spiral: arms where m (phi - ln r / tan(pitch)) + phase = 0 mod 2 pi;
     * faded towards the centre where the bulge dominates. */
    float a = (float)c->m_amp * (1.0f - expf(-(rr / 0.35f) * (rr / 0.35f)));
    return 1.0f + a * cosf((float)c->m_arms * (phi - logf(rr) * cot) + (float)c->m_phase);
}

/* Value of component c (relative to I_e, times modulation) at (x, y)
 * arcsec from the stamp centre. */
static inline float gx_comp_at(const gx_synth_comp *c, float x, float y, float re2,
                               float inv2n, float bn, float cs, float sn, float cot) {
    if (c->mod == GX_MOD_ARC) {
        /* SIS lens at the origin: beta = theta (1 - theta_E/|theta|); surface
         * brightness is conserved, so the source is evaluated at beta. */
        float t = sqrtf(x * x + y * y) + 1e-9f, s = 1.0f - (float)c->lens_te / t;
        x = x * s - (float)c->x; y = y * s - (float)c->y;
    } else {
        x -= (float)c->x; y -= (float)c->y;
    }
    float u = x * cs + y * sn, v = (-x * sn + y * cs) / (float)c->q;
    return gx_sersic_at(u * u + v * v, re2, inv2n, bn) * gx_modulation(c, u, v, cot);
}

/* Adds component c to the three oversampled bands (G x G, sub-pixel h). */
static void gx_render_comp(const gx_synth_comp *c, int G, double h, float *bands) {
    double bn = gx_sersic_bn(c->n), inv2n = 0.5 / c->n, re2 = c->re * c->re;
    double cs = cos(c->pa), sn = sin(c->pa);
    float cot = c->mod == GX_MOD_SPIRAL ? (float)(1.0 / tan(c->m_pitch)) : 0.0f;
    /* I_e from the total flux: L = 2 pi q re^2 n e^b b^-2n Gamma(2n) I_e. */
    double lnorm = log(2 * M_PI * c->q * re2 * c->n) + bn - 2 * c->n * log(bn) + lgamma(2 * c->n);
    double k[3];
    for (int b = 0; b < 3; b++) k[b] = c->flux[b] * exp(-lnorm) * h * h;
    /* Bounding box: where the profile falls below 1e-5 I_e (whole stamp for
     * lensed sources, whose images can be anywhere on the ring). */
    int i0 = 0, i1 = G, j0 = 0, j1 = G;
    double half = 0.5 * G * h;
    if (c->mod != GX_MOD_ARC) {
        double R = c->re * pow(1.0 + log(1e5) / bn, c->n);
        i0 = (int)floor((c->y - R + half) / h); i1 = (int)ceil((c->y + R + half) / h);
        j0 = (int)floor((c->x - R + half) / h); j1 = (int)ceil((c->x + R + half) / h);
        i0 = i0 < 0 ? 0 : i0; j0 = j0 < 0 ? 0 : j0;
        i1 = i1 > G ? G : i1; j1 = j1 > G ? G : j1;
    }
    size_t gg = (size_t)G * G;
    if (c->mod != GX_MOD_ARC && c->re < 0.5 * h) {
        /* Unresolved (r_e < half a sub-pixel): sampling would miss it, so
         * the flux goes to the four nearest sub-pixels, bilinearly. */
        double fx = (c->x + half) / h - 0.5, fy = (c->y + half) / h - 0.5;
        int x0 = (int)floor(fx), y0 = (int)floor(fy);
        double tx = fx - x0, ty = fy - y0;
        for (int a = 0; a < 2; a++)
            for (int bb = 0; bb < 2; bb++) {
                int yy = y0 + a, xx = x0 + bb;
                if (yy < 0 || yy >= G || xx < 0 || xx >= G) continue;
                double wgt = (a ? ty : 1 - ty) * (bb ? tx : 1 - tx);
                for (int b = 0; b < 3; b++) bands[b * gg + (size_t)yy * G + xx] += (float)(c->flux[b] * wgt);
            }
        return;
    }
    int cusp = c->n > 1.0 && c->mod != GX_MOD_ARC;
    for (int i = i0; i < i1; i++) {
        double y = (i + 0.5) * h - half;
        for (int j = j0; j < j1; j++) {
            double x = (j + 0.5) * h - half, v;
            if (cusp && fabs(x - c->x) < 1.5 * h && fabs(y - c->y) < 1.5 * h) {
                /* 5x5 sub-samples near a cuspy centre. */
                double s = 0;
                for (int a = 0; a < 5; a++)
                    for (int bb = 0; bb < 5; bb++)
                        s += gx_comp_at(c, x + (a - 2) * h / 5, y + (bb - 2) * h / 5, re2, inv2n, bn, cs, sn, cot);
                v = s / 25.0;
            } else {
                v = gx_comp_at(c, x, y, re2, inv2n, bn, cs, sn, cot);
            }
            size_t q = (size_t)i * G + j;
            bands[q] += (float)(k[0] * v);
            bands[gg + q] += (float)(k[1] * v);
            bands[2 * gg + q] += (float)(k[2] * v);
        }
    }
}

/* Dust lane of an edge-on disk (component 0): transmission
 * exp(-tau_b exp(-v^2 / 2 h^2) exp(-|u| / 1.5 r_e)), tau g:r:z = 1.4:1:0.6. */
static void gx_apply_dust(const gx_synth_obj *o, int G, double h, float *bands) {
    const gx_synth_comp *c = &o->comp[0];
    double cs = cos(c->pa), sn = sin(c->pa), hz = 0.25 * c->q * c->re + 1e-3, half = 0.5 * G * h;
    static const double tb[3] = { 1.4, 1.0, 0.6 };
    size_t gg = (size_t)G * G;
    for (int i = 0; i < G; i++)
        for (int j = 0; j < G; j++) {
            double x = (j + 0.5) * h - half - c->x, y = (i + 0.5) * h - half - c->y;
            double u = x * cs + y * sn, v = -x * sn + y * cs;
            double t = o->dust * exp(-0.5 * v * v / (hz * hz) - fabs(u) / (1.5 * c->re));
            for (int b = 0; b < 3; b++) bands[b * gg + (size_t)i * G + j] *= (float)exp(-tb[b] * t);
        }
}

/* ------------------------------------------------------ PSF and binning */

/* 1-D kernel of one Gaussian (sigma in sub-pixels) folded with the 2-tap
 * bin: w[u + H] for u in [-H, H+1]. It sums to 2 because outputs are taken
 * every second sub-pixel: each input then spreads exactly 1 over them. */
static int gx_psf_kernel(double sigma, float *w) {
    int H = (int)ceil(3.5 * sigma) + 1;
    if (H > GX_KMAX) H = GX_KMAX;
    double s = 0, g[2 * GX_KMAX + 3];
    for (int u = -H - 1; u <= H + 1; u++) g[u + H + 1] = exp(-0.5 * u * u / (sigma * sigma));
    for (int u = -H; u <= H + 1; u++) s += g[u + H + 1] + g[u + H];
    for (int u = -H; u <= H + 1; u++) w[u + H] = (float)(2.0 * (g[u + H + 1] + g[u + H]) / s);
    return H;
}

/* out (S x S) += weight * bin2(gauss(in)) for one band: pass 1 along x at
 * native columns (G rows x S), pass 2 along y at native rows. Both passes
 * are written as axpy loops over contiguous native-resolution rows so they
 * vectorise: pass 1 splits each sub-pixel row into its even and odd
 * samples (zero-padded by P on both sides), so tap u reads a contiguous
 * slice of one of them. target_clones picks an AVX2 build of it at load
 * time where the CPU has AVX2 (the default build is plain SSE2). Sums are in float: each output adds < 350
 * positive terms, a relative error ~1e-6, far below the noise. */
__attribute__((target_clones("avx2", "default")))
static void gx_conv_bin(const float *in, int S, const float *w, int H, double weight,
                        float *tmp, float *eo, float *out) {
    int G = 2 * S, P = H / 2 + 2, L = S + 2 * P;
    float *E = eo, *O = eo + L;
    memset(eo, 0, 2 * (size_t)L * sizeof(float));
    for (int i = 0; i < G; i++) {
        const float *row = in + (size_t)i * G;
        for (int k = 0; k < S; k++) { E[P + k] = row[2 * k]; O[P + k] = row[2 * k + 1]; }
        float *restrict t = tmp + (size_t)i * S;
        for (int X = 0; X < S; X++) t[X] = 0.0f;
        for (int u = -H; u <= H + 1; u++) {
            /* sub-pixel 2X + u: even u -> E[X + u/2], odd u -> O[X + (u-1)/2] */
            int even = (u & 1) == 0, off = P + (even ? u / 2 : (u - 1) / 2);
            const float *restrict src = (even ? E : O) + off;
            float wu = w[u + H];
            #pragma omp simd
            for (int X = 0; X < S; X++) t[X] += wu * src[X];
        }
    }
    for (int Y = 0; Y < S; Y++) {
        int lo = 2 * Y - H, hi = 2 * Y + H + 1;
        int a = lo < 0 ? 0 : lo, b = hi > G - 1 ? G - 1 : hi;
        float *restrict orow = out + (size_t)Y * S;
        for (int i = a; i <= b; i++) {
            float wi = (float)(weight * w[i - lo]);
            const float *restrict t = tmp + (size_t)i * S;
            #pragma omp simd
            for (int X = 0; X < S; X++) orow[X] += wi * t[X];
        }
    }
}

void gx_synth_render(const gx_synth_obj *obj, int sv, int size, float *img, float *scratch) {
    gx_synth_render_ex(obj, sv, size, 1, img, scratch);
}

void gx_synth_render_ex(const gx_synth_obj *obj, int sv, int size, int psf, float *img, float *scratch) {
    const gx_synth_survey *s = &gx_surveys[sv];
    int G = 2 * size;
    double h = 0.5 * s->pxscale;
    size_t gg = (size_t)G * G;
    float *bands = scratch, *tmp = scratch + 3 * gg, *w = tmp + (size_t)G * size;
    float *eo = w + 2 * (GX_KMAX + 2);
    memset(bands, 0, 3 * gg * sizeof(float));
    for (int c = 0; c < obj->n_comp; c++) gx_render_comp(&obj->comp[c], G, h, bands);
    if (obj->dust > 0) gx_apply_dust(obj, G, h, bands);
    memset(img, 0, 3 * (size_t)size * size * sizeof(float));
    if (!psf) {   /* plain 2x2 binning (tests: profiles before the PSF) */
        for (int b = 0; b < 3; b++)
            for (int Y = 0; Y < size; Y++)
                for (int X = 0; X < size; X++) {
                    const float *q = bands + b * gg + (size_t)(2 * Y) * G + 2 * X;
                    img[((size_t)b * size + Y) * size + X] = q[0] + q[1] + q[G] + q[G + 1];
                }
        return;
    }
    for (int b = 0; b < 3; b++)
        for (int k = 0; k < 3; k++) {
            int H = gx_psf_kernel(gx_psf_s[k] * s->fwhm[b] / h, w);
            gx_conv_bin(bands + b * gg, size, w, H, gx_psf_w[k], tmp, eo, img + (size_t)b * size * size);
        }
}
