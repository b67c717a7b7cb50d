/*
 * dispatch_serve.c — galaxyd's models on the device: each bundled
 * checkpoint loaded for the CPU and for the device (gx_serve_model_load_on,
 * what `galaxyd --device cuda` does per model), the same preprocessed rows
 * predicted by both (the batcher's call, in chunks), and the answers
 * compared. Also the CF-INN routes' own path: counterfactuals on the
 * model's device ctx.
 */
#include "dispatch_util.h"

#include "gx_cf_inn.h"
#include "gx_serve_model.h"
#include "gx_uda.h"
#include "gx_wavelet_mamba.h"
#include <stdlib.h>
#include <string.h>

typedef struct { float *logits, *probs, *redshift, *score; } serve_rows;

/* n rows of side S (coords, domain: NULL or per row) through m's predict
 * into freshly allocated rows r. */
static void serve_predict_ex(gx_test_state *T, gx_serve_model *m, const float *x, int64_t S, const float *coords,
                             const int8_t *domain, int n, serve_rows *r) {
    const gx_serve_info *in = gx_serve_model_info(m);
    int64_t K = in->n_classes;
    r->logits = malloc((size_t)(n * K) * sizeof(float));
    r->probs = malloc((size_t)(n * K) * sizeof(float));
    r->redshift = malloc((size_t)n * sizeof(float));
    r->score = malloc((size_t)n * sizeof(float));
    gx_serve_out o = { r->logits, r->probs, r->redshift, r->score };
    gx_err err;
    CHECK_MSG(gx_serve_model_predict_ex(m, x, S, coords, domain, n, &o, &err) == GX_OK, "%s: %s", in->name, err.msg);
}

static void serve_predict(gx_test_state *T, gx_serve_model *m, const float *x, int n, serve_rows *r) {
    serve_predict_ex(T, m, x, gx_serve_model_info(m)->input_size, NULL, NULL, n, r);
}

/* count uniform values in [0, 1) (malloc'd). */
static float *serve_random(gx_rng *rng, int64_t count) {
    float *x = malloc((size_t)count * sizeof *x);
    for (int64_t i = 0; i < count; i++) x[i] = (float)gx_rng_uniform(rng);
    return x;
}

static void serve_rows_free(serve_rows *r) {
    free(r->logits); free(r->probs); free(r->redshift); free(r->score);
}

/* A served model only runs forward: its parameters carry no gradient
 * buffers (gx_params_drop_grads), and what the load placed on the device is
 * exactly one pool block per tensor. */
static void serve_check_no_grads(gx_test_state *T, gx_serve_model *m, size_t placed) {
    const gx_serve_info *in = gx_serve_model_info(m);
    void *impl = gx_serve_model_impl(m);
    const gx_params *p = !strcmp(in->kind, "wavelet-mamba") ? &((gx_wm_model *)impl)->params
                       : !strcmp(in->kind, "uda")           ? &((gx_uda_model *)impl)->params
                                                            : &((gx_cf_model *)impl)->params;
    /* The CF-INN also places its constants (the permutation matrices). */
    const gx_params *c = !strcmp(in->kind, "cf-inn") ? &((gx_cf_model *)impl)->consts : NULL;
    size_t want = 0;
    for (const gx_params *q = p; q; q = q == p ? c : NULL)
        for (int i = 0; i < q->n; i++) {
            const gx_tensor *t = &q->items[i]->t;
            CHECK_MSG(t->grad == NULL && !t->requires_grad, "%s: %s has a gradient buffer", in->name,
                      q->items[i]->name);
            want += gx_cuda_pool_block_bytes((size_t)t->numel * sizeof(float));
        }
    CHECK_MSG(placed == want, "%s: %zu bytes placed on the device, %zu for the parameters alone", in->name,
              placed, want);
}

