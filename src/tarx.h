#ifndef MFMODAL_TARX_H
#define MFMODAL_TARX_H

/* Safe extraction of the tar.gz archives Metaflow writes (local metadata). */

#include <stddef.h>
#include <stdint.h>

/* Decompress gzip data (one or more members) into a new buffer, at most
 * max_out bytes, as a guard against decompression bombs.  Returns 0, or -1
 * with a message in err.  *out is freed by the caller. */
int tarx_gunzip(const uint8_t *in, size_t len, size_t max_out, uint8_t **out,
		size_t *outlen, char *err, size_t errlen);

/* Extract the ustar/pax/GNU tar archive in tar into the directory target.
 * Only entries under strip_prefix (e.g. ".metaflow/") are extracted, with the
 * prefix removed; NULL extracts everything.  Absolute names, ".." components
 * and links that point outside target are rejected, and so is writing
 * through an existing symbolic link.  Regular files, directories and links
 * are supported.  Returns the number of files written, or -1 with a message
 * in err naming the entry. */
long tarx_extract(const uint8_t *tar, size_t len, const char *target,
		  const char *strip_prefix, char *err, size_t errlen);

#endif
