/* tests/bench/bench_http_floor.c - the ceiling of a token exchange over HTTP on this machine.
 *
 * A libmicrohttpd server set up as ferryd's (epoll event threads, the same connection memory
 * limit) whose POST handler does nothing but what `openssl speed` measures for the crypto
 * bound: one RSA-2048 PKCS#1 v1.5 verification and one ECDSA P-256 signature, each on a
 * prepared EVP_PKEY_CTX over a fixed SHA-256 digest; it answers a fixed JSON body of the size
 * of ferryd's token answer, with ferryd's response headers. No form decoding, no JWS, no
 * policy, no audit log, no request log. Driven by wrk with the exchange benchmark's Lua script
 * (tests/bench/run-exchange.sh runs it next to ferryd), its requests per second divided by
 * the crypto bound B is the most any exchange service on libmicrohttpd and loopback TCP could
 * reach here: what the kernel and the HTTP library cost on top of the two signatures.
 *
 * With AUDIT_FILE, each request also appends one 600-byte line to that file with write(2)
 * (O_APPEND) and fdatasync(2) runs every 100 lines: the least an audit log with one record per
 * decision, written before the answer, costs (ferryd's "sync": "batch").
 *
 * usage: bench_http_floor PORT [THREADS [AUDIT_FILE]]  (on 127.0.0.1, until SIGINT/SIGTERM)
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#define BODY_MAX (64 * 1024)
#define ANSWER_LEN 702 /* ferryd's answer to the benchmark's exchange, in bytes */
#define RECORD_LEN 600 /* about one of ferryd's audit records */
#define SYNC_EVERY 100

static EVP_PKEY_CTX *verify_ctx, *sign_ctx;
static unsigned char digest[32], rsa_sig[256];
static size_t rsa_sig_len;
static char answer[ANSWER_LEN + 1];
static volatile sig_atomic_t stop;
static int audit_fd = -1;
static char record[RECORD_LEN];
static unsigned unsynced;

typedef struct request {
    size_t body_len;
} request;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

/* Per request: the two operations, on contexts shared by the event threads (one thread in
 * the benchmark; a context is not used concurrently when THREADS is 1). */
static bool crypto_once(void)
{
    unsigned char sig[80];
    size_t n = sizeof(sig);

    return EVP_PKEY_verify(verify_ctx, rsa_sig, rsa_sig_len, digest, sizeof(digest)) == 1 &&
           EVP_PKEY_sign(sign_ctx, sig, &n, digest, sizeof(digest)) == 1;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    request *rq = *con_cls;
    struct MHD_Response *r;
    enum MHD_Result ret;
    bool ok;

    (void)cls;
    (void)url;
    (void)version;
    (void)upload;
    if (!rq) {
        rq = calloc(1, sizeof(*rq));
        if (!rq)
            return MHD_NO;
        *con_cls = rq;
        return MHD_YES;
    }
    if (*upload_size) {
        rq->body_len += *upload_size;
        *upload_size = 0;
        return rq->body_len <= BODY_MAX ? MHD_YES : MHD_NO;
    }
    ok = strcmp(method, "POST") == 0 && crypto_once();
    if (ok && audit_fd >= 0) {
        ok = write(audit_fd, record, sizeof(record)) == (ssize_t)sizeof(record);
        if (ok && ++unsynced == SYNC_EVERY) {
            ok = fdatasync(audit_fd) == 0;
            unsynced = 0;
        }
    }
    r = MHD_create_response_from_buffer(ok ? ANSWER_LEN : 0, ok ? answer : "",
                                        MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, MHD_HTTP_HEADER_PRAGMA, "no-cache");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    ret = MHD_queue_response(conn, ok ? MHD_HTTP_OK : MHD_HTTP_BAD_REQUEST, r);
    MHD_destroy_response(r);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    free(*con_cls);
    *con_cls = NULL;
}

static EVP_PKEY_CTX *prepared(EVP_PKEY *key, bool verify)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);

    if (!c || (verify ? EVP_PKEY_verify_init(c) : EVP_PKEY_sign_init(c)) != 1 ||
        EVP_PKEY_CTX_set_signature_md(c, EVP_sha256()) != 1 ||
        (verify && EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) != 1)) {
        EVP_PKEY_CTX_free(c);
        return NULL;
    }
    return c;
}

int main(int argc, char **argv)
{
    struct MHD_Daemon *d;
    EVP_PKEY *rsa, *ec;
    EVP_PKEY_CTX *rsa_sign;
    unsigned threads = 1;
    long port;
    char *end;

    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: %s PORT [THREADS [AUDIT_FILE]]\n", argv[0]);
        return 2;
    }
    port = strtol(argv[1], &end, 10);
    if (*end || port < 1 || port > 65535) {
        fprintf(stderr, "bench_http_floor: bad port %s\n", argv[1]);
        return 2;
    }
    if (argc == 4) {
        audit_fd = open(argv[3], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (audit_fd < 0) {
            fprintf(stderr, "bench_http_floor: %s: %s\n", argv[3], strerror(errno));
            return 2;
        }
        memset(record, 'r', sizeof(record));
        record[sizeof(record) - 1] = '\n';
    }
    if (argc >= 3) {
        long t = strtol(argv[2], &end, 10);
        if (*end || t < 1 || t > 64) {
            fprintf(stderr, "bench_http_floor: bad thread count %s\n", argv[2]);
            return 2;
        }
        threads = (unsigned)t;
    }

    /* The keys and one RS256 signature to verify, over a fixed digest. */
    rsa = EVP_RSA_gen(2048);
    ec = EVP_EC_gen("P-256");
    memset(digest, 0x5a, sizeof(digest));
    rsa_sign = rsa ? prepared(rsa, false) : NULL;
    rsa_sig_len = sizeof(rsa_sig);
    if (!rsa || !ec || !rsa_sign ||
        EVP_PKEY_CTX_set_rsa_padding(rsa_sign, RSA_PKCS1_PADDING) != 1 ||
        EVP_PKEY_sign(rsa_sign, rsa_sig, &rsa_sig_len, digest, sizeof(digest)) != 1) {
        fprintf(stderr, "bench_http_floor: key generation failed\n");
        return 1;
    }
    EVP_PKEY_CTX_free(rsa_sign);
    verify_ctx = prepared(rsa, true);
    sign_ctx = prepared(ec, false);
    if (!verify_ctx || !sign_ctx || !crypto_once()) {
        fprintf(stderr, "bench_http_floor: crypto set-up failed\n");
        return 1;
    }
    /* A JSON body of the answer's size. */
    memset(answer, 'x', ANSWER_LEN);
    memcpy(answer, "{\"access_token\":\"", 17);
    memcpy(answer + ANSWER_LEN - 2, "\"}", 2);
    answer[ANSWER_LEN] = '\0';

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    d = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG,
                         (uint16_t)port, NULL, NULL, on_request, NULL,
                         MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                         MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)32768,
                         MHD_OPTION_CONNECTION_LIMIT, 1024u, MHD_OPTION_CONNECTION_TIMEOUT, 30u,
                         MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                         threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, threads,
                         MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "bench_http_floor: cannot listen on port %ld\n", port);
        return 1;
    }
    fprintf(stderr, "bench_http_floor: listening on port %ld\n", port);
    while (!stop)
        pause();
    MHD_stop_daemon(d);
    EVP_PKEY_CTX_free(verify_ctx);
    EVP_PKEY_CTX_free(sign_ctx);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
    if (audit_fd >= 0)
        close(audit_fd);
    return 0;
}
