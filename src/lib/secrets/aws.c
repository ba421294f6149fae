/* lib/secrets/aws.c - the aws-sm (Secrets Manager GetSecretValue) and aws-kms (KMS Decrypt)
 * secret backends. Credentials come from ferry's AWS provider (ferry/cloud.h: STS
 * AssumeRoleWithWebIdentity with a ferry-minted token, or the environment); requests are AWS
 * JSON 1.1 POSTs signed with ferry's SigV4. docs/internals/secrets.md ("AWS").
 *
 * Configuration, one object per backend ("aws-sm", "aws-kms"), members:
 *   region (required), endpoint, role_arn, session_name, sts_endpoint, audience,
 *   web_identity_token_file, duration_seconds, allow_http_loopback, ca_file, timeout_ms.
 * Unknown members are refused.
 *
 * Values: response bodies are read into wiping buffers; the strings of the parsed JSON tree
 * that held a value are wiped in place before the tree is freed. A value is handed out whole
 * or not at all.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "basic/errbuf.h"
#include "basic/b64.h"
#include "basic/macro.h"
#include "basic/mem.h"
#include "ferry/cloud.h"
#include "ferry/error.h"
#include "ferry/json.h"
#include "lib/secrets/aws-internal.h"
#include "lib/secrets/secrets-internal.h"

#define fail(...) ferry_errbuf_set(__VA_ARGS__)

/* ---- parsers -------------------------------------------------------------------------------- */

int ferry_aws_b64_value(const char *in, size_t n, ferry_secret_value **ret)
{
    ferry_secret_value *v = NULL;
    unsigned char *tmp;
    size_t pad, dec, out_len = 0;
    int r;

    if (n == 0 || n % 4 != 0)
        return -FERRY_EMALFORMED;
    pad = (in[n - 1] == '=') + (in[n - 2] == '=');
    dec = n / 4 * 3 - pad;
    if (dec > FERRY_SECRET_VALUE_MAX)
        return -FERRY_ETOOBIG;
    tmp = malloc(n / 4 * 3);
    if (!tmp)
        return -ENOMEM;
    r = ferry_b64_decode(in, n, tmp, &out_len) < 0 || out_len != dec || dec == 0
            ? -FERRY_EMALFORMED
            : ferry_secret_value_new(dec, &v);
    if (r == 0)
        memcpy(v->data, tmp, dec);
    ferry_wipe(tmp, n / 4 * 3);
    free(tmp);
    if (r == 0)
        *ret = v;
    return r;
}

/* Wipe every string in the tree (values may sit anywhere in a JSON SecretString). */
static int version_copy(json_t *obj, const char *member, ferry_secret_value *v, char *errbuf,
                        size_t errlen)
{
    json_t *ver = json_object_get(obj, member);
    size_t n;

    if (!ver)
        return 0;
    if (!json_is_string(ver))
        return fail(errbuf, errlen, -FERRY_EMALFORMED, "response: %s is not a string", member);
    n = json_string_length(ver);
    if (n > FERRY_SECRET_VERSION_MAX || memchr(json_string_value(ver), '\0', n))
        return fail(errbuf, errlen, -FERRY_EMALFORMED, "response: %s too long", member);
    memcpy(v->version, json_string_value(ver), n);
    v->version[n] = '\0';
    return 0;
}

static int value_from_bytes(const char *p, size_t n, ferry_secret_value **ret)
{
    ferry_secret_value *v;
    int r;

    if (n > FERRY_SECRET_VALUE_MAX)
        return -FERRY_ETOOBIG;
    r = ferry_secret_value_new(n, &v);
    if (r < 0)
        return r;
    memcpy(v->data, p, n);
    *ret = v;
    return 0;
}

