/* bench_cpu.c - CPU backend speed at the real GLM-4.6V-Flash text decoder
 * shapes, with random weights made in memory: BF16 (default), or int8
 * (GS_DT_Q8) or int4 (GS_DT_Q4) with --weights, so one run per format
 * gives the decode time per layer and weight bytes per second of each
 * against the same machine's read bandwidth.
 *
 * Measures, in one run on this machine:
 *  - memory bandwidth: a multi-threaded STREAM-style copy (bytes read +
 *    written, STREAM's convention) and a multi-threaded read (sum);
 *  - decode: one token through `layers` decoder layers (the exact op
 *    sequence of worker/model/text.c) with `ctx` tokens already in the
 *    paged KV cache; time per layer and the bytes it must read (weights +
 *    KV) per second, compared with the copy and read bandwidths;
 *  - prefill: `prefill` tokens through the same layers; GFLOP/s of the
 *    layer (matmuls + attention) against OpenBLAS's own multi-threaded
 *    SGEMM on one large square-ish problem, measured here too;
 *  - matmul alone: time and weight GB/s for m = 1, 2, 4, ..., 32 rows of x
 *    (decode batches) at the layer's o, gate_up and down shapes, each call
 *    on cold caches (a --bw-mib read flushes them), against the read
 *    bandwidth (--no-mm-table skips it).
 * Prints one table. Shapes default to GLM-4.6V-Flash's text config
 * (glm4v-spec.md 1.1) and can be changed on the command line.
 *
 * Usage: bench_cpu [--threads N] [--layers L] [--ctx N] [--prefill N]
 *                  [--reps N] [--hidden N --heads N --kv-heads N
 *                   --head-dim N --inter N --vocab N] [--weights bf16|int8|int4]
 *                  [--weights-f32] [--bw-mib N] [--no-mm-table] */
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernels/kernels.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define CK(e)                                                                                      \
    do {                                                                                           \
        int rc_ = (e);                                                                             \
        if (rc_ != 0) {                                                                            \
            fprintf(stderr, "bench_cpu: %s failed: %s\n", #e, gs_strerror(rc_));                   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* ---- memory bandwidth (STREAM-style) ------------------------------------ */

typedef struct {
    float *a, *b;
    size_t n0, n1;
    int mode; /* 0 copy b = a, 1 read sum(a) */
    double sum;
} bw_arg;

static void *bw_thread(void *p)
{
    bw_arg *g = p;
    if (g->mode == 0) {
        for (size_t i = g->n0; i < g->n1; i++)
            g->b[i] = g->a[i];
    } else {
        float acc[64] = {0};
        size_t i = g->n0;
        for (; i + 64 <= g->n1; i += 64)
            for (int l = 0; l < 64; l++)
                acc[l] += g->a[i + l];
        double s = 0;
        for (int l = 0; l < 64; l++)
            s += acc[l];
        g->sum = s;
    }
    return NULL;
}

/* Best GB/s over reps: copy counts read + write bytes, read counts reads. */
static double bandwidth(int T, size_t n, int mode, int reps)
{
    float *a = aligned_alloc(64, n * sizeof(float)), *b = aligned_alloc(64, n * sizeof(float));
    if (!a || !b) {
        fprintf(stderr, "bench_cpu: no memory for the bandwidth arrays\n");
        exit(1);
    }
    pthread_t *th = calloc((size_t)T, sizeof *th);
    bw_arg *args = calloc((size_t)T, sizeof *args);
    /* first touch by the threads that use the pages */
    for (int t = 0; t < T; t++) {
        args[t] = (bw_arg){a, b, n * (size_t)t / (size_t)T, n * (size_t)(t + 1) / (size_t)T, 0, 0};
        for (size_t i = args[t].n0; i < args[t].n1; i++)
            a[i] = (float)(i & 1023), b[i] = 0;
    }
    double best = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        for (int t = 0; t < T; t++) {
            args[t].mode = mode;
            pthread_create(&th[t], NULL, bw_thread, &args[t]);
        }
        for (int t = 0; t < T; t++)
            pthread_join(th[t], NULL);
        double dt = now_s() - t0;
        double bytes = (double)n * sizeof(float) * (mode == 0 ? 2.0 : 1.0);
        if (bytes / dt / 1e9 > best)
            best = bytes / dt / 1e9;
    }
    volatile float sink = b[n / 2];
    (void)sink;
    free(a);
    free(b);
    free(th);
    free(args);
    return best;
}

/* OpenBLAS's own threaded SGEMM on an [m, k] x [k, n] problem: GFLOP/s. */
static double sgemm_peak(int T, int m, int n, int k, int reps)
{
    float *A = malloc(sizeof(float) * (size_t)m * k), *B = malloc(sizeof(float) * (size_t)n * k);
    float *C = malloc(sizeof(float) * (size_t)m * n);
    for (size_t i = 0; i < (size_t)m * k; i++)
        A[i] = (float)((i * 7) % 13) * 0.1f;
    for (size_t i = 0; i < (size_t)n * k; i++)
        B[i] = (float)((i * 5) % 11) * 0.1f;
    openblas_set_num_threads(T);
    double best = 0;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, A, k, B, k, 0.0f, C, n);
        double dt = now_s() - t0;
        if (r > 0 && 2.0 * m * n * k / dt / 1e9 > best) /* first run warms up */
            best = 2.0 * m * n * k / dt / 1e9;
    }
    openblas_set_num_threads(1);
    free(A);
    free(B);
    free(C);
    return best;
}

