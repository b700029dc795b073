/* fuzz_safetensors.c - libFuzzer target for checkpoint loading
 * (worker/model/safetensors.c): the header of a .safetensors file (length,
 * JSON, dtypes, shapes, offsets, overlaps, metadata) and a sharded
 * model.safetensors.index.json (weight_map, shard names, the index and the
 * shards agreeing), through gs_st_open on real files, as the worker opens
 * them (mmap).
 *
 * Input: a mode byte, then the payload, written to a private temporary
 * folder. mode even: the payload is x.safetensors, opened as a file. mode
 * odd: the payload is model.safetensors.index.json beside two valid shards
 * written at start-up (a.safetensors: "t.a" F32 [2, 3] and "t.i" I64
 * [2]; b.safetensors: "t.b" BF16 [4]), opened as the index. When it
 * opens, every tensor is looked up by name, read as float32 or int64
 * (sizes permitting), and the set is checked against the tiny model's
 * config.json (gs_model_config_check_weights). Checked besides memory
 * safety: lookups find what the listing gives, and sizes agree. Built
 * with libFuzzer (GS_FUZZ=ON) and as replay_safetensors (ctest). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz_util.h"
#include "worker/model/model_config.h"
#include "worker/model/safetensors.h"

static gs_model_config cfg;

/* A safetensors file: 8-byte little-endian header length, header, data. */
static void write_st(const char *name, const char *header, const void *data, size_t dlen)
{
    size_t hl = strlen(header), n = 8 + hl + dlen;
    uint8_t *b = malloc(n);
    if (!b)
        abort();
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, header, hl);
    memcpy(b + 8 + hl, data, dlen);
    const char *path = fz_tmp_file(name);
    if (!path || fz_write(path, b, n))
        abort();
    free(b);
}

static void init(void)
{
    gs_diag d;
    if (gs_model_config_load(fz_fixture("tiny-glm4v"), &cfg, &d)) {
        fprintf(stderr, "fuzz_safetensors: %s\n", d.msg);
        abort();
    }
    static const float fa[6] = {1, 2, 3, 4, 5, 6};
    static const int64_t ia[2] = {-1, 7};
    uint8_t a[40];
    memcpy(a, fa, 24);
    memcpy(a + 24, ia, 16);
    write_st("a.safetensors",
             "{\"t.a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
             "\"t.i\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[24,40]},"
             "\"__metadata__\":{\"format\":\"pt\"}}",
             a, sizeof a);
    static const uint16_t bb[4] = {0x3f80, 0x4000, 0xbf80, 0x7fc0};
    write_st("b.safetensors", "{\"t.b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]}}",
             bb, sizeof bb);
}

static void walk(const gs_st *st)
{
    gs_diag d;
    size_t n = gs_st_count(st);
    for (size_t i = 0; i < n; i++) {
        const gs_st_tensor *t = gs_st_at(st, i);
        if (!t || gs_st_get(st, t->name) != t || gs_st_index(st, t) != i)
            __builtin_trap();
        if (t->nbytes != (size_t)t->numel * gs_st_dtype_size(t->dtype))
            __builtin_trap();
        if (t->numel > 4096)
            continue;
        void *buf = malloc((size_t)t->numel * 8 + 8);
        if (!buf)
            continue;
        if (gs_st_read_f32(st, t->name, buf, (size_t)t->numel, &d) != 0)
            (void)gs_st_read_i64(st, t->name, buf, (size_t)t->numel, &d);
        free(buf);
    }
    if (gs_st_at(st, n) != NULL)
        __builtin_trap();
    (void)gs_st_metadata(st, "format");
    size_t unexpected = 0;
    (void)gs_model_config_check_weights(&cfg, st, &unexpected, &d);
    for (int i = 0; i < gs_st_n_files(st); i++)
        (void)gs_st_file_path(st, i);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        init();
        ready = 1;
    }
    if (size < 1)
        return 0;
    const char *name = data[0] % 2 ? "model.safetensors.index.json" : "x.safetensors";
    char path[700];
    snprintf(path, sizeof path, "%s", fz_tmp_file(name));
    if (fz_write(path, data + 1, size - 1))
        abort();
    gs_st *st = NULL;
    gs_diag d;
    int rc = gs_st_open(path, &d, &st);
    if (rc == 0) {
        walk(st);
        gs_st_free(st);
    } else if (st || rc > 0) {
        __builtin_trap();
    }
    return 0;
}
