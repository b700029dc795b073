/* bench_engine.c - engine throughput and latency on one machine, no HTTP:
 *
 *   1. closed loop at concurrency C (1, 4, 16, 64 by default): C requests
 *      in flight, a new one submitted as soon as one finishes, until
 *      max(2C, 8) are done. Prompts are a mix of text-only, one-image and
 *      two-image requests, each unique (random ids, random pixels, own
 *      cache salt: no prefix sharing). Reports output tokens/s, mean and
 *      p50 TTFT, steps and mean sequences per step.
 *   2. a repeated image: TTFT of a request with a large image when the
 *      prefix cache is cold, then of another question about the same
 *      image (warm). Median of several runs; the speedup is cold / warm.
 *
 * Usage: bench_engine [--model DIR] [--threads N] [--levels 1,4,16,64]
 *        [--max-tokens N] [--page-size N] [--budget N] [--kv-pages N]
 *        [--weights-f32 0|1]  (CPU: convert 16-bit weights to F32 at load)
 *        [--weights bf16|int8|int4|auto]  (weight format; default the folder's)
 *        [--dummy-weights 0|1]  (random weights of the folder's shapes)
 * The default model is the tiny fixture model of the source tree. Token
 * ids and sizes come from the model folder; nothing is model-specific. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "worker/engine/engine.h"
#include "kernels/kernels.h"

#ifndef GS_FIXTURES_DIR
#define GS_FIXTURES_DIR "tests/fixtures"
#endif

typedef struct {
    int finished;
    int32_t n_tokens;
    uint64_t ttft_ns;
} req_state;

typedef struct {
    int32_t *ids;
    int32_t n;
    float *px;
    gs_engine_image img[2];
    int32_t n_img;
} prompt;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t rnd(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static int on_ev(void *user, const gs_engine_event *ev)
{
    req_state *r = user;
    r->n_tokens += ev->n_ids;
    if (ev->timings.ttft_ns)
        r->ttft_ns = ev->timings.ttft_ns;
    if (ev->finish)
        r->finished = 1;
    return 0;
}

/* A text id that is none of the configured special ids. */
static int32_t text_id(const gs_model_config *c, uint64_t *s)
{
    for (;;) {
        int32_t id = (int32_t)(rnd(s) % (uint64_t)c->text.vocab_size);
        if (id != c->image_token_id && id != c->video_token_id && id != c->image_start_token_id &&
            id != c->image_end_token_id && id != c->video_start_token_id &&
            id != c->video_end_token_id)
            return id;
    }
}

/* n_text text ids around n_img images of grid [1, g, g]. pixel_seed 0:
 * random pixels, else pixels from that seed (same seed, same image). */
static int make_prompt(const gs_model_config *c, prompt *p, uint64_t *s, int n_text, int n_img,
                       int32_t g, uint64_t pixel_seed)
{
    const int32_t mm = c->vision.spatial_merge_size * c->vision.spatial_merge_size;
    const int64_t pd = (int64_t)c->vision.in_channels * c->vision.temporal_patch_size *
                       c->vision.patch_size * c->vision.patch_size;
    const int64_t np = (int64_t)g * g, per = np / mm;
    memset(p, 0, sizeof *p);
    p->ids = malloc(sizeof *p->ids * (size_t)(n_text + n_img * (per + 2) + 2));
    p->px = n_img ? malloc(sizeof(float) * (size_t)(np * pd * n_img)) : NULL;
    if (!p->ids || (n_img && !p->px))
        return GS_ENOMEM;
    uint64_t ps = pixel_seed ? pixel_seed : rnd(s) + 1;
    for (int64_t i = 0; i < np * pd * n_img; i++)
        p->px[i] = (float)(rnd(&ps) % 4000) / 1000.0f - 1.8f;
    int half = n_text / 2;
    for (int i = 0; i < half; i++)
        p->ids[p->n++] = text_id(c, s);
    for (int k = 0; k < n_img; k++) {
        p->ids[p->n++] = c->image_start_token_id >= 0 ? c->image_start_token_id : text_id(c, s);
        for (int64_t i = 0; i < per; i++)
            p->ids[p->n++] = c->image_token_id;
        p->ids[p->n++] = c->image_end_token_id >= 0 ? c->image_end_token_id : text_id(c, s);
        gs_engine_image im = {p->px + k * np * pd, np, {1, g, g}, {0}, (int32_t)pd, NULL, NULL};
        p->img[k] = im;
    }
    for (int i = half; i < n_text; i++)
        p->ids[p->n++] = text_id(c, s);
    p->n_img = n_img;
    return 0;
}

static void free_prompt(prompt *p)
{
    free(p->ids);
    free(p->px);
}

