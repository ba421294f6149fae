/* tests/unit/test_secrets.c - secret references (every backend's forms, malformed ones with
 * their reasons, canonical form against grants), secret values, the backend table, and the
 * sealed-file store: round trip, versions, tampering, swapping, rollback, truncation, wrong
 * key, key file checks, limits, concurrent writers, and a kill at every step of a write. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ferry/error.h"
#include "ferry/secrets.h"
#include "lib/secrets/secrets-internal.h"

/* ---- references ------------------------------------------------------------------------ */

static const struct valid_case {
    const char *in, *canonical;
    ferry_secret_backend backend;
    const char *scope, *name, *field, *version, *stage;
} valid[] = {
    {"vault:kv/ml/wandb#api_key", NULL, FERRY_SECRET_VAULT, "kv", "ml/wandb", "api_key", "", ""},
    {"vault:secret/a.b/c-d/e_f@g+h=i#x.y-z?version=12", NULL, FERRY_SECRET_VAULT, "secret",
     "a.b/c-d/e_f@g+h=i", "x.y-z", "12", ""},
    {"azure-kv:my-vault1/db-password", NULL, FERRY_SECRET_AZURE_KV, "my-vault1", "db-password", "",
     "", ""},
    {"azure-kv:My-Vault1/DB-Password/0123456789ABCDEF0123456789abcdef",
     "azure-kv:my-vault1/db-password/0123456789abcdef0123456789abcdef", FERRY_SECRET_AZURE_KV,
     "my-vault1", "db-password", "", "0123456789abcdef0123456789abcdef", ""},
    {"aws-sm:prod/ml/token", NULL, FERRY_SECRET_AWS_SM, "", "prod/ml/token", "", "", ""},
    {"aws-sm:prod/db#password?version-stage=AWSPREVIOUS", NULL, FERRY_SECRET_AWS_SM, "", "prod/db",
     "password", "", "AWSPREVIOUS"},
    {"aws-sm:arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf#user"
     "?version-id=EXAMPLE1-90ab-cdef-fedc-ba987EXAMPLE",
     NULL, FERRY_SECRET_AWS_SM, "",
     "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf", "user",
     "EXAMPLE1-90ab-cdef-fedc-ba987EXAMPLE", ""},
    {"aws-kms:file:wrapped/dataset-key", NULL, FERRY_SECRET_AWS_KMS, "file", "wrapped/dataset-key",
     "", "", ""},
    {"aws-kms:b64:AQIDBAUGBwg=", NULL, FERRY_SECRET_AWS_KMS, "b64", "AQIDBAUGBwg=", "", "", ""},
    {"gcp-sm:projects/my-project-1/secrets/hf_token/versions/latest", NULL, FERRY_SECRET_GCP_SM,
     "my-project-1", "hf_token", "", "latest", ""},
    {"gcp-sm:projects/123456789012/secrets/x-y/versions/7", NULL, FERRY_SECRET_GCP_SM,
     "123456789012", "x-y", "", "7", ""},
    {"file:wandb", NULL, FERRY_SECRET_FILE, "", "wandb", "", "", ""},
    {"file:ml/team-a/hf.token_1", NULL, FERRY_SECRET_FILE, "", "ml/team-a/hf.token_1", "", "", ""},
};

Test(secret_ref, valid_forms)
{
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        const struct valid_case *c = &valid[i];
        ferry_secret_ref r;
        char err[256] = "x";
        int rc = ferry_secret_ref_parse(c->in, &r, err, sizeof(err));

        cr_assert_eq(rc, 0, "%s: %s", c->in, err);
        cr_assert_str_empty(err);
        cr_assert_eq(r.backend, c->backend, "%s", c->in);
        cr_assert_str_eq(r.canonical, c->canonical ? c->canonical : c->in);
        cr_assert_str_eq(r.scope, c->scope, "%s", c->in);
        cr_assert_str_eq(r.name, c->name, "%s", c->in);
        cr_assert_str_eq(r.field, c->field, "%s", c->in);
        cr_assert_str_eq(r.version, c->version, "%s", c->in);
        cr_assert_str_eq(r.stage, c->stage, "%s", c->in);
        /* The canonical form is a fixed point. */
        ferry_secret_ref again;
        cr_assert_eq(ferry_secret_ref_parse(r.canonical, &again, NULL, 0), 0);
        cr_assert_str_eq(again.canonical, r.canonical);
    }
}

