/* test_scheduler.c - step plans with exact page ids, ref counts and
 * eviction order (vLLM's test_prefix_caching style), chunked prefill,
 * decode-first order, preemption, image encodes, and 500 random
 * operations that must leave the pool as it started. No model. */
#include "test.h"
#include "worker/engine/scheduler.h"

#define ASSERT_IDS(got, n_got, ...)                                                                \
    do {                                                                                           \
        const int32_t want_[] = {__VA_ARGS__};                                                     \
        int32_t n_ = (int32_t)(sizeof want_ / sizeof want_[0]);                                    \
        GS_ASSERT_EQ((n_got), n_);                                                                 \
        for (int32_t i_ = 0; i_ < n_; i_++)                                                        \
            GS_ASSERT_MSG((got)[i_] == want_[i_], "%s[%d] = %d, want %d", #got, i_, (got)[i_],     \
                          want_[i_]);                                                              \
    } while (0)
#define ASSERT_PAGES(seq, ...)                                                                     \
    ASSERT_IDS(gs_block_table_pages((seq)->bt), gs_block_table_len((seq)->bt), __VA_ARGS__)
#define ASSERT_FREE(pool, ...)                                                                     \
    do {                                                                                           \
        int32_t fl_[256];                                                                          \
        int32_t nf_ = gs_kv_pool_free_list(pool, fl_, 256);                                        \
        ASSERT_IDS(fl_, nf_, __VA_ARGS__);                                                         \
    } while (0)
#define ASSERT_ITEM(plan, i, seq_, start_, n_, sample_)                                            \
    do {                                                                                           \
        GS_ASSERT((i) < (plan).n_items);                                                           \
        GS_ASSERT((plan).items[i].seq == (seq_));                                                  \
        GS_ASSERT_EQ((plan).items[i].start, start_);                                               \
        GS_ASSERT_EQ((plan).items[i].n, n_);                                                       \
        GS_ASSERT_EQ((plan).items[i].sample, sample_);                                             \
    } while (0)

typedef struct {
    gs_kv_pool *pool;
    gs_prefix_cache *pc;
    gs_sched *s;
} env;

static int env_new(env *e, int32_t n_pages, int32_t page_size, int32_t budget, int32_t max_seqs,
                   int prefix)
{
    memset(e, 0, sizeof *e);
    gs_kv_pool_params pp = {n_pages};
    gs_sched_params sp = {page_size, budget, max_seqs};
    if (gs_kv_pool_new(&pp, &e->pool) || (prefix && gs_prefix_cache_new(e->pool, &e->pc)))
        return -1;
    return gs_sched_new(&sp, e->pool, e->pc, &e->s);
}

static void env_free(env *e)
{
    gs_sched_free(e->s);
    gs_prefix_cache_free(e->pc);
    gs_kv_pool_free(e->pool);
}

static gs_seq *mk(int64_t id, const int32_t *toks, int32_t n, const gs_prefix_image *sp,
                  int32_t n_sp)
{
    gs_seq_params p = {.id = id, .toks = toks, .n_toks = n, .spans = sp, .n_images = n_sp};
    gs_seq *q = NULL;
    gs_seq_new(&p, &q);
    return q;
}

/* Appends a token to every item that sampled (what the engine does). */
static void append_sampled(const gs_step_plan *pl)
{
    for (int32_t i = 0; i < pl->n_items; i++)
        if (pl->items[i].sample)
            gs_seq_append(pl->items[i].seq, 1000 + pl->items[i].seq->n_tokens);
}

