/*
 * gx_cf_inn.h — the CF-INN: a classifier that explains itself with
 * counterfactual images (spec/cf-inn.md), on the engine's ops.
 *
 *   models/cf_inn.c       encoder E, decoder D, flow F (forward, inverse,
 *                         log|det|), the Gaussian-mixture hidden space, init
 *   models/cf_inn_loss.c  the losses: IB (L_X, L_Y), multi-scale MMD, the
 *                         differentiable SSIM + L1 "mix" reconstruction loss
 *   models/cf_inn_cf.c    classification, m-hat, counterfactuals with the
 *                         validity guarantee, checkpoint save/load
 *
 *   gx_cf_model m; gx_cf_init(&m, gx_cf_config_tiny(), 1234);
 *   gx_cf_out o = gx_cf_forward(&ctx, &m, x, 0);       // o.z, o.h, o.logdet, o.xrec
 *   gx_cf_loss_terms L = gx_cf_loss(&ctx, &m, &o, x, labels, NULL, &noise_rng, &cfg);
 *   gx_backward(&ctx, L.total, NULL);
 *
 * Tensor names (the checkpoint's; a PyTorch state_dict with the same names
 * loads): encoder.conv{0..3}.{weight,bias}, encoder.fc1.{weight,bias},
 * encoder.fc2.{weight,bias}; decoder.fc1.*, decoder.fc2.*,
 * decoder.conv{0..3}.*, decoder.out.*; flow.block{b}.n1.{0,2,4}.{weight,bias}
 * and flow.block{b}.n2.{0,2,4}.* (lin, ReLU, lin, ReLU, lin as nn.Sequential
 * indices); flow.block{b}.perm (buffer, int permutation stored as float so it
 * travels in the same file); mixture.mu [K,d1]; mhat [K,d1] (buffer: the
 * empirical hidden means, zero until gx_cf_compute_mhat has run) and
 * mhat_valid [K] (buffer: 1 for a class whose m-hat was computed from at least
 * one image).
 */
#ifndef GX_CF_INN_H
#define GX_CF_INN_H

#include "gx.h"
#include "gx_safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GX_CF_MAX_BLOCKS 16
#define GX_CF_MAX_CLASSES 32

typedef struct gx_cf_config {
    int64_t size;          /* S: input S x S (64 default, 32 tiny); must be 16 * 2^k (the
                              encoder's four stride-2 convs end at S/16 and the decoder
                              starts from S/16 x S/16 x 256: size is part of the model) */
    int64_t d, d1;         /* latent width d, class-dependent part d1 (d2 = d - d1) */
    int64_t enc_ch[4];     /* encoder conv widths: 32, 64, 128, 256 */
    int64_t hidden;        /* encoder/decoder fully connected width: 512 */
    int64_t dec_ch[4];     /* decoder conv outputs: 128, 64, 32, 32 */
    int64_t blocks;        /* flow blocks: 8 */
    int64_t subnet;        /* flow subnet width: 256 */
    double  clamp;         /* soft clamp c: 2 */
    int64_t classes;       /* K */
} gx_cf_config;

/* The spec's default: S 64, d 64, d1 16, widths as above, 8 blocks, subnet 256. */
gx_cf_config gx_cf_config_default(void);
/* Tests: S 32, d 16, d1 8, encoder 8/16/32/64, hidden 64, decoder 32/16/8/8,
 * 4 blocks, subnet 32 (the spec's tiny: 16, 8, 8 at 32x32; the widths are ours). */
gx_cf_config gx_cf_config_tiny(void);
/* Parses the checkpoint's config JSON (the keys of gx_cf_config_json);
 * GX_ERR_FORMAT names a missing or bad key. */
gx_status gx_cf_config_parse(const char *json, gx_cf_config *cfg, gx_err *err);
/* JSON text of cfg (malloc'd; NULL on out of memory). */
char *gx_cf_config_json(const gx_cf_config *cfg);

typedef struct { gx_tensor *w, *b; } gx_cf_lin;

typedef struct gx_cf_block {
    int64_t  *perm;        /* [d1]: u = z[perm] (owned copy of the buffer below) */
    int64_t  *inv_perm;    /* [d1] */
    gx_tensor *perm_buf;   /* flow.block{b}.perm [d1], the permutation as numbers */
    gx_tensor *pmat, *inv_pmat;   /* [d1,d1] 0/1 matrices of perm and inv_perm (in consts) */
    gx_cf_lin n1[3], n2[3];/* subnets: N1 reads v_a (d1/2 -> 2*(d1 - d1/2)),
                              N2 reads u_b (d1 - d1/2 -> 2*(d1/2)) */
} gx_cf_block;

