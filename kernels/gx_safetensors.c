/*
 * gx_safetensors.c — checkpoints in the safetensors format: a strict reader,
 * an in-memory writer with atomic file replacement, and the bridge between a
 * parameter registry and a file.
 *
 * Design.
 *  - The reader never trusts the file. Every length is checked against the
 *    bytes actually present before it is used, multiplications that size
 *    tensors are overflow-checked, and the JSON header goes through jansson
 *    (which validates UTF-8) with JSON_REJECT_DUPLICATES. Parsed tensors
 *    point into the file buffer: nothing is copied until a caller converts.
 *  - Like the reference implementation, the tensors must tile the data area
 *    exactly: sorted by offset, the first starts at 0, each starts where the
 *    previous one ended and the last ends at the end of the file. Gaps,
 *    overlaps and unused trailing bytes are all refused, so a file has one
 *    canonical reading and no hidden payload.
 *  - Entries must have exactly the fields dtype, shape and data_offsets;
 *    "__metadata__" must be an object of strings. Every refusal returns
 *    GX_ERR_FORMAT with a message naming the problem and the tensor.
 *  - The writer keeps tensors in insertion order, stably sorted by dtype size
 *    (largest first, as the reference writer does) so that every tensor's
 *    bytes stay aligned to its element size. The JSON header is padded with
 *    spaces to a multiple of 8 bytes, so the data area starts 8-aligned.
 *  - Files are replaced atomically: write "<path>.tmp.<pid>", fsync, rename
 *    over <path>, fsync the directory. A crash leaves the old or the new file.
 *  - The host is assumed little-endian (checked at compile time), which is
 *    what the format stores.
 */
#include "gx_impl.h"
#include "gx_cuda.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gx_safetensors.c assumes a little-endian host"
#endif

/* Largest JSON header accepted (the reference implementation's limit). */
#define GX_ST_MAX_HEADER ((uint64_t)100 << 20)

/* ------------------------------------------------------------- dtypes */

static const char *const gx_st_names[GX_ST_NDTYPES] = {
    "BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"
};
static const size_t gx_st_sizes[GX_ST_NDTYPES] = { 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8 };

const char *gx_st_dtype_name(gx_st_dtype d) {
    return (unsigned)d < GX_ST_NDTYPES ? gx_st_names[d] : "?";
}

size_t gx_st_dtype_size(gx_st_dtype d) {
    return (unsigned)d < GX_ST_NDTYPES ? gx_st_sizes[d] : 0;
}

/* Dtype from its name, or -1. */
static int gx_st_dtype_from_name(const char *s) {
    for (int d = 0; d < GX_ST_NDTYPES; d++)
        if (strcmp(s, gx_st_names[d]) == 0) return d;
    return -1;
}

/* Bytes of a tensor: numel * dtype size with every multiplication checked.
 * Returns 0 on overflow (numel 0 also gives 0 bytes, but is not an error). */
static int gx_st_nbytes(int ndim, const int64_t *shape, size_t esize, uint64_t *out) {
    uint64_t n = esize;
    for (int i = 0; i < ndim; i++)
        if (__builtin_mul_overflow(n, (uint64_t)shape[i], &n)) return 0;
    *out = n;
    return 1;
}

static void gx_st_shape_str(int ndim, const int64_t *shape, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

/* --------------------------------------------------------------- reader */

/* Ownership: gx_st_parse never owns the buffer (owns_buf 0); gx_st_read
 * reads the file into a malloc'd buffer and hands it to the gx_st_file
 * (owns_buf 1), so one gx_st_close releases everything. Tensor names and
 * metadata strings are copies (jansson's strings die with the JSON tree);
 * tensor data is not. gx_st_close is safe on a zeroed or failed file. */

void gx_st_close(gx_st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (int i = 0; i < f->n_meta; i++) { free(f->meta_keys[i]); free(f->meta_vals[i]); }
    free(f->meta_keys);
    free(f->meta_vals);
    if (f->owns_buf) free(f->buf);
    memset(f, 0, sizeof *f);
}

/* "__metadata__": an object whose values are all strings. */
static gx_status gx_st_parse_meta(gx_st_file *f, json_t *m, gx_err *err) {
    /* Arrays are sized from the object up front, so the loop never grows
     * them; n_meta counts filled slots so a failure part-way frees cleanly. */
    if (!json_is_object(m))
        return gx_err_set(err, GX_ERR_FORMAT, "safetensors: __metadata__ is not a JSON object");
    size_t n = json_object_size(m);
    f->meta_keys = calloc(n + 1, sizeof(char *));
    f->meta_vals = calloc(n + 1, sizeof(char *));
    if (!f->meta_keys || !f->meta_vals)
        return gx_err_set(err, GX_ERR_NOMEM, "safetensors: out of memory for metadata");
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v) {
        if (!json_is_string(v))
            return gx_err_set(err, GX_ERR_FORMAT, "safetensors: __metadata__ value of key '%s' is not a string", k);
        f->meta_keys[f->n_meta] = strdup(k);
        f->meta_vals[f->n_meta] = strdup(json_string_value(v));
        f->n_meta++;
        if (!f->meta_keys[f->n_meta - 1] || !f->meta_vals[f->n_meta - 1])
            return gx_err_set(err, GX_ERR_NOMEM, "safetensors: out of memory for metadata");
    }
    return GX_OK;
}

