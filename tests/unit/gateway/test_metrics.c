/* test_metrics.c - exact Prometheus text, escaping, cumulative buckets,
 * and snapshots merged across registries (gateway/metrics). */
#include "gateway/metrics.h"
#include "test.h"

static const double ttft_bounds[] = {0.125, 0.5, 1};

/* A registry as a gateway would have it: requests by route and status, a
 * gauge, a histogram by route. */
static gs_metrics *mk_registry(gs_metric **req, gs_metric **open, gs_metric **ttft)
{
    gs_metrics *m = NULL;
    if (gs_metrics_new(&m) != 0)
        return NULL;
    gs_metric_desc dreq = {.name = "glmserve:requests_total",
                           .help = "Requests answered.",
                           .type = GS_METRIC_COUNTER,
                           .labels = {"route", "status"},
                           .n_labels = 2};
    gs_metric_desc dopen = {
        .name = "glmserve:streams_open", .help = "Streams in flight.", .type = GS_METRIC_GAUGE};
    gs_metric_desc dttft = {.name = "glmserve:request_ttft_seconds",
                            .help = "Time to first token.",
                            .type = GS_METRIC_HISTOGRAM,
                            .labels = {"route"},
                            .n_labels = 1,
                            .buckets = ttft_bounds,
                            .n_buckets = 3};
    gs_diag d;
    if (gs_metrics_register(m, &dreq, req, &d) != 0 || gs_metrics_register(m, &dopen, open, &d) ||
        gs_metrics_register(m, &dttft, ttft, &d) != 0) {
        fprintf(stderr, "register: %s\n", d.msg);
        gs_metrics_free(m);
        return NULL;
    }
    return m;
}

static gs_metric_series *series2(gs_metrics *m, gs_metric *mt, const char *a, const char *b)
{
    const char *v[] = {a, b};
    gs_metric_series *s = NULL;
    gs_metrics_series(m, mt, v, &s);
    return s;
}

static char *render(const gs_metrics *m)
{
    char *out = NULL;
    size_t n = 0;
    if (gs_metrics_render(m, &out, &n) != 0)
        return NULL;
    if (strlen(out) != n) {
        free(out);
        return NULL;
    }
    return out;
}

static void test_text_exact(void)
{
    gs_metric *req, *open, *ttft;
    gs_metrics *m = mk_registry(&req, &open, &ttft);
    GS_ASSERT(m);
    gs_metrics_inc(series2(m, req, "/v1/chat/completions", "200"), 3);
    gs_metrics_inc(series2(m, req, "/v1/models", "401"), 1);
    gs_metrics_inc(series2(m, req, "/v1/chat/completions", "200"), 2); /* same series */
    gs_metric_series *o;
    GS_ASSERT_OK(gs_metrics_series(m, open, NULL, &o));
    gs_metrics_set(o, 4);
    gs_metrics_add(o, -1.5);
    gs_metric_series *t = series2(m, ttft, "/v1/chat/completions", NULL);
    GS_ASSERT(t);
    /* 0.125 lands in le="0.125" (le is inclusive); 5 only in +Inf */
    gs_metrics_observe(t, 0.0625);
    gs_metrics_observe(t, 0.125);
    gs_metrics_observe(t, 0.375);
    gs_metrics_observe(t, 5);
    gs_metrics_observe(t, NAN); /* ignored */
    /* wrong-type updates do nothing */
    gs_metrics_observe(o, 1);
    gs_metrics_inc(t, 7);
    char *txt = render(m);
    GS_ASSERT(txt);
    const char *want =
        "# HELP glmserve:requests_total Requests answered.\n"
        "# TYPE glmserve:requests_total counter\n"
        "glmserve:requests_total{route=\"/v1/chat/completions\",status=\"200\"} 5\n"
        "glmserve:requests_total{route=\"/v1/models\",status=\"401\"} 1\n"
        "# HELP glmserve:streams_open Streams in flight.\n"
        "# TYPE glmserve:streams_open gauge\n"
        "glmserve:streams_open 2.5\n"
        "# HELP glmserve:request_ttft_seconds Time to first token.\n"
        "# TYPE glmserve:request_ttft_seconds histogram\n"
        "glmserve:request_ttft_seconds_bucket{route=\"/v1/chat/completions\",le=\"0.125\"} 2\n"
        "glmserve:request_ttft_seconds_bucket{route=\"/v1/chat/completions\",le=\"0.5\"} 3\n"
        "glmserve:request_ttft_seconds_bucket{route=\"/v1/chat/completions\",le=\"1\"} 3\n"
        "glmserve:request_ttft_seconds_bucket{route=\"/v1/chat/completions\",le=\"+Inf\"} 4\n"
        "glmserve:request_ttft_seconds_sum{route=\"/v1/chat/completions\"} 5.5625\n"
        "glmserve:request_ttft_seconds_count{route=\"/v1/chat/completions\"} 4\n";
    GS_ASSERT_STREQ(txt, want);
    free(txt);
    gs_metrics_free(m);
}

