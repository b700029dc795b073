/* tok_maps.c - the tokenizer's hash tables: string -> id (vocab, added
 * tokens), and the word cache (piece bytes -> ids) with its mutex.
 * Owns the memory of each table. Thread-safety: the string map is written
 * only while loading; the cache is used under its mutex (trylock). */
#include <stdlib.h>
#include <string.h>

#include "worker/tokenizer/tok_impl.h"

/* A 64-bit hash of short strings: 8 bytes at a time, the tail read as
 * overlapping words (no byte loop, no variable-size memcpy), multiply-
 * xorshift mixing; portable (no intrinsics). Never returns 0 (0 marks an
 * empty slot). */
static inline uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint64_t mix(uint64_t a, uint64_t b)
{
    a = (a ^ b) * 0xBF58476D1CE4E5B9ull;
    return a ^ (a >> 31);
}

uint64_t tok_hash(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint64_t h = 0x243F6A8885A308D3ull ^ (n * 0x9E3779B97F4A7C15ull), a, b;
    if (n > 16) {
        size_t i = 0;
        for (; i + 8 < n; i += 8)
            h = mix(h, rd64(s + i));
        a = rd64(s + n - 8);
        b = 0;
    } else if (n >= 8) {
        a = rd64(s);
        b = rd64(s + n - 8);
    } else if (n >= 4) {
        a = rd32(s);
        b = rd32(s + n - 4);
    } else if (n > 0) {
        a = ((uint64_t)s[0] << 16) | ((uint64_t)s[n / 2] << 8) | s[n - 1];
        b = 0;
    } else {
        a = b = 0;
    }
    h = mix(h, a);
    h = mix(h, b ^ 0x94D049BB133111EBull);
    return h ? h : 1;
}

int tok_strmap_init(tok_strmap *m, size_t expect, const char *const *blob)
{
    size_t cap = 16;
    while (cap < expect * 2)
        cap <<= 1;
    m->slots = calloc(cap, sizeof *m->slots);
    if (!m->slots)
        return GS_ENOMEM;
    m->mask = cap - 1;
    m->n = 0;
    m->blob = blob;
    return 0;
}

void tok_strmap_free(tok_strmap *m)
{
    free(m->slots);
    m->slots = NULL;
    m->n = 0;
}

int32_t tok_strmap_get(const tok_strmap *m, const char *key, size_t len)
{
    if (!m->slots)
        return -1;
    uint64_t h = tok_hash(key, len);
    const char *blob = *m->blob;
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        const tok_strslot *s = &m->slots[i];
        if (!s->hash)
            return -1;
        if (s->hash == h && s->len == len && memcmp(blob + s->off, key, len) == 0)
            return s->val;
    }
}

static int strmap_grow(tok_strmap *m)
{
    size_t cap = (m->mask + 1) * 2;
    tok_strslot *ns = calloc(cap, sizeof *ns);
    if (!ns)
        return GS_ENOMEM;
    for (size_t i = 0; i <= m->mask; i++) {
        tok_strslot *s = &m->slots[i];
        if (!s->hash)
            continue;
        size_t j = s->hash & (cap - 1);
        while (ns[j].hash)
            j = (j + 1) & (cap - 1);
        ns[j] = *s;
    }
    free(m->slots);
    m->slots = ns;
    m->mask = cap - 1;
    return 0;
}

int tok_strmap_put(tok_strmap *m, uint32_t off, uint32_t len, int32_t val)
{
    if ((m->n + 1) * 2 > m->mask + 1 && strmap_grow(m))
        return GS_ENOMEM;
    const char *blob = *m->blob;
    uint64_t h = tok_hash(blob + off, len);
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        tok_strslot *s = &m->slots[i];
        if (!s->hash) {
            s->hash = h;
            s->off = off;
            s->len = len;
            s->val = val;
            m->n++;
            return 0;
        }
        if (s->hash == h && s->len == len && memcmp(blob + s->off, blob + off, len) == 0) {
            s->val = val;
            return 0;
        }
    }
}

