/* tok_load.c - tokenizer.json -> gs_tokenizer.
 *
 * Reads the file with jansson and builds: the vocab map, the merge map
 * (pair of ids -> rank and merged id), the per-id tables (token string,
 * ByteLevel-decoded bytes, special flag), the added-token tries and the
 * compiled Split patterns. Every error names the JSON key.
 * Owns what it builds until it hands the tokenizer over.
 * Thread-safe: no globals. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/file.h"
#include "common/log.h"
#include "worker/tokenizer/tok_impl.h"

#define MAX_FILE ((size_t)1 << 30)
#define MAX_ID (1 << 24) /* ids above this are taken as a malformed file */

/* GPT-2's split pattern, which ByteLevel uses when use_regex is true (a
 * constant of the tokenizers library, not of any model). */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

int64_t tok_blob_add(gs_tokenizer *tok, const char *s, size_t len)
{
    if (tok->blob_len + len + 1 > tok->blob_cap) {
        size_t cap = tok->blob_cap ? tok->blob_cap * 2 : 1 << 16;
        while (cap < tok->blob_len + len + 1)
            cap *= 2;
        if (cap > UINT32_MAX)
            return -1;
        char *b = realloc(tok->blob, cap);
        if (!b)
            return -1;
        tok->blob = b;
        tok->blob_cap = cap;
    }
    int64_t off = (int64_t)tok->blob_len;
    memcpy(tok->blob + tok->blob_len, s, len);
    tok->blob[tok->blob_len + len] = 0;
    tok->blob_len += len + 1;
    return off;
}

/* ---- small typed getters ---- */
static int get_bool(json_t *o, const char *key, int dflt, int *out, const char *where, gs_diag *d)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (!json_is_boolean(v))
        return gs_diag_set(d, GS_EFORMAT, "tokenizer.json: %s.%s: expected a boolean", where, key);
    *out = json_is_true(v);
    return 0;
}

/* A string field that must be null, absent or "" (a feature we lack). */
static int want_empty(json_t *o, const char *key, const char *where, gs_diag *d)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v) || (json_is_string(v) && !json_string_length(v)))
        return 0;
    return gs_diag_set(d, GS_EUNSUPPORTED, "tokenizer.json: %s.%s is not supported", where, key);
}

static const char *type_of(json_t *o)
{
    json_t *t = json_object_get(o, "type");
    return json_is_string(t) ? json_string_value(t) : NULL;
}

/* ---- model: BPE ---- */
static int parse_vocab(gs_tokenizer *tok, json_t *vocab, gs_diag *d)
{
    if (!json_is_object(vocab))
        return gs_diag_set(d, GS_EFORMAT, "tokenizer.json: model.vocab: expected an object");
    if (tok_strmap_init(&tok->vocab, json_object_size(vocab), (const char *const *)&tok->blob))
        return GS_ENOMEM;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v)
    {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= MAX_ID)
            return gs_diag_set(d, GS_EFORMAT,
                               "tokenizer.json: model.vocab[\"%.60s\"]: id must be an integer in "
                               "[0, %d)",
                               key, MAX_ID);
        int32_t id = (int32_t)json_integer_value(v);
        size_t len = strlen(key);
        int64_t off = tok_blob_add(tok, key, len);
        if (off < 0 || tok_strmap_put(&tok->vocab, (uint32_t)off, (uint32_t)len, id))
            return GS_ENOMEM;
        if (id + 1 > tok->n_ids)
            tok->n_ids = id + 1;
    }
    return 0;
}

static int merge_parts(json_t *m, size_t i, const char **a, size_t *al, const char **b, size_t *bl,
                       gs_diag *d)
{
    if (json_is_string(m)) {
        const char *s = json_string_value(m);
        size_t n = json_string_length(m);
        const char *sp = memchr(s, ' ', n);
        if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp - s) - 1))
            return gs_diag_set(d, GS_EFORMAT,
                               "tokenizer.json: model.merges[%zu]: \"%.60s\" is not \"a b\"", i, s);
        *a = s;
        *al = (size_t)(sp - s);
        *b = sp + 1;
        *bl = n - *al - 1;
        return 0;
    }
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0));
        *al = json_string_length(json_array_get(m, 0));
        *b = json_string_value(json_array_get(m, 1));
        *bl = json_string_length(json_array_get(m, 1));
        return 0;
    }
    return gs_diag_set(d, GS_EFORMAT,
                       "tokenizer.json: model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]", i);
}

