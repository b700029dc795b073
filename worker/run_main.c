/* run_main.c - glmserve-run: one prompt (with images) through the model,
 * the answer streamed to stdout as it is produced.
 *
 *   glmserve-run --model DIR [--image FILE]... --prompt TEXT
 *                [--system TEXT] [--max-tokens N] [--temperature T]
 *                [--top-p P] [--top-k K] [--min-p P] [--repetition-penalty R]
 *                [--seed S] [--no-think] [--threads N] [--backend cpu|cuda]
 *                [--dummy-weights] [--graphs auto|on|off] [--stop STR]...
 *
 * Timings (load, preprocessing, vision, TTFT, prefill and decode tokens/s)
 * go to stderr. Exit status 0 on success, 1 on a runtime error, 2 on bad
 * usage; every error is one line naming what was wrong.
 * Sampling defaults come from generation_config.json, then the flags. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/file.h"
#include "common/log.h"
#include "kernels/kernels.h"
#include "worker/image/decode.h"
#include "worker/image/preprocess.h"
#include "worker/engine/engine.h"
#include "worker/engine/engine_detok.h"
#include "worker/model/model.h"
#include "worker/sampler.h"
#include "worker/tokenizer/chat_template.h"
#include "worker/tokenizer/tokenizer.h"
#include "worker/tokenizer/utf8.h"

#define MAX_IMAGES 16
#define MAX_STOPS 8

typedef struct {
    const char *model, *prompt, *system, *backend;
    const char *images[MAX_IMAGES];
    int n_images;
    const char *stops[MAX_STOPS];
    int n_stops;
    long max_tokens;
    int no_think, threads, dummy;
    int graphs; /* gs_engine_params.graphs: 0 auto, 1 on, -1 off */
    int have_temp, have_top_p, have_top_k, have_rep;
    gs_sampling_params sp;
} options;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: glmserve-run --model DIR [--image FILE]... --prompt TEXT\n"
               "       [--system TEXT] [--max-tokens N] [--temperature T] [--top-p P]\n"
               "       [--top-k K] [--min-p P] [--repetition-penalty R] [--seed S]\n"
               "       [--no-think] [--threads N] [--backend cpu|cuda] [--dummy-weights]\n"
               "       [--graphs auto|on|off] [--stop STR]...\n");
}

