/* worker_main.c - glmserve-worker: one model replica serving jobs from
 * gateways over IPC (serve.h).
 *
 *   glmserve-worker --model DIR (--listen URL | --connect URL)...
 *       [--backend cpu|cuda] [--device N] [--threads N] [--name S]
 *       [--served-model-name S] [--max-seqs N] [--max-queue N]
 *       [--max-model-len N] [--kv-memory MIB] [--encoder-cache MIB]
 *       [--token-budget N]
 *       [--prep-threads N] [--heartbeat-ms N] [--drain-timeout S]
 *       [--stream-interval-us N] [--idle-spin-us N] [--image-threads N]
 *       [--image-memory MIB] [--cluster-key-file F]
 *       [--resolve-interval S]
 *       [--max-images N] [--dummy-weights] [--graphs auto|on|off] [--batch-invariant]
 *       [--weights bf16|int8|int4|auto] [--gpu-memory BYTES]
 *       [--log-level debug|info|warn|error] [--log-file F]
 *
 * --weights: the format of the weights (docs/quantization.md); without it
 * the folder's own. --gpu-memory 15G caps the backend's memory (weights,
 * activations, KV pages: gs_backend_params.mem_limit) and, unless
 * --kv-memory is given, the KV cache takes what the weights and a reserve
 * for activations leave of it; the split is logged at start.
 *
 * Started by the glmserve master (one per GPU, or CPU workers), or by hand
 * on another node with --listen tcp://0.0.0.0:PORT (gateways dial it) or
 * --connect tcp://GATEWAY:PORT (it dials the gateway and keeps the
 * connection up). A --connect name with several addresses (a Kubernetes
 * headless Service: one per gateway pod) is dialed at every address, and
 * resolved again every --resolve-interval seconds (default 10) to follow
 * gateways that come and go (dialer.h). A name that does not resolve yet
 * is retried; a malformed URL is a usage error.
 *
 * Signals: SIGTERM or SIGINT drains (no new jobs; running ones finish
 * within --drain-timeout; then exit 0); a second one ends the jobs at once.
 * Exit status: 0 after a drain; 1 on a runtime failure (address in use,
 * out of memory, device error: every fatal exit logs why), which a restart
 * may cure; 2 on bad usage; 3 when the model folder cannot be served (a
 * missing or malformed file), which no restart cures: the master does not
 * restart a worker that exits 3. */
#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/bytes.h"
#include "common/file.h"
#include "common/ipc_msg.h"
#include "common/log.h"
#include "common/resolve.h"
#include "kernels/kernels.h"
#include "worker/engine/engine_detok.h"
#include "worker/model/model.h"
#include "worker/serve.h"
#include "worker/tokenizer/chat_template.h"

#define MAX_URLS 16
/* --idle-spin-us: longer than a client's turnaround between two jobs over
 * ipc:// (send the final event, the client's next request, receive it:
 * 0.2-0.3 ms), so that a client sending job after job finds the engine
 * thread and the CPU backend's threads awake (measured: docs/benchmarks.md,
 * the worker process boundary). */
#define GS_IDLE_SPIN_US 300

typedef struct {
    const char *model, *backend, *name, *served, *log_level, *log_file, *key_file;
    const char *listen[MAX_URLS], *connect[MAX_URLS];
    int n_listen, n_connect;
    int device, threads, max_seqs, max_queue, max_model_len, token_budget;
    int prep_threads, heartbeat_ms, drain_s, max_images, dummy, graphs, stream_us;
    int spin_us;
    int image_threads; /* -1: auto (image_threads_auto) */
    int image_mib;     /* --image-memory; 0: the server's default */
    int batch_invariant;
    int resolve_s;
    long kv_mib;
    long enc_mib; /* --encoder-cache; 0: the engine's default (256) */
    gs_weight_format weights;
    size_t gpu_memory;
} options;