/* A JSON value that is a non-negative integer (jansson refuses integers that
 * do not fit a long long at parse time, and 2.0 is a real, not an integer). */
static int gx_st_json_uint(json_t *v, int64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return 0;
    *out = (int64_t)json_integer_value(v);
    return 1;
}

/* One tensor entry {"dtype", "shape", "data_offsets"}; fills t (except data)
 * and the raw offsets, checking everything that does not involve other
 * tensors. */
static gx_status gx_st_parse_entry(gx_st_tensor *t, const char *name, json_t *e,
                                   uint64_t data_len, uint64_t *begin, uint64_t *end,
                                   gx_err *err) {
    if (!json_is_object(e))
        return gx_err_set(err, GX_ERR_FORMAT, "safetensors: tensor '%s': entry is not a JSON object", name);
    json_t *jd = json_object_get(e, "dtype"), *js = json_object_get(e, "shape"),
           *jo = json_object_get(e, "data_offsets");
    if (!jd || !js || !jo)
        return gx_err_set(err, GX_ERR_FORMAT, "safetensors: tensor '%s': missing field '%s'", name,
                          !jd ? "dtype" : !js ? "shape" : "data_offsets");
    if (json_object_size(e) != 3) {
        const char *k;
        json_t *v;
        json_object_foreach(e, k, v)
            if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets"))
                return gx_err_set(err, GX_ERR_FORMAT, "safetensors: tensor '%s': unexpected field '%s'", name, k);
    }
    /* dtype: one of the names the format defines (PyTorch's writer uses
     * the same spellings). An unknown one is a malformed file rather than an
     * unsupported one: we cannot even size the tensor. */
    if (!json_is_string(jd))
        return gx_err_set(err, GX_ERR_FORMAT, "safetensors: tensor '%s': dtype is not a string", name);
    int d = gx_st_dtype_from_name(json_string_value(jd));
    if (d < 0)
        return gx_err_set(err, GX_ERR_FORMAT, "safetensors: tensor '%s': unknown dtype '%.32s'", name,
                          json_string_value(jd));
    t->dtype = (gx_st_dtype)d;
    /* shape: at most GX_MAX_DIMS non-negative integers; [] is a scalar,
     * a 0 anywhere is an empty tensor (both valid). */
    if (!json_is_array(js))
        return gx_err_set(err, GX_ERR_FORMAT, "safetensors: tensor '%s': shape is not an array", name);
    if (json_array_size(js) > GX_MAX_DIMS)
        return gx_err_set(err, GX_ERR_FORMAT, "safetensors: tensor '%s': shape has %zu dims, more than the %d supported",
                          name, json_array_size(js), GX_MAX_DIMS);
    t->ndim = (int)json_array_size(js);
    for (int i = 0; i < t->ndim; i++)
        if (!gx_st_json_uint(json_array_get(js, (size_t)i), &t->shape[i]))
            return gx_err_set(err, GX_ERR_FORMAT, "safetensors: tensor '%s': shape[%d] is not a non-negative integer", name, i);
    /* data_offsets: [begin, end) relative to the start of the data area.
     * Bounds are checked here, against data_len (the bytes really present),
     * before any pointer is formed; overlaps and gaps need all tensors and
     * are checked in gx_st_check_layout. */
    int64_t b, en;
    if (!json_is_array(jo) || json_array_size(jo) != 2 ||
        !gx_st_json_uint(json_array_get(jo, 0), &b) || !gx_st_json_uint(json_array_get(jo, 1), &en))
        return gx_err_set(err, GX_ERR_FORMAT, "safetensors: tensor '%s': data_offsets is not two non-negative integers", name);
    if (b > en)
        return gx_err_set(err, GX_ERR_FORMAT, "safetensors: tensor '%s': data_offsets begin %lld > end %lld", name,
                          (long long)b, (long long)en);
    if ((uint64_t)en > data_len)
        return gx_err_set(err, GX_ERR_FORMAT, "safetensors: tensor '%s': data_offsets end %lld beyond the data area (%llu bytes)",
                          name, (long long)en, (unsigned long long)data_len);
    /* The byte length must be exactly numel * element size. The product is
     * computed with overflow checks: a shape like [2^62, 4] would otherwise
     * wrap to a small number and pass. */
    uint64_t want;
    if (!gx_st_nbytes(t->ndim, t->shape, gx_st_sizes[d], &want))
        return gx_err_set(err, GX_ERR_FORMAT, "safetensors: tensor '%s': shape size overflows", name);
    if (want != (uint64_t)(en - b)) {
        char sh[128];
        gx_st_shape_str(t->ndim, t->shape, sh, sizeof sh);
        return gx_err_set(err, GX_ERR_FORMAT, "safetensors: tensor '%s': %lld data bytes, but shape %s of %s needs %llu",
                          name, (long long)(en - b), sh, gx_st_names[d], (unsigned long long)want);
    }
    *begin = (uint64_t)b;
    *end = (uint64_t)en;
    t->nbytes = (size_t)want;
    return GX_OK;
}

