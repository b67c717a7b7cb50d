/*
 * test_safetensors.c — the checkpoint reader, writer and parameter bridge.
 *
 * Malformed files are built in memory, each in a malloc'd buffer of exactly
 * its own size, so under the ASan build (SAN=1) any read past the end of
 * the input is caught. Every refusal is checked for its status and for a
 * substring of its message (the message must name the problem).
 */
#include "gx_test.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A file made of an 8-byte length, the header text and `data_len` bytes of
 * data (value i & 0xff), in a buffer of exactly that size. */
static uint8_t *st_make(const char *header, size_t hlen, size_t data_len, size_t *len) {
    *len = 8 + hlen + data_len;
    uint8_t *b = malloc(*len);
    uint64_t h = hlen;
    memcpy(b, &h, 8);
    memcpy(b + 8, header, hlen);
    for (size_t i = 0; i < data_len; i++) b[8 + hlen + i] = (uint8_t)i;
    return b;
}

/* Parses the file and checks the refusal: status and message substring. */
static void st_expect(gx_test_state *T, const char *label, const uint8_t *buf, size_t len,
                      gx_status want, const char *substr) {
    gx_st_file f;
    gx_err err = {{0}};
    gx_status s = gx_st_parse(&f, buf, len, &err);
    CHECK_MSG(s == want, "%s: status %s, want %s (msg: %s)", label, gx_status_str(s), gx_status_str(want), err.msg);
    CHECK_MSG(strstr(err.msg, substr) != NULL, "%s: message '%s' lacks '%s'", label, err.msg, substr);
    CHECK_MSG(f.n == 0 && f.tensors == NULL, "%s: failed parse left state behind", label);
    gx_st_close(&f);
}

static void st_expect_header(gx_test_state *T, const char *header, size_t data_len, const char *substr) {
    size_t len;
    uint8_t *b = st_make(header, strlen(header), data_len, &len);
    st_expect(T, header, b, len, GX_ERR_FORMAT, substr);
    free(b);
}

GX_TEST(st_refuses_bad_length_prefix) {
    uint8_t tiny[7] = {0};
    st_expect(T, "empty", tiny, 0, GX_ERR_FORMAT, "shorter than the 8-byte");
    st_expect(T, "7 bytes", tiny, 7, GX_ERR_FORMAT, "shorter than the 8-byte");
    size_t len;
    uint8_t *b = st_make("{}", 2, 0, &len);
    uint64_t h = 0;
    memcpy(b, &h, 8);
    st_expect(T, "zero header", b, len, GX_ERR_FORMAT, "header length is 0");
    h = ((uint64_t)100 << 20) + 1;
    memcpy(b, &h, 8);
    st_expect(T, "header > 100 MiB", b, len, GX_ERR_FORMAT, "100 MiB");
    h = 3;   /* one byte more than is there */
    memcpy(b, &h, 8);
    st_expect(T, "header beyond file", b, len, GX_ERR_FORMAT, "exceeds the 2 bytes");
    h = UINT64_MAX;
    memcpy(b, &h, 8);
    st_expect(T, "header length 2^64-1", b, len, GX_ERR_FORMAT, "100 MiB");
    free(b);
}

