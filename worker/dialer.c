/* dialer.c - connections to every address of every --connect URL
 * (dialer.h).
 *
 * Each URL is a `name` with a thread that resolves it and a list of
 * `target`s, one per address, each with a thread that dials it and holds
 * its connection. One mutex (dl->mu) and one condition variable (dl->cv,
 * broadcast on every change) guard all of it; the server's callbacks are
 * called without it.
 *
 * A target's connection calls back into the target (fwd_frame, fwd_close
 * forward to the server), so a target is freed only once it cannot be
 * called any more: by its name's thread after its own thread has ended
 * with the connection closed, or by gs_dialer_free once every connection
 * opened here has finished its on_close (dl->live == 0). */
#include "worker/dialer.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define RESOLVE_RETRY_MS 500 /* first retry of a name that does not resolve */
#define RESOLVE_SOON_MS 1000 /* re-resolution after a drop: not before this */
#define BUSY_POLL_MS 200     /* how often a retired connection's jobs are counted */
#define RETIRE_MISSES 2      /* good answers in a row without an address: it left DNS */

struct name;

typedef struct target {
    struct gs_dialer *dl;
    struct name *nm;
    struct target *next;
    char url[GS_URL_MAX]; /* numeric */
    pthread_t th;
    int done;            /* its thread has ended (join pending) */
    int misses;          /* good answers in a row without this address (dl->mu) */
    int closed;          /* the current connection's on_close has run */
    gs_ipc_conn_cbs cbs; /* forwarding callbacks, user = this target */
} target;

/* Gone from DNS (retired), with dl->mu held. */
static int retired(const target *t)
{
    return t->misses >= RETIRE_MISSES;
}

typedef struct name {
    struct gs_dialer *dl;
    const char *url; /* borrowed */
    pthread_t th;
    int started;
    target *targets;
    int resolve_soon; /* a connection dropped: resolve again soon */
    int failing;      /* resolutions failed in a row */
    int n_addrs;      /* in the last good answer (-1: none yet) */
} name;

struct gs_dialer {
    gs_dialer_params p;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping, joined;
    int live;      /* connections opened here whose on_close has not finished */
    int connected; /* connections held by target threads */
    name *names;
    int n_names;
};

static void wait_until(gs_dialer *dl, uint64_t at_ns)
{
    struct timespec ts = {(time_t)(at_ns / 1000000000u), (long)(at_ns % 1000000000u)};
    pthread_cond_timedwait(&dl->cv, &dl->mu, &ts);
}

/* ---- a connection's callbacks, forwarded ------------------------------------ */

static void fwd_frame(gs_ipc_conn *c, const gs_ipc_header *h, const uint8_t *body, void *user)
{
    target *t = user;
    t->dl->p.cbs.on_frame(c, h, body, t->dl->p.cbs.user);
}

static void fwd_close(gs_ipc_conn *c, int err, void *user)
{
    target *t = user;
    gs_dialer *dl = t->dl;
    dl->p.cbs.on_close(c, err, dl->p.cbs.user);
    /* Last: once t->closed is seen, t may be freed. */
    pthread_mutex_lock(&dl->mu);
    t->closed = 1;
    t->nm->resolve_soon = 1; /* the gateway may have moved */
    dl->live--;
    pthread_cond_broadcast(&dl->cv);
    pthread_mutex_unlock(&dl->mu);
}

/* ---- one address: dial, hold, redial ---------------------------------------- */

/* With dl->mu held: waits while connection c is open. When t's address
 * leaves DNS the server drains c and c is closed once its gateway has no
 * job left here; if the address comes back first, c serves on. */
