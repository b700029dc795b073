/* gemm_bf16.c - prefill GEMMs with BF16 weights on the CPU's BF16 matrix
 * units, through oneDNN's matmul primitive (see gemm_bf16.h for the
 * contract). Owns: the process-wide oneDNN engine, the run-time check that
 * oneDNN has a BF16 matrix kernel for this CPU, and the
 * GS_TUNE_CPU_GEMM_F32 switch. Does not own: the F32 fallback and the
 * GEMV path (matmul.c), threads and scratch (backend.c).
 *
 * Why oneDNN, and which kernel. A BF16 dot-product unit (AVX512-BF16's
 * vdpbf16ps, AMX tiles, Arm BFMMLA) does two to sixteen times the F32 FMA
 * work per cycle, but only on BF16 operands. Debian's OpenBLAS 0.3.21 is
 * built without cblas_sbgemm (its header declares it, the library does not
 * export it), so oneDNN is the maintained library that reaches these units.
 * Its "brg" (batch-reduce GEMM) matmul is the one that uses them; at first
 * use a small problem is planned and the path stays off unless oneDNN picks
 * such a kernel (not a reference or emulated one). On x86 it also needs a
 * CPU with at least AVX512-BF16 (oneDNN's avx512_core_bf16 or AMX).
 *
 * One call:
 *  1. x (F32, any row stride) is rounded to BF16 once into a contiguous
 *     [m, k] buffer, rows in parallel: oneDNN 2.6 has no f32 x bf16 matmul.
 *  2. The output is cut into work items (row block, column block) exactly
 *     as matmul.c's F32 GEMM does, a multiple of the thread count where
 *     possible. Each item runs one single-threaded oneDNN matmul:
 *     xb[rows] (bf16) . W[cols]^T (bf16, read in place: the [n, k] weight
 *     seen as a [k, n] matrix with strides (1, k), the way it is stored,
 *     never written, never copied whole) into a dense F32 tile in the
 *     thread's scratch, then out = (accum ? out : 0) + tile + bias.
 *     oneDNN's brg kernels take only a dense destination, hence the tile;
 *     copying it costs far less than the k-deep products behind it.
 *  3. oneDNN packs each item's weight panel into its blocked layout on the
 *     fly, as matmul.c widens BF16 panels for SGEMM. Packing every weight
 *     once at load saves little (1-3 % at 758 x 512 x 4096 on an
 *     AVX512-BF16 core) and needs a second copy of the weight (decode's
 *     GEMV reads the plain layout): twice the memory, so it is not done.
 *
 * Threading. The backend's pool runs the items; oneDNN runs single-threaded
 * inside each (as OpenBLAS does in matmul.c). Debian builds oneDNN on
 * OpenMP, whose team size is a per-thread setting: every thread that plans
 * or runs a primitive here first sets it to 1 (omp_set_num_threads), or
 * oneDNN would start a team of all cores inside every work item. Plans are
 * made on the calling thread before the items start (oneDNN sizes its
 * blocking and scratchpad by the thread count at that moment), and the
 * scratchpad is ours ("user" mode, in the thread's scratch) because
 * oneDNN's shared library scratchpad is not safe for concurrent
 * executions. The same item split and kernels run for a given thread count
 * and shape, so results are deterministic. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "kernels/cpu/gemm_bf16.h"

static atomic_int g_force_f32; /* GS_TUNE_CPU_GEMM_F32 */

void gs_cpu_set_tuning(gs_backend *be, const gs_backend_tuning *t)
{
    (void)be;
    atomic_store(&g_force_f32, (t->flags & GS_TUNE_CPU_GEMM_F32) != 0);
}

#ifndef GS_HAVE_DNNL

int gs_cpu_gemm_bf16(gs_cpu *c, gs_mat out, gs_mat x, const gs_cpu_weight *w, const float *bias,
                     int accum)
{
    (void)c, (void)out, (void)x, (void)w, (void)bias, (void)accum;
    return GS_ENOTSUP;
}

int gs_cpu_gemm_bf16_active(void)
{
    return 0;
}

#else /* GS_HAVE_DNNL */

#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdio.h>

/* Work item blocking, as matmul.c's F32 GEMM (GEMM_MB, GEMM_NB). */
#define BF_MB 512 /* rows of x per item when m is large */
#define BF_NB 512 /* widest column block */

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static dnnl_engine_t g_engine; /* process lifetime: made once, never freed */
static int g_usable;           /* the probe found a BF16 matrix kernel */

