/*
 * gx_two_models.h — the "two-models" checks of spec/morphology.md §2 for the
 * CF-INN (trainer/gx_two_models.c), behind `galaxy-train two-models`.
 *
 * Two CF-INN models of one config, A and B, are trained on disjoint halves
 * of one dataset's training part (different seeds); then:
 *   memorisation  for each generated sample of A (and of B) the maximum
 *                 cosine similarity over that model's own training images
 *                 and their flips; histogram on [0.98, 1.01]. A peak at 1
 *                 means copying.
 *   A-vs-B        the same latent draws decoded by A and by B; cosine of the
 *                 paired images; histogram on [0.75, 1.05].
 *   inversion     hidden draws eps ~ N(0, I) decoded by A and re-encoded by
 *                 A and by B: A should give eps back (we report the RMS error
 *                 and the per-dimension correlation), B's codes should be
 *                 N(0, I) but uncorrelated with eps; each compared with
 *                 N(0, 1) per dimension by the binned (100 bins) and exact W1.
 *   morphology    C, A, S, G, M20 (gx_morph) of generated images vs held-out
 *                 real images, W1 per statistic, histograms.
 *
 * What "latent draw" means for the CF-INN (the paper's models are diffusion
 * models and flows with one Gaussian latent; ours has the class-dependent
 * hidden space h = F(z1) with the mixture, and z2 ~ N(0, I)): a draw is a
 * class k (cycled over the classes), eps = (eps1 [d1], eps2 [d2]) ~ N(0, I),
 * and the image is D([F^-1(mu_k + eps1), eps2]) — the generator of
 * GET /v1/generate.png. Re-encoding x gives (h', z2'); its eps' is
 * (h' - mu_k, z2') for the same k (A: the draw's class; B: B's nearest
 * mean, as B's mixture means are its own). The inversion statistics use
 * all d = d1 + d2 dimensions.
 *
 * Verdicts (stored as 0/1 metrics and printed in the report) use fixed,
 * documented thresholds so two sizes can be compared:
 *   memorisation passes when fewer than 1% of samples have max cosine > 0.99;
 *   inversion passes when A's reconstruction RMS of eps is below 0.5 (A is
 *   close to invertible on its own samples) and the median over dimensions
 *   of the exact W1 between B's codes and N(0, 1) is below 0.25.
 * Binned W1: 100 bins spanning both samples (the paper bins on A's range;
 * codes that collapse to a narrow range would then look close to N(0, 1)
 * because the whole reference sample is clipped into the edge bins).
 */
#ifndef GX_TWO_MODELS_H
#define GX_TWO_MODELS_H

#include "gx.h"
#include "gx_cf_inn.h"
#include "gx_db.h"

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------- measures */

/* Cosine similarity after the spec's normalisation (mean subtracted, L2 norm;
 * a zero norm counts as 0.001) of two images of n floats. */
double gx_tm_cosine(const float *a, const float *b, int64_t n);

/* maxcos[i] = max over the ntr training images t and their horizontal,
 * vertical and double flips of cosine(gen_i, flip(t)); images are C*S*S. */
gx_status gx_tm_max_cosine(const float *gen, int64_t ng, const float *train, int64_t ntr, int C,
                           int S, double *maxcos, gx_err *err);

/* counts[nbins] of v in [lo, hi] (values outside go to the edge bins). */
void gx_tm_histogram(const double *v, int64_t n, int nbins, double lo, double hi, int64_t *counts);

/* The model steps below run in eval mode without a tape and use ctx as
 * scratch: they reset its arena (pass a context that holds nothing else). */

/* Latent draws: n samples, class k_i = i mod K, eps [n*d] from seed. */
void gx_tm_draw(const gx_cf_model *m, uint64_t seed, int64_t n, int64_t *cls, float *eps);
/* Images of the draws: D([F^-1(mu_k + eps1), eps2]) into x [n*3*S*S]. */
gx_status gx_tm_decode(gx_ctx *ctx, gx_cf_model *m, const int64_t *cls, const float *eps, int64_t n,
                       float *x, gx_err *err);
/* Re-encoding: eps_out [n*d] = (h - mu_c, z2) with c = cls[i], or with
 * c = the nearest mean when cls is NULL. */
gx_status gx_tm_encode_eps(gx_ctx *ctx, gx_cf_model *m, const float *x, const int64_t *cls, int64_t n,
                           float *eps_out, gx_err *err);

/* ------------------------------------------------------------ morphology */

