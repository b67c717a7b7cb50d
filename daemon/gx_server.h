/*
 * gx_server.h — the HTTP side of galaxyd on libmicrohttpd (daemon/gx_server*.c).
 *
 *   gx_server_opts o;
 *   gx_server_opts_default(&o);
 *   o.port = 0;  o.models_dir = "models/default";
 *   gx_server *s;
 *   if (gx_server_start(&s, &o, &err)) { fprintf(stderr, "%s\n", err.msg); ... }
 *   printf("galaxyd listening on http://%s:%d\n", o.host, gx_server_port(s));
 *   ... gx_server_reload(s, &err) on SIGHUP ...
 *   gx_server_stop(s);        // graceful: quiesce, drain, answer, close the db
 *
 * Threads: libmicrohttpd runs an internal poll() loop with a pool of `threads`
 * threads; a handler decodes and preprocesses the upload in its own thread,
 * submits one gx_job per image to the model's batcher, and suspends the
 * connection. The batcher's worker calls done() for each job; the last one
 * of a request resumes the connection, and the next handler call builds the
 * answer. So a request costs a pool thread only while it parses, decodes or
 * writes JSON, never while it waits for the forward pass.
 *
 * The rest of this header is the pure helpers the server is made of,
 * exposed for tests/unit/test_server.c: routing, static-path resolution,
 * status mapping, request ids and error bodies.
 */
#ifndef GX_SERVER_H
#define GX_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include "gx.h"
#include "gx_batcher.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Every limit has a flag in tools/galaxyd.c (same names with dashes). */
typedef struct gx_server_opts {
    const char *host;              /* bind address, default "127.0.0.1" */
    int         port;              /* 0 = ephemeral (gx_server_port tells) */
    const char *db_path;           /* default "galaxyd.sqlite" */
    const char *models_dir;        /* default "models/default" */
    const char *web_dir;           /* static files, default "web" */
    int         threads;           /* MHD thread pool, default 4 */
    gx_batcher_opts batch;         /* max_batch 32, batch_delay_us 2000, max_queue 256 */
    size_t      max_body;          /* bytes, default 16 MiB (413 from Content-Length) */
    int64_t     max_pixels;        /* decoded width*height, default 4096*4096 (413) */
    int         max_batch_parts;   /* files per batch request / v2 rows, default 64 */
    int         max_connections;   /* default 256 */
    int         conn_timeout_s;    /* seconds a connection may be idle, and may take
                                      to deliver a whole request, default 30 */
    size_t      max_header_bytes;  /* MHD per-connection memory (headers), default 64 KiB */
    int         deadline_ms;       /* per job, default 10000 (504) */
    const char *api_key_file;      /* NULL = no authentication */
    int         protect_reads;     /* 1: GET data routes need the key too */
    const char *cors_origin;       /* NULL = no CORS headers */
    const char *access_log;        /* NULL = stderr */
    int         drain_timeout_ms;  /* stop(): how long to wait for in-flight requests,
                                      default deadline_ms + 5000 */
    int         cf_cache_mb;       /* counterfactual images kept, MiB, default 64 */
    int         cf_ttl_s;          /* how long a counterfactual result's URLs work, default 3600 */
} gx_server_opts;

void gx_server_opts_default(gx_server_opts *o);
/* Range checks of every field; the message names the flag. */
gx_status gx_server_opts_check(const gx_server_opts *o, gx_err *err);

typedef struct gx_server gx_server;

/* Loads the models (a corrupt checkpoint fails with its name), opens the
 * database (running migrations), binds and starts serving. */
gx_status gx_server_start(gx_server **out, const gx_server_opts *o, gx_err *err);
int gx_server_port(const gx_server *s);
/* Re-reads models_dir (what POST /v1/admin/reload and SIGHUP do). */
gx_status gx_server_reload(gx_server *s, gx_err *err);
/* Stops accepting, lets every accepted request finish (queued jobs are
 * computed and answered), stops MHD, closes the registry and the database,
 * frees s: GX_OK. NULL is fine. GX_ERR_TIMEOUT when requests are still
 * unanswered after the drain timeout: then nothing is stopped or freed
 * (jobs may still be running on the models), and the caller should exit
 * without freeing what the models use (the device pool). */
gx_status gx_server_stop(gx_server *s);

/* ------------------------------------------------------------ routing */

typedef enum gx_route_id {
    GX_RT_NONE = 0,
    GX_RT_HEALTHZ, GX_RT_READYZ, GX_RT_METRICS,
    GX_RT_MODELS, GX_RT_CLASSIFY, GX_RT_BATCH, GX_RT_OBJECT, GX_RT_PREDICTIONS, GX_RT_RELOAD,
    GX_RT_V2_SERVER, GX_RT_V2_LIVE, GX_RT_V2_READY,
    GX_RT_V2_MODEL, GX_RT_V2_MODEL_READY, GX_RT_V2_INFER,
    GX_RT_RUNS, GX_RT_RUN, GX_RT_RUN_METRICS, GX_RT_RUN_CHECKPOINTS, GX_RT_RUN_CONFUSION, GX_RT_REPORT,
    GX_RT_ANOMALY, GX_RT_ANOMALY_BATCH, GX_RT_ANOMALIES, GX_RT_ANOMALY_OBJECT, GX_RT_ANOMALY_THUMB,
    GX_RT_CF, GX_RT_CF_GET, GX_RT_CF_FILE, GX_RT_CF_OVERLAY, GX_RT_CF_DIFF, GX_RT_CF_PNG,
    GX_RT_GENERATE, GX_RT_MORPH,
    GX_RT_STATIC
} gx_route_id;

