/* test_tokenizer.c - gs_tokenizer on a small hand-written tokenizer.json
 * (data/tiny_tokenizer.json: GLM-4 split regex + ByteLevel, 16 merges, a
 * few byte symbols only, specials at ids with gaps, a normalized and a
 * non-normalized added token whose file ids HF ignores). Expected ids
 * were checked with HF tokenizers 0.23.3 on the same file.
 * Also: malformed files (every prefix, and a catalogue of bad fields),
 * invalid UTF-8, decode flags, the two BPE merge loops against each
 * other, long inputs, prompt expansion. */
#include <jansson.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "worker/tokenizer/tok_impl.h"
#include "worker/tokenizer/tokenizer.h"

#define DATA GS_TEST_DATA_DIR "/tiny_tokenizer.json"

static gs_tokenizer *tok;
static char *json_text;
static size_t json_len;

static int encode_eq(const char *text, size_t len, unsigned flags, const int32_t *want, size_t n)
{
    gs_tokens t = {0};
    gs_diag d;
    int rc = gs_tokenizer_encode(tok, text, len, flags, &t, &d);
    int ok = rc == 0 && t.n == n && (n == 0 || !memcmp(t.ids, want, n * sizeof *want));
    if (!ok) {
        fprintf(stderr, "  encode(\"%.*s\") rc %d:", (int)len, text, rc);
        for (size_t i = 0; i < t.n; i++)
            fprintf(stderr, " %d", t.ids[i]);
        fprintf(stderr, "\n");
    }
    gs_tokens_free(&t);
    return ok;
}

#define ENC(s, flags, ...)                                                                         \
    do {                                                                                           \
        static const int32_t w_[] = {__VA_ARGS__};                                                 \
        GS_ASSERT(encode_eq(s, sizeof(s) - 1, flags, w_ + 1, sizeof w_ / sizeof *w_ - 1));         \
    } while (0)

static void test_load(void)
{
    json_text = gs_test_read_file(DATA, &json_len);
    GS_ASSERT_MSG(json_text, "cannot read %s", DATA);
    gs_diag d;
    gs_diag_clear(&d);
    int rc = gs_tokenizer_load(DATA, &tok, &d);
    GS_ASSERT_MSG(rc == 0, "load: %s", d.msg);
    GS_ASSERT_EQ(gs_tokenizer_vocab_size(tok), 111);
    GS_ASSERT_EQ(gs_tokenizer_token_id(tok, "<|image|>"), 105);
    GS_ASSERT_EQ(gs_tokenizer_token_id(tok, "Ġworld"), 34);
    GS_ASSERT_EQ(gs_tokenizer_token_id(tok, "<|user|>x"), 45); /* HF's id, not the file's 111 */
    GS_ASSERT_EQ(gs_tokenizer_token_id(tok, "wor"), 46);
    GS_ASSERT_EQ(gs_tokenizer_token_id(tok, "nope"), GS_ENOENT);
    GS_ASSERT_STREQ(gs_tokenizer_id_to_token(tok, 37), "ðŁĺĢ");
    GS_ASSERT_STREQ(gs_tokenizer_id_to_token(tok, 100), "<|user|>");
    GS_ASSERT(gs_tokenizer_id_to_token(tok, 39) == NULL); /* a gap */
    GS_ASSERT(gs_tokenizer_id_to_token(tok, 111) == NULL);
    GS_ASSERT(gs_tokenizer_id_to_token(tok, -1) == NULL);
    GS_ASSERT_EQ(gs_tokenizer_is_special(tok, 100), 1);
    GS_ASSERT_EQ(gs_tokenizer_is_special(tok, 45), 1);
    GS_ASSERT_EQ(gs_tokenizer_is_special(tok, 46), 0);
    GS_ASSERT_EQ(gs_tokenizer_is_special(tok, 29), 0);
    GS_ASSERT_EQ(gs_tokenizer_is_special(tok, 5000), 0);
    size_t l;
    const char *b = gs_tokenizer_id_bytes(tok, 34, &l);
    GS_ASSERT(b && l == 6 && !memcmp(b, " world", 6));
    GS_ASSERT(gs_tokenizer_id_bytes(tok, 104, &l) == NULL);
}

