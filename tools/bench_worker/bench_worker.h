/* bench_worker.h - the parts of bench_worker: options, a job's result, and
 * two targets with the same verbs: a worker over IPC (bw_ipc.c) and an
 * engine in this process (bw_inproc.c). */
#ifndef GS_BENCH_WORKER_H
#define GS_BENCH_WORKER_H

#include <stddef.h>
#include <stdint.h>

#define BW_MAX_IMAGES 16
#define BW_MAX_LEVELS 16
#define BW_MAX_URLS 4

typedef struct {
    const char *urls[BW_MAX_URLS]; /* --url, repeatable: workers, each its own path */
    int n_urls;
    const char *model; /* --inproc: the model folder */
    int threads;
    long kv_mib;
    int levels[BW_MAX_LEVELS];
    int n_levels;
    int inproc; /* --inproc: with --url too, both paths in alternating blocks */
    int block;  /* --block: jobs per block when both paths run (default 8) */
    int requests, max_tokens, unique, cancel_after, dump, stats;
    int batch_invariant; /* --inproc: GS_TUNE_CPU_GEMM_F32, as the worker's --batch-invariant */
    double rate;         /* --rate: jobs per second, Poisson arrivals (open loop); 0: closed loop */
    long long seed;      /* -1: none */
    double temperature;
    const char *prompt, *json;
    char *job_text; /* --job FILE: this JSON for every job instead of a generated one (owned) */
    const char *images[BW_MAX_IMAGES];
    int n_images;
} bw_options;

/* Parses argv; 0, 1 (--help printed), -1 (error printed). */
int bw_parse_args(int argc, char **argv, bw_options *o);

typedef struct {
    char *bytes;
    size_t len;
} bw_blob;

#define BW_FINISH_NONE 0
#define BW_FINISH_STOP 1
#define BW_FINISH_LENGTH 2
#define BW_FINISH_CANCELLED 3
#define BW_FINISH_ERROR 4
const char *bw_finish_name(int finish);

/* What happened to one job; filled by the target's threads, read after
 * bw_wait_one says it ended. */
typedef struct {
    uint64_t sent_ns, first_ns; /* client clock */
    char *text;                 /* owned */
    size_t text_len, text_cap;
    int32_t *ids; /* owned */
    int32_t n_ids, cap_ids;
    int n_events;
    int finish;  /* BW_FINISH_* */
    int error;   /* GS_E* */
    int refused; /* an ERROR frame instead of events */
    int lost;    /* the connection went away first */
    char message[256];
    int32_t prompt_tokens, completion_tokens;
    uint64_t worker_ttft_ns;
    uint64_t end_ns;        /* client clock: the final event seen */
    uint64_t worker_job_ns; /* the worker's arrival -> last token (ttft + decode) */
} bw_result;
void bw_result_free(bw_result *r);
/* Appends an event's ids and text; 0 or -1 (out of memory). */
int bw_result_add(bw_result *r, const int32_t *ids, int32_t n, const char *text, size_t len);

/* A target: the verbs below dispatch through these (each implementation
 * embeds this struct first). */
typedef struct bw_target bw_target;
struct bw_target {
    int (*send)(bw_target *t, int i, const char *json, const bw_blob *images, int n_images,
                bw_result *r);
    int (*wait_one)(bw_target *t, uint64_t deadline_ns);
    void (*stats)(bw_target *t);
    void (*close)(bw_target *t);
};
int bw_ipc_open(const bw_options *o, const char *url, bw_target **out);
int bw_inproc_open(const bw_options *o, bw_target **out);
/* Sends job i (json borrowed, images borrowed for the call) whose result
 * goes to *r (borrowed until the job ends). 0 or -1. */
int bw_send(bw_target *t, int i, const char *json, const bw_blob *images, int n_images,
            bw_result *r);
/* Waits until one more job has ended: its index, or -1 once the monotonic
 * clock (gs_clock_now_ns) reaches deadline_ns. The in-process target runs
 * engine steps meanwhile (a step is never cut short, so it may return
 * after the deadline) and sleeps when it has nothing to step. */
int bw_wait_until(bw_target *t, uint64_t deadline_ns);
void bw_print_stats(bw_target *t); /* the worker's last heartbeat */
void bw_close(bw_target *t);

#endif