GX_TEST(st_refuses_bad_json) {
    st_expect_header(T, "{", 0, "not valid UTF-8 JSON");
    st_expect_header(T, "{\"a\xff\": 1}", 0, "not valid UTF-8 JSON");              /* invalid UTF-8 */
    st_expect_header(T, "{} x", 0, "not valid UTF-8 JSON");                        /* trailing garbage */
    st_expect_header(T, "{\"a\\u0000b\":{}}", 0, "not valid UTF-8 JSON");          /* NUL in a name */
    st_expect_header(T, "[1,2]", 0, "header is not a JSON object");
    st_expect_header(T, "\"str\"", 0, "not valid UTF-8 JSON");                     /* jansson: object or array only */
    st_expect_header(T, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                        "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2, "duplicate");
}

GX_TEST(st_refuses_bad_entries) {
    st_expect_header(T, "{\"a\":1}", 0, "tensor 'a': entry is not a JSON object");
    /* Found by fuzz_safetensors: the writer cannot write an empty name back. */
    st_expect_header(T, "{\"\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
                     "a tensor has an empty name");
    st_expect_header(T, "{\"a\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "tensor 'a': missing field 'dtype'");
    st_expect_header(T, "{\"a\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1, "tensor 'a': missing field 'shape'");
    st_expect_header(T, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1, "tensor 'a': missing field 'data_offsets'");
    st_expect_header(T, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":0}}", 1,
                     "tensor 'a': unexpected field 'x'");
    st_expect_header(T, "{\"a\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
                     "tensor 'a': unknown dtype 'F128'");
    st_expect_header(T, "{\"a\":{\"dtype\":9,\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "tensor 'a': dtype is not a string");
    st_expect_header(T, "{\"a\":{\"dtype\":\"U8\",\"shape\":1,\"data_offsets\":[0,1]}}", 1, "tensor 'a': shape is not an array");
    st_expect_header(T, "{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", 1,
                     "tensor 'a': shape[0] is not a non-negative integer");
    st_expect_header(T, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,2.0],\"data_offsets\":[0,2]}}", 2,
                     "tensor 'a': shape[1] is not a non-negative integer");
    st_expect_header(T, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
                     "tensor 'a': shape has 7 dims");
    st_expect_header(T, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 1,
                     "tensor 'a': data_offsets is not two non-negative integers");
    st_expect_header(T, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[\"0\",\"1\"]}}", 1,
                     "tensor 'a': data_offsets is not two non-negative integers");
    st_expect_header(T, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}", 1,
                     "tensor 'a': data_offsets is not two non-negative integers");
    st_expect_header(T, "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,2]}}", 4,
                     "tensor 'a': data_offsets begin 4 > end 2");
    st_expect_header(T, "{\"a\":{\"dtype\":\"U8\",\"shape\":[5],\"data_offsets\":[0,5]}}", 4,
                     "tensor 'a': data_offsets end 5 beyond the data area (4 bytes)");
    st_expect_header(T, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
                     "tensor 'a': 4 data bytes, but shape [2] of F32 needs 8");
    /* numel * size wraps around 2^64 to a small value: must still be refused. */
    st_expect_header(T, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,0]}}", 0,
                     "tensor 'a': shape size overflows");
}

GX_TEST(st_refuses_bad_layout_and_metadata) {
    st_expect_header(T, "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                        "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}", 6, "overlaps tensor");
    st_expect_header(T, "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                        "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[3,5]}}", 5, "gap of 1 unused bytes before tensor 'b'");
    st_expect_header(T, "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3]}}", 3,
                     "gap of 1 unused bytes before tensor 'a'");
    st_expect_header(T, "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 5, "3 unused bytes after the last tensor");
    st_expect_header(T, "{}", 1, "1 unused bytes after the last tensor");
    st_expect_header(T, "{\"__metadata__\":[\"x\"]}", 0, "__metadata__ is not a JSON object");
    st_expect_header(T, "{\"__metadata__\":{\"k\":1}}", 0, "__metadata__ value of key 'k' is not a string");
    /* Same tensor twice at the same place is an overlap, not a valid alias. */
    st_expect_header(T, "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                        "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, "overlaps tensor");
}