static void test_prefix_sharing_and_eviction(void)
{
    env e;
    GS_ASSERT_OK(env_new(&e, 11, 4, 64, 4, 1));
    int32_t ta[14], tb[15], tc[10], td[28];
    for (int i = 0; i < 14; i++)
        ta[i] = i;
    memcpy(tb, ta, 12 * sizeof *tb);
    tb[12] = 50, tb[13] = 51, tb[14] = 52;
    memcpy(tc, ta, 8 * sizeof *tc);
    tc[8] = 60, tc[9] = 61;
    for (int i = 0; i < 28; i++)
        td[i] = 200 + i;
    gs_seq *a = mk(1, ta, 14, NULL, 0), *b = mk(2, tb, 15, NULL, 0), *c = mk(3, tc, 10, NULL, 0),
           *d = mk(4, td, 28, NULL, 0);
    gs_step_plan pl;

    GS_ASSERT_OK(gs_sched_add(e.s, a));
    GS_ASSERT_EQ(gs_sched_add(e.s, a), GS_EINVAL); /* already inside */
    GS_ASSERT_OK(gs_sched_plan(e.s, 0, &pl));
    GS_ASSERT_EQ(pl.n_items, 1);
    ASSERT_ITEM(pl, 0, a, 0, 14, 1);
    ASSERT_PAGES(a, 1, 2, 3, 4);
    ASSERT_FREE(e.pool, 5, 6, 7, 8, 9, 10);
    GS_ASSERT_OK(gs_sched_commit(e.s, &pl));
    GS_ASSERT_EQ(gs_prefix_cache_n_cached(e.pc), 3); /* the full pages 1 2 3 */
    append_sampled(&pl);

    /* b shares a's first 12 tokens: three pages, refcount 2. */
    GS_ASSERT_OK(gs_sched_add(e.s, b));
    GS_ASSERT_OK(gs_sched_plan(e.s, 1, &pl));
    GS_ASSERT_EQ(pl.n_items, 2);
    ASSERT_ITEM(pl, 0, a, 14, 1, 1);
    ASSERT_ITEM(pl, 1, b, 12, 3, 1);
    ASSERT_PAGES(b, 1, 2, 3, 5);
    for (int32_t p = 1; p <= 3; p++)
        GS_ASSERT_EQ(gs_kv_pool_refcount(e.pool, p), 2);
    GS_ASSERT_EQ(gs_kv_pool_refcount(e.pool, 5), 1);
    GS_ASSERT_EQ(b->n_cached, 12);
    gs_sched_stats st;
    gs_sched_get_stats(e.s, &st);
    GS_ASSERT_EQ(st.prefix_query_tokens, 14 + 15);
    GS_ASSERT_EQ(st.prefix_hit_tokens, 12);
    GS_ASSERT_EQ(st.n_running, 2);
    GS_ASSERT_OK(gs_sched_commit(e.s, &pl));

    /* Cancel / finish: pages back at once, tail pages first. */
    gs_sched_remove(e.s, a);
    GS_ASSERT_EQ(a->state, GS_SEQ_DONE);
    ASSERT_FREE(e.pool, 6, 7, 8, 9, 10, 4);
    gs_sched_remove(e.s, b);
    gs_sched_remove(e.s, b); /* no-op */
    ASSERT_FREE(e.pool, 6, 7, 8, 9, 10, 4, 5, 3, 2, 1);
    GS_ASSERT_EQ(gs_prefix_cache_n_cached(e.pc), 3); /* still cached */

    /* c hits pages 1 2 on the free list: they leave it from the middle. */
    GS_ASSERT_OK(gs_sched_add(e.s, c));
    GS_ASSERT_OK(gs_sched_plan(e.s, 2, &pl));
    ASSERT_ITEM(pl, 0, c, 8, 2, 1);
    ASSERT_PAGES(c, 1, 2, 6);
    ASSERT_FREE(e.pool, 7, 8, 9, 10, 4, 5, 3);
    GS_ASSERT_OK(gs_sched_commit(e.s, &pl));

    /* d takes the 7 free pages, in LRU order; 3 loses its key. */
    GS_ASSERT_OK(gs_sched_add(e.s, d));
    GS_ASSERT_OK(gs_sched_plan(e.s, 3, &pl));
    GS_ASSERT_EQ(pl.n_items, 1); /* c sampled but got no token appended */
    ASSERT_ITEM(pl, 0, d, 0, 28, 1);
    ASSERT_PAGES(d, 7, 8, 9, 10, 4, 5, 3);
    GS_ASSERT_EQ(gs_kv_pool_n_free(e.pool), 0);
    GS_ASSERT(!gs_prefix_cache_has_page(e.pc, 3));
    GS_ASSERT_EQ(gs_prefix_cache_n_cached(e.pc), 2);
    GS_ASSERT_OK(gs_sched_commit(e.s, &pl));
    gs_sched_remove(e.s, c);
    gs_sched_remove(e.s, d);
    GS_ASSERT_EQ(gs_kv_pool_n_free(e.pool), 10);
    GS_ASSERT_OK(gs_kv_pool_check(e.pool));
    env_free(&e);
    gs_seq_free(a), gs_seq_free(b), gs_seq_free(c), gs_seq_free(d);
}

