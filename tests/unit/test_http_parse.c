/*
 * test_http_parse.c — galaxyd's body parsers (daemon/gx_http_parse.c):
 * Content-Type, multipart/form-data, base64, numbers and identifiers.
 *
 * Every refusal is a table row naming the status and a substring of the
 * message it must produce (the table documents what each parser refuses
 * and how it says so); the happy paths check every byte of every part,
 * including binary file data full of CR, LF and near-boundaries, and a
 * randomized build-then-parse round trip. One test times a 10 MB hostile
 * body to pin the linear-time claim.
 */
#include "gx_test.h"

#include "gx_http_parse.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------ helpers */

#define LIT(s) (const unsigned char *)(s), sizeof(s) - 1

static void mp_refuse(gx_test_state *T, const char *label, const char *boundary,
                      const unsigned char *body, size_t n, int max_parts, gx_status want,
                      const char *substr) {
    gx_mpart parts[4];
    int np = -1;
    gx_err err = { "" };
    gx_status s = gx_multipart_parse(body, n, boundary, parts, max_parts, &np, &err);
    CHECK_MSG(s == want, "%s: status %s (%s), want %s", label, gx_status_str(s), err.msg,
              gx_status_str(want));
    CHECK_MSG(strstr(err.msg, substr) != NULL, "%s: message \"%s\" lacks \"%s\"", label, err.msg,
              substr);
    CHECK_MSG(np == 0, "%s: n_parts %d after a refusal", label, np);
}

