/*
 * gx_synth_h5.c — output of the synthetic survey: the HDF5 file in the
 * Galaxy10 DECaLS layout, the optional FITS + CSV folder, and the preview.
 *
 * Design: rows are rendered in blocks of GX_BLOCK (OpenMP over the rows of
 * a block, one scratch buffer per thread) and each block is written with
 * hyperslab selections into contiguous datasets sized up front, so memory
 * does not depend on N. Row r depends only on (seed, object index, survey),
 * never on the thread that rendered it. Byte-identical files: object
 * modification-time tracking is off on every dataset, nothing else in the
 * file depends on the clock. The file is written to PATH.tmp and renamed.
 */
#include "gx_synth.h"
#include "gx_image.h"

#include <errno.h>
#include <fitsio.h>
#include <hdf5.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define GX_BLOCK 64

/* Object index and survey of row r. Paired: every object in every listed
 * survey (rows obj*ns .. obj*ns+ns-1). Otherwise surveys take turns. */
static void gx_row_map(const gx_synth_opts *o, int64_t r, int64_t *obj, int *sv) {
    if (o->paired) { *obj = r / o->n_surveys; *sv = o->surveys[r % o->n_surveys]; }
    else           { *obj = r;                *sv = o->surveys[r % o->n_surveys]; }
}

/* ----------------------------------------------------------- datasets */

enum { D_IMAGES, D_ANS, D_RA, D_DEC, D_Z, D_PX, D_DOMAIN, D_SPEC, D_MAGR, D_GR,
       D_REFF, D_N, D_Q, D_PA, D_COUNT };
static const char *const gx_dnames[D_COUNT] = {
    "images", "ans", "ra", "dec", "redshift", "pxscale", "domain", "spec_selected",
    "mag_r", "color_gr", "r_eff_arcsec", "sersic_n", "axis_ratio", "position_angle" };

/* One block of rows, as the datasets hold them. */
typedef struct {
    uint8_t *img, ans[GX_BLOCK], dom[GX_BLOCK], spec[GX_BLOCK];
    double ra[GX_BLOCK], dec[GX_BLOCK], z[GX_BLOCK], px[GX_BLOCK];
    float magr[GX_BLOCK], gr[GX_BLOCK], reff[GX_BLOCK], n[GX_BLOCK], q[GX_BLOCK], pa[GX_BLOCK];
    float *flux;          /* rows x 3 x S x S physical images (FITS only) */
} gx_block;

static hid_t gx_dtype(int d) {
    if (d <= D_ANS || d == D_DOMAIN || d == D_SPEC) return H5T_NATIVE_UINT8;
    if (d <= D_PX) return H5T_NATIVE_DOUBLE;
    return H5T_NATIVE_FLOAT;
}
/* Stored (file) types: fixed little-endian, whatever the host. */
static hid_t gx_ftype(int d) {
    if (d <= D_ANS || d == D_DOMAIN || d == D_SPEC) return H5T_STD_U8LE;
    if (d <= D_PX) return H5T_IEEE_F64LE;
    return H5T_IEEE_F32LE;
}
static void *gx_block_col(gx_block *b, int d) {
    void *p[D_COUNT] = { b->img, b->ans, b->ra, b->dec, b->z, b->px, b->dom, b->spec,
                         b->magr, b->gr, b->reff, b->n, b->q, b->pa };
    return p[d];
}

