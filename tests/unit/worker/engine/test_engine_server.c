/* test_engine_server.c - what a server needs from the engine, over the
 * hash-chain fake model (fake_model.c): event callbacks that cancel,
 * handed-over images released exactly once, cancel by id among many jobs,
 * an abort hook that leaves no trace, finish_all / free that end every
 * job, detokenizer and text errors that end the job, server-class error
 * codes, and the stats snapshot read from another thread. */
#include <pthread.h>
#include <stdatomic.h>

#include "common/log.h"
#include "fake_model.h"
#include "test.h"
#include "worker/engine/engine.h"

#define MAXT 256

typedef struct {
    int64_t id;
    int32_t toks[MAXT];
    int32_t n;
    size_t text_len;
    int n_events, n_final, cancel_after; /* cancel_after > 0: return 1 at that token */
    gs_finish_reason reason;
    int err;
} rec;

static int on_ev(void *user, const gs_engine_event *ev)
{
    rec *r = user;
    r->n_events++;
    for (int32_t i = 0; i < ev->n_ids && r->n < MAXT; i++)
        r->toks[r->n++] = ev->ids[i];
    r->text_len += ev->text_len;
    if (ev->finish) {
        r->n_final++;
        r->reason = ev->finish;
        r->err = ev->error;
        return 1; /* ignored for a final event */
    }
    return r->cancel_after > 0 && r->n >= r->cancel_after;
}

/* Fake detokenizer: one letter a token; push fails with g_dt_fail at the
 * g_dt_fail_at-th call (0: never). */