static int mergemap_put(tok_mergemap *mm, int32_t a, int32_t b, uint32_t rank, int32_t id)
{
    uint64_t key = tok_merge_key(a, b);
    for (size_t i = tok_merge_slot(key, mm->mask);; i = (i + 1) & mm->mask) {
        tok_mergeslot *s = &mm->slots[i];
        if (!s->key || s->key == key) {
            mm->n += !s->key;
            s->key = key; /* a repeated pair takes its last rank, as HF's map */
            s->rank = rank;
            s->id = id;
            return 0;
        }
    }
}

static int parse_merges(gs_tokenizer *tok, json_t *merges, gs_diag *d)
{
    if (!json_is_array(merges))
        return gs_diag_set(d, GS_EFORMAT, "tokenizer.json: model.merges: expected an array");
    size_t n = json_array_size(merges), cap = 16;
    if (n >= UINT32_MAX / 4)
        return gs_diag_set(d, GS_EFORMAT, "tokenizer.json: model.merges: too many");
    while (cap < n * 2 + 2)
        cap <<= 1;
    tok->merges.slots = calloc(cap, sizeof *tok->merges.slots);
    if (!tok->merges.slots)
        return GS_ENOMEM;
    tok->merges.mask = cap - 1;
    char *cat = NULL;
    size_t cat_cap = 0;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const char *a = NULL, *b = NULL;
        size_t al = 0, bl = 0;
        if ((rc = merge_parts(json_array_get(merges, i), i, &a, &al, &b, &bl, d)))
            break;
        int32_t ia = tok_strmap_get(&tok->vocab, a, al), ib = tok_strmap_get(&tok->vocab, b, bl);
        if (al + bl + 1 > cat_cap) {
            cat_cap = (al + bl + 1) * 2;
            char *c = realloc(cat, cat_cap);
            if (!c) {
                rc = GS_ENOMEM;
                break;
            }
            cat = c;
        }
        memcpy(cat, a, al);
        memcpy(cat + al, b, bl);
        int32_t iab = tok_strmap_get(&tok->vocab, cat, al + bl);
        if (ia < 0 || ib < 0 || iab < 0) {
            const char *miss = ia < 0 ? a : ib < 0 ? b : cat;
            int ml = (int)(ia < 0 ? al : ib < 0 ? bl : al + bl);
            rc = gs_diag_set(d, GS_EFORMAT,
                             "tokenizer.json: model.merges[%zu]: token \"%.*s\" not in the vocab",
                             i, ml > 60 ? 60 : ml, miss);
            break;
        }
        rc = mergemap_put(&tok->merges, ia, ib, (uint32_t)i, iab);
    }
    free(cat);
    return rc;
}

static int parse_model(gs_tokenizer *tok, json_t *model, gs_diag *d)
{
    if (!json_is_object(model))
        return gs_diag_set(d, GS_EFORMAT, "tokenizer.json: model: expected an object");
    const char *t = type_of(model);
    if (t && strcmp(t, "BPE"))
        return gs_diag_set(d, GS_EUNSUPPORTED, "tokenizer.json: model.type \"%.40s\": only BPE", t);
    json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout) &&
        !(json_is_number(dropout) && json_number_value(dropout) == 0.0))
        return gs_diag_set(d, GS_EUNSUPPORTED, "tokenizer.json: model.dropout is not supported");
    int rc;
    if ((rc = want_empty(model, "continuing_subword_prefix", "model", d)) ||
        (rc = want_empty(model, "end_of_word_suffix", "model", d)) ||
        (rc = get_bool(model, "fuse_unk", 0, &tok->fuse_unk, "model", d)) ||
        (rc = get_bool(model, "byte_fallback", 0, &tok->byte_fallback, "model", d)) ||
        (rc = get_bool(model, "ignore_merges", 0, &tok->ignore_merges, "model", d)) ||
        (rc = parse_vocab(tok, json_object_get(model, "vocab"), d)) ||
        (rc = parse_merges(tok, json_object_get(model, "merges"), d)))
        return rc;
    json_t *unk = json_object_get(model, "unk_token");
    tok->unk_id = -1;
    if (unk && !json_is_null(unk)) {
        if (!json_is_string(unk))
            return gs_diag_set(d, GS_EFORMAT, "tokenizer.json: model.unk_token: expected a string");
        tok->unk_id = tok_strmap_get(&tok->vocab, json_string_value(unk), json_string_length(unk));
        if (tok->unk_id < 0)
            return gs_diag_set(d, GS_EFORMAT,
                               "tokenizer.json: model.unk_token \"%.40s\" not in "
                               "the vocab",
                               json_string_value(unk));
    }
    for (int b = 0; b < 256; b++) {
        char ch[8];
        size_t l = gs_utf8_put(tok_byte_to_cp((uint8_t)b), ch);
        tok->byte_id[b] = tok_strmap_get(&tok->vocab, ch, l);
        snprintf(ch, sizeof ch, "<0x%02X>", b);
        tok->fallback_id[b] = tok->byte_fallback ? tok_strmap_get(&tok->vocab, ch, 6) : -1;
    }
    return 0;
}

