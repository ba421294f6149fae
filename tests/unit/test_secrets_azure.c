/* tests/unit/test_secrets_azure.c - the azure-kv backend's parsers and checks against hostile
 * input: the Entra ID token answer and Key Vault's SecretBundle (truncated at every byte,
 * mistyped, oversized, disabled, expired, not yet valid, an id naming another secret or
 * version), the WWW-Authenticate Bearer challenge and the decision to follow it (another
 * tenant, another authority host, a look-alike host, a resource outside the vault's domain),
 * the error codes that may reach a reason (never the message), and the configuration refusals.
 * The backend end to end is tests/integration/test_secrets_azure.py. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "ferry/error.h"
#include "ferry/secrets.h"
#include "lib/secrets/azure-internal.h"

#define CANARY "canary-5e1f0a7d3c"
#define TENANT "72f988bf-86f1-41af-91ab-2d7cd011db47"
#define VER "0123456789abcdef0123456789abcdef"
#define NOW 1700000000

/* ---- token answers ------------------------------------------------------------------------ */

static const char tok_ok[] = "{\"token_type\":\"Bearer\",\"expires_in\":3599,"
                             "\"ext_expires_in\":3599,\"access_token\":\"eyJ0." CANARY ".sig\"}";

Test(token, answer_parsed)
{
    char *t = NULL, err[256] = "";
    int64_t exp = 0;

    cr_assert_eq(ferry_azure_token_parse(tok_ok, strlen(tok_ok), &t, &exp, err, sizeof(err)), 0,
                 "%s", err);
    cr_assert_str_eq(t, "eyJ0." CANARY ".sig");
    cr_assert_eq(exp, 3599);
    free(t);
    /* Older endpoints send expires_in as a decimal string. */
    static const char s[] = "{\"token_type\":\"bearer\",\"expires_in\":\"60\",\"access_token\":"
                            "\"abc\"}";
    cr_assert_eq(ferry_azure_token_parse(s, strlen(s), &t, &exp, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(exp, 60);
    free(t);
}

Test(token, hostile_answers)
{
    static const char *const bad[] = {
        "[]",
        "{}",
        "{\"token_type\":\"Bearer\",\"expires_in\":3599}",
        "{\"token_type\":\"Bearer\",\"expires_in\":3599,\"access_token\":\"\"}",
        "{\"token_type\":\"Bearer\",\"expires_in\":3599,\"access_token\":\"a b\"}",
        "{\"token_type\":\"Bearer\",\"expires_in\":3599,\"access_token\":\"a\\nb\"}",
        "{\"token_type\":\"Bearer\",\"expires_in\":3599,\"access_token\":7}",
        "{\"token_type\":\"pop\",\"expires_in\":3599,\"access_token\":\"" CANARY "\"}",
        "{\"expires_in\":3599,\"access_token\":\"" CANARY "\"}",
        "{\"token_type\":\"Bearer\",\"expires_in\":0,\"access_token\":\"" CANARY "\"}",
        "{\"token_type\":\"Bearer\",\"expires_in\":-5,\"access_token\":\"" CANARY "\"}",
        "{\"token_type\":\"Bearer\",\"expires_in\":999999,\"access_token\":\"" CANARY "\"}",
        "{\"token_type\":\"Bearer\",\"expires_in\":\"12x\",\"access_token\":\"" CANARY "\"}",
        "{\"token_type\":\"Bearer\",\"expires_in\":1.5,\"access_token\":\"" CANARY "\"}",
        "{\"token_type\":\"Bearer\",\"access_token\":\"" CANARY "\"}",
        "{\"token_type\":\"Bearer\",\"expires_in\":3599,\"access_token\":\"a\","
        "\"access_token\":\"b\"}",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *t = NULL, err[256] = "";
        int64_t exp = 0;
        int r = ferry_azure_token_parse(bad[i], strlen(bad[i]), &t, &exp, err, sizeof(err));
        cr_assert_eq(r, -FERRY_EMALFORMED, "case %zu: %d %s", i, r, err);
        cr_assert_null(t);
        cr_assert_null(strstr(err, CANARY), "case %zu: %s", i, err);
    }
}

Test(token, truncated_at_every_byte)
{
    for (size_t i = 0; i < strlen(tok_ok); i++) {
        char *t = NULL, err[256] = "";
        int64_t exp = 0;
        cr_assert_lt(ferry_azure_token_parse(tok_ok, i, &t, &exp, err, sizeof(err)), 0,
                     "prefix of %zu bytes accepted", i);
        cr_assert_null(t);
        cr_assert_null(strstr(err, CANARY));
    }
}

/* ---- SecretBundle ------------------------------------------------------------------------- */

static char *bundle(const char *value, const char *id, const char *attrs)
{
    size_t n = strlen(value) + strlen(id) + strlen(attrs) + 256;
    char *b = malloc(n);

    cr_assert_not_null(b);
    snprintf(b, n,
             "{\"value\":\"%s\",\"contentType\":\"text/plain\",\"id\":\"%s\","
             "\"attributes\":%s,\"tags\":{\"team\":\"ml\"}}",
             value, id, attrs);
    return b;
}

#define ID "https://kv1.vault.azure.net/secrets/db/" VER

Test(bundle, value_and_version)
{
    char *b = bundle(CANARY, ID,
                     "{\"enabled\":true,\"created\":1,\"updated\":2,\"recoveryLevel\":"
                     "\"Recoverable+Purgeable\"}");
    ferry_secret_value *v = NULL;
    char err[256] = "";

    cr_assert_eq(ferry_azure_secret_parse(b, strlen(b), "db", "", NOW, &v, err, sizeof(err)), 0,
                 "%s", err);
    cr_assert_eq(v->len, strlen(CANARY));
    cr_assert_eq(memcmp(v->data, CANARY, v->len), 0);
    cr_assert_str_eq(v->version, VER);
    cr_assert_eq(v->ttl_hint, 0);
    ferry_secret_value_free(v);
    v = NULL;
    /* The version asked for (upper case at Azure is the same version). */
    cr_assert_eq(ferry_azure_secret_parse(b, strlen(b), "db", "0123456789ABCDEF0123456789ABCDEF",
                                          NOW, &v, err, sizeof(err)),
                 0, "%s", err);
    ferry_secret_value_free(v);
    v = NULL;
    free(b);
    /* exp in the future: the seconds left are the cache hint; nbf past is fine. */
    b = bundle(CANARY, ID, "{\"enabled\":true,\"exp\":1700000100,\"nbf\":1600000000}");
    cr_assert_eq(ferry_azure_secret_parse(b, strlen(b), "db", "", NOW, &v, err, sizeof(err)), 0,
                 "%s", err);
    cr_assert_eq(v->ttl_hint, 100);
    ferry_secret_value_free(v);
    free(b);
    /* An empty value is a value. */
    b = bundle("", ID, "{\"enabled\":true}");
    v = NULL;
    cr_assert_eq(ferry_azure_secret_parse(b, strlen(b), "db", "", NOW, &v, err, sizeof(err)), 0);
    cr_assert_eq(v->len, 0);
    ferry_secret_value_free(v);
    free(b);
}

Test(bundle, refused_states)
{
    static const char *const attrs[] = {
        "{\"enabled\":false}",
        "{\"enabled\":true,\"exp\":1700000000}",
        "{\"enabled\":true,\"exp\":1}",
        "{\"enabled\":true,\"nbf\":1700000001}",
    };

    for (size_t i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++) {
        char *b = bundle(CANARY, ID, attrs[i]);
        ferry_secret_value *v = NULL;
        char err[256] = "";
        int r = ferry_azure_secret_parse(b, strlen(b), "db", "", NOW, &v, err, sizeof(err));
        cr_assert_eq(r, -EACCES, "case %zu: %d %s", i, r, err);
        cr_assert_null(v);
        cr_assert_null(strstr(err, CANARY), "%s", err);
        free(b);
    }
}

Test(bundle, hostile_shapes)
{
    static const char *const bad[] = {
        "[]",
        "{\"id\":\"" ID "\",\"attributes\":{}}",
        "{\"value\":7,\"id\":\"" ID "\"}",
        "{\"value\":null,\"id\":\"" ID "\"}",
        "{\"value\":\"" CANARY "\"}",
        "{\"value\":\"" CANARY "\",\"id\":5}",
        "{\"value\":\"" CANARY "\",\"id\":\"https://kv1.vault.azure.net/secrets/other/" VER "\"}",
        "{\"value\":\"" CANARY "\",\"id\":\"https://kv1.vault.azure.net/secrets/xdb/" VER "\"}",
        "{\"value\":\"" CANARY "\",\"id\":\"https://kv1.vault.azure.net/keys/db/" VER "\"}",
        "{\"value\":\"" CANARY "\",\"id\":\"https://kv1.vault.azure.net/secrets/db/\"}",
        "{\"value\":\"" CANARY "\",\"id\":\"https://kv1.vault.azure.net/secrets/db/a-b\"}",
        "{\"value\":\"" CANARY "\",\"id\":\"db/" VER "\"}",
        "{\"value\":\"" CANARY "\",\"id\":\"" ID "\",\"attributes\":[]}",
        "{\"value\":\"" CANARY "\",\"id\":\"" ID "\",\"attributes\":{\"enabled\":\"no\"}}",
        "{\"value\":\"" CANARY "\",\"id\":\"" ID "\",\"attributes\":{\"exp\":\"soon\"}}",
        "{\"value\":\"" CANARY "\",\"id\":\"" ID "\",\"attributes\":{\"nbf\":1.5}}",
        "{\"value\":\"" CANARY "\",\"value\":\"x\",\"id\":\"" ID "\"}",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ferry_secret_value *v = NULL;
        char err[256] = "";
        int r =
            ferry_azure_secret_parse(bad[i], strlen(bad[i]), "db", "", NOW, &v, err, sizeof(err));
        cr_assert_eq(r, -FERRY_EMALFORMED, "case %zu: %d %s", i, r, err);
        cr_assert_null(v);
        cr_assert_null(strstr(err, CANARY), "case %zu: %s", i, err);
    }
    /* The id must name the version asked for. */
    char *b = bundle(CANARY, ID, "{\"enabled\":true}");
    ferry_secret_value *v = NULL;
    char err[256] = "";
    cr_assert_eq(ferry_azure_secret_parse(b, strlen(b), "db", "ffffffffffffffffffffffffffffffff",
                                          NOW, &v, err, sizeof(err)),
                 -FERRY_EMALFORMED);
    cr_assert_null(v);
    free(b);
}

Test(bundle, truncated_at_every_byte)
{
    char *b = bundle(CANARY, ID, "{\"enabled\":true,\"exp\":1700000100}");

    for (size_t i = 0; i < strlen(b); i++) {
        ferry_secret_value *v = NULL;
        char err[256] = "";
        cr_assert_lt(ferry_azure_secret_parse(b, i, "db", "", NOW, &v, err, sizeof(err)), 0,
                     "prefix of %zu bytes accepted", i);
        cr_assert_null(v);
        cr_assert_null(strstr(err, CANARY), "%s", err);
    }
    free(b);
}

Test(bundle, value_over_64k)
{
    size_t n = FERRY_SECRET_VALUE_MAX + 1;
    char *big = malloc(n + 1);
    ferry_secret_value *v = NULL;
    char err[256] = "", *b;

    cr_assert_not_null(big);
    memset(big, 'A', n);
    big[n] = '\0';
    b = bundle(big, ID, "{\"enabled\":true}");
    cr_assert_eq(ferry_azure_secret_parse(b, strlen(b), "db", "", NOW, &v, err, sizeof(err)),
                 -FERRY_ETOOBIG, "%s", err);
    cr_assert_null(v);
    free(b);
    big[n - 1] = '\0'; /* exactly 64 KiB is accepted */
    b = bundle(big, ID, "{\"enabled\":true}");
    cr_assert_eq(ferry_azure_secret_parse(b, strlen(b), "db", "", NOW, &v, err, sizeof(err)), 0,
                 "%s", err);
    cr_assert_eq(v->len, FERRY_SECRET_VALUE_MAX);
    ferry_secret_value_free(v);
    free(b);
    free(big);
}

/* ---- the challenge ------------------------------------------------------------------------ */

Test(challenge, parsed)
{
    ferry_azure_challenge ch;
    char err[256] = "";

    cr_assert_eq(ferry_azure_challenge_parse(
                     "Bearer authorization=\"https://login.microsoftonline.com/" TENANT "\", "
                     "resource=\"https://vault.azure.net\"",
                     &ch, err, sizeof(err)),
                 0, "%s", err);
    cr_assert_str_eq(ch.authority, "https://login.microsoftonline.com/" TENANT);
    cr_assert_str_eq(ch.resource, "https://vault.azure.net");
    cr_assert_str_eq(ch.scope, "");
    cr_assert_eq(ferry_azure_challenge_parse(
                     "bearer authorization_uri=\"https://a.example/t\",scope="
                     "\"https://vault.azure.net/.default\", error=\"invalid_token\", PoP nonce=x",
                     &ch, err, sizeof(err)),
                 0, "%s", err);
    cr_assert_str_eq(ch.authority, "https://a.example/t");
    cr_assert_str_eq(ch.scope, "https://vault.azure.net/.default");
}

Test(challenge, refused)
{
    static const char *const bad[] = {
        "",
        "Basic realm=\"x\"",
        "Bearerauthorization=\"https://a/t\", resource=\"https://r\"",
        "Bearer resource=\"https://vault.azure.net\"",
        "Bearer authorization=\"https://a/t\"",
        "Bearer authorization=\"https://a/t, resource=\"https://r\"",
        "Bearer authorization=\"https://a/\\\"t\", resource=\"https://r\"",
        "Bearer authorization=\"https://a/t\", authorization=\"https://b/t\", resource=\"r\"",
        "Bearer authorization=\"https://a/t\" x, resource=\"https://r\"",
        "Bearer =\"https://a/t\", resource=\"https://r\"",
        "Bearer authorization=\"https://a/\tt\", resource=\"https://r\"",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ferry_azure_challenge ch;
        char err[256] = "";
        cr_assert_eq(ferry_azure_challenge_parse(bad[i], &ch, err, sizeof(err)), -FERRY_EMALFORMED,
                     "case %zu accepted", i);
    }
    /* Too long a parameter or header. */
    char *big = malloc(6000);
    ferry_azure_challenge ch;
    cr_assert_not_null(big);
    snprintf(big, 6000, "Bearer authorization=\"https://a/%0600d\", resource=\"https://r\"", 0);
    cr_assert_eq(ferry_azure_challenge_parse(big, &ch, NULL, 0), -FERRY_EMALFORMED);
    memset(big, ' ', 5999);
    big[5999] = '\0';
    cr_assert_eq(ferry_azure_challenge_parse(big, &ch, NULL, 0), -FERRY_EMALFORMED);
    free(big);
}

static int scope_of(const char *header, const char *vault_host, bool verify, char *scope, char *err)
{
    ferry_azure_challenge ch;
    int r = ferry_azure_challenge_parse(header, &ch, err, 256);

    if (r < 0)
        return r;
    return ferry_azure_challenge_scope(&ch, "https://login.microsoftonline.com", TENANT, vault_host,
                                       verify, scope, 513, err, 256);
}

Test(challenge, followed_only_for_the_configured_authority_and_vault_domain)
{
    char scope[513], err[256] = "";

    cr_assert_eq(scope_of("Bearer authorization=\"https://login.microsoftonline.com/" TENANT
                          "\", resource=\"https://vault.azure.net\"",
                          "kv1.vault.azure.net", true, scope, err),
                 0, "%s", err);
    cr_assert_str_eq(scope, "https://vault.azure.net/.default");
    cr_assert_eq(scope_of("Bearer authorization=\"HTTPS://LOGIN.microsoftonline.com/"
                          "72F988BF-86F1-41AF-91AB-2D7CD011DB47/\", resource="
                          "\"https://vault.azure.net/\"",
                          "kv1.vault.azure.net", true, scope, err),
                 0, "%s", err);
    cr_assert_str_eq(scope, "https://vault.azure.net/.default");
    cr_assert_eq(scope_of("Bearer authorization=\"https://login.microsoftonline.com/" TENANT
                          "\", scope=\"https://vault.usgovcloudapi.net/.default\"",
                          "kv1.vault.usgovcloudapi.net", true, scope, err),
                 0, "%s", err);
    cr_assert_str_eq(scope, "https://vault.usgovcloudapi.net/.default");

    static const char *const refused[] = {
        /* another tenant */
        "Bearer authorization=\"https://login.microsoftonline.com/"
        "00000000-0000-0000-0000-000000000000\", resource=\"https://vault.azure.net\"",
        "Bearer authorization=\"https://login.microsoftonline.com/common\", resource="
        "\"https://vault.azure.net\"",
        "Bearer authorization=\"https://login.microsoftonline.com/" TENANT "x\", resource="
        "\"https://vault.azure.net\"",
        "Bearer authorization=\"https://login.microsoftonline.com/" TENANT "/oauth2\", "
        "resource=\"https://vault.azure.net\"",
        /* another authority host, or one that only starts like it */
        "Bearer authorization=\"https://evil.example/" TENANT "\", resource="
        "\"https://vault.azure.net\"",
        "Bearer authorization=\"https://login.microsoftonline.com.evil.example/" TENANT "\", "
        "resource=\"https://vault.azure.net\"",
        "Bearer authorization=\"https://login.microsoftonline.com:8443/" TENANT "\", "
        "resource=\"https://vault.azure.net\"",
        "Bearer authorization=\"http://login.microsoftonline.com/" TENANT "\", "
        "resource=\"https://vault.azure.net\"",
        /* a resource outside the vault's domain */
        "Bearer authorization=\"https://login.microsoftonline.com/" TENANT "\", "
        "resource=\"https://evil.example\"",
        "Bearer authorization=\"https://login.microsoftonline.com/" TENANT "\", "
        "resource=\"https://azure.net.evil.example\"",
        "Bearer authorization=\"https://login.microsoftonline.com/" TENANT "\", "
        "resource=\"https://kv1.vault.azure.net\"",
        "Bearer authorization=\"https://login.microsoftonline.com/" TENANT "\", "
        "resource=\"http://vault.azure.net\"",
        "Bearer authorization=\"https://login.microsoftonline.com/" TENANT "\", "
        "resource=\"https://user@vault.azure.net\"",
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        cr_assert_eq(scope_of(refused[i], "kv1.vault.azure.net", true, scope, err), -FERRY_EPOLICY,
                     "case %zu followed", i);
    /* Verification off (tests on loopback): any https resource, but never another authority. */
    cr_assert_eq(scope_of(refused[8], "127.0.0.1", false, scope, err), 0, "%s", err);
    cr_assert_str_eq(scope, "https://evil.example/.default");
    cr_assert_eq(scope_of(refused[4], "127.0.0.1", false, scope, err), -FERRY_EPOLICY);
    cr_assert_eq(scope_of(refused[0], "127.0.0.1", false, scope, err), -FERRY_EPOLICY);
    cr_assert_eq(scope_of(refused[11], "127.0.0.1", false, scope, err), -FERRY_EPOLICY);
}

/* ---- error codes -------------------------------------------------------------------------- */

Test(errors, only_short_codes_reach_a_reason)
{
    char code[160];
    static const char kv[] = "{\"error\":{\"code\":\"Forbidden\",\"message\":\"" CANARY "\","
                             "\"innererror\":{\"code\":\"SecretDisabled\"}}}";
    static const char aad[] = "{\"error\":\"invalid_client\",\"error_description\":\"AADSTS700213"
                              ": " CANARY "\",\"error_codes\":[700213]}";
    static const char *const dropped[] = {
        "{\"error\":{\"code\":\"" CANARY "\",\"message\":\"x\"}}",
        "{\"error\":{\"code\":\"a b\"}}",
        "{\"error\":{\"message\":\"" CANARY "\"}}",
        "{\"error\":\"" CANARY "\"}",
        "{\"error\":7}",
        "not json " CANARY,
        "",
    };

    ferry_azure_error_code(kv, strlen(kv), code, sizeof(code));
    cr_assert_str_eq(code, "Forbidden/SecretDisabled");
    ferry_azure_error_code(aad, strlen(aad), code, sizeof(code));
    cr_assert_str_eq(code, "invalid_client");
    for (size_t i = 0; i < sizeof(dropped) / sizeof(dropped[0]); i++) {
        ferry_azure_error_code(dropped[i], strlen(dropped[i]), code, sizeof(code));
        cr_assert_str_eq(code, "", "case %zu: %s", i, code);
    }
}

/* ---- configuration ------------------------------------------------------------------------ */

static int stub_identity(void *userdata, const char *audience, char **ret_token, char *errbuf,
                         size_t errlen)
{
    (void)userdata, (void)audience, (void)errbuf, (void)errlen;
    *ret_token = strdup("a.b.c");
    return *ret_token ? 0 : -ENOMEM;
}

static int open_conf(const char *text, bool with_identity, char *err, size_t errlen)
{
    ferry_secrets_env env = {.web_identity_token = stub_identity};
    json_error_t je;
    json_t *conf = json_loads(text, 0, &je);
    ferry_secrets *s = NULL;
    int r;

    cr_assert_not_null(conf, "%s: %s", text, je.text);
    r = ferry_secrets_new(conf, with_identity ? &env : NULL, &s, err, errlen);
    if (r == 0)
        cr_assert_not_null(s);
    else
        cr_assert_null(s);
    ferry_secrets_free(s);
    json_decref(conf);
    return r;
}

#define IDS "\"tenant_id\":\"" TENANT "\",\"client_id\":\"0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0\""

Test(config, accepted)
{
    static const char *const good[] = {
        "{\"azure-kv\":{" IDS "}}",
        "{\"azure-kv\":{" IDS ",\"authority_host\":\"https://login.microsoftonline.us/\","
        "\"audience\":\"api://AzureADTokenExchangeUSGov\",\"vault_url\":"
        "\"https://{vault}.vault.usgovcloudapi.net/\",\"api_version\":\"2025-07-01\","
        "\"timeout_ms\":5000,\"max_retry_wait_ms\":0,\"verify_challenge_resource\":true}}",
        "{\"azure-kv\":{" IDS ",\"authority_host\":\"http://127.0.0.1:9\",\"vault_url\":"
        "\"http://127.0.0.1:9/{vault}\",\"allow_http_loopback\":true,\"ca_file\":\"/x.pem\","
        "\"verify_challenge_resource\":false,\"cache_ttl\":0}}",
    };
    char err[512] = "";

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        cr_assert_eq(open_conf(good[i], true, err, sizeof(err)), 0, "case %zu: %s", i, err);
}

Test(config, refusals)
{
    static const struct {
        const char *conf, *why;
    } bad[] = {
        {"{\"azure-kv\":{}}", "tenant_id"},
        {"{\"azure-kv\":{\"tenant_id\":\"" TENANT "\"}}", "client_id"},
        {"{\"azure-kv\":{\"tenant_id\":\"contoso.onmicrosoft.com\",\"client_id\":"
         "\"0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0\"}}",
         "tenant_id"},
        {"{\"azure-kv\":{\"tenant_id\":\"" TENANT "\",\"client_id\":\"0b1c2d3e-4f50-6172-8394-"
         "a5b6c7d8e9fg\"}}",
         "client_id"},
        {"{\"azure-kv\":{" IDS ",\"client_secret\":\"s3cr3t\"}}", "no client secret"},
        {"{\"azure-kv\":{" IDS ",\"vault\":\"x\"}}", "unknown member \"vault\""},
        {"{\"azure-kv\":{" IDS ",\"vault_url\":\"https://kv.vault.azure.net\"}}", "vault_url"},
        {"{\"azure-kv\":{" IDS ",\"vault_url\":\"https://{vault}.{vault}.net\"}}", "vault_url"},
        {"{\"azure-kv\":{" IDS ",\"vault_url\":\"http://{vault}.vault.azure.net\"}}", "vault_url"},
        {"{\"azure-kv\":{" IDS ",\"vault_url\":\"http://127.0.0.1:9/{vault}\"}}", "vault_url"},
        {"{\"azure-kv\":{" IDS ",\"vault_url\":\"https://{vault}.vault.azure.net/?x=1\"}}",
         "vault_url"},
        {"{\"azure-kv\":{" IDS ",\"authority_host\":\"https://login.microsoftonline.com/t\"}}",
         "authority_host"},
        {"{\"azure-kv\":{" IDS ",\"authority_host\":\"http://login.microsoftonline.com\"}}",
         "authority_host"},
        {"{\"azure-kv\":{" IDS ",\"authority_host\":\"https://u@login.example\"}}",
         "authority_host"},
        {"{\"azure-kv\":{" IDS ",\"api_version\":\"7.4&x=1\"}}", "api_version"},
        {"{\"azure-kv\":{" IDS ",\"api_version\":7.4}}", "api_version"},
        {"{\"azure-kv\":{" IDS ",\"audience\":\"a b\"}}", "audience"},
        {"{\"azure-kv\":{" IDS ",\"timeout_ms\":5}}", "timeout_ms"},
        {"{\"azure-kv\":{" IDS ",\"max_retry_wait_ms\":-1}}", "max_retry_wait_ms"},
        {"{\"azure-kv\":{" IDS ",\"allow_http_loopback\":\"yes\"}}", "allow_http_loopback"},
        {"{\"azure-kv\":{" IDS ",\"verify_challenge_resource\":0}}", "verify_challenge_resource"},
        {"{\"azure-kv\":\"x\"}", ""},
    };
    char err[512];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        int r = open_conf(bad[i].conf, true, err, sizeof(err));
        cr_assert(r == -FERRY_ECONFIG, "case %zu: %d %s", i, r, err);
        cr_assert(strstr(err, bad[i].why), "case %zu: \"%s\" does not name %s", i, err, bad[i].why);
        cr_assert_null(strstr(err, "s3cr3t"), "%s", err);
    }
    /* Without ferry's identity there is nothing to sign in with. */
    err[0] = '\0';
    cr_assert_eq(open_conf("{\"azure-kv\":{" IDS "}}", false, err, sizeof(err)), -FERRY_ECONFIG);
    cr_assert(strstr(err, "identity"), "%s", err);
}
