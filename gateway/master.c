/* master.c - glmserve: the service's master process (the design of
 * nginx's master, ngx_process_cycle.c). It reads the configuration
 * (config.h), opens the listening socket, starts the worker processes
 * (glmserve-worker, one per GPU or the configured CPU workers, each on its
 * own ipc:// socket) and forks the gateway processes (which share the
 * listening socket), then supervises them in one loop:
 *   - a child that dies is restarted with exponential backoff (100 ms
 *     doubling to 30 s; back to 100 ms after a minute of good health),
 *     except a worker that exits 3 (its model folder cannot be served):
 *     it is not restarted, and when no worker is left (and none can dial
 *     in) the service stops with status 3;
 *   - SIGTERM / SIGINT: graceful stop: every child is asked to drain
 *     (SIGTERM), and whatever is left at the deadline is killed; a second
 *     signal kills at once;
 *   - SIGHUP: the configuration is read again beside the old one; if it is
 *     bad, it is refused with a log line and the old one kept; else the
 *     gateways are told (SIGHUP) to reload keys and limits (open streams
 *     stay open); keys that need a restart are named in the log;
 *   - SIGUSR1: the log file is reopened, here and in every child.
 * Under systemd (Type=notify, $NOTIFY_SOCKET set) it says READY=1 once its
 * own GET /ready answers 200, RELOADING=1 then READY=1 around a SIGHUP,
 * and STOPPING=1 when a stop begins (sdnotify.h).
 * Signals are blocked and taken with sigtimedwait in the loop, so no
 * handler runs any code. Every fatal exit logs why and exits non-zero. */
#include <errno.h>
#include <fcntl.h>
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif
#include <libgen.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/file.h"
#include "common/ipc_msg.h"
#include "common/log.h"
#include "gateway/auth.h"
#include "gateway/config.h"
#include "gateway/gateway.h"
#include "gateway/sdnotify.h"

#ifndef GS_STATIC_DIR
#define GS_STATIC_DIR ""
#endif

#define MAX_CHILDREN 320

typedef enum { K_WORKER, K_GATEWAY } kind;

typedef struct {
    kind k;
    int index;
    pid_t pid;        /* 0: not running */
    uint64_t started; /* ns */
    uint64_t respawn; /* ns; 0: none pending */
    uint32_t backoff_ms;
    int gave_up; /* a worker that exited 3: the model folder cannot be served */
    int gpu;     /* -1: none */
    char url[PATH_MAX + 64];
} child;

typedef struct {
    gs_config cfg;
    int argc;
    char **argv;
    int listen_fd;
    char worker_bin[PATH_MAX];
    char run_dir[PATH_MAX - 64];
    int own_run_dir;
    child ch[MAX_CHILDREN];
    int n;
    const char *urls[MAX_CHILDREN + GS_CONFIG_MAX_REMOTE];
    int n_urls;
    int stopping;
    int exit_status; /* 3 when the service stops because no worker can serve the model */
    uint64_t deadline;
    char notify[256]; /* $NOTIFY_SOCKET when systemd started us; "" otherwise */
    int told_ready;
} master;

static uint64_t now_ns(void)
{
    return gs_clock_now_ns();
}

/* The glmserve-worker binary: beside this one (installed), or in the build
 * tree's worker/ folder. */
static int find_worker(master *m)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return -1;
    self[n] = 0;
    char *dir = dirname(self);
    const char *cands[] = {"%s/glmserve-worker", "%s/../worker/glmserve-worker"};
    for (int i = 0; i < 2; i++) {
        snprintf(m->worker_bin, sizeof m->worker_bin, cands[i], dir);
        if (access(m->worker_bin, X_OK) == 0)
            return 0;
    }
    return -1;
}

static int open_listener(const gs_config *c, gs_diag *d)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[16];
    snprintf(port, sizeof port, "%d", c->port);
    int rc = getaddrinfo(c->host, port, &hints, &res);
    if (rc)
        return gs_diag_set(d, GS_ECONFIG, "host %s: %s", c->host, gai_strerror(rc));
    int fd = -1, err = 0;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) || listen(fd, 1024)) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        return gs_diag_set(d, GS_EIO, "cannot listen on %s:%d: %s", c->host, c->port,
                           strerror(err ? err : EADDRNOTAVAIL));
    return fd;
}

