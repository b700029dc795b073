/* test_ipc_msg.c - the wire codec (common/ipc_msg.c): round trips of every
 * type, every truncation, random byte flips, caps, UTF-8, trailing bytes,
 * unknown types, alignment and header checks. */
#include "common/ipc_msg.h"
#include "test.h"

static const int32_t ids[5] = {7, -1, 0, 151329, 2147483647};
static const char img0[] = "\xff\xd8\xff\xe0 jpeg bytes \x00\x01\x02";
static const char img1[] = "\x89PNG\r\n\x1a\n";

static gs_ipc_str S(const char *s)
{
    gs_ipc_str r = {s, (uint32_t)strlen(s)};
    return r;
}

/* One message of every type, every field set to a distinct value. */
static int sample_msgs(gs_ipc_msg *m)
{
    int n = 0;
    memset(m, 0, 9 * sizeof *m);
    m[n].type = GS_IPC_HELLO;
    m[n].u.hello = (gs_ipc_hello){GS_IPC_ROLE_WORKER,
                                  4242,
                                  S("worker-0@höst"),
                                  S("GLM-4.6V-Flash"),
                                  65536,
                                  16,
                                  12345,
                                  64,
                                  S("a cluster key, 32 bytes or more.")};
    n++;
    m[n].type = GS_IPC_HELLO; /* a gateway's: empty model */
    m[n].u.hello = (gs_ipc_hello){GS_IPC_ROLE_GATEWAY, 1, S("gateway-1"), S(""), 0, 0, 0, 0, S("")};
    n++;
    m[n].type = GS_IPC_JOB;
    m[n].u.job.id = 0x0102030405060708ull;
    m[n].u.job.request = S("{\"messages\":[{\"role\":\"user\",\"content\":\"¿qué? 日本\"}]}");
    m[n].u.job.n_images = 3;
    m[n].u.job.images[0] = (gs_ipc_str){img0, sizeof img0 - 1};
    m[n].u.job.images[1] = (gs_ipc_str){img1, sizeof img1 - 1};
    m[n].u.job.images[2] = (gs_ipc_str){NULL, 0};
    n++;
    m[n].type = GS_IPC_CANCEL;
    m[n].u.cancel_id = 0xfedcba9876543210ull;
    n++;
    m[n].type = GS_IPC_EVENT;
    m[n].u.event = (gs_ipc_event){.id = 99,
                                  .finish = GS_IPC_FINISH_NONE,
                                  .n_ids = 5,
                                  .ids = ids,
                                  .text = S("Hello 😀"),
                                  .prompt_tokens = 1,
                                  .completion_tokens = 2,
                                  .cached_prompt_tokens = 3,
                                  .queue_ns = 1ull << 40,
                                  .ttft_ns = 5,
                                  .decode_ns = UINT64_MAX};
    n++;
    m[n].type = GS_IPC_EVENT;
    m[n].u.event = (gs_ipc_event){.id = 100,
                                  .finish = GS_IPC_FINISH_ERROR,
                                  .error = GS_EMODEL,
                                  .message = S("NaN in logits"),
                                  .prompt_tokens = 10,
                                  .completion_tokens = 0};
    n++;
    m[n].type = GS_IPC_HEARTBEAT;
    m[n].u.heartbeat = (gs_ipc_stats){1, 2, 3, 4, 5, 6, 7, 1, 8, 9, 10, 11, 12, 13, 14, UINT64_MAX};
    n++;
    m[n].type = GS_IPC_DRAIN;
    n++;
    m[n].type = GS_IPC_ERROR;
    m[n].u.error = (gs_ipc_error){17, GS_EOVERLOAD, S("queue full (64 jobs)")};
    n++;
    return n;
}

