/*
 * gx_serve_graph.c — a served model's device forward as CUDA graphs, one
 * per padded batch size and variant (contract in gx_serve_graph.h). The
 * kinds give their pass and the reading of its outputs as hooks
 * (gx_serve_impl.h): WaveletMamba; UDA, one variant per BN domain; the
 * CF-INN's classification pass.
 *
 * Why: at batch 1 the forward is hundreds of small launches, and their
 * launch overhead (microseconds each on the host; not yet measured here,
 * bench_gx_gpu's graph rows will say) is most of a request's device time.
 * A graph replays them all with one launch. A graph bakes in every address
 * it touches, so each padded size B gets a slot that owns its memory for
 * the graph's lifetime: the inputs (x, cleaned coordinates, mask) in one
 * arena that is never reset, the activations in another that is only ever
 * rewound to the same start (one chunk of its high-water size: a rewind
 * keeps the block, so the replay's addresses are the capture's): a
 * gx_cuda_pass (kernels/gx_cuda.h) on the model's stream.
 *
 * A chunk of b rows runs in the slot of the smallest size >= b: the host
 * copies the b images and their cleaned coordinates into pinned staging
 * buffers (rows past b: zeros, coordinates missing), uploads them into the
 * slot's fixed inputs, launches the graph and downloads the b rows of its
 * two outputs from the captured addresses. Eval-mode ops are row-wise, so
 * the padding rows change nothing for the others.
 *
 * Building a slot (on first use of its size, under the model's mutex):
 * gx_cuda_pass_capture's eager passes on zero inputs (cuBLAS initialises,
 * the arena reaches its high-water size and is coalesced into one chunk),
 * the capture, then gx_cuda_pass_verify: the first replay must equal the
 * eager pass (to float rounding). A slot the device cannot hold (the
 * capture refused a call, the arena grew during it, the replay differed) is
 * marked failed with one stderr line and its size runs eagerly from then
 * on: a graph is an optimisation, never a reason to fail a request. A
 * device fault during the build is the device's error, not the graph's:
 * that request fails as any would, and the next one builds again.
 */
#include "gx_serve_graph.h"
#include "gx_serve_impl.h"

#include "gx_wavelet_mamba.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int graph_sizes[GX_SERVE_GRAPH_SLOTS] = { 1, 2, 4, 8, 16, 32 };

struct gx_serve_graph {
    int            B, variant;
    int64_t        side;
    gx_serve_model *m;
    gx_cuda_pass   pass;               /* the graph and its two arenas (gx_cuda.h) */
    gx_tensor     *x, *clean, *mask;   /* [B,3,side,side], [B,2], [B,1] in pass.in_ctx */
    gx_real       *now[2];             /* where the last run of the body put its outputs
                                          (kept here: the tensor structs live in the
                                          pass's arena, which each replay rewinds) */
    int64_t        numel[2];           /* their sizes */
    gx_real       *out[2];             /* their device addresses as captured */
    int64_t        per_row[2];         /* their values per row */
    gx_real       *hx;                 /* host staging (pinned): the images */
    gx_real       *hc, *hm, *hraw, *ho[2];   /* one pinned block: cleaned coords (2B),
                                                mask (B), raw coords (2B), the outputs */
};

/* The captured pass: pure device work on the slot's fixed inputs. */
static void graph_body(void *arg) {
    gx_serve_graph *g = arg;
    gx_tensor *o[2];
    g->m->kind->graph_pass(g->m, &g->pass.ctx, g->variant, g->x, g->clean, g->mask, o);
    for (int k = 0; k < 2; k++) {
        g->now[k] = o[k]->data;
        g->numel[k] = o[k]->numel;
    }
}

int gx_serve_graph_size(int b) {
    for (int i = 0; i < GX_SERVE_GRAPH_SLOTS; i++)
        if (graph_sizes[i] >= b) return graph_sizes[i];
    return 0;
}

static int graph_slot_index(int B) {
    for (int i = 0; i < GX_SERVE_GRAPH_SLOTS; i++)
        if (graph_sizes[i] == B) return i;
    return -1;
}

static void graph_free(gx_serve_graph *g) {
    if (!g) return;
    gx_cuda_pass_free(&g->pass);
    gx_cuda_host_free(g->hx);
    gx_cuda_host_free(g->hc);
    free(g);
}

/* Allocates the slot, its arenas and inputs (zeroed), and the image
 * staging buffer; the outputs' buffers follow the capture. */
static gx_status graph_alloc(gx_serve_model *m, int B, int variant, int64_t side, gx_serve_graph **out,
                             gx_err *err) {
    gx_serve_graph *g = calloc(1, sizeof *g);
    if (!g) return gx_err_set(err, GX_ERR_NOMEM, "out of host memory");
    g->B = B;
    g->variant = variant;
    g->side = side;
    g->m = m;
    gx_status s = gx_cuda_pass_init(&g->pass, &m->exec, err);
    if (s != GX_OK) {
        free(g);
        return s;
    }
    /* Pinned: the uploads and downloads are then truly asynchronous
     * copies, and only the sync after the launch waits. */
    void *hx = NULL;
    if ((s = gx_cuda_host_alloc((size_t)(B * 3 * side * side) * sizeof *g->hx, &hx, err)) != GX_OK) {
        graph_free(g);
        return s;
    }
    g->hx = hx;
    g->x = gx_tensor_zeros(&g->pass.in_ctx, 4, GX_SHAPE(B, 3, side, side));
    g->clean = gx_tensor_zeros(&g->pass.in_ctx, 2, GX_SHAPE(B, 2));
    g->mask = gx_tensor_zeros(&g->pass.in_ctx, 2, GX_SHAPE(B, 1));
    *out = g;
    return GX_OK;
}

