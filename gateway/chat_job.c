/* chat_job.c - OpenAI chat request -> worker job (chat_job.h). */
#include "gateway/chat_job.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int b64_val(int ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+' || ch == '-')
        return 62;
    if (ch == '/' || ch == '_')
        return 63;
    return -1;
}

/* Strict base64 (standard or URL alphabet, padding optional, no other
 * bytes). Returns owned bytes or NULL; *bad: 1 for invalid input. */
uint8_t *gs_b64_decode(const char *s, size_t n, size_t *out_len, int *bad)
{
    *bad = 0;
    while (n && s[n - 1] == '=')
        n--;
    if (n % 4 == 1) {
        *bad = 1;
        return NULL;
    }
    uint8_t *o = malloc(n / 4 * 3 + 3);
    if (!o)
        return NULL;
    size_t k = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_val((unsigned char)s[i]);
        if (v < 0) {
            free(o);
            *bad = 1;
            return NULL;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[k++] = (uint8_t)(acc >> bits);
        }
    }
    *out_len = k;
    return o;
}

/* One image_url part -> image bytes, and the part becomes {"type":
 * "image"}. 0 or an HTTP status with msg filled. */
static int take_image(const gs_chat_job_params *p, json_t *part, gs_chat_job *im, char *msg,
                      size_t cap, int mi, int pi)
{
    const json_t *iu = json_object_get(part, "image_url");
    const char *url = json_is_string(iu)   ? json_string_value(iu)
                      : json_is_object(iu) ? json_string_value(json_object_get(iu, "url"))
                                           : NULL;
    if (!url) {
        snprintf(msg, cap, "messages[%d].content[%d].image_url must have a url", mi, pi);
        return 400;
    }
    const int remote = !strncmp(url, "http://", 7) || !strncmp(url, "https://", 8);
    if (strncmp(url, "data:", 5) && !(remote && p->fetch_remote)) {
        snprintf(msg, cap,
                 remote ? "messages[%d].content[%d]: remote image URLs are not fetched by this "
                          "server (fetch_images is off); send the image as a base64 data: URL"
                        : "messages[%d].content[%d]: expected a data: URL (or http/https when "
                          "the server fetches images)",
                 mi, pi);
        return 400;
    }
    if (im->n_images >= p->max_images || im->n_images >= GS_IPC_MAX_IMAGES) {
        snprintf(msg, cap, "at most %d images per request", p->max_images);
        return 400;
    }
    if (remote) { /* fetched by the route before the job is sent */
        if (strlen(url) > 8192 || !(im->urls[im->n_images] = strdup(url))) {
            snprintf(msg, cap, "messages[%d].content[%d]: the image URL is too long", mi, pi);
            return 400;
        }
        im->n_images++;
        json_object_clear(part);
        json_object_set_new(part, "type", json_string("image"));
        return 0;
    }
    const char *comma = strchr(url, ',');
    if (!comma || !strstr(url, ";base64") || strstr(url, ";base64") > comma) {
        snprintf(msg, cap, "messages[%d].content[%d]: expected data:<type>;base64,<data>", mi, pi);
        return 400;
    }
    if (strncmp(url + 5, "image/", 6) && url + 5 != strstr(url, ";base64")) {
        snprintf(msg, cap, "messages[%d].content[%d]: the data URL is not an image", mi, pi);
        return 415;
    }
    size_t len = 0;
    int bad = 0;
    uint8_t *b = gs_b64_decode(comma + 1, strlen(comma + 1), &len, &bad);
    if (!b) {
        snprintf(msg, cap,
                 bad ? "messages[%d].content[%d]: invalid base64 image data" : "out of memory", mi,
                 pi);
        return bad ? 400 : 503;
    }
    if (len == 0) {
        free(b);
        snprintf(msg, cap, "messages[%d].content[%d]: empty image", mi, pi);
        return 400;
    }
    im->bytes[im->n_images] = b;
    im->images[im->n_images].p = (const char *)b;
    im->images[im->n_images].len = (uint32_t)len;
    im->n_images++;
    json_object_clear(part);
    json_object_set_new(part, "type", json_string("image"));
    return 0;
}

static int is_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return 0;
    return 1;
}

/* Copies a sampling key when present (the worker checks ranges). */
static int copy_key(json_t *job, const json_t *req, const char *from, const char *to)
{
    json_t *v = json_object_get(req, from);
    if (!v || json_is_null(v))
        return 0;
    return json_object_set(job, to, v);
}

/* Builds the job from the request body. 0, or an HTTP status with msg
 * (and *param naming the field). */
