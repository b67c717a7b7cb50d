/*
 * gx_png.c — PNG decoding and encoding with libpng, from and to memory.
 *
 * Design: libpng reports errors by calling an error function that must not
 * return; we longjmp back to the decode call through png_jmpbuf, which is
 * per png_struct, so two threads decoding at once never share a jump
 * buffer or any other state. Everything allocated inside the setjmp region
 * lives in a context struct (not in locals, whose values are indeterminate
 * after a longjmp unless volatile) and is freed on both paths.
 *
 * Decoding asks libpng to normalise every colour type to 8- or 16-bit
 * samples: palette -> RGB, gray < 8 bits -> 8 bits, tRNS -> alpha; Adam7
 * interlacing is handled by png_set_interlace_handling + png_read_image.
 * 16-bit samples are kept at full precision (v/65535).
 */
#include "gx_image.h"
#include "gx_image_impl.h"

#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

/* Largest ancillary chunk we let libpng buffer (text, ICC profiles, ...):
 * a "huge header" of metadata must not cost more than this. */
#define GX_PNG_CHUNK_MAX (1u << 20)

/* Per-call state: the memory reader, the error message, and allocations. */
typedef struct gx_png_ctx {
    const uint8_t *buf;
    size_t n, pos;
    char msg[256];
    char warning[160];        /* last libpng warning: often the specific cause */
    uint8_t *pixels;          /* decoded rows (h * rowbytes) */
    png_bytep *rows;          /* h row pointers into pixels */
    /* encoding */
    uint8_t *out;
    size_t out_n, out_cap;
    int oom;
} gx_png_ctx;

/* libpng often warns with the specific cause ("Image width is zero in
 * IHDR") and then fails with a generic error ("Invalid IHDR data"), so the
 * last warning is appended to the message. */
static void gx_png_error(png_structp png, png_const_charp msg) {
    gx_png_ctx *c = png_get_error_ptr(png);
    if (c->warning[0])
        snprintf(c->msg, sizeof c->msg, "%s (%s)", msg, c->warning);
    else
        snprintf(c->msg, sizeof c->msg, "%s", msg);
    png_longjmp(png, 1);
}

/* Warnings (bad ancillary chunks, ...) are not fatal and not printed: the
 * daemon must not write to stderr on every odd upload. */
static void gx_png_warning(png_structp png, png_const_charp msg) {
    gx_png_ctx *c = png_get_error_ptr(png);
    snprintf(c->warning, sizeof c->warning, "%s", msg);
}

static void gx_png_read(png_structp png, png_bytep dst, size_t len) {
    gx_png_ctx *c = png_get_io_ptr(png);
    if (len > c->n - c->pos) png_error(png, "truncated data (read past end of buffer)");
    memcpy(dst, c->buf + c->pos, len);
    c->pos += len;
}

/* Convert the decoded rows (nch channels of `depth` bits, alpha last when
 * has_alpha) into the float image. */
static void gx_png_to_float(const gx_png_ctx *c, int h, int w, int nch, int depth,
                            int has_alpha, gx_image *im) {
    size_t px = (size_t)h * w;
    int ncol = has_alpha ? nch - 1 : nch;
    double inv = depth == 16 ? 1.0 / 65535.0 : 1.0 / 255.0;
    for (int y = 0; y < h; y++) {
        const uint8_t *r8 = c->rows[y];
        const uint16_t *r16 = (const uint16_t *)c->rows[y];
        for (int x = 0; x < w; x++) {
            size_t i = (size_t)y * w + x;
            for (int k = 0; k < ncol; k++) {
                unsigned v = depth == 16 ? r16[x * nch + k] : r8[x * nch + k];
                im->data[k * px + i] = (float)(v * inv);
            }
            if (has_alpha) {
                unsigned a = depth == 16 ? r16[x * nch + nch - 1] : r8[x * nch + nch - 1];
                im->mask[i] = a != 0;
            }
        }
    }
}

/* The part of decoding that runs under setjmp. Returns GX_OK or a status
 * with c->msg / err set; a longjmp lands in gx_png_decode. */
