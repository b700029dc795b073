/* file.h - opening model and input files safely, reading a whole
 * (small) file into memory with a size cap, and secrets read from files.
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

/* A secret (a cluster key) from path: the file's text without the
 * whitespace around it, 16 to cap - 1 printable ASCII bytes, into out
 * (NUL-terminated). A file that others than its owner may read is logged
 * as a warning (as ssh does for keys). 0, GS_ENOENT / GS_EIO / GS_ETOOBIG
 * (gs_read_file) or GS_ECONFIG (too short, or not printable ASCII); d
 * names the path. */
int gs_read_secret_file(const char *path, char *out, size_t cap, gs_diag *d);

/* Whether the n bytes at p (NULL with n 0) are the secret key
 * (NUL-terminated), compared in a time that does not depend on where they
 * differ (only on the lengths). */
int gs_key_equal(const char *p, size_t n, const char *key);

#endif
