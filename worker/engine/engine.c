/* engine.c - the gs_engine handle: creation (KV cache sizing), job
 * submission with full validation, cancellation, events and stats. One
 * iteration (gs_engine_step) is in engine_step.c.
 *
 * Owns: the KV cache, pool, prefix cache, scheduler, batch builder, every
 * job (sequence, sampler, stopper, detokenizer state, copied pixels, image
 * embeddings), the id map and the scratch buffers. Handed-over pixels are
 * held until their release callback runs. Borrows: the model and its
 * backend. Threading: one thread drives the engine (engine.h); only
 * gs_engine_stats_snapshot runs on others, under stats_mu.
 *
 * Every job that submit accepts ends through gs_engine__finish or the
 * final-event branch of gs_engine__on_token, which send the one final
 * event and count the reason; nothing drops a job silently. */
#include "engine_impl.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "worker/model/rope_index.h"

const char *gs_finish_reason_name(gs_finish_reason r)
{
    switch (r) {
    case GS_FINISH_NONE:
        return "none";
    case GS_FINISH_STOP:
        return "stop";
    case GS_FINISH_LENGTH:
        return "length";
    case GS_FINISH_CANCELLED:
        return "cancelled";
    case GS_FINISH_ERROR:
        return "error";
    }
    return "unknown";
}

uint64_t gs_engine__now(const gs_engine *e)
{
    if (e->p.clock)
        return e->p.clock(e->p.clock_user);
    return gs_clock_now_ns();
}

int gs_engine__server_err(int rc)
{
    if (rc == 0)
        return 0;
    return gs_err_http_status(rc) >= 500 ? rc : GS_EINTERNAL;
}

/* ---- creation ------------------------------------------------------------ */

static void free_emb(void *user, void *emb)
{
    (void)user;
    gs_model_emb_free(emb);
}

