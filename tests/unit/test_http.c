/* tests/unit/test_http.c - the outbound HTTP client through real libcurl against the loopback
 * IdP stand-in (tests/peers/idp_standin.py) with throwaway certificates (mkcerts.sh).
 * SECURITY-TESTS D2 (URL, redirect and TLS rules), D3 (size caps and timeouts), D7 (proxy
 * environment ignored), F6 (no redirect to another host).
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/hooks.h>

#include "basic/macro.h"
#include "ferry/error.h"
#include "ferry/http.h"
#include "standin.h"
#include "testutil.h"

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    if (tu_certs_setup() < 0)
        fprintf(stderr, "test_http: could not create test certificates\n");
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    tu_certs_teardown();
}

/* ---- helpers ------------------------------------------------------------------------------ */

static void standin_stopp(tu_standin **s)
{
    tu_standin_stop(*s);
}
#define _cleanup_standin_ _cleanup_(standin_stopp)

static tu_standin *must_start(tu_standin *s)
{
    cr_assert_not_null(s, "could not start tests/peers/idp_standin.py");
    return s;
}

/* Options for the stand-ins: the test CA, short timeouts. ca must stay alive. */
static ferry_http_options test_opts(const char *ca)
{
    return (ferry_http_options){
        .connect_timeout_ms = 2000,
        .total_timeout_ms = 5000,
        .max_redirects = -1,
        .ca_file = ca,
    };
}

static char *ca_path(void)
{
    char *ca = tu_cert_path("ca.pem");
    cr_assert_not_null(ca, "test certificates missing (tests/peers/mkcerts.sh failed?)");
    return ca;
}

/* GET path on s with opts; returns the ferry error code and fills *resp. */
static int get(const tu_standin *s, const char *path, const ferry_http_options *o,
               ferry_http_response *resp)
{
    _cleanup_free_ char *url = tu_standin_url(s, path);
    cr_assert_not_null(url);
    return ferry_http_get(url, o, resp);
}

#define assert_err(r, want)                                                                        \
    cr_assert_eq((r), (want), "got %d (%s), want %d (%s)", (r), ferry_strerror(r), (want),         \
                 ferry_strerror(want))

/* ---- URL rules (no network) --------------------------------------------------------------- */

