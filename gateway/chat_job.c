/* chat_job.c - OpenAI chat request -> worker job (chat_job.h). */
#include "gateway/chat_job.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* base64 digit values plus 1 (standard and URL alphabets); 0: not a digit */
static const uint8_t b64_tab[256] = {
    ['A'] = 1,  ['B'] = 2,  ['C'] = 3,  ['D'] = 4,  ['E'] = 5,  ['F'] = 6,  ['G'] = 7,  ['H'] = 8,
    ['I'] = 9,  ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16,
    ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
    ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32,
    ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40,
    ['o'] = 41, ['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
    ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
    ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63, ['/'] = 64,
    ['-'] = 63, ['_'] = 64};

/* Strict base64 (standard or URL alphabet, padding optional, no other
 * bytes). Returns owned bytes or NULL; *bad: 1 for invalid input. Four
 * digits at a time (a table, no branches but the error check): the
 * gateway decodes every uploaded image with it on its event loop. */
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
    const unsigned char *u = (const unsigned char *)s;
    size_t k = 0, i = 0;
    int ok = 1;
    for (; i + 4 <= n; i += 4) {
        const int a = b64_tab[u[i]] - 1, b = b64_tab[u[i + 1]] - 1, c = b64_tab[u[i + 2]] - 1,
                  d = b64_tab[u[i + 3]] - 1;
        ok &= (a | b | c | d) >= 0;
        const uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        o[k] = (uint8_t)(v >> 16);
        o[k + 1] = (uint8_t)(v >> 8);
        o[k + 2] = (uint8_t)v;
        k += 3;
    }
    uint32_t acc = 0;
    int bits = 0;
    for (; i < n; i++) {
        const int v = b64_tab[u[i]] - 1;
        ok &= v >= 0;
        acc = acc << 6 | (uint32_t)(v & 63);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[k++] = (uint8_t)(acc >> bits);
        }
    }
    if (!ok) {
        free(o);
        *bad = 1;
        return NULL;
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
    const gs_json_span *sp = gs_json_lift_find(p->lift, comma + 1);
    uint8_t *b;
    if (sp && sp->slashes) {
        size_t n;
        char *t = gs_json_span_unescape(sp, &n);
        b = t ? gs_b64_decode(t, n, &len, &bad) : NULL;
        free(t);
    } else {
        b = sp ? gs_b64_decode(sp->p, sp->len, &len, &bad)
               : gs_b64_decode(comma + 1, strlen(comma + 1), &len, &bad);
    }
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

/* body parsed (with the payloads lifted out, or plainly) and built into
 * *out; *lifted: whether payloads were lifted. */
static int build_body(const gs_chat_job_params *p, const char *body, size_t len, int lift_them,
                      gs_chat_job *out, char *msg, size_t cap, const char **param, int *lifted)
{
    memset(out, 0, sizeof *out);
    *param = NULL;
    json_error_t je;
    gs_json_lift lift = {0};
    json_t *req = lift_them ? gs_json_load_lifted(body, len, JSON_REJECT_DUPLICATES, &lift, &je)
                            : json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    *lifted = lift.n > 0;
    if (!req || !json_is_object(req)) {
        if (req)
            snprintf(msg, cap, "the request body must be a JSON object");
        else
            snprintf(msg, cap, "invalid JSON at byte %d: %s", je.position, je.text);
        json_decref(req);
        return 400;
    }
    gs_chat_job_params q = *p;
    q.lift = lift.n ? &lift : NULL;
    int st = gs_chat_job_build(&q, req, out, msg, cap, param);
    json_decref(req);
    return st;
}

int gs_chat_job_from_body(const gs_chat_job_params *p, const char *body, size_t len,
                          gs_chat_job *out, char *msg, size_t cap, const char **param)
{
    int lifted;
    int st = build_body(p, body, len, 1, out, msg, cap, param, &lifted);
    if (st || !lifted || !gs_chat_job_marker_leaked(out))
        return st;
    gs_chat_job_free(out);
    return build_body(p, body, len, 0, out, msg, cap, param, &lifted);
}

int gs_chat_job_marker_leaked(const gs_chat_job *j)
{
    return j->json && strstr(j->json, "\\u0001") != NULL;
}

int gs_chat_job_err_code(int status)
{
    return status == 503 ? GS_ENOMEM : status == 413 ? GS_ETOOBIG : GS_EINVAL;
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
    size_t n = st ? 0 : strlen(out->json);
    if (n > GS_IPC_MAX_REQUEST) {
        st = 413;
        snprintf(msg, cap,
                 "the request's text (messages, tools and options; images aside) is %.1f MiB, "
                 "over the %u MiB a job may carry",
                 n / 1048576.0, GS_IPC_MAX_REQUEST >> 20);
    }
    json_decref(job);
    if (st)
        gs_chat_job_free(out);
    return st;
}
