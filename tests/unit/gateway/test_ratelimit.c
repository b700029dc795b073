/* test_ratelimit.c - exact admissions, Retry-After values, eviction order,
 * stream slots, 60 s windows and reconfiguration of gateway/ratelimit. */
#include "gateway/ratelimit.h"
#include "test.h"

#define KEY_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define KEY_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static gs_ratelimit *mk(const gs_ratelimit_config *c)
{
    gs_ratelimit *rl = NULL;
    gs_diag d;
    if (gs_ratelimit_new(c, &rl, &d) != 0)
        fprintf(stderr, "gs_ratelimit_new: %s\n", d.msg);
    return rl;
}

static int admit_key(gs_ratelimit *rl, const char *key, uint64_t now, gs_ratelimit_verdict *v)
{
    gs_ratelimit_who w = {.key = key};
    return gs_ratelimit_admit(rl, &w, now, v);
}

static int admit_ip(gs_ratelimit *rl, const char *ip, uint64_t now, gs_ratelimit_verdict *v)
{
    gs_ratelimit_who w = {.ip = ip};
    return gs_ratelimit_admit(rl, &w, now, v);
}

/* Admits until the first refusal at one instant; returns how many passed. */
static int count_burst(gs_ratelimit *rl, const char *key, uint64_t now, gs_ratelimit_verdict *v)
{
    int n = 0;
    while (n < 100000 && admit_key(rl, key, now, v) == 0)
        n++;
    return n;
}

/* rate 1/s, burst 5, all at the same now: exactly 6 pass. As in nginx
 * limit_req nodelay: a fresh bucket's first request leaves excess 0 (it is
 * the request being served), each next one adds 1000 milli-requests, and a
 * request passes while the new excess <= burst * 1000 = 5000: excess 0,
 * 1000, 2000, 3000, 4000, 5000 pass (6), 6000 does not. 1000 ms later the
 * bucket has leaked 1000: 5000 - 1000 + 1000 = 5000 passes, and the next
 * (6000) does not: exactly one more. */
static void test_burst_exact(void)
{
    gs_ratelimit_config c = {.key = {.rate_mrps = 1000, .burst = 5}};
    gs_ratelimit *rl = mk(&c);
    GS_ASSERT(rl);
    gs_ratelimit_verdict v;
    GS_ASSERT_EQ(count_burst(rl, KEY_A, 5000, &v), 6);
    GS_ASSERT_STREQ(v.reason, "rate");
    GS_ASSERT_STREQ(v.scope, "key");
    GS_ASSERT_EQ(v.retry_after_s, 1);
    /* refusals changed nothing: still refused at 5999 (999 leaked) */
    GS_ASSERT_EQ(admit_key(rl, KEY_A, 5999, &v), GS_EBUSY);
    GS_ASSERT_EQ(v.retry_after_s, 1);
    GS_ASSERT_EQ(count_burst(rl, KEY_A, 6000, &v), 1);
    GS_ASSERT_EQ(count_burst(rl, KEY_A, 8000, &v), 2);
    /* another key has its own bucket */
    GS_ASSERT_EQ(count_burst(rl, KEY_B, 8000, &v), 6);
    gs_ratelimit_stats st;
    gs_ratelimit_get_stats(rl, &st);
    GS_ASSERT_EQ(st.admitted, 15);
    GS_ASSERT_EQ(st.refused, 5);
    GS_ASSERT_EQ(st.n_keys, 2);
    GS_ASSERT_EQ(st.n_ips, 0);
    gs_ratelimit_free(rl);
}

