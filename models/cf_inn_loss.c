/*
 * cf_inn_loss.c — the CF-INN's training losses (spec/cf-inn.md, "Losses"):
 * the information bottleneck (L_X, L_Y, L_IB), the unbiased multi-scale RBF
 * MMD between the latents and N(0, I), and the "mix" reconstruction loss
 * 0.84 (1 - SSIM) + 0.16 L1 with a differentiable SSIM. Engine ops only.
 *
 * Design decisions:
 *  - SSIM's Gaussian window is separable, so the five local moments (a, b,
 *    a^2, b^2, ab) are stacked into one [B,5C,H,W] tensor and filtered by two
 *    1-D depthwise convs (w x 1, then 1 x w; valid, no padding): 2w taps per
 *    pixel instead of w^2, one conv call each. The depthwise conv accumulates
 *    in double, so the result equals the 2-D window's to float rounding. The
 *    definition is morph/gx_morph_ssim's (skimage, Gaussian weights,
 *    population covariance, valid positions only).
 *  - The MMD's i != j sums multiply the kernel matrices by a constant 0/1
 *    off-diagonal mask instead of subtracting the diagonal: the Gram-form
 *    squared distance of a row with itself is only ~0 in float, and the mask
 *    removes it exactly.
 *  - Device tensors (ctx->cuda): the constants made here (windows, masks,
 *    MMD samples) are filled on the host and moved with gx_to_ctx; the
 *    "constant copies" of activations (x~, the neighbour z1) are taken with
 *    the tape off (cf_tape_off), so they stay on the device and carry no
 *    gradient; host reads go through gx_to_host. On the CPU all of these are
 *    the same copies as before, bit for bit.
 */
#include "gx_cf_inn.h"

#include "gx_cuda.h"
#include <math.h>
#include <string.h>

gx_cf_loss_cfg gx_cf_loss_cfg_default(void) {
    return (gx_cf_loss_cfg){ .beta = 3.0, .label_smooth = 0.02, .w_rec = 20.0, .w_mmd = 10.0,
                             .w_ib = 1.0, .ssim_weight = 0.84, .ssim_window = 11,
                             .ssim_sigma = 1.5 };
}

/* With the tape off: ops copy without recording, so what they return is a
 * constant (no gradient flows back through it). */
static int cf_tape_off(gx_ctx *ctx) {
    int g = ctx->grad_enabled;
    ctx->grad_enabled = 0;
    return g;
}

/* ------------------------------------------------------------------- SSIM */

/* Depthwise 1-D Gaussian window (normalised to sum 1) for n channels, laid
 * out [n,1,w,1] (vertical) or [n,1,1,w] (horizontal). Constant. */
static gx_tensor *cf_gauss_window(gx_ctx *ctx, int64_t n, int w, double sigma, int vertical) {
    gx_tensor *k = gx_tensor_new_host(ctx, 4, vertical ? GX_SHAPE(n, 1, w, 1) : GX_SHAPE(n, 1, 1, w));
    double tap[256], sum = 0;
    int r = (w - 1) / 2;
    for (int i = 0; i < w; i++) {
        tap[i] = exp(-0.5 * (double)((i - r) * (i - r)) / (sigma * sigma));
        sum += tap[i];
    }
    for (int64_t c = 0; c < n; c++)
        for (int i = 0; i < w; i++) k->data[c * w + i] = (gx_real)(tap[i] / sum);
    return gx_to_ctx(ctx, k);
}

