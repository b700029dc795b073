/* engine_impl.h - the gs_engine struct and the job record, shared by
 * engine.c (handle, submit, cancel, events) and engine_step.c (one
 * iteration). Not part of the API. Single-threaded, except stats_mu and
 * snap (gs_engine_stats_snapshot). */
#ifndef GS_ENGINE_IMPL_H
#define GS_ENGINE_IMPL_H

#include <pthread.h>

#include "common/queue.h"
#include "worker/engine/batch.h"
#include "worker/engine/emb_cache.h"
#include "worker/engine/engine.h"
#include "worker/engine/job_map.h"
#include "worker/engine/kv_pool.h"
#include "worker/engine/prefix_cache.h"
#include "worker/engine/scheduler.h"
#include "worker/engine/sequence.h"

/* One submitted request: the sequence plus everything that is not the
 * scheduler's business. */
typedef struct gs_job {
    int64_t id;
    gs_seq *seq;   /* seq->user points back here */
    gs_queue link; /* in gs_engine.jobs */
    gs_sampler *sampler;
    gs_stopper *stopper; /* NULL without stop strings */
    void *detok;         /* NULL without a detokenizer */
    int32_t *stop_ids;   /* [n_stop_ids] job's stop ids + the model's eos ids */
    int32_t n_stop_ids;
    int32_t max_tokens; /* effective: min(job's, context left) */
    int32_t n_generated;
    uint64_t salt;
    gs_engine_event_fn on_event;
    void *user;
    uint64_t t_arrival, t_sched, t_first, t_last;
} gs_job;

struct gs_engine {
    gs_engine_params p;
    gs_model *model;
    const gs_model_config *cfg;
    int32_t page_size, max_model_len, vocab, hidden, patch_dim, merge;
    gs_kv_cache *kv;
    int graphs_on; /* this engine enabled the model's decode graphs for kv */
    gs_kv_pool *pool;
    gs_prefix_cache *pc; /* NULL with GS_ENGINE_NO_PREFIX_CACHE */
    gs_emb_cache *ec;    /* NULL with GS_ENGINE_NO_ENCODER_CACHE */
    gs_sched *sched;
    gs_batch *batch;
    gs_queue jobs; /* every job inside, oldest first */
    gs_job_map by_id;
    int32_t n_jobs;
    int64_t next_id;
    /* Sampling requests of a step, grown as needed (engine_step.c). */
    gs_sample_row *smp_rows; /* [cap_rows] */
    int32_t *smp_ids;        /* [cap_rows] chosen ids */
    int32_t *pen_off;        /* [cap_rows + 1] */
    int32_t cap_rows;
    int32_t *pen_ids, *pen_cnt; /* [cap_pen] */
    int32_t cap_pen;
    char *text; /* event text scratch */
    size_t text_len, text_cap;
    int64_t n_generated, n_images_encoded, n_image_hits;
    int64_t n_finished[GS_FINISH_ERROR + 1]; /* by reason */
    uint64_t last_step_ns;
    /* The published copy for gs_engine_stats_snapshot (other threads). */
    pthread_mutex_t stats_mu;
    int stats_mu_ok;
    gs_engine_stats snap;
};

uint64_t gs_engine__now(const gs_engine *e);
/* A code for a job ended by a fault of the server (the model, the device,
 * the engine): rc itself when it is of the server class (HTTP >= 500),
 * else GS_EINTERNAL, so that no request is blamed for it. */
int gs_engine__server_err(int rc);
/* Publishes the current stats for gs_engine_stats_snapshot. */
void gs_engine__publish_stats(gs_engine *e);
/* Unlinks (when linked) and frees j and everything it owns, without an
 * event: only for jobs submit has not accepted (engine_events.c). */
void gs_engine__drop_job(gs_engine *e, gs_job *j);
/* Sends job j's final event (no ids, no text) and drops it. */
void gs_engine__finish(gs_engine *e, gs_job *j, gs_finish_reason r, int err);
/* Handles a sampled token of j at time t: stop checks, text, event; may
 * finish the job. */
void gs_engine__on_token(gs_engine *e, gs_job *j, int32_t id, uint64_t t);
/* Gives up image k's embeddings (a cache reference, or its own buffer). */
void gs_engine__release_emb(gs_engine *e, gs_seq *q, int32_t k);
/* The encoder-cache key of image k of q. */
void gs_engine__emb_key(const gs_seq *q, int32_t k, gs_emb_key *out);

#endif
