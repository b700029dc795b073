/* bench_worker.c - a client of glmserve-worker over IPC, and the same
 * workload in process, for the cost of the worker boundary and for tests.
 *
 *   bench_worker [--url URL]... [--inproc --model DIR [--threads N]
 *                 [--kv-memory MIB] [--batch-invariant]] [--block N]
 *       [--levels 1,64] [--requests N] [--max-tokens N] [--prompt TEXT]
 *       [--image FILE]... [--temperature T] [--seed S] [--unique 0|1]
 *       [--cancel-after K] [--dump] [--json FILE]
 *
 * For each concurrency level C: a closed loop with C jobs in flight, a new
 * one sent as soon as one ends, until --requests jobs (default max(2C, 8))
 * have ended. Each job is the prompt (made unique per job with a numbered
 * prefix unless --unique 0, so no prefix is shared) with the images. It
 * reports per level: jobs ok / refused / failed, output tokens/s, TTFT
 * p50 / p99 as the client sees it (from the moment it wanted to send the
 * job, the same for every job of a burst, to its first token event), and
 * the worker's own TTFT p50 (from the final events).
 *
 * --url: the jobs go to a running worker over its wire protocol (the
 * gateway's path minus HTTP). --inproc: the same jobs are built with the
 * same request builder and run by an engine in this process on one thread
 * (what bench_engine measures), so the two rows differ by the IPC and the
 * worker's thread hand-offs only. --url may be given up to 4 times (for
 * workers started with different flags: an A/B of a worker setting).
 * Several paths given: they run the same jobs in alternating blocks of
 * --block jobs (at least 2C), each path's tokens/s over the time of its
 * own blocks, so that the machine's slow and fast spells (a shared VM's
 * neighbours, clock changes) fall on all alike: the way to compare them.
 * The table adds each path's job time p50 as the client saw it (send ->
 * final event) and as the worker measured it (arrival -> last token).
 * --rate R: instead of the levels, one open-loop run: jobs arrive at R
 * per second with exponential gaps (the same schedule on every path),
 * whatever is in flight, as a server's users do; TTFT counts from each
 * job's arrival time, also when the in-process engine was in a step then
 * (the step is not cut short, as a server's is not). The closed loop's
 * in-process client sends its next jobs exactly between two steps, which
 * no client of a server can; this measures the two paths under the same
 * arrivals. The concurrency column gives the jobs in flight on average.
 * --batch-invariant: the in-process engine's CPU prefill GEMMs in F32, as
 * glmserve-worker --batch-invariant, so that both paths give the same
 * tokens however their jobs were batched (tests).
 * --dump prints one JSON line per job (text, ids, finish, error, events) for tests.
 * --cancel-after K cancels each job after its K-th token event.
 * Exit status 0 when every job ended (ok, refused or failed: see the
 * counts), 1 when the worker could not be reached or a job was lost. */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_worker.h"
#include "common/clock.h"
#include "common/file.h"
#include "common/log.h"
#include "kernels/kernels.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(uint64_t *v, int n, double p)
{
    if (n == 0)
        return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_u64);
    int i = (int)(p * (n - 1) + 0.5);
    return v[i] * 1e-6;
}

/* The job JSON of request i. Owned text (free()). */
static char *job_json(const bw_options *o, int i)
{
    if (o->job_text)
        return strdup(o->job_text);
    char prefix[64] = "";
    if (o->unique)
        snprintf(prefix, sizeof prefix, "Request %d. ", i);
    json_t *content = json_array();
    for (int k = 0; k < o->n_images; k++)
        json_array_append_new(content, json_pack("{s:s}", "type", "image"));
    char *text = malloc(strlen(prefix) + strlen(o->prompt) + 1);
    if (!text)
        return NULL;
    strcpy(text, prefix);
    strcat(text, o->prompt);
    json_array_append_new(content, json_pack("{s:s, s:s}", "type", "text", "text", text));
    free(text);
    json_t *job = json_pack("{s:[{s:s, s:o}], s:i, s:f}", "messages", "role", "user", "content",
                            content, "max_tokens", o->max_tokens, "temperature", o->temperature);
    if (o->seed >= 0)
        json_object_set_new(job, "seed", json_integer(o->seed));
    char *s = job ? json_dumps(job, JSON_COMPACT) : NULL;
    json_decref(job);
    return s;
}

