/*
 * test_synth.c — checks of the synthetic survey (spec/synth.md, "Checks
 * the tests should make"): Sersic b_n and distances against known values,
 * half-light radius before PSF and noise, flux conservation through the
 * PSF, noise level and 5-sigma depth, colour-redshift correlation, class
 * separability on image moments, spectroscopic selection, the HDF5 layout,
 * paired rows and byte-identical files (also across thread counts).
 * Sizes are kept small so the whole file runs in a few seconds.
 */
#include "gx_test.h"
#include "gx_synth.h"
#include "gx_dataset.h"
#include "gx_image.h"

#include <hdf5.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

/* A single-component object (q = 1 unless given) with r flux `f`. */
static void one_comp(gx_synth_obj *o, double re, double n, double q, double f) {
    memset(o, 0, sizeof *o);
    o->n_comp = 1;
    gx_synth_comp *c = &o->comp[0];
    c->re = re; c->n = n; c->q = q; c->pa = 0.3;
    c->flux[0] = c->flux[1] = c->flux[2] = f;
}

static float *render(const gx_synth_obj *o, int sv, int S, int psf) {
    float *sc = malloc(gx_synth_scratch_floats(S) * sizeof(float));
    float *img = malloc(3 * (size_t)S * S * sizeof(float));
    gx_synth_render_ex(o, sv, S, psf, img, sc);
    free(sc);
    return img;
}

/* Radius (arcsec) enclosing half of `total` in band r of a centred image:
 * pixels sorted by radius, cumulative flux interpolated. */
static int cmp_pair(const void *a, const void *b) {
    double x = ((const double *)a)[0], y = ((const double *)b)[0];
    return (x > y) - (x < y);
}
static double half_light(const float *img, int S, double px, double total) {
    double *v = malloc(2 * sizeof(double) * S * S);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            double dx = (x + 0.5 - S / 2.0) * px, dy = (y + 0.5 - S / 2.0) * px;
            v[2 * (y * S + x)] = sqrt(dx * dx + dy * dy);
            v[2 * (y * S + x) + 1] = img[S * S + y * S + x];
        }
    qsort(v, (size_t)S * S, 2 * sizeof(double), cmp_pair);
    double cum = 0, r = 0;
    for (int k = 0; k < S * S; k++) {
        double nc = cum + v[2 * k + 1];
        if (nc >= 0.5 * total) {
            double r0 = k ? v[2 * (k - 1)] : 0, t = (0.5 * total - cum) / v[2 * k + 1];
            r = r0 + t * (v[2 * k] - r0);
            break;
        }
        cum = nc;
    }
    free(v);
    return r;
}

/* Second-moment axis ratio of band r (flux-weighted, positive pixels). */
static double moment_q(const float *img, int S) {
    double s = 0, mx = 0, my = 0, xx = 0, yy = 0, xy = 0;
    const float *b = img + S * S;
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) { double w = b[y * S + x] > 0 ? b[y * S + x] : 0; s += w; mx += w * x; my += w * y; }
    mx /= s; my /= s;
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            double w = b[y * S + x] > 0 ? b[y * S + x] : 0, dx = x - mx, dy = y - my;
            xx += w * dx * dx; yy += w * dy * dy; xy += w * dx * dy;
        }
    double tr = xx + yy, det = xx * yy - xy * xy, d = sqrt(tr * tr / 4 - det);
    return sqrt((tr / 2 - d) / (tr / 2 + d));
}

/* ------------------------------------------------------------- physics */

GX_TEST(synth_sersic_bn_known_values) {
    /* n = 0.5: P(1, b) = 1 - e^-b = 1/2 -> b = ln 2 exactly; n = 1 and 4:
     * the classic values 1.67835 and 7.66925 (Ciotti & Bertin 1999). */
    CHECK_NEAR(gx_sersic_bn(0.5), log(2.0), 1e-9);
    CHECK_NEAR(gx_sersic_bn(1.0), 1.678347, 1e-5);
    CHECK_NEAR(gx_sersic_bn(4.0), 7.669249, 1e-5);
}

GX_TEST(synth_comoving_distance) {
    /* Flat LCDM H0 70, Om 0.3: D_C(0.1) = 418.4 Mpc, D_C(1) = 3303.8 Mpc
     * (Wright's cosmology calculator). */
    CHECK_NEAR(gx_synth_dist_comoving(0.1) / 418.4, 1.0, 2e-3);
    CHECK_NEAR(gx_synth_dist_comoving(1.0) / 3303.8, 1.0, 2e-3);
}

