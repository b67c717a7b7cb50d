/*
 * gx_dataset.c — opening datasets (Galaxy10 HDF5 or a folder + CSV) and
 * reading samples. Contract and layout: gx_dataset.h.
 *
 * Design:
 *  - Everything small (labels, coordinates, redshifts, extras) is read and
 *    validated once at open, so a bad file fails at startup with a message
 *    naming the key, not hours into training.
 *  - Images of an HDF5 file are read on demand through an LRU cache of row
 *    blocks (one hyperslab read of block_rows consecutive samples fills a
 *    slot). Memory is cache_blocks * block_rows * H*W*3 bytes, independent
 *    of N, which is what lets the 2.7 GB Galaxy10 file stream.
 *  - The HDF5 library in Debian is the serial build: not thread-safe. Each
 *    dataset owns a mutex held around the cache and every HDF5 call after
 *    open (see the header for the one caveat this leaves).
 *  - HDF5 prints its error stack to stderr by default; around our calls the
 *    automatic printing is switched off and restored, and we report our own
 *    messages. (The setting is process-wide in a serial build, so it is
 *    saved and restored rather than changed for good.)
 *  - Folder datasets are the CSV catalogue (gx_catalog.c) plus per-file
 *    decoding with gx_image_decode; the file is read into memory first, as
 *    the decoders take buffers.
 */
#include "gx_dataset.h"

#include <hdf5.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Largest catalogue or image file read into memory. */
#define GX_DS_MAX_FILE   ((int64_t)1 << 30)
/* Largest single cache block; block_rows shrinks to fit for huge images. */
#define GX_DS_MAX_BLOCK  ((size_t)256 << 20)

struct gx_dataset_impl {
    hid_t file, images;          /* HDF5 handles (HDF5 datasets only) */
    pthread_mutex_t mu;          /* guards everything below and all HDF5 calls */
    int block_rows, nslots;
    size_t row_bytes;            /* H*W*3 */
    uint8_t *cache;              /* nslots * block_rows * row_bytes */
    int64_t *slot_block;         /* nslots: block id held, -1 = empty */
    uint64_t *slot_used;         /* nslots: LRU stamp */
    uint64_t tick;
    gx_image_limits limits_copy; /* folder: decoder limits from the opts */
};

/* ------------------------------------------------------------ helpers */

/* Reads a whole file into a malloc'ed buffer (at least 1 byte allocated). */
static gx_status gx_read_file(const char *path, uint8_t **buf, size_t *n, gx_err *err) {
    *buf = NULL; *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return gx_err_set(err, GX_ERR_IO, "dataset: cannot open '%s': %s", path,
                              strerror(errno));
    long len = -1;
    if (fseek(f, 0, SEEK_END) == 0) len = ftell(f);
    if (len < 0 || (int64_t)len > GX_DS_MAX_FILE || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return gx_err_set(err, GX_ERR_IO, "dataset: '%s': cannot size file (or > 1 GiB)", path);
    }
    uint8_t *b = malloc((size_t)len + 1);
    if (!b) { fclose(f); return gx_err_set(err, GX_ERR_NOMEM, "dataset: out of memory"); }
    size_t got = fread(b, 1, (size_t)len, f);
    fclose(f);
    if (got != (size_t)len) {
        free(b);
        return gx_err_set(err, GX_ERR_IO, "dataset: short read on '%s'", path);
    }
    b[len] = 0;
    *buf = b; *n = (size_t)len;
    return GX_OK;
}

/* 1 if the file carries the HDF5 signature at offset 0 or at a user-block
 * offset (512, 1024, 2048, ...), where the format allows it. */
