/* tests/unit/test_audit_suppress.c - suppressions, the baseline and the NDJSON and CSV outputs
 * of the audit module (src/lib/audit/suppress.c, docs/internals/audit.md).
 *
 * One small AWS export gives two full-admin users (AWS-OP-001 on user/alice and user/bob,
 * critical) and the account's AWS-OP-011 info note; the suppression files below accept some of
 * them. Checked: exact, fingerprint and glob entries; expired and unused entries reported;
 * counts and the exit count leave suppressed findings out; every refused file names the line
 * and what is wrong; baselines (new/unchanged/absent, refused non-reports); CSV quoting and
 * formula-injection prefix; NDJSON one line per finding plus the summary.
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

#define NOW INT64_C(1790000000) /* 2026-09-21T14:13:20Z */
#define ALICE "arn:aws:iam::111122223333:user/alice"
#define BOB "arn:aws:iam::111122223333:user/bob"
#define CAROL "arn:aws:iam::111122223333:user/carol"

#define ADMIN_USER(name)                                                                           \
    "{\"UserName\": \"" name "\", \"Arn\": \"arn:aws:iam::111122223333:user/" name "\", "          \
    "\"CreateDate\": \"2020-01-01T00:00:00Z\", \"UserPolicyList\": [{\"PolicyName\": \"p\", "      \
    "\"PolicyDocument\": {\"Version\": \"2012-10-17\", \"Statement\": {\"Effect\": \"Allow\", "    \
    "\"Action\": \"*\", \"Resource\": \"*\"}}}]}"

static const char TWO[] = "{\"UserDetailList\": [" ADMIN_USER("alice") ", " ADMIN_USER("bob") "]}";
static const char THREE[] = "{\"UserDetailList\": [" ADMIN_USER("alice") ", " ADMIN_USER(
    "bob") ", " ADMIN_USER("carol") "]}";
static const char ONE[] = "{\"UserDetailList\": [" ADMIN_USER("alice") "]}";

static ferry_audit *run_new(void)
{
    ferry_audit_options o = {.now = NOW};
    ferry_audit *a = NULL;
    cr_assert_eq(ferry_audit_new(&o, &a), 0);
    return a;
}

static int sup(ferry_audit *a, const char *text, char *err, size_t errlen)
{
    return ferry_audit_add_suppressions(a, "sup.yaml", text, strlen(text), err, errlen);
}

/* A run over export with the suppression file text (NULL: none) and baseline (NULL: none). */
static ferry_audit *audit_with(const char *export, const char *suppressions, const char *base)
{
    ferry_audit *a = run_new();
    char err[1024] = "";
    if (suppressions)
        cr_assert_eq(sup(a, suppressions, err, sizeof(err)), 0, "%s", err);
    if (base)
        cr_assert_eq(ferry_audit_set_baseline(a, "base.json", base, strlen(base), err, sizeof(err)),
                     0, "%s", err);
    cr_assert_eq(
        ferry_audit_add_input(a, "in.json", export, strlen(export), NULL, err, sizeof(err)), 0,
        "%s", err);
    cr_assert_eq(ferry_audit_finish(a, err, sizeof(err)), 0, "%s", err);
    return a;
}

static const ferry_audit_finding *find(ferry_audit *a, const char *rule, const char *res)
{
    const ferry_audit_finding *fs;
    size_t n = ferry_audit_findings(a, &fs);
    for (size_t i = 0; i < n; i++)
        if (strcmp(fs[i].rule_id, rule) == 0 && strcmp(fs[i].resource, res) == 0)
            return &fs[i];
    return NULL;
}

static json_t *render_json(ferry_audit *a, ferry_audit_output out)
{
    char *s = NULL;
    json_error_t e;
    cr_assert_eq(ferry_audit_render(a, out, &s, NULL), 0);
    json_t *j = json_loads(s, JSON_REJECT_DUPLICATES, &e);
    cr_assert_not_null(j, "%s", e.text);
    free(s);
    return j;
}

static json_t *json_finding(json_t *doc, const char *rule, const char *res)
{
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(doc, "findings"), i,
                       f) if (strcmp(json_string_value(json_object_get(f, "rule_id")), rule) == 0 &&
                              strcmp(json_string_value(json_object_get(f, "resource")), res) ==
                                  0) return f;
    return NULL;
}

