/* Fuzz target: any bytes as a configuration file load or fail with one line. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "xmalloc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = xmalloc(size + 1), *cause = NULL;
	struct conf *conf = NULL;

	memcpy(text, data, size);
	text[size] = '\0';
	if (conf_load_string("fuzz.conf", text, &conf, &cause) == 0) {
		if (conf == NULL || cause != NULL)
			abort();
		conf_free(conf);
	} else if (conf != NULL || cause == NULL || strchr(cause, '\n') != NULL)
		abort();
	free(cause);
	free(text);
	return 0;
}
