/* ferryd/log.c - structured log lines on stderr. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ferryd/log.h"

void ferryd_log_json(json_t *obj)
{
    struct timespec ts;
    struct tm tm;
    char stamp[40];
    char *line;

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
    json_decref(obj);
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
