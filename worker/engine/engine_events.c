/* engine_events.c - the end of a job and everything a job reports: token
 * handling (stop ids, detokenizer, stop strings, length), events, cancel
 * (by id, or by a callback's return), finish_all, and the stats, including
 * the copy other threads read (gs_engine_stats_snapshot).
 *
 * No silent loss: a detokenizer error, a stop-string error or event text
 * that cannot be stored ends the job with GS_FINISH_ERROR and the code,
 * rather than streaming on with a gap in the text.
 *
 * Owns nothing beyond engine.c's records. Threading: the engine thread,
 * except gs_engine_stats_snapshot (any thread, under stats_mu). */
#include "engine_impl.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"

void gs_engine__emb_key(const gs_seq *q, int32_t k, gs_emb_key *out)
{
    const gs_job *j = q->user;
    gs_emb_key_make(q->spans[k].hash, q->spans[k].grid, j ? j->salt : 0, out);
}

void gs_engine__release_emb(gs_engine *e, gs_seq *q, int32_t k)
{
    gs_seq_image *im = &q->imgs[k];
    if (im->emb && im->emb_shared) {
        gs_emb_key key;
        gs_engine__emb_key(q, k, &key);
        gs_emb_cache_release(e->ec, &key);
    } else {
        gs_model_emb_free(im->emb);
    }
    im->emb = NULL;
    im->emb_shared = 0;
    im->queued = 0;
}

void gs_engine__drop_job(gs_engine *e, gs_job *j)
{
    if (gs_queue_linked(&j->link)) {
        gs_queue_remove(&j->link);
        gs_job_map_del(&e->by_id, j->id);
        e->n_jobs--;
    }
    if (j->seq) {
        gs_sched_remove(e->sched, j->seq);
        for (int32_t k = 0; k < j->seq->n_imgs; k++)
            gs_engine__release_emb(e, j->seq, k);
        gs_seq_free(j->seq); /* releases handed-over pixels still held */
    }
    if (j->detok)
        e->p.detok.close(j->detok);
    gs_sampler_free(j->sampler);
    gs_stopper_free(j->stopper);
    free(j->stop_ids);
    free(j);
}

static void fill_event(const gs_job *j, gs_engine_event *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->id = j->id;
    ev->usage.prompt_tokens = j->seq->n_prompt;
    ev->usage.completion_tokens = j->n_generated;
    ev->usage.cached_prompt_tokens = j->seq->n_cached;
    if (j->t_sched >= j->t_arrival && j->t_sched)
        ev->timings.queue_ns = j->t_sched - j->t_arrival;
    if (j->t_first >= j->t_arrival && j->t_first) {
        ev->timings.ttft_ns = j->t_first - j->t_arrival;
        ev->timings.decode_ns = j->t_last - j->t_first;
    }
}

/* Appends to the event text; GS_ENOMEM when it cannot grow. */
static int text_append(gs_engine *e, const char *s, size_t n)
{
    if (!n)
        return 0;
    if (e->text_len + n + 1 > e->text_cap) {
        size_t cap = e->text_cap ? e->text_cap : 256;
        while (cap < e->text_len + n + 1)
            cap *= 2;
        char *t = realloc(e->text, cap);
        if (!t)
            return GS_ENOMEM;
        e->text = t;
        e->text_cap = cap;
    }
    memcpy(e->text + e->text_len, s, n);
    e->text_len += n;
    e->text[e->text_len] = 0;
    return 0;
}

/* Passes decoded text through the stop strings: 1 on a match, 0, or a
 * negative GS_E* code. */
static int feed_text(gs_engine *e, gs_job *j, const char *s, size_t n)
{
    if (!j->stopper)
        return text_append(e, s, n);
    const char *out = NULL;
    size_t out_len = 0;
    int m = gs_stopper_feed(j->stopper, s, n, &out, &out_len);
    if (m < 0)
        return m;
    int rc = text_append(e, out, out_len);
    return rc ? rc : m == 1;
}

