/*
 * gx_uda.h — DeepAstroUDA (spec/uda.md): a ResNet with domain-specific batch
 * norm and a cosine classifier, its three losses, the memory bank and the
 * active tuner, on the engine's ops.
 *
 *   models/uda.c        backbone (tiny | resnet18 | resnet50, two BN sets),
 *                       cosine head, row renormalisation, inference helpers,
 *                       checkpoint save/load
 *   models/uda_loss.c   weighted CE, adaptive clustering against the bank,
 *                       entropy separation; the bank; the tuner
 *
 *   gx_uda_model m; gx_uda_init(&m, gx_uda_config_tiny(), 1234);
 *   gx_uda_out o = gx_uda_forward(&ctx, &m, x, GX_UDA_TARGET, 1);   // o.f, o.logits, o.p
 *
 * Tensor names (torchvision-style under "backbone."): backbone.conv1.weight,
 * backbone.bn1.d0.weight, backbone.bn1.d1.running_mean, ...,
 * backbone.layer1.0.conv1.weight, backbone.layer2.0.downsample.0.weight,
 * backbone.layer2.0.downsample.1.d0.weight, ...; head.weight [K,E] (no bias).
 * Set 0 (d0) is the source domain, set 1 (d1) the target.
 */
#ifndef GX_UDA_H
#define GX_UDA_H

#include "gx.h"
#include "gx_safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GX_UDA_SOURCE 0
#define GX_UDA_TARGET 1
#define GX_UDA_MAX_CLASSES 32

typedef enum {
    GX_UDA_TINY = 0,       /* widths 8/16/32/64, one BasicBlock per stage (E = 64) */
    GX_UDA_RESNET18 = 1,   /* BasicBlock [2,2,2,2], widths 64..512 (E = 512) */
    GX_UDA_RESNET50 = 2    /* Bottleneck [3,4,6,3], widths 64..512, expansion 4 (E = 2048) */
} gx_uda_backbone;

typedef struct gx_uda_config {
    gx_uda_backbone backbone;
    int64_t size;          /* nominal input size (64); any size works (adaptive pool) */
    int64_t classes;       /* K: known source classes */
    double  temperature;   /* T = 0.05 */
} gx_uda_config;

gx_uda_config gx_uda_config_tiny(void);       /* tiny backbone, size 32 */
gx_uda_config gx_uda_config_resnet18(void);   /* size 64 */
gx_uda_config gx_uda_config_resnet50(void);   /* size 64 */
/* Keys backbone ("tiny" | "resnet18" | "resnet50"), size [8,1024], classes
 * [2,GX_UDA_MAX_CLASSES], temperature (0,10]; all required, GX_ERR_FORMAT
 * naming the bad key. */
gx_status gx_uda_config_parse(const char *json, gx_uda_config *cfg, gx_err *err);
char *gx_uda_config_json(const gx_uda_config *cfg);   /* malloc'd JSON */
int64_t gx_uda_feature_dim(const gx_uda_config *cfg);  /* E */

typedef struct gx_uda_model gx_uda_model;   /* defined in models/uda.c's companion below */

/* Opaque internals are fine for the trainer and daemon; params is public so
 * the optimiser, checkpoints and tests can walk the tensors by name. */
struct gx_uda_model {
    gx_uda_config cfg;
    gx_params     params;
    gx_tensor    *head;    /* head.weight [K,E] */
    void         *net;     /* backbone layers (models/uda.c) */
};

/* Registers and initialises every tensor (torchvision init for convs/BN,
 * head rows N(0, 0.01^2) then renormalised to unit norm). Weight-decay flag
 * on conv weights and the head. */
void gx_uda_init(gx_uda_model *m, gx_uda_config cfg, uint64_t seed);
/* Names, shapes and flags only (gx_params_init_shapes; see gx_wm_init_shapes). */
void gx_uda_init_shapes(gx_uda_model *m, gx_uda_config cfg);
void gx_uda_free(gx_uda_model *m);

typedef struct gx_uda_out {
    gx_tensor *f;          /* [B,E] pooled backbone features */
    gx_tensor *logits;     /* [B,K] W f/max(||f||,1e-12) / T */
    gx_tensor *p;          /* [B,K] softmax */
} gx_uda_out;

/* x [B,3,H,W]; domain selects the BN set; training uses batch statistics
 * (updating that set's running statistics). */
gx_uda_out gx_uda_forward(gx_ctx *ctx, gx_uda_model *m, gx_tensor *x, int domain, int training);
/* Rescales each row of the head to unit norm (before every optimiser step,
 * outside the tape). */
void gx_uda_renorm_head(gx_uda_model *m);

/* Eval of n images x [n,3,S,S]: probs [n*K], entropy [n] (H = -sum p ln(p+1e-5)),
 * pred [n] (argmax, first on ties); rows independent (bitwise: a row alone
 * equals its row in any batch). Any output may be NULL. Runs in chunks of 32
 * and resets ctx after each (ctx must hold nothing the caller still needs).
 * GX_ERR_INVALID for n < 1, side outside [8,1024] or a domain other than 0/1. */
