/* tests/unit/test_audit_shadow.c - shadow identities of `ferry audit` (src/lib/audit/shadow.c):
 * against the identities ferry's policies declare (--policies, --issuer), from
 * AWS exports and from identities noted directly as the GCP, Azure and Kubernetes loaders note
 * them; X-005 from ferry's own audit log (--usage), written here with the auditlog module.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "audit-internal.h"
#include "ferry/audit.h"
#include "ferry/auditlog.h"
#include "ferry/error.h"
#include "ferry/jose.h"
#include "ferry/policy.h"

#define NOW INT64_C(1790000000) /* 2026-09-21 */
#define DAY INT64_C(86400)
#define ACCT "111122223333"
#define TENANT "3f2b6c1e-9a4d-4e57-8c21-5d0e7b9a1f34"
#define CLIENT "9d4e8a27-1c3b-4f60-a5d2-7e81b0c4f9a6"
#define ISSUER "https://ferry.example.com"

static const char POLICIES[] =
    "{\"version\": 1, \"policies\": ["
    " {\"id\": \"gha-publish\", \"match\": {\"issuer\": "
    "\"https://token.actions.githubusercontent.com\", \"subject\": "
    "\"repo:acme/models:ref:refs/heads/main\"}, \"grant\": {\"max_ttl\": 900, \"aws\": "
    "[{\"role_arn\": \"arn:aws:iam::" ACCT ":role/ml/declared\", \"session_duration\": 900}]}},"
    " {\"id\": \"k8s-inference\", \"match\": {\"issuer\": \"https://oidc.eks.example/id/ABC\", "
    "\"subject_glob\": \"system:serviceaccount:inference:llm-*\"}, \"grant\": {\"max_ttl\": 900, "
    "\"secrets\": [\"vault:kv/data/inference/hf\"], \"gcp\": [{\"service_account\": "
    "\"llm-server@ml-prod-417203.iam.gserviceaccount.com\"}], \"azure\": [{\"tenant_id\": \"" TENANT
    "\", "
    "\"client_id\": \"" CLIENT "\"}]}},"
    " {\"id\": \"k8s-trainer\", \"match\": {\"issuer\": \"https://oidc.eks.example/id/ABC\", "
    "\"subject\": \"system:serviceaccount:ml:trainer\"}, \"grant\": {\"max_ttl\": 900, \"scopes\": "
    "[\"datasets:read\"]}}"
    "]}";

static ferry_policy_set *policy_set(void)
{
    ferry_policy_builder *b = NULL;
    ferry_policy_problems *pr = NULL;
    ferry_policy_set *set = NULL;

    cr_assert_eq(ferry_policy_problems_new(&pr), 0);
    cr_assert_eq(ferry_policy_builder_new(&b), 0);
    cr_assert_eq(ferry_policy_builder_add_buffer(b, "p.json", POLICIES, strlen(POLICIES), pr), 0,
                 "%s",
                 ferry_policy_problems_count(pr) ? ferry_policy_problems_get(pr, 0)->reason : "");
    cr_assert_eq(ferry_policy_builder_finish(b, &set, pr), 0);
    ferry_policy_builder_free(b);
    ferry_policy_problems_free(pr);
    return set;
}

static ferry_audit *run_new(bool with_policies, const char *issuer)
{
    ferry_audit_options o = {.now = NOW};
    ferry_audit *a = NULL;
    cr_assert_eq(ferry_audit_new(&o, &a), 0);
    if (with_policies) {
        ferry_policy_set *set = policy_set();
        cr_assert_eq(ferry_audit_set_policies(a, set, issuer), 0);
        ferry_policy_set_unref(set);
    }
    return a;
}

static void add(ferry_audit *a, const char *name, const char *text)
{
    char err[512] = "";
    cr_assert_eq(ferry_audit_add_input(a, name, text, strlen(text), NULL, err, sizeof(err)), 0,
                 "%s", err);
}

static void finish(ferry_audit *a)
{
    char err[512] = "";
    cr_assert_eq(ferry_audit_finish(a, err, sizeof(err)), 0, "%s", err);
}

/* The finding of rule on resource, or NULL; *ret_n counts the rule's findings in the run. */
static const ferry_audit_finding *find(ferry_audit *a, const char *rule, const char *resource,
                                       size_t *ret_n)
{
    const ferry_audit_finding *fs, *hit = NULL;
    size_t n = ferry_audit_findings(a, &fs), k = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(fs[i].rule_id, rule) == 0) {
            k++;
            if (!resource || strcmp(fs[i].resource, resource) == 0)
                hit = hit ? hit : &fs[i];
        }
    if (ret_n)
        *ret_n = k;
    return hit;
}

static size_t count_rule(ferry_audit *a, const char *rule)
{
    size_t n = 0;
    (void)find(a, rule, NULL, &n);
    return n;
}