GX_TEST(dispatch_serve_bundled_models) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    static const char *const paths[] = { "models/default/wavelet-mamba.safetensors",
                                         "models/default/uda.safetensors",
                                         "models/default/cf-inn.safetensors" };
    gx_serve_device dev = { g.pool, 0, 0, 0 };   /* eager: dispatch_serve_wm_graphs tests graphs */
    gx_gpu_tol tol = GX_GPU_TOL_MODEL;
    for (size_t p = 0; p < sizeof paths / sizeof *paths; p++) {
        gx_serve_model *mc = NULL, *md = NULL;
        gx_err err;
        CHECK_MSG(gx_serve_model_load(&mc, paths[p], NULL, &err) == GX_OK, "%s", err.msg);
        size_t before = gx_cuda_pool_in_use(g.pool);
        CHECK_MSG(gx_serve_model_load_on(&md, paths[p], NULL, &dev, &err) == GX_OK, "%s", err.msg);
        if (!mc || !md) { gx_serve_model_free(mc); gx_serve_model_free(md); continue; }
        serve_check_no_grads(T, md, gx_cuda_pool_in_use(g.pool) - before);
        const gx_serve_info *ic = gx_serve_model_info(mc), *id = gx_serve_model_info(md);
        CHECK_MSG(!strcmp(ic->device, "cpu") && !strcmp(id->device, "cuda:0"), "%s: devices %s / %s", ic->name,
                  ic->device, id->device);
        const int n = 33;                        /* more than one predict chunk (32) */
        int64_t S = ic->input_size, K = ic->n_classes;
        float *x = malloc((size_t)(n * 3 * S * S) * sizeof(float));
        gx_rng rng;
        gx_rng_init(&rng, 40 + p);
        for (int64_t i = 0; i < n * 3 * S * S; i++) x[i] = (float)gx_rng_uniform(&rng);
        serve_rows rc, rd;
        serve_predict(T, mc, x, n, &rc);
        serve_predict(T, md, x, n, &rd);
        char what[160];
        snprintf(what, sizeof what, "%s logits", ic->kind);
        gx_test_allclose_f(T, what, (const gx_real *)rd.logits, rc.logits, n * K, tol.atol, tol.rtol);
        snprintf(what, sizeof what, "%s probs", ic->kind);
        gx_test_allclose_f(T, what, (const gx_real *)rd.probs, rc.probs, n * K, tol.atol, tol.rtol);
        /* Redshift is NaN for uda and cf-inn, the score NaN for wavelet-mamba. */
        int wm = !strcmp(ic->kind, "wavelet-mamba");
        snprintf(what, sizeof what, "%s %s", ic->kind, wm ? "redshift" : "score");
        gx_test_allclose_f(T, what, (const gx_real *)(wm ? rd.redshift : rd.score), wm ? rc.redshift : rc.score, n,
                           wm ? tol.atol : 1e-3, wm ? tol.rtol : 1e-3);
        if (!strcmp(ic->kind, "cf-inn")) {
            /* The counterfactual routes' call, on the model's (device) ctx. */
            const int64_t targets[3] = { 0, 4, 9 };
            int64_t px = 3 * S * S;
            float *xcf[2];
            gx_cf_result res[2][3];
            gx_serve_model *ms[2] = { mc, md };
            for (int s = 0; s < 2; s++) {
                xcf[s] = malloc((size_t)(3 * px) * sizeof(float));
                gx_serve_model_lock(ms[s]);
                gx_ctx *ctx = gx_serve_model_ctx(ms[s]);
                CHECK_MSG(gx_cf_counterfactuals(ctx, gx_serve_model_impl(ms[s]), x, targets, 3, NULL, xcf[s], res[s],
                                                &err) == GX_OK, "%s", err.msg);
                gx_ctx_reset(ctx);
                CHECK_MSG(gx_serve_model_device_status(ms[s], &err) == GX_OK, "%s", err.msg);
                gx_serve_model_unlock(ms[s]);
            }
            gx_test_allclose_f(T, "cf-inn served counterfactuals", (const gx_real *)xcf[1], xcf[0], 3 * px, 1e-3, 1e-3);
            for (int t = 0; t < 3; t++) CHECK(res[1][t].source == res[0][t].source);
            free(xcf[0]);
            free(xcf[1]);
        }
        serve_rows_free(&rc);
        serve_rows_free(&rd);
        free(x);
        gx_serve_model_free(mc);
        gx_serve_model_free(md);   /* its parameters and its exec's arena back to the pool */
        CHECK_MSG(gx_cuda_pool_in_use(g.pool) == gx_cuda_arena_capacity(&g.exec.arena),
                  "%s: %zu bytes still out of the pool", paths[p],
                  gx_cuda_pool_in_use(g.pool) - gx_cuda_arena_capacity(&g.exec.arena));
    }
    gx_gpu_close(&g);
}

/* The checkpoint at path loaded twice on the device, without (*me) and
 * with (*mg) CUDA graphs; 0 (the device closed) when there is no GPU or a
 * load failed. */
