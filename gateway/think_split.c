/* think_split.c - reasoning / content split of a streamed answer
 * (think_split.h). */
#include "gateway/think_split.h"

#include <string.h>

static const char OPEN[] = "<think>", CLOSE[] = "</think>";

void gs_think_split_init(gs_think_split *t)
{
    memset(t, 0, sizeof *t);
}

/* Emits s[0..n) as the current kind, dropping leading newlines right after
 * a tag. */
static void out(gs_think_split *t, const char *s, size_t n, gs_think_sink sink, void *user)
{
    if (t->strip_nl) {
        while (n && *s == '\n') {
            s++;
            n--;
        }
        if (n)
            t->strip_nl = 0;
    }
    if (n)
        sink(user, t->in_think, s, n);
}

/* 1 when s[0..n) is a proper prefix of tag. */
static int prefix_of(const char *s, size_t n, const char *tag)
{
    return n < strlen(tag) && !memcmp(s, tag, n);
}

void gs_think_split_push(gs_think_split *t, const char *s, size_t n, gs_think_sink sink, void *user)
{
    /* Work on hold + s, one byte at a time from `start`. */
    char buf[256];
    while (n || t->n_hold) {
        size_t take = n < sizeof buf - t->n_hold ? n : sizeof buf - t->n_hold;
        memcpy(buf, t->hold, t->n_hold);
        memcpy(buf + t->n_hold, s, take);
        size_t len = t->n_hold + take, start = 0, i = 0;
        t->n_hold = 0;
        s += take;
        n -= take;
        while (i < len) {
            if (buf[i] != '<') {
                i++;
                continue;
            }
            const char *tag = t->in_think ? CLOSE : OPEN;
            size_t tl = strlen(tag), rest = len - i;
            if (rest >= tl && !memcmp(buf + i, tag, tl)) {
                out(t, buf + start, i - start, sink, user);
                t->in_think = !t->in_think;
                t->strip_nl = 1;
                i += tl;
                start = i;
            } else if (rest < tl && prefix_of(buf + i, rest, tag) && !n) {
                /* could become the tag with the next delta: hold it */
                out(t, buf + start, i - start, sink, user);
                memcpy(t->hold, buf + i, rest);
                t->n_hold = rest;
                return;
            } else {
                i++;
            }
        }
        out(t, buf + start, len - start, sink, user);
        if (!n)
            return;
    }
}

void gs_think_split_flush(gs_think_split *t, gs_think_sink sink, void *user)
{
    size_t n = t->n_hold;
    t->n_hold = 0;
    out(t, t->hold, n, sink, user);
}