static int g_dt_fail, g_dt_fail_at, g_dt_calls;
static char g_piece[1];
static int dt_open(void *user, void **st)
{
    (void)user;
    *st = malloc(1);
    return *st ? 0 : GS_ENOMEM;
}
static int dt_push(void *st, int32_t id, const char **t, size_t *n)
{
    (void)st;
    if (g_dt_fail_at && ++g_dt_calls == g_dt_fail_at)
        return g_dt_fail;
    g_piece[0] = (char)('a' + id % 26);
    *t = g_piece;
    *n = 1;
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

/* Abort hook: fires on a pseudo-random 1 in g_abort_every polls (0:
 * never), so that every part of a step gets hit sooner or later. */
static int g_abort_every, g_fired;
static uint64_t g_abort_state;
static int should_abort(void *u)
{
    (void)u;
    if (!g_abort_every)
        return 0;
    g_abort_state = g_abort_state * 6364136223846793005ull + 1442695040888963407ull;
    if ((g_abort_state >> 33) % (uint64_t)g_abort_every)
        return 0;
    g_fired++;
    return 1;
}

static gs_model *g_m;

static gs_engine *mk_engine(int32_t n_pages, int32_t budget, unsigned flags, int with_abort)
{
    gs_engine_params p = {0};
    p.model = g_m;
    p.n_pages = n_pages;
    p.page_size = 4;
    p.token_budget = budget;
    p.max_seqs = 8;
    p.flags = flags;
    p.detok = (gs_engine_detok){NULL, dt_open, dt_push, dt_flush, dt_close};
    p.clock = fake_clock;
    if (with_abort)
        p.should_abort = should_abort;
    gs_engine *e = NULL;
    gs_diag d;
    if (gs_engine_new(&p, &e, &d))
        fprintf(stderr, "engine_new: %s\n", d.msg);
    return e;
}

static uint64_t rnd(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

/* A request with n_img images; pixels owned here unless handed over. */
typedef struct {
    int32_t prompt[160];
    int32_t n;
    float *px[2];
    fake_image img[2];
    gs_engine_image eimg[2];
    int32_t n_img;
    int32_t max_tokens;
    int released[2]; /* calls of release per image */
} req;

static void release_px(void *ctx)
{
    int *count = ctx;
    (*count)++;
}

static void make_req(req *r, uint64_t *s, int n_img, int hand_over)
{
    memset(r, 0, sizeof *r);
    int32_t pre = 3 + (int32_t)(rnd(s) % 9);
    for (int32_t i = 0; i < pre; i++)
        r->prompt[r->n++] = (int32_t)(rnd(s) % 280);
    for (int k = 0; k < n_img; k++) {
        int32_t gh = 2 * (1 + (int32_t)(rnd(s) % 3)), gw = 2 * (1 + (int32_t)(rnd(s) % 3));
        int64_t np = (int64_t)gh * gw;
        r->px[k] = malloc(sizeof(float) * (size_t)np * FAKE_PATCH_DIM);
        for (int64_t i = 0; i < np * FAKE_PATCH_DIM; i++)
            r->px[k][i] = (float)(rnd(s) % 1000) / 250.0f - 2.0f;
        r->img[k] = (fake_image){r->px[k], np, {1, gh, gw}};
        r->eimg[k] = (gs_engine_image){.pixels = r->px[k],
                                       .n_patches = np,
                                       .grid = {1, gh, gw},
                                       .patch_dim = FAKE_PATCH_DIM,
                                       .release = hand_over ? release_px : NULL,
                                       .release_ctx = &r->released[k]};
        r->prompt[r->n++] = FAKE_IMAGE_TOKEN - 1;
        for (int64_t i = 0; i < np / 4; i++)
            r->prompt[r->n++] = FAKE_IMAGE_TOKEN;
        r->prompt[r->n++] = (int32_t)(rnd(s) % 280);
    }
    r->n_img = n_img;
    r->max_tokens = 4 + (int32_t)(rnd(s) % 16);
}

static void free_req(req *r)
{
    free(r->px[0]);
    free(r->px[1]);
}

static int submit(gs_engine *e, req *r, rec *out)
{
    int cancel_after = out->cancel_after;
    memset(out, 0, sizeof *out);
    out->cancel_after = cancel_after;
    gs_engine_job j = {0};
    j.prompt = r->prompt;
    j.n_prompt = r->n;
    j.images = r->eimg;
    j.n_images = r->n_img;
    j.sampling = gs_sampling_defaults();
    j.max_tokens = r->max_tokens;
    j.flags = GS_JOB_IGNORE_EOS;
    j.on_event = on_ev;
    j.user = out;
    gs_diag d;
    int rc = gs_engine_submit(e, &j, &out->id, &d);
    if (rc)
        fprintf(stderr, "submit: %s\n", d.msg);
    return rc;
}

/* Steps until idle; aborted steps (GS_ECANCELED) are retried. Returns the
 * number of aborted steps, or -1 on an error. */
static int run_all(gs_engine *e)
{
    int aborted = 0, steps = 0;
    while (gs_engine_busy(e)) {
        int rc = gs_engine_step(e, g_clock);
        if (rc == GS_ECANCELED)
            aborted++;
        else if (rc != 0 || ++steps > 100000)
            return -1;
        if (aborted > 100000)
            return -1;
    }
    return aborted;
}

static int matches_ref(const req *r, const rec *o)
{
    int32_t want[MAXT];
    if (fake_ref_generate(r->prompt, r->n, r->img, r->n_img, r->max_tokens, want))
        return 0;
    if (o->n_final != 1 || o->reason != GS_FINISH_LENGTH || o->n != r->max_tokens) {
        fprintf(stderr, "  job %lld: finals %d reason %d n %d want %d\n", (long long)o->id,
                o->n_final, o->reason, o->n, r->max_tokens);
        return 0;
    }
    for (int32_t i = 0; i < o->n; i++)
        if (o->toks[i] != want[i])
            return 0;
    return 1;
}

static int pool_is_full(gs_engine *e)
{
    gs_engine_stats st;
    gs_engine_get_stats(e, &st);
    return st.n_free_pages == st.n_pages && st.n_running == 0 && st.n_waiting == 0;
}

/* 1. A callback's nonzero return cancels its job; the others run on. */
static void test_callback_cancels(void)
{
    uint64_t s = 3;
    gs_engine *e = mk_engine(64, 64, 0, 0);
    req r[3];
    rec o[3] = {{0}};
    o[1].cancel_after = 3;
    for (int i = 0; i < 3; i++) {
        make_req(&r[i], &s, i % 2, 0);
        r[i].max_tokens = 12;
        GS_ASSERT_OK(submit(e, &r[i], &o[i]));
    }
    GS_ASSERT(run_all(e) == 0);
    GS_ASSERT(matches_ref(&r[0], &o[0]));
    GS_ASSERT(matches_ref(&r[2], &o[2]));
    GS_ASSERT_EQ(o[1].n, 3);
    GS_ASSERT_EQ(o[1].n_final, 1);
    GS_ASSERT_EQ(o[1].reason, GS_FINISH_CANCELLED);
    GS_ASSERT_EQ(o[1].n_events, 4); /* three tokens, then the final event */
    GS_ASSERT(pool_is_full(e));
    gs_engine_stats st;
    gs_engine_stats_snapshot(e, &st);
    GS_ASSERT_EQ(st.n_finished_cancelled, 1);
    GS_ASSERT_EQ(st.n_finished_length, 2);
    GS_ASSERT_EQ(st.n_jobs_finished, 3);
    for (int i = 0; i < 3; i++)
        free_req(&r[i]);
    gs_engine_free(e);
}

/* 2. Handed-over pixels: released once, right after encoding, results as
 * with copies, also through preemption (a small pool) and the encoder
 * cache; released at once when submit fails or the job is cancelled
 * first. Copied pixels may change after submit. */
static void test_image_handover(void)
{
    for (int pass = 0; pass < 2; pass++) {
        uint64_t s = 21;
        /* pass 1: 14 pages of 4 tokens force preemptions; no encoder cache */
        gs_engine *e =
            pass ? mk_engine(15, 16, GS_ENGINE_NO_ENCODER_CACHE, 0) : mk_engine(128, 64, 0, 0);
        req r[4];
        rec o[4] = {{0}};
        for (int i = 0; i < 4; i++) {
            make_req(&r[i], &s, 1 + i % 2, 1);
            GS_ASSERT_OK(submit(e, &r[i], &o[i]));
        }
        int encoded_seen = 0;
        while (gs_engine_busy(e)) {
            GS_ASSERT_OK(gs_engine_step(e, g_clock));
            for (int i = 0; i < 4; i++)
                for (int k = 0; k < r[i].n_img; k++) {
                    GS_ASSERT(r[i].released[k] <= 1);
                    encoded_seen += r[i].released[k] && !o[i].n_final;
                }
        }
        GS_ASSERT(encoded_seen > 0); /* released before the job ended */
        for (int i = 0; i < 4; i++) {
            GS_ASSERT(matches_ref(&r[i], &o[i]));
            for (int k = 0; k < r[i].n_img; k++)
                GS_ASSERT_EQ(r[i].released[k], 1);
        }
        gs_engine_stats st;
        gs_engine_get_stats(e, &st);
        if (pass)
            GS_ASSERT(st.n_preemptions > 0);
        GS_ASSERT(pool_is_full(e));
        for (int i = 0; i < 4; i++)
            free_req(&r[i]);
        gs_engine_free(e);
    }

    uint64_t s = 5;
    gs_engine *e = mk_engine(64, 64, 0, 0);
    req r;
    rec o = {0};
    /* Submit fails: every handed-over image is released before it returns. */
    make_req(&r, &s, 2, 1);
    r.prompt[0] = FAKE_VOCAB; /* out of range */
    GS_ASSERT_EQ(submit(e, &r, &o), GS_EINVAL);
    GS_ASSERT(r.released[0] == 1 && r.released[1] == 1);
    free_req(&r);
    /* A patch size that disagrees with the model's. */
    make_req(&r, &s, 2, 1);
    r.eimg[1].patch_dim = FAKE_PATCH_DIM * 2;
    gs_engine_job j = {0};
    j.prompt = r.prompt;
    j.n_prompt = r.n;
    j.images = r.eimg;
    j.n_images = 2;
    j.sampling = gs_sampling_defaults();
    j.on_event = on_ev;
    j.user = &o;
    gs_diag d;
    int64_t id;
    GS_ASSERT_EQ(gs_engine_submit(e, &j, &id, &d), GS_EINVAL);
    GS_ASSERT(strstr(d.msg, "images[1]") != NULL);
    GS_ASSERT(r.released[0] == 1 && r.released[1] == 1);
    free_req(&r);
    /* Cancelled before its image was encoded. */
    make_req(&r, &s, 1, 1);
    GS_ASSERT_OK(submit(e, &r, &o));
    GS_ASSERT_EQ(r.released[0], 0);
    GS_ASSERT_OK(gs_engine_cancel(e, o.id));
    GS_ASSERT_EQ(r.released[0], 1);
    GS_ASSERT_EQ(o.reason, GS_FINISH_CANCELLED);
    free_req(&r);
    /* Copied pixels: the caller's buffer may change right after submit. */
    make_req(&r, &s, 1, 0);
    float *keep = malloc(sizeof(float) * (size_t)r.img[0].n_patches * FAKE_PATCH_DIM);
    memcpy(keep, r.px[0], sizeof(float) * (size_t)r.img[0].n_patches * FAKE_PATCH_DIM);
    GS_ASSERT_OK(submit(e, &r, &o));
    memset(r.px[0], 0, sizeof(float) * (size_t)r.img[0].n_patches * FAKE_PATCH_DIM);
    GS_ASSERT(run_all(e) == 0);
    r.img[0].pixels = keep;
    GS_ASSERT(matches_ref(&r, &o));
    GS_ASSERT_EQ(r.released[0], 0);
    free(keep);
    free_req(&r);
    GS_ASSERT(pool_is_full(e));
    gs_engine_free(e);
}

/* 3. Cancel by id among many jobs, in random order. */
static void test_cancel_many(void)
{
    enum { N = 300 };
    uint64_t s = 9;
    gs_engine *e = mk_engine(2048, 256, 0, 0);
    static req r[N];
    static rec o[N];
    for (int i = 0; i < N; i++) {
        make_req(&r[i], &s, 0, 0);
        GS_ASSERT_OK(submit(e, &r[i], &o[i]));
    }
    GS_ASSERT_OK(gs_engine_step(e, g_clock));
    int order[N];
    for (int i = 0; i < N; i++)
        order[i] = i;
    for (int i = N - 1; i > 0; i--) {
        int k = (int)(rnd(&s) % (uint64_t)(i + 1)), t = order[i];
        order[i] = order[k];
        order[k] = t;
    }
    for (int i = 0; i < N; i++) {
        rec *x = &o[order[i]];
        int before = x->n_final;
        int rc = gs_engine_cancel(e, x->id);
        GS_ASSERT_EQ(rc, before ? GS_ENOENT : 0);
        GS_ASSERT_EQ(x->n_final, 1);
        GS_ASSERT_EQ(gs_engine_cancel(e, x->id), GS_ENOENT);
        if (i % 50 == 0 && gs_engine_busy(e))
            GS_ASSERT_OK(gs_engine_step(e, g_clock));
    }
    GS_ASSERT_EQ(gs_engine_cancel(e, 0), GS_ENOENT);
    GS_ASSERT_EQ(gs_engine_cancel(e, 1000000), GS_ENOENT);
    GS_ASSERT(!gs_engine_busy(e));
    GS_ASSERT(pool_is_full(e));
    for (int i = 0; i < N; i++)
        free_req(&r[i]);
    gs_engine_free(e);
}

/* 4. Aborts fired inside steps change nothing: same tokens as without,
 * same pool, whatever part of the step they hit. */
static void test_abort_changes_nothing(void)
{
    int everies[] = {2, 3, 5, 7};
    for (int v = 0; v < 4; v++) {
        for (int pass = 0; pass < 2; pass++) {
            uint64_t s = 77;
            gs_engine *e = pass ? mk_engine(15, 16, 0, 1) : mk_engine(128, 16, 0, 1);
            req r[5];
            rec o[5] = {{0}};
            for (int i = 0; i < 5; i++) {
                make_req(&r[i], &s, i % 3, i % 2);
                GS_ASSERT_OK(submit(e, &r[i], &o[i]));
            }
            gs_engine_stats st0;
            gs_engine_get_stats(e, &st0);
            g_abort_every = everies[v];
            g_fired = 0;
            g_abort_state = (uint64_t)v * 2 + (uint64_t)pass;
            int aborted = run_all(e);
            g_abort_every = 0;
            GS_ASSERT(aborted > 0);
            GS_ASSERT_EQ(aborted, g_fired);
            for (int i = 0; i < 5; i++) {
                GS_ASSERT(matches_ref(&r[i], &o[i]));
                for (int k = 0; k < r[i].n_img; k++)
                    GS_ASSERT(r[i].eimg[k].release == NULL || r[i].released[k] == 1);
            }
            gs_engine_stats st;
            gs_engine_get_stats(e, &st);
            GS_ASSERT_EQ(st.n_free_pages, st0.n_free_pages);
            GS_ASSERT(pool_is_full(e));
            GS_ASSERT_EQ(st.n_finished_error, 0);
            for (int i = 0; i < 5; i++)
                free_req(&r[i]);
            gs_engine_free(e);
        }
    }
}

/* 5. finish_all and free end every job with one final event. */
static void test_finish_all_and_free(void)
{
    uint64_t s = 13;
    gs_engine *e = mk_engine(15, 16, 0, 0);
    req r[6];
    rec o[6] = {{0}};
    for (int i = 0; i < 6; i++) {
        make_req(&r[i], &s, i % 2, 1);
        r[i].max_tokens = 30;
        GS_ASSERT_OK(submit(e, &r[i], &o[i]));
    }
    GS_ASSERT_OK(gs_engine_step(e, g_clock));
    GS_ASSERT_OK(gs_engine_step(e, g_clock));
    gs_engine_stats st;
    gs_engine_get_stats(e, &st);
    GS_ASSERT(st.n_running > 0 && st.n_waiting > 0);
    gs_engine_finish_all(e, GS_ESHUTDOWN);
    for (int i = 0; i < 6; i++) {
        GS_ASSERT_EQ(o[i].n_final, 1);
        GS_ASSERT_EQ(o[i].reason, GS_FINISH_ERROR);
        GS_ASSERT_EQ(o[i].err, GS_ESHUTDOWN);
        for (int k = 0; k < r[i].n_img; k++)
            GS_ASSERT_EQ(r[i].released[k], 1);
    }
    GS_ASSERT(!gs_engine_busy(e));
    GS_ASSERT(pool_is_full(e));
    gs_engine_stats_snapshot(e, &st);
    GS_ASSERT_EQ(st.n_finished_error, 6);
    /* Still usable. */
    make_req(&r[0], &s, 1, 0);
    GS_ASSERT_OK(submit(e, &r[0], &o[0]));
    GS_ASSERT(run_all(e) == 0);
    GS_ASSERT(matches_ref(&r[0], &o[0]));
    /* free with jobs inside: GS_ESHUTDOWN, images released. */
    for (int i = 1; i < 6; i++) {
        free_req(&r[i]);
        make_req(&r[i], &s, 1, 1);
        GS_ASSERT_OK(submit(e, &r[i], &o[i]));
    }
    GS_ASSERT_OK(gs_engine_step(e, g_clock));
    gs_engine_free(e);
    for (int i = 1; i < 6; i++) {
        GS_ASSERT_EQ(o[i].n_final, 1);
        GS_ASSERT_EQ(o[i].err, GS_ESHUTDOWN);
        GS_ASSERT_EQ(r[i].released[0], 1);
    }
    for (int i = 0; i < 6; i++)
        free_req(&r[i]);
}

/* 6 and 7. Detokenizer errors end the job (server-class code); NaN rows
 * are GS_EMODEL; a model fault that returns a 400-class code is reported
 * as a server fault. */
static void test_error_classes(void)
{
    uint64_t s = 17;
    gs_engine *e = mk_engine(64, 64, 0, 0);
    req r[2];
    rec o[2] = {{0}};
    int codes[2] = {GS_ENOMEM, GS_EUTF8}, want[2] = {GS_ENOMEM, GS_EINTERNAL};
    for (int c = 0; c < 2; c++) {
        make_req(&r[0], &s, 0, 0);
        make_req(&r[1], &s, 0, 0);
        r[0].max_tokens = r[1].max_tokens = 10;
        GS_ASSERT_OK(submit(e, &r[0], &o[0]));
        GS_ASSERT_OK(submit(e, &r[1], &o[1]));
        g_dt_fail = codes[c];
        g_dt_calls = 0;
        g_dt_fail_at = 7; /* a push of the 4th step */
        GS_ASSERT(run_all(e) == 0);
        g_dt_fail_at = 0;
        rec *bad = o[0].reason == GS_FINISH_ERROR ? &o[0] : &o[1];
        rec *good = bad == &o[0] ? &o[1] : &o[0];
        GS_ASSERT_EQ(bad->reason, GS_FINISH_ERROR);
        GS_ASSERT_EQ(bad->err, want[c]);
        GS_ASSERT_EQ(bad->n_final, 1);
        GS_ASSERT_EQ(good->reason, GS_FINISH_LENGTH);
        GS_ASSERT_EQ(good->text_len, 10);
        free_req(&r[0]);
        free_req(&r[1]);
    }
    /* NaN logits: GS_EMODEL, and the other job runs on. */
    make_req(&r[0], &s, 0, 0);
    r[0].max_tokens = 6;
    GS_ASSERT_OK(submit(e, &r[0], &o[0]));
    fake_model_fault(g_m, 0, 3);
    GS_ASSERT(run_all(e) == 0);
    fake_model_fault(g_m, 0, 0);
    GS_ASSERT_EQ(o[0].reason, GS_FINISH_ERROR);
    GS_ASSERT_EQ(o[0].err, GS_EMODEL);
    GS_ASSERT(gs_err_http_status(o[0].err) >= 500);
    free_req(&r[0]);
    /* The model reports GS_EINVAL on a batch submit accepted: a server
     * fault, never a 400 for the client. */
    make_req(&r[0], &s, 1, 0);
    GS_ASSERT_OK(submit(e, &r[0], &o[0]));
    fake_model_fault(g_m, GS_EINVAL, 0);
    int rc = gs_engine_step(e, g_clock);
    fake_model_fault(g_m, 0, 0);
    GS_ASSERT_EQ(rc, GS_EINTERNAL);
    GS_ASSERT_EQ(o[0].reason, GS_FINISH_ERROR);
    GS_ASSERT_EQ(o[0].err, GS_EINTERNAL);
    free_req(&r[0]);
    GS_ASSERT(pool_is_full(e));
    gs_engine_stats st;
    gs_engine_get_stats(e, &st);
    GS_ASSERT_EQ(st.n_finished_error, 4);
    gs_engine_free(e);
}

/* 8. The snapshot from another thread while the engine runs; counts by
 * reason, queued tokens and the step time. */
typedef struct {
    gs_engine *e;
    atomic_int stop;
    int64_t reads, bad;
} reader;

static void *read_stats(void *arg)
{
    reader *rd = arg;
    do { /* at least once, however late this thread gets to run */
        gs_engine_stats st;
        gs_engine_stats_snapshot(rd->e, &st);
        rd->bad += st.n_jobs_finished != st.n_finished_stop + st.n_finished_length +
                                             st.n_finished_cancelled + st.n_finished_error;
        rd->reads++;
    } while (!atomic_load(&rd->stop));
    return NULL;
}

static void test_stats_snapshot(void)
{
    uint64_t s = 29;
    gs_engine *e = mk_engine(256, 32, 0, 0);
    reader rd = {e, 0, 0, 0};
    pthread_t th;
    /* Under qemu-user here creating a thread can hang: the snapshot is read
     * from this thread only there. */
    const int threaded = !getenv("GS_TEST_EMULATED");
    if (threaded)
        GS_ASSERT_EQ(pthread_create(&th, NULL, read_stats, &rd), 0);
    enum { N = 40 };
    static req r[N];
    static rec o[N];
    int64_t prompt_total = 0;
    for (int i = 0; i < N; i++) {
        make_req(&r[i], &s, i % 3 == 0, 0);
        o[i].cancel_after = i % 5 == 0 ? 2 : 0;
        GS_ASSERT_OK(submit(e, &r[i], &o[i]));
        prompt_total += r[i].n;
    }
    gs_engine_stats st;
    gs_engine_stats_snapshot(e, &st);
    GS_ASSERT_EQ(st.n_queued_tokens, prompt_total);
    GS_ASSERT_EQ(st.n_waiting, N);
    GS_ASSERT_OK(gs_engine_step(e, g_clock));
    gs_engine_stats_snapshot(e, &st);
    GS_ASSERT(st.n_queued_tokens < prompt_total);
    GS_ASSERT(st.last_step_ns > 0);
    GS_ASSERT(run_all(e) == 0);
    atomic_store(&rd.stop, 1);
    if (threaded) {
        pthread_join(th, NULL);
        GS_ASSERT(rd.reads > 0);
        GS_ASSERT_EQ(rd.bad, 0);
    }
    gs_engine_stats_snapshot(e, &st);
    GS_ASSERT_EQ(st.n_queued_tokens, 0);
    GS_ASSERT_EQ(st.n_finished_cancelled, N / 5);
    GS_ASSERT_EQ(st.n_finished_length, N - N / 5);
    GS_ASSERT_EQ(st.n_jobs_finished, N);
    GS_ASSERT_EQ(st.n_running + st.n_waiting, 0);
    for (int i = 0; i < N; i++)
        free_req(&r[i]);
    gs_engine_free(e);
}

int main(void)
{
    gs_log_set_level(GS_LOG_ERROR);
    g_m = fake_model_new();
    GS_RUN(test_callback_cancels);
    GS_RUN(test_image_handover);
    GS_RUN(test_cancel_many);
    GS_RUN(test_abort_changes_nothing);
    GS_RUN(test_finish_all_and_free);
    GS_RUN(test_error_classes);
    GS_RUN(test_stats_snapshot);
    fake_model_free(g_m);
    return gs_test_summary();
}