static void test_all_hit_copy_on_write(void)
{
    env e;
    GS_ASSERT_OK(env_new(&e, 8, 4, 64, 4, 1));
    int32_t t[8] = {5, 6, 7, 8, 9, 10, 11, 12};
    gs_seq *a = mk(1, t, 8, NULL, 0), *b = mk(2, t, 8, NULL, 0);
    gs_step_plan pl;
    GS_ASSERT_OK(gs_sched_add(e.s, a));
    GS_ASSERT_OK(gs_sched_plan(e.s, 0, &pl));
    ASSERT_PAGES(a, 1, 2);
    GS_ASSERT_OK(gs_sched_commit(e.s, &pl));
    gs_sched_remove(e.s, a);
    ASSERT_FREE(e.pool, 3, 4, 5, 6, 7, 2, 1);

    /* Every token hits: the last is recomputed, into a copy of page 2. */
    GS_ASSERT_OK(gs_sched_add(e.s, b));
    GS_ASSERT_OK(gs_sched_plan(e.s, 1, &pl));
    GS_ASSERT_EQ(pl.n_items, 1);
    ASSERT_ITEM(pl, 0, b, 7, 1, 1);
    GS_ASSERT_EQ(pl.n_copies, 1);
    GS_ASSERT_EQ(pl.copies[0].dst, 3);
    GS_ASSERT_EQ(pl.copies[0].src, 2);
    ASSERT_PAGES(b, 1, 3);
    ASSERT_FREE(e.pool, 4, 5, 6, 7, 2);
    GS_ASSERT(gs_prefix_cache_has_page(e.pc, 2)); /* the original stays cached */
    GS_ASSERT_EQ(b->n_cached, 7);
    GS_ASSERT_OK(gs_sched_commit(e.s, &pl));
    GS_ASSERT(!gs_prefix_cache_has_page(e.pc, 3)); /* duplicate key: not cached */
    gs_sched_remove(e.s, b);
    GS_ASSERT_OK(gs_kv_pool_check(e.pool));
    env_free(&e);
    gs_seq_free(a), gs_seq_free(b);
}

static void test_preemption(void)
{
    env e;
    GS_ASSERT_OK(env_new(&e, 5, 4, 16, 4, 1));
    int32_t tx[6] = {0, 1, 2, 3, 4, 5}, ty[6] = {10, 11, 12, 13, 14, 15};
    gs_seq *x = mk(1, tx, 6, NULL, 0), *y = mk(2, ty, 6, NULL, 0);
    gs_step_plan pl;
    GS_ASSERT_OK(gs_sched_add(e.s, x));
    GS_ASSERT_OK(gs_sched_add(e.s, y));
    for (int step = 0; step < 3; step++) {
        GS_ASSERT_OK(gs_sched_plan(e.s, (uint64_t)step, &pl));
        GS_ASSERT_EQ(pl.n_items, 2);
        GS_ASSERT_EQ(pl.n_preempted, 0);
        GS_ASSERT_OK(gs_sched_commit(e.s, &pl));
        append_sampled(&pl);
    }
    ASSERT_PAGES(x, 1, 2);
    ASSERT_PAGES(y, 3, 4);
    GS_ASSERT_EQ(x->n_tokens, 9);

    /* x needs a third page; none is free: y (admitted last) is preempted
     * and goes back to the front of the queue with its 9 tokens. */
    GS_ASSERT_OK(gs_sched_plan(e.s, 3, &pl));
    GS_ASSERT_EQ(pl.n_items, 1);
    ASSERT_ITEM(pl, 0, x, 8, 1, 1);
    GS_ASSERT_EQ(pl.n_preempted, 1);
    GS_ASSERT(pl.preempted[0] == y);
    GS_ASSERT_EQ(y->state, GS_SEQ_WAITING);
    GS_ASSERT_EQ(y->n_computed, 0);
    GS_ASSERT_EQ(y->n_tokens, 9);
    ASSERT_PAGES(x, 1, 2, 4);
    ASSERT_FREE(e.pool, 3);
    GS_ASSERT_OK(gs_sched_commit(e.s, &pl));
    append_sampled(&pl);

    /* y's first page is still cached (page 3) but 2 pages do not fit. */
    GS_ASSERT_OK(gs_sched_plan(e.s, 4, &pl));
    GS_ASSERT_EQ(pl.n_items, 1);
    ASSERT_ITEM(pl, 0, x, 9, 1, 1);
    GS_ASSERT_OK(gs_sched_commit(e.s, &pl));
    gs_sched_remove(e.s, x);
    ASSERT_FREE(e.pool, 3, 4, 2, 1);

    /* Re-admitted: recompute from the cached page 3 on. */
    GS_ASSERT_OK(gs_sched_plan(e.s, 5, &pl));
    ASSERT_ITEM(pl, 0, y, 4, 5, 1);
    ASSERT_PAGES(y, 3, 4, 2);
    GS_ASSERT_EQ(y->n_cached, 0); /* usage counts the first admission */
    GS_ASSERT_EQ(y->n_preempted, 1);
    gs_sched_stats st;
    gs_sched_get_stats(e.s, &st);
    GS_ASSERT_EQ(st.n_preemptions, 1);
    GS_ASSERT_OK(gs_sched_commit(e.s, &pl));
    gs_sched_remove(e.s, y);
    GS_ASSERT_EQ(gs_kv_pool_n_free(e.pool), 4);
    env_free(&e);
    gs_seq_free(x), gs_seq_free(y);
}

