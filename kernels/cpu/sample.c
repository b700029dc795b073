/* sample.c - gs_k_sample on the CPU: the GPU kernel's semantics
 * (kernels/cuda/sample_kernel.cuh) step for step, so that the same
 * (seed, offset, logits) picks the same id on both backends (up to the
 * rounding of expf, which differs between libm and CUDA by an ulp or two).
 *
 * Per row, on one thread of the pool (rows in parallel):
 *   1. penalties over the row's listed ids (in place; the row is scratch);
 *   2. argmax: largest value, lowest id, NaN never wins (16 independent
 *      lanes, then the first id holding the maximum); none -> -1; greedy
 *      rows stop here;
 *   3. candidates: z = (l - max) / T, kept when z >= ln(1e-12), compacted
 *      in id order with a key that sorts like z (a vectorised pass, then a
 *      branch-free pack);
 *   4. top-k: the exact k-th largest p among the few candidates near the
 *      k-th largest z (a |z| histogram, then a margin wider than any expf
 *      rounding), so only those get an expf; without top-k every
 *      candidate gets p = expf(z); masses p * 2^40 rounded to nearest (the
 *      GPU's fixed point);
 *   5. top-p, 6. min-p: thresholds by radix select over the float bits of
 *      p (4 passes of 8 bits, each over the survivors of the last), as on
 *      the GPU; every id whose key equals a threshold is kept (exact
 *      boundary ties);
 *   7. draw: target = gs_sample_uniform(seed, offset) * kept mass, scanned
 *      over the kept candidates in id order.
 * Only candidates are selected, never the whole vocabulary. Ids that are
 * not candidates have p = 0 (mass 0) on the GPU too, so leaving them out
 * changes no threshold and no draw.
 *
 * Penalty ids are checked up front (GS_EINVAL with a log line, nothing
 * written); a row with nothing finite gets -1 and the call still succeeds.
 * Scratch: 20 bytes per vocabulary entry per thread (gs_cpu_scratch),
 * reserved only when some row samples.
 * Threading: gs_cpu_parallel over rows. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "kernels/cpu/cpu_impl.h"
#include "kernels/philox.h"

#define SMP_CUTOFF (-27.6310211f) /* ln(1e-12) */
#define SMP_LANES 16

double gs_sample_uniform(uint64_t seed, uint64_t offset)
{
    return gs_philox_uniform(seed, offset);
}

static inline uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* p * 2^40 rounded to the nearest integer, ties to even, as __float2ull_rn
 * on the GPU: p * 2^40 is exact in double and below 2^52, so adding 2^52
 * rounds it to an integer (default rounding mode) that the low 52 bits of
 * the sum hold. Branch-free, so loops over it vectorise. */
static inline uint64_t fixmass(float p)
{
    const double d = (double)p * 1099511627776.0 + 4503599627370496.0; /* 2^40, 2^52 */
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    return b & ((UINT64_C(1) << 52) - 1);
}

/* The largest value of x[0..n) that is not NaN (-inf when none), over 16
 * independent lanes (no loop-carried chain through one register). */
static float row_max(const float *x, int32_t n)
{
    float m[SMP_LANES];
    for (int j = 0; j < SMP_LANES; j++)
        m[j] = -INFINITY;
    int32_t i = 0;
    for (; i + SMP_LANES <= n; i += SMP_LANES)
        for (int j = 0; j < SMP_LANES; j++) {
            const float v = x[i + j];
            m[j] = v > m[j] ? v : m[j];
        }
    float bv = -INFINITY;
    for (; i < n; i++)
        bv = x[i] > bv ? x[i] : bv;
    for (int j = 0; j < SMP_LANES; j++)
        bv = m[j] > bv ? m[j] : bv;
    return bv;
}

/* The largest value's lowest id (NaN never wins), -1 when no value is
 * above -inf; *best its value. (-0 and +0 compare equal, as on the GPU.) */
static int32_t row_argmax(const float *x, int32_t n, float *best)
{
    const float bv = row_max(x, n);
    if (!(bv > -INFINITY))
        return -1;
    int32_t i = 0;
    while (i < n && !(x[i] == bv))
        i++;
    *best = bv;
    return i;
}

/* Per-thread scratch of a sampled row (cap entries each). */
typedef struct {
    uint64_t *mass; /* fixed-point masses */
    uint32_t *key;  /* float bits of p */
    int32_t *id;    /* candidate ids, ascending */
    int32_t *work;  /* radix select survivors */
} smp_cands;