/* Renders rows [r0, r0+m) into the block (parallel over rows). */
static void gx_render_block(const gx_synth_opts *o, int64_t r0, int m, gx_block *B,
                            float *scratch, size_t sc_n) {
    int S = o->size;
    size_t px3 = 3 * (size_t)S * S;
    #pragma omp parallel for schedule(dynamic, 1)
    for (int k = 0; k < m; k++) {
        float *sc = scratch + (size_t)omp_get_thread_num() * (sc_n + px3), *img = sc + sc_n;
        int64_t oi; int sv;
        gx_row_map(o, r0 + k, &oi, &sv);
        gx_synth_obj obj;
        gx_synth_draw(o, oi, -1, &obj);
        gx_synth_render(&obj, sv, S, img, sc);
        if (o->noise) gx_synth_noise(o, &obj, sv, S, img, (uint64_t)oi * 8 + (uint64_t)sv);
        gx_synth_to_u8(o, sv, S, img, B->img + (size_t)k * px3);
        if (B->flux) memcpy(B->flux + (size_t)k * px3, img, px3 * sizeof(float));
        B->ans[k] = (uint8_t)obj.cls; B->dom[k] = (uint8_t)sv; B->spec[k] = (uint8_t)obj.spec_selected;
        B->ra[k] = obj.ra; B->dec[k] = obj.dec; B->z[k] = obj.z;
        B->px[k] = gx_synth_survey_get(sv)->pxscale;
        B->magr[k] = (float)obj.mag_r; B->gr[k] = (float)obj.color_gr; B->reff[k] = (float)obj.r_eff;
        B->n[k] = (float)obj.sersic_n; B->q[k] = (float)obj.q; B->pa[k] = (float)obj.pa;
    }
}

/* ------------------------------------------------------------- FITS */

static gx_status gx_write_fits_row(const char *dir, int64_t r, int S, const float *img,
                                   const uint8_t *cls, int sv, gx_err *err) {
    char fn[4200];
    snprintf(fn, sizeof fn, "!%s/%07lld.fits", dir, (long long)r);  /* '!' overwrites */
    fitsfile *f = NULL;
    int st = 0;
    long ax[3] = { S, S, 3 };
    fits_create_file(&f, fn, &st);
    fits_create_img(f, FLOAT_IMG, 3, ax, &st);
    int c = *cls;
    fits_update_key(f, TINT, "CLASS", &c, "Galaxy10 class id", &st);
    fits_update_key(f, TSTRING, "SURVEY", (void *)gx_synth_survey_get(sv)->name, "domain", &st);
    fits_update_key(f, TSTRING, "BANDS", "g,r,z", "planes", &st);
    fits_update_key(f, TSTRING, "BUNIT", "nanomaggy", "per pixel", &st);
    fits_write_img(f, TFLOAT, 1, 3 * (LONGLONG)S * S, (void *)img, &st);
    fits_close_file(f, &st);
    if (st) {
        char m[FLEN_STATUS];
        fits_get_errstatus(st, m);
        return gx_err_set(err, GX_ERR_IO, "synth: --fits %s: %s", fn + 1, m);
    }
    return GX_OK;
}

/* ------------------------------------------------------------- write */

static gx_status gx_h5_fail(gx_err *err, const char *what, const char *path) {
    return gx_err_set(err, GX_ERR_IO, "synth: HDF5 %s failed for %s", what, path);
}

