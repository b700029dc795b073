/* safetensors.c - maps safetensors files and validates their headers.
 *
 * Owns: the mappings (one per file, read-only, MAP_PRIVATE), the tensor
 * table (sorted by name, names owned), each file's "__metadata__" object.
 * Does not own: the data's interpretation (weights.c binds names to model
 * slots; model_config.c checks shapes against config.json).
 * Threading: open/free on one thread; queries are read-only afterwards.
 *
 * Format (https://github.com/huggingface/safetensors): 8 bytes little-endian
 * N, then N bytes of JSON {name: {"dtype", "shape", "data_offsets":
 * [begin, end]}, "__metadata__": {str: str}}, then the data area; offsets
 * are relative to the data area. Every check happens at open time, before
 * a descriptor is handed out, so later readers can trust nbytes and data. */
#include "worker/model/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/dtype.h"
#include "common/file.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#error "safetensors data is little-endian; big-endian hosts are not supported"
#endif

/* A header above this is certainly not a checkpoint (the real model's
 * largest shard header is ~30 kB). */
#define GS_ST_MAX_HEADER (100u * 1024u * 1024u)
/* Index files are small JSON too (66 kB for the real model). */
#define GS_ST_MAX_INDEX (100u * 1024u * 1024u)

typedef struct {
    char *path;         /* owned */
    unsigned char *map; /* whole file, read-only */
    size_t size;
    size_t data_off; /* 8 + header length */
    json_t *meta;    /* "__metadata__" object or NULL; owned reference */
} st_file;

struct gs_st {
    atomic_int refs; /* gs_st_open: 1; gs_st_ref +1; gs_st_free -1 */
    st_file *files;
    int n_files;
    gs_st_tensor *tensors; /* sorted by name after open */
    size_t n_tensors, cap_tensors;
};

static const struct {
    const char *name;
    size_t size;
} dtype_table[GS_ST_N_DTYPES] = {
    [GS_ST_BOOL] = {"BOOL", 1},       [GS_ST_U8] = {"U8", 1},           [GS_ST_I8] = {"I8", 1},
    [GS_ST_F8_E4M3] = {"F8_E4M3", 1}, [GS_ST_F8_E5M2] = {"F8_E5M2", 1}, [GS_ST_I16] = {"I16", 2},
    [GS_ST_U16] = {"U16", 2},         [GS_ST_F16] = {"F16", 2},         [GS_ST_BF16] = {"BF16", 2},
    [GS_ST_I32] = {"I32", 4},         [GS_ST_U32] = {"U32", 4},         [GS_ST_F32] = {"F32", 4},
    [GS_ST_I64] = {"I64", 8},         [GS_ST_U64] = {"U64", 8},         [GS_ST_F64] = {"F64", 8},
};

const char *gs_st_dtype_name(gs_st_dtype dt)
{
    return (dt >= 0 && dt < GS_ST_N_DTYPES) ? dtype_table[dt].name : "?";
}

size_t gs_st_dtype_size(gs_st_dtype dt)
{
    return (dt >= 0 && dt < GS_ST_N_DTYPES) ? dtype_table[dt].size : 0;
}

