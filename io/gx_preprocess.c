/*
 * gx_preprocess.c — the input pipeline shared by trainer and daemon: centre
 * crop, antialiased bilinear resize, and the training augmentations.
 *
 * Design: one implementation, so a model is served exactly the inputs it
 * was trained on. Everything works on gx_image (float CHW + mask), not on
 * autodiff tensors: preprocessing has no gradient and runs on a loader
 * thread. Results are deterministic: the resize/rotate loops write each
 * output element from its own inputs only (OpenMP over rows does not
 * change a bit), and the augmentations draw from the caller's gx_rng in a
 * fixed order.
 *
 * The resize follows PIL's (and PyTorch's antialias=True) separable
 * triangle filter: output pixel i has centre (i + 0.5) * scale in input
 * coordinates, the filter half-width is max(scale, 1), taps outside the
 * image are dropped and the weights renormalised. When enlarging this is
 * plain bilinear with edge clamping; when shrinking every input pixel
 * contributes, which is what keeps small galaxies from aliasing away.
 */
#include "gx_image.h"
#include "gx_image_impl.h"

#include <stdlib.h>
#include <string.h>

#define GX_PRE_PAR_PIXELS 65536   /* parallelise loops over images larger than this */

/* ----------------------------------------------------------- centre crop */

gx_status gx_pre_center_crop(const gx_image *in, int ch, int cw, gx_image *out,
                             gx_err *err) {
    memset(out, 0, sizeof *out);
    if (ch <= 0 || cw <= 0 || ch > in->h || cw > in->w)
        return gx_err_set(err, GX_ERR_INVALID, "crop: %dx%d does not fit in %dx%d", ch, cw,
                          in->h, in->w);
    gx_status s = gx_image_alloc(out, in->c, ch, cw, err);
    if (s != GX_OK) return s;
    int y0 = (in->h - ch) / 2, x0 = (in->w - cw) / 2;
    size_t ipx = (size_t)in->h * in->w, opx = (size_t)ch * cw;
    for (int y = 0; y < ch; y++) {
        size_t src = (size_t)(y + y0) * in->w + x0, dst = (size_t)y * cw;
        for (int b = 0; b < in->c; b++)
            memcpy(out->data + b * opx + dst, in->data + b * ipx + src, cw * sizeof(float));
        memcpy(out->mask + dst, in->mask + src, (size_t)cw);
    }
    out->replicated = in->replicated;
    return GX_OK;
}

/* --------------------------------------------------------------- resize */

/* Filter taps for one axis: output i reads in[lo[i] .. lo[i]+cnt[i]) with
 * weights wt[i*kmax ..], normalised to sum 1. */
typedef struct gx_taps {
    int *lo, *cnt;
    double *wt;
    int kmax;
} gx_taps;

static void gx_taps_free(gx_taps *t) { free(t->lo); free(t->cnt); free(t->wt); }

