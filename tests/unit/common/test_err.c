#include "common/err.h"
#include "test.h"

static void test_names_and_status(void)
{
    GS_ASSERT_STREQ(gs_err_name(GS_EINVAL), "EINVAL");
    GS_ASSERT_STREQ(gs_err_name(GS_OK), "OK");
    GS_ASSERT_STREQ(gs_err_name(12345), "UNKNOWN");
    GS_ASSERT_EQ(gs_err_http_status(GS_ETOOBIG), 413);
    GS_ASSERT_EQ(gs_err_http_status(GS_EAUTH), 401);
    GS_ASSERT_EQ(gs_err_http_status(-999), 500);
    GS_ASSERT_STREQ(gs_err_type(GS_EBUSY), "rate_limit_error");
    GS_ASSERT_STREQ(gs_strerror(GS_EUTF8), "invalid UTF-8 text");
}

static void test_diag(void)
{
    gs_diag d;
    gs_diag_clear(&d);
    GS_ASSERT_EQ(d.code, 0);
    GS_ASSERT_EQ(gs_diag_set(&d, GS_EFORMAT, "key %s at %d", "x", 7), GS_EFORMAT);
    GS_ASSERT_STREQ(d.msg, "key x at 7");
    GS_ASSERT_EQ(gs_diag_set(NULL, GS_EIO, "ignored"), GS_EIO);
    /* Long messages are truncated, never overflow. */
    char big[600];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    gs_diag_set(&d, GS_EIO, "%s", big);
    GS_ASSERT_EQ(strlen(d.msg), sizeof d.msg - 1);
}

int main(void)
{
    GS_RUN(test_names_and_status);
    GS_RUN(test_diag);
    return gs_test_summary();
}