int gs_st_dtype_from_name(const char *name, gs_st_dtype *out)
{
    for (int i = 0; i < GS_ST_N_DTYPES; i++) {
        if (strcmp(name, dtype_table[i].name) == 0) {
            *out = (gs_st_dtype)i;
            return 0;
        }
    }
    return GS_EUNSUPPORTED;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* ------------------------------------------------------------------------
 * One file */

static int add_tensor(gs_st *st, gs_diag *diag, gs_st_tensor **out)
{
    if (st->n_tensors == st->cap_tensors) {
        size_t cap = st->cap_tensors ? st->cap_tensors * 2 : 64;
        gs_st_tensor *t = realloc(st->tensors, cap * sizeof *t);
        if (!t)
            return gs_diag_set(diag, GS_ENOMEM, "safetensors: out of memory for %zu tensors", cap);
        st->tensors = t;
        st->cap_tensors = cap;
    }
    *out = &st->tensors[st->n_tensors];
    memset(*out, 0, sizeof **out);
    return 0;
}

/* A JSON integer in [0, max]; 0 or -1. */
static int get_u64(const json_t *v, uint64_t max, uint64_t *out)
{
    if (!json_is_integer(v))
        return -1;
    json_int_t x = json_integer_value(v);
    if (x < 0 || (uint64_t)x > max)
        return -1;
    *out = (uint64_t)x;
    return 0;
}

/* Parses one tensor entry into t (name already set). */
static int parse_entry(const char *fname, const char *name, const json_t *e, size_t data_size,
                       gs_st_tensor *t, gs_diag *diag)
{
    if (!json_is_object(e))
        return gs_diag_set(diag, GS_EFORMAT, "%s: tensor '%s': entry is not an object", fname,
                           name);
    const json_t *jd = json_object_get(e, "dtype");
    const json_t *js = json_object_get(e, "shape");
    const json_t *jo = json_object_get(e, "data_offsets");
    if (!json_is_string(jd))
        return gs_diag_set(diag, GS_EFORMAT, "%s: tensor '%s': dtype missing or not a string",
                           fname, name);
    if (gs_st_dtype_from_name(json_string_value(jd), &t->dtype) != 0)
        return gs_diag_set(diag, GS_EUNSUPPORTED, "%s: tensor '%s': unknown dtype '%s'", fname,
                           name, json_string_value(jd));
    if (!json_is_array(js))
        return gs_diag_set(diag, GS_EFORMAT, "%s: tensor '%s': shape missing or not an array",
                           fname, name);
    size_t nd = json_array_size(js);
    if (nd > GS_ST_MAX_DIMS)
        return gs_diag_set(diag, GS_EUNSUPPORTED, "%s: tensor '%s': %zu dims (max %d)", fname, name,
                           nd, GS_ST_MAX_DIMS);
    t->ndim = (int)nd;
    uint64_t numel = 1;
    for (size_t i = 0; i < nd; i++) {
        uint64_t d;
        if (get_u64(json_array_get(js, i), INT64_MAX, &d) != 0)
            return gs_diag_set(diag, GS_EFORMAT,
                               "%s: tensor '%s': shape[%zu] is not a non-negative integer", fname,
                               name, i);
        t->shape[i] = (int64_t)d;
        if (d != 0 && numel > (uint64_t)INT64_MAX / d)
            return gs_diag_set(diag, GS_EFORMAT, "%s: tensor '%s': shape product overflows", fname,
                               name);
        numel *= d;
    }
    size_t es = gs_st_dtype_size(t->dtype);
    if (numel > (uint64_t)INT64_MAX / es || numel > SIZE_MAX / es)
        return gs_diag_set(diag, GS_EFORMAT, "%s: tensor '%s': byte size overflows", fname, name);
    t->numel = (int64_t)numel;
    t->nbytes = (size_t)numel * es;

    uint64_t b, en;
    if (!json_is_array(jo) || json_array_size(jo) != 2 ||
        get_u64(json_array_get(jo, 0), UINT64_MAX >> 1, &b) != 0 ||
        get_u64(json_array_get(jo, 1), UINT64_MAX >> 1, &en) != 0)
        return gs_diag_set(diag, GS_EFORMAT,
                           "%s: tensor '%s': data_offsets must be [begin, end], non-negative "
                           "integers",
                           fname, name);
    if (b > en)
        return gs_diag_set(diag, GS_EFORMAT,
                           "%s: tensor '%s': data_offsets [%llu, %llu]: begin > end", fname, name,
                           (unsigned long long)b, (unsigned long long)en);
    if (en > data_size)
        return gs_diag_set(
            diag, GS_EFORMAT,
            "%s: tensor '%s': data_offsets end %llu beyond the data area (%zu bytes; "
            "file truncated?)",
            fname, name, (unsigned long long)en, data_size);
    if (en - b != t->nbytes)
        return gs_diag_set(diag, GS_EFORMAT,
                           "%s: tensor '%s': %llu data bytes, but %s shape needs %zu", fname, name,
                           (unsigned long long)(en - b), gs_st_dtype_name(t->dtype), t->nbytes);
    t->data = (const void *)(uintptr_t)b; /* offset for now; made a pointer by the caller */
    return 0;
}

static int cmp_by_offset(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const gs_st_tensor *)a)->data;
    uintptr_t y = (uintptr_t)((const gs_st_tensor *)b)->data;
    return x < y ? -1 : x > y;
}

