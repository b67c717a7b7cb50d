/*
 * test_metrics.c — evaluation metrics on small cases worked out by hand
 * (the derivation is in the comment above each expected value), ties in
 * AUC and AP included, plus perfect and uninformative predictors.
 *
 * Tolerance: 1e-12 for values computed in double from exact inputs; 1e-6
 * where inputs pass through gx_real (float) first.
 */
#include "gx_test.h"

#include "gx_metrics.h"
#include <math.h>
#include <stdlib.h>

/* ---------------------------------------------------------------- AUC */

GX_TEST(metrics_auc_no_ties) {
    /* sklearn's doc example: positives 0.35, 0.8; negatives 0.1, 0.4.
     * Pairs won: 0.8 beats both, 0.35 beats 0.1 only -> 3/4. */
    double s[] = { 0.1, 0.4, 0.35, 0.8 };
    uint8_t y[] = { 0, 0, 1, 1 };
    CHECK_NEAR(gx_metric_roc_auc(s, y, 4), 0.75, 1e-12);
    /* Reversing the labels mirrors the AUC. */
    uint8_t r[] = { 1, 1, 0, 0 };
    CHECK_NEAR(gx_metric_roc_auc(s, r, 4), 0.25, 1e-12);
}

GX_TEST(metrics_auc_ties_average_ranks) {
    /* positives {0.5, 0.9}, negatives {0.5, 0.5}: (0.9, *) wins twice,
     * (0.5, 0.5) ties twice at 1/2 -> (2 + 1) / 4 = 0.75. */
    double s1[] = { 0.5, 0.5, 0.5, 0.9 };
    uint8_t y1[] = { 0, 1, 0, 1 };
    CHECK_NEAR(gx_metric_roc_auc(s1, y1, 4), 0.75, 1e-12);
    /* positives {0.2, 0.6, 0.6}, negatives {0.2, 0.6}:
     * 0.2+: tie .5, loss 0; each 0.6+: win 1, tie .5 -> (0.5 + 2*1.5)/6 = 7/12. */
    double s2[] = { 0.2, 0.2, 0.6, 0.6, 0.6 };
    uint8_t y2[] = { 0, 1, 0, 1, 1 };
    CHECK_NEAR(gx_metric_roc_auc(s2, y2, 5), 7.0 / 12.0, 1e-12);
    /* Order of samples does not matter. */
    double s3[] = { 0.6, 0.2, 0.6, 0.6, 0.2 };
    uint8_t y3[] = { 1, 1, 0, 1, 0 };
    CHECK_NEAR(gx_metric_roc_auc(s3, y3, 5), 7.0 / 12.0, 1e-12);
    /* All scores equal: AUC 1/2 exactly. */
    double s4[] = { 3, 3, 3 };
    uint8_t y4[] = { 1, 0, 0 };
    CHECK_NEAR(gx_metric_roc_auc(s4, y4, 3), 0.5, 1e-12);
}

GX_TEST(metrics_auc_undefined_cases) {
    double s[] = { 0.1, 0.2 };
    uint8_t all_pos[] = { 1, 1 }, all_neg[] = { 0, 0 };
    CHECK(isnan(gx_metric_roc_auc(s, all_pos, 2)));
    CHECK(isnan(gx_metric_roc_auc(s, all_neg, 2)));
    CHECK(isnan(gx_metric_average_precision(s, all_neg, 2)));
    double bad[] = { 0.1, NAN };
    uint8_t y[] = { 0, 1 };
    CHECK(isnan(gx_metric_roc_auc(bad, y, 2)));
}

/* ----------------------------------------------------------------- AP */

GX_TEST(metrics_ap_no_ties) {
    /* Thresholds 0.8: R=1/2 P=1; 0.4: R=1/2 P=1/2; 0.35: R=1 P=2/3; 0.1:
     * R=1 P=1/2. AP = 1/2*1 + 0 + 1/2*2/3 + 0 = 5/6 (sklearn's doc value). */
    double s[] = { 0.1, 0.4, 0.35, 0.8 };
    uint8_t y[] = { 0, 0, 1, 1 };
    CHECK_NEAR(gx_metric_average_precision(s, y, 4), 5.0 / 6.0, 1e-12);
}

