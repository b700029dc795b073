/* ipc_msg.c - encoder and decoder of the gateway<->worker frames (ipc_msg.h).
 *
 * Owns the byte layout of every body (docs/protocol.md has the tables);
 * knows nothing of connections (ipc_conn.c) or of what the fields mean to
 * the gateway or the engine. Scalars are written and read byte by byte,
 * little-endian, so no field needs alignment except the event's ids array,
 * which sits at a fixed offset that is a multiple of 8 so that a decoded
 * event can point into the body.
 *
 * The encoder runs the same field checks as the decoder (caps, UTF-8,
 * value ranges), so whatever encodes also decodes. The decoder trusts
 * nothing: a bounds-checked reader refuses every length that runs past
 * the end, and the body must be consumed exactly.
 *
 * Thread-safe: pure functions over caller memory. */
#include "common/ipc_msg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NAME GS_IPC_MAX_NAME
#define MAX_REQUEST GS_IPC_MAX_REQUEST
#define MAX_MESSAGE GS_IPC_MAX_MESSAGE
#define EVENT_IDS_OFF 56u /* the ids array; a multiple of 8 */
#define HELLO_FIXED 24u
#define JOB_FIXED 16u
#define EVENT_FIXED EVENT_IDS_OFF
#define STATS_SIZE 96u
#define ERROR_FIXED 16u

static const uint8_t magic[4] = {'G', 'S', 'I', 'P'};

const char *gs_ipc_finish_name(int finish)
{
    switch (finish) {
    case GS_IPC_FINISH_STOP:
        return "stop";
    case GS_IPC_FINISH_LENGTH:
        return "length";
    case GS_IPC_FINISH_CANCELLED:
        return "cancelled";
    default:
        return "error";
    }
}

const char *gs_ipc_type_name(int type)
{
    switch (type) {
    case GS_IPC_HELLO:
        return "hello";
    case GS_IPC_JOB:
        return "job";
    case GS_IPC_CANCEL:
        return "cancel";
    case GS_IPC_EVENT:
        return "event";
    case GS_IPC_HEARTBEAT:
        return "heartbeat";
    case GS_IPC_DRAIN:
        return "drain";
    case GS_IPC_ERROR:
        return "error";
    }
    return "unknown";
}

/* ---- UTF-8 ------------------------------------------------------------ */

/* Returns the offset of the first byte that is not part of a well-formed
 * UTF-8 sequence (no overlongs, no surrogates, nothing above U+10FFFF),
 * or len when all of s is valid. */
static size_t utf8_invalid_at(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint8_t lo = 0x80, hi = 0xBF; /* range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            else if (c == 0xED)
                hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            else if (c == 0xF4)
                hi = 0x8F; /* above U+10FFFF */
        } else {
            return i;
        }
        if (len - i <= n)
            return i;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k <= n; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
        i += n + 1;
    }
    return len;
}

uint32_t gs_ipc_utf8_clip(const char *s, size_t len, uint32_t cap)
{
    if (!s || len <= cap)
        return s ? (uint32_t)len : 0;
    size_t n = cap;
    /* Back up over continuation bytes to the start of the split character. */
    while (n > 0 && ((const uint8_t *)s)[n] >= 0x80 && ((const uint8_t *)s)[n] < 0xC0)
        n--;
    return (uint32_t)n;
}

/* ---- field checks shared by encoder and decoder ----------------------- */

/* A text field: len <= cap and valid UTF-8. off is where the bytes start
 * in the body (for the message). Returns 0 or code. */
static int check_text(gs_ipc_str s, uint32_t cap, const char *what, const char *field, size_t off,
                      int code, gs_diag *d)
{
    if (s.len > cap)
        return gs_diag_set(d, code, "ipc %s: %s at offset %zu: %u bytes over the limit of %u", what,
                           field, off, s.len, cap);
    if (s.len && !s.p)
        return gs_diag_set(d, code, "ipc %s: %s: NULL with length %u", what, field, s.len);
    size_t bad = s.len ? utf8_invalid_at((const uint8_t *)s.p, s.len) : 0;
    if (bad < s.len)
        return gs_diag_set(d, code, "ipc %s: %s at offset %zu: invalid UTF-8 at byte %zu", what,
                           field, off, off + bad);
    return 0;
}

