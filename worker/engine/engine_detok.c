/* engine_detok.c - gs_engine_detok callbacks over gs_detok. Owns nothing
 * but the per-sequence gs_detok objects it opens (closed by the engine
 * through close). Single-threaded (engine thread). */
#include "engine_detok.h"

static int open_fn(void *user, void **state)
{
    const gs_engine_detok_ctx *c = user;
    gs_detok *dt = NULL;
    int rc = gs_detok_new(c->tok, c->flags, &dt);
    *state = dt;
    return rc;
}

static int push_fn(void *state, int32_t id, const char **text, size_t *len)
{
    return gs_detok_push(state, id, text, len);
}

static void flush_fn(void *state, const char **text, size_t *len)
{
    gs_detok_flush(state, text, len);
}

static void close_fn(void *state)
{
    gs_detok_free(state);
}

gs_engine_detok gs_engine_tokenizer_detok(const gs_engine_detok_ctx *ctx)
{
    gs_engine_detok d = {(void *)ctx, open_fn, push_fn, flush_fn, close_fn};
    return d;
}