static void dump(const bw_result *r, int i, const char *path)
{
    json_t *ids = json_array();
    for (int32_t k = 0; k < r->n_ids; k++)
        json_array_append_new(ids, json_integer(r->ids[k]));
    json_t *o =
        json_pack("{s:i, s:s, s:s%, s:o, s:s, s:i, s:s, s:i, s:i, s:b, s:b, s:i}", "i", i, "path",
                  path, "text", r->text ? r->text : "", r->text_len, "ids", ids, "finish",
                  bw_finish_name(r->finish), "error", r->error, "message", r->message,
                  "prompt_tokens", r->prompt_tokens, "completion_tokens", r->completion_tokens,
                  "refused", r->refused, "lost", r->lost, "events", r->n_events);
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    if (s)
        printf("%s\n", s);
    free(s);
    json_decref(o);
}

/* One path the jobs take (a worker over IPC, or the engine in process)
 * and what it measured at the current level. */
typedef struct {
    bw_target *t;
    const char *name, *key;
    bw_result *res; /* [N] */
    int done;       /* jobs ended (and sent) so far */
    uint64_t wall_ns;
} bw_path;

/* Runs jobs p->done .. p->done + n - 1 and adds the time from the first
 * send to the last end to p->wall_ns. Closed loop (at NULL): C in flight,
 * a new one sent as soon as one ends. Open loop: job i arrives at at[i]
 * (ns, relative to the first job of the run; the block starts its clock
 * at its own first job), whatever is in flight; a job whose time comes
 * while the in-process engine is in a step is sent after the step, its
 * clock started at its time, as a server's would be. 0, or 1 after an
 * error (printed). */
static int run_jobs(bw_path *p, const bw_options *o, const bw_blob *blobs, int C,
                    const uint64_t *at, int n)
{
    const int first = p->done, end = first + n;
    int sent = first;
    const uint64_t t0 = gs_clock_now_ns(), base = at ? at[first] : 0;
    while (p->done < end) {
        /* Closed loop: the jobs sent now were all wanted at this moment (a
         * burst: the first C, or those whose predecessors ended in one
         * step): their clocks start here on both paths, so that building a
         * job in process (or encoding it for the worker) is charged to the
         * jobs after it, as a worker's serial receive and build are. */
        const uint64_t now = gs_clock_now_ns();
        while (sent < end && (at ? t0 + at[sent] - base <= now : sent - p->done < C)) {
            p->res[sent].sent_ns = at ? t0 + at[sent] - base : now;
            char *js = job_json(o, sent);
            if (!js || bw_send(p->t, sent, js, blobs, o->n_images, &p->res[sent])) {
                fprintf(stderr, "bench_worker: cannot send job %d\n", sent);
                free(js);
                return 1;
            }
            free(js);
            sent++;
        }
        const int waiting = at && sent < end; /* for the next arrival, or for an end */
        const uint64_t deadline =
            waiting ? t0 + at[sent] - base : gs_clock_now_ns() + (uint64_t)120 * 1000000000u;
        if (bw_wait_until(p->t, deadline) >= 0) {
            p->done++;
        } else if (!waiting) {
            fprintf(stderr, "bench_worker: no job ended within 120 s (%d of %d ended)\n",
                    p->done - first, n);
            return 1;
        }
    }
    p->wall_ns += gs_clock_now_ns() - t0;
    return 0;
}

/* Open loop: N arrival times (ns from the first) with exponential gaps of
 * mean 1/rate, from a fixed seed so that every path and every run gets
 * the same schedule. Owned (free()). */
