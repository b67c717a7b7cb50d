/*
 * gx_matmul.c — matrix products: linear layers, batched matmul, Gram
 * matrices and pairwise squared distances.
 *
 * Design: every product, forward and backward, is one or a few calls to
 * gx_gemm (OpenBLAS sgemm/dgemm). BLAS already threads a single GEMM over
 * the machine's cores, so these ops add no OpenMP of their own around GEMM
 * calls (doing both would run 2x as many threads as cores). The O(n) glue
 * around the GEMMs (bias, row norms, masks) is written as contiguous loops
 * that the compiler vectorises; its reductions accumulate in double.
 *
 * Backward passes accumulate (beta = 1) straight into the gradient buffers
 * returned by gx_grad, so no temporaries are needed for dX, dW, dA, dB:
 *   y = x W^T + b   ->  dX += dY W,  dW += dY^T X,  db += sum_rows dY
 *   C = A B         ->  dA += dC B^T, dB += A^T dC
 *   G = A B^T       ->  dA += dG B,  dB += dG^T A
 *
 * Batch invariance (serving). BLAS picks micro-kernels, tail kernels and
 * thread splits from a call's whole shape, so one GEMM over a batch's rows
 * gives a sample's row bits that depend on the batch size and on the row's
 * place in it (measured: up to ~6e-7 on WaveletMamba's logits). gx_linear
 * is the only eval-path op that folds the batch into a GEMM (conv2d already
 * runs one GEMM per sample and group; the direct kernels and reductions
 * give each output one fixed summation order), so the fix lives here. With
 * ctx->batch_invariant, x's leading dim is the batch and
 *   - few rows per sample (< GX_RI_MAX_ROWS, e.g. the [B, F] heads): all
 *     rows go through gx_ri_* below, a kernel that runs the same arithmetic
 *     for every row whatever the row count, the row's index or the thread
 *     (so it is thread-count invariant too); one pass over all rows and one
 *     OpenMP region, where a GEMM per sample would re-pack W per sample;
 *   - many rows per sample ([B, L, D] tokens): one GEMM per sample, whose
 *     shape is then the same whatever the batch (BLAS is deterministic for
 *     one shape and thread count: it packs its operands, so addresses do
 *     not matter). There BLAS is ~3x faster than gx_ri_*.
 * Cost, small config, 64x64, batch 32, 1 thread (shared 2-core box, best
 * of 30): the linears take 30.5 ms instead of 26.1 ms, about 0.3% of the
 * forward; the heads alone 2.1 ms instead of 1.4 ms.
 * The choice depends on the rows of a sample, never on B, and without the
 * flag the same rule is applied to all rows as one "sample", so at batch 1
 * both modes run identical code and give identical bits.
 */
#include "gx_impl.h"
#if GX_CUDA_ON
#include "cuda/gx_cuda_ops_dense.h"
#endif

/* Function multiversioning as in gx_scan.c: the row-invariant kernel runs
 * AVX2/AVX-512 wide where the CPU has it. Every clone computes the same
 * bits: each partial sum is a chain of mul then add (no FMA contraction:
 * -std=c11 implies -ffp-contract=off), and the vector width only decides
 * how many of the independent chains run side by side. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define GX_RI_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GX_RI_CLONES
#endif

/* ------------------------------------------------------------ helpers */

/* col[j] += sum_r m[r, j] for a [rows, cols] row-major matrix, in double
 * (the inner loop runs along a row so it stays contiguous). */
static void gx_colsum_acc(const gx_real *m, int64_t rows, int64_t cols, double *acc) {
    for (int64_t r = 0; r < rows; r++) {
        const gx_real *row = m + r * cols;
        for (int64_t j = 0; j < cols; j++) acc[j] += (double)row[j];
    }
}

/* db[j] += sum over rows of dy[:, j]; scratch from the arena. */
static void gx_bias_grad(gx_ctx *ctx, const gx_real *dy, int64_t rows, int64_t cols, gx_real *db) {
    double *acc = gx_ctx_alloc(ctx, (size_t)cols * sizeof(double));
    memset(acc, 0, (size_t)cols * sizeof(double));
    gx_colsum_acc(dy, rows, cols, acc);
    for (int64_t j = 0; j < cols; j++) db[j] += (gx_real)acc[j];
}