static json_int_t jint(json_t *o, const char *k)
{
    cr_assert(json_is_integer(json_object_get(o, k)), "member %s", k);
    return json_integer_value(json_object_get(o, k));
}

/* ---- the baseline of the tests: sanity ------------------------------------------------------ */

Test(audit_suppress, export_gives_two_criticals_and_the_info_note)
{
    ferry_audit *a = audit_with(TWO, NULL, NULL);
    cr_assert_not_null(find(a, "AWS-OP-001", ALICE));
    cr_assert_not_null(find(a, "AWS-OP-001", BOB));
    cr_assert_not_null(find(a, "AWS-OP-011", "arn:aws:iam::111122223333:root"));
    cr_assert_eq(ferry_audit_count_at_least(a, FERRY_AUDIT_CRITICAL), 2);
    json_t *j = render_json(a, FERRY_AUDIT_OUT_JSON);
    cr_assert_null(json_object_get(j, "suppressions"), "no section without --suppress");
    cr_assert_null(json_object_get(json_object_get(j, "summary"), "suppressed"));
    json_decref(j);
    ferry_audit_free(a);
}

/* ---- suppressions --------------------------------------------------------------------------- */

Test(audit_suppress, exact_entry_leaves_counts_and_stays_visible)
{
    ferry_audit *a = audit_with(TWO,
                                "version: 1\n"
                                "suppressions:\n"
                                "  - rule: AWS-OP-001\n"
                                "    resource: " ALICE "\n"
                                "    reason: break-glass user, hardware MFA, SEC-42\n"
                                "    owner: secops@example.com\n"
                                "    expires: 2027-01-31\n",
                                NULL);
    ferry_audit_finding_state st;
    ferry_audit_finding_status(a, find(a, "AWS-OP-001", ALICE), &st);
    cr_assert(st.suppressed);
    cr_assert_str_eq(st.reason, "break-glass user, hardware MFA, SEC-42");
    cr_assert_str_eq(st.owner, "secops@example.com");
    cr_assert_str_eq(st.expires, "2027-01-31");
    cr_assert_str_eq(st.file, "sup.yaml");
    cr_assert_eq(st.line, 3);
    ferry_audit_finding_status(a, find(a, "AWS-OP-001", BOB), &st);
    cr_assert(!st.suppressed);
    cr_assert_eq(ferry_audit_count_at_least(a, FERRY_AUDIT_CRITICAL), 1);

    json_t *j = render_json(a, FERRY_AUDIT_OUT_JSON), *sum = json_object_get(j, "summary");
    cr_assert_eq(jint(sum, "critical"), 1);
    cr_assert_eq(jint(sum, "info"), 1);
    cr_assert_eq(jint(sum, "total"), 2);
    cr_assert_eq(jint(sum, "suppressed"), 1);
    cr_assert_eq(json_array_size(json_object_get(j, "findings")), 3, "suppressed stays listed");
    json_t *s = json_object_get(json_finding(j, "AWS-OP-001", ALICE), "suppressed");
    cr_assert_str_eq(json_string_value(json_object_get(s, "reason")),
                     "break-glass user, hardware MFA, SEC-42");
    cr_assert_str_eq(json_string_value(json_object_get(s, "owner")), "secops@example.com");
    cr_assert_str_eq(json_string_value(json_object_get(s, "expires")), "2027-01-31");
    cr_assert_null(json_object_get(json_finding(j, "AWS-OP-001", BOB), "suppressed"));
    json_t *sec = json_object_get(j, "suppressions");
    cr_assert_eq(jint(sec, "entries"), 1);
    cr_assert_eq(jint(sec, "suppressed"), 1);
    cr_assert_eq(json_array_size(json_object_get(sec, "expired")), 0);
    cr_assert_eq(json_array_size(json_object_get(sec, "unused")), 0);
    json_decref(j);

    /* SARIF: the result carries an external suppression with the reason as justification. */
    j = render_json(a, FERRY_AUDIT_OUT_SARIF);
    json_t *run = json_array_get(json_object_get(j, "runs"), 0), *res;
    size_t i, with = 0;
    json_array_foreach(json_object_get(run, "results"), i, res)
    {
        json_t *sp = json_object_get(res, "suppressions");
        const char *fqn = json_string_value(json_object_get(
            json_array_get(json_object_get(json_array_get(json_object_get(res, "locations"), 0),
                                           "logicalLocations"),
                           0),
            "fullyQualifiedName"));
        if (!sp)
            continue;
        with++;
        cr_assert_str_eq(fqn, ALICE);
        cr_assert_str_eq(json_string_value(json_object_get(json_array_get(sp, 0), "kind")),
                         "external");
        cr_assert_str_eq(json_string_value(json_object_get(json_array_get(sp, 0), "justification")),
                         "break-glass user, hardware MFA, SEC-42");
    }
    cr_assert_eq(with, 1);
    json_decref(j);

    /* Table: the count, and alice is not listed. */
    char *t = NULL;
    cr_assert_eq(ferry_audit_render(a, FERRY_AUDIT_OUT_TABLE, &t, NULL), 0);
    cr_assert(strstr(t, "1 finding suppressed"), "%s", t);
    cr_assert(strstr(t, BOB));
    cr_assert_null(strstr(t, ALICE), "%s", t);
    cr_assert(strstr(t, "2 findings: 1 critical"), "%s", t);
    free(t);
    ferry_audit_free(a);
}

