/* run_main.c - glmserve-run: one prompt (with images) through the model,
 * the answer streamed to stdout as it is produced.
 *
 *   glmserve-run --model DIR [--image FILE]... (--prompt TEXT | --prompt-file F)
 *                [--system TEXT] [--max-tokens N] [--temperature T]
 *                [--top-p P] [--top-k K] [--min-p P] [--repetition-penalty R]
 *                [--seed S] [--no-think] [--threads N] [--backend cpu|cuda]
 *                [--dummy-weights] [--weights bf16|int8|int4|auto]
 *                [--gpu-memory BYTES] [--graphs auto|on|off] [--stop STR]...
 *
 * The flags become a job JSON and the image files its blobs, built by
 * worker/request.h exactly as a worker builds a job from the network.
 * Timings (load, preprocessing, vision, TTFT, prefill and decode tokens/s)
 * go to stderr. Exit status 0 on success, 1 on a runtime error, 2 on bad
 * usage; every error is one line naming the flag, file or key. Sampling
 * defaults come from generation_config.json, then the flags; without
 * --seed every run draws a fresh seed. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/bytes.h"
#include "common/clock.h"
#include "common/file.h"
#include "common/log.h"
#include "kernels/kernels.h"
#include "worker/engine/engine.h"
#include "worker/engine/engine_detok.h"
#include "worker/model/model.h"
#include "worker/request.h"
#include "worker/tokenizer/chat_template.h"
#include "worker/tokenizer/tokenizer.h"
#include "worker/tokenizer/utf8.h"

#define MAX_IMAGES 16
#define MAX_STOPS 8
#define MAX_PROMPT_FILE ((size_t)64 << 20)

typedef struct {
    const char *model, *prompt, *prompt_file, *system, *backend;
    const char *images[MAX_IMAGES];
    int n_images;
    json_t *job; /* the job's sampling keys, filled from the flags (owned) */
    int no_think, threads, dummy;
    int graphs;               /* gs_engine_params.graphs: 0 auto, 1 on, -1 off */
    gs_weight_format weights; /* --weights; ASIS when not given */
    size_t gpu_memory;        /* --gpu-memory: gs_backend_params.mem_limit; 0: none */
} options;

static double now_s(void)
{
    return gs_clock_now_ns() * 1e-9;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: glmserve-run --model DIR [--image FILE]... (--prompt TEXT | --prompt-file F)\n"
            "       [--system TEXT] [--max-tokens N] [--temperature T] [--top-p P]\n"
            "       [--top-k K] [--min-p P] [--repetition-penalty R] [--seed S]\n"
            "       [--no-think] [--threads N] [--backend cpu|cuda] [--dummy-weights]\n"
            "       [--weights bf16|int8|int4|auto] [--gpu-memory BYTES]\n"
            "       [--graphs auto|on|off] [--stop STR]...\n"
            "  --prompt-file F reads the prompt from F ('-': standard input)\n"
            "  --weights: the folder's own format when not given (docs/quantization.md)\n"
            "  --gpu-memory 15G: a cap on the backend's memory (suffixes K M G T, KiB..)\n");
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

static int parse_int(const char *flag, const char *s, double lo, double hi, double *out)
{
    if (parse_num(flag, s, lo, hi, out))
        return -1;
    if (*out != floor(*out)) {
        fprintf(stderr, "glmserve-run: %s: expected an integer, got '%s'\n", flag, s);
        return -1;
    }
    return 0;
}

/* A numeric sampling flag: its job key, bounds, integer or not. */
typedef struct {
    const char *flag, *key;
    double lo, hi;
    int integer;
} num_flag;

static const num_flag num_flags[] = {
    {"--max-tokens", "max_tokens", 1, 1 << 20, 1},
    {"--temperature", "temperature", 0, 100, 0},
    {"--top-p", "top_p", 1e-9, 1, 0},
    {"--top-k", "top_k", 0, 1 << 30, 1},
    {"--min-p", "min_p", 0, 1, 0},
    {"--repetition-penalty", "repetition_penalty", 1e-3, 10, 0},
    {"--seed", "seed", 0, 9.2e18, 1},
};

