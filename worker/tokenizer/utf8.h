/* utf8.h - UTF-8 validation, decoding and lossy repair, as Rust's str and
 * String::from_utf8_lossy define them (Unicode's well-formed sequences,
 * table 3-7; one U+FFFD per maximal invalid subpart).
 * Thread-safe: pure functions. */
#ifndef GS_UTF8_H
#define GS_UTF8_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    GS_UTF8_OK,    /* a whole valid character */
    GS_UTF8_BAD,   /* a maximal invalid subpart: replace it by one U+FFFD */
    GS_UTF8_SHORT, /* all n bytes are a valid prefix that needs more input */
} gs_utf8_kind;

/* Classifies the sequence starting at s[0] (n >= 1) and returns its length
 * (>= 1, <= 4, <= n). *cp gets the code point for GS_UTF8_OK. */
size_t gs_utf8_next(const uint8_t *s, size_t n, gs_utf8_kind *kind, uint32_t *cp);

/* Offset of the first byte that is not part of valid UTF-8, or n when all
 * of s is valid (a truncated sequence at the end is invalid). */
size_t gs_utf8_invalid_at(const uint8_t *s, size_t n);

/* Writes s with every maximal invalid subpart (a truncated tail included)
 * replaced by U+FFFD into out, which must hold 3 * n bytes; returns the
 * bytes written. */
size_t gs_utf8_lossy(const uint8_t *s, size_t n, char *out);

/* Encodes cp (<= 0x10FFFF) into out[0..4); returns the length. */
size_t gs_utf8_put(uint32_t cp, char *out);

#endif
