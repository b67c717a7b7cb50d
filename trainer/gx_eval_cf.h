/*
 * gx_eval_cf.h — evaluation of a CF-INN checkpoint on the test part of its
 * split, and the bundle that galaxyd ships (trainer/gx_eval_cf.c). What
 * `galaxy-train eval` and `galaxy-train bundle` run when the checkpoint's
 * metadata "model" is "cf-inn" (the tool only parses arguments).
 *
 *   gx_eval_cf_opts o;
 *   gx_eval_cf_opts_default(&o);
 *   o.checkpoint = "ck/best.safetensors"; o.data = "synth12k.h5";
 *   o.judge = "models/default/wavelet-mamba.safetensors";   // optional
 *   gx_eval_cf_result r;
 *   if (gx_eval_cf(&o, &r, &err) == GX_OK) printf("%.3f\n", r.cls.accuracy);
 *
 * The test part: the seeded stratified 70/15/15 split of the data, rebuilt
 * with the checkpoint's metadata "split_seed" (written by gx_train_cf), or
 * opts.split_seed when >= 0 (checkpoints from before the key existed); a
 * checkpoint with neither is refused. Images go through the loader exactly
 * as in validation (no augmentation, the checkpoint's crop, resized to its
 * size).
 *
 * Metrics (spec/cf-inn.md, "Metrics"), stored with split "test" under the
 * checkpoint's run id and epoch when db_path is given:
 *   classification over every test image: accuracy, recall_<k>, auc_macro,
 *     auc_micro, ap_macro, nll (mean hidden-space negative log-likelihood),
 *     rec_ssim, rec_msd (x against x~ = D(E(x))), n_test, z2_class_probe
 *     (how well the nearest class mean reads the class from z2, which the
 *     spec calls class-independent; gx_metric_centroid_probe);
 *   counterfactuals over the first cf_n test images x their K-1 other
 *     classes (all test images when cf_n <= 0): cf_valid_hidden,
 *     cf_valid_reencoded, cf_valid_judge (NULL without a judge: stored
 *     rows replace those of an earlier evaluation), judge_acc_x and
 *     judge_acc_rec (the judge's accuracy on those inputs and on their
 *     reconstructions x~; NULL without a judge), cf_judge_unchanged (the
 *     share of counterfactuals the judge gives the class it gives x~: it
 *     saw no class change; NULL without a judge), cf_fallback
 *     (share that needed Delta = mu_q - h), cf_msd_x_cf, cf_ssim_x_cf,
 *     cf_msd_rec_cf, cf_ssim_rec_cf, cf_msd_x_rec, cf_ssim_x_rec, cf_n
 *     (counterfactuals averaged), and the background check:
 *     cf_bg_out / cf_bg_in (means over counterfactuals of mean |x_cf - x~|
 *     outside / inside the galaxy), cf_bg_ratio = cf_bg_out / cf_bg_in,
 *     cf_bg_frac_ok (share of counterfactuals whose own ratio is <= 0.1),
 *     cf_bg_n (counterfactuals whose input had a segment), images_per_s
 *     (classification throughput, loader included), n_params.
 *
 * The background split: the galaxy's segmentation is gx_morph_segment on
 * the band mean of x minus its sky (gx_tm_morph_image, as the two-models
 * checks measure morphology); "inside" is the segment, "outside" the rest.
 * It is taken on the input x, not on x_cf: the question is whether the
 * counterfactual changed pixels where the *input* has no galaxy.
 *
 * The grid (grid_path; the CF-INN paper's Figure 3 with its difference
 * maps): rows are the first test image of each true class, in class order.
 * Upper block: column 0 the input x, then one column per class c: x_cf for
 * target c (for the predicted class, where gx_cf_counterfactuals returns
 * it, the reconstruction x~). Lower block, same rows: column 0 the segment
 * of x that the background check uses (light inside, dark outside), then
 * the mean over bands of x_cf - x~ in a diverging colour map (blue -,
 * white 0, red +) whose range is the largest |value| in the grid (printed).
 * Tiles of S*scale pixels, 2-pixel white gaps. Written atomically.
 *
 * The judge: a wavelet-mamba checkpoint with the model's class count; each
 * x_cf is resized to its input size (io's antialiased resize) when that
 * differs, as the trainer's judge does.
 *
 * Bundle: the checkpoint evaluated as above and copied (tensors byte for
 * byte, every metadata key but an old "test_metrics") with metadata
 * "test_metrics": a JSON object of the metrics above (recall as a list in
 * class order; non-finite values as null) plus data (the data file's base
 * name), part "test", judge (its base name, or null). At most 4095 bytes
 * (what gx_cf_load accepts). Written atomically: --out may be the
 * checkpoint itself.
 */
