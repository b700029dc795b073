/* bench_gpu.c - GLM-4.6V-Flash at its real shapes with dummy weights
 * (gs_model_load dummy_weights = 1, from glm46v-flash/config.json): one
 * markdown table of what the CUDA issue asks for, each row beside its
 * reference measured in the same run and its target:
 *  - read bandwidth of a streaming kernel over a buffer much larger than L2
 *    (and cudaMemcpy D2D, read + write), the decode bound derived from it;
 *  - single-stream decode ms/token at context --ctx vs bytes-per-step /
 *    read bandwidth (every text layer + lm_head + one embedding row + the
 *    KV of the context);
 *  - batched decode tok/s (--batches); the KV cache is filled by ONE real
 *    prefill of --ctx tokens whose pages are then copied to every other
 *    sequence's own pages (gs_kv_cache_copy_page), so each sequence reads
 *    distinct memory;
 *  - prefill TFLOP/s (linear layers + causal attention FLOPs) vs cuBLASLt's
 *    BF16 GEMM at --gemm-n cubed;
 *  - image TTFT split into JPEG decode + preprocess, vision encoder, prefill;
 *  - memory used by the load and weight bytes.
 * --backend cpu runs the same model code on the CPU (references: threaded
 * memory read / copy and OpenBLAS SGEMM) to test the tool without a GPU;
 * --layers / --vision-depth write a reduced copy of the config to a temp
 * folder. Single-threaded driver; owns everything it allocates. */
#include <cblas.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "tools/bench_gpu/bench_gpu.h"
#ifdef GS_BENCH_HAVE_CUDA
#include "tools/bench_gpu/bench_cuda.h"
#endif

#define MAX_LIST 16

typedef struct {
    const char *backend, *model;
    int device, layers, vdepth, ctx, question, steps, warmup, reps, page, threads;
    int bw_mib, gemm_n;
    int batches[MAX_LIST], n_batches, prefill[MAX_LIST], n_prefill;
    int img_w[MAX_LIST], img_h[MAX_LIST], n_images;
} opts;

/* ---- the table ----------------------------------------------------------- */

#define MAX_ROWS 64
typedef struct {
    char c[6][160];
} row;
static row g_rows[MAX_ROWS];
static int g_n_rows, g_failed;

static void add_row(const char *metric, const char *meas, const char *ref, const char *ratio,
                    const char *target, const char *res)
{
    if (g_n_rows >= MAX_ROWS)
        return;
    const char *v[6] = {metric, meas, ref, ratio, target, res};
    for (int i = 0; i < 6; i++)
        snprintf(g_rows[g_n_rows].c[i], sizeof g_rows[0].c[i], "%s", v[i] ? v[i] : "");
    g_n_rows++;
}

static const char *fmt(char *buf, size_t n, const char *f, ...)
    __attribute__((format(printf, 3, 4)));
static const char *fmt(char *buf, size_t n, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, n, f, ap);
    va_end(ap);
    return buf;
}

static void fail_row(const char *metric, const gs_diag *d, int rc)
{
    char b[200];
    add_row(metric, fmt(b, sizeof b, "FAILED: %s", d->msg[0] ? d->msg : gs_strerror(rc)), "", "",
            "", "FAIL");
    fprintf(stderr, "bench_gpu: %s: %s\n", metric, d->msg[0] ? d->msg : gs_strerror(rc));
    g_failed = 1;
}

/* ---- options ------------------------------------------------------------- */

static int parse_list(const char *s, int *out, int max)
{
    int n = 0;
    while (*s && n < max) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v <= 0 || v > 1000000)
            return -1;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return *s ? -1 : n;
}