int ferry_aws_sm_parse(const char *body, size_t len, const char *field, ferry_secret_value **ret,
                       char *errbuf, size_t errlen)
{
    json_t *j = NULL, *inner = NULL, *str, *bin;
    ferry_secret_value *v = NULL;
    int r;

    if (!body || !ret)
        return -EINVAL;
    r = ferry_json_parse(body, len, FERRY_AWS_SECRET_RESPONSE_MAX, 16, &j, NULL, 0);
    if (r < 0)
        return fail(errbuf, errlen, r == -FERRY_ETOOBIG ? r : -FERRY_EMALFORMED,
                    "GetSecretValue response: not a JSON document%s",
                    r == -FERRY_ETOOBIG ? " within the limits" : "");
    if (!json_is_object(j)) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED, "GetSecretValue response: not an object");
        goto out;
    }
    str = json_object_get(j, "SecretString");
    bin = json_object_get(j, "SecretBinary");
    if (json_is_null(str))
        str = NULL;
    if (json_is_null(bin))
        bin = NULL;
    if (!!str == !!bin) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "GetSecretValue response: needs exactly one of SecretString and SecretBinary");
        goto out;
    }
    if ((str && !json_is_string(str)) || (bin && !json_is_string(bin))) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED, "GetSecretValue response: %s is not a string",
                 str ? "SecretString" : "SecretBinary");
        goto out;
    }
    if (field && *field) {
        json_t *m;
        if (!str) {
            r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                     "a JSON key was asked for but the secret is binary");
            goto out;
        }
        r = ferry_json_parse(json_string_value(str), json_string_length(str),
                             FERRY_AWS_SECRET_RESPONSE_MAX, 16, &inner, NULL, 0);
        if (r < 0 || !json_is_object(inner)) {
            r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                     "a JSON key was asked for but SecretString is not a JSON object");
            goto out;
        }
        m = json_object_get(inner, field);
        if (!m) {
            r = fail(errbuf, errlen, -ENOENT, "SecretString has no key \"%s\"", field);
            goto out;
        }
        if (!json_is_string(m)) {
            r = fail(errbuf, errlen, -FERRY_EMALFORMED, "SecretString key \"%s\" is not a string",
                     field);
            goto out;
        }
        r = value_from_bytes(json_string_value(m), json_string_length(m), &v);
    } else if (str) {
        r = value_from_bytes(json_string_value(str), json_string_length(str), &v);
    } else {
        r = ferry_aws_b64_value(json_string_value(bin), json_string_length(bin), &v);
    }
    if (r < 0) {
        r = fail(errbuf, errlen, r, "GetSecretValue response: the value is %s",
                 r == -FERRY_ETOOBIG ? "over 64 KiB" : "not valid base64");
        goto out;
    }
    r = version_copy(j, "VersionId", v, errbuf, errlen);
    if (r < 0)
        goto out;
    *ret = TAKE_PTR(v);
out:
    ferry_secret_value_free(v);
    ferry_json_wipe_strings(inner);
    ferry_json_wipe_strings(j);
    json_decref(inner);
    json_decref(j);
    return r;
}

int ferry_aws_kms_parse(const char *body, size_t len, ferry_secret_value **ret, char *errbuf,
                        size_t errlen)
{
    json_t *j = NULL, *pt;
    ferry_secret_value *v = NULL;
    int r;

    if (!body || !ret)
        return -EINVAL;
    r = ferry_json_parse(body, len, FERRY_AWS_SECRET_RESPONSE_MAX, 8, &j, NULL, 0);
    if (r < 0)
        return fail(errbuf, errlen, r == -FERRY_ETOOBIG ? r : -FERRY_EMALFORMED,
                    "Decrypt response: not a JSON document%s",
                    r == -FERRY_ETOOBIG ? " within the limits" : "");
    if (!json_is_object(j)) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED, "Decrypt response: not an object");
        goto out;
    }
    pt = json_object_get(j, "Plaintext");
    if (!json_is_string(pt)) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED, "Decrypt response: Plaintext is %s",
                 pt ? "not a string" : "missing");
        goto out;
    }
    r = ferry_aws_b64_value(json_string_value(pt), json_string_length(pt), &v);
    if (r < 0) {
        r = fail(errbuf, errlen, r, "Decrypt response: Plaintext is %s",
                 r == -FERRY_ETOOBIG ? "over 64 KiB" : "not valid base64");
        goto out;
    }
    r = version_copy(j, "KeyId", v, errbuf, errlen);
    if (r < 0)
        goto out;
    *ret = TAKE_PTR(v);
