/*
 * gx_anomaly_store.h — stored anomaly scores (UDA), shared by galaxyd's
 * /v1/anomaly routes and `galaxy-train score` (trainer/gx_anomaly_store.c),
 * so offline and online scoring land in the same tables with the same rules.
 *
 * Tables: objects and anomaly_scores of migrations/0001_init.sql, plus what
 * migrations/0003_anomaly.sql adds (survey on anomaly_scores, ra/dec copied
 * onto the score row for the query, a unique key that makes a re-sent
 * (object, image, model) idempotent, and the query indexes).
 *
 * Versions: an object is (external_id); each distinct image_sha256 sent for
 * it is a new version (a new objects row, as gx_store does for predictions).
 * Re-sending the same (external_id, image_sha256) to the same model returns
 * the existing score row and writes nothing.
 *
 * Thumbnails (migrations/0007_anomaly_thumbs.sql): a record that carries
 * the model's input tensor (thumb_x) also stores a PNG of it, at most
 * GX_ANOMALY_THUMB_MAX pixels a side, keyed by image_sha256 — one per image
 * whatever model scored it; the first one stored stays (INSERT OR IGNORE) —
 * in the same transaction as the score. A re-sent image writes no new
 * score (the rule above) but does get a thumbnail if it had none (scores
 * stored before 0007). An object's versions are numbered 1, 2, ... in the
 * order its objects rows were created (the images first sent under that
 * external_id, scored or only classified); rows report their version.
 *
 * Query order is score DESC, id DESC; the cursor is opaque text (base64url of
 * "score|id", score printed with %.17g), stable under concurrent inserts.
 * Every page is an index range scan (no OFFSET).
 */
#ifndef GX_ANOMALY_STORE_H
#define GX_ANOMALY_STORE_H

#include "gx.h"
#include "gx_db.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gx_anomaly_rec {
    /* in */
    const char *external_id;   /* the caller's object id (required to store) */
    const char *survey;        /* may be NULL */
    const char *image_sha256;  /* 64 hex */
    const char *format;        /* png | jpeg | fits | h5 (may be NULL) */
    int         width, height, bands;
    double      ra, dec;       /* NaN = unknown */
    int64_t     model_id;      /* served_models.id (gx_anomaly_model_id) */
    double      score;         /* H / ln K in [0,1] */
    double      threshold;     /* rho / ln K: the stored threshold on the same scale */
    int         is_anomaly;
    int         class_index;
    const char *class_name;    /* may be NULL */
    const float *thumb_x;      /* the model's input [3, thumb_side, thumb_side] (CHW, values
                                  in [0,1]); NULL: store no thumbnail */
    int         thumb_side;
    const uint8_t *thumb_png;  /* thumb_x's thumbnail already made by gx_anomaly_thumb_png (a
                                  caller may make them on several threads), or NULL: made
                                  here when the image has none */
    size_t      thumb_png_n;
    int         thumb_png_side;
    /* out */
    int64_t     id;            /* anomaly_scores.id */
    int64_t     object_row;    /* objects.id */
    int         existed;       /* 1: the same object+image+model was stored before */
    char        created_at[32];
} gx_anomaly_rec;

/* Registers (or finds) the served_models row for a checkpoint:
 * name, version (sha256), kind "uda", path, threshold. */
gx_status gx_anomaly_model_id(gx_db *db, const char *name, const char *sha256, const char *path,
                              double threshold, const char *classes_json, int64_t *id, gx_err *err);
/* Inserts one score idempotently (see above). */
gx_status gx_anomaly_put(gx_db *db, gx_anomaly_rec *r, gx_err *err);
/* *exists = 1 when (external_id, image_sha256) already has a score from
 * model_id: what `galaxy-train score` asks before spending a forward pass. */
gx_status gx_anomaly_exists(gx_db *db, const char *external_id, const char *image_sha256,
                            int64_t model_id, int *exists, gx_err *err);
/* Many in one transaction (offline scoring); stops at the first error and
 * rolls back the whole call. */
gx_status gx_anomaly_put_many(gx_db *db, gx_anomaly_rec *r, int64_t n, gx_err *err);