gx_status gx_uda_predict(gx_ctx *ctx, gx_uda_model *m, const float *x, int64_t side, int64_t n,
                         int domain, float *probs, float *entropy, int64_t *pred, gx_err *err);

/* ----------------------------------------------------------------- losses */

/* Weighted cross-entropy: class_w[K] (w_k = N/(K n_k)); labels [B]. */
gx_tensor *gx_uda_loss_ce(gx_ctx *ctx, gx_tensor *p, const int64_t *labels,
                          const double *class_w);
/* Entropy separation on target probabilities p [B,K] with (rho, m); the share
 * of samples where it is active into *active_frac (may be NULL). */
gx_tensor *gx_uda_loss_es(gx_ctx *ctx, gx_tensor *p, double rho, double margin,
                          double *active_frac);

/* The memory bank: one slot per training image of both domains. */
typedef struct gx_uda_bank {
    int64_t  n, K, topk;   /* slots, classes, k of the top-k feature index sets */
    float   *p;            /* [n*K] detached probabilities */
    int32_t *topk_idx;     /* [n*topk] sorted top-k feature indices */
    int8_t  *domain;       /* [n] */
    int32_t *label;        /* [n] source label or -1 */
    uint8_t *filled;       /* [n] */
    int      rank_prob;    /* 0 (default): keys are the sorted top-k index sets of f;
                              1 (config ac_rank = prob, the paper's literal rule): keys
                              are the top-min(k,K) class indices of p in order of
                              decreasing probability (-1 padded). Set before the first
                              update; the batch's keys follow the same rule. */
} gx_uda_bank;
/* topk = 3 for K <= 3, else 7 (the spec). Ties in either ranking go to the
 * lower index. */
gx_status gx_uda_bank_init(gx_uda_bank *b, int64_t n, int64_t K, gx_err *err);
void gx_uda_bank_free(gx_uda_bank *b);
/* Overwrites the slots idx[B] with the detached p [B,K] and f [B,E]. */
void gx_uda_bank_update(gx_uda_bank *b, const int64_t *idx, int64_t B, const gx_tensor *p,
                        const gx_tensor *f, int domain, const int64_t *labels);

/* Adaptive clustering: the current target batch's p [B,K] (and its views,
 * stacked after it: rows v*B + i is view v of image i, n_views >= 1) against
 * every filled bank slot not in batch_idx[B]; f [n_views*B or B, E] gives the
 * rows' top-k sets (B rows: views share their image's set). The pairs are
 * every row x every eligible slot (batch rows are unlabelled: the key rule)
 * plus every unordered pair of two views of one image (s = 1); the loss is
 * the mean over all of them, 0 (constant) when there are none. Gradient into
 * p only. max_slots > 0 samples that many eligible slots without
 * replacement (rng required), 0 = all. A fused op that streams over the
 * slots: arena holds the M selected slots' p and one byte per pair, no
 * [R,M] float matrices. */
gx_tensor *gx_uda_loss_ac(gx_ctx *ctx, const gx_uda_bank *b, gx_tensor *p, const gx_tensor *f,
                          int n_views, const int64_t *batch_idx, int64_t B, int64_t max_slots,
                          gx_rng *rng);

/* The paper's Algorithm 1 (see the spec for the counters). */
typedef struct gx_uda_tuner {
    double rho, margin, K_ln;
    int    j, e, c;
    double l_min;
} gx_uda_tuner;
void gx_uda_tuner_init(gx_uda_tuner *t, int64_t K);
/* After an epoch with mean total loss L: returns 1 when a rho or m step was
 * taken (c = 0, 1, 2), 0 otherwise, including the step-size rotation at c = 3
 * (which does reset e). Clamps rho into [1e-3, ln K - 1e-3], m >= 0. */
int gx_uda_tuner_step(gx_uda_tuner *t, double L);

/* ------------------------------------------------------------ checkpoints */

/* Metadata: format "galaxyd-checkpoint-1", model "uda", config, classes (the
 * K known class names), preprocess, run_id, epoch, created, anomaly_threshold
 * (rho), margin, test_metrics. */
typedef struct gx_uda_meta {
    char    classes_json[2048];
    double  crop_frac;
    int64_t run_id;
    int     epoch;
    double  rho, margin;
    char    test_metrics_json[4096];
} gx_uda_meta;
/* Atomic write of every parameter and buffer plus the metadata above. meta
 * may be NULL (classes "class_0".., crop 1, run_id -1, epoch 0, the tuner's
 * starting rho and m); an empty classes_json / test_metrics_json gives the
 * default list / "{}". */
gx_status gx_uda_save(const gx_uda_model *m, const gx_uda_meta *meta, const char *path,
                      gx_err *err);
/* Checks format, model "uda", config (gx_uda_config_parse), classes (a list
 * of K names), anomaly_threshold (required) and loads every tensor strictly
 * by name (a missing or mis-shaped tensor is refused naming it). m is
 * initialised here (free with gx_uda_free; left zeroed on failure); meta may
 * be NULL. */
gx_status gx_uda_load(const gx_st_file *f, gx_uda_model *m, gx_uda_meta *meta, gx_err *err);

#ifdef __cplusplus
}
#endif
#endif