gx_tensor *gx_cf_ssim(gx_ctx *ctx, gx_tensor *a, gx_tensor *b, int window, double sigma,
                      double *per_sample) {
    GX_ASSERT_MSG(a->ndim == 4 && gx_tensor_same_shape(a, b), "gx_cf_ssim: a and b must be equal [B,C,H,W]");
    GX_ASSERT_MSG(window >= 1 && window % 2 == 1 && window <= 255 && sigma > 0,
                  "gx_cf_ssim: window %d must be odd in 1..255, sigma %g > 0", window, sigma);
    int64_t B = a->shape[0], C = a->shape[1], H = a->shape[2], W = a->shape[3];
    GX_ASSERT_MSG(H >= window && W >= window, "gx_cf_ssim: image %lldx%lld smaller than window %d",
                  (long long)H, (long long)W, window);
    gx_tensor *parts[5] = { a, b, gx_square(ctx, a), gx_square(ctx, b), gx_mul(ctx, a, b) };
    gx_tensor *st = gx_concat(ctx, 5, parts, 1);                         /* [B,5C,H,W] */
    st = gx_conv2d(ctx, st, cf_gauss_window(ctx, 5 * C, window, sigma, 1), NULL, 1, 0, (int)(5 * C));
    st = gx_conv2d(ctx, st, cf_gauss_window(ctx, 5 * C, window, sigma, 0), NULL, 1, 0, (int)(5 * C));
    gx_tensor *mu_a = gx_slice(ctx, st, 1, 0, C), *mu_b = gx_slice(ctx, st, 1, C, 2 * C);
    gx_tensor *e_aa = gx_slice(ctx, st, 1, 2 * C, 3 * C), *e_bb = gx_slice(ctx, st, 1, 3 * C, 4 * C);
    gx_tensor *e_ab = gx_slice(ctx, st, 1, 4 * C, 5 * C);
    gx_tensor *mu_ab = gx_mul(ctx, mu_a, mu_b);
    gx_tensor *mu_aa = gx_square(ctx, mu_a), *mu_bb = gx_square(ctx, mu_b);
    gx_tensor *var_sum = gx_sub(ctx, gx_add(ctx, e_aa, e_bb), gx_add(ctx, mu_aa, mu_bb));
    gx_tensor *cov = gx_sub(ctx, e_ab, mu_ab);
    const double c1 = 0.01 * 0.01, c2 = 0.03 * 0.03;                    /* data range 1 */
    gx_tensor *num = gx_mul(ctx, gx_affine(ctx, mu_ab, 2.0, c1), gx_affine(ctx, cov, 2.0, c2));
    gx_tensor *den = gx_mul(ctx, gx_add_scalar(ctx, gx_add(ctx, mu_aa, mu_bb), c1),
                            gx_add_scalar(ctx, var_sum, c2));
    gx_tensor *map = gx_div(ctx, num, den);                              /* [B,C,H-w+1,W-w+1] */
    if (per_sample) {
        int64_t per = map->numel / B;
        int g = cf_tape_off(ctx);
        const gx_real *mv = gx_to_host(ctx, map)->data;
        ctx->grad_enabled = g;
        for (int64_t s = 0; s < B; s++) {
            double acc = 0;
            for (int64_t i = 0; i < per; i++) acc += mv[s * per + i];
            per_sample[s] = acc / (double)per;
        }
    }
    return gx_mean_all(ctx, map);
}

/* -------------------------------------------------------------------- MMD */

/* sum over gammas of exp(-d2 / gamma): the multi-scale RBF kernel matrix. */
static gx_tensor *cf_rbf(gx_ctx *ctx, gx_tensor *d2, int64_t d) {
    static const double f[5] = { 0.2, 0.5, 1.0, 2.0, 5.0 };
    gx_tensor *k = NULL;
    for (int i = 0; i < 5; i++) {
        gx_tensor *e = gx_exp(ctx, gx_scale(ctx, d2, -1.0 / (f[i] * 2.0 * (double)d)));
        k = k ? gx_add(ctx, k, e) : e;
    }
    return k;
}

gx_tensor *gx_cf_mmd(gx_ctx *ctx, gx_tensor *z, gx_tensor *n) {
    GX_ASSERT_MSG(z->ndim == 2 && gx_tensor_same_shape(z, n) && z->shape[0] >= 2,
                  "gx_cf_mmd: z and n must be equal [m,d] with m >= 2");
    int64_t m = z->shape[0], d = z->shape[1];
    gx_tensor *off = gx_tensor_new_host(ctx, 2, GX_SHAPE(m, m));
    for (int64_t i = 0; i < m * m; i++) off->data[i] = (i / m == i % m) ? 0 : 1;
    off = gx_to_ctx(ctx, off);
    double pair = 1.0 / (double)(m * (m - 1)), cross = -2.0 / (double)(m * m);
    gx_tensor *kzz = gx_sum_all(ctx, gx_mul(ctx, cf_rbf(ctx, gx_pairwise_sqdist(ctx, z, z), d), off));
    gx_tensor *knn = gx_sum_all(ctx, gx_mul(ctx, cf_rbf(ctx, gx_pairwise_sqdist(ctx, n, n), d), off));
    gx_tensor *kzn = gx_sum_all(ctx, cf_rbf(ctx, gx_pairwise_sqdist(ctx, z, n), d));
    return gx_add(ctx, gx_scale(ctx, gx_add(ctx, kzz, knn), pair), gx_scale(ctx, kzn, cross));
}

/* ------------------------------------------------------------------ total */

