/*
 * gx_norm.h — normalisation (kernels/gx_norm.c).
 */
#ifndef GX_NORM_H
#define GX_NORM_H
#ifdef __cplusplus
extern "C" {
#endif

/* Batch norm over dim 1 of x [B, C] or [B, C, H, W] (statistics over every
 * other dim). training: normalise with the biased batch variance and update
 * running_mean/var in place with `momentum` (running var uses the unbiased
 * variance, as PyTorch). Not training: use the running statistics.
 * gamma/beta [C] may be NULL (no affine). running_* may be NULL in training. */
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

/* Registers the tensors (weight 1, bias 0, mean 0, var 1). set_names may be
 * NULL when nsets == 1. */
void gx_bn_layer_init(gx_bn_layer *bn, gx_params *p, const char *prefix, int64_t C,
                      int nsets, const char *const *set_names);
gx_tensor *gx_bn_layer_forward(gx_ctx *ctx, const gx_bn_layer *bn, int set,
                               gx_tensor *x, int training);

#ifdef __cplusplus
}
#endif
#endif