typedef struct gx_cf_model {
    gx_cf_config cfg;
    gx_params    params;
    gx_cf_lin    enc_conv[4], enc_fc1, enc_fc2;
    gx_cf_lin    dec_fc1, dec_fc2, dec_conv[4], dec_out;
    gx_cf_block  block[GX_CF_MAX_BLOCKS];
    gx_tensor   *mu;       /* mixture.mu [K,d1] */
    gx_tensor   *mhat;     /* [K,d1] buffer */
    gx_tensor   *mhat_valid;/* [K] buffer */
    /* Constants derived from the buffers, never saved: each block's
     * permutation as a matrix (the forward multiplies by it). Kept here so a
     * device pass reuses one upload (gx_cf_consts_to_cuda) instead of making
     * one per forward, which a CUDA graph could not hold; without it the
     * forward uploads them as it goes. Empty in a shapes-only model. */
    gx_params    consts;
} gx_cf_model;

/* Registers every tensor and initialises from seed: convs/linears PyTorch
 * defaults, flow subnets' weights and biases scaled by 0.1, the seeded
 * permutations, the IB-INN mixture-mean init of the spec (or a seeded Gaussian
 * when d1 < K: centred, scaled so the closest pair is 5 apart). Weight decay
 * flags: none (Adam). mixture.mu is parameter group 1 (the spec's 3x learning
 * rate for the means); every other parameter is group 0. */
void gx_cf_init(gx_cf_model *m, gx_cf_config cfg, uint64_t seed);
/* Names, shapes and flags only (gx_params_init_shapes; see gx_wm_init_shapes). */
void gx_cf_init_shapes(gx_cf_model *m, gx_cf_config cfg);
void gx_cf_free(gx_cf_model *m);
/* After gx_params_load replaced the perm buffers: rebuild perm/inv_perm and
 * check each is a permutation of 0..d1-1 (GX_ERR_FORMAT names the block). */
gx_status gx_cf_sync_perms(gx_cf_model *m, gx_err *err);
/* Uploads the constants (the permutation matrices) to e's device once, as
 * gx_params_to_cuda does for the parameters; gx_cf_free returns them. */
struct gx_cuda_exec;
gx_status gx_cf_consts_to_cuda(gx_cf_model *m, struct gx_cuda_exec *e, gx_err *err);

/* ---------------------------------------------------------------- forward */

typedef struct gx_cf_out {
    gx_tensor *z;          /* [B,d] encoder output */
    gx_tensor *z1, *z2;    /* [B,d1], [B,d2] */
    gx_tensor *h;          /* [B,d1] F(z1 (+ noise in training)) */
    gx_tensor *logdet;     /* [B] log|det dF/dz1| */
    gx_tensor *g;          /* [B,K] g_c(h) = -0.5 ||h - mu_c||^2 - log K */
    gx_tensor *xrec;       /* [B,3,S,S] D(z) */
} gx_cf_out;

/* x [B,3,S,S] in [0,1] (S = cfg.size exactly). noise_sigma > 0 adds
 * sigma * N(0,1) (from rng) to z1 before the flow, as training does (the
 * spec: 0.05); 0 for evaluation. decode 0 skips the decoder (xrec NULL). */
gx_cf_out gx_cf_forward(gx_ctx *ctx, gx_cf_model *m, gx_tensor *x, double noise_sigma,
                        gx_rng *rng, int decode);
/* The same with the additive noise given: h = F(z1 + noise), noise [B,d1]
 * (already scaled by sigma) or NULL for none. gx_cf_forward draws its noise
 * (sigma * N(0,1), B*d1 values in row order from rng) and calls this; tests
 * pass the PyTorch fixture's noise here. */
gx_cf_out gx_cf_forward_noise(gx_ctx *ctx, gx_cf_model *m, gx_tensor *x, gx_tensor *noise,
                              int decode);
gx_tensor *gx_cf_encode(gx_ctx *ctx, gx_cf_model *m, gx_tensor *x);        /* [B,d] */
gx_tensor *gx_cf_decode(gx_ctx *ctx, gx_cf_model *m, gx_tensor *z);        /* [B,3,S,S] */
/* h = F(z1) [B,d1] and, when logdet is not NULL, *logdet = [B]. */
gx_tensor *gx_cf_flow(gx_ctx *ctx, gx_cf_model *m, gx_tensor *z1, gx_tensor **logdet);
/* z1 = F^-1(h) (no tape needed; recorded when grad is on). */
gx_tensor *gx_cf_flow_inverse(gx_ctx *ctx, gx_cf_model *m, gx_tensor *h);
/* g [B,K] from h [B,d1]. */
gx_tensor *gx_cf_mixture_logits(gx_ctx *ctx, gx_cf_model *m, gx_tensor *h);

/* ----------------------------------------------------------------- losses */