static int serve_graph_pair(gx_test_state *T, gx_gpu_env *g, const char *path, gx_serve_model **me,
                            gx_serve_model **mg) {
    if (!gx_gpu_open(T, g)) return 0;
    gx_serve_device eager = { g->pool, 0, 0, 0 }, graphs = { g->pool, 0, 0, 1 };
    gx_err err;
    CHECK_MSG(gx_serve_model_load_on(me, path, NULL, &eager, &err) == GX_OK, "%s", err.msg);
    CHECK_MSG(gx_serve_model_load_on(mg, path, NULL, &graphs, &err) == GX_OK, "%s", err.msg);
    if (*me && *mg) return 1;
    gx_serve_model_free(*me);
    gx_serve_model_free(*mg);
    gx_gpu_close(g);
    return 0;
}

/* m captured and replayed exactly as many graphs as wanted. */
static void serve_check_graph_counts(gx_test_state *T, gx_serve_model *m, int64_t captures, int64_t replays) {
    int64_t caps = -1, reps = -1;
    gx_serve_model_graph_counts(m, &caps, &reps);
    CHECK_MSG(caps == captures && reps == replays, "%s: captures %lld (want %lld), replays %lld (want %lld)",
              gx_serve_model_info(m)->name, (long long)caps, (long long)captures, (long long)reps,
              (long long)replays);
}

/* Frees both; the graphs' arenas must be back in the pool with the rest. */
static void serve_graph_pair_close(gx_test_state *T, gx_gpu_env *g, gx_serve_model *me, gx_serve_model *mg) {
    gx_serve_model_free(me);
    gx_serve_model_free(mg);
    CHECK_MSG(gx_cuda_pool_in_use(g->pool) == gx_cuda_arena_capacity(&g->exec.arena),
              "%zu bytes still out of the pool", gx_cuda_pool_in_use(g->pool) - gx_cuda_arena_capacity(&g->exec.arena));
    gx_gpu_close(g);
}

/* galaxyd's CUDA graphs (daemon/gx_serve_graph.c): the bundled
 * WaveletMamba served with graphs answers as without them, for batches
 * padded to each slot size, with and without coordinates (NaN rows
 * included), and for a second batch of the same size (the replay reads the
 * new inputs, not the capture's); one capture per padded size, one replay
 * per chunk. */
GX_TEST(dispatch_serve_wm_graphs) {
    gx_gpu_env g;
    gx_serve_model *me = NULL, *mg = NULL;
    if (!serve_graph_pair(T, &g, "models/default/wavelet-mamba.safetensors", &me, &mg)) return;
    const gx_serve_info *in = gx_serve_model_info(mg);
    const int64_t S = in->input_size, K = in->n_classes, per = 3 * S * S;
    /* n rows -> chunks: 1 | 3 (slot 4) | 3 again | 5 (8) | 33 (32 + 1) */
    static const int ns[] = { 1, 3, 3, 5, 33 };
    gx_rng rng;
    gx_rng_init(&rng, 77);
    gx_gpu_tol tol = GX_GPU_TOL_MODEL;
    for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
        const int n = ns[k];
        float *x = serve_random(&rng, n * per), *coords = malloc((size_t)(2 * n) * sizeof(float));
        for (int i = 0; i < n; i++) {
            coords[2 * i] = (float)(360 * gx_rng_uniform(&rng));
            coords[2 * i + 1] = i % 3 == 1 ? NAN : (float)(180 * gx_rng_uniform(&rng) - 90);
        }
        const float *cs = k % 2 ? coords : NULL;
        serve_rows re, rg;
        serve_predict_ex(T, me, x, S, cs, NULL, n, &re);
        serve_predict_ex(T, mg, x, S, cs, NULL, n, &rg);
        char what[96];
        snprintf(what, sizeof what, "graph logits, n %d%s", n, cs ? ", coords" : "");
        gx_test_allclose_f(T, what, (const gx_real *)rg.logits, re.logits, n * K, tol.atol, tol.rtol);
        snprintf(what, sizeof what, "graph redshift, n %d%s", n, cs ? ", coords" : "");
        gx_test_allclose_f(T, what, (const gx_real *)rg.redshift, re.redshift, n, tol.atol, tol.rtol);
        serve_rows_free(&re);
        serve_rows_free(&rg);
        free(x);
        free(coords);
    }
    serve_check_graph_counts(T, mg, 4, 6);
    serve_check_graph_counts(T, me, 0, 0);
    serve_graph_pair_close(T, &g, me, mg);
}

