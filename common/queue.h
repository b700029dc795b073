/* queue.h - an intrusive doubly linked list (nginx ngx_queue_t, libuv
 * queue.h): a gs_queue node is embedded in the element, a gs_queue head
 * owns nothing, and gs_queue_data gets the element back from its node.
 *
 * The head is circular (an empty list points at itself: gs_queue_init). A
 * node that is in no list has prev == next == NULL, which is what calloc
 * gives, so elements need no init; gs_queue_remove sets it back that way.
 * All operations are O(1) and allocate nothing.
 * Not thread-safe: a list belongs to whoever owns its head. */
#ifndef GS_QUEUE_H
#define GS_QUEUE_H

#include <stddef.h>

typedef struct gs_queue {
    struct gs_queue *prev, *next;
} gs_queue;

/* The element of type `type` whose member `field` is node q. */
#define gs_queue_data(q, type, field) ((type *)(void *)((char *)(q)-offsetof(type, field)))

/* for (q = first; q != h; q = q->next). The body must not remove q; to
 * remove while walking, take gs_queue_head until the list is empty, or
 * save q->next first. */
#define GS_QUEUE_FOREACH(q, h) for ((q) = (h)->next; (q) != (h); (q) = (q)->next)

static inline void gs_queue_init(gs_queue *h)
{
    h->prev = h->next = h;
}

static inline int gs_queue_empty(const gs_queue *h)
{
    return h->next == h;
}

/* First / last node; h itself when empty. */
static inline gs_queue *gs_queue_head(const gs_queue *h)
{
    return h->next;
}
static inline gs_queue *gs_queue_tail(const gs_queue *h)
{
    return h->prev;
}

/* 1 while q is in some list. */
static inline int gs_queue_linked(const gs_queue *q)
{
    return q->next != NULL;
}

static inline void gs_queue_insert_head(gs_queue *h, gs_queue *q)
{
    q->next = h->next;
    q->prev = h;
    h->next->prev = q;
    h->next = q;
}

static inline void gs_queue_insert_tail(gs_queue *h, gs_queue *q)
{
    q->prev = h->prev;
    q->next = h;
    h->prev->next = q;
    h->prev = q;
}

/* Unlinks q from its list (q must be linked) and marks it unlinked. */
static inline void gs_queue_remove(gs_queue *q)
{
    q->prev->next = q->next;
    q->next->prev = q->prev;
    q->prev = q->next = NULL;
}

#endif
