/* exif.c - the Orientation tag from EXIF and XMP, following Pillow 13's
 * Exif.load / ImageFileDirectory_v2.load: strip up to two "Exif\0\0",
 * read the 8-byte TIFF header, seek to IFD0, read 12-byte entries until
 * the count is reached or the data ends (Pillow keeps what it read before
 * a short read), first occurrence of a tag wins, unknown types and empty
 * values are skipped. Owns nothing; no state; every read bounds-checked. */
#include "worker/image/exif.h"

#include <stdlib.h>
#include <string.h>

#define TAG_ORIENTATION 0x0112

static uint32_t rd16(const uint8_t *p, int be)
{
    return be ? (uint32_t)p[0] << 8 | p[1] : (uint32_t)p[1] << 8 | p[0];
}

static uint32_t rd32(const uint8_t *p, int be)
{
    return be ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
              : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* Bytes per unit of the TIFF types Pillow knows, by type number (0: a
 * type Pillow skips). 1 BYTE, 2 ASCII, 3 SHORT, 4 LONG, 5 RATIONAL,
 * 6 SBYTE, 7 UNDEFINED, 8 SSHORT, 9 SLONG, 10 SRATIONAL, 11 FLOAT,
 * 12 DOUBLE, 13 IFD, 16 LONG8, 17 SLONG8, 18 IFD8. */
static const uint8_t type_size[19] = {0, 1, 1, 2, 4, 8, 1, 1, 2, 4, 8, 4, 8, 4, 0, 0, 8, 8, 8};

int gs_exif_orientation(const uint8_t *data, size_t len)
{
    if (!data)
        return GS_EXIF_NO_TAG;
    for (int i = 0; i < 2 && len >= 6 && memcmp(data, "Exif\0\0", 6) == 0; i++) {
        data += 6;
        len -= 6;
    }
    if (len < 8)
        return GS_EXIF_NO_TAG;
    int be;
    if (memcmp(data, "II\x2a\x00", 4) == 0)
        be = 0;
    else if (memcmp(data, "MM\x00\x2a", 4) == 0)
        be = 1;
    else
        return GS_EXIF_NO_TAG;
    uint32_t ifd = rd32(data + 4, be);
    if (ifd > len || len - ifd < 2)
        return GS_EXIF_NO_TAG;
    uint32_t n = rd16(data + ifd, be);
    size_t pos = (size_t)ifd + 2;
    for (uint32_t i = 0; i < n && len - pos >= 12; i++, pos += 12) {
        const uint8_t *e = data + pos;
        uint32_t tag = rd16(e, be), typ = rd16(e + 2, be), count = rd32(e + 4, be);
        if (tag != TAG_ORIENTATION)
            continue;
        uint32_t unit = typ < sizeof type_size ? type_size[typ] : 0;
        if (unit == 0 || count == 0)
            continue; /* Pillow skips unknown types and empty values */
        if ((uint64_t)count * unit > 4) {
            /* Value stored at an offset: Pillow skips the tag when that
             * data is outside the blob. */
            uint32_t off = rd32(e + 8, be);
            if ((uint64_t)off + (uint64_t)count * unit > len)
                continue;
            return 0; /* a tuple: present, but no transform */
        }
        if (count != 1)
            return 0;
        int64_t v;
        switch (typ) {
        case 1:
            v = e[8];
            break;
        case 6:
            v = (int8_t)e[8];
            break;
        case 3:
            v = rd16(e + 8, be);
            break;
        case 8:
            v = (int16_t)rd16(e + 8, be);
            break;
        case 4:
            v = rd32(e + 8, be);
            break;
        case 9:
            v = (int32_t)rd32(e + 8, be);
            break;
        default:
            return 0;
        }
        return v >= 0 && v <= 65535 ? (int)v : 0;
    }
    return GS_EXIF_NO_TAG;
}

int gs_xmp_orientation(const uint8_t *data, size_t len)
{
    static const char key[] = "tiff:Orientation";
    const size_t klen = sizeof key - 1;
    if (!data)
        return GS_EXIF_NO_TAG;
    const uint8_t *p = data, *end = data + len;
    while ((size_t)(end - p) >= klen) {
        const uint8_t *hit = memmem(p, (size_t)(end - p), key, klen);
        if (!hit)
            break;
        const uint8_t *q = hit + klen;
        if (end - q >= 3 && q[0] == '=' && q[1] == '"' && q[2] >= '0' && q[2] <= '9')
            return q[2] - '0';
        if (end - q >= 2 && q[0] == '>' && q[1] >= '0' && q[1] <= '9')
            return q[1] - '0';
        p = hit + 1;
    }
    return GS_EXIF_NO_TAG;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int gs_exif_orientation_raw_profile(const char *text, size_t len)
{
    if (!text)
        return GS_EXIF_NO_TAG;
    size_t i = 0;
    for (int nl = 0; nl < 3; i++) {
        if (i >= len)
            return GS_EXIF_NO_TAG;
        nl += text[i] == '\n';
    }
    uint8_t *buf = malloc(len / 2 + 1);
    if (!buf)
        return GS_EXIF_NO_TAG;
    size_t n = 0;
    int hi = -1, bad = 0;
    for (; i < len && !bad; i++) {
        const char c = text[i];
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\v' || c == '\f')
            continue;
        const int v = hexval(c);
        if (v < 0)
            bad = 1;
        else if (hi < 0)
            hi = v;
        else
            buf[n++] = (uint8_t)(hi << 4 | v), hi = -1;
    }
    const int o = bad || hi >= 0 ? GS_EXIF_NO_TAG : gs_exif_orientation(buf, n);
    free(buf);
    return o;
}
