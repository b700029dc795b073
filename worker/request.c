/* request.c - job JSON + image bytes -> a prepared gs_request (request.h).
 *
 * Owns nothing beyond the request it builds. The steps, in order, each
 * failing with a diag that names what was wrong: parse and check the JSON
 * keys -> sampling parameters (job, then generation_config.json, then the
 * defaults) -> chat template -> images (decode, preprocess, SHA-256 of the
 * bytes) -> prompt ids with each image expanded -> context check.
 * Thread-safe: reads the shared env only. */
#include "worker/request.h"

#include <jansson.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "worker/tokenizer/chat_template.h"
#include "worker/tokenizer/utf8.h"

/* The keys a job may carry, one check each below. */
static const char *const known_keys[] = {
    "messages",   "tools", "max_tokens",         "temperature",      "top_p",
    "top_k",      "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty",
    "seed",       "stop",  "stop_token_ids",     "ignore_eos",       "enable_thinking",
    "cache_salt",
};

void gs_request_free(gs_request *r)
{
    if (!r)
        return;
    free(r->ids);
    /* Pixels not handed to an engine go through their release callback,
     * which a caller may have wrapped (the worker counts them). */
    for (int32_t i = 0; i < r->n_images; i++) {
        if (!r->patches || !r->patches[i])
            continue;
        if (r->images && r->images[i].release)
            r->images[i].release(r->images[i].release_ctx);
        else
            gs_image_patches_free(r->patches[i]);
    }
    free(r->patches);
    free(r->images);
    for (int32_t i = 0; i < r->n_stops; i++)
        free(r->stops[i]);
    free(r->stops);
    free(r->stop_ids);
    free(r);
}

/* A number key: absent leaves *out; present must be a number in [lo, hi]. */
static int get_num(const json_t *o, const char *key, double lo, double hi, float *out, gs_diag *d)
{
    const json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    if (!json_is_number(v))
        return gs_diag_set(d, GS_EINVAL, "'%s' must be a number", key);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi))
        return gs_diag_set(d, GS_EINVAL, "'%s' must be in [%g, %g], got %g", key, lo, hi, x);
    *out = (float)x;
    return 0;
}

/* An integer key in [lo, hi]; *present says whether it was there. */
static int get_int(const json_t *o, const char *key, long long lo, long long hi, long long *out,
                   int *present, gs_diag *d)
{
    const json_t *v = json_object_get(o, key);
    *present = 0;
    if (!v)
        return 0;
    if (!json_is_integer(v))
        return gs_diag_set(d, GS_EINVAL, "'%s' must be an integer", key);
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return gs_diag_set(d, GS_EINVAL, "'%s' must be in [%lld, %lld], got %lld", key, lo, hi, x);
    *out = x;
    *present = 1;
    return 0;
}

static int get_bool(const json_t *o, const char *key, int *out, int *present, gs_diag *d)
{
    const json_t *v = json_object_get(o, key);
    *present = v != NULL;
    if (!v)
        return 0;
    if (!json_is_boolean(v))
        return gs_diag_set(d, GS_EINVAL, "'%s' must be true or false", key);
    *out = json_is_true(v);
    return 0;
}

static int check_keys(const json_t *o, gs_diag *d)
{
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)o, k, v)
    {
        size_t i, n = sizeof known_keys / sizeof *known_keys;
        for (i = 0; i < n && strcmp(k, known_keys[i]); i++)
            ;
        if (i == n)
            return gs_diag_set(d, GS_EINVAL, "unknown key '%s'", k);
    }
    return 0;
}

/* Sampling: the job's values, else generation_config.json's, else the
 * defaults (greedy when do_sample is false). */
