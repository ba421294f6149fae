/* tests/unit/test_audit.c - unit tests of the audit module (include/ferry/audit.h).
 *
 * Fingerprints (stable across dates and order, distinct across rules and resources), dates in
 * every form the exports use, the JSON (ferry.audit/v1) and SARIF shapes, detection of inputs,
 * errors with file and line:column, page merging, and the policy-analysis cache.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "audit-internal.h"
#include "ferry/audit.h"
#include "ferry/error.h"

#define NOW INT64_C(1790000000) /* 2026-09-21 */

static ferry_audit *run_new(void)
{
    ferry_audit_options o = {.now = NOW};
    ferry_audit *a = NULL;
    cr_assert_eq(ferry_audit_new(&o, &a), 0);
    return a;
}

static int add(ferry_audit *a, const char *name, const char *text, char *err, size_t errlen)
{
    return ferry_audit_add_input(a, name, text, strlen(text), NULL, err, errlen);
}

static const char ADMIN_USER[] =
    "{\"UserDetailList\": [{\"UserName\": \"u\", \"Arn\": \"arn:aws:iam::111122223333:user/u\","
    " \"CreateDate\": \"%s\", \"UserPolicyList\": [{\"PolicyName\": \"p\", \"PolicyDocument\": "
    "{\"Version\": \"2012-10-17\", \"Statement\": %s}}]}]}";

static ferry_audit *audit_text(const char *text)
{
    ferry_audit *a = run_new();
    char err[512] = "";
    cr_assert_eq(add(a, "in.json", text, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ferry_audit_finish(a, err, sizeof(err)), 0, "%s", err);
    return a;
}

static const ferry_audit_finding *find(ferry_audit *a, const char *rule, size_t *ret_n)
{
    const ferry_audit_finding *fs, *first = NULL;
    size_t n = ferry_audit_findings(a, &fs), k = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(fs[i].rule_id, rule) == 0) {
            if (!first)
                first = &fs[i];
            k++;
        }
    if (ret_n)
        *ret_n = k;
    return first;
}

Test(audit, fingerprint_ignores_dates_and_statement_member_order)
{
    char t1[2048], t2[2048];
    snprintf(t1, sizeof(t1), ADMIN_USER, "2019-01-01T00:00:00Z",
             "{\"Effect\": \"Allow\", \"Action\": \"*\", \"Resource\": \"*\"}");
    snprintf(t2, sizeof(t2), ADMIN_USER, "2024-06-06 10:00:00+00:00",
             "[{\"Resource\": \"*\", \"Action\": \"*\", \"Effect\": \"Allow\"}]");
    ferry_audit *a = audit_text(t1), *b = audit_text(t2);
    const ferry_audit_finding *fa = find(a, "AWS-OP-001", NULL), *fb = find(b, "AWS-OP-001", NULL);
    cr_assert_not_null(fa);
    cr_assert_not_null(fb);
    cr_assert_eq(strlen(fa->fingerprint), 64);
    cr_assert_str_eq(fa->fingerprint, fb->fingerprint);
    cr_assert_eq(fa->severity, FERRY_AUDIT_CRITICAL);
    cr_assert_str_eq(fa->resource, "arn:aws:iam::111122223333:user/u");
    cr_assert_str_eq(fa->account, "111122223333");
    ferry_audit_free(a);
    ferry_audit_free(b);
}

Test(audit, fingerprint_differs_by_resource_and_statement)
{
    char t1[2048], t2[2048];
    snprintf(t1, sizeof(t1), ADMIN_USER, "2019-01-01T00:00:00Z",
             "{\"Effect\": \"Allow\", \"Action\": \"*\", \"Resource\": \"*\"}");
    snprintf(t2, sizeof(t2), ADMIN_USER, "2019-01-01T00:00:00Z",
             "{\"Effect\": \"Allow\", \"Action\": [\"*\"], \"Resource\": \"*\"}");
    ferry_audit *a = audit_text(t1), *b = audit_text(t2);
    cr_assert_str_neq(find(a, "AWS-OP-001", NULL)->fingerprint,
                      find(b, "AWS-OP-001", NULL)->fingerprint);
    ferry_audit_free(a);
    ferry_audit_free(b);

    ferry_audit *c = run_new();
    cr_assert_eq(audit_emit(c, "AWS-SH-005", -1, "aws", "1", "r1", NULL, "k", "x"), 0);
    cr_assert_eq(audit_emit(c, "AWS-SH-005", -1, "aws", "1", "r2", NULL, "k", "x"), 0);
    cr_assert_eq(audit_emit(c, "AWS-SH-006", -1, "aws", "1", "r1", NULL, "k", "y"), 0);
    /* Same identity, another file: same fingerprint (the source is not part of it), so it
     * is reported once. */
    cr_assert_eq(audit_emit(c, "AWS-SH-005", -1, "aws", "1", "r1", NULL, "k", "z"), 0);
    const ferry_audit_finding *fs;
    cr_assert_eq(ferry_audit_findings(c, &fs), 3);
    cr_assert_eq(audit_emit(c, "AWS-NOPE-1", -1, "aws", "1", "r", NULL, "k", "x"), -EINVAL);
    for (int i = 0; i < 3; i++)
        for (int j = i + 1; j < 3; j++)
            cr_assert_str_neq(fs[i].fingerprint, fs[j].fingerprint);
    for (int i = 0; i < 3; i++)
        cr_assert_str_neq(fs[i].source, "z");
    ferry_audit_free(c);
}

Test(audit, dates)
{
    int64_t t;
    cr_assert_eq(audit_parse_time("2019-12-18T19:10:08Z", &t), 0);
    cr_assert_eq(t, 1576696208);
    cr_assert_eq(audit_parse_time("2019-12-18 19:10:08+00:00", &t), 0);
    cr_assert_eq(t, 1576696208);
    cr_assert_eq(audit_parse_time("2019-12-18T19:10:08.123Z", &t), 0);
    cr_assert_eq(t, 1576696208);
    cr_assert_eq(audit_parse_time("2019-12-18T21:10:08+02:00", &t), 0);
    cr_assert_eq(t, 1576696208);
    cr_assert_eq(audit_parse_time("2019-12-18T14:10:08-0500", &t), 0);
    cr_assert_eq(t, 1576696208);
    cr_assert_eq(audit_parse_time("2019-12-18", &t), 0);
    cr_assert_eq(t, 1576627200);
    const char *bad[] = {"",
                         "N/A",
                         "2019-13-01T00:00:00Z",
                         "2019-12-18T19:10Z",
                         "2019-12-18T19:10:08Zjunk",
                         "2019-12-18T19:10:08.Z",
                         "19-12-18"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(audit_parse_time(bad[i], &t), -EINVAL, "%s", bad[i]);
}

Test(audit, severities)
{
    ferry_audit_severity s;
    cr_assert_eq(ferry_audit_severity_from_name("HIGH", &s), 0);
    cr_assert_eq(s, FERRY_AUDIT_HIGH);
    cr_assert_eq(ferry_audit_severity_from_name("severe", &s), -EINVAL);
    cr_assert_str_eq(ferry_audit_severity_name(FERRY_AUDIT_INFO), "info");
}

Test(audit, json_output_shape)
{
    char t[2048];
    snprintf(t, sizeof(t), ADMIN_USER, "2019-01-01T00:00:00Z",
             "{\"Effect\": \"Allow\", \"Action\": \"*\", \"Resource\": \"*\"}");
    ferry_audit *a = audit_text(t);
    char *out = NULL;
    cr_assert_eq(ferry_audit_render(a, FERRY_AUDIT_OUT_JSON, &out, NULL), 0);
    json_t *j = json_loads(out, 0, NULL);
    cr_assert_not_null(j);
    cr_assert_str_eq(json_string_value(json_object_get(j, "schema")), "ferry.audit/v1");
    json_t *sum = json_object_get(j, "summary");
    cr_assert_eq(json_integer_value(json_object_get(sum, "critical")), 1);
    cr_assert_eq(json_integer_value(json_object_get(sum, "info")), 1); /* OP-011 note */
    cr_assert_eq(json_integer_value(json_object_get(sum, "total")), 2);
    json_t *f = json_array_get(json_object_get(j, "findings"), 0);
    const char *keys[] = {"fingerprint", "rule_id",  "title",       "severity", "cloud",
                          "account",     "resource", "remediation", "source"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        cr_assert(json_is_string(json_object_get(f, keys[i])), "%s", keys[i]);
    json_t *ev = json_object_get(f, "evidence");
    cr_assert_str_eq(json_string_value(json_object_get(ev, "policy")), "inline:p");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(ev, "statement"), "Action")),
                     "*");
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(j, "inputs"), 0), "format")),
                     "aws-authz");
    json_decref(j);
    free(out);
    ferry_audit_free(a);
}

