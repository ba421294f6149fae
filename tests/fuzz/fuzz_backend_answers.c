/* tests/fuzz/fuzz_backend_answers.c - libFuzzer target: every parser of a remote's answer in
 * the secret backends and the cloud module, on hostile bytes.
 *
 * The first input byte picks the parser, the rest is the answer: AWS STS XML, Secrets Manager
 * and KMS JSON, the strict standard base64 of values, Vault's KV v2 and login answers, Key
 * Vault's SecretBundle, Entra ID's token answer, the Bearer challenge and the decision to
 * follow it, GCP STS, IAM Credentials and Secret Manager answers, RFC 3339 times and the error
 * words the reasons may carry. Properties: no crash, no sanitizer report, no leak; every
 * refusal leaves a reason; an accepted value is within the value limit; an error word copied
 * into a reason is printable ASCII of the documented alphabet (the remote's message text never
 * is). */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ferry/cloud.h"
#include "ferry/error.h"
#include "ferry/secrets.h"
#include "lib/secrets/aws-internal.h"
#include "lib/secrets/azure-internal.h"
#include "lib/secrets/gcp-internal.h"
#include "lib/secrets/vault-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *why)
{
    fprintf(stderr, "fuzz_backend_answers: %s\n", why);
    abort();
}

static void check_value(int r, ferry_secret_value *v, const char *err)
{
    if (r == 0) {
        if (!v || v->len > FERRY_SECRET_VALUE_MAX)
            die("accepted value out of bounds");
        ferry_secret_value_free(v);
    } else if (r != -ENOMEM && r != -ENOENT && !err[0]) {
        die("refused without a reason");
    }
}

static void check_token(int r, char *tok, const char *err)
{
    if (r == 0) {
        if (!tok)
            die("accepted without a token");
        memset(tok, 0, strlen(tok));
        free(tok);
    } else if (r != -ENOMEM && !err[0]) {
        die("refused without a reason");
    }
}

static void check_word(const char *w, const char *alphabet)
{
    for (const char *p = w; *p; p++)
        if (!strchr(alphabet, *p))
            die("an error word outside its alphabet");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char upper[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";
    static const char az_code[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_/";
    ferry_secret_value *v = NULL;
    ferry_aws_credentials creds = {0};
    ferry_secret_ref ref;
    ferry_azure_challenge ch;
    char err[512] = "", word[128], scope[1100], *tok = NULL, *body;
    int64_t n64 = 0;
    bool renewable = false;
    int r;

    if (size < 1 || size > 300 * 1024)
        return 0;
    body = malloc(size);
    if (!body)
        return 0;
    memcpy(body, data + 1, size - 1);
    body[size - 1] = '\0';
    size_t len = size - 1;

    switch (data[0] % 16) {
    case 0:
        r = ferry_aws_sts_parse(body, len, &creds, err, sizeof(err));
        if (r == 0 && (!creds.access_key_id[0] || !creds.secret_access_key))
            die("STS accepted without credentials");
        if (r < 0 && r != -ENOMEM && !err[0])
            die("STS refused without a reason");
        ferry_aws_credentials_clear(&creds);
        break;
    case 1:
        r = ferry_aws_sm_parse(body, len, (len & 1) ? "password" : "", &v, err, sizeof(err));
        check_value(r, v, err);
        break;
    case 2:
        r = ferry_aws_kms_parse(body, len, &v, err, sizeof(err));
        check_value(r, v, err);
        break;
    case 3:
        r = ferry_aws_b64_value(body, len, &v);
        if (r == 0)
            check_value(r, v, "");
        break;
    case 4:
        r = ferry_aws_error(400 + (long)(len % 200), body, len, err, sizeof(err));
        if (r >= 0)
            die("an AWS error mapped to success");
        break;
    case 5:
        r = ferry_vault_kv2_parse(body, len, (len & 1) ? "password" : "value", &v, err,
                                  sizeof(err));
        check_value(r, v, err);
        break;
    case 6:
        r = ferry_vault_auth_parse(body, len, &tok, &n64, &renewable, err, sizeof(err));
        check_token(r, tok, err);
        break;
    case 7:
        r = ferry_azure_secret_parse(body, len, "db-password",
                                     (len & 1) ? "0123456789abcdef0123456789abcdef" : "",
                                     1700000000, &v, err, sizeof(err));
        check_value(r, v, err);
        break;
    case 8:
        r = ferry_azure_token_parse(body, len, &tok, &n64, err, sizeof(err));
        check_token(r, tok, err);
        break;
    case 9:
        r = ferry_azure_challenge_parse(body, &ch, err, sizeof(err));
        if (r == 0) {
            r = ferry_azure_challenge_scope(&ch, "https://login.microsoftonline.com",
                                            "72f988bf-86f1-41af-91ab-2d7cd011db47",
                                            "myvault.vault.azure.net", true, scope,
                                            sizeof(scope), err, sizeof(err));
            /* Host names compare without case; anything else is another authority. */
            if (r == 0 &&
                strncasecmp(ch.authority, "https://login.microsoftonline.com/", 34) != 0)
                die("a challenge naming another authority was followed");
        } else if (r != -ENOMEM && !err[0]) {
            die("challenge refused without a reason");
        }
        break;
    case 10:
        ferry_azure_error_code(body, len, word, sizeof(word));
        check_word(word, az_code);
        break;
    case 11:
        if (ferry_secret_ref_parse("gcp-sm:projects/my-project/secrets/hf_token/versions/latest",
                                   &ref, err, sizeof(err)) < 0)
            die("the fixed reference");
        r = ferry_gcp_access_parse(body, len, &ref, &v, err, sizeof(err));
        check_value(r, v, err);
        break;
    case 12:
        r = ferry_gcp_sts_parse(body, len, &tok, &n64, err, sizeof(err));
        check_token(r, tok, err);
        break;
    case 13:
        r = ferry_gcp_iam_parse(body, len, 1700000000, &tok, &n64, err, sizeof(err));
        check_token(r, tok, err);
        break;
    case 14:
        (void)ferry_gcp_rfc3339_parse(body, len, &n64);
        break;
    default:
        if (ferry_gcp_error_status(body, len, word, sizeof(word)) == 0)
            check_word(word, upper);
        break;
    }
    free(body);
    return 0;
}
