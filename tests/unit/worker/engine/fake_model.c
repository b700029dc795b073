/* fake_model.c - a stand-in for the gs_model verbs the engine calls (it
 * calls nothing of kernels.h), for engine tests that need no kernels (fast
 * under qemu and ASan).
 *
 * The "model" is a hash chain: token i of a sequence contributes
 * v_i = mix(x_i, pos_i) to its KV slot, where x_i is the token id or, for
 * an image token, the bits of its image embedding row, and pos_i its 3-D
 * position. The logits of a query at cache position p are a hash of
 * fold(v_0 .. v_p) read through the block table. So every slot, position,
 * block-table entry, page copy and image row must be right, or the greedy
 * tokens change; fake_ref_generate computes the same chain without pages,
 * as the exact reference. Image embeddings: merged token r of an image is
 * the sum of its 4 patches' pixels times (c + 1) in column c.
 * Single-threaded. */
#include "fake_model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "worker/model/rope_index.h"

struct gs_model {
    gs_model_config cfg;
    int fail_encode, fail_forward;
    int forward_rc; /* fake_model_fault */
    int nan_every;
    int64_t n_rows;
    int (*abort_fn)(void *user);
    void *abort_user;
};
struct gs_kv_cache {
    int32_t n_pages, page_size;
    uint64_t *slot;
};

static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t token_value(uint64_t x, int32_t pt, int32_t ph, int32_t pw)
{
    return mix64(x * 0x100000001B3ull ^
                 mix64((uint64_t)(uint32_t)pt << 40 ^ (uint64_t)(uint32_t)ph << 20 ^ (uint32_t)pw));
}

static uint64_t emb_bits(const float *row, int64_t cols)
{
    uint64_t h = 7;
    for (int64_t c = 0; c < cols; c++) {
        uint32_t u;
        memcpy(&u, &row[c], 4);
        h = mix64(h ^ u);
    }
    return h | (1ull << 63); /* never equal to a token id */
}

static void fill_logits(uint64_t h, int32_t vocab, float *out)
{
    for (int32_t v = 0; v < vocab; v++)
        out[v] = (float)(mix64(h + (uint64_t)v) >> 40);
}

gs_model *fake_model_new(void)
{
    gs_model *m = calloc(1, sizeof *m);
    gs_model_config *c = &m->cfg;
    c->text.vocab_size = FAKE_VOCAB;
    c->text.hidden_size = FAKE_HIDDEN;
    c->text.max_position_embeddings = 4096;
    c->text.eos_token_ids[0] = FAKE_EOS;
    c->text.n_eos = 1;
    c->vision.out_hidden_size = FAKE_HIDDEN;
    c->vision.spatial_merge_size = 2;
    c->vision.in_channels = 3;
    c->vision.temporal_patch_size = 2;
    c->vision.patch_size = 2; /* patch_dim 24 */
    c->image_token_id = FAKE_IMAGE_TOKEN;
    c->video_token_id = FAKE_IMAGE_TOKEN + 1;
    c->video_start_token_id = FAKE_IMAGE_TOKEN + 2;
    c->video_end_token_id = FAKE_IMAGE_TOKEN + 3;
    return m;
}

void fake_model_free(gs_model *m)
{
    free(m);
}

void fake_model_fail(gs_model *m, int encode, int forward)
{
    m->fail_encode = encode;
    m->fail_forward = forward;
}

void fake_model_fault(gs_model *m, int forward_rc, int nan_every)
{
    m->forward_rc = forward_rc;
    m->nan_every = nan_every;
    m->n_rows = 0;
}

/* ---- the verbs the engine calls ------------------------------------------- */

void gs_model_set_abort(gs_model *m, int (*fn)(void *user), void *user)
{
    m->abort_fn = fn;
    m->abort_user = user;
}

/* Polled where the real model polls (between layers and blocks): here once
 * before and once after the work, the second after writing KV slots, as
 * an abort between layers would leave them. */
static int check_abort(gs_model *m)
{
    return m->abort_fn && m->abort_fn(m->abort_user) ? GS_ECANCELED : 0;
}