/* 0.5/s (500 milli-requests/s), burst 0: one request per 2 s. */
static void test_fractional_rate(void)
{
    gs_ratelimit_config c = {.key = {.rate_mrps = 500, .burst = 0}};
    gs_ratelimit *rl = mk(&c);
    GS_ASSERT(rl);
    gs_ratelimit_verdict v;
    GS_ASSERT_OK(admit_key(rl, KEY_A, 0, &v));
    GS_ASSERT_EQ(admit_key(rl, KEY_A, 0, &v), GS_EBUSY);
    GS_ASSERT_EQ(v.retry_after_s, 2);
    GS_ASSERT_EQ(admit_key(rl, KEY_A, 1000, &v), GS_EBUSY);
    GS_ASSERT_EQ(v.retry_after_s, 1);
    GS_ASSERT_EQ(admit_key(rl, KEY_A, 1999, &v), GS_EBUSY); /* leaked 999 of 1000 */
    GS_ASSERT_EQ(v.retry_after_s, 1);
    GS_ASSERT_OK(admit_key(rl, KEY_A, 2000, &v));
    GS_ASSERT_EQ(v.retry_after_s, 0);
    GS_ASSERT(v.reason == NULL);
    GS_ASSERT_EQ(admit_key(rl, KEY_A, 3999, &v), GS_EBUSY);
    GS_ASSERT_OK(admit_key(rl, KEY_A, 4000, &v));
    gs_ratelimit_free(rl);

    /* 0.1/s: Retry-After counts whole seconds, rounded up */
    gs_ratelimit_config c2 = {.key = {.rate_mrps = 100}};
    rl = mk(&c2);
    GS_ASSERT(rl);
    GS_ASSERT_OK(admit_key(rl, KEY_A, 0, &v));
    GS_ASSERT_EQ(admit_key(rl, KEY_A, 0, &v), GS_EBUSY);
    GS_ASSERT_EQ(v.retry_after_s, 10);
    GS_ASSERT_EQ(admit_key(rl, KEY_A, 5500, &v), GS_EBUSY);
    GS_ASSERT_EQ(v.retry_after_s, 5); /* 4500 ms left */
    GS_ASSERT_EQ(admit_key(rl, KEY_A, 9001, &v), GS_EBUSY);
    GS_ASSERT_EQ(v.retry_after_s, 1);
    GS_ASSERT_OK(admit_key(rl, KEY_A, 10000, &v));
    gs_ratelimit_free(rl);
}

/* The leak's sub-milli-request remainder is carried, not dropped: at 1.5/s
 * with one request per ms, 2000 ms leak exactly 3000 milli-requests (nginx,
 * which drops the remainder at each update, would leak 2000). */
static void test_remainder_carried(void)
{
    gs_ratelimit_config c = {.key = {.rate_mrps = 1500, .burst = 2000}};
    gs_ratelimit *rl = mk(&c);
    GS_ASSERT(rl);
    gs_ratelimit_verdict v;
    GS_ASSERT_OK(admit_key(rl, KEY_A, 0, &v));
    for (uint64_t t = 1; t <= 2000; t++)
        GS_ASSERT_OK(admit_key(rl, KEY_A, t, &v));
    /* excess = 2000 * 1000 - 3000 = 1997000: three more fit under 2000000 */
    GS_ASSERT_EQ(count_burst(rl, KEY_A, 2000, &v), 3);
    gs_ratelimit_free(rl);
}

/* Per-IP buckets are shared by every key from that address. */
static void test_ip_limit(void)
{
    gs_ratelimit_config c = {.ip_rate_mrps = 2000, .ip_burst = 1};
    gs_ratelimit *rl = mk(&c);
    GS_ASSERT(rl);
    gs_ratelimit_verdict v;
    gs_ratelimit_who a = {.key = KEY_A, .ip = "10.0.0.1"};
    gs_ratelimit_who b = {.key = KEY_B, .ip = "10.0.0.1"};
    gs_ratelimit_who other = {.key = KEY_B, .ip = "2001:db8::1"};
    GS_ASSERT_OK(gs_ratelimit_admit(rl, &a, 100, &v));
    GS_ASSERT_OK(gs_ratelimit_admit(rl, &b, 100, &v));
    GS_ASSERT_EQ(gs_ratelimit_admit(rl, &a, 100, &v), GS_EBUSY);
    GS_ASSERT_STREQ(v.reason, "rate");
    GS_ASSERT_STREQ(v.scope, "ip");
    GS_ASSERT_EQ(v.retry_after_s, 1); /* 500 ms at 2/s */
    GS_ASSERT_OK(gs_ratelimit_admit(rl, &other, 100, &v));
    GS_ASSERT_OK(gs_ratelimit_admit(rl, &a, 600, &v));
    /* a refused request holds no stream slot */
    GS_ASSERT_EQ(gs_ratelimit_streams(rl, KEY_A), 2);
    GS_ASSERT_EQ(gs_ratelimit_streams(rl, KEY_B), 2);
    gs_ratelimit_stats st;
    gs_ratelimit_get_stats(rl, &st);
    GS_ASSERT_EQ(st.n_ips, 2);
    /* no IP limit configured: IPs are not tracked */
    gs_ratelimit_config none = {0};
    GS_ASSERT_OK(gs_ratelimit_reconfigure(rl, &none, NULL));
    for (int i = 0; i < 10; i++)
        GS_ASSERT_OK(admit_ip(rl, "10.9.9.9", 700, &v));
    gs_ratelimit_get_stats(rl, &st);
    GS_ASSERT_EQ(st.n_ips, 2);
    gs_ratelimit_free(rl);
}

