/* job_map.h - id -> job lookup for the engine (cancel by id in O(1)).
 *
 * An open-addressing hash table with linear probing and backward-shift
 * deletion (no tombstones), keyed by the job id (> 0). Values are
 * borrowed pointers; the map owns only its slot array.
 * Not thread-safe: owned by the engine thread. */
#ifndef GS_JOB_MAP_H
#define GS_JOB_MAP_H

#include <stdint.h>

typedef struct {
    int64_t key; /* 0: empty */
    void *val;
} gs_job_map_slot;

typedef struct {
    gs_job_map_slot *slots; /* [cap], cap a power of two, or NULL */
    int32_t cap, n;
} gs_job_map;

/* A zeroed gs_job_map is empty and valid. Frees the slots; NULL: no-op. */
void gs_job_map_clear(gs_job_map *m);
/* Adds id -> val (id > 0, not present). 0, GS_EINVAL, GS_ENOMEM (the map
 * is unchanged then). */
int gs_job_map_put(gs_job_map *m, int64_t id, void *val);
/* The value of id, or NULL. */
void *gs_job_map_get(const gs_job_map *m, int64_t id);
/* Removes id; returns its value or NULL when absent. */
void *gs_job_map_del(gs_job_map *m, int64_t id);

#endif
