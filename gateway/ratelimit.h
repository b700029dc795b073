/* ratelimit.h - admission policy: request rates per API key and per client
 * IP, requests in flight per key, and per-key budgets of requests and
 * output tokens per minute; Retry-After for every refusal.
 *
 * Pure: no sockets, no clock. Time comes in as now_ms (uint64_t monotonic
 * milliseconds, e.g. gs_clock_now_ns() / 1000000; it must not go back: a
 * smaller now_ms counts as no time passing). Everything is integer
 * arithmetic, so a decision is the same on every machine (STYLE.md 8.10).
 *
 * Rates: nginx limit_req with nodelay. Each bucket keeps `excess` in
 * milli-requests and the time of its last admitted request. A request at
 * now computes
 *     excess' = max(0, excess - rate_mrps * (now - last) / 1000 + 1000)
 * and is admitted when excess' <= burst * 1000, which then becomes the
 * state (last = now). A refused request changes nothing. A bucket nobody
 * has used starts at excess' = 0: the first request is the one "being
 * served", and burst more may follow at once, so at one instant a bucket
 * admits 1 + burst requests, then one per 1/rate seconds. Unlike nginx,
 * the sub-milli-request remainder of the leak is carried to the next
 * update instead of dropped, so a bucket hit every millisecond still leaks
 * at exactly its rate. Admitted requests are never delayed (nodelay).
 *
 * Budgets (rpm, tpm): a sliding 60 s window in 1 s slots. A request or
 * token counted during second s (now_ms / 1000) stops counting when second
 * s + 60 begins. A request is admitted while the window holds fewer than
 * rpm requests and fewer than tpm tokens. Tokens are charged after the
 * fact (gs_ratelimit_charge_tokens), so a request admitted just under the
 * budget may end above it; the key is then refused until enough of the
 * window has expired.
 *
 * Streams: every admitted request with a key holds one slot of that key
 * until gs_ratelimit_release; `streams` caps the slots.
 *
 * Refusals check, in this order: per-IP rate, key rate, rpm, tpm,
 * streams. The verdict names the first limit that refused; its
 * retry_after_s is the largest wait among all that refused (so a client
 * that waits that long is not refused for a reason known now): for a rate,
 * the whole seconds (rounded up, at least 1) until the bucket admits; for
 * rpm/tpm, the seconds until the window has room; 1 for streams.
 *
 * Tables: per-key and per-IP entries live in two hash tables (SipHash with
 * the configured seed) with a cap each and an LRU list. When a new entry
 * would pass the cap, the least recently used IDLE entry among the 16
 * oldest is dropped. Idle means dropping it changes no later decision:
 * its bucket has leaked to where the next request would get excess 0 (as
 * a fresh entry does), no stream is in flight, and its 60 s window is
 * empty. If none of the 16 is idle, the oldest without streams in flight
 * is dropped anyway (as nginx does when its zone is full: that client's
 * counters restart, in its favour); if all 16 hold streams, the request is
 * refused with reason "capacity" and Retry-After 1.
 *
 * Reconfigure (SIGHUP) swaps the limits and caps and keeps every entry:
 * buckets, windows and stream counts carry over and are judged by the new
 * limits from the next request on (a smaller burst refuses until the
 * excess has leaked below it; no stream in flight is dropped).
 *
 * Threading: not thread-safe; one object per gateway, used on its loop
 * thread. */
#ifndef GS_RATELIMIT_H
#define GS_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "gateway/auth.h"

typedef struct gs_ratelimit gs_ratelimit; /* opaque */

/* Limits of one key. 0 means unlimited, field by field. */
typedef struct {
    uint32_t rate_mrps; /* milli-requests per second (500 = 0.5/s); <= 1e9 */
    uint32_t burst;     /* requests beyond the one being served; <= 1e6 */
    uint32_t rpm;       /* requests per 60 s window */
    uint64_t tpm;       /* output tokens per 60 s window */
    uint32_t streams;   /* requests in flight */
} gs_ratelimit_limits;

typedef struct {
    gs_ratelimit_limits key; /* every API key, unless its keys-file line overrides */
    uint32_t ip_rate_mrps;   /* per client IP (0: no per-IP limit) */
    uint32_t ip_burst;
    uint32_t max_keys; /* key entries kept; 0: 65536 */
    uint32_t max_ips;  /* IP entries kept; 0: 100000 */
    uint64_t seed;     /* hash seed (pass random bytes); read by _new only */
} gs_ratelimit_config;

/* Who a request is from. All borrowed for the call only. */
typedef struct {
    const char *key;                  /* gs_auth_key.id; NULL: no key (auth off) */
    const gs_auth_limits *key_limits; /* that key's overrides; NULL: defaults */
    const char *ip;                   /* client address as text; NULL: no IP limit */
} gs_ratelimit_who;

typedef struct {
    /* 0 when admitted; else seconds for Retry-After (>= 1) */
    uint32_t retry_after_s;
    /* NULL when admitted; else "rate", "rpm", "tpm", "concurrency" or
     * "capacity" (static strings) */
    const char *reason;
    /* NULL when admitted; "ip" or "key": whose limit refused */
    const char *scope;
} gs_ratelimit_verdict;

typedef struct {
    size_t n_keys, n_ips; /* entries now */
    uint64_t evicted_idle, evicted_forced;
    uint64_t admitted, refused;
} gs_ratelimit_stats;

/* cfg is copied. *out owns a new limiter (gs_ratelimit_free). GS_EINVAL
 * (d names the field), GS_ENOMEM. */
int gs_ratelimit_new(const gs_ratelimit_config *cfg, gs_ratelimit **out, gs_diag *d);
void gs_ratelimit_free(gs_ratelimit *rl); /* NULL: no-op */

/* Swaps limits and caps (cfg copied; its seed is ignored), keeping all
 * state. GS_EINVAL leaves the old config in place. */
int gs_ratelimit_reconfigure(gs_ratelimit *rl, const gs_ratelimit_config *cfg, gs_diag *d);

/* The one decision. 0: admitted (state updated; with a key, one stream
 * slot is held until gs_ratelimit_release). GS_EBUSY: refused, nothing
 * changed, *v says why and for how long. GS_ENOMEM: no memory for a new
 * entry (refuse with 503). *v is always written. */
int gs_ratelimit_admit(gs_ratelimit *rl, const gs_ratelimit_who *who, uint64_t now_ms,
                       gs_ratelimit_verdict *v);

/* Ends a request admitted for key (borrowed; NULL: no-op returning 0):
 * frees its stream slot. GS_ENOENT when the key holds no slot (a caller
 * bug; nothing changes). */
int gs_ratelimit_release(gs_ratelimit *rl, const char *key);

/* Adds n output tokens to key's window at now_ms (call it before the
 * release, as the tokens stream or once at the end). 0, GS_ENOMEM, or
 * GS_EBUSY when the key has no entry and none can be made (not recorded). */
int gs_ratelimit_charge_tokens(gs_ratelimit *rl, const char *key, uint64_t n, uint64_t now_ms);

/* Streams key holds now (0 when it has no entry). */
uint32_t gs_ratelimit_streams(const gs_ratelimit *rl, const char *key);
void gs_ratelimit_get_stats(const gs_ratelimit *rl, gs_ratelimit_stats *out);

/* The limits a key gets: cfg->key with the fields set in ovr (may be
 * NULL) replaced. */
void gs_ratelimit_effective(const gs_ratelimit_config *cfg, const gs_auth_limits *ovr,
                            gs_ratelimit_limits *out);

#endif
