/* test_dialer.c - worker/dialer.c over real tcp:// connections to three
 * "gateways" (listeners on 127.0.0.1), with a scripted resolver standing
 * in for DNS: every address of a name is dialed; an address that leaves
 * the answer is drained (retire) and closed only once its jobs are done,
 * and taken back if it returns first; a new address is dialed; a failed
 * answer changes nothing; a dropped connection is redialed and the name
 * resolved again within about a second, not after the full interval. */
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/ipc_conn.h"
#include "test.h"
#include "thread_probe.h"
#include "worker/dialer.h"

#define NG 3

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

/* ---- the gateways: listeners counting what they see ------------------------ */

typedef struct {
    gs_ipc_listener *l;
    int port;
    int n_open, n_close;
    gs_ipc_conn *conn[16]; /* accepted (one reference each) */
} gateway;

static gateway gws[NG];

static void gw_open(gs_ipc_conn *c, void *user)
{
    gateway *g = user;
    pthread_mutex_lock(&mu);
    if (g->n_open < 16)
        g->conn[g->n_open] = c;
    else
        gs_ipc_conn_unref(c);
    g->n_open++;
    pthread_mutex_unlock(&mu);
}

static void gw_frame(gs_ipc_conn *c, const gs_ipc_header *h, const uint8_t *b, void *user)
{
    (void)c, (void)h, (void)b, (void)user;
}

static void gw_close(gs_ipc_conn *c, int err, void *user)
{
    gateway *g = user;
    (void)c, (void)err;
    pthread_mutex_lock(&mu);
    g->n_close++;
    pthread_mutex_unlock(&mu);
}

/* ---- the worker's side: what the dialer hands the server ------------------- */

static int w_open, w_close, busy_jobs;
static int retired_on[NG], retired_off[NG];
static gs_ipc_conn *w_conns[64];
static int n_w_conns;

static int gw_of(gs_ipc_conn *c)
{
    const char *peer = gs_ipc_conn_peer(c);
    const char *colon = strrchr(peer, ':');
    int port = colon ? atoi(colon + 1) : -1;
    for (int i = 0; i < NG; i++)
        if (gws[i].port == port)
            return i;
    return -1;
}

static void w_on_open(gs_ipc_conn *c, void *user)
{
    (void)user;
    pthread_mutex_lock(&mu);
    w_open++;
    if (n_w_conns < 64)
        w_conns[n_w_conns++] = c;
    else
        gs_ipc_conn_unref(c);
    pthread_mutex_unlock(&mu);
}

static void w_on_frame(gs_ipc_conn *c, const gs_ipc_header *h, const uint8_t *b, void *user)
{
    (void)c, (void)h, (void)b, (void)user;
}

static void w_on_close(gs_ipc_conn *c, int err, void *user)
{
    (void)c, (void)err, (void)user;
    pthread_mutex_lock(&mu);
    w_close++;
    pthread_mutex_unlock(&mu);
}

static void w_retire(gs_ipc_conn *c, int on, void *user)
{
    (void)user;
    int g = gw_of(c);
    pthread_mutex_lock(&mu);
    if (g >= 0)
        (on ? retired_on : retired_off)[g]++;
    pthread_mutex_unlock(&mu);
}

static int w_busy(gs_ipc_conn *c, void *user)
{
    (void)c, (void)user;
    pthread_mutex_lock(&mu);
    int n = busy_jobs;
    pthread_mutex_unlock(&mu);
    return n;
}

/* ---- DNS, scripted ------------------------------------------------------------ */

static int answer[NG]; /* which gateways the name has now */
static int answer_fails, n_resolves;

static int fake_resolve(const char *url, gs_addr_set *out, gs_diag *d)
{
    (void)url;
    pthread_mutex_lock(&mu);
    n_resolves++;
    out->n = 0;
    int fail = answer_fails;
    for (int i = 0; i < NG && !fail; i++)
        if (answer[i])
            snprintf(out->url[out->n++], GS_URL_MAX, "tcp://127.0.0.1:%d", gws[i].port);
    pthread_mutex_unlock(&mu);
    gs_diag_clear(d);
    return fail ? gs_diag_set(d, GS_ENOENT, "cannot resolve 'gateways': no address") : 0;
}

static void set_answer(int a0, int a1, int a2)
{
    pthread_mutex_lock(&mu);
    answer[0] = a0, answer[1] = a1, answer[2] = a2;
    pthread_mutex_unlock(&mu);
}

static int get(const int *field)
{
    pthread_mutex_lock(&mu);
    int v = *field;
    pthread_mutex_unlock(&mu);
    return v;
}

/* Waits until *field == want (10 s at most). */
static int wait_eq(const int *field, int want)
{
    for (int i = 0; i < 1000; i++) {
        if (get(field) == want)
            return 1;
        usleep(10000);
    }
    return 0;
}

