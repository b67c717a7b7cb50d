/*
 * resnet18.c — the torchvision-style ResNet trunks (models/gx_resnet18.h):
 * gx_rn18 (ResNet-18, one BN set) and the generic gx_resnet (BasicBlock or
 * Bottleneck, any blocks per stage, several BN sets), both from engine ops
 * only (conv2d, batch norm, ReLU, add, max pool, adaptive average pool), so
 * their gradients come from the ops' backwards. gx_rn18 is built from the
 * same block code with one set, so the two cannot drift apart.
 */
#include "gx_resnet18.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Registration state: registry, base RNG (one fork per tensor) and prefix. */
typedef struct {
    gx_params  *p;
    gx_rng      rng;
    uint64_t    stream;
    const char *prefix;
    int         nsets;                 /* BN statistic sets */
} rn_reg;

/* A bias-free conv weight [out,in,k,k], kaiming-normal fan_out with the
 * ReLU gain, as torchvision's ResNet.__init__. */
static gx_tensor *rn_conv(rn_reg *r, const char *name, int64_t in, int64_t out, int64_t k) {
    char full[256];
    snprintf(full, sizeof full, "%s.%s.weight", r->prefix, name);
    gx_tensor *w = gx_params_add(r->p, full, 4, GX_SHAPE(out, in, k, k), GX_PARAM_DECAY);
    gx_rng s = gx_rng_fork(&r->rng, r->stream++);
    if (w->data)   /* NULL in a shapes-only registry (gx_params_init_shapes) */
        gx_rng_fill_normal(&s, w->data, w->numel, 0.0, sqrt(2.0 / (double)(out * k * k)));
    return w;
}

/* BN weight 1, bias 0, running mean 0, var 1 (gx_bn_layer_init's defaults). */
static void rn_bn(rn_reg *r, gx_bn_layer *bn, const char *name, int64_t c) {
    char full[256];
    snprintf(full, sizeof full, "%s.%s", r->prefix, name);
    gx_bn_layer_init(bn, r->p, full, c, r->nsets, NULL);
    bn->eps = 1e-5;
    bn->momentum = 0.1;
}

/* Block `idx` of layer `layer` (1-based, as the names): in -> planes
 * (BasicBlock: out = planes; Bottleneck: out = 4 planes). */
static void rn_block(rn_reg *r, gx_resnet_block *b, int layer, int idx, int64_t in, int64_t planes,
                     int stride, int bottleneck) {
    char n[64];
    int64_t out = bottleneck ? 4 * planes : planes;
    memset(b, 0, sizeof *b);
    b->stride = stride;
#define N(suffix) (snprintf(n, sizeof n, "layer%d.%d.%s", layer, idx, suffix), n)
    if (bottleneck) {
        b->conv1 = rn_conv(r, N("conv1"), in, planes, 1);
        rn_bn(r, &b->bn1, N("bn1"), planes);
        b->conv2 = rn_conv(r, N("conv2"), planes, planes, 3);
        rn_bn(r, &b->bn2, N("bn2"), planes);
        b->conv3 = rn_conv(r, N("conv3"), planes, out, 1);
        rn_bn(r, &b->bn3, N("bn3"), out);
    } else {
        b->conv1 = rn_conv(r, N("conv1"), in, out, 3);
        rn_bn(r, &b->bn1, N("bn1"), out);
        b->conv2 = rn_conv(r, N("conv2"), out, out, 3);
        rn_bn(r, &b->bn2, N("bn2"), out);
    }
    b->down = NULL;
    if (stride != 1 || in != out) {
        b->down = rn_conv(r, N("downsample.0"), in, out, 1);
        rn_bn(r, &b->down_bn, N("downsample.1"), out);
    }
#undef N
}

void gx_rn18_init(gx_rn18 *r, gx_params *p, const char *prefix, int64_t in_channels,
                  int64_t width, const gx_rng *rng) {
    GX_ASSERT_MSG(in_channels > 0 && width > 0, "gx_rn18_init: bad in_channels %lld / width %lld",
                  (long long)in_channels, (long long)width);
    memset(r, 0, sizeof *r);
    r->width = width;
    rn_reg g = { p, *rng, 0, prefix, 1 };
    r->conv1 = rn_conv(&g, "conv1", in_channels, width, 7);
    rn_bn(&g, &r->bn1, "bn1", width);
    int64_t in = width;
    for (int layer = 1; layer <= 4; layer++) {
        int64_t out = width << (layer - 1);
        for (int i = 0; i < 2; i++) {
            int stride = (layer > 1 && i == 0) ? 2 : 1;
            rn_block(&g, &r->block[2 * (layer - 1) + i], layer, i, in, out, stride, 0);
            in = out;
        }
    }
}

int64_t gx_rn18_features(const gx_rn18 *r) {
    return 8 * r->width;
}

static gx_tensor *rn_bn_fwd(gx_ctx *ctx, const gx_bn_layer *bn, int set, gx_tensor *x,
                            int training) {
    return gx_bn_layer_forward(ctx, bn, set, x, training);
}

