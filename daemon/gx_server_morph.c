/*
 * gx_server_morph.c — POST /v1/morphology: statmorph's non-parametric
 * morphology (morph/gx_morph.h) of one uploaded cutout, in classify's input
 * forms; classify's ?morph=1 adds the same object to its answer.
 *
 * Which image is measured (docs/serving.md says why):
 *   - the decoded cutout at its native resolution, before the model's crop
 *     and resize: Gini, M20, C and the radii depend on the pixel scale, and
 *     resampling to 64x64 would measure the preprocessing as much as the
 *     galaxy; the statistics then describe what the client sent;
 *   - one band: the mean of the three decoded bands by default (band=mean),
 *     the image `galaxy-train two-models` measures (gx_tm_morph_image), so
 *     online and offline numbers agree on the same cutout; band=g|r|z (or
 *     0|1|2) picks one band of a three-band upload (for a gray upload every
 *     choice is the same image);
 *   - sky-subtracted as gx_tm_morph_image does: minus the median of the
 *     outermost 3-pixel frame (1 pixel below 12 px), because gx_morph wants
 *     a background-subtracted image and a PNG/JPEG cutout's sky sits above 0;
 *   - pixels the decoder marked invalid (NaN/Inf in FITS, transparent PNG)
 *     are masked.
 * The segmentation is gx_morph_measure_auto's recipe (the paper's).
 */
#include "gx_server_impl.h"

#include "gx_morph.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int mo_cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* The measured band: band < 0 the mean of the three; minus the frame median. */
static int mo_image(const gx_image *im, int band, float *out) {
    int h = im->h, w = im->w;
    size_t n = (size_t)h * w;
    for (size_t i = 0; i < n; i++)
        out[i] = band >= 0 ? im->data[(size_t)band * n + i]
                           : (im->data[i] + im->data[n + i] + im->data[2 * n + i]) / 3.0f;
    int fw = h >= 12 && w >= 12 ? 3 : 1, m = 0;
    float *frame = malloc(n * sizeof *frame);
    if (!frame) return 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            if ((y < fw || y >= h - fw || x < fw || x >= w - fw) && (!im->mask || im->mask[(size_t)y * w + x]))
                frame[m++] = out[(size_t)y * w + x];
    qsort(frame, (size_t)m, sizeof *frame, mo_cmp_float);
    float sky = m ? frame[m / 2] : 0;
    free(frame);
    for (size_t i = 0; i < n; i++) out[i] -= sky;
    return 1;
}

/* "mean" -> -1, g|r|z or 0|1|2 -> the band; -2 for anything else. */
static int mo_band(const char *b) {
    if (!b || !strcmp(b, "mean")) return -1;
    static const char *names[3][2] = { { "g", "0" }, { "r", "1" }, { "z", "2" } };
    for (int i = 0; i < 3; i++)
        if (!strcmp(b, names[i][0]) || !strcmp(b, names[i][1])) return i;
    return -2;
}

static const char *mo_flag_name(int f) {
    return f == GX_MORPH_GOOD ? "good" : f == GX_MORPH_SUSPECT ? "suspect" : f == GX_MORPH_BAD ? "bad" : "failed";
}

static json_t *mo_result_json(const gx_morph_result *m, const gx_image *im, const char *band) {
    json_t *stats = json_object(), *warn = json_array();
    for (int i = 0; stats && i < gx_morph_nfields; i++) {
        double v = gx_morph_get(m, i);
        json_object_set_new(stats, gx_morph_fields[i].name, isfinite(v) ? json_real(v) : json_null());
    }
    for (int b = 0; warn && b < GX_MORPH_W_COUNT; b++)
        if (m->warn & (1u << b)) json_array_append_new(warn, json_string(gx_morph_warn_str(1u << b)));
    return json_pack("{s:s, s:i, s:s, s:o, s:s, s:o, s:i, s:i, s:i, s:i, s:{s:i, s:i, s:i}}",
                     "band", band, "flag", m->flag, "flag_name", mo_flag_name(m->flag), "warnings",
                     warn ? warn : json_array(), "reason", m->reason, "statistics", stats ? stats : json_object(),
                     "smooth_k", m->smooth_k, "skybox_size", m->skybox_size, "num_badpixels", m->num_badpixels,
                     "asym_nfev", m->asym_nfev, "image", "width", im->w, "height", im->h, "bands",
                     im->replicated ? 1 : 3);
}

