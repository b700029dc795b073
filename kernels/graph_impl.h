/* graph_impl.h - one kernels.h op as a value, and the recorder behind
 * gs_graph_* (graph.c). Internal to kernels/: included by kernels.c and
 * graph.c only, never by a backend or the model.
 *
 * kernels.c validates a verb's arguments, packs them into a gs_op and hands
 * it to gs_op_submit, which either runs it through the backend's vtable or,
 * while kernels.c's own recorder records (backends without native graphs),
 * appends a copy to the recording. Small host structs a verb receives by
 * pointer (gs_vec, the params structs, gs_kv_layer, gs_paged_batch) are held
 * BY VALUE in the op, since the caller's may be stack temporaries gone by the
 * time the graph is replayed. Weight handles and backend-memory pointers are
 * kept as they are: they must outlive the graph (kernels.h). */
#ifndef GS_GRAPH_IMPL_H
#define GS_GRAPH_IMPL_H

#include "kernels/backend_impl.h"
#include "kernels/kernels.h"

typedef enum {
    GS_OP_MATMUL,
    GS_OP_RMSNORM,
    GS_OP_ADD_RMSNORM,
    GS_OP_LAYERNORM,
    GS_OP_ADD,
    GS_OP_SILU_MUL,
    GS_OP_GELU,
    GS_OP_SOFTMAX,
    GS_OP_EMBED,
    GS_OP_GATHER_ROWS,
    GS_OP_COPY,
    GS_OP_ROPE_TEXT,
    GS_OP_ROPE_VISION,
    GS_OP_POSEMBED_ADD,
    GS_OP_ATTENTION,
    GS_OP_KV_STORE,
    GS_OP_ATTENTION_PAGED,
    GS_OP_SAMPLE,
} gs_op_kind;

/* The arguments of one validated verb, as the vtable entry takes them.
 * An optional gs_vec (matmul bias, layernorm b) with data NULL means none. */
typedef struct {
    gs_op_kind kind;
    union {
        struct {
            gs_mat out, x;
            const gs_weight *w;
            gs_vec bias;
            unsigned flags;
        } matmul;
        struct {
            gs_mat out, resid, x; /* resid: add_rmsnorm only */
            gs_vec w, b;          /* b: layernorm only */
            float eps;
        } norm; /* RMSNORM, ADD_RMSNORM, LAYERNORM */
        struct {
            gs_mat out, a, b; /* ADD: a + b; SILU_MUL: a = gu; GELU, SOFTMAX, COPY: a = x */
        } ew;
        struct {
            gs_mat out, x;          /* x: gather_rows only */
            const gs_weight *table; /* embed only */
            const int32_t *idx;     /* ids (embed) / idx (gather_rows) */
        } gather;                   /* EMBED, GATHER_ROWS */
        struct {
            gs_mat qk;
            const int32_t *pos;
            gs_rope_text_params p;
        } rope_text;
        struct {
            gs_mat qk;
            const int32_t *pos;
            gs_rope_vision_params p;
        } rope_vision;
        struct {
            gs_mat x;
            const gs_weight *table;
            int32_t side;
            const int32_t *hw;
        } posembed;
        struct {
            gs_mat out, q, k, v;
            const int32_t *cu;
            int32_t n_seqs, max_len;
            gs_attn_params p;
        } attention;
        struct {
            gs_kv_layer kv;
            gs_mat k, v;
            const int32_t *slots;
        } kv_store;
        struct {
            gs_mat out, q;
            gs_kv_layer kv;
            gs_paged_batch b;
            gs_attn_params p;
        } paged;
        struct {
            int32_t *out_ids;
            gs_mat logits;
            const gs_sample_row *rows;
            const int32_t *pen_off, *pen_ids, *pen_cnt;
        } sample;
    };
} gs_op;

/* Runs op on be now, or records it while kernels.c's recorder records.
 * Returns the op's result, 0 once recorded, GS_ENOMEM when the recording
 * cannot grow (the recording keeps running; the caller aborts it). */
int gs_op_submit(gs_backend *be, const gs_op *op);

/* What a free deferred during a recording releases at gs_graph_end /
 * gs_graph_abort (see kernels.c: frees are deferred, not refused). */
typedef enum { GS_DEFER_BUF, GS_DEFER_WEIGHT, GS_DEFER_GRAPH } gs_defer_kind;
/* Queues p (never NULL) for release when the running recording stops.
 * be->recording must be 1. On host OOM logs and releases p at once
 * (rather than leaking it). */
void gs_graph_defer_free(gs_backend *be, gs_defer_kind kind, void *p);

#endif