static int check_nonneg(int32_t v, const char *what, const char *field, size_t off, int code,
                        gs_diag *d)
{
    if (v < 0)
        return gs_diag_set(d, code, "ipc %s: %s at offset %zu is negative (%d)", what, field, off,
                           (int)v);
    return 0;
}

static int check_hello(const gs_ipc_hello *h, int code, gs_diag *d)
{
    int rc;
    if (h->role != GS_IPC_ROLE_GATEWAY && h->role != GS_IPC_ROLE_WORKER)
        return gs_diag_set(d, code, "ipc hello: role at offset 0: unknown role %u",
                           (unsigned)h->role);
    if ((rc = check_nonneg(h->max_model_len, "hello", "max_model_len", 8, code, d)) ||
        (rc = check_nonneg(h->page_size, "hello", "page_size", 12, code, d)) ||
        (rc = check_nonneg(h->n_pages, "hello", "n_pages", 16, code, d)) ||
        (rc = check_nonneg(h->max_queue, "hello", "max_queue", 20, code, d)))
        return rc;
    if ((rc = check_text(h->name, MAX_NAME, "hello", "name", HELLO_FIXED + 4, code, d)))
        return rc;
    if ((rc = check_text(h->model, MAX_NAME, "hello", "model", HELLO_FIXED + 8 + h->name.len, code,
                         d)))
        return rc;
    return check_text(h->key, MAX_NAME, "hello", "key",
                      HELLO_FIXED + 12 + h->name.len + h->model.len, code, d);
}

static int check_event_scalars(const gs_ipc_event *e, int code, gs_diag *d)
{
    int rc;
    if (e->id == 0)
        return gs_diag_set(d, code, "ipc event: id at offset 0 is 0");
    if (e->finish > GS_IPC_FINISH_ERROR)
        return gs_diag_set(d, code, "ipc event: finish at offset 32: unknown value %u",
                           (unsigned)e->finish);
    if (e->finish == GS_IPC_FINISH_ERROR ? e->error >= 0 : e->error != 0)
        return gs_diag_set(d, code, "ipc event: error at offset 36: %d does not fit finish %u",
                           (int)e->error, (unsigned)e->finish);
    if ((rc = check_nonneg(e->prompt_tokens, "event", "prompt_tokens", 40, code, d)) ||
        (rc = check_nonneg(e->completion_tokens, "event", "completion_tokens", 44, code, d)) ||
        (rc = check_nonneg(e->cached_prompt_tokens, "event", "cached_prompt_tokens", 48, code, d)))
        return rc;
    if (e->n_ids > GS_IPC_MAX_IDS)
        return gs_diag_set(d, code, "ipc event: n_ids at offset 52: %u over the cap of %d",
                           e->n_ids, GS_IPC_MAX_IDS);
    if (e->queue_report > 1)
        return gs_diag_set(d, code, "ipc event: flags at offset 33: unknown bits 0x%x",
                           (unsigned)e->queue_report);
    if (!e->queue_report && e->queue_position)
        return gs_diag_set(d, code,
                           "ipc event: queue_position at offset 34 is %u without the queue flag",
                           (unsigned)e->queue_position);
    if (e->queue_report && (e->finish || e->n_ids))
        return gs_diag_set(d, code,
                           "ipc event: a queue report carries no finish or ids (offset 33)");
    return 0;
}

/* The i32 fields of a heartbeat, in wire order (offset 4 * i). */
#define STATS_I32(XX)                                                                              \
    XX(n_running)                                                                                  \
    XX(n_waiting)                                                                                  \
    XX(n_queued) XX(max_queue) XX(n_pages) XX(n_free_pages) XX(n_cached_pages) XX(draining)
/* The u64 fields, in wire order (offset 32 + 8 * i). */
#define STATS_U64(XX)                                                                              \
    XX(n_steps)                                                                                    \
    XX(n_finished)                                                                                 \
    XX(n_generated)                                                                                \
    XX(n_prompt_tokens) XX(prefix_query_tokens) XX(prefix_hit_tokens) XX(last_step_ns) XX(uptime_ms)

