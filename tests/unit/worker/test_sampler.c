#include <math.h>
#include "worker/sampler.h"
#include "test.h"

#define V 1000

static void fill_logits(float *l, uint32_t seed)
{
    for (int i = 0; i < V; i++) {
        seed = seed * 1664525u + 1013904223u;
        l[i] = (float)((seed >> 8) % 10000) / 1000.0f - 5.0f;
    }
}

static void test_validate(void)
{
    gs_sampling_params p = gs_sampling_defaults();
    gs_diag d;
    p.top_p = 0.0f;
    GS_ASSERT_EQ(gs_sampling_validate(&p, &d), GS_EINVAL);
    GS_ASSERT(strstr(d.msg, "top_p") != NULL);
    p = gs_sampling_defaults();
    p.temperature = -1.0f;
    GS_ASSERT_EQ(gs_sampling_validate(&p, &d), GS_EINVAL);
    p = gs_sampling_defaults();
    p.repetition_penalty = 0.0f;
    gs_sampler *s = (gs_sampler *)1;
    GS_ASSERT_EQ(gs_sampler_new(&p, V, NULL, 0, &s, &d), GS_EINVAL);
    GS_ASSERT(s == NULL);
}

/* ---- the backend op's view of a sampler (gs_sampler_row, penalty ids) ---- */

static void test_backend_row(void)
{
    gs_sampling_params p = gs_sampling_defaults();
    p.temperature = 0.8f, p.top_k = 2, p.top_p = 0.6f, p.min_p = 0.05f;
    p.repetition_penalty = 1.1f, p.presence_penalty = 0.5f, p.frequency_penalty = -0.25f;
    p.seed = 0x123456789abcdefull;
    gs_sampler *s;
    GS_ASSERT_OK(gs_sampler_new(&p, V, NULL, 0, &s, NULL));
    gs_sample_row r;
    memset(&r, 0xff, sizeof r);
    gs_sampler_row(s, &r);
    GS_ASSERT(r.temperature == 0.8f && r.top_k == 2 && r.top_p == 0.6f && r.min_p == 0.05f);
    GS_ASSERT(r.repetition_penalty == 1.1f && r.presence_penalty == 0.5f &&
              r.frequency_penalty == -0.25f);
    GS_ASSERT(r.seed == 0x123456789abcdefull && r.offset == 0 && r.pad_ == 0);
    /* the offset is the draw counter: one more per accepted id */
    GS_ASSERT_OK(gs_sampler_accept(s, 4));
    GS_ASSERT_OK(gs_sampler_accept(s, 4));
    gs_sampler_row(s, &r);
    GS_ASSERT_EQ(r.offset, 2);
    GS_ASSERT_EQ(gs_sampler_accept(s, V), GS_EINVAL); /* refused: not counted */
    gs_sampler_row(s, &r);
    GS_ASSERT_EQ(r.offset, 2);
    gs_sampler_free(s);
    /* greedy defaults map to the op's "off" values */
    p = gs_sampling_defaults();
    GS_ASSERT_OK(gs_sampler_new(&p, V, NULL, 0, &s, NULL));
    gs_sampler_row(s, &r);
    GS_ASSERT(!(r.temperature > 0.0f) && r.top_k == 0 && r.top_p >= 1.0f && r.min_p == 0.0f &&
              r.repetition_penalty == 1.0f && r.presence_penalty == 0.0f &&
              r.frequency_penalty == 0.0f);
    gs_sampler_free(s);
}

