/* tok_impl.h - the inside of gs_tokenizer, shared by tok_load.c (parsing
 * tokenizer.json), tokenizer.c (encode/decode), bpe.c (merges) and
 * detok.c. Not a public header. */
#ifndef GS_TOK_IMPL_H
#define GS_TOK_IMPL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "worker/tokenizer/tokenizer.h"
#include "worker/tokenizer/utf8.h"

/* ---- string -> int32 map (open addressing, keys live in a blob) ---- */
typedef struct {
    uint64_t hash; /* 0: empty slot */
    uint32_t off, len;
    int32_t val;
} tok_strslot;

typedef struct {
    tok_strslot *slots;
    size_t mask, n;          /* capacity - 1, entries */
    const char *const *blob; /* where off points into (a pointer to the owner's blob pointer) */
} tok_strmap;

uint64_t tok_hash(const void *p, size_t n);
int tok_strmap_init(tok_strmap *m, size_t expect, const char *const *blob);
void tok_strmap_free(tok_strmap *m);
/* Value for key, or -1. */
int32_t tok_strmap_get(const tok_strmap *m, const char *key, size_t len);
/* Inserts or overwrites; key must already be in *blob at off. 0/GS_ENOMEM. */
int tok_strmap_put(tok_strmap *m, uint32_t off, uint32_t len, int32_t val);

/* ---- (id, id) -> (rank, merged id) ---- */
typedef struct {
    uint64_t key; /* (a << 32 | b) + 1; 0: empty */
    uint32_t rank;
    int32_t id;
} tok_mergeslot;

typedef struct {
    tok_mergeslot *slots;
    size_t mask, n;
} tok_mergemap;

static inline uint64_t tok_merge_key(int32_t a, int32_t b)
{
    return (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
}

static inline size_t tok_merge_slot(uint64_t key, size_t mask)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 29) & mask;
}

static inline const tok_mergeslot *tok_merge_find(const tok_mergemap *m, int32_t a, int32_t b)
{
    uint64_t key = tok_merge_key(a, b);
    for (size_t i = tok_merge_slot(key, m->mask);; i = (i + 1) & m->mask) {
        const tok_mergeslot *s = &m->slots[i];
        if (s->key == key)
            return s;
        if (!s->key)
            return NULL;
    }
}

/* ---- added tokens and their trie ---- */
enum { ADD_SPECIAL = 1, ADD_NORMALIZED = 2, ADD_LSTRIP = 4, ADD_RSTRIP = 8, ADD_SINGLE_WORD = 16 };

typedef struct {
    int32_t id;
    uint32_t off, len; /* content in blob */
    unsigned flags;
} tok_added;

typedef struct {
    int32_t child, sibling; /* node indices, -1: none */
    int32_t added;          /* index into added[] ending here, -1: none */
    uint8_t byte;
} tok_trienode;

typedef struct {
    tok_trienode *nodes; /* nodes[0] is the root */
    size_t n, cap;
    uint8_t first[256]; /* 1 when some token starts with this byte */
} tok_trie;

/* ---- pre-tokenizer ---- */
enum { SPLIT_ISOLATED, SPLIT_REMOVED };

typedef struct {
    pcre2_code *re;
    int behavior;
} tok_split;

#define TOK_MAX_SPLITS 8

/* ---- word cache (raw piece bytes -> ids) ---- */
typedef struct tok_cache tok_cache;

struct gs_tokenizer {
    char *blob; /* every string: tokens, added contents */
    size_t blob_len, blob_cap;

    int32_t n_ids;     /* max id + 1 */
    uint32_t *tok_off; /* [n_ids] token string as in the file */
    uint32_t *tok_len; /* [n_ids] UINT32_MAX: absent id */
    uint8_t *id_flags; /* [n_ids] ID_* */
    char *dec;         /* decoded bytes of every id, back to back */
    uint32_t *dec_off; /* [n_ids + 1] */

    tok_strmap vocab;     /* model vocab: token string -> id */
    tok_strmap added_map; /* added content -> index into added[] */
    tok_added *added;
    size_t n_added;
    tok_trie trie_raw;    /* added tokens with normalized=false */
    tok_trie trie_norm;   /* normalized=true */
    pcre2_code *re_word;  /* \w for single_word, only when some token uses it */
    pcre2_code *re_space; /* whitespace for lstrip/rstrip */

    /* BPE */
    tok_mergemap merges;
    int32_t byte_id[256];     /* initial symbol of each raw byte, -1: not in vocab */
    int32_t fallback_id[256]; /* "<0xAB>" tokens for byte_fallback, -1: none */
    int32_t unk_id;           /* -1: none */
    int fuse_unk, byte_fallback, ignore_merges;

    /* pre-tokenizer: splits in order, then ByteLevel */
    tok_split splits[TOK_MAX_SPLITS];
    int n_splits;
    int add_prefix_space;
    pcre2_code *bl_re; /* ByteLevel use_regex: the GPT-2 pattern, else NULL */

    tok_cache *cache;
};

enum { ID_PRESENT = 1, ID_SPECIAL = 2, ID_ADDED = 4 };

/* The GPT-2 byte <-> unicode table (ByteLevel): code point of byte b, and
 * the byte of a code point (-1 when the code point is not in the table). */
uint32_t tok_byte_to_cp(uint8_t b);
int tok_cp_to_byte(uint32_t cp);

/* Appends len bytes to tok->blob; returns the offset or -1 (ENOMEM). */
int64_t tok_blob_add(gs_tokenizer *tok, const char *s, size_t len);

/* Translates an Oniguruma/HF pattern to PCRE2 (\s also matches U+0085, as
 * Oniguruma's does) and compiles it with UTF|UCP, JIT when available. */
int tok_regex_compile(const char *pattern, size_t len, int literal, pcre2_code **out, gs_diag *d);

/* BPE of one pre-token's raw bytes; appends ids. Scratch is per call. */
typedef struct {
    int32_t *sym;   /* symbol ids */
    int32_t *start; /* byte offset of each symbol (for unk/fallback merging) */
    int32_t *prev, *next;
    uint64_t *heap; /* (rank << 32 | pos) */
    size_t cap, heap_cap;
} tok_bpe_scratch;

int tok_bpe_word(const gs_tokenizer *tok, const uint8_t *s, size_t n, tok_bpe_scratch *sc,
                 gs_tokens *out);
/* The two merge loops tok_bpe_word chooses between (tests compare them). */
int tok_bpe_word_heap(const gs_tokenizer *tok, const uint8_t *s, size_t n, tok_bpe_scratch *sc,
                      gs_tokens *out);
int tok_bpe_word_naive(const gs_tokenizer *tok, const uint8_t *s, size_t n, tok_bpe_scratch *sc,
                       gs_tokens *out);
void tok_bpe_scratch_free(tok_bpe_scratch *sc);

/* Word cache. */
int tok_cache_new(tok_cache **out);
void tok_cache_free(tok_cache *c);
/* Locks the cache if it is free (1) or reports it busy (0). */
int tok_cache_trylock(tok_cache *c);
void tok_cache_unlock(tok_cache *c);
/* Ids of a cached word (borrowed until the next put), or NULL. */
const int32_t *tok_cache_get(tok_cache *c, const uint8_t *s, size_t n, size_t *n_ids);
void tok_cache_put(tok_cache *c, const uint8_t *s, size_t n, const int32_t *ids, size_t n_ids);

#endif