static int gx_is_hdf5(const char *path) {
    static const unsigned char sig[8] = { 0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n' };
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    int found = 0;
    for (long off = 0; !found && off <= (1L << 30); off = off ? off * 2 : 512) {
        unsigned char b[8];
        if (fseek(f, off, SEEK_SET) != 0 || fread(b, 1, 8, f) != 8) break;
        found = memcmp(b, sig, 8) == 0;
    }
    fclose(f);
    return found;
}

/* ------------------------------------------------------------- HDF5 */

/* HDF5 error-stack printing off for the duration of our calls. */
typedef struct { H5E_auto2_t fn; void *data; } gx_h5_quiet;
static void gx_h5_quiet_begin(gx_h5_quiet *q) {
    H5Eget_auto2(H5E_DEFAULT, &q->fn, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}
static void gx_h5_quiet_end(const gx_h5_quiet *q) { H5Eset_auto2(H5E_DEFAULT, q->fn, q->data); }

/* Opens key into *out and checks class, rank and (n >= 0) length.
 * want_size = 0 accepts any element size. dims receives up to 4 extents.
 * An absent optional key is GX_OK with *out = -1. */
static gx_status gx_h5_open_key(hid_t file, const char *key, H5T_class_t cls, size_t want_size,
                                int rank, int64_t n, hsize_t dims[4], int optional,
                                hid_t *out, gx_err *err) {
    *out = -1;
    if (H5Lexists(file, key, H5P_DEFAULT) <= 0)
        return optional ? GX_OK
                        : gx_err_set(err, GX_ERR_NOTFOUND, "hdf5: missing dataset key '%s'", key);
    hid_t d = H5Dopen2(file, key, H5P_DEFAULT);
    if (d < 0) return gx_err_set(err, GX_ERR_FORMAT, "hdf5: key '%s' is not a dataset", key);
    gx_status st = GX_ERR_FORMAT;
    hid_t t = H5Dget_type(d), s = H5Dget_space(d);
    H5T_class_t c = H5Tget_class(t);
    size_t sz = H5Tget_size(t);
    int r = H5Sget_simple_extent_ndims(s);
    hsize_t dd[4] = { 0, 0, 0, 0 };
    if (r >= 1 && r <= 4) H5Sget_simple_extent_dims(s, dd, NULL);
    int unsigned_ok = !(cls == H5T_INTEGER && want_size == 1) || H5Tget_sign(t) == H5T_SGN_NONE;
    H5Tclose(t); H5Sclose(s);
    const char *cname = cls == H5T_INTEGER ? "integer" : "float";
    if (c != cls || (want_size && sz != want_size) || !unsigned_ok) {
        st = gx_err_set(err, GX_ERR_FORMAT, "hdf5: key '%s': wrong dtype (want %s%s)", key,
                   want_size == 1 ? "8-bit unsigned " : "", cname);
    } else if (r != rank) {
        st = gx_err_set(err, GX_ERR_FORMAT, "hdf5: key '%s': wrong rank %d (want %d)", key, r, rank);
    } else if (n >= 0 && (int64_t)dd[0] != n) {
        st = gx_err_set(err, GX_ERR_SHAPE, "hdf5: key '%s': length %lld does not match %lld images",
                   key, (long long)dd[0], (long long)n);
    } else {
        if (dims) memcpy(dims, dd, sizeof dd);
        *out = d;
        return GX_OK;
    }
    H5Dclose(d);
    return st;
}

/* Reads a whole 1-D key of length n into a new array of memory type mt
 * (elem bytes each). Absent optional keys leave *out NULL. */
static gx_status gx_h5_read_1d(hid_t file, const char *key, H5T_class_t cls, hid_t mt,
                               size_t elem, int64_t n, int optional, void **out, gx_err *err) {
    *out = NULL;
    hid_t d;
    gx_status s = gx_h5_open_key(file, key, cls, 0, 1, n, NULL, optional, &d, err);
    if (s != GX_OK || d < 0) return s;
    void *buf = malloc((size_t)(n > 0 ? n : 1) * elem);
    if (!buf) s = gx_err_set(err, GX_ERR_NOMEM, "hdf5: out of memory for '%s'", key);
    else if (n > 0 && H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
        s = gx_err_set(err, GX_ERR_IO, "hdf5: reading key '%s' failed", key);
    H5Dclose(d);
    if (s != GX_OK) { free(buf); return s; }
    *out = buf;
    return GX_OK;
}

/* The per-sample keys: required ones first, then the synthetic extras. */
static gx_status gx_h5_read_meta(gx_dataset *ds, hid_t file, gx_err *err) {
    int64_t n = ds->n;
    gx_status s;
    struct { const char *key; H5T_class_t cls; hid_t mt; size_t elem; int opt; void **dst; } k[] = {
        { "ans", H5T_INTEGER, H5T_NATIVE_INT32, 4, 0, (void **)&ds->label },
        { "ra", H5T_FLOAT, H5T_NATIVE_DOUBLE, 8, 0, (void **)&ds->ra },
        { "dec", H5T_FLOAT, H5T_NATIVE_DOUBLE, 8, 0, (void **)&ds->dec },
        { "redshift", H5T_FLOAT, H5T_NATIVE_DOUBLE, 8, 0, (void **)&ds->redshift },
        { "pxscale", H5T_FLOAT, H5T_NATIVE_DOUBLE, 8, 0, (void **)&ds->pxscale },
        { "domain", H5T_INTEGER, H5T_NATIVE_UINT8, 1, 1, (void **)&ds->domain },
        { "spec_selected", H5T_INTEGER, H5T_NATIVE_UINT8, 1, 1, (void **)&ds->spec_selected },
        { "mag_r", H5T_FLOAT, H5T_NATIVE_FLOAT, 4, 1, (void **)&ds->mag_r },
        { "color_gr", H5T_FLOAT, H5T_NATIVE_FLOAT, 4, 1, (void **)&ds->color_gr },
        { "r_eff_arcsec", H5T_FLOAT, H5T_NATIVE_FLOAT, 4, 1, (void **)&ds->r_eff_arcsec },
        { "sersic_n", H5T_FLOAT, H5T_NATIVE_FLOAT, 4, 1, (void **)&ds->sersic_n },
        { "axis_ratio", H5T_FLOAT, H5T_NATIVE_FLOAT, 4, 1, (void **)&ds->axis_ratio },
        { "position_angle", H5T_FLOAT, H5T_NATIVE_FLOAT, 4, 1, (void **)&ds->position_angle },
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if ((s = gx_h5_read_1d(file, k[i].key, k[i].cls, k[i].mt, k[i].elem, n, k[i].opt,
                               k[i].dst, err)) != GX_OK)
            return s;
    for (int64_t i = 0; i < n; i++)
        if (ds->label[i] < 0 || ds->label[i] >= ds->n_classes)
            return gx_err_set(err, GX_ERR_FORMAT,
                              "hdf5: key 'ans': label %d of sample %lld out of range [0, %d)",
                              ds->label[i], (long long)i, ds->n_classes);
    return GX_OK;
}

/* Sizes and allocates the block cache. */
static gx_status gx_h5_cache_init(struct gx_dataset_impl *im, const gx_dataset *ds,
                                  const gx_dataset_opts *o, gx_err *err) {
    im->row_bytes = (size_t)ds->h * ds->w * 3;
    int64_t br = o->block_rows > 0 ? o->block_rows : 64;
    if (br > ds->n) br = ds->n > 0 ? ds->n : 1;
    if ((size_t)br * im->row_bytes > GX_DS_MAX_BLOCK) br = (int64_t)(GX_DS_MAX_BLOCK / im->row_bytes);
    if (br < 1) br = 1;
    im->block_rows = (int)br;
    im->nslots = o->cache_blocks > 0 ? o->cache_blocks : 2;
    im->cache = malloc((size_t)im->nslots * im->block_rows * im->row_bytes);
    im->slot_block = malloc((size_t)im->nslots * sizeof *im->slot_block);
    im->slot_used = calloc((size_t)im->nslots, sizeof *im->slot_used);
    if (!im->cache || !im->slot_block || !im->slot_used)
        return gx_err_set(err, GX_ERR_NOMEM, "hdf5: out of memory for the image cache");
    for (int s = 0; s < im->nslots; s++) im->slot_block[s] = -1;
    return GX_OK;
}

static gx_status gx_h5_open(const char *path, const gx_dataset_opts *o, gx_dataset *ds,
                            gx_err *err) {
    struct gx_dataset_impl *im = ds->impl;
    im->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (im->file < 0)
        return gx_err_set(err, GX_ERR_FORMAT, "hdf5: cannot open '%s'", path);
    hsize_t dims[4];
    gx_status s = gx_h5_open_key(im->file, "images", H5T_INTEGER, 1, 4, -1, dims, 0,
                                 &im->images, err);
    if (s != GX_OK) return s;
    if (dims[3] != 3)
        return gx_err_set(err, GX_ERR_SHAPE,
                          "hdf5: key 'images': shape %llux%llux%llux%llu, want N x H x W x 3",
                          (unsigned long long)dims[0], (unsigned long long)dims[1],
                          (unsigned long long)dims[2], (unsigned long long)dims[3]);
    if (dims[0] < 1 || dims[1] < 1 || dims[2] < 1)
        return gx_err_set(err, GX_ERR_SHAPE, "hdf5: key 'images': empty");
    s = gx_image_check_limits(&o->limits, (int64_t)dims[2], (int64_t)dims[1],
                                        "hdf5: key 'images'", err);
    if (s != GX_OK) return s;
    ds->n = (int64_t)dims[0]; ds->h = (int)dims[1]; ds->w = (int)dims[2];
    s = gx_h5_read_meta(ds, im->file, err);
    if (s != GX_OK) return s;
    return gx_h5_cache_init(im, ds, o, err);
}

/* Returns the cache slot holding block b, reading it if needed (mutex held). */
static int gx_h5_block(struct gx_dataset_impl *im, int64_t n, int64_t b, gx_err *err) {
    int victim = 0;
    for (int s = 0; s < im->nslots; s++) {
        if (im->slot_block[s] == b) { im->slot_used[s] = ++im->tick; return s; }
        if (im->slot_used[s] < im->slot_used[victim]) victim = s;
    }
    int64_t r0 = b * im->block_rows, rows = n - r0 < im->block_rows ? n - r0 : im->block_rows;
    hsize_t start[4] = { (hsize_t)r0, 0, 0, 0 };
    hsize_t count[4] = { (hsize_t)rows, 0, 0, 3 };
    hid_t fs = H5Dget_space(im->images);
    hsize_t full[4];
    H5Sget_simple_extent_dims(fs, full, NULL);
    count[1] = full[1]; count[2] = full[2];
    hid_t ms = H5Screate_simple(4, count, NULL);
    uint8_t *dst = im->cache + (size_t)victim * im->block_rows * im->row_bytes;
    herr_t rc = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    if (rc >= 0) rc = H5Dread(im->images, H5T_NATIVE_UINT8, ms, fs, H5P_DEFAULT, dst);
    H5Sclose(ms); H5Sclose(fs);
    im->slot_block[victim] = -1;
    if (rc < 0) {
        gx_err_set(err, GX_ERR_IO, "hdf5: reading 'images' rows %lld..%lld failed",
                   (long long)r0, (long long)(r0 + rows - 1));
        return -1;
    }
    im->slot_block[victim] = b;
    im->slot_used[victim] = ++im->tick;
    return victim;
}

/* Image i from the cache: uint8 HWC -> float CHW / 255. */
static gx_status gx_h5_get(gx_dataset *ds, int64_t i, gx_image *img, gx_err *err) {
    struct gx_dataset_impl *im = ds->impl;
    gx_status s = gx_image_alloc(img, 3, ds->h, ds->w, err);
    if (s != GX_OK) return s;
    pthread_mutex_lock(&im->mu);
    gx_h5_quiet q;
    gx_h5_quiet_begin(&q);
    int slot = gx_h5_block(im, ds->n, i / im->block_rows, err);
    gx_h5_quiet_end(&q);
    if (slot >= 0) {
        const uint8_t *src = im->cache + ((size_t)slot * im->block_rows +
                                          (size_t)(i % im->block_rows)) * im->row_bytes;
        size_t hw = (size_t)ds->h * ds->w;
        for (int c = 0; c < 3; c++) {
            float *dst = img->data + (size_t)c * hw;
            for (size_t p = 0; p < hw; p++) dst[p] = (float)src[3 * p + c] * (1.0f / 255.0f);
        }
    }
    pthread_mutex_unlock(&im->mu);
    if (slot < 0) { gx_image_free(img); return GX_ERR_IO; }
    return GX_OK;
}

/* ------------------------------------------------------------ folder */

/* Joins dir and name unless name is absolute. */
static char *gx_path_join(const char *dir, const char *name) {
    if (name[0] == '/' || dir[0] == 0) return strdup(name);
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a); p[a] = '/'; memcpy(p + a + 1, name, b + 1);
    return p;
}

/* Takes the catalogue's arrays and resolves (and checks) every file. */
static gx_status gx_folder_adopt(gx_dataset *ds, gx_catalog *cat, const char *base,
                                 gx_err *err) {
    ds->n = cat->n;
    ds->label = cat->label; cat->label = NULL;
    ds->ra = cat->ra; cat->ra = NULL;
    ds->dec = cat->dec; cat->dec = NULL;
    ds->redshift = cat->redshift; cat->redshift = NULL;
    ds->domain = cat->domain; cat->domain = NULL;
    ds->file = calloc((size_t)cat->n, sizeof *ds->file);
    if (!ds->file) return gx_err_set(err, GX_ERR_NOMEM, "dataset: out of memory");
    for (int64_t i = 0; i < cat->n; i++) {
        if (!(ds->file[i] = gx_path_join(base, cat->file[i])))
            return gx_err_set(err, GX_ERR_NOMEM, "dataset: out of memory");
        struct stat st;
        if (stat(ds->file[i], &st) != 0 || !S_ISREG(st.st_mode))
            return gx_err_set(err, GX_ERR_NOTFOUND,
                              "csv: line %lld: missing file '%s' (%s)", (long long)cat->line[i],
                              cat->file[i], ds->file[i]);
    }
    return GX_OK;
}

static gx_status gx_folder_open(const char *csv, const char *base, const gx_dataset_opts *o,
                                gx_dataset *ds, gx_err *err) {
    uint8_t *buf; size_t n;
    gx_status s = gx_read_file(csv, &buf, &n, err);
    if (s != GX_OK) return s;
    gx_catalog cat;
    s = gx_catalog_parse((const char *)buf, n, o->n_classes, &cat, err);
    free(buf);
    if (s != GX_OK) return s;
    s = gx_folder_adopt(ds, &cat, base, err);
    gx_catalog_free(&cat);
    return s;
}

static gx_status gx_folder_get(gx_dataset *ds, int64_t i, gx_image *img, gx_err *err) {
    uint8_t *buf; size_t n;
    gx_status s = gx_read_file(ds->file[i], &buf, &n, err);
    if (s != GX_OK) return s;
    s = gx_image_decode(buf, n, &ds->impl->limits_copy, NULL, img, err);
    free(buf);
    return s;
}

/* -------------------------------------------------------------- API */

void gx_dataset_close(gx_dataset *ds) {
    if (!ds) return;
    struct gx_dataset_impl *im = ds->impl;
    if (im) {
        gx_h5_quiet q;
        int h5 = im->images >= 0 || im->file >= 0;
        if (h5) gx_h5_quiet_begin(&q);
        if (im->images >= 0) H5Dclose(im->images);
        if (im->file >= 0) H5Fclose(im->file);
        if (h5) gx_h5_quiet_end(&q);
        pthread_mutex_destroy(&im->mu);
        free(im->cache); free(im->slot_block); free(im->slot_used);
        free(im);
    }
    if (ds->file)
        for (int64_t i = 0; i < ds->n; i++) free(ds->file[i]);
    free(ds->file); free(ds->label); free(ds->ra); free(ds->dec); free(ds->redshift);
    free(ds->pxscale); free(ds->domain); free(ds->spec_selected);
    free(ds->mag_r); free(ds->color_gr); free(ds->r_eff_arcsec);
    free(ds->sersic_n); free(ds->axis_ratio); free(ds->position_angle);
    free(ds);
}

/* Dispatches on what path is: directory, HDF5 file, or CSV file. */
static gx_status gx_dataset_open_kind(const char *path, const gx_dataset_opts *o,
                                      gx_dataset *ds, gx_err *err) {
    struct stat st;
    if (stat(path, &st) != 0)
        return gx_err_set(err, GX_ERR_IO, "dataset: cannot open '%s': %s", path, strerror(errno));
    ds->kind = GX_DATASET_FOLDER;
    if (S_ISDIR(st.st_mode)) {
        char *csv = gx_path_join(path, "catalog.csv");
        if (!csv) return gx_err_set(err, GX_ERR_NOMEM, "dataset: out of memory");
        gx_status s = gx_folder_open(csv, path, o, ds, err);
        free(csv);
        return s;
    }
    if (gx_is_hdf5(path)) {
        ds->kind = GX_DATASET_HDF5;
        gx_h5_quiet q;
        gx_h5_quiet_begin(&q);
        gx_status s = gx_h5_open(path, o, ds, err);
        gx_h5_quiet_end(&q);
        return s;
    }
    /* A CSV file: names are relative to its directory. */
    char *base = strdup(path);
    if (!base) return gx_err_set(err, GX_ERR_NOMEM, "dataset: out of memory");
    char *slash = strrchr(base, '/');
    if (slash) *slash = 0; else base[0] = 0;
    if (slash == base) strcpy(base, "/");
    gx_status s = gx_folder_open(path, base, o, ds, err);
    free(base);
    return s;
}

gx_status gx_dataset_open(const char *path, const gx_dataset_opts *opts, gx_dataset **out,
                          gx_err *err) {
    *out = NULL;
    gx_dataset_opts o = opts ? *opts : GX_DATASET_OPTS_DEFAULT;
    if (o.n_classes < 1 || o.n_classes > GX_CLASSES_MAX)
        return gx_err_set(err, GX_ERR_INVALID, "dataset: n_classes %d not in 1..%d",
                          o.n_classes, GX_CLASSES_MAX);
    gx_dataset *ds = calloc(1, sizeof *ds);
    struct gx_dataset_impl *im = ds ? calloc(1, sizeof *im) : NULL;
    if (!im) { free(ds); return gx_err_set(err, GX_ERR_NOMEM, "dataset: out of memory"); }
    im->file = im->images = -1;
    im->limits_copy = o.limits;
    pthread_mutex_init(&im->mu, NULL);
    ds->impl = im;
    ds->n_classes = o.n_classes;
    gx_status s = path ? gx_dataset_open_kind(path, &o, ds, err)
                       : gx_err_set(err, GX_ERR_INVALID, "dataset: NULL path");
    if (s != GX_OK) { gx_dataset_close(ds); return s; }
    /* Labels were range-checked against the bound; report the classes the
     * data actually uses so a 10-class file does not build an 11-way head. */
    ds->n_classes = 1;
    for (int64_t i = 0; i < ds->n; i++)
        if (ds->label[i] + 1 > ds->n_classes) ds->n_classes = ds->label[i] + 1;
    *out = ds;
    return GX_OK;
}

gx_status gx_dataset_get(gx_dataset *ds, int64_t i, gx_image *img, gx_err *err) {
    memset(img, 0, sizeof *img);
    if (!ds || i < 0 || i >= ds->n)
        return gx_err_set(err, GX_ERR_INVALID, "dataset: index %lld out of range [0, %lld)",
                          (long long)i, (long long)(ds ? ds->n : 0));
    return ds->kind == GX_DATASET_HDF5 ? gx_h5_get(ds, i, img, err)
                                       : gx_folder_get(ds, i, img, err);
}
