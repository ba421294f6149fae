/* ferryd/httpd.c - the HTTP interface of ferryd over libmicrohttpd (see httpd.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "basic/mem.h"
#include "ferryd/httpd.h"
#include "ferryd/log.h"

#define LOG_PATH_MAX 128
#define TARGET_MAX 8192
#define DISCARD_FACTOR 4
#define CLIENT_MAX 64

typedef struct listener {
    struct ferryd_httpd *h;
    struct MHD_Daemon *daemon;
    int fd;          /* listen socket (closed by us after quiesce or stop) */
    char *unix_path; /* unix socket file to remove, or NULL */
    char *name;      /* as configured */
} listener;

/* One open connection, for the request deadline. Created when libmicrohttpd reports the
 * connection started and freed when it reports it closed, which it does before closing the
 * socket: under conns_lock, fd is always this connection's own. The list links and cut change
 * under conns_lock; since and busy are written by the connection's event thread on every
 * request without a lock and read by the watchdog. */
typedef struct conn_track {
    struct conn_track *prev, *next;
    int fd;
    atomic_llong since; /* monotonic seconds: accepted, or the previous response completed */
    atomic_bool busy;   /* a complete request is being answered: no deadline */
    bool cut;           /* shut down by the watchdog (once) */
} conn_track;

static long long mono_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec;
}

typedef struct req_ctx req_ctx;

/* The workers: deferred requests wait in a bounded ring (FIFO) until a worker takes one. */
typedef struct worker_pool {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    req_ctx **ring;
    size_t cap, head, n;
    pthread_t *threads;
    size_t n_threads;
    bool stop;
    uint64_t deferred, refused; /* counters, under lock */
    size_t running;
} worker_pool;

struct ferryd_httpd {
    listener *ls;
    size_t n_ls;
    ferryd_httpd_limits limits;
    ferryd_handler_fn handler;
    void *userdata;
    ferryd_observer observer; /* all NULL when none */
    atomic_uint inflight;

    /* The request deadline: a watchdog thread shuts down connections that have not completed a
     * request within limits.request_timeout_s (slowloris; the idle timeout is reset by every
     * byte). */
    pthread_mutex_t conns_lock;
    pthread_cond_t watchdog_cond;
    conn_track *conns;
    bool watchdog_started, watchdog_stop;
    pthread_t watchdog;

    worker_pool pool;
    bool pool_started;
};

/* Per request: created by the URI callback (which sees the raw request target), freed by the
 * completion callback. A deferred request keeps its ferryd_request and gets its response in
 * resp from a worker; the connection stays suspended meanwhile, so libmicrohttpd neither
 * calls back nor completes it until the worker resumes it (done set first). */
struct req_ctx {
    struct ferryd_httpd *h;
    char *query; /* what follows the first '?' of the raw request target (at most
                    TARGET_MAX bytes kept), NULL when there is no '?' */
    struct timespec start;
    bool started;
    bool admitted; /* the headers_only call let the request go on */
    char client[CLIENT_MAX]; /* ferryd_request.client, found once per request */
    bool too_big;
    bool oom;
    size_t discarded; /* bytes of an oversized chunked body read and dropped */
    char *body;
    size_t body_len;
    size_t body_cap;   /* bytes of body, not counting the NUL kept after them */
    size_t body_hint;  /* Content-Length, 0 when absent (chunked) */
    int status;
    const char *outcome; /* static, from the response */
    char method[16];
    char path[LOG_PATH_MAX + 1];
    char reason[FERRYD_REASON_MAX];
    struct MHD_Connection *conn;
    bool deferred;
    atomic_bool done; /* the worker filled resp */
    ferryd_request req;
    ferryd_response resp;
};

typedef struct header_counts {
    unsigned authorization, content_type;
} header_counts;

static enum MHD_Result count_headers(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    header_counts *n = cls;
    (void)kind;
    (void)value;
    if (strcasecmp(key, MHD_HTTP_HEADER_AUTHORIZATION) == 0)
        n->authorization++;
    else if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_TYPE) == 0)
        n->content_type++;
    return MHD_YES;
}