static int parse_images(const char *s, opts *o)
{
    o->n_images = 0;
    if (!strcmp(s, "none"))
        return 0;
    while (*s && o->n_images < MAX_LIST) {
        char *end;
        long w = strtol(s, &end, 10), h;
        if (end == s || *end != 'x' || w <= 0 || w > 20000)
            return -1;
        s = end + 1;
        h = strtol(s, &end, 10);
        if (end == s || h <= 0 || h > 20000 || (*end && *end != ','))
            return -1;
        o->img_w[o->n_images] = (int)w;
        o->img_h[o->n_images++] = (int)h;
        s = *end ? end + 1 : end;
    }
    return *s ? -1 : 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_gpu [--backend cuda|cpu] [--device N] [--model DIR]\n"
            "                 [--layers N] [--vision-depth N] [--ctx N] [--batches 1,8,..]\n"
            "                 [--prefill 1024,4096] [--images 1024x1024,1920x1080|none]\n"
            "                 [--question N] [--steps N] [--warmup N] [--reps N] [--page N]\n"
            "                 [--bw-mib N] [--gemm-n N] [--threads N]\n");
}

static int parse_opts(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
#ifdef GS_BENCH_HAVE_CUDA
    o->backend = "cuda";
#else
    o->backend = "cpu";
#endif
    o->model = GS_BENCH_GPU_MODEL_DIR;
    o->ctx = 1024, o->question = 30, o->steps = 16, o->warmup = 3, o->reps = 5, o->page = 16;
    o->n_batches = parse_list("1,8,32,64,128", o->batches, MAX_LIST);
    o->n_prefill = parse_list("1024,4096", o->prefill, MAX_LIST);
    parse_images("1024x1024,1920x1080", o);
    const char *dev = getenv("GS_CUDA_DEVICE");
    o->device = dev ? atoi(dev) : 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int *ip = NULL, lo = 1;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            exit(0);
        }
        if (!v) {
            fprintf(stderr, "bench_gpu: %s needs a value\n", a);
            return -1;
        }
        i++;
        if (!strcmp(a, "--backend"))
            o->backend = v;
        else if (!strcmp(a, "--model"))
            o->model = v;
        else if (!strcmp(a, "--batches")) {
            if ((o->n_batches = parse_list(v, o->batches, MAX_LIST)) <= 0)
                goto bad;
        } else if (!strcmp(a, "--prefill")) {
            if ((o->n_prefill = parse_list(v, o->prefill, MAX_LIST)) < 0)
                goto bad;
        } else if (!strcmp(a, "--images")) {
            if (parse_images(v, o))
                goto bad;
        } else {
            static const char *names[] = {"--device",   "--layers",  "--vision-depth", "--ctx",
                                          "--question", "--steps",   "--warmup",       "--reps",
                                          "--page",     "--threads", "--bw-mib",       "--gemm-n"};
            int *ptrs[] = {&o->device,   &o->layers,  &o->vdepth, &o->ctx,
                           &o->question, &o->steps,   &o->warmup, &o->reps,
                           &o->page,     &o->threads, &o->bw_mib, &o->gemm_n};
            for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
                if (!strcmp(a, names[k]))
                    ip = ptrs[k], lo = (k == 0 || k == 6) ? 0 : 1;
            if (!ip) {
                fprintf(stderr, "bench_gpu: unknown option %s\n", a);
                usage();
                return -1;
            }
            char *end;
            long x = strtol(v, &end, 10);
            if (*end || x < lo || x > 1000000)
                goto bad;
            *ip = (int)x;
        }
        continue;
    bad:
        fprintf(stderr, "bench_gpu: bad value '%s' for %s\n", v, a);
        return -1;
    }
    return 0;
}

/* ---- reduced config ------------------------------------------------------ */

/* Copies dir's config.json (with num_hidden_layers / depth overridden when
 * > 0) and preprocessor_config.json into a new temp folder; tmp receives
 * its path. */
