/* par.c - gs_image_par_for (par.h). */
#include "worker/image/par.h"

#include <pthread.h>

#define PAR_MAX 16

typedef struct {
    void (*fn)(void *, int64_t, int64_t);
    void *ctx;
    int64_t i0, i1;
} par_range;

static void *par_main(void *arg)
{
    par_range *r = arg;
    r->fn(r->ctx, r->i0, r->i1);
    return NULL;
}

void gs_image_par_for(int n_threads, int64_t n, int64_t min_rows,
                      void (*fn)(void *ctx, int64_t i0, int64_t i1), void *ctx)
{
    if (n <= 0)
        return;
    int64_t t = n_threads < 1 ? 1 : n_threads > PAR_MAX ? PAR_MAX : n_threads;
    if (min_rows < 1)
        min_rows = 1;
    if (t > n / min_rows)
        t = n / min_rows > 0 ? n / min_rows : 1;
    par_range r[PAR_MAX];
    pthread_t th[PAR_MAX];
    int started[PAR_MAX] = {0};
    for (int64_t k = 0; k < t; k++)
        r[k] = (par_range){fn, ctx, n * k / t, n * (k + 1) / t};
    for (int64_t k = 1; k < t; k++)
        started[k] = pthread_create(&th[k], NULL, par_main, &r[k]) == 0;
    fn(ctx, r[0].i0, r[0].i1);
    for (int64_t k = 1; k < t; k++) {
        if (started[k])
            pthread_join(th[k], NULL);
        else
            fn(ctx, r[k].i0, r[k].i1);
    }
}