static void test_escaping_and_numbers(void)
{
    gs_metrics *m = NULL;
    GS_ASSERT_OK(gs_metrics_new(&m));
    gs_metric_desc dc = {.name = "x_total",
                         .help = "Help with \\ and \"quotes\"\nand a newline.",
                         .type = GS_METRIC_COUNTER,
                         .labels = {"v"},
                         .n_labels = 1};
    gs_metric_desc dg = {
        .name = "g", .help = "", .type = GS_METRIC_GAUGE, .labels = {"k"}, .n_labels = 1};
    gs_metric_desc dh = {.name = "h",
                         .help = "h",
                         .type = GS_METRIC_HISTOGRAM,
                         .buckets = (const double[]){0.005, 2.5, 1e9},
                         .n_buckets = 3};
    gs_metric *c, *g, *h;
    GS_ASSERT_OK(gs_metrics_register(m, &dc, &c, NULL));
    GS_ASSERT_OK(gs_metrics_register(m, &dg, &g, NULL));
    GS_ASSERT_OK(gs_metrics_register(m, &dh, &h, NULL));
    gs_metric_series *s;
    const char *v1[] = {"a\\b\"c\nd"};
    GS_ASSERT_OK(gs_metrics_series(m, c, v1, &s));
    gs_metrics_inc(s, 18446744073709551615ull);
    const char *k1[] = {"tenth"}, *k2[] = {"inf"}, *k3[] = {"nan"}, *k4[] = {"big"};
    GS_ASSERT_OK(gs_metrics_series(m, g, k1, &s));
    gs_metrics_set(s, 0.1);
    GS_ASSERT_OK(gs_metrics_series(m, g, k2, &s));
    gs_metrics_set(s, -INFINITY);
    GS_ASSERT_OK(gs_metrics_series(m, g, k3, &s));
    gs_metrics_set(s, NAN);
    GS_ASSERT_OK(gs_metrics_series(m, g, k4, &s));
    gs_metrics_set(s, 1e21);
    char *txt = render(m);
    GS_ASSERT(txt);
    const char *want = "# HELP x_total Help with \\\\ and \"quotes\"\\nand a newline.\n"
                       "# TYPE x_total counter\n"
                       "x_total{v=\"a\\\\b\\\"c\\nd\"} 18446744073709551615\n"
                       "# HELP g \n"
                       "# TYPE g gauge\n"
                       "g{k=\"tenth\"} 0.1\n"
                       "g{k=\"inf\"} -Inf\n"
                       "g{k=\"nan\"} NaN\n"
                       "g{k=\"big\"} 1e+21\n"
                       "# HELP h h\n"
                       "# TYPE h histogram\n"
                       "h_bucket{le=\"0.005\"} 0\n"
                       "h_bucket{le=\"2.5\"} 0\n"
                       "h_bucket{le=\"1000000000\"} 0\n"
                       "h_bucket{le=\"+Inf\"} 0\n"
                       "h_sum 0\n"
                       "h_count 0\n";
    GS_ASSERT_STREQ(txt, want);
    free(txt);
    gs_metrics_free(m);
}