/* LRU order, idle entries first, forced eviction when none is idle. */
static void test_lru_eviction(void)
{
    gs_ratelimit_config c = {.ip_rate_mrps = 1000, .ip_burst = 1, .max_ips = 3};
    gs_ratelimit *rl = mk(&c);
    GS_ASSERT(rl);
    gs_ratelimit_verdict v;
    gs_ratelimit_stats st;
    GS_ASSERT_OK(admit_ip(rl, "A", 0, &v));
    GS_ASSERT_OK(admit_ip(rl, "B", 0, &v));
    GS_ASSERT_OK(admit_ip(rl, "C", 0, &v));   /* LRU, newest first: C B A */
    GS_ASSERT_OK(admit_ip(rl, "A", 500, &v)); /* A C B; A's excess 500 */
    /* t=1000: B and C have leaked to idle (the next request would get
     * excess 0, as a fresh bucket does), A has not. The oldest idle, B,
     * goes. */
    GS_ASSERT_OK(admit_ip(rl, "D", 1000, &v)); /* D A C */
    gs_ratelimit_get_stats(rl, &st);
    GS_ASSERT_EQ(st.n_ips, 3);
    GS_ASSERT_EQ(st.evicted_idle, 1);
    GS_ASSERT_EQ(st.evicted_forced, 0);
    /* dropping an idle entry changes no decision: B gets 2 (excess 0, 1000)
     * as it would have kept. C, the oldest idle, makes room. */
    GS_ASSERT_OK(admit_ip(rl, "B", 1000, &v)); /* B D A */
    GS_ASSERT_OK(admit_ip(rl, "B", 1000, &v));
    GS_ASSERT_EQ(admit_ip(rl, "B", 1000, &v), GS_EBUSY);
    gs_ratelimit_get_stats(rl, &st);
    GS_ASSERT_EQ(st.evicted_idle, 2);
    /* t=1000: A (excess 500 at 500 -> 0 + 1000 > 0), D and B are all busy:
     * the least recently used, A, is dropped by force. */
    GS_ASSERT_OK(admit_ip(rl, "E", 1000, &v)); /* E B D */
    gs_ratelimit_get_stats(rl, &st);
    GS_ASSERT_EQ(st.evicted_forced, 1);
    GS_ASSERT_EQ(st.n_ips, 3);
    /* A restarts fresh (in its favour), pushing out D, now the oldest */
    GS_ASSERT_OK(admit_ip(rl, "A", 1000, &v));
    GS_ASSERT_OK(admit_ip(rl, "A", 1000, &v));
    gs_ratelimit_get_stats(rl, &st);
    GS_ASSERT_EQ(st.evicted_forced, 2);
    /* B was bumped by its last admission, so it is still here, and still
     * refused */
    GS_ASSERT_EQ(admit_ip(rl, "B", 1000, &v), GS_EBUSY);
    gs_ratelimit_free(rl);
}

/* Key entries holding streams are never evicted; a full table of them
 * refuses new keys with "capacity". */