static const struct url_case {
    const char *url;
    int strict;   /* expected without allow_http_loopback */
    int loopback; /* expected with allow_http_loopback */
} url_cases[] = {
    {"https://idp.example.com/.well-known/openid-configuration", 0, 0},
    {"HTTPS://IDP.EXAMPLE.COM:8443/jwks", 0, 0},
    {"https://127.0.0.1:8443/jwks", 0, 0},
    {"https://[::1]/jwks", 0, 0},
    {"https://idp.example.com/a%0d%0ab", 0, 0}, /* encoded CR/LF stays encoded in the path */
    /* plain http: literal loopback addresses only, and only when allowed */
    {"http://127.0.0.1:8080/jwks", -FERRY_EPOLICY, 0},
    {"http://[::1]:8080/jwks", -FERRY_EPOLICY, 0},
    {"http://[0:0:0:0:0:0:0:1]:8080/jwks", -FERRY_EPOLICY, 0},
    {"http://localhost:8080/jwks", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"http://127.0.0.2/jwks", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"http://[::ffff:127.0.0.1]/jwks", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"http://idp.example.com/jwks", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"http://169.254.169.254/latest/meta-data", -FERRY_EPOLICY, -FERRY_EPOLICY},
    /* userinfo in any form */
    {"https://user:pass@idp.example.com/", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"https://user@idp.example.com/", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"https://@idp.example.com/", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"https://:pw@idp.example.com/", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"https://idp.example.com@evil.example/", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"http://user@127.0.0.1/", -FERRY_EPOLICY, -FERRY_EPOLICY},
    /* raw control characters, spaces, non-ASCII */
    {"https://idp.example.com/a\r\nX-Injected: 1", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"https://idp.example.com/a\nb", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"https://idp.example.com/a b", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"https://idp.example.com/\t", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {" https://idp.example.com/", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"https://idp.example.com/\x7f", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"https://idp.ex\xc3\xa4mple.com/", -FERRY_EPOLICY, -FERRY_EPOLICY},
    /* other schemes and odd shapes */
    {"file:///etc/passwd", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"gopher://127.0.0.1:70/_x", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"ftp://idp.example.com/jwks", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"dict://127.0.0.1:11211/stat", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"ldap://idp.example.com/", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"idp.example.com/jwks", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"//idp.example.com/jwks", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"https:/idp.example.com/jwks", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"https:///idp.example.com/jwks", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"https://", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"https://:443/", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"https://idp.example.com:99999/", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"https://[fe80::1%25eth0]/", -FERRY_EPOLICY, -FERRY_EPOLICY},
    {"", -FERRY_EPOLICY, -FERRY_EPOLICY},
};

Test(url, table)
{
    ferry_http_options strict = {.max_redirects = -1};
    ferry_http_options loop = {.max_redirects = -1, .allow_http_loopback = true};

    for (size_t i = 0; i < ARRAY_SIZE(url_cases); i++) {
        const struct url_case *c = &url_cases[i];
        int r1 = ferry_http_check_url(c->url, &strict);
        int r2 = ferry_http_check_url(c->url, &loop);
        cr_expect_eq(r1, c->strict, "case %zu %s: strict got %d want %d", i, c->url, r1, c->strict);
        cr_expect_eq(r2, c->loopback, "case %zu %s: loopback got %d want %d", i, c->url, r2,
                     c->loopback);
    }
}

Test(url, null_opts_means_strict)
{
    cr_assert_eq(ferry_http_check_url("https://idp.example.com/", NULL), 0);
    cr_assert_eq(ferry_http_check_url("http://127.0.0.1/", NULL), -FERRY_EPOLICY);
    cr_assert_eq(ferry_http_check_url(NULL, NULL), -EINVAL);
}

Test(url, overlong_refused)
{
    size_t n = 9000;
    _cleanup_free_ char *u = malloc(n + 1);
    cr_assert_not_null(u);
    memcpy(u, "https://idp.example.com/", 24);
    memset(u + 24, 'a', n - 24);
    u[n] = '\0';
    cr_assert_eq(ferry_http_check_url(u, NULL), -FERRY_EPOLICY);
    u[8000] = '\0';
    cr_assert_eq(ferry_http_check_url(u, NULL), 0);
}

Test(url, get_refuses_before_any_connection)
{
    _cleanup_standin_ tu_standin *s = must_start(tu_standin_start(NULL, NULL));
    ferry_http_options o = {.max_redirects = -1}; /* allow_http_loopback off */
    ferry_http_response resp = {0};
    _cleanup_free_ char *localhost = NULL;

    assert_err(get(s, "/ok", &o, &resp), -FERRY_EPOLICY);
    o.allow_http_loopback = true;
    cr_assert_eq(asprintf(&localhost, "http://localhost:%d/ok", tu_standin_port(s)) > 0, true);
    assert_err(ferry_http_get(localhost, &o, &resp), -FERRY_EPOLICY);
    cr_assert_eq(tu_standin_connections(s), 0, "a refused URL must not be connected to");
    cr_assert_null(resp.body, "ret_resp must not be written on failure");
}

Test(url, bad_options)
{
    ferry_http_response resp = {0};
    ferry_http_options o = {.max_redirects = 4};

    assert_err(ferry_http_get("https://idp.example.com/", &o, &resp), -FERRY_ECONFIG);
    o = (ferry_http_options){.max_redirects = -2};
    assert_err(ferry_http_get("https://idp.example.com/", &o, &resp), -FERRY_ECONFIG);
    o = (ferry_http_options){.total_timeout_ms = -1};
    assert_err(ferry_http_get("https://idp.example.com/", &o, &resp), -FERRY_ECONFIG);
    o = (ferry_http_options){.proxy = "socks5://127.0.0.1:1080"};
    assert_err(ferry_http_get("https://idp.example.com/", &o, &resp), -FERRY_ECONFIG);
    o = (ferry_http_options){.proxy = ""};
    assert_err(ferry_http_get("https://idp.example.com/", &o, &resp), -FERRY_ECONFIG);
    o = (ferry_http_options){.proxy = "http://127.0.0.1:1\r\n"};
    assert_err(ferry_http_get("https://idp.example.com/", &o, &resp), -FERRY_ECONFIG);
    cr_assert_eq(ferry_http_get(NULL, NULL, &resp), -EINVAL);
    cr_assert_eq(ferry_http_get("https://idp.example.com/", NULL, NULL), -EINVAL);
}

Test(url, release_is_idempotent)
{
    ferry_http_response resp = {0};

    ferry_http_response_release(&resp);
    ferry_http_response_release(&resp);
    ferry_http_response_release(NULL);
    cr_assert_null(resp.body);
    cr_assert_eq(ferry_http_global_init(), 0);
    cr_assert_eq(ferry_http_global_init(), 0);
}

/* ---- Cache-Control ------------------------------------------------------------------------ */

static const struct cc_case {
    const char *value;
    long want;
} cc_cases[] = {
    {"max-age=300", 300},
    {"public, max-age=3600", 3600},
    {"MAX-AGE=60", 60},
    {"Max-Age=60, Must-Revalidate", 60},
    {"max-age=0", 0},
    {"max-age=007", 7},
    {"max-age=\"120\"", 120},
    {"  max-age=10  ,  public ", 10},
    {",,max-age=10,,", 10},
    {"max-age=10,\tprivate", 10},
    {"private=\"Set-Cookie, max-age=5\", max-age=20", 20}, /* comma inside a quoted value */
    {"private=\"a\\\"b\", max-age=20", 20},                /* escaped quote */
    {"s-maxage=100", -1}, /* shared caches only: no lifetime for us */
    {"s-maxage=100, max-age=30", 30},
    {"max-age=2147483647", 2147483647L},
    {"max-age=2147483648", 2147483647L},
    {"max-age=99999999999999999999999999999999", 2147483647L},
    /* no-store / no-cache win */
    {"no-store", 0},
    {"no-cache", 0},
    {"NO-STORE", 0},
    {"max-age=600, no-cache", 0},
    {"no-cache=\"Set-Cookie\", max-age=600", 0},
    {"no-store, max-age=600", 0},
    /* nothing usable */
    {"", -1},
    {"public", -1},
    {"must-revalidate, private", -1},
    {"max-age", -1},
    {"max-age=", -1},
    {"max-age=-1", -1},
    {"max-age=+5", -1},
    {"max-age=1.5", -1},
    {"max-age=abc", -1},
    {"max-age=0x10", -1},
    {"max-age=\"\"", -1},
    {"max-age=\"12a\"", -1},
    {"max-age=\"000000000000000000000000000007x\"", -1},
    {"max-age = 60", -1},
    {"max-age=60 junk", -1},
    {"max-age=60; private", -1},
    {"max-age=\"60", -1},
    {"private=\"unterminated, max-age=60", -1},
    {"max-age=60, max-age=60", -1},
    {"max-age=60, max-age=90", -1},
    {"max-age=60, @", -1},
    {"=60", -1},
    {"no-store\x01", -1},
    {"maxage=60", -1},
    {"max-ages=60", -1},
    {"xmax-age=60", -1},
};

Test(cache_control, table)
{
    for (size_t i = 0; i < ARRAY_SIZE(cc_cases); i++) {
        long got = ferry_http_cache_max_age(cc_cases[i].value);
        cr_expect_eq(got, cc_cases[i].want, "case %zu \"%s\": got %ld want %ld", i,
                     cc_cases[i].value, got, cc_cases[i].want);
    }
}

Test(media_type, parameters_case_and_blanks)
{
    cr_assert(ferry_http_media_type_is("application/json", "application/json"));
    cr_assert(ferry_http_media_type_is("Application/JSON; charset=utf-8", "application/json"));
    cr_assert(ferry_http_media_type_is("application/json \t;x=y", "application/json"));
    cr_assert(!ferry_http_media_type_is("application/jsonp", "application/json"));
    cr_assert(!ferry_http_media_type_is("application/json-seq", "application/json"));
    cr_assert(!ferry_http_media_type_is("text/html", "application/json"));
    cr_assert(!ferry_http_media_type_is("", "application/json"));
    cr_assert(!ferry_http_media_type_is(NULL, "application/json"));
    cr_assert(!ferry_http_media_type_is("application/json", NULL));
}

Test(cache_control, null_and_huge)
{
    cr_assert_eq(ferry_http_cache_max_age(NULL), -1);
    size_t n = 5000;
    _cleanup_free_ char *v = malloc(n + 1);
    cr_assert_not_null(v);
    memset(v, ' ', n);
    memcpy(v, "max-age=60", 10);
    v[n] = '\0';
    cr_assert_eq(ferry_http_cache_max_age(v), -1, "over 4 KiB is refused");
    v[4000] = '\0';
    cr_assert_eq(ferry_http_cache_max_age(v), 60);
}

/* ---- TLS ---------------------------------------------------------------------------------- */

Test(tls, test_ca_accepted)
{
    _cleanup_free_ char *ca = ca_path();
    _cleanup_standin_ tu_standin *s =
        must_start(tu_standin_start("good", "--header", "/ok=Cache-Control:max-age=77", NULL));
    ferry_http_options o = test_opts(ca);
    ferry_http_response resp = {0};
    _cleanup_free_ char *url = tu_standin_url(s, "/ok");

    assert_err(ferry_http_get(url, &o, &resp), 0);
    cr_assert_eq(resp.status, 200);
    cr_assert_str_eq(resp.body, "{\"ok\": true}");
    cr_assert_eq(resp.body_len, strlen("{\"ok\": true}"));
    cr_assert_str_eq(resp.content_type, "application/json");
    cr_assert_str_eq(resp.cache_control, "max-age=77");
    cr_assert_eq(ferry_http_cache_max_age(resp.cache_control), 77);
    cr_assert_str_eq(resp.final_url, url);
    cr_assert_eq(resp.redirects, 0);
    ferry_http_response_release(&resp);
    cr_assert_null(resp.body);
    cr_assert_eq(tu_standin_count(s, "/ok"), 1);
}

Test(tls, system_store_does_not_know_test_ca)
{
    _cleanup_standin_ tu_standin *s = must_start(tu_standin_start("good", NULL));
    ferry_http_options o = test_opts(NULL);
    ferry_http_response resp = {0};

    assert_err(get(s, "/ok", &o, &resp), -FERRY_EFETCH);
    cr_assert_eq(tu_standin_count(s, "/ok"), 0);
}

Test(tls, wrong_host_refused)
{
    _cleanup_free_ char *ca = ca_path();
    _cleanup_standin_ tu_standin *s = must_start(tu_standin_start("wronghost", NULL));
    ferry_http_options o = test_opts(ca);
    ferry_http_response resp = {0};

    assert_err(get(s, "/ok", &o, &resp), -FERRY_EFETCH);
    cr_assert_eq(tu_standin_count(s, "/ok"), 0, "no request may be sent over a bad TLS session");
}

Test(tls, expired_refused)
{
    _cleanup_free_ char *ca = ca_path();
    _cleanup_standin_ tu_standin *s = must_start(tu_standin_start("expired", NULL));
    ferry_http_options o = test_opts(ca);
    ferry_http_response resp = {0};

    assert_err(get(s, "/ok", &o, &resp), -FERRY_EFETCH);
    cr_assert_eq(tu_standin_count(s, "/ok"), 0);
}

Test(tls, untrusted_ca_refused)
{
    _cleanup_free_ char *ca = ca_path();
    _cleanup_free_ char *evil = tu_cert_path("evilca.pem");
    _cleanup_standin_ tu_standin *s = must_start(tu_standin_start("untrusted", NULL));
    ferry_http_options o = test_opts(ca);
    ferry_http_response resp = {0};

    assert_err(get(s, "/ok", &o, &resp), -FERRY_EFETCH);
    cr_assert_eq(tu_standin_count(s, "/ok"), 0);
    /* Control: the same server is fine for a client that trusts its CA. */
    o.ca_file = evil;
    assert_err(get(s, "/ok", &o, &resp), 0);
    cr_assert_eq(resp.status, 200);
    ferry_http_response_release(&resp);
}

Test(tls, request_shape)
{
    _cleanup_free_ char *ca = ca_path();
    _cleanup_standin_ tu_standin *s =
        must_start(tu_standin_start("good", "--fault", "/e=echo", NULL));
    ferry_http_options o = test_opts(ca);
    ferry_http_response resp = {0};
    bool accept = false, agent = false;

    /* Accept and User-Agent, nothing else: no Accept-Encoding, Expect, Cookie, Authorization. */
    assert_err(get(s, "/e", &o, &resp), 0);
    json_t *j = json_loadb(resp.body, resp.body_len, JSON_REJECT_DUPLICATES, NULL);
    cr_assert_not_null(j);
    cr_assert_str_eq(json_string_value(json_object_get(j, "method")), "GET");
    size_t i;
    json_t *h;
    json_array_foreach(json_object_get(j, "headers"), i, h)
    {
        const char *name = json_string_value(json_array_get(h, 0));
        const char *value = json_string_value(json_array_get(h, 1));
        cr_assert(name && value);
        if (strcasecmp(name, "Accept") == 0) {
            cr_expect_str_eq(value, "application/json");
            accept = true;
        } else if (strcasecmp(name, "User-Agent") == 0) {
            cr_expect_str_eq(value, "ferry/" PACKAGE_VERSION);
            agent = true;
        } else {
            /* only Host may accompany them */
            cr_expect_eq(strcasecmp(name, "Host"), 0, "unexpected request header %s: %s", name,
                         value);
        }
    }
    cr_assert(accept && agent);
    json_decref(j);
    ferry_http_response_release(&resp);
}

/* ---- plain http on loopback ------------------------------------------------------------- */

Test(http, loopback_allowed_when_asked)
{
    _cleanup_standin_ tu_standin *s = must_start(tu_standin_start(NULL, NULL));
    ferry_http_options o = test_opts(NULL);
    ferry_http_response resp = {0};

    assert_err(get(s, "/ok", &o, &resp), -FERRY_EPOLICY);
    cr_assert_eq(tu_standin_connections(s), 0);
    o.allow_http_loopback = true;
    assert_err(get(s, "/ok", &o, &resp), 0);
    cr_assert_eq(resp.status, 200);
    ferry_http_response_release(&resp);
    cr_assert_eq(tu_standin_count(s, "/ok"), 1);
}

Test(http, ipv6_loopback)
{
    tu_standin *s = tu_standin_start(NULL, "--bind", "::1", NULL);
    ferry_http_options o = test_opts(NULL);
    ferry_http_response resp = {0};
    _cleanup_free_ char *url = NULL;

    if (!s)
        cr_skip_test("no IPv6 loopback on this machine");
    o.allow_http_loopback = true;
    cr_assert_gt(asprintf(&url, "http://[::1]:%d/ok", tu_standin_port(s)), 0);
    int r = ferry_http_get(url, &o, &resp);
    tu_standin_stop(s);
    assert_err(r, 0);
    cr_assert_eq(resp.status, 200);
    ferry_http_response_release(&resp);
}

/* ---- status codes and bodies are passed through ----------------------------------------- */

Test(http, status_and_body_passed_through)
{
    _cleanup_free_ char *ca = ca_path();
    _cleanup_standin_ tu_standin *s =
        must_start(tu_standin_start("good", "--fault", "/e=status:500", "--fault",
                                    "/j=invalid-json", "--fault", "/n=status:307", NULL));
    ferry_http_options o = test_opts(ca);
    ferry_http_response resp = {0};

    assert_err(get(s, "/e", &o, &resp), 0);
    cr_assert_eq(resp.status, 500);
    ferry_http_response_release(&resp);
    assert_err(get(s, "/j", &o, &resp), 0);
    cr_assert_eq(resp.status, 200);
    cr_assert_str_eq(resp.body, "{\"keys\": [");
    ferry_http_response_release(&resp);
    /* a 3xx without Location is an answer, not a redirect */
    assert_err(get(s, "/n", &o, &resp), 0);
    cr_assert_eq(resp.status, 307);
    cr_assert_eq(resp.redirects, 0);
    ferry_http_response_release(&resp);
}

/* Retry-After (delay-seconds or HTTP-date) and WWW-Authenticate reach the caller. */
Test(http, retry_after_and_challenge)
{
    _cleanup_free_ char *ca = ca_path();
    _cleanup_standin_ tu_standin *s = must_start(tu_standin_start(
        "good", "--fault", "/t=status:429", "--header", "/t=Retry-After:7", "--header",
        "/big=Retry-After:99999999999999999999", "--header", "/past=Retry-After:Sun, 06 Nov 1994 "
        "08:49:37 GMT", "--header", "/future=Retry-After:Fri, 31 Dec 9999 23:59:59 GMT",
        "--header", "/bad=Retry-After:soon", "--header", "/neg=Retry-After:-5", "--fault",
        "/c=status:401", "--header",
        "/c=WWW-Authenticate:Bearer authorization=\"https://login.example/t\", resource=\"x\"",
        NULL));
    ferry_http_options o = test_opts(ca);
    ferry_http_response resp = {0};
    static const struct {
        const char *path;
        long want;
    } cases[] = {
        {"/t", 7},
        {"/big", FERRY_HTTP_RETRY_AFTER_MAX},
        {"/past", 0},
        {"/future", FERRY_HTTP_RETRY_AFTER_MAX},
        {"/bad", -1},
        {"/neg", -1},
        {"/ok", -1},
    };

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        assert_err(get(s, cases[i].path, &o, &resp), 0);
        cr_assert_eq(resp.retry_after, cases[i].want, "%s: %ld", cases[i].path,
                     resp.retry_after);
        cr_assert_null(resp.www_authenticate);
        ferry_http_response_release(&resp);
    }
    assert_err(get(s, "/c", &o, &resp), 0);
    cr_assert_eq(resp.status, 401);
    cr_assert_str_eq(resp.www_authenticate,
                     "Bearer authorization=\"https://login.example/t\", resource=\"x\"");
    ferry_http_response_release(&resp);
    cr_assert_null(resp.www_authenticate);
}

