/*
 * gx_server_impl.h — what the files of galaxyd's HTTP layer share (private):
 * the server and per-request structs, the response helpers, and the
 * handlers each file defines.
 *
 *   gx_server.c         lifecycle, the libmicrohttpd callbacks, responses,
 *                       suspend/resume, access log, metrics, static files
 *   gx_server_v1.c      /v1 routes, /healthz, /readyz, /metrics
 *   gx_server_v2.c      the Open Inference Protocol (KServe v2) routes
 *   gx_server_input.c   the image routes' input forms, fields and batch answers
 *   gx_server_util.c    pure helpers (gx_server.h)
 *
 * Request lifecycle (one srv_req per HTTP request, owned by MHD's con_cls):
 *   1st handler call   route, auth, Content-Length check (may answer early)
 *   body calls         append to r->body (bounded by max_body)
 *   last call          dispatch: sync routes answer; image routes decode,
 *                      submit one gx_job per image and suspend
 *   done() (worker)    the last job of the request resumes the connection
 *   resumed call       r->finish builds the answer (and stores it)
 *   completed          access log line, metrics, free, registry released
 */
#ifndef GX_SERVER_IMPL_H
#define GX_SERVER_IMPL_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>
#include <microhttpd.h>

#include "gx_server.h"
#include "gx_registry.h"
#include "gx_store.h"
#include "gx_prom.h"
#include "gx_http_parse.h"

#define GX_SERVER_VERSION "0.5.0"
#define SRV_FIELD_MAX 129           /* idents are 1..128 chars */

/* What srv_uri_log found in the raw request target (before libmicrohttpd
 * decodes it and a decoded NUL silently cuts the C string short). */
enum { SRV_TARGET_CTL_PATH = 1,     /* a control character in the path: 404 */
       SRV_TARGET_CTL_QUERY = 2 };  /* ... in the query string: 400 */

/* One per TCP connection (libmicrohttpd's socket context), on the server's
 * list while the connection is open, for the slow-client watchdog. */
typedef struct srv_conn {
    struct srv_conn *prev, *next;   /* s->conns, under s->conn_mu */
    MHD_socket fd;
    atomic_llong began_ns;          /* when the current request began: the accept,
                                       or the end of the previous request */
    atomic_int  received;           /* the current request arrived in full */
    atomic_uint target;             /* SRV_TARGET_* of the current request */
    int         cut;                /* the watchdog shut it down (under conn_mu) */
} srv_conn;

struct gx_server {
    gx_server_opts o;               /* string fields point into the copies below */
    char host[256], db_path[PATH_MAX], models_dir[PATH_MAX], web_root[PATH_MAX];
    char access_log[PATH_MAX], cors_origin[256];
    char api_key[512];              /* "" = no authentication */
    struct MHD_Daemon *mhd;
    int port;
    gx_registry_holder *models;
    gx_store *store;
    struct srv_anomaly *anomaly;    /* the anomaly store's connection (gx_server_anomaly.c) */
    struct gx_cf_store *cf_store;   /* counterfactual results (gx_server_cf.c) */
    gx_prom *prom;
    FILE *log;                      /* access log: stderr or the --access-log file */
    int log_owned;
    gx_image_limits limits;
    uint64_t id_seed;               /* request ids: seed from getrandom + counter */
    atomic_uint_fast64_t id_counter;
    atomic_int inflight;            /* requests between first call and completion */
    atomic_int draining;            /* stop() has begun: readyz 503, Connection: close */
    /* slow-client watchdog (gx_server.c) */
    pthread_mutex_t conn_mu;
    pthread_cond_t conn_cv;         /* wakes the watchdog to stop */
    srv_conn *conns;                /* open connections */
    int conn_stop;                  /* under conn_mu */
    int watchdog_running;
    pthread_t watchdog;
};

/* Optional per-image fields (query, form or JSON). */
typedef struct srv_fields {
    char   object_id[SRV_FIELD_MAX], survey[SRV_FIELD_MAX], model[64];
    double ra, dec;                 /* NaN = missing */
    int    source;                  /* the anomaly routes' own 'domain': 1 = the source
                                       BN set, 0 = target (the default) */
    char   error[300];              /* first bad field ("field 'ra': ..."), "" if none */
} srv_fields;

/* One image of a request (a classify, a batch part or a v2 row). */
typedef struct srv_item {
    srv_fields f;
    char   filename[256];
    gx_serve_meta meta;
    double decode_ms;
    int    status;                  /* 0 = fine so far, else its HTTP status */
    const char *code;               /* error code when status != 0 */
    char   message[400];
} srv_item;

typedef struct srv_req srv_req;
typedef enum MHD_Result (*srv_finish_fn)(srv_req *r);

