/*
 * gx_resnet18.h — a torchvision-style ResNet-18 trunk on the engine's ops
 * (models/resnet18.c): the image branch of the ResNet-18 baseline (the
 * WaveletMamba heads on ResNet-18 features, gx_wavelet_mamba.h `backbone`).
 *
 *   conv1 7x7 s2 p3 (no bias), bn1, ReLU, max pool 3x3 s2 p1,
 *   layer1..layer4: two BasicBlocks each, widths w, 2w, 4w, 8w (w = 64 is
 *   torchvision's resnet18), the first block of layer2..4 has stride 2 and a
 *   1x1 stride-2 conv + BN `downsample`; adaptive average pool to 1x1.
 *   x [B, Cin, H, W] -> features [B, 8w].
 *
 * Tensor names under `prefix` are torchvision's (conv1.weight, bn1.*,
 * layer1.0.conv1.weight, layer2.0.downsample.0.weight,
 * layer2.0.downsample.1.running_mean, ...), without the final `fc`, so the
 * trunk of a torchvision resnet18 state_dict loads by name (w = 64, Cin = 3).
 * Init as torchvision: convs kaiming-normal (fan_out, ReLU gain:
 * std = sqrt(2 / (Cout k k))), BN weight 1, bias 0; conv weights carry the
 * weight-decay flag, BN tensors do not. BN eps 1e-5, momentum 0.1.
 *
 * Any H, W >= 1 works (every spatial step is padded or adaptive), but BN in
 * training needs more than one value per channel: B >= 2 at layer4's size.
 */
#ifndef GX_RESNET18_H
#define GX_RESNET18_H

#include "gx.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One residual block. BasicBlock (conv3 NULL):
 *   relu(bn2(conv2(relu(bn1(conv1(x))))) + identity), convs 3x3, stride on conv1.
 * Bottleneck (torchvision v1.5, expansion 4): 1x1 conv1 -> 3x3 conv2 (the
 * stride) -> 1x1 conv3 to 4 x planes, each followed by its BN (ReLU but after
 * bn3, where the identity is added first). */
typedef struct gx_resnet_block {
    gx_tensor  *conv1, *conv2, *conv3; /* Basic: [Cout,Cin,3,3], [Cout,Cout,3,3], NULL;
                                          Bottleneck: [P,Cin,1,1], [P,P,3,3], [4P,P,1,1] */
    gx_bn_layer bn1, bn2, bn3;
    gx_tensor  *down;                  /* [Cout,Cin,1,1] or NULL (identity) */
    gx_bn_layer down_bn;
    int         stride;                /* of the 3x3 conv with the stride and of down */
} gx_resnet_block;
typedef gx_resnet_block gx_rn18_block;

typedef struct gx_rn18 {
    int64_t       width;               /* w: layer1's width (64 = torchvision) */
    gx_tensor    *conv1;               /* [w,Cin,7,7] */
    gx_bn_layer   bn1;
    gx_rn18_block block[8];            /* layer1.0, layer1.1, layer2.0, ... layer4.1 */
} gx_rn18;

/* Registers the trunk's tensors in p under `prefix` (e.g.
 * "feature_extractor.resnet") and initialises them; each tensor draws from
 * its own fork of rng. */
void gx_rn18_init(gx_rn18 *r, gx_params *p, const char *prefix, int64_t in_channels,
                  int64_t width, const gx_rng *rng);
/* Feature width of the trunk's output: 8w. */
int64_t gx_rn18_features(const gx_rn18 *r);
/* x [B,Cin,H,W] -> [B,8w]. training: BN batch statistics (running statistics
 * updated), else running statistics. */
gx_tensor *gx_rn18_forward(gx_ctx *ctx, const gx_rn18 *r, gx_tensor *x, int training);

/* ------------------------------------------------------------ generic
 * The same trunk for any torchvision ResNet (stem conv1 7x7 s2 + bn1 + ReLU +
 * max pool, four stages, adaptive average pool), BasicBlock or Bottleneck,
 * with `bn_sets` statistic sets in every BN (domain-specific batch norm:
 * names "<bn>.d0.weight", ...; one set gives PyTorch's plain names).
 * resnet18 = Basic [2,2,2,2] widths 64..512; resnet50 = Bottleneck [3,4,6,3]
 * widths 64..512 (features 2048). Init as gx_rn18 (same per-tensor RNG
 * forks in registration order, so a Basic [2,2,2,2] one-set trunk is
 * bit-identical to gx_rn18_init's). */
typedef struct gx_resnet_config {
    int     bottleneck;                /* 0 BasicBlock (expansion 1), 1 Bottleneck (4) */
    int     blocks[4];                 /* blocks per stage (>= 1) */
    int64_t widths[4];                 /* planes per stage; the stem has widths[0] */
    int64_t in_channels;               /* 3 */
    int     bn_sets;                   /* 1 .. GX_BN_MAX_SETS */
} gx_resnet_config;

typedef struct gx_resnet {
    gx_resnet_config cfg;
    gx_tensor       *conv1;            /* [widths[0],Cin,7,7] */
    gx_bn_layer      bn1;
    int              nblocks;
    gx_resnet_block *block;            /* [nblocks] (malloc'd): layer1.0, layer1.1, ... */
} gx_resnet;

void gx_resnet_init(gx_resnet *r, gx_params *p, const char *prefix, const gx_resnet_config *cfg,
                    const gx_rng *rng);
void gx_resnet_free(gx_resnet *r);
/* Feature width: widths[3] x expansion. */
int64_t gx_resnet_features(const gx_resnet *r);
/* x [B,Cin,H,W] -> [B,E] with BN statistic set `set` (only that set's
 * running statistics move in training). */
gx_tensor *gx_resnet_forward(gx_ctx *ctx, const gx_resnet *r, gx_tensor *x, int set, int training);

#ifdef __cplusplus
}
#endif
#endif
