/* lib/secrets/secrets.c - secret references (parse, canonical form, grants), secret values in
 * locked memory, and the table of backends behind ferry_secrets_fetch().
 *
 * docs/internals/secrets.md describes the syntax and the interface. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "basic/errbuf.h"
#include "basic/macro.h"
#include "basic/mem.h"
#include "ferry/error.h"
#include "ferry/policy.h"
#include "ferry/secrets.h"
#include "lib/secrets/secrets-internal.h"

/* The backends, in the order of the enum. NULL ops: known name, not in this build yet (the
 * HTTP backends: src/lib/secrets/{vault,azure_kv,aws,gcp_sm}.c go here). */
static const struct {
    const char *name;
    ferry_secret_backend id;
    const ferry_secret_backend_ops *ops;
} backends[] = {
    {"vault", FERRY_SECRET_VAULT, &ferry_secrets_vault_backend},
    {"azure-kv", FERRY_SECRET_AZURE_KV, &ferry_secrets_azure_kv_backend},
    {"aws-sm", FERRY_SECRET_AWS_SM, &ferry_secrets_aws_sm_backend},
    {"aws-kms", FERRY_SECRET_AWS_KMS, &ferry_secrets_aws_kms_backend},
    {"gcp-sm", FERRY_SECRET_GCP_SM, &ferry_secrets_gcp_sm_backend},
    {"file", FERRY_SECRET_FILE, &ferry_secrets_file_backend},
};

FERRY_EXPORT const char *ferry_secret_backend_name(ferry_secret_backend backend)
{
    for (size_t i = 0; i < ARRAY_SIZE(backends); i++)
        if (backends[i].id == backend)
            return backends[i].name;
    return NULL;
}

/* ---- reference parsing ------------------------------------------------------------------- */

#define fail(errbuf, errlen, ...) ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED, __VA_ARGS__)

static bool is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Check that s[0..n) is 1..max bytes of alphanumerics and the characters in extra. On failure
 * a reason for part (e.g. "vault: mount") in errbuf. */
static int check_chars(const char *part, const char *s, size_t n, size_t max, const char *extra,
                       char *errbuf, size_t errlen)
{
    if (n == 0)
        return fail(errbuf, errlen, "%s: empty", part);
    if (n > max)
        return fail(errbuf, errlen, "%s: longer than %zu bytes", part, max);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_alnum((char)c) || (c && strchr(extra, c)))
            continue;
        if (c < 0x20 || c >= 0x7f)
            return fail(errbuf, errlen, "%s: byte 0x%02x is not allowed", part, c);
        return fail(errbuf, errlen, "%s: character '%c' is not allowed", part, c);
    }
    return 0;
}

/* A path of '/'-separated segments of alphanumerics and extra, none empty, "." or "..". */
static int check_path(const char *part, const char *s, size_t n, size_t max, const char *extra,
                      char *errbuf, size_t errlen)
{
    int r = check_chars(part, s, n, max, extra, errbuf, errlen);
    const char *seg = s, *end = s + n;

    if (r < 0)
        return r;
    while (seg <= end) {
        const char *slash = memchr(seg, '/', (size_t)(end - seg));
        size_t len = (size_t)((slash ? slash : end) - seg);
        if (len == 0)
            return fail(errbuf, errlen, "%s: empty segment (leading, trailing or double '/')",
                        part);
        if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
            return fail(errbuf, errlen, "%s: segment \"%.*s\" is not allowed", part, (int)len, seg);
        if (!slash)
            break;
        seg = slash + 1;
    }
    return 0;
}

/* A decimal number 1..2^31-1 without leading zeros. */
static bool positive_decimal(const char *s, size_t n)
{
    long long v = 0;

    if (n == 0 || n > 10 || s[0] == '0')
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    return v <= 0x7fffffffLL;
}

static void copy_part(char *dst, const char *s, size_t n)
{
    memcpy(dst, s, n);
    dst[n] = '\0';
}

#define FIELD_CHARS "._-"
#define PATH_CHARS "._-/@+="

/* vault:<mount>/<path>#<field>[?version=N] */
static int parse_vault(const char *s, ferry_secret_ref *r, char *errbuf, size_t errlen)
{
    const char *slash = strchr(s, '/'), *hash = strchr(s, '#'), *q;
    int e;

    if (!hash)
        return fail(errbuf, errlen, "vault: missing \"#<field>\" (vault:<mount>/<path>#<field>)");
    if (!slash || slash > hash)
        return fail(errbuf, errlen, "vault: missing \"<mount>/<path>\" before '#'");
    if ((e = check_chars("vault: mount", s, (size_t)(slash - s), FERRY_SECRET_PART_MAX, "._-",
                         errbuf, errlen)) < 0)
        return e;
    if ((size_t)(slash - s) <= 2 && s[0] == '.' && (slash - s == 1 || s[1] == '.'))
        return fail(errbuf, errlen, "vault: mount: \"%.*s\" is not allowed", (int)(slash - s), s);
    if ((e = check_path("vault: path", slash + 1, (size_t)(hash - slash - 1), 512, PATH_CHARS,
                        errbuf, errlen)) < 0)
        return e;
    q = strchr(hash + 1, '?');
    if ((e = check_chars("vault: field", hash + 1,
                         (size_t)((q ? q : hash + 1 + strlen(hash + 1)) - hash - 1), 128,
                         FIELD_CHARS, errbuf, errlen)) < 0)
        return e;
    if (q) {
        if (strncmp(q, "?version=", 9) != 0)
            return fail(errbuf, errlen, "vault: the only qualifier is \"?version=<N>\"");
        if (!positive_decimal(q + 9, strlen(q + 9)))
            return fail(errbuf, errlen,
                        "vault: version: not a number 1..2147483647 without "
                        "leading zeros");
        copy_part(r->version, q + 9, strlen(q + 9));
    }
    copy_part(r->scope, s, (size_t)(slash - s));
    copy_part(r->name, slash + 1, (size_t)(hash - slash - 1));
    copy_part(r->field, hash + 1, (size_t)((q ? q : hash + 1 + strlen(hash + 1)) - hash - 1));
    return 0;
}