static int sampling(const gs_request_env *env, const json_t *o, gs_request *r, gs_diag *d)
{
    gs_sampling_params *sp = &r->sampling;
    *sp = gs_sampling_defaults();
    const gs_generation_config *g = env->gen;
    if (g && g->present) {
        int sample = g->has_do_sample ? g->do_sample : 1;
        if (g->has_temperature)
            sp->temperature = sample ? (float)g->temperature : 0.0f;
        if (!sample)
            sp->temperature = 0.0f;
        if (g->has_top_p)
            sp->top_p = (float)g->top_p;
        if (g->has_top_k)
            sp->top_k = g->top_k;
        if (g->has_repetition_penalty)
            sp->repetition_penalty = (float)g->repetition_penalty;
    }
    int rc, present;
    long long x;
    if ((rc = get_num(o, "temperature", 0, 100, &sp->temperature, d)) ||
        (rc = get_num(o, "top_p", 1e-9, 1, &sp->top_p, d)) ||
        (rc = get_num(o, "min_p", 0, 1, &sp->min_p, d)) ||
        (rc = get_num(o, "repetition_penalty", 1e-3, 10, &sp->repetition_penalty, d)) ||
        (rc = get_num(o, "presence_penalty", -2, 2, &sp->presence_penalty, d)) ||
        (rc = get_num(o, "frequency_penalty", -2, 2, &sp->frequency_penalty, d)))
        return rc;
    if ((rc = get_int(o, "top_k", -1, 1 << 30, &x, &present, d)))
        return rc;
    if (present)
        sp->top_k = x < 0 ? 0 : (int32_t)x;
    if ((rc = get_int(o, "seed", 0, INT64_MAX, &x, &present, d)))
        return rc;
    if (present) {
        sp->seed = (uint64_t)x;
        r->seeded = 1;
    } else {
        /* A fresh seed per request: two identical unseeded requests at
         * temperature > 0 must not give the same answer. */
        uint64_t s = 0;
        if (getrandom(&s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            s = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)ts.tv_sec ^
                (uint64_t)(uintptr_t)r;
        }
        sp->seed = s;
    }
    return gs_sampling_validate(sp, d);
}

static int stops(const gs_request_env *env, const json_t *o, gs_request *r, gs_diag *d)
{
    const json_t *v = json_object_get(o, "stop");
    size_t n = 0;
    if (v && !json_is_null(v)) {
        if (json_is_string(v))
            n = 1;
        else if (json_is_array(v))
            n = json_array_size(v);
        else
            return gs_diag_set(d, GS_EINVAL, "'stop' must be a string or an array of strings");
        if (n > GS_REQUEST_MAX_STOPS)
            return gs_diag_set(d, GS_EINVAL, "'stop' has %zu entries, at most %d", n,
                               GS_REQUEST_MAX_STOPS);
        if (n && !(r->stops = calloc(n, sizeof *r->stops)))
            return GS_ENOMEM;
        for (size_t i = 0; i < n; i++) {
            const json_t *s = json_is_string(v) ? v : json_array_get(v, i);
            if (!json_is_string(s))
                return gs_diag_set(d, GS_EINVAL, "'stop[%zu]' must be a string", i);
            size_t len = json_string_length(s);
            if (len == 0 || len > GS_REQUEST_MAX_STOP_LEN)
                return gs_diag_set(d, GS_EINVAL, "'stop[%zu]' must have 1 to %d bytes", i,
                                   GS_REQUEST_MAX_STOP_LEN);
            if (memchr(json_string_value(s), 0, len))
                return gs_diag_set(d, GS_EINVAL, "'stop[%zu]' contains a NUL byte", i);
            if (!(r->stops[i] = strdup(json_string_value(s))))
                return GS_ENOMEM;
            r->n_stops = (int32_t)i + 1;
        }
    }
    const json_t *ids = json_object_get(o, "stop_token_ids");
    size_t n_ids = 0;
    if (ids && !json_is_null(ids)) {
        if (!json_is_array(ids) || json_array_size(ids) > 256)
            return gs_diag_set(d, GS_EINVAL,
                               "'stop_token_ids' must be an array of at most 256 ids");
        n_ids = json_array_size(ids);
    }
    const gs_generation_config *g = env->gen;
    size_t n_eos = g && g->present && g->has_eos ? (size_t)g->n_eos : 0;
    if (n_ids + n_eos && !(r->stop_ids = malloc((n_ids + n_eos) * sizeof *r->stop_ids)))
        return GS_ENOMEM;
    for (size_t i = 0; i < n_ids; i++) {
        const json_t *x = json_array_get(ids, i);
        if (!json_is_integer(x) || json_integer_value(x) < 0 ||
            json_integer_value(x) >= env->cfg->text.vocab_size)
            return gs_diag_set(d, GS_EINVAL, "'stop_token_ids[%zu]' must be an id in [0, %d)", i,
                               env->cfg->text.vocab_size);
        r->stop_ids[r->n_stop_ids++] = (int32_t)json_integer_value(x);
    }
    /* generation_config.json's eos ids stop too (config.json's always do). */
    for (size_t i = 0; i < n_eos; i++)
        r->stop_ids[r->n_stop_ids++] = g->eos_token_ids[i];
    return 0;
}

