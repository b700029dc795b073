/* test_resolve.c - URL checks and resolution (common/resolve.c): what is
 * a malformed URL (a startup error) and what is a name to resolve, the
 * numeric URLs an answer gives, sorted and unique; a name with no address
 * is an error to retry, not GS_EINVAL. */
#include "common/resolve.h"
#include "test.h"

static void test_good_urls_parse(void)
{
    gs_url u;
    GS_ASSERT_OK(gs_url_parse("tcp://gw.glmserve.svc.cluster.local:7500", &u, NULL));
    GS_ASSERT_STREQ(u.host, "gw.glmserve.svc.cluster.local");
    GS_ASSERT_EQ(u.port, 7500);
    GS_ASSERT_EQ(u.is_ipc, 0);
    GS_ASSERT_OK(gs_url_parse("tcp://10.0.0.1:1", &u, NULL));
    GS_ASSERT_STREQ(u.host, "10.0.0.1");
    GS_ASSERT_OK(gs_url_parse("tcp://[fd00::5]:65535", &u, NULL));
    GS_ASSERT_STREQ(u.host, "fd00::5");
    GS_ASSERT_EQ(u.port, 65535);
    GS_ASSERT_OK(gs_url_parse("tcp://name.:7500", &u, NULL)); /* absolute DNS name */
    GS_ASSERT_OK(gs_url_parse("ipc:///run/glmserve/w0", &u, NULL));
    GS_ASSERT_EQ(u.is_ipc, 1);
    GS_ASSERT_STREQ(u.path, "/run/glmserve/w0");
}

static void test_malformed_urls_are_refused(void)
{
    static const char *bad[] = {
        "tcp://",
        "tcp://host",
        "tcp://host:",
        "tcp://host:0",
        "tcp://host:65536",
        "tcp://:7500",
        "tcp://[::1:7500",
        "tcp://::1:7500",
        "tcp://[::1]7500",
        "tcp://ho st:1",
        "tcp://host:12a",
        "tcp://host:-1",
        "tcp://host:+1",
        "http://host:80",
        "ipc://",
        "tcp://host/x:1",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        gs_diag d;
        gs_diag_clear(&d);
        int rc = gs_url_parse(bad[i], NULL, &d);
        GS_ASSERT_MSG(rc == GS_EINVAL, "'%s' accepted (rc %d)", bad[i], rc);
        GS_ASSERT_MSG(d.msg[0], "'%s': no message", bad[i]);
    }
    gs_addr_set set;
    GS_ASSERT_EQ(gs_resolve_url("tcp://host", &set, NULL), GS_EINVAL);
    GS_ASSERT_EQ(set.n, 0);
}

static void test_numeric_and_ipc_urls_give_themselves(void)
{
    gs_addr_set set;
    gs_diag d;
    GS_ASSERT_OK(gs_resolve_url("tcp://10.231.5.1:7500", &set, &d));
    GS_ASSERT_EQ(set.n, 1);
    GS_ASSERT_STREQ(set.url[0], "tcp://10.231.5.1:7500");
    GS_ASSERT_EQ(d.msg[0], 0);
    GS_ASSERT_OK(gs_resolve_url("tcp://[::1]:9", &set, NULL));
    GS_ASSERT_EQ(set.n, 1);
    GS_ASSERT_STREQ(set.url[0], "tcp://[::1]:9");
    GS_ASSERT_OK(gs_resolve_url("ipc:///tmp/gs-w", &set, NULL));
    GS_ASSERT_EQ(set.n, 1);
    GS_ASSERT_STREQ(set.url[0], "ipc:///tmp/gs-w");
    GS_ASSERT(gs_addr_set_has(&set, "ipc:///tmp/gs-w"));
    GS_ASSERT(!gs_addr_set_has(&set, "ipc:///tmp/gs"));
}

/* localhost is in every /etc/hosts: the answer holds 127.0.0.1 with the
 * URL's port, sorted and without the duplicates getaddrinfo gives. */
static void test_a_name_gives_every_address_sorted(void)
{
    gs_addr_set set;
    gs_diag d;
    int rc = gs_resolve_url("tcp://localhost:7123", &set, &d);
    GS_ASSERT_MSG(rc == 0, "localhost: %s", d.msg);
    GS_ASSERT(set.n >= 1);
    GS_ASSERT(gs_addr_set_has(&set, "tcp://127.0.0.1:7123"));
    for (int i = 1; i < set.n; i++)
        GS_ASSERT_MSG(strcmp(set.url[i - 1], set.url[i]) < 0, "%s before %s", set.url[i - 1],
                      set.url[i]);
}

static void test_a_name_with_no_address_is_not_einval(void)
{
    gs_addr_set set;
    gs_diag d;
    gs_diag_clear(&d);
    int rc = gs_resolve_url("tcp://no-such-gateway.invalid:7500", &set, &d);
    /* ENOENT where DNS answers, EAGAIN where it cannot be reached */
    GS_ASSERT_MSG(rc == GS_ENOENT || rc == GS_EAGAIN || rc == GS_EIO, "rc %d (%s)", rc, d.msg);
    GS_ASSERT(strstr(d.msg, "no-such-gateway.invalid") != NULL);
    GS_ASSERT_EQ(set.n, 0);
}

int main(void)
{
    GS_RUN(test_good_urls_parse);
    GS_RUN(test_malformed_urls_are_refused);
    GS_RUN(test_numeric_and_ipc_urls_give_themselves);
    GS_RUN(test_a_name_gives_every_address_sorted);
    GS_RUN(test_a_name_with_no_address_is_not_einval);
    return gs_test_summary();
}