/* azure-kv:<vault>/<name>[/<version>]; vault names 3-24 of [a-z0-9-], starting with a letter,
 * ending with a letter or digit, no "--"; secret names 1-127 of [0-9a-zA-Z-]; versions 32 hex
 * digits. All case-insensitive at Azure: lower-cased here. */
static int parse_azure(const char *s, ferry_secret_ref *r, char *errbuf, size_t errlen)
{
    const char *slash = strchr(s, '/'), *slash2;
    size_t vn, nn;
    int e;

    if (!slash)
        return fail(errbuf, errlen, "azure-kv: expected <vault>/<name>[/<version>]");
    slash2 = strchr(slash + 1, '/');
    vn = (size_t)(slash - s);
    nn = (size_t)((slash2 ? slash2 : slash + 1 + strlen(slash + 1)) - slash - 1);
    if ((e = check_chars("azure-kv: vault", s, vn, 24, "-", errbuf, errlen)) < 0)
        return e;
    if (vn < 3 || !isalpha((unsigned char)s[0]) || s[vn - 1] == '-' || memmem(s, vn, "--", 2))
        return fail(errbuf, errlen,
                    "azure-kv: vault: 3-24 letters, digits and '-', starting "
                    "with a letter, not ending with '-', no \"--\"");
    if ((e = check_chars("azure-kv: name", slash + 1, nn, 127, "-", errbuf, errlen)) < 0)
        return e;
    if (slash2) {
        size_t n = strlen(slash2 + 1);
        if (n != 32)
            return fail(errbuf, errlen, "azure-kv: version: must be 32 hexadecimal digits");
        for (size_t i = 0; i < n; i++)
            if (!isxdigit((unsigned char)slash2[1 + i]))
                return fail(errbuf, errlen, "azure-kv: version: must be 32 hexadecimal digits");
        copy_part(r->version, slash2 + 1, n);
    }
    copy_part(r->scope, s, vn);
    copy_part(r->name, slash + 1, nn);
    for (char *p = r->scope; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    for (char *p = r->name; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    for (char *p = r->version; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return 0;
}

/* arn:<partition>:secretsmanager:<region>:<12 digits>:secret:<name> */
static int check_arn(const char *s, size_t n, char *errbuf, size_t errlen)
{
    const char *p = s + 4, *end = s + n, *c;
    size_t len;

    if ((c = memchr(p, ':', (size_t)(end - p))) == NULL ||
        check_chars("aws-sm: ARN partition", p, (size_t)(c - p), 32, "-", errbuf, errlen) < 0)
        return fail(errbuf, errlen,
                    "aws-sm: ARN partition: expected arn:<partition>:"
                    "secretsmanager:<region>:<account>:secret:<name>");
    p = c + 1;
    if ((size_t)(end - p) < 15 || strncmp(p, "secretsmanager:", 15) != 0)
        return fail(errbuf, errlen, "aws-sm: ARN service: must be secretsmanager");
    p += 15;
    if ((c = memchr(p, ':', (size_t)(end - p))) == NULL ||
        check_chars("aws-sm: ARN region", p, (size_t)(c - p), 32, "-", errbuf, errlen) < 0)
        return fail(errbuf, errlen, "aws-sm: ARN region: letters, digits and '-'");
    p = c + 1;
    if ((c = memchr(p, ':', (size_t)(end - p))) == NULL || c - p != 12)
        return fail(errbuf, errlen, "aws-sm: ARN account: must be 12 digits");
    for (const char *d = p; d < c; d++)
        if (*d < '0' || *d > '9')
            return fail(errbuf, errlen, "aws-sm: ARN account: must be 12 digits");
    p = c + 1;
    if ((size_t)(end - p) < 7 || strncmp(p, "secret:", 7) != 0)
        return fail(errbuf, errlen, "aws-sm: ARN resource: must be secret:<name>");
    p += 7;
    len = (size_t)(end - p);
    return check_chars("aws-sm: ARN secret name", p, len, 512, "/_+=.@-", errbuf, errlen);
}

/* aws-sm:<name-or-arn>[#<json-key>][?version-id=<id>|?version-stage=<stage>] */
static int parse_aws_sm(const char *s, ferry_secret_ref *r, char *errbuf, size_t errlen)
{
    const char *q = strchr(s, '?'), *hash = strchr(s, '#');
    const char *name_end;
    int e;

    if (hash && q && hash > q)
        return fail(errbuf, errlen, "aws-sm: \"#<json-key>\" goes before the '?' qualifier");
    name_end = hash ? hash : q ? q : s + strlen(s);
    if ((size_t)(name_end - s) >= 4 && strncmp(s, "arn:", 4) == 0) {
        if ((e = check_arn(s, (size_t)(name_end - s), errbuf, errlen)) < 0)
            return e;
    } else if ((e = check_chars("aws-sm: name", s, (size_t)(name_end - s), 512, "/_+=.@-", errbuf,
                                errlen)) < 0)
        return e;
    if (hash) {
        const char *kend = q ? q : hash + strlen(hash);
        if ((e = check_chars("aws-sm: json-key", hash + 1, (size_t)(kend - hash - 1), 128,
                             FIELD_CHARS, errbuf, errlen)) < 0)
            return e;
        copy_part(r->field, hash + 1, (size_t)(kend - hash - 1));
    }
    if (q) {
        if (strncmp(q, "?version-id=", 12) == 0) {
            if ((e = check_chars("aws-sm: version-id", q + 12, strlen(q + 12), 64, "-", errbuf,
                                 errlen)) < 0)
                return e;
            copy_part(r->version, q + 12, strlen(q + 12));
        } else if (strncmp(q, "?version-stage=", 15) == 0) {
            if ((e = check_chars("aws-sm: version-stage", q + 15, strlen(q + 15), 128, "_.-",
                                 errbuf, errlen)) < 0)
                return e;
            copy_part(r->stage, q + 15, strlen(q + 15));
        } else
            return fail(errbuf, errlen,
                        "aws-sm: the qualifier is \"?version-id=<id>\" or \"?version-stage=<s>\"");
    }
    copy_part(r->name, s, (size_t)(name_end - s));
    return 0;
}

/* aws-kms:file:<name> | aws-kms:b64:<padded standard base64 of 1..768 bytes> */
static int parse_aws_kms(const char *s, ferry_secret_ref *r, char *errbuf, size_t errlen)
{
    size_t n;
    int e;

    if (strncmp(s, "file:", 5) == 0) {
        char why[160];
        if (ferry_secret_name_check(s + 5, why, sizeof(why)) < 0)
            return fail(errbuf, errlen, "aws-kms: ciphertext file entry: %s", why);
        copy_part(r->scope, "file", 4);
        copy_part(r->name, s + 5, strlen(s + 5));
        return 0;
    }
    if (strncmp(s, "b64:", 4) != 0)
        return fail(errbuf, errlen,
                    "aws-kms: the ciphertext is \"file:<name>\" (a file-backend "
                    "entry) or \"b64:<base64>\"");
    s += 4;
    n = strlen(s);
    if ((e = check_chars("aws-kms: base64 ciphertext", s, n, 1024, "+/=", errbuf, errlen)) < 0)
        return e;
    if (n % 4 != 0)
        return fail(errbuf, errlen, "aws-kms: base64 ciphertext: length not a multiple of 4");
    for (size_t i = 0; i < n; i++)
        if (s[i] == '=' && !(i >= n - 2 && (i == n - 1 || s[n - 1] == '=')))
            return fail(errbuf, errlen, "aws-kms: base64 ciphertext: '=' only as final padding");
    copy_part(r->scope, "b64", 3);
    copy_part(r->name, s, n);
    return 0;
}

/* gcp-sm:projects/<p>/secrets/<s>/versions/<v> */
static int parse_gcp(const char *s, ferry_secret_ref *r, char *errbuf, size_t errlen)
{
    const char *p, *e1, *e2;
    size_t pn, sn;
    int e;

    if (strncmp(s, "projects/", 9) != 0)
        return fail(errbuf, errlen, "gcp-sm: expected projects/<p>/secrets/<s>/versions/<v>");
    p = s + 9;
    e1 = strchr(p, '/');
    if (!e1 || strncmp(e1, "/secrets/", 9) != 0)
        return fail(errbuf, errlen, "gcp-sm: expected projects/<p>/secrets/<s>/versions/<v>");
    pn = (size_t)(e1 - p);
    e2 = strchr(e1 + 9, '/');
    if (!e2 || strncmp(e2, "/versions/", 10) != 0)
        return fail(errbuf, errlen, "gcp-sm: expected projects/<p>/secrets/<s>/versions/<v>");
    sn = (size_t)(e2 - e1 - 9);
    /* A project id (6-30 of a-z 0-9 -, starting with a letter, not ending with '-') or a
     * project number. */
    if ((e = check_chars("gcp-sm: project", p, pn, 30, "-", errbuf, errlen)) < 0)
        return e;
    {
        bool number = true, lower = true;
        for (size_t i = 0; i < pn; i++) {
            number &= p[i] >= '0' && p[i] <= '9';
            lower &= !(p[i] >= 'A' && p[i] <= 'Z');
        }
        if (!(number && p[0] != '0' && pn <= 20) &&
            !(lower && pn >= 6 && p[0] >= 'a' && p[0] <= 'z' && p[pn - 1] != '-'))
            return fail(errbuf, errlen,
                        "gcp-sm: project: a project id (6-30 of a-z 0-9 '-', "
                        "starting with a letter) or a project number");
    }
    if ((e = check_chars("gcp-sm: secret", e1 + 9, sn, 255, "_-", errbuf, errlen)) < 0)
        return e;
    if (strcmp(e2 + 10, "latest") != 0 && !positive_decimal(e2 + 10, strlen(e2 + 10)))
        return fail(errbuf, errlen,
                    "gcp-sm: version: \"latest\" or a number 1..2147483647 "
                    "without leading zeros");
    copy_part(r->scope, p, pn);
    copy_part(r->name, e1 + 9, sn);
    copy_part(r->version, e2 + 10, strlen(e2 + 10));
    return 0;
}

FERRY_EXPORT int ferry_secret_name_check(const char *name, char *errbuf, size_t errlen)
{
    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!name)
        return -EINVAL;
    return check_path("name", name, strlen(name), FERRY_SECRET_NAME_MAX, "._-/", errbuf, errlen);
}

static int canonical(const ferry_secret_ref *r, bool with_version, char *out, size_t outlen)
{
    const char *b = ferry_secret_backend_name(r->backend);
    int n = -1;

    switch (r->backend) {
    case FERRY_SECRET_VAULT:
        n = snprintf(out, outlen, "%s:%s/%s#%s%s%s", b, r->scope, r->name, r->field,
                     with_version && r->version[0] ? "?version=" : "",
                     with_version ? r->version : "");
        break;
    case FERRY_SECRET_AZURE_KV:
        n = snprintf(out, outlen, "%s:%s/%s%s%s", b, r->scope, r->name,
                     with_version && r->version[0] ? "/" : "", with_version ? r->version : "");
        break;
    case FERRY_SECRET_AWS_SM:
        n = snprintf(out, outlen, "%s:%s%s%s%s%s", b, r->name, r->field[0] ? "#" : "", r->field,
                     !with_version   ? ""
                     : r->version[0] ? "?version-id="
                     : r->stage[0]   ? "?version-stage="
                                     : "",
                     !with_version   ? ""
                     : r->version[0] ? r->version
                                     : r->stage);
        break;
    case FERRY_SECRET_AWS_KMS:
        n = snprintf(out, outlen, "%s:%s:%s", b, r->scope, r->name);
        break;
    case FERRY_SECRET_GCP_SM:
        n = snprintf(out, outlen, "%s:projects/%s/secrets/%s/versions/%s", b, r->scope, r->name,
                     with_version ? r->version : "latest");
        break;
    case FERRY_SECRET_FILE:
        n = snprintf(out, outlen, "%s:%s", b, r->name);
        break;
    }
    return n < 0 || (size_t)n >= outlen ? -FERRY_ETOOBIG : 0;
}

FERRY_EXPORT int ferry_secret_ref_parse(const char *ref, ferry_secret_ref *ret, char *errbuf,
                                        size_t errlen)
{
    ferry_secret_ref *r = NULL;
    const char *colon;
    size_t len, i;
    int e;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!ref || !ret)
        return -EINVAL;
    len = strnlen(ref, FERRY_SECRET_REF_MAX + 1);
    if (len > FERRY_SECRET_REF_MAX) {
        (void)fail(errbuf, errlen, "reference longer than %d bytes", FERRY_SECRET_REF_MAX);
        return -FERRY_ETOOBIG;
    }
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)ref[i];
        if (c < 0x20 || c >= 0x7f)
            return fail(errbuf, errlen,
                        "byte 0x%02x at offset %zu: references are printable "
                        "ASCII",
                        c, i);
        if (c == '%')
            return fail(errbuf, errlen, "'%%' at offset %zu: percent-escapes are not accepted", i);
    }
    colon = strchr(ref, ':');
    for (i = 0; colon && i < ARRAY_SIZE(backends); i++)
        if (strlen(backends[i].name) == (size_t)(colon - ref) &&
            strncmp(ref, backends[i].name, (size_t)(colon - ref)) == 0)
            break;
    if (!colon || i == ARRAY_SIZE(backends))
        return fail(errbuf, errlen,
                    "backend: the reference must start with vault:, azure-kv:, "
                    "aws-sm:, aws-kms:, gcp-sm: or file:");
    r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->backend = backends[i].id;
    switch (r->backend) {
    case FERRY_SECRET_VAULT:
        e = parse_vault(colon + 1, r, errbuf, errlen);
        break;
    case FERRY_SECRET_AZURE_KV:
        e = parse_azure(colon + 1, r, errbuf, errlen);
        break;
    case FERRY_SECRET_AWS_SM:
        e = parse_aws_sm(colon + 1, r, errbuf, errlen);
        break;
    case FERRY_SECRET_AWS_KMS:
        e = parse_aws_kms(colon + 1, r, errbuf, errlen);
        break;
    case FERRY_SECRET_GCP_SM:
        e = parse_gcp(colon + 1, r, errbuf, errlen);
        break;
    case FERRY_SECRET_FILE: {
        char why[160];
        e = ferry_secret_name_check(colon + 1, why, sizeof(why));
        if (e < 0)
            (void)fail(errbuf, errlen, "file: %s", why);
        else
            copy_part(r->name, colon + 1, strlen(colon + 1));
        break;
    }
    default:
        e = -EINVAL;
    }
    if (e == 0)
        e = canonical(r, true, r->canonical, sizeof(r->canonical));
    if (e == 0) {
        memcpy(ret, r, sizeof(*r));
        if (errbuf && errlen)
            errbuf[0] = '\0';
    }
    free(r);
    return e;
}

