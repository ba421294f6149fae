/* tests/unit/test_secrets_gcp.c - the gcp-sm backend and what it stands on: CRC-32C against
 * the RFC 3720 B.4 vectors, strict standard base64, the parsers of Secret Manager, STS and
 * IAM Credentials answers against hostile input (truncated at every byte, mistyped, wrong
 * names, CRC mismatch, oversized), the configuration's refusals, and the backend as a whole
 * through ferry_secrets_fetch against a one-thread fake Google on loopback: one STS exchange
 * for several reads, the impersonation chain and its headers, one re-exchange after a 401 to
 * a cached token, a Retry-After longer than the waiting budget refused at once, and no remote
 * error text or value in any reason. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "basic/b64.h"
#include "basic/crc32c.h"
#include "ferry/error.h"
#include "ferry/secrets.h"
#include "lib/secrets/gcp-internal.h"

#define CANARY "canary-5d0c8e2f7a"
#define CANARY_B64 "Y2FuYXJ5LTVkMGM4ZTJmN2E=" /* base64 of CANARY */
#define AUD                                                                                        \
    "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/ferry/"     \
    "providers/ci"

/* ---- CRC-32C ----------------------------------------------------------------------------- */

Test(crc32c, rfc3720_b4_vectors)
{
    unsigned char buf[48];
    /* B.4: an iSCSI read command PDU. */
    static const unsigned char pdu[48] = {
        0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
        0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};

    memset(buf, 0, 32);
    cr_assert_eq(ferry_crc32c(0, buf, 32), 0x8a9136aau);
    memset(buf, 0xff, 32);
    cr_assert_eq(ferry_crc32c(0, buf, 32), 0x62a8ab43u);
    for (int i = 0; i < 32; i++)
        buf[i] = (unsigned char)i;
    cr_assert_eq(ferry_crc32c(0, buf, 32), 0x46dd794eu);
    for (int i = 0; i < 32; i++)
        buf[i] = (unsigned char)(31 - i);
    cr_assert_eq(ferry_crc32c(0, buf, 32), 0x113fdb5cu);
    cr_assert_eq(ferry_crc32c(0, pdu, 48), 0xd9963a56u);
    /* The common check value, the empty input, and continuation. */
    cr_assert_eq(ferry_crc32c(0, "123456789", 9), 0xe3069283u);
    cr_assert_eq(ferry_crc32c(0, NULL, 0), 0u);
    cr_assert_eq(ferry_crc32c(ferry_crc32c(0, "1234", 4), "56789", 5), 0xe3069283u);
}

/* ---- standard base64 ------------------------------------------------------------------------ */