/* ---------------------------------------------- row-invariant small-M path */

/* Rows per sample below which gx_linear uses the kernel below instead of
 * BLAS: one BLAS call per sample of so few rows would be mostly overhead
 * (BLAS packs all of W for each call). */
#define GX_RI_MAX_ROWS 16
#define GX_RI_R 5      /* rows of x per full tile */
#define GX_RI_L 8      /* partial sums (lanes) of each dot product */
_Static_assert(GX_RI_L == 8, "gx_ri_tile adds its lanes in a fixed 8-way tree");

/* One tile of dot products: y[r][c] = bias[c] + x_r . w_c over K, for R x C
 * pairs. Each dot product keeps GX_RI_L gx_real partial sums (lane l takes
 * k = l mod GX_RI_L) walked in k order, then adds the lanes in a fixed tree
 * in double, then the K % GX_RI_L leftover terms, then the bias. That is
 * per pair: R and C only decide how many pairs share a pass over K (one
 * load of w_c serves R rows), so every output of every row runs exactly
 * this arithmetic whatever the tile's shape: a row's bits depend on its own
 * data only, never on how many rows there are, where it sits or which
 * thread runs it. Missing outputs at the right edge point at a zero vector;
 * the row count of the last tile is exact (R = rows left), so a batch of 1
 * or 5 does not pay for 4 or 6 rows. Shapes keep R*C + C + 1 vectors in the
 * 16 AVX2 registers. */
#define GX_RI_TILE(R, C)                                                                          \
GX_RI_CLONES                                                                                      \
static void gx_ri_tile_##R##x##C(const gx_real *const *xr, const gx_real *const *wr, int64_t K,  \
                                 const double *bias, double *out) {                               \
    /* GCC vector extensions keep the R*C accumulators in registers (a                         \
     * plain array of them is spilled to the stack every step); their                          \
     * arithmetic is lane by lane IEEE, the same bits as scalar code. */                          \
    typedef gx_real gx_ri_vec __attribute__((vector_size(GX_RI_L * sizeof(gx_real))));           \
    gx_ri_vec acc[R][C];                                                                          \
    for (int r = 0; r < R; r++)                                                                   \
        for (int c = 0; c < C; c++) acc[r][c] = (gx_ri_vec){ 0 };                                 \
    const int64_t K8 = K / GX_RI_L * GX_RI_L;                                                     \
    for (int64_t k = 0; k < K8; k += GX_RI_L) {                                                   \
        gx_ri_vec wv[C];                                                                          \
        _Pragma("GCC unroll 8")                                                                   \
        for (int c = 0; c < C; c++) memcpy(&wv[c], wr[c] + k, sizeof wv[c]);                      \
        _Pragma("GCC unroll 8")                                                                   \
        for (int r = 0; r < R; r++) {                                                             \
            gx_ri_vec xv;                                                                         \
            memcpy(&xv, xr[r] + k, sizeof xv);                                                    \
            _Pragma("GCC unroll 8")                                                               \
            for (int c = 0; c < C; c++) acc[r][c] += xv * wv[c];                                  \
        }                                                                                         \
    }                                                                                             \
    for (int r = 0; r < R; r++)                                                                   \
        for (int c = 0; c < C; c++) {                                                             \
            gx_real a[GX_RI_L];                                                                   \
            memcpy(a, &acc[r][c], sizeof a);                                                      \
            double s = (((double)a[0] + a[1]) + ((double)a[2] + a[3])) +                          \
                       (((double)a[4] + a[5]) + ((double)a[6] + a[7]));                           \
            for (int64_t k = K8; k < K; k++) s += (double)xr[r][k] * (double)wr[c][k];            \
            out[r * C + c] = s + bias[c];                                                         \
        }                                                                                         \
}
GX_RI_TILE(1, 8)
GX_RI_TILE(2, 4)
GX_RI_TILE(3, 4)
GX_RI_TILE(4, 2)
GX_RI_TILE(5, 2)

