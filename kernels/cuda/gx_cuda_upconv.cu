/*
 * gx_cuda_upconv.cu — the fused nearest x2 upsample + 3x3 conv (pad 1) on
 * the GPU, twin of gx_upconv2x3 / gx_upconv2x3_leaky in kernels/gx_conv.c.
 *
 * Output pixel (2i+py, 2j+px) reads only two distinct low-resolution rows
 * and columns, so each parity (py, px) is a 2x2 conv of x with weights
 * folded from the 3x3 ones (gx_conv.c derives it): 4 taps instead of 9 on
 * a quarter of the pixels, and no upsampled tensor. Here, per sample: one
 * im2col of all four parities, col [4][4Cin][H*W], one strided-batched
 * cuBLAS GEMM over the parities (y_par [Cout, H*W] = wp_par [Cout, 4Cin]
 * col_par), then one scatter into y's interleaved pixels that adds the
 * bias and applies the activation (the inference epilogue of
 * gx_upconv2x3_leaky, any gx_cu_unary op).
 *
 * Backward: the gradient is gathered back to parity layout; dwp += dy_par
 * col_par^T and colg_par = wp_par^T dy_par (batched GEMMs), then the fold's
 * transpose gives dw and im2col's transpose, as a gather, gives dx (no
 * atomics). The bodies are in gx_cuda_body.cuh.
 */
#include "gx_cuda_impl.cuh"
#include "gx_cuda_body.cuh"

/* Scratch: wp [16 Cout Cin] | col [16 Cin HW] | yp [4 Cout HW] | dwp [16 Cout Cin]. */
extern "C" int64_t gx_cu_upconv_scratch_floats(int64_t Cin, int64_t H, int64_t W, int64_t Cout) {
    return 32 * Cout * Cin + 16 * Cin * H * W + 4 * Cout * H * W;
}

__global__ void gx_cu_up_fold_k(const float *w, float *wp, int64_t Cout, int64_t Cin) {
    GX_CU_LOOP(i, 16 * Cout * Cin) wp[i] = gx_cu_up_fold_at(w, i, Cout, Cin);
}
__global__ void gx_cu_up_im2col_k(const float *x, float *col, int64_t Cin, int64_t H, int64_t W) {
    GX_CU_LOOP(i, 16 * Cin * H * W) col[i] = gx_cu_up_im2col_at(x, i, Cin, H, W);
}
__global__ void gx_cu_up_put_k(const float *yp, const float *bias, int act, double p0, double p1, float *y,
                               int64_t Cout, int64_t H, int64_t W) {
    GX_CU_LOOP(i, 4 * Cout * H * W) y[i] = gx_cu_up_put_at(yp, bias, act, p0, p1, i, Cout, H, W);
}
__global__ void gx_cu_up_gather_k(const float *g, float *dyp, int64_t Cout, int64_t H, int64_t W) {
    GX_CU_LOOP(i, 4 * Cout * H * W) dyp[i] = gx_cu_up_gather_at(g, i, Cout, H, W);
}
__global__ void gx_cu_up_unfold_k(const float *dwp, float *gw, int64_t Cout, int64_t Cin) {
    GX_CU_LOOP(i, 9 * Cout * Cin) gw[i] += (float)gx_cu_up_unfold_at(dwp, i, Cout, Cin);
}
__global__ void gx_cu_up_col2im_k(const float *colg, float *gx, int64_t Cin, int64_t H, int64_t W) {
    GX_CU_LOOP(i, Cin * H * W) gx[i] += (float)gx_cu_up_col2im_at(colg, i, Cin, H, W);
}

#define GX_CU_UP_GRID(n) gx_cu_blocks(n), GX_CU_THREADS, 0, s->st

typedef struct { float *wp, *col, *yp, *dwp; int64_t HW, K4; } gx_cu_up_buf;

static gx_cu_up_buf gx_cu_up_split(float *scratch, int64_t Cin, int64_t H, int64_t W, int64_t Cout) {
    gx_cu_up_buf b;
    b.HW = H * W;
    b.K4 = 4 * Cin;
    b.wp = scratch;
    b.col = b.wp + 16 * Cout * Cin;
    b.yp = b.col + 16 * Cin * b.HW;
    b.dwp = b.yp + 4 * Cout * b.HW;
    return b;
}

