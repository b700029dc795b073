/* Tests for common/file: the size cap, missing files, and special files
 * (FIFO, device, directory) refused without blocking. */
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/time.h>
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
    /* A folder is not a regular file. */
    GS_ASSERT_EQ(gs_read_file("/", 10, &buf, &len, &d), GS_EIO);
    GS_ASSERT(strstr(d.msg, "not a regular file") != NULL);
}

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec * 1e-6;
}

/* A FIFO with no writer used to block open() forever: now refused at once
 * (SIGALRM kills the test if it ever blocks again). */
static void test_fifo_and_devices(void)
{
    char fifo[80], *buf = NULL;
    size_t len = 0;
    gs_diag d;
    snprintf(fifo, sizeof fifo, "%s.fifo", g_path);
    unlink(fifo);
    GS_ASSERT_OK(mkfifo(fifo, 0600));
    alarm(10);
    double t0 = now_s();
    GS_ASSERT_EQ(gs_read_file(fifo, 100, &buf, &len, &d), GS_EIO);
    GS_ASSERT(now_s() - t0 < 2.0);
    GS_ASSERT(buf == NULL && len == 0);
    GS_ASSERT(strstr(d.msg, fifo) != NULL);
    GS_ASSERT(strstr(d.msg, "FIFO") != NULL);
    int fd = gs_open_regular(fifo, &d);
    GS_ASSERT_EQ(fd, GS_EIO);
    alarm(0);
    unlink(fifo);
    GS_ASSERT_EQ(gs_read_file("/dev/null", 100, &buf, &len, &d), GS_EIO);
    GS_ASSERT(strstr(d.msg, "character device") != NULL);
    /* A regular file opens, in blocking mode. */
    write_bytes(3);
    fd = gs_open_regular(g_path, &d);
    GS_ASSERT(fd >= 0);
    char b[8];
    GS_ASSERT_EQ(read(fd, b, sizeof b), 3);
    close(fd);
}

int main(void)
{
    snprintf(g_path, sizeof g_path, "/tmp/gs_test_file_%d", (int)getpid());
    GS_RUN(test_sizes_around_the_cap);
    GS_RUN(test_missing_and_unreadable);
    GS_RUN(test_fifo_and_devices);
    unlink(g_path);
    return gs_test_summary();
}
