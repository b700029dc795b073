/* weights_quant.c - the quantization policy of the weights (weights.h):
 * which class of weight gets which dtype, the size of the model in each
 * format (for --weights auto), and gs_quantize run over row blocks on
 * several threads (rows are independent; the result is the same bits).
 * Thread-safe: the threads of one call write disjoint rows. */
/* sched_getaffinity, CPU_COUNT: the build defines _GNU_SOURCE */
#include <pthread.h>
#include <sched.h>
#include <stdint.h>

#include "worker/model/weights.h"

gs_dtype gs_weights_qdtype(gs_weight_format fmt, gs_weight_class c)
{
    if (c == GS_WCLASS_TABLE || (fmt != GS_WEIGHTS_INT8 && fmt != GS_WEIGHTS_INT4))
        return GS_DT_BF16;
    if (c == GS_WCLASS_HEAD)
        return GS_DT_Q8;
    return fmt == GS_WEIGHTS_INT8 ? GS_DT_Q8 : GS_DT_Q4;
}

static size_t mat_bytes(gs_weight_format fmt, gs_weight_class c, int64_t rows, int64_t cols)
{
    gs_dtype dt = gs_weights_qdtype(fmt, c);
    if (dt == GS_DT_BF16)
        return (size_t)rows * (size_t)cols * 2;
    return gs_quant_q_bytes(dt, rows, cols) + 4 * gs_quant_n_scales(dt, rows, cols);
}

size_t gs_weights_estimate(const gs_model_config *cfg, gs_weight_format fmt)
{
    const gs_text_config *tc = &cfg->text;
    const gs_vision_config *vc = &cfg->vision;
    const int64_t H = tc->hidden_size, V = tc->vocab_size, I = tc->intermediate_size;
    const int64_t qd = (int64_t)tc->num_attention_heads * tc->head_dim;
    const int64_t kvd = (int64_t)tc->num_key_value_heads * tc->head_dim;
    const int64_t vh = vc->hidden_size, oh = vc->out_hidden_size, vi = vc->intermediate_size;
    const int64_t pin =
        (int64_t)vc->in_channels * vc->temporal_patch_size * vc->patch_size * vc->patch_size;
    const gs_weight_class T = GS_WCLASS_TABLE, L = GS_WCLASS_LINEAR;
    size_t layer = mat_bytes(fmt, L, qd + 2 * kvd, H) + mat_bytes(fmt, L, H, qd) +
                   mat_bytes(fmt, L, 2 * I, H) + mat_bytes(fmt, L, H, I);
    size_t block = mat_bytes(fmt, L, 3 * vh, vh) + mat_bytes(fmt, L, vh, vh) +
                   mat_bytes(fmt, L, 2 * oh, vh) + mat_bytes(fmt, L, vh, oh);
    size_t b = mat_bytes(fmt, T, V, H) + layer * (size_t)tc->num_hidden_layers;
    /* A tied BF16 lm_head is the embedding itself; a quantized one is its own. */
    if (!cfg->tie_word_embeddings || gs_weights_qdtype(fmt, GS_WCLASS_HEAD) != GS_DT_BF16)
        b += mat_bytes(fmt, GS_WCLASS_HEAD, V, H);
    b += mat_bytes(fmt, T, vh, pin) + mat_bytes(fmt, T, vc->num_positions, vh) +
         block * (size_t)vc->depth + mat_bytes(fmt, T, oh, 4 * vh) + mat_bytes(fmt, L, oh, oh) +
         mat_bytes(fmt, L, 2 * vi, oh) + mat_bytes(fmt, L, oh, vi);
    return b;
}

/* ---- threaded gs_quantize ------------------------------------------------ */

typedef struct {
    gs_dtype qdt, sdt;
    const char *src;
    int64_t r0, r1, cols;
    char *q;
    float *s;
    int rc;
} qjob;

static void *qrun(void *arg)
{
    qjob *j = arg;
    size_t qrow = gs_quant_q_bytes(j->qdt, 1, j->cols),
           srow = gs_quant_n_scales(j->qdt, 1, j->cols);
    size_t erow = gs_dtype_size(j->sdt) * (size_t)j->cols;
    j->rc = gs_quantize(j->qdt, j->src + (size_t)j->r0 * erow, j->sdt, j->r1 - j->r0, j->cols,
                        j->q + (size_t)j->r0 * qrow, j->s + (size_t)j->r0 * srow);
    return NULL;
}

static int usable_cores(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    return 1;
}

int gs_quantize_rows_mt(gs_dtype qdt, const void *src, gs_dtype src_dt, int64_t rows, int64_t cols,
                        void *q, float *s, int n_threads)
{
    enum { MAX_T = 16, MIN_ELEMS = 1 << 20 };
    int n = n_threads > 0 ? n_threads : usable_cores();
    n = n > MAX_T ? MAX_T : n;
    if ((int64_t)n > rows)
        n = (int)rows;
    if (rows * cols < MIN_ELEMS || n < 2)
        return gs_quantize(qdt, src, src_dt, rows, cols, q, s);
    qjob jobs[MAX_T];
    pthread_t th[MAX_T];
    int started[MAX_T] = {0};
    for (int i = 0; i < n; i++) {
        jobs[i] = (qjob){qdt, src_dt, src, rows * i / n, rows * (i + 1) / n, cols, q, s, 0};
        started[i] = i > 0 && pthread_create(&th[i], NULL, qrun, &jobs[i]) == 0;
    }
    for (int i = 0; i < n; i++) /* thread 0's rows, and any that did not start, run here */
        if (!started[i])
            qrun(&jobs[i]);
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (started[i])
            pthread_join(th[i], NULL);
        if (jobs[i].rc && !rc)
            rc = jobs[i].rc;
    }
    return rc;
}