extern "C" void gx_cu_upconv2x3_fwd(gx_cuda_stream *s, const float *x, const float *w, const float *bias, int act,
                                    double p0, double p1, float *y, float *scratch, int64_t B, int64_t Cin,
                                    int64_t H, int64_t W, int64_t Cout) {
    GX_CU_SKIP(s);
    if (B <= 0 || Cout <= 0 || H <= 0 || W <= 0) return;
    gx_cu_up_buf u = gx_cu_up_split(scratch, Cin, H, W, Cout);
    gx_cu_up_fold_k<<<GX_CU_UP_GRID(16 * Cout * Cin)>>>(w, u.wp, Cout, Cin);
    GX_CU_CHECK(s);
    for (int64_t b = 0; b < B; b++) {
        gx_cu_up_im2col_k<<<GX_CU_UP_GRID(16 * Cin * u.HW)>>>(x + b * Cin * u.HW, u.col, Cin, H, W);
        GX_CU_CHECK(s);
        /* yp_par [Cout, HW] = wp_par [Cout, 4Cin] col_par [4Cin, HW], par = 0..3. */
        gx_cu_gemm_batched(s, 0, 0, Cout, u.HW, u.K4, 1.0f, u.wp, u.K4, Cout * u.K4, u.col, u.HW, u.K4 * u.HW,
                           0.0f, u.yp, u.HW, Cout * u.HW, 4);
        gx_cu_up_put_k<<<GX_CU_UP_GRID(4 * Cout * u.HW)>>>(u.yp, bias, act, p0, p1, y + b * 4 * Cout * u.HW, Cout,
                                                           H, W);
        GX_CU_CHECK(s);
    }
}

extern "C" void gx_cu_upconv2x3_bwd(gx_cuda_stream *s, const float *x, const float *w, const float *g, float *gx,
                                    float *gw, float *gb, float *scratch, int64_t B, int64_t Cin, int64_t H,
                                    int64_t W, int64_t Cout) {
    GX_CU_SKIP(s);
    if (B <= 0 || Cout <= 0 || H <= 0 || W <= 0) return;
    gx_cu_up_buf u = gx_cu_up_split(scratch, Cin, H, W, Cout);
    if (gx) {
        gx_cu_up_fold_k<<<GX_CU_UP_GRID(16 * Cout * Cin)>>>(w, u.wp, Cout, Cin);
        GX_CU_CHECK(s);
    }
    if (gw) gx_cu_note(s, __func__, cudaMemsetAsync(u.dwp, 0, (size_t)(16 * Cout * Cin) * sizeof(float), s->st));
    for (int64_t b = 0; b < B && (gx || gw); b++) {
        gx_cu_up_gather_k<<<GX_CU_UP_GRID(4 * Cout * u.HW)>>>(g + b * 4 * Cout * u.HW, u.yp, Cout, H, W);
        GX_CU_CHECK(s);
        if (gw) {
            gx_cu_up_im2col_k<<<GX_CU_UP_GRID(16 * Cin * u.HW)>>>(x + b * Cin * u.HW, u.col, Cin, H, W);
            GX_CU_CHECK(s);
            /* dwp_par [Cout, 4Cin] += dy_par [Cout, HW] col_par^T */
            gx_cu_gemm_batched(s, 0, 1, Cout, u.K4, u.HW, 1.0f, u.yp, u.HW, Cout * u.HW, u.col, u.HW,
                               u.K4 * u.HW, 1.0f, u.dwp, u.K4, Cout * u.K4, 4);
        }
        if (gx) {
            /* colg_par [4Cin, HW] = wp_par^T dy_par (into col: its im2col is used up) */
            gx_cu_gemm_batched(s, 1, 0, u.K4, u.HW, Cout, 1.0f, u.wp, u.K4, Cout * u.K4, u.yp, u.HW, Cout * u.HW,
                               0.0f, u.col, u.HW, u.K4 * u.HW, 4);
            gx_cu_up_col2im_k<<<GX_CU_UP_GRID(Cin * u.HW)>>>(u.col, gx + b * Cin * u.HW, Cin, H, W);
            GX_CU_CHECK(s);
        }
    }
    if (gw) {
        gx_cu_up_unfold_k<<<GX_CU_UP_GRID(9 * Cout * Cin)>>>(u.dwp, gw, Cout, Cin);
        GX_CU_CHECK(s);
    }
    if (gb) {
        /* [Cout, 1] aligns with the middle dim of [B, Cout, 4HW]. */
        int64_t from[3] = { B, Cout, 4 * u.HW }, to[2] = { Cout, 1 };
        gx_cu_reduce_broadcast_add(s, gb, 2, to, g, 3, from);
    }
}