/* A tensor's byte range and its index in f->tensors, for sorting. */
typedef struct { uint64_t begin, end; int idx; } gx_st_span;

static int gx_st_span_cmp(const void *a, const void *b) {
    const gx_st_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->idx - y->idx;
}

/* Sorts tensors by offset and checks that they tile [0, data_len) exactly. */
static gx_status gx_st_check_layout(gx_st_file *f, gx_st_span *sp, const uint8_t *data,
                                    uint64_t data_len, gx_err *err) {
    qsort(sp, (size_t)f->n, sizeof *sp, gx_st_span_cmp);
    /* Walk in offset order with `pos` = end of the covered prefix. A
     * zero-size tensor at a boundary sorts before the non-empty tensor that
     * starts there and is accepted; one strictly inside another tensor is an
     * overlap, as in the reference implementation. */
    uint64_t pos = 0;
    for (int i = 0; i < f->n; i++) {
        const char *name = f->tensors[sp[i].idx].name;
        if (sp[i].begin < pos)
            return gx_err_set(err, GX_ERR_FORMAT, "safetensors: tensor '%s' overlaps tensor '%s' (bytes %llu..%llu)", name,
                              f->tensors[sp[i - 1].idx].name, (unsigned long long)sp[i].begin,
                              (unsigned long long)sp[i].end);
        if (sp[i].begin > pos)
            return gx_err_set(err, GX_ERR_FORMAT, "safetensors: gap of %llu unused bytes before tensor '%s'",
                              (unsigned long long)(sp[i].begin - pos), name);
        pos = sp[i].end;
    }
    if (pos != data_len)
        return gx_err_set(err, GX_ERR_FORMAT, "safetensors: %llu unused bytes after the last tensor",
                          (unsigned long long)(data_len - pos));
    /* Reorder the tensors into file order and point them at their bytes. */
    gx_st_tensor *sorted = calloc((size_t)(unsigned)f->n + 1, sizeof *sorted);
    if (!sorted) return gx_err_set(err, GX_ERR_NOMEM, "safetensors: out of memory");
    for (int i = 0; i < f->n; i++) {
        sorted[i] = f->tensors[sp[i].idx];
        sorted[i].data = data + sp[i].begin;
    }
    free(f->tensors);
    f->tensors = sorted;
    return GX_OK;
}

