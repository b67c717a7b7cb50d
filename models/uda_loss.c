/*
 * uda_loss.c — DeepAstroUDA's losses, memory bank and active tuner
 * (models/gx_uda.h, spec/uda.md "Losses" and "Tuner").
 *
 * Weighted cross-entropy and entropy separation are compositions of engine
 * ops (their gradients come from the ops). Adaptive clustering is one fused
 * op with a hand-written backward: its pair set is every row of the target
 * batch (and views) against every eligible bank slot, which for a real run is
 * ~100 rows x ~20 000 slots. Materialising the [R, M] similarity matrix and
 * its log terms through generic ops would cost several copies of it in the
 * arena; the fused op streams over the slots (one row's pairs at a time),
 * keeping only the selected slots' probabilities and one similarity bit per
 * pair, and the backward recomputes p_i.p_j. The bank is detached (no
 * gradient flows into it), as the spec says.
 */
#include "gx_cuda.h"
#include "gx_uda.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define UDA_ENT_EPS 1e-5   /* H = -sum p ln(p + 1e-5) */
#define UDA_AC_EPS  1e-7   /* ln(s-hat + 1e-7), ln(1 - s-hat + 1e-7) */

/* ------------------------------------------------------ cross-entropy, ES */

gx_tensor *gx_uda_loss_ce(gx_ctx *ctx, gx_tensor *p, const int64_t *labels,
                          const double *class_w) {
    GX_ASSERT_MSG(p->ndim == 2 && p->shape[0] >= 1, "gx_uda_loss_ce: p must be [B,K]");
    int64_t B = p->shape[0], K = p->shape[1];
    int32_t *idx = gx_ctx_alloc(ctx, (size_t)B * sizeof *idx);   /* host: gx_gather uploads it */
    gx_tensor *w = gx_tensor_new_host(ctx, 1, GX_SHAPE(B));
    double wsum = 0;
    for (int64_t i = 0; i < B; i++) {
        GX_ASSERT_MSG(labels[i] >= 0 && labels[i] < K, "gx_uda_loss_ce: label %lld of row %lld "
                      "outside [0,%lld)", (long long)labels[i], (long long)i, (long long)K);
        idx[i] = (int32_t)labels[i];
        wsum += class_w[labels[i]];
    }
    GX_ASSERT_MSG(wsum > 0, "gx_uda_loss_ce: class weights of the batch sum to %g", wsum);
    /* Normalised per-row weights: L = sum_i (w_i / sum w) (-ln p_{i,y_i}). */
    for (int64_t i = 0; i < B; i++) w->data[i] = (gx_real)(class_w[labels[i]] / wsum);
    gx_tensor *lp = gx_log(ctx, gx_gather(ctx, p, idx));
    return gx_scale(ctx, gx_sum_all(ctx, gx_mul(ctx, lp, gx_to_ctx(ctx, w))), -1.0);
}

/* H(p) per row [B]. */
static gx_tensor *uda_entropy(gx_ctx *ctx, gx_tensor *p) {
    gx_tensor *pl = gx_mul(ctx, p, gx_log(ctx, gx_add_scalar(ctx, p, UDA_ENT_EPS)));
    return gx_neg(ctx, gx_sum(ctx, pl, 1, 0));
}

gx_tensor *gx_uda_loss_es(gx_ctx *ctx, gx_tensor *p, double rho, double margin,
                          double *active_frac) {
    GX_ASSERT_MSG(p->ndim == 2 && p->shape[0] >= 1, "gx_uda_loss_es: p must be [B,K]");
    int64_t B = p->shape[0];
    gx_tensor *dev = gx_abs(ctx, gx_add_scalar(ctx, uda_entropy(ctx, p), -rho));
    /* The active set is a constant mask: samples within the margin give 0
     * and no gradient, the rest -|H - rho|. It is decided on the host (one
     * transfer of |H - rho| when p is on the device) and goes back as an
     * input. */
    const gx_real *dv = gx_to_host(ctx, dev)->data;
    gx_tensor *mask = gx_tensor_new_host(ctx, 1, GX_SHAPE(B));
    int64_t on = 0;
    for (int64_t i = 0; i < B; i++) {
        int a = (double)dv[i] > margin;
        mask->data[i] = (gx_real)a;
        on += a;
    }
    if (active_frac) *active_frac = (double)on / (double)B;
    return gx_scale(ctx, gx_sum_all(ctx, gx_mul(ctx, dev, gx_to_ctx(ctx, mask))), -1.0 / (double)B);
}

