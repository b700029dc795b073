/* Tests for worker/model/safetensors and common/dtype.h: valid files,
 * single and sharded folders, every kind of corruption, dtype conversions. */
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/dtype.h"
#include "st_write.h"
#include "test.h"
#include "worker/model/safetensors.h"

static char g_dir[512];
static char g_p[1024], g_p2[1024];

static const char *tmp(const char *name)
{
    return tw_path(g_p, sizeof g_p, g_dir, name);
}

static int has(const char *msg, const char *s)
{
    return !s || strstr(msg, s) != NULL;
}

/* Opens path expecting code `want`, and a diag containing each of the
 * non-NULL strings. */
#define EXPECT_OPEN_FAILS(path, want, s1, s2)                                                      \
    do {                                                                                           \
        gs_diag d_;                                                                                \
        gs_st *st_ = (gs_st *)1;                                                                   \
        int rc_ = gs_st_open((path), &d_, &st_);                                                   \
        GS_ASSERT_MSG(rc_ == (want), "open(%s): got %s (%s), want %s", (path), gs_err_name(rc_),   \
                      d_.msg, gs_err_name(want));                                                  \
        GS_ASSERT(st_ == NULL);                                                                    \
        GS_ASSERT_EQ(d_.code, (want));                                                             \
        GS_ASSERT_MSG(has(d_.msg, (s1)), "diag \"%s\" lacks \"%s\"", d_.msg, (const char *)(s1));  \
        GS_ASSERT_MSG(has(d_.msg, (s2)), "diag \"%s\" lacks \"%s\"", d_.msg, (const char *)(s2));  \
    } while (0)

static const tw_tensor k_basic[] = {
    {"w.bf16", "BF16", 2, {2, 3}}, {"v.f32", "F32", 1, {4}},    {"ids", "I64", 1, {3}},
    {"scalar", "F32", 0, {0}},     {"empty", "F16", 2, {0, 5}}, {"h.f16", "F16", 1, {3}},
    {"b", "BOOL", 1, {5}},
};

static void test_valid_file(void)
{
    uint16_t bf[6] = {0x3f80, 0xbf80, 0x4000, 0x0000, 0x8000, 0x7f80}; /* 1 -1 2 0 -0 inf */
    float f32[4] = {0.5f, -1.25f, 3.0f, 1e-3f};
    int64_t ids[3] = {-7, 0, 1234567890123LL};
    float sc = 42.0f;
    uint16_t hf[3] = {0x3c00, 0x0001, 0xfbff}; /* 1, 2^-24, -65504 */
    const void *fill[7] = {bf, f32, ids, &sc, NULL, hf, NULL};
    GS_ASSERT_OK(tw_write(tmp("a.safetensors"), k_basic, 7, "{\"format\":\"pt\"}", 1, fill));

    gs_diag d;
    gs_st *st = NULL;
    GS_ASSERT_OK(gs_st_open(tmp("a.safetensors"), &d, &st));
    GS_ASSERT_EQ(gs_st_count(st), 7);
    GS_ASSERT_EQ(gs_st_n_files(st), 1);
    GS_ASSERT_STREQ(gs_st_metadata(st, "format"), "pt");
    GS_ASSERT(gs_st_metadata(st, "nope") == NULL);
    GS_ASSERT(gs_st_get(st, "missing") == NULL);
    GS_ASSERT(gs_st_at(st, 7) == NULL);
    for (size_t i = 1; i < gs_st_count(st); i++) /* name order */
        GS_ASSERT(strcmp(gs_st_at(st, i - 1)->name, gs_st_at(st, i)->name) < 0);

    const gs_st_tensor *t = gs_st_get(st, "w.bf16");
    GS_ASSERT(t != NULL);
    GS_ASSERT_EQ(t->dtype, GS_ST_BF16);
    GS_ASSERT_EQ(t->ndim, 2);
    GS_ASSERT_EQ(t->shape[0], 2);
    GS_ASSERT_EQ(t->shape[1], 3);
    GS_ASSERT_EQ(t->shape[2], 0);
    GS_ASSERT_EQ(t->numel, 6);
    GS_ASSERT_EQ(t->nbytes, 12);
    GS_ASSERT(memcmp(t->data, bf, 12) == 0);
    float out[6];
    GS_ASSERT_OK(gs_st_read_f32(st, "w.bf16", out, 6, &d));
    GS_ASSERT_EQ(out[0], 1.0);
    GS_ASSERT_EQ(out[1], -1.0);
    GS_ASSERT_EQ(out[2], 2.0);
    GS_ASSERT(out[4] == 0.0f && signbit(out[4]));
    GS_ASSERT(isinf(out[5]) && out[5] > 0);

    GS_ASSERT_OK(gs_st_read_f32(st, "v.f32", out, 4, &d));
    for (int i = 0; i < 4; i++)
        GS_ASSERT_EQ(gs_f32_bits(out[i]), gs_f32_bits(f32[i]));
    GS_ASSERT_OK(gs_st_read_f32(st, "h.f16", out, 3, &d));
    GS_ASSERT_EQ(out[0], 1.0);
    GS_ASSERT_EQ(out[1], 1.0 / 16777216.0);
    GS_ASSERT_EQ(out[2], -65504.0);

    int64_t iv[5];
    GS_ASSERT_OK(gs_st_read_i64(st, "ids", iv, 3, &d));
    GS_ASSERT_EQ(iv[0], -7);
    GS_ASSERT_EQ(iv[2], 1234567890123LL);
    GS_ASSERT_OK(gs_st_read_i64(st, "b", iv, 5, &d));
    GS_ASSERT_EQ(gs_st_read_i64(st, "v.f32", iv, 4, &d), GS_EUNSUPPORTED);

    t = gs_st_get(st, "scalar");
    GS_ASSERT(t && t->ndim == 0 && t->numel == 1 && t->nbytes == 4);
    GS_ASSERT_OK(gs_st_read_f32(st, "scalar", out, 1, &d));
    GS_ASSERT_EQ(out[0], 42.0);
    t = gs_st_get(st, "empty");
    GS_ASSERT(t && t->numel == 0 && t->nbytes == 0);
    GS_ASSERT_OK(gs_st_read_f32(st, "empty", out, 0, &d));

    /* Wrong element count, wrong dtype, missing name. */
    GS_ASSERT_EQ(gs_st_read_f32(st, "w.bf16", out, 5, &d), GS_EINVAL);
    GS_ASSERT(strstr(d.msg, "w.bf16") != NULL);
    GS_ASSERT_EQ(gs_st_read_f32(st, "ids", out, 3, &d), GS_EUNSUPPORTED);
    GS_ASSERT_EQ(gs_st_read_f32(st, "zzz", out, 3, &d), GS_ENOENT);
    gs_st_free(st);
    gs_st_free(NULL);
}

