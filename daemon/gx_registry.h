/*
 * gx_registry.h — the set of models galaxyd serves, swappable at run time
 * (POST /v1/admin/reload, SIGHUP) without failing a request
 * (daemon/gx_registry.c).
 *
 * A registry is every checkpoint (*.safetensors, sorted by name) of a models
 * directory, each loaded with a running batcher. Request threads hold a
 * reference for the whole request:
 *
 *   gx_registry *r = gx_registry_acquire(holder);      // never NULL once started
 *   gx_registry_entry *e = gx_registry_find(r, "wavelet-mamba");   // or _default
 *   ... gx_batcher_submit(e->batcher, job) ... wait for done() ...
 *   gx_registry_release(r);
 *
 * Reload loads a new registry completely first (a bad checkpoint fails the
 * reload with a message naming it and changes nothing), then swaps it in; the
 * old one is closed — its batchers drain, answering every queued job — when
 * its last reference is released.
 */
#ifndef GX_REGISTRY_H
#define GX_REGISTRY_H

#include "gx.h"
#include "gx_serve_model.h"
#include "gx_batcher.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GX_REGISTRY_MAX_MODELS 16

typedef struct gx_registry_entry {
    gx_serve_model *model;
    gx_batcher     *batcher;
    const gx_serve_info *info;
} gx_registry_entry;

typedef struct gx_registry gx_registry;   /* immutable once built; refcounted */

/* Holds the current registry; swaps are atomic for acquirers. */
typedef struct gx_registry_holder gx_registry_holder;

/* Loads every checkpoint in dir (or the one file when dir is a file). An
 * empty directory is an error ("no checkpoints in DIR"). Names starting with
 * '.' are skipped; more than GX_REGISTRY_MAX_MODELS files, two files with one
 * route name, or any bad checkpoint fail the whole load (nothing leaks).
 * The new registry holds one reference, the caller's. */
gx_status gx_registry_load(gx_registry **out, const char *dir, const gx_batcher_opts *bo,
                           gx_err *err);
int gx_registry_count(const gx_registry *r);
gx_registry_entry *gx_registry_at(gx_registry *r, int i);
/* By route name; NULL when absent. */
gx_registry_entry *gx_registry_find(gx_registry *r, const char *name);
/* The model of a kind ("cf-inn", "uda", ...): the one whose route name is the
 * kind if it has that kind, else the first of that kind by name; NULL when
 * none is loaded. */
gx_registry_entry *gx_registry_find_kind(gx_registry *r, const char *kind);
/* The model /v1/classify uses: gx_registry_find_kind(r, "wavelet-mamba"),
 * else the first model. */
gx_registry_entry *gx_registry_default(gx_registry *r);

/* Takes over the caller's reference to initial. */
gx_status gx_registry_holder_new(gx_registry_holder **out, gx_registry *initial, gx_err *err);
gx_registry *gx_registry_acquire(gx_registry_holder *h);   /* +1 reference */
void gx_registry_retain(gx_registry *r);                   /* +1 (NULL is fine) */
/* -1 (NULL is fine); the last one closes the registry: its batchers drain
 * and its models are freed, on this thread — or, when this is one of the
 * registry's own workers (a done() callback), on a detached thread. */
void gx_registry_release(gx_registry *r);
/* Loads dir into a new registry and swaps it in; on error nothing changes. */
gx_status gx_registry_reload(gx_registry_holder *h, const char *dir, const gx_batcher_opts *bo,
                             gx_err *err);
/* Drops the holder's reference (the registry closes when requests finish). */
void gx_registry_holder_free(gx_registry_holder *h);

#ifdef __cplusplus
}
#endif
#endif
