/* test_json_lift.c - data: URL payloads lifted out of a request body
 * before it is parsed (gateway/json_lift.c), and the base64 decoder that
 * reads them (gateway/chat_job.c): the lifted parse gives the original's
 * tree but for the payloads, refuses nothing the original accepts and
 * accepts nothing it refuses, and never lets a client's own string pass
 * for a marker. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "gateway/chat_job.h"
#include "gateway/json_lift.h"
#include "test.h"

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* n base64 digits (deterministic). Owned. */
static char *digits(size_t n, unsigned seed)
{
    char *s = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        s[i] = B64[(seed >> 16) & 63];
    }
    s[n] = 0;
    return s;
}

/* A chat body with one image part per payload (NULL-terminated list). */
static char *chat_body(const char *const *payloads, const char *extra)
{
    size_t cap = 4096;
    for (int i = 0; payloads[i]; i++)
        cap += strlen(payloads[i]) + 128;
    char *b = malloc(cap);
    size_t o = (size_t)snprintf(b, cap,
                                "{\"model\": \"m\", %s\"messages\": [{\"role\": \"user\", "
                                "\"content\": [{\"type\": \"text\", \"text\": \"hi\"}",
                                extra ? extra : "");
    for (int i = 0; payloads[i]; i++)
        o += (size_t)snprintf(b + o, cap - o,
                              ", {\"type\": \"image_url\", \"image_url\": {\"url\": "
                              "\"data:image/png;base64,%s\"}}",
                              payloads[i]);
    snprintf(b + o, cap - o, "]}]}");
    return b;
}

/* The url of image part k of a parsed chat body. */
static const char *url_of(json_t *req, int k)
{
    json_t *content =
        json_object_get(json_array_get(json_object_get(req, "messages"), 0), "content");
    return json_string_value(json_object_get(
        json_object_get(json_array_get(content, (size_t)k + 1), "image_url"), "url"));
}

static void test_long_payloads_are_lifted_and_found(void)
{
    char *p0 = digits(4000, 1), *p1 = digits(100, 2), *p2 = digits(GS_JSON_LIFT_MIN, 3);
    const char *ps[] = {p0, p1, p2, NULL};
    char *body = chat_body(ps, NULL);
    gs_json_lift lift;
    json_error_t je;
    json_t *req = gs_json_load_lifted(body, strlen(body), JSON_REJECT_DUPLICATES, &lift, &je);
    GS_ASSERT(req != NULL);
    GS_ASSERT_EQ(lift.n, 2); /* the 100-digit payload stays in the JSON */
    const char *u0 = url_of(req, 0), *u1 = url_of(req, 1), *u2 = url_of(req, 2);
    GS_ASSERT(!strncmp(u0, "data:image/png;base64,\x01", 23));
    GS_ASSERT_STREQ(u1 + 22, p1);
    const gs_json_span *s0 = gs_json_lift_find(&lift, strchr(u0, ',') + 1);
    const gs_json_span *s2 = gs_json_lift_find(&lift, strchr(u2, ',') + 1);
    GS_ASSERT(s0 && s2 && s0 != s2);
    GS_ASSERT(s0->len == 4000 && !memcmp(s0->p, p0, 4000));
    GS_ASSERT(s2->len == GS_JSON_LIFT_MIN && !memcmp(s2->p, p2, GS_JSON_LIFT_MIN));
    GS_ASSERT(s0->p > body && s0->p < body + strlen(body)); /* borrowed from the body */
    GS_ASSERT(gs_json_lift_find(&lift, strchr(u1, ',') + 1) == NULL);
    GS_ASSERT(gs_json_lift_find(NULL, strchr(u0, ',') + 1) == NULL);
    /* Apart from the payloads, the same tree as the plain parse. */
    json_t *plain = json_loadb(body, strlen(body), JSON_REJECT_DUPLICATES, &je);
    GS_ASSERT(plain != NULL);
    json_t *c1 = json_deep_copy(req), *c2 = json_deep_copy(plain);
    for (int k = 0; k < 3; k++) {
        json_t *a = json_object_get(
            json_array_get(
                json_object_get(json_array_get(json_object_get(c1, "messages"), 0), "content"),
                (size_t)k + 1),
            "image_url");
        json_t *b = json_object_get(
            json_array_get(
                json_object_get(json_array_get(json_object_get(c2, "messages"), 0), "content"),
                (size_t)k + 1),
            "image_url");
        json_object_set_new(a, "url", json_string("x"));
        json_object_set_new(b, "url", json_string("x"));
    }
    GS_ASSERT(json_equal(c1, c2));
    json_decref(c1);
    json_decref(c2);
    json_decref(plain);
    json_decref(req);
    free(body);
    free(p0);
    free(p1);
    free(p2);
}

