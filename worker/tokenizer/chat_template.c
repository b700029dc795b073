/* chat_template.c - GLM-4.6V chat template renderer (see chat_template.h).
 *
 * Each render_* function below is one branch of chat_template.jinja, with
 * the whitespace that trim_blocks / lstrip_blocks leave written out as
 * literals. A first pass checks every message's role and finds the last
 * user turn (the template's ns.last_user_index); the second pass renders
 * and validates content as it goes.
 * Owns the output it builds until it hands it over. Thread-safe: no
 * globals. */
#include "worker/tokenizer/chat_template.h"

#include <stdlib.h>
#include <string.h>

#include "worker/tokenizer/chat_json.h"
#include "worker/tokenizer/utf8.h"

#define IMAGE_PH "<|begin_of_image|><|image|><|end_of_image|>"
#define VIDEO_PH "<|begin_of_video|><|video|><|end_of_video|>"

typedef enum { R_SYSTEM, R_USER, R_ASSISTANT, R_TOOL } role_t;
enum { K_TEXT, K_IMAGE, K_VIDEO };

typedef struct {
    gs_sbuf out;
    gs_chat_media *media;
    size_t n_media, cap_media;
    int32_t n_images, n_videos;
    int think_off;
    gs_diag *d;
} rctx;

/* A message key; null counts as absent (transformers drops None values). */
static json_t *field(const json_t *m, const char *key)
{
    json_t *v = json_object_get(m, key);
    return v && !json_is_null(v) ? v : NULL;
}

static int add_media(rctx *c, int kind, size_t msg, size_t item)
{
    if (c->n_media == c->cap_media) {
        size_t cap = c->cap_media ? c->cap_media * 2 : 8;
        gs_chat_media *m = realloc(c->media, cap * sizeof *m);
        if (!m)
            return GS_ENOMEM;
        c->media = m;
        c->cap_media = cap;
    }
    gs_chat_media *e = &c->media[c->n_media++];
    e->kind = kind == K_IMAGE ? GS_MEDIA_IMAGE : GS_MEDIA_VIDEO;
    e->message = (int32_t)msg;
    e->item = (int32_t)item;
    if (kind == K_IMAGE)
        c->n_images++;
    else
        c->n_videos++;
    return 0;
}

static int put_media(rctx *c, gs_sbuf *dst, int kind, size_t msg, size_t item)
{
    gs_sbuf_puts(dst, kind == K_IMAGE ? IMAGE_PH : VIDEO_PH);
    return add_media(c, kind, msg, item);
}

/* Kind of a content item of a user / system / assistant message. The
 * template tests `item.type == 'video' or 'video' in item` (then image,
 * then text) in user turns, and text first in visible_text(); items on
 * which the two orders disagree are refused. */
static int item_kind(rctx *c, size_t i, size_t j, const json_t *item, int *kind)
{
    if (!json_is_object(item))
        return gs_diag_set(c->d, GS_EINVAL, "messages[%zu].content[%zu]: expected an object", i, j);
    json_t *type = json_object_get(item, "type");
    int img = json_object_get(item, "image") != NULL, vid = json_object_get(item, "video") != NULL;
    if (type && !json_is_null(type)) {
        const char *t = json_string_value(type);
        if (!t)
            return gs_diag_set(c->d, GS_EINVAL,
                               "messages[%zu].content[%zu].type: expected a "
                               "string",
                               i, j);
        if (!strcmp(t, "text") && !img && !vid) {
            *kind = K_TEXT;
            if (!json_is_string(json_object_get(item, "text")))
                return gs_diag_set(c->d, GS_EINVAL,
                                   "messages[%zu].content[%zu].text: expected a string", i, j);
            return 0;
        }
        if ((!strcmp(t, "image") || !strcmp(t, "image_url")) && !vid) {
            *kind = K_IMAGE;
            return 0;
        }
        if ((!strcmp(t, "video") || !strcmp(t, "video_url")) && !img) {
            *kind = K_VIDEO;
            return 0;
        }
        if (!strcmp(t, "text") || !strcmp(t, "image") || !strcmp(t, "image_url") ||
            !strcmp(t, "video") || !strcmp(t, "video_url"))
            return gs_diag_set(c->d, GS_EINVAL,
                               "messages[%zu].content[%zu]: type \"%s\" with "
                               "an \"%s\" key is ambiguous",
                               i, j, t, img ? "image" : "video");
        return gs_diag_set(c->d, GS_EINVAL,
                           "messages[%zu].content[%zu].type: unknown type "
                           "\"%.40s\"",
                           i, j, t);
    }
    if (img != vid) {
        *kind = img ? K_IMAGE : K_VIDEO;
        return 0;
    }
    return gs_diag_set(c->d, GS_EINVAL, "messages[%zu].content[%zu]: missing \"type\"", i, j);
}

