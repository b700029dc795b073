/* attention.c - softmax(q k^T * scale) v on the CPU, contiguous and paged,
 * with GQA; and kv_store into the paged cache.
 *
 * One algorithm serves both layouts. A work item is (sequence, KV head g,
 * block of query rows); its M = rows x G query vectors (the G query heads
 * that share KV head g, for each row) are packed into one [M, hd] matrix,
 * so K and V are read once per group. Keys are visited in chunks of KC:
 *     S = scale * Qp . Kc^T                   (cblas_sgemm, [M, nk])
 *     online softmax per row: m' = max(m, max S), corr = e^(m - m'),
 *         (e^ by a vectorisable polynomial, fast_expf, about 1-2 ulp)
 *         l = l * corr + sum e^(S - m'), O *= corr, S <- e^(S - m')
 *     O += S . Vc                              (cblas_sgemm, [M, hd])
 * and out = O / l at the end. Causal rows mask keys past their position.
 * Contiguous K/V are read in place (strided); paged K/V are gathered page
 * by page into the thread's scratch first.
 *
 * Decode has few items (one row per sequence, n_kv_heads groups), fewer than
 * threads; then each item's key range is also split (flash-decoding): each
 * split writes (m, l, O) partials, and a second pass merges them.
 *
 * Index arrays (cu, cu_q, kv_len, block tables, slots) are host memory on
 * this backend and are all checked before any work starts.
 * Threading: gs_cpu_parallel over (item, split); OpenBLAS single-threaded. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "kernels/cpu/cpu_impl.h"

#define KC 512       /* keys per chunk */
#define M_TARGET 256 /* packed query vectors per item (fewer repacks per GEMM) */
#define MIN_SPLIT 128

typedef struct {
    int32_t seq, g, r0, r1; /* sequence, KV head, local query rows [r0, r1) */
    int32_t k_end;          /* keys [0, k_end) are visible to some row */
    int32_t n_split, split_len;
    int64_t part; /* float offset of this item's partials when n_split > 1 */
} attn_item;

typedef struct {
    int32_t item, split;
} attn_unit;

typedef struct {
    gs_cpu *c;
    gs_mat out, q, k, v;
    int32_t G, hd, n_kv, causal;
    float scale;
    const int32_t *cu; /* contiguous: segment bounds; paged: cu_q */
    const gs_kv_layer *kv;
    const gs_paged_batch *b;
    attn_item *items;
    attn_unit *units;
    float *part;
} attn_job;

/* Position of local query row r of sequence s (the last key it sees). */
static int32_t row_pos(const attn_job *J, int32_t s, int32_t r)
{
    const int32_t nq = J->cu[s + 1] - J->cu[s];
    const int32_t nk = J->kv ? J->b->kv_len[s] : nq;
    return J->causal ? nk - nq + r : nk - 1;
}

/* Keys [k0, k0 + nk) of item it for KV head g: pointers and leading dims. */
static void key_chunk(const attn_job *J, const attn_item *it, int32_t k0, int32_t nk, float *kb,
                      float *vb, const float **kp, const float **vp, int64_t *ldk, int64_t *ldv)
{
    const int32_t hd = J->hd;
    if (!J->kv) {
        const int64_t row = (int64_t)J->cu[it->seq] + k0;
        *kp = gs_cpu_row(J->k, row) + (int64_t)it->g * hd;
        *vp = gs_cpu_row(J->v, row) + (int64_t)it->g * hd;
        *ldk = J->k.stride;
        *ldv = J->v.stride;
        return;
    }
    const gs_kv_layer *kv = J->kv;
    const int32_t ps = kv->page_size;
    const int32_t *bt = J->b->block_table + (int64_t)it->seq * J->b->max_blocks;
    const float *K = kv->k, *V = kv->v;
    for (int32_t j = 0; j < nk; j++) {
        const int32_t key = k0 + j;
        const int64_t slot = (int64_t)bt[key / ps] * ps + key % ps;
        const int64_t off = (slot * kv->n_kv_heads + it->g) * hd;
        memcpy(kb + (int64_t)j * hd, K + off, sizeof(float) * (size_t)hd);
        memcpy(vb + (int64_t)j * hd, V + off, sizeof(float) * (size_t)hd);
    }
    *kp = kb;
    *vp = vb;
    *ldk = hd;
    *ldv = hd;
}

