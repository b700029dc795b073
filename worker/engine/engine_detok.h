/* engine_detok.h - the engine's detokenizer callbacks (gs_engine_detok)
 * over worker/tokenizer's incremental gs_detok: one gs_detok per sequence,
 * text only in whole UTF-8 characters.
 * Thread-safety: as the engine (one thread). */
#ifndef GS_ENGINE_DETOK_H
#define GS_ENGINE_DETOK_H

#include "worker/engine/engine.h"
#include "worker/tokenizer/detok.h"

typedef struct {
    const gs_tokenizer *tok; /* borrowed */
    unsigned flags;          /* GS_DETOK_*, e.g. GS_DETOK_SKIP_SPECIAL */
} gs_engine_detok_ctx;

/* Callbacks for gs_engine_params.detok. ctx is borrowed: it (and its
 * tokenizer) must outlive the engine. */
gs_engine_detok gs_engine_tokenizer_detok(const gs_engine_detok_ctx *ctx);

#endif