/* The retry pause honours Retry-After within the caller's budget, and refuses past it. */
Test(http, retry_pause_budget)
{
    ferry_http_response resp = {.status = 429, .retry_after = 100};
    long budget = 5000;

    /* Retry-After 100 s does not fit in 5 s: no sleep, budget untouched. */
    assert_err(ferry_http_retry_pause(&resp, 0, 10, &budget), -EAGAIN);
    cr_assert_eq(budget, 5000);
    /* Retry-After 1 s fits: charged in full (it is longer than the 10 ms backoff). */
    resp.retry_after = 1;
    assert_err(ferry_http_retry_pause(&resp, 0, 10, &budget), 0);
    cr_assert_eq(budget, 4000);
    /* No Retry-After (-1) or 0: the jittered backoff, between half and all of base << n. */
    resp.retry_after = -1;
    assert_err(ferry_http_retry_pause(&resp, 2, 10, &budget), 0);
    cr_assert(budget <= 4000 - 20 && budget >= 4000 - 40, "%ld", budget);
    budget = 4000;
    assert_err(ferry_http_retry_pause(NULL, 0, 10, &budget), 0);
    cr_assert(budget <= 4000 - 5 && budget >= 4000 - 10, "%ld", budget);
    /* The backoff alone can exhaust the budget. */
    budget = 3;
    assert_err(ferry_http_retry_pause(NULL, 0, 10, &budget), -EAGAIN);
    cr_assert_eq(budget, 3);
    assert_err(ferry_http_retry_pause(NULL, 0, 10, NULL), -EINVAL);
}

