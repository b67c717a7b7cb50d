/*
 * gx_conv.c — 2-D convolution (groups, depthwise) and the causal depthwise
 * 1-D convolution of the SSM blocks.
 *
 * conv2d picks one of three paths per call; all are forward+backward:
 *   1. stride 1 (any kernel, any padding): "shifted GEMM". On a zero-padded
 *      copy of the input, each kernel tap (i, j) is the input matrix offset
 *      by i*Wp + j, so the conv is kh*kw GEMMs Y += W_tap X_tap with
 *      K = Cin/groups and no im2col buffer (details at that section). With
 *      padding 0 there is no copy at all: a 1x1 conv is one GEMM reading x
 *      and writing y directly, and its dx accumulates in place.
 *   2. stride > 1: im2col per (sample, group) into arena scratch
 *      col [Cin_g*kh*kw, Ho*Wo], one GEMM Y_g = W_g col, and col2im for dx.
 *      Backward redoes im2col (keeping col for a batch would cost kh*kw
 *      times the input's memory).
 *   3. depthwise (groups == Cin == Cout): a GEMM with one output row per
 *      group is all overhead, so a direct loop runs per (sample, channel)
 *      plane.
 * In the f32 build on AVX2+FMA CPUs, the forwards of paths 1 and 2 switch
 * to a packed-weight GEMM of our own where a BLAS call per sample loses
 * (fewer than 16 output channels per group, or at most 32 output pixels;
 * see gx_sk_pays and its section). gx_upconv2x3 (nearest x2 upsample +
 * 3x3 conv, fused: 2.25x fewer multiply-adds) reuses the shifted-GEMM
 * machinery; its section explains the parity decomposition.
 * gx_upconv2x3_leaky adds a LeakyReLU epilogue for inference (untaped
 * calls only) and, for inputs of at most 16 pixels, exact per-parity
 * GEMMs on the packed-weight kernel.
 *
 * Threading. OpenBLAS threads every GEMM over the cores (the build links its
 * OpenMP flavour, so BLAS and our loops share libgomp's one pool; see the
 * Makefile). Also running the batch in an OpenMP loop would nest a parallel
 * GEMM inside a parallel loop, so the GEMM paths keep the
 * (sample, group) loop sequential and thread only the memory-bound copies
 * (pad, im2col, col2im, unpad) with OpenMP, which never run at the same
 * time as a GEMM. The GEMMs are large (M = Cout_g, N ~ Ho*Wo, K = Cin_g or
 * Cin_g*kh*kw), where BLAS threading is efficient. Measured on the 2-core
 * dev box (3x3 128->128 at 64x64, noisy shared machine): 1 thread, CPU time,
 * batch 1: fwd 16 ms vs PyTorch/oneDNN 15.5 ms, bwd 35 vs 37 ms; 2 threads,
 * batch 32: fwd 1.77 s vs 2.18 s, bwd 3.08 s vs 4.99 s. The direct kernels
 * (depthwise, conv1d) have no GEMM and split planes / channels over OpenMP.
 * Every parallel loop partitions outputs, never a reduction, so results do
 * not depend on the thread count or on other samples in the batch.
 *
 * Sums: the direct kernels accumulate in double (row or plane buffers);
 * col2im gathers its kh*kw GEMM outputs per pixel in a double plane too.
 */
#include "gx_impl.h"
#if GX_CUDA_ON
#include "cuda/gx_cuda_ops_dense.h"
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

#include <stdlib.h>

static int gx_thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* ---------------------------------------------------------------- geometry */

/* Everything a conv2d call needs about its shapes; stored in the tape node's
 * i[] so backward does not recompute it. */
typedef struct {
    int64_t B, Cin, H, W, Cout, kh, kw, Ho, Wo, s, p, g;
} gx_conv_geom;

/* Only stride, padding and groups go on the node: every other field is
 * recomputed from the input and weight shapes in backward. */
static void gx_geom_save(const gx_conv_geom *q, gx_node *n) {
    n->i[0] = q->s; n->i[1] = q->p; n->i[2] = q->g;
}

static gx_conv_geom gx_geom_make(const gx_tensor *x, const gx_tensor *w, int64_t s, int64_t p, int64_t g) {
    gx_conv_geom q;
    q.B = x->shape[0]; q.Cin = x->shape[1]; q.H = x->shape[2]; q.W = x->shape[3];
    q.Cout = w->shape[0]; q.kh = w->shape[2]; q.kw = w->shape[3];
    q.s = s; q.p = p; q.g = g;
    q.Ho = (q.H + 2 * p - q.kh) / s + 1;
    q.Wo = (q.W + 2 * p - q.kw) / s + 1;
    return q;
}

/* Range [lo, hi) of output positions o whose input index o*s - p + k lies in
 * [0, n): the taps of kernel offset k that do not fall into the padding.
 * Lets inner loops run without per-element bounds checks. */
static void gx_valid_range(int64_t n, int64_t no, int64_t s, int64_t p, int64_t k,
                           int64_t *lo, int64_t *hi) {
    int64_t a = p - k;                         /* need o*s >= a */
    int64_t l = a <= 0 ? 0 : (a + s - 1) / s;
    int64_t b = n - 1 + p - k;                 /* need o*s <= b */
    int64_t h = b < 0 ? 0 : b / s + 1;
    if (h > no) h = no;
    if (l > h) l = h;
    *lo = l; *hi = h;
}

/* ------------------------------------------------------- im2col / col2im */

/* dst[0 .. n) = src[0 .. n): blocks of 8 with constant-size copies (inlined:
 * memcpy's call was most of a 16- or 32-value copy), then the rest. */
static inline void gx_im2col_run(gx_real *dst, const gx_real *src, int64_t n) {
    int64_t o = 0;
    for (; o + 8 <= n; o += 8) __builtin_memcpy(dst + o, src + o, 8 * sizeof(gx_real));
    for (; o < n; o++) dst[o] = src[o];
}

/* Longest zero-padded input row gx_im2col_strided splits into phases. */
#define GX_IM2COL_ROW 4096

/* gx_im2col for stride > 1. Why: there the copy was one strided load per
 * element, 25% of the bundled tiny UDA model's scoring (its 7x7 stride-2
 * stem: 147 column rows per sample for 8 output channels; perf,
 * 2026-11-25). Each input row y of a channel is padded with zeros to the
 * span the windows read and split into its s phases once (phase r holds
 * the padded row's elements r, r + s, ...); then for every kernel row i
 * whose output row oh = (y + p - i) / s is whole, the kw column rows (c, i,
 * j) of that output row are contiguous runs of phase j % s from j / s: a
 * copy each (gx_im2col_run). Output rows whose input row lies in the
 * padding are zeroed first. The same values as the strided loop, so the
 * same bits. */
static void gx_im2col_strided(const gx_real *x, int64_t C, const gx_conv_geom *q, gx_real *col) {
    const int64_t HW = q->Ho * q->Wo, kk = q->kh * q->kw, s = q->s;
    const int64_t span = (q->Wo - 1) * s + q->kw, pl = span / s + 1;
    #pragma omp parallel for schedule(static) if (C * kk * HW > GX_PAR_THRESHOLD)
    for (int64_t c = 0; c < C; c++) {
        gx_real ph[GX_IM2COL_ROW];
        const gx_real *xc = x + c * q->H * q->W;
        for (int64_t i = 0; i < q->kh; i++) {
            int64_t oh0, oh1;
            gx_valid_range(q->H, q->Ho, s, q->p, i, &oh0, &oh1);
            for (int64_t j = 0; j < q->kw; j++) {
                gx_real *dst = col + ((c * q->kh + i) * q->kw + j) * HW;
                memset(dst, 0, (size_t)(oh0 * q->Wo) * sizeof(gx_real));
                memset(dst + oh1 * q->Wo, 0, (size_t)((q->Ho - oh1) * q->Wo) * sizeof(gx_real));
            }
        }
        for (int64_t y = 0; y < q->H; y++) {
            gx_row_phases(xc + y * q->W, q->W, -q->p, span, s, 0, ph, pl);
            /* Kernel rows i = (y + p) mod s, + s, ...: output rows oh, oh - 1, ... */
            const int64_t i0 = (y + q->p) % s;
            for (int64_t i = i0, oh = (y + q->p - i0) / s; i < q->kh && oh >= 0; i += s, oh--) {
                if (oh >= q->Ho) continue;
                gx_real *dst = col + (c * q->kh + i) * q->kw * HW + oh * q->Wo;
                for (int64_t j = 0, r = 0, o = 0; j < q->kw; j++, dst += HW) {
                    gx_im2col_run(dst, ph + r * pl + o, q->Wo);   /* phase j % s from j / s */
                    if (++r == s) { r = 0; o++; }
                }
            }
        }
    }
}

/* col [C*kh*kw, Ho*Wo] from x [C, H, W] (one sample's group of channels).
 * Rows are independent, so channels split across OpenMP threads. */
static void gx_im2col(const gx_real *x, int64_t C, const gx_conv_geom *q, gx_real *col) {
    int64_t HW = q->Ho * q->Wo, kk = q->kh * q->kw;
    if (q->s > 1 && ((q->Wo - 1) * q->s + q->kw) + q->s <= GX_IM2COL_ROW) {
        gx_im2col_strided(x, C, q, col);
        return;
    }
    #pragma omp parallel for schedule(static) if (C * kk * HW > GX_PAR_THRESHOLD)
    for (int64_t r = 0; r < C * kk; r++) {
        int64_t c = r / kk, i = (r % kk) / q->kw, j = r % q->kw;
        const gx_real *xc = x + c * q->H * q->W;
        gx_real *dst = col + r * HW;
        int64_t oh0, oh1, ow0, ow1;
        gx_valid_range(q->H, q->Ho, q->s, q->p, i, &oh0, &oh1);
        gx_valid_range(q->W, q->Wo, q->s, q->p, j, &ow0, &ow1);
        memset(dst, 0, (size_t)(oh0 * q->Wo) * sizeof(gx_real));
        for (int64_t oh = oh0; oh < oh1; oh++) {
            gx_real *d = dst + oh * q->Wo;
            const gx_real *src = xc + (oh * q->s - q->p + i) * q->W - q->p + j;
            for (int64_t ow = 0; ow < ow0; ow++) d[ow] = 0;
            if (q->s == 1) memcpy(d + ow0, src + ow0, (size_t)(ow1 - ow0) * sizeof(gx_real));
            else for (int64_t ow = ow0; ow < ow1; ow++) d[ow] = src[ow * q->s];
            for (int64_t ow = ow1; ow < q->Wo; ow++) d[ow] = 0;
        }
        memset(dst + oh1 * q->Wo, 0, (size_t)((q->Ho - oh1) * q->Wo) * sizeof(gx_real));
    }
}

/* dx += col2im(dcol) for ns samples: sample i's dcol [C*kh*kw, Ho*Wo] has
 * row r at dcol + r*ld + i*Ho*Wo (ld = Ho*Wo for one sample; the batched
 * backward lays the samples side by side), its dx [C, H, W] at dx +
 * i*Cin*H*W. Each (sample, channel) plane gathers its kh*kw rows into a
 * per-thread double plane, so threads own disjoint planes (no races) and
 * every pixel's sum is taken in double. */
static void gx_col2im(gx_ctx *ctx, const gx_real *dcol, int64_t ld, int64_t ns, int64_t C, const gx_conv_geom *q,
                      gx_real *dx) {
    int64_t HW = q->H * q->W, OHW = q->Ho * q->Wo, kk = q->kh * q->kw;
    int par = ns * C * kk * OHW > GX_PAR_THRESHOLD;
    double *scratch = gx_ctx_alloc(ctx, (size_t)(gx_get_threads() * HW) * sizeof(double));
    #pragma omp parallel for schedule(static) if (par)
    for (int64_t ic = 0; ic < ns * C; ic++) {
        const int64_t i = ic / C, c = ic % C;
        double *acc = scratch + gx_thread_id() * HW;
        memset(acc, 0, (size_t)HW * sizeof(double));
        for (int64_t r = c * kk; r < (c + 1) * kk; r++) {
            int64_t ti = (r % kk) / q->kw, tj = r % q->kw, oh0, oh1, ow0, ow1;
            gx_valid_range(q->H, q->Ho, q->s, q->p, ti, &oh0, &oh1);
            gx_valid_range(q->W, q->Wo, q->s, q->p, tj, &ow0, &ow1);
            for (int64_t oh = oh0; oh < oh1; oh++) {
                const gx_real *src = dcol + r * ld + i * OHW + oh * q->Wo;
                double *d = acc + (oh * q->s - q->p + ti) * q->W - q->p + tj;
                for (int64_t ow = ow0; ow < ow1; ow++) d[ow * q->s] += (double)src[ow];
            }
        }
        gx_real *dxc = dx + (i * q->Cin + c) * HW;
        for (int64_t k = 0; k < HW; k++) dxc[k] += (gx_real)acc[k];
    }
}

/* ---------------------------------- packed-weight GEMM for the forwards
 *
 * The GEMM paths above run one BLAS call per sample (batch invariance), and
 * BLAS packs both operands on every call. Where a sample has few output
 * pixels and the layer many weights (the encoder's last conv: 2 MB of
 * weights against 16 output pixels), re-packing the weights for every
 * sample costs about as much as the multiply-adds; where a layer has few
 * output channels (the decoder's 32->3 output conv), BLAS's 16-row
 * micro-kernel mostly multiplies padding. There (gx_sk_pays) the f32
 * forwards use this small GEMM instead: the weights are packed once per op
 * call into panels of GX_SK_MR rows, and a 6x16 AVX2/FMA register-blocked
 * kernel (6x32 on AVX-512 CPUs, same bits: gx_sk_block_avx512) streams
 * each sample's input rows straight from where they lie (a
 * row pointer per depth index k: the taps of the shifted-GEMM path are just
 * pointer offsets, so all taps run as one depth loop and the output is
 * loaded and stored once instead of once per tap). Elsewhere BLAS stays:
 * its packed panels make it ~1.5x faster on large outputs (measured).
 * Determinism: every output element is c = fma(a_k, b_k, c) for k = 0..K-1
 * in order, starting from the bias (or 0), whatever its row, column,
 * sample, batch size or thread (the column tail uses masked loads, the row
 * tail computes zero-padded rows and does not store them), so the result is
 * batch and thread-count invariant by construction. Only x86-64 CPUs with
 * AVX2+FMA take this path; gx_sk_block_ref is its portable definition,
 * compiled where the AVX2 block is not (the f64 build, other targets,
 * which gx_sk_pays sends to BLAS). */

#define GX_SK_MR 6

#if !defined(GX_F64) && defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define GX_SK_X86 1
#endif

/* Weights packed for gx_sk_run: ap [ceil(M/MR)][K][MR], zero-padded rows. */
typedef struct { int64_t M, K; gx_real *ap; } gx_sk_a;

/* Packs ntap matrices [M, Kt] (element (row, kk) of tap t at
 * a[t*tstride + row*lda + kk*ldk]), concatenated along the depth:
 * K = ntap*Kt, k = t*Kt + kk. Each panel is written in order. */
