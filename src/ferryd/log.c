/* ferryd/log.c - structured log lines on stderr or to syslog. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "basic/utf8.h"
#include "ferryd/log.h"

#define IDENT_MAX 64
/* "YYYY-MM-DDTHH:MM:SS.uuuuuuZ" and room for a longer year */
#define STAMP_MAX 40
/* {"ts":"<stamp>", */
#define PREFIX_MAX (STAMP_MAX + 16)
/* The request line's members: level, msg, method (15), path (128), status, duration_us, reason
 * (FERRYD_REASON_MAX - 1 bytes, 6 bytes an escaped byte at most), terminated; with room. */
#define LINE_MAX_MEMBERS 4096

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

/* RFC 3339 UTC with microseconds, or "" when the clock is out of strftime's reach. The part
 * up to the second is formatted once a second per thread. */
static void stamp_now(char stamp[STAMP_MAX])
{
    static _Thread_local time_t cached_sec = -1;
    static _Thread_local char cached[STAMP_MAX];
    static _Thread_local size_t cached_len;
    struct timespec ts;
    struct tm tm;
    long us;

    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != cached_sec) {
        cached_len = gmtime_r(&ts.tv_sec, &tm)
                         ? strftime(cached, sizeof(cached) - 9, "%Y-%m-%dT%H:%M:%S", &tm)
                         : 0;
        cached_sec = ts.tv_sec;
    }
    if (cached_len == 0) {
        stamp[0] = '\0';
        return;
    }
    memcpy(stamp, cached, cached_len);
    us = ts.tv_nsec / 1000;
    char *p = stamp + cached_len;
    *p++ = '.';
    for (int i = 5; i >= 0; i--, us /= 10)
        p[i] = (char)('0' + us % 10);
    p[6] = 'Z';
    p[7] = '\0';
}

/* One finished line (no newline) to syslog or stderr. */
static void emit(int priority, const char *line, size_t len)
{
    if (atomic_load(&use_syslog)) {
        /* The line is ASCII JSON: no control bytes reach syslog. */
        syslog(priority, "%.*s", (int)len, line);
        return;
    }
    flockfile(stderr);
    fwrite(line, 1, len, stderr);
    fputc('\n', stderr);
    fflush(stderr);
    funlockfile(stderr);
}

void ferryd_log_json(json_t *obj)
{
    char stamp[STAMP_MAX];
    char *line;
    int priority = LOG_NOTICE;

    if (!obj)
        return;
    stamp_now(stamp);
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
    if (!line) {
        static const char fallback[] =
            "{\"level\":\"error\",\"msg\":\"log line could not be built\"}";
        emit(priority, fallback, sizeof(fallback) - 1);
        return;
    }
    emit(priority, line, strlen(line));
    free(line);
}

/* The request line, written member by member into one buffer whose first PREFIX_MAX bytes are
 * kept for {"ts":"<stamp>", (placed right before the members once they are known). A member
 * that would not fit is left out whole. */
typedef struct line_wr {
    char buf[PREFIX_MAX + LINE_MAX_MEMBERS + 2];
    size_t n; /* end of the members, from PREFIX_MAX */
} line_wr;

static bool lw_raw(line_wr *w, const char *s, size_t len)
{
    if (len > sizeof(w->buf) - 2 - w->n)
        return false;
    memcpy(w->buf + w->n, s, len);
    w->n += len;
    return true;
}

/* ,"key":"value" (key is trusted text without escapes; the first member has no comma). The
 * value is ASCII JSON; one that is not UTF-8 leaves the member out (jansson's json_string
 * refused it). */
static void lw_str(line_wr *w, const char *key, const char *value)
{
    size_t start = w->n, len = strlen(value), q;

    if ((w->n > PREFIX_MAX && !lw_raw(w, ",", 1)) || !lw_raw(w, "\"", 1) ||
        !lw_raw(w, key, strlen(key)) || !lw_raw(w, "\":", 2))
        goto drop;
    q = ferry_json_quote(w->buf + w->n, sizeof(w->buf) - 2 - w->n, value, len,
                         FERRY_JSON_QUOTE_ASCII);
    if (q > sizeof(w->buf) - 2 - w->n) /* SIZE_MAX included */
        goto drop;
    w->n += q;
    return;
drop:
    w->n = start;
}

static void lw_int(line_wr *w, const char *key, int64_t v)
{
    char t[64];
    int k =
        snprintf(t, sizeof(t), "%s\"%s\":%lld", w->n > PREFIX_MAX ? "," : "", key, (long long)v);
    if (k > 0 && (size_t)k < sizeof(t))
        (void)lw_raw(w, t, (size_t)k);
}

void ferryd_log_request(const char *method, const char *path, int status, int64_t duration_us,
                        const char *reason, int terminated)
{
    line_wr w; /* 4 KiB on the connection thread's stack (default size: no stack limit set) */
    char stamp[STAMP_MAX];
    char prefix[PREFIX_MAX];
    int plen;

    w.n = PREFIX_MAX;
    lw_str(&w, "level", "info");
    lw_str(&w, "msg", "request");
    lw_str(&w, "method", method && method[0] ? method : "-");
    lw_str(&w, "path", path && path[0] ? path : "-");
    lw_int(&w, "status", status);
    lw_int(&w, "duration_us", duration_us);
    if (reason && reason[0])
        lw_str(&w, "reason", reason);
    if (terminated >= 0)
        lw_int(&w, "terminated", terminated);
    w.buf[w.n++] = '}';

    stamp_now(stamp);
    /* The stamp is digits and punctuation: no escapes. */
    plen = snprintf(prefix, sizeof(prefix), "{\"ts\":\"%s\",", stamp);
    if (plen <= 0 || (size_t)plen >= sizeof(prefix))
        return;
    memcpy(w.buf + PREFIX_MAX - plen, prefix, (size_t)plen);
    emit(LOG_INFO, w.buf + PREFIX_MAX - plen, w.n - (PREFIX_MAX - (size_t)plen));
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