static void note(ferry_audit *a, const char *cloud, const char *account, const char *id,
                 const char *alias, unsigned flags, const char *const *issuers)
{
    audit_identity i = {.cloud = cloud,
                        .account = account,
                        .id = id,
                        .alias = alias,
                        .flags = flags,
                        .issuers = issuers,
                        .source = "direct"};
    cr_assert_eq(audit_identity_note(a, &i), 0);
}

/* One role per case: declared and used; undeclared and used; undeclared and unused; undeclared,
 * unused, trusting ferry's issuer; a service-linked role; an SSO permission-set role. */
static const char ROLES[] =
    "{\"RoleDetailList\": ["
    " {\"RoleName\": \"declared\", \"Path\": \"/ml/\", \"Arn\": \"arn:aws:iam::" ACCT
    ":role/ml/declared\", \"CreateDate\": \"2020-01-01T00:00:00Z\", \"RoleLastUsed\": "
    "{\"LastUsedDate\": \"2026-09-20T00:00:00Z\"}},"
    " {\"RoleName\": \"batch\", \"Path\": \"/\", \"Arn\": \"arn:aws:iam::" ACCT
    ":role/batch\", \"CreateDate\": \"2020-01-01T00:00:00Z\", \"RoleLastUsed\": "
    "{\"LastUsedDate\": \"2026-09-01T00:00:00Z\"}},"
    " {\"RoleName\": \"old\", \"Path\": \"/\", \"Arn\": \"arn:aws:iam::" ACCT
    ":role/old\", \"CreateDate\": \"2020-01-01T00:00:00Z\", \"RoleLastUsed\": {}},"
    " {\"RoleName\": \"via-ferry\", \"Path\": \"/\", \"Arn\": \"arn:aws:iam::" ACCT
    ":role/via-ferry\", \"CreateDate\": \"2020-01-01T00:00:00Z\", \"RoleLastUsed\": {}, "
    "\"AssumeRolePolicyDocument\": {\"Version\": \"2012-10-17\", \"Statement\": [{\"Effect\": "
    "\"Allow\", \"Principal\": {\"Federated\": \"arn:aws:iam::" ACCT
    ":oidc-provider/ferry.example.com\"}, \"Action\": \"sts:AssumeRoleWithWebIdentity\", "
    "\"Condition\": {\"StringEquals\": {\"ferry.example.com:sub\": \"job-1\"}}}]}},"
    " {\"RoleName\": \"AWSServiceRoleForSupport\", \"Path\": \"/aws-service-role/support."
    "amazonaws.com/\", \"Arn\": \"arn:aws:iam::" ACCT ":role/aws-service-role/support."
    "amazonaws.com/AWSServiceRoleForSupport\", \"CreateDate\": \"2020-01-01T00:00:00Z\", "
    "\"RoleLastUsed\": {\"LastUsedDate\": \"2026-09-20T00:00:00Z\"}},"
    " {\"RoleName\": \"AWSReservedSSO_Admin_0123\", \"Path\": "
    "\"/aws-reserved/sso.amazonaws.com/\", \"Arn\": \"arn:aws:iam::" ACCT
    ":role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_0123\", \"CreateDate\": "
    "\"2020-01-01T00:00:00Z\", \"RoleLastUsed\": {\"LastUsedDate\": \"2026-09-20T00:00:00Z\"}}"
    "]}";

Test(audit_shadow, aws_roles_declared_used_unused_managed)
{
    ferry_audit *a = run_new(true, ISSUER);
    const ferry_audit_finding *f;

    add(a, "roles.json", ROLES);
    finish(a);
    cr_assert_null(find(a, "X-004", "arn:aws:iam::" ACCT ":role/ml/declared", NULL));
    f = find(a, "X-004", "arn:aws:iam::" ACCT ":role/batch", NULL);
    cr_assert_not_null(f, "an undeclared role used within --unused-days is broker-unmanaged");
    cr_assert_eq(f->severity, FERRY_AUDIT_LOW);
    cr_assert_str_eq(f->cloud, "aws");
    cr_assert_str_eq(f->account, ACCT);
    cr_assert_str_eq(f->source, "roles.json");
    cr_assert_null(find(a, "X-004", "arn:aws:iam::" ACCT ":role/old", NULL),
                   "an unused federated role has no active credentials");
    f = find(a, "X-004", "arn:aws:iam::" ACCT ":role/via-ferry", NULL);
    cr_assert_not_null(f, "a role trusting ferry's issuer that no policy grants");
    cr_assert_eq(f->severity, FERRY_AUDIT_MEDIUM);
    cr_assert(strstr(f->evidence, "\"trusts_ferry_issuer\":true"), "%s", f->evidence);
    cr_assert(strstr(f->evidence, "\"ferry_issuer\":\"" ISSUER "\""), "%s", f->evidence);
    /* Service-linked and SSO roles are managed; roles have no static key (no X-003). */
    cr_assert_eq(count_rule(a, "X-004"), 2);
    cr_assert_eq(count_rule(a, "X-003"), 0);
    ferry_audit_free(a);
}

