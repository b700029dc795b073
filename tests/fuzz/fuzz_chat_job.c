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
 * through gs_b64_decode. Built with libFuzzer (GS_FUZZ=ON) and as
 * replay_chat_job (ctest). */
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n = 0;
    int bad = 0;
    uint8_t *b = gs_b64_decode((const char *)data, size, &n, &bad);
    free(b);

    json_error_t je;
    json_t *req = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je);
    if (!req)
        return 0;
    gs_chat_job_params p = {.max_images = 4, .model = "tiny-glm4v", .fetch_remote = 0};
    check(&p, req);
    p.fetch_remote = 1;
    p.model = NULL;
    check(&p, req);
    json_decref(req);
    return 0;
}