/* A planned matmul: x rows [mr, k] bf16 (row stride k) . W cols [k, nc]
 * bf16 (strides 1, k) -> dense [mr, nc] F32. */
typedef struct {
    dnnl_primitive_t prim;
    dnnl_memory_desc_t src, wei, dst, scr;
    size_t scr_bytes;
} bf_plan;

static void plan_free(bf_plan *p)
{
    if (p->prim)
        dnnl_primitive_destroy(p->prim);
    p->prim = NULL;
}

/* Plans one shape on the calling thread; impl (may be NULL) gets oneDNN's
 * name for the kernel it chose (impl_len bytes). 0 or GS_ENOTSUP /
 * GS_ENOMEM. */
static int plan_make(bf_plan *p, int64_t mr, int64_t nc, int64_t k, char *impl, size_t impl_len)
{
    memset(p, 0, sizeof *p);
    omp_set_num_threads(1); /* the plan is for one thread (see the top) */
    dnnl_dims_t sd = {mr, k}, ss = {k, 1}, wd = {k, nc}, ws = {1, k}, dd = {mr, nc}, ds = {nc, 1};
    if (dnnl_memory_desc_init_by_strides(&p->src, 2, sd, dnnl_bf16, ss) != dnnl_success ||
        dnnl_memory_desc_init_by_strides(&p->wei, 2, wd, dnnl_bf16, ws) != dnnl_success ||
        dnnl_memory_desc_init_by_strides(&p->dst, 2, dd, dnnl_f32, ds) != dnnl_success)
        return GS_ENOTSUP;
    dnnl_matmul_desc_t md;
    if (dnnl_matmul_desc_init(&md, &p->src, &p->wei, NULL, &p->dst) != dnnl_success)
        return GS_ENOTSUP;
    dnnl_primitive_attr_t attr = NULL;
    if (dnnl_primitive_attr_create(&attr) != dnnl_success)
        return GS_ENOMEM;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t st = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (st == dnnl_success)
        st = dnnl_primitive_desc_create(&pd, &md, attr, g_engine, NULL);
    dnnl_primitive_attr_destroy(attr);
    if (st != dnnl_success)
        return st == dnnl_out_of_memory ? GS_ENOMEM : GS_ENOTSUP;
    if (impl) {
        const char *name = NULL;
        if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name) != dnnl_success ||
            !name)
            name = "?";
        snprintf(impl, impl_len, "%s", name);
    }
    const dnnl_memory_desc_t *scr = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    if (scr)
        p->scr = *scr;
    p->scr_bytes = scr ? dnnl_memory_desc_get_size(scr) : 0;
    st = dnnl_primitive_create(&p->prim, pd);
    dnnl_primitive_desc_destroy(pd);
    if (st != dnnl_success) {
        p->prim = NULL;
        return st == dnnl_out_of_memory ? GS_ENOMEM : GS_ENOTSUP;
    }
    return 0;
}

/* Once per process: does this CPU and oneDNN build have a BF16 matrix
 * kernel? Logs the answer. */
static void probe(void)
{
    const dnnl_version_t *v = dnnl_version();
#if defined(__x86_64__) || defined(__i386__)
    const unsigned bf16 = (unsigned)dnnl_cpu_isa_avx512_core_bf16;
    if (((unsigned)dnnl_get_effective_cpu_isa() & bf16) != bf16) {
        gs_log_info("CPU prefill GEMMs: F32 SGEMM (no AVX512-BF16 or AMX on this CPU)");
        return;
    }
#endif
    if (dnnl_engine_create(&g_engine, dnnl_cpu, 0) != dnnl_success) {
        gs_log_warn("CPU prefill GEMMs: F32 SGEMM (oneDNN %d.%d.%d: no CPU engine)", v->major,
                    v->minor, v->patch);
        return;
    }
    /* "brg": oneDNN's batch-reduce GEMM, the kernels that use AVX512-BF16
     * and AMX; "acl": Arm Compute Library (BFMMLA) where oneDNN is built
     * with it. Anything else (a reference or emulated kernel) would be
     * slower than the F32 path. */
    bf_plan p;
    char impl[64] = "";
    int rc = plan_make(&p, 64, 64, 64, impl, sizeof impl);
    plan_free(&p);
    if (rc || (strncmp(impl, "brg", 3) != 0 && !strstr(impl, "acl"))) {
        gs_log_info("CPU prefill GEMMs: F32 SGEMM (oneDNN %d.%d.%d has no BF16 matrix kernel "
                    "for this CPU: %s)",
                    v->major, v->minor, v->patch, rc ? gs_strerror(rc) : impl);
        return;
    }
    g_usable = 1;
    gs_log_info("CPU prefill GEMMs: BF16 on the matrix units (oneDNN %d.%d.%d, %s)", v->major,
                v->minor, v->patch, impl);
}