/* Everything after the length prefix has been bounds-checked. */
static gx_status gx_st_parse_header(gx_st_file *f, json_t *root, const uint8_t *data,
                                    uint64_t data_len, gx_err *err) {
    if (!json_is_object(root))
        return gx_err_set(err, GX_ERR_FORMAT, "safetensors: header is not a JSON object");
    size_t n = json_object_size(root);
    f->tensors = calloc(n + 1, sizeof *f->tensors);
    gx_st_span *sp = calloc(n + 1, sizeof *sp);
    if (!f->tensors || !sp) { free(sp); return gx_err_set(err, GX_ERR_NOMEM, "safetensors: out of memory"); }
    gx_status s = GX_OK;
    const char *key;
    json_t *v;
    /* JSON_REJECT_DUPLICATES already refused repeated names at load time,
     * so each key seen here is unique; "__metadata__" is the only reserved
     * name. */
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            if ((s = gx_st_parse_meta(f, v, err)) != GX_OK) break;
            continue;
        }
        /* An empty name names no parameter and could not be written back
         * (the writer refuses it): one canonical reading (fuzz_safetensors). */
        if (!*key) { s = gx_err_set(err, GX_ERR_FORMAT, "safetensors: a tensor has an empty name"); break; }
        gx_st_tensor *t = &f->tensors[f->n];
        if (!(t->name = strdup(key))) { s = gx_err_set(err, GX_ERR_NOMEM, "safetensors: out of memory"); break; }
        sp[f->n].idx = f->n;
        f->n++;   /* counted before checks so close() frees the name */
        s = gx_st_parse_entry(t, key, v, data_len, &sp[f->n - 1].begin, &sp[f->n - 1].end, err);
        if (s != GX_OK) break;
    }
    if (s == GX_OK) s = gx_st_check_layout(f, sp, data, data_len, err);
    free(sp);
    return s;
}

gx_status gx_st_parse(gx_st_file *f, const void *buf, size_t len, gx_err *err) {
    memset(f, 0, sizeof *f);
    f->buf = (uint8_t *)buf;
    f->len = len;
    const uint8_t *b = buf;
    if (len < 8)
        return gx_err_set(err, GX_ERR_FORMAT, "safetensors: file is %zu bytes, shorter than the 8-byte header length", len);
    /* The length prefix is checked before it is used for anything: 0 is
     * meaningless, the 100 MiB cap bounds the JSON parser's work and memory
     * whatever the file claims, and the header must fit in the file. The
     * comparison is written as hlen > len - 8 (len >= 8 here) so it cannot
     * overflow the way 8 + hlen > len could. */
    uint64_t hlen;
    memcpy(&hlen, b, 8);   /* little-endian host */
    if (hlen == 0)
        return gx_err_set(err, GX_ERR_FORMAT, "safetensors: header length is 0");
    if (hlen > GX_ST_MAX_HEADER)
        return gx_err_set(err, GX_ERR_FORMAT, "safetensors: header length %llu exceeds the 100 MiB limit",
                          (unsigned long long)hlen);
    if (hlen > len - 8)
        return gx_err_set(err, GX_ERR_FORMAT, "safetensors: header length %llu exceeds the %zu bytes after the length prefix",
                          (unsigned long long)hlen, len - 8);
    /* json_loadb reads exactly hlen bytes (no NUL terminator needed) and
     * validates UTF-8; by default it also refuses trailing garbage after the
     * top-level value (spaces, used as padding, are fine) and "\u0000". */
    json_error_t je;
    json_t *root = json_loadb((const char *)b + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return gx_err_set(err, GX_ERR_FORMAT, "safetensors: header is not valid UTF-8 JSON (line %d column %d: %s)",
                          je.line, je.column, je.text);
    gx_status s = gx_st_parse_header(f, root, b + 8 + hlen, len - 8 - hlen, err);
    json_decref(root);
    if (s != GX_OK) {
        f->owns_buf = 0;   /* the caller's buffer is not ours to free */
        gx_st_close(f);
    }
    return s;
}

/* Reads the whole file (checkpoints are read once, then converted). */
static gx_status gx_read_all(const char *path, uint8_t **out, size_t *len, gx_err *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return gx_err_set(err, GX_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return gx_err_set(err, GX_ERR_IO, "%s is not a regular file", path);
    }
    size_t n = (size_t)st.st_size, got = 0;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) { close(fd); return gx_err_set(err, GX_ERR_NOMEM, "cannot allocate %zu bytes for %s", n, path); }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            gx_status s = gx_err_set(err, GX_ERR_IO, "cannot read %s: %s", path, r < 0 ? strerror(errno) : "file shrank");
            free(buf);
            close(fd);
            return s;
        }
        got += (size_t)r;
    }
    close(fd);
    *out = buf;
    *len = n;
    return GX_OK;
}

gx_status gx_st_read(gx_st_file *f, const char *path, gx_err *err) {
    memset(f, 0, sizeof *f);
    uint8_t *buf = NULL;
    size_t len = 0;
    gx_status s = gx_read_all(path, &buf, &len, err);
    if (s != GX_OK) return s;
    s = gx_st_parse(f, buf, len, err);
    if (s != GX_OK) {
        /* Prefix the path so the caller knows which file was bad. */
        if (err) {
            char m[sizeof err->msg];
            memcpy(m, err->msg, sizeof m);
            gx_err_set(err, s, "%.200s: %.300s", path, m);
        }
        free(buf);
        return s;
    }
    f->owns_buf = 1;
    return GX_OK;
}

