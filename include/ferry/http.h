/* ferry/http.h - the one outbound HTTP client of libferry (libcurl).
 *
 * Every outbound request of ferry goes through here so that the same rules hold everywhere:
 * TLS peer and host verification always on; https only, except plain http to 127.0.0.1 / [::1]
 * when the caller sets allow_http_loopback (tests); the response body capped inside the write
 * callback; connect and total timeouts; redirects followed by this module (not by libcurl), at
 * most max_redirects hops, each to the same scheme and each re-checked against these rules;
 * no proxy unless one is configured (proxy environment variables are ignored).
 *
 * Thread-safe: each call uses its own easy handle, and libcurl's global initialisation runs
 * once under pthread_once.
 */
#ifndef FERRY_HTTP_H
#define FERRY_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FERRY_HTTP_MAX_REDIRECTS 3
#define FERRY_HTTP_RETRY_AFTER_MAX 3600 /* seconds; a longer Retry-After is read as this */

typedef struct ferry_http_options {
    long connect_timeout_ms;   /* 0 = default 3000 */
    long total_timeout_ms;     /* 0 = default 10000; covers all redirect hops */
    size_t max_response;       /* body byte cap; 0 = default 256 KiB */
    int max_redirects;         /* 0..FERRY_HTTP_MAX_REDIRECTS; -1 = default (3) */
    const char *ca_file;       /* trust anchor bundle (PEM) that REPLACES the system store for
                                  this request, or NULL for the system store */
    const char *proxy;         /* explicit proxy URL, or NULL for none */
    bool allow_http_loopback;  /* permit http:// to 127.0.0.1/[::1] (tests only) */
} ferry_http_options;

typedef struct ferry_http_response {
    long status;               /* final HTTP status */
    char *body;                /* NUL-terminated body (owned), body_len bytes before the NUL */
    size_t body_len;
    char *content_type;        /* owned copy or NULL */
    char *cache_control;       /* owned copy or NULL */
    char *www_authenticate;    /* owned copy of WWW-Authenticate (repeated ones joined with
                                  ", "), or NULL */
    long retry_after;          /* Retry-After in seconds from now (an HTTP-date in the past is
                                  0; capped at FERRY_HTTP_RETRY_AFTER_MAX), -1 when absent or
                                  malformed */
    char *final_url;           /* owned copy of the URL that answered */
    int redirects;             /* hops followed */
    bool sensitive;            /* body is wiped on release (request's sensitive flag) */
} ferry_http_response;

/* A request for ferry_http_request_send. */
typedef struct ferry_http_request {
    const char *method;          /* "GET" or "POST" */
    const char *url;
    const char *const *headers;  /* n_headers "Name: value" lines (printable ASCII, a token
                                    name; no Expect, Content-Length, Transfer-Encoding); an
                                    "Accept: application/json" is added unless one is given */
    size_t n_headers;            /* at most 32 */
    const void *body;            /* POST body (borrowed, at most 1 MiB), or NULL */
    size_t body_len;
    bool sensitive;              /* the response holds secrets: its buffers are wiped when
                                    grown and on ferry_http_response_release */
} ferry_http_request;

/* Initialise libcurl once (under pthread_once; ferry_http_get calls it itself). Calling it
 * from main before threads start surfaces a failure early. Returns 0 or -FERRY_ECRYPTO. */
int ferry_http_global_init(void);

/* Check url against the rules above without fetching. 0 or -FERRY_EPOLICY. */
int ferry_http_check_url(const char *url, const ferry_http_options *opts);

/* GET url (Accept: application/json). On success (any HTTP status) fills *ret_resp, which the
 * caller releases with ferry_http_response_release. Fails with -FERRY_EPOLICY (URL or redirect
 * refused; redirects must keep scheme, host and port), -FERRY_ETOOBIG (body over the cap),
 * -FERRY_EFETCH (network, TLS, timeout), -FERRY_ECONFIG (options out of range). */
int ferry_http_get(const char *url, const ferry_http_options *opts,
                   ferry_http_response *ret_resp);

/* Send req under the same rules as ferry_http_get. A POST is never redirected: a 3xx with a
 * Location fails with -FERRY_EPOLICY (the body must reach only the URL checked). Errors as
 * ferry_http_get, and -EINVAL for a bad method, header line or argument, -FERRY_ETOOBIG for
 * too many headers or too large a body. */
int ferry_http_request_send(const ferry_http_request *req, const ferry_http_options *opts,
                            ferry_http_response *ret_resp);

/* Free the members of resp (not resp itself) and zero it. Accepts an already released one. */
void ferry_http_response_release(ferry_http_response *resp);

/* Whether a Content-Type value names media_type (e.g. "application/json"): the part before any
 * ';' parameters, trailing blanks trimmed, equal without case. false for NULL. */
bool ferry_http_media_type_is(const char *content_type, const char *media_type);

/* Parse "max-age=N" (and honour no-store/no-cache as 0) from a Cache-Control value.
 * Returns seconds >= 0, or -1 when the header gives no lifetime. */
long ferry_http_cache_max_age(const char *cache_control);

/* Sleep before retry attempt+1 of a failed call: base_ms << attempt with "equal jitter" (half
 * fixed, half random), so that many clients refused at once do not come back at once. The one
 * retry pause of every HTTP caller (cloud and secret backends). */
void ferry_http_backoff(int attempt, unsigned base_ms);

/* Pause before retrying a call whose attempt-th try (0-based) failed with resp (NULL after a
 * network failure), charging the pause to *budget_ms, the caller's allowance of waiting for
 * this call. The pause is the jittered backoff of ferry_http_backoff, or the response's
 * Retry-After when that is longer (a throttling server's word is honoured, never undercut).
 * When the pause does not fit in *budget_ms, nothing is slept and -EAGAIN is returned: the
 * caller gives up with a clear error ("throttled; retry after N s"). Returns 0 after sleeping,
 * -EINVAL without a budget. The one retry rule of the cloud and secret backends. */
int ferry_http_retry_pause(const ferry_http_response *resp, int attempt, unsigned base_ms,
                           long *budget_ms);

#ifdef __cplusplus
}
#endif
#endif
