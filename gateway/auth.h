/* auth.h - the API-key table: the keys file, SHA-256 key hashes, and the
 * constant-time check of a presented key.
 *
 * Owns: the parsed keys file (hashes, names, per-key limit overrides).
 * Does not own: the limits themselves (ratelimit.h applies them), the HTTP
 * answer (the gateway turns GS_EAUTH into 401), the SIGHUP swap (the
 * gateway loads a new table beside the old one and swaps only when the
 * load succeeded, STYLE.md 8.9).
 *
 * Keys file format (docs/api-keys.md has the long version), one key per
 * line, fields separated by spaces or tabs:
 *
 *     # comment; blank lines are ignored too
 *     sha256:<64 hex digits> [name=<label>] [rate=<r>/s|<r>/m] [burst=<n>]
 *                            [rpm=<n>] [tpm=<n>] [streams=<n>]
 *
 *   - sha256:<hex> is the SHA-256 of the key (gs_auth_hash_hex writes it);
 *     the file then holds no usable secret. Hex digits in either case.
 *   - A first field without the sha256: prefix is a plain-text key: it is
 *     accepted, hashed at load and flagged (GS_AUTH_KEY_PLAINTEXT,
 *     gs_auth_info.n_plaintext) so the operator can be told to hash it. A
 *     plain-text key may not contain '=' (that would be an option).
 *   - name: [A-Za-z0-9._-], 1..64 characters, unique in the file; the
 *     label in logs and metrics. Default: "key-<line number>".
 *   - rate: requests per second (/s) or per minute (/m), a decimal with at
 *     most 3 fractional digits ("0.5/s"), kept as milli-requests per second
 *     (N/m is N*1000/60 rounded down). burst: requests. rpm: requests per
 *     minute. tpm: output tokens per minute. streams: requests in flight.
 *     0 means unlimited for that key; an option left out means the
 *     gateway's default. Each option at most once per line.
 *   - Up to 4096 bytes per line, 1 MiB per file, 65536 keys; the same key
 *     twice (same hash) is an error naming both lines.
 * Every error is GS_EFORMAT with a diag "<path>:<line>: <what>".
 *
 * Threading: a table is not thread-safe (gs_auth_check updates counters);
 * each gateway uses its own on its one loop thread. Pure apart from the
 * file read in gs_auth_load. */
#ifndef GS_AUTH_H
#define GS_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef struct gs_auth gs_auth; /* opaque */

/* Which fields of gs_auth_limits the keys file set (bits of .set). */
enum {
    GS_AUTH_LIM_RATE = 1u << 0,
    GS_AUTH_LIM_BURST = 1u << 1,
    GS_AUTH_LIM_RPM = 1u << 2,
    GS_AUTH_LIM_TPM = 1u << 3,
    GS_AUTH_LIM_STREAMS = 1u << 4,
};

/* Per-key overrides. A field counts only when its bit is in .set; 0 is
 * "unlimited" for that key. */
typedef struct {
    uint32_t set;       /* GS_AUTH_LIM_* */
    uint32_t rate_mrps; /* milli-requests per second */
    uint32_t burst;     /* requests */
    uint32_t rpm;       /* requests per minute */
    uint64_t tpm;       /* output tokens per minute */
    uint32_t streams;   /* requests in flight */
} gs_auth_limits;

enum { GS_AUTH_KEY_PLAINTEXT = 1u << 0 }; /* gs_auth_key.flags */

/* One key. A plain value: the gateway may copy it (e.g. into a request
 * that outlives a SIGHUP swap). */
typedef struct {
    uint8_t hash[32]; /* SHA-256 of the key */
    char id[65];      /* hash as lowercase hex: the key's identity (ratelimit.h) */
    char name[65];    /* label for logs and metrics */
    gs_auth_limits limits;
    uint32_t flags; /* GS_AUTH_KEY_* */
    uint32_t line;  /* line in the keys file */
} gs_auth_key;

typedef struct {
    size_t n_keys;
    size_t n_plaintext;            /* keys given in plain text (warn the operator) */
    uint32_t first_plaintext_line; /* 0 when none */
} gs_auth_info;

typedef struct {
    uint64_t checks;   /* gs_auth_check calls that hashed a token */
    uint64_t failures; /* of which GS_EAUTH */
    uint64_t compares; /* constant-time compares done: checks * n_keys */
} gs_auth_stats;

/* Parses the keys file at path (borrowed). On success *out owns a new
 * table (gs_auth_free). GS_ENOENT/GS_EIO/GS_ETOOBIG (the file),
 * GS_EFORMAT (a line: d names path and line), GS_ECONFIG (no key in the
 * file), GS_ENOMEM. On error *out is NULL. */
int gs_auth_load(const char *path, gs_auth **out, gs_diag *d);
/* The same from text in memory (borrowed, len bytes, no NUL needed);
 * origin names the text in diags (e.g. the path). */
int gs_auth_parse(const char *text, size_t len, const char *origin, gs_auth **out, gs_diag *d);
void gs_auth_free(gs_auth *a); /* NULL: no-op */

void gs_auth_get_info(const gs_auth *a, gs_auth_info *out);
void gs_auth_get_stats(const gs_auth *a, gs_auth_stats *out);
/* Key i in file order (i < n_keys), borrowed until gs_auth_free; NULL
 * past the end. */
const gs_auth_key *gs_auth_key_at(const gs_auth *a, size_t i);

/* Checks a presented key (token: borrowed, len bytes). Hashes it once and
 * compares the hash with EVERY stored hash using CRYPTO_memcmp, with no
 * early exit and a branch-free pick of the match, so the time taken does
 * not depend on which entry matched or whether one did. Returns 0 and
 * *key (borrowed until gs_auth_free; may be NULL if not wanted) on a
 * match; GS_EAUTH otherwise (also for len 0 or len > 4096). */
int gs_auth_check(gs_auth *a, const char *token, size_t len, const gs_auth_key **key);

/* Extracts the token from an Authorization header value (borrowed, len
 * bytes): optional spaces/tabs, the scheme "Bearer" in any case, one or
 * more spaces/tabs, the token (visible ASCII 0x21..0x7e), optional
 * spaces/tabs. *tok points into value. GS_EAUTH for anything else (no
 * header value, another scheme, an empty token, a space inside it). */
int gs_auth_parse_bearer(const char *value, size_t len, const char **tok, size_t *tok_len);

/* Writes the lowercase hex SHA-256 of key (borrowed, len bytes) and a NUL
 * into out: what a keys file line holds after "sha256:". 0 or
 * GS_EINTERNAL (the hash failed). */
int gs_auth_hash_hex(const char *key, size_t len, char out[65]);

#endif
