/*
 * gx_cf_store.h — galaxyd's cache of counterfactual results
 * (daemon/gx_cf_store.c, table cf_results of migrations/0004): what
 * POST /v1/counterfactuals computed, kept so that the URLs it answered
 * (x_cf, overlay, diff, grid PNGs) work later without recomputing.
 *
 *   gx_cf_store *cs;
 *   gx_cf_store_open(&cs, "galaxyd.sqlite", &(gx_cf_store_opts){ 64 << 20, 3600000 }, &err);
 *   gx_cf_record r = { .id = "ab12", .group_id = "ab12", .size = 32, .n_targets = 2, ... };
 *   gx_cf_store_put(cs, &r, gx_cf_store_now_ms(), &err);
 *   gx_cf_record back;
 *   if (gx_cf_store_get(cs, "ab12", gx_cf_store_now_ms(), &back, &err) == GX_OK) ...
 *   gx_cf_record_free(&back);
 *
 * Bounded two ways: a result lives ttl_ms after it was put (expiry), and
 * the images held by all results stay within max_bytes (the oldest are
 * evicted first when a new one would pass it). Dropping a result frees its
 * images but keeps its row, so get() can say "expired" or "evicted" instead
 * of "unknown"; dropped rows are deleted for good a week later.
 *
 * Time is a parameter (Unix milliseconds) so tests can move the clock.
 * Images are float32 in the host's byte order (the daemon's own cache: the
 * file is not meant to move between machines of another endianness).
 * Threads: one SQLite connection behind a mutex; every call may come from
 * any thread.
 */
#ifndef GX_CF_STORE_H
#define GX_CF_STORE_H

#include "gx.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GX_CF_STORE_MAX_TARGETS 32    /* = GX_SERVE_MAX_CLASSES */
#define GX_CF_STORE_ID_MAX 80

typedef struct gx_cf_store_opts {
    int64_t max_bytes;        /* images held at most (--cf-cache-mb), >= 1 */
    int64_t ttl_ms;           /* a result's lifetime (--cf-ttl-s), >= 1 */
} gx_cf_store_opts;

typedef struct gx_cf_store gx_cf_store;

/* One input image's results. put() reads every field but created/expires
 * and dropped; get() fills every field (x, xrec, xcf and result_json are
 * malloc'ed then: gx_cf_record_free). */
typedef struct gx_cf_record {
    char    id[GX_CF_STORE_ID_MAX];        /* [A-Za-z0-9._-]+ */
    char    group_id[GX_CF_STORE_ID_MAX];  /* the request's id */
    int     input_index;                   /* position in the request */
    char    model_name[64], model_version[65];
    int     size;                          /* S */
    int64_t source_class;
    int     n_targets;                     /* 0..GX_CF_STORE_MAX_TARGETS */
    int64_t targets[GX_CF_STORE_MAX_TARGETS];
    char   *result_json;                   /* JSON text of the answer's entry */
    float  *x, *xrec;                      /* [3,S,S] each */
    float  *xcf;                           /* [n_targets,3,S,S] */
    int64_t created_ms, expires_ms;
    char    dropped[8];                    /* get() on GX_ERR_NOTFOUND: "expired",
                                              "evicted", or "" (never stored) */
} gx_cf_record;

/* Opens (creating, migrating) the database at db_path with a connection of
 * its own. GX_ERR_INVALID names a bad option. */
gx_status gx_cf_store_open(gx_cf_store **out, const char *db_path, const gx_cf_store_opts *o,
                           gx_err *err);
void gx_cf_store_close(gx_cf_store *s);   /* NULL is fine */

/* Stores r at time now_ms (expires now_ms + ttl_ms). First drops expired
 * results, then evicts the oldest held ones until r fits under max_bytes.
 * GX_ERR_NOMEM when r alone is larger than max_bytes (the message gives
 * both sizes); GX_ERR_INVALID for a bad id, size or target count or a
 * missing image; GX_ERR_INVALID also when the id is already stored. */
gx_status gx_cf_store_put(gx_cf_store *s, const gx_cf_record *r, int64_t now_ms, gx_err *err);

/* The result with this id at time now_ms. GX_ERR_NOTFOUND when it was
 * never stored, has expired (expires_ms <= now_ms) or was evicted; out->dropped
 * tells which, and the message says it in words. */
gx_status gx_cf_store_get(gx_cf_store *s, const char *id, int64_t now_ms, gx_cf_record *out,
                          gx_err *err);

/* The ids of a request's results (input order), at most cap into ids;
 * *n = how many the group has (0: GX_ERR_NOTFOUND). Dropped results count:
 * get() on them tells the client why. */
gx_status gx_cf_store_group(gx_cf_store *s, const char *group_id, char (*ids)[GX_CF_STORE_ID_MAX],
                            int cap, int *n, gx_err *err);

/* Results held (not dropped) and their image bytes, at time now_ms
 * (expired ones still count until the next put drops them). */
gx_status gx_cf_store_usage(gx_cf_store *s, int64_t *rows, int64_t *bytes, gx_err *err);

void gx_cf_record_free(gx_cf_record *r);  /* frees the malloc'ed fields; NULL is fine */

/* The wall clock in Unix milliseconds (what the server passes as now_ms). */
int64_t gx_cf_store_now_ms(void);

#ifdef __cplusplus
}
#endif
#endif
