/* dispatch.c - the gateway's worker registry and job table (dispatch.h).
 *
 * Owns: one dworker per URL (its connection, dial state, last heartbeat),
 * the jobs in flight (id -> gs_djob), and the queue through which nng's
 * threads hand frames and closes to the loop.
 *
 * Connections: a worker is dialed on libuv's thread pool (gs_ipc_dial
 * blocks up to its timeout), redialed with a backoff while it is down.
 * Frames and closes are queued with the connection they came on and
 * handled on the loop in arrival order; a frame from a connection the
 * worker does not hold yet is its first one, so the worker adopts it
 * (the dial's completion may be handled after the worker's hello). A
 * close is the last item of a connection, so a stale connection is never
 * adopted.
 *
 * A job keeps its encoded frame until its first token, so that it can be
 * resent if its worker dies or refuses it for load; job ids are unique in
 * this gateway (a worker keys jobs by connection and id).
 * Threading: the loop thread, except post() (nng threads), under ds->mu. */
#include "gateway/dispatch.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/file.h"
#include "common/ipc_conn.h"
#include "common/log.h"
#include "gateway/dispatch_policy.h"

#define JOB_BUCKETS 1024
#define MAX_WORKERS 256

typedef enum { W_DOWN, W_DIALING, W_CONNECTED, W_UP } wstate;

typedef struct dworker {
    gs_dispatch *ds;
    int index;
    int dynamic; /* connected to our listener (a worker's --connect): no redial */
    int in_use;  /* a dynamic slot holds a worker (static slots always do) */
    int timer_ready;
    char *url;
    gs_ipc_conn *conn; /* held reference while connected */
    int conn_dead;     /* declared dead: ignore its frames until its close */
    wstate state;
    uint64_t last_hb_ns;
    gs_ipc_stats hb;
    int draining;
    uint32_t pid;
    char name[GS_IPC_MAX_NAME + 1], model[GS_IPC_MAX_NAME + 1];
    int32_t max_model_len, max_queue, n_pages;
    int32_t sent_since_hb;
    int32_t n_jobs;
    uv_timer_t retry;
    uint32_t backoff_ms;
    uv_work_t dial;
    gs_ipc_conn *dialed;
    int dial_rc;
    char dial_err[256];
    int warned;
    gs_ipc_conn_cbs cbs;
} dworker;

struct gs_djob {
    gs_djob *hnext;
    gs_dispatch *ds;
    uint64_t id;
    dworker *w;
    int started;
    uint8_t *frame; /* the encoded JOB frame, until the first token */
    size_t frame_len;
    gs_djob_cbs cbs;
    void *user;
    uint8_t tried[MAX_WORKERS / 8];
    int resends;
};

/* A frame, a close or a new accepted connection, queued by an nng thread
 * for the loop. w is NULL for accepted connections (the loop finds or
 * makes their worker slot). */
typedef struct item {
    struct item *next;
    dworker *w;
    gs_ipc_conn *conn; /* one reference */
    int is_close, is_open, err;
    gs_ipc_header h;
    uint8_t *body;
    uint64_t recv_ns; /* when the nng thread had it */
} item;

struct gs_dispatch {
    gs_dispatch_params p;
    uint64_t frame_ns; /* recv_ns of the item being handled */
    uv_loop_t *loop;
    dworker *w;
    int n;
    pthread_mutex_t mu;
    item *head, *tail;
    uv_async_t async;
    uv_timer_t tick;
    gs_djob *jobs[JOB_BUCKETS];
    int32_t n_jobs;
    uint64_t next_id;
    uint64_t resends, deaths;
    int closing, handles_open, async_closed;
    /* Connections whose callbacks may still queue items: the async handle
     * (and so the dispatcher) stays until each has queued its close. */
    atomic_int live_conns;
    char *name;
    char *key;                 /* the cluster key, or NULL */
    gs_ipc_listener *listener; /* workers that dial us (--connect) */
    gs_ipc_conn_cbs acc_cbs;
};

static gs_djob **job_slot(gs_dispatch *ds, uint64_t id)
{
    return &ds->jobs[(id * 0x9E3779B97F4A7C15ull >> 40) % JOB_BUCKETS];
}