static void test_encode(void)
{
    GS_ASSERT(tok);
    ENC("hello world", 0, 0, 29, 12, 46, 33);
    ENC("hello<|user|>world", 0, 0, 29, 100, 46, 33);
    ENC("<|user|>x<|user|>", 0, 0, 45, 100);                           /* longest match */
    ENC("\xf0\x9f\x98\x80\xc3\xa9\xe4\xb8\xad", 0, 0, 37, 38, 40, 25); /* 😀é中 */
    ENC("xyz", 0, 0);                                                  /* no such bytes, no unk */
    ENC("<|user", 0, 0, 9, 4, 8);
    ENC("he's  hello\n\n12123", 0, 0, 26, 41, 12, 12, 29, 13, 13, 15, 16, 15, 16);
    ENC("world wor", 0, 0, 46, 33, 12, 46);
    ENC("", 0, 0);
    ENC(" ", 0, 0, 12);
    ENC("<think><|image|>", 0, 0, 110, 105);
    /* Specials as text: the matched span is skipped, the next match starts
     * after it (HF split_special_tokens); "wor" is not special. */
    ENC("<|user|>world", GS_ENCODE_SPECIAL_AS_TEXT, 0, 9, 4, 8, 46, 33);
    /* NUL bytes are text (none is in the vocab: dropped). */
    GS_ASSERT(encode_eq("a\0b", 3, 0, (const int32_t[]){0, 1}, 2));
    /* Cached and uncached paths agree: encode the same text repeatedly. */
    for (int i = 0; i < 3; i++)
        ENC("hello hello hello", 0, 0, 29, 12, 29, 12, 29);
}

static void test_invalid_utf8(void)
{
    static const struct {
        const char *s;
        size_t n, at;
    } cases[] = {
        {"ab\xc3(", 4, 2},            /* bad continuation */
        {"abc\xe4\xb8", 5, 3},        /* truncated at the end */
        {"\xc0\x80", 2, 0},           /* overlong */
        {"x\xed\xa0\x80", 4, 1},      /* surrogate */
        {"ok\xf4\x90\x80\x80", 6, 2}, /* above U+10FFFF */
        {"\x80", 1, 0},               /* lone continuation */
        {"hello\xff", 6, 5},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        gs_tokens t = {0};
        gs_diag d;
        gs_diag_clear(&d);
        int rc = gs_tokenizer_encode(tok, cases[i].s, cases[i].n, 0, &t, &d);
        GS_ASSERT_EQ(rc, GS_EUTF8);
        GS_ASSERT_EQ(t.n, 0);
        char want[32];
        snprintf(want, sizeof want, "at byte %zu ", cases[i].at);
        GS_ASSERT_MSG(strstr(d.msg, want), "diag \"%s\" lacks \"%s\"", d.msg, want);
        gs_tokens_free(&t);
    }
    /* A failed encode leaves what was appended before. */
    gs_tokens t = {0};
    GS_ASSERT_OK(gs_tokenizer_encode(tok, "hello", 5, 0, &t, NULL));
    GS_ASSERT_EQ(gs_tokenizer_encode(tok, "\xff", 1, 0, &t, NULL), GS_EUTF8);
    GS_ASSERT_EQ(t.n, 1);
    gs_tokens_free(&t);
    gs_tokens_free(NULL);
}

static int decode_eq(const int32_t *ids, size_t n, unsigned flags, const char *want)
{
    char *s = NULL;
    size_t len = 0;
    int rc = gs_tokenizer_decode(tok, ids, n, flags, &s, &len, NULL);
    int ok = rc == 0 && len == strlen(want) && !strcmp(s, want);
    if (!ok)
        fprintf(stderr, "  decode rc %d: \"%s\" want \"%s\"\n", rc, s ? s : "", want);
    free(s);
    return ok;
}