Test(http, connection_failures)
{
    _cleanup_free_ char *ca = ca_path();
    tu_standin *gone = must_start(tu_standin_start(NULL, NULL));
    _cleanup_standin_ tu_standin *s =
        must_start(tu_standin_start("good", "--fault", "/c=close", NULL));
    ferry_http_options o = test_opts(ca);
    ferry_http_response resp = {0};
    _cleanup_free_ char *url = tu_standin_url(gone, "/ok");

    tu_standin_stop(gone); /* nothing listens on its port now */
    o.allow_http_loopback = true;
    assert_err(ferry_http_get(url, &o, &resp), -FERRY_EFETCH);
    assert_err(get(s, "/c", &o, &resp), -FERRY_EFETCH);
}

/* ---- redirects ---------------------------------------------------------------------------- */

Test(redirect, same_origin_followed)
{
    _cleanup_free_ char *ca = ca_path();
    _cleanup_standin_ tu_standin *s =
        must_start(tu_standin_start("good", "--fault", "/c2=chain:2:/ok", "--fault",
                                    "/c3=chain:3:/ok", "--fault", "/dir/x=redirect:../ok", NULL));
    ferry_http_options o = test_opts(ca);
    ferry_http_response resp = {0};
    _cleanup_free_ char *ok = tu_standin_url(s, "/ok");

    assert_err(get(s, "/c2", &o, &resp), 0);
    cr_assert_eq(resp.status, 200);
    cr_assert_eq(resp.redirects, 2);
    cr_assert_str_eq(resp.final_url, ok);
    cr_assert_str_eq(resp.body, "{\"ok\": true}");
    ferry_http_response_release(&resp);

    assert_err(get(s, "/c3", &o, &resp), 0);
    cr_assert_eq(resp.redirects, 3);
    ferry_http_response_release(&resp);

    /* relative Location resolved against the current URL */
    assert_err(get(s, "/dir/x", &o, &resp), 0);
    cr_assert_eq(resp.redirects, 1);
    cr_assert_str_eq(resp.final_url, ok);
    ferry_http_response_release(&resp);

    cr_assert_eq(tu_standin_count(s, "/c2"), 2);
    cr_assert_eq(tu_standin_count(s, "/c3"), 3);
    cr_assert_eq(tu_standin_count(s, "/ok"), 3);
}