Test(b64, standard_alphabet_strict)
{
    unsigned char out[16];
    size_t n = 0;
    static const char *const bad[] = {
        "Zm9vYg", "Zm9vYg=", "Zm9vYh==", "Zm=vYg==", "Zg-_",        "Zm9v\nYg==",
        "====",   "Z===",    "Zm9vY===", "Zm9v Yg=", "Zm9vYmE=Zm9v"};

    cr_assert_eq(ferry_b64_decode("Zm9vYg==", 8, out, &n), 0);
    cr_assert_eq(n, 4);
    cr_assert_eq(memcmp(out, "foob", 4), 0);
    cr_assert_eq(ferry_b64_decode("Zm9vYmE=", 8, out, &n), 0);
    cr_assert_eq(n, 5);
    cr_assert_eq(ferry_b64_decode("Zm9vYmFy", 8, out, &n), 0);
    cr_assert_eq(n, 6);
    cr_assert_eq(ferry_b64_decode("+/+/", 4, out, &n), 0);
    cr_assert_eq(n, 3);
    cr_assert_eq(memcmp(out, "\xfb\xff\xbf", 3), 0);
    cr_assert_eq(ferry_b64_decode("", 0, out, &n), 0);
    cr_assert_eq(n, 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(ferry_b64_decode(bad[i], strlen(bad[i]), out, &n), -EINVAL, "%s", bad[i]);
}

/* ---- parsers ------------------------------------------------------------------------------ */

static ferry_secret_ref ref_of(const char *s)
{
    ferry_secret_ref r;
    char err[256];

    cr_assert_eq(ferry_secret_ref_parse(s, &r, err, sizeof(err)), 0, "%s", err);
    return r;
}

static char access_ok[512];

static void make_access(const char *name, const char *data, long long crc)
{
    if (crc < 0)
        snprintf(access_ok, sizeof(access_ok), "{\"name\":\"%s\",\"payload\":{\"data\":\"%s\"}}",
                 name, data);
    else
        snprintf(access_ok, sizeof(access_ok),
                 "{\"name\":\"%s\",\"payload\":{\"data\":\"%s\",\"dataCrc32c\":\"%lld\"}}", name,
                 data, crc);
}

Test(parse, access_value_version_and_crc)
{
    ferry_secret_ref latest = ref_of("gcp-sm:projects/my-project/secrets/db/versions/latest");
    ferry_secret_ref v7 = ref_of("gcp-sm:projects/my-project/secrets/db/versions/7");
    long long crc = ferry_crc32c(0, CANARY, strlen(CANARY));
    ferry_secret_value *v = NULL;
    char err[256] = "";

    make_access("projects/123456789012/secrets/db/versions/7", CANARY_B64, crc);
    cr_assert_eq(
        ferry_gcp_access_parse(access_ok, strlen(access_ok), &latest, &v, err, sizeof(err)), 0,
        "%s", err);
    cr_assert_eq(v->len, strlen(CANARY));
    cr_assert_eq(memcmp(v->data, CANARY, v->len), 0);
    cr_assert_str_eq(v->version, "7");
    ferry_secret_value_free(v);
    v = NULL;
    /* The project id as asked, a numbered version, and no CRC at all are fine too. */
    make_access("projects/my-project/secrets/db/versions/7", CANARY_B64, -1);
    cr_assert_eq(ferry_gcp_access_parse(access_ok, strlen(access_ok), &v7, &v, err, sizeof(err)), 0,
                 "%s", err);
    ferry_secret_value_free(v);
    v = NULL;

    /* A CRC mismatch is an error and no value. */
    make_access("projects/123456789012/secrets/db/versions/7", CANARY_B64, crc ^ 1);
    cr_assert_eq(
        ferry_gcp_access_parse(access_ok, strlen(access_ok), &latest, &v, err, sizeof(err)),
        -FERRY_EBADSIG);
    cr_assert_null(v);
    cr_assert(strstr(err, "CRC32C") && !strstr(err, CANARY), "%s", err);
}

Test(parse, access_hostile)
{
    ferry_secret_ref latest = ref_of("gcp-sm:projects/my-project/secrets/db/versions/latest");
    ferry_secret_ref v7 = ref_of("gcp-sm:projects/my-project/secrets/db/versions/7");
    static const char *const bad[] = {
        "[]",
        "{}",
        "{\"name\":\"projects/1/secrets/db/versions/7\"}",
        "{\"name\":\"projects/1/secrets/other/versions/7\",\"payload\":{\"data\":\"YQ==\"}}",
        "{\"name\":\"projects/other-project/secrets/db/versions/7\",\"payload\":{\"data\":"
        "\"YQ==\"}}",
        "{\"name\":\"projects/1/secrets/db/versions/latest\",\"payload\":{\"data\":\"YQ==\"}}",
        "{\"name\":\"projects/1/secrets/db/versions/07\",\"payload\":{\"data\":\"YQ==\"}}",
        "{\"name\":\"projects/1/secrets/db/versions/7/x\",\"payload\":{\"data\":\"YQ==\"}}",
        "{\"name\":\"projects/1/secrets/db/versions/7\",\"payload\":{}}",
        "{\"name\":\"projects/1/secrets/db/versions/7\",\"payload\":{\"data\":\"\"}}",
        "{\"name\":\"projects/1/secrets/db/versions/7\",\"payload\":{\"data\":\"YQ\"}}",
        "{\"name\":\"projects/1/secrets/db/versions/7\",\"payload\":{\"data\":\"Y-==\"}}",
        "{\"name\":\"projects/1/secrets/db/versions/7\",\"payload\":{\"data\":7}}",
        "{\"name\":\"projects/1/secrets/db/versions/7\",\"payload\":{\"data\":\"YQ==\","
        "\"dataCrc32c\":\"-1\"}}",
        "{\"name\":\"projects/1/secrets/db/versions/7\",\"payload\":{\"data\":\"YQ==\","
        "\"dataCrc32c\":\"4294967296\"}}",
        "{\"name\":\"projects/1/secrets/db/versions/7\",\"payload\":{\"data\":\"YQ==\","
        "\"dataCrc32c\":\"0x1\"}}",
        "{\"name\":\"projects/1/secrets/db/versions/7\",\"payload\":{\"data\":\"YQ==\","
        "\"dataCrc32c\":true}}",
        "{\"name\":\"projects/1/secrets/db/versions/7\",\"name\":\"projects/1/secrets/db/"
        "versions/7\",\"payload\":{\"data\":\"YQ==\"}}",
    };
    ferry_secret_value *v = NULL;
    char err[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_lt(ferry_gcp_access_parse(bad[i], strlen(bad[i]), &latest, &v, err, sizeof(err)),
                     0, "case %zu accepted", i);
        cr_assert_null(v);
    }
    /* A numbered reference must get that number back. */
    make_access("projects/1/secrets/db/versions/8", "YQ==", -1);
    cr_assert_lt(ferry_gcp_access_parse(access_ok, strlen(access_ok), &v7, &v, err, sizeof(err)),
                 0);
    cr_assert_null(v);
    /* Truncated at every byte. */
    make_access("projects/123456789012/secrets/db/versions/7", CANARY_B64,
                ferry_crc32c(0, CANARY, strlen(CANARY)));
    for (size_t i = 0; i < strlen(access_ok); i++) {
        err[0] = '\0';
        cr_assert_lt(ferry_gcp_access_parse(access_ok, i, &latest, &v, err, sizeof(err)), 0,
                     "prefix of %zu bytes accepted", i);
        cr_assert_null(v);
        cr_assert_null(strstr(err, CANARY), "%s", err);
    }
}

/* An access answer whose payload is n bytes of 'x' (standard base64, padded). */
static char *big_answer(size_t n)
{
    static const char head[] = "{\"name\":\"projects/1/secrets/db/versions/1\",\"payload\":"
                               "{\"data\":\"";
    unsigned char *raw = malloc(n);
    char *body = malloc(sizeof(head) + n / 3 * 4 + 16), *p;
    size_t k;

    cr_assert(raw && body);
    memset(raw, 'x', n); /* base64 of "xxx" is "eHh4": no '-' or '_' to translate */
    p = body + snprintf(body, sizeof(head), "%s", head);
    k = ferry_b64url_encode(raw, n, p);
    p += k;
    while (k++ % 4)
        *p++ = '=';
    snprintf(p, 4, "\"}}");
    free(raw);
    return body;
}

Test(parse, access_value_limit)
{
    ferry_secret_ref latest = ref_of("gcp-sm:projects/p-123456/secrets/db/versions/latest");
    ferry_secret_value *v = NULL;
    char err[256], *body;

    body = big_answer(FERRY_SECRET_VALUE_MAX); /* exactly 64 KiB is served... */
    cr_assert_eq(ferry_gcp_access_parse(body, strlen(body), &latest, &v, err, sizeof(err)), 0, "%s",
                 err);
    cr_assert_eq(v->len, FERRY_SECRET_VALUE_MAX);
    ferry_secret_value_free(v);
    v = NULL;
    free(body);
    body = big_answer(FERRY_SECRET_VALUE_MAX + 1); /* ...one byte more is not */
    cr_assert_eq(ferry_gcp_access_parse(body, strlen(body), &latest, &v, err, sizeof(err)),
                 -FERRY_ETOOBIG, "%s", err);
    cr_assert_null(v);
    free(body);
}

Test(parse, sts_answer)
{
    static const char ok[] = "{\"access_token\":\"ya29.fed-1\",\"issued_token_type\":"
                             "\"urn:ietf:params:oauth:token-type:access_token\","
                             "\"token_type\":\"Bearer\",\"expires_in\":3599}";
    static const char *const bad[] = {
        "{\"access_token\":\"ya29 x\",\"token_type\":\"Bearer\",\"expires_in\":3599}",
        "{\"access_token\":\"ya29\",\"token_type\":\"mac\",\"expires_in\":3599}",
        "{\"access_token\":\"ya29\",\"token_type\":\"Bearer\",\"expires_in\":0}",
        "{\"access_token\":\"ya29\",\"token_type\":\"Bearer\",\"expires_in\":\"3599\"}",
        "{\"access_token\":\"ya29\",\"token_type\":\"Bearer\",\"expires_in\":99999999}",
        "{\"access_token\":\"ya29\",\"token_type\":\"Bearer\",\"expires_in\":60,"
        "\"issued_token_type\":\"urn:ietf:params:oauth:token-type:jwt\"}",
        "{\"access_token\":\"\",\"token_type\":\"Bearer\",\"expires_in\":60}",
        "{\"token_type\":\"Bearer\",\"expires_in\":60}",
        "{\"error\":\"invalid_grant\"}",
    };
    char *tok = NULL, err[256];
    int64_t life = 0;

    cr_assert_eq(ferry_gcp_sts_parse(ok, strlen(ok), &tok, &life, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(tok, "ya29.fed-1");
    cr_assert_eq(life, 3599);
    free(tok);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        tok = NULL;
        cr_assert_lt(ferry_gcp_sts_parse(bad[i], strlen(bad[i]), &tok, &life, err, sizeof(err)), 0,
                     "case %zu accepted", i);
        cr_assert_null(tok);
    }
    for (size_t i = 0; i < strlen(ok); i++) {
        tok = NULL;
        cr_assert_lt(ferry_gcp_sts_parse(ok, i, &tok, &life, err, sizeof(err)), 0);
        cr_assert_null(tok);
    }
}

Test(parse, iam_answer_and_times)
{
    static const char ok[] = "{\"accessToken\":\"ya29.sa-1\",\"expireTime\":"
                             "\"2026-11-26T10:00:00.123456789Z\"}";
    int64_t now, t, life = 0;
    char *tok = NULL, err[256];

    cr_assert_eq(ferry_gcp_rfc3339_parse("2026-11-26T09:00:00Z", 20, &now), 0);
    cr_assert_eq(now, 1795683600);
    cr_assert_eq(ferry_gcp_iam_parse(ok, strlen(ok), now, &tok, &life, err, sizeof(err)), 0, "%s",
                 err);
    cr_assert_str_eq(tok, "ya29.sa-1");
    cr_assert_eq(life, 3600);
    free(tok);
    tok = NULL;
    /* Expired, or too far ahead. */
    cr_assert_lt(ferry_gcp_iam_parse(ok, strlen(ok), now + 3600, &tok, &life, err, sizeof(err)), 0);
    cr_assert_lt(ferry_gcp_iam_parse(ok, strlen(ok), now - 86400, &tok, &life, err, sizeof(err)),
                 0);
    cr_assert_null(tok);
    cr_assert_eq(ferry_gcp_rfc3339_parse("2024-02-29T23:59:59Z", 20, &t), 0);
    cr_assert_eq(ferry_gcp_rfc3339_parse("2023-02-29T00:00:00Z", 20, &t), -FERRY_EMALFORMED);
    cr_assert_eq(ferry_gcp_rfc3339_parse("2026-04-31T00:00:00Z", 20, &t), -FERRY_EMALFORMED);
    cr_assert_eq(ferry_gcp_rfc3339_parse("2026-11-26T24:00:00Z", 20, &t), -FERRY_EMALFORMED);
    cr_assert_eq(ferry_gcp_rfc3339_parse("2026-11-26T10:00:00+01:00", 25, &t), -FERRY_EMALFORMED);
    cr_assert_eq(ferry_gcp_rfc3339_parse("2026-11-26T10:00:00.Z", 21, &t), -FERRY_EMALFORMED);
    cr_assert_eq(ferry_gcp_rfc3339_parse("2026-11-26 10:00:00Z", 20, &t), -FERRY_EMALFORMED);
}

Test(parse, error_status_word_only)
{
    static const char g[] = "{\"error\":{\"code\":403,\"message\":\"denied " CANARY "\","
                            "\"status\":\"PERMISSION_DENIED\"}}";
    static const char o[] = "{\"error\":\"invalid_grant\",\"error_description\":\"" CANARY "\"}";
    static const char *const bad[] = {
        "{\"error\":{\"code\":403,\"message\":\"x\",\"status\":\"denied " CANARY "\"}}",
        "{\"error\":\"invalid grant " CANARY "\"}",
        "{\"error\":{\"code\":403}}",
        "not json",
        "[]",
        "{\"error\":{\"status\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}}"};
    char w[48];

    cr_assert_eq(ferry_gcp_error_status(g, strlen(g), w, sizeof(w)), 0);
    cr_assert_str_eq(w, "PERMISSION_DENIED");
    cr_assert_eq(ferry_gcp_error_status(o, strlen(o), w, sizeof(w)), 0);
    cr_assert_str_eq(w, "invalid_grant");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_lt(ferry_gcp_error_status(bad[i], strlen(bad[i]), w, sizeof(w)), 0, "case %zu",
                     i);
        cr_assert_str_eq(w, "");
    }
}

/* ---- configuration ------------------------------------------------------------------------- */

static int ident_calls;
static char ident_audience[256];

static int ident_stub(void *userdata, const char *audience, char **ret_token, char *errbuf,
                      size_t errlen)
{
    (void)userdata, (void)errbuf, (void)errlen;
    ident_calls++;
    snprintf(ident_audience, sizeof(ident_audience), "%s", audience);
    *ret_token = strdup("eyJhbGciOiJFUzI1NiJ9.e30.c2ln");
    return *ret_token ? 0 : -ENOMEM;
}

Test(config, refusals)
{
    static const char *const bad[] = {
        "{\"gcp-sm\":{}}",
        "{\"gcp-sm\":{\"audience\":\"" AUD "\",\"audiance\":\"x\"}}",
        "{\"gcp-sm\":{\"audience\":\"https://iam.googleapis.com/projects/1\"}}",
        "{\"gcp-sm\":{\"audience\":\"//iam.googleapis.com/projects/abc/locations/global/"
        "workloadIdentityPools/p/providers/x\"}}",
        "{\"gcp-sm\":{\"audience\":\"//iam.googleapis.com/projects/1/locations/global/"
        "workloadIdentityPools/P/providers/x\"}}",
        "{\"gcp-sm\":{\"audience\":\"//iam.googleapis.com/projects/1/locations/global/"
        "workloadIdentityPools/p/providers/x/y\"}}",
        "{\"gcp-sm\":{\"audience\":\"" AUD "\",\"service_account\":\"not-an-email\"}}",
        "{\"gcp-sm\":{\"audience\":\"" AUD "\",\"service_account\":\"A@b.c\"}}",
        "{\"gcp-sm\":{\"audience\":\"" AUD "\",\"scope\":\" x\"}}",
        "{\"gcp-sm\":{\"audience\":\"" AUD "\",\"scope\":\"a  b\"}}",
        "{\"gcp-sm\":{\"audience\":\"" AUD "\",\"sts_url\":\"http://127.0.0.1:1\"}}",
        "{\"gcp-sm\":{\"audience\":\"" AUD "\",\"secretmanager_url\":\"https://x/?a\"}}",
        "{\"gcp-sm\":{\"audience\":\"" AUD "\",\"iamcredentials_url\":\"ftp://x\"}}",
        "{\"gcp-sm\":{\"audience\":\"" AUD "\",\"timeout_ms\":5}}",
        "{\"gcp-sm\":{\"audience\":\"" AUD "\",\"max_retry_wait_ms\":-1}}",
        "{\"gcp-sm\":{\"audience\":\"" AUD "\",\"allow_http_loopback\":\"yes\"}}",
        "{\"gcp-sm\":{\"audience\":\"" AUD "\",\"token_audience\":\"\"}}",
    };
    ferry_secrets_env env = {.web_identity_token = ident_stub};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_error_t je;
        json_t *conf = json_loads(bad[i], 0, &je);
        ferry_secrets *s = NULL;
        char err[512] = "";
        cr_assert_not_null(conf, "case %zu", i);
        cr_assert_eq(ferry_secrets_new(conf, &env, &s, err, sizeof(err)), -FERRY_ECONFIG,
                     "case %zu: %s", i, err);
        cr_assert_null(s);
        json_decref(conf);
    }
    /* A good section without ferry's identity is refused, naming what is missing. */
    {
        json_t *conf = json_pack("{s:{s:s}}", "gcp-sm", "audience", AUD);
        ferry_secrets *s = NULL;
        char err[512] = "";
        cr_assert_eq(ferry_secrets_new(conf, NULL, &s, err, sizeof(err)), -FERRY_ECONFIG);
        cr_assert(strstr(err, "identity"), "%s", err);
        cr_assert_eq(ferry_secrets_new(conf, &env, &s, err, sizeof(err)), 0, "%s", err);
        ferry_secrets_free(s);
        json_decref(conf);
    }
}

