/*
 * gx_image.c — the gx_image type, size limits, format sniffing and the asinh
 * display stretch shared by the FITS decoder and the synthetic renderer.
 *
 * Design: decoders are independent files (gx_png.c, gx_jpeg.c, gx_fits.c)
 * that all end in the same representation, so everything downstream (the
 * preprocessing, the models) sees one kind of image. The size check lives
 * here so every decoder refuses oversized images with the same wording and
 * before it allocates anything sized by the header.
 */
#include "gx_image.h"
#include "gx_image_impl.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- image */

gx_status gx_image_alloc(gx_image *im, int c, int h, int w, gx_err *err) {
    memset(im, 0, sizeof *im);
    if (c <= 0 || h <= 0 || w <= 0)
        return gx_err_set(err, GX_ERR_INVALID, "image: bad size %dx%dx%d", c, h, w);
    /* Sizes are ints, so c*h*w fits in int64; the byte count must fit size_t. */
    int64_t px = (int64_t)h * w, n = px * c;
    if ((uint64_t)n > SIZE_MAX / sizeof(float))
        return gx_err_set(err, GX_ERR_NOMEM, "image: %dx%dx%d too large", c, h, w);
    im->data = calloc((size_t)n, sizeof(float));
    im->mask = malloc((size_t)px);
    if (!im->data || !im->mask) {
        gx_image_free(im);
        return gx_err_set(err, GX_ERR_NOMEM, "image: cannot allocate %dx%dx%d", c, h, w);
    }
    memset(im->mask, 1, (size_t)px);
    im->c = c; im->h = h; im->w = w;
    return GX_OK;
}

void gx_image_free(gx_image *im) {
    if (!im) return;
    free(im->data);
    free(im->mask);
    memset(im, 0, sizeof *im);
}

gx_status gx_image_check_limits(const gx_image_limits *lim, int64_t w, int64_t h,
                                const char *who, gx_err *err) {
    gx_image_limits d = GX_IMAGE_LIMITS_DEFAULT;
    if (!lim) lim = &d;
    if (w <= 0 || h <= 0)
        return gx_err_set(err, GX_ERR_FORMAT, "%s: image has zero size (%lldx%lld)",
                          who, (long long)w, (long long)h);
    if (w > lim->max_width || h > lim->max_height)
        return gx_err_set(err, GX_ERR_NOMEM,
                          "%s: image %lldx%lld exceeds limit %lldx%lld", who,
                          (long long)w, (long long)h, (long long)lim->max_width,
                          (long long)lim->max_height);
    /* w, h <= max side here, and both fit well within int64, so no overflow. */
    if (w > INT32_MAX || h > INT32_MAX || w * h > lim->max_pixels)
        return gx_err_set(err, GX_ERR_NOMEM,
                          "%s: image %lldx%lld has more than %lld pixels", who,
                          (long long)w, (long long)h, (long long)lim->max_pixels);
    return GX_OK;
}

/* Copy band 0 into bands 1 and 2 of a 3-band image. */
void gx_image_replicate(gx_image *im) {
    size_t px = (size_t)im->h * im->w;
    memcpy(im->data + px, im->data, px * sizeof(float));
    memcpy(im->data + 2 * px, im->data, px * sizeof(float));
    im->replicated = 1;
}

/* ------------------------------------------------------------ sniffing */

gx_image_format gx_image_sniff(const void *buf, size_t n) {
    const uint8_t *b = buf;
    static const uint8_t png_sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
    if (!b) return GX_IMAGE_UNKNOWN;
    if (n >= 8 && memcmp(b, png_sig, 8) == 0) return GX_IMAGE_PNG;
    if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return GX_IMAGE_JPEG;
    if (n >= 9 && memcmp(b, "SIMPLE  =", 9) == 0) return GX_IMAGE_FITS;
    return GX_IMAGE_UNKNOWN;
}

const char *gx_image_format_name(gx_image_format f) {
    switch (f) {
    case GX_IMAGE_PNG: return "png";
    case GX_IMAGE_JPEG: return "jpeg";
    case GX_IMAGE_FITS: return "fits";
    default: return "unknown";
    }
}

gx_status gx_image_decode(const void *buf, size_t n, const gx_image_limits *lim,
                          const gx_stretch *st, gx_image *out, gx_err *err) {
    memset(out, 0, sizeof *out);
    if (!buf || n == 0) return gx_err_set(err, GX_ERR_FORMAT, "image: empty input");
    switch (gx_image_sniff(buf, n)) {
    case GX_IMAGE_PNG: return gx_png_decode(buf, n, lim, out, err);
    case GX_IMAGE_JPEG: return gx_jpeg_decode(buf, n, lim, out, err);
    case GX_IMAGE_FITS: return gx_fits_decode(buf, n, lim, st, out, err);
    default: break;
    }
    return gx_err_set(err, GX_ERR_UNSUPPORTED,
                      "image: unknown format (not PNG, JPEG or FITS; first bytes %02x %02x %02x %02x)",
                      ((const uint8_t *)buf)[0], n > 1 ? ((const uint8_t *)buf)[1] : 0,
                      n > 2 ? ((const uint8_t *)buf)[2] : 0, n > 3 ? ((const uint8_t *)buf)[3] : 0);
}

