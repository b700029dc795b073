/* serve.c - the worker's server (serve.h): job table, admission, the prep
 * pool, the engine loop, events, cancels, heartbeats and drain.
 *
 * One mutex (s->mu) guards the job table, the prep queue, the engine
 * inbox, the cancel list, the connection list and the drain state. The
 * engine itself is touched only by the engine thread, never under the
 * lock except for gs_engine_busy (a read of engine-thread state by the
 * engine thread). A job (wjob) lives in the table from admission until
 * its ERROR frame or final EVENT has been queued; whoever removes it
 * frees it.
 *
 * Job states: PREP (queued for or in a prep thread) -> INBOX (built,
 * waiting for the engine thread) -> ENGINE (submitted). A cancel marks
 * the job; the prep thread, the engine thread at submit, or the engine
 * (through the cancel list and the event callback's return) acts on it. */
#include "worker/serve.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/file.h"
#include "common/ipc_conn.h"
#include "common/log.h"
#include "common/queue.h"
#include "worker/dialer.h"
#include "worker/tokenizer/utf8.h"

#define TABLE_SIZE 512
#define INLINE_PREP_MAX 4096 /* bytes of a text job's frame built on the receiving thread */

typedef enum { J_PREP, J_INBOX, J_ENGINE } jstate;

typedef struct wjob {
    struct gs_server *srv;
    struct wjob *qnext; /* prep queue or inbox */
    struct wjob *hnext; /* table chain */
    gs_ipc_conn *conn;  /* one reference */
    uint64_t gw_id;     /* the gateway's id on conn */
    int64_t eng_id;     /* the engine's id once submitted */
    jstate state;
    atomic_int cancel;
    int enc_failed; /* an event could not be encoded: the job ends in an error */
    uint8_t *body;  /* owned copy of the JOB frame body; msg points into it */
    gs_ipc_job msg;
    gs_request *req;
    uint64_t arrival_ns;
    size_t pix_need;     /* bytes of pixels its images will take (headers) */
    size_t pix_reserved; /* of s->pix_used, held for it until its images are built */
    int pix_waited;      /* it has waited for room (logged once) */
    /* Queue reports (engine thread only): the place last reported (0:
     * none outstanding; then the job is not on the server's report list),
     * the report round that last saw it waiting, and whether it started. */
    gs_queue rlink;
    int32_t q_pos;
    uint32_t q_round;
    int started;
    /* Held output (engine thread only): tokens and text of steps since the
     * last frame, while stream_interval_us has not passed. On s->held
     * while there is any. */
    gs_queue hlink;
    int32_t *held_ids;
    int32_t n_held, cap_held;
    char *held_text;
    size_t held_len, cap_text;
    uint64_t last_send_ns; /* 0: no frame with output yet */
} wjob;

struct gs_server {
    gs_server_params p;
    gs_engine *eng;
    int max_seqs;
    pthread_mutex_t mu;
    pthread_cond_t engine_cv, prep_cv, hb_cv;
    wjob *prep_head, *prep_tail, *inbox_head, *inbox_tail;
    int64_t *cancels; /* engine ids to cancel */
    int n_cancels, cap_cancels;
    wjob *table[TABLE_SIZE];
    int n_jobs, n_unstarted;
    gs_ipc_conn **conns;
    unsigned char *conn_ok; /* [cap_conns]: conns[i] sent a hello with the cluster key */
    int n_conns, cap_conns;
    int live_conns; /* connections opened and not yet through on_close */
    int draining, stopping, fatal;
    uint64_t drain_deadline;
    uint64_t start_ns;
    pthread_t *prep;
    int n_prep;
    pthread_t hb;
    int hb_started;
    gs_dialer *dialer; /* --connect */
    gs_ipc_listener **listeners;
    int n_listeners;
    gs_ipc_conn_cbs cbs;
    /* Queue reports (engine thread only). */
    gs_queue reported; /* wjob.rlink: jobs with a place reported */
    void **qusers;     /* [cap_qusers] scratch for gs_engine_queue */
    int32_t cap_qusers;
    uint32_t q_round;
    gs_queue held;        /* wjob.hlink: jobs holding output (engine thread only) */
    uint64_t interval_ns; /* stream_interval_us; 0: every step */
    uint64_t spin_ns;     /* idle_spin_us */
    atomic_uint wakes;    /* +1 at every wake of the engine thread */
    /* Image pixels held by jobs (s->mu): reserved when a prep thread takes
     * a job, then released image by image as the engine frees them. */
    size_t pix_budget, pix_used;
};

/* Wakes the engine thread (s->mu held): whether it sleeps on engine_cv or
 * is still spinning before it sleeps (gs_server_run). */
static void wake_engine(gs_server *s)
{
    atomic_fetch_add_explicit(&s->wakes, 1, memory_order_release);
    pthread_cond_broadcast(&s->engine_cv);
}

static uint64_t now_ns(void)
{
    return gs_clock_now_ns();
}

/* ---- job table (callers hold s->mu) --------------------------------------- */

static size_t slot(const gs_ipc_conn *c, uint64_t id)
{
    uint64_t h = (uint64_t)(uintptr_t)c * 0x9E3779B97F4A7C15ull ^ id * 0xC2B2AE3D27D4EB4Full;
    return (size_t)(h >> 32) % TABLE_SIZE;
}

static wjob *table_find(gs_server *s, const gs_ipc_conn *c, uint64_t id)
{
    for (wjob *j = s->table[slot(c, id)]; j; j = j->hnext)
        if (j->conn == c && j->gw_id == id)
            return j;
    return NULL;
}

static void table_remove(gs_server *s, wjob *j)
{
    wjob **pp = &s->table[slot(j->conn, j->gw_id)];
    while (*pp && *pp != j)
        pp = &(*pp)->hnext;
    if (*pp) {
        *pp = j->hnext;
        s->n_jobs--;
        if (j->state != J_ENGINE)
            s->n_unstarted--;
    }
    if (s->draining && s->n_jobs == 0)
        wake_engine(s);
}

static void job_free(wjob *j)
{
    if (!j)
        return;
    gs_request_free(j->req);
    free(j->held_ids);
    free(j->held_text);
    free(j->body);
    gs_ipc_conn_unref(j->conn);
    free(j);
}