static void test_expect(void)
{
    GS_ASSERT_OK(tw_write(tmp("e.safetensors"), k_basic, 7, NULL, 8, NULL));
    gs_diag d;
    gs_st *st;
    GS_ASSERT_OK(gs_st_open(tmp("e.safetensors"), &d, &st));
    GS_ASSERT_OK(GS_ST_EXPECT(st, "w.bf16", GS_ST_BF16, &d, 2, 3));
    GS_ASSERT_OK(GS_ST_EXPECT(st, "w.bf16", GS_ST_ANY, &d, 2, 3));
    GS_ASSERT_OK(gs_st_expect(st, "scalar", GS_ST_F32, 0, NULL, &d));
    int rc = GS_ST_EXPECT(st, "w.bf16", GS_ST_BF16, &d, 3, 2);
    GS_ASSERT_EQ(rc, GS_EFORMAT);
    GS_ASSERT_MSG(strstr(d.msg, "w.bf16") && strstr(d.msg, "[2, 3]") && strstr(d.msg, "[3, 2]"),
                  "diag: %s", d.msg);
    rc = GS_ST_EXPECT(st, "w.bf16", GS_ST_F32, &d, 2, 3);
    GS_ASSERT_EQ(rc, GS_EFORMAT);
    GS_ASSERT_MSG(strstr(d.msg, "BF16") && strstr(d.msg, "F32"), "diag: %s", d.msg);
    rc = GS_ST_EXPECT(st, "v.f32", GS_ST_ANY, &d, 4, 1);
    GS_ASSERT_EQ(rc, GS_EFORMAT);
    GS_ASSERT_MSG(strstr(d.msg, "[4]") && strstr(d.msg, "[4, 1]"), "diag: %s", d.msg);
    rc = GS_ST_EXPECT(st, "nope", GS_ST_ANY, &d, 1);
    GS_ASSERT_EQ(rc, GS_ENOENT);
    GS_ASSERT(strstr(d.msg, "nope") != NULL);
    gs_st_free(st);
}

