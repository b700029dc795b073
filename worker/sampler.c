/* sampler.c - per-sequence sampling state and stop strings (sampler.h).
 *
 * Penalty bookkeeping: a small open-addressing hash map id -> (in_prompt,
 * output count) per sequence, so a 150k vocabulary costs nothing per
 * sequence until tokens are seen; beside it the same ids sorted ascending
 * with their output counts (pen_id / pen_cnt), the form gs_k_sample's
 * penalty lists take, kept up to date by gs_sampler_accept (binary search;
 * an insert moves the tail).
 *
 * The choice itself is the backend's gs_k_sample (kernels.h): this file
 * hands it the parameters (gs_sampler_row) and the penalty lists. */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

gs_sampling_params gs_sampling_defaults(void)
{
    gs_sampling_params p;
    memset(&p, 0, sizeof p);
    p.temperature = 0.0f;
    p.top_p = 1.0f;
    p.repetition_penalty = 1.0f;
    return p;
}

int gs_sampling_validate(const gs_sampling_params *p, gs_diag *d)
{
    if (!(p->temperature >= 0.0f && p->temperature <= 100.0f))
        return gs_diag_set(d, GS_EINVAL, "temperature must be in [0, 100]");
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return gs_diag_set(d, GS_EINVAL, "top_p must be in (0, 1]");
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return gs_diag_set(d, GS_EINVAL, "min_p must be in [0, 1]");
    if (p->top_k < 0)
        return gs_diag_set(d, GS_EINVAL, "top_k must be >= 0");
    if (!(p->repetition_penalty > 0.0f && p->repetition_penalty <= 10.0f))
        return gs_diag_set(d, GS_EINVAL, "repetition_penalty must be in (0, 10]");
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return gs_diag_set(d, GS_EINVAL, "presence_penalty must be in [-2, 2]");
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return gs_diag_set(d, GS_EINVAL, "frequency_penalty must be in [-2, 2]");
    return 0;
}

/* ---- seen-token map ---------------------------------------------------- */

typedef struct {
    int32_t id; /* -1: empty */
    int32_t in_prompt;
    int32_t count; /* occurrences in the output */
} seen_slot;

struct gs_sampler {
    gs_sampling_params p;
    int32_t vocab;
    int32_t n_generated;
    seen_slot *seen;
    uint32_t seen_cap, seen_n; /* cap is a power of two */
    int32_t *pen_id, *pen_cnt; /* [pen_cap]: the map's ids in [0, vocab), ascending */
    int32_t pen_n, pen_cap;
};

static uint32_t hash_id(int32_t id)
{
    uint32_t x = (uint32_t)id * 0x9E3779B1u;
    return x ^ (x >> 15);
}

static int seen_grow(gs_sampler *s)
{
    uint32_t ncap = s->seen_cap ? s->seen_cap * 2 : 64;
    seen_slot *ns = malloc(sizeof *ns * ncap);
    if (!ns)
        return GS_ENOMEM;
    for (uint32_t i = 0; i < ncap; i++)
        ns[i].id = -1;
    for (uint32_t i = 0; i < s->seen_cap; i++) {
        if (s->seen[i].id < 0)
            continue;
        uint32_t h = hash_id(s->seen[i].id) & (ncap - 1);
        while (ns[h].id >= 0)
            h = (h + 1) & (ncap - 1);
        ns[h] = s->seen[i];
    }
    free(s->seen);
    s->seen = ns;
    s->seen_cap = ncap;
    return 0;
}

static seen_slot *seen_get(gs_sampler *s, int32_t id)
{
    if ((s->seen_n + 1) * 2 > s->seen_cap && seen_grow(s) != 0)
        return NULL;
    uint32_t h = hash_id(id) & (s->seen_cap - 1);
    while (s->seen[h].id >= 0 && s->seen[h].id != id)
        h = (h + 1) & (s->seen_cap - 1);
    if (s->seen[h].id < 0) {
        s->seen[h].id = id;
        s->seen[h].in_prompt = 0;
        s->seen[h].count = 0;
        s->seen_n++;
    }
    return &s->seen[h];
}

/* ---- sorted penalty list ------------------------------------------------ */

/* Room for one more entry in pen_id / pen_cnt. */
static int pen_reserve(gs_sampler *s, int32_t need)
{
    if (need <= s->pen_cap)
        return 0;
    int32_t ncap = s->pen_cap ? s->pen_cap : 64;
    while (ncap < need)
        ncap = ncap > INT32_MAX / 2 ? need : ncap * 2;
    int32_t *ni = realloc(s->pen_id, sizeof *ni * (size_t)ncap);
    if (!ni)
        return GS_ENOMEM;
    s->pen_id = ni;
    int32_t *nc = realloc(s->pen_cnt, sizeof *nc * (size_t)ncap);
    if (!nc)
        return GS_ENOMEM;
    s->pen_cnt = nc;
    s->pen_cap = ncap;
    return 0;
}

