/*
 * gx_prom.h — Prometheus metrics of galaxyd (daemon/gx_prom.c): counters,
 * gauges and histograms keyed by name + label set, rendered in the text
 * exposition format 0.0.4 for GET /metrics. Thread-safe (one mutex; updates
 * are a lookup and an add).
 *
 *   gx_prom *p = gx_prom_new();
 *   gx_prom_describe(p, "galaxyd_requests_total", "counter", "HTTP requests by route and status");
 *   gx_prom_counter_add(p, "galaxyd_requests_total", "route=\"/v1/classify\",status=\"200\"", 1);
 *   gx_prom_hist_observe(p, "galaxyd_request_seconds", "route=\"/v1/classify\"", NULL, 0.012);
 *   char *text = gx_prom_render(p);  ...  free(text);
 *
 * Labels are passed pre-formatted (`k="v",k2="v2"`); callers use
 * gx_prom_label_escape for values that come from requests.
 */
#ifndef GX_PROM_H
#define GX_PROM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gx_prom gx_prom;

gx_prom *gx_prom_new(void);
void gx_prom_free(gx_prom *p);

/* type: "counter", "gauge" or "histogram"; HELP and TYPE lines. */
void gx_prom_describe(gx_prom *p, const char *name, const char *type, const char *help);
void gx_prom_counter_add(gx_prom *p, const char *name, const char *labels, double v);
void gx_prom_gauge_set(gx_prom *p, const char *name, const char *labels, double v);
/* Adds v (may be negative) to a gauge: queue depth, connections in flight. */
void gx_prom_gauge_add(gx_prom *p, const char *name, const char *labels, double v);
/* buckets: ascending upper bounds ending with a NaN sentinel (+Inf is
 * implicit), or NULL for the latency default (0.5 ms .. 10 s). The first
 * observation of a (name, labels) fixes its buckets. */
void gx_prom_hist_observe(gx_prom *p, const char *name, const char *labels,
                          const double *buckets, double v);
/* The whole exposition text (malloc'd; NULL when out of memory), families
 * in describe order, then families only ever updated (TYPE line, no HELP)
 * in creation order; series of a family sorted by label text.
 * Updates never fail a caller: a negative or non-finite counter add, a NaN
 * gauge or observation, an update whose type differs from the family's, or
 * a malformed label set (checked when the series is first seen; "le" is
 * reserved) is dropped. NULL p is a no-op everywhere. */
char *gx_prom_render(gx_prom *p);

/* Escapes \, " and newline of a label value into out (always NUL-terminated). */
void gx_prom_label_escape(const char *in, char *out, size_t n);

#ifdef __cplusplus
}
#endif
#endif