static void test_single_folder(void)
{
    char sub[1024];
    tw_path(sub, sizeof sub, g_dir, "single");
    GS_ASSERT_OK(mkdir(sub, 0700));
    tw_path(g_p2, sizeof g_p2, sub, "model.safetensors");
    GS_ASSERT_OK(tw_write(g_p2, k_basic, 3, NULL, 8, NULL));
    gs_diag d;
    gs_st *st;
    GS_ASSERT_OK(gs_st_open(sub, &d, &st));
    GS_ASSERT_EQ(gs_st_count(st), 3);
    gs_st_free(st);
    unlink(g_p2);
    /* A folder with no weights. */
    EXPECT_OPEN_FAILS(sub, GS_ENOENT, "model.safetensors", NULL);
    rmdir(sub);
    EXPECT_OPEN_FAILS(tmp("does-not-exist.safetensors"), GS_ENOENT, "does-not-exist", NULL);
}

/* A two-shard folder: shard 1 holds a, b; shard 2 holds c. */
static const tw_tensor k_sh1[] = {{"a", "F32", 1, {2}}, {"b", "BF16", 2, {2, 2}}};
static const tw_tensor k_sh2[] = {{"c", "F16", 1, {3}}};

static void make_sharded(const char *dir, const char *index_json)
{
    char p[1024];
    mkdir(dir, 0700);
    tw_write(tw_path(p, sizeof p, dir, "model-00001-of-00002.safetensors"), k_sh1, 2, NULL, 8,
             NULL);
    tw_write(tw_path(p, sizeof p, dir, "model-00002-of-00002.safetensors"), k_sh2, 1, NULL, 8,
             NULL);
    tw_write_text(tw_path(p, sizeof p, dir, "model.safetensors.index.json"), index_json);
}

#define IDX(wm) "{\"metadata\": {\"total_size\": 22}, \"weight_map\": {" wm "}}"
#define S1 "\"model-00001-of-00002.safetensors\""
#define S2 "\"model-00002-of-00002.safetensors\""

static void test_sharded(void)
{
    char dir[1024];
    tw_path(dir, sizeof dir, g_dir, "sharded");
    make_sharded(dir, IDX("\"a\": " S1 ", \"b\": " S1 ", \"c\": " S2));
    gs_diag d;
    gs_st *st;
    GS_ASSERT_OK(gs_st_open(dir, &d, &st));
    GS_ASSERT_EQ(gs_st_count(st), 3);
    GS_ASSERT_EQ(gs_st_n_files(st), 2);
    const gs_st_tensor *c = gs_st_get(st, "c");
    GS_ASSERT(c != NULL);
    GS_ASSERT(strstr(gs_st_file_path(st, c->file), "00002-of") != NULL);
    GS_ASSERT(strstr(gs_st_file_path(st, gs_st_get(st, "a")->file), "00001-of") != NULL);
    gs_st_free(st);
    /* Opening the index file itself works too. */
    GS_ASSERT_OK(
        gs_st_open(tw_path(g_p2, sizeof g_p2, dir, "model.safetensors.index.json"), &d, &st));
    GS_ASSERT_EQ(gs_st_count(st), 3);
    gs_st_free(st);

    /* Listed in the index but absent from its shard. */
    make_sharded(dir, IDX("\"a\": " S1 ", \"b\": " S1 ", \"c\": " S2 ", \"ghost\": " S2));
    EXPECT_OPEN_FAILS(dir, GS_EFORMAT, "ghost", "model-00002-of-00002");
    /* In a shard but not in the index. */
    make_sharded(dir, IDX("\"a\": " S1 ", \"c\": " S2));
    EXPECT_OPEN_FAILS(dir, GS_EFORMAT, "'b'", "not in the index");
    /* Index maps a tensor to the other shard. */
    make_sharded(dir, IDX("\"a\": " S1 ", \"b\": " S2 ", \"c\": " S2));
    EXPECT_OPEN_FAILS(dir, GS_EFORMAT, "'b'", "maps it to");
    /* Missing shard file. */
    make_sharded(dir, IDX("\"a\": " S1 ", \"b\": " S1 ", \"c\": \"model-00003.safetensors\""));
    EXPECT_OPEN_FAILS(dir, GS_ENOENT, "model-00003.safetensors", "missing");
    /* Shard names must stay inside the folder. */
    make_sharded(dir, IDX("\"a\": \"../x.safetensors\""));
    EXPECT_OPEN_FAILS(dir, GS_EFORMAT, "weight_map['a']", NULL);
    make_sharded(dir, IDX("\"a\": \"/etc/passwd\""));
    EXPECT_OPEN_FAILS(dir, GS_EFORMAT, "weight_map['a']", NULL);
    make_sharded(dir, IDX("\"a\": 5"));
    EXPECT_OPEN_FAILS(dir, GS_EFORMAT, "weight_map['a']", NULL);
    /* Broken index JSON, empty weight_map. */
    make_sharded(dir, "{\"weight_map\": {");
    EXPECT_OPEN_FAILS(dir, GS_EFORMAT, "model.safetensors.index.json", NULL);
    make_sharded(dir, "{\"weight_map\": {}}");
    EXPECT_OPEN_FAILS(dir, GS_EFORMAT, "weight_map", NULL);
    make_sharded(dir, "[1,2]");
    EXPECT_OPEN_FAILS(dir, GS_EFORMAT, "weight_map", NULL);

    /* The same tensor in two shards (each index entry names one shard, so a
     * second copy is reported as found in the wrong shard). */
    tw_tensor dup[] = {{"a", "F32", 1, {2}}};
    char p[1024];
    make_sharded(dir, IDX("\"a\": " S1 ", \"b\": " S1 ", \"c\": " S2));
    tw_write(tw_path(p, sizeof p, dir, "model-00002-of-00002.safetensors"), dup, 1, NULL, 8, NULL);
    EXPECT_OPEN_FAILS(dir, GS_EFORMAT, "'a'", NULL);
    tw_rmdir(dir);
}

