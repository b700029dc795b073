/* job_map.c - the engine's id -> job table (job_map.h).
 *
 * Linear probing keeps a key within its run of occupied slots from its
 * home slot; deleting shifts later members of the run back into the hole
 * when the hole lies between their home and their slot (Knuth 6.4,
 * algorithm R), so lookups never need tombstones. The table grows at 1/2
 * load. Owns its slot array only. Single-threaded. */
#include "worker/engine/job_map.h"

#include <stdlib.h>

#include "common/err.h"

static uint32_t home(int64_t id, int32_t cap)
{
    uint64_t x = (uint64_t)id * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(x >> 32) & (uint32_t)(cap - 1);
}

void gs_job_map_clear(gs_job_map *m)
{
    if (!m)
        return;
    free(m->slots);
    m->slots = NULL;
    m->cap = m->n = 0;
}

static void insert(gs_job_map_slot *slots, int32_t cap, int64_t id, void *val)
{
    uint32_t i = home(id, cap);
    while (slots[i].key)
        i = (i + 1) & (uint32_t)(cap - 1);
    slots[i].key = id;
    slots[i].val = val;
}

int gs_job_map_put(gs_job_map *m, int64_t id, void *val)
{
    if (id <= 0 || gs_job_map_get(m, id))
        return GS_EINVAL;
    if ((int64_t)(m->n + 1) * 2 > m->cap) {
        if (m->cap > INT32_MAX / 4)
            return GS_ENOMEM;
        int32_t cap = m->cap ? m->cap * 2 : 64;
        gs_job_map_slot *s = calloc((size_t)cap, sizeof *s);
        if (!s)
            return GS_ENOMEM;
        for (int32_t i = 0; i < m->cap; i++)
            if (m->slots[i].key)
                insert(s, cap, m->slots[i].key, m->slots[i].val);
        free(m->slots);
        m->slots = s;
        m->cap = cap;
    }
    insert(m->slots, m->cap, id, val);
    m->n++;
    return 0;
}

static int32_t find(const gs_job_map *m, int64_t id)
{
    if (!m->cap || id <= 0)
        return -1;
    for (uint32_t i = home(id, m->cap);; i = (i + 1) & (uint32_t)(m->cap - 1)) {
        if (m->slots[i].key == id)
            return (int32_t)i;
        if (!m->slots[i].key)
            return -1;
    }
}

void *gs_job_map_get(const gs_job_map *m, int64_t id)
{
    int32_t i = find(m, id);
    return i < 0 ? NULL : m->slots[i].val;
}

void *gs_job_map_del(gs_job_map *m, int64_t id)
{
    int32_t at = find(m, id);
    if (at < 0)
        return NULL;
    void *val = m->slots[at].val;
    const uint32_t mask = (uint32_t)(m->cap - 1);
    uint32_t hole = (uint32_t)at;
    for (uint32_t j = (hole + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
        uint32_t h = home(m->slots[j].key, m->cap);
        /* j's entry may move into the hole unless its home lies cyclically
         * in (hole, j]. */
        int stays = hole <= j ? (h > hole && h <= j) : (h > hole || h <= j);
        if (!stays) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    m->slots[hole].key = 0;
    m->slots[hole].val = NULL;
    m->n--;
    return val;
}
