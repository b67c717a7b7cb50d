/*
 * test_dataset.c — datasets (io/gx_dataset.h): class table, CSV catalogue
 * parser, Galaxy10 HDF5 loader, folder datasets, stratified splits.
 *
 * The HDF5 fixtures come from tests/io/gen_dataset_fixtures.py; every value
 * there is a closed-form function of the sample index, recomputed here
 * (keep the formulas in sync). Malformed HDF5 files (missing key, wrong
 * dtype, wrong rank, length mismatch, label out of range) are written at
 * test time with the HDF5 C API into a temporary directory, as are the
 * PNG files of the folder tests.
 */
#include "gx_dataset.h"
#include "gx_test.h"

#include <hdf5.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIX_N 24
#define FIX_H 12
#define FIX_W 16

/* tests/fixtures/io/<name>, honouring GX_FIXTURE_DIR. */
static void fix_path(char *out, size_t cap, const char *name) {
    const char *dir = getenv("GX_FIXTURE_DIR");
    snprintf(out, cap, "%s/io/%s", dir ? dir : "tests/fixtures", name);
}

/* The generator's pixel formula. */
static int fix_pixel(int i, int y, int x, int c) { return (i * 37 + y * 11 + x * 3 + c * 101) % 256; }

static int contains(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

/* ------------------------------------------------------------ classes */

GX_TEST(dataset_class_table) {
    CHECK(strcmp(gx_class_name(0), "Disturbed") == 0);
    CHECK(strcmp(gx_class_name(9), "Edge-on with Bulge") == 0);
    CHECK(strcmp(gx_class_name(GX_CLASS_LENS), "Lens") == 0);
    CHECK(gx_class_name(-1) == NULL && gx_class_name(11) == NULL);
    for (int id = 0; id < GX_CLASSES_MAX; id++) CHECK(gx_class_lookup(gx_class_name(id)) == id);
    CHECK(gx_class_lookup("round smooth") == 2);
    CHECK(gx_class_lookup("  IN_BETWEEN_round-smooth ") == 3);
    CHECK(gx_class_lookup("edge-on without bulge") == 8);
    CHECK(gx_class_lookup("Spiral") == -1);
    CHECK(gx_class_lookup("") == -1);
}

/* ---------------------------------------------------------------- CSV */

static gx_status parse(const char *text, int n_classes, gx_catalog *c, gx_err *err) {
    err->msg[0] = 0;
    return gx_catalog_parse(text, strlen(text), n_classes, c, err);
}

GX_TEST(dataset_csv_parses_grammar) {
    gx_catalog c; gx_err err;
    /* BOM, CRLF, columns in any order, an ignored column, quotes with an
     * embedded comma, "" and a newline, blank lines, labels by id and name. */
    const char *t =
        "\xEF\xBB\xBF" "Redshift,extra, FILE ,label,ra,dec,domain\r\n"
        "0.25,\"x, y\",a.png,3,150.5,-2,1\r\n"
        "\r\n"
        ",\"say \"\"hi\"\"\",\"b,c.png\",round_smooth,nan,1e1,0\r\n"
        "NaN,z,\"multi\nline.png\", Lens ,0,0,255\n";
    CHECK(parse(t, 11, &c, &err) == GX_OK);
    CHECK_MSG(c.n == 3, "n = %lld (%s)", (long long)c.n, err.msg);
    if (c.n == 3) {
        CHECK(strcmp(c.file[0], "a.png") == 0);
        CHECK(strcmp(c.file[1], "b,c.png") == 0);
        CHECK(strcmp(c.file[2], "multi\nline.png") == 0);
        CHECK(c.label[0] == 3 && c.label[1] == 2 && c.label[2] == 10);
        CHECK_NEAR(c.redshift[0], 0.25, 0);
        CHECK(isnan(c.redshift[1]) && isnan(c.redshift[2]));
        CHECK_NEAR(c.ra[0], 150.5, 0);
        CHECK(isnan(c.ra[1]));
        CHECK_NEAR(c.dec[1], 10.0, 0);
        CHECK(c.domain && c.domain[0] == 1 && c.domain[1] == 0 && c.domain[2] == 255);
        CHECK(c.line[0] == 2 && c.line[1] == 4 && c.line[2] == 5);
    }
    gx_catalog_free(&c);
    CHECK(c.n == 0 && c.file == NULL);

    /* Optional columns absent: NaN coordinates, no domain array. */
    CHECK(parse("file,label\nq.jpg,9", 10, &c, &err) == GX_OK);
    CHECK(c.n == 1 && c.label[0] == 9 && isnan(c.ra[0]) && isnan(c.redshift[0]) && !c.domain);
    gx_catalog_free(&c);
}

/* Each malformed catalogue fails with GX_ERR_FORMAT, a zeroed catalogue,
 * and a message holding the listed fragments. */
GX_TEST(dataset_csv_errors_name_line_and_column) {
    struct { const char *text; int n_classes; const char *frag1, *frag2; } cases[] = {
        { "file,ra\na.png,1\n", 11, "missing column 'label'", "line 1" },
        { "label\n1\n", 11, "missing column 'file'", "" },
        { "file,label,redshift\na.png,1,0.1\nb.png,2,abc\n", 11, "line 3", "column redshift: bad number 'abc'" },
        { "file,label,ra\na.png,1,inf\n", 11, "line 2", "column ra: bad number" },
        { "file,label\na.png,Spiral\n", 11, "line 2", "unknown class name 'Spiral'" },
        { "file,label\na.png,10\n", 10, "line 2", "label 10 out of range [0, 10)" },
        { "file,label\na.png,-1\n", 11, "label -1 out of range", "" },
        { "file,label\na.png,Lens\n", 10, "label 10 out of range", "" },
        { "file,label\na.png,1,extra\n", 11, "line 2", "expected 2 fields, got 3" },
        { "file,label\n\"a.png,1\n", 11, "line 2", "unterminated quoted field" },
        { "file,label\n\"a\"x,1\n", 11, "line 2", "text after closing quote" },
        { "file,label,domain\na.png,1,256\n", 11, "column domain", "bad integer '256'" },
        { "file,label\n,1\n", 11, "column file: empty", "" },
        { "file,label,file\na,1,b\n", 11, "duplicate column 'file'", "" },
        { "", 11, "empty catalogue", "" },
        { "file,label\n\n", 11, "no rows", "" },
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        gx_catalog c; gx_err err;
        gx_status s = parse(cases[k].text, cases[k].n_classes, &c, &err);
        CHECK_MSG(s == GX_ERR_FORMAT, "case %zu: status %d", k, (int)s);
        CHECK_MSG(contains(err.msg, cases[k].frag1) && contains(err.msg, cases[k].frag2),
                  "case %zu: message '%s' lacks '%s' / '%s'", k, err.msg, cases[k].frag1,
                  cases[k].frag2);
        CHECK(c.n == 0 && c.file == NULL && c.label == NULL);
    }
    /* An embedded NUL byte (strings would silently truncate). */
    gx_catalog c; gx_err err;
    const char nul[] = "file,label\na\0b,1\n";
    CHECK(gx_catalog_parse(nul, sizeof nul - 1, 11, &c, &err) == GX_ERR_FORMAT);
    CHECK(contains(err.msg, "NUL"));
}

/* --------------------------------------------------------------- HDF5 */

GX_TEST(dataset_hdf5_roundtrip_with_extras) {
    char path[1024]; gx_err err = { { 0 } };
    fix_path(path, sizeof path, "galaxy10_small.h5");
    gx_dataset_opts o = GX_DATASET_OPTS_DEFAULT;
    o.block_rows = 5;            /* 24 rows -> blocks of 5, the last short */
    o.cache_blocks = 2;
    gx_dataset *ds;
    CHECK_MSG(gx_dataset_open(path, &o, &ds, &err) == GX_OK, "open: %s", err.msg);
    if (!ds) return;
    CHECK(ds->kind == GX_DATASET_HDF5 && ds->n == FIX_N && ds->h == FIX_H && ds->w == FIX_W);
    CHECK(ds->file == NULL && ds->pxscale && ds->n_classes == 11);
    CHECK(ds->domain && ds->spec_selected && ds->mag_r && ds->color_gr && ds->r_eff_arcsec &&
          ds->sersic_n && ds->axis_ratio && ds->position_angle);
    int nan_count = 0;
    for (int i = 0; i < FIX_N && ds->position_angle; i++) {
        CHECK(ds->label[i] == i % 11);
        CHECK_NEAR(ds->ra[i], 150.0 + 0.5 * i, 0);
        CHECK_NEAR(ds->dec[i], -2.0 + 0.25 * i, 0);
        CHECK_NEAR(ds->pxscale[i], 0.262, 0);
        if (i % 4 == 1) { CHECK(isnan(ds->redshift[i])); nan_count++; }
        else CHECK_NEAR(ds->redshift[i], 0.01 * (i + 1), 1e-15);
        CHECK(ds->domain[i] == i % 3 && ds->spec_selected[i] == (i % 2 == 0));
        CHECK_NEAR(ds->mag_r[i], 16.0 + 0.25 * i, 0);
        CHECK_NEAR(ds->color_gr[i], (float)(0.5 + 0.01 * i), 0);
        CHECK_NEAR(ds->r_eff_arcsec[i], (float)(1.0 + 0.1 * i), 0);
        CHECK_NEAR(ds->sersic_n[i], 1.0 + 0.125 * i, 0);
        CHECK_NEAR(ds->axis_ratio[i], (float)(0.2 + 0.03 * i), 0);
        CHECK_NEAR(ds->position_angle[i], 7.5 * i, 0);
    }
    CHECK(nan_count == 6);
    /* Out-of-order access across blocks (cache misses, evictions, hits),
     * checking HWC -> CHW and /255 on every pixel. */
    int order[] = { 23, 0, 7, 4, 5, 22, 23, 19, 0, 11 };
    for (size_t k = 0; k < sizeof order / sizeof order[0]; k++) {
        int i = order[k];
        gx_image im;
        CHECK_MSG(gx_dataset_get(ds, i, &im, &err) == GX_OK, "get %d: %s", i, err.msg);
        CHECK(im.c == 3 && im.h == FIX_H && im.w == FIX_W && im.mask);
        int bad = 0;
        for (int c = 0; c < 3 && im.data; c++)
            for (int y = 0; y < FIX_H; y++)
                for (int x = 0; x < FIX_W; x++) {
                    float want = (float)fix_pixel(i, y, x, c) * (1.0f / 255.0f);
                    bad += im.data[(c * FIX_H + y) * FIX_W + x] != want;
                }
        CHECK_MSG(bad == 0, "image %d: %d wrong pixels", i, bad);
        gx_image_free(&im);
    }
    gx_image im;
    CHECK(gx_dataset_get(ds, FIX_N, &im, &err) == GX_ERR_INVALID && im.data == NULL);
    CHECK(gx_dataset_get(ds, -1, &im, &err) == GX_ERR_INVALID);
    gx_dataset_close(ds);
}

GX_TEST(dataset_hdf5_real_layout_without_extras) {
    char path[1024]; gx_err err = { { 0 } };
    fix_path(path, sizeof path, "galaxy10_plain.h5");
    gx_dataset *ds;
    CHECK_MSG(gx_dataset_open(path, NULL, &ds, &err) == GX_OK, "open: %s", err.msg);
    if (!ds) return;
    CHECK(ds->n == FIX_N && ds->label[13] == 3 && isnan(ds->redshift[5]) && ds->n_classes == 10);
    CHECK(!ds->domain && !ds->spec_selected && !ds->mag_r && !ds->color_gr &&
          !ds->r_eff_arcsec && !ds->sersic_n && !ds->axis_ratio && !ds->position_angle);
    gx_image im;   /* default block of 64 rows clamps to the 24 available */
    CHECK(gx_dataset_get(ds, 17, &im, &err) == GX_OK);
    if (im.data) CHECK_NEAR(im.data[(2 * FIX_H + 3) * FIX_W + 5], fix_pixel(17, 3, 5, 2) / 255.0, 1e-7);
    gx_image_free(&im);
    gx_dataset_close(ds);
    /* Lens labels (10) in the extras file are out of range for 10 classes. */
    fix_path(path, sizeof path, "galaxy10_small.h5");
    gx_dataset_opts o = GX_DATASET_OPTS_DEFAULT;
    o.n_classes = 10;
    CHECK(gx_dataset_open(path, &o, &ds, &err) == GX_ERR_FORMAT && ds == NULL);
    CHECK_MSG(contains(err.msg, "'ans'") && contains(err.msg, "label 10 of sample 10"), "%s", err.msg);
}

/* Several threads share one HDF5 dataset (the loader's pattern): the
 * per-dataset mutex must keep the cache and the serial HDF5 library
 * consistent, so every image still matches the generator exactly. */
GX_TEST(dataset_hdf5_shared_across_threads) {
    char path[1024]; gx_err err;
    fix_path(path, sizeof path, "galaxy10_small.h5");
    gx_dataset_opts o = GX_DATASET_OPTS_DEFAULT;
    o.block_rows = 3;
    gx_dataset *ds;
    CHECK(gx_dataset_open(path, &o, &ds, &err) == GX_OK);
    if (!ds) return;
    int bad = 0;
    #pragma omp parallel for num_threads(4) reduction(+:bad) schedule(static, 1)
    for (int t = 0; t < 4 * FIX_N; t++) {
        int i = (t * 7 + t / FIX_N) % FIX_N;         /* scattered order per thread */
        gx_image im; gx_err e;
        if (gx_dataset_get(ds, i, &im, &e) != GX_OK) { bad++; continue; }
        for (int c = 0; c < 3; c++)
            for (int p = 0; p < FIX_H * FIX_W; p++)
                bad += im.data[c * FIX_H * FIX_W + p] !=
                       (float)fix_pixel(i, p / FIX_W, p % FIX_W, c) * (1.0f / 255.0f);
        gx_image_free(&im);
    }
    CHECK_MSG(bad == 0, "%d wrong pixels or failed reads", bad);
    gx_dataset_close(ds);
}

/* A tiny Galaxy10-layout file (4 images 2x3) with one defect. */
typedef struct { const char *omit, *wrong_dtype, *wrong_rank, *short_key; int bad_label; } h5_defect;

static void h5_put(hid_t f, const char *name, hid_t type, int rank, const hsize_t *dims,
                   const void *data) {
    hid_t s = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(f, name, type, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    H5Dclose(d); H5Sclose(s);
}

static void h5_write_defective(const char *path, h5_defect df) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    uint8_t img[4 * 2 * 3 * 3] = { 0 };
    hsize_t idims[4] = { 4, 2, 3, 3 };
    uint8_t ans[4] = { 0, 1, 2, (uint8_t)(df.bad_label ? 12 : 3) };
    double v[4] = { 1, 2, 3, 4 };
    const char *keys[] = { "images", "ans", "ra", "dec", "redshift", "pxscale" };
    for (int k = 0; k < 6; k++) {
        const char *key = keys[k];
        if (df.omit && strcmp(df.omit, key) == 0) continue;
        hsize_t n = df.short_key && strcmp(df.short_key, key) == 0 ? 3 : 4;
        hsize_t d2[2] = { n, 1 };
        int rank = df.wrong_rank && strcmp(df.wrong_rank, key) == 0 ? 2 : 1;
        int wrong = df.wrong_dtype && strcmp(df.wrong_dtype, key) == 0;
        if (k == 0) {
            idims[0] = n;
            if (rank == 2) h5_put(f, key, H5T_NATIVE_UINT8, 3, idims, img);
            else if (wrong) h5_put(f, key, H5T_NATIVE_INT16, 4, idims, (int16_t[72]){ 0 });
            else h5_put(f, key, H5T_NATIVE_UINT8, 4, idims, img);
        } else if (k == 1) {
            float fv[4] = { 0, 1, 2, 3 };
            h5_put(f, key, wrong ? H5T_NATIVE_FLOAT : H5T_NATIVE_UINT8, rank, d2,
                   wrong ? (const void *)fv : (const void *)ans);
        } else {
            int32_t iv[4] = { 1, 2, 3, 4 };
            h5_put(f, key, wrong ? H5T_NATIVE_INT32 : H5T_NATIVE_DOUBLE, rank, d2,
                   wrong ? (const void *)iv : (const void *)v);
        }
    }
    H5Fclose(f);
}

GX_TEST(dataset_hdf5_errors_name_the_key) {
    char dir[] = "/tmp/gx_ds_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/bad.h5", dir);
    struct { h5_defect df; gx_status want; const char *frag; } cases[] = {
        { { "images", 0, 0, 0, 0 }, GX_ERR_NOTFOUND, "missing dataset key 'images'" },
        { { "redshift", 0, 0, 0, 0 }, GX_ERR_NOTFOUND, "missing dataset key 'redshift'" },
        { { "pxscale", 0, 0, 0, 0 }, GX_ERR_NOTFOUND, "missing dataset key 'pxscale'" },
        { { 0, "images", 0, 0, 0 }, GX_ERR_FORMAT, "key 'images': wrong dtype" },
        { { 0, "ans", 0, 0, 0 }, GX_ERR_FORMAT, "key 'ans': wrong dtype" },
        { { 0, "ra", 0, 0, 0 }, GX_ERR_FORMAT, "key 'ra': wrong dtype" },
        { { 0, 0, "images", 0, 0 }, GX_ERR_FORMAT, "key 'images': wrong rank 3" },
        { { 0, 0, "dec", 0, 0 }, GX_ERR_FORMAT, "key 'dec': wrong rank 2" },
        { { 0, 0, 0, "redshift", 0 }, GX_ERR_SHAPE, "key 'redshift': length 3 does not match 4" },
        { { 0, 0, 0, 0, 1 }, GX_ERR_FORMAT, "label 12 of sample 3 out of range" },
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        h5_write_defective(path, cases[k].df);
        gx_dataset *ds = (gx_dataset *)1;
        gx_err err = { { 0 } };
        gx_status s = gx_dataset_open(path, NULL, &ds, &err);
        CHECK_MSG(s != GX_OK && ds == NULL, "case %zu: status %d", k, (int)s);
        CHECK_MSG(s == cases[k].want,
                  "case %zu: status %d", k, (int)s);
        CHECK_MSG(contains(err.msg, cases[k].frag), "case %zu: '%s' lacks '%s'", k, err.msg,
                  cases[k].frag);
        if (ds) gx_dataset_close(ds);
    }
    /* The defect-free variant opens (so the cases above fail for their defect). */
    h5_write_defective(path, (h5_defect){ 0, 0, 0, 0, 0 });
    gx_dataset *ds; gx_err err;
    CHECK_MSG(gx_dataset_open(path, NULL, &ds, &err) == GX_OK, "%s", err.msg);
    if (ds) CHECK(ds->n == 4 && ds->h == 2 && ds->w == 3 && ds->label[3] == 3);
    gx_dataset_close(ds);
    unlink(path);
    rmdir(dir);
}

