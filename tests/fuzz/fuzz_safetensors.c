/*
 * fuzz_safetensors.c — libFuzzer target for gx_st_parse, the reader every
 * checkpoint goes through (galaxyd's --models directory, galaxy-train's
 * --resume / --judge / eval / bundle, the parity fixtures).
 *
 * Built by mk/fuzz.mk with clang -fsanitize=fuzzer,address,undefined; seeds
 * are the small .safetensors files in tests/fixtures/fuzz/. Invariants (an
 * abort() is a finding):
 *  - a refusal leaves a message and an empty file struct;
 *  - an accepted file's tensors lie inside the buffer, each with nbytes =
 *    numel x the dtype's size, and tile the data area in offset order;
 *  - every float tensor converts (gx_st_to_real) and every other dtype is
 *    refused by the conversion with a message;
 *  - the file has one canonical reading: writing its tensors and metadata
 *    back with gx_st_writer and parsing the result gives the same names,
 *    dtypes, shapes, bytes and metadata.
 */
#include "gx.h"
#include "gx_safetensors.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_tensors(const gx_st_file *f) {
    const uint8_t *prev_end = NULL;
    for (int i = 0; i < f->n; i++) {
        const gx_st_tensor *t = &f->tensors[i];
        if (!t->name || t->dtype < 0 || t->dtype >= GX_ST_NDTYPES || t->ndim < 0 || t->ndim > GX_MAX_DIMS) abort();
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0) abort();
            numel *= (size_t)t->shape[d];
        }
        if (t->nbytes != numel * gx_st_dtype_size(t->dtype)) abort();
        const uint8_t *p = t->data;
        if (t->nbytes && (p < f->buf || p + t->nbytes > f->buf + f->len)) abort();
        if (t->nbytes && prev_end && p != prev_end) abort();   /* tiled, no gaps or overlaps */
        if (t->nbytes) prev_end = p + t->nbytes;
        if (gx_st_find(f, t->name) == NULL) abort();
    }
    if (prev_end && prev_end != f->buf + f->len) abort();     /* no trailing bytes */
}

static void check_convert(const gx_st_file *f) {
    for (int i = 0; i < f->n; i++) {
        const gx_st_tensor *t = &f->tensors[i];
        int64_t n = (int64_t)(t->nbytes / gx_st_dtype_size(t->dtype));
        gx_real *out = malloc((size_t)(n ? n : 1) * sizeof *out);
        if (!out) return;
        gx_err err;
        err.msg[0] = 0;
        gx_status s = gx_st_to_real(t, out, n, &err);
        int is_float = t->dtype == GX_ST_F32 || t->dtype == GX_ST_F64 || t->dtype == GX_ST_F16 || t->dtype == GX_ST_BF16;
        if (is_float ? s != GX_OK : (s == GX_OK || err.msg[0] == 0)) abort();
        free(out);
    }
}

static void check_round_trip(const gx_st_file *f) {
    gx_st_writer w;
    gx_st_writer_init(&w);
    gx_err err;
    for (int i = 0; i < f->n; i++) {
        const gx_st_tensor *t = &f->tensors[i];
        if (gx_st_writer_add(&w, t->name, t->dtype, t->ndim, t->shape, t->data, &err) != GX_OK) abort();
    }
    for (int i = 0; i < f->n_meta; i++)
        if (gx_st_writer_meta(&w, f->meta_keys[i], f->meta_vals[i], &err) != GX_OK) abort();
    uint8_t *buf = NULL;
    size_t len = 0;
    if (gx_st_writer_serialize(&w, &buf, &len, &err) != GX_OK) abort();
    gx_st_file g;
    if (gx_st_parse(&g, buf, len, &err) != GX_OK) abort();
    if (g.n != f->n || g.n_meta != f->n_meta) abort();
    for (int i = 0; i < f->n; i++) {
        const gx_st_tensor *a = &f->tensors[i], *b = gx_st_find(&g, a->name);
        if (!b || b->dtype != a->dtype || b->ndim != a->ndim || b->nbytes != a->nbytes) abort();
        if (memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof a->shape[0])) abort();
        if (a->nbytes && memcmp(a->data, b->data, a->nbytes)) abort();
    }
    for (int i = 0; i < f->n_meta; i++) {
        const char *v = gx_st_meta(&g, f->meta_keys[i]);
        if (!v || strcmp(v, f->meta_vals[i])) abort();
    }
    gx_st_close(&g);
    free(buf);
    gx_st_writer_free(&w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gx_st_file f;
    gx_err err;
    err.msg[0] = 0;
    if (gx_st_parse(&f, data, size, &err) != GX_OK) {
        if (err.msg[0] == 0 || f.tensors || f.n || f.meta_keys || f.n_meta) abort();
        return 0;
    }
    check_tensors(&f);
    check_convert(&f);
    check_round_trip(&f);
    gx_st_close(&f);
    return 0;
}
