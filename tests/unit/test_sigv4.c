/* tests/unit/test_sigv4.c - unit tests of the sigv4 module (include/ferry/sigv4.h).
 *
 * Proves the signer byte for byte against the three public vector sets in ../shared/vectors:
 * botocore's aws-sig-v4-test-suite (34 cases: canonical request, string to sign,
 * Authorization), aws-c-auth's aws-signing-test-suite/v4 (38 cases, header and presigned
 * forms: canonical request, string to sign, signature, Authorization, final query) and
 * libmongocrypt's kms-message KMS requests (encrypt, decrypt: canonical request and
 * Authorization). Each suite test counts the cases it ran and asserts that count equals the
 * number of case directories on disk, so a parser bug cannot skip a case silently.
 *
 * Deliberately unsupported: kms-message/multibyte, whose region, service and header name are
 * the non-ASCII "€"; the signer refuses those (a region or service outside [a-z0-9-], a header
 * name that is not an RFC 9110 token) and the test asserts exactly that refusal.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "basic/macro.h"
#include "ferry/error.h"
#include "ferry/sigv4.h"
#include "testutil.h"

#ifndef cr_fatal
#define cr_fatal(...) cr_assert_fail(__VA_ARGS__)
#endif

#define AKID "AKIDEXAMPLE"
#define SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define T_20150830 1440938160 /* 2015-08-30T12:36:00Z */

/* ---- an HTTP request file (.req, .sreq, request.txt) ----------------------------------- */

typedef struct http_req {
    char *method, *path, *query; /* query NULL when the target has no '?' */
    ferry_sigv4_header hdr[64];
    char *names[64], *values[64];
    size_t n;
    char *body;
    size_t body_len;
} http_req;

static void http_req_free(http_req *h)
{
    free(h->method);
    free(h->path);
    free(h->query);
    for (size_t i = 0; i < h->n; i++) {
        free(h->names[i]);
        free(h->values[i]);
    }
    free(h->body);
    memset(h, 0, sizeof(*h));
}

static char *dup_n(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    cr_assert_not_null(s);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* Parse "METHOD target HTTP/1.1\nName:value\n[ continuation\n]...\n\nbody". The target may
 * hold spaces (get-space), so it runs to the last space of the line. A line starting with a
 * space or a tab continues the previous value (kept with its LF: the signer folds it). Returns
 * false on a shape it cannot read. */
static bool parse_http(const char *text, size_t len, http_req *h)
{
    const char *p = text, *end = text + len, *nl, *sp1, *sp2;

    memset(h, 0, sizeof(*h));
    nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl)
        nl = end;
    sp1 = memchr(p, ' ', (size_t)(nl - p));
    for (sp2 = nl - 1; sp2 > p && *sp2 != ' '; sp2--)
        ;
    if (!sp1 || sp2 <= sp1)
        return false;
    h->method = dup_n(p, (size_t)(sp1 - p));
    {
        const char *t = sp1 + 1, *qm = memchr(t, '?', (size_t)(sp2 - t));
        h->path = dup_n(t, (size_t)((qm ? qm : sp2) - t));
        if (qm)
            h->query = dup_n(qm + 1, (size_t)(sp2 - qm - 1));
    }
    p = nl < end ? nl + 1 : end;
    while (p < end) {
        const char *colon;

        nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            nl = end;
        if (nl == p) { /* blank line: the body follows */
            p = nl + 1;
            break;
        }
        if (*p == ' ' || *p == '\t') {
            size_t ol, al = (size_t)(nl - p);
            char *v;

            if (h->n == 0)
                return false;
            ol = strlen(h->values[h->n - 1]);
            v = realloc(h->values[h->n - 1], ol + 1 + al + 1);
            cr_assert_not_null(v);
            v[ol] = '\n';
            memcpy(v + ol + 1, p, al);
            v[ol + 1 + al] = '\0';
            h->values[h->n - 1] = v;
        } else {
            colon = memchr(p, ':', (size_t)(nl - p));
            if (!colon || h->n == 64)
                return false;
            h->names[h->n] = dup_n(p, (size_t)(colon - p));
            h->values[h->n] = dup_n(colon + 1, (size_t)(nl - colon - 1));
            h->n++;
        }
        p = nl < end ? nl + 1 : end;
    }
    if (p > end)
        p = end;
    h->body_len = (size_t)(end - p);
    h->body = dup_n(p, h->body_len);
    for (size_t i = 0; i < h->n; i++) {
        h->hdr[i].name = h->names[i];
        h->hdr[i].value = h->values[i];
    }
    return true;
}

static const char *find_header(const http_req *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++)
        if (strcasecmp(h->names[i], name) == 0)
            return h->values[i];
    return NULL;
}

/* Value with leading spaces removed (".sreq" writes "Authorization: AWS4-..."). */
static const char *skip_sp(const char *s)
{
    while (s && *s == ' ')
        s++;
    return s;
}

/* Remove the header called name (all of them) from h. */
static void drop_header(http_req *h, const char *name)
{
    size_t k = 0;

    for (size_t i = 0; i < h->n; i++) {
        if (strcasecmp(h->names[i], name) == 0) {
            free(h->names[i]);
            free(h->values[i]);
            continue;
        }
        h->names[k] = h->names[i];
        h->values[k] = h->values[i];
        h->hdr[k].name = h->names[k];
        h->hdr[k].value = h->values[k];
        k++;
    }
    h->n = k;
}

static ferry_sigv4_request to_request(const http_req *h)
{
    ferry_sigv4_request r = {
        .method = h->method,
        .path = h->path,
        .query = h->query,
        .headers = h->hdr,
        .n_headers = h->n,
        .body = h->body,
        .body_len = h->body_len,
    };
    return r;
}

/* ---- case directories ------------------------------------------------------------------- */

static bool is_dir(const char *rel)
{
    char *p = tu_vector_path(rel);
    struct stat st;
    bool d = p && stat(p, &st) == 0 && S_ISDIR(st.st_mode);

    free(p);
    return d;
}

/* Append to *out (a growing list) every leaf directory (one holding no directory) under rel,
 * as a path relative to the vectors folder. */
