#include <stdio.h>
#include <unistd.h>

#include "common/file.h"
#include "test.h"

static char g_path[64];

static void write_bytes(size_t n)
{
    FILE *f = fopen(g_path, "wb");
    for (size_t i = 0; i < n; i++)
        fputc('a' + (int)(i % 26), f);
    fclose(f);
}

static void test_sizes_around_the_cap(void)
{
    char *buf;
    size_t len;
    gs_diag d;
    const size_t cap = 100000; /* past the first 64 KiB chunk */
    write_bytes(cap);
    GS_ASSERT_OK(gs_read_file(g_path, cap, &buf, &len, &d));
    GS_ASSERT_EQ(len, cap);
    GS_ASSERT_EQ(buf[len], 0);
    GS_ASSERT_EQ(buf[cap - 1], 'a' + (int)((cap - 1) % 26));
    free(buf);
    write_bytes(cap + 1);
    GS_ASSERT_EQ(gs_read_file(g_path, cap, &buf, &len, &d), GS_ETOOBIG);
    GS_ASSERT(buf == NULL && len == 0);
    GS_ASSERT(strstr(d.msg, g_path) != NULL);
    write_bytes(0);
    GS_ASSERT_OK(gs_read_file(g_path, cap, &buf, &len, &d));
    GS_ASSERT_EQ(len, 0);
    GS_ASSERT_EQ(buf[0], 0);
    free(buf);
    GS_ASSERT_EQ(gs_read_file(g_path, 0, &buf, &len, &d), 0);
    free(buf);
    write_bytes(1);
    GS_ASSERT_EQ(gs_read_file(g_path, 0, &buf, &len, &d), GS_ETOOBIG);
}

static void test_missing_and_unreadable(void)
{
    char *buf;
    size_t len;
    gs_diag d;
    GS_ASSERT_EQ(gs_read_file("/nonexistent/dir/file", 10, &buf, &len, &d), GS_ENOENT);
    GS_ASSERT(strstr(d.msg, "/nonexistent/dir/file") != NULL);
    /* A folder opens but cannot be read. */
    GS_ASSERT_EQ(gs_read_file("/", 10, &buf, &len, NULL), GS_EIO);
}

int main(void)
{
    snprintf(g_path, sizeof g_path, "/tmp/gs_test_file_%d", (int)getpid());
    GS_RUN(test_sizes_around_the_cap);
    GS_RUN(test_missing_and_unreadable);
    unlink(g_path);
    return gs_test_summary();
}