Test(audit, sarif_output_shape)
{
    char t[2048];
    snprintf(t, sizeof(t), ADMIN_USER, "2019-01-01T00:00:00Z",
             "{\"Effect\": \"Allow\", \"Action\": \"*\", \"Resource\": \"*\"}");
    ferry_audit *a = audit_text(t);
    char *out = NULL;
    cr_assert_eq(ferry_audit_render(a, FERRY_AUDIT_OUT_SARIF, &out, NULL), 0);
    json_t *j = json_loads(out, 0, NULL);
    cr_assert_not_null(j);
    cr_assert_str_eq(json_string_value(json_object_get(j, "version")), "2.1.0");
    json_t *run = json_array_get(json_object_get(j, "runs"), 0);
    json_t *driver = json_object_get(json_object_get(run, "tool"), "driver");
    cr_assert_str_eq(json_string_value(json_object_get(driver, "name")), "ferry");
    json_t *rules = json_object_get(driver, "rules");
    cr_assert(json_array_size(rules) >= 20);
    json_t *res = json_array_get(json_object_get(run, "results"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(res, "ruleId")), "AWS-OP-001");
    cr_assert_str_eq(json_string_value(json_object_get(res, "level")), "error");
    size_t idx = (size_t)json_integer_value(json_object_get(res, "ruleIndex"));
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rules, idx), "id")),
                     "AWS-OP-001");
    cr_assert_str_eq(
        json_string_value(json_object_get(json_object_get(res, "properties"), "security-severity")),
        "9.0");
    cr_assert_eq(strlen(json_string_value(
                     json_object_get(json_object_get(res, "partialFingerprints"), "ferry/v1"))),
                 64);
    json_t *loc = json_array_get(json_object_get(res, "locations"), 0);
    json_t *ll = json_array_get(json_object_get(loc, "logicalLocations"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(ll, "fullyQualifiedName")),
                     "arn:aws:iam::111122223333:user/u");
    json_decref(j);
    free(out);
    ferry_audit_free(a);
}

Test(audit, malformed_json_names_line_and_column)
{
    ferry_audit *a = run_new();
    char err[512] = "";
    int r = add(a, "bad.json", "{\"RoleDetailList\": [\n  {\"Arn\": }\n]}", err, sizeof(err));
    cr_assert_eq(r, -FERRY_EMALFORMED);
    cr_assert(strncmp(err, "bad.json:2:11: malformed JSON", 29) == 0, "%s", err);
    ferry_audit_free(a);
}

Test(audit, truncated_and_unrecognised_inputs)
{
    ferry_audit *a = run_new();
    char err[512] = "";
    cr_assert_eq(add(a, "t.json", "{\"RoleDetailList\": [{\"Arn\"", err, sizeof(err)),
                 -FERRY_EMALFORMED);
    cr_assert(strstr(err, "t.json:1:") != NULL, "%s", err);
    cr_assert_eq(add(a, "x.json", "{\"hello\": 1}", err, sizeof(err)), -FERRY_EUNSUPPORTED);
    cr_assert(strstr(err, "x.json: not a recognised export") != NULL, "%s", err);
    cr_assert_eq(add(a, "x.txt", "hello,world\n", err, sizeof(err)), -FERRY_EUNSUPPORTED);
    cr_assert_eq(add(a, "r.json", "{\"RoleDetailList\": {}}", err, sizeof(err)), -FERRY_EMALFORMED);
    cr_assert(strstr(err, "RoleDetailList: expected an array") != NULL, "%s", err);
    cr_assert_eq(
        add(a, "r.json", "{\"RoleDetailList\": [{\"RoleName\": \"x\"}]}", err, sizeof(err)),
        -FERRY_EMALFORMED);
    cr_assert(strstr(err, "RoleDetailList[0]: expected an Arn") != NULL, "%s", err);
    ferry_audit_free(a);
}

Test(audit, size_cap)
{
    ferry_audit_options o = {.now = NOW, .max_input = 16};
    ferry_audit *a = NULL;
    char err[256];
    cr_assert_eq(ferry_audit_new(&o, &a), 0);
    cr_assert_eq(add(a, "big.json", "{\"RoleDetailList\": []}", err, sizeof(err)), -FERRY_ETOOBIG);
    cr_assert(strstr(err, "big.json: larger than the 16-byte input limit") != NULL, "%s", err);
    ferry_audit_free(a);
}

