/* pretok.c - pieces of the pre-tokenizer: the ByteLevel byte <-> unicode
 * table and the compilation of Split patterns with PCRE2.
 *
 * HF tokenizers runs Split regexes with Oniguruma. PCRE2 with UTF + UCP
 * gives the same \p{L}, \p{N}, (?i:...) and lookarounds; the one
 * difference that matters for tokenizer patterns is \s: Oniguruma's is
 * the Unicode White_Space property (which has U+0085 NEL and, since Unicode
 * 6.3, not U+180E), PCRE2's is not (it lacks U+0085 and has U+180E). So the
 * pattern is rewritten: \s becomes the explicit White_Space set, in a class
 * or as one; \S outside a class its complement (\S inside a class is left
 * as is).
 * Owns nothing. Thread-safe: pure functions; compiled codes are read-only. */
#include <stdlib.h>
#include <string.h>

#include "worker/tokenizer/tok_impl.h"

/* GPT-2 bytes_to_unicode(): printable Latin-1 bytes stand for themselves,
 * the other 68 bytes take U+0100.. in byte order. */
uint32_t tok_byte_to_cp(uint8_t b)
{
    if (b <= 32)
        return 256u + b;
    if (b >= 127 && b <= 160)
        return 256u + 33u + (b - 127u);
    if (b == 173)
        return 256u + 33u + 34u;
    return b;
}

int tok_cp_to_byte(uint32_t cp)
{
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255))
        return (int)cp;
    if (cp >= 256 && cp <= 288)
        return (int)(cp - 256);
    if (cp >= 289 && cp <= 322)
        return (int)(cp - 289 + 127);
    if (cp == 323)
        return 173;
    return -1;
}

typedef struct {
    char *p;
    size_t n, cap;
} sbuf;

static int sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 128;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return GS_ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

/* Length of the escape sequence starting at p[0] == '\\' (p has n bytes). */
static size_t escape_len(const char *p, size_t n)
{
    if (n < 2)
        return n;
    char c = p[1];
    if ((c == 'p' || c == 'P' || c == 'x' || c == 'o' || c == 'N' || c == 'g' || c == 'k') &&
        n > 2 && p[2] == '{') {
        const char *e = memchr(p + 2, '}', n - 2);
        return e ? (size_t)(e - p) + 1 : n;
    }
    if (c == 'Q') { /* literal up to \E */
        for (size_t i = 2; i + 1 < n; i++)
            if (p[i] == '\\' && p[i + 1] == 'E')
                return i + 2;
        return n;
    }
    /* a whole UTF-8 character after the backslash */
    size_t l = 2;
    while (l < n && ((uint8_t)p[l] & 0xC0) == 0x80)
        l++;
    return l;
}

/* Unicode White_Space, without brackets. */
#define WS_SET                                                                                     \
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"       \
    "\\x{202F}\\x{205F}\\x{3000}"

static int translate(const char *pat, size_t n, sbuf *out)
{
    int in_class = 0, rc = 0;
    for (size_t i = 0; i < n && !rc;) {
        char c = pat[i];
        if (c == '\\') {
            size_t l = escape_len(pat + i, n - i);
            if (l == 2 && pat[i + 1] == 's')
                rc = in_class ? sb_put(out, WS_SET, strlen(WS_SET))
                              : sb_put(out, "[" WS_SET "]", strlen(WS_SET) + 2);
            else if (l == 2 && pat[i + 1] == 'S' && !in_class)
                rc = sb_put(out, "[^" WS_SET "]", strlen(WS_SET) + 3);
            else
                rc = sb_put(out, pat + i, l);
            i += l;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = 1;
            size_t j = i + 1;
            if (j < n && pat[j] == '^')
                j++;
            if (j < n && pat[j] == ']') /* a leading ']' is a literal */
                j++;
            rc = sb_put(out, pat + i, j - i);
            i = j;
            continue;
        }
        if (in_class && c == '[' && i + 1 < n && pat[i + 1] == ':') { /* [:alpha:] */
            const char *e = memmem(pat + i + 2, n - i - 2, ":]", 2);
            size_t l = e ? (size_t)(e - pat) + 2 - i : 1;
            rc = sb_put(out, pat + i, l);
            i += l;
            continue;
        }
        if (in_class && c == ']')
            in_class = 0;
        rc = sb_put(out, pat + i, 1);
        i++;
    }
    return rc;
}

int tok_regex_compile(const char *pattern, size_t len, int literal, pcre2_code **out, gs_diag *d)
{
    sbuf b = {0};
    int rc = literal ? sb_put(&b, pattern, len) : translate(pattern, len, &b);
    if (rc) {
        free(b.p);
        return rc;
    }
    int err;
    PCRE2_SIZE off;
    uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)b.p, b.n, opts, &err, &off, NULL);
    free(b.p);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(err, msg, sizeof msg);
        return gs_diag_set(d, GS_EUNSUPPORTED, "regex /%.*s/: %s at offset %zu",
                           (int)(len > 80 ? 80 : len), pattern, (const char *)msg, (size_t)off);
    }
    /* JIT where the platform has it; pcre2_match falls back to the
     * interpreter on its own otherwise. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    *out = re;
    return 0;
}
