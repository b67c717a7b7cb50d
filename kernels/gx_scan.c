/*
 * gx_scan.c — the fused selective state-space scan of WaveletMamba
 * (spec/wavelet-mamba.md, "SSM block" steps 4-5): zero-order-hold
 * discretisation and the linear recurrence in one op.
 *
 *   a_t[n] = exp(d_t A[n])                     (Abar)
 *   f_t[n] = (a_t[n] - 1) / A[n], or d_t where |d_t A[n]| < 1e-6   (gx_zoh_bfactor)
 *   h_t[n] = a_t[n] h_{t-1}[n] + f_t[n] Bm[n] x_t,  h_{-1} = 0
 *   y_t    = sum_n h_t[n] Cm[n]
 * independently for every (b, e); d_t = delta[b,t,e] ('token' mode) or
 * delta[b,0,e] for every t ('mean' mode).
 *
 * Work decomposition. Each (b, e) pair is an independent recurrence over t
 * whose state is an N-vector; the N loop is innermost, contiguous and free of
 * dependencies, so the compiler vectorises it, and the (b, e) pairs are
 * spread over OpenMP threads. Everything is computed in double: h is a
 * running sum over up to L steps.
 *
 * Saved state: NOTHING. The backward pass recomputes, for one (b, e) at a
 * time, the forward recurrence into a per-thread scratch row of L x N states
 * (plus the L x N coefficients a_t, f_t in token mode), then sweeps t in
 * reverse. Why not save h (B*L*E*N values)? At the model's sizes (L=64,
 * E=256, N=16) that is 64 KiB per sample per scan call, 8 scan calls per
 * image (4 directions x forward/reversed sequence): 256 MiB per 512-image
 * batch in f32, for a saving of one forward recurrence. Chunk checkpoints
 * (h every ~sqrt(L) steps) would cut that to ~1/8 but still cost the same
 * recompute. Recomputing per (b, e) costs the same extra forward pass as
 * chunking, needs no memory that grows with the batch, and keeps the working
 * set (3*L*N doubles = 24 KiB at L=64, N=16) in L1/L2 for both sweeps. The
 * forward therefore stores nothing, with or without grad; inference and
 * training run the same forward code.
 *
 * Gradients. xs and delta gradients belong to one (b, t, e) and are written
 * by the thread that owns (b, e). A, Bm and Cm are [E, N], shared over the
 * batch: the backward parallelises over e only and sums over b inside one
 * thread in a fixed order, so there is no race, no atomic and no per-thread
 * partial buffer, and the result is independent of the thread count.
 *
 * The |dA| < 1e-6 limit branch (gx_zoh_bfactor returns delta there). Its
 * derivative is the derivative of the value actually computed:
 * df/d(delta) = 1, df/dA = 0 (in the regular branch df/d(delta) = a and
 * df/dA = (delta a - f)/A). This is exactly what PyTorch autograd gives for
 * the reference `torch.where(|dA| < 1e-6, delta, (exp(dA)-1)/A)`, and
 * finite differences agree on both sides of the threshold. The smooth ZOH
 * function has df/d(delta) = exp(dA) = 1 + O(1e-6) and df/dA = delta^2/2 +
 * O(delta^2 |dA|) there: the first differs by < 1e-6 relative; the second
 * is only non-negligible when |A| < 1e-6 / delta (A_log < -13.8 for
 * delta ~ 1), which the model does not reach (WaveletMamba initialises
 * A_log in U(-4, -1), so |A| >= exp(-4)).
 *
 * Speed. The token-mode forward needs one exp per (b, t, e, n). glibc's exp
 * is not vectorised without -ffast-math, so gx_scan_exp below is a
 * branch-free exp the compiler vectorises (Cody-Waite reduction + degree-12
 * Taylor polynomial, < 2 ulp in double). The hot per-(b, e) kernels are
 * additionally compiled for AVX-512 and AVX2 through target_clones (picked at
 * load time), so the portable default build still runs 8-wide on CPUs that
 * have it.
 */