GX_TEST(st_parses_valid_edge_cases) {
    /* Empty file, scalars, zero-size tensors, spaces after the JSON, entries
     * listed out of offset order (the reader sorts them). */
    const char *h = "{\"__metadata__\":{\"format\":\"pt\"},"
                    "\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
                    "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                    "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]}}   ";
    size_t len;
    uint8_t *b = st_make(h, strlen(h), 6, &len);
    float one = 1.5f;
    memcpy(b + 8 + strlen(h), &one, 4);
    gx_st_file f;
    gx_err err = {{0}};
    CHECK_MSG(gx_st_parse(&f, b, len, &err) == GX_OK, "%s", err.msg);
    CHECK(f.n == 3);
    CHECK(strcmp(f.tensors[0].name, "s") == 0);   /* file order of offsets */
    const gx_st_tensor *s = gx_st_find(&f, "s"), *z = gx_st_find(&f, "z"), *bb = gx_st_find(&f, "b");
    CHECK(s && z && bb && !gx_st_find(&f, "nope"));
    if (s && z && bb) {
        CHECK(s->ndim == 0 && s->nbytes == 4);
        gx_real v = 0;
        CHECK(gx_st_to_real(s, &v, 1, &err) == GX_OK);
        CHECK_NEAR(v, 1.5, 0);
        CHECK(z->ndim == 2 && z->shape[0] == 0 && z->nbytes == 0);
        CHECK(bb->dtype == GX_ST_U8 && ((const uint8_t *)bb->data)[1] == 5);
        CHECK(gx_st_to_real(bb, &v, 2, &err) == GX_ERR_UNSUPPORTED && strstr(err.msg, "'b'"));
        CHECK(gx_st_to_real(s, &v, 2, &err) == GX_ERR_SHAPE);
    }
    CHECK(gx_st_meta(&f, "format") && strcmp(gx_st_meta(&f, "format"), "pt") == 0);
    CHECK(gx_st_meta(&f, "other") == NULL);
    gx_st_close(&f);
    free(b);
    b = st_make("{}", 2, 0, &len);
    CHECK(gx_st_parse(&f, b, len, &err) == GX_OK && f.n == 0);
    gx_st_close(&f);
    free(b);
}

GX_TEST(st_converts_f16_bf16_f64) {
    /* Hand-checked IEEE encodings: normal, negative, max, smallest subnormal,
     * smallest normal, inexact third, infinity. */
    const uint16_t h[] = { 0x3C00, 0xC000, 0x7BFF, 0x0001, 0x0400, 0x3555, 0x7C00, 0x8000 };
    const double hv[] = { 1.0, -2.0, 65504.0, 0x1p-24, 0x1p-14, 0.333251953125, INFINITY, -0.0 };
    const uint16_t bf[] = { 0x3F80, 0xC040, 0x4049, 0x0000 };
    const double bv[] = { 1.0, -3.0, 3.140625, 0.0 };
    const double dv[] = { 0.25, -1e-3 };
    gx_st_writer w;
    gx_st_writer_init(&w);
    gx_err err = {{0}};
    CHECK(gx_st_writer_add(&w, "h", GX_ST_F16, 1, GX_SHAPE(8), h, &err) == GX_OK);
    CHECK(gx_st_writer_add(&w, "bf", GX_ST_BF16, 1, GX_SHAPE(4), bf, &err) == GX_OK);
    CHECK(gx_st_writer_add(&w, "d", GX_ST_F64, 1, GX_SHAPE(2), dv, &err) == GX_OK);
    uint8_t *buf;
    size_t len;
    CHECK(gx_st_writer_serialize(&w, &buf, &len, &err) == GX_OK);
    gx_st_file f;
    CHECK_MSG(gx_st_parse(&f, buf, len, &err) == GX_OK, "%s", err.msg);
    gx_real out[8];
    CHECK(gx_st_to_real(gx_st_find(&f, "h"), out, 8, &err) == GX_OK);
    for (int i = 0; i < 8; i++) CHECK_MSG((double)out[i] == hv[i], "f16 %04x -> %g, want %g", h[i], (double)out[i], hv[i]);
    CHECK(signbit(out[7]));
    CHECK(gx_st_to_real(gx_st_find(&f, "bf"), out, 4, &err) == GX_OK);
    for (int i = 0; i < 4; i++) CHECK_NEAR(out[i], bv[i], 0);
    CHECK(gx_st_to_real(gx_st_find(&f, "d"), out, 2, &err) == GX_OK);
    CHECK_NEAR(out[0], 0.25, 0);
    CHECK_NEAR(out[1], -1e-3, 1e-9);
    /* NaN half stays NaN. */
    gx_st_tensor nan_t = { .name = "n", .dtype = GX_ST_F16, .ndim = 1, .shape = {1},
                           .data = (const uint16_t[]){ 0x7E00 }, .nbytes = 2 };
    CHECK(gx_st_to_real(&nan_t, out, 1, &err) == GX_OK && isnan(out[0]));
    gx_st_close(&f);
    free(buf);
    gx_st_writer_free(&w);
}