GX_TEST(metrics_ap_ties_one_threshold) {
    /* 0.9: R=1/2 P=1; the three 0.5 form one threshold: R=1 P=2/4.
     * AP = 1/2*1 + 1/2*1/2 = 3/4 (breaking the tie either way would give
     * 1/2 + 1/2*2/3 or 1/2 + 1/2*1/2 + ... : grouping matters). */
    double s1[] = { 0.5, 0.5, 0.5, 0.9 };
    uint8_t y1[] = { 0, 1, 0, 1 };
    CHECK_NEAR(gx_metric_average_precision(s1, y1, 4), 0.75, 1e-12);
    /* 0.6 group: tp 2 of 3 seen, R=2/3 P=2/3; 0.2 group: R=1 P=3/5.
     * AP = 2/3*2/3 + 1/3*3/5 = 4/9 + 1/5 = 29/45. */
    double s2[] = { 0.2, 0.2, 0.6, 0.6, 0.6 };
    uint8_t y2[] = { 0, 1, 0, 1, 1 };
    CHECK_NEAR(gx_metric_average_precision(s2, y2, 5), 29.0 / 45.0, 1e-12);
    /* All scores tied: one threshold, AP = prevalence. */
    double s3[] = { 1, 1, 1, 1, 1 };
    uint8_t y3[] = { 1, 0, 0, 1, 0 };
    CHECK_NEAR(gx_metric_average_precision(s3, y3, 5), 0.4, 1e-12);
}

/* ------------------------------------------------------ classification */

GX_TEST(metrics_classify_hand_case_with_absent_class) {
    /* k = 3, class 2 never appears in the labels.
     *   sample  probs            label  argmax
     *   0       .7 .2 .1         0      0  ok
     *   1       .3 .6 .1         1      1  ok
     *   2       .4 .5 .1         0      1
     *   3       .2 .3 .5         1      2
     * accuracy 2/4; recall 1/2, 1/2, NaN.
     * AUC c0: pos {.7,.4} vs neg {.3,.2}: 4/4 = 1.
     * AUC c1: pos {.6,.3} vs neg {.2,.5}: .6 wins 2, .3 wins 1 -> 3/4.
     * macro = (1 + .75)/2 = .875 over 2 classes, 1 skipped.
     * micro: 12 scores, positives {.7,.6,.4,.3}, negatives
     *   {.1,.1,.1,.2,.2,.3,.5,.5}: wins 8 + 8 + 6 + (5 + tie .5) = 27.5 / 32.
     * AP c0: .7 and .4 are the top two, both positive -> 1.
     * AP c1: .6+ R1/2 P1; .5- ; .3+ R1 P2/3 -> 1/2 + 1/3 = 5/6.
     * macro AP = (1 + 5/6)/2 = 11/12. */
    gx_real p[] = { .7f, .2f, .1f,  .3f, .6f, .1f,  .4f, .5f, .1f,  .2f, .3f, .5f };
    int32_t y[] = { 0, 1, 0, 1 };
    gx_cls_metrics m;
    gx_err err;
    CHECK(gx_metrics_classify(p, y, 4, 3, &m, &err) == GX_OK);
    CHECK(m.n == 4 && m.k == 3);
    CHECK_NEAR(m.accuracy, 0.5, 1e-12);
    CHECK(m.confusion[0 * 3 + 0] == 1 && m.confusion[0 * 3 + 1] == 1);
    CHECK(m.confusion[1 * 3 + 1] == 1 && m.confusion[1 * 3 + 2] == 1);
    CHECK(m.confusion[2 * 3 + 0] + m.confusion[2 * 3 + 1] + m.confusion[2 * 3 + 2] == 0);
    CHECK(m.support[0] == 2 && m.support[1] == 2 && m.support[2] == 0);
    CHECK_NEAR(m.recall[0], 0.5, 1e-12);
    CHECK_NEAR(m.recall[1], 0.5, 1e-12);
    CHECK(isnan(m.recall[2]));
    CHECK_NEAR(m.auc[0], 1.0, 1e-12);
    CHECK_NEAR(m.auc[1], 0.75, 1e-12);
    CHECK(isnan(m.auc[2]) && isnan(m.ap[2]));
    CHECK(m.skipped[2] == 1 && m.skipped[0] == 0 && m.n_skipped == 1);
    CHECK_NEAR(m.auc_macro, 0.875, 1e-12);
    CHECK_NEAR(m.auc_micro, 27.5 / 32.0, 1e-12);
    CHECK_NEAR(m.ap[0], 1.0, 1e-12);
    CHECK_NEAR(m.ap[1], 5.0 / 6.0, 1e-12);
    CHECK_NEAR(m.ap_macro, 11.0 / 12.0, 1e-12);
}