static void test_decode(void)
{
    GS_ASSERT(tok);
    GS_ASSERT(decode_eq((const int32_t[]){29, 100, 34}, 3, 0, "hello<|user|> world"));
    GS_ASSERT(decode_eq((const int32_t[]){29, 100, 34}, 3, GS_DECODE_SKIP_SPECIAL, "hello world"));
    GS_ASSERT(decode_eq((const int32_t[]){35}, 1, 0, "\xef\xbf\xbd"));     /* F0 9F: one U+FFFD */
    GS_ASSERT(decode_eq((const int32_t[]){40, 25}, 2, 0, "\xe4\xb8\xad")); /* 中 */
    GS_ASSERT(decode_eq((const int32_t[]){17, 5}, 2, 0, "\xef\xbf\xbdh"));
    GS_ASSERT(decode_eq((const int32_t[]){21, 22}, 2, 0, "\xef\xbf\xbd\xef\xbf\xbd"));
    /* Gaps, negative and too-large ids: skipped, or GS_ERANGE when strict. */
    GS_ASSERT(decode_eq((const int32_t[]){29, 39, -3, 111, 1 << 30, 12}, 6, 0, "hello "));
    char *s = NULL;
    gs_diag d;
    GS_ASSERT_EQ(
        gs_tokenizer_decode(tok, (const int32_t[]){29, 39}, 2, GS_DECODE_STRICT, &s, NULL, &d),
        GS_ERANGE);
    GS_ASSERT(s == NULL);
    GS_ASSERT(strstr(d.msg, "ids[1] = 39"));
    GS_ASSERT(decode_eq(NULL, 0, 0, ""));
}

/* The merges as "a b" strings load to the same tokenizer. */
static void test_merge_string_form(void)
{
    GS_ASSERT(json_text);
    json_t *root = json_loadb(json_text, json_len, 0, NULL);
    GS_ASSERT(root);
    json_t *merges = json_object_get(json_object_get(root, "model"), "merges"), *ns = json_array();
    for (size_t i = 0; i < json_array_size(merges); i++) {
        json_t *m = json_array_get(merges, i);
        char buf[64];
        snprintf(buf, sizeof buf, "%s %s", json_string_value(json_array_get(m, 0)),
                 json_string_value(json_array_get(m, 1)));
        json_array_append_new(ns, json_string(buf));
    }
    json_object_set_new(json_object_get(root, "model"), "merges", ns);
    char *txt = json_dumps(root, 0);
    json_decref(root);
    gs_tokenizer *t2 = NULL;
    gs_diag d;
    int rc = gs_tokenizer_load_json(txt, strlen(txt), &t2, &d);
    free(txt);
    GS_ASSERT_MSG(rc == 0, "%s", d.msg);
    gs_tokens a = {0};
    GS_ASSERT_OK(gs_tokenizer_encode(t2, "hello world \xf0\x9f\x98\x80", 16, 0, &a, NULL));
    GS_ASSERT_EQ(a.n, 6);
    GS_ASSERT_EQ(a.ids[0], 29);
    GS_ASSERT_EQ(a.ids[5], 37);
    gs_tokens_free(&a);
    gs_tokenizer_free(t2);
    gs_tokenizer_free(NULL);
}

/* Replaces the first `from` in the file text by `to` and loads it;
 * returns the load's code. */
static int load_edit(const char *from, const char *to, gs_diag *d)
{
    const char *p = strstr(json_text, from);
    if (!p)
        return 999;
    size_t fl = strlen(from), tl = strlen(to), n = json_len - fl + tl;
    char *buf = malloc(n + 1);
    memcpy(buf, json_text, (size_t)(p - json_text));
    memcpy(buf + (p - json_text), to, tl);
    memcpy(buf + (p - json_text) + tl, p + fl, json_len - (size_t)(p - json_text) - fl);
    gs_tokenizer *t = NULL;
    gs_diag_clear(d);
    int rc = gs_tokenizer_load_json(buf, n, &t, d);
    gs_tokenizer_free(t);
    free(buf);
    return rc;
}