static void test_capacity(void)
{
    gs_ratelimit_config c = {.max_keys = 2};
    gs_ratelimit *rl = mk(&c);
    GS_ASSERT(rl);
    gs_ratelimit_verdict v;
    GS_ASSERT_OK(admit_key(rl, "k1", 0, &v));
    GS_ASSERT_OK(admit_key(rl, "k2", 0, &v));
    GS_ASSERT_EQ(admit_key(rl, "k3", 0, &v), GS_EBUSY);
    GS_ASSERT_STREQ(v.reason, "capacity");
    GS_ASSERT_STREQ(v.scope, "key");
    GS_ASSERT_EQ(v.retry_after_s, 1);
    /* k1 ends; its window still counts the request (not idle), but it holds
     * no stream, so it can go by force */
    GS_ASSERT_OK(gs_ratelimit_release(rl, "k1"));
    GS_ASSERT_OK(admit_key(rl, "k3", 0, &v));
    GS_ASSERT_EQ(gs_ratelimit_streams(rl, "k1"), 0);
    GS_ASSERT_EQ(gs_ratelimit_streams(rl, "k2"), 1);
    GS_ASSERT_EQ(gs_ratelimit_streams(rl, "k3"), 1);
    /* after 60 s the windows are empty: k2 still streams, k3 is idle */
    GS_ASSERT_OK(gs_ratelimit_release(rl, "k3"));
    GS_ASSERT_OK(admit_key(rl, "k4", 60000, &v));
    gs_ratelimit_stats st;
    gs_ratelimit_get_stats(rl, &st);
    GS_ASSERT_EQ(st.evicted_forced, 1);
    GS_ASSERT_EQ(st.evicted_idle, 1);
    GS_ASSERT_EQ(gs_ratelimit_streams(rl, "k2"), 1);
    gs_ratelimit_free(rl);
}

static void test_stream_caps(void)
{
    gs_ratelimit_config c = {.key = {.streams = 2}};
    gs_ratelimit *rl = mk(&c);
    GS_ASSERT(rl);
    gs_ratelimit_verdict v;
    GS_ASSERT_OK(admit_key(rl, KEY_A, 0, &v));
    GS_ASSERT_OK(admit_key(rl, KEY_A, 0, &v));
    GS_ASSERT_EQ(admit_key(rl, KEY_A, 0, &v), GS_EBUSY);
    GS_ASSERT_STREQ(v.reason, "concurrency");
    GS_ASSERT_EQ(v.retry_after_s, 1);
    GS_ASSERT_EQ(gs_ratelimit_streams(rl, KEY_A), 2);
    GS_ASSERT_OK(gs_ratelimit_release(rl, KEY_A));
    GS_ASSERT_EQ(gs_ratelimit_streams(rl, KEY_A), 1);
    GS_ASSERT_OK(admit_key(rl, KEY_A, 0, &v));
    GS_ASSERT_OK(gs_ratelimit_release(rl, KEY_A));
    GS_ASSERT_OK(gs_ratelimit_release(rl, KEY_A));
    GS_ASSERT_EQ(gs_ratelimit_release(rl, KEY_A), GS_ENOENT);
    GS_ASSERT_EQ(gs_ratelimit_release(rl, "unknown"), GS_ENOENT);
    GS_ASSERT_OK(gs_ratelimit_release(rl, NULL));
    GS_ASSERT_EQ(gs_ratelimit_streams(rl, KEY_A), 0);
    /* a per-key override: streams=1 for this key only; 0 = unlimited */
    gs_auth_limits one = {.set = GS_AUTH_LIM_STREAMS, .streams = 1};
    gs_auth_limits unl = {.set = GS_AUTH_LIM_STREAMS, .streams = 0};
    gs_ratelimit_who w1 = {.key = KEY_B, .key_limits = &one};
    gs_ratelimit_who wu = {.key = KEY_B, .key_limits = &unl};
    GS_ASSERT_OK(gs_ratelimit_admit(rl, &w1, 0, &v));
    GS_ASSERT_EQ(gs_ratelimit_admit(rl, &w1, 0, &v), GS_EBUSY);
    for (int i = 0; i < 5; i++)
        GS_ASSERT_OK(gs_ratelimit_admit(rl, &wu, 0, &v));
    GS_ASSERT_EQ(gs_ratelimit_streams(rl, KEY_B), 6);
    gs_ratelimit_free(rl);
}

