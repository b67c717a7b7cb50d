/*
 * gx_image.h — image decoding (PNG, JPEG, FITS), PNG encoding and the
 * preprocessing shared by the trainer and the daemon.
 *
 * Every decoder turns a memory buffer (the daemon never writes uploads to
 * disk) into a gx_image: float CHW in [0,1], always three bands, plus an h*w
 * validity mask. The pipeline for one request or one training sample is
 *
 *   gx_image im;  gx_err err;
 *   if (gx_image_decode(buf, n, NULL, NULL, &im, &err) != GX_OK) reply(err.msg);
 *   gx_image x;   gx_pre_prepare(&im, &opts, &x, &err);      // crop + resize
 *   gx_pre_augment(&x, &aug, &rng, &err);                    // training only
 *   ... copy x.data into the batch tensor ...
 *   gx_image_free(&im); gx_image_free(&x);
 *
 * Contracts that hold for every function here:
 *  - Bad input never aborts or exits: it returns a gx_status and a specific
 *    message in the caller's gx_err (prefixed "png:", "jpeg:", "fits:", ...).
 *  - Size limits (gx_image_limits) are checked from the header, before any
 *    allocation that depends on the claimed size, so a 60-byte PNG that
 *    claims 100000 x 100000 pixels costs nothing.
 *  - No global mutable state; every call is thread-safe. libpng and libjpeg
 *    errors are caught with setjmp/longjmp in a per-call context. cfitsio
 *    keeps a process-wide table of open files, but when it is built
 *    reentrant (Debian's is: fits_is_reentrant() == 1) that table is guarded
 *    by a mutex, and a memory file opened with fits_open_memfile on the
 *    caller's buffer touches nothing else shared; gx_fits_decode checks
 *    fits_is_reentrant() and refuses (GX_ERR_UNSUPPORTED) on a non-reentrant
 *    build rather than race.
 *  - Results are deterministic; the preprocessing results do not depend on
 *    the number of threads (every output element is computed independently).
 *
 * Pixel conventions: 8-bit samples map to v/255, 16-bit samples to v/65535.
 * Alpha is not kept as a band: a pixel whose alpha is 0 (including tRNS
 * transparency) is marked invalid in the mask, its colour is kept as stored
 * (not premultiplied). Single-band images (gray, gray+alpha, JPEG gray, a
 * 2-D FITS image) are replicated to three bands and `replicated` is set.
 */
#ifndef GX_IMAGE_H
#define GX_IMAGE_H

#include "gx.h"
#include <math.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------- image */

/* A decoded image. data and mask are malloc'ed (gx_image_free releases
 * them); io is f32-only, so data is float whatever gx_real is. */
typedef struct gx_image {
    int c, h, w;          /* bands (3 after decoding), height, width */
    float   *data;        /* c*h*w, band-major (CHW), values in [0,1] after decoding */
    uint8_t *mask;        /* h*w, 1 = valid pixel, 0 = NaN/Inf/transparent/outside */
    int replicated;       /* 1: a single band was copied to all three */
} gx_image;

/* Allocates a c x h x w image (data zeroed, mask all valid). Refuses
 * non-positive sizes and sizes whose byte count overflows. */
gx_status gx_image_alloc(gx_image *im, int c, int h, int w, gx_err *err);
/* Frees data and mask and zeroes the struct; safe on a zeroed struct and
 * on NULL. */
void gx_image_free(gx_image *im);

/* Limits on what a decoder accepts (a typed config entry for the daemon). */
typedef struct gx_image_limits {
    int64_t max_width;    /* default 4096 */
    int64_t max_height;   /* default 4096 */
    int64_t max_pixels;   /* width*height, default 4096*4096 */
} gx_image_limits;
#define GX_IMAGE_MAX_SIDE_DEFAULT 4096
#define GX_IMAGE_LIMITS_DEFAULT \
    ((gx_image_limits){ 4096, 4096, (int64_t)4096 * 4096 })
/* GX_OK if w x h is within lim (NULL = defaults), else GX_ERR_NOMEM with a
 * message "<who>: image WxH exceeds limit ...". Used by every decoder. */
gx_status gx_image_check_limits(const gx_image_limits *lim, int64_t w, int64_t h,
                                const char *who, gx_err *err);

/* ------------------------------------------------------ asinh stretch */

/* The display stretch of spec/synth.md (after Lupton et al. 2004), applied
 * independently to each band b:
 *
 *     x' = clip( asinh( Q * scale[b] * (x - sky[b]) / alpha ) / Q , 0, 1 )
 *
 *  Q        softening: small Q is nearly linear, large Q nearly logarithmic.
 *           Default 8 (make_lupton_rgb's default).
 *  alpha    linear scale of the data (make_lupton_rgb's `stretch`). When
 *           alpha <= 0 it is estimated: alpha = Q * p / sinh(Q), where p is
 *           the 99.5th percentile of scale[b]*(x - sky[b]) over the valid
 *           pixels of all bands together, so that value maps exactly to 1
 *           and colours are preserved (one alpha for every band). If p <= 0
 *           (a flat image) alpha = 1. Default: -1 (estimate).
 *  scale[b] per-band multiplier (colour balance). Default 1, 1, 1.
 *  sky      GX_SKY_MEDIAN (default): sky[b] = median of band b's valid
 *           pixels; GX_SKY_GIVEN: sky[] as given; GX_SKY_ZERO: 0.
 *
 * Percentiles use numpy's default ("linear") definition: sorted values v,
 * position q*(n-1), linear interpolation between neighbours. */
