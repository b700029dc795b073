/* test_detok.c - the streaming detokenizer on data/tiny_tokenizer.json:
 * emoji and CJK characters split across tokens (and across single-byte
 * tokens), invalid sequences, flush, special tokens shown or hidden, ids
 * that are not tokens; and the property that every stream equals
 * gs_tokenizer_decode of the same ids. */
#include "test.h"
#include "worker/tokenizer/detok.h"
#include "worker/tokenizer/tokenizer.h"

#define DATA GS_TEST_DATA_DIR "/tiny_tokenizer.json"

static gs_tokenizer *tok;

/* Pushes ids and checks each piece; want[i] is the piece after ids[i],
 * want[n] the flush. */
static int run(unsigned flags, const int32_t *ids, size_t n, const char *const *want)
{
    gs_detok *dt;
    if (gs_detok_new(tok, flags, &dt))
        return 0;
    int ok = 1;
    for (size_t i = 0; i <= n; i++) {
        const char *p;
        size_t l;
        if (i < n) {
            if (gs_detok_push(dt, ids[i], &p, &l))
                ok = 0;
        } else {
            gs_detok_flush(dt, &p, &l);
        }
        if (l != strlen(want[i]) || memcmp(p, want[i], l)) {
            fprintf(stderr, "  step %zu: got \"%.*s\" (%zu bytes), want \"%s\"\n", i, (int)l, p, l,
                    want[i]);
            ok = 0;
        }
    }
    gs_detok_free(dt);
    return ok;
}

#define RUN(flags, ids, ...)                                                                       \
    do {                                                                                           \
        static const int32_t i_[] = ids;                                                           \
        static const char *const w_[] = {__VA_ARGS__};                                             \
        GS_ASSERT(sizeof w_ / sizeof *w_ == sizeof i_ / sizeof *i_ + 1);                           \
        GS_ASSERT(run(flags, i_, sizeof i_ / sizeof *i_, w_));                                     \
    } while (0)
#define IDS(...)                                                                                   \
    {                                                                                              \
        __VA_ARGS__                                                                                \
    }

static void test_split_characters(void)
{
    GS_ASSERT_OK(gs_tokenizer_load(DATA, &tok, NULL));
    /* 😀 as two tokens (F0 9F | 98 80), then as four single bytes */
    RUN(0, IDS(29, 35, 36, 34), "hello", "", "\xf0\x9f\x98\x80", " world", "");
    RUN(0, IDS(19, 20, 21, 22, 12), "", "", "", "\xf0\x9f\x98\x80", " ", "");
    /* 中 as E4 B8 | AD, é as C3 | A9 */
    RUN(0, IDS(40, 25, 17, 18), "", "\xe4\xb8\xad", "", "\xc3\xa9", "");
    /* a character cut short by ASCII: U+FFFD at once, then the ASCII */
    RUN(0, IDS(40, 5, 17), "", "\xef\xbf\xbdh", "", "\xef\xbf\xbd");
    /* a continuation byte with nothing before it */
    RUN(0, IDS(21, 22), "\xef\xbf\xbd", "\xef\xbf\xbd", "");
    /* an incomplete tail at the end of the stream: one U+FFFD */
    RUN(0, IDS(29, 35), "hello", "", "\xef\xbf\xbd");
    /* 4-byte lead, then another lead: the first is a maximal subpart */
    RUN(0, IDS(35, 35, 36), "", "\xef\xbf\xbd", "\xf0\x9f\x98\x80", "");
}

static void test_specials_and_gaps(void)
{
    GS_ASSERT(tok);
    RUN(0, IDS(29, 100, 34), "hello", "<|user|>", " world", "");
    RUN(GS_DETOK_SKIP_SPECIAL, IDS(29, 100, 34), "hello", "", " world", "");
    /* a hidden special between the halves of a character changes nothing */
    RUN(GS_DETOK_SKIP_SPECIAL, IDS(40, 100, 25), "", "", "\xe4\xb8\xad", "");
    /* shown, it cuts the character */
    RUN(0, IDS(40, 100, 25), "", "\xef\xbf\xbd<|user|>", "\xef\xbf\xbd", "");
    /* ids that are not tokens produce nothing... */
    RUN(0, IDS(29, 39, -1, 4000, 12), "hello", "", "", "", " ", "");
    /* ...or an error that leaves the state as it was */
    gs_detok *dt;
    GS_ASSERT_OK(gs_detok_new(tok, GS_DETOK_STRICT, &dt));
    const char *p;
    size_t l;
    GS_ASSERT_OK(gs_detok_push(dt, 40, &p, &l));
    GS_ASSERT_EQ(gs_detok_push(dt, 39, &p, &l), GS_ERANGE);
    GS_ASSERT_EQ(l, 0);
    GS_ASSERT_EQ(gs_detok_pending(dt), 2);
    GS_ASSERT_OK(gs_detok_push(dt, 25, &p, &l));
    GS_ASSERT(l == 3 && !memcmp(p, "\xe4\xb8\xad", 3));
    GS_ASSERT_OK(gs_detok_push(dt, 35, &p, &l));
    gs_detok_reset(dt);
    GS_ASSERT_EQ(gs_detok_pending(dt), 0);
    gs_detok_flush(dt, &p, &l);
    GS_ASSERT_EQ(l, 0);
    gs_detok_free(dt);
    gs_detok_free(NULL);
}

/* Random id streams: pieces + flush == decode, for every flag set. */
static void test_stream_equals_decode(void)
{
    GS_ASSERT(tok);
    static const int32_t pool[] = {0,  5,  12, 13, 17, 18, 19, 20, 21, 22, 23,  24,  25,
                                   29, 34, 35, 36, 37, 38, 39, 40, 45, 46, 100, 105, -7};
    uint64_t rng = 99;
    for (int it = 0; it < 2000; it++) {
        int32_t ids[40];
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        size_t n = (rng >> 33) % 40;
        for (size_t i = 0; i < n; i++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            ids[i] = pool[(rng >> 33) % (sizeof pool / sizeof *pool)];
        }
        unsigned f = it & 1 ? GS_DETOK_SKIP_SPECIAL : 0;
        char *want = NULL;
        size_t wl = 0;
        GS_ASSERT_OK(
            gs_tokenizer_decode(tok, ids, n, f ? GS_DECODE_SKIP_SPECIAL : 0, &want, &wl, NULL));
        gs_detok *dt;
        GS_ASSERT_OK(gs_detok_new(tok, f, &dt));
        char got[40 * 16 + 8];
        size_t gl = 0;
        for (size_t i = 0; i <= n; i++) {
            const char *p;
            size_t l;
            if (i < n)
                gs_detok_push(dt, ids[i], &p, &l);
            else
                gs_detok_flush(dt, &p, &l);
            memcpy(got + gl, p, l);
            gl += l;
        }
        gs_detok_free(dt);
        int same = gl == wl && !memcmp(got, want, wl);
        free(want);
        GS_ASSERT_MSG(same, "iteration %d: stream differs from decode", it);
    }
}

int main(void)
{
    GS_RUN(test_split_characters);
    GS_RUN(test_specials_and_gaps);
    GS_RUN(test_stream_equals_decode);
    gs_tokenizer_free(tok);
    return gs_test_summary();
}
