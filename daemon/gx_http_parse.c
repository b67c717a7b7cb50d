/*
 * gx_http_parse.c — the request-body parsers of galaxyd: Content-Type,
 * multipart/form-data, base64, and the scalar fields of queries and forms.
 *
 * Design:
 *  - Everything here reads bytes a client chose, so every loop is bounded by
 *    the buffer length it was given (never by a NUL it hopes to find), there
 *    is no recursion, and every search is linear in the input: a hostile
 *    body of 10 MB of near-miss boundaries costs one pass, not one pass per
 *    near miss.
 *  - The multipart delimiter search is our own (mp_find_delim) rather than
 *    memmem: the delimiter "\r\n--boundary" holds '\r' only at its first
 *    byte (boundaries are restricted to RFC 2046 bchars, which exclude CR),
 *    so a memchr for '\r' followed by a compare can never re-read a byte
 *    more than once per candidate: a partial match of length L contains no
 *    other '\r', hence the next candidate starts past it. That gives an
 *    O(n) bound we can state, whatever the libc's memmem does.
 *  - Strict over lenient: a body that RFC 7578/2046 does not allow is
 *    refused with a message that says where and why (a 400 the client can
 *    act on), instead of being half-understood. Bare-LF multipart bodies
 *    are refused with a message that says CRLF is required.
 *  - Numbers: a small grammar check before strtod, so "inf", "nan", hex
 *    floats, whitespace and trailing junk are refused with a reason, and a
 *    length cap so no client can make strtod do big-number work.
 */
#include "gx_http_parse.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MP_BOUNDARY_MAX    70      /* RFC 2046 5.1.1 */
#define MP_HEADERS_MAX     8192    /* bytes of one part's header block */
#define NUM_TEXT_MAX       100     /* longest number text we pass to strtod/strtoll */
#define IDENT_MAX          128

/* ------------------------------------------------------------ helpers */

static int ch_lower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

