/* utf8.c - UTF-8 classification and lossy repair (see utf8.h).
 * Owns nothing. Thread-safe: pure functions. */
#include "worker/tokenizer/utf8.h"

#include <string.h>

static int is_cont(uint8_t c)
{
    return (c & 0xC0) == 0x80;
}

size_t gs_utf8_next(const uint8_t *s, size_t n, gs_utf8_kind *kind, uint32_t *cp)
{
    uint8_t c = s[0];
    if (c < 0x80) {
        *kind = GS_UTF8_OK;
        *cp = c;
        return 1;
    }
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    uint32_t v;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        v = c & 0x0F;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        v = c & 0x07;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        *kind = GS_UTF8_BAD; /* 80..C1, F5..FF */
        return 1;
    }
    size_t i = 1;
    for (; i < need; i++) {
        if (i >= n) {
            *kind = GS_UTF8_SHORT;
            return i;
        }
        uint8_t b = s[i];
        if (i == 1 ? (b < lo || b > hi) : !is_cont(b)) {
            *kind = GS_UTF8_BAD;
            return i;
        }
        v = (v << 6) | (b & 0x3F);
    }
    *kind = GS_UTF8_OK;
    *cp = v;
    return need;
}

size_t gs_utf8_invalid_at(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        /* ASCII fast path, 8 bytes at a time. */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull)
                break;
            i += 8;
        }
        if (i >= n)
            break;
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        gs_utf8_kind k;
        uint32_t cp;
        size_t l = gs_utf8_next(s + i, n - i, &k, &cp);
        if (k != GS_UTF8_OK)
            return i;
        i += l;
    }
    return n;
}

size_t gs_utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t gs_utf8_lossy(const uint8_t *s, size_t n, char *out)
{
    size_t i = 0, o = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            out[o++] = (char)s[i++];
            continue;
        }
        gs_utf8_kind k;
        uint32_t cp;
        size_t l = gs_utf8_next(s + i, n - i, &k, &cp);
        if (k == GS_UTF8_OK) {
            memcpy(out + o, s + i, l);
            o += l;
        } else {
            o += gs_utf8_put(0xFFFD, out + o);
        }
        i += l;
    }
    return o;
}
