/* file.h - reading a whole (small) file into memory, with a size cap.
 * Thread-safe: touches only caller memory. */
#ifndef GS_FILE_H
#define GS_FILE_H

#include <stddef.h>

#include "common/err.h"

/* Reads all of path (borrowed) into *out, NUL-terminated (owned; free
 * with free()), *len its length without the NUL. Reads at most cap + 1
 * bytes, so an over-large file (or an endless stream) costs no more than
 * that. Returns 0, GS_ENOENT (no such file), GS_EIO (cannot open or read),
 * GS_ETOOBIG (more than cap bytes) or GS_ENOMEM; d names the path. On
 * error *out is NULL and *len 0. */
int gs_read_file(const char *path, size_t cap, char **out, size_t *len, gs_diag *d);

#endif
