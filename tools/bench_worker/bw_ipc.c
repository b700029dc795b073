/* bw_ipc.c - bench_worker's IPC target: a gateway-side client of one
 * glmserve-worker (hello, jobs, cancels; events, errors and heartbeats
 * back), driven from the main thread, fed by nng's callback threads. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_worker.h"
#include "common/clock.h"
#include "common/ipc_conn.h"

typedef struct {
    bw_target base;
    const bw_options *o;
    gs_ipc_conn *c;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bw_result **by_id; /* [cap] job id -> its result while in flight */
    int *index;        /* [cap] job id -> the caller's index */
    uint64_t next_id, cap;
    int *ended; /* ring of ended indexes */
    int n_ended, cap_ended;
    int closed;
    gs_ipc_stats hb;
    int have_hb, draining;
} ipc_target;

static void push_ended(ipc_target *t, uint64_t id)
{
    if (t->n_ended < t->cap_ended)
        t->ended[t->n_ended++] = t->index[id];
    t->by_id[id] = NULL;
    pthread_cond_broadcast(&t->cv);
}

static void on_frame(gs_ipc_conn *c, const gs_ipc_header *h, const uint8_t *body, void *user)
{
    ipc_target *t = user;
    gs_ipc_msg m;
    gs_diag d;
    if (gs_ipc_decode(h->type, body, h->body_len, &m, &d)) {
        fprintf(stderr, "bench_worker: malformed %s frame: %s\n", gs_ipc_type_name(h->type), d.msg);
        return;
    }
    pthread_mutex_lock(&t->mu);
    if (m.type == GS_IPC_EVENT) {
        const gs_ipc_event *e = &m.u.event;
        bw_result *r = e->id < t->next_id ? t->by_id[e->id] : NULL;
        if (!r) {
            fprintf(stderr, "bench_worker: event for unknown job %llu\n",
                    (unsigned long long)e->id);
        } else if (e->queue_report) {
            /* a place in the worker's queue: no output */
        } else {
            if (!r->first_ns && e->n_ids)
                r->first_ns = gs_clock_now_ns();
            bw_result_add(r, e->ids, (int32_t)e->n_ids, e->text.p, e->text.len);
            if (e->finish) {
                r->finish = e->finish;
                r->error = e->error;
                snprintf(r->message, sizeof r->message, "%.*s", (int)e->message.len, e->message.p);
                r->prompt_tokens = e->prompt_tokens;
                r->completion_tokens = e->completion_tokens;
                r->worker_ttft_ns = e->ttft_ns;
                r->worker_job_ns = e->ttft_ns + e->decode_ns;
                r->end_ns = gs_clock_now_ns();
                push_ended(t, e->id);
            } else if (t->o->cancel_after && r->n_events == t->o->cancel_after) {
                gs_ipc_msg cm = {.type = GS_IPC_CANCEL};
                cm.u.cancel_id = e->id;
                gs_ipc_conn_send_msg(c, &cm, NULL);
            }
        }
    } else if (m.type == GS_IPC_ERROR) {
        const gs_ipc_error *e = &m.u.error;
        bw_result *r = e->id && e->id < t->next_id ? t->by_id[e->id] : NULL;
        if (r) {
            r->refused = 1;
            r->finish = BW_FINISH_ERROR;
            r->error = e->code;
            snprintf(r->message, sizeof r->message, "%.*s", (int)e->message.len, e->message.p);
            push_ended(t, e->id);
        } else {
            fprintf(stderr, "bench_worker: worker error %d: %.*s\n", e->code, (int)e->message.len,
                    e->message.p);
        }
    } else if (m.type == GS_IPC_HEARTBEAT) {
        t->hb = m.u.heartbeat;
        t->have_hb = 1;
    } else if (m.type == GS_IPC_DRAIN) {
        t->draining = 1;
    }
    pthread_mutex_unlock(&t->mu);
}