static gx_tensor *cf_acc(gx_ctx *ctx, gx_tensor *total, gx_tensor *term, double w) {
    gx_tensor *t = gx_scale(ctx, term, w);
    return total ? gx_add(ctx, total, t) : t;
}

/* L_X, L_Y and L_IB into L (IB-INN form, spec 'Information bottleneck'). */
static void cf_loss_ib(gx_ctx *ctx, const gx_cf_model *m, const gx_cf_out *o, const int64_t *labels,
                       const gx_cf_loss_cfg *cfg, gx_cf_loss_terms *L) {
    int64_t B = o->g->shape[0], K = m->cfg.classes;
    int32_t *y = gx_ctx_alloc(ctx, (size_t)B * sizeof *y);
    for (int64_t i = 0; i < B; i++) {
        GX_ASSERT_MSG(labels[i] >= 0 && labels[i] < K, "gx_cf_loss: label %lld of sample %lld not in [0,%lld)",
                      (long long)labels[i], (long long)i, (long long)K);
        y[i] = (int32_t)labels[i];
    }
    gx_tensor *nll = gx_add(ctx, gx_logsumexp(ctx, o->g, 1, 0), o->logdet);            /* [B] */
    L->l_x = gx_scale(ctx, gx_mean_all(ctx, nll), -1.0 / (double)m->cfg.d1);
    /* F.cross_entropy with label smoothing is exactly -sum_c y~_c log softmax_c. */
    L->l_y = gx_neg(ctx, gx_mean_all(ctx, gx_cross_entropy(ctx, o->g, y, cfg->label_smooth)));
    double beta = cfg->beta;
    L->l_ib = gx_add(ctx, gx_scale(ctx, L->l_x, 2.0 / (1.0 + beta)),
                     gx_scale(ctx, L->l_y, -2.0 * beta / (1.0 + beta)));
}

/* z1 of each sample's batch neighbour, (i+1) mod B, as a constant copy:
 * rows 1..B-1 then row 0, sliced and joined with the tape off (where z1
 * lives, without a trip through the host). */
static gx_tensor *cf_neighbour_z1(gx_ctx *ctx, const gx_cf_out *o) {
    int64_t B = o->z1->shape[0];
    int g = cf_tape_off(ctx);
    gx_tensor *parts[2] = { gx_slice(ctx, o->z1, 0, 1, B), gx_slice(ctx, o->z1, 0, 0, 1) };
    gx_tensor *nb = gx_concat(ctx, 2, parts, 0);
    ctx->grad_enabled = g;
    return nb;
}

/* D([nb, z2]): the decoded mix both added terms judge. */
static gx_tensor *cf_mix_decode(gx_ctx *ctx, gx_cf_model *m, const gx_cf_out *o, gx_tensor *nb) {
    gx_tensor *parts[2] = { nb, o->z2 };
    return gx_cf_decode(ctx, m, gx_concat(ctx, 2, parts, 1));
}

/* The latent cycle term. Why it exists: with the spec's losses alone the
 * decoder learns to read nearly everything from z2 (48 of 64 dims, and the
 * class shows in the image, so nothing stops the encoder from writing it into
 * z2 as well as z1). The bundled model trained that way moved h across the
 * bisector as promised, but the decoded counterfactual differed from x~ by
 * ~1% and re-encoded to the target in 2% of cases. Counterfactuals are
 * D([F^-1(h_cf), z2]) judged by re-encoding, so this term trains exactly
 * that path on real pairs: z1 from one image, z2 from another, and the
 * decoder must draw z1 so that the encoder reads it back. The target is a
 * constant copy; the decoder's z1 input is that copy too, so the term cannot
 * move the encoder's z1 of the batch, only teach the decoder to use it and
 * the encoder to read it. */
static gx_tensor *cf_cycle_of(gx_ctx *ctx, gx_cf_model *m, gx_tensor *x_mix, gx_tensor *nb) {
    gx_tensor *z1_back = gx_slice(ctx, gx_cf_encode(ctx, m, x_mix), 1, 0, nb->shape[1]);
    return gx_mean_all(ctx, gx_square(ctx, gx_sub(ctx, z1_back, nb)));
}

gx_tensor *gx_cf_cycle_loss(gx_ctx *ctx, gx_cf_model *m, const gx_cf_out *o) {
    if (o->z1->shape[0] < 2) return NULL;   /* no neighbour: a last batch of one */
    gx_tensor *nb = cf_neighbour_z1(ctx, o);
    return cf_cycle_of(ctx, m, cf_mix_decode(ctx, m, o, nb), nb);
}