static void hold(target *t, gs_ipc_conn *c)
{
    gs_dialer *dl = t->dl;
    void *user = dl->p.cbs.user;
    int told = 0; /* what retire() last said */
    while (!dl->stopping && !t->closed) {
        if (retired(t) != told) {
            told = retired(t);
            pthread_mutex_unlock(&dl->mu);
            gs_log_info("--connect %s: %s %s", t->nm->url, t->url,
                        told ? "left DNS: its gateway gets no more jobs from here (drain); the "
                               "connection closes once its jobs are done"
                             : "is back in DNS: serving it again");
            dl->p.retire(c, told, user);
            pthread_mutex_lock(&dl->mu);
            continue;
        }
        if (!told) {
            pthread_cond_wait(&dl->cv, &dl->mu);
            continue;
        }
        pthread_mutex_unlock(&dl->mu);
        int busy = dl->p.busy(c, user);
        pthread_mutex_lock(&dl->mu);
        if (busy == 0 && retired(t) && !t->closed && !dl->stopping) {
            pthread_mutex_unlock(&dl->mu);
            gs_log_info("--connect %s: %s has no job left here: closing its connection", t->nm->url,
                        t->url);
            gs_ipc_conn_close(c); /* on_close follows: t->closed */
            pthread_mutex_lock(&dl->mu);
            while (!dl->stopping && !t->closed)
                pthread_cond_wait(&dl->cv, &dl->mu);
            return;
        }
        wait_until(dl, gs_clock_now_ns() + (uint64_t)BUSY_POLL_MS * 1000000u);
    }
}

static void *target_main(void *arg)
{
    target *t = arg;
    gs_dialer *dl = t->dl;
    int backoff_ms = BACKOFF_MIN_MS, warned = 0;
    pthread_mutex_lock(&dl->mu);
    while (!dl->stopping && !retired(t)) {
        t->closed = 0; /* no connection now: the next on_close is the next one's */
        pthread_mutex_unlock(&dl->mu);
        gs_ipc_conn *c = NULL;
        gs_diag d;
        gs_diag_clear(&d);
        int rc = gs_ipc_dial(t->url, &t->cbs, dl->p.dial_timeout_ms, &c, &d);
        pthread_mutex_lock(&dl->mu);
        if (rc == 0) {
            dl->live++;
            dl->connected++;
            backoff_ms = BACKOFF_MIN_MS;
            warned = 0;
            pthread_mutex_unlock(&dl->mu);
            gs_ipc_conn_ref(c); /* one for the server (on_open), one held here */
            dl->p.cbs.on_open(c, dl->p.cbs.user);
            pthread_mutex_lock(&dl->mu);
            hold(t, c);
            dl->connected--;
            pthread_mutex_unlock(&dl->mu);
            gs_ipc_conn_unref(c);
            pthread_mutex_lock(&dl->mu);
        } else if (!warned++) {
            gs_log_warn("--connect %s: %s; retrying", t->nm->url, d.msg);
        }
        uint64_t at = gs_clock_now_ns() + (uint64_t)backoff_ms * 1000000u;
        while (!dl->stopping && !retired(t) && gs_clock_now_ns() < at)
            wait_until(dl, at);
        backoff_ms = backoff_ms < BACKOFF_MAX_MS / 2 ? 2 * backoff_ms : BACKOFF_MAX_MS;
    }
    t->done = 1;
    pthread_cond_broadcast(&dl->cv);
    pthread_mutex_unlock(&dl->mu);
    return NULL;
}

/* ---- one URL: resolve, follow the answer ------------------------------------ */

/* With dl->mu held: frees the targets whose thread has ended. Only while
 * running: a target that ended without stopping has no open connection. */
static void reap(name *nm)
{
    for (target **pp = &nm->targets; *pp;) {
        target *t = *pp;
        if (!t->done || nm->dl->stopping) {
            pp = &t->next;
            continue;
        }
        *pp = t->next;
        pthread_join(t->th, NULL); /* it has only its return left */
        free(t);
    }
}

/* With dl->mu held: 1 when another URL already holds a target for url
 * (two --connect names for one gateway: one connection, or the gateway
 * would count this worker twice). */
static int held_elsewhere(const name *nm, const char *url)
{
    for (int i = 0; i < nm->dl->n_names; i++) {
        const name *o = &nm->dl->names[i];
        if (o == nm)
            continue;
        for (const target *t = o->targets; t; t = t->next)
            if (!t->done && !retired(t) && !strcmp(t->url, url))
                return 1;
    }
    return 0;
}

/* With dl->mu held: retires the targets whose address is missing from
 * set and was missing from the answer before too (one partial answer, a
 * truncated reply or a pod's brief readiness flap, does not cut a gateway
 * off), takes back those that are in set, and starts a target for each
 * new address. */
