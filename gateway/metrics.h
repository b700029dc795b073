/* metrics.h - a small metrics registry: counters, gauges and histograms
 * with up to 4 labels, rendered as Prometheus text exposition format 0.0.4,
 * and snapshots that merge across processes.
 *
 * Owns: metric definitions and their series (one series per set of label
 * values), in registration / creation order, which is the render order.
 * Values: counters count events (uint64_t, so sums never drift);
 * gauges are doubles; a histogram keeps per-bucket counts (uint64_t), a
 * count and a sum (double). Bucket upper bounds are given at registration;
 * "+Inf" is implicit; a value v falls in the first bucket with v <= bound,
 * and _bucket lines are rendered cumulative, as Prometheus expects.
 *
 * Across gateways: each gateway is a separate process with its own
 * registry. gs_metrics_snapshot writes a registry as JSON (definitions and
 * values); gs_metrics_merge_snapshot adds one into another registry:
 * counters and histograms are summed, gauges summed or maxed per the
 * metric's merge flag. Intended use: the gateway answering /metrics builds
 * a fresh registry, merges its own snapshot and the latest snapshot of
 * every other gateway (the transport is not this module's job), renders
 * it, and frees it. A metric present on both sides must have the same
 * type, labels, buckets and merge flag, else the merge is refused.
 *
 * Threading: not thread-safe; each gateway uses its registry on its loop
 * thread. Pure: no I/O. */
#ifndef GS_METRICS_H
#define GS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define GS_METRICS_MAX_LABELS 4
#define GS_METRICS_MAX_BUCKETS 64
#define GS_METRICS_MAX_SERIES 10000 /* per metric; guards against unbounded label values */
#define GS_METRICS_MAX_VALUE 256    /* bytes of one label value */

typedef struct gs_metrics gs_metrics;             /* opaque registry */
typedef struct gs_metric gs_metric;               /* one metric, owned by its registry */
typedef struct gs_metric_series gs_metric_series; /* one label set, owned by its metric */

typedef enum { GS_METRIC_COUNTER, GS_METRIC_GAUGE, GS_METRIC_HISTOGRAM } gs_metric_type;
/* How gauges merge across processes (counters and histograms always sum). */
typedef enum { GS_METRIC_MERGE_SUM, GS_METRIC_MERGE_MAX } gs_metric_merge;

/* A definition; all strings and arrays borrowed for the call (copied). */
typedef struct {
    const char *name; /* [a-zA-Z_:][a-zA-Z0-9_:]*, e.g. "glmserve:request_ttft_seconds" */
    const char *help; /* one line of text (\ and newline are escaped) */
    gs_metric_type type;
    gs_metric_merge merge;                     /* gauges only */
    const char *labels[GS_METRICS_MAX_LABELS]; /* names [a-zA-Z_][a-zA-Z0-9_]* */
    size_t n_labels;
    const double *buckets; /* histograms: strictly increasing finite upper bounds */
    size_t n_buckets;      /* 1..GS_METRICS_MAX_BUCKETS for histograms */
} gs_metric_desc;

/* *out owns a new empty registry (gs_metrics_free). GS_ENOMEM. */
int gs_metrics_new(gs_metrics **out);
void gs_metrics_free(gs_metrics *m); /* NULL: no-op */

/* Adds a metric; *out (may be NULL) is borrowed until gs_metrics_free. A
 * metric without labels gets its one series at once (rendered as 0).
 * GS_EINVAL (d names the metric and what is wrong, also for a name
 * already registered), GS_ENOMEM. */
int gs_metrics_register(gs_metrics *m, const gs_metric_desc *desc, gs_metric **out, gs_diag *d);
/* The metric named name (borrowed), or NULL. */
gs_metric *gs_metrics_find(const gs_metrics *m, const char *name);

/* The series of metric for values[0..n_labels) (borrowed, copied on first
 * use); found or made. *out is borrowed until gs_metrics_free: keep it and
 * update through it. GS_EINVAL (NULL value), GS_ETOOBIG (a value over
 * GS_METRICS_MAX_VALUE bytes, or the metric already has
 * GS_METRICS_MAX_SERIES series), GS_ENOMEM. */
int gs_metrics_series(gs_metrics *m, gs_metric *metric, const char *const *values,
                      gs_metric_series **out);

void gs_metrics_inc(gs_metric_series *s, uint64_t n);   /* counters */
void gs_metrics_set(gs_metric_series *s, double v);     /* gauges */
void gs_metrics_add(gs_metric_series *s, double delta); /* gauges */
void gs_metrics_observe(gs_metric_series *s, double v); /* histograms; NaN is ignored */
/* Wrong-type updates (inc on a gauge, ...) do nothing. */

/* Renders the registry as Prometheus text 0.0.4 (Content-Type
 * "text/plain; version=0.0.4"). *out is returned owned (free()), NUL-
 * terminated, *len without the NUL. GS_ENOMEM. */
int gs_metrics_render(const gs_metrics *m, char **out, size_t *len);

/* Serialises the whole registry to compact JSON; *out owned (free()),
 * NUL-terminated. GS_ENOMEM. */
int gs_metrics_snapshot(const gs_metrics *m, char **out, size_t *len);
/* Merges a snapshot (borrowed, len bytes) into dst: metrics dst lacks are
 * registered, series are found or made, values combined. The snapshot is
 * parsed and checked against dst in full before anything is changed, so
 * GS_EFORMAT (malformed JSON or an incompatible definition; d names the
 * metric) leaves dst as it was; GS_ENOMEM may leave part merged. */
int gs_metrics_merge_snapshot(gs_metrics *dst, const char *json, size_t len, gs_diag *d);

#endif