/* Writes `header` + data_len zero bytes and expects open to fail. */
#define BAD_HEADER(header, data_len, want, s1, s2)                                                 \
    do {                                                                                           \
        GS_ASSERT_OK(tw_write_header(tmp("bad.safetensors"), header, data_len));                   \
        EXPECT_OPEN_FAILS(tmp("bad.safetensors"), want, s1, s2);                                   \
    } while (0)

static void test_corrupt_headers(void)
{
    /* Zero-byte file, and one too short for the length field. */
    GS_ASSERT_OK(tw_write_text(tmp("zero.safetensors"), ""));
    EXPECT_OPEN_FAILS(tmp("zero.safetensors"), GS_EFORMAT, "zero.safetensors", "too short");
    GS_ASSERT_OK(tw_write_text(tmp("five.safetensors"), "\x10\x00\x00\x00\x00"));
    EXPECT_OPEN_FAILS(tmp("five.safetensors"), GS_EFORMAT, "five.safetensors", NULL);
    /* Header length beyond the file. */
    GS_ASSERT_OK(tw_write_raw(tmp("bad.safetensors"), 1000, "{}", 2, NULL, 0));
    EXPECT_OPEN_FAILS(tmp("bad.safetensors"), GS_EFORMAT, "bad.safetensors", "exceeds");
    GS_ASSERT_OK(tw_write_raw(tmp("bad.safetensors"), UINT64_MAX, "{}", 2, NULL, 0));
    EXPECT_OPEN_FAILS(tmp("bad.safetensors"), GS_EFORMAT, "exceeds", NULL);
    /* Header length inside a (sparse) 150 MB file but above the cap. */
    GS_ASSERT_OK(tw_write_raw(tmp("big.safetensors"), 120u << 20, "{}", 2, NULL, 0));
    GS_ASSERT_OK(truncate(tmp("big.safetensors"), 150 << 20));
    EXPECT_OPEN_FAILS(tmp("big.safetensors"), GS_EFORMAT, "limit", NULL);
    unlink(tmp("big.safetensors"));
    /* Empty header, bad JSON, not an object, duplicate keys. */
    BAD_HEADER("", 0, GS_EFORMAT, "header JSON", NULL);
    BAD_HEADER("{\"a\": {\"dtype\": \"F32\", ", 0, GS_EFORMAT, "header JSON", NULL);
    BAD_HEADER("[1, 2]", 0, GS_EFORMAT, "not a JSON object", NULL);
    BAD_HEADER("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               8, GS_EFORMAT, "header JSON", NULL);
    /* Entry problems, each naming the tensor. */
    BAD_HEADER("{\"t1\": 5}", 0, GS_EFORMAT, "'t1'", "not an object");
    BAD_HEADER("{\"t1\": {\"shape\":[1],\"data_offsets\":[0,4]}}", 4, GS_EFORMAT, "'t1'", "dtype");
    BAD_HEADER("{\"t1\": {\"dtype\":\"Q4_K\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
               GS_EUNSUPPORTED, "'t1'", "Q4_K");
    BAD_HEADER("{\"t1\": {\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, GS_EFORMAT, "'t1'",
               "shape");
    BAD_HEADER("{\"t1\": {\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, GS_EFORMAT,
               "'t1'", "shape[0]");
    BAD_HEADER("{\"t1\": {\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4,
               GS_EFORMAT, "'t1'", "shape[0]");
    BAD_HEADER("{\"t1\": {\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
               "\"data_offsets\":[0,4]}}",
               4, GS_EUNSUPPORTED, "'t1'", "dims");
    BAD_HEADER("{\"t1\": {\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
               "\"data_offsets\":[0,4]}}",
               4, GS_EFORMAT, "'t1'", "overflow");
    BAD_HEADER("{\"t1\": {\"dtype\":\"F64\",\"shape\":[1152921504606846976],"
               "\"data_offsets\":[0,4]}}",
               4, GS_EFORMAT, "'t1'", "overflow");
    BAD_HEADER("{\"t1\": {\"dtype\":\"F32\",\"shape\":[1]}}", 4, GS_EFORMAT, "'t1'",
               "data_offsets");
    BAD_HEADER("{\"t1\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, GS_EFORMAT,
               "'t1'", "data_offsets");
    BAD_HEADER("{\"t1\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,-4]}}", 4, GS_EFORMAT,
               "'t1'", "data_offsets");
    BAD_HEADER("{\"t1\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, GS_EFORMAT,
               "'t1'", "begin > end");
    /* Offsets out of range (the data area is 4 bytes). */
    BAD_HEADER("{\"t1\": {\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, GS_EFORMAT,
               "'t1'", "beyond");
    BAD_HEADER("{\"t1\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 4, GS_EFORMAT,
               "'t1'", "beyond");
    /* Byte count does not match the shape. */
    BAD_HEADER("{\"t1\": {\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, GS_EFORMAT,
               "'t1'", "needs 6");
    /* Overlap. */
    BAD_HEADER("{\"t1\": {\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"t2\": {\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               12, GS_EFORMAT, "overlaps", "'t1'");
    BAD_HEADER("{\"t2\": {\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
               "\"t1\": {\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[11,12]}}",
               12, GS_EFORMAT, "overlaps", "'t2'");
    /* Metadata must map strings to strings. */
    BAD_HEADER("{\"__metadata__\": {\"format\": 1}}", 0, GS_EFORMAT, "__metadata__.format", NULL);
    BAD_HEADER("{\"__metadata__\": [1]}", 0, GS_EFORMAT, "__metadata__", NULL);
    BAD_HEADER("{\"\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, GS_EFORMAT,
               "empty name", NULL);

    /* Valid edge cases: empty header object, gaps, zero-size tensors sharing
     * an offset, trailing bytes after the last tensor, unknown extra keys. */
    gs_diag d;
    gs_st *st;
    GS_ASSERT_OK(tw_write_header(tmp("ok.safetensors"), "{}", 0));
    GS_ASSERT_OK(gs_st_open(tmp("ok.safetensors"), &d, &st));
    GS_ASSERT_EQ(gs_st_count(st), 0);
    gs_st_free(st);
    GS_ASSERT_OK(tw_write_header(
        tmp("ok.safetensors"),
        "{\"z1\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
        "\"z2\":{\"dtype\":\"I8\",\"shape\":[2,0],\"data_offsets\":[4,4]},"
        "\"t\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6],\"extra\":1}}",
        9));
    GS_ASSERT_OK(gs_st_open(tmp("ok.safetensors"), &d, &st));
    GS_ASSERT_EQ(gs_st_count(st), 3);
    gs_st_free(st);
}

/* Every truncation of a valid file fails cleanly; byte flips in the
 * header never crash (they may or may not still parse). */
static void test_truncation_and_flips(void)
{
    GS_ASSERT_OK(tw_write(tmp("t.safetensors"), k_basic, 7, "{\"k\":\"v\"}", 1, NULL));
    size_t n = 0;
    char *orig = gs_test_read_file(tmp("t.safetensors"), &n);
    GS_ASSERT(orig != NULL && n > 16);
    gs_diag d;
    gs_st *st;
    for (size_t len = 0; len < n; len++) {
        FILE *f = fopen(tmp("cut.safetensors"), "wb");
        fwrite(orig, 1, len, f);
        fclose(f);
        int rc = gs_st_open(tmp("cut.safetensors"), &d, &st);
        GS_ASSERT_MSG(rc == GS_EFORMAT, "truncated to %zu of %zu: %s (%s)", len, n, gs_err_name(rc),
                      d.msg);
    }
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = (hl << 8) | (unsigned char)orig[i];
    char *m = malloc(n);
    uint32_t seed = 12345;
    int opened = 0;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(m, orig, n);
        for (int k = 0; k < 1 + iter % 3; k++) {
            seed = seed * 1103515245u + 12345u;
            size_t pos = (seed >> 8) % (8 + hl);
            seed = seed * 1103515245u + 12345u;
            m[pos] = (char)(seed >> 16);
        }
        FILE *f = fopen(tmp("flip.safetensors"), "wb");
        fwrite(m, 1, n, f);
        fclose(f);
        int rc = gs_st_open(tmp("flip.safetensors"), &d, &st);
        if (rc == 0) {
            opened++;
            for (size_t i = 0; i < gs_st_count(st); i++) {
                const gs_st_tensor *t = gs_st_at(st, i);
                volatile unsigned char sink = 0;
                for (size_t b = 0; b < t->nbytes; b++) /* every byte is mapped */
                    sink ^= ((const unsigned char *)t->data)[b];
                (void)sink;
            }
            gs_st_free(st);
        } else {
            GS_ASSERT_MSG(d.msg[0] != 0, "error %s without a message", gs_err_name(rc));
        }
    }
    fprintf(stderr, "  byte flips: %d of 3000 still opened\n", opened);
    free(m);
    free(orig);
}

/* --- dtype conversions ------------------------------------------------- */

/* Reference f32 -> bf16 by distance in double arithmetic. */
static uint16_t ref_bf16(float f)
{
    uint32_t u = gs_f32_bits(f);
    uint32_t lo = u & 0xffff0000u, hi = lo + 0x10000u;
    double x = f, dl = fabs(x - (double)gs_f32_from_bits(lo));
    float fh = gs_f32_from_bits(hi);
    /* above FLT_MAX the next bf16 is inf; treat it as 2^128 for distance */
    double vh = isinf(fh) ? ldexp(copysign(1.0, x), 128) : (double)fh;
    double dh = fabs(x - vh);
    if (dl < dh || (dl == dh && ((lo >> 16) & 1) == 0))
        return (uint16_t)(lo >> 16);
    return (uint16_t)(hi >> 16);
}

static void test_bf16(void)
{
    GS_ASSERT_EQ(gs_f32_to_bf16(1.0f), 0x3f80);
    GS_ASSERT_EQ(gs_f32_to_bf16(-2.0f), 0xc000);
    GS_ASSERT_EQ(gs_f32_to_bf16(gs_f32_from_bits(0x3f808000u)), 0x3f80); /* tie -> even */
    GS_ASSERT_EQ(gs_f32_to_bf16(gs_f32_from_bits(0x3f818000u)), 0x3f82); /* tie -> even (up) */
    GS_ASSERT_EQ(gs_f32_to_bf16(gs_f32_from_bits(0x3f808001u)), 0x3f81); /* above tie */
    GS_ASSERT_EQ(gs_f32_to_bf16(gs_f32_from_bits(0x3f807fffu)), 0x3f80); /* below tie */
    GS_ASSERT_EQ(gs_f32_to_bf16(gs_f32_from_bits(0x7f7fffffu)), 0x7f80); /* FLT_MAX -> inf */
    GS_ASSERT_EQ(gs_f32_to_bf16(INFINITY), 0x7f80);
    GS_ASSERT_EQ(gs_f32_to_bf16(-INFINITY), 0xff80);
    GS_ASSERT_EQ(gs_f32_to_bf16(-0.0f), 0x8000);
    GS_ASSERT_EQ(gs_f32_to_bf16(gs_f32_from_bits(0x00008000u)), 0x0000); /* subnormal tie */
    GS_ASSERT_EQ(gs_f32_to_bf16(gs_f32_from_bits(0x00018000u)), 0x0002);
    /* NaNs stay NaN, keep their sign, even with payload only in low bits. */
    uint16_t n1 = gs_f32_to_bf16(gs_f32_from_bits(0x7f800001u));
    GS_ASSERT(isnan(gs_bf16_to_f32(n1)) && !(n1 & 0x8000));
    uint16_t n2 = gs_f32_to_bf16(gs_f32_from_bits(0xffc00000u));
    GS_ASSERT(isnan(gs_bf16_to_f32(n2)) && (n2 & 0x8000));
    GS_ASSERT_EQ(gs_f32_to_bf16(gs_f32_from_bits(0x7fffffffu)), 0x7fff);
    /* Every bf16 widens exactly and narrows back to itself. */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = gs_bf16_to_f32((uint16_t)h);
        GS_ASSERT_EQ(gs_f32_bits(f), h << 16);
        uint16_t back = gs_f32_to_bf16(f);
        if (isnan(f))
            GS_ASSERT(isnan(gs_bf16_to_f32(back)) && (back & 0x8000) == (h & 0x8000));
        else
            GS_ASSERT_MSG(back == h, "bf16 0x%04x -> 0x%04x", h, back);
    }
    /* Random floats against the reference rounding. */
    uint32_t s = 1;
    for (int i = 0; i < 200000; i++) {
        s = s * 1664525u + 1013904223u;
        float f = gs_f32_from_bits(i < 1000 ? (s & 0xffff0000u) | 0x8000u : s); /* ties first */
        if (isnan(f))
            continue;
        GS_ASSERT_MSG(gs_f32_to_bf16(f) == ref_bf16(f), "0x%08x: 0x%04x vs 0x%04x", gs_f32_bits(f),
                      gs_f32_to_bf16(f), ref_bf16(f));
    }
}

