/*
 * fuzz_base64.c — libFuzzer target for the base64 codecs and the scalar
 * field parsers of daemon/gx_http_parse.c.
 *
 * Invariants:
 *  - round trip: for the raw input bytes x, decode(encode(x)) == x, for
 *    both standard base64 and base64url;
 *  - the input as text: a failed decode leaves a message, *out NULL and
 *    length 0; a successful one decodes to at most 3/4 of the input length
 *    (+2), and re-encoding and decoding that result gives it back;
 *    base64url accepts a text exactly when it is the canonical encoding of
 *    what it decodes to (no padding, no whitespace, zero tail bits);
 *  - the same text (as a C string) through gx_parse_double / gx_parse_int /
 *    gx_parse_ident: a success is finite and in range, a failure has a
 *    message.
 * Input is copied to an exact-size heap buffer so ASan sees overreads.
 */
#include "gx_http_parse.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef gx_status (*dec_fn)(const char *, size_t, unsigned char **, size_t *, gx_err *);
typedef char *(*enc_fn)(const unsigned char *, size_t);

static void round_trip(const uint8_t *x, size_t n, enc_fn enc, dec_fn dec) {
    char *e = enc(x, n);
    if (!e) abort();
    unsigned char *d = NULL;
    size_t dn = 0;
    gx_err err;
    if (dec(e, strlen(e), &d, &dn, &err) != GX_OK || dn != n || (n && memcmp(d, x, n) != 0)) abort();
    free(d);
    free(e);
}

static void decode_text(const char *s, size_t n, enc_fn enc, dec_fn dec, int canonical_only) {
    unsigned char *d = (unsigned char *)1;
    size_t dn = 99;
    gx_err err;
    err.msg[0] = 0;
    if (dec(s, n, &d, &dn, &err) != GX_OK) {
        if (d != NULL || dn != 0 || err.msg[0] == 0) abort();
        return;
    }
    if (!d || dn > n / 4 * 3 + 2) abort();
    char *e = enc(d, dn);
    if (!e) abort();
    if (canonical_only && (strlen(e) != n || memcmp(e, s, n) != 0)) abort();
    unsigned char *d2 = NULL;
    size_t dn2 = 0;
    if (dec(e, strlen(e), &d2, &dn2, &err) != GX_OK || dn2 != dn || (dn && memcmp(d2, d, dn) != 0))
        abort();
    free(d2);
    free(e);
    free(d);
}

static void scalars(const char *s) {
    gx_err err;
    double v = 0;
    err.msg[0] = 0;
    if (gx_parse_double("x", s, -1e6, 1e6, &v, &err) == GX_OK) {
        if (!isfinite(v) || v < -1e6 || v > 1e6) abort();
    } else if (err.msg[0] == 0) {
        abort();
    }
    long long k = 0;
    err.msg[0] = 0;
    if (gx_parse_int("k", s, -1000, 1000, &k, &err) == GX_OK) {
        if (k < -1000 || k > 1000) abort();
    } else if (err.msg[0] == 0) {
        abort();
    }
    err.msg[0] = 0;
    if (gx_parse_ident("id", s, &err) != GX_OK && err.msg[0] == 0) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    round_trip(data, size, gx_base64_encode, gx_base64_decode);
    round_trip(data, size, gx_base64url_encode, gx_base64url_decode);
    char *s = malloc(size ? size : 1);
    if (!s) return 0;
    memcpy(s, data, size);
    decode_text(s, size, gx_base64_encode, gx_base64_decode, 0);
    decode_text(s, size, gx_base64url_encode, gx_base64url_decode, 1);
    free(s);
    char *z = malloc(size + 1);
    if (!z) return 0;
    memcpy(z, data, size);
    z[size] = 0;
    scalars(z);
    free(z);
    return 0;
}