/* The caller's address as a key (see ferryd_request.client). */
static void client_key(struct MHD_Connection *conn, char *out, size_t outlen)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    char text[INET6_ADDRSTRLEN];

    snprintf(out, outlen, "unknown");
    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        if (inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text)))
            snprintf(out, outlen, "ipv4:%s", text);
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            if (inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], text, sizeof(text)))
                snprintf(out, outlen, "ipv4:%s", text);
        } else if (inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text))) {
            snprintf(out, outlen, "ipv6:%s", text);
        }
    } else {
        ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct ucred cred;
        socklen_t len = sizeof(cred);
        if (ci && getsockopt(ci->connect_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
            len == sizeof(cred))
            snprintf(out, outlen, "uid:%u", (unsigned)cred.uid);
    }
}

/* A response body we own: wiped (when asked) and freed when libmicrohttpd is done with it. */
typedef struct owned_body {
    char *p;
    size_t len;
    bool wipe;
} owned_body;

static int64_t elapsed_ns(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)(now.tv_sec - start->tv_sec) * 1000000000 + (now.tv_nsec - start->tv_nsec);
}

static void copy_printable(char *dst, size_t dstlen, const char *src)
{
    size_t i = 0;
    for (; src && src[i] && i + 1 < dstlen; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? (char)c : '?';
    }
    dst[i] = '\0';
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    char clean[512];
    copy_printable(clean, sizeof(clean), msg);
    ferryd_log("warning", "httpd: %s", clean);
}

/* ---- the request deadline ------------------------------------------------------------------ */

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct ferryd_httpd *h = cls;
    conn_track *t = *socket_context;

    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        t = calloc(1, sizeof(*t));
        if (!t || !ci) {
            free(t); /* untracked: only the idle timeout applies to this connection */
            return;
        }
        t->fd = ci->connect_fd;
        atomic_init(&t->since, mono_seconds());
        atomic_init(&t->busy, false);
        pthread_mutex_lock(&h->conns_lock);
        t->next = h->conns;
        if (h->conns)
            h->conns->prev = t;
        h->conns = t;
        pthread_mutex_unlock(&h->conns_lock);
        *socket_context = t;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && t) {
        pthread_mutex_lock(&h->conns_lock);
        if (t->prev)
            t->prev->next = t->next;
        else
            h->conns = t->next;
        if (t->next)
            t->next->prev = t->prev;
        pthread_mutex_unlock(&h->conns_lock);
        free(t);
        *socket_context = NULL;
    }
}

/* A complete request is being answered (busy: no deadline), or was answered (the clock of the
 * next one starts). */
static void conn_busy(struct MHD_Connection *conn, bool busy)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    conn_track *t = ci ? ci->socket_context : NULL;

    if (!t)
        return;
    if (!busy)
        atomic_store_explicit(&t->since, mono_seconds(), memory_order_relaxed);
    atomic_store_explicit(&t->busy, busy, memory_order_release);
}

/* Once a second: shut down (both directions) every connection that has waited longer than
 * request_timeout_s for a complete request. libmicrohttpd's own thread for the connection then
 * sees the socket end and closes it as usual. */
static void *watchdog_main(void *arg)
{
    struct ferryd_httpd *h = arg;
    unsigned cut = 0;

    pthread_mutex_lock(&h->conns_lock);
    while (!h->watchdog_stop) {
        struct timespec until;
        long long now;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += 1;
        while (!h->watchdog_stop &&
               pthread_cond_timedwait(&h->watchdog_cond, &h->conns_lock, &until) == 0)
            ;
        if (h->watchdog_stop)
            break;
        now = mono_seconds();
        for (conn_track *t = h->conns; t; t = t->next) {
            if (atomic_load_explicit(&t->busy, memory_order_acquire) || t->cut ||
                now - atomic_load_explicit(&t->since, memory_order_relaxed) <
                    h->limits.request_timeout_s)
                continue;
            (void)shutdown(t->fd, SHUT_RDWR);
            t->cut = true;
            cut++;
        }
        if (cut) {
            pthread_mutex_unlock(&h->conns_lock);
            ferryd_log("warning",
                       "httpd: %u connections closed: no complete request within %u s", cut,
                       h->limits.request_timeout_s);
            cut = 0;
            pthread_mutex_lock(&h->conns_lock);
        }
    }
    pthread_mutex_unlock(&h->conns_lock);
    return NULL;
}