static void add_child(master *m, kind k, int index, int gpu)
{
    child *c = &m->ch[m->n++];
    memset(c, 0, sizeof *c);
    c->k = k;
    c->index = index;
    c->gpu = gpu;
    c->backoff_ms = 100;
    if (k == K_WORKER) {
        snprintf(c->url, sizeof c->url, "ipc://%s/worker-%d.sock", m->run_dir, index);
        m->urls[m->n_urls++] = c->url;
    }
}

static const char *kind_name(kind k)
{
    return k == K_WORKER ? "worker" : "gateway";
}

/* Child side of fork: default signal state. */
static void child_signals(void)
{
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    signal(SIGPIPE, SIG_DFL);
}

static void exec_worker(master *m, child *c)
{
    const gs_config *g = &m->cfg;
    char *argv[64];
    char num[16][24]; /* one per NUM below */
    int n = 0, k = 0;
#define ARG(s) argv[n++] = (char *)(s)
#define NUM(flag, v)                                                                               \
    do {                                                                                           \
        snprintf(num[k], sizeof num[k], "%d", (int)(v));                                           \
        ARG(flag);                                                                                 \
        ARG(num[k++]);                                                                             \
    } while (0)
    char name[32];
    snprintf(name, sizeof name, "worker-%d", c->index);
    ARG(m->worker_bin);
    ARG("--model");
    ARG(g->model);
    ARG("--listen");
    ARG(c->url);
    ARG("--backend");
    ARG(g->backend);
    ARG("--name");
    ARG(name);
    ARG("--graphs");
    ARG(g->graphs);
    if (c->gpu >= 0)
        NUM("--device", c->gpu);
    if (g->threads)
        NUM("--threads", g->threads);
    NUM("--max-seqs", g->max_seqs);
    NUM("--max-queue", g->max_queue);
    NUM("--drain-timeout", g->drain_timeout);
    NUM("--max-images", g->max_images);
    if (g->stream_interval_us >= 0)
        NUM("--stream-interval-us", g->stream_interval_us);
    if (g->idle_spin_us >= 0)
        NUM("--idle-spin-us", g->idle_spin_us);
    if (g->image_threads > 0)
        NUM("--image-threads", g->image_threads);
    if (g->image_memory_mb > 0)
        NUM("--image-memory", g->image_memory_mb);
    if (g->max_model_len)
        NUM("--max-model-len", g->max_model_len);
    if (g->kv_memory)
        NUM("--kv-memory", g->kv_memory);
    if (g->encoder_cache_mb)
        NUM("--encoder-cache", g->encoder_cache_mb);
    if (g->dummy_weights)
        ARG("--dummy-weights");
    if (g->weights[0]) {
        ARG("--weights");
        ARG(g->weights);
    }
    if (g->gpu_memory[0]) {
        ARG("--gpu-memory");
        ARG(g->gpu_memory);
    }
    if (g->log_file[0]) {
        ARG("--log-file");
        ARG(g->log_file);
    }
    if (g->cluster_key_file[0]) {
        ARG("--cluster-key-file");
        ARG(g->cluster_key_file);
    }
    argv[n] = NULL;
#undef ARG
#undef NUM
    execv(m->worker_bin, argv);
    gs_log_error("fatal: cannot run %s: %s", m->worker_bin, strerror(errno));
    _exit(127);
}

static void start(master *m, child *c)
{
    pid_t pid = fork();
    if (pid < 0) {
        gs_log_error("fork for %s %d: %s; retrying", kind_name(c->k), c->index, strerror(errno));
        c->respawn = now_ns() + (uint64_t)c->backoff_ms * 1000000u;
        return;
    }
    if (pid == 0) {
        child_signals();
        if (c->k == K_WORKER)
            exec_worker(m, c);
        static char tag[32];
        snprintf(tag, sizeof tag, "gateway-%d[%d]", c->index, (int)getpid());
        gs_log_set_tag(tag);
        gs_gateway_params gp = {&m->cfg, m->listen_fd, m->urls,    m->n_urls,      c->index,
                                m->argc, m->argv,      m->run_dir, m->cfg.gateways};
        int status = gs_gateway_run(&gp);
#ifdef __SANITIZE_ADDRESS__
        __lsan_do_leak_check(); /* _exit skips LeakSanitizer's exit check */
#endif
        _exit(status);
    }
    c->pid = pid;
    c->started = now_ns();
    c->respawn = 0;
    gs_log_info("started %s %d (pid %d)", kind_name(c->k), c->index, (int)pid);
}

