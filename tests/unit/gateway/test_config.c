/* test_config.c - the directive table: defaults, file then flags, errors
 * that name the key, the cross-key checks, reload keeping what needs a
 * restart. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway/config.h"
#include "test.h"

static char g_dir[] = "/tmp/gs_test_config.XXXXXX";

static const char *write_file(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

#define ARGV(...)                                                                                  \
    (char *[])                                                                                     \
    {                                                                                              \
        "glmserve", __VA_ARGS__, NULL                                                              \
    }

static void test_defaults_and_flags(void)
{
    gs_config c;
    gs_diag d;
    char **v = ARGV("--model", "m", "--port", "9000", "--no-auth", "--rate", "2.5",
                    "--remote-worker", "tcp://10.0.0.2:7411");
    GS_ASSERT_OK(gs_config_load(10, v, &c, &d));
    GS_ASSERT_STREQ(c.model, "m");
    GS_ASSERT_STREQ(c.host, "127.0.0.1");
    GS_ASSERT_EQ(c.port, 9000);
    GS_ASSERT_EQ(c.workers, 1);
    GS_ASSERT_EQ(c.no_auth, 1);
    GS_ASSERT_NEAR(c.rate, 2.5, 0);
    GS_ASSERT_EQ(c.burst, 10);
    GS_ASSERT_EQ(c.n_remote_workers, 1);
    GS_ASSERT_STREQ(c.remote_workers[0], "tcp://10.0.0.2:7411");
}

static void test_file_then_flags(void)
{
    const char *f = write_file("a.json", "{\"model\": \"m\", \"port\": 1234, \"gateways\": 3,"
                                         " \"remote_workers\": [\"tcp://a:1\", \"tcp://b:2\"]}");
    gs_config c;
    gs_diag d;
    char **v = ARGV("--config", (char *)f, "--port", "4321");
    GS_ASSERT_OK(gs_config_load(5, v, &c, &d));
    GS_ASSERT_EQ(c.port, 4321); /* the flag wins */
    GS_ASSERT_EQ(c.gateways, 3);
    GS_ASSERT_EQ(c.n_remote_workers, 2);
    GS_ASSERT_STREQ(c.config_file, f);
}

static void test_errors_name_the_key(void)
{
    gs_config c;
    gs_diag d;
    struct {
        const char *file, *words;
    } cases[] = {
        {"{\"model\": \"m\", \"prot\": 1}", "'prot' is not a known key"},
        {"{\"model\": \"m\", \"port\": \"80\"}", "key 'port' must be an integer"},
        {"{\"model\": \"m\", \"port\": 70000}", "key 'port' must be in [0, 65535]"},
        {"{\"model\": \"m\", \"no_auth\": 1}", "key 'no_auth' must be true or false"},
        {"{\"model\": \"m\", \"remote_workers\": [\"http://x\"]}", "not a tcp:// or ipc:// URL"},
        {"{\"model\": \"m\",", "a.json:1"},
        {"[1]", "must be an object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *f = write_file("a.json", cases[i].file);
        char **v = ARGV("--config", (char *)f);
        int rc = gs_config_load(3, v, &c, &d);
        GS_ASSERT_EQ(rc, GS_ECONFIG);
        GS_ASSERT_MSG(strstr(d.msg, cases[i].words), "case %zu: '%s' lacks '%s'", i, d.msg,
                      cases[i].words);
    }
    char **v = ARGV("--model", "m", "--prot", "1");
    GS_ASSERT_EQ(gs_config_load(5, v, &c, &d), GS_EINVAL);
    GS_ASSERT(strstr(d.msg, "--prot"));
    char **w = ARGV("--model", "m", "--threads", "x");
    GS_ASSERT_EQ(gs_config_load(5, w, &c, &d), GS_ECONFIG);
    GS_ASSERT(strstr(d.msg, "--threads"));
}

static void test_cross_checks(void)
{
    gs_config c;
    gs_diag d;
    char **a = ARGV("--model", "m", "--host", "0.0.0.0");
    GS_ASSERT_EQ(gs_config_load(5, a, &c, &d), GS_ECONFIG);
    GS_ASSERT(strstr(d.msg, "without API keys"));
    char **b = ARGV("--model", "m", "--host", "0.0.0.0", "--no-auth");
    GS_ASSERT_OK(gs_config_load(6, b, &c, &d));
    char **e = ARGV("--port", "1");
    GS_ASSERT_EQ(gs_config_load(3, e, &c, &d), GS_ECONFIG);
    GS_ASSERT(strstr(d.msg, "--model"));
    char **f = ARGV("--model", "m", "--workers", "0");
    GS_ASSERT_EQ(gs_config_load(5, f, &c, &d), GS_ECONFIG);
    GS_ASSERT(strstr(d.msg, "no workers"));
    /* gpu_memory is checked as the worker reads it (gs_parse_bytes) */
    char **g = ARGV("--model", "m", "--gpu-memory", "10GiB");
    GS_ASSERT_OK(gs_config_load(5, g, &c, &d));
    char **h = ARGV("--model", "m", "--gpu-memory", "lots");
    GS_ASSERT_EQ(gs_config_load(5, h, &c, &d), GS_ECONFIG);
    GS_ASSERT(strstr(d.msg, "gpu_memory"));
    GS_ASSERT(gs_config_host_is_loopback("127.0.0.2") && gs_config_host_is_loopback("::1"));
    GS_ASSERT(!gs_config_host_is_loopback("10.0.0.1"));
}

static void test_reload_keeps_what_needs_a_restart(void)
{
    const char *f = write_file("b.json", "{\"model\": \"m\", \"port\": 1000, \"rate\": 1}");
    gs_config cur, n;
    gs_diag d;
    char **v = ARGV("--config", (char *)f);
    GS_ASSERT_OK(gs_config_load(3, v, &cur, &d));
    write_file("b.json", "{\"model\": \"m\", \"port\": 2000, \"rate\": 5, \"workers\": 2}");
    char restart[256];
    GS_ASSERT_OK(gs_config_reload(&cur, 3, v, &n, restart, sizeof restart, &d));
    GS_ASSERT_NEAR(n.rate, 5, 0); /* reloadable */
    GS_ASSERT_EQ(n.port, 1000);   /* kept */
    GS_ASSERT_EQ(n.workers, 1);   /* kept */
    GS_ASSERT_STREQ(restart, "port, workers");
    write_file("b.json", "{\"model\": \"m\", \"rate\": -1}");
    GS_ASSERT_EQ(gs_config_reload(&cur, 3, v, &n, restart, sizeof restart, &d), GS_ECONFIG);
    GS_ASSERT(strstr(d.msg, "'rate'"));
}

int main(void)
{
    if (!mkdtemp(g_dir))
        return 1;
    GS_RUN(test_defaults_and_flags);
    GS_RUN(test_file_then_flags);
    GS_RUN(test_errors_name_the_key);
    GS_RUN(test_cross_checks);
    GS_RUN(test_reload_keeps_what_needs_a_restart);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd)) {
    }
    return gs_test_summary();
}
