/* metrics.c - the registry, Prometheus text rendering, JSON snapshots and
 * their merge. See metrics.h for the model.
 *
 * Metrics and series are singly linked lists in registration / creation
 * order; a series is found by a linear scan of its metric's series, which
 * is fine for the label sets a gateway has (routes x status codes) and is
 * bounded by GS_METRICS_MAX_SERIES. Doubles are printed in the shortest
 * form that reads back to the same value ("0.25", "1", "+Inf"); in JSON,
 * non-finite doubles travel as the strings "+Inf", "-Inf", "NaN".
 *
 * A merge parses the snapshot into a scratch registry first (every check
 * is made there), checks each of its metrics against dst, and only then
 * adds it in. Not thread-safe. */
#include "gateway/metrics.h"
#include "common/sbuf.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct gs_metric_series {
    gs_metric_series *next;
    gs_metric *metric;
    char *values[GS_METRICS_MAX_LABELS];
    uint64_t count; /* counter value, or histogram count */
    double gauge;
    double sum;        /* histograms */
    uint64_t *buckets; /* histograms: [n_buckets + 1], per bucket (not cumulative) */
    int fresh;         /* no value given yet (a max-merge then takes the other side's) */
};

struct gs_metric {
    gs_metric *next;
    char *name, *help;
    gs_metric_type type;
    gs_metric_merge merge;
    char *labels[GS_METRICS_MAX_LABELS];
    size_t n_labels;
    double *bounds;
    size_t n_buckets;
    gs_metric_series *head, *tail;
    size_t n_series;
};

struct gs_metrics {
    gs_metric *head, *tail;
};

static const char *type_name[] = {"counter", "gauge", "histogram"};

/* ---- names ---- */

static int valid_name(const char *s, int colon)
{
    if (!s || !*s)
        return 0;
    for (const char *p = s; *p; p++) {
        char c = *p;
        int alpha =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':');
        if (!alpha && !(p != s && c >= '0' && c <= '9'))
            return 0;
    }
    return 1;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* ---- registry ---- */

int gs_metrics_new(gs_metrics **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? 0 : GS_ENOMEM;
}

static void series_free(gs_metric_series *s)
{
    for (size_t i = 0; i < GS_METRICS_MAX_LABELS; i++)
        free(s->values[i]);
    free(s->buckets);
    free(s);
}

static void metric_free(gs_metric *mt)
{
    gs_metric_series *s = mt->head;
    while (s) {
        gs_metric_series *n = s->next;
        series_free(s);
        s = n;
    }
    free(mt->name);
    free(mt->help);
    for (size_t i = 0; i < GS_METRICS_MAX_LABELS; i++)
        free(mt->labels[i]);
    free(mt->bounds);
    free(mt);
}

void gs_metrics_free(gs_metrics *m)
{
    if (!m)
        return;
    gs_metric *mt = m->head;
    while (mt) {
        gs_metric *n = mt->next;
        metric_free(mt);
        mt = n;
    }
    free(m);
}

gs_metric *gs_metrics_find(const gs_metrics *m, const char *name)
{
    for (gs_metric *mt = m->head; mt; mt = mt->next)
        if (strcmp(mt->name, name) == 0)
            return mt;
    return NULL;
}