static int submit(gs_engine *e, const prompt *p, int32_t max_tokens, uint64_t salt, req_state *r)
{
    memset(r, 0, sizeof *r);
    gs_engine_job j = {0};
    j.prompt = p->ids;
    j.n_prompt = p->n;
    j.images = p->img;
    j.n_images = p->n_img;
    j.sampling = gs_sampling_defaults();
    j.max_tokens = max_tokens;
    j.flags = GS_JOB_IGNORE_EOS;
    j.cache_salt = salt;
    j.on_event = on_ev;
    j.user = r;
    int64_t id;
    gs_diag d;
    int rc = gs_engine_submit(e, &j, &id, &d);
    if (rc)
        fprintf(stderr, "submit: %s\n", d.msg);
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Closed loop at concurrency conc; prints one table row; returns tok/s. */
static double run_level(gs_engine *e, const gs_model_config *c, int conc, int32_t max_tokens,
                        uint64_t *seed)
{
    int total = conc * 2 > 8 ? conc * 2 : 8, next = 0, done = 0;
    req_state *rs = calloc((size_t)total, sizeof *rs);
    prompt *ps = calloc((size_t)total, sizeof *ps);
    uint64_t *ttft = calloc((size_t)total, sizeof *ttft);
    for (int i = 0; i < total; i++)
        make_prompt(c, &ps[i], seed, 24 + (int)(rnd(seed) % 16), i % 3, 12, 0);
    gs_engine_stats s0, s1;
    gs_engine_get_stats(e, &s0);
    uint64_t t0 = now_ns();
    while (done < total) {
        while (next < total && next - done < conc) {
            if (submit(e, &ps[next], max_tokens, (uint64_t)next + 1 + *seed, &rs[next]))
                return -1;
            next++;
        }
        if (gs_engine_step(e, now_ns()))
            return -1;
        done = 0;
        for (int i = 0; i < next; i++)
            done += rs[i].finished;
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    gs_engine_get_stats(e, &s1);
    int64_t toks = 0;
    double mean = 0;
    for (int i = 0; i < total; i++) {
        toks += rs[i].n_tokens;
        ttft[i] = rs[i].ttft_ns;
        mean += (double)rs[i].ttft_ns / 1e6 / total;
    }
    qsort(ttft, (size_t)total, sizeof *ttft, cmp_u64);
    int64_t steps = s1.n_steps - s0.n_steps;
    double tps = (double)toks / secs;
    printf("| %11d | %8d | %9.0f | %13.1f | %12.1f | %6lld | %10.1f |\n", conc, total, tps, mean,
           (double)ttft[total / 2] / 1e6, (long long)steps,
           steps ? (double)(s1.n_computed_tokens - s0.n_computed_tokens) / (double)steps : 0);
    for (int i = 0; i < total; i++)
        free_prompt(&ps[i]);
    free(rs);
    free(ps);
    free(ttft);
    return tps;
}

/* TTFT of one request alone (run to its first token, then to its end). */
static uint64_t ttft_of(gs_engine *e, const prompt *p)
{
    req_state r;
    if (submit(e, p, 4, 0, &r))
        return 0;
    while (gs_engine_busy(e))
        if (gs_engine_step(e, now_ns()))
            return 0;
    return r.ttft_ns;
}

/* Median cold and warm TTFT: a is run on an empty prefix cache, then b.
 * follow_up: b = a + 24 more tokens (the next turn of a chat: every full
 * page of a, the image among them, is a hit); else b shares a's first
 * a.n - 8 tokens (another question right after the image, whose last
 * tokens then sit in a page that is not full: the image is encoded
 * again). */
static void repeated_image(gs_engine *e, const gs_model_config *c, int32_t grid, int follow_up,
                           uint64_t *seed)
{
    enum { RUNS = 5 };
    uint64_t cold[RUNS], warm[RUNS];
    int32_t n_a = 0, n_b = 0, hit = 0;
    for (int k = 0; k < RUNS; k++) {
        prompt a, b;
        uint64_t img_seed = 1000 + (uint64_t)k;
        make_prompt(c, &a, seed, 16, 1, grid, img_seed);
        make_prompt(c, &b, seed, 16, 1, grid, img_seed); /* same pixels */
        if (follow_up) {
            int32_t *ids = malloc(sizeof *ids * (size_t)(a.n + 24));
            if (!ids)
                return;
            memcpy(ids, a.ids, sizeof *ids * (size_t)a.n);
            for (int i = 0; i < 24; i++)
                ids[a.n + i] = text_id(c, seed);
            free(b.ids);
            b.ids = ids;
            b.n = a.n + 24;
        } else {
            memcpy(b.ids, a.ids, sizeof *a.ids * (size_t)(a.n - 8));
        }
        n_a = a.n;
        n_b = b.n;
        gs_engine_reset_caches(e);
        gs_engine_stats s0, s1;
        cold[k] = ttft_of(e, &a);
        gs_engine_get_stats(e, &s0);
        warm[k] = ttft_of(e, &b);
        gs_engine_get_stats(e, &s1);
        hit = (int32_t)(s1.prefix_hit_tokens - s0.prefix_hit_tokens);
        free_prompt(&a);
        free_prompt(&b);
    }
    qsort(cold, RUNS, sizeof *cold, cmp_u64);
    qsort(warm, RUNS, sizeof *warm, cmp_u64);
    printf("| %-36s | %6d | %6d | %5d | %12.2f | %12.2f | %6.1fx |\n",
           follow_up ? "follow-up turn (a + 24 tokens)" : "other question right after image", n_a,
           n_b, hit, cold[RUNS / 2] / 1e6, warm[RUNS / 2] / 1e6,
           warm[RUNS / 2] ? (double)cold[RUNS / 2] / (double)warm[RUNS / 2] : 0);
}

int main(int argc, char **argv)
{
    gs_cpu_blas_reexec(argv);
    const char *model_dir = GS_FIXTURES_DIR "/tiny-glm4v", *levels = "1,4,16,64";
    int threads = 0, max_tokens = 64, page = 16, budget = 512, kv_pages = 4096, wf32 = 0;
    int dummy = 0;
    gs_weight_format wfmt = GS_WEIGHTS_ASIS;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "usage: see the top of bench_engine.c\n");
            return 2;
        }
        if (!strcmp(a, "--model"))
            model_dir = v;
        else if (!strcmp(a, "--threads"))
            threads = atoi(v);
        else if (!strcmp(a, "--levels"))
            levels = v;
        else if (!strcmp(a, "--max-tokens"))
            max_tokens = atoi(v);
        else if (!strcmp(a, "--page-size"))
            page = atoi(v);
        else if (!strcmp(a, "--budget"))
            budget = atoi(v);
        else if (!strcmp(a, "--kv-pages"))
            kv_pages = atoi(v);
        else if (!strcmp(a, "--weights-f32"))
            wf32 = atoi(v);
        else if (!strcmp(a, "--dummy-weights"))
            dummy = atoi(v);
        else if (!strcmp(a, "--weights")) {
            if (gs_weight_format_parse(v, &wfmt)) {
                fprintf(stderr, "--weights must be bf16, int8, int4 or auto\n");
                return 2;
            }
        } else {
            fprintf(stderr, "unknown option %s\n", a);
            return 2;
        }
        i++;
    }
    gs_log_set_level(GS_LOG_WARN);
    gs_backend_params bp = {.kind = GS_BACKEND_CPU, .n_threads = threads, .weights_f32 = wf32};
    gs_backend *be = NULL;
    gs_model *m = NULL;
    gs_engine *e = NULL;
    gs_diag d = {0};
    gs_model_params mp = {model_dir, NULL, dummy, 1234, 0, wfmt, 0};
    int rc = gs_backend_new(&bp, &be, &d);
    mp.be = be;
    if (!rc)
        rc = gs_model_load(&mp, &m, &d);
    gs_engine_params ep = {0};
    ep.model = m;
    ep.page_size = page;
    ep.n_pages = kv_pages;
    ep.token_budget = budget;
    ep.max_seqs = 64;
    if (!rc)
        rc = gs_engine_new(&ep, &e, &d);
    if (rc) {
        fprintf(stderr, "bench_engine: %s (%s)\n", d.msg, gs_err_name(rc));
        return 1;
    }
    const gs_model_config *c = gs_model_get_config(m);
    printf("engine benchmark: %s on %s (%d threads, %s weights%s, %.3f GB), page %d, budget %d, "
           "max tokens %d\n\n",
           model_dir, gs_backend_name(be), threads,
           gs_model_weight_format(m) != GS_WEIGHTS_BF16
               ? gs_weight_format_name(gs_model_weight_format(m))
           : wf32 ? "F32"
                  : "16-bit",
           dummy ? " (dummy)" : "", gs_model_weight_bytes(m) / 1e9, page, budget, max_tokens);
    printf("| concurrency | requests | out tok/s | mean TTFT ms | p50 TTFT ms | steps | "
           "tokens/step |\n");
    printf("|-------------|----------|-----------|--------------|-------------|--------|"
           "------------|\n");
    uint64_t seed = 7;
    double first = 0, last = 0;
    int first_c = 0, last_c = 0;
    for (const char *p = levels; *p;) {
        int conc = atoi(p);
        if (conc > 0) {
            double t = run_level(e, c, conc, max_tokens, &seed);
            if (t < 0) {
                fprintf(stderr, "bench_engine: level %d failed\n", conc);
                return 1;
            }
            if (!first_c)
                first = t, first_c = conc;
            last = t, last_c = conc;
        }
        p = strchr(p, ',');
        if (!p)
            break;
        p++;
    }
    if (first_c && last_c != first_c)
        printf("\nthroughput at concurrency %d over concurrency %d: %.1fx\n", last_c, first_c,
               last / first);
    printf("\nrepeated image (grid 1x32x32), TTFT of request a on an empty prefix cache "
           "(cold) and of b after it (warm), median of 5:\n");
    printf("| %-36s | a toks | b toks |  hits | cold TTFT ms | warm TTFT ms | speedup |\n", "b");
    printf("|--------------------------------------|--------|--------|-------|--------------|"
           "--------------|---------|\n");
    repeated_image(e, c, 32, 1, &seed);
    repeated_image(e, c, 32, 0, &seed);
    gs_engine_free(e);
    gs_model_free(m);
    gs_backend_free(be);
    return 0;
}
