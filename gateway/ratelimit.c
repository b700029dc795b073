/* ratelimit.c - token buckets (nginx limit_req, nodelay), 60 s windows,
 * stream slots, and the keyed tables that hold them. See ratelimit.h for
 * the semantics; this file is their arithmetic.
 *
 * An entry holds one bucket; key entries also hold a stream count and a
 * 60-slot window (one slot per second: its second, requests, tokens). The
 * tables are chained hash tables that double when their load passes 1,
 * with an intrusive LRU list (head: most recently admitted).
 *
 * Admission is two phases: every check reads state only (a missing entry
 * reads as a fresh one), and only when all pass are entries made (which
 * may evict) and updated. So a refusal changes nothing, LRU order
 * included. Not thread-safe. */
#include "gateway/ratelimit.h"

#include <stdlib.h>
#include <string.h>

#define RL_SLOTS 60
#define RL_EVICT_SCAN 16
#define RL_MAX_RATE 1000000000u
#define RL_MAX_BURST 1000000u
#define RL_MAX_CAP 10000000u

typedef struct {
    uint64_t sec;
    uint64_t tok;
    uint32_t req;
} rl_slot;

typedef struct rl_entry {
    struct rl_entry *hnext;       /* hash chain */
    struct rl_entry *prev, *next; /* LRU: prev toward the head (newest) */
    uint64_t hash;
    int64_t excess;   /* milli-requests */
    uint64_t last_ms; /* last admitted request */
    uint32_t rem;     /* leak remainder carried (< 1000), milli-milli-requests */
    uint32_t rate;    /* the rate last applied (judges idleness) */
    uint32_t streams;
    rl_slot *win; /* [RL_SLOTS], key entries only */
    char name[];
} rl_entry;

typedef struct {
    rl_entry **b;
    size_t nb, n;
    rl_entry *head, *tail;
    int with_window;
} rl_table;

struct gs_ratelimit {
    gs_ratelimit_config cfg;
    uint64_t k0, k1; /* SipHash key */
    rl_table keys, ips;
    gs_ratelimit_stats st;
};

/* ---- SipHash-2-4 (Aumasson, Bernstein), 64-bit output ---- */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

