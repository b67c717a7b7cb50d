/*
 * gx_wm_loss.h — the training losses of WaveletMamba (spec/wavelet-mamba.md,
 * "Training losses"), built from engine ops in models/wm_loss.c so every
 * gradient comes from the tape.
 *
 *   gx_wm_loss_cfg cfg = gx_wm_loss_cfg_default();
 *   cfg.hk_weight = gx_wm_loss_hk_weight(&cfg, epoch);        // once per epoch
 *   gx_wm_out o = gx_wm_forward(&ctx, &m, x, coords, 1);
 *   gx_wm_loss_in in = gx_wm_loss_inputs(&o, &m, labels, z_true);
 *   gx_wm_loss_out L = gx_wm_loss(&ctx, &cfg, &in);
 *   gx_backward(&ctx, L.total, NULL);                          // L.cls, L.red, ... to log
 *
 * Terms (B samples, D = mu width, 256 in the model):
 *   cls  adaptive focal loss over every sample;
 *   red  colour-weighted squared log(1+z) error over the samples that have a
 *        redshift (z finite and > 0): "participating" samples;
 *   hk   Hellinger-Kantorovich distance (Sinkhorn) between 40-bin soft
 *        histograms of predicted and true redshift, participating samples only;
 *   vib  KL(posterior || learnable diagonal prior), averaged over dims and batch;
 *   lsi  w_lsi * mean_i sqrt(exp(lsi_c_log) * max(KL_i, 1e-8)).
 *   total = w_cls*cls + w_red*red + hk_weight*hk + w_vib*vib + lsi.
 *
 * Quantities treated as constants (no gradient through them), as the spec
 * says or as the authors' code does through .item():
 *   - the focal gamma (computed from the batch's mean cross-entropy);
 *   - the colour weights (from c4[:,1], which gets no gradient from the loss);
 *   - zmax of the HK histograms (it depends on the predictions' maximum);
 *   - the target histograms (they need no gradient).
 * Gradients flow into logits, redshift, mu, logvar, prior_mu, prior_logvar
 * and lsi_c_log (whichever of them require grad).
 *
 * Decisions where the spec leaves room (details in models/wm_loss.c):
 *   - missing redshift = NaN, +-inf or <= 0; such samples are left out of red
 *     and hk (means over participating samples; hk's zmax and the batch-mode
 *     mean histograms too). No participating sample: red = hk = 0 exactly,
 *     with no gradient (so no NaN anywhere).
 *   - the colour statistics (mean/std of valid g-r) are taken over every
 *     sample of the batch, with or without a redshift, as the authors' code does.
 *   - hk_weight == 0 skips the HK term: cls..lsi only, hk reported as 0 (the
 *     authors' code reports 0 while HK is off).
 */
#ifndef GX_WM_LOSS_H
#define GX_WM_LOSS_H

#include "gx.h"
#include "gx_wavelet_mamba.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    GX_WM_HK_SAMPLE = 0,   /* reference: HK per sample (a_i, b_i histograms), mean over i */
    GX_WM_HK_BATCH = 1     /* paper text: HK once between the batch's mean histograms */
} gx_wm_hk_mode;

/* Every weight and constant of the losses. Defaults = the authors' training
 * script (gx_wm_loss_cfg_default); the Table-3 photo-z runs differ in HK mode,
 * Sinkhorn lambda and the HK schedule (gx_wm_loss_cfg_table3). */