Test(redirect, four_hops_refused)
{
    _cleanup_free_ char *ca = ca_path();
    _cleanup_standin_ tu_standin *s =
        must_start(tu_standin_start("good", "--fault", "/c4=chain:4:/ok", NULL));
    ferry_http_options o = test_opts(ca);
    ferry_http_response resp = {0};

    assert_err(get(s, "/c4", &o, &resp), -FERRY_EPOLICY);
    cr_assert_eq(tu_standin_count(s, "/c4"), 4);
    cr_assert_eq(tu_standin_count(s, "/ok"), 0, "the 4th hop must not be fetched");
}

Test(redirect, max_redirects_option)
{
    _cleanup_free_ char *ca = ca_path();
    _cleanup_standin_ tu_standin *s = must_start(
        tu_standin_start("good", "--fault", "/c1=chain:1:/ok", "--fault", "/c2=chain:2:/ok", NULL));
    ferry_http_options o = test_opts(ca);
    ferry_http_response resp = {0};

    o.max_redirects = 0;
    assert_err(get(s, "/c1", &o, &resp), -FERRY_EPOLICY);
    o.max_redirects = 1;
    assert_err(get(s, "/c2", &o, &resp), -FERRY_EPOLICY);
    assert_err(get(s, "/c1", &o, &resp), 0);
    cr_assert_eq(resp.redirects, 1);
    ferry_http_response_release(&resp);
    cr_assert_eq(tu_standin_count(s, "/ok"), 1);
}

Test(redirect, https_to_http_refused)
{
    _cleanup_free_ char *ca = ca_path();
    _cleanup_standin_ tu_standin *plain = must_start(tu_standin_start(NULL, NULL));
    _cleanup_free_ char *target = tu_standin_url(plain, "/ok");
    _cleanup_free_ char *fault = NULL;
    cr_assert_gt(asprintf(&fault, "/down=redirect:%s", target), 0);
    _cleanup_standin_ tu_standin *s = must_start(tu_standin_start("good", "--fault", fault, NULL));
    ferry_http_options o = test_opts(ca);
    ferry_http_response resp = {0};

    o.allow_http_loopback = true; /* http to loopback is allowed, a downgrade is not */
    assert_err(get(s, "/down", &o, &resp), -FERRY_EPOLICY);
    cr_assert_eq(tu_standin_count(s, "/down"), 1);
    cr_assert_eq(tu_standin_connections(plain), 0);
    /* Control: the target itself is reachable with these options. */
    assert_err(ferry_http_get(target, &o, &resp), 0);
    ferry_http_response_release(&resp);
}