#include "gx_impl.h"
#if GX_CUDA_ON
#include "cuda/gx_cuda_ops_shape.h"
#endif

#include <omp.h>

/* Function multiversioning (ifunc) exists on x86-64 ELF with GCC; elsewhere
 * the kernels are compiled once for the baseline target. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define GX_SCAN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GX_SCAN_CLONES
#endif

/* Smallest |dA| for which gx_zoh_bfactor uses (exp(dA)-1)/A; keep in sync. */
#define GX_ZOH_SMALL 1e-6

/* ------------------------------------------------------------ exp */

/* exp(x) without branches or calls so loops over it vectorise. x is clamped
 * to [-708, 709] (exp(-708) ~ 3e-308 stands in for 0: h decays to zero all
 * the same; dA = delta*A <= 0 in the model). x = k ln2 + r with |r| <= ln2/2;
 * 2^k is built in the exponent bits. Relative error < 3e-16. */
static inline double gx_scan_exp(double x) {
    /* Clamp by arithmetic on 0/1 masks: with `x < lo ? lo : x` GCC's jump
     * threading duplicates the code below into each arm, which it then may
     * not if-convert (-ftrapping-math), and the loop does not vectorise.
     * The masks are exactly 0 or 1, so x is kept exactly inside the range. */
    double lo = (double)isless(x, -708.0), hi = (double)isgreater(x, 709.0);
    x = (1.0 - lo - hi) * x + lo * -708.0 + hi * 709.0;
    const double shifter = 6755399441055744.0;   /* 1.5 * 2^52: rounds to an integer */
    double t = x * 1.4426950408889634 + shifter;
    double k = t - shifter;
    double r = x - k * 0.6931471803691238;        /* ln2 high part (exact k*hi) */
    r = r - k * 1.9082149292705877e-10;           /* ln2 low part */
    /* exp(r) = sum_{i<=12} r^i / i!, by Estrin's scheme: the loop is bound
     * by this chain's latency (without FMA, 13 Horner steps are ~85 cycles
     * per vector; Estrin's tree is ~24), not by its operation count. */
    double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    double q0 = 1.0 + r, q1 = 1.0 / 2 + r * (1.0 / 6), q2 = 1.0 / 24 + r * (1.0 / 120);
    double q3 = 1.0 / 720 + r * (1.0 / 5040), q4 = 1.0 / 40320 + r * (1.0 / 362880);
    double q5 = 1.0 / 3628800 + r * (1.0 / 39916800), q6 = 1.0 / 479001600;
    double s0 = q0 + q1 * r2, s1 = q2 + q3 * r2, s2 = q4 + q5 * r2;
    double p = (s0 + s1 * r4) + (s2 + q6 * r4) * r8;
    /* 2^k: k + 1023 into the exponent field; k is in [-1022, 1023]. t's
     * low mantissa bits already hold k (the shifter's own bits vanish in
     * the shift), so no double->int64 conversion is needed: AVX2 has none. */
    union { double d; uint64_t i; } u = { t }, s;   /* unsigned: the shift wraps by design */
    s.i = (u.i + 1023) << 52;
    return p * s.d;
}

/* ------------------------------------------------------------ shapes */

typedef struct {
    int64_t B, L, E, N;
    int64_t Ld;      /* delta's time extent: L (token mode) or 1 (mean mode) */
} gx_scan_dims;