typedef struct gx_wm_loss_cfg {
    /* term weights */
    double w_cls;            /* 0.90 */
    double w_red;            /* 0.10 */
    double w_vib;            /* 0.25 */
    double w_lsi;            /* 0.12 (inside L_lsi, as the spec writes it) */
    double hk_weight;        /* weight of HK in this step: the trainer sets it per
                              * epoch with gx_wm_loss_hk_weight (default 0.035 = on) */
    int    colour_weights;   /* 1: colour-aware weights in red (the spec, default);
                              * 0: every participating sample weighs 1 (plain
                              * log-MSE: the "MSE only" rows of the paper's Table 3) */
    /* HK schedule, used only by gx_wm_loss_hk_weight */
    double hk_weight_max;    /* 0.035 (Table 3: 0.30) */
    int    hk_start_epoch;   /* 2: epochs are 0-based, as the authors' loop index */
    int    hk_ramp_end_epoch;/* 2 = a step (Table 3: 10 = linear ramp over 2..10) */
    /* HK term */
    gx_wm_hk_mode hk_mode;   /* GX_WM_HK_SAMPLE (Table 3: GX_WM_HK_BATCH) */
    double sk_lambda;        /* Sinkhorn entropic lambda, 0.5 (Table 3: 0.1) */
    int    sk_iters;         /* 50 */
    double sk_eps;           /* 1e-4, Sinkhorn denominators */
    int    hk_bins;          /* 40 */
    double hk_delta;         /* 1.0: C_ij = (c_i - c_j)^2 + delta^2 */
    /* focal loss: gamma = clamp(gamma0 + clamp(0.5 (mean ce - 0.5), -1, 1), 1, 5) */
    double focal_gamma0;     /* 2.5 */
    double focal_alpha;      /* 0.6 */
    double focal_alpha0;     /* 0.85, alpha of class 0 */
} gx_wm_loss_cfg;

gx_wm_loss_cfg gx_wm_loss_cfg_default(void);
/* Default, except: HK mode batch, Sinkhorn lambda 0.1, schedule 0 -> 0.30
 * over epochs 2..10 (hk_weight starts at 0: set it per epoch). */
gx_wm_loss_cfg gx_wm_loss_cfg_table3(void);
/* HK weight of a 0-based epoch: 0 before hk_start_epoch; hk_weight_max from
 * hk_ramp_end_epoch on; linear in between (0 at hk_start_epoch). With the
 * defaults: 0, 0, 0.035, 0.035, ... (the authors' script turns HK on at
 * loop index 2). */
double gx_wm_loss_hk_weight(const gx_wm_loss_cfg *cfg, int epoch);

/* The model outputs and targets the losses read. Tensors are the forward's
 * (arena) tensors; the arrays are the caller's and are only read during the call. */
typedef struct gx_wm_loss_in {
    gx_tensor     *logits;        /* [B,K] */
    const int32_t *labels;        /* [B], 0 <= label < K */
    gx_tensor     *redshift;      /* [B] z-hat */
    const gx_real *z_true;        /* [B]; NaN, inf or <= 0 = no redshift */
    gx_tensor     *mu, *logvar;   /* [B,D] VIB posterior */
    gx_tensor     *prior_mu, *prior_logvar;  /* [D] */
    gx_tensor     *c4;            /* [B,4] normalised colours; only c4[:,1] (g-r) is read */
    gx_tensor     *lsi_c_log;     /* [] (or [1]) learnable LSI constant */
} gx_wm_loss_in;

/* Fills the struct from a forward pass and the model (lsi_c_log). */
gx_wm_loss_in gx_wm_loss_inputs(const gx_wm_out *o, const gx_wm_model *m,
                                const int32_t *labels, const gx_real *z_true);

typedef struct gx_wm_loss_out {
    gx_tensor *total;                   /* 0-D: backward from it */
    gx_tensor *t_cls, *t_red, *t_hk, *t_vib, *t_lsi;   /* 0-D terms (unweighted
                                         * except lsi, which includes w_lsi) */
    double total_value, cls, red, hk, vib, lsi;        /* their values, for logging */
    double gamma;                       /* focal gamma used */
    int64_t n_red;                      /* participating samples (with a redshift) */
    double zmax;                        /* HK histogram range end used (0 if no HK) */
} gx_wm_loss_out;

/* All terms and the total. Asserts shapes (B, K, D consistent). */
gx_wm_loss_out gx_wm_loss(gx_ctx *ctx, const gx_wm_loss_cfg *cfg, const gx_wm_loss_in *in);

/* ---- pieces, exposed for tests and for logging ------------------------- */

/* Focal gamma for a batch mean cross-entropy. */
double gx_wm_loss_focal_gamma(const gx_wm_loss_cfg *cfg, double mean_ce);
/* Colour-aware redshift weights w[B] (1.0 / 0.7 / 0.3) from g-r values
 * gr[i*stride] (stride 4 reads c4[:,1] from c4->data + 1). */
void gx_wm_loss_colour_weights(const gx_real *gr, int64_t stride, int64_t B, double *w);
/* 1 if a true redshift takes part in the redshift terms (finite and > 0). */
int gx_wm_loss_has_redshift(gx_real z);

#ifdef __cplusplus
}
#endif
#endif