Test(audit_suppress, fingerprint_and_glob_entries)
{
    ferry_audit *a0 = audit_with(TWO, NULL, NULL);
    char text[1024];
    snprintf(text, sizeof(text),
             "suppressions:\n"
             "- fingerprint: %s\n"
             "  reason: accepted\n"
             "  expires: 2026-12-01\n",
             find(a0, "AWS-OP-001", BOB)->fingerprint);
    ferry_audit *a = audit_with(TWO, text, NULL);
    cr_assert(audit_suppressed(a, find(a, "AWS-OP-001", BOB)));
    cr_assert(!audit_suppressed(a, find(a, "AWS-OP-001", ALICE)));
    ferry_audit_free(a);

    a = audit_with(TWO,
                   "suppressions:\n"
                   "- rule: AWS-OP-001\n"
                   "  resource_glob: 'arn:aws:iam::111122223333:user/*'\n"
                   "  cloud: aws\n"
                   "  account: '111122223333'\n"
                   "  reason: sandbox account\n"
                   "  expires: 2026-10-01T00:00:00Z\n",
                   NULL);
    cr_assert(audit_suppressed(a, find(a, "AWS-OP-001", BOB)));
    cr_assert(audit_suppressed(a, find(a, "AWS-OP-001", ALICE)));
    cr_assert(!audit_suppressed(a, find(a, "AWS-OP-011", "arn:aws:iam::111122223333:root")));
    cr_assert_eq(ferry_audit_count_at_least(a, FERRY_AUDIT_LOW), 0);
    cr_assert_eq(ferry_audit_count_at_least(a, FERRY_AUDIT_INFO), 1);
    ferry_audit_free(a);

    /* Another account: the glob matches the resource pattern, the account does not. */
    a = audit_with(TWO,
                   "suppressions:\n"
                   "- rule: AWS-OP-001\n"
                   "  resource_glob: 'arn:aws:iam::*:user/*'\n"
                   "  account: '999988887777'\n"
                   "  reason: other estate\n"
                   "  expires: 2026-10-01\n",
                   NULL);
    cr_assert_eq(ferry_audit_count_at_least(a, FERRY_AUDIT_CRITICAL), 2);
    ferry_audit_free(a);
    ferry_audit_free(a0);
}

Test(audit_suppress, json_form_is_accepted)
{
    ferry_audit *a =
        audit_with(TWO,
                   "{\"suppressions\": [{\"rule\": \"AWS-OP-001\", \"resource\": \"" BOB
                   "\", \"reason\": \"vendor\", \"expires\": \"2027-02-01\"}]}",
                   NULL);
    cr_assert(audit_suppressed(a, find(a, "AWS-OP-001", BOB)));
    ferry_audit_free(a);
}