static gx_scan_dims gx_scan_check(const gx_tensor *xs, const gx_tensor *delta, const gx_tensor *A,
                                  const gx_tensor *Bm, const gx_tensor *Cm) {
    char s0[40], s1[40], s2[40], s3[40], s4[40];
    gx_tensor_shape_str(xs, s0, sizeof s0);
    gx_tensor_shape_str(delta, s1, sizeof s1);
    gx_tensor_shape_str(A, s2, sizeof s2);
    gx_tensor_shape_str(Bm, s3, sizeof s3);
    gx_tensor_shape_str(Cm, s4, sizeof s4);
    GX_ASSERT_MSG(xs->ndim == 3 && delta->ndim == 3 && A->ndim == 2,
                  "gx_ssm_scan: need xs [B,L,E], delta [B,L|1,E], A [E,N]; got xs %s delta %s A %s",
                  s0, s1, s2);
    gx_scan_dims d = { xs->shape[0], xs->shape[1], xs->shape[2], A->shape[1], delta->shape[1] };
    GX_ASSERT_MSG(delta->shape[0] == d.B && delta->shape[2] == d.E && (d.Ld == d.L || d.Ld == 1),
                  "gx_ssm_scan: delta %s does not match xs %s (want [B,L,E] or [B,1,E])", s1, s0);
    GX_ASSERT_MSG(A->shape[0] == d.E && gx_tensor_same_shape(A, Bm) && gx_tensor_same_shape(A, Cm),
                  "gx_ssm_scan: A %s, Bm %s, Cm %s must all be [E,N] with E = %lld from xs",
                  s2, s3, s4, (long long)d.E);
    return d;
}

/* ------------------------------------------------------------ kernels */

/* gx_zoh_bfactor(d, A, a) written without a branch: bitwise the same value
 * (for finite d, A: the unused arm is multiplied by an exact 0 and the used
 * one by an exact 1; dividing by 1 in the limit branch avoids 0/0 at A = 0).
 * gx_zoh_bfactor's `if` guards a division, which GCC (-ftrapping-math) will
 * not if-convert, so loops calling it do not vectorise below AVX-512. The
 * comparison is turned into 0.0/1.0 by a conversion, not by `? 1 : 0`, which
 * jump threading would split into two code paths again.
 * tests/unit/test_scan.c compares the op with a naive loop that calls
 * gx_zoh_bfactor, with deltas either side of the threshold. */
static inline double gx_scan_bfactor(double d, double A, double a) {
    double small = (double)isless(fabs(d * A), GX_ZOH_SMALL);   /* 0 or 1 */
    double den = small + (1.0 - small) * A;      /* 1 or A, exactly */
    return small * d + (1.0 - small) * ((a - 1.0) / den);
}

/* Coefficients for one delta value d over the N states of a row e:
 * a[n] = exp(d A[n]), f[n] = gx_zoh_bfactor(d, A[n], a[n]). */
static inline void gx_scan_coef(double d, const double *A, double *a, double *f, int64_t N) {
    #pragma omp simd
    for (int64_t n = 0; n < N; n++) {
        double an = gx_scan_exp(d * A[n]);
        a[n] = an;
        f[n] = gx_scan_bfactor(d, A[n], an);
    }
}

/* Per-row constants of e, converted to double once: A, Bm, Cm (N each). */
typedef struct { const double *A, *Bm, *Cm; } gx_scan_row;

/* Forward recurrence of one (b, e). x, dl: this pair's xs and delta values
 * over t (dl has Ld entries). Fills the coefficients Ab, F (Ld x N: a_t, f_t
 * per step in token mode, one row in mean mode) for every step first, so
 * the exp-heavy loop runs over independent iterations, then runs the
 * recurrence. Writes y (L values, stride ys) unless y is NULL. States go to
 * H (L x N, h_t at H[t*N..]) when H is not NULL (backward recompute), else
 * through the N-double scratch h. */