static int check_metadata(const char *fname, json_t *m, gs_diag *diag)
{
    if (!json_is_object(m))
        return gs_diag_set(diag, GS_EFORMAT, "%s: __metadata__ is not an object", fname);
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v)
    {
        if (!json_is_string(v))
            return gs_diag_set(diag, GS_EFORMAT, "%s: __metadata__.%s is not a string", fname, k);
    }
    return 0;
}

/* Maps and parses the file at `path`, appending its tensors to st.
 * The new tensors are st->tensors[first..n_tensors). */
static int load_file(gs_st *st, const char *path, gs_diag *diag)
{
    const char *fname = base_name(path);
    st_file *nf = realloc(st->files, (size_t)(st->n_files + 1) * sizeof *nf);
    if (!nf)
        return gs_diag_set(diag, GS_ENOMEM, "%s: out of memory", fname);
    st->files = nf;
    st_file *f = &st->files[st->n_files];
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path)
        return gs_diag_set(diag, GS_ENOMEM, "%s: out of memory", fname);
    int file_idx = st->n_files++; /* counted now so gs_st_free cleans up */

    /* Never blocks in open() (a FIFO named like a shard is refused). */
    int fd = gs_open_regular(path, diag);
    if (fd < 0)
        return fd;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return gs_diag_set(diag, GS_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (sb.st_size < 8) {
        close(fd);
        return gs_diag_set(diag, GS_EFORMAT,
                           "%s: %lld bytes, too short for a safetensors header (file truncated?)",
                           fname, (long long)sb.st_size);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return gs_diag_set(diag, GS_ETOOBIG, "%s: file too large to map", fname);
    }
    f->size = (size_t)sb.st_size;
    void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    int mmap_errno = errno;
    close(fd);
    if (m == MAP_FAILED)
        return gs_diag_set(diag, GS_EIO, "%s: mmap failed: %s", fname, strerror(mmap_errno));
    f->map = m;

    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | f->map[i];
    if (hlen > f->size - 8)
        return gs_diag_set(diag, GS_EFORMAT,
                           "%s: header length %llu exceeds the file (%zu bytes; truncated?)", fname,
                           (unsigned long long)hlen, f->size);
    if (hlen > GS_ST_MAX_HEADER)
        return gs_diag_set(diag, GS_EFORMAT, "%s: header length %llu above the %u-byte limit",
                           fname, (unsigned long long)hlen, GS_ST_MAX_HEADER);
    f->data_off = 8 + (size_t)hlen;
    size_t data_size = f->size - f->data_off;

    json_error_t jerr;
    json_t *root =
        json_loadb((const char *)f->map + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return gs_diag_set(diag, GS_EFORMAT, "%s: header JSON: %s (at byte %d)", fname, jerr.text,
                           jerr.position);
    if (!json_is_object(root)) {
        json_decref(root);
        return gs_diag_set(diag, GS_EFORMAT, "%s: header is not a JSON object", fname);
    }

    size_t first = st->n_tensors;
    int rc = 0;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        if (strcmp(key, "__metadata__") == 0) {
            if ((rc = check_metadata(fname, val, diag)) != 0)
                break;
            f->meta = json_incref(val);
            continue;
        }
        if (key[0] == 0) {
            rc = gs_diag_set(diag, GS_EFORMAT, "%s: tensor with an empty name", fname);
            break;
        }
        gs_st_tensor *t = NULL;
        if ((rc = add_tensor(st, diag, &t)) != 0)
            break;
        if ((rc = parse_entry(fname, key, val, data_size, t, diag)) != 0)
            break;
        if (!(t->name = strdup(key))) {
            rc = gs_diag_set(diag, GS_ENOMEM, "%s: out of memory", fname);
            break;
        }
        t->file = file_idx;
        st->n_tensors++;
    }
    json_decref(root);
    if (rc != 0)
        return rc;

    /* Overlaps: sort this file's tensors by begin offset, then each one must
     * start at or after the previous end. Gaps are allowed. */
    gs_st_tensor *ft = st->tensors + first;
    size_t nft = st->n_tensors - first;
    if (nft > 1)
        qsort(ft, nft, sizeof *ft, cmp_by_offset);
    for (size_t i = 1; i < nft; i++) {
        uintptr_t prev_end = (uintptr_t)ft[i - 1].data + ft[i - 1].nbytes;
        if ((uintptr_t)ft[i].data < prev_end)
            return gs_diag_set(diag, GS_EFORMAT,
                               "%s: tensor '%s' (offset %llu) overlaps tensor '%s' (ends at %llu)",
                               fname, ft[i].name, (unsigned long long)(uintptr_t)ft[i].data,
                               ft[i - 1].name, (unsigned long long)prev_end);
    }
    for (size_t i = 0; i < nft; i++)
        ft[i].data = f->map + f->data_off + (uintptr_t)ft[i].data;
    return 0;
}

