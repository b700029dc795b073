/* test_engine_fake.c - the engine over the hash-chain fake model
 * (fake_model.c): every output must equal the unpaged reference exactly,
 * whatever the batching, chunking, prefix sharing or preemption. Also
 * stop conditions, text, errors, cancellation, malformed jobs, and 500
 * random operations that must leave the pool as it started. */
#include "common/log.h"
#include "fake_model.h"
#include "test.h"
#include "worker/engine/engine.h"

#define MAXT 256

typedef struct {
    int64_t id;
    int32_t toks[MAXT];
    int32_t n;
    char text[4096];
    size_t text_len;
    int n_events, finished, after_finish;
    gs_finish_reason reason;
    int err;
    gs_engine_usage usage;
    gs_engine_timings tm;
} rec;

static int on_ev(void *user, const gs_engine_event *ev)
{
    rec *r = user;
    if (r->finished)
        r->after_finish++;
    r->n_events++;
    for (int32_t i = 0; i < ev->n_ids && r->n < MAXT; i++)
        r->toks[r->n++] = ev->ids[i];
    if (ev->text_len && r->text_len + ev->text_len < sizeof r->text) {
        memcpy(r->text + r->text_len, ev->text, ev->text_len);
        r->text_len += ev->text_len;
    }
    r->usage = ev->usage;
    r->tm = ev->timings;
    if (ev->finish) {
        r->finished = 1;
        r->reason = ev->finish;
        r->err = ev->error;
    }
    return 0;
}

/* Fake detokenizer: token id -> two letters. */
static char g_piece[2];
static int dt_open(void *user, void **st)
{
    (void)user;
    *st = malloc(1);
    return *st ? 0 : GS_ENOMEM;
}
static int dt_push(void *st, int32_t id, const char **t, size_t *n)
{
    (void)st;
    g_piece[0] = (char)('a' + id % 26);
    g_piece[1] = (char)('a' + (id / 26) % 26);
    *t = g_piece;
    *n = 2;
    return 0;
}
static void dt_flush(void *st, const char **t, size_t *n)
{
    (void)st;
    *t = "";
    *n = 0;
}
static void dt_close(void *st)
{
    free(st);
}

static uint64_t g_clock;
static uint64_t fake_clock(void *u)
{
    (void)u;
    return g_clock += 1000;
}

static gs_model *g_m;

static gs_engine *mk_engine(int32_t n_pages, int32_t ps, int32_t budget, int32_t max_seqs,
                            unsigned flags)
{
    gs_engine_params p = {0};
    p.model = g_m;
    p.n_pages = n_pages;
    p.page_size = ps;
    p.token_budget = budget;
    p.max_seqs = max_seqs;
    p.flags = flags;
    p.detok = (gs_engine_detok){NULL, dt_open, dt_push, dt_flush, dt_close};
    p.clock = fake_clock;
    gs_engine *e = NULL;
    gs_diag d;
    if (gs_engine_new(&p, &e, &d))
        fprintf(stderr, "engine_new: %s\n", d.msg);
    return e;
}

/* Runs until idle; returns the number of steps or -1. */
static int run_all(gs_engine *e)
{
    int steps = 0;
    while (gs_engine_busy(e)) {
        if (gs_engine_step(e, g_clock) != 0 || ++steps > 100000)
            return -1;
    }
    return steps;
}

/* A request: prompt with 0..2 images, pixels owned here. */
typedef struct {
    int32_t prompt[200];
    int32_t n;
    float *px[2];
    fake_image img[2];
    gs_engine_image eimg[2];
    int32_t n_img;
    int32_t max_tokens;
} req;

