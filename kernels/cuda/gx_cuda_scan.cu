/*
 * gx_cuda_scan.cu — the selective state-space scan on the GPU, twin of
 * kernels/gx_scan.c (same recurrence, same limit branch, math in double).
 *
 * Work decomposition: one thread block per (sample, group of channels); in a
 * block, each channel e owns np lanes of a warp (np = N rounded up to a power
 * of two, at most 32), one lane per state n, so h[e, n] lives in a register
 * for the whole sequence and y_t = sum_n h Cm is a shuffle reduction inside
 * the lane segment. Lanes n >= N hold zeros. The lane map and the per-step
 * math are in gx_cuda_body.cuh (host-tested).
 *
 * Backward: the forward recurrence is rerun and its states written to H
 * (double, B*L*E*N), then the reverse sweep carries dL/dh in a register.
 * xs/delta gradients belong to one (b, t, e) and are written by lane 0 of the
 * segment; A, Bm, Cm gradients are summed over t in registers and over the
 * batch with one float atomicAdd per (b, e, n), so their last bits may vary
 * between runs (the CPU sums over b in double in a fixed order).
 */
#include "gx_cuda_impl.cuh"
#include "gx_cuda_body.cuh"

/* Sum over the np lanes of this lane's segment (xor offsets < np stay in it). */
__device__ __forceinline__ double gx_cu_seg_sum(double v, int np) {
    for (int o = np >> 1; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Every lane runs every step (the shuffles need the whole warp); idle lanes
 * read a valid channel's inputs and keep zeros. */
__global__ void gx_cu_scan_fwd_k(gx_cu_sd d, const float *xs, const float *dl, const float *A,
                                 const float *Bm, const float *Cm, float *y, double *H) {
    int64_t e; int n;
    const int on = gx_cu_scan_lane(d, blockIdx.x, threadIdx.x, &e, &n);
    const int64_t b = blockIdx.y, ec = e < d.E ? e : d.E - 1;
    const double An = on ? A[ec * d.N + n] : 0.0, Bn = on ? Bm[ec * d.N + n] : 0.0;
    const double Cn = on ? Cm[ec * d.N + n] : 0.0;
    double h = 0.0, a = 0.0, f = 0.0;
    for (int64_t t = 0; t < d.L; t++) {
        if (t == 0 || d.Ld > 1) gx_cu_scan_coef(dl[(b * d.Ld + (d.Ld > 1 ? t : 0)) * d.E + ec], An, &a, &f);
        const double xt = xs[(b * d.L + t) * d.E + ec];
        h = on ? a * h + f * Bn * xt : 0.0;
        if (H && on) H[((b * d.L + t) * d.E + e) * d.N + n] = h;
        const double acc = gx_cu_seg_sum(h * Cn, d.np);
        if (y && n == 0 && e < d.E) y[(b * d.L + t) * d.E + e] = (float)acc;
    }
}

__global__ void gx_cu_scan_bwd_k(gx_cu_sd d, const float *xs, const float *dl, const float *A,
                                 const float *Bm, const float *Cm, const float *gy, const double *H,
                                 float *gxs, float *gdl, float *gA, float *gB, float *gC) {
    int64_t e; int n;
    const int on = gx_cu_scan_lane(d, blockIdx.x, threadIdx.x, &e, &n);
    const int64_t b = blockIdx.y, ec = e < d.E ? e : d.E - 1;
    const double An = on ? A[ec * d.N + n] : 0.0, Bn = on ? Bm[ec * d.N + n] : 0.0;
    const double Cn = on ? Cm[ec * d.N + n] : 0.0;
    double gh = 0.0, pA = 0.0, pB = 0.0, pC = 0.0, gdm = 0.0;
    for (int64_t t = d.L - 1; t >= 0; t--) {
        const int64_t it = (b * d.L + t) * d.E + ec;
        const double dt = dl[(b * d.Ld + (d.Ld > 1 ? t : 0)) * d.E + ec];
        const double ht = on ? H[it * d.N + n] : 0.0;
        const double hp = (on && t > 0) ? H[(it - d.E) * d.N + n] : 0.0;
        double sd = 0.0, sx = 0.0;
        if (on) gx_cu_scan_bstep(dt, An, Bn, Cn, xs[it], gy[it], ht, hp, &gh, &pA, &pB, &pC, &sd, &sx);
        sd = gx_cu_seg_sum(sd, d.np);
        sx = gx_cu_seg_sum(sx, d.np);
        if (n == 0 && e < d.E) {
            if (gxs) gxs[it] += (float)sx;
            if (d.Ld > 1) { if (gdl) gdl[it] += (float)sd; }
            else gdm += sd;
        }
    }
    if (n == 0 && e < d.E && d.Ld == 1 && gdl) gdl[b * d.E + e] += (float)gdm;
    if (!on) return;
    if (gA) atomicAdd(gA + e * d.N + n, (float)pA);
    if (gB) atomicAdd(gB + e * d.N + n, (float)pB);
    if (gC) atomicAdd(gC + e * d.N + n, (float)pC);
}

/* N > 32 (lanes per channel) and B > 65535 (grid y) are not handled. */
static int gx_cu_scan_ok(gx_cuda_stream *s, const char *fn, int64_t B, int64_t L, int64_t E, int64_t N) {
    if (B <= 0 || L <= 0 || E <= 0) return 0;
    if (N < 1 || N > 32 || B > 65535) { gx_cu_note(s, fn, cudaErrorInvalidValue); return 0; }
    return 1;
}

extern "C" void gx_cu_ssm_scan_fwd(gx_cuda_stream *s, const float *xs, const float *delta, const float *A,
                                   const float *Bm, const float *Cm, float *y,
                                   int64_t B, int64_t L, int64_t Ld, int64_t E, int64_t N) {
    GX_CU_SKIP(s);
    if (!gx_cu_scan_ok(s, __func__, B, L, E, N)) return;
    int64_t nb;
    gx_cu_sd d = gx_cu_scan_dims(B, L, Ld, E, N, &nb);
    gx_cu_scan_fwd_k<<<dim3((unsigned)nb, (unsigned)B), 32 * GX_CU_SCAN_WARPS, 0, s->st>>>(
        d, xs, delta, A, Bm, Cm, y, NULL);
    GX_CU_CHECK(s);
}

extern "C" void gx_cu_ssm_scan_bwd(gx_cuda_stream *s, const float *xs, const float *delta, const float *A,
                                   const float *Bm, const float *Cm, const float *g,
                                   float *gxs, float *gdelta, float *gA, float *gB, float *gC, double *H,
                                   int64_t B, int64_t L, int64_t Ld, int64_t E, int64_t N) {
    GX_CU_SKIP(s);
    if (!gx_cu_scan_ok(s, __func__, B, L, E, N)) return;
    int64_t nb;
    gx_cu_sd d = gx_cu_scan_dims(B, L, Ld, E, N, &nb);
    dim3 grid((unsigned)nb, (unsigned)B);
    gx_cu_scan_fwd_k<<<grid, 32 * GX_CU_SCAN_WARPS, 0, s->st>>>(d, xs, delta, A, Bm, Cm, NULL, H);
    GX_CU_CHECK(s);
    gx_cu_scan_bwd_k<<<grid, 32 * GX_CU_SCAN_WARPS, 0, s->st>>>(d, xs, delta, A, Bm, Cm, g, H, gxs, gdelta,
                                                                gA, gB, gC);
    GX_CU_CHECK(s);
}