GX_TEST(st_writer_round_trip_bytes_values_metadata) {
    gx_st_writer w;
    gx_st_writer_init(&w);
    gx_err err = {{0}};
    const gx_real a[6] = { 1, -2, 3.5f, 0.125f, -7, 1e-3f };
    const int64_t ids[3] = { -1, 1LL << 40, 7 };
    const uint8_t u[3] = { 1, 2, 255 };
    CHECK(gx_st_writer_add(&w, "u", GX_ST_U8, 1, GX_SHAPE(3), u, &err) == GX_OK);
    CHECK(gx_st_writer_add_real(&w, "layer.0.weight", 2, GX_SHAPE(2, 3), a, &err) == GX_OK);
    CHECK(gx_st_writer_add(&w, "ids", GX_ST_I64, 1, GX_SHAPE(3), ids, &err) == GX_OK);
    CHECK(gx_st_writer_add(&w, "empty", GX_ST_F32, 1, GX_SHAPE(0), NULL, &err) == GX_OK);
    CHECK(gx_st_writer_meta(&w, "step", "12", &err) == GX_OK);
    CHECK(gx_st_writer_meta(&w, "step", "13", &err) == GX_OK);   /* replaces */
    CHECK(gx_st_writer_meta(&w, "note", "galaxy \xc3\xa9", &err) == GX_OK);
    /* Refusals: duplicate name, reserved name, negative dim. */
    CHECK(gx_st_writer_add(&w, "u", GX_ST_U8, 1, GX_SHAPE(3), u, &err) == GX_ERR_INVALID && strstr(err.msg, "duplicate tensor name 'u'"));
    CHECK(gx_st_writer_add(&w, "__metadata__", GX_ST_U8, 1, GX_SHAPE(3), u, &err) == GX_ERR_INVALID);
    CHECK(gx_st_writer_add(&w, "neg", GX_ST_U8, 1, GX_SHAPE(-3), u, &err) == GX_ERR_INVALID && strstr(err.msg, "negative"));
    CHECK(w.n == 4);

    uint8_t *buf;
    size_t len;
    CHECK(gx_st_writer_serialize(&w, &buf, &len, &err) == GX_OK);
    uint64_t hl;
    memcpy(&hl, buf, 8);
    CHECK(hl % 8 == 0);
    CHECK(buf[8 + hl - 1] == ' ' || buf[8 + hl - 1] == '}');
    gx_st_file f;
    CHECK_MSG(gx_st_parse(&f, buf, len, &err) == GX_OK, "%s", err.msg);
    CHECK(f.n == 4);
    /* 8-byte elements first, then 4, then 1: each tensor aligned to its size. */
    CHECK(strcmp(f.tensors[0].name, "ids") == 0 && strcmp(f.tensors[3].name, "u") == 0);
    for (int i = 0; i < f.n; i++)
        CHECK(((const uint8_t *)f.tensors[i].data - (buf + 8 + hl)) % (long)gx_st_dtype_size(f.tensors[i].dtype) == 0);
    const gx_st_tensor *tw = gx_st_find(&f, "layer.0.weight"), *ti = gx_st_find(&f, "ids"), *tu = gx_st_find(&f, "u");
    CHECK(tw && ti && tu);
    if (tw && ti && tu) {
        CHECK(tw->dtype == GX_ST_F32 && tw->ndim == 2 && tw->shape[0] == 2 && tw->shape[1] == 3);
        gx_real got[6];
        CHECK(gx_st_to_real(tw, got, 6, &err) == GX_OK);
        gx_test_allclose(T, "weight", got, a, 6, 0, 0);
        CHECK(memcmp(ti->data, ids, sizeof ids) == 0);
        CHECK(memcmp(tu->data, u, 3) == 0);
    }
    CHECK(strcmp(gx_st_meta(&f, "step"), "13") == 0);
    CHECK(strcmp(gx_st_meta(&f, "note"), "galaxy \xc3\xa9") == 0);
    /* Re-serialising the parsed file in file order gives identical bytes. */
    gx_st_writer w2;
    gx_st_writer_init(&w2);
    for (int i = 0; i < f.n; i++)
        gx_st_writer_add(&w2, f.tensors[i].name, f.tensors[i].dtype, f.tensors[i].ndim, f.tensors[i].shape,
                         f.tensors[i].data, &err);
    for (int i = 0; i < f.n_meta; i++) gx_st_writer_meta(&w2, f.meta_keys[i], f.meta_vals[i], &err);
    uint8_t *buf2;
    size_t len2;
    CHECK(gx_st_writer_serialize(&w2, &buf2, &len2, &err) == GX_OK);
    CHECK(len2 == len && memcmp(buf, buf2, len) == 0);
    free(buf2);
    gx_st_writer_free(&w2);
    gx_st_close(&f);
    free(buf);
    gx_st_writer_free(&w);
}