static void test_penalty_ids(void)
{
    int32_t ids[16], cnt[16];
    /* no penalty: nothing to list, whatever was seen */
    gs_sampling_params p = gs_sampling_defaults();
    int32_t prompt[] = {5, 3, 5, 900, 3};
    gs_sampler *s;
    GS_ASSERT_OK(gs_sampler_new(&p, V, prompt, 5, &s, NULL));
    GS_ASSERT_OK(gs_sampler_accept(s, 7));
    GS_ASSERT_EQ(gs_sampler_n_penalty_ids(s), 0);
    gs_sampler_penalty_ids(s, ids, cnt); /* writes nothing */
    gs_sampler_free(s);

    /* repetition: the prompt's distinct ids (count 0), then the output's */
    p.repetition_penalty = 1.3f;
    GS_ASSERT_OK(gs_sampler_new(&p, V, prompt, 5, &s, NULL));
    GS_ASSERT_EQ(gs_sampler_n_penalty_ids(s), 3);
    gs_sampler_penalty_ids(s, ids, cnt);
    GS_ASSERT(ids[0] == 3 && ids[1] == 5 && ids[2] == 900);
    GS_ASSERT(cnt[0] == 0 && cnt[1] == 0 && cnt[2] == 0);
    const int32_t acc[] = {5, 7, 7, 1, 999, 0, 7};
    for (int i = 0; i < 7; i++)
        GS_ASSERT_OK(gs_sampler_accept(s, acc[i]));
    const int32_t want_id[] = {0, 1, 3, 5, 7, 900, 999}, want_cnt[] = {1, 1, 0, 1, 3, 0, 1};
    GS_ASSERT_EQ(gs_sampler_n_penalty_ids(s), 7);
    gs_sampler_penalty_ids(s, ids, cnt);
    for (int i = 0; i < 7; i++) {
        GS_ASSERT_EQ(ids[i], want_id[i]);
        GS_ASSERT_EQ(cnt[i], want_cnt[i]);
    }
    gs_sampler_free(s);

    /* presence / frequency only: prompt ids take no part, so are not listed */
    p = gs_sampling_defaults();
    p.presence_penalty = 0.4f;
    GS_ASSERT_OK(gs_sampler_new(&p, V, prompt, 5, &s, NULL));
    GS_ASSERT_EQ(gs_sampler_n_penalty_ids(s), 0);
    GS_ASSERT_OK(gs_sampler_accept(s, 9));
    GS_ASSERT_OK(gs_sampler_accept(s, 2));
    GS_ASSERT_OK(gs_sampler_accept(s, 9));
    GS_ASSERT_EQ(gs_sampler_n_penalty_ids(s), 2);
    gs_sampler_penalty_ids(s, ids, cnt);
    GS_ASSERT(ids[0] == 2 && cnt[0] == 1 && ids[1] == 9 && cnt[1] == 2);
    gs_sampler_free(s);

    /* prompt ids outside the vocabulary are never listed (the op refuses them) */
    p = gs_sampling_defaults();
    p.repetition_penalty = 2.0f;
    int32_t odd[] = {12, -1, 3, 10};
    GS_ASSERT_OK(gs_sampler_new(&p, 10, odd, 4, &s, NULL));
    GS_ASSERT_EQ(gs_sampler_n_penalty_ids(s), 1);
    gs_sampler_penalty_ids(s, ids, cnt);
    GS_ASSERT(ids[0] == 3 && cnt[0] == 0);
    gs_sampler_free(s);
}

/* Many accepts: the sorted list matches a brute-force count. */
static void test_penalty_ids_many(void)
{
    enum { N = 5000, W = 700 };
    gs_sampling_params p = gs_sampling_defaults();
    p.frequency_penalty = 0.1f, p.repetition_penalty = 1.05f;
    int32_t prompt[200];
    static int32_t in_prompt[W], count[W];
    memset(in_prompt, 0, sizeof in_prompt);
    memset(count, 0, sizeof count);
    uint32_t x = 12345;
    for (int i = 0; i < 200; i++) {
        x = x * 1664525u + 1013904223u;
        prompt[i] = (int32_t)((x >> 8) % W);
        in_prompt[prompt[i]] = 1;
    }
    gs_sampler *s;
    GS_ASSERT_OK(gs_sampler_new(&p, W, prompt, 200, &s, NULL));
    for (int i = 0; i < N; i++) {
        x = x * 1664525u + 1013904223u;
        const int32_t id = (int32_t)((x >> 8) % (i < N / 2 ? W / 3 : W)); /* later: new ids */
        GS_ASSERT_OK(gs_sampler_accept(s, id));
        count[id]++;
    }
    static int32_t ids[W], cnt[W];
    const int32_t n = gs_sampler_n_penalty_ids(s);
    gs_sampler_penalty_ids(s, ids, cnt);
    int32_t k = 0;
    for (int32_t id = 0; id < W; id++) {
        if (!in_prompt[id] && !count[id])
            continue;
        GS_ASSERT(k < n);
        GS_ASSERT_EQ(ids[k], id);
        GS_ASSERT_EQ(cnt[k], count[id]);
        k++;
    }
    GS_ASSERT_EQ(k, n);
    GS_ASSERT_EQ(gs_sampler_n_generated(s), N);
    gs_sampler_free(s);
}

/* Greedy with penalties: gs_k_sample on the CPU backend, fed by
 * gs_sampler_row / gs_sampler_penalty_ids, picks the id a direct
 * computation of the processors picks (repetition penalty over prompt +
 * output ids, presence / frequency over output counts, argmax). */
