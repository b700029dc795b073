/* fuzz_tokenizer.c - libFuzzer target for the tokenizer (worker/tokenizer/:
 * tokenizer.json loading, the regex pre-tokenizer, BPE, decoding, the
 * streaming detokenizer, prompt encoding with image placeholders).
 *
 * Input: a mode byte, then the payload.
 *   mode % 4 == 0: payload is text, encoded with the tiny model's
 *     tokenizer (special tokens recognised), then as a prompt with one
 *     image of 3 tokens;
 *   1: the same with special tokens as plain text;
 *   2: payload is little-endian int32 ids (any value, also absent or
 *     negative ones), decoded whole (lenient, strict, skipping specials)
 *     and streamed id by id through the detokenizer;
 *   3: payload is a tokenizer.json, loaded; when it loads, a fixed text is
 *     encoded and decoded with it.
 * Checked besides memory safety: every id that encode gives decodes
 * (strict), and with the tiny model's tokenizer the text comes back; the
 * detokenizer's pieces plus its flush equal the whole decode (tokenizer.h
 * and detok.h promise both). Built with libFuzzer (GS_FUZZ=ON) and as
 * replay_tokenizer (ctest). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz_util.h"
#include "worker/tokenizer/detok.h"
#include "worker/tokenizer/tokenizer.h"

static gs_tokenizer *tok;

/* exact: the decode must give the text back (the tiny model's tokenizer;
 * a fuzzed tokenizer.json may drop text with a Removed split). */
static void roundtrip(const gs_tokenizer *t, const char *text, size_t len, unsigned flags,
                      int exact)
{
    gs_tokens ids = {0};
    gs_diag d;
    if (gs_tokenizer_encode(t, text, len, flags, &ids, &d) != 0) {
        gs_tokens_free(&ids);
        return;
    }
    char *back = NULL;
    size_t blen = 0;
    if (gs_tokenizer_decode(t, ids.ids, ids.n, GS_DECODE_STRICT, &back, &blen, &d) != 0)
        __builtin_trap(); /* every id encode gives is a token */
    if (exact && (blen != len || memcmp(back, text, len) != 0))
        __builtin_trap();
    free(back);
    gs_tokens_free(&ids);
}

static void prompt(const char *text, size_t len)
{
    int32_t img = gs_tokenizer_token_id(tok, "<|image|>");
    if (img < 0)
        return;
    static const int32_t n_tok[1] = {3};
    gs_prompt_images pi = {img, n_tok, 1};
    gs_tokens ids = {0};
    gs_diag d;
    if (gs_prompt_encode_n(tok, text, len, &pi, &ids, &d) == 0) {
        size_t k = 0;
        for (size_t i = 0; i < ids.n; i++)
            k += ids.ids[i] == img;
        if (k != 3)
            __builtin_trap();
    }
    gs_tokens_free(&ids);
}

static void decode_ids(const int32_t *ids, size_t n)
{
    static const unsigned modes[3] = {0, GS_DECODE_SKIP_SPECIAL, GS_DECODE_STRICT};
    for (int m = 0; m < 3; m++) {
        char *whole = NULL;
        size_t wlen = 0;
        gs_diag d;
        int rc = gs_tokenizer_decode(tok, ids, n, modes[m], &whole, &wlen, &d);
        if (rc)
            continue;
        gs_detok *dt;
        unsigned df = modes[m] == GS_DECODE_SKIP_SPECIAL ? GS_DETOK_SKIP_SPECIAL : 0;
        if (gs_detok_new(tok, df, &dt))
            abort();
        size_t off = 0;
        const char *piece;
        size_t plen;
        for (size_t i = 0; i < n; i++) {
            if (gs_detok_push(dt, ids[i], &piece, &plen))
                __builtin_trap();
            if (off + plen > wlen || memcmp(whole + off, piece, plen) != 0)
                __builtin_trap();
            off += plen;
        }
        gs_detok_flush(dt, &piece, &plen);
        if (off + plen != wlen || memcmp(whole + off, piece, plen) != 0)
            __builtin_trap();
        gs_detok_free(dt);
        free(whole);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gs_diag d;
    if (!tok && gs_tokenizer_load(fz_fixture("tiny-glm4v/tokenizer.json"), &tok, &d)) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", d.msg);
        abort();
    }
    if (size < 1)
        return 0;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0] % 4) {
    case 0:
        roundtrip(tok, p, n, 0, 1);
        prompt(p, n);
        break;
    case 1:
        roundtrip(tok, p, n, GS_ENCODE_SPECIAL_AS_TEXT, 1);
        break;
    case 2: {
        size_t k = n / 4;
        int32_t *ids = malloc((k ? k : 1) * sizeof *ids);
        if (!ids)
            return 0;
        memcpy(ids, p, k * 4);
        decode_ids(ids, k);
        free(ids);
        break;
    }
    case 3: {
        gs_tokenizer *t = NULL;
        if (gs_tokenizer_load_json(p, n, &t, &d) == 0) {
            static const char text[] = "Hello, world! 日本語 <|user|>\n  x=1";
            roundtrip(t, text, sizeof text - 1, 0, 0);
            (void)gs_tokenizer_vocab_size(t);
            gs_tokenizer_free(t);
        } else if (t) {
            __builtin_trap();
        }
        break;
    }
    }
    return 0;
}