static int watchdog_start(struct ferryd_httpd *h)
{
    pthread_condattr_t ca;
    int r;

    if (h->limits.request_timeout_s == 0)
        return 0;
    if (pthread_condattr_init(&ca) != 0)
        return -ENOMEM;
    (void)pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    r = pthread_cond_init(&h->watchdog_cond, &ca);
    pthread_condattr_destroy(&ca);
    if (r != 0)
        return -r;
    r = pthread_create(&h->watchdog, NULL, watchdog_main, h);
    if (r != 0) {
        pthread_cond_destroy(&h->watchdog_cond);
        return -r;
    }
    h->watchdog_started = true;
    return 0;
}

static void watchdog_stop(struct ferryd_httpd *h)
{
    if (!h->watchdog_started)
        return;
    pthread_mutex_lock(&h->conns_lock);
    h->watchdog_stop = true;
    pthread_cond_signal(&h->watchdog_cond);
    pthread_mutex_unlock(&h->conns_lock);
    pthread_join(h->watchdog, NULL);
    pthread_cond_destroy(&h->watchdog_cond);
    h->watchdog_started = false;
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct ferryd_httpd *h = cls;
    (void)conn;
    req_ctx *rc = calloc(1, sizeof(*rc));
    if (!rc)
        return NULL;
    rc->h = h;
    clock_gettime(CLOCK_MONOTONIC, &rc->start);
    const char *q = uri ? strchr(uri, '?') : NULL;
    if (q) {
        rc->query = strndup(q + 1, TARGET_MAX);
        if (!rc->query)
            rc->oom = true;
    }
    atomic_fetch_add(&h->inflight, 1);
    if (h->observer.started)
        h->observer.started(h->observer.userdata);
    return rc;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct ferryd_httpd *h = cls;
    req_ctx *rc = *con_cls;
    if (!rc)
        return;
    *con_cls = NULL;
    conn_busy(conn, false);
    int64_t ns = elapsed_ns(&rc->start);
    if (h->observer.finished) {
        ferryd_request_done done = {
            .method = rc->method[0] ? rc->method : "-",
            .path = rc->path[0] ? rc->path : "-",
            .status = rc->status,
            .outcome = rc->outcome,
            .duration_ns = ns,
            .completed = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK,
        };
        h->observer.finished(h->observer.userdata, &done);
    }
    ferryd_log_request(rc->method, rc->path, rc->status, ns / 1000, rc->reason,
                       toe != MHD_REQUEST_TERMINATED_COMPLETED_OK ? (int)toe : -1);
    if (rc->body) {
        ferry_wipe(rc->body, rc->body_len);
        free(rc->body);
    }
    if (rc->resp.body) {
        /* A worker's answer the connection ended before sending (it may hold a token). */
        if (rc->resp.wipe)
            ferry_wipe(rc->resp.body, rc->resp.body_len);
        free(rc->resp.body);
    }
    free(rc->query);
    free(rc);
    atomic_fetch_sub(&h->inflight, 1);
}

static void free_owned(void *cls)
{
    owned_body *ob = cls;
    if (ob->wipe)
        ferry_wipe(ob->p, ob->len);
    free(ob->p);
    free(ob);
}

