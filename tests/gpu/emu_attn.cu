/* emu_attn.cu - runs the tensor-core attention kernels of kernels/cuda
 * (the CTA bodies in attn_kernels.cuh, unchanged) on the CPU, and checks
 * them against a double-precision reference. Needs no GPU: built with
 * GS_AT_EMULATE, the host pass of simt.cuh / attn_common.cuh maps thread
 * and block indices, __syncthreads, shuffles (emu_simt.h), cp.async,
 * ldmatrix(.trans) and mma.sync.m16n8k16 (this file) to an emulation: one
 * POSIX thread per CUDA thread (128 per CTA, CTAs one after another),
 * warp-collective operations exchange operands between two barriers.
 * ldmatrix and mma follow the fragment layouts of the PTX ISA ("Matrix
 * fragments for mma.m16n8k16", "ldmatrix"), so this tests the kernels'
 * indexing, masking, pipelining, online softmax, warp merge, paging and
 * split-KV logic - not the hardware. Shared memory starts filled with NaN
 * bytes and outputs with NaN, so reading unwritten data or skipping a row
 * shows up as a failure. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/attn_kernels.cuh"
#include "tests/gpu/emu_simt.h"

/* ---- emulated primitives ----------------------------------------------------
 * Indices, barriers and shuffles: emu_simt.h. Here: cp.async (a plain
 * copy), ldmatrix and mma.sync, as warp-collective exchanges. */

static const void *dep_ptr[4][32];
static uint32_t dep_a[4][32][4], dep_b[4][32][2];
static float dep_c[4][32][4];

void at_emu_cp16(void *dst, const void *src, int bytes)
{
    if (bytes == 16)
        memcpy(dst, src, 16);
    else
        memset(dst, 0, 16);
}

void at_emu_ldsm4(const void *p, uint32_t r[4], int trans)
{
    const int w = emu_tid >> 5, l = emu_tid & 31;
    dep_ptr[w][l] = p;
    emu_wbar();
    for (int i = 0; i < 4; i++) {
        const uint16_t *rows[8];
        for (int j = 0; j < 8; j++)
            rows[j] = (const uint16_t *)dep_ptr[w][i * 8 + j];
        uint32_t lo, hi;
        if (!trans) {
            lo = rows[l / 4][2 * (l % 4)];
            hi = rows[l / 4][2 * (l % 4) + 1];
        } else {
            lo = rows[2 * (l % 4)][l / 4];
            hi = rows[2 * (l % 4) + 1][l / 4];
        }
        r[i] = lo | hi << 16;
    }
    emu_wbar();
}