const gs_model_config *gs_model_get_config(const gs_model *m)
{
    return &m->cfg;
}
int gs_model_mem_info(const gs_model *m, size_t *free_bytes, size_t *total_bytes)
{
    (void)m;
    *free_bytes = *total_bytes = (size_t)1 << 24;
    return 0;
}
int gs_model_graphs_pay(const gs_model *m)
{
    (void)m;
    return 0;
}

/* Embedding buffers: host F32 [rows, FAKE_HIDDEN]. */
struct gs_model_emb {
    gs_mat m;
};
int gs_model_emb_new(gs_model *m, int64_t rows, gs_model_emb **out)
{
    (void)m;
    *out = NULL;
    if (rows < 1)
        return GS_EINVAL;
    gs_model_emb *e = malloc(sizeof *e);
    float *d = malloc(sizeof(float) * (size_t)rows * FAKE_HIDDEN);
    if (!e || !d) {
        free(e);
        free(d);
        return GS_ENOMEM;
    }
    e->m = (gs_mat){
        .data = d, .dt = GS_DT_F32, .rows = rows, .cols = FAKE_HIDDEN, .stride = FAKE_HIDDEN};
    *out = e;
    return 0;
}
void gs_model_emb_free(gs_model_emb *e)
{
    if (!e)
        return;
    free(e->m.data);
    free(e);
}
int64_t gs_model_emb_rows(const gs_model_emb *e)
{
    return e->m.rows;
}
size_t gs_model_emb_bytes(const gs_model_emb *e)
{
    return sizeof(float) * (size_t)e->m.rows * FAKE_HIDDEN;
}
gs_mat gs_model_emb_mat(const gs_model_emb *e)
{
    return e->m;
}
int gs_model_emb_copy_rows(gs_model_emb *dst, int64_t dst_row, const gs_model_emb *src,
                           int64_t src_row, int64_t n)
{
    if (n < 1 || dst_row < 0 || src_row < 0 || dst_row + n > dst->m.rows ||
        src_row + n > src->m.rows)
        return GS_EINVAL;
    memcpy((float *)dst->m.data + dst_row * FAKE_HIDDEN,
           (const float *)src->m.data + src_row * FAKE_HIDDEN,
           sizeof(float) * (size_t)n * FAKE_HIDDEN);
    return 0;
}

size_t gs_kv_cache_page_bytes(const gs_model *m, int32_t page_size)
{
    (void)m;
    return sizeof(uint64_t) * (size_t)page_size;
}
int gs_kv_cache_new(gs_model *m, int32_t n_pages, int32_t page_size, gs_kv_cache **out)
{
    (void)m;
    *out = NULL;
    if (n_pages <= 0 || page_size <= 0)
        return GS_EINVAL;
    gs_kv_cache *kv = calloc(1, sizeof *kv);
    kv->n_pages = n_pages;
    kv->page_size = page_size;
    /* Garbage, not zeros: reading an unwritten slot must change results. */
    kv->slot = malloc(sizeof *kv->slot * (size_t)n_pages * (size_t)page_size);
    for (int64_t i = 0; i < (int64_t)n_pages * page_size; i++)
        kv->slot[i] = mix64((uint64_t)i ^ 0xdeadull);
    *out = kv;
    return 0;
}
void gs_kv_cache_free(gs_kv_cache *kv)
{
    if (!kv)
        return;
    free(kv->slot);
    free(kv);
}
int gs_kv_cache_copy_page(gs_kv_cache *kv, int32_t dst, int32_t src)
{
    if (dst < 0 || src < 0 || dst >= kv->n_pages || src >= kv->n_pages)
        return GS_EINVAL;
    memmove(kv->slot + (int64_t)dst * kv->page_size, kv->slot + (int64_t)src * kv->page_size,
            sizeof *kv->slot * (size_t)kv->page_size);
    return 0;
}

static void encode_one(const float *px, int64_t n_patches, float *out)
{
    for (int64_t r = 0; r < n_patches / 4; r++) {
        float s = 0;
        for (int64_t k = 0; k < 4 * FAKE_PATCH_DIM; k++)
            s += px[r * 4 * FAKE_PATCH_DIM + k];
        for (int c = 0; c < FAKE_HIDDEN; c++)
            out[r * FAKE_HIDDEN + c] = s * (float)(c + 1);
    }
}