int gs_engine_new(const gs_engine_params *p, gs_engine **out, gs_diag *d)
{
    if (!out)
        return GS_EINVAL;
    *out = NULL;
    if (!p || !p->model)
        return gs_diag_set(d, GS_EINVAL, "engine: no model");
    gs_engine *e = calloc(1, sizeof *e);
    if (!e)
        return GS_ENOMEM;
    gs_queue_init(&e->jobs);
    if (pthread_mutex_init(&e->stats_mu, NULL) != 0) {
        free(e);
        return GS_ENOMEM;
    }
    e->stats_mu_ok = 1;
    e->p = *p;
    e->model = p->model;
    e->cfg = gs_model_get_config(p->model);
    const gs_model_config *c = e->cfg;
    e->page_size = p->page_size ? p->page_size : 16;
    e->max_model_len = p->max_model_len ? p->max_model_len : c->text.max_position_embeddings;
    e->vocab = c->text.vocab_size;
    e->hidden = c->text.hidden_size;
    e->merge = c->vision.spatial_merge_size;
    e->patch_dim = c->vision.in_channels * c->vision.temporal_patch_size * c->vision.patch_size *
                   c->vision.patch_size;
    e->next_id = 1;
    gs_sched_params sp = {e->page_size, p->token_budget ? p->token_budget : 512,
                          p->max_seqs ? p->max_seqs : 64};
    int rc = 0;
    if (e->page_size < 1 || e->page_size > 4096)
        rc = gs_diag_set(d, GS_EINVAL, "engine: page_size %d not in [1, 4096]", e->page_size);
    else if (sp.token_budget < 1 || sp.max_seqs < 1 || p->n_pages < 0 || p->kv_fraction < 0 ||
             p->kv_fraction > 1 || e->max_model_len < 2)
        rc = gs_diag_set(d, GS_EINVAL,
                         "engine: token_budget, max_seqs, n_pages, kv_fraction "
                         "or max_model_len out of range");
    else if (c->vision.out_hidden_size != e->hidden || e->merge < 1)
        rc = gs_diag_set(d, GS_ECONFIG, "engine: vision out_hidden_size %d != text hidden %d",
                         c->vision.out_hidden_size, e->hidden);
    if (rc) {
        gs_engine_free(e);
        return rc;
    }

    /* Pages: explicit, or from a byte budget, never more than useful. */
    int64_t per_seq = ((int64_t)e->max_model_len + e->page_size - 1) / e->page_size;
    int64_t useful = per_seq * sp.max_seqs + 1;
    int32_t cap = useful > INT32_MAX / 4 ? INT32_MAX / 4 : (int32_t)useful;
    int32_t n_pages = p->n_pages;
    size_t page_bytes = gs_kv_cache_page_bytes(e->model, e->page_size);
    if (!n_pages) {
        size_t bytes = p->kv_bytes;
        if (!bytes) {
            size_t fr = 0, tot = 0;
            if (gs_model_mem_info(e->model, &fr, &tot) == 0)
                bytes = p->kv_reserve
                            ? (fr > p->kv_reserve ? fr - p->kv_reserve : 0)
                            : (size_t)((double)fr * (p->kv_fraction > 0 ? p->kv_fraction : 0.5));
        }
        n_pages = gs_kv_pool_pages_for_bytes(bytes, page_bytes, cap);
    }
    if (n_pages < 2) {
        gs_engine_free(e);
        return gs_diag_set(d, GS_EINVAL, "engine: KV memory holds %d pages of %zu bytes, need 2",
                           n_pages, page_bytes);
    }
    gs_kv_pool_params pp = {n_pages};
    if ((rc = gs_kv_cache_new(e->model, n_pages, e->page_size, &e->kv)) ||
        (rc = gs_kv_pool_new(&pp, &e->pool)) ||
        (!(p->flags & GS_ENGINE_NO_PREFIX_CACHE) && (rc = gs_prefix_cache_new(e->pool, &e->pc))) ||
        (!(p->flags & GS_ENGINE_NO_ENCODER_CACHE) &&
         (rc = gs_emb_cache_new(p->encoder_cache_bytes ? p->encoder_cache_bytes : 256u << 20,
                                free_emb, NULL, &e->ec))) ||
        (rc = gs_sched_new(&sp, e->pool, e->pc, &e->sched)) || (rc = gs_batch_new(&e->batch))) {
        gs_engine_free(e);
        return gs_diag_set(d, rc, "engine: cannot allocate %d KV pages of %zu bytes", n_pages,
                           page_bytes);
    }
    int graphs = p->graphs ? p->graphs > 0 : gs_model_graphs_pay(e->model);
    if (graphs && (rc = gs_model_enable_graphs(e->model, e->kv, sp.max_seqs, e->max_model_len))) {
        gs_engine_free(e);
        return gs_diag_set(d, rc, "engine: cannot set up decode graphs for %d sequences",
                           sp.max_seqs);
    }
    e->graphs_on = graphs;
    if (p->should_abort)
        gs_model_set_abort(e->model, p->should_abort, p->abort_user);
    gs_engine__publish_stats(e);
    gs_log_info("engine: %d KV pages x %d tokens (%.1f MB), budget %d tokens, %d seqs, "
                "prefix cache %s, encoder cache %zu MiB",
                n_pages - 1, e->page_size, (double)page_bytes * n_pages / 1e6, sp.token_budget,
                sp.max_seqs, e->pc ? "on" : "off",
                (p->encoder_cache_bytes ? p->encoder_cache_bytes : (size_t)256 << 20) >> 20);
    *out = e;
    return 0;
}

void gs_engine_free(gs_engine *e)
{
    if (!e)
        return;
    gs_engine_finish_all(e, GS_ESHUTDOWN);
    if (e->p.should_abort && e->kv)
        gs_model_set_abort(e->model, NULL, NULL);
    gs_job_map_clear(&e->by_id);
    gs_batch_free(e->batch);
    gs_emb_cache_free(e->ec);
    gs_sched_free(e->sched);
    gs_prefix_cache_free(e->pc);
    gs_kv_pool_free(e->pool);
    if (e->graphs_on)
        gs_model_disable_graphs(e->model); /* its graphs write e->kv */
    gs_kv_cache_free(e->kv);
    free(e->smp_rows);
    free(e->smp_ids);
    free(e->pen_off);
    free(e->pen_ids);
    free(e->pen_cnt);
    free(e->text);
    if (e->stats_mu_ok)
        pthread_mutex_destroy(&e->stats_mu);
    free(e);
}