static const struct {
    const char *in, *reason;
} malformed[] = {
    {"", "backend"},
    {"wandb", "backend"},
    {"ssm:/x", "backend"},
    {"Vault:kv/x#f", "backend"},
    {"vault:kv/x", "missing \"#<field>\""},
    {"vault:kv#f", "<mount>/<path>"},
    {"vault:/x#f", "vault: mount: empty"},
    {"vault:../x#f", "vault: mount: \"..\""},
    {"vault:.#f", "<mount>/<path>"},
    {"vault:kv/a/../b#f", "vault: path: segment \"..\""},
    {"vault:kv/./b#f", "vault: path: segment \".\""},
    {"vault:kv/a//b#f", "vault: path: empty segment"},
    {"vault:kv/a/#f", "vault: path: empty segment"},
    {"vault:kv/a%2fb#f", "percent-escapes"},
    {"vault:kv/%2e%2e/b#f", "percent-escapes"},
    {"vault:kv/a b#f", "vault: path: character ' '"},
    {"vault:kv/a\tb#f", "byte 0x09"},
    {"vault:kv/a\x7f#f", "byte 0x7f"},
    {"vault:kv/\xc3\xa9#f", "byte 0xc3"},
    {"vault:kv/a!#f", "vault: path: character '!'"},
    {"vault:kv/a#", "vault: field: empty"},
    {"vault:kv/a#f/g", "vault: field: character '/'"},
    {"vault:kv/a#f?version=0", "vault: version"},
    {"vault:kv/a#f?version=01", "vault: version"},
    {"vault:kv/a#f?version=2147483648", "vault: version"},
    {"vault:kv/a#f?version=", "vault: version"},
    {"vault:kv/a#f?ver=1", "?version=<N>"},
    {"vault:kv/a?version=1#f", "vault: path: character '?'"},
    {"azure-kv:vault", "<vault>/<name>"},
    {"azure-kv:ab/name", "azure-kv: vault: 3-24"},
    {"azure-kv:1vault/name", "azure-kv: vault: 3-24"},
    {"azure-kv:my--vault/name", "azure-kv: vault: 3-24"},
    {"azure-kv:vault-/name", "azure-kv: vault: 3-24"},
    {"azure-kv:abcdefghijklmnopqrstuvwxy/name", "azure-kv: vault: longer than 24"},
    {"azure-kv:my_vault/name", "azure-kv: vault: character '_'"},
    {"azure-kv:vault/na_me", "azure-kv: name: character '_'"},
    {"azure-kv:vault/", "azure-kv: name: empty"},
    {"azure-kv:vault/name/123", "azure-kv: version: must be 32"},
    {"azure-kv:vault/name/0123456789abcdef0123456789abcdeg", "azure-kv: version"},
    {"azure-kv:vault/name/v/extra", "azure-kv: version"},
    {"aws-sm:", "aws-sm: name: empty"},
    {"aws-sm:a b", "aws-sm: name: character ' '"},
    {"aws-sm:a~b", "aws-sm: name: character '~'"},
    {"aws-sm:x?version-id=1#k", "goes before"},
    {"aws-sm:x?version=1", "version-id=<id>"},
    {"aws-sm:x?version-stage=", "aws-sm: version-stage: empty"},
    {"aws-sm:x#", "aws-sm: json-key: empty"},
    {"aws-sm:arn:aws:s3:eu-west-1:123456789012:secret:x", "ARN service"},
    {"aws-sm:arn:aws:secretsmanager:eu-west-1:1234:secret:x", "ARN account"},
    {"aws-sm:arn:aws:secretsmanager:eu-west-1:123456789012:key:x", "ARN resource"},
    {"aws-sm:arn:aws:secretsmanager:eu-west-1:123456789012:secret:", "ARN secret name: empty"},
    {"aws-kms:", "aws-kms: the ciphertext"},
    {"aws-kms:s3:x", "aws-kms: the ciphertext"},
    {"aws-kms:file:../x", "aws-kms: ciphertext file entry"},
    {"aws-kms:b64:AQID", "aws-kms:" /* fine length, checked below as valid */},
    {"aws-kms:b64:AQI", "multiple of 4"},
    {"aws-kms:b64:A=QI", "'=' only as final padding"},
    {"aws-kms:b64:AQ-_", "character '-'"},
    {"gcp-sm:my-project/secrets/s/versions/1", "expected projects/"},
    {"gcp-sm:projects/my-project/secret/s/versions/1", "expected projects/"},
    {"gcp-sm:projects/my-project/secrets/s/version/1", "expected projects/"},
    {"gcp-sm:projects/My-Project/secrets/s/versions/1", "gcp-sm: project"},
    {"gcp-sm:projects/short/secrets/s/versions/1", "gcp-sm: project"},
    {"gcp-sm:projects/0123/secrets/s/versions/1", "gcp-sm: project"},
    {"gcp-sm:projects/my-project/secrets/s.x/versions/1", "gcp-sm: secret: character '.'"},
    {"gcp-sm:projects/my-project/secrets/s/versions/0", "gcp-sm: version"},
    {"gcp-sm:projects/my-project/secrets/s/versions/Latest", "gcp-sm: version"},
    {"gcp-sm:projects/my-project/secrets/s/versions/1/x", "gcp-sm: version"},
    {"file:", "file: name: empty"},
    {"file:/etc/passwd", "file: name: empty segment"},
    {"file:a/../../b", "segment \"..\""},
    {"file:.", "segment \".\""},
    {"file:a:b", "file: name: character ':'"},
    {"file:a#b", "file: name: character '#'"},
};

Test(secret_ref, malformed_refused_with_reason)
{
    for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
        ferry_secret_ref r;
        char err[256] = "";
        int rc = ferry_secret_ref_parse(malformed[i].in, &r, err, sizeof(err));

        if (strcmp(malformed[i].in, "aws-kms:b64:AQID") == 0) {
            cr_assert_eq(rc, 0, "%s: %s", malformed[i].in, err);
            continue;
        }
        cr_assert_eq(rc, -FERRY_EMALFORMED, "%s accepted or wrong code %d", malformed[i].in, rc);
        cr_assert(strstr(err, malformed[i].reason), "%s: reason \"%s\" lacks \"%s\"",
                  malformed[i].in, err, malformed[i].reason);
    }
}

Test(secret_ref, limits)
{
    char big[FERRY_SECRET_REF_MAX + 16], err[256];
    ferry_secret_ref r;

    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memcpy(big, "file:", 5);
    cr_assert_eq(ferry_secret_ref_parse(big, &r, err, sizeof(err)), -FERRY_ETOOBIG);
    cr_assert(strstr(err, "longer than 1024"));
    /* A name segment at the file limit is fine, one more byte is not. */
    big[5 + FERRY_SECRET_NAME_MAX] = '\0';
    cr_assert_eq(ferry_secret_ref_parse(big, &r, err, sizeof(err)), 0, "%s", err);
    big[5 + FERRY_SECRET_NAME_MAX] = 'a';
    big[6 + FERRY_SECRET_NAME_MAX] = '\0';
    cr_assert_eq(ferry_secret_ref_parse(big, &r, err, sizeof(err)), -FERRY_EMALFORMED);
    cr_assert(strstr(err, "longer than 255"), "%s", err);
    cr_assert_eq(ferry_secret_ref_parse(NULL, &r, err, sizeof(err)), -EINVAL);
    cr_assert_eq(ferry_secret_ref_parse("file:x", NULL, err, sizeof(err)), -EINVAL);
    /* ret untouched on failure */
    memset(&r, 0x5a, sizeof(r));
    cr_assert_lt(ferry_secret_ref_parse("file:..", &r, NULL, 0), 0);
    cr_assert_eq(((unsigned char *)&r)[0], 0x5a);
}

static bool granted(const char *ref, const char *const *pats, size_t n)
{
    ferry_secret_ref r;
    char err[256];

    cr_assert_eq(ferry_secret_ref_parse(ref, &r, err, sizeof(err)), 0, "%s: %s", ref, err);
    return ferry_secret_ref_granted(pats, n, &r);
}