int gs_cpu_gemm_bf16_active(void)
{
    pthread_once(&g_once, probe);
    return g_usable && !atomic_load(&g_force_f32);
}

/* ---- x to BF16 ------------------------------------------------------------ */

typedef struct {
    gs_mat x;
    uint16_t *xb; /* [m, k] */
} cvt_job;

/* Round to nearest even, NaN kept quiet (as gs_f32_to_bf16), written
 * without branches so that the loop vectorises. */
GS_CPU_HOT static void cvt_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    (void)tid;
    cvt_job *J = ctx;
    const int64_t k = J->x.cols;
    for (int64_t r = r0; r < r1; r++) {
        const float *s = gs_cpu_row(J->x, r);
        uint16_t *d = J->xb + r * k;
        for (int64_t i = 0; i < k; i++) {
            uint32_t u;
            memcpy(&u, &s[i], 4);
            uint32_t rne = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
            uint32_t nan = (u >> 16) | 0x40u;
            d[i] = (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? nan : rne);
        }
    }
}

/* ---- the GEMM ------------------------------------------------------------- */

typedef struct {
    gs_mat out;
    const uint16_t *xb; /* [m, k] bf16 */
    const uint16_t *w;  /* [n, k] bf16 */
    const float *bias;  /* [n] or NULL */
    int accum;
    int64_t mb, nb, n_nblk;
    bf_plan plan[2][2]; /* [last row block is short][last column block is short] */
    size_t tile_off;    /* the F32 tile's offset in the thread's scratch */
    gs_cpu *c;
    atomic_int err;
} bf_job;

/* One item: tile[mr, nc] = xb[r0 ..] . W[c0 ..]^T with plan p. */
static int item_run(const bf_job *J, const bf_plan *p, void *scratch, int64_t r0, int64_t c0,
                    float *tile)
{
    dnnl_memory_t ms = NULL, mw = NULL, md = NULL, mscr = NULL;
    dnnl_stream_t st = NULL;
    const int64_t k = p->src.dims[1];
    int rc = GS_EINTERNAL;
    if (dnnl_stream_create(&st, g_engine, dnnl_stream_default_flags) != dnnl_success)
        goto done;
    /* oneDNN's memory handles are not const; it only reads src and wei. */
    if (dnnl_memory_create(&ms, &p->src, g_engine, (void *)(J->xb + r0 * k)) != dnnl_success ||
        dnnl_memory_create(&mw, &p->wei, g_engine, (void *)(J->w + c0 * k)) != dnnl_success ||
        dnnl_memory_create(&md, &p->dst, g_engine, tile) != dnnl_success ||
        dnnl_memory_create(&mscr, &p->scr, g_engine, scratch) != dnnl_success)
        goto done;
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, ms},
                               {DNNL_ARG_WEIGHTS, mw},
                               {DNNL_ARG_DST, md},
                               {DNNL_ARG_SCRATCHPAD, mscr}};
    if (dnnl_primitive_execute(p->prim, st, p->scr_bytes ? 4 : 3, args) == dnnl_success &&
        dnnl_stream_wait(st) == dnnl_success)
        rc = 0;
done:
    dnnl_memory_destroy(ms);
    dnnl_memory_destroy(mw);
    dnnl_memory_destroy(md);
    dnnl_memory_destroy(mscr);
    if (st)
        dnnl_stream_destroy(st);
    return rc;
}

/* out[r0 .., c0 ..] = (accum ? out : 0) + tile[mr, nc] + bias. */
GS_CPU_HOT static void tile_store(const bf_job *J, const float *tile, int64_t r0, int64_t c0,
                                  int64_t mr, int64_t nc)
{
    for (int64_t r = 0; r < mr; r++) {
        float *o = gs_cpu_row(J->out, r0 + r) + c0;
        const float *t = tile + r * nc;
        if (J->accum)
            for (int64_t j = 0; j < nc; j++)
                o[j] += t[j];
        else
            memcpy(o, t, sizeof(float) * (size_t)nc);
        if (J->bias)
            for (int64_t j = 0; j < nc; j++)
                o[j] += J->bias[c0 + j];
    }
}

