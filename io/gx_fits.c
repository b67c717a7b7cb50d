/*
 * gx_fits.c — FITS decoding with cfitsio from a memory buffer.
 *
 * Design: the buffer is opened read-only with fits_open_memfile, which
 * wraps the caller's bytes without copying or writing them (no realloc
 * function is given). cfitsio reports errors by status codes, so there is
 * no longjmp here; messages come from fits_get_errstatus (a static table)
 * and never from cfitsio's process-wide message stack.
 *
 * Thread safety: cfitsio keeps one process-wide table of open files and
 * memory files. A reentrant build (./configure --enable-reentrant; Debian's
 * libcfitsio10 is one, fits_is_reentrant() == 1) guards it with a mutex, so
 * concurrent opens/closes are safe and each fitsfile is private to its
 * call. We check fits_is_reentrant() and refuse on other builds.
 *
 * Layout selection (see gx_image.h): scan the HDUs, keep image HDUs with
 * data (NAXIS > 0); a 3-plane cube is used alone; otherwise one 2-D image
 * is a single band and three 2-D images of one size are the three bands.
 * Sizes are validated from the headers — limits and "does the data fit in
 * the buffer" — before the pixel buffers are allocated.
 */
#include "gx_image.h"
#include "gx_image_impl.h"

#include <fitsio.h>
#include <stdlib.h>
#include <string.h>

/* One image HDU that may contribute bands. */
typedef struct gx_fits_hdu {
    int index;              /* 1-based HDU number */
    int bitpix, equiv;      /* stored and equivalent (after BSCALE/BZERO) type */
    int naxis;
    long naxes[3];
} gx_fits_hdu;

/* Set err from a cfitsio status code, naming what we were doing. */
static gx_status gx_fits_fail(gx_err *err, int status, const char *what) {
    char text[FLEN_STATUS];
    fits_get_errstatus(status, text);
    return gx_err_set(err, status == MEMORY_ALLOCATION ? GX_ERR_NOMEM : GX_ERR_FORMAT,
                      "fits: %s: %s (cfitsio status %d)", what, text, status);
}

/* Reads the current HDU's image parameters and checks them for support. */
static gx_status gx_fits_probe(fitsfile *f, int index, gx_fits_hdu *h, gx_err *err) {
    int status = 0;
    memset(h, 0, sizeof *h);
    h->index = index;
    long ax[3] = { 0, 0, 0 };
    if (fits_get_img_param(f, 3, &h->bitpix, &h->naxis, ax, &status) ||
        fits_get_img_equivtype(f, &h->equiv, &status))
        return gx_fits_fail(err, status, "reading image header");
    if (h->bitpix == LONGLONG_IMG)
        return gx_err_set(err, GX_ERR_UNSUPPORTED, "fits: HDU %d: BITPIX 64 is not supported", index);
    if (h->naxis > 3)
        return gx_err_set(err, GX_ERR_UNSUPPORTED,
                          "fits: HDU %d: NAXIS %d is not supported (2-D image or 3-D cube only)",
                          index, h->naxis);
    if (h->naxis == 1)
        return gx_err_set(err, GX_ERR_UNSUPPORTED, "fits: HDU %d: 1-D data is not an image", index);
    memcpy(h->naxes, ax, sizeof ax);
    if (h->naxis == 2) h->naxes[2] = 1;
    return GX_OK;
}

/* Choose the HDU(s) to read: fills hdus[0..*nb) with *nb = 1 or 3 entries
 * and sets *cube when one HDU holds the three planes. */
