/* log.h - one-line logs to stderr: "2026-11-25T10:00:00.123Z LEVEL tag: msg".
 * The level threshold and process tag are process-wide (set once at
 * start-up, before threads). Each line is written with one write(2), so
 * lines from threads and processes do not interleave. */
#ifndef GS_LOG_H
#define GS_LOG_H

typedef enum { GS_LOG_DEBUG = 0, GS_LOG_INFO, GS_LOG_WARN, GS_LOG_ERROR } gs_log_level;

void gs_log_set_level(gs_log_level lvl);
/* tag: borrowed, must outlive logging (usually a string literal). */
void gs_log_set_tag(const char *tag);
/* Parses "debug"/"info"/"warn"/"error"; 0 or GS_EINVAL. */
int gs_log_parse_level(const char *s, gs_log_level *out);
/* Appends the logs to path from now on: the file is opened (created,
 * O_APPEND) and put in place of standard error, so this process's
 * children and every later line go there (SIGUSR1 after a log rotation
 * calls it again). 0, or -1 with errno set (standard error unchanged). */
int gs_log_reopen(const char *path);
void gs_log(gs_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define gs_log_debug(...) gs_log(GS_LOG_DEBUG, __VA_ARGS__)
#define gs_log_info(...) gs_log(GS_LOG_INFO, __VA_ARGS__)
#define gs_log_warn(...) gs_log(GS_LOG_WARN, __VA_ARGS__)
#define gs_log_error(...) gs_log(GS_LOG_ERROR, __VA_ARGS__)

#endif
