/* ferryd/log.h - structured log lines (one JSON object per line) on stderr or to syslog. */
#ifndef FERRYD_LOG_H
#define FERRYD_LOG_H

#include <jansson.h>

#include "basic/macro.h"

/* Write obj (stolen: decref'd) as one line, with "ts" (RFC 3339 UTC) added first: on stderr,
 * or, after ferryd_log_use_syslog, as the message of one syslog record whose priority comes
 * from obj's "level" (error, warning, notice, info, debug; anything else is notice).
 * Thread-safe; a line is never interleaved with another. */
void ferryd_log_json(json_t *obj);

/* {"level": level, "msg": formatted} */
void ferryd_log(const char *level, const char *fmt, ...) _printf_(2, 3);

/* Send log lines to syslog from now on: openlog(ident (copied, at most 64 bytes),
 * LOG_PID | LOG_NDELAY, facility). Call it from the main thread (start-up or reload). */
void ferryd_log_use_syslog(int facility, const char *ident);

/* Back to stderr (closelog). */
void ferryd_log_use_stderr(void);

#endif
