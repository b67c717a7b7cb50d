/*
 * gx_synth.c — the physics of the synthetic survey: redshifts, distances,
 * luminosities, sizes, colours and the per-class galaxy models.
 *
 * Design: gx_synth_draw turns (seed, i) into a list of analytic Sersic
 * components (gx_synth_comp) with band fluxes in nanomaggies. Every random
 * number of object i comes from gx_rng_fork(seed stream, i), so an object
 * is the same whatever the thread count, the survey or the row order.
 * Every number here is a documented default (docs/synth.md); the choices
 * are deliberately simple but keep the physical dependencies that matter
 * for learning: apparent size and brightness fall with z, colours redden
 * with z, morphology sets the class.
 */
#include "gx_synth.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------ classes */

static const char *const gx_class_names[GX_SYNTH_NCLASS_MAX] = {
    "Disturbed", "Merging", "Round Smooth", "In-between Round Smooth",
    "Cigar Shaped Smooth", "Barred Spiral", "Unbarred Tight Spiral",
    "Unbarred Loose Spiral", "Edge-on without Bulge", "Edge-on with Bulge", "Lens",
};

/* Galaxy10 DECaLS class counts (the default class frequencies); the lens
 * class, when enabled, gets the mean frequency of the other ten. */
static const double gx_class_counts[10] = { 1081, 1853, 2645, 2027, 334,
                                            2043, 1829, 2628, 1423, 1873 };

const char *gx_synth_class_name(int cls) {
    return cls >= 0 && cls < GX_SYNTH_NCLASS_MAX ? gx_class_names[cls] : "?";
}

void gx_synth_opts_default(gx_synth_opts *o) {
    memset(o, 0, sizeof *o);
    o->seed = 0; o->n = 1000; o->size = 64; o->n_classes = 10;
    o->n_surveys = 1; o->surveys[0] = 0;
    o->z0 = 0.18; o->zmin = 0.005; o->zmax = 1.2;
    o->ra0 = 150; o->ra1 = 160; o->dec0 = 0; o->dec1 = 10;
    o->depth_amp = 0.3; o->spec_rlim = 17.77;
    o->stretch_Q = 8.0; o->stretch_sat = 300.0; o->noise = 1;
}

/* ------------------------------------------------------- Sersic b_n */

/* Regularised lower incomplete gamma P(a, x) by its power series, which
 * converges for every x (we only need x < 4a + 2, where it is fast). */
static double gx_gamma_p(double a, double x) {
    if (x <= 0) return 0.0;
    double term = 1.0 / a, sum = term;
    for (int k = 1; k < 2000; k++) {
        term *= x / (a + k);
        sum += term;
        if (term < sum * 1e-16) break;
    }
    return exp(a * log(x) - x - lgamma(a)) * sum;
}

double gx_sersic_bn(double n) {
    /* b_n solves P(2n, b) = 1/2: half the light inside r_e. P is increasing
     * in b, so bisection on [0, 4n + 2] (b_n ~ 2n - 1/3) always converges. */
    double lo = 0.0, hi = 4.0 * n + 2.0;
    for (int it = 0; it < 100; it++) {
        double mid = 0.5 * (lo + hi);
        if (gx_gamma_p(2.0 * n, mid) < 0.5) lo = mid; else hi = mid;
    }
    return 0.5 * (lo + hi);
}

/* ------------------------------------------------------- cosmology */

/* Flat LCDM, H0 = 70 km/s/Mpc, Om = 0.3: comoving distance by Simpson's
 * rule on 1/E(z) (128 intervals: < 1e-8 relative error for z <= 3). */
double gx_synth_dist_comoving(double z) {
    const double c_h0 = 299792.458 / 70.0, om = 0.3;
    const int m = 128;
    double h = z / m, s = 0;
    for (int k = 0; k <= m; k++) {
        double zz = k * h, e = 1.0 / sqrt(om * pow(1 + zz, 3) + (1 - om));
        s += e * (k == 0 || k == m ? 1 : (k % 2 ? 4 : 2));
    }
    return c_h0 * s * h / 3.0;
}