/* ---- one decoder layer -------------------------------------------------- */

typedef struct {
    int64_t H, nh, nkv, hd, inter; /* (not I: complex.h, via cblas.h, owns that name) */
} shapes;

typedef struct {
    gs_weight *qkv, *o, *gu, *down;
    gs_vec qkv_b, ln[4];
    gs_kv_layer kv;
} layer;

static void layer_new(gs_backend *be, const shapes *s, gs_dtype wdt, int idx, int32_t n_pages,
                      int32_t ps, layer *L)
{
    const int64_t qd = s->nh * s->hd, kd = s->nkv * s->hd;
    const uint64_t seed = 1000 + 10 * (uint64_t)idx;
    CK(gs_weight_new_random(be, wdt, qd + 2 * kd, s->H, seed, 0.02f, &L->qkv));
    CK(gs_weight_new_random(be, wdt, s->H, qd, seed + 1, 0.02f, &L->o));
    CK(gs_weight_new_random(be, wdt, 2 * s->inter, s->H, seed + 2, 0.02f, &L->gu));
    CK(gs_weight_new_random(be, wdt, s->H, s->inter, seed + 3, 0.02f, &L->down));
    float *ones = malloc(sizeof(float) * (size_t)(qd + 2 * kd + s->H));
    for (int64_t i = 0; i < qd + 2 * kd + s->H; i++)
        ones[i] = 1.0f + 0.01f * (float)(i % 7);
    CK(gs_vec_new(be, ones, qd + 2 * kd, &L->qkv_b));
    for (int j = 0; j < 4; j++)
        CK(gs_vec_new(be, ones, s->H, &L->ln[j]));
    free(ones);
    size_t bytes = (size_t)n_pages * (size_t)ps * (size_t)kd * 4;
    L->kv = (gs_kv_layer){gs_buf_alloc(be, bytes), gs_buf_alloc(be, bytes), n_pages, ps,
                          (int32_t)s->nkv,         (int32_t)s->hd};
    if (!L->kv.k || !L->kv.v) {
        fprintf(stderr, "bench_cpu: no memory for the KV cache\n");
        exit(1);
    }
    /* a plausible cache: small random values */
    float *tmp = malloc(bytes);
    for (size_t i = 0; i < bytes / 4; i++)
        tmp[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
    CK(gs_buf_upload(be, L->kv.k, tmp, bytes));
    CK(gs_buf_upload(be, L->kv.v, tmp, bytes));
    free(tmp);
}

static size_t layer_weight_bytes(const layer *L)
{
    return gs_weight_bytes(L->qkv) + gs_weight_bytes(L->o) + gs_weight_bytes(L->gu) +
           gs_weight_bytes(L->down);
}

/* Scratch for n tokens. */
typedef struct {
    gs_mat x, h, o, qkv, at, gu, a;
    int32_t *pos, *slots, *cu, *kvlen, *bt;
} acts;

static gs_mat mat_alloc(gs_backend *be, int64_t r, int64_t c)
{
    gs_mat m = gs_mat_make(gs_buf_alloc(be, sizeof(float) * (size_t)(r * c)), GS_DT_F32, r, c);
    if (!m.data) {
        fprintf(stderr, "bench_cpu: out of memory\n");
        exit(1);
    }
    CK(gs_buf_zero(be, m.data, sizeof(float) * (size_t)(r * c)));
    return m;
}

/* Times by op class, seconds. */
typedef struct {
    double mm, attn, other;
} split_t;

/* One layer step over n tokens at cache positions [p0, p0 + n). */
static void layer_step(gs_backend *be, const shapes *s, layer *L, acts *A, int64_t n, int32_t p0,
                       int32_t max_blocks, split_t *tm)
{
    const int64_t qd = s->nh * s->hd, kd = s->nkv * s->hd;
    const float eps = 1e-5f;
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)(3 * n)),
            *slots = malloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        pos[i] = pos[n + i] = pos[2 * n + i] = p0 + (int32_t)i;
        slots[i] = p0 + (int32_t)i; /* block table is the identity */
    }
    int32_t cu[2] = {0, (int32_t)n}, kvl[1] = {p0 + (int32_t)n};
    CK(gs_buf_upload(be, A->pos, pos, sizeof(int32_t) * (size_t)(3 * n)));
    CK(gs_buf_upload(be, A->slots, slots, sizeof(int32_t) * (size_t)n));
    CK(gs_buf_upload(be, A->cu, cu, sizeof cu));
    CK(gs_buf_upload(be, A->kvlen, kvl, sizeof kvl));
    free(pos);
    free(slots);
    gs_mat x = gs_mat_rows(A->x, 0, n), h = gs_mat_rows(A->h, 0, n), o = gs_mat_rows(A->o, 0, n);
    gs_mat qkv = gs_mat_rows(A->qkv, 0, n), at = gs_mat_rows(A->at, 0, n);
    gs_mat gu = gs_mat_rows(A->gu, 0, n), a = gs_mat_rows(A->a, 0, n);
    gs_rope_text_params rq = {
        (int32_t)s->nh, (int32_t)s->hd, (int32_t)(s->hd / 2), {8, 12, 12}, 500000.0f};
    if (rq.rotary_dim / 2 != 32) { /* other shapes: all pairs on axis 0 */
        rq.mrope_section[0] = rq.rotary_dim / 2;
        rq.mrope_section[1] = rq.mrope_section[2] = 0;
    }
    gs_rope_text_params rk = rq;
    rk.n_heads = (int32_t)s->nkv;
    gs_attn_params ap = {(int32_t)s->nh, (int32_t)s->nkv, (int32_t)s->hd,
                         1.0f / sqrtf((float)s->hd), 1};
    gs_paged_batch pb = {1, A->cu, A->kvlen, A->bt, max_blocks, (int32_t)n, p0 + (int32_t)n};
    double t0 = now_s(), t1;