static gx_sk_a gx_sk_pack_into(gx_real *ap, const gx_real *a, int64_t M, int64_t Kt, int64_t lda, int64_t ldk,
                               int64_t ntap, int64_t tstride) {
    gx_sk_a p = { M, ntap * Kt, ap };
    int64_t panels = (M + GX_SK_MR - 1) / GX_SK_MR;
    for (int64_t pn = 0; pn < panels; pn++)
        for (int64_t t = 0; t < ntap; t++)
            for (int64_t kk = 0; kk < Kt; kk++) {
                gx_real *d = p.ap + (pn * p.K + t * Kt + kk) * GX_SK_MR;
                for (int r = 0; r < GX_SK_MR; r++) {
                    int64_t row = pn * GX_SK_MR + r;
                    d[r] = row < M ? a[t * tstride + row * lda + kk * ldk] : 0;
                }
            }
    return p;
}

/* Values in the panels of an [M, K] weight matrix (rows padded to MR). */
static int64_t gx_sk_panel_size(int64_t M, int64_t K) {
    return (M + GX_SK_MR - 1) / GX_SK_MR * GX_SK_MR * K;
}

/* gx_sk_pack_into a buffer from the arena. */
static gx_sk_a gx_sk_pack(gx_ctx *ctx, const gx_real *a, int64_t M, int64_t Kt, int64_t lda, int64_t ldk,
                          int64_t ntap, int64_t tstride) {
    gx_real *ap = gx_ctx_alloc(ctx, (size_t)gx_sk_panel_size(M, ntap * Kt) * sizeof(gx_real));
    return gx_sk_pack_into(ap, a, M, Kt, lda, ldk, ntap, tstride);
}

#ifdef GX_SK_X86
/* One k step of a 6-row block: two loads of B (one per half), six
 * broadcasts of A, twelve FMAs into named registers (an array of vectors is
 * kept in memory by the compiler, a load and a store per FMA). V is the
 * vector type, BCAST(p) broadcasts *p, FMA is its multiply-add: the AVX2
 * block (8-lane halves) and the AVX-512 one (16-lane) share this step. */
#define GX_SK_STEP(V, BCAST, FMA, LOAD0, LOAD1)                                     \
    do {                                                                           \
        const float *b0_ = br0[k] + n0, *b1_ = br1[k] + n1, *a_ = ap + k * GX_SK_MR; \
        V b0 = LOAD0, b1 = LOAD1, a0;                                              \
        a0 = BCAST(a_ + 0); c00 = FMA(a0, b0, c00); c01 = FMA(a0, b1, c01);        \
        a0 = BCAST(a_ + 1); c10 = FMA(a0, b0, c10); c11 = FMA(a0, b1, c11);        \
        a0 = BCAST(a_ + 2); c20 = FMA(a0, b0, c20); c21 = FMA(a0, b1, c21);        \
        a0 = BCAST(a_ + 3); c30 = FMA(a0, b0, c30); c31 = FMA(a0, b1, c31);        \
        a0 = BCAST(a_ + 4); c40 = FMA(a0, b0, c40); c41 = FMA(a0, b1, c41);        \
        a0 = BCAST(a_ + 5); c50 = FMA(a0, b0, c50); c51 = FMA(a0, b1, c51);        \
    } while (0)
#define GX_SK_BCAST8(p) _mm256_broadcast_ss(p)
#define GX_SK_BCAST16(p) _mm512_set1_ps(*(p))

/* One MR x 16 block of C as two halves of 8 columns (rows mrows <= MR
 * valid): half h is C_h [.., nn_h] (row stride ldc, nn_h <= 8 valid
 * columns) = (acc ? C_h : 0) + A_panel B_h, where row k of B_h starts at
 * br_h[k] + n_h. One sample's block of 16 columns is the halves n0 and
 * n0 + 8 of the same rows; a pair block (gx_sk_run) is two samples' column
 * tails of <= 8, so a 2x2 output (6 columns on the padded width) fills 12
 * of the 16 lanes instead of 6. */
__attribute__((target("avx2,fma")))
static void gx_sk_block_avx2(int64_t K, const float *ap, const float *const *br0, int64_t n0, int nn0,
                             const float *const *br1, int64_t n1, int nn1, float *c0, float *c1, int64_t ldc,
                             int mrows, int acc) {
    static const int32_t lanes[16] = { -1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0 };
    __m256i m0 = _mm256_loadu_si256((const __m256i *)(lanes + 8 - nn0));
    __m256i m1 = _mm256_loadu_si256((const __m256i *)(lanes + 8 - nn1));
    __m256 z = _mm256_setzero_ps();
#define GX_SK_LD(i, h) ((acc && (i) < mrows) ? _mm256_maskload_ps(((h) ? c1 : c0) + (i) * ldc, (h) ? m1 : m0) : z)
    __m256 c00 = GX_SK_LD(0, 0), c01 = GX_SK_LD(0, 1), c10 = GX_SK_LD(1, 0), c11 = GX_SK_LD(1, 1);
    __m256 c20 = GX_SK_LD(2, 0), c21 = GX_SK_LD(2, 1), c30 = GX_SK_LD(3, 0), c31 = GX_SK_LD(3, 1);
    __m256 c40 = GX_SK_LD(4, 0), c41 = GX_SK_LD(4, 1), c50 = GX_SK_LD(5, 0), c51 = GX_SK_LD(5, 1);
#undef GX_SK_LD
    if (nn0 == 8 && nn1 == 8)
        for (int64_t k = 0; k < K; k++)
            GX_SK_STEP(__m256, GX_SK_BCAST8, _mm256_fmadd_ps, _mm256_loadu_ps(b0_), _mm256_loadu_ps(b1_));
    else
        for (int64_t k = 0; k < K; k++)
            GX_SK_STEP(__m256, GX_SK_BCAST8, _mm256_fmadd_ps, _mm256_maskload_ps(b0_, m0),
                       _mm256_maskload_ps(b1_, m1));
    __m256 r[GX_SK_MR][2] = { { c00, c01 }, { c10, c11 }, { c20, c21 }, { c30, c31 }, { c40, c41 }, { c50, c51 } };
    for (int i = 0; i < mrows; i++) {
        _mm256_maskstore_ps(c0 + i * ldc, m0, r[i][0]);
        _mm256_maskstore_ps(c1 + i * ldc, m1, r[i][1]);
    }
}

/* The same block with 16-lane halves (a 6x32 block: 12 zmm accumulators,
 * two loads of B and six broadcasts per k). Each element's chain is the
 * AVX2 block's, so the two give the same bits; the wider block halves the
 * loads and loop steps per multiply-add. */
__attribute__((target("avx512f")))
static void gx_sk_block_avx512(int64_t K, const float *ap, const float *const *br0, int64_t n0, int nn0,
                               const float *const *br1, int64_t n1, int nn1, float *c0, float *c1, int64_t ldc,
                               int mrows, int acc) {
    const __mmask16 m0 = (__mmask16)((1u << nn0) - 1), m1 = (__mmask16)((1u << nn1) - 1);
    __m512 z = _mm512_setzero_ps();
#define GX_SK_LD(i, h) ((acc && (i) < mrows) ? _mm512_maskz_loadu_ps((h) ? m1 : m0, ((h) ? c1 : c0) + (i) * ldc) : z)
    __m512 c00 = GX_SK_LD(0, 0), c01 = GX_SK_LD(0, 1), c10 = GX_SK_LD(1, 0), c11 = GX_SK_LD(1, 1);
    __m512 c20 = GX_SK_LD(2, 0), c21 = GX_SK_LD(2, 1), c30 = GX_SK_LD(3, 0), c31 = GX_SK_LD(3, 1);
    __m512 c40 = GX_SK_LD(4, 0), c41 = GX_SK_LD(4, 1), c50 = GX_SK_LD(5, 0), c51 = GX_SK_LD(5, 1);
#undef GX_SK_LD
    if (nn0 == 16 && nn1 == 16)
        for (int64_t k = 0; k < K; k++)
            GX_SK_STEP(__m512, GX_SK_BCAST16, _mm512_fmadd_ps, _mm512_loadu_ps(b0_), _mm512_loadu_ps(b1_));
    else
        for (int64_t k = 0; k < K; k++)
            GX_SK_STEP(__m512, GX_SK_BCAST16, _mm512_fmadd_ps, _mm512_maskz_loadu_ps(m0, b0_),
                       _mm512_maskz_loadu_ps(m1, b1_));
    __m512 r[GX_SK_MR][2] = { { c00, c01 }, { c10, c11 }, { c20, c21 }, { c30, c31 }, { c40, c41 }, { c50, c51 } };
    for (int i = 0; i < mrows; i++) {
        _mm512_mask_storeu_ps(c0 + i * ldc, m0, r[i][0]);
        _mm512_mask_storeu_ps(c1 + i * ldc, m1, r[i][1]);
    }
}
#undef GX_SK_STEP
#undef GX_SK_BCAST8
#undef GX_SK_BCAST16

/* The block whose halves are h (16: AVX-512, else 8: AVX2) lanes wide. */
typedef void (*gx_sk_block_fn)(int64_t K, const float *ap, const float *const *br0, int64_t n0, int nn0,
                               const float *const *br1, int64_t n1, int nn1, float *c0, float *c1, int64_t ldc,
                               int mrows, int acc);
static gx_sk_block_fn gx_sk_block_for(int h) {
    return h == 16 ? gx_sk_block_avx512 : gx_sk_block_avx2;
}
#endif

/* The same block without SIMD, one run of nn columns: c [mrows, nn] (row
 * stride ldc) from columns n0 .. n0+nn-1 of the rows brow[k]. The
 * definition (see the section comment). */
static void gx_sk_block_ref(int64_t K, const gx_real *ap, const gx_real *const *brow, int64_t n0, int nn,
                            gx_real *c, int64_t ldc, int mrows, int acc) {
    for (int i = 0; i < mrows; i++)
        for (int j = 0; j < nn; j++) {
            gx_real s = acc ? c[i * ldc + j] : 0;
            for (int64_t k = 0; k < K; k++) s += ap[k * GX_SK_MR + i] * brow[k][n0 + j];
            c[i * ldc + j] = s;
        }
}