/* Reference f16 decode by the definition: (-1)^s * 2^(e-15) * (1 + m/1024),
 * subnormals 2^-14 * m/1024. */
static double ref_f16_value(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m / 1024.0, -14) : ldexp(1.0 + m / 1024.0, e - 15);
    return (h & 0x8000) ? -v : v;
}

static void test_f16(void)
{
    GS_ASSERT_EQ(gs_f16_to_f32(0x3c00), 1.0);
    GS_ASSERT_EQ(gs_f16_to_f32(0xc000), -2.0);
    GS_ASSERT_EQ(gs_f16_to_f32(0x7bff), 65504.0);
    GS_ASSERT_EQ(gs_f16_to_f32(0x0001), ldexp(1.0, -24));    /* smallest subnormal */
    GS_ASSERT_EQ(gs_f16_to_f32(0x03ff), ldexp(1023.0, -24)); /* largest subnormal */
    GS_ASSERT_EQ(gs_f16_to_f32(0x0400), ldexp(1.0, -14));    /* smallest normal */
    GS_ASSERT_EQ(gs_f16_to_f32(0x8001), -ldexp(1.0, -24));
    GS_ASSERT(isinf(gs_f16_to_f32(0x7c00)) && gs_f16_to_f32(0x7c00) > 0);
    GS_ASSERT(isinf(gs_f16_to_f32(0xfc00)) && gs_f16_to_f32(0xfc00) < 0);
    GS_ASSERT(isnan(gs_f16_to_f32(0x7c01)) && isnan(gs_f16_to_f32(0xfe00)));
    GS_ASSERT(signbit(gs_f16_to_f32(0x8000)));

    GS_ASSERT_EQ(gs_f32_to_f16(65504.0f), 0x7bff);
    GS_ASSERT_EQ(gs_f32_to_f16(65519.0f), 0x7bff);
    GS_ASSERT_EQ(gs_f32_to_f16(65520.0f), 0x7c00); /* tie to even -> inf */
    GS_ASSERT_EQ(gs_f32_to_f16(1e10f), 0x7c00);
    GS_ASSERT_EQ(gs_f32_to_f16(-INFINITY), 0xfc00);
    GS_ASSERT_EQ(gs_f32_to_f16((float)ldexp(1.0, -25)), 0x0000);      /* tie -> 0 */
    GS_ASSERT_EQ(gs_f32_to_f16((float)ldexp(1.000001, -25)), 0x0001); /* above tie */
    GS_ASSERT_EQ(gs_f32_to_f16((float)ldexp(3.0, -25)), 0x0002);      /* 1.5 units -> 2 */
    GS_ASSERT_EQ(gs_f32_to_f16((float)ldexp(5.0, -25)), 0x0002);      /* 2.5 units -> 2 */
    GS_ASSERT_EQ(gs_f32_to_f16((float)ldexp(1.0, -26)), 0x0000);
    GS_ASSERT_EQ(gs_f32_to_f16((float)ldexp(2047.0, -25)), 0x0400);     /* 1023.5 -> normal */
    GS_ASSERT_EQ(gs_f32_to_f16(1.0f + (float)ldexp(1.0, -11)), 0x3c00); /* tie -> even */
    GS_ASSERT_EQ(gs_f32_to_f16(1.0f + (float)ldexp(3.0, -11)), 0x3c02);
    GS_ASSERT_EQ(gs_f32_to_f16(-0.0f), 0x8000);
    GS_ASSERT_EQ(gs_f32_to_f16(1e-30f), 0x0000);
    uint16_t nn = gs_f32_to_f16(gs_f32_from_bits(0xff800001u));
    GS_ASSERT(isnan(gs_f16_to_f32(nn)) && (nn & 0x8000));

    /* Exhaustive: decode matches the definition; encode inverts decode;
     * values halfway between neighbours round to the even one. */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = gs_f16_to_f32((uint16_t)h);
        int e = (h >> 10) & 31;
        if (e == 31) {
            GS_ASSERT((h & 1023) ? isnan(f) : isinf(f));
            GS_ASSERT(isnan(gs_f16_to_f32(gs_f32_to_f16(f))) == isnan(f));
            continue;
        }
        GS_ASSERT_MSG((double)f == ref_f16_value((uint16_t)h), "f16 0x%04x -> %.9g", h, f);
        GS_ASSERT_MSG(gs_f32_to_f16(f) == h, "f16 0x%04x round trip -> 0x%04x", h,
                      gs_f32_to_f16(f));
        if ((h & 0x7fff) < 0x7bff) {
            uint16_t up = (uint16_t)(h + 1);
            double mid = (ref_f16_value((uint16_t)h) + ref_f16_value(up)) / 2;
            uint16_t want = (h & 1) ? up : (uint16_t)h;
            GS_ASSERT_MSG(gs_f32_to_f16((float)mid) == want, "tie after 0x%04x", h);
        }
    }