FERRY_EXPORT bool ferry_secret_ref_granted(const char *const *patterns, size_t n,
                                           const ferry_secret_ref *ref)
{
    char bare[FERRY_SECRET_REF_MAX + 1], lower[FERRY_POLICY_STRING_MAX + 1];
    bool has_bare;

    if (!ref || (!patterns && n))
        return false;
    has_bare = canonical(ref, false, bare, sizeof(bare)) == 0 && strcmp(bare, ref->canonical) != 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = patterns[i];
        char err[128];

        if (!p || ferry_policy_glob_check(p, err, sizeof(err)) < 0)
            continue;
        if (ref->backend == FERRY_SECRET_AZURE_KV) {
            size_t k;
            for (k = 0; p[k] && k < sizeof(lower) - 1; k++)
                lower[k] = (char)tolower((unsigned char)p[k]);
            lower[k] = '\0';
            p = lower;
        }
        if (ferry_policy_glob_match(p, ref->canonical) ||
            (has_bare && ferry_policy_glob_match(p, bare)))
            return true;
    }
    return false;
}

/* ---- values ---------------------------------------------------------------------------- */

FERRY_EXPORT int ferry_secret_value_new(size_t len, ferry_secret_value **ret)
{
    ferry_secret_value *v;
    long page = sysconf(_SC_PAGESIZE);
    size_t psz = page > 0 ? (size_t)page : 4096, map;
    void *p;

    if (!ret)
        return -EINVAL;
    if (len > FERRY_SECRET_VALUE_MAX)
        return -FERRY_ETOOBIG;
    v = calloc(1, sizeof(*v));
    if (!v)
        return -ENOMEM;
    /* Pages of its own, so that unlocking this value never unlocks someone else's bytes. */
    map = (len + 1 + psz - 1) / psz * psz;
    p = mmap(NULL, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        free(v);
        return -ENOMEM;
    }
    v->locked = mlock(p, map) == 0;
#ifdef MADV_DONTDUMP
    (void)madvise(p, map, MADV_DONTDUMP);
#endif
    v->data = p;
    v->len = len;
    v->map_len = map;
    *ret = v;
    return 0;
}