static gs_djob *job_find(gs_dispatch *ds, uint64_t id)
{
    for (gs_djob *j = *job_slot(ds, id); j; j = j->hnext)
        if (j->id == id)
            return j;
    return NULL;
}

static void job_forget(gs_djob *j)
{
    gs_dispatch *ds = j->ds;
    for (gs_djob **pp = job_slot(ds, j->id); *pp; pp = &(*pp)->hnext)
        if (*pp == j) {
            *pp = j->hnext;
            ds->n_jobs--;
            break;
        }
    if (j->w) {
        j->w->n_jobs--;
        /* A job that ended no longer weighs on its worker's backlog, even
         * before the next heartbeat says so (at hundreds of jobs a second,
         * a heartbeat period sends more jobs than a queue bound). */
        if (j->w->sent_since_hb > 0)
            j->w->sent_since_hb--;
    }
    free(j->frame);
    free(j);
}

/* ---- nng threads -> loop ---------------------------------------------------- */

static void post_to(gs_dispatch *ds, dworker *w, gs_ipc_conn *c, int kind, int err,
                    const gs_ipc_header *h, const uint8_t *body);

static void post(dworker *w, gs_ipc_conn *c, int is_close, int err, const gs_ipc_header *h,
                 const uint8_t *body)
{
    post_to(w->ds, w, c, is_close, err, h, body);
}

/* kind: 0 frame, 1 close, 2 open (accepted) */
static void post_to(gs_dispatch *ds, dworker *w, gs_ipc_conn *c, int kind, int err,
                    const gs_ipc_header *h, const uint8_t *body)
{
    item *it = calloc(1, sizeof *it);
    if (!it) {
        gs_log_error("dispatch: out of memory: a frame from %s is lost", gs_ipc_conn_peer(c));
        return;
    }
    it->w = w;
    it->conn = c;
    gs_ipc_conn_ref(c);
    it->is_close = kind == 1;
    it->is_open = kind == 2;
    it->recv_ns = gs_clock_now_ns();
    it->err = err;
    if (h) {
        it->h = *h;
        it->body = malloc(h->body_len ? h->body_len : 1);
        if (!it->body) {
            gs_log_error("dispatch: out of memory: a %u-byte frame from %s is lost",
                         (unsigned)h->body_len, gs_ipc_conn_peer(c));
            gs_ipc_conn_unref(c);
            free(it);
            return;
        }
        memcpy(it->body, body, h->body_len);
    }
    pthread_mutex_lock(&ds->mu);
    if (ds->tail)
        ds->tail->next = it;
    else
        ds->head = it;
    ds->tail = it;
    pthread_mutex_unlock(&ds->mu);
    uv_async_send(&ds->async);
}

static void on_frame(gs_ipc_conn *c, const gs_ipc_header *h, const uint8_t *body, void *user)
{
    post(user, c, 0, 0, h, body);
}

static void on_close(gs_ipc_conn *c, int err, void *user)
{
    post(user, c, 1, err, NULL, NULL);
}

/* Connections accepted on the listener: their worker slot is found on
 * the loop. The listener's reference is handed to the open item. */
static void acc_on_open(gs_ipc_conn *c, void *user)
{
    gs_dispatch *ds = user;
    atomic_fetch_add(&ds->live_conns, 1);
    post_to(user, NULL, c, 2, 0, NULL, NULL);
    gs_ipc_conn_unref(c);
}

static void acc_on_frame(gs_ipc_conn *c, const gs_ipc_header *h, const uint8_t *body, void *user)
{
    post_to(user, NULL, c, 0, 0, h, body);
}

static void acc_on_close(gs_ipc_conn *c, int err, void *user)
{
    post_to(user, NULL, c, 1, err, NULL, NULL);
}

/* ---- sending and resending ---------------------------------------------------- */