out:
    ferry_secret_value_free(v);
    ferry_json_wipe_strings(j);
    json_decref(j);
    return r;
}

/* ---- the backends ------------------------------------------------------------------------- */

typedef struct aws_state {
    ferry_aws_provider *prov;
    char *endpoint;       /* NULL: the service's public endpoint in the region */
    ferry_secrets *owner; /* aws-kms: the file backend's blobs (aws-kms:file:<name>) */
} aws_state;

static void aws_close(void *state)
{
    aws_state *st = state;

    if (!st)
        return;
    ferry_aws_provider_free(st->prov);
    free(st->endpoint);
    free(st);
}

static const char *const aws_members[] = {
    "region",
    "endpoint",
    "role_arn",
    "session_name",
    "sts_endpoint",
    "audience",
    "web_identity_token_file",
    "duration_seconds",
    "allow_http_loopback",
    "ca_file",
    "timeout_ms",
    "profile",
};

static int conf_string(const json_t *conf, const char *name, const char **ret, char *errbuf,
                       size_t errlen)
{
    json_t *v = json_object_get(conf, name);

    *ret = NULL;
    if (!v)
        return 0;
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 2048 ||
        strlen(json_string_value(v)) != json_string_length(v))
        return fail(errbuf, errlen, -FERRY_ECONFIG, "%s: must be a non-empty string", name);
    *ret = json_string_value(v);
    return 0;
}

static int aws_open(const json_t *conf, const ferry_secrets_env *env, void **ret_state,
                    char *errbuf, size_t errlen)
{
    ferry_aws_config c = {0};
    const char *endpoint = NULL;
    const char *key;
    json_t *v;
    aws_state *st;
    int r;

    if (!conf)
        return fail(errbuf, errlen, -FERRY_ECONFIG, "needs a configuration (region)");
    json_object_foreach((json_t *)conf, key, v)
    {
        size_t i;
        for (i = 0; i < ARRAY_SIZE(aws_members); i++)
            if (strcmp(key, aws_members[i]) == 0)
                break;
        if (i == ARRAY_SIZE(aws_members))
            return fail(errbuf, errlen, -FERRY_ECONFIG, "unknown member \"%.64s\"", key);
    }
    if ((r = conf_string(conf, "region", &c.region, errbuf, errlen)) < 0 ||
        (r = conf_string(conf, "endpoint", &endpoint, errbuf, errlen)) < 0 ||
        (r = conf_string(conf, "role_arn", &c.role_arn, errbuf, errlen)) < 0 ||
        (r = conf_string(conf, "session_name", &c.session_name, errbuf, errlen)) < 0 ||
        (r = conf_string(conf, "sts_endpoint", &c.sts_endpoint, errbuf, errlen)) < 0 ||
        (r = conf_string(conf, "audience", &c.audience, errbuf, errlen)) < 0 ||
        (r = conf_string(conf, "web_identity_token_file", &c.web_identity_token_file, errbuf,
                         errlen)) < 0 ||
        (r = conf_string(conf, "ca_file", &c.http.ca_file, errbuf, errlen)) < 0 ||
        (r = conf_string(conf, "profile", &c.profile, errbuf, errlen)) < 0)
        return r;
    if (!c.region)
        return fail(errbuf, errlen, -FERRY_ECONFIG, "region: required");
    v = json_object_get(conf, "allow_http_loopback");
    if (v && !json_is_boolean(v))
        return fail(errbuf, errlen, -FERRY_ECONFIG, "allow_http_loopback: must be a boolean");
    c.http.allow_http_loopback = json_is_true(v);
    v = json_object_get(conf, "duration_seconds");
    if (v && (!json_is_integer(v) || json_integer_value(v) < 900 || json_integer_value(v) > 43200))
        return fail(errbuf, errlen, -FERRY_ECONFIG, "duration_seconds: an integer 900..43200");
    c.duration_seconds = v ? (uint32_t)json_integer_value(v) : 0;
    v = json_object_get(conf, "timeout_ms");
    if (v && (!json_is_integer(v) || json_integer_value(v) < 100 || json_integer_value(v) > 600000))
        return fail(errbuf, errlen, -FERRY_ECONFIG, "timeout_ms: an integer 100..600000");
    c.http.total_timeout_ms = v ? (long)json_integer_value(v) : 0;
    c.http.max_redirects = 0;
    if (env && env->web_identity_token) {
        c.web_identity = env->web_identity_token;
        c.web_identity_userdata = env->web_identity_userdata;
    }
    st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    if (endpoint) {
        st->endpoint = strdup(endpoint);
        if (!st->endpoint) {
            aws_close(st);
            return -ENOMEM;
        }
    }
    r = ferry_aws_provider_new(&c, &st->prov, errbuf, errlen);
    if (r < 0) {
        aws_close(st);
        return r;
    }
    if (endpoint && ferry_http_check_url(endpoint, &c.http) < 0) {
        aws_close(st);
        return fail(errbuf, errlen, -FERRY_ECONFIG,
                    "endpoint: refused (https only; http only to 127.0.0.1/[::1] with "
                    "allow_http_loopback)");
    }
    *ret_state = st;
    return 0;
}

