/* auth.c - the keys file parser and the constant-time key check.
 *
 * Owns the key array of a gs_auth. The parser is one pass over lines; each
 * option is a row of opt_table (name, GS_AUTH_LIM_* bit, parser, bound),
 * so adding an option is one row. Errors name the origin and the line.
 * Not thread-safe (counters); see auth.h. */
#include "gateway/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "common/file.h"

#define AUTH_MAX_FILE ((size_t)1 << 20)
#define AUTH_MAX_LINE 4096
#define AUTH_MAX_KEYS 65536
#define AUTH_MAX_TOKEN 4096

struct gs_auth {
    gs_auth_key *keys;
    size_t n, cap;
    gs_auth_info info;
    gs_auth_stats stats;
};

static int sha256(const void *p, size_t n, uint8_t out[32])
{
    unsigned int olen = 0;
    if (EVP_Digest(p, n, out, &olen, EVP_sha256(), NULL) != 1 || olen != 32)
        return GS_EINTERNAL;
    return 0;
}

static void to_hex(const uint8_t h[32], char out[65])
{
    static const char dig[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = dig[h[i] >> 4];
        out[2 * i + 1] = dig[h[i] & 15];
    }
    out[64] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int gs_auth_hash_hex(const char *key, size_t len, char out[65])
{
    uint8_t h[32];
    int rc = sha256(key, len, h);
    if (rc != 0) {
        out[0] = '\0';
        return rc;
    }
    to_hex(h, out);
    return 0;
}

/* ---- option parsers: (text, len) -> value; a short reason on error ---- */

/* Decimal integer without sign, at most max. */
static const char *parse_uint(const char *s, size_t n, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0)
        return "expects a number";
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return "expects a whole number";
        v = v * 10 + (uint64_t)(s[i] - '0');
        if (v > max)
            return "is out of range";
    }
    *out = v;
    return NULL;
}

/* "<decimal>/s" or "<decimal>/m" (at most 3 fractional digits) or "0" ->
 * milli-requests per second. */
static const char *parse_rate(const char *s, size_t n, uint64_t max, uint64_t *out)
{
    if (n == 1 && s[0] == '0') {
        *out = 0;
        return NULL;
    }
    if (n < 3 || s[n - 2] != '/' || (s[n - 1] != 's' && s[n - 1] != 'm'))
        return "expects <requests>/s or <requests>/m, e.g. 2/s or 0.5/s";
    int per_min = s[n - 1] == 'm';
    size_t m = n - 2, i = 0;
    uint64_t whole = 0, milli = 0;
    if (s[0] < '0' || s[0] > '9')
        return "expects a number before /s or /m";
    for (; i < m && s[i] >= '0' && s[i] <= '9'; i++) {
        whole = whole * 10 + (uint64_t)(s[i] - '0');
        if (whole > 1000000000)
            return "is out of range";
    }
    if (i < m) {
        if (s[i] != '.' || i + 1 == m || m - i - 1 > 3)
            return "expects at most 3 digits after the decimal point";
        uint64_t scale = 100;
        for (i++; i < m; i++, scale /= 10) {
            if (s[i] < '0' || s[i] > '9')
                return "expects a decimal number";
            milli += (uint64_t)(s[i] - '0') * scale;
        }
    }
    uint64_t v = whole * 1000 + milli;
    if (per_min)
        v /= 60;
    if (v > max)
        return "is out of range";
    if (v == 0)
        return "is below the smallest rate (write 0 for unlimited)";
    *out = v;
    return NULL;
}

typedef const char *(*opt_parser)(const char *s, size_t n, uint64_t max, uint64_t *out);

typedef struct {
    const char *name;
    uint32_t bit;
    opt_parser parse;
    uint64_t max;
    size_t offset;
    size_t size; /* 4 or 8 */
} opt_row;

