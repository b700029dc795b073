/* fuzz_ipc_msg.c - libFuzzer target for the wire codec (common/ipc_msg.c).
 *
 * The input is a frame: 16 header bytes, then a body. The header goes
 * through gs_ipc_decode_header; the body (copied to an 8-aligned buffer)
 * through gs_ipc_decode under every type, the header's first. Whatever
 * decodes must re-encode to the same bytes (the encoding is canonical),
 * and must then decode again. Any crash, sanitizer report or trap is a
 * finding. Built only with GS_FUZZ=ON (tests/fuzz/run.sh). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/ipc_msg.h"

static void check_round_trip(int type, const uint8_t *body, size_t len, const gs_ipc_msg *m)
{
    uint8_t *out;
    size_t out_len;
    gs_diag d;
    if (gs_ipc_encode(m, &out, &out_len, &d) != 0)
        __builtin_trap(); /* decoded, so it must encode */
    if (out_len != GS_IPC_HEADER_SIZE + len || out[5] != (uint8_t)type ||
        memcmp(out + GS_IPC_HEADER_SIZE, body, len) != 0)
        __builtin_trap();
    gs_ipc_header h;
    if (gs_ipc_decode_header(out, 0, &h, &d) != 0 || h.body_len != len)
        __builtin_trap();
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gs_ipc_header h;
    gs_ipc_msg m;
    gs_diag d;
    uint8_t hdr[GS_IPC_HEADER_SIZE] = {0};
    size_t n = size < GS_IPC_HEADER_SIZE ? size : GS_IPC_HEADER_SIZE;
    memcpy(hdr, data, n);
    int hrc = gs_ipc_decode_header(hdr, (uint32_t)(size > 64 ? size : 0), &h, &d);

    size_t len = size - n;
    /* 8-aligned copy of the body; malloc(0) may give NULL, so one extra */
    uint64_t *buf = malloc(len + 8);
    if (!buf)
        return 0;
    memcpy(buf, data + n, len);
    const uint8_t *body = (const uint8_t *)buf;

    if (hrc == 0 && h.body_len == len && gs_ipc_decode(h.type, body, len, &m, &d) == 0)
        check_round_trip(h.type, body, len, &m);
    for (int t = 0; t <= GS_IPC_ERROR + 1; t++)
        if (gs_ipc_decode(t, body, len, &m, &d) == 0)
            check_round_trip(t, body, len, &m);
    /* and misaligned, which must always be refused */
    if (len > 1 && gs_ipc_decode(GS_IPC_CANCEL, body + 1, len - 1, &m, &d) != GS_EPROTO)
        __builtin_trap();
    free(buf);
    return 0;
}
