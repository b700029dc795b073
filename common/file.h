/* file.h - opening model and input files safely, and reading a whole
 * (small) file into memory with a size cap.
 * Thread-safe: touches only caller memory. */
#ifndef GS_FILE_H
#define GS_FILE_H

#include <stddef.h>

#include "common/err.h"

/* Opens path (borrowed) read-only for a caller that expects a regular
 * file: the open itself never blocks (O_NONBLOCK, cleared again on
 * success), and a FIFO, device, socket or directory is refused. Returns
 * the descriptor (owned; close()) or GS_ENOENT (no such file) or GS_EIO
 * (cannot open, or not a regular file); d names the path. */
int gs_open_regular(const char *path, gs_diag *d);

/* Reads all of path (borrowed) into *out, NUL-terminated (owned; free
 * with free()), *len its length without the NUL. Reads at most cap + 1
 * bytes, so an over-large file costs no more than that. Only regular files
 * (gs_open_regular): a FIFO given by mistake fails at once instead of
 * blocking. Returns 0, GS_ENOENT (no such file), GS_EIO (cannot open or
 * read, or not a regular file), GS_ETOOBIG (more than cap bytes) or
 * GS_ENOMEM; d names the path. On error *out is NULL and *len 0. */
int gs_read_file(const char *path, size_t cap, char **out, size_t *len, gs_diag *d);

#endif