static void test_register_errors(void)
{
    gs_metrics *m = NULL;
    GS_ASSERT_OK(gs_metrics_new(&m));
    gs_diag d;
    gs_metric_desc ok = {.name = "a:b_c", .help = "x", .type = GS_METRIC_COUNTER};
    GS_ASSERT_OK(gs_metrics_register(m, &ok, NULL, &d));
    GS_ASSERT_EQ(gs_metrics_register(m, &ok, NULL, &d), GS_EINVAL);
    GS_ASSERT_STREQ(d.msg, "metric a:b_c: registered twice");
    gs_metric_desc bad = {.name = "9lives", .type = GS_METRIC_COUNTER};
    GS_ASSERT_EQ(gs_metrics_register(m, &bad, NULL, &d), GS_EINVAL);
    GS_ASSERT_STREQ(d.msg, "metric \"9lives\": invalid name");
    gs_metric_desc le = {.name = "h",
                         .type = GS_METRIC_HISTOGRAM,
                         .labels = {"le"},
                         .n_labels = 1,
                         .buckets = ttft_bounds,
                         .n_buckets = 3};
    GS_ASSERT_EQ(gs_metrics_register(m, &le, NULL, &d), GS_EINVAL);
    GS_ASSERT_STREQ(d.msg, "metric h: label \"le\" is reserved");
    gs_metric_desc lab = {.name = "c", .type = GS_METRIC_COUNTER, .labels = {"a:b"}, .n_labels = 1};
    GS_ASSERT_EQ(gs_metrics_register(m, &lab, NULL, &d), GS_EINVAL);
    GS_ASSERT_STREQ(d.msg, "metric c: invalid label name 0");
    static const double dec[] = {1, 0.5};
    gs_metric_desc hb = {.name = "h", .type = GS_METRIC_HISTOGRAM, .buckets = dec, .n_buckets = 2};
    GS_ASSERT_EQ(gs_metrics_register(m, &hb, NULL, &d), GS_EINVAL);
    GS_ASSERT_STREQ(d.msg, "metric h: bucket 1 not finite or not increasing");
    /* series limits */
    gs_metric_desc dl = {.name = "l", .type = GS_METRIC_COUNTER, .labels = {"v"}, .n_labels = 1};
    gs_metric *mt;
    GS_ASSERT_OK(gs_metrics_register(m, &dl, &mt, &d));
    gs_metric_series *s;
    const char *null_v[] = {NULL};
    GS_ASSERT_EQ(gs_metrics_series(m, mt, null_v, &s), GS_EINVAL);
    char longv[300];
    memset(longv, 'x', sizeof longv - 1);
    longv[sizeof longv - 1] = '\0';
    const char *lv[] = {longv};
    GS_ASSERT_EQ(gs_metrics_series(m, mt, lv, &s), GS_ETOOBIG);
    char buf[16];
    const char *bv[] = {buf};
    for (int i = 0; i < GS_METRICS_MAX_SERIES; i++) {
        snprintf(buf, sizeof buf, "%d", i);
        GS_ASSERT_OK(gs_metrics_series(m, mt, bv, &s));
    }
    snprintf(buf, sizeof buf, "new");
    GS_ASSERT_EQ(gs_metrics_series(m, mt, bv, &s), GS_ETOOBIG);
    snprintf(buf, sizeof buf, "7");
    GS_ASSERT_OK(gs_metrics_series(m, mt, bv, &s)); /* existing ones still found */
    GS_ASSERT(gs_metrics_find(m, "l") == mt);
    GS_ASSERT(gs_metrics_find(m, "nope") == NULL);
    gs_metrics_free(m);
}

/* Two gateways' snapshots merged into a fresh registry: counters and
 * histograms summed, gauges summed or maxed. */