typedef void (*gx_ri_tile_fn)(const gx_real *const *, const gx_real *const *, int64_t, const double *, double *);
/* The tile for r rows (1..GX_RI_R) and its outputs per tile. */
static const struct { gx_ri_tile_fn fn; int c; } gx_ri_tiles[GX_RI_R + 1] = {
    { NULL, 0 }, { gx_ri_tile_1x8, 8 }, { gx_ri_tile_2x4, 4 }, { gx_ri_tile_3x4, 4 },
    { gx_ri_tile_4x2, 2 }, { gx_ri_tile_5x2, 2 },
};
#define GX_RI_CMAX 8

/* y [rows, N] = x [rows, K] w^T (+ b), every row computed alike (see
 * GX_RI_TILE); tiles split over OpenMP threads. Reads w in place: no
 * packing, so a handful of rows costs one pass over w per row tile. Row
 * tiles are GX_RI_R rows and a last one of the rows left. */
static void gx_ri_linear(gx_ctx *ctx, const gx_real *x, int64_t rows, int64_t K, const gx_real *w,
                         const gx_real *b, int64_t N, gx_real *y) {
    if (rows <= 0 || N <= 0) return;
    const int64_t nrt = (rows + GX_RI_R - 1) / GX_RI_R, last = rows - (nrt - 1) * GX_RI_R;
    gx_real *zero = gx_ctx_alloc(ctx, (size_t)(K > 0 ? K : 1) * sizeof(gx_real));
    memset(zero, 0, (size_t)(K > 0 ? K : 1) * sizeof(gx_real));
    /* Column tiles per row tile: of the full tiles' width, then of the last's. */
    const int cf = gx_ri_tiles[rows < GX_RI_R ? rows : GX_RI_R].c, cl = gx_ri_tiles[last].c;
    const int64_t nf = (N + cf - 1) / cf, nl = (N + cl - 1) / cl, ntiles = (nrt - 1) * nf + nl;
    #pragma omp parallel for schedule(static) if (rows * N * K > 4 * GX_PAR_THRESHOLD)
    for (int64_t t = 0; t < ntiles; t++) {
        const int64_t rt = t < (nrt - 1) * nf ? t / nf : nrt - 1;
        const int64_t ct = t < (nrt - 1) * nf ? t % nf : t - (nrt - 1) * nf;
        const int R = rt < nrt - 1 ? GX_RI_R : (int)last, C = gx_ri_tiles[R].c;
        const int64_t r0 = rt * GX_RI_R, j0 = ct * C;
        const gx_real *xr[GX_RI_R], *wr[GX_RI_CMAX];
        double bias[GX_RI_CMAX], out[GX_RI_R * GX_RI_CMAX];
        for (int r = 0; r < R; r++) xr[r] = x + (r0 + r) * K;
        for (int c = 0; c < C; c++) {
            wr[c] = j0 + c < N ? w + (j0 + c) * K : zero;
            bias[c] = b && j0 + c < N ? (double)b[j0 + c] : 0.0;
        }
        gx_ri_tiles[R].fn(xr, wr, K, bias, out);
        for (int r = 0; r < R; r++)
            for (int c = 0; c < C && j0 + c < N; c++)
                y[(r0 + r) * N + j0 + c] = (gx_real)out[r * C + c];
    }
}

/* --------------------------------------------------------------- linear */

/* node->i[0] = rows (product of x's leading dims), i[1] = in, i[2] = out. */
static void gx_linear_backward(gx_ctx *ctx, gx_node *n) {
    gx_tensor *x = n->in[0], *w = n->in[1], *b = n->n_in > 2 ? n->in[2] : NULL;
    int64_t rows = n->i[0], in = n->i[1], out = n->i[2];
    const gx_real *dy = n->out->grad;   /* [rows, out] */
    gx_real *dx = gx_grad(ctx, x), *dw = gx_grad(ctx, w), *db = gx_grad(ctx, b);
    if (dx) gx_gemm(0, 0, rows, in, out, 1.0, dy, out, w->data, in, 1.0, dx, in);
    if (dw) gx_gemm(1, 0, out, in, rows, 1.0, dy, out, x->data, in, 1.0, dw, in);
    if (db) gx_bias_grad(ctx, dy, rows, out, db);
}

