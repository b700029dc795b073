/* bpe.c - byte-level BPE of one pre-token (a "word").
 *
 * The word starts as one symbol per byte (the vocab id of the byte's
 * ByteLevel character; byte_fallback / unk as HF's BPE::merge_word when a
 * byte has none). Then the adjacent pair with the lowest merge rank is
 * merged, the leftmost one among equal ranks, until no pair has a merge:
 * exactly what HF's Word::merge_all does with its heap. Two
 * implementations: a heap over a linked list (O(n log n), used for long
 * words) and a plain array scan (O(n^2) with tiny constants, used for
 * short ones); the tests check that they agree.
 * Owns nothing but the caller's scratch. Thread-safe: the tokenizer is
 * read-only here. */
#include <stdlib.h>
#include <string.h>

#include "worker/tokenizer/tok_impl.h"

#define NAIVE_MAX 48 /* words up to this many symbols take the array scan */

void tok_bpe_scratch_free(tok_bpe_scratch *sc)
{
    free(sc->sym);
    free(sc->start);
    free(sc->prev);
    free(sc->next);
    free(sc->heap);
    memset(sc, 0, sizeof *sc);
}

static int scratch_reserve(tok_bpe_scratch *sc, size_t n)
{
    if (n <= sc->cap)
        return 0;
    size_t cap = sc->cap ? sc->cap : 64;
    while (cap < n)
        cap *= 2;
    int32_t *a = realloc(sc->sym, cap * sizeof *a);
    if (!a)
        return GS_ENOMEM;
    sc->sym = a;
    a = realloc(sc->start, cap * sizeof *a);
    if (!a)
        return GS_ENOMEM;
    sc->start = a;
    a = realloc(sc->prev, cap * sizeof *a);
    if (!a)
        return GS_ENOMEM;
    sc->prev = a;
    a = realloc(sc->next, cap * sizeof *a);
    if (!a)
        return GS_ENOMEM;
    sc->next = a;
    sc->cap = cap;
    return 0;
}

/* Initial symbols of the word; returns their count (the word's bytes map
 * one to one to ByteLevel characters). */
static size_t initial_symbols(const gs_tokenizer *tok, const uint8_t *s, size_t n, int32_t *sym)
{
    size_t k = 0;
    int32_t unk_pending = 0; /* an unk symbol not yet added (fuse_unk) */
    for (size_t i = 0; i < n; i++) {
        int32_t id = tok->byte_id[s[i]];
        if (id >= 0) {
            if (unk_pending) {
                sym[k++] = tok->unk_id;
                unk_pending = 0;
            }
            sym[k++] = id;
            continue;
        }
        if (tok->byte_fallback) {
            /* HF looks up "<0xAB>" for each UTF-8 byte of the character,
             * i.e. of the ByteLevel character that stands for s[i]. */
            char ch[4];
            size_t cl = gs_utf8_put(tok_byte_to_cp(s[i]), ch);
            size_t j = 0;
            while (j < cl && tok->fallback_id[(uint8_t)ch[j]] >= 0)
                j++;
            if (j == cl) {
                /* The caller sized sym for 4 symbols per byte. */
                if (unk_pending) {
                    sym[k++] = tok->unk_id;
                    unk_pending = 0;
                }
                for (j = 0; j < cl; j++)
                    sym[k++] = tok->fallback_id[(uint8_t)ch[j]];
                continue;
            }
        }
        if (tok->unk_id >= 0) {
            if (unk_pending && !tok->fuse_unk)
                sym[k++] = tok->unk_id;
            unk_pending = 1;
        }
        /* no unk token: the character is dropped, as in HF */
    }
    if (unk_pending)
        sym[k++] = tok->unk_id;
    return k;
}

static int32_t pair_rank(const gs_tokenizer *tok, int32_t a, int32_t b, int32_t *id)
{
    const tok_mergeslot *m = tok_merge_find(&tok->merges, a, b);
    if (!m)
        return -1;
    *id = m->id;
    return (int32_t)m->rank;
}