static int check_desc(const gs_metrics *m, const gs_metric_desc *d, gs_diag *dg)
{
    const char *nm = d->name ? d->name : "(null)";
    if (!valid_name(d->name, 1))
        return gs_diag_set(dg, GS_EINVAL, "metric \"%.64s\": invalid name", nm);
    if (gs_metrics_find(m, d->name))
        return gs_diag_set(dg, GS_EINVAL, "metric %.64s: registered twice", nm);
    if ((unsigned)d->type > GS_METRIC_HISTOGRAM)
        return gs_diag_set(dg, GS_EINVAL, "metric %.64s: unknown type", nm);
    if ((unsigned)d->merge > GS_METRIC_MERGE_MAX)
        return gs_diag_set(dg, GS_EINVAL, "metric %.64s: unknown merge", nm);
    if (d->n_labels > GS_METRICS_MAX_LABELS)
        return gs_diag_set(dg, GS_EINVAL, "metric %.64s: more than %d labels", nm,
                           GS_METRICS_MAX_LABELS);
    for (size_t i = 0; i < d->n_labels; i++) {
        const char *l = d->labels[i];
        if (!valid_name(l, 0) || strncmp(l, "__", 2) == 0)
            return gs_diag_set(dg, GS_EINVAL, "metric %.64s: invalid label name %zu", nm, i);
        if (d->type == GS_METRIC_HISTOGRAM && strcmp(l, "le") == 0)
            return gs_diag_set(dg, GS_EINVAL, "metric %.64s: label \"le\" is reserved", nm);
        for (size_t j = 0; j < i; j++)
            if (strcmp(d->labels[j], l) == 0)
                return gs_diag_set(dg, GS_EINVAL, "metric %.64s: label %s twice", nm, l);
    }
    if (d->type == GS_METRIC_HISTOGRAM) {
        if (d->n_buckets == 0 || d->n_buckets > GS_METRICS_MAX_BUCKETS || !d->buckets)
            return gs_diag_set(dg, GS_EINVAL, "metric %.64s: 1..%d buckets needed", nm,
                               GS_METRICS_MAX_BUCKETS);
        for (size_t i = 0; i < d->n_buckets; i++)
            if (!isfinite(d->buckets[i]) || (i > 0 && !(d->buckets[i] > d->buckets[i - 1])))
                return gs_diag_set(dg, GS_EINVAL,
                                   "metric %.64s: bucket %zu not finite or not increasing", nm, i);
    }
    return 0;
}

int gs_metrics_register(gs_metrics *m, const gs_metric_desc *desc, gs_metric **out, gs_diag *d)
{
    if (out)
        *out = NULL;
    int rc = check_desc(m, desc, d);
    if (rc != 0)
        return rc;
    gs_metric *mt = calloc(1, sizeof *mt);
    if (!mt)
        return gs_diag_set(d, GS_ENOMEM, "metric %.64s: out of memory", desc->name);
    mt->type = desc->type;
    mt->merge = desc->type == GS_METRIC_GAUGE ? desc->merge : GS_METRIC_MERGE_SUM;
    mt->n_labels = desc->n_labels;
    mt->name = dup_str(desc->name);
    mt->help = dup_str(desc->help ? desc->help : "");
    int bad = !mt->name || !mt->help;
    for (size_t i = 0; i < desc->n_labels; i++)
        bad |= !(mt->labels[i] = dup_str(desc->labels[i]));
    if (desc->type == GS_METRIC_HISTOGRAM) {
        mt->n_buckets = desc->n_buckets;
        mt->bounds = malloc(desc->n_buckets * sizeof *mt->bounds);
        if (mt->bounds)
            memcpy(mt->bounds, desc->buckets, desc->n_buckets * sizeof *mt->bounds);
        bad |= !mt->bounds;
    }
    gs_metric_series *s0 = NULL;
    if (!bad && mt->n_labels == 0)
        bad = gs_metrics_series(m, mt, NULL, &s0) != 0;
    if (bad) {
        metric_free(mt);
        return gs_diag_set(d, GS_ENOMEM, "metric %.64s: out of memory", desc->name);
    }
    if (m->tail)
        m->tail->next = mt;
    else
        m->head = mt;
    m->tail = mt;
    if (out)
        *out = mt;
    return 0;
}

