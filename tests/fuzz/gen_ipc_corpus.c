/* gen_ipc_corpus.c - writes the seed corpus of fuzz_ipc_msg: one valid
 * frame of each message type (and a few variants) into the folder given
 * as argv[1], as seed-<n>.bin. Run by tests/fuzz/run.sh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/ipc_msg.h"

static gs_ipc_str S(const char *s)
{
    gs_ipc_str r = {s, (uint32_t)strlen(s)};
    return r;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_ipc_corpus DIR\n");
        return 2;
    }
    static const int32_t ids[3] = {1, 151329, -1};
    gs_ipc_msg m[8];
    memset(m, 0, sizeof m);
    m[0].type = GS_IPC_HELLO;
    m[0].u.hello = (gs_ipc_hello){
        GS_IPC_ROLE_WORKER, 99, S("worker-0@h\xc3\xb6st"), S("glm"), 4096, 16, 100, 8, S("k3y")};
    m[1].type = GS_IPC_JOB;
    m[1].u.job.id = 1;
    m[1].u.job.request = S("{\"messages\":[]}");
    m[1].u.job.n_images = 2;
    m[1].u.job.images[0] = S("\xff\xd8\xff");
    m[1].u.job.images[1] = S("");
    m[2].type = GS_IPC_CANCEL;
    m[2].u.cancel_id = 7;
    m[3].type = GS_IPC_EVENT;
    m[3].u.event = (gs_ipc_event){.id = 3, .n_ids = 3, .ids = ids, .text = S("hi \xe6\x97\xa5")};
    m[4].type = GS_IPC_EVENT;
    m[4].u.event = (gs_ipc_event){
        .id = 3, .finish = GS_IPC_FINISH_ERROR, .error = GS_EMODEL, .message = S("nan")};
    m[5].type = GS_IPC_HEARTBEAT;
    m[5].u.heartbeat = (gs_ipc_stats){1, 2, 3, 4, 5, 6, 7, 0, 8, 9, 10, 11, 12, 13, 14, 15};
    m[6].type = GS_IPC_DRAIN;
    m[7].type = GS_IPC_ERROR;
    m[7].u.error = (gs_ipc_error){0, GS_EPROTO, S("bad frame")};
    for (int i = 0; i < 8; i++) {
        uint8_t *f;
        size_t len;
        gs_diag d;
        if (gs_ipc_encode(&m[i], &f, &len, &d) != 0) {
            fprintf(stderr, "gen_ipc_corpus: %s\n", d.msg);
            return 1;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/seed-%d.bin", argv[1], i);
        FILE *fp = fopen(path, "wb");
        if (!fp || fwrite(f, 1, len, fp) != len || fclose(fp) != 0) {
            perror(path);
            return 1;
        }
        free(f);
    }
    return 0;
}