Test(audit_shadow, issuer_trust_without_issuer_option_is_ordinary)
{
    ferry_audit *a = run_new(true, NULL);
    add(a, "roles.json", ROLES);
    finish(a);
    /* Without --issuer the unused via-ferry role is just an unused federated role. */
    cr_assert_null(find(a, "X-004", "arn:aws:iam::" ACCT ":role/via-ferry", NULL));
    cr_assert_eq(count_rule(a, "X-004"), 1);
    ferry_audit_free(a);
}

Test(audit_shadow, issuer_forms_compare_equal)
{
    /* URL with a trailing slash and upper-case host, against a provider ARN and a bare host. */
    static const char *const arn[] = {"arn:aws:iam::" ACCT ":oidc-provider/ferry.example.com",
                                      NULL};
    static const char *const host[] = {"FERRY.example.com/", NULL};
    static const char *const other[] = {"https://ferry.example.com/other", NULL};
    ferry_audit *a = run_new(true, "https://Ferry.Example.com/");

    note(a, "gcp", "p", "a@p.iam.gserviceaccount.com", NULL, AUDIT_ID_FEDERATED, arn);
    note(a, "azure", TENANT, "11111111-1111-1111-1111-111111111111", NULL, AUDIT_ID_FEDERATED,
         host);
    note(a, "aws", ACCT, "arn:aws:iam::" ACCT ":role/x", NULL, AUDIT_ID_FEDERATED, other);
    finish(a);
    cr_assert_eq(find(a, "X-004", "a@p.iam.gserviceaccount.com", NULL)->severity,
                 FERRY_AUDIT_MEDIUM);
    cr_assert_eq(find(a, "X-004", "11111111-1111-1111-1111-111111111111", NULL)->severity,
                 FERRY_AUDIT_MEDIUM);
    cr_assert_null(find(a, "X-004", "arn:aws:iam::" ACCT ":role/x", NULL),
                   "another path on the same host is another issuer");
    ferry_audit_free(a);
}

static const char CREDREPORT[] =
    "user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,"
    "password_next_rotation,mfa_active,access_key_1_active,access_key_1_last_rotated,"
    "access_key_1_last_used_date,access_key_1_last_used_region,access_key_1_last_used_service,"
    "access_key_2_active,access_key_2_last_rotated,access_key_2_last_used_date,"
    "access_key_2_last_used_region,access_key_2_last_used_service,cert_1_active,"
    "cert_1_last_rotated,cert_2_active,cert_2_last_rotated\n"
    "<root_account>,arn:aws:iam::" ACCT ":root,2019-01-01T00:00:00+00:00,not_supported,N/A,"
    "not_supported,not_supported,true,false,N/A,N/A,N/A,N/A,false,N/A,N/A,N/A,N/A,false,N/A,"
    "false,N/A\n"
    "ci-bot,arn:aws:iam::" ACCT ":user/ci-bot,2019-01-01T00:00:00+00:00,false,N/A,N/A,N/A,"
    "false,true,2026-08-01T00:00:00+00:00,2026-09-19T00:00:00+00:00,us-east-1,s3,false,N/A,N/A,"
    "N/A,N/A,false,N/A,false,N/A\n"
    "alice,arn:aws:iam::" ACCT ":user/alice,2019-01-01T00:00:00+00:00,true,"
    "2026-09-19T00:00:00+00:00,N/A,N/A,true,true,2026-08-01T00:00:00+00:00,"
    "2026-09-19T00:00:00+00:00,us-east-1,s3,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A\n"
    "nokeys,arn:aws:iam::" ACCT ":user/nokeys,2019-01-01T00:00:00+00:00,false,N/A,N/A,N/A,"
    "false,false,N/A,N/A,N/A,N/A,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A\n";

Test(audit_shadow, aws_users_from_the_credential_report)
{
    ferry_audit *a = run_new(true, ISSUER);
    const ferry_audit_finding *f;

    add(a, "report.csv", CREDREPORT);
    finish(a);
    f = find(a, "X-004", "arn:aws:iam::" ACCT ":user/ci-bot", NULL);
    cr_assert_not_null(f);
    cr_assert(strstr(f->evidence, "\"credentials\":[\"access key\"]"), "%s", f->evidence);
    f = find(a, "X-003", "arn:aws:iam::" ACCT ":user/ci-bot", NULL);
    cr_assert_not_null(f, "a machine user's key on a cloud ferry brokers");
    cr_assert_eq(f->severity, FERRY_AUDIT_MEDIUM);
    cr_assert(strstr(f->evidence, "\"declared\":false"), "%s", f->evidence);
    /* A person (console password), the root account and a user without keys: never shadow. */
    cr_assert_eq(count_rule(a, "X-004"), 1);
    cr_assert_eq(count_rule(a, "X-003"), 1);
    ferry_audit_free(a);
}

