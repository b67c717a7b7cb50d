/*
 * gx_morph_num.c — the numerical routines statmorph borrows from scipy and
 * numpy, ported so the C code takes the same steps: Brent's root finder
 * (scipy/optimize/Zeros/brentq.c), the Nelder–Mead of scipy.optimize.fmin,
 * numpy's pairwise summation, scipy.ndimage's uniform (running-sum) and
 * Gaussian filters with their boundary modes, and 8-connected labelling.
 * A different but "equally good" minimiser would stop at a different point
 * of A's flat bottom and shift A by more than the 1% budget.
 */
#include "gx_morph_impl.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ brentq */
double gxm_brentq(gxm_fn1 f, void *arg, double xa, double xb, double xtol, int *ok) {
    const double rtol = 4.0 * DBL_EPSILON;
    double xpre = xa, xcur = xb, xblk = 0.0, fblk = 0.0, spre = 0.0, scur = 0.0;
    double fpre = f(xpre, arg), fcur = f(xcur, arg);
    *ok = 1;
    if (fpre == 0) return xpre;
    if (fcur == 0) return xcur;
    if (signbit(fpre) == signbit(fcur) || isnan(fpre) || isnan(fcur)) {
        *ok = 0;
        return NAN;
    }
    for (int i = 0; i < 100; i++) {
        if (fpre != 0 && fcur != 0 && signbit(fpre) != signbit(fcur)) {
            xblk = xpre;
            fblk = fpre;
            spre = scur = xcur - xpre;
        }
        if (fabs(fblk) < fabs(fcur)) {
            xpre = xcur; xcur = xblk; xblk = xpre;
            fpre = fcur; fcur = fblk; fblk = fpre;
        }
        double delta = (xtol + rtol * fabs(xcur)) / 2;
        double sbis = (xblk - xcur) / 2;
        if (fcur == 0 || fabs(sbis) < delta) return xcur;
        if (fabs(spre) > delta && fabs(fcur) < fabs(fpre)) {
            double stry;
            if (xpre == xblk) {
                stry = -fcur * (xcur - xpre) / (fcur - fpre);  /* secant */
            } else {
                double dpre = (fpre - fcur) / (xpre - xcur);
                double dblk = (fblk - fcur) / (xblk - xcur);
                stry = -fcur * (fblk * dblk - fpre * dpre) / (dblk * dpre * (fblk - fpre));
            }
            double lim = fmin(fabs(spre), 3 * fabs(sbis) - delta);
            if (2 * fabs(stry) < lim) { spre = scur; scur = stry; }
            else { spre = sbis; scur = sbis; }
        } else {
            spre = sbis;
            scur = sbis;
        }
        xpre = xcur;
        fpre = fcur;
        if (fabs(scur) > delta) xcur += scur;
        else xcur += (sbis > 0 ? delta : -delta);
        fcur = f(xcur, arg);
    }
    *ok = 0;  /* scipy raises RuntimeError; callers flag it */
    return xcur;
}

/* ------------------------------------------------------------- Nelder–Mead */
typedef struct { gxm_fn2 f; void *arg; int n, max; } nm_fn;

/* scipy's wrapper: a call past maxfev raises and ends the search. */
static int nm_eval(nm_fn *w, const double *x, double *fx) {
    if (w->n >= w->max) return 0;
    w->n++;
    *fx = w->f(x, w->arg);
    return 1;
}

/* np.argsort of 3 values: numpy sorts tiny arrays by insertion, which keeps
 * ties in order; the same order decides which vertex is "worst". */
static void nm_sort(double sim[3][2], double fs[3]) {
    for (int i = 1; i < 3; i++)
        for (int j = i; j > 0 && fs[j] < fs[j - 1]; j--) {
            double t = fs[j]; fs[j] = fs[j - 1]; fs[j - 1] = t;
            for (int k = 0; k < 2; k++) { t = sim[j][k]; sim[j][k] = sim[j - 1][k]; sim[j - 1][k] = t; }
        }
}