static void test_chunked_prefill_decode_first(void)
{
    env e;
    GS_ASSERT_OK(env_new(&e, 64, 4, 5, 8, 0));
    int32_t tp[12], tr[20];
    for (int i = 0; i < 20; i++)
        tr[i] = 300 + i, tp[i % 12] = 100 + i % 12;
    int32_t tq[3] = {7, 8, 9};
    gs_seq *p = mk(1, tp, 12, NULL, 0), *q = mk(2, tq, 3, NULL, 0), *r = mk(3, tr, 20, NULL, 0);
    gs_step_plan pl;
    GS_ASSERT_OK(gs_sched_add(e.s, p));
    GS_ASSERT_OK(gs_sched_add(e.s, q));
    GS_ASSERT_OK(gs_sched_plan(e.s, 0, &pl));
    GS_ASSERT_EQ(pl.n_items, 1); /* budget 5 taken by p's first chunk */
    ASSERT_ITEM(pl, 0, p, 0, 5, 0);
    GS_ASSERT_OK(gs_sched_commit(e.s, &pl));
    GS_ASSERT_OK(gs_sched_plan(e.s, 1, &pl));
    ASSERT_ITEM(pl, 0, p, 5, 5, 0);
    GS_ASSERT_EQ(pl.n_items, 1);
    GS_ASSERT_OK(gs_sched_commit(e.s, &pl));
    GS_ASSERT_OK(gs_sched_plan(e.s, 2, &pl));
    GS_ASSERT_EQ(pl.n_items, 2);
    ASSERT_ITEM(pl, 0, p, 10, 2, 1);
    ASSERT_ITEM(pl, 1, q, 0, 3, 1);
    GS_ASSERT_EQ(pl.n_tokens, 5);
    GS_ASSERT_OK(gs_sched_commit(e.s, &pl));
    append_sampled(&pl);

    GS_ASSERT_OK(gs_sched_add(e.s, r));
    GS_ASSERT_OK(gs_sched_plan(e.s, 3, &pl));
    GS_ASSERT_EQ(pl.n_items, 3);
    ASSERT_ITEM(pl, 0, p, 12, 1, 1);
    ASSERT_ITEM(pl, 1, q, 3, 1, 1);
    ASSERT_ITEM(pl, 2, r, 0, 3, 0);
    GS_ASSERT_OK(gs_sched_commit(e.s, &pl));
    append_sampled(&pl);
    /* Decodes first, then the running prefill. */
    GS_ASSERT_OK(gs_sched_plan(e.s, 4, &pl));
    GS_ASSERT_EQ(pl.n_items, 3);
    ASSERT_ITEM(pl, 0, p, 13, 1, 1);
    ASSERT_ITEM(pl, 1, q, 4, 1, 1);
    ASSERT_ITEM(pl, 2, r, 3, 3, 0);
    GS_ASSERT_OK(gs_sched_commit(e.s, &pl));
    gs_sched_remove(e.s, p), gs_sched_remove(e.s, q), gs_sched_remove(e.s, r);
    GS_ASSERT_EQ(gs_kv_pool_n_free(e.pool), 63);
    env_free(&e);
    gs_seq_free(p), gs_seq_free(q), gs_seq_free(r);
}