/* e^x for the softmax, x <= 0 in practice: Cody-Waite range reduction
 * (x = n ln2 + f, |f| <= ln2/2, ln2 split in two so n ln2 is exact) and a
 * degree-6 polynomial (the Cephes expf coefficients), about 1-2 ulp;
 * written with selects instead of branches so the loops vectorise (libm's
 * expf is a call per element). Below -87.3 it returns 0 (the true value is
 * under FLT_MIN there), above 88.7 +inf. */
static inline float fast_expf(float x)
{
    const float hi = 88.7f, lo = -87.3f;
    float xc = x > hi ? hi : (x < lo ? lo : x);
    float t = xc * 1.44269504088896341f;
    float fn = (t + 12582912.0f) - 12582912.0f; /* round to nearest integer */
    float f = xc - fn * 0.693359375f;
    f = f - fn * -2.12194440e-4f;
    float z = f * f;
    float y = ((((1.9875691500e-4f * f + 1.3981999507e-3f) * f + 8.3334519073e-3f) * f +
                4.1665795894e-2f) *
                   f +
               1.6666665459e-1f) *
                  f +
              5.0000001201e-1f;
    y = y * z + f + 1.0f;
    int32_t n = (int32_t)fn;
    uint32_t bits = (uint32_t)(n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    float r = y * scale;
    r = x < lo ? 0.0f : r;
    return x > hi ? INFINITY : r;
}

#define SL 16 /* partial maxima / sums per row */

static inline float row_max(const float *s, int32_t n)
{
    float m[SL];
    for (int l = 0; l < SL; l++)
        m[l] = -INFINITY;
    const int32_t nv = n - n % SL;
    for (int32_t t = 0; t < nv; t += SL)
        for (int l = 0; l < SL; l++)
            m[l] = s[t + l] > m[l] ? s[t + l] : m[l];
    float r = -INFINITY;
    for (int32_t t = nv; t < n; t++)
        r = s[t] > r ? s[t] : r;
    for (int l = 0; l < SL; l++)
        r = m[l] > r ? m[l] : r;
    return r;
}

/* s[t] = e^(s[t] - m) for t < n; returns their sum. */
static inline float exp_row(float *s, int32_t n, float m)
{
    float acc[SL] = {0};
    const int32_t nv = n - n % SL;
    for (int32_t t = 0; t < nv; t += SL)
        for (int l = 0; l < SL; l++) {
            float e = fast_expf(s[t + l] - m);
            s[t + l] = e;
            acc[l] += e;
        }
    float r = 0.0f;
    for (int32_t t = nv; t < n; t++) {
        s[t] = fast_expf(s[t] - m);
        r += s[t];
    }
    for (int l = 0; l < SL; l++)
        r += acc[l];
    return r;
}

static size_t scratch_floats(int32_t M, int32_t hd)
{
    /* Qp, O: M*hd each; S: M*KC; K, V chunks: KC*hd each; m, l, lim: M each */
    return (size_t)M * hd * 2 + (size_t)M * KC + (size_t)KC * hd * 2 + (size_t)M * 3;
}

GS_CPU_HOT static void run_unit(attn_job *J, const attn_unit *u, int tid)
{
    const attn_item *it = &J->items[u->item];
    const int32_t G = J->G, hd = J->hd, M = (it->r1 - it->r0) * G;
    float *Qp = gs_cpu_scratch(J->c, tid);
    float *O = Qp + (size_t)M * hd, *S = O + (size_t)M * hd, *kb = S + (size_t)M * KC;
    float *vb = kb + (size_t)KC * hd, *mrow = vb + (size_t)KC * hd, *lrow = mrow + M;
    int32_t *lim = (int32_t *)(lrow + M);
    const int64_t qbase = J->cu[it->seq];

    for (int32_t r = it->r0; r < it->r1; r++) {
        const float *qr = gs_cpu_row(J->q, qbase + r) + (int64_t)it->g * G * hd;
        memcpy(Qp + (size_t)(r - it->r0) * G * hd, qr, sizeof(float) * (size_t)G * hd);
        const int32_t pos = row_pos(J, it->seq, r);
        for (int32_t h = 0; h < G; h++)
            lim[(r - it->r0) * G + h] = pos;
    }
    for (int32_t i = 0; i < M; i++) {
        mrow[i] = -INFINITY;
        lrow[i] = 0.0f;
    }
    memset(O, 0, sizeof(float) * (size_t)M * hd);

    const int32_t c0 = u->split * it->split_len;
    const int32_t c1 = c0 + it->split_len < it->k_end ? c0 + it->split_len : it->k_end;
    for (int32_t k0 = c0; k0 < c1; k0 += KC) {
        const int32_t nk = c1 - k0 < KC ? c1 - k0 : KC;
        const float *kp, *vp;
        int64_t ldk, ldv;
        key_chunk(J, it, k0, nk, kb, vb, &kp, &vp, &ldk, &ldv);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, nk, hd, J->scale, Qp, hd, kp,
                    (int)ldk, 0.0f, S, nk);
        for (int32_t i = 0; i < M; i++) {
            float *s = S + (size_t)i * nk;
            int32_t vis = lim[i] - k0 + 1;
            vis = vis < 0 ? 0 : (vis > nk ? nk : vis);
            const float mx = row_max(s, vis);
            for (int32_t t = vis; t < nk; t++)
                s[t] = 0.0f;
            if (vis == 0 || mx == -INFINITY) {
                for (int32_t t = 0; t < vis; t++)
                    s[t] = 0.0f;
                continue;
            }
            const float mnew = mx > mrow[i] ? mx : mrow[i];
            const float corr = expf(mrow[i] - mnew); /* 0 when mrow was -inf */
            const float sum = exp_row(s, vis, mnew);
            lrow[i] = lrow[i] * corr + sum;
            mrow[i] = mnew;
            if (corr != 1.0f) {
                float *o = O + (size_t)i * hd;
                for (int32_t d = 0; d < hd; d++)
                    o[d] *= corr;
            }
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, hd, nk, 1.0f, S, nk, vp, (int)ldv,
                    1.0f, O, hd);
    }

    if (it->n_split > 1) {
        float *p = J->part + it->part + (int64_t)u->split * M * (hd + 2);
        memcpy(p, O, sizeof(float) * (size_t)M * hd);
        memcpy(p + (size_t)M * hd, mrow, sizeof(float) * (size_t)M);
        memcpy(p + (size_t)M * hd + M, lrow, sizeof(float) * (size_t)M);
        return;
    }
    for (int32_t i = 0; i < M; i++) {
        const int32_t r = it->r0 + i / G, h = it->g * G + i % G;
        float *o = gs_cpu_row(J->out, qbase + r) + (int64_t)h * hd;
        const float inv = lrow[i] > 0.0f ? 1.0f / lrow[i] : 0.0f;
        for (int32_t d = 0; d < hd; d++)
            o[d] = O[(size_t)i * hd + d] * inv;
    }
}

