/* batch.c - step plan -> gs_text_batch host arrays (batch.h).
 *
 * Items are laid out one after another in plan order: item s owns query
 * rows cu_q[s]..cu_q[s+1], has kv_len[s] = start + n keys in the cache
 * after this step, and row b of its block table is its logical page b
 * (padded with the null page 0). A token at position p goes to slot
 * page(p / page_size) * page_size + p % page_size. The logits row of an
 * item that samples is its last row. Image tokens take their input
 * embedding from the step's image matrix, whose rows are gathered from the
 * sequences' image embeddings in batch order.
 *
 * Owns: the host arrays, grown as needed and reused across steps.
 * Single-threaded. */
#include "batch.h"

#include <stdlib.h>

struct gs_batch {
    int32_t *ids, *pos, *slots, *img_row; /* [cap_tok], pos [3 * cap_tok] */
    int64_t cap_tok;
    int32_t *cu_q, *kv_len, *logit_rows, *logit_item; /* [cap_seq + 1] */
    int32_t cap_seq;
    int32_t *bt; /* [cap_bt] */
    int64_t cap_bt;
    gs_batch_img_rows *rows;
    int32_t cap_rows;
};

int gs_batch_new(gs_batch **out)
{
    if (!out)
        return GS_EINVAL;
    *out = calloc(1, sizeof **out);
    return *out ? 0 : GS_ENOMEM;
}

void gs_batch_free(gs_batch *b)
{
    if (!b)
        return;
    free(b->ids);
    free(b->pos);
    free(b->slots);
    free(b->img_row);
    free(b->cu_q);
    free(b->kv_len);
    free(b->logit_rows);
    free(b->logit_item);
    free(b->bt);
    free(b->rows);
    free(b);
}

static int64_t round_up(int64_t n)
{
    int64_t c = 64;
    while (c < n)
        c *= 2;
    return c;
}

/* Reallocs *p to n elements of sz bytes. On failure *p keeps its old,
 * still large enough for the old capacity. */
static int resize(void *pp, int64_t n, size_t sz)
{
    void **p = pp;
    void *q = realloc(*p, (size_t)n * sz);
    if (!q)
        return GS_ENOMEM;
    *p = q;
    return 0;
}

static int reserve(gs_batch *b, int64_t n_tok, int32_t n_seq, int64_t n_bt, int32_t n_rows)
{
    if (n_tok > b->cap_tok) {
        int64_t c = round_up(n_tok);
        if (resize(&b->ids, c, sizeof *b->ids) || resize(&b->slots, c, sizeof *b->slots) ||
            resize(&b->img_row, c, sizeof *b->img_row) || resize(&b->pos, 3 * c, sizeof *b->pos))
            return GS_ENOMEM;
        b->cap_tok = c;
    }
    if (n_seq + 1 > b->cap_seq) {
        int64_t c = round_up(n_seq + 1);
        if (resize(&b->cu_q, c, sizeof(int32_t)) || resize(&b->kv_len, c, sizeof(int32_t)) ||
            resize(&b->logit_rows, c, sizeof(int32_t)) ||
            resize(&b->logit_item, c, sizeof(int32_t)))
            return GS_ENOMEM;
        b->cap_seq = (int32_t)c;
    }
    if (n_bt > b->cap_bt) {
        int64_t c = round_up(n_bt);
        if (resize(&b->bt, c, sizeof *b->bt))
            return GS_ENOMEM;
        b->cap_bt = c;
    }
    if (n_rows > b->cap_rows) {
        int64_t c = round_up(n_rows);
        if (resize(&b->rows, c, sizeof *b->rows))
            return GS_ENOMEM;
        b->cap_rows = (int32_t)c;
    }
    return 0;
}

int gs_batch_build(gs_batch *b, const gs_step_plan *plan, int32_t page_size, gs_batch_out *out)
{
    if (!plan || plan->n_items <= 0 || page_size <= 0 || !out)
        return GS_EINVAL;
    int64_t n_tok = 0, max_blocks = 1;
    int32_t n_copies = 0;
    for (int32_t s = 0; s < plan->n_items; s++) {
        const gs_sched_item *it = &plan->items[s];
        int32_t len = gs_block_table_len(it->seq->bt);
        if (it->n <= 0 || it->start < 0 || (int64_t)len * page_size < (int64_t)it->start + it->n)
            return GS_EINVAL;
        n_tok += it->n;
        max_blocks = len > max_blocks ? len : max_blocks;
        n_copies += it->seq->n_imgs;
    }
    if (n_tok > INT32_MAX / 4 || max_blocks * plan->n_items > INT32_MAX)
        return GS_EINVAL;
    int rc = reserve(b, n_tok, plan->n_items, max_blocks * plan->n_items, n_copies);
    if (rc)
        return rc;

    int32_t row = 0, n_logits = 0, n_img_rows = 0, n_rc = 0;
    const int32_t T = (int32_t)n_tok;
    b->cu_q[0] = 0;
    for (int32_t s = 0; s < plan->n_items; s++) {
        const gs_sched_item *it = &plan->items[s];
        const gs_seq *q = it->seq;
        const int32_t *pages = gs_block_table_pages(q->bt);
        int32_t len = gs_block_table_len(q->bt);
        for (int32_t k = 0; k < max_blocks; k++)
            b->bt[(int64_t)s * max_blocks + k] = k < len ? pages[k] : 0;
        for (int32_t j = 0; j < it->n; j++) {
            int32_t p = it->start + j;
            b->ids[row + j] = q->toks[p];
            for (int a = 0; a < 3; a++)
                b->pos[(int64_t)a * T + row + j] = gs_seq_pos(q, p, a);
            b->slots[row + j] = pages[p / page_size] * page_size + p % page_size;
            b->img_row[row + j] = -1;
        }
        /* Image tokens of this chunk, image by image. */
        for (int32_t k = 0; k < q->n_imgs; k++) {
            const gs_prefix_image *sp = &q->spans[k];
            int32_t lo = sp->start > it->start ? sp->start : it->start;
            int32_t hi =
                sp->start + sp->len < it->start + it->n ? sp->start + sp->len : it->start + it->n;
            if (lo >= hi)
                continue;
            gs_batch_img_rows r = {it->seq, k, lo - sp->start, hi - lo, n_img_rows};
            b->rows[n_rc++] = r;
            for (int32_t p = lo; p < hi; p++)
                b->img_row[row + p - it->start] = n_img_rows++;
        }
        row += it->n;
        b->cu_q[s + 1] = row;
        b->kv_len[s] = it->start + it->n;
        if (it->sample) {
            b->logit_rows[n_logits] = row - 1;
            b->logit_item[n_logits++] = s;
        }
    }

    gs_text_batch *tb = &out->tb;
    *tb = (gs_text_batch){0};
    tb->n_tokens = T;
    tb->ids = b->ids;
    tb->pos = b->pos;
    tb->slots = b->slots;
    tb->img_row = n_img_rows ? b->img_row : NULL;
    tb->n_seqs = plan->n_items;
    tb->cu_q = b->cu_q;
    tb->kv_len = b->kv_len;
    tb->block_table = b->bt;
    tb->max_blocks = (int32_t)max_blocks;
    tb->n_logits = n_logits;
    tb->logit_rows = b->logit_rows;
    out->img_rows = b->rows;
    out->n_img_copies = n_rc;
    out->n_img_rows = n_img_rows;
    out->logit_item = b->logit_item;
    return 0;
}