json_t *srv_morph_json(srv_req *r, const void *img, size_t n, const char *band_text, int *http, const char **code,
                       gx_err *err) {
    int band = mo_band(band_text);
    if (band == -2) {
        *http = 400, *code = "bad_field";
        gx_err_set(err, GX_ERR_INVALID, "field 'band': '%.32s' is not mean, g, r, z, 0, 1 or 2", band_text);
        return NULL;
    }
    gx_image im;
    gx_status s = gx_image_decode(img, n, &r->srv->limits, NULL, &im, err);
    if (s != GX_OK) {
        *http = gx_server_status_map(s, GX_STAGE_DECODE, code);
        return NULL;
    }
    size_t px = (size_t)im.h * im.w;
    float *x = malloc(px * sizeof *x);
    uint8_t *mask = malloc(px);
    json_t *o = NULL;
    int any_bad = 0;
    for (size_t i = 0; mask && im.mask && i < px; i++) any_bad |= (mask[i] = !im.mask[i]);
    gx_morph_result m;
    if (!x || !mask || !mo_image(&im, band, x)) s = gx_err_set(err, GX_ERR_NOMEM, "morphology: out of memory");
    if (s == GX_OK) s = gx_morph_measure_auto(x, any_bad ? mask : NULL, im.h, im.w, NULL, &m, NULL, err);
    if (s == GX_OK) o = mo_result_json(&m, &im, band < 0 ? "mean" : (const char *[]){ "g", "r", "z" }[band]);
    if (s == GX_OK && !o) s = gx_err_set(err, GX_ERR_NOMEM, "morphology: out of memory");
    if (s != GX_OK) *http = s == GX_ERR_NOMEM ? 500 : 422, *code = s == GX_ERR_NOMEM ? "internal" : "undecodable_image";
    free(x);
    free(mask);
    gx_image_free(&im);
    return o;
}

/* The route's own field. */
typedef struct mo_args { char band[16]; } mo_args;

static int mo_extra(void *ctx, srv_fields *f, const char *name, const char *v, size_t n) {
    mo_args *a = ctx;
    (void)name;
    if (n == 0 || n >= sizeof a->band || memchr(v, 0, n)) {
        char m[120];
        snprintf(m, sizeof m, "field 'band': '%.*s' is not mean, g, r, z, 0, 1 or 2", (int)(n < 32 ? n : 32), v);
        srv_field_fail(f, m);
    } else {
        memcpy(a->band, v, n), a->band[n] = 0;
    }
    return 1;
}

static const char *const mo_fields[] = { "band", NULL };

enum MHD_Result srv_morph_dispatch(srv_req *r) {
    mo_args a;
    memset(&a, 0, sizeof a);
    const srv_input_spec spec = { 1, NULL, mo_fields, mo_extra, &a };
    srv_input in;
    enum MHD_Result q = srv_input_read(r, &spec, &in);
    if (r->answered) return q;
    int http = 500;
    const char *code = "internal";
    gx_err err = { { 0 } };
    json_t *o = srv_morph_json(r, in.img[0], in.len[0], a.band[0] ? a.band : NULL, &http, &code, &err);
    if (!o) return srv_error(r, http, code, "%s", err.msg);
    json_object_set_new(o, "request_id", json_string(r->id));
    if (in.f.object_id[0]) json_object_set_new(o, "object_id", json_string(in.f.object_id));
    return srv_json(r, 200, o);
}