static void units_fn(void *ctx, int64_t i0, int64_t i1, int tid)
{
    attn_job *J = ctx;
    for (int64_t i = i0; i < i1; i++)
        run_unit(J, &J->units[i], tid);
}

/* Merges the split partials of items [i0, i1) (items with n_split == 1
 * are already written). */
static void merge_fn(void *ctx, int64_t i0, int64_t i1, int tid)
{
    attn_job *J = ctx;
    const int32_t G = J->G, hd = J->hd;
    for (int64_t ii = i0; ii < i1; ii++) {
        const attn_item *it = &J->items[ii];
        if (it->n_split <= 1)
            continue;
        const int32_t M = (it->r1 - it->r0) * G;
        const float *base = J->part + it->part;
        const int64_t stride = (int64_t)M * (hd + 2);
        const int64_t qbase = J->cu[it->seq];
        for (int32_t i = 0; i < M; i++) {
            float mx = -INFINITY;
            for (int32_t s = 0; s < it->n_split; s++) {
                float m = base[s * stride + (int64_t)M * hd + i];
                mx = m > mx ? m : mx;
            }
            const int32_t r = it->r0 + i / G, h = it->g * G + i % G;
            float *o = gs_cpu_row(J->out, qbase + r) + (int64_t)h * hd;
            for (int32_t d = 0; d < hd; d++)
                o[d] = 0.0f;
            float l = 0.0f;
            if (mx != -INFINITY)
                for (int32_t s = 0; s < it->n_split; s++) {
                    const float *p = base + s * stride;
                    float m = p[(int64_t)M * hd + i];
                    if (m == -INFINITY)
                        continue;
                    float w = expf(m - mx);
                    l += p[(int64_t)M * hd + M + i] * w;
                    for (int32_t d = 0; d < hd; d++)
                        o[d] += p[(size_t)i * hd + d] * w;
                }
            const float inv = l > 0.0f ? 1.0f / l : 0.0f;
            for (int32_t d = 0; d < hd; d++)
                o[d] *= inv;
        }
    }
}

