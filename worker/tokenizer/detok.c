/* detok.c - incremental whole-UTF-8 detokenizing (see detok.h).
 * Owns its input and output buffers. Not thread-safe per object. */
#include "worker/tokenizer/detok.h"

#include <stdlib.h>
#include <string.h>

#include "worker/tokenizer/utf8.h"

struct gs_detok {
    const gs_tokenizer *tok;
    unsigned flags;
    uint8_t pending[4]; /* a valid prefix of one character */
    size_t n_pending;
    char *out;
    size_t out_cap;
};

int gs_detok_new(const gs_tokenizer *tok, unsigned flags, gs_detok **out)
{
    gs_detok *dt = calloc(1, sizeof *dt);
    if (!dt)
        return GS_ENOMEM;
    dt->tok = tok;
    dt->flags = flags;
    dt->out_cap = 256;
    dt->out = malloc(dt->out_cap);
    if (!dt->out) {
        free(dt);
        return GS_ENOMEM;
    }
    *out = dt;
    return 0;
}

void gs_detok_free(gs_detok *dt)
{
    if (!dt)
        return;
    free(dt->out);
    free(dt);
}

void gs_detok_reset(gs_detok *dt)
{
    dt->n_pending = 0;
}

size_t gs_detok_pending(const gs_detok *dt)
{
    return dt->n_pending;
}

int gs_detok_push(gs_detok *dt, int32_t id, const char **piece, size_t *len)
{
    *piece = "";
    *len = 0;
    size_t n;
    const uint8_t *b = (const uint8_t *)gs_tokenizer_id_bytes(dt->tok, id, &n);
    if (!b) {
        if (dt->flags & GS_DETOK_STRICT)
            return GS_ERANGE;
        return 0;
    }
    if ((dt->flags & GS_DETOK_SKIP_SPECIAL) && gs_tokenizer_is_special(dt->tok, id))
        return 0;
    /* Worst case: every byte (and each pending byte) becomes U+FFFD. */
    size_t need = 3 * (n + dt->n_pending) + 1;
    if (need > dt->out_cap) {
        size_t cap = dt->out_cap;
        while (cap < need)
            cap *= 2;
        char *p = realloc(dt->out, cap);
        if (!p)
            return GS_ENOMEM;
        dt->out = p;
        dt->out_cap = cap;
    }
    /* Scan pending + b without joining them: the pending bytes are at
     * most 3, so a character that starts in them is finished by b. */
    uint8_t head[8];
    size_t hp = dt->n_pending, o = 0, i = 0;
    memcpy(head, dt->pending, hp);
    size_t hn = hp + (n < 4 ? n : 4);
    memcpy(head + hp, b, hn - hp);
    dt->n_pending = 0;
    /* Characters that start inside the pending bytes. */
    while (i < hp) {
        gs_utf8_kind k;
        uint32_t cp;
        size_t l = gs_utf8_next(head + i, hn - i, &k, &cp);
        if (k == GS_UTF8_SHORT && hn == hp + n) { /* still incomplete: keep it */
            memcpy(dt->pending, head + i, hn - i);
            dt->n_pending = hn - i;
            *piece = dt->out;
            *len = o;
            return 0;
        }
        if (k == GS_UTF8_OK) {
            memcpy(dt->out + o, head + i, l);
            o += l;
        } else {
            o += gs_utf8_put(0xFFFD, dt->out + o);
        }
        i += l;
    }
    /* The rest lies wholly in b. */
    size_t j = i - hp;
    while (j < n) {
        if (b[j] < 0x80) {
            dt->out[o++] = (char)b[j++];
            continue;
        }
        gs_utf8_kind k;
        uint32_t cp;
        size_t l = gs_utf8_next(b + j, n - j, &k, &cp);
        if (k == GS_UTF8_SHORT) {
            memcpy(dt->pending, b + j, n - j);
            dt->n_pending = n - j;
            break;
        }
        if (k == GS_UTF8_OK) {
            memcpy(dt->out + o, b + j, l);
            o += l;
        } else {
            o += gs_utf8_put(0xFFFD, dt->out + o);
        }
        j += l;
    }
    *piece = dt->out;
    *len = o;
    return 0;
}

void gs_detok_flush(gs_detok *dt, const char **piece, size_t *len)
{
    if (dt->n_pending) {
        *len = gs_utf8_put(0xFFFD, dt->out);
        *piece = dt->out;
    } else {
        *piece = "";
        *len = 0;
    }
    dt->n_pending = 0;
}