/* ------------------------------------------------------------------ bank */

/* The key of one row (see gx_uda_bank.rank_prob): the top-k index set of a
 * feature row v[n] (sorted ascending), or the top-min(k,n) class indices of
 * a probability row in rank order, -1 padded. Ties: lower index first
 * (scanning in index order, a later element displaces only a strictly
 * smaller one). */
static void uda_key(const gx_real *v, int64_t n, int64_t k, int ordered, int32_t *out) {
    int64_t kk = k < n ? k : n, have = 0;
    for (int64_t i = 0; i < k; i++) out[i] = -1;
    for (int64_t i = 0; i < n; i++) {
        int64_t pos = have;
        while (pos > 0 && v[i] > v[out[pos - 1]]) pos--;
        if (pos >= kk) continue;
        for (int64_t q = (have < kk ? have : kk - 1); q > pos; q--) out[q] = out[q - 1];
        out[pos] = (int32_t)i;
        if (have < kk) have++;
    }
    if (!ordered)   /* a set: ascending indices (insertion sort, k <= 7) */
        for (int64_t a = 1; a < kk; a++)
            for (int64_t b = a; b > 0 && out[b] < out[b - 1]; b--) {
                int32_t t = out[b]; out[b] = out[b - 1]; out[b - 1] = t;
            }
}

gx_status gx_uda_bank_init(gx_uda_bank *b, int64_t n, int64_t K, gx_err *err) {
    memset(b, 0, sizeof *b);
    if (n < 1 || K < 1 || K > GX_UDA_MAX_CLASSES)
        return gx_err_set(err, GX_ERR_INVALID, "uda bank: %lld slots x %lld classes", (long long)n,
                          (long long)K);
    b->n = n;
    b->K = K;
    b->topk = K <= 3 ? 3 : 7;
    b->p = calloc((size_t)(n * K), sizeof *b->p);
    b->topk_idx = malloc((size_t)(n * b->topk) * sizeof *b->topk_idx);
    b->domain = calloc((size_t)n, sizeof *b->domain);
    b->label = malloc((size_t)n * sizeof *b->label);
    b->filled = calloc((size_t)n, sizeof *b->filled);
    if (!b->p || !b->topk_idx || !b->domain || !b->label || !b->filled) {
        gx_uda_bank_free(b);
        return gx_err_set(err, GX_ERR_NOMEM, "uda bank: %lld slots", (long long)n);
    }
    for (int64_t i = 0; i < n * b->topk; i++) b->topk_idx[i] = -1;
    for (int64_t i = 0; i < n; i++) b->label[i] = -1;
    return GX_OK;
}

void gx_uda_bank_free(gx_uda_bank *b) {
    free(b->p);
    free(b->topk_idx);
    free(b->domain);
    free(b->label);
    free(b->filled);
    memset(b, 0, sizeof *b);
}

/* The key of row r of (p, f) under the bank's rule. */
static void uda_row_key(const gx_uda_bank *b, const gx_tensor *p, const gx_tensor *f, int64_t r,
                        int32_t *out) {
    if (b->rank_prob) uda_key(p->data + r * p->shape[1], p->shape[1], b->topk, 1, out);
    else uda_key(f->data + r * f->shape[1], f->shape[1], b->topk, 0, out);
}

