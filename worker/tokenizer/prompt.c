/* prompt.c - rendered chat text -> the model's prompt ids, with every image
 * placeholder expanded to the image's token count (what the HF processor
 * does by repeating <|image|> in the text before tokenising; expanding
 * after tokenising gives the same ids because the placeholder is an added
 * token, matched before the pre-tokenizer).
 * Owns nothing past the call. Thread-safe: see tokenizer.h. */
#include <stdlib.h>
#include <string.h>

#include "worker/tokenizer/tokenizer.h"

int gs_prompt_encode(const gs_tokenizer *tok, const char *text, int32_t image_token_id,
                     const int32_t *n_tokens, int n_images, int32_t **ids, int32_t *n_ids,
                     gs_diag *d)
{
    *ids = NULL;
    *n_ids = 0;
    if (!text || n_images < 0 || (n_images > 0 && !n_tokens))
        return gs_diag_set(d, GS_EINVAL, "prompt: bad arguments");
    gs_tokens t = {0};
    int rc = gs_tokenizer_encode(tok, text, strlen(text), 0, &t, d);
    if (rc)
        return rc;
    size_t total = 0;
    int seen = 0;
    for (size_t i = 0; i < t.n; i++) {
        if (t.ids[i] != image_token_id) {
            total++;
            continue;
        }
        if (seen < n_images && n_tokens[seen] < 1) {
            gs_tokens_free(&t);
            return gs_diag_set(d, GS_EINVAL, "prompt: image %d has %d tokens", seen,
                               (int)n_tokens[seen]);
        }
        total += seen < n_images ? (size_t)n_tokens[seen] : 1;
        seen++;
    }
    if (seen != n_images) {
        gs_tokens_free(&t);
        return gs_diag_set(d, GS_EINVAL,
                           "prompt: the text has %d image placeholders (id %d) but %d images "
                           "were given",
                           seen, (int)image_token_id, n_images);
    }
    if (total > INT32_MAX) {
        gs_tokens_free(&t);
        return gs_diag_set(d, GS_ETOOBIG, "prompt: %zu tokens", total);
    }
    int32_t *o = malloc((total ? total : 1) * sizeof *o);
    if (!o) {
        gs_tokens_free(&t);
        return GS_ENOMEM;
    }
    size_t k = 0;
    seen = 0;
    for (size_t i = 0; i < t.n; i++) {
        if (t.ids[i] != image_token_id) {
            o[k++] = t.ids[i];
            continue;
        }
        for (int32_t j = 0; j < n_tokens[seen]; j++)
            o[k++] = image_token_id;
        seen++;
    }
    gs_tokens_free(&t);
    *ids = o;
    *n_ids = (int32_t)total;
    return 0;
}