/* rpm: a sliding window of 60 one-second slots. */
static void test_rpm_window(void)
{
    gs_ratelimit_config c = {.key = {.rpm = 3}};
    gs_ratelimit *rl = mk(&c);
    GS_ASSERT(rl);
    gs_ratelimit_verdict v;
    GS_ASSERT_OK(admit_key(rl, KEY_A, 0, &v));
    GS_ASSERT_OK(admit_key(rl, KEY_A, 500, &v));   /* second 0 */
    GS_ASSERT_OK(admit_key(rl, KEY_A, 10999, &v)); /* second 10 */
    GS_ASSERT_EQ(admit_key(rl, KEY_A, 20000, &v), GS_EBUSY);
    GS_ASSERT_STREQ(v.reason, "rpm");
    GS_ASSERT_EQ(v.retry_after_s, 40); /* second 0 leaves when second 60 begins */
    GS_ASSERT_EQ(admit_key(rl, KEY_A, 59999, &v), GS_EBUSY);
    GS_ASSERT_EQ(v.retry_after_s, 1);
    GS_ASSERT_OK(admit_key(rl, KEY_A, 60000, &v));
    GS_ASSERT_OK(admit_key(rl, KEY_A, 60001, &v));
    GS_ASSERT_EQ(admit_key(rl, KEY_A, 60002, &v), GS_EBUSY);
    GS_ASSERT_EQ(v.retry_after_s, 10); /* second 10 leaves at 70 */
    GS_ASSERT_OK(admit_key(rl, KEY_A, 70000, &v));
    gs_ratelimit_free(rl);
}

/* tpm: charged after the fact; over budget until the window frees room. */
static void test_tpm_window(void)
{
    gs_ratelimit_config c = {.key = {.tpm = 100}};
    gs_ratelimit *rl = mk(&c);
    GS_ASSERT(rl);
    gs_ratelimit_verdict v;
    GS_ASSERT_OK(admit_key(rl, KEY_A, 0, &v));
    GS_ASSERT_OK(gs_ratelimit_charge_tokens(rl, KEY_A, 60, 900));
    GS_ASSERT_OK(gs_ratelimit_release(rl, KEY_A));
    GS_ASSERT_OK(admit_key(rl, KEY_A, 20000, &v)); /* 60 < 100 */
    GS_ASSERT_OK(gs_ratelimit_charge_tokens(rl, KEY_A, 50, 20500));
    GS_ASSERT_EQ(admit_key(rl, KEY_A, 30000, &v), GS_EBUSY); /* 110 >= 100 */
    GS_ASSERT_STREQ(v.reason, "tpm");
    GS_ASSERT_EQ(v.retry_after_s, 30); /* second 0's 60 tokens leave at 60: 50 left */
    GS_ASSERT_OK(admit_key(rl, KEY_A, 60000, &v));
    /* one request may overshoot; then the key waits for its whole window */
    GS_ASSERT_OK(gs_ratelimit_charge_tokens(rl, KEY_A, 1000, 61000));
    GS_ASSERT_EQ(admit_key(rl, KEY_A, 62000, &v), GS_EBUSY);
    GS_ASSERT_EQ(v.retry_after_s, 59);
    GS_ASSERT_OK(admit_key(rl, KEY_A, 121000, &v));
    /* charging a key with no entry makes one */
    GS_ASSERT_OK(gs_ratelimit_charge_tokens(rl, KEY_B, 100, 121000));
    GS_ASSERT_EQ(admit_key(rl, KEY_B, 121000, &v), GS_EBUSY);
    gs_ratelimit_free(rl);
}

/* Several limits refuse: the verdict names the first in check order (IP
 * rate, key rate, rpm, tpm, streams) and waits for the longest. */