/* ------------------------------------------------------------------------
 * Sharded folders */

/* Shard file names must stay inside the folder. */
static int safe_rel_name(const char *s)
{
    if (s[0] == 0 || s[0] == '/')
        return 0;
    for (const char *p = s; *p;) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if ((n == 2 && p[0] == '.' && p[1] == '.') || n == 0)
            return 0;
        p += n + (e ? 1 : 0);
    }
    return 1;
}

static int cmp_by_name(const void *a, const void *b)
{
    return strcmp(((const gs_st_tensor *)a)->name, ((const gs_st_tensor *)b)->name);
}

static int load_index(gs_st *st, const char *index_path, const char *dir, gs_diag *diag)
{
    const char *iname = base_name(index_path);
    char *text = NULL;
    size_t len = 0;
    int rc = gs_read_file(index_path, GS_ST_MAX_INDEX, &text, &len, diag);
    if (rc != 0)
        return rc;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root)
        return gs_diag_set(diag, GS_EFORMAT, "%s: JSON: %s (line %d)", iname, jerr.text, jerr.line);
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm) || json_object_size(wm) == 0) {
        json_decref(root);
        return gs_diag_set(diag, GS_EFORMAT, "%s: weight_map missing, empty or not an object",
                           iname);
    }

    /* Distinct shard names, in sorted order (deterministic file numbering). */
    size_t nw = json_object_size(wm), ns = 0;
    const char **shards = calloc(nw, sizeof *shards);
    if (!shards) {
        json_decref(root);
        return gs_diag_set(diag, GS_ENOMEM, "%s: out of memory", iname);
    }
    const char *key;
    json_t *val;
    json_object_foreach(wm, key, val)
    {
        if (!json_is_string(val) || !safe_rel_name(json_string_value(val))) {
            rc = gs_diag_set(diag, GS_EFORMAT,
                             "%s: weight_map['%s'] is not a file name inside the folder", iname,
                             key);
            goto out;
        }
        const char *s = json_string_value(val);
        size_t i;
        for (i = 0; i < ns; i++)
            if (strcmp(shards[i], s) == 0)
                break;
        if (i == ns)
            shards[ns++] = s;
    }
    for (size_t i = 1; i < ns; i++) /* insertion sort; a handful of shards */
        for (size_t j = i; j > 0 && strcmp(shards[j - 1], shards[j]) > 0; j--) {
            const char *t = shards[j];
            shards[j] = shards[j - 1];
            shards[j - 1] = t;
        }

    for (size_t i = 0; i < ns; i++) {
        size_t plen = strlen(dir) + strlen(shards[i]) + 2;
        char *p = malloc(plen);
        if (!p) {
            rc = gs_diag_set(diag, GS_ENOMEM, "%s: out of memory", iname);
            goto out;
        }
        snprintf(p, plen, "%s/%s", dir, shards[i]);
        size_t first = st->n_tensors;
        rc = load_file(st, p, diag);
        free(p);
        if (rc == GS_ENOENT)
            gs_diag_set(diag, GS_ENOENT, "%s: shard '%s' listed in the index is missing", iname,
                        shards[i]);
        if (rc != 0)
            goto out;
        /* Each tensor of the shard must be mapped to this shard. */
        for (size_t t = first; t < st->n_tensors; t++) {
            const char *nm = st->tensors[t].name;
            json_t *w = json_object_get(wm, nm);
            if (!w) {
                rc = gs_diag_set(diag, GS_EFORMAT, "%s: tensor '%s' is not in the index %s",
                                 shards[i], nm, iname);
                goto out;
            }
            if (strcmp(json_string_value(w), shards[i]) != 0) {
                rc = gs_diag_set(diag, GS_EFORMAT,
                                 "%s: tensor '%s' found here but the index maps it to %s",
                                 shards[i], nm, json_string_value(w));
                goto out;
            }
        }
    }
    /* Every index entry must be present (in the shard it names: checked above). */
    if (st->n_tensors > 1)
        qsort(st->tensors, st->n_tensors, sizeof *st->tensors, cmp_by_name);
    json_object_foreach(wm, key, val)
    {
        if (!gs_st_get(st, key)) {
            rc = gs_diag_set(diag, GS_EFORMAT, "%s: tensor '%s' listed in %s is absent",
                             json_string_value(val), key, iname);
            goto out;
        }
    }