typedef enum { GX_SKY_MEDIAN = 0, GX_SKY_GIVEN = 1, GX_SKY_ZERO = 2 } gx_sky_mode;

typedef struct gx_stretch {
    double Q;             /* > 0 */
    double alpha;         /* > 0, or <= 0 to estimate */
    double scale[3];      /* per band */
    gx_sky_mode sky_mode;
    double sky[3];        /* per band; read for GX_SKY_GIVEN, written otherwise */
} gx_stretch;
#define GX_STRETCH_DEFAULT \
    ((gx_stretch){ 8.0, -1.0, { 1.0, 1.0, 1.0 }, GX_SKY_MEDIAN, { 0, 0, 0 } })

/* Stretches im (c bands of physical values) in place to [0,1]. Pixels with
 * mask 0 (may be NULL: all valid) take no part in the statistics and are
 * set to 0. `used` (may be NULL) receives the parameters actually applied
 * (estimated sky and alpha filled in), for logging and reproducibility. */
gx_status gx_image_stretch(float *data, const uint8_t *mask, int c, int h, int w,
                           const gx_stretch *st, gx_stretch *used, gx_err *err);
/* The per-value function itself (for the synthetic renderer's inner loop). */
static inline double gx_stretch_value(double x, double sky, double scale,
                                      double Q, double alpha) {
    double y = asinh(Q * scale * (x - sky) / alpha) / Q;
    return y < 0 ? 0 : (y > 1 ? 1 : y);
}

/* ----------------------------------------------------------- decoding */

typedef enum {
    GX_IMAGE_UNKNOWN = 0, GX_IMAGE_PNG, GX_IMAGE_JPEG, GX_IMAGE_FITS
} gx_image_format;

/* Format from the first bytes (PNG signature, JPEG SOI FF D8 FF, FITS
 * "SIMPLE  ="). */
gx_image_format gx_image_sniff(const void *buf, size_t n);
const char *gx_image_format_name(gx_image_format f);

/* Sniffs and dispatches. lim and st may be NULL (defaults). On error *out
 * is zeroed and nothing is leaked. */
gx_status gx_image_decode(const void *buf, size_t n, const gx_image_limits *lim,
                          const gx_stretch *st, gx_image *out, gx_err *err);

/* PNG via libpng: bit depths 1/2/4/8/16, gray, gray+alpha, RGB, RGBA,
 * palette (with tRNS), Adam7 interlaced. Corrupt zlib data, CRC errors,
 * truncation and trailing garbage inside IDAT are errors. */
gx_status gx_png_decode(const void *buf, size_t n, const gx_image_limits *lim,
                        gx_image *out, gx_err *err);

/* JPEG via libjpeg-turbo: baseline and progressive, gray or YCbCr/RGB
 * (CMYK is GX_ERR_UNSUPPORTED). Strict: any libjpeg warning (premature end
 * of data, corrupt entropy data) is an error, because a silently
 * gray-filled image would be classified as if it were real. */
gx_status gx_jpeg_decode(const void *buf, size_t n, const gx_image_limits *lim,
                         gx_image *out, gx_err *err);

/* FITS via cfitsio (memory file, read-only). Accepted layouts:
 *   - a 2-D image (NAXIS=2, or NAXIS=3 with NAXIS3=1) -> replicated;
 *   - a 3-D cube with NAXIS3=3 (bands in plane order);
 *   - three 2-D image HDUs of one size (the primary may be empty, NAXIS=0):
 *     the first three images found, in file order.
 * BITPIX 8/16/32/-32/-64 with BSCALE/BZERO applied (BITPIX 64 and NAXIS > 3
 * are GX_ERR_UNSUPPORTED). Mapping to [0,1]:
 *   - unsigned integer data — BITPIX 8, or 16/32 with the unsigned
 *     convention (BSCALE 1, BZERO 2^15 / 2^31) — maps linearly v/(2^bits-1)
 *     like PNG;
 *   - everything else (signed or scaled integers, floats) is physical data
 *     and goes through gx_image_stretch with `st` (NULL = default).
 * NaN/Inf pixels (and BLANK values of integer data) are masked and filled
 * with 0; a pixel is invalid if any band is. */
gx_status gx_fits_decode(const void *buf, size_t n, const gx_image_limits *lim,
                         const gx_stretch *st, gx_image *out, gx_err *err);

/* ------------------------------------------------------------ encoding */