static void test_image_encodes(void)
{
    env e;
    GS_ASSERT_OK(env_new(&e, 32, 4, 4, 8, 1));
    int32_t t[14];
    for (int i = 0; i < 14; i++)
        t[i] = i < 2 || i >= 8 ? i : 99;
    gs_prefix_image im = {.start = 2, .len = 6, .grid = {1, 4, 6}};
    memset(im.hash, 0x11, sizeof im.hash);
    gs_prefix_image im2 = im;
    memset(im2.hash, 0x22, sizeof im2.hash);
    gs_seq *s1 = mk(1, t, 14, &im, 1), *s2 = mk(2, t, 14, &im, 1), *s3 = mk(3, t, 14, &im2, 1);
    static char fake_emb;
    gs_step_plan pl;
    GS_ASSERT_OK(gs_sched_add(e.s, s1));
    const int32_t starts[4] = {0, 4, 8, 12}, encs[4] = {1, 0, 0, 0};
    for (int k = 0; k < 4; k++) {
        GS_ASSERT_OK(gs_sched_plan(e.s, (uint64_t)k, &pl));
        ASSERT_ITEM(pl, 0, s1, starts[k], k < 3 ? 4 : 2, k == 3);
        GS_ASSERT_EQ(pl.n_encodes, encs[k]);
        if (pl.n_encodes) {
            GS_ASSERT(pl.encodes[0].seq == s1);
            GS_ASSERT_EQ(pl.encodes[0].img, 0);
            s1->imgs[0].emb = &fake_emb; /* what the engine does */
            s1->imgs[0].queued = 0;
        }
        GS_ASSERT_OK(gs_sched_commit(e.s, &pl));
    }
    gs_sched_remove(e.s, s1);
    /* Same image: its tokens are all prefix hits, no encode at all. */
    GS_ASSERT_OK(gs_sched_add(e.s, s2));
    GS_ASSERT_OK(gs_sched_plan(e.s, 5, &pl));
    ASSERT_ITEM(pl, 0, s2, 12, 2, 1);
    GS_ASSERT_EQ(pl.n_encodes, 0);
    GS_ASSERT_OK(gs_sched_commit(e.s, &pl));
    gs_sched_remove(e.s, s2);
    /* Same tokens, other image: page 0 already differs. */
    GS_ASSERT_OK(gs_sched_add(e.s, s3));
    GS_ASSERT_OK(gs_sched_plan(e.s, 6, &pl));
    ASSERT_ITEM(pl, 0, s3, 0, 4, 0);
    GS_ASSERT_EQ(pl.n_encodes, 1);
    GS_ASSERT_OK(gs_sched_commit(e.s, &pl));
    gs_sched_remove(e.s, s3);
    s1->imgs[0].emb = NULL;
    env_free(&e);
    gs_seq_free(s1), gs_seq_free(s2), gs_seq_free(s3);
}