Test(audit_suppress, expired_and_unused_entries_are_reported)
{
    ferry_audit *a = audit_with(TWO,
                                "suppressions:\n"
                                "  - rule: AWS-OP-001\n"
                                "    resource: " ALICE "\n"
                                "    reason: was temporary\n"
                                "    owner: alice\n"
                                "    expires: 2026-09-01\n"
                                "  - rule: AWS-OP-001\n"
                                "    resource: arn:aws:iam::111122223333:user/gone\n"
                                "    reason: deleted user\n"
                                "    expires: 2027-01-01\n",
                                NULL);
    cr_assert(!audit_suppressed(a, find(a, "AWS-OP-001", ALICE)), "expired: suppresses nothing");
    cr_assert_eq(ferry_audit_count_at_least(a, FERRY_AUDIT_CRITICAL), 2);
    json_t *j = render_json(a, FERRY_AUDIT_OUT_JSON), *sec = json_object_get(j, "suppressions");
    json_t *exp = json_object_get(sec, "expired"), *unused = json_object_get(sec, "unused");
    cr_assert_eq(json_array_size(exp), 1);
    cr_assert_eq(json_array_size(unused), 1);
    cr_assert_eq(jint(json_array_get(exp, 0), "line"), 2);
    cr_assert_eq(jint(json_array_get(exp, 0), "matched"), 1);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(exp, 0), "resource")), ALICE);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(exp, 0), "expires")),
                     "2026-09-01");
    cr_assert_eq(jint(json_array_get(unused, 0), "line"), 7);
    cr_assert_eq(jint(json_object_get(j, "summary"), "suppressed"), 0);
    json_decref(j);

    j = render_json(a, FERRY_AUDIT_OUT_SARIF);
    json_t *notes = json_object_get(
        json_array_get(
            json_object_get(json_array_get(json_object_get(j, "runs"), 0), "invocations"), 0),
        "toolExecutionNotifications");
    cr_assert_eq(json_array_size(notes), 2);
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_object_get(json_array_get(notes, 0), "descriptor"), "id")),
                     "ferry/suppression-expired");
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_object_get(json_array_get(notes, 1), "descriptor"), "id")),
                     "ferry/suppression-unused");
    json_decref(j);

    char *t = NULL;
    cr_assert_eq(ferry_audit_render(a, FERRY_AUDIT_OUT_TABLE, &t, NULL), 0);
    cr_assert(strstr(t, "expired suppression sup.yaml:2: AWS-OP-001 " ALICE), "%s", t);
    cr_assert(strstr(t, "unused suppression sup.yaml:7: AWS-OP-001 "
                        "arn:aws:iam::111122223333:user/gone — matched no finding"),
              "%s", t);
    free(t);
    ferry_audit_free(a);
}

/* Each refused file: the code, and the message names the file, the line and the problem. */
static void refused(const char *text, const char *want)
{
    ferry_audit *a = run_new();
    char err[1024] = "";
    int r = sup(a, text, err, sizeof(err));
    cr_assert(r == -FERRY_EMALFORMED || r == -FERRY_ETOOBIG, "r=%d for: %s", r, text);
    cr_assert(strstr(err, want), "message '%s' lacks '%s'", err, want);
    ferry_audit_free(a);
}