gx_tensor *gx_linear(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b) {
    char sx[64], sw[64];
    GX_ASSERT_MSG(x->ndim >= 1 && w->ndim == 2 && x->shape[x->ndim - 1] == w->shape[1],
                  "gx_linear: x %s does not match w %s (want x [..., in], w [out, in])",
                  gx_tensor_shape_str(x, sx, sizeof sx), gx_tensor_shape_str(w, sw, sizeof sw));
    int64_t in = w->shape[1], out = w->shape[0];
    int64_t rows = in ? x->numel / in : 0;
    GX_ASSERT_MSG(!b || (b->ndim == 1 && b->shape[0] == out),
                  "gx_linear: bias %s must be [%lld]", gx_tensor_shape_str(b, sx, sizeof sx),
                  (long long)out);
    GX_CUDA_DISPATCH(gx_on_cuda(x) || gx_on_cuda(w) || gx_on_cuda(b), gx_cuda_linear(ctx, x, w, b));
    int64_t shape[GX_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) shape[d] = x->shape[d];
    shape[x->ndim - 1] = out;
    gx_tensor *y = gx_tensor_new(ctx, x->ndim, shape);
    /* Rows that must not see each other's shapes: a sample's (x's leading
     * dim) in batch-invariant mode, else all of them; see the file comment. */
    int64_t unit = ctx->batch_invariant && x->ndim >= 2 && x->shape[0] > 0 ? rows / x->shape[0] : rows;
    if (unit < GX_RI_MAX_ROWS) {
        gx_ri_linear(ctx, x->data, rows, in, w->data, b ? b->data : NULL, out, y->data);
    } else {
        /* Seed y with the bias and let GEMM add x W^T on top (beta = 1):
         * one pass over y instead of two. */
        if (b) {
            for (int64_t r = 0; r < rows; r++) memcpy(y->data + r * out, b->data, (size_t)out * sizeof(gx_real));
        }
        gx_gemm_panels(1, rows, unit, out, in, 1.0, x->data, in, w->data, in, b ? 1.0 : 0.0, y->data, out);
    }
    gx_tensor *ins[3] = { x, w, b };
    gx_node *n = gx_tape_record(ctx, "linear", gx_linear_backward, y, b ? 3 : 2, ins);
    if (n) { n->i[0] = rows; n->i[1] = in; n->i[2] = out; }
    return y;
}

/* --------------------------------------------------------------- matmul */

/* node->i: [0] batch, [1] M, [2] K, [3] N, [4] 1 when b is a shared 2-D
 * matrix. With shared b the batch folds into the rows of one GEMM. */
static void gx_matmul_backward(gx_ctx *ctx, gx_node *n) {
    gx_tensor *a = n->in[0], *b = n->in[1];
    int64_t nb = n->i[0], M = n->i[1], K = n->i[2], N = n->i[3];
    int shared = (int)n->i[4];
    const gx_real *dc = n->out->grad;
    gx_real *da = gx_grad(ctx, a), *db = gx_grad(ctx, b);
    if (shared) {
        if (da) gx_gemm(0, 1, nb * M, K, N, 1.0, dc, N, b->data, N, 1.0, da, K);
        if (db) gx_gemm(1, 0, K, N, nb * M, 1.0, a->data, K, dc, N, 1.0, db, N);
        return;
    }
    for (int64_t i = 0; i < nb; i++) {
        const gx_real *dci = dc + i * M * N;
        if (da) gx_gemm(0, 1, M, K, N, 1.0, dci, N, b->data + i * K * N, N, 1.0, da + i * M * K, K);
        if (db) gx_gemm(1, 0, K, N, M, 1.0, a->data + i * M * K, K, dci, N, 1.0, db + i * K * N, N);
    }
}