static enum MHD_Result send_response(struct MHD_Connection *conn, req_ctx *rc,
                                     ferryd_response *resp)
{
    struct MHD_Response *r;
    owned_body *ob = calloc(1, sizeof(*ob));
    char num[32];
    enum MHD_Result ret;

    if (!ob) {
        if (resp->wipe && resp->body)
            ferry_wipe(resp->body, resp->body_len);
        free(resp->body);
        resp->body = NULL; /* resp may be the request's own (rc->resp), freed again later */
        return MHD_NO;
    }
    ob->p = resp->body ? resp->body : strdup("");
    ob->len = resp->body ? resp->body_len : 0;
    ob->wipe = resp->wipe;
    resp->body = NULL;
    if (!ob->p) {
        free(ob);
        return MHD_NO;
    }
    r = MHD_create_response_from_buffer_with_free_callback_cls(ob->len, ob->p, free_owned, ob);
    if (!r) {
        free_owned(ob);
        return MHD_NO;
    }
    if (resp->content_type)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, resp->content_type);
    if (resp->no_store) {
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
        MHD_add_response_header(r, MHD_HTTP_HEADER_PRAGMA, "no-cache");
    }
    if (resp->allow)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, resp->allow);
    if (resp->www_authenticate)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, resp->www_authenticate);
    if (resp->retry_after > 0) {
        snprintf(num, sizeof(num), "%lld", (long long)resp->retry_after);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, num);
    }
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    rc->status = resp->status;
    rc->outcome = resp->outcome;
    if (resp->reason[0] && !rc->reason[0])
        snprintf(rc->reason, sizeof(rc->reason), "%s", resp->reason);
    ret = MHD_queue_response(conn, (unsigned)resp->status, r);
    MHD_destroy_response(r);
    return ret;
}

/* An RFC 6749 style JSON error the server itself answers. Returns 0 or -ENOMEM. */
static int fill_error(ferryd_response *resp, int status, const char *error, const char *desc,
                      const char *reason)
{
    json_t *doc = json_pack("{s:s, s:s}", "error", error, "error_description", desc);

    *resp = (ferryd_response){.status = status, .content_type = "application/json"};
    resp->body = doc ? json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(doc);
    if (!resp->body)
        return -ENOMEM;
    resp->body_len = strlen(resp->body);
    snprintf(resp->reason, sizeof(resp->reason), "%s", reason);
    return 0;
}

static enum MHD_Result send_simple(struct MHD_Connection *conn, req_ctx *rc, int status,
                                   const char *error, const char *desc, const char *reason)
{
    ferryd_response resp;

    if (fill_error(&resp, status, error, desc, reason) < 0)
        return MHD_NO;
    return send_response(conn, rc, &resp);
}

/* ---- deferred requests: the worker pool ----------------------------------------------------- */

/* The worker's answer when the server stops before a queued request ran. */
static void fill_unavailable(ferryd_response *resp, const char *reason)
{
    if (fill_error(resp, MHD_HTTP_SERVICE_UNAVAILABLE, "temporarily_unavailable",
                   "service temporarily unavailable; retry later", reason) == 0)
        resp->retry_after = 1;
    resp->no_store = true;
}

static void *worker_main(void *arg)
{
    struct ferryd_httpd *h = arg;
    worker_pool *p = &h->pool;

    for (;;) {
        req_ctx *rc;
        bool stopping;

        pthread_mutex_lock(&p->lock);
        while (p->n == 0 && !p->stop)
            pthread_cond_wait(&p->cond, &p->lock);
        if (p->n == 0) {
            pthread_mutex_unlock(&p->lock);
            return NULL;
        }
        rc = p->ring[p->head];
        p->head = (p->head + 1) % p->cap;
        p->n--;
        p->running++;
        stopping = p->stop;
        pthread_mutex_unlock(&p->lock);

        if (stopping) {
            fill_unavailable(&rc->resp, "server stopping: deferred request not run");
        } else {
            h->handler(h->userdata, &rc->req, &rc->resp);
            if (rc->resp.defer) { /* a route must not defer twice */
                free(rc->resp.body);
                if (fill_error(&rc->resp, MHD_HTTP_INTERNAL_SERVER_ERROR, "server_error",
                               "internal error", "route deferred on a worker thread") < 0)
                    rc->resp = (ferryd_response){.status = MHD_HTTP_INTERNAL_SERVER_ERROR};
            }
        }
        pthread_mutex_lock(&p->lock);
        p->running--;
        pthread_mutex_unlock(&p->lock);
        /* After this store the connection's event thread may use resp (once resumed). */
        atomic_store_explicit(&rc->done, true, memory_order_release);
        MHD_resume_connection(rc->conn);
    }
}

