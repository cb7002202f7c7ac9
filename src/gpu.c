#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "gpu.h"

int
gpu_parse(const char *text, struct gpu_request *gpu, char *err, size_t errlen)
{
	const char *colon = strchr(text, ':');
	size_t type_len = colon != NULL ? (size_t)(colon - text) : strlen(text);

	memset(gpu, 0, sizeof(*gpu));
	if (type_len == 0 || type_len >= sizeof(gpu->type)) {
		snprintf(err, errlen,
			 "invalid GPU \"%s\": expected TYPE or TYPE:COUNT, such "
			 "as \"A100\" or \"H100:8\"",
			 text);
		return -1;
	}
	for (size_t i = 0; i < type_len; i++) {
		unsigned char c = (unsigned char)text[i];

		/* Modal's names use letters, digits, '-', and the '!' and '+'
		 * suffixes ("H100!", "B200+"). */
		if (!isalnum(c) && c != '-' && c != '!' && c != '+') {
			snprintf(err, errlen,
				 "invalid GPU \"%s\": the type may contain "
				 "letters, digits, '-', '!' and '+' only",
				 text);
			return -1;
		}
		gpu->type[i] = (char)toupper(c);
	}
	gpu->count = 1;
	if (colon != NULL) {
		const char *p = colon + 1;
		unsigned long n = 0;

		if (*p == '\0' || strlen(p) > 2)
			goto bad_count;
		for (; *p != '\0'; p++) {
			if (!isdigit((unsigned char)*p))
				goto bad_count;
			n = n * 10 + (unsigned long)(*p - '0');
		}
		if (n < 1 || n > GPU_COUNT_MAX)
			goto bad_count;
		gpu->count = (unsigned)n;
	}
	return 0;
bad_count:
	snprintf(err, errlen,
		 "invalid GPU \"%s\": the count after ':' must be a whole number "
		 "from 1 to %d",
		 text, GPU_COUNT_MAX);
	return -1;
}
