/* test_chat_template.c - the GLM-4.6V chat template renderer.
 * References: chat_template_cases.json beside this file, rendered by
 * transformers' apply_chat_template (gen_chat_cases.py) for what the
 * fixture cases do not cover (tools, tool calls, tool responses, inline
 * <think>, Unicode strip, /nothink edge cases); Python's float repr for
 * the tojson number format. Plus the refusals: every malformed input is
 * GS_EINVAL with a diag naming the message and field. */
#include <jansson.h>

#include "test.h"
#include "worker/tokenizer/chat_json.h"
#include "worker/tokenizer/chat_template.h"

static void test_reference_cases(void)
{
    json_error_t je;
    json_t *doc =
        json_load_file(GS_TEST_DATA_DIR "/../chat_template_cases.json", JSON_ALLOW_NUL, &je);
    GS_ASSERT_MSG(doc, "chat_template_cases.json: %s", je.text);
    json_t *cases = json_object_get(doc, "cases");
    size_t n = json_array_size(cases), ok = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(cases, i), *e = json_object_get(c, "enable_thinking");
        gs_chat_options o = {!e || json_is_null(e) ? GS_THINK_DEFAULT
                             : json_is_true(e)     ? GS_THINK_ON
                                                   : GS_THINK_OFF,
                             json_is_true(json_object_get(c, "add_generation_prompt"))};
        gs_chat_result r;
        gs_diag d;
        gs_diag_clear(&d);
        int rc = gs_chat_render_ex(json_object_get(c, "messages"), json_object_get(c, "tools"), &o,
                                   &r, &d);
        json_t *want = json_object_get(c, "rendered");
        int same = rc == 0 && r.len == json_string_length(want) &&
                   !memcmp(r.text, json_string_value(want), r.len) &&
                   r.n_images == json_integer_value(json_object_get(c, "n_images")) &&
                   r.n_videos == json_integer_value(json_object_get(c, "n_videos"));
        if (!same) {
            json_t *g = rc ? json_null() : json_stringn(r.text, r.len);
            char *gs = json_dumps(g, JSON_ENCODE_ANY), *ws = json_dumps(want, JSON_ENCODE_ANY);
            fprintf(stderr, "  %s: rc %d %s\n    got  %s\n    want %s\n",
                    json_string_value(json_object_get(c, "name")), rc, d.msg, gs, ws);
            free(gs);
            free(ws);
            json_decref(g);
        }
        ok += same;
        if (!rc)
            gs_chat_result_free(&r);
    }
    json_decref(doc);
    fprintf(stderr, "  %zu/%zu reference renderings identical\n", ok, n);
    GS_ASSERT(n >= 19);
    GS_ASSERT_EQ(ok, n);
}

static int render_str(const char *messages, const char *tools, gs_think_mode think, int gen,
                      gs_chat_result *r, gs_diag *d)
{
    json_t *m = json_loads(messages, 0, NULL), *t = tools ? json_loads(tools, 0, NULL) : NULL;
    gs_chat_options o = {think, gen};
    gs_diag_clear(d);
    int rc = m ? gs_chat_render_ex(m, t, &o, r, d) : 999;
    json_decref(m);
    json_decref(t);
    return rc;
}

