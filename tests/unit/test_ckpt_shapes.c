/*
 * test_ckpt_shapes.c — shapes-only parameter registries (gx_params_init_shapes,
 * gx_{wm,cf,uda}_init_shapes) and the checkpoint loaders' check that a file
 * holds what its config describes before the model is allocated.
 *
 * Why: the loaders used to initialise the model from the file's config and
 * only then look for its tensors. A header-only file of a few hundred bytes
 * whose config asks for the widest model the bounds allow made galaxy-train
 * abort (CF-INN: a terabyte calloc) or allocate and initialise 11 GB for
 * 100 s before refusing it (WaveletMamba with a ResNet-18 of width 1024).
 */
#include "gx_test.h"
#include "gx.h"
#include "gx_cf_inn.h"
#include "gx_safetensors.h"
#include "gx_train_wm.h"
#include "gx_uda.h"
#include "gx_wavelet_mamba.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* b (shapes only) lists the same tensors as a (a real init), in the same
 * order, with the same shapes, flags and groups; b's large tensors have no
 * memory and none of its tensors a gradient. */
static void same_registry(gx_test_state *T, const char *label, const gx_params *a, const gx_params *b) {
    CHECK_MSG(a->n == b->n && a->n > 0, "%s: %d tensors against %d", label, a->n, b->n);
    for (int i = 0; i < a->n && i < b->n; i++) {
        const gx_param *p = a->items[i], *q = b->items[i];
        int same = !strcmp(p->name, q->name) && p->t.ndim == q->t.ndim && p->flags == q->flags &&
                   p->group == q->group && p->t.numel == q->t.numel &&
                   !memcmp(p->t.shape, q->t.shape, (size_t)p->t.ndim * sizeof p->t.shape[0]);
        CHECK_MSG(same, "%s: tensor %d: %s against %s", label, i, p->name, q->name);
        CHECK_MSG((q->t.data == NULL) == (q->t.numel > GX_PARAMS_SHAPE_SMALL) && q->t.grad == NULL,
                  "%s: %s: memory of a shapes-only tensor", label, q->name);
    }
    CHECK(b->shape_only && !a->shape_only);
}

GX_TEST(ckpt_shapes_match_the_models_init) {
    gx_wm_config wm[3] = { gx_wm_config_tiny(), gx_wm_config_default(), gx_wm_config_tiny() };
    wm[2].backbone = GX_WM_BACKBONE_RESNET18;
    wm[2].resnet_width = 8;
    for (int i = 0; i < 3; i++) {
        gx_wm_model a, b;
        gx_wm_init(&a, wm[i], 7);
        gx_wm_init_shapes(&b, wm[i]);
        same_registry(T, "wavelet-mamba", &a.params, &b.params);
        gx_wm_free(&a);
        gx_wm_free(&b);
    }
    gx_cf_config cf[2] = { gx_cf_config_tiny(), gx_cf_config_default() };
    for (int i = 0; i < 2; i++) {
        gx_cf_model a, b;
        gx_cf_init(&a, cf[i], 7);
        gx_cf_init_shapes(&b, cf[i]);
        same_registry(T, "cf-inn", &a.params, &b.params);
        gx_cf_free(&a);
        gx_cf_free(&b);
    }
    gx_uda_config uda[3] = { gx_uda_config_tiny(), gx_uda_config_resnet18(), gx_uda_config_resnet50() };
    for (int i = 0; i < 3; i++) {
        gx_uda_model a, b;
        gx_uda_init(&a, uda[i], 7);
        gx_uda_init_shapes(&b, uda[i]);
        same_registry(T, "uda", &a.params, &b.params);
        gx_uda_free(&a);
        gx_uda_free(&b);
    }
}

/* Elements a registry describes and bytes it really holds. */
static void registry_size(const gx_params *p, double *numel, double *bytes) {
    *numel = *bytes = 0;
    for (int i = 0; i < p->n; i++) {
        *numel += (double)p->items[i]->t.numel;
        if (p->items[i]->t.data) *bytes += (double)p->items[i]->t.numel * sizeof(gx_real);
    }
}

/* The widest configs the checkpoint parsers accept. */
static const char *const wm_huge =
    "{\"size\":1024,\"c1\":1024,\"c2\":1024,\"d_model\":1024,\"d_state\":256,\"d_conv\":16,\"expand\":8,"
    "\"dt_rank\":1024,\"grid\":64,\"fusion\":1024,\"classes\":1024,\"backbone\":\"resnet18\",\"resnet_width\":1024}";

