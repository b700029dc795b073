/* exif.h - image orientation from EXIF (TIFF IFD0) and XMP metadata, read
 * the way Pillow's Image.getexif does. Used by decode.c; pure functions,
 * bounds-checked: they never read outside [data, data + len).
 * Thread-safe (no state). */
#ifndef GS_IMAGE_EXIF_H
#define GS_IMAGE_EXIF_H

#include <stddef.h>
#include <stdint.h>

#define GS_EXIF_NO_TAG (-1)

/* Orientation (tag 0x0112) from IFD0 of an EXIF blob: a TIFF header
 * ("II*\0" little- or "MM\0*" big-endian), optionally preceded by one or
 * two "Exif\0\0" prefixes. Returns GS_EXIF_NO_TAG when there is no such
 * tag or the header cannot be read; otherwise the tag's value when it is a
 * single BYTE/SHORT/LONG/SBYTE/SSHORT/SLONG in 0..65535, and 0 (present,
 * means no transform) for any other shape. The first Orientation entry
 * wins; entries after a truncation are not seen. Borrows data. */
int gs_exif_orientation(const uint8_t *data, size_t len);

/* Orientation from a PNG "Raw profile type exif" text (ImageMagick's
 * form: "\nexif\n<length>\n<hex lines>"), decoded as Pillow does:
 * everything after the third newline, newlines and other ASCII white
 * space dropped, hex pairs to bytes, then gs_exif_orientation. Invalid hex
 * gives GS_EXIF_NO_TAG. Borrows text. */
int gs_exif_orientation_raw_profile(const char *text, size_t len);

/* Orientation from an XMP packet: the first `tiff:Orientation="D` or
 * `tiff:Orientation>D` with D a digit (Pillow's regex). Returns 0..9, or
 * GS_EXIF_NO_TAG. Borrows data. */
int gs_xmp_orientation(const uint8_t *data, size_t len);

#endif