/* ---------------------------------------------------- SED templates */

/* Two templates, early (0) and late (1). Observed colours redden with z as
 * the 4000 A break moves from g into r (g-r) and the red continuum into z
 * (r-z): linear in z, a fair fit to passive / star-forming tracks below
 * z ~ 1. The r-band k-correction is linear in z as well. `blue` shifts a
 * component bluer (arms, clumps, lensed sources). */
typedef struct { double gr, rz, kr; } gx_sed;

static gx_sed gx_sed_at(double early, double z, double blue) {
    double gr = early * (0.75 + 1.00 * z) + (1 - early) * (0.35 + 0.60 * z) - blue;
    double rz = early * (0.40 + 0.80 * z) + (1 - early) * (0.25 + 0.50 * z) - blue;
    double kr = early * 1.0 * z + (1 - early) * 0.4 * z;
    return (gx_sed){ gr, rz, kr };
}

/* ------------------------------------------------------ draw helpers */

typedef struct {
    gx_rng rng;
    double z, dm, kpc_as;     /* redshift, distance modulus, kpc per arcsec */
    double jit_gr, jit_rz;    /* per-object colour scatter */
    gx_synth_obj *obj;
} gx_drawer;

static double gx_syn_unif(gx_drawer *d, double a, double b) { return a + (b - a) * gx_rng_uniform(&d->rng); }
static double gx_syn_gauss(gx_drawer *d, double m, double s) { return m + s * gx_rng_normal(&d->rng); }

/* Class from the Galaxy10 frequencies (or uniform when balanced). */
static int gx_draw_class(const gx_synth_opts *o, gx_rng *r) {
    double w[GX_SYNTH_NCLASS_MAX], tot = 0, mean = 0;
    for (int c = 0; c < 10; c++) mean += gx_class_counts[c] / 10.0;
    for (int c = 0; c < o->n_classes; c++) {
        w[c] = o->balanced ? 1.0 : (c < 10 ? gx_class_counts[c] : mean);
        tot += w[c];
    }
    double u = gx_rng_uniform(r) * tot;
    for (int c = 0; c < o->n_classes; c++) { if (u < w[c]) return c; u -= w[c]; }
    return o->n_classes - 1;
}

/* z from p(z) ~ z^2 exp(-(z/z0)^1.5) on [lo, hi] by rejection (the
 * density peaks at z0 (4/3)^(2/3), which bounds it). */
static double gx_draw_z(gx_drawer *d, double z0, double lo, double hi) {
    double zp = z0 * pow(4.0 / 3.0, 2.0 / 3.0);
    if (zp > hi) zp = hi;
    if (zp < lo) zp = lo;
    double pmax = zp * zp * exp(-pow(zp / z0, 1.5));
    for (;;) {
        double z = gx_syn_unif(d, lo, hi), u = gx_rng_uniform(&d->rng) * pmax;
        if (u <= z * z * exp(-pow(z / z0, 1.5))) return z;
    }
}

static void gx_set_z(gx_drawer *d, double z) {
    double dc = gx_synth_dist_comoving(z), da = dc / (1 + z), dl = dc * (1 + z);
    d->z = z;
    d->dm = 5.0 * log10(dl * 1e6 / 10.0);
    d->kpc_as = da * 1000.0 * M_PI / (180.0 * 3600.0);
}

/* Physical half-light radius (kpc) from a size-luminosity relation
 * R ~ L^alpha (Shen et al. 2003 slopes: 0.6 early, 0.3 late) with 0.15 dex
 * scatter; returned in arcsec at the object's distance. */
static double gx_size_as(gx_drawer *d, double absmag, double r0_kpc, double slope) {
    double r = r0_kpc * pow(10.0, -0.4 * slope * (absmag + 21.0) + 0.15 * gx_rng_normal(&d->rng));
    return r / d->kpc_as;
}

/* Appends a component holding a fraction `frac` of an object of absolute r
 * magnitude `absmag`, with template mix `early` and blue shift `blue`. */