static gx_status gx_png_decode_body(png_structp png, png_infop info, gx_png_ctx *c,
                                    const gx_image_limits *lim, gx_image *out,
                                    gx_err *err) {
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    gx_status s = gx_image_check_limits(lim, w, h, "png", err);
    if (s != GX_OK) return s;
    int ct = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
    if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ct == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    /* PNG stores 16-bit samples big-endian; swap to host order (x86: little). */
    if (depth == 16) {
        uint16_t probe = 1;
        if (*(uint8_t *)&probe == 1) png_set_swap(png);
    }
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int nch = png_get_channels(png, info);
    depth = png_get_bit_depth(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if ((depth != 8 && depth != 16) || nch < 1 || nch > 4 ||
        rowbytes != (size_t)w * nch * (depth / 8))
        return gx_err_set(err, GX_ERR_FORMAT, "png: unexpected layout after transforms "
                          "(%d channels, %d bits)", nch, depth);
    c->pixels = malloc(rowbytes * h);
    c->rows = malloc(sizeof(png_bytep) * h);
    if (!c->pixels || !c->rows)
        return gx_err_set(err, GX_ERR_NOMEM, "png: cannot allocate %ux%u", w, h);
    for (png_uint_32 y = 0; y < h; y++) c->rows[y] = c->pixels + y * rowbytes;
    png_read_image(png, c->rows);
    png_read_end(png, NULL);   /* checks the trailing chunks' CRCs, IEND */
    s = gx_image_alloc(out, 3, (int)h, (int)w, err);
    if (s != GX_OK) return s;
    int has_alpha = nch == 2 || nch == 4;
    gx_png_to_float(c, (int)h, (int)w, nch, depth, has_alpha, out);
    if (nch <= 2) gx_image_replicate(out);
    return GX_OK;
}

gx_status gx_png_decode(const void *buf, size_t n, const gx_image_limits *lim,
                        gx_image *out, gx_err *err) {
    memset(out, 0, sizeof *out);
    if (!buf || n == 0) return gx_err_set(err, GX_ERR_FORMAT, "png: empty input");
    if (n < 8 || png_sig_cmp(buf, 0, 8) != 0)
        return gx_err_set(err, GX_ERR_FORMAT, "png: bad signature (not a PNG file)");
    gx_png_ctx c;
    memset(&c, 0, sizeof c);
    c.buf = buf; c.n = n;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &c, gx_png_error,
                                             gx_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return gx_err_set(err, GX_ERR_NOMEM, "png: cannot create decoder");
    }
    gx_status s;
    if (setjmp(png_jmpbuf(png))) {
        gx_image_free(out);
        s = gx_err_set(err, GX_ERR_FORMAT, "png: %s", c.msg[0] ? c.msg : "decode error");
    } else {
        png_set_read_fn(png, &c, gx_png_read);
        png_set_chunk_malloc_max(png, GX_PNG_CHUNK_MAX);
        png_set_chunk_cache_max(png, 128);
        s = gx_png_decode_body(png, info, &c, lim, out, err);
        if (s != GX_OK) gx_image_free(out);
    }
    png_destroy_read_struct(&png, &info, NULL);
    free(c.pixels);
    free(c.rows);
    return s;
}

/* ------------------------------------------------------------ encoding */

static void gx_png_write(png_structp png, png_bytep src, size_t len) {
    gx_png_ctx *c = png_get_io_ptr(png);
    if (len > c->out_cap - c->out_n) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap - c->out_n < len) cap *= 2;
        uint8_t *p = realloc(c->out, cap);
        if (!p) { c->oom = 1; png_error(png, "out of memory"); }
        c->out = p; c->out_cap = cap;
    }
    memcpy(c->out + c->out_n, src, len);
    c->out_n += len;
}

static void gx_png_flush(png_structp png) { (void)png; }

