/* chat_json.h - text output the chat template needs from JSON values, with
 * Python's exact formatting: json.dumps(x, ensure_ascii=False) (what the
 * template's tojson filter does in transformers) and str() of scalars
 * (what {{ x }} prints). Internal to worker/tokenizer.
 * Thread-safe: pure functions over caller memory. */
#ifndef GS_CHAT_JSON_H
#define GS_CHAT_JSON_H

#include <jansson.h>
#include <stddef.h>

#include "common/sbuf.h"

/* Appends json.dumps(v, ensure_ascii=False): separators ", " and ": ",
 * keys in insertion order, floats as Python's repr. */
void gs_pyjson_dump(gs_sbuf *b, const json_t *v);
/* Appends Python's repr() of a double (also its str()). */
void gs_pyfloat_repr(gs_sbuf *b, double x);
/* Appends str(v) for a scalar (string as is, True/False/None, numbers);
 * returns -1 for arrays and objects (Python would print its repr). */
int gs_pystr_scalar(gs_sbuf *b, const json_t *v);

#endif
