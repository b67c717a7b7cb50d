/*
 * test_model_rn18.c — the ResNet-18 baseline: WaveletMamba with backbone
 * RESNET18 (models/resnet18.c + the [resnet18] lines of
 * models/wavelet_mamba.c) against tests/models/wm_ref.py, plus its parameter
 * count, names, init, serving properties and checkpoint config.
 *
 * Fixtures (tiny config, trunk base width 8, batch 3, 45x45: odd sizes reach
 * every padding edge, and layer4 still has 2x2 pixels per sample for its
 * training-mode BN): tests/fixtures/wm_rn18.safetensors holds the tensors
 * the wavelet model lacks (fe.resnet.*, fe.resnet_proj.*,
 * shared_feature_projection.*); every other tensor comes from
 * wm_tiny.safetensors (the generator copies them from that file).
 * wm_rn18_io.safetensors: inputs, eval and training outputs, updated running
 * statistics and gradients, in the layout of wm_tiny_io (see
 * test_model_wm.c, whose gradient comparison this file repeats: those
 * helpers are static there).
 *
 * Tolerances: as test_model_wm.c (outputs 1e-4, gradients 3e-3 relative
 * L2): the f32 engine against a float64 reference, with the same batch-3
 * batch norm in the classification head dominating the error.
 */
#include "gx_test.h"
#include "test_wm_util.h"
#include "gx_wavelet_mamba.h"
#include "gx_train_wm.h"
#include <stdlib.h>
#include <string.h>

static gx_wm_config rn_config(int64_t width) {
    gx_wm_config c = gx_wm_config_tiny();
    c.backbone = GX_WM_BACKBONE_RESNET18;
    c.resnet_width = width;
    return c;
}

/* ------------------------------------------------------------ parameters */

GX_TEST(rn18_param_count_names_and_init) {
    gx_wm_config c = gx_wm_config_default();
    c.backbone = GX_WM_BACKBONE_RESNET18;
    gx_wm_model m;
    gx_wm_init(&m, c, 1);
    int64_t n = gx_params_count(&m.params, 0), trunk = 0;
    for (int i = 0; i < m.params.n; i++) {
        const gx_param *p = m.params.items[i];
        CHECK_MSG(strncmp(p->name, "feature_extractor.wavelet_encoder.", 34) != 0,
                  "wavelet tensor %s registered with the resnet18 backbone", p->name);
        if (!strncmp(p->name, "feature_extractor.resnet.", 25) && !(p->flags & GX_PARAM_BUFFER))
            trunk += p->t.numel;
    }
    printf("  wavelet-mamba backbone=resnet18: %lld parameters (trunk %lld)\n", (long long)n,
           (long long)trunk);
    CHECK(trunk == 11176512);            /* torchvision resnet18 without fc */
    CHECK(n == 12419606);                /* the PyTorch reference's count */
    /* torchvision names and shapes. */
    gx_param *p = gx_params_find(&m.params, "feature_extractor.resnet.conv1.weight");
    CHECK(p && p->t.shape[0] == 64 && p->t.shape[1] == 3 && p->t.shape[2] == 7 &&
          (p->flags & GX_PARAM_DECAY));
    if (p) {                             /* kaiming normal, fan_out: std sqrt(2/(64*49)) */
        double ss = 0;
        for (int64_t i = 0; i < p->t.numel; i++) ss += (double)p->t.data[i] * p->t.data[i];
        double sd = sqrt(ss / (double)p->t.numel), want = sqrt(2.0 / (64 * 49));
        CHECK_MSG(fabs(sd - want) < 0.05 * want, "conv1 init std %.5f, want %.5f", sd, want);
    }
    p = gx_params_find(&m.params, "feature_extractor.resnet.layer2.0.downsample.0.weight");
    CHECK(p && p->t.shape[0] == 128 && p->t.shape[1] == 64 && p->t.shape[2] == 1);
    p = gx_params_find(&m.params, "feature_extractor.resnet.layer4.0.downsample.1.running_var");
    CHECK(p && (p->flags & GX_PARAM_BUFFER) && p->t.shape[0] == 512 && p->t.data[0] == 1);
    p = gx_params_find(&m.params, "feature_extractor.resnet.layer4.1.bn2.weight");
    CHECK(p && !(p->flags & GX_PARAM_DECAY) && p->t.data[0] == 1);
    CHECK(gx_params_find(&m.params, "feature_extractor.resnet.layer1.0.downsample.0.weight") == NULL);
    CHECK(gx_params_find(&m.params, "feature_extractor.resnet.fc.weight") == NULL);
    p = gx_params_find(&m.params, "feature_extractor.resnet_proj.weight");
    CHECK(p && p->t.shape[0] == 256 && p->t.shape[1] == 512);
    p = gx_params_find(&m.params, "feature_extractor.morphology_analyzer.shared_feature_projection.weight");
    CHECK(p && p->t.shape[0] == 256 && p->t.shape[1] == 512);
    gx_wm_free(&m);
}