Test(audit_shadow, nothing_without_policies)
{
    ferry_audit *a = run_new(false, NULL);
    add(a, "roles.json", ROLES);
    add(a, "report.csv", CREDREPORT);
    note(a, "gcp", "p", "x@p.iam.gserviceaccount.com", NULL, AUDIT_ID_STATIC_CRED, NULL);
    finish(a);
    cr_assert_null(a->shadow, "nothing is kept without --policies");
    cr_assert_eq(count_rule(a, "X-003") + count_rule(a, "X-004") + count_rule(a, "X-005"), 0);
    /* The AWS rules ran as usual. */
    cr_assert_not_null(find(a, "AWS-SH-006", "arn:aws:iam::" ACCT ":user/ci-bot", NULL));
    ferry_audit_free(a);
}

Test(audit_shadow, gcp_azure_k8s_noted_directly)
{
    static const char *const eks[] = {"https://oidc.eks.example/id/ABC", NULL};
    static const char *const other_cluster[] = {"https://oidc.eks.example/id/OTHER", NULL};
    ferry_audit *a = run_new(true, ISSUER);
    const ferry_audit_finding *f;

    /* GCP: declared (upper case in the export) with a user-managed key: X-003 only. */
    note(a, "gcp", "ml-prod", "LLM-SERVER@ml-prod-417203.iam.gserviceaccount.com", "1234567890",
         AUDIT_ID_STATIC_CRED | AUDIT_ID_FEDERATED | AUDIT_ID_USED, NULL);
    /* GCP: undeclared with a key; disabled or a service agent: nothing. */
    note(a, "gcp", "ml-prod", "etl@ml-prod.iam.gserviceaccount.com", NULL, AUDIT_ID_STATIC_CRED,
         NULL);
    note(a, "gcp", "ml-prod", "off@ml-prod.iam.gserviceaccount.com", NULL,
         AUDIT_ID_STATIC_CRED | AUDIT_ID_DISABLED, NULL);
    note(a, "gcp", "ml-prod", "service-1@gcp-sa-aiplatform.iam.gserviceaccount.com", NULL,
         AUDIT_ID_STATIC_CRED | AUDIT_ID_MANAGED, NULL);
    /* Azure: declared by appId in its tenant; by objectId alias no; another tenant's app with
     * the same client id is another app. */
    note(a, "azure", TENANT, CLIENT, "aaaaaaaa-0000-0000-0000-000000000000",
         AUDIT_ID_FEDERATED | AUDIT_ID_USED, NULL);
    note(a, "azure", "00000000-0000-0000-0000-000000000001", CLIENT, NULL,
         AUDIT_ID_FEDERATED | AUDIT_ID_USED, NULL);
    note(a, "azure", TENANT, "22222222-2222-2222-2222-222222222222", NULL,
         AUDIT_ID_STATIC_CRED | AUDIT_ID_USED, NULL);
    /* Kubernetes: a glob and an exact subject declare; another namespace, or the same name
     * on a cluster with another issuer, does not; a used SA without static token is X-004. */
    note(a, "k8s", "ml-prod", "system:serviceaccount:inference:llm-server", NULL,
         AUDIT_ID_FEDERATED | AUDIT_ID_USED | AUDIT_ID_STATIC_CRED, eks);
    note(a, "k8s", "ml-prod", "system:serviceaccount:ml:trainer", NULL,
         AUDIT_ID_FEDERATED | AUDIT_ID_USED, NULL);
    note(a, "k8s", "ml-prod", "system:serviceaccount:ml:etl", NULL,
         AUDIT_ID_FEDERATED | AUDIT_ID_USED, NULL);
    note(a, "k8s", "other", "system:serviceaccount:inference:llm-server", NULL,
         AUDIT_ID_FEDERATED | AUDIT_ID_USED, other_cluster);
    note(a, "k8s", "ml-prod", "system:serviceaccount:kube-system:coredns", NULL,
         AUDIT_ID_FEDERATED | AUDIT_ID_USED | AUDIT_ID_MANAGED, NULL);
    finish(a);

    cr_assert_null(find(a, "X-004", "LLM-SERVER@ml-prod-417203.iam.gserviceaccount.com", NULL));
    f = find(a, "X-003", "LLM-SERVER@ml-prod-417203.iam.gserviceaccount.com", NULL);
    cr_assert_not_null(f, "a declared identity with a static key");
    cr_assert_str_eq(f->cloud, "gcp");
    cr_assert(strstr(f->evidence, "\"declared\":true"), "%s", f->evidence);
    cr_assert(strstr(f->evidence, "\"credential\":\"user-managed key\""), "%s", f->evidence);
    cr_assert_not_null(find(a, "X-004", "etl@ml-prod.iam.gserviceaccount.com", NULL));
    cr_assert_not_null(find(a, "X-003", "etl@ml-prod.iam.gserviceaccount.com", NULL));
    cr_assert_null(find(a, "X-004", "off@ml-prod.iam.gserviceaccount.com", NULL));
    cr_assert_null(find(a, "X-003", "off@ml-prod.iam.gserviceaccount.com", NULL));

    f = find(a, "X-004", CLIENT, NULL);
    cr_assert_not_null(f, "the same client id in another tenant is not declared");
    cr_assert_str_eq(f->account, "00000000-0000-0000-0000-000000000001");
    cr_assert_eq(count_rule(a, "X-004") >= 1, true);
    cr_assert_not_null(find(a, "X-003", "22222222-2222-2222-2222-222222222222", NULL));

    cr_assert_null(find(a, "X-004", "system:serviceaccount:ml:trainer", NULL));
    cr_assert_not_null(find(a, "X-003", "system:serviceaccount:inference:llm-server", NULL),
                       "a declared SA with a legacy token");
    f = find(a, "X-004", "system:serviceaccount:inference:llm-server", NULL);
    cr_assert_not_null(f);
    cr_assert_str_eq(f->account, "other", "only the SA of the cluster with another issuer");
    cr_assert_not_null(find(a, "X-004", "system:serviceaccount:ml:etl", NULL));
    cr_assert_null(find(a, "X-004", "system:serviceaccount:kube-system:coredns", NULL));

    /* etl (gcp), CLIENT (other tenant), 2222 (azure), llm-server (other), ml:etl. */
    cr_assert_eq(count_rule(a, "X-004"), 5);
    /* LLM (gcp), etl (gcp), 2222 (azure), llm-server (k8s, declared). */
    cr_assert_eq(count_rule(a, "X-003"), 4);
    ferry_audit_free(a);
}

