/* json_lift.c - long data: URL payloads lifted out of a JSON body before
 * it is parsed (json_lift.h).
 *
 * The scan finds string tokens as JSON's lexer does: outside a string
 * every '"' starts one, inside one a backslash escapes the next byte and
 * an unescaped '"' ends it (memchr finds both, so the scan runs at memory
 * speed). A payload is lifted only when it is printable ASCII without
 * quotes or backslashes, which is valid string content for jansson
 * whatever it holds; so the body with markers in its place parses exactly
 * when the original does, into the same tree but for those strings. */
#include "gateway/json_lift.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEADER_MAX 256 /* "data:<type>;base64," is looked for in this many bytes */

static int printable(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] > 0x7e)
            return 0;
    return 1;
}

static int has_base64_param(const char *s, const char *comma)
{
    static const char tag[] = ";base64";
    for (const char *p = s; p + sizeof tag - 1 <= comma; p++)
        if (!memcmp(p, tag, sizeof tag - 1))
            return 1;
    return 0;
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Whether [key_end + 1, q) is a key's colon between whitespace: the string
 * opening at q is the value of the key closing at key_end. */
static int value_follows(const char *key_end, const char *q)
{
    const char *k = key_end + 1;
    while (k < q && is_ws(*k))
        k++;
    if (k == q || *k != ':')
        return 0;
    for (k++; k < q && is_ws(*k); k++)
        ;
    return k == q;
}

/* The end (closing quote) of the string whose content starts at s, or
 * NULL when it has none; *esc: it holds an escape; *other: one that is
 * not "\/" (JSON's escaped slash, as PHP's encoder writes every '/').
 * *unsafe: it holds the escape \u0001, the marker's (then nothing may be
 * lifted). */
static const char *string_end(const char *s, const char *end, int *esc, int *other, int *unsafe)
{
    *esc = *other = 0;
    /* q: the first '"' at or after s. It is looked for again only when an
     * escape took it (\"): searching from every escape would make a long
     * string with many escapes cost its length times their number. */
    const char *q = memchr(s, '"', (size_t)(end - s));
    for (;;) {
        if (!q)
            return NULL;
        const char *bs = memchr(s, '\\', (size_t)(q - s));
        if (!bs)
            return q;
        *esc = 1;
        if (bs + 1 >= end)
            return NULL;
        if (bs[1] != '/')
            *other = 1;
        if (bs[1] == 'u' && end - bs >= 6 && !memcmp(bs + 2, "0001", 4))
            *unsafe = 1;
        s = bs + 2;
        if (s > q)
            q = s < end ? memchr(s, '"', (size_t)(end - s)) : NULL;
    }
}

/* The body with the payloads replaced (owned, *out_len bytes) in *out, or
 * NULL with nothing lifted. Returns 0, or -1 out of memory. */
static int lift_body(const char *b, size_t len, gs_json_lift *lift, char **out, size_t *out_len)
{
    const char *p = b, *end = b + len, *copied = b;
    char *o = NULL;
    size_t ol = 0;
    int unsafe = 0;
    lift->n = 0;
    *out = NULL;
    /* The last string seen: where it ended, and whether it could be an
     * image URL's key ("url" or "image_url", unescaped). */
    const char *key_end = NULL;
    int url_key = 0;
    while (p < end) {
        const char *q = memchr(p, '"', (size_t)(end - p));
        if (!q)
            break;
        const char *s = q + 1;
        int esc, other;
        const char *e = string_end(s, end, &esc, &other, &unsafe);
        if (!e || unsafe)
            break; /* unterminated: jansson says so; unsafe: see below */
        p = e + 1;
        const size_t n = (size_t)(e - s);
        /* Only a value right after an image URL's key ("url": or
         * "image_url":) is lifted: other strings (a text part that holds
         * a data: URL) stay as they are. */
        const int after_url_key = url_key && value_follows(key_end, q);
        url_key =
            !esc && ((n == 3 && !memcmp(s, "url", 3)) || (n == 9 && !memcmp(s, "image_url", 9)));
        key_end = e;
        if (!after_url_key || other || lift->n >= GS_JSON_LIFT_MAX || n < 5 + GS_JSON_LIFT_MIN ||
            memcmp(s, "data:", 5) != 0)
            continue;
        const char *comma = memchr(s, ',', n < HEADER_MAX ? n : HEADER_MAX);
        if (!comma || (size_t)(e - comma - 1) < GS_JSON_LIFT_MIN || !has_base64_param(s, comma))
            continue;
        /* Printable, and its only escapes "\/" (other is 0): valid
         * string content whatever it holds. */
        if (!printable(comma + 1, (size_t)(e - comma - 1)))
            continue;
        if (!o && !(o = malloc(len + 1))) /* a marker is shorter than what it replaces */
            return -1;
        const size_t head = (size_t)(comma + 1 - copied);
        memcpy(o + ol, copied, head);
        ol += head;
        ol += (size_t)snprintf(o + ol, len + 1 - ol, "\\u0001%d", lift->n);
        lift->spans[lift->n].p = comma + 1;
        lift->spans[lift->n].len = (size_t)(e - comma - 1);
        lift->spans[lift->n].slashes = esc && memchr(comma + 1, '\\', (size_t)(e - comma - 1));
        lift->n++;
        copied = e;
    }
    if (unsafe || !o) { /* a U+0001 of the client's own would pass for a marker */
        free(o);
        lift->n = 0;
        return 0;
    }
    memcpy(o + ol, copied, (size_t)(end - copied));
    ol += (size_t)(end - copied);
    *out = o;
    *out_len = ol;
    return 0;
}

json_t *gs_json_load_lifted(const char *body, size_t len, size_t flags, gs_json_lift *lift,
                            json_error_t *je)
{
    char *lifted = NULL;
    size_t llen = 0;
    if (lift_body(body, len, lift, &lifted, &llen)) {
        snprintf(je->text, sizeof je->text, "out of memory");
        je->position = 0;
        return NULL;
    }
    if (!lifted)
        return json_loadb(body, len, flags, je);
    json_t *v = json_loadb(lifted, llen, flags, je);
    free(lifted);
    if (!v) { /* the error as the client's body has it (same outcome: see the top) */
        lift->n = 0;
        v = json_loadb(body, len, flags, je);
    }
    return v;
}

const gs_json_span *gs_json_lift_find(const gs_json_lift *lift, const char *s)
{
    if (!lift || !s || s[0] != '\x01' || s[1] < '0' || s[1] > '9')
        return NULL;
    int k = 0;
    for (s++; *s >= '0' && *s <= '9' && k < GS_JSON_LIFT_MAX; s++)
        k = k * 10 + (*s - '0');
    return *s == '\0' && k < lift->n ? &lift->spans[k] : NULL;
}

char *gs_json_span_unescape(const gs_json_span *sp, size_t *n)
{
    char *o = malloc(sp->len ? sp->len : 1);
    if (!o)
        return NULL;
    size_t k = 0;
    for (const char *p = sp->p, *end = sp->p + sp->len; p < end;) {
        const char *bs = memchr(p, '\\', (size_t)(end - p));
        const char *stop = bs ? bs : end;
        memcpy(o + k, p, (size_t)(stop - p));
        k += (size_t)(stop - p);
        p = bs ? bs + 1 : end; /* the '/' after it is copied with the next run */
    }
    *n = k;
    return o;
}
