/* sequence.c - gs_seq construction, token append and chain keys.
 *
 * Owns the token, span, image and key arrays of one sequence and its block
 * table object (not the pages in it: those belong to the scheduler's pool
 * and are released by gs_sched_remove). Single-threaded. */
#include "sequence.h"

#include <stdlib.h>
#include <string.h>

int gs_seq_new(const gs_seq_params *p, gs_seq **out)
{
    if (!out)
        return GS_EINVAL;
    *out = NULL;
    if (!p || p->n_toks <= 0 || !p->toks || p->n_images < 0 || (p->n_images > 0 && !p->spans))
        return GS_EINVAL;
    int32_t prev_end = 0;
    for (int32_t i = 0; i < p->n_images; i++) {
        const gs_prefix_image *sp = &p->spans[i];
        if (sp->start < prev_end || sp->len <= 0 || sp->len > p->n_toks - sp->start)
            return GS_EINVAL;
        prev_end = sp->start + sp->len;
    }
    gs_seq *s = calloc(1, sizeof *s);
    if (!s)
        return GS_ENOMEM;
    s->id = p->id;
    s->cap_tokens = p->n_toks + 16;
    s->toks = malloc((size_t)s->cap_tokens * sizeof *s->toks);
    if (p->n_images > 0) {
        s->spans = malloc((size_t)p->n_images * sizeof *s->spans);
        s->imgs = calloc((size_t)p->n_images, sizeof *s->imgs);
    }
    if (p->pos)
        s->pos = malloc((size_t)3 * (size_t)p->n_toks * sizeof *s->pos);
    int rc = gs_block_table_new(&s->bt);
    if (rc || !s->toks || (p->pos && !s->pos) || (p->n_images > 0 && (!s->spans || !s->imgs))) {
        gs_seq_free(s);
        return GS_ENOMEM;
    }
    memcpy(s->toks, p->toks, (size_t)p->n_toks * sizeof *s->toks);
    s->n_tokens = s->n_prompt = p->n_toks;
    if (p->pos)
        memcpy(s->pos, p->pos, (size_t)3 * (size_t)p->n_toks * sizeof *s->pos);
    s->rope_delta = p->rope_delta;
    if (p->n_images > 0)
        memcpy(s->spans, p->spans, (size_t)p->n_images * sizeof *s->spans);
    s->n_imgs = p->n_images;
    gs_prefix_root_key(p->cache_salt, &s->root);
    *out = s;
    return 0;
}

void gs_seq_free(gs_seq *s)
{
    if (!s)
        return;
    for (int32_t i = 0; i < s->n_imgs; i++)
        gs_seq_release_pixels(s, i);
    free(s->imgs);
    free(s->spans);
    free(s->toks);
    free(s->pos);
    free(s->keys);
    gs_block_table_free(s->bt);
    free(s);
}

void gs_seq_release_pixels(gs_seq *s, int32_t k)
{
    gs_seq_image *im = &s->imgs[k];
    if (!im->pixels)
        return;
    if (im->release)
        im->release(im->release_ctx);
    else
        free((void *)im->pixels);
    im->pixels = NULL;
    im->release = NULL;
}

int gs_seq_append(gs_seq *s, int32_t tok)
{
    if (s->n_tokens == s->cap_tokens) {
        if (s->cap_tokens > INT32_MAX / 2)
            return GS_ENOMEM;
        int32_t cap = s->cap_tokens * 2;
        int32_t *t = realloc(s->toks, (size_t)cap * sizeof *t);
        if (!t)
            return GS_ENOMEM;
        s->toks = t;
        s->cap_tokens = cap;
    }
    s->toks[s->n_tokens++] = tok;
    return 0;
}

int gs_seq_update_keys(gs_seq *s, int32_t page_size)
{
    if (page_size <= 0)
        return GS_EINVAL;
    int32_t full = s->n_tokens / page_size;
    if (full > s->cap_keys) {
        int32_t cap = s->cap_keys ? s->cap_keys : 8;
        while (cap < full)
            cap *= 2;
        gs_prefix_key *k = realloc(s->keys, (size_t)cap * sizeof *k);
        if (!k)
            return GS_ENOMEM;
        s->keys = k;
        s->cap_keys = cap;
    }
    for (; s->n_keys < full; s->n_keys++) {
        int32_t i = s->n_keys;
        const gs_prefix_key *parent = i ? &s->keys[i - 1] : &s->root;
        int rc = gs_prefix_page_key(parent, s->toks + (int64_t)i * page_size, i * page_size,
                                    page_size, s->spans, s->n_imgs, &s->keys[i]);
        if (rc)
            return rc;
    }
    return 0;
}
