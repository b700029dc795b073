/* scheduler.c - step planning: decode first, chunked prefill under a token
 * budget, admission by free pages, preemption by recomputation.
 *
 * Preemption. When pages run out, something must give. Swapping KV to host
 * memory costs bandwidth and code; recomputation costs only compute, and
 * with the prefix cache often not even that: a preempted sequence releases
 * its pages onto the LRU free list with their keys intact, so if it is
 * re-admitted before they are reused, its lookup finds them again. The
 * victim is the most recently admitted running sequence (vLLM's FCFS
 * policy): the oldest requests keep making progress, so the oldest always
 * finishes and no request starves. A victim goes to the FRONT of the
 * waiting queue, and a step that preempted admits nobody new, so pages
 * freed for the running sequences are not taken at once by a newcomer.
 *
 * The all-hit rule. When every token of a sequence is found in the prefix
 * cache, nothing would be computed and there would be no logits to sample
 * from. So the last token is recomputed (vLLM: "we must recompute the last
 * token to obtain logits"). Its K/V would be written into the last cached
 * page, which other sequences may be reading and which the cache holds for
 * its key, so that page is copied on write first.
 *
 * Owns: the waiting queue links, the running list and the plan arrays.
 * Borrows: pool, prefix cache, sequences. Single-threaded. */
#include "scheduler.h"

#include <stdlib.h>
#include <string.h>

/* A growable array of fixed-size elements. */
typedef struct {
    void *v;
    int32_t n, cap;
} vec;

static int vec_reserve(vec *a, int32_t n, size_t sz)
{
    if (n <= a->cap)
        return 0;
    int32_t cap = a->cap ? a->cap : 16;
    while (cap < n) {
        if (cap > INT32_MAX / 2)
            return GS_ENOMEM;
        cap *= 2;
    }
    void *nv = realloc(a->v, (size_t)cap * sz);
    if (!nv)
        return GS_ENOMEM;
    a->v = nv;
    a->cap = cap;
    return 0;
}

static int vec_push(vec *a, const void *e, size_t sz)
{
    if (vec_reserve(a, a->n + 1, sz))
        return GS_ENOMEM;
    memcpy((char *)a->v + (size_t)a->n * sz, e, sz);
    a->n++;
    return 0;
}

struct gs_sched {
    gs_sched_params p;
    gs_kv_pool *pool;
    gs_prefix_cache *pc;
    gs_queue waiting; /* of gs_seq.q_link, FIFO */
    int32_t n_waiting;
    gs_seq **running; /* [n_running] admission order */
    int32_t n_running, cap_running;
    vec items, copies, encodes, preempted, failed;
    int32_t *hits; /* [cap_hits] scratch for lookups */
    int32_t cap_hits;
    gs_seq **snap; /* [cap_snap] running list snapshot for one pass */
    int32_t cap_snap;
    gs_sched_stats st;
};

int gs_sched_new(const gs_sched_params *p, gs_kv_pool *pool, gs_prefix_cache *pc, gs_sched **out)
{
    if (!out)
        return GS_EINVAL;
    *out = NULL;
    if (!p || !pool || p->page_size <= 0 || p->token_budget <= 0 || p->max_seqs <= 0)
        return GS_EINVAL;
    gs_sched *s = calloc(1, sizeof *s);
    if (!s)
        return GS_ENOMEM;
    s->p = *p;
    s->pool = pool;
    s->pc = pc;
    gs_queue_init(&s->waiting);
    *out = s;
    return 0;
}

static void wait_unlink(gs_sched *s, gs_seq *q)
{
    gs_queue_remove(&q->q_link);
    s->n_waiting--;
}

static void wait_push_back(gs_sched *s, gs_seq *q)
{
    gs_queue_insert_tail(&s->waiting, &q->q_link);
    s->n_waiting++;
}

static void wait_push_front(gs_sched *s, gs_seq *q)
{
    gs_queue_insert_head(&s->waiting, &q->q_link);
    s->n_waiting++;
}

static void running_remove(gs_sched *s, gs_seq *q)
{
    for (int32_t i = 0; i < s->n_running; i++) {
        if (s->running[i] == q) {
            memmove(&s->running[i], &s->running[i + 1],
                    (size_t)(s->n_running - i - 1) * sizeof *s->running);
            s->n_running--;
            return;
        }
    }
}