static gx_tensor *rn_block_fwd(gx_ctx *ctx, const gx_resnet_block *b, gx_tensor *x, int set,
                               int training) {
    gx_tensor *h;
    if (b->conv3) {   /* Bottleneck: the stride sits on the 3x3 conv (torchvision v1.5) */
        h = gx_relu(ctx, rn_bn_fwd(ctx, &b->bn1, set, gx_conv2d(ctx, x, b->conv1, NULL, 1, 0, 1),
                                   training));
        h = gx_relu(ctx, rn_bn_fwd(ctx, &b->bn2, set,
                                   gx_conv2d(ctx, h, b->conv2, NULL, b->stride, 1, 1), training));
        h = rn_bn_fwd(ctx, &b->bn3, set, gx_conv2d(ctx, h, b->conv3, NULL, 1, 0, 1), training);
    } else {
        h = gx_conv2d(ctx, x, b->conv1, NULL, b->stride, 1, 1);
        h = gx_relu(ctx, rn_bn_fwd(ctx, &b->bn1, set, h, training));
        h = rn_bn_fwd(ctx, &b->bn2, set, gx_conv2d(ctx, h, b->conv2, NULL, 1, 1, 1), training);
    }
    gx_tensor *id = x;
    if (b->down)
        id = rn_bn_fwd(ctx, &b->down_bn, set, gx_conv2d(ctx, x, b->down, NULL, b->stride, 0, 1),
                       training);
    return gx_relu(ctx, gx_add(ctx, h, id));
}

/* Stem: conv1 7x7 s2 p3, bn1, ReLU, max pool 3x3 s2 p1. */
static gx_tensor *rn_stem_fwd(gx_ctx *ctx, gx_tensor *conv1, const gx_bn_layer *bn1, gx_tensor *x,
                              int set, int training, const char *who) {
    char s[96];
    GX_ASSERT_MSG(x->ndim == 4 && x->shape[1] == conv1->shape[1],
                  "%s: x must be [B,%lld,H,W], got %s", who, (long long)conv1->shape[1],
                  gx_tensor_shape_str(x, s, sizeof s));
    gx_tensor *h = gx_conv2d(ctx, x, conv1, NULL, 2, 3, 1);
    h = gx_relu(ctx, rn_bn_fwd(ctx, bn1, set, h, training));
    return gx_max_pool2d(ctx, h, 3, 2, 1);
}

gx_tensor *gx_rn18_forward(gx_ctx *ctx, const gx_rn18 *r, gx_tensor *x, int training) {
    gx_tensor *h = rn_stem_fwd(ctx, r->conv1, &r->bn1, x, 0, training, "gx_rn18_forward");
    for (int i = 0; i < 8; i++) h = rn_block_fwd(ctx, &r->block[i], h, 0, training);
    h = gx_adaptive_avg_pool2d(ctx, h, 1, 1);
    return gx_reshape(ctx, h, 2, GX_SHAPE(x->shape[0], gx_rn18_features(r)));
}

/* ------------------------------------------------------------ generic */

void gx_resnet_init(gx_resnet *r, gx_params *p, const char *prefix, const gx_resnet_config *cfg,
                    const gx_rng *rng) {
    GX_ASSERT_MSG(cfg->in_channels > 0 && cfg->bn_sets >= 1 && cfg->bn_sets <= GX_BN_MAX_SETS,
                  "gx_resnet_init: bad in_channels %lld / bn_sets %d",
                  (long long)cfg->in_channels, cfg->bn_sets);
    memset(r, 0, sizeof *r);
    r->cfg = *cfg;
    for (int l = 0; l < 4; l++) {
        GX_ASSERT_MSG(cfg->blocks[l] >= 1 && cfg->widths[l] >= 1,
                      "gx_resnet_init: stage %d has %d blocks of width %lld", l + 1,
                      cfg->blocks[l], (long long)cfg->widths[l]);
        r->nblocks += cfg->blocks[l];
    }
    r->block = calloc((size_t)r->nblocks, sizeof *r->block);
    GX_ASSERT_MSG(r->block != NULL, "gx_resnet_init: out of memory (%d blocks)", r->nblocks);
    rn_reg g = { p, *rng, 0, prefix, cfg->bn_sets };
    r->conv1 = rn_conv(&g, "conv1", cfg->in_channels, cfg->widths[0], 7);
    rn_bn(&g, &r->bn1, "bn1", cfg->widths[0]);
    int64_t in = cfg->widths[0];
    int k = 0;
    for (int layer = 1; layer <= 4; layer++) {
        int64_t planes = cfg->widths[layer - 1];
        for (int i = 0; i < cfg->blocks[layer - 1]; i++) {
            int stride = (layer > 1 && i == 0) ? 2 : 1;
            rn_block(&g, &r->block[k++], layer, i, in, planes, stride, cfg->bottleneck);
            in = cfg->bottleneck ? 4 * planes : planes;
        }
    }
}

void gx_resnet_free(gx_resnet *r) {
    free(r->block);
    r->block = NULL;
    r->nblocks = 0;
}

int64_t gx_resnet_features(const gx_resnet *r) {
    return r->cfg.widths[3] * (r->cfg.bottleneck ? 4 : 1);
}

gx_tensor *gx_resnet_forward(gx_ctx *ctx, const gx_resnet *r, gx_tensor *x, int set, int training) {
    GX_ASSERT_MSG(set >= 0 && set < r->cfg.bn_sets, "gx_resnet_forward: BN set %d of %d", set,
                  r->cfg.bn_sets);
    gx_tensor *h = rn_stem_fwd(ctx, r->conv1, &r->bn1, x, set, training, "gx_resnet_forward");
    for (int i = 0; i < r->nblocks; i++) h = rn_block_fwd(ctx, &r->block[i], h, set, training);
    h = gx_adaptive_avg_pool2d(ctx, h, 1, 1);
    return gx_reshape(ctx, h, 2, GX_SHAPE(x->shape[0], gx_resnet_features(r)));
}