#define LAP(field)                                                                                 \
    t1 = now_s();                                                                                  \
    tm->field += t1 - t0;                                                                          \
    t0 = t1
    CK(gs_k_rmsnorm(be, h, x, &L->ln[0], eps));
    LAP(other);
    CK(gs_k_matmul(be, qkv, h, L->qkv, &L->qkv_b, 0));
    LAP(mm);
    gs_mat q = gs_mat_cols(qkv, 0, qd), k = gs_mat_cols(qkv, qd, kd),
           v = gs_mat_cols(qkv, qd + kd, kd);
    CK(gs_k_rope_text(be, q, A->pos, &rq));
    CK(gs_k_rope_text(be, k, A->pos, &rk));
    CK(gs_k_kv_store(be, &L->kv, k, v, A->slots));
    LAP(other);
    CK(gs_k_attention_paged(be, at, q, &L->kv, &pb, &ap));
    LAP(attn);
    CK(gs_k_matmul(be, o, at, L->o, NULL, 0));
    LAP(mm);
    CK(gs_k_rmsnorm(be, o, o, &L->ln[1], eps));
    CK(gs_k_add_rmsnorm(be, h, x, o, &L->ln[2], eps));
    LAP(other);
    CK(gs_k_matmul(be, gu, h, L->gu, NULL, 0));
    LAP(mm);
    CK(gs_k_silu_mul(be, a, gu));
    LAP(other);
    CK(gs_k_matmul(be, o, a, L->down, NULL, 0));
    LAP(mm);
    CK(gs_k_rmsnorm(be, o, o, &L->ln[3], eps));
    CK(gs_k_add_rmsnorm(be, h, x, o, &L->ln[0], eps));
    CK(gs_backend_sync(be));
    LAP(other);