int gs_metrics_series(gs_metrics *m, gs_metric *mt, const char *const *values,
                      gs_metric_series **out)
{
    (void)m;
    *out = NULL;
    for (size_t i = 0; i < mt->n_labels; i++) {
        if (!values || !values[i])
            return GS_EINVAL;
        if (strlen(values[i]) > GS_METRICS_MAX_VALUE)
            return GS_ETOOBIG;
    }
    for (gs_metric_series *s = mt->head; s; s = s->next) {
        size_t i = 0;
        while (i < mt->n_labels && strcmp(s->values[i], values[i]) == 0)
            i++;
        if (i == mt->n_labels) {
            *out = s;
            return 0;
        }
    }
    if (mt->n_series >= GS_METRICS_MAX_SERIES)
        return GS_ETOOBIG;
    gs_metric_series *s = calloc(1, sizeof *s);
    if (!s)
        return GS_ENOMEM;
    s->metric = mt;
    s->fresh = 1;
    int bad = 0;
    for (size_t i = 0; i < mt->n_labels; i++)
        bad |= !(s->values[i] = dup_str(values[i]));
    if (mt->type == GS_METRIC_HISTOGRAM)
        bad |= !(s->buckets = calloc(mt->n_buckets + 1, sizeof *s->buckets));
    if (bad) {
        series_free(s);
        return GS_ENOMEM;
    }
    if (mt->tail)
        mt->tail->next = s;
    else
        mt->head = s;
    mt->tail = s;
    mt->n_series++;
    *out = s;
    return 0;
}

void gs_metrics_inc(gs_metric_series *s, uint64_t n)
{
    if (s->metric->type == GS_METRIC_COUNTER)
        s->count += n;
}

void gs_metrics_set(gs_metric_series *s, double v)
{
    if (s->metric->type == GS_METRIC_GAUGE) {
        s->gauge = v;
        s->fresh = 0;
    }
}

void gs_metrics_add(gs_metric_series *s, double delta)
{
    if (s->metric->type == GS_METRIC_GAUGE) {
        s->gauge += delta;
        s->fresh = 0;
    }
}

void gs_metrics_observe(gs_metric_series *s, double v)
{
    const gs_metric *mt = s->metric;
    if (mt->type != GS_METRIC_HISTOGRAM || isnan(v))
        return;
    size_t i = 0;
    while (i < mt->n_buckets && !(v <= mt->bounds[i]))
        i++;
    s->buckets[i]++;
    s->count++;
    s->sum += v;
}

/* ---- text ---- */