/* Suspend the connection and queue its request for a worker; when the queue is full, answer
 * 503 now. Runs in the access handler on the connection's event thread. */
static enum MHD_Result defer_request(struct ferryd_httpd *h, struct MHD_Connection *conn,
                                     req_ctx *rc)
{
    worker_pool *p = &h->pool;
    ferryd_response resp;

    pthread_mutex_lock(&p->lock);
    if (!h->pool_started || p->stop || p->n == p->cap) {
        bool stopping = p->stop;
        p->refused++;
        pthread_mutex_unlock(&p->lock);
        fill_unavailable(&resp, stopping ? "server stopping: request not deferred"
                                         : "deferred: worker queue full");
        if (!resp.body)
            return MHD_NO;
        return send_response(conn, rc, &resp);
    }
    rc->conn = conn;
    rc->deferred = true;
    rc->req.may_block = true;
    rc->resp = (ferryd_response){.status = MHD_HTTP_INTERNAL_SERVER_ERROR};
    /* Suspended before any worker can see it, so its resume cannot come first. */
    MHD_suspend_connection(conn);
    p->ring[(p->head + p->n) % p->cap] = rc;
    p->n++;
    p->deferred++;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
    return MHD_YES;
}

static int pool_start(struct ferryd_httpd *h)
{
    worker_pool *p = &h->pool;
    int r;

    p->cap = h->limits.worker_queue ? h->limits.worker_queue : 1;
    p->ring = calloc(p->cap, sizeof(*p->ring));
    p->threads = calloc(h->limits.workers ? h->limits.workers : 1, sizeof(*p->threads));
    if (!p->ring || !p->threads)
        return -ENOMEM;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    h->pool_started = true;
    for (unsigned i = 0; i < (h->limits.workers ? h->limits.workers : 1); i++) {
        r = pthread_create(&p->threads[i], NULL, worker_main, h);
        if (r != 0)
            return -r;
        p->n_threads++;
    }
    return 0;
}

void ferryd_httpd_get_stats(ferryd_httpd *h, ferryd_httpd_stats *out)
{
    *out = (ferryd_httpd_stats){0};
    if (!h || !h->pool_started)
        return;
    pthread_mutex_lock(&h->pool.lock);
    out->deferred = h->pool.deferred;
    out->deferred_refused = h->pool.refused;
    out->waiting = h->pool.n;
    out->running = h->pool.running;
    pthread_mutex_unlock(&h->pool.lock);
}

/* Every queued request is answered (503) and resumed, and every worker has returned, before
 * this returns: libmicrohttpd may then be stopped without a worker touching a connection.
 * The lock stays usable (an event thread may still defer, and is refused, or read the stats)
 * until pool_free, after libmicrohttpd stopped. */
static void pool_stop(struct ferryd_httpd *h)
{
    worker_pool *p = &h->pool;

    if (!h->pool_started)
        return;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (size_t i = 0; i < p->n_threads; i++)
        pthread_join(p->threads[i], NULL);
    p->n_threads = 0;
}

static void pool_free(struct ferryd_httpd *h)
{
    worker_pool *p = &h->pool;

    if (h->pool_started) {
        pthread_cond_destroy(&p->cond);
        pthread_mutex_destroy(&p->lock);
        h->pool_started = false;
    }
    free(p->threads);
    free(p->ring);
    p->threads = NULL;
    p->ring = NULL;
}