GX_TEST(metrics_classify_perfect_predictor) {
    enum { N = 30, K = 4 };
    gx_real p[N * K];
    int32_t y[N];
    for (int i = 0; i < N; i++) {
        y[i] = (i * 7) % K;
        for (int c = 0; c < K; c++) p[i * K + c] = (c == y[i]) ? 0.7f : 0.1f;
    }
    gx_cls_metrics m;
    gx_err err;
    CHECK(gx_metrics_classify(p, y, N, K, &m, &err) == GX_OK);
    CHECK_NEAR(m.accuracy, 1.0, 0);
    CHECK_NEAR(m.auc_macro, 1.0, 1e-12);
    CHECK_NEAR(m.auc_micro, 1.0, 1e-12);
    CHECK_NEAR(m.ap_macro, 1.0, 1e-12);
    CHECK(m.n_skipped == 0);
    for (int c = 0; c < K; c++) {
        CHECK_NEAR(m.recall[c], 1.0, 0);
        CHECK(m.confusion[c * K + c] == m.support[c]);
    }
}

/* Uninformative predictor: identical rows. Every class's scores are all
 * tied, so AUC = 1/2 and AP = the class's prevalence; argmax ties go to
 * class 0, so accuracy = the share of class 0. */
GX_TEST(metrics_classify_constant_predictor) {
    enum { N = 10, K = 3 };
    gx_real p[N * K];
    int32_t y[N] = { 0, 1, 2, 1, 1, 2, 0, 1, 2, 1 };   /* 2 / 5 / 3 */
    for (int i = 0; i < N * K; i++) p[i] = (gx_real)(1.0 / 3.0);
    gx_cls_metrics m;
    gx_err err;
    CHECK(gx_metrics_classify(p, y, N, K, &m, &err) == GX_OK);
    CHECK_NEAR(m.accuracy, 0.2, 1e-12);
    CHECK_NEAR(m.recall[0], 1.0, 0);
    CHECK_NEAR(m.recall[1], 0.0, 0);
    CHECK_NEAR(m.auc_macro, 0.5, 1e-12);
    CHECK_NEAR(m.auc_micro, 0.5, 1e-12);
    CHECK_NEAR(m.ap[0], 0.2, 1e-12);
    CHECK_NEAR(m.ap[1], 0.5, 1e-12);
    CHECK_NEAR(m.ap[2], 0.3, 1e-12);
    CHECK_NEAR(m.ap_macro, 1.0 / 3.0, 1e-12);
}

/* Random scores against random labels: AUC near 1/2 (the standard error of
 * AUC with 2000 x 2000 is ~0.009; 0.04 is > 4 sigma). */
GX_TEST(metrics_random_predictor_auc_near_half) {
    enum { N = 4000, K = 2 };
    gx_real *p = malloc(sizeof(gx_real) * N * K);
    int32_t *y = malloc(sizeof(int32_t) * N);
    uint64_t s = 12345;
    for (int i = 0; i < N; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        double u = (double)(s >> 11) / 9007199254740992.0;
        p[i * K] = (gx_real)u;
        p[i * K + 1] = (gx_real)(1 - u);
        y[i] = (int32_t)((s >> 7) & 1);
    }
    gx_cls_metrics m;
    gx_err err;
    CHECK(gx_metrics_classify(p, y, N, K, &m, &err) == GX_OK);
    CHECK(fabs(m.auc_macro - 0.5) < 0.04);
    CHECK(fabs(m.accuracy - 0.5) < 0.04);
    /* Two complementary columns: AUC of class 1 = AUC of class 0. */
    CHECK_NEAR(m.auc[0], m.auc[1], 1e-12);
    free(p);
    free(y);
}

