/* test_paged.c - kv_store and attention over the paged KV cache, CUDA vs
 * CPU: decode batches (one query row per sequence; with and without the
 * split-KV path), chunked prefill against the cache (n_q > 1), the tiny
 * fixture geometry (2 heads / 1 KV head), pages assigned in shuffled order,
 * unused block-table entries set to -1 (a kernel that read them would be
 * caught by the device-side page check). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/gpu/gpu_util.h"

enum { HD = 128, PAGE = 16 };

typedef struct {
    int n_q, kv_len;
} seqspec;

static int both(gt_ctx *t, const char *op, const char *shape, int rc_c, int rc_g)
{
    if (rc_c || rc_g) {
        gt_fail(t, op, shape, rc_c ? "cpu op failed" : "cuda op failed", rc_c ? rc_c : rc_g);
        return 0;
    }
    return 1;
}

static void paged_case(gt_ctx *t, const char *name, int nh, int nkv, const seqspec *ss, int n_seqs,
                       int n_pages)
{
    const int kd = nkv * HD, qd = nh * HD;
    int max_blocks = 1, max_q = 0, max_kv = 0, total_kv = 0, total_q = 0;
    for (int s = 0; s < n_seqs; s++) {
        const int nb = (ss[s].kv_len + PAGE - 1) / PAGE;
        max_blocks = nb > max_blocks ? nb : max_blocks;
        max_q = ss[s].n_q > max_q ? ss[s].n_q : max_q;
        max_kv = ss[s].kv_len > max_kv ? ss[s].kv_len : max_kv;
        total_kv += ss[s].kv_len;
        total_q += ss[s].n_q;
    }
    char sh[64];
    snprintf(sh, sizeof sh, "%s %d/%d heads, %d seqs, max_q %d max_kv %d", name, nh, nkv, n_seqs,
             max_q, max_kv);

    /* shuffled pages, unused block-table entries -1 */
    int32_t *perm = gt_xmalloc(sizeof(int32_t) * (size_t)n_pages);
    for (int i = 0; i < n_pages; i++)
        perm[i] = i;
    for (int i = n_pages - 1; i > 0; i--) {
        int j = (int)(gt_next() % (uint64_t)(i + 1)), x = perm[i];
        perm[i] = perm[j];
        perm[j] = x;
    }
    int need = 0;
    for (int s = 0; s < n_seqs; s++)
        need += (ss[s].kv_len + PAGE - 1) / PAGE;
    if (need > n_pages) {
        gt_fail(t, "attention_paged", sh, "test needs more pages", GS_EINVAL);
        free(perm);
        return;
    }
    int32_t *bt = gt_xmalloc(sizeof(int32_t) * (size_t)(n_seqs * max_blocks));
    int used = 0;
    for (int s = 0; s < n_seqs; s++)
        for (int b = 0; b < max_blocks; b++)
            bt[s * max_blocks + b] = b < (ss[s].kv_len + PAGE - 1) / PAGE ? perm[used++] : -1;

    /* every cached token of every sequence, plus one skipped row (slot -1) */
    int32_t *slots = gt_xmalloc(sizeof(int32_t) * (size_t)(total_kv + 1));
    int r = 0;
    for (int s = 0; s < n_seqs; s++)
        for (int p = 0; p < ss[s].kv_len; p++)
            slots[r++] = bt[s * max_blocks + p / PAGE] * PAGE + p % PAGE;
    slots[r] = -1;
    int32_t *cu = gt_xmalloc(sizeof(int32_t) * (size_t)(n_seqs + 1)),
            *kvl = gt_xmalloc(sizeof(int32_t) * (size_t)n_seqs);
    cu[0] = 0;
    for (int s = 0; s < n_seqs; s++) {
        cu[s + 1] = cu[s] + ss[s].n_q;
        kvl[s] = ss[s].kv_len;
    }

    const int64_t cache_rows = (int64_t)n_pages * PAGE;
    gt_mat kc = gt_mat_new(t, cache_rows, kd, kd, -1, NULL),
           vc = gt_mat_new(t, cache_rows, kd, kd, -1, NULL);
    gt_mat k = gt_mat_rand(t, total_kv + 1, kd, kd, -2.0f, 2.0f);
    gt_mat v = gt_mat_rand(t, total_kv + 1, kd, kd, -2.0f, 2.0f);
    gt_mat q = gt_mat_rand(t, total_q, qd, qd, -2.0f, 2.0f);
    gt_mat o = gt_mat_new(t, total_q, qd, qd, -1, NULL);
    gt_i32 dsl = gt_i32_new(t, slots, total_kv + 1), dcu = gt_i32_new(t, cu, n_seqs + 1);
    gt_i32 dkl = gt_i32_new(t, kvl, n_seqs), dbt = gt_i32_new(t, bt, (int64_t)n_seqs * max_blocks);
    if (!kc.c.data || !kc.g.data || !vc.c.data || !vc.g.data || !q.c.data || !o.g.data || !dsl.c ||
        !dcu.c || !dkl.c || !dbt.c) {
        gt_fail(t, "attention_paged", sh, "setup", GS_ENOMEM);
        goto done;
    }
    const size_t cbytes_c = (size_t)(cache_rows * kd) * gs_dtype_size(kc.c.dt);
    const size_t cbytes_g = (size_t)(cache_rows * kd) * gs_dtype_size(kc.g.dt);
    gs_buf_zero(t->cpu, kc.c.data, cbytes_c);
    gs_buf_zero(t->cpu, vc.c.data, cbytes_c);
    gs_buf_zero(t->gpu, kc.g.data, cbytes_g);
    gs_buf_zero(t->gpu, vc.g.data, cbytes_g);
    gs_kv_layer lc = {kc.c.data, vc.c.data, n_pages, PAGE, nkv, HD};
    gs_kv_layer lg = {kc.g.data, vc.g.data, n_pages, PAGE, nkv, HD};
    if (!both(t, "kv_store", sh, gs_k_kv_store(t->cpu, &lc, k.c, v.c, dsl.c),
              gs_k_kv_store(t->gpu, &lg, k.g, v.g, dsl.g)))
        goto done;
    gt_check(t, "kv_store", "kv_store", sh, kc);
    gt_check(t, "kv_store", "kv_store.v", sh, vc);

    gs_paged_batch bc = {n_seqs, dcu.c, dkl.c, dbt.c, max_blocks, max_q, max_kv};
    gs_paged_batch bg = {n_seqs, dcu.g, dkl.g, dbt.g, max_blocks, max_q, max_kv};
    gs_attn_params ap = {nh, nkv, HD, 1.0f / sqrtf((float)HD), 1};
    if (both(t, "attention_paged", sh, gs_k_attention_paged(t->cpu, o.c, q.c, &lc, &bc, &ap),
             gs_k_attention_paged(t->gpu, o.g, q.g, &lg, &bg, &ap)))
        gt_check(t, "attention_paged", "attention_paged", sh, o);
