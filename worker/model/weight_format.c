/* weight_format.c - names of the weight formats (weight_format.h). */
#include "weight_format.h"

#include <string.h>

#include "common/err.h"

static const char *const names[] = {"asis", "bf16", "int8", "int4", "auto"};

const char *gs_weight_format_name(gs_weight_format f)
{
    return (unsigned)f < sizeof names / sizeof *names ? names[f] : "?";
}

int gs_weight_format_parse(const char *s, gs_weight_format *out)
{
    for (int i = GS_WEIGHTS_BF16; s && i <= GS_WEIGHTS_AUTO; i++)
        if (!strcmp(s, names[i])) {
            *out = (gs_weight_format)i;
            return 0;
        }
    return GS_EINVAL;
}