/* The bundled UDA model with graphs (one variant per BN domain): a chunk
 * whose rows share a domain replays that domain's graph, a chunk of mixed
 * domains runs eagerly; the answers (logits, probabilities, anomaly
 * scores) are those of the model without graphs. */
GX_TEST(dispatch_serve_uda_graphs) {
    gx_gpu_env g;
    gx_serve_model *me = NULL, *mg = NULL;
    if (!serve_graph_pair(T, &g, "models/default/uda.safetensors", &me, &mg)) return;
    const gx_serve_info *in = gx_serve_model_info(mg);
    const int64_t S = in->input_size, K = in->n_classes, per = 3 * S * S;
    /* domains: all target (NULL), all source, all target again (a replay),
     * mixed (eager) */
    enum { N = 3 };
    static const int8_t src[N] = { 0, 0, 0 }, tgt[N] = { 1, 1, 1 }, mix[N] = { 1, 0, 1 };
    const int8_t *doms[4] = { NULL, src, tgt, mix };
    gx_rng rng;
    gx_rng_init(&rng, 78);
    gx_gpu_tol tol = GX_GPU_TOL_MODEL;
    for (int k = 0; k < 4; k++) {
        float *x = serve_random(&rng, N * per);
        serve_rows re, rg;
        serve_predict_ex(T, me, x, S, NULL, doms[k], N, &re);
        serve_predict_ex(T, mg, x, S, NULL, doms[k], N, &rg);
        char what[64];
        snprintf(what, sizeof what, "uda graph logits, case %d", k);
        gx_test_allclose_f(T, what, (const gx_real *)rg.logits, re.logits, N * K, tol.atol, tol.rtol);
        snprintf(what, sizeof what, "uda graph probs, case %d", k);
        gx_test_allclose_f(T, what, (const gx_real *)rg.probs, re.probs, N * K, tol.atol, tol.rtol);
        snprintf(what, sizeof what, "uda graph scores, case %d", k);
        gx_test_allclose_f(T, what, (const gx_real *)rg.score, re.score, N, 1e-3, 1e-3);
        serve_rows_free(&re);
        serve_rows_free(&rg);
        free(x);
    }
    serve_check_graph_counts(T, mg, 2, 3);   /* target and source at size 4; the mixed chunk eager */
    serve_graph_pair_close(T, &g, me, mg);
}

/* The bundled CF-INN's classify pass with graphs: rows at the model's size
 * replay a graph, rows of another size are resized on the host and run
 * eagerly; the answers (probabilities, hidden-space NLL) are those of the
 * model without graphs. */
GX_TEST(dispatch_serve_cf_graphs) {
    gx_gpu_env g;
    gx_serve_model *me = NULL, *mg = NULL;
    if (!serve_graph_pair(T, &g, "models/default/cf-inn.safetensors", &me, &mg)) return;
    const gx_serve_info *in = gx_serve_model_info(mg);
    const int64_t K = in->n_classes, S0 = in->input_size;
    const int64_t sides[3] = { S0, S0, S0 + 8 };   /* a graph, its replay, eager */
    enum { N = 3 };
    gx_rng rng;
    gx_rng_init(&rng, 79);
    gx_gpu_tol tol = GX_GPU_TOL_MODEL;
    for (int k = 0; k < 3; k++) {
        const int64_t S = sides[k];
        float *x = serve_random(&rng, N * 3 * S * S);
        serve_rows re, rg;
        serve_predict_ex(T, me, x, S, NULL, NULL, N, &re);
        serve_predict_ex(T, mg, x, S, NULL, NULL, N, &rg);
        char what[64];
        snprintf(what, sizeof what, "cf graph probs, side %lld", (long long)S);
        gx_test_allclose_f(T, what, (const gx_real *)rg.probs, re.probs, N * K, tol.atol, tol.rtol);
        snprintf(what, sizeof what, "cf graph NLL, side %lld", (long long)S);
        gx_test_allclose_f(T, what, (const gx_real *)rg.score, re.score, N, 1e-3, 1e-4);
        serve_rows_free(&re);
        serve_rows_free(&rg);
        free(x);
    }
    serve_check_graph_counts(T, mg, 1, 2);
    serve_graph_pair_close(T, &g, me, mg);
}