static gx_synth_comp *gx_syn_add(gx_drawer *d, double absmag, double frac, double early, double blue,
                             double re, double n, double q, double pa) {
    gx_synth_obj *o = d->obj;
    if (o->n_comp >= GX_SYNTH_MAXCOMP) return NULL;
    gx_synth_comp *c = &o->comp[o->n_comp++];
    memset(c, 0, sizeof *c);
    gx_sed s = gx_sed_at(early, d->z, blue);
    double mr = absmag + d->dm + s.kr - 2.5 * log10(frac);
    double fr = pow(10.0, -0.4 * (mr - 22.5));
    c->flux[1] = fr;
    c->flux[0] = fr * pow(10.0, -0.4 * (s.gr + d->jit_gr));
    c->flux[2] = fr * pow(10.0, 0.4 * (s.rz + d->jit_rz));
    c->re = re; c->n = n; c->q = q; c->pa = pa;
    return c;
}

/* Axis ratio of a disk of intrinsic thickness q0 seen at inclination i. */
static double gx_disk_q(double incl_deg, double q0) {
    double c = cos(incl_deg * M_PI / 180.0), s = sin(incl_deg * M_PI / 180.0);
    return sqrt(c * c + q0 * q0 * s * s);
}

/* ------------------------------------------------------ class models */

/* A smooth Sersic spheroid (classes 2, 3, 4 and the lens galaxy). */
static void gx_draw_smooth(gx_drawer *d, double absmag, double nlo, double nhi, double qlo, double qhi) {
    double n = gx_syn_unif(d, nlo, nhi), q = gx_syn_unif(d, qlo, qhi), pa = gx_syn_unif(d, 0, M_PI);
    gx_syn_add(d, absmag, 1.0, 1.0, 0.0, gx_size_as(d, absmag, 3.5, 0.6), n, q, pa);
}

/* Bulge + disk with optional spiral arms, bar and arm clumps. */
typedef struct {
    double bt, incl_max, arms_lo, arms_hi, pitch_lo, pitch_hi, amp;
    int bar, clumps;
} gx_spiral_cfg;

static void gx_draw_spiral(gx_drawer *d, double absmag, const gx_spiral_cfg *k, double dx, double dy) {
    double incl = gx_syn_unif(d, 0, k->incl_max), pa = gx_syn_unif(d, 0, M_PI);
    double q = gx_disk_q(incl, 0.15);
    double rd = gx_size_as(d, absmag, 5.0, 0.3);
    double bt = k->bt, fc = k->clumps ? 0.12 : 0.0, fbar = k->bar ? 0.10 : 0.0;
    gx_synth_comp *disk = gx_syn_add(d, absmag, 1 - bt - fc - fbar, 0.25, 0.0, rd, 1.0, q, pa);
    if (!disk) return;
    disk->x = dx; disk->y = dy;
    double pitch = 0;
    if (k->arms_hi > 0) {
        disk->mod = GX_MOD_SPIRAL;
        disk->m_arms = floor(gx_syn_unif(d, k->arms_lo, k->arms_hi + 1));
        pitch = gx_syn_unif(d, k->pitch_lo, k->pitch_hi) * M_PI / 180.0;
        disk->m_pitch = pitch;
        disk->m_phase = gx_syn_unif(d, 0, 2 * M_PI);
        disk->m_amp = k->amp;
    }
    if (bt > 0) {
        gx_synth_comp *b = gx_syn_add(d, absmag, bt, 1.0, 0.0, rd * gx_syn_unif(d, 0.12, 0.22),
                                  gx_syn_unif(d, 2.0, 4.0), gx_disk_q(incl, 0.8), pa);
        if (b) { b->x = dx; b->y = dy; }
    }
    if (k->bar) {
        /* Bar: an elongated n = 0.5 Sersic along the arms' starting angle, so
         * arms start at the bar ends; length ~ 0.6-0.9 disk r_e. */
        double bpa = pa + gx_syn_unif(d, -0.6, 0.6);
        gx_synth_comp *b = gx_syn_add(d, absmag, fbar, 0.7, 0.0, rd * gx_syn_unif(d, 0.6, 0.9), 0.5,
                                  gx_syn_unif(d, 0.18, 0.3), bpa);
        if (b) { b->x = dx; b->y = dy; }
    }
    if (k->clumps) {
        /* Star-forming clumps on the arms: placed along the log spiral
         * r = r0 exp(theta tan(pitch)) of arm 0 (in the disk plane, then
         * projected), bluest colours. */
        int nc = 4 + (int)gx_syn_unif(d, 0, 5);
        for (int j = 0; j < nc; j++) {
            double th = gx_syn_unif(d, 0, 2 * M_PI), arm = floor(gx_syn_unif(d, 0, disk->m_arms > 0 ? disk->m_arms : 1));
            double rr = rd * exp((th - 2.0) * tan(pitch > 0 ? pitch : 0.4) * 0.5) * gx_syn_unif(d, 0.8, 1.2);
            if (rr > 2.5 * rd) rr = 2.5 * rd;
            double phi = th + disk->m_phase / (disk->m_arms > 0 ? disk->m_arms : 1) + arm * 2 * M_PI / (disk->m_arms > 0 ? disk->m_arms : 1);
            double u = rr * cos(phi), v = rr * sin(phi) * q;
            gx_synth_comp *c = gx_syn_add(d, absmag, fc / nc, 0.0, 0.2, rd * gx_syn_unif(d, 0.05, 0.1), 0.5, 1.0, 0);
            if (!c) break;
            c->x = dx + u * cos(pa) - v * sin(pa);
            c->y = dy + u * sin(pa) + v * cos(pa);
        }
    }
}