Test(audit_suppress, refused_files_name_line_and_problem)
{
    refused("suppressions:\n- rule: AWS-OP-001\n  resource: x\n  expires: 2027-01-01\n",
            "sup.yaml:2: suppression without a reason");
    refused("suppressions:\n- rule: AWS-OP-001\n  resource: x\n  reason: '  '\n"
            "  expires: 2027-01-01\n",
            "sup.yaml:4: reason: empty value");
    refused("suppressions:\n- rule: AWS-OP-001\n  resource: x\n  reason: ok\n",
            "sup.yaml:2: suppression without expires");
    refused("suppressions:\n- rule: AWS-OP-001\n  resource: x\n  reason: ok\n"
            "  expires: 2027-09-23\n",
            "sup.yaml:2: expires 2027-09-23 is more than 366 days after the run's clock");
    refused("suppressions:\n- rule: AWS-OP-001\n  resource: x\n  reason: ok\n"
            "  expires: next year\n",
            "sup.yaml:2: expires: 'next year' is not a date");
    refused("suppressions:\n- rule: AWS-OP-999\n  resource: x\n  reason: ok\n"
            "  expires: 2027-01-01\n",
            "sup.yaml:2: rule: unknown rule id 'AWS-OP-999'");
    refused("suppressions:\n- rule: AWS-OP-001\n  resource: x\n  reason: ok\n"
            "  expire: 2027-01-01\n",
            "sup.yaml:5: unknown member 'expire'");
    refused("suppressions:\n- rule: AWS-OP-001\n  reason: ok\n  expires: 2027-01-01\n",
            "sup.yaml:2: suppression needs rule and resource");
    refused("suppressions:\n- rule: AWS-OP-001\n  resource_glob: '**'\n  reason: ok\n"
            "  expires: 2027-01-01\n",
            "sup.yaml:3: resource_glob: '**' matches every resource");
    refused("suppressions:\n- rule: AWS-OP-001\n  resource: x\n  resource: y\n  reason: ok\n"
            "  expires: 2027-01-01\n",
            "sup.yaml:4: member 'resource' given twice");
    refused("suppressions:\n- rule: AWS-OP-001\n  resource: [x]\n  reason: ok\n"
            "  expires: 2027-01-01\n",
            "sup.yaml:3: resource: expected a single value");
    refused("suppressions:\n- fingerprint: abc\n  reason: ok\n  expires: 2027-01-01\n",
            "sup.yaml:2: fingerprint: expected 64 lowercase hex digits");
    refused("suppressions:\n- &e\n  rule: AWS-OP-001\n  resource: x\n  reason: ok\n"
            "  expires: 2027-01-01\n- *e\n",
            "sup.yaml:7: aliases are not accepted");
    refused("suppressions: []\n---\nsuppressions: []\n", "sup.yaml:2: a second document");
    refused("rules: []\n", "sup.yaml:1: expected the members suppressions and version");
    refused("- rule: AWS-OP-001\n", "sup.yaml:1: expected a mapping with a suppressions list");
    refused("version: 2\nsuppressions: []\n", "sup.yaml:1: version: expected 1");
    refused("suppressions:\n- rule: AWS-OP-001\n  resource: x: y\n", "sup.yaml:3: malformed YAML");
    refused("", "sup.yaml: empty");
    refused("suppressions:\n- rule: AWS-OP-001\n  resource: \"a\\x1bb\"\n  reason: ok\n"
            "  expires: 2027-01-01\n",
            "sup.yaml:3: resource: control characters are not accepted");
}

Test(audit_suppress, a_refused_file_adds_nothing)
{
    ferry_audit *a = run_new();
    char err[512];
    cr_assert_lt(sup(a,
                     "suppressions:\n- rule: AWS-OP-001\n  resource: " ALICE "\n  reason: ok\n"
                     "  expires: 2027-01-01\n- rule: AWS-OP-001\n  resource: x\n",
                     err, sizeof(err)),
                 0);
    cr_assert_eq(ferry_audit_add_input(a, "in.json", TWO, strlen(TWO), NULL, err, sizeof(err)), 0);
    cr_assert_eq(ferry_audit_finish(a, err, sizeof(err)), 0);
    cr_assert(!audit_suppressed(a, find(a, "AWS-OP-001", ALICE)));
    ferry_audit_free(a);
}

/* ---- baseline ------------------------------------------------------------------------------- */

static char *report_of(const char *export)
{
    ferry_audit *a = audit_with(export, NULL, NULL);
    char *s = NULL;
    cr_assert_eq(ferry_audit_render(a, FERRY_AUDIT_OUT_JSON, &s, NULL), 0);
    ferry_audit_free(a);
    return s;
}