static void test_merge(void)
{
    gs_metric *req, *open, *ttft;
    gs_metrics *a = mk_registry(&req, &open, &ttft);
    GS_ASSERT(a);
    gs_metric_desc dmax = {.name = "glmserve:queue_max",
                           .help = "Deepest queue.",
                           .type = GS_METRIC_GAUGE,
                           .merge = GS_METRIC_MERGE_MAX,
                           .labels = {"worker"},
                           .n_labels = 1};
    gs_metric *qa;
    GS_ASSERT_OK(gs_metrics_register(a, &dmax, &qa, NULL));
    gs_metrics_inc(series2(a, req, "/v1/models", "200"), 4);
    gs_metric_series *s;
    GS_ASSERT_OK(gs_metrics_series(a, open, NULL, &s));
    gs_metrics_set(s, 2);
    gs_metrics_observe(series2(a, ttft, "/chat", NULL), 0.25);
    gs_metrics_set(series2(a, qa, "w0", NULL), -3);
    gs_metrics_set(series2(a, qa, "w1", NULL), 7);

    gs_metric *req_b, *open_b, *ttft_b;
    gs_metrics *b = mk_registry(&req_b, &open_b, &ttft_b);
    GS_ASSERT(b);
    gs_metric *qb;
    GS_ASSERT_OK(gs_metrics_register(b, &dmax, &qb, NULL));
    gs_metrics_inc(series2(b, req_b, "/v1/models", "200"), 6);
    gs_metrics_inc(series2(b, req_b, "/v1/chat/completions", "429"), 1);
    GS_ASSERT_OK(gs_metrics_series(b, open_b, NULL, &s));
    gs_metrics_set(s, 3);
    gs_metrics_observe(series2(b, ttft_b, "/chat", NULL), 0.75);
    gs_metrics_observe(series2(b, ttft_b, "/chat", NULL), 2);
    gs_metrics_set(series2(b, qb, "w0", NULL), -5);
    gs_metrics_set(series2(b, qb, "w1", NULL), 4);

    char *sa, *sb;
    size_t na, nb;
    GS_ASSERT_OK(gs_metrics_snapshot(a, &sa, &na));
    GS_ASSERT_OK(gs_metrics_snapshot(b, &sb, &nb));
    GS_ASSERT_EQ(strlen(sa), na);

    gs_metrics *all = NULL;
    GS_ASSERT_OK(gs_metrics_new(&all));
    gs_diag d;
    GS_ASSERT_OK(gs_metrics_merge_snapshot(all, sa, na, &d));
    /* merged alone, a snapshot renders exactly as its registry does */
    char *ta = render(a), *tall = render(all);
    GS_ASSERT(ta && tall);
    GS_ASSERT_STREQ(tall, ta);
    free(ta);
    free(tall);
    GS_ASSERT_OK(gs_metrics_merge_snapshot(all, sb, nb, &d));
    tall = render(all);
    GS_ASSERT(tall);
    const char *want = "# HELP glmserve:requests_total Requests answered.\n"
                       "# TYPE glmserve:requests_total counter\n"
                       "glmserve:requests_total{route=\"/v1/models\",status=\"200\"} 10\n"
                       "glmserve:requests_total{route=\"/v1/chat/completions\",status=\"429\"} 1\n"
                       "# HELP glmserve:streams_open Streams in flight.\n"
                       "# TYPE glmserve:streams_open gauge\n"
                       "glmserve:streams_open 5\n"
                       "# HELP glmserve:request_ttft_seconds Time to first token.\n"
                       "# TYPE glmserve:request_ttft_seconds histogram\n"
                       "glmserve:request_ttft_seconds_bucket{route=\"/chat\",le=\"0.125\"} 0\n"
                       "glmserve:request_ttft_seconds_bucket{route=\"/chat\",le=\"0.5\"} 1\n"
                       "glmserve:request_ttft_seconds_bucket{route=\"/chat\",le=\"1\"} 2\n"
                       "glmserve:request_ttft_seconds_bucket{route=\"/chat\",le=\"+Inf\"} 3\n"
                       "glmserve:request_ttft_seconds_sum{route=\"/chat\"} 3\n"
                       "glmserve:request_ttft_seconds_count{route=\"/chat\"} 3\n"
                       "# HELP glmserve:queue_max Deepest queue.\n"
                       "# TYPE glmserve:queue_max gauge\n"
                       "glmserve:queue_max{worker=\"w0\"} -3\n"
                       "glmserve:queue_max{worker=\"w1\"} 7\n";
    GS_ASSERT_STREQ(tall, want);

    /* an incompatible definition is refused and changes nothing */
    gs_metrics *c = NULL;
    GS_ASSERT_OK(gs_metrics_new(&c));
    gs_metric_desc other = {.name = "aaa_total", .type = GS_METRIC_COUNTER};
    gs_metric_desc clash = {.name = "glmserve:streams_open", .type = GS_METRIC_COUNTER};
    gs_metric *m1, *m2;
    GS_ASSERT_OK(gs_metrics_register(c, &other, &m1, NULL));
    GS_ASSERT_OK(gs_metrics_register(c, &clash, &m2, NULL));
    GS_ASSERT_OK(gs_metrics_series(c, m1, NULL, &s));
    gs_metrics_inc(s, 1);
    char *sc;
    size_t nc;
    GS_ASSERT_OK(gs_metrics_snapshot(c, &sc, &nc));
    GS_ASSERT_EQ(gs_metrics_merge_snapshot(all, sc, nc, &d), GS_EFORMAT);
    GS_ASSERT_STREQ(
        d.msg, "metrics snapshot: glmserve:streams_open: type, labels, buckets or merge differ");
    char *tafter = render(all);
    GS_ASSERT(tafter);
    GS_ASSERT_STREQ(tafter, want);
    free(tafter);
    free(sc);
    gs_metrics_free(c);

    /* malformed snapshots */
    GS_ASSERT_EQ(gs_metrics_merge_snapshot(all, "{", 1, &d), GS_EFORMAT);
    const char *v2 = "{\"v\":2,\"metrics\":[]}";
    GS_ASSERT_EQ(gs_metrics_merge_snapshot(all, v2, strlen(v2), &d), GS_EFORMAT);
    GS_ASSERT_STREQ(d.msg, "metrics snapshot: not a version 1 snapshot");
    const char *badh =
        "{\"v\":1,\"metrics\":[{\"name\":\"h2\",\"help\":\"\",\"type\":\"histogram\","
        "\"merge\":\"sum\",\"labels\":[],\"buckets\":[1],"
        "\"series\":[{\"l\":[],\"b\":[1,1],\"sum\":1,\"count\":3}]}]}";
    GS_ASSERT_EQ(gs_metrics_merge_snapshot(all, badh, strlen(badh), &d), GS_EFORMAT);
    GS_ASSERT_STREQ(d.msg, "metrics snapshot: h2: series 0: bad values");
    tafter = render(all);
    GS_ASSERT(tafter);
    GS_ASSERT_STREQ(tafter, want);
    free(tafter);

    free(tall);
    free(sa);
    free(sb);
    gs_metrics_free(a);
    gs_metrics_free(b);
    gs_metrics_free(all);
    gs_metrics_free(NULL);
}