GX_TEST(metrics_classify_unlabelled_and_errors) {
    gx_real p[] = { .9f, .1f,  .2f, .8f,  .6f, .4f };
    int32_t y[] = { 0, -1, 1 };                 /* the middle row is unlabelled */
    gx_cls_metrics m;
    gx_err err;
    CHECK(gx_metrics_classify(p, y, 3, 2, &m, &err) == GX_OK);
    CHECK(m.n == 2);
    CHECK_NEAR(m.accuracy, 0.5, 1e-12);
    /* c0: pos {.9} vs neg {.6} -> 1; c1: pos {.4} vs neg {.1} -> 1. */
    CHECK_NEAR(m.auc_macro, 1.0, 1e-12);
    int32_t bad[] = { 0, 2, 1 };
    CHECK(gx_metrics_classify(p, bad, 3, 2, &m, &err) == GX_ERR_INVALID);
    CHECK(gx_metrics_classify(p, y, 3, 0, &m, &err) == GX_ERR_INVALID);
    CHECK(gx_metrics_classify(p, y, 3, GX_METRICS_MAX_CLASSES + 1, &m, &err)
          == GX_ERR_INVALID);
    gx_real q[] = { .9f, NAN };
    CHECK(gx_metrics_classify(q, y, 1, 2, &m, &err) == GX_ERR_INVALID);
    /* No samples at all: NaN, not a perfect 0 or 1. */
    CHECK(gx_metrics_classify(p, y, 0, 2, &m, &err) == GX_OK);
    CHECK(isnan(m.accuracy) && isnan(m.auc_macro) && m.n_skipped == 2);
}

/* ------------------------------------------------------------ redshift */

GX_TEST(metrics_redshift_hand_case) {
    /* Used pairs (zt, zp): (.25,.25) (.75,1.1) (1.25,1.0) (1.75,1.75); the
     * rest are missing: zt NaN, zp NaN, zt = 0, zt < 0.
     * dz = 0, .35, -.25, 0: MAE = .6/4 = .15, bias = .1/4 = .025.
     * R^2: mean zt = 1, SS_tot = 1.25, SS_res = .1225 + .0625 = .185
     *   -> 1 - .148 = .852.
     * log-MSE: (ln(2.1/1.75)^2 + ln(2/2.25)^2)/4 = (.0332412 + .0138728)/4.
     * d = dz/(1+zt) = 0, .2, -1/9, 0: median 0; |d| median (1/9 + 0)/2
     *   -> NMAD = 1.4826/18.
     * outliers: .35 > .15*1.75 = .2625 yes; .25 > .3375 no -> 1/4.
     * bins: one pair each; bin 1 log-MSE ln(1.2)^2, bias .35; bin 2 bias -.25. */
    gx_real zp[] = { .25f, 1.1f, 1.0f, .5f, NAN, 1.75f, .3f, .3f };
    double zt[] = { .25, .75, 1.25, NAN, 1.0, 1.75, 0.0, -0.5 };
    gx_z_metrics m;
    gx_err err;
    CHECK(gx_metrics_redshift(zp, zt, 8, &m, &err) == GX_OK);
    CHECK(m.n == 4 && m.n_missing == 4);
    CHECK_NEAR(m.mae, 0.15, 1e-6);
    CHECK_NEAR(m.bias, 0.025, 1e-6);
    CHECK_NEAR(m.r2, 0.852, 1e-6);
    CHECK_NEAR(m.log_mse, 0.011778498390051035, 1e-7);
    CHECK_NEAR(m.nmad, 1.4826 / 18.0, 1e-7);
    CHECK_NEAR(m.outlier_rate, 0.25, 0);
    for (int b = 0; b < GX_Z_BINS; b++) CHECK(m.bin_n[b] == 1);
    CHECK_NEAR(m.bin_log_mse[0], 0.0, 1e-12);
    CHECK_NEAR(m.bin_log_mse[1], log(1.2) * log(1.2), 1e-7);
    CHECK_NEAR(m.bin_bias[1], 0.35, 1e-6);
    CHECK_NEAR(m.bin_bias[2], -0.25, 1e-6);
    CHECK_NEAR(m.bin_log_mse[3], 0.0, 1e-12);
}

