/*
 * gx_jpeg.c — JPEG decoding with libjpeg-turbo from memory.
 *
 * Design: libjpeg's default error_exit calls exit(); we replace it with one
 * that formats the message into the per-call context and longjmps back.
 * The jump buffer sits in a struct that extends jpeg_error_mgr, so it is
 * per decompress object and thus per call: concurrent decodes share
 * nothing. Warnings (emit_message with level -1) are fatal too: libjpeg
 * would otherwise fill a truncated or corrupt scan with gray and carry on,
 * and a half-gray galaxy would be classified as if it were real.
 *
 * libjpeg does the colour conversion: grayscale files decode to one band
 * (then replicated), YCbCr/RGB files to RGB. CMYK/YCCK are refused.
 * Memory is bounded twice: our size limits before jpeg_start_decompress,
 * and libjpeg's own max_memory_to_use for the coefficient buffers of
 * progressive files.
 */
#include "gx_image.h"
#include "gx_image_impl.h"

#include <jpeglib.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

typedef struct gx_jpeg_err {
    struct jpeg_error_mgr pub;   /* must be first: libjpeg sees only this */
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX + 32];
} gx_jpeg_err;

static void gx_jpeg_error_exit(j_common_ptr cinfo) {
    gx_jpeg_err *e = (gx_jpeg_err *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->msg);
    longjmp(e->jb, 1);
}

static void gx_jpeg_emit(j_common_ptr cinfo, int level) {
    if (level >= 0) return;            /* trace messages */
    gx_jpeg_err *e = (gx_jpeg_err *)cinfo->err;
    char m[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, m);
    snprintf(e->msg, sizeof e->msg, "corrupt data: %s", m);
    longjmp(e->jb, 1);
}

/* Runs under setjmp: header, limits, decode into `out`. `row` is a
 * caller-owned pointer slot so the error path can free it. */
static gx_status gx_jpeg_body(struct jpeg_decompress_struct *ci, const gx_image_limits *lim,
                              uint8_t **row, gx_image *out, gx_err *err) {
    if (jpeg_read_header(ci, TRUE) != JPEG_HEADER_OK)
        return gx_err_set(err, GX_ERR_FORMAT, "jpeg: no image in stream");
    gx_status s = gx_image_check_limits(lim, ci->image_width, ci->image_height, "jpeg", err);
    if (s != GX_OK) return s;
    if (ci->jpeg_color_space == JCS_CMYK || ci->jpeg_color_space == JCS_YCCK)
        return gx_err_set(err, GX_ERR_UNSUPPORTED, "jpeg: CMYK/YCCK images are not supported");
    int gray = ci->jpeg_color_space == JCS_GRAYSCALE;
    ci->out_color_space = gray ? JCS_GRAYSCALE : JCS_RGB;
    /* Accurate integer IDCT and fancy upsampling: libjpeg's defaults, and
     * what PIL uses, so fixtures decoded by PIL match closely. */
    ci->dct_method = JDCT_ISLOW;
    ci->mem->max_memory_to_use = (long)512 << 20;
    jpeg_start_decompress(ci);
    int w = (int)ci->output_width, h = (int)ci->output_height, nc = ci->output_components;
    if (nc != (gray ? 1 : 3))
        return gx_err_set(err, GX_ERR_FORMAT, "jpeg: unexpected %d output components", nc);
    *row = malloc((size_t)w * nc);
    if (!*row) return gx_err_set(err, GX_ERR_NOMEM, "jpeg: out of memory");
    s = gx_image_alloc(out, 3, h, w, err);
    if (s != GX_OK) return s;
    size_t px = (size_t)h * w;
    while (ci->output_scanline < ci->output_height) {
        int y = (int)ci->output_scanline;
        JSAMPROW rp = *row;
        if (jpeg_read_scanlines(ci, &rp, 1) != 1)
            return gx_err_set(err, GX_ERR_FORMAT, "jpeg: no progress at row %d", y);
        for (int x = 0; x < w; x++)
            for (int k = 0; k < nc; k++)
                out->data[k * px + (size_t)y * w + x] = (float)((*row)[x * nc + k] / 255.0);
    }
    jpeg_finish_decompress(ci);
    if (gray) gx_image_replicate(out);
    return GX_OK;
}

gx_status gx_jpeg_decode(const void *buf, size_t n, const gx_image_limits *lim,
                         gx_image *out, gx_err *err) {
    memset(out, 0, sizeof *out);
    if (!buf || n == 0) return gx_err_set(err, GX_ERR_FORMAT, "jpeg: empty input");
    const uint8_t *b = buf;
    if (n < 3 || b[0] != 0xFF || b[1] != 0xD8)
        return gx_err_set(err, GX_ERR_FORMAT, "jpeg: bad signature (no SOI marker)");
    struct jpeg_decompress_struct ci;
    gx_jpeg_err je;
    memset(&je, 0, sizeof je);
    ci.err = jpeg_std_error(&je.pub);
    je.pub.error_exit = gx_jpeg_error_exit;
    je.pub.emit_message = gx_jpeg_emit;
    /* `row` is written after setjmp and read after a longjmp: it must live
     * in memory, which holding it in a struct field guarantees. */
    struct { uint8_t *row; } st = { NULL };
    gx_status s;
    if (setjmp(je.jb)) {
        gx_image_free(out);
        s = gx_err_set(err, GX_ERR_FORMAT, "jpeg: %s", je.msg);
    } else {
        jpeg_create_decompress(&ci);
        jpeg_mem_src(&ci, (const unsigned char *)buf, (unsigned long)n);
        s = gx_jpeg_body(&ci, lim, &st.row, out, err);
        if (s != GX_OK) gx_image_free(out);
    }
    jpeg_destroy_decompress(&ci);
    free(st.row);
    return s;
}