#ifndef GX_EVAL_CF_H
#define GX_EVAL_CF_H

#include "gx.h"
#include "gx_cf_inn.h"
#include "gx_metrics.h"

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A counterfactual's background numbers count when the input has both a
 * segment and sky: the goal is cf_bg_ratio <= this. */
#define GX_EVAL_CF_BG_GOAL 0.1

typedef struct gx_eval_cf_opts {
    const char *checkpoint;    /* a cf-inn checkpoint (gx_cf_save) with m-hat */
    const char *data;          /* the dataset it was trained on */
    const char *db_path;       /* NULL: do not store */
    const char *judge;         /* wavelet-mamba checkpoint, or NULL */
    int64_t     split_seed;    /* -1: the checkpoint's (default) */
    int         batch;         /* classification batch (64) */
    int64_t     max_test;      /* > 0: only the first max_test test images (tests) */
    int64_t     cf_n;          /* counterfactual images: the first cf_n test images; <= 0: all */
    const char *grid_path;     /* non-NULL: write the counterfactual grid PNG here (below) */
    int         grid_scale;    /* nearest-neighbour enlargement of the grid (0: 3) */
    FILE       *print;         /* the report (NULL: nowhere) */
    gx_device   device;        /* where the passes run, model and judge (the zero value is
                                  the CPU; gx_train_device in gx_train_common.h) */
    int         tf32;          /* 1: TF32 tensor cores on the device */
} gx_eval_cf_opts;

void gx_eval_cf_opts_default(gx_eval_cf_opts *o);

typedef struct gx_eval_cf_result {
    int64_t run_id;            /* the checkpoint's (-1: none) */
    int     epoch;
    int64_t split_seed;
    int64_t n;                 /* test images classified */
    gx_cls_metrics cls;
    double  nll, rec_ssim, rec_msd;
    /* gx_metric_centroid_probe of z2 = E(x)[d1:] over the test images with
     * their true classes: the spec calls z2 class-independent, so this
     * should sit near chance (~1/K); NaN when d2 is 0. */
    double  z2_class_probe;
    int64_t cf_images;         /* test images with counterfactuals */
    int64_t cf_count;          /* counterfactuals (images x K-1 targets) */
    double  cf_valid_hidden, cf_valid_reencoded, cf_valid_judge;   /* judge: NaN without one */
    /* The judge's accuracy (true class) on the inputs x and on their
     * reconstructions x~, over the images with counterfactuals: NaN without a
     * judge. A decoded counterfactual is as blurred as x~, so judge_acc_rec
     * bounds what cf_valid_judge can be expected to reach. */
    double  judge_acc_x, judge_acc_rec;
    /* Share of counterfactuals the judge classes as it classes x~ (it sees
     * no class change): what cf_valid_judge misses is mostly this when
     * the decoder draws the edit too faintly for the judge. NaN without. */
    double  cf_judge_unchanged;
    double  cf_fallback;
    double  cf_msd_x_cf, cf_ssim_x_cf, cf_msd_rec_cf, cf_ssim_rec_cf, cf_msd_x_rec, cf_ssim_x_rec;
    int64_t cf_bg_n;           /* counterfactuals with a background split */
    double  cf_bg_out, cf_bg_in, cf_bg_ratio, cf_bg_frac_ok;
    double  images_per_s;
    int64_t n_params;
} gx_eval_cf_result;