static int flush_text(gs_engine *e, gs_job *j)
{
    const char *s = NULL;
    size_t n = 0;
    if (j->detok) {
        e->p.detok.flush(j->detok, &s, &n);
        int rc = feed_text(e, j, s, n);
        if (rc < 0)
            return rc;
    }
    if (j->stopper) {
        gs_stopper_flush(j->stopper, &s, &n);
        return text_append(e, s, n);
    }
    return 0;
}

/* Sends one event with the text gathered so far; returns the callback's
 * value (meaningful for non-final events only). */
static int emit(gs_engine *e, gs_job *j, const int32_t *ids, int32_t n_ids, gs_finish_reason r,
                int err)
{
    gs_engine_event ev;
    fill_event(j, &ev);
    ev.ids = ids;
    ev.n_ids = n_ids;
    ev.text = e->text_len ? e->text : "";
    ev.text_len = e->text_len;
    ev.finish = r;
    ev.error = err;
    int ret = j->on_event(j->user, &ev);
    e->text_len = 0;
    return ret;
}

/* After j's final event: count it and free the job. */
static void retire(gs_engine *e, gs_job *j, gs_finish_reason r)
{
    e->n_finished[r]++;
    gs_engine__drop_job(e, j);
}

void gs_engine__finish(gs_engine *e, gs_job *j, gs_finish_reason r, int err)
{
    e->text_len = 0;
    emit(e, j, NULL, 0, r, err);
    retire(e, j, r);
}

/* Ends j with a server-side error after it lost its token or text. */
static void token_error(gs_engine *e, gs_job *j, int rc, const char *what)
{
    rc = gs_engine__server_err(rc);
    gs_log_warn("engine: job %lld: %s failed (%s); ending it", (long long)j->id, what,
                gs_err_name(rc));
    gs_engine__finish(e, j, GS_FINISH_ERROR, rc);
}

void gs_engine__on_token(gs_engine *e, gs_job *j, int32_t id, uint64_t t)
{
    e->text_len = 0;
    j->n_generated++;
    e->n_generated++;
    if (!j->t_first)
        j->t_first = t;
    j->t_last = t;
    int rc = gs_sampler_accept(j->sampler, id);
    if (!rc)
        rc = gs_seq_append(j->seq, id);
    if (rc) {
        token_error(e, j, rc, "recording the token");
        return;
    }
    gs_finish_reason r = GS_FINISH_NONE;
    for (int32_t i = 0; i < j->n_stop_ids; i++)
        if (j->stop_ids[i] == id)
            r = GS_FINISH_STOP;
    if (!r && j->detok) {
        const char *s = NULL;
        size_t n = 0;
        rc = e->p.detok.push(j->detok, id, &s, &n);
        if (rc) {
            token_error(e, j, rc, "detokenizing");
            return;
        }
        rc = feed_text(e, j, s, n);
        if (rc < 0) {
            token_error(e, j, rc, "collecting the text");
            return;
        }
        if (rc == 1)
            r = GS_FINISH_STOP;
    }
    if (!r && (j->n_generated >= j->max_tokens || j->seq->n_tokens >= e->max_model_len))
        r = GS_FINISH_LENGTH;
    if (r && (rc = flush_text(e, j)) < 0) {
        token_error(e, j, rc, "collecting the text");
        return;
    }
    int stop = emit(e, j, &id, 1, r, 0);
    if (r)
        retire(e, j, r);
    else if (stop)
        gs_engine__finish(e, j, GS_FINISH_CANCELLED, 0);
}

/* ---- cancel, finish_all, stats --------------------------------------------- */

int gs_engine_cancel(gs_engine *e, int64_t id)
{
    gs_job *j = gs_job_map_get(&e->by_id, id);
    if (!j)
        return GS_ENOENT;
    gs_engine__finish(e, j, GS_FINISH_CANCELLED, 0);
    gs_engine__publish_stats(e);
    return 0;
}

void gs_engine_finish_all(gs_engine *e, int err)
{
    if (!e)
        return;
    int n = 0;
    while (!gs_queue_empty(&e->jobs)) {
        gs_job *j = gs_queue_data(gs_queue_head(&e->jobs), gs_job, link);
        gs_engine__finish(e, j, GS_FINISH_ERROR, err);
        n++;
    }
    if (n)
        gs_log_info("engine: ended %d jobs (%s)", n, gs_err_name(err));
    gs_engine__publish_stats(e);
}