/* RFC 7230 tchar: the characters of a token (media types, parameter names). */
static int is_tchar(unsigned char c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int is_ows(unsigned char c) { return c == ' ' || c == '\t'; }

/* Case-insensitive compare of a length-delimited span with a C string. */
static int span_ieq(const char *s, size_t n, const char *lit) {
    size_t m = strlen(lit);
    if (n != m) return 0;
    for (size_t i = 0; i < n; i++)
        if (ch_lower((unsigned char)s[i]) != ch_lower((unsigned char)lit[i])) return 0;
    return 1;
}

/* Copies a client-supplied value into a message-safe form: at most 32
 * bytes, non-printables as '?', so an error message can quote the input
 * without carrying control characters into logs. */
static void quote_safe(const char *s, size_t n, char *out, size_t out_n) {
    size_t k = 0;
    for (size_t i = 0; i < n && k + 4 < out_n && i < 32; i++) {
        unsigned char c = (unsigned char)s[i];
        out[k++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (n > 32 && k + 4 <= out_n) { memcpy(out + k, "...", 3); k += 3; }
    out[k] = 0;
}

/* ------------------------------------------------------ header params */

/* Parameters "; k=v; k2=\"v2\"" share one grammar between Content-Type and
 * Content-Disposition. A cursor over [p, end). */
typedef struct hp_cur { const char *p, *end; } hp_cur;

static void hp_skip_ows(hp_cur *c) { while (c->p < c->end && is_ows((unsigned char)*c->p)) c->p++; }

/* A token at the cursor: returns its length (0 when none). */
static size_t hp_token(hp_cur *c, const char **tok) {
    *tok = c->p;
    while (c->p < c->end && is_tchar((unsigned char)*c->p)) c->p++;
    return (size_t)(c->p - *tok);
}

/* A parameter value (token or quoted-string with backslash escapes) into
 * out (NUL-terminated). Returns 0 on success, -1 malformed, -2 too long.
 * out may be NULL to skip a value. */
static int hp_value(hp_cur *c, char *out, size_t out_n) {
    size_t k = 0;
    if (c->p < c->end && *c->p == '"') {
        c->p++;
        for (;;) {
            if (c->p >= c->end) return -1;                 /* unterminated */
            unsigned char ch = (unsigned char)*c->p++;
            if (ch == '"') break;
            if (ch == '\\') {
                if (c->p >= c->end) return -1;
                ch = (unsigned char)*c->p++;
            }
            if ((ch < 0x20 && ch != '\t') || ch == 0x7f) return -1;   /* CTL */
            if (out) {
                if (k + 1 >= out_n) return -2;
                out[k++] = (char)ch;
            }
        }
    } else {
        const char *tok;
        size_t n = hp_token(c, &tok);
        if (n == 0) return -1;
        if (out) {
            if (n + 1 > out_n) return -2;
            memcpy(out, tok, n);
            k = n;
        }
    }
    if (out) out[k] = 0;
    return 0;
}

/* The next "; name=value" at the cursor. Returns 1 with name span set (the
 * value is left at the cursor for hp_value), 0 at the end (only OWS left),
 * -1 malformed. */
static int hp_next_param(hp_cur *c, const char **name, size_t *name_n) {
    hp_skip_ows(c);
    if (c->p >= c->end) return 0;
    if (*c->p != ';') return -1;
    c->p++;
    hp_skip_ows(c);
    *name_n = hp_token(c, name);
    if (*name_n == 0) return -1;
    hp_skip_ows(c);
    if (c->p >= c->end || *c->p != '=') return -1;
    c->p++;
    hp_skip_ows(c);
    return 1;
}

/* ------------------------------------------------------- Content-Type */

gx_status gx_http_content_type(const char *header, char *type, size_t type_n,
                               const char *param, char *value, size_t value_n, gx_err *err) {
    if (type && type_n) type[0] = 0;
    if (value && value_n) value[0] = 0;
    if (!type || type_n == 0)
        return gx_err_set(err, GX_ERR_INVALID, "Content-Type: no output buffer");
    if (!header || !*header)
        return gx_err_set(err, GX_ERR_INVALID, "Content-Type: missing");
    hp_cur c = { header, header + strlen(header) };
    hp_skip_ows(&c);
    const char *t0;
    size_t n1 = hp_token(&c, &t0);
    if (n1 == 0 || c.p >= c.end || *c.p != '/')
        return gx_err_set(err, GX_ERR_FORMAT, "Content-Type: expected type/subtype");
    c.p++;
    const char *t1;
    size_t n2 = hp_token(&c, &t1);
    if (n2 == 0)
        return gx_err_set(err, GX_ERR_FORMAT, "Content-Type: expected type/subtype");
    size_t tn = (size_t)(c.p - t0);
    if (tn + 1 > type_n)
        return gx_err_set(err, GX_ERR_FORMAT, "Content-Type: media type longer than %zu bytes",
                          type_n - 1);
    for (size_t i = 0; i < tn; i++) type[i] = (char)ch_lower((unsigned char)t0[i]);
    type[tn] = 0;
    int found = 0;
    for (;;) {
        const char *name;
        size_t name_n = 0;
        int r = hp_next_param(&c, &name, &name_n);
        if (r == 0) break;
        if (r < 0) { type[0] = 0; return gx_err_set(err, GX_ERR_FORMAT, "Content-Type: malformed parameter"); }
        int want = param && value && span_ieq(name, name_n, param);
        if (want && found) {
            type[0] = 0; value[0] = 0;
            return gx_err_set(err, GX_ERR_FORMAT, "Content-Type: duplicate parameter '%s'", param);
        }
        r = hp_value(&c, want ? value : NULL, value_n);
        if (r < 0) {
            type[0] = 0;
            if (value && value_n) value[0] = 0;
            return r == -2 ? gx_err_set(err, GX_ERR_FORMAT,
                                        "Content-Type: parameter '%s' longer than %zu bytes",
                                        param, value_n - 1)
                           : gx_err_set(err, GX_ERR_FORMAT, "Content-Type: malformed parameter value");
        }
        found |= want;
    }
    return GX_OK;
}

/* ---------------------------------------------------------- multipart */

/* RFC 2046 bchars (plus space, not last). Restricting to these is what
 * makes the delimiter search linear (no '\r' inside). */
static gx_status mp_check_boundary(const char *b, size_t *len, gx_err *err) {
    if (!b || !*b) return gx_err_set(err, GX_ERR_INVALID, "multipart: missing boundary");
    size_t n = strnlen(b, MP_BOUNDARY_MAX + 1);
    if (n > MP_BOUNDARY_MAX)
        return gx_err_set(err, GX_ERR_INVALID, "multipart: boundary longer than %d characters",
                          MP_BOUNDARY_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)b[i];
        int ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 strchr("'()+_,-./:=? ", c) != NULL;
        if (!ok)
            return gx_err_set(err, GX_ERR_INVALID,
                              "multipart: boundary has a character not allowed by RFC 2046 at %zu", i);
    }
    if (b[n - 1] == ' ')
        return gx_err_set(err, GX_ERR_INVALID, "multipart: boundary ends with a space");
    *len = n;
    return GX_OK;
}

/* First "\r\n--boundary" at or after `from`; returns its offset or n.
 * Linear: see the file comment. */
static size_t mp_find_delim(const unsigned char *b, size_t n, size_t from, const char *bd,
                            size_t bd_n) {
    size_t need = 4 + bd_n;
    while (from + need <= n) {
        const unsigned char *cr = memchr(b + from, '\r', n - from - need + 1);
        if (!cr) return n;
        size_t i = (size_t)(cr - b);
        if (b[i + 1] == '\n' && b[i + 2] == '-' && b[i + 3] == '-' &&
            memcmp(b + i + 4, bd, bd_n) == 0)
            return i;
        from = i + 1;
    }
    return n;
}

/* After a dash-boundary at `p` (just past "--boundary"): "--" closes
 * (returns 1), LWSP* CRLF opens a part (returns 0, *next = start of its
 * headers), anything else is -1 (bare LF: -2, for a clearer message). */
static int mp_after_delim(const unsigned char *b, size_t n, size_t p, size_t *next) {
    if (p + 2 <= n && b[p] == '-' && b[p + 1] == '-') return 1;
    while (p < n && (b[p] == ' ' || b[p] == '\t')) p++;
    if (p < n && b[p] == '\n') return -2;
    if (p + 2 > n || b[p] != '\r' || b[p + 1] != '\n') return -1;
    *next = p + 2;
    return 0;
}

/* Content-Disposition: form-data; name="..."; filename="..." */
static gx_status mp_disposition(const char *v, size_t n, gx_mpart *part, int idx, gx_err *err) {
    hp_cur c = { v, v + n };
    hp_skip_ows(&c);
    const char *tok;
    size_t tn = hp_token(&c, &tok);
    if (!span_ieq(tok, tn, "form-data"))
        return gx_err_set(err, GX_ERR_FORMAT,
                          "multipart part %d: Content-Disposition is not form-data", idx);
    int have_name = 0, have_file = 0;
    for (;;) {
        const char *name;
        size_t name_n = 0;
        int r = hp_next_param(&c, &name, &name_n);
        if (r == 0) break;
        if (r < 0)
            return gx_err_set(err, GX_ERR_FORMAT,
                              "multipart part %d: malformed Content-Disposition parameter", idx);
        char *out = NULL;
        size_t out_n = 0;
        const char *what = NULL;
        if (span_ieq(name, name_n, "name")) {
            if (have_name++) return gx_err_set(err, GX_ERR_FORMAT, "multipart part %d: duplicate name", idx);
            out = part->name; out_n = sizeof part->name; what = "name";
        } else if (span_ieq(name, name_n, "filename")) {
            if (have_file++) return gx_err_set(err, GX_ERR_FORMAT, "multipart part %d: duplicate filename", idx);
            out = part->filename; out_n = sizeof part->filename; what = "filename";
        }
        /* Other parameters (filename* included, which RFC 7578 4.2 says
         * senders must not use) are parsed for syntax and ignored. */
        r = hp_value(&c, out, out_n);
        if (r == -2)
            return gx_err_set(err, GX_ERR_FORMAT, "multipart part %d: %s longer than %zu bytes",
                              idx, what, out_n - 1);
        if (r < 0)
            return gx_err_set(err, GX_ERR_FORMAT,
                              "multipart part %d: malformed Content-Disposition value", idx);
    }
    if (!have_name || !part->name[0])
        return gx_err_set(err, GX_ERR_FORMAT, "multipart part %d: Content-Disposition has no name", idx);
    return GX_OK;
}

/* One header line "Name: value" (no CRLF). Only Content-Disposition and
 * Content-Type are kept; other headers are checked for shape and ignored. */
static gx_status mp_header_line(const char *l, size_t n, gx_mpart *part, int *have_cd, int idx,
                                gx_err *err) {
    if (n > 0 && is_ows((unsigned char)l[0]))
        return gx_err_set(err, GX_ERR_FORMAT, "multipart part %d: folded header line", idx);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)l[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return gx_err_set(err, GX_ERR_FORMAT, "multipart part %d: control character in header",
                              idx);
    }
    const char *colon = memchr(l, ':', n);
    size_t nn = colon ? (size_t)(colon - l) : 0;
    if (!colon || nn == 0)
        return gx_err_set(err, GX_ERR_FORMAT, "multipart part %d: header line without a name", idx);
    for (size_t i = 0; i < nn; i++)
        if (!is_tchar((unsigned char)l[i]))
            return gx_err_set(err, GX_ERR_FORMAT, "multipart part %d: bad header name", idx);
    const char *v = colon + 1, *e = l + n;
    while (v < e && is_ows((unsigned char)*v)) v++;
    while (e > v && is_ows((unsigned char)e[-1])) e--;
    size_t vn = (size_t)(e - v);
    if (span_ieq(l, nn, "content-disposition")) {
        if ((*have_cd)++)
            return gx_err_set(err, GX_ERR_FORMAT, "multipart part %d: duplicate Content-Disposition", idx);
        return mp_disposition(v, vn, part, idx, err);
    }
    if (span_ieq(l, nn, "content-type")) {
        if (part->content_type[0])
            return gx_err_set(err, GX_ERR_FORMAT, "multipart part %d: duplicate Content-Type", idx);
        if (vn == 0)
            return gx_err_set(err, GX_ERR_FORMAT, "multipart part %d: empty Content-Type", idx);
        if (vn + 1 > sizeof part->content_type)
            return gx_err_set(err, GX_ERR_FORMAT, "multipart part %d: Content-Type longer than %zu bytes",
                              idx, sizeof part->content_type - 1);
        memcpy(part->content_type, v, vn);
        part->content_type[vn] = 0;
    }
    return GX_OK;
}

/* The header block of one part: b[h0, h1) holds lines separated by CRLF
 * (no trailing CRLF). */
static gx_status mp_headers(const unsigned char *b, size_t h0, size_t h1, gx_mpart *part, int idx,
                            gx_err *err) {
    int have_cd = 0;
    size_t p = h0;
    while (p < h1) {
        const unsigned char *cr = memchr(b + p, '\r', h1 - p);
        size_t e = cr ? (size_t)(cr - b) : h1;
        if (cr && b[e + 1] != '\n')   /* e < h1 <= n - 4: e + 1 is in the body */
            return gx_err_set(err, GX_ERR_FORMAT, "multipart part %d: bare CR in headers", idx);
        if (memchr(b + p, '\n', e - p))
            return gx_err_set(err, GX_ERR_FORMAT,
                              "multipart part %d: bare LF in headers (line ends must be CRLF)", idx);
        /* Obsolete line folding (RFC 7230 3.2.4): refused, and said so
         * before the folded line's first half is judged on its own. */
        if (cr && e + 2 < h1 && is_ows(b[e + 2]))
            return gx_err_set(err, GX_ERR_FORMAT, "multipart part %d: folded header line", idx);
        gx_status s = mp_header_line((const char *)b + p, e - p, part, &have_cd, idx, err);
        if (s != GX_OK) return s;
        p = cr ? e + 2 : h1;
    }
    if (!have_cd)
        return gx_err_set(err, GX_ERR_FORMAT, "multipart part %d: no Content-Disposition header", idx);
    return GX_OK;
}

/* Finds the end of the header block that starts at p (the byte after the
 * delimiter line's CRLF): the first CRLFCRLF at or after p-2, so that an
 * empty block (the part starts with CRLF) is found too. Sets *h1 to the end
 * of the header lines and *d0 to the first data byte. */
static gx_status mp_header_end(const unsigned char *b, size_t n, size_t p, size_t *h1, size_t *d0,
                               int idx, gx_err *err) {
    size_t lim = p + MP_HEADERS_MAX + 4;
    if (lim > n) lim = n;
    for (size_t i = p - 2; i + 4 <= lim;) {
        const unsigned char *cr = memchr(b + i, '\r', lim - i - 3);
        if (!cr) break;
        i = (size_t)(cr - b);
        if (b[i + 1] == '\n' && b[i + 2] == '\r' && b[i + 3] == '\n') {
            *h1 = i < p ? p : i;
            *d0 = i + 4;
            return GX_OK;
        }
        i++;
    }
    if (lim == n)
        return gx_err_set(err, GX_ERR_FORMAT,
                          "multipart part %d: headers not terminated by an empty line "
                          "(line ends must be CRLF)", idx);
    return gx_err_set(err, GX_ERR_FORMAT, "multipart part %d: headers longer than %d bytes", idx,
                      MP_HEADERS_MAX);
}

/* The opening delimiter: at offset 0, or after a preamble ending in CRLF.
 * Returns the offset just past "--boundary". */
static gx_status mp_open(const unsigned char *b, size_t n, const char *bd, size_t bd_n,
                         size_t *after, gx_err *err) {
    if (n >= 2 + bd_n && b[0] == '-' && b[1] == '-' && memcmp(b + 2, bd, bd_n) == 0) {
        *after = 2 + bd_n;
        return GX_OK;
    }
    size_t d = mp_find_delim(b, n, 0, bd, bd_n);
    if (d == n)
        return gx_err_set(err, GX_ERR_FORMAT, "multipart: no opening boundary '--%s' "
                          "(a body with bare-LF line ends is refused: use CRLF)", bd);
    *after = d + 4 + bd_n;
    return GX_OK;
}

gx_status gx_multipart_parse(const unsigned char *body, size_t n, const char *boundary,
                             gx_mpart *parts, int max_parts, int *n_parts, gx_err *err) {
    if (n_parts) *n_parts = 0;
    if (!n_parts || (!parts && max_parts > 0) || max_parts < 0)
        return gx_err_set(err, GX_ERR_INVALID, "multipart: bad arguments");
    size_t bd_n = 0;
    gx_status s = mp_check_boundary(boundary, &bd_n, err);
    if (s != GX_OK) return s;
    if (!body || n == 0) return gx_err_set(err, GX_ERR_FORMAT, "multipart: empty body");
    size_t p = 0;
    s = mp_open(body, n, boundary, bd_n, &p, err);
    if (s != GX_OK) return s;
    for (int k = 0;; k++) {
        size_t h0 = 0;
        int r = mp_after_delim(body, n, p, &h0);
        if (r == 1) { *n_parts = k; return GX_OK; }   /* close delimiter; epilogue ignored */
        if (r == -2)
            return gx_err_set(err, GX_ERR_FORMAT,
                              "multipart: boundary line ends with a bare LF (line ends must be CRLF)");
        if (r < 0)
            return gx_err_set(err, GX_ERR_FORMAT,
                              "multipart: boundary at byte %zu not followed by CRLF or '--'", p);
        if (k >= max_parts)
            return gx_err_set(err, GX_ERR_NOMEM, "multipart: more than %d parts", max_parts);
        gx_mpart *part = &parts[k];
        memset(part, 0, sizeof *part);
        size_t h1 = 0, d0 = 0;
        s = mp_header_end(body, n, h0, &h1, &d0, k, err);
        if (s == GX_OK) s = mp_headers(body, h0, h1, part, k, err);
        if (s != GX_OK) return s;
        /* From d0 - 2: RFC 2046 makes a part's "CRLF data" optional, so in
         * "...\r\n\r\n--b" the delimiter's CRLF is the header block's last
         * one and the part has no data at all. */
        size_t d = mp_find_delim(body, n, d0 - 2, boundary, bd_n);
        if (d == n)
            return gx_err_set(err, GX_ERR_FORMAT,
                              "multipart part %d: no closing boundary (body truncated?)", k);
        if (d < d0) d0 = d;
        part->data = body + d0;
        part->len = d - d0;
        p = d + 4 + bd_n;
    }
}

/* ------------------------------------------------------------- base64 */

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64_val(unsigned char c, int url) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == (url ? '-' : '+')) return 62;
    if (c == (url ? '_' : '/')) return 63;
    return -1;
}

