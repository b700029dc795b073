/* config.c - the directive table and its one parser (config.h), in the
 * manner of nginx's ngx_command_t: a row per key with its type, bounds,
 * offset into gs_config and whether a reload may change it. The JSON file
 * and the command line go through the same setters, so both give the same
 * errors, naming the key. */
#include "gateway/config.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/bytes.h"

typedef enum { T_STR, T_INT, T_BOOL, T_NUM, T_URLS } ctype;

typedef struct {
    const char *key; /* JSON key; the flag is "--" + key with '_' -> '-' */
    ctype type;
    size_t off, size; /* offsetof / sizeof of the field */
    double lo, hi;    /* bounds of numbers */
    int reloadable;
    const char *help;
} directive;

#define F(field) offsetof(gs_config, field), sizeof(((gs_config *)0)->field)

static const directive table[] = {
    {"model", T_STR, F(model), 0, 0, 0, "DIR  Hugging Face model folder (required)"},
    {"host", T_STR, F(host), 0, 0, 0, "H  listen address (127.0.0.1)"},
    {"port", T_INT, F(port), 0, 65535, 0, "P  listen port (8080)"},
    {"workers", T_INT, F(workers), 0, 256, 0, "N  local worker processes (1)"},
    {"gateways", T_INT, F(gateways), 1, 64, 0, "N  gateway processes (1)"},
    {"backend", T_STR, F(backend), 0, 0, 0, "cpu|cuda  (cpu)"},
    {"gpus", T_STR, F(gpus), 0, 0, 0, "0,1  GPUs of the local workers"},
    {"threads", T_INT, F(threads), 0, 4096, 0, "N  CPU threads per worker"},
    {"api_key_file", T_STR, F(api_key_file), 0, 0, 1, "F  API keys file"},
    {"no_auth", T_BOOL, F(no_auth), 0, 0, 0, "  serve without API keys"},
    {"log_file", T_STR, F(log_file), 0, 0, 0, "F  append logs to F"},
    {"pid_file", T_STR, F(pid_file), 0, 0, 0, "F  write the master's pid"},
    {"run_dir", T_STR, F(run_dir), 0, 0, 0,
     "D  folder of the workers' sockets and the gateways' metrics"},
    {"static_dir", T_STR, F(static_dir), 0, 0, 0, "D  the browser UI's files"},
    {"vendor_dirs", T_STR, F(vendor_dirs), 0, 0, 0,
     "D1:D2  folders served at /vendor/ (marked, DOMPurify)"},
    {"remote_workers", T_URLS, F(remote_workers), 0, 0, 0,
     "URL  a worker started by hand (tcp://host:port); repeatable"},
    {"worker_listen", T_STR, F(worker_listen), 0, 0, 0,
     "URL  accept workers that dial in (their --connect); tcp://host:port"},
    {"cluster_key_file", T_STR, F(cluster_key_file), 0, 0, 0,
     "F  shared secret that gateways and workers send in their hello"},
    {"max_seqs", T_INT, F(max_seqs), 1, 256, 0, "N  sequences per worker step (64)"},
    {"max_queue", T_INT, F(max_queue), 1, 1 << 20, 0, "N  jobs queued per worker (64)"},
    {"max_model_len", T_INT, F(max_model_len), 0, 1 << 24, 0, "N  tokens per sequence"},
    {"kv_memory", T_INT, F(kv_memory), 0, 1 << 30, 0, "MIB  KV cache per worker"},
    {"encoder_cache_mb", T_INT, F(encoder_cache_mb), 0, 1 << 30, 0,
     "MIB  image embeddings kept per worker for reuse (256)"},
    {"dummy_weights", T_BOOL, F(dummy_weights), 0, 0, 0, "  random weights (benchmarks)"},
    {"graphs", T_STR, F(graphs), 0, 0, 0, "auto|on|off  decode graphs"},
    {"weights", T_STR, F(weights), 0, 0, 0, "bf16|int8|int4|auto  weight format (the folder's)"},
    {"gpu_memory", T_STR, F(gpu_memory), 0, 0, 0, "BYTES  memory cap per worker (15G, 10GiB)"},
    {"stream_interval_us", T_INT, F(stream_interval_us), 0, 1000000, 0,
     "US  a job's events leave a worker at most this often (10000; 0: every step)"},
    {"idle_spin_us", T_INT, F(idle_spin_us), 0, 1000000, 0,
     "US  an idle worker waits awake this long before it sleeps (300)"},
    {"image_threads", T_INT, F(image_threads), 0, 64, 0,
     "N  threads per image for resize and patchify (0: 1 on cpu, up to 4 on cuda)"},
    {"image_memory_mb", T_INT, F(image_memory_mb), 0, 1 << 24, 0,
     "MIB  prepared image pixels a worker's jobs hold at once (0: RAM/4, at most 4096)"},
    {"heartbeat_timeout_ms", T_INT, F(heartbeat_timeout_ms), 100, 600000, 0,
     "MS  a silent worker is dead after this (2000)"},
    {"drain_timeout", T_INT, F(drain_timeout), 0, 86400, 0, "S  graceful stop deadline (30)"},
    {"send_timeout", T_INT, F(send_timeout), 1, 86400, 0,
     "S  close a client that takes no response bytes this long (60)"},
    {"fetch_images", T_BOOL, F(fetch_images), 0, 0, 0,
     "  fetch http(s) image URLs (else they are refused)"},
    {"fetch_timeout_ms", T_INT, F(fetch_timeout_ms), 100, 600000, 0,
     "MS  deadline of one image download (10000)"},
    {"fetch_allow_private", T_BOOL, F(fetch_allow_private), 0, 0, 0,
     "  also fetch from loopback and private addresses"},
    {"max_body_mb", T_INT, F(max_body_mb), 1, 4096, 1, "MB  request body limit (64)"},
    {"max_body_memory_mb", T_INT, F(max_body_memory_mb), 1, 1 << 20, 1,
     "MB  request bodies a gateway holds at once; past it: 503 (1024)"},
    {"max_images", T_INT, F(max_images), 0, 64, 1, "N  images per request (16)"},
    {"rate", T_NUM, F(rate), 0, 1e6, 1, "R  requests/s per key (0: off)"},
    {"burst", T_INT, F(burst), 0, 1 << 20, 1, "N  burst per key (10)"},
    {"ip_rate", T_NUM, F(ip_rate), 0, 1e6, 1, "R  requests/s per client IP (0: off)"},
    {"ip_burst", T_INT, F(ip_burst), 0, 1 << 20, 1, "N  burst per IP (20)"},
    {"max_streams", T_INT, F(max_streams), 0, 1 << 20, 1, "N  concurrent streams per key"},
    {"rpm", T_INT, F(rpm), 0, 1 << 30, 1, "N  requests per minute per key"},
    {"tpm", T_INT, F(tpm), 0, 1 << 30, 1, "N  output tokens per minute per key"},
};
#define N_DIRECTIVES (sizeof table / sizeof *table)