static gx_status gx_fits_select(fitsfile *f, gx_fits_hdu hdus[3], int *nb, int *cube,
                                gx_err *err) {
    int status = 0, nhdu = 0, found = 0;
    if (fits_get_num_hdus(f, &nhdu, &status)) return gx_fits_fail(err, status, "counting HDUs");
    *cube = 0;
    for (int i = 1; i <= nhdu && found < 3; i++) {
        int type = 0;
        if (fits_movabs_hdu(f, i, &type, &status)) return gx_fits_fail(err, status, "moving to HDU");
        if (type != IMAGE_HDU) continue;
        gx_fits_hdu h;
        gx_status s = gx_fits_probe(f, i, &h, err);
        if (s != GX_OK) return s;
        if (h.naxis == 0) continue;          /* empty primary */
        if (h.naxes[2] != 1) {               /* a real cube */
            if (found > 0)
                return gx_err_set(err, GX_ERR_UNSUPPORTED,
                                  "fits: HDU %d is a cube but HDU %d was a 2-D image", i,
                                  hdus[0].index);
            if (h.naxes[2] != 3)
                return gx_err_set(err, h.naxes[2] == 0 ? GX_ERR_FORMAT : GX_ERR_UNSUPPORTED,
                                  "fits: HDU %d: cube has %ld planes (need 1 or 3)", i,
                                  h.naxes[2]);
            hdus[0] = h; *nb = 3; *cube = 1;
            return GX_OK;
        }
        hdus[found++] = h;
    }
    if (found == 0) return gx_err_set(err, GX_ERR_FORMAT, "fits: no image data in any HDU");
    if (found == 2)
        return gx_err_set(err, GX_ERR_UNSUPPORTED,
                          "fits: exactly two image HDUs (need one image, a 3-plane cube, or three images)");
    for (int b = 1; b < found; b++)
        if (hdus[b].naxes[0] != hdus[0].naxes[0] || hdus[b].naxes[1] != hdus[0].naxes[1])
            return gx_err_set(err, GX_ERR_FORMAT,
                              "fits: image HDUs differ in size (%ldx%ld in HDU %d, %ldx%ld in HDU %d)",
                              hdus[0].naxes[0], hdus[0].naxes[1], hdus[0].index,
                              hdus[b].naxes[0], hdus[b].naxes[1], hdus[b].index);
    *nb = found;
    return GX_OK;
}

/* Checks that the HDU's data section lies within the buffer, so a header
 * that lies about its size is refused before we allocate for it. */
static gx_status gx_fits_check_data(fitsfile *f, const gx_fits_hdu *h, size_t n, gx_err *err) {
    int status = 0, type = 0;
    LONGLONG head = 0, start = 0, end = 0;
    if (fits_movabs_hdu(f, h->index, &type, &status) ||
        fits_get_hduaddrll(f, &head, &start, &end, &status))
        return gx_fits_fail(err, status, "locating data");
    LONGLONG need = (LONGLONG)(abs(h->bitpix) / 8) * h->naxes[0] * h->naxes[1] * h->naxes[2];
    if (start < 0 || (uint64_t)start + (uint64_t)need > n)
        return gx_err_set(err, GX_ERR_FORMAT,
                          "fits: HDU %d: data truncated (header claims %lld bytes at offset %lld, "
                          "buffer has %zu)", h->index, (long long)need, (long long)start, n);
    return GX_OK;
}

/* Divisor for unsigned integer data mapped linearly, or 0 for physical data. */
static double gx_fits_linear_max(const gx_fits_hdu *h, int nb) {
    for (int b = 1; b < nb; b++)
        if (h[b].equiv != h[0].equiv) return 0;
    switch (h[0].equiv) {
    case BYTE_IMG: return 255.0;
    case USHORT_IMG: return 65535.0;
    case ULONG_IMG: return 4294967295.0;
    default: return 0;
    }
}

/* Reads band b (plane `plane` of HDU h) into out band b; marks undefined
 * values (NaN, Inf, BLANK) invalid in the mask. */
static gx_status gx_fits_read_band(fitsfile *f, const gx_fits_hdu *h, int plane, int b,
                                   char *nul, gx_image *out, gx_err *err) {
    int status = 0, type = 0, anynul = 0;
    size_t px = (size_t)out->h * out->w;
    long first[3] = { 1, 1, plane };
    float *dst = out->data + b * px;
    if (fits_movabs_hdu(f, h->index, &type, &status)) return gx_fits_fail(err, status, "moving to HDU");
    fits_read_pixnull(f, TFLOAT, first, (LONGLONG)px, dst, nul, &anynul, &status);
    /* -64 data beyond float range: cfitsio clips to +-FLT_MAX and flags it;
     * those values stay finite and are stretched (they saturate). */
    if (status == NUM_OVERFLOW) status = 0;
    if (status) return gx_fits_fail(err, status, "reading pixels");
    for (size_t i = 0; i < px; i++)
        if (nul[i] || !isfinite(dst[i])) { out->mask[i] = 0; }
    return GX_OK;
}

