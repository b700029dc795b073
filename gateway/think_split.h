/* think_split.h - splits a streamed answer into reasoning and content at
 * the model's <think> ... </think> tags, as the GLM chat template reads
 * them back (reasoning = the text between the tags without its leading
 * newlines; content = what follows </think>, without its leading
 * newlines). Tags may arrive split across deltas: a tail that could still
 * become a tag is held back until it is decided (or until the end).
 * Pure; one object per stream; not thread-safe. */
#ifndef GS_THINK_SPLIT_H
#define GS_THINK_SPLIT_H

#include <stddef.h>

typedef struct {
    int in_think;  /* inside <think> ... */
    int strip_nl;  /* drop newlines at the start of the next part */
    char hold[16]; /* undecided tail (a proper prefix of a tag) */
    size_t n_hold;
} gs_think_split;

/* The output of one push: pieces of text of each kind, appended by the
 * caller's sink (borrowed for the call). */
typedef void (*gs_think_sink)(void *user, int reasoning, const char *s, size_t n);

void gs_think_split_init(gs_think_split *t);
/* Feeds n bytes of answer text. */
void gs_think_split_push(gs_think_split *t, const char *s, size_t n, gs_think_sink sink,
                         void *user);
/* End of the answer: whatever is held back goes out as text. */
void gs_think_split_flush(gs_think_split *t, gs_think_sink sink, void *user);

#endif