static void signal_children(master *m, int sig, int only_gateways);
static void tell_systemd(master *m, const char *state);

/* Begins a graceful stop (SIGTERM to every child, deadline). */
static void begin_stop(master *m)
{
    m->stopping = 1;
    m->deadline = now_ns() + ((uint64_t)m->cfg.drain_timeout + 5) * 1000000000u;
    tell_systemd(m, "STOPPING=1");
    signal_children(m, SIGTERM, 0);
}

/* When every local worker has given up and no other worker can come (no
 * remote_workers, no worker_listen), the service stops with status 3 (as
 * the worker: a restart does not cure it) instead of answering 503 for
 * ever. */
static void stop_if_no_worker(master *m)
{
    if (m->cfg.n_remote_workers || m->cfg.worker_listen[0])
        return;
    for (int i = 0; i < m->n; i++)
        if (m->ch[i].k == K_WORKER && !m->ch[i].gave_up)
            return;
    gs_log_error("fatal: no worker can serve %s; stopping with status 3", m->cfg.model);
    m->exit_status = 3;
    begin_stop(m);
}

static void reap(master *m)
{
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        child *c = NULL;
        for (int i = 0; i < m->n; i++)
            if (m->ch[i].pid == pid)
                c = &m->ch[i];
        if (!c)
            continue;
        c->pid = 0;
        char how[64];
        if (WIFEXITED(st))
            snprintf(how, sizeof how, "exited with status %d", WEXITSTATUS(st));
        else
            snprintf(how, sizeof how, "was killed by signal %d", WTERMSIG(st));
        int clean = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        if (m->stopping) {
            gs_log_info("%s %d (pid %d) %s", kind_name(c->k), c->index, (int)pid, how);
            continue;
        }
        if (c->k == K_WORKER && WIFEXITED(st) && WEXITSTATUS(st) == 3) {
            c->gave_up = 1;
            gs_log_error("worker %d (pid %d) cannot serve the model folder %s (see its log "
                         "line above); not restarting it: fix the folder, then restart glmserve",
                         c->index, (int)pid, m->cfg.model);
            stop_if_no_worker(m);
            continue;
        }
        const uint64_t now = now_ns();
        if (now - c->started > 60ull * 1000000000u)
            c->backoff_ms = 100; /* it was healthy for a while */
        c->respawn = now + (uint64_t)c->backoff_ms * 1000000u;
        gs_log_error("%s %d (pid %d) %s%s; restarting it in %u ms", kind_name(c->k), c->index,
                     (int)pid, how, clean ? " unexpectedly" : "", c->backoff_ms);
        c->backoff_ms = c->backoff_ms < 15000 ? c->backoff_ms * 2 : 30000;
    }
}

static void signal_children(master *m, int sig, int only_gateways)
{
    for (int i = 0; i < m->n; i++)
        if (m->ch[i].pid > 0 && (!only_gateways || m->ch[i].k == K_GATEWAY))
            kill(m->ch[i].pid, sig);
}

static int n_running(const master *m)
{
    int n = 0;
    for (int i = 0; i < m->n; i++)
        n += m->ch[i].pid > 0;
    return n;
}

/* The keys file must load before anything starts or reloads. */
static int check_keys(const gs_config *c, gs_diag *d)
{
    if (!c->api_key_file[0])
        return 0;
    gs_auth *a = NULL;
    int rc = gs_auth_load(c->api_key_file, &a, d);
    gs_auth_free(a);
    return rc;
}

static void reload(master *m)
{
    gs_config n;
    char restart[512];
    gs_diag d;
    gs_diag_clear(&d);
    if (gs_config_reload(&m->cfg, m->argc, m->argv, &n, restart, sizeof restart, &d) ||
        check_keys(&n, &d)) {
        gs_log_error("SIGHUP: reload refused, keeping the running configuration: %s", d.msg);
        return;
    }
    m->cfg = n;
    gs_log_info("SIGHUP: configuration reloaded; gateways reload keys and limits%s%s",
                restart[0] ? "; these keys need a restart: " : "", restart);
    signal_children(m, SIGHUP, 1);
}

/* Tells systemd state (sdnotify.h), when it is listening; never fatal. */
static void tell_systemd(master *m, const char *state)
{
    if (m->notify[0] && gs_sdnotify(m->notify, state) < 0)
        gs_log_warn("cannot tell systemd '%s' on %s", state, m->notify);
}