GX_TEST(synth_half_light_radius_before_psf) {
    /* Sersic n = 1, 2.5, 4 with r_e = 6 / 10 / 10 px (lsst scale 0.2"): the measured
     * half-light radius (against the analytic total) within 5%. */
    const double ns[3] = { 1.0, 2.5, 4.0 };
    for (int k = 0; k < 3; k++) {
        gx_synth_obj o;
        int S = k == 0 ? 64 : 256;
        double re = k == 0 ? 1.2 : 2.0;
        one_comp(&o, re, ns[k], 1.0, 100.0);
        float *img = render(&o, 2, S, 0);
        double r = half_light(img, S, 0.2, 100.0);
        CHECK_MSG(fabs(r / re - 1) < 0.05, "n=%g: r_half %.4f want %.4f", ns[k], r, re);
        printf("    measured: n=%.1f r_half/r_e = %.4f\n", ns[k], r / re);
        free(img);
    }
}

GX_TEST(synth_psf_keeps_flux) {
    /* A compact galaxy well inside the stamp: the PSF + binning keep the
     * flux (kernels renormalised; truncation only at 3.5 sigma). */
    gx_synth_obj o;
    one_comp(&o, 0.5, 1.0, 0.6, 50.0);
    for (int sv = 0; sv < GX_SYNTH_NSURVEY; sv++) {
        float *img = render(&o, sv, 48, 1);
        double s = 0;
        for (int i = 0; i < 48 * 48; i++) s += img[48 * 48 + i];
        CHECK_MSG(fabs(s / 50.0 - 1) < 0.01, "survey %d flux %.3f", sv, s);
        printf("    measured: survey %d flux after PSF / true = %.5f\n", sv, s / 50.0);
        free(img);
    }
}

GX_TEST(synth_noise_matches_depth) {
    /* (1) Blank sky: the pixel standard deviation equals the sky sigma of
     * the depth map at that position within 10%. (2) Depth: a point source
     * at the 5-sigma magnitude, measured with the optimal PSF-weighted
     * estimator (S/N = sqrt(sum P^2) F / sigma), has S/N 5 within 10%. */
    gx_synth_opts opt;
    gx_synth_opts_default(&opt);
    opt.seed = 7;
    for (int sv = 0; sv < GX_SYNTH_NSURVEY; sv++) {
        int S = 64;
        gx_synth_obj o;
        one_comp(&o, 0.005, 0.5, 1.0, 0.0);
        o.ra = 153.3; o.dec = 6.1;
        double depth = gx_synth_depth(&opt, sv, o.ra, o.dec);
        float *img = calloc(3 * (size_t)S * S, sizeof(float));
        gx_synth_noise(&opt, &o, sv, S, img, 12345);
        for (int b = 0; b < 3; b++) {
            double s = 0, s2 = 0;
            for (int i = 0; i < S * S; i++) { s += img[b * S * S + i]; s2 += img[b * S * S + i] * (double)img[b * S * S + i]; }
            double sd = sqrt(s2 / (S * S) - (s / (S * S)) * (s / (S * S)));
            double want = gx_synth_sky_sigma(sv, b, depth);
            CHECK_MSG(fabs(sd / want - 1) < 0.1, "survey %d band %d: sd %.5g want %.5g", sv, b, sd, want);
            if (b == 1) printf("    measured: survey %d sky sd / sigma(depth) = %.4f\n", sv, sd / want);
        }
        free(img);
        /* point source at the r-band 5-sigma depth */
        double f = pow(10.0, -0.4 * (depth - 22.5));
        one_comp(&o, 0.005, 0.5, 1.0, f);
        img = render(&o, sv, S, 1);
        double p2 = 0;
        for (int i = 0; i < S * S; i++) p2 += (double)img[S * S + i] * img[S * S + i];
        double snr = sqrt(p2) / gx_synth_sky_sigma(sv, 1, depth);
        CHECK_MSG(fabs(snr / 5.0 - 1) < 0.1, "survey %d: S/N at depth %.3f", sv, snr);
        printf("    measured: survey %d point-source S/N at the 5-sigma depth = %.3f\n", sv, snr);
        free(img);
    }
}