static void bf_items(void *ctx, int64_t i0, int64_t i1, int tid)
{
    bf_job *J = ctx;
    const int64_t m = J->out.rows, n = J->out.cols;
    char *scratch = gs_cpu_scratch(J->c, tid);
    float *tile = (float *)(scratch + J->tile_off);
    omp_set_num_threads(1); /* this thread's OpenMP team: itself (see the top) */
    for (int64_t it = i0; it < i1; it++) {
        const int64_t r0 = (it / J->n_nblk) * J->mb, c0 = (it % J->n_nblk) * J->nb;
        const int64_t mr = m - r0 < J->mb ? m - r0 : J->mb;
        const int64_t nc = n - c0 < J->nb ? n - c0 : J->nb;
        if (mr <= 0 || nc <= 0)
            continue;
        if (item_run(J, &J->plan[mr != J->mb][nc != J->nb], scratch, r0, c0, tile) != 0)
            atomic_store(&J->err, GS_EINTERNAL);
        else
            tile_store(J, tile, r0, c0, mr, nc);
    }
}

int gs_cpu_gemm_bf16(gs_cpu *c, gs_mat out, gs_mat x, const gs_cpu_weight *w, const float *bias,
                     int accum)
{
    if (w->h.dt != GS_DT_BF16 || !gs_cpu_gemm_bf16_active())
        return GS_ENOTSUP;
    const int64_t m = x.rows, n = out.cols, k = x.cols;
    const int T = c->n_threads;
    bf_job J;
    memset(&J, 0, sizeof J);
    J.out = out;
    J.w = w->data;
    J.bias = bias;
    J.accum = accum;
    J.c = c;
    atomic_init(&J.err, 0);

    /* Items: as matmul.c's F32 GEMM. */
    const gs_cpu_gemm_blocks bl = gs_cpu_gemm_blocking(m, n, T, BF_MB, BF_NB);
    const int64_t n_mblk = bl.n_mblk;
    J.mb = bl.mb;
    J.nb = bl.nb;
    J.n_nblk = bl.n_nblk;

    /* Plans for the (at most four) item shapes, on this thread. */
    const int64_t mr_last = m - (n_mblk - 1) * J.mb, nc_last = n - (J.n_nblk - 1) * J.nb;
    size_t scr = 0;
    int rc = 0;
    for (int a = 0; a < 2 && !rc; a++)
        for (int b = 0; b < 2 && !rc; b++) {
            int64_t mr = a ? mr_last : J.mb, nc = b ? nc_last : J.nb;
            if ((a && mr == J.mb) || (b && nc == J.nb))
                continue; /* no short block on that side */
            rc = plan_make(&J.plan[a][b], mr, nc, k, NULL, 0);
            if (!rc && J.plan[a][b].scr_bytes > scr)
                scr = J.plan[a][b].scr_bytes;
        }
    uint16_t *xb = NULL;
    if (!rc) {
        J.tile_off = (scr + 63) & ~(size_t)63;
        if (gs_cpu_scratch_reserve(c, J.tile_off + sizeof(float) * (size_t)J.mb * (size_t)J.nb))
            rc = GS_ENOMEM;
    }
    if (!rc) {
        xb = aligned_alloc(64, ((size_t)(m * k) * 2 + 63) & ~(size_t)63);
        if (!xb)
            rc = GS_ENOMEM;
    }
    if (!rc) {
        cvt_job C = {x, xb};
        gs_cpu_parallel(c, m, gs_cpu_grain(c, m, 2, 8), cvt_rows, &C);
        J.xb = xb;
        gs_cpu_parallel(c, n_mblk * J.n_nblk, 1, bf_items, &J);
        rc = atomic_load(&J.err);
        if (rc)
            gs_log_error("CPU BF16 GEMM m%lld n%lld k%lld: oneDNN failed to execute", (long long)m,
                         (long long)n, (long long)k);
    }
    free(xb);
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++)
            plan_free(&J.plan[a][b]);
    return rc;
}

#endif /* GS_HAVE_DNNL */
