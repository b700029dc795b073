/* prompt.c - rendered chat text -> the model's prompt ids, with every image
 * placeholder expanded to the image's token count (what the HF processor
 * does by repeating <|image|> in the text before tokenising; expanding
 * after tokenising gives the same ids because the placeholder is an added
 * token, matched before the pre-tokenizer).
 * Owns nothing past the call. Thread-safe: see tokenizer.h. */
#include <stdlib.h>
#include <string.h>

#include "worker/tokenizer/tokenizer.h"

int gs_prompt_encode_n(const gs_tokenizer *tok, const char *text, size_t len,
                       const gs_prompt_images *img, gs_tokens *out, gs_diag *d)
{
    if (!text || !img || img->n_images < 0 || (img->n_images > 0 && !img->n_tokens))
        return gs_diag_set(d, GS_EINVAL, "prompt: bad arguments");
    gs_tokens t = {0}; /* the text's ids before expansion; freed on every path */
    int rc = gs_tokenizer_encode(tok, text, len, 0, &t, d);
    if (rc) {
        /* encode may have grown t before failing (e.g. a regex error deep
         * in a long text): its buffer is ours to free. */
        gs_tokens_free(&t);
        return rc;
    }
    size_t total = 0;
    int seen = 0;
    for (size_t i = 0; i < t.n && !rc; i++) {
        if (t.ids[i] != img->image_token_id) {
            total++;
            continue;
        }
        if (seen < img->n_images && img->n_tokens[seen] < 1)
            rc = gs_diag_set(d, GS_EINVAL, "prompt: image %d has %d tokens", seen,
                             (int)img->n_tokens[seen]);
        total += seen < img->n_images ? (size_t)img->n_tokens[seen] : 1;
        seen++;
    }
    if (!rc && seen != img->n_images)
        rc = gs_diag_set(d, GS_EINVAL,
                         "prompt: the text has %d image placeholders (id %d) but %d images "
                         "were given",
                         seen, (int)img->image_token_id, img->n_images);
    if (!rc && out->n + total > INT32_MAX)
        rc = gs_diag_set(d, GS_ETOOBIG, "prompt: %zu tokens", out->n + total);
    size_t n0 = out->n;
    seen = 0;
    for (size_t i = 0; i < t.n && !rc; i++) {
        if (t.ids[i] != img->image_token_id) {
            rc = gs_tokens_append(out, &t.ids[i], 1);
            continue;
        }
        for (int32_t j = 0; j < img->n_tokens[seen] && !rc; j++)
            rc = gs_tokens_append(out, &img->image_token_id, 1);
        seen++;
    }
    gs_tokens_free(&t);
    if (rc) {
        out->n = n0;
        if (rc == GS_ENOMEM)
            gs_diag_set(d, rc, "prompt: out of memory");
    }
    return rc;
}

int gs_prompt_encode(const gs_tokenizer *tok, const char *text, int32_t image_token_id,
                     const int32_t *n_tokens, int n_images, int32_t **ids, int32_t *n_ids,
                     gs_diag *d)
{
    *ids = NULL;
    *n_ids = 0;
    if (!text)
        return gs_diag_set(d, GS_EINVAL, "prompt: no text");
    gs_prompt_images img = {image_token_id, n_tokens, n_images};
    gs_tokens out = {0};
    int rc = gs_prompt_encode_n(tok, text, strlen(text), &img, &out, d);
    if (rc) {
        gs_tokens_free(&out);
        return rc;
    }
    if (!out.ids && !(out.ids = malloc(sizeof *out.ids))) /* an empty prompt: still an array */
        return gs_diag_set(d, GS_ENOMEM, "prompt: out of memory");
    *ids = out.ids;
    *n_ids = (int32_t)out.n;
    return 0;
}