struct srv_req {
    gx_server *srv;
    struct MHD_Connection *conn;
    char   id[65];
    char   method[16];
    char   path[1024];
    gx_route_match rm;
    int    route_status;            /* 200, 404, 405 from gx_server_route */
    srv_conn *cc;                   /* its connection (NULL if libmicrohttpd gave none) */
    unsigned target;                /* SRV_TARGET_* */
    int    close_conn;              /* answer with Connection: close (framing in doubt) */
    int64_t t0_ns;
    /* body */
    unsigned char *body;
    size_t len, cap;
    int    too_large;               /* the body passed max_body: 413 at the end */
    size_t discarded;
    /* state */
    int    answered;                /* a response was queued */
    int    status;                  /* what was answered (for the log) */
    size_t bytes;
    const char *err_code;           /* error code answered, NULL if none */
    /* asynchronous part (image routes) */
    atomic_int pending;             /* unfinished jobs + 1 held by the handler */
    srv_finish_fn finish;           /* set while jobs run: the resumed call runs it */
    gx_registry *reg;               /* held for the whole request */
    gx_registry_entry *entry;
    int    n;                       /* images */
    srv_item *items;                /* [n] */
    gx_job *jobs;                   /* [n] */
    float  *x;                      /* [n, 3, S, S] */
    unsigned char *aux;             /* decoded base64 image (JSON bodies) */
    json_t *doc;                    /* parsed JSON body kept for the finish step */
    json_t *extra;                  /* classify: members added to the answer (morphology, cf_inn) */
    unsigned v2_outputs;            /* bit 0 logits, 1 probabilities, 2 redshift */
};

/* Truncating string copy (always NUL-terminated when n > 0). Used where a
 * message is deliberately cut to a fixed buffer. */
static inline void srv_strcpy(char *dst, size_t n, const char *src) {
    if (!n) return;
    size_t k = src ? strnlen(src, n - 1) : 0;
    memcpy(dst, src ? src : "", k);
    dst[k] = 0;
}

/* ---- gx_server.c: responses (each queues exactly one response) ---- */

/* Queues body (malloc'd, taken over; NULL with len 0 = empty) with the
 * common headers plus extra name/value pairs (NULL-terminated list). */
enum MHD_Result srv_respond(srv_req *r, int status, const char *ctype, char *body, size_t len,
                            const char *const *extra);
/* Dumps o (reference taken over) as JSON. */
enum MHD_Result srv_json(srv_req *r, int status, json_t *o);
/* An error in the route's style (v1 {"error":{code,message}} or v2
 * {"error":"..."}), with Allow / Retry-After / WWW-Authenticate as the
 * status needs. */