/* -------------------------------------------------------- PyTorch parity */

/* Every registered tensor from `own` (the baseline's own tensors) or else
 * `shared` (wm_tiny); every tensor of `own` must be used. Returns 1 on success. */
static int load_two(gx_test_state *T, gx_wm_model *m, const gx_st_file *own,
                    const gx_st_file *shared) {
    int used = 0, ok = 1;
    for (int i = 0; i < m->params.n && ok; i++) {
        gx_param *p = m->params.items[i];
        const gx_st_tensor *st = gx_st_find(own, p->name);
        if (st) used++;
        else st = gx_st_find(shared, p->name);
        gx_err err;
        gx_status s = gx_st_check_compatible(st, &p->t, p->name, &err);
        if (s == GX_OK) s = gx_st_to_real(st, p->t.data, p->t.numel, &err);
        CHECK_MSG(s == GX_OK, "load %s: %s", p->name, err.msg);
        ok = s == GX_OK;
    }
    CHECK_MSG(!ok || used == own->n, "wm_rn18.safetensors: %d of %d tensors used", used, own->n);
    return ok && used == own->n;
}

static void parity_outputs(gx_test_state *T, const gx_st_file *f, const char *mode,
                           const gx_wm_out *o) {
    gx_fixture_checkf(T, f, o->logits->data, o->logits->numel, OUT_ATOL, OUT_RTOL, "%s.logits", mode);
    gx_fixture_checkf(T, f, o->redshift->data, o->redshift->numel, OUT_ATOL, OUT_RTOL, "%s.redshift", mode);
    gx_fixture_checkf(T, f, o->mu->data, o->mu->numel, OUT_ATOL, OUT_RTOL, "%s.mu", mode);
    gx_fixture_checkf(T, f, o->logvar->data, o->logvar->numel, OUT_ATOL, OUT_RTOL, "%s.logvar", mode);
    gx_fixture_checkf(T, f, o->c4->data, o->c4->numel, OUT_ATOL, OUT_RTOL, "%s.c4", mode);
}