/* 1 when the forwards take this path (f32 build on an AVX2+FMA CPU). */
static int gx_sk_simd(void) {
#ifdef GX_SK_X86
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

/* The half-width of the block the strips run: 16 on AVX-512 CPUs, else 8
 * (ctx->sk_avx2_only keeps 8: the test that compares the blocks' bits).
 * gx_sk_run takes 16 only for samples of 32 columns or more: a narrower
 * sample would fill a wide block's lanes with padding (ResNet-18's layer4
 * at batch 1, 4 columns: predict 9.7 -> 11.4 ms with the wide block). */
static int gx_sk_half(const gx_ctx *ctx) {
#ifdef GX_SK_X86
    return !ctx->sk_avx2_only && __builtin_cpu_supports("avx512f") ? 16 : 8;
#else
    (void)ctx;
    return 8;
#endif
}

/* For each sample s < ns: C_s [M, N] (row stride ldc) = (acc ? C_s : 0) +
 * A B_s, where row k of B_s is brow[s*K + k][0 .. N).
 * Blocking: the depth runs in chunks of GX_SK_KC (a chunk's 16-column strip
 * of B, <= 16 KB, stays in L1 while a group of weight panels, <= 128 KB,
 * sits in L2 and is reused for every strip). A chunk continues the
 * element's FMA chain from the value stored by the previous one, so the
 * order is k = 0..K-1 whatever the blocking. The units of work, (panel
 * group, sample), own disjoint rows of C: they split across OpenMP threads
 * with no reduction. */
#define GX_SK_KC 256

/* Valid rows of weight panel pn (the last one may be short). */
static int gx_sk_panel_rows(const gx_sk_a *a, int64_t pn) {
    return (int)(a->M - pn * GX_SK_MR < GX_SK_MR ? a->M - pn * GX_SK_MR : GX_SK_MR);
}

/* One sample's blocks of columns [0, n_end) for weight panels [p0, p1) and
 * depth chunk [k0, k0 + kn). */
static void gx_sk_strip(const gx_sk_a *a, int64_t p0, int64_t p1, int64_t k0, int64_t kn,
                        const gx_real *const *br, int64_t n_end, gx_real *c, int64_t ldc, int acc, int simd,
                        int h) {
    (void)simd;
    for (int64_t n0 = 0; n0 < n_end; n0 += 2 * h) {
        const int nn = (int)(n_end - n0 < 2 * h ? n_end - n0 : 2 * h);
        for (int64_t pn = p0; pn < p1; pn++) {
            const int mrows = gx_sk_panel_rows(a, pn);
            const gx_real *ap = a->ap + (pn * a->K + k0) * GX_SK_MR;
            gx_real *cb = c + pn * GX_SK_MR * ldc + n0;
#ifdef GX_SK_X86
            if (simd) {
                gx_sk_block_for(h)(kn, ap, br + k0, n0, nn < h ? nn : h, br + k0, n0 + h, nn > h ? nn - h : 0, cb,
                                   cb + h, ldc, mrows, acc);
                continue;
            }
#else
            (void)h;
#endif
            gx_sk_block_ref(kn, ap, br + k0, n0, nn, cb, ldc, mrows, acc);
        }
    }
}

/* For each sample s < ns: C_s [M, N] (row stride ldc) = (acc ? C_s : 0) +
 * A B_s, where row k of B_s is brow[s*K + k][0 .. N).
 * Blocking: the depth runs in chunks of GX_SK_KC (a chunk's 16-column strip
 * of B, <= 16 KB, stays in L1 while a group of weight panels, <= 128 KB,
 * sits in L2 and is reused for every strip). A chunk continues the
 * element's FMA chain from the value stored by the previous one, so the
 * order is k = 0..K-1 whatever the blocking. With AVX2, when the last
 * block of columns has 1..8 (small outputs: 2x2 is 6 columns wide, 4x4 22)
 * two samples' last blocks share one block (gx_sk_block_avx2's halves):
 * the same chain per element, half the blocks. The units of work, (panel
 * group, one or two samples), own disjoint rows of C: they split across
 * OpenMP threads with no reduction. */
/* The blocking above for weights a: depth chunks of kc, groups of pg
 * panels (groups of them in all). */
typedef struct { int64_t panels, kc, pg, groups; } gx_sk_blocks;
static gx_sk_blocks gx_sk_blocking(const gx_sk_a *a) {
    gx_sk_blocks b;
    b.panels = (a->M + GX_SK_MR - 1) / GX_SK_MR;
    b.kc = a->K < GX_SK_KC ? (a->K > 0 ? a->K : 1) : GX_SK_KC;
    b.pg = 32768 / (GX_SK_MR * b.kc);
    if (b.pg < 1) b.pg = 1;
    b.groups = (b.panels + b.pg - 1) / b.pg;
    return b;
}

static void gx_sk_run(const gx_ctx *ctx, const gx_sk_a *a, int64_t ns, const gx_real *const *brow, int64_t N,
                      gx_real *const *c, int64_t ldc, int acc) {
    const gx_sk_blocks bl = gx_sk_blocking(a);
    const int64_t K = a->K, panels = bl.panels, kc = bl.kc, pg = bl.pg, groups = bl.groups;
    const int simd = gx_sk_simd(), h = simd && N >= 32 ? gx_sk_half(ctx) : 8;
    const int tail = (int)(N % (2 * h));
    const int pair = simd && ns > 1 && tail > 0 && tail <= h;
    const int64_t step = pair ? 2 : 1, nu = (ns + step - 1) / step, n_full = pair ? N - tail : N;
    #pragma omp parallel for schedule(static) if (ns * a->M * N * K > 8 * GX_PAR_THRESHOLD)
    for (int64_t u = 0; u < groups * nu; u++) {
        const int64_t g = u / nu, s0 = (u % nu) * step, s1 = s0 + step < ns ? s0 + step : ns;
        const int64_t p0 = g * pg, p1 = (g + 1) * pg < panels ? (g + 1) * pg : panels;
        for (int64_t k0 = 0; k0 < K; k0 += kc) {
            const int64_t kn = K - k0 < kc ? K - k0 : kc;
            const int ac = acc || k0 > 0;
            for (int64_t smp = s0; smp < s1; smp++)
                gx_sk_strip(a, p0, p1, k0, kn, brow + smp * K, s1 - s0 == 2 ? n_full : N, c[smp], ldc, ac, simd,
                            h);
#ifdef GX_SK_X86
            if (pair && s1 - s0 == 2)
                for (int64_t pn = p0; pn < p1; pn++) {
                    const int mrows = gx_sk_panel_rows(a, pn);
                    const int64_t off = pn * GX_SK_MR * ldc + n_full;
                    gx_sk_block_for(h)(kn, a->ap + (pn * K + k0) * GX_SK_MR, brow + s0 * K + k0, n_full, tail,
                                       brow + s1 * K - K + k0, n_full, tail, c[s0] + off, c[s1 - 1] + off, ldc,
                                       mrows, ac);
                }
#endif
        }
    }
}

/* The shifted GEMM's output without its junk columns: for each sample s,
 * C_s [M, Ho*Wo] (row stride Ho*Wo) = (acc ? C_s : 0) + A B_s, where
 * output pixel (oh, ow) reads column oh*Wp + ow of the rows brow[s*K + k]
 * (the padded planes' tap views). Each output row is cut into runs of at
 * most h columns, and a block's two halves take two consecutive runs (of
 * one row, or the end of one and the start of the next), so no lane
 * computes the Wp - Wo columns between rows that the wide layout needs
 * (ResNet-18 at 64x64: 12.5% of layer1's columns, 25% of layer2's). The
 * blocking, the threads' units and each element's chain from the bias are
 * gx_sk_run's, so the bits are the wide layout's. */
static void gx_sk_run_rows(const gx_ctx *ctx, const gx_sk_a *a, int64_t ns, const gx_real *const *brow, int64_t Ho,
                           int64_t Wo, int64_t Wp, gx_real *const *c, int acc) {
    const gx_sk_blocks bl = gx_sk_blocking(a);
    const int64_t K = a->K, panels = bl.panels, kc = bl.kc, pg = bl.pg, groups = bl.groups, N = Ho * Wo;
    const int simd = gx_sk_simd(), h = simd && Wo >= 16 ? gx_sk_half(ctx) : 8;
    const int64_t per_row = (Wo + h - 1) / h, runs = Ho * per_row, blocks = (runs + 1) / 2;
    #pragma omp parallel for schedule(static) if (ns * a->M * N * K > 8 * GX_PAR_THRESHOLD)
    for (int64_t u = 0; u < groups * ns; u++) {
        const int64_t g = u / ns, smp = u % ns, p0 = g * pg, p1 = (g + 1) * pg < panels ? (g + 1) * pg : panels;
        const gx_real *const *br = brow + smp * K;
        for (int64_t k0 = 0; k0 < K; k0 += kc) {
            const int64_t kn = K - k0 < kc ? K - k0 : kc;
            const int ac = acc || k0 > 0;
            for (int64_t m = 0; m < blocks; m++) {
                int64_t boff[2] = { 0, 0 }, coff[2] = { 0, 0 };
                int len[2] = { 0, 0 };
                for (int hh = 0; hh < 2 && 2 * m + hh < runs; hh++) {
                    const int64_t r = 2 * m + hh, oh = r / per_row, j0 = (r % per_row) * h;
                    boff[hh] = oh * Wp + j0;
                    coff[hh] = oh * Wo + j0;
                    len[hh] = (int)(Wo - j0 < h ? Wo - j0 : h);
                }
                for (int64_t pn = p0; pn < p1; pn++) {
                    const int mrows = gx_sk_panel_rows(a, pn);
                    const gx_real *ap = a->ap + (pn * K + k0) * GX_SK_MR;
                    gx_real *cb = c[smp] + pn * GX_SK_MR * N;
#ifdef GX_SK_X86
                    if (simd) {
                        gx_sk_block_for(h)(kn, ap, br + k0, boff[0], len[0], br + k0, boff[1], len[1],
                                           cb + coff[0], cb + coff[1], N, mrows, ac);
                        continue;
                    }
#endif
                    for (int hh = 0; hh < 2; hh++)
                        gx_sk_block_ref(kn, ap, br + k0, boff[hh], len[hh], cb + coff[hh], N, mrows, ac);
                }
            }
        }
    }
}

/* Where the packed-weight GEMM beats a BLAS call per sample (measured,
 * 2-core AVX2 box, batch 10, 1 thread, best of 15): few output channels
 * per group, where BLAS's 16-row micro-kernel idles (the decoder's 3x3
 * 32->3 output conv at 64x64: 2.95 ms instead of 4.74), and tiny outputs
 * with many weights, where re-packing the weights per sample dominates (the
 * encoder's 4x4 s2 128->256 conv, 4x4 output: 3.09 ms instead of 3.75).
 * Elsewhere BLAS's packed panels win (e.g. 3x3 32->32 at 64x64: BLAS ~1.5x
 * faster), so the other convs keep it. Since the shifted path writes only
 * the output columns (gx_sk_run_rows, 2026-11-25), stride-1 outputs of up
 * to GX_SK_SHIFT_HW pixels take it too: ResNet-18 predict at 64x64, batch
 * 32, 127-129 -> 115-116.5 ms at 1 thread and 67-72 -> 59.5-60.6 at 2
 * (its layer1 at 16x16 and layer2 at 8x8; with the AVX2 block alone
 * 137-139 -> 127-129), CF-INN classify and grid unchanged; strided convs of
 * that size stay on BLAS (CF-INN classify 5% slower with them), and so do
 * larger outputs (the 32x32 stem: 2% slower). A pure function of the
 * geometry: the same path for every batch size. */
#define GX_SK_SHIFT_HW 256
static int gx_sk_pays(const gx_conv_geom *q) {
    const int64_t hw = q->Ho * q->Wo;
    return gx_sk_simd() && (q->Cout / q->g < 16 || hw <= 32 || (q->s == 1 && hw <= GX_SK_SHIFT_HW));
}

/* Samples per gx_sk_run call: their inputs (padded planes or im2col
 * columns, per_sample values each) are prepared together; about 16 MB. */
static int64_t gx_sk_chunk(int64_t per_sample, int64_t B) {
    int64_t n = per_sample > 0 ? (int64_t)(4 << 20) / per_sample : B;
    return n < 1 ? 1 : n > B ? B : n;
}

/* ------------------------------------------ conv weights for the packed GEMM */

/* A frozen conv weight's cache (gx_params_freeze): the copy of its values
 * that the conv's path reads, made once instead of on every call. Why: at
 * batch 1 the packing, a pass over every weight per call, was 46% of a
 * ResNet-18 forward at 64x64 (perf, 2026-11-24), and the shifted GEMM's
 * tap-major copy another 8% after that; a served model's weights never
 * change. What the copy is (kind), the data pointer and the geometry are
 * the key: a tensor whose data moved (to the device) or that another conv
 * reads another way makes its copy per call as before. */
enum { GX_WC_SK_TAP = 1, GX_WC_SK_CHANNEL = 2, GX_WC_SHIFT_TAPS = 3 };
typedef void (*gx_wc_fill_fn)(const gx_conv_geom *q, const gx_real *w, gx_real *dst);
typedef struct {
    const gx_real *data;
    int64_t groups, M, K, n;
    int kind;
    gx_real *v;                /* n values, after this header */
} gx_wcache;

/* The n values of weight w's copy of this kind for q (fill writes them),
 * from its cache, made now if it has none; NULL when the cache is another
 * copy or memory is short. Threads serving the same model may get here
 * together: each fills, one publishes (compare and swap), the others free
 * theirs and take the published one. */
static const gx_real *gx_wcache_get(const gx_conv_geom *q, gx_tensor *w, int kind, int64_t n, gx_wc_fill_fn fill) {
    const int64_t M = q->Cout / q->g, K = q->Cin / q->g * q->kh * q->kw;
    gx_wcache *c = __atomic_load_n((gx_wcache **)&w->cache, __ATOMIC_ACQUIRE);
    if (!c) {
        const size_t hdr = (sizeof *c + 63) & ~(size_t)63;
        gx_wcache *nc = aligned_alloc(64, hdr + ((size_t)n * sizeof(gx_real) + 63) / 64 * 64);
        if (!nc) return NULL;
        *nc = (gx_wcache){ w->data, q->g, M, K, n, kind, (gx_real *)((char *)nc + hdr) };
        fill(q, w->data, nc->v);
        void *expected = NULL;
        if (__atomic_compare_exchange_n(&w->cache, &expected, nc, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            c = nc;
        } else {
            free(nc);
            c = expected;
        }
    }
    int same = c->data == w->data && c->kind == kind && c->n == n && c->groups == q->g && c->M == M && c->K == K;
    return same ? c->v : NULL;
}

/* Depth order of a conv's packed weights: k = tap * Cin_g + ci at stride 1
 * (the shifted GEMM, and gx_conv2d_small_fwd_sk at stride 1), k = ci *
 * kh*kw + tap otherwise (im2col). */
static gx_sk_a gx_sk_conv_pack_into(gx_real *ap, const gx_conv_geom *q, const gx_real *w, int64_t g) {
    const int64_t cin_g = q->Cin / q->g, cout_g = q->Cout / q->g, kk = q->kh * q->kw, K = cin_g * kk;
    const gx_real *wg = w + g * cout_g * K;
    return q->s == 1 ? gx_sk_pack_into(ap, wg, cout_g, cin_g, K, kk, kk, 1)
                     : gx_sk_pack_into(ap, wg, cout_g, K, K, 1, 1, 0);
}

/* Every group's panels, one after the other (a gx_wc_fill_fn). */
static void gx_sk_conv_fill(const gx_conv_geom *q, const gx_real *w, gx_real *dst) {
    const int64_t per = gx_sk_panel_size(q->Cout / q->g, q->Cin / q->g * q->kh * q->kw);
    for (int64_t g = 0; g < q->g; g++) gx_sk_conv_pack_into(dst + g * per, q, w, g);
}

/* Group g's packed weights: from a frozen tensor's cache, else packed into
 * the arena now. The same panels either way, so the same bits. */
static gx_sk_a gx_sk_conv_weights(gx_ctx *ctx, const gx_conv_geom *q, gx_tensor *w, int64_t g) {
    const int64_t M = q->Cout / q->g, K = q->Cin / q->g * q->kh * q->kw, per = gx_sk_panel_size(M, K);
    const gx_real *v = w->frozen ? gx_wcache_get(q, w, q->s == 1 ? GX_WC_SK_TAP : GX_WC_SK_CHANNEL, q->g * per,
                                                 gx_sk_conv_fill)
                                 : NULL;
    if (v) return (gx_sk_a){ M, K, (gx_real *)v + g * per };   /* read only */
    gx_real *ap = gx_ctx_alloc(ctx, (size_t)per * sizeof(gx_real));
    return gx_sk_conv_pack_into(ap, q, w->data, g);
}

/* ------------------------------------------------ im2col path (stride > 1) */

/* Output rows [rows, n] of one (sample, group) seeded with the bias. */
static void gx_bias_seed(gx_real *out, const gx_real *b, int64_t rows, int64_t n) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = 0; k < n; k++) out[r * n + k] = b[r];
}

/* Stride > 1 with im2col columns on the packed-weight GEMM (see
 * gx_sk_pays for when). */
static void gx_conv2d_im2col_fwd_sk(gx_ctx *ctx, const gx_conv_geom *q, const gx_real *x,
                                    gx_tensor *w, const gx_real *b, gx_real *y) {
    int64_t cin_g = q->Cin / q->g, cout_g = q->Cout / q->g;
    int64_t K = cin_g * q->kh * q->kw, N = q->Ho * q->Wo, ch = gx_sk_chunk(K * N, q->B);
    gx_real *col = gx_ctx_alloc(ctx, (size_t)(ch * K * N) * sizeof(gx_real));
    const gx_real **brow = gx_ctx_alloc(ctx, (size_t)(ch * K) * sizeof *brow);
    gx_real **cp = gx_ctx_alloc(ctx, (size_t)ch * sizeof *cp);
    for (int64_t g = 0; g < q->g; g++) {
        gx_sk_a a = gx_sk_conv_weights(ctx, q, w, g);
        for (int64_t n0 = 0; n0 < q->B; n0 += ch) {
            int64_t ns = q->B - n0 < ch ? q->B - n0 : ch;
            for (int64_t i = 0; i < ns; i++) {
                gx_real *ci = col + i * K * N;
                gx_im2col(x + ((n0 + i) * q->Cin + g * cin_g) * q->H * q->W, cin_g, q, ci);
                for (int64_t k = 0; k < K; k++) brow[i * K + k] = ci + k * N;
                cp[i] = y + ((n0 + i) * q->Cout + g * cout_g) * N;
                if (b) gx_bias_seed(cp[i], b + g * cout_g, cout_g, N);
            }
            gx_sk_run(ctx, &a, ns, brow, N, cp, N, b != NULL);
        }
    }
}

/* y [B, Cout, Ho, Wo] = conv(x, w) + b through GEMM per (sample, group). */
static void gx_conv2d_im2col_fwd_blas(gx_ctx *ctx, const gx_conv_geom *q, const gx_real *x,
                                      const gx_real *w, const gx_real *b, gx_real *y) {
    int64_t cin_g = q->Cin / q->g, cout_g = q->Cout / q->g;
    int64_t K = cin_g * q->kh * q->kw, N = q->Ho * q->Wo;
    gx_real *col = gx_ctx_alloc(ctx, (size_t)(K * N) * sizeof(gx_real));
    for (int64_t n = 0; n < q->B; n++) {
        for (int64_t g = 0; g < q->g; g++) {
            const gx_real *xg = x + (n * q->Cin + g * cin_g) * q->H * q->W;
            gx_real *yg = y + (n * q->Cout + g * cout_g) * N;
            /* Seed output rows with the bias; GEMM adds on top (beta 1). */
            if (b)
                for (int64_t co = 0; co < cout_g; co++)
                    for (int64_t k = 0; k < N; k++) yg[co * N + k] = b[g * cout_g + co];
            gx_im2col(xg, cin_g, q, col);
            gx_gemm(0, 0, cout_g, N, K, 1.0, w + g * cout_g * K, K, col, N, b ? 1.0 : 0.0, yg, N);
        }
    }
}

/* Gradients of the im2col path; dx/dw may be NULL when not required. */
static void gx_conv2d_im2col_bwd(gx_ctx *ctx, const gx_conv_geom *q, const gx_real *x,
                                 const gx_real *w, const gx_real *dy, gx_real *dx, gx_real *dw) {
    int64_t cin_g = q->Cin / q->g, cout_g = q->Cout / q->g;
    int64_t K = cin_g * q->kh * q->kw, N = q->Ho * q->Wo;
    gx_real *col = gx_ctx_alloc(ctx, (size_t)(K * N) * sizeof(gx_real));
    for (int64_t n = 0; n < q->B; n++) {
        for (int64_t g = 0; g < q->g; g++) {
            const gx_real *xg = x + (n * q->Cin + g * cin_g) * q->H * q->W;
            const gx_real *dyg = dy + (n * q->Cout + g * cout_g) * N;
            if (dw) {
                /* dW_g += dY_g col^T; samples run in order, so the sum over
                 * the batch is deterministic. */
                gx_im2col(xg, cin_g, q, col);
                gx_gemm(0, 1, cout_g, K, N, 1.0, dyg, N, col, N, 1.0, dw + g * cout_g * K, K);
            }
            if (dx) {
                /* col is free again: reuse it for dcol = W_g^T dY_g. */
                gx_gemm(1, 0, K, N, cout_g, 1.0, w + g * cout_g * K, K, dyg, N, 0.0, col, N);
                gx_col2im(ctx, col, N, 1, cin_g, q, dx + (n * q->Cin + g * cin_g) * q->H * q->W);
            }
        }
    }
}

