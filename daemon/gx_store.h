/*
 * gx_store.h — what galaxyd keeps in the SQLite database (daemon/gx_store.c),
 * on top of trainer/gx_db.h (migrations run on open, WAL mode).
 *
 * Tables (migrations/0001_init.sql, 0002_serving.sql): served_models, objects,
 * predictions. One connection guarded by a mutex: SQLite serialises writers
 * anyway, and every call is one short statement or transaction.
 *
 * Pagination cursors are opaque to clients: base64url of "created_at|id" of
 * the last row returned; rows come in (created_at, id) order, so a page
 * boundary is stable while new rows are inserted. A cursor that does not
 * decode is GX_ERR_INVALID naming the field 'cursor'.
 */
#ifndef GX_STORE_H
#define GX_STORE_H

#include <jansson.h>
#include "gx.h"
#include "gx_serve_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gx_store gx_store;

#define GX_STORE_CURSOR_MAX 64              /* bytes of a cursor, NUL included */
#define GX_STORE_LIMIT_MAX 1000             /* largest page */
#define GX_STORE_OBJECT_PREDICTIONS_MAX 100 /* newest predictions in get_object */

gx_status gx_store_open(gx_store **out, const char *db_path, gx_err *err);
void gx_store_close(gx_store *s);   /* NULL is fine; checkpoints the WAL */

/* Upserts served_models (name, version) and returns its id (the same id on
 * every call for that pair). Only the first call writes (a row with
 * loaded_at = then); later ones are a single indexed read, so calling it
 * per stored prediction is cheap. info->version must be the 64-hex sha256;
 * run_id is kept only when that run exists in this database (the
 * trainer's may be another file). */
gx_status gx_store_register_model(gx_store *s, const gx_serve_info *info, int64_t *model_id,
                                  gx_err *err);

/* One prediction to keep (an object row is created, or reused when the
 * same object_id and image sha256 were seen before). */
typedef struct gx_store_pred {
    const char  *object_id;    /* the caller's id (required) */
    const char  *survey;       /* NULL = none */
    double       ra, dec;      /* NaN = missing */
    const gx_serve_meta *meta; /* format, size, sha256 of the upload */
    int64_t      model_id;
    const char  *model_name, *model_version;
    int          class_index;
    const char  *class_name;
    const float *probs;        /* [n_classes] */
    int          n_classes;
    double       redshift;
    double       latency_ms;
} gx_store_pred;

/* Inserts in one transaction; created_at (ISO-8601 UTC, ms) and the new
 * prediction id come back when the pointers are non-NULL.
 * object_id and survey must pass gx_parse_ident (GX_ERR_INVALID naming the
 * field otherwise); meta is required (its sha256 keys the object row);
 * class_index in [0, n_classes), probs finite. confidence is stored as the
 * largest prob; a non-finite redshift/latency is stored as null. An
 * existing object row keeps its survey and (ra, dec) once known: only
 * missing ones are filled in. created_at never goes back in time (a new row
 * always sorts after every stored one, even if the clock steps back). */
gx_status gx_store_put_prediction(gx_store *s, const gx_store_pred *p, int64_t *pred_id,
                                  char created_at[32], gx_err *err);

/* GET /v1/objects/{object_id}: {"object_id", "survey", "ra", "dec",
 * "first_seen", "predictions": [newest first: prediction objects as in
 * list_predictions]}; GX_ERR_NOTFOUND when never stored.
 * One object_id may have several rows (several images): survey is the
 * newest non-null one, (ra, dec) the newest row's that has either,
 * first_seen the oldest row's created_at; predictions of all its images,
 * at most GX_STORE_OBJECT_PREDICTIONS_MAX (the newest). survey, ra and dec
 * are null when never given. An object_id that fails gx_parse_ident is
 * GX_ERR_INVALID naming 'object_id'. */
gx_status gx_store_get_object(gx_store *s, const char *object_id, json_t **out, gx_err *err);

typedef struct gx_store_query {
    const char *survey;        /* NULL = any */
    int         class_index;   /* -1 = any */
    const char *since;         /* ISO-8601 lower bound on created_at, NULL = none */
    int         limit;         /* 1..1000 */
    const char *cursor;        /* NULL = first page */
} gx_store_query;

/* GET /v1/predictions: *items = JSON array of {"id", "object_id", "survey",
 * "ra", "dec", "model", "model_version", "class_index", "class_name",
 * "confidence", "probs", "redshift", "latency_ms", "created_at"};
 * next_cursor = "" on the last page.
 * Types: id, class_index integers; object_id, model, model_version,
 * created_at strings; probs an array of numbers; survey, class_name
 * (string) and ra, dec, confidence, redshift, latency_ms (number) are null
 * when not stored. An item's survey is the one its request gave (else its
 * object's known survey at that time); ?survey= filters on it. Rows in
 * (created_at, id) order; since (inclusive) takes
 * YYYY-MM-DD[THH:MM[:SS[.fff]]][Z|+HH:MM|-HH:MM]. next_n must be at least
 * GX_STORE_CURSOR_MAX. GX_ERR_INVALID naming 'limit', 'class', 'survey',
 * 'since' or 'cursor' for a bad query. */
gx_status gx_store_list_predictions(gx_store *s, const gx_store_query *q, json_t **items,
                                    char *next_cursor, size_t next_n, gx_err *err);

/* CSV of such an items array: a header line, one row per item, probs as
 * p0..p{K-1} columns, RFC 4180 quoting. Returns malloc'd text.
 * Columns: id,object_id,survey,ra,dec,model,model_version,class_index,
 * class_name,confidence,redshift,latency_ms,created_at,p0..p{K-1} (K = the
 * widest probs in items; the probs last so the fixed columns keep their
 * positions whatever the model); null = empty field; CRLF line ends.
 * NULL when items is not an array or out of memory. */
char *gx_store_items_csv(const json_t *items);

#ifdef __cplusplus
}
#endif
#endif