static int parse_num(const char *flag, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (!s || errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "glmserve-run: %s: expected a number in [%g, %g], got '%s'\n", flag, lo, hi,
                s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->sp = gs_sampling_defaults();
    o->max_tokens = 512;
    o->backend = "cpu";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x;
#define NEEDV                                                                                      \
    do {                                                                                           \
        if (!v) {                                                                                  \
            fprintf(stderr, "glmserve-run: %s needs a value\n", a);                                \
            return -1;                                                                             \
        }                                                                                          \
        i++;                                                                                       \
    } while (0)
        if (!strcmp(a, "--model")) {
            NEEDV;
            o->model = v;
        } else if (!strcmp(a, "--prompt")) {
            NEEDV;
            o->prompt = v;
        } else if (!strcmp(a, "--system")) {
            NEEDV;
            o->system = v;
        } else if (!strcmp(a, "--backend")) {
            NEEDV;
            o->backend = v;
        } else if (!strcmp(a, "--image")) {
            NEEDV;
            if (o->n_images == MAX_IMAGES) {
                fprintf(stderr, "glmserve-run: at most %d images\n", MAX_IMAGES);
                return -1;
            }
            o->images[o->n_images++] = v;
        } else if (!strcmp(a, "--stop")) {
            NEEDV;
            if (o->n_stops == MAX_STOPS) {
                fprintf(stderr, "glmserve-run: at most %d stop strings\n", MAX_STOPS);
                return -1;
            }
            o->stops[o->n_stops++] = v;
        } else if (!strcmp(a, "--max-tokens")) {
            NEEDV;
            if (parse_num(a, v, 1, 1 << 20, &x) || x != floor(x))
                return -1;
            o->max_tokens = (long)x;
        } else if (!strcmp(a, "--temperature")) {
            NEEDV;
            if (parse_num(a, v, 0, 100, &x))
                return -1;
            o->sp.temperature = (float)x;
            o->have_temp = 1;
        } else if (!strcmp(a, "--top-p")) {
            NEEDV;
            if (parse_num(a, v, 1e-9, 1, &x))
                return -1;
            o->sp.top_p = (float)x;
            o->have_top_p = 1;
        } else if (!strcmp(a, "--top-k")) {
            NEEDV;
            if (parse_num(a, v, 0, 1 << 30, &x) || x != floor(x))
                return -1;
            o->sp.top_k = (int32_t)x;
            o->have_top_k = 1;
        } else if (!strcmp(a, "--min-p")) {
            NEEDV;
            if (parse_num(a, v, 0, 1, &x))
                return -1;
            o->sp.min_p = (float)x;
        } else if (!strcmp(a, "--repetition-penalty")) {
            NEEDV;
            if (parse_num(a, v, 1e-3, 10, &x))
                return -1;
            o->sp.repetition_penalty = (float)x;
            o->have_rep = 1;
        } else if (!strcmp(a, "--seed")) {
            NEEDV;
            if (parse_num(a, v, 0, 1.8e19, &x) || x != floor(x))
                return -1;
            o->sp.seed = (uint64_t)x;
        } else if (!strcmp(a, "--threads")) {
            NEEDV;
            if (parse_num(a, v, 0, 4096, &x) || x != floor(x))
                return -1;
            o->threads = (int)x;
        } else if (!strcmp(a, "--no-think")) {
            o->no_think = 1;
        } else if (!strcmp(a, "--dummy-weights")) {
            o->dummy = 1;
        } else if (!strcmp(a, "--graphs")) {
            NEEDV;
            if (!strcmp(v, "auto") || !strcmp(v, "on") || !strcmp(v, "off")) {
                o->graphs = !strcmp(v, "on") ? 1 : !strcmp(v, "off") ? -1 : 0;
            } else {
                fprintf(stderr, "glmserve-run: --graphs must be auto, on or off\n");
                return -1;
            }
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else {
            fprintf(stderr, "glmserve-run: unknown option '%s'\n", a);
            return -1;
        }
#undef NEEDV
    }
    if (!o->model || !o->prompt) {
        fprintf(stderr, "glmserve-run: --model and --prompt are required\n");
        return -1;
    }
    return 0;
}

/* 1 once an error line has been printed, so main adds no second one. */
static int g_reported;

typedef struct {
    gs_image_patches *p[MAX_IMAGES]; /* owned, one per image */
    gs_engine_image job[MAX_IMAGES]; /* views of p for the engine job */
    int32_t tokens[MAX_IMAGES];      /* LLM tokens per image */
    int64_t n_patches;
} images;

static int load_images(const options *o, const gs_image_params *ip, images *im)
{
    memset(im, 0, sizeof *im);
    for (int i = 0; i < o->n_images; i++) {
        size_t len = 0;
        char *bytes = NULL;
        gs_diag d;
        gs_image_rgb *rgb = NULL;
        gs_image_decode_params dp = gs_image_decode_defaults();
        int rc = gs_read_file(o->images[i], dp.max_bytes, &bytes, &len, &d);
        if (rc) {
            fprintf(stderr, "glmserve-run: %s\n", d.msg);
            g_reported = 1;
            return rc;
        }
        rc = gs_image_decode(bytes, len, &dp, &rgb, &d);
        free(bytes);
        if (rc) {
            fprintf(stderr, "glmserve-run: %s: %s\n", o->images[i], d.msg);
            g_reported = 1;
            return rc;
        }
        gs_image_patches *p = NULL;
        rc = gs_image_preprocess(rgb, ip, &p, &d);
        gs_image_rgb_free(rgb);
        if (rc) {
            fprintf(stderr, "glmserve-run: %s: %s\n", o->images[i], d.msg);
            g_reported = 1;
            return rc;
        }
        im->p[i] = p;
        gs_engine_image *j = &im->job[i];
        memset(j, 0, sizeof *j); /* all-zero hash: the engine hashes the pixels */
        j->pixels = p->pixels;
        j->n_patches = p->n_patches;
        j->grid[0] = p->grid_t;
        j->grid[1] = p->grid_h;
        j->grid[2] = p->grid_w;
        im->tokens[i] = p->n_tokens;
        im->n_patches += p->n_patches;
    }
    return 0;
}

static void images_free(images *im)
{
    for (int i = 0; i < MAX_IMAGES; i++)
        gs_image_patches_free(im->p[i]);
}

/* What the engine reported for the one job. */
typedef struct {
    gs_finish_reason finish;
    int error;
    gs_engine_usage usage;
    gs_engine_timings timings;
} run_result;

/* Engine event: stream the text, keep the final report. */
static void on_event(void *user, const gs_engine_event *ev)
{
    run_result *r = user;
    if (ev->text_len) {
        fwrite(ev->text, 1, ev->text_len, stdout);
        fflush(stdout);
    }
    if (ev->finish != GS_FINISH_NONE) {
        r->finish = ev->finish;
        r->error = ev->error;
        r->usage = ev->usage;
        r->timings = ev->timings;
    }
}

/* 0 when s is valid UTF-8; else prints which flag and byte are wrong. */
static int check_utf8(const char *flag, const char *s)
{
    size_t n = strlen(s), bad = gs_utf8_invalid_at((const uint8_t *)s, n);
    if (bad >= n)
        return 0;
    fprintf(stderr, "glmserve-run: %s: invalid UTF-8 at byte %zu\n", flag, bad);
    g_reported = 1;
    return GS_EUTF8;
}

/* Builds the chat messages as JSON: optional system turn, one user turn
 * with the images first and then the prompt text. Returns owned json, or
 * NULL when out of memory (the strings are valid UTF-8 by then). */
static json_t *build_messages(const options *o)
{
    json_t *msgs = json_array(), *content = json_array();
    int bad = !msgs || !content;
    if (o->system)
        bad |= json_array_append_new(
            msgs, json_pack("{s:s, s:s}", "role", "system", "content", o->system));
    for (int i = 0; i < o->n_images; i++)
        bad |= json_array_append_new(content, json_pack("{s:s}", "type", "image"));
    bad |=
        json_array_append_new(content, json_pack("{s:s, s:s}", "type", "text", "text", o->prompt));
    bad |= json_array_append_new(msgs, json_pack("{s:s, s:O}", "role", "user", "content", content));
    json_decref(content);
    if (bad) {
        json_decref(msgs);
        return NULL;
    }
    return msgs;
}

static void apply_generation_defaults(options *o, const gs_generation_config *g)
{
    if (!g->present)
        return;
    int sample = g->has_do_sample ? g->do_sample : 1;
    if (!o->have_temp && g->has_temperature)
        o->sp.temperature = sample ? (float)g->temperature : 0.0f;
    if (!o->have_temp && !sample)
        o->sp.temperature = 0.0f;
    if (!o->have_top_p && g->has_top_p)
        o->sp.top_p = (float)g->top_p;
    if (!o->have_top_k && g->has_top_k)
        o->sp.top_k = g->top_k;
    if (!o->have_rep && g->has_repetition_penalty)
        o->sp.repetition_penalty = (float)g->repetition_penalty;
}

static void fail(const char *what, int rc, const gs_diag *d)
{
    fprintf(stderr, "glmserve-run: %s: %s\n", what, d && d->msg[0] ? d->msg : gs_strerror(rc));
    g_reported = 1;
}

int main(int argc, char **argv)
{
    options o;
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (parse_args(argc, argv, &o)) {
        usage(stderr);
        return 2;
    }
    gs_log_set_tag("glmserve-run");
    gs_log_set_level(GS_LOG_WARN);
    double t_start = now_s();
    int rc = 0, status = 1;
    gs_diag d;
    gs_diag_clear(&d);
    gs_backend *be = NULL;
    gs_model *model = NULL;
    gs_tokenizer *tok = NULL;
    gs_engine *eng = NULL;
    json_t *msgs = NULL;
    char *text = NULL;
    int32_t *ids = NULL;
    images im = {0};

    gs_backend_params bp = {strcmp(o.backend, "cuda") == 0 ? GS_BACKEND_CUDA : GS_BACKEND_CPU,
                            o.threads, 0, 0};
    if (strcmp(o.backend, "cpu") && strcmp(o.backend, "cuda")) {
        fprintf(stderr, "glmserve-run: --backend must be cpu or cuda\n");
        return 2;
    }
    if ((rc = gs_backend_new(&bp, &be, &d))) {
        fail("backend", rc, &d);
        goto out;
    }
    gs_model_params mp = {o.model, be, o.dummy, 1, 1};
    if ((rc = gs_model_load(&mp, &model, &d))) {
        fail(o.model, rc, &d);
        goto out;
    }
    const gs_model_config *cfg = gs_model_get_config(model);
    gs_generation_config gen;
    if ((rc = gs_generation_config_load(o.model, cfg, &gen, &d))) {
        fail("generation_config.json", rc, &d);
        goto out;
    }
    apply_generation_defaults(&o, &gen);
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", o.model);
    if ((rc = gs_tokenizer_load(path, &tok, &d))) {
        fail(path, rc, &d);
        goto out;
    }
    gs_image_params ip;
    snprintf(path, sizeof path, "%s/preprocessor_config.json", o.model);
    if ((rc = gs_image_params_load(path, &ip, &d))) {
        fail("preprocessor_config.json", rc, &d);
        goto out;
    }
    snprintf(path, sizeof path, "%s/chat_template.jinja", o.model);
    {
        /* Absent or unreadable: nothing to compare (the folder may carry the
         * template in tokenizer_config.json instead). */
        size_t tlen = 0;
        char *tpl = NULL;
        if (gs_read_file(path, (size_t)64 << 20, &tpl, &tlen, NULL) == 0 &&
            gs_chat_template_check(tpl, tlen, &d) != 0)
            fprintf(stderr,
                    "glmserve-run: warning: %s is not the GLM-4.6V template this build "
                    "renders (%s); prompts follow the built-in one\n",
                    path, d.msg);
        free(tpl);
        gs_diag_clear(&d);
    }
    double t_loaded = now_s();

    /* Images and prompt. */
    if ((rc = load_images(&o, &ip, &im)))
        goto out;
    double t_pre = now_s();
    if ((rc = check_utf8("--prompt", o.prompt)) ||
        (o.system && (rc = check_utf8("--system", o.system))))
        goto out;
    if (!(msgs = build_messages(&o))) {
        rc = GS_ENOMEM;
        goto out;
    }
    gs_chat_options co = {o.no_think ? GS_THINK_OFF : GS_THINK_DEFAULT, 1};
    if ((rc = gs_chat_render(msgs, &co, &text, &d))) {
        fail("chat template", rc, &d);
        goto out;
    }
    int32_t n_ids = 0;
    if ((rc = gs_prompt_encode(tok, text, cfg->image_token_id, im.tokens, o.n_images, &ids, &n_ids,
                               &d))) {
        fail("prompt", rc, &d);
        goto out;
    }
    const int32_t L = n_ids;
    if (L + o.max_tokens > cfg->text.max_position_embeddings) {
        fprintf(stderr, "glmserve-run: prompt (%d tokens) + max tokens exceeds the context (%d)\n",
                L, cfg->text.max_position_embeddings);
        g_reported = 1;
        rc = GS_ECONTEXT;
        goto out;
    }

    /* One job through the engine, with a KV cache just large enough for it
     * (pages of 16, plus the engine's null page). */
    const gs_engine_detok_ctx dctx = {tok, 0};
    gs_engine_params ep = {0};
    ep.model = model;
    ep.page_size = 16;
    ep.n_pages = (int32_t)((L + o.max_tokens + 15) / 16) + 1;
    ep.max_seqs = 1;
    ep.max_model_len = (int32_t)(L + o.max_tokens);
    ep.detok = gs_engine_tokenizer_detok(&dctx);
    ep.graphs = o.graphs;
    if ((rc = gs_engine_new(&ep, &eng, &d))) {
        fail("engine", rc, &d);
        goto out;
    }
    run_result res = {0};
    gs_engine_job job = {0};
    job.prompt = ids;
    job.n_prompt = L;
    job.images = im.job;
    job.n_images = o.n_images;
    job.sampling = o.sp;
    /* generation_config.json's eos ids stop too (the model's always do). */
    if (gen.present && gen.has_eos) {
        job.stop_ids = gen.eos_token_ids;
        job.n_stop_ids = gen.n_eos;
    }
    job.stop_strings = o.stops;
    job.n_stop_strings = o.n_stops;
    job.max_tokens = (int32_t)o.max_tokens;
    job.on_event = on_event;
    job.user = &res;
    int64_t id;
    if ((rc = gs_engine_submit(eng, &job, &id, &d))) {
        fail("prompt", rc, &d);
        goto out;
    }
    while (gs_engine_busy(eng)) /* the engine's clock: CLOCK_MONOTONIC ns */
        if ((rc = gs_engine_step(eng, (uint64_t)(now_s() * 1e9))))
            break;
    if (res.finish == GS_FINISH_ERROR || rc) {
        fail("generation", rc ? rc : res.error, NULL);
        rc = rc ? rc : res.error;
        goto out;
    }
    fputc('\n', stdout);
    fflush(stdout);
    const double ttft = res.timings.ttft_ns * 1e-6, dec = res.timings.decode_ns * 1e-9;
    const int32_t n_gen = res.usage.completion_tokens;
    fprintf(stderr,
            "glmserve-run: load %.2fs | images %d (%lld patches) preprocess %.1f ms | prompt %d "
            "tokens (%.1f tok/s through vision + prefill) | TTFT %.1f ms | decode %d tokens, "
            "%.1f tok/s | finish %s\n",
            t_loaded - t_start, o.n_images, (long long)im.n_patches, (t_pre - t_loaded) * 1e3, L,
            ttft > 0 ? L / (ttft * 1e-3) : 0.0, ttft, n_gen,
            n_gen > 1 && dec > 0 ? (n_gen - 1) / dec : 0.0, gs_finish_reason_name(res.finish));
    status = 0;
out:
    if (status && !g_reported)
        fprintf(stderr, "glmserve-run: failed: %s\n", gs_strerror(rc));
    free(ids);
    free(text);
    images_free(&im);
    json_decref(msgs);
    gs_engine_free(eng);
    gs_tokenizer_free(tok);
    gs_model_free(model);
    gs_backend_free(be);
    return status;
}