static int b64_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static char *b64_encode(const unsigned char *d, size_t n, const char *alpha, int pad) {
    if (n > (SIZE_MAX - 8) / 4 * 3) return NULL;
    size_t m = (n + 2) / 3 * 4;
    char *o = malloc(m + 1);
    if (!o) return NULL;
    size_t k = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned)d[i] << 16 | (unsigned)d[i + 1] << 8 | d[i + 2];
        o[k++] = alpha[v >> 18]; o[k++] = alpha[(v >> 12) & 63];
        o[k++] = alpha[(v >> 6) & 63]; o[k++] = alpha[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)d[i] << 16;
        o[k++] = alpha[v >> 18]; o[k++] = alpha[(v >> 12) & 63];
        if (pad) { o[k++] = '='; o[k++] = '='; }
    } else if (n - i == 2) {
        unsigned v = (unsigned)d[i] << 16 | (unsigned)d[i + 1] << 8;
        o[k++] = alpha[v >> 18]; o[k++] = alpha[(v >> 12) & 63]; o[k++] = alpha[(v >> 6) & 63];
        if (pad) o[k++] = '=';
    }
    o[k] = 0;
    return o;
}

char *gx_base64_encode(const unsigned char *data, size_t n) {
    return b64_encode(data, n, b64_std, 1);
}