GX_TEST(synth_depth_map_smooth) {
    /* The depth varies over the footprint within +-amp and smoothly (two
     * points 0.01 deg apart differ by < 0.01 mag). */
    gx_synth_opts o;
    gx_synth_opts_default(&o);
    double lo = 99, hi = -99;
    for (int i = 0; i <= 50; i++)
        for (int j = 0; j <= 50; j++) {
            double ra = 150 + 10.0 * i / 50, dec = 10.0 * j / 50, d = gx_synth_depth(&o, 0, ra, dec);
            lo = d < lo ? d : lo; hi = d > hi ? d : hi;
            CHECK(fabs(gx_synth_depth(&o, 0, ra + 0.01, dec) - d) < 0.01);
        }
    CHECK(lo >= 23.6 - 0.3 - 1e-9 && hi <= 23.6 + 0.3 + 1e-9);
    CHECK(hi - lo > 0.2);   /* it does vary */
}

static double pearson(const double *x, const double *y, int n) {
    double mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < n; i++) { mx += x[i] / n; my += y[i] / n; }
    for (int i = 0; i < n; i++) {
        sxy += (x[i] - mx) * (y[i] - my); sxx += (x[i] - mx) * (x[i] - mx); syy += (y[i] - my) * (y[i] - my);
    }
    return sxy / sqrt(sxx * syy);
}

GX_TEST(synth_colour_redshift_and_selection) {
    /* g-r rises with z (as the templates redden): Pearson r > 0.4 over all
     * classes, > 0.8 within one class. Apparent size falls with z. The
     * spectroscopic sample is r < 17.77 only, and among r < 17.77 objects
     * the red half is selected more often than the blue half. */
    gx_synth_opts o;
    gx_synth_opts_default(&o);
    o.seed = 3;
    enum { N = 3000 };
    static double z[N], gr[N], lr[N], zc[N], grc[N];
    int nc = 0, sel = 0, bad = 0, red_b = 0, red_s = 0, blue_b = 0, blue_s = 0;
    for (int i = 0; i < N; i++) {
        gx_synth_obj ob;
        gx_synth_draw(&o, i, -1, &ob);
        z[i] = ob.z; gr[i] = ob.color_gr; lr[i] = log(ob.r_eff);
        if (ob.cls == 2) { zc[nc] = ob.z; grc[nc] = ob.color_gr; nc++; }
        sel += ob.spec_selected;
        if (ob.spec_selected && ob.mag_r >= 17.77) bad++;
        if (ob.mag_r < 17.77) {
            if (ob.color_gr > 0.8) { red_b++; red_s += ob.spec_selected; }
            else { blue_b++; blue_s += ob.spec_selected; }
        }
        CHECK(ob.z >= 0.005 && ob.z <= 1.2);
    }
    double rc = pearson(z, gr, N), rcc = pearson(zc, grc, nc), rs = pearson(z, lr, N);
    CHECK_MSG(rc > 0.4, "corr(z, g-r) = %.3f", rc);
    CHECK_MSG(rcc > 0.8, "corr(z, g-r | round smooth) = %.3f", rcc);
    CHECK_MSG(rs < -0.5, "corr(z, log r_eff) = %.3f", rs);
    printf("    measured: corr(z,g-r) %.3f, within class 2 %.3f, corr(z,log r_eff) %.3f, "
           "spec completeness red %d/%d blue %d/%d\n", rc, rcc, rs, red_s, red_b, blue_s, blue_b);
    CHECK(bad == 0);
    CHECK(sel > 10);
    CHECK(red_b > 0 && blue_b > 0);
    CHECK_MSG((double)red_s / red_b > (double)blue_s / (blue_b + 1e-9) + 0.1,
              "completeness red %d/%d blue %d/%d", red_s, red_b, blue_s, blue_b);
}

GX_TEST(synth_class_frequencies) {
    /* Default frequencies follow the Galaxy10 counts (class 4 rarest, 2
     * most common); --balanced is uniform; lenses only with 11 classes. */
    gx_synth_opts o;
    gx_synth_opts_default(&o);
    int cnt[11] = { 0 }, bal[11] = { 0 };
    for (int i = 0; i < 4000; i++) { gx_synth_obj ob; gx_synth_draw(&o, i, -1, &ob); cnt[ob.cls]++; }
    o.balanced = 1; o.n_classes = 11;
    for (int i = 0; i < 4000; i++) { gx_synth_obj ob; gx_synth_draw(&o, i, -1, &ob); bal[ob.cls]++; }
    CHECK(cnt[10] == 0);
    CHECK(cnt[4] < cnt[0] && cnt[0] < cnt[2]);
    CHECK_NEAR(cnt[2] / 4000.0, 2645.0 / 17736.0, 0.03);
    for (int c = 0; c < 11; c++) CHECK_MSG(fabs(bal[c] / 4000.0 - 1 / 11.0) < 0.03, "class %d: %d", c, bal[c]);
}