static int str_eq(gs_ipc_str a, gs_ipc_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* Every field of a and b; returns the name of the first that differs. */
static const char *msg_diff(const gs_ipc_msg *a, const gs_ipc_msg *b)
{
    if (a->type != b->type)
        return "type";
    switch (a->type) {
    case GS_IPC_HELLO: {
        const gs_ipc_hello *x = &a->u.hello, *y = &b->u.hello;
        if (x->role != y->role)
            return "role";
        if (x->pid != y->pid)
            return "pid";
        if (!str_eq(x->name, y->name))
            return "name";
        if (!str_eq(x->model, y->model))
            return "model";
        if (x->max_model_len != y->max_model_len || x->page_size != y->page_size ||
            x->n_pages != y->n_pages || x->max_queue != y->max_queue)
            return "hello ints";
        return NULL;
    }
    case GS_IPC_JOB:
        if (a->u.job.id != b->u.job.id)
            return "id";
        if (!str_eq(a->u.job.request, b->u.job.request))
            return "request";
        if (a->u.job.n_images != b->u.job.n_images)
            return "n_images";
        for (uint32_t i = 0; i < a->u.job.n_images; i++)
            if (!str_eq(a->u.job.images[i], b->u.job.images[i]))
                return "image";
        return NULL;
    case GS_IPC_CANCEL:
        return a->u.cancel_id == b->u.cancel_id ? NULL : "cancel_id";
    case GS_IPC_EVENT: {
        const gs_ipc_event *x = &a->u.event, *y = &b->u.event;
        if (x->id != y->id || x->finish != y->finish || x->error != y->error)
            return "id/finish/error";
        if (x->n_ids != y->n_ids)
            return "n_ids";
        for (uint32_t i = 0; i < x->n_ids; i++)
            if (x->ids[i] != y->ids[i])
                return "ids";
        if (!str_eq(x->text, y->text))
            return "text";
        if (!str_eq(x->message, y->message))
            return "message";
        if (x->prompt_tokens != y->prompt_tokens || x->completion_tokens != y->completion_tokens ||
            x->cached_prompt_tokens != y->cached_prompt_tokens)
            return "usage";
        if (x->queue_ns != y->queue_ns || x->ttft_ns != y->ttft_ns || x->decode_ns != y->decode_ns)
            return "timings";
        return NULL;
    }
    case GS_IPC_HEARTBEAT:
        return memcmp(&a->u.heartbeat, &b->u.heartbeat, sizeof a->u.heartbeat) ? "heartbeat" : NULL;
    case GS_IPC_DRAIN:
        return NULL;
    case GS_IPC_ERROR:
        if (a->u.error.id != b->u.error.id || a->u.error.code != b->u.error.code)
            return "error id/code";
        return str_eq(a->u.error.message, b->u.error.message) ? NULL : "error message";
    }
    return "unknown type";
}

/* An encoded message, its body copied into an 8-aligned buffer. */
typedef struct {
    uint8_t *frame;
    size_t len;
    uint64_t *body; /* [blen] bytes, aligned */
    size_t blen;
} enc;

static int encode(const gs_ipc_msg *m, enc *e)
{
    gs_diag d;
    int rc = gs_ipc_encode(m, &e->frame, &e->len, &d);
    if (rc)
        return rc;
    e->blen = e->len - GS_IPC_HEADER_SIZE;
    e->body = malloc(e->blen + 8);
    memcpy(e->body, e->frame + GS_IPC_HEADER_SIZE, e->blen);
    return 0;
}

static void enc_free(enc *e)
{
    free(e->frame);
    free(e->body);
}

static void test_round_trip(void)
{
    gs_ipc_msg m[9];
    int n = sample_msgs(m);
    GS_ASSERT_EQ(n, 9);
    for (int i = 0; i < n; i++) {
        enc e;
        GS_ASSERT_OK(encode(&m[i], &e));
        gs_ipc_header h;
        gs_diag d;
        GS_ASSERT_OK(gs_ipc_decode_header(e.frame, 0, &h, &d));
        GS_ASSERT_EQ(h.type, m[i].type);
        GS_ASSERT_EQ(h.version, GS_IPC_VERSION);
        GS_ASSERT_EQ(h.flags, 0);
        GS_ASSERT_EQ(h.body_len, e.blen);
        gs_ipc_msg out;
        int rc = gs_ipc_decode(h.type, (const uint8_t *)e.body, e.blen, &out, &d);
        GS_ASSERT_MSG(rc == 0, "%s: %s", gs_ipc_type_name(m[i].type), d.msg);
        const char *diff = msg_diff(&m[i], &out);
        GS_ASSERT_MSG(!diff, "%s: field %s differs", gs_ipc_type_name(m[i].type), diff);
        if (m[i].type == GS_IPC_EVENT && m[i].u.event.n_ids)
            GS_ASSERT(out.u.event.ids == (const int32_t *)(const void *)((uint8_t *)e.body + 56));
        if (m[i].type == GS_IPC_JOB) /* strings point into the body */
            GS_ASSERT(out.u.job.request.p == (const char *)e.body + 16);
        enc_free(&e);
    }
    GS_ASSERT_STREQ(gs_ipc_type_name(GS_IPC_HEARTBEAT), "heartbeat");
    GS_ASSERT_STREQ(gs_ipc_type_name(0), "unknown");
}

static void test_truncations(void)
{
    gs_ipc_msg m[9];
    int n = sample_msgs(m), checked = 0;
    for (int i = 0; i < n; i++) {
        enc e;
        GS_ASSERT_OK(encode(&m[i], &e));
        for (size_t cut = 0; cut < e.blen; cut++) {
            gs_ipc_msg out;
            gs_diag d;
            gs_diag_clear(&d);
            int rc = gs_ipc_decode(m[i].type, (const uint8_t *)e.body, cut, &out, &d);
            GS_ASSERT_MSG(rc == GS_EPROTO, "%s cut at %zu: rc %d", gs_ipc_type_name(m[i].type), cut,
                          rc);
            GS_ASSERT_EQ(d.code, GS_EPROTO);
            GS_ASSERT(d.msg[0] != 0);
            checked++;
        }
        enc_free(&e);
    }
    GS_ASSERT(checked > 300);
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

static void test_random_flips(void)
{
    gs_ipc_msg m[9];
    int n = sample_msgs(m), ok = 0, bad = 0;
    for (int i = 0; i < n; i++) {
        enc e;
        GS_ASSERT_OK(encode(&m[i], &e));
        uint8_t *buf = malloc(e.len + 8); /* header + body, body 8-aligned at buf + 16 */
        for (int it = 0; it < 3000; it++) {
            memcpy(buf, e.frame, e.len);
            int flips = 1 + (int)(rnd() % 4);
            for (int k = 0; k < flips; k++)
                buf[rnd() % e.len] ^= (uint8_t)(1u << (rnd() % 8));
            gs_ipc_header h;
            gs_ipc_msg out;
            gs_diag d;
            int rc = gs_ipc_decode_header(buf, 0, &h, &d);
            if (rc == 0)
                rc = h.body_len != e.blen
                         ? GS_EPROTO
                         : gs_ipc_decode(h.type, buf + GS_IPC_HEADER_SIZE, e.blen, &out, &d);
            /* A body read under another type must never crash either. */
            for (int t = 0; t <= 8; t++)
                (void)gs_ipc_decode(t, buf + GS_IPC_HEADER_SIZE, e.blen, &out, &d);
            if (rc == 0) {
                ok++;
                /* What decodes re-encodes to the same bytes. */
                rc = gs_ipc_decode(h.type, buf + GS_IPC_HEADER_SIZE, e.blen, &out, &d);
                uint8_t *re;
                size_t relen;
                GS_ASSERT_OK(rc);
                GS_ASSERT_OK(gs_ipc_encode(&out, &re, &relen, &d));
                GS_ASSERT_EQ(relen, e.len);
                GS_ASSERT(memcmp(re, buf, relen) == 0);
                free(re);
            } else {
                GS_ASSERT(rc == GS_EPROTO || rc == GS_ETOOBIG);
                bad++;
            }
        }
        free(buf);
        enc_free(&e);
    }
    GS_ASSERT(bad > 0);
    fprintf(stderr, "  flips: %d decoded, %d refused\n", ok, bad);
}

/* Encodes m, patches len bytes at body offset off, expects GS_EPROTO. */
static int decode_patched(const gs_ipc_msg *m, size_t off, const void *patch, size_t len,
                          gs_diag *d)
{
    enc e;
    int rc = encode(m, &e);
    if (rc)
        return rc;
    memcpy((uint8_t *)e.body + off, patch, len);
    gs_ipc_msg out;
    rc = gs_ipc_decode(m->type, (const uint8_t *)e.body, e.blen, &out, d);
    enc_free(&e);
    return rc;
}

static void test_caps(void)
{
    gs_ipc_msg m[9];
    sample_msgs(m);
    gs_diag d;
    uint8_t *out;
    size_t len;

    /* images: 64 is fine, 65 refused on both sides */
    gs_ipc_msg j = m[2];
    j.u.job.n_images = GS_IPC_MAX_IMAGES;
    for (int i = 0; i < GS_IPC_MAX_IMAGES; i++)
        j.u.job.images[i] = S("x");
    GS_ASSERT_OK(gs_ipc_encode(&j, &out, &len, &d));
    free(out);
    uint8_t n65[4] = {65, 0, 0, 0};
    GS_ASSERT_EQ(decode_patched(&j, 8, n65, 4, &d), GS_EPROTO);
    GS_ASSERT(strstr(d.msg, "n_images") != NULL);
    gs_ipc_msg j2 = m[2];
    j2.u.job.n_images = GS_IPC_MAX_IMAGES + 1;
    GS_ASSERT_EQ(gs_ipc_encode(&j2, &out, &len, &d), GS_EINVAL);
    j2 = m[2];
    j2.u.job.id = 0;
    GS_ASSERT_EQ(gs_ipc_encode(&j2, &out, &len, &d), GS_EINVAL);

    /* name: 256 bytes fine, 257 refused */
    char name[300];
    memset(name, 'n', sizeof name);
    gs_ipc_msg h = m[0];
    h.u.hello.name = (gs_ipc_str){name, 256};
    GS_ASSERT_OK(gs_ipc_encode(&h, &out, &len, &d));
    free(out);
    h.u.hello.name.len = 257;
    GS_ASSERT_EQ(gs_ipc_encode(&h, &out, &len, &d), GS_EINVAL);
    GS_ASSERT(strstr(d.msg, "name") != NULL);
    h.u.hello.name.len = 256;
    h.u.hello.model = (gs_ipc_str){name, 257};
    GS_ASSERT_EQ(gs_ipc_encode(&h, &out, &len, &d), GS_EINVAL);
    GS_ASSERT(strstr(d.msg, "model") != NULL);
    h.u.hello.model = (gs_ipc_str){name, 256};
    h.u.hello.key = (gs_ipc_str){name, 257};
    GS_ASSERT_EQ(gs_ipc_encode(&h, &out, &len, &d), GS_EINVAL);
    GS_ASSERT(strstr(d.msg, "key") != NULL);
    /* 257 bytes on the wire: build it from a 257-byte request-free layout
     * (name, then empty model and key) */
    {
        size_t blen = 24 + 4 + 257 + 4 + 4;
        uint64_t *b = calloc(1, blen + 8);
        uint8_t *p = (uint8_t *)b;
        p[0] = GS_IPC_ROLE_WORKER;
        p[24] = 1; /* 257 = 0x101 */
        p[25] = 1;
        memset(p + 28, 'n', 257);
        gs_ipc_msg o;
        GS_ASSERT_EQ(gs_ipc_decode(GS_IPC_HELLO, p, blen, &o, &d), GS_EPROTO);
        GS_ASSERT(strstr(d.msg, "name") != NULL);
        p[25] = 0; /* 1-byte name, 256 bytes left for the model field: garbage length */
        GS_ASSERT_EQ(gs_ipc_decode(GS_IPC_HELLO, p, blen, &o, &d), GS_EPROTO);
        free(b);
    }
    h = m[0];
    h.u.hello.role = 3;
    GS_ASSERT_EQ(gs_ipc_encode(&h, &out, &len, &d), GS_EINVAL);
    uint8_t role3 = 3;
    GS_ASSERT_EQ(decode_patched(&m[0], 0, &role3, 1, &d), GS_EPROTO);
    GS_ASSERT(strstr(d.msg, "role") != NULL);
    uint8_t one = 1;
    GS_ASSERT_EQ(decode_patched(&m[0], 2, &one, 1, &d), GS_EPROTO); /* reserved */

    /* request: 16 MiB fine, 16 MiB + 1 refused */
    size_t big = 16u << 20;
    char *req = malloc(big + 1);
    memset(req, 'a', big + 1);
    j = m[2];
    j.u.job.request = (gs_ipc_str){req, (uint32_t)big};
    GS_ASSERT_OK(gs_ipc_encode(&j, &out, &len, &d));
    free(out);
    j.u.job.request.len = (uint32_t)big + 1;
    GS_ASSERT_EQ(gs_ipc_encode(&j, &out, &len, &d), GS_EINVAL);
    GS_ASSERT(strstr(d.msg, "request") != NULL);
    free(req);

    /* error message: 4096 fine, 4097 refused (also in an event) */
    char msg[4100];
    memset(msg, 'm', sizeof msg);
    gs_ipc_msg e = m[8];
    e.u.error.message = (gs_ipc_str){msg, 4096};
    GS_ASSERT_OK(gs_ipc_encode(&e, &out, &len, &d));
    free(out);
    e.u.error.message.len = 4097;
    GS_ASSERT_EQ(gs_ipc_encode(&e, &out, &len, &d), GS_EINVAL);
    e = m[5];
    e.u.event.message = (gs_ipc_str){msg, 4097};
    GS_ASSERT_EQ(gs_ipc_encode(&e, &out, &len, &d), GS_EINVAL);
    e = m[8];
    e.u.error.code = 0;
    GS_ASSERT_EQ(gs_ipc_encode(&e, &out, &len, &d), GS_EINVAL);

    /* ids: over the cap refused on both sides without reading them */
    e = m[4];
    e.u.event.n_ids = GS_IPC_MAX_IDS + 1;
    GS_ASSERT_EQ(gs_ipc_encode(&e, &out, &len, &d), GS_EINVAL);
    uint32_t nid = GS_IPC_MAX_IDS + 1;
    uint8_t nb[4] = {(uint8_t)nid, (uint8_t)(nid >> 8), (uint8_t)(nid >> 16), (uint8_t)(nid >> 24)};
    GS_ASSERT_EQ(decode_patched(&m[4], 52, nb, 4, &d), GS_EPROTO);
    GS_ASSERT(strstr(d.msg, "n_ids") != NULL);
    /* finish / error consistency */
    e = m[4];
    e.u.event.error = GS_EIO;
    GS_ASSERT_EQ(gs_ipc_encode(&e, &out, &len, &d), GS_EINVAL);
    uint8_t fin9 = 9;
    GS_ASSERT_EQ(decode_patched(&m[4], 32, &fin9, 1, &d), GS_EPROTO);
    /* heartbeat: negative counts, draining not 0/1 */
    uint8_t neg[4] = {0xff, 0xff, 0xff, 0xff};
    GS_ASSERT_EQ(decode_patched(&m[6], 16, neg, 4, &d), GS_EPROTO);
    GS_ASSERT(strstr(d.msg, "n_pages") != NULL);
    uint8_t two = 2;
    GS_ASSERT_EQ(decode_patched(&m[6], 28, &two, 1, &d), GS_EPROTO);
    /* cancel id 0 */
    uint8_t zero8[8] = {0};
    GS_ASSERT_EQ(decode_patched(&m[3], 0, zero8, 8, &d), GS_EPROTO);
}

static void test_utf8(void)
{
    static const char *good[] = {"",
                                 "plain",
                                 "h\xc3\xa9llo",
                                 "\xe6\x97\xa5\xe6\x9c\xac",
                                 "\xf0\x9f\x98\x80",
                                 "\xf4\x8f\xbf\xbf",
                                 "\xef\xbf\xbf"};
    static const char *bad[] = {
        "\x80",             /* lone continuation */
        "\xc0\x80",         /* overlong NUL */
        "\xc1\xbf",         /* overlong */
        "\xe0\x80\x80",     /* overlong */
        "\xed\xa0\x80",     /* surrogate */
        "\xf0\x80\x80\x80", /* overlong */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
        "\xf5\x80\x80\x80", /* bad lead */
        "\xff",             /* bad lead */
        "ab\xe2\x82",       /* truncated at the end */
        "\xe2\x28\xa1",     /* bad continuation */
    };
    gs_ipc_msg m[9];
    sample_msgs(m);
    gs_diag d;
    uint8_t *out;
    size_t len;
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        gs_ipc_msg h = m[0];
        h.u.hello.name = S(good[i]);
        GS_ASSERT_MSG(gs_ipc_encode(&h, &out, &len, &d) == 0, "good[%zu]: %s", i, d.msg);
        free(out);
    }
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        gs_ipc_msg h = m[0];
        h.u.hello.name = S(bad[i]);
        GS_ASSERT_MSG(gs_ipc_encode(&h, &out, &len, &d) == GS_EINVAL, "bad[%zu] encoded", i);
        /* The same bytes on the wire: encode a same-length ASCII name, patch. */
        char ascii[8];
        memset(ascii, 'a', strlen(bad[i]));
        ascii[strlen(bad[i])] = 0;
        h.u.hello.name = S(ascii);
        GS_ASSERT_EQ(decode_patched(&h, 28, bad[i], strlen(bad[i]), &d), GS_EPROTO);
        GS_ASSERT(strstr(d.msg, "UTF-8") != NULL);
        /* ... and in an event's text, an error message, a job's request */
        gs_ipc_msg ev = m[4];
        ev.u.event.text = S(bad[i]);
        GS_ASSERT_EQ(gs_ipc_encode(&ev, &out, &len, &d), GS_EINVAL);
        gs_ipc_msg er = m[8];
        er.u.error.message = S(bad[i]);
        GS_ASSERT_EQ(gs_ipc_encode(&er, &out, &len, &d), GS_EINVAL);
        gs_ipc_msg jb = m[2];
        jb.u.job.request = S(bad[i]);
        GS_ASSERT_EQ(gs_ipc_encode(&jb, &out, &len, &d), GS_EINVAL);
    }
    /* Clipping never splits a character. */
    const char *t = "ab\xe6\x97\xa5\xf0\x9f\x98\x80"; /* 2 + 3 + 4 bytes */
    GS_ASSERT_EQ(gs_ipc_utf8_clip(t, 9, 100), 9);
    GS_ASSERT_EQ(gs_ipc_utf8_clip(t, 9, 9), 9);
    GS_ASSERT_EQ(gs_ipc_utf8_clip(t, 9, 8), 5);
    GS_ASSERT_EQ(gs_ipc_utf8_clip(t, 9, 5), 5);
    GS_ASSERT_EQ(gs_ipc_utf8_clip(t, 9, 4), 2);
    GS_ASSERT_EQ(gs_ipc_utf8_clip(t, 9, 2), 2);
    GS_ASSERT_EQ(gs_ipc_utf8_clip(t, 9, 0), 0);
    GS_ASSERT_EQ(gs_ipc_utf8_clip(NULL, 0, 5), 0);
    /* Image bytes are not text: anything goes. */
    gs_ipc_msg jb = m[2];
    jb.u.job.images[0] = S("\xff\xfe\x80");
    GS_ASSERT_OK(gs_ipc_encode(&jb, &out, &len, &d));
    free(out);
}

