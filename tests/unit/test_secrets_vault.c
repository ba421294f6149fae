/* tests/unit/test_secrets_vault.c - the vault backend: its response parsers against hostile
 * input (truncated at every byte, mistyped, oversized, missing members), and the backend as a
 * whole through ferry_secrets_fetch against a one-thread fake Vault on loopback: the token
 * cached (one login for several reads), renewed at 2/3 of its lease or replaced when not
 * renewable, a re-login after a 403 to a cached token, 5xx retried and bounded, the headers and
 * login bodies sent, and no remote error text or value in any reason. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "ferry/error.h"
#include "ferry/secrets.h"

#define CANARY "canary-7f3a9c1e5b"

#include "lib/secrets/vault-internal.h"

/* ---- parsers ------------------------------------------------------------------------------ */

static const char kv_ok[] =
    "{\"request_id\":\"x\",\"data\":{\"data\":{\"password\":\"" CANARY "\",\"port\":5432,"
    "\"obj\":{\"a\":[1,true]},\"nul\":null},\"metadata\":{\"created_time\":\"t\","
    "\"version\":7}}}";

Test(parse, kv2_fields_and_version)
{
    ferry_secret_value *v = NULL;
    char err[256] = "";

    cr_assert_eq(ferry_vault_kv2_parse(kv_ok, strlen(kv_ok), "password", &v, err, sizeof(err)), 0,
                 "%s", err);
    cr_assert_eq(v->len, strlen(CANARY));
    cr_assert_eq(memcmp(v->data, CANARY, v->len), 0);
    cr_assert_str_eq(v->version, "7");
    ferry_secret_value_free(v);
    v = NULL;
    cr_assert_eq(ferry_vault_kv2_parse(kv_ok, strlen(kv_ok), "port", &v, err, sizeof(err)), 0);
    cr_assert_str_eq((char *)v->data, "5432");
    ferry_secret_value_free(v);
    v = NULL;
    cr_assert_eq(ferry_vault_kv2_parse(kv_ok, strlen(kv_ok), "obj", &v, err, sizeof(err)), 0);
    cr_assert_str_eq((char *)v->data, "{\"a\":[1,true]}");
    ferry_secret_value_free(v);
    v = NULL;
    cr_assert_eq(ferry_vault_kv2_parse(kv_ok, strlen(kv_ok), "nul", &v, err, sizeof(err)),
                 -FERRY_EMALFORMED);
    cr_assert_eq(ferry_vault_kv2_parse(kv_ok, strlen(kv_ok), "nope", &v, err, sizeof(err)),
                 -ENOENT);
    cr_assert(strstr(err, "\"nope\"") && !strstr(err, CANARY), "%s", err);
    cr_assert_null(v);
}

Test(parse, kv2_truncated_at_every_byte)
{
    size_t n = strlen(kv_ok);

    for (size_t i = 0; i < n; i++) {
        ferry_secret_value *v = NULL;
        char err[256] = "";
        int r = ferry_vault_kv2_parse(kv_ok, i, "password", &v, err, sizeof(err));
        cr_assert_lt(r, 0, "prefix of %zu bytes accepted", i);
        cr_assert_null(v);
        cr_assert_null(strstr(err, CANARY), "%s", err);
    }
}

Test(parse, kv2_hostile_shapes)
{
    static const struct {
        const char *body;
        int want;
    } cases[] = {
        {"[]", -FERRY_EMALFORMED},
        {"{}", -FERRY_EMALFORMED},
        {"{\"data\":\"x\"}", -FERRY_EMALFORMED},
        {"{\"data\":{}}", -FERRY_EMALFORMED},
        {"{\"data\":{\"data\":[\"" CANARY "\"]}}", -FERRY_EMALFORMED},
        {"{\"data\":{\"data\":null,\"metadata\":{\"version\":2}}}", -ENOENT},
        {"{\"data\":{\"data\":{\"password\":\"x\"},\"metadata\":{\"version\":\"2\"}}}",
         -FERRY_EMALFORMED},
        {"{\"data\":{\"data\":{\"password\":\"x\"},\"metadata\":{\"version\":-1}}}",
         -FERRY_EMALFORMED},
        {"{\"data\":{\"data\":{\"password\":\"x\"},\"metadata\":7}}", -FERRY_EMALFORMED},
        {"{\"data\":{\"data\":{\"password\":\"a\",\"password\":\"b\"}}}", -FERRY_EMALFORMED},
        {"{\"data\":{\"data\":{\"password\":\"" CANARY "\"}}} x", -FERRY_EMALFORMED},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ferry_secret_value *v = NULL;
        char err[256] = "";
        int r = ferry_vault_kv2_parse(cases[i].body, strlen(cases[i].body), "password", &v, err,
                                      sizeof(err));
        cr_assert_eq(r, cases[i].want, "case %zu: %d (%s)", i, r, err);
        cr_assert_null(v);
        cr_assert_null(strstr(err, CANARY), "case %zu: %s", i, err);
    }
}