GX_TEST(synth_class_separability_moments) {
    /* Axis ratios measured on noiseless lsst-y10 images (second moments,
     * PSF included) order the smooth classes 2 > 3 > 4 on average, and
     * edge-on disks (8) are thin. Only objects with r_eff > 0.6" count, so
     * the PSF does not round everything. */
    gx_synth_opts o;
    gx_synth_opts_default(&o);
    o.seed = 11;
    const int cls[4] = { 2, 3, 4, 8 };
    double mean[4];
    int S = 40;
    for (int k = 0; k < 4; k++) {
        double s = 0;
        int m = 0;
        for (int i = 0; m < 25 && i < 400; i++) {
            gx_synth_obj ob;
            gx_synth_draw(&o, i, cls[k], &ob);
            if (ob.r_eff < 0.6 || ob.r_eff > 2.0) continue;
            float *img = render(&ob, 3, S, 1);
            s += moment_q(img, S);
            m++;
            free(img);
        }
        CHECK(m >= 10);
        mean[k] = s / m;
    }
    printf("    measured: image q round %.3f in-between %.3f cigar %.3f edge-on %.3f\n",
           mean[0], mean[1], mean[2], mean[3]);
    CHECK_MSG(mean[0] > mean[1] + 0.05 && mean[1] > mean[2] + 0.1,
              "q: round %.3f in-between %.3f cigar %.3f", mean[0], mean[1], mean[2]);
    CHECK_MSG(mean[3] < 0.45, "edge-on q %.3f", mean[3]);
}

GX_TEST(synth_stretch_u8) {
    /* Zero flux maps to 0, the stretch is monotonic and saturates at 255. */
    gx_synth_opts o;
    gx_synth_opts_default(&o);
    float img[3 * 4];
    for (int k = 0; k < 4; k++) img[k] = img[4 + k] = img[8 + k] = (float)(k == 0 ? 0 : pow(10.0, k - 2));
    uint8_t u[12];
    gx_synth_to_u8(&o, 0, 2, img, u);
    CHECK(u[0] == 0 && u[1] == 0 && u[2] == 0);
    for (int k = 1; k < 4; k++) CHECK(u[k * 3 + 1] > u[(k - 1) * 3 + 1] || u[k * 3 + 1] == 255);
    CHECK(u[3 * 3 + 1] == 255 || u[3 * 3 + 1] > 200);
}

/* ------------------------------------------------------------- files */

static unsigned char *slurp(const char *p, long *n) {
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)*n);
    if (fread(b, 1, (size_t)*n, f) != (size_t)*n) { free(b); b = NULL; }
    fclose(f);
    return b;
}

static void tmpname(char *buf, size_t n, const char *tag) {
    snprintf(buf, n, "/tmp/gx_synth_test_%d_%s.h5", (int)getpid(), tag);
}

GX_TEST(synth_file_deterministic) {
    /* Same seed + flags -> byte-identical files, also with 1 vs 2 threads;
     * another seed -> different bytes. */
    gx_synth_opts o;
    gx_synth_opts_default(&o);
    o.n = 70; o.size = 24; o.seed = 5; o.n_classes = 11;
    char a[256], b[256], c[256];
    tmpname(a, sizeof a, "a"); tmpname(b, sizeof b, "b"); tmpname(c, sizeof c, "c");
    gx_err err;
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    CHECK(gx_synth_write(&o, a, NULL, "test", NULL, NULL, &err) == GX_OK);
    omp_set_num_threads(2);
    CHECK(gx_synth_write(&o, b, NULL, "test", NULL, NULL, &err) == GX_OK);
    omp_set_num_threads(nt);
    o.seed = 6;
    CHECK(gx_synth_write(&o, c, NULL, "test", NULL, NULL, &err) == GX_OK);
    long na = 0, nb = 0, nc = 0;
    unsigned char *A = slurp(a, &na), *B = slurp(b, &nb), *C = slurp(c, &nc);
    CHECK(A && B && C);
    CHECK(na == nb && na > 70 * 24 * 24 * 3);
    CHECK(A && B && na == nb && memcmp(A, B, (size_t)na) == 0);
    CHECK(A && C && (na != nc || memcmp(A, C, (size_t)na) != 0));
    free(A); free(B); free(C);
    remove(a); remove(b); remove(c);
}