static void test_max_seqs_and_failed(void)
{
    env e;
    GS_ASSERT_OK(env_new(&e, 4, 4, 64, 2, 1));
    int32_t t[13] = {0};
    gs_seq *f = mk(9, t, 13, NULL, 0), *a = mk(1, t, 2, NULL, 0), *b = mk(2, t + 1, 2, NULL, 0),
           *c = mk(3, t + 2, 2, NULL, 0);
    gs_step_plan pl;
    GS_ASSERT_OK(gs_sched_add(e.s, f)); /* 13 tokens need 4 pages; the pool has 3 */
    GS_ASSERT_OK(gs_sched_add(e.s, a));
    GS_ASSERT_OK(gs_sched_add(e.s, b));
    GS_ASSERT_OK(gs_sched_add(e.s, c));
    GS_ASSERT_OK(gs_sched_plan(e.s, 0, &pl));
    GS_ASSERT_EQ(pl.n_failed, 1);
    GS_ASSERT(pl.failed[0] == f);
    GS_ASSERT_EQ(f->state, GS_SEQ_DONE);
    GS_ASSERT_EQ(pl.n_items, 2); /* max_seqs */
    GS_ASSERT(pl.items[0].seq == a && pl.items[1].seq == b);
    gs_sched_stats st;
    gs_sched_get_stats(e.s, &st);
    GS_ASSERT_EQ(st.n_waiting, 1);
    GS_ASSERT_OK(gs_sched_commit(e.s, &pl));
    gs_sched_remove(e.s, c); /* cancel while waiting */
    GS_ASSERT_EQ(c->state, GS_SEQ_DONE);
    gs_sched_remove(e.s, a);
    gs_sched_remove(e.s, b);
    GS_ASSERT_EQ(gs_kv_pool_n_free(e.pool), 3);
    GS_ASSERT_OK(gs_sched_plan(e.s, 1, &pl));
    GS_ASSERT_EQ(pl.n_items, 0);

    gs_sched_params bad = {0, 1, 1};
    gs_sched *s2 = NULL;
    GS_ASSERT_EQ(gs_sched_new(&bad, e.pool, NULL, &s2), GS_EINVAL);
    bad = (gs_sched_params){4, 0, 1};
    GS_ASSERT_EQ(gs_sched_new(&bad, e.pool, NULL, &s2), GS_EINVAL);
    bad = (gs_sched_params){4, 1, 0};
    GS_ASSERT_EQ(gs_sched_new(&bad, e.pool, NULL, &s2), GS_EINVAL);
    GS_ASSERT_EQ(gs_sched_new(&bad, NULL, NULL, &s2), GS_EINVAL);
    gs_sched_free(NULL);
    env_free(&e);
    gs_seq_free(f), gs_seq_free(a), gs_seq_free(b), gs_seq_free(c);

    /* Malformed sequences. */
    gs_seq *q = NULL;
    gs_seq_params sp = {.id = 1, .toks = t, .n_toks = 0};
    GS_ASSERT_EQ(gs_seq_new(&sp, &q), GS_EINVAL);
    gs_prefix_image im = {.start = 10, .len = 4};
    sp = (gs_seq_params){.id = 1, .toks = t, .n_toks = 13, .spans = &im, .n_images = 1};
    GS_ASSERT_EQ(gs_seq_new(&sp, &q), GS_EINVAL); /* past the end */
    gs_prefix_image two[2] = {{.start = 2, .len = 4}, {.start = 4, .len = 2}};
    sp = (gs_seq_params){.id = 1, .toks = t, .n_toks = 13, .spans = two, .n_images = 2};
    GS_ASSERT_EQ(gs_seq_new(&sp, &q), GS_EINVAL); /* overlapping */
    GS_ASSERT(q == NULL);
}

/* Page refcounts must equal the number of block tables holding the page. */
static int refs_consistent(gs_kv_pool *pool, gs_seq **seqs, int n)
{
    int32_t np = gs_kv_pool_n_pages(pool);
    int32_t *cnt = calloc((size_t)np, sizeof *cnt);
    for (int i = 0; i < n; i++) {
        if (!seqs[i])
            continue;
        for (int32_t k = 0; k < gs_block_table_len(seqs[i]->bt); k++)
            cnt[gs_block_table_pages(seqs[i]->bt)[k]]++;
    }
    int ok = 1;
    for (int32_t p = 1; p < np; p++)
        ok &= cnt[p] == gs_kv_pool_refcount(pool, p);
    free(cnt);
    return ok && gs_kv_pool_check(pool) == 0;
}