static int send_to(gs_djob *j, dworker *w)
{
    uint8_t *copy = malloc(j->frame_len);
    if (!copy)
        return GS_ENOMEM;
    memcpy(copy, j->frame, j->frame_len);
    int rc = gs_ipc_conn_send(w->conn, copy, j->frame_len);
    if (rc)
        return rc;
    if (j->w)
        j->w->n_jobs--;
    j->w = w;
    w->n_jobs++;
    w->sent_since_hb++;
    j->tried[w->index / 8] |= (uint8_t)(1u << (w->index % 8));
    return 0;
}

/* The least-loaded worker that has not had this job yet, or NULL. */
static dworker *pick(gs_dispatch *ds, const gs_djob *j)
{
    gs_worker_load load[MAX_WORKERS];
    for (int i = 0; i < ds->n; i++) {
        const dworker *w = &ds->w[i];
        gs_worker_load *l = &load[i];
        memset(l, 0, sizeof *l);
        l->up = w->state == W_UP && w->conn && !w->conn_dead;
        l->draining = w->draining;
        l->excluded = j && (j->tried[i / 8] >> (i % 8) & 1);
        l->n_running = w->hb.n_running;
        l->n_waiting = w->hb.n_waiting;
        l->n_queued = w->hb.n_queued;
        l->max_queue = w->max_queue;
        l->n_free_pages = w->hb.n_free_pages;
        l->sent_since_heartbeat = w->sent_since_hb;
    }
    int i = gs_dispatch_pick(load, ds->n);
    if (i < 0) {
        /* Every worker looks full from here: the estimate may be stale, so
         * the least loaded one decides (it refuses with GS_EOVERLOAD if it
         * is full, and the job goes on to the next). */
        for (int k = 0; k < ds->n; k++)
            load[k].max_queue = 0;
        i = gs_dispatch_pick(load, ds->n);
    }
    return i < 0 ? NULL : &ds->w[i];
}

/* Sends j to another worker; 0, or the code to fail it with. */
static int redispatch(gs_djob *j)
{
    for (;;) {
        dworker *w = pick(j->ds, j);
        if (!w)
            return GS_EOVERLOAD;
        if (send_to(j, w) == 0)
            return 0;
        j->tried[w->index / 8] |= (uint8_t)(1u << (w->index % 8));
    }
}

static void fail(gs_djob *j, int code, const char *msg)
{
    gs_djob_cbs cbs = j->cbs;
    void *user = j->user;
    job_forget(j);
    cbs.on_error(user, code, msg);
}

/* w is gone (closed or declared dead): its jobs go elsewhere or fail. */
static void worker_lost(dworker *w, const char *why)
{
    gs_dispatch *ds = w->ds;
    int resent = 0, failed = 0;
    for (int b = 0; b < JOB_BUCKETS; b++) {
        gs_djob *next;
        for (gs_djob *j = ds->jobs[b]; j; j = next) {
            next = j->hnext;
            if (j->w != w)
                continue;
            if (!j->started && ds->p.max_resends >= 0 && j->resends < ds->p.max_resends &&
                redispatch(j) == 0) {
                j->resends++;
                ds->resends++;
                resent++;
                continue;
            }
            failed++;
            fail(j, GS_EWORKER,
                 j->started ? "the worker serving this request failed mid-answer"
                            : "the worker serving this request failed and no other could take it");
        }
    }
    if (resent || failed)
        gs_log_warn("worker %s (%s) lost: %s; %d job(s) resent, %d failed", w->name, w->url, why,
                    resent, failed);
}

/* ---- dialing ------------------------------------------------------------------ */

/* One handle or dial fewer; the last one out frees the dispatcher. */
static void release(gs_dispatch *ds)
{
    if (--ds->handles_open > 0 || !ds->closing)
        return;
    for (item *it = ds->head, *next; it; it = next) {
        next = it->next;
        gs_ipc_conn_unref(it->conn);
        free(it->body);
        free(it);
    }
    for (int i = 0; i < ds->n; i++)
        free(ds->w[i].url);
    free(ds->w);
    free(ds->name);
    free(ds->key);
    pthread_mutex_destroy(&ds->mu);
    free(ds);
}

static void schedule_dial(dworker *w);

