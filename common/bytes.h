/* bytes.h - byte sizes as flags and config keys give them (--gpu-memory,
 * gpu_memory): read by the workers and checked by the master's config,
 * which must agree. Thread-safe: a pure function. */
#ifndef GS_BYTES_H
#define GS_BYTES_H

#include <stddef.h>

/* A byte count: digits with an optional fraction and an optional suffix,
 * K/M/G/T (powers of 1024, also KiB..TiB, KB..TB read as the same binary
 * units) or B; "15G", "10GiB", "1.5g", "4096". 0 or GS_EINVAL (empty,
 * junk, zero, or over SIZE_MAX). */
int gs_parse_bytes(const char *s, size_t *out);

#endif