/* The background term. Why it exists: with the cycle term the decoder learnt
 * to draw the target class, but it redraws the whole frame while doing so:
 * the bundled model's counterfactuals changed the sky outside the galaxy by
 * a third as much as the galaxy itself (spec goal: at most a tenth). A
 * counterfactual should answer "what would have to change in THIS galaxy",
 * so the mixed decode of the cycle term, which stands for a counterfactual
 * during training, is held to x~ outside the galaxy's segment. x~ is a
 * constant copy: the term moves the counterfactual towards the
 * reconstruction, never the reconstruction towards it. */
static gx_tensor *cf_background_of(gx_ctx *ctx, gx_tensor *x_mix, const gx_tensor *xrec,
                                   const gx_tensor *bg) {
    int64_t B = x_mix->shape[0], C = x_mix->shape[1], P = x_mix->shape[2] * x_mix->shape[3];
    GX_ASSERT_MSG(bg->ndim == 4 && bg->shape[0] == B && bg->shape[1] == 1 && bg->shape[2] * bg->shape[3] == P,
                  "gx_cf_background_loss: mask must be [%lld,1,S,S]", (long long)B);
    /* x~ as a constant: a view taken with the tape off (x~ is not written
     * again). The mask is read on the host (a host tensor is read in place). */
    int g = cf_tape_off(ctx);
    gx_tensor *ref = gx_reshape(ctx, (gx_tensor *)xrec, 4, x_mix->shape);
    const gx_real *bv = gx_to_host(ctx, (gx_tensor *)bg)->data;
    ctx->grad_enabled = g;
    gx_tensor *w = gx_tensor_new_host(ctx, 4, x_mix->shape);
    double n_bg = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t p = 0; p < P; p++) {
                gx_real v = bv[b * P + p] != 0 ? 1 : 0;
                w->data[(b * C + c) * P + p] = v;
                n_bg += v;
            }
    if (n_bg == 0) return NULL;
    w = gx_to_ctx(ctx, w);
    gx_tensor *d = gx_mul(ctx, gx_abs(ctx, gx_sub(ctx, x_mix, ref)), w);
    return gx_scale(ctx, gx_sum_all(ctx, d), 1.0 / n_bg);
}

gx_tensor *gx_cf_background_loss(gx_ctx *ctx, gx_cf_model *m, const gx_cf_out *o, const gx_tensor *bg) {
    GX_ASSERT_MSG(o->xrec, "gx_cf_background_loss: needs the decoder output x~");
    if (o->z1->shape[0] < 2) return NULL;
    gx_tensor *nb = cf_neighbour_z1(ctx, o);
    return cf_background_of(ctx, cf_mix_decode(ctx, m, o, nb), o->xrec, bg);
}

/* The z2 class-mean term. Why it exists: the spec splits z into a
 * class-dependent z1 and a class-independent z2, and a counterfactual keeps
 * z2. Nothing in the spec's losses makes z2 class-independent: in the
 * session-7 model the nearest class mean of z2 gives the class of 90% of the
 * test images (eval metric z2_class_probe), so a counterfactual's decoder
 * still reads the source's class from z2 and draws the target over the
 * remains of the source (docs/models.md). The term pulls the batch's class
 * means of z2 together (their first moment; the MMD keeps z2 near N(0, I)
 * overall). As a product: D = Q z2 with the constant Q [K,B],
 * Q[c,i] = sqrt(n_c/B) (1[y_i = c]/n_c - 1/B) (row c: the weighted
 * difference of class c's mean and the batch mean), and the term is
 * sum(D^2)/d2 — two engine ops, so its gradient is theirs. */
gx_tensor *gx_cf_z2_class_loss(gx_ctx *ctx, gx_cf_model *m, gx_tensor *z2, const int64_t *labels) {
    const int64_t K = m->cfg.classes, B = z2->shape[0], d2 = z2->shape[1];
    GX_ASSERT_MSG(z2->ndim == 2 && d2 > 0 && B > 0, "gx_cf_z2_class_loss: z2 must be [B,d2], d2 > 0");
    int64_t n[GX_CF_MAX_CLASSES] = { 0 };
    for (int64_t i = 0; i < B; i++) {
        GX_ASSERT_MSG(labels[i] >= 0 && labels[i] < K, "gx_cf_z2_class_loss: label %lld of sample %lld not in "
                      "[0,%lld)", (long long)labels[i], (long long)i, (long long)K);
        n[labels[i]]++;
    }
    gx_tensor *Q = gx_tensor_new_host(ctx, 2, GX_SHAPE(K, B));
    for (int64_t c = 0; c < K; c++)
        for (int64_t i = 0; i < B; i++)
            Q->data[c * B + i] = n[c] ? (gx_real)(sqrt((double)n[c] / (double)B) *
                                                  ((labels[i] == c ? 1.0 / (double)n[c] : 0.0) - 1.0 / (double)B))
                                      : 0;
    gx_tensor *D = gx_matmul(ctx, gx_to_ctx(ctx, Q), z2);
    return gx_scale(ctx, gx_sum_all(ctx, gx_square(ctx, D)), 1.0 / (double)d2);
}

