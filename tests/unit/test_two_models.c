/*
 * test_two_models.c — the two-models measures (trainer/gx_two_models.h):
 * the spec's cosine normalisation, the flip-aware memorisation maximum,
 * histograms, and the morphology W1 between measured sets.
 */
#include "gx_test.h"
#include "test_fixture_util.h"
#include "gx_two_models.h"
#include "gx_db.h"
#include "gx_synth.h"
#include "gx_report.h"

#define _XOPEN_SOURCE_EXTENDED 1
#include <sqlite3.h>
#include <unistd.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void fill_blob(float *x, int S, double cx, double cy, double r, double amp, unsigned seed) {
    srand(seed);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < S; y++)
            for (int xx = 0; xx < S; xx++) {
                double d2 = ((xx - cx) * (xx - cx) + (y - cy) * (y - cy)) / (r * r);
                x[(c * S + y) * S + xx] = (float)(0.05 + amp * exp(-d2) + 0.002 * (rand() / (double)RAND_MAX));
            }
}

GX_TEST(tm_cosine_normalisation) {
    float a[12], b[12], z[12] = { 0 };
    for (int i = 0; i < 12; i++) a[i] = (float)(i % 5), b[i] = 3.0f * a[i] + 7.0f;
    /* Mean removal and scaling make an affine copy identical. */
    CHECK_NEAR(gx_tm_cosine(a, b, 12), 1.0, 1e-9);
    for (int i = 0; i < 12; i++) b[i] = -a[i];
    CHECK_NEAR(gx_tm_cosine(a, b, 12), -1.0, 1e-9);
    /* A constant image has norm 0 after mean removal: counted as 0.001, cosine 0. */
    CHECK_NEAR(gx_tm_cosine(a, z, 12), 0.0, 1e-12);
}

GX_TEST(tm_max_cosine_sees_flips) {
    enum { S = 16, C = 3, N = C * S * S };
    float *tr = malloc(2 * N * sizeof *tr), *gen = malloc(2 * N * sizeof *gen);
    fill_blob(tr, S, 4, 5, 2.5, 0.8, 1);          /* off-centre: flips differ */
    fill_blob(tr + N, S, 10, 3, 1.5, 0.5, 2);
    /* gen 0: the horizontal flip of training image 0; gen 1: something else. */
    for (int c = 0; c < C; c++)
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) gen[(c * S + y) * S + x] = tr[(c * S + y) * S + (S - 1 - x)];
    fill_blob(gen + N, S, 12, 12, 3, 0.6, 3);
    double mc[2];
    gx_err err;
    CHECK(gx_tm_max_cosine(gen, 2, tr, 2, C, S, mc, &err) == GX_OK);
    CHECK_NEAR(mc[0], 1.0, 1e-9);
    CHECK(mc[1] < 0.95);
    CHECK(gx_tm_cosine(gen, tr, N) < 0.9);        /* without the flip it is no copy */
    CHECK(gx_tm_max_cosine(gen, 0, tr, 2, C, S, mc, &err) == GX_ERR_INVALID);
    free(tr), free(gen);
}

GX_TEST(tm_histogram_edges) {
    const double v[] = { -5, 0.0, 0.24, 0.25, 0.99, 1.0, 7 };
    int64_t c[4];
    gx_tm_histogram(v, 7, 4, 0, 1, c);
    CHECK(c[0] == 3 && c[1] == 1 && c[2] == 0 && c[3] == 3);
}

GX_TEST(tm_morph_w1_same_and_shifted_sets) {
    enum { S = 32, N = 6 };
    float *x = malloc((size_t)N * 3 * S * S * sizeof *x);
    for (int i = 0; i < N; i++) fill_blob(x + i * 3 * S * S, S, 15.5 + 0.3 * i, 16, 2.0 + 0.6 * i, 0.7, 10 + i);
    double st[N * GX_TM_MORPH_NSTATS], w1[GX_TM_MORPH_NSTATS];
    int ok[N];
    gx_err err;
    CHECK_MSG(gx_tm_morph_measure(x, N, S, st, ok, &err) == GX_OK, "%s", err.msg);
    int nok = 0;
    for (int i = 0; i < N; i++) nok += ok[i];
    CHECK(nok >= N - 1);
    CHECK(gx_tm_morph_w1(st, ok, N, st, ok, N, w1, &err) == GX_OK);
    for (int k = 0; k < GX_TM_MORPH_NSTATS; k++) CHECK_NEAR(w1[k], 0.0, 1e-12);
    /* Concentration grows with nothing here, but the sets {first half} vs
     * {second half} differ in size, hence in r20/r80-based C and in M20. */
    CHECK(gx_tm_morph_w1(st, ok, N / 2, st + (N / 2) * GX_TM_MORPH_NSTATS, ok + N / 2, N / 2, w1, &err) == GX_OK);
    CHECK(w1[4] > 0);
    CHECK(gx_tm_morph_stat_name(3)[0] == 'g');
    free(x);
}

