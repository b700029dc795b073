/* test_think_split.c - reasoning / content split of streamed answers,
 * every way a tag can be cut between deltas. */
#include <stdio.h>
#include <string.h>

#include "gateway/think_split.h"
#include "test.h"

typedef struct {
    char text[2][512];
    size_t n[2];
} out;

static void sink(void *user, int reasoning, const char *s, size_t n)
{
    out *o = user;
    memcpy(o->text[reasoning] + o->n[reasoning], s, n);
    o->n[reasoning] += n;
    o->text[reasoning][o->n[reasoning]] = 0;
}

/* Feeds s cut into pieces of `step` bytes. */
static void run(const char *s, size_t step, out *o)
{
    memset(o, 0, sizeof *o);
    gs_think_split t;
    gs_think_split_init(&t);
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i += step)
        gs_think_split_push(&t, s + i, n - i < step ? n - i : step, sink, o);
    gs_think_split_flush(&t, sink, o);
}

static void test_every_cut_gives_the_same_split(void)
{
    const char *s = "<think>\nLet me look.\nIt is a cat.\n</think>\n\nA cat.";
    for (size_t step = 1; step <= strlen(s); step++) {
        out o;
        run(s, step, &o);
        GS_ASSERT_STREQ(o.text[1], "Let me look.\nIt is a cat.\n");
        GS_ASSERT_STREQ(o.text[0], "A cat.");
    }
}

static void test_no_tags_is_all_content(void)
{
    out o;
    run("plain answer < not a tag <thin", 3, &o);
    GS_ASSERT_STREQ(o.text[0], "plain answer < not a tag <thin");
    GS_ASSERT_EQ(o.n[1], 0);
}

static void test_unclosed_think_is_reasoning(void)
{
    out o;
    run("<think>still thinking when the tokens ran out", 4, &o);
    GS_ASSERT_STREQ(o.text[1], "still thinking when the tokens ran out");
    GS_ASSERT_EQ(o.n[0], 0);
}

static void test_empty_think_and_text_before(void)
{
    out o;
    run("ok <think></think>\nanswer", 2, &o);
    GS_ASSERT_STREQ(o.text[0], "ok answer");
    GS_ASSERT_EQ(o.n[1], 0);
}

static void test_long_deltas(void)
{
    char s[2000];
    int n = snprintf(s, sizeof s, "<think>");
    for (int i = 0; i < 300; i++)
        s[n++] = 'a' + i % 26;
    n += snprintf(s + n, sizeof s - (size_t)n, "</think>");
    for (int i = 0; i < 100; i++)
        s[n++] = 'z';
    s[n] = 0;
    out o;
    run(s, 700, &o); /* longer than the splitter's work buffer */
    GS_ASSERT_EQ(o.n[1], 300);
    GS_ASSERT_EQ(o.n[0], 100);
}

int main(void)
{
    GS_RUN(test_every_cut_gives_the_same_split);
    GS_RUN(test_no_tags_is_all_content);
    GS_RUN(test_unclosed_think_is_reasoning);
    GS_RUN(test_empty_think_and_text_before);
    GS_RUN(test_long_deltas);
    return gs_test_summary();
}