void gx_uda_bank_update(gx_uda_bank *b, const int64_t *idx, int64_t B, const gx_tensor *p,
                        const gx_tensor *f, int domain, const int64_t *labels) {
    GX_ASSERT_MSG(p->ndim == 2 && p->shape[0] >= B && p->shape[1] == b->K,
                  "gx_uda_bank_update: p must be [>=%lld,%lld]", (long long)B, (long long)b->K);
    GX_ASSERT_MSG(f->ndim == 2 && f->shape[0] >= B && f->shape[1] >= b->topk,
                  "gx_uda_bank_update: f must be [>=%lld,E>=%lld]", (long long)B,
                  (long long)b->topk);
    /* The bank is host memory: a device activation must come through
     * gx_to_host first (reading its data here would read device memory). */
    GX_ASSERT_MSG(p->device != GX_DEVICE_CUDA && f->device != GX_DEVICE_CUDA,
                  "gx_uda_bank_update: p and f must be host tensors (gx_to_host)");
    for (int64_t i = 0; i < B; i++) {
        int64_t j = idx[i];
        GX_ASSERT_MSG(j >= 0 && j < b->n, "gx_uda_bank_update: slot %lld of %lld", (long long)j,
                      (long long)b->n);
        for (int64_t k = 0; k < b->K; k++) b->p[j * b->K + k] = (float)p->data[i * b->K + k];
        uda_row_key(b, p, f, i, b->topk_idx + j * b->topk);
        b->domain[j] = (int8_t)domain;
        b->label[j] = labels ? (int32_t)labels[i] : -1;
        b->filled[j] = 1;
    }
}

/* ------------------------------------------------- adaptive clustering */

typedef struct uda_ac_saved {
    int64_t  R, K, M, B, nv;
    gx_real *bp;           /* [M*K] the selected slots' probabilities (copied: the
                              bank is overwritten after the step, maybe before backward) */
    uint8_t *s;            /* [R*M] similarity labels */
    double   inv_np;       /* 1 / number of pairs */
} uda_ac_saved;

static double uda_dot(const gx_real *a, const gx_real *b, int64_t K) {
    double d = 0;
    for (int64_t k = 0; k < K; k++) d += (double)a[k] * b[k];
    return d;
}

/* Sum over the pairs of s ln(sh + eps) + (1 - s) ln(1 - sh + eps). Per-row
 * partial sums added in row order: the value does not depend on threads. */
static double uda_ac_sum(const uda_ac_saved *S, const gx_real *p) {
    double *row = malloc((size_t)S->R * sizeof *row), tot = 0;
    GX_ASSERT_MSG(row != NULL, "uda AC: out of memory");
    #pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < S->R; r++) {
        double acc = 0;
        for (int64_t j = 0; j < S->M; j++) {
            double sh = uda_dot(p + r * S->K, S->bp + j * S->K, S->K);
            acc += S->s[r * S->M + j] ? log(sh + UDA_AC_EPS) : log(1 - sh + UDA_AC_EPS);
        }
        row[r] = acc;
    }
    for (int64_t r = 0; r < S->R; r++) tot += row[r];
    free(row);
    /* Views of one image: s = 1 for every unordered pair. */
    for (int64_t i = 0; i < S->B; i++)
        for (int64_t v = 0; v < S->nv; v++)
            for (int64_t w = v + 1; w < S->nv; w++)
                tot += log(uda_dot(p + (v * S->B + i) * S->K, p + (w * S->B + i) * S->K, S->K) +
                           UDA_AC_EPS);
    return tot;
}

