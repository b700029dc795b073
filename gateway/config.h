/* config.h - the service's configuration: one JSON file (--config) plus
 * command-line overrides, read through one directive table (config.c):
 * each key has a type, bounds, a command-line flag and whether SIGHUP may
 * change it. Errors name the key (and the file or the flag).
 *
 * JSON keys and flags (flag = "--" + key with '_' -> '-'):
 *   model (required)        folder of the Hugging Face model
 *   host ("127.0.0.1"), port (8080)
 *   workers (1)             local worker processes (with cuda: one per GPU
 *                           listed in gpus unless set)
 *   gateways (1)            gateway processes sharing the listening socket
 *   backend ("cpu")         cpu | cuda
 *   gpus ("")               "0,1": the GPUs of the local workers
 *   threads (0)             CPU threads per worker (0: all cores / workers)
 *   api_key_file ("")       keys file (docs/api-keys.md); reloaded on SIGHUP
 *   no_auth (false)         serve without keys (refused on a non-loopback
 *                           host unless set)
 *   log_file ("")           append logs there (reopened on SIGUSR1)
 *   pid_file ("")
 *   run_dir ("")            where the workers' ipc:// sockets and the
 *                           gateways' metrics snapshots live (default: a
 *                           fresh folder under $TMPDIR or /tmp)
 *   remote_workers ([])     tcp:// URLs of workers started by hand (they --listen)
 *   worker_listen ("")      a URL where workers started by hand dial in
 *                           (glmserve-worker --connect URL); gateway i
 *                           listens on port + i (tcp) or path-i (ipc)
 *   cluster_key_file ("")   a shared secret (16-256 printable bytes) that
 *                           gateways and workers send in their hello: a
 *                           peer without it is refused (docs/deploy.md,
 *                           "Trust"); passed to local workers
 *   max_seqs (64), max_queue (64), max_model_len (0: the model's),
 *   kv_memory (0: the worker's default; MiB), encoder_cache_mb (0: the
 *                           worker's default, 256), dummy_weights (false),
 *   graphs ("auto")         passed to every local worker
 *   weights ("")            bf16 | int8 | int4 | auto: the workers' weight
 *                           format (docs/quantization.md); "": the folder's own
 *   gpu_memory ("")         a memory cap per worker ("15G", "10GiB"): weights,
 *                           activations and KV pages fit in it
 *   static_dir ("")         the browser UI (default: static/ beside the binary's tree)
 *   vendor_dirs             folders, ':'-separated, whose files are served at
 *                           /vendor/NAME (first folder holding NAME wins): the
 *                           UI's Markdown renderer and sanitizer
 *                           ("/usr/share/javascript/marked:
 *                            /usr/share/nodejs/dompurify/dist", Debian's
 *                            libjs-marked and node-dompurify)
 *   stream_interval_us (-1: the worker's default, 10000) a job's events
 *                           leave a worker at most this often (0: every step)
 *   idle_spin_us (-1: the worker's default, 300) an idle worker's engine
 *                           and CPU threads wait awake this long before they
 *                           sleep (0: the engine sleeps at once)
 *   image_threads (0: the worker's default: 1 with the CPU backend, up to 4
 *                           with CUDA) threads per image for resize and
 *                           patchify
 *   image_memory_mb (0: the worker's default, a quarter of RAM, at most
 *                           4096) prepared image pixels a worker's jobs
 *                           hold at once; a job that would pass it waits
 *   heartbeat_timeout_ms (2000), drain_timeout (30; s)
 *   send_timeout (60; s)    a client that takes none of a response's waiting
 *                           bytes for this long is closed (its job cancelled)
 *   fetch_images (false)    fetch http(s) image URLs (needs libcurl); off:
 *                           they are refused with 400
 *   fetch_timeout_ms (10000), fetch_allow_private (false: loopback and
 *                           private addresses are never fetched)
 *   max_body_mb (64), max_images (16)                          [reloadable]
 *   max_body_memory_mb (1024) request body bytes one gateway holds at
 *                           once (uploads in progress and bodies not yet
 *                           parsed); a request past it gets 503  [reloadable]
 *   rate (0: off; requests/s per key), burst (10), ip_rate (0), ip_burst (20),
 *   max_streams (0), rpm (0), tpm (0)                           [reloadable]
 *
 * Threading: plain values; the master parses, each process holds its copy. */
#ifndef GS_CONFIG_H
#define GS_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "common/err.h"

#define GS_CONFIG_MAX_REMOTE 64

typedef struct {
    char model[1024];
    char host[256];
    int port;
    int workers, gateways;
    char backend[16];
    char gpus[256];
    int threads;
    char api_key_file[1024];
    int no_auth;
    char log_file[1024], pid_file[1024], run_dir[1024], static_dir[1024];
    char vendor_dirs[2048];
    char remote_workers[GS_CONFIG_MAX_REMOTE][256];
    char worker_listen[256];
    char cluster_key_file[1024];
    int n_remote_workers;
    int max_seqs, max_queue, max_model_len, kv_memory, encoder_cache_mb, dummy_weights;
    char graphs[16];
    char weights[16], gpu_memory[32];
    int stream_interval_us;
    int idle_spin_us;
    int image_threads;
    int image_memory_mb;
    int heartbeat_timeout_ms, drain_timeout, send_timeout;
    int max_body_mb, max_images;
    int max_body_memory_mb;
    int fetch_images, fetch_timeout_ms, fetch_allow_private;
    double rate, ip_rate;
    int burst, ip_burst, max_streams, rpm, tpm;
    char config_file[1024]; /* --config, for reloads */
} gs_config;

/* Defaults, then the file named by --config (if any), then the flags.
 * argv[0] is skipped. 0, 1 (--help or --version: printed to stdout), or
 * GS_ECONFIG / GS_EINVAL with d naming the key or flag. */
int gs_config_load(int argc, char **argv, gs_config *out, gs_diag *d);

/* Re-reads the file of cur->config_file and applies the flags again
 * (argv as given at start), into *out. Keys that cannot change without a
 * restart (everything not marked reloadable) keep cur's values, and each
 * one that differs is reported in *restart_keys ("port, workers"; may be
 * empty). 0 or an error with d naming the key: the caller keeps cur. */
int gs_config_reload(const gs_config *cur, int argc, char **argv, gs_config *out,
                     char *restart_keys, size_t cap, gs_diag *d);

/* Checks what depends on more than one key (host vs no_auth and keys,
 * backend vs gpus). 0 or GS_ECONFIG with d saying why. */
int gs_config_check(const gs_config *c, gs_diag *d);

/* 1 when host is a loopback address (127.0.0.0/8, ::1, localhost). */
int gs_config_host_is_loopback(const char *host);

void gs_config_usage(FILE *f);

#endif