#ifdef __FLT16_MAX__
    /* The compiler's own conversion as a second reference. */
    uint32_t s = 7;
    for (int i = 0; i < 200000; i++) {
        s = s * 1664525u + 1013904223u;
        float f = gs_f32_from_bits(s);
        if (isnan(f))
            continue;
        _Float16 r = (_Float16)f;
        uint16_t rb;
        memcpy(&rb, &r, 2);
        GS_ASSERT_MSG(gs_f32_to_f16(f) == rb, "0x%08x: 0x%04x vs 0x%04x", s, gs_f32_to_f16(f), rb);
    }
#endif
}

static void test_unaligned_rows(void)
{
    /* Header padded to an odd length puts data at odd addresses. */
    tw_tensor t[] = {{"x", "U8", 1, {1}}, {"h", "F16", 1, {4}}, {"b", "BF16", 1, {4}}};
    uint8_t one = 9;
    uint16_t hv[4] = {0x3c00, 0x4000, 0x0001, 0xbc00};
    uint16_t bv[4] = {0x3f80, 0x4040, 0xc000, 0x0000};
    const void *fill[3] = {&one, hv, bv};
    GS_ASSERT_OK(tw_write(tmp("u.safetensors"), t, 3, NULL, 1, fill));
    gs_diag d;
    gs_st *st;
    GS_ASSERT_OK(gs_st_open(tmp("u.safetensors"), &d, &st));
    float o[4];
    GS_ASSERT_OK(gs_st_read_f32(st, "h", o, 4, &d));
    GS_ASSERT_EQ(o[1], 2.0);
    GS_ASSERT_EQ(o[2], ldexp(1.0, -24));
    GS_ASSERT_EQ(o[3], -1.0);
    GS_ASSERT_OK(gs_st_read_f32(st, "b", o, 4, &d));
    GS_ASSERT_EQ(o[1], 3.0);
    GS_ASSERT_EQ(o[2], -2.0);
    gs_st_free(st);
}