const gx_st_tensor *gx_st_find(const gx_st_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *gx_st_meta(const gx_st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_vals[i];
    return NULL;
}

/* IEEE half -> float, exact for every input (subnormals, inf, NaN). */
static float gx_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);            /* inf / NaN */
    } else if (exp == 0) {
        float v = (float)man * 0x1p-24f;                  /* zero or subnormal: man * 2^-24 */
        return sign ? -v : v;
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);   /* rebias 15 -> 127 */
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* bfloat16 is the top half of a float32. */
static float gx_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

gx_status gx_st_to_real(const gx_st_tensor *t, gx_real *out, int64_t n, gx_err *err) {
    int64_t numel = gx_shape_numel(t->ndim, t->shape);
    if (n != numel)
        return gx_err_set(err, GX_ERR_SHAPE, "tensor '%s' has %lld elements, caller expects %lld", t->name,
                          (long long)numel, (long long)n);
    const uint8_t *src = t->data;
    /* memcpy per element: the data may be unaligned inside the file buffer. */
    switch (t->dtype) {
    case GX_ST_F32:
        for (int64_t i = 0; i < n; i++) { float v; memcpy(&v, src + 4 * i, 4); out[i] = (gx_real)v; }
        return GX_OK;
    case GX_ST_F64:
        for (int64_t i = 0; i < n; i++) { double v; memcpy(&v, src + 8 * i, 8); out[i] = (gx_real)v; }
        return GX_OK;
    case GX_ST_F16:
        for (int64_t i = 0; i < n; i++) { uint16_t v; memcpy(&v, src + 2 * i, 2); out[i] = (gx_real)gx_f16_to_f32(v); }
        return GX_OK;
    case GX_ST_BF16:
        for (int64_t i = 0; i < n; i++) { uint16_t v; memcpy(&v, src + 2 * i, 2); out[i] = (gx_real)gx_bf16_to_f32(v); }
        return GX_OK;
    default:
        return gx_err_set(err, GX_ERR_UNSUPPORTED, "tensor '%s': dtype %s is not a float type", t->name,
                          gx_st_dtype_name(t->dtype));
    }
}

/* --------------------------------------------------------------- writer */

/* The writer owns copies of everything added (names, data, metadata), so a
 * caller can add tensors from short-lived buffers and serialise later. Its
 * gx_st_tensor entries reuse the reader's struct with `data` malloc'd. */

void gx_st_writer_init(gx_st_writer *w) { memset(w, 0, sizeof *w); }

void gx_st_writer_free(gx_st_writer *w) {
    for (int i = 0; i < w->n; i++) { free(w->tensors[i].name); free((void *)w->tensors[i].data); }
    free(w->tensors);
    for (int i = 0; i < w->n_meta; i++) { free(w->meta_keys[i]); free(w->meta_vals[i]); }
    free(w->meta_keys);
    free(w->meta_vals);
    memset(w, 0, sizeof *w);
}

/* Validates a new entry, appends it with an uninitialised copy buffer of
 * nbytes, and returns it (or NULL with err set). */
static gx_st_tensor *gx_st_writer_push(gx_st_writer *w, const char *name, gx_st_dtype dtype,
                                       int ndim, const int64_t *shape, gx_err *err, gx_status *s) {
    *s = GX_ERR_INVALID;
    if (!name || !*name || strcmp(name, "__metadata__") == 0) {
        gx_err_set(err, GX_ERR_INVALID, "safetensors writer: invalid tensor name '%s'", name ? name : "(null)");
        return NULL;
    }
    if ((unsigned)dtype >= GX_ST_NDTYPES || ndim < 0 || ndim > GX_MAX_DIMS) {
        gx_err_set(err, GX_ERR_INVALID, "safetensors writer: tensor '%s': bad dtype %d or ndim %d", name, (int)dtype, ndim);
        return NULL;
    }
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->tensors[i].name, name) == 0) {
            gx_err_set(err, GX_ERR_INVALID, "safetensors writer: duplicate tensor name '%s'", name);
            return NULL;
        }
    uint64_t nb;
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0) {
            gx_err_set(err, GX_ERR_INVALID, "safetensors writer: tensor '%s': negative dim %d", name, i);
            return NULL;
        }
    if (!gx_st_nbytes(ndim, shape, gx_st_sizes[dtype], &nb) || nb > SIZE_MAX / 2) {
        gx_err_set(err, GX_ERR_INVALID, "safetensors writer: tensor '%s': size overflows", name);
        return NULL;
    }
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 32;
        gx_st_tensor *t = realloc(w->tensors, (size_t)cap * sizeof *t);
        if (!t) { *s = gx_err_set(err, GX_ERR_NOMEM, "safetensors writer: out of memory"); return NULL; }
        w->tensors = t;
        w->cap = cap;
    }
    gx_st_tensor *t = &w->tensors[w->n];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    t->data = malloc(nb ? (size_t)nb : 1);
    if (!t->name || !t->data) {
        free(t->name);
        free((void *)t->data);
        *s = gx_err_set(err, GX_ERR_NOMEM, "safetensors writer: out of memory for '%s'", name);
        return NULL;
    }
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->nbytes = (size_t)nb;
    w->n++;
    *s = GX_OK;
    return t;
}

