#include "worker/model/rope_index.h"
#include "test.h"

enum { IMG = 9, VS = 7, VE = 8 };
static const gs_rope_index_params P = {IMG, VS, VE, 2};

/* glm4v-spec.md 4.5 worked example: 5 text, one (1,4,6) image, 3 text. */
static void test_spec_example(void)
{
    int32_t ids[14] = {1, 2, 3, 4, 5, IMG, IMG, IMG, IMG, IMG, IMG, 1, 2, 3};
    int32_t grid[1][3] = {{1, 4, 6}};
    int32_t pos[3 * 14], delta = 0;
    GS_ASSERT_OK(gs_rope_index(&P, ids, 14, (const int32_t(*)[3])grid, 1, pos, &delta, NULL));
    const int32_t t[14] = {0, 1, 2, 3, 4, 5, 5, 5, 5, 5, 5, 8, 9, 10};
    const int32_t h[14] = {0, 1, 2, 3, 4, 5, 5, 5, 6, 6, 6, 8, 9, 10};
    const int32_t w[14] = {0, 1, 2, 3, 4, 5, 6, 7, 5, 6, 7, 8, 9, 10};
    for (int i = 0; i < 14; i++) {
        GS_ASSERT_EQ(pos[i], t[i]);
        GS_ASSERT_EQ(pos[14 + i], h[i]);
        GS_ASSERT_EQ(pos[28 + i], w[i]);
    }
    GS_ASSERT_EQ(delta, -3);
}

/* Two images (1,4,6) and (1,6,2) after 2 text tokens (spec 4.5). */
static void test_two_images(void)
{
    int32_t ids[16];
    int n = 0;
    ids[n++] = 1;
    ids[n++] = 2;
    for (int i = 0; i < 6; i++)
        ids[n++] = IMG;
    ids[n++] = 3;
    ids[n++] = 4;
    for (int i = 0; i < 3; i++)
        ids[n++] = IMG;
    ids[n++] = 5;
    int32_t grid[2][3] = {{1, 4, 6}, {1, 6, 2}};
    int32_t pos[3 * 16], delta;
    GS_ASSERT_OK(gs_rope_index(&P, ids, n, (const int32_t(*)[3])grid, 2, pos, &delta, NULL));
    GS_ASSERT_EQ(pos[2], 2);          /* first image t */
    GS_ASSERT_EQ(pos[n + 7], 3);      /* last token of image 1: h = 3 */
    GS_ASSERT_EQ(pos[2 * n + 7], 4);  /* w = 4 */
    GS_ASSERT_EQ(pos[8], 5);          /* next text starts at 5 */
    GS_ASSERT_EQ(pos[10], 7);         /* second image st = 7 */
    GS_ASSERT_EQ(pos[n + 12], 9);     /* h 7..9 */
    GS_ASSERT_EQ(pos[2 * n + 12], 7); /* w 7..7 */
    GS_ASSERT_EQ(pos[13], 10);
    GS_ASSERT_EQ(delta, 11 - n);
}

static void test_mismatch_errors(void)
{
    int32_t ids[6] = {1, IMG, IMG, IMG, 2, 3};
    int32_t grid[1][3] = {{1, 4, 6}};
    int32_t pos[18], delta;
    gs_diag d;
    GS_ASSERT_EQ(gs_rope_index(&P, ids, 6, (const int32_t(*)[3])grid, 1, pos, &delta, &d),
                 GS_EINVAL);
    GS_ASSERT(strstr(d.msg, "image 0") != NULL);
    GS_ASSERT_EQ(gs_rope_index(&P, ids, 6, NULL, 0, pos, &delta, &d), GS_EINVAL);
    int32_t text[2] = {1, 2};
    GS_ASSERT_EQ(gs_rope_index(&P, text, 2, (const int32_t(*)[3])grid, 1, pos, &delta, &d),
                 GS_EINVAL);
    int32_t vid[4] = {VS, IMG, VE, 1};
    GS_ASSERT_EQ(gs_rope_index(&P, vid, 4, (const int32_t(*)[3])grid, 1, pos, &delta, &d),
                 GS_ENOTSUP);
    int32_t bad[1][3] = {{1, 3, 6}};
    int32_t ids2[3] = {IMG, IMG, IMG};
    GS_ASSERT_EQ(gs_rope_index(&P, ids2, 3, (const int32_t(*)[3])bad, 1, pos, &delta, &d),
                 GS_EINVAL);
}

static void test_text_only(void)
{
    int32_t ids[3] = {4, 5, 6}, pos[9], delta = 77;
    GS_ASSERT_OK(gs_rope_index(&P, ids, 3, NULL, 0, pos, &delta, NULL));
    GS_ASSERT_EQ(delta, 0);
    GS_ASSERT_EQ(pos[2], 2);
    GS_ASSERT_EQ(pos[8], 2);
}

int main(void)
{
    GS_RUN(test_spec_example);
    GS_RUN(test_two_images);
    GS_RUN(test_mismatch_errors);
    GS_RUN(test_text_only);
    return gs_test_summary();
}