/* Builds items and units for n_seqs sequences, runs both passes. */
static int attn_run(attn_job *J, int32_t n_seqs)
{
    gs_cpu *c = J->c;
    const int32_t G = J->G, hd = J->hd;
    const int32_t rb = G >= M_TARGET ? 1 : M_TARGET / G;
    int64_t n_items = 0;
    for (int32_t s = 0; s < n_seqs; s++) {
        int32_t nq = J->cu[s + 1] - J->cu[s];
        n_items += (int64_t)J->n_kv * ((nq + rb - 1) / rb);
    }
    if (n_items == 0)
        return 0;
    J->items = malloc(sizeof *J->items * (size_t)n_items);
    if (!J->items)
        return GS_ENOMEM;
    int64_t ni = 0;
    for (int32_t s = 0; s < n_seqs; s++) {
        int32_t nq = J->cu[s + 1] - J->cu[s];
        for (int32_t r0 = 0; r0 < nq; r0 += rb)
            for (int32_t g = 0; g < J->n_kv; g++) {
                attn_item *it = &J->items[ni++];
                it->seq = s;
                it->g = g;
                it->r0 = r0;
                it->r1 = r0 + rb < nq ? r0 + rb : nq;
                it->k_end = row_pos(J, s, it->r1 - 1) + 1;
                it->n_split = 1;
                it->split_len = it->k_end;
                it->part = 0;
            }
    }
    /* Split long key ranges when there are too few items for the threads. */
    int64_t want = 2 * (int64_t)c->n_threads;
    int64_t n_units = 0, part_floats = 0;
    for (int64_t i = 0; i < n_items; i++) {
        attn_item *it = &J->items[i];
        if (n_items < want && it->k_end > 2 * MIN_SPLIT) {
            int64_t ns = (want + n_items - 1) / n_items;
            int64_t max_ns = it->k_end / MIN_SPLIT;
            ns = ns < max_ns ? ns : max_ns;
            if (ns > 1) {
                int32_t len = (int32_t)((it->k_end + ns - 1) / ns);
                len = (len + 15) & ~15;
                it->split_len = len;
                it->n_split = (it->k_end + len - 1) / len;
            }
        }
        if (it->n_split > 1) {
            it->part = part_floats;
            part_floats += (int64_t)it->n_split * (it->r1 - it->r0) * G * (hd + 2);
        }
        n_units += it->n_split;
    }
    int rc = 0;
    J->units = malloc(sizeof *J->units * (size_t)n_units);
    J->part = part_floats ? malloc(sizeof(float) * (size_t)part_floats) : NULL;
    if (!J->units || (part_floats && !J->part) ||
        gs_cpu_scratch_reserve(c, sizeof(float) * scratch_floats(rb * G, hd))) {
        rc = GS_ENOMEM;
        goto done;
    }
    int64_t nu = 0;
    for (int64_t i = 0; i < n_items; i++)
        for (int32_t s = 0; s < J->items[i].n_split; s++)
            J->units[nu++] = (attn_unit){(int32_t)i, s};
    gs_cpu_parallel(c, n_units, 1, units_fn, J);
    if (part_floats)
        gs_cpu_parallel(c, n_items, 1, merge_fn, J);
done:
    free(J->items);
    free(J->units);
    free(J->part);
    return rc;
}

