/*
 * gx_safetensors.h — checkpoints in the safetensors format (kernels/gx_safetensors.c).
 *
 * File: u64 little-endian header length N, N bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"key": "string value", ...}}
 * then the raw little-endian tensor bytes; offsets are relative to the end
 * of the header. Parsing is strict: header length within the file, valid
 * JSON object, unique names, known dtype, shape x dtype size = byte length,
 * offsets inside the data area, no overlaps, metadata values strings. Every
 * refusal names the problem and, where there is one, the tensor.
 * Writes go to "<path>.tmp.<pid>", are fsynced, renamed over <path>, and the
 * directory is fsynced: a crash leaves either the old file or the new one.
 *
 * Layout rule (as the reference implementation): sorted by offset, tensors
 * must tile the data area exactly — first at 0, each starting where the
 * previous ended, the last ending at the end of the file. Gaps, overlaps and
 * unused trailing bytes are refused. Entries must carry exactly the fields
 * dtype, shape, data_offsets. All refusals are GX_ERR_FORMAT.
 * The writer orders tensors by element size (8, 4, 2, 1 bytes; insertion
 * order within a size) so every tensor is aligned to its element size, and
 * pads the header with spaces to a multiple of 8. Writing an existing
 * tensor name again is refused; writing a metadata key again replaces it.
 */
#ifndef GX_SAFETENSORS_H
#define GX_SAFETENSORS_H
#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    GX_ST_BOOL = 0, GX_ST_U8, GX_ST_I8, GX_ST_I16, GX_ST_U16, GX_ST_F16, GX_ST_BF16,
    GX_ST_I32, GX_ST_U32, GX_ST_F32, GX_ST_F64, GX_ST_I64, GX_ST_U64, GX_ST_NDTYPES
} gx_st_dtype;

const char *gx_st_dtype_name(gx_st_dtype d);
size_t      gx_st_dtype_size(gx_st_dtype d);

typedef struct gx_st_tensor {
    char        *name;
    gx_st_dtype  dtype;
    int          ndim;
    int64_t      shape[GX_MAX_DIMS];
    const void  *data;           /* points into the file buffer */
    size_t       nbytes;
} gx_st_tensor;

typedef struct gx_st_file {
    uint8_t      *buf;           /* whole file (owned when read from a path) */
    size_t        len;
    int           owns_buf;
    gx_st_tensor *tensors;       /* in file order of data offsets */
    int           n;
    char        **meta_keys, **meta_vals;
    int           n_meta;
} gx_st_file;

/* Parse an in-memory file (buf must outlive f). Limits: header <= 100 MiB. */
gx_status gx_st_parse(gx_st_file *f, const void *buf, size_t len, gx_err *err);
gx_status gx_st_read(gx_st_file *f, const char *path, gx_err *err);
void      gx_st_close(gx_st_file *f);
const gx_st_tensor *gx_st_find(const gx_st_file *f, const char *name);
const char *gx_st_meta(const gx_st_file *f, const char *key);
/* Convert a float tensor (F32, F64, F16, BF16) to n gx_real values. */
gx_status gx_st_to_real(const gx_st_tensor *t, gx_real *out, int64_t n, gx_err *err);

/* Builds a file in memory; every add copies its data. */
typedef struct gx_st_writer {
    gx_st_tensor *tensors;
    int n, cap;
    char **meta_keys, **meta_vals;
    int n_meta;
} gx_st_writer;

void      gx_st_writer_init(gx_st_writer *w);
void      gx_st_writer_free(gx_st_writer *w);
gx_status gx_st_writer_add(gx_st_writer *w, const char *name, gx_st_dtype dtype,
                           int ndim, const int64_t *shape, const void *data, gx_err *err);
/* Adds gx_real data stored as F32 (converting in the f64 build). */
gx_status gx_st_writer_add_real(gx_st_writer *w, const char *name, int ndim,
                                const int64_t *shape, const gx_real *data, gx_err *err);
gx_status gx_st_writer_meta(gx_st_writer *w, const char *key, const char *value, gx_err *err);
/* Serialise to memory (malloc'd *out, caller frees) or atomically to a path. */
gx_status gx_st_writer_serialize(const gx_st_writer *w, uint8_t **out, size_t *len, gx_err *err);
gx_status gx_st_writer_write(const gx_st_writer *w, const char *path, gx_err *err);

/* Write bytes to path atomically (temp name, fsync, rename, fsync dir). */
gx_status gx_file_write_atomic(const char *path, const void *data, size_t len, gx_err *err);

/* Adds every parameter and buffer (as F32) to w under its name. */
gx_status gx_params_to_writer(const gx_params *p, gx_st_writer *w, gx_err *err);
/* Loads every registered tensor from f by name. All-or-nothing: each name
 * is found and its shape and dtype checked before anything is copied; the
 * first problem is reported with the tensor's name. Tensors in f that the
 * registry lacks are refused when strict, except PyTorch's
 * "*.num_batches_tracked" counters, which are always ignored. */
gx_status gx_params_load(gx_params *p, const gx_st_file *f, int strict, gx_err *err);
/* gx_params_load's checks alone (every parameter present with its shape and
 * a float dtype; with strict, no foreign tensor), the same errors, nothing
 * copied: also for a gx_params_init_shapes registry. */
gx_status gx_params_check(const gx_params *p, const gx_st_file *f, int strict, gx_err *err);
/* The check gx_params_load applies to one tensor: st present (else
 * GX_ERR_NOTFOUND), a float dtype (else GX_ERR_UNSUPPORTED) and the same
 * shape as t (else GX_ERR_SHAPE, naming both shapes). `name` is reported. */
gx_status gx_st_check_compatible(const gx_st_tensor *st, const gx_tensor *t, const char *name,
                                 gx_err *err);

#ifdef __cplusplus
}
#endif
#endif