Test(redirect, other_host_or_port_refused)
{
    _cleanup_free_ char *ca = ca_path();
    _cleanup_standin_ tu_standin *other = must_start(tu_standin_start("good", NULL));
    _cleanup_standin_ tu_standin *s = must_start(tu_standin_start("good", NULL));
    ferry_http_options o = test_opts(ca);
    ferry_http_response resp = {0};
    _cleanup_free_ char *to_localhost = NULL, *to_other = NULL, *with_user = NULL;

    /* localhost is the same machine and in the certificate: only the rule refuses it */
    cr_assert_gt(asprintf(&to_localhost,
                          "{\"faults\":{\"/h\":\"redirect:https://localhost:%d/ok\"}}",
                          tu_standin_port(s)),
                 0);
    cr_assert_gt(asprintf(&to_other, "{\"faults\":{\"/p\":\"redirect:https://127.0.0.1:%d/ok\"}}",
                          tu_standin_port(other)),
                 0);
    cr_assert_gt(asprintf(&with_user,
                          "{\"faults\":{\"/u\":\"redirect:https://me@127.0.0.1:%d/ok\"}}",
                          tu_standin_port(s)),
                 0);
    cr_assert_eq(tu_standin_control(s, to_localhost), 0);
    cr_assert_eq(tu_standin_control(s, to_other), 0);
    cr_assert_eq(tu_standin_control(s, with_user), 0);
    cr_assert_eq(tu_standin_fault(s, "/f", "redirect:file:///etc/passwd"), 0);
    cr_assert_eq(tu_standin_fault(s, "/g", "redirect:gopher://127.0.0.1:70/_x"), 0);
    cr_assert_eq(tu_standin_fault(s, "/sp", "redirect:/o k"), 0);
    cr_assert_eq(tu_standin_fault(s, "/empty", "redirect:"), 0);

    assert_err(get(s, "/h", &o, &resp), -FERRY_EPOLICY);
    assert_err(get(s, "/p", &o, &resp), -FERRY_EPOLICY);
    assert_err(get(s, "/u", &o, &resp), -FERRY_EPOLICY);
    assert_err(get(s, "/f", &o, &resp), -FERRY_EPOLICY);
    assert_err(get(s, "/g", &o, &resp), -FERRY_EPOLICY);
    assert_err(get(s, "/sp", &o, &resp), -FERRY_EPOLICY);
    assert_err(get(s, "/empty", &o, &resp), -FERRY_EPOLICY);
    cr_assert_eq(tu_standin_count(s, "/ok"), 0);
    cr_assert_eq(tu_standin_connections(other), 0);
}

/* ---- size caps ---------------------------------------------------------------------------- */

static long max_rss_kib(void)
{
    struct rusage ru;
    cr_assert_eq(getrusage(RUSAGE_SELF, &ru), 0);
    return ru.ru_maxrss;
}

Test(limits, chunked_body_over_cap)
{
    _cleanup_free_ char *ca = ca_path();
    _cleanup_standin_ tu_standin *s = must_start(tu_standin_start(
        "good", "--fault", "/big=oversize:67108864", "--fault", "/jwks=oversize", NULL));
    ferry_http_options o = test_opts(ca);
    ferry_http_response resp = {0};
    long before = max_rss_kib();

    /* 64 MiB offered, chunked without Content-Length: aborted at the 256 KiB default cap */
    assert_err(get(s, "/big", &o, &resp), -FERRY_ETOOBIG);
    cr_assert_lt(max_rss_kib() - before, 16 * 1024, "memory grew by %ld KiB",
                 max_rss_kib() - before);
    /* and the transfer was aborted, not drained: the server could not write most of it */
    json_t *st = tu_standin_stats(s);
    json_t *sent = json_object_get(json_object_get(st, "sent"), "/big");
    cr_assert(json_is_integer(sent));
    cr_assert_lt(json_integer_value(sent), 32 << 20, "server wrote %lld bytes",
                 (long long)json_integer_value(sent));
    json_decref(st);
    /* the D3 shape: JWKS of 300 KiB */
    assert_err(get(s, "/jwks", &o, &resp), -FERRY_ETOOBIG);
    cr_assert_null(resp.body);
}

Test(limits, cap_boundary)
{
    _cleanup_free_ char *ca = ca_path();
    _cleanup_standin_ tu_standin *s =
        must_start(tu_standin_start("good", "--fault", "/at=oversize:1000", "--fault",
                                    "/over=oversize:1001", "--fault", "/lat=body:", NULL));
    ferry_http_options o = test_opts(ca);
    ferry_http_response resp = {0};

    o.max_response = 1000;
    assert_err(get(s, "/at", &o, &resp), 0);
    cr_assert_eq(resp.body_len, 1000);
    cr_assert_eq(resp.body[1000], '\0');
    ferry_http_response_release(&resp);
    assert_err(get(s, "/over", &o, &resp), -FERRY_ETOOBIG);
    /* an empty body is an empty string, never NULL */
    assert_err(get(s, "/lat", &o, &resp), 0);
    cr_assert_not_null(resp.body);
    cr_assert_eq(resp.body_len, 0);
    ferry_http_response_release(&resp);
}

Test(limits, content_length_over_cap_refused_early)
{
    _cleanup_free_ char *ca = ca_path();
    /* Content-Length: 1 GiB, one byte, then a 30 s stall: only an early refusal is ETOOBIG;
     * waiting for the body would end in the timeout (EFETCH). */
    _cleanup_standin_ tu_standin *s = must_start(
        tu_standin_start("good", "--fault", "/huge=length", "--fault", "/small=length:2000", NULL));
    ferry_http_options o = test_opts(ca);
    ferry_http_response resp = {0};

    o.total_timeout_ms = 4000;
    assert_err(get(s, "/huge", &o, &resp), -FERRY_ETOOBIG);
    o.max_response = 1999;
    assert_err(get(s, "/small", &o, &resp), -FERRY_ETOOBIG);
}