static void dial_work(uv_work_t *req)
{
    dworker *w = req->data;
    gs_diag d;
    gs_diag_clear(&d);
    w->dialed = NULL;
    atomic_fetch_add(&w->ds->live_conns, 1); /* before its callbacks can run */
    w->dial_rc = gs_ipc_dial(w->url, &w->cbs, 2000, &w->dialed, &d);
    if (w->dial_rc)
        atomic_fetch_sub(&w->ds->live_conns, 1);
    snprintf(w->dial_err, sizeof w->dial_err, "%s", d.msg);
}

static void handle_closed(uv_handle_t *h);

/* While closing, once no connection can queue an item any more, the async
 * handle goes (the last handle closed frees the dispatcher). */
static void maybe_close_async(gs_dispatch *ds)
{
    if (!ds->closing || ds->async_closed || atomic_load(&ds->live_conns) > 0)
        return;
    ds->async_closed = 1;
    uv_close((uv_handle_t *)&ds->async, handle_closed);
}

static void send_hello(dworker *w)
{
    gs_ipc_msg m = {.type = GS_IPC_HELLO};
    m.u.hello.role = GS_IPC_ROLE_GATEWAY;
    m.u.hello.pid = (uint32_t)getpid();
    m.u.hello.name.p = w->ds->name;
    m.u.hello.name.len = (uint32_t)strlen(w->ds->name);
    m.u.hello.model.p = "";
    m.u.hello.key.p = w->ds->key ? w->ds->key : "";
    m.u.hello.key.len = (uint32_t)strlen(m.u.hello.key.p);
    gs_ipc_conn_send_msg(w->conn, &m, NULL);
}

/* c is w's connection from now on (idempotent). */
static void adopt(dworker *w, gs_ipc_conn *c)
{
    if (w->conn == c)
        return;
    gs_ipc_conn_ref(c);
    w->conn = c;
    w->conn_dead = 0;
    w->state = W_CONNECTED;
    w->draining = 0;
    w->last_hb_ns = gs_clock_now_ns();
    send_hello(w);
}

static void dial_done(uv_work_t *req, int status)
{
    dworker *w = req->data;
    gs_dispatch *ds = w->ds;
    if (w->dial_rc == 0) {
        if (!ds->closing && (w->state == W_DIALING || w->conn == w->dialed))
            adopt(w, w->dialed);
        else if (w->conn != w->dialed)
            gs_ipc_conn_close(w->dialed); /* shutting down, or given up on meanwhile */
        gs_ipc_conn_unref(w->dialed);     /* adopt took its own */
        w->dialed = NULL;
    } else {
        if (w->state == W_DIALING)
            w->state = W_DOWN;
        if (!w->warned++)
            gs_log_warn("worker %s: %s; retrying", w->url, w->dial_err);
        if (!ds->closing)
            schedule_dial(w);
    }
    maybe_close_async(ds);
    release(ds);
}

static void retry_cb(uv_timer_t *t)
{
    dworker *w = t->data;
    if (w->ds->closing || w->state != W_DOWN)
        return;
    w->state = W_DIALING;
    w->dial.data = w;
    w->ds->handles_open++;
    if (uv_queue_work(w->ds->loop, &w->dial, dial_work, dial_done)) {
        w->ds->handles_open--;
        w->state = W_DOWN;
        schedule_dial(w);
    }
}

static void schedule_dial(dworker *w)
{
    uv_timer_start(&w->retry, retry_cb, w->backoff_ms, 0);
    w->backoff_ms = w->backoff_ms < 1000 ? w->backoff_ms * 2 : 2000;
}

/* ---- frames on the loop ----------------------------------------------------------- */

static void handle_event(dworker *w, const gs_ipc_event *e)
{
    gs_djob *j = job_find(w->ds, e->id);
    if (!j || j->w != w)
        return; /* cancelled, or given up on this worker */
    if (!j->started && (e->n_ids || e->text.len || e->finish)) {
        j->started = 1;
        free(j->frame);
        j->frame = NULL;
    }
    gs_djob_cbs cbs = j->cbs;
    void *user = j->user;
    if (e->finish != GS_IPC_FINISH_NONE)
        job_forget(j);
    cbs.on_event(user, e);
}