Test(audit_shadow, flags_merge_across_inputs)
{
    ferry_audit *a = run_new(true, NULL);

    /* Disabled in the service-account list, a key in the keys list: still never shadow. */
    note(a, "gcp", "p", "d@p.iam.gserviceaccount.com", NULL, AUDIT_ID_DISABLED, NULL);
    note(a, "gcp", "p", "d@p.iam.gserviceaccount.com", NULL, AUDIT_ID_STATIC_CRED, NULL);
    /* Declared and nothing to say (not kept), then its key in another input: X-003. */
    note(a, "gcp", "ml-prod", "llm-server@ml-prod-417203.iam.gserviceaccount.com", NULL,
         AUDIT_ID_FEDERATED, NULL);
    note(a, "gcp", "ml-prod", "llm-server@ml-prod-417203.iam.gserviceaccount.com", NULL,
         AUDIT_ID_STATIC_CRED, NULL);
    /* Federated in one input, its use in another. */
    note(a, "k8s", "c", "system:serviceaccount:x:y", NULL, AUDIT_ID_FEDERATED, NULL);
    note(a, "k8s", "c", "system:serviceaccount:x:y", NULL, AUDIT_ID_USED, NULL);
    finish(a);
    cr_assert_eq(count_rule(a, "X-004"), 1);
    cr_assert_not_null(find(a, "X-004", "system:serviceaccount:x:y", NULL));
    cr_assert_eq(count_rule(a, "X-003"), 1);
    cr_assert_not_null(find(a, "X-003", "llm-server@ml-prod-417203.iam.gserviceaccount.com", NULL));
    ferry_audit_free(a);
}

/* Identities of four GCP projects and four AWS accounts, each noted twice, the second time after
 * the other scopes' notes: a GCP SA federated then given a key (X-004 with both), one disabled
 * then given a key (never shadow), an AWS role federated then used. */
static char *scoped_run(size_t spill_after, size_t *ret_held, uint64_t *ret_spilled)
{
    ferry_audit *a = run_new(true, NULL);
    char *out = NULL;

    a->spill_after = spill_after;
    for (int round = 0; round < 2; round++)
        for (int k = 0; k < 4; k++) {
            char proj[16], sa[96], off[96], acct[16], role[96];
            (void)snprintf(proj, sizeof(proj), "proj-%d", k);
            (void)snprintf(sa, sizeof(sa), "etl-%d@proj-%d.iam.gserviceaccount.com", k, k);
            (void)snprintf(off, sizeof(off), "off-%d@proj-%d.iam.gserviceaccount.com", k, k);
            (void)snprintf(acct, sizeof(acct), "11112222333%d", k);
            (void)snprintf(role, sizeof(role), "arn:aws:iam::%s:role/app", acct);
            note(a, "gcp", proj, sa, NULL, round ? AUDIT_ID_STATIC_CRED : AUDIT_ID_FEDERATED, NULL);
            note(a, "gcp", proj, off, NULL, round ? AUDIT_ID_STATIC_CRED : AUDIT_ID_DISABLED, NULL);
            note(a, "aws", acct, role, NULL, round ? AUDIT_ID_USED : AUDIT_ID_FEDERATED, NULL);
        }
    *ret_held = audit_shadow_held(a, ret_spilled);
    finish(a);
    cr_assert_eq(ferry_audit_render(a, FERRY_AUDIT_OUT_JSON, &out, NULL), 0);
    ferry_audit_free(a);
    return out;
}

