/* bench_gpu.h - internal to tools/bench_gpu: the model runs that
 * bench_gpu.c times (bench_gpu_run.c). Single-threaded. */
#ifndef GS_BENCH_GPU_H
#define GS_BENCH_GPU_H

#include <stdint.h>

#include "common/err.h"
#include "worker/image/preprocess.h"
#include "worker/model/model.h"

/* What the runs share. Sequence s of a batch owns the cache pages
 * [s * pps, (s + 1) * pps). Borrowed handles. */
typedef struct {
    gs_model *m;
    gs_backend *be;
    gs_kv_cache *kv;
    int32_t page; /* page size in tokens */
    int32_t pps;  /* pages per decode sequence */
    int reps;     /* timed repetitions (median) */
    int steps;    /* timed decode steps per batch size */
    int warmup;   /* untimed decode steps / runs before timing */
} bg_ctx;

double bg_now(void);
/* Median of v[0..n) (sorts v in place); 0 for n <= 0. */
double bg_median(double *v, int n);

/* Prefills sequence 0 with ctx tokens (one gs_model_forward), then copies
 * its pages to the pages of sequences 1..n_seqs-1 (gs_kv_cache_copy_page),
 * so every sequence reads its own memory. *sec: the prefill's time. */
int bg_fill_context(bg_ctx *c, int32_t ctx, int32_t n_seqs, double *sec, gs_diag *d);

/* `batch` sequences (already filled to ctx) each decode one token per
 * step: c->warmup untimed steps, then c->steps timed ones, each a full
 * production step (gs_model_step: forward, greedy sampling on the backend,
 * the ids back on the host). graphs: 1 = through recorded decode graphs
 * (gs_model_enable_graphs; fails unless every timed step replayed one),
 * 0 = op by op. *ms: median step time in ms. */
int bg_decode(bg_ctx *c, int32_t batch, int32_t ctx, int graphs, double *ms, gs_diag *d);

/* One sequence of n text tokens from position 0 (pages from 0), logits of
 * the last row. *sec: median over c->reps after one warm-up. */
int bg_prefill(bg_ctx *c, int32_t n, double *sec, gs_diag *d);

/* Time to first token of a w x h synthetic JPEG (encoded once in memory
 * with TurboJPEG) + a question of n_q tokens: t[0] decode + preprocess,
 * t[1] vision encoder (to gs_backend_sync), t[2] prefill with image rows
 * (logits of the last row), each the median over c->reps after one
 * warm-up, in seconds. *n_prompt: prompt tokens, *n_img: image tokens. */
int bg_ttft(bg_ctx *c, const gs_image_params *ip, int32_t w, int32_t h, int32_t n_q, double t[3],
            int32_t *n_prompt, int32_t *n_img, gs_diag *d);

/* Tokens of the image prompt used by bg_ttft (for sizing the cache). */
int bg_ttft_prompt_len(const gs_model_config *cfg, const gs_image_params *ip, int32_t w, int32_t h,
                       int32_t n_q, int32_t *n_prompt, gs_diag *d);

#endif
