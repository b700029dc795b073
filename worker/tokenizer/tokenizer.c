/* tokenizer.c - encode and decode with a loaded gs_tokenizer.
 *
 * Encode follows HF tokenizers step by step (see tokenizer.h): UTF-8 check,
 * added tokens (two passes, leftmost-longest, lstrip/rstrip/single_word),
 * then each Split level (regex matches and the gaps between them become
 * pieces), then ByteLevel (prefix space, its own regex if use_regex), then
 * BPE per piece through the word cache. Nothing is copied on the way:
 * pieces are ranges of the caller's text.
 * Owns per-call scratch only. Thread-safety: see tokenizer.h. */
#include <stdlib.h>
#include <string.h>

#include "worker/tokenizer/tok_impl.h"

void gs_tokens_free(gs_tokens *t)
{
    if (!t)
        return;
    free(t->ids);
    memset(t, 0, sizeof *t);
}

int gs_tokens_append(gs_tokens *t, const int32_t *ids, size_t n)
{
    if (t->n + n > t->cap) {
        size_t cap = t->cap ? t->cap : 64;
        while (cap < t->n + n)
            cap *= 2;
        int32_t *p = realloc(t->ids, cap * sizeof *p);
        if (!p)
            return GS_ENOMEM;
        t->ids = p;
        t->cap = cap;
    }
    if (n)
        memcpy(t->ids + t->n, ids, n * sizeof *ids);
    t->n += n;
    return 0;
}

typedef struct {
    const gs_tokenizer *tok;
    gs_tokens *out;
    unsigned flags;
    pcre2_match_data *md;
    tok_bpe_scratch sc;
    int cached; /* holds the cache lock */
    char *tmp;  /* ByteLevel prefix space / ignore_merges lookups */
    size_t tmp_cap;
    gs_diag *d;
} enc;

static int tmp_reserve(enc *e, size_t n)
{
    if (n <= e->tmp_cap)
        return 0;
    size_t cap = e->tmp_cap ? e->tmp_cap * 2 : 256;
    while (cap < n)
        cap *= 2;
    char *p = realloc(e->tmp, cap);
    if (!p)
        return GS_ENOMEM;
    e->tmp = p;
    e->tmp_cap = cap;
    return 0;
}

/* BPE of one piece (raw bytes), through the cache. */
static int emit_word(enc *e, const uint8_t *s, size_t n)
{
    const gs_tokenizer *tok = e->tok;
    if (n == 0)
        return 0;
    if (n == 1 && tok->byte_id[s[0]] >= 0 && !tok->ignore_merges)
        return gs_tokens_append(e->out, &tok->byte_id[s[0]], 1);
    if (tok->ignore_merges) { /* the whole ByteLevel string in the vocab wins */
        if (tmp_reserve(e, 2 * n))
            return GS_ENOMEM;
        size_t l = 0;
        for (size_t i = 0; i < n; i++)
            l += gs_utf8_put(tok_byte_to_cp(s[i]), e->tmp + l);
        int32_t id = tok_strmap_get(&tok->vocab, e->tmp, l);
        if (id >= 0)
            return gs_tokens_append(e->out, &id, 1);
    }
    if (e->cached) {
        size_t k;
        const int32_t *ids = tok_cache_get(tok->cache, s, n, &k);
        if (ids)
            return gs_tokens_append(e->out, ids, k);
    }
    size_t before = e->out->n;
    int rc = tok_bpe_word(tok, s, n, &e->sc, e->out);
    /* (a word of bytes the vocabulary lacks gives no ids: out->ids may be NULL) */
    if (!rc && e->cached)
        tok_cache_put(tok->cache, s, n, e->out->n > before ? e->out->ids + before : NULL,
                      e->out->n - before);
    return rc;
}

typedef int (*piece_fn)(enc *e, int level, const uint8_t *s, size_t n);