static void usage(FILE *f)
{
    fprintf(f, "usage: glmserve-worker --model DIR (--listen URL | --connect URL)...\n"
               "       [--backend cpu|cuda] [--device N] [--threads N] [--name S]\n"
               "       [--served-model-name S] [--max-seqs N] [--max-queue N]\n"
               "       [--max-model-len N] [--kv-memory MIB] [--token-budget N]\n"
               "       [--encoder-cache MIB (image embeddings kept; default 256)]\n"
               "       [--prep-threads N] [--heartbeat-ms N] [--drain-timeout S]\n"
               "       [--stream-interval-us N (0: every step; default 10000)]\n"
               "       [--idle-spin-us N (idle engine and CPU threads wait awake N us before\n"
               "        they sleep; 0: the engine sleeps at once; default 300)]\n"
               "       [--image-threads N (threads per image for resize and patchify;\n"
               "        default 1 with --backend cpu, up to 4 with cuda)]\n"
               "       [--image-memory MIB (prepared image pixels held by jobs at once; a job\n"
               "        that would pass it waits; default a quarter of RAM, at most 4096)]\n"
               "       [--resolve-interval S (--connect names, default 10)]\n"
               "       [--max-images N] [--dummy-weights] [--graphs auto|on|off]\n"
               "       [--batch-invariant (CPU: prefill GEMMs in F32, so a job's tokens do\n"
               "        not depend on what it is batched with; slower prefill)]\n"
               "       [--weights bf16|int8|int4|auto] [--gpu-memory BYTES]\n"
               "       [--log-level debug|info|warn|error] [--log-file F]\n"
               "       [--cluster-key-file F (gateways must send this key in their hello,\n"
               "        and this worker sends it in its own)]\n"
               "URLs: ipc:///path/to/socket or tcp://host:port\n");
}

/* --image-threads by default. With the CPU backend the compute threads
 * already take every core during steps, and an image prepared beside them
 * would slow every running stream's step: one thread. With CUDA the cores
 * are mostly idle: cutting a photo's resize and patchify between threads
 * makes it 1.7-2.0x faster on two cores (1920x1080 and 3000x1700 images,
 * docs/benchmarks.md); up to 4, half the cores. */
static int image_threads_auto(gs_backend_kind kind)
{
    if (kind != GS_BACKEND_CUDA)
        return 1;
    long n = sysconf(_SC_NPROCESSORS_ONLN) / 2;
    return n < 1 ? 1 : n > 4 ? 4 : (int)n;
}

/* An integer flag value in [lo, hi]; prints the flag on error. */
static int int_arg(const char *flag, const char *v, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "glmserve-worker: %s: expected an integer in [%ld, %ld], got '%s'\n", flag,
                lo, hi, v ? v : "");
        return -1;
    }
    *out = x;
    return 0;
}

typedef struct {
    const char *flag;
    size_t off; /* offsetof(options, int field) */
    long lo, hi;
} int_flag;

static const int_flag int_flags[] = {
    {"--device", offsetof(options, device), 0, 1024},
    {"--threads", offsetof(options, threads), 0, 4096},
    {"--max-seqs", offsetof(options, max_seqs), 1, 256},
    {"--max-queue", offsetof(options, max_queue), 1, 1 << 20},
    {"--max-model-len", offsetof(options, max_model_len), 16, 1 << 24},
    {"--token-budget", offsetof(options, token_budget), 16, 1 << 20},
    {"--prep-threads", offsetof(options, prep_threads), 1, 256},
    {"--heartbeat-ms", offsetof(options, heartbeat_ms), 10, 60000},
    {"--drain-timeout", offsetof(options, drain_s), 0, 86400},
    {"--max-images", offsetof(options, max_images), 0, 64},
    {"--stream-interval-us", offsetof(options, stream_us), 0, 1000000},
    {"--idle-spin-us", offsetof(options, spin_us), 0, 1000000},
    {"--image-threads", offsetof(options, image_threads), 1, 64},
    {"--image-memory", offsetof(options, image_mib), 1, 1 << 24},
    {"--resolve-interval", offsetof(options, resolve_s), 1, 3600},
};