Test(parse, kv2_value_over_64k)
{
    static const char head[] = "{\"data\":{\"data\":{\"k\":\"";
    size_t n = FERRY_SECRET_VALUE_MAX + 1, h = strlen(head);
    char *body = malloc(h + n + 8);
    ferry_secret_value *v = NULL;
    char err[256] = "";

    cr_assert_not_null(body);
    memcpy(body, head, h);
    memset(body + h, 'a', n);
    memcpy(body + h + n, "\"}}}", 5);
    cr_assert_eq(ferry_vault_kv2_parse(body, h + n + 4, "k", &v, err, sizeof(err)), -FERRY_ETOOBIG,
                 "%s", err);
    cr_assert_null(v);
    /* One byte less is exactly the limit: accepted. */
    memcpy(body + h + n - 1, "\"}}}", 5);
    cr_assert_eq(ferry_vault_kv2_parse(body, h + n + 3, "k", &v, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(v->len, FERRY_SECRET_VALUE_MAX);
    ferry_secret_value_free(v);
    free(body);
}

Test(parse, auth_answers)
{
    static const char ok[] = "{\"auth\":{\"client_token\":\"hvs.abc\",\"lease_duration\":60,"
                             "\"renewable\":true}}";
    static const char *const bad[] = {
        "{}",
        "{\"auth\":null}",
        "{\"auth\":{\"client_token\":\"hvs abc\",\"lease_duration\":60}}",
        "{\"auth\":{\"client_token\":\"hvs\\nabc\",\"lease_duration\":60}}",
        "{\"auth\":{\"client_token\":\"hvs\\u0000abc\",\"lease_duration\":60}}",
        "{\"auth\":{\"client_token\":\"\",\"lease_duration\":60}}",
        "{\"auth\":{\"client_token\":7,\"lease_duration\":60}}",
        "{\"auth\":{\"client_token\":\"hvs.abc\"}}",
        "{\"auth\":{\"client_token\":\"hvs.abc\",\"lease_duration\":-5}}",
        "{\"auth\":{\"client_token\":\"hvs.abc\",\"lease_duration\":1.5}}",
        "{\"auth\":{\"client_token\":\"hvs.abc\",\"lease_duration\":60,\"renewable\":\"yes\"}}",
    };
    char *tok = NULL, err[256];
    int64_t lease = -1;
    bool ren = false;

    cr_assert_eq(ferry_vault_auth_parse(ok, strlen(ok), &tok, &lease, &ren, err, sizeof(err)), 0);
    cr_assert_str_eq(tok, "hvs.abc");
    cr_assert_eq(lease, 60);
    cr_assert(ren);
    free(tok);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        tok = NULL;
        cr_assert_lt(
            ferry_vault_auth_parse(bad[i], strlen(bad[i]), &tok, &lease, &ren, err, sizeof(err)), 0,
            "case %zu accepted", i);
        cr_assert_null(tok);
    }
    for (size_t i = 0; i < strlen(ok); i++) {
        tok = NULL;
        cr_assert_lt(ferry_vault_auth_parse(ok, i, &tok, &lease, &ren, err, sizeof(err)), 0);
        cr_assert_null(tok);
    }
}

/* ---- a fake Vault on loopback ------------------------------------------------------------- */

typedef struct fake {
    int fd;
    pthread_t th;
    char url[64];
    pthread_mutex_t lock;
    int logins, renewals, reads, lease;
    int renew_lease; /* lease_duration answered by renew-self (-1: same as lease) */
    bool renewable;
    int fail_reads; /* answer the next N reads 503 (or fail_status) */
    int fail_status;  /* 0: 503 */
    int retry_after;  /* > 0: the failed reads carry Retry-After: N */
    bool revoke;    /* the next read with the current token: 403 (token revoked) */
    bool forbid;    /* every read: 403 */
    const char *read_ctype;
    char token[64];
    char last_token_hdr[128], last_ns_hdr[128], last_login_body[2048], last_audience[128];
} fake;

static void header(const char *req, const char *name, char *out, size_t outlen)
{
    const char *p = strcasestr(req, name);
    size_t n = 0;

    out[0] = '\0';
    if (!p)
        return;
    p += strlen(name);
    while (*p == ' ')
        p++;
    while (p[n] && p[n] != '\r' && n + 1 < outlen)
        n++;
    memcpy(out, p, n);
    out[n] = '\0';
}

static void answer(int c, int status, const char *ctype, const char *body)
{
    char head[256];

    snprintf(head, sizeof(head),
             "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n"
             "\r\n",
             status, ctype, strlen(body));
    (void)!write(c, head, strlen(head));
    (void)!write(c, body, strlen(body));
}

static void *fake_loop(void *arg)
{
    fake *f = arg;

    for (;;) {
        int c = accept(f->fd, NULL, NULL);
        char req[16384], body[2048], tok[128];
        size_t got = 0;
        ssize_t n;

        if (c < 0)
            return NULL;
        while (got < sizeof(req) - 1 && (n = read(c, req + got, sizeof(req) - 1 - got)) > 0) {
            char *end, *cl;
            got += (size_t)n;
            req[got] = '\0';
            end = strstr(req, "\r\n\r\n");
            cl = strcasestr(req, "Content-Length:");
            if (end && (!cl || got >= (size_t)(end + 4 - req) + strtoul(cl + 15, NULL, 10)))
                break;
        }
        pthread_mutex_lock(&f->lock);
        header(req, "X-Vault-Token:", tok, sizeof(tok));
        header(req, "X-Vault-Namespace:", f->last_ns_hdr, sizeof(f->last_ns_hdr));
        if (strncmp(req, "POST /v1/auth/approle/login ", 28) == 0 ||
            strncmp(req, "POST /v1/auth/jwt/login ", 24) == 0) {
            f->logins++;
            snprintf(f->last_login_body, sizeof(f->last_login_body), "%s",
                     strstr(req, "\r\n\r\n") + 4);
            snprintf(f->token, sizeof(f->token), "hvs.token-%d", f->logins);
            snprintf(body, sizeof(body),
                     "{\"auth\":{\"client_token\":\"%s\",\"lease_duration\":%d,"
                     "\"renewable\":%s}}",
                     f->token, f->lease, f->renewable ? "true" : "false");
            answer(c, 200, "application/json", body);
        } else if (strncmp(req, "POST /v1/auth/token/renew-self ", 31) == 0) {
            f->renewals++;
            snprintf(body, sizeof(body),
                     "{\"auth\":{\"client_token\":\"%s\",\"lease_duration\":%d,"
                     "\"renewable\":true}}",
                     tok, f->renew_lease >= 0 ? f->renew_lease : f->lease);
            answer(c, strcmp(tok, f->token) == 0 ? 200 : 403, "application/json", body);
        } else if (strncmp(req, "GET /v1/secret/data/app/db", 26) == 0) {
            f->reads++;
            snprintf(f->last_token_hdr, sizeof(f->last_token_hdr), "%s", tok);
            if (f->fail_reads > 0 && f->retry_after > 0) {
                static const char eb[] = "{\"errors\":[\"slow down " CANARY "\"]}";
                char head[256];
                f->fail_reads--;
                snprintf(head, sizeof(head),
                         "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nRetry-After: %d"
                         "\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                         f->fail_status ? f->fail_status : 503, f->retry_after, strlen(eb));
                (void)!write(c, head, strlen(head));
                (void)!write(c, eb, strlen(eb));
            } else if (f->fail_reads > 0) {
                f->fail_reads--;
                answer(c, f->fail_status ? f->fail_status : 503, "application/json",
                       "{\"errors\":[\"sealed " CANARY "\"]}");
            } else if (f->forbid || f->revoke || strcmp(tok, f->token) != 0) {
                if (f->revoke) {
                    f->revoke = false;
                    f->token[0] = '\0';
                }
                answer(c, 403, "application/json",
                       "{\"errors\":[\"permission denied " CANARY "\"]}");
            } else
                answer(c, 200, f->read_ctype ? f->read_ctype : "application/json",
                       "{\"data\":{\"data\":{\"password\":\"" CANARY
                       "\"},\"metadata\":{\"version\":3}}}");
        } else
            answer(c, 404, "application/json", "{\"errors\":[]}");
        pthread_mutex_unlock(&f->lock);
        close(c);
    }
}

static void fake_start(fake *f)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);

    pthread_mutex_init(&f->lock, NULL);
    f->fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(f->fd, 0);
    cr_assert_eq(bind(f->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(f->fd, 16), 0);
    cr_assert_eq(getsockname(f->fd, (struct sockaddr *)&a, &alen), 0);
    snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d", ntohs(a.sin_port));
    cr_assert_eq(pthread_create(&f->th, NULL, fake_loop, f), 0);
}

static void fake_stop(fake *f)
{
    shutdown(f->fd, SHUT_RDWR);
    close(f->fd);
    pthread_join(f->th, NULL);
    pthread_mutex_destroy(&f->lock);
}

static char secret_id_path[64];

static void write_secret_id(void)
{
    int fd;

    snprintf(secret_id_path, sizeof(secret_id_path), "/tmp/ferry-vault-sid-XXXXXX");
    fd = mkstemp(secret_id_path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(fchmod(fd, 0600), 0);
    cr_assert_eq(write(fd, "sid-secret-1\n", 13), 13);
    close(fd);
}

static int stub_calls;
static int mint_stub(void *userdata, const char *audience, char **ret_token, char *errbuf,
                     size_t errlen)
{
    (void)errbuf;
    (void)errlen;
    stub_calls++;
    snprintf(((fake *)userdata)->last_audience, sizeof(((fake *)userdata)->last_audience), "%s",
             audience);
    *ret_token = strdup("eyJhbGciOiJFUzI1NiJ9.e30.c2ln");
    return *ret_token ? 0 : -ENOMEM;
}

/* ferry_secrets with a vault section for f (approle unless jwt), cache off. */
static ferry_secrets *open_vault(fake *f, bool jwt, const char *ns)
{
    ferry_secrets_env env = {.web_identity_token = mint_stub, .web_identity_userdata = f};
    ferry_secrets *s = NULL;
    json_t *conf;
    char err[512] = "";

    if (jwt)
        conf = json_pack("{s:{s:s,s:b,s:i,s:{s:s,s:s,s:s}}}", "vault", "address", f->url,
                         "allow_http_loopback", 1, "cache_ttl", 0, "auth", "method", "jwt", "role",
                         "ci", "audience", "vault.example");
    else
        conf = json_pack("{s:{s:s,s:b,s:i,s:{s:s,s:s,s:s}}}", "vault", "address", f->url,
                         "allow_http_loopback", 1, "cache_ttl", 0, "auth", "method", "approle",
                         "role_id", "rid-1", "secret_id_file", secret_id_path);
    cr_assert_not_null(conf);
    if (ns)
        json_object_set_new(json_object_get(conf, "vault"), "namespace", json_string(ns));
    cr_assert_eq(ferry_secrets_new(conf, &env, &s, err, sizeof(err)), 0, "%s", err);
    json_decref(conf);
    return s;
}

static int get(ferry_secrets *s, char *err, size_t errlen)
{
    ferry_secret_value *v = NULL;
    int r = ferry_secrets_fetch(s, "vault:secret/app/db#password", NULL, &v, err, errlen);

    if (r == 0) {
        cr_assert_eq(v->len, strlen(CANARY));
        cr_assert_eq(memcmp(v->data, CANARY, v->len), 0);
        cr_assert_str_eq(v->version, "3");
    }
    cr_assert_null(strstr(err, CANARY), "%s", err);
    ferry_secret_value_free(v);
    return r;
}

Test(backend, one_login_for_several_reads_with_headers)
{
    fake f = {.lease = 600, .renewable = true, .renew_lease = -1};
    ferry_secrets *s;
    char err[512] = "";

    write_secret_id();
    fake_start(&f);
    s = open_vault(&f, false, "team-a");
    for (int i = 0; i < 4; i++)
        cr_assert_eq(get(s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(f.logins, 1);
    cr_assert_eq(f.reads, 4);
    cr_assert_eq(f.renewals, 0);
    cr_assert_str_eq(f.last_token_hdr, "hvs.token-1");
    cr_assert_str_eq(f.last_ns_hdr, "team-a");
    cr_assert(strstr(f.last_login_body, "\"role_id\":\"rid-1\"") &&
                  strstr(f.last_login_body, "\"secret_id\":\"sid-secret-1\""),
              "%s", f.last_login_body);
    ferry_secrets_free(s);
    fake_stop(&f);
    unlink(secret_id_path);
}

Test(backend, jwt_login_mints_for_the_audience)
{
    fake f = {.lease = 600, .renew_lease = -1};
    ferry_secrets *s;
    char err[512] = "";

    fake_start(&f);
    stub_calls = 0;
    s = open_vault(&f, true, NULL);
    cr_assert_eq(get(s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(get(s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(stub_calls, 1);
    cr_assert_str_eq(f.last_audience, "vault.example");
    cr_assert_str_eq(f.last_login_body,
                     "{\"role\":\"ci\",\"jwt\":\"eyJhbGciOiJFUzI1NiJ9.e30.c2ln\"}");
    cr_assert_str_eq(f.last_ns_hdr, "");
    ferry_secrets_free(s);
    fake_stop(&f);
}

Test(backend, renewed_at_two_thirds_of_the_lease, .timeout = 20)
{
    fake f = {.lease = 6, .renewable = true, .renew_lease = -1};
    ferry_secrets *s;
    char err[512] = "";

    write_secret_id();
    fake_start(&f);
    s = open_vault(&f, false, NULL);
    cr_assert_eq(get(s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(get(s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(f.renewals, 0);
    sleep(4); /* past 4 s (2/3 of 6), well within the 6 s lease */
    cr_assert_eq(get(s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(f.logins, 1, "renewed, not logged in again");
    cr_assert_eq(f.renewals, 1);
    ferry_secrets_free(s);
    fake_stop(&f);
    unlink(secret_id_path);
}

Test(backend, renewal_without_a_lease_logs_in_again, .timeout = 20)
{
    fake f = {.lease = 6, .renewable = true, .renew_lease = 0};
    ferry_secrets *s;
    char err[512] = "";

    write_secret_id();
    fake_start(&f);
    s = open_vault(&f, false, NULL);
    cr_assert_eq(get(s, err, sizeof(err)), 0, "%s", err);
    sleep(4); /* past 2/3 of 6 s, within the lease */
    cr_assert_eq(get(s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(f.renewals, 1);
    cr_assert_eq(f.logins, 2, "a renewal answering lease 0 is not trusted: a new login");
    cr_assert_str_eq(f.last_token_hdr, "hvs.token-2");
    ferry_secrets_free(s);
    fake_stop(&f);
    unlink(secret_id_path);
}

Test(backend, not_renewable_logs_in_again, .timeout = 20)
{
    fake f = {.lease = 3, .renewable = false, .renew_lease = -1};
    ferry_secrets *s;
    char err[512] = "";

    write_secret_id();
    fake_start(&f);
    s = open_vault(&f, false, NULL);
    cr_assert_eq(get(s, err, sizeof(err)), 0, "%s", err);
    sleep(3);
    cr_assert_eq(get(s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(f.logins, 2);
    cr_assert_eq(f.renewals, 0);
    cr_assert_str_eq(f.last_token_hdr, "hvs.token-2");
    ferry_secrets_free(s);
    fake_stop(&f);
    unlink(secret_id_path);
}

Test(backend, relogin_once_after_403_to_a_cached_token)
{
    fake f = {.lease = 600, .renewable = true, .renew_lease = -1};
    ferry_secrets *s;
    char err[512] = "";

    write_secret_id();
    fake_start(&f);
    s = open_vault(&f, false, NULL);
    cr_assert_eq(get(s, err, sizeof(err)), 0, "%s", err);
    f.revoke = true;
    cr_assert_eq(get(s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(f.logins, 2);
    cr_assert_eq(f.reads, 3);
    f.forbid = true;
    cr_assert_eq(get(s, err, sizeof(err)), -EACCES);
    cr_assert(strstr(err, "permission denied"), "%s", err);
    cr_assert_eq(f.logins, 3, "one re-login, not a loop");
    cr_assert_eq(f.reads, 5);
    ferry_secrets_free(s);
    fake_stop(&f);
    unlink(secret_id_path);
}

Test(backend, unavailable_retried_then_bounded)
{
    fake f = {.lease = 600, .renew_lease = -1};
    ferry_secrets *s;
    char err[512] = "";

    write_secret_id();
    fake_start(&f);
    s = open_vault(&f, false, NULL);
    f.fail_reads = 2;
    cr_assert_eq(get(s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(f.reads, 3);
    f.fail_reads = 100;
    cr_assert_lt(get(s, err, sizeof(err)), 0);
    cr_assert(strstr(err, "503") && strstr(err, "after 3 attempts"), "%s", err);
    cr_assert_eq(f.reads, 6);
    f.fail_reads = 0;
    f.read_ctype = "text/html";
    cr_assert_eq(get(s, err, sizeof(err)), -FERRY_EMALFORMED);
    cr_assert(strstr(err, "application/json"), "%s", err);
    ferry_secrets_free(s);
    fake_stop(&f);
    unlink(secret_id_path);
}

/* Retry-After is honoured when it fits the call's retry budget, and a longer one fails the
 * call at once (one request, no sleep), naming the wait and not Vault's text. */
Test(backend, retry_after_within_and_past_the_budget)
{
    fake f = {.lease = 600, .renew_lease = -1, .fail_status = 429};
    struct timespec t0, t1;
    ferry_secrets *s;
    char err[512] = "";

    write_secret_id();
    fake_start(&f);
    s = open_vault(&f, false, NULL);
    f.fail_reads = 1;
    f.retry_after = 1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(get(s, err, sizeof(err)), 0, "%s", err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    cr_assert_eq(f.reads, 2);
    /* A lower bound only: the pause is at least what Vault asked for. */
    cr_assert_geq((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000, 950);
    ferry_secrets_free(s);
    s = open_vault(&f, false, NULL);
    f.fail_reads = 3;
    f.retry_after = 30;
    cr_assert_eq(get(s, err, sizeof(err)), -EAGAIN, "%s", err);
    cr_assert_eq(f.reads, 3, "one more read, not retried");
    cr_assert(strstr(err, "429") && strstr(err, "retry after 30 s"), "%s", err);
    cr_assert_null(strstr(err, CANARY), "%s", err);
    ferry_secrets_free(s);
    fake_stop(&f);
    unlink(secret_id_path);
}

Test(backend, configuration_refusals)
{
    static const char *const bad[] = {
        "{\"vault\":{\"address\":\"http://127.0.0.1:1\",\"auth\":{\"method\":\"token\","
        "\"token_file\":\"/x\"}}}",
        "{\"vault\":{\"address\":\"https://v:8200\",\"auth\":{\"method\":\"token\","
        "\"token\":\"s.inline\"}}}",
        "{\"vault\":{\"address\":\"https://v:8200\",\"auth\":{\"method\":\"approle\","
        "\"role_id\":\"r\",\"secret_id\":\"inline\"}}}",
        "{\"vault\":{\"address\":\"https://v:8200\",\"auth\":{\"method\":\"jwt\","
        "\"role\":\"r\"}}}",
        "{\"vault\":{\"address\":\"https://v:8200\",\"auth\":{\"method\":\"kerberos\"}}}",
        "{\"vault\":{\"address\":\"https://v:8200\"}}",
        "{\"vault\":{\"address\":\"https://v:8200/?x\",\"auth\":{\"method\":\"token\","
        "\"token_file\":\"/x\"}}}",
        "{\"vault\":{\"address\":\"https://v:8200\",\"namespace\":\"a b\",\"auth\":{\"method\":"
        "\"token\",\"token_file\":\"/x\"}}}",
        "{\"vault\":{\"address\":\"https://v:8200\",\"timeout_ms\":5,\"auth\":{\"method\":"
        "\"token\",\"token_file\":\"/x\"}}}",
        "{\"vault\":{\"adress\":\"https://v:8200\"}}",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_error_t je;
        json_t *conf = json_loads(bad[i], 0, &je);
        ferry_secrets *s = NULL;
        char err[512] = "";
        cr_assert_not_null(conf, "case %zu", i);
        cr_assert_eq(ferry_secrets_new(conf, NULL, &s, err, sizeof(err)), -FERRY_ECONFIG,
                     "case %zu: %s", i, err);
        cr_assert_null(s);
        json_decref(conf);
    }
}