/* Everything after opening: select, validate, allocate, read, map. */
static gx_status gx_fits_body(fitsfile *f, size_t n, const gx_image_limits *lim,
                              const gx_stretch *st, gx_image *out, gx_err *err) {
    gx_fits_hdu hdus[3];
    int nb = 0, cube = 0;
    gx_status s = gx_fits_select(f, hdus, &nb, &cube, err);
    if (s != GX_OK) return s;
    s = gx_image_check_limits(lim, hdus[0].naxes[0], hdus[0].naxes[1], "fits", err);
    for (int b = 0; s == GX_OK && b < (cube ? 1 : nb); b++) s = gx_fits_check_data(f, &hdus[b], n, err);
    if (s != GX_OK) return s;
    int w = (int)hdus[0].naxes[0], h = (int)hdus[0].naxes[1];
    s = gx_image_alloc(out, 3, h, w, err);
    if (s != GX_OK) return s;
    char *nul = malloc((size_t)h * w);
    if (!nul) return gx_err_set(err, GX_ERR_NOMEM, "fits: out of memory");
    int bands = cube ? 3 : nb;
    for (int b = 0; s == GX_OK && b < bands; b++)
        s = gx_fits_read_band(f, cube ? &hdus[0] : &hdus[b], cube ? b + 1 : 1, b, nul, out, err);
    free(nul);
    if (s != GX_OK) return s;
    int c = bands == 1 ? 1 : 3;
    double lin = gx_fits_linear_max(hdus, cube ? 1 : nb);
    size_t px = (size_t)h * w;
    if (lin > 0) {
        for (size_t i = 0; i < px * c; i++) {
            /* BSCALE/BZERO can put values outside the unsigned range the
             * equivalent type promises (found by fuzz_fits): saturate them,
             * as the stretch path does, so the result stays in [0,1]. */
            double v = out->data[i] / lin;
            v = v < 0 ? 0 : (v > 1 ? 1 : v);
            out->data[i] = out->mask[i % px] ? (float)v : 0.0f;
        }
    } else {
        s = gx_image_stretch(out->data, out->mask, c, h, w, st, NULL, err);
        if (s != GX_OK) return s;
    }
    if (c == 1) gx_image_replicate(out);
    /* A pixel is invalid if any band is; invalid pixels are 0 in every band. */
    for (int b = 0; b < 3; b++)
        for (size_t i = 0; i < px; i++)
            if (!out->mask[i]) out->data[b * px + i] = 0.0f;
    return GX_OK;
}

gx_status gx_fits_decode(const void *buf, size_t n, const gx_image_limits *lim,
                         const gx_stretch *st, gx_image *out, gx_err *err) {
    memset(out, 0, sizeof *out);
    if (!buf || n == 0) return gx_err_set(err, GX_ERR_FORMAT, "fits: empty input");
    if (n < 2880 || memcmp(buf, "SIMPLE  =", 9) != 0)
        return gx_err_set(err, GX_ERR_FORMAT,
                          n < 2880 ? "fits: truncated (%zu bytes; a FITS header block is 2880)"
                                   : "fits: bad signature (no SIMPLE keyword; %zu bytes)", n);
    if (!fits_is_reentrant())
        return gx_err_set(err, GX_ERR_UNSUPPORTED,
                          "fits: cfitsio was built without --enable-reentrant; refusing to "
                          "decode concurrently");
    /* cfitsio's memory driver reads whole 2880-byte records and does not
     * stop at the end of a buffer whose size is not a multiple of 2880 (an
     * out-of-bounds read found by ASan on truncated files). Such buffers
     * are copied into a zero-padded one; the truncation check below still
     * uses the real size n, so padding never makes a short file pass. */
    void *padded = NULL;
    size_t memsize = n;
    if (n % 2880 != 0) {
        memsize = (n / 2880 + 1) * 2880;
        padded = calloc(memsize, 1);
        if (!padded) return gx_err_set(err, GX_ERR_NOMEM, "fits: out of memory");
        memcpy(padded, buf, n);
    }
    /* cfitsio takes void** and size_t* but, opened READONLY with no realloc
     * function, never writes through them or to the bytes. */
    void *mem = padded ? padded : (void *)buf;
    fitsfile *f = NULL;
    int status = 0;
    gx_status s;
    if (fits_open_memfile(&f, "upload.fits", READONLY, &mem, &memsize, 0, NULL, &status)) {
        s = gx_fits_fail(err, status, "opening");
        if (f) { status = 0; fits_close_file(f, &status); }
    } else {
        s = gx_fits_body(f, n, lim, st, out, err);
        if (s != GX_OK) gx_image_free(out);
        status = 0;
        fits_close_file(f, &status);
    }
    free(padded);
    return s;
}