gx_status gx_st_writer_add(gx_st_writer *w, const char *name, gx_st_dtype dtype, int ndim,
                           const int64_t *shape, const void *data, gx_err *err) {
    gx_status s;
    gx_st_tensor *t = gx_st_writer_push(w, name, dtype, ndim, shape, err, &s);
    if (t && t->nbytes) memcpy((void *)t->data, data, t->nbytes);
    return s;
}

gx_status gx_st_writer_add_real(gx_st_writer *w, const char *name, int ndim, const int64_t *shape,
                                const gx_real *data, gx_err *err) {
    gx_status s;
    gx_st_tensor *t = gx_st_writer_push(w, name, GX_ST_F32, ndim, shape, err, &s);
    if (!t) return s;
    float *dst = (float *)t->data;   /* malloc'd: aligned */
    int64_t n = (int64_t)(t->nbytes / 4);
    for (int64_t i = 0; i < n; i++) dst[i] = (float)data[i];
    return GX_OK;
}

gx_status gx_st_writer_meta(gx_st_writer *w, const char *key, const char *value, gx_err *err) {
    char *v = strdup(value);
    if (!v) return gx_err_set(err, GX_ERR_NOMEM, "safetensors writer: out of memory");
    for (int i = 0; i < w->n_meta; i++)   /* a repeated key replaces the value */
        if (strcmp(w->meta_keys[i], key) == 0) { free(w->meta_vals[i]); w->meta_vals[i] = v; return GX_OK; }
    char **k = realloc(w->meta_keys, (size_t)(w->n_meta + 1) * sizeof *k);
    if (k) w->meta_keys = k;
    char **vv = k ? realloc(w->meta_vals, (size_t)(w->n_meta + 1) * sizeof *vv) : NULL;
    if (vv) w->meta_vals = vv;
    char *kd = vv ? strdup(key) : NULL;
    if (!kd) { free(v); return gx_err_set(err, GX_ERR_NOMEM, "safetensors writer: out of memory"); }
    w->meta_keys[w->n_meta] = kd;
    w->meta_vals[w->n_meta] = v;
    w->n_meta++;
    return GX_OK;
}

/* Builds the JSON header in data order; `order` lists tensor indices. */
static json_t *gx_st_header_json(const gx_st_writer *w, const int *order, gx_err *err) {
    json_t *root = json_object();
    int ok = root != NULL;
    if (ok && w->n_meta) {
        json_t *m = json_object();
        ok = m && json_object_set_new(root, "__metadata__", m) == 0;
        for (int i = 0; ok && i < w->n_meta; i++) {
            json_t *s = json_string(w->meta_vals[i]);   /* NULL for invalid UTF-8 */
            ok = s && json_object_set_new(m, w->meta_keys[i], s) == 0;
        }
    }
    uint64_t off = 0;
    for (int j = 0; ok && j < w->n; j++) {
        const gx_st_tensor *t = &w->tensors[order[j]];
        json_t *e = json_object(), *sh = json_array(), *of = json_array();
        /* Attach the arrays first: set_new steals them even when it fails. */
        ok = e && sh && of && json_object_set_new(e, "dtype", json_string(gx_st_names[t->dtype])) == 0;
        if (ok) { ok = json_object_set_new(e, "shape", sh) == 0; sh = NULL; }
        if (ok) { ok = json_object_set_new(e, "data_offsets", of) == 0; of = NULL; }
        for (int i = 0; ok && i < t->ndim; i++)
            ok = json_array_append_new(json_object_get(e, "shape"), json_integer(t->shape[i])) == 0;
        json_t *jo = ok ? json_object_get(e, "data_offsets") : NULL;
        ok = ok && json_array_append_new(jo, json_integer((json_int_t)off)) == 0 &&
             json_array_append_new(jo, json_integer((json_int_t)(off + t->nbytes))) == 0;
        json_decref(sh);
        json_decref(of);
        if (ok) ok = json_object_set_new(root, t->name, e) == 0;   /* steals e */
        else json_decref(e);
        off += t->nbytes;
    }
    if (!ok) {
        json_decref(root);
        gx_err_set(err, GX_ERR_INVALID, "safetensors writer: cannot build the header (a name or metadata value is not valid UTF-8?)");
        return NULL;
    }
    return root;
}