static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->backend = "cpu";
    o->job = json_object();
    json_t *stops = json_array();
    if (!o->job || !stops)
        return -1;
    json_object_set_new(o->job, "max_tokens", json_integer(512));
    json_object_set_new(o->job, "stop", stops);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        const num_flag *nf = NULL;
        for (size_t k = 0; k < sizeof num_flags / sizeof *num_flags; k++)
            if (!strcmp(a, num_flags[k].flag))
                nf = &num_flags[k];
        int takes_value =
            nf || !strcmp(a, "--model") || !strcmp(a, "--prompt") || !strcmp(a, "--prompt-file") ||
            !strcmp(a, "--system") || !strcmp(a, "--backend") || !strcmp(a, "--image") ||
            !strcmp(a, "--stop") || !strcmp(a, "--threads") || !strcmp(a, "--graphs") ||
            !strcmp(a, "--weights") || !strcmp(a, "--gpu-memory");
        if (takes_value && !v) {
            fprintf(stderr, "glmserve-run: %s needs a value\n", a);
            return -1;
        }
        if (takes_value)
            i++;
        double x;
        if (nf) {
            if ((nf->integer ? parse_int : parse_num)(a, v, nf->lo, nf->hi, &x))
                return -1;
            json_object_set_new(o->job, nf->key,
                                nf->integer ? json_integer((json_int_t)x) : json_real(x));
        } else if (!strcmp(a, "--model")) {
            o->model = v;
        } else if (!strcmp(a, "--prompt")) {
            o->prompt = v;
        } else if (!strcmp(a, "--prompt-file")) {
            o->prompt_file = v;
        } else if (!strcmp(a, "--system")) {
            o->system = v;
        } else if (!strcmp(a, "--backend")) {
            if (strcmp(v, "cpu") && strcmp(v, "cuda")) {
                fprintf(stderr, "glmserve-run: --backend must be cpu or cuda, got '%s'\n", v);
                return -1;
            }
            o->backend = v;
        } else if (!strcmp(a, "--image")) {
            if (o->n_images == MAX_IMAGES) {
                fprintf(stderr, "glmserve-run: --image: at most %d images\n", MAX_IMAGES);
                return -1;
            }
            o->images[o->n_images++] = v;
        } else if (!strcmp(a, "--stop")) {
            if (json_array_size(stops) == MAX_STOPS) {
                fprintf(stderr, "glmserve-run: --stop: at most %d stop strings\n", MAX_STOPS);
                return -1;
            }
            json_array_append_new(stops, json_stringn_nocheck(v, strlen(v)));
        } else if (!strcmp(a, "--threads")) {
            if (parse_int(a, v, 0, 4096, &x))
                return -1;
            o->threads = (int)x;
        } else if (!strcmp(a, "--no-think")) {
            o->no_think = 1;
        } else if (!strcmp(a, "--dummy-weights")) {
            o->dummy = 1;
        } else if (!strcmp(a, "--weights")) {
            if (gs_weight_format_parse(v, &o->weights)) {
                fprintf(stderr,
                        "glmserve-run: --weights must be bf16, int8, int4 or auto, got '%s'\n", v);
                return -1;
            }
        } else if (!strcmp(a, "--gpu-memory")) {
            if (gs_parse_bytes(v, &o->gpu_memory)) {
                fprintf(stderr,
                        "glmserve-run: --gpu-memory: expected a size like 15G or 10GiB, got '%s'\n",
                        v);
                return -1;
            }
        } else if (!strcmp(a, "--graphs")) {
            if (strcmp(v, "auto") && strcmp(v, "on") && strcmp(v, "off")) {
                fprintf(stderr, "glmserve-run: --graphs must be auto, on or off, got '%s'\n", v);
                return -1;
            }
            o->graphs = !strcmp(v, "on") ? 1 : !strcmp(v, "off") ? -1 : 0;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            return 1;
        } else {
            fprintf(stderr, "glmserve-run: unknown option '%s' (--help lists them)\n", a);
            return -1;
        }
    }
    if (!o->model) {
        fprintf(stderr, "glmserve-run: --model is required\n");
        return -1;
    }
    if (!o->prompt == !o->prompt_file) {
        fprintf(stderr, "glmserve-run: give exactly one of --prompt and --prompt-file\n");
        return -1;
    }
    if (o->no_think)
        json_object_set_new(o->job, "enable_thinking", json_false());
    return 0;
}

/* 0 when s[0..n) is valid UTF-8; else prints which flag and byte are wrong. */
static int check_utf8(const char *flag, const char *s, size_t n)
{
    size_t bad = gs_utf8_invalid_at((const uint8_t *)s, n);
    if (bad >= n)
        return 0;
    fprintf(stderr, "glmserve-run: %s: invalid UTF-8 at byte %zu\n", flag, bad);
    return GS_EUTF8;
}

/* The prompt of --prompt-file: a file, or standard input for "-". Returns
 * owned text (free()) or NULL after printing why. */
