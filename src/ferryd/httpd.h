/* ferryd/httpd.h - ferryd's one small HTTP interface (libmicrohttpd behind it).
 *
 * The routes see a ferryd_request (method, path, raw query, two headers, the whole body) and
 * fill a ferryd_response; no libmicrohttpd type crosses this header. The server enforces the
 * limits before a route runs: a body larger than max_body is refused with 413 from its
 * Content-Length before any of it is read, and while reading a chunked body; headers larger
 * than the connection memory limit are refused by libmicrohttpd itself.
 *
 * Threads: one libmicrohttpd daemon per listener, each with `threads` epoll event threads that
 * share its connections, and one pool of `workers` threads for every listener. A route first
 * runs on an event thread (may_block false), which serves many connections and so must never
 * wait for I/O: a route that would have to (a key-set fetch, a disk sync) sets resp->defer and
 * returns; the server then suspends the connection and runs the route again on a worker thread
 * (may_block true), so a slow issuer stalls only the requests that need it. Connections are
 * capped overall and per IP. Design note: docs/internals/ferryd.md.
 */
#ifndef FERRYD_HTTPD_H
#define FERRYD_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FERRYD_REASON_MAX 320

typedef struct ferryd_request {
    const char *method;
    const char *path;         /* without the query */
    const char *query;        /* what follows '?', NULL when the target has no '?' */
    const char *content_type; /* NULL when absent */
    const char *authorization; /* the first Authorization header, NULL when absent */
    unsigned n_authorization;  /* how many Authorization headers the request carried */
    unsigned n_content_type;   /* how many Content-Type headers (content_type is the first) */
    /* Who is calling, for per-address limits and logs: "ipv4:A.B.C.D", "ipv6:ADDR" (the
     * textual address; an IPv4-mapped IPv6 address counts as IPv4), "uid:N" for a unix socket
     * peer (SO_PEERCRED), or "unknown". */
    const char *client;
    const char *body;         /* NUL-terminated copy (may hold NUL bytes before body_len) */
    size_t body_len;
    /* The handler is first called with headers_only set as soon as the request line and
     * headers are in, before any body byte is read (no body, no Content-Type or Authorization
     * yet): it may answer at once by setting resp->status (e.g. 429), or leave the status 0 to
     * let the request go on. It is then called again with the whole request and admitted set
     * (whatever the first call had to check was checked). */
    bool headers_only;
    bool admitted;
    /* false on an event thread: the route must not wait for I/O; when it would have to, it sets
     * resp->defer (and nothing else) and is called again on a worker thread with may_block
     * true. The headers_only call is never deferred. */
    bool may_block;
} ferryd_request;

typedef struct ferryd_response {
    int status;
    char *body; /* malloc'd, owned by the server after the handler returns */
    size_t body_len;
    const char *content_type;       /* static */
    bool no_store;                  /* Cache-Control: no-store, Pragma: no-cache */
    bool wipe;                      /* wipe the body after it was sent */
    const char *allow;              /* static: Allow header (405) or NULL */
    const char *www_authenticate;   /* static: WWW-Authenticate header (401, 403) or NULL */
    int64_t retry_after;            /* seconds, 0 = no Retry-After */
    char reason[FERRYD_REASON_MAX]; /* for the request log line only; never token material */
    const char *outcome; /* static label of the decision ("ok" or an RFC error name), or NULL */
    bool defer; /* (may_block false only) run this request again on a worker thread; nothing
                   else of the response is looked at */
} ferryd_response;

typedef void (*ferryd_handler_fn)(void *userdata, const ferryd_request *req, ferryd_response *resp);

/* What the server reports of each request when it is complete (for metrics). Every string is
 * borrowed for the duration of the call only. */
typedef struct ferryd_request_done {
    const char *method;  /* "-" when libmicrohttpd answered by itself (e.g. 431) */
    const char *path;    /* decoded path, printable, at most 128 bytes; "-" likewise */
    int status;          /* the status we queued; 0 when libmicrohttpd answered by itself or
                            the connection closed before an answer */
    const char *outcome; /* the response's static outcome label, or NULL */
    int64_t duration_ns; /* from the request line to completion */
    bool completed;      /* false when the connection ended otherwise than normally */
} ferryd_request_done;

/* Optional hooks: started() when a request line arrives (before any route), finished() when
 * libmicrohttpd reports the request complete. Both run on connection threads, concurrently;
 * they must be thread-safe and quick (they are on every request's path). */
typedef struct ferryd_observer {
    void (*started)(void *userdata);
    void (*finished)(void *userdata, const ferryd_request_done *done);
    void *userdata;
} ferryd_observer;

typedef struct ferryd_httpd_limits {
    size_t max_body;             /* bytes */
    size_t max_header;           /* connection memory limit (bytes) */
    unsigned connections;        /* per listener */
    unsigned connections_per_ip; /* per TCP listener; 0 = no per-IP limit */
    unsigned timeout_s;          /* idle connection timeout */
    unsigned request_timeout_s;  /* a connection must complete a request within this many
                                    seconds of opening or of its previous response, whatever
                                    trickles in meanwhile (slowloris); 0 = none */
    unsigned threads;            /* event threads per listener; 0 = the CPUs this process may
                                    run on (its affinity mask) */
    unsigned workers;            /* threads for deferred requests (all listeners) */
    unsigned worker_queue;       /* deferred requests waiting for a worker at most; past it the
                                    request is answered 503 with Retry-After */
} ferryd_httpd_limits;

typedef struct ferryd_httpd ferryd_httpd;

/* Start serving on every listen address ("HOST:PORT", "[V6]:PORT" or "unix:PATH"); a stale
 * unix socket file is replaced. observer (copied) may be NULL. Returns 0, or a negative errno
 * with errbuf naming the address. */
int ferryd_httpd_start(const char *const *listen, size_t n_listen,
                       const ferryd_httpd_limits *limits, ferryd_handler_fn handler, void *userdata,
                       const ferryd_observer *observer, ferryd_httpd **ret, char *errbuf,
                       size_t errlen);

/* Check the syntax of one listen address (nothing is opened). Returns 0 or -EINVAL with a
 * reason in errbuf. */
int ferryd_httpd_check_address(const char *addr, char *errbuf, size_t errlen);

/* The worker pool's counters (for /metrics). */
typedef struct ferryd_httpd_stats {
    uint64_t deferred;         /* requests handed to a worker since start */
    uint64_t deferred_refused; /* requests that would have been, answered 503 instead (queue
                                  full, or the server stopping) */
    size_t waiting;            /* deferred requests waiting for a worker now */
    size_t running;            /* deferred requests a worker is running now */
} ferryd_httpd_stats;

/* A consistent snapshot of the pool's counters; all 0 for NULL. Thread-safe. */
void ferryd_httpd_get_stats(ferryd_httpd *h, ferryd_httpd_stats *out);

/* Stop accepting new connections (listeners closed, unix socket files removed). */
void ferryd_httpd_quiesce(ferryd_httpd *h);

/* Wait until no request is in flight or timeout_ms passed. Returns the number still running. */
unsigned ferryd_httpd_drain(ferryd_httpd *h, unsigned timeout_ms);

/* Stop every daemon and free. Accepts NULL. */
void ferryd_httpd_free(ferryd_httpd *h);

#endif