static void follow(name *nm, const gs_addr_set *set)
{
    gs_dialer *dl = nm->dl;
    for (target *t = nm->targets; t; t = t->next) {
        if (t->done)
            continue;
        if (gs_addr_set_has(set, t->url))
            t->misses = 0;
        else if (t->misses < RETIRE_MISSES)
            t->misses++;
    }
    for (int i = 0; i < set->n; i++) {
        target *t = nm->targets;
        while (t && (t->done || strcmp(t->url, set->url[i])))
            t = t->next;
        if (t || held_elsewhere(nm, set->url[i]))
            continue;
        t = calloc(1, sizeof *t);
        if (!t) {
            gs_log_error("--connect %s: out of memory: %s not dialed now", nm->url, set->url[i]);
            continue;
        }
        t->dl = dl;
        t->nm = nm;
        memcpy(t->url, set->url[i], sizeof t->url);
        t->cbs = (gs_ipc_conn_cbs){t, NULL, fwd_frame, fwd_close, dl->p.cbs.max_body};
        if (pthread_create(&t->th, NULL, target_main, t)) {
            gs_log_error("--connect %s: cannot start a thread: %s not dialed now", nm->url, t->url);
            free(t);
            continue;
        }
        if (strcmp(t->url, nm->url))
            gs_log_info("--connect %s: dialing %s", nm->url, t->url);
        t->next = nm->targets;
        nm->targets = t;
    }
    pthread_cond_broadcast(&dl->cv);
}

static void *name_main(void *arg)
{
    name *nm = arg;
    gs_dialer *dl = nm->dl;
    gs_addr_set *set = malloc(sizeof *set);
    int retry_ms = RESOLVE_RETRY_MS;
    pthread_mutex_lock(&dl->mu);
    while (!dl->stopping) {
        nm->resolve_soon = 0;
        pthread_mutex_unlock(&dl->mu);
        gs_diag d;
        gs_diag_clear(&d);
        int rc = set ? dl->p.resolve(nm->url, set, &d)
                     : gs_diag_set(&d, GS_ENOMEM, "out of memory for the answer");
        pthread_mutex_lock(&dl->mu);
        if (dl->stopping)
            break;
        uint64_t now = gs_clock_now_ns(), wait_ms;
        if (rc == 0) {
            if (nm->failing)
                gs_log_info("--connect %s resolves again, after %d failed attempt(s)", nm->url,
                            nm->failing);
            if (set->n != nm->n_addrs && (set->n > 1 || nm->n_addrs > 1))
                gs_log_info("--connect %s: %d address(es)", nm->url, set->n);
            if (d.msg[0] && nm->n_addrs != set->n)
                gs_log_warn("--connect %s: %s", nm->url, d.msg);
            nm->n_addrs = set->n;
            nm->failing = 0;
            retry_ms = RESOLVE_RETRY_MS;
            reap(nm);
            follow(nm, set);
            wait_ms = (uint64_t)dl->p.resolve_interval_ms;
        } else {
            /* Nothing changes: a name not in DNS yet (pods start before
             * their records exist) or a DNS outage must not cut the
             * connections that work. */
            if (!nm->failing++)
                gs_log_warn("--connect %s: %s; retrying (connections up stay up)", nm->url, d.msg);
            reap(nm);
            wait_ms = (uint64_t)retry_ms;
            retry_ms =
                retry_ms < dl->p.resolve_interval_ms / 2 ? 2 * retry_ms : dl->p.resolve_interval_ms;
        }
        const uint64_t at = now + wait_ms * 1000000u, soon = now + RESOLVE_SOON_MS * 1000000ull;
        for (;;) {
            uint64_t until = nm->resolve_soon && soon < at ? soon : at;
            if (dl->stopping || gs_clock_now_ns() >= until)
                break;
            wait_until(dl, until);
        }
    }
    pthread_mutex_unlock(&dl->mu);
    free(set);
    return NULL;
}

/* ---- lifetime ---------------------------------------------------------------- */