static void gx_draw_edgeon(gx_drawer *d, double absmag, double bt, gx_synth_obj *o) {
    double incl = gx_syn_unif(d, 84, 90), pa = gx_syn_unif(d, 0, M_PI);
    double rd = gx_size_as(d, absmag, 5.0, 0.3);
    gx_syn_add(d, absmag, 1 - bt, 0.3, 0.0, rd, 1.0, gx_disk_q(incl, 0.1), pa);
    if (bt > 0)
        gx_syn_add(d, absmag, bt, 1.0, 0.0, rd * gx_syn_unif(d, 0.25, 0.45), gx_syn_unif(d, 2.5, 4.0),
               gx_syn_unif(d, 0.7, 0.9), pa);
    /* Dust lane: in half of the edge-on disks, optical depth 1-2.5 in r
     * along the mid-plane (gx_synth_render applies it). */
    if (gx_rng_uniform(&d->rng) < 0.5) o->dust = gx_syn_unif(d, 1.0, 2.5);
}

/* Disturbed: lopsided disk + 3-8 off-centre blue clumps + a faint offset
 * low-surface-brightness plume for irregular outer isophotes. */
static void gx_draw_disturbed(gx_drawer *d, double absmag) {
    double pa = gx_syn_unif(d, 0, M_PI), q = gx_syn_unif(d, 0.4, 1.0);
    double rd = gx_size_as(d, absmag, 5.0, 0.3);
    int nc = 3 + (int)gx_syn_unif(d, 0, 6);
    gx_synth_comp *c = gx_syn_add(d, absmag, 0.55, 0.3, 0.0, rd, gx_syn_unif(d, 0.7, 1.2), q, pa);
    if (c) { c->mod = GX_MOD_LOPSIDED; c->m_amp = gx_syn_unif(d, 0.4, 0.8); c->m_phase = gx_syn_unif(d, 0, 2 * M_PI); }
    double ang = gx_syn_unif(d, 0, 2 * M_PI);
    c = gx_syn_add(d, absmag, 0.2, 0.2, 0.05, rd * 1.5, 0.6, gx_syn_unif(d, 0.3, 0.6), ang);
    if (c) { c->x = 0.9 * rd * cos(ang); c->y = 0.9 * rd * sin(ang); }
    for (int j = 0; j < nc; j++) {
        double r = rd * gx_syn_unif(d, 0.3, 1.6), a = gx_syn_unif(d, 0, 2 * M_PI);
        c = gx_syn_add(d, absmag, 0.25 / nc, 0.0, 0.2, rd * gx_syn_unif(d, 0.08, 0.2), 0.5, 1.0, 0);
        if (c) { c->x = r * cos(a); c->y = r * sin(a); }
    }
}