static void test_trailing_unknown_misaligned(void)
{
    gs_ipc_msg m[9];
    int n = sample_msgs(m);
    gs_diag d;
    gs_ipc_msg out;
    for (int i = 0; i < n; i++) {
        enc e;
        GS_ASSERT_OK(encode(&m[i], &e));
        uint64_t *b = calloc(1, e.blen + 16);
        memcpy(b, e.body, e.blen);
        GS_ASSERT_EQ(gs_ipc_decode(m[i].type, (uint8_t *)b, e.blen + 1, &out, &d), GS_EPROTO);
        GS_ASSERT(strstr(d.msg, "trailing") != NULL);
        GS_ASSERT_EQ(gs_ipc_decode(m[i].type, (uint8_t *)b, e.blen + 4, &out, &d), GS_EPROTO);
        /* misaligned: the same bytes one byte further */
        uint8_t *mis = (uint8_t *)b + 1;
        memmove(mis, b, e.blen);
        if (e.blen) {
            GS_ASSERT_EQ(gs_ipc_decode(m[i].type, mis, e.blen, &out, &d), GS_EPROTO);
            GS_ASSERT(strstr(d.msg, "aligned") != NULL);
        }
        free(b);
        enc_free(&e);
    }
    uint64_t body[2] = {1, 0};
    GS_ASSERT_EQ(gs_ipc_decode(0, (uint8_t *)body, 8, &out, &d), GS_EPROTO);
    GS_ASSERT_EQ(gs_ipc_decode(8, (uint8_t *)body, 8, &out, &d), GS_EPROTO);
    GS_ASSERT(strstr(d.msg, "unknown") != NULL);
    GS_ASSERT_EQ(gs_ipc_decode(255, NULL, 0, &out, &d), GS_EPROTO);
    GS_ASSERT_OK(gs_ipc_decode(GS_IPC_DRAIN, NULL, 0, &out, &d));
    GS_ASSERT_EQ(out.type, GS_IPC_DRAIN);
    gs_ipc_msg u = {.type = (gs_ipc_type)99};
    uint8_t *p;
    size_t len;
    GS_ASSERT_EQ(gs_ipc_encode(&u, &p, &len, &d), GS_EINVAL);
}