/* READY=1 once the gateways answer /ready with 200 (a worker is up); until
 * then probed every 250 ms. */
static void tell_ready_when_serving(master *m, uint64_t now, uint64_t *wake)
{
    if (!m->notify[0] || m->told_ready || m->stopping)
        return;
    if (gs_sdnotify_probe_ready(m->listen_fd, 200) != 1) {
        if (now + 250000000u < *wake)
            *wake = now + 250000000u;
        return;
    }
    char st[384];
    snprintf(st, sizeof st, "READY=1\nSTATUS=serving on %s:%d\nMAINPID=%d", m->cfg.host,
             m->cfg.port, (int)getpid());
    tell_systemd(m, st);
    m->told_ready = 1;
    gs_log_info("serving (/ready answers 200): told systemd READY=1");
}

/* The gateways' metrics files (gs_gateway_params.metrics_dir): removed at
 * start, so that no gateway sums a previous run's counters. */
static void remove_metrics_files(master *m)
{
    char path[PATH_MAX];
    for (int i = 0; i < m->cfg.gateways; i++) {
        snprintf(path, sizeof path, "%s/" GS_GW_METRICS_FILE, m->run_dir, i);
        unlink(path);
    }
}

static void remove_run_dir(master *m)
{
    if (!m->own_run_dir)
        return;
    for (int i = 0; i < m->n; i++)
        if (m->ch[i].k == K_WORKER)
            unlink(m->ch[i].url + 6);
    remove_metrics_files(m);
    rmdir(m->run_dir);
}