/* Evaluates (see above); prints the report to o->print; stores the rows
 * when o->db_path is set (a checkpoint without a run id stores nothing and
 * says so). Errors name the flag and file. */
gx_status gx_eval_cf(const gx_eval_cf_opts *o, gx_eval_cf_result *r, gx_err *err);

/* The per-image numbers of the classification pass. */
typedef struct gx_eval_cf_image_stats {
    double nll;                /* -log p: -logsumexp(g) - logdet */
    double msd;                /* mean squared difference of x~ and x */
    double ssim;               /* the spec's SSIM (gx_morph_ssim) of x~ against x, mean over bands */
    int    ssim_ok;            /* 0: no SSIM (xr NULL, or gx_morph_ssim failed) */
} gx_eval_cf_image_stats;

/* Image i of a CF-INN forward pass with reconstruction (out: g [B,K],
 * logdet, xrec, z2; host tensors: a device pass reads them back with
 * gx_to_host first), x its input [3,S,S]: the posteriors softmax(g_i) into
 * probs[K], its z2 row into z2[d2] (NULL: not wanted), and the numbers
 * above. xr: 3*S*S floats of scratch (NULL: no SSIM). The trainer's validation and gx_eval_cf both take these numbers
 * from here, so the two report the same metric. */
gx_eval_cf_image_stats gx_eval_cf_image(const gx_cf_out *out, int64_t i, const float *x, int64_t K, int64_t S,
                                        float *xr, gx_real *probs, float *z2);
/* The outputs gx_eval_cf_image reads (g, logdet, x~, z2) on the host: copies
 * of a device pass's (gx_to_host), the same tensors on the CPU. */
gx_cf_out gx_eval_cf_out_host(gx_ctx *ctx, const gx_cf_out *out);

/* The galaxy's segment of x [3,S,S] that the background check uses (see
 * above) into seg (S*S, 1 = galaxy); *found as gx_morph_segment's. img: S*S
 * scratch. The cf-inn trainer's background term takes its mask from here
 * too, so training and the metric split the frame the same way. */
gx_status gx_eval_cf_segment(const float *x, int S, float *img, int32_t *seg, int *found, gx_err *err);

/* The background numbers of one counterfactual: x, xrec, xcf [3,S,S].
 * Segments x (see above); *out_mean and *in_mean are the means of
 * |xcf - xrec| over bands and the pixels outside / inside the segment.
 * *found = 0 (means NaN) when x has no segment or the segment covers the
 * whole image. */
gx_status gx_eval_cf_background(const float *x, const float *xrec, const float *xcf, int S,
                                double *out_mean, double *in_mean, int *found, gx_err *err);

/* The "test_metrics" JSON text (malloc'ed; NULL when out of memory);
 * data and judge are reduced to base names (judge may be NULL). */
char *gx_eval_cf_metrics_json(const gx_eval_cf_result *r, const char *data, const char *judge);

typedef struct gx_cf_bundle_opts {
    const char *checkpoint, *data, *out, *judge;   /* judge may be NULL */
    int64_t     cf_n;          /* as gx_eval_cf_opts (<= 0: every test image) */
    int64_t     split_seed;    /* -1: the checkpoint's */
    int         batch;         /* 0: 64 */
    const char *db_path;       /* also store the rows (NULL: no) */
    const char *grid_path;     /* also draw the grid (NULL: no) */
    FILE       *print;
    gx_device   device;        /* where the evaluation runs (as gx_eval_cf_opts) */
    int         tf32;
} gx_cf_bundle_opts;

/* Evaluates and writes the bundle (see above); r may be NULL. */
gx_status gx_cf_bundle_write(const gx_cf_bundle_opts *o, gx_eval_cf_result *r, gx_err *err);

/* The metadata "model" of a checkpoint file ("wavelet-mamba", "cf-inn",
 * ...) into buf; GX_ERR_IO / GX_ERR_FORMAT name the file when it cannot
 * be read or has none. What the tool dispatches eval and bundle on. */
gx_status gx_checkpoint_model_kind(const char *path, char *buf, size_t n, gx_err *err);

#ifdef __cplusplus
}
#endif
#endif
