/* chat_json.c - Python-exact json.dumps and str() for the chat template
 * (see chat_json.h). Owns nothing but the caller's buffer growth.
 * Thread-safe: pure functions. */
#include "worker/tokenizer/chat_json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Shortest round-trip digits of |x| > 0: digits[] (no trailing zeros) and
 * the decimal exponent e of the first digit (x = d.ddd * 10^e). */
static size_t shortest_digits(double x, char *digits, int *e)
{
    char buf[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*e", p - 1, x);
        if (strtod(buf, NULL) == x || p == 17)
            break;
    }
    /* buf: d[.ddd]e[+-]XX */
    size_t n = 0;
    const char *c = buf;
    for (; *c && *c != 'e'; c++)
        if (*c >= '0' && *c <= '9')
            digits[n++] = *c;
    *e = atoi(c + 1);
    while (n > 1 && digits[n - 1] == '0')
        n--;
    digits[n] = 0;
    return n;
}

void gs_pyfloat_repr(gs_sbuf *b, double x)
{
    if (isnan(x)) {
        gs_sbuf_puts(b, "nan");
        return;
    }
    if (signbit(x)) {
        gs_sbuf_put(b, "-", 1);
        x = -x;
    }
    if (isinf(x)) {
        gs_sbuf_puts(b, "inf");
        return;
    }
    if (x == 0) {
        gs_sbuf_puts(b, "0.0");
        return;
    }
    char d[24];
    int e;
    size_t n = shortest_digits(x, d, &e);
    int decpt = e + 1; /* digits before the decimal point */
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            gs_sbuf_put(b, "0.", 2);
            for (int i = 0; i < -decpt; i++)
                gs_sbuf_put(b, "0", 1);
            gs_sbuf_put(b, d, n);
        } else if ((size_t)decpt >= n) {
            gs_sbuf_put(b, d, n);
            for (size_t i = n; i < (size_t)decpt; i++)
                gs_sbuf_put(b, "0", 1);
            gs_sbuf_put(b, ".0", 2);
        } else {
            gs_sbuf_put(b, d, (size_t)decpt);
            gs_sbuf_put(b, ".", 1);
            gs_sbuf_put(b, d + decpt, n - (size_t)decpt);
        }
        return;
    }
    gs_sbuf_put(b, d, 1);
    if (n > 1) {
        gs_sbuf_put(b, ".", 1);
        gs_sbuf_put(b, d + 1, n - 1);
    }
    char ex[16];
    snprintf(ex, sizeof ex, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    gs_sbuf_puts(b, ex);
}

static void dump_string(gs_sbuf *b, const char *s, size_t n)
{
    gs_sbuf_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[8];
        switch (c) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        case '\b':
            esc = "\\b";
            break;
        case '\f':
            esc = "\\f";
            break;
        default:
            if (c < 0x20) {
                snprintf(u, sizeof u, "\\u%04x", c);
                esc = u;
            }
        }
        if (!esc)
            continue;
        gs_sbuf_put(b, s + run, i - run);
        gs_sbuf_puts(b, esc);
        run = i + 1;
    }
    gs_sbuf_put(b, s + run, n - run);
    gs_sbuf_put(b, "\"", 1);
}

void gs_pyjson_dump(gs_sbuf *b, const json_t *v)
{
    char num[32];
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        gs_sbuf_put(b, "{", 1);
        const char *key;
        size_t klen;
        json_t *val;
        int first = 1;
        json_object_keylen_foreach((json_t *)v, key, klen, val)
        {
            if (!first)
                gs_sbuf_put(b, ", ", 2);
            first = 0;
            dump_string(b, key, klen);
            gs_sbuf_put(b, ": ", 2);
            gs_pyjson_dump(b, val);
        }
        gs_sbuf_put(b, "}", 1);
        break;
    }
    case JSON_ARRAY:
        gs_sbuf_put(b, "[", 1);
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i)
                gs_sbuf_put(b, ", ", 2);
            gs_pyjson_dump(b, json_array_get(v, i));
        }
        gs_sbuf_put(b, "]", 1);
        break;
    case JSON_STRING:
        dump_string(b, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        gs_sbuf_puts(b, num);
        break;
    case JSON_REAL: {
        double x = json_real_value(v);
        if (isnan(x))
            gs_sbuf_puts(b, "NaN");
        else if (isinf(x))
            gs_sbuf_puts(b, x > 0 ? "Infinity" : "-Infinity");
        else
            gs_pyfloat_repr(b, x);
        break;
    }
    case JSON_TRUE:
        gs_sbuf_puts(b, "true");
        break;
    case JSON_FALSE:
        gs_sbuf_puts(b, "false");
        break;
    case JSON_NULL:
        gs_sbuf_puts(b, "null");
        break;
    }
}

int gs_pystr_scalar(gs_sbuf *b, const json_t *v)
{
    char num[32];
    switch (json_typeof(v)) {
    case JSON_STRING:
        gs_sbuf_put(b, json_string_value(v), json_string_length(v));
        return 0;
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        gs_sbuf_puts(b, num);
        return 0;
    case JSON_REAL:
        gs_pyfloat_repr(b, json_real_value(v));
        return 0;
    case JSON_TRUE:
        gs_sbuf_puts(b, "True");
        return 0;
    case JSON_FALSE:
        gs_sbuf_puts(b, "False");
        return 0;
    case JSON_NULL:
        gs_sbuf_puts(b, "None");
        return 0;
    default:
        return -1;
    }
}