gx_status gx_synth_write(const gx_synth_opts *o, const char *path, const char *fits_dir,
                         const char *command, gx_synth_progress_fn progress, void *arg,
                         gx_err *err) {
    if (o->n <= 0 || o->size < 8 || o->n_surveys < 1)
        return gx_err_set(err, GX_ERR_INVALID, "synth: bad n %lld / size %d", (long long)o->n, o->size);
    int64_t rows = o->paired ? o->n * o->n_surveys : o->n;
    int S = o->size;
    size_t px3 = 3 * (size_t)S * S, sc_n = gx_synth_scratch_floats(S);
    FILE *csv = NULL;
    if (fits_dir) {
        mkdir(fits_dir, 0777);   /* an existing folder is fine */
        char fn[4200];
        snprintf(fn, sizeof fn, "%s/catalog.csv", fits_dir);
        if (!(csv = fopen(fn, "w")))
            return gx_err_set(err, GX_ERR_IO, "synth: --fits: cannot write %s: %s", fn, strerror(errno));
        fprintf(csv, "file,label,ra,dec,redshift,pxscale,domain,spec_selected,mag_r,color_gr,"
                     "r_eff_arcsec,sersic_n,axis_ratio,position_angle\n");
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    /* HDF5 would print its own error stack to stderr; we report one
     * message through gx_err instead (the status of every call is kept). */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) { if (csv) fclose(csv); return gx_h5_fail(err, "create", tmp); }
    /* Contiguous layout (no chunking): N is known up front, so the file
     * needs no chunk index and a hyperslab write per block is a plain
     * pwrite. Time tracking off: otherwise every dataset's object header
     * holds its creation time and no two runs give the same bytes. */
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_obj_track_times(dcpl, 0);
    hid_t ds[D_COUNT];
    for (int d = 0; d < D_COUNT; d++) {
        hsize_t dims[4] = { (hsize_t)rows, (hsize_t)S, (hsize_t)S, 3 };
        hid_t sp = H5Screate_simple(d == D_IMAGES ? 4 : 1, dims, NULL);
        ds[d] = H5Dcreate2(f, gx_dnames[d], gx_ftype(d), sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        H5Sclose(sp);
    }
    /* meta attribute: generating command, seed, version. */
    char meta[8192];
    snprintf(meta, sizeof meta, "{\"generator\": \"galaxy-synth\", \"version\": \"%s\", \"seed\": %llu, "
             "\"command\": \"%s\"}", GX_SYNTH_VERSION, (unsigned long long)o->seed, command ? command : "");
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, strlen(meta));
    hid_t asp = H5Screate(H5S_SCALAR);
    hid_t at = H5Acreate2(f, "meta", st, asp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t ok = H5Awrite(at, st, meta);
    H5Aclose(at); H5Sclose(asp); H5Tclose(st);

    /* One scratch area (oversampled bands + PSF buffers + image) per
     * thread, allocated once: nothing is allocated per object. */
    int nt = omp_get_max_threads();
    float *scratch = malloc((size_t)nt * (sc_n + px3) * sizeof(float));
    gx_block B;
    memset(&B, 0, sizeof B);
    B.img = malloc(GX_BLOCK * px3);
    if (fits_dir) B.flux = malloc(GX_BLOCK * px3 * sizeof(float));
    gx_status rc = GX_OK;
    if (!scratch || !B.img || (fits_dir && !B.flux)) rc = gx_err_set(err, GX_ERR_NOMEM, "synth: out of memory");
    for (int64_t r0 = 0; rc == GX_OK && ok >= 0 && r0 < rows; r0 += GX_BLOCK) {
        int m = rows - r0 < GX_BLOCK ? (int)(rows - r0) : GX_BLOCK;
        gx_render_block(o, r0, m, &B, scratch, sc_n);
        for (int d = 0; d < D_COUNT && ok >= 0; d++) {
            hsize_t start[4] = { (hsize_t)r0, 0, 0, 0 }, cnt[4] = { (hsize_t)m, (hsize_t)S, (hsize_t)S, 3 };
            int nd = d == D_IMAGES ? 4 : 1;
            hid_t fs = H5Dget_space(ds[d]);
            H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL);
            hid_t ms = H5Screate_simple(nd, cnt, NULL);
            ok = H5Dwrite(ds[d], gx_dtype(d), ms, fs, H5P_DEFAULT, gx_block_col(&B, d));
            H5Sclose(ms); H5Sclose(fs);
        }
        for (int k = 0; fits_dir && k < m && rc == GX_OK; k++) {
            rc = gx_write_fits_row(fits_dir, r0 + k, S, B.flux + (size_t)k * px3, &B.ans[k], B.dom[k], err);
            fprintf(csv, "%07lld.fits,%d,%.8f,%.8f,%.6f,%.3f,%d,%d,%.4f,%.4f,%.4f,%.3f,%.4f,%.4f\n",
                    (long long)(r0 + k), B.ans[k], B.ra[k], B.dec[k], B.z[k], B.px[k], B.dom[k],
                    B.spec[k], B.magr[k], B.gr[k], B.reff[k], B.n[k], B.q[k], B.pa[k]);
        }
        /* Progress after every block; the CLI throttles what it prints. */
        if (progress) progress(r0 + m, rows, arg);
    }
    free(scratch); free(B.img); free(B.flux);
    for (int d = 0; d < D_COUNT; d++) if (ds[d] >= 0) H5Dclose(ds[d]); else ok = -1;
    H5Pclose(dcpl);
    if (H5Fclose(f) < 0) ok = -1;
    if (csv && fclose(csv) != 0 && rc == GX_OK)
        rc = gx_err_set(err, GX_ERR_IO, "synth: --fits: writing catalog.csv failed");
    if (rc == GX_OK && ok < 0) rc = gx_h5_fail(err, "write", tmp);
    if (rc == GX_OK && rename(tmp, path) != 0)
        rc = gx_err_set(err, GX_ERR_IO, "synth: cannot rename %s to %s: %s", tmp, path, strerror(errno));
    if (rc != GX_OK) remove(tmp);
    return rc;
}