char *gx_base64url_encode(const unsigned char *data, size_t n) {
    return b64_encode(data, n, b64_url, 0);
}

/* Skips a "data:<mediatype>;base64," prefix (RFC 2397). */
static gx_status b64_skip_data_url(const char *s, size_t n, size_t *start, gx_err *err) {
    *start = 0;
    if (n < 5 || !span_ieq(s, 5, "data:")) return GX_OK;
    size_t lim = n < 512 ? n : 512;   /* a media type is short; don't scan megabytes */
    const char *comma = memchr(s, ',', lim);
    if (!comma || comma - s < 12 || !span_ieq(comma - 7, 7, ";base64"))
        return gx_err_set(err, GX_ERR_FORMAT, "base64: data URL without ';base64,'");
    *start = (size_t)(comma - s) + 1;
    return GX_OK;
}

/* The decoder for both alphabets. Whitespace anywhere is skipped; '=' may
 * only end the text (then only '=' and whitespace follow), and must make the
 * length a multiple of 4 when present. Non-zero bits in the final
 * character's unused tail are refused, so each byte string has exactly one
 * accepted encoding (decode(encode(x)) == x and encode(decode(s)) == s). */
static gx_status b64_decode(const char *s, size_t n, int url, unsigned char **out, size_t *out_n,
                            gx_err *err) {
    *out = NULL;
    *out_n = 0;
    const char *what = url ? "base64url" : "base64";
    if (!s && n) return gx_err_set(err, GX_ERR_INVALID, "%s: no input", what);
    size_t i = 0;
    if (!url) {
        gx_status st = b64_skip_data_url(s, n, &i, err);
        if (st != GX_OK) return st;
    }
    unsigned char *o = malloc(n / 4 * 3 + 3);
    if (!o) return gx_err_set(err, GX_ERR_NOMEM, "%s: out of memory", what);
    size_t k = 0, nd = 0, npad = 0, last = 0;
    unsigned acc = 0;
    int lastv = 0;
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        /* base64url is only used for our own tokens (cursors): no padding,
         * no whitespace, one spelling per value. */
        if (!url && b64_space(c)) continue;
        if (c == '=' && !url) { npad++; last = i; continue; }
        int v = b64_val(c, url);
        if (v < 0) {
            free(o);
            return gx_err_set(err, GX_ERR_FORMAT, "%s: invalid character 0x%02x at offset %zu", what,
                              c, i);
        }
        if (npad) {
            free(o);
            return gx_err_set(err, GX_ERR_FORMAT, "%s: data after '=' padding at offset %zu", what, i);
        }
        acc = acc << 6 | (unsigned)v;
        lastv = v;
        last = i;
        if (++nd % 4 == 0) {
            o[k++] = (unsigned char)(acc >> 16); o[k++] = (unsigned char)(acc >> 8);
            o[k++] = (unsigned char)acc;
            acc = 0;
        }
    }
    size_t rem = nd % 4;
    const char *bad = NULL;
    if (rem == 1) bad = "truncated (one character left over)";
    else if (npad && (rem == 0 || rem + npad != 4)) bad = "wrong '=' padding";
    else if ((rem == 2 && (lastv & 15)) || (rem == 3 && (lastv & 3))) bad = "non-zero bits in the last character";
    if (bad) {
        free(o);
        return gx_err_set(err, GX_ERR_FORMAT, "%s: %s at offset %zu", what, bad, last);
    }
    if (rem == 2) o[k++] = (unsigned char)(acc >> 4);
    else if (rem == 3) { o[k++] = (unsigned char)(acc >> 10); o[k++] = (unsigned char)(acc >> 2); }
    *out = o;
    *out_n = k;
    return GX_OK;
}

