/* tests/unit/test_audit_output.c - the report as a stream (ferry_audit_write) and the findings
 * store of core.c.
 *
 * ferry_audit_write hands the report to its receiver piece by piece and must give exactly the
 * bytes of ferry_audit_render in every output format, in more than one piece for a large
 * report and never much more than a piece at a time; a receiver's error stops the rendering and
 * is returned. The fingerprint set keeps one finding per fingerprint across inputs, also after
 * the findings were sorted in between. Allocation failures while streaming fail the run with
 * -ENOMEM, or the bytes are the undisturbed report.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "ferry/audit.h"
#include "ferry/error.h"

#define NOW INT64_C(1790000000) /* 2026-09-21 */
#define PIECE (64 * 1024)       /* AUDIT_OUT_CHUNK in core.c */

/* n IAM users, each with a full-admin inline policy (an AWS-OP-001 finding each, with the
 * statement as evidence) and a name of some length, so that reports run to hundreds of KB. */
static char *users_export(int n, int first)
{
    size_t cap = (size_t)n * 400 + 64, len = 0;
    char *t = malloc(cap);
    cr_assert_not_null(t);
    len += (size_t)snprintf(t + len, cap - len, "{\"UserDetailList\": [");
    for (int i = first; i < first + n; i++)
        len += (size_t)snprintf(
            t + len, cap - len,
            "%s{\"UserName\": \"user-%05d-with-a-longer-name\", \"Arn\": "
            "\"arn:aws:iam::111122223333:user/user-%05d-with-a-longer-name\", "
            "\"UserPolicyList\": [{\"PolicyName\": \"admin\", \"PolicyDocument\": {\"Statement\": "
            "[{\"Effect\": \"Allow\", \"Action\": \"*\", \"Resource\": \"*\"}]}}]}",
            i > first ? ", " : "", i, i);
    cr_assert_lt(len + 3, cap);
    memcpy(t + len, "]}", 3);
    return t;
}

static ferry_audit *run_users(int n)
{
    ferry_audit_options o = {.now = NOW};
    ferry_audit *a = NULL;
    char err[256] = "", *t = users_export(n, 0);
    cr_assert_eq(ferry_audit_new(&o, &a), 0);
    cr_assert_eq(ferry_audit_add_input(a, "users.json", t, strlen(t), NULL, err, sizeof(err)), 0,
                 "%s", err);
    cr_assert_eq(ferry_audit_finish(a, err, sizeof(err)), 0, "%s", err);
    free(t);
    return a;
}

/* A receiver that collects the pieces; fail_at > 0: the fail_at-th call fails with -EPIPE. */
struct sink {
    char *data;
    size_t len, calls, largest; /* largest: of the pieces after the first */
    size_t fail_at;
};

static int collect(const char *buf, size_t len, void *data)
{
    struct sink *s = data;
    char *n;

    s->calls++;
    if (s->fail_at && s->calls == s->fail_at)
        return -EPIPE;
    cr_assert_gt(len, 0, "a piece is never empty");
    if (!(n = realloc(s->data, s->len + len + 1)))
        return -ENOMEM;
    s->data = n;
    memcpy(s->data + s->len, buf, len);
    s->len += len;
    s->data[s->len] = '\0';
    if (s->calls > 1 && len > s->largest)
        s->largest = len; /* the first piece also has the document's head (SARIF's rules) */
    return 0;
}

static const ferry_audit_output formats[] = {FERRY_AUDIT_OUT_TABLE, FERRY_AUDIT_OUT_JSON,
                                             FERRY_AUDIT_OUT_SARIF, FERRY_AUDIT_OUT_NDJSON,
                                             FERRY_AUDIT_OUT_CSV};

Test(audit_output, write_gives_the_rendered_bytes_in_pieces)
{
    ferry_audit *a = run_users(2000);
    const ferry_audit_finding *fs;

    cr_assert_eq(ferry_audit_findings(a, &fs), 2001); /* and AWS-OP-011's note for the account */
    for (size_t k = 0; k < sizeof(formats) / sizeof(formats[0]); k++) {
        struct sink s = {0};
        char *whole = NULL;
        size_t whole_len = 0;
        cr_assert_eq(ferry_audit_render(a, formats[k], &whole, &whole_len), 0);
        cr_assert_eq(ferry_audit_write(a, formats[k], collect, &s), 0, "format %zu", k);
        cr_assert_eq(s.len, whole_len, "format %zu: %zu bytes written, %zu rendered", k, s.len,
                     whole_len);
        cr_assert(memcmp(s.data, whole, whole_len) == 0, "format %zu: other bytes", k);
        cr_assert_gt(whole_len, 4 * PIECE, "format %zu: the report is large (%zu)", k, whole_len);
        cr_assert_geq(s.calls, whole_len / (2 * PIECE), "format %zu: %zu pieces for %zu bytes", k,
                      s.calls, whole_len);
        /* A piece is handed on once it holds PIECE bytes: at most PIECE plus one finding
         * (the first piece: plus the document's head, at most SARIF's rules). */
        cr_assert_lt(s.largest, PIECE + 16 * 1024, "format %zu: a piece of %zu bytes", k,
                     s.largest);
        free(whole);
        free(s.data);
    }
    ferry_audit_free(a);
}