#undef LAP
}

/* ---- matmul time vs rows of x (decode batches) -------------------------- */

/* Evicts the caches: reads n floats (past any LLC) and returns their sum. */
static float flush_caches(const float *buf, size_t n)
{
    float acc[16] = {0};
    for (size_t i = 0; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++)
            acc[l] += buf[i + l];
    float s = 0;
    for (int l = 0; l < 16; l++)
        s += acc[l];
    return s;
}

/* One table row per weight: best time of gs_k_matmul for m = 1, 2, 4, ..., 32
 * rows of x, each call on cold caches (flush before it), and the weight bytes
 * read per second against the read bandwidth measured above. */
static void mm_table(gs_backend *be, gs_weight *const *ws, int n_ws, const char *wname, int reps,
                     double bw_read, const float *flush, size_t flush_n)
{
    static const int ms[] = {1, 2, 4, 8, 16, 32};
    enum { N_MS = sizeof ms / sizeof ms[0] };
    int64_t kmax = 0, nmax = 0;
    for (int i = 0; i < n_ws; i++) {
        if (gs_weight_cols(ws[i]) > kmax)
            kmax = gs_weight_cols(ws[i]);
        if (gs_weight_rows(ws[i]) > nmax)
            nmax = gs_weight_rows(ws[i]);
    }
    const int64_t M = ms[N_MS - 1];
    gs_mat X = mat_alloc(be, M, kmax), O = mat_alloc(be, M, nmax);
    float *xin = malloc(sizeof(float) * (size_t)(M * kmax));
    for (int64_t i = 0; i < M * kmax; i++)
        xin[i] = (float)((i * 37) % 101) * 0.01f - 0.5f;
    CK(gs_buf_upload(be, X.data, xin, sizeof(float) * (size_t)(M * kmax)));
    free(xin);
    volatile float sink = 0;
    printf("\n%s-weight matmul time per call and weight bytes read per second vs rows of x (m),"
           " cold caches; memory read %.1f GB/s\n",
           wname, bw_read);
    printf("| weight [n, k] |");
    for (int i = 0; i < N_MS; i++)
        printf(" m = %d |", ms[i]);
    printf(" m = 8 / m = 1 |\n|---|");
    for (int i = 0; i <= N_MS; i++)
        printf("---|");
    printf("\n");
    for (int wi = 0; wi < n_ws; wi++) {
        const int64_t n = gs_weight_rows(ws[wi]), k = gs_weight_cols(ws[wi]);
        const double bytes = (double)gs_weight_bytes(ws[wi]);
        double t[N_MS];
        printf("| %lld x %lld |", (long long)n, (long long)k);
        for (int i = 0; i < N_MS; i++) {
            gs_mat x = gs_mat_make(X.data, GS_DT_F32, ms[i], k);
            gs_mat o = gs_mat_make(O.data, GS_DT_F32, ms[i], n);
            t[i] = 1e30;
            for (int r = 0; r < reps; r++) {
                sink += flush_caches(flush, flush_n);
                double a0 = now_s();
                CK(gs_k_matmul(be, o, x, ws[wi], NULL, 0));
                CK(gs_backend_sync(be));
                double dt = now_s() - a0;
                if (dt < t[i])
                    t[i] = dt;
            }
            printf(" %.2f ms, %.1f GB/s |", t[i] * 1e3, bytes / t[i] / 1e9);
        }
        printf(" %.2fx |\n", t[3] / t[0]);
    }
    (void)sink;
    gs_buf_free(be, X.data);
    gs_buf_free(be, O.data);
}