static void tb_fmt(gs_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tb_fmt(gs_sbuf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        gs_sbuf_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Shortest %g form that reads back as v; "+Inf", "-Inf", "NaN". */
static void fmt_double(char out[32], double v)
{
    if (isnan(v)) {
        strcpy(out, "NaN");
        return;
    }
    if (isinf(v)) {
        strcpy(out, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, 32, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

static void tb_double(gs_sbuf *b, double v)
{
    char t[32];
    fmt_double(t, v);
    gs_sbuf_puts(b, t);
}

/* Escapes \ and newline (and " when quote), as the text format wants. */
static void tb_escaped(gs_sbuf *b, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            gs_sbuf_puts(b, "\\\\");
        else if (*s == '\n')
            gs_sbuf_puts(b, "\\n");
        else if (quote && *s == '"')
            gs_sbuf_puts(b, "\\\"");
        else
            gs_sbuf_put(b, s, 1);
    }
}

/* name{l1="v1",...[,le="x"]} - braces left out when there is nothing. */
static void tb_series(gs_sbuf *b, const gs_metric *mt, const char *suffix,
                      const gs_metric_series *s, const char *le)
{
    gs_sbuf_puts(b, mt->name);
    gs_sbuf_puts(b, suffix);
    if (mt->n_labels == 0 && !le)
        return;
    gs_sbuf_puts(b, "{");
    for (size_t i = 0; i < mt->n_labels; i++) {
        if (i)
            gs_sbuf_puts(b, ",");
        gs_sbuf_puts(b, mt->labels[i]);
        gs_sbuf_puts(b, "=\"");
        tb_escaped(b, s->values[i], 1);
        gs_sbuf_puts(b, "\"");
    }
    if (le) {
        gs_sbuf_puts(b, mt->n_labels ? ",le=\"" : "le=\"");
        gs_sbuf_puts(b, le);
        gs_sbuf_puts(b, "\"");
    }
    gs_sbuf_puts(b, "}");
}

int gs_metrics_render(const gs_metrics *m, char **out, size_t *len)
{
    gs_sbuf b = {0};
    gs_sbuf_put(&b, "", 0);
    for (const gs_metric *mt = m->head; mt; mt = mt->next) {
        tb_fmt(&b, "# HELP %s ", mt->name);
        tb_escaped(&b, mt->help, 0);
        tb_fmt(&b, "\n# TYPE %s %s\n", mt->name, type_name[mt->type]);
        for (const gs_metric_series *s = mt->head; s; s = s->next) {
            if (mt->type == GS_METRIC_COUNTER) {
                tb_series(&b, mt, "", s, NULL);
                tb_fmt(&b, " %llu\n", (unsigned long long)s->count);
            } else if (mt->type == GS_METRIC_GAUGE) {
                tb_series(&b, mt, "", s, NULL);
                gs_sbuf_puts(&b, " ");
                tb_double(&b, s->gauge);
                gs_sbuf_puts(&b, "\n");
            } else {
                uint64_t cum = 0;
                for (size_t i = 0; i <= mt->n_buckets; i++) {
                    char le[32];
                    if (i < mt->n_buckets)
                        fmt_double(le, mt->bounds[i]);
                    else
                        strcpy(le, "+Inf");
                    cum += s->buckets[i];
                    tb_series(&b, mt, "_bucket", s, le);
                    tb_fmt(&b, " %llu\n", (unsigned long long)cum);
                }
                tb_series(&b, mt, "_sum", s, NULL);
                gs_sbuf_puts(&b, " ");
                tb_double(&b, s->sum);
                gs_sbuf_puts(&b, "\n");
                tb_series(&b, mt, "_count", s, NULL);
                tb_fmt(&b, " %llu\n", (unsigned long long)s->count);
            }
        }
    }
    if (b.oom) {
        free(b.p);
        *out = NULL;
        *len = 0;
        return GS_ENOMEM;
    }
    *out = b.p;
    *len = b.n;
    return 0;
}

/* ---- snapshots ---- */

static json_t *j_double(double v)
{
    if (isfinite(v))
        return json_real(v);
    char t[32];
    fmt_double(t, v);
    return json_string(t);
}

static int j_get_double(const json_t *j, double *v)
{
    if (json_is_number(j)) {
        *v = json_number_value(j);
        return 0;
    }
    const char *s = json_string_value(j);
    if (!s)
        return -1;
    if (strcmp(s, "+Inf") == 0)
        *v = INFINITY;
    else if (strcmp(s, "-Inf") == 0)
        *v = -INFINITY;
    else if (strcmp(s, "NaN") == 0)
        *v = NAN;
    else
        return -1;
    return 0;
}

/* uint64 as a JSON integer, or as a decimal string above INT64_MAX. */
static json_t *j_u64(uint64_t v)
{
    if (v <= (uint64_t)INT64_MAX)
        return json_integer((json_int_t)v);
    char t[24];
    snprintf(t, sizeof t, "%llu", (unsigned long long)v);
    return json_string(t);
}

static int j_get_u64(const json_t *j, uint64_t *v)
{
    if (json_is_integer(j)) {
        if (json_integer_value(j) < 0)
            return -1;
        *v = (uint64_t)json_integer_value(j);
        return 0;
    }
    const char *s = json_string_value(j);
    if (!s || !*s || strlen(s) > 20)
        return -1;
    char *end;
    unsigned long long x = strtoull(s, &end, 10);
    if (*end || s[0] < '0' || s[0] > '9')
        return -1;
    *v = x;
    return 0;
}

/* json_*_new steals; a NULL child marks the whole object bad. */
static int j_set(json_t *o, const char *k, json_t *v)
{
    return v ? json_object_set_new(o, k, v) : -1;
}

static int j_push(json_t *a, json_t *v)
{
    return v ? json_array_append_new(a, v) : -1;
}

static json_t *snap_metric(const gs_metric *mt)
{
    json_t *o = json_object(), *labels = json_array(), *series = json_array();
    int bad = !o || !labels || !series;
    bad |= j_set(o, "name", json_string(mt->name)) != 0;
    bad |= j_set(o, "help", json_string(mt->help)) != 0;
    bad |= j_set(o, "type", json_string(type_name[mt->type])) != 0;
    bad |= j_set(o, "merge", json_string(mt->merge == GS_METRIC_MERGE_MAX ? "max" : "sum")) != 0;
    for (size_t i = 0; labels && i < mt->n_labels; i++)
        bad |= j_push(labels, json_string(mt->labels[i])) != 0;
    if (mt->type == GS_METRIC_HISTOGRAM) {
        json_t *bk = json_array();
        for (size_t i = 0; bk && i < mt->n_buckets; i++)
            bad |= j_push(bk, json_real(mt->bounds[i])) != 0;
        bad |= j_set(o, "buckets", bk) != 0;
    }
    for (const gs_metric_series *s = mt->head; series && s; s = s->next) {
        json_t *so = json_object(), *l = json_array();
        bad |= !so || !l;
        for (size_t i = 0; l && i < mt->n_labels; i++)
            bad |= j_push(l, json_string(s->values[i])) != 0;
        if (so) {
            bad |= j_set(so, "l", l) != 0;
            if (mt->type == GS_METRIC_COUNTER) {
                bad |= j_set(so, "v", j_u64(s->count)) != 0;
            } else if (mt->type == GS_METRIC_GAUGE) {
                bad |= j_set(so, "v", j_double(s->gauge)) != 0;
            } else {
                json_t *bc = json_array();
                for (size_t i = 0; bc && i <= mt->n_buckets; i++)
                    bad |= j_push(bc, j_u64(s->buckets[i])) != 0;
                bad |= j_set(so, "b", bc) != 0;
                bad |= j_set(so, "sum", j_double(s->sum)) != 0;
                bad |= j_set(so, "count", j_u64(s->count)) != 0;
            }
        } else {
            json_decref(l);
        }
        bad |= j_push(series, so) != 0;
    }
    bad |= j_set(o, "labels", labels) != 0;
    bad |= j_set(o, "series", series) != 0;
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int gs_metrics_snapshot(const gs_metrics *m, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    json_t *root = json_object(), *arr = json_array();
    int bad = !root || !arr;
    for (const gs_metric *mt = m->head; arr && mt; mt = mt->next)
        bad |= j_push(arr, snap_metric(mt)) != 0;
    if (root) {
        bad |= j_set(root, "v", json_integer(1)) != 0;
        bad |= j_set(root, "metrics", arr) != 0;
    } else {
        json_decref(arr);
    }
    char *s = bad ? NULL : json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(root);
    if (!s)
        return GS_ENOMEM;
    *out = s;
    *len = strlen(s);
    return 0;
}

/* Reads one metric of a snapshot into scratch (a fresh registry): the
 * definition is checked by gs_metrics_register, the values here. */
static int load_metric(gs_metrics *scratch, const json_t *jm, size_t idx, gs_diag *d)
{
    gs_metric_desc desc = {0};
    double bounds[GS_METRICS_MAX_BUCKETS];
    desc.name = json_string_value(json_object_get(jm, "name"));
    desc.help = json_string_value(json_object_get(jm, "help"));
    const char *type = json_string_value(json_object_get(jm, "type"));
    const char *merge = json_string_value(json_object_get(jm, "merge"));
    const json_t *labels = json_object_get(jm, "labels"), *series = json_object_get(jm, "series");
    if (!desc.name || !desc.help || !type || !merge || !json_is_array(labels) ||
        !json_is_array(series))
        return gs_diag_set(d, GS_EFORMAT, "metrics snapshot: metric %zu lacks a field", idx);
    const char *nm = desc.name;
    int t = -1;
    for (int i = 0; i < 3; i++)
        if (strcmp(type, type_name[i]) == 0)
            t = i;
    if (t < 0 || (strcmp(merge, "sum") != 0 && strcmp(merge, "max") != 0))
        return gs_diag_set(d, GS_EFORMAT, "metrics snapshot: %.64s: bad type or merge", nm);
    desc.type = (gs_metric_type)t;
    desc.merge = strcmp(merge, "max") == 0 ? GS_METRIC_MERGE_MAX : GS_METRIC_MERGE_SUM;
    if (json_array_size(labels) > GS_METRICS_MAX_LABELS)
        return gs_diag_set(d, GS_EFORMAT, "metrics snapshot: %.64s: too many labels", nm);
    desc.n_labels = json_array_size(labels);
    for (size_t i = 0; i < desc.n_labels; i++)
        if (!(desc.labels[i] = json_string_value(json_array_get(labels, i))))
            return gs_diag_set(d, GS_EFORMAT, "metrics snapshot: %.64s: bad label", nm);
    if (desc.type == GS_METRIC_HISTOGRAM) {
        const json_t *bk = json_object_get(jm, "buckets");
        if (!json_is_array(bk) || json_array_size(bk) > GS_METRICS_MAX_BUCKETS)
            return gs_diag_set(d, GS_EFORMAT, "metrics snapshot: %.64s: bad buckets", nm);
        desc.n_buckets = json_array_size(bk);
        for (size_t i = 0; i < desc.n_buckets; i++) {
            if (!json_is_number(json_array_get(bk, i)))
                return gs_diag_set(d, GS_EFORMAT, "metrics snapshot: %.64s: bad bucket", nm);
            bounds[i] = json_number_value(json_array_get(bk, i));
        }
        desc.buckets = bounds;
    }
    gs_metric *mt;
    gs_diag rd;
    int rc = gs_metrics_register(scratch, &desc, &mt, &rd);
    if (rc != 0)
        return gs_diag_set(d, rc == GS_ENOMEM ? rc : GS_EFORMAT, "metrics snapshot: %s", rd.msg);
    for (size_t k = 0; k < json_array_size(series); k++) {
        const json_t *js = json_array_get(series, k), *l = json_object_get(js, "l");
        const char *vals[GS_METRICS_MAX_LABELS] = {0};
        if (!json_is_array(l) || json_array_size(l) != mt->n_labels)
            return gs_diag_set(d, GS_EFORMAT, "metrics snapshot: %.64s: series %zu labels", nm, k);
        for (size_t i = 0; i < mt->n_labels; i++)
            vals[i] = json_string_value(json_array_get(l, i));
        gs_metric_series *s;
        rc = gs_metrics_series(scratch, mt, vals, &s);
        if (rc != 0)
            return gs_diag_set(d, rc == GS_ENOMEM ? rc : GS_EFORMAT,
                               "metrics snapshot: %.64s: series %zu: %s", nm, k, gs_strerror(rc));
        int bad = 0;
        if (mt->type == GS_METRIC_COUNTER) {
            uint64_t v = 0;
            bad = j_get_u64(json_object_get(js, "v"), &v) != 0;
            s->count += v;
        } else if (mt->type == GS_METRIC_GAUGE) {
            double v = 0;
            bad = j_get_double(json_object_get(js, "v"), &v) != 0;
            s->gauge = v; /* a repeated series in one snapshot: last wins */
            s->fresh = 0;
        } else {
            const json_t *bc = json_object_get(js, "b");
            uint64_t c = 0, total = 0;
            double sum = 0;
            bad = !json_is_array(bc) || json_array_size(bc) != mt->n_buckets + 1 ||
                  j_get_u64(json_object_get(js, "count"), &c) != 0 ||
                  j_get_double(json_object_get(js, "sum"), &sum) != 0;
            for (size_t i = 0; !bad && i <= mt->n_buckets; i++) {
                uint64_t x = 0;
                bad = j_get_u64(json_array_get(bc, i), &x) != 0;
                s->buckets[i] += x;
                total += x;
            }
            bad |= total != c;
            s->count += c;
            s->sum += sum;
        }
        if (bad)
            return gs_diag_set(d, GS_EFORMAT, "metrics snapshot: %.64s: series %zu: bad values", nm,
                               k);
    }
    return 0;
}

static int same_def(const gs_metric *a, const gs_metric *b)
{
    if (a->type != b->type || a->merge != b->merge || a->n_labels != b->n_labels ||
        a->n_buckets != b->n_buckets)
        return 0;
    for (size_t i = 0; i < a->n_labels; i++)
        if (strcmp(a->labels[i], b->labels[i]) != 0)
            return 0;
    for (size_t i = 0; i < a->n_buckets; i++)
        if (a->bounds[i] != b->bounds[i])
            return 0;
    return 1;
}

static int merge_metric(gs_metrics *dst, const gs_metric *src)
{
    gs_metric *mt = gs_metrics_find(dst, src->name);
    if (!mt) {
        gs_metric_desc desc = {.name = src->name,
                               .help = src->help,
                               .type = src->type,
                               .merge = src->merge,
                               .n_labels = src->n_labels,
                               .buckets = src->bounds,
                               .n_buckets = src->n_buckets};
        for (size_t i = 0; i < src->n_labels; i++)
            desc.labels[i] = src->labels[i];
        int rc = gs_metrics_register(dst, &desc, &mt, NULL);
        if (rc != 0)
            return rc;
    }
    for (const gs_metric_series *s = src->head; s; s = s->next) {
        gs_metric_series *t;
        int rc = gs_metrics_series(dst, mt, (const char *const *)s->values, &t);
        if (rc != 0)
            return rc;
        if (mt->type == GS_METRIC_GAUGE) {
            if (mt->merge == GS_METRIC_MERGE_MAX)
                t->gauge = t->fresh ? s->gauge : fmax(t->gauge, s->gauge);
            else
                t->gauge += s->gauge;
            t->fresh = 0;
        } else {
            t->count += s->count;
            t->sum += s->sum;
            for (size_t i = 0; t->buckets && i <= mt->n_buckets; i++)
                t->buckets[i] += s->buckets[i];
        }
    }
    return 0;
}

int gs_metrics_merge_snapshot(gs_metrics *dst, const char *json, size_t len, gs_diag *d)
{
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    if (!root)
        return gs_diag_set(d, GS_EFORMAT, "metrics snapshot: JSON error at %d: %s", je.position,
                           je.text);
    gs_metrics *scratch = NULL;
    int rc = gs_metrics_new(&scratch);
    if (rc != 0) {
        json_decref(root);
        return gs_diag_set(d, rc, "metrics snapshot: out of memory");
    }
    const json_t *arr = json_object_get(root, "metrics");
    if (json_integer_value(json_object_get(root, "v")) != 1 || !json_is_array(arr))
        rc = gs_diag_set(d, GS_EFORMAT, "metrics snapshot: not a version 1 snapshot");
    for (size_t i = 0; rc == 0 && i < json_array_size(arr); i++)
        rc = load_metric(scratch, json_array_get(arr, i), i, d);
    json_decref(root);
    for (const gs_metric *s = scratch->head; rc == 0 && s; s = s->next) {
        const gs_metric *t = gs_metrics_find(dst, s->name);
        if (t && !same_def(t, s))
            rc = gs_diag_set(d, GS_EFORMAT,
                             "metrics snapshot: %.64s: type, labels, buckets or merge differ",
                             s->name);
    }
    for (const gs_metric *s = scratch->head; rc == 0 && s; s = s->next) {
        rc = merge_metric(dst, s);
        if (rc != 0)
            gs_diag_set(d, rc, "metrics snapshot: %.64s: %s", s->name, gs_strerror(rc));
    }
    gs_metrics_free(scratch);
    return rc;
}