static inline float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* z <= 0 as a key that sorts like z (larger z, larger key): ~bits(|z|).
 * Exact both ways: z = -|z| (an exact zero maps to -0, and expf(-0) = 1). */
static inline uint32_t zkey(float z)
{
    return ~f2u(fabsf(z));
}

static inline float zkey_abs(uint32_t k)
{
    return u2f(~k);
}

/* Step 3: compacts the candidates of x[0..V) (z >= ln 1e-12) in id order:
 * ids and zkey(z); returns how many. Two passes that vectorise or nearly:
 * every id's zkey (0 for non-candidates: a candidate's is above 2^31) into
 * c->key, then a branch-free pack in place that skips all-zero blocks. */
static int32_t compact(const float *x, int32_t V, float bv, float inv_t, smp_cands *c)
{
    uint32_t *key = c->key;
    int32_t *id = c->id;
    for (int32_t i = 0; i < V; i++) {
        const float z = (x[i] - bv) * inv_t;
        key[i] = z >= SMP_CUTOFF ? zkey(z) : 0u; /* NaN compares false */
    }
    int32_t n = 0, i0 = 0;
    for (; i0 + SMP_LANES <= V; i0 += SMP_LANES) {
        uint32_t any = 0;
        for (int j = 0; j < SMP_LANES; j++)
            any |= key[i0 + j];
        if (!any)
            continue;
        for (int j = 0; j < SMP_LANES; j++) { /* n <= i0 + j: in place is safe */
            const uint32_t k = key[i0 + j];
            id[n] = i0 + j;
            key[n] = k;
            n += k != 0;
        }
    }
    for (; i0 < V; i0++) {
        const uint32_t k = key[i0];
        id[n] = i0;
        key[n] = k;
        n += k != 0;
    }
    return n;
}

/* Turns the zkeys of c[0..n) into keys of p = expf(z). */
static void zkeys_to_p(smp_cands *c, int32_t n)
{
    for (int32_t i = 0; i < n; i++)
        c->key[i] = f2u(expf(-zkey_abs(c->key[i])));
}

/* Top-k without an expf per candidate (k < n). A histogram of |z| in steps
 * of 1/64 gives a bound t with at least k candidates at |z| < t; the
 * candidates with |z| <= t + 2^-10 are kept (in place, id order) with
 * their zkeys turned into keys of p; returns how many. Every id whose p
 * can reach the k-th largest p is among them: k ids have p >= e^-t (1 - e)
 * and an id beyond the margin has p <= e^-t (1 + e) e^(-2^-10), smaller
 * for any expf with a relative error e below 4e-4 (libm's is below 1e-7).
 * So the exact top-k over p, ties included, can be taken over this subset;
 * when the |z| are spread (real logits) it is little more than k ids. */
static int32_t keep_near_top(smp_cands *c, int32_t n, int32_t k)
{
    enum { NB = 28 * 64 }; /* |z| <= 27.64 */
    uint32_t h[4][NB];
    memset(h, 0, sizeof h);
    /* floor(64 |z|): the scaling is exact; four counters against store stalls */
#define SMP_ZB(i) ((int)(zkey_abs(c->key[i]) * 64.0f))
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const int b0 = SMP_ZB(i), b1 = SMP_ZB(i + 1), b2 = SMP_ZB(i + 2), b3 = SMP_ZB(i + 3);
        h[0][b0]++;
        h[1][b1]++;
        h[2][b2]++;
        h[3][b3]++;
    }
    for (; i < n; i++)
        h[0][SMP_ZB(i)]++;
#undef SMP_ZB
    int64_t cum = 0;
    int b = 0;
    for (; b < NB - 1; b++) {
        cum += (int64_t)h[0][b] + h[1][b] + h[2][b] + h[3][b];
        if (cum >= k)
            break;
    }
    const float lim = (float)(b + 1) * (1.0f / 64.0f) + 0x1p-10f;
    int32_t m = 0;
    for (i = 0; i < n; i++) {
        const float a = zkey_abs(c->key[i]);
        if (a <= lim) {
            c->id[m] = c->id[i];
            c->key[m] = f2u(expf(-a));
            m++;
        }
    }
    return m;
}

/* The candidates' masses (from their keys). */
static void masses(smp_cands *c, int32_t n)
{
    for (int32_t i = 0; i < n; i++) {
        float p;
        memcpy(&p, &c->key[i], sizeof p);
        c->mass[i] = fixmass(p);
    }
}