gx_status gx_base64_decode(const char *s, size_t n, unsigned char **out, size_t *out_n, gx_err *err) {
    return b64_decode(s, n, 0, out, out_n, err);
}

gx_status gx_base64url_decode(const char *s, size_t n, unsigned char **out, size_t *out_n,
                              gx_err *err) {
    return b64_decode(s, n, 1, out, out_n, err);
}

/* ------------------------------------------------------------ scalars */

/* The text of a field value: present, not too long. */
static gx_status num_text(const char *field, const char *s, size_t *len, gx_err *err) {
    if (!s || !*s) return gx_err_set(err, GX_ERR_INVALID, "field '%s': empty", field);
    *len = strnlen(s, NUM_TEXT_MAX + 1);
    if (*len > NUM_TEXT_MAX)
        return gx_err_set(err, GX_ERR_INVALID, "field '%s': longer than %d characters", field,
                          NUM_TEXT_MAX);
    return GX_OK;
}

/* Decimal grammar: [+-] digits [. digits] [(e|E) [+-] digits], at least one
 * mantissa digit. Returns 1 when s[0..n) matches. */
static int num_is_decimal(const char *s, size_t n) {
    size_t i = 0, digits = 0;
    if (i < n && (s[i] == '+' || s[i] == '-')) i++;
    while (i < n && s[i] >= '0' && s[i] <= '9') { i++; digits++; }
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9') { i++; digits++; }
    }
    if (digits == 0) return 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        size_t ed = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') { i++; ed++; }
        if (ed == 0) return 0;
    }
    return i == n;
}

