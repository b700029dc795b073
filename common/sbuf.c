/* sbuf.c - see sbuf.h. */
#include "common/sbuf.h"

#include <stdlib.h>
#include <string.h>

void gs_sbuf_put(gs_sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void gs_sbuf_puts(gs_sbuf *b, const char *s)
{
    gs_sbuf_put(b, s, strlen(s));
}