/* Encode 8-bit interleaved pixels (nch = 1 gray or 3 RGB) held in c->pixels. */
static gx_status gx_png_encode_pixels(gx_png_ctx *c, int nch, int h, int w,
                                      uint8_t **png_out, size_t *n, gx_err *err) {
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, c, gx_png_error,
                                              gx_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return gx_err_set(err, GX_ERR_NOMEM, "png: cannot create encoder");
    }
    gx_status s = GX_OK;
    if (setjmp(png_jmpbuf(png))) {
        s = gx_err_set(err, c->oom ? GX_ERR_NOMEM : GX_ERR_INVALID, "png: encode: %s", c->msg);
    } else {
        png_set_write_fn(png, c, gx_png_write, gx_png_flush);
        png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8,
                     nch == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
        png_write_info(png, info);
        for (int y = 0; y < h; y++) png_write_row(png, c->pixels + (size_t)y * w * nch);
        png_write_end(png, NULL);
    }
    png_destroy_write_struct(&png, &info);
    if (s == GX_OK) { *png_out = c->out; *n = c->out_n; c->out = NULL; }
    return s;
}

static uint8_t gx_png_u8(float v) {
    if (!(v > 0)) return 0;           /* also NaN */
    if (v >= 1) return 255;
    return (uint8_t)lrintf(v * 255.0f);
}

static gx_status gx_png_encode_check(int h, int w, uint8_t **png, size_t *n, gx_err *err) {
    if (!png || !n) return gx_err_set(err, GX_ERR_INVALID, "png: encode: NULL output");
    *png = NULL; *n = 0;
    if (h <= 0 || w <= 0 || (int64_t)h * w > INT32_MAX)
        return gx_err_set(err, GX_ERR_INVALID, "png: encode: bad size %dx%d", h, w);
    return GX_OK;
}

gx_status gx_png_encode(const float *data, int c, int h, int w,
                        uint8_t **png, size_t *n, gx_err *err) {
    gx_status s = gx_png_encode_check(h, w, png, n, err);
    if (s != GX_OK) return s;
    if (!data || (c != 1 && c != 3))
        return gx_err_set(err, GX_ERR_INVALID, "png: encode: need 1 or 3 bands, got %d", c);
    gx_png_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    size_t px = (size_t)h * w;
    ctx.pixels = malloc(px * c);
    if (!ctx.pixels) return gx_err_set(err, GX_ERR_NOMEM, "png: encode: out of memory");
    for (size_t i = 0; i < px; i++)          /* CHW float -> HWC bytes */
        for (int k = 0; k < c; k++) ctx.pixels[i * c + k] = gx_png_u8(data[k * px + i]);
    s = gx_png_encode_pixels(&ctx, c, h, w, png, n, err);
    free(ctx.pixels);
    free(ctx.out);
    return s;
}

/* Blue (-1) -> white (0) -> red (+1): linear in sRGB between three anchors
 * close to ColorBrewer RdBu's ends, so zero is exactly white and the sign
 * reads at a glance. */
void gx_png_diverging_color(double t, uint8_t rgb[3]) {
    static const double neg[3] = { 33, 102, 172 }, mid[3] = { 255, 255, 255 },
                        pos[3] = { 178, 24, 43 };
    if (!(t == t)) { rgb[0] = rgb[1] = rgb[2] = 128; return; }   /* NaN */
    t = t < -1 ? -1 : (t > 1 ? 1 : t);
    const double *end = t < 0 ? neg : pos;
    double a = fabs(t);
    for (int k = 0; k < 3; k++) rgb[k] = (uint8_t)lrint(mid[k] + (end[k] - mid[k]) * a);
}

gx_status gx_png_encode_diverging(const float *d, int h, int w, double range,
                                  uint8_t **png, size_t *n, gx_err *err) {
    gx_status s = gx_png_encode_check(h, w, png, n, err);
    if (s != GX_OK) return s;
    if (!d) return gx_err_set(err, GX_ERR_INVALID, "png: encode: NULL data");
    size_t px = (size_t)h * w;
    if (!(range > 0)) {
        range = 0;
        for (size_t i = 0; i < px; i++)
            if (isfinite(d[i]) && fabs(d[i]) > range) range = fabs(d[i]);
        if (range == 0) range = 1;
    }
    gx_png_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.pixels = malloc(px * 3);
    if (!ctx.pixels) return gx_err_set(err, GX_ERR_NOMEM, "png: encode: out of memory");
    for (size_t i = 0; i < px; i++) gx_png_diverging_color(d[i] / range, ctx.pixels + 3 * i);
    s = gx_png_encode_pixels(&ctx, 3, h, w, png, n, err);
    free(ctx.pixels);
    free(ctx.out);
    return s;
}