static int build(const gs_chat_job_params *p, const json_t *req, json_t **job_out, gs_chat_job *c,
                 char *msg, size_t cap, const char **param)
{
    gs_chat_job *im = c;
    *param = NULL;
    json_t *msgs = json_object_get(req, "messages");
    if (!json_is_array(msgs) || !json_array_size(msgs)) {
        *param = "messages";
        snprintf(msg, cap, "'messages' must be a non-empty array");
        return 400;
    }
    const json_t *n = json_object_get(req, "n");
    if (n && !json_is_null(n) && !(json_is_integer(n) && json_integer_value(n) == 1)) {
        *param = "n";
        snprintf(msg, cap, "only n=1 is supported");
        return 400;
    }
    const json_t *lp = json_object_get(req, "logprobs");
    if (lp && json_is_true(lp)) {
        *param = "logprobs";
        snprintf(msg, cap, "logprobs are not supported");
        return 400;
    }
    const json_t *rf = json_object_get(req, "response_format");
    if (rf && !json_is_null(rf) &&
        !(json_is_object(rf) && json_is_string(json_object_get(rf, "type")) &&
          !strcmp(json_string_value(json_object_get(rf, "type")), "text"))) {
        *param = "response_format";
        snprintf(msg, cap, "only response_format {\"type\": \"text\"} is supported");
        return 400;
    }
    const json_t *st = json_object_get(req, "stream");
    if (st && !json_is_null(st) && !json_is_boolean(st)) {
        *param = "stream";
        snprintf(msg, cap, "'stream' must be a boolean");
        return 400;
    }
    c->stream = st && json_is_true(st);
    const json_t *so = json_object_get(req, "stream_options");
    c->include_usage = json_is_object(so) && json_is_true(json_object_get(so, "include_usage"));
    const json_t *model = json_object_get(req, "model");
    if (model && !json_is_null(model) && !json_is_string(model)) {
        *param = "model";
        snprintf(msg, cap, "'model' must be a string");
        return 400;
    }
    const char *served = p->model ? p->model : "";
    /* Quoted and copied names are cut at a character boundary: a split
     * UTF-8 character would make the JSON that carries them invalid. */
    const char *name = json_string_value(model);
    if (name && served[0] && strcmp(name, served)) {
        *param = "model";
        snprintf(msg, cap, "the model '%.*s' does not exist; this server serves '%s'",
                 (int)gs_ipc_utf8_clip(name, strlen(name), 200), name, served);
        return 404;
    }
    const char *shown = served[0] ? served : name ? name : "";
    snprintf(c->model, sizeof c->model, "%.*s",
             (int)gs_ipc_utf8_clip(shown, strlen(shown), GS_IPC_MAX_NAME), shown);

    json_t *job = json_object();
    json_t *jm = json_deep_copy(msgs);
    if (!job || !jm) {
        json_decref(job);
        json_decref(jm);
        snprintf(msg, cap, "out of memory");
        return 503;
    }
    json_object_set_new(job, "messages", jm);
    *job_out = job;
    /* image_url parts -> bytes; the rest of the messages is the worker's to check */
    size_t mi;
    json_t *m;
    json_array_foreach(jm, mi, m)
    {
        /* Roles and part types are ASCII words. The worker quotes an unknown
         * one cut to 40 bytes, which can split a UTF-8 character: that error
         * cannot cross the IPC (UTF-8 only) and the request never ended.
         * Refused here first. */
        const char *role = json_string_value(json_object_get(m, "role"));
        if (role && !is_ascii(role)) {
            *param = "messages";
            snprintf(msg, cap, "messages[%d].role: unknown role", (int)mi);
            return 400;
        }
        json_t *content = json_is_object(m) ? json_object_get(m, "content") : NULL;
        if (!json_is_array(content))
            continue;
        size_t pi;
        json_t *part;
        json_array_foreach(content, pi, part)
        {
            const char *type = json_string_value(json_object_get(part, "type"));
            if (type && !is_ascii(type)) {
                *param = "messages";
                snprintf(msg, cap, "messages[%d].content[%d].type: unknown type", (int)mi, (int)pi);
                return 400;
            }
            if (type && !strcmp(type, "image_url")) {
                int st2 = take_image(p, part, im, msg, cap, (int)mi, (int)pi);
                if (st2) {
                    *param = "messages";
                    return st2;
                }
            } else if (type && !strcmp(type, "image")) {
                *param = "messages";
                snprintf(msg, cap,
                         "messages[%d].content[%d]: send images as image_url parts with a data: "
                         "URL",
                         (int)mi, (int)pi);
                return 400;
            }
        }
    }
    static const char *const keys[] = {"temperature",
                                       "top_p",
                                       "top_k",
                                       "min_p",
                                       "seed",
                                       "stop",
                                       "presence_penalty",
                                       "frequency_penalty",
                                       "repetition_penalty",
                                       "tools",
                                       "ignore_eos",
                                       "stop_token_ids"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        copy_key(job, req, keys[i], keys[i]);
    const json_t *mct = json_object_get(req, "max_completion_tokens");
    if (mct && !json_is_null(mct))
        copy_key(job, req, "max_completion_tokens", "max_tokens");
    else
        copy_key(job, req, "max_tokens", "max_tokens");
    const json_t *kw = json_object_get(req, "chat_template_kwargs");
    const json_t *think = json_is_object(kw) ? json_object_get(kw, "enable_thinking") : NULL;
    if (!think)
        think = json_object_get(req, "enable_thinking");
    if (think && !json_is_null(think)) {
        if (!json_is_boolean(think)) {
            *param = "enable_thinking";
            snprintf(msg, cap, "'enable_thinking' must be a boolean");
            return 400;
        }
        json_object_set(job, "enable_thinking", (json_t *)think);
    }
    return 0;
}

void gs_chat_job_free(gs_chat_job *j)
{
    if (!j)
        return;
    free(j->json);
    for (int i = 0; i < j->n_images; i++) {
        free(j->bytes[i]);
        free(j->urls[i]);
    }
    memset(j, 0, sizeof *j);
}

void gs_chat_job_set_image(gs_chat_job *j, int k, uint8_t *bytes, size_t len)
{
    free(j->bytes[k]);
    free(j->urls[k]);
    j->urls[k] = NULL;
    j->bytes[k] = bytes;
    j->images[k].p = (const char *)bytes;
    j->images[k].len = (uint32_t)len;
}

int gs_chat_job_build(const gs_chat_job_params *p, const json_t *req, gs_chat_job *out, char *msg,
                      size_t cap, const char **param)
{
    memset(out, 0, sizeof *out);
    json_t *job = NULL;
    int st = build(p, req, &job, out, msg, cap, param);
    if (!st && !(out->json = json_dumps(job, JSON_COMPACT))) {
        st = 503;
        snprintf(msg, cap, "out of memory");
    }
    json_decref(job);
    if (st)
        gs_chat_job_free(out);
    return st;
}
