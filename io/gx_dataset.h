/*
 * gx_dataset.h — training datasets: the Galaxy10 HDF5 layout, a folder of
 * images with a CSV catalogue, the class-name table, and seeded stratified
 * splits.
 *
 *   gx_dataset *ds; gx_err err;
 *   if (gx_dataset_open("Galaxy10_DECals.h5", NULL, &ds, &err) != GX_OK) die(err.msg);
 *   int64_t *idx[3], cnt[3];
 *   gx_split_stratified(ds->label, ds->n, ds->n_classes, (double[3]){ .8, .1, .1 },
 *                       seed, idx, cnt, &err);
 *   gx_image im;
 *   gx_dataset_get(ds, idx[0][k], &im, &err);      // float CHW in [0,1]
 *   ... gx_pre_prepare / gx_pre_augment as for any decoded image ...
 *   gx_image_free(&im);
 *   free(idx[0]); free(idx[1]); free(idx[2]);
 *   gx_dataset_close(ds);
 *
 * Two sources, one object:
 *
 *  HDF5 (detected by the HDF5 signature, at offset 0 or a user-block offset
 *  512, 1024, 2048, ...): the layout of Galaxy10_DECals.h5 —
 *      images    uint8  N x H x W x 3   (HWC, bands g, r, z)
 *      ans       integer N               (class id)
 *      ra, dec, redshift, pxscale  float N (read as float64)
 *  all six required; plus, when present (the synthetic generator's file,
 *  spec/synth.md "Output"): domain, spec_selected (integer, read as uint8),
 *  mag_r, color_gr, r_eff_arcsec, sersic_n, axis_ratio, position_angle
 *  (float, read as float32). Every per-sample array is loaded at open (a few
 *  hundred KB for the real 17736-sample file); images are NOT: gx_dataset_get
 *  reads them through a small cache of row blocks (hyperslab reads of
 *  block_rows consecutive samples), so memory is cache_blocks * block_rows *
 *  H*W*3 bytes whatever N is and the 2.7 GB file streams. Sequential (or
 *  sorted) access reads each block once; a fully random order re-reads a
 *  block per sample — set block_rows small (1..8) for that.
 *
 *  Folder: `path` is a directory holding catalog.csv, or the CSV file
 *  itself; file names in it are relative to the CSV's directory (absolute
 *  ones are kept). Columns, by header name (case-insensitive, any order,
 *  unknown columns ignored): file and label required; ra, dec, redshift,
 *  domain optional. Labels are an integer class id or a class name from the
 *  table below (case-insensitive). Empty / "nan" ra, dec, redshift = missing
 *  (NaN). Every file must exist at open (checked with stat); images are
 *  decoded by gx_image_decode at gx_dataset_get, at their own size (h = w =
 *  0 in the dataset: per image). Grammar: RFC 4180 (quoted fields with ""
 *  escapes and embedded commas/newlines), LF or CRLF, an optional UTF-8 BOM,
 *  blank lines skipped.
 *
 * Missing values: redshift (and ra, dec) NaN = unknown. The real Galaxy10
 * file stores NaN for galaxies without a spectroscopic redshift; callers
 * must test with isnan(), never compare with a sentinel.
 *
 * Errors (gx_status + message, never abort) name the key, column, line or
 * file: missing dataset key, wrong dtype or rank, length mismatch between
 * keys, label out of range, CSV missing column, bad number on line N,
 * unknown class name, missing image file.
 *
 * Thread-safety: one gx_dataset may be shared by many loader threads.
 * gx_dataset_get on an HDF5 dataset takes the dataset's own mutex around
 * the cache and every HDF5 call (Debian's libhdf5 is the serial build, not
 * thread-safe); folder datasets need no lock (decoding is thread-safe and
 * the catalogue is immutable after open). Caveat: the mutex is per object,
 * so two HDF5 datasets open at once must not be read from different threads
 * concurrently on a serial HDF5 build — open the file once and split its
 * indices instead (which is what gx_split_stratified is for).
 */
#ifndef GX_DATASET_H
#define GX_DATASET_H

#include "gx.h"
#include "gx_image.h"