static int running_push(gs_sched *s, gs_seq *q)
{
    if (s->n_running == s->cap_running) {
        int32_t cap = s->cap_running ? s->cap_running * 2 : 16;
        gs_seq **r = realloc(s->running, (size_t)cap * sizeof *r);
        if (!r)
            return GS_ENOMEM;
        s->running = r;
        s->cap_running = cap;
    }
    s->running[s->n_running++] = q;
    return 0;
}

void gs_sched_free(gs_sched *s)
{
    if (!s)
        return;
    for (int32_t i = 0; i < s->n_running; i++)
        gs_block_table_release(s->running[i]->bt, s->pool);
    free(s->running);
    free(s->items.v);
    free(s->copies.v);
    free(s->encodes.v);
    free(s->preempted.v);
    free(s->failed.v);
    free(s->hits);
    free(s->snap);
    free(s);
}

int gs_sched_add(gs_sched *s, gs_seq *seq)
{
    if (!seq || seq->state != GS_SEQ_NEW || seq->n_tokens <= 0)
        return GS_EINVAL;
    seq->state = GS_SEQ_WAITING;
    seq->n_computed = 0;
    wait_push_back(s, seq);
    return 0;
}

void gs_sched_remove(gs_sched *s, gs_seq *seq)
{
    if (!seq)
        return;
    if (seq->state == GS_SEQ_WAITING)
        wait_unlink(s, seq);
    else if (seq->state == GS_SEQ_RUNNING)
        running_remove(s, seq);
    else
        return;
    gs_block_table_release(seq->bt, s->pool);
    seq->state = GS_SEQ_DONE;
    seq->scheduled = 0;
}

static int32_t pages_for(const gs_sched *s, int64_t n_tokens)
{
    return (int32_t)((n_tokens + s->p.page_size - 1) / s->p.page_size);
}

/* The sequence could not hold all its tokens even with the whole pool. */
static int never_fits(const gs_sched *s, const gs_seq *q)
{
    return pages_for(s, q->n_tokens) > gs_kv_pool_n_pages(s->pool) - 1;
}

static void preempt(gs_sched *s, gs_seq *q)
{
    running_remove(s, q);
    gs_block_table_release(q->bt, s->pool);
    q->n_computed = 0;
    q->n_preempted++;
    q->state = GS_SEQ_WAITING;
    wait_push_front(s, q);
    s->st.n_preemptions++;
}

/* Takes q (running or waiting) out for good and reports it. */
static int fail(gs_sched *s, gs_seq *q)
{
    gs_sched_remove(s, q);
    return vec_push(&s->failed, &q, sizeof q);
}

static int reserve_ptrs(void **arr, int32_t *cap, int32_t n, size_t sz)
{
    if (n <= *cap)
        return 0;
    int32_t c = *cap ? *cap : 16;
    while (c < n)
        c *= 2;
    void *a = realloc(*arr, (size_t)c * sz);
    if (!a)
        return GS_ENOMEM;
    *arr = a;
    *cap = c;
    return 0;
}

/* Lists the images that tokens [start, start + n) of q touch and that are
 * not encoded. */
static int add_encodes(gs_sched *s, gs_seq *q, int32_t start, int32_t n)
{
    for (int32_t j = 0; j < q->n_imgs; j++) {
        const gs_prefix_image *sp = &q->spans[j];
        if (sp->start >= start + n || sp->start + sp->len <= start)
            continue;
        if (q->imgs[j].emb || q->imgs[j].queued)
            continue;
        q->imgs[j].queued = 1;
        gs_sched_encode e = {q, j};
        int rc = vec_push(&s->encodes, &e, sizeof e);
        if (rc)
            return rc;
    }
    return 0;
}

static int add_item(gs_sched *s, gs_seq *q, int32_t start, int32_t n, int32_t *budget)
{
    gs_sched_item it = {q, start, n, start + n == q->n_tokens};
    int rc = vec_push(&s->items, &it, sizeof it);
    if (rc)
        return rc;
    q->scheduled = 1;
    *budget -= n;
    return add_encodes(s, q, start, n);
}

/* Grows q's table for a write of [first, end); page copies go straight
 * into the plan (need: gs_block_table_grow_need, an upper bound on them). */
static int grow_into_plan(gs_sched *s, gs_seq *q, int32_t first, int32_t end, int32_t need)
{
    if (vec_reserve(&s->copies, s->copies.n + need, sizeof(gs_page_copy)))
        return GS_ENOMEM;
    int32_t nc = 0;
    int rc = gs_block_table_grow(q->bt, s->pool, first, end, s->p.page_size,
                                 (gs_page_copy *)s->copies.v + s->copies.n, &nc);
    s->copies.n += nc;
    return rc;
}