/* ----------------------------------------- shifted-GEMM path (stride 1)
 *
 * With stride 1, im2col's rows are just shifted copies of the (padded)
 * input. Lay the input out zero-padded, xp [C, Hp*Wp] (Hp = H+2p, Wp =
 * W+2p), and compute the output on the padded width: column n = oh*Wp + ow.
 * Tap (i, j) then reads xp[c, n + i*Wp + j], i.e. the matrix xp offset by
 * i*Wp + j with leading dimension Hp*Wp — a plain GEMM operand. So
 *     Yw [Cout_g, Nw] = sum_taps W_t [Cout_g, Cin_g] xp_t [Cin_g, Nw],
 * kh*kw GEMMs with K = Cin_g, and no im2col buffer (kh*kw times the input)
 * is ever written: that memory traffic was ~25% of a 3x3 conv at batch 1.
 * Columns ow >= Wo of Yw are junk (they wrap into the next row) and are
 * dropped; Nw = (Ho-1)*Wp + Wo stops before the last row's junk so every
 * access stays inside the plane. Backward is the same trick transposed:
 * dY widened with zero junk columns gives dW_t += dYw xp_t^T and
 * dxp_t += W_t^T dYw. With p = 0 no padded copy is needed, and a 1x1 conv
 * reads x, writes y and accumulates dx in place: zero copies. */

typedef struct {
    int64_t cin_g, cout_g, kk, Hp, Wp, P, Nw;   /* P = Hp*Wp, plane stride of xp */
} gx_shift_geom;

static gx_shift_geom gx_shift_make(const gx_conv_geom *q) {
    gx_shift_geom s;
    s.cin_g = q->Cin / q->g; s.cout_g = q->Cout / q->g; s.kk = q->kh * q->kw;
    s.Hp = q->H + 2 * q->p; s.Wp = q->W + 2 * q->p; s.P = s.Hp * s.Wp;
    s.Nw = (q->Ho - 1) * s.Wp + q->Wo;
    return s;
}

/* wt [kk, Cout, Cin_g] from w [Cout, Cin_g, kh, kw]: each tap's matrix
 * contiguous, as GEMM needs (a gx_wc_fill_fn). */
static void gx_shift_weights_fill(const gx_conv_geom *q, const gx_real *w, gx_real *wt) {
    const int64_t cin_g = q->Cin / q->g, kk = q->kh * q->kw;
    /* Rows of wt written in order, each from one filter's [cin_g, kk] block
     * (in cache): tap-innermost writes strode Cout*cin_g floats apart, a
     * TLB miss per element for layer4's 9 MB (3% of a UDA training step,
     * all of it on one thread). */
    for (int64_t co = 0; co < q->Cout; co++)
        for (int64_t t = 0; t < kk; t++) {
            const gx_real *src = w + co * cin_g * kk + t;
            gx_real *dst = wt + (t * q->Cout + co) * cin_g;
            for (int64_t ci = 0; ci < cin_g; ci++) dst[ci] = src[ci * kk];
        }
}

/* The tap-major copy of w in the arena. */
static gx_real *gx_shift_weights(gx_ctx *ctx, const gx_conv_geom *q, const gx_shift_geom *s, const gx_real *w) {
    gx_real *wt = gx_ctx_alloc(ctx, (size_t)(s->kk * q->Cout * s->cin_g) * sizeof(gx_real));
    gx_shift_weights_fill(q, w, wt);
    return wt;
}

/* The tap-major copy of weight tensor w: a frozen tensor's cache, else
 * made in the arena now. */
static const gx_real *gx_shift_weights_of(gx_ctx *ctx, const gx_conv_geom *q, const gx_shift_geom *s, gx_tensor *w) {
    const gx_real *v = w->frozen ? gx_wcache_get(q, w, GX_WC_SHIFT_TAPS, s->kk * q->Cout * s->cin_g,
                                                 gx_shift_weights_fill)
                                 : NULL;
    return v ? v : gx_shift_weights(ctx, q, s, w->data);
}

/* Planes [H, W] of channels c0 .. c0+C-1 of every sample of src [B, Ctot,
 * H, W] into dst, one row of length L per channel: sample n's plane at
 * column n*P + at, its rows Wp apart (the padded width). What lies between
 * is left as it is (zero, written once at allocation: the borders and junk
 * columns). One sample's padded planes are B = 1, L = P, at = p*Wp + p;
 * its wide rows (the shifted GEMM's output width) L = Nw, at = 0. */
static void gx_gather_planes(const gx_real *src, int64_t B, int64_t Ctot, int64_t c0, int64_t C, int64_t H,
                             int64_t W, gx_real *dst, int64_t L, const gx_shift_geom *s, int64_t at) {
    #pragma omp parallel for schedule(static) if (B * C * H * W > GX_PAR_THRESHOLD)
    for (int64_t nc = 0; nc < B * C; nc++) {
        int64_t n = nc / C, c = nc % C;
        for (int64_t h = 0; h < H; h++)
            memcpy(dst + c * L + n * s->P + at + h * s->Wp, src + ((n * Ctot + c0 + c) * H + h) * W,
                   (size_t)W * sizeof(gx_real));
    }
}

/* The way back: planes c0 .. c0+C-1 of dst [B, Ctot, H, W] = (add: +=) the
 * planes that src holds in gx_gather_planes' layout (row length L, sample n
 * at column n*P + at). */
static void gx_scatter_planes(gx_real *dst, int64_t B, int64_t Ctot, int64_t c0, int64_t C, int64_t H, int64_t W,
                              const gx_real *src, int64_t L, const gx_shift_geom *s, int64_t at, int add) {
    #pragma omp parallel for schedule(static) if (B * C * H * W > GX_PAR_THRESHOLD)
    for (int64_t nc = 0; nc < B * C; nc++) {
        int64_t n = nc / C, c = nc % C;
        for (int64_t h = 0; h < H; h++) {
            const gx_real *r = src + c * L + n * s->P + at + h * s->Wp;
            gx_real *d = dst + ((n * Ctot + c0 + c) * H + h) * W;
            if (add)
                for (int64_t k = 0; k < W; k++) d[k] += r[k];
            else
                memcpy(d, r, (size_t)W * sizeof *d);
        }
    }
}

/* Where the interior of a padded plane starts. */
static int64_t gx_pad_at(const gx_conv_geom *q, const gx_shift_geom *s) {
    return q->p * s->Wp + q->p;
}

/* Zeroed [n] scratch. */
static gx_real *gx_zalloc(gx_ctx *ctx, int64_t n) {
    gx_real *p = gx_ctx_alloc(ctx, (size_t)n * sizeof(gx_real));
    memset(p, 0, (size_t)n * sizeof(gx_real));
    return p;
}

/* Padded input planes of sample n, group g: x itself when p == 0. */
static const gx_real *gx_shift_input(const gx_conv_geom *q, const gx_shift_geom *s, const gx_real *x,
                                     int64_t n, int64_t g, gx_real *xp) {
    const gx_real *xg = x + (n * q->Cin + g * s->cin_g) * q->H * q->W;
    if (!xp) return xg;
    gx_gather_planes(xg, 1, s->cin_g, 0, s->cin_g, q->H, q->W, xp, s->P, s, gx_pad_at(q, s));
    return xp;
}

/* The shifted-GEMM forward on the packed-weight GEMM: depth index
 * k = tap * Cin_g + ci reads padded plane ci at the tap's offset; the
 * output rows go straight into y (gx_sk_run_rows: no junk columns). */
static void gx_conv2d_shift_fwd_sk(gx_ctx *ctx, const gx_conv_geom *q, const gx_real *x,
                                   gx_tensor *w, const gx_real *b, gx_real *y) {
    gx_shift_geom s = gx_shift_make(q);
    int64_t N = q->Ho * q->Wo, K = s.kk * s.cin_g;
    int64_t ch = gx_sk_chunk(q->p ? s.cin_g * s.P : 0, q->B);
    gx_real *xp = q->p ? gx_zalloc(ctx, ch * s.cin_g * s.P) : NULL;
    const gx_real **brow = gx_ctx_alloc(ctx, (size_t)(ch * K) * sizeof *brow);
    gx_real **cp = gx_ctx_alloc(ctx, (size_t)ch * sizeof *cp);
    for (int64_t g = 0; g < q->g; g++) {
        /* Straight from w [Cout, Cin_g, kh, kw] (depth k = tap * Cin_g + ci),
         * not from gx_shift_weights' tap-major copy: at batch 1 the two passes
         * over the weights were 60% of a ResNet-18 forward at 64x64. */
        gx_sk_a a = gx_sk_conv_weights(ctx, q, w, g);
        for (int64_t n0 = 0; n0 < q->B; n0 += ch) {
            int64_t ns = q->B - n0 < ch ? q->B - n0 : ch;
            for (int64_t i = 0; i < ns; i++) {
                const gx_real *in = gx_shift_input(q, &s, x, n0 + i, g, xp ? xp + i * s.cin_g * s.P : NULL);
                for (int64_t t = 0; t < s.kk; t++)
                    for (int64_t c = 0; c < s.cin_g; c++)
                        brow[i * K + t * s.cin_g + c] = in + c * s.P + (t / q->kw) * s.Wp + t % q->kw;
                cp[i] = y + ((n0 + i) * q->Cout + g * s.cout_g) * N;
                if (b) gx_bias_seed(cp[i], b + g * s.cout_g, s.cout_g, N);
            }
            gx_sk_run_rows(ctx, &a, ns, brow, q->Ho, q->Wo, s.Wp, cp, b != NULL);
        }
    }
}

static void gx_conv2d_shift_fwd_blas(gx_ctx *ctx, const gx_conv_geom *q, const gx_real *x,
                                     gx_tensor *w, const gx_real *b, gx_real *y) {
    gx_shift_geom s = gx_shift_make(q);
    int64_t N = q->Ho * q->Wo;
    int wide = q->Wo != s.Wp;      /* else Yw is y itself (kw == 1, p == 0) */
    const gx_real *wt = gx_shift_weights_of(ctx, q, &s, w);
    gx_real *xp = q->p ? gx_zalloc(ctx, s.cin_g * s.P) : NULL;
    gx_real *yw = wide ? gx_ctx_alloc(ctx, (size_t)(s.cout_g * s.Nw) * sizeof(gx_real)) : NULL;
    for (int64_t n = 0; n < q->B; n++) {
        for (int64_t g = 0; g < q->g; g++) {
            const gx_real *in = gx_shift_input(q, &s, x, n, g, xp);
            gx_real *yg = y + (n * q->Cout + g * s.cout_g) * N, *out = wide ? yw : yg;
            /* Bias seeds the accumulator; every tap then adds with beta 1. */
            if (b)
                for (int64_t co = 0; co < s.cout_g; co++)
                    for (int64_t k = 0; k < s.Nw; k++) out[co * s.Nw + k] = b[g * s.cout_g + co];
            for (int64_t t = 0; t < s.kk; t++)
                gx_gemm(0, 0, s.cout_g, s.Nw, s.cin_g, 1.0, wt + (t * q->Cout + g * s.cout_g) * s.cin_g, s.cin_g,
                        in + (t / q->kw) * s.Wp + t % q->kw, s.P, (b || t) ? 1.0 : 0.0, out, s.Nw);
            if (wide)   /* wide rows [Cout_g, Nw] -> planes [Cout_g, Ho, Wo]: the junk dropped */
                gx_scatter_planes(yg, 1, s.cout_g, 0, s.cout_g, q->Ho, q->Wo, yw, s.Nw, &s, 0, 0);
        }
    }
}

/* dw [Cout, Cin_g, kh, kw] += dwt [kk, Cout, Cin_g] (undo the reorder). */
static void gx_shift_weights_back(const gx_conv_geom *q, const gx_shift_geom *s, const gx_real *dwt, gx_real *dw) {
    /* Rows of dwt read in order (as gx_shift_weights_fill writes them). */
    for (int64_t co = 0; co < q->Cout; co++)
        for (int64_t t = 0; t < s->kk; t++) {
            const gx_real *src = dwt + (t * q->Cout + co) * s->cin_g;
            gx_real *dst = dw + co * s->cin_g * s->kk + t;
            for (int64_t ci = 0; ci < s->cin_g; ci++) dst[ci * s->kk] += src[ci];
        }
}

/* The whole batch's shifted-GEMM rows: sample n's padded plane at column
 * n*P, cols = the GEMMs' width (the last plane's wide rows end it), L =
 * the row length (a tap's view reads up to off_max columns past cols). */
static void gx_shift_batch_span(const gx_conv_geom *q, const gx_shift_geom *s, int64_t *cols, int64_t *L) {
    const int64_t off_max = (q->kh - 1) * s->Wp + (q->kw - 1);
    *cols = (q->B - 1) * s->P + s->Nw;
    *L = q->B * s->P + off_max;
}

/* Planes up to this many columns (Nw: 16x16 with padding 1 is 286) take
 * the whole-batch backward. Larger ones keep the per-sample loop: their
 * GEMMs are already wide, and batch-sized copies of them would only add
 * memory traffic (a WaveletMamba at 64x64 trained 35% slower that way). */
#define GX_SHIFT_BWD_BATCH_NW 1024

/* The shifted-GEMM backward over the whole batch at once: every operand is
 * one matrix with sample n's (padded, widened) plane at column n*P, so each
 * tap is one GEMM over all samples (K = B*P for dW, N = B*P for dx) instead
 * of B small ones. Why: the UDA training step (ResNet-18, 144 rows through
 * the backbone) spent 11% of its cycles in BLAS re-packing one sample's
 * shifted input per tap and sample, and its 64-column GEMMs ran far from
 * the kernel's peak. A tap's view of sample n reads at most off_max columns
 * past its plane, into the next sample's zero border or the row's tail, and
 * dY is zero there (junk and padding columns), so the samples do not mix.
 * dW's sum over the batch is now BLAS's, not sample after sample; it is
 * still a fixed function of the batch (a training step's gradient depends
 * on the whole batch anyway; forwards stay per sample for batch
 * invariance). Scratch (three batch-sized copies) is the ctx's
 * gx_ctx_scratch, so the step's arena does not grow by it and its pages stay
 * mapped from call to call. Returns 0, having done nothing, when that memory
 * is not there: the caller runs the per-sample loop, as it does for a batch
 * of one. */
