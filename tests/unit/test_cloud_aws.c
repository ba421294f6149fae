/* tests/unit/test_cloud_aws.c - unit tests of the AWS credentials module (ferry/cloud.h) and the
 * response parsers of the aws-sm and aws-kms backends (src/lib/secrets/aws-internal.h):
 * the STS XML parser and the JSON parsers against valid answers and hostile ones (truncated at
 * every byte, oversized, missing or repeated members, wrong types, markup and entities), the
 * AWS error mapping (never copying the remote's message), the provider's configuration checks
 * and environment credentials, and the argument checks of ferry_http_request_send.
 * The end-to-end path against moto is tests/integration/test_secrets_aws.py. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <openssl/evp.h>

#include "ferry/cloud.h"
#include "ferry/error.h"
#include "ferry/http.h"
#include "ferry/secrets.h"
#include "lib/secrets/aws-internal.h"

#define CANARY "CANARY-9f2e7c1d"

static const char sts_ok[] =
    "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
    "<AssumeRoleWithWebIdentityResult><Credentials>"
    "<AccessKeyId>ASIARZPUZDIKFEMM5N3S</AccessKeyId>"
    "<SecretAccessKey>6zGBJrHWXnC0jNCJsZpeIiBeRtameXVCyNpKE4d9</SecretAccessKey>"
    "<SessionToken>FQoGZXIvYXdzEBYaDGHSrL4eVgn3hjS+9N7h/RTE=</SessionToken>"
    "<Expiration>2026-11-26T07:47:10.506440Z</Expiration>"
    "</Credentials><AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/r/s</Arn>"
    "</AssumedRoleUser></AssumeRoleWithWebIdentityResult>"
    "<ResponseMetadata><RequestId>x</RequestId></ResponseMetadata>"
    "</AssumeRoleWithWebIdentityResponse>\n";

static int sts(const char *xml, ferry_aws_credentials *c, char *err, size_t errlen)
{
    return ferry_aws_sts_parse(xml, strlen(xml), c, err, errlen);
}

/* sts_ok with the first occurrence of from replaced by to. */
static char *sts_edit(const char *from, const char *to)
{
    const char *p = strstr(sts_ok, from);
    size_t n = strlen(sts_ok) - strlen(from) + strlen(to) + 1;
    char *s = malloc(n);

    cr_assert_not_null(p, "%s", from);
    snprintf(s, n, "%.*s%s%s", (int)(p - sts_ok), sts_ok, to, p + strlen(from));
    return s;
}