static hid_t open_ds(hid_t f, const char *name, int *ndim, hsize_t *dims, H5T_class_t *cls, size_t *sz) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) return d;
    hid_t s = H5Dget_space(d), t = H5Dget_type(d);
    *ndim = H5Sget_simple_extent_dims(s, dims, NULL);
    *cls = H5Tget_class(t);
    *sz = H5Tget_size(t);
    H5Sclose(s); H5Tclose(t);
    return d;
}

GX_TEST(synth_file_layout_paired) {
    /* Galaxy10 names, shapes and dtypes; extras; meta attribute; paired
     * rows share the object (same ra, dec, z, class) across domains. */
    gx_synth_opts o;
    gx_synth_opts_default(&o);
    o.n = 10; o.size = 20; o.seed = 9; o.paired = 1; o.n_surveys = 4;
    for (int s = 0; s < 4; s++) o.surveys[s] = s;
    char p[256];
    tmpname(p, sizeof p, "layout");
    gx_err err;
    CHECK(gx_synth_write(&o, p, NULL, "galaxy-synth --paired", NULL, NULL, &err) == GX_OK);
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    CHECK(f >= 0);
    if (f < 0) return;
    int nd;
    hsize_t dims[4];
    H5T_class_t cl;
    size_t sz;
    hid_t d = open_ds(f, "images", &nd, dims, &cl, &sz);
    CHECK(d >= 0 && nd == 4 && dims[0] == 40 && dims[1] == 20 && dims[2] == 20 && dims[3] == 3);
    CHECK(cl == H5T_INTEGER && sz == 1);
    H5Dclose(d);
    const char *u8s[] = { "ans", "domain", "spec_selected" };
    for (int k = 0; k < 3; k++) {
        d = open_ds(f, u8s[k], &nd, dims, &cl, &sz);
        CHECK_MSG(d >= 0 && nd == 1 && dims[0] == 40 && cl == H5T_INTEGER && sz == 1, "%s", u8s[k]);
        if (d >= 0) H5Dclose(d);
    }
    const char *f64s[] = { "ra", "dec", "redshift", "pxscale" };
    for (int k = 0; k < 4; k++) {
        d = open_ds(f, f64s[k], &nd, dims, &cl, &sz);
        CHECK_MSG(d >= 0 && nd == 1 && dims[0] == 40 && cl == H5T_FLOAT && sz == 8, "%s", f64s[k]);
        if (d >= 0) H5Dclose(d);
    }
    const char *f32s[] = { "mag_r", "color_gr", "r_eff_arcsec", "sersic_n", "axis_ratio", "position_angle" };
    for (int k = 0; k < 6; k++) {
        d = open_ds(f, f32s[k], &nd, dims, &cl, &sz);
        CHECK_MSG(d >= 0 && nd == 1 && dims[0] == 40 && cl == H5T_FLOAT && sz == 4, "%s", f32s[k]);
        if (d >= 0) H5Dclose(d);
    }
    double ra[40], z[40], px[40];
    uint8_t dom[40], ans[40];
    d = H5Dopen2(f, "ra", H5P_DEFAULT); H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, ra); H5Dclose(d);
    d = H5Dopen2(f, "redshift", H5P_DEFAULT); H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, z); H5Dclose(d);
    d = H5Dopen2(f, "pxscale", H5P_DEFAULT); H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, px); H5Dclose(d);
    d = H5Dopen2(f, "domain", H5P_DEFAULT); H5Dread(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, dom); H5Dclose(d);
    d = H5Dopen2(f, "ans", H5P_DEFAULT); H5Dread(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, ans); H5Dclose(d);
    for (int i = 0; i < 40; i++) {
        CHECK(dom[i] == i % 4 && ans[i] < 10);
        CHECK_NEAR(px[i], gx_synth_survey_get(i % 4)->pxscale, 1e-12);
        CHECK(ra[i] == ra[i - i % 4] && z[i] == z[i - i % 4] && ans[i] == ans[i - i % 4]);
    }
    CHECK(ra[0] != ra[4]);
    hid_t at = H5Aopen(f, "meta", H5P_DEFAULT);
    CHECK(at >= 0);
    if (at >= 0) {
        hid_t t = H5Aget_type(at);
        size_t n = H5Tget_size(t);
        char *m = calloc(n + 1, 1);
        H5Aread(at, t, m);
        CHECK(strstr(m, "\"seed\": 9") && strstr(m, "--paired") && strstr(m, GX_SYNTH_VERSION));
        free(m); H5Tclose(t); H5Aclose(at);
    }
    H5Fclose(f);
    remove(p);
}

