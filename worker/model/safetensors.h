/* safetensors.h - read-only access to safetensors checkpoints.
 *
 * gs_st_open maps one .safetensors file, or every shard of a Hugging Face
 * model folder (model.safetensors.index.json "weight_map", or a single
 * model.safetensors), and checks the whole header before handing anything
 * out: lengths inside the file, JSON syntax, dtypes, shapes (overflow
 * checked), byte counts, offsets inside the data area, no overlaps, the
 * index and the shards agreeing, no duplicate names. Malformed input is a
 * GS_EFORMAT (GS_EUNSUPPORTED for an unknown dtype or > 8 dims) with a
 * gs_diag naming the file and tensor; never a crash.
 *
 * Tensor data stays in the read-only mappings (MAP_PRIVATE): descriptors
 * and data pointers are borrowed from the handle and valid until its last
 * reference goes (gs_st_free; gs_st_ref). Data is little-endian and may be
 * unaligned for its dtype (the format aligns nothing unless the writer
 * padded the header); load it with memcpy or the gs_st_read_* helpers. The
 * files must not be modified or truncated while mapped (SIGBUS on a
 * truncation; there is no portable defence), and a loaded model may keep
 * computing from the mapping (weights.h).
 *
 * Threading: after a successful open every query is read-only and may be
 * called from any number of threads; references may be dropped from any
 * thread (the count is atomic). */
#ifndef GS_SAFETENSORS_H
#define GS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define GS_ST_MAX_DIMS 8

typedef enum {
    GS_ST_BOOL = 0,
    GS_ST_U8,
    GS_ST_I8,
    GS_ST_F8_E4M3,
    GS_ST_F8_E5M2,
    GS_ST_I16,
    GS_ST_U16,
    GS_ST_F16,
    GS_ST_BF16,
    GS_ST_I32,
    GS_ST_U32,
    GS_ST_F32,
    GS_ST_I64,
    GS_ST_U64,
    GS_ST_F64,
    GS_ST_N_DTYPES,
    GS_ST_ANY = -1 /* for gs_st_expect: do not check the dtype */
} gs_st_dtype;

/* "BF16" etc. as written in headers; "?" outside the table. Static. */
const char *gs_st_dtype_name(gs_st_dtype dt);
/* Bytes per element; 0 outside the table. */
size_t gs_st_dtype_size(gs_st_dtype dt);
/* Dtype from its header name; GS_EUNSUPPORTED when unknown. */
int gs_st_dtype_from_name(const char *name, gs_st_dtype *out);

/* One tensor. Plain value; every pointer is borrowed from the gs_st. */
typedef struct {
    const char *name;
    gs_st_dtype dtype;
    int ndim;                      /* 0..GS_ST_MAX_DIMS (0 = scalar) */
    int64_t shape[GS_ST_MAX_DIMS]; /* shape[ndim..] are 0 */
    int64_t numel;                 /* product of shape (1 for a scalar) */
    size_t nbytes;                 /* numel * dtype size */
    const void *data;              /* [shape] dtype, little-endian, maybe unaligned */
    int file;                      /* index of the file it lives in */
} gs_st_tensor;

typedef struct gs_st gs_st; /* opaque */

/* Opens `path`: a .safetensors file, a model.safetensors.index.json file,
 * or a folder holding model.safetensors.index.json or model.safetensors.
 * Borrows path. On success *out owns the handle (free with gs_st_free);
 * on failure *out is NULL, diag says what was wrong. Returns 0,
 * GS_ENOENT (no such file / no weights in the folder), GS_EIO, GS_ENOMEM,
 * GS_EFORMAT or GS_EUNSUPPORTED. */
int gs_st_open(const char *path, gs_diag *diag, gs_st **out);
/* Drops one reference; the last one unmaps everything. NULL: no-op. */
void gs_st_free(gs_st *st);
/* Another reference to st (returned; release with gs_st_free). A handle
 * starts with one reference, from gs_st_open. The weights take one when
 * they keep using tensor data in place, so the mappings outlive the
 * caller's gs_st_free. Counting is atomic; the queries stay read-only. */
gs_st *gs_st_ref(const gs_st *st);
/* Tells the kernel that t's data will not be read again soon: the whole
 * pages inside it leave this process's resident memory (madvise
 * MADV_DONTNEED; the mapping is read-only and private, so the data stays
 * readable, from the file, on the next access). For a loader that has
 * copied t elsewhere. Borrows both. */
void gs_st_evict(const gs_st *st, const gs_st_tensor *t);
/* Starts reading t's data from the file in the background (madvise
 * MADV_WILLNEED), for tensors that will be used in place: the first
 * forward pass then finds them in the page cache. Borrows both. */
void gs_st_prefetch(const gs_st *st, const gs_st_tensor *t);

/* Number of tensors over all files. */
size_t gs_st_count(const gs_st *st);
/* Tensor i in name order (strcmp), i < gs_st_count; NULL when out of range.
 * Borrowed. */
const gs_st_tensor *gs_st_at(const gs_st *st, size_t i);
/* Tensor by exact name (binary search); NULL when absent. Borrowed. */
const gs_st_tensor *gs_st_get(const gs_st *st, const char *name);
/* The index i (gs_st_at order) of a tensor t borrowed from st. */
size_t gs_st_index(const gs_st *st, const gs_st_tensor *t);

/* Files mapped: 1 for a single file, the number of distinct shards of an
 * index otherwise. Paths are borrowed. */
int gs_st_n_files(const gs_st *st);
const char *gs_st_file_path(const gs_st *st, int file);
/* Value of a "__metadata__" string entry, searched in file order; NULL when
 * absent. Borrowed. */
const char *gs_st_metadata(const gs_st *st, const char *key);

/* Checks that tensor `name` exists with dtype `dt` (GS_ST_ANY: any) and
 * shape[0..ndim). Returns 0, GS_ENOENT (missing) or GS_EFORMAT with a diag
 * naming the tensor and both shapes. Borrows shape. */
int gs_st_expect(const gs_st *st, const char *name, gs_st_dtype dt, int ndim, const int64_t *shape,
                 gs_diag *diag);
/* GS_ST_EXPECT(st, name, dt, diag, d0, d1, ...) lists the dims inline. */
#define GS_ST_EXPECT(st, name, dt, diag, ...)                                                      \
    gs_st_expect((st), (name), (dt), (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)),    \
                 (int64_t[]){__VA_ARGS__}, (diag))

/* Copies tensor `name` into dst[n] as float32, converting BF16, F16, F32 or
 * F64. n must equal the tensor's numel. Borrows dst (caller-owned, n
 * floats). 0, GS_ENOENT, GS_EINVAL (n differs) or GS_EUNSUPPORTED (dtype). */
int gs_st_read_f32(const gs_st *st, const char *name, float *dst, size_t n, gs_diag *diag);
/* Same for integer tensors (BOOL, U8, I8, I16, U16, I32, U32, I64, and U64
 * values <= INT64_MAX) into dst[n] int64. */
int gs_st_read_i64(const gs_st *st, const char *name, int64_t *dst, size_t n, gs_diag *diag);

#endif
