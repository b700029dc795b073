/* fuzz_chat_job.c - libFuzzer target for the chat-completions request ->
 * worker job translation (gateway/chat_job.c), as POST
 * /v1/chat/completions and the WebSocket "ask" use it: the body is parsed
 * as the routes parse it (jansson, duplicate keys refused), then
 * gs_chat_job_build runs with remote image URLs refused and allowed.
 *
 * Checked besides memory safety: a success gives job JSON that parses
 * again, a model name for the response that is valid UTF-8 and images
 * that each have bytes or a URL; a refusal gives one of
 * the documented statuses and a message that is valid UTF-8 (it is sent
 * to the client inside JSON, and over the WebSocket a string that jansson
 * refuses would drop the whole error frame). The raw input also goes
 * through gs_b64_decode. gs_chat_job_from_body (the route's path: the
 * data: URL payloads lifted out of the parse) must give what the plain
 * parse and build give: the same status and message, or the same job
 * byte for byte, images included. Built with libFuzzer (GS_FUZZ=ON)
 * and as replay_chat_job (ctest). */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/chat_job.h"

static void check(const gs_chat_job_params *p, const json_t *req)
{
    gs_chat_job j;
    char msg[512];
    const char *param = NULL;
    int st = gs_chat_job_build(p, req, &j, msg, sizeof msg, &param);
    if (st == 0) {
        json_error_t je;
        json_t *back = json_loads(j.json, 0, &je);
        json_t *model = json_string(j.model); /* NULL: not UTF-8 */
        if (!back || !model || j.n_images > p->max_images)
            __builtin_trap();
        json_decref(back);
        json_decref(model);
        for (int i = 0; i < j.n_images; i++)
            if (!(j.bytes[i] && j.images[i].len > 0) && !j.urls[i])
                __builtin_trap();
        gs_chat_job_free(&j);
        return;
    }
    if (st != 400 && st != 404 && st != 415 && st != 503)
        __builtin_trap();
    json_t *s = json_string(msg); /* NULL: not UTF-8 */
    if (!s)
        __builtin_trap();
    json_decref(s);
}

/* gs_chat_job_from_body (the images' base64 lifted out of the parse)
 * gives what json_loadb + gs_chat_job_build give: the same status and
 * message, or the same job, images included. */
static void check_from_body(const gs_chat_job_params *p, const json_t *plain, const uint8_t *data,
                            size_t size, const char *plain_err)
{
    gs_chat_job a, b;
    char ma[512], mb[512];
    const char *pa = NULL, *pb = NULL;
    int sa = 400;
    if (plain)
        sa = gs_chat_job_build(p, plain, &a, ma, sizeof ma, &pa);
    else
        snprintf(ma, sizeof ma, "%s", plain_err);
    int sb = gs_chat_job_from_body(p, (const char *)data, size, &b, mb, sizeof mb, &pb);
    if (sa != sb || (sa && strcmp(ma, mb) != 0))
        __builtin_trap();
    if (sa)
        return;
    if (strcmp(a.json, b.json) != 0 || a.n_images != b.n_images)
        __builtin_trap();
    for (int i = 0; i < a.n_images; i++)
        if (a.images[i].len != b.images[i].len ||
            (a.images[i].len && memcmp(a.images[i].p, b.images[i].p, a.images[i].len)) ||
            (a.urls[i] == NULL) != (b.urls[i] == NULL))
            __builtin_trap();
    gs_chat_job_free(&a);
    gs_chat_job_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n = 0;
    int bad = 0;
    uint8_t *b = gs_b64_decode((const char *)data, size, &n, &bad);
    free(b);

    json_error_t je;
    json_t *req = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je);
    char err[300] = "";
    if (!req)
        snprintf(err, sizeof err, "invalid JSON at byte %d: %s", je.position, je.text);
    else if (!json_is_object(req))
        snprintf(err, sizeof err, "the request body must be a JSON object");
    gs_chat_job_params p0 = {.max_images = 4, .model = "tiny-glm4v", .fetch_remote = 0};
    check_from_body(&p0, req && json_is_object(req) ? req : NULL, data, size, err);
    if (!req)
        return 0;
    gs_chat_job_params p = {.max_images = 4, .model = "tiny-glm4v", .fetch_remote = 0};
    check(&p, req);
    p.fetch_remote = 1;
    p.model = NULL;
    check(&p, req);
    if (json_is_object(req))
        check_from_body(&p, req, data, size, NULL);
    json_decref(req);
    return 0;
}