static double gx_triangle(double x) {
    x = fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

static int gx_taps_init(gx_taps *t, int in, int out) {
    double scale = (double)in / out;
    double support = scale > 1.0 ? scale : 1.0;      /* triangle half-width */
    t->kmax = (int)ceil(support) * 2 + 1;
    t->lo = malloc(sizeof(int) * out);
    t->cnt = malloc(sizeof(int) * out);
    t->wt = malloc(sizeof(double) * (size_t)out * t->kmax);
    if (!t->lo || !t->cnt || !t->wt) { gx_taps_free(t); return 0; }
    for (int i = 0; i < out; i++) {
        double centre = (i + 0.5) * scale;
        int lo = (int)floor(centre - support + 0.5), hi = (int)floor(centre + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in) hi = in;
        if (hi - lo > t->kmax) hi = lo + t->kmax;
        double *w = t->wt + (size_t)i * t->kmax, sum = 0;
        for (int j = lo; j < hi; j++) sum += w[j - lo] = gx_triangle((j - centre + 0.5) / support);
        for (int j = lo; j < hi; j++) w[j - lo] = sum > 0 ? w[j - lo] / sum : 0;
        t->lo[i] = lo; t->cnt[i] = hi - lo;
    }
    return 1;
}

/* One separable pass over `planes` planes of rows x n_in, along the last
 * axis (horizontal) or the row axis (vertical). */
static void gx_resize_h(const float *src, float *dst, int planes, int rows, int n_in,
                        int n_out, const gx_taps *t) {
    #pragma omp parallel for if ((int64_t)planes * rows * n_out > GX_PRE_PAR_PIXELS) schedule(static)
    for (int r = 0; r < planes * rows; r++) {
        const float *s = src + (size_t)r * n_in;
        float *d = dst + (size_t)r * n_out;
        for (int i = 0; i < n_out; i++) {
            const double *w = t->wt + (size_t)i * t->kmax;
            double acc = 0;
            for (int k = 0; k < t->cnt[i]; k++) acc += w[k] * s[t->lo[i] + k];
            d[i] = (float)acc;
        }
    }
}

static void gx_resize_v(const float *src, float *dst, int planes, int n_in, int n_out,
                        int cols, const gx_taps *t) {
    #pragma omp parallel for if ((int64_t)planes * n_out * cols > GX_PRE_PAR_PIXELS) schedule(static)
    for (int r = 0; r < planes * n_out; r++) {
        int p = r / n_out, i = r % n_out;
        const double *w = t->wt + (size_t)i * t->kmax;
        float *d = dst + (size_t)r * cols;
        for (int x = 0; x < cols; x++) {
            double acc = 0;
            for (int k = 0; k < t->cnt[i]; k++)
                acc += w[k] * src[((size_t)p * n_in + t->lo[i] + k) * cols + x];
            d[x] = (float)acc;
        }
    }
}

gx_status gx_pre_resize(const gx_image *in, int oh, int ow, gx_image *out, gx_err *err) {
    memset(out, 0, sizeof *out);
    if (oh <= 0 || ow <= 0 || in->c <= 0 || in->h <= 0 || in->w <= 0)
        return gx_err_set(err, GX_ERR_INVALID, "resize: %dx%d -> %dx%d", in->h, in->w, oh, ow);
    gx_taps th = { 0 }, tv = { 0 };
    /* Planes 0..c-1 are the bands, plane c is the mask as 0/1 floats. */
    int planes = in->c + 1;
    size_t ipx = (size_t)in->h * in->w;
    float *src = malloc(sizeof(float) * ipx * planes);
    float *mid = malloc(sizeof(float) * (size_t)in->h * ow * planes);
    float *dst = malloc(sizeof(float) * (size_t)oh * ow * planes);
    gx_status s = GX_OK;
    if (!src || !mid || !dst || !gx_taps_init(&th, in->w, ow) || !gx_taps_init(&tv, in->h, oh))
        s = gx_err_set(err, GX_ERR_NOMEM, "resize: out of memory");
    if (s == GX_OK) s = gx_image_alloc(out, in->c, oh, ow, err);
    if (s == GX_OK) {
        memcpy(src, in->data, sizeof(float) * ipx * in->c);
        for (size_t i = 0; i < ipx; i++) src[ipx * in->c + i] = in->mask[i] ? 1.0f : 0.0f;
        gx_resize_h(src, mid, planes, in->h, in->w, ow, &th);
        gx_resize_v(mid, dst, planes, in->h, oh, ow, &tv);
        size_t opx = (size_t)oh * ow;
        memcpy(out->data, dst, sizeof(float) * opx * in->c);
        for (size_t i = 0; i < opx; i++) out->mask[i] = dst[opx * in->c + i] >= 0.5f;
        out->replicated = in->replicated;
    }
    free(src); free(mid); free(dst);
    gx_taps_free(&th); gx_taps_free(&tv);
    return s;
}

gx_status gx_pre_prepare(const gx_image *in, const gx_pre_opts *o, gx_image *out, gx_err *err) {
    gx_pre_opts d = GX_PRE_OPTS_DEFAULT;
    if (!o) o = &d;
    memset(out, 0, sizeof *out);
    if (!(o->crop_frac > 0 && o->crop_frac <= 1) || o->size <= 0)
        return gx_err_set(err, GX_ERR_INVALID, "prepare: crop_frac %g (need (0,1]), size %d",
                          o->crop_frac, o->size);
    int side = in->h < in->w ? in->h : in->w;
    int cs = (int)lround(o->crop_frac * side);
    if (cs < 1) cs = 1;
    gx_image crop;
    gx_status s = gx_pre_center_crop(in, cs, cs, &crop, err);
    if (s != GX_OK) return s;
    s = gx_pre_resize(&crop, o->size, o->size, out, err);
    gx_image_free(&crop);
    return s;
}

/* -------------------------------------------------------- augmentations */

gx_status gx_pre_rotate(const gx_image *in, double degrees, gx_image *out, gx_err *err) {
    gx_status s = gx_image_alloc(out, in->c, in->h, in->w, err);
    if (s != GX_OK) return s;
    int h = in->h, w = in->w;
    double th = degrees * 3.14159265358979323846 / 180.0, cs = cos(th), sn = sin(th);
    double cx = (w - 1) * 0.5, cy = (h - 1) * 0.5;
    size_t px = (size_t)h * w;
    /* Inverse mapping: output (x, y) samples the source at the point that
     * the rotation carries onto it. With rows growing downwards, a
     * counter-clockwise display rotation by th maps source (u, v) to
     * x = cx + (u-cx)cos + (v-cy)sin, y = cy - (u-cx)sin + (v-cy)cos. */
    #pragma omp parallel for if ((int64_t)px > GX_PRE_PAR_PIXELS) schedule(static)
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            double dx = x - cx, dy = y - cy;
            double u = cx + dx * cs - dy * sn, v = cy + dx * sn + dy * cs;
            size_t o = (size_t)y * w + x;
            /* Half a pixel of tolerance so an exact 90-degree turn keeps the border. */
            if (u < -1e-6 || v < -1e-6 || u > w - 1 + 1e-6 || v > h - 1 + 1e-6) {
                out->mask[o] = 0;
                for (int b = 0; b < in->c; b++) out->data[b * px + o] = 0.0f;
                continue;
            }
            u = u < 0 ? 0 : (u > w - 1 ? w - 1 : u);
            v = v < 0 ? 0 : (v > h - 1 ? h - 1 : v);
            int u0 = (int)floor(u), v0 = (int)floor(v);
            int u1 = u0 + 1 < w ? u0 + 1 : u0, v1 = v0 + 1 < h ? v0 + 1 : v0;
            double fu = u - u0, fv = v - v0;
            size_t i00 = (size_t)v0 * w + u0, i01 = (size_t)v0 * w + u1;
            size_t i10 = (size_t)v1 * w + u0, i11 = (size_t)v1 * w + u1;
            for (int b = 0; b < in->c; b++) {
                const float *p = in->data + b * px;
                double top = p[i00] + (p[i01] - p[i00]) * fu;
                double bot = p[i10] + (p[i11] - p[i10]) * fu;
                out->data[b * px + o] = (float)(top + (bot - top) * fv);
            }
            /* Valid when the nearest source pixel is valid. */
            size_t near = (size_t)lround(v) * w + (size_t)lround(u);
            out->mask[o] = in->mask[near];
        }
    }
    out->replicated = in->replicated;
    return GX_OK;
}