static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->backend = "cpu";
    o->max_images = 16;
    o->drain_s = 30;
    o->log_level = "info";
    o->kv_mib = -1;
    o->stream_us = -1;
    o->spin_us = -1;
    o->image_threads = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            return 1;
        if (!strcmp(a, "--dummy-weights")) {
            o->dummy = 1;
            continue;
        }
        if (!strcmp(a, "--batch-invariant")) {
            o->batch_invariant = 1;
            continue;
        }
        if (a[0] != '-' || a[1] != '-') {
            fprintf(stderr, "glmserve-worker: unexpected argument '%s'\n", a);
            return -1;
        }
        if (!v) {
            fprintf(stderr, "glmserve-worker: %s needs a value (or is unknown: --help)\n", a);
            return -1;
        }
        i++;
        long x;
        const int_flag *f = NULL;
        for (size_t k = 0; k < sizeof int_flags / sizeof *int_flags; k++)
            if (!strcmp(a, int_flags[k].flag))
                f = &int_flags[k];
        if (f) {
            if (int_arg(a, v, f->lo, f->hi, &x))
                return -1;
            *(int *)((char *)o + f->off) = (int)x;
        } else if (!strcmp(a, "--kv-memory")) {
            if (int_arg(a, v, 1, 1L << 30, &x))
                return -1;
            o->kv_mib = x;
        } else if (!strcmp(a, "--encoder-cache")) {
            if (int_arg(a, v, 1, 1L << 30, &x))
                return -1;
            o->enc_mib = x;
        } else if (!strcmp(a, "--model")) {
            o->model = v;
        } else if (!strcmp(a, "--backend")) {
            if (strcmp(v, "cpu") && strcmp(v, "cuda")) {
                fprintf(stderr, "glmserve-worker: --backend must be cpu or cuda, got '%s'\n", v);
                return -1;
            }
            o->backend = v;
        } else if (!strcmp(a, "--name")) {
            o->name = v;
        } else if (!strcmp(a, "--served-model-name")) {
            o->served = v;
        } else if (!strcmp(a, "--log-level")) {
            o->log_level = v;
        } else if (!strcmp(a, "--log-file")) {
            o->log_file = v;
        } else if (!strcmp(a, "--cluster-key-file")) {
            o->key_file = v;
        } else if (!strcmp(a, "--weights")) {
            if (gs_weight_format_parse(v, &o->weights)) {
                fprintf(stderr,
                        "glmserve-worker: --weights must be bf16, int8, int4 or auto, got '%s'\n",
                        v);
                return -1;
            }
        } else if (!strcmp(a, "--gpu-memory")) {
            if (gs_parse_bytes(v, &o->gpu_memory)) {
                fprintf(
                    stderr,
                    "glmserve-worker: --gpu-memory: expected a size like 15G or 10GiB, got '%s'\n",
                    v);
                return -1;
            }
        } else if (!strcmp(a, "--graphs")) {
            if (strcmp(v, "auto") && strcmp(v, "on") && strcmp(v, "off")) {
                fprintf(stderr, "glmserve-worker: --graphs must be auto, on or off, got '%s'\n", v);
                return -1;
            }
            o->graphs = !strcmp(v, "on") ? 1 : !strcmp(v, "off") ? -1 : 0;
        } else if (!strcmp(a, "--listen") || !strcmp(a, "--connect")) {
            int is_listen = a[2] == 'l';
            int *n = is_listen ? &o->n_listen : &o->n_connect;
            if (*n == MAX_URLS) {
                fprintf(stderr, "glmserve-worker: %s: at most %d URLs\n", a, MAX_URLS);
                return -1;
            }
            gs_diag ud;
            if (strncmp(v, "ipc://", 6) && strncmp(v, "tcp://", 6)) {
                fprintf(stderr, "glmserve-worker: %s: '%s' is not an ipc:// or tcp:// URL\n", a, v);
                return -1;
            }
            /* Checked here, not at the first dial: a typo in the name's
             * syntax would otherwise look like a gateway not up yet. */
            if (!is_listen && gs_url_parse(v, NULL, &ud)) {
                fprintf(stderr, "glmserve-worker: --connect %s\n", ud.msg);
                return -1;
            }
            (is_listen ? o->listen : o->connect)[(*n)++] = v;
        } else {
            fprintf(stderr, "glmserve-worker: unknown option '%s' (--help lists them)\n", a);
            return -1;
        }
    }
    gs_log_level lvl;
    if (gs_log_parse_level(o->log_level, &lvl)) {
        fprintf(stderr, "glmserve-worker: --log-level must be debug, info, warn or error\n");
        return -1;
    }
    gs_log_set_level(lvl);
    if (!o->model) {
        fprintf(stderr, "glmserve-worker: --model is required\n");
        return -1;
    }
    if (!o->n_listen && !o->n_connect) {
        fprintf(stderr, "glmserve-worker: give at least one --listen or --connect URL\n");
        return -1;
    }
    return 0;
}