int main(int argc, char **argv)
{
    static master m; /* large (child table): not on the stack */
    m.argc = argc;
    m.argv = argv;
    gs_diag d;
    gs_diag_clear(&d);
    char tag[32];
    snprintf(tag, sizeof tag, "master[%d]", (int)getpid());
    gs_log_set_tag(tag);
    int rc = gs_config_load(argc, argv, &m.cfg, &d);
    if (rc > 0)
        return 0;
    if (rc) {
        fprintf(stderr, "glmserve: %s\n", d.msg);
        return 2;
    }
    gs_config *c = &m.cfg;
    const char *ns = getenv("NOTIFY_SOCKET");
    if (ns) { /* ours only: the children must not inherit it */
        snprintf(m.notify, sizeof m.notify, "%s", ns);
        unsetenv("NOTIFY_SOCKET");
    }
    if (c->log_file[0] && gs_log_reopen(c->log_file)) {
        fprintf(stderr, "glmserve: --log-file %s: %s\n", c->log_file, strerror(errno));
        return 1;
    }
    if (!c->static_dir[0])
        snprintf(c->static_dir, sizeof c->static_dir, "%s", GS_STATIC_DIR);
    if (check_keys(c, &d)) {
        gs_log_error("fatal: --api-key-file: %s", d.msg);
        return 1;
    }
    char ckey[GS_IPC_MAX_NAME + 1];
    if (c->cluster_key_file[0] && gs_read_secret_file(c->cluster_key_file, ckey, sizeof ckey, &d)) {
        gs_log_error("fatal: --cluster-key-file: %s", d.msg);
        return 1;
    }
    if (find_worker(&m)) {
        gs_log_error("fatal: glmserve-worker not found beside this program");
        return 1;
    }
    struct stat sb;
    if (stat(c->model, &sb) || !S_ISDIR(sb.st_mode)) {
        gs_log_error("fatal: --model %s: not a folder", c->model);
        return 1;
    }
    if (c->run_dir[0]) {
        snprintf(m.run_dir, sizeof m.run_dir, "%s", c->run_dir);
        if (mkdir(m.run_dir, 0700) && errno != EEXIST) {
            gs_log_error("fatal: --run-dir %s: %s", m.run_dir, strerror(errno));
            return 1;
        }
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(m.run_dir, sizeof m.run_dir, "%s/glmserve.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(m.run_dir)) {
            gs_log_error("fatal: cannot make a folder for the worker sockets: %s", strerror(errno));
            return 1;
        }
        m.own_run_dir = 1;
    }
    remove_metrics_files(&m);
    m.listen_fd = open_listener(c, &d);
    if (m.listen_fd < 0) {
        gs_log_error("fatal: %s", d.msg);
        remove_run_dir(&m);
        return 1;
    }
    /* the gateways inherit the socket across fork (no exec); workers must not */
    fcntl(m.listen_fd, F_SETFD, FD_CLOEXEC);
    if (c->pid_file[0]) {
        FILE *f = fopen(c->pid_file, "w");
        if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f)) {
            gs_log_error("fatal: --pid-file %s: %s", c->pid_file, strerror(errno));
            return 1;
        }
    }
    /* Children: one worker per listed GPU with cuda (unless workers says
     * otherwise), else `workers` CPU workers; then the gateways. */
    int gpus[256], n_gpus = 0;
    for (const char *p = c->gpus; *p && n_gpus < 256;) {
        gpus[n_gpus++] = atoi(p);
        const char *comma = strchr(p, ',');
        p = comma ? comma + 1 : p + strlen(p);
    }
    int n_workers = c->workers;
    if (!strcmp(c->backend, "cuda") && n_gpus && c->workers <= 1)
        n_workers = n_gpus;
    for (int i = 0; i < n_workers && m.n < MAX_CHILDREN - 64; i++)
        add_child(&m, K_WORKER, i, n_gpus ? gpus[i % n_gpus] : -1);
    for (int i = 0; i < c->n_remote_workers; i++)
        m.urls[m.n_urls++] = c->remote_workers[i];
    for (int i = 0; i < c->gateways; i++)
        add_child(&m, K_GATEWAY, i, -1);

    sigset_t set;
    sigemptyset(&set);
    int sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGUSR1};
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++)
        sigaddset(&set, sigs[i]);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    gs_log_info("glmserve on %s:%d: %d worker(s) (%s), %d remote, %d gateway(s), model %s", c->host,
                c->port, n_workers, c->backend, c->n_remote_workers, c->gateways, c->model);
    for (int i = 0; i < m.n; i++)
        start(&m, &m.ch[i]);

    for (;;) {
        const uint64_t now = now_ns();
        uint64_t wake = now + 1000000000u; /* at least once a second */
        for (int i = 0; i < m.n && !m.stopping; i++) {
            child *ch = &m.ch[i];
            if (!ch->pid && ch->respawn) {
                if (ch->respawn <= now)
                    start(&m, ch);
                else if (ch->respawn < wake)
                    wake = ch->respawn;
            }
        }
        tell_ready_when_serving(&m, now, &wake);
        if (m.stopping) {
            if (!n_running(&m))
                break;
            if (now >= m.deadline) {
                gs_log_warn("stop deadline passed: killing %d child(ren)", n_running(&m));
                signal_children(&m, SIGKILL, 0);
                m.deadline = UINT64_MAX;
            } else if (m.deadline < wake) {
                wake = m.deadline;
            }
        }
        uint64_t wait = wake > now ? wake - now : 0;
        struct timespec ts = {(time_t)(wait / 1000000000u), (long)(wait % 1000000000u)};
        int sig = sigtimedwait(&set, NULL, &ts);
        if (sig < 0)
            continue; /* timeout or EINTR */
        switch (sig) {
        case SIGCHLD:
            reap(&m);
            break;
        case SIGTERM:
        case SIGINT:
            if (!m.stopping) {
                gs_log_info("%s: stopping: children drain within %d s", strsignal(sig),
                            c->drain_timeout);
                begin_stop(&m);
            } else {
                gs_log_warn("second stop signal: killing the children now");
                signal_children(&m, SIGKILL, 0);
            }
            break;
        case SIGHUP: {
            char st[64];
            snprintf(st, sizeof st, "RELOADING=1\nMONOTONIC_USEC=%llu",
                     (unsigned long long)(now_ns() / 1000u));
            tell_systemd(&m, st);
            reload(&m);
            if (m.told_ready)
                tell_systemd(&m, "READY=1");
            break;
        }
        case SIGUSR1:
            if (c->log_file[0] && gs_log_reopen(c->log_file))
                gs_log_error("SIGUSR1: cannot reopen %s: %s", c->log_file, strerror(errno));
            signal_children(&m, SIGUSR1, 0);
            break;
        }
    }
    close(m.listen_fd);
    remove_run_dir(&m);
    if (c->pid_file[0])
        unlink(c->pid_file);
    gs_log_info("stopped%s", m.exit_status ? " (status 3)" : "");
    return m.exit_status;
}
