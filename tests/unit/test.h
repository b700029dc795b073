/* test.h - the assertions every C test uses. Header-only.
 *
 * Each test file is one executable: main() calls GS_RUN(test_fn) for each
 * test and returns gs_test_summary(). A failed assertion prints both values
 * with file:line and returns from the test function (the next test runs).
 * Fixture paths come from the GS_FIXTURES environment variable (set by
 * ctest), falling back to the source tree path baked in at build time. */
#ifndef GS_TEST_H
#define GS_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/file.h"

static int gs__t_failed_tests, gs__t_passed_tests, gs__t_cur_failed;

#define GS_FAIL_(...)                                                                              \
    do {                                                                                           \
        fprintf(stderr, "  FAIL %s:%d: ", __FILE__, __LINE__);                                     \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        gs__t_cur_failed = 1;                                                                      \
        return;                                                                                    \
    } while (0)

#define GS_ASSERT(c)                                                                               \
    do {                                                                                           \
        if (!(c))                                                                                  \
            GS_FAIL_("assertion failed: %s", #c);                                                  \
    } while (0)
#define GS_ASSERT_MSG(c, ...)                                                                      \
    do {                                                                                           \
        if (!(c))                                                                                  \
            GS_FAIL_(__VA_ARGS__);                                                                 \
    } while (0)
#define GS_ASSERT_EQ(a, b)                                                                         \
    do {                                                                                           \
        long long gs__a = (long long)(a), gs__b = (long long)(b);                                  \
        if (gs__a != gs__b)                                                                        \
            GS_FAIL_("%s == %s: %lld != %lld", #a, #b, gs__a, gs__b);                              \
    } while (0)
/* Expects a function result of 0 (GS_OK). */
#define GS_ASSERT_OK(e)                                                                            \
    do {                                                                                           \
        long long gs__r = (long long)(e);                                                          \
        if (gs__r != 0)                                                                            \
            GS_FAIL_("%s returned %lld, expected 0", #e, gs__r);                                   \
    } while (0)
#define GS_ASSERT_STREQ(a, b)                                                                      \
    do {                                                                                           \
        const char *gs__a = (a), *gs__b = (b);                                                     \
        if (!gs__a || !gs__b || strcmp(gs__a, gs__b) != 0)                                         \
            GS_FAIL_("%s == %s:\n    \"%s\"\n != \"%s\"", #a, #b, gs__a ? gs__a : "(null)",        \
                     gs__b ? gs__b : "(null)");                                                    \
    } while (0)
#define GS_ASSERT_NEAR(a, b, tol)                                                                  \
    do {                                                                                           \
        double gs__a = (double)(a), gs__b = (double)(b), gs__t = (double)(tol);                    \
        if (!(fabs(gs__a - gs__b) <= gs__t))                                                       \
            GS_FAIL_("%s ~= %s: %.9g vs %.9g (tol %g)", #a, #b, gs__a, gs__b, gs__t);              \
    } while (0)

#define GS_RUN(fn)                                                                                 \
    do {                                                                                           \
        gs__t_cur_failed = 0;                                                                      \
        fn();                                                                                      \
        if (gs__t_cur_failed) {                                                                    \
            gs__t_failed_tests++;                                                                  \
            fprintf(stderr, "[FAIL] %s\n", #fn);                                                   \
        } else {                                                                                   \
            gs__t_passed_tests++;                                                                  \
            fprintf(stderr, "[ ok ] %s\n", #fn);                                                   \
        }                                                                                          \
    } while (0)

static inline int gs_test_summary(void)
{
    fprintf(stderr, "%d passed, %d failed\n", gs__t_passed_tests, gs__t_failed_tests);
    return gs__t_failed_tests ? 1 : 0;
}

/* Path of a file under the fixtures folder, in a static buffer (valid until
 * the next call). */
/* CPU threads for a test's backend: $GS_CPU_THREADS when set (1 under
 * qemu, see cmake/GsTest.cmake), else 0 (all usable cores). The backend
 * itself reads no environment: its threads are a parameter. */
static inline int gs_test_cpu_threads(void)
{
    const char *e = getenv("GS_CPU_THREADS");
    return e && atoi(e) > 0 ? atoi(e) : 0;
}

static inline const char *gs_fixture_path(const char *rel)
{
    static char buf[4096];
    const char *root = getenv("GS_FIXTURES");
#ifdef GS_FIXTURES_DIR
    if (!root)
        root = GS_FIXTURES_DIR;
#endif
    if (!root)
        root = "tests/fixtures";
    snprintf(buf, sizeof buf, "%s/%s", root, rel);
    return buf;
}

/* Reads a whole file (up to 1 GiB) with gs_read_file; returns a malloc'd
 * buffer (caller frees) with a NUL after the data, or NULL. */
static inline char *gs_test_read_file(const char *path, size_t *len)
{
    char *b = NULL;
    size_t n = 0;
    if (gs_read_file(path, (size_t)1 << 30, &b, &n, NULL) != 0)
        return NULL;
    if (len)
        *len = n;
    return b;
}

/* Compares two float tensors; prints "TENSOR name max_abs=.. rel=.. OK|FAIL"
 * (llm.c style) and returns 1 when max|a-b| <= rel_tol * max|ref|. */
static inline int gs_check_tensor(const char *name, const float *got, const float *ref, size_t n,
                                  double rel_tol)
{
    double maxd = 0, maxr = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= maxd))
            maxd = d; /* also catches NaN */
        if (fabs(ref[i]) > maxr)
            maxr = fabs(ref[i]);
    }
    double rel = maxr > 0 ? maxd / maxr : maxd;
    int ok = rel <= rel_tol;
    fprintf(stderr, "TENSOR %-32s n=%zu max_abs=%.3e rel=%.3e tol=%.1e %s\n", name, n, maxd, rel,
            rel_tol, ok ? "OK" : "FAIL");
    return ok;
}

#endif
