/* lib/cloud/aws_profile.c - one profile of the AWS shared config and credentials files; see
 * lib/cloud/aws-profile.h and docs/internals/cloud.md ("The profile chain").
 *
 * The two files are INI-like (the AWS CLI's configparser dialect): "[section]" lines,
 * "key = value" lines, whole-line comments starting with '#' or ';', and indented lines that
 * belong to the key above them (nested settings such as "s3 =" followed by "  region = ...").
 * Only the selected section is looked at; everything about it is checked before anything is
 * kept, and the secret values are wiped when the file buffer is released.
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "basic/errbuf.h"
#include "basic/fileio.h"
#include "basic/macro.h"
#include "basic/mem.h"
#include "ferry/error.h"
#include "ferry/sigv4.h"
#include "lib/cloud/aws-profile.h"

/* The keys of one section ferry reads, as spans of the file buffer. */
enum {
    K_ACCESS_KEY_ID,
    K_SECRET_ACCESS_KEY,
    K_SESSION_TOKEN,
    K_REGION,
    K_ROLE_ARN,
    K_WEB_IDENTITY_TOKEN_FILE,
    K_ROLE_SESSION_NAME,
    K_KEEP_MAX,
    /* present-only: what ferry refuses to do */
    K_CREDENTIAL_PROCESS = K_KEEP_MAX,
    K_SOURCE_PROFILE,
    K_CREDENTIAL_SOURCE,
    K_SSO_SESSION,
    K_SSO_START_URL,
    K_MAX
};

static const char *const key_names[K_MAX] = {
    "aws_access_key_id",  "aws_secret_access_key",   "aws_session_token",
    "region",             "role_arn",                "web_identity_token_file",
    "role_session_name",  "credential_process",      "source_profile",
    "credential_source",  "sso_session",             "sso_start_url",
};

typedef struct section {
    bool found;
    const char *val[K_MAX];
    size_t len[K_MAX];
    unsigned line[K_MAX];
} section;

static bool printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e)
            return false;
    return true;
}

static void trim(const char **s, size_t *n)
{
    while (*n && (**s == ' ' || **s == '\t'))
        (*s)++, (*n)--;
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t' || (*s)[*n - 1] == '\r'))
        (*n)--;
}

/* Whether the header text h (between the brackets, trimmed) names profile name in this kind
 * of file: "[name]" in the credentials file; "[profile name]", or "[default]" for the default
 * profile, in the config file. */
static bool header_names(const char *h, size_t n, const char *name, bool config)
{
    size_t nl = strlen(name);

    if (config && !(nl == 7 && memcmp(name, "default", 7) == 0 && n == 7)) {
        if (n < 8 || memcmp(h, "profile", 7) != 0 || (h[7] != ' ' && h[7] != '\t'))
            return false;
        h += 8, n -= 8;
        trim(&h, &n);
    }
    return n == nl && memcmp(h, name, nl) == 0;
}

/* Scan buf (len bytes, NUL-terminated) for the section of name; fill *sec with spans into
 * buf. path is for reasons only. */
static int scan(const char *path, const char *buf, size_t len, const char *name, bool config,
                section *sec, char *errbuf, size_t errlen)
{
    bool in = false;
    unsigned lineno = 0;
    const char *p = buf, *end = buf + len;

    if (memchr(buf, '\0', len))
        return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED, "%s: holds a NUL byte",
                                path);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *s = p;
        size_t n = (size_t)((nl ? nl : end) - p);

        p = nl ? nl + 1 : end;
        lineno++;
        if (n > FERRY_AWS_PROFILE_LINE_MAX)
            return ferry_errbuf_set(errbuf, errlen, -FERRY_ETOOBIG,
                                    "%s:%u: line longer than %d bytes", path, lineno,
                                    FERRY_AWS_PROFILE_LINE_MAX);
        if (n && s[n - 1] == '\r')
            n--;
        if (!printable(s, n))
            return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                    "%s:%u: not printable ASCII", path, lineno);
        /* An indented line continues the key above it (a nested setting): not ours. */
        bool indented = n && (s[0] == ' ' || s[0] == '\t');
        trim(&s, &n);
        if (n == 0 || s[0] == '#' || s[0] == ';' || indented)
            continue;
        if (s[0] == '[') {
            if (s[n - 1] != ']')
                return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                        "%s:%u: a section header must end with ']'", path,
                                        lineno);
            const char *h = s + 1;
            size_t hn = n - 2;
            trim(&h, &hn);
            in = header_names(h, hn, name, config);
            sec->found |= in;
            continue;
        }
        const char *eq = memchr(s, '=', n);
        if (!eq)
            return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                    "%s:%u: expected \"key = value\" or \"[section]\"", path,
                                    lineno);
        if (!in)
            continue;
        const char *k = s, *v = eq + 1;
        size_t kn = (size_t)(eq - s), vn = n - kn - 1;
        trim(&k, &kn);
        trim(&v, &vn);
        for (int i = 0; i < K_MAX; i++) {
            if (strlen(key_names[i]) != kn || strncasecmp(k, key_names[i], kn) != 0)
                continue;
            if (sec->val[i])
                return ferry_errbuf_set(errbuf, errlen, -FERRY_EDUPLICATE,
                                        "%s:%u: %s is already set on line %u", path, lineno,
                                        key_names[i], sec->line[i]);
            sec->val[i] = v;
            sec->len[i] = vn;
            sec->line[i] = lineno;
        }
    }
    return 0;
}