static uint64_t *arrivals(double rate, int N)
{
    uint64_t *at = malloc((size_t)N * sizeof *at);
    uint64_t x = 0x9E3779B97F4A7C15u, t = 0;
    for (int i = 0; at && i < N; i++) {
        at[i] = t;
        x ^= x << 13; /* xorshift64 */
        x ^= x >> 7;
        x ^= x << 17;
        double u = ((x >> 11) + 0.5) * (1.0 / 9007199254740992.0); /* (0, 1) */
        t += (uint64_t)(-log(u) / rate * 1e9);
    }
    return at;
}

/* Prints (or dumps) what path p measured at level C and adds it to report. */
static void report_path(const bw_path *p, const bw_options *o, int C, json_t *report)
{
    const int n = p->done;
    uint64_t *ttft = calloc((size_t)n + 1, sizeof(uint64_t)),
             *wttft = calloc((size_t)n + 1, sizeof(uint64_t));
    uint64_t *cjob = calloc((size_t)n + 1, sizeof(uint64_t)),
             *wjob = calloc((size_t)n + 1, sizeof(uint64_t));
    int ok = 0, refused = 0, failed = 0, nt = 0, nw = 0, nj = 0;
    int64_t toks = 0;
    for (int i = 0; i < n && ttft && wttft && cjob && wjob; i++) {
        const bw_result *r = &p->res[i];
        if (o->dump)
            dump(r, i, p->key);
        if (r->refused)
            refused++;
        else if (r->finish == BW_FINISH_ERROR || r->lost)
            failed++;
        else
            ok++;
        toks += r->completion_tokens;
        if (r->first_ns)
            ttft[nt++] = r->first_ns - r->sent_ns;
        if (r->worker_ttft_ns)
            wttft[nw++] = r->worker_ttft_ns;
        if (r->end_ns && r->worker_job_ns) { /* how long the job took, seen from each side */
            cjob[nj] = r->end_ns - r->sent_ns;
            wjob[nj++] = r->worker_job_ns;
        }
    }
    const double secs = p->wall_ns * 1e-9, tps = secs > 0 ? toks / secs : 0;
    /* Open loop: the jobs in flight on average (their client-side times
     * over the wall time), in the concurrency column. */
    double busy = 0;
    for (int i = 0; i < n; i++)
        if (p->res[i].end_ns)
            busy += (p->res[i].end_ns - p->res[i].sent_ns) * 1e-9;
    char level[64];
    if (o->rate > 0)
        snprintf(level, sizeof level, "%g/s: %.1f in flight", o->rate, secs > 0 ? busy / secs : 0);
    else
        snprintf(level, sizeof level, "%d", C);
    const double p50 = pct(ttft, nt, 0.5), p99 = pct(ttft, nt, 0.99), w50 = pct(wttft, nw, 0.5);
    const double c50 = pct(cjob, nj, 0.5), j50 = pct(wjob, nj, 0.5);
    if (!o->dump)
        printf("| %s | %s | %d / %d / %d | %.1f | %.2f / %.2f | %.2f | %.2f / %.2f |\n", p->name,
               level, ok, refused, failed, tps, p50, p99, w50, c50, j50);
    json_array_append_new(report,
                          json_pack("{s:s, s:i, s:f, s:f, s:i, s:i, s:i, s:f, s:f, s:f, s:f, s:f, "
                                    "s:f}",
                                    "path", p->key, "concurrency", C, "rate", o->rate, "in_flight",
                                    secs > 0 ? busy / secs : 0.0, "ok", ok, "refused", refused,
                                    "failed", failed, "tokens_per_s", tps, "ttft_p50_ms", p50,
                                    "ttft_p99_ms", p99, "worker_ttft_p50_ms", w50,
                                    "client_job_p50_ms", c50, "worker_job_p50_ms", j50));
    free(ttft);
    free(wttft);
    free(cjob);
    free(wjob);
}

