/*
 * gx_http_parse.h — the request-body parsers of galaxyd, pure functions on
 * byte buffers (daemon/gx_http_parse.c), each with a fuzz target in
 * tests/fuzz/.
 *
 * Nothing here allocates per part: a parsed multipart body is a list of
 * views into the caller's buffer. Every function either succeeds or returns
 * GX_ERR_FORMAT / GX_ERR_INVALID with a message that names what is wrong
 * (the daemon sends it as the 400's message).
 */
#ifndef GX_HTTP_PARSE_H
#define GX_HTTP_PARSE_H

#include "gx.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Content-Type "type/subtype; k=v; k2=\"v2\"": the lowercased media type
 * (params stripped) into type, and the value of `param` (e.g. "boundary",
 * quotes removed) into value ("" if absent). param and value may be NULL
 * (parameters are then only checked for syntax); parameter names match
 * case-insensitively; a duplicate of `param`, a value too long for value_n
 * and any malformed parameter are refused. On error type and value are "". */
gx_status gx_http_content_type(const char *header, char *type, size_t type_n,
                               const char *param, char *value, size_t value_n, gx_err *err);

/* One part of a multipart/form-data body (RFC 7578): views into the body. */
typedef struct gx_mpart {
    char        name[64];          /* Content-Disposition name="..." */
    char        filename[256];     /* filename="..." or "" */
    char        content_type[128]; /* the part's Content-Type or "" */
    const unsigned char *data;     /* the part's bytes (inside the body) */
    size_t      len;
} gx_mpart;

/* Splits body into parts. Refuses: missing/oversized boundary (> 70 chars),
 * no opening delimiter, a part without Content-Disposition: form-data or
 * name, part headers over 8 KiB, more than max_parts parts, missing closing
 * delimiter.
 * Details (daemon/gx_http_parse.c): line ends must be CRLF (a bare-LF body
 * is refused with a message saying so); the boundary must use RFC 2046
 * bchars; the preamble and epilogue are ignored; a close delimiter right
 * after the opening one gives *n_parts = 0 and GX_OK (the caller decides
 * whether an empty form is acceptable). Part header names are
 * case-insensitive, folded header lines are refused, headers other than
 * Content-Disposition and Content-Type are ignored; name/filename may be
 * tokens or quoted strings with backslash escapes, and one too long for its
 * field is refused (not truncated). content_type is the header's trimmed
 * value as sent (parameters included). Status: GX_ERR_INVALID for a bad
 * boundary or arguments, GX_ERR_NOMEM for more than max_parts parts (the
 * caller's configured limit: a 413), GX_ERR_FORMAT for everything else.
 * Linear time in n whatever the body holds. */
gx_status gx_multipart_parse(const unsigned char *body, size_t n, const char *boundary,
                             gx_mpart *parts, int max_parts, int *n_parts, gx_err *err);

/* Standard base64 (RFC 4648, '=' padding optional, whitespace and a
 * "data:...;base64," prefix ignored); out gets malloc'd bytes. Refused
 * (GX_ERR_FORMAT, message names the offset): a character outside the
 * alphabet, data after '=', wrong padding, a dangling character, non-zero
 * unused bits in the last character (so every byte string has exactly one
 * accepted spelling). Empty text decodes to 0 bytes (*out still malloc'd). */
gx_status gx_base64_decode(const char *s, size_t n, unsigned char **out, size_t *out_n,
                           gx_err *err);
/* Encodes into a malloc'd NUL-terminated string (NULL when out of memory). */
char *gx_base64_encode(const unsigned char *data, size_t n);

/* base64url (RFC 4648 section 5: '-' and '_', no padding, no whitespace),
 * for the daemon's own opaque tokens (pagination cursors). */
gx_status gx_base64url_decode(const char *s, size_t n, unsigned char **out, size_t *out_n,
                              gx_err *err);
char *gx_base64url_encode(const unsigned char *data, size_t n);

/* A finite number in [lo, hi] from text (the whole string, no trailing
 * junk). field names the value in the error: "field 'ra': not a number".
 * Accepted: [+-]digits[.digits][e[+-]digits] (at most 100 characters);
 * refused: empty, whitespace, hex, nan/inf, overflow, outside [lo, hi]. */
gx_status gx_parse_double(const char *field, const char *s, double lo, double hi, double *out,
                          gx_err *err);
/* An integer in [lo, hi], same rules. */
gx_status gx_parse_int(const char *field, const char *s, long long lo, long long hi,
                       long long *out, gx_err *err);
/* Object ids and survey names: 1..128 chars of [A-Za-z0-9._:+-]. */
gx_status gx_parse_ident(const char *field, const char *s, gx_err *err);

#ifdef __cplusplus
}
#endif
#endif