/* Signals: the handler only writes the signal number to a pipe (it may
 * run on any thread, including the BLAS library's, which exist before
 * main); the signal thread reads it and drains the server (a second one
 * ends the jobs now). Byte 0 from main ends the thread. */
static int g_sig_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (write(g_sig_pipe[1], &b, 1) < 0) {
        /* nothing to do in a handler */
    }
    errno = saved;
}

static const char *g_log_file; /* --log-file: reopened on SIGUSR1 */

static void *signal_main(void *arg)
{
    gs_server *srv = arg;
    for (;;) {
        unsigned char b;
        ssize_t n = read(g_sig_pipe[0], &b, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || b == 0)
            return NULL;
        if (b == SIGUSR1) {
            if (g_log_file && gs_log_reopen(g_log_file))
                gs_log_error("SIGUSR1: cannot reopen %s: %s", g_log_file, strerror(errno));
            continue;
        }
        gs_log_info("%s received", b == SIGTERM ? "SIGTERM" : "SIGINT");
        gs_server_drain(srv);
    }
}

/* --gpu-memory: what the KV cache leaves free of the budget (the weights
 * are in already): the activations of a prefill step of token_budget
 * tokens and of a decode step of max_seqs (its graph workspace), the
 * encoder cache (--encoder-cache, 256 MiB by default) and a margin of 2% of the
 * budget (at least 64 MiB) for allocator slack. Logs the split. */
static size_t memory_split(const gs_model *m, const options *o)
{
    int32_t budget = o->token_budget ? o->token_budget : 512, seqs = o->max_seqs ? o->max_seqs : 64;
    size_t act = gs_model_act_bytes(m, budget, seqs) + gs_model_act_bytes(m, seqs, seqs);
    size_t enc = (size_t)(o->enc_mib > 0 ? o->enc_mib : 256) << 20, fr = 0, tot = 0;
    gs_model_mem_info(m, &fr, &tot);
    size_t margin = tot / 50 > ((size_t)64 << 20) ? tot / 50 : (size_t)64 << 20;
    size_t reserve = act + enc + margin;
    gs_log_info("memory: %.2f GB budget: weights %.2f GB, activations/scratch %.2f GB, encoder "
                "cache %.2f GB, margin %.2f GB; KV pages get the rest, %.2f GB",
                tot / 1e9, gs_model_weight_bytes(m) / 1e9, act / 1e9, enc / 1e9, margin / 1e9,
                fr > reserve ? (fr - reserve) / 1e9 : 0.0);
    return reserve;
}

/* The exit status for a failure to load the model folder: 3 (no restart
 * cures it) unless it may be transient (memory, the device, I/O). */
static int folder_status(int rc)
{
    return rc == GS_ENOMEM || rc == GS_EDEVICE || rc == GS_EIO || rc == GS_EAGAIN ? 1 : 3;
}

