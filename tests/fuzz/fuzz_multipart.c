/*
 * fuzz_multipart.c — libFuzzer target for gx_multipart_parse (and, on the
 * boundary line, gx_http_content_type).
 *
 * Input: the first line (up to '\n') is the boundary, the rest is the body.
 * The boundary line is also run through the Content-Type parser as
 * "multipart/form-data; boundary=<line>" (it must never crash, and a
 * success must give the lowercased type). Invariants on a parse:
 *  - failure: a message, *n_parts == 0;
 *  - success: 0 <= n_parts <= max; every part lies inside the body, after
 *    the previous one (no overlap), lengths sum <= n; every part has a
 *    non-empty NUL-terminated name; its data is followed in the body by the
 *    delimiter "\r\n--" boundary (that is where it ended).
 * The body is copied into an exact-size heap buffer so ASan catches any read
 * past n. Anything else aborts (a finding).
 */
#include "gx_http_parse.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_MAX_PARTS 8

static void check_parts(const unsigned char *body, size_t n, const char *bd,
                        const gx_mpart *p, int np) {
    if (np < 0 || np > FZ_MAX_PARTS) abort();
    size_t sum = 0, bn = strlen(bd);
    const unsigned char *prev = body;
    for (int i = 0; i < np; i++) {
        if (p[i].data < prev || p[i].len > n || p[i].data + p[i].len > body + n) abort();
        if (memchr(p[i].name, 0, sizeof p[i].name) == NULL || p[i].name[0] == 0) abort();
        if (memchr(p[i].filename, 0, sizeof p[i].filename) == NULL) abort();
        if (memchr(p[i].content_type, 0, sizeof p[i].content_type) == NULL) abort();
        const unsigned char *end = p[i].data + p[i].len;
        if ((size_t)(body + n - end) < 4 + bn || memcmp(end, "\r\n--", 4) != 0 ||
            memcmp(end + 4, bd, bn) != 0)
            abort();
        prev = end;
        sum += p[i].len;
    }
    if (sum > n) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nl = memchr(data, '\n', size < 200 ? size : 200);
    size_t bl = nl ? (size_t)(nl - data) : (size < 200 ? size : 0);
    char bd[256];
    memcpy(bd, data, bl);
    bd[bl] = 0;
    size_t off = nl ? bl + 1 : bl;
    size_t n = size - off;
    unsigned char *body = malloc(n ? n : 1);
    if (!body) return 0;
    memcpy(body, data + off, n);

    char ct[300], type[64], val[128];
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=%s", bd);
    gx_err err;
    err.msg[0] = 0;
    if (gx_http_content_type(ct, type, sizeof type, "boundary", val, sizeof val, &err) == GX_OK) {
        if (strcmp(type, "multipart/form-data") != 0) abort();
    } else if (err.msg[0] == 0 || type[0] != 0) {
        abort();
    }

    gx_mpart parts[FZ_MAX_PARTS];
    int np = -1;
    err.msg[0] = 0;
    gx_status s = gx_multipart_parse(body, n, bd, parts, FZ_MAX_PARTS, &np, &err);
    if (s == GX_OK) check_parts(body, n, bd, parts, np);
    else if (err.msg[0] == 0 || np != 0) abort();
    free(body);
    return 0;
}
