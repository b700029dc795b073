/* bytes.c - gs_parse_bytes (bytes.h). */
#include "common/bytes.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <strings.h>

#include "common/err.h"

int gs_parse_bytes(const char *s, size_t *out)
{
    if (!s || !isdigit((unsigned char)*s))
        return GS_EINVAL;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s)
        return GS_EINVAL;
    static const struct {
        const char *suf;
        int shift;
    } sufs[] = {{"", 0},     {"b", 0},   {"k", 10},   {"kb", 10}, {"kib", 10},
                {"m", 20},   {"mb", 20}, {"mib", 20}, {"g", 30},  {"gb", 30},
                {"gib", 30}, {"t", 40},  {"tb", 40},  {"tib", 40}};
    for (size_t i = 0; i < sizeof sufs / sizeof *sufs; i++) {
        if (strcasecmp(end, sufs[i].suf))
            continue;
        double b = v * (double)((uint64_t)1 << sufs[i].shift);
        if (!(b >= 1.0) || b >= (double)SIZE_MAX)
            return GS_EINVAL;
        *out = (size_t)b;
        return 0;
    }
    return GS_EINVAL;
}
