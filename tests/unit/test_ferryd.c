/* tests/unit/test_ferryd.c - ferryd's form decoder, configuration file and request log line
 * (no network). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "ferryd/configfile.h"
#include "ferryd/ferryd.h"
#include "ferryd/httpd.h"
#include "ferryd/log.h"
#include "ferry/json.h"

static int decode(const char *body, ferry_exchange_param **p, size_t *n, char **buf)
{
    return ferryd_form_decode(body, strlen(body), p, n, buf);
}

static void expect_param(const ferry_exchange_param *p, const char *name, const char *value,
                         size_t value_len)
{
    cr_assert_eq(p->name_len, strlen(name));
    cr_assert(memcmp(p->name, name, p->name_len) == 0, "name %.*s", (int)p->name_len, p->name);
    cr_assert_eq(p->value_len, value_len);
    cr_assert(memcmp(p->value, value, value_len) == 0, "value %.*s", (int)p->value_len, p->value);
}

Test(form, decodes_in_order_with_duplicates_plus_and_escapes)
{
    ferry_exchange_param *p;
    size_t n;
    char *buf;

    cr_assert_eq(decode("a=1&scope=x+y&scope=%41%2b%3d%26&empty=&n%00=%00z", &p, &n, &buf), 0);
    cr_assert_eq(n, 5);
    expect_param(&p[0], "a", "1", 1);
    expect_param(&p[1], "scope", "x y", 3);
    expect_param(&p[2], "scope", "A+=&", 4);
    expect_param(&p[3], "empty", "", 0);
    cr_assert_eq(p[4].name_len, 2);
    cr_assert(memcmp(p[4].name, "n\0", 2) == 0);
    cr_assert_eq(p[4].value_len, 2);
    cr_assert(memcmp(p[4].value, "\0z", 2) == 0);
    free(p);
    free(buf);
}

Test(form, empty_body_is_no_parameter)
{
    ferry_exchange_param *p;
    size_t n = 7;
    char *buf;

    cr_assert_eq(decode("", &p, &n, &buf), 0);
    cr_assert_eq(n, 0);
    free(p);
    free(buf);
}

Test(form, malformed_bodies_are_refused)
{
    static const char *const bad[] = {
        "a",     "a=1&",  "&a=1", "a=1&&b=2", "=1",    "a=%",    "a=%4",
        "a=%4g", "a=%zz", "%=1",  "a=1&b",    "a=1&=", "a=%%41",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ferry_exchange_param *p = (void *)1;
        size_t n = 9;
        char *buf = (void *)1;
        cr_assert_eq(decode(bad[i], &p, &n, &buf), -EINVAL, "\"%s\" accepted", bad[i]);
        cr_assert_null(p);
        cr_assert_null(buf);
        cr_assert_eq(n, 0);
    }
}

/* ---- configuration ------------------------------------------------------------------------ */