static int gx_conv2d_shift_bwd_batch(gx_ctx *ctx, const gx_conv_geom *q, const gx_shift_geom *s,
                                     const gx_real *wt, const gx_real *x, const gx_real *dy, gx_real *dx,
                                     gx_real *dwt) {
    int64_t cols, L;
    gx_shift_batch_span(q, s, &cols, &L);
    const size_t ny = (size_t)(s->cout_g * L), nx = dwt ? (size_t)(s->cin_g * L) : 0,
                 ndx = dx ? (size_t)(s->cin_g * L) : 0;
    gx_real *dyc = gx_ctx_scratch(ctx, (ny + nx + ndx) * sizeof *dyc);
    if (!dyc) return 0;
    gx_real *xc = dwt ? dyc + ny : NULL, *dxc = dx ? dyc + ny + nx : NULL;
    /* The gathers write plane interiors only: borders and the junk columns
     * must read zero, for every group. */
    memset(dyc, 0, (ny + nx) * sizeof *dyc);
    for (int64_t g = 0; g < q->g; g++) {
        gx_gather_planes(dy, q->B, q->Cout, g * s->cout_g, s->cout_g, q->Ho, q->Wo, dyc, L, s, 0);
        if (dwt) {
            gx_gather_planes(x, q->B, q->Cin, g * s->cin_g, s->cin_g, q->H, q->W, xc, L, s, gx_pad_at(q, s));
            for (int64_t t = 0; t < s->kk; t++)
                gx_gemm(0, 1, s->cout_g, s->cin_g, cols, 1.0, dyc, L, xc + (t / q->kw) * s->Wp + t % q->kw, L, 1.0,
                        dwt + (t * q->Cout + g * s->cout_g) * s->cin_g, s->cin_g);
        }
        if (dx) {
            memset(dxc, 0, (size_t)(s->cin_g * L) * sizeof *dxc);
            for (int64_t t = 0; t < s->kk; t++)
                gx_gemm(1, 0, s->cin_g, cols, s->cout_g, 1.0, wt + (t * q->Cout + g * s->cout_g) * s->cin_g, s->cin_g,
                        dyc, L, 1.0, dxc + (t / q->kw) * s->Wp + t % q->kw, L);
            gx_scatter_planes(dx, q->B, q->Cin, g * s->cin_g, s->cin_g, q->H, q->W, dxc, L, s, gx_pad_at(q, s), 1);
        }
    }
    return 1;
}

static void gx_conv2d_shift_bwd(gx_ctx *ctx, const gx_conv_geom *q, const gx_real *x,
                                const gx_real *w, const gx_real *dy, gx_real *dx, gx_real *dw) {
    gx_shift_geom s = gx_shift_make(q);
    int64_t N = q->Ho * q->Wo;
    int wide = q->Wo != s.Wp;
    const gx_real *wt = gx_shift_weights(ctx, q, &s, w);
    gx_real *dwt = dw ? gx_zalloc(ctx, s.kk * q->Cout * s.cin_g) : NULL;
    if (q->B > 1 && s.Nw <= GX_SHIFT_BWD_BATCH_NW && gx_conv2d_shift_bwd_batch(ctx, q, &s, wt, x, dy, dx, dwt)) {
        if (dw) gx_shift_weights_back(q, &s, dwt, dw);
        return;
    }
    gx_real *xp = (dw && q->p) ? gx_zalloc(ctx, s.cin_g * s.P) : NULL;
    gx_real *dxp = (dx && q->p) ? gx_ctx_alloc(ctx, (size_t)(s.cin_g * s.P) * sizeof(gx_real)) : NULL;
    gx_real *dyw = wide ? gx_zalloc(ctx, s.cout_g * s.Nw) : NULL;
    for (int64_t n = 0; n < q->B; n++) {
        for (int64_t g = 0; g < q->g; g++) {
            const gx_real *dyg = dy + (n * q->Cout + g * s.cout_g) * N;
            if (wide) gx_gather_planes(dyg, 1, s.cout_g, 0, s.cout_g, q->Ho, q->Wo, dyw, s.Nw, &s, 0);
            const gx_real *gw = wide ? dyw : dyg;
            if (dw) {
                /* Samples run in order: the batch sum is deterministic. */
                const gx_real *in = gx_shift_input(q, &s, x, n, g, xp);
                for (int64_t t = 0; t < s.kk; t++)
                    gx_gemm(0, 1, s.cout_g, s.cin_g, s.Nw, 1.0, gw, s.Nw, in + (t / q->kw) * s.Wp + t % q->kw, s.P,
                            1.0, dwt + (t * q->Cout + g * s.cout_g) * s.cin_g, s.cin_g);
            }
            if (dx) {
                /* p == 0: the padded plane is dx itself, accumulate in place. */
                gx_real *dxg = dx + (n * q->Cin + g * s.cin_g) * q->H * q->W, *out = dxp ? dxp : dxg;
                if (dxp) memset(dxp, 0, (size_t)(s.cin_g * s.P) * sizeof(gx_real));
                for (int64_t t = 0; t < s.kk; t++)
                    gx_gemm(1, 0, s.cin_g, s.Nw, s.cout_g, 1.0, wt + (t * q->Cout + g * s.cout_g) * s.cin_g, s.cin_g,
                            gw, s.Nw, 1.0, out + (t / q->kw) * s.Wp + t % q->kw, s.P);
                if (dxp)
                    gx_scatter_planes(dxg, 1, s.cin_g, 0, s.cin_g, q->H, q->W, dxp, s.P, &s, gx_pad_at(q, &s), 1);
            }
        }
    }
    if (dw) gx_shift_weights_back(q, &s, dwt, dw);
}

/* ------------------------------------ small outputs, samples side by side */

/* Outputs of at most this many pixels per sample (ResNet-18's layer3 and
 * layer4 at 64x64: 4x4 and 2x2) take gx_conv2d_small_fwd_sk. */
#define GX_SK_SMALL_HW 32
/* Columns per unit of work there: two 16-column blocks. */
#define GX_SK_SMALL_CW 32

/* Planes c0 .. c0+C-1 of samples 0 .. B-1 of a tensor [B, Ctot, N] against
 * the rows of m [C, L] that hold them side by side (sample n at column n*N):
 * gx_side_by_side_rows copies the tensor t into m, gx_side_by_side_planes
 * m back into the tensor. The element at (n, c) of either layout: */
static int64_t gx_sbs_plane_at(int64_t n, int64_t c, int64_t Ctot, int64_t c0, int64_t N) {
    return (n * Ctot + c0 + c) * N;
}

static void gx_side_by_side_rows(const gx_real *t, gx_real *m, int64_t B, int64_t Ctot, int64_t c0, int64_t C,
                                 int64_t N, int64_t L) {
    #pragma omp parallel for schedule(static) if (C * B * N > GX_PAR_THRESHOLD)
    for (int64_t c = 0; c < C; c++)
        for (int64_t n = 0; n < B; n++)
            memcpy(m + c * L + n * N, t + gx_sbs_plane_at(n, c, Ctot, c0, N), (size_t)N * sizeof *t);
}

static void gx_side_by_side_planes(gx_real *t, const gx_real *m, int64_t B, int64_t Ctot, int64_t c0, int64_t C,
                                   int64_t N, int64_t L) {
    #pragma omp parallel for schedule(static) if (C * B * N > GX_PAR_THRESHOLD)
    for (int64_t c = 0; c < C; c++)
        for (int64_t n = 0; n < B; n++)
            memcpy(t + gx_sbs_plane_at(n, c, Ctot, c0, N), m + c * L + n * N, (size_t)N * sizeof *t);
}

/* Columns of samples n0 .. n0+ns-1, group g, side by side: row k of col
 * (length L) holds every sample's N = Ho*Wo input values for depth index k,
 * sample i at i*N; zero where the tap falls into the padding. Depth order:
 * tap-major k = tap * Cin_g + ci (the shifted GEMM's) or k = ci * kh*kw +
 * tap (im2col's, the weight's own layout). The forward takes the order of
 * the path it replaces, so each output element's FMA chain is unchanged. */
static void gx_small_cols(const gx_conv_geom *q, const gx_real *x, int64_t n0, int64_t ns, int64_t g, int tap_major,
                          gx_real *col, int64_t L) {
    const int64_t cin_g = q->Cin / q->g, kk = q->kh * q->kw, N = q->Ho * q->Wo, K = cin_g * kk;
    #pragma omp parallel for schedule(static) if (K * ns * N > GX_PAR_THRESHOLD)
    for (int64_t k = 0; k < K; k++) {
        const int64_t ci = tap_major ? k % cin_g : k / kk, t = tap_major ? k / cin_g : k % kk;
        const int64_t ty = t / q->kw, tx = t % q->kw;
        int64_t oy0, oy1, ox0, ox1;
        gx_valid_range(q->H, q->Ho, q->s, q->p, ty, &oy0, &oy1);
        gx_valid_range(q->W, q->Wo, q->s, q->p, tx, &ox0, &ox1);
        gx_real *dst = col + k * L;
        memset(dst, 0, (size_t)L * sizeof(gx_real));
        for (int64_t i = 0; i < ns; i++) {
            const gx_real *xc = x + ((n0 + i) * q->Cin + g * cin_g + ci) * q->H * q->W;
            for (int64_t oy = oy0; oy < oy1; oy++) {
                const gx_real *src = xc + (oy * q->s - q->p + ty) * q->W - q->p + tx;
                gx_real *d = dst + i * N + oy * q->Wo;
                for (int64_t ox = ox0; ox < ox1; ox++) d[ox] = src[ox * q->s];
            }
        }
    }
}

/* Small outputs on the packed-weight GEMM with the samples side by side.
 * Why: a 2x2 output is 6 columns wide on the padded width (4 of them
 * output pixels), 6 lanes of one 8-lane half of a 16-column block (two
 * samples share a block); a 4x4 one 22 (16), a block and 6 lanes. Laid side
 * by side, 32 samples of 2x2 fill 8 blocks instead of 16 of which half the
 * lanes are output pixels. Same weights' panels, same depth
 * order as gx_conv2d_shift_fwd_sk / gx_conv2d_im2col_fwd_sk, same chain per
 * element from the bias: the bits do not depend on the neighbours, so the
 * result is still batch invariant (a batch of one is the old layout less
 * its junk columns). Units of GX_SK_SMALL_CW columns split across threads;
 * the last few columns run as one narrower unit. */
static void gx_conv2d_small_fwd_sk(gx_ctx *ctx, const gx_conv_geom *q, const gx_real *x, gx_tensor *w,
                                   const gx_real *b, gx_real *y) {
    const int64_t cin_g = q->Cin / q->g, cout_g = q->Cout / q->g, kk = q->kh * q->kw, K = cin_g * kk;
    const int64_t N = q->Ho * q->Wo, ch = gx_sk_chunk(K * N, q->B), L = ch * N;
    gx_real *col = gx_ctx_alloc(ctx, (size_t)(K * L) * sizeof(gx_real));
    gx_real *yt = gx_ctx_alloc(ctx, (size_t)(cout_g * L) * sizeof(gx_real));
    const int64_t units = L / GX_SK_SMALL_CW + 1;
    const gx_real **brow = gx_ctx_alloc(ctx, (size_t)(units * K) * sizeof *brow);
    gx_real **cp = gx_ctx_alloc(ctx, (size_t)units * sizeof *cp);
    for (int64_t g = 0; g < q->g; g++) {
        gx_sk_a a = gx_sk_conv_weights(ctx, q, w, g);
        for (int64_t n0 = 0; n0 < q->B; n0 += ch) {
            const int64_t ns = q->B - n0 < ch ? q->B - n0 : ch, cols = ns * N;
            const int64_t full = cols / GX_SK_SMALL_CW, rest = cols - full * GX_SK_SMALL_CW;
            gx_small_cols(q, x, n0, ns, g, q->s == 1, col, L);
            if (b) gx_bias_seed(yt, b + g * cout_g, cout_g, L);   /* row stride L: seeds every column */
            for (int64_t u = 0; u <= full; u++) {
                for (int64_t k = 0; k < K; k++) brow[u * K + k] = col + k * L + u * GX_SK_SMALL_CW;
                cp[u] = yt + u * GX_SK_SMALL_CW;
            }
            if (full) gx_sk_run(ctx, &a, full, brow, GX_SK_SMALL_CW, cp, L, b != NULL);
            if (rest) gx_sk_run(ctx, &a, 1, brow + full * K, rest, cp + full, L, b != NULL);
            gx_side_by_side_planes(y + n0 * q->Cout * N, yt, ns, q->Cout, g * cout_g, cout_g, N, L);
        }
    }
}

/* Outputs of at most this many pixels per sample take the whole-batch
 * backward below in a batch of more than one. */
#define GX_SMALL_BWD_HW 64

/* The whole batch's im2col layout for a small-output conv: rows [Cout_g, L]
 * (the output or dY, side by side) and col [K, L] (L = B * Ho*Wo), both in
 * gx_ctx_scratch. 0 when that memory is not there. */
typedef struct { int64_t cin_g, cout_g, K, N, L; gx_real *rows, *col; } gx_small_bufs;

static int gx_small_bufs_get(gx_ctx *ctx, const gx_conv_geom *q, gx_small_bufs *sb) {
    sb->cin_g = q->Cin / q->g;
    sb->cout_g = q->Cout / q->g;
    sb->K = sb->cin_g * q->kh * q->kw;
    sb->N = q->Ho * q->Wo;
    sb->L = q->B * sb->N;
    sb->rows = gx_ctx_scratch(ctx, (size_t)((sb->cout_g + sb->K) * sb->L) * sizeof *sb->rows);
    sb->col = sb->rows ? sb->rows + sb->cout_g * sb->L : NULL;
    return sb->rows != NULL;
}

/* The backward of a small-output conv over the whole batch, on im2col
 * columns with the samples side by side (gx_small_cols, the weight's own
 * depth order): dW_g += dY_g col^T and dcol = W_g^T dY_g are one GEMM
 * each over every sample, then col2im. Why: the shifted GEMM computes on
 * the padded planes, and a 2x2 output's plane is 4x4 (a 4x4 one's 6x6), so
 * its backward multiplied 4x (2.25x) more columns than there are outputs,
 * mostly zeros; the per-sample im2col path of the strided convs ran GEMMs
 * 4 or 16 columns wide. Here every column is an output pixel. The batch
 * sums of dW are BLAS's, a fixed function of the batch, as in
 * gx_conv2d_shift_bwd_batch. Scratch is gx_small_bufs (dY and the columns,
 * which dcol then reuses). Returns 0, having done nothing, when that memory
 * is not there. */
static int gx_conv2d_small_bwd_batch(gx_ctx *ctx, const gx_conv_geom *q, const gx_real *x, const gx_real *w,
                                     const gx_real *dy, gx_real *dx, gx_real *dw) {
    gx_small_bufs sb;
    if (!gx_small_bufs_get(ctx, q, &sb)) return 0;
    const int64_t K = sb.K, L = sb.L, cout_g = sb.cout_g;
    for (int64_t g = 0; g < q->g; g++) {
        gx_side_by_side_rows(dy, sb.rows, q->B, q->Cout, g * cout_g, cout_g, sb.N, L);
        if (dw) {
            gx_small_cols(q, x, 0, q->B, g, 0, sb.col, L);
            gx_gemm(0, 1, cout_g, K, L, 1.0, sb.rows, L, sb.col, L, 1.0, dw + g * cout_g * K, K);
        }
        if (dx) {
            gx_gemm(1, 0, K, L, cout_g, 1.0, w + g * cout_g * K, K, sb.rows, L, 0.0, sb.col, L);
            gx_col2im(ctx, sb.col, L, q->B, sb.cin_g, q, dx + g * sb.cin_g * q->H * q->W);
        }
    }
    return 1;
}