/* Layout of the result: u64 header length (a multiple of 8), the compact
 * JSON header (metadata first, then tensors in data order) padded with
 * spaces, then the tensors back to back. JSON_PRESERVE_ORDER keeps the
 * header in data order so the file reads naturally. */
gx_status gx_st_writer_serialize(const gx_st_writer *w, uint8_t **out, size_t *len, gx_err *err) {
    *out = NULL;
    *len = 0;
    /* Stable order: larger elements first keeps every tensor aligned. */
    int *order = malloc((size_t)(w->n + 1) * sizeof *order), k = 0;
    if (!order) return gx_err_set(err, GX_ERR_NOMEM, "safetensors writer: out of memory");
    for (size_t es = 8; es >= 1; es /= 2)
        for (int i = 0; i < w->n; i++)
            if (gx_st_sizes[w->tensors[i].dtype] == es) order[k++] = i;
    json_t *root = gx_st_header_json(w, order, err);
    char *js = root ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (!js) { free(order); return root ? gx_err_set(err, GX_ERR_NOMEM, "safetensors writer: out of memory") : GX_ERR_INVALID; }
    size_t hl = strlen(js), hpad = (hl + 7) / 8 * 8, data = 0;
    for (int i = 0; i < w->n; i++) data += w->tensors[i].nbytes;
    uint8_t *buf = malloc(8 + hpad + data);
    if (!buf) { free(js); free(order); return gx_err_set(err, GX_ERR_NOMEM, "safetensors writer: out of memory"); }
    uint64_t h64 = hpad;
    memcpy(buf, &h64, 8);
    memcpy(buf + 8, js, hl);
    memset(buf + 8 + hl, ' ', hpad - hl);
    size_t pos = 8 + hpad;
    for (int j = 0; j < w->n; j++) {
        const gx_st_tensor *t = &w->tensors[order[j]];
        if (t->nbytes) memcpy(buf + pos, t->data, t->nbytes);
        pos += t->nbytes;
    }
    free(js);
    free(order);
    *out = buf;
    *len = pos;
    return GX_OK;
}

gx_status gx_st_writer_write(const gx_st_writer *w, const char *path, gx_err *err) {
    uint8_t *buf;
    size_t len;
    gx_status s = gx_st_writer_serialize(w, &buf, &len, err);
    if (s != GX_OK) return s;
    s = gx_file_write_atomic(path, buf, len, err);
    free(buf);
    return s;
}