static void handle_error(dworker *w, const gs_ipc_error *e)
{
    char msg[GS_IPC_MAX_MESSAGE + 1];
    snprintf(msg, sizeof msg, "%.*s", (int)e->message.len, e->message.p);
    if (!e->id) {
        gs_log_warn("worker %s reports: %s", w->name, msg);
        return;
    }
    gs_djob *j = job_find(w->ds, e->id);
    if (!j || j->w != w)
        return;
    if ((e->code == GS_EOVERLOAD || e->code == GS_ESHUTDOWN) && !j->started) {
        if (e->code == GS_ESHUTDOWN)
            w->draining = 1;
        if (redispatch(j) == 0)
            return;
        fail(j, GS_EOVERLOAD, "every worker is busy; retry later");
        return;
    }
    fail(j, e->code, msg);
}

/* The slot of an accepted connection: the one holding it, or for its open
 * item a free dynamic slot. NULL: none (logged; the connection is closed). */
static dworker *accepted_slot(gs_dispatch *ds, item *it)
{
    for (int i = 0; i < ds->n; i++)
        if (ds->w[i].dynamic && ds->w[i].in_use && ds->w[i].conn == it->conn)
            return &ds->w[i];
    if (!it->is_open || ds->closing)
        return NULL;
    dworker *w = NULL;
    for (int i = 0; i < ds->n && !w; i++)
        if (ds->w[i].dynamic && !ds->w[i].in_use)
            w = &ds->w[i];
    if (!w && ds->n < MAX_WORKERS) {
        w = &ds->w[ds->n];
        memset(w, 0, sizeof *w);
        w->index = ds->n++;
    }
    if (!w) {
        gs_log_error("dispatch: %d workers already; refusing a worker from %s", MAX_WORKERS,
                     gs_ipc_conn_peer(it->conn));
        gs_ipc_conn_close(it->conn);
        return NULL;
    }
    int index = w->index;
    free(w->url);
    memset(w, 0, sizeof *w);
    w->ds = ds;
    w->index = index;
    w->dynamic = w->in_use = 1;
    char url[200];
    snprintf(url, sizeof url, "connected from %.150s", gs_ipc_conn_peer(it->conn));
    w->url = strdup(url);
    snprintf(w->name, sizeof w->name, "%s", url);
    if (!w->url) {
        w->in_use = 0;
        gs_ipc_conn_close(it->conn);
        return NULL;
    }
    adopt(w, it->conn);
    gs_log_info("a worker %s", url);
    return w;
}

static void handle_conn_item(gs_dispatch *ds, item *it, dworker *w);

static void handle_item(gs_dispatch *ds, item *it)
{
    dworker *w = it->w ? it->w : accepted_slot(ds, it);
    if (!w && it->is_open)
        gs_ipc_conn_close(it->conn); /* no slot (or shutting down): its close follows */
    if (w && !it->is_open)
        handle_conn_item(ds, it, w);
    if (it->is_close) {
        atomic_fetch_sub(&ds->live_conns, 1); /* the last item of a connection */
        maybe_close_async(ds);
    }
}