static char *write_tmp(const char *text)
{
    char *path = strdup("/tmp/ferryd-test-XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static int load(const char *text, ferryd_config *c, char *err, size_t errlen)
{
    char *path = write_tmp(text);
    cr_assert_eq(ferryd_config_init(c), 0);
    int r = ferryd_config_load(c, path, err, errlen);
    if (r == 0)
        r = ferryd_config_finish(c, err, errlen);
    unlink(path);
    free(path);
    return r;
}

Test(config, defaults_without_a_file)
{
    ferryd_config c;
    char err[256] = "";

    cr_assert_eq(ferryd_config_init(&c), 0);
    cr_assert_eq(ferryd_config_finish(&c, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(c.n_listen, 1);
    cr_assert_str_eq(c.listen[0], "127.0.0.1:8787");
    cr_assert_str_eq(c.issuer, "http://127.0.0.1:8787");
    cr_assert_str_eq(c.state_dir, FERRY_STATEDIR);
    cr_assert_str_eq(c.policies_dir, FERRY_SYSCONFDIR "/policies");
    cr_assert_str_eq(c.audit_path, FERRY_STATEDIR "/audit.log");
    cr_assert_eq(c.limits.max_body, 65536);
    cr_assert_eq(c.limits.request_timeout_s, 30);
    cr_assert(c.one_time_subject, "one-time subject tokens by default (C7)");
    cr_assert_float_eq(c.per_address.rate, 200.0, 1e-9);
    cr_assert_eq(c.per_address.burst, 400);
    cr_assert_float_eq(c.per_identity.rate, 20.0, 1e-9);
    cr_assert_eq(c.per_identity.burst, 40);
    cr_assert_eq(c.max_tracked, 65536);
    cr_assert_eq(c.log_target, FERRYD_LOG_STDERR);
    cr_assert_eq(c.log_facility, LOG_DAEMON);
    cr_assert_str_eq(c.log_ident, "ferryd");
    ferryd_config_free(&c);
}

Test(config, rate_limits_log_and_one_time_subject)
{
    ferryd_config c;
    char err[256] = "";

    cr_assert_eq(load("{\"rate_limits\": {\"per_address\": {\"rate\": 0.5, \"burst\": 3},\n"
                      "   \"per_identity\": {\"rate\": 0}, \"max_tracked\": 1000},\n"
                      " \"log\": {\"target\": \"syslog\", \"facility\": \"authpriv\",\n"
                      "   \"ident\": \"ferryd-test\"},\n"
                      " \"token\": {\"one_time_subject\": false}}",
                      &c, err, sizeof(err)),
                 0, "%s", err);
    cr_assert_float_eq(c.per_address.rate, 0.5, 1e-12);
    cr_assert_eq(c.per_address.burst, 3);
    cr_assert_float_eq(c.per_identity.rate, 0.0, 1e-12);
    cr_assert_eq(c.max_tracked, 1000);
    cr_assert_eq(c.log_target, FERRYD_LOG_SYSLOG);
    cr_assert_eq(c.log_facility, LOG_AUTHPRIV);
    cr_assert_str_eq(c.log_ident, "ferryd-test");
    cr_assert(!c.one_time_subject);
    ferryd_config_free(&c);

    /* A rate without a burst gets twice the rate (at least 1); local0..local7. */
    cr_assert_eq(load("{\"rate_limits\": {\"per_identity\": {\"rate\": 2.5}},"
                      " \"log\": {\"facility\": \"local7\", \"target\": \"stderr\"}}",
                      &c, err, sizeof(err)),
                 0, "%s", err);
    cr_assert_eq(c.per_identity.burst, 5);
    cr_assert_eq(c.per_address.burst, 400, "untouched");
    cr_assert_eq(c.log_facility, LOG_LOCAL7);
    cr_assert_eq(c.log_target, FERRYD_LOG_STDERR);
    ferryd_config_free(&c);
    cr_assert_eq(load("{\"rate_limits\": {\"per_identity\": {\"rate\": 0.1}}}", &c, err,
                      sizeof(err)),
                 0, "%s", err);
    cr_assert_eq(c.per_identity.burst, 1);
    ferryd_config_free(&c);
}

/* ---- the per-address limit in front of every route ----------------------------------------- */

static uint64_t g_ns = UINT64_C(5000000000);
static uint64_t ns_clock(void *data)
{
    (void)data;
    return g_ns;
}

static void route(ferryd *d, const char *method, const char *path, const char *client,
                  ferryd_response *resp)
{
    ferryd_request req = {
        .method = method, .path = path, .client = client, .body = "", .body_len = 0};
    memset(resp, 0, sizeof(*resp));
    ferryd_route(d, &req, resp);
}

static void release(ferryd_response *resp)
{
    free(resp->body);
    memset(resp, 0, sizeof(*resp));
}

Test(limits, the_per_address_limit_answers_429_before_the_route)
{
    ferryd d = {0};
    ferryd_response resp;
    ferry_ratelimit_options o = {.rate = 0.5, .burst = 2, .clock = ns_clock};
    json_t *body;

    cr_assert_eq(ferry_ratelimit_new(&o, &d.per_address), 0);
    /* GET on the token endpoint is refused by the route itself (405) without touching the
     * exchange: it shows that the request got through the limit. */
    for (int i = 0; i < 2; i++) {
        route(&d, "GET", "/v1/token", "ipv4:192.0.2.7", &resp);
        cr_assert_eq(resp.status, 405);
        release(&resp);
    }
    route(&d, "GET", "/v1/token", "ipv4:192.0.2.7", &resp);
    cr_assert_eq(resp.status, 429);
    cr_assert_eq(resp.retry_after, 2);
    cr_assert(resp.no_store);
    cr_assert_str_eq(resp.outcome, "rate_limited");
    cr_assert_str_eq(resp.content_type, "application/json");
    cr_assert_not_null(strstr(resp.reason, "per-address"));
    body = json_loadb(resp.body, resp.body_len, 0, NULL);
    cr_assert_not_null(body);
    cr_assert_str_eq(json_string_value(json_object_get(body, "error")), "slow_down");
    cr_assert_str_eq(json_string_value(json_object_get(body, "error_description")),
                     "too many requests; retry after 2 seconds");
    json_decref(body);
    release(&resp);
    /* every other path is limited too, before it is looked at (404 would be the answer) */
    route(&d, "GET", "/nope", "ipv4:192.0.2.7", &resp);
    cr_assert_eq(resp.status, 429);
    release(&resp);
    /* probes and metrics never are */
    route(&d, "GET", "/healthz", "ipv4:192.0.2.7", &resp);
    cr_assert_eq(resp.status, 200);
    release(&resp);
    /* another client has its own budget; so has a unix-socket peer */
    route(&d, "GET", "/v1/token", "ipv4:192.0.2.8", &resp);
    cr_assert_eq(resp.status, 405);
    release(&resp);
    route(&d, "GET", "/v1/token", "uid:1000", &resp);
    cr_assert_eq(resp.status, 405);
    release(&resp);
    /* after the wait the client is served again */
    g_ns += UINT64_C(2000000000);
    route(&d, "GET", "/v1/token", "ipv4:192.0.2.7", &resp);
    cr_assert_eq(resp.status, 405);
    release(&resp);
    ferry_ratelimit_free(d.per_address);
}

/* The server's first call, before the body is read (headers_only): the limit is checked there
 * and only there; the call with the whole request (admitted) does not take a second token. */
Test(limits, the_limit_is_checked_once_before_the_body)
{
    ferryd d = {0};
    ferryd_response resp;
    ferry_ratelimit_options o = {.rate = 0.5, .burst = 2, .clock = ns_clock};

    cr_assert_eq(ferry_ratelimit_new(&o, &d.per_address), 0);
    for (int i = 0; i < 2; i++) {
        ferryd_request pre = {.method = "GET",
                              .path = "/v1/token",
                              .client = "ipv4:192.0.2.9",
                              .body = "",
                              .headers_only = true};
        ferryd_request full = pre;
        memset(&resp, 0, sizeof(resp));
        ferryd_route(&d, &pre, &resp);
        cr_assert_eq(resp.status, 0, "request %d: let through to the body", i);
        cr_assert_null(resp.body);
        full.headers_only = false;
        full.admitted = true;
        ferryd_route(&d, &full, &resp);
        cr_assert_eq(resp.status, 405, "request %d: routed once admitted", i);
        release(&resp);
    }
    {
        ferryd_request pre = {.method = "POST",
                              .path = "/v1/token",
                              .client = "ipv4:192.0.2.9",
                              .body = "",
                              .headers_only = true};
        memset(&resp, 0, sizeof(resp));
        ferryd_route(&d, &pre, &resp);
        cr_assert_eq(resp.status, 429, "the third is refused before its body");
        cr_assert_eq(resp.retry_after, 2);
        release(&resp);
        pre.path = "/healthz";
        ferryd_route(&d, &pre, &resp);
        cr_assert_eq(resp.status, 0, "probes are let through");
        release(&resp);
    }
    ferry_ratelimit_free(d.per_address);
}

Test(limits, ipv6_clients_share_their_64)
{
    ferryd d = {0};
    ferryd_response resp;
    ferry_ratelimit_options o = {.rate = 0.5, .burst = 1, .clock = ns_clock};

    cr_assert_eq(ferry_ratelimit_new(&o, &d.per_address), 0);
    route(&d, "GET", "/v1/token", "ipv6:2001:db8:1:2::1", &resp);
    cr_assert_eq(resp.status, 405);
    release(&resp);
    route(&d, "GET", "/v1/token", "ipv6:2001:db8:1:2:ffff::9", &resp);
    cr_assert_eq(resp.status, 429, "same /64");
    release(&resp);
    route(&d, "GET", "/v1/token", "ipv6:2001:db8:1:3::1", &resp);
    cr_assert_eq(resp.status, 405, "another /64");
    release(&resp);
    ferry_ratelimit_free(d.per_address);
}

Test(limits, apply_creates_then_reconfigures)
{
    ferryd d = {0};
    char err[256] = "";

    cr_assert_eq(ferryd_config_init(&d.config), 0);
    cr_assert_eq(ferryd_apply_rate_limits(&d, err, sizeof(err)), 0, "%s", err);
    cr_assert_not_null(d.per_address);
    cr_assert_not_null(d.per_identity);
    cr_assert(ferry_ratelimit_enabled(d.per_address));
    ferry_ratelimit *before = d.per_address;
    d.config.per_address.rate = 0;
    d.config.per_identity = (ferryd_rate_limit){7, 9};
    cr_assert_eq(ferryd_apply_rate_limits(&d, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(d.per_address, before, "the same object, reconfigured");
    cr_assert(!ferry_ratelimit_enabled(d.per_address));
    ferry_ratelimit_stats st;
    cr_assert_eq(ferry_ratelimit_get_stats(d.per_identity, &st), 0);
    cr_assert_eq(st.burst, 9);
    d.config.per_identity.rate = -1;
    cr_assert_eq(ferryd_apply_rate_limits(&d, err, sizeof(err)), -EINVAL);
    cr_assert_not_null(strstr(err, "rate_limits.per_identity"), "%s", err);
    ferry_ratelimit_free(d.per_address);
    ferry_ratelimit_free(d.per_identity);
    ferryd_config_free(&d.config);
}

Test(config, a_full_file)
{
    ferryd_config c;
    char err[256] = "";

    cr_assert_eq(load("{\"listen\": [\"[::1]:9000\", \"unix:/tmp/x.sock\"],\n"
                      " \"issuer\": \"https://ferry.test\", \"signing_alg\": \"EdDSA\",\n"
                      " \"token\": {\"default_ttl\": 60, \"max_ttl\": 120},\n"
                      " \"audit_log\": {\"sync\": \"batch\", \"checkpoint_every\": 7},\n"
                      " \"limits\": {\"max_body\": 2048, \"connections_per_ip\": 0, \"request_timeout\": 7},\n"
                      " \"issuers\": [], \"replay_cache_size\": 10}",
                      &c, err, sizeof(err)),
                 0, "%s", err);
    cr_assert_eq(c.n_listen, 2);
    cr_assert_str_eq(c.listen[1], "unix:/tmp/x.sock");
    cr_assert_str_eq(c.issuer, "https://ferry.test");
    cr_assert_eq(c.alg, FERRY_ALG_EDDSA);
    cr_assert_eq(c.default_ttl, 60);
    cr_assert_eq(c.max_ttl, 120);
    cr_assert_eq(c.sync, FERRY_AUDITLOG_SYNC_BATCH);
    cr_assert_eq(c.checkpoint_every, 7);
    cr_assert_eq(c.limits.max_body, 2048);
    cr_assert_eq(c.limits.connections_per_ip, 0);
    cr_assert_eq(c.limits.request_timeout_s, 7);
    cr_assert_eq(json_integer_value(json_object_get(c.trust, "replay_cache_size")), 10);
    ferryd_config_free(&c);
}

Test(config, errors_name_the_line)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"{\n\n \"bogus\": 1}", ":3: unknown member \"bogus\" in the configuration"},
        {"{\"limits\": {\n \"max_bodyy\": 1}}", ":2: unknown member \"max_bodyy\" in limits"},
        {"{\"limits\": {\"max_body\": 10}}", "limits.max_body must be an integer from 1024"},
        {"{\"limits\": {\"request_timeout\": 0}}", "limits.request_timeout must be an integer from 1"},
        {"{\"token\": {\"default_ttl\": 100, \"max_ttl\": 10}}", "must not exceed"},
        {"{\"signing_alg\": \"HS256\"}", "signing_alg must be"},
        {"{\"audit_log\": {\"sync\": \"never\"}}", "audit_log.sync must be"},
        {"{\"listen\": []}", "listen must be an array"},
        {"{\"listen\": [\"127.0.0.1:99999\"]}", "want IPV4:PORT"},
        {"{\"listen\": [\"0.0.0.0:80\"]}", "issuer is required"},
        {"{\"state_dir\": \"\"}", "non-empty string"},
        {"{\"a\": 1, \"a\": 2}", ":1:"},
        {"[1]", "must be a JSON object"},
        {"{\"issuers\": {}}", "issuers must be an array"},
        {"{\"rate_limits\": {\n \"per_adress\": {}}}",
         ":2: unknown member \"per_adress\" in rate_limits"},
        {"{\"rate_limits\": {\"per_address\": {\n \"rate\": 1, \"bust\": 2}}}",
         ":2: unknown member \"bust\" in rate_limits.per_address"},
        {"{\"rate_limits\": {\"per_address\": {\"rate\": -1}}}",
         "rate_limits.per_address.rate must be a number"},
        {"{\"rate_limits\": {\"per_identity\": {\"rate\": \"5\"}}}",
         "rate_limits.per_identity.rate must be a number"},
        {"{\"rate_limits\": {\"per_identity\": {\"burst\": 0}}}",
         "rate_limits.per_identity.burst must be an integer from 1"},
        {"{\"rate_limits\": {\"max_tracked\": 0}}", "rate_limits.max_tracked must be an integer"},
        {"{\"rate_limits\": []}", "rate_limits must be an object"},
        {"{\"log\": {\"target\": \"file\"}}", "log.target must be"},
        {"{\"log\": {\"facility\": \"local8\"}}", "log.facility must be"},
        {"{\"log\": {\"ident\": \"a b\"}}", "log.ident must be"},
        {"{\"log\": {\n\n \"level\": \"debug\"}}", ":3: unknown member \"level\" in log"},
        {"{\"token\": {\"one_time_subject\": 1}}", "token.one_time_subject must be true or false"},
        /* a member of the wrong type is named with its line too */
        {"{\n \"rate_limits\": []}", ":2: rate_limits must be an object"},
        {"{\"rate_limits\": {\n\n \"per_identity\": 5}}", ":3: rate_limits.per_identity must be"},
        {"{\n \"log\": \"syslog\"}", ":2: log must be an object"},
        {"{\n\n \"token\": 3}", ":3: token must be an object"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ferryd_config c;
        char err[256] = "";
        cr_assert_eq(load(cases[i].text, &c, err, sizeof(err)), -EINVAL, "case %zu accepted", i);
        cr_assert(strstr(err, cases[i].want), "case %zu: \"%s\" lacks \"%s\"", i, err,
                  cases[i].want);
        ferryd_config_free(&c);
    }
}

/* ---- allocation failures ------------------------------------------------------------------ */

#define FERRY_ALLOCFAIL_NTH 1
#include "allocfail.h"

#ifdef HAVE_ALLOC_INJECTION
/* Every allocation of reading and finishing a configuration fails in turn: each failure says
 * why in errbuf (start-up prints it, a reload logs it), never leaves it as it was, and a load
 * that succeeds holds the whole file. */
Test(config, an_allocation_failure_is_named)
{
    char *path = write_tmp("{\"listen\": [\"127.0.0.1:9000\"], \"state_dir\": \"/tmp/fd-state\",\n"
                           " \"policies\": \"/tmp/fd-pol\", \"token\": {\"client_id\": \"c\"},\n"
                           " \"log\": {\"target\": \"syslog\", \"ident\": \"fd\"},\n"
                           " \"rate_limits\": {\"per_address\": {\"rate\": 3}},\n"
                           " \"issuers\": [{\"issuer\": \"https://i.test\"}],\n"
                           " \"replay_cache_size\": 7}");
    long n, failed = 0;

    for (n = 0; n < 100000; n++) {
        ferryd_config c;
        char err[256];
        bool hit;
        int r;

        memset(err, 'Z', sizeof(err) - 1);
        err[sizeof(err) - 1] = '\0';
        inject_arm(n);
        r = ferryd_config_init(&c);
        if (r == 0) {
            r = ferryd_config_load(&c, path, err, sizeof(err));
            if (r == 0)
                r = ferryd_config_finish(&c, err, sizeof(err));
            if (r < 0) {
                failed++;
                cr_assert_neq(err[0], 'Z', "allocation %ld: %s with nothing in errbuf", n,
                              strerror(-r));
            } else {
                /* a configuration that loads is the whole file: no member silently dropped */
                cr_assert_eq(json_array_size(json_object_get(c.trust, "issuers")), 1,
                             "allocation %ld: the issuers were dropped", n);
                cr_assert_eq(json_integer_value(json_object_get(c.trust, "replay_cache_size")), 7,
                             "allocation %ld: replay_cache_size was dropped", n);
                cr_assert_str_eq(c.log_ident, "fd");
                cr_assert_str_eq(c.audit_path, "/tmp/fd-state/audit.log");
            }
            ferryd_config_free(&c);
        }
        hit = inject_disarm();
        if (!hit)
            break;
    }
    cr_assert_lt(n, 100000);
    cr_assert_gt(failed, 5);
    unlink(path);
    free(path);
}
#endif

/* ---- the request log line ----------------------------------------------------------------- */

/* What on_completed made with jansson before the line was written straight out: the oracle. */
static char *old_request_line(const char *method, const char *path, int status, int64_t us,
                              const char *reason, int terminated)
{
    json_t *line =
        json_pack("{s:s, s:s, s:s, s:s, s:i, s:I}", "level", "info", "msg", "request", "method",
                  method[0] ? method : "-", "path", path[0] ? path : "-", "status", status,
                  "duration_us", (json_int_t)us);
    cr_assert_not_null(line);
    if (reason[0])
        json_object_set_new(line, "reason", json_string(reason));
    if (terminated >= 0)
        json_object_set_new(line, "terminated", json_integer(terminated));
    char *s = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    json_decref(line);
    cr_assert_not_null(s);
    return s;
}

Test(log, the_request_line_is_jansson_s_line_with_ts_first)
{
    static const struct {
        const char *method, *path;
        int status;
        int64_t us;
        const char *reason;
        int terminated;
    } cases[] = {
        {"POST", "/v1/token", 200, 118, "granted jti=abc", -1},
        {"", "", 0, 0, "", -1},
        {"GET", "/v1/token?x", 405, 1, "method not allowed", 2},
        {"POST", "/v1/token", 400, INT64_MAX, "subject_token: \"quoted\" and \\ back", -1},
        {"POST", "/v1/token", 400, -5, "ctl \x01\x1f\n\t\r\b\f del \x7f", 4},
        {"POST", "/v1/token", 400, 7, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91 \xe2\x80\xa8", -1},
        /* not UTF-8: jansson's json_string refused it and the member was left out */
        {"POST", "/v1/token", 400, 7, "bad \xff utf-8", -1},
        {"PUT", "/????", 413, 9, "", 1},
    };
    char path[] = "/tmp/ferryd-log-XXXXXX";
    int fd = mkstemp(path), saved = dup(STDERR_FILENO);
    char big_reason[FERRYD_REASON_MAX];

    cr_assert_geq(fd, 0);
    cr_assert_geq(saved, 0);
    /* the longest reason, every byte escaped to six */
    memset(big_reason, '\x02', sizeof(big_reason) - 1);
    big_reason[sizeof(big_reason) - 1] = '\0';

    fflush(stderr);
    cr_assert_geq(dup2(fd, STDERR_FILENO), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        ferryd_log_request(cases[i].method, cases[i].path, cases[i].status, cases[i].us,
                           cases[i].reason, cases[i].terminated);
    ferryd_log_request("POST", "/v1/token", 500, 3, big_reason, -1);
    fflush(stderr);
    cr_assert_geq(dup2(saved, STDERR_FILENO), 0);
    close(saved);

    FILE *f = fdopen(fd, "r");
    cr_assert_not_null(f);
    rewind(f);
    char *line = NULL;
    size_t cap = 0;
    size_t n = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) > 0) {
        const char *method, *pth, *reason;
        int status, terminated;
        int64_t us;

        cr_assert_lt(n, sizeof(cases) / sizeof(cases[0]) + 1, "one line per call");
        if (n < sizeof(cases) / sizeof(cases[0])) {
            method = cases[n].method, pth = cases[n].path, reason = cases[n].reason;
            status = cases[n].status, us = cases[n].us, terminated = cases[n].terminated;
        } else {
            method = "POST", pth = "/v1/token", reason = big_reason;
            status = 500, us = 3, terminated = -1;
        }
        cr_assert_eq(line[len - 1], '\n');
        line[--len] = '\0';
        for (ssize_t k = 0; k < len; k++)
            cr_assert((unsigned char)line[k] >= 0x20 && (unsigned char)line[k] < 0x80,
                      "line %zu byte %zd", n, k);
        /* {"ts":"YYYY-MM-DDTHH:MM:SS.uuuuuuZ",<the old line's members>} */
        static const char pat[] = "{\"ts\":\"dddd-dd-ddTdd:dd:dd.ddddddZ\",";
        cr_assert_gt((size_t)len, sizeof(pat) - 1);
        for (size_t k = 0; k < sizeof(pat) - 1; k++)
            cr_assert(pat[k] == 'd' ? line[k] >= '0' && line[k] <= '9' : line[k] == pat[k],
                      "line %zu: %s", n, line);
        char *old = old_request_line(method, pth, status, us, reason, terminated);
        cr_assert_str_eq(line + sizeof(pat) - 1, old + 1, "line %zu", n);
        /* and it parses, with the members in order */
        json_t *doc = NULL;
        cr_assert_eq(ferry_json_parse(line, (size_t)len, 65536, 4, &doc, NULL, 0), 0, "line %zu", n);
        cr_assert_str_eq(json_object_iter_key(json_object_iter(doc)), "ts");
        cr_assert_str_eq(json_string_value(json_object_get(doc, "path")), pth[0] ? pth : "-");
        cr_assert_eq(json_integer_value(json_object_get(doc, "status")), status);
        if (reason[0] && n != 6)
            cr_assert_str_eq(json_string_value(json_object_get(doc, "reason")), reason);
        else
            cr_assert_null(json_object_get(doc, "reason"));
        json_decref(doc);
        free(old);
        n++;
    }
    cr_assert_eq(n, sizeof(cases) / sizeof(cases[0]) + 1);
    free(line);
    fclose(f);
    unlink(path);
}