static int wait_connected(gs_dialer *dl, int want)
{
    for (int i = 0; i < 1000; i++) {
        if (gs_dialer_connected(dl) == want)
            return 1;
        usleep(10000);
    }
    return 0;
}

static void setup(void)
{
    memset(gws, 0, sizeof gws);
    w_open = w_close = busy_jobs = n_w_conns = 0;
    answer_fails = n_resolves = 0;
    memset(retired_on, 0, sizeof retired_on);
    memset(retired_off, 0, sizeof retired_off);
    for (int i = 0; i < NG; i++) {
        gs_ipc_conn_cbs cbs = {&gws[i], gw_open, gw_frame, gw_close, 0};
        gs_diag d;
        if (gs_ipc_listen("tcp://127.0.0.1:0", &cbs, &gws[i].l, &d))
            fprintf(stderr, "listen: %s\n", d.msg);
        gws[i].port = gs_ipc_listener_port(gws[i].l);
    }
}

/* What a server does at exit: stop dialing, close its connections, free. */
static void teardown(gs_dialer *dl)
{
    gs_dialer_stop(dl);
    pthread_mutex_lock(&mu);
    int n = n_w_conns;
    n_w_conns = 0;
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < n; i++) {
        gs_ipc_conn_close(w_conns[i]);
        gs_ipc_conn_unref(w_conns[i]);
    }
    gs_dialer_free(dl);
    for (int i = 0; i < NG; i++) {
        gs_ipc_listener_close(gws[i].l);
        for (int k = 0; k < gws[i].n_open && k < 16; k++) {
            gs_ipc_conn_close(gws[i].conn[k]);
            gs_ipc_conn_unref(gws[i].conn[k]);
        }
    }
}

static gs_dialer *start_n(int interval_ms, int n_urls)
{
    static const char *urls[] = {"tcp://gateways.test:7500", "tcp://gateways-too.test:7500"};
    gs_dialer_params p = {0};
    p.urls = urls;
    p.n_urls = n_urls;
    p.resolve_interval_ms = interval_ms;
    p.cbs = (gs_ipc_conn_cbs){NULL, w_on_open, w_on_frame, w_on_close, 0};
    p.retire = w_retire;
    p.busy = w_busy;
    p.resolve = fake_resolve;
    gs_dialer *dl = NULL;
    gs_diag d;
    if (gs_dialer_new(&p, &dl, &d))
        fprintf(stderr, "gs_dialer_new: %s\n", d.msg);
    return dl;
}

static gs_dialer *start(int interval_ms)
{
    return start_n(interval_ms, 1);
}

static void test_every_address_is_dialed_and_dns_is_followed(void)
{
    setup();
    set_answer(1, 1, 0);
    gs_dialer *dl = start(100);
    GS_ASSERT(dl);
    GS_ASSERT(wait_connected(dl, 2));
    GS_ASSERT(wait_eq(&gws[0].n_open, 1) && wait_eq(&gws[1].n_open, 1));
    GS_ASSERT_EQ(get(&gws[2].n_open), 0);

    /* gateway 0 leaves DNS with a job on it, gateway 2 joins */
    pthread_mutex_lock(&mu);
    busy_jobs = 1;
    pthread_mutex_unlock(&mu);
    set_answer(0, 1, 1);
    GS_ASSERT(wait_eq(&retired_on[0], 1));
    GS_ASSERT(wait_eq(&gws[2].n_open, 1));
    usleep(500000); /* several resolutions and busy polls later: still open */
    GS_ASSERT_EQ(get(&gws[0].n_close), 0);
    GS_ASSERT_EQ(gs_dialer_connected(dl), 3);

    /* its job is done: closed, and not redialed */
    pthread_mutex_lock(&mu);
    busy_jobs = 0;
    pthread_mutex_unlock(&mu);
    GS_ASSERT(wait_eq(&gws[0].n_close, 1));
    GS_ASSERT(wait_connected(dl, 2));
    usleep(400000);
    GS_ASSERT_EQ(get(&gws[0].n_open), 1);
    GS_ASSERT_EQ(get(&w_close), 1);

    /* DNS fails: nothing changes */
    pthread_mutex_lock(&mu);
    answer_fails = 1;
    int before = n_resolves;
    pthread_mutex_unlock(&mu);
    usleep(700000);
    GS_ASSERT(get(&n_resolves) > before);
    GS_ASSERT_EQ(gs_dialer_connected(dl), 2);
    GS_ASSERT_EQ(get(&retired_on[1]) + get(&retired_on[2]), 0);
    pthread_mutex_lock(&mu);
    answer_fails = 0;
    busy_jobs = 1;
    pthread_mutex_unlock(&mu);

    /* gateway 2 leaves and comes back before its job is done: taken back */
    set_answer(0, 1, 0);
    GS_ASSERT(wait_eq(&retired_on[2], 1));
    set_answer(0, 1, 1);
    GS_ASSERT(wait_eq(&retired_off[2], 1));
    pthread_mutex_lock(&mu);
    busy_jobs = 0;
    pthread_mutex_unlock(&mu);
    usleep(400000);
    GS_ASSERT_EQ(get(&gws[2].n_close), 0);
    GS_ASSERT_EQ(gs_dialer_connected(dl), 2);

    /* gateway 0 returns: dialed anew */
    set_answer(1, 1, 1);
    GS_ASSERT(wait_eq(&gws[0].n_open, 2));
    GS_ASSERT(wait_connected(dl, 3));
    teardown(dl);
}