static char *read_prompt_file(const char *path, size_t *len)
{
    if (strcmp(path, "-")) {
        char *s = NULL;
        gs_diag d;
        if (gs_read_file(path, MAX_PROMPT_FILE, &s, len, &d)) {
            fprintf(stderr, "glmserve-run: --prompt-file: %s\n", d.msg);
            return NULL;
        }
        return s;
    }
    size_t cap = 1 << 16, n = 0;
    char *s = malloc(cap + 1);
    while (s) {
        size_t got = fread(s + n, 1, cap - n, stdin);
        n += got;
        if (got == 0)
            break;
        if (n == cap) {
            if (cap >= MAX_PROMPT_FILE) {
                fprintf(stderr, "glmserve-run: --prompt-file: standard input is over %zu bytes\n",
                        MAX_PROMPT_FILE);
                free(s);
                return NULL;
            }
            char *t = realloc(s, 2 * cap + 1);
            if (!t)
                free(s);
            s = t;
            cap *= 2;
        }
    }
    if (!s) {
        fprintf(stderr, "glmserve-run: --prompt-file: out of memory\n");
        return NULL;
    }
    if (ferror(stdin)) {
        fprintf(stderr, "glmserve-run: --prompt-file: cannot read standard input\n");
        free(s);
        return NULL;
    }
    s[n] = 0;
    *len = n;
    return s;
}

/* The job's messages: an optional system turn, one user turn with the
 * images first and then the prompt text. 0, or -1 after printing why. */
static int add_messages(options *o, const char *prompt, size_t prompt_len)
{
    if (check_utf8(o->prompt ? "--prompt" : "--prompt-file", prompt, prompt_len) ||
        (o->system && check_utf8("--system", o->system, strlen(o->system))))
        return -1;
    json_t *msgs = json_array(), *content = json_array();
    int bad = !msgs || !content;
    if (o->system)
        bad |= json_array_append_new(
            msgs, json_pack("{s:s, s:s}", "role", "system", "content", o->system));
    for (int i = 0; i < o->n_images; i++)
        bad |= json_array_append_new(content, json_pack("{s:s}", "type", "image"));
    bad |= json_array_append_new(
        content, json_pack("{s:s, s:s%}", "type", "text", "text", prompt, prompt_len));
    bad |= json_array_append_new(msgs, json_pack("{s:s, s:O}", "role", "user", "content", content));
    json_decref(content);
    bad |= json_object_set_new(o->job, "messages", msgs);
    if (bad) {
        fprintf(stderr, "glmserve-run: out of memory\n");
        return -1;
    }
    return 0;
}

/* What the engine reported for the one job. */
typedef struct {
    gs_finish_reason finish;
    int error;
    gs_engine_usage usage;
    gs_engine_timings timings;
} run_result;

/* Engine event: stream the text, keep the final report. */
static int on_event(void *user, const gs_engine_event *ev)
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
    return 0;
}

typedef struct {
    char *bytes[MAX_IMAGES];
    gs_request_blob blob[MAX_IMAGES];
} image_files;

static int read_images(const options *o, const gs_image_decode_params *dp, image_files *f)
{
    for (int i = 0; i < o->n_images; i++) {
        gs_diag d;
        size_t len = 0;
        if (gs_read_file(o->images[i], dp->max_bytes, &f->bytes[i], &len, &d)) {
            fprintf(stderr, "glmserve-run: --image: %s\n", d.msg);
            return -1;
        }
        f->blob[i].bytes = f->bytes[i];
        f->blob[i].len = len;
    }
    return 0;
}

/* One error line for a failed request build. Image errors ("image N: ...",
 * request.c's form) name the file instead of the index. */
static void request_error(const options *o, const gs_diag *d, int rc)
{
    int idx = -1, off = 0;
    const char *msg = d->msg[0] ? d->msg : gs_strerror(rc);
    if (sscanf(msg, "image %d: %n", &idx, &off) == 1 && off > 0 && idx >= 0 && idx < o->n_images)
        fprintf(stderr, "glmserve-run: --image %s: %s\n", o->images[idx], msg + off);
    else
        fprintf(stderr, "glmserve-run: %s\n", msg);
}