/* ------------------------------------------------------------ preview */

gx_status gx_synth_preview(const gx_synth_opts *o, const char *path, gx_err *err) {
    /* Grid: one row per class, per survey a group of 10 columns (the same
     * ten galaxies in every survey, so the groups compare surveys). */
    const int ex = 10, gap = 6, S = o->size;
    int ns = o->n_surveys, W = ns * ex * S + (ns - 1) * gap, H = o->n_classes * S;
    size_t px3 = 3 * (size_t)S * S, sc_n = gx_synth_scratch_floats(S);
    float *rgb = calloc(3 * (size_t)W * H, sizeof(float));
    /* One scratch area (oversampled bands + PSF buffers + image) per
     * thread, allocated once: nothing is allocated per object. */
    int nt = omp_get_max_threads();
    float *scratch = malloc((size_t)nt * (sc_n + px3 + px3) * sizeof(float));
    if (!rgb || !scratch) { free(rgb); free(scratch); return gx_err_set(err, GX_ERR_NOMEM, "synth: preview: out of memory"); }
    for (size_t k = 0; k < 3 * (size_t)W * H; k++) rgb[k] = 1.0f;   /* white gaps */
    #pragma omp parallel for schedule(dynamic, 1) collapse(2)
    for (int c = 0; c < o->n_classes; c++)
        for (int e = 0; e < ex * ns; e++) {
            float *sc = scratch + (size_t)omp_get_thread_num() * (sc_n + 2 * px3), *img = sc + sc_n;
            uint8_t *u8 = (uint8_t *)(img + px3);
            int si = e / ex, sv = o->surveys[si];
            int64_t oi = (int64_t)c * 100000 + e % ex;
            gx_synth_obj obj;
            gx_synth_draw(o, oi, c, &obj);
            gx_synth_render(&obj, sv, S, img, sc);
            if (o->noise) gx_synth_noise(o, &obj, sv, S, img, (uint64_t)oi * 8 + (uint64_t)sv);
            gx_synth_to_u8(o, sv, S, img, u8);
            int x0 = si * (ex * S + gap) + (e % ex) * S, y0 = c * S;
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++)
                    for (int b = 0; b < 3; b++)   /* display RGB = (z, r, g) */
                        rgb[(size_t)(2 - b) * W * H + (size_t)(y0 + y) * W + x0 + x] =
                            u8[((size_t)y * S + x) * 3 + b] / 255.0f;
        }
    free(scratch);
    uint8_t *png = NULL;
    size_t n = 0;
    gx_status rc = gx_png_encode(rgb, 3, H, W, &png, &n, err);
    free(rgb);
    if (rc != GX_OK) return rc;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *fp = fopen(tmp, "wb");
    if (!fp) { free(png); return gx_err_set(err, GX_ERR_IO, "synth: --preview: cannot write %s: %s", tmp, strerror(errno)); }
    size_t wr = fwrite(png, 1, n, fp);
    free(png);
    if (fclose(fp) != 0 || wr != n || rename(tmp, path) != 0) {
        remove(tmp);
        return gx_err_set(err, GX_ERR_IO, "synth: --preview: writing %s failed", path);
    }
    return GX_OK;
}