/* The match at off again, with a step limit that grows with the text
 * left. PCRE2's default (10 million steps) is a bound for one match that
 * a long run of one class of character passes: the GLM pattern's
 * \s*[\r\n]+ tries every length of a run of 11 million spaces before
 * \s+ takes it, so such a prompt failed as a server error. A pattern
 * that fails this one too backtracks worse than linearly: the model
 * folder's fault, still an internal error. */
static int match_long(enc *e, const pcre2_code *re, const uint8_t *s, size_t n, size_t off)
{
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    if (!mc)
        return PCRE2_ERROR_NOMEMORY;
    const uint64_t limit = 16 * (uint64_t)(n - off) + 10000000u;
    pcre2_set_match_limit(mc, limit > UINT32_MAX ? UINT32_MAX : (uint32_t)limit);
    int m = pcre2_match(re, s, n, off, PCRE2_NO_UTF_CHECK, e->md, mc);
    pcre2_match_context_free(mc);
    return m;
}

/* Runs re over s[0..n) and hands every piece to fn: the gaps between
 * matches always, the matches unless removed. */
static int regex_split(enc *e, const pcre2_code *re, int removed, int level, piece_fn fn,
                       const uint8_t *s, size_t n)
{
    size_t prev = 0, off = 0, jit = 0;
    int rc = 0;
    /* pcre2_jit_match skips pcre2_match's checks: worth it, one call per piece */
    pcre2_pattern_info(re, PCRE2_INFO_JITSIZE, &jit);
    while (off < n) {
        int m = jit ? pcre2_jit_match(re, s, n, off, PCRE2_NO_UTF_CHECK, e->md, NULL)
                    : pcre2_match(re, s, n, off, PCRE2_NO_UTF_CHECK, e->md, NULL);
        if (m == PCRE2_ERROR_JIT_STACKLIMIT) /* the interpreter keeps its frames on the heap */
            m = pcre2_match(re, s, n, off, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, e->md, NULL);
        if (m == PCRE2_ERROR_MATCHLIMIT)
            m = match_long(e, re, s, n, off);
        if (m == PCRE2_ERROR_NOMATCH)
            break;
        if (m < 0) {
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(m, msg, sizeof msg);
            return gs_diag_set(e->d, GS_EINTERNAL, "pre-tokenizer regex failed at byte %zu: %s",
                               off, (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t ms = ov[0], me = ov[1];
        if (ms > prev && (rc = fn(e, level, s + prev, ms - prev)))
            return rc;
        if (me > ms && !removed && (rc = fn(e, level, s + ms, me - ms)))
            return rc;
        prev = me;
        if (me == ms) { /* empty match: step over one character */
            off = me + 1;
            while (off < n && (s[off] & 0xC0) == 0x80)
                off++;
        } else {
            off = me;
        }
    }
    if (n > prev)
        rc = fn(e, level, s + prev, n - prev);
    return rc;
}

static int bl_word(enc *e, int level, const uint8_t *s, size_t n)
{
    (void)level;
    return emit_word(e, s, n);
}

/* ByteLevel: optional prefix space, optional GPT-2 split, then BPE. */
static int bytelevel(enc *e, const uint8_t *s, size_t n)
{
    const gs_tokenizer *tok = e->tok;
    if (tok->add_prefix_space && (n == 0 || s[0] != ' ')) {
        /* A private copy: e->tmp is taken by ignore_merges lookups. */
        uint8_t *buf = malloc(n + 1);
        if (!buf)
            return GS_ENOMEM;
        buf[0] = ' ';
        memcpy(buf + 1, s, n);
        int rc = tok->bl_re ? regex_split(e, tok->bl_re, 0, 0, bl_word, buf, n + 1)
                            : emit_word(e, buf, n + 1);
        free(buf);
        return rc;
    }
    return tok->bl_re ? regex_split(e, tok->bl_re, 0, 0, bl_word, s, n) : emit_word(e, s, n);
}

static int split_level(enc *e, int level, const uint8_t *s, size_t n)
{
    const gs_tokenizer *tok = e->tok;
    if (level == tok->n_splits)
        return bytelevel(e, s, n);
    const tok_split *sp = &tok->splits[level];
    return regex_split(e, sp->re, sp->behavior == SPLIT_REMOVED, level + 1, split_level, s, n);
}

/* ---- added tokens ---- */

/* 1 when re matches one character anchored at s[at]. */
static int char_is(const enc *e, const pcre2_code *re, const uint8_t *s, size_t n, size_t at)
{
    return pcre2_match(re, s, n, at, PCRE2_NO_UTF_CHECK | PCRE2_ANCHORED, e->md, NULL) > 0;
}

static size_t prev_char(const uint8_t *s, size_t at)
{
    do
        at--;
    while (at > 0 && (s[at] & 0xC0) == 0x80);
    return at;
}

/* Longest added token of trie t starting at s[p], as an index into added[]. */
static int32_t trie_longest(const tok_trie *t, const uint8_t *s, size_t n, size_t p, size_t *len)
{
    int32_t cur = 0, best = -1;
    for (size_t i = p; i < n; i++) {
        int32_t c = t->nodes[cur].child;
        while (c >= 0 && t->nodes[c].byte != s[i])
            c = t->nodes[c].sibling;
        if (c < 0)
            break;
        cur = c;
        if (t->nodes[cur].added >= 0) {
            best = t->nodes[cur].added;
            *len = i + 1 - p;
        }
    }
    return best;
}

/* HF AddedVocabulary::find_matches over s[0..n) with trie `pass` (0: the
 * non-normalized tokens, 1: the normalized ones); the text between
 * matches goes to the next pass, then to the pre-tokenizer. */
static int added_pass(enc *e, int pass, const uint8_t *s, size_t n)
{
    const gs_tokenizer *tok = e->tok;
    if (pass == 2)
        return split_level(e, 0, s, n);
    const tok_trie *t = pass == 0 ? &tok->trie_raw : &tok->trie_norm;
    if (!t->n)
        return added_pass(e, pass + 1, s, n);
    size_t start_offset = 0, p = 0;
    int rc;
    while (p < n) {
        if (!t->first[s[p]]) {
            p++;
            continue;
        }
        size_t len = 0;
        int32_t ai = trie_longest(t, s, n, p, &len);
        if (ai < 0) {
            p++;
            continue;
        }
        const tok_added *a = &tok->added[ai];
        size_t start = p, stop = p + len;
        p = stop; /* the search resumes after this match, used or not */
        if ((e->flags & GS_ENCODE_SPECIAL_AS_TEXT) && (a->flags & ADD_SPECIAL))
            continue;
        if (a->flags & ADD_SINGLE_WORD) {
            int left_ok = start == 0 || !char_is(e, tok->re_word, s, n, prev_char(s, start));
            int right_ok = stop == n || !char_is(e, tok->re_word, s, n, stop);
            if (!left_ok || !right_ok)
                continue;
        }
        if (a->flags & ADD_LSTRIP) {
            while (start > start_offset && char_is(e, tok->re_space, s, n, prev_char(s, start)))
                start = prev_char(s, start);
        }
        if (a->flags & ADD_RSTRIP) {
            while (stop < n && char_is(e, tok->re_space, s, n, stop)) {
                stop++;
                while (stop < n && (s[stop] & 0xC0) == 0x80)
                    stop++;
            }
            p = stop;
        }
        if (start > start_offset &&
            (rc = added_pass(e, pass + 1, s + start_offset, start - start_offset)))
            return rc;
        if ((rc = gs_tokens_append(e->out, &a->id, 1)))
            return rc;
        start_offset = stop;
    }
    if (n > start_offset)
        return added_pass(e, pass + 1, s + start_offset, n - start_offset);
    return 0;
}

int gs_tokenizer_encode(const gs_tokenizer *tok, const char *text, size_t len, unsigned flags,
                        gs_tokens *out, gs_diag *d)
{
    const uint8_t *s = (const uint8_t *)text;
    size_t bad = gs_utf8_invalid_at(s, len);
    if (bad != len)
        return gs_diag_set(d, GS_EUTF8, "invalid UTF-8 at byte %zu (0x%02x)", bad, s[bad]);
    if (len == 0)
        return 0;
    enc e = {tok, out, flags, NULL, {0}, 0, NULL, 0, d};
    size_t n0 = out->n;
    e.md = pcre2_match_data_create(16, NULL);
    if (!e.md)
        return GS_ENOMEM;
    e.cached = tok_cache_trylock(tok->cache);
    int rc = added_pass(&e, 0, s, len);
    if (e.cached)
        tok_cache_unlock(tok->cache);
    pcre2_match_data_free(e.md);
    tok_bpe_scratch_free(&e.sc);
    free(e.tmp);
    if (rc) {
        out->n = n0;
        if (rc == GS_ENOMEM)
            gs_diag_set(d, rc, "tokenizer: out of memory");
    }
    return rc;
}

/* ---- decode and lookups ---- */

int gs_tokenizer_decode(const gs_tokenizer *tok, const int32_t *ids, size_t n, unsigned flags,
                        char **out, size_t *len, gs_diag *d)
{
    *out = NULL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= tok->n_ids || !(tok->id_flags[id] & ID_PRESENT)) {
            if (flags & GS_DECODE_STRICT)
                return gs_diag_set(d, GS_ERANGE, "decode: ids[%zu] = %d is not a token", i,
                                   (int)id);
            continue;
        }
        if ((flags & GS_DECODE_SKIP_SPECIAL) && (tok->id_flags[id] & ID_SPECIAL))
            continue;
        total += tok->dec_off[id + 1] - tok->dec_off[id];
    }
    uint8_t *raw = malloc(total + 1);
    if (!raw)
        return GS_ENOMEM;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= tok->n_ids || !(tok->id_flags[id] & ID_PRESENT) ||
            ((flags & GS_DECODE_SKIP_SPECIAL) && (tok->id_flags[id] & ID_SPECIAL)))
            continue;
        size_t l = tok->dec_off[id + 1] - tok->dec_off[id];
        memcpy(raw + o, tok->dec + tok->dec_off[id], l);
        o += l;
    }
    if (gs_utf8_invalid_at(raw, o) == o) {
        raw[o] = 0;
        *out = (char *)raw;
    } else {
        char *fixed = malloc(3 * o + 1);
        if (!fixed) {
            free(raw);
            return GS_ENOMEM;
        }
        o = gs_utf8_lossy(raw, o, fixed);
        fixed[o] = 0;
        free(raw);
        *out = fixed;
    }
    if (len)
        *len = o;
    return 0;
}

