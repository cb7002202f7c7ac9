#ifndef MFMODAL_S3_XML_H
#define MFMODAL_S3_XML_H

/* Just enough XML for S3 responses: the root element's name, the text of an
 * element, repeated elements, and entity decoding and escaping.  S3 response
 * bodies are small, flat documents without namespace prefixes, CDATA or
 * mixed content, so a field extractor is enough and no parser library is
 * linked. */

#include <stddef.h>

#include <event2/buffer.h>

/* Copy the name of the document's root element (after any XML declaration,
 * comments and whitespace) into out.  Returns 1, or 0 when the text does not
 * start with an element (empty, HTML without a root, truncated). */
int s3_xml_root_name(const char *xml, size_t len, char *out, size_t outlen);

/* Whether the document contains the end tag </name>, as a complete root
 * element must; a body cut off in transit lacks it. */
int s3_xml_has_end_tag(const char *xml, size_t len, const char *name);

/* Find the next element called name that starts at or after *offset.
 * Returns 1 and sets *inner and *inner_len to its content (raw, not decoded)
 * and *offset past its end tag.  Returns 0 when there is none or its end
 * tag is missing.  "<name/>" counts as an empty element. */
int s3_xml_next(const char *xml, size_t len, size_t *offset, const char *name,
		const char **inner, size_t *inner_len);

/* The decoded text of the first element called name, malloc'ed, or NULL
 * when it is missing (or out of memory). */
char *s3_xml_text(const char *xml, size_t len, const char *name);

/* Decode the five predefined entities and numeric character references
 * (&#NN; and &#xNN;, written as UTF-8).  Returns a malloc'ed string or NULL
 * when out of memory; an unknown entity is kept as it is. */
char *s3_xml_decode(const char *text, size_t len);

/* Append text to out with &, < and > escaped.  Quotes stay literal, because
 * some S3-compatible servers compare an ETag such as "abc" byte for byte
 * and reject &quot;abc&quot;.  Returns 0 or -1 when out of memory. */
int s3_xml_append_escaped(struct evbuffer *out, const char *text);

#endif
