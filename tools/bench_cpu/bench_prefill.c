/* bench_prefill.c - the CPU backend's prefill GEMMs at the real
 * GLM-4.6V-Flash text decoder shapes: the F32 SGEMM path
 * (GS_TUNE_CPU_GEMM_F32) against the BF16 matrix-unit path (oneDNN), with
 * random BF16 weights made in memory.
 *
 * One decoder layer's GEMMs, as worker/model/text.c issues them for a
 * `tokens`-token prompt: qkv [qd + 2 kd, H] with bias, o [H, qd], gate_up
 * [2 I, H], down [H, I]; `layers` layers, each with its own weights (so the
 * weights come from memory, as in a real prefill). The two paths run
 * interleaved (A B, then B A, ...) `reps` times on the same inputs; the
 * table gives the median ms of every GEMM and of the layer, GFLOP/s, and
 * the speedup. The last run's outputs of the two paths are compared (the
 * largest difference relative to the largest |value|; BF16 rounding of x
 * gives about 2^-9).
 *
 * --json prints one line per path and GEMM instead
 *   {"path": "f32", "gemm": "qkv", "ms": 123.4, "gflops": 56.7}
 * for tools/bench_cpu/bench_prefill.py, which adds torch's BF16 linear on
 * the same shapes and thread count and prints the combined table.
 *
 * Usage: bench_prefill [--threads N] [--tokens N] [--layers L] [--reps N]
 *                      [--hidden N --heads N --kv-heads N --head-dim N
 *                       --inter N] [--json] */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernels/cpu/gemm_bf16.h"
#include "kernels/kernels.h"

enum { G_QKV, G_O, G_GU, G_DOWN, N_GEMM };
static const char *const gemm_name[N_GEMM] = {"qkv", "o", "gate_up", "down"};
enum { P_F32, P_BF16, N_PATH };
static const char *const path_name[N_PATH] = {"f32", "bf16"};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