FERRY_EXPORT void ferry_secret_value_free(ferry_secret_value *v)
{
    if (!v)
        return;
    if (v->data) {
        ferry_wipe(v->data, v->map_len);
        if (v->locked)
            (void)munlock(v->data, v->map_len);
        (void)munmap(v->data, v->map_len);
    }
    ferry_wipe(v, sizeof(*v));
    free(v);
}

/* ---- the configured backends, the cache and single-flight --------------------------------- */

#define CACHE_TTL_DEFAULT 300      /* seconds, per backend ("cache_ttl") */
#define CACHE_TTL_MAX 86400        /* a day */
#define CACHE_ENTRIES_DEFAULT 1024 /* "cache": {"max_entries"} */
#define CACHE_ENTRIES_MAX 1000000
#define CACHE_BYTES_DEFAULT (4u << 20) /* "cache": {"max_bytes"}: locked pages, counted whole */
#define CACHE_BYTES_MAX ((size_t)1 << 30)

/* A cached value: in the hash chain of its bucket and in the LRU list (head = most recent). */
typedef struct cache_entry {
    char *key; /* canonical reference */
    uint64_t hash;
    ferry_secret_value *v; /* the cache's own copy; wiped when the entry goes */
    int64_t expires_ms;
    struct cache_entry *hnext, *prev, *next;
} cache_entry;

