/* A field extractor for S3's XML responses (see s3_xml.h). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "s3_xml.h"

static int
is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Whether the element name at p (just after '<') is exactly name. */
static int
name_at(const char *p, const char *end, const char *name)
{
	size_t n = strlen(name);

	if ((size_t)(end - p) <= n || memcmp(p, name, n) != 0)
		return 0;
	return p[n] == '>' || p[n] == '/' || is_space(p[n]);
}

static const char *
find_bytes(const char *start, const char *end, const char *needle)
{
	size_t n = strlen(needle);

	if (start >= end || (size_t)(end - start) < n)
		return NULL;
	return memmem(start, (size_t)(end - start), needle, n);
}

int
s3_xml_root_name(const char *xml, size_t len, char *out, size_t outlen)
{
	const char *p = xml, *end = xml + len;

	/* A UTF-8 byte order mark. */
	if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
		p += 3;
	for (;;) {
		while (p < end && is_space(*p))
			p++;
		if (p >= end || *p != '<')
			return 0;
		if (end - p >= 2 && p[1] == '?') {
			p = find_bytes(p, end, "?>");
			if (p == NULL)
				return 0;
			p += 2;
		} else if (end - p >= 4 && memcmp(p, "<!--", 4) == 0) {
			p = find_bytes(p, end, "-->");
			if (p == NULL)
				return 0;
			p += 3;
		} else if (end - p >= 2 && p[1] == '!') {
			/* <!DOCTYPE ...>, as in an HTML error page. */
			p = memchr(p, '>', (size_t)(end - p));
			if (p == NULL)
				return 0;
			p++;
		} else {
			break;
		}
	}
	p++;
	size_t n = 0;
	while (p + n < end && p[n] != '>' && p[n] != '/' && !is_space(p[n]))
		n++;
	if (n == 0 || p + n >= end || n >= outlen)
		return 0;
	memcpy(out, p, n);
	out[n] = '\0';
	return 1;
}

int
s3_xml_has_end_tag(const char *xml, size_t len, const char *name)
{
	char tag[128];

	if (strlen(name) + 4 > sizeof(tag))
		return 0;
	snprintf(tag, sizeof(tag), "</%s>", name);
	return find_bytes(xml, xml + len, tag) != NULL;
}

int
s3_xml_next(const char *xml, size_t len, size_t *offset, const char *name,
	    const char **inner, size_t *inner_len)
{
	const char *end = xml + len;
	const char *p = xml + (*offset < len ? *offset : len);
	char close_tag[128];

	if (strlen(name) + 4 > sizeof(close_tag))
		return 0;
	snprintf(close_tag, sizeof(close_tag), "</%s>", name);
	while ((p = memchr(p, '<', (size_t)(end - p))) != NULL) {
		const char *gt, *close;

		p++;
		if (!name_at(p, end, name))
			continue;
		gt = memchr(p, '>', (size_t)(end - p));
		if (gt == NULL)
			return 0;
		if (gt[-1] == '/') {
			*inner = gt;
			*inner_len = 0;
			*offset = (size_t)(gt + 1 - xml);
			return 1;
		}
		close = find_bytes(gt + 1, end, close_tag);
		if (close == NULL)
			return 0;
		*inner = gt + 1;
		*inner_len = (size_t)(close - (gt + 1));
		*offset = (size_t)(close + strlen(close_tag) - xml);
		return 1;
	}
	return 0;
}

char *
s3_xml_text(const char *xml, size_t len, const char *name)
{
	const char *inner;
	size_t inner_len, offset = 0;

	if (!s3_xml_next(xml, len, &offset, name, &inner, &inner_len))
		return NULL;
	return s3_xml_decode(inner, inner_len);
}

static size_t
put_utf8(char *out, unsigned long cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

char *
s3_xml_decode(const char *text, size_t len)
{
	static const struct {
		const char *entity;
		char c;
	} named[] = {
		{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'},
		{"&quot;", '"'}, {"&apos;", '\''},
	};
	/* A numeric reference is at least 4 bytes ("&#9;") and expands to at
	 * most 4, so the output never outgrows the input. */
	char *out = malloc(len + 1);
	size_t i = 0, o = 0;

	if (out == NULL)
		return NULL;
	while (i < len) {
		int done = 0;

		if (text[i] == '&') {
			for (size_t k = 0; k < sizeof(named) / sizeof(named[0]); k++) {
				size_t n = strlen(named[k].entity);

				if (len - i >= n &&
				    memcmp(text + i, named[k].entity, n) == 0) {
					out[o++] = named[k].c;
					i += n;
					done = 1;
					break;
				}
			}
			if (!done && len - i >= 4 && text[i + 1] == '#') {
				const char *semi = memchr(text + i, ';', len - i);
				int hex = text[i + 2] == 'x' || text[i + 2] == 'X';
				char digits[16];
				size_t ndigits;
				char *parse_end;
				unsigned long cp;

				if (semi != NULL) {
					ndigits = (size_t)(semi - (text + i + 2 + hex));
					if (ndigits > 0 && ndigits < sizeof(digits)) {
						memcpy(digits, text + i + 2 + hex, ndigits);
						digits[ndigits] = '\0';
						cp = strtoul(digits, &parse_end, hex ? 16 : 10);
						if (*parse_end == '\0' && cp > 0 &&
						    cp <= 0x10ffff) {
							o += put_utf8(out + o, cp);
							i = (size_t)(semi + 1 - text);
							done = 1;
						}
					}
				}
			}
		}
		if (!done)
			out[o++] = text[i++];
	}
	out[o] = '\0';
	return out;
}

int
s3_xml_append_escaped(struct evbuffer *out, const char *text)
{
	const char *run = text;

	for (const char *p = text;; p++) {
		const char *rep = NULL;

		switch (*p) {
		case '&': rep = "&amp;"; break;
		case '<': rep = "&lt;"; break;
		case '>': rep = "&gt;"; break;
		case '\0': break;
		default: continue;
		}
		if (p > run && evbuffer_add(out, run, (size_t)(p - run)) != 0)
			return -1;
		if (rep == NULL)
			return 0;
		if (evbuffer_add(out, rep, strlen(rep)) != 0)
			return -1;
		run = p + 1;
	}
}
