/* thread_probe.h - for unit tests whose code under test starts threads
 * (nng, the dialer): whether a thread can start here at all. Some
 * qemu-user builds hang for ever in the first pthread_create; the probe
 * runs in a child with a deadline, so such a test can skip (return
 * GS_TEST_SKIP from main, ctest's SKIP_RETURN_CODE) instead of hanging. */
#ifndef GS_TEST_THREAD_PROBE_H
#define GS_TEST_THREAD_PROBE_H

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#define GS_TEST_SKIP 77

static void *gs_test_noop(void *arg)
{
    return arg;
}

/* 1 when a thread starts and joins within 5 s (or when it cannot tell). */
static int gs_test_threads_work(void)
{
    pid_t p = fork();
    if (p < 0)
        return 1; /* cannot tell: run the tests */
    if (p == 0) {
        pthread_t t;
        if (pthread_create(&t, NULL, gs_test_noop, NULL) != 0)
            _exit(1);
        pthread_join(t, NULL);
        _exit(0);
    }
    for (int i = 0; i < 500; i++) {
        int st;
        if (waitpid(p, &st, WNOHANG) == p)
            return WIFEXITED(st) && WEXITSTATUS(st) == 0;
        usleep(10000);
    }
    kill(p, SIGKILL);
    waitpid(p, NULL, 0);
    return 0;
}

#endif