static void handle_conn_item(gs_dispatch *ds, item *it, dworker *w)
{
    if (it->is_close) {
        if (w->conn == it->conn) {
            if (!w->conn_dead)
                worker_lost(w, it->err ? gs_strerror(it->err) : "connection closed");
            gs_log_info("worker %s (%s) disconnected", w->name[0] ? w->name : "?", w->url);
            gs_ipc_conn_unref(w->conn);
            w->conn = NULL;
            w->conn_dead = 0;
            w->state = W_DOWN;
            memset(&w->hb, 0, sizeof w->hb);
            if (w->dynamic)
                w->in_use = 0; /* it dials again if it can; its slot is free */
            else if (!ds->closing)
                schedule_dial(w);
        }
        return;
    }
    if (w->conn != it->conn) {
        if (w->conn || ds->closing)
            return; /* a stale connection's frame */
        adopt(w, it->conn);
    }
    if (w->conn_dead)
        return;
    gs_ipc_msg m;
    gs_diag d;
    if (gs_ipc_decode(it->h.type, it->body, it->h.body_len, &m, &d)) {
        gs_log_warn("dropped a malformed %s frame from worker %s: %s", gs_ipc_type_name(it->h.type),
                    w->url, d.msg);
        return;
    }
    const char *refused = NULL;
    if (ds->key && m.type == GS_IPC_HELLO &&
        !gs_key_equal(m.u.hello.key.p, m.u.hello.key.len, ds->key))
        refused = m.u.hello.key.len ? "its hello has another cluster key"
                                    : "its hello has no cluster key";
    else if (ds->key && w->state != W_UP && m.type != GS_IPC_HELLO)
        refused = "it sent another frame before its hello";
    if (refused) {
        gs_log_warn("refused the worker at %s: %s; closing the connection", w->url, refused);
        w->conn_dead = 1;
        gs_ipc_conn_close(w->conn);
        return;
    }
    switch (m.type) {
    case GS_IPC_HELLO:
        snprintf(w->name, sizeof w->name, "%.*s", (int)m.u.hello.name.len, m.u.hello.name.p);
        snprintf(w->model, sizeof w->model, "%.*s", (int)m.u.hello.model.len, m.u.hello.model.p);
        w->pid = m.u.hello.pid;
        w->max_model_len = m.u.hello.max_model_len;
        w->max_queue = m.u.hello.max_queue;
        w->n_pages = m.u.hello.n_pages;
        w->hb.n_pages = w->hb.n_free_pages = m.u.hello.n_pages;
        w->state = W_UP;
        w->last_hb_ns = gs_clock_now_ns();
        w->backoff_ms = 50;
        w->warned = 0;
        gs_log_info("worker %s (pid %u, %s) up at %s", w->name, w->pid, w->model, w->url);
        break;
    case GS_IPC_HEARTBEAT:
        w->hb = m.u.heartbeat;
        w->max_queue = m.u.heartbeat.max_queue;
        w->draining = m.u.heartbeat.draining;
        w->last_hb_ns = gs_clock_now_ns();
        w->sent_since_hb = 0;
        break;
    case GS_IPC_EVENT:
        handle_event(w, &m.u.event);
        break;
    case GS_IPC_ERROR:
        handle_error(w, &m.u.error);
        break;
    case GS_IPC_DRAIN:
        w->draining = 1;
        gs_log_info("worker %s is draining", w->name);
        break;
    default:
        gs_log_warn("ignored a %s frame from worker %s", gs_ipc_type_name(m.type), w->url);
    }
}

static void async_cb(uv_async_t *a)
{
    gs_dispatch *ds = a->data;
    pthread_mutex_lock(&ds->mu);
    item *it = ds->head;
    ds->head = ds->tail = NULL;
    pthread_mutex_unlock(&ds->mu);
    while (it) {
        item *next = it->next;
        ds->frame_ns = it->recv_ns;
        handle_item(ds, it);
        gs_ipc_conn_unref(it->conn);
        free(it->body);
        free(it);
        it = next;
    }
}

/* Heartbeat watch: a worker silent for heartbeat_timeout_ms is dead. */
static void tick_cb(uv_timer_t *t)
{
    gs_dispatch *ds = t->data;
    const uint64_t now = gs_clock_now_ns(), limit = (uint64_t)ds->p.heartbeat_timeout_ms * 1000000u;
    for (int i = 0; i < ds->n; i++) {
        dworker *w = &ds->w[i];
        if (!w->conn || w->conn_dead || now - w->last_hb_ns <= limit)
            continue;
        char why[96];
        snprintf(why, sizeof why, "no heartbeat for %llu ms",
                 (unsigned long long)((now - w->last_hb_ns) / 1000000u));
        gs_log_error("worker %s (pid %u, %s) declared dead: %s", w->name, w->pid, w->url, why);
        ds->deaths++;
        w->conn_dead = 1;
        w->state = W_CONNECTED;
        worker_lost(w, why);
        if (ds->p.kill_stalled && w->pid && !strncmp(w->url, "ipc://", 6) &&
            kill((pid_t)w->pid, SIGKILL) == 0)
            gs_log_warn("killed stalled worker pid %u so that it is restarted", w->pid);
        gs_ipc_conn_close(w->conn);
    }
}