/* Removes j from the table and frees it. */
static void job_done(gs_server *s, wjob *j)
{
    if (j->q_pos) /* engine thread: only it reports places */
        gs_queue_remove(&j->rlink);
    if (gs_queue_linked(&j->hlink)) /* engine thread too: only it holds output */
        gs_queue_remove(&j->hlink);
    pthread_mutex_lock(&s->mu);
    table_remove(s, j);
    pthread_mutex_unlock(&s->mu);
    job_free(j);
}

/* ---- frames out ----------------------------------------------------------- */

static void send_error(gs_ipc_conn *c, uint64_t id, int code, const char *msg)
{
    /* The message may quote client text cut mid-character: every invalid
     * UTF-8 byte becomes '?', so the frame always encodes (a frame that
     * does not encode would leave the job without an answer). */
    char text[GS_IPC_MAX_MESSAGE + 1];
    snprintf(text, sizeof text, "%s", msg ? msg : gs_strerror(code));
    size_t n = strlen(text), at;
    while ((at = gs_utf8_invalid_at((const uint8_t *)text, n)) < n)
        text[at] = '?';
    gs_ipc_msg m = {.type = GS_IPC_ERROR};
    m.u.error.id = id;
    m.u.error.code = code;
    m.u.error.message.p = text;
    m.u.error.message.len = (uint32_t)n;
    gs_diag d;
    gs_diag_clear(&d);
    if (gs_ipc_conn_send_msg(c, &m, &d) && d.msg[0]) {
        gs_log_warn("job %llu: error frame not sent (%s); sending the bare code",
                    (unsigned long long)id, d.msg);
        m.u.error.message.p = gs_strerror(code);
        m.u.error.message.len = (uint32_t)strlen(m.u.error.message.p);
        gs_ipc_conn_send_msg(c, &m, NULL);
    }
}

/* The final event of a job that never reached the engine (cancelled). */
static void send_final_unstarted(wjob *j, int finish, int err)
{
    gs_ipc_msg m = {.type = GS_IPC_EVENT};
    m.u.event.id = j->gw_id;
    m.u.event.finish = (uint8_t)finish;
    m.u.event.error = err;
    m.u.event.text.p = m.u.event.message.p = "";
    m.u.event.queue_ns = now_ns() - j->arrival_ns;
    gs_ipc_conn_send_msg(j->conn, &m, NULL);
}

static void send_hello(gs_server *s, gs_ipc_conn *c)
{
    gs_ipc_msg m = {.type = GS_IPC_HELLO};
    gs_ipc_hello *h = &m.u.hello;
    gs_engine_stats st;
    gs_engine_stats_snapshot(s->eng, &st);
    h->role = GS_IPC_ROLE_WORKER;
    h->pid = (uint32_t)getpid();
    h->name.p = s->p.name ? s->p.name : "worker";
    h->name.len = (uint32_t)strlen(h->name.p);
    h->model.p = s->p.model_name ? s->p.model_name : "";
    h->model.len = (uint32_t)strlen(h->model.p);
    h->max_model_len = s->p.env.max_model_len;
    h->page_size = st.page_size;
    h->n_pages = st.n_pages;
    h->max_queue = s->p.max_queue;
    h->key.p = s->p.cluster_key ? s->p.cluster_key : "";
    h->key.len = (uint32_t)strlen(h->key.p);
    gs_diag d;
    if (gs_ipc_conn_send_msg(c, &m, &d))
        gs_log_warn("hello to %s not sent: %s", gs_ipc_conn_peer(c), d.msg);
}

/* ---- connections ------------------------------------------------------------ */

static void add_conn(gs_server *s, gs_ipc_conn *c)
{
    pthread_mutex_lock(&s->mu);
    s->live_conns++; /* its on_close will come, whatever happens below */
    if (s->n_conns == s->cap_conns) {
        int cap = s->cap_conns ? 2 * s->cap_conns : 8;
        gs_ipc_conn **t = realloc(s->conns, (size_t)cap * sizeof *t);
        unsigned char *ok = t ? realloc(s->conn_ok, (size_t)cap) : NULL;
        if (t)
            s->conns = t;
        if (ok)
            s->conn_ok = ok;
        if (!t || !ok) {
            pthread_mutex_unlock(&s->mu);
            gs_log_error("out of memory: dropping connection from %s", gs_ipc_conn_peer(c));
            gs_ipc_conn_close(c);
            gs_ipc_conn_unref(c);
            return;
        }
        s->cap_conns = cap;
    }
    s->conn_ok[s->n_conns] = 0;
    s->conns[s->n_conns++] = c; /* the list holds the reference */
    int draining = s->draining;
    pthread_mutex_unlock(&s->mu);
    gs_log_info("gateway connected from %s", gs_ipc_conn_peer(c));
    send_hello(s, c);
    if (draining)
        gs_ipc_conn_send_msg(c, &(gs_ipc_msg){.type = GS_IPC_DRAIN}, NULL);
}

static void on_open(gs_ipc_conn *c, void *user)
{
    add_conn(user, c);
}

/* The gateway is gone: every job it sent is cancelled (its events would
 * go nowhere). */
static void on_close(gs_ipc_conn *c, int err, void *user)
{
    gs_server *s = user;
    gs_ipc_conn *drop = NULL;
    int n_cancelled = 0;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_conns; i++)
        if (s->conns[i] == c) {
            drop = c;
            s->conns[i] = s->conns[--s->n_conns];
            s->conn_ok[i] = s->conn_ok[s->n_conns];
            break;
        }
    for (int b = 0; b < TABLE_SIZE; b++)
        for (wjob *j = s->table[b]; j; j = j->hnext) {
            if (j->conn != c || atomic_exchange(&j->cancel, 1))
                continue;
            n_cancelled++;
            if (j->state == J_ENGINE && s->n_cancels < s->cap_cancels)
                s->cancels[s->n_cancels++] = j->eng_id;
        }
    wake_engine(s);
    pthread_mutex_unlock(&s->mu);
    gs_log_info("gateway at %s disconnected (%s); %d job(s) cancelled", gs_ipc_conn_peer(c),
                err ? gs_strerror(err) : "closed", n_cancelled);
    gs_ipc_conn_unref(drop);
    /* Last: gs_server_free waits for this before it frees the server. */
    pthread_mutex_lock(&s->mu);
    s->live_conns--;
    pthread_cond_broadcast(&s->hb_cv);
    pthread_mutex_unlock(&s->mu);
}

/* ---- dialed gateways that left DNS (--connect, dialer.h) ------------------------ */