int gs_dialer_connected(gs_dialer *dl)
{
    pthread_mutex_lock(&dl->mu);
    int n = dl->connected;
    pthread_mutex_unlock(&dl->mu);
    return n;
}

int gs_dialer_new(const gs_dialer_params *p, gs_dialer **out, gs_diag *d)
{
    *out = NULL;
    if (!p || p->n_urls < 0 || (p->n_urls && !p->urls) || !p->cbs.on_open || !p->cbs.on_frame ||
        !p->cbs.on_close || !p->retire || !p->busy)
        return gs_diag_set(d, GS_EINVAL, "dialer: missing URLs or callbacks");
    for (int i = 0; i < p->n_urls; i++) {
        gs_diag ud;
        if (gs_url_parse(p->urls[i], NULL, &ud))
            return gs_diag_set(d, GS_EINVAL, "--connect %s", ud.msg);
    }
    gs_dialer *dl = calloc(1, sizeof *dl);
    if (!dl)
        return gs_diag_set(d, GS_ENOMEM, "dialer: out of memory");
    dl->p = *p;
    if (dl->p.resolve_interval_ms <= 0)
        dl->p.resolve_interval_ms = 10000;
    if (dl->p.dial_timeout_ms <= 0)
        dl->p.dial_timeout_ms = 2000;
    if (!dl->p.resolve)
        dl->p.resolve = gs_resolve_url;
    pthread_mutex_init(&dl->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* gs_clock_now_ns's clock */
    pthread_cond_init(&dl->cv, &ca);
    pthread_condattr_destroy(&ca);
    dl->names = calloc((size_t)p->n_urls + 1, sizeof *dl->names);
    if (!dl->names) {
        gs_dialer_free(dl);
        return gs_diag_set(d, GS_ENOMEM, "dialer: out of memory");
    }
    /* Held while the names are filled in: their threads read each
     * other's (held_elsewhere) and start with this lock. */
    pthread_mutex_lock(&dl->mu);
    for (int i = 0; i < p->n_urls; i++) {
        name *nm = &dl->names[i];
        nm->dl = dl;
        nm->url = p->urls[i];
        nm->n_addrs = -1;
        dl->n_names++;
        if (pthread_create(&nm->th, NULL, name_main, nm)) {
            pthread_mutex_unlock(&dl->mu);
            gs_dialer_free(dl);
            return gs_diag_set(d, GS_ENOMEM, "dialer: cannot start a thread");
        }
        nm->started = 1;
    }
    pthread_mutex_unlock(&dl->mu);
    *out = dl;
    return 0;
}

void gs_dialer_stop(gs_dialer *dl)
{
    if (!dl)
        return;
    pthread_mutex_lock(&dl->mu);
    dl->stopping = 1;
    pthread_cond_broadcast(&dl->cv);
    int joined = dl->joined;
    dl->joined = 1;
    pthread_mutex_unlock(&dl->mu);
    if (joined)
        return;
    /* The name threads first: after them no target is added. */
    for (int i = 0; i < dl->n_names; i++)
        if (dl->names[i].started)
            pthread_join(dl->names[i].th, NULL);
    for (int i = 0; i < dl->n_names; i++)
        for (target *t = dl->names[i].targets; t; t = t->next)
            pthread_join(t->th, NULL);
}

void gs_dialer_free(gs_dialer *dl)
{
    if (!dl)
        return;
    gs_dialer_stop(dl);
    pthread_mutex_lock(&dl->mu);
    const uint64_t end = gs_clock_now_ns() + 5000000000ull;
    while (dl->live > 0 && gs_clock_now_ns() < end)
        wait_until(dl, end);
    int stuck = dl->live;
    pthread_mutex_unlock(&dl->mu);
    if (stuck > 0) {
        gs_log_error("dialer: %d connection(s) still open after 5 s; leaving it allocated", stuck);
        return;
    }
    for (int i = 0; i < dl->n_names; i++)
        while (dl->names[i].targets) {
            target *t = dl->names[i].targets;
            dl->names[i].targets = t->next;
            free(t);
        }
    free(dl->names);
    pthread_cond_destroy(&dl->cv);
    pthread_mutex_destroy(&dl->mu);
    free(dl);
}