GX_TEST(rn18_parity_eval_train_and_gradients) {
    gx_st_file own, shared, f;
    if (!gx_fixture_open(T, &own, "wm_rn18.safetensors")) return;
    if (!gx_fixture_open(T, &shared, "wm_tiny.safetensors")) { gx_st_close(&own); return; }
    if (!gx_fixture_open(T, &f, "wm_rn18_io.safetensors")) {
        gx_st_close(&own); gx_st_close(&shared); return;
    }
    gx_wm_model m;
    gx_wm_init(&m, rn_config(8), 7);
    int loaded = load_two(T, &m, &own, &shared);
    gx_st_close(&own);
    gx_st_close(&shared);
    gx_ctx ctx;
    gx_ctx_init(&ctx, 64 << 20);
    gx_tensor *x = loaded ? gx_fixture_tensor(T, &ctx, &f, "in.x") : NULL;
    gx_tensor *coords = loaded ? gx_fixture_tensor(T, &ctx, &f, "in.coords") : NULL;
    if (!x || !coords) goto done;

    gx_wm_out o = gx_wm_forward(&ctx, &m, x, coords, 0);
    parity_outputs(T, &f, "eval", &o);

    m.vib_sample = 0;
    m.coord_dropout = 0;
    ctx.grad_enabled = 1;
    x->requires_grad = 1;
    gx_params_zero_grad(&m.params);
    o = gx_wm_forward(&ctx, &m, x, coords, 1);
    parity_outputs(T, &f, "train", &o);
    gx_tensor *R1 = gx_fixture_tensor(T, &ctx, &f, "train.R1");
    gx_tensor *R2 = gx_fixture_tensor(T, &ctx, &f, "train.R2");
    gx_tensor *R3 = gx_fixture_tensor(T, &ctx, &f, "train.R3");
    if (!R1 || !R2 || !R3) goto done;
    gx_tensor *L = gx_add(&ctx, gx_add(&ctx, dot(&ctx, o.logits, R1), dot(&ctx, o.redshift, R2)),
                          dot(&ctx, o.logvar, R3));
    gx_backward(&ctx, L, NULL);
    CHECK(x->grad != NULL);
    gx_tensor *gref = gx_fixture_tensor(T, &ctx, &f, "grad.in.x");
    if (x->grad && gref) check_full(T, "input x", x->grad, gref->data, x->numel);
    int checked = 0, bufs = 0;
    for (int i = 0; i < m.params.n; i++) {
        gx_param *p = m.params.items[i];
        char key[256];
        if (p->flags & GX_PARAM_BUFFER) {
            snprintf(key, sizeof key, "train.buf.%s", p->name);
            if (gx_st_find(&f, key)) {
                gx_fixture_check(T, &f, key, p->t.data, p->t.numel, OUT_ATOL, OUT_RTOL);
                bufs++;
            }
            continue;
        }
        check_param_grad(T, &f, &ctx, p);
        checked++;
    }
    printf("  checked %d parameter gradients, %d running statistics and the input gradient\n",
           checked, bufs);
    CHECK(bufs == 2 * (1 + 16 + 3) + 2 * 3);   /* trunk BNs (stem, 8 blocks x 2, 3 downsamples) + heads */
done:
    gx_ctx_free(&ctx);
    gx_wm_free(&m);
    gx_st_close(&f);
}

/* ------------------------------------------------------ serving properties */

/* Eval outputs of one image alone equal its row in a batch of 5, at two sizes. */
GX_TEST(rn18_eval_per_sample_determinism_and_sizes) {
    gx_wm_model m;
    gx_wm_init(&m, rn_config(8), 21);
    gx_ctx ctx;
    gx_ctx_init(&ctx, 32 << 20);
    const int sizes[2] = { 32, 51 };
    for (int si = 0; si < 2; si++) {
        int s = sizes[si];
        int64_t per = 3 * (int64_t)s * s;
        gx_tensor *x = gx_tensor_new(&ctx, 4, GX_SHAPE(5, 3, s, s));
        fill_images(x, 40 + si);
        gx_wm_out big = gx_wm_forward(&ctx, &m, x, NULL, 0);
        for (int b = 0; b < 5; b += 2) {
            gx_tensor *x1 = gx_tensor_from(&ctx, 4, GX_SHAPE(1, 3, s, s), x->data + b * per);
            gx_wm_out one = gx_wm_forward(&ctx, &m, x1, NULL, 0);
            gx_test_allclose(T, "logits 1 vs 5", one.logits->data, big.logits->data + 10 * b, 10, 1e-6, 1e-6);
            gx_test_allclose(T, "redshift 1 vs 5", one.redshift->data, big.redshift->data + b, 1, 1e-6, 1e-6);
        }
        gx_wm_out tr = gx_wm_forward(&ctx, &m, x, NULL, 1);
        int finite = 1;
        for (int k = 0; k < 50; k++) finite &= isfinite(tr.logits->data[k]);
        CHECK_MSG(finite && tr.w->shape[1] == 256, "training forward at %dx%d", s, s);
        gx_ctx_reset(&ctx);
    }
    gx_ctx_free(&ctx);
    gx_wm_free(&m);
}

/* ------------------------------------------------ trainer config and checkpoint */

GX_TEST(rn18_set_backbone_option) {
    gx_train_wm_opts o;
    gx_err err;
    CHECK(gx_train_wm_opts_default(&o, "tiny", &err) == GX_OK);
    CHECK(o.model.backbone == GX_WM_BACKBONE_WAVELET && o.model.resnet_width == 64);
    CHECK(gx_train_wm_set(&o, "backbone", "resnet18", &err) == GX_OK);
    CHECK(o.model.backbone == GX_WM_BACKBONE_RESNET18);
    CHECK(gx_train_wm_set(&o, "resnet_width", "16", &err) == GX_OK && o.model.resnet_width == 16);
    CHECK(gx_train_wm_set(&o, "backbone", "vgg16", &err) == GX_ERR_INVALID);
    CHECK(strstr(err.msg, "backbone") != NULL);
    CHECK(gx_train_wm_set(&o, "backbone", "wavelet", &err) == GX_OK);
    CHECK(o.model.backbone == GX_WM_BACKBONE_WAVELET);
}