Test(audit, pages_are_merged_across_files)
{
    /* The role's managed policy is only on the second page. */
    const char *p1 = "{\"RoleDetailList\": [{\"RoleName\": \"r\", \"Arn\": "
                     "\"arn:aws:iam::111122223333:role/r\", \"AttachedManagedPolicies\": "
                     "[{\"PolicyArn\": \"arn:aws:iam::111122223333:policy/adm\"}], "
                     "\"RoleLastUsed\": {\"LastUsedDate\": \"2026-09-01T00:00:00Z\"}}], "
                     "\"IsTruncated\": true, \"Marker\": \"m\"}";
    const char *p2 = "{\"Policies\": [{\"Arn\": \"arn:aws:iam::111122223333:policy/adm\", "
                     "\"AttachmentCount\": 1, \"DefaultVersionId\": \"v1\", "
                     "\"PolicyVersionList\": [{\"VersionId\": \"v1\", \"IsDefaultVersion\": "
                     "true, \"Document\": \"%7B%22Statement%22%3A%7B%22Effect%22%3A%22Allow%22"
                     "%2C%22Action%22%3A%22%2A%22%2C%22Resource%22%3A%22%2A%22%7D%7D\"}]}], "
                     "\"IsTruncated\": false}";
    ferry_audit *a = run_new();
    char err[512] = "";
    size_t n;
    cr_assert_eq(add(a, "p1.json", p1, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ferry_audit_findings(a, NULL), 0);
    cr_assert_eq(add(a, "p2.json", p2, err, sizeof(err)), 0, "%s", err);
    const ferry_audit_finding *f = find(a, "AWS-OP-001", &n);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(f->resource, "arn:aws:iam::111122223333:role/r");
    cr_assert(strstr(f->evidence, "\"policy\":\"arn:aws:iam::111122223333:policy/adm\""));
    ferry_audit_free(a);
}

Test(audit, bad_url_encoding_is_an_error)
{
    /* The error names the file, the line of the role and the role. */
    const char *t = "{\"RoleDetailList\": [\n {\"Arn\": \"arn:aws:iam::111122223333:role/ok\"},\n"
                    " {\"Arn\": \"arn:aws:iam::111122223333:role/r\",\n"
                    "  \"AssumeRolePolicyDocument\": \"%7B%2\"}]}";
    ferry_audit *a = run_new();
    char err[512] = "";
    cr_assert_eq(add(a, "u.json", t, err, sizeof(err)), -FERRY_EMALFORMED);
    cr_assert(strstr(err, "u.json:3: arn:aws:iam::111122223333:role/r AssumeRolePolicyDocument: "
                          "bad percent-escape") != NULL,
              "%s", err);
    ferry_audit_free(a);
}

Test(audit, analysis_is_cached_per_document)
{
    char t[2048];
    snprintf(t, sizeof(t), ADMIN_USER, "2019-01-01T00:00:00Z",
             "{\"Effect\": \"Allow\", \"Action\": \"*\", \"Resource\": \"*\"}");
    ferry_audit *a = audit_text(t);
    char err[256];
    cr_assert_eq(add(a, "again.json", t, err, sizeof(err)), 0);
    /* One analysis for the document seen in both inputs. */
    size_t n, analysed, reused;
    const ferry_audit_finding *fs;
    /* The same account twice: one OP-001 (same fingerprint, reported once, from the first
     * input) and the account's AWS-OP-011 "not evaluated" note. */
    cr_assert_eq(ferry_audit_findings(a, &fs), 2);
    cr_assert_str_eq(fs[0].source, "in.json");
    cr_assert_str_eq(fs[1].rule_id, "AWS-OP-011");
    cr_assert_eq(fs[1].severity, FERRY_AUDIT_INFO);
    (void)find(a, "AWS-OP-001", &n);
    cr_assert_eq(n, 1);
    audit_aws_cache_stats(a, &analysed, &reused);
    cr_assert_eq(analysed, 1);
    cr_assert(reused >= 1);
    ferry_audit_free(a);
}

Test(audit, managed_policy_analysed_once_for_many_roles)
{
    /* 50 roles with one managed policy (URL-encoded, as the raw API gives it): analysed
     * once, and each role still gets its finding. */
    char *text = malloc(64 * 1024), *p = text;
    size_t left = 64 * 1024, analysed, reused, n;
    int k = snprintf(p, left, "{\"RoleDetailList\": [");
    p += k;
    left -= (size_t)k;
    for (int i = 0; i < 50; i++) {
        k = snprintf(p, left,
                     "%s{\"Arn\": \"arn:aws:iam::111122223333:role/r%d\", "
                     "\"AttachedManagedPolicies\": [{\"PolicyArn\": "
                     "\"arn:aws:iam::111122223333:policy/wide\"}]}",
                     i ? "," : "", i);
        p += k;
        left -= (size_t)k;
    }
    k = snprintf(p, left,
                 "], \"Policies\": [{\"Arn\": \"arn:aws:iam::111122223333:policy/wide\", "
                 "\"AttachmentCount\": 50, \"DefaultVersionId\": \"v1\", "
                 "\"PolicyVersionList\": [{\"VersionId\": \"v1\", \"IsDefaultVersion\": "
                 "true, \"Document\": \"%%7B%%22Statement%%22%%3A%%7B%%22Effect%%22%%3A"
                 "%%22Allow%%22%%2C%%22Action%%22%%3A%%22s3%%3A%%2A%%22%%2C%%22Resource%%22"
                 "%%3A%%22%%2A%%22%%7D%%7D\"}]}]}");
    cr_assert(k > 0 && (size_t)k < left);
    ferry_audit *a = audit_text(text);
    free(text);
    (void)find(a, "AWS-OP-003", &n);
    cr_assert_eq(n, 50);
    audit_aws_cache_stats(a, &analysed, &reused);
    cr_assert_eq(analysed, 1);
    cr_assert(reused >= 49, "%zu", reused);
    ferry_audit_free(a);
}

Test(audit, table_neutralises_control_characters)
{
    const char *t = "{\"UserDetailList\": [{\"Arn\": \"arn:aws:iam::111122223333:user/"
                    "\\u001b[2Jx\", \"UserPolicyList\": [{\"PolicyName\": \"p\\u001b\", "
                    "\"PolicyDocument\": {\"Statement\": {\"Effect\": \"Allow\", "
                    "\"Action\": \"*\", \"Resource\": \"*\"}}}]}]}";
    ferry_audit *a = audit_text(t);
    char *out = NULL;
    cr_assert_eq(ferry_audit_render(a, FERRY_AUDIT_OUT_TABLE, &out, NULL), 0);
    cr_assert_null(strchr(out, 0x1b));
    cr_assert(strstr(out, "user/?[2Jx") != NULL, "%s", out);
    free(out);
    ferry_audit_free(a);
}

Test(audit, known_accounts)
{
    ferry_audit *a = run_new();
    cr_assert_eq(ferry_audit_add_known_account(a, "123456789012"), 0);
    cr_assert_eq(ferry_audit_add_known_account(a, "12345678901"), -EINVAL);
    cr_assert_eq(ferry_audit_add_known_account(a, "12345678901x"), -EINVAL);
    cr_assert(audit_account_known(a, "123456789012"));
    cr_assert(!audit_account_known(a, "999999999999"));
    ferry_audit_free(a);
}

Test(audit, credential_report_csv_quoting_and_line_endings)
{
    /* RFC 4180 quoting (IAM user names may hold a comma), CRLF line ends, no final newline. */
    const char *t = "user,arn,user_creation_time,password_enabled,access_key_1_active,"
                    "access_key_1_last_rotated,access_key_1_last_used_date\r\n"
                    "\"svc,etl\",arn:aws:iam::111122223333:user/svc-etl,2020-01-01T00:00:00+00:00,"
                    "false,true,2026-09-01T00:00:00+00:00,2026-09-20T00:00:00+00:00";
    ferry_audit *a = audit_text(t);
    size_t n;
    const ferry_audit_finding *f = find(a, "AWS-SH-006", &n);
    cr_assert_eq(n, 1);
    cr_assert(strstr(f->evidence, "\"user\":\"svc,etl\"") != NULL, "%s", f->evidence);
    ferry_audit_free(a);

    const char *bad[] = {
        "user,arn,user_creation_time,access_key_1_active\n\"open,arn:x,2020,true\n",
        "user,arn,user_creation_time,access_key_1_active\nst\"ray,arn:x,2020,true\n",
        "user,arn,user_creation_time,access_key_1_active\nu,not-an-arn,2020,true\n",
        "user,arn,user_creation_time\nu,arn:aws:iam::1:user/u,2020\n", /* no key columns */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ferry_audit *b = run_new();
        char err[256] = "";
        cr_assert_eq(add(b, "r.csv", bad[i], err, sizeof(err)), -FERRY_EMALFORMED, "%zu", i);
        cr_assert(strncmp(err, "r.csv: line ", 12) == 0, "%zu: %s", i, err);
        ferry_audit_free(b);
    }
}

Test(audit, credential_report_json_forms)
{
    /* GeneratedTime without ReportFormat is still the get-credential-report shape. */
    const char *t = "{\"GeneratedTime\": \"2026-09-21T00:00:00Z\", \"Content\": "
                    "\"user,arn,user_creation_time,access_key_1_active\\n<root_account>,"
                    "arn:aws:iam::111122223333:root,2020-01-01T00:00:00+00:00,true\\n\"}";
    ferry_audit *a = audit_text(t);
    size_t n;
    (void)find(a, "AWS-SH-008", &n);
    cr_assert_eq(n, 1);
    ferry_audit_free(a);
}

Test(audit, missing_documents_are_tolerated)
{
    /* An inline policy without PolicyDocument, a null trust policy, a managed policy whose
     * versions carry no Document: nothing to check there, no error, the rest still audited. */
    const char *t =
        "{\"RoleDetailList\": [{\"Arn\": \"arn:aws:iam::111122223333:role/r\", "
        "\"AssumeRolePolicyDocument\": null, \"RolePolicyList\": [{\"PolicyName\": \"empty\"}, "
        "{\"PolicyName\": \"adm\", \"PolicyDocument\": {\"Statement\": {\"Effect\": \"Allow\", "
        "\"Action\": \"*\", \"Resource\": \"*\"}}}], \"AttachedManagedPolicies\": "
        "[{\"PolicyArn\": \"arn:aws:iam::111122223333:policy/nodoc\"}]}], "
        "\"Policies\": [{\"Arn\": \"arn:aws:iam::111122223333:policy/nodoc\", "
        "\"AttachmentCount\": 0, \"DefaultVersionId\": \"v1\", \"PolicyVersionList\": "
        "[{\"VersionId\": \"v1\", \"IsDefaultVersion\": true}]}]}";
    ferry_audit *a = audit_text(t);
    size_t n;
    const ferry_audit_finding *f = find(a, "AWS-OP-001", &n);
    cr_assert_eq(n, 1);
    cr_assert(strstr(f->evidence, "inline:adm") != NULL);
    (void)find(a, "AWS-OP-013", &n);
    cr_assert_eq(n, 0);
    ferry_audit_free(a);
}

/* ---- allocation failures ------------------------------------------------------------------- *
 * malloc, calloc and realloc are replaced in this program (allocfail.h): while armed, the Nth
 * allocation of the process fails, whoever makes it (the library, jansson, OpenSSL). A whole run
 * (two inputs, finish, the three outputs) is repeated with N = 0, 1, 2, ... until it completes
 * without an injected failure. Each run must either fail with -ENOMEM (or -FERRY_ECRYPTO when
 * OpenSSL's digest could not allocate) or print exactly the report of a run without failures:
 * an allocation failure never silently drops or changes a finding. */
#define FERRY_ALLOCFAIL_NTH 1
#include "allocfail.h"
#include "audit-oom.h"
#ifdef HAVE_ALLOC_INJECTION
static const char OOM_AUTHZ[] =
    "{\"UserDetailList\": [{\"Arn\": \"arn:aws:iam::111122223333:user/u\", \"GroupList\": "
    "[\"g\"], \"UserPolicyList\": [{\"PolicyName\": \"p\", \"PolicyDocument\": {\"Statement\": "
    "[{\"Effect\": \"Allow\", \"Action\": [\"iam:PutUserPolicy\"], \"Resource\": "
    "\"arn:aws:iam::111122223333:user/u\"}]}}]}], "
    "\"GroupDetailList\": [{\"GroupName\": \"g\", \"Arn\": \"arn:aws:iam::111122223333:group/g\", "
    "\"GroupPolicyList\": [{\"PolicyName\": \"n\", \"PolicyDocument\": {\"Statement\": "
    "{\"Effect\": \"Allow\", \"NotAction\": \"iam:*\", \"Resource\": \"*\"}}}]}], "
    "\"RoleDetailList\": [{\"Arn\": \"arn:aws:iam::111122223333:role/gha\", \"CreateDate\": "
    "\"2020-01-01T00:00:00Z\", \"RoleLastUsed\": {}, \"AssumeRolePolicyDocument\": "
    "\"%7B%22Statement%22%3A%7B%22Effect%22%3A%22Allow%22%2C%22Principal%22%3A%7B%22Federated"
    "%22%3A%22arn%3Aaws%3Aiam%3A%3A111122223333%3Aoidc-provider%2Ftoken.actions."
    "githubusercontent.com%22%7D%2C%22Action%22%3A%22sts%3AAssumeRoleWithWebIdentity%22%7D%7D\", "
    "\"InstanceProfileList\": [{\"Arn\": \"arn:aws:iam::111122223333:instance-profile/i\"}], "
    "\"AttachedManagedPolicies\": [{\"PolicyArn\": \"arn:aws:iam::111122223333:policy/w\"}]}, "
    "{\"Arn\": \"arn:aws:iam::111122223333:role/x\", \"AssumeRolePolicyDocument\": "
    "{\"Statement\": {\"Effect\": \"Allow\", \"Principal\": {\"AWS\": [\"444455556666\", \"*\"], "
    "\"Service\": \"codebuild.amazonaws.com\"}, \"Action\": \"sts:AssumeRole\"}}}], "
    "\"Policies\": [{\"Arn\": \"arn:aws:iam::111122223333:policy/w\", \"AttachmentCount\": 1, "
    "\"DefaultVersionId\": \"v2\", \"PolicyVersionList\": [{\"VersionId\": \"v2\", "
    "\"IsDefaultVersion\": true, \"Document\": {\"Statement\": [{\"Effect\": \"Allow\", "
    "\"Action\": [\"s3:*\", \"iam:PassRole\", \"ec2:RunInstances\", \"secretsmanager:Get*\"], "
    "\"Resource\": \"*\"}]}}, {\"VersionId\": \"v1\", \"IsDefaultVersion\": false, \"Document\": "
    "{\"Statement\": {\"Effect\": \"Allow\", \"Action\": \"*\", \"Resource\": \"*\"}}}]}]}";
static const char OOM_CSV[] =
    "user,arn,user_creation_time,password_enabled,access_key_1_active,"
    "access_key_1_last_rotated,access_key_1_last_used_date,access_key_2_active,"
    "access_key_2_last_rotated,access_key_2_last_used_date\n"
    "<root_account>,arn:aws:iam::111122223333:root,2020-01-01T00:00:00+00:00,not_supported,true,"
    "2020-01-01T00:00:00+00:00,N/A,false,N/A,N/A\n"
    "svc,arn:aws:iam::111122223333:user/svc,2020-01-01T00:00:00+00:00,true,true,"
    "2020-01-01T00:00:00+00:00,2020-02-01T00:00:00+00:00,true,2026-09-01T00:00:00+00:00,N/A\n";

/* One whole run; *ret_json is its JSON report (new) when it returns 0. */
static int oom_run(char **ret_json)
{
    ferry_audit_options o = {.now = NOW};
    ferry_audit *a = NULL;
    char *out = NULL, err[256];
    int r = ferry_audit_new(&o, &a);

    if (r == 0)
        r = ferry_audit_add_known_account(a, "444455556666");
    if (r == 0)
        r = ferry_audit_add_input(a, "a.json", OOM_AUTHZ, strlen(OOM_AUTHZ), NULL, err,
                                  sizeof(err));
    if (r == 0)
        r = ferry_audit_add_input(a, "r.csv", OOM_CSV, strlen(OOM_CSV), NULL, err, sizeof(err));
    if (r == 0)
        r = ferry_audit_finish(a, err, sizeof(err));
    for (int k = FERRY_AUDIT_OUT_TABLE; r == 0 && k <= FERRY_AUDIT_OUT_SARIF; k++) {
        free(out);
        out = NULL;
        r = ferry_audit_render(a, (ferry_audit_output)k, &out, NULL);
    }
    if (r == 0) {
        free(out);
        out = NULL;
        r = ferry_audit_render(a, FERRY_AUDIT_OUT_JSON, &out, NULL);
    }
    ferry_audit_free(a);
    if (r == 0)
        *ret_json = out;
    else
        free(out);
    return r;
}

Test(audit, allocation_failures_fail_or_change_nothing)
{
    char *ref = NULL;

    cr_assert_eq(oom_run(&ref), 0);
    cr_assert(strstr(ref, "AWS-OP-012") && strstr(ref, "AWS-TR-005") && strstr(ref, "AWS-SH-008"),
              "the reference run covers the rules: %s", ref);
    AUDIT_OOM_SWEEP(200000, ref, oom_run(&out));
    free(ref);
}
#endif

/* A chain of roles r0 -> r1 -> ... -> rN, each trusting the one before it by ARN, with rN
 * full admin: AWS-OP-006 reaches at most five steps, and a cycle ends the search. */
static char *role_chain(int n, bool cycle)
{
    json_t *roles = json_array(), *doc;
    char *text;
    for (int i = 0; i <= n; i++) {
        char arn[128], prev[128], name[16];
        snprintf(name, sizeof(name), "r%d", i);
        snprintf(arn, sizeof(arn), "arn:aws:iam::111122223333:role/r%d", i);
        /* r0 is trusted by the last role when cycle (r0 -> ... -> rN -> r0). */
        snprintf(prev, sizeof(prev), "arn:aws:iam::111122223333:role/r%d",
                 i == 0 ? (cycle ? n : 0) : i - 1);
        json_t *trust =
            json_pack("{s:s, s:[{s:s, s:{s:s}, s:s}]}", "Version", "2012-10-17", "Statement",
                      "Effect", "Allow", "Principal", "AWS", prev, "Action", "sts:AssumeRole");
        json_t *pols = json_array();
        if (i == n && !cycle)
            json_array_append_new(pols, json_pack("{s:s, s:{s:s, s:{s:s, s:s, s:s}}}", "PolicyName",
                                                  "all", "PolicyDocument", "Version", "2012-10-17",
                                                  "Statement", "Effect", "Allow", "Action", "*",
                                                  "Resource", "*"));
        json_array_append_new(roles,
                              json_pack("{s:s, s:s, s:o, s:o}", "RoleName", name, "Arn", arn,
                                        "AssumeRolePolicyDocument", trust, "RolePolicyList", pols));
    }
    doc = json_pack("{s:o}", "RoleDetailList", roles);
    cr_assert_not_null(doc);
    text = json_dumps(doc, 0);
    json_decref(doc);
    cr_assert_not_null(text);
    return text;
}

Test(audit, escalation_path_depth_and_cycles)
{
    char *text = role_chain(6, false);
    ferry_audit *a = audit_text(text);
    const ferry_audit_finding *fs;
    size_t n = ferry_audit_findings(a, &fs), k = 0;
    bool r0 = false, r1 = false;

    /* r1..r5 are within five steps of r6; r0 is six away. */
    for (size_t i = 0; i < n; i++) {
        if (strcmp(fs[i].rule_id, "AWS-OP-006") != 0)
            continue;
        k++;
        cr_assert_eq(fs[i].severity, FERRY_AUDIT_HIGH);
        if (strcmp(fs[i].resource, "arn:aws:iam::111122223333:role/r0") == 0)
            r0 = true;
        if (strcmp(fs[i].resource, "arn:aws:iam::111122223333:role/r1") == 0) {
            r1 = true;
            json_t *ev = json_loads(fs[i].evidence, 0, NULL);
            cr_assert_not_null(ev);
            cr_assert_eq(json_integer_value(json_object_get(ev, "steps")), 5);
            cr_assert_str_eq(json_string_value(json_object_get(ev, "admin_principal")),
                             "arn:aws:iam::111122223333:role/r6");
            cr_assert_str_eq(json_string_value(json_object_get(
                                 json_array_get(json_object_get(ev, "path"), 0), "from")),
                             "arn:aws:iam::111122223333:role/r1");
            json_decref(ev);
        }
    }
    cr_assert_eq(k, 5, "r1..r5, got %zu", k);
    cr_assert(r1);
    cr_assert_not(r0, "six steps is past the bound");
    ferry_audit_free(a);
    free(text);

    /* A ring of roles with no admin anywhere: the search ends, nothing is reported. */
    text = role_chain(4, true);
    a = audit_text(text);
    cr_assert_null(find(a, "AWS-OP-006", NULL));
    ferry_audit_free(a);
    free(text);
}

/* --iac-inventory: what declares a role, and the limits. */
Test(audit, iac_inventory_forms_and_limits)
{
    static const char roles[] =
        "{\"RoleDetailList\": [{\"RoleName\": \"tf\", \"Arn\": "
        "\"arn:aws:iam::111122223333:role/tf\"},"
        " {\"RoleName\": \"cfn\", \"Arn\": \"arn:aws:iam::111122223333:role/cfn\"},"
        " {\"RoleName\": \"plan\", \"Arn\": \"arn:aws:iam::111122223333:role/plan\"},"
        " {\"RoleName\": \"hand\", \"Arn\": \"arn:aws:iam::111122223333:role/hand\"},"
        " {\"RoleName\": \"AWSReservedSSO_Admin_1\", \"Path\": "
        "\"/aws-reserved/sso.amazonaws.com/\","
        " \"Arn\": \"arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/"
        "AWSReservedSSO_Admin_1\"}]}";
    static const char state[] =
        "{\"format_version\": \"1.0\", \"values\": {\"root_module\": {\"child_modules\": [{"
        "\"resources\": [{\"type\": \"aws_iam_role\", \"mode\": \"managed\", \"values\": "
        "{\"arn\": \"arn:aws:iam::111122223333:role/tf\"}}]}]}}}";
    static const char plan[] =
        "{\"format_version\": \"1.2\", \"planned_values\": {\"root_module\": {\"resources\": "
        "[{\"type\": \"aws_iam_role\", \"values\": {\"name\": \"plan\"}}]}}}";
    static const char cfn[] =
        "{\"StackResources\": [{\"ResourceType\": \"AWS::IAM::Role\", \"PhysicalResourceId\": "
        "\"cfn\", \"StackId\": \"arn:aws:cloudformation:us-east-1:111122223333:stack/s/1\"}]}";
    ferry_audit *a = run_new();
    char err[512] = "";
    size_t n;

    cr_assert_eq(ferry_audit_add_iac_inventory(a, "s.json", state, strlen(state), err, sizeof(err)),
                 0, "%s", err);
    cr_assert_eq(ferry_audit_add_iac_inventory(a, "p.json", plan, strlen(plan), err, sizeof(err)),
                 0, "%s", err);
    cr_assert_eq(ferry_audit_add_iac_inventory(a, "c.json", cfn, strlen(cfn), err, sizeof(err)), 0,
                 "%s", err);
    cr_assert_eq(add(a, "roles.json", roles, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ferry_audit_finish(a, err, sizeof(err)), 0, "%s", err);
    const ferry_audit_finding *f = find(a, "AWS-SH-010", &n);
    cr_assert_eq(n, 1, "only the hand-made role, got %zu", n);
    cr_assert_str_eq(f->resource, "arn:aws:iam::111122223333:role/hand");
    cr_assert_eq(f->severity, FERRY_AUDIT_LOW);
    ferry_audit_free(a);

    /* Not an inventory; modules nested too deep; malformed JSON with its line. */
    a = run_new();
    cr_assert_eq(ferry_audit_add_iac_inventory(a, "r.json", roles, strlen(roles), err, sizeof(err)),
                 -FERRY_EMALFORMED);
    cr_assert(strstr(err, "r.json: not an IaC inventory"), "%s", err);
    char deep[4096] = "{\"format_version\": \"1.0\", \"values\": {\"root_module\": ";
    for (int i = 0; i < 40; i++)
        strcat(deep, "{\"child_modules\": [");
    strcat(deep, "{}");
    for (int i = 0; i < 40; i++)
        strcat(deep, "]}");
    strcat(deep, "}}");
    /* (The parser's depth limit of 64 comes before the module bound of 32.) */
    cr_assert_lt(ferry_audit_add_iac_inventory(a, "d.json", deep, strlen(deep), err, sizeof(err)),
                 0);
    cr_assert(strstr(err, "d.json:1:"), "%s", err);
    cr_assert_lt(ferry_audit_add_iac_inventory(a, "m.json", "{\n\"a\": ", 7, err, sizeof(err)), 0);
    cr_assert(strstr(err, "m.json:2:"), "%s", err);
    ferry_audit_free(a);
}

Test(audit, owner_tag_keys)
{
    static const char users[] =
        "{\"UserDetailList\": ["
        "{\"UserName\": \"a\", \"Arn\": \"arn:aws:iam::111122223333:user/a\", \"Tags\": "
        "[{\"Key\": \"TEAM\", \"Value\": \"ml\"}]},"
        "{\"UserName\": \"b\", \"Arn\": \"arn:aws:iam::111122223333:user/b\", \"Tags\": "
        "[{\"Key\": \"owner\", \"Value\": \"\"}, {\"Key\": \"env\", \"Value\": \"prod\"}]},"
        "{\"UserName\": \"c\", \"Arn\": \"arn:aws:iam::111122223333:user/c\"}]}";
    ferry_audit *a = run_new();
    char err[512] = "";
    size_t n;

    cr_assert_eq(ferry_audit_set_owner_tag_keys(a, ""), -EINVAL);
    cr_assert_eq(ferry_audit_set_owner_tag_keys(a, "owner,"), -EINVAL);
    cr_assert_eq(ferry_audit_set_owner_tag_keys(a, ",owner"), -EINVAL);
    cr_assert_eq(ferry_audit_set_owner_tag_keys(a, "own\ner"), -EINVAL);
    cr_assert_eq(ferry_audit_set_owner_tag_keys(a, "Owner,team"), 0);
    cr_assert_eq(add(a, "u.json", users, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ferry_audit_finish(a, err, sizeof(err)), 0, "%s", err);
    (void)find(a, "AWS-SH-009", &n);
    cr_assert_eq(n, 2, "b (empty owner) and c (no tags), got %zu", n);
    const ferry_audit_finding *fs;
    size_t total = ferry_audit_findings(a, &fs);
    for (size_t i = 0; i < total; i++)
        if (strcmp(fs[i].rule_id, "AWS-SH-009") == 0)
            cr_assert_neq(strcmp(fs[i].resource, "arn:aws:iam::111122223333:user/a"), 0);
    ferry_audit_free(a);
}

/* GCP-SH-009's unmanaged half: a described service account the inventory does not declare. */
Test(audit, iac_inventory_gcp_service_accounts)
{
    static const char sas[] =
        "[{\"email\": \"tf-sa@ml-prod-123.iam.gserviceaccount.com\", \"uniqueId\": \"1001\","
        " \"oauth2ClientId\": \"1001\", \"projectId\": \"ml-prod-123\", \"description\": \"tf\"},"
        " {\"email\": \"hand-sa@ml-prod-123.iam.gserviceaccount.com\", \"uniqueId\": \"1002\","
        " \"oauth2ClientId\": \"1002\", \"projectId\": \"ml-prod-123\", \"description\": \"x\"},"
        " {\"email\": \"id-sa@ml-prod-123.iam.gserviceaccount.com\", \"uniqueId\": \"1003\","
        " \"oauth2ClientId\": \"1003\", \"projectId\": \"ml-prod-123\", \"description\": \"y\"}]";
    static const char state[] =
        "{\"format_version\": \"1.0\", \"values\": {\"root_module\": {\"resources\": ["
        "{\"type\": \"google_service_account\", \"mode\": \"managed\", \"values\": {\"email\": "
        "\"tf-sa@ml-prod-123.iam.gserviceaccount.com\"}},"
        "{\"type\": \"google_service_account\", \"mode\": \"managed\", \"values\": "
        "{\"account_id\": \"id-sa\", \"project\": \"ml-prod-123\"}}]}}}";
    ferry_audit *a = run_new();
    char err[512] = "";
    size_t n;

    /* Without an inventory, described accounts give no GCP-SH-009. */
    cr_assert_eq(add(a, "sa.json", sas, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ferry_audit_finish(a, err, sizeof(err)), 0, "%s", err);
    cr_assert_null(find(a, "GCP-SH-009", NULL));
    ferry_audit_free(a);

    a = run_new();
    cr_assert_eq(ferry_audit_add_iac_inventory(a, "s.json", state, strlen(state), err, sizeof(err)),
                 0, "%s", err);
    cr_assert_eq(add(a, "sa.json", sas, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ferry_audit_finish(a, err, sizeof(err)), 0, "%s", err);
    const ferry_audit_finding *f = find(a, "GCP-SH-009", &n);
    cr_assert_eq(n, 1, "got %zu", n);
    cr_assert(strstr(f->resource, "hand-sa@ml-prod-123.iam.gserviceaccount.com"), "%s",
              f->resource);
    cr_assert(strstr(f->evidence, "\"in_iac_inventory\":false"), "%s", f->evidence);
    ferry_audit_free(a);
}

/* ferry_audit_parse ahead of ferry_audit_add_parsed (the CLI's reader thread): the same report
 * as ferry_audit_add_input, refusals reported by add_parsed in input order, and parsed inputs
 * freed after the run has moved on. */
static const char CSV2[] =
    "user,arn,user_creation_time,password_enabled,access_key_1_active,"
    "access_key_1_last_rotated,access_key_1_last_used_date,access_key_2_active,"
    "access_key_2_last_rotated,access_key_2_last_used_date\n"
    "<root_account>,arn:aws:iam::111122223333:root,2020-01-01T00:00:00+00:00,not_supported,true,"
    "2020-01-01T00:00:00+00:00,N/A,false,N/A,N/A\n";

Test(audit, parse_ahead_of_auditing)
{
    char t1[2048], *ref = NULL, *got = NULL, err[512] = "";
    static const char bad[] = "{\"RoleDetailList\": [\n {\"Arn\": 1}]}";
    ferry_audit_parsed *p1 = NULL, *p2 = NULL, *p3 = NULL;
    ferry_audit *a = run_new(), *b = run_new();

    snprintf(t1, sizeof(t1), ADMIN_USER, "2019-01-01T00:00:00Z",
             "{\"Effect\": \"Allow\", \"Action\": \"*\", \"Resource\": \"*\"}");
    cr_assert_eq(add(a, "in.json", t1, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(add(a, "r.csv", CSV2, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ferry_audit_finish(a, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ferry_audit_render(a, FERRY_AUDIT_OUT_JSON, &ref, NULL), 0);

    /* Both parsed before either is audited; the first freed after the second is audited. */
    cr_assert_eq(ferry_audit_parse(b, "in.json", t1, strlen(t1), NULL, &p1), 0);
    cr_assert_eq(ferry_audit_parse(b, "r.csv", CSV2, strlen(CSV2), NULL, &p2), 0);
    cr_assert_eq(ferry_audit_add_parsed(b, p1, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ferry_audit_add_parsed(b, p2, err, sizeof(err)), 0, "%s", err);
    ferry_audit_parsed_free(p1);
    ferry_audit_parsed_free(p2);
    cr_assert_eq(ferry_audit_finish(b, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ferry_audit_render(b, FERRY_AUDIT_OUT_JSON, &got, NULL), 0);
    cr_assert_str_eq(got, ref);

    /* A malformed input parses "successfully" into its refusal, given by add_parsed. */
    cr_assert_eq(ferry_audit_parse(b, "bad.json", "{\"a\": ", 6, NULL, &p3), 0);
    cr_assert_eq(ferry_audit_add_parsed(b, p3, err, sizeof(err)), -FERRY_EMALFORMED);
    cr_assert(strstr(err, "bad.json:1:"), "%s", err);
    ferry_audit_parsed_free(p3);
    /* A loader's refusal names its line from the text the parsed input still holds. */
    cr_assert_eq(ferry_audit_parse(b, "arn.json", bad, strlen(bad), NULL, &p3), 0);
    cr_assert_lt(ferry_audit_add_parsed(b, p3, err, sizeof(err)), 0);
    cr_assert(strstr(err, "arn.json:2: "), "%s", err);
    ferry_audit_parsed_free(p3);
    cr_assert_eq(ferry_audit_parse(NULL, "x", "", 0, NULL, &p3), -EINVAL);
    free(ref);
    free(got);
    ferry_audit_free(a);
    ferry_audit_free(b);
}

/* The string set behind the AWS and GCP cross-file records: one copy per distinct string,
 * pointers that stay valid while it grows, long strings, and its hard maximum. */
Test(audit, string_set)
{
    audit_strset t;
    const char *first = NULL, *again = NULL, *p = NULL, *kept[2000];
    char buf[64], *big = malloc(100 * 1024);

    cr_assert_not_null(big);
    audit_strset_init(&t, (size_t)1 << 20);
    cr_assert_null(audit_strset_find(&t, "x"));
    cr_assert_eq(audit_strset_intern(&t, "arn:aws:iam::111122223333:role/a", &first), 0);
    for (int i = 0; i < 2000; i++) {
        (void)snprintf(buf, sizeof(buf), "arn:aws:iam::111122223333:role/r%d", i);
        cr_assert_eq(audit_strset_intern(&t, buf, &kept[i]), 0);
        cr_assert_str_eq(kept[i], buf);
    }
    cr_assert_eq(t.n, 2001);
    cr_assert_eq(audit_strset_intern(&t, "arn:aws:iam::111122223333:role/a", &again), 0);
    cr_assert_eq(again, first, "an equal string is the same copy");
    cr_assert_eq(audit_strset_find(&t, "arn:aws:iam::111122223333:role/a"), first);
    cr_assert_null(audit_strset_find(&t, "arn:aws:iam::111122223333:role/b"));
    cr_assert_eq(audit_strset_intern(&t, "", &p), 0);
    cr_assert_str_eq(p, "");
    /* a string longer than a chunk gets its own, and the chunk being filled stays in use */
    memset(big, 'x', 100 * 1024 - 1);
    big[100 * 1024 - 1] = '\0';
    cr_assert_eq(audit_strset_intern(&t, big, &p), 0);
    cr_assert_str_eq(p, big);
    cr_assert_eq(audit_strset_intern(&t, "after the long one", &p), 0);
    for (int i = 0; i < 2000; i++) {
        (void)snprintf(buf, sizeof(buf), "arn:aws:iam::111122223333:role/r%d", i);
        cr_assert_str_eq(kept[i], buf, "copies stay put while the set grows");
        cr_assert_eq(audit_strset_find(&t, buf), kept[i]);
    }
    /* the maximum holds: past it nothing is added and what was there stays */
    int r = 0, i;
    for (i = 0; i < 20 && r == 0; i++) {
        big[0] = (char)('a' + i);
        r = audit_strset_intern(&t, big, &p);
    }
    cr_assert_eq(r, -FERRY_EFULL, "got %d after %d strings of 100 KiB", r, i);
    cr_assert_gt(i, 5);
    big[0] = (char)('a' + i - 1);
    cr_assert_null(audit_strset_find(&t, big));
    cr_assert_leq(t.bytes, t.max_bytes);
    cr_assert_eq(audit_strset_find(&t, "arn:aws:iam::111122223333:role/a"), first);
    audit_strset_release(&t);
    cr_assert_null(audit_strset_find(&t, "arn:aws:iam::111122223333:role/a"));
    free(big);
}

/* TR-004 is decided at the end of the run from the statement kept as compact text: what the
 * finding shows is the statement as the input had it (reals, escapes, nesting), once for each
 * account it trusts. */
Test(audit, cross_account_statement_kept_as_text)
{
    static const char stmt[] =
        "{\"Sid\": \"caf\\u00e9 \\\"q\\\" \\\\ \\t\", \"Effect\": \"Allow\", \"Principal\": "
        "{\"AWS\": [\"arn:aws:iam::444455556666:root\", \"999988887777\"]}, \"Action\": "
        "\"sts:AssumeRole\", \"Condition\": {\"NumericLessThan\": {\"aws:MultiFactorAuthAge\": "
        "3600.25}}, \"Zeta\": [1e300, -2, 0.1, true, null, {}, []]}";
    char *text = NULL;
    json_t *want = json_loads(stmt, 0, NULL);
    const ferry_audit_finding *fs;
    size_t n, k = 0;

    cr_assert_not_null(want);
    cr_assert_gt(asprintf(&text,
                          "{\"RoleDetailList\": [{\"RoleName\": \"x\", \"Arn\": "
                          "\"arn:aws:iam::111122223333:role/x\", \"CreateDate\": "
                          "\"2020-01-01T00:00:00Z\", \"AssumeRolePolicyDocument\": {\"Version\": "
                          "\"2012-10-17\", \"Statement\": [%s]}}]}",
                          stmt),
                 0);
    ferry_audit *a = audit_text(text);
    n = ferry_audit_findings(a, &fs);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(fs[i].rule_id, "AWS-TR-004") != 0)
            continue;
        json_t *ev = json_loads(fs[i].evidence, 0, NULL);
        cr_assert_not_null(ev, "%s", fs[i].evidence);
        cr_assert(json_equal(json_object_get(ev, "statement"), want), "%s", fs[i].evidence);
        k++;
        json_decref(ev);
    }
    cr_assert_eq(k, 2, "one TR-004 for each trusted account");
    ferry_audit_free(a);
    json_decref(want);
    free(text);
}

/* The state kept across inputs under allocation failures: AWS-OP-011's grants matched by usage
 * data that comes before and after them, and a trust to an account neither known nor audited
 * (TR-004, its statement kept as text until the end). */
static const char OOM_USAGE_ROLE[] =
    "{\"Arn\": \"arn:aws:iam::111122223333:role/x\", \"JobStatus\": \"COMPLETED\", "
    "\"ServicesLastAccessed\": [{\"ServiceNamespace\": \"s3\", \"LastAuthenticated\": null}, "
    "{\"ServiceNamespace\": \"ec2\", \"LastAuthenticated\": \"2026-09-20T00:00:00Z\"}]}";
static const char OOM_USAGE_USER[] =
    "{\"Arn\": \"arn:aws:iam::111122223333:user/u\", \"JobStatus\": \"COMPLETED\", "
    "\"ServicesLastAccessed\": [{\"ServiceNamespace\": \"s3\", \"LastAuthenticated\": "
    "\"2020-01-01T00:00:00Z\"}]}";
static const char OOM_CROSS[] =
    "{\"RoleDetailList\": [{\"RoleName\": \"x\", \"Arn\": \"arn:aws:iam::111122223333:role/x\", "
    "\"CreateDate\": \"2020-01-01T00:00:00Z\", \"RolePolicyList\": [{\"PolicyName\": \"p\", "
    "\"PolicyDocument\": {\"Statement\": {\"Effect\": \"Allow\", \"Action\": [\"s3:GetObject\", "
    "\"ec2:DescribeInstances\"], \"Resource\": \"arn:aws:s3:::b/*\"}}}], "
    "\"AssumeRolePolicyDocument\": {\"Statement\": [{\"Sid\": \"v\", \"Effect\": \"Allow\", "
    "\"Principal\": {\"AWS\": [\"arn:aws:iam::999988887777:root\", \"444455556666\"]}, "
    "\"Action\": \"sts:AssumeRole\", \"Condition\": {\"NumericLessThan\": {\"n\": 2.5}}}]}}], "
    "\"UserDetailList\": [{\"UserName\": \"u\", \"Arn\": \"arn:aws:iam::111122223333:user/u\", "
    "\"CreateDate\": \"2020-01-01T00:00:00Z\", \"UserPolicyList\": [{\"PolicyName\": \"q\", "
    "\"PolicyDocument\": {\"Statement\": {\"Effect\": \"Allow\", \"Action\": \"s3:ListBucket\", "
    "\"Resource\": \"arn:aws:s3:::b\"}}}]}]}";

static int oom_cross_run(char **ret_json)
{
    ferry_audit_options o = {.now = NOW};
    ferry_audit *a = NULL;
    char err[256];
    const char *in[][2] = {
        {"x.json", OOM_USAGE_ROLE}, {"a.json", OOM_CROSS}, {"u.json", OOM_USAGE_USER}};
    int r = ferry_audit_new(&o, &a);

    for (size_t i = 0; r == 0 && i < ARRAY_SIZE(in); i++)
        r = ferry_audit_add_input(a, in[i][0], in[i][1], strlen(in[i][1]), NULL, err, sizeof(err));
    return audit_oom_finish(a, r, ret_json);
}

Test(audit, allocation_failures_in_state_kept_across_inputs)
{
    char *ref = NULL;

    cr_assert_eq(oom_cross_run(&ref), 0);
    cr_assert(strstr(ref, "\"AWS-TR-004\"") && strstr(ref, "2.5") &&
                  strstr(ref, "\"unused_services\"") &&
                  strstr(ref, "\"granted_from\": \"policies\""),
              "the reference run covers the rules: %s", ref);
    AUDIT_OOM_SWEEP(200000, ref, oom_cross_run(&out));
    free(ref);
}

/* ---- AWS records of other accounts in the temporary file (spill.c) ------------------------- */

/* Five accounts: a role granted s3 and ec2 that trusts the next account (audited: no finding)
 * and one outside the run (TR-004), a young role, usage data of the role (before its grants in
 * even accounts, after them in odd ones) and of a principal no authorization details name. */
static int spill_run(size_t spill_after, const char *tmpdir, char **ret_json, size_t *ret_records,
                     uint64_t *ret_spilled, char *err, size_t errlen)
{
    ferry_audit_options o = {.now = NOW};
    ferry_audit *a = NULL;
    int r = ferry_audit_new(&o, &a);

    if (r < 0)
        return r;
    a->spill_after = spill_after;
    if (tmpdir)
        cr_assert_eq(setenv("TMPDIR", tmpdir, 1), 0);
    for (int k = 0; k < 5 && r == 0; k++) {
        char acct[13], next[13], name[64], *authz = NULL, *usage = NULL, *ghost = NULL;
        (void)snprintf(acct, sizeof(acct), "1000000000%02d", k);
        (void)snprintf(next, sizeof(next), "1000000000%02d", (k + 1) % 5);
        cr_assert_gt(
            asprintf(&authz,
                     "{\"RoleDetailList\": [{\"RoleName\": \"app\", \"Arn\": "
                     "\"arn:aws:iam::%s:role/app\", \"CreateDate\": \"2020-01-01T00:00:00Z\", "
                     "\"RolePolicyList\": [{\"PolicyName\": \"p\", \"PolicyDocument\": "
                     "{\"Statement\": {\"Effect\": \"Allow\", \"Action\": [\"s3:GetObject\", "
                     "\"ec2:DescribeInstances\"], \"Resource\": \"arn:aws:s3:::b/*\"}}}], "
                     "\"AssumeRolePolicyDocument\": {\"Statement\": [{\"Effect\": \"Allow\", "
                     "\"Principal\": {\"AWS\": [\"arn:aws:iam::%s:root\", "
                     "\"arn:aws:iam::9999000000%02d:root\"]}, \"Action\": \"sts:AssumeRole\"}]}}, "
                     "{\"RoleName\": \"young\", \"Arn\": \"arn:aws:iam::%s:role/young\", "
                     "\"CreateDate\": \"2026-09-20T00:00:00Z\"}]}",
                     acct, next, k, acct),
            0);
        cr_assert_gt(asprintf(&usage,
                              "{\"Arn\": \"arn:aws:iam::%s:role/app\", \"JobStatus\": "
                              "\"COMPLETED\", \"ServicesLastAccessed\": [{\"ServiceNamespace\": "
                              "\"s3\", \"LastAuthenticated\": null}, {\"ServiceNamespace\": "
                              "\"ec2\", \"LastAuthenticated\": \"2026-09-20T00:00:00Z\"}]}",
                              acct),
                     0);
        cr_assert_gt(asprintf(&ghost,
                              "{\"Arn\": \"arn:aws:iam::%s:role/ghost\", \"JobStatus\": "
                              "\"COMPLETED\", \"ServicesLastAccessed\": [{\"ServiceNamespace\": "
                              "\"kms\", \"LastAuthenticated\": \"2020-01-01T00:00:00Z\"}]}",
                              acct),
                     0);
        const char *in[3] = {ghost, k % 2 ? authz : usage, k % 2 ? usage : authz};
        for (int i = 0; i < 3 && r == 0; i++) {
            (void)snprintf(name, sizeof(name), "%s-%d.json", acct, i);
            r = ferry_audit_add_input(a, name, in[i], strlen(in[i]), NULL, err, errlen);
        }
        free(authz);
        free(usage);
        free(ghost);
    }
    if (r == 0 && ret_records)
        *ret_records = audit_aws_records(a, ret_spilled);
    if (r == 0)
        r = ferry_audit_finish(a, err, errlen);
    if (r == 0)
        r = ferry_audit_render(a, FERRY_AUDIT_OUT_JSON, ret_json, NULL);
    ferry_audit_free(a);
    return r;
}

Test(audit, records_of_other_accounts_wait_in_a_temporary_file)
{
    char err[512] = "", *ref = NULL, *out = NULL;
    size_t records = 0;
    uint64_t spilled = 0;
    json_t *doc, *f;
    size_t i, n_op011 = 0, n_tr004 = 0, n_alone = 0;

    cr_assert_eq(spill_run(AUDIT_SPILL_AFTER, NULL, &ref, &records, &spilled, err, sizeof(err)), 0,
                 "%s", err);
    if (AUDIT_SPILL_AFTER > 100) { /* not in a build that evicts at every record */
        cr_assert_eq(spilled, 0, "a small run keeps everything in memory");
        cr_assert_geq(records, 15, "%zu records", records);
    }
    doc = json_loads(ref, 0, NULL);
    cr_assert_not_null(doc);
    json_array_foreach(json_object_get(doc, "findings"), i, f)
    {
        const char *rule = json_string_value(json_object_get(f, "rule_id"));
        json_t *ev = json_object_get(f, "evidence");
        if (strcmp(rule, "AWS-TR-004") == 0) {
            n_tr004++;
            cr_assert(strncmp(json_string_value(json_object_get(ev, "trusted_account")),
                              "9999000000", 10) == 0);
        }
        if (strcmp(rule, "AWS-OP-011") != 0)
            continue;
        n_op011++;
        const char *from = json_string_value(json_object_get(ev, "granted_from"));
        if (strcmp(from, "service-last-accessed") == 0)
            n_alone++;
        else
            cr_assert_str_eq(
                json_string_value(json_array_get(json_object_get(ev, "unused_services"), 0)), "s3");
    }
    json_decref(doc);
    cr_assert_eq(n_tr004, 5, "one trust outside the run per account, none to the next one");
    cr_assert_eq(n_op011, 10, "app (matched in either order) and ghost of each account");
    cr_assert_eq(n_alone, 5);

    /* The same report whether everything stays in memory or the other accounts' records wait
     * in the file after every principal (0) or every few (3). */
    for (size_t after = 0; after <= 3; after += 3) {
        cr_assert_eq(spill_run(after, "/tmp", &out, &records, &spilled, err, sizeof(err)), 0, "%s",
                     err);
        cr_assert_gt(spilled, 0);
        cr_assert_leq(records, after ? 2 * after + 4 : 4,
                      "%zu records in memory: more than the last account's", records);
        cr_assert_str_eq(out, ref, "spill after %zu", after);
        free(out);
        out = NULL;
    }
    free(ref);
}

Test(audit, temporary_file_that_cannot_be_made_fails_the_run)
{
    char err[512] = "", *out = NULL;
    int r = spill_run(0, "/nonexistent/ferry-audit", &out, NULL, NULL, err, sizeof(err));

    cr_assert_eq(r, -ENOENT, "%d %s", r, err);
    cr_assert(strstr(err, "temporary file") && strstr(err, "/nonexistent/ferry-audit"), "%s", err);
    cr_assert_null(out);
    cr_assert_eq(setenv("TMPDIR", "/tmp", 1), 0);
}

/* A second account: a role's usage data before its grants. */
static const char OOM_OTHER_USAGE[] =
    "{\"Arn\": \"arn:aws:iam::444455556666:role/y\", \"JobStatus\": \"COMPLETED\", "
    "\"ServicesLastAccessed\": [{\"ServiceNamespace\": \"sqs\", \"LastAuthenticated\": null}]}";
static const char OOM_OTHER_AUTHZ[] =
    "{\"RoleDetailList\": [{\"RoleName\": \"y\", \"Arn\": \"arn:aws:iam::444455556666:role/y\", "
    "\"CreateDate\": \"2020-01-01T00:00:00Z\", \"RolePolicyList\": [{\"PolicyName\": \"p\", "
    "\"PolicyDocument\": {\"Statement\": {\"Effect\": \"Allow\", \"Action\": \"sqs:SendMessage\", "
    "\"Resource\": \"arn:aws:sqs:us-east-1:444455556666:q\"}}}]}]}";

static int oom_spill_run(char **ret_json)
{
    ferry_audit_options o = {.now = NOW};
    ferry_audit *a = NULL;
    char err[256];
    const char *in[][2] = {{"x.json", OOM_USAGE_ROLE},
                           {"y.json", OOM_OTHER_USAGE},
                           {"a.json", OOM_CROSS},
                           {"b.json", OOM_OTHER_AUTHZ},
                           {"u.json", OOM_USAGE_USER}};
    int r = ferry_audit_new(&o, &a);

    if (r == 0)
        a->spill_after = 0;
    for (size_t i = 0; r == 0 && i < ARRAY_SIZE(in); i++)
        r = ferry_audit_add_input(a, in[i][0], in[i][1], strlen(in[i][1]), NULL, err, sizeof(err));
    return audit_oom_finish(a, r, ret_json);
}

/* Allocation failures while records go to the file and come back fail the run or change
 * nothing. */
Test(audit, allocation_failures_with_records_in_the_temporary_file)
{
    char *ref = NULL;

    cr_assert_eq(setenv("TMPDIR", "/tmp", 1), 0);
    cr_assert_eq(oom_spill_run(&ref), 0);
    cr_assert(strstr(ref, "\"AWS-TR-004\"") && strstr(ref, "\"granted_from\": \"policies\"") &&
                  strstr(ref, "role/y"),
              "the reference run covers the rules: %s", ref);
    AUDIT_OOM_SWEEP(200000, ref, oom_spill_run(&out));
    free(ref);
}