Test(secret_ref, grants_match_canonical_form)
{
    const char *ml[] = {"vault:kv/ml/*"};
    const char *exact[] = {"vault:kv/ml/wandb#api_key"};
    const char *pinned[] = {"vault:kv/ml/wandb#api_key?version=2"};
    const char *az[] = {"azure-kv:Team-Vault/DB-*"};
    const char *file_pat[] = {"file:ml/*"};
    const char *bad[] = {"file:**", "vault:kv/[x]#f"};
    const char *gcp[] = {"gcp-sm:projects/p-123456/secrets/hf/versions/latest"};

    cr_assert(granted("vault:kv/ml/wandb#api_key", ml, 1));
    cr_assert(granted("vault:kv/ml/a/b#c?version=9", ml, 1));
    cr_assert_not(granted("vault:kv/other/x#y", ml, 1));
    /* A grant of a secret grants its versions; a pinned grant only that version. */
    cr_assert(granted("vault:kv/ml/wandb#api_key", exact, 1));
    cr_assert(granted("vault:kv/ml/wandb#api_key?version=3", exact, 1));
    cr_assert_not(granted("vault:kv/ml/wandb#other", exact, 1));
    cr_assert(granted("vault:kv/ml/wandb#api_key?version=2", pinned, 1));
    cr_assert_not(granted("vault:kv/ml/wandb#api_key?version=3", pinned, 1));
    cr_assert_not(granted("vault:kv/ml/wandb#api_key", pinned, 1));
    /* Azure names are case-insensitive: every spelling of one secret meets the same grant. */
    cr_assert(granted("azure-kv:team-vault/db-password", az, 1));
    cr_assert(granted("azure-kv:TEAM-VAULT/Db-Password", az, 1));
    cr_assert(granted("azure-kv:team-vault/DB-PASSWORD/0123456789abcdef0123456789abcdef", az, 1));
    cr_assert_not(granted("azure-kv:team-vault/api-key", az, 1));
    /* The backend is part of the match: a file: grant does not grant aws-kms:file:. */
    cr_assert(granted("file:ml/hf", file_pat, 1));
    cr_assert_not(granted("aws-kms:file:ml/hf", file_pat, 1));
    cr_assert_not(granted("file:other/hf", file_pat, 1));
    /* A grant of gcp "latest" grants the numbered versions too (the unversioned form). */
    cr_assert(granted("gcp-sm:projects/p-123456/secrets/hf/versions/4", gcp, 1));
    cr_assert_not(granted("gcp-sm:projects/p-123456/secrets/hg/versions/4", gcp, 1));
    /* Broken patterns and empty lists grant nothing. */
    cr_assert_not(granted("file:x", bad, 2));
    cr_assert_not(granted("vault:kv/x#f", bad, 2));
    cr_assert_not(granted("file:x", NULL, 0));
    cr_assert_not(ferry_secret_ref_granted(file_pat, 1, NULL));
}

Test(secret_ref, backend_names)
{
    cr_assert_str_eq(ferry_secret_backend_name(FERRY_SECRET_AWS_KMS), "aws-kms");
    cr_assert_str_eq(ferry_secret_backend_name(FERRY_SECRET_FILE), "file");
    cr_assert_null(ferry_secret_backend_name(0));
}

/* ---- values ------------------------------------------------------------------------------ */

Test(secret_value, new_free_limits)
{
    ferry_secret_value *v = NULL;

    cr_assert_eq(ferry_secret_value_new(FERRY_SECRET_VALUE_MAX + 1, &v), -FERRY_ETOOBIG);
    cr_assert_null(v);
    cr_assert_eq(ferry_secret_value_new(5, &v), 0);
    cr_assert_eq(v->len, 5);
    cr_assert_eq(v->data[5], 0);
    memcpy(v->data, "abcde", 5);
    ferry_secret_value_free(v);
    ferry_secret_value_free(NULL);
    cr_assert_eq(ferry_secret_value_new(0, &v), 0);
    cr_assert_eq(v->len, 0);
    ferry_secret_value_free(v);
}

/* ---- the store --------------------------------------------------------------------------- */

typedef struct fx {
    char dir[64], store[128], key[128], tmp[160], lock[160];
} fx;

static void fx_init(fx *f)
{
    char err[256];

    snprintf(f->dir, sizeof(f->dir), "/tmp/ferry-secrets-XXXXXX");
    cr_assert_not_null(mkdtemp(f->dir));
    snprintf(f->store, sizeof(f->store), "%s/secrets.store", f->dir);
    snprintf(f->key, sizeof(f->key), "%s/secrets.key", f->dir);
    snprintf(f->tmp, sizeof(f->tmp), "%s.tmp", f->store);
    snprintf(f->lock, sizeof(f->lock), "%s.lock", f->store);
    cr_assert_eq(ferry_secret_store_init_key(f->store, f->key, err, sizeof(err)), 0, "%s", err);
}

static void fx_release(fx *f)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    cr_assert_eq(system(cmd), 0);
}

static ferry_secret_store *open_ok(const fx *f)
{
    ferry_secret_store *st = NULL;
    char err[256];

    cr_assert_eq(ferry_secret_store_open(f->store, f->key, &st, err, sizeof(err)), 0, "%s", err);
    return st;
}

static void put_ok(ferry_secret_store *st, const char *name, const char *value, uint64_t *ver)
{
    char err[256];

    cr_assert_eq(ferry_secret_store_put(st, name, value, strlen(value), ver, err, sizeof(err)), 0,
                 "%s", err);
}

/* The value of name, or NULL with *ret_rc the error. */
static char *get_str(ferry_secret_store *st, const char *name, int *ret_rc, char *err,
                     size_t errlen)
{
    ferry_secret_value *v = NULL;
    char *s = NULL;
    int r = ferry_secret_store_get(st, name, &v, err, errlen);

    if (ret_rc)
        *ret_rc = r;
    if (r == 0) {
        s = strndup((const char *)v->data, v->len);
        ferry_secret_value_free(v);
    }
    return s;
}

static void expect_value(ferry_secret_store *st, const char *name, const char *want)
{
    char err[256];
    int rc;
    char *got = get_str(st, name, &rc, err, sizeof(err));

    cr_assert_eq(rc, 0, "get %s: %s", name, err);
    cr_assert_str_eq(got, want);
    free(got);
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    unsigned char *b = malloc(1 << 20);

    cr_assert(fp && b);
    *len = fread(b, 1, 1 << 20, fp);
    fclose(fp);
    return b;
}

static void spit(const char *path, const unsigned char *b, size_t len)
{
    FILE *fp = fopen(path, "wb");

    cr_assert(fp);
    cr_assert_eq(fwrite(b, 1, len, fp), len);
    cr_assert_eq(fclose(fp), 0);
}