static void test_what_is_not_lifted(void)
{
    char *p = digits(2000, 7);
    char buf[8192];
    gs_json_lift lift;
    json_error_t je;
    /* an escape other than "\/" in the string (here \u0041, an 'A') */
    snprintf(buf, sizeof buf, "{\"url\": \"data:image/png;base64,%.1000s\\u0041%s\"}", p, p + 1000);
    json_t *v = gs_json_load_lifted(buf, strlen(buf), 0, &lift, &je);
    GS_ASSERT(v && lift.n == 0);
    GS_ASSERT(strchr(json_string_value(json_object_get(v, "url")), 'A') != NULL);
    json_decref(v);
    /* the value of another key, or no key's (only image URLs are lifted) */
    snprintf(buf, sizeof buf,
             "{\"text\": \"data:image/png;base64,%s\", \"a\": [\"url\", "
             "\"data:image/png;base64,%s\"]}",
             p, p);
    v = gs_json_load_lifted(buf, strlen(buf), 0, &lift, &je);
    GS_ASSERT(v && lift.n == 0);
    json_decref(v);
    /* a key that looks like a data URL */
    snprintf(buf, sizeof buf, "{\"data:image/png;base64,%s\" : 1}", p);
    v = gs_json_load_lifted(buf, strlen(buf), 0, &lift, &je);
    GS_ASSERT(v && lift.n == 0 && json_object_size(v) == 1);
    json_decref(v);
    /* no ;base64 before the comma, or another scheme */
    snprintf(buf, sizeof buf, "[{\"url\": \"data:image/png,%s\"}, {\"url\": \"http://x/%s\"}]", p,
             p);
    v = gs_json_load_lifted(buf, strlen(buf), 0, &lift, &je);
    GS_ASSERT(v && lift.n == 0);
    json_decref(v);
    /* a byte that is no printable ASCII (UTF-8 here) stays for jansson */
    snprintf(buf, sizeof buf, "{\"url\": \"data:image/png;base64,%s\xc3\xa9\"}", p);
    v = gs_json_load_lifted(buf, strlen(buf), 0, &lift, &je);
    GS_ASSERT(v && lift.n == 0);
    json_decref(v);
    /* a U+0001 of the client's own anywhere: nothing is lifted, so it can
     * never pass for a marker */
    snprintf(buf, sizeof buf, "[{\"url\": \"data:image/png;base64,%s\"}, \"\\u00010\"]", p);
    v = gs_json_load_lifted(buf, strlen(buf), 0, &lift, &je);
    GS_ASSERT(v && lift.n == 0);
    GS_ASSERT_STREQ(json_string_value(json_array_get(v, 1)), "\x01"
                                                             "0");
    GS_ASSERT(gs_json_lift_find(&lift, json_string_value(json_array_get(v, 1))) == NULL);
    json_decref(v);
    /* but an escaped backslash before u0001 is text, not the escape */
    snprintf(buf, sizeof buf, "[{\"image_url\" :\n \"data:image/png;base64,%s\"}, \"\\\\u0001\"]",
             p);
    v = gs_json_load_lifted(buf, strlen(buf), 0, &lift, &je);
    GS_ASSERT(v && lift.n == 1);
    GS_ASSERT_STREQ(json_string_value(json_array_get(v, 1)), "\\u0001");
    json_decref(v);
    free(p);
}

static void test_errors_are_the_originals(void)
{
    char *p = digits(3000, 9);
    char buf[8192];
    const char *tails[] = {"]", "", "\"", ", }", "] x", "]]"};
    for (size_t i = 0; i < sizeof tails / sizeof *tails; i++) {
        snprintf(buf, sizeof buf, "[{\"url\": \"data:image/png;base64,%s\"}, 1%s", p, tails[i]);
        gs_json_lift lift;
        json_error_t a, b;
        json_t *v = gs_json_load_lifted(buf, strlen(buf), 0, &lift, &a);
        json_t *w = json_loadb(buf, strlen(buf), 0, &b);
        GS_ASSERT_MSG((v == NULL) == (w == NULL), "tail %zu", i);
        if (!v && !w) {
            GS_ASSERT_STREQ(a.text, b.text);
            GS_ASSERT_EQ(a.position, b.position);
        } else {
            GS_ASSERT_EQ(lift.n, 1);
        }
        json_decref(v);
        json_decref(w);
    }
    /* duplicate keys are still refused */
    snprintf(buf, sizeof buf, "{\"url\": \"data:image/png;base64,%s\", \"url\": 1}", p);
    gs_json_lift lift;
    json_error_t je;
    GS_ASSERT(gs_json_load_lifted(buf, strlen(buf), JSON_REJECT_DUPLICATES, &lift, &je) == NULL);
    free(p);
}