/* ---- added tokens ---- */
static int parse_added(gs_tokenizer *tok, json_t *arr, gs_diag *d)
{
    if (!arr || json_is_null(arr))
        arr = NULL;
    else if (!json_is_array(arr))
        return gs_diag_set(d, GS_EFORMAT, "tokenizer.json: added_tokens: expected an array");
    size_t n = arr ? json_array_size(arr) : 0;
    if (tok_strmap_init(&tok->added_map, n, (const char *const *)&tok->blob))
        return GS_ENOMEM;
    tok->added = calloc(n ? n : 1, sizeof *tok->added);
    if (!tok->added)
        return GS_ENOMEM;
    /* HF ignores the ids written in the file (it only warns when they
     * differ): an added token takes the id its content already has (an
     * earlier added token, then the model vocab), else the next id from
     * the number of vocab entries up, in file order. Same here. */
    int32_t next_id = (int32_t)tok->vocab.n;
    for (size_t i = 0; i < n; i++) {
        json_t *a = json_array_get(arr, i), *id = json_object_get(a, "id"),
               *content = json_object_get(a, "content");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= MAX_ID)
            return gs_diag_set(d, GS_EFORMAT,
                               "tokenizer.json: added_tokens[%zu].id: expected an "
                               "integer in [0, %d)",
                               i, MAX_ID);
        if (!json_is_string(content) || !json_string_length(content))
            return gs_diag_set(d, GS_EFORMAT,
                               "tokenizer.json: added_tokens[%zu].content: expected a non-empty "
                               "string",
                               i);
        char where[48];
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        int special = 0, normalized = 0, lstrip = 0, rstrip = 0, single = 0, rc;
        if ((rc = get_bool(a, "special", 0, &special, where, d)) ||
            (rc = get_bool(a, "normalized", !special, &normalized, where, d)) ||
            (rc = get_bool(a, "lstrip", 0, &lstrip, where, d)) ||
            (rc = get_bool(a, "rstrip", 0, &rstrip, where, d)) ||
            (rc = get_bool(a, "single_word", 0, &single, where, d)))
            return rc;
        size_t len = json_string_length(content);
        if (gs_utf8_invalid_at((const uint8_t *)json_string_value(content), len) != len)
            return gs_diag_set(d, GS_EFORMAT, "tokenizer.json: %s.content: invalid UTF-8", where);
        unsigned flags = (special ? ADD_SPECIAL : 0) | (normalized ? ADD_NORMALIZED : 0) |
                         (lstrip ? ADD_LSTRIP : 0) | (rstrip ? ADD_RSTRIP : 0) |
                         (single ? ADD_SINGLE_WORD : 0);
        const char *cs = json_string_value(content);
        int32_t prev = tok_strmap_get(&tok->added_map, cs, len),
                want = (int32_t)json_integer_value(id);
        if (prev >= 0) { /* the same content again: its properties are replaced */
            tok->added[prev].flags = flags | (tok->added[prev].flags & ADD_SPECIAL);
            if (tok->added[prev].id != want)
                gs_log_warn("tokenizer.json: added token \"%.40s\" has id %d, not %d", cs,
                            (int)tok->added[prev].id, (int)want);
            continue;
        }
        int32_t new_id = tok_strmap_get(&tok->vocab, cs, len);
        if (new_id < 0)
            new_id = next_id++;
        if (new_id != want)
            gs_log_warn("tokenizer.json: added token \"%.40s\" takes id %d, not the %d written "
                        "in the file (as HF tokenizers)",
                        cs, (int)new_id, (int)want);
        if (new_id >= MAX_ID)
            return gs_diag_set(d, GS_EFORMAT, "tokenizer.json: %s: id out of range", where);
        int64_t off = tok_blob_add(tok, cs, len);
        if (off < 0)
            return GS_ENOMEM;
        tok_added *t = &tok->added[tok->n_added];
        t->id = new_id;
        t->off = (uint32_t)off;
        t->len = (uint32_t)len;
        t->flags = flags;
        if (tok_strmap_put(&tok->added_map, t->off, t->len, (int32_t)tok->n_added))
            return GS_ENOMEM;
        tok->n_added++;
        if (t->id + 1 > tok->n_ids)
            tok->n_ids = t->id + 1;
    }
    return 0;
}