static const opt_row opt_table[] = {
    {"rate", GS_AUTH_LIM_RATE, parse_rate, 1000000000u, offsetof(gs_auth_limits, rate_mrps), 4},
    {"burst", GS_AUTH_LIM_BURST, parse_uint, 1000000u, offsetof(gs_auth_limits, burst), 4},
    {"rpm", GS_AUTH_LIM_RPM, parse_uint, 1000000000u, offsetof(gs_auth_limits, rpm), 4},
    {"tpm", GS_AUTH_LIM_TPM, parse_uint, 1000000000000000ull, offsetof(gs_auth_limits, tpm), 8},
    {"streams", GS_AUTH_LIM_STREAMS, parse_uint, 1000000u, offsetof(gs_auth_limits, streams), 4},
};

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

static int name_ok(const char *s, size_t n)
{
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int set_opt(gs_auth_key *k, const char *f, size_t n, int *named, const char *origin,
                   uint32_t line, gs_diag *d)
{
    const char *eq = memchr(f, '=', n);
    if (!eq || eq == f)
        return gs_diag_set(d, GS_EFORMAT, "%s:%u: expected name=value, got \"%.*s\"", origin, line,
                           (int)(n > 40 ? 40 : n), f);
    size_t kn = (size_t)(eq - f);
    const char *v = eq + 1;
    size_t vn = n - kn - 1;
    if (kn == 4 && memcmp(f, "name", 4) == 0) {
        if (*named)
            return gs_diag_set(d, GS_EFORMAT, "%s:%u: name is given twice", origin, line);
        if (!name_ok(v, vn))
            return gs_diag_set(d, GS_EFORMAT,
                               "%s:%u: name must be 1..64 characters of A-Z a-z 0-9 . _ -", origin,
                               line);
        memcpy(k->name, v, vn);
        k->name[vn] = '\0';
        *named = 1;
        return 0;
    }
    for (size_t i = 0; i < sizeof opt_table / sizeof opt_table[0]; i++) {
        const opt_row *r = &opt_table[i];
        if (strlen(r->name) != kn || memcmp(r->name, f, kn) != 0)
            continue;
        if (k->limits.set & r->bit)
            return gs_diag_set(d, GS_EFORMAT, "%s:%u: %s is given twice", origin, line, r->name);
        uint64_t val = 0;
        const char *why = r->parse(v, vn, r->max, &val);
        if (why)
            return gs_diag_set(d, GS_EFORMAT, "%s:%u: %s %s", origin, line, r->name, why);
        char *dst = (char *)&k->limits + r->offset;
        if (r->size == 8) {
            memcpy(dst, &val, 8);
        } else {
            uint32_t v32 = (uint32_t)val;
            memcpy(dst, &v32, 4);
        }
        k->limits.set |= r->bit;
        return 0;
    }
    return gs_diag_set(d, GS_EFORMAT,
                       "%s:%u: unknown option \"%.*s\" (name, rate, burst, rpm, tpm, streams)",
                       origin, line, (int)(kn > 32 ? 32 : kn), f);
}

/* Parses one line (no newline) into *k; returns 1 when it holds a key, 0
 * for a blank or comment line, or a GS_E* code. */
static int parse_line(const char *s, size_t n, const char *origin, uint32_t line, gs_auth_key *k,
                      gs_diag *d)
{
    size_t i = 0;
    while (i < n && is_ws(s[i]))
        i++;
    if (i == n || s[i] == '#')
        return 0;
    memset(k, 0, sizeof *k);
    k->line = line;
    size_t f0 = i;
    while (i < n && !is_ws(s[i]))
        i++;
    const char *f = s + f0;
    size_t fn = i - f0;
    if (fn >= 7 && memcmp(f, "sha256:", 7) == 0) {
        if (fn != 7 + 64)
            return gs_diag_set(d, GS_EFORMAT, "%s:%u: sha256: expects 64 hex digits, got %zu",
                               origin, line, fn - 7);
        for (int b = 0; b < 32; b++) {
            int hi = hexval(f[7 + 2 * b]), lo = hexval(f[8 + 2 * b]);
            if (hi < 0 || lo < 0)
                return gs_diag_set(d, GS_EFORMAT, "%s:%u: sha256: has a character that is not hex",
                                   origin, line);
            k->hash[b] = (uint8_t)(hi << 4 | lo);
        }
    } else {
        if (memchr(f, '=', fn))
            return gs_diag_set(d, GS_EFORMAT,
                               "%s:%u: the line starts with an option; the key comes first", origin,
                               line);
        for (size_t j = 0; j < fn; j++)
            if ((unsigned char)f[j] < 0x21 || (unsigned char)f[j] > 0x7e)
                return gs_diag_set(d, GS_EFORMAT, "%s:%u: a plain-text key must be visible ASCII",
                                   origin, line);
        int rc = sha256(f, fn, k->hash);
        if (rc != 0)
            return gs_diag_set(d, rc, "%s:%u: SHA-256 failed", origin, line);
        k->flags |= GS_AUTH_KEY_PLAINTEXT;
    }
    to_hex(k->hash, k->id);
    int named = 0;
    for (;;) {
        while (i < n && is_ws(s[i]))
            i++;
        if (i == n || s[i] == '#')
            break;
        size_t o0 = i;
        while (i < n && !is_ws(s[i]))
            i++;
        int rc = set_opt(k, s + o0, i - o0, &named, origin, line, d);
        if (rc != 0)
            return rc;
    }
    if (!named)
        snprintf(k->name, sizeof k->name, "key-%u", line);
    return 1;
}

int gs_auth_parse(const char *text, size_t len, const char *origin, gs_auth **out, gs_diag *d)
{
    *out = NULL;
    if (!origin)
        origin = "keys";
    gs_auth *a = calloc(1, sizeof *a);
    if (!a)
        return gs_diag_set(d, GS_ENOMEM, "%s: out of memory", origin);
    int rc = 0;
    uint32_t line = 0;
    size_t pos = 0;
    while (pos < len) {
        line++;
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        size_t n = end - pos;
        if (n > AUTH_MAX_LINE) {
            rc = gs_diag_set(d, GS_EFORMAT, "%s:%u: line longer than %d bytes", origin, line,
                             AUTH_MAX_LINE);
            goto fail;
        }
        if (memchr(text + pos, '\0', n)) {
            rc = gs_diag_set(d, GS_EFORMAT, "%s:%u: NUL byte in the line", origin, line);
            goto fail;
        }
        gs_auth_key k;
        rc = parse_line(text + pos, n, origin, line, &k, d);
        pos = nl ? end + 1 : len;
        if (rc < 0)
            goto fail;
        if (rc == 0)
            continue;
        rc = 0;
        for (size_t j = 0; j < a->n; j++) {
            if (memcmp(a->keys[j].hash, k.hash, 32) == 0) {
                rc = gs_diag_set(d, GS_EFORMAT, "%s:%u: the same key as line %u", origin, line,
                                 a->keys[j].line);
                goto fail;
            }
            if (strcmp(a->keys[j].name, k.name) == 0) {
                rc = gs_diag_set(d, GS_EFORMAT, "%s:%u: name \"%s\" is already used on line %u",
                                 origin, line, k.name, a->keys[j].line);
                goto fail;
            }
        }
        if (a->n == AUTH_MAX_KEYS) {
            rc =
                gs_diag_set(d, GS_EFORMAT, "%s:%u: more than %d keys", origin, line, AUTH_MAX_KEYS);
            goto fail;
        }
        if (a->n == a->cap) {
            size_t nc = a->cap ? a->cap * 2 : 16;
            gs_auth_key *nk = realloc(a->keys, nc * sizeof *nk);
            if (!nk) {
                rc = gs_diag_set(d, GS_ENOMEM, "%s:%u: out of memory", origin, line);
                goto fail;
            }
            a->keys = nk;
            a->cap = nc;
        }
        a->keys[a->n++] = k;
        if (k.flags & GS_AUTH_KEY_PLAINTEXT) {
            if (a->info.n_plaintext++ == 0)
                a->info.first_plaintext_line = line;
        }
    }
    if (a->n == 0) {
        rc = gs_diag_set(d, GS_ECONFIG, "%s: no key in the file (nobody could connect)", origin);
        goto fail;
    }
    a->info.n_keys = a->n;
    *out = a;
    return 0;
fail:
    gs_auth_free(a);
    return rc;
}

int gs_auth_load(const char *path, gs_auth **out, gs_diag *d)
{
    *out = NULL;
    char *buf = NULL;
    size_t len = 0;
    int rc = gs_read_file(path, AUTH_MAX_FILE, &buf, &len, d);
    if (rc != 0)
        return rc;
    rc = gs_auth_parse(buf, len, path, out, d);
    free(buf);
    return rc;
}

void gs_auth_free(gs_auth *a)
{
    if (!a)
        return;
    if (a->keys)
        OPENSSL_cleanse(a->keys, a->cap * sizeof *a->keys);
    free(a->keys);
    free(a);
}

void gs_auth_get_info(const gs_auth *a, gs_auth_info *out)
{
    *out = a->info;
}

void gs_auth_get_stats(const gs_auth *a, gs_auth_stats *out)
{
    *out = a->stats;
}

const gs_auth_key *gs_auth_key_at(const gs_auth *a, size_t i)
{
    return i < a->n ? &a->keys[i] : NULL;
}

int gs_auth_check(gs_auth *a, const char *token, size_t len, const gs_auth_key **key)
{
    if (key)
        *key = NULL;
    if (len == 0 || len > AUTH_MAX_TOKEN)
        return GS_EAUTH;
    uint8_t h[32];
    if (sha256(token, len, h) != 0)
        return GS_EAUTH;
    a->stats.checks++;
    /* Every entry is compared; the match is picked with masks, not
     * branches: found = i where hash i equals h (hashes are unique). */
    size_t found = 0, any = 0;
    for (size_t i = 0; i < a->n; i++) {
        /* CRYPTO_memcmp returns 0 when equal, else a value in 1..255. */
        unsigned int diff = (unsigned int)CRYPTO_memcmp(h, a->keys[i].hash, 32) & 0xffu;
        size_t eq = (size_t)(((diff - 1u) >> 8) & 1u); /* 1 iff diff == 0 */
        size_t mask = (size_t)0 - eq;
        found = (found & ~mask) | (i & mask);
        any |= eq;
    }
    a->stats.compares += a->n;
    OPENSSL_cleanse(h, sizeof h);
    if (!any) {
        a->stats.failures++;
        return GS_EAUTH;
    }
    if (key)
        *key = &a->keys[found];
    return 0;
}

static int bearer_ows(char c)
{
    return c == ' ' || c == '\t';
}

int gs_auth_parse_bearer(const char *value, size_t len, const char **tok, size_t *tok_len)
{
    *tok = NULL;
    *tok_len = 0;
    if (!value)
        return GS_EAUTH;
    size_t i = 0, end = len;
    while (i < end && bearer_ows(value[i]))
        i++;
    while (end > i && bearer_ows(value[end - 1]))
        end--;
    static const char scheme[] = "bearer";
    if (end - i < 6)
        return GS_EAUTH;
    for (size_t j = 0; j < 6; j++) {
        char c = value[i + j];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != scheme[j])
            return GS_EAUTH;
    }
    i += 6;
    if (i == end || !bearer_ows(value[i]))
        return GS_EAUTH; /* "Bearer" alone, or "Bearerxyz" */
    while (i < end && bearer_ows(value[i]))
        i++;
    if (i == end)
        return GS_EAUTH;
    for (size_t j = i; j < end; j++)
        if ((unsigned char)value[j] < 0x21 || (unsigned char)value[j] > 0x7e)
            return GS_EAUTH;
    *tok = value + i;
    *tok_len = end - i;
    return 0;
}
