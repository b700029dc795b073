/* st_writer.h - writes one .safetensors file (the reader is safetensors.h).
 *
 * The tensor list (names, dtypes, shapes) is given up front, so the header
 * and every offset are known before any data: data is then written tensor
 * by tensor in any order (pwrite at its offset), and a 10 GB checkpoint is
 * never held in memory. Layout: 8-byte little-endian header length, the
 * JSON header padded with spaces to a multiple of 8 bytes, then the data
 * with no gaps, ordered by element size (4-byte dtypes first, then 2-byte,
 * then 1-byte; by name within a size) so that every tensor is aligned to
 * its element size as the format's other writers do, and loaders can use
 * F32 / BF16 tensors in place. The file is written as PATH.tmp and renamed
 * over PATH by gs_st_writer_close, so a failed run leaves no partial file.
 * Not thread-safe (one writer per thread). */
#ifndef GS_ST_WRITER_H
#define GS_ST_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "worker/model/safetensors.h"

typedef struct {
    const char *name; /* borrowed for gs_st_writer_open only */
    gs_st_dtype dtype;
    int ndim;
    int64_t shape[GS_ST_MAX_DIMS];
} gs_st_wentry;

typedef struct gs_st_writer gs_st_writer; /* opaque */

/* Creates PATH.tmp sized for the n tensors of e (borrowed) and writes the
 * header. meta: NULL or NULL-terminated key, value string pairs for
 * "__metadata__" (borrowed). On success *out owns the writer (close or
 * abort it). GS_EINVAL (duplicate or empty name, bad dtype or shape),
 * GS_EIO (d names the file), GS_ENOMEM. */
int gs_st_writer_open(const char *path, const gs_st_wentry *e, size_t n, const char *const *meta,
                      gs_st_writer **out, gs_diag *d);
/* Writes the data of tensor `name` (nbytes must be its size; data
 * borrowed for the call). GS_ENOENT (not in the list), GS_EINVAL (size),
 * GS_EIO. */
int gs_st_writer_put(gs_st_writer *w, const char *name, const void *data, size_t nbytes,
                     gs_diag *d);
/* Checks that every tensor was written, syncs and renames PATH.tmp to
 * PATH; frees w whatever happens (on failure the .tmp is removed). */
int gs_st_writer_close(gs_st_writer *w, gs_diag *d);
/* Removes PATH.tmp and frees w. NULL: no-op. */
void gs_st_writer_abort(gs_st_writer *w);

#endif