static void aws_attach(void *state, ferry_secrets *owner)
{
    ((aws_state *)state)->owner = owner;
}

static int sm_fetch(void *state, void *ctx, const ferry_secret_ref *ref, ferry_secret_value **ret,
                    char *errbuf, size_t errlen)
{
    aws_state *st = state;
    ferry_http_response resp = {0};
    json_t *req;
    char *body;
    int r;

    (void)ctx;
    req = json_pack("{s:s}", "SecretId", ref->name);
    if (req && ref->version[0])
        json_object_set_new(req, "VersionId", json_string(ref->version));
    if (req && ref->stage[0])
        json_object_set_new(req, "VersionStage", json_string(ref->stage));
    body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!body)
        return -ENOMEM;
    r = ferry_aws_json_call(st->prov, st->endpoint, "secretsmanager",
                            "secretsmanager.GetSecretValue", body, strlen(body),
                            FERRY_AWS_SECRET_RESPONSE_MAX, &resp, errbuf, errlen);
    free(body);
    if (r < 0)
        return r;
    r = ferry_aws_sm_parse(resp.body, resp.body_len, ref->field, ret, errbuf, errlen);
    ferry_http_response_release(&resp);
    return r;
}

/* KMS Decrypt of a standard base64 blob; with ctx_key, under EncryptionContext
 * {ctx_key: ctx_value}. */
static int kms_decrypt(aws_state *st, const char *b64, size_t b64_len, const char *ctx_key,
                       const char *ctx_value, ferry_secret_value **ret, char *errbuf,
                       size_t errlen)
{
    ferry_http_response resp = {0};
    json_t *req;
    char *body;
    int r;

    req = json_pack("{s:s%}", "CiphertextBlob", b64, b64_len);
    if (req && ctx_key &&
        json_object_set_new(req, "EncryptionContext", json_pack("{s:s}", ctx_key, ctx_value)) < 0)
        json_decref(req), req = NULL;
    body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!body)
        return -ENOMEM;
    r = ferry_aws_json_call(st->prov, st->endpoint, "kms", "TrentService.Decrypt", body,
                            strlen(body), FERRY_AWS_SECRET_RESPONSE_MAX, &resp, errbuf, errlen);
    free(body);
    if (r < 0)
        return r;
    r = ferry_aws_kms_parse(resp.body, resp.body_len, ret, errbuf, errlen);
    ferry_http_response_release(&resp);
    return r;
}

