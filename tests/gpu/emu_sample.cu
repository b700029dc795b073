/* emu_sample.cu - runs the GPU sampler's kernel body (sample_kernel.cuh,
 * unchanged) on the CPU through the simt.cuh emulation (emu_simt.h: one
 * POSIX thread per CUDA thread, 1024 per block) and compares every row
 * with the host model (sample_model.h). On the CPU both sides use the same
 * expf, so sampled rows must pick exactly the model's id, not just a kept
 * one. Needs no GPU. Rows cover greedy, penalties, top-k / top-p / min-p,
 * exact ties at the top-k and top-p boundaries, NaN logits, an all -inf row
 * (id -1, the error word untouched: a per-row outcome) and a vocabulary that
 * is not a multiple of the block size; a last grid lists a penalty id
 * outside the vocabulary (skipped, and the error word set). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/sample_kernel.cuh"
#include "tests/gpu/emu_simt.h"
#include "tests/gpu/sample_model.h"

static sample_args g_args;

static void row_cta(void *arg)
{
    sample_smem *sm = (sample_smem *)arg;
    sample_row(g_args, *sm);
}

static uint64_t rng = 0x1234abcd5678ef01ull;

static float urand(float lo, float hi)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return lo + (hi - lo) * (float)(rng >> 40) * (1.0f / 16777216.0f);
}

int main(void)
{
    /* 12 configurations x 4 draws (offsets), so a wrong kept set is caught */
    enum { V = 3001, NC = 12, REP = 4, R = NC * REP };
    float *logits = (float *)malloc(sizeof(float) * V * R),
          *orig = (float *)malloc(sizeof(float) * V * R);
    gs_sample_row P[R];
    memset(P, 0, sizeof P);
    for (int r = 0; r < NC; r++) {
        for (int i = 0; i < V; i++)
            orig[r * V + i] = urand(-3.0f, 3.0f);
        P[r].top_p = 1.0f;
        P[r].repetition_penalty = 1.0f;
        P[r].temperature = 1.0f;
        P[r].seed = 77 + (uint64_t)r;
    }
    const char *names[NC] = {"greedy",         "greedy + penalties", "top_k 1",
                             "top_k 5 (tied)", "top_p 0.9",          "top_p 0.3 (tied)",
                             "min_p 0.2",      "top_k 40 top_p 0.8", "temperature 0.5",
                             "NaN logits",     "all -inf",           "rep 1.2 sampled"};
    P[0].temperature = 0.0f;
    P[1].temperature = 0.0f;
    P[1].repetition_penalty = 1.5f, P[1].presence_penalty = 0.7f, P[1].frequency_penalty = 0.3f;
    P[2].top_k = 1; /* the runner-up within 1e-3 of the best */
    {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (orig[2 * V + i] > orig[2 * V + best])
                best = i;
        orig[2 * V + (best + 1) % V] = orig[2 * V + best] - 1e-3f;
    }
    P[3].top_k = 5; /* ids 10..19 share the best logit: ties at the boundary are kept */
    for (int i = 10; i < 20; i++)
        orig[3 * V + i] = 9.0f;
    P[4].top_p = 0.9f;
    P[5].top_p = 0.3f; /* 6 ids tied at the top, each 1/6 of most of the mass */
    for (int i = 100; i < 106; i++)
        orig[5 * V + i] = 12.0f;
    P[6].min_p = 0.2f;
    P[7].top_k = 40, P[7].top_p = 0.8f;
    P[8].temperature = 0.5f;
    for (int i = 0; i < V; i += 7)
        orig[9 * V + i] = NAN;
    for (int i = 0; i < V; i++)
        orig[10 * V + i] = -INFINITY;
    P[11].repetition_penalty = 1.2f;
    /* repeat every configuration with other offsets */
    for (int r = NC; r < R; r++) {
        memcpy(orig + (size_t)r * V, orig + (size_t)(r % NC) * V, sizeof(float) * V);
        P[r] = P[r % NC];
    }
    for (int r = 0; r < R; r++)
        P[r].offset = 1000 + (uint64_t)r * 7919;
    /* penalties: configurations 1 and 11 list their argmax and a few others */
    int32_t off[R + 1], ids[8 * R], cnt[8 * R];
    int n = 0;
    off[0] = 0;
    for (int r = 0; r < R; r++) {
        if (r % NC == 1 || r % NC == 11) {
            int best = 0;
            for (int i = 1; i < V; i++)
                if (orig[r * V + i] > orig[r * V + best])
                    best = i;
            ids[n] = best, cnt[n++] = 3;
            for (int j = 0; j < 7; j++)
                ids[n] = 1 + j * 401, cnt[n++] = j % 2;
        }
        off[r + 1] = n;
    }
    memcpy(logits, orig, sizeof(float) * V * R);
    int32_t out[R];
    unsigned err = 0;
    sample_args a = {logits, V, R, V, P, off, ids, cnt, out, &err};
    g_args = a;
    sample_smem sm;
    emu_run_grid(R, 1, 1, SAMPLE_THREADS, row_cta, &sm);

    int fails = 0;
    for (int r = 0; r < R; r++) {
        float *l = (float *)malloc(sizeof(float) * V);
        memcpy(l, orig + (size_t)r * V, sizeof(float) * V);
        sm_result m = sm_model(l, V, &P[r], ids + off[r], cnt + off[r], off[r + 1] - off[r],
                               gs_philox_uniform(P[r].seed, P[r].offset));
        const int ok = out[r] == m.draw;
        printf("%-22s draw %d: emu %5d model %5d (argmax %d, %d kept)  %s\n", names[r % NC], r / NC,
               out[r], m.draw, m.best, m.kept, ok ? "ok" : "FAIL");
        fails += !ok;
        free(m.p);
        free(l);
    }
    const int err_ok = err == 0; /* the all -inf row is not a device error */
    printf("%-22s %s (0x%x)\n", "error word clear", err_ok ? "ok" : "FAIL", err);
    fails += !err_ok;

    /* a penalty id outside the vocabulary: skipped, the error word set; the
     * row's other penalties still apply (greedy row 1's list plus id V) */
    {
        int32_t boff[2] = {0, 0}, bids[9], bcnt[9];
        for (int k = off[1]; k < off[2]; k++)
            bids[boff[1]] = ids[k], bcnt[boff[1]++] = cnt[k];
        bids[boff[1]] = V, bcnt[boff[1]++] = 1;
        memcpy(logits, orig + V, sizeof(float) * V);
        int32_t bout = -2;
        unsigned berr = 0;
        sample_args b = {logits, V, 1, V, &P[1], boff, bids, bcnt, &bout, &berr};
        g_args = b;
        emu_run_grid(1, 1, 1, SAMPLE_THREADS, row_cta, &sm);
        const int ok = berr == GS_CUDA_ERR_SAMPLE && bout == out[1];
        printf("%-22s emu %5d (err 0x%x), without it %5d  %s\n", "bad penalty id", bout, berr,
               out[1], ok ? "ok" : "FAIL");
        fails += !ok;
    }
    printf("%d rows, %d failed\n", R + 1, fails);
    free(logits);
    free(orig);
    return fails ? 1 : 0;
}