/* Draws are a function of the seed, classes cycle; decoding is
 * deterministic and lands in [0,1] (sigmoid output); re-encoding with the
 * nearest mean never leaves a larger hidden residual than a fixed class. */
GX_TEST(tm_draw_decode_encode_on_a_tiny_cf_inn) {
    gx_cf_model m;
    gx_cf_config cfg = gx_cf_config_tiny();
    cfg.classes = 4;
    gx_cf_init(&m, cfg, 3);
    enum { N = 6 };
    int64_t d = cfg.d, d1 = cfg.d1, per = 3 * cfg.size * cfg.size;
    int64_t cls[N], cls2[N];
    float *eps = malloc(N * d * sizeof *eps), *eps2 = malloc(N * d * sizeof *eps2);
    float *x = malloc(N * per * sizeof *x), *x2 = malloc(N * per * sizeof *x2);
    gx_tm_draw(&m, 9, N, cls, eps);
    gx_tm_draw(&m, 9, N, cls2, eps2);
    CHECK(!memcmp(eps, eps2, N * d * sizeof *eps) && cls[5] == 1 && cls[3] == 3);
    gx_ctx ctx;
    gx_ctx_init(&ctx, 0);
    gx_err err;
    CHECK(gx_tm_decode(&ctx, &m, cls, eps, N, x, &err) == GX_OK);
    CHECK(gx_tm_decode(&ctx, &m, cls, eps, N, x2, &err) == GX_OK);
    CHECK(!memcmp(x, x2, N * per * sizeof *x));
    int inside = 1;
    for (int64_t i = 0; i < N * per; i++) inside &= x[i] >= 0 && x[i] <= 1;
    CHECK(inside);
    CHECK(gx_tm_encode_eps(&ctx, &m, x, NULL, N, eps, &err) == GX_OK);
    int64_t fixed[N] = { 0 };
    CHECK(gx_tm_encode_eps(&ctx, &m, x, fixed, N, eps2, &err) == GX_OK);
    for (int i = 0; i < N; i++) {
        double a = 0, b = 0;
        for (int64_t k = 0; k < d1; k++) a += eps[i * d + k] * eps[i * d + k], b += eps2[i * d + k] * eps2[i * d + k];
        CHECK(a <= b + 1e-9);
        for (int64_t k = d1; k < d; k++) CHECK(eps[i * d + k] == eps2[i * d + k]);   /* z2 part: class-free */
    }
    gx_ctx_free(&ctx);
    gx_cf_free(&m);
    free(eps), free(eps2), free(x), free(x2);
}

/* ------------------------------------------------------- the whole run */

static double tm_metric(gx_db *db, int64_t run, const char *name) {
    double v[2] = { NAN, NAN };
    int n = 0;
    gx_err err;
    if (gx_db_metric_get(db, run, "two_models", name, NULL, v, 2, &n, &err) != GX_OK || n != 1) return NAN;
    return v[0];
}

/* A tiny two-models run on 80 synthetic galaxies: both trainings, every
 * check's rows, histograms that hold every sample, the report and its PNGs,
 * and halves that really are disjoint (the two training runs' configs). */