static int write_reduced(const char *dir, int layers, int vdepth, char *tmp, size_t n)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmp, n, "%s/bench_gpu_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmp)) {
        perror("bench_gpu: mkdtemp");
        return -1;
    }
    const char *files[2] = {"config.json", "preprocessor_config.json"};
    for (int f = 0; f < 2; f++) {
        char src[4096], dst[4096];
        json_error_t je;
        snprintf(src, sizeof src, "%s/%s", dir, files[f]);
        snprintf(dst, sizeof dst, "%s/%s", tmp, files[f]);
        json_t *j = json_load_file(src, 0, &je);
        if (!j) {
            fprintf(stderr, "bench_gpu: %s: %s\n", src, je.text);
            return -1;
        }
        json_t *tc = json_object_get(j, "text_config"), *vc = json_object_get(j, "vision_config");
        if (f == 0 && layers > 0 && json_is_object(tc))
            json_object_set_new(tc, "num_hidden_layers", json_integer(layers));
        if (f == 0 && vdepth > 0 && json_is_object(vc))
            json_object_set_new(vc, "depth", json_integer(vdepth));
        int rc = json_dump_file(j, dst, JSON_INDENT(2));
        json_decref(j);
        if (rc) {
            fprintf(stderr, "bench_gpu: cannot write %s\n", dst);
            return -1;
        }
    }
    return 0;
}

static void remove_reduced(const char *tmp)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", tmp);
    unlink(p);
    snprintf(p, sizeof p, "%s/preprocessor_config.json", tmp);
    unlink(p);
    rmdir(tmp);
}

/* ---- CPU references (--backend cpu) -------------------------------------- */

typedef struct {
    const float *a;
    float *b;
    size_t n0, n1;
    int copy;
    float sum;
} bw_arg;

static void *bw_thread(void *p)
{
    bw_arg *g = p;
    if (g->copy) {
        memcpy(g->b + g->n0, g->a + g->n0, sizeof(float) * (g->n1 - g->n0));
        return NULL;
    }
    float acc[16] = {0};
    size_t i = g->n0;
    for (; i + 16 <= g->n1; i += 16)
        for (int l = 0; l < 16; l++)
            acc[l] += g->a[i + l];
    for (int l = 0; l < 16; l++)
        g->sum += acc[l];
    return NULL;
}

/* Threaded read (sum) and copy bandwidth over bytes of host memory, GB/s
 * (copy counted as read + write). */
static int cpu_bandwidth(size_t bytes, int reps, int threads, double *rd, double *cp)
{
    size_t n = bytes / sizeof(float) / 2;
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    double *t = malloc(sizeof(double) * (size_t)reps * 2);
    if (!a || !b || !t) {
        free(a), free(b), free(t);
        return GS_ENOMEM;
    }
    memset(a, 0, n * sizeof(float));
    memset(b, 0, n * sizeof(float));
    pthread_t th[256];
    bw_arg args[256];
    float sink = 0;
    for (int mode = 0; mode < 2; mode++)
        for (int r = -1; r < reps; r++) {
            double t0 = bg_now();
            for (int k = 0; k < threads; k++) {
                args[k] = (bw_arg){a, b, n * k / threads, n * (k + 1) / threads, mode, 0};
                pthread_create(&th[k], NULL, bw_thread, &args[k]);
            }
            for (int k = 0; k < threads; k++) {
                pthread_join(th[k], NULL);
                sink += args[k].sum;
            }
            if (r >= 0)
                t[mode * reps + r] = bg_now() - t0;
        }
    *rd = (double)(n * sizeof(float)) / bg_median(t, reps) / 1e9 + 0.0 * sink;
    *cp = 2.0 * (double)(n * sizeof(float)) / bg_median(t + reps, reps) / 1e9;
    free(a), free(b), free(t);
    return 0;
}

static int cpu_gemm(int n, int reps, double *gflops)
{
    size_t e = (size_t)n * (size_t)n;
    float *a = malloc(e * sizeof(float)), *b = malloc(e * sizeof(float)),
          *c = malloc(e * sizeof(float));
    double *t = malloc(sizeof(double) * (size_t)reps);
    if (!a || !b || !c || !t) {
        free(a), free(b), free(c), free(t);
        return GS_ENOMEM;
    }
    for (size_t i = 0; i < e; i++)
        a[i] = (float)(i % 7) * 0.1f, b[i] = (float)(i % 5) * 0.1f;
    for (int r = -1; r < reps; r++) {
        double t0 = bg_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        if (r >= 0)
            t[r] = bg_now() - t0;
    }
    *gflops = 2.0 * (double)e * n / bg_median(t, reps) / 1e12; /* TFLOP/s */
    free(a), free(b), free(c), free(t);
    return 0;
}