/* Event threads per listener: the configured count, or the CPUs this process may run on. */
static unsigned event_threads(const ferryd_httpd_limits *limits)
{
    cpu_set_t set;
    int n;

    if (limits->threads)
        return limits->threads;
    if (sched_getaffinity(0, sizeof(set), &set) != 0)
        return 1;
    n = CPU_COUNT(&set);
    return n < 1 ? 1 : n > 64 ? 64 : (unsigned)n;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct ferryd_httpd *h = cls;
    req_ctx *rc = *con_cls;
    (void)version;

    if (!rc)
        return MHD_NO; /* out of memory in on_uri: drop the connection */
    if (!rc->started) {
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        rc->started = true;
        copy_printable(rc->method, sizeof(rc->method), method);
        copy_printable(rc->path, sizeof(rc->path), url);
        if (rc->oom)
            return MHD_NO;
        if (cl) {
            long long n;
            /* libmicrohttpd has already refused a malformed Content-Length. */
            if (ferry_parse_int64(cl, &n) < 0 || n < 0 ||
                (unsigned long long)n > h->limits.max_body)
                return send_simple(conn, rc, MHD_HTTP_CONTENT_TOO_LARGE, "invalid_request",
                                   "request body too large", "body: Content-Length over limit");
            rc->body_hint = (size_t)n;
        }
        {
            /* Before any body byte is read: the handler may refuse now (rate limit). */
            ferryd_request pre = {.method = method,
                                  .path = url,
                                  .query = rc->query,
                                  .client = rc->client,
                                  .body = "",
                                  .headers_only = true};
            ferryd_response resp = {0};
            client_key(conn, rc->client, sizeof(rc->client));
            h->handler(h->userdata, &pre, &resp);
            if (resp.status != 0)
                return send_response(conn, rc, &resp);
            free(resp.body);
            rc->admitted = true;
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (rc->too_big) {
            /* libmicrohttpd (0.9.75) cannot answer in the middle of a body: the rest of an
             * oversized chunked body is read and dropped, up to DISCARD_FACTOR * max_body;
             * past that the connection is closed without an answer. */
            rc->discarded += n;
            if (rc->discarded > DISCARD_FACTOR * h->limits.max_body) {
                rc->status = MHD_HTTP_CONTENT_TOO_LARGE;
                snprintf(rc->reason, sizeof(rc->reason),
                         "body: chunked body far over limit, connection closed");
                return MHD_NO;
            }
            return MHD_YES;
        }
        if (n > h->limits.max_body - rc->body_len) {
            rc->too_big = true;
            rc->discarded = rc->body_len + n;
            if (rc->body) {
                ferry_wipe(rc->body, rc->body_len);
                free(rc->body);
                rc->body = NULL;
                rc->body_len = 0;
                rc->body_cap = 0;
            }
            return MHD_YES;
        }
        if (rc->body_len + n > rc->body_cap) {
            /* Sized by Content-Length when there is one; a chunked body grows by doubling (the
             * old copy wiped, never left behind by realloc), never past max_body. */
            size_t cap = rc->body_hint >= rc->body_len + n ? rc->body_hint : 2 * rc->body_cap;
            char *nb;
            if (cap < rc->body_len + n)
                cap = rc->body_len + n;
            if (cap < 1024)
                cap = 1024;
            if (cap > h->limits.max_body)
                cap = h->limits.max_body;
            nb = malloc(cap + 1);
            if (!nb)
                return MHD_NO;
            if (rc->body) {
                memcpy(nb, rc->body, rc->body_len);
                ferry_wipe(rc->body, rc->body_len);
                free(rc->body);
            }
            rc->body = nb;
            rc->body_cap = cap;
        }
        memcpy(rc->body + rc->body_len, upload_data, n);
        rc->body_len += n;
        return MHD_YES;
    }
    if (rc->too_big)
        return send_simple(conn, rc, MHD_HTTP_CONTENT_TOO_LARGE, "invalid_request",
                           "request body too large", "body: chunked body over limit");
    if (rc->deferred) {
        /* Called again once a worker resumed the connection: its answer. (The connection stays
         * suspended until then, so this is not reached earlier.) */
        if (!atomic_load_explicit(&rc->done, memory_order_acquire))
            return MHD_YES;
        return send_response(conn, rc, &rc->resp);
    }

    header_counts counts = {0};
    if (!rc->client[0])
        client_key(conn, rc->client, sizeof(rc->client));
    MHD_get_connection_values(conn, MHD_HEADER_KIND, count_headers, &counts);
    conn_busy(conn, true);
    rc->req = (ferryd_request){
        .method = method,
        .path = url,
        .query = rc->query,
        .content_type =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE),
        .authorization =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
        .n_authorization = counts.authorization,
        .n_content_type = counts.content_type,
        .client = rc->client,
        .body = rc->body ? rc->body : "",
        .body_len = rc->body_len,
        .admitted = rc->admitted,
        .may_block = false,
    };
    if (rc->body)
        rc->body[rc->body_len] = '\0';
    rc->resp = (ferryd_response){.status = MHD_HTTP_INTERNAL_SERVER_ERROR};
    h->handler(h->userdata, &rc->req, &rc->resp);
    if (rc->resp.defer) {
        free(rc->resp.body); /* a deferring route sets nothing else; dropped all the same */
        rc->resp.body = NULL;
        return defer_request(h, conn, rc);
    }
    return send_response(conn, rc, &rc->resp);
}