/* dL/dp_r = -(g/np) [sum_j c_rj p_j + view terms], c = s/(sh+eps) - (1-s)/(1-sh+eps). */
static void uda_ac_backward(gx_ctx *ctx, gx_node *node) {
    const uda_ac_saved *S = node->saved;
    gx_tensor *p = node->in[0];
    gx_real *gp = gx_grad(ctx, p);
    if (!gp) return;
    double g = -(double)node->out->grad[0] * S->inv_np;
    int64_t K = S->K;
    #pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < S->R; r++) {
        double acc[GX_UDA_MAX_CLASSES] = { 0 };
        const gx_real *pr = p->data + r * K;
        for (int64_t j = 0; j < S->M; j++) {
            const gx_real *pj = S->bp + j * K;
            double sh = uda_dot(pr, pj, K);
            double c = S->s[r * S->M + j] ? 1.0 / (sh + UDA_AC_EPS) : -1.0 / (1 - sh + UDA_AC_EPS);
            for (int64_t k = 0; k < K; k++) acc[k] += c * pj[k];
        }
        for (int64_t k = 0; k < K; k++) gp[r * K + k] += (gx_real)(g * acc[k]);
    }
    for (int64_t i = 0; i < S->B; i++)
        for (int64_t v = 0; v < S->nv; v++)
            for (int64_t w = v + 1; w < S->nv; w++) {
                int64_t a = v * S->B + i, b = w * S->B + i;
                double c = g / (uda_dot(p->data + a * K, p->data + b * K, K) + UDA_AC_EPS);
                for (int64_t k = 0; k < K; k++) {
                    double pa = p->data[a * K + k], pb = p->data[b * K + k];
                    gp[a * K + k] += (gx_real)(c * pb);
                    gp[b * K + k] += (gx_real)(c * pa);
                }
            }
}

static int uda_cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The eligible slots (filled, not in the batch), at most max_slots of them
 * drawn without replacement, in ascending order. Returns their count. */
static int64_t uda_ac_select(gx_ctx *ctx, const gx_uda_bank *b, const int64_t *batch_idx,
                             int64_t B, int64_t max_slots, gx_rng *rng, int64_t **out) {
    uint8_t *inb = gx_ctx_alloc(ctx, (size_t)b->n);
    memset(inb, 0, (size_t)b->n);
    for (int64_t i = 0; i < B; i++)
        if (batch_idx[i] >= 0 && batch_idx[i] < b->n) inb[batch_idx[i]] = 1;
    int64_t *sel = gx_ctx_alloc(ctx, (size_t)b->n * sizeof *sel), M = 0;
    for (int64_t j = 0; j < b->n; j++)
        if (b->filled[j] && !inb[j]) sel[M++] = j;
    if (max_slots > 0 && M > max_slots) {
        GX_ASSERT_MSG(rng != NULL, "gx_uda_loss_ac: max_slots needs an rng");
        for (int64_t i = 0; i < max_slots; i++) {   /* partial Fisher-Yates */
            int64_t j = i + (int64_t)(gx_rng_uniform(rng) * (double)(M - i));
            if (j >= M) j = M - 1;
            int64_t t = sel[i]; sel[i] = sel[j]; sel[j] = t;
        }
        M = max_slots;
        qsort(sel, (size_t)M, sizeof *sel, uda_cmp_i64);
    }
    *out = sel;
    return M;
}

/* Similarity labels s[r*M + j] of the batch rows (unlabelled target rows:
 * the key rule) against the selected slots. */
static void uda_ac_labels(gx_ctx *ctx, const gx_uda_bank *b, gx_tensor *p, const gx_tensor *f,
                          int64_t B, const int64_t *sel, uda_ac_saved *S) {
    int64_t tk = b->topk;
    int32_t *keys = gx_ctx_alloc(ctx, (size_t)(S->R * tk) * sizeof *keys);
    for (int64_t r = 0; r < S->R; r++) {
        /* f may hold one row per image (views share the image's features)
         * or one per row. */
        int64_t fr = f->shape[0] == S->R ? r : r % B;
        if (b->rank_prob) uda_row_key(b, p, f, r, keys + r * tk);
        else uda_row_key(b, p, f, fr, keys + r * tk);
    }
    for (int64_t r = 0; r < S->R; r++)
        for (int64_t j = 0; j < S->M; j++)
            S->s[r * S->M + j] = !memcmp(keys + r * tk, b->topk_idx + sel[j] * tk,
                                         (size_t)tk * sizeof *keys);
}