GX_SCAN_CLONES
static void gx_scan_fwd_pair(const gx_scan_row *row, const double *x, const double *dl, int64_t L,
                             int64_t Ld, int64_t N, double *h, double *Ab, double *F,
                             gx_real *y, int64_t ys, double *H) {
    const double *A = row->A, *Bm = row->Bm, *Cm = row->Cm;
    for (int64_t t = 0; t < Ld; t++) gx_scan_coef(dl[t], A, Ab + t * N, F + t * N, N);
    for (int64_t n = 0; n < N; n++) h[n] = 0.0;
    const double *hp = h;                                  /* h_{t-1} */
    for (int64_t t = 0; t < L; t++) {
        const double *at = Ab + (Ld > 1 ? t * N : 0), *ft = F + (Ld > 1 ? t * N : 0);
        double *ht = H ? H + t * N : h;
        double xt = x[t], acc = 0.0;
        #pragma omp simd reduction(+:acc)
        for (int64_t n = 0; n < N; n++) {
            double hn = at[n] * hp[n] + ft[n] * Bm[n] * xt;
            ht[n] = hn;
            acc += hn * Cm[n];
        }
        hp = ht;
        if (y) y[t * ys] = (gx_real)acc;
    }
}

/* Accumulators of one e over the batch (N doubles each). */
typedef struct { double *gA, *gB, *gC; } gx_scan_pacc;

/* Reverse sweep of one (b, e) after gx_scan_fwd_pair stored H, Ab, F.
 * gy: upstream gradient over t (stride gys). Writes gx[t] (L values) and
 * gd[] (L values in token mode, 1 in mean mode) for this pair, and adds the
 * pair's contributions to the per-e parameter accumulators. zero: N zeros
 * (h_{-1}); gh: N scratch. */
GX_SCAN_CLONES
static void gx_scan_bwd_pair(const gx_scan_row *row, const double *x, const double *dl,
                             const gx_real *gy, int64_t gys, int64_t L, int64_t Ld, int64_t N,
                             const double *H, const double *Ab, const double *F, const double *zero,
                             double *gh, double *gx, double *gd, gx_scan_pacc *p) {
    const double *A = row->A, *Bm = row->Bm, *Cm = row->Cm;
    /* Local copies: through p-> the compiler would reload them every lane. */
    double *restrict pA = p->gA, *restrict pB = p->gB, *restrict pC = p->gC;
    for (int64_t n = 0; n < N; n++) gh[n] = 0.0;
    if (Ld == 1) gd[0] = 0.0;
    for (int64_t t = L - 1; t >= 0; t--) {
        const double *at = Ab + (Ld > 1 ? t * N : 0), *ft = F + (Ld > 1 ? t * N : 0);
        const double *ht = H + t * N, *hp = t > 0 ? ht - N : zero;   /* h_t, h_{t-1} */
        double d = dl[Ld > 1 ? t : 0], xt = x[t], g = (double)gy[t * gys];
        double sx = 0.0, sd = 0.0;
        #pragma omp simd reduction(+:sx, sd)
        for (int64_t n = 0; n < N; n++) {
            double ghn = gh[n] + g * Cm[n];              /* dL/dh_t */
            double an = at[n], fn = ft[n];
            /* f's partials: of the value computed (see the file comment).
             * Written as arithmetic on a 0/1 mask, as in gx_scan_bfactor:
             * a `small ? 0 : (..)/A` select becomes a branch under
             * -ftrapping-math and the loop would not vectorise. Dividing
             * by 1 in the limit branch keeps A = 0 from giving 0/0. */
            double small = (double)isless(fabs(d * A[n]), GX_ZOH_SMALL);   /* 0 or 1 */
            double den = small + (1.0 - small) * A[n];   /* 1 or A, exactly */
            double dfdd = an + small * (1.0 - an);
            double dfdA = (1.0 - small) * ((d * an - fn) / den);
            double ga = ghn * hp[n];                       /* dL/da_t */
            double gf = ghn * Bm[n] * xt;                /* dL/df_t */
            pC[n] += g * ht[n];
            pB[n] += ghn * fn * xt;
            pA[n] += ga * d * an + gf * dfdA;
            sd += ga * A[n] * an + gf * dfdd;
            sx += ghn * fn * Bm[n];
            gh[n] = ghn * an;                            /* carried to h_{t-1} */
        }
        gx[t] = sx;
        if (Ld > 1) gd[t] = sd; else gd[0] += sd;
    }
}