/* ------------------------------- training forwards over the whole batch
 *
 * A training step may let a sample's forward depend on its batch-mates
 * (ctx->batch_invariant 0; batch norm in training mode does anyway). The
 * forwards that run a narrow BLAS GEMM per sample then run in the
 * backward's layouts instead, one GEMM per tap (or one in all) over the
 * batch: outputs of at most GX_SMALL_BWD_HW pixels on im2col columns side
 * by side, larger stride-1 planes of at most GX_SHIFT_BWD_BATCH_NW columns
 * as the shifted GEMM over all samples' padded planes (a tap's view of
 * sample n reads into the next sample's zero border or the row's tail only
 * in the junk columns, which are dropped). Convs the packed-weight GEMM
 * takes for their few output channels (gx_sk_pays) keep it; those it takes
 * for a small output run here too (BLAS over the batch: 1-7% faster per
 * UDA training step than the packed-weight GEMM side by side, A/B).
 * Scratch is gx_ctx_scratch. Each returns 0, having done nothing, when that
 * memory is not there. */
static int gx_conv2d_small_fwd_batch(gx_ctx *ctx, const gx_conv_geom *q, const gx_real *x, const gx_real *w,
                                     const gx_real *b, gx_real *y) {
    gx_small_bufs sb;
    if (!gx_small_bufs_get(ctx, q, &sb)) return 0;
    const int64_t K = sb.K, L = sb.L, cout_g = sb.cout_g;
    for (int64_t g = 0; g < q->g; g++) {
        gx_small_cols(q, x, 0, q->B, g, 0, sb.col, L);
        if (b) gx_bias_seed(sb.rows, b + g * cout_g, cout_g, L);
        gx_gemm(0, 0, cout_g, L, K, 1.0, w + g * cout_g * K, K, sb.col, L, b ? 1.0 : 0.0, sb.rows, L);
        gx_side_by_side_planes(y, sb.rows, q->B, q->Cout, g * cout_g, cout_g, sb.N, L);
    }
    return 1;
}

static int gx_conv2d_shift_fwd_batch(gx_ctx *ctx, const gx_conv_geom *q, const gx_real *x, gx_tensor *w,
                                     const gx_real *b, gx_real *y) {
    gx_shift_geom s = gx_shift_make(q);
    int64_t cols, L;
    gx_shift_batch_span(q, &s, &cols, &L);
    const gx_real *wt = gx_shift_weights_of(ctx, q, &s, w);
    gx_real *xc = gx_ctx_scratch(ctx, (size_t)((s.cin_g + s.cout_g) * L) * sizeof *xc);
    if (!xc) return 0;
    gx_real *yc = xc + s.cin_g * L;
    memset(xc, 0, (size_t)(s.cin_g * L) * sizeof *xc);   /* the borders, for every group */
    for (int64_t g = 0; g < q->g; g++) {
        gx_gather_planes(x, q->B, q->Cin, g * s.cin_g, s.cin_g, q->H, q->W, xc, L, &s, gx_pad_at(q, &s));
        if (b) gx_bias_seed(yc, b + g * s.cout_g, s.cout_g, L);
        for (int64_t t = 0; t < s.kk; t++)
            gx_gemm(0, 0, s.cout_g, cols, s.cin_g, 1.0, wt + (t * q->Cout + g * s.cout_g) * s.cin_g, s.cin_g,
                    xc + (t / q->kw) * s.Wp + t % q->kw, L, (b || t) ? 1.0 : 0.0, yc, L);
        gx_scatter_planes(y, q->B, q->Cout, g * s.cout_g, s.cout_g, q->Ho, q->Wo, yc, L, &s, 0, 0);
    }
    return 1;
}

/* The whole-batch forward that fits q, if any (1: y is written). */
static int gx_conv2d_fwd_batch(gx_ctx *ctx, const gx_conv_geom *q, const gx_real *x, gx_tensor *w,
                               const gx_real *b, gx_real *y) {
    if (q->B < 2 || (gx_sk_pays(q) && q->Cout / q->g < 16)) return 0;
    if (q->Ho * q->Wo <= GX_SMALL_BWD_HW) return gx_conv2d_small_fwd_batch(ctx, q, x, w->data, b, y);
    if (q->s == 1 && gx_shift_make(q).Nw <= GX_SHIFT_BWD_BATCH_NW) return gx_conv2d_shift_fwd_batch(ctx, q, x, w, b, y);
    return 0;
}

/* Stride 1 never needs im2col (see the shifted-GEMM section). */
static void gx_conv2d_im2col_fwd(gx_ctx *ctx, const gx_conv_geom *q, const gx_real *x,
                                 gx_tensor *w, const gx_real *b, gx_real *y) {
    if (gx_sk_pays(q)) gx_conv2d_im2col_fwd_sk(ctx, q, x, w, b, y);
    else gx_conv2d_im2col_fwd_blas(ctx, q, x, w->data, b, y);
}

static void gx_conv2d_shift_fwd(gx_ctx *ctx, const gx_conv_geom *q, const gx_real *x,
                                gx_tensor *w, const gx_real *b, gx_real *y) {
    if (gx_sk_pays(q)) gx_conv2d_shift_fwd_sk(ctx, q, x, w, b, y);
    else gx_conv2d_shift_fwd_blas(ctx, q, x, w, b, y);
}

static void gx_conv2d_gemm_fwd(gx_ctx *ctx, const gx_conv_geom *q, const gx_real *x,
                               gx_tensor *w, const gx_real *b, gx_real *y) {
    if (!ctx->batch_invariant && gx_conv2d_fwd_batch(ctx, q, x, w, b, y)) return;
    if (q->Ho * q->Wo <= GX_SK_SMALL_HW && gx_sk_pays(q)) gx_conv2d_small_fwd_sk(ctx, q, x, w, b, y);
    else if (q->s == 1) gx_conv2d_shift_fwd(ctx, q, x, w, b, y);
    else gx_conv2d_im2col_fwd(ctx, q, x, w, b, y);
}

static void gx_conv2d_gemm_bwd(gx_ctx *ctx, const gx_conv_geom *q, const gx_real *x,
                               const gx_real *w, const gx_real *dy, gx_real *dx, gx_real *dw) {
    if (q->B > 1 && q->Ho * q->Wo <= GX_SMALL_BWD_HW && gx_conv2d_small_bwd_batch(ctx, q, x, w, dy, dx, dw)) return;
    if (q->s == 1) gx_conv2d_shift_bwd(ctx, q, x, w, dy, dx, dw);
    else gx_conv2d_im2col_bwd(ctx, q, x, w, dy, dx, dw);
}

/* ------------------------------------------------------ depthwise conv2d */

/* One output plane: y [Ho, Wo] = bias + sum_ij w[i,j] x[oh*s-p+i, ow*s-p+j],
 * summed in a double row buffer (acc, Wo entries). */
static void gx_dw_plane_fwd(const gx_conv_geom *q, const gx_real *x, const gx_real *w, double bias,
                            gx_real *y, double *acc) {
    for (int64_t oh = 0; oh < q->Ho; oh++) {
        for (int64_t ow = 0; ow < q->Wo; ow++) acc[ow] = bias;
        for (int64_t i = 0; i < q->kh; i++) {
            int64_t ih = oh * q->s - q->p + i;
            if (ih < 0 || ih >= q->H) continue;
            for (int64_t j = 0; j < q->kw; j++) {
                int64_t ow0, ow1;
                gx_valid_range(q->W, q->Wo, q->s, q->p, j, &ow0, &ow1);
                const gx_real *src = x + ih * q->W - q->p + j;
                double wij = (double)w[i * q->kw + j];
                for (int64_t ow = ow0; ow < ow1; ow++) acc[ow] += wij * (double)src[ow * q->s];
            }
        }
        for (int64_t ow = 0; ow < q->Wo; ow++) y[oh * q->Wo + ow] = (gx_real)acc[ow];
    }
}

static void gx_dw_fwd(gx_ctx *ctx, const gx_conv_geom *q, const gx_real *x, const gx_real *w,
                      const gx_real *b, gx_real *y) {
    int64_t C = q->Cin, planes = q->B * C;
    double *scratch = gx_ctx_alloc(ctx, (size_t)(gx_get_threads() * q->Wo) * sizeof(double));
    #pragma omp parallel for schedule(static) if (planes * q->Ho * q->Wo * q->kh * q->kw > GX_PAR_THRESHOLD)
    for (int64_t pl = 0; pl < planes; pl++) {
        int64_t c = pl % C;
        gx_dw_plane_fwd(q, x + pl * q->H * q->W, w + c * q->kh * q->kw, b ? (double)b[c] : 0.0,
                        y + pl * q->Ho * q->Wo, scratch + gx_thread_id() * q->Wo);
    }
}

/* dx plane [H, W] += scatter of w[i,j] dy[oh,ow] into a double plane. */
static void gx_dw_plane_dx(const gx_conv_geom *q, const gx_real *dy, const gx_real *w, gx_real *dx,
                           double *acc) {
    memset(acc, 0, (size_t)(q->H * q->W) * sizeof(double));
    for (int64_t i = 0; i < q->kh; i++) {
        int64_t oh0, oh1;
        gx_valid_range(q->H, q->Ho, q->s, q->p, i, &oh0, &oh1);
        for (int64_t j = 0; j < q->kw; j++) {
            int64_t ow0, ow1;
            gx_valid_range(q->W, q->Wo, q->s, q->p, j, &ow0, &ow1);
            double wij = (double)w[i * q->kw + j];
            for (int64_t oh = oh0; oh < oh1; oh++) {
                double *d = acc + (oh * q->s - q->p + i) * q->W - q->p + j;
                const gx_real *g = dy + oh * q->Wo;
                for (int64_t ow = ow0; ow < ow1; ow++) d[ow * q->s] += wij * (double)g[ow];
            }
        }
    }
    for (int64_t k = 0; k < q->H * q->W; k++) dx[k] += (gx_real)acc[k];
}

/* dw[c] += sum over the batch of correlate(x plane, dy plane); db[c] too.
 * One channel per iteration: the batch sum stays inside one thread. */
static void gx_dw_channel_dw(const gx_conv_geom *q, int64_t c, const gx_real *x, const gx_real *dy,
                             gx_real *dw, gx_real *db) {
    int64_t C = q->Cin, kk = q->kh * q->kw;
    double acc[kk > 0 ? kk : 1], bacc = 0;
    for (int64_t k = 0; k < kk; k++) acc[k] = 0;
    for (int64_t n = 0; n < q->B; n++) {
        const gx_real *xp = x + (n * C + c) * q->H * q->W, *gp = dy + (n * C + c) * q->Ho * q->Wo;
        if (db) for (int64_t k = 0; k < q->Ho * q->Wo; k++) bacc += (double)gp[k];
        if (!dw) continue;
        for (int64_t i = 0; i < q->kh; i++) {
            int64_t oh0, oh1;
            gx_valid_range(q->H, q->Ho, q->s, q->p, i, &oh0, &oh1);
            for (int64_t j = 0; j < q->kw; j++) {
                int64_t ow0, ow1;
                gx_valid_range(q->W, q->Wo, q->s, q->p, j, &ow0, &ow1);
                double s = 0;
                for (int64_t oh = oh0; oh < oh1; oh++) {
                    const gx_real *src = xp + (oh * q->s - q->p + i) * q->W - q->p + j;
                    const gx_real *g = gp + oh * q->Wo;
                    for (int64_t ow = ow0; ow < ow1; ow++) s += (double)g[ow] * (double)src[ow * q->s];
                }
                acc[i * q->kw + j] += s;
            }
        }
    }
    if (dw) for (int64_t k = 0; k < kk; k++) dw[c * kk + k] += (gx_real)acc[k];
    if (db) db[c] += (gx_real)bacc;
}

static void gx_dw_bwd(gx_ctx *ctx, const gx_conv_geom *q, const gx_real *x, const gx_real *w,
                      const gx_real *dy, gx_real *dx, gx_real *dw, gx_real *db) {
    int64_t C = q->Cin, planes = q->B * C, kk = q->kh * q->kw;
    int par = planes * q->Ho * q->Wo * kk > GX_PAR_THRESHOLD;
    if (dx) {
        double *scratch = gx_ctx_alloc(ctx, (size_t)(gx_get_threads() * q->H * q->W) * sizeof(double));
        #pragma omp parallel for schedule(static) if (par)
        for (int64_t pl = 0; pl < planes; pl++)
            gx_dw_plane_dx(q, dy + pl * q->Ho * q->Wo, w + (pl % C) * kk, dx + pl * q->H * q->W,
                           scratch + gx_thread_id() * q->H * q->W);
    }
    if (dw || db) {
        #pragma omp parallel for schedule(static) if (par)
        for (int64_t c = 0; c < C; c++) gx_dw_channel_dw(q, c, x, dy, dw, db);
    }
}

/* -------------------------------------------------------------- conv2d op */

/* Bias gradient of the GEMM path: db[co] += sum over batch and pixels. */
static void gx_conv_bias_grad(const gx_conv_geom *q, const gx_real *dy, gx_real *db) {
    int64_t N = q->Ho * q->Wo;
    #pragma omp parallel for schedule(static) if (q->B * q->Cout * N > GX_PAR_THRESHOLD)
    for (int64_t co = 0; co < q->Cout; co++) {
        double s = 0;
        for (int64_t n = 0; n < q->B; n++) {
            const gx_real *g = dy + (n * q->Cout + co) * N;
            for (int64_t k = 0; k < N; k++) s += (double)g[k];
        }
        db[co] += (gx_real)s;
    }
}

/* Multiplier-1 depthwise only; groups == Cin with Cout = m*Cin (m > 1)
 * goes through the GEMM paths with Cout_g = m. groups == 1 with a single
 * channel is an ordinary conv, not depthwise. */
static int gx_conv_is_depthwise(const gx_conv_geom *q) {
    return q->g > 1 && q->g == q->Cin && q->g == q->Cout;
}

/* in[0] = x, in[1] = w, in[2] = b when present; i[] = stride, pad, groups.
 * The forward's path choice is a pure function of the geometry, so backward
 * takes the same path. */
static void gx_conv2d_backward(gx_ctx *ctx, gx_node *n) {
    gx_tensor *x = n->in[0], *w = n->in[1], *b = n->n_in > 2 ? n->in[2] : NULL;
    gx_conv_geom q = gx_geom_make(x, w, n->i[0], n->i[1], n->i[2]);
    const gx_real *dy = n->out->grad;
    gx_real *dx = gx_grad(ctx, x), *dw = gx_grad(ctx, w), *db = gx_grad(ctx, b);
    if (gx_conv_is_depthwise(&q)) {
        gx_dw_bwd(ctx, &q, x->data, w->data, dy, dx, dw, db);
        return;
    }
    if (dx || dw) gx_conv2d_gemm_bwd(ctx, &q, x->data, w->data, dy, dx, dw);
    if (db) gx_conv_bias_grad(&q, dy, db);
}