Test(sts, parses_the_credentials)
{
    ferry_aws_credentials c = {0};
    char err[256] = "";

    cr_assert_eq(sts(sts_ok, &c, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(c.access_key_id, "ASIARZPUZDIKFEMM5N3S");
    cr_assert_str_eq(c.secret_access_key, "6zGBJrHWXnC0jNCJsZpeIiBeRtameXVCyNpKE4d9");
    cr_assert_str_eq(c.session_token, "FQoGZXIvYXdzEBYaDGHSrL4eVgn3hjS+9N7h/RTE=");
    cr_assert_eq(c.expiration, 1795679230); /* 2026-11-26T07:47:10Z */
    ferry_aws_credentials_clear(&c);
    cr_assert_null(c.secret_access_key);
    cr_assert_eq(c.access_key_id[0], '\0');
}

Test(sts, accepts_a_declaration_and_no_fraction)
{
    ferry_aws_credentials c = {0};
    char *x = sts_edit("2026-11-26T07:47:10.506440Z", "2026-11-26T07:47:10Z");
    size_t n = strlen(x) + 64;
    char *y = malloc(n);

    snprintf(y, n, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n%s", x);
    cr_assert_eq(sts(y, &c, NULL, 0), 0);
    cr_assert_eq(c.expiration, 1795679230);
    ferry_aws_credentials_clear(&c);
    free(x);
    free(y);
}

Test(sts, every_truncation_is_refused)
{
    size_t n = strlen(sts_ok);

    /* The trailing newline may go; any cut into the document itself must not parse. */
    for (size_t cut = 0; cut + 1 < n; cut++) {
        ferry_aws_credentials c = {0};
        char err[256] = "";
        int r = ferry_aws_sts_parse(sts_ok, cut, &c, err, sizeof(err));
        cr_assert_lt(r, 0, "a document cut at %zu parsed", cut);
        cr_assert_null(c.secret_access_key);
        cr_assert_null(strstr(err, "6zGBJ"), "the secret key is in the error: %s", err);
    }
}

Test(sts, hostile_documents_are_refused)
{
    static const struct {
        const char *from, *to, *why;
    } cases[] = {
        {"<AccessKeyId>ASIARZPUZDIKFEMM5N3S</AccessKeyId>", "", "AccessKeyId"},
        {"<SecretAccessKey>", "<SecretAccessKeyX>", "SecretAccessKey"},
        {"<SessionToken>FQoG", "<SessionToken>&amp;FQoG", "entity"},
        {"<SessionToken>FQoG", "<SessionToken><![CDATA[x]]>FQoG", "CDATA"},
        {"<Expiration>2026-11-26T07:47:10.506440Z", "<Expiration>2026-13-26T07:47:10Z",
         "Expiration"},
        {"<Expiration>2026-11-26T07:47:10.506440Z", "<Expiration>tomorrow", "Expiration"},
        {"<AccessKeyId>ASIARZPUZDIKFEMM5N3S", "<AccessKeyId>ASIA-BAD", "AccessKeyId"},
        {"<AccessKeyId>ASIARZPUZDIKFEMM5N3S", "<AccessKeyId>SHORT", "AccessKeyId"},
        {"</Credentials>", "<AccessKeyId>ASIAAAAAAAAAAAAAAAAA</AccessKeyId></Credentials>",
         "twice"},
        {"<Credentials>", "<Credentials a=\"1\"><Credentials>", "Credentials"},
        {"<SecretAccessKey>6zGB", "<SecretAccessKey>6z GB", "SecretAccessKey"},
        {"<AssumeRoleWithWebIdentityResponse ", "<Other ", "root"},
        {"</AssumeRoleWithWebIdentityResponse>", "</AssumeRoleWithWebIdentityResponseX>",
         "truncated"},
        {"<AssumeRoleWithWebIdentityResult>", "<!DOCTYPE x><AssumeRoleWithWebIdentityResult>",
         "document type"},
        {"<Credentials>", "<Credentials></Credentials><Credentials>", "Credentials"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ferry_aws_credentials c = {0};
        char err[256] = "";
        char *x = sts_edit(cases[i].from, cases[i].to);
        int r = sts(x, &c, err, sizeof(err));

        cr_assert_lt(r, 0, "case %zu (%s) parsed", i, cases[i].why);
        cr_assert_null(c.secret_access_key);
        cr_assert(strstr(err, cases[i].why), "case %zu: reason \"%s\" lacks \"%s\"", i, err,
                  cases[i].why);
        cr_assert_null(strstr(err, "6zGBJ"));
        free(x);
    }
}

Test(sts, oversized_and_nul_are_refused)
{
    size_t n = FERRY_AWS_STS_RESPONSE_MAX + 1;
    char *big = malloc(n);
    ferry_aws_credentials c = {0};
    char nul[sizeof(sts_ok)];

    memset(big, ' ', n);
    cr_assert_eq(ferry_aws_sts_parse(big, n, &c, NULL, 0), -FERRY_ETOOBIG);
    free(big);
    memcpy(nul, sts_ok, sizeof(sts_ok));
    nul[40] = '\0';
    cr_assert_eq(ferry_aws_sts_parse(nul, sizeof(sts_ok) - 1, &c, NULL, 0), -FERRY_EMALFORMED);
    cr_assert_eq(ferry_aws_sts_parse(NULL, 0, &c, NULL, 0), -EINVAL);
}

/* ---- errors -------------------------------------------------------------------------------- */

Test(aws_error, maps_types_and_never_copies_the_message)
{
    static const struct {
        long status;
        const char *body;
        int code;
        const char *named;
    } cases[] = {
        {400, "{\"__type\":\"ResourceNotFoundException\",\"message\":\"no " CANARY "\"}", -ENOENT,
         "ResourceNotFoundException"},
        {400,
         "{\"__type\":\"com.amazonaws.kms#InvalidCiphertextException\",\"Message\":\"" CANARY "\"}",
         -EACCES, "InvalidCiphertextException"},
        {400, "{\"__type\":\"ThrottlingException\",\"message\":\"" CANARY "\"}", -EAGAIN,
         "ThrottlingException"},
        {403,
         "<ErrorResponse><Error><Code>AccessDenied</Code><Message>" CANARY
         "</Message></Error></ErrorResponse>",
         -EACCES, "AccessDenied"},
        {400, "<ErrorResponse><Error><Code>InvalidIdentityToken</Code></Error></ErrorResponse>",
         -EACCES, "InvalidIdentityToken"},
        {503, "oops " CANARY, -EAGAIN, "HTTP 503"},
        {429, "", -EAGAIN, "HTTP 429"},
        {400, "{\"__type\":\"SomethingNew\",\"message\":\"" CANARY "\"}", -FERRY_EFETCH,
         "HTTP 400"},
        {400, "{\"__type\":\"" CANARY "<script>\"}", -FERRY_EFETCH, "HTTP 400"},
        {404, "{}", -ENOENT, "HTTP 404"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "";
        int r = ferry_aws_error(cases[i].status, cases[i].body, strlen(cases[i].body), err,
                                sizeof(err));
        cr_assert_eq(r, cases[i].code, "case %zu: %d", i, r);
        cr_assert(strstr(err, cases[i].named), "case %zu: \"%s\"", i, err);
        cr_assert_null(strstr(err, "CANARY"), "case %zu: message copied: %s", i, err);
        cr_assert_null(strstr(err, "SomethingNew"), "case %zu: unknown type named", i);
    }
}

/* ---- Secrets Manager and KMS responses ----------------------------------------------------- */

static int sm(const char *body, const char *field, ferry_secret_value **v, char *err)
{
    return ferry_aws_sm_parse(body, strlen(body), field, v, err, 256);
}

Test(sm_parse, string_binary_key_and_version)
{
    ferry_secret_value *v = NULL;
    char err[256] = "";

    cr_assert_eq(
        sm("{\"Name\":\"a\",\"SecretString\":\"" CANARY "\",\"VersionId\":\"v-1\"}", "", &v, err),
        0, "%s", err);
    cr_assert_eq(v->len, strlen(CANARY));
    cr_assert_str_eq((char *)v->data, CANARY);
    cr_assert_str_eq(v->version, "v-1");
    ferry_secret_value_free(v);

    cr_assert_eq(sm("{\"SecretBinary\":\"AP8BAg==\"}", NULL, &v, err), 0, "%s", err);
    cr_assert_eq(v->len, 4);
    cr_assert(memcmp(v->data, "\x00\xff\x01\x02", 4) == 0);
    cr_assert_str_eq(v->version, "");
    ferry_secret_value_free(v);

    cr_assert_eq(sm("{\"SecretString\":\"{\\\"user\\\":\\\"u\\\",\\\"pw\\\":\\\"" CANARY
                    "\\\"}\",\"SecretBinary\":null}",
                    "pw", &v, err),
                 0, "%s", err);
    cr_assert_str_eq((char *)v->data, CANARY);
    ferry_secret_value_free(v);
}

Test(sm_parse, hostile_responses_are_refused)
{
    static const struct {
        const char *body, *field;
        int code;
        const char *why;
    } cases[] = {
        {"{\"SecretString\":\"" CANARY "\",\"SecretBinary\":\"AA==\"}", "", -FERRY_EMALFORMED,
         "exactly one"},
        {"{\"Name\":\"x\"}", "", -FERRY_EMALFORMED, "exactly one"},
        {"{\"SecretString\":42}", "", -FERRY_EMALFORMED, "not a string"},
        {"{\"SecretBinary\":[1]}", "", -FERRY_EMALFORMED, "not a string"},
        {"{\"SecretBinary\":\"AA=\"}", "", -FERRY_EMALFORMED, "base64"},
        {"{\"SecretBinary\":\"A-_A\"}", "", -FERRY_EMALFORMED, "base64"},
        {"{\"SecretBinary\":\"AB==\"}", "", -FERRY_EMALFORMED, "base64"},
        {"{\"SecretString\":\"" CANARY "\"", "", -FERRY_EMALFORMED, "not a JSON"},
        {"[\"" CANARY "\"]", "", -FERRY_EMALFORMED, "not an object"},
        {"{\"SecretString\":\"" CANARY "\"}", "k", -FERRY_EMALFORMED, "not a JSON object"},
        {"{\"SecretString\":\"{\\\"a\\\":\\\"" CANARY "\\\"}\"}", "b", -ENOENT, "no key"},
        {"{\"SecretString\":\"{\\\"a\\\":[\\\"" CANARY "\\\"]}\"}", "a", -FERRY_EMALFORMED,
         "not a string"},
        {"{\"SecretBinary\":\"AA==\"}", "k", -FERRY_EMALFORMED, "binary"},
        {"{\"SecretString\":\"" CANARY "\",\"VersionId\":7}", "", -FERRY_EMALFORMED, "VersionId"},
        {"{\"SecretString\":\"a\",\"SecretString\":\"b\"}", "", -FERRY_EMALFORMED, "JSON"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ferry_secret_value *v = NULL;
        char err[256] = "";
        int r = sm(cases[i].body, cases[i].field, &v, err);

        cr_assert_eq(r, cases[i].code, "case %zu: %d (%s)", i, r, err);
        cr_assert_null(v, "case %zu: a value came back", i);
        cr_assert(strstr(err, cases[i].why), "case %zu: \"%s\" lacks \"%s\"", i, err, cases[i].why);
        cr_assert_null(strstr(err, "CANARY"), "case %zu: value in the error: %s", i, err);
    }
}

Test(sm_parse, oversized_values_and_bodies_are_refused)
{
    size_t n = FERRY_SECRET_VALUE_MAX + 1, blen = n + 64;
    char *body = malloc(blen);
    ferry_secret_value *v = NULL;
    char err[256];
    int o;

    o = snprintf(body, blen, "{\"SecretString\":\"");
    memset(body + o, 'x', n);
    snprintf(body + o + n, blen - o - n, "\"}");
    cr_assert_eq(sm(body, "", &v, err), -FERRY_ETOOBIG);
    cr_assert_null(v);
    free(body);

    n = FERRY_AWS_SECRET_RESPONSE_MAX + 1;
    body = malloc(n + 1);
    memset(body, ' ', n);
    body[0] = '{';
    body[n - 1] = '}';
    body[n] = '\0';
    cr_assert_eq(sm(body, "", &v, err), -FERRY_ETOOBIG);
    cr_assert_null(v);
    free(body);
}

Test(kms_parse, plaintext_and_refusals)
{
    ferry_secret_value *v = NULL;
    char err[256] = "";
    const char *ok = "{\"KeyId\":\"arn:aws:kms:us-east-1:1:key/k\",\"Plaintext\":\"aGVsbG8=\","
                     "\"EncryptionAlgorithm\":\"SYMMETRIC_DEFAULT\"}";

    cr_assert_eq(ferry_aws_kms_parse(ok, strlen(ok), &v, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(v->len, 5);
    cr_assert_str_eq((char *)v->data, "hello");
    cr_assert_str_eq(v->version, "arn:aws:kms:us-east-1:1:key/k");
    ferry_secret_value_free(v);
    v = NULL;

    static const char *const bad[] = {
        "{\"KeyId\":\"k\"}",
        "{\"Plaintext\":1}",
        "{\"Plaintext\":\"aGVsbG8\"}",
        "{\"Plaintext\":\"\"}",
        "{\"Plaintext\":\"aGVs bG8=\"}",
        "{\"Plaintext\":\"aGVsbG8=\"",
        "null",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_lt(ferry_aws_kms_parse(bad[i], strlen(bad[i]), &v, err, sizeof(err)), 0,
                     "case %zu parsed", i);
        cr_assert_null(v);
        cr_assert(strstr(err, "Decrypt response"), "case %zu: %s", i, err);
    }
    /* Every truncation of a valid answer is refused. */
    for (size_t cut = 0; cut < strlen(ok); cut++) {
        cr_assert_lt(ferry_aws_kms_parse(ok, cut, &v, NULL, 0), 0, "cut at %zu parsed", cut);
        cr_assert_null(v);
    }
}

Test(b64, strict_standard_base64)
{
    ferry_secret_value *v = NULL;

    cr_assert_eq(ferry_aws_b64_value("Zm9vYg==", 8, &v), 0);
    cr_assert_eq(v->len, 4);
    cr_assert(memcmp(v->data, "foob", 4) == 0);
    ferry_secret_value_free(v);
    cr_assert_eq(ferry_aws_b64_value("+/+/", 4, &v), 0);
    cr_assert_eq(v->len, 3);
    ferry_secret_value_free(v);
    cr_assert_eq(ferry_aws_b64_value("Zm9vYg=", 7, &v), -FERRY_EMALFORMED);
    cr_assert_eq(ferry_aws_b64_value("Zm9vYh==", 8, &v), -FERRY_EMALFORMED); /* not canonical */
    cr_assert_eq(ferry_aws_b64_value("Zm=vYg==", 8, &v), -FERRY_EMALFORMED);
    cr_assert_eq(ferry_aws_b64_value("", 0, &v), -FERRY_EMALFORMED);

    /* The value limit is on the decoded bytes: 65536 pass (with padding), 65537 do not. */
    for (size_t len = FERRY_SECRET_VALUE_MAX; len <= FERRY_SECRET_VALUE_MAX + 1; len++) {
        unsigned char *raw = calloc(1, len);
        char *enc = malloc(len / 3 * 4 + 8);
        int n;
        cr_assert(raw && enc);
        n = EVP_EncodeBlock((unsigned char *)enc, raw, (int)len);
        v = NULL;
        cr_assert_eq(ferry_aws_b64_value(enc, (size_t)n, &v),
                     len == FERRY_SECRET_VALUE_MAX ? 0 : -FERRY_ETOOBIG, "%zu", len);
        if (v)
            cr_assert_eq(v->len, len);
        ferry_secret_value_free(v);
        free(raw);
        free(enc);
    }
}

/* ---- provider ------------------------------------------------------------------------------ */

Test(provider, configuration_is_checked)
{
    ferry_aws_provider *p = NULL;
    char err[256];
    ferry_aws_config c = {.region = "us-east-1"};

    c.region = "US_EAST";
    cr_assert_eq(ferry_aws_provider_new(&c, &p, err, sizeof(err)), -FERRY_ECONFIG);
    cr_assert(strstr(err, "region"));
    c.region = "us-east-1";
    c.role_arn = "not-an-arn";
    cr_assert_eq(ferry_aws_provider_new(&c, &p, err, sizeof(err)), -FERRY_ECONFIG);
    cr_assert(strstr(err, "role_arn"));
    c.role_arn = "arn:aws:iam::123456789012:role/r";
    cr_assert_eq(ferry_aws_provider_new(&c, &p, err, sizeof(err)), -FERRY_ECONFIG);
    cr_assert(strstr(err, "web identity"), "%s", err);
    c.web_identity_token_file = "/nonexistent";
    c.sts_endpoint = "http://127.0.0.1:1";
    cr_assert_eq(ferry_aws_provider_new(&c, &p, err, sizeof(err)), -FERRY_ECONFIG);
    cr_assert(strstr(err, "sts_endpoint"), "%s", err);
    c.http.allow_http_loopback = true;
    c.sts_endpoint = "http://127.0.0.1:1/path";
    cr_assert_eq(ferry_aws_provider_new(&c, &p, err, sizeof(err)), -FERRY_ECONFIG);
    c.sts_endpoint = "http://127.0.0.1:1";
    c.session_name = "x";
    cr_assert_eq(ferry_aws_provider_new(&c, &p, err, sizeof(err)), -FERRY_ECONFIG);
    cr_assert(strstr(err, "session_name"));
    c.session_name = NULL;
    c.duration_seconds = 60;
    cr_assert_eq(ferry_aws_provider_new(&c, &p, err, sizeof(err)), -FERRY_ECONFIG);
    c.duration_seconds = 900;
    cr_assert_eq(ferry_aws_provider_new(&c, &p, err, sizeof(err)), 0, "%s", err);
    /* The token file is missing: the fetch fails with a reason and no STS call is made. */
    ferry_aws_credentials cr = {0};
    cr_assert_lt(ferry_aws_provider_get(p, &cr, err, sizeof(err)), 0);
    cr_assert(strstr(err, "web_identity_token_file"), "%s", err);
    cr_assert_null(cr.secret_access_key);
    ferry_aws_provider_free(p);
}

Test(provider, environment_credentials)
{
    ferry_aws_provider *p = NULL;
    ferry_aws_credentials c = {0};
    ferry_aws_config cfg = {.region = "eu-west-1"};
    char err[256] = "";

    cr_assert_eq(ferry_aws_provider_new(&cfg, &p, err, sizeof(err)), 0, "%s", err);
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    unsetenv("AWS_SESSION_TOKEN");
    cr_assert_eq(ferry_aws_provider_get(p, &c, err, sizeof(err)), -FERRY_ECONFIG);
    cr_assert(strstr(err, "AWS_ACCESS_KEY_ID"));
    setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE0123456", 1);
    setenv("AWS_SECRET_ACCESS_KEY", CANARY, 1);
    cr_assert_eq(ferry_aws_provider_get(p, &c, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(c.access_key_id, "AKIDEXAMPLE0123456");
    cr_assert_str_eq(c.secret_access_key, CANARY);
    cr_assert_null(c.session_token);
    ferry_aws_credentials_clear(&c);
    setenv("AWS_SESSION_TOKEN", "tok\x01", 1);
    cr_assert_eq(ferry_aws_provider_get(p, &c, err, sizeof(err)), -FERRY_ECONFIG);
    cr_assert_null(strstr(err, "tok"));
    setenv("AWS_ACCESS_KEY_ID", "AKID-BAD", 1);
    cr_assert_eq(ferry_aws_provider_get(p, &c, err, sizeof(err)), -FERRY_ECONFIG);
    cr_assert_null(strstr(err, CANARY));
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    unsetenv("AWS_SESSION_TOKEN");
    ferry_aws_provider_free(p);
}

/* ---- the HTTP client's request checks ------------------------------------------------------ */

Test(http_request, arguments_are_checked_before_any_connection)
{
    ferry_http_response resp = {0};
    ferry_http_options o = {.allow_http_loopback = true};
    const char *crlf[] = {"X-A: b\r\nX-Injected: c"};
    const char *noname[] = {": b"};
    const char *badname[] = {"X A: b"};
    const char *owned[] = {"Content-Length: 5"};
    ferry_http_request r = {.method = "POST", .url = "http://127.0.0.1:9/"};

    r.method = "PUT";
    cr_assert_eq(ferry_http_request_send(&r, &o, &resp), -EINVAL);
    r.method = "GET";
    r.body = "x";
    r.body_len = 1;
    cr_assert_eq(ferry_http_request_send(&r, &o, &resp), -EINVAL);
    r.method = "POST";
    r.headers = crlf;
    r.n_headers = 1;
    cr_assert_eq(ferry_http_request_send(&r, &o, &resp), -EINVAL);
    r.headers = noname;
    cr_assert_eq(ferry_http_request_send(&r, &o, &resp), -EINVAL);
    r.headers = badname;
    cr_assert_eq(ferry_http_request_send(&r, &o, &resp), -EINVAL);
    r.headers = owned;
    cr_assert_eq(ferry_http_request_send(&r, &o, &resp), -EINVAL);
    r.n_headers = 0;
    r.url = "http://example.com/";
    cr_assert_eq(ferry_http_request_send(&r, &o, &resp), -FERRY_EPOLICY);
    cr_assert_null(resp.body);
}

/* ---- the credential cache, against a one-thread STS on loopback ----------------------------- */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct fake_sts {
    int fd;
    int port;
    int calls;
    int64_t lifetime; /* seconds of the credentials it hands out */
    char last_form[4096];
} fake_sts;

static void *fake_sts_loop(void *arg)
{
    fake_sts *f = arg;

    for (;;) {
        int c = accept(f->fd, NULL, NULL);
        char req[8192], xml[2048], resp[4096], exp[32];
        size_t got = 0;
        ssize_t n;
        time_t e;
        struct tm tm;

        if (c < 0)
            return NULL;
        /* Read headers and the body (Content-Length). */
        while (got < sizeof(req) - 1 && (n = read(c, req + got, sizeof(req) - 1 - got)) > 0) {
            char *hdr_end, *cl;
            got += (size_t)n;
            req[got] = '\0';
            hdr_end = strstr(req, "\r\n\r\n");
            cl = strcasestr(req, "Content-Length:");
            if (hdr_end && cl && got >= (size_t)(hdr_end + 4 - req) + strtoul(cl + 15, NULL, 10))
                break;
        }
        f->calls++;
        snprintf(f->last_form, sizeof(f->last_form), "%s",
                 strstr(req, "\r\n\r\n") ? strstr(req, "\r\n\r\n") + 4 : "");
        e = time(NULL) + f->lifetime;
        gmtime_r(&e, &tm);
        strftime(exp, sizeof(exp), "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(xml, sizeof(xml),
                 "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult>"
                 "<Credentials><AccessKeyId>ASIAFAKE%08d</AccessKeyId>"
                 "<SecretAccessKey>secret</SecretAccessKey><SessionToken>token</SessionToken>"
                 "<Expiration>%s</Expiration></Credentials></AssumeRoleWithWebIdentityResult>"
                 "</AssumeRoleWithWebIdentityResponse>",
                 f->calls, exp);
        snprintf(resp, sizeof(resp),
                 "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: %zu\r\n"
                 "Connection: close\r\n\r\n%s",
                 strlen(xml), xml);
        (void)!write(c, resp, strlen(resp));
        close(c);
    }
}

static int mint_stub_calls;
static int mint_stub(void *userdata, const char *audience, char **ret_token, char *errbuf,
                     size_t errlen)
{
    (void)userdata;
    (void)errbuf;
    (void)errlen;
    mint_stub_calls++;
    cr_assert_str_eq(audience, "sts.amazonaws.com");
    *ret_token = strdup("eyJhbGciOiJFUzI1NiJ9.e30.c2ln");
    return *ret_token ? 0 : -ENOMEM;
}

typedef struct getter {
    ferry_aws_provider *p;
    int r;
    char key_id[129];
} getter;

static void *get_thread(void *arg)
{
    getter *g = arg;
    ferry_aws_credentials c = {0};

    g->r = ferry_aws_provider_get(g->p, &c, NULL, 0);
    memcpy(g->key_id, c.access_key_id, sizeof(g->key_id));
    ferry_aws_credentials_clear(&c);
    return NULL;
}

Test(provider, concurrent_callers_share_one_sts_call)
{
    fake_sts f = {.lifetime = 3600};
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    pthread_t th, t[16];
    getter g[16];
    char url[64], err[256] = "";
    ferry_aws_provider *p = NULL;

    f.fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(f.fd, 0);
    cr_assert_eq(bind(f.fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(f.fd, 32), 0);
    cr_assert_eq(getsockname(f.fd, (struct sockaddr *)&a, &alen), 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", ntohs(a.sin_port));
    cr_assert_eq(pthread_create(&th, NULL, fake_sts_loop, &f), 0);
    ferry_aws_config cfg = {
        .region = "us-east-1",
        .role_arn = "arn:aws:iam::123456789012:role/r",
        .sts_endpoint = url,
        .web_identity = mint_stub,
        .http = {.allow_http_loopback = true},
    };
    cr_assert_eq(ferry_aws_provider_new(&cfg, &p, err, sizeof(err)), 0, "%s", err);
    for (int i = 0; i < 16; i++) {
        g[i] = (getter){.p = p};
        cr_assert_eq(pthread_create(&t[i], NULL, get_thread, &g[i]), 0);
    }
    for (int i = 0; i < 16; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(g[i].r, 0);
        cr_assert_str_eq(g[i].key_id, "ASIAFAKE00000001");
    }
    cr_assert_eq(f.calls, 1, "%d STS calls for 16 concurrent callers", f.calls);
    ferry_aws_provider_free(p);
    shutdown(f.fd, SHUT_RDWR);
    close(f.fd);
    pthread_join(th, NULL);
}

Test(provider, caches_and_refreshes_before_expiry)
{
    fake_sts f = {.lifetime = 3600};
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    pthread_t th;
    char url[64], err[256] = "";
    ferry_aws_provider *p = NULL;
    ferry_aws_credentials c = {0};

    f.fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(f.fd, 0);
    cr_assert_eq(bind(f.fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(f.fd, 4), 0);
    cr_assert_eq(getsockname(f.fd, (struct sockaddr *)&a, &alen), 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", ntohs(a.sin_port));
    cr_assert_eq(pthread_create(&th, NULL, fake_sts_loop, &f), 0);

    ferry_aws_config cfg = {
        .region = "us-east-1",
        .role_arn = "arn:aws:iam::123456789012:role/r",
        .session_name = "s-1",
        .sts_endpoint = url,
        .web_identity = mint_stub,
        .http = {.allow_http_loopback = true},
    };
    cr_assert_eq(ferry_aws_provider_new(&cfg, &p, err, sizeof(err)), 0, "%s", err);

    cr_assert_eq(ferry_aws_provider_get(p, &c, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(c.access_key_id, "ASIAFAKE00000001");
    cr_assert_str_eq(c.session_token, "token");
    ferry_aws_credentials_clear(&c);
    cr_assert_eq(f.calls, 1);
    cr_assert(strstr(f.last_form, "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&"
                                  "RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fr&"
                                  "RoleSessionName=s-1&DurationSeconds=3600&"
                                  "WebIdentityToken=eyJhbGciOiJFUzI1NiJ9.e30.c2ln"),
              "%s", f.last_form);

    /* Fresh: served from the cache. */
    cr_assert_eq(ferry_aws_provider_get(p, &c, err, sizeof(err)), 0);
    ferry_aws_credentials_clear(&c);
    cr_assert_eq(f.calls, 1);
    cr_assert_eq(mint_stub_calls, 1);

    /* Invalidated: fetched again. */
    ferry_aws_provider_invalidate(p);
    cr_assert_eq(ferry_aws_provider_get(p, &c, err, sizeof(err)), 0);
    cr_assert_str_eq(c.access_key_id, "ASIAFAKE00000002");
    ferry_aws_credentials_clear(&c);
    cr_assert_eq(f.calls, 2);

    /* Short-lived credentials (4 s) are refreshed at half their lifetime, not 5 minutes
     * before expiry (which would refetch on every call). */
    ferry_aws_provider_invalidate(p);
    f.lifetime = 4;
    cr_assert_eq(ferry_aws_provider_get(p, &c, err, sizeof(err)), 0);
    ferry_aws_credentials_clear(&c);
    cr_assert_eq(f.calls, 3);
    sleep(3); /* past half of the 4 s lifetime */
    cr_assert_eq(ferry_aws_provider_get(p, &c, err, sizeof(err)), 0);
    ferry_aws_credentials_clear(&c);
    cr_assert_eq(f.calls, 4, "credentials past half their lifetime were not refreshed");

    /* Already expired on arrival: refused. */
    ferry_aws_provider_invalidate(p);
    f.lifetime = -10;
    cr_assert_eq(ferry_aws_provider_get(p, &c, err, sizeof(err)), -FERRY_EMALFORMED);
    cr_assert(strstr(err, "expired"), "%s", err);
    cr_assert_null(c.secret_access_key);

    ferry_aws_provider_free(p);
    shutdown(f.fd, SHUT_RDWR);
    close(f.fd);
    pthread_join(th, NULL);
}

/* ---- signed calls and their faults, against a scripted loopback service ------------------- */

typedef struct scripted {
    int fd;
    int calls;
    const char *const *answers; /* raw HTTP responses, one per connection (the last repeats) */
    size_t n_answers;
    char last_req[16384];
} scripted;

static void *scripted_loop(void *arg)
{
    scripted *s = arg;

    for (;;) {
        int c = accept(s->fd, NULL, NULL);
        size_t got = 0;
        ssize_t n;
        const char *a;

        if (c < 0)
            return NULL;
        while (got < sizeof(s->last_req) - 1 &&
               (n = read(c, s->last_req + got, sizeof(s->last_req) - 1 - got)) > 0) {
            char *hdr_end, *cl;
            got += (size_t)n;
            s->last_req[got] = '\0';
            hdr_end = strstr(s->last_req, "\r\n\r\n");
            cl = strcasestr(s->last_req, "Content-Length:");
            if (hdr_end && cl &&
                got >= (size_t)(hdr_end + 4 - s->last_req) + strtoul(cl + 15, NULL, 10))
                break;
        }
        a = s->answers[(size_t)s->calls < s->n_answers ? (size_t)s->calls : s->n_answers - 1];
        s->calls++;
        (void)!write(c, a, strlen(a));
        close(c);
    }
}

static int scripted_start(scripted *s, pthread_t *th, char *url, size_t urllen)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);

    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(s->fd, 0);
    cr_assert_eq(bind(s->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(s->fd, 8), 0);
    cr_assert_eq(getsockname(s->fd, (struct sockaddr *)&a, &alen), 0);
    snprintf(url, urllen, "http://127.0.0.1:%d", ntohs(a.sin_port));
    return pthread_create(th, NULL, scripted_loop, s);
}

static void scripted_stop(scripted *s, pthread_t th)
{
    shutdown(s->fd, SHUT_RDWR);
    close(s->fd);
    pthread_join(th, NULL);
}

#define JSON_OK                                                                                    \
    "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 34\r\n"        \
    "Connection: close\r\n\r\n{\"SecretString\":\"" CANARY "\"}"
#define THROTTLED                                                                                  \
    "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\n"                     \
    "Content-Length: 70\r\nConnection: close\r\n\r\n"                                              \
    "{\"__type\":\"ThrottlingException\",\"message\":\"slow down " CANARY "\"}"
#define ERR500                                                                                     \
    "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

static int call(const char *url, const char *const *answers, size_t n, scripted *s,
                ferry_http_response *resp, char *err)
{
    ferry_aws_config cfg = {.region = "us-east-1", .http = {.allow_http_loopback = true}};
    ferry_aws_provider *p = NULL;
    int r;

    (void)url;
    s->answers = answers;
    s->n_answers = n;
    cr_assert_eq(ferry_aws_provider_new(&cfg, &p, err, 256), 0, "%s", err);
    r = ferry_aws_json_call(p, url, "secretsmanager", "secretsmanager.GetSecretValue",
                            "{\"SecretId\":\"a\"}", 16, 4096, resp, err, 256);
    ferry_aws_provider_free(p);
    return r;
}

Test(json_call, signs_retries_and_refuses_faults)
{
    scripted s = {0};
    pthread_t th;
    char url[64], err[256] = "";
    ferry_http_response resp = {0};

    setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE0123456", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", 1);
    setenv("AWS_SESSION_TOKEN", "session-token-1", 1);
    cr_assert_eq(scripted_start(&s, &th, url, sizeof(url)), 0);

    /* Success: the request is signed and carries the target and the token. */
    static const char *const ok[] = {JSON_OK};
    cr_assert_eq(call(url, ok, 1, &s, &resp, err), 0, "%s", err);
    cr_assert_eq(resp.status, 200);
    cr_assert(strstr(resp.body, CANARY));
    cr_assert(resp.sensitive);
    ferry_http_response_release(&resp);
    cr_assert(strstr(s.last_req, "POST / HTTP/1.1\r\n"));
    cr_assert(strstr(s.last_req, "X-Amz-Target: secretsmanager.GetSecretValue\r\n"));
    cr_assert(strstr(s.last_req, "Content-Type: application/x-amz-json-1.1\r\n"));
    cr_assert(strstr(s.last_req, "X-Amz-Security-Token: session-token-1\r\n"));
    cr_assert(strstr(s.last_req, "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE0123456/"));
    cr_assert(strstr(s.last_req, "/us-east-1/secretsmanager/aws4_request, SignedHeaders="
                                 "content-type;host;x-amz-date;x-amz-security-token;"
                                 "x-amz-target, Signature="),
              "%s", s.last_req);
    cr_assert_null(strstr(s.last_req, "wJalrXUtnFEMI"));

    /* Throttled twice, then answered: three calls, success. */
    static const char *const throttled[] = {THROTTLED, THROTTLED, JSON_OK};
    s.calls = 0;
    cr_assert_eq(call(url, throttled, 3, &s, &resp, err), 0, "%s", err);
    ferry_http_response_release(&resp);
    cr_assert_eq(s.calls, 3);

    /* Always 500: a bounded number of attempts, then a clear error. */
    static const char *const down[] = {ERR500};
    s.calls = 0;
    cr_assert_eq(call(url, down, 1, &s, &resp, err), -EAGAIN);
    cr_assert_eq(s.calls, FERRY_AWS_MAX_ATTEMPTS);
    cr_assert(strstr(err, "HTTP 500"), "%s", err);
    cr_assert_null(resp.body);

    /* Always throttled: the type is named, the message is not. */
    s.calls = 0;
    static const char *const always_throttled[] = {THROTTLED};
    cr_assert_eq(call(url, always_throttled, 1, &s, &resp, err), -EAGAIN);
    cr_assert_eq(s.calls, FERRY_AWS_MAX_ATTEMPTS);
    cr_assert(strstr(err, "ThrottlingException"), "%s", err);
    cr_assert_null(strstr(err, CANARY));

    /* Throttled with a Retry-After past the call's retry budget: one call, refused at once,
     * the wait named, AWS's message not. */
    static const char *const wait_long[] = {
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/x-amz-json-1.1\r\n"
        "Retry-After: 30\r\nContent-Length: 70\r\nConnection: close\r\n\r\n"
        "{\"__type\":\"ThrottlingException\",\"message\":\"slow down " CANARY "\"}"};
    s.calls = 0;
    cr_assert_eq(call(url, wait_long, 1, &s, &resp, err), -EAGAIN);
    cr_assert_eq(s.calls, 1);
    cr_assert(strstr(err, "retry after 30 s") && strstr(err, "ThrottlingException"), "%s", err);
    cr_assert_null(strstr(err, CANARY));

    /* Not found: no retry. */
    static const char *const missing[] = {
        "HTTP/1.1 400 Bad Request\r\nContent-Length: 38\r\nConnection: close\r\n\r\n"
        "{\"__type\":\"ResourceNotFoundException\"}"};
    s.calls = 0;
    cr_assert_eq(call(url, missing, 1, &s, &resp, err), -ENOENT);
    cr_assert_eq(s.calls, 1);

    /* Oversized (over the 4096-byte cap given): refused, not retried. */
    static char big[8192];
    int o = snprintf(big, sizeof(big),
                     "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\n"
                     "Content-Length: 5000\r\nConnection: close\r\n\r\n");
    memset(big + o, 'x', 5000);
    big[o + 5000] = '\0';
    static const char *const oversized[] = {big};
    s.calls = 0;
    cr_assert_eq(call(url, oversized, 1, &s, &resp, err), -FERRY_ETOOBIG);
    cr_assert_eq(s.calls, 1);
    cr_assert_null(resp.body);

    /* Truncated (the connection closes before Content-Length bytes): a network failure,
     * retried, then refused; never a partial body. */
    static const char *const truncated[] = {
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 100\r\n"
        "Connection: close\r\n\r\n{\"SecretString\":\"" CANARY};
    s.calls = 0;
    cr_assert_eq(call(url, truncated, 1, &s, &resp, err), -FERRY_EFETCH);
    cr_assert_eq(s.calls, FERRY_AWS_MAX_ATTEMPTS);
    cr_assert_null(resp.body);
    cr_assert_null(strstr(err, CANARY));

    /* A wrong content type (or none) on a 200: refused, not retried. */
    static const char *const wrong_type[] = {
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 34\r\n"
        "Connection: close\r\n\r\n{\"SecretString\":\"" CANARY "\"}"};
    s.calls = 0;
    cr_assert_eq(call(url, wrong_type, 1, &s, &resp, err), -FERRY_EMALFORMED);
    cr_assert_eq(s.calls, 1);
    cr_assert(strstr(err, "x-amz-json-1.1"), "%s", err);
    cr_assert_null(resp.body);
    static const char *const no_type[] = {"HTTP/1.1 200 OK\r\nContent-Length: 34\r\n"
                                          "Connection: close\r\n\r\n{\"SecretString\":\"" CANARY
                                          "\"}"};
    cr_assert_eq(call(url, no_type, 1, &s, &resp, err), -FERRY_EMALFORMED);

    /* A redirect of the POST, even to the same host: refused. */
    static const char *const redirect[] = {
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n"
        "Connection: close\r\n\r\n"};
    s.calls = 0;
    cr_assert_eq(call(url, redirect, 1, &s, &resp, err), -FERRY_EPOLICY);
    cr_assert_eq(s.calls, 1);

    scripted_stop(&s, th);
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    unsetenv("AWS_SESSION_TOKEN");
}
