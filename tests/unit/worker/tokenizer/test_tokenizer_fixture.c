/* test_tokenizer_fixture.c - the tokenizer, detokenizer, chat template and
 * prompt ids against the references made by transformers / tokenizers
 * (tests/fixtures/ref/{tokenizer,chat,model}_cases.json, docs/fixtures.md).
 * A missing fixture file is a failure, not a skip. */
#include <jansson.h>

#include "test.h"
#include "worker/tokenizer/chat_template.h"
#include "worker/tokenizer/detok.h"
#include "worker/tokenizer/tokenizer.h"

static gs_tokenizer *tok;

static json_t *load_json(const char *rel)
{
    json_error_t je;
    json_t *j = json_load_file(gs_fixture_path(rel), 0, &je);
    if (!j)
        fprintf(stderr, "  cannot load %s: %s\n", gs_fixture_path(rel), je.text);
    return j;
}

static void test_load(void)
{
    gs_diag d;
    gs_diag_clear(&d);
    int rc = gs_tokenizer_load(gs_fixture_path("tiny-glm4v/tokenizer.json"), &tok, &d);
    GS_ASSERT_MSG(rc == 0, "load: %s", d.msg);
    json_t *v = load_json("VERSIONS.json");
    GS_ASSERT(v);
    json_t *sp = json_object_get(v, "special_token_ids");
    GS_ASSERT(json_object_size(sp) > 0);
    const char *k;
    json_t *id;
    json_object_foreach(sp, k, id)
    {
        GS_ASSERT_EQ(gs_tokenizer_token_id(tok, k), json_integer_value(id));
        GS_ASSERT_EQ(gs_tokenizer_is_special(tok, (int32_t)json_integer_value(id)), 1);
    }
    json_decref(v);
    GS_ASSERT_EQ(gs_tokenizer_is_special(tok, 300), 0);
}

/* Streams ids through a detokenizer; returns the owned concatenation. */
static char *stream(const int32_t *ids, size_t n, unsigned flags)
{
    gs_detok *dt;
    if (gs_detok_new(tok, flags, &dt))
        return NULL;
    size_t cap = 64, len = 0;
    char *s = malloc(cap);
    for (size_t i = 0; i <= n && s; i++) {
        const char *p;
        size_t pl;
        if (i < n) {
            if (gs_detok_push(dt, ids[i], &p, &pl)) {
                free(s);
                s = NULL;
                break;
            }
        } else {
            gs_detok_flush(dt, &p, &pl);
        }
        while (len + pl + 1 > cap)
            cap *= 2;
        char *t = realloc(s, cap);
        if (!t) {
            free(s);
            s = NULL;
            break;
        }
        s = t;
        memcpy(s + len, p, pl);
        len += pl;
        s[len] = 0;
    }
    gs_detok_free(dt);
    return s;
}

static void test_tokenizer_cases(void)
{
    GS_ASSERT(tok);
    json_t *doc = load_json("ref/tokenizer_cases.json");
    GS_ASSERT_MSG(doc, "ref/tokenizer_cases.json is missing");
    json_t *cases = json_object_get(doc, "cases");
    size_t n_ok = 0, n = json_array_size(cases);
    GS_ASSERT(n > 0);
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(cases, i), *ids = json_object_get(c, "ids"),
               *toks = json_object_get(c, "tokens");
        const char *text = json_string_value(json_object_get(c, "text"));
        size_t tlen = json_string_length(json_object_get(c, "text"));
        gs_tokens t = {0};
        gs_diag d;
        int rc = gs_tokenizer_encode(tok, text, tlen, 0, &t, &d);
        int same = rc == 0 && t.n == json_array_size(ids);
        for (size_t k = 0; same && k < t.n; k++) {
            same = t.ids[k] == json_integer_value(json_array_get(ids, k));
            const char *ts = gs_tokenizer_id_to_token(tok, t.ids[k]);
            same = same && ts && !strcmp(ts, json_string_value(json_array_get(toks, k)));
        }
        if (!same) {
            fprintf(stderr, "  case %zu %s: ids differ (got %zu ids, rc %d):", i,
                    json_dumps(json_object_get(c, "text"), JSON_ENCODE_ANY), t.n, rc);
            for (size_t k = 0; k < t.n; k++)
                fprintf(stderr, " %d", t.ids[k]);
            fprintf(stderr, "\n    want %s\n", json_dumps(ids, 0));
        }
        char *dec = NULL;
        size_t dl = 0;
        int dok = rc == 0 && gs_tokenizer_decode(tok, t.ids, t.n, 0, &dec, &dl, &d) == 0 &&
                  !strcmp(dec, json_string_value(json_object_get(c, "decoded")));
        char *st = rc == 0 ? stream(t.ids, t.n, 0) : NULL;
        int sok = st && dec && !strcmp(st, dec);
        if (!dok || !sok)
            fprintf(stderr, "  case %zu: decode %s, stream %s\n", i, dok ? "ok" : "DIFFERS",
                    sok ? "ok" : "DIFFERS");
        n_ok += same && dok && sok;
        free(dec);
        free(st);
        gs_tokens_free(&t);
    }
    fprintf(stderr, "  tokenizer cases: %zu/%zu identical\n", n_ok, n);
    json_decref(doc);
    GS_ASSERT_EQ(n_ok, n);
}