static void test_at_most_max_lifted(void)
{
    const char *ps[GS_JSON_LIFT_MAX + 3];
    char *own[GS_JSON_LIFT_MAX + 2];
    for (int i = 0; i < GS_JSON_LIFT_MAX + 2; i++)
        ps[i] = own[i] = digits(600, (unsigned)i);
    ps[GS_JSON_LIFT_MAX + 2] = NULL;
    char *body = chat_body(ps, NULL);
    gs_json_lift lift;
    json_error_t je;
    json_t *req = gs_json_load_lifted(body, strlen(body), 0, &lift, &je);
    GS_ASSERT(req && lift.n == GS_JSON_LIFT_MAX);
    for (int i = 0; i < GS_JSON_LIFT_MAX + 2; i++) {
        const char *u = strchr(url_of(req, i), ',') + 1;
        const gs_json_span *s = gs_json_lift_find(&lift, u);
        if (i < GS_JSON_LIFT_MAX)
            GS_ASSERT(s && s->len == 600 && !memcmp(s->p, own[i], 600));
        else
            GS_ASSERT(!s && !strcmp(u, own[i]));
    }
    GS_ASSERT(gs_json_lift_find(&lift, "\x01"
                                       "99") == NULL);
    GS_ASSERT(gs_json_lift_find(&lift, "\x01") == NULL);
    GS_ASSERT(gs_json_lift_find(&lift, "\x01"
                                       "1x") == NULL);
    json_decref(req);
    free(body);
    for (int i = 0; i < GS_JSON_LIFT_MAX + 2; i++)
        free(own[i]);
}

/* The job built from a lifted parse is the one built from the plain one. */
static void test_chat_job_same_either_way(void)
{
    /* 3 bytes per 4 digits: "AAAA" .. gives a known image */
    char *p0 = digits(1200, 11), *p1 = digits(800, 12);
    const char *ps[] = {p0, p1, NULL};
    char *body = chat_body(ps, "\"stream\": true, ");
    gs_json_lift lift;
    json_error_t je;
    json_t *a = gs_json_load_lifted(body, strlen(body), JSON_REJECT_DUPLICATES, &lift, &je);
    json_t *b = json_loadb(body, strlen(body), JSON_REJECT_DUPLICATES, &je);
    GS_ASSERT(a && b && lift.n == 2);
    gs_chat_job_params pa = {.max_images = 4, .model = "m", .lift = &lift};
    gs_chat_job_params pb = {.max_images = 4, .model = "m"};
    gs_chat_job ja, jb;
    char msg[512];
    const char *param;
    GS_ASSERT_EQ(gs_chat_job_build(&pa, a, &ja, msg, sizeof msg, &param), 0);
    GS_ASSERT_EQ(gs_chat_job_build(&pb, b, &jb, msg, sizeof msg, &param), 0);
    GS_ASSERT_STREQ(ja.json, jb.json);
    GS_ASSERT_EQ(ja.n_images, 2);
    GS_ASSERT_EQ(jb.n_images, 2);
    for (int i = 0; i < 2; i++) {
        GS_ASSERT_EQ(ja.images[i].len, jb.images[i].len);
        GS_ASSERT(!memcmp(ja.images[i].p, jb.images[i].p, ja.images[i].len));
    }
    GS_ASSERT_EQ(ja.images[0].len, 900);
    gs_chat_job_free(&ja);
    gs_chat_job_free(&jb);
    /* a marker without a lift (the WebSocket's asks) is invalid base64 */
    gs_chat_job jc;
    GS_ASSERT_EQ(gs_chat_job_build(&pb, a, &jc, msg, sizeof msg, &param), 400);
    GS_ASSERT(strstr(msg, "invalid base64") != NULL);
    json_decref(a);
    json_decref(b);
    free(body);
    free(p0);
    free(p1);
}

/* PHP's encoder writes every '/' as "\/", in the media type and in the
 * base64: such a payload is lifted too, and unescaped when decoded. */