Test(audit_suppress, baseline_counts_only_new_findings)
{
    char *base = report_of(TWO);
    ferry_audit *a = audit_with(TWO, NULL, base);
    ferry_audit_finding_state st;
    cr_assert_eq(ferry_audit_count_at_least(a, FERRY_AUDIT_INFO), 0, "nothing new");
    ferry_audit_finding_status(a, find(a, "AWS-OP-001", ALICE), &st);
    cr_assert_eq(st.baseline, FERRY_AUDIT_BASELINE_UNCHANGED);
    ferry_audit_free(a);

    a = audit_with(THREE, NULL, base);
    cr_assert_eq(ferry_audit_count_at_least(a, FERRY_AUDIT_LOW), 1, "carol is new");
    ferry_audit_finding_status(a, find(a, "AWS-OP-001", CAROL), &st);
    cr_assert_eq(st.baseline, FERRY_AUDIT_BASELINE_NEW);
    json_t *j = render_json(a, FERRY_AUDIT_OUT_JSON);
    cr_assert_str_eq(
        json_string_value(json_object_get(json_finding(j, "AWS-OP-001", CAROL), "baseline")),
        "new");
    cr_assert_str_eq(
        json_string_value(json_object_get(json_finding(j, "AWS-OP-001", BOB), "baseline")),
        "unchanged");
    json_t *b = json_object_get(j, "baseline");
    cr_assert_eq(jint(b, "new"), 1);
    cr_assert_eq(jint(b, "unchanged"), 3);
    cr_assert_eq(jint(b, "absent"), 0);
    json_decref(j);
    j = render_json(a, FERRY_AUDIT_OUT_SARIF);
    json_t *res;
    size_t i, n_new = 0;
    json_array_foreach(json_object_get(json_array_get(json_object_get(j, "runs"), 0), "results"), i,
                       res)
    {
        const char *bs = json_string_value(json_object_get(res, "baselineState"));
        cr_assert(bs && (strcmp(bs, "new") == 0 || strcmp(bs, "unchanged") == 0));
        n_new += strcmp(bs, "new") == 0;
    }
    cr_assert_eq(n_new, 1);
    json_decref(j);
    ferry_audit_free(a);

    /* bob fixed: absent from the run, listed as absent. */
    a = audit_with(ONE, NULL, base);
    j = render_json(a, FERRY_AUDIT_OUT_JSON);
    b = json_object_get(j, "baseline");
    cr_assert_eq(jint(b, "absent"), 1);
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(b, "absent_findings"), 0), "resource")),
                     BOB);
    json_decref(j);
    ferry_audit_free(a);
    free(base);
}

Test(audit_suppress, suppressed_new_finding_does_not_count)
{
    char *base = report_of(TWO);
    ferry_audit *a = audit_with(THREE,
                                "suppressions:\n- rule: AWS-OP-001\n  resource: " CAROL "\n"
                                "  reason: onboarding\n  expires: 2026-10-15\n",
                                base);
    cr_assert_eq(ferry_audit_count_at_least(a, FERRY_AUDIT_INFO), 0);
    ferry_audit_free(a);
    free(base);
}

static void base_refused(const char *text, const char *want)
{
    ferry_audit *a = run_new();
    char err[1024] = "";
    int r = ferry_audit_set_baseline(a, "b.json", text, strlen(text), err, sizeof(err));
    cr_assert_eq(r, -FERRY_EMALFORMED, "r=%d for %s", r, text);
    cr_assert(strstr(err, want), "message '%s' lacks '%s'", err, want);
    ferry_audit_free(a);
}

Test(audit_suppress, baseline_must_be_a_report)
{
    base_refused("{\"UserDetailList\": []}", "b.json:1: not a ferry audit report");
    base_refused("{\n \"schema\": \"ferry.audit/v2\",\n \"findings\": []}",
                 "b.json:2: not a ferry audit report");
    base_refused("[1]", "b.json:1: not a ferry audit report");
    base_refused("{\"schema\": \"ferry.audit/v1\"}", "findings: expected an array");
    base_refused("{\"schema\": \"ferry.audit/v1\",\n\"findings\": [\n{\"fingerprint\": \"x\", "
                 "\"rule_id\": \"AWS-OP-001\", \"resource\": \"r\", \"severity\": \"high\"}]}",
                 "b.json:3: findings[0]: fingerprint: expected 64 lowercase hex digits");
    base_refused("{\"schema\": \"ferry.audit/v1\", \"findings\": [7]}",
                 "findings[0]: expected a finding object");
    base_refused("{\"schema\": \"ferry.audit/v1\", \"findings\": [", "b.json:1:");
    base_refused("{\"schema\": \"ferry.audit/v1\", \"schema\": \"ferry.audit/v1\", "
                 "\"findings\": []}",
                 "malformed JSON");
}