/* Sum of the masses of the candidates with key >= floor_key. */
static uint64_t mass_above(const smp_cands *c, int32_t n, uint32_t floor_key)
{
    uint64_t s = 0;
    for (int32_t i = 0; i < n; i++)
        s += c->key[i] >= floor_key ? c->mass[i] : 0u;
    return s;
}

/* Adds the weights of entries idx[0..m) (idx NULL: 0..m) to the histogram
 * of key byte `shift`: 1 each (mass NULL) or their mass. Four histograms
 * in turn, so that runs of equal bytes (p values share exponents) do not
 * serialise on one counter. */
static void hist4(uint64_t h[4][256], const uint32_t *key, const uint64_t *mass, const int32_t *idx,
                  int32_t m, int shift)
{
    int32_t j = 0;
    for (; j + 4 <= m; j += 4)
        for (int l = 0; l < 4; l++) {
            const int32_t i = idx ? idx[j + l] : j + l;
            h[l][(key[i] >> shift) & 255u] += mass ? mass[i] : 1u;
        }
    for (; j < m; j++) {
        const int32_t i = idx ? idx[j] : j;
        h[0][(key[i] >> shift) & 255u] += mass ? mass[i] : 1u;
    }
}

/* Radix select over the keys of c[0..n) that are >= floor_key, walking
 * from the top: the largest key K with weight(keys >= K) >= target, where
 * a key weighs 1 (by_mass 0) or its mass. That K does not depend on how it
 * is found; this walks bytes as the GPU's radix_select does, over the
 * candidates only (the other ids weigh nothing there either; callers make
 * sure target is reachable among the candidates). Each pass keeps the
 * survivors' indices in c->work. */
static uint32_t cand_select(const smp_cands *c, int32_t n, uint32_t floor_key, uint64_t target,
                            int by_mass)
{
    const uint32_t *key = c->key;
    const uint64_t *mass = by_mass ? c->mass : NULL;
    int32_t *work = c->work;
    const int32_t *idx = NULL; /* NULL: every entry */
    int32_t m = n;
    if (floor_key > 0) {
        m = 0;
        for (int32_t i = 0; i < n; i++) {
            work[m] = i;
            m += key[i] >= floor_key;
        }
        idx = work;
    }
    uint64_t hist[4][256], above = 0;
    uint32_t prefix = 0, mask = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        memset(hist, 0, sizeof hist);
        hist4(hist, key, mass, idx, m, shift);
        int b = 255;
        for (; b > 0; b--) {
            const uint64_t h = hist[0][b] + hist[1][b] + hist[2][b] + hist[3][b];
            if (above + h >= target)
                break;
            above += h;
        }
        prefix |= (uint32_t)b << shift;
        mask |= 255u << shift;
        if (shift == 0)
            break;
        int32_t m2 = 0;
        for (int32_t j = 0; j < m; j++) { /* in place: m2 <= j */
            const int32_t i = idx ? idx[j] : j;
            work[m2] = i;
            m2 += (key[i] & mask) == prefix;
        }
        idx = work;
        m = m2;
    }
    return prefix;
}

typedef struct {
    gs_cpu *cpu;
    gs_mat logits;
    int32_t *out;
    const gs_sample_row *rows;
    const int32_t *pen_off, *pen_ids, *pen_cnt;
} smp_job;