static uint64_t siphash(uint64_t k0, uint64_t k1, const unsigned char *m, size_t len)
{
    uint64_t v0 = 0x736f6d6570736575ull ^ k0, v1 = 0x646f72616e646f6dull ^ k1;
    uint64_t v2 = 0x6c7967656e657261ull ^ k0, v3 = 0x7465646279746573ull ^ k1;
    size_t end = len - len % 8;
    for (size_t i = 0; i < end; i += 8) {
        uint64_t w = 0;
        for (int j = 7; j >= 0; j--)
            w = w << 8 | m[i + (size_t)j];
        v3 ^= w;
        SIPROUND;
        SIPROUND;
        v0 ^= w;
    }
    uint64_t b = (uint64_t)len << 56;
    for (size_t j = len % 8; j > 0; j--)
        b |= (uint64_t)m[end + j - 1] << (8 * (j - 1));
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- buckets ---- */

/* The excess one more request at now would leave, before the burst test
 * (<= 0: the bucket has fully leaked, as a fresh one), and the remainder
 * to carry. rate > 0. No overflow: past `full` ms the bucket is empty, and
 * below it rate * ms < (excess + 1000) * 1000 + rate. */
static int64_t bucket_next(const rl_entry *e, uint32_t rate, uint64_t now, uint32_t *rem)
{
    *rem = 0;
    if (!e)
        return 0; /* a fresh bucket: the first request is the one being served */
    uint64_t ms = now > e->last_ms ? now - e->last_ms : 0;
    uint64_t full = ((uint64_t)(e->excess + 1000) * 1000 + rate - 1) / rate;
    if (ms >= full)
        return 0;
    uint64_t num = (uint64_t)rate * ms + e->rem;
    *rem = (uint32_t)(num % 1000);
    return e->excess - (int64_t)(num / 1000) + 1000;
}

/* Seconds until a request refused at now would be admitted: the smallest
 * t (ms after last) with (rate * t + rem) / 1000 >= excess + 1000 -
 * burst * 1000, less the ms already passed, rounded up to seconds. */
static uint32_t bucket_retry(const rl_entry *e, uint32_t rate, uint32_t burst, uint64_t now)
{
    uint64_t ms = now > e->last_ms ? now - e->last_ms : 0;
    int64_t need = e->excess + 1000 - (int64_t)burst * 1000;
    uint64_t want = (uint64_t)need * 1000 - e->rem;
    uint64_t t = (want + rate - 1) / rate;
    uint64_t wait = t > ms ? t - ms : 1;
    uint64_t s = (wait + 999) / 1000;
    return s < 1 ? 1 : (uint32_t)s;
}

/* Dropping e would change no later decision of its bucket. */
static int bucket_idle(const rl_entry *e, uint64_t now)
{
    uint32_t rem;
    return e->rate == 0 || bucket_next(e, e->rate, now, &rem) <= 0;
}

static void bucket_set(rl_entry *e, uint32_t rate, int64_t ex, uint32_t rem, uint64_t now)
{
    e->excess = ex < 0 ? 0 : ex;
    e->rem = ex <= 0 ? 0 : rem;
    e->rate = rate;
    if (now > e->last_ms)
        e->last_ms = now;
}

/* ---- windows ---- */

static int slot_live(const rl_slot *s, uint64_t sec)
{
    return s->sec + RL_SLOTS > sec; /* counted during [sec - 59, sec] (or later) */
}

static void win_sums(const rl_slot *w, uint64_t sec, uint64_t *req, uint64_t *tok)
{
    *req = *tok = 0;
    if (!w)
        return;
    for (int i = 0; i < RL_SLOTS; i++) {
        if (slot_live(&w[i], sec)) {
            *req += w[i].req;
            *tok += w[i].tok;
        }
    }
}

/* Seconds until the window's requests (tok 0) or tokens (tok 1) drop
 * below limit, with nothing new added. */
static uint32_t win_retry(const rl_slot *w, uint64_t sec, int tok, uint64_t limit)
{
    uint64_t sum = 0;
    for (int i = 0; i < RL_SLOTS; i++)
        if (slot_live(&w[i], sec))
            sum += tok ? w[i].tok : w[i].req;
    for (uint64_t t = sec + 1; t <= sec + RL_SLOTS; t++) {
        /* at second t, the slot of second t - 60 has left the window */
        const rl_slot *s = &w[(t - RL_SLOTS) % RL_SLOTS];
        if (t >= RL_SLOTS && s->sec == t - RL_SLOTS)
            sum -= tok ? s->tok : s->req;
        if (sum < limit)
            return (uint32_t)(t - sec);
    }
    return RL_SLOTS;
}

static rl_slot *win_slot(rl_slot *w, uint64_t sec)
{
    rl_slot *s = &w[sec % RL_SLOTS];
    if (s->sec != sec) {
        s->sec = sec;
        s->req = 0;
        s->tok = 0;
    }
    return s;
}

/* ---- tables ---- */

static int table_init(rl_table *t, int with_window)
{
    memset(t, 0, sizeof *t);
    t->nb = 64;
    t->b = calloc(t->nb, sizeof *t->b);
    t->with_window = with_window;
    return t->b ? 0 : GS_ENOMEM;
}

static void entry_free(rl_entry *e)
{
    free(e->win);
    free(e);
}

static void table_free(rl_table *t)
{
    rl_entry *e = t->head;
    while (e) {
        rl_entry *n = e->next;
        entry_free(e);
        e = n;
    }
    free(t->b);
}

static rl_entry *table_find(const gs_ratelimit *rl, const rl_table *t, const char *name)
{
    uint64_t h = siphash(rl->k0, rl->k1, (const unsigned char *)name, strlen(name));
    for (rl_entry *e = t->b[h & (t->nb - 1)]; e; e = e->hnext)
        if (e->hash == h && strcmp(e->name, name) == 0)
            return e;
    return NULL;
}

static void lru_unlink(rl_table *t, rl_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        t->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        t->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_head(rl_table *t, rl_entry *e)
{
    e->prev = NULL;
    e->next = t->head;
    if (t->head)
        t->head->prev = e;
    t->head = e;
    if (!t->tail)
        t->tail = e;
}

static void table_remove(rl_table *t, rl_entry *e)
{
    rl_entry **pp = &t->b[e->hash & (t->nb - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(t, e);
    t->n--;
    entry_free(e);
}

static void table_grow(rl_table *t)
{
    size_t nb = t->nb * 2;
    rl_entry **b = calloc(nb, sizeof *b);
    if (!b)
        return; /* longer chains, still correct */
    for (rl_entry *e = t->head; e; e = e->next) {
        e->hnext = b[e->hash & (nb - 1)];
        b[e->hash & (nb - 1)] = e;
    }
    free(t->b);
    t->b = b;
    t->nb = nb;
}

static int entry_idle(const rl_entry *e, uint64_t now)
{
    if (e->streams || !bucket_idle(e, now))
        return 0;
    uint64_t req, tok;
    win_sums(e->win, now / 1000, &req, &tok);
    return req == 0 && tok == 0;
}

/* Makes room for one more entry when t is at cap (at most two evictions,
 * so a table left over a lowered cap shrinks back): 0, or GS_EBUSY when
 * the 16 oldest all hold streams. */
static int table_make_room(gs_ratelimit *rl, rl_table *t, size_t cap, uint64_t now)
{
    for (int round = 0; round < 2 && t->n >= cap; round++) {
        rl_entry *idle = NULL, *forced = NULL, *e = t->tail;
        for (int i = 0; e && i < RL_EVICT_SCAN && !idle; i++, e = e->prev) {
            if (entry_idle(e, now))
                idle = e;
            else if (!forced && e->streams == 0)
                forced = e;
        }
        if (idle) {
            table_remove(t, idle);
            rl->st.evicted_idle++;
        } else if (forced) {
            table_remove(t, forced);
            rl->st.evicted_forced++;
        } else {
            return round == 0 ? GS_EBUSY : 0;
        }
    }
    return 0;
}

/* Finds or makes the entry for name; *e NULL with GS_EBUSY/GS_ENOMEM. */
static int table_get(gs_ratelimit *rl, rl_table *t, size_t cap, const char *name, uint64_t now,
                     rl_entry **out)
{
    rl_entry *e = table_find(rl, t, name);
    if (e) {
        *out = e;
        return 0;
    }
    *out = NULL;
    int rc = table_make_room(rl, t, cap, now);
    if (rc != 0)
        return rc;
    size_t len = strlen(name);
    e = calloc(1, sizeof *e + len + 1);
    if (!e)
        return GS_ENOMEM;
    if (t->with_window) {
        e->win = calloc(RL_SLOTS, sizeof *e->win);
        if (!e->win) {
            free(e);
            return GS_ENOMEM;
        }
    }
    memcpy(e->name, name, len + 1);
    e->hash = siphash(rl->k0, rl->k1, (const unsigned char *)name, len);
    e->excess = -1000; /* reads as fresh: the next request gets excess 0 */
    if (t->n >= t->nb)
        table_grow(t);
    e->hnext = t->b[e->hash & (t->nb - 1)];
    t->b[e->hash & (t->nb - 1)] = e;
    lru_push_head(t, e);
    t->n++;
    *out = e;
    return 0;
}

static void touch(rl_table *t, rl_entry *e)
{
    if (t->head != e) {
        lru_unlink(t, e);
        lru_push_head(t, e);
    }
}

/* ---- config ---- */

static size_t cap_keys(const gs_ratelimit_config *c)
{
    return c->max_keys ? c->max_keys : 65536;
}

static size_t cap_ips(const gs_ratelimit_config *c)
{
    return c->max_ips ? c->max_ips : 100000;
}

static int check_config(const gs_ratelimit_config *c, gs_diag *d)
{
    if (c->key.rate_mrps > RL_MAX_RATE)
        return gs_diag_set(d, GS_EINVAL, "ratelimit: key rate above %u milli-requests/s",
                           RL_MAX_RATE);
    if (c->ip_rate_mrps > RL_MAX_RATE)
        return gs_diag_set(d, GS_EINVAL, "ratelimit: ip rate above %u milli-requests/s",
                           RL_MAX_RATE);
    if (c->key.burst > RL_MAX_BURST || c->ip_burst > RL_MAX_BURST)
        return gs_diag_set(d, GS_EINVAL, "ratelimit: burst above %u", RL_MAX_BURST);
    if (c->max_keys > RL_MAX_CAP || c->max_ips > RL_MAX_CAP)
        return gs_diag_set(d, GS_EINVAL, "ratelimit: max_keys/max_ips above %u", RL_MAX_CAP);
    return 0;
}

void gs_ratelimit_effective(const gs_ratelimit_config *cfg, const gs_auth_limits *ovr,
                            gs_ratelimit_limits *out)
{
    *out = cfg->key;
    if (!ovr)
        return;
    if (ovr->set & GS_AUTH_LIM_RATE)
        out->rate_mrps = ovr->rate_mrps > RL_MAX_RATE ? RL_MAX_RATE : ovr->rate_mrps;
    if (ovr->set & GS_AUTH_LIM_BURST)
        out->burst = ovr->burst > RL_MAX_BURST ? RL_MAX_BURST : ovr->burst;
    if (ovr->set & GS_AUTH_LIM_RPM)
        out->rpm = ovr->rpm;
    if (ovr->set & GS_AUTH_LIM_TPM)
        out->tpm = ovr->tpm;
    if (ovr->set & GS_AUTH_LIM_STREAMS)
        out->streams = ovr->streams;
}

int gs_ratelimit_new(const gs_ratelimit_config *cfg, gs_ratelimit **out, gs_diag *d)
{
    *out = NULL;
    int rc = check_config(cfg, d);
    if (rc != 0)
        return rc;
    gs_ratelimit *rl = calloc(1, sizeof *rl);
    if (!rl)
        return gs_diag_set(d, GS_ENOMEM, "ratelimit: out of memory");
    rl->cfg = *cfg;
    rl->k0 = cfg->seed;
    rl->k1 = cfg->seed ^ 0x9e3779b97f4a7c15ull;
    if (table_init(&rl->keys, 1) != 0 || table_init(&rl->ips, 0) != 0) {
        gs_ratelimit_free(rl);
        return gs_diag_set(d, GS_ENOMEM, "ratelimit: out of memory");
    }
    *out = rl;
    return 0;
}

void gs_ratelimit_free(gs_ratelimit *rl)
{
    if (!rl)
        return;
    table_free(&rl->keys);
    table_free(&rl->ips);
    free(rl);
}

int gs_ratelimit_reconfigure(gs_ratelimit *rl, const gs_ratelimit_config *cfg, gs_diag *d)
{
    int rc = check_config(cfg, d);
    if (rc != 0)
        return rc;
    uint64_t seed = rl->cfg.seed;
    rl->cfg = *cfg;
    rl->cfg.seed = seed;
    return 0;
}

/* ---- the decision ---- */

static void refuse(gs_ratelimit_verdict *v, const char *reason, const char *scope, uint32_t s)
{
    if (!v->reason) {
        v->reason = reason;
        v->scope = scope;
    }
    if (s > v->retry_after_s)
        v->retry_after_s = s;
}

int gs_ratelimit_admit(gs_ratelimit *rl, const gs_ratelimit_who *who, uint64_t now_ms,
                       gs_ratelimit_verdict *v)
{
    memset(v, 0, sizeof *v);
    const gs_ratelimit_config *c = &rl->cfg;
    uint64_t sec = now_ms / 1000;
    const char *ip = who->ip && c->ip_rate_mrps ? who->ip : NULL;
    rl_entry *ie = ip ? table_find(rl, &rl->ips, ip) : NULL;
    rl_entry *ke = who->key ? table_find(rl, &rl->keys, who->key) : NULL;
    gs_ratelimit_limits lim;
    gs_ratelimit_effective(c, who->key_limits, &lim);
    uint32_t irem = 0, krem = 0;
    int64_t iex = 0, kex = 0;

    /* phase 1: read only */
    if (ip) {
        iex = bucket_next(ie, c->ip_rate_mrps, now_ms, &irem);
        if (iex > (int64_t)c->ip_burst * 1000)
            refuse(v, "rate", "ip", bucket_retry(ie, c->ip_rate_mrps, c->ip_burst, now_ms));
    }
    if (who->key) {
        if (lim.rate_mrps) {
            kex = bucket_next(ke, lim.rate_mrps, now_ms, &krem);
            if (kex > (int64_t)lim.burst * 1000)
                refuse(v, "rate", "key", bucket_retry(ke, lim.rate_mrps, lim.burst, now_ms));
        }
        uint64_t req = 0, tok = 0;
        win_sums(ke ? ke->win : NULL, sec, &req, &tok);
        if (lim.rpm && req >= lim.rpm)
            refuse(v, "rpm", "key", win_retry(ke->win, sec, 0, lim.rpm));
        if (lim.tpm && tok >= lim.tpm)
            refuse(v, "tpm", "key", win_retry(ke->win, sec, 1, lim.tpm));
        if (lim.streams && ke && ke->streams >= lim.streams)
            refuse(v, "concurrency", "key", 1);
    }
    if (v->reason) {
        rl->st.refused++;
        return GS_EBUSY;
    }

    /* phase 2: make the entries, then update. Both are made before either
     * is updated, so a failure leaves no half-admitted request. */
    int rc = 0;
    const char *scope = "ip";
    if (ip && !ie)
        rc = table_get(rl, &rl->ips, cap_ips(c), ip, now_ms, &ie);
    if (rc == 0 && who->key && !ke) {
        scope = "key";
        rc = table_get(rl, &rl->keys, cap_keys(c), who->key, now_ms, &ke);
    }
    if (rc != 0) {
        if (rc == GS_EBUSY)
            refuse(v, "capacity", scope, 1);
        rl->st.refused++;
        return rc;
    }
    if (ip) {
        bucket_set(ie, c->ip_rate_mrps, iex, irem, now_ms);
        touch(&rl->ips, ie);
    }
    if (ke) {
        if (lim.rate_mrps)
            bucket_set(ke, lim.rate_mrps, kex, krem, now_ms);
        win_slot(ke->win, sec)->req++;
        ke->streams++;
        touch(&rl->keys, ke);
    }
    rl->st.admitted++;
    return 0;
}

int gs_ratelimit_release(gs_ratelimit *rl, const char *key)
{
    if (!key)
        return 0;
    rl_entry *e = table_find(rl, &rl->keys, key);
    if (!e || e->streams == 0)
        return GS_ENOENT;
    e->streams--;
    return 0;
}

int gs_ratelimit_charge_tokens(gs_ratelimit *rl, const char *key, uint64_t n, uint64_t now_ms)
{
    if (!key || n == 0)
        return 0;
    rl_entry *e;
    int rc = table_get(rl, &rl->keys, cap_keys(&rl->cfg), key, now_ms, &e);
    if (rc != 0)
        return rc;
    win_slot(e->win, now_ms / 1000)->tok += n;
    return 0;
}

uint32_t gs_ratelimit_streams(const gs_ratelimit *rl, const char *key)
{
    const rl_entry *e = key ? table_find(rl, &rl->keys, key) : NULL;
    return e ? e->streams : 0;
}

void gs_ratelimit_get_stats(const gs_ratelimit *rl, gs_ratelimit_stats *out)
{
    *out = rl->st;
    out->n_keys = rl->keys.n;
    out->n_ips = rl->ips.n;
}