Test(audit_output, small_report_is_one_piece)
{
    ferry_audit *a = run_users(1);
    struct sink s = {0};
    char *whole = NULL;

    cr_assert_eq(ferry_audit_render(a, FERRY_AUDIT_OUT_JSON, &whole, NULL), 0);
    cr_assert_eq(ferry_audit_write(a, FERRY_AUDIT_OUT_JSON, collect, &s), 0);
    cr_assert_eq(s.calls, 1);
    cr_assert_str_eq(s.data, whole);
    cr_assert(strstr(whole, "\"AWS-OP-001\"") != NULL);
    free(whole);
    free(s.data);
    ferry_audit_free(a);
}

Test(audit_output, receiver_error_stops_the_report)
{
    ferry_audit *a = run_users(2000);

    for (size_t k = 0; k < sizeof(formats) / sizeof(formats[0]); k++) {
        struct sink s = {.fail_at = 2};
        cr_assert_eq(ferry_audit_write(a, formats[k], collect, &s), -EPIPE, "format %zu", k);
        cr_assert_eq(s.calls, 2, "format %zu: no call after the failed one (%zu)", k, s.calls);
        cr_assert_leq(s.len, 4 * PIECE, "format %zu: only the first piece was taken (%zu)", k,
                      s.len);
        free(s.data);
    }
    cr_assert_eq(ferry_audit_write(a, FERRY_AUDIT_OUT_JSON, NULL, NULL), -EINVAL);
    cr_assert_eq(ferry_audit_write(NULL, FERRY_AUDIT_OUT_JSON, collect, NULL), -EINVAL);
    cr_assert_eq(ferry_audit_write(a, (ferry_audit_output)99, collect, NULL), -EINVAL);
    ferry_audit_free(a);
}

/* One finding per fingerprint: the same users again add nothing, also when the findings were
 * sorted (which moves them in the store) between the inputs; new users add theirs. */
Test(audit_output, fingerprint_set_survives_sorting)
{
    ferry_audit_options o = {.now = NOW};
    ferry_audit *a = NULL;
    const ferry_audit_finding *fs;
    char err[256] = "", *t1 = users_export(3000, 0), *t2 = users_export(3000, 1500);

    cr_assert_eq(ferry_audit_new(&o, &a), 0);
    cr_assert_eq(ferry_audit_add_input(a, "a.json", t1, strlen(t1), NULL, err, sizeof(err)), 0);
    cr_assert_eq(ferry_audit_findings(a, &fs), 3000); /* sorted now; OP-011's note at the end */
    cr_assert_eq(ferry_audit_add_input(a, "a2.json", t1, strlen(t1), NULL, err, sizeof(err)), 0);
    cr_assert_eq(ferry_audit_findings(a, &fs), 3000, "the same findings are not added twice");
    cr_assert_eq(ferry_audit_add_input(a, "b.json", t2, strlen(t2), NULL, err, sizeof(err)), 0);
    cr_assert_eq(ferry_audit_finish(a, err, sizeof(err)), 0, "%s", err);
    size_t n = ferry_audit_findings(a, &fs), from_b = 0;
    cr_assert_eq(n, 4501, "users 0..4499 once each and the account's note, got %zu", n);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(fs[i].rule_id, "AWS-OP-011") == 0)
            continue; /* the account's "not evaluated" note, from finish */
        cr_assert_str_eq(fs[i].rule_id, "AWS-OP-001");
        if (i)
            cr_assert_str_neq(fs[i].fingerprint, fs[i - 1].fingerprint);
        /* A finding keeps the source of the input that reported it first. */
        from_b += strcmp(fs[i].source, "b.json") == 0;
        cr_assert(strcmp(fs[i].source, "a.json") == 0 || strcmp(fs[i].source, "b.json") == 0);
    }
    cr_assert_eq(from_b, 1500);
    free(t1);
    free(t2);
    ferry_audit_free(a);
}

/* ---- allocation failures ------------------------------------------------------------------- */
#define FERRY_ALLOCFAIL_NTH 1
#include "allocfail.h"
#include "audit-oom.h"
#ifdef HAVE_ALLOC_INJECTION
/* One run streamed in every format; *ret is the concatenation of the five reports. */
static int oom_run(const char *text, char **ret)
{
    ferry_audit_options o = {.now = NOW};
    ferry_audit *a = NULL;
    struct sink s = {0};
    char err[256];
    int r = ferry_audit_new(&o, &a);

    if (r == 0)
        r = ferry_audit_add_input(a, "u.json", text, strlen(text), NULL, err, sizeof(err));
    if (r == 0)
        r = ferry_audit_finish(a, err, sizeof(err));
    for (size_t k = 0; r == 0 && k < sizeof(formats) / sizeof(formats[0]); k++)
        r = ferry_audit_write(a, formats[k], collect, &s);
    ferry_audit_free(a);
    if (r == 0)
        *ret = s.data;
    else
        free(s.data);
    return r;
}

Test(audit_output, allocation_failures_while_streaming)
{
    char *text = users_export(3, 0), *ref = NULL;

    cr_assert_eq(oom_run(text, &ref), 0);
    cr_assert(strstr(ref, "AWS-OP-001") && strstr(ref, "\"record\":\"summary\"") &&
                  strstr(ref, "\"results\": [") && strstr(ref, "\"fingerprint\""),
              "the reference has every format: %s", ref);
    AUDIT_OOM_SWEEP(200000, ref, oom_run(text, &out));
    free(ref);
    free(text);
}
#endif