#ifdef __cplusplus
extern "C" {
#endif

/* -------------------------------------------------------- class names */

/* The ten Galaxy10 DECaLS classes in file order (ids 0..9), and the
 * synthetic generator's optional Lens class (id 10). */
#define GX_GALAXY10_CLASSES 10
#define GX_CLASS_LENS       10
#define GX_CLASSES_MAX      11

/* Name of class id ("Disturbed", ..., "Lens"), or NULL when out of range. */
const char *gx_class_name(int id);
/* Class id of a name, or -1 if unknown. Case-insensitive; surrounding
 * blanks ignored; ' ', '_' and '-' are interchangeable, so "round_smooth"
 * and "In-between Round Smooth" both match the table. */
int gx_class_lookup(const char *name);

/* ------------------------------------------------------ CSV catalogue */

/* A parsed catalogue (the folder layout's catalog.csv). All arrays have n
 * entries and are malloc'ed; gx_catalog_free releases them. */
typedef struct gx_catalog {
    int64_t  n;
    char   **file;       /* n file names as written (non-empty) */
    int32_t *label;      /* n, in [0, n_classes) */
    double  *ra, *dec;   /* n; NaN = missing (column absent or cell empty/"nan") */
    double  *redshift;   /* n; NaN = missing */
    uint8_t *domain;     /* n, or NULL when the column is absent */
    int64_t *line;       /* n: the 1-based line where each row starts (for messages) */
} gx_catalog;

/* Parses a CSV buffer (need not be NUL-terminated). Labels must lie in
 * [0, n_classes) (n_classes in 1..GX_CLASSES_MAX; names map through the
 * table above). On error *out is zeroed, nothing leaks, and err names the
 * line and column: "csv: line 7: column redshift: bad number 'abc'". */
gx_status gx_catalog_parse(const char *buf, size_t n, int n_classes,
                           gx_catalog *out, gx_err *err);
/* Frees the arrays and zeroes the struct; safe on a zeroed struct. */
void gx_catalog_free(gx_catalog *c);

/* ---------------------------------------------------------- datasets */

typedef enum { GX_DATASET_HDF5 = 1, GX_DATASET_FOLDER = 2 } gx_dataset_kind;

typedef struct gx_dataset_opts {
    int n_classes;            /* upper bound: labels must be < n_classes; default
                                 GX_CLASSES_MAX (Galaxy10 + Lens) */
    int block_rows;           /* HDF5 rows per cached block; default 64 */
    int cache_blocks;         /* HDF5 cached blocks (LRU); default 2 */
    gx_image_limits limits;   /* folder: decoder limits; default GX_IMAGE_LIMITS_DEFAULT */
} gx_dataset_opts;
#define GX_DATASET_OPTS_DEFAULT \
    ((gx_dataset_opts){ GX_CLASSES_MAX, 64, 2, GX_IMAGE_LIMITS_DEFAULT })

struct gx_dataset_impl;       /* private: HDF5 handles, block cache, mutex */

/* Per-sample metadata is loaded at open and read-only afterwards. Optional
 * arrays are NULL when the source lacks them. */
typedef struct gx_dataset {
    gx_dataset_kind kind;
    int64_t n;                /* samples */
    int h, w;                 /* HDF5: every image's size; folder: 0 (per image) */
    int n_classes;            /* 1 + the largest label present (10 for Galaxy10,
                                 11 with Lens): the model's class count. Labels
                                 were checked against opts.n_classes at open */
    int32_t *label;           /* n, in [0, n_classes) */
    double  *ra, *dec;        /* n; NaN = missing */
    double  *redshift;        /* n; NaN = missing */
    double  *pxscale;         /* n (HDF5), arcsec/pixel; NULL for folders */
    uint8_t *domain;          /* n or NULL: survey id */
    uint8_t *spec_selected;   /* n or NULL: in the spectroscopic sample */
    float   *mag_r, *color_gr, *r_eff_arcsec;          /* n or NULL (synthetic) */
    float   *sersic_n, *axis_ratio, *position_angle;   /* n or NULL (synthetic) */
    char   **file;            /* folder: n resolved paths; NULL for HDF5 */
    struct gx_dataset_impl *impl;
} gx_dataset;

/* Opens path (HDF5 file, directory with catalog.csv, or a CSV file). opts
 * may be NULL (defaults). On success *ds is a heap object for
 * gx_dataset_close; on error *ds is NULL and nothing leaks. */
gx_status gx_dataset_open(const char *path, const gx_dataset_opts *opts,
                          gx_dataset **ds, gx_err *err);
/* Closes HDF5 handles and frees everything; NULL is a no-op. */
void gx_dataset_close(gx_dataset *ds);

/* Image i as a 3-band float CHW gx_image in [0,1] (HDF5: uint8/255, HWC ->
 * CHW, mask all valid; folder: the decoded file). *img is allocated (caller
 * calls gx_image_free); on error it is zeroed. Thread-safe (see above). */
gx_status gx_dataset_get(gx_dataset *ds, int64_t i, gx_image *img, gx_err *err);

/* ------------------------------------------------------------- splits */

/* Seeded stratified split into train / val / test. fracs[3] >= 0 must sum
 * to 1 (within 1e-6). For each class c separately: its indices (ascending)
 * are shuffled by Fisher-Yates with the stream gx_rng_fork(seed, c), then
 * cut at round(m*f0) and round(m*(f0+f1)) (m = class size), so every split
 * holds each class in proportion and a class's split does not depend on the
 * other classes. Each out_idx[k] is malloc'ed (at least 1 element; caller
 * frees) and holds out_n[k] sample indices in ascending order (cache- and
 * HDF5-friendly; shuffle per epoch in the loader). Identical inputs give
 * identical outputs. Labels outside [0, n_classes) are an error. */
gx_status gx_split_stratified(const int32_t *labels, int64_t n, int n_classes,
                              const double fracs[3], uint64_t seed,
                              int64_t *out_idx[3], int64_t out_n[3], gx_err *err);

#ifdef __cplusplus
}
#endif

#endif /* GX_DATASET_H */