/* ------------------------------------------------------------ op */

/* One thread's workspace (doubles), carved from one arena block per op
 * call. Forward: x [L], dl [Ld] (xs, delta of the current (b, e)), h [N],
 * Ab, F [Ld, N] (coefficients). Backward adds zero [N] (h_{-1}), gh [N],
 * gx [L], gd [Ld], H [L, N] (recomputed states) and acc [3, N] (the e row's
 * gA, gB, gC sums over the batch). */
typedef struct { double *x, *dl, *h, *Ab, *F, *zero, *gh, *gx, *gd, *H, *acc; } gx_scan_ws;

static int64_t gx_scan_ws_size(const gx_scan_dims *s, int bw) {
    int64_t n = s->L + s->Ld + s->N + 2 * s->Ld * s->N;
    return bw ? n + 2 * s->N + s->L + s->Ld + s->L * s->N + 3 * s->N : n;
}

static gx_scan_ws gx_scan_ws_at(double *p, const gx_scan_dims *s, int bw) {
    gx_scan_ws w = {0};
    w.x = p; p += s->L;
    w.dl = p; p += s->Ld;
    w.h = p; p += s->N;
    w.Ab = p; p += s->Ld * s->N;
    w.F = p; p += s->Ld * s->N;
    if (bw) {
        w.zero = p; p += s->N;
        w.gh = p; p += s->N;
        w.gx = p; p += s->L;
        w.gd = p; p += s->Ld;
        w.H = p; p += s->L * s->N;
        w.acc = p;
    }
    return w;
}

/* Loads the (b, e) pair's xs and delta values over t into w (strided reads). */
static void gx_scan_load(const gx_scan_dims *s, const gx_tensor *xs, const gx_tensor *delta,
                         int64_t b, int64_t e, gx_scan_ws *w) {
    for (int64_t t = 0; t < s->L; t++) w->x[t] = (double)xs->data[(b * s->L + t) * s->E + e];
    for (int64_t t = 0; t < s->Ld; t++) w->dl[t] = (double)delta->data[(b * s->Ld + t) * s->E + e];
}

/* Row constants of A, Bm, Cm in double: [3, E, N]. */
static double *gx_scan_rows(gx_ctx *ctx, const gx_tensor *A, const gx_tensor *Bm,
                            const gx_tensor *Cm) {
    int64_t n = A->numel;
    double *r = gx_ctx_alloc(ctx, (size_t)(3 * n) * sizeof(double));
    for (int64_t i = 0; i < n; i++) {
        r[i] = (double)A->data[i];
        r[n + i] = (double)Bm->data[i];
        r[2 * n + i] = (double)Cm->data[i];
    }
    return r;
}