gx_tensor *gx_matmul(gx_ctx *ctx, gx_tensor *a, gx_tensor *b) {
    char sa[64], sb[64];
    gx_tensor_shape_str(a, sa, sizeof sa);
    gx_tensor_shape_str(b, sb, sizeof sb);
    GX_ASSERT_MSG(a->ndim >= 2 && b->ndim >= 2, "gx_matmul: a %s and b %s must be at least 2-D", sa, sb);
    int64_t M = a->shape[a->ndim - 2], K = a->shape[a->ndim - 1];
    int64_t N = b->shape[b->ndim - 1];
    GX_ASSERT_MSG(b->shape[b->ndim - 2] == K, "gx_matmul: inner dims differ, a %s b %s", sa, sb);
    int shared = b->ndim == 2;
    GX_ASSERT_MSG(shared || b->ndim == a->ndim, "gx_matmul: b %s must be 2-D or have a %s's batch dims", sb, sa);
    int64_t nb = 1;
    for (int d = 0; d < a->ndim - 2; d++) {
        GX_ASSERT_MSG(shared || a->shape[d] == b->shape[d], "gx_matmul: batch dims differ, a %s b %s", sa, sb);
        nb *= a->shape[d];
    }
    GX_CUDA_DISPATCH(gx_on_cuda(a) || gx_on_cuda(b), gx_cuda_matmul(ctx, a, b));
    int64_t shape[GX_MAX_DIMS];
    for (int d = 0; d < a->ndim; d++) shape[d] = a->shape[d];
    shape[a->ndim - 1] = N;
    gx_tensor *c = gx_tensor_new(ctx, a->ndim, shape);
    if (shared) {
        gx_gemm(0, 0, nb * M, N, K, 1.0, a->data, K, b->data, N, 0.0, c->data, N);
    } else {
        /* Sequential over the batch: each GEMM is threaded by BLAS. */
        for (int64_t i = 0; i < nb; i++)
            gx_gemm(0, 0, M, N, K, 1.0, a->data + i * M * K, K, b->data + i * K * N, N, 0.0,
                    c->data + i * M * N, N);
    }
    gx_tensor *ins[2] = { a, b };
    gx_node *n = gx_tape_record(ctx, "matmul", gx_matmul_backward, c, 2, ins);
    if (n) { n->i[0] = nb; n->i[1] = M; n->i[2] = K; n->i[3] = N; n->i[4] = shared; }
    return c;
}

/* ----------------------------------------------------------------- gram */

/* Shared shape check for the two [N, D] x [M, D] ops. */
static void gx_check_pair(const char *op, const gx_tensor *a, const gx_tensor *b) {
    char sa[64], sb[64];
    GX_ASSERT_MSG(a->ndim == 2 && b->ndim == 2 && a->shape[1] == b->shape[1],
                  "%s: a %s and b %s must be [N, D] and [M, D]", op,
                  gx_tensor_shape_str(a, sa, sizeof sa), gx_tensor_shape_str(b, sb, sizeof sb));
}

/* When a and b are the same tensor gx_grad returns the same buffer for
 * both, and the two GEMMs below simply add both halves of the gradient. */
static void gx_gram_backward(gx_ctx *ctx, gx_node *n) {
    gx_tensor *a = n->in[0], *b = n->in[1];
    int64_t N = a->shape[0], M = b->shape[0], D = a->shape[1];
    const gx_real *dg = n->out->grad;   /* [N, M] */
    gx_real *da = gx_grad(ctx, a);
    if (da) gx_gemm(0, 0, N, D, M, 1.0, dg, M, b->data, D, 1.0, da, D);
    gx_real *db = gx_grad(ctx, b);
    if (db) gx_gemm(1, 0, M, D, N, 1.0, dg, M, a->data, D, 1.0, db, D);
}

gx_tensor *gx_gram(gx_ctx *ctx, gx_tensor *a, gx_tensor *b) {
    gx_check_pair("gx_gram", a, b);
    GX_CUDA_DISPATCH(gx_on_cuda(a) || gx_on_cuda(b), gx_cuda_gram(ctx, a, b));
    int64_t N = a->shape[0], M = b->shape[0], D = a->shape[1];
    gx_tensor *g = gx_tensor_new(ctx, 2, GX_SHAPE(N, M));
    gx_gemm(0, 1, N, M, D, 1.0, a->data, D, b->data, D, 0.0, g->data, M);
    gx_tensor *ins[2] = { a, b };
    gx_tape_record(ctx, "gram", gx_gram_backward, g, 2, ins);
    return g;
}

/* ------------------------------------------------------ pairwise sqdist */