enum MHD_Result srv_error(srv_req *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The error for a gx_status at a stage (gx_server_status_map). */
enum MHD_Result srv_error_status(srv_req *r, gx_status s, gx_srv_stage stage, const char *msg);

/* A query argument (NULL when absent; "" for "?k"). */
const char *srv_query(srv_req *r, const char *key);
const char *srv_header(srv_req *r, const char *key);

/* Submits every item without an error as a job and suspends the
 * connection until the last is done; finish runs on the resumed call (or
 * right away when nothing is left to wait for). */
enum MHD_Result srv_submit_and_suspend(srv_req *r, srv_finish_fn finish);
/* The same, and when a job was queued, during(r, ctx) runs on the handler's
 * thread before the suspend: work that needs the upload but not the model's
 * answer overlaps the forward pass instead of delaying it. during answers
 * nothing; it records a failure in r (an item's status) for finish. */
typedef void (*srv_during_fn)(srv_req *r, void *ctx);
enum MHD_Result srv_submit_overlap_suspend(srv_req *r, srv_during_fn during, void *ctx, srv_finish_fn finish);
/* Allocates items/jobs/x for n images of the entry's model. */
gx_status srv_alloc_items(srv_req *r, int n, gx_err *err);
double srv_ms_since(int64_t t0_ns);

/* ---- handlers ---- */
/* 1 when a model of the current registry lost its device for good
 * (gx_serve_model_device_failed): /healthz, /readyz and /v2/health/{live,ready} answer
 * 503 then, so that an orchestrator restarts the process. msg gets "model
 * 'NAME' on cuda:N: the device failed: ...". (gx_server_v1.c) */
int srv_device_failed(gx_server *s, char *msg, size_t n);
enum MHD_Result srv_v1_dispatch(srv_req *r);   /* /healthz /readyz /metrics /v1/... */
enum MHD_Result srv_v2_dispatch(srv_req *r);   /* /v2... */
/* /v1/anomaly, /v1/anomaly/batch, /v1/anomalies[/{object_id}] (gx_server_anomaly.c),
 * and the anomaly store's own database connection, opened with the server. */
enum MHD_Result srv_anomaly_dispatch(srv_req *r);
gx_status srv_anomaly_open(gx_server *s, gx_err *err);
void srv_anomaly_close(gx_server *s);   /* NULL and never-opened are fine */
enum MHD_Result srv_runs_dispatch(srv_req *r); /* /v1/runs..., /v1/reports (gx_server_runs.c) */
/* /v1/counterfactuals..., /v1/counterfactual.png, /v1/generate.png (gx_server_cf.c), and the
 * counterfactual store, opened with the server. */
enum MHD_Result srv_cf_dispatch(srv_req *r);
gx_status srv_cf_open(gx_server *s, gx_err *err);
void srv_cf_close(gx_server *s);       /* NULL and never-opened are fine */
/* POST /v1/morphology (gx_server_morph.c). */
enum MHD_Result srv_morph_dispatch(srv_req *r);
/* The morphology of one upload (decoded at native resolution, one band) as the
 * JSON object /v1/morphology answers; NULL with err set when it cannot be
 * decoded (status in *http, code in *code). classify's ?morph=1 uses it too. */
json_t *srv_morph_json(srv_req *r, const void *img, size_t n, const char *band, int *http,
                       const char **code, gx_err *err);
/* classify with a cf-inn model loaded: {class_index, class_name, log_likelihood}
 * of the upload under that model, or NULL when none is loaded or it fails. */
json_t *srv_cf_classify_json(srv_req *r, const void *img, size_t n);

/* ---- the image routes' input (gx_server_input.c) ---- */

void srv_fields_init(srv_fields *f);
/* Sets one field from text (value need not be NUL-terminated); unknown
 * names are ignored (1 returned when the name was known). A bad value is
 * recorded in f->error. */
int srv_field_set(srv_fields *f, const char *name, const char *value, size_t len);
/* Records msg as f's bad field unless one is recorded already (the first
 * bad field is the one answered). */
void srv_field_fail(srv_fields *f, const char *msg);
void srv_fields_from_query(srv_req *r, srv_fields *f);

/* A route's own field: 1 when name is its own; a bad value is recorded in
 * f->error (srv_field_fail) and answered with the other fields'. */
typedef int (*srv_extra_fn)(void *ctx, srv_fields *f, const char *name, const char *v, size_t n);
/* How a route takes its images and its own fields. */
typedef struct srv_input_spec {
    int max_images;                 /* 'file' parts allowed (a batch: max_batch_parts) */
    const char *batch_route;        /* set: a one-image route with a batch sibling: exactly
                                       one 'file' part, another count is 400 naming it */
    const char *const *extra;       /* the route's own field names, NULL-terminated (or NULL) */
    srv_extra_fn fn;                /* sets one of them (query, form part or JSON member) */
    void *ctx;
} srv_input_spec;

/* One or more uploaded images in classify's forms (raw body, multipart 'file'
 * parts, JSON {"image": base64}) plus a route's own fields. */
#define SRV_INPUT_MAX 16
typedef struct srv_input {
    srv_fields f;
    int n;                          /* images */
    const unsigned char *img[SRV_INPUT_MAX];   /* into r->body or r->aux */
    size_t len[SRV_INPUT_MAX];
} srv_input;
/* Reads the images (at most spec->max_images; more is 413) and fields; on
 * any problem the error is answered (r->answered) and the result returned. */
enum MHD_Result srv_input_read(srv_req *r, const srv_input_spec *spec, srv_input *in);

/* A batch request's multipart parts (srv_batch_free them in every case). */
typedef struct srv_batch {
    gx_mpart *parts;
    int np, files;
    srv_fields base;                /* query fields and a 'model' part: every image's defaults */
} srv_batch;
/* Reads the parts (at most spec->max_images files); answered on any problem. */
enum MHD_Result srv_batch_read(srv_req *r, const srv_input_spec *spec, srv_batch *b);
/* Fills r->items (srv_alloc_items done): the fields before a file part are
 * its own; each image is decoded (srv_prepare) unless its fields are bad. */
void srv_batch_items(srv_req *r, const srv_input_spec *spec, const srv_batch *b);
void srv_batch_free(srv_batch *b);

void srv_item_fail(srv_item *it, int status, const char *code, const char *msg);
/* Decodes + preprocesses image i into r->x exactly as the trainer does; a
 * failure is item i's error. */
void srv_prepare(srv_req *r, int i, const void *img, size_t n);
/* A failed job becomes item i's error (an earlier error stays). */
void srv_item_job_status(srv_req *r, int i);
/* Item i's entry in a batch answer: o (a result, taken over) with status
 * 200, or the item's error when o is NULL; plus index and filename. */
json_t *srv_batch_entry(srv_req *r, int i, json_t *o);
/* 200 {request_id, model, model_version, results: [entry(r, i) ...]}. */
enum MHD_Result srv_batch_answer(srv_req *r, json_t *(*entry)(srv_req *r, int i));
/* The model of a route that serves one kind: by name (it must be of that
 * kind) or the first of the kind. 0 with an answer queued when there is
 * none ("<need> need a <kind> model"). */
int srv_pick_kind(srv_req *r, const char *name, const char *kind, const char *need);

/* Item i's answer as /v1/classify and /v1/anomaly share it, members in
 * this order: request_id, model, model_version, class_index (as given) and
 * class_name (of class_index, class 0 when out of range), probabilities,
 * probs, the route's own members `own` (taken over), stored (false), timing,
 * image, then object_id, survey, ra, dec when the caller gave them. NULL
 * when out of memory. */
json_t *srv_result_json(srv_req *r, int i, int class_index, json_t *own);

#endif