Test(limits, header_flood_refused)
{
    _cleanup_free_ char *ca = ca_path();
    _cleanup_standin_ tu_standin *s = must_start(tu_standin_start(
        "good", "--fault", "/flood=many-headers:100", "--fault", "/some=many-headers:10", NULL));
    ferry_http_options o = test_opts(ca);
    ferry_http_response resp = {0};

    /* 100 KiB of headers: over the 64 KiB header budget of one response */
    assert_err(get(s, "/flood", &o, &resp), -FERRY_ETOOBIG);
    /* Control: 10 KiB of headers are fine. */
    assert_err(get(s, "/some", &o, &resp), 0);
    cr_assert_eq(resp.status, 200);
    ferry_http_response_release(&resp);
}

/* ---- timeouts ----------------------------------------------------------------------------- */

Test(timeout, slowloris_aborted)
{
    _cleanup_free_ char *ca = ca_path();
    _cleanup_standin_ tu_standin *s =
        must_start(tu_standin_start("good", "--fault", "/slow=slowloris", NULL));
    ferry_http_options o = test_opts(ca);
    ferry_http_response resp = {0};

    o.total_timeout_ms = 1000;
    assert_err(get(s, "/slow", &o, &resp), -FERRY_EFETCH);
}

Test(timeout, stall_aborted)
{
    _cleanup_free_ char *ca = ca_path();
    _cleanup_standin_ tu_standin *s =
        must_start(tu_standin_start("good", "--fault", "/stall=stall:30", NULL));
    ferry_http_options o = test_opts(ca);
    ferry_http_response resp = {0};

    o.total_timeout_ms = 1000;
    assert_err(get(s, "/stall", &o, &resp), -FERRY_EFETCH);
    cr_assert_eq(tu_standin_count(s, "/stall"), 1);
}

Test(timeout, total_covers_all_hops)
{
    _cleanup_free_ char *ca = ca_path();
    /* Three answers of 0.3 s each: every hop alone fits in 0.7 s, all of them do not. */
    _cleanup_standin_ tu_standin *s = must_start(
        tu_standin_start("good", "--fault", "/a=delay:0.3:redirect:/b", "--fault",
                         "/b=delay:0.3:redirect:/c", "--fault", "/c=delay:0.3:ok", NULL));
    ferry_http_options o = test_opts(ca);
    ferry_http_response resp = {0};

    o.total_timeout_ms = 700;
    assert_err(get(s, "/a", &o, &resp), -FERRY_EFETCH);
    /* Control: with time enough the same chain succeeds. */
    o.total_timeout_ms = 3000;
    assert_err(get(s, "/a", &o, &resp), 0);
    cr_assert_eq(resp.redirects, 2);
    ferry_http_response_release(&resp);
}

/* ---- proxies (D7) ------------------------------------------------------------------------- */

static void set_proxy_env(const char *proxy_url)
{
    static const char *const vars[] = {"https_proxy", "HTTPS_PROXY", "http_proxy", "ALL_PROXY",
                                       "all_proxy"};
    for (size_t i = 0; i < ARRAY_SIZE(vars); i++)
        cr_assert_eq(setenv(vars[i], proxy_url, 1), 0);
}

Test(proxy, environment_ignored)
{
    _cleanup_free_ char *ca = ca_path();
    _cleanup_standin_ tu_standin *proxy = must_start(tu_standin_start(NULL, "--proxy", NULL));
    _cleanup_standin_ tu_standin *s = must_start(tu_standin_start("good", NULL));
    _cleanup_standin_ tu_standin *plain = must_start(tu_standin_start(NULL, NULL));
    _cleanup_free_ char *proxy_url = tu_standin_url(proxy, "");
    ferry_http_options o = test_opts(ca);
    ferry_http_response resp = {0};

    set_proxy_env(proxy_url);
    assert_err(get(s, "/ok", &o, &resp), 0);
    cr_assert_eq(resp.status, 200);
    ferry_http_response_release(&resp);
    o.allow_http_loopback = true;
    assert_err(get(plain, "/ok", &o, &resp), 0);
    ferry_http_response_release(&resp);
    cr_assert_eq(tu_standin_connections(proxy), 0, "the environment proxy must not be used");
    cr_assert_eq(tu_standin_count(s, "/ok"), 1);
    cr_assert_eq(tu_standin_count(plain, "/ok"), 1);
}

Test(proxy, explicit_proxy_used)
{
    _cleanup_free_ char *ca = ca_path();
    _cleanup_standin_ tu_standin *proxy = must_start(tu_standin_start(NULL, "--proxy", NULL));
    _cleanup_standin_ tu_standin *s = must_start(tu_standin_start("good", NULL));
    _cleanup_free_ char *proxy_url = tu_standin_url(proxy, "");
    ferry_http_options o = test_opts(ca);
    ferry_http_response resp = {0};

    /* NO_PROXY in the environment must not route around a configured proxy either. */
    cr_assert_eq(setenv("NO_PROXY", "127.0.0.1,localhost", 1), 0);
    cr_assert_eq(setenv("no_proxy", "*", 1), 0);
    o.proxy = proxy_url;
    assert_err(get(s, "/ok", &o, &resp), 0);
    cr_assert_eq(resp.status, 200);
    cr_assert_str_eq(resp.body, "{\"ok\": true}");
    ferry_http_response_release(&resp);
    cr_assert_eq(tu_standin_count(proxy, "CONNECT"), 1, "the request must tunnel through it");
    cr_assert_eq(tu_standin_count(s, "/ok"), 1);
}

/* ---- threads ------------------------------------------------------------------------------ */

struct thread_arg {
    const char *url;
    const ferry_http_options *opts;
    int failures;
};

static void *fetch_loop(void *p)
{
    struct thread_arg *a = p;

    for (int i = 0; i < 5; i++) {
        ferry_http_response resp = {0};
        if (ferry_http_get(a->url, a->opts, &resp) != 0 || resp.status != 200 ||
            strcmp(resp.body, "{\"ok\": true}") != 0)
            a->failures++;
        ferry_http_response_release(&resp);
    }
    return NULL;
}