gx_tensor *gx_conv2d(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b,
                     int stride, int padding, int groups) {
    char sx[64], sw[64];
    gx_tensor_shape_str(x, sx, sizeof sx);
    gx_tensor_shape_str(w, sw, sizeof sw);
    GX_ASSERT_MSG(x->ndim == 4 && w->ndim == 4, "gx_conv2d: x %s and w %s must be 4-D", sx, sw);
    GX_ASSERT_MSG(stride >= 1 && padding >= 0 && groups >= 1,
                  "gx_conv2d: bad stride %d / padding %d / groups %d", stride, padding, groups);
    GX_ASSERT_MSG(x->shape[1] % groups == 0 && w->shape[0] % groups == 0 && w->shape[1] * groups == x->shape[1],
                  "gx_conv2d: x %s, w %s do not fit groups=%d (want w [Cout, Cin/groups, kh, kw])", sx, sw, groups);
    GX_ASSERT_MSG(!b || (b->ndim == 1 && b->shape[0] == w->shape[0]),
                  "gx_conv2d: bias must be [%lld] for w %s", (long long)w->shape[0], sw);
    gx_conv_geom q = gx_geom_make(x, w, stride, padding, groups);
    GX_ASSERT_MSG(x->shape[2] + 2 * padding >= w->shape[2] && x->shape[3] + 2 * padding >= w->shape[3],
                  "gx_conv2d: kernel %s larger than padded input %s (padding %d)", sw, sx, padding);
    GX_CUDA_DISPATCH(gx_on_cuda(x) || gx_on_cuda(w) || gx_on_cuda(b),
                     gx_cuda_conv2d(ctx, x, w, b, stride, padding, groups));
    gx_tensor *y = gx_tensor_new(ctx, 4, GX_SHAPE(q.B, q.Cout, q.Ho, q.Wo));
    if (gx_conv_is_depthwise(&q))
        gx_dw_fwd(ctx, &q, x->data, w->data, b ? b->data : NULL, y->data);
    else
        gx_conv2d_gemm_fwd(ctx, &q, x->data, w, b ? b->data : NULL, y->data);
    gx_tensor *ins[3] = { x, w, b };
    gx_node *n = gx_tape_record(ctx, "conv2d", gx_conv2d_backward, y, b ? 3 : 2, ins);
    if (n) gx_geom_save(&q, n);
    return y;
}

/* ------------------------- fused nearest x2 upsample + 3x3 conv, pad 1
 *
 * y = conv2d(upsample_nearest2x(x), w, b, stride 1, padding 1). Output
 * pixel (2i+py, 2j+px) of the upsampled conv reads upsampled rows
 * 2i+py-1 .. 2i+py+1, which are only two distinct low-resolution rows:
 * for py = 0 rows i-1 (kernel row 0) and i (kernel rows 1 and 2); for
 * py = 1 rows i (kernel rows 0 and 1) and i+1 (kernel row 2); the same for
 * columns. So each output parity (py, px) is a 2x2 conv of x itself with
 * weights summed from the 3x3 ones: 4 taps instead of 9, on a quarter of
 * the pixels — 2.25x fewer multiply-adds, and no upsampled tensor.
 * Zero padding of the upsampled image is zero padding of x by 1, so with
 * x padded by 1 all four parities are one 2x2 conv: the parities stack
 * along the output channels, w4 [4*Cout, Cin, 2, 2], and parity (py, px)
 * of low-resolution output (i, j) is conv pixel (i+py, j+px) of an
 * (H+1) x (W+1) output. That conv runs as the shifted GEMMs above: 4 GEMMs
 * per sample with M = 4*Cout (instead of 9 with M = Cout on 4x the
 * columns), and its wide output is scattered straight into y's interleaved
 * pixels. Results equal upsample + conv up to float summation order (the
 * folded weights are sums of up to 4 weights). Backward is the same conv's
 * backward on the gathered dy, and dw4 folds back onto the 3x3 taps.
 * One GEMM per sample as everywhere here: batch invariant. */

/* Kernel rows (or columns) [lo, hi] that low-resolution tap a of parity p
 * sums, as derived above. */
static const int gx_up_lo[2][2] = { { 0, 1 }, { 0, 2 } };
static const int gx_up_hi[2][2] = { { 0, 2 }, { 1, 2 } };

/* Geometry of the stacked 2x2 conv: x [B,Cin,H,W] padded by 1, w4 [4Cout,Cin,2,2]. */
static gx_conv_geom gx_up_geom(const gx_tensor *x, int64_t Cout) {
    gx_conv_geom q;
    q.B = x->shape[0]; q.Cin = x->shape[1]; q.H = x->shape[2]; q.W = x->shape[3];
    q.Cout = 4 * Cout; q.kh = 2; q.kw = 2; q.s = 1; q.p = 1; q.g = 1;
    q.Ho = q.H + 1; q.Wo = q.W + 1;
    return q;
}

/* The 3x3 taps (r * 3 + u) that folded value e = t * 4 + par sums, in the
 * order the sum takes them (rows, then columns), padded with -1; from
 * gx_up_lo / gx_up_hi. */
typedef struct { signed char n, k[4]; } gx_up_sum;

static void gx_up_sums(gx_up_sum sums[16]) {
    for (int e = 0; e < 16; e++) {
        int t = e / 4, par = e % 4, a = t / 2, c = t % 2, py = par / 2, px = par % 2;
        gx_up_sum *f = &sums[e];
        f->n = 0;
        for (int r = gx_up_lo[py][a]; r <= gx_up_hi[py][a]; r++)
            for (int u = gx_up_lo[px][c]; u <= gx_up_hi[px][c]; u++) f->k[f->n++] = (signed char)(r * 3 + u);
    }
}

/* wt [4 taps, 4Cout, Cin] (tap t = 2a + c, row (2py + px) Cout + co) from
 * w [Cout, Cin, 3, 3]: the tap-major layout gx_shift_weights produces. One
 * pass over w (the decoder's first layer folds 1.2 MB of weights per call):
 * each 3x3 kernel is read once and its 16 folded values scattered, each a
 * sum of 1, 2 or 4 taps in a fixed order from 0 (so the bits do not depend
 * on how the loop is written; the table keeps the inner loop branch-free). */
static gx_real *gx_up_fold(gx_ctx *ctx, const gx_real *w, int64_t Cout, int64_t Cin) {
    gx_real *wt = gx_ctx_alloc(ctx, (size_t)(16 * Cout * Cin) * sizeof(gx_real));
    const int64_t tap = 4 * Cout * Cin;   /* stride between taps in wt */
    gx_up_sum sums[16];
    gx_up_sums(sums);
    for (int64_t co = 0; co < Cout; co++)
        for (int e = 0; e < 16; e++) {
            const gx_up_sum f = sums[e];
            gx_real *dst = wt + (e / 4) * tap + ((e % 4) * Cout + co) * Cin;
            const gx_real *k = w + co * Cin * 9;
            for (int64_t ci = 0; ci < Cin; ci++, k += 9) {
                gx_real s = 0;
                for (int i = 0; i < f.n; i++) s += k[f.k[i]];
                dst[ci] = s;
            }
        }
    return wt;
}

/* dw [Cout, Cin, 3, 3] += the fold's transpose applied to dwt [4, 4Cout, Cin]. */
static void gx_up_unfold(const gx_real *dwt, int64_t Cout, int64_t Cin, gx_real *dw) {
    for (int64_t co = 0; co < Cout; co++)
        for (int64_t ci = 0; ci < Cin; ci++) {
            double acc[9] = { 0 };
            for (int t = 0; t < 4; t++)
                for (int par = 0; par < 4; par++) {
                    int a = t / 2, c = t % 2, py = par / 2, px = par % 2;
                    double g = (double)dwt[((int64_t)t * 4 * Cout + par * Cout + co) * Cin + ci];
                    for (int r = gx_up_lo[py][a]; r <= gx_up_hi[py][a]; r++)
                        for (int u = gx_up_lo[px][c]; u <= gx_up_hi[px][c]; u++) acc[r * 3 + u] += g;
                }
            for (int k = 0; k < 9; k++) dw[(co * Cin + ci) * 9 + k] += (gx_real)acc[k];
        }
}

/* Row i of parity par, channel co: its run of W values in the wide
 * stacked output [4Cout, Nw] and its first pixel in the planes [Cout, 2H,
 * 2W] (every second pixel from there). */
static int64_t gx_up_wide_at(const gx_shift_geom *s, int64_t Cout, int64_t co, int par, int64_t i) {
    return (par * Cout + co) * s->Nw + (i + par / 2) * s->Wp + par % 2;
}
static int64_t gx_up_img_at(const gx_conv_geom *q, int64_t co, int par, int64_t i) {
    return (co * 2 * q->H + 2 * i + par / 2) * 2 * q->W + par % 2;
}

/* The inference epilogue of gx_upconv2x3_leaky: LeakyReLU(slope) when on. */
typedef struct { int on; double slope; } gx_up_act;

/* One output row of y from its two parities' wide rows (columns 2j and
 * 2j + 1), with the epilogue: gx_leaky_f in double, rounded once, as
 * gx_leaky_relu computes it, so the fused result keeps its bits. */
static void gx_up_row(const gx_real *s0, const gx_real *s1, int64_t W, gx_up_act act, gx_real *dst) {
    if (!act.on) {
        for (int64_t j = 0; j < W; j++) { dst[2 * j] = s0[j]; dst[2 * j + 1] = s1[j]; }
        return;
    }
    for (int64_t j = 0; j < W; j++) {
        dst[2 * j] = (gx_real)gx_leaky_f((double)s0[j], act.slope);
        dst[2 * j + 1] = (gx_real)gx_leaky_f((double)s1[j], act.slope);
    }
}

/* y planes [Cout, 2H, 2W] of one sample from the wide output yw: output
 * row 2i + py interleaves parities (py, 0) and (py, 1) of low-resolution
 * row i, written left to right in one pass. */
static void gx_up_scatter(const gx_conv_geom *q, const gx_shift_geom *s, int64_t Cout, const gx_real *yw,
                          gx_up_act act, gx_real *y) {
    #pragma omp parallel for schedule(static) if (4 * Cout * q->H * q->W > GX_PAR_THRESHOLD)
    for (int64_t co = 0; co < Cout; co++)
        for (int py = 0; py < 2; py++)
            for (int64_t i = 0; i < q->H; i++)
                gx_up_row(yw + gx_up_wide_at(s, Cout, co, 2 * py, i), yw + gx_up_wide_at(s, Cout, co, 2 * py + 1, i),
                          q->W, act, y + gx_up_img_at(q, co, 2 * py, i));
}

/* The transpose: dyw [4Cout, Nw] from one sample's dy planes. */
static void gx_up_gather(const gx_conv_geom *q, const gx_shift_geom *s, int64_t Cout, const gx_real *dy,
                         gx_real *dyw) {
    #pragma omp parallel for schedule(static) if (4 * Cout * q->H * q->W > GX_PAR_THRESHOLD)
    for (int64_t co = 0; co < Cout; co++)
        for (int par = 0; par < 4; par++)
            for (int64_t i = 0; i < q->H; i++) {
                const gx_real *src = dy + gx_up_img_at(q, co, par, i);
                gx_real *dst = dyw + gx_up_wide_at(s, Cout, co, par, i);
                for (int64_t j = 0; j < q->W; j++) dst[j] = src[2 * j];
            }
}

static void gx_upconv_fwd(gx_ctx *ctx, const gx_conv_geom *q, int64_t Cout, const gx_real *x,
                          const gx_real *w, const gx_real *b, gx_up_act act, gx_real *y) {
    gx_shift_geom s = gx_shift_make(q);
    const gx_real *wt = gx_up_fold(ctx, w, Cout, q->Cin);
    gx_real *xp = gx_zalloc(ctx, q->Cin * s.P);
    gx_real *yw = gx_ctx_alloc(ctx, (size_t)(q->Cout * s.Nw) * sizeof(gx_real));
    for (int64_t n = 0; n < q->B; n++) {
        const gx_real *in = gx_shift_input(q, &s, x, n, 0, xp);
        if (b)
            for (int64_t r = 0; r < q->Cout; r++)
                for (int64_t k = 0; k < s.Nw; k++) yw[r * s.Nw + k] = b[r % Cout];
        for (int64_t t = 0; t < 4; t++)
            gx_gemm(0, 0, q->Cout, s.Nw, q->Cin, 1.0, wt + t * q->Cout * q->Cin, q->Cin,
                    in + (t / 2) * s.Wp + t % 2, s.P, (b || t) ? 1.0 : 0.0, yw, s.Nw);
        gx_up_scatter(q, &s, Cout, yw, act, y + n * Cout * 4 * q->H * q->W);
    }
}

/* Inference path for small inputs (see gx_up_small). The stacked conv
 * computes every parity on an (H+1) x (W+1) grid on the padded width: at
 * the decoder's first layer (4x4 in) that is 29 columns for 16 pixels. Here
 * each parity is an exact 2x2 conv: im2col columns [4Cin, H*W] (depth
 * k = tap * Cin + ci, the fold's tap order) on the packed-weight GEMM,
 * whose packed parity weights serve all samples of a chunk. */
#define GX_UP_SMALL 16     /* H*W at most: measured, see gx_up_small */

/* col [4Cin, H*W] of parity (py, px) for one sample x [Cin, H, W]: tap
 * (a, c) reads x[i + py + a - 1][j + px + c - 1], zero outside. */
static void gx_up_im2col(const gx_conv_geom *q, int par, const gx_real *x, gx_real *col) {
    const int64_t H = q->H, W = q->W, HW = H * W;
    for (int t = 0; t < 4; t++) {
        const int64_t dy = par / 2 + t / 2 - 1, dx = par % 2 + t % 2 - 1;
        for (int64_t ci = 0; ci < q->Cin; ci++) {
            gx_real *d = col + (t * q->Cin + ci) * HW;
            const gx_real *xc = x + ci * HW;
            for (int64_t i = 0; i < H; i++)
                for (int64_t j = 0; j < W; j++) {
                    const int64_t r = i + dy, c = j + dx;
                    d[i * W + j] = (r >= 0 && r < H && c >= 0 && c < W) ? xc[r * W + c] : 0;
                }
        }
    }
}

/* Parity par of one sample's y [Cout, 2H, 2W] from c [Cout, H*W], with the epilogue. */
static void gx_up_put(const gx_conv_geom *q, int64_t Cout, int par, const gx_real *c, gx_up_act act, gx_real *y) {
    for (int64_t co = 0; co < Cout; co++)
        for (int64_t i = 0; i < q->H; i++) {
            const gx_real *src = c + (co * q->H + i) * q->W;
            gx_real *dst = y + gx_up_img_at(q, co, par, i);
            for (int64_t j = 0; j < q->W; j++)
                dst[2 * j] = act.on ? (gx_real)gx_leaky_f((double)src[j], act.slope) : src[j];
        }
}

/* 1 when the forward takes the per-parity path: the f32 AVX2 build (the
 * packed-weight GEMM) and inputs of at most GX_UP_SMALL pixels. Measured
 * at batch 10, 1 thread, CPU ms (min of 41, shared 2-core box), stacked vs
 * per-parity: 256->128 at 4x4 7.6 vs 5.7; 128->64 at 8x8 4.3 vs 4.8;
 * 64->32 at 16x16 4.2 vs 6.4 (from 8x8 on, BLAS on the stacked conv's
 * wider GEMMs wins in spite of the junk columns). */
static int gx_up_small(const gx_conv_geom *q) {
    return gx_sk_simd() && q->H * q->W <= GX_UP_SMALL;
}