/* One answer that lacks a gateway (a truncated reply, a readiness flap)
 * retires nothing; the same absence in two answers in a row does. */
static void test_one_partial_answer_retires_nothing(void)
{
    setup();
    set_answer(1, 1, 0);
    gs_dialer *dl = start(150);
    GS_ASSERT(dl);
    GS_ASSERT(wait_connected(dl, 2));
    for (int k = 0; k < 5; k++) { /* gateway 1 missing from every other answer */
        pthread_mutex_lock(&mu);
        int n = n_resolves;
        answer[1] = 0;
        pthread_mutex_unlock(&mu);
        GS_ASSERT(wait_eq(&n_resolves, n + 1));
        set_answer(1, 1, 0);
        pthread_mutex_lock(&mu);
        n = n_resolves;
        pthread_mutex_unlock(&mu);
        GS_ASSERT(wait_eq(&n_resolves, n + 1));
    }
    GS_ASSERT_EQ(get(&retired_on[1]), 0);
    GS_ASSERT_EQ(gs_dialer_connected(dl), 2);
    set_answer(1, 0, 0); /* now it is gone */
    GS_ASSERT(wait_eq(&retired_on[1], 1));
    teardown(dl);
}

static void test_a_drop_is_redialed_and_resolved_again_soon(void)
{
    setup();
    set_answer(1, 0, 0);
    gs_dialer *dl = start(60000); /* the interval alone would not resolve again */
    GS_ASSERT(dl);
    GS_ASSERT(wait_connected(dl, 1));
    GS_ASSERT(wait_eq(&gws[0].n_open, 1));
    int before = get(&n_resolves);
    uint64_t t0 = gs_clock_now_ns();
    pthread_mutex_lock(&mu);
    gs_ipc_conn *c = gws[0].conn[0];
    pthread_mutex_unlock(&mu);
    gs_ipc_conn_close(c);                  /* the gateway goes away */
    GS_ASSERT(wait_eq(&gws[0].n_open, 2)); /* redialed */
    GS_ASSERT(wait_eq(&n_resolves, before + 1));
    double s = (double)(gs_clock_now_ns() - t0) / 1e9;
    GS_ASSERT_MSG(s < 3, "resolved again after %.1f s", s);
    GS_ASSERT(wait_connected(dl, 1));
    teardown(dl);
}

/* Two names for the same gateways: one connection each, or every
 * gateway would count the worker twice. */
static void test_two_names_for_one_gateway_dial_it_once(void)
{
    setup();
    set_answer(1, 1, 0);
    gs_dialer *dl = start_n(100, 2);
    GS_ASSERT(dl);
    GS_ASSERT(wait_connected(dl, 2));
    usleep(500000); /* a few resolutions of both names later */
    GS_ASSERT_EQ(gs_dialer_connected(dl), 2);
    GS_ASSERT_EQ(get(&gws[0].n_open), 1);
    GS_ASSERT_EQ(get(&gws[1].n_open), 1);
    teardown(dl);
}

static void test_malformed_url_is_refused(void)
{
    static const char *urls[] = {"tcp://gateways"};
    gs_dialer_params p = {0};
    p.urls = urls;
    p.n_urls = 1;
    p.cbs = (gs_ipc_conn_cbs){NULL, w_on_open, w_on_frame, w_on_close, 0};
    p.retire = w_retire;
    p.busy = w_busy;
    gs_dialer *dl = (gs_dialer *)1;
    gs_diag d;
    GS_ASSERT_EQ(gs_dialer_new(&p, &dl, &d), GS_EINVAL);
    GS_ASSERT(dl == NULL);
    GS_ASSERT(strstr(d.msg, "tcp://gateways") != NULL);
}

int main(void)
{
    if (!gs_test_threads_work()) {
        fprintf(stderr, "SKIP: threads do not start in this environment (qemu-user?)\n");
        return GS_TEST_SKIP;
    }
    GS_RUN(test_malformed_url_is_refused);
    GS_RUN(test_every_address_is_dialed_and_dns_is_followed);
    GS_RUN(test_one_partial_answer_retires_nothing);
    GS_RUN(test_a_drop_is_redialed_and_resolved_again_soon);
    GS_RUN(test_two_names_for_one_gateway_dial_it_once);
    return gs_test_summary();
}
