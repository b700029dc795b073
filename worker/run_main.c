/* run_main.c - glmserve-run: one prompt (with images) through the model,
 * the answer streamed to stdout as it is produced.
 *
 *   glmserve-run --model DIR [--image FILE]... --prompt TEXT
 *                [--system TEXT] [--max-tokens N] [--temperature T]
 *                [--top-p P] [--top-k K] [--min-p P] [--repetition-penalty R]
 *                [--seed S] [--no-think] [--threads N] [--backend cpu|cuda]
 *                [--dummy-weights] [--stop STR]...
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
#include "worker/model/model.h"
#include "worker/model/rope_index.h"
#include "worker/sampler.h"
#include "worker/tokenizer/chat_template.h"
#include "worker/tokenizer/detok.h"
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
               "       [--stop STR]...\n");
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
    float *pixels; /* [n_patches, 1176] */
    int64_t n_patches;
    int32_t grids[MAX_IMAGES][3];
    int32_t tokens[MAX_IMAGES];
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
        float *np = realloc(im->pixels, sizeof(float) * (size_t)(im->n_patches + p->n_patches) *
                                            (size_t)p->patch_dim);
        if (!np) {
            gs_image_patches_free(p);
            return GS_ENOMEM;
        }
        im->pixels = np;
        memcpy(im->pixels + im->n_patches * p->patch_dim, p->pixels,
               sizeof(float) * (size_t)(p->n_patches * p->patch_dim));
        im->n_patches += p->n_patches;
        im->grids[i][0] = p->grid_t;
        im->grids[i][1] = p->grid_h;
        im->grids[i][2] = p->grid_w;
        im->tokens[i] = p->n_tokens;
        gs_image_patches_free(p);
    }
    return 0;
}

/* Builds the chat messages as JSON: optional system turn, one user turn
 * with the images first and then the prompt text. Returns owned json. */
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