gx_cf_loss_terms gx_cf_loss_given(gx_ctx *ctx, gx_cf_model *m, const gx_cf_out *o, gx_tensor *x,
                                  const int64_t *labels, const gx_tensor *bg, gx_tensor *mmd_n,
                                  const gx_cf_loss_cfg *cfg) {
    gx_cf_loss_terms L;
    memset(&L, 0, sizeof L);
    gx_tensor *total = NULL;
    if (cfg->w_ib != 0) {
        cf_loss_ib(ctx, m, o, labels, cfg, &L);
        total = cf_acc(ctx, total, L.l_ib, cfg->w_ib);
    }
    if (cfg->w_mmd != 0) {
        GX_ASSERT_MSG(mmd_n, "gx_cf_loss: w_mmd %g needs MMD samples", cfg->w_mmd);
        L.l_mmd = gx_cf_mmd(ctx, o->z, mmd_n);
        total = cf_acc(ctx, total, L.l_mmd, cfg->w_mmd);
    }
    if (cfg->w_rec != 0) {
        GX_ASSERT_MSG(o->xrec, "gx_cf_loss: w_rec %g needs the decoder output", cfg->w_rec);
        double a = cfg->ssim_weight;
        L.ssim = gx_cf_ssim(ctx, o->xrec, x, cfg->ssim_window, cfg->ssim_sigma, NULL);
        gx_tensor *l1 = gx_mean_all(ctx, gx_abs(ctx, gx_sub(ctx, o->xrec, x)));
        L.l_rec = gx_add(ctx, gx_affine(ctx, L.ssim, -a, a), gx_scale(ctx, l1, 1.0 - a));
        total = cf_acc(ctx, total, L.l_rec, cfg->w_rec);
    }
    if (cfg->w_z2 != 0 && o->z2 && o->z2->shape[1] > 0) {
        L.l_z2 = gx_cf_z2_class_loss(ctx, m, o->z2, labels);
        total = cf_acc(ctx, total, L.l_z2, cfg->w_z2);
    }
    /* The two added terms share one mixed decode. */
    if ((cfg->w_cyc != 0 || cfg->w_bg != 0) && o->z1->shape[0] >= 2) {
        gx_tensor *nb = cf_neighbour_z1(ctx, o);
        gx_tensor *x_mix = cf_mix_decode(ctx, m, o, nb);
        if (cfg->w_cyc != 0) {
            L.l_cyc = cf_cycle_of(ctx, m, x_mix, nb);
            total = cf_acc(ctx, total, L.l_cyc, cfg->w_cyc);
        }
        if (cfg->w_bg != 0) {
            GX_ASSERT_MSG(bg && o->xrec, "gx_cf_loss: w_bg %g needs the background mask and x~", cfg->w_bg);
            L.l_bg = cf_background_of(ctx, x_mix, o->xrec, bg);
            if (L.l_bg) total = cf_acc(ctx, total, L.l_bg, cfg->w_bg);
        }
    }
    L.total = total ? total : gx_tensor_scalar(ctx, 0);
    return L;
}

gx_cf_loss_terms gx_cf_loss(gx_ctx *ctx, gx_cf_model *m, const gx_cf_out *o, gx_tensor *x,
                            const int64_t *labels, const gx_tensor *bg, gx_rng *mmd_rng,
                            const gx_cf_loss_cfg *cfg) {
    gx_tensor *n = NULL;
    if (cfg->w_mmd != 0) {
        GX_ASSERT_MSG(mmd_rng, "gx_cf_loss: w_mmd %g needs mmd_rng", cfg->w_mmd);
        n = gx_tensor_new_host(ctx, 2, o->z->shape);
        gx_rng_fill_normal(mmd_rng, n->data, n->numel, 0.0, 1.0);
        n = gx_to_ctx(ctx, n);
    }
    return gx_cf_loss_given(ctx, m, o, x, labels, bg, n, cfg);
}