int gxm_fmin2(gxm_fn2 f, void *arg, double x[2], double xatol, double fatol) {
    const int N = 2;
    nm_fn w = { f, arg, 0, 200 * N };
    double sim[3][2], fs[3] = { INFINITY, INFINITY, INFINITY };
    for (int k = 0; k <= N; k++) {
        sim[k][0] = x[0];
        sim[k][1] = x[1];
        if (k > 0) sim[k][k - 1] = x[k - 1] != 0 ? 1.05 * x[k - 1] : 0.00025;
    }
    int stop = 0;
    for (int k = 0; k <= N && !stop; k++)
        if (!nm_eval(&w, sim[k], &fs[k])) stop = 1;
    nm_sort(sim, fs);
    int iter = 1;
    while (!stop && w.n < w.max && iter < w.max) {
        double dx = 0, df = 0;
        for (int j = 1; j <= N; j++) {
            for (int k = 0; k < N; k++) dx = fmax(dx, fabs(sim[j][k] - sim[0][k]));
            df = fmax(df, fabs(fs[0] - fs[j]));
        }
        if (dx <= xatol && df <= fatol) break;
        double xbar[2], xr[2], fxr;
        for (int k = 0; k < N; k++) xbar[k] = (sim[0][k] + sim[1][k]) / N;
        for (int k = 0; k < N; k++) xr[k] = 2.0 * xbar[k] - sim[2][k];
        if (!nm_eval(&w, xr, &fxr)) break;
        if (fxr < fs[0]) {
            double xe[2], fxe;
            for (int k = 0; k < N; k++) xe[k] = 3.0 * xbar[k] - 2.0 * sim[2][k];
            if (!nm_eval(&w, xe, &fxe)) break;
            if (fxe < fxr) { sim[2][0] = xe[0]; sim[2][1] = xe[1]; fs[2] = fxe; }
            else { sim[2][0] = xr[0]; sim[2][1] = xr[1]; fs[2] = fxr; }
        } else if (fxr < fs[1]) {
            sim[2][0] = xr[0]; sim[2][1] = xr[1]; fs[2] = fxr;
        } else {
            int shrink = 0;
            double xc[2], fxc;
            if (fxr < fs[2]) {  /* outside contraction */
                for (int k = 0; k < N; k++) xc[k] = 1.5 * xbar[k] - 0.5 * sim[2][k];
                if (!nm_eval(&w, xc, &fxc)) { stop = 1; }
                else if (fxc <= fxr) { sim[2][0] = xc[0]; sim[2][1] = xc[1]; fs[2] = fxc; }
                else shrink = 1;
            } else {            /* inside contraction */
                for (int k = 0; k < N; k++) xc[k] = 0.5 * xbar[k] + 0.5 * sim[2][k];
                if (!nm_eval(&w, xc, &fxc)) { stop = 1; }
                else if (fxc < fs[2]) { sim[2][0] = xc[0]; sim[2][1] = xc[1]; fs[2] = fxc; }
                else shrink = 1;
            }
            if (shrink)
                for (int j = 1; j <= N && !stop; j++) {
                    for (int k = 0; k < N; k++) sim[j][k] = sim[0][k] + 0.5 * (sim[j][k] - sim[0][k]);
                    if (!nm_eval(&w, sim[j], &fs[j])) stop = 1;
                }
        }
        iter++;
        nm_sort(sim, fs);
    }
    nm_sort(sim, fs);
    x[0] = sim[0][0];
    x[1] = sim[0][1];
    return w.n;
}