/* ---- listeners ------------------------------------------------------------------------------ */

static int open_unix(const char *path, char *errbuf, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat st;
    int fd;

    if (strlen(path) == 0 || strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(errbuf, errlen, "unix:%s: path empty or too long", path);
        return -EINVAL;
    }
    memcpy(sa.sun_path, path, strlen(path));
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(errbuf, errlen, "unix:%s: exists and is not a socket", path);
            return -EEXIST;
        }
        unlink(path);
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 128) < 0)
        goto fail;
    return fd;
fail:;
    int e = errno;
    if (fd >= 0)
        close(fd);
    snprintf(errbuf, errlen, "unix:%s: %s", path, strerror(e));
    return -e;
}

static int parse_tcp(const char *addr, struct sockaddr_storage *ss, socklen_t *sl, char *errbuf,
                     size_t errlen)
{
    char host[64];
    const char *colon, *hs = addr;
    size_t hl;
    long long port;

    *ss = (struct sockaddr_storage){0};
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (!end || end[1] != ':')
            goto bad;
        hs = addr + 1;
        hl = (size_t)(end - hs);
        colon = end + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon)
            goto bad;
        hl = (size_t)(colon - addr);
    }
    if (hl == 0 || hl >= sizeof(host) || ferry_parse_int64(colon + 1, &port) < 0 || port < 0 ||
        port > 65535 || colon[1] == '-')
        goto bad;
    memcpy(host, hs, hl);
    host[hl] = '\0';
    if (addr[0] == '[') {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
            goto bad;
        *sl = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
            goto bad;
        *sl = sizeof(*s4);
    }
    return 0;
bad:
    snprintf(errbuf, errlen,
             "listen address \"%.200s\": want IPV4:PORT, [IPV6]:PORT (numeric) or unix:PATH", addr);
    return -EINVAL;
}

int ferryd_httpd_check_address(const char *addr, char *errbuf, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sl;

    if (strncmp(addr, "unix:", 5) == 0) {
        size_t n = strlen(addr + 5);
        if (n == 0 || n >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
            snprintf(errbuf, errlen, "listen address \"%.200s\": socket path empty or too long",
                     addr);
            return -EINVAL;
        }
        return 0;
    }
    return parse_tcp(addr, &ss, &sl, errbuf, errlen);
}

static int open_tcp(const char *addr, char *errbuf, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int fd, one = 1, r;

    r = parse_tcp(addr, &ss, &sl, errbuf, errlen);
    if (r < 0)
        return r;
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 128) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        goto fail;
    }
    return fd;
fail:;
    int e = errno;
    snprintf(errbuf, errlen, "listen %s: %s", addr, strerror(e));
    return -e;
}