static void release_patches(void *ctx)
{
    gs_image_patches_free(ctx);
}

/* Each image's token count from its header alone (n_tok[i]), so that a
 * prompt over the context is refused before any pixel is decoded: 16
 * photos of 81 megapixels cost 30 s of decoding and 4 GB of patches for
 * an answer known from their headers. The same limits as the decode. */
static int image_tokens(const gs_request_env *env, const gs_request_blob *blobs, int32_t n,
                        int32_t *n_tok, gs_diag *d)
{
    for (int32_t i = 0; i < n; i++) {
        gs_diag di;
        gs_diag_clear(&di);
        gs_image_info info;
        int rc =
            blobs[i].len > env->decode.max_bytes
                ? gs_diag_set(&di, GS_ETOOBIG, "image data is %zu bytes, above the limit of %zu",
                              blobs[i].len, env->decode.max_bytes)
                : gs_image_probe(blobs[i].bytes, blobs[i].len, &info, &di);
        if (!rc && (int64_t)info.width * info.height > env->decode.max_pixels)
            rc = gs_diag_set(
                &di, GS_ETOOBIG, "%s image is %dx%d = %lld pixels, above the limit of %lld",
                info.format == GS_IMAGE_FMT_JPEG ? "JPEG" : "PNG", info.width, info.height,
                (long long)info.width * info.height, (long long)env->decode.max_pixels);
        if (!rc)
            rc = gs_image_token_count(env->img, info.height, info.width, &n_tok[i], &di);
        if (rc)
            return gs_diag_set(d, rc, "image %d: %s", (int)i, di.msg[0] ? di.msg : gs_strerror(rc));
    }
    return 0;
}

size_t gs_request_pixel_bytes(const gs_request_env *env, const gs_request_blob *blobs, int n_images)
{
    const gs_image_params *p = env->img;
    const size_t per_token = (size_t)p->merge_size * p->merge_size * 3 * p->temporal_patch_size *
                             p->patch_size * p->patch_size * sizeof(float);
    size_t sum = 0;
    for (int i = 0; i < n_images; i++) {
        int32_t n_tok = 0;
        gs_diag d;
        if (!image_tokens(env, blobs + i, 1, &n_tok, &d))
            sum += (size_t)n_tok * per_token;
    }
    return sum;
}

/* Decodes and preprocesses the images; each must give the n_tok[i] tokens
 * its header promised (the prompt holds that many placeholders). */