/* fsync the directory holding path, so the rename itself is durable. */
static gx_status gx_fsync_parent(const char *path, gx_err *err) {
    /* rename() only updates the directory entry in the page cache; without
     * this fsync a power cut can lose the rename although the data is on
     * disk, leaving the old file (or none) after a "successful" save. */
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return gx_err_set(err, GX_ERR_IO, "cannot open directory %s: %s", dir, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    /* Some filesystems refuse fsync on directories; that is not a failure of ours. */
    if (rc != 0 && e != EINVAL && e != EROFS)
        return gx_err_set(err, GX_ERR_IO, "cannot fsync directory %s: %s", dir, strerror(e));
    return GX_OK;
}

gx_status gx_file_write_atomic(const char *path, const void *data, size_t len, gx_err *err) {
    /* The temp name carries the pid so two processes saving to the same
     * path never write into each other's temp file; it lives in the target's
     * directory because rename() is only atomic within one filesystem. On
     * any failure the temp file is removed and <path> is untouched. */
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp)
        return gx_err_set(err, GX_ERR_INVALID, "path too long: %s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return gx_err_set(err, GX_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    const uint8_t *p = data;
    size_t done = 0;
    gx_status s = GX_OK;
    while (done < len) {
        ssize_t r = write(fd, p + done, len - done);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { s = gx_err_set(err, GX_ERR_IO, "cannot write %s: %s", tmp, strerror(errno)); break; }
        done += (size_t)r;
    }
    if (s == GX_OK && fsync(fd) != 0) s = gx_err_set(err, GX_ERR_IO, "cannot fsync %s: %s", tmp, strerror(errno));
    if (close(fd) != 0 && s == GX_OK) s = gx_err_set(err, GX_ERR_IO, "cannot close %s: %s", tmp, strerror(errno));
    if (s == GX_OK && rename(tmp, path) != 0)
        s = gx_err_set(err, GX_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    if (s != GX_OK) { unlink(tmp); return s; }
    return gx_fsync_parent(path, err);
}

/* ------------------------------------------------------ parameter bridge */

/* Parameters on the device are written from their host copies: the caller
 * brings them up to date first (gx_params_sync_host), as a trainer does
 * before each checkpoint; t.data is then a device pointer the host must not
 * read. */
gx_status gx_params_to_writer(const gx_params *p, gx_st_writer *w, gx_err *err) {
    for (int i = 0; i < p->n; i++) {
        const gx_param *q = p->items[i];
        gx_status s = gx_st_writer_add_real(w, q->name, q->t.ndim, q->t.shape, gx_tensor_host_data(&q->t), err);
        if (s != GX_OK) return s;
    }
    return GX_OK;
}

static int gx_st_is_float(gx_st_dtype d) {
    return d == GX_ST_F32 || d == GX_ST_F64 || d == GX_ST_F16 || d == GX_ST_BF16;
}

static int gx_ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Checks that file tensor st can be loaded into registry tensor t. */
gx_status gx_st_check_compatible(const gx_st_tensor *st, const gx_tensor *t, const char *name, gx_err *err) {
    if (!st) return gx_err_set(err, GX_ERR_NOTFOUND, "checkpoint lacks tensor '%s'", name);
    if (!gx_st_is_float(st->dtype))
        return gx_err_set(err, GX_ERR_UNSUPPORTED, "tensor '%s': dtype %s in the file, expected a float dtype (F32/F64/F16/BF16)",
                          name, gx_st_dtype_name(st->dtype));
    int same = st->ndim == t->ndim;
    for (int d = 0; same && d < t->ndim; d++) same = st->shape[d] == t->shape[d];
    if (!same) {
        char a[128], b[128];
        gx_st_shape_str(st->ndim, st->shape, a, sizeof a);
        gx_st_shape_str(t->ndim, t->shape, b, sizeof b);
        return gx_err_set(err, GX_ERR_SHAPE, "tensor '%s': shape %s in the file, %s in the model", name, a, b);
    }
    return GX_OK;
}

/* Float dtypes of any width are accepted and converted (a checkpoint saved
 * in F16/BF16 or F64 loads into the f32 engine); integer dtypes are refused,
 * as they never hold learned weights. Registry entries are looked up by
 * name, so file order does not matter. */
gx_status gx_params_check(const gx_params *p, const gx_st_file *f, int strict, gx_err *err) {
    for (int i = 0; i < p->n; i++) {
        gx_status s = gx_st_check_compatible(gx_st_find(f, p->items[i]->name), &p->items[i]->t,
                                             p->items[i]->name, err);
        if (s != GX_OK) return s;
    }
    if (strict)
        for (int i = 0; i < f->n; i++) {
            const char *nm = f->tensors[i].name;
            if (!gx_params_find(p, nm) && !gx_ends_with(nm, ".num_batches_tracked"))
                return gx_err_set(err, GX_ERR_NOTFOUND, "checkpoint tensor '%s' is not a parameter of the model (strict load)", nm);
        }
    return GX_OK;
}

gx_status gx_params_load(gx_params *p, const gx_st_file *f, int strict, gx_err *err) {
    /* Loading writes t.data on the host: it comes before gx_params_to_cuda. */
    GX_ASSERT_MSG(!p->cuda, "gx_params_load: the parameters are on the device (load before gx_params_to_cuda)");
    GX_ASSERT_MSG(!p->shape_only, "gx_params_load: a shapes-only registry has no memory to load into");
    /* Pass 1: validate everything, so a refusal leaves the registry untouched. */
    gx_status cs = gx_params_check(p, f, strict, err);
    if (cs != GX_OK) return cs;
    /* Pass 2: copy; conversions cannot fail after the checks above. */
    for (int i = 0; i < p->n; i++) {
        gx_tensor *t = &p->items[i]->t;
        gx_status s = gx_st_to_real(gx_st_find(f, p->items[i]->name), t->data, t->numel, err);
        GX_ASSERT(s == GX_OK);
    }
    return GX_OK;
}