/* -------------------------------------------------------- asinh stretch */

/* Rearranges v so that v[k] is the k-th smallest value, everything before it
 * <= v[k] and everything after >= v[k] (Hoare quickselect with a
 * median-of-three pivot). O(n) on average, where a full sort of a 256x256x3
 * stamp cost tens of milliseconds per FITS upload. */
static void gx_select_kth(double *v, size_t n, size_t k) {
    size_t lo = 0, hi = n - 1;
    while (hi > lo) {
        size_t mid = lo + (hi - lo) / 2;
        /* order v[lo] <= v[mid] <= v[hi]; the median becomes the pivot */
        if (v[mid] < v[lo]) { double t = v[mid]; v[mid] = v[lo]; v[lo] = t; }
        if (v[hi] < v[lo]) { double t = v[hi]; v[hi] = v[lo]; v[lo] = t; }
        if (v[hi] < v[mid]) { double t = v[hi]; v[hi] = v[mid]; v[mid] = t; }
        double pivot = v[mid];
        size_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot) i++;
            while (v[j] > pivot) j--;
            if (i <= j) {
                double t = v[i]; v[i] = v[j]; v[j] = t;
                i++;
                if (j == 0) break;
                j--;
            }
        }
        /* v[lo..j] <= pivot <= v[i..hi], and v[j+1..i-1] == pivot */
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return;
    }
}

/* numpy-style linear-interpolated quantile of v[0..n) (v is reordered). */
double gx_quantile_inplace(double *v, size_t n, double q) {
    if (n == 0) return 0.0;
    double pos = q * (double)(n - 1);
    size_t lo = (size_t)floor(pos);
    double t = pos - (double)lo;
    gx_select_kth(v, n, lo);
    if (t == 0.0 || lo + 1 >= n) return v[lo];
    /* the next order statistic is the minimum of the part above lo */
    double next = v[lo + 1];
    for (size_t i = lo + 2; i < n; i++)
        if (v[i] < next) next = v[i];
    /* numpy's lerp form: exact at t == 0 and t == 1 */
    return v[lo] + (next - v[lo]) * t;
}

/* Gather the valid values of band b (optionally as scale*(x - sky)) into tmp. */
static size_t gx_gather_band(const float *band, const uint8_t *mask, size_t px,
                             double sky, double scale, double *tmp) {
    size_t k = 0;
    for (size_t i = 0; i < px; i++)
        if ((!mask || mask[i]) && isfinite(band[i])) tmp[k++] = scale * ((double)band[i] - sky);
    return k;
}

gx_status gx_image_stretch(float *data, const uint8_t *mask, int c, int h, int w,
                           const gx_stretch *st_in, gx_stretch *used, gx_err *err) {
    gx_stretch st = st_in ? *st_in : GX_STRETCH_DEFAULT;
    if (c < 1 || c > 3 || h <= 0 || w <= 0)
        return gx_err_set(err, GX_ERR_INVALID, "stretch: bad shape %dx%dx%d", c, h, w);
    if (!(st.Q > 0) || !isfinite(st.Q))
        return gx_err_set(err, GX_ERR_INVALID, "stretch: Q must be > 0 (got %g)", st.Q);
    size_t px = (size_t)h * w;
    /* Statistics need one reorderable copy of (all bands of) the valid values. */
    double *tmp = malloc(px * (size_t)c * sizeof(double));
    if (!tmp) return gx_err_set(err, GX_ERR_NOMEM, "stretch: cannot allocate %zu values", px * c);
    for (int b = 0; b < c; b++) {
        if (st.sky_mode == GX_SKY_ZERO) st.sky[b] = 0.0;
        else if (st.sky_mode == GX_SKY_MEDIAN) {
            size_t k = gx_gather_band(data + b * px, mask, px, 0.0, 1.0, tmp);
            st.sky[b] = gx_quantile_inplace(tmp, k, 0.5);
        }
    }
    if (!(st.alpha > 0)) {
        size_t k = 0;
        for (int b = 0; b < c; b++)
            k += gx_gather_band(data + b * px, mask, px, st.sky[b], st.scale[b], tmp + k);
        double p = gx_quantile_inplace(tmp, k, 0.995);
        st.alpha = p > 0 ? st.Q * p / sinh(st.Q) : 1.0;
    }
    free(tmp);
    for (int b = 0; b < c; b++) {
        float *x = data + b * px;
        for (size_t i = 0; i < px; i++) {
            int ok = (!mask || mask[i]) && isfinite(x[i]);
            x[i] = ok ? (float)gx_stretch_value(x[i], st.sky[b], st.scale[b], st.Q, st.alpha)
                      : 0.0f;
        }
    }
    if (used) *used = st;
    return GX_OK;
}