/* ---- a fake Google on loopback -------------------------------------------------------------- */

typedef struct fake {
    int fd;
    pthread_t th;
    char url[64];
    pthread_mutex_t lock;
    int sts, iam, reads;
    int gen;        /* tokens issued */
    bool revoke;    /* the next read: 401 and forget the current token */
    bool forbid;    /* every read: 403 with a message holding the canary */
    int throttle;   /* the next N reads: 429 with Retry-After: 100 */
    int expires_in; /* STS expires_in (0: 3600) */
    char token[64]; /* the token Secret Manager accepts */
    char fed[64];   /* the federated token generateAccessToken accepts */
    char last_sts_body[4096], last_iam_body[1024], last_iam_auth[128], last_read_auth[128];
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

static void answer(int c, int status, const char *extra, const char *body)
{
    char head[512];

    snprintf(head, sizeof(head),
             "HTTP/1.1 %d X\r\nContent-Type: application/json; charset=UTF-8\r\n%s"
             "Content-Length: %zu\r\nConnection: close\r\n\r\n",
             status, extra, strlen(body));
    (void)!write(c, head, strlen(head));
    (void)!write(c, body, strlen(body));
}

static void *fake_loop(void *arg)
{
    fake *f = arg;

    for (;;) {
        int c = accept(f->fd, NULL, NULL);
        char req[16384], body[2048], auth[128], when[32];
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
        header(req, "Authorization:", auth, sizeof(auth));
        if (strncmp(req, "POST /v1/token ", 15) == 0) {
            f->sts++;
            snprintf(f->last_sts_body, sizeof(f->last_sts_body), "%s", strstr(req, "\r\n\r\n") + 4);
            snprintf(f->fed, sizeof(f->fed), "ya29.fed-%d", ++f->gen);
            snprintf(f->token, sizeof(f->token), "%s", f->fed);
            snprintf(body, sizeof(body),
                     "{\"access_token\":\"%s\",\"issued_token_type\":\"urn:ietf:params:oauth:"
                     "token-type:access_token\",\"token_type\":\"Bearer\",\"expires_in\":%d}",
                     f->fed, f->expires_in ? f->expires_in : 3600);
            answer(c, 200, "", body);
        } else if (strncmp(req,
                           "POST /v1/projects/-/serviceAccounts/r@p.iam.gserviceaccount.com"
                           ":generateAccessToken ",
                           82) == 0) {
            time_t t = time(NULL) + 1800;
            struct tm tm;
            f->iam++;
            snprintf(f->last_iam_body, sizeof(f->last_iam_body), "%s", strstr(req, "\r\n\r\n") + 4);
            snprintf(f->last_iam_auth, sizeof(f->last_iam_auth), "%s", auth);
            gmtime_r(&t, &tm);
            strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
            snprintf(f->token, sizeof(f->token), "ya29.sa-%d", ++f->gen);
            snprintf(body, sizeof(body), "{\"accessToken\":\"%s\",\"expireTime\":\"%s\"}", f->token,
                     when);
            answer(c, 200, "", body);
        } else if (strncmp(req, "GET /v1/projects/my-project/secrets/db/versions/latest:access ",
                           62) == 0) {
            char want[80];
            f->reads++;
            snprintf(f->last_read_auth, sizeof(f->last_read_auth), "%s", auth);
            snprintf(want, sizeof(want), "Bearer %s", f->token);
            if (f->throttle > 0) {
                f->throttle--;
                answer(c, 429, "Retry-After: 100\r\n",
                       "{\"error\":{\"code\":429,\"message\":\"slow down " CANARY
                       "\",\"status\":\"RESOURCE_EXHAUSTED\"}}");
            } else if (f->revoke || strcmp(auth, want) != 0) {
                f->revoke = false;
                f->token[0] = '\0';
                answer(c, 401, "",
                       "{\"error\":{\"code\":401,\"message\":\"bad " CANARY
                       "\",\"status\":\"UNAUTHENTICATED\"}}");
            } else if (f->forbid)
                answer(c, 403, "",
                       "{\"error\":{\"code\":403,\"message\":\"denied " CANARY
                       "\",\"status\":\"PERMISSION_DENIED\"}}");
            else {
                snprintf(body, sizeof(body),
                         "{\"name\":\"projects/123/secrets/db/versions/4\",\"payload\":{\"data\":"
                         "\"" CANARY_B64 "\",\"dataCrc32c\":\"%u\"}}",
                         ferry_crc32c(0, CANARY, strlen(CANARY)));
                answer(c, 200, "", body);
            }
        } else
            answer(c, 404, "",
                   "{\"error\":{\"code\":404,\"message\":\"no\",\"status\":\"NOT_FOUND\"}}");
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

/* ferry_secrets with a gcp-sm section for f, cache off. */
static ferry_secrets *open_gcp(fake *f, bool impersonate)
{
    ferry_secrets_env env = {.web_identity_token = ident_stub, .web_identity_userdata = f};
    ferry_secrets *s = NULL;
    json_t *conf;
    char err[512] = "";

    conf = json_pack("{s:{s:s,s:s,s:s,s:s,s:b,s:i}}", "gcp-sm", "audience", AUD, "sts_url", f->url,
                     "iamcredentials_url", f->url, "secretmanager_url", f->url,
                     "allow_http_loopback", 1, "cache_ttl", 0);
    cr_assert_not_null(conf);
    if (impersonate)
        json_object_set_new(json_object_get(conf, "gcp-sm"), "service_account",
                            json_string("r@p.iam.gserviceaccount.com"));
    cr_assert_eq(ferry_secrets_new(conf, &env, &s, err, sizeof(err)), 0, "%s", err);
    json_decref(conf);
    return s;
}

static int get(ferry_secrets *s, char *err, size_t errlen)
{
    ferry_secret_value *v = NULL;
    int r;

    err[0] = '\0';
    r = ferry_secrets_fetch(s, "gcp-sm:projects/my-project/secrets/db/versions/latest", NULL, &v,
                            err, errlen);
    if (r == 0) {
        cr_assert_eq(v->len, strlen(CANARY));
        cr_assert_eq(memcmp(v->data, CANARY, v->len), 0);
        cr_assert_str_eq(v->version, "4");
    }
    cr_assert_null(strstr(err, CANARY), "%s", err);
    ferry_secret_value_free(v);
    return r;
}

Test(backend, one_exchange_for_several_reads)
{
    fake f = {0};
    ferry_secrets *s;
    char err[512];

    fake_start(&f);
    ident_calls = 0;
    s = open_gcp(&f, false);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(get(s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(f.sts, 1);
    cr_assert_eq(f.iam, 0);
    cr_assert_eq(f.reads, 4);
    cr_assert_eq(ident_calls, 1);
    cr_assert_str_eq(ident_audience, "https:" AUD);
    cr_assert_str_eq(f.last_read_auth, "Bearer ya29.fed-1");
    cr_assert_str_eq(
        f.last_sts_body,
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange"
        "&audience=%2F%2Fiam.googleapis.com%2Fprojects%2F123456789012%2Flocations%2Fglobal%2F"
        "workloadIdentityPools%2Fferry%2Fproviders%2Fci"
        "&scope=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fcloud-platform"
        "&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token"
        "&subject_token=eyJhbGciOiJFUzI1NiJ9.e30.c2ln"
        "&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt");
    ferry_secrets_free(s);
    fake_stop(&f);
}

Test(backend, impersonation_chain)
{
    fake f = {0};
    ferry_secrets *s;
    char err[512];

    fake_start(&f);
    s = open_gcp(&f, true);
    cr_assert_eq(get(s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(get(s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(f.sts, 1);
    cr_assert_eq(f.iam, 1);
    cr_assert_str_eq(f.last_iam_auth, "Bearer ya29.fed-1");
    cr_assert_str_eq(f.last_iam_body,
                     "{\"scope\":[\"https://www.googleapis.com/auth/cloud-platform\"],"
                     "\"lifetime\":\"3600s\"}");
    cr_assert_str_eq(f.last_read_auth, "Bearer ya29.sa-2");
    ferry_secrets_free(s);
    fake_stop(&f);
}

Test(backend, reexchange_once_after_401_then_final_errors)
{
    fake f = {0};
    ferry_secrets *s;
    char err[512];

    fake_start(&f);
    s = open_gcp(&f, false);
    cr_assert_eq(get(s, err, sizeof(err)), 0, "%s", err);
    /* A cached token refused with 401: one new exchange, then the read answers. */
    f.revoke = true;
    cr_assert_eq(get(s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(f.sts, 2);
    cr_assert_eq(f.reads, 3);
    /* 403 is final, with the status word and without Google's message. */
    f.forbid = true;
    cr_assert_eq(get(s, err, sizeof(err)), -EACCES);
    cr_assert(strstr(err, "PERMISSION_DENIED") && !strstr(err, "denied " CANARY), "%s", err);
    cr_assert_eq(f.sts, 2);
    f.forbid = false;
    /* A Retry-After longer than the waiting budget: refused at once, one request. */
    f.throttle = 5;
    cr_assert_eq(get(s, err, sizeof(err)), -EAGAIN);
    cr_assert(strstr(err, "throttled (429), retry after 100 s"), "%s", err);
    cr_assert_eq(f.reads, 5);
    ferry_secrets_free(s);
    fake_stop(&f);
}

Test(backend, new_exchange_when_the_token_runs_out)
{
    fake f = {.expires_in = 1};
    struct timespec pause = {.tv_sec = 1, .tv_nsec = 200 * 1000 * 1000};
    ferry_secrets *s;
    char err[512];

    fake_start(&f);
    s = open_gcp(&f, false);
    cr_assert_eq(get(s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(f.sts, 1);
    /* A one-second token is not used past its second: the next read exchanges again. */
    nanosleep(&pause, NULL);
    cr_assert_eq(get(s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(f.sts, 2);
    cr_assert_str_eq(f.last_read_auth, "Bearer ya29.fed-2");
    ferry_secrets_free(s);
    fake_stop(&f);
}

static void *reader(void *arg)
{
    char err[512];

    return (void *)(intptr_t)get(arg, err, sizeof(err));
}

Test(backend, concurrent_fetches_share_one_exchange)
{
    fake f = {0};
    pthread_t th[8];
    ferry_secrets *s;

    fake_start(&f);
    s = open_gcp(&f, true);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, reader, s), 0);
    for (int i = 0; i < 8; i++) {
        void *r;
        pthread_join(th[i], &r);
        cr_assert_eq((intptr_t)r, 0);
    }
    /* cache_ttl 0 and one reference: the cache's single-flight may merge reads, but however
     * they interleave, the token mutex allows one exchange and one impersonation. */
    cr_assert_eq(f.sts, 1);
    cr_assert_eq(f.iam, 1);
    cr_assert_geq(f.reads, 1);
    ferry_secrets_free(s);
    fake_stop(&f);
}