static void test_escaped_slashes(void)
{
    char *p0 = digits(3000, 21);
    size_t n = strlen(p0), k = 0;
    char *esc = malloc(2 * n + 1);
    for (size_t i = 0; i < n; i++) {
        if (p0[i] == '/')
            esc[k++] = '\\';
        esc[k++] = p0[i];
    }
    esc[k] = 0;
    GS_ASSERT(k > n); /* the digits hold slashes */
    size_t cap = 2 * n + 512;
    char *body = malloc(cap);
    snprintf(body, cap,
             "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\", "
             "\"image_url\": {\"url\": \"data:image\\/png;base64,%s\"}}]}]}",
             esc);
    gs_json_lift lift;
    json_error_t je;
    json_t *a = gs_json_load_lifted(body, strlen(body), JSON_REJECT_DUPLICATES, &lift, &je);
    GS_ASSERT(a != NULL);
    GS_ASSERT_EQ(lift.n, 1);
    GS_ASSERT(lift.spans[0].slashes && lift.spans[0].len == k);
    size_t un;
    char *u = gs_json_span_unescape(&lift.spans[0], &un);
    GS_ASSERT(u && un == n && !memcmp(u, p0, n));
    free(u);
    /* the job equals the plain parse's, image bytes included */
    json_t *b = json_loadb(body, strlen(body), JSON_REJECT_DUPLICATES, &je);
    gs_chat_job_params pa = {.max_images = 4, .model = "m", .lift = &lift};
    gs_chat_job_params pb = {.max_images = 4, .model = "m"};
    gs_chat_job ja, jb, jc;
    char msg[512];
    const char *param;
    GS_ASSERT_EQ(gs_chat_job_build(&pa, a, &ja, msg, sizeof msg, &param), 0);
    GS_ASSERT_EQ(gs_chat_job_build(&pb, b, &jb, msg, sizeof msg, &param), 0);
    GS_ASSERT_STREQ(ja.json, jb.json);
    GS_ASSERT_EQ(ja.n_images, 1);
    GS_ASSERT_EQ(ja.images[0].len, jb.images[0].len);
    GS_ASSERT_EQ(ja.images[0].len, n / 4 * 3);
    GS_ASSERT(!memcmp(ja.images[0].p, jb.images[0].p, ja.images[0].len));
    GS_ASSERT_EQ(gs_chat_job_from_body(&pb, body, strlen(body), &jc, msg, sizeof msg, &param), 0);
    GS_ASSERT_STREQ(jc.json, jb.json);
    GS_ASSERT(jc.images[0].len == jb.images[0].len &&
              !memcmp(jc.images[0].p, jb.images[0].p, jc.images[0].len));
    gs_chat_job_free(&ja);
    gs_chat_job_free(&jb);
    gs_chat_job_free(&jc);
    json_decref(a);
    json_decref(b);
    free(body);
    free(esc);
    free(p0);
}

/* A long string with many escapes (a long prompt's newlines, or a hostile
 * body of nothing else) costs the scan its length once: it once searched
 * for the closing quote again after every escape, and a 2 MB body of
 * escapes held the gateway's loop for 11 s (a 64 MiB one for days). */
static void test_many_escapes_scan_in_linear_time(void)
{
    const size_t n = 2u << 20;
    char *b = malloc(n + 64);
    size_t k = (size_t)sprintf(b, "{\"messages\": [{\"role\": \"user\", \"content\": \"");
    for (size_t i = 0; k < n; i++) {
        b[k++] = '\\';
        b[k++] = i % 3 ? 'n' : '/';
    }
    k += (size_t)sprintf(b + k, "\"}]}");
    gs_json_lift lift;
    json_error_t je;
    const uint64_t t0 = gs_clock_now_ns();
    json_t *plain = json_loadb(b, k, 0, &je);
    const uint64_t t1 = gs_clock_now_ns();
    json_t *v = gs_json_load_lifted(b, k, 0, &lift, &je);
    const uint64_t t2 = gs_clock_now_ns();
    GS_ASSERT(plain && v && lift.n == 0);
    /* the scan adds little to jansson's own parse (which it then does) */
    printf("  2 MiB of escapes: jansson %.1f ms, lifted parse %.1f ms\n", (t1 - t0) * 1e-6,
           (t2 - t1) * 1e-6);
    GS_ASSERT(t2 - t1 < 4 * (t1 - t0) + 200000000u);
    json_decref(plain);
    json_decref(v);
    free(b);
}

/* The route's path: a data: URL that is no image part's stays in the job
 * as the client sent it (the plain parse is used then). */
