/* gx_safetensors.c — STUB: to be replaced by the real implementation. */
#include "gx_impl.h"

const char *gx_st_dtype_name(gx_st_dtype d) {
    (void)d;
    GX_ASSERT_MSG(0, "gx_st_dtype_name not implemented");
}

size_t gx_st_dtype_size(gx_st_dtype d) {
    (void)d;
    GX_ASSERT_MSG(0, "gx_st_dtype_size not implemented");
}

gx_status gx_st_parse(gx_st_file *f, const void *buf, size_t len, gx_err *err) {
    (void)f;
    (void)buf;
    (void)len;
    (void)err;
    GX_ASSERT_MSG(0, "gx_st_parse not implemented");
}

gx_status gx_st_read(gx_st_file *f, const char *path, gx_err *err) {
    (void)f;
    (void)path;
    (void)err;
    GX_ASSERT_MSG(0, "gx_st_read not implemented");
}

void gx_st_close(gx_st_file *f) {
    (void)f;
    GX_ASSERT_MSG(0, "gx_st_close not implemented");
}

const gx_st_tensor *gx_st_find(const gx_st_file *f, const char *name) {
    (void)f;
    (void)name;
    GX_ASSERT_MSG(0, "gx_st_find not implemented");
}

const char *gx_st_meta(const gx_st_file *f, const char *key) {
    (void)f;
    (void)key;
    GX_ASSERT_MSG(0, "gx_st_meta not implemented");
}

gx_status gx_st_to_real(const gx_st_tensor *t, gx_real *out, int64_t n, gx_err *err) {
    (void)t;
    (void)out;
    (void)n;
    (void)err;
    GX_ASSERT_MSG(0, "gx_st_to_real not implemented");
}

void gx_st_writer_init(gx_st_writer *w) {
    (void)w;
    GX_ASSERT_MSG(0, "gx_st_writer_init not implemented");
}

void gx_st_writer_free(gx_st_writer *w) {
    (void)w;
    GX_ASSERT_MSG(0, "gx_st_writer_free not implemented");
}

gx_status gx_st_writer_add(gx_st_writer *w, const char *name, gx_st_dtype dtype, int ndim, const int64_t *shape, const void *data, gx_err *err) {
    (void)w;
    (void)name;
    (void)dtype;
    (void)ndim;
    (void)shape;
    (void)data;
    (void)err;
    GX_ASSERT_MSG(0, "gx_st_writer_add not implemented");
}

gx_status gx_st_writer_add_real(gx_st_writer *w, const char *name, int ndim, const int64_t *shape, const gx_real *data, gx_err *err) {
    (void)w;
    (void)name;
    (void)ndim;
    (void)shape;
    (void)data;
    (void)err;
    GX_ASSERT_MSG(0, "gx_st_writer_add_real not implemented");
}

gx_status gx_st_writer_meta(gx_st_writer *w, const char *key, const char *value, gx_err *err) {
    (void)w;
    (void)key;
    (void)value;
    (void)err;
    GX_ASSERT_MSG(0, "gx_st_writer_meta not implemented");
}

gx_status gx_st_writer_serialize(const gx_st_writer *w, uint8_t **out, size_t *len, gx_err *err) {
    (void)w;
    (void)out;
    (void)len;
    (void)err;
    GX_ASSERT_MSG(0, "gx_st_writer_serialize not implemented");
}

gx_status gx_st_writer_write(const gx_st_writer *w, const char *path, gx_err *err) {
    (void)w;
    (void)path;
    (void)err;
    GX_ASSERT_MSG(0, "gx_st_writer_write not implemented");
}

gx_status gx_file_write_atomic(const char *path, const void *data, size_t len, gx_err *err) {
    (void)path;
    (void)data;
    (void)len;
    (void)err;
    GX_ASSERT_MSG(0, "gx_file_write_atomic not implemented");
}

gx_status gx_params_to_writer(const gx_params *p, gx_st_writer *w, gx_err *err) {
    (void)p;
    (void)w;
    (void)err;
    GX_ASSERT_MSG(0, "gx_params_to_writer not implemented");
}

gx_status gx_params_load(gx_params *p, const gx_st_file *f, int strict, gx_err *err) {
    (void)p;
    (void)f;
    (void)strict;
    (void)err;
    GX_ASSERT_MSG(0, "gx_params_load not implemented");
}