#define CK(e)                                                                                      \
    do {                                                                                           \
        int rc_ = (e);                                                                             \
        if (rc_ != 0) {                                                                            \
            fprintf(stderr, "bench_prefill: %s failed: %s\n", #e, gs_strerror(rc_));               \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static int64_t arg_i(int argc, char **argv, const char *name, int64_t def)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return strtoll(argv[i + 1], NULL, 10);
    return def;
}

static int arg_flag(int argc, char **argv, const char *name)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return 1;
    return 0;
}

/* A [rows, cols] F32 matrix in backend memory, uniform in [-1, 1). */
static gs_mat rand_mat(gs_backend *be, int64_t rows, int64_t cols, uint64_t seed)
{
    size_t n = (size_t)(rows * cols);
    float *h = malloc(n * sizeof *h);
    void *d = gs_buf_alloc(be, n * sizeof(float));
    if (!h || !d) {
        fprintf(stderr, "bench_prefill: out of memory\n");
        exit(1);
    }
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        h[i] = (float)(s >> 40) * (2.0f / 16777216.0f) - 1.0f;
    }
    CK(gs_buf_upload(be, d, h, n * sizeof(float)));
    free(h);
    return gs_mat_make(d, GS_DT_F32, rows, cols);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct {
    gs_weight *w[N_GEMM];
    gs_vec qkv_bias;
} layer;

int main(int argc, char **argv)
{
    gs_cpu_blas_reexec(argv); /* OpenBLAS's best kernels for this CPU (the F32 path) */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    const int T = (int)arg_i(argc, argv, "--threads", cores > 0 ? cores : 1);
    const int64_t P = arg_i(argc, argv, "--tokens", 758);
    const int L = (int)arg_i(argc, argv, "--layers", 1);
    const int reps = (int)arg_i(argc, argv, "--reps", 5);
    const int json = arg_flag(argc, argv, "--json");
    const int64_t H = arg_i(argc, argv, "--hidden", 4096), nh = arg_i(argc, argv, "--heads", 32),
                  nkv = arg_i(argc, argv, "--kv-heads", 2),
                  hd = arg_i(argc, argv, "--head-dim", 128),
                  I = arg_i(argc, argv, "--inter", 13696);
    if (T < 1 || P < 1 || L < 1 || reps < 1 || H < 1 || nh < 1 || nkv < 1 || hd < 1 || I < 1) {
        fprintf(stderr, "bench_prefill: bad arguments\n");
        return 2;
    }
    const int64_t qd = nh * hd, kd = nkv * hd;
    /* [out, in] of each GEMM */
    const int64_t rows[N_GEMM] = {qd + 2 * kd, H, 2 * I, H}, cols[N_GEMM] = {H, qd, H, I};

    gs_backend *be = NULL;
    gs_diag d;
    gs_backend_params bp = {.kind = GS_BACKEND_CPU, .n_threads = T};
    if (gs_backend_new(&bp, &be, &d) != 0) {
        fprintf(stderr, "bench_prefill: %s\n", d.msg);
        return 1;
    }
    const int have_bf16 = gs_cpu_gemm_bf16_active();
    const int n_paths = have_bf16 ? N_PATH : 1;

    layer *Ls = calloc((size_t)L, sizeof *Ls);
    float *bias = malloc(sizeof(float) * (size_t)rows[G_QKV]);
    for (int64_t i = 0; i < rows[G_QKV]; i++)
        bias[i] = 0.01f * (float)(i % 17);
    for (int l = 0; l < L; l++) {
        for (int g = 0; g < N_GEMM; g++)
            CK(gs_weight_new_random(be, GS_DT_BF16, rows[g], cols[g],
                                    1000u * (unsigned)l + (unsigned)g, 1.0f / sqrtf((float)cols[g]),
                                    &Ls[l].w[g]));
        CK(gs_vec_new(be, bias, rows[G_QKV], &Ls[l].qkv_bias));
    }
    /* Inputs per GEMM (x) and outputs per path (to compare them). */
    gs_mat x[N_GEMM], out[N_PATH][N_GEMM];
    for (int g = 0; g < N_GEMM; g++) {
        x[g] = rand_mat(be, P, cols[g], 10 + (uint64_t)g);
        for (int p = 0; p < n_paths; p++)
            out[p][g] = rand_mat(be, P, rows[g], 20 + (uint64_t)g);
    }

    /* t[path][gemm][rep]: summed over layers */
    double *t = calloc((size_t)(N_PATH * N_GEMM * reps), sizeof *t);
    double *tl = calloc((size_t)(N_PATH * reps), sizeof *tl);
#define T_AT(p, g, r) t[((p)*N_GEMM + (g)) * reps + (r)]
    for (int r = -1; r < reps; r++) { /* r = -1: warm-up (plans, page faults) */
        for (int i = 0; i < n_paths; i++) {
            int p = (r & 1) ? n_paths - 1 - i : i; /* A B, B A, ... */
            gs_backend_tuning tune = {p == P_F32 ? GS_TUNE_CPU_GEMM_F32 : 0, 0};
            CK(gs_backend_set_tuning(be, &tune));
            double t_layer = 0;
            for (int l = 0; l < L; l++)
                for (int g = 0; g < N_GEMM; g++) {
                    double t0 = now_ms();
                    CK(gs_k_matmul(be, out[p][g], x[g], Ls[l].w[g],
                                   g == G_QKV ? &Ls[l].qkv_bias : NULL, 0));
                    CK(gs_backend_sync(be));
                    double dt = now_ms() - t0;
                    t_layer += dt;
                    if (r >= 0)
                        T_AT(p, g, r) += dt;
                }
            if (r >= 0)
                tl[p * reps + r] = t_layer;
        }
    }
    gs_backend_tuning tune0 = {0, 0};
    CK(gs_backend_set_tuning(be, &tune0));

    /* The two paths' last outputs, relative to the largest |f32 value|. */
    double rel[N_GEMM] = {0};
    if (n_paths == 2)
        for (int g = 0; g < N_GEMM; g++) {
            size_t n = (size_t)(P * rows[g]);
            float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
            CK(gs_buf_download(be, a, out[P_F32][g].data, n * sizeof(float)));
            CK(gs_buf_download(be, b, out[P_BF16][g].data, n * sizeof(float)));
            double md = 0, mv = 0;
            for (size_t i = 0; i < n; i++) {
                double dd = fabs((double)a[i] - (double)b[i]);
                if (!(dd <= md))
                    md = dd;
                if (fabs(a[i]) > mv)
                    mv = fabs(a[i]);
            }
            rel[g] = mv > 0 ? md / mv : md;
            free(a);
            free(b);
        }

    double med[N_PATH][N_GEMM + 1];
    for (int p = 0; p < n_paths; p++) {
        for (int g = 0; g < N_GEMM; g++)
            med[p][g] = median(&T_AT(p, g, 0), reps);
        med[p][N_GEMM] = median(&tl[p * reps], reps);
    }
    double flops[N_GEMM + 1] = {0};
    for (int g = 0; g < N_GEMM; g++) {
        flops[g] = 2.0 * (double)P * (double)rows[g] * (double)cols[g] * L;
        flops[N_GEMM] += flops[g];
    }

    if (json) {
        for (int p = 0; p < n_paths; p++)
            for (int g = 0; g <= N_GEMM; g++)
                printf("{\"path\": \"%s\", \"gemm\": \"%s\", \"ms\": %.3f, \"gflops\": %.2f}\n",
                       path_name[p], g < N_GEMM ? gemm_name[g] : "layer", med[p][g],
                       flops[g] / med[p][g] * 1e-6);
        for (int g = 0; n_paths == 2 && g < N_GEMM; g++)
            printf("{\"gemm\": \"%s\", \"rel_diff\": %.3e}\n", gemm_name[g], rel[g]);
        printf("{\"threads\": %d, \"tokens\": %lld, \"layers\": %d, \"reps\": %d, \"bf16\": %d}\n",
               T, (long long)P, L, reps, have_bf16);
    } else {
        printf("prefill GEMMs: %lld tokens, %d layer(s), %d threads, median of %d interleaved "
               "runs\nBF16 matrix-unit path: %s\n\n",
               (long long)P, L, T, reps, have_bf16 ? "active" : "not available (F32 path only)");
        printf("%-8s %-14s %10s %8s", "gemm", "[out x in]", "f32 ms", "GF/s");
        if (n_paths == 2)
            printf(" %10s %8s %8s %10s", "bf16 ms", "GF/s", "speedup", "rel diff");
        printf("\n");
        for (int g = 0; g <= N_GEMM; g++) {
            char shape[32] = "";
            if (g < N_GEMM)
                snprintf(shape, sizeof shape, "%lldx%lld", (long long)rows[g], (long long)cols[g]);
            printf("%-8s %-14s %10.1f %8.1f", g < N_GEMM ? gemm_name[g] : "layer", shape,
                   med[P_F32][g], flops[g] / med[P_F32][g] * 1e-6);
            if (n_paths == 2) {
                printf(" %10.1f %8.1f %7.2fx", med[P_BF16][g], flops[g] / med[P_BF16][g] * 1e-6,
                       med[P_F32][g] / med[P_BF16][g]);
                if (g < N_GEMM)
                    printf(" %10.2e", rel[g]);
            }
            printf("\n");
        }
    }

    for (int g = 0; g < N_GEMM; g++) {
        gs_buf_free(be, x[g].data);
        for (int p = 0; p < n_paths; p++)
            gs_buf_free(be, out[p][g].data);
    }
    for (int l = 0; l < L; l++) {
        for (int g = 0; g < N_GEMM; g++)
            gs_weight_free(be, Ls[l].w[g]);
        gs_vec_free(be, &Ls[l].qkv_bias);
    }
    free(Ls);
    free(bias);
    free(t);
    free(tl);
    gs_backend_free(be);
    return 0;
}