static bool std_b64_chars(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= 'A' && p[i] <= 'Z') || (p[i] >= 'a' && p[i] <= 'z') ||
              (p[i] >= '0' && p[i] <= '9') || p[i] == '+' || p[i] == '/' || p[i] == '='))
            return false;
    return true;
}

static int kms_fetch(void *state, void *ctx, const ferry_secret_ref *ref, ferry_secret_value **ret,
                     char *errbuf, size_t errlen)
{
    aws_state *st = state;
    ferry_secret_value *blob = NULL;
    char ref_buf[FERRY_SECRET_REF_MAX + 8];
    char why[256];
    int r;

    (void)ctx;
    if (strcmp(ref->scope, "b64") == 0)
        return kms_decrypt(st, ref->name, strlen(ref->name), NULL, NULL, ret, errbuf, errlen);
    if (strcmp(ref->scope, "file") != 0)
        return fail(errbuf, errlen, -FERRY_EMALFORMED, "unknown ciphertext source");
    if (!st->owner)
        return fail(errbuf, errlen, -FERRY_EUNSUPPORTED, "no file backend to read the blob");
    snprintf(ref_buf, sizeof(ref_buf), "file:%s", ref->name);
    r = ferry_secrets_fetch(st->owner, ref_buf, NULL, &blob, why, sizeof(why));
    if (r < 0)
        return fail(errbuf, errlen, r, "ciphertext blob: %s", why);
    /* The file entry holds the blob either as standard base64 text (as `aws kms encrypt`
     * prints it) or as the raw ciphertext bytes. */
    if (blob->len > 0 && std_b64_chars(blob->data, blob->len)) {
        r = kms_decrypt(st, (const char *)blob->data, blob->len, NULL, NULL, ret, errbuf,
                        errlen);
    } else {
        size_t enc_len = ferry_b64url_encoded_len(blob->len);
        char *enc = malloc(enc_len + 4);
        if (!enc) {
            ferry_secret_value_free(blob);
            return -ENOMEM;
        }
        ferry_b64url_encode(blob->data, blob->len, enc);
        for (size_t i = 0; i < enc_len; i++)
            enc[i] = enc[i] == '-' ? '+' : enc[i] == '_' ? '/' : enc[i];
        while (enc_len % 4)
            enc[enc_len++] = '=';
        enc[enc_len] = '\0';
        r = kms_decrypt(st, enc, enc_len, NULL, NULL, ret, errbuf, errlen);
        free(enc);
    }
    ferry_secret_value_free(blob);
    return r;
}

int ferry_secrets_aws_kms_unwrap(void *kms_state, const char *b64, const char *ctx_key,
                                 const char *ctx_value, ferry_secret_value **ret, char *errbuf,
                                 size_t errlen)
{
    if (!kms_state || !b64 || !ctx_key || !ctx_value || !ret)
        return -EINVAL;
    return kms_decrypt(kms_state, b64, strlen(b64), ctx_key, ctx_value, ret, errbuf, errlen);
}

const ferry_secret_backend_ops ferry_secrets_aws_sm_backend = {
    .name = "aws-sm",
    .id = FERRY_SECRET_AWS_SM,
    .open = aws_open,
    .fetch = sm_fetch,
    .close = aws_close,
};

const ferry_secret_backend_ops ferry_secrets_aws_kms_backend = {
    .name = "aws-kms",
    .id = FERRY_SECRET_AWS_KMS,
    .open = aws_open,
    .fetch = kms_fetch,
    .close = aws_close,
    .attach = aws_attach,
};
