/* tar.gz extraction (see tarx.h).  Formats per POSIX pax (ustar headers,
 * 'x' extended headers) and GNU tar ('L' and 'K' long names). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "tarx.h"

#define TAR_BLOCK 512

int
tarx_gunzip(const uint8_t *in, size_t len, size_t max_out, uint8_t **out,
	    size_t *outlen, char *err, size_t errlen)
{
	z_stream zs;
	size_t cap = len * 4 + 1024 < max_out ? len * 4 + 1024 : max_out;
	size_t used = 0;
	uint8_t *buf = malloc(cap + 1);
	int rc;

	*out = NULL;
	*outlen = 0;
	if (buf == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	memset(&zs, 0, sizeof(zs));
	/* 16 + MAX_WBITS: a gzip wrapper, not zlib's */
	if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
		free(buf);
		snprintf(err, errlen, "cannot start zlib");
		return -1;
	}
	zs.next_in = (Bytef *)in;
	zs.avail_in = (uInt)len;
	for (;;) {
		if (used == cap) {
			uint8_t *grown;

			if (cap >= max_out) {
				snprintf(err, errlen,
					 "gzip data expands past %zu bytes",
					 max_out);
				goto fail;
			}
			cap = cap * 2 < max_out ? cap * 2 : max_out;
			grown = realloc(buf, cap + 1);
			if (grown == NULL) {
				snprintf(err, errlen, "out of memory");
				goto fail;
			}
			buf = grown;
		}
		zs.next_out = buf + used;
		zs.avail_out = (uInt)(cap - used);
		rc = inflate(&zs, Z_NO_FLUSH);
		used = cap - zs.avail_out;
		if (rc == Z_STREAM_END) {
			if (zs.avail_in == 0)
				break;
			/* another gzip member follows */
			if (inflateReset(&zs) != Z_OK)
				goto corrupt;
			continue;
		}
		if (rc != Z_OK && rc != Z_BUF_ERROR)
			goto corrupt;
		if (rc == Z_BUF_ERROR && zs.avail_in == 0)
			goto corrupt; /* input ended inside a member */
	}
	inflateEnd(&zs);
	*out = buf;
	*outlen = used;
	return 0;
corrupt:
	snprintf(err, errlen, "invalid gzip data: %s",
		 zs.msg != NULL ? zs.msg : "truncated");
fail:
	inflateEnd(&zs);
	free(buf);
	return -1;
}

static unsigned long long
octal(const char *p, size_t n)
{
	unsigned long long v = 0;

	for (size_t i = 0; i < n && p[i] != '\0' && p[i] != ' '; i++) {
		if (p[i] < '0' || p[i] > '7')
			return 0;
		v = v * 8 + (unsigned long long)(p[i] - '0');
	}
	return v;
}

static int
checksum_ok(const uint8_t *h)
{
	unsigned long sum = 0;

	for (int i = 0; i < TAR_BLOCK; i++)
		sum += (i >= 148 && i < 156) ? ' ' : h[i];
	return sum == octal((const char *)h + 148, 8);
}

/* Normalize name in place: drop "./" components and repeated '/'.  Returns
 * -1 for an absolute name or a ".." component. */
static int
clean_name(char *name)
{
	char out[PATH_MAX];
	size_t o = 0;
	char *save = NULL, *part;

	if (name[0] == '/')
		return -1;
	for (part = strtok_r(name, "/", &save); part != NULL;
	     part = strtok_r(NULL, "/", &save)) {
		if (strcmp(part, ".") == 0)
			continue;
		if (strcmp(part, "..") == 0)
			return -1;
		size_t n = strlen(part);
		if (o + n + 2 >= sizeof(out))
			return -1;
		if (o > 0)
			out[o++] = '/';
		memcpy(out + o, part, n);
		o += n;
	}
	out[o] = '\0';
	strcpy(name, out);
	return 0;
}

/* Whether link target, seen from the entry's directory, stays inside the
 * extraction root (a lexical check). */
static int
link_stays_inside(const char *entry, const char *target)
{
	char path[PATH_MAX];
	const char *slash = strrchr(entry, '/');
	int depth = 0;

	if (target[0] == '/')
		return 0;
	int n = snprintf(path, sizeof(path), "%.*s%s%s",
			 slash != NULL ? (int)(slash - entry) : 0, entry,
			 slash != NULL ? "/" : "", target);

	if (n < 0 || (size_t)n >= sizeof(path))
		return 0;
	char *save = NULL;
	for (char *part = strtok_r(path, "/", &save); part != NULL;
	     part = strtok_r(NULL, "/", &save)) {
		if (strcmp(part, "..") == 0)
			depth--;
		else if (strcmp(part, ".") != 0)
			depth++;
		if (depth < 0)
			return 0;
	}
	return 1;
}

