/* engine_step.c - one engine iteration: plan -> page copies -> image
 * encoding -> flattened batch -> one forward with sampling on the backend
 * (only token ids come back) -> commit -> events.
 *
 * Failure handling: a step that fails before the forward (a page copy, the
 * vision encoder, the batch) ends only the jobs involved with
 * GS_FINISH_ERROR - for the encoder, the jobs whose images were in the
 * batch - and leaves the other items uncommitted: the next plan schedules
 * them again from the same n_computed on the pages they already hold. A
 * failed forward ends every job of the step. The error is returned either
 * way, so that the worker can decide whether the device is still usable.
 * Jobs end with server-class codes only (gs_engine__server_err): by the
 * time a job is in a step, submit has validated everything it sent, so a
 * failure here is the model's, the device's or the engine's. A row whose
 * logits were all NaN / -inf ends its job with GS_EMODEL.
 *
 * Abort (gs_engine_params.should_abort): polled after the page copies
 * (which must happen, the block tables already point at the copies),
 * before and inside the vision encoder and before and inside the forward
 * (the model polls between layers and blocks). When it fires, nothing is
 * committed: image embeddings already made stay with their sequences,
 * images still to encode are unqueued, n_computed does not move, no token
 * is sampled; the pages the plan gave stay with their sequences, and the
 * next plan schedules the same work again.
 *
 * Handed-over pixels (gs_engine_image.release) are released as soon as
 * their image is encoded (or found in the encoder cache); such an image
 * keeps its embeddings until the job ends, as a preempted sequence may
 * need them again and there are no pixels to encode from.
 *
 * Owns nothing beyond the step: the image matrix of a step is allocated
 * and freed here; image embeddings move into their sequence and are freed
 * once the prefill has passed them (engine.c frees what is left at the end
 * of a job). Single-threaded (engine thread). */
#include "engine_impl.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"

static int aborted(const gs_engine *e)
{
    return e->p.should_abort && e->p.should_abort(e->p.abort_user);
}

/* After an aborted encode: the images not encoded go back to "not
 * queued", so the next plan lists them again. */
static void unqueue_encodes(const gs_step_plan *pl)
{
    for (int32_t i = 0; i < pl->n_encodes; i++)
        pl->encodes[i].seq->imgs[pl->encodes[i].img].queued = 0;
}

static void fail_items(gs_engine *e, const gs_step_plan *pl, int rc)
{
    for (int32_t i = 0; i < pl->n_items; i++)
        gs_engine__finish(e, pl->items[i].seq->user, GS_FINISH_ERROR, rc);
}

/* Fails the jobs that had images in this step's encoder batch. The
 * images of one sequence are listed one after another, so comparing with
 * the previous entry (a pointer compare, the job may be freed) finishes
 * each job once. */
static void fail_encodes(gs_engine *e, const gs_step_plan *pl, int rc)
{
    for (int32_t i = 0; i < pl->n_encodes; i++) {
        gs_seq *q = pl->encodes[i].seq;
        if (i > 0 && pl->encodes[i - 1].seq == q)
            continue;
        gs_engine__finish(e, q->user, GS_FINISH_ERROR, rc);
    }
}

/* Gives every image the plan lists its embeddings [len, hidden]: from the
 * encoder cache when the same image was encoded before, else from one run
 * of the vision tower over all the others together. */