out:
    free(shards);
    json_decref(root);
    return rc;
}

/* ------------------------------------------------------------------------
 * Public */

static int ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

static int file_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

int gs_st_open(const char *path, gs_diag *diag, gs_st **out)
{
    *out = NULL;
    gs_diag_clear(diag);
    struct stat sb;
    if (stat(path, &sb) != 0)
        return gs_diag_set(diag, errno == ENOENT ? GS_ENOENT : GS_EIO, "%s: %s", path,
                           strerror(errno));
    gs_st *st = calloc(1, sizeof *st);
    if (!st)
        return gs_diag_set(diag, GS_ENOMEM, "safetensors: out of memory");
    atomic_init(&st->refs, 1);

    int rc = 0;
    char *dir = NULL, *index = NULL;
    if (S_ISDIR(sb.st_mode)) {
        size_t n = strlen(path) + 40;
        dir = strdup(path);
        index = malloc(n);
        if (!dir || !index) {
            rc = gs_diag_set(diag, GS_ENOMEM, "safetensors: out of memory");
            goto done;
        }
        snprintf(index, n, "%s/model.safetensors.index.json", path);
        if (!file_exists(index)) {
            snprintf(index, n, "%s/model.safetensors", path);
            if (!file_exists(index)) {
                rc = gs_diag_set(diag, GS_ENOENT,
                                 "%s: no model.safetensors.index.json or model.safetensors", path);
                goto done;
            }
            rc = load_file(st, index, diag);
            goto done;
        }
    } else if (ends_with(path, ".index.json")) {
        const char *slash = strrchr(path, '/');
        dir = slash ? strndup(path, (size_t)(slash - path)) : strdup(".");
        index = strdup(path);
        if (!dir || !index) {
            rc = gs_diag_set(diag, GS_ENOMEM, "safetensors: out of memory");
            goto done;
        }
    } else {
        rc = load_file(st, path, diag);
        goto done;
    }
    rc = load_index(st, index, dir, diag);
done:
    free(dir);
    free(index);
    if (rc == 0) {
        if (st->n_tensors > 1)
            qsort(st->tensors, st->n_tensors, sizeof *st->tensors, cmp_by_name);
        for (size_t i = 1; i < st->n_tensors; i++) {
            if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0) {
                rc = gs_diag_set(diag, GS_EFORMAT, "tensor '%s' appears in both %s and %s",
                                 st->tensors[i].name,
                                 base_name(st->files[st->tensors[i - 1].file].path),
                                 base_name(st->files[st->tensors[i].file].path));
                break;
            }
        }
    }
    if (rc != 0) {
        gs_st_free(st);
        return rc;
    }
    *out = st;
    return 0;
}