typedef struct {
    void **users;
    int32_t cap, n;
} queue_walk;

static void queue_user(gs_seq *seq, void *ctx)
{
    queue_walk *w = ctx;
    if (w->n < w->cap)
        w->users[w->n] = ((gs_job *)seq->user)->user;
    w->n++;
}

int32_t gs_engine_queue(gs_engine *e, void **users, int32_t cap)
{
    queue_walk w = {users, cap, 0};
    return gs_sched_each_waiting(e->sched, queue_user, &w);
}

int gs_engine_busy(const gs_engine *e)
{
    return e->n_jobs > 0;
}

void gs_engine_get_stats(const gs_engine *e, gs_engine_stats *out)
{
    gs_sched_stats s;
    gs_sched_get_stats(e->sched, &s);
    memset(out, 0, sizeof *out);
    out->n_running = s.n_running;
    out->n_waiting = s.n_waiting;
    out->n_pages = gs_kv_pool_n_pages(e->pool) - 1;
    out->n_free_pages = gs_kv_pool_n_free(e->pool);
    out->n_cached_pages = e->pc ? gs_prefix_cache_n_cached(e->pc) : 0;
    out->page_size = e->page_size;
    out->prefix_query_tokens = s.prefix_query_tokens;
    out->prefix_hit_tokens = s.prefix_hit_tokens;
    out->prefix_hit_rate =
        s.prefix_query_tokens ? (double)s.prefix_hit_tokens / (double)s.prefix_query_tokens : 0;
    out->n_steps = s.n_steps;
    out->n_preemptions = s.n_preemptions;
    out->n_computed_tokens = s.n_scheduled_tokens;
    out->n_generated_tokens = e->n_generated;
    out->n_images_encoded = e->n_images_encoded;
    out->n_images_cache_hits = e->n_image_hits;
    out->n_finished_stop = e->n_finished[GS_FINISH_STOP];
    out->n_finished_length = e->n_finished[GS_FINISH_LENGTH];
    out->n_finished_cancelled = e->n_finished[GS_FINISH_CANCELLED];
    out->n_finished_error = e->n_finished[GS_FINISH_ERROR];
    out->n_jobs_finished = out->n_finished_stop + out->n_finished_length +
                           out->n_finished_cancelled + out->n_finished_error;
    gs_model_graph_stats gst;
    gs_model_graph_stats_get(e->model, &gst);
    out->n_graph_replays = gst.replays;
    out->n_graph_captures = gst.captures;
    out->last_step_ns = e->last_step_ns;
    const gs_queue *q;
    GS_QUEUE_FOREACH(q, &e->jobs)
    {
        const gs_job *j = gs_queue_data(q, gs_job, link);
        const gs_seq *sq = j->seq;
        /* The last token of a sequence that has generated is decode work. */
        int64_t left = (int64_t)sq->n_tokens - sq->n_computed - (j->n_generated > 0);
        if (left > 0)
            out->n_queued_tokens += left;
    }
}

void gs_engine__publish_stats(gs_engine *e)
{
    if (!e->sched || !e->pool)
        return; /* not fully made (gs_engine_new failing) */
    gs_engine_stats st;
    gs_engine_get_stats(e, &st);
    pthread_mutex_lock(&e->stats_mu);
    e->snap = st;
    pthread_mutex_unlock(&e->stats_mu);
}

void gs_engine_stats_snapshot(const gs_engine *e, gs_engine_stats *out)
{
    gs_engine *m = (gs_engine *)e; /* the mutex only; nothing else is written */
    pthread_mutex_lock(&m->stats_mu);
    *out = e->snap;
    pthread_mutex_unlock(&m->stats_mu);
}

void gs_engine_reset_caches(gs_engine *e)
{
    if (e->pc)
        gs_prefix_cache_clear(e->pc);
    if (e->ec)
        gs_emb_cache_trim(e->ec);
    gs_engine__publish_stats(e);
}