static float bf_lo(uint32_t u)
{
    uint32_t x = u << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static float bf_hi(uint32_t u)
{
    uint32_t x = u & 0xffff0000u;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

void at_emu_mma(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    const int w = emu_tid >> 5, l = emu_tid & 31;
    memcpy(dep_a[w][l], a, sizeof dep_a[w][l]);
    dep_b[w][l][0] = b0;
    dep_b[w][l][1] = b1;
    memcpy(dep_c[w][l], d, sizeof dep_c[w][l]);
    emu_wbar();
    float A[16][16], B[16][8], C[16][8];
    for (int L = 0; L < 32; L++) {
        const int g = L >> 2, t = L & 3;
        const uint32_t *aa = dep_a[w][L];
        A[g][2 * t] = bf_lo(aa[0]), A[g][2 * t + 1] = bf_hi(aa[0]);
        A[g + 8][2 * t] = bf_lo(aa[1]), A[g + 8][2 * t + 1] = bf_hi(aa[1]);
        A[g][2 * t + 8] = bf_lo(aa[2]), A[g][2 * t + 9] = bf_hi(aa[2]);
        A[g + 8][2 * t + 8] = bf_lo(aa[3]), A[g + 8][2 * t + 9] = bf_hi(aa[3]);
        B[2 * t][g] = bf_lo(dep_b[w][L][0]), B[2 * t + 1][g] = bf_hi(dep_b[w][L][0]);
        B[2 * t + 8][g] = bf_lo(dep_b[w][L][1]), B[2 * t + 9][g] = bf_hi(dep_b[w][L][1]);
        C[g][2 * t] = dep_c[w][L][0], C[g][2 * t + 1] = dep_c[w][L][1];
        C[g + 8][2 * t] = dep_c[w][L][2], C[g + 8][2 * t + 1] = dep_c[w][L][3];
    }
    const int g = l >> 2, t = l & 3;
    const int rr[4] = {g, g, g + 8, g + 8}, cc[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
    for (int e = 0; e < 4; e++) {
        float s = C[rr[e]][cc[e]];
        for (int k = 0; k < 16; k++)
            s += A[rr[e]][k] * B[k][cc[e]];
        d[e] = s;
    }
    emu_wbar();
}

/* ---- data helpers ----------------------------------------------------------------- */

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static float urand(float lo, float hi)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return lo + (hi - lo) * (float)(rng >> 40) * (1.0f / 16777216.0f);
}

static uint16_t to_bf(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float from_bf(uint16_t h)
{
    return bf_lo(h);
}

static uint16_t *rand_bf(size_t n)
{
    uint16_t *p = (uint16_t *)malloc(n * 2);
    for (size_t i = 0; i < n; i++)
        p[i] = to_bf(urand(-2.0f, 2.0f));
    return p;
}

static uint16_t *nan_bf(size_t n)
{
    uint16_t *p = (uint16_t *)malloc(n * 2);
    for (size_t i = 0; i < n; i++)
        p[i] = 0x7fc0;
    return p;
}

static int n_fail, n_pass;

/* Softmax(q.k * scale) v over keys 0..last of a row; q, keys, values BF16. */
static void ref_row(const uint16_t *q, const uint16_t *const *krow, const uint16_t *const *vrow,
                    int n_keys, double scale, double *out)
{
    double *s = (double *)malloc(sizeof(double) * (size_t)(n_keys ? n_keys : 1)), mx = -1e300, z = 0;
    for (int j = 0; j < n_keys; j++) {
        double d = 0;
        for (int e = 0; e < AT_D; e++)
            d += (double)from_bf(q[e]) * from_bf(krow[j][e]);
        s[j] = d * scale;
        mx = s[j] > mx ? s[j] : mx;
    }
    for (int e = 0; e < AT_D; e++)
        out[e] = 0;
    for (int j = 0; j < n_keys; j++) {
        double p = exp(s[j] - mx);
        z += p;
        for (int e = 0; e < AT_D; e++)
            out[e] += p * from_bf(vrow[j][e]);
    }
    for (int e = 0; e < AT_D; e++)
        out[e] /= z;
    free(s);
}

/* Compares one output row; |err| <= 0.02 + 0.02 |ref| (BF16 P and output). */
static int cmp_row(const uint16_t *got, const double *ref, double *maxerr)
{
    int ok = 1;
    for (int e = 0; e < AT_D; e++) {
        double g = from_bf(got[e]), err = fabs(g - ref[e]);
        if (!(err <= 0.02 + 0.02 * fabs(ref[e])))
            ok = 0;
        if (err > *maxerr || err != err)
            *maxerr = err;
    }
    return ok;
}

static void report(const char *name, int ok, double maxerr)
{
    printf("%-58s max_abs %.3e  %s\n", name, maxerr, ok ? "ok" : "FAIL");
    if (ok)
        n_pass++;
    else
        n_fail++;
}

/* ---- prefill ------------------------------------------------------------------------ */

static prefill_args g_pa;

static void prefill_cta(void *arg)
{
    bf16 *smem = (bf16 *)arg;
    at_prefill_cta(g_pa, smem);
}

static void test_prefill(int causal)
{
    const int nh = 4, nkv = 2, n_seqs = 2;
    const int32_t cu[3] = {0, 100, 137};
    const int m = cu[n_seqs], w = (nh + 2 * nkv) * AT_D, od = nh * AT_D;
    uint16_t *qkv = rand_bf((size_t)m * w), *out = nan_bf((size_t)m * od);
    uint16_t *smem = nan_bf(PF_SMEM_BYTES / 2);
    unsigned err = 0;
    const float scale = 1.0f / sqrtf((float)AT_D);
    prefill_args a = {qkv, qkv + nh * AT_D, qkv + (nh + nkv) * AT_D, out, w, w, w, od, cu, m,
                      nh, nh / nkv, AT_D, causal, 100, GS_DT_BF16, scale * AT_LOG2E, &err};
    g_pa = a;
    emu_run_grid((100 + AT_KT - 1) / AT_KT, nh, n_seqs, AT_THREADS, prefill_cta, smem);
    int ok = err == 0;
    double maxerr = 0, ref[AT_D];
    const uint16_t **kr = (const uint16_t **)malloc(sizeof(void *) * m);
    const uint16_t **vr = (const uint16_t **)malloc(sizeof(void *) * m);
    for (int s = 0; s < n_seqs; s++)
        for (int i = cu[s]; i < cu[s + 1]; i++)
            for (int h = 0; h < nh; h++) {
                const int kvh = h / (nh / nkv), n_keys = causal ? i - cu[s] + 1 : cu[s + 1] - cu[s];
                for (int j = 0; j < n_keys; j++) {
                    kr[j] = qkv + (size_t)(cu[s] + j) * w + (nh + kvh) * AT_D;
                    vr[j] = qkv + (size_t)(cu[s] + j) * w + (nh + nkv + kvh) * AT_D;
                }
                ref_row(qkv + (size_t)i * w + h * AT_D, kr, vr, n_keys, scale, ref);
                ok &= cmp_row(out + (size_t)i * od + h * AT_D, ref, &maxerr);
            }
    report(causal ? "prefill 4/2 heads, segments 100 + 37, causal"
                  : "prefill 4/2 heads, segments 100 + 37, full",
           ok, maxerr);
    free(kr);
    free(vr);
    free(qkv);
    free(out);
    free(smem);
}

/* ---- paged ----------------------------------------------------------------------------- */

static paged_args g_ga;

static void paged_cta_k(void *arg)
{
    at_paged_cta<true>(g_ga, (bf16 *)arg);
}

static void paged_cta_r(void *arg)
{
    at_paged_cta<false>(g_ga, (bf16 *)arg);
}

static void merge_cta(void *arg)
{
    (void)arg;
    at_merge_block(g_ga);
}

static void test_paged(const char *name, int nh, int nkv, const int *nq, const int *kvl, int n_seqs,
                       int n_splits)
{
    const int ps = 16, g = nh / nkv, kd = nkv * AT_D, qd = nh * AT_D;
    int max_q = 0, max_blocks = 1, total_q = 0, pages = 0;
    for (int s = 0; s < n_seqs; s++) {
        max_q = nq[s] > max_q ? nq[s] : max_q;
        const int nb = (kvl[s] + ps - 1) / ps;
        max_blocks = nb > max_blocks ? nb : max_blocks;
        pages += nb;
        total_q += nq[s];
    }
    const int n_pages = pages + 3;
    /* pages handed out backwards, so logical and physical order differ */
    int32_t *bt = (int32_t *)malloc(sizeof(int32_t) * (size_t)(n_seqs * max_blocks));
    int next = n_pages - 1;
    for (int s = 0; s < n_seqs; s++)
        for (int b = 0; b < max_blocks; b++)
            bt[s * max_blocks + b] = b < (kvl[s] + ps - 1) / ps ? next-- : -1;
    int32_t cu[9], kv_len[8];
    cu[0] = 0;
    for (int s = 0; s < n_seqs; s++) {
        cu[s + 1] = cu[s] + nq[s];
        kv_len[s] = kvl[s];
    }
    uint16_t *kc = rand_bf((size_t)n_pages * ps * kd), *vc = rand_bf((size_t)n_pages * ps * kd);
    uint16_t *q = rand_bf((size_t)total_q * qd), *out = nan_bf((size_t)total_q * qd);
    const int ksplit = max_q * g <= 16, rt = ksplit ? 16 : 64;
    uint16_t *smem = nan_bf(PG_SMEM(rt) / 2);
    const int n_rb = (max_q * g + rt - 1) / rt;
    float *ws = (float *)malloc(sizeof(float) * (size_t)n_splits * total_q * nh * (AT_D + 1));
    for (size_t i = 0; i < (size_t)n_splits * total_q * nh * (AT_D + 1); i++)
        ws[i] = NAN;
    unsigned err = 0;
    const float scale = 1.0f / sqrtf((float)AT_D);
    paged_args a;
    memset(&a, 0, sizeof a);
    a.q = q, a.out = out, a.ldq = qd, a.ldo = qd, a.m = total_q;
    a.kc = (const bf16 *)kc, a.vc = (const bf16 *)vc;
    a.page_size = ps, a.n_kv = nkv, a.n_pages = n_pages;
    a.cu_q = cu, a.kv_len = kv_len, a.bt = bt, a.max_blocks = max_blocks, a.max_q = max_q;
    a.n_heads = nh, a.group = g, a.head_dim = AT_D, a.dt = GS_DT_BF16;
    a.n_splits = n_splits, a.scale_log2 = scale * AT_LOG2E;
    a.ws_o = ws, a.ws_lse = ws + (size_t)n_splits * total_q * nh * AT_D, a.err = &err;
    g_ga = a;
    emu_run_grid((unsigned)(n_rb * n_splits), (unsigned)nkv, (unsigned)n_seqs, AT_THREADS,
                 ksplit ? paged_cta_k : paged_cta_r, smem);
    if (n_splits > 1)
        emu_run_grid((unsigned)((max_q * nh + 3) / 4), (unsigned)n_seqs, 1, 128, merge_cta, NULL);
    int ok = err == 0;
    double maxerr = 0, ref[AT_D];
    const int max_kv = max_blocks * ps;
    const uint16_t **kr = (const uint16_t **)malloc(sizeof(void *) * max_kv);
    const uint16_t **vr = (const uint16_t **)malloc(sizeof(void *) * max_kv);
    for (int s = 0; s < n_seqs; s++)
        for (int i = 0; i < nq[s]; i++)
            for (int h = 0; h < nh; h++) {
                const int kvh = h / g, n_keys = kvl[s] - nq[s] + i + 1;
                for (int j = 0; j < n_keys; j++) {
                    const size_t slot = (size_t)bt[s * max_blocks + j / ps] * ps + j % ps;
                    kr[j] = kc + (slot * nkv + kvh) * AT_D;
                    vr[j] = vc + (slot * nkv + kvh) * AT_D;
                }
                ref_row(q + (size_t)(cu[s] + i) * qd + h * AT_D, kr, vr, n_keys, scale, ref);
                ok &= cmp_row(out + (size_t)(cu[s] + i) * qd + h * AT_D, ref, &maxerr);
            }
    char full[128];
    snprintf(full, sizeof full, "%s, %s, %d split%s", name, ksplit ? "ksplit" : "rows", n_splits,
             n_splits > 1 ? "s" : "");
    report(full, ok, maxerr);
    free(kr);
    free(vr);
    free(bt);
    free(kc);
    free(vc);
    free(q);
    free(out);
    free(smem);
    free(ws);
}

int main(void)
{
    test_prefill(1);
    test_prefill(0);
    const int dq[3] = {1, 1, 1}, dk[3] = {1, 17, 130};
    test_paged("decode 32/2 heads, kv 1/17/130", 32, 2, dq, dk, 3, 1);
    test_paged("decode 32/2 heads, kv 1/17/130", 32, 2, dq, dk, 3, 3);
    const int cq[2] = {20, 3}, ck[2] = {90, 3};
    test_paged("chunk 8/2 heads, (n_q, kv) (20, 90) (3, 3)", 8, 2, cq, ck, 2, 1);
    test_paged("chunk 8/2 heads, (n_q, kv) (20, 90) (3, 3)", 8, 2, cq, ck, 2, 2);
    const int tq[2] = {1, 9}, tk[2] = {40, 70};
    test_paged("tiny 2/1 heads, (1, 40) (9, 70)", 2, 1, tq, tk, 2, 1);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
