/* chat_template.h - the GLM-4.6V chat template as C.
 *
 * Not a Jinja engine: a renderer of the exact logic of GLM-4.6V's
 * chat_template.jinja (glm4v-spec.md 6.2), as transformers renders it
 * (trim_blocks + lstrip_blocks, tojson = json.dumps(ensure_ascii=False),
 * message keys whose value is null dropped, reasoning_content also read
 * from "thinking" / "reasoning"): [gMASK]<sop>, the tools system block,
 * system / user / assistant (reasoning kept only after the last user turn,
 * inline <think>..</think> split off, tool calls as <tool_call> with
 * <arg_key>/<arg_value>) / tool (<|observation|> + <tool_response>) turns,
 * /nothink and <think></think> when thinking is off, and the generation
 * prompt. gs_chat_template_check tells whether a model folder's template
 * is the one implemented here.
 *
 * Input: messages as a JSON array in the OpenAI / transformers form:
 * {"role": "system"|"user"|"assistant"|"tool", "content": string | null |
 * [{"type": "text", "text": ..} | {"type": "image"} | {"type":
 * "image_url", ..} | {"type": "video"} | {"type": "video_url", ..}],
 * "reasoning_content": string, "tool_calls": [{"function": {"name",
 * "arguments": object or JSON-object string}}]}.
 *
 * Where the template would print Python reprs or silently drop input,
 * this renderer refuses with GS_EINVAL and a diag naming the message
 * index and field: unknown roles, content items of unknown type, non-string
 * text, string items in user content, images in assistant content, tool
 * response items that Python would print as a dict. Two deliberate
 * differences, both what a server needs (and what vLLM does): image_url /
 * video_url items count as images / videos everywhere (the template renders
 * nothing for them in user turns), and tool-call arguments given as a JSON
 * string (the OpenAI form) are parsed into an object.
 * Thread-safe: no shared state. */
#ifndef GS_CHAT_TEMPLATE_H
#define GS_CHAT_TEMPLATE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef enum {
    GS_THINK_DEFAULT = 0, /* enable_thinking not passed: the template's default (thinking on) */
    GS_THINK_ON,          /* enable_thinking=True */
    GS_THINK_OFF,         /* enable_thinking=False: /nothink and an empty <think></think> */
} gs_think_mode;

typedef struct {
    gs_think_mode enable_thinking;
    int add_generation_prompt; /* 1: end with "<|assistant|>\n" */
} gs_chat_options;

typedef enum { GS_MEDIA_IMAGE, GS_MEDIA_VIDEO } gs_media_kind;

/* One placeholder of the rendered text, in order: which message and which
 * content item it came from. */
typedef struct {
    gs_media_kind kind;
    int32_t message, item;
} gs_chat_media;

typedef struct {
    char *text; /* owned, NUL-terminated UTF-8 (if the input strings were) */
    size_t len;
    int32_t n_images, n_videos;
    gs_chat_media *media; /* owned, n_images + n_videos entries in rendering order */
} gs_chat_result;

/* Renders messages (borrowed) and tools (borrowed; NULL, null or [] for
 * none, else an array of tool objects) with opt (borrowed; NULL: defaults
 * with the generation prompt). On success *res owns the text and media
 * list (free with gs_chat_result_free). Errors: GS_EINVAL (d names
 * messages[i] or tools[i] and the field), GS_ENOMEM; *res is then empty. */
int gs_chat_render_ex(const json_t *messages, const json_t *tools, const gs_chat_options *opt,
                      gs_chat_result *res, gs_diag *d);
void gs_chat_result_free(gs_chat_result *r); /* frees the members; NULL: no-op */

/* The text alone, no tools: *out returns owned (free with free()). */
int gs_chat_render(const json_t *messages, const gs_chat_options *opt, char **out, gs_diag *d);

/* 0 when text (a model folder's chat_template.jinja, borrowed; a final
 * newline is ignored) is the template this renderer implements, else
 * GS_EUNSUPPORTED with a diag. */
int gs_chat_template_check(const char *text, size_t len, gs_diag *d);

#endif