/* "nan", "inf", "infinity" in any case and sign: named as non-finite. */
static int num_is_nonfinite_word(const char *s, size_t n) {
    if (n && (s[0] == '+' || s[0] == '-')) { s++; n--; }
    return span_ieq(s, n, "nan") || span_ieq(s, n, "inf") || span_ieq(s, n, "infinity");
}

gx_status gx_parse_double(const char *field, const char *s, double lo, double hi, double *out,
                          gx_err *err) {
    size_t n;
    gx_status st = num_text(field, s, &n, err);
    if (st != GX_OK) return st;
    char q[48];
    quote_safe(s, n, q, sizeof q);
    if (num_is_nonfinite_word(s, n))
        return gx_err_set(err, GX_ERR_INVALID, "field '%s': must be a finite number, got '%s'", field, q);
    if (!num_is_decimal(s, n))
        return gx_err_set(err, GX_ERR_INVALID, "field '%s': not a number: '%s'", field, q);
    /* strtod reads the decimal point of the C locale (galaxyd never calls
     * setlocale), and the grammar check above means it consumes all of s. */
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (end != s + n)
        return gx_err_set(err, GX_ERR_INVALID, "field '%s': not a number: '%s'", field, q);
    if (!isfinite(v) || (errno == ERANGE && fabs(v) == HUGE_VAL))
        return gx_err_set(err, GX_ERR_INVALID, "field '%s': '%s' is out of range", field, q);
    if (!(v >= lo && v <= hi))
        return gx_err_set(err, GX_ERR_INVALID, "field '%s': %s is out of range [%g, %g]", field, q,
                          lo, hi);
    *out = v;
    return GX_OK;
}