static void gx_ssm_scan_backward(gx_ctx *ctx, gx_node *node) {
    gx_tensor *xs = node->in[0], *delta = node->in[1];
    gx_scan_dims s = { node->i[0], node->i[1], node->i[2], node->i[3], node->i[4] };
    const int64_t B = s.B, L = s.L, E = s.E, N = s.N, Ld = s.Ld;
    gx_real *gxs = gx_grad(ctx, xs), *gdl = gx_grad(ctx, delta);
    gx_real *gA = gx_grad(ctx, node->in[2]), *gB = gx_grad(ctx, node->in[3]);
    gx_real *gC = gx_grad(ctx, node->in[4]);
    const gx_real *gy = node->out->grad;
    const double *rows = gx_scan_rows(ctx, node->in[2], node->in[3], node->in[4]);
    int64_t per = gx_scan_ws_size(&s, 1);
    double *scratch = gx_ctx_alloc(ctx, (size_t)(gx_get_threads() * per) * sizeof(double));
    /* Parallel over e only: each thread owns rows e of gA/gB/gC (see top). */
    #pragma omp parallel for schedule(static) if (B * L * E * N > GX_PAR_THRESHOLD)
    for (int64_t e = 0; e < E; e++) {
        gx_scan_ws w = gx_scan_ws_at(scratch + omp_get_thread_num() * per, &s, 1);
        gx_scan_row row = { rows + e * N, rows + E * N + e * N, rows + 2 * E * N + e * N };
        gx_scan_pacc p = { w.acc, w.acc + N, w.acc + 2 * N };
        memset(w.acc, 0, (size_t)(3 * N) * sizeof(double));
        memset(w.zero, 0, (size_t)N * sizeof(double));
        for (int64_t b = 0; b < B; b++) {
            gx_scan_load(&s, xs, delta, b, e, &w);
            gx_scan_fwd_pair(&row, w.x, w.dl, L, Ld, N, w.h, w.Ab, w.F, NULL, 0, w.H);
            gx_scan_bwd_pair(&row, w.x, w.dl, gy + b * L * E + e, E, L, Ld, N, w.H, w.Ab, w.F,
                             w.zero, w.gh, w.gx, w.gd, &p);
            if (gxs) for (int64_t t = 0; t < L; t++) gxs[(b * L + t) * E + e] += (gx_real)w.gx[t];
            if (gdl) for (int64_t t = 0; t < Ld; t++) gdl[(b * Ld + t) * E + e] += (gx_real)w.gd[t];
        }
        for (int64_t n = 0; n < N; n++) {
            if (gA) gA[e * N + n] += (gx_real)p.gA[n];
            if (gB) gB[e * N + n] += (gx_real)p.gB[n];
            if (gC) gC[e * N + n] += (gx_real)p.gC[n];
        }
    }
}

gx_tensor *gx_ssm_scan(gx_ctx *ctx, gx_tensor *xs, gx_tensor *delta, gx_tensor *A,
                       gx_tensor *Bm, gx_tensor *Cm) {
    gx_scan_dims s = gx_scan_check(xs, delta, A, Bm, Cm);
    GX_CUDA_DISPATCH(gx_on_cuda(xs) || gx_on_cuda(delta) || gx_on_cuda(A) || gx_on_cuda(Bm) || gx_on_cuda(Cm),
                     gx_cuda_ssm_scan(ctx, xs, delta, A, Bm, Cm));
    const int64_t B = s.B, L = s.L, E = s.E, N = s.N, Ld = s.Ld;
    gx_tensor *y = gx_tensor_new(ctx, 3, GX_SHAPE(B, L, E));
    const double *rows = gx_scan_rows(ctx, A, Bm, Cm);
    int64_t per = gx_scan_ws_size(&s, 0);
    double *scratch = gx_ctx_alloc(ctx, (size_t)(gx_get_threads() * per) * sizeof(double));
    #pragma omp parallel for collapse(2) schedule(static) if (B * L * E * N > GX_PAR_THRESHOLD)
    for (int64_t b = 0; b < B; b++)
        for (int64_t e = 0; e < E; e++) {
            gx_scan_ws w = gx_scan_ws_at(scratch + omp_get_thread_num() * per, &s, 0);
            gx_scan_row row = { rows + e * N, rows + E * N + e * N, rows + 2 * E * N + e * N };
            gx_scan_load(&s, xs, delta, b, e, &w);
            gx_scan_fwd_pair(&row, w.x, w.dl, L, Ld, N, w.h, w.Ab, w.F, y->data + b * L * E + e, E,
                             NULL);
        }
    /* Nothing is saved for backward beyond the inputs themselves (see top). */
    gx_tensor *in[5] = { xs, delta, A, Bm, Cm };
    gx_node *node = gx_tape_record(ctx, "ssm_scan", gx_ssm_scan_backward, y, 5, in);
    if (node) {
        node->i[0] = B; node->i[1] = L; node->i[2] = E; node->i[3] = N; node->i[4] = Ld;
    }
    return y;
}