int main(int argc, char **argv)
{
    options o;
    int pa = parse_args(argc, argv, &o);
    if (pa) {
        usage(pa > 0 ? stdout : stderr);
        return pa > 0 ? 0 : 2;
    }
    char tag[64];
    snprintf(tag, sizeof tag, "worker[%d]", (int)getpid());
    gs_log_set_tag(tag);
    gs_cpu_blas_reexec(argv); /* before any descriptor or thread exists */
    signal(SIGPIPE, SIG_IGN);
    if (pipe(g_sig_pipe)) {
        gs_log_error("fatal: pipe: %s", strerror(errno));
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    if (o.log_file) {
        if (gs_log_reopen(o.log_file)) {
            fprintf(stderr, "glmserve-worker: --log-file %s: %s\n", o.log_file, strerror(errno));
            return 1;
        }
        g_log_file = o.log_file;
    }

    int status = 1, rc;
    gs_diag d;
    gs_diag_clear(&d);
    static char cluster_key[GS_IPC_MAX_NAME + 1];
    if (o.key_file && gs_read_secret_file(o.key_file, cluster_key, sizeof cluster_key, &d)) {
        gs_log_error("fatal: --cluster-key-file: %s", d.msg);
        return 2;
    }
    gs_backend *be = NULL;
    gs_model *model = NULL;
    gs_tokenizer *tok = NULL;
    gs_server *srv = NULL;
    pthread_t sig_thread;
    int sig_started = 0;
    char path[4096], name[256], served[256];

    gs_backend_params bp = {0};
    bp.kind = strcmp(o.backend, "cuda") == 0 ? GS_BACKEND_CUDA : GS_BACKEND_CPU;
    bp.n_threads = o.threads;
    bp.idle_wait_us = o.spin_us < 0 ? GS_IDLE_SPIN_US : o.spin_us;
    bp.device = o.device;
    bp.mem_limit = o.gpu_memory;
    if ((rc = gs_backend_new(&bp, &be, &d))) {
        gs_log_error("fatal: --backend %s: %s", o.backend, d.msg[0] ? d.msg : gs_strerror(rc));
        goto out;
    }
    if (o.batch_invariant) { /* docs/engine.md: the one batch-dependent rounding */
        gs_backend_set_tuning(be, &(gs_backend_tuning){GS_TUNE_CPU_GEMM_F32, 0});
        gs_log_info("--batch-invariant: CPU prefill GEMMs in F32");
    }
    gs_log_info("loading %s%s, weights %s", o.model, o.dummy ? " (dummy weights)" : "",
                o.weights ? gs_weight_format_name(o.weights) : "as stored");
    gs_model_params mp = {o.model, be, o.dummy, 1, 1, o.weights, 0};
    if ((rc = gs_model_load(&mp, &model, &d))) {
        gs_log_error("fatal: --model %s: %s", o.model, d.msg[0] ? d.msg : gs_strerror(rc));
        status = folder_status(rc);
        goto out;
    }
    const gs_model_config *cfg = gs_model_get_config(model);
    gs_generation_config gen;
    gs_image_params ip;
    snprintf(path, sizeof path, "%s/tokenizer.json", o.model);
    if ((rc = gs_generation_config_load(o.model, cfg, &gen, &d)) ||
        (rc = gs_tokenizer_load(path, &tok, &d)) || (rc = gs_image_params_load(o.model, &ip, &d)) ||
        (rc = gs_model_check_image_params(cfg, &ip, &d))) {
        gs_log_error("fatal: --model %s: %s", o.model, d.msg);
        status = folder_status(rc);
        goto out;
    }
    snprintf(path, sizeof path, "%s/chat_template.jinja", o.model);
    {
        size_t tlen = 0;
        char *tpl = NULL;
        if (gs_read_file(path, (size_t)64 << 20, &tpl, &tlen, NULL) == 0 &&
            gs_chat_template_check(tpl, tlen, &d) != 0)
            gs_log_warn("%s is not the GLM-4.6V template this build renders (%s); prompts follow "
                        "the built-in one",
                        path, d.msg);
        free(tpl);
        gs_diag_clear(&d);
    }
    gs_log_info("model loaded: %zu MiB of %s weights", gs_model_weight_bytes(model) >> 20,
                gs_weight_format_name(gs_model_weight_format(model)));

    const int32_t max_len = o.max_model_len && o.max_model_len < cfg->text.max_position_embeddings
                                ? o.max_model_len
                                : cfg->text.max_position_embeddings;
    const gs_engine_detok_ctx dctx = {tok, 0};
    gs_server_params sp = {0};
    sp.engine.model = model;
    sp.engine.max_seqs = o.max_seqs;
    sp.engine.max_model_len = max_len;
    sp.engine.token_budget = o.token_budget;
    sp.engine.graphs = o.graphs;
    sp.engine.detok = gs_engine_tokenizer_detok(&dctx);
    /* The KV cache: --kv-memory; else with --gpu-memory what the budget
     * leaves after the weights and the activation reserve; else half the
     * free device memory on CUDA and 1 GiB on the CPU (where "free memory"
     * is the whole host's). */
    sp.engine.encoder_cache_bytes = (size_t)o.enc_mib << 20; /* 0: the engine's default */
    if (o.kv_mib > 0)
        sp.engine.kv_bytes = (size_t)o.kv_mib << 20;
    else if (o.gpu_memory)
        sp.engine.kv_reserve = memory_split(model, &o);
    else if (bp.kind == GS_BACKEND_CPU)
        sp.engine.kv_bytes = (size_t)1 << 30;
    ip.n_threads = o.image_threads > 0 ? o.image_threads : image_threads_auto(bp.kind);
    gs_log_info("images: %d thread(s) each for resize and patchify", ip.n_threads);
    sp.env =
        (gs_request_env){tok, cfg, &gen, &ip, gs_image_decode_defaults(), o.max_images, max_len, 0};
    sp.image_memory = (size_t)o.image_mib << 20;
    sp.cluster_key = cluster_key[0] ? cluster_key : NULL;
    sp.listen = o.listen;
    sp.n_listen = o.n_listen;
    sp.connect = o.connect;
    sp.n_connect = o.n_connect;
    sp.resolve_interval_ms = o.resolve_s * 1000;
    char host[128] = "localhost";
    gethostname(host, sizeof host - 1);
    snprintf(name, sizeof name, "%s@%s", o.name ? o.name : "worker", host);
    if (o.served) {
        snprintf(served, sizeof served, "%s", o.served);
    } else {
        snprintf(path, sizeof path, "%s", o.model);
        size_t n = strlen(path);
        while (n > 1 && path[n - 1] == '/')
            path[--n] = 0;
        snprintf(served, sizeof served, "%s", basename(path));
    }
    sp.name = name;
    sp.model_name = served;
    sp.prep_threads = o.prep_threads;
    sp.max_queue = o.max_queue;
    sp.heartbeat_ms = o.heartbeat_ms;
    sp.stream_interval_us = o.stream_us < 0 ? 0 : o.stream_us ? o.stream_us : -1;
    sp.idle_spin_us = o.spin_us < 0 ? GS_IDLE_SPIN_US : o.spin_us ? o.spin_us : -1;
    sp.drain_timeout_ms = o.drain_s * 1000;
    if ((rc = gs_server_new(&sp, &srv, &d))) {
        gs_log_error("fatal: %s", d.msg[0] ? d.msg : gs_strerror(rc));
        goto out;
    }
    if (pthread_create(&sig_thread, NULL, signal_main, srv)) {
        gs_log_error("fatal: cannot start the signal thread");
        goto out;
    }
    sig_started = 1;
    gs_log_info("serving %s as %s", served, name);
    rc = gs_server_run(srv);
    gs_server_flush(srv, 2000);
    if (rc) {
        gs_log_error("fatal: %s; exiting with status 1", gs_strerror(rc));
        goto out;
    }
    status = 0;
out:
    if (sig_started) {
        unsigned char zero = 0;
        if (write(g_sig_pipe[1], &zero, 1) == 1)
            pthread_join(sig_thread, NULL);
    }
    gs_server_free(srv);
    gs_tokenizer_free(tok);
    gs_model_free(model);
    gs_backend_free(be);
    if (status == 0)
        gs_log_info("exit 0");
    return status;
}
