/*
 * resnet18.c — the torchvision-style ResNet-18 trunk (models/gx_resnet18.h)
 * from engine ops only (conv2d, batch norm, ReLU, add, max pool, adaptive
 * average pool), so its gradients come from the ops' backwards.
 */
#include "gx_resnet18.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

/* Registration state: registry, base RNG (one fork per tensor) and prefix. */
typedef struct {
    gx_params  *p;
    gx_rng      rng;
    uint64_t    stream;
    const char *prefix;
} rn_reg;

/* A bias-free conv weight [out,in,k,k], kaiming-normal fan_out with the
 * ReLU gain, as torchvision's ResNet.__init__. */
static gx_tensor *rn_conv(rn_reg *r, const char *name, int64_t in, int64_t out, int64_t k) {
    char full[256];
    snprintf(full, sizeof full, "%s.%s.weight", r->prefix, name);
    gx_tensor *w = gx_params_add(r->p, full, 4, GX_SHAPE(out, in, k, k), GX_PARAM_DECAY);
    gx_rng s = gx_rng_fork(&r->rng, r->stream++);
    gx_rng_fill_normal(&s, w->data, w->numel, 0.0, sqrt(2.0 / (double)(out * k * k)));
    return w;
}

/* BN weight 1, bias 0, running mean 0, var 1 (gx_bn_layer_init's defaults). */
static void rn_bn(rn_reg *r, gx_bn_layer *bn, const char *name, int64_t c) {
    char full[256];
    snprintf(full, sizeof full, "%s.%s", r->prefix, name);
    gx_bn_layer_init(bn, r->p, full, c, 1, NULL);
    bn->eps = 1e-5;
    bn->momentum = 0.1;
}

/* Block `idx` of layer `layer` (1-based, as the names): in -> out channels. */
static void rn_block(rn_reg *r, gx_rn18_block *b, int layer, int idx, int64_t in, int64_t out,
                     int stride) {
    char n[64];
    b->stride = stride;
#define N(suffix) (snprintf(n, sizeof n, "layer%d.%d.%s", layer, idx, suffix), n)
    b->conv1 = rn_conv(r, N("conv1"), in, out, 3);
    rn_bn(r, &b->bn1, N("bn1"), out);
    b->conv2 = rn_conv(r, N("conv2"), out, out, 3);
    rn_bn(r, &b->bn2, N("bn2"), out);
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
    rn_reg g = { p, *rng, 0, prefix };
    r->conv1 = rn_conv(&g, "conv1", in_channels, width, 7);
    rn_bn(&g, &r->bn1, "bn1", width);
    int64_t in = width;
    for (int layer = 1; layer <= 4; layer++) {
        int64_t out = width << (layer - 1);
        for (int i = 0; i < 2; i++) {
            int stride = (layer > 1 && i == 0) ? 2 : 1;
            rn_block(&g, &r->block[2 * (layer - 1) + i], layer, i, in, out, stride);
            in = out;
        }
    }
}

int64_t gx_rn18_features(const gx_rn18 *r) {
    return 8 * r->width;
}

static gx_tensor *rn_bn_fwd(gx_ctx *ctx, const gx_bn_layer *bn, gx_tensor *x, int training) {
    return gx_bn_layer_forward(ctx, bn, 0, x, training);
}

static gx_tensor *rn_block_fwd(gx_ctx *ctx, const gx_rn18_block *b, gx_tensor *x, int training) {
    gx_tensor *h = gx_conv2d(ctx, x, b->conv1, NULL, b->stride, 1, 1);
    h = gx_relu(ctx, rn_bn_fwd(ctx, &b->bn1, h, training));
    h = rn_bn_fwd(ctx, &b->bn2, gx_conv2d(ctx, h, b->conv2, NULL, 1, 1, 1), training);
    gx_tensor *id = x;
    if (b->down)
        id = rn_bn_fwd(ctx, &b->down_bn, gx_conv2d(ctx, x, b->down, NULL, b->stride, 0, 1), training);
    return gx_relu(ctx, gx_add(ctx, h, id));
}

gx_tensor *gx_rn18_forward(gx_ctx *ctx, const gx_rn18 *r, gx_tensor *x, int training) {
    char s[96];
    GX_ASSERT_MSG(x->ndim == 4 && x->shape[1] == r->conv1->shape[1],
                  "gx_rn18_forward: x must be [B,%lld,H,W], got %s",
                  (long long)r->conv1->shape[1], gx_tensor_shape_str(x, s, sizeof s));
    gx_tensor *h = gx_conv2d(ctx, x, r->conv1, NULL, 2, 3, 1);
    h = gx_relu(ctx, rn_bn_fwd(ctx, &r->bn1, h, training));
    h = gx_max_pool2d(ctx, h, 3, 2, 1);
    for (int i = 0; i < 8; i++) h = rn_block_fwd(ctx, &r->block[i], h, training);
    h = gx_adaptive_avg_pool2d(ctx, h, 1, 1);
    return gx_reshape(ctx, h, 2, GX_SHAPE(x->shape[0], gx_rn18_features(r)));
}
