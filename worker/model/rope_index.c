/* rope_index.c - see rope_index.h. */
#include "rope_index.h"

int gs_rope_index(const gs_rope_index_params *p, const int32_t *ids, int32_t n,
                  const int32_t (*grids)[3], int32_t n_images, int32_t *pos, int32_t *rope_delta,
                  gs_diag *d)
{
    int32_t *pt = pos, *ph = pos + n, *pw = pos + 2 * n;
    int32_t st = 0;  /* first position of the next group */
    int32_t img = 0; /* next grid */
    int in_video = 0;
    int32_t m = p->merge_size > 0 ? p->merge_size : 1;
    int32_t i = 0;
    while (i < n) {
        if (ids[i] == p->video_start_token_id)
            in_video = 1;
        else if (ids[i] == p->video_end_token_id)
            in_video = 0;
        if (ids[i] != p->image_token_id) {
            pt[i] = ph[i] = pw[i] = st++;
            i++;
            continue;
        }
        if (in_video)
            return gs_diag_set(d, GS_ENOTSUP, "video input is not supported");
        int32_t j = i;
        while (j < n && ids[j] == p->image_token_id)
            j++;
        if (img >= n_images)
            return gs_diag_set(d, GS_EINVAL,
                               "image tokens at position %d but only %d image(s) given", i,
                               n_images);
        int32_t t = grids[img][0], gh = grids[img][1], gw = grids[img][2];
        if (t <= 0 || gh <= 0 || gw <= 0 || gh % m || gw % m)
            return gs_diag_set(d, GS_EINVAL, "image %d: bad grid (%d, %d, %d)", img, t, gh, gw);
        int32_t hm = gh / m, wm = gw / m;
        if ((int64_t)(j - i) != (int64_t)t * hm * wm)
            return gs_diag_set(d, GS_EINVAL, "image %d: %d image tokens but its grid needs %lld",
                               img, j - i, (long long)t * hm * wm);
        int32_t k = i, mx = st;
        for (int32_t tt = 0; tt < t; tt++)
            for (int32_t r = 0; r < hm; r++)
                for (int32_t c = 0; c < wm; c++, k++) {
                    pt[k] = st + tt;
                    ph[k] = st + r;
                    pw[k] = st + c;
                    int32_t a = st + tt > st + r ? st + tt : st + r;
                    if (st + c > a)
                        a = st + c;
                    if (a > mx)
                        mx = a;
                }
        st = mx + 1;
        img++;
        i = j;
    }
    if (img != n_images)
        return gs_diag_set(d, GS_EINVAL, "%d image(s) given but the prompt has %d", n_images, img);
    *rope_delta = st - n; /* max + 1 - n; st == max + 1 (0 for empty) */
    return 0;
}
