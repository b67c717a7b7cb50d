/*
 * gx_norm.h — normalisation (kernels/gx_norm.c).
 */
#ifndef GX_NORM_H
#define GX_NORM_H
#ifdef __cplusplus
extern "C" {
#endif

/* Batch norm over dim 1 of x [B, C] or [B, C, H, W] (statistics over every
 * other dim; any [B, C, ...] works, e.g. [B, C, L]). training: normalise with
 * the biased batch variance and update running_mean/var in place with
 * `momentum` (new = (1-m)*old + m*batch; running var uses the unbiased
 * variance, as PyTorch); the gradient goes through the batch statistics.
 * Training needs more than one value per channel (asserted, as PyTorch).
 * Not training: use the running statistics (both required).
 * gamma/beta [C] may be NULL (no affine). running_* may be NULL in training.
 * The running statistics are never differentiated. */
gx_tensor *gx_batchnorm(gx_ctx *ctx, gx_tensor *x, gx_tensor *gamma, gx_tensor *beta,
                        gx_tensor *running_mean, gx_tensor *running_var,
                        int training, double momentum, double eps);

/* Layer norm over the last dim of x [..., D]; gamma/beta [D] or NULL. */
gx_tensor *gx_layernorm(gx_ctx *ctx, gx_tensor *x, gx_tensor *gamma, gx_tensor *beta,
                        double eps);

/* A batch-norm layer with one or more named statistic sets (domain-specific
 * batch norm keeps one {weight, bias, running_mean, running_var} per domain).
 * With one set, tensors are named "<prefix>.weight" etc. (PyTorch BatchNorm);
 * with several, "<prefix>.<set>.weight", e.g. "layer1.0.bn1.d0.weight". */
#define GX_BN_MAX_SETS 4
typedef struct gx_bn_layer {
    int64_t    C;
    int        nsets;
    double     eps, momentum;
    gx_tensor *weight[GX_BN_MAX_SETS], *bias[GX_BN_MAX_SETS];
    gx_tensor *running_mean[GX_BN_MAX_SETS], *running_var[GX_BN_MAX_SETS];
} gx_bn_layer;

/* Registers the tensors (weight 1, bias 0, mean 0, var 1), per set in the
 * order weight, bias, running_mean, running_var (PyTorch state_dict order;
 * num_batches_tracked is not kept). weight/bias are trainable without weight
 * decay (flags 0); the running statistics are GX_PARAM_BUFFER. eps 1e-5 and
 * momentum 0.1 (PyTorch defaults; change bn->eps/momentum after init).
 * set_names may be NULL when nsets == 1; with several sets and NULL names
 * the sets are called "d0", "d1", ... */
void gx_bn_layer_init(gx_bn_layer *bn, gx_params *p, const char *prefix, int64_t C,
                      int nsets, const char *const *set_names);
/* gx_batchnorm with statistic set `set` (0 .. nsets-1); in training only
 * that set's running statistics move. */
gx_tensor *gx_bn_layer_forward(gx_ctx *ctx, const gx_bn_layer *bn, int set,
                               gx_tensor *x, int training);

#ifdef __cplusplus
}
#endif
#endif