/* ---- word cache ----
 * Open addressing over CACHE_SLOTS slots; keys and ids are copied into one
 * arena. When the table is 3/4 full or the arena is exhausted, everything
 * is dropped at once (cheap, and the hot words come back at once). Words
 * longer than CACHE_MAX_WORD bytes are not cached (as HF). */
#define CACHE_SLOTS (1u << 15)
#define CACHE_ARENA (4u << 20)
#define CACHE_MAX_WORD 256

typedef struct {
    uint64_t hash; /* 0: empty */
    uint32_t off;  /* key bytes, then the ids (4-byte aligned) */
    uint16_t len, n_ids;
} cache_slot;

struct tok_cache {
    pthread_mutex_t mu;
    cache_slot *slots;
    size_t n;
    char *arena;
    size_t used;
};

int tok_cache_new(tok_cache **out)
{
    tok_cache *c = calloc(1, sizeof *c);
    if (!c)
        return GS_ENOMEM;
    c->slots = calloc(CACHE_SLOTS, sizeof *c->slots);
    c->arena = malloc(CACHE_ARENA);
    if (!c->slots || !c->arena || pthread_mutex_init(&c->mu, NULL)) {
        free(c->slots);
        free(c->arena);
        free(c);
        return GS_ENOMEM;
    }
    *out = c;
    return 0;
}

void tok_cache_free(tok_cache *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->mu);
    free(c->slots);
    free(c->arena);
    free(c);
}

int tok_cache_trylock(tok_cache *c)
{
    return c && pthread_mutex_trylock(&c->mu) == 0;
}

void tok_cache_unlock(tok_cache *c)
{
    pthread_mutex_unlock(&c->mu);
}

const int32_t *tok_cache_get(tok_cache *c, const uint8_t *s, size_t n, size_t *n_ids)
{
    if (n > CACHE_MAX_WORD)
        return NULL;
    uint64_t h = tok_hash(s, n);
    for (size_t i = h & (CACHE_SLOTS - 1);; i = (i + 1) & (CACHE_SLOTS - 1)) {
        const cache_slot *e = &c->slots[i];
        if (!e->hash)
            return NULL;
        if (e->hash == h && e->len == n && memcmp(c->arena + e->off, s, n) == 0) {
            *n_ids = e->n_ids;
            return (const int32_t *)(const void *)(c->arena + e->off + ((n + 3) & ~(size_t)3));
        }
    }
}

void tok_cache_put(tok_cache *c, const uint8_t *s, size_t n, const int32_t *ids, size_t n_ids)
{
    if (n > CACHE_MAX_WORD || n_ids > n)
        return;
    size_t need = ((n + 3) & ~(size_t)3) + n_ids * sizeof(int32_t);
    if (c->n + 1 > CACHE_SLOTS / 4 * 3 || c->used + need > CACHE_ARENA) {
        memset(c->slots, 0, CACHE_SLOTS * sizeof *c->slots);
        c->n = 0;
        c->used = 0;
    }
    uint64_t h = tok_hash(s, n);
    size_t i = h & (CACHE_SLOTS - 1);
    while (c->slots[i].hash) {
        const cache_slot *e = &c->slots[i];
        if (e->hash == h && e->len == n && memcmp(c->arena + e->off, s, n) == 0)
            return; /* already there */
        i = (i + 1) & (CACHE_SLOTS - 1);
    }
    cache_slot *e = &c->slots[i];
    e->hash = h;
    e->off = (uint32_t)c->used;
    e->len = (uint16_t)n;
    e->n_ids = (uint16_t)n_ids;
    memcpy(c->arena + c->used, s, n);
    if (n_ids)
        memcpy(c->arena + c->used + ((n + 3) & ~(size_t)3), ids, n_ids * sizeof(int32_t));
    c->used += need;
    c->n++;
}