/* Warm-up, rewind, capture (file comment; gx_cuda_pass_capture), then the
 * outputs' places and host buffers. */
static gx_status graph_build(gx_serve_model *m, int B, int variant, int64_t side, gx_serve_graph **out,
                             gx_err *err) {
    *out = NULL;
    gx_serve_graph *g = NULL;
    gx_status s = graph_alloc(m, B, variant, side, &g, err);
    if (s == GX_OK && (s = gx_cuda_pass_capture(&g->pass, graph_body, g, err)) == GX_OK)
        s = gx_cuda_pass_verify(&g->pass, 2, g->now, g->numel, err);   /* the zero inputs again */
    if (s != GX_OK) {
        graph_free(g);
        return s;
    }
    int64_t host = 5 * (int64_t)B;
    for (int k = 0; k < 2; k++) {
        g->out[k] = g->now[k];
        g->per_row[k] = g->numel[k] / B;
        host += g->numel[k];
    }
    void *hc = NULL;
    if ((s = gx_cuda_host_alloc((size_t)host * sizeof *g->hc, &hc, err)) != GX_OK) {
        graph_free(g);
        return s;
    }
    g->hc = hc;
    g->hm = g->hc + 2 * B;
    g->hraw = g->hm + B;
    g->ho[0] = g->hraw + 2 * B;
    g->ho[1] = g->ho[0] + g->numel[0];
    *out = g;
    return GX_OK;
}

void gx_serve_graphs_free(gx_serve_model *m) {
    for (int v = 0; v < GX_SERVE_GRAPH_VARIANTS; v++)
        for (int i = 0; i < GX_SERVE_GRAPH_SLOTS; i++) {
            graph_free(m->graphs[v][i]);
            m->graphs[v][i] = NULL;
        }
}

gx_status gx_serve_graph_get(gx_serve_model *m, const int8_t *domain, int b, int64_t side, gx_serve_graph **out,
                             gx_err *err) {
    *out = NULL;
    if (!m->on_cuda || !m->graphs_on || !m->kind->graph_pass) return GX_OK;
    int B = gx_serve_graph_size(b), i = graph_slot_index(B), v = m->kind->graph_variant(m, domain, b, side);
    if (i < 0 || v < 0 || v >= GX_SERVE_GRAPH_VARIANTS || m->graph_failed[v][i]) return GX_OK;
    gx_serve_graph *g = m->graphs[v][i];
    if (g) {
        *out = g->side == side ? g : NULL;   /* another side runs eagerly */
        return GX_OK;
    }
    gx_err e;
    gx_status s = graph_build(m, B, v, side, &m->graphs[v][i], &e);
    if (s == GX_ERR_IO) {
        /* The device failed under the build's eager passes or its check: the
         * request fails as any device error does, and the next one builds
         * again (a one-shot fault says nothing about graphs). */
        return gx_err_set(err, s, "%s", e.msg);
    }
    if (s != GX_OK) {
        m->graph_failed[v][i] = 1;
        fprintf(stderr, "galaxyd: model '%s' on %s: no CUDA graph for batch size %d%s (%s); that size runs "
                "without one\n", m->info.name, m->info.device, B, v ? " (variant 1)" : "", e.msg);
        return GX_OK;
    }
    atomic_fetch_add(&m->graph_captures, 1);
    *out = m->graphs[v][i];
    return GX_OK;
}

void gx_serve_graph_run(gx_serve_model *m, gx_serve_graph *g, const float *x, const float *coords, int b) {
    const int B = g->B;
    const int64_t per = 3 * g->side * g->side;
    for (int64_t i = 0; i < B * per; i++) g->hx[i] = i < b * per ? (gx_real)x[i] : 0;
    for (int64_t i = 0; i < 2 * (int64_t)B; i++)   /* padding rows: coordinates missing */
        g->hraw[i] = coords && i < 2 * (int64_t)b ? (gx_real)coords[i] : NAN;
    gx_wm_coords_clean(g->hraw, B, g->hc, g->hm);
    /* The rewind (a wait on an idle stream) before the uploads. */
    gx_cuda_pass_begin(&g->pass);
    gx_cuda_exec *in = &g->pass.in_exec;
    gx_cuda_exec_upload(in, g->x->data, g->hx, (size_t)(B * per) * sizeof(gx_real));
    gx_cuda_exec_upload(in, g->clean->data, g->hc, (size_t)(2 * B) * sizeof(gx_real));
    gx_cuda_exec_upload(in, g->mask->data, g->hm, (size_t)B * sizeof(gx_real));
    gx_cuda_pass_launch(&g->pass);
    for (int k = 0; k < 2; k++) {
        /* The emulation's replay re-ran the body: it must have put its
         * outputs where the capture did (on a GPU the body does not run). */
        if (g->now[k] != g->out[k])
            gx_cuda_stream_fail(m->exec.stream, "a CUDA graph's outputs moved between capture and replay");
        gx_cuda_exec_download(in, g->ho[k], g->out[k], (size_t)(b * g->per_row[k]) * sizeof(gx_real));
    }
    atomic_fetch_add(&m->graph_replays, 1);
}

void gx_serve_graph_read(gx_serve_model *m, const gx_serve_graph *g, int b, const gx_serve_out *out) {
    const gx_real *o[2] = { g->ho[0], g->ho[1] };
    m->kind->graph_read(m, o, b, out);
}