static void test_backend_op_matches_greedy(void)
{
    gs_backend *be = NULL;
    gs_backend_params bp = {.kind = GS_BACKEND_CPU, .n_threads = gs_test_cpu_threads()};
    GS_ASSERT_OK(gs_backend_new(&bp, &be, NULL));
    gs_sampling_params p = gs_sampling_defaults();
    p.repetition_penalty = 1.5f, p.presence_penalty = 0.3f, p.frequency_penalty = 0.2f;
    int32_t prompt[] = {11, 12, 13};
    gs_sampler *s;
    GS_ASSERT_OK(gs_sampler_new(&p, V, prompt, 3, &s, NULL));
    int agree = 0;
    static int32_t out_count[V];
    memset(out_count, 0, sizeof out_count);
    for (int step = 0; step < 40; step++) {
        float l[V], l2[V];
        fill_logits(l, 100 + (uint32_t)(step % 3)); /* repeats: penalties decide */
        memcpy(l2, l, sizeof l);
        int32_t host = 0;
        for (int32_t i = 0; i < V; i++) {
            const int seen = out_count[i] > 0 || i == 11 || i == 12 || i == 13;
            if (seen)
                l[i] = l[i] > 0 ? l[i] / p.repetition_penalty : l[i] * p.repetition_penalty;
            if (out_count[i] > 0)
                l[i] -= fmaf(p.frequency_penalty, (float)out_count[i], p.presence_penalty);
            if (l[i] > l[host])
                host = i;
        }
        gs_sample_row row;
        gs_sampler_row(s, &row);
        const int32_t n = gs_sampler_n_penalty_ids(s);
        int32_t off[2] = {0, n}, *ids = malloc(sizeof *ids * (size_t)(n + 1)),
                *cnt = malloc(sizeof *cnt * (size_t)(n + 1)), out = -2;
        GS_ASSERT(ids && cnt);
        gs_sampler_penalty_ids(s, ids, cnt);
        /* the CPU backend's memory is host memory */
        int rc = gs_k_sample(be, &out, gs_mat_make(l2, GS_DT_F32, 1, V), &row, off, ids, cnt);
        free(ids);
        free(cnt);
        GS_ASSERT_OK(rc);
        agree += out == host;
        GS_ASSERT_OK(gs_sampler_accept(s, host));
        out_count[host]++;
    }
    gs_sampler_free(s);
    gs_backend_free(be);
    GS_ASSERT_EQ(agree, 40);
}

/* Streams `parts` through a stopper and returns the concatenated output. */
static int run_stopper(const char *const *stops, int n, const char *const *parts, int np, char *out,
                       size_t cap)
{
    gs_stopper *st;
    if (gs_stopper_new(stops, n, &st))
        return -1;
    size_t o = 0;
    int stopped = 0;
    for (int i = 0; i < np && !stopped; i++) {
        const char *e;
        size_t el;
        stopped = gs_stopper_feed(st, parts[i], strlen(parts[i]), &e, &el);
        if (o + el < cap) {
            memcpy(out + o, e, el);
            o += el;
        }
    }
    if (!stopped) {
        const char *e;
        size_t el;
        gs_stopper_flush(st, &e, &el);
        memcpy(out + o, e, el);
        o += el;
    }
    out[o] = 0;
    gs_stopper_free(st);
    return stopped;
}

static void test_stopper(void)
{
    const char *stops[] = {"STOP", "", "<end>"};
    char out[256];
    const char *a[] = {"hello S", "TO", "P world"};
    GS_ASSERT_EQ(run_stopper(stops, 3, a, 3, out, sizeof out), 1);
    GS_ASSERT_STREQ(out, "hello ");
    const char *b[] = {"hello S", "TAR", "T"};
    GS_ASSERT_EQ(run_stopper(stops, 3, b, 3, out, sizeof out), 0);
    GS_ASSERT_STREQ(out, "hello START");
    const char *c[] = {"a<e", "nd>b"};
    GS_ASSERT_EQ(run_stopper(stops, 3, c, 2, out, sizeof out), 1);
    GS_ASSERT_STREQ(out, "a");
    const char *dd[] = {"no stops ", "here"};
    GS_ASSERT_EQ(run_stopper(NULL, 0, dd, 2, out, sizeof out), 0);
    GS_ASSERT_STREQ(out, "no stops here");
    /* Held-back text is not emitted early. */
    gs_stopper *st;
    GS_ASSERT_OK(gs_stopper_new(stops, 3, &st));
    const char *e;
    size_t el;
    GS_ASSERT_EQ(gs_stopper_feed(st, "xyz<en", 6, &e, &el), 0);
    GS_ASSERT_EQ(el, 3);
    GS_ASSERT(memcmp(e, "xyz", 3) == 0);
    gs_stopper_free(st);
}

int main(void)
{
    GS_RUN(test_validate);
    GS_RUN(test_backend_row);
    GS_RUN(test_penalty_ids);
    GS_RUN(test_penalty_ids_many);
    GS_RUN(test_backend_op_matches_greedy);
    GS_RUN(test_stopper);
    return gs_test_summary();
}