static int images(const gs_request_env *env, const gs_request_blob *blobs, const int32_t *n_tok,
                  gs_request *r, gs_diag *d)
{
    if (!r->n_images)
        return 0;
    r->patches = calloc((size_t)r->n_images, sizeof *r->patches);
    r->images = calloc((size_t)r->n_images, sizeof *r->images);
    if (!r->patches || !r->images)
        return GS_ENOMEM;
    for (int32_t i = 0; i < r->n_images; i++) {
        gs_diag di;
        gs_diag_clear(&di);
        gs_image_rgb *rgb = NULL;
        int rc = gs_image_decode(blobs[i].bytes, blobs[i].len, &env->decode, &rgb, &di);
        if (!rc) {
            rc = gs_image_preprocess(rgb, env->img, &r->patches[i], &di);
            gs_image_rgb_free(rgb);
        }
        if (rc)
            return gs_diag_set(d, rc, "image %d: %s", (int)i, di.msg[0] ? di.msg : gs_strerror(rc));
        const gs_image_patches *p = r->patches[i];
        if (p->n_tokens != n_tok[i])
            return gs_diag_set(d, GS_EINTERNAL,
                               "image %d: %d tokens decoded, %d expected from its header", (int)i,
                               (int)p->n_tokens, (int)n_tok[i]);
        gs_engine_image *im = &r->images[i];
        im->pixels = p->pixels;
        im->n_patches = p->n_patches;
        im->grid[0] = p->grid_t;
        im->grid[1] = p->grid_h;
        im->grid[2] = p->grid_w;
        im->patch_dim = p->patch_dim;
        unsigned hl = 0;
        if (!EVP_Digest(blobs[i].bytes, blobs[i].len, im->hash, &hl, EVP_sha256(), NULL))
            return gs_diag_set(d, GS_EINTERNAL, "image %d: SHA-256 failed", (int)i);
        im->release = release_patches;
        im->release_ctx = r->patches[i];
        r->n_patches += p->n_patches;
    }
    return 0;
}

static int prompt(const gs_request_env *env, const json_t *o, gs_request *r, int think_mode,
                  const int32_t *n_tok, gs_diag *d)
{
    const json_t *msgs = json_object_get(o, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return gs_diag_set(d, GS_EINVAL, "'messages' must be a non-empty array");
    gs_chat_options co = {think_mode, 1};
    gs_chat_result cr = {0};
    int rc = gs_chat_render_ex(msgs, json_object_get(o, "tools"), &co, &cr, d);
    if (rc)
        return rc;
    if (cr.n_videos)
        rc = gs_diag_set(d, GS_EUNSUPPORTED, "video input is not supported");
    else if (cr.n_images != r->n_images)
        rc = gs_diag_set(d, GS_EINVAL, "the messages have %d image parts but %d images were sent",
                         (int)cr.n_images, (int)r->n_images);
    else if (gs_utf8_invalid_at((const uint8_t *)cr.text, cr.len) < cr.len)
        rc = gs_diag_set(d, GS_EUTF8, "messages: invalid UTF-8 at byte %zu of the rendered prompt",
                         gs_utf8_invalid_at((const uint8_t *)cr.text, cr.len));
    if (!rc) {
        gs_prompt_images pi = {env->cfg->image_token_id, n_tok, r->n_images};
        gs_tokens t = {0};
        if (!(rc = gs_prompt_encode_n(env->tok, cr.text, cr.len, &pi, &t, d))) {
            if (t.n > (size_t)INT32_MAX)
                rc = GS_ETOOBIG;
            r->ids = t.ids;
            r->n_ids = (int32_t)t.n;
        } else {
            gs_tokens_free(&t);
        }
    }
    gs_chat_result_free(&cr);
    return rc;
}

/* FNV-1a of the salt string: the prefix cache's namespace. */
static uint64_t salt_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h ? h : 1;
}

