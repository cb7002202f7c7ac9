#ifndef MFMODAL_GPU_H
#define MFMODAL_GPU_H

#include <stddef.h>

#define GPU_TYPE_MAX 32
#define GPU_COUNT_MAX 8

struct gpu_request {
	char type[GPU_TYPE_MAX]; /* upper-cased, e.g. "A100-80GB"; "" for none */
	unsigned count;
};

/* Parse a GPU string with the grammar of Modal's clients: TYPE[:COUNT],
 * case-insensitive, COUNT from 1 to 8 (default 1).  The type name itself is
 * left to the server to check, so new GPU types need no engine release; only
 * its characters are checked here.  Returns 0, or -1 with a message in err
 * that names the value. */
int gpu_parse(const char *text, struct gpu_request *gpu, char *err,
	      size_t errlen);

#endif