int main(int argc, char **argv)
{
    gs_cpu_blas_reexec(argv);
    bw_options o;
    int pa = bw_parse_args(argc, argv, &o);
    if (pa)
        return pa > 0 ? 0 : 2;
    gs_log_set_tag("bench_worker");
    gs_log_set_level(GS_LOG_WARN);
    bw_blob blobs[BW_MAX_IMAGES] = {{0}};
    for (int i = 0; i < o.n_images; i++) {
        gs_diag d;
        if (gs_read_file(o.images[i], (size_t)256 << 20, &blobs[i].bytes, &blobs[i].len, &d)) {
            fprintf(stderr, "bench_worker: --image: %s\n", d.msg);
            return 2;
        }
    }
    /* The in-process path first, as the tables list it, then each worker
     * in the order given ("worker (IPC)" alone, "worker 1 (IPC)", ... when
     * several are compared). */
    bw_path paths[1 + BW_MAX_URLS] = {{NULL, "in process", "inproc", NULL, 0, 0}};
    char names[BW_MAX_URLS][2][32];
    int np = 0, status = 0;
    if (o.inproc) {
        if (bw_inproc_open(&o, &paths[np].t))
            status = 1;
        else
            np++;
    }
    for (int u = 0; u < o.n_urls && !status; u++) {
        if (o.n_urls == 1) {
            snprintf(names[u][0], sizeof names[u][0], "worker (IPC)");
            snprintf(names[u][1], sizeof names[u][1], "ipc");
        } else {
            snprintf(names[u][0], sizeof names[u][0], "worker %d (IPC)", u + 1);
            snprintf(names[u][1], sizeof names[u][1], "ipc%d", u + 1);
        }
        paths[np] = (bw_path){NULL, names[u][0], names[u][1], NULL, 0, 0};
        if (bw_ipc_open(&o, o.urls[u], &paths[np].t))
            status = 1;
        else
            np++;
    }
    json_t *report = json_array();
    if (!o.dump && !status)
        printf("| path | concurrency | jobs ok / refused / failed | output tok/s | client TTFT p50 "
               "/ p99 (ms) | worker TTFT p50 (ms) | job p50: client / worker (ms) |\n"
               "|---|---|---|---|---|---|---|\n");
    /* --rate: one open-loop run instead of the levels. */
    const int n_levels = o.rate > 0 ? 1 : o.n_levels;
    for (int li = 0; li < n_levels && !status; li++) {
        const int C = o.rate > 0 ? 0 : o.levels[li];
        const int N = o.requests ? o.requests : (2 * C > 8 ? 2 * C : 8);
        /* Several paths: blocks of jobs alternate between them (the same
         * jobs in the same order on each), so that the machine's slow and
         * fast spells fall on both alike. A block holds at least 2C jobs
         * so that it reaches concurrency C (open loop: at least 128, so
         * that it is more than its own start and end). */
        const int min_block = o.rate > 0 ? 128 : 2 * C;
        const int block = np > 1 ? (o.block > min_block ? o.block : min_block) : N;
        uint64_t *at = o.rate > 0 ? arrivals(o.rate, N) : NULL;
        if (o.rate > 0 && !at)
            status = 1;
        for (int k = 0; k < np && !status; k++) {
            paths[k].done = 0;
            paths[k].wall_ns = 0;
            if (!(paths[k].res = calloc((size_t)N, sizeof *paths[k].res)))
                status = 1;
        }
        for (int b = 0; !status && paths[np - 1].done < N; b++)
            for (int k = 0; k < np && !status; k++) {
                int n = N - paths[k].done < block ? N - paths[k].done : block;
                status = run_jobs(&paths[k], &o, blobs, C, at, n);
            }
        free(at);
        for (int k = 0; k < np; k++) {
            if (!status)
                report_path(&paths[k], &o, C, report);
            if (paths[k].res)
                for (int i = 0; i < N; i++)
                    bw_result_free(&paths[k].res[i]);
            free(paths[k].res);
            paths[k].res = NULL;
        }
    }
    if (o.json && !status && json_dump_file(report, o.json, JSON_INDENT(1)))
        fprintf(stderr, "bench_worker: cannot write %s\n", o.json);
    if (o.stats && !status && o.n_urls)
        bw_print_stats(paths[np - 1].t);
    json_decref(report);
    for (int k = 0; k < np; k++)
        bw_close(paths[k].t);
    for (int i = 0; i < o.n_images; i++)
        free(blobs[i].bytes);
    free(o.job_text);
    return status;
}
