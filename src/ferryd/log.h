/* ferryd/log.h - structured log lines on stderr (one JSON object per line). */
#ifndef FERRYD_LOG_H
#define FERRYD_LOG_H

#include <jansson.h>

#include "basic/macro.h"

/* Write obj (stolen: decref'd) as one line on stderr, with "ts" (RFC 3339 UTC) added first.
 * Thread-safe; a line is never interleaved with another. */
void ferryd_log_json(json_t *obj);

/* {"level": level, "msg": formatted} */
void ferryd_log(const char *level, const char *fmt, ...) _printf_(2, 3);

#endif
