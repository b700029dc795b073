/* ptr_map.h - a small open-addressing map from a pointer to (pointer,
 * count), for the CUDA context's side tables: a bias's BF16 copy by its
 * F32 pointer, and each device allocation's size by its address (frees
 * get only the pointer). Linear probing with tombstones; grows to keep
 * the load under one half. A few hundred live entries at most.
 * Not thread-safe: owned by one context, used on its thread. */
#ifndef GS_CUDA_PTR_MAP_H
#define GS_CUDA_PTR_MAP_H

#include <stdint.h>
#include <stdlib.h>

#include "common/err.h"

typedef struct {
    const void *key; /* NULL: empty; GS_PTR_MAP_DELETED: tombstone */
    void *val;
    int64_t n;
} gs_ptr_ent;

typedef struct gs_ptr_map {
    gs_ptr_ent *e;
    uint32_t cap, used, live; /* cap: power of two; used counts tombstones too */
} gs_ptr_map;

#define GS_PTR_MAP_DELETED ((const void *)1)

static inline uint32_t gs_ptr_hash(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (uint32_t)x;
}

/* The live entry of key, or NULL. */
static inline gs_ptr_ent *gs_ptr_map_find(gs_ptr_map *m, const void *key)
{
    if (!m || !m->cap || !key || !m->live)
        return NULL;
    uint32_t h = gs_ptr_hash(key) & (m->cap - 1);
    for (uint32_t n = 0; n < m->cap && m->e[h].key; n++) {
        if (m->e[h].key == key)
            return &m->e[h];
        h = (h + 1) & (m->cap - 1);
    }
    return NULL;
}

/* Adds key (not present) -> (val, n). GS_ENOMEM when the map cannot grow. */
static inline int gs_ptr_map_put(gs_ptr_map *m, const void *key, void *val, int64_t n)
{
    if ((m->used + 1) * 2 > m->cap) {
        uint32_t ncap = m->cap ? m->cap : 256;
        while ((m->live + 1) * 2 > ncap / 2)
            ncap *= 2;
        gs_ptr_ent *ne = (gs_ptr_ent *)calloc(ncap, sizeof *ne);
        if (!ne)
            return GS_ENOMEM;
        for (uint32_t i = 0; i < m->cap; i++) {
            if (!m->e[i].key || m->e[i].key == GS_PTR_MAP_DELETED)
                continue;
            uint32_t h = gs_ptr_hash(m->e[i].key) & (ncap - 1);
            while (ne[h].key)
                h = (h + 1) & (ncap - 1);
            ne[h] = m->e[i];
        }
        free(m->e);
        m->e = ne;
        m->cap = ncap;
        m->used = m->live;
    }
    uint32_t h = gs_ptr_hash(key) & (m->cap - 1);
    while (m->e[h].key && m->e[h].key != GS_PTR_MAP_DELETED)
        h = (h + 1) & (m->cap - 1);
    if (!m->e[h].key)
        m->used++;
    m->e[h].key = key;
    m->e[h].val = val;
    m->e[h].n = n;
    m->live++;
    return 0;
}

/* Removes a live entry (from gs_ptr_map_find). */
static inline void gs_ptr_map_del(gs_ptr_map *m, gs_ptr_ent *e)
{
    e->key = GS_PTR_MAP_DELETED;
    e->val = NULL;
    m->live--;
}

/* 1 for a live entry (iterating m->e[0 .. cap)). */
static inline int gs_ptr_ent_live(const gs_ptr_ent *e)
{
    return e->key && e->key != GS_PTR_MAP_DELETED;
}

#endif