/* FIFOs (and other special files) named as a checkpoint, a shard or the
 * index are refused at once instead of blocking in open(); SIGALRM ends
 * the test if one ever blocks again. */
static void test_fifo(void)
{
    alarm(20);
    GS_ASSERT_OK(mkfifo(tmp("fifo.safetensors"), 0600));
    EXPECT_OPEN_FAILS(tmp("fifo.safetensors"), GS_EIO, "fifo.safetensors", "not a regular file");
    unlink(tmp("fifo.safetensors"));
    EXPECT_OPEN_FAILS("/dev/zero", GS_EIO, "/dev/zero", "not a regular file");

    char dir[1024], p[1024];
    tw_path(dir, sizeof dir, g_dir, "fifo_shard");
    make_sharded(dir, IDX("\"a\": " S1 ", \"b\": " S1 ", \"c\": " S2));
    tw_path(p, sizeof p, dir, "model-00002-of-00002.safetensors");
    unlink(p);
    GS_ASSERT_OK(mkfifo(p, 0600));
    EXPECT_OPEN_FAILS(dir, GS_EIO, "model-00002-of-00002.safetensors", "FIFO");
    tw_rmdir(dir);

    make_sharded(dir, IDX("\"a\": " S1 ", \"b\": " S1 ", \"c\": " S2));
    tw_path(p, sizeof p, dir, "model.safetensors.index.json");
    unlink(p);
    GS_ASSERT_OK(mkfifo(p, 0600));
    EXPECT_OPEN_FAILS(dir, GS_EIO, "model.safetensors.index.json", "FIFO");
    tw_rmdir(dir);
    alarm(0);
}

int main(void)
{
    if (!tw_mkdtemp(g_dir, sizeof g_dir)) {
        fprintf(stderr, "cannot create a temporary folder\n");
        return 1;
    }
    GS_RUN(test_valid_file);
    GS_RUN(test_expect);
    GS_RUN(test_single_folder);
    GS_RUN(test_sharded);
    GS_RUN(test_corrupt_headers);
    GS_RUN(test_truncation_and_flips);
    GS_RUN(test_bf16);
    GS_RUN(test_f16);
    GS_RUN(test_unaligned_rows);
    GS_RUN(test_fifo);
    tw_rmdir(g_dir);
    return gs_test_summary();
}