static int
join_path(char *out, size_t outlen, const char *root, const char *rel,
	  char *err, size_t errlen)
{
	int n = snprintf(out, outlen, "%s/%s", root, rel);

	if (n < 0 || (size_t)n >= outlen) {
		snprintf(err, errlen, "path too long: %s/%s", root, rel);
		return -1;
	}
	return 0;
}

/* Create the parent directories of rel under root, refusing to pass through
 * a symbolic link. */
static int
make_parents(const char *root, const char *rel, char *err, size_t errlen)
{
	char path[PATH_MAX];
	size_t rootlen = strlen(root);
	struct stat st;

	if (join_path(path, sizeof(path), root, rel, err, errlen) != 0)
		return -1;
	for (char *p = path + rootlen + 1; (p = strchr(p, '/')) != NULL; p++) {
		*p = '\0';
		if (lstat(path, &st) == 0) {
			if (S_ISLNK(st.st_mode) || !S_ISDIR(st.st_mode)) {
				snprintf(err, errlen,
					 "%s: a parent is not a directory or is a "
					 "symbolic link",
					 rel);
				return -1;
			}
		} else if (mkdir(path, 0755) != 0 && errno != EEXIST) {
			snprintf(err, errlen, "cannot create %s: %s", path,
				 strerror(errno));
			return -1;
		}
		*p = '/';
	}
	return 0;
}

static int
write_file(const char *root, const char *rel, const uint8_t *data, size_t len,
	   unsigned mode, char *err, size_t errlen)
{
	char path[PATH_MAX];
	int fd;

	if (make_parents(root, rel, err, errlen) != 0 ||
	    join_path(path, sizeof(path), root, rel, err, errlen) != 0)
		return -1;
	/* O_NOFOLLOW: an existing link is not written through. */
	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW,
		  (mode & 0777) | 0600);
	if (fd < 0) {
		snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
		return -1;
	}
	for (size_t off = 0; off < len;) {
		ssize_t n = write(fd, data + off, len - off);

		if (n < 0) {
			snprintf(err, errlen, "cannot write %s: %s", path,
				 strerror(errno));
			close(fd);
			return -1;
		}
		off += (size_t)n;
	}
	return close(fd);
}

/* Create target and its missing parents, as "mkdir -p" does. */
static int
mkdir_parents_of_target(const char *target, char *err, size_t errlen)
{
	char path[PATH_MAX];
	int n = snprintf(path, sizeof(path), "%s/", target);

	if (n < 0 || (size_t)n >= sizeof(path)) {
		snprintf(err, errlen, "path too long: %s", target);
		return -1;
	}
	for (char *p = path + 1; (p = strchr(p, '/')) != NULL; p++) {
		*p = '\0';
		if (mkdir(path, 0755) != 0 && errno != EEXIST) {
			snprintf(err, errlen, "cannot create %s: %s", path,
				 strerror(errno));
			return -1;
		}
		*p = '/';
	}
	return 0;
}

/* Read "path" and "linkpath" records of a pax extended header. */
static void
pax_records(const uint8_t *p, size_t len, char *path, char *linkpath)
{
	size_t off = 0;

	while (off < len) {
		unsigned long reclen = strtoul((const char *)p + off, NULL, 10);
		const char *space = memchr(p + off, ' ', len - off);

		if (reclen == 0 || off + reclen > len || space == NULL)
			return;
		const char *kv = space + 1;
		size_t kvlen = (size_t)((const char *)p + off + reclen - kv) - 1;

		if (kvlen > 5 && strncmp(kv, "path=", 5) == 0 && kvlen - 5 < PATH_MAX)
			snprintf(path, PATH_MAX, "%.*s", (int)(kvlen - 5), kv + 5);
		else if (kvlen > 9 && strncmp(kv, "linkpath=", 9) == 0 &&
			 kvlen - 9 < PATH_MAX)
			snprintf(linkpath, PATH_MAX, "%.*s", (int)(kvlen - 9), kv + 9);
		off += reclen;
	}
}