int gs_model_encode_images(gs_model *m, const float *pixels, int64_t n_patches,
                           const int32_t (*grids)[3], int32_t n_images, gs_mat out)
{
    if (m->fail_encode)
        return GS_EDEVICE;
    if (check_abort(m))
        return GS_ECANCELED;
    int64_t total = 0;
    for (int32_t i = 0; i < n_images; i++)
        total += (int64_t)grids[i][0] * grids[i][1] * grids[i][2];
    if (total != n_patches || out.rows != n_patches / 4 || out.cols != FAKE_HIDDEN)
        return GS_EINVAL;
    encode_one(pixels, n_patches, out.data);
    return 0;
}

int gs_model_forward(gs_model *m, gs_kv_cache *kv, const gs_text_batch *b, float *logits)
{
    if (m->fail_forward)
        return GS_EDEVICE;
    if (m->forward_rc)
        return m->forward_rc;
    const int32_t ps = kv->page_size, n = b->n_tokens;
    if (n <= 0 || b->cu_q[0] != 0 || b->cu_q[b->n_seqs] != n)
        return GS_EINVAL;
    for (int32_t i = 0; i < n; i++) {
        if (b->slots[i] < 0 || b->slots[i] >= kv->n_pages * ps || b->ids[i] < 0 ||
            b->ids[i] >= FAKE_VOCAB)
            return GS_EINVAL;
        uint64_t x = (uint64_t)b->ids[i];
        if (b->img_row && b->img_row[i] >= 0) {
            if (b->img_row[i] >= b->img.rows)
                return GS_EINVAL;
            x = emb_bits((const float *)b->img.data + b->img_row[i] * b->img.stride, FAKE_HIDDEN);
        }
        kv->slot[b->slots[i]] = token_value(x, b->pos[i], b->pos[n + i], b->pos[2 * n + i]);
    }
    if (check_abort(m))
        return GS_ECANCELED; /* slots half written, as a real abort leaves them */
    for (int32_t k = 0; k < b->n_logits; k++) {
        int32_t r = b->logit_rows[k], s = 0;
        while (s + 1 < b->n_seqs && b->cu_q[s + 1] <= r)
            s++;
        int32_t nq = b->cu_q[s + 1] - b->cu_q[s];
        int32_t qpos = b->kv_len[s] - nq + (r - b->cu_q[s]);
        const int32_t *bt = b->block_table + (int64_t)s * b->max_blocks;
        uint64_t h = 1;
        for (int32_t p = 0; p <= qpos; p++) {
            if (p / ps >= b->max_blocks || bt[p / ps] <= 0 || bt[p / ps] >= kv->n_pages)
                return GS_EINVAL;
            h = mix64(h ^ kv->slot[(int64_t)bt[p / ps] * ps + p % ps]);
        }
        fill_logits(h, FAKE_VOCAB, logits + (size_t)k * FAKE_VOCAB);
    }
    return 0;
}

/* ---- the reference --------------------------------------------------------- */