/* ---- model arithmetic ---------------------------------------------------- */

/* BF16 elements of one text layer's matrices (qkv, o, gate_up, down) and
 * F32 elements of its vectors (4 norms, qkv bias). */
static void layer_elems(const gs_text_config *t, double *mats, double *vecs)
{
    double H = t->hidden_size, In = t->intermediate_size;
    double qd = (double)t->num_attention_heads * t->head_dim;
    double kvd = (double)t->num_key_value_heads * t->head_dim;
    *mats = (qd + 2 * kvd) * H + H * qd + 2 * In * H + H * In;
    *vecs = 4 * H + qd + 2 * kvd;
}

/* FLOPs of a one-sequence prefill of n tokens: linear layers + causal
 * attention (QK^T and PV over n(n+1)/2 pairs per head) + lm_head for the
 * one logit row. */
static double prefill_flops(const gs_text_config *t, double n)
{
    double mats, vecs;
    layer_elems(t, &mats, &vecs);
    double attn = 4.0 * t->num_attention_heads * t->head_dim * n * (n + 1) / 2;
    return t->num_hidden_layers * (2 * n * mats + attn) + 2.0 * t->vocab_size * t->hidden_size;
}

/* The verdict: PASS/MISS on the full model on a GPU; otherwise "n/a"
 * with what it would have been (the targets are for the GPU). */
static const char *g_na; /* NULL: judge; else the reason */
static const char *pass(int ok)
{
    static char buf[8][64];
    static int k;
    if (!g_na)
        return ok ? "PASS" : "MISS";
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "n/a (%s; %s)", g_na, ok ? "pass" : "miss");
    return buf[k];
}