Test(audit_shadow, identities_of_other_scopes_wait_in_a_temporary_file)
{
    size_t held;
    uint64_t spilled;
    char *ref = scoped_run(AUDIT_SPILL_AFTER, &held, &spilled), *out;
    json_t *doc = json_loads(ref, 0, NULL), *f;
    size_t i, x004 = 0;

    if (AUDIT_SPILL_AFTER > 100) { /* not in a build that evicts at every note */
        cr_assert_eq(spilled, 0);
        cr_assert_eq(held, 12);
    }
    cr_assert_not_null(doc);
    json_array_foreach(json_object_get(doc, "findings"), i, f)
    {
        const char *res = json_string_value(json_object_get(f, "resource"));
        json_t *creds = json_object_get(json_object_get(f, "evidence"), "credentials");
        if (strcmp(json_string_value(json_object_get(f, "rule_id")), "X-004") != 0)
            continue;
        x004++;
        cr_assert(strncmp(res, "off-", 4) != 0, "a disabled SA is never shadow: %s", res);
        if (strncmp(res, "etl-", 4) == 0)
            cr_assert_eq(json_array_size(creds), 2, "flags merged: %s", ref);
    }
    cr_assert_eq(x004, 8, "%s", ref);
    json_decref(doc);
    for (size_t after = 0; after <= 2; after += 2) {
        out = scoped_run(after, &held, &spilled);
        cr_assert_gt(spilled, 0);
        /* at most twice the largest scope's (2) since the last eviction, and the one noted */
        cr_assert_leq(held, 5, "%zu held of 12", held);
        cr_assert_str_eq(out, ref, "spill after %zu", after);
        free(out);
    }
    free(ref);
}

Test(audit_shadow, api_misuse)
{
    ferry_audit *a = run_new(false, NULL);
    ferry_policy_set *set = policy_set();
    char err[256] = "";
    audit_identity bad = {.cloud = "oracle", .id = "x"};

    cr_assert_eq(ferry_audit_set_policies(a, NULL, NULL), -EINVAL);
    cr_assert_eq(ferry_audit_set_policies(a, set, ""), -EINVAL);
    cr_assert_eq(ferry_audit_add_usage(a, "/nonexistent", NULL, err, sizeof(err)), -EINVAL,
                 "--usage needs --policies");
    cr_assert_eq(ferry_audit_set_policies(a, set, ISSUER), 0);
    cr_assert_eq(ferry_audit_set_policies(a, set, ISSUER), -EINVAL, "given twice");
    cr_assert_eq(audit_identity_note(a, &bad), -EINVAL);
    ferry_audit_free(a);

    a = run_new(false, NULL);
    add(a, "roles.json", ROLES);
    cr_assert_eq(ferry_audit_set_policies(a, set, NULL), -EINVAL, "after the first input");
    ferry_audit_free(a);
    ferry_policy_set_unref(set);
}

Test(audit_shadow, sarif_lists_the_x_rules)
{
    ferry_audit *a = run_new(false, NULL);
    char *out = NULL;
    finish(a);
    cr_assert_eq(ferry_audit_render(a, FERRY_AUDIT_OUT_SARIF, &out, NULL), 0);
    for (const char *const *id = (const char *const[]){"X-003", "X-004", "X-005", NULL}; *id;
         id++) {
        char want[32];
        snprintf(want, sizeof(want), "\"id\": \"%s\"", *id);
        cr_assert(strstr(out, want), "%s missing", *id);
    }
    free(out);
    ferry_audit_free(a);
}

/* ---- --usage ---------------------------------------------------------------------------- */

static int64_t log_clock(void *ud)
{
    int64_t *t = ud;
    return (*t)++;
}

static void append(ferry_auditlog *log, const char *type, ferry_auditlog_decision dec,
                   const char *policy)
{
    json_t *d = policy ? json_pack("{s:[s], s:s}", "policies", policy, "issuer", "https://i")
                       : json_pack("{s:s}", "ref", "vault:kv/data/x");
    ferry_auditlog_event ev = {.type = type, .decision = dec, .subject = "sub", .details = d};
    cr_assert_eq(ferry_auditlog_append(log, &ev, NULL), 0);
    json_decref(d);
}

/* A log whose first record is at first_day days before NOW, with an allowed exchange through
 * gha-publish 3 days ago, a refused one through k8s-trainer 1 day ago, and one through
 * k8s-inference at first_day. Returns the path (free()); *ret_pub gets the public keys. */