gx_status gx_parse_int(const char *field, const char *s, long long lo, long long hi,
                       long long *out, gx_err *err) {
    size_t n;
    gx_status st = num_text(field, s, &n, err);
    if (st != GX_OK) return st;
    char q[48];
    quote_safe(s, n, q, sizeof q);
    size_t i = (s[0] == '+' || s[0] == '-') ? 1 : 0;
    if (i == n) return gx_err_set(err, GX_ERR_INVALID, "field '%s': not an integer: '%s'", field, q);
    for (; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return gx_err_set(err, GX_ERR_INVALID, "field '%s': not an integer: '%s'", field, q);
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE || end != s + n || v < lo || v > hi)
        return gx_err_set(err, GX_ERR_INVALID, "field '%s': %s is out of range [%lld, %lld]", field,
                          q, lo, hi);
    *out = v;
    return GX_OK;
}

gx_status gx_parse_ident(const char *field, const char *s, gx_err *err) {
    if (!s || !*s) return gx_err_set(err, GX_ERR_INVALID, "field '%s': empty", field);
    size_t n = strnlen(s, IDENT_MAX + 1);
    if (n > IDENT_MAX)
        return gx_err_set(err, GX_ERR_INVALID, "field '%s': longer than %d characters", field,
                          IDENT_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 c == '.' || c == '_' || c == ':' || c == '+' || c == '-';
        if (!ok)
            return gx_err_set(err, GX_ERR_INVALID,
                              "field '%s': character 0x%02x at %zu is not one of [A-Za-z0-9._:+-]",
                              field, c, i);
    }
    return GX_OK;
}