/* Merging: two bulge+disk galaxies 0.5-2 r_eff apart plus a tidal bridge
 * (elongated n=0.5 component between them) and a tail on the far side. */
static void gx_draw_merger(gx_drawer *d, double absmag) {
    double rd = gx_size_as(d, absmag, 5.0, 0.3);
    double sep = rd * gx_syn_unif(d, 0.5, 2.0), a = gx_syn_unif(d, 0, M_PI);
    double fr = gx_syn_unif(d, 0.3, 0.5);  /* flux ratio of the smaller galaxy */
    double x2 = sep * cos(a) * (1 - fr), y2 = sep * sin(a) * (1 - fr);
    double x1 = -sep * cos(a) * fr, y1 = -sep * sin(a) * fr;
    double m1 = absmag - 2.5 * log10(0.8 * (1 - fr)), m2 = absmag - 2.5 * log10(0.8 * fr);
    gx_spiral_cfg k = { 0.3, 60, 0, 0, 0, 0, 0, 0, 0 };
    gx_draw_spiral(d, m1, &k, x1, y1);
    gx_draw_spiral(d, m2, &k, x2, y2);
    gx_synth_comp *c = gx_syn_add(d, absmag, 0.12, 0.3, 0.05, 0.6 * sep + 0.5 * rd, 0.5, 0.15, a);
    if (c) { c->x = 0.5 * (x1 + x2); c->y = 0.5 * (y1 + y2); }
    double ta = a + gx_syn_unif(d, -0.8, 0.8);
    c = gx_syn_add(d, absmag, 0.08, 0.3, 0.05, 1.2 * rd, 0.5, 0.12, ta);
    if (c) { c->x = x2 + 1.1 * rd * cos(ta); c->y = y2 + 1.1 * rd * sin(ta); }
}

/* Lens: massive elliptical at z in [0.2, 0.8] + a background source at
 * z_s = z_l + 0.5..1.5 lensed by an SIS of Einstein radius 1-3 arcsec. The
 * source sits within 0.6 theta_E of the axis: rings when it is close,
 * arcs otherwise; it is blue (late template, 0.2 mag bluer). */
static void gx_draw_lens(gx_drawer *d, const gx_synth_opts *o, double absmag) {
    double lo = o->zmin > 0.2 ? o->zmin : 0.2, hi = o->zmax < 0.8 ? o->zmax : 0.8;
    if (hi <= lo) hi = lo + 0.01;
    gx_set_z(d, gx_draw_z(d, o->z0, lo, hi));
    gx_draw_smooth(d, absmag, 3.5, 4.5, 0.7, 1.0);
    double te = gx_syn_unif(d, 1.0, 3.0), zl = d->z;
    gx_drawer ds = *d;
    gx_set_z(&ds, zl + gx_syn_unif(d, 0.5, 1.5));
    double b = te * sqrt(gx_syn_unif(d, 0.0, 0.36)), a = gx_syn_unif(d, 0, 2 * M_PI);
    double msrc = gx_syn_gauss(d, -22.0, 0.5);
    gx_synth_comp *c = gx_syn_add(&ds, msrc, 1.0, 0.0, 0.2, gx_syn_unif(d, 0.15, 0.45), 1.0,
                              gx_syn_unif(d, 0.5, 1.0), gx_syn_unif(d, 0, M_PI));
    if (c) { c->mod = GX_MOD_ARC; c->lens_te = te; c->x = b * cos(a); c->y = b * sin(a); }
}

/* ------------------------------------------------------------ draw */

