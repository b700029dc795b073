/* fuzz_util.h - small helpers shared by the fuzz targets (header only):
 * where the fixtures are, a private temporary folder, writing a file
 * (reading one: gs_read_file, common/file.h).
 * GS_FIXTURES_DIR is set by tests/fuzz/CMakeLists.txt (the source tree's
 * tests/fixtures); the environment variable GS_FIXTURES overrides it. */
#ifndef GS_FUZZ_UTIL_H
#define GS_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef GS_FIXTURES_DIR
#define GS_FIXTURES_DIR "tests/fixtures"
#endif

/* "<fixtures>/<rel>" into a static buffer. */
static inline const char *fz_fixture(const char *rel)
{
    static char buf[4096];
    const char *root = getenv("GS_FIXTURES");
    snprintf(buf, sizeof buf, "%s/%s", root && *root ? root : GS_FIXTURES_DIR, rel);
    return buf;
}

/* Writes data[0..len) to path (replaced). 0 or -1. */
static inline int fz_write(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* A private folder in /dev/shm (else $TMPDIR or /tmp), made once per
 * process and removed at exit with what fz_tmp_file put in it. */
static char fz_tmp_dir[512];
static char fz_tmp_files[8][640];
static int fz_n_tmp_files;

static inline void fz_tmp_cleanup(void)
{
    for (int i = 0; i < fz_n_tmp_files; i++)
        unlink(fz_tmp_files[i]);
    if (fz_tmp_dir[0])
        rmdir(fz_tmp_dir);
}

/* "<tmp>/<name>" (the folder made on first use; names registered for the
 * clean-up, at most 8 distinct ones); NULL when no folder can be made. */
static inline const char *fz_tmp_file(const char *name)
{
    if (!fz_tmp_dir[0]) {
        /* tmpfs first: a file written and mapped per input is ten times
         * slower on a disk */
        const char *t = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
        snprintf(fz_tmp_dir, sizeof fz_tmp_dir, "%s/gs-fuzz-XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(fz_tmp_dir)) {
            fz_tmp_dir[0] = 0;
            return NULL;
        }
        atexit(fz_tmp_cleanup);
    }
    static char buf[640];
    snprintf(buf, sizeof buf, "%s/%s", fz_tmp_dir, name);
    for (int i = 0; i < fz_n_tmp_files; i++)
        if (strcmp(fz_tmp_files[i], buf) == 0)
            return buf;
    if (fz_n_tmp_files < 8)
        snprintf(fz_tmp_files[fz_n_tmp_files++], sizeof fz_tmp_files[0], "%s", buf);
    return buf;
}

#endif