int fake_ref_generate(const int32_t *prompt, int32_t n_prompt, const fake_image *imgs,
                      int32_t n_imgs, int32_t n_gen, int32_t *out)
{
    gs_rope_index_params rp = {FAKE_IMAGE_TOKEN, FAKE_IMAGE_TOKEN + 2, FAKE_IMAGE_TOKEN + 3, 2};
    int32_t(*grids)[3] = malloc(sizeof *grids * (size_t)(n_imgs + 1));
    int32_t *pos = malloc(sizeof *pos * 3 * (size_t)n_prompt), delta = 0;
    float *emb = NULL;
    int64_t n_emb = 0;
    for (int32_t i = 0; i < n_imgs; i++) {
        memcpy(grids[i], imgs[i].grid, sizeof grids[i]);
        n_emb += imgs[i].n_patches / 4;
    }
    int rc =
        gs_rope_index(&rp, prompt, n_prompt, (const int32_t(*)[3])grids, n_imgs, pos, &delta, NULL);
    emb = malloc(sizeof *emb * (size_t)(n_emb + 1) * FAKE_HIDDEN);
    for (int64_t i = 0, r = 0; i < n_imgs; i++) {
        encode_one(imgs[i].pixels, imgs[i].n_patches, emb + r * FAKE_HIDDEN);
        r += imgs[i].n_patches / 4;
    }
    uint64_t h = 1;
    int64_t er = 0;
    float logits[FAKE_VOCAB];
    for (int32_t p = 0; !rc && p < n_prompt + n_gen - 1; p++) {
        uint64_t x;
        int32_t t = p < n_prompt ? prompt[p] : out[p - n_prompt];
        if (p < n_prompt && t == FAKE_IMAGE_TOKEN)
            x = emb_bits(emb + er++ * FAKE_HIDDEN, FAKE_HIDDEN);
        else
            x = (uint64_t)t;
        int32_t pt = p < n_prompt ? pos[p] : p + delta, ph = p < n_prompt ? pos[n_prompt + p] : pt,
                pw = p < n_prompt ? pos[2 * n_prompt + p] : pt;
        h = mix64(h ^ token_value(x, pt, ph, pw));
        if (p >= n_prompt - 1) {
            fill_logits(h, FAKE_VOCAB, logits);
            int32_t best = 0;
            for (int32_t v = 1; v < FAKE_VOCAB; v++)
                if (logits[v] > logits[best])
                    best = v;
            out[p - n_prompt + 1] = best;
        }
    }
    free(grids);
    free(pos);
    free(emb);
    return rc;
}

/* gs_model_step: the fake's logits, then greedy argmax (temperature <= 0)
 * or a draw from the softmax with a uniform that depends only on the
 * row's (seed, offset), so batching cannot change a seeded draw.
 * Penalties are not modelled (the fake tests do not use them). */
int gs_model_step(gs_model *m, gs_kv_cache *kv, const gs_text_batch *b, const gs_sample_batch *s,
                  int32_t *ids)
{
    float *lg = malloc(sizeof(float) * FAKE_VOCAB * (size_t)(b->n_logits > 0 ? b->n_logits : 1));
    if (!lg)
        return GS_ENOMEM;
    int rc = gs_model_forward(m, kv, b, lg);
    for (int32_t k = 0; k < b->n_logits && !rc; k++) {
        const float *l = lg + (size_t)k * FAKE_VOCAB;
        const gs_sample_row *r = &s->rows[k];
        int32_t best = 0;
        for (int32_t v = 1; v < FAKE_VOCAB; v++)
            if (l[v] > l[best])
                best = v;
        ids[k] = best;
        if (m->nan_every && ++m->n_rows % m->nan_every == 0) {
            ids[k] = -1; /* as for a row of NaN logits */
            continue;
        }
        if (!(r->temperature > 0))
            continue;
        double tot = 0, acc = 0;
        for (int32_t v = 0; v < FAKE_VOCAB; v++)
            tot += exp((l[v] - l[best]) / (double)r->temperature / 1e5);
        double u = (double)(mix64(r->seed * 31 + r->offset) >> 11) / 9007199254740992.0 * tot;
        for (int32_t v = 0; v < FAKE_VOCAB; v++) {
            acc += exp((l[v] - l[best]) / (double)r->temperature / 1e5);
            if (acc > u) {
                ids[k] = v;
                break;
            }
        }
    }
    free(lg);
    return rc;
}

int gs_model_enable_graphs(gs_model *m, const gs_kv_cache *kv, int32_t max_batch, int32_t max_len)
{
    (void)m;
    (void)kv;
    (void)max_batch;
    (void)max_len;
    return GS_ENOTSUP; /* the engine never asks on a CPU backend by default */
}

void gs_model_disable_graphs(gs_model *m)
{
    (void)m;
}

void gs_model_graph_stats_get(const gs_model *m, gs_model_graph_stats *out)
{
    (void)m;
    memset(out, 0, sizeof *out);
}