int gs_cpu_attention(gs_backend *be, gs_mat out, gs_mat q, gs_mat k, gs_mat v, const int32_t *cu,
                     int32_t n_seqs, int32_t max_len, const gs_attn_params *p)
{
    if (cu[0] < 0)
        goto bad;
    for (int32_t s = 0; s < n_seqs; s++)
        if (cu[s + 1] < cu[s] || cu[s + 1] > q.rows || cu[s + 1] - cu[s] > max_len)
            goto bad;
    attn_job J = {gs_cpu_of(be), out,           q,         k,        v,  p->n_heads / p->n_kv_heads,
                  p->head_dim,   p->n_kv_heads, p->causal, p->scale, cu, NULL,
                  NULL,          NULL,          NULL,      NULL};
    return attn_run(&J, n_seqs);
bad:
    gs_log_error("gs_k_attention: cu_seqlens are not increasing within [0, %lld] with segments "
                 "<= max_len %d",
                 (long long)q.rows, max_len);
    return GS_EINVAL;
}

int gs_cpu_attention_paged(gs_backend *be, gs_mat out, gs_mat q, const gs_kv_layer *kv,
                           const gs_paged_batch *b, const gs_attn_params *p)
{
    const int32_t ps = kv->page_size;
    if (b->cu_q[0] < 0) {
        gs_log_error("gs_k_attention_paged: cu_q[0] = %d", b->cu_q[0]);
        return GS_EINVAL;
    }
    for (int32_t s = 0; s < b->n_seqs; s++) {
        const int32_t a = b->cu_q[s], e = b->cu_q[s + 1], L = b->kv_len[s];
        if (e < a || e > q.rows || L < e - a || e - a > b->max_q || L > b->max_kv ||
            (int64_t)L > (int64_t)b->max_blocks * ps) {
            gs_log_error("gs_k_attention_paged: sequence %d: q rows [%d, %d) of %lld, kv_len %d "
                         "(max_q %d, max_kv %d, %d blocks of %d)",
                         s, a, e, (long long)q.rows, L, b->max_q, b->max_kv, b->max_blocks, ps);
            return GS_EINVAL;
        }
        const int32_t *bt = b->block_table + (int64_t)s * b->max_blocks;
        for (int32_t blk = 0; blk < (L + ps - 1) / ps; blk++)
            if (bt[blk] < 0 || bt[blk] >= kv->n_pages) {
                gs_log_error("gs_k_attention_paged: sequence %d block %d -> page %d of %d", s, blk,
                             bt[blk], kv->n_pages);
                return GS_EINVAL;
            }
    }
    attn_job J = {gs_cpu_of(be),
                  out,
                  q,
                  q,
                  q,
                  p->n_heads / p->n_kv_heads,
                  p->head_dim,
                  p->n_kv_heads,
                  p->causal,
                  p->scale,
                  b->cu_q,
                  kv,
                  b,
                  NULL,
                  NULL,
                  NULL};
    return attn_run(&J, b->n_seqs);
}

/* ---- kv_store ----------------------------------------------------------- */

typedef struct {
    const gs_kv_layer *kv;
    gs_mat k, v;
    const int32_t *slots;
} store_job;

static void store_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    store_job *J = ctx;
    const int64_t w = J->k.cols;
    for (int64_t r = r0; r < r1; r++) {
        const int32_t slot = J->slots[r];
        if (slot < 0)
            continue;
        memcpy((float *)J->kv->k + (int64_t)slot * w, gs_cpu_row(J->k, r),
               sizeof(float) * (size_t)w);
        memcpy((float *)J->kv->v + (int64_t)slot * w, gs_cpu_row(J->v, r),
               sizeof(float) * (size_t)w);
    }
}

int gs_cpu_kv_store(gs_backend *be, const gs_kv_layer *kv, gs_mat k, gs_mat v, const int32_t *slots)
{
    gs_cpu *c = gs_cpu_of(be);
    const int64_t n_slots = (int64_t)kv->n_pages * kv->page_size;
    for (int64_t i = 0; i < k.rows; i++)
        if (slots[i] >= n_slots) {
            gs_log_error("gs_k_kv_store: slots[%lld] = %d outside the cache's %lld slots",
                         (long long)i, slots[i], (long long)n_slots);
            return GS_EINVAL;
        }
    store_job J = {kv, k, v, slots};
    gs_cpu_parallel(c, k.rows, gs_cpu_grain(c, k.rows, 2, (8192 + k.cols - 1) / k.cols), store_rows,
                    &J);
    return 0;
}