GX_TEST(metrics_redshift_perfect_empty_and_out_of_bins) {
    gx_real zp[] = { .1f, .6f, 2.5f };
    double zt[] = { (float).1, (float).6, (float)2.5 };   /* exactly what zp holds */
    gx_z_metrics m;
    gx_err err;
    CHECK(gx_metrics_redshift(zp, zt, 3, &m, &err) == GX_OK);
    CHECK(m.n == 3);
    CHECK_NEAR(m.log_mse, 0, 0);
    CHECK_NEAR(m.mae, 0, 0);
    CHECK_NEAR(m.r2, 1, 0);
    CHECK_NEAR(m.nmad, 0, 0);
    CHECK_NEAR(m.outlier_rate, 0, 0);
    CHECK(m.bin_n[0] == 1 && m.bin_n[1] == 1 && m.bin_n[2] == 0 && m.bin_n[3] == 0);
    CHECK(isnan(m.bin_log_mse[2]) && isnan(m.bin_bias[3]));   /* z = 2.5 is in no bin */
    /* Nothing usable: NaN everywhere, never a flattering 0. */
    double none[] = { NAN, NAN, NAN };
    CHECK(gx_metrics_redshift(zp, none, 3, &m, &err) == GX_OK);
    CHECK(m.n == 0 && m.n_missing == 3);
    CHECK(isnan(m.log_mse) && isnan(m.mae) && isnan(m.r2) && isnan(m.nmad));
    CHECK(isnan(m.outlier_rate) && isnan(m.bias));
    /* A prediction below -1 gives a finite (large) log error. */
    gx_real wild[] = { -3.0f, .5f };
    double t2[] = { .5, .5 };
    CHECK(gx_metrics_redshift(wild, t2, 2, &m, &err) == GX_OK);
    CHECK(isfinite(m.log_mse) && m.log_mse > 10);
    /* Constant z_true with errors: R^2 = 0 (sklearn's convention). */
    CHECK_NEAR(m.r2, 0.0, 0);
}

/* ------------------------------------------------------- small statistics */

GX_TEST(metrics_median_and_cv) {
    double a[] = { 3, 1, 2 };
    CHECK_NEAR(gx_metric_median(a, 3), 2, 0);
    double b[] = { 4, 1, 3, 2 };
    CHECK_NEAR(gx_metric_median(b, 4), 2.5, 0);
    CHECK(isnan(gx_metric_median(b, 0)));
    /* Accuracies .75 .80 .82 .81: mean .795; deviations -.045 .005 .025
     * .015; population variance .0029/4 = .000725; CV = sqrt(.000725)/.795. */
    double acc[] = { 0.75, 0.80, 0.82, 0.81 };
    CHECK_NEAR(gx_metric_cv(acc, 4), sqrt(0.000725) / 0.795, 1e-12);
    CHECK_NEAR(gx_metric_cv(acc, 4), 0.0338689610511604, 1e-12);
    double same[] = { 0.5, 0.5 };
    CHECK_NEAR(gx_metric_cv(same, 2), 0, 0);
    double zero[] = { 0, 0 };
    CHECK(isnan(gx_metric_cv(zero, 2)));
}

/* ------------------------------------------------------ centroid probe */

/* A hand case in 1-D. Rows 0..5 (folds: even rows 0,2,4, odd rows 1,3,5):
 *   row   0    1    2    3    4    5
 *   x     0.0  0.2  1.0  0.6  3.0  2.0
 *   label 0    0    1    1    1    0
 * Even fold's means: class 0 = 0.0, class 1 = (1 + 3)/2 = 2.0. Odd rows
 * against them: 0.2 -> 0 (right), 0.6 -> 0 (wrong), 2.0 -> 1 (wrong).
 * Odd fold's means: class 0 = (0.2 + 2.0)/2 = 1.1, class 1 = 0.6. Even
 * rows: 0.0 -> 1 (wrong), 1.0 -> 0 (|1 - 1.1| = .1 < .4: wrong), 3.0 -> 0
 * (wrong). 1 of 6. */