static int encode_images(gs_engine *e, const gs_step_plan *pl)
{
    const int32_t mm = e->merge * e->merge;
    int32_t *todo = malloc(sizeof *todo * (size_t)pl->n_encodes), n = 0;
    if (!todo)
        return GS_ENOMEM;
    int64_t total = 0;
    for (int32_t i = 0; i < pl->n_encodes; i++) {
        gs_seq *q = pl->encodes[i].seq;
        int32_t k = pl->encodes[i].img;
        gs_emb_key key;
        gs_engine__emb_key(q, k, &key);
        void *hit = e->ec ? gs_emb_cache_get(e->ec, &key) : NULL;
        if (hit) {
            q->imgs[k].emb = hit;
            q->imgs[k].emb_shared = 1;
            q->imgs[k].queued = 0;
            if (q->imgs[k].release)
                gs_seq_release_pixels(q, k);
            e->n_image_hits++;
        } else {
            todo[n++] = i;
            total += q->imgs[k].n_patches;
        }
    }
    if (n == 0) {
        free(todo);
        return 0;
    }
    int32_t(*grids)[3] = malloc(sizeof *grids * (size_t)n);
    float *cat = NULL;
    const gs_sched_encode *first = &pl->encodes[todo[0]];
    const float *px = first->seq->imgs[first->img].pixels;
    if (n > 1)
        px = cat = malloc(sizeof(float) * (size_t)total * (size_t)e->patch_dim);
    gs_model_emb *out = NULL;
    int rc = !grids || !px ? GS_ENOMEM : gs_model_emb_new(e->model, total / mm, &out);
    int64_t off = 0;
    for (int32_t t = 0; t < n && !rc; t++) {
        const gs_sched_encode *en = &pl->encodes[todo[t]];
        const gs_seq_image *im = &en->seq->imgs[en->img];
        memcpy(grids[t], en->seq->spans[en->img].grid, sizeof grids[t]);
        if (cat)
            memcpy(cat + off * e->patch_dim, im->pixels,
                   sizeof(float) * (size_t)im->n_patches * (size_t)e->patch_dim);
        off += im->n_patches;
    }
    if (!rc)
        rc = aborted(e) ? GS_ECANCELED
                        : gs_model_encode_images(e->model, px, total, (const int32_t(*)[3])grids, n,
                                                 gs_model_emb_mat(out));
    /* Hand out the rows: one image keeps the whole matrix; several get a
     * copy of their rows each. Then into the encoder cache. */
    int64_t row = 0;
    for (int32_t t = 0; t < n && !rc; t++) {
        const gs_sched_encode *en = &pl->encodes[todo[t]];
        gs_seq *q = en->seq;
        int32_t len = q->spans[en->img].len;
        gs_model_emb *emb = NULL;
        if (n == 1) {
            emb = out;
            out = NULL;
        } else if (!(rc = gs_model_emb_new(e->model, len, &emb))) {
            rc = gs_model_emb_copy_rows(emb, 0, out, row, len);
        }
        gs_seq_image *im = &q->imgs[en->img];
        im->queued = 0;
        if (!rc && e->ec) {
            gs_emb_key key;
            gs_engine__emb_key(q, en->img, &key);
            emb = gs_emb_cache_put(e->ec, &key, emb, gs_model_emb_bytes(emb)); /* takes emb */
            rc = emb ? 0 : GS_ENOMEM;
            im->emb_shared = 1;
        } else if (rc) {
            gs_model_emb_free(emb);
            emb = NULL;
        }
        im->emb = emb;
        if (!rc && im->release)
            gs_seq_release_pixels(q, en->img);
        row += len;
    }
    gs_model_emb_free(out);
    free(cat);
    free(grids);
    free(todo);
    if (!rc)
        e->n_images_encoded += n;
    return rc;
}

/* Gathers the image rows the batch needs into one buffer *img (caller
 * frees it with gs_model_emb_free, also on failure). */
static int gather_image_rows(gs_engine *e, const gs_batch_out *bo, gs_model_emb **img)
{
    int rc = gs_model_emb_new(e->model, bo->n_img_rows, img);
    for (int32_t i = 0; i < bo->n_img_copies && !rc; i++) {
        const gs_batch_img_rows *r = &bo->img_rows[i];
        const gs_model_emb *src = r->seq->imgs[r->img].emb;
        if (!src)
            return GS_EINTERNAL; /* the scheduler lists every image a chunk touches */
        rc = gs_model_emb_copy_rows(*img, r->dst_row, src, r->src_row, r->n_rows);
    }
    return rc;
}

/* The capacity to use for n entries when cap is too small: the next power
 * of two (at least 64); -1 when n is absurd. */
static int32_t next_cap(int32_t cap, int64_t n)
{
    if (n > INT32_MAX / 2)
        return -1;
    int32_t nc = cap ? cap : 64;
    while (nc < n)
        nc *= 2;
    return nc;
}

#define RESIZE(ptr, n)                                                                             \
    do {                                                                                           \
        void *q_ = realloc((ptr), sizeof *(ptr) * (size_t)(n));                                    \
        if (!q_)                                                                                   \
            return GS_ENOMEM;                                                                      \
        (ptr) = q_;                                                                                \
    } while (0)

/* The sampling request of every logit row: each job's parameters with
 * offset = tokens generated so far, and the penalty lists (CSR) of the
 * jobs that use penalties. */
static int sample_requests(gs_engine *e, const gs_step_plan *pl, const gs_batch_out *bo,
                           gs_sample_batch *sb)
{
    const int32_t n = bo->tb.n_logits;
    if (n + 1 > e->cap_rows) {
        int32_t nc = next_cap(e->cap_rows, (int64_t)n + 1);
        if (nc < 0)
            return GS_ENOMEM;
        RESIZE(e->smp_rows, nc);
        RESIZE(e->smp_ids, nc);
        RESIZE(e->pen_off, nc);
        e->cap_rows = nc;
    }
    int64_t total = 0;
    int any = 0;
    for (int32_t k = 0; k < n; k++) {
        const gs_job *j = pl->items[bo->logit_item[k]].seq->user;
        gs_sampler_row(j->sampler, &e->smp_rows[k]);
        int32_t np = gs_sampler_n_penalty_ids(j->sampler);
        e->pen_off[k] = (int32_t)total;
        total += np;
        any |= np > 0;
    }
    e->pen_off[n] = (int32_t)total;
    sb->rows = e->smp_rows;
    sb->pen_off = NULL;
    sb->pen_ids = sb->pen_cnt = NULL;
    if (!any)
        return 0;
    if (total > e->cap_pen) {
        int32_t nc = next_cap(e->cap_pen, total);
        if (nc < 0)
            return GS_ENOMEM;
        RESIZE(e->pen_ids, nc);
        RESIZE(e->pen_cnt, nc);
        e->cap_pen = nc;
    }
    for (int32_t k = 0; k < n; k++) {
        const gs_job *j = pl->items[bo->logit_item[k]].seq->user;
        gs_sampler_penalty_ids(j->sampler, e->pen_ids + e->pen_off[k], e->pen_cnt + e->pen_off[k]);
    }
    sb->pen_off = e->pen_off;
    sb->pen_ids = e->pen_ids;
    sb->pen_cnt = e->pen_cnt;
    return 0;
}