GX_TEST(synth_fits_folder) {
    /* --fits DIR: one 3-plane FITS per row and a CSV with a header + N rows. */
    gx_synth_opts o;
    gx_synth_opts_default(&o);
    o.n = 3; o.size = 16;
    char p[256], dir[256], fn[300];
    tmpname(p, sizeof p, "fits");
    snprintf(dir, sizeof dir, "/tmp/gx_synth_test_%d_fitsdir", (int)getpid());
    gx_err err;
    CHECK(gx_synth_write(&o, p, dir, "t", NULL, NULL, &err) == GX_OK);
    long n = 0;
    snprintf(fn, sizeof fn, "%s/0000002.fits", dir);
    unsigned char *b = slurp(fn, &n);
    CHECK(b && n >= 2880 * 2 && memcmp(b, "SIMPLE  =", 9) == 0);
    free(b);
    snprintf(fn, sizeof fn, "%s/catalog.csv", dir);
    b = slurp(fn, &n);
    int lines = 0;
    for (long i = 0; b && i < n; i++) lines += b[i] == '\n';
    CHECK(lines == 4);
    free(b);
    for (int i = 0; i < 3; i++) { snprintf(fn, sizeof fn, "%s/%07d.fits", dir, i); remove(fn); }
    snprintf(fn, sizeof fn, "%s/catalog.csv", dir); remove(fn);
    rmdir(dir); remove(p);
}

GX_TEST(synth_bad_output_path_reports) {
    /* An unwritable path returns an error naming the file, no abort. */
    gx_synth_opts o;
    gx_synth_opts_default(&o);
    o.n = 2; o.size = 16;
    gx_err err;
    CHECK(gx_synth_write(&o, "/nonexistent_dir/x.h5", NULL, "t", NULL, NULL, &err) == GX_ERR_IO);
    CHECK(strstr(err.msg, "/nonexistent_dir/x.h5") != NULL);
}

GX_TEST(synth_roundtrip_through_dataset_loader) {
    /* The io loader (gx_dataset_open) reads both outputs: the HDF5 file with
     * its extra columns, and the FITS + catalog.csv folder; labels agree. */
    gx_synth_opts o;
    gx_synth_opts_default(&o);
    o.n = 6; o.size = 16; o.n_classes = 11; o.balanced = 1; o.seed = 21;
    char p[256], dir[256], fn[300];
    tmpname(p, sizeof p, "rt");
    snprintf(dir, sizeof dir, "/tmp/gx_synth_test_%d_rtdir", (int)getpid());
    gx_err err;
    CHECK(gx_synth_write(&o, p, dir, "t", NULL, NULL, &err) == GX_OK);
    gx_dataset *h = NULL, *f = NULL;
    CHECK_MSG(gx_dataset_open(p, NULL, &h, &err) == GX_OK, "%s", err.msg);
    CHECK_MSG(gx_dataset_open(dir, NULL, &f, &err) == GX_OK, "%s", err.msg);
    if (h && f) {
        CHECK(h->n == 6 && f->n == 6 && h->h == 16 && h->w == 16);
        CHECK(h->mag_r && h->spec_selected && h->domain && h->sersic_n);
        for (int i = 0; i < 6; i++) {
            gx_synth_obj ob;
            gx_synth_draw(&o, i, -1, &ob);
            CHECK(h->label[i] == ob.cls && f->label[i] == ob.cls);
            CHECK_NEAR(h->redshift[i], ob.z, 1e-12);
            CHECK_NEAR(f->redshift[i], ob.z, 1e-5);
        }
        gx_image im;
        CHECK_MSG(gx_dataset_get(f, 2, &im, &err) == GX_OK, "%s", err.msg);
        CHECK(im.c == 3 && im.h == 16 && im.w == 16);
        gx_image_free(&im);
    }
    gx_dataset_close(h);
    gx_dataset_close(f);
    for (int i = 0; i < 6; i++) { snprintf(fn, sizeof fn, "%s/%07d.fits", dir, i); remove(fn); }
    snprintf(fn, sizeof fn, "%s/catalog.csv", dir); remove(fn);
    rmdir(dir); remove(p);
}