static int trie_node(tok_trie *t)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        tok_trienode *nn = realloc(t->nodes, cap * sizeof *nn);
        if (!nn)
            return -1;
        t->nodes = nn;
        t->cap = cap;
    }
    tok_trienode *nd = &t->nodes[t->n];
    nd->child = nd->sibling = nd->added = -1;
    nd->byte = 0;
    return (int)t->n++;
}

static int trie_add(tok_trie *t, const uint8_t *s, size_t n, int32_t added)
{
    if (!t->n && trie_node(t) < 0)
        return GS_ENOMEM;
    int32_t cur = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t c = t->nodes[cur].child;
        while (c >= 0 && t->nodes[c].byte != s[i])
            c = t->nodes[c].sibling;
        if (c < 0) {
            if ((c = trie_node(t)) < 0)
                return GS_ENOMEM;
            t->nodes[c].byte = s[i];
            t->nodes[c].sibling = t->nodes[cur].child;
            t->nodes[cur].child = c;
        }
        cur = c;
    }
    t->nodes[cur].added = added;
    t->first[s[0]] = 1;
    return 0;
}

/* ---- pre-tokenizer and decoder ---- */
static int parse_split(gs_tokenizer *tok, json_t *p, size_t i, gs_diag *d)
{
    if (tok->n_splits == TOK_MAX_SPLITS)
        return gs_diag_set(d, GS_EUNSUPPORTED, "tokenizer.json: more than %d Split pre-tokenizers",
                           TOK_MAX_SPLITS);
    json_t *pat = json_object_get(p, "pattern"), *re = json_object_get(pat, "Regex"),
           *lit = json_object_get(pat, "String"), *beh = json_object_get(p, "behavior");
    int invert = 0, rc;
    if ((rc = get_bool(p, "invert", 0, &invert, "pre_tokenizer.Split", d)))
        return rc;
    if (invert)
        return gs_diag_set(d, GS_EUNSUPPORTED, "tokenizer.json: pre_tokenizers[%zu]: invert", i);
    const char *b = json_is_string(beh) ? json_string_value(beh) : "";
    int behavior;
    if (!strcmp(b, "Isolated"))
        behavior = SPLIT_ISOLATED;
    else if (!strcmp(b, "Removed"))
        behavior = SPLIT_REMOVED;
    else
        return gs_diag_set(d, GS_EUNSUPPORTED,
                           "tokenizer.json: pre_tokenizers[%zu].behavior \"%.30s\": only Isolated "
                           "and Removed",
                           i, b);
    json_t *s = json_is_string(re) ? re : lit;
    if (!json_is_string(s) || !json_string_length(s))
        return gs_diag_set(d, GS_EFORMAT,
                           "tokenizer.json: pre_tokenizers[%zu].pattern: expected {\"Regex\": ..} "
                           "or {\"String\": ..}",
                           i);
    tok_split *sp = &tok->splits[tok->n_splits];
    if ((rc = tok_regex_compile(json_string_value(s), json_string_length(s), s == lit, &sp->re, d)))
        return rc;
    sp->behavior = behavior;
    tok->n_splits++;
    return 0;
}

static int parse_bytelevel(gs_tokenizer *tok, json_t *p, gs_diag *d)
{
    int use_regex = 0, rc;
    if ((rc = get_bool(p, "add_prefix_space", 1, &tok->add_prefix_space, "ByteLevel", d)) ||
        (rc = get_bool(p, "use_regex", 1, &use_regex, "ByteLevel", d)))
        return rc;
    if (use_regex)
        return tok_regex_compile(gpt2_pattern, strlen(gpt2_pattern), 0, &tok->bl_re, d);
    return 0;
}