static void test_malformed(void)
{
    GS_ASSERT(json_text);
    static const struct {
        const char *from, *to;
        int code;
        const char *diag;
    } cases[] = {
        {"\"normalizer\": null", "\"normalizer\": {\"type\": \"NFC\"}", GS_EUNSUPPORTED,
         "normalizer"},
        {"\"decoder\": {\"type\": \"ByteLevel\"", "\"decoder\": {\"type\": \"WordPiece\"",
         GS_EUNSUPPORTED, "decoder"},
        {"\"type\": \"BPE\"", "\"type\": \"WordPiece\"", GS_EUNSUPPORTED, "model.type"},
        {"\"dropout\": null", "\"dropout\": 0.1", GS_EUNSUPPORTED, "dropout"},
        {"\"end_of_word_suffix\": null", "\"end_of_word_suffix\": \"</w>\"", GS_EUNSUPPORTED,
         "end_of_word_suffix"},
        {"\"unk_token\": null", "\"unk_token\": \"<unk>\"", GS_EFORMAT, "unk_token"},
        {"\"unk_token\": null", "\"unk_token\": 5", GS_EFORMAT, "unk_token"},
        {"\"fuse_unk\": false", "\"fuse_unk\": 1", GS_EFORMAT, "fuse_unk"},
        {"\"a\": 0,", "\"a\": -1,", GS_EFORMAT, "model.vocab[\"a\"]"},
        {"\"a\": 0,", "\"a\": 1e3,", GS_EFORMAT, "model.vocab[\"a\"]"},
        {"\"a\": 0,", "\"a\": 99999999999,", GS_EFORMAT, "model.vocab[\"a\"]"},
        {"\"vocab\": {", "\"vocab\": 5, \"x\": {", GS_EFORMAT, "model.vocab"},
        {"\"merges\": [", "\"merges\": 7, \"y\": [", GS_EFORMAT, "model.merges"},
        {"[\"h\", \"e\"]", "\"h e x\"", GS_EFORMAT, "model.merges[0]"},
        {"[\"h\", \"e\"]", "\"he\"", GS_EFORMAT, "model.merges[0]"},
        {"[\"h\", \"e\"]", "[\"h\"]", GS_EFORMAT, "model.merges[0]"},
        {"[\"h\", \"e\"]", "[\"h\", \"q\"]", GS_EFORMAT, "\"q\" not in the vocab"},
        {"[\"h\", \"e\"]", "[\"h\", \"a\"]", GS_EFORMAT, "\"ha\" not in the vocab"},
        {"\"added_tokens\": [", "\"added_tokens\": 3, \"z\": [", GS_EFORMAT, "added_tokens"},
        {"\"content\": \"<|user|>\"", "\"content\": \"\"", GS_EFORMAT, "added_tokens[0].content"},
        {"\"content\": \"<|user|>\"", "\"content\": 4", GS_EFORMAT, "added_tokens[0].content"},
        {"{\"id\": 100,", "{\"id\": \"x\",", GS_EFORMAT, "added_tokens[0].id"},
        {"\"special\": true}", "\"special\": \"yes\"}", GS_EFORMAT, "special"},
        {"\"behavior\": \"Isolated\"", "\"behavior\": \"Contiguous\"", GS_EUNSUPPORTED, "behavior"},
        {"\"invert\": false", "\"invert\": true", GS_EUNSUPPORTED, "invert"},
        {"{\"Regex\": \"(?i:", "{\"Regex\": \"((?i:", GS_EUNSUPPORTED, "regex"},
        {"{\"Regex\": ", "{\"Other\": ", GS_EFORMAT, "pattern"},
        {"\"type\": \"Sequence\"", "\"type\": \"Whitespace\"", GS_EUNSUPPORTED, "pre_tokenizer"},
        {"\"pretokenizers\": [", "\"pretokenizers\": [{\"type\": \"Digits\"},", GS_EUNSUPPORTED,
         "pretokenizers[0]"},
        {"{\n  \"version\"", "[{\n  \"version\"", GS_EFORMAT, "line"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        gs_diag d;
        int rc = load_edit(cases[i].from, cases[i].to, &d);
        GS_ASSERT_MSG(rc == cases[i].code && strstr(d.msg, cases[i].diag),
                      "case %zu (%s): rc %d diag \"%s\", want %d \"%s\"", i, cases[i].to, rc, d.msg,
                      cases[i].code, cases[i].diag);
    }
    /* Every prefix of the file fails cleanly. */
    for (size_t n = 0; n < json_len - 2; n += 1) {
        gs_tokenizer *t = NULL;
        gs_diag d;
        int rc = gs_tokenizer_load_json(json_text, n, &t, &d);
        GS_ASSERT_MSG(rc == GS_EFORMAT && t == NULL, "prefix %zu: rc %d", n, rc);
    }
    gs_tokenizer *t = NULL;
    gs_diag d;
    GS_ASSERT_EQ(gs_tokenizer_load("/nonexistent/tokenizer.json", &t, &d), GS_ENOENT);
    /* A FIFO named tokenizer.json is refused at once, not waited on. */
    char fifo[64];
    snprintf(fifo, sizeof fifo, "/tmp/gs_tok_fifo_%d.json", (int)getpid());
    unlink(fifo);
    GS_ASSERT_OK(mkfifo(fifo, 0600));
    alarm(10);
    GS_ASSERT_EQ(gs_tokenizer_load(fifo, &t, &d), GS_EIO);
    alarm(0);
    GS_ASSERT(t == NULL && strstr(d.msg, fifo) != NULL);
    unlink(fifo);
}

/* Both merge loops give the same ids on random words over the symbols
 * that have merges. */
static void test_bpe_loops_agree(void)
{
    GS_ASSERT(tok);
    static const char *parts[] = {"h",
                                  "e",
                                  "l",
                                  "o",
                                  " ",
                                  "w",
                                  "r",
                                  "d",
                                  "'",
                                  "s",
                                  "\xf0\x9f\x98\x80",
                                  "\xc3\xa9",
                                  "\xe4\xb8\xad",
                                  "x"};
    uint64_t rng = 12345;
    tok_bpe_scratch sc = {0};
    for (int it = 0; it < 3000; it++) {
        char w[1024];
        size_t n = 0;
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        int len = (int)((rng >> 33) % 200);
        for (int k = 0; k < len; k++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            const char *p = parts[(rng >> 33) % (sizeof parts / sizeof *parts)];
            memcpy(w + n, p, strlen(p));
            n += strlen(p);
        }
        gs_tokens a = {0}, b = {0};
        GS_ASSERT_OK(tok_bpe_word_heap(tok, (const uint8_t *)w, n, &sc, &a));
        GS_ASSERT_OK(tok_bpe_word_naive(tok, (const uint8_t *)w, n, &sc, &b));
        int same = a.n == b.n && (a.n == 0 || !memcmp(a.ids, b.ids, a.n * sizeof *a.ids));
        gs_tokens_free(&a);
        gs_tokens_free(&b);
        if (!same) {
            tok_bpe_scratch_free(&sc);
            GS_FAIL_("heap and naive BPE differ on word %d (%zu bytes)", it, n);
        }
    }
    tok_bpe_scratch_free(&sc);
}

/* Long runs: one 256 KiB letter piece (the heap merge loop), whitespace
 * runs (the lookahead alternative), digits. */
static void test_long_inputs(void)
{
    GS_ASSERT(tok);
    size_t n = 256 * 1024;
    char *s = malloc(n);
    static const char fill[] = {'l', ' ', '1'};
    for (int k = 0; k < 3; k++) {
        memset(s, fill[k], n);
        gs_tokens t = {0};
        GS_ASSERT_OK(gs_tokenizer_encode(tok, s, n, 0, &t, NULL));
        if (k < 2) { /* one piece; "ll" / "ĠĠ" merge pairwise and no further */
            GS_ASSERT_EQ(t.n, n / 2);
            GS_ASSERT_EQ(t.ids[0], k == 0 ? 27 : 42);
            GS_ASSERT_EQ(t.ids[n / 2 - 1], k == 0 ? 27 : 42);
        } else { /* pieces of three digits, no digit merges */
            GS_ASSERT_EQ(t.n, n);
        }
        gs_tokens_free(&t);
    }
    free(s);
}

static void test_prompt(void)
{
    GS_ASSERT(tok);
    const char *text = "hello<|image|>hello<|image|>";
    int32_t *ids = NULL, n = 0;
    gs_diag d;
    GS_ASSERT_OK(gs_prompt_encode(tok, text, 105, (const int32_t[]){3, 1}, 2, &ids, &n, &d));
    static const int32_t want[] = {29, 105, 105, 105, 29, 105};
    GS_ASSERT_EQ(n, 6);
    GS_ASSERT(!memcmp(ids, want, sizeof want));
    free(ids);
    GS_ASSERT_EQ(gs_prompt_encode(tok, text, 105, (const int32_t[]){3}, 1, &ids, &n, &d),
                 GS_EINVAL);
    GS_ASSERT(strstr(d.msg, "2 image placeholders"));
    GS_ASSERT(ids == NULL);
    GS_ASSERT_EQ(gs_prompt_encode(tok, text, 105, (const int32_t[]){3, 0}, 2, &ids, &n, &d),
                 GS_EINVAL);
    GS_ASSERT_EQ(gs_prompt_encode(tok, "\xff", 105, NULL, 0, &ids, &n, &d), GS_EUTF8);
    GS_ASSERT_OK(gs_prompt_encode(tok, "hello", 105, NULL, 0, &ids, &n, &d));
    GS_ASSERT_EQ(n, 1);
    free(ids);
    /* with a length: a NUL byte is text, and ids are appended */
    gs_tokens t = {0};
    GS_ASSERT_OK(gs_tokens_append(&t, (const int32_t[]){7}, 1));
    gs_prompt_images img = {105, (const int32_t[]){2}, 1};
    GS_ASSERT_OK(gs_prompt_encode_n(tok, "a\0<|image|>", 11, &img, &t, &d));
    static const int32_t want2[] = {7, 0, 105, 105};
    GS_ASSERT_EQ(t.n, 4);
    GS_ASSERT(!memcmp(t.ids, want2, sizeof want2));
    GS_ASSERT_EQ(gs_prompt_encode_n(tok, "<|image|>", 9, &img, &t, &d), 0);
    GS_ASSERT_EQ(t.n, 6);
    img.n_images = 0;
    GS_ASSERT_EQ(gs_prompt_encode_n(tok, "<|image|>", 9, &img, &t, &d), GS_EINVAL);
    GS_ASSERT_EQ(t.n, 6);
    gs_tokens_free(&t);
}

/* A run of whitespace longer than PCRE2's default match limit (10
 * million steps): the GLM pattern's \s*[\r\n]+ backtracks over the whole
 * run before \s+ takes it, and such a prompt failed with "match limit
 * exceeded" as a server error. Here the run's pieces are removed by the
 * split, so the test pays for the regex alone, not for BPE over them. */
static void test_long_whitespace_run(void)
{
    GS_ASSERT(json_text);
    /* The split's pattern becomes whitespace only, its matches removed. */
    const char *p = strstr(json_text, "{\"Regex\": \"");
    const char *q = p ? strstr(p, "\"}") : NULL;
    GS_ASSERT(p && q);
    if (!p || !q)
        return;
    static const char pat[] = "{\"Regex\": \"\\\\s*[\\\\r\\\\n]+|\\\\s+\"}";
    const char *rest = strstr(q + 2, "\"behavior\": \"Isolated\"");
    GS_ASSERT(rest != NULL);
    if (!rest)
        return;
    size_t cap = json_len + sizeof pat + 64, k = (size_t)(p - json_text);
    char *buf = malloc(cap);
    memcpy(buf, json_text, k);
    k +=
        (size_t)snprintf(buf + k, cap - k, "%s%.*s\"behavior\": \"Removed\"%s", pat,
                         (int)(rest - (q + 2)), q + 2, rest + strlen("\"behavior\": \"Isolated\""));
    gs_tokenizer *t = NULL;
    gs_diag d;
    int rc = gs_tokenizer_load_json(buf, strlen(buf), &t, &d);
    free(buf);
    GS_ASSERT_MSG(rc == 0, "load: %s", d.msg);
    if (rc)
        return;
    const size_t n = 11u << 20;
    char *text = malloc(n + 5);
    memset(text, ' ', n);
    memcpy(text + n, "hello", 5);
    gs_tokens out = {0};
    rc = gs_tokenizer_encode(t, text, n + 5, 0, &out, &d);
    GS_ASSERT_MSG(rc == 0, "encode: %s", d.msg);
    GS_ASSERT_EQ(out.n, 1); /* the run is removed; "hello" is one token */
    GS_ASSERT_EQ(out.n ? out.ids[0] : -1, 29);
    gs_tokens_free(&out);
    free(text);
    gs_tokenizer_free(t);
}

/* A tokenizer whose split regex backtracks catastrophically on a run of
 * 'a' fails with GS_EINTERNAL (PCRE2's match limit) after it has already
 * encoded a long text: the ids gathered so far must be freed (LSan in the
 * sanitizer build reports the leak this used to have) and an out array
 * passed in must come back with its ids unchanged. */
static void test_encode_failure_frees(void)
{
    GS_ASSERT(json_text);
    static const char from[] = "{\"Regex\": \"(?i:";
    static const char to[] = "{\"Regex\": \"(a+)+b|\\\\S+|\\\\s+|(?i:";
    const char *p = strstr(json_text, from);
    GS_ASSERT(p != NULL);
    size_t fl = strlen(from), tl = strlen(to), n = json_len - fl + tl;
    char *buf = malloc(n + 1);
    memcpy(buf, json_text, (size_t)(p - json_text));
    memcpy(buf + (p - json_text), to, tl);
    memcpy(buf + (p - json_text) + tl, p + fl, json_len - (size_t)(p - json_text) - fl);
    gs_tokenizer *bad = NULL;
    gs_diag d;
    int rc = gs_tokenizer_load_json(buf, n, &bad, &d);
    free(buf);
    GS_ASSERT_MSG(rc == 0, "load: %s", d.msg);
    if (rc)
        return;
    /* 2000 words (thousands of ids), then the run that trips the regex. */
    size_t cap = 2000 * 6 + 64, len = 0;
    char *text = malloc(cap + 1);
    for (int i = 0; i < 2000; i++)
        len += (size_t)snprintf(text + len, cap + 1 - len, "hello ");
    for (int i = 0; i < 40; i++)
        text[len++] = 'a';
    text[len++] = '!';
    text[len] = 0;

    gs_tokens t = {0};
    GS_ASSERT_EQ(gs_tokenizer_encode(bad, text, len, 0, &t, &d), GS_EINTERNAL);
    GS_ASSERT_EQ(t.n, 0);
    gs_tokens_free(&t);

    int32_t *ids = (int32_t *)1, n_ids = 7;
    GS_ASSERT_EQ(gs_prompt_encode(bad, text, 105, NULL, 0, &ids, &n_ids, &d), GS_EINTERNAL);
    GS_ASSERT(ids == NULL && n_ids == 0);
    GS_ASSERT(strstr(d.msg, "regex") != NULL);

    gs_prompt_images img = {105, NULL, 0};
    GS_ASSERT_OK(gs_tokens_append(&t, (const int32_t[]){7, 8}, 2));
    GS_ASSERT_EQ(gs_prompt_encode_n(bad, text, len, &img, &t, &d), GS_EINTERNAL);
    GS_ASSERT_EQ(t.n, 2);
    GS_ASSERT(t.ids[0] == 7 && t.ids[1] == 8);
    gs_tokens_free(&t);
    free(text);
    gs_tokenizer_free(bad);
}

int main(void)
{
    GS_RUN(test_load);
    GS_RUN(test_encode);
    GS_RUN(test_invalid_utf8);
    GS_RUN(test_decode);
    GS_RUN(test_merge_string_form);
    GS_RUN(test_malformed);
    GS_RUN(test_bpe_loops_agree);
    GS_RUN(test_long_inputs);
    GS_RUN(test_prompt);
    GS_RUN(test_long_whitespace_run);
    GS_RUN(test_encode_failure_frees);
    gs_tokenizer_free(tok);
    free(json_text);
    return gs_test_summary();
}