typedef struct gx_cf_loss_cfg {
    double beta;           /* 3 */
    double label_smooth;   /* 0.02 */
    double w_rec, w_mmd, w_ib;   /* 20, 10, 1 (a weight of 0 skips the term) */
    double ssim_weight;    /* 0.84 (L_R = a (1-SSIM) + (1-a) L1) */
    int    ssim_window;    /* 11 */
    double ssim_sigma;     /* 1.5 */
    double w_cyc;          /* 0 (the spec's loss); > 0 adds the latent cycle term
                              (gx_cf_cycle_loss, our addition) with this weight */
    double w_bg;           /* 0 (the spec's loss); > 0 adds the background term
                              (gx_cf_background_loss, our addition) with this weight */
    double w_z2;           /* 0 (the spec's loss); > 0 adds the z2 class-mean term
                              (gx_cf_z2_class_loss, our addition) with this weight */
} gx_cf_loss_cfg;
gx_cf_loss_cfg gx_cf_loss_cfg_default(void);

typedef struct gx_cf_loss_terms {
    gx_tensor *total;      /* scalar */
    gx_tensor *l_x, *l_y, *l_ib, *l_mmd, *l_rec, *ssim;   /* scalars (ssim: mean SSIM) */
    gx_tensor *l_cyc;      /* scalar, or NULL when w_cyc is 0 or the batch has 1 image */
    gx_tensor *l_bg;       /* scalar, or NULL when w_bg is 0, the batch has 1 image or
                              the mask has no background pixel */
    gx_tensor *l_z2;       /* scalar, or NULL when w_z2 is 0 */
} gx_cf_loss_terms;

/* Latent cycle term (not in the spec; see cf_inn_loss.c for why): each
 * sample's z2 is decoded with the z1 of its batch neighbour ((i+1) mod B),
 * the result re-encoded, and the mean squared distance of the re-encoded z1
 * to that neighbour's z1 (a constant target, no gradient through it) is the
 * loss. NULL when B < 2 (no neighbour). Gradients reach the decoder and encoder. */
gx_tensor *gx_cf_cycle_loss(gx_ctx *ctx, gx_cf_model *m, const gx_cf_out *o);

/* Background term (not in the spec; see cf_inn_loss.c for why): the same
 * mixed decode as the cycle term, D([z1 of sample (i+1) mod B, z2 of i]),
 * compared with sample i's reconstruction x~ = o->xrec (a constant copy) on
 * its background pixels only: sum |x_mix - x~| * bg / (3 sum bg), bg
 * [B,1,S,S] with 1 outside the galaxy's segment and 0 on it. NULL when B < 2
 * or bg has no 1. Gradients reach the decoder (and, through z2, the encoder). */
gx_tensor *gx_cf_background_loss(gx_ctx *ctx, gx_cf_model *m, const gx_cf_out *o, const gx_tensor *bg);

/* z2 class-mean term (not in the spec; see cf_inn_loss.c for why): the
 * between-class scatter of z2 [B,d2] in the batch, per dimension:
 * (1/d2) sum_c (n_c/B) ||mean of z2 over class c - mean of z2||^2, n_c the
 * batch's samples of class c (labels [B] in [0,K), asserted). 0 when every
 * sample has one class. Gradients reach the encoder through z2. */
gx_tensor *gx_cf_z2_class_loss(gx_ctx *ctx, gx_cf_model *m, gx_tensor *z2, const int64_t *labels);

/* The spec's losses on one batch. labels [B] class indices; mmd_rng draws the
 * m reference samples n ~ N(0, I_d); bg: the background mask of
 * gx_cf_background_loss, needed only when cfg->w_bg != 0 (else NULL). Terms
 * with weight 0 are NULL. */
gx_cf_loss_terms gx_cf_loss(gx_ctx *ctx, gx_cf_model *m, const gx_cf_out *o, gx_tensor *x,
                            const int64_t *labels, const gx_tensor *bg, gx_rng *mmd_rng,
                            const gx_cf_loss_cfg *cfg);
/* The same with the MMD reference samples given: mmd_n [B,d] (NULL only when
 * w_mmd is 0). gx_cf_loss draws them (N(0,1), B*d values in row order from
 * mmd_rng) and calls this; tests pass the PyTorch fixture's samples here.
 * L_X and L_Y are batch means; L_R's L1 term is the mean over every pixel;
 * needs o->xrec when w_rec > 0. Labels must lie in [0, K) (asserted). */
gx_cf_loss_terms gx_cf_loss_given(gx_ctx *ctx, gx_cf_model *m, const gx_cf_out *o, gx_tensor *x,
                                  const int64_t *labels, const gx_tensor *bg, gx_tensor *mmd_n,
                                  const gx_cf_loss_cfg *cfg);
