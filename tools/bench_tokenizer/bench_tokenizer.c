/* bench_tokenizer.c - encode / decode throughput of gs_tokenizer.
 *
 *   bench_tokenizer --tokenizer FILE --text FILE [--iters N] [--chunk BYTES]
 *
 * Encodes the whole text file as one string (or, with --chunk, as pieces
 * of about BYTES each, cut after a newline once BYTES are reached: the
 * size of real prompts) N times and prints the best and median MB/s,
 * tokens/s, and decode MB/s, as a table.
 * The word cache is warm after the first iteration, as in a server (HF's
 * BPE cache is too). Single thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/file.h"
#include "worker/tokenizer/tokenizer.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One pass over the text; returns 0 or an error code. */
static int encode_pass(const gs_tokenizer *tok, const char *text, size_t len, size_t chunk,
                       gs_tokens *out, gs_diag *d)
{
    out->n = 0;
    if (!chunk)
        return gs_tokenizer_encode(tok, text, len, 0, out, d);
    size_t s = 0;
    while (s < len) {
        size_t e = s + chunk < len ? s + chunk : len;
        const char *nl = e < len ? memchr(text + e - 1, '\n', len - e + 1) : NULL;
        e = nl ? (size_t)(nl - text) + 1 : len;
        int rc = gs_tokenizer_encode(tok, text + s, e - s, 0, out, d);
        if (rc)
            return rc;
        s = e;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *tpath = NULL, *xpath = NULL;
    int iters = 5;
    long chunk = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc)
            tpath = argv[++i];
        else if (!strcmp(argv[i], "--text") && i + 1 < argc)
            xpath = argv[++i];
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc)
            iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--chunk") && i + 1 < argc)
            chunk = atol(argv[++i]);
        else {
            fprintf(stderr, "usage: %s --tokenizer FILE --text FILE [--iters N] [--chunk BYTES]\n",
                    argv[0]);
            return 2;
        }
    }
    if (!tpath || !xpath || iters < 1 || iters > 1000 || chunk < 0) {
        fprintf(stderr, "usage: %s --tokenizer FILE --text FILE [--iters N] [--chunk BYTES]\n",
                argv[0]);
        return 2;
    }
    size_t len;
    char *text = NULL;
    gs_diag d;
    gs_diag_clear(&d);
    if (gs_read_file(xpath, (size_t)1 << 30, &text, &len, &d)) {
        fprintf(stderr, "bench_tokenizer: %s\n", d.msg);
        return 1;
    }
    gs_tokenizer *tok;
    double t0 = now_s();
    if (gs_tokenizer_load(tpath, &tok, &d)) {
        fprintf(stderr, "bench_tokenizer: %s\n", d.msg);
        free(text);
        return 1;
    }
    double t_load = now_s() - t0;
    gs_tokens out = {0};
    double *t = malloc(sizeof *t * (size_t)iters);
    int rc = 0;
    for (int i = 0; i < iters && !rc; i++) {
        double a = now_s();
        rc = encode_pass(tok, text, len, (size_t)chunk, &out, &d);
        t[i] = now_s() - a;
    }
    if (rc) {
        fprintf(stderr, "bench_tokenizer: encode: %s\n", d.msg);
        return 1;
    }
    qsort(t, (size_t)iters, sizeof *t, cmp_d);
    double mb = (double)len / 1e6;
    char *dec = NULL;
    size_t dlen = 0;
    double a = now_s();
    rc = gs_tokenizer_decode(tok, out.ids, out.n, 0, &dec, &dlen, &d);
    double t_dec = now_s() - a;
    printf("| text | bytes | tokens | bytes/token | load s | encode MB/s best | median | "
           "Mtok/s | decode MB/s | round trip |\n");
    printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    char label[64] = "";
    if (chunk)
        snprintf(label, sizeof label, " (%ld-byte chunks)", chunk);
    printf("| %s%s | %zu | %zu | %.2f | %.3f | %.2f | %.2f | %.3f | %.1f | %s |\n", xpath, label,
           len, out.n, out.n ? (double)len / (double)out.n : 0.0, t_load, mb / t[0],
           mb / t[iters / 2], (double)out.n / t[0] / 1e6, rc ? 0.0 : (double)dlen / 1e6 / t_dec,
           !rc && dlen == len && !memcmp(dec, text, len) ? "identical" : "DIFFERS");
    free(dec);
    free(t);
    free(text);
    gs_tokens_free(&out);
    gs_tokenizer_free(tok);
    return 0;
}