static void gx_upconv_fwd_small(gx_ctx *ctx, const gx_conv_geom *q, int64_t Cout, const gx_real *x,
                                const gx_real *w, const gx_real *b, gx_up_act act, gx_real *y) {
    const int64_t HW = q->H * q->W, K = 4 * q->Cin, ch = gx_sk_chunk(K * HW + Cout * HW, q->B);
    const gx_real *wt = gx_up_fold(ctx, w, Cout, q->Cin);
    gx_real *col = gx_ctx_alloc(ctx, (size_t)(ch * K * HW) * sizeof(gx_real));
    gx_real *out = gx_ctx_alloc(ctx, (size_t)(ch * Cout * HW) * sizeof(gx_real));
    const gx_real **brow = gx_ctx_alloc(ctx, (size_t)(ch * K) * sizeof *brow);
    gx_real **cp = gx_ctx_alloc(ctx, (size_t)ch * sizeof *cp);
    for (int par = 0; par < 4; par++) {
        gx_sk_a a = gx_sk_pack(ctx, wt + par * Cout * q->Cin, Cout, q->Cin, q->Cin, 1, 4, 4 * Cout * q->Cin);
        for (int64_t n0 = 0; n0 < q->B; n0 += ch) {
            const int64_t ns = q->B - n0 < ch ? q->B - n0 : ch;
            for (int64_t i = 0; i < ns; i++) {
                gx_up_im2col(q, par, x + (n0 + i) * q->Cin * HW, col + i * K * HW);
                for (int64_t k = 0; k < K; k++) brow[i * K + k] = col + (i * K + k) * HW;
                cp[i] = out + i * Cout * HW;
                if (b) gx_bias_seed(cp[i], b, Cout, HW);
            }
            gx_sk_run(ctx, &a, ns, brow, HW, cp, HW, b != NULL);
            for (int64_t i = 0; i < ns; i++) gx_up_put(q, Cout, par, cp[i], act, y + (n0 + i) * Cout * 4 * HW);
        }
    }
}

static void gx_upconv_bwd(gx_ctx *ctx, const gx_conv_geom *q, int64_t Cout, const gx_real *x,
                          const gx_real *w, const gx_real *dy, gx_real *dx, gx_real *dw) {
    gx_shift_geom s = gx_shift_make(q);
    const int64_t HW4 = 4 * q->H * q->W;
    const gx_real *wt = dx ? gx_up_fold(ctx, w, Cout, q->Cin) : NULL;
    gx_real *dwt = dw ? gx_zalloc(ctx, 4 * q->Cout * q->Cin) : NULL;
    gx_real *xp = dw ? gx_zalloc(ctx, q->Cin * s.P) : NULL;
    gx_real *dxp = dx ? gx_ctx_alloc(ctx, (size_t)(q->Cin * s.P) * sizeof(gx_real)) : NULL;
    /* Positions the gather never writes (junk columns, the unused row and
     * column of each parity) stay zero from here on. */
    gx_real *dyw = gx_zalloc(ctx, q->Cout * s.Nw);
    for (int64_t n = 0; n < q->B; n++) {
        gx_up_gather(q, &s, Cout, dy + n * Cout * HW4, dyw);
        if (dw) {
            const gx_real *in = gx_shift_input(q, &s, x, n, 0, xp);
            for (int64_t t = 0; t < 4; t++)
                gx_gemm(0, 1, q->Cout, q->Cin, s.Nw, 1.0, dyw, s.Nw, in + (t / 2) * s.Wp + t % 2, s.P,
                        1.0, dwt + t * q->Cout * q->Cin, q->Cin);
        }
        if (dx) {
            memset(dxp, 0, (size_t)(q->Cin * s.P) * sizeof(gx_real));
            for (int64_t t = 0; t < 4; t++)
                gx_gemm(1, 0, q->Cin, s.Nw, q->Cout, 1.0, wt + t * q->Cout * q->Cin, q->Cin, dyw, s.Nw,
                        1.0, dxp + (t / 2) * s.Wp + t % 2, s.P);
            gx_scatter_planes(dx + n * q->Cin * q->H * q->W, 1, q->Cin, 0, q->Cin, q->H, q->W, dxp, s.P, &s,
                              gx_pad_at(q, &s), 1);
        }
    }
    if (dw) gx_up_unfold(dwt, Cout, q->Cin, dw);
}

/* in[0] = x, in[1] = w [Cout,Cin,3,3], in[2] = b when present. */
static void gx_upconv2x3_backward(gx_ctx *ctx, gx_node *n) {
    gx_tensor *x = n->in[0], *w = n->in[1], *b = n->n_in > 2 ? n->in[2] : NULL;
    const int64_t Cout = w->shape[0];
    gx_conv_geom q = gx_up_geom(x, Cout);
    const gx_real *dy = n->out->grad;
    gx_real *dx = gx_grad(ctx, x), *dw = gx_grad(ctx, w), *db = gx_grad(ctx, b);
    if (dx || dw) gx_upconv_bwd(ctx, &q, Cout, x->data, w->data, dy, dx, dw);
    if (db) {
        gx_conv_geom qo = q;           /* the bias sees the [B, Cout, 2H, 2W] output */
        qo.Cout = Cout; qo.Ho = 2 * q.H; qo.Wo = 2 * q.W;
        gx_conv_bias_grad(&qo, dy, db);
    }
}

/* The operands' shapes, for both entries and both backends. */
static void gx_upconv_check(const gx_tensor *x, const gx_tensor *w, const gx_tensor *b) {
    char sx[64], sw[64];
    gx_tensor_shape_str(x, sx, sizeof sx);
    gx_tensor_shape_str(w, sw, sizeof sw);
    GX_ASSERT_MSG(x->ndim == 4 && w->ndim == 4 && w->shape[1] == x->shape[1] && w->shape[2] == 3 &&
                  w->shape[3] == 3, "gx_upconv2x3: x %s must be [B, Cin, H, W] and w %s [Cout, Cin, 3, 3]",
                  sx, sw);
    GX_ASSERT_MSG(!b || (b->ndim == 1 && b->shape[0] == w->shape[0]),
                  "gx_upconv2x3: bias must be [%lld] for w %s", (long long)w->shape[0], sw);
}

/* Computes y of checked operands, with the epilogue act; records nothing
 * (the callers decide). */
static gx_tensor *gx_upconv_out(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b, gx_up_act act) {
    const int64_t Cout = w->shape[0];
    gx_conv_geom q = gx_up_geom(x, Cout);
    gx_tensor *y = gx_tensor_new(ctx, 4, GX_SHAPE(q.B, Cout, 2 * q.H, 2 * q.W));
    if (y->numel == 0) return y;
    if (act.on && gx_up_small(&q))
        gx_upconv_fwd_small(ctx, &q, Cout, x->data, w->data, b ? b->data : NULL, act, y->data);
    else
        gx_upconv_fwd(ctx, &q, Cout, x->data, w->data, b ? b->data : NULL, act, y->data);
    return y;
}

gx_tensor *gx_upconv2x3(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b) {
    gx_upconv_check(x, w, b);
    GX_CUDA_DISPATCH(gx_on_cuda(x) || gx_on_cuda(w) || gx_on_cuda(b), gx_cuda_upconv2x3(ctx, x, w, b));
    gx_tensor *y = gx_upconv_out(ctx, x, w, b, (gx_up_act){ 0, 0 });
    gx_tensor *ins[3] = { x, w, b };
    gx_tape_record(ctx, "upconv2x3", gx_upconv2x3_backward, y, b ? 3 : 2, ins);
    return y;
}

/* The tape needs the pre-activation output for LeakyReLU's backward, so
 * whenever the op would be recorded this is literally the unfused pair
 * (training takes exactly the ops it took before). Otherwise the
 * activation rides on the scatter from the GEMM's output: no second
 * tensor and no second pass over memory; inputs of at most GX_UP_SMALL
 * pixels also take the exact per-parity GEMMs (gx_upconv_fwd_small). */
gx_tensor *gx_upconv2x3_leaky(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b, double slope) {
    gx_upconv_check(x, w, b);
    GX_CUDA_DISPATCH(gx_on_cuda(x) || gx_on_cuda(w) || gx_on_cuda(b), gx_cuda_upconv2x3_leaky(ctx, x, w, b, slope));
    int taped = ctx->grad_enabled && (x->requires_grad || w->requires_grad || (b && b->requires_grad));
    if (taped) return gx_leaky_relu(ctx, gx_upconv2x3(ctx, x, w, b), slope);
    return gx_upconv_out(ctx, x, w, b, (gx_up_act){ 1, slope });
}

/* ------------------------------------------------- causal depthwise conv1d */

/* wt [K, E] = transpose of w [E, 1, K] in double, so the per-tap loops
 * below run contiguously along channels. */
static double *gx_c1_taps(gx_ctx *ctx, const gx_real *w, int64_t E, int64_t K) {
    double *wt = gx_ctx_alloc(ctx, (size_t)(K * E) * sizeof(double));
    for (int64_t e = 0; e < E; e++)
        for (int64_t k = 0; k < K; k++) wt[k * E + e] = (double)w[e * K + k];
    return wt;
}

/* y[b,t,:] = bias + sum_k wt[k,:] * x[b, t-(K-1)+k, :]; rows in parallel. */
static void gx_c1_fwd(gx_ctx *ctx, int64_t B, int64_t L, int64_t E, int64_t K, const gx_real *x,
                      const double *wt, const gx_real *bias, gx_real *y) {
    double *scratch = gx_ctx_alloc(ctx, (size_t)(gx_get_threads() * E) * sizeof(double));
    #pragma omp parallel for schedule(static) if (B * L * E * K > GX_PAR_THRESHOLD)
    for (int64_t r = 0; r < B * L; r++) {
        int64_t t = r % L;
        double *acc = scratch + gx_thread_id() * E;
        for (int64_t e = 0; e < E; e++) acc[e] = bias ? (double)bias[e] : 0.0;
        for (int64_t k = 0; k < K; k++) {
            int64_t ts = t - (K - 1) + k;
            if (ts < 0) continue;                  /* causal zero padding */
            const gx_real *src = x + (r - t + ts) * E;
            const double *wk = wt + k * E;
            for (int64_t e = 0; e < E; e++) acc[e] += wk[e] * (double)src[e];
        }
        for (int64_t e = 0; e < E; e++) y[r * E + e] = (gx_real)acc[e];
    }
}

/* dx[b,s,:] += sum_k wt[k,:] * dy[b, s+(K-1)-k, :] (the transpose of the
 * forward's taps, gathered so each row is written by one thread). */
static void gx_c1_dx(gx_ctx *ctx, int64_t B, int64_t L, int64_t E, int64_t K, const gx_real *dy,
                     const double *wt, gx_real *dx) {
    double *scratch = gx_ctx_alloc(ctx, (size_t)(gx_get_threads() * E) * sizeof(double));
    #pragma omp parallel for schedule(static) if (B * L * E * K > GX_PAR_THRESHOLD)
    for (int64_t r = 0; r < B * L; r++) {
        int64_t s = r % L;
        double *acc = scratch + gx_thread_id() * E;
        for (int64_t e = 0; e < E; e++) acc[e] = 0;
        for (int64_t k = 0; k < K; k++) {
            int64_t t = s + (K - 1) - k;
            if (t >= L) continue;
            const gx_real *g = dy + (r - s + t) * E;
            const double *wk = wt + k * E;
            for (int64_t e = 0; e < E; e++) acc[e] += wk[e] * (double)g[e];
        }
        for (int64_t e = 0; e < E; e++) dx[r * E + e] += (gx_real)acc[e];
    }
}

/* dw[e,0,k] += sum_{b,t} dy[b,t,e] x[b,t-(K-1)+k,e]; db[e] += sum dy.
 * Parallel over blocks of channels: each thread owns whole reductions. */
#define GX_C1_EBLK 64
static void gx_c1_dw(gx_ctx *ctx, int64_t B, int64_t L, int64_t E, int64_t K, const gx_real *x,
                     const gx_real *dy, gx_real *dw, gx_real *db) {
    int64_t nblk = (E + GX_C1_EBLK - 1) / GX_C1_EBLK;
    double *scratch = gx_ctx_alloc(ctx, (size_t)(nblk * (K + 1) * GX_C1_EBLK) * sizeof(double));
    #pragma omp parallel for schedule(static) if (B * L * E * K > GX_PAR_THRESHOLD)
    for (int64_t blk = 0; blk < nblk; blk++) {
        int64_t e0 = blk * GX_C1_EBLK, ne = E - e0 < GX_C1_EBLK ? E - e0 : GX_C1_EBLK;
        double *acc = scratch + blk * (K + 1) * GX_C1_EBLK;   /* [K+1][EBLK]; row K = bias */
        memset(acc, 0, (size_t)((K + 1) * GX_C1_EBLK) * sizeof(double));
        for (int64_t r = 0; r < B * L; r++) {
            int64_t t = r % L;
            const gx_real *g = dy + r * E + e0;
            for (int64_t e = 0; e < ne; e++) acc[K * GX_C1_EBLK + e] += (double)g[e];
            for (int64_t k = 0; k < K; k++) {
                int64_t ts = t - (K - 1) + k;
                if (ts < 0) continue;
                const gx_real *src = x + (r - t + ts) * E + e0;
                double *a = acc + k * GX_C1_EBLK;
                for (int64_t e = 0; e < ne; e++) a[e] += (double)g[e] * (double)src[e];
            }
        }
        for (int64_t e = 0; e < ne; e++) {
            if (dw) for (int64_t k = 0; k < K; k++) dw[(e0 + e) * K + k] += (gx_real)acc[k * GX_C1_EBLK + e];
            if (db) db[e0 + e] += (gx_real)acc[K * GX_C1_EBLK + e];
        }
    }
}

/* dx needs the taps transposed again (backward may run after the weights'
 * forward scratch is long gone, and it is only K*E values). */
static void gx_conv1d_causal_dw_backward(gx_ctx *ctx, gx_node *n) {
    gx_tensor *x = n->in[0], *w = n->in[1], *b = n->n_in > 2 ? n->in[2] : NULL;
    int64_t B = x->shape[0], L = x->shape[1], E = x->shape[2], K = w->shape[2];
    const gx_real *dy = n->out->grad;
    gx_real *dx = gx_grad(ctx, x), *dw = gx_grad(ctx, w), *db = gx_grad(ctx, b);
    if (dx) gx_c1_dx(ctx, B, L, E, K, dy, gx_c1_taps(ctx, w->data, E, K), dx);
    if (dw || db) gx_c1_dw(ctx, B, L, E, K, x->data, dy, dw, db);
}

gx_tensor *gx_conv1d_causal_dw(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b) {
    char sx[64], sw[64];
    gx_tensor_shape_str(x, sx, sizeof sx);
    gx_tensor_shape_str(w, sw, sizeof sw);
    GX_ASSERT_MSG(x->ndim == 3 && w->ndim == 3 && w->shape[0] == x->shape[2] && w->shape[1] == 1 && w->shape[2] >= 1,
                  "gx_conv1d_causal_dw: x %s must be [B, L, E] and w %s [E, 1, K]", sx, sw);
    int64_t B = x->shape[0], L = x->shape[1], E = x->shape[2], K = w->shape[2];
    GX_ASSERT_MSG(!b || (b->ndim == 1 && b->shape[0] == E),
                  "gx_conv1d_causal_dw: bias must be [%lld] for x %s", (long long)E, sx);
    GX_CUDA_DISPATCH(gx_on_cuda(x) || gx_on_cuda(w) || gx_on_cuda(b), gx_cuda_conv1d_causal_dw(ctx, x, w, b));
    gx_tensor *y = gx_tensor_new(ctx, 3, GX_SHAPE(B, L, E));
    gx_c1_fwd(ctx, B, L, E, K, x->data, gx_c1_taps(ctx, w->data, E, K), b ? b->data : NULL, y->data);
    gx_tensor *ins[3] = { x, w, b };
    gx_tape_record(ctx, "conv1d_causal_dw", gx_conv1d_causal_dw_backward, y, b ? 3 : 2, ins);
    return y;
}