/* ---- submit -------------------------------------------------------------- */

/* SHA-256 of the grid and the pixel bytes, for images given without a
 * content hash. */
static int hash_pixels(const gs_engine_image *im, size_t bytes, uint8_t out[32])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int len = 0;
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
             EVP_DigestUpdate(ctx, im->grid, sizeof im->grid) &&
             EVP_DigestUpdate(ctx, im->pixels, bytes) && EVP_DigestFinal_ex(ctx, out, &len);
    EVP_MD_CTX_free(ctx);
    return ok ? 0 : GS_EINTERNAL;
}

/* Finds the token span of every image (image k takes the next
 * t*h*w/merge^2 image tokens, which must be consecutive) and checks the
 * images. */
static int image_spans(const gs_engine *e, const gs_engine_job *jb, gs_prefix_image *spans,
                       gs_diag *d)
{
    int32_t pos = 0, img_tok = e->cfg->image_token_id;
    for (int32_t k = 0; k < jb->n_images; k++) {
        const gs_engine_image *im = &jb->images[k];
        const int32_t *g = im->grid;
        if (g[0] < 1 || g[1] < 1 || g[2] < 1 || g[0] > 4096 || g[1] > 4096 || g[2] > 4096 ||
            g[1] % e->merge || g[2] % e->merge)
            return gs_diag_set(d, GS_EINVAL,
                               "images[%d].grid %dx%dx%d: not positive multiples "
                               "of the merge size %d",
                               k, g[0], g[1], g[2], e->merge);
        int64_t np = (int64_t)g[0] * g[1] * g[2];
        if (im->n_patches != np || !im->pixels)
            return gs_diag_set(d, GS_EINVAL, "images[%d]: %lld patches given, grid says %lld", k,
                               (long long)im->n_patches, (long long)np);
        if (im->patch_dim != 0 && im->patch_dim != e->patch_dim)
            return gs_diag_set(d, GS_EINVAL,
                               "images[%d]: %d floats per patch, the model takes %d "
                               "(preprocessor_config.json disagrees with config.json?)",
                               k, im->patch_dim, e->patch_dim);
        int64_t len = np / ((int64_t)e->merge * e->merge);
        while (pos < jb->n_prompt && jb->prompt[pos] != img_tok)
            pos++;
        if ((int64_t)pos + len > jb->n_prompt)
            return gs_diag_set(d, GS_EINVAL, "images[%d]: prompt has too few image tokens", k);
        for (int32_t i = 0; i < len; i++)
            if (jb->prompt[pos + i] != img_tok)
                return gs_diag_set(d, GS_EINVAL,
                                   "images[%d]: needs %lld consecutive image "
                                   "tokens at %d",
                                   k, (long long)len, pos);
        spans[k].start = pos;
        spans[k].len = (int32_t)len;
        memcpy(spans[k].grid, g, sizeof spans[k].grid);
        static const uint8_t zero[32];
        if (memcmp(im->hash, zero, 32) == 0) {
            int rc =
                hash_pixels(im, (size_t)np * (size_t)e->patch_dim * sizeof(float), spans[k].hash);
            if (rc)
                return rc;
        } else {
            memcpy(spans[k].hash, im->hash, 32);
        }
        pos += (int32_t)len;
    }
    for (; pos < jb->n_prompt; pos++)
        if (jb->prompt[pos] == img_tok)
            return gs_diag_set(d, GS_EINVAL, "prompt has more image tokens than the %d images",
                               jb->n_images);
    return 0;
}