done:
    gt_mat_free(t, &kc);
    gt_mat_free(t, &vc);
    gt_mat_free(t, &k);
    gt_mat_free(t, &v);
    gt_mat_free(t, &q);
    gt_mat_free(t, &o);
    gt_i32_free(t, &dsl);
    gt_i32_free(t, &dcu);
    gt_i32_free(t, &dkl);
    gt_i32_free(t, &dbt);
    free(perm);
    free(bt);
    free(slots);
    free(cu);
    free(kvl);
}

int gt_paged_tests(gt_ctx *t)
{
    /* decode, long contexts: the split-KV path (few CTAs, max_kv >= 512) */
    const seqspec dec_long[] = {{1, 1},   {1, 15},   {1, 16},   {1, 17},
                                {1, 100}, {1, 1000}, {1, 4000}, {1, 257}};
    paged_case(t, "decode", 32, 2, dec_long, 8, 600);
    /* decode, short contexts, 64 sequences: no split */
    seqspec dec_short[64];
    for (int i = 0; i < 64; i++) {
        dec_short[i].n_q = 1;
        dec_short[i].kv_len = 1 + (int)(gt_next() % 300);
    }
    paged_case(t, "decode", 32, 2, dec_short, 64, 1400);
    /* chunked prefill against the cache: with and without splits */
    const seqspec chunk_long[] = {{37, 600}, {5, 5}, {64, 164}};
    paged_case(t, "chunk", 32, 2, chunk_long, 3, 100);
    const seqspec chunk_short[] = {{37, 100}, {5, 5}, {1, 30}};
    paged_case(t, "chunk", 32, 2, chunk_short, 3, 40);
    /* the tiny fixture model's geometry (group of 2) */
    const seqspec tiny[] = {{1, 5}, {1, 40}, {9, 70}};
    paged_case(t, "tiny", 2, 1, tiny, 3, 16);
    return 0;
}
