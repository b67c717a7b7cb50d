/*
 * gx_serve_model.h — a trained model as galaxyd serves it: loaded from a
 * checkpoint, described (for /v1/models and /v2/models/{name}), and run on a
 * batch of already-preprocessed images (daemon/gx_serve_model.c).
 *
 *   gx_serve_model *m;
 *   if (gx_serve_model_load(&m, "models/default/wavelet-mamba.safetensors", NULL, &err)) ...
 *   const gx_serve_info *info = gx_serve_model_info(m);
 *   float *x = malloc(n * 3 * S * S * sizeof *x);            // S = info->input_size
 *   gx_serve_prepare(info, png, png_len, &lim, x, &meta, &err); // decode + preprocess one cutout
 *   gx_serve_model_predict(m, x, S, coords_or_NULL, n, &out, &err);
 *
 * A checkpoint is a safetensors file written by galaxy-train (metadata format
 * "galaxyd-checkpoint-1", see trainer/gx_train_wm.h). Loading verifies the
 * format, the model kind, the config and every tensor (gx_params_load is
 * all-or-nothing) and refuses with a message that names the file.
 *
 * Determinism: predict() runs the model in eval mode; one sample's outputs do
 * not depend on the other rows of x (the spec's serving rules).
 * Thread safety: predict is serialised per model by a mutex (normally its
 * batcher's worker is the only caller; a direct call from another thread
 * waits for the running batch); info is immutable after load and may be
 * read from any thread.
 */
#ifndef GX_SERVE_MODEL_H
#define GX_SERVE_MODEL_H

#include "gx.h"
#include "gx_image.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GX_SERVE_MAX_CLASSES 32

typedef struct gx_serve_info {
    char    name[64];          /* route name: the file name without .safetensors */
    char    kind[32];          /* metadata "model": "wavelet-mamba" | "cf-inn" | "uda" */
    char    version[65];       /* sha256 of the checkpoint file, lowercase hex */
    char    path[1024];        /* the checkpoint file */
    char    device[16];        /* "cpu" or "cuda:N" */
    int     input_size;        /* S: preprocess resizes to S x S */
    double  crop_frac;         /* preprocess centre crop */
    int     n_classes;         /* K */
    char    class_names[GX_SERVE_MAX_CLASSES][48];
    int64_t n_params;          /* parameters (buffers excluded) */
    int64_t run_id;            /* training run in the trainer's database, or -1 */
    char   *config_json;       /* the checkpoint's config (JSON text) */
    char   *test_metrics_json; /* metadata "test_metrics" (JSON object text), "{}" if absent */
    double  anomaly_threshold; /* uda: the tuned rho on the score scale (rho / ln K); else NaN */
} gx_serve_info;

typedef struct gx_serve_model gx_serve_model;

/* The device galaxyd serves from (tools/galaxyd.c makes one per process when
 * --device selects CUDA): its memory pool, shared by every model's worker. A
 * model whose kind runs on the CUDA backend (all three) gets its own stream
 * and device arena on it and its parameters uploaded once at load; the
 * networks run there, the CF-INN's counterfactual search (nearest means,
 * alphas, image metrics) on the host. info.device says where it runs. */
struct gx_cuda_pool;
typedef struct gx_serve_device {
    struct gx_cuda_pool *pool;
    int                  index;    /* CUDA device number */
    int                  tf32;     /* 1: cuBLAS may use TF32 tensor cores (galaxyd --tf32) */
    int                  graphs;   /* 1: replay a WaveletMamba's padded batches as CUDA graphs
                                      (galaxyd --cuda-graphs, on by default; gx_serve_graph.h) */
} gx_serve_device;

/* Loads one checkpoint. name NULL = derived from the file name (letters,
 * digits, '.', '_', '-' only: it is a route segment). Errors: GX_ERR_IO
 * (cannot read), GX_ERR_FORMAT (anything wrong inside the file: not
 * safetensors, format/model metadata, config, classes, preprocess,
 * test_metrics, a missing or misshapen tensor), GX_ERR_INVALID (the name);
 * every message names the path. *out is NULL on error. */
gx_status gx_serve_model_load(gx_serve_model **out, const char *path, const char *name,
                              gx_err *err);
/* The same on dev (NULL: the CPU). A failure to create the model's stream
 * or to upload its parameters fails the load (the message names the file). */
gx_status gx_serve_model_load_on(gx_serve_model **out, const char *path, const char *name,
                                 const gx_serve_device *dev, gx_err *err);