/* The path of one of the two files: env, else ~/.aws/base. NULL when neither is known. */
static char *file_path(const char *env, const char *base)
{
    const char *v = secure_getenv(env), *home;
    char *r = NULL;

    if (v && *v)
        return strdup(v);
    home = secure_getenv("HOME");
    if (!home || !*home)
        return NULL;
    if (asprintf(&r, "%s/.aws/%s", home, base) < 0)
        return NULL;
    return r;
}

/* Read path into *buf (NULL and 0 when the file does not exist). */
static int read_file(const char *path, char **buf, size_t *len, char *errbuf, size_t errlen)
{
    /* /dev/null is how one says "no such file" to the AWS tools. */
    int r = strcmp(path, "/dev/null") == 0
                ? -ENOENT
                : ferry_read_regular_file(path, FERRY_AWS_PROFILE_FILE_MAX, buf, len);

    if (r == -ENOENT) {
        *buf = NULL;
        *len = 0;
        return 0;
    }
    if (r == -EFBIG)
        return ferry_errbuf_set(errbuf, errlen, -FERRY_ETOOBIG, "%s: larger than %d bytes",
                                path, FERRY_AWS_PROFILE_FILE_MAX);
    if (r < 0)
        return ferry_errbuf_set(errbuf, errlen, r, "%s: cannot read it (%s)", path,
                                ferry_strerror(r));
    return 0;
}

static char *span_dup(const char *s, size_t n)
{
    char *r = malloc(n + 1);

    if (r) {
        memcpy(r, s, n);
        r[n] = '\0';
    }
    return r;
}

static bool all_alnum(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= 'a' && s[i] <= 'z')))
            return false;
    return true;
}