static void test_reason_order(void)
{
    gs_ratelimit_config c = {.ip_rate_mrps = 1000, .key = {.rpm = 1, .streams = 1}};
    gs_ratelimit *rl = mk(&c);
    GS_ASSERT(rl);
    gs_ratelimit_verdict v;
    gs_ratelimit_who w = {.key = KEY_A, .ip = "10.0.0.1"};
    GS_ASSERT_OK(gs_ratelimit_admit(rl, &w, 0, &v));
    GS_ASSERT_EQ(gs_ratelimit_admit(rl, &w, 0, &v), GS_EBUSY);
    GS_ASSERT_STREQ(v.reason, "rate");
    GS_ASSERT_STREQ(v.scope, "ip");
    GS_ASSERT_EQ(v.retry_after_s, 60); /* rpm's wait is the longest */
    GS_ASSERT_EQ(gs_ratelimit_admit(rl, &w, 1000, &v), GS_EBUSY);
    GS_ASSERT_STREQ(v.reason, "rpm");
    GS_ASSERT_EQ(v.retry_after_s, 59);
    GS_ASSERT_EQ(gs_ratelimit_admit(rl, &w, 60000, &v), GS_EBUSY);
    GS_ASSERT_STREQ(v.reason, "concurrency");
    GS_ASSERT_OK(gs_ratelimit_release(rl, KEY_A));
    GS_ASSERT_OK(gs_ratelimit_admit(rl, &w, 60000, &v));
    gs_ratelimit_free(rl);
}

/* SIGHUP: new limits, same buckets, windows and stream counts. */
static void test_reconfigure_keeps_state(void)
{
    gs_ratelimit_config c = {.key = {.rate_mrps = 1000, .burst = 5}};
    gs_ratelimit *rl = mk(&c);
    GS_ASSERT(rl);
    gs_ratelimit_verdict v;
    GS_ASSERT_EQ(count_burst(rl, KEY_A, 0, &v), 6); /* excess 5000 */
    GS_ASSERT_EQ(gs_ratelimit_streams(rl, KEY_A), 6);
    /* a larger burst: the same bucket takes 5 more (6000..10000) */
    gs_ratelimit_config c2 = {.key = {.rate_mrps = 1000, .burst = 10}};
    GS_ASSERT_OK(gs_ratelimit_reconfigure(rl, &c2, NULL));
    GS_ASSERT_EQ(count_burst(rl, KEY_A, 0, &v), 5);
    GS_ASSERT_EQ(gs_ratelimit_streams(rl, KEY_A), 11);
    /* a smaller burst refuses until the excess (10000) has leaked to where
     * one more fits under 2000: 9000 leaked at 1/s = 9 s */
    gs_ratelimit_config c3 = {.key = {.rate_mrps = 1000, .burst = 2, .streams = 20}};
    GS_ASSERT_OK(gs_ratelimit_reconfigure(rl, &c3, NULL));
    GS_ASSERT_EQ(admit_key(rl, KEY_A, 0, &v), GS_EBUSY);
    GS_ASSERT_EQ(v.retry_after_s, 9);
    GS_ASSERT_EQ(admit_key(rl, KEY_A, 8999, &v), GS_EBUSY);
    GS_ASSERT_OK(admit_key(rl, KEY_A, 9000, &v));
    /* a stream cap below the streams in flight drops none: it refuses new
     * ones until enough end */
    gs_ratelimit_config c4 = {.key = {.streams = 10}};
    GS_ASSERT_OK(gs_ratelimit_reconfigure(rl, &c4, NULL));
    GS_ASSERT_EQ(gs_ratelimit_streams(rl, KEY_A), 12);
    GS_ASSERT_EQ(admit_key(rl, KEY_A, 9000, &v), GS_EBUSY);
    GS_ASSERT_STREQ(v.reason, "concurrency");
    for (int i = 0; i < 3; i++)
        GS_ASSERT_OK(gs_ratelimit_release(rl, KEY_A));
    GS_ASSERT_OK(admit_key(rl, KEY_A, 9000, &v));
    /* an invalid config is refused and the old one stays */
    gs_ratelimit_config bad = {.key = {.burst = 2000000}};
    gs_diag d;
    GS_ASSERT_EQ(gs_ratelimit_reconfigure(rl, &bad, &d), GS_EINVAL);
    GS_ASSERT(strstr(d.msg, "burst") != NULL);
    GS_ASSERT_EQ(admit_key(rl, KEY_A, 9000, &v), GS_EBUSY);
    GS_ASSERT_STREQ(v.reason, "concurrency");
    gs_ratelimit_free(rl);
}