static int is_stop_id(const int32_t *ids, int n, int32_t id)
{
    for (int i = 0; i < n; i++)
        if (ids[i] == id)
            return 1;
    return 0;
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
    gs_detok *dt = NULL;
    gs_sampler *smp = NULL;
    gs_stopper *stp = NULL;
    gs_kv_cache *kv = NULL;
    json_t *msgs = NULL;
    char *text = NULL;
    int32_t *ids = NULL, *pos = NULL, *img_row = NULL, *slots = NULL, *bt = NULL;
    float *logits = NULL;
    images im = {0};
    gs_mat img = {0};

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
    const int32_t L = n_ids, V = cfg->text.vocab_size;
    if (L + o.max_tokens > cfg->text.max_position_embeddings) {
        fprintf(stderr, "glmserve-run: prompt (%d tokens) + max tokens exceeds the context (%d)\n",
                L, cfg->text.max_position_embeddings);
        g_reported = 1;
        rc = GS_ECONTEXT;
        goto out;
    }
    pos = malloc(sizeof *pos * 3 * (size_t)L);
    img_row = malloc(sizeof *img_row * (size_t)L);
    slots = malloc(sizeof *slots * (size_t)L);
    logits = malloc(sizeof *logits * (size_t)V);
    if (!pos || !img_row || !slots || !logits) {
        rc = GS_ENOMEM;
        goto out;
    }
    gs_rope_index_params rp = {cfg->image_token_id, cfg->video_start_token_id,
                               cfg->video_end_token_id, cfg->vision.spatial_merge_size};
    int32_t delta = 0;
    if ((rc = gs_rope_index(&rp, ids, L, (const int32_t(*)[3])im.grids, o.n_images, pos, &delta,
                            &d))) {
        fail("prompt", rc, &d);
        goto out;
    }

    /* Vision tower: every image in one batch. */
    const int32_t mm = cfg->vision.spatial_merge_size * cfg->vision.spatial_merge_size;
    if (o.n_images) {
        gs_dtype act = gs_backend_act_dtype(be);
        img = gs_mat_make(gs_buf_alloc(be, gs_dtype_size(act) * (size_t)(im.n_patches / mm) *
                                               (size_t)cfg->text.hidden_size),
                          act, im.n_patches / mm, cfg->text.hidden_size);
        if (!img.data) {
            rc = GS_ENOMEM;
            goto out;
        }
        if ((rc = gs_model_encode_images(model, im.pixels, im.n_patches,
                                         (const int32_t(*)[3])im.grids, o.n_images, img))) {
            fail("vision encoder", rc, NULL);
            goto out;
        }
    }
    double t_vis = now_s();

    /* KV cache for the whole answer: one sequence, pages in order. */
    const int32_t page = 16;
    const int32_t n_pages = (int32_t)((L + o.max_tokens + page - 1) / page);
    if ((rc = gs_kv_cache_new(model, n_pages, page, &kv))) {
        fail("KV cache", rc, NULL);
        goto out;
    }
    bt = malloc(sizeof *bt * (size_t)n_pages);
    if (!bt) {
        rc = GS_ENOMEM;
        goto out;
    }
    for (int32_t i = 0; i < n_pages; i++)
        bt[i] = i;
    int32_t r = 0;
    for (int32_t i = 0; i < L; i++) {
        slots[i] = i;
        img_row[i] = ids[i] == cfg->image_token_id ? r++ : -1;
    }
    int32_t cu[2] = {0, L}, kvlen[1] = {L}, last = L - 1;
    gs_text_batch b = {L,  ids,     pos, slots, o.n_images ? img_row : NULL, img, 1, cu, kvlen,
                       bt, n_pages, 1,   &last};
    if ((rc = gs_model_forward(model, kv, &b, logits))) {
        fail("prefill", rc, NULL);
        goto out;
    }
    double t_prefill = now_s();

    /* Decode. */
    const int32_t *eos = gen.present && gen.has_eos ? gen.eos_token_ids : cfg->text.eos_token_ids;
    const int n_eos = gen.present && gen.has_eos ? gen.n_eos : cfg->text.n_eos;
    if ((rc = gs_sampler_new(&o.sp, V, ids, L, &smp, &d)) ||
        (rc = gs_stopper_new(o.stops, o.n_stops, &stp)) || (rc = gs_detok_new(tok, 0, &dt))) {
        fail("sampler", rc, &d);
        goto out;
    }
    double t_first = 0;
    long n_gen = 0;
    const char *finish = "length";
    for (long step = 0; step < o.max_tokens; step++) {
        int32_t id = gs_sampler_sample(smp, logits);
        if (id < 0) {
            rc = id;
            fail("sampler", rc, NULL);
            goto out;
        }
        if (step == 0)
            t_first = now_s();
        gs_sampler_accept(smp, id);
        n_gen++;
        if (is_stop_id(eos, n_eos, id)) {
            finish = "stop";
            break;
        }
        const char *piece, *emit;
        size_t plen, elen;
        if ((rc = gs_detok_push(dt, id, &piece, &plen)))
            goto out;
        int stopped = gs_stopper_feed(stp, piece, plen, &emit, &elen);
        fwrite(emit, 1, elen, stdout);
        fflush(stdout);
        if (stopped == 1) {
            finish = "stop";
            break;
        }
        if (step + 1 == o.max_tokens)
            break;
        int32_t p = L + (int32_t)step, p3[3] = {p + delta, p + delta, p + delta}, slot = p, row = 0;
        int32_t cu1[2] = {0, 1}, kl[1] = {p + 1};
        gs_text_batch db = {1, &id, p3, &slot, NULL, img, 1, cu1, kl, bt, n_pages, 1, &row};
        if ((rc = gs_model_forward(model, kv, &db, logits))) {
            fail("decode", rc, NULL);
            goto out;
        }
    }
    {
        const char *tail, *emit;
        size_t tlen, elen;
        gs_detok_flush(dt, &tail, &tlen);
        if (!strcmp(finish, "length") || tlen) {
            gs_stopper_feed(stp, tail, tlen, &emit, &elen);
            fwrite(emit, 1, elen, stdout);
            gs_stopper_flush(stp, &emit, &elen);
            fwrite(emit, 1, elen, stdout);
        }
    }
    fputc('\n', stdout);
    fflush(stdout);
    double t_end = now_s();
    fprintf(stderr,
            "glmserve-run: load %.2fs | images %d (%lld patches) preprocess %.1f ms, vision %.1f "
            "ms | prompt %d tokens, prefill %.1f ms (%.1f tok/s) | TTFT %.1f ms | decode %ld "
            "tokens, %.1f tok/s | finish %s\n",
            t_loaded - t_start, o.n_images, (long long)im.n_patches, (t_pre - t_loaded) * 1e3,
            (t_vis - t_pre) * 1e3, L, (t_prefill - t_vis) * 1e3, L / (t_prefill - t_vis),
            (t_first - t_loaded) * 1e3, n_gen, n_gen > 1 ? (n_gen - 1) / (t_end - t_first) : 0.0,
            finish);
    status = 0;
out:
    if (status && !g_reported)
        fprintf(stderr, "glmserve-run: failed: %s\n", gs_strerror(rc));
    free(ids);
    free(pos);
    free(img_row);
    free(slots);
    free(bt);
    free(logits);
    free(text);
    free(im.pixels);
    json_decref(msgs);
    gs_detok_free(dt);
    gs_stopper_free(stp);
    gs_sampler_free(smp);
    gs_kv_cache_free(kv);
    if (img.data)
        gs_buf_free(be, img.data);
    gs_tokenizer_free(tok);
    gs_model_free(model);
    gs_backend_free(be);
    return status;
}