/* Methods as bits (HEAD is allowed wherever GET is). */
enum { GX_M_GET = 1, GX_M_HEAD = 2, GX_M_POST = 4, GX_M_PUT = 8, GX_M_DELETE = 16,
       GX_M_OPTIONS = 32, GX_M_PATCH = 64, GX_M_OTHER = 128 };
/* What a route needs. */
enum { GX_RF_AUTH_WRITE = 1,  /* needs the key when one is configured */
       GX_RF_AUTH_READ  = 2,  /* needs it with --protect-reads */
       GX_RF_V2         = 4,  /* errors as {"error": "..."} */
       GX_RF_BODY       = 8 };/* reads a request body */

#define GX_ROUTE_MAX_PARAMS 2
#define GX_ROUTE_PARAM_MAX 256

typedef struct gx_route_match {
    gx_route_id id;
    const char *name;          /* route template for metrics/logs ("/v1/objects/{object_id}") */
    unsigned    methods;       /* GX_M_* the path accepts (405's Allow) */
    unsigned    flags;         /* GX_RF_* */
    int         n_params;
    char        params[GX_ROUTE_MAX_PARAMS][GX_ROUTE_PARAM_MAX];  /* {name}, {version} ... */
} gx_route_match;

unsigned gx_server_method_bit(const char *method);
/* Matches an (already percent-decoded) path. Returns 200 when the route
 * accepts the method, 405 when the path exists for other methods (m->methods
 * says which), 404 when nothing matches (m->flags still says whether it is a
 * /v2 path, for the error style). OPTIONS matches any existing path (200).
 * Paths outside /v1/ and /v2 go to GX_RT_STATIC (GET/HEAD). */
int gx_server_route(const char *method, const char *path, gx_route_match *m);
/* "GET, HEAD, OPTIONS" style Allow value. */
void gx_server_allow(unsigned methods, char *buf, size_t n);

/* Resolves a URL path inside web_root (an absolute, real path) into out:
 * 200 and the file's real path when it is a regular file inside the root
 * ("/" and directories map to their index.html); 404 for everything else:
 * "..", hidden segments (".git"), NUL/backslash, missing files, directories
 * without index.html, symlinks whose target leaves the root. */
int gx_server_static_resolve(const char *web_root, const char *path, char *out, size_t n);
/* 1 when the raw (still percent-encoded) request target t[0..n) holds a
 * control character (0x00-0x1F, 0x7F), as a byte or as %XX: a decoded NUL
 * would cut the path short ("/index.html%00.js" would name index.html). */
int gx_server_target_has_ctl(const char *t, size_t n);
/* Content-Type by file extension ("application/octet-stream" if unknown). */
const char *gx_server_mime(const char *path);

/* ------------------------------------------------------------ errors */

/* Where a gx_status came from decides its HTTP meaning. */
typedef enum gx_srv_stage {
    GX_STAGE_PARSE,            /* request parsing: 400 bad_field */
    GX_STAGE_DECODE,           /* image decode: 413 over limits, 422 undecodable */
    GX_STAGE_SUBMIT,           /* batcher submit: 503 queue_full / unavailable */
    GX_STAGE_JOB,              /* a job's result: 504 timeout, 503 closed, 500 */
    GX_STAGE_STORE             /* database: 404 not found, 400 bad cursor, 500 */
} gx_srv_stage;

/* HTTP status and error code ("bad_field", ...) for s at stage (s != GX_OK). */
int gx_server_status_map(gx_status s, gx_srv_stage stage, const char **code);
/* {"error":{"code":code,"message":message}} (malloc'd); the message may
 * hold any bytes (invalid UTF-8 is replaced). */
char *gx_server_error_json(const char *code, const char *message);
/* {"error":"message"} (the Open Inference Protocol's error body). */
char *gx_server_v2_error_json(const char *message);

/* ------------------------------------------------------------ request ids */

/* 1: s is a request id we accept from a client (1..64 of [A-Za-z0-9._-]). */
int gx_server_request_id_ok(const char *s);
/* 16 lowercase hex digits from a per-server seed and a counter (a bijective
 * mix, so ids are unique per (seed, counter) and not sequential-looking). */
void gx_server_request_id_new(uint64_t seed, uint64_t counter, char out[17]);

/* ------------------------------------------------------------ auth */

/* Constant-time comparison (time depends only on the lengths' max). */
int gx_server_key_equal(const char *a, const char *b);
/* The key of an Authorization: Bearer <key> or X-API-Key header; NULL when
 * neither has one. */
const char *gx_server_key_from_headers(const char *authorization, const char *x_api_key);

/* JSON string escaping for the access log: bytes outside printable ASCII
 * become \u00XX, so a hostile path cannot break the line. */
void gx_server_json_escape(const char *in, char *out, size_t n);

#ifdef __cplusplus
}
#endif
#endif