static bool region_ok(const char *s, size_t n)
{
    if (n == 0 || n >= sizeof(((ferry_aws_profile *)0)->region))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

/* Take the keys of sec (from path) into *p where p does not have them yet. */
static int take(ferry_aws_profile *p, const section *sec, const char *path, char *errbuf,
                size_t errlen)
{
    const char *id = sec->val[K_ACCESS_KEY_ID], *key = sec->val[K_SECRET_ACCESS_KEY];
    const char *tok = sec->val[K_SESSION_TOKEN];

    if (!p->creds.access_key_id[0] && (id || key)) {
        size_t idn = sec->len[K_ACCESS_KEY_ID], keyn = sec->len[K_SECRET_ACCESS_KEY];
        if (!id || !key || !idn || !keyn)
            return ferry_errbuf_set(errbuf, errlen, -FERRY_ECONFIG,
                                    "%s: profile %s: aws_access_key_id and "
                                    "aws_secret_access_key go together",
                                    path, p->name);
        if (idn < 16 || idn > 128 || !all_alnum(id, idn))
            return ferry_errbuf_set(errbuf, errlen, -FERRY_ECONFIG,
                                    "%s:%u: aws_access_key_id: not 16..128 letters and digits",
                                    path, sec->line[K_ACCESS_KEY_ID]);
        if (keyn > FERRY_SIGV4_MAX_SECRET)
            return ferry_errbuf_set(errbuf, errlen, -FERRY_ECONFIG,
                                    "%s:%u: aws_secret_access_key: longer than %d bytes", path,
                                    sec->line[K_SECRET_ACCESS_KEY], FERRY_SIGV4_MAX_SECRET);
        if (tok && sec->len[K_SESSION_TOKEN] > FERRY_AWS_TOKEN_MAX)
            return ferry_errbuf_set(errbuf, errlen, -FERRY_ECONFIG,
                                    "%s:%u: aws_session_token: longer than %d bytes", path,
                                    sec->line[K_SESSION_TOKEN], FERRY_AWS_TOKEN_MAX);
        memcpy(p->creds.access_key_id, id, idn);
        p->creds.access_key_id[idn] = '\0';
        p->creds.secret_access_key = span_dup(key, keyn);
        if (tok && sec->len[K_SESSION_TOKEN])
            p->creds.session_token = span_dup(tok, sec->len[K_SESSION_TOKEN]);
        if (!p->creds.secret_access_key ||
            (tok && sec->len[K_SESSION_TOKEN] && !p->creds.session_token))
            return -ENOMEM;
    }
    if (sec->val[K_REGION] && !p->region[0]) {
        if (!region_ok(sec->val[K_REGION], sec->len[K_REGION]))
            return ferry_errbuf_set(errbuf, errlen, -FERRY_ECONFIG,
                                    "%s:%u: region: not a region name ([a-z0-9-])", path,
                                    sec->line[K_REGION]);
        memcpy(p->region, sec->val[K_REGION], sec->len[K_REGION]);
        p->region[sec->len[K_REGION]] = '\0';
    }
    static const int strs[] = {K_ROLE_ARN, K_WEB_IDENTITY_TOKEN_FILE, K_ROLE_SESSION_NAME};
    char **dst[] = {&p->role_arn, &p->web_identity_token_file, &p->role_session_name};
    for (size_t i = 0; i < ARRAY_SIZE(strs); i++) {
        int k = strs[i];
        if (!sec->val[k] || *dst[i])
            continue;
        if (sec->len[k] == 0 || sec->len[k] > FERRY_AWS_ARN_MAX)
            return ferry_errbuf_set(errbuf, errlen, -FERRY_ECONFIG,
                                    "%s:%u: %s: empty or longer than %d bytes", path,
                                    sec->line[k], key_names[k], FERRY_AWS_ARN_MAX);
        *dst[i] = span_dup(sec->val[k], sec->len[k]);
        if (!*dst[i])
            return -ENOMEM;
    }
    return 0;
}

/* Load one file's section into *p; *found says whether the file has the profile, *refused the
 * first unsupported key it names (or NULL). */
static int load_one(ferry_aws_profile *p, const char *env, const char *base, bool config,
                    bool *found, const char **refused, char *errbuf, size_t errlen)
{
    _cleanup_free_ char *path = file_path(env, base);
    char *buf = NULL;
    size_t len = 0;
    section sec = {0};
    int r;

    if (!path)
        return 0;
    r = read_file(path, &buf, &len, errbuf, errlen);
    if (r < 0 || !buf)
        return r;
    r = scan(path, buf, len, p->name, config, &sec, errbuf, errlen);
    if (r == 0 && sec.found) {
        *found = true;
        r = take(p, &sec, path, errbuf, errlen);
        for (int k = K_KEEP_MAX; r == 0 && k < K_MAX && !*refused; k++)
            if (sec.val[k])
                *refused = key_names[k];
    }
    ferry_wipe(buf, len);
    free(buf);
    return r;
}

void ferry_aws_profile_clear(ferry_aws_profile *p)
{
    if (!p)
        return;
    ferry_aws_credentials_clear(&p->creds);
    free(p->role_arn);
    free(p->web_identity_token_file);
    free(p->role_session_name);
    *p = (ferry_aws_profile){0};
}

int ferry_aws_profile_load(const char *name, ferry_aws_profile *ret, char *errbuf,
                           size_t errlen)
{
    ferry_aws_profile p = {0};
    const char *refused = NULL;
    bool found = false;
    int r;

    if (!ret)
        return -EINVAL;
    if (!name || !*name)
        name = secure_getenv("AWS_PROFILE");
    if (!name || !*name)
        name = "default";
    if (strlen(name) > FERRY_AWS_PROFILE_NAME_MAX || !printable(name, strlen(name)) ||
        strpbrk(name, "[]"))
        return ferry_errbuf_set(errbuf, errlen, -FERRY_ECONFIG,
                                "AWS profile name: not printable, longer than %d bytes, or "
                                "with a bracket",
                                FERRY_AWS_PROFILE_NAME_MAX);
    memcpy(p.name, name, strlen(name) + 1);
    /* The credentials file first: its keys win. */
    r = load_one(&p, "AWS_SHARED_CREDENTIALS_FILE", "credentials", false, &found, &refused,
                 errbuf, errlen);
    if (r == 0)
        r = load_one(&p, "AWS_CONFIG_FILE", "config", true, &found, &refused, errbuf, errlen);
    if (r == 0 && !found)
        r = ferry_errbuf_set(errbuf, errlen, -ENOENT,
                             "AWS profile %s: in neither the shared credentials nor the "
                             "config file",
                             p.name);
    bool web = p.role_arn && p.web_identity_token_file;
    if (r == 0 && p.role_arn && !p.web_identity_token_file && !p.creds.access_key_id[0])
        r = ferry_errbuf_set(errbuf, errlen, -FERRY_EUNSUPPORTED,
                             "AWS profile %s: role_arn %s; ferry assumes a profile's role only "
                             "with web_identity_token_file",
                             p.name, refused ? "with a source ferry does not use" : "alone");
    else if (r == 0 && !web && !p.creds.access_key_id[0])
        r = refused ? ferry_errbuf_set(errbuf, errlen, -FERRY_EUNSUPPORTED,
                                       "AWS profile %s: %s is not supported (ferry runs no "
                                       "program named by a file and does no SSO or role "
                                       "chaining); use static keys or role_arn with "
                                       "web_identity_token_file",
                                       p.name, refused)
                    : ferry_errbuf_set(errbuf, errlen, -ENOENT,
                                       "AWS profile %s: holds no credentials", p.name);
    if (r < 0) {
        ferry_aws_profile_clear(&p);
        return r;
    }
    *ret = p;
    return 0;
}