static void put_json_string(gs_sbuf *b, const json_t *s)
{
    gs_sbuf_put(b, json_string_value(s), json_string_length(s));
}

/* The template's visible_text(content) for system and assistant turns:
 * strings as they are, text items, placeholders for media items. */
static int visible_text(rctx *c, size_t i, const json_t *content, int allow_media, gs_sbuf *dst)
{
    if (!content)
        return 0;
    if (json_is_string(content)) {
        put_json_string(dst, content);
        return 0;
    }
    if (!json_is_array(content))
        return gs_diag_set(c->d, GS_EINVAL,
                           "messages[%zu].content: expected a string or an "
                           "array",
                           i);
    for (size_t j = 0; j < json_array_size(content); j++) {
        const json_t *item = json_array_get(content, j);
        if (json_is_string(item)) {
            put_json_string(dst, item);
            continue;
        }
        int kind, rc;
        if ((rc = item_kind(c, i, j, item, &kind)))
            return rc;
        if (kind == K_TEXT) {
            put_json_string(dst, json_object_get(item, "text"));
        } else if (!allow_media) {
            return gs_diag_set(c->d, GS_EINVAL,
                               "messages[%zu].content[%zu]: an assistant "
                               "message cannot carry images or videos",
                               i, j);
        } else if ((rc = put_media(c, dst, kind, i, j))) {
            return rc;
        }
    }
    return 0;
}

static int ends_with(const gs_sbuf *b, size_t from, const char *s)
{
    size_t n = strlen(s);
    return b->n - from >= n && memcmp(b->p + b->n - n, s, n) == 0;
}

/* {%- if m.role == 'user' -%} */
static int render_user(rctx *c, size_t i, const json_t *m)
{
    gs_sbuf_puts(&c->out, "<|user|>\n");
    size_t start = c->out.n;
    const json_t *content = field(m, "content");
    if (content && json_is_string(content)) {
        put_json_string(&c->out, content);
    } else if (content) {
        if (!json_is_array(content))
            return gs_diag_set(c->d, GS_EINVAL,
                               "messages[%zu].content: expected a string or an "
                               "array",
                               i);
        for (size_t j = 0; j < json_array_size(content); j++) {
            const json_t *item = json_array_get(content, j);
            int kind, rc;
            if ((rc = item_kind(c, i, j, item, &kind)))
                return rc;
            if (kind == K_TEXT)
                put_json_string(&c->out, json_object_get(item, "text"));
            else if ((rc = put_media(c, &c->out, kind, i, j)))
                return rc;
        }
    }
    /* What was just written is visible_text(m.content). */
    if (c->think_off && !ends_with(&c->out, start, "/nothink"))
        gs_sbuf_puts(&c->out, "/nothink");
    return 0;
}

/* Python str.isspace() characters (what str.strip() removes). */
static int py_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
           cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
           cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* Python s.strip() on s[*a, *b). Invalid UTF-8 bytes count as non-space. */