/* Serialises m as a checkpoint with the given config JSON and loads it back. */
static gx_status ckpt_roundtrip(gx_wm_model *m, const char *config, gx_wm_model *out, gx_err *err) {
    gx_st_writer w;
    gx_st_writer_init(&w);
    uint8_t *buf = NULL;
    size_t len = 0;
    gx_status s = gx_params_to_writer(&m->params, &w, err);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "format", "galaxyd-checkpoint-1", err);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "model", "wavelet-mamba", err);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "config", config, err);
    if (s == GX_OK) s = gx_st_writer_serialize(&w, &buf, &len, err);
    gx_st_writer_free(&w);
    gx_st_file f;
    if (s == GX_OK) s = gx_st_parse(&f, buf, len, err);
    if (s == GX_OK) {
        s = gx_wm_checkpoint_load(&f, out, err);
        gx_st_close(&f);
    }
    free(buf);
    return s;
}

#define CFG_TINY "\"c1\":8,\"c2\":16,\"classes\":10,\"d_conv\":4,\"d_model\":16,\"d_state\":4," \
                 "\"delta_mode\":\"mean\",\"dt_rank\":4,\"expand\":2,\"fusion\":32,\"grid\":4,\"size\":32"

GX_TEST(rn18_checkpoint_config_roundtrip) {
    gx_wm_model m, back;
    gx_err err;
    gx_wm_init(&m, rn_config(8), 31);
    gx_status s = ckpt_roundtrip(&m, "{" CFG_TINY ",\"backbone\":\"resnet18\",\"resnet_width\":8}",
                                 &back, &err);
    CHECK_MSG(s == GX_OK, "load: %s", err.msg);
    if (s == GX_OK) {
        CHECK(back.cfg.backbone == GX_WM_BACKBONE_RESNET18 && back.cfg.resnet_width == 8);
        gx_ctx ctx;
        gx_ctx_init(&ctx, 16 << 20);
        gx_tensor *x = gx_tensor_new(&ctx, 4, GX_SHAPE(2, 3, 32, 32));
        fill_images(x, 50);
        gx_wm_out a = gx_wm_forward(&ctx, &m, x, NULL, 0), b = gx_wm_forward(&ctx, &back, x, NULL, 0);
        gx_test_allclose(T, "reloaded logits", b.logits->data, a.logits->data, 20, 0, 0);
        gx_ctx_free(&ctx);
        gx_wm_free(&back);
    }
    /* A resnet checkpoint whose config says wavelet is refused, naming a tensor. */
    s = ckpt_roundtrip(&m, "{" CFG_TINY "}", &back, &err);
    CHECK(s != GX_OK);
    CHECK(ckpt_roundtrip(&m, "{" CFG_TINY ",\"backbone\":\"vgg\"}", &back, &err) == GX_ERR_FORMAT);
    CHECK(strstr(err.msg, "backbone") != NULL);
    CHECK(ckpt_roundtrip(&m, "{" CFG_TINY ",\"backbone\":\"resnet18\",\"resnet_width\":0}",
                         &back, &err) == GX_ERR_FORMAT);
    CHECK(strstr(err.msg, "resnet_width") != NULL);
    gx_wm_free(&m);

    /* Checkpoints from before the baseline (no backbone key) load as wavelet models. */
    gx_wm_init(&m, gx_wm_config_tiny(), 32);
    s = ckpt_roundtrip(&m, "{" CFG_TINY "}", &back, &err);
    CHECK_MSG(s == GX_OK, "old config: %s", err.msg);
    if (s == GX_OK) {
        CHECK(back.cfg.backbone == GX_WM_BACKBONE_WAVELET && back.cfg.resnet_width == 64);
        gx_wm_free(&back);
    }
    gx_wm_free(&m);
}