static char *write_log(int64_t first_day, ferry_jwks **ret_pub)
{
    char *path = strdup("/tmp/test_audit_shadow_log.XXXXXX");
    ferry_jwk *key = NULL;
    ferry_jwks *priv = NULL;
    json_t *pub = NULL;
    ferry_auditlog *log = NULL;
    int64_t t = (NOW - first_day * DAY) * INT64_C(1000000);
    int fd = mkstemp(path);
    ferry_auditlog_options o = {.path = path, .clock = log_clock, .clock_userdata = &t};
    char err[256] = "";

    cr_assert_geq(fd, 0);
    close(fd);
    cr_assert_eq(unlink(path), 0);
    cr_assert_eq(ferry_jwk_generate(FERRY_ALG_ES256, &key), 0);
    o.signing_key = key;
    cr_assert_eq(ferry_auditlog_open(&o, &log, err, sizeof(err)), 0, "%s", err);
    append(log, "token.exchange", FERRY_AUDITLOG_ALLOW, "k8s-inference");
    t = (NOW - 3 * DAY) * INT64_C(1000000);
    append(log, "token.exchange", FERRY_AUDITLOG_ALLOW, "gha-publish");
    append(log, "secret.release", FERRY_AUDITLOG_ALLOW, NULL);
    t = (NOW - 1 * DAY) * INT64_C(1000000);
    append(log, "token.exchange", FERRY_AUDITLOG_DENY, "k8s-trainer");
    cr_assert_eq(ferry_auditlog_close(log), 0);
    cr_assert_eq(ferry_jwks_from_keys(&key, 1, &priv), 0);
    cr_assert_eq(ferry_jwks_to_public_json(priv, &pub), 0);
    cr_assert_eq(ferry_jwks_from_json(pub, ret_pub, NULL), 0);
    json_decref(pub);
    ferry_jwks_unref(priv);
    ferry_jwk_unref(key);
    return path;
}

Test(audit_shadow, usage_unused_grants)
{
    ferry_jwks *pub = NULL;
    char *path = write_log(200, &pub), err[512] = "";
    ferry_audit *a = run_new(true, NULL);
    const ferry_audit_finding *f;

    cr_assert_eq(ferry_audit_add_usage(a, path, pub, err, sizeof(err)), 0, "%s", err);
    finish(a);
    cr_assert_null(find(a, "X-005", "ferry:policy/gha-publish", NULL), "used 3 days ago");
    f = find(a, "X-005", "ferry:policy/k8s-inference", NULL);
    cr_assert_not_null(f, "last used 200 days ago");
    cr_assert_eq(f->severity, FERRY_AUDIT_MEDIUM);
    cr_assert_str_eq(f->cloud, "ferry");
    cr_assert_str_eq(f->source, path);
    cr_assert(strstr(f->evidence, "\"last_used\":\"2026-03-05T"), "%s", f->evidence);
    cr_assert(
        strstr(f->evidence, "\"gcp\":[\"llm-server@ml-prod-417203.iam.gserviceaccount.com\"]"),
        "%s", f->evidence);
    cr_assert(strstr(f->evidence, "\"secrets\":[\"vault:kv/data/inference/hf\"]"), "%s",
              f->evidence);
    f = find(a, "X-005", "ferry:policy/k8s-trainer", NULL);
    cr_assert_not_null(f, "only refused exchanges: never used");
    cr_assert(strstr(f->evidence, "\"last_used\":null"), "%s", f->evidence);
    cr_assert_eq(count_rule(a, "X-005"), 2);
    ferry_audit_free(a);

    /* Without the keys the chain is still read (checkpoint signatures skipped). */
    a = run_new(true, NULL);
    cr_assert_eq(ferry_audit_add_usage(a, path, NULL, err, sizeof(err)), 0, "%s", err);
    finish(a);
    cr_assert_eq(count_rule(a, "X-005"), 2);
    ferry_audit_free(a);

    unlink(path);
    free(path);
    ferry_jwks_unref(pub);
}

Test(audit_shadow, usage_log_shorter_than_the_window_is_not_evaluated)
{
    ferry_jwks *pub = NULL;
    char *path = write_log(30, &pub), err[512] = "";
    ferry_audit *a = run_new(true, NULL);
    const ferry_audit_finding *f;

    cr_assert_eq(ferry_audit_add_usage(a, path, pub, err, sizeof(err)), 0, "%s", err);
    finish(a);
    cr_assert_eq(count_rule(a, "X-005"), 1);
    f = find(a, "X-005", "ferry:auditlog", NULL);
    cr_assert_not_null(f);
    cr_assert_eq(f->severity, FERRY_AUDIT_INFO);
    cr_assert(strstr(f->evidence, "\"evaluated\":false"), "%s", f->evidence);
    ferry_audit_free(a);
    unlink(path);
    free(path);
    ferry_jwks_unref(pub);
}