static gx_cf_config cf_huge(void) {
    gx_cf_config c = gx_cf_config_default();
    c.size = 1024;
    c.d = 4096;
    c.d1 = 256;
    for (int i = 0; i < 4; i++) c.enc_ch[i] = c.dec_ch[i] = 4096;
    c.hidden = c.subnet = 16384;
    c.classes = GX_CF_MAX_CLASSES;
    return c;
}

static gx_uda_config uda_huge(void) {
    gx_uda_config c = gx_uda_config_resnet50();
    c.size = 1024;
    c.classes = GX_UDA_MAX_CLASSES;
    return c;
}

GX_TEST(ckpt_shapes_of_the_widest_configs_allocate_little) {
    double numel, bytes;
    gx_cf_model cf;
    gx_cf_init_shapes(&cf, cf_huge());
    registry_size(&cf.params, &numel, &bytes);
    CHECK_MSG(numel > 1e11 && bytes < 64e6, "cf-inn: %.3g elements, %.3g bytes held", numel, bytes);
    gx_cf_free(&cf);
    gx_uda_model u;
    gx_uda_init_shapes(&u, uda_huge());
    registry_size(&u.params, &numel, &bytes);
    CHECK_MSG(numel > 2e7 && bytes < 64e6, "uda: %.3g elements, %.3g bytes held", numel, bytes);
    gx_uda_free(&u);
    gx_wm_config w = gx_wm_config_default();
    w.backbone = GX_WM_BACKBONE_RESNET18;
    w.resnet_width = 1024;
    w.d_model = w.c1 = w.c2 = w.fusion = w.dt_rank = w.classes = 1024;
    w.expand = 8;
    w.d_state = 256;
    gx_wm_model m;
    gx_wm_init_shapes(&m, w);
    registry_size(&m.params, &numel, &bytes);
    CHECK_MSG(numel > 1e9 && bytes < 64e6, "wavelet-mamba: %.3g elements, %.3g bytes held", numel, bytes);
    gx_wm_free(&m);
}

/* A checkpoint of metadata only: format, model kind, config. */
static void header_only(gx_test_state *T, const char *model, const char *config, uint8_t **buf, size_t *len,
                        gx_st_file *f) {
    gx_st_writer w;
    gx_st_writer_init(&w);
    gx_err err;
    CHECK(gx_st_writer_meta(&w, "format", "galaxyd-checkpoint-1", &err) == GX_OK);
    CHECK(gx_st_writer_meta(&w, "model", model, &err) == GX_OK);
    CHECK(gx_st_writer_meta(&w, "config", config, &err) == GX_OK);
    CHECK(gx_st_writer_serialize(&w, buf, len, &err) == GX_OK);
    CHECK(gx_st_parse(f, *buf, *len, &err) == GX_OK);
    gx_st_writer_free(&w);
}

/* The loader's answer to a header-only file: refused for a missing tensor,
 * nothing left registered; then the file and its buffer are released. */
static void refused(gx_test_state *T, const char *what, gx_status s, const gx_err *err, int n_params,
                    gx_st_file *f, uint8_t *buf) {
    CHECK_MSG(s == GX_ERR_NOTFOUND && strstr(err->msg, "lacks tensor"), "%s: %s", what, err->msg);
    CHECK_MSG(n_params == 0, "%s: %d tensors left registered", what, n_params);
    gx_st_close(f);
    free(buf);
}

GX_TEST(ckpt_a_small_file_with_a_huge_config_is_refused_before_allocation) {
    uint8_t *buf;
    size_t len;
    gx_st_file f;
    gx_err err = {{0}};
    header_only(T, "wavelet-mamba", wm_huge, &buf, &len, &f);
    gx_wm_model m;
    gx_status s = gx_wm_checkpoint_load(&f, &m, &err);
    refused(T, "wavelet-mamba", s, &err, m.params.n, &f, buf);

    gx_cf_config c = cf_huge();
    char *cj = gx_cf_config_json(&c);
    header_only(T, "cf-inn", cj, &buf, &len, &f);
    gx_cf_model cm;
    err.msg[0] = 0;
    s = gx_cf_load(&f, &cm, NULL, &err);
    refused(T, "cf-inn", s, &err, cm.params.n, &f, buf);
    free(cj);

    gx_uda_config u = uda_huge();
    char *uj = gx_uda_config_json(&u);
    header_only(T, "uda", uj, &buf, &len, &f);
    gx_uda_model um;
    err.msg[0] = 0;
    s = gx_uda_load(&f, &um, NULL, &err);
    refused(T, "uda", s, &err, um.params.n, &f, buf);
    free(uj);
}