void gx_synth_draw(const gx_synth_opts *o, int64_t i, int cls, gx_synth_obj *obj) {
    memset(obj, 0, sizeof *obj);
    gx_rng base;
    gx_rng_init(&base, o->seed);
    gx_drawer d = { .rng = gx_rng_fork(&base, (uint64_t)i), .obj = obj };
    obj->cls = cls >= 0 ? cls : gx_draw_class(o, &d.rng);
    obj->ra = gx_syn_unif(&d, o->ra0, o->ra1);
    obj->dec = gx_syn_unif(&d, o->dec0, o->dec1);
    d.jit_gr = gx_syn_gauss(&d, 0, 0.05);
    d.jit_rz = gx_syn_gauss(&d, 0, 0.05);
    gx_set_z(&d, gx_draw_z(&d, o->z0, o->zmin, o->zmax));
    /* Luminosity functions: Gaussian in absolute r magnitude per class
     * (ellipticals brighter, disturbed systems fainter). */
    switch (obj->cls) {
    case 0: gx_draw_disturbed(&d, gx_syn_gauss(&d, -20.3, 0.8)); break;
    case 1: gx_draw_merger(&d, gx_syn_gauss(&d, -21.0, 0.8)); break;
    case 2: gx_draw_smooth(&d, gx_syn_gauss(&d, -21.2, 0.8), 3, 5, 0.8, 1.0); break;
    case 3: gx_draw_smooth(&d, gx_syn_gauss(&d, -21.0, 0.8), 2, 4, 0.5, 0.8); break;
    case 4: gx_draw_smooth(&d, gx_syn_gauss(&d, -20.8, 0.8), 1, 4, 0.2, 0.45); break;
    case 5: { gx_spiral_cfg k = { 0.2, 60, 2, 2, 12, 25, 0.7, 1, 0 };
              gx_draw_spiral(&d, gx_syn_gauss(&d, -21.0, 0.8), &k, 0, 0); break; }
    case 6: { gx_spiral_cfg k = { 0.25, 60, 2, 4, 8, 15, 0.7, 0, 0 };
              gx_draw_spiral(&d, gx_syn_gauss(&d, -20.9, 0.8), &k, 0, 0); break; }
    case 7: { gx_spiral_cfg k = { 0.08, 60, 2, 4, 20, 35, 0.8, 0, 1 };
              gx_draw_spiral(&d, gx_syn_gauss(&d, -20.7, 0.8), &k, 0, 0); break; }
    case 8: gx_draw_edgeon(&d, gx_syn_gauss(&d, -20.6, 0.8), 0.0, obj); break;
    case 9: gx_draw_edgeon(&d, gx_syn_gauss(&d, -20.9, 0.8), 0.45, obj); break;
    default: gx_draw_lens(&d, o, gx_syn_gauss(&d, -21.5, 0.6)); break;
    }
    obj->z = d.z;
    /* Summary columns: whole-object magnitude and colours from the summed
     * component fluxes; shape columns from the first (main) component. */
    double f[3] = { 0, 0, 0 };
    for (int c = 0; c < obj->n_comp; c++)
        for (int b = 0; b < 3; b++) f[b] += obj->comp[c].flux[b];
    obj->mag_r = 22.5 - 2.5 * log10(f[1]);
    obj->color_gr = -2.5 * log10(f[0] / f[1]);
    obj->color_rz = -2.5 * log10(f[1] / f[2]);
    obj->r_eff = obj->comp[0].re; obj->sersic_n = obj->comp[0].n;
    obj->q = obj->comp[0].q; obj->pa = obj->comp[0].pa;
    /* Spectroscopic selection: SDSS main sample r < 17.77, with a
     * completeness rising with g - r (0.3 for blue, 1 for red objects). */
    double comp = 0.3 + 0.7 * (obj->color_gr - 0.3) / 0.7;
    comp = comp < 0.3 ? 0.3 : (comp > 1 ? 1 : comp);
    obj->spec_selected = obj->mag_r < o->spec_rlim && gx_rng_uniform(&d.rng) < comp;
}