static int check_job(const gs_engine *e, const gs_engine_job *jb, gs_diag *d)
{
    if (!jb->on_event)
        return gs_diag_set(d, GS_EINVAL, "job: no event callback");
    if (jb->n_prompt <= 0 || !jb->prompt)
        return gs_diag_set(d, GS_EINVAL, "job: empty prompt");
    for (int32_t i = 0; i < jb->n_prompt; i++)
        if (jb->prompt[i] < 0 || jb->prompt[i] >= e->vocab)
            return gs_diag_set(d, GS_EINVAL, "prompt[%d] = %d: not in [0, %d)", i, jb->prompt[i],
                               e->vocab);
    if (jb->n_images < 0 || (jb->n_images > 0 && !jb->images) || jb->n_images > jb->n_prompt)
        return gs_diag_set(d, GS_EINVAL, "job: bad image list");
    if (jb->n_stop_ids < 0 || (jb->n_stop_ids > 0 && !jb->stop_ids) || jb->n_stop_strings < 0 ||
        (jb->n_stop_strings > 0 && !jb->stop_strings))
        return gs_diag_set(d, GS_EINVAL, "job: bad stop list");
    for (int32_t i = 0; i < jb->n_stop_strings; i++)
        if (!jb->stop_strings[i])
            return gs_diag_set(d, GS_EINVAL, "stop[%d] is NULL", i);
    int rc = gs_sampling_validate(&jb->sampling, d);
    if (rc)
        return rc;
    int32_t usable = gs_kv_pool_n_pages(e->pool) - 1;
    if (jb->n_prompt >= e->max_model_len ||
        ((int64_t)jb->n_prompt + 1 + e->page_size - 1) / e->page_size > usable)
        return gs_diag_set(d, GS_ECONTEXT,
                           "prompt of %d tokens does not fit (max_model_len %d, "
                           "KV cache %lld tokens)",
                           jb->n_prompt, e->max_model_len, (long long)usable * e->page_size);
    return 0;
}

/* *taken = 1 once the handed-over images belong to *out. */
static int make_seq(gs_engine *e, const gs_engine_job *jb, gs_seq **out, int *taken, gs_diag *d)
{
    gs_prefix_image *spans = calloc((size_t)(jb->n_images ? jb->n_images : 1), sizeof *spans);
    int32_t *pos = malloc(sizeof *pos * 3 * (size_t)jb->n_prompt);
    int32_t(*grids)[3] = malloc(sizeof *grids * (size_t)(jb->n_images ? jb->n_images : 1));
    int rc = !spans || !pos || !grids ? GS_ENOMEM : image_spans(e, jb, spans, d);
    int32_t delta = 0;
    if (!rc) {
        for (int32_t k = 0; k < jb->n_images; k++)
            memcpy(grids[k], jb->images[k].grid, sizeof grids[k]);
        gs_rope_index_params rp = {e->cfg->image_token_id, e->cfg->video_start_token_id,
                                   e->cfg->video_end_token_id, e->merge};
        rc = gs_rope_index(&rp, jb->prompt, jb->n_prompt, (const int32_t(*)[3])grids, jb->n_images,
                           pos, &delta, d);
    }
    if (!rc) {
        gs_seq_params sp = {.toks = jb->prompt,
                            .n_toks = jb->n_prompt,
                            .spans = spans,
                            .n_images = jb->n_images,
                            .pos = pos,
                            .rope_delta = delta,
                            .cache_salt = jb->cache_salt};
        rc = gs_seq_new(&sp, out);
    }
    /* Handed-over images first: from here on the sequence owns them (and
     * releases them when freed), so a later failure releases each once. */
    for (int32_t k = 0; !rc && k < jb->n_images; k++) {
        const gs_engine_image *im = &jb->images[k];
        gs_seq_image *si = &(*out)->imgs[k];
        si->n_patches = im->n_patches;
        if (im->release) {
            si->pixels = im->pixels;
            si->release = im->release;
            si->release_ctx = im->release_ctx;
        }
    }
    if (!rc)
        *taken = 1;
    for (int32_t k = 0; !rc && k < jb->n_images; k++) {
        const gs_engine_image *im = &jb->images[k];
        if (im->release)
            continue;
        size_t bytes = (size_t)im->n_patches * (size_t)e->patch_dim * sizeof(float);
        float *px = malloc(bytes);
        if (!px)
            rc = GS_ENOMEM;
        else
            memcpy(px, im->pixels, bytes);
        (*out)->imgs[k].pixels = px;
    }
    if (rc && *out) {
        gs_seq_free(*out);
        *out = NULL;
    }
    free(spans);
    free(pos);
    free(grids);
    return rc;
}