static void collect_leaf_dirs(const char *rel, char ***out, size_t *n)
{
    size_t ne = 0, nsub = 0;
    char **names = tu_list_vectors(rel, "", &ne);

    cr_assert_not_null(names, "cannot list %s", rel);
    for (size_t i = 0; i < ne; i++) {
        char sub[1024];

        if (strcmp(names[i], ".") == 0 || strcmp(names[i], "..") == 0)
            continue;
        snprintf(sub, sizeof(sub), "%s/%s", rel, names[i]);
        if (!is_dir(sub))
            continue;
        nsub++;
        collect_leaf_dirs(sub, out, n);
    }
    if (nsub == 0) {
        *out = realloc(*out, (*n + 1) * sizeof(**out));
        cr_assert_not_null(*out);
        (*out)[(*n)++] = strdup(rel);
    }
    tu_free_list(names, ne);
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* Read dir/<base><suffix> (e.g. ".creq") or dir/<file> when base is NULL. */
static char *read_case_file(const char *dir, const char *base, const char *suffix, size_t *len)
{
    char name[512];

    snprintf(name, sizeof(name), "%s%s", base ? base : "", suffix);
    return tu_read_vector(dir, name, 1 << 20, len);
}

/* ---- botocore aws-sig-v4-test-suite ------------------------------------------------------ */

#define BOTO "aws-sig-v4-test-suite"

/* The session token of the post-sts-token readme: the last non-empty line after "value". */
static char *readme_token(void)
{
    size_t len;
    char *t = tu_read_vector(BOTO "/post-sts-token", "readme.txt", 1 << 16, &len), *s, *e;

    cr_assert_not_null(t);
    s = strstr(t, "example value for X-Amz-Security-Token:");
    cr_assert_not_null(s);
    s = strchr(s, '\n');
    while (*s == '\n' || *s == '\r')
        s++;
    e = s + strcspn(s, "\r\n");
    s = dup_n(s, (size_t)(e - s));
    free(t);
    return s;
}

/* One botocore case; true when every stage matched. */
static bool run_boto_case(const char *dir, const char *sts_readme_token)
{
    const char *base = base_name(dir);
    size_t l_req, l_creq, l_sts, l_authz, l_sreq;
    char *req_t = read_case_file(dir, base, ".req", &l_req);
    char *creq = read_case_file(dir, base, ".creq", &l_creq);
    char *sts = read_case_file(dir, base, ".sts", &l_sts);
    char *authz = read_case_file(dir, base, ".authz", &l_authz);
    char *sreq_t = read_case_file(dir, base, ".sreq", &l_sreq);
    http_req h, sh;
    ferry_sigv4_result res;
    char err[256];
    int64_t t;
    bool ok = true;

    cr_assert(req_t && creq && sts && authz && sreq_t, "%s: a case file is missing", dir);
    cr_assert(parse_http(req_t, l_req, &h), "%s: cannot parse .req", dir);
    cr_assert(parse_http(sreq_t, l_sreq, &sh), "%s: cannot parse .sreq", dir);
    cr_assert_not_null(find_header(&h, "X-Amz-Date"), "%s", dir);
    cr_assert_eq(ferry_sigv4_parse_date(find_header(&h, "X-Amz-Date"), &t), 0, "%s", dir);
    cr_assert_eq(t, T_20150830, "%s", dir);

    /* A session token the .sreq carries and the .req does not was added by the signer; it was
     * signed when the canonical request has it (readme.txt of post-sts-token). */
    const char *tok =
        find_header(&h, "X-Amz-Security-Token") ? NULL : find_header(&sh, "X-Amz-Security-Token");
    bool tok_signed = strstr(creq, "\nx-amz-security-token:") != NULL;
    ferry_sigv4_credentials cred = {AKID, SECRET, tok};
    ferry_sigv4_params par = {.region = "us-east-1",
                              .service = "service",
                              .time = t,
                              .flags = tok && !tok_signed ? FERRY_SIGV4_TOKEN_UNSIGNED : 0};
    ferry_sigv4_request rq = to_request(&h);

    if (strstr(dir, "post-sts-token/"))
        cr_expect_str_eq(find_header(&h, "X-Amz-Security-Token") ?: tok, sts_readme_token,
                         "%s: the token is not the readme's", dir);
    int r = ferry_sigv4_sign(&cred, &rq, &par, &res, err, sizeof(err));
    cr_assert_eq(r, 0, "%s: sign failed: %d %s", dir, r, err);
    if (strcmp(res.canonical_request, creq) != 0) {
        cr_expect_str_eq(res.canonical_request, creq, "%s: canonical request", dir);
        ok = false;
    }
    if (strcmp(res.string_to_sign, sts) != 0) {
        cr_expect_str_eq(res.string_to_sign, sts, "%s: string to sign", dir);
        ok = false;
    }
    if (strcmp(res.authorization, authz) != 0) {
        cr_expect_str_eq(res.authorization, authz, "%s: Authorization", dir);
        ok = false;
    }
    /* The headers to add: X-Amz-Security-Token when the signer had the token, and the
     * Authorization header last; never X-Amz-Date, which the request had. */
    cr_assert_geq(res.n_add_headers, 1);
    cr_expect_str_eq(res.add_headers[res.n_add_headers - 1].name, "Authorization");
    cr_expect_str_eq(res.add_headers[res.n_add_headers - 1].value, authz);
    cr_expect_eq(res.n_add_headers, tok ? 2u : 1u, "%s", dir);
    if (tok) {
        cr_expect_str_eq(res.add_headers[0].name, "X-Amz-Security-Token");
        cr_expect_str_eq(res.add_headers[0].value, tok);
    }
    ferry_sigv4_result_clear(&res);
    http_req_free(&h);
    http_req_free(&sh);
    free(req_t);
    free(creq);
    free(sts);
    free(authz);
    free(sreq_t);
    return ok;
}

Test(sigv4_suite, botocore_aws_sig_v4_test_suite)
{
    char **dirs = NULL;
    size_t n = 0, passed = 0;
    char *readme_tok;

    TU_REQUIRE_VECTORS();
    collect_leaf_dirs(BOTO, &dirs, &n);
    readme_tok = readme_token();
    for (size_t i = 0; i < n; i++)
        passed += run_boto_case(dirs[i], readme_tok);
    cr_log_info("sigv4: botocore suite: %zu of %zu cases pass", passed, n);
    cr_assert_eq(n, 34, "the suite has 34 cases, found %zu directories", n);
    cr_assert_eq(passed, n, "%zu of %zu botocore cases pass", passed, n);
    for (size_t i = 0; i < n; i++)
        free(dirs[i]);
    free(dirs);
    free(readme_tok);
}

/* ---- aws-c-auth aws-signing-test-suite/v4 ------------------------------------------------ */

#define CAUTH "aws-c-auth-signing-test-suite/v4"

/* "2015-08-30T12:36:00Z" -> Unix seconds through ferry_sigv4_parse_date. */
static int64_t iso_to_time(const char *iso)
{
    char d[17];
    int64_t t;

    cr_assert_eq(strlen(iso), 20);
    snprintf(d, sizeof(d), "%.4s%.2s%.2sT%.2s%.2s%.2sZ", iso, iso + 5, iso + 8, iso + 11, iso + 14,
             iso + 17);
    cr_assert_eq(ferry_sigv4_parse_date(d, &t), 0, "%s", d);
    return t;
}

static bool expect_file(const char *dir, const char *file, const char *got)
{
    size_t len;
    char *want = tu_read_vector(dir, file, 1 << 20, &len);
    bool ok;

    cr_assert_not_null(want, "%s/%s missing", dir, file);
    ok = got && strcmp(got, want) == 0;
    if (!ok)
        cr_expect_str_eq(got ? got : "(null)", want, "%s/%s", dir, file);
    free(want);
    return ok;
}

/* Query of the request line of a signed-request file. */
static char *signed_query(const char *dir, const char *file)
{
    size_t len;
    char *t = tu_read_vector(dir, file, 1 << 20, &len), *q;
    http_req h;

    cr_assert_not_null(t);
    cr_assert(parse_http(t, len, &h));
    q = h.query ? strdup(h.query) : NULL;
    http_req_free(&h);
    free(t);
    return q;
}

static bool run_cauth_case(const char *dir)
{
    json_t *ctx = tu_load_vector_json(dir, "context.json"), *c;
    size_t len;
    char *req_t = tu_read_vector(dir, "request.txt", 1 << 20, &len);
    http_req h;
    ferry_sigv4_result res;
    char err[256];
    bool ok = true;
    int r;

    cr_assert(ctx && req_t, "%s: context.json or request.txt missing", dir);
    cr_assert(parse_http(req_t, len, &h), "%s: cannot parse request.txt", dir);
    c = json_object_get(ctx, "credentials");
    ferry_sigv4_credentials cred = {
        json_string_value(json_object_get(c, "access_key_id")),
        json_string_value(json_object_get(c, "secret_access_key")),
        json_string_value(json_object_get(c, "token")),
    };
    unsigned flags = 0;
    if (!json_is_true(json_object_get(ctx, "normalize")))
        flags |= FERRY_SIGV4_NO_NORMALIZE;
    if (json_is_true(json_object_get(ctx, "omit_session_token")))
        flags |= FERRY_SIGV4_TOKEN_UNSIGNED;
    cr_assert(json_is_boolean(json_object_get(ctx, "sign_body")), "%s", dir);
    cr_assert(json_is_integer(json_object_get(ctx, "expiration_in_seconds")), "%s", dir);
    ferry_sigv4_params par = {
        .region = json_string_value(json_object_get(ctx, "region")),
        .service = json_string_value(json_object_get(ctx, "service")),
        .time = iso_to_time(json_string_value(json_object_get(ctx, "timestamp"))),
        .flags = flags |
                 (json_is_true(json_object_get(ctx, "sign_body")) ? FERRY_SIGV4_CONTENT_SHA256 : 0),
        .expires = (unsigned)json_integer_value(json_object_get(ctx, "expiration_in_seconds")),
    };
    ferry_sigv4_request rq = to_request(&h);

    /* header form */
    r = ferry_sigv4_sign(&cred, &rq, &par, &res, err, sizeof(err));
    cr_assert_eq(r, 0, "%s: sign failed: %d %s", dir, r, err);
    ok &= expect_file(dir, "header-canonical-request.txt", res.canonical_request);
    ok &= expect_file(dir, "header-string-to-sign.txt", res.string_to_sign);
    ok &= expect_file(dir, "header-signature.txt", res.signature);
    {
        size_t sl;
        char *st = tu_read_vector(dir, "header-signed-request.txt", 1 << 20, &sl);
        http_req sh;

        cr_assert(st && parse_http(st, sl, &sh), "%s", dir);
        if (!find_header(&sh, "Authorization") ||
            strcmp(find_header(&sh, "Authorization"), res.authorization) != 0) {
            cr_expect_str_eq(res.authorization, find_header(&sh, "Authorization") ?: "",
                             "%s: Authorization", dir);
            ok = false;
        }
        /* every header the signer says to add is in the signed request with that value */
        for (size_t i = 0; i < res.n_add_headers; i++) {
            const char *v = find_header(&sh, res.add_headers[i].name);
            if (!v || strcmp(v, res.add_headers[i].value) != 0) {
                cr_expect_fail("%s: added header %s not in the signed request", dir,
                               res.add_headers[i].name);
                ok = false;
            }
        }
        http_req_free(&sh);
        free(st);
    }
    ferry_sigv4_result_clear(&res);

    /* query (presigned) form: X-Amz-Content-Sha256 is a header, never in a presigned URL */
    par.flags &= ~(unsigned)FERRY_SIGV4_CONTENT_SHA256;
    r = ferry_sigv4_presign(&cred, &rq, &par, &res, err, sizeof(err));
    cr_assert_eq(r, 0, "%s: presign failed: %d %s", dir, r, err);
    ok &= expect_file(dir, "query-canonical-request.txt", res.canonical_request);
    ok &= expect_file(dir, "query-string-to-sign.txt", res.string_to_sign);
    ok &= expect_file(dir, "query-signature.txt", res.signature);
    {
        char *want = signed_query(dir, "query-signed-request.txt");
        cr_assert_not_null(want, "%s", dir);
        if (strcmp(want, res.query) != 0) {
            cr_expect_str_eq(res.query, want, "%s: final query", dir);
            ok = false;
        }
        free(want);
        /* the canonical query is the third line of the canonical request */
        const char *l3 = strchr(strchr(res.canonical_request, '\n') + 1, '\n') + 1;
        cr_expect(strncmp(l3, res.canonical_query, strlen(res.canonical_query)) == 0 &&
                      l3[strlen(res.canonical_query)] == '\n',
                  "%s", dir);
    }
    cr_expect_null(res.authorization);
    ferry_sigv4_result_clear(&res);
    http_req_free(&h);
    free(req_t);
    json_decref(ctx);
    return ok;
}

Test(sigv4_suite, aws_c_auth_signing_test_suite_v4)
{
    char **dirs = NULL;
    size_t n = 0, passed = 0;

    TU_REQUIRE_VECTORS();
    collect_leaf_dirs(CAUTH, &dirs, &n);
    for (size_t i = 0; i < n; i++)
        passed += run_cauth_case(dirs[i]);
    cr_log_info("sigv4: aws-c-auth suite: %zu of %zu cases pass (header and query forms)", passed,
                n);
    cr_assert_eq(n, 38, "the suite has 38 cases, found %zu directories", n);
    cr_assert_eq(passed, n, "%zu of %zu aws-c-auth cases pass", passed, n);
    for (size_t i = 0; i < n; i++)
        free(dirs[i]);
    free(dirs);
}

/* ---- kms-message ------------------------------------------------------------------------- */

#define KMS "kms-message"

Test(sigv4_suite, kms_message_requests)
{
    char **dirs = NULL;
    size_t n = 0, cases = 0, passed = 0, refused = 0;

    TU_REQUIRE_VECTORS();
    collect_leaf_dirs(KMS, &dirs, &n);
    for (size_t i = 0; i < n; i++) {
        const char *base = base_name(dirs[i]);
        size_t lc, ls;
        char *creq = read_case_file(dirs[i], base, ".creq", &lc), *sreq;
        http_req h;
        char region[64], service[64], err[256];
        ferry_sigv4_result res;
        int64_t t;

        if (!creq) /* host/, content_length/, connection_close/: request builders, no signing */
            continue;
        cases++;
        sreq = read_case_file(dirs[i], base, ".sreq", &ls);
        cr_assert(sreq && parse_http(sreq, ls, &h), "%s", dirs[i]);
        char *authz = strdup(skip_sp(find_header(&h, "Authorization")));
        drop_header(&h, "Authorization");
        /* region and service from the Credential scope: AKID/date/region/service/... */
        const char *cs = strstr(authz, "Credential=");
        cr_assert_not_null(cs);
        cr_assert_eq(sscanf(cs, "Credential=%*[^/]/%*[^/]/%63[^/]/%63[^/]/", region, service), 2);
        cr_assert_eq(ferry_sigv4_parse_date(find_header(&h, "X-Amz-Date"), &t), 0);
        ferry_sigv4_credentials cred = {AKID, SECRET, NULL};
        ferry_sigv4_params par = {.region = region, .service = service, .time = t};
        ferry_sigv4_request rq = to_request(&h);
        int r = ferry_sigv4_sign(&cred, &rq, &par, &res, err, sizeof(err));

        if (strcmp(base, "multibyte") == 0) {
            /* Deliberately unsupported: region, service and a header name "€". */
            cr_expect_eq(r, -EINVAL, "%s: %d %s", dirs[i], r, err);
            cr_expect(strstr(err, "outside [a-z0-9-]") != NULL, "%s", err);
            par.region = "us-east-1";
            par.service = "kms";
            r = ferry_sigv4_sign(&cred, &rq, &par, &res, err, sizeof(err));
            cr_expect_eq(r, -EINVAL);
            cr_expect(strstr(err, "not a token character") != NULL, "%s", err);
            refused++;
        } else {
            cr_assert_eq(r, 0, "%s: %d %s", dirs[i], r, err);
            cr_expect(strstr(find_header(&h, "X-Amz-Target") ?: "", "TrentService.") != NULL);
            bool ok =
                strcmp(res.canonical_request, creq) == 0 && strcmp(res.authorization, authz) == 0;
            cr_expect_str_eq(res.canonical_request, creq, "%s", dirs[i]);
            cr_expect_str_eq(res.authorization, authz, "%s", dirs[i]);
            passed += ok;
            ferry_sigv4_result_clear(&res);
        }
        http_req_free(&h);
        free(authz);
        free(sreq);
        free(creq);
    }
    cr_log_info("sigv4: kms-message: %zu of %zu signing cases pass, %zu refused on purpose", passed,
                cases, refused);
    cr_assert_eq(cases, 3);
    cr_assert_eq(passed + refused, cases);
    cr_assert_eq(passed, 2);
    for (size_t i = 0; i < n; i++)
        free(dirs[i]);
    free(dirs);
}

/* ---- behaviour and hostile input --------------------------------------------------------- */

static const ferry_sigv4_credentials CRED = {AKID, SECRET, NULL};

static ferry_sigv4_header HOST[] = {{"Host", "example.amazonaws.com"}};

static int sign_simple(const char *path, const char *query, const ferry_sigv4_header *hd, size_t nh,
                       unsigned flags, ferry_sigv4_result *res, char *err, size_t errlen)
{
    ferry_sigv4_request rq = {.method = "GET",
                              .path = path,
                              .query = query,
                              .headers = hd ? hd : HOST,
                              .n_headers = hd ? nh : 1};
    ferry_sigv4_params par = {
        .region = "us-east-1", .service = "service", .time = T_20150830, .flags = flags};
    return ferry_sigv4_sign(&CRED, &rq, &par, res, err, errlen);
}

/* Second line of the canonical request (the canonical path). */
static char *creq_line(const char *creq, unsigned line)
{
    const char *p = creq;
    for (unsigned i = 0; i < line; i++)
        p = strchr(p, '\n') + 1;
    return dup_n(p, strcspn(p, "\n"));
}

static void expect_path(const char *path, unsigned flags, const char *want)
{
    ferry_sigv4_result res;
    char err[256];
    int r = sign_simple(path, NULL, NULL, 0, flags, &res, err, sizeof(err));

    cr_assert_eq(r, 0, "%s: %s", path, err);
    char *got = creq_line(res.canonical_request, 1);
    cr_expect_str_eq(got, want, "path %s flags %u", path, flags);
    free(got);
    ferry_sigv4_result_clear(&res);
}

Test(sigv4, path_rules)
{
    /* normalised, encoded once more (non-S3: a %20 on the wire becomes %2520) */
    expect_path("/a/b/../c/./d//", 0, "/a/c/d/");
    expect_path("/a%20b", 0, "/a%2520b");
    expect_path("/../..", 0, "/");
    expect_path("/a/b/..", 0, "/a");
    expect_path("/", 0, "/");
    expect_path("/~user/x+y=z;", 0, "/~user/x%2By%3Dz%3B");
    /* invalid UTF-8: the bytes are encoded one by one, as the suites' get-utf8 does */
    expect_path("/\xff\xfe\xc3", 0, "/%FF%FE%C3");
    /* unnormalised: segments kept */
    expect_path("//a/./b/..", FERRY_SIGV4_NO_NORMALIZE, "//a/./b/..");
    /* S3: as given */
    expect_path("/my-object//example//photo.user", FERRY_SIGV4_S3,
                "/my-object//example//photo.user");
    expect_path("/%E2%82%AC/a%20b", FERRY_SIGV4_S3, "/%E2%82%AC/a%20b");

    ferry_sigv4_result res;
    char err[256];
    cr_expect_eq(sign_simple("/a b", NULL, NULL, 0, FERRY_SIGV4_S3, &res, err, sizeof(err)),
                 -FERRY_EMALFORMED);
    cr_expect_eq(sign_simple("/a%2", NULL, NULL, 0, FERRY_SIGV4_S3, &res, err, sizeof(err)),
                 -FERRY_EMALFORMED);
    cr_expect_eq(sign_simple("a", NULL, NULL, 0, 0, &res, err, sizeof(err)), -EINVAL);
    cr_expect_eq(sign_simple("", NULL, NULL, 0, 0, &res, err, sizeof(err)), -EINVAL);
    cr_expect_eq(sign_simple("/a?b", NULL, NULL, 0, 0, &res, err, sizeof(err)), -EINVAL);
    cr_expect_eq(sign_simple("/a\nb", NULL, NULL, 0, 0, &res, err, sizeof(err)), -EINVAL);
    cr_expect_eq(sign_simple("/a#b", NULL, NULL, 0, 0, &res, err, sizeof(err)), -EINVAL);
    cr_expect_null(res.canonical_request); /* cleared on error */
}

static void expect_query(const char *query, const char *want)
{
    ferry_sigv4_result res;
    char err[256];
    int r = sign_simple("/", query, NULL, 0, 0, &res, err, sizeof(err));

    cr_assert_eq(r, 0, "%s: %s", query, err);
    char *got = creq_line(res.canonical_request, 2);
    cr_expect_str_eq(got, want, "query %s", query);
    free(got);
    ferry_sigv4_result_clear(&res);
}

Test(sigv4, query_rules)
{
    expect_query("b=2&a=3&a=1&c", "a=1&a=3&b=2&c=");
    expect_query("&&x=&&", "x=");
    expect_query("a+b=c%2Fd&%7e=%41", "a%2Bb=c%2Fd&~=A"); /* %7e is unreserved "~" */
    expect_query("k=v=w", "k=v%3Dw");
    expect_query("", "");

    ferry_sigv4_result res;
    char err[256];
    cr_expect_eq(sign_simple("/", "a=%zz", NULL, 0, 0, &res, err, sizeof(err)), -FERRY_EMALFORMED);
    cr_expect_eq(sign_simple("/", "a=%4", NULL, 0, 0, &res, err, sizeof(err)), -FERRY_EMALFORMED);
    cr_expect_eq(sign_simple("/", "a=b c", NULL, 0, 0, &res, err, sizeof(err)), -EINVAL);
    cr_expect_eq(sign_simple("/", "a=b#c", NULL, 0, 0, &res, err, sizeof(err)), -EINVAL);
}

static int sign_hdrs(const ferry_sigv4_header *hd, size_t n, char *err, size_t errlen)
{
    ferry_sigv4_result res;
    int r = sign_simple("/", NULL, hd, n, 0, &res, err, errlen);

    ferry_sigv4_result_clear(&res);
    return r;
}

Test(sigv4, header_rules)
{
    ferry_sigv4_result res;
    char err[256];
    ferry_sigv4_header hd[] = {
        {"Host", " example.amazonaws.com "},
        {"X-B", "  two\tspaced   words  "},
        {"x-a", "1"},
        {"X-A", "2"},
        {"X-Fold", "one\r\n two\n\tthree"},
        {"X-Empty", ""},
    };
    int r = sign_simple("/", NULL, hd, ARRAY_SIZE(hd), 0, &res, err, sizeof(err));

    cr_assert_eq(r, 0, "%s", err);
    cr_expect(strstr(res.canonical_request,
                     "\n\nhost:example.amazonaws.com\nx-a:1,2\nx-amz-date:20150830T123600Z\n"
                     "x-b:two spaced words\nx-empty:\nx-fold:one two three\n\n"
                     "host;x-a;x-amz-date;x-b;x-empty;x-fold\n") != NULL,
              "%s", res.canonical_request);
    cr_expect_str_eq(res.signed_headers, "host;x-a;x-amz-date;x-b;x-empty;x-fold");
    /* X-Amz-Date was not given: the signer adds it, and says so */
    cr_assert_eq(res.n_add_headers, 2);
    cr_expect_str_eq(res.add_headers[0].name, "X-Amz-Date");
    cr_expect_str_eq(res.add_headers[0].value, "20150830T123600Z");
    cr_expect_str_eq(res.amz_date, "20150830T123600Z");
    ferry_sigv4_result_clear(&res);

    /* hostile names: CR, LF, colon, space, control, non-ASCII, empty, NULL */
    static const char *const bad_names[] = {"X-A\r", "X\nB",         "X:B", "X B", "X\x01",
                                            "X\x7f", "\xe2\x82\xac", "",    "(x)"};
    for (size_t i = 0; i < ARRAY_SIZE(bad_names); i++) {
        ferry_sigv4_header h2[] = {{"Host", "h"}, {bad_names[i], "v"}};
        cr_expect_eq(sign_hdrs(h2, 2, err, sizeof(err)), -EINVAL, "name %zu", i);
        cr_expect(strstr(err, "header 1") != NULL, "%s", err);
    }
    ferry_sigv4_header hn[] = {{"Host", "h"}, {NULL, "v"}};
    cr_expect_eq(sign_hdrs(hn, 2, err, sizeof(err)), -EINVAL);
    ferry_sigv4_header hv[] = {{"Host", "h"}, {"X", NULL}};
    cr_expect_eq(sign_hdrs(hv, 2, err, sizeof(err)), -EINVAL);

    /* hostile values: bare CR, LF not starting a fold, CR LF at the end, controls */
    static const char *const bad_values[] = {"a\rb",   "a\nb",  "a\r\n", "a\n",
                                             "a\r\nb", "a\x01", "a\x7f"};
    for (size_t i = 0; i < ARRAY_SIZE(bad_values); i++) {
        ferry_sigv4_header h2[] = {{"Host", "h"}, {"X-V", bad_values[i]}};
        r = sign_hdrs(h2, 2, err, sizeof(err));
        cr_expect(r == -EINVAL || r == -FERRY_EMALFORMED, "value %zu: %d", i, r);
        cr_expect(strstr(err, "X-V") != NULL, "%s", err);
    }

    /* requests the signer refuses to sign */
    ferry_sigv4_header nohost[] = {{"X", "1"}};
    cr_expect_eq(sign_hdrs(nohost, 1, err, sizeof(err)), -EINVAL);
    cr_expect(strstr(err, "Host") != NULL, "%s", err);
    ferry_sigv4_header authz[] = {{"Host", "h"}, {"Authorization", "x"}};
    cr_expect_eq(sign_hdrs(authz, 2, err, sizeof(err)), -EINVAL);
    ferry_sigv4_header date[] = {{"Host", "h"}, {"X-Amz-Date", "20150830T123601Z"}};
    cr_expect_eq(sign_hdrs(date, 2, err, sizeof(err)), -EINVAL);
    cr_expect(strstr(err, "X-Amz-Date") != NULL, "%s", err);
}

Test(sigv4, limits)
{
    ferry_sigv4_result res;
    char err[256];
    size_t big = 70000;
    char *s = malloc(big + 1);

    cr_assert_not_null(s);
    /* path */
    s[0] = '/';
    memset(s + 1, 'a', FERRY_SIGV4_MAX_PATH);
    s[FERRY_SIGV4_MAX_PATH] = '\0';
    cr_expect_eq(sign_simple(s, NULL, NULL, 0, 0, &res, err, sizeof(err)), 0, "%s", err);
    ferry_sigv4_result_clear(&res);
    s[FERRY_SIGV4_MAX_PATH] = 'a';
    s[FERRY_SIGV4_MAX_PATH + 1] = '\0';
    cr_expect_eq(sign_simple(s, NULL, NULL, 0, 0, &res, err, sizeof(err)), -FERRY_ETOOBIG);
    cr_expect(strstr(err, "path") != NULL, "%s", err);
    /* query: bytes and parameter count */
    memset(s, 'a', FERRY_SIGV4_MAX_QUERY + 1);
    s[FERRY_SIGV4_MAX_QUERY + 1] = '\0';
    cr_expect_eq(sign_simple("/", s, NULL, 0, 0, &res, err, sizeof(err)), -FERRY_ETOOBIG);
    for (unsigned i = 0; i <= FERRY_SIGV4_MAX_QUERY_PARAMS; i++)
        memcpy(s + 4 * i, "a=b&", 4);
    s[4 * (FERRY_SIGV4_MAX_QUERY_PARAMS + 1)] = '\0';
    cr_expect_eq(sign_simple("/", s, NULL, 0, 0, &res, err, sizeof(err)), -FERRY_ETOOBIG);
    cr_expect(strstr(err, "query parameters") != NULL, "%s", err);
    /* header value, count, total */
    memset(s, 'v', FERRY_SIGV4_MAX_HEADER_VALUE + 1);
    s[FERRY_SIGV4_MAX_HEADER_VALUE + 1] = '\0';
    ferry_sigv4_header h1[] = {{"Host", "h"}, {"X", s}};
    cr_expect_eq(sign_hdrs(h1, 2, err, sizeof(err)), -FERRY_ETOOBIG);
    s[FERRY_SIGV4_MAX_HEADER_VALUE] = '\0';
    ferry_sigv4_header h5[] = {{"Host", "h"}, {"A", s}, {"B", s}, {"C", s}, {"D", s}};
    cr_expect_eq(sign_hdrs(h5, 5, err, sizeof(err)), -FERRY_ETOOBIG);
    cr_expect(strstr(err, "together") != NULL, "%s", err);
    ferry_sigv4_header many[FERRY_SIGV4_MAX_HEADERS + 1];
    for (size_t i = 0; i < ARRAY_SIZE(many); i++)
        many[i] = (ferry_sigv4_header){"Host", "h"};
    cr_expect_eq(sign_hdrs(many, ARRAY_SIZE(many), err, sizeof(err)), -FERRY_ETOOBIG);
    cr_expect_eq(sign_hdrs(many, FERRY_SIGV4_MAX_HEADERS, err, sizeof(err)), 0, "%s", err);
    /* header name */
    memset(s, 'n', FERRY_SIGV4_MAX_HEADER_NAME + 1);
    s[FERRY_SIGV4_MAX_HEADER_NAME + 1] = '\0';
    ferry_sigv4_header hn[] = {{"Host", "h"}, {s, "v"}};
    cr_expect_eq(sign_hdrs(hn, 2, err, sizeof(err)), -FERRY_ETOOBIG);
    /* session token */
    memset(s, 't', FERRY_SIGV4_MAX_TOKEN + 1);
    s[FERRY_SIGV4_MAX_TOKEN + 1] = '\0';
    ferry_sigv4_credentials ct = {AKID, SECRET, s};
    ferry_sigv4_request rq = {.method = "GET", .path = "/", .headers = HOST, .n_headers = 1};
    ferry_sigv4_params par = {.region = "us-east-1", .service = "s", .time = T_20150830};
    cr_expect_eq(ferry_sigv4_sign(&ct, &rq, &par, &res, err, sizeof(err)), -FERRY_ETOOBIG);
    /* region, method, access key id */
    memset(s, 'r', 65);
    s[65] = '\0';
    par.region = s;
    cr_expect_eq(ferry_sigv4_sign(&CRED, &rq, &par, &res, err, sizeof(err)), -FERRY_ETOOBIG);
    par.region = "us-east-1";
    rq.method = s;
    cr_expect_eq(ferry_sigv4_sign(&CRED, &rq, &par, &res, err, sizeof(err)), -FERRY_ETOOBIG);
    rq.method = "GET";
    memset(s, 'K', 129);
    s[129] = '\0';
    ferry_sigv4_credentials ck = {s, SECRET, NULL};
    cr_expect_eq(ferry_sigv4_sign(&ck, &rq, &par, &res, err, sizeof(err)), -FERRY_ETOOBIG);
    free(s);
    /* body: past the limit it is not even read */
    char *body = malloc((size_t)FERRY_SIGV4_MAX_BODY + 1);
    cr_assert_not_null(body);
    rq.body = body;
    rq.body_len = (size_t)FERRY_SIGV4_MAX_BODY + 1;
    cr_expect_eq(ferry_sigv4_sign(&CRED, &rq, &par, &res, err, sizeof(err)), -FERRY_ETOOBIG);
    cr_expect(strstr(err, "body") != NULL, "%s", err);
    free(body);
    /* presign expiry */
    rq.body = NULL;
    rq.body_len = 0;
    par.expires = 0;
    cr_expect_eq(ferry_sigv4_presign(&CRED, &rq, &par, &res, err, sizeof(err)), -EINVAL);
    par.expires = FERRY_SIGV4_MAX_EXPIRES + 1;
    cr_expect_eq(ferry_sigv4_presign(&CRED, &rq, &par, &res, err, sizeof(err)), -EINVAL);
    par.expires = FERRY_SIGV4_MAX_EXPIRES;
    cr_expect_eq(ferry_sigv4_presign(&CRED, &rq, &par, &res, err, sizeof(err)), 0, "%s", err);
    cr_expect(strstr(res.query, "X-Amz-Expires=604800&") != NULL, "%s", res.query);
    ferry_sigv4_result_clear(&res);
}

Test(sigv4, null_and_bad_arguments)
{
    ferry_sigv4_result res;
    char err[256];
    ferry_sigv4_request rq = {.method = "GET", .path = "/", .headers = HOST, .n_headers = 1};
    ferry_sigv4_params par = {.region = "us-east-1", .service = "s", .time = T_20150830};

    cr_expect_eq(ferry_sigv4_sign(NULL, &rq, &par, &res, err, sizeof(err)), -EINVAL);
    cr_expect_eq(ferry_sigv4_sign(&CRED, NULL, &par, &res, err, sizeof(err)), -EINVAL);
    cr_expect_eq(ferry_sigv4_sign(&CRED, &rq, NULL, &res, err, sizeof(err)), -EINVAL);
    cr_expect_eq(ferry_sigv4_sign(&CRED, &rq, &par, NULL, err, sizeof(err)), -EINVAL);
    cr_expect_eq(ferry_sigv4_presign(NULL, NULL, NULL, &res, NULL, 0), -EINVAL);
    ferry_sigv4_credentials c1 = {NULL, SECRET, NULL}, c2 = {AKID, NULL, NULL},
                            c3 = {"AKID-X", SECRET, NULL}, c4 = {"", SECRET, NULL};
    cr_expect_eq(ferry_sigv4_sign(&c1, &rq, &par, &res, err, sizeof(err)), -EINVAL);
    cr_expect_eq(ferry_sigv4_sign(&c2, &rq, &par, &res, err, sizeof(err)), -EINVAL);
    cr_expect_eq(ferry_sigv4_sign(&c3, &rq, &par, &res, err, sizeof(err)), -EINVAL);
    cr_expect_eq(ferry_sigv4_sign(&c4, &rq, &par, &res, err, sizeof(err)), -EINVAL);
    rq.method = NULL;
    cr_expect_eq(ferry_sigv4_sign(&CRED, &rq, &par, &res, err, sizeof(err)), -EINVAL);
    rq.method = "G ET";
    cr_expect_eq(ferry_sigv4_sign(&CRED, &rq, &par, &res, err, sizeof(err)), -EINVAL);
    rq.method = "GET";
    rq.path = NULL;
    cr_expect_eq(ferry_sigv4_sign(&CRED, &rq, &par, &res, err, sizeof(err)), -EINVAL);
    rq.path = "/";
    rq.headers = NULL;
    cr_expect_eq(ferry_sigv4_sign(&CRED, &rq, &par, &res, err, sizeof(err)), -EINVAL);
    rq.headers = HOST;
    rq.body_len = 3;
    cr_expect_eq(ferry_sigv4_sign(&CRED, &rq, &par, &res, err, sizeof(err)), -EINVAL);
    rq.body_len = 0;
    par.region = NULL;
    cr_expect_eq(ferry_sigv4_sign(&CRED, &rq, &par, &res, err, sizeof(err)), -EINVAL);
    par.region = "US-EAST-1";
    cr_expect_eq(ferry_sigv4_sign(&CRED, &rq, &par, &res, err, sizeof(err)), -EINVAL);
    par.region = "us-east-1";
    par.service = "";
    cr_expect_eq(ferry_sigv4_sign(&CRED, &rq, &par, &res, err, sizeof(err)), -EINVAL);
    par.service = "s";
    par.flags = 1u << 10;
    cr_expect_eq(ferry_sigv4_sign(&CRED, &rq, &par, &res, err, sizeof(err)), -EINVAL);
    par.flags = FERRY_SIGV4_CONTENT_SHA256;
    par.expires = 60;
    cr_expect_eq(ferry_sigv4_presign(&CRED, &rq, &par, &res, err, sizeof(err)), -EINVAL);
    par.flags = 0;
    par.time = -1;
    cr_expect_eq(ferry_sigv4_sign(&CRED, &rq, &par, &res, err, sizeof(err)), -EINVAL);
    par.time = 253402300800LL;
    cr_expect_eq(ferry_sigv4_sign(&CRED, &rq, &par, &res, err, sizeof(err)), -EINVAL);
    par.time = T_20150830;
    rq.payload_hash = "not a hash";
    cr_expect_eq(ferry_sigv4_sign(&CRED, &rq, &par, &res, err, sizeof(err)), -EINVAL);
    rq.payload_hash = "";
    cr_expect_eq(ferry_sigv4_sign(&CRED, &rq, &par, &res, err, sizeof(err)), -EINVAL);
    /* a presigned request whose query already carries an authentication parameter */
    rq.payload_hash = NULL;
    rq.query = "a=1&X-Amz-Signature=00";
    cr_expect_eq(ferry_sigv4_presign(&CRED, &rq, &par, &res, err, sizeof(err)), -EINVAL);
    cr_expect(strstr(err, "X-Amz-Signature") != NULL, "%s", err);
    rq.query = "X-Amz-Credential%3D=1"; /* decoded name "X-Amz-Credential=" is fine */
    cr_expect_eq(ferry_sigv4_presign(&CRED, &rq, &par, &res, err, sizeof(err)), 0, "%s", err);
    ferry_sigv4_result_clear(&res);
    ferry_sigv4_result_clear(NULL);
    /* token both ways */
    ferry_sigv4_credentials ct = {AKID, SECRET, "tok"};
    ferry_sigv4_header th[] = {{"Host", "h"}, {"X-Amz-Security-Token", "tok"}};
    rq.query = NULL;
    rq.headers = th;
    rq.n_headers = 2;
    cr_expect_eq(ferry_sigv4_sign(&ct, &rq, &par, &res, err, sizeof(err)), -EINVAL);
}

/* No error text quotes the secret key or the session token, whatever went wrong. */
Test(sigv4, secrets_never_in_errors)
{
    static const char *const secret = "CANARYsecretKEY0123456789/+abcdefghijkl";
    static const char *const token = "CANARYsessionTOKEN0123456789";
    char bad_secret[64], bad_token[64], err[512];
    ferry_sigv4_result res;
    ferry_sigv4_header hd[] = {{"Host", "h"}, {"X\r", "v"}};

    snprintf(bad_secret, sizeof(bad_secret), "%s \x01", secret);
    snprintf(bad_token, sizeof(bad_token), "%s\n", token);
    ferry_sigv4_credentials creds[] = {
        {AKID, bad_secret, NULL},
        {AKID, secret, bad_token},
        {AKID, secret, token},
        {"bad id", secret, token},
    };
    ferry_sigv4_request reqs[] = {
        {.method = "GET", .path = "/", .headers = HOST, .n_headers = 1},
        {.method = "GET", .path = "x", .headers = HOST, .n_headers = 1},
        {.method = "GET", .path = "/", .headers = hd, .n_headers = 2},
        {.method = "GET", .path = "/", .query = "%", .headers = HOST, .n_headers = 1},
    };
    for (size_t c = 0; c < ARRAY_SIZE(creds); c++)
        for (size_t q = 0; q < ARRAY_SIZE(reqs); q++) {
            ferry_sigv4_params par = {.region = c == 2 && q == 0 ? "BAD" : "us-east-1",
                                      .service = "s",
                                      .time = T_20150830,
                                      .expires = 60};
            for (int pre = 0; pre < 2; pre++) {
                int r = pre ? ferry_sigv4_presign(&creds[c], &reqs[q], &par, &res, err, sizeof(err))
                            : ferry_sigv4_sign(&creds[c], &reqs[q], &par, &res, err, sizeof(err));
                cr_expect_lt(r, 0, "creds %zu req %zu", c, q);
                cr_expect_neq(err[0], '\0');
                cr_expect_null(strstr(err, "CANARY"), "secret in error: %s", err);
                cr_expect_null(strstr(err, "0123456789"), "secret in error: %s", err);
            }
        }
}

Test(sigv4, session_token_placement_and_presign_shape)
{
    ferry_sigv4_result res;
    char err[256];
    ferry_sigv4_credentials ct = {AKID, SECRET, "a/b+c="};
    ferry_sigv4_header hd[] = {{"Host", "secretsmanager.eu-west-1.amazonaws.com"},
                               {"X-Amz-Target", "secretsmanager.GetSecretValue"},
                               {"Content-Type", "application/x-amz-json-1.1"}};
    const char body[] = "{\"SecretId\":\"prod/db\"}";
    ferry_sigv4_request rq = {.method = "POST",
                              .path = "/",
                              .headers = hd,
                              .n_headers = 3,
                              .body = body,
                              .body_len = sizeof(body) - 1};
    ferry_sigv4_params par = {.region = "eu-west-1",
                              .service = "secretsmanager",
                              .time = T_20150830,
                              .flags = FERRY_SIGV4_CONTENT_SHA256};

    cr_assert_eq(ferry_sigv4_sign(&ct, &rq, &par, &res, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(res.n_add_headers, 4);
    cr_expect_str_eq(res.add_headers[0].name, "X-Amz-Date");
    cr_expect_str_eq(res.add_headers[1].name, "X-Amz-Content-Sha256");
    cr_expect_str_eq(res.add_headers[1].value, res.payload_hash);
    cr_expect_str_eq(res.add_headers[2].name, "X-Amz-Security-Token");
    cr_expect_str_eq(res.add_headers[2].value, "a/b+c=");
    cr_expect_str_eq(res.add_headers[3].name, "Authorization");
    cr_expect_str_eq(res.signed_headers, "content-type;host;x-amz-content-sha256;x-amz-date;"
                                         "x-amz-security-token;x-amz-target");
    cr_expect(strstr(res.authorization, "/20150830/eu-west-1/secretsmanager/aws4_request, ") !=
              NULL);
    cr_expect_eq(strlen(res.signature), 64);
    char first[65];
    memcpy(first, res.signature, 65);
    ferry_sigv4_result_clear(&res);

    /* token added after signing: not in the signed headers, still to be sent */
    par.flags |= FERRY_SIGV4_TOKEN_UNSIGNED;
    cr_assert_eq(ferry_sigv4_sign(&ct, &rq, &par, &res, err, sizeof(err)), 0, "%s", err);
    cr_expect_null(strstr(res.canonical_request, "x-amz-security-token"));
    cr_expect_str_eq(res.add_headers[2].name, "X-Amz-Security-Token");
    cr_expect_str_neq(res.signature, first);
    ferry_sigv4_result_clear(&res);

    /* a precomputed payload hash is used as is and the body is not read */
    rq.payload_hash = FERRY_SIGV4_UNSIGNED_PAYLOAD;
    rq.body = NULL;
    rq.body_len = 12345;
    par.flags = 0;
    cr_assert_eq(ferry_sigv4_sign(&CRED, &rq, &par, &res, err, sizeof(err)), 0, "%s", err);
    size_t cl = strlen(res.canonical_request);
    cr_expect_str_eq(res.canonical_request + cl - 17, "\nUNSIGNED-PAYLOAD");
    ferry_sigv4_result_clear(&res);

    /* presign: the final query keeps the caller's query first, encodes the token */
    rq.payload_hash = FERRY_SIGV4_UNSIGNED_PAYLOAD;
    rq.query = "b=2&a=1";
    par.expires = 900;
    cr_assert_eq(ferry_sigv4_presign(&ct, &rq, &par, &res, err, sizeof(err)), 0, "%s", err);
    cr_expect(strncmp(res.query, "b=2&a=1&X-Amz-Algorithm=AWS4-HMAC-SHA256&", 41) == 0, "%s",
              res.query);
    cr_expect(strstr(res.query, "&X-Amz-Security-Token=a%2Fb%2Bc%3D&X-Amz-Signature=") != NULL,
              "%s", res.query);
    /* the canonical query is sorted bytewise: "X-Amz-..." (0x58) before "a=1" (0x61) */
    cr_expect(strncmp(res.canonical_query, "X-Amz-Algorithm=AWS4-HMAC-SHA256&", 33) == 0, "%s",
              res.canonical_query);
    size_t ql = strlen(res.canonical_query);
    cr_expect(ql > 8 && strcmp(res.canonical_query + ql - 8, "&a=1&b=2") == 0, "%s",
              res.canonical_query);
    cr_expect(strstr(res.canonical_query, "&X-Amz-Security-Token=a%2Fb%2Bc%3D&") != NULL);
    ferry_sigv4_result_clear(&res);
}

Test(sigv4, dates)
{
    char buf[17];
    int64_t t;

    cr_expect_eq(ferry_sigv4_format_date(0, buf, sizeof(buf)), 0);
    cr_expect_str_eq(buf, "19700101T000000Z");
    cr_expect_eq(ferry_sigv4_format_date(T_20150830, buf, sizeof(buf)), 0);
    cr_expect_str_eq(buf, "20150830T123600Z");
    cr_expect_eq(ferry_sigv4_format_date(253402300799LL, buf, sizeof(buf)), 0);
    cr_expect_str_eq(buf, "99991231T235959Z");
    cr_expect_eq(ferry_sigv4_format_date(951782400, buf, sizeof(buf)), 0); /* leap day 2000 */
    cr_expect_str_eq(buf, "20000229T000000Z");
    cr_expect_eq(ferry_sigv4_format_date(253402300800LL, buf, sizeof(buf)), -EINVAL);
    cr_expect_eq(ferry_sigv4_format_date(-1, buf, sizeof(buf)), -EINVAL);
    cr_expect_eq(ferry_sigv4_format_date(0, buf, 16), -EINVAL);
    for (int64_t x = 0; x < 253402300799LL; x += 86399LL * 397 + 7) {
        cr_assert_eq(ferry_sigv4_format_date(x, buf, sizeof(buf)), 0);
        cr_assert_eq(ferry_sigv4_parse_date(buf, &t), 0, "%s", buf);
        cr_assert_eq(t, x, "%s", buf);
    }
    static const char *const bad[] = {
        "20150830T123600",   "20150830T123600z",
        "20150830 123600Z",  "2015083OT123600Z",
        "20150230T000000Z",  "20150229T000000Z",
        "21000229T000000Z",  "20151301T000000Z",
        "20150830T240000Z",  "20150830T126000Z",
        "20150830T123660Z",  "19691231T235959Z",
        "20150830T123600Z ", "",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        cr_expect_eq(ferry_sigv4_parse_date(bad[i], &t), -FERRY_EMALFORMED, "%s", bad[i]);
    cr_expect_eq(ferry_sigv4_parse_date("20000229T000000Z", &t), 0);
    cr_expect_eq(ferry_sigv4_parse_date(NULL, &t), -FERRY_EMALFORMED);
}