static void on_close(gs_ipc_conn *c, int err, void *user)
{
    ipc_target *t = user;
    pthread_mutex_lock(&t->mu);
    t->closed = 1;
    for (uint64_t id = 1; id < t->next_id; id++)
        if (t->by_id[id]) {
            t->by_id[id]->lost = 1;
            t->by_id[id]->finish = BW_FINISH_ERROR;
            push_ended(t, id);
        }
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static int ipc_send(bw_target *bt, int i, const char *json, const bw_blob *images, int n_images,
                    bw_result *r)
{
    ipc_target *t = (ipc_target *)bt;
    pthread_mutex_lock(&t->mu);
    if (t->next_id == t->cap) {
        uint64_t cap = t->cap * 2;
        bw_result **a = realloc(t->by_id, cap * sizeof *a);
        int *b = a ? realloc(t->index, cap * sizeof *b) : NULL;
        if (a)
            t->by_id = a;
        if (!b) {
            pthread_mutex_unlock(&t->mu);
            return -1;
        }
        t->index = b;
        memset(t->by_id + t->cap, 0, (cap - t->cap) * sizeof *a);
        t->cap = cap;
    }
    if (i >= t->cap_ended) {
        int cap = 2 * i + 16;
        int *e = realloc(t->ended, (size_t)cap * sizeof *e);
        if (!e) {
            pthread_mutex_unlock(&t->mu);
            return -1;
        }
        t->ended = e;
        t->cap_ended = cap;
    }
    const uint64_t id = t->next_id++;
    t->by_id[id] = r;
    t->index[id] = i;
    int closed = t->closed;
    if (!r->sent_ns) /* the caller may have stamped it (a burst's start) */
        r->sent_ns = gs_clock_now_ns();
    pthread_mutex_unlock(&t->mu);
    if (closed)
        return -1;
    gs_ipc_msg m = {.type = GS_IPC_JOB};
    m.u.job.id = id;
    m.u.job.request.p = json;
    m.u.job.request.len = (uint32_t)strlen(json);
    m.u.job.n_images = (uint32_t)n_images;
    for (int k = 0; k < n_images; k++) {
        m.u.job.images[k].p = images[k].bytes;
        m.u.job.images[k].len = (uint32_t)images[k].len;
    }
    gs_diag d;
    if (gs_ipc_conn_send_msg(t->c, &m, &d)) {
        fprintf(stderr, "bench_worker: job %d not sent: %s\n", i, d.msg);
        return -1;
    }
    return 0;
}

static int ipc_wait_one(bw_target *bt, uint64_t deadline_ns)
{
    ipc_target *t = (ipc_target *)bt;
    struct timespec ts = {(time_t)(deadline_ns / 1000000000u), (long)(deadline_ns % 1000000000u)};
    pthread_mutex_lock(&t->mu);
    int rc = 0;
    while (!t->n_ended && rc == 0)
        rc = pthread_cond_timedwait(&t->cv, &t->mu, &ts);
    int idx = -1;
    if (t->n_ended) {
        idx = t->ended[0];
        memmove(t->ended, t->ended + 1, (size_t)--t->n_ended * sizeof *t->ended);
    }
    pthread_mutex_unlock(&t->mu);
    return idx;
}

static void ipc_stats(bw_target *bt)
{
    ipc_target *t = (ipc_target *)bt;
    usleep(600 * 1000); /* a heartbeat after the last job ended */
    pthread_mutex_lock(&t->mu);
    const gs_ipc_stats *h = &t->hb;
    if (t->have_hb)
        printf("{\"stats\": {\"n_running\": %d, \"n_waiting\": %d, \"n_queued\": %d, "
               "\"n_pages\": %d, \"n_free_pages\": %d, \"n_cached_pages\": %d, \"draining\": %d, "
               "\"n_finished\": %llu, \"n_steps\": %llu}}\n",
               h->n_running, h->n_waiting, h->n_queued, h->n_pages, h->n_free_pages,
               h->n_cached_pages, h->draining, (unsigned long long)h->n_finished,
               (unsigned long long)h->n_steps);
    pthread_mutex_unlock(&t->mu);
}

static void ipc_close(bw_target *bt)
{
    ipc_target *t = (ipc_target *)bt;
    gs_ipc_conn_close(t->c);
    gs_ipc_conn_unref(t->c);
    pthread_mutex_lock(&t->mu);
    while (!t->closed)
        pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
    free(t->by_id);
    free(t->index);
    free(t->ended);
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

int bw_ipc_open(const bw_options *o, const char *url, bw_target **out)
{
    ipc_target *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    t->base = (bw_target){ipc_send, ipc_wait_one, ipc_stats, ipc_close};
    t->o = o;
    t->next_id = 1;
    t->cap = 64;
    t->by_id = calloc(t->cap, sizeof *t->by_id);
    t->index = calloc(t->cap, sizeof *t->index);
    pthread_mutex_init(&t->mu, NULL);
    pthread_condattr_t ca; /* deadlines on gs_clock_now_ns's clock */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    gs_ipc_conn_cbs cbs = {t, NULL, on_frame, on_close, 0};
    gs_diag d;
    int rc = -1;
    /* The worker may still be loading its model: retry for up to 60 s. */
    for (int tries = 0; tries < 600 && rc; tries++) {
        rc = gs_ipc_dial(url, &cbs, 2000, &t->c, &d);
        if (rc)
            usleep(100 * 1000);
    }
    if (rc || !t->by_id || !t->index) {
        fprintf(stderr, "bench_worker: --url %s: %s\n", url, rc ? d.msg : "out of memory");
        free(t->by_id);
        free(t->index);
        free(t);
        return -1;
    }
    gs_ipc_msg m = {.type = GS_IPC_HELLO};
    m.u.hello.role = GS_IPC_ROLE_GATEWAY;
    m.u.hello.pid = (uint32_t)getpid();
    m.u.hello.name.p = "bench_worker";
    m.u.hello.name.len = 12;
    m.u.hello.model.p = "";
    gs_ipc_conn_send_msg(t->c, &m, NULL);
    *out = &t->base;
    return 0;
}
