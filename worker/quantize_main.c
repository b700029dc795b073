/* quantize_main.c - glmserve-quantize: a Hugging Face GLM-4.6V checkpoint
 * folder into a folder of int8 or int4 weights that glmserve loads as
 * they are (no BF16 pass; in place from the mapping on the CPU).
 *
 *   glmserve-quantize --model DIR --weights int8|int4 --out DIR2 [--threads N]
 *
 * The work is gs_quantize_folder (worker/model/quantize.h says what DIR2
 * holds); this file is its command line. Exit status 0, 1 on a runtime
 * error, 2 on bad usage; errors are one line naming the flag, file or
 * tensor. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "worker/model/quantize.h"

#define PROG "glmserve-quantize"

typedef gs_quantize_params options;

static void usage(FILE *f)
{
    fprintf(f, "usage: " PROG " --model DIR --weights int8|int4 --out DIR2 [--threads N]\n"
               "  writes DIR2: quantized model.safetensors, config.json with a\n"
               "  quantization_config section, and DIR's other files (docs/quantization.md)\n");
}

static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            return 1;
        if (!v) {
            fprintf(stderr, PROG ": %s needs a value (or is unknown: --help)\n", a);
            return -1;
        }
        i++;
        if (!strcmp(a, "--model")) {
            o->model = v;
        } else if (!strcmp(a, "--out")) {
            o->out = v;
        } else if (!strcmp(a, "--weights")) {
            if (gs_weight_format_parse(v, &o->fmt) ||
                (o->fmt != GS_WEIGHTS_INT8 && o->fmt != GS_WEIGHTS_INT4)) {
                fprintf(stderr, PROG ": --weights must be int8 or int4, got '%s'\n", v);
                return -1;
            }
        } else if (!strcmp(a, "--threads")) {
            char *end;
            long x = strtol(v, &end, 10);
            if (end == v || *end || x < 0 || x > 4096) {
                fprintf(stderr, PROG ": --threads: expected an integer in [0, 4096], got '%s'\n",
                        v);
                return -1;
            }
            o->threads = (int)x;
        } else {
            fprintf(stderr, PROG ": unknown option '%s' (--help lists them)\n", a);
            return -1;
        }
    }
    if (!o->model || !o->out || !o->fmt) {
        fprintf(stderr, PROG ": --model, --weights and --out are required\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    options o;
    int pa = argc < 2 ? -1 : parse_args(argc, argv, &o);
    if (pa) {
        usage(pa > 0 ? stdout : stderr);
        return pa > 0 ? 0 : 2;
    }
    gs_log_set_tag(PROG);
    gs_log_set_level(GS_LOG_INFO);
    gs_diag d;
    gs_diag_clear(&d);
    gs_log_info("%s -> %s (%s)", o.model, o.out, gs_weight_format_name(o.fmt));
    int rc = gs_quantize_folder(&o, &d);
    if (rc) {
        fprintf(stderr, PROG ": %s\n", d.msg[0] ? d.msg : gs_strerror(rc));
        return 1;
    }
    gs_log_info("done: %s", o.out);
    return 0;
}