static void test_media_and_openai_forms(void)
{
    gs_chat_result a, b;
    gs_diag d;
    /* image_url counts as an image, like {"type": "image"} */
    GS_ASSERT_OK(render_str("[{\"role\":\"system\",\"content\":[{\"type\":\"image\"}]},"
                            "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
                            "{\"type\":\"image_url\",\"image_url\":{\"url\":\"x\"}},"
                            "{\"type\":\"video_url\"}]},"
                            "{\"role\":\"tool\",\"content\":[{\"type\":\"image_url\"}]}]",
                            NULL, GS_THINK_DEFAULT, 1, &a, &d));
    GS_ASSERT_EQ(a.n_images, 3);
    GS_ASSERT_EQ(a.n_videos, 1);
    GS_ASSERT(a.media[0].kind == GS_MEDIA_IMAGE && a.media[0].message == 0 && a.media[0].item == 0);
    GS_ASSERT(a.media[1].kind == GS_MEDIA_IMAGE && a.media[1].message == 1 && a.media[1].item == 1);
    GS_ASSERT(a.media[2].kind == GS_MEDIA_VIDEO && a.media[2].message == 1 && a.media[2].item == 2);
    GS_ASSERT(a.media[3].kind == GS_MEDIA_IMAGE && a.media[3].message == 2);
    GS_ASSERT_STREQ(a.text, "[gMASK]<sop><|system|>\n<|begin_of_image|><|image|><|end_of_image|>"
                            "<|user|>\na<|begin_of_image|><|image|><|end_of_image|><|begin_of_"
                            "video|><|video|><|end_of_video|><|observation|>\n<tool_response>\n<|"
                            "begin_of_image|><|image|><|end_of_image|>\n</tool_response><|"
                            "assistant|>\n");
    gs_chat_result_free(&a);
    /* arguments as a JSON string (OpenAI) render as the object form */
    GS_ASSERT_OK(render_str("[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\","
                            "\"tool_calls\":[{\"type\":\"function\",\"function\":{\"name\":\"f\","
                            "\"arguments\":\"{\\\"a\\\": 1.5, \\\"b\\\": \\\"x\\\"}\"}}]}]",
                            NULL, GS_THINK_OFF, 0, &a, &d));
    GS_ASSERT_OK(render_str("[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\","
                            "\"tool_calls\":[{\"type\":\"function\",\"function\":{\"name\":\"f\","
                            "\"arguments\":{\"a\": 1.5, \"b\": \"x\"}}}]}]",
                            NULL, GS_THINK_OFF, 0, &b, &d));
    GS_ASSERT_STREQ(a.text, b.text);
    GS_ASSERT_STREQ(a.text, "[gMASK]<sop><|user|>\nq/nothink<|assistant|>\n<think></think>\n"
                            "<tool_call>f\n<arg_key>a</arg_key>\n<arg_value>1.5</arg_value>\n"
                            "<arg_key>b</arg_key>\n<arg_value>x</arg_value>\n</tool_call>");
    gs_chat_result_free(&a);
    gs_chat_result_free(&b);
    /* plain API, default options */
    json_t *m = json_loads("[{\"role\":\"user\",\"content\":\"hi\"}]", 0, NULL);
    char *s = NULL;
    GS_ASSERT_OK(gs_chat_render(m, NULL, &s, &d));
    GS_ASSERT_STREQ(s, "[gMASK]<sop><|user|>\nhi<|assistant|>\n");
    free(s);
    json_decref(m);
    gs_chat_result_free(NULL);
}