/* Non-finite values and counters above INT64_MAX survive a snapshot. */
static void test_snapshot_roundtrip(void)
{
    gs_metrics *m = NULL;
    GS_ASSERT_OK(gs_metrics_new(&m));
    gs_metric_desc dg = {.name = "g",
                         .help = "a \"gauge\"",
                         .type = GS_METRIC_GAUGE,
                         .labels = {"k"},
                         .n_labels = 1};
    gs_metric_desc dc = {.name = "c", .type = GS_METRIC_COUNTER};
    gs_metric *g, *c;
    GS_ASSERT_OK(gs_metrics_register(m, &dg, &g, NULL));
    GS_ASSERT_OK(gs_metrics_register(m, &dc, &c, NULL));
    gs_metric_series *s;
    const char *k1[] = {"inf"}, *k2[] = {"nan"}, *k3[] = {"third"};
    GS_ASSERT_OK(gs_metrics_series(m, g, k1, &s));
    gs_metrics_set(s, INFINITY);
    GS_ASSERT_OK(gs_metrics_series(m, g, k2, &s));
    gs_metrics_set(s, NAN);
    GS_ASSERT_OK(gs_metrics_series(m, g, k3, &s));
    gs_metrics_set(s, 1.0 / 3);
    GS_ASSERT_OK(gs_metrics_series(m, c, NULL, &s));
    gs_metrics_inc(s, 18446744073709551000ull);
    char *snap;
    size_t n;
    GS_ASSERT_OK(gs_metrics_snapshot(m, &snap, &n));
    gs_metrics *r = NULL;
    GS_ASSERT_OK(gs_metrics_new(&r));
    gs_diag d;
    GS_ASSERT_MSG(gs_metrics_merge_snapshot(r, snap, n, &d) == 0, "%s", d.msg);
    char *t1 = render(m), *t2 = render(r);
    GS_ASSERT(t1 && t2);
    GS_ASSERT_STREQ(t2, t1);
    GS_ASSERT(strstr(t1, "g{k=\"third\"} 0.3333333333333333\n") != NULL);
    free(t1);
    free(t2);
    free(snap);
    gs_metrics_free(m);
    gs_metrics_free(r);
}

int main(void)
{
    GS_RUN(test_text_exact);
    GS_RUN(test_escaping_and_numbers);
    GS_RUN(test_register_errors);
    GS_RUN(test_merge);
    GS_RUN(test_snapshot_roundtrip);
    return gs_test_summary();
}