/* C, A, S, G, M20 (in this order). */
#define GX_TM_MORPH_NSTATS 5
const char *gx_tm_morph_stat_name(int i);
/* The image morphology is measured on: the mean of the three bands of a
 * [3,S,S] model image in [0,1], minus the median of its outer 3-pixel frame
 * (statmorph wants background-subtracted data; our cutouts are centred on
 * the galaxy, so the frame is sky). out: S*S. */
void gx_tm_morph_image(const float *x, int S, float *out);
/* stats [n*5] and ok[n] (flag <= 2, every value finite and none statmorph's
 * -99 "not computed") for n images
 * x [n*3*S*S] (segmentation by the paper's recipe, OpenMP over images). */
gx_status gx_tm_morph_measure(const float *x, int64_t n, int S, double *stats, int *ok, gx_err *err);
/* Exact W1 per statistic between two measured sets (rows with ok only);
 * w1[5], NaN for a statistic with no usable row on a side. */
gx_status gx_tm_morph_w1(const double *sa, const int *oka, int64_t na, const double *sb, const int *okb,
                         int64_t nb, double *w1, gx_err *err);

/* ------------------------------------------------------------- the run */

#define GX_TM_MAX_SETS 32

typedef struct gx_two_models_opts {
    const char *data;          /* dataset (io/gx_dataset.h) */
    const char *db_path;
    const char *out_dir;       /* A/, B/ (trainer outputs), report.md, *.png */
    const char *config_name;   /* CF-INN config: tiny | default */
    int      epochs;           /* per model (the trainer's default when 0) */
    int      batch;            /* 0: the trainer's default */
    uint64_t seed;             /* split seed; A trains with seed, B with seed + 1 */
    int64_t  n_train;          /* > 0: use the first n_train images of the training
                                  part (halves of n_train / 2); 0 = all */
    int      n_gen;            /* generated samples per model and check (200) */
    int      n_mem_train;      /* training images per model searched by the
                                  memorisation test (0 = the whole half) */
    int      n_real;           /* held-out (test part) real images for morphology (300) */
    const char *sets[GX_TM_MAX_SETS];   /* "key=value" for both trainers (--set) */
    int      n_sets;
    int      reuse;            /* 1: a model whose out_dir/A|B/last.safetensors exists is
                                  loaded, not trained again (the checks rerun alone; the
                                  caller keeps the data and split options the same) */
    int      progress;         /* as the trainers' */
    const char *command_line;
    gx_device device;          /* where the two models train (--device; the checks run
                                  on the CPU) */
    int      tf32;             /* --tf32, for the training */
} gx_two_models_opts;

void gx_two_models_opts_default(gx_two_models_opts *o);

typedef struct gx_two_models_result {
    int64_t run_id, run_a, run_b;      /* the two-models run and the two training runs */
    int64_t half_n;                    /* training images per model */
    double  mem_frac_a, mem_frac_b;    /* share of samples with max cosine > 0.99 */
    double  mem_max_a, mem_max_b;      /* largest max cosine */
    double  ab_cos_median;             /* A-vs-B paired cosine, median */
    double  inv_rms_a;                 /* RMS of (A's re-encoded eps - eps) */
    double  inv_w1_a_median, inv_w1_b_median;   /* median over dims of binned W1 to N(0,1) */
    double  inv_w1x_a_median, inv_w1x_b_median; /* the same with the exact W1 */
    double  inv_corr_b;                /* mean over dims of |corr(eps, B's eps)| */
    double  morph_w1_a[GX_TM_MORPH_NSTATS];     /* A's samples vs held-out real */
    double  morph_w1_ab[GX_TM_MORPH_NSTATS];    /* A's vs B's samples */
    int     mem_pass, inv_pass;
    char    report_path[1024];
} gx_two_models_result;

/* Trains A and B (trainer/gx_train_cf.h, disjoint halves of one seeded
 * split), runs the four checks, stores every number (metrics rows under a
 * run of model_kind "two-models", histograms in the histograms table of
 * migrations/0005_two_models.sql) and writes out_dir/report.md with PNG
 * histograms beside it. */
gx_status gx_two_models_run(const gx_two_models_opts *o, gx_two_models_result *r, gx_err *err);

/* `galaxy-train report --kind two-models` (and GET /v1/reports/two-models):
 * one Markdown table row per two-models run (runs[0..n_runs), or every
 * finished one when n_runs is 0) from the database: verdicts, the key
 * numbers, morphology W1. GX_ERR_NOTFOUND / GX_ERR_INVALID name a run that
 * is missing or of another kind. */
gx_status gx_two_models_report(gx_db *db, const int64_t *runs, int n_runs, FILE *f, gx_err *err);

#ifdef __cplusplus
}
#endif
#endif