/* ---- public ------------------------------------------------------------------------ */

int gs_dispatch_new(const gs_dispatch_params *p, gs_dispatch **out, gs_diag *d)
{
    *out = NULL;
    if (!p || !p->loop || p->n_urls < 0 || p->n_urls > MAX_WORKERS)
        return gs_diag_set(d, GS_EINVAL, "dispatch: 0 to %d worker URLs", MAX_WORKERS);
    gs_dispatch *ds = calloc(1, sizeof *ds);
    if (!ds)
        return GS_ENOMEM;
    ds->p = *p;
    ds->loop = p->loop;
    if (!ds->p.heartbeat_timeout_ms)
        ds->p.heartbeat_timeout_ms = 2000;
    if (!ds->p.max_resends)
        ds->p.max_resends = 2;
    ds->name = strdup(p->name ? p->name : "gateway");
    const int want_key = p->cluster_key && p->cluster_key[0];
    ds->key = want_key ? strdup(p->cluster_key) : NULL;
    ds->p.cluster_key = NULL; /* the copy is ds->key */
    ds->next_id = 1;
    ds->n = p->n_urls;
    ds->w = calloc(MAX_WORKERS, sizeof *ds->w); /* static slots, then accepted workers */
    if (!ds->name || !ds->w || (want_key && !ds->key)) {
        free(ds->name);
        free(ds->key);
        free(ds->w);
        free(ds);
        return GS_ENOMEM;
    }
    pthread_mutex_init(&ds->mu, NULL);
    uv_async_init(ds->loop, &ds->async, async_cb);
    ds->async.data = ds;
    uv_timer_init(ds->loop, &ds->tick);
    ds->tick.data = ds;
    uint32_t every = ds->p.heartbeat_timeout_ms / 8;
    uv_timer_start(&ds->tick, tick_cb, every ? every : 1, every ? every : 1);
    for (int i = 0; i < ds->n; i++) {
        dworker *w = &ds->w[i];
        w->ds = ds;
        w->index = i;
        w->url = strdup(p->urls[i]);
        w->backoff_ms = 50;
        w->cbs = (gs_ipc_conn_cbs){w, NULL, on_frame, on_close, 0};
        snprintf(w->name, sizeof w->name, "%s", p->urls[i]);
        uv_timer_init(ds->loop, &w->retry);
        w->timer_ready = 1;
        w->retry.data = w;
        uv_timer_start(&w->retry, retry_cb, 0, 0);
    }
    if (p->listen_url && p->listen_url[0]) {
        ds->acc_cbs = (gs_ipc_conn_cbs){ds, acc_on_open, acc_on_frame, acc_on_close, 0};
        gs_diag ld;
        int rc = gs_ipc_listen(p->listen_url, &ds->acc_cbs, &ds->listener, &ld);
        if (rc) {
            gs_diag_set(d, rc, "worker_listen %s: %s", p->listen_url, ld.msg);
            gs_dispatch_free(ds);
            return rc;
        }
        gs_log_info("accepting workers on %s", p->listen_url);
    }
    *out = ds;
    return 0;
}

static void handle_closed(uv_handle_t *h)
{
    release(h->data);
}

void gs_dispatch_free(gs_dispatch *ds)
{
    if (!ds)
        return;
    ds->closing = 1;
    gs_ipc_listener_close(ds->listener);
    ds->listener = NULL;
    for (int b = 0; b < JOB_BUCKETS; b++)
        while (ds->jobs[b])
            fail(ds->jobs[b], GS_ESHUTDOWN, "the gateway is shutting down");
    for (int i = 0; i < ds->n; i++) {
        dworker *w = &ds->w[i];
        if (w->conn) {
            gs_ipc_conn_close(w->conn);
            gs_ipc_conn_unref(w->conn);
            w->conn = NULL;
        }
    }
    /* Pending dials finish on the pool; their completion sees `closing`.
     * The handles: every worker's timer, the tick and the async. */
    ds->handles_open += 2;
    for (int i = 0; i < ds->n; i++) {
        if (!ds->w[i].timer_ready)
            continue;
        ds->handles_open++;
        ds->w[i].retry.data = ds;
        uv_close((uv_handle_t *)&ds->w[i].retry, handle_closed);
    }
    ds->tick.data = ds;
    uv_close((uv_handle_t *)&ds->tick, handle_closed);
    /* The async handle stays until every connection has queued its close
     * (the loop keeps handling items until then). */
    maybe_close_async(ds);
}