long
tarx_extract(const uint8_t *tar, size_t len, const char *target,
	     const char *strip_prefix, char *err, size_t errlen)
{
	char long_name[PATH_MAX] = "", long_link[PATH_MAX] = "";
	size_t off = 0, prefix_len = strip_prefix ? strlen(strip_prefix) : 0;
	long files = 0;

	if (mkdir_parents_of_target(target, err, errlen) != 0)
		return -1;
	while (off + TAR_BLOCK <= len) {
		const uint8_t *h = tar + off;
		char name[PATH_MAX], linkname[PATH_MAX];
		unsigned long long size;
		char type;

		if (h[0] == '\0')
			break; /* the end-of-archive blocks */
		if (!checksum_ok(h)) {
			snprintf(err, errlen, "invalid tar header at byte %zu", off);
			return -1;
		}
		size = octal((const char *)h + 124, 12);
		type = (char)h[156];
		if (size > len - off - TAR_BLOCK) {
			snprintf(err, errlen, "tar entry at byte %zu is truncated", off);
			return -1;
		}
		const uint8_t *data = h + TAR_BLOCK;
		size_t next = off + TAR_BLOCK + ((size + TAR_BLOCK - 1) / TAR_BLOCK) * TAR_BLOCK;

		if (type == 'x' || type == 'L' || type == 'K') {
			if (type == 'x')
				pax_records(data, size, long_name, long_link);
			else
				snprintf(type == 'L' ? long_name : long_link,
					 PATH_MAX, "%.*s", (int)size, (const char *)data);
			off = next;
			continue;
		}
		if (type == 'g') { /* global pax header: nothing we use */
			off = next;
			continue;
		}
		if (long_name[0] != '\0') {
			snprintf(name, sizeof(name), "%s", long_name);
		} else if (memcmp(h + 257, "ustar", 5) == 0 && h[345] != '\0') {
			snprintf(name, sizeof(name), "%.155s/%.100s",
				 (const char *)h + 345, (const char *)h);
		} else {
			snprintf(name, sizeof(name), "%.100s", (const char *)h);
		}
		if (long_link[0] != '\0')
			snprintf(linkname, sizeof(linkname), "%s", long_link);
		else
			snprintf(linkname, sizeof(linkname), "%.100s",
				 (const char *)h + 157);
		long_name[0] = long_link[0] = '\0';
		off = next;

		char shown[PATH_MAX];
		snprintf(shown, sizeof(shown), "%s", name);
		if (clean_name(name) != 0) {
			snprintf(err, errlen,
				 "unsafe tar entry \"%s\": absolute or with '..'",
				 shown);
			return -1;
		}
		/* Keep only entries under the prefix, without it. */
		const char *rel = name;
		if (prefix_len > 0) {
			size_t plen = prefix_len;
			while (plen > 0 && strip_prefix[plen - 1] == '/')
				plen--;
			if (strncmp(name, strip_prefix, plen) != 0 ||
			    (name[plen] != '/' && name[plen] != '\0'))
				continue;
			rel = name[plen] == '/' ? name + plen + 1 : name + plen;
		}
		if (*rel == '\0')
			continue; /* the prefix directory itself */

		char path[PATH_MAX];
		if (join_path(path, sizeof(path), target, rel, err, errlen) != 0)
			return -1;
		switch (type) {
		case '0':
		case '\0':
		case '7':
			if (write_file(target, rel, data, size,
				       (unsigned)octal((const char *)h + 100, 8),
				       err, errlen) != 0)
				return -1;
			files++;
			break;
		case '5':
			if (make_parents(target, rel, err, errlen) != 0)
				return -1;
			if (mkdir(path, 0755) != 0 && errno != EEXIST) {
				snprintf(err, errlen, "cannot create %s: %s", path,
					 strerror(errno));
				return -1;
			}
			break;
		case '2':
		case '1':
			if (!link_stays_inside(name, linkname) ||
			    (type == '1' && linkname[0] == '/')) {
				snprintf(err, errlen,
					 "unsafe tar entry \"%s\": its link to "
					 "\"%s\" leaves the target directory",
					 shown, linkname);
				return -1;
			}
			if (make_parents(target, rel, err, errlen) != 0)
				return -1;
			unlink(path);
			if (type == '2' ? symlink(linkname, path) != 0 : 0) {
				snprintf(err, errlen, "cannot create link %s: %s",
					 path, strerror(errno));
				return -1;
			}
			if (type == '1') {
				char from[PATH_MAX], linkrel[PATH_MAX];

				snprintf(linkrel, sizeof(linkrel), "%s", linkname);
				if (clean_name(linkrel) != 0 ||
				    (prefix_len > 0 &&
				     strncmp(linkrel, strip_prefix, prefix_len - 1) != 0)) {
					snprintf(err, errlen,
						 "unsafe tar entry \"%s\": hard link "
						 "to \"%s\"", shown, linkname);
					return -1;
				}
				if (join_path(from, sizeof(from), target,
					      linkrel + prefix_len, err, errlen) != 0)
					return -1;
				if (link(from, path) != 0) {
					snprintf(err, errlen,
						 "cannot create link %s: %s", path,
						 strerror(errno));
					return -1;
				}
			}
			break;
		default:
			/* devices, FIFOs and the like have no place here */
			snprintf(err, errlen,
				 "unsupported tar entry \"%s\" of type '%c'", shown,
				 type);
			return -1;
		}
	}
	return files;
}
