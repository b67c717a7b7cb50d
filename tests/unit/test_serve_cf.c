/*
 * test_serve_cf.c — the "cf-inn" serving kind (daemon/gx_serve_cf.c): a
 * tiny CF-INN saved with gx_cf_save loads through gx_serve_model_load as
 * kind cf-inn, and predict answers what the model's own gx_cf_classify
 * answers (probabilities, NLL as the score, the class as argmax of the
 * logits g), NaN redshift, rows independent of their batch; an input of
 * another side is resized, not refused.
 */
#include "gx_test.h"

#include "gx_cf_inn.h"
#include "gx_serve_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A tiny model with m-hat, saved to dir/cf.safetensors (path into out). */
static int tcf_save(char *dir, size_t dn, char *out, size_t on, gx_cf_model *m, float **x, int n) {
    snprintf(dir, dn, "/tmp/gx_test_servecf_XXXXXX");
    if (!mkdtemp(dir)) return 0;
    snprintf(out, on, "%s/cf.safetensors", dir);
    gx_cf_config cfg = gx_cf_config_tiny();
    cfg.classes = 4;
    gx_cf_init(m, cfg, 77);
    int64_t px = 3 * cfg.size * cfg.size;
    *x = malloc((size_t)(n * px) * sizeof **x);
    gx_rng rng;
    gx_rng_init(&rng, 5);
    for (int64_t i = 0; i < n * px; i++) (*x)[i] = (float)gx_rng_uniform(&rng);
    gx_ctx ctx;
    gx_ctx_init(&ctx, 0);
    gx_err err;
    int ok = gx_cf_compute_mhat(&ctx, m, *x, n, &err) == GX_OK;
    gx_ctx_free(&ctx);
    gx_cf_meta meta;
    memset(&meta, 0, sizeof meta);
    snprintf(meta.classes_json, sizeof meta.classes_json, "[\"a\", \"b\", \"c\", \"d\"]");
    snprintf(meta.test_metrics_json, sizeof meta.test_metrics_json, "{}");
    meta.crop_frac = 1.0;
    meta.run_id = -1;
    if (ok && gx_cf_save(m, &meta, out, &err) != GX_OK) { printf("save: %s\n", err.msg); ok = 0; }
    return ok;
}

GX_TEST(serve_cf_kind_matches_classify) {
    char dir[64], path[128];
    gx_cf_model m;
    float *x = NULL;
    enum { N = 5 };
    CHECK(tcf_save(dir, sizeof dir, path, sizeof path, &m, &x, N));
    gx_err err;
    gx_serve_model *sm = NULL;
    CHECK(gx_serve_model_load(&sm, path, NULL, &err) == GX_OK);
    if (!sm) { printf("load: %s\n", err.msg); gx_cf_free(&m); free(x); return; }
    const gx_serve_info *in = gx_serve_model_info(sm);
    CHECK(!strcmp(in->kind, "cf-inn") && in->n_classes == 4 && in->input_size == 32);
    CHECK(!strcmp(in->class_names[2], "c") && isnan(in->anomaly_threshold));
    /* the model's own classification */
    int64_t pred[N];
    float probs[N * 4], nll[N];
    gx_ctx ctx;
    gx_ctx_init(&ctx, 0);
    CHECK(gx_cf_classify(&ctx, &m, x, N, pred, probs, nll, NULL, &err) == GX_OK);
    gx_ctx_free(&ctx);
    float lg[N * 4], pr[N * 4], z[N], sc[N];
    gx_serve_out out = { lg, pr, z, sc };
    CHECK(gx_serve_model_predict(sm, x, 32, NULL, N, &out, &err) == GX_OK);
    for (int i = 0; i < N; i++) {
        int best = 0;
        for (int k = 1; k < 4; k++)
            if (lg[i * 4 + k] > lg[i * 4 + best]) best = k;
        CHECK(best == pred[i]);
        for (int k = 0; k < 4; k++) CHECK_NEAR(pr[i * 4 + k], probs[i * 4 + k], 1e-5);
        CHECK_NEAR(sc[i], nll[i], 1e-3 * (1 + fabs(nll[i])));
        CHECK(isnan(z[i]));
    }
    /* one row alone answers what it answered in the batch */
    float lg1[4], pr1[4], z1, sc1;
    gx_serve_out o1 = { lg1, pr1, &z1, &sc1 };
    CHECK(gx_serve_model_predict(sm, x + 3 * 3 * 32 * 32, 32, NULL, 1, &o1, &err) == GX_OK);
    for (int k = 0; k < 4; k++) CHECK(lg1[k] == lg[3 * 4 + k]);
    CHECK(sc1 == sc[3]);
    /* another side is resampled to 32 (finite answers, probabilities sum to 1) */
    float *x16 = calloc(3 * 16 * 16, sizeof *x16);
    for (int i = 0; x16 && i < 3 * 16 * 16; i++) x16[i] = (float)(i % 7) / 7.0f;
    CHECK(x16 && gx_serve_model_predict(sm, x16, 16, NULL, 1, &o1, &err) == GX_OK);
    CHECK(isfinite(sc1) && fabs(pr1[0] + pr1[1] + pr1[2] + pr1[3] - 1) < 1e-4);
    free(x16);
    gx_serve_model_free(sm);
    gx_cf_free(&m);
    free(x);
    unlink(path);
    rmdir(dir);
}