static void defaults(gs_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->host, sizeof c->host, "127.0.0.1");
    c->port = 8080;
    c->workers = 1;
    c->gateways = 1;
    snprintf(c->backend, sizeof c->backend, "cpu");
    snprintf(c->graphs, sizeof c->graphs, "auto");
    snprintf(c->vendor_dirs, sizeof c->vendor_dirs, "%s",
             "/usr/share/javascript/marked:/usr/share/nodejs/dompurify/dist");
    c->max_seqs = 64;
    c->max_queue = 64;
    c->stream_interval_us = -1;
    c->idle_spin_us = -1;
    c->heartbeat_timeout_ms = 2000;
    c->drain_timeout = 30;
    c->send_timeout = 60;
    c->max_body_mb = 64;
    c->max_body_memory_mb = 1024;
    c->max_images = 16;
    c->fetch_timeout_ms = 10000;
    c->burst = 10;
    c->ip_burst = 20;
}

static void flag_of(const directive *dv, char *out, size_t cap)
{
    snprintf(out, cap, "--%s", dv->key);
    for (char *p = out + 2; *p; p++)
        if (*p == '_')
            *p = '-';
}

/* Sets dv from a JSON value (v) or a flag's text (s); `what` names the
 * source in errors ("config.json: key 'port'" / "--port"). */