/* 8-bit PNG of a float image with values in [0,1] (clipped, rounded):
 * c == 1 -> gray, c == 3 -> RGB (data CHW, c*h*w floats). NaN encodes as 0.
 * *png receives a malloc'ed buffer of *n bytes (caller frees). */
gx_status gx_png_encode(const float *data, int c, int h, int w,
                        uint8_t **png, size_t *n, gx_err *err);
/* Signed difference map d (h*w) as an RGB PNG with a diverging colour map:
 * d/range in [-1,1] goes blue (-1) -> white (0) -> red (+1), clipped.
 * range <= 0 uses max|d| (or 1 if d is all zero). NaN -> mid gray. */
gx_status gx_png_encode_diverging(const float *d, int h, int w, double range,
                                  uint8_t **png, size_t *n, gx_err *err);
/* The colour map itself: t in [-1,1] (clipped) -> rgb[3] in 0..255. */
void gx_png_diverging_color(double t, uint8_t rgb[3]);

/* -------------------------------------------------------- preprocessing */

/* Centre crop to ch x cw (ch <= h, cw <= w); the top-left corner is at
 * ((h-ch)/2, (w-cw)/2), rounded down. Allocates *out. */
gx_status gx_pre_center_crop(const gx_image *in, int ch, int cw, gx_image *out,
                             gx_err *err);

/* Bilinear resize to oh x ow with half-pixel centres (align_corners=False),
 * antialiased when shrinking: the triangle filter is widened by the scale
 * factor (support = scale), exactly like PIL's BILINEAR and PyTorch's
 * interpolate(mode="bilinear", antialias=True). Separable, width first.
 * The mask is resampled with the same weights and a pixel is valid when its
 * valid weight is >= 0.5. Allocates *out. */
gx_status gx_pre_resize(const gx_image *in, int oh, int ow, gx_image *out,
                        gx_err *err);

/* The model's input pipeline (identical in trainer and daemon): centre
 * crop of a square of side crop_frac * min(h, w) (rounded to nearest, at
 * least 1; crop_frac in (0,1], 1 = the largest centred square), then resize
 * to size x size. */
typedef struct gx_pre_opts {
    double crop_frac;     /* default 1.0 */
    int    size;          /* model input side, default 64 */
} gx_pre_opts;
#define GX_PRE_OPTS_DEFAULT ((gx_pre_opts){ 1.0, 64 })
gx_status gx_pre_prepare(const gx_image *in, const gx_pre_opts *o, gx_image *out,
                         gx_err *err);

/* Rotation by `degrees` counter-clockwise (as displayed, row 0 at the top)
 * about the image centre ((w-1)/2, (h-1)/2), bilinear sampling; pixels that
 * come from outside the source are 0 and invalid. Allocates *out (same
 * size). */
gx_status gx_pre_rotate(const gx_image *in, double degrees, gx_image *out,
                        gx_err *err);
/* In-place mirror: left-right (flip_h) or top-bottom (flip_v). */
void gx_pre_flip_h(gx_image *im);
void gx_pre_flip_v(gx_image *im);
/* x *= factor (brightness). */
void gx_pre_brightness(gx_image *im, double factor);
/* x = m + factor*(x - m), m = mean over valid pixels of all bands. */
void gx_pre_contrast(gx_image *im, double factor);
/* x += N(0, sigma^2), one draw per element in CHW order from rng. */
void gx_pre_noise(gx_image *im, double sigma, gx_rng *rng);
void gx_pre_clamp01(gx_image *im);

/* Training augmentation (spec/wavelet-mamba.md defaults). Draws happen in a
 * fixed order — angle, h-flip, v-flip, brightness, contrast, noise — and
 * each draw is made whether or not its transform is enabled, so the stream
 * position after a call does not depend on the options. For a given rng
 * state the result is bit-identical. */
typedef struct gx_pre_aug {
    double rot_max_deg;           /* angle uniform in [0, rot_max_deg); 0 = off */
    double p_hflip, p_vflip;      /* probabilities */
    double brightness;            /* factor uniform in [1-b, 1+b]; 0 = off */
    double contrast, p_contrast;  /* factor uniform in [1-c, 1+c] with prob p */
    double noise_lo, noise_hi, p_noise; /* sigma uniform in [lo, hi] with prob p */
    int    clamp;                 /* clamp to [0,1] at the end */
} gx_pre_aug;
#define GX_PRE_AUG_DEFAULT \
    ((gx_pre_aug){ 360.0, 0.5, 0.5, 0.15, 0.015, 0.2, 0.008, 0.025, 0.4, 1 })
#define GX_PRE_AUG_NONE ((gx_pre_aug){ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 })
/* Applies the augmentation in place (rotation uses a temporary image). */
gx_status gx_pre_augment(gx_image *im, const gx_pre_aug *a, gx_rng *rng, gx_err *err);

#ifdef __cplusplus
}
#endif

#endif /* GX_IMAGE_H */
