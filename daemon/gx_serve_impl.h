/*
 * gx_serve_impl.h — inside gx_serve_model: one struct for every model kind,
 * and the small table of per-kind functions that loading and predict
 * dispatch through (daemon/gx_serve_model.c holds the common part and the
 * wavelet-mamba kind; gx_serve_cf.c and gx_serve_uda.c the others).
 *
 * A kind's load() gets the parsed checkpoint (format already checked) and
 * must leave m->impl (its model), m->params (for the parameter count),
 * m->cfg_classes and m->cfg_size set, or return an error having freed what
 * it made. forward() computes rows [0, b) of one chunk in eval mode on ctx
 * into the row-offset outputs; the common code holds the mutex, splits a
 * chunk's rows over the threads (gx_ctx_for_parts: ctx is the model's own
 * for a lone part, else a side context of it) and resets the arenas.
 */
#ifndef GX_SERVE_IMPL_H
#define GX_SERVE_IMPL_H

#include "gx_serve_model.h"
#include "gx_serve_graph.h"
#include "gx_safetensors.h"
#include "gx_cuda.h"

#include <pthread.h>
#include <stdatomic.h>

typedef struct gx_serve_kind {
    const char *name;          /* metadata "model" */
    gx_status (*load)(gx_serve_model *m, const gx_st_file *f, gx_err *err);
    void      (*free)(gx_serve_model *m);
    /* x: b rows of 3*side*side; coords b*2 or NULL; domain b or NULL; out
     * pointers already offset to the chunk's first row (score may be NULL). */
    void      (*forward)(gx_serve_model *m, gx_ctx *ctx, const float *x, int64_t side, const float *coords,
                         const int8_t *domain, int b, const gx_serve_out *out);
    int         cuda;          /* 1: forward runs on the CUDA backend when the ctx has a device
                                  (inputs through gx_to_ctx, outputs through gx_to_host) */
    /* CUDA graph hooks (gx_serve_graph.h), NULL for a kind served eagerly
     * only. graph_variant: the variant for a chunk of b rows of side x side
     * (domain as predict gets it, may be NULL), -1 for none (the chunk runs
     * eagerly).
     * graph_pass: the eval pass on device inputs, x [B,3,S,S] and the
     * cleaned coordinates clean [B,2], mask [B,1] (gx_wm_coords_clean), on
     * ctx; it sets two device outputs of B rows each, and must neither copy
     * nor wait (it is captured). graph_read: the answers of b rows from those
     * outputs' values, downloaded to out0, out1. */
    int       (*graph_variant)(const gx_serve_model *m, const int8_t *domain, int b, int64_t side);
    void      (*graph_pass)(gx_serve_model *m, gx_ctx *ctx, int variant, gx_tensor *x, gx_tensor *clean,
                            gx_tensor *mask, gx_tensor *out[2]);
    void      (*graph_read)(gx_serve_model *m, const gx_real *const out[2], int b, const gx_serve_out *o);
} gx_serve_kind;

struct gx_serve_model {
    gx_serve_info        info;
    const gx_serve_kind *kind;
    void                *impl;         /* the kind's model (owned) */
    const gx_params     *params;       /* inside impl */
    gx_params           *consts;       /* inside impl, or NULL: constants the forward needs on
                                          the device too (the CF-INN's permutation matrices) */
    int64_t              cfg_classes;  /* K from the config */
    int64_t              cfg_size;     /* the config's nominal input size */
    gx_ctx               ctx;          /* activations of one chunk */
    gx_cuda_exec         exec;         /* the worker's stream and device arena */
    int                  on_cuda;      /* exec is live, ctx.cuda = &exec, params uploaded */
    int                  chunk;        /* rows per forward */
    /* CUDA graphs (gx_serve_graph.c; kinds with graph hooks, on a device):
     * one slot per variant and padded size, built on first use; a slot that
     * failed to build stays eager. The counters are for tests and the bench. */
    int                  graphs_on;
    struct gx_serve_graph *graphs[GX_SERVE_GRAPH_VARIANTS][GX_SERVE_GRAPH_SLOTS];
    int                  graph_failed[GX_SERVE_GRAPH_VARIANTS][GX_SERVE_GRAPH_SLOTS];
    atomic_llong         graph_captures, graph_replays;   /* read without the mutex (/metrics) */
    pthread_mutex_t      mu;           /* serialises predict (ctx is one arena) */
    int                  mu_ready;
    /* 1 once a device error outlived the sync that reported it (sticky: the
     * device is lost until the process restarts); device_error, its words,
     * is written before the flag is set and never after, so any thread that
     * reads the flag as 1 may read it. */
    atomic_int           device_failed;
    char                 device_error[512];
};

extern const gx_serve_kind gx_serve_kind_wm;
extern const gx_serve_kind gx_serve_kind_cf;
extern const gx_serve_kind gx_serve_kind_uda;

/* Row-wise softmax in double (max-shifted), as `galaxy-train eval` computes
 * probabilities; logits_out may alias nothing. */
void gx_serve_softmax_rows(const gx_real *logits, int b, int64_t K, float *logits_out,
                           float *probs_out);

#endif