static gs_think_mode think_of(json_t *c)
{
    json_t *e = json_object_get(c, "enable_thinking");
    return !e || json_is_null(e) ? GS_THINK_DEFAULT : json_is_true(e) ? GS_THINK_ON : GS_THINK_OFF;
}

/* Renders and tokenises every case of a ref file with "messages",
 * "rendered", "image_grid_thw" and "input_ids". */
static size_t check_chat_file(const char *rel, int32_t image_id, int32_t merge, size_t *n_out)
{
    json_t *doc = load_json(rel);
    if (!doc)
        return 0;
    json_t *cases = json_object_get(doc, "cases");
    size_t n = json_array_size(cases), n_ok = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(cases, i), *want_ids = json_object_get(c, "input_ids"),
               *grids = json_object_get(c, "image_grid_thw");
        const char *name = json_string_value(json_object_get(c, "name"));
        json_t *agp = json_object_get(c, "add_generation_prompt");
        gs_chat_options o = {think_of(c), agp ? json_is_true(agp) : 1};
        gs_chat_result r;
        gs_diag d;
        gs_diag_clear(&d);
        int rc = gs_chat_render_ex(json_object_get(c, "messages"), NULL, &o, &r, &d);
        const char *want = json_string_value(json_object_get(c, "rendered"));
        int rok = rc == 0 && !strcmp(r.text, want);
        if (!rok)
            fprintf(stderr, "  %s %s: rendered differs (rc %d %s)\n    got  %s\n    want %s\n", rel,
                    name, rc, d.msg, rc ? "" : json_dumps(json_string(r.text), JSON_ENCODE_ANY),
                    json_dumps(json_object_get(c, "rendered"), JSON_ENCODE_ANY));
        int32_t *ids = NULL, n_ids = 0;
        int iok = 0;
        if (rok) {
            size_t ng = json_array_size(grids);
            int32_t counts[16];
            for (size_t g = 0; g < ng && g < 16; g++) {
                json_t *thw = json_array_get(grids, g);
                counts[g] = (int32_t)(json_integer_value(json_array_get(thw, 0)) *
                                      json_integer_value(json_array_get(thw, 1)) *
                                      json_integer_value(json_array_get(thw, 2)) / (merge * merge));
            }
            if (ng) {
                iok = (int)ng == r.n_images && gs_prompt_encode(tok, r.text, image_id, counts,
                                                                (int)ng, &ids, &n_ids, &d) == 0;
            } else {
                gs_tokens t = {0};
                iok = gs_tokenizer_encode(tok, r.text, r.len, 0, &t, &d) == 0;
                ids = t.ids;
                n_ids = (int32_t)t.n;
            }
            iok = iok && (size_t)n_ids == json_array_size(want_ids);
            for (int32_t k = 0; iok && k < n_ids; k++)
                iok = ids[k] == json_integer_value(json_array_get(want_ids, (size_t)k));
            if (!iok)
                fprintf(stderr, "  %s %s: input_ids differ (%d vs %zu ids)\n", rel, name, n_ids,
                        json_array_size(want_ids));
        }
        n_ok += rok && iok;
        free(ids);
        if (rc == 0)
            gs_chat_result_free(&r);
    }
    json_decref(doc);
    *n_out = n;
    return n_ok;
}

static void test_chat_cases(void)
{
    GS_ASSERT(tok);
    json_t *cfg = load_json("tiny-glm4v/config.json");
    GS_ASSERT_MSG(cfg, "tiny-glm4v/config.json is missing");
    int32_t image_id = (int32_t)json_integer_value(json_object_get(cfg, "image_token_id"));
    int32_t merge = (int32_t)json_integer_value(
        json_object_get(json_object_get(cfg, "vision_config"), "spatial_merge_size"));
    json_decref(cfg);
    GS_ASSERT_EQ(image_id, gs_tokenizer_token_id(tok, "<|image|>"));
    GS_ASSERT(merge > 0);
    size_t n1 = 0, n2 = 0;
    size_t ok1 = check_chat_file("ref/chat_cases.json", image_id, merge, &n1);
    size_t ok2 = check_chat_file("ref/model_cases.json", image_id, merge, &n2);
    fprintf(stderr, "  chat cases: %zu/%zu, model cases: %zu/%zu identical\n", ok1, n1, ok2, n2);
    GS_ASSERT(n1 >= 16);
    GS_ASSERT(n2 >= 3);
    GS_ASSERT_EQ(ok1, n1);
    GS_ASSERT_EQ(ok2, n2);
}

static void test_template_is_implemented(void)
{
    size_t len;
    char *t = gs_test_read_file(gs_fixture_path("tiny-glm4v/chat_template.jinja"), &len);
    GS_ASSERT_MSG(t, "chat_template.jinja is missing");
    gs_diag d;
    int rc = gs_chat_template_check(t, len, &d);
    t[len / 2] ^= 1;
    int rc2 = gs_chat_template_check(t, len, &d);
    free(t);
    GS_ASSERT_OK(rc);
    GS_ASSERT_EQ(rc2, GS_EUNSUPPORTED);
}

int main(void)
{
    GS_RUN(test_load);
    GS_RUN(test_tokenizer_cases);
    GS_RUN(test_chat_cases);
    GS_RUN(test_template_is_implemented);
    gs_tokenizer_free(tok);
    return gs_test_summary();
}