static uint64_t rng_next(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static void random_ops(int prefix, uint64_t seed)
{
    enum { MAXQ = 24 };
    env e;
    GS_ASSERT_OK(env_new(&e, 24, 4, 24, 6, prefix));
    gs_seq *seqs[MAXQ] = {0};
    int32_t limit[MAXQ] = {0};
    int64_t next_id = 1;
    uint64_t rs = seed;
    int n_done = 0, n_preempt = 0;
    for (int op = 0; op < 500; op++) {
        int r = (int)(rng_next(&rs) % 10);
        int slot = (int)(rng_next(&rs) % MAXQ);
        if (r < 3 && !seqs[slot]) { /* submit */
            int32_t t[40];
            int32_t n = 1 + (int32_t)(rng_next(&rs) % 30);
            int fam = (int)(rng_next(&rs) % 3); /* shared prefixes */
            for (int32_t i = 0; i < n; i++)
                t[i] = i < 12 ? fam * 100 + i : (int32_t)(rng_next(&rs) % 50);
            gs_prefix_image im = {.start = 2, .len = 5, .grid = {1, 2, 10}};
            memset(im.hash, fam, sizeof im.hash);
            seqs[slot] = mk(next_id++, t, n, &im, n >= 7 && fam == 1);
            limit[slot] = n + 1 + (int32_t)(rng_next(&rs) % 12);
            GS_ASSERT_OK(gs_sched_add(e.s, seqs[slot]));
        } else if (r < 4 && seqs[slot]) { /* cancel */
            gs_sched_remove(e.s, seqs[slot]);
            gs_seq_free(seqs[slot]);
            seqs[slot] = NULL;
        } else { /* step */
            gs_step_plan pl;
            GS_ASSERT_OK(gs_sched_plan(e.s, (uint64_t)op, &pl));
            n_preempt += pl.n_preempted;
            for (int32_t i = 0; i < pl.n_encodes; i++)
                pl.encodes[i].seq->imgs[pl.encodes[i].img].queued = 0;
            for (int32_t i = 0; i < pl.n_items; i++) {
                const gs_sched_item *it = &pl.items[i];
                GS_ASSERT(gs_block_table_len(it->seq->bt) * 4 >= it->start + it->n);
            }
            GS_ASSERT_OK(gs_sched_commit(e.s, &pl));
            append_sampled(&pl);
            for (int k = 0; k < MAXQ; k++) { /* finish at the length limit, or failed */
                if (seqs[k] && (seqs[k]->n_tokens >= limit[k] || seqs[k]->state == GS_SEQ_DONE)) {
                    gs_sched_remove(e.s, seqs[k]);
                    gs_seq_free(seqs[k]);
                    seqs[k] = NULL;
                    n_done++;
                }
            }
        }
        GS_ASSERT_MSG(refs_consistent(e.pool, seqs, MAXQ), "refcounts diverge at op %d", op);
    }
    for (int k = 0; k < MAXQ; k++) {
        gs_sched_remove(e.s, seqs[k]);
        gs_seq_free(seqs[k]);
    }
    GS_ASSERT_EQ(gs_kv_pool_n_free(e.pool), 23);
    GS_ASSERT_OK(gs_kv_pool_check(e.pool));
    for (int32_t p = 0; p < 24; p++)
        GS_ASSERT_EQ(gs_kv_pool_refcount(e.pool, p), 0);
    gs_sched_stats st;
    gs_sched_get_stats(e.s, &st);
    GS_ASSERT_EQ(st.n_running + st.n_waiting, 0);
    fprintf(stderr, "  random (prefix %d): %d finished, %d preemptions, hit %lld/%lld tokens\n",
            prefix, n_done, n_preempt, (long long)st.prefix_hit_tokens,
            (long long)st.prefix_query_tokens);
    GS_ASSERT(n_done > 20);
    env_free(&e);
}

static void test_random_ops(void)
{
    random_ops(1, 1);
    if (gs__t_cur_failed)
        return;
    random_ops(0, 2);
    if (gs__t_cur_failed)
        return;
    random_ops(1, 3);
}

int main(void)
{
    GS_RUN(test_prefix_sharing_and_eviction);
    GS_RUN(test_all_hit_copy_on_write);
    GS_RUN(test_preemption);
    GS_RUN(test_chunked_prefill_decode_first);
    GS_RUN(test_image_encodes);
    GS_RUN(test_max_seqs_and_failed);
    GS_RUN(test_random_ops);
    return gs_test_summary();
}