/* The first index whose id is >= id. */
static int32_t pen_lower_bound(const gs_sampler *s, int32_t id)
{
    int32_t lo = 0, hi = s->pen_n;
    while (lo < hi) {
        const int32_t mid = lo + (hi - lo) / 2;
        if (s->pen_id[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Counts one output occurrence of id (room reserved by the caller). */
static void pen_count(gs_sampler *s, int32_t id)
{
    const int32_t k = pen_lower_bound(s, id);
    if (k < s->pen_n && s->pen_id[k] == id) {
        s->pen_cnt[k]++;
        return;
    }
    memmove(s->pen_id + k + 1, s->pen_id + k, sizeof *s->pen_id * (size_t)(s->pen_n - k));
    memmove(s->pen_cnt + k + 1, s->pen_cnt + k, sizeof *s->pen_cnt * (size_t)(s->pen_n - k));
    s->pen_id[k] = id;
    s->pen_cnt[k] = 1;
    s->pen_n++;
}

static int cmp_i32(const void *a, const void *b)
{
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The prompt's ids (in the map after gs_sampler_new): sorted, count 0. */
static int pen_from_prompt(gs_sampler *s)
{
    if (pen_reserve(s, (int32_t)s->seen_n) != 0)
        return GS_ENOMEM;
    s->pen_n = 0;
    for (uint32_t i = 0; i < s->seen_cap; i++)
        if (s->seen[i].id >= 0 && s->seen[i].id < s->vocab) {
            s->pen_id[s->pen_n] = s->seen[i].id;
            s->pen_cnt[s->pen_n++] = 0;
        }
    if (s->pen_n > 1)
        qsort(s->pen_id, (size_t)s->pen_n, sizeof *s->pen_id, cmp_i32);
    return 0;
}

/* ---- sampler ----------------------------------------------------------- */

int gs_sampler_new(const gs_sampling_params *p, int32_t vocab, const int32_t *prompt,
                   int32_t n_prompt, gs_sampler **out, gs_diag *d)
{
    *out = NULL;
    int rc = gs_sampling_validate(p, d);
    if (rc)
        return rc;
    if (vocab <= 0 || n_prompt < 0 || (n_prompt > 0 && !prompt))
        return gs_diag_set(d, GS_EINVAL, "sampler: bad vocab or prompt");
    gs_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return GS_ENOMEM;
    s->p = *p;
    s->vocab = vocab;
    if (seen_grow(s) != 0) {
        gs_sampler_free(s);
        return gs_diag_set(d, GS_ENOMEM, "sampler: out of memory");
    }
    if (p->repetition_penalty != 1.0f) {
        for (int32_t i = 0; i < n_prompt; i++) {
            seen_slot *e = seen_get(s, prompt[i]);
            if (!e) {
                gs_sampler_free(s);
                return gs_diag_set(d, GS_ENOMEM, "sampler: out of memory");
            }
            e->in_prompt = 1;
        }
    }
    if (pen_from_prompt(s) != 0) {
        gs_sampler_free(s);
        return gs_diag_set(d, GS_ENOMEM, "sampler: out of memory");
    }
    *out = s;
    return 0;
}

void gs_sampler_free(gs_sampler *s)
{
    if (!s)
        return;
    free(s->seen);
    free(s->pen_id);
    free(s->pen_cnt);
    free(s);
}

int gs_sampler_accept(gs_sampler *s, int32_t id)
{
    if (id < 0 || id >= s->vocab)
        return GS_EINVAL;
    if (pen_reserve(s, s->pen_n + 1) != 0) /* before any change: ENOMEM leaves s as it was */
        return GS_ENOMEM;
    seen_slot *e = seen_get(s, id);
    if (!e)
        return GS_ENOMEM;
    e->count++;
    pen_count(s, id);
    s->n_generated++;
    return 0;
}

int32_t gs_sampler_n_generated(const gs_sampler *s)
{
    return s->n_generated;
}

void gs_sampler_row(const gs_sampler *s, gs_sample_row *out)
{
    memset(out, 0, sizeof *out);
    out->temperature = s->p.temperature;
    out->top_k = s->p.top_k;
    out->top_p = s->p.top_p;
    out->min_p = s->p.min_p;
    out->repetition_penalty = s->p.repetition_penalty;
    out->presence_penalty = s->p.presence_penalty;
    out->frequency_penalty = s->p.frequency_penalty;
    out->pad_ = 0;
    out->seed = s->p.seed;
    out->offset = (uint64_t)s->n_generated;
}

int32_t gs_sampler_n_penalty_ids(const gs_sampler *s)
{
    const gs_sampling_params *p = &s->p;
    if (p->repetition_penalty == 1.0f && p->presence_penalty == 0.0f &&
        p->frequency_penalty == 0.0f)
        return 0;
    return s->pen_n;
}

void gs_sampler_penalty_ids(const gs_sampler *s, int32_t *ids, int32_t *cnt)
{
    const int32_t n = gs_sampler_n_penalty_ids(s);
    if (n == 0)
        return;
    memcpy(ids, s->pen_id, sizeof *ids * (size_t)n);
    memcpy(cnt, s->pen_cnt, sizeof *cnt * (size_t)n);
}

/* ---- stop strings ------------------------------------------------------ */

struct gs_stopper {
    char **stops;
    size_t *lens;
    int n;
    size_t max_len;
    char *buf; /* held-back text + the current delta */
    size_t len, cap;
    char *out; /* emitted text of the last call */
    size_t out_cap;
    int stopped;
};

int gs_stopper_new(const char *const *stops, int n, gs_stopper **out)
{
    *out = NULL;
    gs_stopper *st = calloc(1, sizeof *st);
    if (!st)
        return GS_ENOMEM;
    if (n > 0) {
        st->stops = calloc((size_t)n, sizeof *st->stops);
        st->lens = calloc((size_t)n, sizeof *st->lens);
        if (!st->stops || !st->lens) {
            gs_stopper_free(st);
            return GS_ENOMEM;
        }
    }
    for (int i = 0; i < n; i++) {
        size_t l = stops[i] ? strlen(stops[i]) : 0;
        if (l == 0)
            continue;
        st->stops[st->n] = strdup(stops[i]);
        if (!st->stops[st->n]) {
            gs_stopper_free(st);
            return GS_ENOMEM;
        }
        st->lens[st->n++] = l;
        if (l > st->max_len)
            st->max_len = l;
    }
    *out = st;
    return 0;
}

void gs_stopper_free(gs_stopper *st)
{
    if (!st)
        return;
    for (int i = 0; i < st->n; i++)
        free(st->stops[i]);
    free(st->stops);
    free(st->lens);
    free(st->buf);
    free(st->out);
    free(st);
}

static int ensure(char **b, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 64;
    while (nc < need)
        nc *= 2;
    char *nb = realloc(*b, nc);
    if (!nb)
        return GS_ENOMEM;
    *b = nb;
    *cap = nc;
    return 0;
}

/* Emits buf[0..n) and keeps buf[n..len) held back. */
static int emit_prefix(gs_stopper *st, size_t n, const char **emit, size_t *emit_len)
{
    if (ensure(&st->out, &st->out_cap, n + 1))
        return GS_ENOMEM;
    memcpy(st->out, st->buf, n);
    st->out[n] = 0;
    memmove(st->buf, st->buf + n, st->len - n);
    st->len -= n;
    *emit = st->out;
    *emit_len = n;
    return 0;
}

int gs_stopper_feed(gs_stopper *st, const char *text, size_t len, const char **emit,
                    size_t *emit_len)
{
    *emit = "";
    *emit_len = 0;
    if (st->stopped)
        return 1;
    if (ensure(&st->buf, &st->cap, st->len + len + 1))
        return GS_ENOMEM;
    memcpy(st->buf + st->len, text, len);
    st->len += len;
    if (st->n == 0)
        return emit_prefix(st, st->len, emit, emit_len);
    /* Earliest full match of any stop string. */
    size_t first = (size_t)-1;
    for (int i = 0; i < st->n; i++) {
        if (st->lens[i] > st->len)
            continue;
        const char *m = memmem(st->buf, st->len, st->stops[i], st->lens[i]);
        if (m && (size_t)(m - st->buf) < first)
            first = (size_t)(m - st->buf);
    }
    if (first != (size_t)-1) {
        st->stopped = 1;
        st->len = first;
        int rc = emit_prefix(st, first, emit, emit_len);
        return rc ? rc : 1;
    }
    /* Hold back the longest suffix that is a proper prefix of a stop. */
    size_t hold = 0;
    for (int i = 0; i < st->n; i++) {
        size_t maxk = st->lens[i] - 1 < st->len ? st->lens[i] - 1 : st->len;
        for (size_t k = maxk; k > hold; k--)
            if (memcmp(st->buf + st->len - k, st->stops[i], k) == 0) {
                hold = k;
                break;
            }
    }
    return emit_prefix(st, st->len - hold, emit, emit_len);
}

void gs_stopper_flush(gs_stopper *st, const char **emit, size_t *emit_len)
{
    *emit = "";
    *emit_len = 0;
    if (st->stopped || st->len == 0)
        return;
    if (emit_prefix(st, st->len, emit, emit_len) != 0) {
        *emit = "";
        *emit_len = 0;
    }
}