int ferryd_httpd_start(const char *const *listen, size_t n_listen,
                       const ferryd_httpd_limits *limits, ferryd_handler_fn handler, void *userdata,
                       const ferryd_observer *observer, ferryd_httpd **ret, char *errbuf,
                       size_t errlen)
{
    struct ferryd_httpd *h;
    unsigned threads;
    int r;

    if (n_listen == 0 || !limits || !handler || !ret) {
        snprintf(errbuf, errlen, "no listen address");
        return -EINVAL;
    }
    h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    h->ls = calloc(n_listen, sizeof(*h->ls));
    if (!h->ls) {
        free(h);
        return -ENOMEM;
    }
    h->limits = *limits;
    h->handler = handler;
    h->userdata = userdata;
    if (observer)
        h->observer = *observer;
    atomic_init(&h->inflight, 0);
    pthread_mutex_init(&h->conns_lock, NULL);
    r = watchdog_start(h);
    if (r < 0) {
        snprintf(errbuf, errlen, "request deadline thread: %s", strerror(-r));
        goto fail;
    }
    r = pool_start(h);
    if (r < 0) {
        snprintf(errbuf, errlen, "worker threads: %s", strerror(-r));
        goto fail;
    }
    threads = event_threads(limits);
    for (size_t i = 0; i < n_listen; i++) {
        listener *l = &h->ls[h->n_ls];
        bool is_unix = strncmp(listen[i], "unix:", 5) == 0;
        l->h = h;
        l->fd = -1;
        l->name = strdup(listen[i]);
        if (!l->name) {
            r = -ENOMEM;
            goto fail;
        }
        h->n_ls++;
        if (is_unix) {
            l->unix_path = strdup(listen[i] + 5);
            if (!l->unix_path) {
                r = -ENOMEM;
                goto fail;
            }
            r = open_unix(l->unix_path, errbuf, errlen);
            if (r < 0) {
                free(l->unix_path);
                l->unix_path = NULL;
            }
        } else {
            r = open_tcp(listen[i], errbuf, errlen);
        }
        if (r < 0)
            goto fail;
        l->fd = r;
        l->daemon = MHD_start_daemon(
            /* epoll event threads (no select(2): descriptors past FD_SETSIZE work), with
             * suspend/resume for deferred requests. */
            MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC |
                MHD_USE_ERROR_LOG,
            0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
            MHD_OPTION_LISTEN_SOCKET, l->fd, MHD_OPTION_CONNECTION_MEMORY_LIMIT, limits->max_header,
            MHD_OPTION_CONNECTION_LIMIT, limits->connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
            is_unix ? 0u : limits->connections_per_ip, MHD_OPTION_CONNECTION_TIMEOUT,
            limits->timeout_s, MHD_OPTION_URI_LOG_CALLBACK, on_uri, h, MHD_OPTION_NOTIFY_COMPLETED,
            on_completed, h, MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
            /* Last: one thread means no pool (the daemon's own thread serves every connection;
             * libmicrohttpd warns about a pool size of 1), and then the list ends here. */
            threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, threads, MHD_OPTION_END);
        if (!l->daemon) {
            snprintf(errbuf, errlen, "listen %s: libmicrohttpd refused to start", listen[i]);
            r = -EIO;
            goto fail;
        }
    }
    *ret = h;
    return 0;
fail:
    ferryd_httpd_free(h);
    return r;
}

void ferryd_httpd_quiesce(ferryd_httpd *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n_ls; i++) {
        listener *l = &h->ls[i];
        if (l->daemon && l->fd >= 0) {
            MHD_socket s = MHD_quiesce_daemon(l->daemon);
            if (s != MHD_INVALID_SOCKET) {
                close(s);
                l->fd = -1;
            }
        }
        if (l->unix_path) {
            unlink(l->unix_path);
            free(l->unix_path);
            l->unix_path = NULL;
        }
    }
}

unsigned ferryd_httpd_drain(ferryd_httpd *h, unsigned timeout_ms)
{
    if (!h)
        return 0;
    for (unsigned waited = 0;; waited += 10) {
        unsigned n = atomic_load(&h->inflight);
        if (n == 0 || waited >= timeout_ms)
            return n;
        struct timespec ts = {.tv_nsec = 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

void ferryd_httpd_free(ferryd_httpd *h)
{
    if (!h)
        return;
    pool_stop(h);
    for (size_t i = 0; i < h->n_ls; i++) {
        listener *l = &h->ls[i];
        if (l->daemon)
            MHD_stop_daemon(l->daemon); /* closes a listen socket not yet quiesced */
        else if (l->fd >= 0)
            close(l->fd);
        if (l->unix_path) {
            unlink(l->unix_path);
            free(l->unix_path);
        }
        free(l->name);
    }
    watchdog_stop(h);
    pool_free(h);
    pthread_mutex_destroy(&h->conns_lock);
    free(h->ls);
    free(h);
}