static void test_refusals(void)
{
    static const struct {
        const char *messages, *tools, *diag;
    } cases[] = {
        {"{}", NULL, "messages: expected an array"},
        {"[]", NULL, "messages: empty"},
        {"[1]", NULL, "messages[0]: expected an object"},
        {"[{\"content\":\"x\"}]", NULL, "messages[0].role: expected a string"},
        {"[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"bot\",\"content\":\"x\"}]", NULL,
         "messages[1].role: unknown role \"bot\""},
        {"[{\"role\":\"user\",\"content\":5}]", NULL, "messages[0].content: expected a string"},
        {"[{\"role\":\"user\",\"content\":{\"a\":1}}]", NULL, "messages[0].content"},
        {"[{\"role\":\"user\",\"content\":[\"text\"]}]", NULL,
         "messages[0].content[0]: expected an object"},
        {"[{\"role\":\"user\",\"content\":[{\"type\":\"audio\"}]}]", NULL,
         "messages[0].content[0].type: unknown type \"audio\""},
        {"[{\"role\":\"user\",\"content\":[{\"type\":7}]}]", NULL,
         "messages[0].content[0].type: expected a string"},
        {"[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":3}]}]", NULL,
         "messages[0].content[0].text: expected a string"},
        {"[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]", NULL,
         "messages[0].content[0].text"},
        {"[{\"role\":\"user\",\"content\":[{\"text\":\"a\"}]}]", NULL,
         "messages[0].content[0]: missing \"type\""},
        {"[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\",\"image\":1}]}]", NULL,
         "ambiguous"},
        {"[{\"role\":\"system\",\"content\":[{\"type\":\"video\",\"image\":1}]}]", NULL,
         "messages[0].content[0]: type \"video\""},
        {"[{\"role\":\"system\",\"content\":[1]}]", NULL,
         "messages[0].content[0]: expected an object"},
        {"[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":[{\"type\":"
         "\"image\"}]}]",
         NULL, "messages[1].content[0]: an assistant message cannot carry images"},
        {"[{\"role\":\"assistant\",\"content\":\"a\",\"reasoning_content\":1}]", NULL,
         "messages[0].reasoning_content: expected a string"},
        {"[{\"role\":\"assistant\",\"content\":\"a\",\"tool_calls\":{\"a\":1}}]", NULL,
         "messages[0].tool_calls: expected an array"},
        {"[{\"role\":\"assistant\",\"tool_calls\":[5]}]", NULL,
         "messages[0].tool_calls[0]: expected an object"},
        {"[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{\"arguments\":{}}}]}]", NULL,
         "messages[0].tool_calls[0]: name"},
        {"[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":\"f\"}]}]", NULL,
         "messages[0].tool_calls[0].function: expected an object"},
        {"[{\"role\":\"assistant\",\"tool_calls\":[{\"name\":\"f\",\"arguments\":\"{bad\"}]}]",
         NULL, "messages[0].tool_calls[0]: arguments"},
        {"[{\"role\":\"assistant\",\"tool_calls\":[{\"name\":\"f\",\"arguments\":\"[1]\"}]}]", NULL,
         "messages[0].tool_calls[0]: arguments"},
        {"[{\"role\":\"assistant\",\"tool_calls\":[{\"name\":\"f\"}]}]", NULL,
         "messages[0].tool_calls[0]: arguments"},
        {"[{\"role\":\"tool\",\"content\":{\"a\":1}}]", NULL,
         "messages[0].content: expected a string or an array"},
        {"[{\"role\":\"tool\",\"content\":[{\"a\":1}]}]", NULL, "messages[0].content[0]: a tool"},
        {"[{\"role\":\"tool\",\"content\":[[1]]}]", NULL, "messages[0].content[0]: a tool"},
        {"[{\"role\":\"tool\",\"content\":[{\"output\":{\"x\":1}}]}]", NULL,
         "messages[0].content[0]: a tool"},
        {"[{\"role\":\"tool\",\"content\":[{\"type\":\"text\",\"text\":[1]}]}]", NULL,
         "messages[0].content[0].text"},
        {"[{\"role\":\"user\",\"content\":\"q\"}]", "{\"a\":1}", "tools: expected an array"},
        {"[{\"role\":\"user\",\"content\":\"q\"}]", "[{\"a\":1}, 2]",
         "tools[1]: expected an "
         "object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        gs_chat_result r;
        gs_diag d;
        int rc = render_str(cases[i].messages, cases[i].tools, GS_THINK_DEFAULT, 1, &r, &d);
        GS_ASSERT_MSG(rc == GS_EINVAL && strstr(d.msg, cases[i].diag) && r.text == NULL,
                      "case %zu %s: rc %d diag \"%s\", want \"%s\"", i, cases[i].messages, rc,
                      d.msg, cases[i].diag);
    }
}

static void test_python_formats(void)
{
    static const struct {
        double x;
        const char *repr;
    } f[] = {
        {0.1, "0.1"},
        {1e16, "1e+16"},
        {1e15, "1000000000000000.0"},
        {1e-5, "1e-05"},
        {0.0001, "0.0001"},
        {123456789.0, "123456789.0"},
        {-0.0, "-0.0"},
        {1.5e300, "1.5e+300"},
        {5e-324, "5e-324"},
        {2.5, "2.5"},
        {1.0 / 3.0, "0.3333333333333333"},
        {-1234.5678, "-1234.5678"},
        {12345678901234567.0, "1.2345678901234568e+16"},
    };
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) {
        gs_sbuf b = {0};
        gs_pyfloat_repr(&b, f[i].x);
        GS_ASSERT_STREQ(b.p, f[i].repr);
        free(b.p);
    }
    json_t *v = json_loads("{\"a\": [1, 2.0, null, true, false], \"k\\\"\\n\\u0001\": \"\\u00e9\","
                           " \"e\": {}, \"l\": []}",
                           0, NULL);
    gs_sbuf b = {0};
    gs_pyjson_dump(&b, v);
    GS_ASSERT_STREQ(b.p, "{\"a\": [1, 2.0, null, true, false], \"k\\\"\\n\\u0001\": \"\xc3\xa9\","
                         " \"e\": {}, \"l\": []}");
    free(b.p);
    json_decref(v);
}

int main(void)
{
    GS_RUN(test_reference_cases);
    GS_RUN(test_media_and_openai_forms);
    GS_RUN(test_refusals);
    GS_RUN(test_python_formats);
    return gs_test_summary();
}
