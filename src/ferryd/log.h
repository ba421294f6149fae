/* ferryd/log.h - structured log lines (one JSON object per line) on stderr or to syslog. */
#ifndef FERRYD_LOG_H
#define FERRYD_LOG_H

#include <stdint.h>

#include <jansson.h>

#include "basic/macro.h"

/* Write obj (stolen: decref'd) as one line, with "ts" (RFC 3339 UTC) added first: on stderr,
 * or, after ferryd_log_use_syslog, as the message of one syslog record whose priority comes
 * from obj's "level" (error, warning, notice, info, debug; anything else is notice).
 * Thread-safe; a line is never interleaved with another. */
void ferryd_log_json(json_t *obj);

/* The request log line, one per request, written straight out (no jansson):
 * {"ts", "level": "info", "msg": "request", "method", "path", "status", "duration_us",
 * "reason" (when not empty), "terminated" (when >= 0)}, ASCII JSON like every line here
 * (non-ASCII and control bytes escaped). method and path "" or NULL show as "-"; a reason
 * that is not UTF-8 is left out. Thread-safe. */
void ferryd_log_request(const char *method, const char *path, int status, int64_t duration_us,
                        const char *reason, int terminated);

/* {"level": level, "msg": formatted} */
void ferryd_log(const char *level, const char *fmt, ...) _printf_(2, 3);

/* Send log lines to syslog from now on: openlog(ident (copied, at most 64 bytes),
 * LOG_PID | LOG_NDELAY, facility). Call it from the main thread (start-up or reload). */
void ferryd_log_use_syslog(int facility, const char *ident);

/* Back to stderr (closelog). */
void ferryd_log_use_stderr(void);

#endif