Test(threads, concurrent_gets)
{
    _cleanup_free_ char *ca = ca_path();
    _cleanup_standin_ tu_standin *s = must_start(tu_standin_start("good", NULL));
    ferry_http_options o = test_opts(ca);
    _cleanup_free_ char *url = tu_standin_url(s, "/ok");
    pthread_t th[6];
    struct thread_arg args[ARRAY_SIZE(th)];

    cr_assert_eq(ferry_http_global_init(), 0);
    for (size_t i = 0; i < ARRAY_SIZE(th); i++) {
        args[i] = (struct thread_arg){.url = url, .opts = &o};
        cr_assert_eq(pthread_create(&th[i], NULL, fetch_loop, &args[i]), 0);
    }
    for (size_t i = 0; i < ARRAY_SIZE(th); i++) {
        cr_assert_eq(pthread_join(th[i], NULL), 0);
        cr_expect_eq(args[i].failures, 0, "thread %zu: %d failures", i, args[i].failures);
    }
    cr_assert_eq(tu_standin_count(s, "/ok"), (long)(5 * ARRAY_SIZE(th)));
}

/* ---- the stand-in's OIDC side, as the oidc tests use it ---------------------------------- */

static json_t *get_json(const tu_standin *s, const char *path, const ferry_http_options *o)
{
    ferry_http_response resp = {0};
    json_t *j;

    assert_err(get(s, path, o, &resp), 0);
    cr_assert_eq(resp.status, 200, "%s: status %ld", path, resp.status);
    j = json_loadb(resp.body, resp.body_len, JSON_REJECT_DUPLICATES, NULL);
    ferry_http_response_release(&resp);
    cr_assert_not_null(j, "%s: not JSON", path);
    return j;
}

Test(standin, discovery_document)
{
    _cleanup_free_ char *ca = ca_path();
    _cleanup_standin_ tu_standin *s = must_start(tu_standin_start("good", NULL));
    ferry_http_options o = test_opts(ca);
    _cleanup_free_ char *base = tu_standin_url(s, "");
    _cleanup_free_ char *jwks = tu_standin_url(s, "/jwks");
    const char *wk = "/.well-known/openid-configuration";

    json_t *d = get_json(s, wk, &o);
    cr_assert_str_eq(json_string_value(json_object_get(d, "issuer")), base);
    cr_assert_str_eq(json_string_value(json_object_get(d, "jwks_uri")), jwks);
    json_decref(d);

    cr_assert_eq(tu_standin_control(s, "{\"discovery\":{\"issuer\":\"https://other.example\","
                                       "\"jwks_uri\":null}}"),
                 0);
    d = get_json(s, wk, &o);
    cr_assert_str_eq(json_string_value(json_object_get(d, "issuer")), "https://other.example");
    cr_assert_null(json_object_get(d, "jwks_uri"));
    json_decref(d);

    cr_assert_eq(tu_standin_fault(s, wk, "wrong-issuer"), 0);
    d = get_json(s, wk, &o);
    cr_assert_str_eq(json_string_value(json_object_get(d, "issuer")), "https://other.example/");
    json_decref(d);
    cr_assert_eq(tu_standin_count(s, wk), 3);
}

static void write_file(const char *path, const char *text)
{
    _cleanup_free_ char *tmp = NULL;
    cr_assert_gt(asprintf(&tmp, "%s.tmp", path), 0);
    FILE *f = fopen(tmp, "we");
    cr_assert_not_null(f);
    cr_assert_eq(fputs(text, f) >= 0, true);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(rename(tmp, path), 0);
}

Test(standin, jwks_reloaded_and_counted)
{
    _cleanup_free_ char *ca = ca_path();
    char dir[] = "/tmp/ferry-test-jwks-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    _cleanup_free_ char *file = NULL;
    cr_assert_gt(asprintf(&file, "%s/jwks.json", dir), 0);
    write_file(file, "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"one\",\"k\":\"AA\"}]}");
    _cleanup_standin_ tu_standin *s = must_start(tu_standin_start(
        "good", "--jwks", file, "--header", "/jwks=Cache-Control:max-age=5", NULL));
    ferry_http_options o = test_opts(ca);
    ferry_http_response resp = {0};

    json_t *j = get_json(s, "/jwks", &o);
    json_t *k0 = json_array_get(json_object_get(j, "keys"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(k0, "kid")), "one");
    json_decref(j);
    /* rotation: the file is re-read on every request */
    write_file(file, "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"two\",\"k\":\"AA\"}]}");
    assert_err(get(s, "/jwks", &o, &resp), 0);
    cr_assert(strstr(resp.body, "\"two\""));
    cr_assert_str_eq(resp.cache_control, "max-age=5");
    ferry_http_response_release(&resp);
    cr_assert_eq(tu_standin_count(s, "/jwks"), 2);

    /* runtime faults and a stats reset */
    cr_assert_eq(tu_standin_fault(s, "/jwks", "keys-not-array"), 0);
    j = get_json(s, "/jwks", &o);
    cr_assert(json_is_object(json_object_get(j, "keys")));
    json_decref(j);
    cr_assert_eq(tu_standin_control(s, "{\"reset_stats\":true,\"faults\":{\"/jwks\":null}}"), 0);
    cr_assert_eq(tu_standin_count(s, "/jwks"), 0);
    assert_err(get(s, "/jwks", &o, &resp), 0);
    cr_assert(strstr(resp.body, "\"two\""));
    ferry_http_response_release(&resp);
    cr_assert_eq(tu_standin_count(s, "/jwks"), 1);

    cr_assert_eq(unlink(file), 0);
    cr_assert_eq(rmdir(dir), 0);
}