/* Every truncation and many single-byte corruptions of a valid file must be
 * handled without crashing or reading out of bounds (meaningful under ASan). */
GX_TEST(st_truncations_and_corruptions_are_safe) {
    gx_st_writer w;
    gx_st_writer_init(&w);
    gx_err err = {{0}};
    const gx_real a[5] = { 1, 2, 3, 4, 5 };
    gx_st_writer_add_real(&w, "a", 1, GX_SHAPE(5), a, &err);
    gx_st_writer_add(&w, "b", GX_ST_I16, 2, GX_SHAPE(1, 2), (const int16_t[]){ 3, 4 }, &err);
    gx_st_writer_meta(&w, "k", "v", &err);
    uint8_t *buf;
    size_t len;
    CHECK(gx_st_writer_serialize(&w, &buf, &len, &err) == GX_OK);
    int refused = 0, accepted = 0;
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *b = malloc(cut ? cut : 1);
        memcpy(b, buf, cut);
        gx_st_file f;
        if (gx_st_parse(&f, b, cut, &err) == GX_OK) accepted++; else refused++;
        gx_st_close(&f);
        free(b);
    }
    CHECK(refused == (int)len && accepted == 0);   /* the tiling rule catches every cut */
    int ok_flips = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t *b = malloc(len);
        memcpy(b, buf, len);
        b[i] ^= (uint8_t)(0x5a + i);
        gx_st_file f;
        if (gx_st_parse(&f, b, len, &err) == GX_OK) {
            ok_flips++;
            for (int t = 0; t < f.n; t++)   /* whatever parsed lies inside the buffer */
                CHECK((const uint8_t *)f.tensors[t].data + f.tensors[t].nbytes <= b + len);
        }
        gx_st_close(&f);
        free(b);
    }
    CHECK(ok_flips > 0);   /* flips in the data area are valid files */
    free(buf);
    gx_st_writer_free(&w);
}

/* ------------------------------------------------------------ files */

static int st_count_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

GX_TEST(st_atomic_write_replaces_and_leaves_no_temp) {
    char dir[] = "/tmp/gx_st_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/ckpt.safetensors", dir);
    gx_err err = {{0}};
    gx_st_writer w;
    gx_st_writer_init(&w);
    const gx_real v1[2] = { 1, 2 }, v2[3] = { 5, 6, 7 };
    gx_st_writer_add_real(&w, "x", 1, GX_SHAPE(2), v1, &err);
    CHECK(gx_st_writer_write(&w, path, &err) == GX_OK);
    gx_st_writer_free(&w);
    gx_st_writer_init(&w);
    gx_st_writer_add_real(&w, "x", 1, GX_SHAPE(3), v2, &err);
    CHECK_MSG(gx_st_writer_write(&w, path, &err) == GX_OK, "%s", err.msg);   /* replaces */
    gx_st_writer_free(&w);
    CHECK(st_count_entries(dir) == 1);   /* no leftover temp file */
    gx_st_file f;
    CHECK_MSG(gx_st_read(&f, path, &err) == GX_OK, "%s", err.msg);
    const gx_st_tensor *x = gx_st_find(&f, "x");
    CHECK(x && x->shape[0] == 3);
    gx_real got[3] = {0};
    if (x) CHECK(gx_st_to_real(x, got, 3, &err) == GX_OK);
    gx_test_allclose(T, "replaced", got, v2, 3, 0, 0);
    gx_st_close(&f);
    /* A corrupt file on disk: refused with its path in the message. */
    CHECK(gx_file_write_atomic(path, "\x03\0\0\0\0\0\0\0{}", 10, &err) == GX_OK);
    CHECK(gx_st_read(&f, path, &err) == GX_ERR_FORMAT && strstr(err.msg, path) && strstr(err.msg, "exceeds"));
    /* Missing file and missing directory. */
    char missing[300];
    snprintf(missing, sizeof missing, "%s/nope/ckpt.safetensors", dir);
    CHECK(gx_st_read(&f, missing, &err) == GX_ERR_IO && strstr(err.msg, "cannot open"));
    CHECK(gx_file_write_atomic(missing, "x", 1, &err) == GX_ERR_IO);
    CHECK_MSG(strstr(err.msg, "cannot create") && strstr(err.msg, "No such file"), "%s", err.msg);
    CHECK(st_count_entries(dir) == 1);
    unlink(path);
    rmdir(dir);
}