/* ---- NDJSON and CSV ------------------------------------------------------------------------- */

Test(audit_suppress, ndjson_one_finding_per_line_then_summary)
{
    ferry_audit *a = audit_with(THREE, NULL, NULL);
    char *s = NULL, *save = NULL;
    size_t len = 0, lines = 0, findings = 0;
    cr_assert_eq(ferry_audit_render(a, FERRY_AUDIT_OUT_NDJSON, &s, &len), 0);
    cr_assert_eq(strlen(s), len);
    cr_assert_neq(s[len - 1], '\n', "the caller ends the last line");
    for (char *l = strtok_r(s, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        json_error_t e;
        json_t *j = json_loads(l, JSON_REJECT_DUPLICATES, &e);
        cr_assert_not_null(j, "line %zu: %s", lines + 1, e.text);
        lines++;
        const char *rec = json_string_value(json_object_get(j, "record"));
        if (strcmp(rec, "finding") == 0) {
            findings++;
            cr_assert(json_is_string(json_object_get(j, "fingerprint")));
            cr_assert(json_is_object(json_object_get(j, "evidence")));
        } else {
            cr_assert_str_eq(rec, "summary");
            cr_assert_eq(lines, 5, "the summary is the last line");
            cr_assert_str_eq(json_string_value(json_object_get(j, "schema")), "ferry.audit/v1");
            cr_assert_eq(jint(json_object_get(j, "summary"), "critical"), 3);
            cr_assert_null(json_object_get(j, "findings"));
        }
        json_decref(j);
    }
    cr_assert_eq(findings, 4);
    cr_assert_eq(lines, 5);
    free(s);
    ferry_audit_free(a);
}

/* Split one CSV record (RFC 4180, every field quoted) at *p into fields; returns the count. */
static size_t csv_record(const char **p, char fields[][512], size_t max)
{
    size_t n = 0;
    const char *s = *p;
    while (n < max) {
        size_t k = 0;
        cr_assert_eq(*s, '"', "field %zu not quoted: %.40s", n, s);
        s++;
        for (;;) {
            if (s[0] == '"' && s[1] == '"') {
                fields[n][k++] = '"';
                s += 2;
            } else if (s[0] == '"') {
                s++;
                break;
            } else {
                cr_assert_neq(*s, '\0');
                if (k < 511)
                    fields[n][k++] = *s;
                s++;
            }
        }
        fields[n++][k] = '\0';
        if (*s == ',') {
            s++;
            continue;
        }
        cr_assert(s[0] == '\r' && s[1] == '\n', "record ends with CRLF");
        s += 2;
        break;
    }
    *p = s;
    return n;
}

Test(audit_suppress, csv_quotes_and_defuses_formulas)
{
    ferry_audit *a = audit_with(TWO,
                                "suppressions:\n"
                                "- rule: AWS-OP-001\n"
                                "  resource: " ALICE "\n"
                                "  reason: '=HYPERLINK(\"http://x.example/\",\"ok\")'\n"
                                "  owner: '@ops'\n"
                                "  expires: 2027-01-01\n"
                                "- rule: AWS-OP-001\n"
                                "  resource: '-not-a-user'\n"
                                "  reason: '+1 unused'\n"
                                "  expires: 2027-01-01\n",
                                NULL);
    char *s = NULL, f[17][512];
    const char *p;
    cr_assert_eq(ferry_audit_render(a, FERRY_AUDIT_OUT_CSV, &s, NULL), 0);
    p = s;
    cr_assert_eq(csv_record(&p, f, 17), 17);
    cr_assert_str_eq(f[0], "record");
    cr_assert_str_eq(f[11], "suppression_reason");
    size_t rows = 0;
    bool saw_alice = false, saw_unused = false;
    while (*p) {
        cr_assert_eq(csv_record(&p, f, 17), 17);
        rows++;
        if (strcmp(f[0], "finding") == 0 && strcmp(f[6], ALICE) == 0) {
            saw_alice = true;
            cr_assert_str_eq(f[10], "yes");
            cr_assert_str_eq(f[11], "'=HYPERLINK(\"http://x.example/\",\"ok\")");
            cr_assert_str_eq(f[12], "'@ops");
            cr_assert_str_eq(f[13], "2027-01-01");
            cr_assert_str_eq(f[14], "sup.yaml:2");
            cr_assert_eq(f[16][0], '{', "evidence JSON");
        }
        if (strcmp(f[0], "unused-suppression") == 0) {
            saw_unused = true;
            cr_assert_str_eq(f[6], "'-not-a-user");
            cr_assert_str_eq(f[11], "'+1 unused");
            cr_assert_str_eq(f[14], "sup.yaml:7");
        }
    }
    cr_assert(saw_alice && saw_unused);
    cr_assert_eq(rows, 4, "3 findings and the unused suppression");
    free(s);
    ferry_audit_free(a);
}

Test(audit_suppress, loader_formats_table)
{
    size_t n = 0;
    for (const char *f; (f = audit_loader_format(n)) != NULL; n++)
        cr_assert(ferry_audit_format_known(f), "%s", f);
    cr_assert_geq(n, 3);
    cr_assert_str_eq(audit_loader_format(0), "aws-authz");
}

/* ---- allocation failures -------------------------------------------------------------------- *
 * As in test_audit.c: the Nth allocation of the process fails, for N = 0, 1, 2, ... until a
 * whole run (suppressions, baseline, input, finish, the five outputs) completes without an
 * injected failure. Each run fails with -ENOMEM (-FERRY_ECRYPTO when OpenSSL's digest could not
 * allocate) or prints exactly the outputs of an undisturbed run. */
#define FERRY_ALLOCFAIL_NTH 1
#include "allocfail.h"
#include "audit-oom.h"
#ifdef HAVE_ALLOC_INJECTION
static const char OOM_SUP[] = "suppressions:\n"
                              "- rule: AWS-OP-001\n"
                              "  resource: " ALICE "\n"
                              "  reason: accepted\n"
                              "  owner: me\n"
                              "  expires: 2026-12-01\n"
                              "- rule: AWS-OP-001\n"
                              "  resource_glob: 'arn:aws:iam::*:user/c*'\n"
                              "  reason: expired\n"
                              "  expires: 2026-09-01\n"
                              "- rule: AWS-OP-011\n"
                              "  resource: nothing\n"
                              "  reason: unused\n"
                              "  expires: 2026-12-01\n";

static int oom_run(const char *base, char **ret)
{
    ferry_audit_options o = {.now = NOW};
    ferry_audit *a = NULL;
    char *out = NULL, err[256];
    size_t total = 0;
    int r = ferry_audit_new(&o, &a);

    *ret = NULL;
    if (r == 0)
        r = sup(a, OOM_SUP, err, sizeof(err));
    if (r == 0)
        r = ferry_audit_set_baseline(a, "b.json", base, strlen(base), err, sizeof(err));
    if (r == 0)
        r = ferry_audit_add_input(a, "in.json", THREE, strlen(THREE), NULL, err, sizeof(err));
    if (r == 0)
        r = ferry_audit_finish(a, err, sizeof(err));
    for (int k = FERRY_AUDIT_OUT_TABLE; r == 0 && k <= FERRY_AUDIT_OUT_CSV; k++) {
        char *s = NULL, *n;
        size_t len = 0;
        r = ferry_audit_render(a, (ferry_audit_output)k, &s, &len);
        if (r < 0)
            break;
        n = realloc(out, total + len + 1);
        if (!n) {
            free(s);
            r = -ENOMEM;
            break;
        }
        out = n;
        memcpy(out + total, s, len + 1);
        total += len;
        free(s);
    }
    ferry_audit_free(a);
    if (r == 0)
        *ret = out;
    else
        free(out);
    return r;
}

Test(audit_suppress, allocation_failures_fail_or_change_nothing)
{
    char *base = report_of(TWO), *ref = NULL;

    cr_assert_eq(oom_run(base, &ref), 0);
    cr_assert(strstr(ref, "\"suppressed\"") && strstr(ref, "unused-suppression") &&
                  strstr(ref, "\"record\":\"summary\"") && strstr(ref, "baselineState"),
              "the reference run covers the features: %s", ref);
    AUDIT_OOM_SWEEP(200000, ref, oom_run(base, &out));
    free(ref);
    free(base);
}
#endif