/* Tokens of a prefill chunk for q that fit into the free pages now
 * (0 when not even one does). */
static int32_t fit_tokens(const gs_sched *s, const gs_seq *q, int32_t want)
{
    int32_t lo = 0, hi = want;
    while (lo < hi) {
        int32_t mid = lo + (hi - lo + 1) / 2;
        int32_t need = gs_block_table_grow_need(q->bt, s->pool, q->n_computed, q->n_computed + mid,
                                                s->p.page_size);
        if (need <= gs_kv_pool_n_free(s->pool))
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* Schedules running sequence q, preempting others (or itself) for pages. */
static int schedule_running(gs_sched *s, gs_seq *q, int32_t *budget)
{
    int32_t n = q->n_tokens - q->n_computed;
    if (n > *budget)
        n = *budget;
    if (n <= 0)
        return 0;
    for (;;) {
        int32_t need = gs_block_table_grow_need(q->bt, s->pool, q->n_computed, q->n_computed + n,
                                                s->p.page_size);
        if (need <= gs_kv_pool_n_free(s->pool)) {
            int rc = grow_into_plan(s, q, q->n_computed, q->n_computed + n, need);
            return rc ? rc : add_item(s, q, q->n_computed, n, budget);
        }
        if (n > 1) { /* a prefill chunk: take what fits rather than preempt */
            int32_t fit = fit_tokens(s, q, n);
            if (fit > 0) {
                n = fit;
                continue;
            }
        }
        gs_seq *victim = NULL;
        for (int32_t i = s->n_running - 1; i >= 0 && !victim; i--)
            if (s->running[i] != q && !s->running[i]->scheduled)
                victim = s->running[i];
        if (victim) {
            preempt(s, victim);
            int rc = vec_push(&s->preempted, &victim, sizeof victim);
            if (rc)
                return rc;
            continue;
        }
        if (never_fits(s, q))
            return fail(s, q);
        preempt(s, q);
        return vec_push(&s->preempted, &q, sizeof q);
    }
}

/* Admits the head of the waiting queue if its first chunk fits. Returns 1
 * when admitted, 0 when not (admission stops), < 0 on error. */
static int admit(gs_sched *s, gs_seq *q, int32_t *budget)
{
    const int32_t ps = s->p.page_size;
    int32_t hits = 0, all_hit = 0, computed = 0;
    if (never_fits(s, q))
        return fail(s, q) ? GS_ENOMEM : 1;
    if (s->pc) {
        int rc = gs_seq_update_keys(q, ps);
        if (rc)
            return rc;
        if (reserve_ptrs((void **)&s->hits, &s->cap_hits, q->n_keys, sizeof *s->hits))
            return GS_ENOMEM;
        hits = gs_prefix_cache_lookup(s->pc, q->keys, q->n_keys, s->hits);
        computed = hits * ps;
        if (computed >= q->n_tokens) {
            all_hit = 1;
            computed = q->n_tokens - 1;
        }
    }
    const int32_t *hp = s->hits;
    int32_t n = q->n_tokens - computed;
    if (n > *budget)
        n = *budget;
    int32_t need = pages_for(s, (int64_t)computed + n) - hits + all_hit, touched = 0;
    for (int32_t i = 0; i < hits; i++)
        touched += gs_kv_pool_refcount(s->pool, hp[i]) == 0;
    if (need > gs_kv_pool_n_free(s->pool) - touched)
        return 0;

    /* Take the hits first: this lifts them off the free list, so the
     * allocations below cannot evict them. */
    for (int32_t i = 0; i < hits; i++)
        gs_kv_pool_ref(s->pool, hp[i]);
    int rc = gs_block_table_append(q->bt, hp, hits);
    if (rc) {
        for (int32_t i = 0; i < hits; i++)
            gs_kv_pool_unref(s->pool, hp[i]);
        return rc;
    }
    if (all_hit) {
        gs_page_copy cp;
        rc = gs_block_table_cow(q->bt, s->pool, hits - 1, &cp);
        if (!rc)
            rc = vec_push(&s->copies, &cp, sizeof cp);
    }
    if (!rc)
        rc = grow_into_plan(s, q, computed, computed + n,
                            gs_block_table_grow_need(q->bt, s->pool, computed, computed + n, ps));
    if (!rc)
        rc = running_push(s, q);
    if (rc) {
        gs_block_table_release(q->bt, s->pool);
        return rc;
    }
    wait_unlink(s, q);
    q->state = GS_SEQ_RUNNING;
    q->n_computed = computed;
    s->st.prefix_query_tokens += q->n_tokens;
    s->st.prefix_hit_tokens += computed;
    if (!q->admitted) {
        q->admitted = 1;
        q->n_cached = computed < q->n_prompt ? computed : q->n_prompt;
    }
    rc = add_item(s, q, computed, n, budget);
    return rc ? rc : 1;
}

int gs_sched_plan(gs_sched *s, uint64_t now, gs_step_plan *plan)
{
    (void)now; /* FIFO needs no clock; kept for time-based policies */
    memset(plan, 0, sizeof *plan);
    s->items.n = s->copies.n = s->encodes.n = s->preempted.n = s->failed.n = 0;
    for (int32_t i = 0; i < s->n_running; i++)
        s->running[i]->scheduled = 0;
    int32_t budget = s->p.token_budget;
    int rc = 0;

    /* 1. decodes, 2. running prefills; both in admission order. Each pass
     * walks a snapshot, because preemption shrinks the running list; a
     * sequence preempted or failed meanwhile is no longer RUNNING. */
    if (reserve_ptrs((void **)&s->snap, &s->cap_snap, s->n_running, sizeof *s->snap))
        return GS_ENOMEM;
    for (int pass = 0; pass < 2 && !rc; pass++) {
        int32_t n_snap = s->n_running;
        if (n_snap > 0)
            memcpy(s->snap, s->running, (size_t)n_snap * sizeof *s->snap);
        for (int32_t i = 0; i < n_snap && budget > 0 && !rc; i++) {
            gs_seq *q = s->snap[i];
            int32_t left = q->n_tokens - q->n_computed;
            if (q->state != GS_SEQ_RUNNING || q->scheduled || (pass == 0) != (left == 1))
                continue;
            rc = schedule_running(s, q, &budget);
        }
    }
    /* 3. admissions, FIFO, none after a preemption. */
    while (!rc && s->preempted.n == 0 && budget > 0 && s->n_running < s->p.max_seqs &&
           !gs_queue_empty(&s->waiting)) {
        rc = admit(s, gs_queue_data(gs_queue_head(&s->waiting), gs_seq, q_link), &budget);
        if (rc == 0)
            break;
        if (rc > 0)
            rc = 0;
    }
    plan->items = s->items.v;
    plan->n_items = s->items.n;
    for (int32_t i = 0; i < s->items.n; i++)
        plan->n_tokens += ((const gs_sched_item *)s->items.v)[i].n;
    plan->copies = s->copies.v;
    plan->n_copies = s->copies.n;
    plan->encodes = s->encodes.v;
    plan->n_encodes = s->encodes.n;
    plan->preempted = s->preempted.v;
    plan->n_preempted = s->preempted.n;
    plan->failed = s->failed.v;
    plan->n_failed = s->failed.n;
    s->st.n_steps++;
    s->st.n_scheduled_tokens += plan->n_tokens;
    return rc;
}

int gs_sched_commit(gs_sched *s, const gs_step_plan *plan)
{
    const int32_t ps = s->p.page_size;
    for (int32_t i = 0; i < plan->n_items; i++) {
        const gs_sched_item *it = &plan->items[i];
        gs_seq *q = it->seq;
        int32_t before = q->n_computed / ps;
        q->n_computed = it->start + it->n;
        if (!s->pc)
            continue;
        int rc = gs_seq_update_keys(q, ps);
        if (rc)
            return rc;
        const int32_t *pages = gs_block_table_pages(q->bt);
        for (int32_t k = before; k < q->n_computed / ps && k < q->n_keys; k++)
            if (gs_prefix_cache_insert(s->pc, &q->keys[k], pages[k]) < 0)
                return GS_EINTERNAL;
    }
    return 0;
}

void gs_sched_get_stats(const gs_sched *s, gs_sched_stats *out)
{
    *out = s->st;
    out->n_running = s->n_running;
    out->n_waiting = s->n_waiting;
}

int32_t gs_sched_running(const gs_sched *s, gs_seq **seqs, int32_t cap)
{
    for (int32_t i = 0; i < s->n_running && i < cap; i++)
        seqs[i] = s->running[i];
    return s->n_running;
}

int32_t gs_sched_each_waiting(const gs_sched *s, void (*fn)(gs_seq *seq, void *ctx), void *ctx)
{
    int32_t n = 0;
    const gs_queue *q;
    GS_QUEUE_FOREACH(q, &s->waiting)
    {
        fn(gs_queue_data(q, gs_seq, q_link), ctx);
        n++;
    }
    return n;
}
