/* bw_inproc.c - bench_worker's in-process target: the same jobs built by
 * the same request builder (worker/request.h) and run by one engine on
 * the calling thread, as bench_engine does: the baseline that the IPC
 * path is compared with. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_worker.h"
#include "common/clock.h"
#include "kernels/kernels.h"
#include "worker/engine/engine_detok.h"
#include "worker/model/model.h"
#include "worker/request.h"

typedef struct {
    bw_target base;
    const bw_options *o;
    gs_backend *be;
    gs_model *model;
    gs_tokenizer *tok;
    gs_engine *eng;
    gs_engine_detok_ctx dctx;
    gs_generation_config gen;
    gs_image_params ip;
    gs_request_env env;
    int *ended;
    int n_ended, cap_ended;
} inproc_target;

typedef struct {
    inproc_target *t;
    bw_result *r;
    int i;
} job_ctx;

static int on_event(void *user, const gs_engine_event *ev)
{
    job_ctx *x = user;
    bw_result *r = x->r;
    if (!r->first_ns && ev->n_ids)
        r->first_ns = gs_clock_now_ns();
    bw_result_add(r, ev->ids, ev->n_ids, ev->text ? ev->text : "", ev->text_len);
    if (ev->finish == GS_FINISH_NONE)
        return x->t->o->cancel_after && r->n_events == x->t->o->cancel_after;
    r->finish = (int)ev->finish;
    r->error = ev->error;
    r->prompt_tokens = ev->usage.prompt_tokens;
    r->completion_tokens = ev->usage.completion_tokens;
    r->worker_ttft_ns = ev->timings.ttft_ns;
    r->worker_job_ns = ev->timings.ttft_ns + ev->timings.decode_ns;
    r->end_ns = gs_clock_now_ns();
    inproc_target *t = x->t;
    if (t->n_ended < t->cap_ended)
        t->ended[t->n_ended++] = x->i;
    free(x);
    return 0;
}

static int in_send(bw_target *bt, int i, const char *json, const bw_blob *images, int n_images,
                   bw_result *r)
{
    inproc_target *t = (inproc_target *)bt;
    if (i >= t->cap_ended) {
        int cap = 2 * i + 16;
        int *e = realloc(t->ended, (size_t)cap * sizeof *e);
        if (!e)
            return -1;
        t->ended = e;
        t->cap_ended = cap;
    }
    if (!r->sent_ns) /* the caller may have stamped it (a burst's start) */
        r->sent_ns = gs_clock_now_ns();
    gs_request_blob blobs[BW_MAX_IMAGES];
    for (int k = 0; k < n_images; k++) {
        blobs[k].bytes = images[k].bytes;
        blobs[k].len = images[k].len;
    }
    gs_request *req = NULL;
    gs_diag d;
    gs_diag_clear(&d);
    int rc = gs_request_build(&t->env, json, strlen(json), blobs, n_images, &req, &d);
    job_ctx *x = rc ? NULL : malloc(sizeof *x);
    if (!rc && !x)
        rc = GS_ENOMEM;
    if (!rc) {
        *x = (job_ctx){t, r, i};
        gs_engine_job job;
        gs_request_to_job(req, &job);
        job.on_event = on_event;
        job.user = x;
        job.arrival_ns = r->sent_ns;
        int64_t id;
        if ((rc = gs_engine_submit(t->eng, &job, &id, &d)))
            free(x);
    }
    gs_request_free(req);
    if (rc) { /* refused, as a worker would refuse it */
        r->refused = 1;
        r->finish = BW_FINISH_ERROR;
        r->error = rc;
        snprintf(r->message, sizeof r->message, "%s", d.msg);
        t->ended[t->n_ended++] = i;
    }
    return 0;
}

static int in_wait_one(bw_target *bt, uint64_t deadline_ns)
{
    inproc_target *t = (inproc_target *)bt;
    uint64_t now = gs_clock_now_ns();
    while (!t->n_ended && gs_engine_busy(t->eng) && now < deadline_ns) {
        int rc = gs_engine_step(t->eng, now);
        if (rc && rc != GS_ECANCELED)
            fprintf(stderr, "bench_worker: engine step: %s\n", gs_strerror(rc));
        now = gs_clock_now_ns();
    }
    if (!t->n_ended && now < deadline_ns) { /* nothing to step: the next arrival */
        struct timespec ts = {(time_t)(deadline_ns / 1000000000u),
                              (long)(deadline_ns % 1000000000u)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
        }
    }
    if (!t->n_ended)
        return -1;
    int idx = t->ended[0];
    memmove(t->ended, t->ended + 1, (size_t)--t->n_ended * sizeof *t->ended);
    return idx;
}

static void in_close(bw_target *bt)
{
    inproc_target *t = (inproc_target *)bt;
    gs_engine_free(t->eng);
    gs_tokenizer_free(t->tok);
    gs_model_free(t->model);
    gs_backend_free(t->be);
    free(t->ended);
    free(t);
}

int bw_inproc_open(const bw_options *o, bw_target **out)
{
    inproc_target *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    t->base = (bw_target){in_send, in_wait_one, NULL, in_close};
    t->o = o;
    gs_diag d;
    gs_diag_clear(&d);
    gs_backend_params bp = {0};
    bp.kind = GS_BACKEND_CPU;
    bp.n_threads = o->threads;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", o->model);
    gs_model_params mp = {o->model, NULL, 0, 1, 0, GS_WEIGHTS_ASIS, 0};
    int rc = gs_backend_new(&bp, &t->be, &d);
    if (!rc && o->batch_invariant)
        rc = gs_backend_set_tuning(t->be, &(gs_backend_tuning){GS_TUNE_CPU_GEMM_F32, 0});
    if (!rc) {
        mp.be = t->be;
        rc = gs_model_load(&mp, &t->model, &d);
    }
    const gs_model_config *cfg = rc ? NULL : gs_model_get_config(t->model);
    if (!rc && !(rc = gs_generation_config_load(o->model, cfg, &t->gen, &d)) &&
        !(rc = gs_tokenizer_load(path, &t->tok, &d)) &&
        !(rc = gs_image_params_load(o->model, &t->ip, &d)))
        rc = gs_model_check_image_params(cfg, &t->ip, &d);
    if (!rc) {
        t->dctx = (gs_engine_detok_ctx){t->tok, 0};
        gs_engine_params ep = {0};
        ep.model = t->model;
        ep.max_model_len = 8192;
        ep.kv_bytes = (size_t)o->kv_mib << 20;
        ep.detok = gs_engine_tokenizer_detok(&t->dctx);
        rc = gs_engine_new(&ep, &t->eng, &d);
        t->env =
            (gs_request_env){t->tok, cfg, &t->gen, &t->ip, gs_image_decode_defaults(), 16, 8192, 0};
    }
    if (rc) {
        fprintf(stderr, "bench_worker: --model %s: %s\n", o->model,
                d.msg[0] ? d.msg : gs_strerror(rc));
        in_close(&t->base);
        return -1;
    }
    *out = &t->base;
    return 0;
}