int tok_bpe_word_naive(const gs_tokenizer *tok, const uint8_t *s, size_t n, tok_bpe_scratch *sc,
                       gs_tokens *out)
{
    if (scratch_reserve(sc, 4 * n + 1))
        return GS_ENOMEM;
    int32_t *sym = sc->sym, *rank = sc->prev, *nid = sc->next;
    size_t k = initial_symbols(tok, s, n, sym);
    for (size_t i = 0; i + 1 < k; i++)
        rank[i] = pair_rank(tok, sym[i], sym[i + 1], &nid[i]);
    while (k > 1) {
        size_t best = k;
        int32_t br = INT32_MAX;
        for (size_t i = 0; i + 1 < k; i++) {
            if (rank[i] >= 0 && rank[i] < br) {
                br = rank[i];
                best = i;
            }
        }
        if (best == k)
            break;
        sym[best] = nid[best];
        memmove(sym + best + 1, sym + best + 2, (k - best - 2) * sizeof *sym);
        memmove(rank + best + 1, rank + best + 2, (k - best - 2) * sizeof *rank);
        memmove(nid + best + 1, nid + best + 2, (k - best - 2) * sizeof *nid);
        k--;
        if (best > 0)
            rank[best - 1] = pair_rank(tok, sym[best - 1], sym[best], &nid[best - 1]);
        if (best + 1 < k)
            rank[best] = pair_rank(tok, sym[best], sym[best + 1], &nid[best]);
    }
    return gs_tokens_append(out, sym, k);
}

/* ---- binary min-heap of (rank << 32 | pos) ---- */
static void heap_push(uint64_t *h, size_t *n, uint64_t v)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p] <= v)
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *n)
{
    uint64_t top = h[0], v = h[--(*n)];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m)
            break;
        if (c + 1 < m && h[c + 1] < h[c])
            c++;
        if (v <= h[c])
            break;
        h[i] = h[c];
        i = c;
    }
    if (m)
        h[i] = v;
    return top;
}

static int bpe_heap(const gs_tokenizer *tok, size_t k, tok_bpe_scratch *sc, gs_tokens *out)
{
    int32_t *sym = sc->sym, *prev = sc->prev, *next = sc->next;
    size_t hcap = 3 * k + 4;
    if (hcap > sc->heap_cap) {
        uint64_t *h = realloc(sc->heap, hcap * sizeof *h);
        if (!h)
            return GS_ENOMEM;
        sc->heap = h;
        sc->heap_cap = hcap;
    }
    uint64_t *heap = sc->heap;
    size_t hn = 0;
    int32_t id;
    for (size_t i = 0; i < k; i++) {
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < k ? (int32_t)i + 1 : -1;
        if (i + 1 < k) {
            int32_t r = pair_rank(tok, sym[i], sym[i + 1], &id);
            if (r >= 0)
                heap_push(heap, &hn, (uint64_t)r << 32 | i);
        }
    }
    while (hn) {
        uint64_t top = heap_pop(heap, &hn);
        int32_t rank = (int32_t)(top >> 32), pos = (int32_t)(uint32_t)top;
        if (sym[pos] < 0 || next[pos] < 0)
            continue;
        int32_t nx = next[pos];
        /* Stale entry: the pair at pos changed since it was pushed. */
        if (pair_rank(tok, sym[pos], sym[nx], &id) != rank)
            continue;
        sym[pos] = id;
        sym[nx] = -1;
        next[pos] = next[nx];
        if (next[nx] >= 0)
            prev[next[nx]] = pos;
        int32_t r;
        if (prev[pos] >= 0 && (r = pair_rank(tok, sym[prev[pos]], sym[pos], &id)) >= 0)
            heap_push(heap, &hn, (uint64_t)r << 32 | (uint32_t)prev[pos]);
        if (next[pos] >= 0 && (r = pair_rank(tok, sym[pos], sym[next[pos]], &id)) >= 0)
            heap_push(heap, &hn, (uint64_t)r << 32 | (uint32_t)pos);
    }
    /* Compact the survivors in order (symbol 0 is never removed). */
    size_t m = 0;
    for (int32_t i = 0; i >= 0; i = next[i])
        sym[m++] = sym[i];
    return gs_tokens_append(out, sym, m);
}

int tok_bpe_word(const gs_tokenizer *tok, const uint8_t *s, size_t n, tok_bpe_scratch *sc,
                 gs_tokens *out)
{
    if (n == 0)
        return 0;
    if (n == 1 && tok->byte_id[s[0]] >= 0)
        return gs_tokens_append(out, &tok->byte_id[s[0]], 1);
    if (n <= NAIVE_MAX)
        return tok_bpe_word_naive(tok, s, n, sc, out);
    return tok_bpe_word_heap(tok, s, n, sc, out);
}

int tok_bpe_word_heap(const gs_tokenizer *tok, const uint8_t *s, size_t n, tok_bpe_scratch *sc,
                      gs_tokens *out)
{
    if (scratch_reserve(sc, 4 * n + 1))
        return GS_ENOMEM;
    size_t k = initial_symbols(tok, s, n, sc->sym);
    if (k == 0)
        return 0;
    return bpe_heap(tok, k, sc, out);
}
