/*
 * gx_serve_graph.h — CUDA graphs for served models on the device (the
 * kinds with graph hooks: WaveletMamba, and UDA per BN domain): a chunk of
 * b rows is padded to the next of a few fixed batch sizes (1, 2, 4, 8, 16,
 * 32) and replayed as one graph captured for that size and variant
 * (daemon/gx_serve_graph.c says how and why). Used by
 * gx_serve_model_predict_ex under the model's mutex; galaxyd --cuda-graphs
 * off (gx_serve_device.graphs 0) turns it off.
 *
 *   gx_serve_graph *g;
 *   if (gx_serve_graph_get(m, domain, b, side, &g, &err) != GX_OK) ...  // a device error
 *   if (g) {                                                            // NULL: eager
 *       gx_serve_graph_run(m, g, x, coords, b);   // upload, launch, download
 *       ... sync the model's stream; on success:
 *       gx_serve_graph_read(m, g, b, &out);
 *   }
 */
#ifndef GX_SERVE_GRAPH_H
#define GX_SERVE_GRAPH_H

#include "gx_serve_model.h"

#include <stdint.h>

#define GX_SERVE_GRAPH_SLOTS    6   /* padded sizes */
#define GX_SERVE_GRAPH_VARIANTS 2   /* per size: UDA's two BN domains */

typedef struct gx_serve_graph gx_serve_graph;

/* The padded size for b rows (the smallest slot size >= b), 0 past the
 * largest. */
int gx_serve_graph_size(int b);
/* The slot for b rows of side x side (domain: the rows' domains or NULL,
 * as predict gets them) into *out, built (eager passes, capture, check) on
 * first use. *out NULL (GX_OK) when the model is not on a device or its
 * kind has no graph hooks, graphs are off, the kind finds no variant for
 * the rows (UDA: mixed domains), b is past the largest size, side is not
 * the slot's, or the slot could not be built (one stderr line, then that
 * size runs eagerly for good). GX_ERR_IO with the device's words when the
 * device failed during the build: the caller fails the request as for any
 * device error, and the next call builds again. */
gx_status gx_serve_graph_get(gx_serve_model *m, const int8_t *domain, int b, int64_t side, gx_serve_graph **out,
                             gx_err *err);
/* Stages rows [0, b) (x: b*3*side*side floats; coords 2b or NULL), uploads
 * them into the slot's inputs, replays the graph and queues the download of
 * the b rows' outputs. Nothing is read yet: the caller syncs the model's
 * stream and calls gx_serve_graph_read only if the sync succeeded. */
void gx_serve_graph_run(gx_serve_model *m, gx_serve_graph *g, const float *x, const float *coords, int b);
/* The answers of the last run's b rows into out (the kind's graph_read). */
void gx_serve_graph_read(gx_serve_model *m, const gx_serve_graph *g, int b, const gx_serve_out *out);
/* Frees every slot of m (their memory goes back to the device pool). */
void gx_serve_graphs_free(gx_serve_model *m);

#endif
