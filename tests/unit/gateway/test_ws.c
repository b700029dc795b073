/* test_ws.c - the pure part of gateway/ws.c: Sec-WebSocket-Key ->
 * Sec-WebSocket-Accept (RFC 6455 section 1.3's example) and the keys it
 * refuses. The framing is libwslay's and is tested end to end by
 * tests/python/test_ws.py. */
#include <string.h>

#include "gateway/ws.h"
#include "test.h"

static void test_rfc_example(void)
{
    char out[29];
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    GS_ASSERT_OK(gs_ws_accept_key(key, strlen(key), out));
    GS_ASSERT_STREQ(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_other_key(void)
{
    /* 16 zero bytes: base64 "AAAAAAAAAAAAAAAAAAAAAA==" */
    char out[29];
    const char *key = "AAAAAAAAAAAAAAAAAAAAAA==";
    GS_ASSERT_OK(gs_ws_accept_key(key, strlen(key), out));
    GS_ASSERT_EQ(strlen(out), 28);
    GS_ASSERT(strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") != 0);
}

static void test_bad_keys(void)
{
    static const char *const bad[] = {
        "",
        "dGhlIHNhbXBsZSBub25jZQ",     /* no padding */
        "dGhlIHNhbXBsZSBub25jZQ=",    /* short */
        "dGhlIHNhbXBsZSBub25jZQ===",  /* long */
        "dGhlIHNhbXBsZSBub25j*Q==",   /* not base64 */
        "dGhlIHNhbXBsZSBub25jZQAA",   /* 18 bytes, not 16 */
        "dGhlIHNhbXBsZSBub25jZQ==\n", /* trailing byte */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char out[29] = "x";
        GS_ASSERT_EQ(gs_ws_accept_key(bad[i], strlen(bad[i]), out), GS_EINVAL);
        GS_ASSERT_EQ(out[0], 0);
    }
    char out[29];
    GS_ASSERT_EQ(gs_ws_accept_key(NULL, 0, out), GS_EINVAL);
}

int main(void)
{
    GS_RUN(test_rfc_example);
    GS_RUN(test_other_key);
    GS_RUN(test_bad_keys);
    return gs_test_summary();
}