/* A fetch in flight: the first caller of a reference runs the backend; later callers wait on
 * s->cond for done, then copy the result. Freed by the last one out (refs). */
typedef struct flight {
    char *key;
    uint64_t hash;
    unsigned refs;
    bool done;
    int err;
    char why[FERRY_SECRET_REF_MAX + 300];
    ferry_secret_value *v; /* success: shared result, copied by each waiter */
    struct flight *next;
} flight;

struct ferry_secrets {
    struct {
        const ferry_secret_backend_ops *ops;
        void *state;
        uint32_t cache_ttl; /* seconds; 0 = never cached */
    } b[ARRAY_SIZE(backends)];
    pthread_mutex_t lock; /* the cache, the flights and the counters */
    pthread_cond_t cond;  /* a flight finished */
    cache_entry **buckets;
    size_t n_buckets; /* a power of two */
    cache_entry *lru_head, *lru_tail;
    size_t n_entries, bytes, max_entries, max_bytes;
    flight *flights;
    ferry_secrets_stats st;
    int64_t (*clock_ms)(void *userdata);
    void *clock_userdata;
};

static uint64_t key_hash(const char *k)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *k; k++)
        h = (h ^ (unsigned char)*k) * 1099511628211ULL;
    return h;
}

static int64_t now_ms(const ferry_secrets *s)
{
    struct timespec ts;
    if (s->clock_ms)
        return s->clock_ms(s->clock_userdata);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A new copy of v in pages of its own. */
static int value_copy(const ferry_secret_value *v, ferry_secret_value **ret)
{
    ferry_secret_value *c;
    int r = ferry_secret_value_new(v->len, &c);
    if (r < 0)
        return r;
    if (v->len)
        memcpy(c->data, v->data, v->len);
    memcpy(c->version, v->version, sizeof(c->version));
    c->ttl_hint = v->ttl_hint;
    *ret = c;
    return 0;
}

static void lru_unlink(ferry_secrets *s, cache_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        s->lru_head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        s->lru_tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push(ferry_secrets *s, cache_entry *e)
{
    e->prev = NULL;
    e->next = s->lru_head;
    if (s->lru_head)
        s->lru_head->prev = e;
    s->lru_head = e;
    if (!s->lru_tail)
        s->lru_tail = e;
}

/* Unlink e from everything, wipe its value and free it. Under s->lock. */
static void entry_drop(ferry_secrets *s, cache_entry *e)
{
    cache_entry **pp = &s->buckets[e->hash & (s->n_buckets - 1)];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    lru_unlink(s, e);
    s->n_entries--;
    s->bytes -= e->v->map_len;
    ferry_secret_value_free(e->v); /* wipes the bytes */
    free(e->key);
    free(e);
}

static cache_entry *entry_find(ferry_secrets *s, const char *key, uint64_t h)
{
    for (cache_entry *e = s->buckets[h & (s->n_buckets - 1)]; e; e = e->hnext)
        if (e->hash == h && strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

/* Look key up under s->lock: a live entry is copied into *ret (0) and made most recent; an
 * expired one is dropped. -ENOENT when there is none. */
static int cache_lookup(ferry_secrets *s, const char *key, uint64_t h, ferry_secret_value **ret)
{
    cache_entry *e = entry_find(s, key, h);
    if (!e)
        return -ENOENT;
    if (now_ms(s) >= e->expires_ms) {
        s->st.expirations++;
        entry_drop(s, e);
        return -ENOENT;
    }
    if (value_copy(e->v, ret) < 0)
        return -ENOMEM;
    lru_unlink(s, e);
    lru_push(s, e);
    return 0;
}

/* Store a copy of v under key for ttl seconds, evicting the least recently used entries to
 * stay within the bounds. A value larger than max_bytes is not cached. Under s->lock. */
static void cache_store(ferry_secrets *s, const char *key, uint64_t h, const ferry_secret_value *v,
                        uint32_t ttl)
{
    cache_entry *e, *old;

    if (ttl == 0 || v->map_len > s->max_bytes)
        return;
    e = calloc(1, sizeof(*e));
    if (!e)
        return;
    e->key = strdup(key);
    if (!e->key || value_copy(v, &e->v) < 0) {
        free(e->key);
        free(e);
        return;
    }
    old = entry_find(s, key, h);
    if (old)
        entry_drop(s, old);
    while (s->lru_tail &&
           (s->n_entries + 1 > s->max_entries || s->bytes + e->v->map_len > s->max_bytes)) {
        s->st.evictions++;
        entry_drop(s, s->lru_tail);
    }
    e->hash = h;
    e->expires_ms = now_ms(s) + (int64_t)ttl * 1000;
    e->hnext = s->buckets[h & (s->n_buckets - 1)];
    s->buckets[h & (s->n_buckets - 1)] = e;
    lru_push(s, e);
    s->n_entries++;
    s->bytes += e->v->map_len;
}

FERRY_EXPORT void ferry_secrets_free(ferry_secrets *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < ARRAY_SIZE(backends); i++)
        if (s->b[i].ops)
            s->b[i].ops->close(s->b[i].state);
    while (s->lru_head)
        entry_drop(s, s->lru_head);
    free(s->buckets);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* Read an unsigned integer member of obj into *ret when present. */
static int get_limit(const json_t *obj, const char *name, long long min, long long max,
                     long long *ret, const char *where, char *errbuf, size_t errlen)
{
    json_t *v = json_object_get(obj, name);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        (void)fail(errbuf, errlen, "secrets: %s.%s must be an integer from %lld to %lld", where,
                   name, min, max);
        return -FERRY_ECONFIG;
    }
    *ret = json_integer_value(v);
    return 0;
}

static int cache_configure(ferry_secrets *s, const json_t *c, char *errbuf, size_t errlen)
{
    long long entries = CACHE_ENTRIES_DEFAULT, bytes = CACHE_BYTES_DEFAULT;
    const char *key;
    json_t *val;
    int r;

    if (c) {
        if (!json_is_object(c)) {
            (void)fail(errbuf, errlen, "secrets: cache: must be an object");
            return -FERRY_ECONFIG;
        }
        json_object_foreach((json_t *)c, key, val)
        {
            if (strcmp(key, "max_entries") != 0 && strcmp(key, "max_bytes") != 0) {
                (void)fail(errbuf, errlen, "secrets: cache: unknown member \"%.64s\"", key);
                return -FERRY_ECONFIG;
            }
        }
        if ((r = get_limit(c, "max_entries", 1, CACHE_ENTRIES_MAX, &entries, "cache", errbuf,
                           errlen)) < 0 ||
            (r = get_limit(c, "max_bytes", 4096, (long long)CACHE_BYTES_MAX, &bytes, "cache",
                           errbuf, errlen)) < 0)
            return r;
    }
    s->max_entries = (size_t)entries;
    s->max_bytes = (size_t)bytes;
    for (s->n_buckets = 16; s->n_buckets < s->max_entries && s->n_buckets < 65536;)
        s->n_buckets *= 2;
    s->buckets = calloc(s->n_buckets, sizeof(*s->buckets));
    return s->buckets ? 0 : -ENOMEM;
}

FERRY_EXPORT int ferry_secrets_new(const json_t *conf, const ferry_secrets_env *env,
                                   ferry_secrets **ret, char *errbuf, size_t errlen)
{
    ferry_secrets *s;
    const char *key;
    json_t *val;
    char why[256];
    int r = 0;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!ret)
        return -EINVAL;
    if (conf && !json_is_object(conf)) {
        (void)fail(errbuf, errlen, "secrets: must be an object of backend sections");
        return -FERRY_ECONFIG;
    }
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    for (size_t i = 0; i < ARRAY_SIZE(backends); i++)
        s->b[i].cache_ttl = CACHE_TTL_DEFAULT;
    if (env) {
        s->clock_ms = env->clock_ms;
        s->clock_userdata = env->clock_userdata;
    }
    r = cache_configure(s, conf ? json_object_get(conf, "cache") : NULL, errbuf, errlen);
    if (r < 0) {
        ferry_secrets_free(s);
        return r;
    }
    json_object_foreach((json_t *)conf, key, val)
    {
        json_t *section;
        long long ttl = CACHE_TTL_DEFAULT;
        size_t i;

        if (strcmp(key, "cache") == 0)
            continue;
        for (i = 0; i < ARRAY_SIZE(backends); i++)
            if (strcmp(key, backends[i].name) == 0)
                break;
        if (i == ARRAY_SIZE(backends)) {
            (void)fail(errbuf, errlen, "secrets: unknown backend \"%.64s\"", key);
            r = -FERRY_ECONFIG;
            break;
        }
        if (!backends[i].ops) {
            (void)fail(errbuf, errlen,
                       "secrets: backend \"%s\" is not available in this "
                       "version yet",
                       key);
            r = -FERRY_EUNSUPPORTED;
            break;
        }
        if (!json_is_object(val)) {
            (void)fail(errbuf, errlen, "secrets: %s: must be an object", key);
            r = -FERRY_ECONFIG;
            break;
        }
        /* "cache_ttl" is the cache's; the backend sees the rest of its section. */
        r = get_limit(val, "cache_ttl", 0, CACHE_TTL_MAX, &ttl, key, errbuf, errlen);
        if (r < 0)
            break;
        s->b[i].cache_ttl = (uint32_t)ttl;
        section = json_copy(val);
        if (!section) {
            r = -ENOMEM;
            break;
        }
        (void)json_object_del(section, "cache_ttl");
        r = backends[i].ops->open(section, env, &s->b[i].state, why, sizeof(why));
        json_decref(section);
        if (r < 0) {
            (void)fail(errbuf, errlen, "secrets: %s: %s", key, why);
            break;
        }
        s->b[i].ops = backends[i].ops;
    }
    /* The embedded default: the file backend under the state directory. */
    for (size_t i = 0; r == 0 && i < ARRAY_SIZE(backends); i++)
        if (backends[i].id == FERRY_SECRET_FILE && !s->b[i].ops && env && env->state_dir) {
            r = backends[i].ops->open(NULL, env, &s->b[i].state, why, sizeof(why));
            if (r < 0)
                (void)fail(errbuf, errlen, "secrets: file: %s", why);
            else
                s->b[i].ops = backends[i].ops;
        }
    if (r < 0) {
        ferry_secrets_free(s);
        return r;
    }
    for (size_t i = 0; i < ARRAY_SIZE(backends); i++)
        if (s->b[i].ops && s->b[i].ops->attach)
            s->b[i].ops->attach(s->b[i].state, s);
    *ret = s;
    return 0;
}

int ferry_secrets_conf_members(const json_t *conf, const char *const *names, size_t n,
                               const char *where, char *errbuf, size_t errlen)
{
    const char *key;
    json_t *v;

    json_object_foreach((json_t *)conf, key, v)
    {
        size_t i;
        for (i = 0; i < n && strcmp(key, names[i]) != 0; i++)
            ;
        if (i == n)
            return ferry_errbuf_set(errbuf, errlen, -FERRY_ECONFIG, "%sunknown member \"%.64s\"",
                                    where ? where : "", key);
    }
    return 0;
}

int ferry_secrets_conf_int(const json_t *conf, const char *name, long lo, long hi, long def,
                           long *ret, char *errbuf, size_t errlen)
{
    const json_t *v = json_object_get(conf, name);

    if (!v) {
        *ret = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return ferry_errbuf_set(errbuf, errlen, -FERRY_ECONFIG, "%s: an integer %ld..%ld", name, lo,
                                hi);
    *ret = (long)json_integer_value(v);
    return 0;
}

int ferry_secrets_conf_bool(const json_t *conf, const char *name, bool def, bool *ret, char *errbuf,
                            size_t errlen)
{
    const json_t *v = json_object_get(conf, name);

    if (v && !json_is_boolean(v))
        return ferry_errbuf_set(errbuf, errlen, -FERRY_ECONFIG, "%s: must be a boolean", name);
    *ret = v ? json_is_true(v) : def;
    return 0;
}

void *ferry_secrets_backend_state(ferry_secrets *s, ferry_secret_backend id)
{
    for (size_t i = 0; s && i < ARRAY_SIZE(backends); i++)
        if (backends[i].id == id)
            return s->b[i].ops ? s->b[i].state : NULL;
    return NULL;
}

FERRY_EXPORT int ferry_secrets_file_store(ferry_secrets *s, ferry_secret_store **ret, char *errbuf,
                                          size_t errlen)
{
    void *state;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!s || !ret)
        return -EINVAL;
    state = ferry_secrets_backend_state(s, FERRY_SECRET_FILE);
    if (!state)
        return ferry_errbuf_set(errbuf, errlen, -FERRY_EUNSUPPORTED,
                                "secrets: no file backend configured");
    return ferry_secrets_file_store_of(state, ret, errbuf, errlen);
}

int ferry_secrets_set_backend(ferry_secrets *s, const ferry_secret_backend_ops *ops, void *state,
                              uint32_t cache_ttl)
{
    for (size_t i = 0; s && ops && i < ARRAY_SIZE(backends); i++)
        if (backends[i].id == ops->id) {
            if (s->b[i].ops)
                s->b[i].ops->close(s->b[i].state);
            s->b[i].ops = ops;
            s->b[i].state = state;
            s->b[i].cache_ttl = cache_ttl;
            return 0;
        }
    return -EINVAL;
}

FERRY_EXPORT void ferry_secrets_get_stats(ferry_secrets *s, ferry_secrets_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof(*out));
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    *out = s->st;
    out->entries = s->n_entries;
    out->bytes = s->bytes;
    out->max_entries = s->max_entries;
    out->max_bytes = s->max_bytes;
    pthread_mutex_unlock(&s->lock);
}

FERRY_EXPORT int ferry_secrets_fetch_ex(ferry_secrets *s, const char *ref, unsigned flags,
                                        void *ctx, ferry_secret_value **ret, char *errbuf,
                                        size_t errlen)
{
    ferry_secret_ref *r;
    ferry_secret_value *v = NULL;
    flight *f = NULL;
    char why[256];
    uint64_t h;
    size_t i;
    int e;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!s || !ref || !ret || (flags & ~(unsigned)FERRY_SECRETS_NO_WAIT))
        return -EINVAL;
    r = malloc(sizeof(*r));
    if (!r)
        return -ENOMEM;
    e = ferry_secret_ref_parse(ref, r, errbuf, errlen);
    if (e < 0)
        goto out;
    for (i = 0; i < ARRAY_SIZE(backends); i++)
        if (backends[i].id == r->backend)
            break;
    if (!backends[i].ops || !s->b[i].ops) {
        (void)fail(errbuf, errlen, "%s: backend %s", backends[i].name,
                   backends[i].ops ? "not configured" : "not available yet");
        e = -FERRY_EUNSUPPORTED;
        goto out;
    }
    h = key_hash(r->canonical);

    pthread_mutex_lock(&s->lock);
    e = cache_lookup(s, r->canonical, h, ret);
    if (e == 0 || e == -ENOMEM) {
        if (e == 0)
            s->st.hits++;
        pthread_mutex_unlock(&s->lock);
        goto out;
    }
    for (f = s->flights; f; f = f->next)
        if (f->hash == h && strcmp(f->key, r->canonical) == 0)
            break;
    if (flags & FERRY_SECRETS_NO_WAIT) {
        /* No backend call and no waiting for one: the caller retries where it may block. */
        pthread_mutex_unlock(&s->lock);
        (void)snprintf(errbuf, errlen, "%s: not cached", r->canonical);
        e = -FERRY_EWOULDBLOCK;
        f = NULL;
        goto out;
    }
    s->st.misses++;
    if (f) {
        /* Someone is fetching it: wait for that result instead of calling the backend. */
        f->refs++;
        s->st.inflight_waits++;
        while (!f->done)
            pthread_cond_wait(&s->cond, &s->lock);
        e = f->err;
        if (e == 0)
            e = value_copy(f->v, ret);
        else
            (void)snprintf(errbuf, errlen, "%s", f->why);
        goto release;
    }
    f = calloc(1, sizeof(*f));
    if (!f || !(f->key = strdup(r->canonical))) {
        free(f);
        f = NULL;
        pthread_mutex_unlock(&s->lock);
        e = -ENOMEM;
        goto out;
    }
    f->hash = h;
    f->refs = 1;
    f->next = s->flights;
    s->flights = f;
    s->st.backend_calls++;
    pthread_mutex_unlock(&s->lock);

    e = s->b[i].ops->fetch(s->b[i].state, ctx, r, &v, why, sizeof(why));

    pthread_mutex_lock(&s->lock);
    if (e < 0) {
        s->st.backend_errors++;
        (void)snprintf(f->why, sizeof(f->why), "%s: %s", r->canonical, why);
        (void)snprintf(errbuf, errlen, "%s", f->why);
    } else {
        uint32_t ttl = s->b[i].cache_ttl;
        if (v->ttl_hint && v->ttl_hint < ttl)
            ttl = v->ttl_hint;
        cache_store(s, r->canonical, h, v, ttl);
        f->v = v; /* shared with the waiters; the caller gets it back last out, or a copy */
        v = NULL;
    }
    f->err = e;
    f->done = true;
    for (flight **pp = &s->flights; *pp; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    pthread_cond_broadcast(&s->cond);
    if (e == 0)
        e = value_copy(f->v, ret);
release:
    if (--f->refs == 0) {
        ferry_secret_value_free(f->v);
        ferry_wipe(f->why, sizeof(f->why));
        free(f->key);
        free(f);
    }
    pthread_mutex_unlock(&s->lock);
out:
    free(r);
    return e;
}

FERRY_EXPORT int ferry_secrets_fetch(ferry_secrets *s, const char *ref, void *ctx,
                                     ferry_secret_value **ret, char *errbuf, size_t errlen)
{
    return ferry_secrets_fetch_ex(s, ref, 0, ctx, ret, errbuf, errlen);
}