const char *gs_tokenizer_id_bytes(const gs_tokenizer *tok, int32_t id, size_t *len)
{
    if (id < 0 || id >= tok->n_ids || !(tok->id_flags[id] & ID_PRESENT))
        return NULL;
    *len = tok->dec_off[id + 1] - tok->dec_off[id];
    return tok->dec + tok->dec_off[id];
}

int32_t gs_tokenizer_token_id(const gs_tokenizer *tok, const char *token)
{
    size_t n = strlen(token);
    int32_t a = tok_strmap_get(&tok->added_map, token, n);
    if (a >= 0)
        return tok->added[a].id;
    int32_t id = tok_strmap_get(&tok->vocab, token, n);
    return id >= 0 ? id : GS_ENOENT;
}

const char *gs_tokenizer_id_to_token(const gs_tokenizer *tok, int32_t id)
{
    if (id < 0 || id >= tok->n_ids || !(tok->id_flags[id] & ID_PRESENT))
        return NULL;
    return tok->blob + tok->tok_off[id];
}

int32_t gs_tokenizer_vocab_size(const gs_tokenizer *tok)
{
    return tok->n_ids;
}

int gs_tokenizer_is_special(const gs_tokenizer *tok, int32_t id)
{
    return id >= 0 && id < tok->n_ids && (tok->id_flags[id] & ID_SPECIAL) ? 1 : 0;
}