/* Differentiable mean SSIM of a vs b [B,C,H,W] (Gaussian window, K1 0.01,
 * K2 0.03, data range 1, valid positions only: (H-w+1) x (W-w+1)), as in the
 * spec's Metrics section; per-sample values into per_sample[B] when not NULL. */
gx_tensor *gx_cf_ssim(gx_ctx *ctx, gx_tensor *a, gx_tensor *b, int window, double sigma,
                      double *per_sample);
/* Unbiased multi-scale RBF MMD^2 between z [m,d] and n [m,d] (gammas
 * {0.2,0.5,1,2,5} * 2d). */
gx_tensor *gx_cf_mmd(gx_ctx *ctx, gx_tensor *z, gx_tensor *n);

/* ------------------------------------------------ classify, counterfactuals */

/* Eval classification of n images x [n,3,S,S] (floats): pred[n] = argmin_c
 * ||h - mu_c||, probs[n*K] = softmax(g) (may be NULL), nll[n] = -logsumexp(g)
 * - logdet (may be NULL), h_out[n*d1] (may be NULL). Rows are independent
 * (chunks of 32, per-sample ops only). */
gx_status gx_cf_classify(gx_ctx *ctx, gx_cf_model *m, const float *x, int64_t n, int64_t *pred,
                         float *probs, float *nll, float *h_out, gx_err *err);

/* Step 1 of the spec: m-hat_c = mean of h over images predicted as c (pass
 * the training images); writes m->mhat / m->mhat_valid. */
gx_status gx_cf_compute_mhat(gx_ctx *ctx, gx_cf_model *m, const float *x, int64_t n,
                             gx_err *err);

typedef struct gx_cf_result {
    int64_t source;        /* p: predicted class of the input */
    int64_t target;        /* q */
    double  alpha;         /* the alpha used */
    int     fallback;      /* 1: Delta = mu_q - h (no feasible alpha along m-hat) */
    int     reached_hidden;/* argmin_c ||h_cf - mu_c|| == q */
    int     reached_reencoded; /* classify(x_cf) == q */
    double  msd_x_cf, msd_rec_cf, msd_x_rec;     /* MSD of (x,x_cf), (x~,x_cf), (x,x~) */
    double  ssim_x_cf, ssim_rec_cf, ssim_x_rec;  /* SSIM of the same pairs */
} gx_cf_result;

/* Counterfactuals of one image x [3,S,S] for the n_targets classes in
 * targets (the source class itself is allowed: its "counterfactual" is the
 * reconstruction, alpha 0). xrec_out [3*S*S] and xcf_out [n_targets*3*S*S]
 * receive x~ and each x_cf (either may be NULL); res[n_targets]. Needs
 * m->mhat (GX_ERR_INVALID "model has no m-hat" when the checkpoint lacks it;
 * a class with mhat_valid 0 uses mu instead, noted by fallback = 2). */
gx_status gx_cf_counterfactuals(gx_ctx *ctx, gx_cf_model *m, const float *x,
                                const int64_t *targets, int n_targets, float *xrec_out,
                                float *xcf_out, gx_cf_result *res, gx_err *err);

/* New galaxies of class k: h ~ N(mu_k, I), z2 ~ N(0, I) from seed, n images
 * into out [n*3*S*S]; deterministic for (seed, n). */
gx_status gx_cf_generate(gx_ctx *ctx, gx_cf_model *m, int64_t k, uint64_t seed, int64_t n,
                         float *out, gx_err *err);

/* ------------------------------------------------------------ checkpoints */

/* Metadata of a CF-INN checkpoint: format "galaxyd-checkpoint-1", model
 * "cf-inn", config (gx_cf_config_json), classes (JSON list), preprocess
 * ({"size":S,"crop_frac":c}), run_id, epoch, created, and optional extras
 * (test_metrics; split_seed when has_split_seed). */
typedef struct gx_cf_meta {
    char    classes_json[2048];    /* JSON list of K names */
    double  crop_frac;
    int64_t run_id;                /* -1 when none */
    int     epoch;
    char    test_metrics_json[4096];/* "{}" when none */
    int     has_split_seed;        /* 1: split_seed is known (written as metadata "split_seed") */
    int64_t split_seed;            /* seed of the 70/15/15 split (eval rebuilds the test part) */
} gx_cf_meta;

/* Writes m (params incl. buffers) atomically with the metadata above. */
gx_status gx_cf_save(const gx_cf_model *m, const gx_cf_meta *meta, const char *path,
                     gx_err *err);
/* Checks a parsed file (format, model "cf-inn", config) and fills m (init'd
 * here from the file's config; free with gx_cf_free) and meta (may be NULL).
 * GX_ERR_FORMAT names the file's problem (the caller prefixes the path). */
gx_status gx_cf_load(const gx_st_file *f, gx_cf_model *m, gx_cf_meta *meta, gx_err *err);

#ifdef __cplusplus
}
#endif
#endif