static int32_t sample_one(const smp_job *J, int64_t r, void *scratch)
{
    const int32_t V = (int32_t)J->logits.cols;
    float *x = gs_cpu_row(J->logits, r);
    const gs_sample_row P = J->rows[r];

    /* 1. penalties */
    if (J->pen_off) {
        const int rep = P.repetition_penalty > 0.0f && P.repetition_penalty != 1.0f;
        for (int32_t k = J->pen_off[r]; k < J->pen_off[r + 1]; k++) {
            float *l = &x[J->pen_ids[k]];
            float v = *l;
            if (rep)
                v = v > 0.0f ? v / P.repetition_penalty : v * P.repetition_penalty;
            const int32_t cnt = J->pen_cnt[k];
            if (cnt > 0) /* fmaf: the GPU contracts this into one FMA */
                v -= fmaf(P.frequency_penalty, (float)cnt, P.presence_penalty);
            *l = v;
        }
    }

    /* 2. argmax */
    float bv = 0.0f;
    const int32_t best = row_argmax(x, V, &bv);
    if (best < 0 || !(P.temperature > 0.0f))
        return best;

    /* 3. candidates; 4. top-k (n <= k: every candidate) */
    const size_t cap = (size_t)V;
    smp_cands c = {(uint64_t *)scratch, (uint32_t *)((uint64_t *)scratch + cap), NULL, NULL};
    c.id = (int32_t *)(c.key + cap);
    c.work = c.id + cap;
    int32_t n = compact(x, V, bv, 1.0f / P.temperature, &c);
    if (n == 0)
        return best; /* nothing has mass (a +inf maximum): as the GPU */
    uint32_t floor_key = 0;
    if (P.top_k > 0 && P.top_k < V && P.top_k < n) {
        n = keep_near_top(&c, n, P.top_k);
        floor_key = cand_select(&c, n, 0, (uint64_t)P.top_k, 0);
    } else {
        zkeys_to_p(&c, n);
    }
    masses(&c, n);

    /* 5. top-p, 6. min-p */
    if (P.top_p > 0.0f && P.top_p < 1.0f) {
        const uint64_t s = mass_above(&c, n, floor_key);
        uint64_t target = (uint64_t)((double)P.top_p * (double)s);
        if (target < 1)
            target = 1;
        floor_key = cand_select(&c, n, floor_key, target, 1);
    }
    if (P.min_p > 0.0f) {
        const uint32_t mk = f2u(P.min_p > 1.0f ? 1.0f : P.min_p);
        floor_key = mk > floor_key ? mk : floor_key;
    }

    /* 7. draw over the kept candidates in id order */
    const uint64_t total = mass_above(&c, n, floor_key);
    if (total == 0)
        return best;
    uint64_t target = (uint64_t)(gs_philox_uniform(P.seed, P.offset) * (double)total);
    if (target >= total)
        target = total - 1;
    uint64_t acc = 0;
    for (int32_t i = 0; i < n; i++) {
        if (c.key[i] < floor_key)
            continue;
        acc += c.mass[i];
        if (acc > target)
            return c.id[i];
    }
    return best; /* not reached: acc ends at total > target */
}

static void sample_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    const smp_job *J = ctx;
    void *scratch = gs_cpu_scratch(J->cpu, tid);
    for (int64_t r = r0; r < r1; r++)
        J->out[r] = sample_one(J, r, scratch);
}

int gs_cpu_sample(gs_backend *be, int32_t *out_ids, gs_mat logits, const gs_sample_row *rows,
                  const int32_t *pen_off, const int32_t *pen_ids, const int32_t *pen_cnt)
{
    gs_cpu *c = gs_cpu_of(be);
    const int64_t R = logits.rows, V = logits.cols;
    if (R == 0)
        return 0;
    if (pen_off) {
        if (pen_off[0] < 0) {
            gs_log_error("gs_k_sample: pen_off[0] = %d is negative", pen_off[0]);
            return GS_EINVAL;
        }
        for (int64_t r = 0; r < R; r++) {
            if (pen_off[r + 1] < pen_off[r]) {
                gs_log_error("gs_k_sample: pen_off[%lld] = %d below pen_off[%lld] = %d",
                             (long long)r + 1, pen_off[r + 1], (long long)r, pen_off[r]);
                return GS_EINVAL;
            }
            for (int32_t k = pen_off[r]; k < pen_off[r + 1]; k++)
                if (pen_ids[k] < 0 || pen_ids[k] >= V) {
                    gs_log_error("gs_k_sample: row %lld: pen_ids[%d] = %d outside the %lld logits",
                                 (long long)r, k, pen_ids[k], (long long)V);
                    return GS_EINVAL;
                }
        }
    }
    int sampled = 0;
    for (int64_t r = 0; r < R && !sampled; r++)
        sampled = rows[r].temperature > 0.0f;
    if (sampled) {
        const size_t per = sizeof(uint64_t) + 3 * sizeof(int32_t); /* mass, key, id, work */
        if (gs_cpu_scratch_reserve(c, per * (size_t)V) != 0) {
            gs_log_error("gs_k_sample: out of memory for %lld candidates per thread", (long long)V);
            return GS_ENOMEM;
        }
    }
    smp_job J = {c, logits, out_ids, rows, pen_off, pen_ids, pen_cnt};
    gs_cpu_parallel(c, R, gs_cpu_grain(c, R, 4, 1), sample_rows, &J);
    return 0;
}
