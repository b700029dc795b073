/* sample_model.h - a plain host model of gs_k_sample's semantics
 * (kernels.h), for the tests of both backends (tests/gpu and
 * tests/unit/kernels/test_sample.c): penalties, argmax, the kept set (1e-12
 * candidate cut, top-k / top-p with exact boundary ties kept, min-p) and
 * the id the draw picks for a uniform u (fixed-point masses scanned in id
 * order). Written the slow obvious way (qsort of the whole row). Header-only,
 * C and C++, test code only (exits on OOM). */
#ifndef GS_SAMPLE_MODEL_H
#define GS_SAMPLE_MODEL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

static uint64_t sm_fixmass(float p)
{
    return (uint64_t)nearbyint((double)(p * 1099511627776.0f));
}

static uint32_t sm_key(float p)
{
    uint32_t u;
    memcpy(&u, &p, 4);
    return u;
}

static int sm_key_desc(const void *a, const void *b)
{
    const uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? 1 : (x > y ? -1 : 0);
}

typedef struct {
    int best;       /* argmax after penalties (-1: none) */
    float *p;       /* sampled rows: [V] unnormalised probabilities (free) */
    uint32_t floor; /* kept: key(p) >= floor */
    int draw;       /* the id a draw with u picks */
    int kept;       /* how many ids are kept */
} sm_result;

/* l: [V] logits, modified (penalties applied). ids / cnt: the row's
 * penalty list (n_pen entries). u: the row's uniform draw. */
static sm_result sm_model(float *l, int V, const gs_sample_row *P, const int32_t *ids,
                          const int32_t *cnt, int n_pen, double u)
{
    sm_result r;
    memset(&r, 0, sizeof r);
    for (int i = 0; i < n_pen; i++) {
        float *x = &l[ids[i]];
        if (P->repetition_penalty > 0 && P->repetition_penalty != 1.0f)
            *x = *x > 0 ? *x / P->repetition_penalty : *x * P->repetition_penalty;
        if (cnt[i] > 0)
            *x -= fmaf(P->frequency_penalty, (float)cnt[i], P->presence_penalty);
    }
    float bv = -INFINITY;
    r.best = -1;
    for (int i = 0; i < V; i++)
        if (l[i] > bv) {
            bv = l[i];
            r.best = i;
        }
    r.draw = r.best;
    if (r.best < 0 || !(P->temperature > 0))
        return r;
    float *p = (float *)malloc(sizeof(float) * (size_t)V);
    uint32_t *keys = (uint32_t *)malloc(sizeof(uint32_t) * (size_t)V);
    if (!p || !keys)
        exit(2);
    const float inv_t = 1.0f / P->temperature;
    for (int i = 0; i < V; i++) {
        const float z = (l[i] - bv) * inv_t;
        p[i] = z >= -27.6310211f ? expf(z) : 0.0f;
        keys[i] = sm_key(p[i]);
    }
    qsort(keys, (size_t)V, sizeof *keys, sm_key_desc);
    uint32_t fk = 0;
    if (P->top_k > 0 && P->top_k < V)
        fk = keys[P->top_k - 1];
    if (P->top_p > 0 && P->top_p < 1.0f) {
        uint64_t s = 0;
        for (int i = 0; i < V; i++)
            if (sm_key(p[i]) >= fk)
                s += sm_fixmass(p[i]);
        uint64_t target = (uint64_t)((double)P->top_p * (double)s);
        if (target < 1)
            target = 1;
        uint64_t acc = 0; /* the largest key K with mass(keys >= K) >= target */
        for (int i = 0; i < V && keys[i] >= fk; i++) {
            float pv;
            memcpy(&pv, &keys[i], 4);
            acc += sm_fixmass(pv);
            if (acc >= target && (i + 1 == V || keys[i + 1] != keys[i])) {
                fk = keys[i];
                break;
            }
        }
    }
    if (P->min_p > 0) {
        const uint32_t mk = sm_key(P->min_p > 1 ? 1.0f : P->min_p);
        fk = mk > fk ? mk : fk;
    }
    free(keys);
    uint64_t total = 0;
    for (int i = 0; i < V; i++)
        if (sm_key(p[i]) >= fk) {
            total += sm_fixmass(p[i]);
            r.kept++;
        }
    if (total > 0) {
        uint64_t target = (uint64_t)(u * (double)total), acc = 0;
        if (target >= total)
            target = total - 1;
        for (int i = 0; i < V; i++) {
            if (sm_key(p[i]) < fk)
                continue;
            acc += sm_fixmass(p[i]);
            if (acc > target) {
                r.draw = i;
                break;
            }
        }
    }
    r.p = p;
    r.floor = fk;
    return r;
}

#endif
