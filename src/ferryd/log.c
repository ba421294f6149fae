/* ferryd/log.c - structured log lines on stderr or to syslog. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "ferryd/log.h"

#define IDENT_MAX 64

static atomic_bool use_syslog;
/* openlog keeps the pointer: the ident lives here. Written only while use_syslog is false. */
static char syslog_ident[IDENT_MAX + 1];

static int priority_of(const json_t *obj)
{
    static const struct {
        const char *level;
        int priority;
    } map[] = {
        {"critical", LOG_CRIT}, {"error", LOG_ERR}, {"warning", LOG_WARNING},
        {"notice", LOG_NOTICE}, {"info", LOG_INFO}, {"debug", LOG_DEBUG},
    };
    const char *level = json_string_value(json_object_get(obj, "level"));
    for (size_t i = 0; level && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(level, map[i].level) == 0)
            return map[i].priority;
    return LOG_NOTICE;
}

void ferryd_log_use_syslog(int facility, const char *ident)
{
    if (atomic_load(&use_syslog)) {
        atomic_store(&use_syslog, false);
        closelog();
    }
    snprintf(syslog_ident, sizeof(syslog_ident), "%s", ident && ident[0] ? ident : "ferryd");
    openlog(syslog_ident, LOG_PID | LOG_NDELAY, facility);
    atomic_store(&use_syslog, true);
}

void ferryd_log_use_stderr(void)
{
    if (atomic_exchange(&use_syslog, false))
        closelog();
}

void ferryd_log_json(json_t *obj)
{
    struct timespec ts;
    struct tm tm;
    char stamp[40];
    char *line;
    int priority = LOG_NOTICE;

    if (!obj)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    if (strftime(stamp, sizeof(stamp) - 8, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
        stamp[0] = '\0';
    else
        snprintf(stamp + 19, sizeof(stamp) - 19, ".%06ldZ", ts.tv_nsec / 1000);
    json_t *out = json_object();
    if (out) {
        json_object_set_new(out, "ts", json_string(stamp));
        json_object_update(out, obj);
        line = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
        json_decref(out);
    } else {
        line = NULL;
    }
    priority = priority_of(obj);
    json_decref(obj);
    if (atomic_load(&use_syslog)) {
        /* The line is ASCII JSON (JSON_ENSURE_ASCII): no control bytes reach syslog. */
        syslog(priority, "%s",
               line ? line : "{\"level\":\"error\",\"msg\":\"log line could not be built\"}");
        free(line);
        return;
    }
    if (!line) {
        fputs("{\"level\":\"error\",\"msg\":\"log line could not be built\"}\n", stderr);
        return;
    }
    flockfile(stderr);
    fputs(line, stderr);
    fputc('\n', stderr);
    fflush(stderr);
    funlockfile(stderr);
    free(line);
}

void ferryd_log(const char *level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *obj = json_pack("{s:s, s:s}", "level", level, "msg", msg);
    if (!obj) {
        /* Not UTF-8 (e.g. a file name): keep the line, with such bytes shown as '?'. */
        for (char *p = msg; *p; p++)
            if ((unsigned char)*p >= 0x80 || (unsigned char)*p < 0x20)
                *p = '?';
        obj = json_pack("{s:s, s:s}", "level", level, "msg", msg);
    }
    ferryd_log_json(obj);
}