Test(secret_store, round_trip_versions_list_rm)
{
    ferry_secret_entry_info *e = NULL;
    ferry_secret_store *st;
    uint64_t v1, v2, v3, v4;
    size_t n = 99;
    char err[256];
    fx f;

    fx_init(&f);
    st = open_ok(&f);
    /* An absent store is empty. */
    cr_assert_eq(ferry_secret_store_list(st, &e, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 0);
    cr_assert_null(e);
    int rc;
    cr_assert_null(get_str(st, "x", &rc, err, sizeof(err)));
    cr_assert_eq(rc, -ENOENT);

    put_ok(st, "zeta", "last", &v1);
    put_ok(st, "alpha", "first\nline two\0", &v2);
    put_ok(st, "ml/hf", "hf_abc", &v3);
    cr_assert(v1 < v2 && v2 < v3, "versions increase: %lu %lu %lu", (unsigned long)v1,
              (unsigned long)v2, (unsigned long)v3);
    put_ok(st, "zeta", "LAST", &v4);
    cr_assert_gt(v4, v3);
    expect_value(st, "zeta", "LAST");
    expect_value(st, "alpha", "first\nline two");
    expect_value(st, "ml/hf", "hf_abc");

    /* Binary values round-trip byte for byte. */
    unsigned char bin[300];
    for (size_t i = 0; i < sizeof(bin); i++)
        bin[i] = (unsigned char)(i * 7);
    cr_assert_eq(ferry_secret_store_put(st, "bin", bin, sizeof(bin), NULL, err, sizeof(err)), 0);
    ferry_secret_value *v = NULL;
    cr_assert_eq(ferry_secret_store_get(st, "bin", &v, err, sizeof(err)), 0);
    cr_assert_eq(v->len, sizeof(bin));
    cr_assert_eq(memcmp(v->data, bin, sizeof(bin)), 0);
    ferry_secret_value_free(v);

    cr_assert_eq(ferry_secret_store_list(st, &e, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 4);
    cr_assert_str_eq(e[0].name, "alpha");
    cr_assert_str_eq(e[1].name, "bin");
    cr_assert_str_eq(e[2].name, "ml/hf");
    cr_assert_str_eq(e[3].name, "zeta");
    cr_assert_eq(e[0].version, v2);
    cr_assert_eq(e[3].version, v4);
    cr_assert_gt(e[3].created, 1700000000);
    free(e);

    cr_assert_eq(ferry_secret_store_rm(st, "alpha", err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ferry_secret_store_rm(st, "alpha", err, sizeof(err)), -ENOENT);
    cr_assert_null(get_str(st, "alpha", &rc, err, sizeof(err)));
    cr_assert_eq(rc, -ENOENT);
    expect_value(st, "zeta", "LAST");
    /* A re-created name gets a version above every earlier one. */
    uint64_t v5;
    put_ok(st, "alpha", "again", &v5);
    cr_assert_gt(v5, v4 + 1);

    /* The store file is private and no temporary file is left behind. */
    struct stat sb;
    cr_assert_eq(stat(f.store, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0600);
    cr_assert_eq(access(f.tmp, F_OK), -1);

    /* The value is nowhere in the file in clear. */
    size_t len;
    unsigned char *raw = slurp(f.store, &len);
    cr_assert_null(memmem(raw, len, "hf_abc", 6));
    cr_assert_null(memmem(raw, len, "LAST", 4));
    free(raw);
    ferry_secret_store_free(st);
    fx_release(&f);
}

Test(secret_store, limits_and_names)
{
    ferry_secret_store *st;
    char err[256];
    unsigned char *big = calloc(1, FERRY_SECRET_VALUE_MAX + 1);
    fx f;

    fx_init(&f);
    st = open_ok(&f);
    memset(big, 'v', FERRY_SECRET_VALUE_MAX + 1);
    cr_assert_eq(
        ferry_secret_store_put(st, "big", big, FERRY_SECRET_VALUE_MAX + 1, NULL, err, sizeof(err)),
        -FERRY_ETOOBIG);
    cr_assert(strstr(err, "larger than 65536"));
    cr_assert_eq(
        ferry_secret_store_put(st, "big", big, FERRY_SECRET_VALUE_MAX, NULL, err, sizeof(err)), 0,
        "%s", err);
    cr_assert_eq(ferry_secret_store_put(st, "empty", "", 0, NULL, err, sizeof(err)),
                 -FERRY_EMALFORMED);
    cr_assert(strstr(err, "empty value"));
    const char *bad_names[] = {"", "../x", "a//b", "/abs", "a b", "a\nb", "x:y"};
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        cr_assert_eq(ferry_secret_store_put(st, bad_names[i], "v", 1, NULL, err, sizeof(err)),
                     -FERRY_EMALFORMED, "name \"%s\"", bad_names[i]);
        cr_assert(strstr(err, "entry name"), "%s", err);
    }
    ferry_secret_value *v = NULL;
    cr_assert_eq(ferry_secret_store_get(st, "big", &v, err, sizeof(err)), 0);
    cr_assert_eq(v->len, FERRY_SECRET_VALUE_MAX);
    ferry_secret_value_free(v);
    free(big);
    ferry_secret_store_free(st);
    fx_release(&f);
}

/* Every mutation of the file - any single flipped byte, any truncation, a few bytes appended -
 * is refused by every operation, and nothing is read from the store. */
Test(secret_store, tamper_and_truncation_refused)
{
    ferry_secret_store *st;
    unsigned char *orig, *b;
    size_t len;
    char err[256];
    int rc;
    fx f;

    fx_init(&f);
    st = open_ok(&f);
    put_ok(st, "a", "CANARY-one", NULL);
    put_ok(st, "b", "CANARY-two", NULL);
    orig = slurp(f.store, &len);
    b = malloc(len + 8);
    for (size_t i = 0; i < len; i++) {
        memcpy(b, orig, len);
        b[i] ^= 0x01;
        spit(f.store, b, len);
        char *got = get_str(st, "a", &rc, err, sizeof(err));
        cr_assert_null(got, "byte %zu flipped: value returned", i);
        cr_assert_lt(rc, 0);
        cr_assert_neq(rc, -ENOENT, "byte %zu: reported as absent", i);
        cr_assert_null(strstr(err, "CANARY"));
        ferry_secret_entry_info *e = NULL;
        size_t n;
        cr_assert_lt(ferry_secret_store_list(st, &e, &n, err, sizeof(err)), 0, "byte %zu", i);
        cr_assert_lt(ferry_secret_store_put(st, "c", "x", 1, NULL, err, sizeof(err)), 0);
    }
    for (size_t cut = 0; cut < len; cut++) {
        spit(f.store, orig, cut);
        cr_assert_null(get_str(st, "a", &rc, err, sizeof(err)), "cut at %zu", cut);
        cr_assert_lt(rc, 0);
        cr_assert_neq(rc, -ENOENT);
    }
    memcpy(b, orig, len);
    memcpy(b + len, "appended", 8);
    spit(f.store, b, len + 8);
    cr_assert_null(get_str(st, "a", &rc, err, sizeof(err)));
    cr_assert_eq(rc, -FERRY_EBADSIG);
    cr_assert(strstr(err, "integrity check failed"), "%s", err);
    /* Restored, it reads again. */
    spit(f.store, orig, len);
    expect_value(st, "b", "CANARY-two");
    free(b);
    free(orig);
    ferry_secret_store_free(st);
    fx_release(&f);
}

/* Recompute the trailer MAC with the key, as an attacker holding the MAC key could: what is
 * left to catch a swap or a rollback is the AEAD binding of each value. */
static void remac(const fx *f, unsigned char *b, size_t len)
{
    unsigned char key[32], mk[32];
    unsigned int n;
    size_t kl;
    unsigned char *k = slurp(f->key, &kl);

    cr_assert_eq(kl, 32);
    memcpy(key, k, 32);
    free(k);
    cr_assert(
        HMAC(EVP_sha256(), key, 32, (const unsigned char *)"ferry-secrets v1 mac", 20, mk, &n));
    cr_assert(HMAC(EVP_sha256(), mk, 32, b, len - 32, b + len - 32, &n));
}

/* Offsets of the value blob (value_len | nonce | ciphertext | tag) of the entries, for a store
 * whose entries have 1-byte names. */
static size_t blob_at(const unsigned char *b, size_t which)
{
    size_t o = 40;

    for (size_t i = 0;; i++) {
        size_t nl = (size_t)(b[o] << 8 | b[o + 1]);
        size_t at = o + 2 + nl + 16;
        size_t vl =
            (size_t)b[at] << 24 | (size_t)b[at + 1] << 16 | (size_t)b[at + 2] << 8 | b[at + 3];
        if (i == which)
            return at;
        o = at + 4 + 12 + vl + 16;
    }
}

Test(secret_store, swap_and_rollback_refused)
{
    ferry_secret_store *st;
    unsigned char *old, *cur;
    size_t olen, clen;
    char err[256];
    int rc;
    fx f;

    fx_init(&f);
    st = open_ok(&f);
    put_ok(st, "a", "AAAAAAAA", NULL);
    put_ok(st, "b", "BBBBBBBB", NULL);
    old = slurp(f.store, &olen); /* generation 2 */
    put_ok(st, "b", "bbbbbbbb", NULL);
    cur = slurp(f.store, &clen); /* generation 3 */
    cr_assert_eq(olen, clen);

    /* Swap the sealed values of a and b (same length), MAC recomputed. */
    unsigned char *sw = malloc(clen);
    memcpy(sw, cur, clen);
    size_t pa = blob_at(cur, 0), pb = blob_at(cur, 1), bl = 4 + 12 + 8 + 16;
    memcpy(sw + pa, cur + pb, bl);
    memcpy(sw + pb, cur + pa, bl);
    remac(&f, sw, clen);
    spit(f.store, sw, clen);
    cr_assert_null(get_str(st, "a", &rc, err, sizeof(err)));
    cr_assert_eq(rc, -FERRY_EBADSIG);
    cr_assert(strstr(err, "fails authentication"), "%s", err);
    cr_assert_null(get_str(st, "b", &rc, err, sizeof(err)));
    cr_assert_eq(rc, -FERRY_EBADSIG);

    /* Roll one entry back: b's sealed value from generation 2 into generation 3's file. */
    memcpy(sw, cur, clen);
    memcpy(sw + blob_at(cur, 1), old + blob_at(old, 1), bl);
    remac(&f, sw, clen);
    spit(f.store, sw, clen);
    expect_value(st, "a", "AAAAAAAA");
    cr_assert_null(get_str(st, "b", &rc, err, sizeof(err)));
    cr_assert_eq(rc, -FERRY_EBADSIG);
    /* A write refuses to build on a store it cannot authenticate. */
    cr_assert_eq(ferry_secret_store_put(st, "c", "x", 1, NULL, err, sizeof(err)), -FERRY_EBADSIG);

    /* A header count that disagrees with the entries (MAC recomputed) is refused as malformed. */
    memcpy(sw, cur, clen);
    sw[27] = 3; /* count 3, but only 2 entries */
    remac(&f, sw, clen);
    spit(f.store, sw, clen);
    cr_assert_null(get_str(st, "a", &rc, err, sizeof(err)));
    cr_assert_eq(rc, -FERRY_EMALFORMED, "%s", err);

    spit(f.store, cur, clen);
    expect_value(st, "b", "bbbbbbbb");
    free(sw);
    free(old);
    free(cur);
    ferry_secret_store_free(st);
    fx_release(&f);
}

Test(secret_store, wrong_key_and_key_file_checks)
{
    ferry_secret_store *st, *other = NULL;
    char err[512], key2[160], store2[160];
    int rc;
    fx f;

    fx_init(&f);
    st = open_ok(&f);
    put_ok(st, "a", "CANARY-wrong-key", NULL);
    ferry_secret_store_free(st);

    /* A second key opens the store file but cannot read it, and says why. */
    snprintf(key2, sizeof(key2), "%s/other.key", f.dir);
    snprintf(store2, sizeof(store2), "%s/none.store", f.dir);
    cr_assert_eq(ferry_secret_store_init_key(store2, key2, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ferry_secret_store_open(f.store, key2, &other, err, sizeof(err)), 0, "%s", err);
    cr_assert_null(get_str(other, "a", &rc, err, sizeof(err)));
    cr_assert_eq(rc, -FERRY_EBADSIG);
    cr_assert(strstr(err, "sealed with a different key"), "%s", err);
    cr_assert_null(strstr(err, "CANARY"));
    cr_assert_eq(ferry_secret_store_put(other, "a", "x", 1, NULL, err, sizeof(err)),
                 -FERRY_EBADSIG);
    ferry_secret_store_free(other);

    /* init refuses to overwrite a key, or to make a key for an existing store. */
    cr_assert_eq(ferry_secret_store_init_key(store2, key2, err, sizeof(err)), -EEXIST);
    cr_assert_eq(ferry_secret_store_init_key(f.store, key2, err, sizeof(err)), -EEXIST);
    cr_assert(strstr(err, "exists"), "%s", err);

    /* Key file mode: 0644, 0640, 0604 refused; 0400 accepted. */
    const mode_t refused[] = {0644, 0640, 0604, 0660, 0610};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        cr_assert_eq(chmod(f.key, refused[i]), 0);
        other = NULL;
        cr_assert_eq(ferry_secret_store_open(f.store, f.key, &other, err, sizeof(err)), -EPERM);
        cr_assert_null(other);
        cr_assert(strstr(err, "0600 or stricter"), "%s", err);
    }
    cr_assert_eq(chmod(f.key, 0400), 0);
    st = open_ok(&f);
    expect_value(st, "a", "CANARY-wrong-key");
    ferry_secret_store_free(st);

    /* Missing, wrong size, a symlink, a directory. */
    char path[200];
    snprintf(path, sizeof(path), "%s/missing.key", f.dir);
    cr_assert_eq(ferry_secret_store_open(f.store, path, &other, err, sizeof(err)), -ENOENT);
    cr_assert(strstr(err, "ferry secret init"), "%s", err);
    snprintf(path, sizeof(path), "%s/short.key", f.dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    cr_assert_eq(write(fd, "0123456789", 10), 10);
    close(fd);
    cr_assert_eq(ferry_secret_store_open(f.store, path, &other, err, sizeof(err)),
                 -FERRY_EMALFORMED);
    cr_assert(strstr(err, "exactly 32 bytes"), "%s", err);
    snprintf(path, sizeof(path), "%s/link.key", f.dir);
    cr_assert_eq(symlink(f.key, path), 0);
    cr_assert_eq(ferry_secret_store_open(f.store, path, &other, err, sizeof(err)), -ELOOP);
    cr_assert_eq(ferry_secret_store_open(f.store, f.dir, &other, err, sizeof(err)), -EPERM);
    cr_assert(strstr(err, "not a regular file"), "%s", err);
    fx_release(&f);
}

Test(secret_store, not_a_store_and_other_format)
{
    ferry_secret_store *st;
    char err[256];
    int rc;
    fx f;

    fx_init(&f);
    st = open_ok(&f);
    spit(f.store, (const unsigned char *)"{\"secrets\":{}}", 14);
    cr_assert_null(get_str(st, "a", &rc, err, sizeof(err)));
    cr_assert_eq(rc, -FERRY_EMALFORMED);
    cr_assert(strstr(err, "not a ferry secret store"), "%s", err);
    /* A write refuses to replace what it cannot read. */
    cr_assert_eq(ferry_secret_store_put(st, "x", "y", 1, NULL, err, sizeof(err)),
                 -FERRY_EMALFORMED);
    size_t len;
    unsigned char *b = slurp(f.store, &len);
    cr_assert_eq(len, 14);
    cr_assert_eq(memcmp(b, "{\"secrets\":{}}", 14), 0);
    free(b);
    /* A header of another format version is refused as such. */
    cr_assert_eq(unlink(f.store), 0);
    put_ok(st, "x", "y", NULL);
    b = slurp(f.store, &len);
    b[11] = 2;
    spit(f.store, b, len);
    free(b);
    cr_assert_null(get_str(st, "x", &rc, err, sizeof(err)));
    cr_assert_eq(rc, -FERRY_EUNSUPPORTED);
    cr_assert(strstr(err, "format 2 is not supported"), "%s", err);
    ferry_secret_store_free(st);
    fx_release(&f);
}

/* ---- the backend table --------------------------------------------------------------------- */

Test(secrets, configure_and_fetch)
{
    ferry_secrets *s = NULL;
    ferry_secret_value *v = NULL;
    ferry_secret_store *st;
    ferry_secrets_env env = {0};
    char err[512];
    json_t *conf;
    fx f;

    fx_init(&f);
    st = open_ok(&f);
    put_ok(st, "ml/wandb", "w-123", NULL);
    ferry_secret_store_free(st);

    conf = json_pack("{s:{s:s,s:s}}", "file", "store", f.store, "key", f.key);
    cr_assert_eq(ferry_secrets_new(conf, NULL, &s, err, sizeof(err)), 0, "%s", err);
    json_decref(conf);
    cr_assert_eq(ferry_secrets_fetch(s, "file:ml/wandb", NULL, &v, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(v->len, 5);
    cr_assert_eq(memcmp(v->data, "w-123", 5), 0);
    cr_assert_str_eq(v->version, "1");
    ferry_secret_value_free(v);
    v = NULL;
    cr_assert_eq(ferry_secrets_fetch(s, "file:nope", NULL, &v, err, sizeof(err)), -ENOENT);
    cr_assert(strstr(err, "file:nope"), "%s", err);
    cr_assert_eq(ferry_secrets_fetch(s, "file:../x", NULL, &v, err, sizeof(err)),
                 -FERRY_EMALFORMED);
    cr_assert_eq(ferry_secrets_fetch(s, "azure-kv:myvault/x", NULL, &v, err, sizeof(err)),
                 -FERRY_EUNSUPPORTED);
    cr_assert(strstr(err, "backend not configured"), "%s", err);
    cr_assert_null(v);
    ferry_secrets_free(s);

    /* The embedded default: the file backend under the state directory. */
    env.state_dir = f.dir;
    s = NULL;
    cr_assert_eq(ferry_secrets_new(NULL, &env, &s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ferry_secrets_fetch(s, "file:ml/wandb", NULL, &v, err, sizeof(err)), 0, "%s", err);
    ferry_secret_value_free(v);
    ferry_secrets_free(s);
    /* No state directory and no file section: file is not configured. */
    s = NULL;
    cr_assert_eq(ferry_secrets_new(NULL, NULL, &s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ferry_secrets_fetch(s, "file:ml/wandb", NULL, &v, err, sizeof(err)),
                 -FERRY_EUNSUPPORTED);
    cr_assert(strstr(err, "not configured"), "%s", err);
    ferry_secrets_free(s);

    static const struct {
        const char *json;
        int rc;
        const char *reason;
    } bad[] = {
        {"[]", -FERRY_ECONFIG, "must be an object"},
        {"{\"ldap\":{}}", -FERRY_ECONFIG, "unknown backend \"ldap\""},
        {"{\"azure-kv\":{\"address\":\"https://v\"}}", -FERRY_ECONFIG,
         "azure-kv: unknown member \"address\""},
        {"{\"file\":[]}", -FERRY_ECONFIG, "file: must be an object"},
        {"{\"file\":{\"store\":\"/x\"}}", -FERRY_ECONFIG, "needs \"store\" and \"key\""},
        {"{\"file\":{\"store\":\"/x\",\"key\":\"/y\",\"mode\":1}}", -FERRY_ECONFIG,
         "unknown member \"mode\""},
        {"{\"file\":{\"store\":\"\",\"key\":\"/y\"}}", -FERRY_ECONFIG, "non-empty path"},
        {"{\"file\":{\"store\":\"/x\",\"key\":\"/nonexistent/k\"}}", -ENOENT, "key file"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_error_t je;
        conf = json_loads(bad[i].json, JSON_REJECT_DUPLICATES, &je);
        cr_assert_not_null(conf, "%s", bad[i].json);
        s = NULL;
        cr_assert_eq(ferry_secrets_new(conf, NULL, &s, err, sizeof(err)), bad[i].rc, "%s: %s",
                     bad[i].json, err);
        cr_assert_null(s);
        cr_assert(strstr(err, bad[i].reason), "%s: %s", bad[i].json, err);
        json_decref(conf);
    }
    fx_release(&f);
}

/* ---- concurrency and crash safety ---------------------------------------------------------- */

Test(secret_store, concurrent_writers_serialise)
{
    enum { KIDS = 4, EACH = 15 };
    ferry_secret_entry_info *e = NULL;
    ferry_secret_store *st;
    size_t n;
    char err[256];
    fx f;

    fx_init(&f);
    for (int k = 0; k < KIDS; k++) {
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            ferry_secret_store *cs = NULL;
            char name[32], val[32], e2[256];
            int ok = ferry_secret_store_open(f.store, f.key, &cs, e2, sizeof(e2)) == 0;
            for (int i = 0; ok && i < EACH; i++) {
                snprintf(name, sizeof(name), "k%d/n%02d", k, i);
                snprintf(val, sizeof(val), "v%d.%d", k, i);
                ok = ferry_secret_store_put(cs, name, val, strlen(val), NULL, e2, sizeof(e2)) == 0;
            }
            ferry_secret_store_free(cs);
            _exit(ok ? 0 : 1);
        }
    }
    for (int k = 0; k < KIDS; k++) {
        int status;
        cr_assert_gt(wait(&status), 0);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    st = open_ok(&f);
    cr_assert_eq(ferry_secret_store_list(st, &e, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, KIDS * EACH, "lost writes: %zu entries", n);
    /* Every write had its own generation. */
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            cr_assert_neq(e[i].version, e[j].version);
    free(e);
    expect_value(st, "k2/n07", "v2.7");
    ferry_secret_store_free(st);
    fx_release(&f);
}

static int kill_at_step;

static void kill_hook(int step)
{
    if (step == kill_at_step)
        raise(SIGKILL);
}

/* The store holds exactly the entries and values given (names sorted). */
static void expect_content(ferry_secret_store *st, const char *const *names,
                           const char *const *values, size_t n, const char *when)
{
    ferry_secret_entry_info *e = NULL;
    size_t got;
    char err[256];

    cr_assert_eq(ferry_secret_store_list(st, &e, &got, err, sizeof(err)), 0, "%s: %s", when, err);
    cr_assert_eq(got, n, "%s: %zu entries, expected %zu", when, got, n);
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_eq(e[i].name, names[i], "%s", when);
        expect_value(st, names[i], values[i]);
    }
    free(e);
}

Test(secret_store, survives_kill_at_every_write_step)
{
    static const char *const old_names[] = {"a", "b"}, *const old_values[] = {"A1", "B1"};
    static const char *const put_names[] = {"a", "b", "c"};
    static const char *const put_values[] = {"A1", "B1", "C2"};
    static const char *const rm_names[] = {"b"}, *const rm_values[] = {"B1"};
    static const char *const step_names[] = {
        "", "temp created", "partial write", "written", "fsynced", "renamed", "directory fsynced"};

    for (int op = 0; op < 2; op++)
        for (int step = FERRY_SECRET_STEP_TEMP_CREATED; step <= FERRY_SECRET_STEP_DIR_FSYNCED;
             step++) {
            ferry_secret_store *st;
            char when[96];
            int status;
            fx f;

            snprintf(when, sizeof(when), "%s killed after %s", op ? "rm" : "put", step_names[step]);
            fx_init(&f);
            st = open_ok(&f);
            put_ok(st, "a", "A1", NULL);
            put_ok(st, "b", "B1", NULL);
            pid_t pid = fork();
            cr_assert_geq(pid, 0);
            if (pid == 0) {
                char e2[256];
                kill_at_step = step;
                ferry_secrets_file_write_hook = kill_hook;
                if (op == 0)
                    (void)ferry_secret_store_put(st, "c", "C2", 2, NULL, e2, sizeof(e2));
                else
                    (void)ferry_secret_store_rm(st, "a", e2, sizeof(e2));
                _exit(3); /* the hook did not fire */
            }
            cr_assert_eq(waitpid(pid, &status, 0), pid);
            cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "%s: child not killed",
                      when);

            /* Old content before the rename, new content from the rename on; never a mix. */
            if (step < FERRY_SECRET_STEP_RENAMED)
                expect_content(st, old_names, old_values, 2, when);
            else if (op == 0)
                expect_content(st, put_names, put_values, 3, when);
            else
                expect_content(st, rm_names, rm_values, 1, when);
            if (step < FERRY_SECRET_STEP_FSYNCED)
                cr_assert_eq(access(f.tmp, F_OK), 0, "%s: the temp file should be there", when);

            /* The next write is not tripped by the leftover and leaves no temp file. */
            put_ok(st, "d", "D3", NULL);
            expect_value(st, "d", "D3");
            expect_value(st, "b", "B1");
            cr_assert_eq(access(f.tmp, F_OK), -1, "%s: temp file left after the next write", when);
            ferry_secret_store_free(st);
            fx_release(&f);
        }
}

/* ---- with the policy engine ------------------------------------------------------------------ */

#include "ferry/policy.h"

/* Rekey: every entry re-sealed under a new key, versions kept; the old key no longer opens the
 * store; an existing new-key path is refused with the store untouched. */
Test(secret_store, rekey)
{
    static const char *const names[] = {"a", "b", "c"}, *const values[] = {"A1", "B2", "C3"};
    ferry_secret_store *st, *other = NULL;
    ferry_secret_entry_info *before = NULL, *after = NULL;
    size_t nb = 0, na = 0;
    char err[256], newkey[192];
    struct stat sb;
    fx f;

    fx_init(&f);
    st = open_ok(&f);
    for (size_t i = 0; i < 3; i++)
        put_ok(st, names[i], values[i], NULL);
    cr_assert_eq(ferry_secret_store_list(st, &before, &nb, err, sizeof(err)), 0, "%s", err);
    snprintf(newkey, sizeof(newkey), "%s/new.key", f.dir);

    /* An existing file as the new key: refused, nothing changed. */
    cr_assert_eq(ferry_secret_store_rekey(st, f.key, err, sizeof(err)), -EEXIST);
    expect_content(st, names, values, 3, "after a refused rekey");

    cr_assert_eq(ferry_secret_store_rekey(st, newkey, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(stat(newkey, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0600);
    expect_content(st, names, values, 3, "the same handle after rekey");
    put_ok(st, "d", "D4", NULL); /* and it writes with the new key */
    ferry_secret_store_free(st);

    cr_assert_eq(ferry_secret_store_open(f.store, f.key, &other, err, sizeof(err)), 0, "%s",
                 err);
    cr_assert_eq(ferry_secret_store_list(other, &after, &na, err, sizeof(err)), -FERRY_EBADSIG);
    cr_assert(strstr(err, "different key"), "%s", err);
    ferry_secret_store_free(other);

    cr_assert_eq(ferry_secret_store_open(f.store, newkey, &other, err, sizeof(err)), 0, "%s",
                 err);
    cr_assert_eq(ferry_secret_store_list(other, &after, &na, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(na, 4);
    for (size_t i = 0; i < 3; i++) {
        cr_assert_str_eq(after[i].name, before[i].name);
        cr_assert_eq(after[i].version, before[i].version, "a rekey keeps entry versions");
        expect_value(other, names[i], values[i]);
    }
    expect_value(other, "d", "D4");
    free(before);
    free(after);
    ferry_secret_store_free(other);

    /* Nothing to re-seal: no store file. */
    cr_assert_eq(unlink(f.store), 0);
    other = open_ok(&f);
    snprintf(newkey, sizeof(newkey), "%s/newer.key", f.dir);
    cr_assert_eq(ferry_secret_store_rekey(other, newkey, err, sizeof(err)), -ENOENT);
    cr_assert_eq(access(newkey, F_OK), -1, "no key left behind");
    ferry_secret_store_free(other);
    fx_release(&f);
}

/* A rekey killed at any step of its write: the store opens with exactly one of the two keys,
 * with every value; before the rename that is the old key. */
Test(secret_store, rekey_survives_kill_at_every_write_step)
{
    static const char *const names[] = {"a", "b"}, *const values[] = {"A1", "B1"};

    for (int step = FERRY_SECRET_STEP_TEMP_CREATED; step <= FERRY_SECRET_STEP_DIR_FSYNCED;
         step++) {
        ferry_secret_store *st, *o1 = NULL, *o2 = NULL;
        ferry_secret_entry_info *e = NULL;
        char when[64], err[256], newkey[192];
        size_t n;
        int status;
        fx f;

        snprintf(when, sizeof(when), "rekey killed at step %d", step);
        fx_init(&f);
        st = open_ok(&f);
        put_ok(st, "a", "A1", NULL);
        put_ok(st, "b", "B1", NULL);
        snprintf(newkey, sizeof(newkey), "%s/new.key", f.dir);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            char e2[256];
            kill_at_step = step;
            ferry_secrets_file_write_hook = kill_hook;
            (void)ferry_secret_store_rekey(st, newkey, e2, sizeof(e2));
            _exit(3);
        }
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "%s: child not killed",
                  when);
        ferry_secret_store_free(st);
        cr_assert_eq(access(newkey, F_OK), 0, "%s: the new key was made first", when);
        cr_assert_eq(ferry_secret_store_open(f.store, f.key, &o1, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(ferry_secret_store_open(f.store, newkey, &o2, err, sizeof(err)), 0, "%s",
                     err);
        bool old_ok = ferry_secret_store_list(o1, &e, &n, err, sizeof(err)) == 0;
        free(e);
        e = NULL;
        bool new_ok = ferry_secret_store_list(o2, &e, &n, err, sizeof(err)) == 0;
        free(e);
        cr_assert(old_ok != new_ok, "%s: exactly one key opens the store", when);
        cr_assert_eq(new_ok, step >= FERRY_SECRET_STEP_RENAMED, "%s", when);
        expect_content(new_ok ? o2 : o1, names, values, 2, when);
        ferry_secret_store_free(o1);
        ferry_secret_store_free(o2);
        fx_release(&f);
    }
}

/* A policy's "secrets" (aws-kms included) go straight from a decision's grant into
 * ferry_secret_ref_granted: only what the grant names passes, in every spelling. */
Test(secrets, policy_grant_decides_fetchability)
{
    static const char doc[] =
        "{\"version\":1,\"policies\":[{\"id\":\"train\",\n"
        " \"match\":{\"issuer\":\"https://idp.example\",\"subject\":\"job-1\"},\n"
        " \"grant\":{\"max_ttl\":60,\"secrets\":[\"aws-kms:file:ml/*\",\"file:ml/hf\",\n"
        "   \"azure-kv:Team-Vault/db-*\",\"vault:kv/ml/*\"]}}]}\n";
    ferry_policy_request req = { .issuer = "https://idp.example", .subject = "job-1" };
    ferry_policy_grant *g = NULL;
    ferry_policy_set *set = NULL;
    char path[96];
    fx f;

    fx_init(&f);
    snprintf(path, sizeof(path), "%s/p.json", f.dir);
    spit(path, (const unsigned char *)doc, sizeof(doc) - 1);
    cr_assert_eq(ferry_policy_load_file(path, &set, NULL), 0, "aws-kms: refused by the loader");
    cr_assert_eq(ferry_policy_decide(set, &req, &g, NULL), 0);
    cr_assert_eq(g->n_secrets, 4);

    static const struct {
        const char *ref;
        bool ok;
    } cases[] = {
        { "aws-kms:file:ml/dataset-key", true },
        { "file:ml/hf", true },
        { "file:ml/other", false },
        { "file:ml/hf/x", false },
        { "aws-kms:b64:AQIDBA==", false },
        { "azure-kv:TEAM-VAULT/DB-Password", true },
        { "azure-kv:team-vault/api-key", false },
        { "vault:kv/ml/wandb#key?version=4", true },
        { "vault:kv/mlx/wandb#key", false },
        { "gcp-sm:projects/p-123456/secrets/ml/versions/1", false },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ferry_secret_ref r;
        cr_assert_eq(ferry_secret_ref_parse(cases[i].ref, &r, NULL, 0), 0, "%s", cases[i].ref);
        cr_assert_eq(ferry_secret_ref_granted(g->secrets, g->n_secrets, &r), cases[i].ok, "%s",
                     cases[i].ref);
    }
    ferry_policy_grant_free(g);
    ferry_policy_set_unref(set);
    fx_release(&f);
}

/* ---- allocation failures ---------------------------------------------------------------------
 * While armed, the Nth allocation of the process fails (the library, jansson or OpenSSL). Every
 * put, get and rm is run with N = 0, 1, ... until one runs without a failure: after each run the
 * store opens and holds exactly the content before (the call failed) or after (it succeeded,
 * the failure having been worked around, e.g. inside OpenSSL) - never anything else. */
#define FERRY_ALLOCFAIL_NTH 1
#include "allocfail.h"

#ifdef HAVE_ALLOC_INJECTION
Test(secret_store, allocation_failures)
{
    static const char *const before_n[] = { "a", "b" }, *const before_v[] = { "A", "B" };
    static const char *const after_n[] = { "a", "b", "c" }, *const after_v[] = { "A", "B", "C" };
    ferry_secret_store *st;
    char err[256];
    long n, fails = 0;
    fx f;

    fx_init(&f);
    st = open_ok(&f);
    put_ok(st, "a", "A", NULL);
    put_ok(st, "b", "B", NULL);
    for (n = 0; n < 10000; n++) {
        inject_arm(n);
        int r = ferry_secret_store_put(st, "c", "C", 1, NULL, err, sizeof(err));
        bool hit = inject_disarm();
        if (!hit) {
            cr_assert_eq(r, 0, "put without failure: %s", err);
            break;
        }
        if (r == 0) { /* a failure the library or OpenSSL works around: done, undo it */
            expect_content(st, after_n, after_v, 3, "after a put that survived a failure");
            cr_assert_eq(ferry_secret_store_rm(st, "c", err, sizeof(err)), 0, "%s", err);
            continue;
        }
        fails++;
        expect_content(st, before_n, before_v, 2, "after a failed put");
    }
    cr_assert_gt(fails, 0);
    expect_content(st, after_n, after_v, 3, "after put");
    for (n = 0; n < 10000; n++) {
        ferry_secret_value *v = NULL;
        inject_arm(n);
        int r = ferry_secret_store_get(st, "b", &v, err, sizeof(err));
        bool hit = inject_disarm();
        if (!hit) {
            cr_assert_eq(r, 0, "%s", err);
            cr_assert_eq(v->len, 1);
            cr_assert_eq(v->data[0], 'B');
            ferry_secret_value_free(v);
            break;
        }
        if (r == 0) {
            cr_assert_eq(v->data[0], 'B');
            ferry_secret_value_free(v);
            continue;
        }
        cr_assert_null(v);
    }
    for (n = 0; n < 10000; n++) {
        inject_arm(n);
        int r = ferry_secret_store_rm(st, "c", err, sizeof(err));
        bool hit = inject_disarm();
        if (!hit) {
            cr_assert_eq(r, 0, "%s", err);
            break;
        }
        if (r == 0) {
            expect_content(st, before_n, before_v, 2, "after an rm that survived a failure");
            put_ok(st, "c", "C", NULL);
            continue;
        }
        expect_content(st, after_n, after_v, 3, "after a failed rm");
    }
    expect_content(st, before_n, before_v, 2, "after rm");
    cr_assert_eq(access(f.tmp, F_OK), -1);
    ferry_secret_store_free(st);
    fx_release(&f);
}
#endif