void gx_pre_flip_h(gx_image *im) {
    size_t px = (size_t)im->h * im->w;
    for (int y = 0; y < im->h; y++) {
        for (int x = 0, z = im->w - 1; x < z; x++, z--) {
            size_t a = (size_t)y * im->w + x, b = (size_t)y * im->w + z;
            for (int k = 0; k < im->c; k++) {
                float t = im->data[k * px + a];
                im->data[k * px + a] = im->data[k * px + b];
                im->data[k * px + b] = t;
            }
            uint8_t m = im->mask[a]; im->mask[a] = im->mask[b]; im->mask[b] = m;
        }
    }
}

/* Swap rows y and z of n-element rows in buf. */
static void gx_swap_rows(void *buf, size_t elem, int w, int y, int z) {
    uint8_t tmp[1024];
    uint8_t *a = (uint8_t *)buf + (size_t)y * w * elem, *b = (uint8_t *)buf + (size_t)z * w * elem;
    size_t n = (size_t)w * elem;
    for (size_t off = 0; off < n; off += sizeof tmp) {
        size_t k = n - off < sizeof tmp ? n - off : sizeof tmp;
        memcpy(tmp, a + off, k); memcpy(a + off, b + off, k); memcpy(b + off, tmp, k);
    }
}

void gx_pre_flip_v(gx_image *im) {
    size_t px = (size_t)im->h * im->w;
    for (int y = 0, z = im->h - 1; y < z; y++, z--) {
        for (int k = 0; k < im->c; k++) gx_swap_rows(im->data + k * px, sizeof(float), im->w, y, z);
        gx_swap_rows(im->mask, 1, im->w, y, z);
    }
}