GX_TEST(metrics_centroid_probe_hand_case) {
    float x[] = { 0.0f, 0.2f, 1.0f, 0.6f, 3.0f, 2.0f };
    int32_t y[] = { 0, 0, 1, 1, 1, 0 };
    CHECK_NEAR(gx_metric_centroid_probe(x, y, 6, 1, 2), 1.0 / 6.0, 1e-12);
    /* Separated classes: every row right. */
    float sep[] = { 0, 0, -0.1f, 0.1f, 10, 10, 9.9f, 10.2f };
    int32_t ys[] = { 0, 0, 1, 1 };
    CHECK_NEAR(gx_metric_centroid_probe(sep, ys, 4, 2, 2), 1.0, 0);
    /* An unlabelled row takes no part; a class seen in one fold only is no
     * candidate when the other fold is scored, so its rows cannot be right. */
    float u[] = { 0, 5, 0.1f, 7, 5.1f };
    int32_t yu[] = { 0, 1, 0, 2, -1 };
    /* Even rows 0, 2 (labels 0, 0; row 4 unlabelled) against the odd fold's
     * means (class 1 = 5, class 2 = 7): both go to class 1, wrong. Odd rows
     * 1 (class 1) and 3 (class 2) against the even fold's (class 0 = .05):
     * both wrong (class 0 is their only candidate). 0 of 4. */
    CHECK_NEAR(gx_metric_centroid_probe(u, yu, 5, 1, 3), 0.0, 0);
    /* Nothing to score, bad values, bad arguments: NaN. */
    CHECK(isnan(gx_metric_centroid_probe(x, y, 1, 1, 2)));
    int32_t none[] = { -1, -1, -1, -1, -1, -1 };
    CHECK(isnan(gx_metric_centroid_probe(x, none, 6, 1, 2)));
    float bad[] = { 0.0f, NAN, 1.0f, 0.6f };
    CHECK(isnan(gx_metric_centroid_probe(bad, y, 4, 1, 2)));
    CHECK(isnan(gx_metric_centroid_probe(NULL, y, 6, 1, 2)));
}

/* Features that ignore the label score near the largest class share;
 * features equal to a one-hot of the label score 1. */
GX_TEST(metrics_centroid_probe_chance_and_perfect) {
    enum { N = 2000, D = 8, K = 4 };
    float *f = malloc(sizeof(float) * N * D), *oh = malloc(sizeof(float) * N * K);
    int32_t *y = malloc(sizeof(int32_t) * N);
    uint64_t r = 12345;
    for (int i = 0; i < N; i++) {
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        y[i] = (int32_t)((r >> 33) % K);
        for (int j = 0; j < D; j++) {
            r = r * 6364136223846793005ULL + 1442695040888963407ULL;
            f[i * D + j] = (float)((double)(r >> 11) / 9007199254740992.0);
        }
        for (int c = 0; c < K; c++) oh[i * K + c] = c == y[i];
    }
    double p = gx_metric_centroid_probe(f, y, N, D, K);
    CHECK_MSG(p > 0.20 && p < 0.32, "uninformative features: probe %g, chance about 0.25", p);
    CHECK_NEAR(gx_metric_centroid_probe(oh, y, N, K, K), 1.0, 0);
    free(f);
    free(oh);
    free(y);
}

/* ------------------------------------------- against brute-force definitions */

/* Scores on 6 levels (many ties) against random labels: the sort-and-group
 * implementation must equal the textbook definitions computed the slow way:
 * AUC = P(s+ > s-) + P(s+ = s-)/2 over all pairs, and AP summed over every
 * distinct threshold t of (recall(t) - recall(previous t)) * precision(t). */
GX_TEST(metrics_auc_ap_match_brute_force_with_ties) {
    enum { N = 157 };
    double s[N];
    uint8_t y[N];
    uint64_t r = 99;
    for (int i = 0; i < N; i++) {
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        s[i] = (double)((r >> 33) % 6) / 5.0;
        y[i] = (uint8_t)(((r >> 20) % 3) == 0);
    }
    double wins = 0, pairs = 0;
    int n_pos = 0;
    for (int i = 0; i < N; i++) {
        n_pos += y[i];
        for (int j = 0; j < N; j++) {
            if (!y[i] || y[j]) continue;
            pairs += 1;
            wins += s[i] > s[j] ? 1.0 : s[i] == s[j] ? 0.5 : 0.0;
        }
    }
    CHECK(n_pos > 10 && n_pos < N - 10);
    CHECK_NEAR(gx_metric_roc_auc(s, y, N), wins / pairs, 1e-12);
    double ap = 0, prev_recall = 0;
    for (int level = 5; level >= 0; level--) {           /* thresholds high to low */
        double t = level / 5.0, tp = 0, pred = 0;
        for (int i = 0; i < N; i++)
            if (s[i] >= t) { pred += 1; tp += y[i]; }
        if (pred == 0) continue;
        double recall = tp / n_pos;
        ap += (recall - prev_recall) * (tp / pred);
        prev_recall = recall;
    }
    CHECK_NEAR(gx_metric_average_precision(s, y, N), ap, 1e-12);
}