/* sq[i] = ||m_i||^2 for the rows of an [n, d] matrix, summed in double. */
static void gx_row_sqnorms(const gx_real *m, int64_t n, int64_t d, double *sq) {
    for (int64_t i = 0; i < n; i++) {
        double s = 0;
        for (int64_t k = 0; k < d; k++) s += (double)m[i * d + k] * (double)m[i * d + k];
        sq[i] = s;
    }
}

/* The output doubles as the mask: entries clamped to 0 (or exactly 0) get
 * no gradient. With g the masked upstream gradient,
 *   dA_i = 2 (rowsum(g)_i a_i - (g B)_i),  dB_j = 2 (colsum(g)_j b_j - (g^T A)_j). */
static void gx_sqdist_backward(gx_ctx *ctx, gx_node *n) {
    gx_tensor *a = n->in[0], *b = n->in[1];
    int64_t N = a->shape[0], M = b->shape[0], D = a->shape[1];
    const gx_real *d = n->out->data, *dd = n->out->grad;
    gx_real *g = gx_ctx_alloc(ctx, (size_t)(N * M) * sizeof(gx_real));
    double *rs = gx_ctx_alloc(ctx, (size_t)N * sizeof(double));
    double *cs = gx_ctx_alloc(ctx, (size_t)M * sizeof(double));
    memset(cs, 0, (size_t)M * sizeof(double));
    for (int64_t i = 0; i < N; i++) {
        double s = 0;
        for (int64_t j = 0; j < M; j++) {
            gx_real v = d[i * M + j] > 0 ? dd[i * M + j] : 0;
            g[i * M + j] = v;
            s += (double)v;
        }
        rs[i] = s;
    }
    gx_colsum_acc(g, N, M, cs);
    gx_real *da = gx_grad(ctx, a);
    if (da) {
        /* da += 2 rs_i a_i first, then da -= 2 g B through GEMM's beta = 1. */
        for (int64_t i = 0; i < N; i++)
            for (int64_t k = 0; k < D; k++) da[i * D + k] += (gx_real)(2.0 * rs[i] * a->data[i * D + k]);
        gx_gemm(0, 0, N, D, M, -2.0, g, M, b->data, D, 1.0, da, D);
    }
    gx_real *db = gx_grad(ctx, b);
    if (db) {
        for (int64_t j = 0; j < M; j++)
            for (int64_t k = 0; k < D; k++) db[j * D + k] += (gx_real)(2.0 * cs[j] * b->data[j * D + k]);
        gx_gemm(1, 0, M, D, N, -2.0, g, M, a->data, D, 1.0, db, D);
    }
}

gx_tensor *gx_pairwise_sqdist(gx_ctx *ctx, gx_tensor *a, gx_tensor *b) {
    gx_check_pair("gx_pairwise_sqdist", a, b);
    GX_CUDA_DISPATCH(gx_on_cuda(a) || gx_on_cuda(b), gx_cuda_pairwise_sqdist(ctx, a, b));
    int64_t N = a->shape[0], M = b->shape[0], D = a->shape[1];
    double *na = gx_ctx_alloc(ctx, (size_t)N * sizeof(double));
    double *nb = gx_ctx_alloc(ctx, (size_t)M * sizeof(double));
    gx_row_sqnorms(a->data, N, D, na);
    gx_row_sqnorms(b->data, M, D, nb);
    /* d = -2 a b^T by GEMM, then + |a_i|^2 + |b_j|^2 and clamp: the
     * expansion cancels catastrophically for near-identical rows and can
     * go slightly negative, which a squared distance never is. */
    gx_tensor *d = gx_tensor_new(ctx, 2, GX_SHAPE(N, M));
    gx_gemm(0, 1, N, M, D, -2.0, a->data, D, b->data, D, 0.0, d->data, M);
    for (int64_t i = 0; i < N; i++) {
        gx_real *row = d->data + i * M;
        for (int64_t j = 0; j < M; j++) {
            double v = (double)row[j] + na[i] + nb[j];
            row[j] = (gx_real)(v > 0 ? v : 0);
        }
    }
    gx_tensor *ins[2] = { a, b };
    gx_tape_record(ctx, "pairwise_sqdist", gx_sqdist_backward, d, 2, ins);
    return d;
}