/* -------------------------------------------------------- params bridge */

static void st_model(gx_params *p, int64_t out, int extra) {
    gx_params_init(p);
    gx_params_add(p, "enc.weight", 2, GX_SHAPE(out, 4), GX_PARAM_DECAY);
    gx_params_add(p, "enc.bias", 1, GX_SHAPE(out), 0);
    gx_params_add(p, "bn.running_mean", 1, GX_SHAPE(4), GX_PARAM_BUFFER);
    if (extra) gx_params_add(p, "head.weight", 1, GX_SHAPE(2), GX_PARAM_DECAY);
}

static void st_fill(gx_params *p, double base) {
    for (int i = 0; i < p->n; i++)
        for (int64_t k = 0; k < p->items[i]->t.numel; k++) p->items[i]->t.data[k] = (gx_real)(base + 10 * i + 0.5 * k);
}

static int st_all_equal(const gx_params *p, gx_real v) {
    for (int i = 0; i < p->n; i++)
        for (int64_t k = 0; k < p->items[i]->t.numel; k++)
            if (p->items[i]->t.data[k] != v) return 0;
    return 1;
}

GX_TEST(st_params_save_load_round_trip) {
    gx_params src, dst;
    st_model(&src, 3, 0);
    st_fill(&src, 1.0);
    gx_st_writer w;
    gx_st_writer_init(&w);
    gx_err err = {{0}};
    CHECK(gx_params_to_writer(&src, &w, &err) == GX_OK);
    /* PyTorch's batch-norm counters are ignored even by a strict load. */
    int64_t nbt = 5;
    CHECK(gx_st_writer_add(&w, "bn.num_batches_tracked", GX_ST_I64, 0, NULL, &nbt, &err) == GX_OK);
    uint8_t *buf;
    size_t len;
    CHECK(gx_st_writer_serialize(&w, &buf, &len, &err) == GX_OK);
    gx_st_file f;
    CHECK(gx_st_parse(&f, buf, len, &err) == GX_OK);
    st_model(&dst, 3, 0);
    CHECK_MSG(gx_params_load(&dst, &f, 1, &err) == GX_OK, "%s", err.msg);
    for (int i = 0; i < src.n; i++)
        gx_test_allclose(T, src.items[i]->name, dst.items[i]->t.data, src.items[i]->t.data, src.items[i]->t.numel, 0, 0);
    gx_params_free(&dst);
    gx_st_close(&f);
    free(buf);
    gx_st_writer_free(&w);
    gx_params_free(&src);
}

/* Loads `file_model` into `model` and checks the refusal and that nothing
 * in the registry changed. */