void gx_pre_brightness(gx_image *im, double factor) {
    size_t n = (size_t)im->c * im->h * im->w;
    for (size_t i = 0; i < n; i++) im->data[i] = (float)(im->data[i] * factor);
}

void gx_pre_contrast(gx_image *im, double factor) {
    size_t px = (size_t)im->h * im->w, cnt = 0;
    double sum = 0;
    for (int k = 0; k < im->c; k++)
        for (size_t i = 0; i < px; i++)
            if (im->mask[i]) { sum += im->data[k * px + i]; cnt++; }
    double m = cnt ? sum / cnt : 0.0;
    for (size_t i = 0; i < px * im->c; i++)
        im->data[i] = (float)(m + factor * (im->data[i] - m));
}

void gx_pre_noise(gx_image *im, double sigma, gx_rng *rng) {
    size_t n = (size_t)im->c * im->h * im->w;
    float *z = malloc(n * sizeof(float));
    if (z) {
        gx_rng_fill_normal(rng, z, (int64_t)n, 0.0, sigma);
        for (size_t i = 0; i < n; i++) im->data[i] += z[i];
        free(z);
    } else {                      /* same stream, element by element */
        for (size_t i = 0; i < n; i++) im->data[i] += (float)(sigma * gx_rng_normal(rng));
    }
}

void gx_pre_clamp01(gx_image *im) {
    size_t n = (size_t)im->c * im->h * im->w;
    for (size_t i = 0; i < n; i++) {
        float v = im->data[i];
        im->data[i] = v > 0 ? (v < 1 ? v : 1.0f) : 0.0f;   /* NaN -> 0 */
    }
}

gx_status gx_pre_augment(gx_image *im, const gx_pre_aug *a, gx_rng *rng, gx_err *err) {
    /* Draw every random number first, in a fixed order. */
    double u_rot = gx_rng_uniform(rng), u_h = gx_rng_uniform(rng), u_v = gx_rng_uniform(rng);
    double u_b = gx_rng_uniform(rng), u_pc = gx_rng_uniform(rng), u_c = gx_rng_uniform(rng);
    double u_pn = gx_rng_uniform(rng), u_n = gx_rng_uniform(rng);
    /* The noise stream is a fork, so the main stream advances by a fixed 8
     * draws whatever the image size and options. */
    gx_rng noise = gx_rng_fork(rng, gx_rng_u32(rng));
    if (a->rot_max_deg > 0) {
        gx_image r;
        gx_status s = gx_pre_rotate(im, u_rot * a->rot_max_deg, &r, err);
        if (s != GX_OK) return s;
        gx_image_free(im);
        *im = r;
    }
    if (u_h < a->p_hflip) gx_pre_flip_h(im);
    if (u_v < a->p_vflip) gx_pre_flip_v(im);
    if (a->brightness > 0) gx_pre_brightness(im, 1.0 + a->brightness * (2 * u_b - 1));
    if (a->contrast > 0 && u_pc < a->p_contrast)
        gx_pre_contrast(im, 1.0 + a->contrast * (2 * u_c - 1));
    if (a->noise_hi > 0 && u_pn < a->p_noise)
        gx_pre_noise(im, a->noise_lo + (a->noise_hi - a->noise_lo) * u_n, &noise);
    if (a->clamp) gx_pre_clamp01(im);
    return GX_OK;
}