typedef struct gx_anomaly_query {
    double      min_score;     /* NaN = none */
    const char *survey;        /* NULL = any */
    const char *since, *until; /* ISO-8601 created_at bounds (since inclusive,
                                  until exclusive), NULL = open */
    int         limit;         /* 1..1000 */
    const char *cursor;        /* NULL = first page */
    int64_t     model_id;      /* 0 = any */
} gx_anomaly_query;

typedef struct gx_anomaly_row {
    int64_t id;
    char    object_id[128];    /* external id */
    char    survey[64];
    double  ra, dec;           /* NaN when unknown */
    double  score, threshold;
    int     is_anomaly;
    int     class_index;
    char    class_name[48];
    char    image_sha256[65];
    char    model_version[65];
    char    created_at[32];
    int     version;           /* 1-based version of object_id this image is (see above) */
    int     has_thumb;         /* 1: GET .../thumb.png?version=<version> has a picture */
} gx_anomaly_row;

/* One page: rows[*n] (caller's array of q->limit), next cursor (empty when
 * last page). GX_ERR_INVALID names a bad cursor / since / until / limit. */
gx_status gx_anomaly_query_page(gx_db *db, const gx_anomaly_query *q, gx_anomaly_row *rows, int *n,
                                char next_cursor[128], gx_err *err);
/* The SQL text of a page query for q's filters (has_cursor: a cursor is
 * given), for EXPLAIN QUERY PLAN checks in tests. */
void gx_anomaly_page_sql(const gx_anomaly_query *q, int has_cursor, char *buf, size_t n);
/* Every score of one external object id, newest first (at most cap rows). */
gx_status gx_anomaly_history(gx_db *db, const char *external_id, gx_anomaly_row *rows, int cap,
                             int *n, gx_err *err);

/* ------------------------------------------------------------ thumbnails */

#define GX_ANOMALY_THUMB_MAX 64

/* The thumbnail PNG of a model input x [3, side, side] (CHW, [0,1]): the
 * image itself when side <= GX_ANOMALY_THUMB_MAX, else resized to that
 * (gx_pre_resize: antialiased bilinear). *png is malloc'ed (caller frees);
 * *thumb_side (may be NULL) receives its side. */
gx_status gx_anomaly_thumb_png(const float *x, int side, uint8_t **png, size_t *n, int *thumb_side,
                               gx_err *err);

/* The stored thumbnail of version `version` (1-based) of external_id, or
 * with version 0 of its newest version that has one; *png malloc'ed,
 * *version_out (may be NULL) the version found. GX_ERR_NOTFOUND (message
 * naming the object and version) when there is none; GX_ERR_INVALID for a
 * version < 0. */
gx_status gx_anomaly_thumb_get(gx_db *db, const char *external_id, int version, uint8_t **png, size_t *n,
                               int *version_out, gx_err *err);

/* ------------------------------------------------------------ SQLite helpers */

/* Shared with daemon/gx_store.c, which writes the same objects table: one
 * mapping of SQLite result codes and the same binding and sha256 rules for
 * both stores. (struct sqlite3_stmt is sqlite3.h's sqlite3_stmt; declared
 * here by tag so this header does not need sqlite3.h.) */
struct sqlite3_stmt;

/* SQLite result code -> status: constraint, type and range errors are the
 * caller's bad values (GX_ERR_INVALID); not-a-database and corruption are
 * GX_ERR_FORMAT; out of memory GX_ERR_NOMEM; the rest GX_ERR_IO. */
gx_status gx_anomaly_sql_status(int rc);
/* Binds v (copied), NULL as SQL NULL. */
void gx_anomaly_bind_text(struct sqlite3_stmt *st, int i, const char *v);
/* Binds v, NaN (unknown) as SQL NULL. */
void gx_anomaly_bind_real(struct sqlite3_stmt *st, int i, double v);
/* Resets a prepared statement for its next use and clears its bindings. */
void gx_anomaly_stmt_reset(struct sqlite3_stmt *st);
/* 1 when h is exactly 64 lowercase hex digits (a sha256 as stored). */
int gx_anomaly_is_hex64(const char *h);

#ifdef __cplusplus
}
#endif
#endif