int main(int argc, char **argv)
{
    gs_cpu_blas_reexec(argv);
    options o;
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    int pa = parse_args(argc, argv, &o);
    if (pa) {
        json_decref(o.job);
        usage(pa > 0 ? stdout : stderr);
        return pa > 0 ? 0 : 2;
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
    gs_request *req = NULL;
    char *prompt_buf = NULL, *job_text = NULL;
    image_files files = {0};
    run_result res = {0};

    size_t prompt_len = o.prompt ? strlen(o.prompt) : 0;
    if (o.prompt_file && !(prompt_buf = read_prompt_file(o.prompt_file, &prompt_len)))
        goto out;
    if (add_messages(&o, o.prompt ? o.prompt : prompt_buf, prompt_len))
        goto out;

    gs_backend_params bp = {0};
    bp.kind = strcmp(o.backend, "cuda") == 0 ? GS_BACKEND_CUDA : GS_BACKEND_CPU;
    bp.n_threads = o.threads;
    bp.mem_limit = o.gpu_memory;
    if ((rc = gs_backend_new(&bp, &be, &d))) {
        fprintf(stderr, "glmserve-run: --backend %s: %s\n", o.backend, d.msg);
        goto out;
    }
    gs_model_params mp = {o.model, be, o.dummy, 1, 1, o.weights, 0};
    if ((rc = gs_model_load(&mp, &model, &d))) {
        fprintf(stderr, "glmserve-run: --model %s: %s\n", o.model, d.msg);
        goto out;
    }
    const gs_model_config *cfg = gs_model_get_config(model);
    gs_generation_config gen;
    gs_image_params ip;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", o.model);
    if ((rc = gs_generation_config_load(o.model, cfg, &gen, &d)) ||
        (rc = gs_tokenizer_load(path, &tok, &d)) || (rc = gs_image_params_load(o.model, &ip, &d)) ||
        (rc = gs_model_check_image_params(cfg, &ip, &d))) {
        fprintf(stderr, "glmserve-run: --model %s: %s\n", o.model, d.msg);
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

    /* The job, built as a worker builds one. */
    gs_request_env env = {tok,
                          cfg,
                          &gen,
                          &ip,
                          gs_image_decode_defaults(),
                          MAX_IMAGES,
                          cfg->text.max_position_embeddings,
                          512};
    if (read_images(&o, &env.decode, &files))
        goto out;
    if (!(job_text = json_dumps(o.job, JSON_COMPACT))) {
        fprintf(stderr, "glmserve-run: out of memory\n");
        goto out;
    }
    if ((rc = gs_request_build(&env, job_text, strlen(job_text), files.blob, o.n_images, &req,
                               &d))) {
        request_error(&o, &d, rc);
        goto out;
    }
    double t_pre = now_s();
    const int32_t L = req->n_ids, n_img = req->n_images;
    const int64_t n_patches = req->n_patches;

    /* One job through the engine, with a KV cache just large enough for it
     * (pages of 16, plus the engine's null page). */
    const gs_engine_detok_ctx dctx = {tok, 0};
    gs_engine_params ep = {0};
    ep.model = model;
    ep.page_size = 16;
    ep.n_pages = (int32_t)((L + req->max_tokens + 15) / 16) + 1;
    ep.max_seqs = 1;
    ep.max_model_len = L + req->max_tokens;
    ep.detok = gs_engine_tokenizer_detok(&dctx);
    ep.graphs = o.graphs;
    if ((rc = gs_engine_new(&ep, &eng, &d))) {
        fprintf(stderr, "glmserve-run: engine: %s\n", d.msg);
        goto out;
    }
    gs_engine_job job;
    gs_request_to_job(req, &job);
    job.on_event = on_event;
    job.user = &res;
    int64_t id;
    if ((rc = gs_engine_submit(eng, &job, &id, &d))) {
        fprintf(stderr, "glmserve-run: %s\n", d.msg[0] ? d.msg : gs_strerror(rc));
        goto out;
    }
    while (gs_engine_busy(eng)) /* the engine's clock: gs_clock_now_ns */
        if ((rc = gs_engine_step(eng, gs_clock_now_ns())))
            break;
    if (res.finish == GS_FINISH_ERROR || rc) {
        rc = rc ? rc : res.error;
        fprintf(stderr, "glmserve-run: generation failed: %s\n", gs_strerror(rc));
        goto out;
    }
    fputc('\n', stdout);
    fflush(stdout);
    const double ttft = res.timings.ttft_ns * 1e-6, dec = res.timings.decode_ns * 1e-9;
    const int32_t n_gen = res.usage.completion_tokens;
    fprintf(stderr,
            "glmserve-run: load %.2fs (%s weights, %.3f GB) | images %d (%lld patches) preprocess "
            "%.1f ms | prompt %d tokens (%.1f tok/s through vision + prefill) | TTFT %.1f ms | "
            "decode %d tokens, %.1f tok/s | finish %s\n",
            t_loaded - t_start, gs_weight_format_name(gs_model_weight_format(model)),
            gs_model_weight_bytes(model) / 1e9, n_img, (long long)n_patches,
            (t_pre - t_loaded) * 1e3, L, ttft > 0 ? L / (ttft * 1e-3) : 0.0, ttft, n_gen,
            n_gen > 1 && dec > 0 ? (n_gen - 1) / dec : 0.0, gs_finish_reason_name(res.finish));
    status = 0;
out:
    free(prompt_buf);
    free(job_text);
    for (int i = 0; i < MAX_IMAGES; i++)
        free(files.bytes[i]);
    json_decref(o.job);
    gs_engine_free(eng);
    gs_request_free(req);
    gs_tokenizer_free(tok);
    gs_model_free(model);
    gs_backend_free(be);
    return status;
}
