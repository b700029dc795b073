/* tokcli.c - gs_tokenizer and the chat template from the command line, for
 * comparisons with the Python reference (compare.py --check):
 *
 *   gs-tokcli encode TOKENIZER_JSON   stdin: one JSON string per line;
 *                                     stdout: one JSON array of ids per line
 *   gs-tokcli decode TOKENIZER_JSON   stdin: one JSON array of ids per line;
 *                                     stdout: one JSON string per line
 *   gs-tokcli render                  stdin: one JSON object per line
 *                                     {"messages", "tools", "enable_thinking":
 *                                     true|false|null, "add_generation_prompt"};
 *                                     stdout: the rendered JSON string, or
 *                                     {"error": code name, "msg": diag}
 * Errors of one line are printed as {"error": ...} and the next line goes on. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/tokenizer/chat_template.h"
#include "worker/tokenizer/tokenizer.h"

static void print_error(int rc, const gs_diag *d)
{
    json_t *e = json_pack("{s:s, s:s}", "error", gs_err_name(rc), "msg", d->msg);
    char *s = json_dumps(e, JSON_COMPACT);
    puts(s);
    free(s);
    json_decref(e);
}

static int do_line(const char *cmd, const gs_tokenizer *tok, const char *line)
{
    json_error_t je;
    json_t *in = json_loads(line, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je), *res = NULL;
    gs_diag d;
    gs_diag_clear(&d);
    int rc = 0;
    if (!in) {
        gs_diag_set(&d, GS_EFORMAT, "bad input line: %s", je.text);
        rc = GS_EFORMAT;
    } else if (!strcmp(cmd, "encode")) {
        gs_tokens t = {0};
        rc = gs_tokenizer_encode(tok, json_string_value(in), json_string_length(in), 0, &t, &d);
        if (!rc) {
            res = json_array();
            for (size_t i = 0; i < t.n; i++)
                json_array_append_new(res, json_integer(t.ids[i]));
        }
        gs_tokens_free(&t);
    } else if (!strcmp(cmd, "decode")) {
        size_t n = json_array_size(in);
        int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
        for (size_t i = 0; ids && i < n; i++)
            ids[i] = (int32_t)json_integer_value(json_array_get(in, i));
        char *s = NULL;
        size_t len = 0;
        rc = ids ? gs_tokenizer_decode(tok, ids, n, 0, &s, &len, &d) : GS_ENOMEM;
        if (!rc)
            res = json_stringn(s, len);
        free(s);
        free(ids);
    } else {
        json_t *e = json_object_get(in, "enable_thinking");
        gs_chat_options o = {!e || json_is_null(e) ? GS_THINK_DEFAULT
                             : json_is_true(e)     ? GS_THINK_ON
                                                   : GS_THINK_OFF,
                             json_is_true(json_object_get(in, "add_generation_prompt"))};
        gs_chat_result r;
        rc = gs_chat_render_ex(json_object_get(in, "messages"), json_object_get(in, "tools"), &o,
                               &r, &d);
        if (!rc)
            res = json_stringn(r.text, r.len);
        gs_chat_result_free(&r);
    }
    if (rc) {
        print_error(rc, &d);
    } else {
        char *s = json_dumps(res, JSON_ENCODE_ANY | JSON_COMPACT);
        puts(s ? s : "null");
        free(s);
    }
    json_decref(res);
    json_decref(in);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "render") && argc < 3) ||
        (strcmp(argv[1], "encode") && strcmp(argv[1], "decode") && strcmp(argv[1], "render"))) {
        fprintf(stderr, "usage: %s encode|decode TOKENIZER_JSON | render  (JSON lines on stdin)\n",
                argv[0]);
        return 2;
    }
    gs_tokenizer *tok = NULL;
    gs_diag d;
    gs_diag_clear(&d);
    if (strcmp(argv[1], "render") && gs_tokenizer_load(argv[2], &tok, &d)) {
        fprintf(stderr, "gs-tokcli: %s\n", d.msg);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        if (line[n - 1] == '\n')
            line[n - 1] = 0;
        do_line(argv[1], tok, line);
    }
    free(line);
    gs_tokenizer_free(tok);
    return 0;
}
