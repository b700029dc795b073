/* bw_common.c - bench_worker's options, job results and target dispatch. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_worker.h"
#include "common/file.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_worker [--url URL]... [--inproc --model DIR [--threads N] "
               "[--kv-memory MIB] [--batch-invariant]]\n"
               "       [--block N (several paths: jobs per alternating block, default 8)]\n"
               "       [--levels 1,64 | --rate JOBS_PER_S] [--requests N] [--max-tokens N]\n"
               "       [--prompt TEXT]\n"
               "       [--image FILE]... [--temperature T] [--seed S] [--unique 0|1]\n"
               "       [--cancel-after K] [--dump] [--stats] [--json FILE] [--job FILE]\n");
}

static int num(const char *flag, const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double x = v ? strtod(v, &end) : 0;
    if (!v || errno || end == v || *end || !(x >= lo && x <= hi)) {
        fprintf(stderr, "bench_worker: %s: expected a number in [%g, %g], got '%s'\n", flag, lo, hi,
                v ? v : "");
        return -1;
    }
    *out = x;
    return 0;
}

int bw_parse_args(int argc, char **argv, bw_options *o)
{
    memset(o, 0, sizeof *o);
    o->levels[0] = 1;
    o->n_levels = 1;
    o->max_tokens = 32;
    o->unique = 1;
    o->seed = -1;
    o->kv_mib = 256;
    o->block = 8;
    o->prompt = "Describe what you see in detail.";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "--inproc")) {
            o->inproc = 1;
            continue;
        } else if (!strcmp(a, "--dump")) {
            o->dump = 1;
            continue;
        } else if (!strcmp(a, "--stats")) {
            o->stats = 1;
            continue;
        } else if (!strcmp(a, "--batch-invariant")) {
            o->batch_invariant = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "bench_worker: %s needs a value (or is unknown)\n", a);
            return -1;
        }
        i++;
        if (!strcmp(a, "--url")) {
            if (o->n_urls == BW_MAX_URLS) {
                fprintf(stderr, "bench_worker: --url: at most %d\n", BW_MAX_URLS);
                return -1;
            }
            o->urls[o->n_urls++] = v;
        } else if (!strcmp(a, "--model")) {
            o->model = v;
        } else if (!strcmp(a, "--prompt")) {
            o->prompt = v;
        } else if (!strcmp(a, "--job")) {
            size_t len;
            gs_diag d;
            free(o->job_text);
            if (gs_read_file(v, (size_t)64 << 20, &o->job_text, &len, &d)) {
                fprintf(stderr, "bench_worker: --job: %s\n", d.msg);
                return -1;
            }
        } else if (!strcmp(a, "--json")) {
            o->json = v;
        } else if (!strcmp(a, "--image")) {
            if (o->n_images == BW_MAX_IMAGES) {
                fprintf(stderr, "bench_worker: at most %d images\n", BW_MAX_IMAGES);
                return -1;
            }
            o->images[o->n_images++] = v;
        } else if (!strcmp(a, "--levels")) {
            o->n_levels = 0;
            for (const char *p = v; *p;) {
                char *end;
                long l = strtol(p, &end, 10);
                if (end == p || l < 1 || l > 4096 || o->n_levels == BW_MAX_LEVELS ||
                    (*end && *end != ',')) {
                    fprintf(stderr, "bench_worker: --levels: expected N,N,... got '%s'\n", v);
                    return -1;
                }
                o->levels[o->n_levels++] = (int)l;
                p = *end ? end + 1 : end;
            }
        } else if (!strcmp(a, "--block")) {
            if (num(a, v, 1, 1e6, &x))
                return -1;
            o->block = (int)x;
        } else if (!strcmp(a, "--rate")) {
            if (num(a, v, 0, 1e6, &x))
                return -1;
            o->rate = x;
        } else if (!strcmp(a, "--requests")) {
            if (num(a, v, 1, 1e6, &x))
                return -1;
            o->requests = (int)x;
        } else if (!strcmp(a, "--max-tokens")) {
            if (num(a, v, 1, 1e6, &x))
                return -1;
            o->max_tokens = (int)x;
        } else if (!strcmp(a, "--threads")) {
            if (num(a, v, 0, 4096, &x))
                return -1;
            o->threads = (int)x;
        } else if (!strcmp(a, "--kv-memory")) {
            if (num(a, v, 1, 1 << 20, &x))
                return -1;
            o->kv_mib = (long)x;
        } else if (!strcmp(a, "--temperature")) {
            if (num(a, v, 0, 100, &x))
                return -1;
            o->temperature = x;
        } else if (!strcmp(a, "--seed")) {
            if (num(a, v, 0, 9e18, &x))
                return -1;
            o->seed = (long long)x;
        } else if (!strcmp(a, "--unique")) {
            if (num(a, v, 0, 1, &x))
                return -1;
            o->unique = (int)x;
        } else if (!strcmp(a, "--cancel-after")) {
            if (num(a, v, 1, 1e6, &x))
                return -1;
            o->cancel_after = (int)x;
        } else {
            fprintf(stderr, "bench_worker: unknown option '%s'\n", a);
            return -1;
        }
    }
    if ((!o->n_urls && !o->inproc) || (o->inproc && !o->model)) {
        fprintf(stderr, "bench_worker: give --url URL, --inproc with --model DIR, or both\n");
        usage(stderr);
        return -1;
    }
    return 0;
}

const char *bw_finish_name(int f)
{
    static const char *const names[] = {"none", "stop", "length", "cancelled", "error"};
    return f >= 0 && f <= 4 ? names[f] : "unknown";
}

void bw_result_free(bw_result *r)
{
    free(r->text);
    free(r->ids);
    r->text = NULL;
    r->ids = NULL;
}

int bw_result_add(bw_result *r, const int32_t *ids, int32_t n, const char *text, size_t len)
{
    if (r->n_ids + n > r->cap_ids) {
        int32_t cap = r->cap_ids ? r->cap_ids : 64;
        while (cap < r->n_ids + n)
            cap *= 2;
        int32_t *t = realloc(r->ids, (size_t)cap * sizeof *t);
        if (!t)
            return -1;
        r->ids = t;
        r->cap_ids = cap;
    }
    if (n > 0)
        memcpy(r->ids + r->n_ids, ids, (size_t)n * sizeof *ids);
    r->n_ids += n;
    if (r->text_len + len + 1 > r->text_cap) {
        size_t cap = r->text_cap ? r->text_cap : 256;
        while (cap < r->text_len + len + 1)
            cap *= 2;
        char *t = realloc(r->text, cap);
        if (!t)
            return -1;
        r->text = t;
        r->text_cap = cap;
    }
    memcpy(r->text + r->text_len, text, len);
    r->text_len += len;
    r->text[r->text_len] = 0;
    r->n_events++;
    return 0;
}

int bw_send(bw_target *t, int i, const char *json, const bw_blob *images, int n_images,
            bw_result *r)
{
    return t->send(t, i, json, images, n_images, r);
}

int bw_wait_until(bw_target *t, uint64_t deadline_ns)
{
    return t->wait_one(t, deadline_ns);
}

void bw_print_stats(bw_target *t)
{
    if (t->stats)
        t->stats(t);
}

void bw_close(bw_target *t)
{
    if (t)
        t->close(t);
}