static int check_stats(const gs_ipc_stats *s, int code, gs_diag *d)
{
    int rc;
    size_t off = 0;
#define XX(f)                                                                                      \
    if ((rc = check_nonneg(s->f, "heartbeat", #f, off, code, d)))                                  \
        return rc;                                                                                 \
    off += 4;
    STATS_I32(XX)
#undef XX
    if (s->draining > 1)
        return gs_diag_set(d, code, "ipc heartbeat: draining at offset 28 is %d, not 0 or 1",
                           (int)s->draining);
    return 0;
}

static int check_error(const gs_ipc_error *e, int code, gs_diag *d)
{
    if (e->code >= 0)
        return gs_diag_set(d, code, "ipc error: code at offset 8 is %d, not a GS_E* code",
                           (int)e->code);
    return check_text(e->message, MAX_MESSAGE, "error", "message", ERROR_FIXED, code, d);
}

/* ---- encoder ---------------------------------------------------------- */

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Writes len then the bytes at p + *off; advances *off. */
static void put_str(uint8_t *p, size_t *off, gs_ipc_str s)
{
    put_u32(p + *off, s.len);
    if (s.len)
        memcpy(p + *off + 4, s.p, s.len);
    *off += 4 + (size_t)s.len;
}

static void put_header(uint8_t *p, int type, uint32_t body_len)
{
    memcpy(p, magic, 4);
    p[4] = GS_IPC_VERSION;
    p[5] = (uint8_t)type;
    put_u16(p + 6, 0);
    put_u32(p + 8, body_len);
    put_u32(p + 12, 0);
}

/* Body size of m after its checks (GS_EINVAL / GS_ETOOBIG with d set). */
static int encode_size(const gs_ipc_msg *m, uint64_t *size, gs_diag *d)
{
    int rc;
    uint64_t n = 0;
    switch (m->type) {
    case GS_IPC_HELLO:
        if ((rc = check_hello(&m->u.hello, GS_EINVAL, d)))
            return rc;
        n = HELLO_FIXED + 12 + (uint64_t)m->u.hello.name.len + m->u.hello.model.len +
            m->u.hello.key.len;
        break;
    case GS_IPC_JOB: {
        const gs_ipc_job *j = &m->u.job;
        if (j->id == 0)
            return gs_diag_set(d, GS_EINVAL, "ipc job: id is 0");
        if (j->n_images > GS_IPC_MAX_IMAGES)
            return gs_diag_set(d, GS_EINVAL, "ipc job: n_images %u over the cap of %d", j->n_images,
                               GS_IPC_MAX_IMAGES);
        if ((rc = check_text(j->request, MAX_REQUEST, "job", "request", JOB_FIXED, GS_EINVAL, d)))
            return rc;
        n = JOB_FIXED + (uint64_t)j->request.len;
        for (uint32_t i = 0; i < j->n_images; i++) {
            if (j->images[i].len && !j->images[i].p)
                return gs_diag_set(d, GS_EINVAL, "ipc job: image %u: NULL with length %u", i,
                                   j->images[i].len);
            n += 4 + (uint64_t)j->images[i].len;
        }
        break;
    }
    case GS_IPC_CANCEL:
        if (m->u.cancel_id == 0)
            return gs_diag_set(d, GS_EINVAL, "ipc cancel: id is 0");
        n = 8;
        break;
    case GS_IPC_EVENT: {
        const gs_ipc_event *e = &m->u.event;
        if ((rc = check_event_scalars(e, GS_EINVAL, d)))
            return rc;
        if (e->queue_report && e->text.len)
            return gs_diag_set(d, GS_EINVAL, "ipc event: a queue report carries no text");
        if (e->n_ids && !e->ids)
            return gs_diag_set(d, GS_EINVAL, "ipc event: ids NULL with n_ids %u", e->n_ids);
        size_t text_off = EVENT_IDS_OFF + 4 * (size_t)e->n_ids;
        if ((rc = check_text(e->text, GS_IPC_MAX_BODY, "event", "text", text_off + 4, GS_EINVAL,
                             d)) ||
            (rc = check_text(e->message, MAX_MESSAGE, "event", "message",
                             text_off + 8 + e->text.len, GS_EINVAL, d)))
            return rc;
        n = text_off + 8 + (uint64_t)e->text.len + e->message.len;
        break;
    }
    case GS_IPC_HEARTBEAT:
        if ((rc = check_stats(&m->u.heartbeat, GS_EINVAL, d)))
            return rc;
        n = STATS_SIZE;
        break;
    case GS_IPC_DRAIN:
        n = 0;
        break;
    case GS_IPC_ERROR:
        if ((rc = check_error(&m->u.error, GS_EINVAL, d)))
            return rc;
        n = ERROR_FIXED + (uint64_t)m->u.error.message.len;
        break;
    default:
        return gs_diag_set(d, GS_EINVAL, "ipc: cannot encode unknown message type %d",
                           (int)m->type);
    }
    if (n > GS_IPC_MAX_BODY)
        return gs_diag_set(d, GS_ETOOBIG, "ipc %s: body of %llu bytes over the cap of %u",
                           gs_ipc_type_name(m->type), (unsigned long long)n, GS_IPC_MAX_BODY);
    *size = n;
    return 0;
}

static void encode_body(const gs_ipc_msg *m, uint8_t *b)
{
    size_t off;
    switch (m->type) {
    case GS_IPC_HELLO: {
        const gs_ipc_hello *h = &m->u.hello;
        b[0] = h->role; /* b[1..3] reserved, zeroed by the caller */
        put_u32(b + 4, h->pid);
        put_u32(b + 8, (uint32_t)h->max_model_len);
        put_u32(b + 12, (uint32_t)h->page_size);
        put_u32(b + 16, (uint32_t)h->n_pages);
        put_u32(b + 20, (uint32_t)h->max_queue);
        off = HELLO_FIXED;
        put_str(b, &off, h->name);
        put_str(b, &off, h->model);
        put_str(b, &off, h->key);
        break;
    }
    case GS_IPC_JOB: {
        const gs_ipc_job *j = &m->u.job;
        put_u64(b, j->id);
        put_u32(b + 8, j->n_images);
        off = 12;
        put_str(b, &off, j->request);
        for (uint32_t i = 0; i < j->n_images; i++)
            put_str(b, &off, j->images[i]);
        break;
    }
    case GS_IPC_CANCEL:
        put_u64(b, m->u.cancel_id);
        break;
    case GS_IPC_EVENT: {
        const gs_ipc_event *e = &m->u.event;
        put_u64(b, e->id);
        put_u64(b + 8, e->queue_ns);
        put_u64(b + 16, e->ttft_ns);
        put_u64(b + 24, e->decode_ns);
        b[32] = e->finish;
        b[33] = e->queue_report;
        b[34] = (uint8_t)(e->queue_position & 0xff);
        b[35] = (uint8_t)(e->queue_position >> 8);
        put_u32(b + 36, (uint32_t)e->error);
        put_u32(b + 40, (uint32_t)e->prompt_tokens);
        put_u32(b + 44, (uint32_t)e->completion_tokens);
        put_u32(b + 48, (uint32_t)e->cached_prompt_tokens);
        put_u32(b + 52, e->n_ids);
        off = EVENT_IDS_OFF;
        for (uint32_t i = 0; i < e->n_ids; i++, off += 4)
            put_u32(b + off, (uint32_t)e->ids[i]);
        put_str(b, &off, e->text);
        put_str(b, &off, e->message);
        break;
    }
    case GS_IPC_HEARTBEAT: {
        const gs_ipc_stats *s = &m->u.heartbeat;
        off = 0;
#define XX(f)                                                                                      \
    put_u32(b + off, (uint32_t)s->f);                                                              \
    off += 4;
        STATS_I32(XX)
#undef XX
#define XX(f)                                                                                      \
    put_u64(b + off, s->f);                                                                        \
    off += 8;
        STATS_U64(XX)
#undef XX
        break;
    }
    case GS_IPC_ERROR:
        put_u64(b, m->u.error.id);
        put_u32(b + 8, (uint32_t)m->u.error.code);
        off = 12;
        put_str(b, &off, m->u.error.message);
        break;
    default: /* DRAIN: no body */
        break;
    }
}

int gs_ipc_encode(const gs_ipc_msg *m, uint8_t **out, size_t *len, gs_diag *d)
{
    uint64_t body = 0;
    if (!m || !out || !len)
        return gs_diag_set(d, GS_EINVAL, "ipc: encode with a NULL argument");
    int rc = encode_size(m, &body, d);
    if (rc)
        return rc;
    uint8_t *p = calloc(1, GS_IPC_HEADER_SIZE + (size_t)body);
    if (!p)
        return gs_diag_set(d, GS_ENOMEM, "ipc %s: no memory for %llu bytes",
                           gs_ipc_type_name(m->type), (unsigned long long)body);
    put_header(p, m->type, (uint32_t)body);
    encode_body(m, p + GS_IPC_HEADER_SIZE);
    *out = p;
    *len = GS_IPC_HEADER_SIZE + (size_t)body;
    return 0;
}

int gs_ipc_frame(int type, const uint8_t *body, size_t len, uint8_t **out, size_t *out_len)
{
    if (type < 1 || type > 255 || (len && !body) || !out || !out_len)
        return GS_EINVAL;
    if (len > GS_IPC_MAX_BODY)
        return GS_ETOOBIG;
    uint8_t *p = malloc(GS_IPC_HEADER_SIZE + len);
    if (!p)
        return GS_ENOMEM;
    put_header(p, type, (uint32_t)len);
    if (len)
        memcpy(p + GS_IPC_HEADER_SIZE, body, len);
    *out = p;
    *out_len = GS_IPC_HEADER_SIZE + len;
    return 0;
}

/* ---- decoder ---------------------------------------------------------- */

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

int gs_ipc_decode_header(const uint8_t *hdr, uint32_t max_body, gs_ipc_header *h, gs_diag *d)
{
    if (!hdr || !h)
        return gs_diag_set(d, GS_EINVAL, "ipc header: NULL argument");
    if (max_body == 0 || max_body > GS_IPC_MAX_BODY)
        max_body = GS_IPC_MAX_BODY;
    if (memcmp(hdr, magic, 4) != 0)
        return gs_diag_set(d, GS_EPROTO, "ipc header: bad magic %02x %02x %02x %02x at offset 0",
                           hdr[0], hdr[1], hdr[2], hdr[3]);
    h->version = hdr[4];
    h->type = hdr[5];
    h->flags = get_u16(hdr + 6);
    h->body_len = get_u32(hdr + 8);
    if (h->version != GS_IPC_VERSION)
        return gs_diag_set(d, GS_EPROTO, "ipc header: version %u at offset 4, this build speaks %d",
                           (unsigned)h->version, GS_IPC_VERSION);
    if (h->flags != 0)
        return gs_diag_set(d, GS_EPROTO, "ipc header: flags 0x%04x at offset 6 are not 0",
                           (unsigned)h->flags);
    if (get_u32(hdr + 12) != 0)
        return gs_diag_set(d, GS_EPROTO, "ipc header: reserved field at offset 12 is not 0");
    if (h->body_len > max_body)
        return gs_diag_set(d, GS_ETOOBIG,
                           "ipc header: %s body of %u bytes (offset 8) over the limit of %u",
                           gs_ipc_type_name(h->type), h->body_len, max_body);
    return 0;
}

/* A bounds-checked cursor over a body. */
typedef struct {
    const uint8_t *b;
    size_t len, off;
    const char *what; /* message type name */
    gs_diag *d;
} reader;

static int need(reader *r, size_t n, const char *field)
{
    if (r->len - r->off < n)
        return gs_diag_set(r->d, GS_EPROTO,
                           "ipc %s: %s at offset %zu truncated: needs %zu bytes, %zu left", r->what,
                           field, r->off, n, r->len - r->off);
    return 0;
}

static int rd_u32(reader *r, const char *field, uint32_t *v)
{
    int rc = need(r, 4, field);
    if (rc)
        return rc;
    *v = get_u32(r->b + r->off);
    r->off += 4;
    return 0;
}

/* A length-prefixed string: u32 length, then the bytes (checked to fit). */
static int rd_str(reader *r, const char *field, gs_ipc_str *s)
{
    uint32_t n;
    int rc = rd_u32(r, field, &n);
    if (rc)
        return rc;
    if (n > r->len - r->off)
        return gs_diag_set(r->d, GS_EPROTO,
                           "ipc %s: %s at offset %zu: length %u runs past the end (%zu left)",
                           r->what, field, r->off - 4, n, r->len - r->off);
    s->p = (const char *)r->b + r->off;
    s->len = n;
    r->off += n;
    return 0;
}

static int rd_reserved(reader *r, size_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (r->b[off + i] != 0)
            return gs_diag_set(r->d, GS_EPROTO, "ipc %s: reserved byte at offset %zu is not 0",
                               r->what, off + i);
    return 0;
}

static int decode_hello(reader *r, gs_ipc_hello *h)
{
    int rc;
    if ((rc = need(r, HELLO_FIXED, "fixed fields")) || (rc = rd_reserved(r, 1, 3)))
        return rc;
    h->role = r->b[0];
    h->pid = get_u32(r->b + 4);
    h->max_model_len = (int32_t)get_u32(r->b + 8);
    h->page_size = (int32_t)get_u32(r->b + 12);
    h->n_pages = (int32_t)get_u32(r->b + 16);
    h->max_queue = (int32_t)get_u32(r->b + 20);
    r->off = HELLO_FIXED;
    if ((rc = rd_str(r, "name", &h->name)) || (rc = rd_str(r, "model", &h->model)) ||
        (rc = rd_str(r, "key", &h->key)))
        return rc;
    return check_hello(h, GS_EPROTO, r->d);
}

static int decode_job(reader *r, gs_ipc_job *j)
{
    int rc;
    if ((rc = need(r, 12, "fixed fields")))
        return rc;
    j->id = get_u64(r->b);
    j->n_images = get_u32(r->b + 8);
    r->off = 12;
    if (j->id == 0)
        return gs_diag_set(r->d, GS_EPROTO, "ipc job: id at offset 0 is 0");
    if (j->n_images > GS_IPC_MAX_IMAGES)
        return gs_diag_set(r->d, GS_EPROTO, "ipc job: n_images at offset 8: %u over the cap of %d",
                           j->n_images, GS_IPC_MAX_IMAGES);
    if ((rc = rd_str(r, "request", &j->request)) ||
        (rc = check_text(j->request, MAX_REQUEST, "job", "request", JOB_FIXED, GS_EPROTO, r->d)))
        return rc;
    for (uint32_t i = 0; i < j->n_images; i++) {
        char field[32];
        snprintf(field, sizeof field, "image %u", i);
        if ((rc = rd_str(r, field, &j->images[i])))
            return rc;
    }
    return 0;
}

static int decode_event(reader *r, gs_ipc_event *e)
{
    int rc;
    if ((rc = need(r, EVENT_FIXED, "fixed fields")))
        return rc;
    const uint8_t *b = r->b;
    e->queue_report = b[33];
    e->queue_position = (uint16_t)(b[34] | b[35] << 8);
    e->id = get_u64(b);
    e->queue_ns = get_u64(b + 8);
    e->ttft_ns = get_u64(b + 16);
    e->decode_ns = get_u64(b + 24);
    e->finish = b[32];
    e->error = (int32_t)get_u32(b + 36);
    e->prompt_tokens = (int32_t)get_u32(b + 40);
    e->completion_tokens = (int32_t)get_u32(b + 44);
    e->cached_prompt_tokens = (int32_t)get_u32(b + 48);
    e->n_ids = get_u32(b + 52);
    r->off = EVENT_IDS_OFF;
    if ((rc = check_event_scalars(e, GS_EPROTO, r->d)))
        return rc;
    if ((rc = need(r, 4 * (size_t)e->n_ids, "ids")))
        return rc;
    /* b is 4-aligned (checked by gs_ipc_decode) and the offset is 56. */
    e->ids = (const int32_t *)(const void *)(b + EVENT_IDS_OFF);
    r->off += 4 * (size_t)e->n_ids;
    size_t text_off = r->off;
    if ((rc = rd_str(r, "text", &e->text)) ||
        (rc = check_text(e->text, GS_IPC_MAX_BODY, "event", "text", text_off + 4, GS_EPROTO, r->d)))
        return rc;
    if (e->queue_report && e->text.len)
        return gs_diag_set(r->d, GS_EPROTO,
                           "ipc event: a queue report carries no text (offset %zu)", text_off);
    size_t msg_off = r->off;
    if ((rc = rd_str(r, "message", &e->message)))
        return rc;
    return check_text(e->message, MAX_MESSAGE, "event", "message", msg_off + 4, GS_EPROTO, r->d);
}

static int decode_stats(reader *r, gs_ipc_stats *s)
{
    int rc;
    if ((rc = need(r, STATS_SIZE, "fixed fields")))
        return rc;
#define XX(f)                                                                                      \
    s->f = (int32_t)get_u32(r->b + r->off);                                                        \
    r->off += 4;
    STATS_I32(XX)
#undef XX
#define XX(f)                                                                                      \
    s->f = get_u64(r->b + r->off);                                                                 \
    r->off += 8;
    STATS_U64(XX)
#undef XX
    return check_stats(s, GS_EPROTO, r->d);
}

static int decode_error(reader *r, gs_ipc_error *e)
{
    int rc;
    if ((rc = need(r, 12, "fixed fields")))
        return rc;
    e->id = get_u64(r->b);
    e->code = (int32_t)get_u32(r->b + 8);
    r->off = 12;
    if ((rc = rd_str(r, "message", &e->message)))
        return rc;
    return check_error(e, GS_EPROTO, r->d);
}

int gs_ipc_decode(int type, const uint8_t *body, size_t len, gs_ipc_msg *m, gs_diag *d)
{
    if (!m || (len && !body))
        return gs_diag_set(d, GS_EINVAL, "ipc: decode with a NULL argument");
    const char *what = gs_ipc_type_name(type);
    if (((uintptr_t)body & 3) != 0)
        return gs_diag_set(d, GS_EPROTO, "ipc %s: body at %p is not 4-byte aligned", what,
                           (const void *)body);
    if (len > GS_IPC_MAX_BODY)
        return gs_diag_set(d, GS_EPROTO, "ipc %s: body of %zu bytes over the cap of %u", what, len,
                           GS_IPC_MAX_BODY);
    static const uint8_t empty[4];
    reader r = {body ? body : empty, len, 0, what, d};
    int rc;
    memset(m, 0, sizeof *m);
    m->type = (gs_ipc_type)type;
    switch (type) {
    case GS_IPC_HELLO:
        rc = decode_hello(&r, &m->u.hello);
        break;
    case GS_IPC_JOB:
        rc = decode_job(&r, &m->u.job);
        break;
    case GS_IPC_CANCEL:
        rc = need(&r, 8, "id");
        if (rc == 0) {
            m->u.cancel_id = get_u64(r.b);
            r.off = 8;
            if (m->u.cancel_id == 0)
                rc = gs_diag_set(d, GS_EPROTO, "ipc cancel: id at offset 0 is 0");
        }
        break;
    case GS_IPC_EVENT:
        rc = decode_event(&r, &m->u.event);
        break;
    case GS_IPC_HEARTBEAT:
        rc = decode_stats(&r, &m->u.heartbeat);
        break;
    case GS_IPC_DRAIN:
        rc = 0;
        break;
    case GS_IPC_ERROR:
        rc = decode_error(&r, &m->u.error);
        break;
    default:
        return gs_diag_set(d, GS_EPROTO, "ipc: unknown message type %d", type);
    }
    if (rc)
        return rc;
    if (r.off != len)
        return gs_diag_set(d, GS_EPROTO, "ipc %s: %zu trailing bytes at offset %zu", what,
                           len - r.off, r.off);
    return 0;
}