Test(audit_shadow, usage_refuses_a_tampered_log)
{
    ferry_jwks *pub = NULL;
    char *path = write_log(200, &pub), err[512] = "", *buf = NULL, *p;
    ferry_audit *a = run_new(true, NULL);
    FILE *f = fopen(path, "r+");
    long len;

    /* Rename the policy in the record of the old exchange: its hash no longer matches. */
    cr_assert_not_null(f);
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    len = ftell(f);
    buf = calloc(1, (size_t)len + 1);
    rewind(f);
    cr_assert_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
    p = strstr(buf, "k8s-inference");
    cr_assert_not_null(p);
    memcpy(p, "k8s-inferencX", 13);
    rewind(f);
    cr_assert_eq(fwrite(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    free(buf);

    cr_assert_eq(ferry_audit_add_usage(a, path, pub, err, sizeof(err)), -FERRY_EREFUSED);
    cr_assert(strstr(err, "not a valid ferry audit log: line 2 (seq 2): hash does not match"), "%s",
              err);
    ferry_audit_free(a);

    a = run_new(true, NULL);
    cr_assert_eq(ferry_audit_add_usage(a, "/nonexistent/log", pub, err, sizeof(err)), -ENOENT);
    ferry_audit_free(a);
    unlink(path);
    free(path);
    ferry_jwks_unref(pub);
}

/* ---- allocation failures ------------------------------------------------------------------- *
 * As in test_audit.c: the Nth allocation of the process fails, for N = 0, 1, 2, ... over a whole
 * run with policies, an AWS export and credential report, directly noted identities, a usage
 * log, finish and the JSON report. Each run either fails with -ENOMEM (-FERRY_ECRYPTO when
 * OpenSSL could not allocate) or prints exactly the report of the undisturbed run. */
#define FERRY_ALLOCFAIL_NTH 1
#include "allocfail.h"
#include "audit-oom.h"
#ifdef HAVE_ALLOC_INJECTION
static int oom_run(ferry_policy_set *set, const char *log, const ferry_jwks *pub, size_t spill,
                   char **ret)
{
    static const char *const iss[] = {"https://ferry.example.com/", NULL};
    ferry_audit_options o = {.now = NOW};
    ferry_audit *a = NULL;
    char err[512];
    audit_identity ids[] = {
        {.cloud = "gcp",
         .account = "ml-prod",
         .id = "etl@ml-prod.iam.gserviceaccount.com",
         .flags = AUDIT_ID_STATIC_CRED,
         .source = "sa.json"},
        {.cloud = "azure",
         .account = TENANT,
         .id = CLIENT,
         .flags = AUDIT_ID_STATIC_CRED,
         .source = "sp.json"},
        {.cloud = "k8s",
         .account = "c",
         .id = "system:serviceaccount:x:y",
         .flags = AUDIT_ID_FEDERATED,
         .issuers = iss,
         .source = "k.json"},
    };
    int r = ferry_audit_new(&o, &a);

    if (r == 0)
        a->spill_after = spill;
    if (r == 0)
        r = ferry_audit_set_policies(a, set, ISSUER);
    if (r == 0)
        r = ferry_audit_add_input(a, "roles.json", ROLES, strlen(ROLES), NULL, err, sizeof(err));
    if (r == 0)
        r = ferry_audit_add_input(a, "r.csv", CREDREPORT, strlen(CREDREPORT), NULL, err,
                                  sizeof(err));
    for (size_t i = 0; r == 0 && i < ARRAY_SIZE(ids); i++)
        r = audit_identity_note(a, &ids[i]);
    if (r == 0)
        r = ferry_audit_add_usage(a, log, pub, err, sizeof(err));
    if (r == 0)
        r = ferry_audit_finish(a, err, sizeof(err));
    if (r == 0)
        r = ferry_audit_render(a, FERRY_AUDIT_OUT_JSON, ret, NULL);
    ferry_audit_free(a);
    return r;
}

Test(audit_shadow, allocation_failures_fail_or_change_nothing)
{
    ferry_jwks *pub = NULL;
    char *log = write_log(200, &pub), *ref = NULL;
    ferry_policy_set *set = policy_set();

    cr_assert_eq(oom_run(set, log, pub, AUDIT_SPILL_AFTER, &ref), 0);
    cr_assert(strstr(ref, "X-003") && strstr(ref, "X-004") && strstr(ref, "X-005") &&
                  strstr(ref, "system:serviceaccount:x:y"),
              "the reference run covers the rules: %s", ref);
    AUDIT_OOM_SWEEP(200000, ref, oom_run(set, log, pub, AUDIT_SPILL_AFTER, &out));
    /* the same with the identities of other scopes in the temporary file at every note */
    AUDIT_OOM_SWEEP(200000, ref, oom_run(set, log, pub, 0, &out));
    free(ref);
    ferry_policy_set_unref(set);
    unlink(log);
    free(log);
    ferry_jwks_unref(pub);
}
#endif