static void test_header(void)
{
    gs_ipc_msg m = {.type = GS_IPC_CANCEL, .u.cancel_id = 5};
    uint8_t *f, hdr[16];
    size_t len;
    gs_diag d;
    gs_ipc_header h;
    GS_ASSERT_OK(gs_ipc_encode(&m, &f, &len, &d));
    GS_ASSERT_EQ(len, 24);
    GS_ASSERT(memcmp(f, "GSIP", 4) == 0);
    GS_ASSERT_EQ(f[4], GS_IPC_VERSION);
    GS_ASSERT_EQ(f[5], GS_IPC_CANCEL);
    GS_ASSERT_EQ(f[8], 8);
    GS_ASSERT_EQ(f[16], 5); /* little-endian id */
    memcpy(hdr, f, 16);
    free(f);
    GS_ASSERT_OK(gs_ipc_decode_header(hdr, 8, &h, &d));
    static const struct {
        int off;
        uint8_t val;
        const char *word;
    } bad[] = {{0, 'X', "magic"},   {3, 'Q', "magic"},  {4, GS_IPC_VERSION + 1, "version"},
               {4, 0, "version"},   {6, 1, "flags"},    {7, 0x80, "flags"},
               {12, 1, "reserved"}, {15, 1, "reserved"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        uint8_t x[16];
        memcpy(x, hdr, 16);
        x[bad[i].off] = bad[i].val;
        GS_ASSERT_EQ(gs_ipc_decode_header(x, 0, &h, &d), GS_EPROTO);
        GS_ASSERT_MSG(strstr(d.msg, bad[i].word) != NULL, "%s", d.msg);
    }
    /* over the receiver's limit: GS_ETOOBIG with h filled */
    memset(&h, 0, sizeof h);
    GS_ASSERT_EQ(gs_ipc_decode_header(hdr, 7, &h, &d), GS_ETOOBIG);
    GS_ASSERT_EQ(h.body_len, 8);
    GS_ASSERT_EQ(h.type, GS_IPC_CANCEL);
    GS_ASSERT_EQ(h.version, GS_IPC_VERSION);
    /* 0 means the hard cap */
    uint8_t x[16];
    memcpy(x, hdr, 16);
    uint32_t over = GS_IPC_MAX_BODY + 1;
    x[8] = (uint8_t)over, x[9] = (uint8_t)(over >> 8), x[10] = (uint8_t)(over >> 16),
    x[11] = (uint8_t)(over >> 24);
    GS_ASSERT_EQ(gs_ipc_decode_header(x, 0, &h, &d), GS_ETOOBIG);
    GS_ASSERT_EQ(h.body_len, over);
    GS_ASSERT_EQ(gs_ipc_decode_header(x, UINT32_MAX, &h, &d), GS_ETOOBIG);
    /* unknown types pass the header check */
    memcpy(x, hdr, 16);
    x[5] = 200;
    GS_ASSERT_OK(gs_ipc_decode_header(x, 0, &h, &d));
    GS_ASSERT_EQ(h.type, 200);

    /* gs_ipc_frame wraps a raw body */
    uint8_t body[3] = {1, 2, 3};
    GS_ASSERT_OK(gs_ipc_frame(GS_IPC_EVENT, body, 3, &f, &len));
    GS_ASSERT_EQ(len, 19);
    GS_ASSERT_OK(gs_ipc_decode_header(f, 0, &h, &d));
    GS_ASSERT_EQ(h.type, GS_IPC_EVENT);
    GS_ASSERT_EQ(h.body_len, 3);
    GS_ASSERT(memcmp(f + 16, body, 3) == 0);
    free(f);
    GS_ASSERT_EQ(gs_ipc_frame(0, body, 3, &f, &len), GS_EINVAL);
    GS_ASSERT_EQ(gs_ipc_frame(GS_IPC_JOB, NULL, 3, &f, &len), GS_EINVAL);
}

/* Queue reports: the flag and the place round-trip; a report with a
 * finish, ids or text, unknown flag bits and a place without the flag are
 * refused on both sides. */
static void test_queue_report(void)
{
    gs_diag d;
    for (int pos = 0; pos <= 65535; pos += 65535 / 5) {
        gs_ipc_msg m = {.type = GS_IPC_EVENT};
        m.u.event.id = 7;
        m.u.event.text = S("");
        m.u.event.message = S("");
        m.u.event.queue_report = 1;
        m.u.event.queue_position = (uint16_t)pos;
        enc e;
        GS_ASSERT_OK(encode(&m, &e));
        gs_ipc_msg out;
        GS_ASSERT_OK(gs_ipc_decode(GS_IPC_EVENT, (const uint8_t *)e.body, e.blen, &out, &d));
        GS_ASSERT_EQ(out.u.event.queue_report, 1);
        GS_ASSERT_EQ(out.u.event.queue_position, pos);
        GS_ASSERT_EQ(out.u.event.finish, GS_IPC_FINISH_NONE);
        enc_free(&e);
    }
    gs_ipc_msg m = {.type = GS_IPC_EVENT};
    m.u.event.id = 7;
    m.u.event.text = S("");
    m.u.event.message = S("");
    m.u.event.queue_report = 1;
    m.u.event.queue_position = 3;
    uint8_t *out;
    size_t len;
    gs_ipc_msg bad = m;
    bad.u.event.finish = GS_IPC_FINISH_STOP;
    GS_ASSERT_EQ(gs_ipc_encode(&bad, &out, &len, &d), GS_EINVAL);
    bad = m;
    int32_t id1 = 1;
    bad.u.event.n_ids = 1;
    bad.u.event.ids = &id1;
    GS_ASSERT_EQ(gs_ipc_encode(&bad, &out, &len, &d), GS_EINVAL);
    bad = m;
    bad.u.event.text = S("x");
    GS_ASSERT_EQ(gs_ipc_encode(&bad, &out, &len, &d), GS_EINVAL);
    bad = m;
    bad.u.event.queue_report = 0; /* a place without the flag */
    GS_ASSERT_EQ(gs_ipc_encode(&bad, &out, &len, &d), GS_EINVAL);
    /* decoding: unknown flag bits, a finish with the flag, a place without it */
    uint8_t two = 2, stop = GS_IPC_FINISH_STOP, zero = 0;
    GS_ASSERT_EQ(decode_patched(&m, 33, &two, 1, &d), GS_EPROTO);
    GS_ASSERT(strstr(d.msg, "flags") != NULL);
    GS_ASSERT_EQ(decode_patched(&m, 32, &stop, 1, &d), GS_EPROTO);
    GS_ASSERT_EQ(decode_patched(&m, 33, &zero, 1, &d), GS_EPROTO);
    GS_ASSERT(strstr(d.msg, "queue_position") != NULL);
}

int main(void)
{
    GS_RUN(test_round_trip);
    GS_RUN(test_truncations);
    GS_RUN(test_random_flips);
    GS_RUN(test_caps);
    GS_RUN(test_utf8);
    GS_RUN(test_trailing_unknown_misaligned);
    GS_RUN(test_header);
    GS_RUN(test_queue_report);
    return gs_test_summary();
}