int gs_dispatch_submit(gs_dispatch *ds, const char *json, size_t len, const gs_ipc_str *images,
                       int n_images, const gs_djob_cbs *cbs, void *user, gs_djob **out)
{
    *out = NULL;
    if (n_images < 0 || n_images > GS_IPC_MAX_IMAGES || !cbs || !cbs->on_event || !cbs->on_error)
        return GS_EINVAL;
    if (ds->closing)
        return GS_ESHUTDOWN;
    gs_djob *j = calloc(1, sizeof *j);
    if (!j)
        return GS_ENOMEM;
    j->ds = ds;
    j->id = ds->next_id++;
    j->cbs = *cbs;
    j->user = user;
    gs_ipc_msg m = {.type = GS_IPC_JOB};
    m.u.job.id = j->id;
    m.u.job.request.p = json;
    m.u.job.request.len = (uint32_t)len;
    m.u.job.n_images = (uint32_t)n_images;
    for (int i = 0; i < n_images; i++)
        m.u.job.images[i] = images[i];
    gs_diag d;
    int rc =
        len > GS_IPC_MAX_REQUEST ? GS_ETOOBIG : gs_ipc_encode(&m, &j->frame, &j->frame_len, &d);
    if (!rc)
        rc = redispatch(j);
    if (rc) {
        free(j->frame);
        free(j);
        return rc == GS_ETOOBIG ? GS_EINVAL : rc;
    }
    gs_djob **slot = job_slot(ds, j->id);
    j->hnext = *slot;
    *slot = j;
    ds->n_jobs++;
    *out = j;
    return 0;
}

void gs_dispatch_cancel(gs_djob *j)
{
    if (!j)
        return;
    if (j->w && j->w->conn && !j->w->conn_dead) {
        gs_ipc_msg m = {.type = GS_IPC_CANCEL};
        m.u.cancel_id = j->id;
        gs_ipc_conn_send_msg(j->w->conn, &m, NULL);
    }
    job_forget(j);
}

void gs_dispatch_get_stats(const gs_dispatch *ds, gs_dispatch_stats *out)
{
    memset(out, 0, sizeof *out);
    for (int i = 0; i < ds->n; i++)
        out->workers_total += !ds->w[i].dynamic || ds->w[i].in_use;
    out->jobs_in_flight = ds->n_jobs;
    out->resends = ds->resends;
    out->worker_deaths = ds->deaths;
    for (int i = 0; i < ds->n; i++) {
        const dworker *w = &ds->w[i];
        if (w->state != W_UP || w->conn_dead)
            continue;
        out->workers_up++;
        out->kv_pages += w->hb.n_pages;
        out->kv_free_pages += w->hb.n_free_pages;
        out->running += w->hb.n_running;
        out->waiting += w->hb.n_waiting;
        out->queued += w->hb.n_queued;
        out->prefix_query_tokens += w->hb.prefix_query_tokens;
        out->prefix_hit_tokens += w->hb.prefix_hit_tokens;
        if (!out->model[0]) {
            snprintf(out->model, sizeof out->model, "%s", w->model);
            out->max_model_len = w->max_model_len;
        }
    }
}

uint64_t gs_dispatch_frame_ns(const gs_dispatch *ds)
{
    return ds->frame_ns;
}

int gs_dispatch_ready(const gs_dispatch *ds)
{
    for (int i = 0; i < ds->n; i++)
        if (ds->w[i].state == W_UP && !ds->w[i].conn_dead && !ds->w[i].draining)
            return 1;
    return 0;
}