static void st_expect_load_refused(gx_test_state *T, gx_st_writer *w, gx_params *dst, int strict,
                                   gx_status want, const char *s1, const char *s2) {
    uint8_t *buf;
    size_t len;
    gx_err err = {{0}};
    CHECK(gx_st_writer_serialize(w, &buf, &len, &err) == GX_OK);
    gx_st_file f;
    CHECK(gx_st_parse(&f, buf, len, &err) == GX_OK);
    for (int i = 0; i < dst->n; i++)
        for (int64_t k = 0; k < dst->items[i]->t.numel; k++) dst->items[i]->t.data[k] = 7;
    gx_status s = gx_params_load(dst, &f, strict, &err);
    CHECK_MSG(s == want, "status %s, want %s (%s)", gx_status_str(s), gx_status_str(want), err.msg);
    CHECK_MSG(strstr(err.msg, s1) && (!s2 || strstr(err.msg, s2)), "message '%s' lacks '%s' / '%s'", err.msg, s1, s2 ? s2 : "");
    CHECK_MSG(st_all_equal(dst, 7), "registry changed by a refused load");
    gx_st_close(&f);
    free(buf);
}

GX_TEST(st_params_load_refusals_leave_registry_unchanged) {
    gx_params src, dst;
    gx_err err = {{0}};
    gx_st_writer w;
    /* Missing tensor: the model's last tensor is absent from the file. */
    st_model(&src, 3, 0);
    st_model(&dst, 3, 1);
    gx_st_writer_init(&w);
    gx_params_to_writer(&src, &w, &err);
    st_expect_load_refused(T, &w, &dst, 0, GX_ERR_NOTFOUND, "'head.weight'", NULL);
    gx_st_writer_free(&w);
    gx_params_free(&dst);
    /* Wrong shape: both shapes named. */
    st_model(&dst, 4, 0);
    gx_st_writer_init(&w);
    gx_params_to_writer(&src, &w, &err);
    st_expect_load_refused(T, &w, &dst, 0, GX_ERR_SHAPE, "'enc.weight': shape [3,4] in the file", "[4,4] in the model");
    gx_st_writer_free(&w);
    gx_params_free(&dst);
    /* Wrong dtype (an integer tensor where a float one is expected), last in registry. */
    st_model(&dst, 3, 1);
    gx_st_writer_init(&w);
    gx_params_to_writer(&src, &w, &err);
    gx_st_writer_add(&w, "head.weight", GX_ST_I32, 1, GX_SHAPE(2), (const int32_t[]){ 1, 2 }, &err);
    st_expect_load_refused(T, &w, &dst, 0, GX_ERR_UNSUPPORTED, "'head.weight': dtype I32", NULL);
    gx_st_writer_free(&w);
    gx_params_free(&dst);
    /* Unknown tensor: refused when strict, ignored otherwise. */
    st_model(&dst, 3, 0);
    gx_st_writer_init(&w);
    gx_params_to_writer(&src, &w, &err);
    gx_st_writer_add_real(&w, "stray.weight", 1, GX_SHAPE(1), (const gx_real[]){ 1 }, &err);
    st_expect_load_refused(T, &w, &dst, 1, GX_ERR_NOTFOUND, "'stray.weight' is not a parameter", NULL);
    uint8_t *buf;
    size_t len;
    gx_st_file f;
    gx_st_writer_serialize(&w, &buf, &len, &err);
    gx_st_parse(&f, buf, len, &err);
    CHECK(gx_params_load(&dst, &f, 0, &err) == GX_OK);
    CHECK(dst.items[0]->t.data[1] == src.items[0]->t.data[1]);
    gx_st_close(&f);
    free(buf);
    gx_st_writer_free(&w);
    gx_params_free(&dst);
    gx_params_free(&src);
}

GX_TEST(st_zero_size_tensors_at_boundaries_only) {
    /* Accepted: empty tensors at 0, between two tensors and at the end. */
    const char *ok = "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                     "\"e0\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
                     "\"e1\":{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[2,2]},"
                     "\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[2,3]},"
                     "\"e2\":{\"dtype\":\"F32\",\"shape\":[3,0],\"data_offsets\":[3,3]}}";
    size_t len;
    uint8_t *b = st_make(ok, strlen(ok), 3, &len);
    gx_st_file f;
    gx_err err = {{0}};
    CHECK_MSG(gx_st_parse(&f, b, len, &err) == GX_OK, "%s", err.msg);
    CHECK(f.n == 5);
    gx_st_close(&f);
    free(b);
    /* Refused: an empty tensor inside another one. */
    st_expect_header(T, "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                        "\"e\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[2,2]}}", 4, "'e' overlaps tensor 'a'");
}