void gx_serve_model_free(gx_serve_model *m);   /* NULL is fine */
const gx_serve_info *gx_serve_model_info(const gx_serve_model *m);
/* Bytes held by the model's activation arenas (its ctx's and the side
 * contexts' of gx_ctx_for_parts; for /metrics and tests): they grow to the
 * high-water mark of one chunk of rows and then stay. Any
 * thread (waits while a predict runs). */
size_t gx_serve_model_arena_bytes(gx_serve_model *m);
/* CUDA graphs captured (one per padded batch size used) and replayed
 * (one per chunk that ran as a graph) since the load; 0, 0 on the CPU or
 * with graphs off (gx_serve_graph.h). Any thread, without waiting. */
void gx_serve_model_graph_counts(gx_serve_model *m, int64_t *captures, int64_t *replays);

/* What gx_serve_prepare learned about the upload (stored with predictions). */
typedef struct gx_serve_meta {
    char   format[8];          /* png | jpeg | fits */
    int    width, height, bands;
    char   sha256[65];         /* of the uploaded bytes */
} gx_serve_meta;

/* Decodes one cutout (PNG, JPEG or FITS, sniffed from the bytes) with io/
 * and preprocesses it exactly as the trainer does (gx_pre_prepare with the
 * checkpoint's size and crop) into x (3*S*S floats, CHW). Errors:
 * GX_ERR_NOMEM for an image over the limits (413), GX_ERR_FORMAT /
 * GX_ERR_UNSUPPORTED for undecodable bytes (422). meta may be NULL. */
gx_status gx_serve_prepare(const gx_serve_info *info, const void *buf, size_t n,
                           const gx_image_limits *lim, float *x, gx_serve_meta *meta,
                           gx_err *err);

/* Outputs of predict for n samples (caller-allocated). */
typedef struct gx_serve_out {
    float *logits;             /* n*K (cf-inn: g_c(h), the mixture log-densities) */
    float *probs;              /* n*K softmax of the logits */
    float *redshift;           /* n (NaN for kinds without redshift) */
    float *score;              /* n or NULL: cf-inn the hidden-space NLL, uda the
                                  anomaly score H / ln K; NaN for wavelet-mamba */
} gx_serve_out;

/* Eval-mode forward on x (n*3*S'*S' floats; S' is normally info->input_size
 * but any S' in [8, 1024] works: pooling is adaptive) with coords (n*2
 * ra,dec in degrees, a NaN row = missing) or NULL (every row missing). Rows
 * are computed in chunks of at most 32 (bounded memory); no row's outputs
 * depend on the others. GX_ERR_INVALID for n < 1, a bad side or NULLs;
 * GX_ERR_IO for a device error ("predict on cuda:N: ..."; the outputs are
 * then not to be used). */
gx_status gx_serve_model_predict(gx_serve_model *m, const float *x, int64_t side,
                                 const float *coords, int n, gx_serve_out *out, gx_err *err);
/* predict with a per-row domain (n values, 0 source / 1 target; NULL = every
 * row target). Only uda models read it (their BN set); others ignore it. */
gx_status gx_serve_model_predict_ex(gx_serve_model *m, const float *x, int64_t side,
                                    const float *coords, const int8_t *domain, int n,
                                    gx_serve_out *out, gx_err *err);

/* The kind-specific model behind m (gx_wm_model *, gx_cf_model *, gx_uda_model *
 * by info->kind), for routes that need more than predict (counterfactuals).
 * Callers hold gx_serve_model_lock while they use it and its arena. */
void   *gx_serve_model_impl(gx_serve_model *m);
gx_ctx *gx_serve_model_ctx(gx_serve_model *m);
void    gx_serve_model_lock(gx_serve_model *m);
void    gx_serve_model_unlock(gx_serve_model *m);
/* After work on gx_serve_model_ctx (under the lock): the first device error
 * since the last call, naming the device (GX_ERR_IO); GX_OK for a model on
 * the CPU. */
gx_status gx_serve_model_device_status(gx_serve_model *m, gx_err *err);
/* 1 when the model's device has failed for good: a device error was still
 * there at a second sync right after the one that reported it (CUDA keeps
 * an illegal memory access, for one, until the process ends), so every later
 * predict fails at once and only a restart helps; why (NULL or n == 0: not
 * written) gets the first error's words. 0 for a model on the CPU, or after
 * errors that cleared (one bad launch). Any thread, no lock. */
int gx_serve_model_device_failed(gx_serve_model *m, char *why, size_t n);

#ifdef __cplusplus
}
#endif
#endif