/* ------------------------------------------------------- pairwise summation */
/* numpy/core/src/umath/loops_utils.h: blocks of 128 with 8 accumulators. */
#define PAIRWISE(NAME, T)                                                         \
    T NAME(const T *a, int64_t n) {                                               \
        if (n < 8) {                                                              \
            T res = (T)0;  /* numpy starts from -0.0; same for sums of finite */  \
            for (int64_t i = 0; i < n; i++) res += a[i];                          \
            return res;                                                           \
        }                                                                         \
        if (n <= 128) {                                                           \
            T r[8];                                                               \
            for (int k = 0; k < 8; k++) r[k] = a[k];                              \
            int64_t i;                                                            \
            for (i = 8; i < n - (n % 8); i += 8)                                  \
                for (int k = 0; k < 8; k++) r[k] += a[i + k];                     \
            T res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7])); \
            for (; i < n; i++) res += a[i];                                       \
            return res;                                                           \
        }                                                                         \
        int64_t n2 = n / 2;                                                       \
        n2 -= n2 % 8;                                                             \
        return NAME(a, n2) + NAME(a + n2, n - n2);                                \
    }
PAIRWISE(gxm_pairwise_d, double)
PAIRWISE(gxm_pairwise_f, float)

/* ------------------------------------------------------------------ filters */
/* scipy 'reflect' (d c b a | a b c d | d c b a) for any offset. */
static int reflect_idx(int i, int n) {
    if (n == 1) return 0;
    int p = 2 * n;
    i %= p;
    if (i < 0) i += p;
    return i < n ? i : p - 1 - i;
}

/* One axis of uniform_filter1d: a running *sum* over the extended line,
 * divided at each output, as NI_UniformFilter1D in current scipy (origin
 * 0: window [i - size/2, i + size - size/2 - 1]). Older scipy added
 * (new - old)/size to a running mean; that differs in the last bits, which
 * is enough to flip "> 0.5" in the segmentation box filter. */
static void uniform_line(const double *in, int n, int stride, double *out, int size, int f32,
                         double *ext) {
    int s1 = size / 2;
    for (int k = 0; k < n + size - 1; k++) ext[k] = in[(size_t)reflect_idx(k - s1, n) * stride];
    double tmp = 0.0;
    for (int k = 0; k < size; k++) tmp += ext[k];
    double v = tmp / (double)size;
    out[0] = f32 ? (double)(float)v : v;
    for (int k = 1; k < n; k++) {
        tmp += ext[k + size - 1] - ext[k - 1];
        v = tmp / (double)size;
        out[(size_t)k * stride] = f32 ? (double)(float)v : v;
    }
}

void gxm_uniform_filter(const double *in, double *out, int ny, int nx, int size, int f32,
                        double *work) {
    size_t n = (size_t)ny * nx;
    if (size <= 1) {  /* scipy skips axes with size <= 1 */
        if (out != in) memcpy(out, in, n * sizeof *out);
        return;
    }
    double *mid = work, *ext = work + n;
    for (int j = 0; j < nx; j++) uniform_line(in + j, ny, nx, mid + j, size, f32, ext);
    for (int i = 0; i < ny; i++) uniform_line(mid + (size_t)i * nx, nx, 1, out + (size_t)i * nx, size, f32, ext);
}

int gxm_gaussian_work(int ny, int nx, double sigma, double truncate) {
    int radius = (int)(truncate * sigma + 0.5);
    int m = ny > nx ? ny : nx;
    return ny * nx + m + 2 * radius + 2 + (2 * radius + 1);
}

/* correlate1d with a symmetric kernel, mode 'constant' (cval 0) or
 * 'reflect'. scipy
 * starts from the centre tap, then adds the symmetric pairs from the
 * outermost inwards: w[r]·x + Σ_{j=r..1} w[r-j]·(x[+j] + x[-j]). */
static void gauss_line(const double *in, int n, int stride, double *out, const double *w,
                       int r, int reflect, int f32, double *ext) {
    for (int k = 0; k < n + 2 * r; k++) {
        int src = k - r;
        if (reflect) ext[k] = in[(size_t)reflect_idx(src, n) * stride];
        else ext[k] = (src >= 0 && src < n) ? in[(size_t)src * stride] : 0.0;
    }
    for (int k = 0; k < n; k++) {
        const double *p = ext + k + r;
        double tmp = p[0] * w[r];
        for (int j = r; j >= 1; j--) tmp += (p[j] + p[-j]) * w[r - j];
        out[(size_t)k * stride] = f32 ? (double)(float)tmp : tmp;
    }
}