static int64_t arg_i(int argc, char **argv, const char *name, int64_t def)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return atoll(argv[i + 1]);
    return def;
}

static const char *arg_s(int argc, char **argv, const char *name, const char *def)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    return def;
}

static int arg_flag(int argc, char **argv, const char *name)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int T = (int)arg_i(argc, argv, "--threads", cores > 0 ? cores : 1);
    int n_layers = (int)arg_i(argc, argv, "--layers", 2);
    int32_t ctx = (int32_t)arg_i(argc, argv, "--ctx", 1024);
    int64_t P = arg_i(argc, argv, "--prefill", 512);
    int reps = (int)arg_i(argc, argv, "--reps", 5);
    int wf32 = arg_flag(argc, argv, "--weights-f32");
    const char *wfmt = arg_s(argc, argv, "--weights", "bf16");
    gs_dtype wdt = GS_DT_BF16;
    if (strcmp(wfmt, "int8") == 0)
        wdt = GS_DT_Q8;
    else if (strcmp(wfmt, "int4") == 0)
        wdt = GS_DT_Q4;
    else if (strcmp(wfmt, "bf16") != 0) {
        fprintf(stderr, "bench_cpu: --weights takes bf16, int8 or int4\n");
        return 2;
    }
    /* the stored format's name (--weights-f32 widens BF16 only) */
    const char *wname = wdt == GS_DT_Q8 ? "int8" : wdt == GS_DT_Q4 ? "int4" : wf32 ? "F32" : "BF16";
    int64_t vocab = arg_i(argc, argv, "--vocab", 151552);
    shapes s = {arg_i(argc, argv, "--hidden", 4096), arg_i(argc, argv, "--heads", 32),
                arg_i(argc, argv, "--kv-heads", 2), arg_i(argc, argv, "--head-dim", 128),
                arg_i(argc, argv, "--inter", 13696)};
    if (T < 1 || n_layers < 1 || ctx < 1 || P < 1 || reps < 1 || s.nh % s.nkv) {
        fprintf(stderr, "bench_cpu: bad arguments\n");
        return 2;
    }

    /* memory bandwidth: 2 x 512 MiB arrays (well past any LLC) */
    size_t bw_n = (size_t)arg_i(argc, argv, "--bw-mib", 512) * 1024 * 1024 / 4;
    double bw_copy = bandwidth(T, bw_n, 0, 5), bw_read = bandwidth(T, bw_n, 1, 5);
    double peak = sgemm_peak(T, (int)P, (int)s.H, (int)s.H, 3);
    double peak_big = sgemm_peak(T, 2048, 4096, 4096, 2);

    gs_backend *be = NULL;
    gs_diag d;
    gs_backend_params bp = {.kind = GS_BACKEND_CPU, .n_threads = T, .weights_f32 = wf32};
    if (gs_backend_new(&bp, &be, &d) != 0) {
        fprintf(stderr, "bench_cpu: %s\n", d.msg);
        return 1;
    }
    const int32_t ps = 16, max_blocks = (ctx + (int32_t)P + ps) / ps + 1;
    layer *Ls = calloc((size_t)n_layers, sizeof *Ls);
    double t0 = now_s();
    for (int l = 0; l < n_layers; l++)
        layer_new(be, &s, wdt, l, max_blocks, ps, &Ls[l]);
    double t_init = now_s() - t0;
    int64_t nmax = P > 1 ? P : 1;
    const int64_t qd = s.nh * s.hd, kd = s.nkv * s.hd;
    acts A = {mat_alloc(be, nmax, s.H),
              mat_alloc(be, nmax, s.H),
              mat_alloc(be, nmax, s.H),
              mat_alloc(be, nmax, qd + 2 * kd),
              mat_alloc(be, nmax, qd),
              mat_alloc(be, nmax, 2 * s.inter),
              mat_alloc(be, nmax, s.inter),
              NULL,
              NULL,
              NULL,
              NULL,
              NULL};
    A.pos = gs_buf_alloc(be, sizeof(int32_t) * 3 * (size_t)nmax);
    A.slots = gs_buf_alloc(be, sizeof(int32_t) * (size_t)nmax);
    A.cu = gs_buf_alloc(be, sizeof(int32_t) * 2);
    A.kvlen = gs_buf_alloc(be, sizeof(int32_t));
    A.bt = gs_buf_alloc(be, sizeof(int32_t) * (size_t)max_blocks);
    int32_t *bt = malloc(sizeof(int32_t) * (size_t)max_blocks);
    for (int32_t i = 0; i < max_blocks; i++)
        bt[i] = i;
    CK(gs_buf_upload(be, A.bt, bt, sizeof(int32_t) * (size_t)max_blocks));
    free(bt);
    float *xin = malloc(sizeof(float) * (size_t)(nmax * s.H));
    for (int64_t i = 0; i < nmax * s.H; i++)
        xin[i] = (float)((i * 37) % 101) * 0.01f - 0.5f;

    /* decode: the token at position ctx - 1 (ctx keys incl. its own) */
    split_t dec = {0, 0, 0};
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        split_t tm = {0, 0, 0};
        CK(gs_buf_upload(be, A.x.data, xin, sizeof(float) * (size_t)s.H));
        double a0 = now_s();
        for (int l = 0; l < n_layers; l++)
            layer_step(be, &s, &Ls[l], &A, 1, ctx - 1, max_blocks, &tm);
        double dt = (now_s() - a0) / n_layers;
        if (r > 0 && dt < best) { /* first run warms up */
            best = dt;
            dec = tm;
        }
    }
    const double dec_s = best;
    const double wbytes = (double)layer_weight_bytes(&Ls[0]);
    const double kvbytes = 2.0 * ctx * (double)kd * 4.0;
    const double dec_gbs = (wbytes + kvbytes) / dec_s / 1e9;

    /* prefill: P tokens at positions 0..P-1 */
    split_t pre = {0, 0, 0};
    best = 1e30;
    for (int r = 0; r < (reps > 2 ? 2 : reps) + 1; r++) {
        split_t tm = {0, 0, 0};
        CK(gs_buf_upload(be, A.x.data, xin, sizeof(float) * (size_t)(P * s.H)));
        double a0 = now_s();
        for (int l = 0; l < n_layers; l++)
            layer_step(be, &s, &Ls[l], &A, P, 0, max_blocks, &tm);
        double dt = (now_s() - a0) / n_layers;
        if (r > 0 && dt < best) {
            best = dt;
            pre = tm;
        }
    }
    const double pre_s = best;
    const double n_params = (double)(qd + 2 * kd) * (double)s.H + (double)s.H * (double)qd +
                            3.0 * (double)s.inter * (double)s.H;
    const double mm_flops = 2.0 * (double)P * n_params;
    const double at_flops = 4.0 * (double)s.nh * (double)s.hd * (double)P * (double)(P + 1) / 2.0;
    const double pre_gf = (mm_flops + at_flops) / pre_s / 1e9;

    printf("bench_cpu: %d threads, %d layers, hidden %lld, heads %lld/%lld x %lld, "
           "intermediate %lld, %s weights (%.1f MiB/layer, made in %.2f s)\n",
           T, n_layers, (long long)s.H, (long long)s.nh, (long long)s.nkv, (long long)s.hd,
           (long long)s.inter, wname, wbytes / 1048576.0, t_init);
    printf("| measure | value | reference | ratio |\n|---|---|---|---|\n");
    printf("| memory copy (STREAM-style, r+w) | %.1f GB/s | | |\n", bw_copy);
    printf("| memory read (sum) | %.1f GB/s | | |\n", bw_read);
    printf("| decode, ctx %d: time per layer | %.2f ms | | |\n", ctx, dec_s * 1e3);
    printf("|   split: matmul / attention / other | %.2f / %.2f / %.2f ms | | |\n",
           dec.mm / n_layers * 1e3, dec.attn / n_layers * 1e3, dec.other / n_layers * 1e3);
    printf("| decode bytes read per second (weights + KV) | %.1f GB/s | copy %.1f GB/s | %.0f%% "
           "|\n",
           dec_gbs, bw_copy, 100.0 * dec_gbs / bw_copy);
    printf("| | | read %.1f GB/s | %.0f%% |\n", bw_read, 100.0 * dec_gbs / bw_read);
    printf("| decode, matmuls alone | %.1f GB/s | read %.1f GB/s | %.0f%% |\n",
           wbytes * n_layers / dec.mm / 1e9, bw_read,
           100.0 * wbytes * n_layers / dec.mm / 1e9 / bw_read);
    printf("| prefill %lld tokens: time per layer | %.1f ms | | |\n", (long long)P, pre_s * 1e3);
    printf("|   split: matmul / attention / other | %.1f / %.1f / %.1f ms | | |\n",
           pre.mm / n_layers * 1e3, pre.attn / n_layers * 1e3, pre.other / n_layers * 1e3);
    printf("| prefill GFLOP/s (matmul + attention) | %.1f | OpenBLAS SGEMM %lldx%lldx%lld: %.1f | "
           "%.0f%% |\n",
           pre_gf, (long long)P, (long long)s.H, (long long)s.H, peak, 100.0 * pre_gf / peak);
    printf("| prefill matmuls alone | %.1f GFLOP/s | SGEMM 2048x4096x4096: %.1f | %.0f%% |\n",
           mm_flops * n_layers / pre.mm / 1e9, peak_big,
           100.0 * mm_flops * n_layers / pre.mm / 1e9 / peak_big);
    /* a whole token: 40 layers plus the BF16 lm_head read at the same rate */
    const double lm_bytes = 2.0 * (double)vocab * (double)s.H;
    printf("| decode tokens/s, 40 layers + lm_head %lldx%lld (extrapolated) | %.2f | | |\n",
           (long long)vocab, (long long)s.H, 1.0 / (dec_s * 40 + lm_bytes / (dec_gbs * 1e9)));

    if (!arg_flag(argc, argv, "--no-mm-table")) {
        float *flush = malloc(bw_n * sizeof(float));
        if (!flush) {
            fprintf(stderr, "bench_cpu: no memory for the cache flush buffer\n");
            return 1;
        }
        for (size_t i = 0; i < bw_n; i++)
            flush[i] = (float)(i & 255);
        gs_weight *ws[3] = {Ls[0].o, Ls[0].gu, Ls[0].down};
        mm_table(be, ws, 3, wname, reps, bw_read, flush, bw_n);
        free(flush);
    }

    for (int l = 0; l < n_layers; l++) {
        gs_weight_free(be, Ls[l].qkv);
        gs_weight_free(be, Ls[l].o);
        gs_weight_free(be, Ls[l].gu);
        gs_weight_free(be, Ls[l].down);
        gs_vec_free(be, &Ls[l].qkv_b);
        for (int j = 0; j < 4; j++)
            gs_vec_free(be, &Ls[l].ln[j]);
        gs_buf_free(be, Ls[l].kv.k);
        gs_buf_free(be, Ls[l].kv.v);
    }
    gs_mat all[7] = {A.x, A.h, A.o, A.qkv, A.at, A.gu, A.a};
    for (int i = 0; i < 7; i++)
        gs_buf_free(be, all[i].data);
    gs_buf_free(be, A.pos);
    gs_buf_free(be, A.slots);
    gs_buf_free(be, A.cu);
    gs_buf_free(be, A.kvlen);
    gs_buf_free(be, A.bt);
    free(xin);
    free(Ls);
    gs_backend_free(be);
    return 0;
}