GX_TEST(dataset_open_missing_path) {
    gx_dataset *ds; gx_err err;
    CHECK(gx_dataset_open("/nonexistent/galaxy.h5", NULL, &ds, &err) == GX_ERR_IO && !ds);
    CHECK(contains(err.msg, "/nonexistent/galaxy.h5"));
    gx_dataset_opts o = GX_DATASET_OPTS_DEFAULT;
    o.n_classes = 0;
    CHECK(gx_dataset_open("x", &o, &ds, &err) == GX_ERR_INVALID);
}

/* ------------------------------------------------------------- folder */

/* Writes an h x w RGB PNG whose pixel (c, y, x) is (seed + 10c + 3y + x) % 256. */
static void write_png(const char *path, int h, int w, int seed) {
    float *d = malloc(sizeof(float) * 3 * h * w);
    for (int c = 0; c < 3; c++)
        for (int p = 0; p < h * w; p++)
            d[c * h * w + p] = (float)((seed + 10 * c + 3 * (p / w) + p % w) % 256) / 255.0f;
    uint8_t *png; size_t n; gx_err err;
    if (gx_png_encode(d, 3, h, w, &png, &n, &err) == GX_OK) {
        FILE *f = fopen(path, "wb");
        fwrite(png, 1, n, f);
        fclose(f);
        free(png);
    }
    free(d);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

GX_TEST(dataset_folder_catalog) {
    char dir[] = "/tmp/gx_ds_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char p[4][256];
    snprintf(p[0], 256, "%s/a.png", dir);
    snprintf(p[1], 256, "%s/b.png", dir);
    snprintf(p[2], 256, "%s/catalog.csv", dir);
    snprintf(p[3], 256, "%s/other.csv", dir);
    write_png(p[0], 5, 7, 1);
    write_png(p[1], 9, 4, 50);
    write_text(p[2], "file,label,ra,dec,redshift,domain\n"
                     "a.png,Merging,10,20,,1\nb.png,4,11,21,0.5,0\n");
    write_text(p[3], "file,label\na.png,1\nmissing.png,2\n");

    gx_dataset *ds; gx_err err = { { 0 } };
    for (int via_csv = 0; via_csv < 2; via_csv++) {
        CHECK_MSG(gx_dataset_open(via_csv ? p[2] : dir, NULL, &ds, &err) == GX_OK, "%s", err.msg);
        if (!ds) continue;
        CHECK(ds->kind == GX_DATASET_FOLDER && ds->n == 2 && ds->h == 0 && ds->w == 0);
        CHECK(ds->n_classes == 5);
        CHECK(ds->label[0] == 1 && ds->label[1] == 4);
        CHECK(isnan(ds->redshift[0]) && ds->redshift[1] == 0.5 && ds->ra[1] == 11);
        CHECK(ds->domain && ds->domain[0] == 1 && !ds->pxscale && !ds->mag_r);
        CHECK(strcmp(ds->file[1], p[1]) == 0);
        gx_image im;
        CHECK(gx_dataset_get(ds, 1, &im, &err) == GX_OK);
        CHECK(im.c == 3 && im.h == 9 && im.w == 4);
        /* pixel c=2, y=8, x=3 of seed 50: (50 + 20 + 24 + 3) = 97 */
        if (im.data) CHECK_NEAR(im.data[(2 * 9 + 8) * 4 + 3], 97 / 255.0, 1e-7);
        gx_image_free(&im);
        CHECK(gx_dataset_get(ds, 0, &im, &err) == GX_OK && im.h == 5 && im.w == 7);
        gx_image_free(&im);
        gx_dataset_close(ds);
    }
    /* A missing image file is reported at open, naming the line and file. */
    CHECK(gx_dataset_open(p[3], NULL, &ds, &err) == GX_ERR_NOTFOUND && !ds);
    CHECK_MSG(contains(err.msg, "line 3") && contains(err.msg, "missing file 'missing.png'"),
              "%s", err.msg);
    /* A file removed after open is an I/O error at get, not a crash. */
    CHECK(gx_dataset_open(dir, NULL, &ds, &err) == GX_OK);
    unlink(p[0]);
    gx_image im;
    if (ds) CHECK(gx_dataset_get(ds, 0, &im, &err) == GX_ERR_IO && im.data == NULL);
    gx_dataset_close(ds);
    for (int k = 0; k < 4; k++) unlink(p[k]);
    rmdir(dir);
}

/* ------------------------------------------------------------- splits */

GX_TEST(dataset_split_stratified_proportions) {
    /* Class sizes 100, 10, 7, 0 (class 3 empty), interleaved. */
    enum { N = 117 };
    int32_t lab[N];
    for (int i = 0; i < N; i++) lab[i] = i < 100 ? 0 : (i < 110 ? 1 : 2);
    for (int i = 0; i < N; i++) { int j = (i * 37) % N; int32_t t = lab[i]; lab[i] = lab[j]; lab[j] = t; }
    double fr[3] = { 0.7, 0.2, 0.1 };
    int64_t *idx[3], cnt[3]; gx_err err;
    CHECK(gx_split_stratified(lab, N, 4, fr, 42, idx, cnt, &err) == GX_OK);
    /* per class: 100 -> 70/20/10; 10 -> 7/2/1; 7 -> round(4.9)=5, round(6.3)=6 -> 5/1/1 */
    int want[3][3] = { { 70, 20, 10 }, { 7, 2, 1 }, { 5, 1, 1 } };
    int got[3][3] = { { 0 } }, seen[N] = { 0 };
    for (int k = 0; k < 3; k++)
        for (int64_t j = 0; j < cnt[k]; j++) {
            int64_t i = idx[k][j];
            CHECK(i >= 0 && i < N);
            if (i < 0 || i >= N) continue;
            seen[i]++;
            got[lab[i]][k]++;
            if (j > 0) CHECK(idx[k][j] > idx[k][j - 1]);      /* ascending */
        }
    for (int c = 0; c < 3; c++)
        for (int k = 0; k < 3; k++) CHECK_MSG(got[c][k] == want[c][k], "class %d split %d: %d", c, k, got[c][k]);
    int once = 1;
    for (int i = 0; i < N; i++) once &= seen[i] == 1;
    CHECK(once);                                                  /* a partition */
    CHECK(cnt[0] == 82 && cnt[1] == 23 && cnt[2] == 12);

    /* Determinism: same inputs, same output; another seed differs. */
    int64_t *idx2[3], cnt2[3];
    CHECK(gx_split_stratified(lab, N, 4, fr, 42, idx2, cnt2, &err) == GX_OK);
    int same = 1;
    for (int k = 0; k < 3; k++)
        same &= cnt2[k] == cnt[k] && memcmp(idx2[k], idx[k], (size_t)cnt[k] * sizeof(int64_t)) == 0;
    CHECK(same);
    for (int k = 0; k < 3; k++) free(idx2[k]);
    CHECK(gx_split_stratified(lab, N, 4, fr, 43, idx2, cnt2, &err) == GX_OK);
    CHECK(cnt2[1] == cnt[1] && memcmp(idx2[1], idx[1], (size_t)cnt[1] * sizeof(int64_t)) != 0);
    for (int k = 0; k < 3; k++) { free(idx2[k]); free(idx[k]); }
}

GX_TEST(dataset_split_stratified_errors) {
    int32_t lab[4] = { 0, 1, 2, 5 };
    int64_t *idx[3], cnt[3]; gx_err err;
    CHECK(gx_split_stratified(lab, 4, 3, (double[3]){ .8, .1, .1 }, 1, idx, cnt, &err) == GX_ERR_INVALID);
    CHECK(contains(err.msg, "label 5 of sample 3") && idx[0] == NULL);
    lab[3] = 0;
    CHECK(gx_split_stratified(lab, 4, 3, (double[3]){ .8, .1, .2 }, 1, idx, cnt, &err) == GX_ERR_INVALID);
    CHECK(contains(err.msg, "sum to"));
    CHECK(gx_split_stratified(lab, 4, 3, (double[3]){ 1.2, -.1, -.1 }, 1, idx, cnt, &err) == GX_ERR_INVALID);
    /* All to train, and an empty input. */
    CHECK(gx_split_stratified(lab, 4, 3, (double[3]){ 1, 0, 0 }, 1, idx, cnt, &err) == GX_OK);
    CHECK(cnt[0] == 4 && cnt[1] == 0 && cnt[2] == 0 && idx[0][0] == 0 && idx[0][3] == 3);
    for (int k = 0; k < 3; k++) free(idx[k]);
    CHECK(gx_split_stratified(lab, 0, 3, (double[3]){ .5, .5, 0 }, 1, idx, cnt, &err) == GX_OK);
    CHECK(cnt[0] == 0 && cnt[1] == 0);
    for (int k = 0; k < 3; k++) free(idx[k]);
}