/* A connection's data is &retired_mark while its gateway's address is out
 * of DNS: it is told DRAIN, and its heartbeats say draining, since each
 * heartbeat sets the gateway's view of the flag again. */
static char retired_mark;

static int conn_retired(gs_ipc_conn *c)
{
    return gs_ipc_conn_get_data(c) == &retired_mark;
}

static void on_retire(gs_ipc_conn *c, int on, void *user)
{
    gs_server *s = user;
    gs_ipc_conn_set_data(c, on ? &retired_mark : NULL);
    pthread_mutex_lock(&s->mu);
    int draining = s->draining;
    pthread_mutex_unlock(&s->mu);
    /* Taken back: the next heartbeat (draining 0) reopens it to jobs. */
    if (on && !draining)
        gs_ipc_conn_send_msg(c, &(gs_ipc_msg){.type = GS_IPC_DRAIN}, NULL);
}

/* Jobs of c's gateway here, in any state (a walk of the table: called a
 * few times a second, and only while a retired connection waits). */
static int on_busy(gs_ipc_conn *c, void *user)
{
    gs_server *s = user;
    int n = 0;
    pthread_mutex_lock(&s->mu);
    for (int b = 0; b < TABLE_SIZE; b++)
        for (wjob *j = s->table[b]; j; j = j->hnext)
            n += j->conn == c;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* ---- frames in -------------------------------------------------------------- */

static void prep_one(gs_server *s, wjob *j);

static void admit(gs_server *s, gs_ipc_conn *c, uint8_t *body, size_t len)
{
    gs_ipc_msg m;
    gs_diag d;
    if (gs_ipc_decode(GS_IPC_JOB, body, len, &m, &d)) {
        gs_log_warn("dropped a malformed job from %s: %s", gs_ipc_conn_peer(c), d.msg);
        free(body);
        return;
    }
    const uint64_t id = m.u.job.id;
    /* What its images will hold, from their headers (a few microseconds). */
    size_t pix_need = 0;
    if (m.u.job.n_images > 0 && m.u.job.n_images <= GS_IPC_MAX_IMAGES) {
        gs_request_blob blobs[GS_IPC_MAX_IMAGES];
        for (uint32_t i = 0; i < m.u.job.n_images; i++)
            blobs[i] = (gs_request_blob){m.u.job.images[i].p, m.u.job.images[i].len};
        pix_need = gs_request_pixel_bytes(&s->p.env, blobs, (int)m.u.job.n_images);
    }
    int refuse = 0;
    const char *why = NULL;
    char buf[160];
    wjob *j = NULL;
    int inline_prep = 0;
    pthread_mutex_lock(&s->mu);
    if (s->draining || s->fatal) {
        refuse = GS_ESHUTDOWN;
        why = "this worker is shutting down";
    } else if (id == 0 || table_find(s, c, id)) {
        refuse = GS_EINVAL;
        why = "job id 0 or already in use on this connection";
    } else if (s->n_jobs >= s->max_seqs + s->p.max_queue) {
        refuse = GS_EOVERLOAD;
        snprintf(buf, sizeof buf, "worker queue full (%d jobs running or queued)", s->n_jobs);
        why = buf;
    } else if (!(j = calloc(1, sizeof *j))) {
        refuse = GS_ENOMEM;
    } else {
        j->srv = s;
        j->conn = c;
        gs_ipc_conn_ref(c);
        j->gw_id = id;
        j->state = J_PREP;
        j->body = body;
        j->msg = m.u.job;
        j->arrival_ns = now_ns();
        j->pix_need = pix_need;
        size_t b = slot(c, id);
        j->hnext = s->table[b];
        s->table[b] = j;
        s->n_jobs++;
        s->n_unstarted++;
        /* A short text job is built here, on the receiving thread: that
         * takes a few tens of microseconds, less than waking a prep thread
         * for it. Images and long prompts go to the prep threads, so this
         * thread never stalls the connection for long. */
        inline_prep = m.u.job.n_images == 0 && len <= INLINE_PREP_MAX;
        if (!inline_prep) {
            if (s->prep_tail)
                s->prep_tail->qnext = j;
            else
                s->prep_head = j;
            s->prep_tail = j;
            pthread_cond_signal(&s->prep_cv);
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (refuse) {
        free(body);
        send_error(c, id, refuse, why);
    } else if (inline_prep) {
        prep_one(s, j);
    }
}

static void cancel(gs_server *s, gs_ipc_conn *c, uint64_t id)
{
    pthread_mutex_lock(&s->mu);
    wjob *j = table_find(s, c, id);
    if (j && !atomic_exchange(&j->cancel, 1) && j->state == J_ENGINE &&
        s->n_cancels < s->cap_cancels) {
        s->cancels[s->n_cancels++] = j->eng_id;
        wake_engine(s);
    } else if (j && j->state == J_PREP) {
        pthread_cond_broadcast(&s->prep_cv); /* it may wait for pixel room: answer it now */
    }
    pthread_mutex_unlock(&s->mu);
}

/* ---- the cluster key ----------------------------------------------------------- */

/* With a cluster key, whether c has sent a hello with it (else 1). */
static int conn_authed(gs_server *s, gs_ipc_conn *c)
{
    if (!s->p.cluster_key || !s->p.cluster_key[0])
        return 1;
    int ok = 0;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_conns; i++)
        if (s->conns[i] == c)
            ok = s->conn_ok[i];
    pthread_mutex_unlock(&s->mu);
    return ok;
}

/* c's first frame when a key is set: a hello with the key lets c in;
 * anything else closes it. */
static void check_hello(gs_server *s, gs_ipc_conn *c, const gs_ipc_header *h, const uint8_t *body)
{
    gs_ipc_msg m;
    gs_diag d;
    const char *why = NULL;
    if (h->type != GS_IPC_HELLO)
        why = "it sent another frame before its hello";
    else if (gs_ipc_decode(h->type, body, h->body_len, &m, &d))
        why = "its hello does not decode";
    else if (!gs_key_equal(m.u.hello.key.p, m.u.hello.key.len, s->p.cluster_key))
        why = m.u.hello.key.len ? "its hello has another cluster key"
                                : "its hello has no cluster key";
    if (why) {
        gs_log_warn("refused the gateway at %s: %s; closing the connection", gs_ipc_conn_peer(c),
                    why);
        gs_ipc_conn_close(c);
        return;
    }
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_conns; i++)
        if (s->conns[i] == c)
            s->conn_ok[i] = 1;
    pthread_mutex_unlock(&s->mu);
    gs_log_info("hello from %.*s (pid %u) at %s, with the cluster key", (int)m.u.hello.name.len,
                m.u.hello.name.p, m.u.hello.pid, gs_ipc_conn_peer(c));
}

static void on_frame(gs_ipc_conn *c, const gs_ipc_header *h, const uint8_t *body, void *user)
{
    gs_server *s = user;
    gs_ipc_msg m;
    gs_diag d;
    if (!conn_authed(s, c)) {
        check_hello(s, c, h, body);
        return;
    }
    if (h->type == GS_IPC_JOB) {
        /* The job outlives the frame: keep a copy (malloc is 8-aligned). */
        uint8_t *copy = malloc(h->body_len ? h->body_len : 1);
        if (!copy) {
            gs_log_error("out of memory copying a %u-byte job", (unsigned)h->body_len);
            return;
        }
        memcpy(copy, body, h->body_len);
        admit(s, c, copy, h->body_len);
        return;
    }
    if (gs_ipc_decode(h->type, body, h->body_len, &m, &d)) {
        gs_log_warn("dropped a malformed %s frame from %s: %s", gs_ipc_type_name(h->type),
                    gs_ipc_conn_peer(c), d.msg);
        return;
    }
    switch (m.type) {
    case GS_IPC_CANCEL:
        cancel(s, c, m.u.cancel_id);
        break;
    case GS_IPC_HELLO:
        gs_log_info("hello from %.*s (pid %u) at %s", (int)m.u.hello.name.len, m.u.hello.name.p,
                    m.u.hello.pid, gs_ipc_conn_peer(c));
        break;
    default:
        gs_log_warn("ignored a %s frame from %s (not for a worker)", gs_ipc_type_name(m.type),
                    gs_ipc_conn_peer(c));
    }
}

/* ---- prep threads ------------------------------------------------------------ */

/* ---- image pixel budget --------------------------------------------------------- */

static void pix_release(gs_server *s, size_t bytes)
{
    if (!bytes)
        return;
    pthread_mutex_lock(&s->mu);
    s->pix_used -= bytes;
    pthread_cond_broadcast(&s->prep_cv); /* a job waiting for room may fit now */
    pthread_mutex_unlock(&s->mu);
}

/* One built image's pixels, counted in s->pix_used until the engine (or
 * gs_request_free) releases them; wraps the request's release. */
typedef struct {
    gs_server *s;
    void (*release)(void *ctx);
    void *ctx;
    size_t bytes;
} pix_hold;

static void pix_hold_release(void *ctx)
{
    pix_hold *h = ctx;
    h->release(h->ctx);
    pix_release(h->s, h->bytes);
    free(h);
}

/* Counts each built image of j in s->pix_used through a pix_hold. 0 or
 * GS_ENOMEM (then nothing is counted: the request frees its own). */
static int count_pixels(gs_server *s, wjob *j, gs_diag *d)
{
    gs_request *r = j->req;
    if (!r->n_images)
        return 0;
    pix_hold *h[GS_IPC_MAX_IMAGES] = {0};
    for (int32_t i = 0; i < r->n_images; i++)
        if (!(h[i] = malloc(sizeof *h[i]))) {
            for (int32_t k = 0; k < i; k++)
                free(h[k]);
            return gs_diag_set(d, GS_ENOMEM, "out of memory");
        }
    size_t sum = 0;
    for (int32_t i = 0; i < r->n_images; i++) {
        gs_engine_image *im = &r->images[i];
        *h[i] = (pix_hold){s, im->release, im->release_ctx,
                           (size_t)im->n_patches * (size_t)im->patch_dim * sizeof(float)};
        sum += h[i]->bytes;
        im->release = pix_hold_release;
        im->release_ctx = h[i];
    }
    pthread_mutex_lock(&s->mu);
    s->pix_used += sum;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* The next job a prep thread may take (s->mu held), unlinked from the
 * queue, or NULL: the first one that is cancelled, has no images, or whose
 * images fit the budget (or that would run alone). Jobs with images keep
 * their arrival order (none passes one that waits for room, so a large
 * one is not starved by smaller ones); the others go by. Its pixels are
 * reserved. */
static wjob *prep_take(gs_server *s)
{
    wjob *prev = NULL;
    int blocked = 0; /* an image job ahead waits for room */
    for (wjob *j = s->prep_head; j; prev = j, j = j->qnext) {
        if (!atomic_load(&j->cancel) && j->pix_need &&
            (blocked || (s->pix_used && s->pix_used + j->pix_need > s->pix_budget))) {
            blocked = 1;
            if (!j->pix_waited) {
                j->pix_waited = 1;
                gs_log_info("job %llu waits for image memory: its images need %zu MiB, %zu of "
                            "%zu MiB are held",
                            (unsigned long long)j->gw_id, j->pix_need >> 20, s->pix_used >> 20,
                            s->pix_budget >> 20);
            }
            continue;
        }
        if (prev)
            prev->qnext = j->qnext;
        else
            s->prep_head = j->qnext;
        if (s->prep_tail == j)
            s->prep_tail = prev;
        j->qnext = NULL;
        j->pix_reserved = j->pix_need;
        s->pix_used += j->pix_need;
        return j;
    }
    return NULL;
}

/* Builds j's request (JSON, template, tokens, images) and hands it to
 * the engine thread's inbox, or answers its error / cancel. */
static void prep_one(gs_server *s, wjob *j)
{
    if (atomic_load(&j->cancel)) {
        pix_release(s, j->pix_reserved);
        j->pix_reserved = 0;
        send_final_unstarted(j, GS_IPC_FINISH_CANCELLED, 0);
        job_done(s, j);
        return;
    }
    gs_request_blob blobs[GS_IPC_MAX_IMAGES];
    for (uint32_t i = 0; i < j->msg.n_images; i++) {
        blobs[i].bytes = j->msg.images[i].p;
        blobs[i].len = j->msg.images[i].len;
    }
    gs_diag d;
    gs_diag_clear(&d);
    int rc = gs_request_build(&s->p.env, j->msg.request.p, j->msg.request.len, blobs,
                              (int)j->msg.n_images, &j->req, &d);
    free(j->body); /* images decoded, JSON parsed: the frame is no longer needed */
    j->body = NULL;
    memset(&j->msg, 0, sizeof j->msg);
    if (!rc)
        rc = count_pixels(s, j, &d);
    pix_release(s, j->pix_reserved); /* the built images now count for themselves */
    j->pix_reserved = 0;
    if (rc) {
        send_error(j->conn, j->gw_id, rc, d.msg[0] ? d.msg : NULL);
        job_done(s, j);
        return;
    }
    pthread_mutex_lock(&s->mu);
    j->state = J_INBOX;
    if (s->inbox_tail)
        s->inbox_tail->qnext = j;
    else
        s->inbox_head = j;
    s->inbox_tail = j;
    wake_engine(s);
    pthread_mutex_unlock(&s->mu);
}

static void *prep_main(void *arg)
{
    gs_server *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        wjob *j = NULL;
        while (!s->stopping && !(j = prep_take(s)))
            pthread_cond_wait(&s->prep_cv, &s->mu);
        if (s->stopping) { /* j is NULL: the queue is gs_server_free's to answer */
            pthread_mutex_unlock(&s->mu);
            return NULL;
        }
        pthread_mutex_unlock(&s->mu);
        prep_one(s, j);
    }
}

static void *hb_main(void *arg)
{
    gs_server *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t t = (uint64_t)ts.tv_nsec + (uint64_t)s->p.heartbeat_ms * 1000000u;
        ts.tv_sec += (time_t)(t / 1000000000u);
        ts.tv_nsec = (long)(t % 1000000000u);
        int rc = 0;
        while (!s->stopping && rc == 0)
            rc = pthread_cond_timedwait(&s->hb_cv, &s->mu, &ts);
        if (s->stopping)
            break;
        gs_engine_stats st;
        gs_engine_stats_snapshot(s->eng, &st);
        gs_ipc_msg m = {.type = GS_IPC_HEARTBEAT};
        gs_ipc_stats *h = &m.u.heartbeat;
        h->n_running = st.n_running;
        h->n_waiting = st.n_waiting;
        h->n_queued = s->n_unstarted;
        h->max_queue = s->p.max_queue;
        h->n_pages = st.n_pages;
        h->n_free_pages = st.n_free_pages;
        h->n_cached_pages = st.n_cached_pages;
        h->draining = s->draining;
        h->n_steps = (uint64_t)st.n_steps;
        h->n_finished = (uint64_t)st.n_jobs_finished;
        h->n_generated = (uint64_t)st.n_generated_tokens;
        h->n_prompt_tokens = (uint64_t)st.n_computed_tokens;
        h->prefix_query_tokens = (uint64_t)st.prefix_query_tokens;
        h->prefix_hit_tokens = (uint64_t)st.prefix_hit_tokens;
        h->last_step_ns = st.last_step_ns;
        h->uptime_ms = (now_ns() - s->start_ns) / 1000000u;
        int n = s->n_conns;
        gs_ipc_conn *cs[64];
        if (n > 64)
            n = 64;
        for (int i = 0; i < n; i++) {
            cs[i] = s->conns[i];
            gs_ipc_conn_ref(cs[i]);
        }
        pthread_mutex_unlock(&s->mu);
        const int draining = h->draining;
        for (int i = 0; i < n; i++) {
            h->draining = draining || conn_retired(cs[i]);
            gs_ipc_conn_send_msg(cs[i], &m, NULL);
            gs_ipc_conn_unref(cs[i]);
        }
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- the engine thread ----------------------------------------------------------- */

/* Tells j's gateway its place in the engine's queue (0: started). */
static void send_place(wjob *j, int32_t pos)
{
    gs_ipc_msg m = {.type = GS_IPC_EVENT};
    m.u.event.id = j->gw_id;
    m.u.event.text.p = m.u.event.message.p = "";
    m.u.event.queue_report = 1;
    m.u.event.queue_position = (uint16_t)(pos > 65535 ? 65535 : pos);
    gs_ipc_conn_send_msg(j->conn, &m, NULL);
}

/* After each step (engine thread): every job waiting in the engine that
 * has not started learns its place when it changes, and a job whose place
 * was reported learns 0 once it has left the queue. Costs one walk of the
 * waiting queue (empty while the worker keeps up). */
static void report_queue(gs_server *s)
{
    int32_t n = gs_engine_queue(s->eng, s->qusers, s->cap_qusers);
    if (n > s->cap_qusers) {
        void **grown = realloc(s->qusers, (size_t)n * 2 * sizeof *grown);
        if (grown) {
            s->qusers = grown;
            s->cap_qusers = n * 2;
            n = gs_engine_queue(s->eng, s->qusers, s->cap_qusers);
        }
    }
    if (n <= 0 && gs_queue_empty(&s->reported))
        return;
    s->q_round++;
    for (int32_t i = 0; i < n && i < s->cap_qusers; i++) {
        wjob *j = s->qusers[i];
        if (j->started)
            continue; /* preempted after its first tokens: not queued to the client */
        j->q_round = s->q_round;
        if (j->q_pos == i + 1)
            continue;
        if (!j->q_pos)
            gs_queue_insert_tail(&s->reported, &j->rlink);
        j->q_pos = i + 1;
        send_place(j, j->q_pos);
    }
    gs_queue *q = gs_queue_head(&s->reported), *next;
    for (; q != &s->reported; q = next) {
        next = q->next;
        wjob *j = gs_queue_data(q, wjob, rlink);
        if (j->q_round == s->q_round)
            continue;
        gs_queue_remove(&j->rlink);
        j->q_pos = 0;
        send_place(j, 0);
    }
}

/* Appends an event's output to j's held output. GS_ENOMEM leaves it as it
 * was (the caller then sends at once instead of holding). */
static int hold(wjob *j, const gs_engine_event *ev)
{
    if (j->n_held + ev->n_ids > j->cap_held) {
        int32_t cap = (j->n_held + ev->n_ids) * 2 + 8;
        int32_t *p = realloc(j->held_ids, (size_t)cap * sizeof *p);
        if (!p)
            return GS_ENOMEM;
        j->held_ids = p;
        j->cap_held = cap;
    }
    if (j->held_len + ev->text_len > j->cap_text) {
        size_t cap = (j->held_len + ev->text_len) * 2 + 64;
        char *p = realloc(j->held_text, cap);
        if (!p)
            return GS_ENOMEM;
        j->held_text = p;
        j->cap_text = cap;
    }
    if (ev->n_ids)
        memcpy(j->held_ids + j->n_held, ev->ids, (size_t)ev->n_ids * sizeof *ev->ids);
    if (ev->text_len)
        memcpy(j->held_text + j->held_len, ev->text, ev->text_len);
    j->n_held += ev->n_ids;
    j->held_len += ev->text_len;
    return 0;
}

/* Sends one EVENT frame for j: its held output followed by ev's output;
 * final when ev is (ev NULL: the held output alone). Returns the send's
 * code. A frame that cannot be encoded (never expected: the engine emits
 * whole UTF-8 characters) must not leave the job without its end: the job
 * is marked, and its final event goes out as a bare GS_EINTERNAL error. */
static int send_event(wjob *j, const gs_engine_event *ev, uint64_t now)
{
    const gs_engine_event *fin = ev && ev->finish != GS_FINISH_NONE ? ev : NULL;
    if (ev && (j->n_held || j->held_len)) {
        if (hold(j, ev) == 0) {
            ev = NULL; /* merged: the held output is the frame's output */
        } else {
            int rc = send_event(j, NULL, now); /* no memory to merge: two frames */
            if (rc)
                return rc;
        }
    }
    gs_ipc_msg m = {.type = GS_IPC_EVENT};
    gs_ipc_event *e = &m.u.event;
    e->id = j->gw_id;
    if (ev) {
        e->n_ids = (uint32_t)ev->n_ids;
        e->ids = ev->ids;
        e->text.p = ev->text_len ? ev->text : "";
        e->text.len = (uint32_t)ev->text_len;
    } else {
        e->n_ids = (uint32_t)j->n_held;
        e->ids = j->held_ids;
        e->text.p = j->held_len ? j->held_text : "";
        e->text.len = (uint32_t)j->held_len;
    }
    if (fin) {
        e->finish = (uint8_t)fin->finish;
        e->error = fin->finish == GS_FINISH_ERROR ? fin->error : 0;
        e->prompt_tokens = fin->usage.prompt_tokens;
        e->completion_tokens = fin->usage.completion_tokens;
        e->cached_prompt_tokens = fin->usage.cached_prompt_tokens;
        e->queue_ns = fin->timings.queue_ns;
        e->ttft_ns = fin->timings.ttft_ns;
        e->decode_ns = fin->timings.decode_ns;
        if (j->enc_failed) {
            e->finish = GS_IPC_FINISH_ERROR;
            e->error = GS_EINTERNAL;
            e->n_ids = 0;
            e->text.len = 0;
        }
    }
    e->message.p = e->error ? gs_strerror(e->error) : "";
    e->message.len = (uint32_t)strlen(e->message.p);
    gs_diag d;
    gs_diag_clear(&d);
    int rc = gs_ipc_conn_send_msg(j->conn, &m, &d);
    if (rc && rc != GS_EIO) { /* EIO: the gateway is gone, nothing to tell */
        gs_log_error("job %llu: event not sent: %s", (unsigned long long)j->gw_id, d.msg);
        j->enc_failed = 1;
        if (fin) {
            e->finish = GS_IPC_FINISH_ERROR;
            e->error = GS_EINTERNAL;
            e->n_ids = 0;
            e->text.len = 0;
            e->message.p = gs_strerror(GS_EINTERNAL);
            e->message.len = (uint32_t)strlen(e->message.p);
            gs_ipc_conn_send_msg(j->conn, &m, NULL);
        }
    }
    j->n_held = 0;
    j->held_len = 0;
    j->last_send_ns = now;
    return rc;
}

/* Engine events -> EVENT frames on the job's connection: at once for the
 * first output and the final event, else held while stream_interval_us
 * has not passed since the job's last frame (flush_held sends it later). */
static int on_event(void *user, const gs_engine_event *ev)
{
    wjob *j = user;
    gs_server *s = j->srv;
    const int final = ev->finish != GS_FINISH_NONE;
    if (j->q_pos && !final) { /* it started: place 0 before its first output */
        gs_queue_remove(&j->rlink);
        j->q_pos = 0;
        send_place(j, 0);
    }
    j->started = 1;
    uint64_t now = now_ns();
    if (!final && s->interval_ns && j->last_send_ns && now - j->last_send_ns < s->interval_ns &&
        hold(j, ev) == 0) {
        if (!gs_queue_linked(&j->hlink) && (j->n_held || j->held_len))
            gs_queue_insert_tail(&s->held, &j->hlink);
        return atomic_load(&j->cancel);
    }
    if (gs_queue_linked(&j->hlink))
        gs_queue_remove(&j->hlink);
    int rc = send_event(j, ev, now);
    if (!j->last_send_ns)
        j->last_send_ns = now; /* (a clock at 0 would hold nothing) */
    if (final) {
        job_done(s, j);
        return 0;
    }
    return rc || atomic_load(&j->cancel);
}

/* Engine thread, after each step and before it sleeps: sends the held
 * output of every job whose interval has passed (all of them with
 * all != 0), so output never waits on a job that stopped stepping
 * (preempted, or the engine idle). */
static void flush_held(gs_server *s, int all)
{
    uint64_t now = now_ns();
    gs_queue *q = gs_queue_head(&s->held), *next;
    for (; q != &s->held; q = next) {
        next = q->next;
        wjob *j = gs_queue_data(q, wjob, hlink);
        if (!all && now - j->last_send_ns < s->interval_ns)
            continue;
        gs_queue_remove(&j->hlink);
        if (send_event(j, NULL, now) == 0)
            continue;
        if (!atomic_load(&j->cancel)) /* the gateway is gone: as on_event's nonzero return */
            gs_engine_cancel(s->eng, j->eng_id);
    }
}

static void submit_one(gs_server *s, wjob *j)
{
    gs_engine_job job;
    gs_request_to_job(j->req, &job);
    job.on_event = on_event;
    job.user = j;
    job.arrival_ns = j->arrival_ns;
    int64_t id = 0;
    gs_diag d;
    gs_diag_clear(&d);
    int rc = gs_engine_submit(s->eng, &job, &id, &d);
    if (rc) {
        send_error(j->conn, j->gw_id, rc, d.msg[0] ? d.msg : NULL);
        job_done(s, j);
        return;
    }
    /* The engine copied what it needs; the prompt ids can go now. */
    gs_request_free(j->req);
    j->req = NULL;
    pthread_mutex_lock(&s->mu);
    j->eng_id = id;
    j->state = J_ENGINE;
    s->n_unstarted--;
    int cancelled = atomic_load(&j->cancel);
    pthread_mutex_unlock(&s->mu);
    if (cancelled)
        gs_engine_cancel(s->eng, id); /* its final event frees j */
}

static int should_abort(void *user)
{
    gs_server *s = user;
    pthread_mutex_lock(&s->mu);
    int r = s->n_cancels > 0 || s->stopping;
    pthread_mutex_unlock(&s->mu);
    return r;
}

int gs_server_run(gs_server *s)
{
    int64_t *cancels = malloc((size_t)s->cap_cancels * sizeof *cancels);
    if (!cancels)
        return GS_ENOMEM;
    int result = 0, finished_all = 0;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        int spun = 0;
        while (!s->inbox_head && !s->n_cancels && !gs_engine_busy(s->eng) && !s->stopping &&
               !(s->draining && (s->n_jobs == 0 || now_ns() >= s->drain_deadline))) {
            if (!spun && s->spin_ns) {
                /* Idle: stay awake a little before sleeping, yielding the
                 * CPU, so that the next job (a client's next turn comes a
                 * few hundred microseconds after its answer) starts
                 * without the wake-up of a sleeping thread. */
                unsigned seen = atomic_load_explicit(&s->wakes, memory_order_acquire);
                pthread_mutex_unlock(&s->mu);
                uint64_t end = now_ns() + s->spin_ns;
                while (atomic_load_explicit(&s->wakes, memory_order_acquire) == seen &&
                       now_ns() < end)
                    sched_yield();
                pthread_mutex_lock(&s->mu);
                spun = 1;
                continue; /* the loop's test again, under the lock */
            }
            if (s->draining) {
                struct timespec ts = {(time_t)(s->drain_deadline / 1000000000u),
                                      (long)(s->drain_deadline % 1000000000u)};
                pthread_cond_timedwait(&s->engine_cv, &s->mu, &ts);
            } else {
                pthread_cond_wait(&s->engine_cv, &s->mu);
            }
        }
        if (s->stopping || (s->draining && s->n_jobs == 0))
            break;
        wjob *in = s->inbox_head;
        s->inbox_head = s->inbox_tail = NULL;
        int nc = s->n_cancels;
        memcpy(cancels, s->cancels, (size_t)nc * sizeof *cancels);
        s->n_cancels = 0;
        int past_deadline = s->draining && now_ns() >= s->drain_deadline;
        pthread_mutex_unlock(&s->mu);

        while (in) {
            wjob *j = in;
            in = in->qnext;
            j->qnext = NULL;
            if (atomic_load(&j->cancel) || s->fatal) {
                send_final_unstarted(j, s->fatal ? GS_IPC_FINISH_ERROR : GS_IPC_FINISH_CANCELLED,
                                     s->fatal ? GS_EWORKER : 0);
                job_done(s, j);
            } else {
                submit_one(s, j);
            }
        }
        for (int i = 0; i < nc; i++)
            gs_engine_cancel(s->eng, cancels[i]); /* GS_ENOENT: finished already */
        if (past_deadline && !finished_all) {
            gs_log_warn("drain deadline passed: ending the jobs still running");
            gs_engine_finish_all(s->eng, GS_ESHUTDOWN);
            finished_all = 1;
        }
        if (gs_engine_busy(s->eng)) {
            int rc = gs_engine_step(s->eng, now_ns());
            if (rc == GS_EDEVICE || rc == GS_EINTERNAL) {
                gs_log_error("fatal: engine step failed: %s; ending every job and exiting so "
                             "that a fresh worker replaces this one",
                             gs_strerror(rc));
                pthread_mutex_lock(&s->mu);
                s->fatal = 1;
                pthread_mutex_unlock(&s->mu);
                gs_engine_finish_all(s->eng, rc);
                result = rc;
                pthread_mutex_lock(&s->mu);
                break;
            } else if (rc && rc != GS_ECANCELED) {
                gs_log_warn("engine step: %s (the affected jobs ended with an error)",
                            gs_strerror(rc));
            }
        }
        report_queue(s);
        if (!gs_queue_empty(&s->held))
            flush_held(s, !gs_engine_busy(s->eng));
        pthread_mutex_lock(&s->mu);
    }
    if (s->draining && !result)
        gs_log_info("drained: no job left");
    pthread_mutex_unlock(&s->mu);
    free(cancels);
    return result;
}

/* ---- lifetime ------------------------------------------------------------------- */

void gs_server_drain(gs_server *s)
{
    pthread_mutex_lock(&s->mu);
    int first = !s->draining;
    uint64_t now = now_ns();
    if (first) {
        s->draining = 1;
        s->drain_deadline = now + (uint64_t)s->p.drain_timeout_ms * 1000000u;
    } else {
        s->drain_deadline = now; /* asked twice: end the jobs now */
    }
    int n = s->n_conns < 64 ? s->n_conns : 64;
    gs_ipc_conn *cs[64];
    for (int i = 0; i < n; i++) {
        cs[i] = s->conns[i];
        gs_ipc_conn_ref(cs[i]);
    }
    int jobs = s->n_jobs;
    wake_engine(s);
    pthread_mutex_unlock(&s->mu);
    if (first)
        gs_log_info("draining: taking no new jobs, %d in flight, deadline %d ms", jobs,
                    s->p.drain_timeout_ms);
    else
        gs_log_info("second stop request: ending the %d job(s) in flight now", jobs);
    for (int i = 0; i < n; i++) {
        if (first)
            gs_ipc_conn_send_msg(cs[i], &(gs_ipc_msg){.type = GS_IPC_DRAIN}, NULL);
        gs_ipc_conn_unref(cs[i]);
    }
}

void gs_server_flush(gs_server *s, int timeout_ms)
{
    uint64_t end = now_ns() + (uint64_t)timeout_ms * 1000000u;
    for (;;) {
        size_t pending = 0;
        pthread_mutex_lock(&s->mu);
        for (int i = 0; i < s->n_conns; i++)
            pending += gs_ipc_conn_pending(s->conns[i]);
        pthread_mutex_unlock(&s->mu);
        if (!pending || now_ns() >= end)
            return;
        usleep(5000);
    }
}

int gs_server_new(const gs_server_params *p, gs_server **out, gs_diag *d)
{
    *out = NULL;
    if (!p || (!p->n_listen && !p->n_connect))
        return gs_diag_set(d, GS_EINVAL, "worker: give at least one --listen or --connect URL");
    gs_server *s = calloc(1, sizeof *s);
    if (!s)
        return GS_ENOMEM;
    s->p = *p;
    gs_queue_init(&s->reported);
    gs_queue_init(&s->held);
    if (s->p.stream_interval_us >= 0)
        s->interval_ns =
            (uint64_t)(s->p.stream_interval_us ? s->p.stream_interval_us : 10000) * 1000u;
    if (s->p.idle_spin_us >= 0)
        s->spin_ns = (uint64_t)(s->p.idle_spin_us ? s->p.idle_spin_us : 300) * 1000u;
    if (!s->p.prep_threads)
        s->p.prep_threads = 2;
    if (!s->p.max_queue)
        s->p.max_queue = 64;
    s->pix_budget = s->p.image_memory;
    if (!s->pix_budget) {
        const long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
        const size_t quarter = pages > 0 && psz > 0 ? (size_t)pages * (size_t)psz / 4 : 0;
        s->pix_budget = quarter && quarter < ((size_t)4 << 30) ? quarter : (size_t)4 << 30;
    }
    gs_log_info("images: at most %zu MiB of prepared pixels held by jobs at once",
                s->pix_budget >> 20);
    if (!s->p.heartbeat_ms)
        s->p.heartbeat_ms = 250;
    if (s->p.drain_timeout_ms < 0)
        s->p.drain_timeout_ms = 30000;
    s->max_seqs = p->engine.max_seqs ? p->engine.max_seqs : 64;
    s->start_ns = now_ns();
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->engine_cv, &ca);
    pthread_cond_init(&s->prep_cv, &ca);
    pthread_cond_init(&s->hb_cv, &ca);
    pthread_condattr_destroy(&ca);
    s->cap_cancels = s->max_seqs + s->p.max_queue + 16;
    s->cancels = malloc((size_t)s->cap_cancels * sizeof *s->cancels);
    if (!s->cancels) {
        gs_server_free(s);
        return GS_ENOMEM;
    }
    gs_engine_params ep = p->engine;
    ep.should_abort = should_abort;
    ep.abort_user = s;
    int rc = gs_engine_new(&ep, &s->eng, d);
    if (rc) {
        gs_server_free(s);
        return rc;
    }
    s->cbs = (gs_ipc_conn_cbs){s, on_open, on_frame, on_close, 0};
    s->prep = calloc((size_t)s->p.prep_threads, sizeof *s->prep);
    s->listeners = calloc((size_t)p->n_listen + 1, sizeof *s->listeners);
    if (!s->prep || !s->listeners) {
        gs_server_free(s);
        return GS_ENOMEM;
    }
    for (int i = 0; i < s->p.prep_threads; i++) {
        if (pthread_create(&s->prep[i], NULL, prep_main, s)) {
            gs_server_free(s);
            return gs_diag_set(d, GS_ENOMEM, "worker: cannot start prep thread");
        }
        s->n_prep++;
    }
    if (pthread_create(&s->hb, NULL, hb_main, s)) {
        gs_server_free(s);
        return gs_diag_set(d, GS_ENOMEM, "worker: cannot start the heartbeat thread");
    }
    s->hb_started = 1;
    for (int i = 0; i < p->n_listen; i++) {
        gs_diag ld;
        if ((rc = gs_ipc_listen(p->listen[i], &s->cbs, &s->listeners[i], &ld))) {
            gs_diag_set(d, rc, "--listen %s: %s", p->listen[i], ld.msg);
            gs_server_free(s);
            return rc;
        }
        s->n_listeners++;
        gs_log_info("listening on %s", p->listen[i]);
    }
    if (p->n_connect) {
        gs_dialer_params dp = {0};
        dp.urls = p->connect;
        dp.n_urls = p->n_connect;
        dp.resolve_interval_ms = p->resolve_interval_ms;
        dp.cbs = s->cbs;
        dp.retire = on_retire;
        dp.busy = on_busy;
        if ((rc = gs_dialer_new(&dp, &s->dialer, d))) {
            gs_server_free(s);
            return rc;
        }
    }
    *out = s;
    return 0;
}

