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
#include <sys/mman.h>
#include <unistd.h>

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
    {"vault", FERRY_SECRET_VAULT, NULL},   {"azure-kv", FERRY_SECRET_AZURE_KV, NULL},
    {"aws-sm", FERRY_SECRET_AWS_SM, &ferry_secrets_aws_sm_backend},
    {"aws-kms", FERRY_SECRET_AWS_KMS, &ferry_secrets_aws_kms_backend},
    {"gcp-sm", FERRY_SECRET_GCP_SM, NULL}, {"file", FERRY_SECRET_FILE, &ferry_secrets_file_backend},
};

FERRY_EXPORT const char *ferry_secret_backend_name(ferry_secret_backend backend)
{
    for (size_t i = 0; i < ARRAY_SIZE(backends); i++)
        if (backends[i].id == backend)
            return backends[i].name;
    return NULL;
}

/* ---- reference parsing ------------------------------------------------------------------- */

_printf_(3, 4) static int fail(char *errbuf, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (errbuf && errlen) {
        va_start(ap, fmt);
        (void)vsnprintf(errbuf, errlen, fmt, ap);
        va_end(ap);
    }
    return -FERRY_EMALFORMED;
}

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

/* ---- the configured backends ------------------------------------------------------------ */

struct ferry_secrets {
    struct {
        const ferry_secret_backend_ops *ops;
        void *state;
    } b[ARRAY_SIZE(backends)];
    /* Later: the bounded cache (canonical reference -> value, TTL per backend, values wiped on
     * eviction) and the single-flight table (one in-flight fetch per canonical reference,
     * others wait on it) live here, consulted by ferry_secrets_fetch before the backend. */
};

FERRY_EXPORT void ferry_secrets_free(ferry_secrets *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < ARRAY_SIZE(backends); i++)
        if (s->b[i].ops)
            s->b[i].ops->close(s->b[i].state);
    free(s);
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
    json_object_foreach((json_t *)conf, key, val)
    {
        size_t i;
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
        r = backends[i].ops->open(val, env, &s->b[i].state, why, sizeof(why));
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

FERRY_EXPORT int ferry_secrets_fetch(ferry_secrets *s, const char *ref, void *ctx,
                                     ferry_secret_value **ret, char *errbuf, size_t errlen)
{
    ferry_secret_ref *r;
    char why[256];
    size_t i;
    int e;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!s || !ref || !ret)
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
    /* Later: cache lookup by r->canonical, then single-flight around this call. */
    e = s->b[i].ops->fetch(s->b[i].state, ctx, r, ret, why, sizeof(why));
    if (e < 0)
        (void)fail(errbuf, errlen, "%s: %s", r->canonical, why);
out:
    free(r);
    return e;
}