int gs_request_build(const gs_request_env *env, const char *json, size_t len,
                     const gs_request_blob *blobs, int n_images, gs_request **out, gs_diag *d)
{
    if (!out)
        return GS_EINVAL;
    *out = NULL;
    if (!env || !env->tok || !env->cfg || !env->img || (!json && len) || n_images < 0 ||
        (n_images && !blobs))
        return gs_diag_set(d, GS_EINVAL, "request: bad arguments");
    if (n_images > env->max_images)
        return gs_diag_set(d, GS_EINVAL, "%d images, at most %d per request", n_images,
                           env->max_images);
    json_error_t je;
    json_t *o = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!o)
        return gs_diag_set(d, GS_EINVAL, "request JSON: %s at byte %d", je.text, je.position);
    gs_request *r = calloc(1, sizeof *r);
    int rc = r ? 0 : GS_ENOMEM;
    if (!rc && !json_is_object(o))
        rc = gs_diag_set(d, GS_EINVAL, "request JSON must be an object");
    if (!rc)
        rc = check_keys(o, d);
    if (!rc)
        rc = sampling(env, o, r, d);
    if (!rc)
        rc = stops(env, o, r, d);
    int think = 1, present, ign = 0;
    if (!rc && !(rc = get_bool(o, "enable_thinking", &think, &present, d)))
        r->think_off = present && !think;
    if (!rc && !(rc = get_bool(o, "ignore_eos", &ign, &present, d)) && ign)
        r->job_flags |= GS_JOB_IGNORE_EOS;
    if (!rc) {
        const json_t *s = json_object_get(o, "cache_salt");
        if (s && !json_is_string(s))
            rc = gs_diag_set(d, GS_EINVAL, "'cache_salt' must be a string");
        else if (s)
            r->cache_salt = salt_hash(json_string_value(s), json_string_length(s));
    }
    long long mt = 0;
    int have_mt = 0;
    if (!rc)
        rc = get_int(o, "max_tokens", 1, INT32_MAX, &mt, &have_mt, d);
    /* Headers, prompt and context first; the pixels last (image_tokens). */
    int32_t *n_tok = n_images ? calloc((size_t)n_images, sizeof *n_tok) : NULL;
    if (!rc && n_images && !n_tok)
        rc = GS_ENOMEM;
    if (!rc) {
        r->n_images = n_images;
        rc = image_tokens(env, blobs, n_images, n_tok, d);
    }
    if (!rc) {
        int mode = !json_object_get(o, "enable_thinking") ? GS_THINK_DEFAULT
                   : r->think_off                         ? GS_THINK_OFF
                                                          : GS_THINK_ON;
        rc = prompt(env, o, r, mode, n_tok, d);
    }
    if (!rc) {
        const int32_t room = env->max_model_len - r->n_ids;
        if (have_mt) {
            if (mt > room)
                rc = gs_diag_set(d, GS_ECONTEXT,
                                 "the prompt (%d tokens) plus max_tokens (%lld) exceeds the "
                                 "context of %d tokens",
                                 r->n_ids, mt, env->max_model_len);
            r->max_tokens = (int32_t)mt;
        } else {
            const gs_generation_config *g = env->gen;
            int32_t def = g && g->present && g->has_max_new_tokens && g->max_new_tokens > 0
                              ? g->max_new_tokens
                              : env->default_max_tokens;
            if (def <= 0)
                def = room;
            r->max_tokens = def < room ? def : room;
            if (room < 1)
                rc = gs_diag_set(d, GS_ECONTEXT,
                                 "the prompt (%d tokens) fills the context of %d tokens", r->n_ids,
                                 env->max_model_len);
        }
    }
    if (!rc)
        rc = images(env, blobs, n_tok, r, d);
    free(n_tok);
    json_decref(o);
    if (rc) {
        gs_request_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void gs_request_to_job(gs_request *r, gs_engine_job *job)
{
    memset(job, 0, sizeof *job);
    job->prompt = r->ids;
    job->n_prompt = r->n_ids;
    job->images = r->images;
    job->n_images = r->n_images;
    job->sampling = r->sampling;
    job->stop_ids = r->stop_ids;
    job->n_stop_ids = r->n_stop_ids;
    job->stop_strings = (const char *const *)r->stops;
    job->n_stop_strings = r->n_stops;
    job->max_tokens = r->max_tokens;
    job->flags = r->job_flags;
    job->cache_salt = r->cache_salt;
    /* The engine releases the pixels from here on (gs_engine_image.release). */
    for (int32_t i = 0; i < r->n_images; i++)
        r->patches[i] = NULL;
}