static void test_from_body_keeps_other_data_urls(void)
{
    char *p = digits(2000, 21);
    size_t cap = 3 * 2000 + 1024;
    char *body = malloc(cap);
    const char *shapes[] = {
        /* a text part that is a data: URL (no "url" key: never lifted) */
        "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", "
        "\"text\": \"data:image/png;base64,%s\"}]}]}",
        /* a "url" in a part that is no image (lifted, then built plainly) */
        "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\", "
        "\"image_url\": {\"url\": \"data:image/png;base64,%s\"}}, {\"type\": \"text\", "
        "\"text\": \"hi\", \"url\": \"data:image/png;base64,%s\"}]}]}",
    };
    for (int i = 0; i < 2; i++) {
        snprintf(body, cap, shapes[i], p, p);
        gs_chat_job_params prm = {.max_images = 4, .model = "m"};
        gs_chat_job a, b;
        char ma[512], mb[512];
        const char *pa, *pb;
        json_error_t je;
        json_t *req = json_loadb(body, strlen(body), JSON_REJECT_DUPLICATES, &je);
        int sa = gs_chat_job_build(&prm, req, &a, ma, sizeof ma, &pa);
        int sb = gs_chat_job_from_body(&prm, body, strlen(body), &b, mb, sizeof mb, &pb);
        GS_ASSERT_EQ(sa, sb);
        if (sa == 0 && sb == 0) {
            GS_ASSERT_STREQ(a.json, b.json);
            GS_ASSERT(strstr(b.json, p) != NULL); /* the client's text, whole */
            GS_ASSERT(strstr(b.json, "\\u0001") == NULL);
            GS_ASSERT_EQ(a.n_images, b.n_images);
            gs_chat_job_free(&a);
            gs_chat_job_free(&b);
        } else {
            GS_ASSERT_STREQ(ma, mb);
        }
        json_decref(req);
    }
    /* errors as the route reports them */
    gs_chat_job_params prm = {.max_images = 4, .model = "m"};
    gs_chat_job j;
    char m[512];
    const char *pm;
    GS_ASSERT_EQ(gs_chat_job_from_body(&prm, "[1]", 3, &j, m, sizeof m, &pm), 400);
    GS_ASSERT_STREQ(m, "the request body must be a JSON object");
    GS_ASSERT_EQ(gs_chat_job_from_body(&prm, "{\"a\":", 5, &j, m, sizeof m, &pm), 400);
    GS_ASSERT(!strncmp(m, "invalid JSON at byte ", 21));
    free(body);
    free(p);
}

/* The table decoder against a bit-by-bit reference. */
static size_t ref_decode(const char *s, size_t n, uint8_t *o, int *bad)
{
    *bad = 0;
    while (n && s[n - 1] == '=')
        n--;
    if (n % 4 == 1) {
        *bad = 1;
        return 0;
    }
    uint32_t acc = 0;
    int bits = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *d = strchr(B64, s[i]);
        int v = s[i] == '-' ? 62 : s[i] == '_' ? 63 : (d && s[i] ? (int)(d - B64) : -1);
        if (v < 0) {
            *bad = 1;
            return 0;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[k++] = (uint8_t)(acc >> bits);
        }
    }
    return k;
}

static void test_b64_decode(void)
{
    uint8_t ref[64];
    char s[80];
    unsigned seed = 5;
    for (int t = 0; t < 20000; t++) {
        size_t n = (size_t)(t % 60);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            unsigned r = (seed >> 16) & 1023;
            s[i] =
                r < 1000
                    ? "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_"[r % 66]
                    : (char)(r % 256); /* now and then anything */
        }
        if (n > 2 && t % 7 == 0)
            s[n - 1] = '=';
        int bad_ref, bad;
        size_t kr = ref_decode(s, n, ref, &bad_ref), k = 0;
        uint8_t *got = gs_b64_decode(s, n, &k, &bad);
        GS_ASSERT_EQ(bad, bad_ref);
        GS_ASSERT((got == NULL) == (bad != 0));
        if (got) {
            GS_ASSERT_EQ(k, kr);
            GS_ASSERT(!memcmp(got, ref, k));
        }
        free(got);
    }
}

int main(void)
{
    GS_RUN(test_long_payloads_are_lifted_and_found);
    GS_RUN(test_what_is_not_lifted);
    GS_RUN(test_errors_are_the_originals);
    GS_RUN(test_at_most_max_lifted);
    GS_RUN(test_chat_job_same_either_way);
    GS_RUN(test_escaped_slashes);
    GS_RUN(test_many_escapes_scan_in_linear_time);
    GS_RUN(test_from_body_keeps_other_data_urls);
    GS_RUN(test_b64_decode);
    return gs_test_summary();
}