void gs_server_free(gs_server *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->prep_cv);
    pthread_cond_broadcast(&s->hb_cv);
    wake_engine(s);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->n_listeners; i++)
        gs_ipc_listener_close(s->listeners[i]);
    for (int i = 0; i < s->n_prep; i++)
        pthread_join(s->prep[i], NULL);
    if (s->hb_started)
        pthread_join(s->hb, NULL);
    gs_dialer_stop(s->dialer); /* no more dials; its open connections close below */
    /* Jobs still inside get their final events (GS_ESHUTDOWN) here. */
    gs_engine_free(s->eng);
    free(s->qusers);
    /* Jobs that never reached the engine. */
    for (wjob *lists[2] = {s->prep_head, s->inbox_head}, **l = lists; l < lists + 2; l++)
        while (*l) {
            wjob *j = *l;
            *l = j->qnext;
            send_error(j->conn, j->gw_id, GS_ESHUTDOWN, "the worker stopped");
            job_done(s, j);
        }
    pthread_mutex_lock(&s->mu);
    int n = s->n_conns;
    s->n_conns = 0;
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < n; i++) {
        gs_ipc_conn_close(s->conns[i]);
        gs_ipc_conn_unref(s->conns[i]);
    }
    /* Their on_close callbacks use s: wait for them (a few ms). */
    pthread_mutex_lock(&s->mu);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += 5;
    while (s->live_conns > 0 && pthread_cond_timedwait(&s->hb_cv, &s->mu, &ts) != ETIMEDOUT)
        ;
    int stuck = s->live_conns;
    pthread_mutex_unlock(&s->mu);
    if (stuck > 0) {
        gs_log_error("%d connection(s) did not close within 5 s; leaving the server allocated",
                     stuck);
        return;
    }
    gs_dialer_free(s->dialer); /* after the on_close calls it forwards */
    free(s->conns);
    free(s->conn_ok);
    free(s->cancels);
    free(s->prep);
    free(s->listeners);
    pthread_cond_destroy(&s->engine_cv);
    pthread_cond_destroy(&s->prep_cv);
    pthread_cond_destroy(&s->hb_cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