int main(int argc, char **argv)
{
    opts o;
    if (parse_opts(argc, argv, &o))
        return 2;
    gs_log_set_level(GS_LOG_WARN);
    int is_cuda = !strcmp(o.backend, "cuda");
    if (!is_cuda && strcmp(o.backend, "cpu")) {
        fprintf(stderr, "bench_gpu: --backend must be cuda or cpu\n");
        return 2;
    }
#ifndef GS_BENCH_HAVE_CUDA
    if (is_cuda) {
        fprintf(stderr, "bench_gpu: built without CUDA (GS_CUDA=OFF); use --backend cpu\n");
        return 2;
    }
#endif
    const int reduced = o.layers > 0 || o.vdepth > 0;
    g_na = !is_cuda ? "cpu" : reduced ? "reduced model" : NULL;
    if (!o.bw_mib)
        o.bw_mib = is_cuda ? 4096 : 512;
    if (!o.gemm_n)
        o.gemm_n = is_cuda ? 8192 : 1024;
    char tmp[4096] = "", b1[160], b2[160], b3[160];
    const char *dir = o.model;
    if (reduced) {
        if (write_reduced(o.model, o.layers, o.vdepth, tmp, sizeof tmp)) {
            if (tmp[0])
                remove_reduced(tmp);
            return 1;
        }
        dir = tmp;
    }

    gs_diag d = {0};
    gs_backend_params bp = {.kind = is_cuda ? GS_BACKEND_CUDA : GS_BACKEND_CPU,
                            .n_threads = o.threads,
                            .device = o.device};
    gs_backend *be = NULL;
    gs_model *m = NULL;
    gs_kv_cache *kv = NULL;
    int rc = gs_backend_new(&bp, &be, &d);
    if (rc) {
        fprintf(stderr, "bench_gpu: cannot open the %s backend: %s\n", o.backend,
                d.msg[0] ? d.msg : gs_strerror(rc));
        goto out;
    }

    /* References, before the model takes memory. */
    double rd_bw = 0, cp_bw = 0, gemm_tf = 0;
    char err[512] = "";
    if (is_cuda) {
#ifdef GS_BENCH_HAVE_CUDA
        rc = gs_bench_cuda_bandwidth(o.device, (size_t)o.bw_mib << 20, o.reps * 2, &rd_bw, &cp_bw,
                                     err, sizeof err);
        if (!rc)
            rc = gs_bench_cuda_gemm(o.device, o.gemm_n, o.reps * 2, &gemm_tf, err, sizeof err);
#endif
    } else {
        int th = o.threads > 0 ? o.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
        th = th < 1 ? 1 : th > 256 ? 256 : th;
        rc = cpu_bandwidth((size_t)o.bw_mib << 20, o.reps, th, &rd_bw, &cp_bw);
        if (!rc)
            rc = cpu_gemm(o.gemm_n, o.reps, &gemm_tf);
        if (rc)
            snprintf(err, sizeof err, "CPU reference: out of memory");
    }
    if (rc) {
        fprintf(stderr, "bench_gpu: reference measurement failed: %s\n", err);
        rc = 1;
        goto out;
    }
    add_row(fmt(b1, sizeof b1, "read bandwidth (%s, %d MiB)",
                is_cuda ? "streaming-read kernel" : "threaded read", o.bw_mib),
            fmt(b2, sizeof b2, "%.0f GB/s", rd_bw), "", "", "", "");
    add_row(is_cuda ? "cudaMemcpy D2D (read + write)" : "memcpy (read + write)",
            fmt(b2, sizeof b2, "%.0f GB/s", cp_bw), "", "", "", "");
    add_row(
        fmt(b1, sizeof b1, "%s %d^3", is_cuda ? "cuBLASLt BF16 GEMM" : "OpenBLAS SGEMM", o.gemm_n),
        fmt(b2, sizeof b2, "%.1f TFLOP/s", gemm_tf), "", "", "", "");

    /* Load. */
    size_t free0 = 0, total = 0, free1 = 0;
    if ((rc = gs_backend_sync(be)) || (rc = gs_backend_mem_info(be, &free0, &total))) {
        fprintf(stderr, "bench_gpu: backend memory query failed: %s\n", gs_strerror(rc));
        goto out;
    }
    gs_model_params mp = {dir, be, 1, 1234, 0, GS_WEIGHTS_ASIS, 0};
    double tl = bg_now();
    if ((rc = gs_model_load(&mp, &m, &d))) {
        fprintf(stderr, "bench_gpu: gs_model_load(%s, dummy weights) failed: %s\n", o.model,
                d.msg[0] ? d.msg : gs_strerror(rc));
        goto out;
    }
    if ((rc = gs_backend_sync(be)) || (rc = gs_backend_mem_info(be, &free1, &total))) {
        fprintf(stderr, "bench_gpu: backend memory query failed: %s\n", gs_strerror(rc));
        goto out;
    }
    tl = bg_now() - tl;
    const gs_model_config *cfg = gs_model_get_config(m);
    const gs_text_config *tc = &cfg->text;
    size_t wbytes = gs_model_weight_bytes(m);
    double used = free0 > free1 ? (double)(free0 - free1) : 0;

    gs_image_params ip;
    if ((rc = gs_image_params_load(dir, &ip, &d))) {
        fprintf(stderr, "bench_gpu: %s/preprocessor_config.json: %s\n", o.model,
                d.msg[0] ? d.msg : gs_strerror(rc));
        goto out;
    }

    /* KV cache: max batch x pages per sequence, or the longest prompt. */
    bg_ctx c = {m, be, NULL, o.page, 0, o.reps, o.steps, o.warmup};
    c.pps = (o.ctx + o.warmup + o.steps + o.page - 1) / o.page;
    int max_b = 0;
    for (int i = 0; i < o.n_batches; i++)
        max_b = o.batches[i] > max_b ? o.batches[i] : max_b;
    int64_t need = (int64_t)max_b * c.pps;
    for (int i = 0; i < o.n_prefill; i++)
        need = (o.prefill[i] + o.page - 1) / o.page > need ? (o.prefill[i] + o.page - 1) / o.page
                                                           : need;
    int32_t n_prompt[MAX_LIST] = {0};
    for (int i = 0; i < o.n_images; i++) {
        if ((rc = bg_ttft_prompt_len(cfg, &ip, o.img_w[i], o.img_h[i], o.question, &n_prompt[i],
                                     &d))) {
            fprintf(stderr, "bench_gpu: image %dx%d: %s\n", o.img_w[i], o.img_h[i], d.msg);
            goto out;
        }
        need =
            (n_prompt[i] + o.page - 1) / o.page > need ? (n_prompt[i] + o.page - 1) / o.page : need;
    }
    if (need > INT32_MAX / o.page) {
        fprintf(stderr, "bench_gpu: KV cache of %lld pages is too large\n", (long long)need);
        rc = 1;
        goto out;
    }
    size_t kv_tok = gs_kv_cache_page_bytes(m, o.page) / (size_t)o.page;
    if ((rc = gs_kv_cache_new(m, (int32_t)need + 1, o.page, &kv))) {
        fprintf(stderr, "bench_gpu: KV cache of %lld pages (%.2f GB) failed: %s\n",
                (long long)need + 1, (double)(need + 1) * o.page * kv_tok / 1e9, gs_strerror(rc));
        goto out;
    }
    c.kv = kv;
    fprintf(stderr, "bench_gpu: %s, model loaded in %.1f s; KV cache %.2f GB; running...\n",
            gs_backend_name(be), tl, (double)(need + 1) * o.page * kv_tok / 1e9);

    /* Decode. */
    double mats, vecs, fill_s = 0;
    layer_elems(tc, &mats, &vecs);
    double step_bytes = tc->num_hidden_layers * (2 * mats + 4 * vecs) +
                        2.0 * tc->vocab_size * tc->hidden_size + 2.0 * tc->hidden_size +
                        4.0 * tc->hidden_size + (double)kv_tok * o.ctx;
    if (max_b > 0 && (rc = bg_fill_context(&c, o.ctx, max_b, &fill_s, &d))) {
        fail_row("KV fill", &d, rc);
        max_b = 0;
    }
    for (int i = 0; i < o.n_batches && max_b > 0; i++) {
        int B = o.batches[i];
        double ms = 0, eager = 0;
        char metric[160];
        if (B == 1)
            fmt(metric, sizeof metric, "decode, 1 stream, ctx %d (ms/token)", o.ctx);
        else
            fmt(metric, sizeof metric, "decode, batch %d, ctx %d (output tok/s)", B, o.ctx);
        if ((rc = bg_decode(&c, B, o.ctx, 1, &ms, &d)) ||
            (rc = bg_decode(&c, B, o.ctx, 0, &eager, &d))) {
            fail_row(metric, &d, rc);
            continue;
        }
        if (B == 1) {
            double bound_ms = step_bytes / (rd_bw * 1e9) * 1e3, r = bound_ms / ms;
            add_row(metric, fmt(b1, sizeof b1, "%.2f ms (%.0f tok/s)", ms, 1e3 / ms),
                    fmt(b2, sizeof b2,
                        "bound %.3f ms = %.3f GB / %.0f GB/s; op by op %.2f ms (graph %.2fx)",
                        bound_ms, step_bytes / 1e9, rd_bw, eager, eager / ms),
                    fmt(b3, sizeof b3, "%.0f%% of bound", 100 * r), ">= 85% of bound",
                    pass(r >= 0.85));
        } else {
            double tps = B / (ms * 1e-3);
            int has_t = B == 64;
            add_row(metric, fmt(b1, sizeof b1, "%.0f tok/s (%.2f ms/step)", tps, ms),
                    fmt(b2, sizeof b2, "op by op %.2f ms/step (graph %.2fx)", eager, eager / ms),
                    "", has_t ? ">= 8,000 tok/s" : "", !has_t ? "" : pass(tps >= 8000));
        }
    }

    /* Prefill. */
    for (int i = 0; i < o.n_prefill; i++) {
        double s = 0;
        char metric[160];
        fmt(metric, sizeof metric, "prefill %d tokens (TFLOP/s)", o.prefill[i]);
        if ((rc = bg_prefill(&c, o.prefill[i], &s, &d))) {
            fail_row(metric, &d, rc);
            continue;
        }
        double tf = prefill_flops(tc, o.prefill[i]) / s / 1e12, r = tf / gemm_tf;
        add_row(metric, fmt(b1, sizeof b1, "%.1f TFLOP/s (%.1f ms)", tf, s * 1e3),
                fmt(b2, sizeof b2, "GEMM %.1f TFLOP/s", gemm_tf),
                fmt(b3, sizeof b3, "%.0f%% of GEMM", 100 * r), ">= 60% of GEMM", pass(r >= 0.60));
    }

    /* Image TTFT, with graphs on as the engine runs on a GPU (the vision
     * tower replays a graph per patch bucket; the warm-up run records it). */
    if (o.n_images > 0 && (rc = gs_model_enable_graphs(m, kv, 1, c.pps * o.page))) {
        fprintf(stderr, "bench_gpu: gs_model_enable_graphs failed: %s\n", gs_strerror(rc));
        goto out;
    }
    for (int i = 0; i < o.n_images; i++) {
        double t[3] = {0};
        int32_t np = 0, ni = 0;
        char metric[160];
        int W = o.img_w[i], H = o.img_h[i];
        double target = W == 1024 && H == 1024 && o.question == 30 ? 70
                        : W == 1920 && H == 1080                   ? 150
                                                                   : 0;
        fmt(metric, sizeof metric, "TTFT %dx%d JPEG + %d-token question", W, H, o.question);
        if ((rc = bg_ttft(&c, &ip, W, H, o.question, t, &np, &ni, &d))) {
            fail_row(metric, &d, rc);
            continue;
        }
        double tot = 1e3 * (t[0] + t[1] + t[2]);
        if (target > 0)
            fmt(b3, sizeof b3, "<= %.0f ms", target);
        add_row(metric, fmt(b1, sizeof b1, "%.1f ms", tot),
                fmt(b2, sizeof b2,
                    "preprocess %.1f + vision %.1f + prefill %.1f ms (%d img / %d tok)", 1e3 * t[0],
                    1e3 * t[1], 1e3 * t[2], ni, np),
                "", target > 0 ? b3 : "", target <= 0 ? "" : pass(tot <= target));
    }

    gs_model_disable_graphs(m);

    /* Memory. */
    add_row(
        "backend memory used by the load", fmt(b1, sizeof b1, "%.2f GB", used / 1e9),
        fmt(b2, sizeof b2, "free %.2f -> %.2f of %.2f GB", free0 / 1e9, free1 / 1e9, total / 1e9),
        "", "", "");
    add_row("weight bytes (gs_model_weight_bytes)", fmt(b1, sizeof b1, "%.3f GB", wbytes / 1e9),
            "HF checkpoint 20.586 GB (BF16)", fmt(b3, sizeof b3, "%.3f", wbytes / 20.585554944e9),
            "<= 20.6 GB", pass(wbytes <= 20.6e9));

    printf("\nbench_gpu: %s backend%s, model %s: %d text layers, vision depth %d; "
           "dummy BF16 weights; KV filled by one %d-token prefill (%.1f ms) copied to each "
           "sequence's own pages; medians of %d decode steps / %d runs\n\n",
           gs_backend_name(be), is_cuda ? "" : " (tool test, not the GPU)", o.model,
           tc->num_hidden_layers, cfg->vision.depth, o.ctx, fill_s * 1e3, o.steps, o.reps);
    printf("| metric | measured | reference | ratio | target | result |\n");
    printf("|---|---|---|---|---|---|\n");
    for (int r = 0; r < g_n_rows; r++)
        printf("| %s | %s | %s | %s | %s | %s |\n", g_rows[r].c[0], g_rows[r].c[1], g_rows[r].c[2],
               g_rows[r].c[3], g_rows[r].c[4], g_rows[r].c[5]);
    fflush(stdout);
    rc = g_failed ? 1 : 0;
out:
    gs_kv_cache_free(kv);
    gs_model_free(m);
    gs_backend_free(be);
    if (tmp[0])
        remove_reduced(tmp);
    return rc ? 1 : 0;
}