/* Releases image embeddings that their sequence's prefill has passed. */
static void drop_passed_images(gs_engine *e, const gs_step_plan *pl)
{
    for (int32_t i = 0; i < pl->n_items; i++) {
        gs_seq *q = pl->items[i].seq;
        for (int32_t k = 0; k < q->n_imgs; k++) {
            /* Without pixels (handed over and released) the embeddings
             * stay: a preemption would need them again. */
            if (q->imgs[k].emb && q->imgs[k].pixels &&
                q->spans[k].start + q->spans[k].len <= q->n_computed)
                gs_engine__release_emb(e, q, k);
        }
    }
}

static int step(gs_engine *e, uint64_t now)
{
    gs_step_plan pl;
    int rc = gs_engine__server_err(gs_sched_plan(e->sched, now, &pl));
    for (int32_t i = 0; i < pl.n_failed; i++) {
        gs_log_warn("engine: job %lld needs more KV pages than the cache has; ending it",
                    (long long)pl.failed[i]->id);
        gs_engine__finish(e, pl.failed[i]->user, GS_FINISH_LENGTH, 0);
    }
    if (rc || pl.n_items == 0)
        return rc;
    for (int32_t i = 0; i < pl.n_items; i++) {
        gs_job *j = pl.items[i].seq->user;
        if (!j->t_sched)
            j->t_sched = now;
    }

    for (int32_t i = 0; i < pl.n_copies && !rc; i++)
        rc = gs_kv_cache_copy_page(e->kv, pl.copies[i].dst, pl.copies[i].src);
    if (rc) {
        rc = gs_engine__server_err(rc);
        fail_items(e, &pl, rc);
        return rc;
    }
    if (pl.n_encodes > 0 && (rc = encode_images(e, &pl)) == GS_ECANCELED) {
        unqueue_encodes(&pl);
        return rc;
    }
    if (rc) {
        rc = gs_engine__server_err(rc);
        gs_log_error("engine: vision encoder failed (%s) for %d images", gs_err_name(rc),
                     pl.n_encodes);
        fail_encodes(e, &pl, rc);
        return rc;
    }

    gs_batch_out bo;
    gs_model_emb *img = NULL;
    rc = gs_batch_build(e->batch, &pl, e->page_size, &bo);
    if (!rc && bo.n_img_rows > 0)
        rc = gather_image_rows(e, &bo, &img);
    gs_sample_batch sb;
    if (!rc)
        rc = sample_requests(e, &pl, &bo, &sb);
    if (!rc) {
        if (img)
            bo.tb.img = gs_model_emb_mat(img);
        rc = aborted(e) ? GS_ECANCELED : gs_model_step(e->model, e->kv, &bo.tb, &sb, e->smp_ids);
    }
    gs_model_emb_free(img);
    if (rc == GS_ECANCELED)
        return rc; /* nothing committed: the same items run again later */
    if (!rc)
        rc = gs_sched_commit(e->sched, &pl);
    if (rc) {
        rc = gs_engine__server_err(rc);
        gs_log_error("engine: step of %d tokens / %d sequences failed: %s", pl.n_tokens, pl.n_items,
                     gs_err_name(rc));
        fail_items(e, &pl, rc);
        return rc;
    }
    drop_passed_images(e, &pl);

    /* Hand out the ids. A job that finishes is dropped at once; the plan's
     * arrays stay valid (they belong to the scheduler) and each job
     * appears in one item only. */
    uint64_t t = gs_engine__now(e);
    for (int32_t k = 0; k < bo.tb.n_logits; k++) {
        gs_job *j = pl.items[bo.logit_item[k]].seq->user;
        int32_t id = e->smp_ids[k];
        if (id < 0) {
            gs_log_warn("engine: job %lld: no finite logit to sample from", (long long)j->id);
            gs_engine__finish(e, j, GS_FINISH_ERROR, GS_EMODEL);
        } else {
            gs_engine__on_token(e, j, id, t);
        }
    }
    return 0;
}

int gs_engine_step(gs_engine *e, uint64_t now)
{
    uint64_t t0 = gs_engine__now(e);
    int rc = step(e, now);
    uint64_t t1 = gs_engine__now(e);
    e->last_step_ns = t1 >= t0 ? t1 - t0 : 0;
    gs_engine__publish_stats(e);
    return rc;
}