/* Every part's bytes lie inside the body and in order, lengths sum <= n. */
static void mp_check_inside(gx_test_state *T, const unsigned char *body, size_t n,
                            const gx_mpart *p, int np) {
    size_t sum = 0;
    const unsigned char *prev = body;
    for (int i = 0; i < np; i++) {
        CHECK(p[i].data >= prev && p[i].data + p[i].len <= body + n);
        prev = p[i].data + p[i].len;
        sum += p[i].len;
    }
    CHECK(sum <= n);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------- Content-Type */

GX_TEST(http_content_type_parses_type_and_param) {
    char type[64], val[80];
    gx_err err;
    CHECK(gx_http_content_type(" Multipart/Form-Data; charset=utf-8; BOUNDARY=\"a b\\\"c\" ", type,
                               sizeof type, "boundary", val, sizeof val, &err) == GX_OK);
    CHECK(strcmp(type, "multipart/form-data") == 0);
    CHECK(strcmp(val, "a b\"c") == 0);
    CHECK(gx_http_content_type("image/png", type, sizeof type, "boundary", val, sizeof val, &err)
          == GX_OK);
    CHECK(strcmp(type, "image/png") == 0 && val[0] == 0);
    CHECK(gx_http_content_type("multipart/form-data;boundary=----WebKitFormBoundary7MA4YWxk", type,
                               sizeof type, "boundary", val, sizeof val, &err) == GX_OK);
    CHECK(strcmp(val, "----WebKitFormBoundary7MA4YWxk") == 0);
    /* No param asked: parameters are still checked for syntax. */
    CHECK(gx_http_content_type("application/json; charset=utf-8", type, sizeof type, NULL, NULL, 0,
                               &err) == GX_OK);
    CHECK(strcmp(type, "application/json") == 0);
}

GX_TEST(http_content_type_refusals) {
    static const struct { const char *h; size_t vn; gx_status want; const char *msg; } c[] = {
        { NULL, 80, GX_ERR_INVALID, "missing" },
        { "", 80, GX_ERR_INVALID, "missing" },
        { "image", 80, GX_ERR_FORMAT, "type/subtype" },
        { "image/", 80, GX_ERR_FORMAT, "type/subtype" },
        { "/png", 80, GX_ERR_FORMAT, "type/subtype" },
        { "image/png junk", 80, GX_ERR_FORMAT, "malformed parameter" },
        { "multipart/form-data; boundary", 80, GX_ERR_FORMAT, "malformed parameter" },
        { "multipart/form-data; boundary=", 80, GX_ERR_FORMAT, "malformed parameter value" },
        { "multipart/form-data; boundary=\"abc", 80, GX_ERR_FORMAT, "malformed parameter value" },
        { "multipart/form-data; boundary=a; boundary=b", 80, GX_ERR_FORMAT, "duplicate parameter" },
        { "multipart/form-data; boundary=abcdefgh", 5, GX_ERR_FORMAT, "longer than 4 bytes" },
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        char type[64] = "x", val[80] = "x";
        gx_err err = { "" };
        gx_status s = gx_http_content_type(c[i].h, type, sizeof type, "boundary", val, c[i].vn, &err);
        CHECK_MSG(s == c[i].want, "case %zu: %s (%s)", i, gx_status_str(s), err.msg);
        CHECK_MSG(strstr(err.msg, c[i].msg) != NULL, "case %zu: \"%s\" lacks \"%s\"", i, err.msg,
                  c[i].msg);
        CHECK_MSG(type[0] == 0 && val[0] == 0, "case %zu: outputs not cleared", i);
    }
}

/* ---------------------------------------------------------- multipart */

GX_TEST(http_multipart_file_and_fields) {
    /* A binary file holding CR, LF, NUL, a CRLF-- and a near-boundary. */
    static const unsigned char file[] = "\x89PNG\r\n\x1a\n\0\r\n--XyZ\r\n-\r\r\n\n--XyZbX\xff";
    const size_t fn = sizeof file - 1;
    unsigned char body[1024];
    size_t n = 0;
#define PUT(s) (memcpy(body + n, s, strlen(s)), n += strlen(s))
    PUT("This is the preamble.\r\n--XyZbZ  \r\n");
    PUT("Content-Disposition: form-data; name=\"ra\"\r\n\r\n12.5\r\n--XyZbZ\r\n");
    PUT("content-disposition: FORM-DATA; filename=\"cut \\\"out\\\\.png\"; name=file\r\n");
    PUT("CONTENT-TYPE:   image/png  \r\nContent-Transfer-Encoding: binary\r\n\r\n");
    memcpy(body + n, file, fn);
    size_t file_at = n;
    n += fn;
    PUT("\r\n--XyZbZ\r\nContent-Disposition: form-data; name=\"survey\"\r\n\r\nsdss");
    PUT("\r\n--XyZbZ--\r\nthe epilogue\r\n--XyZbZ\r\n is ignored");
#undef PUT
    gx_mpart parts[4];
    int np = 0;
    gx_err err = { "" };
    CHECK_MSG(gx_multipart_parse(body, n, "XyZbZ", parts, 4, &np, &err) == GX_OK, "%s", err.msg);
    CHECK(np == 3);
    if (np != 3) return;
    mp_check_inside(T, body, n, parts, np);
    CHECK(strcmp(parts[0].name, "ra") == 0 && parts[0].filename[0] == 0);
    CHECK(parts[0].content_type[0] == 0);
    CHECK(parts[0].len == 4 && memcmp(parts[0].data, "12.5", 4) == 0);
    CHECK(strcmp(parts[1].name, "file") == 0);
    CHECK(strcmp(parts[1].filename, "cut \"out\\.png") == 0);
    CHECK(strcmp(parts[1].content_type, "image/png") == 0);
    CHECK(parts[1].data == body + file_at && parts[1].len == fn);
    CHECK(memcmp(parts[1].data, file, fn) == 0);
    CHECK(strcmp(parts[2].name, "survey") == 0);
    CHECK(parts[2].len == 4 && memcmp(parts[2].data, "sdss", 4) == 0);
}

GX_TEST(http_multipart_empty_parts_and_forms) {
    gx_mpart parts[4];
    int np = -1;
    gx_err err;
    /* A close delimiter right after the opening one: no parts. */
    CHECK(gx_multipart_parse(LIT("--b--\r\n"), "b", parts, 4, &np, &err) == GX_OK && np == 0);
    CHECK(gx_multipart_parse(LIT("--b--"), "b", parts, 0, &np, &err) == GX_OK && np == 0);
    /* Empty data with and without RFC 2046's optional "CRLF data". */
    static const char a[] = "--b\r\nContent-Disposition: form-data; name=x\r\n\r\n\r\n--b--";
    CHECK(gx_multipart_parse(LIT(a), "b", parts, 4, &np, &err) == GX_OK && np == 1);
    CHECK(parts[0].len == 0 && parts[0].data >= (const unsigned char *)a &&
          parts[0].data <= (const unsigned char *)a + sizeof a - 1);
    static const char b[] = "--b\r\nContent-Disposition: form-data; name=x\r\n\r\n--b--";
    CHECK(gx_multipart_parse(LIT(b), "b", parts, 4, &np, &err) == GX_OK && np == 1);
    CHECK(parts[0].len == 0 && strcmp(parts[0].name, "x") == 0);
    /* Exactly max_parts parts is fine. */
    static const char c[] = "--b\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n"
                            "--b\r\nContent-Disposition: form-data; name=y\r\n\r\n22\r\n--b--";
    CHECK(gx_multipart_parse(LIT(c), "b", parts, 2, &np, &err) == GX_OK && np == 2);
    CHECK(parts[1].len == 2 && memcmp(parts[1].data, "22", 2) == 0);
    /* Strict: a line that starts with the delimiter must be one (RFC 2046
     * forbids the boundary inside data; senders pick boundaries that way). */
    static const char d[] = "--b\r\nContent-Disposition: form-data; name=x\r\n\r\n--bb\r\n--b--";
    CHECK(gx_multipart_parse(LIT(d), "b", parts, 4, &np, &err) == GX_ERR_FORMAT);
    CHECK(strstr(err.msg, "not followed by CRLF") != NULL);
}

GX_TEST(http_multipart_refusals) {
    char long_bd[80];
    memset(long_bd, 'a', 71);
    long_bd[71] = 0;
    const char *cd = "--b\r\nContent-Disposition: form-data; name=x\r\n\r\nv\r\n--b--";
    mp_refuse(T, "no boundary", NULL, LIT("--b--"), 4, GX_ERR_INVALID, "missing boundary");
    mp_refuse(T, "empty boundary", "", LIT("--b--"), 4, GX_ERR_INVALID, "missing boundary");
    mp_refuse(T, "71-char boundary", long_bd, LIT("--b--"), 4, GX_ERR_INVALID, "longer than 70");
    mp_refuse(T, "boundary ;", "a;b", LIT("--a;b--"), 4, GX_ERR_INVALID, "not allowed by RFC 2046 at 1");
    mp_refuse(T, "boundary CR", "a\rb", LIT("--a\rb--"), 4, GX_ERR_INVALID, "not allowed");
    mp_refuse(T, "boundary space end", "ab ", LIT("--ab --"), 4, GX_ERR_INVALID, "ends with a space");
    mp_refuse(T, "empty body", "b", (const unsigned char *)"", 0, 4, GX_ERR_FORMAT, "empty body");
    mp_refuse(T, "no opening", "b", LIT("hello world\r\n--c\r\n"), 4, GX_ERR_FORMAT, "no opening boundary");
    mp_refuse(T, "bare LF after boundary", "b",
              LIT("--b\nContent-Disposition: form-data; name=x\n\nv\n--b--\n"), 4, GX_ERR_FORMAT,
              "bare LF");
    mp_refuse(T, "bare LF preamble", "b", LIT("pre\n--b\nx\n--b--\n"), 4, GX_ERR_FORMAT, "CRLF");
    mp_refuse(T, "junk after boundary", "b", LIT("--bX\r\n"), 4, GX_ERR_FORMAT, "not followed by CRLF");
    mp_refuse(T, "no disposition", "b", LIT("--b\r\nContent-Type: text/plain\r\n\r\nv\r\n--b--"), 4,
              GX_ERR_FORMAT, "no Content-Disposition");
    mp_refuse(T, "no headers", "b", LIT("--b\r\n\r\nv\r\n--b--"), 4, GX_ERR_FORMAT, "no Content-Disposition");
    mp_refuse(T, "attachment", "b", LIT("--b\r\nContent-Disposition: attachment; name=x\r\n\r\nv\r\n--b--"),
              4, GX_ERR_FORMAT, "not form-data");
    mp_refuse(T, "no name", "b", LIT("--b\r\nContent-Disposition: form-data; filename=a\r\n\r\nv\r\n--b--"),
              4, GX_ERR_FORMAT, "has no name");
    mp_refuse(T, "empty name", "b", LIT("--b\r\nContent-Disposition: form-data; name=\"\"\r\n\r\nv\r\n--b--"),
              4, GX_ERR_FORMAT, "has no name");
    mp_refuse(T, "duplicate name", "b",
              LIT("--b\r\nContent-Disposition: form-data; name=a; name=b\r\n\r\nv\r\n--b--"), 4,
              GX_ERR_FORMAT, "duplicate name");
    mp_refuse(T, "duplicate filename", "b",
              LIT("--b\r\nContent-Disposition: form-data; name=a; filename=x; filename=y\r\n\r\nv\r\n--b--"),
              4, GX_ERR_FORMAT, "duplicate filename");
    mp_refuse(T, "unterminated quote", "b",
              LIT("--b\r\nContent-Disposition: form-data; name=\"abc\r\n\r\nv\r\n--b--"), 4,
              GX_ERR_FORMAT, "malformed Content-Disposition value");
    mp_refuse(T, "control char in quoted", "b",
              LIT("--b\r\nContent-Disposition: form-data; name=\"a\x01\"\r\n\r\nv\r\n--b--"), 4,
              GX_ERR_FORMAT, "control character");
    mp_refuse(T, "param without =", "b",
              LIT("--b\r\nContent-Disposition: form-data; name\r\n\r\nv\r\n--b--"), 4,
              GX_ERR_FORMAT, "malformed Content-Disposition parameter");
    mp_refuse(T, "junk after params", "b",
              LIT("--b\r\nContent-Disposition: form-data; name=a junk\r\n\r\nv\r\n--b--"), 4,
              GX_ERR_FORMAT, "malformed Content-Disposition parameter");
    mp_refuse(T, "header without colon", "b",
              LIT("--b\r\nContent-Disposition form-data\r\n\r\nv\r\n--b--"), 4, GX_ERR_FORMAT,
              "without a name");
    mp_refuse(T, "bad header name", "b",
              LIT("--b\r\nContent Disposition: form-data; name=a\r\n\r\nv\r\n--b--"), 4,
              GX_ERR_FORMAT, "bad header name");
    mp_refuse(T, "folded header", "b",
              LIT("--b\r\nContent-Disposition: form-data;\r\n name=a\r\n\r\nv\r\n--b--"), 4,
              GX_ERR_FORMAT, "folded header");
    mp_refuse(T, "bare CR in headers", "b",
              LIT("--b\r\nContent-Disposition: form-data; name=a\rX: y\r\n\r\nv\r\n--b--"), 4,
              GX_ERR_FORMAT, "bare CR");
    mp_refuse(T, "bare LF in headers", "b",
              LIT("--b\r\nContent-Disposition: form-data; name=a\nX: y\r\n\r\nv\r\n--b--"), 4,
              GX_ERR_FORMAT, "bare LF");
    mp_refuse(T, "duplicate disposition", "b",
              LIT("--b\r\nContent-Disposition: form-data; name=a\r\ncontent-disposition: form-data; "
                  "name=b\r\n\r\nv\r\n--b--"), 4, GX_ERR_FORMAT, "duplicate Content-Disposition");
    mp_refuse(T, "duplicate type", "b",
              LIT("--b\r\nContent-Disposition: form-data; name=a\r\nContent-Type: a/b\r\n"
                  "Content-Type: c/d\r\n\r\nv\r\n--b--"), 4, GX_ERR_FORMAT, "duplicate Content-Type");
    mp_refuse(T, "empty type", "b",
              LIT("--b\r\nContent-Disposition: form-data; name=a\r\nContent-Type:  \r\n\r\nv\r\n--b--"),
              4, GX_ERR_FORMAT, "empty Content-Type");
    mp_refuse(T, "headers unterminated", "b",
              LIT("--b\r\nContent-Disposition: form-data; name=a\r\n"), 4, GX_ERR_FORMAT,
              "not terminated");
    mp_refuse(T, "no closing boundary", "b",
              LIT("--b\r\nContent-Disposition: form-data; name=a\r\n\r\nvalue\r\n--c--"), 4,
              GX_ERR_FORMAT, "no closing boundary");
    mp_refuse(T, "closing without --", "b",
              LIT("--b\r\nContent-Disposition: form-data; name=a\r\n\r\nvalue\r\n--b"), 4,
              GX_ERR_FORMAT, "not followed by CRLF");
    mp_refuse(T, "too many parts", "b", (const unsigned char *)cd, strlen(cd), 0, GX_ERR_NOMEM,
              "more than 0 parts");

    /* Length limits on the fields of gx_mpart: refused, not truncated. */
    char big[10000];
    int k = snprintf(big, sizeof big, "--b\r\nContent-Disposition: form-data; name=\"");
    memset(big + k, 'n', 64);
    k += 64;
    k += snprintf(big + k, sizeof big - (size_t)k, "\"\r\n\r\nv\r\n--b--");
    mp_refuse(T, "name 64 bytes", "b", (unsigned char *)big, (size_t)k, 4, GX_ERR_FORMAT,
              "name longer than 63 bytes");
    k = snprintf(big, sizeof big, "--b\r\nContent-Disposition: form-data; name=f; filename=\"");
    memset(big + k, 'f', 256);
    k += 256;
    k += snprintf(big + k, sizeof big - (size_t)k, "\"\r\n\r\nv\r\n--b--");
    mp_refuse(T, "filename 256 bytes", "b", (unsigned char *)big, (size_t)k, 4, GX_ERR_FORMAT,
              "filename longer than 255 bytes");
    k = snprintf(big, sizeof big, "--b\r\nContent-Disposition: form-data; name=f\r\nContent-Type: a/");
    memset(big + k, 't', 130);
    k += 130;
    k += snprintf(big + k, sizeof big - (size_t)k, "\r\n\r\nv\r\n--b--");
    mp_refuse(T, "content type 132 bytes", "b", (unsigned char *)big, (size_t)k, 4, GX_ERR_FORMAT,
              "Content-Type longer than 127");
    k = snprintf(big, sizeof big, "--b\r\nContent-Disposition: form-data; name=f\r\nX-Pad: ");
    memset(big + k, 'p', 8300);
    k += 8300;
    k += snprintf(big + k, sizeof big - (size_t)k, "\r\n\r\nv\r\n--b--");
    mp_refuse(T, "headers over 8 KiB", "b", (unsigned char *)big, (size_t)k, 4, GX_ERR_FORMAT,
              "headers longer than 8192");
}

/* Random parts (binary data with CR/LF/dashes, random names) built into a
 * body and parsed back: every byte must come back where it was put. */
GX_TEST(http_multipart_random_round_trip) {
    gx_rng rng;
    gx_rng_init(&rng, 1234);
    enum { NP = 6 };
    for (int iter = 0; iter < 200; iter++) {
        char bd[71];
        int bn = 1 + (int)(gx_rng_u32(&rng) % 70);
        static const char bch[] = "abcXYZ0123456789'()+_,-./:=?";
        for (int i = 0; i < bn; i++) bd[i] = bch[gx_rng_u32(&rng) % (sizeof bch - 1)];
        bd[bn] = 0;
        unsigned char *body = malloc(NP * 700 + 1024);
        size_t n = 0, at[NP], len[NP];
        int np = 1 + (int)(gx_rng_u32(&rng) % NP);
        for (int p = 0; p < np; p++) {
            n += (size_t)sprintf((char *)body + n, "%s--%s\r\nContent-Disposition: form-data; name=\"p%d\""
                                 "\r\n\r\n", p ? "\r\n" : "", bd, p);
            len[p] = gx_rng_u32(&rng) % 600;
            at[p] = n;
            for (size_t i = 0; i < len[p]; i++) {
                static const unsigned char pick[] = "\r\n-ab";
                uint32_t r = gx_rng_u32(&rng);
                body[n++] = (r & 256) ? pick[r % 5] : (unsigned char)r;
            }
        }
        n += (size_t)sprintf((char *)body + n, "\r\n--%s--\r\n", bd);
        /* Skip the (vanishingly rare) case where random data forms the delimiter. */
        char delim[80];
        int dn = sprintf(delim, "\r\n--%s", bd);
        int clash = 0;
        for (int p = 0; p < np; p++)
            if (len[p] >= (size_t)dn - 2 && memmem(body + at[p], len[p] + 2, delim, (size_t)dn)) clash = 1;
        gx_mpart parts[NP];
        int got = 0;
        gx_err err = { "" };
        gx_status s = gx_multipart_parse(body, n, bd, parts, NP, &got, &err);
        if (!clash) {
            CHECK_MSG(s == GX_OK && got == np, "iter %d: %s (%d of %d parts)", iter, err.msg, got, np);
            for (int p = 0; s == GX_OK && p < got; p++) {
                char nm[16];
                snprintf(nm, sizeof nm, "p%d", p);
                CHECK(strcmp(parts[p].name, nm) == 0);
                CHECK(parts[p].data == body + at[p] && parts[p].len == len[p]);
            }
        }
        free(body);
    }
}

/* 10 MB of near-misses: the delimiter search must stay one linear pass.
 * A quadratic scan (restarting per near miss, or re-reading the partial
 * match) would take minutes; one pass takes milliseconds (seconds under
 * ASan at worst). Timed against a generous bound. */
GX_TEST(http_multipart_hostile_body_linear) {
    char bd[71];
    memset(bd, 'a', 69);
    bd[69] = 'b';
    bd[70] = 0;
    const size_t N = 10u << 20;
    unsigned char *body = malloc(N + 256);
    size_t n = (size_t)sprintf((char *)body, "--%s\r\nContent-Disposition: form-data; name=f\r\n\r\n", bd);
    size_t data0 = n;
    /* "\r\n--aaaa...ac": matches 73 of the 74 delimiter bytes, again and again. */
    while (n + 80 < N) {
        memcpy(body + n, "\r\n--", 4);
        memset(body + n + 4, 'a', 69);
        body[n + 73] = 'c';
        n += 74;
    }
    size_t data1 = n;
    n += (size_t)sprintf((char *)body + n, "\r\n--%s--", bd);
    gx_mpart part;
    int np = 0;
    gx_err err = { "" };
    double t0 = now_s();
    gx_status s = gx_multipart_parse(body, n, bd, &part, 1, &np, &err);
    double dt = now_s() - t0;
    CHECK_MSG(s == GX_OK && np == 1, "%s", err.msg);
    CHECK(np == 1 && part.data == body + data0 && part.len == data1 - data0);
    CHECK_MSG(dt < 3.0, "10 MB hostile body took %.2f s", dt);
    /* The same near-misses as part headers hit the 8 KiB limit, not a scan. */
    memset(body, '\r', N);
    memcpy(body, "--b\r\n", 5);
    t0 = now_s();
    s = gx_multipart_parse(body, N, "b", &part, 1, &np, &err);
    dt = now_s() - t0;
    CHECK(s == GX_ERR_FORMAT && strstr(err.msg, "headers longer than 8192") != NULL);
    CHECK_MSG(dt < 1.0, "10 MB of CR took %.2f s", dt);
    /* And 10 MB of CRLF pairs after a valid header block: one pass. */
    n = (size_t)sprintf((char *)body, "--%s\r\nContent-Disposition: form-data; name=f\r\n\r\n", bd);
    for (; n + 2 <= N; n += 2) memcpy(body + n, "\r\n", 2);
    t0 = now_s();
    s = gx_multipart_parse(body, n, bd, &part, 1, &np, &err);
    dt = now_s() - t0;
    CHECK(s == GX_ERR_FORMAT && strstr(err.msg, "no closing boundary") != NULL);
    CHECK_MSG(dt < 1.0, "10 MB of CRLF took %.2f s", dt);
    free(body);
}

/* ------------------------------------------------------------- base64 */

static void b64_ok(gx_test_state *T, const char *in, const char *want, size_t want_n) {
    unsigned char *out = NULL;
    size_t on = 0;
    gx_err err = { "" };
    gx_status s = gx_base64_decode(in, strlen(in), &out, &on, &err);
    CHECK_MSG(s == GX_OK, "decode \"%s\": %s", in, err.msg);
    CHECK_MSG(out && on == want_n && memcmp(out, want, want_n) == 0, "decode \"%s\": wrong bytes", in);
    free(out);
}

GX_TEST(http_base64_rfc4648_vectors) {
    static const char *plain[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
    static const char *enc[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
    for (int i = 0; i < 7; i++) {
        char *e = gx_base64_encode((const unsigned char *)plain[i], strlen(plain[i]));
        CHECK(e && strcmp(e, enc[i]) == 0);
        free(e);
        b64_ok(T, enc[i], plain[i], strlen(plain[i]));
    }
    /* Padding optional, whitespace anywhere, a data URL prefix. */
    b64_ok(T, "Zm9vYg", "foob", 4);
    b64_ok(T, "Zm9vYmE", "fooba", 5);
    b64_ok(T, " Zm9v\r\nYmFy\n", "foobar", 6);
    b64_ok(T, "Zm 9v Yg =\t=", "foob", 4);
    b64_ok(T, "data:image/png;base64,Zm9vYmFy", "foobar", 6);
    b64_ok(T, "+/+/", "\xfb\xff\xbf", 3);
}

GX_TEST(http_base64_all_bytes_round_trip) {
    unsigned char all[256];
    for (int i = 0; i < 256; i++) all[i] = (unsigned char)i;
    for (size_t n = 0; n <= 256; n += (n < 8 ? 1 : 31)) {
        for (int url = 0; url < 2; url++) {
            char *e = url ? gx_base64url_encode(all, n) : gx_base64_encode(all, n);
            CHECK(e != NULL);
            if (!e) continue;
            CHECK(strlen(e) == (url ? (n * 4 + 2) / 3 : (n + 2) / 3 * 4));
            unsigned char *d = NULL;
            size_t dn = 0;
            gx_err err = { "" };
            gx_status s = url ? gx_base64url_decode(e, strlen(e), &d, &dn, &err)
                              : gx_base64_decode(e, strlen(e), &d, &dn, &err);
            CHECK_MSG(s == GX_OK && dn == n && (n == 0 || memcmp(d, all, n) == 0),
                      "n=%zu url=%d: %s", n, url, err.msg);
            free(d);
            free(e);
        }
    }
}

GX_TEST(http_base64_refusals) {
    static const struct { int url; const char *in; const char *msg; } c[] = {
        { 0, "Zm9*Yg==", "invalid character 0x2a at offset 3" },
        { 0, "Zm9v-mFy", "invalid character 0x2d at offset 4" },   /* base64url in standard */
        { 0, "Zm9v_mFy", "invalid character 0x5f at offset 4" },
        { 0, "Zm9v\x01mFy", "invalid character 0x01 at offset 4" },
        { 0, "Zg==Zg==", "data after '=' padding at offset 4" },
        { 0, "Zg=", "wrong '=' padding" },
        { 0, "Zm9v=", "wrong '=' padding" },
        { 0, "Zg===", "wrong '=' padding" },
        { 0, "Z", "truncated" },
        { 0, "Zm9vY", "truncated" },
        { 0, "Zh==", "non-zero bits" },                            /* canonical is Zg== */
        { 0, "Zm9=", "non-zero bits" },
        { 0, "data:image/png,Zm9v", "data URL without ';base64,'" },
        { 1, "-_8=", "invalid character 0x3d at offset 3" },       /* no padding in base64url */
        { 1, "ab+c", "invalid character 0x2b at offset 2" },
        { 1, "ab c", "invalid character 0x20 at offset 2" },       /* no whitespace either */
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        unsigned char *out = (unsigned char *)"x";
        size_t on = 99;
        gx_err err = { "" };
        gx_status s = c[i].url ? gx_base64url_decode(c[i].in, strlen(c[i].in), &out, &on, &err)
                               : gx_base64_decode(c[i].in, strlen(c[i].in), &out, &on, &err);
        CHECK_MSG(s == GX_ERR_FORMAT, "case %zu \"%s\": %s", i, c[i].in, gx_status_str(s));
        CHECK_MSG(strstr(err.msg, c[i].msg) != NULL, "case %zu: \"%s\" lacks \"%s\"", i, err.msg,
                  c[i].msg);
        CHECK(out == NULL && on == 0);
    }
}

/* ------------------------------------------------------------ scalars */

GX_TEST(http_parse_double_accepts_decimals) {
    static const struct { const char *s; double v; } ok[] = {
        { "12.5", 12.5 }, { "-0.5", -0.5 }, { "+3", 3 }, { "1e2", 100 }, { "1E-2", 0.01 },
        { ".5", 0.5 }, { "5.", 5 }, { "0", 0 }, { "359.9999", 359.9999 }, { "1e-400", 0 },
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        double v = -1;
        gx_err err = { "" };
        CHECK_MSG(gx_parse_double("ra", ok[i].s, -1000, 1000, &v, &err) == GX_OK, "\"%s\": %s",
                  ok[i].s, err.msg);
        CHECK_NEAR(v, ok[i].v, 1e-12);
    }
    double v;
    gx_err err;
    CHECK(gx_parse_double("dec", "90", -90, 90, &v, &err) == GX_OK && v == 90);   /* inclusive */
    CHECK(gx_parse_double("dec", "-90", -90, 90, &v, &err) == GX_OK && v == -90);
}

GX_TEST(http_parse_double_refusals) {
    char longs[120];
    memset(longs, '1', 101);
    longs[101] = 0;
    static const struct { const char *s; const char *msg; } c[] = {
        { NULL, "field 'ra': empty" }, { "", "field 'ra': empty" },
        { "abc", "not a number: 'abc'" }, { "1.5x", "not a number" }, { " 1", "not a number" },
        { "1 ", "not a number" }, { "1,5", "not a number" }, { "0x10", "not a number" },
        { "1e", "not a number" }, { ".", "not a number" }, { "+", "not a number" },
        { "1..2", "not a number" }, { "--1", "not a number" }, { "1e+", "not a number" },
        { "nan", "must be a finite number" }, { "NaN", "must be a finite number" },
        { "-inf", "must be a finite number" }, { "Infinity", "must be a finite number" },
        { "1e999", "out of range" }, { "-1e400", "out of range" },
        { "360.5", "out of range [0, 360]" }, { "-0.001", "out of range [0, 360]" },
        { "1\n", "not a number" },
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        double v = 42;
        gx_err err = { "" };
        gx_status s = gx_parse_double("ra", c[i].s, 0, 360, &v, &err);
        CHECK_MSG(s == GX_ERR_INVALID, "case %zu: %s", i, gx_status_str(s));
        CHECK_MSG(strstr(err.msg, c[i].msg) && strstr(err.msg, "field 'ra'"),
                  "case %zu: \"%s\" lacks \"%s\"", i, err.msg, c[i].msg);
        CHECK(v == 42);
    }
    double v;
    gx_err err = { "" };
    CHECK(gx_parse_double("ra", longs, 0, 1e300, &v, &err) == GX_ERR_INVALID);
    CHECK(strstr(err.msg, "longer than 100") != NULL);
}

GX_TEST(http_parse_int_and_ident) {
    long long v = 0;
    gx_err err = { "" };
    CHECK(gx_parse_int("limit", "25", 1, 1000, &v, &err) == GX_OK && v == 25);
    CHECK(gx_parse_int("class", "-1", -1, 9, &v, &err) == GX_OK && v == -1);
    CHECK(gx_parse_int("class", "+7", -1, 9, &v, &err) == GX_OK && v == 7);
    static const struct { const char *s; const char *msg; } bad[] = {
        { "", "field 'limit': empty" }, { "1.0", "not an integer: '1.0'" }, { "+", "not an integer" },
        { " 1", "not an integer" }, { "1e3", "not an integer" }, { "0", "out of range [1, 1000]" },
        { "1001", "out of range" }, { "99999999999999999999", "out of range" }, { "0x1", "not an integer" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 7;
        CHECK_MSG(gx_parse_int("limit", bad[i].s, 1, 1000, &v, &err) == GX_ERR_INVALID, "case %zu", i);
        CHECK_MSG(strstr(err.msg, bad[i].msg) != NULL, "case %zu: \"%s\" lacks \"%s\"", i, err.msg,
                  bad[i].msg);
        CHECK(v == 7);
    }
    CHECK(gx_parse_ident("object_id", "NGC-1234_a.b:c+d", &err) == GX_OK);
    char id128[130];
    memset(id128, 'x', 128);
    id128[128] = 0;
    CHECK(gx_parse_ident("object_id", id128, &err) == GX_OK);
    id128[128] = 'x';
    id128[129] = 0;
    CHECK(gx_parse_ident("object_id", id128, &err) == GX_ERR_INVALID && strstr(err.msg, "longer than 128"));
    CHECK(gx_parse_ident("object_id", "", &err) == GX_ERR_INVALID && strstr(err.msg, "'object_id': empty"));
    CHECK(gx_parse_ident("object_id", NULL, &err) == GX_ERR_INVALID);
    CHECK(gx_parse_ident("survey", "a b", &err) == GX_ERR_INVALID &&
          strstr(err.msg, "field 'survey': character 0x20 at 1"));
    CHECK(gx_parse_ident("survey", "../x", &err) == GX_ERR_INVALID && strstr(err.msg, "0x2f at 2"));
    CHECK(gx_parse_ident("survey", "caf\xc3\xa9", &err) == GX_ERR_INVALID && strstr(err.msg, "0xc3 at 3"));
}