static int parse_pretok(gs_tokenizer *tok, json_t *p, gs_diag *d)
{
    const char *t = json_is_object(p) ? type_of(p) : NULL;
    if (t && !strcmp(t, "ByteLevel"))
        return parse_bytelevel(tok, p, d);
    if (!t || strcmp(t, "Sequence"))
        return gs_diag_set(d, GS_EUNSUPPORTED,
                           "tokenizer.json: pre_tokenizer: only ByteLevel or a Sequence of Split "
                           "and a final ByteLevel");
    json_t *arr = json_object_get(p, "pretokenizers");
    size_t n = json_array_size(arr);
    if (!json_is_array(arr) || n == 0)
        return gs_diag_set(d, GS_EFORMAT,
                           "tokenizer.json: pre_tokenizer.pretokenizers: expected "
                           "a non-empty array");
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(arr, i);
        const char *et = type_of(e);
        int rc;
        if (et && !strcmp(et, "Split") && i + 1 < n)
            rc = parse_split(tok, e, i, d);
        else if (et && !strcmp(et, "ByteLevel") && i + 1 == n)
            rc = parse_bytelevel(tok, e, d);
        else
            rc = gs_diag_set(d, GS_EUNSUPPORTED,
                             "tokenizer.json: pre_tokenizer.pretokenizers[%zu] (%.30s): expected "
                             "Split ... then ByteLevel last",
                             i, et ? et : "?");
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- per-id tables ---- */
static int build_ids(gs_tokenizer *tok)
{
    size_t n = (size_t)tok->n_ids;
    tok->tok_off = malloc((n ? n : 1) * sizeof *tok->tok_off);
    tok->tok_len = malloc((n ? n : 1) * sizeof *tok->tok_len);
    tok->id_flags = calloc(n ? n : 1, 1);
    tok->dec_off = malloc((n + 1) * sizeof *tok->dec_off);
    if (!tok->tok_off || !tok->tok_len || !tok->id_flags || !tok->dec_off)
        return GS_ENOMEM;
    for (size_t i = 0; i < n; i++)
        tok->tok_len[i] = UINT32_MAX;
    for (size_t i = 0; i <= tok->vocab.mask; i++) {
        const tok_strslot *s = &tok->vocab.slots[i];
        if (s->hash) {
            tok->tok_off[s->val] = s->off;
            tok->tok_len[s->val] = s->len;
            tok->id_flags[s->val] |= ID_PRESENT;
        }
    }
    for (size_t i = 0; i < tok->n_added; i++) { /* added tokens win, as HF's id_to_token */
        const tok_added *a = &tok->added[i];
        tok->tok_off[a->id] = a->off;
        tok->tok_len[a->id] = a->len;
        tok->id_flags[a->id] |= ID_PRESENT | ID_ADDED;
    }
    /* Decoded bytes: ByteLevel maps each character back to its byte; a
     * token with any character outside the table is taken as its own UTF-8
     * bytes (HF's ByteLevel decode_chain). Never longer than the string. */
    tok->dec = malloc(tok->blob_len + 1);
    if (!tok->dec)
        return GS_ENOMEM;
    size_t o = 0;
    for (size_t id = 0; id < n; id++) {
        tok->dec_off[id] = (uint32_t)o;
        if (tok->tok_len[id] == UINT32_MAX)
            continue;
        const uint8_t *s = (const uint8_t *)tok->blob + tok->tok_off[id];
        size_t len = tok->tok_len[id], i = 0, start = o;
        while (i < len) {
            gs_utf8_kind k;
            uint32_t cp;
            size_t l = gs_utf8_next(s + i, len - i, &k, &cp);
            int b = k == GS_UTF8_OK ? tok_cp_to_byte(cp) : -1;
            if (b < 0)
                break;
            tok->dec[o++] = (char)b;
            i += l;
        }
        if (i < len) {
            memcpy(tok->dec + start, s, len);
            o = start + len;
        }
        int32_t a = tok_strmap_get(&tok->added_map, (const char *)s, len);
        if (a >= 0 && (tok->added[a].flags & ADD_SPECIAL))
            tok->id_flags[id] |= ID_SPECIAL;
    }
    tok->dec_off[n] = (uint32_t)o;
    for (size_t i = 0; i < tok->n_added; i++) {
        const tok_added *a = &tok->added[i];
        tok_trie *t = (a->flags & ADD_NORMALIZED) ? &tok->trie_norm : &tok->trie_raw;
        if (trie_add(t, (const uint8_t *)tok->blob + a->off, a->len, (int32_t)i))
            return GS_ENOMEM;
    }
    return 0;
}

static int load_root(gs_tokenizer *tok, json_t *root, gs_diag *d)
{
    if (!json_is_object(root))
        return gs_diag_set(d, GS_EFORMAT, "tokenizer.json: expected an object");
    json_t *norm = json_object_get(root, "normalizer");
    if (norm && !json_is_null(norm))
        return gs_diag_set(d, GS_EUNSUPPORTED, "tokenizer.json: normalizer: only null");
    json_t *dec = json_object_get(root, "decoder");
    const char *dt = json_is_object(dec) ? type_of(dec) : NULL;
    if (!dt || strcmp(dt, "ByteLevel"))
        return gs_diag_set(d, GS_EUNSUPPORTED, "tokenizer.json: decoder: only ByteLevel");
    int rc;
    if ((rc = parse_model(tok, json_object_get(root, "model"), d)) ||
        (rc = parse_added(tok, json_object_get(root, "added_tokens"), d)) ||
        (rc = parse_pretok(tok, json_object_get(root, "pre_tokenizer"), d)) ||
        (rc = build_ids(tok)))
        return rc;
    int need_word = 0, need_space = 0;
    for (size_t i = 0; i < tok->n_added; i++) {
        need_word |= !!(tok->added[i].flags & ADD_SINGLE_WORD);
        need_space |= !!(tok->added[i].flags & (ADD_LSTRIP | ADD_RSTRIP));
    }
    /* Rust regex's Unicode \w (single_word) and \s (lstrip / rstrip). */
    static const char word[] = "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}]";
    if (need_word && (rc = tok_regex_compile(word, strlen(word), 0, &tok->re_word, d)))
        return rc;
    if (need_space && (rc = tok_regex_compile("\\s", 2, 0, &tok->re_space, d)))
        return rc;
    return tok_cache_new(&tok->cache);
}

int gs_tokenizer_load_json(const char *json, size_t len, gs_tokenizer **out, gs_diag *d)
{
    *out = NULL;
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_ALLOW_NUL, &je);
    if (!root)
        return gs_diag_set(d, GS_EFORMAT, "tokenizer.json: line %d column %d: %s", je.line,
                           je.column, je.text);
    gs_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) {
        json_decref(root);
        return GS_ENOMEM;
    }
    tok->unk_id = -1;
    int rc = load_root(tok, root, d);
    json_decref(root);
    if (rc) {
        if (rc == GS_ENOMEM)
            gs_diag_set(d, rc, "tokenizer.json: out of memory");
        gs_tokenizer_free(tok);
        return rc;
    }
    *out = tok;
    return 0;
}

int gs_tokenizer_load(const char *path, gs_tokenizer **out, gs_diag *d)
{
    *out = NULL;
    char *buf = NULL;
    size_t n = 0;
    int rc = gs_read_file(path, MAX_FILE, &buf, &n, d);
    if (!rc)
        rc = gs_tokenizer_load_json(buf, n, out, d);
    free(buf);
    return rc;
}

void gs_tokenizer_free(gs_tokenizer *tok)
{
    if (!tok)
        return;
    tok_strmap_free(&tok->vocab);
    tok_strmap_free(&tok->added_map);
    free(tok->merges.slots);
    free(tok->added);
    free(tok->trie_raw.nodes);
    free(tok->trie_norm.nodes);
    for (int i = 0; i < tok->n_splits; i++)
        pcre2_code_free(tok->splits[i].re);
    pcre2_code_free(tok->bl_re);
    pcre2_code_free(tok->re_word);
    pcre2_code_free(tok->re_space);
    tok_cache_free(tok->cache);
    free(tok->blob);
    free(tok->tok_off);
    free(tok->tok_len);
    free(tok->id_flags);
    free(tok->dec);
    free(tok->dec_off);
    free(tok);
}