static void py_strip(const char *s, size_t *a, size_t *b)
{
    while (*a < *b) {
        gs_utf8_kind k;
        uint32_t cp;
        size_t l = gs_utf8_next((const uint8_t *)s + *a, *b - *a, &k, &cp);
        if (k != GS_UTF8_OK || !py_space(cp))
            break;
        *a += l;
    }
    while (*b > *a) {
        size_t st = *b - 1;
        while (st > *a && ((uint8_t)s[st] & 0xC0) == 0x80 && *b - st < 4)
            st--;
        gs_utf8_kind k;
        uint32_t cp;
        size_t l = gs_utf8_next((const uint8_t *)s + st, *b - st, &k, &cp);
        if (k != GS_UTF8_OK || st + l != *b || !py_space(cp))
            break;
        *b = st;
    }
}

/* Offset of the last occurrence of pat in s[0, n), or -1. */
static long last_of(const char *s, size_t n, const char *pat)
{
    size_t pl = strlen(pat);
    long last = -1;
    const char *p = s;
    while ((p = memmem(p, n - (size_t)(p - s), pat, pl))) {
        last = p - s;
        p++;
    }
    return last;
}

static int render_tool_calls(rctx *c, size_t i, const json_t *calls)
{
    if (!json_is_array(calls))
        return gs_diag_set(c->d, GS_EINVAL, "messages[%zu].tool_calls: expected an array", i);
    for (size_t j = 0; j < json_array_size(calls); j++) {
        const json_t *tc = json_array_get(calls, j), *fn = json_object_get(tc, "function");
        if (!json_is_object(tc))
            return gs_diag_set(c->d, GS_EINVAL,
                               "messages[%zu].tool_calls[%zu]: expected an "
                               "object",
                               i, j);
        if (fn && !json_is_null(fn) && !(json_is_object(fn) && json_object_size(fn) == 0)) {
            if (!json_is_object(fn))
                return gs_diag_set(c->d, GS_EINVAL,
                                   "messages[%zu].tool_calls[%zu].function: "
                                   "expected an object",
                                   i, j);
            tc = fn; /* {%- set tc = tc.function %} */
        }
        const json_t *name = json_object_get(tc, "name"), *args = json_object_get(tc, "arguments");
        if (!json_is_string(name))
            return gs_diag_set(c->d, GS_EINVAL,
                               "messages[%zu].tool_calls[%zu]: name: expected "
                               "a string",
                               i, j);
        json_t *parsed = NULL;
        if (json_is_string(args)) { /* the OpenAI form: a JSON text */
            parsed = json_loadb(json_string_value(args), json_string_length(args),
                                JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
            args = parsed;
        }
        if (!json_is_object(args)) {
            json_decref(parsed);
            return gs_diag_set(c->d, GS_EINVAL,
                               "messages[%zu].tool_calls[%zu]: arguments: "
                               "expected an object or a JSON object string",
                               i, j);
        }
        gs_sbuf_puts(&c->out, "\n<tool_call>");
        put_json_string(&c->out, name);
        gs_sbuf_puts(&c->out, "\n");
        const char *k;
        size_t kl;
        json_t *v;
        json_object_keylen_foreach((json_t *)args, k, kl, v)
        {
            gs_sbuf_puts(&c->out, "<arg_key>");
            gs_sbuf_put(&c->out, k, kl);
            gs_sbuf_puts(&c->out, "</arg_key>\n<arg_value>");
            if (json_is_string(v))
                put_json_string(&c->out, v);
            else
                gs_pyjson_dump(&c->out, v);
            gs_sbuf_puts(&c->out, "</arg_value>\n");
        }
        gs_sbuf_puts(&c->out, "</tool_call>");
        json_decref(parsed);
    }
    return 0;
}

/* {%- elif m.role == 'assistant' -%} */
static int render_assistant(rctx *c, size_t i, const json_t *m, int after_last_user)
{
    gs_sbuf_puts(&c->out, "<|assistant|>");
    gs_sbuf content = {0};
    int rc = visible_text(c, i, field(m, "content"), 0, &content);
    if (!rc && content.oom)
        rc = GS_ENOMEM;
    if (rc) {
        free(content.p);
        return rc;
    }
    const char *s = content.p ? content.p : "";
    size_t cs = 0, ce = content.n; /* content = s[cs, ce) */
    const char *r = "";
    size_t rs = 0, re = 0; /* reasoning = r[rs, re) */
    const json_t *rj = field(m, "reasoning_content");
    if (!rj)
        rj = field(m, "thinking");
    if (!rj)
        rj = field(m, "reasoning");
    if (rj && !json_is_string(rj)) {
        free(content.p);
        return gs_diag_set(c->d, GS_EINVAL, "messages[%zu].reasoning_content: expected a string",
                           i);
    }
    if (rj) {
        r = json_string_value(rj);
        re = json_string_length(rj);
    } else if (content.n && memmem(s, content.n, "</think>", 8)) {
        /* content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') */
        r = s;
        re = (size_t)((const char *)memmem(s, content.n, "</think>", 8) - s);
        while (re > 0 && r[re - 1] == '\n')
            re--;
        long o = last_of(r, re, "<think>");
        rs = o >= 0 ? (size_t)o + 7 : 0;
        while (rs < re && r[rs] == '\n')
            rs++;
        /* content.split('</think>')[-1].lstrip('\n') */
        cs = (size_t)last_of(s, content.n, "</think>") + 8;
        while (cs < ce && s[cs] == '\n')
            cs++;
    }
    if (after_last_user && re > rs) {
        py_strip(r, &rs, &re);
        gs_sbuf_puts(&c->out, "\n<think>");
        gs_sbuf_put(&c->out, r + rs, re - rs);
        gs_sbuf_puts(&c->out, "</think>");
    } else {
        gs_sbuf_puts(&c->out, "\n<think></think>");
    }
    py_strip(s, &cs, &ce);
    if (ce > cs) {
        gs_sbuf_puts(&c->out, "\n");
        gs_sbuf_put(&c->out, s + cs, ce - cs);
    }
    free(content.p);
    const json_t *calls = field(m, "tool_calls");
    if (calls && !(json_is_array(calls) && json_array_size(calls) == 0))
        return render_tool_calls(c, i, calls);
    return 0;
}

/* One item of a tool message's list content. */
static int render_tool_item(rctx *c, size_t i, size_t j, const json_t *tr)
{
    if (json_is_object(tr) && json_object_get(tr, "type")) {
        const json_t *type = json_object_get(tr, "type");
        const char *t = json_is_string(type) ? json_string_value(type) : "";
        char low[16] = {0}; /* tr.type | lower: only short ASCII names can match */
        size_t n = json_is_string(type) ? json_string_length(type) : 0;
        for (size_t k = 0; k < n && k < sizeof low - 1; k++)
            low[k] = (char)(t[k] >= 'A' && t[k] <= 'Z' ? t[k] + 32 : t[k]);
        if (n >= sizeof low)
            low[0] = 0;
        const json_t *text = json_object_get(tr, "text");
        if (!strcmp(low, "text") && text) {
            if (gs_pystr_scalar(&c->out, text))
                return gs_diag_set(c->d, GS_EINVAL,
                                   "messages[%zu].content[%zu].text: expected a "
                                   "string",
                                   i, j);
            return 0;
        }
        if (!strcmp(low, "image") || !strcmp(low, "image_url"))
            return put_media(c, &c->out, K_IMAGE, i, j);
        if (!strcmp(low, "video") || !strcmp(low, "video_url"))
            return put_media(c, &c->out, K_VIDEO, i, j);
        gs_pyjson_dump(&c->out, tr);
        return 0;
    }
    /* {{ tr.output if tr.output is defined else tr }} */
    const json_t *v = json_is_object(tr) ? json_object_get(tr, "output") : tr;
    if (!v || gs_pystr_scalar(&c->out, v))
        return gs_diag_set(c->d, GS_EINVAL,
                           "messages[%zu].content[%zu]: a tool response item "
                           "must be a string, a typed object or {\"output\": string}",
                           i, j);
    return 0;
}

/* {%- elif m.role == 'tool' -%} */
static int render_tool(rctx *c, size_t i, const json_t *m, int prev_is_tool)
{
    const json_t *content = field(m, "content");
    if (content && !json_is_string(content) && !json_is_array(content))
        return gs_diag_set(c->d, GS_EINVAL,
                           "messages[%zu].content: expected a string or an "
                           "array",
                           i);
    if (!prev_is_tool)
        gs_sbuf_puts(&c->out, "<|observation|>");
    gs_sbuf_puts(&c->out, "\n<tool_response>\n");
    if (content && json_is_string(content)) {
        put_json_string(&c->out, content);
        gs_sbuf_puts(&c->out, "\n</tool_response>\n");
        return 0;
    }
    for (size_t j = 0; content && j < json_array_size(content); j++) {
        int rc = render_tool_item(c, i, j, json_array_get(content, j));
        if (rc)
            return rc;
    }
    gs_sbuf_puts(&c->out, "\n</tool_response>");
    return 0;
}

static int render_tools(rctx *c, const json_t *tools)
{
    if (!tools || json_is_null(tools) || (json_is_array(tools) && !json_array_size(tools)))
        return 0;
    if (!json_is_array(tools))
        return gs_diag_set(c->d, GS_EINVAL, "tools: expected an array");
    gs_sbuf_puts(&c->out, "<|system|>\n# Tools\n\nYou may call one or more functions to assist "
                          "with the user query.\n\nYou are provided with function signatures "
                          "within <tools></tools> XML tags:\n<tools>\n");
    for (size_t j = 0; j < json_array_size(tools); j++) {
        if (!json_is_object(json_array_get(tools, j)))
            return gs_diag_set(c->d, GS_EINVAL, "tools[%zu]: expected an object", j);
        gs_pyjson_dump(&c->out, json_array_get(tools, j));
        gs_sbuf_puts(&c->out, "\n");
    }
    gs_sbuf_puts(&c->out, "</tools>\n\nFor each function call, output the function name and "
                          "arguments within the following XML format:\n<tool_call>{function-name}"
                          "\n<arg_key>{arg-key-1}</arg_key>\n<arg_value>{arg-value-1}</arg_value>"
                          "\n<arg_key>{arg-key-2}</arg_key>\n<arg_value>{arg-value-2}</arg_value>"
                          "\n...\n</tool_call>");
    return 0;
}

static int parse_role(rctx *c, size_t i, const json_t *m, role_t *r)
{
    if (!json_is_object(m))
        return gs_diag_set(c->d, GS_EINVAL, "messages[%zu]: expected an object", i);
    const char *s = json_string_value(json_object_get(m, "role"));
    if (!s)
        return gs_diag_set(c->d, GS_EINVAL, "messages[%zu].role: expected a string", i);
    if (!strcmp(s, "system"))
        *r = R_SYSTEM;
    else if (!strcmp(s, "user"))
        *r = R_USER;
    else if (!strcmp(s, "assistant"))
        *r = R_ASSISTANT;
    else if (!strcmp(s, "tool"))
        *r = R_TOOL;
    else
        return gs_diag_set(c->d, GS_EINVAL, "messages[%zu].role: unknown role \"%.40s\"", i, s);
    return 0;
}

static int render(rctx *c, const json_t *messages, const json_t *tools, const gs_chat_options *opt)
{
    if (!json_is_array(messages))
        return gs_diag_set(c->d, GS_EINVAL, "messages: expected an array");
    size_t n = json_array_size(messages);
    if (n == 0)
        return gs_diag_set(c->d, GS_EINVAL, "messages: empty conversation");
    long last_user = -1;
    role_t r = R_SYSTEM, prev = R_SYSTEM;
    int rc;
    for (size_t i = 0; i < n; i++) {
        if ((rc = parse_role(c, i, json_array_get(messages, i), &r)))
            return rc;
        if (r == R_USER)
            last_user = (long)i;
    }
    gs_sbuf_puts(&c->out, "[gMASK]<sop>");
    if ((rc = render_tools(c, tools)))
        return rc;
    for (size_t i = 0; i < n; i++) {
        const json_t *m = json_array_get(messages, i);
        parse_role(c, i, m, &r);
        switch (r) {
        case R_USER:
            rc = render_user(c, i, m);
            break;
        case R_ASSISTANT:
            rc = render_assistant(c, i, m, (long)i > last_user);
            break;
        case R_TOOL:
            rc = render_tool(c, i, m, i > 0 && prev == R_TOOL);
            break;
        case R_SYSTEM:
            gs_sbuf_puts(&c->out, "<|system|>\n");
            rc = visible_text(c, i, field(m, "content"), 1, &c->out);
            break;
        }
        if (rc)
            return rc;
        prev = r;
    }
    if (opt->add_generation_prompt) {
        gs_sbuf_puts(&c->out, "<|assistant|>\n");
        if (c->think_off)
            gs_sbuf_puts(&c->out, "<think></think>\n");
    }
    return c->out.oom ? GS_ENOMEM : 0;
}

int gs_chat_render_ex(const json_t *messages, const json_t *tools, const gs_chat_options *opt,
                      gs_chat_result *res, gs_diag *d)
{
    static const gs_chat_options dflt = {GS_THINK_DEFAULT, 1};
    memset(res, 0, sizeof *res);
    if (!opt)
        opt = &dflt;
    rctx c = {{0}, NULL, 0, 0, 0, 0, opt->enable_thinking == GS_THINK_OFF, d};
    int rc = render(&c, messages, tools, opt);
    if (!rc && c.out.oom)
        rc = GS_ENOMEM;
    if (rc) {
        if (rc == GS_ENOMEM)
            gs_diag_set(d, rc, "chat template: out of memory");
        free(c.out.p);
        free(c.media);
        return rc;
    }
    res->text = c.out.p;
    res->len = c.out.n;
    res->n_images = c.n_images;
    res->n_videos = c.n_videos;
    res->media = c.media;
    return 0;
}

void gs_chat_result_free(gs_chat_result *r)
{
    if (!r)
        return;
    free(r->text);
    free(r->media);
    memset(r, 0, sizeof *r);
}

int gs_chat_render(const json_t *messages, const gs_chat_options *opt, char **out, gs_diag *d)
{
    gs_chat_result r;
    int rc = gs_chat_render_ex(messages, NULL, opt, &r, d);
    *out = rc ? NULL : r.text;
    free(r.media);
    return rc;
}

/* FNV-1a 64 of the template this file implements (4,605 bytes, sha256
 * bf6cfe13...b387fd, glm4v-spec.md 6.2), without a final newline. */
#define TEMPLATE_FNV 0x1c1a6295d7a1c36bull
#define TEMPLATE_LEN 4605u

int gs_chat_template_check(const char *text, size_t len, gs_diag *d)
{
    if (len && text[len - 1] == '\n')
        len--;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)text[i]) * 0x100000001b3ull;
    if (len != TEMPLATE_LEN || h != TEMPLATE_FNV)
        return gs_diag_set(d, GS_EUNSUPPORTED,
                           "chat_template.jinja (%zu bytes, fnv %016llx) is not the GLM-4.6V "
                           "template this server renders",
                           len, (unsigned long long)h);
    return 0;
}