static int set(gs_config *c, const directive *dv, const json_t *v, const char *s, const char *what,
               gs_diag *d)
{
    char *field = (char *)c + dv->off;
    switch (dv->type) {
    case T_STR:
    case T_URLS: {
        if (v && !json_is_string(v))
            return gs_diag_set(d, GS_ECONFIG, "%s must be a string", what);
        const char *str = v ? json_string_value(v) : s;
        if (dv->type == T_URLS) {
            if (strncmp(str, "tcp://", 6) && strncmp(str, "ipc://", 6))
                return gs_diag_set(d, GS_ECONFIG, "%s: '%s' is not a tcp:// or ipc:// URL", what,
                                   str);
            if (c->n_remote_workers == GS_CONFIG_MAX_REMOTE)
                return gs_diag_set(d, GS_ECONFIG, "%s: at most %d", what, GS_CONFIG_MAX_REMOTE);
            if (strlen(str) >= sizeof c->remote_workers[0])
                return gs_diag_set(d, GS_ECONFIG, "%s: URL too long", what);
            snprintf(c->remote_workers[c->n_remote_workers++], sizeof c->remote_workers[0], "%s",
                     str);
            return 0;
        }
        if (strlen(str) >= dv->size)
            return gs_diag_set(d, GS_ECONFIG, "%s is longer than %zu bytes", what, dv->size - 1);
        snprintf(field, dv->size, "%s", str);
        return 0;
    }
    case T_BOOL:
        if (v && !json_is_boolean(v))
            return gs_diag_set(d, GS_ECONFIG, "%s must be true or false", what);
        *(int *)field = v ? json_is_true(v) : 1;
        return 0;
    case T_INT:
    case T_NUM: {
        double x;
        if (v) {
            if (!json_is_number(v) || (dv->type == T_INT && !json_is_integer(v)))
                return gs_diag_set(d, GS_ECONFIG, "%s must be %s", what,
                                   dv->type == T_INT ? "an integer" : "a number");
            x = json_number_value(v);
        } else {
            char *end;
            errno = 0;
            x = strtod(s, &end);
            if (errno || end == s || *end || (dv->type == T_INT && x != floor(x)))
                return gs_diag_set(d, GS_ECONFIG, "%s: expected %s, got '%s'", what,
                                   dv->type == T_INT ? "an integer" : "a number", s);
        }
        if (!(x >= dv->lo && x <= dv->hi))
            return gs_diag_set(d, GS_ECONFIG, "%s must be in [%g, %g], got %g", what, dv->lo,
                               dv->hi, x);
        if (dv->type == T_INT)
            *(int *)field = (int)x;
        else
            *(double *)field = x;
        return 0;
    }
    }
    return GS_EINTERNAL;
}

static int load_file(gs_config *c, const char *path, gs_diag *d)
{
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return gs_diag_set(d, GS_ECONFIG, "%s:%d: %s", path, je.line, je.text);
    int rc = 0;
    if (!json_is_object(root))
        rc = gs_diag_set(d, GS_ECONFIG, "%s: the top level must be an object", path);
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v)
    {
        if (rc)
            break;
        const directive *dv = NULL;
        for (size_t i = 0; i < N_DIRECTIVES; i++)
            if (!strcmp(table[i].key, k))
                dv = &table[i];
        char what[1400];
        snprintf(what, sizeof what, "%s: key '%s'", path, k);
        if (!dv) {
            rc = gs_diag_set(d, GS_ECONFIG, "%s is not a known key", what);
        } else if (dv->type == T_URLS) {
            if (!json_is_array(v)) {
                rc = gs_diag_set(d, GS_ECONFIG, "%s must be an array of URLs", what);
                break;
            }
            size_t i;
            json_t *u;
            json_array_foreach(v, i, u)
            {
                if ((rc = set(c, dv, u, NULL, what, d)))
                    break;
            }
        } else {
            rc = set(c, dv, v, NULL, what, d);
        }
    }
    json_decref(root);
    return rc;
}

/* --config first (its file is the base), then every other flag. */
static int parse(int argc, char **argv, gs_config *c, gs_diag *d)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc)
                return gs_diag_set(d, GS_ECONFIG, "--config needs a file");
            snprintf(c->config_file, sizeof c->config_file, "%s", argv[i + 1]);
        }
    int rc;
    if (c->config_file[0] && (rc = load_file(c, c->config_file, d)))
        return rc;
    int n_urls_file = c->n_remote_workers;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--config")) {
            i++;
            continue;
        }
        const directive *dv = NULL;
        char flag[64];
        for (size_t k = 0; k < N_DIRECTIVES && !dv; k++) {
            flag_of(&table[k], flag, sizeof flag);
            if (!strcmp(flag, a))
                dv = &table[k];
        }
        for (size_t k = 0; k < N_DIRECTIVES && !dv; k++) /* --remote-worker reads better */
            if (table[k].type == T_URLS && !strcmp(a, "--remote-worker"))
                dv = &table[k];
        if (!dv)
            return gs_diag_set(d, GS_EINVAL, "unknown option '%s' (--help lists them)", a);
        if (dv->type == T_URLS && n_urls_file) { /* flags replace the file's list */
            c->n_remote_workers = 0;
            n_urls_file = 0;
        }
        if (dv->type == T_BOOL) {
            *(int *)((char *)c + dv->off) = 1;
            continue;
        }
        if (i + 1 >= argc)
            return gs_diag_set(d, GS_EINVAL, "%s needs a value", a);
        if ((rc = set(c, dv, NULL, argv[++i], a, d)))
            return rc;
    }
    return 0;
}

int gs_config_host_is_loopback(const char *h)
{
    return !strncmp(h, "127.", 4) || !strcmp(h, "::1") || !strcmp(h, "localhost") ||
           !strcmp(h, "[::1]");
}