gs_st *gs_st_ref(const gs_st *st)
{
    gs_st *s = (gs_st *)st; /* the count is the one mutable field */
    atomic_fetch_add(&s->refs, 1);
    return s;
}

void gs_st_free(gs_st *st)
{
    if (!st || atomic_fetch_sub(&st->refs, 1) > 1)
        return;
    for (size_t i = 0; i < st->n_tensors; i++)
        free((char *)st->tensors[i].name);
    free(st->tensors);
    for (int i = 0; i < st->n_files; i++) {
        if (st->files[i].map)
            munmap(st->files[i].map, st->files[i].size);
        json_decref(st->files[i].meta);
        free(st->files[i].path);
    }
    free(st->files);
    free(st);
}

void gs_st_evict(const gs_st *st, const gs_st_tensor *t)
{
    long ps = sysconf(_SC_PAGESIZE);
    const size_t page = ps > 0 ? (size_t)ps : 4096;
    (void)st;
    uintptr_t a = ((uintptr_t)t->data + page - 1) & ~(uintptr_t)(page - 1);
    uintptr_t b = ((uintptr_t)t->data + t->nbytes) & ~(uintptr_t)(page - 1);
    if (b > a) /* only whole pages: a neighbour may still be in use in place */
        madvise((void *)a, (size_t)(b - a), MADV_DONTNEED);
}

void gs_st_prefetch(const gs_st *st, const gs_st_tensor *t)
{
    long ps = sysconf(_SC_PAGESIZE);
    const size_t page = ps > 0 ? (size_t)ps : 4096;
    (void)st;
    uintptr_t a = (uintptr_t)t->data & ~(uintptr_t)(page - 1);
    uintptr_t b = (uintptr_t)t->data + t->nbytes;
    if (t->nbytes)
        madvise((void *)a, (size_t)(b - a), MADV_WILLNEED);
}

size_t gs_st_count(const gs_st *st)
{
    return st->n_tensors;
}

const gs_st_tensor *gs_st_at(const gs_st *st, size_t i)
{
    return i < st->n_tensors ? &st->tensors[i] : NULL;
}

size_t gs_st_index(const gs_st *st, const gs_st_tensor *t)
{
    return (size_t)(t - st->tensors);
}