static void test_effective_limits(void)
{
    gs_ratelimit_config c = {.key = {.rate_mrps = 1000, .burst = 5, .rpm = 60, .tpm = 1000}};
    gs_auth_limits o = {.set = GS_AUTH_LIM_RATE | GS_AUTH_LIM_TPM, .rate_mrps = 500, .tpm = 0};
    gs_ratelimit_limits l;
    gs_ratelimit_effective(&c, &o, &l);
    GS_ASSERT_EQ(l.rate_mrps, 500);
    GS_ASSERT_EQ(l.burst, 5);
    GS_ASSERT_EQ(l.rpm, 60);
    GS_ASSERT_EQ(l.tpm, 0);
    GS_ASSERT_EQ(l.streams, 0);
    gs_ratelimit_effective(&c, NULL, &l);
    GS_ASSERT_EQ(l.rate_mrps, 1000);
    /* the override applies in admission: 0.5/s burst 5 -> 2 s per request */
    gs_ratelimit *rl = mk(&c);
    GS_ASSERT(rl);
    gs_ratelimit_verdict v;
    gs_ratelimit_who w = {.key = KEY_A, .key_limits = &o};
    int n = 0;
    while (n < 100 && gs_ratelimit_admit(rl, &w, 0, &v) == 0)
        n++;
    GS_ASSERT_EQ(n, 6);
    GS_ASSERT_EQ(v.retry_after_s, 2);
    gs_ratelimit_free(rl);
}

static void test_bad_config(void)
{
    gs_ratelimit *rl = NULL;
    gs_diag d;
    gs_ratelimit_config c = {.ip_rate_mrps = 1000000001u};
    GS_ASSERT_EQ(gs_ratelimit_new(&c, &rl, &d), GS_EINVAL);
    GS_ASSERT(rl == NULL);
    GS_ASSERT(strstr(d.msg, "ip rate") != NULL);
    gs_ratelimit_free(NULL);
}

/* Many IPs through a small table: the cap holds, nothing leaks. */
static void test_many_ips(void)
{
    gs_ratelimit_config c = {.ip_rate_mrps = 1000, .ip_burst = 0, .max_ips = 100, .seed = 42};
    gs_ratelimit *rl = mk(&c);
    GS_ASSERT(rl);
    gs_ratelimit_verdict v;
    char ip[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(ip, sizeof ip, "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
        GS_ASSERT_OK(admit_ip(rl, ip, (uint64_t)i * 10, &v));
    }
    gs_ratelimit_stats st;
    gs_ratelimit_get_stats(rl, &st);
    GS_ASSERT_EQ(st.n_ips, 100);
    GS_ASSERT_EQ(st.evicted_idle + st.evicted_forced, 4900);
    gs_ratelimit_free(rl);
}

int main(void)
{
    GS_RUN(test_burst_exact);
    GS_RUN(test_fractional_rate);
    GS_RUN(test_remainder_carried);
    GS_RUN(test_ip_limit);
    GS_RUN(test_lru_eviction);
    GS_RUN(test_capacity);
    GS_RUN(test_stream_caps);
    GS_RUN(test_rpm_window);
    GS_RUN(test_tpm_window);
    GS_RUN(test_reason_order);
    GS_RUN(test_reconfigure_keeps_state);
    GS_RUN(test_effective_limits);
    GS_RUN(test_bad_config);
    GS_RUN(test_many_ips);
    return gs_test_summary();
}