int gs_config_check(const gs_config *c, gs_diag *d)
{
    if (!c->model[0])
        return gs_diag_set(d, GS_ECONFIG, "--model is required (a Hugging Face model folder)");
    if (strcmp(c->backend, "cpu") && strcmp(c->backend, "cuda"))
        return gs_diag_set(d, GS_ECONFIG, "backend must be cpu or cuda, got '%s'", c->backend);
    if (strcmp(c->graphs, "auto") && strcmp(c->graphs, "on") && strcmp(c->graphs, "off"))
        return gs_diag_set(d, GS_ECONFIG, "graphs must be auto, on or off, got '%s'", c->graphs);
    if (c->weights[0] && strcmp(c->weights, "bf16") && strcmp(c->weights, "int8") &&
        strcmp(c->weights, "int4") && strcmp(c->weights, "auto"))
        return gs_diag_set(d, GS_ECONFIG, "weights must be bf16, int8, int4 or auto, got '%s'",
                           c->weights);
    size_t gpu_bytes;
    if (c->gpu_memory[0] && gs_parse_bytes(c->gpu_memory, &gpu_bytes)) /* as the worker reads it */
        return gs_diag_set(d, GS_ECONFIG, "gpu_memory: expected a size like 15G or 10GiB, got '%s'",
                           c->gpu_memory);
    if (c->api_key_file[0] && c->no_auth)
        return gs_diag_set(d, GS_ECONFIG, "give either api_key_file or no_auth, not both");
    if (!c->api_key_file[0] && !c->no_auth && !gs_config_host_is_loopback(c->host))
        return gs_diag_set(d, GS_ECONFIG,
                           "refusing to serve %s (not a loopback address) without API keys: "
                           "give --api-key-file F, or --no-auth to serve anyone",
                           c->host);
    if (c->workers == 0 && c->n_remote_workers == 0 && !c->worker_listen[0])
        return gs_diag_set(d, GS_ECONFIG,
                           "no workers: give workers >= 1, a remote worker or worker_listen");
    if (c->worker_listen[0] && strncmp(c->worker_listen, "tcp://", 6) &&
        strncmp(c->worker_listen, "ipc://", 6))
        return gs_diag_set(d, GS_ECONFIG, "worker_listen: '%s' is not a tcp:// or ipc:// URL",
                           c->worker_listen);
    for (const char *p = c->gpus; *p; p++)
        if (!(*p >= '0' && *p <= '9') && *p != ',')
            return gs_diag_set(d, GS_ECONFIG, "gpus must be a list like 0,1, got '%s'", c->gpus);
    return 0;
}

int gs_config_load(int argc, char **argv, gs_config *out, gs_diag *d)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            gs_config_usage(stdout);
            return 1;
        }
        if (!strcmp(argv[i], "--version")) {
            printf("glmserve %s\n", GS_VERSION);
            return 1;
        }
    }
    defaults(out);
    int rc = parse(argc, argv, out, d);
    return rc ? rc : gs_config_check(out, d);
}

int gs_config_reload(const gs_config *cur, int argc, char **argv, gs_config *out,
                     char *restart_keys, size_t cap, gs_diag *d)
{
    gs_config n;
    defaults(&n);
    int rc = parse(argc, argv, &n, d);
    if (!rc)
        rc = gs_config_check(&n, d);
    if (rc)
        return rc;
    if (cap)
        restart_keys[0] = 0;
    *out = *cur;
    for (size_t i = 0; i < N_DIRECTIVES; i++) {
        const directive *dv = &table[i];
        const char *a = (const char *)cur + dv->off, *b = (const char *)&n + dv->off;
        if (dv->reloadable) {
            memcpy((char *)out + dv->off, b, dv->size);
        } else if (memcmp(a, b, dv->size) ||
                   (dv->type == T_URLS && cur->n_remote_workers != n.n_remote_workers)) {
            size_t len = strlen(restart_keys);
            if (cap > len)
                snprintf(restart_keys + len, cap - len, "%s%s", len ? ", " : "", dv->key);
        }
    }
    return 0;
}

void gs_config_usage(FILE *f)
{
    fprintf(f, "usage: glmserve --model DIR [options]   (or --config FILE; flags override it)\n");
    for (size_t i = 0; i < N_DIRECTIVES; i++) {
        char flag[64];
        flag_of(&table[i], flag, sizeof flag);
        fprintf(f, "  %-24s %s%s\n", flag, table[i].help,
                table[i].reloadable ? " [reloaded on SIGHUP]" : "");
    }
    fprintf(f, "  %-24s %s\n", "--config", "F  JSON file with the keys above");
}