GX_TEST(tm_run_tiny_end_to_end) {
    char dir[64] = "/tmp/gx_two_models_XXXXXX", data[128], db_path[128], out[128], path[256];
    if (!mkdtemp(dir)) { CHECK_MSG(0, "mkdtemp"); return; }
    snprintf(data, sizeof data, "%s/synth.h5", dir);
    snprintf(db_path, sizeof db_path, "%s/runs.sqlite", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    gx_err err;
    CHECK_MSG(tfx_synth_small(data, 3, 80, "test_two_models", &err) == GX_OK, "%s", err.msg);
    gx_two_models_opts o;
    gx_two_models_opts_default(&o);
    o.data = data, o.db_path = db_path, o.out_dir = out;
    o.epochs = 1, o.batch = 8, o.seed = 4, o.n_gen = 12, o.n_real = 10, o.progress = 0;
    o.sets[o.n_sets++] = "cf_eval_n=2";
    gx_two_models_result r;
    gx_status s = gx_two_models_run(&o, &r, &err);
    CHECK_MSG(s == GX_OK, "two-models: %s", err.msg);
    if (s == GX_OK) {
        CHECK(r.run_a > 0 && r.run_b > r.run_a && r.run_id > r.run_b);
        CHECK(r.half_n == 28);                       /* 56 training images (70% of 80), halved */
        CHECK(r.mem_max_a <= 1.0 + 1e-9 && r.mem_max_a > -1.0);
        CHECK(isfinite(r.ab_cos_median) && isfinite(r.inv_rms_a) && r.inv_w1_b_median >= 0);
        gx_db *db;
        CHECK(gx_db_open(&db, db_path, &err) == GX_OK);
        CHECK_NEAR(tm_metric(db, r.run_id, "mem_copy_frac_a"), r.mem_frac_a, 0);
        CHECK(isfinite(tm_metric(db, r.run_id, "inv_w1_exact_b_d0")));
        CHECK(isfinite(tm_metric(db, r.run_id, "inv_w1_binned_a_d15")));   /* tiny d = 16 */
        /* Every histogram of a sample set counts every sample. */
        sqlite3 *h = gx_db_handle(db);
        sqlite3_stmt *st;
        CHECK(sqlite3_prepare_v2(h, "SELECT name, SUM(count), COUNT(*) FROM histograms WHERE run_id = ? "
                                    "GROUP BY name", -1, &st, NULL) == SQLITE_OK);
        sqlite3_bind_int64(st, 1, r.run_id);
        int names = 0;
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *nm = (const char *)sqlite3_column_text(st, 0);
            double sum = sqlite3_column_double(st, 1);
            names++;
            if (!strncmp(nm, "mem_cos_", 8) || !strcmp(nm, "ab_cos") || !strncmp(nm, "inv_", 4))
                CHECK_MSG(sum == 12, "histogram %s holds %g samples, want 12", nm, sum);
        }
        sqlite3_finalize(st);
        CHECK(names >= 5);
        gx_db_close(db);
        CHECK(!access(r.report_path, R_OK));
        snprintf(path, sizeof path, "%s/mem_a.png", out);
        CHECK(!access(path, R_OK));
        snprintf(path, sizeof path, "%s/morph_gini.png", out);
        CHECK(!access(path, R_OK));
        /* --reuse: the checks again on the same two models, no training. */
        gx_two_models_result r2;
        o.reuse = 1;
        CHECK_MSG(gx_two_models_run(&o, &r2, &err) == GX_OK, "reuse: %s", err.msg);
        CHECK(r2.run_a == r.run_a && r2.run_b == r.run_b && r2.run_id == r.run_id + 1);
        CHECK(r2.mem_max_a == r.mem_max_a && r2.inv_rms_a == r.inv_rms_a);
        o.reuse = 0;
    }
    /* Bad options change nothing and say which. */
    o.n_gen = 1;
    CHECK(gx_two_models_run(&o, &r, &err) == GX_ERR_INVALID && strstr(err.msg, "n_gen"));
    tfx_rmtree(dir);
}

/* report --kind two-models: a row per two-models run from the database,
 * and a run of another kind refused by name. */
GX_TEST(tm_report_table_from_the_database) {
    char dir[64] = "/tmp/gx_tm_report_XXXXXX", db_path[128];
    if (!mkdtemp(dir)) { CHECK_MSG(0, "mkdtemp"); return; }
    snprintf(db_path, sizeof db_path, "%s/runs.sqlite", dir);
    gx_db *db;
    gx_err err;
    CHECK(gx_db_open(&db, db_path, &err) == GX_OK);
    int64_t tm, other;
    gx_db_run_info a = { "two-models", "{\"half_n\":1234}", NULL, 1, NULL }, b = { "cf-inn", NULL, NULL, 1, NULL };
    CHECK(gx_db_run_begin(db, &a, &tm, &err) == GX_OK && gx_db_run_begin(db, &b, &other, &err) == GX_OK);
    gx_db_metric rows[] = { { "two_models", "mem_pass", 1 }, { "two_models", "inv_pass", 0 },
                            { "two_models", "inv_rms_a", 2.25 }, { "two_models", "mem_copy_frac_a", 0.005 } };
    CHECK(gx_db_metrics_put(db, tm, 0, rows, 4, &err) == GX_OK);
    CHECK(gx_db_run_finish(db, tm, "finished", &err) == GX_OK);
    gx_report_opts o = { .kind = (gx_report_kind)gx_report_kind_parse("two-models") };
    char *md = NULL;
    CHECK_MSG(gx_report_markdown(db, &o, &md, &err) == GX_OK, "%s", err.msg);
    CHECK(md && strstr(md, "| 1 | 1234 | pass | 0.5% /") && strstr(md, "| fail | 2.250 |"));
    free(md);
    int64_t bad[1] = { other };
    o.runs = bad, o.n_runs = 1;
    CHECK(gx_report_markdown(db, &o, &md, &err) == GX_ERR_INVALID && strstr(err.msg, "cf-inn"));
    gx_db_close(db);
    tfx_rmtree(dir);
}