static uint64_t rnd(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

/* sys: tokens of a shared "system prompt" first; img_seed: 0 = random
 * images, else that seed for image 0 (same seed, same pixels). */
static void make_req(req *r, uint64_t *s, int n_img, int32_t sys, uint64_t img_seed)
{
    memset(r, 0, sizeof *r);
    for (int32_t i = 0; i < sys; i++)
        r->prompt[r->n++] = 7 + i % 50;
    int32_t pre = 1 + (int32_t)(rnd(s) % 9);
    for (int32_t i = 0; i < pre; i++)
        r->prompt[r->n++] = (int32_t)(rnd(s) % 280);
    for (int k = 0; k < n_img; k++) {
        uint64_t ps = k == 0 && img_seed ? img_seed : rnd(s) + 1;
        int32_t gh = 2 * (1 + (int32_t)(ps % 3)), gw = 2 * (1 + (int32_t)((ps >> 3) % 3));
        int64_t np = (int64_t)gh * gw;
        r->px[k] = malloc(sizeof(float) * (size_t)np * FAKE_PATCH_DIM);
        uint64_t pxs = ps;
        for (int64_t i = 0; i < np * FAKE_PATCH_DIM; i++)
            r->px[k][i] = (float)(rnd(&pxs) % 1000) / 250.0f - 2.0f;
        fake_image fi = {r->px[k], np, {1, gh, gw}};
        r->img[k] = fi;
        r->eimg[k] = (gs_engine_image){r->px[k], np, {1, gh, gw}, {0}, FAKE_PATCH_DIM, NULL, NULL};
        r->prompt[r->n++] = FAKE_IMAGE_TOKEN - 1; /* a "begin image" text token */
        for (int64_t i = 0; i < np / 4; i++)
            r->prompt[r->n++] = FAKE_IMAGE_TOKEN;
        int32_t mid = 1 + (int32_t)(rnd(s) % 5);
        for (int32_t i = 0; i < mid; i++)
            r->prompt[r->n++] = (int32_t)(rnd(s) % 280);
    }
    r->n_img = n_img;
    r->max_tokens = 1 + (int32_t)(rnd(s) % 24);
}

static void free_req(req *r)
{
    free(r->px[0]);
    free(r->px[1]);
}

static int submit(gs_engine *e, req *r, rec *out, unsigned flags)
{
    memset(out, 0, sizeof *out);
    gs_engine_job j = {0};
    j.prompt = r->prompt;
    j.n_prompt = r->n;
    j.images = r->eimg;
    j.n_images = r->n_img;
    j.sampling = gs_sampling_defaults();
    j.max_tokens = r->max_tokens;
    j.flags = flags;
    j.on_event = on_ev;
    j.user = out;
    gs_diag d;
    int rc = gs_engine_submit(e, &j, &out->id, &d);
    if (rc)
        fprintf(stderr, "submit: %s\n", d.msg);
    return rc;
}

/* 1 when r's record holds exactly the reference continuation. */
static int matches_ref(const req *r, const rec *o)
{
    int32_t want[MAXT];
    if (fake_ref_generate(r->prompt, r->n, r->img, r->n_img, r->max_tokens, want))
        return 0;
    if (!o->finished || o->reason != GS_FINISH_LENGTH || o->n != r->max_tokens || o->after_finish) {
        fprintf(stderr, "  job %lld: finished %d reason %d n %d want %d\n", (long long)o->id,
                o->finished, o->reason, o->n, r->max_tokens);
        return 0;
    }
    for (int32_t i = 0; i < o->n; i++) {
        if (o->toks[i] != want[i]) {
            fprintf(stderr, "  job %lld: token %d is %d, reference %d\n", (long long)o->id, i,
                    o->toks[i], want[i]);
            return 0;
        }
    }
    return 1;
}

static int pool_is_full(gs_engine *e)
{
    gs_engine_stats st;
    gs_engine_get_stats(e, &st);
    return st.n_free_pages == st.n_pages && st.n_running == 0 && st.n_waiting == 0;
}

static void test_solo_matches_reference(void)
{
    uint64_t s = 11;
    for (int n_img = 0; n_img <= 2; n_img++) {
        gs_engine *e = mk_engine(64, 4, 512, 8, 0);
        GS_ASSERT(e);
        req r;
        rec o;
        make_req(&r, &s, n_img, 0, 0);
        r.max_tokens = 20;
        GS_ASSERT_OK(submit(e, &r, &o, GS_JOB_IGNORE_EOS));
        GS_ASSERT(run_all(e) > 0);
        GS_ASSERT(matches_ref(&r, &o));
        GS_ASSERT_EQ(o.usage.prompt_tokens, r.n);
        GS_ASSERT_EQ(o.usage.completion_tokens, 20);
        GS_ASSERT_EQ(o.text_len, 40); /* two letters a token */
        GS_ASSERT(o.tm.ttft_ns > 0 && o.tm.decode_ns > 0);
        GS_ASSERT(pool_is_full(e));
        free_req(&r);
        gs_engine_free(e);
    }
}

/* N concurrent requests (0/1/2 images, varied lengths), small token budget
 * (chunked prefill through images), small pages: each equals the
 * reference, i.e. what it produces alone. */
static void invariance(int32_t n_req, int32_t n_pages, int32_t budget, int expect_preempt)
{
    uint64_t s = 1234 + (uint64_t)n_pages;
    gs_engine *e = mk_engine(n_pages, 4, budget, 32, 0);
    GS_ASSERT(e);
    req *r = calloc((size_t)n_req, sizeof *r);
    rec *o = calloc((size_t)n_req, sizeof *o);
    for (int32_t i = 0; i < n_req; i++) {
        make_req(&r[i], &s, i % 3, (i % 2) ? 10 : 0, (i % 4 == 1) ? 77 : 0);
        GS_ASSERT_OK(submit(e, &r[i], &o[i], GS_JOB_IGNORE_EOS));
    }
    int steps = run_all(e);
    GS_ASSERT(steps > 0);
    int ok = 1;
    for (int32_t i = 0; i < n_req; i++)
        ok &= matches_ref(&r[i], &o[i]);
    GS_ASSERT(ok);
    gs_engine_stats st;
    gs_engine_get_stats(e, &st);
    fprintf(stderr,
            "  %d requests, %d pages: %d steps, %lld preemptions, hit %lld/%lld, "
            "%lld images encoded\n",
            n_req, n_pages, steps, (long long)st.n_preemptions, (long long)st.prefix_hit_tokens,
            (long long)st.prefix_query_tokens, (long long)st.n_images_encoded);
    if (expect_preempt)
        GS_ASSERT(st.n_preemptions > 0);
    GS_ASSERT(pool_is_full(e));
    for (int32_t i = 0; i < n_req; i++)
        free_req(&r[i]);
    free(r);
    free(o);
    gs_engine_free(e);
}

static void test_batching_invariance(void)
{
    invariance(32, 400, 48, 0);
}

static void test_preemption_identical(void)
{
    invariance(32, 24, 64, 1);
}

/* Same system prompt and image: the second request shares the first's
 * pages (refcount 2) and never encodes the image. */
static void test_shared_prefix(void)
{
    uint64_t s = 5;
    gs_engine *e = mk_engine(128, 4, 512, 8, 0);
    req a, b;
    rec oa, ob;
    make_req(&a, &s, 1, 16, 99);
    for (int i = 0; i < 8; i++) /* text after the image, so the image is in full pages */
        a.prompt[a.n++] = 30 + i;
    b = a; /* the same tokens but the last */
    b.px[0] = NULL;
    b.px[1] = NULL;
    b.n -= 1;
    b.prompt[b.n++] = 3;
    b.prompt[b.n++] = 4;
    a.max_tokens = b.max_tokens = 12;
    GS_ASSERT_OK(submit(e, &a, &oa, GS_JOB_IGNORE_EOS));
    GS_ASSERT_OK(gs_engine_step(e, 0)); /* a's prefill; its full pages cached */
    GS_ASSERT_OK(submit(e, &b, &ob, GS_JOB_IGNORE_EOS));
    GS_ASSERT_OK(gs_engine_step(e, 1));
    gs_engine_stats st;
    gs_engine_get_stats(e, &st);
    int32_t shared = (a.n - 1) / 4 * 4;
    GS_ASSERT_EQ(st.prefix_hit_tokens, shared);
    GS_ASSERT_EQ(st.n_images_encoded, 1);
    /* Pages in use: a's (prompt + 1 decoded) + b's, minus the shared. */
    int32_t used = st.n_pages - st.n_free_pages;
    GS_ASSERT_EQ(used, (a.n + 1 + 3) / 4 + (b.n + 3) / 4 - shared / 4);
    GS_ASSERT(run_all(e) >= 0);
    GS_ASSERT(matches_ref(&a, &oa));
    GS_ASSERT(matches_ref(&b, &ob));
    GS_ASSERT_EQ(ob.usage.cached_prompt_tokens, shared);
    GS_ASSERT_EQ(oa.usage.cached_prompt_tokens, 0);
    gs_engine_get_stats(e, &st);
    GS_ASSERT(st.prefix_hit_rate > 0.3);

    /* The very same text request twice, 12 tokens = 3 full pages: the
     * second finds every token; its last one is recomputed. */
    req c;
    rec oc1, oc2;
    memset(&c, 0, sizeof c);
    for (int i = 0; i < 12; i++)
        c.prompt[c.n++] = 100 + i;
    c.max_tokens = 6;
    GS_ASSERT_OK(submit(e, &c, &oc1, GS_JOB_IGNORE_EOS));
    GS_ASSERT(run_all(e) >= 0);
    GS_ASSERT_OK(submit(e, &c, &oc2, GS_JOB_IGNORE_EOS));
    GS_ASSERT(run_all(e) >= 0);
    GS_ASSERT_EQ(oc2.usage.cached_prompt_tokens, 11);
    GS_ASSERT(matches_ref(&c, &oc1));
    GS_ASSERT(matches_ref(&c, &oc2));
    GS_ASSERT(pool_is_full(e));
    free_req(&a);
    gs_engine_free(e);
}

/* Another question right after the same image: the image's last tokens
 * share a page with new text, so the prefix cache cannot cover it; the
 * encoder cache does. */
static void encoder_cache_case(unsigned flags, int together, int expect_encoded, int expect_hits)
{
    uint64_t s = 31;
    req a, b;
    for (;;) { /* an image that ends inside a page */
        make_req(&a, &s, 1, 0, 0);
        int32_t end = 0;
        for (int32_t i = 0; i < a.n; i++)
            if (a.prompt[i] == FAKE_IMAGE_TOKEN)
                end = i + 1;
        if (end % 4 != 0 && end < a.n) {
            b = a;
            b.px[0] = NULL;
            b.prompt[end] = (a.prompt[end] + 1) % 280;
            break;
        }
        free_req(&a);
    }
    gs_engine *e = mk_engine(64, 4, 512, 8, flags);
    rec oa, ob;
    GS_ASSERT_OK(submit(e, &a, &oa, GS_JOB_IGNORE_EOS));
    if (!together)
        GS_ASSERT(run_all(e) > 0);
    GS_ASSERT_OK(submit(e, &b, &ob, GS_JOB_IGNORE_EOS));
    GS_ASSERT(run_all(e) > 0);
    GS_ASSERT(matches_ref(&a, &oa));
    GS_ASSERT(matches_ref(&b, &ob));
    gs_engine_stats st;
    gs_engine_get_stats(e, &st);
    GS_ASSERT_EQ(st.n_images_encoded, expect_encoded);
    GS_ASSERT_EQ(st.n_images_cache_hits, expect_hits);
    GS_ASSERT(pool_is_full(e));
    gs_engine_reset_caches(e);
    gs_engine_free(e);
    free_req(&a);
}

static void test_encoder_cache(void)
{
    encoder_cache_case(0, 0, 1, 1);
    encoder_cache_case(GS_ENGINE_NO_ENCODER_CACHE, 0, 2, 0);
    encoder_cache_case(0, 1, 2, 0); /* same step: both encoded, one kept */
}

static void test_cancel_returns_pages(void)
{
    uint64_t s = 9;
    gs_engine *e = mk_engine(200, 4, 32, 8, 0);
    req r[6];
    rec o[6];
    for (int i = 0; i < 6; i++) {
        make_req(&r[i], &s, i % 3, 0, 0);
        r[i].max_tokens = 100;
        GS_ASSERT_OK(submit(e, &r[i], &o[i], GS_JOB_IGNORE_EOS));
    }
    for (int k = 0; k < 8; k++)
        GS_ASSERT_OK(gs_engine_step(e, (uint64_t)k));
    gs_engine_stats st;
    gs_engine_get_stats(e, &st);
    GS_ASSERT(st.n_free_pages < st.n_pages);
    for (int i = 0; i < 6; i++) {
        GS_ASSERT_OK(gs_engine_cancel(e, o[i].id));
        GS_ASSERT(o[i].finished);
        GS_ASSERT_EQ(o[i].reason, GS_FINISH_CANCELLED);
        GS_ASSERT_EQ(gs_engine_cancel(e, o[i].id), GS_ENOENT);
    }
    GS_ASSERT(pool_is_full(e));
    GS_ASSERT(!gs_engine_busy(e));
    GS_ASSERT_EQ(gs_engine_cancel(e, 12345), GS_ENOENT);
    for (int i = 0; i < 6; i++) {
        GS_ASSERT(o[i].n > 0 && o[i].n < 100); /* mid-stream */
        GS_ASSERT_EQ(o[i].after_finish, 0);
        free_req(&r[i]);
    }
    gs_engine_free(e);
}

static void test_random_ops(void)
{
    enum { SLOTS = 16 };
    uint64_t s = 777;
    gs_engine *e = mk_engine(40, 4, 40, 8, 0);
    req r[SLOTS];
    rec o[SLOTS];
    int live[SLOTS] = {0}, n_ok = 0, n_cancel = 0;
    for (int op = 0; op < 500; op++) {
        int k = (int)(rnd(&s) % SLOTS), what = (int)(rnd(&s) % 10);
        if (live[k] && o[k].finished) { /* collect a finished job */
            GS_ASSERT(matches_ref(&r[k], &o[k]));
            free_req(&r[k]);
            live[k] = 0;
            n_ok++;
        }
        if (what < 3 && !live[k]) {
            make_req(&r[k], &s, (int)(rnd(&s) % 3), (rnd(&s) % 2) ? 8 : 0, (rnd(&s) % 2) ? 5 : 0);
            GS_ASSERT_OK(submit(e, &r[k], &o[k], GS_JOB_IGNORE_EOS));
            live[k] = 1;
        } else if (what < 4 && live[k] && !o[k].finished) {
            GS_ASSERT_OK(gs_engine_cancel(e, o[k].id));
            GS_ASSERT_EQ(o[k].reason, GS_FINISH_CANCELLED);
            free_req(&r[k]);
            live[k] = 0;
            n_cancel++;
        } else {
            GS_ASSERT_OK(gs_engine_step(e, (uint64_t)op));
        }
    }
    GS_ASSERT(run_all(e) >= 0);
    for (int k = 0; k < SLOTS; k++) {
        if (live[k]) {
            GS_ASSERT(matches_ref(&r[k], &o[k]));
            free_req(&r[k]);
            n_ok++;
        }
    }
    gs_engine_stats st;
    gs_engine_get_stats(e, &st);
    fprintf(stderr, "  %d finished, %d cancelled, %lld preemptions, hit rate %.2f\n", n_ok,
            n_cancel, (long long)st.n_preemptions, st.prefix_hit_rate);
    GS_ASSERT(pool_is_full(e));
    GS_ASSERT(n_ok > 20 && n_cancel > 5);
    gs_engine_free(e);
}

static void test_stops_and_text(void)
{
    uint64_t s = 21;
    gs_engine *e = mk_engine(64, 4, 512, 8, 0);
    req r;
    make_req(&r, &s, 1, 0, 0);
    int32_t want[30];
    GS_ASSERT_OK(fake_ref_generate(r.prompt, r.n, r.img, r.n_img, 30, want));

    /* A stop id: the stop token is reported, then the job ends. */
    rec o;
    gs_engine_job j = {0};
    j.prompt = r.prompt;
    j.n_prompt = r.n;
    j.images = r.eimg;
    j.n_images = r.n_img;
    j.sampling = gs_sampling_defaults();
    j.max_tokens = 30;
    j.flags = GS_JOB_IGNORE_EOS;
    j.stop_ids = &want[4];
    j.n_stop_ids = 1;
    j.on_event = on_ev;
    j.user = &o;
    memset(&o, 0, sizeof o);
    GS_ASSERT_OK(gs_engine_submit(e, &j, &o.id, NULL));
    GS_ASSERT(run_all(e) > 0);
    int32_t first = 0;
    while (want[first] != want[4])
        first++;
    GS_ASSERT_EQ(o.reason, GS_FINISH_STOP);
    GS_ASSERT_EQ(o.n, first + 1);
    GS_ASSERT_EQ(o.text_len, (size_t)(2 * first)); /* the stop token has no text */

    /* A stop string: the text of tokens 2 and 3; the text ends before it. */
    char stop[8];
    int32_t t2 = want[2], t3 = want[3];
    snprintf(stop, sizeof stop, "%c%c%c%c", 'a' + t2 % 26, 'a' + (t2 / 26) % 26, 'a' + t3 % 26,
             'a' + (t3 / 26) % 26);
    const char *stops[1] = {stop};
    j.stop_ids = NULL;
    j.n_stop_ids = 0;
    j.stop_strings = stops;
    j.n_stop_strings = 1;
    memset(&o, 0, sizeof o);
    GS_ASSERT_OK(gs_engine_submit(e, &j, &o.id, NULL));
    GS_ASSERT(run_all(e) > 0);
    GS_ASSERT_EQ(o.reason, GS_FINISH_STOP);
    o.text[o.text_len] = 0;
    GS_ASSERT(strstr(o.text, stop) == NULL);
    GS_ASSERT(o.text_len <= 4);
    GS_ASSERT(o.n <= 4);

    /* max_tokens, and the context limit. */
    j.n_stop_strings = 0;
    j.max_tokens = 3;
    memset(&o, 0, sizeof o);
    GS_ASSERT_OK(gs_engine_submit(e, &j, &o.id, NULL));
    GS_ASSERT(run_all(e) > 0);
    GS_ASSERT_EQ(o.reason, GS_FINISH_LENGTH);
    GS_ASSERT_EQ(o.n, 3);
    gs_engine_free(e);

    gs_engine_params p = {.model = g_m, .n_pages = 64, .page_size = 4, .max_model_len = r.n + 5};
    GS_ASSERT_OK(gs_engine_new(&p, &e, NULL));
    j.max_tokens = 0;
    memset(&o, 0, sizeof o);
    GS_ASSERT_OK(gs_engine_submit(e, &j, &o.id, NULL));
    GS_ASSERT(run_all(e) > 0);
    GS_ASSERT_EQ(o.reason, GS_FINISH_LENGTH);
    GS_ASSERT_EQ(o.n, 5);
    GS_ASSERT_EQ(o.text_len, 0); /* no detokenizer */
    gs_engine_free(e);
    free_req(&r);
}

/* Seeded sampling: the same draws alone and in a batch. */
static void test_seeded_sampling(void)
{
    uint64_t s = 3;
    req r[8];
    rec solo[8], batch[8];
    for (int i = 0; i < 8; i++)
        make_req(&r[i], &s, i % 3, 0, 0);
    for (int pass = 0; pass < 2; pass++) {
        gs_engine *e = mk_engine(256, 4, 64, 8, 0);
        for (int i = 0; i < 8; i++) {
            rec *o = pass ? &batch[i] : &solo[i];
            memset(o, 0, sizeof *o);
            gs_engine_job j = {0};
            j.prompt = r[i].prompt;
            j.n_prompt = r[i].n;
            j.images = r[i].eimg;
            j.n_images = r[i].n_img;
            j.sampling = gs_sampling_defaults();
            j.sampling.temperature = 1.0f;
            j.sampling.top_k = 50;
            j.sampling.seed = 100 + (uint64_t)i;
            j.max_tokens = 16;
            j.flags = GS_JOB_IGNORE_EOS;
            j.on_event = on_ev;
            j.user = o;
            GS_ASSERT_OK(gs_engine_submit(e, &j, &o->id, NULL));
            if (!pass)
                GS_ASSERT(run_all(e) > 0);
        }
        GS_ASSERT(run_all(e) >= 0);
        gs_engine_free(e);
    }
    for (int i = 0; i < 8; i++) {
        GS_ASSERT_EQ(solo[i].n, batch[i].n);
        for (int32_t k = 0; k < solo[i].n; k++)
            GS_ASSERT_EQ(solo[i].toks[k], batch[i].toks[k]);
        free_req(&r[i]);
    }
}

static void test_bad_jobs(void)
{
    uint64_t s = 1;
    gs_engine *e = mk_engine(16, 4, 64, 8, 0);
    req r;
    make_req(&r, &s, 1, 0, 0);
    rec o = {0};
    gs_engine_job ok = {0};
    ok.prompt = r.prompt;
    ok.n_prompt = r.n;
    ok.images = r.eimg;
    ok.n_images = 1;
    ok.sampling = gs_sampling_defaults();
    ok.on_event = on_ev;
    ok.user = &o;
    int64_t id = 0;
    gs_diag d;
    gs_engine_job j = ok;
    j.on_event = NULL;
    GS_ASSERT_EQ(gs_engine_submit(e, &j, &id, &d), GS_EINVAL);
    j = ok;
    j.n_prompt = 0;
    GS_ASSERT_EQ(gs_engine_submit(e, &j, &id, &d), GS_EINVAL);
    j = ok;
    int32_t bad_ids[3] = {1, FAKE_VOCAB, 2};
    j.prompt = bad_ids;
    j.n_prompt = 3;
    j.n_images = 0;
    GS_ASSERT_EQ(gs_engine_submit(e, &j, &id, &d), GS_EINVAL);
    GS_ASSERT(strstr(d.msg, "prompt[1]") != NULL);
    j = ok;
    j.n_images = 0; /* image tokens without an image */
    GS_ASSERT_EQ(gs_engine_submit(e, &j, &id, &d), GS_EINVAL);
    j = ok;
    gs_engine_image im = r.eimg[0];
    im.grid[1] = 3; /* not a multiple of the merge size */
    j.images = &im;
    GS_ASSERT_EQ(gs_engine_submit(e, &j, &id, &d), GS_EINVAL);
    im = r.eimg[0];
    im.n_patches += 4;
    GS_ASSERT_EQ(gs_engine_submit(e, &j, &id, &d), GS_EINVAL);
    im = r.eimg[0];
    im.pixels = NULL;
    GS_ASSERT_EQ(gs_engine_submit(e, &j, &id, &d), GS_EINVAL);
    im = r.eimg[0];
    im.grid[2] += 2; /* more image tokens than the prompt has */
    im.n_patches = (int64_t)im.grid[0] * im.grid[1] * im.grid[2];
    GS_ASSERT_EQ(gs_engine_submit(e, &j, &id, &d), GS_EINVAL);
    j = ok;
    j.sampling.top_p = 0;
    GS_ASSERT_EQ(gs_engine_submit(e, &j, &id, &d), GS_EINVAL);
    j = ok;
    const char *nullstop[1] = {NULL};
    j.stop_strings = nullstop;
    j.n_stop_strings = 1;
    GS_ASSERT_EQ(gs_engine_submit(e, &j, &id, &d), GS_EINVAL);
    j = ok;
    j.n_stop_ids = -1;
    GS_ASSERT_EQ(gs_engine_submit(e, &j, &id, &d), GS_EINVAL);
    /* Longer than the KV cache (15 pages of 4). */
    static int32_t long_p[100];
    j = ok;
    j.prompt = long_p;
    j.n_prompt = 100;
    j.n_images = 0;
    GS_ASSERT_EQ(gs_engine_submit(e, &j, &id, &d), GS_ECONTEXT);
    GS_ASSERT_EQ(gs_engine_submit(e, NULL, &id, &d), GS_EINVAL);
    GS_ASSERT_EQ(o.n_events, 0);
    GS_ASSERT(!gs_engine_busy(e));
    GS_ASSERT(pool_is_full(e));
    gs_engine_free(e);

    gs_engine_params p = {0};
    GS_ASSERT_EQ(gs_engine_new(&p, &e, &d), GS_EINVAL);
    p.model = g_m;
    p.page_size = -1;
    GS_ASSERT_EQ(gs_engine_new(&p, &e, &d), GS_EINVAL);
    p.page_size = 4;
    p.n_pages = 1;
    GS_ASSERT_EQ(gs_engine_new(&p, &e, &d), GS_EINVAL);
    p.n_pages = 0;
    p.kv_bytes = 10; /* not even two pages */
    GS_ASSERT_EQ(gs_engine_new(&p, &e, &d), GS_EINVAL);
    p.kv_bytes = 0; /* a fraction of the fake's 16 MB, capped by usefulness */
    p.max_seqs = 2;
    p.max_model_len = 64;
    GS_ASSERT_OK(gs_engine_new(&p, &e, &d));
    gs_engine_stats st;
    gs_engine_get_stats(e, &st);
    GS_ASSERT_EQ(st.n_pages, 2 * 16);
    gs_engine_free(e);
    gs_engine_free(NULL);
    free_req(&r);
}

static void test_device_errors(void)
{
    uint64_t s = 8;
    gs_engine *e = mk_engine(128, 4, 512, 8, 0);
    req r[3];
    rec o[3];
    for (int i = 0; i < 3; i++) {
        make_req(&r[i], &s, i, 0, 0); /* 0, 1, 2 images */
        GS_ASSERT_OK(submit(e, &r[i], &o[i], GS_JOB_IGNORE_EOS));
    }
    fake_model_fail(g_m, 1, 0);
    GS_ASSERT_EQ(gs_engine_step(e, 0), GS_EDEVICE);
    fake_model_fail(g_m, 0, 0);
    GS_ASSERT(o[1].finished && o[1].reason == GS_FINISH_ERROR && o[1].err == GS_EDEVICE);
    GS_ASSERT(o[2].finished && o[2].reason == GS_FINISH_ERROR);
    GS_ASSERT(!o[0].finished); /* not involved: runs on */
    GS_ASSERT(run_all(e) > 0);
    GS_ASSERT(matches_ref(&r[0], &o[0]));

    GS_ASSERT_OK(submit(e, &r[1], &o[1], GS_JOB_IGNORE_EOS));
    GS_ASSERT_OK(submit(e, &r[0], &o[0], GS_JOB_IGNORE_EOS));
    fake_model_fail(g_m, 0, 1);
    GS_ASSERT_EQ(gs_engine_step(e, 0), GS_EDEVICE);
    fake_model_fail(g_m, 0, 0);
    GS_ASSERT(o[0].reason == GS_FINISH_ERROR && o[1].reason == GS_FINISH_ERROR);
    GS_ASSERT(pool_is_full(e));
    GS_ASSERT(!gs_engine_busy(e));
    for (int i = 0; i < 3; i++)
        free_req(&r[i]);
    gs_engine_free(e);
}

int main(void)
{
    gs_log_set_level(GS_LOG_WARN);
    g_m = fake_model_new();
    GS_RUN(test_solo_matches_reference);
    GS_RUN(test_batching_invariance);
    GS_RUN(test_preemption_identical);
    GS_RUN(test_shared_prefix);
    GS_RUN(test_encoder_cache);
    GS_RUN(test_cancel_returns_pages);
    GS_RUN(test_random_ops);
    GS_RUN(test_stops_and_text);
    GS_RUN(test_seeded_sampling);
    GS_RUN(test_bad_jobs);
    GS_RUN(test_device_errors);
    fake_model_free(g_m);
    return gs_test_summary();
}