/* Releases the handed-over images of a job that was not accepted. */
static void release_images(const gs_engine_job *jb)
{
    for (int32_t k = 0; jb->images && k < jb->n_images; k++)
        if (jb->images[k].release)
            jb->images[k].release(jb->images[k].release_ctx);
}

int gs_engine_submit(gs_engine *e, const gs_engine_job *jb, int64_t *id, gs_diag *d)
{
    if (!e || !jb || !id) {
        if (jb)
            release_images(jb);
        return gs_diag_set(d, GS_EINVAL, "engine_submit: NULL argument");
    }
    *id = 0;
    int rc = check_job(e, jb, d);
    gs_job *j = rc ? NULL : calloc(1, sizeof *j);
    int eos = !(jb->flags & GS_JOB_IGNORE_EOS) ? e->cfg->text.n_eos : 0;
    if (j)
        j->stop_ids = malloc(sizeof *j->stop_ids * (size_t)(jb->n_stop_ids + eos + 1));
    if (rc || !j || !j->stop_ids) {
        if (j)
            free(j);
        release_images(jb);
        return rc ? rc : GS_ENOMEM;
    }
    if (jb->n_stop_ids)
        memcpy(j->stop_ids, jb->stop_ids, sizeof *j->stop_ids * (size_t)jb->n_stop_ids);
    for (int i = 0; i < eos; i++)
        j->stop_ids[jb->n_stop_ids + i] = e->cfg->text.eos_token_ids[i];
    j->n_stop_ids = jb->n_stop_ids + eos;
    j->on_event = jb->on_event;
    j->salt = jb->cache_salt;
    j->user = jb->user;
    int32_t room = e->max_model_len - jb->n_prompt;
    j->max_tokens = jb->max_tokens > 0 && jb->max_tokens < room ? jb->max_tokens : room;
    j->t_arrival = jb->arrival_ns ? jb->arrival_ns : gs_engine__now(e);
    int taken = 0;
    rc = make_seq(e, jb, &j->seq, &taken, d);
    if (rc && !taken)
        release_images(jb);
    if (!rc)
        rc = gs_sampler_new(&jb->sampling, e->vocab, jb->prompt, jb->n_prompt, &j->sampler, d);
    if (!rc && jb->n_stop_strings > 0)
        rc = gs_stopper_new(jb->stop_strings, jb->n_stop_strings, &j->stopper);
    /* Everything the client sent has been checked by now: what fails
     * below is the server's (a 500-class code, never a 400). */
    if (!rc && e->p.detok.open)
        rc = gs_engine__server_err(e->p.detok.open(e->p.detok.user, &j->detok));
    if (!rc) {
        j->id = j->seq->id = e->next_id;
        j->seq->user = j;
        rc = gs_engine__server_err(gs_job_map_put(&e->by_id, j->id, j));
        if (!rc && (rc = gs_engine__server_err(gs_sched_add(e->sched, j->seq))))
            gs_job_map_del(&e->by_id, j->id);
    }
    if (rc) {
        gs_engine__drop_job(e, j);
        return rc;
    }
    e->next_id++;
    gs_queue_insert_tail(&e->jobs, &j->link);
    e->n_jobs++;
    *id = j->id;
    gs_engine__publish_stats(e);
    return 0;
}