gx_tensor *gx_uda_loss_ac(gx_ctx *ctx, const gx_uda_bank *b, gx_tensor *p, const gx_tensor *f,
                          int n_views, const int64_t *batch_idx, int64_t B, int64_t max_slots,
                          gx_rng *rng) {
    GX_ASSERT_MSG(n_views >= 1 && B >= 1 && p->ndim == 2 && p->shape[0] == n_views * B &&
                  p->shape[1] == b->K, "gx_uda_loss_ac: p must be [n_views*B = %lld, K = %lld]",
                  (long long)(n_views * B), (long long)b->K);
    GX_ASSERT_MSG(f->ndim == 2 && (f->shape[0] == p->shape[0] || f->shape[0] == B) &&
                  f->shape[1] >= b->topk, "gx_uda_loss_ac: f must be [R or B, E >= %lld]",
                  (long long)b->topk);
    /* The fused op runs on the host, beside the bank: device p and f come
     * over in one transfer each (the gradient of p goes back across it) and
     * the loss returns to where ctx computes. Both are no-ops on the CPU. */
    p = gx_to_host(ctx, p);
    if (f->device == GX_DEVICE_CUDA) f = gx_to_host(ctx, (gx_tensor *)f);   /* read only */
    uda_ac_saved *S = gx_ctx_alloc(ctx, sizeof *S);
    S->R = p->shape[0];
    S->K = b->K;
    S->B = B;
    S->nv = n_views;
    int64_t *sel;
    S->M = uda_ac_select(ctx, b, batch_idx, B, max_slots, rng, &sel);
    int64_t npairs = S->R * S->M + B * (int64_t)n_views * (n_views - 1) / 2;
    if (npairs == 0) return gx_tensor_scalar(ctx, 0);   /* empty bank, one view: no pairs */
    S->inv_np = 1.0 / (double)npairs;
    S->bp = gx_ctx_alloc(ctx, (size_t)(S->M * S->K) * sizeof *S->bp);
    for (int64_t j = 0; j < S->M; j++)
        for (int64_t k = 0; k < S->K; k++) S->bp[j * S->K + k] = (gx_real)b->p[sel[j] * S->K + k];
    S->s = gx_ctx_alloc(ctx, (size_t)(S->R * S->M) + 1);
    uda_ac_labels(ctx, b, p, f, B, sel, S);
    gx_tensor *out = gx_tensor_new_host(ctx, 0, NULL);
    out->data[0] = (gx_real)(-uda_ac_sum(S, p->data) * S->inv_np);
    gx_node *node = gx_tape_record(ctx, "uda_ac", uda_ac_backward, out, 1, &p);
    if (node) node->saved = S;
    return gx_to_ctx(ctx, out);
}

/* ----------------------------------------------------------------- tuner */

static const double uda_tuner_steps[4] = { 0.3, -0.3, 0.5, -0.5 };

void gx_uda_tuner_init(gx_uda_tuner *t, int64_t K) {
    memset(t, 0, sizeof *t);
    t->K_ln = log((double)K);
    t->rho = t->K_ln / 2;
    t->margin = K < 5 ? 0.5 : 1.35;
    t->l_min = INFINITY;
}

/* Spec, Algorithm 1. c walks 0 (rho += step) -> 1 (m += step) -> 2 (m *= 2)
 * -> 3 (next step size, c back to 0 via -1 + 1); each change resets e. The
 * rho change waits for e > 5 epochs without a new minimum, the others e > 2.
 * Returns 1 when rho or m was changed (clamped: 0 < rho < ln K, m >= 0; the
 * open bounds are kept 1e-3 inside). */
int gx_uda_tuner_step(gx_uda_tuner *t, double L) {
    t->e++;
    if (L < t->l_min) {
        t->l_min = L;
        return 0;
    }
    double step = uda_tuner_steps[t->j];
    int changed = 1, moved = 1;
    if (t->c == 0 && t->e > 5) t->rho += step;
    else if (t->c == 1 && t->e > 2) t->margin += step;
    else if (t->c == 2 && t->e > 2) t->margin *= 2;
    else if (t->c == 3 && t->e > 2) { t->j = (t->j + 1) % 4; t->c = -1; moved = 0; }
    else changed = 0;
    if (!changed) return 0;
    t->e = 0;
    t->c++;
    double lo = 1e-3, hi = t->K_ln - 1e-3;
    if (t->rho < lo) t->rho = lo;
    if (t->rho > hi) t->rho = hi;
    if (t->margin < 0) t->margin = 0;
    return moved;
}
