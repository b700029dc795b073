/* bench_worker.c - a client of glmserve-worker over IPC, and the same
 * workload in process, for the cost of the worker boundary and for tests.
 *
 *   bench_worker (--url URL | --inproc --model DIR [--threads N]
 *                 [--kv-memory MIB])
 *       [--levels 1,64] [--requests N] [--max-tokens N] [--prompt TEXT]
 *       [--image FILE]... [--temperature T] [--seed S] [--unique 0|1]
 *       [--cancel-after K] [--dump] [--json FILE]
 *
 * For each concurrency level C: a closed loop with C jobs in flight, a new
 * one sent as soon as one ends, until --requests jobs (default max(2C, 8))
 * have ended. Each job is the prompt (made unique per job with a numbered
 * prefix unless --unique 0, so no prefix is shared) with the images. It
 * reports per level: jobs ok / refused / failed, output tokens/s, TTFT
 * p50 / p99 as the client sees it (send -> first token event), and the
 * worker's own TTFT p50 (from the final events).
 *
 * --url: the jobs go to a running worker over its wire protocol (the
 * gateway's path minus HTTP). --inproc: the same jobs are built with the
 * same request builder and run by an engine in this process on one thread
 * (what bench_engine measures), so the two rows differ by the IPC and the
 * worker's thread hand-offs only.
 * --dump prints one JSON line per job (text, ids, finish, error, events) for tests.
 * --cancel-after K cancels each job after its K-th token event.
 * Exit status 0 when every job ended (ok, refused or failed: see the
 * counts), 1 when the worker could not be reached or a job was lost. */
#include <jansson.h>
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

static void dump(const bw_result *r, int i)
{
    json_t *ids = json_array();
    for (int32_t k = 0; k < r->n_ids; k++)
        json_array_append_new(ids, json_integer(r->ids[k]));
    json_t *o =
        json_pack("{s:i, s:s%, s:o, s:s, s:i, s:s, s:i, s:i, s:b, s:b, s:i}", "i", i, "text",
                  r->text ? r->text : "", r->text_len, "ids", ids, "finish",
                  bw_finish_name(r->finish), "error", r->error, "message", r->message,
                  "prompt_tokens", r->prompt_tokens, "completion_tokens", r->completion_tokens,
                  "refused", r->refused, "lost", r->lost, "events", r->n_events);
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    if (s)
        printf("%s\n", s);
    free(s);
    json_decref(o);
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
    bw_target *t = NULL;
    int rc = o.url ? bw_ipc_open(&o, &t) : bw_inproc_open(&o, &t);
    if (rc)
        return 1;
    int status = 0;
    json_t *report = json_array();
    if (!o.dump)
        printf("| path | concurrency | jobs ok / refused / failed | output tok/s | client TTFT p50 "
               "/ p99 (ms) | worker TTFT p50 (ms) |\n|---|---|---|---|---|---|\n");
    for (int li = 0; li < o.n_levels && !status; li++) {
        const int C = o.levels[li];
        const int N = o.requests ? o.requests : (2 * C > 8 ? 2 * C : 8);
        bw_result *res = calloc((size_t)N, sizeof *res);
        uint64_t *ttft = calloc((size_t)N, sizeof *ttft), *wttft = calloc((size_t)N, sizeof *wttft);
        if (!res || !ttft || !wttft) {
            status = 1;
            break;
        }
        uint64_t t0 = gs_clock_now_ns();
        int sent = 0, done = 0;
        while (done < N) {
            while (sent < N && sent - done < C) {
                char *js = job_json(&o, sent);
                if (!js || bw_send(t, sent, js, blobs, o.n_images, &res[sent])) {
                    fprintf(stderr, "bench_worker: cannot send job %d\n", sent);
                    free(js);
                    status = 1;
                    break;
                }
                free(js);
                sent++;
            }
            if (status)
                break;
            if (bw_wait_one(t, 120000) < 0) {
                fprintf(stderr, "bench_worker: no job ended within 120 s (%d of %d ended)\n", done,
                        N);
                status = 1;
                break;
            }
            done++;
        }
        uint64_t t1 = gs_clock_now_ns();
        int ok = 0, refused = 0, failed = 0, nt = 0, nw = 0;
        int64_t toks = 0;
        for (int i = 0; i < done && !status; i++) {
            const bw_result *r = &res[i];
            if (o.dump)
                dump(r, i);
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
        }
        for (int i = 0; i < N; i++)
            bw_result_free(&res[i]);
        const double secs = (t1 - t0) * 1e-9, tps = secs > 0 ? toks / secs : 0;
        const double p50 = pct(ttft, nt, 0.5), p99 = pct(ttft, nt, 0.99), w50 = pct(wttft, nw, 0.5);
        if (!o.dump)
            printf("| %s | %d | %d / %d / %d | %.1f | %.2f / %.2f | %.2f |\n",
                   o.url ? "worker (IPC)" : "in process", C, ok, refused, failed, tps, p50, p99,
                   w50);
        json_array_append_new(report, json_pack("{s:s, s:i, s:i, s:i, s:i, s:f, s:f, s:f, s:f}",
                                                "path", o.url ? "ipc" : "inproc", "concurrency", C,
                                                "ok", ok, "refused", refused, "failed", failed,
                                                "tokens_per_s", tps, "ttft_p50_ms", p50,
                                                "ttft_p99_ms", p99, "worker_ttft_p50_ms", w50));
        free(res);
        free(ttft);
        free(wttft);
    }
    if (o.json && !status && json_dump_file(report, o.json, JSON_INDENT(1)))
        fprintf(stderr, "bench_worker: cannot write %s\n", o.json);
    if (o.stats && !status)
        bw_print_stats(t);
    json_decref(report);
    bw_close(t);
    for (int i = 0; i < o.n_images; i++)
        free(blobs[i].bytes);
    free(o.job_text);
    return status;
}