void gxm_gaussian_filter(const double *in, double *out, int ny, int nx, double sigma,
                         double truncate, int reflect, int f32, double *work) {
    int r = (int)(truncate * sigma + 0.5);
    size_t n = (size_t)ny * nx;
    int m = ny > nx ? ny : nx;
    double *mid = work, *ext = work + n, *w = ext + m + 2 * r + 2;
    for (int k = -r; k <= r; k++) w[k + r] = exp(-0.5 / (sigma * sigma) * (double)(k * k));
    double sum = gxm_pairwise_d(w, 2 * r + 1);
    for (int k = 0; k <= 2 * r; k++) w[k] /= sum;
    for (int j = 0; j < nx; j++) gauss_line(in + j, ny, nx, mid + j, w, r, reflect, f32, ext);
    for (int i = 0; i < ny; i++)
        gauss_line(mid + (size_t)i * nx, nx, 1, out + (size_t)i * nx, w, r, reflect, f32, ext);
}

/* ---------------------------------------------------------------- labelling */
int gxm_label8(const uint8_t *in, int ny, int nx, int32_t *lab, int32_t *stack) {
    size_t n = (size_t)ny * nx;
    memset(lab, 0, n * sizeof *lab);
    int cur = 0;
    for (size_t p0 = 0; p0 < n; p0++) {
        if (!in[p0] || lab[p0]) continue;
        lab[p0] = ++cur;
        size_t top = 0;
        stack[top++] = (int32_t)p0;
        while (top) {
            int32_t p = stack[--top];
            int i = p / nx, j = p % nx;
            for (int di = -1; di <= 1; di++)
                for (int dj = -1; dj <= 1; dj++) {
                    int a = i + di, b = j + dj;
                    if (a < 0 || a >= ny || b < 0 || b >= nx) continue;
                    size_t q = (size_t)a * nx + b;
                    if (in[q] && !lab[q]) { lab[q] = cur; stack[top++] = (int32_t)q; }
                }
        }
    }
    return cur;
}

/* Quicksort (median of three, insertion below 16, smaller side first so
 * the explicit stack stays under 64 levels): qsort's callback per compare
 * was a tenth of the run time. Values are finite here. */
static void insertion_sort(double *a, int64_t n) {
    for (int64_t i = 1; i < n; i++) {
        double v = a[i];
        int64_t j = i;
        for (; j > 0 && a[j - 1] > v; j--) a[j] = a[j - 1];
        a[j] = v;
    }
}

void gxm_sort(double *a, int64_t n) {
    int64_t lo_st[64], hi_st[64];
    int top = 0;
    int64_t lo = 0, hi = n - 1;
    for (;;) {
        while (hi - lo >= 16) {
            int64_t mid = lo + (hi - lo) / 2;
            double t;
            if (a[mid] < a[lo]) { t = a[mid]; a[mid] = a[lo]; a[lo] = t; }
            if (a[hi] < a[lo]) { t = a[hi]; a[hi] = a[lo]; a[lo] = t; }
            if (a[hi] < a[mid]) { t = a[hi]; a[hi] = a[mid]; a[mid] = t; }
            double piv = a[mid];
            int64_t i = lo, j = hi;
            while (i <= j) {
                while (a[i] < piv) i++;
                while (a[j] > piv) j--;
                if (i <= j) { t = a[i]; a[i] = a[j]; a[j] = t; i++; j--; }
            }
            /* recurse (push) on the larger part, loop on the smaller */
            if (j - lo < hi - i) {
                if (i < hi) { lo_st[top] = i; hi_st[top] = hi; top++; }
                hi = j;
            } else {
                if (lo < j) { lo_st[top] = lo; hi_st[top] = j; top++; }
                lo = i;
            }
        }
        if (hi > lo) insertion_sort(a + lo, hi - lo + 1);
        if (top == 0) break;
        top--;
        lo = lo_st[top];
        hi = hi_st[top];
    }
}
