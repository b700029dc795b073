/* sbuf.h - a growable byte string, always NUL-terminated. Out of memory
 * is sticky (`oom`), so a caller appends freely and checks once at the
 * end. Caller-owned: zero-initialise it ({0}); free(b.p) when done.
 * Not thread-safe per object. */
#ifndef GS_SBUF_H
#define GS_SBUF_H

#include <stddef.h>

typedef struct {
    char *p; /* NULL until the first append */
    size_t n, cap;
    int oom; /* an append failed: the contents are incomplete */
} gs_sbuf;

/* Appends s[0..n) (n may be 0); nothing once oom is set. */
void gs_sbuf_put(gs_sbuf *b, const char *s, size_t n);
void gs_sbuf_puts(gs_sbuf *b, const char *s); /* NUL-terminated s */
/* Appends a string literal. */
#define GS_SBUF_LIT(b, lit) gs_sbuf_put((b), (lit), sizeof(lit) - 1)

#endif