const gs_st_tensor *gs_st_get(const gs_st *st, const char *name)
{
    size_t lo = 0, hi = st->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->tensors[mid].name, name);
        if (c == 0)
            return &st->tensors[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int gs_st_n_files(const gs_st *st)
{
    return st->n_files;
}

const char *gs_st_file_path(const gs_st *st, int file)
{
    return (file >= 0 && file < st->n_files) ? st->files[file].path : NULL;
}

const char *gs_st_metadata(const gs_st *st, const char *key)
{
    for (int i = 0; i < st->n_files; i++) {
        json_t *v = st->files[i].meta ? json_object_get(st->files[i].meta, key) : NULL;
        if (v)
            return json_string_value(v);
    }
    return NULL;
}

/* "[a, b, c]" into buf (always terminated, truncated with "..."). */
static void fmt_shape(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
    else if (cap > 4)
        memcpy(buf + cap - 4, "...", 4);
}

int gs_st_expect(const gs_st *st, const char *name, gs_st_dtype dt, int ndim, const int64_t *shape,
                 gs_diag *diag)
{
    const gs_st_tensor *t = gs_st_get(st, name);
    if (!t)
        return gs_diag_set(diag, GS_ENOENT, "tensor '%s': missing", name);
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (same && (dt == GS_ST_ANY || t->dtype == dt))
        return 0;
    char got[96], want[96];
    fmt_shape(got, sizeof got, t->ndim, t->shape);
    fmt_shape(want, sizeof want, ndim < 0 ? 0 : ndim, shape);
    return gs_diag_set(diag, GS_EFORMAT, "tensor '%s': %s %s, expected %s %s", name,
                       gs_st_dtype_name(t->dtype), got, dt == GS_ST_ANY ? "" : gs_st_dtype_name(dt),
                       want);
}

static int lookup_n(const gs_st *st, const char *name, size_t n, gs_diag *diag,
                    const gs_st_tensor **out)
{
    const gs_st_tensor *t = gs_st_get(st, name);
    if (!t)
        return gs_diag_set(diag, GS_ENOENT, "tensor '%s': missing", name);
    if ((uint64_t)t->numel != (uint64_t)n)
        return gs_diag_set(diag, GS_EINVAL, "tensor '%s': %lld elements, buffer holds %zu", name,
                           (long long)t->numel, n);
    *out = t;
    return 0;
}

int gs_st_read_f32(const gs_st *st, const char *name, float *dst, size_t n, gs_diag *diag)
{
    const gs_st_tensor *t = NULL;
    int rc = lookup_n(st, name, n, diag, &t);
    if (rc != 0)
        return rc;
    const unsigned char *s = t->data;
    switch (t->dtype) {
    case GS_ST_BF16:
        gs_bf16_to_f32_row(s, dst, n);
        return 0;
    case GS_ST_F16:
        gs_f16_to_f32_row(s, dst, n);
        return 0;
    case GS_ST_F32:
        if (n)
            memcpy(dst, s, n * sizeof(float));
        return 0;
    case GS_ST_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, s + 8 * i, 8);
            dst[i] = (float)d;
        }
        return 0;
    default:
        return gs_diag_set(diag, GS_EUNSUPPORTED, "tensor '%s': %s cannot be read as float32", name,
                           gs_st_dtype_name(t->dtype));
    }
}

int gs_st_read_i64(const gs_st *st, const char *name, int64_t *dst, size_t n, gs_diag *diag)
{
    const gs_st_tensor *t = NULL;
    int rc = lookup_n(st, name, n, diag, &t);
    if (rc != 0)
        return rc;
    const unsigned char *s = t->data;
    for (size_t i = 0; i < n; i++) {
        switch (t->dtype) {
        case GS_ST_BOOL:
        case GS_ST_U8:
            dst[i] = s[i];
            break;
        case GS_ST_I8:
            dst[i] = (int8_t)s[i];
            break;
        case GS_ST_I16: {
            int16_t v;
            memcpy(&v, s + 2 * i, 2);
            dst[i] = v;
            break;
        }
        case GS_ST_U16: {
            uint16_t v;
            memcpy(&v, s + 2 * i, 2);
            dst[i] = v;
            break;
        }
        case GS_ST_I32: {
            int32_t v;
            memcpy(&v, s + 4 * i, 4);
            dst[i] = v;
            break;
        }
        case GS_ST_U32: {
            uint32_t v;
            memcpy(&v, s + 4 * i, 4);
            dst[i] = v;
            break;
        }
        case GS_ST_I64:
            memcpy(&dst[i], s + 8 * i, 8);
            break;
        case GS_ST_U64: {
            uint64_t v;
            memcpy(&v, s + 8 * i, 8);
            if (v > (uint64_t)INT64_MAX)
                return gs_diag_set(diag, GS_ERANGE, "tensor '%s': element %zu above INT64_MAX",
                                   name, i);
            dst[i] = (int64_t)v;
            break;
        }
        default:
            return gs_diag_set(diag, GS_EUNSUPPORTED, "tensor '%s': %s cannot be read as integers",
                               name, gs_st_dtype_name(t->dtype));
        }
    }
    return 0;
}
