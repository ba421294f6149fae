/* tests/unit/test_audit_live.c - `ferry audit aws --live` pieces that need no network
 * (src/lib/audit/aws_live.c), and the service-last-accessed loader with AWS-OP-011
 * (src/lib/audit/aws.c).
 *
 * The XML answers of IAM's Query API become the JSON the CLI prints (lists, typed leaves,
 * empty lists and objects, pagination markers); hostile XML is refused with a reason that
 * names no content (DOCTYPE, entities, processing instructions, deep nesting, oversized text,
 * mixed content, repeated members, the wrong document); and AWS-OP-011 gives the same
 * findings whichever of the authorization details and the usage data comes first.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "audit-internal.h"
#include "aws-live.h"
#include "ferry/audit.h"
#include "ferry/error.h"

#define NOW INT64_C(1790000000) /* 2026-09-21 */
#define NS "xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\""

static json_t *convert(const char *xml, const char *action)
{
    json_t *j = NULL;
    char err[256] = "";
    int r = audit_aws_xml_to_json(xml, strlen(xml), action, &j, err, sizeof(err));
    cr_assert_eq(r, 0, "%s", err);
    return j;
}

static int refuse(const char *xml, const char *action, char *err, size_t errlen)
{
    json_t *j = NULL;
    int r = audit_aws_xml_to_json(xml, strlen(xml), action, &j, err, errlen);
    cr_assert_null(j);
    cr_assert(r < 0);
    return r;
}

/* An answer of moto 5.2 for one user and one role, as it was on the wire. */
static const char AUTHZ_PAGE[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<GetAccountAuthorizationDetailsResponse " NS ">"
    "<GetAccountAuthorizationDetailsResult><UserDetailList><member><Path>/</Path>"
    "<UserName>u1</UserName><Arn>arn:aws:iam::123456789012:user/u1</Arn>"
    "<CreateDate>2026-11-26T11:24:27.954480Z</CreateDate><UserPolicyList/><GroupList/>"
    "<AttachedManagedPolicies/></member></UserDetailList><GroupDetailList/>"
    "<RoleDetailList><member><Path>/</Path><RoleName>r1</RoleName>"
    "<Arn>arn:aws:iam::123456789012:role/r1</Arn>"
    "<CreateDate>2026-11-26T11:24:27.031888Z</CreateDate>"
    "<AssumeRolePolicyDocument>%7B%22Version%22%3A%222012-10-17%22%7D</AssumeRolePolicyDocument>"
    "<RolePolicyList><member><PolicyName>p</PolicyName>"
    "<PolicyDocument>%7B%22Statement%22%3A%5B%5D%7D</PolicyDocument></member></RolePolicyList>"
    "<AttachedManagedPolicies><member><PolicyName>A</PolicyName>"
    "<PolicyArn>arn:aws:iam::aws:policy/A</PolicyArn></member></AttachedManagedPolicies>"
    "<Tags/><RoleLastUsed/><InstanceProfileList><member><InstanceProfileName>ip"
    "</InstanceProfileName><Roles/></member></InstanceProfileList></member></RoleDetailList>"
    "<Policies><member><PolicyName>cmp</PolicyName><AttachmentCount>2</AttachmentCount>"
    "<IsAttachable>true</IsAttachable><PolicyVersionList><member><VersionId>v1</VersionId>"
    "<IsDefaultVersion>true</IsDefaultVersion></member></PolicyVersionList></member></Policies>"
    "<IsTruncated>true</IsTruncated><Marker>bWFya2VyLTI=</Marker>"
    "</GetAccountAuthorizationDetailsResult>"
    "<ResponseMetadata><RequestId>x</RequestId></ResponseMetadata>"
    "</GetAccountAuthorizationDetailsResponse>";

Test(audit_live, authz_page_becomes_cli_json)
{
    json_t *j = convert(AUTHZ_PAGE, "GetAccountAuthorizationDetails");
    json_t *u = json_array_get(json_object_get(j, "UserDetailList"), 0);
    json_t *role = json_array_get(json_object_get(j, "RoleDetailList"), 0);
    json_t *pol = json_array_get(json_object_get(j, "Policies"), 0);

    cr_assert_str_eq(json_string_value(json_object_get(u, "Arn")),
                     "arn:aws:iam::123456789012:user/u1");
    cr_assert(json_is_array(json_object_get(u, "UserPolicyList")));
    cr_assert_eq(json_array_size(json_object_get(u, "GroupList")), 0);
    cr_assert(json_is_array(json_object_get(json_object_get(j, "GroupDetailList"), "x")) ||
              json_is_array(json_object_get(j, "GroupDetailList")));
    /* Policy documents stay URL-encoded: the authz loader decodes them. */
    cr_assert_str_eq(
        json_string_value(json_object_get(
            json_array_get(json_object_get(role, "RolePolicyList"), 0), "PolicyDocument")),
        "%7B%22Statement%22%3A%5B%5D%7D");
    cr_assert_str_eq(
        json_string_value(json_object_get(
            json_array_get(json_object_get(role, "AttachedManagedPolicies"), 0), "PolicyArn")),
        "arn:aws:iam::aws:policy/A");
    cr_assert(json_is_object(json_object_get(role, "RoleLastUsed"))); /* never used: {} */
    cr_assert_eq(json_object_size(json_object_get(role, "RoleLastUsed")), 0);
    cr_assert(json_is_array(json_object_get(role, "Tags")));
    cr_assert(json_is_array(
        json_object_get(json_array_get(json_object_get(role, "InstanceProfileList"), 0), "Roles")));
    cr_assert_eq(json_integer_value(json_object_get(pol, "AttachmentCount")), 2);
    cr_assert(json_is_true(json_object_get(pol, "IsAttachable")));
    cr_assert(json_is_true(json_object_get(
        json_array_get(json_object_get(pol, "PolicyVersionList"), 0), "IsDefaultVersion")));
    /* The pagination marker and flag, for the next call and the page merging. */
    cr_assert(json_is_true(json_object_get(j, "IsTruncated")));
    cr_assert_str_eq(json_string_value(json_object_get(j, "Marker")), "bWFya2VyLTI=");
    cr_assert_null(json_object_get(j, "ResponseMetadata"));
    json_decref(j);
}

Test(audit_live, last_page_and_predefined_entities)
{
    json_t *j = convert("<GetAccountAuthorizationDetailsResponse " NS ">"
                        "<GetAccountAuthorizationDetailsResult>\n  <UserDetailList/>\n"
                        "  <Policies><member><PolicyName>a&amp;b&lt;&#x41;</PolicyName>"
                        "</member></Policies>\n  <IsTruncated>false</IsTruncated>\n"
                        "</GetAccountAuthorizationDetailsResult>"
                        "</GetAccountAuthorizationDetailsResponse>",
                        "GetAccountAuthorizationDetails");
    cr_assert(json_is_false(json_object_get(j, "IsTruncated")));
    cr_assert_null(json_object_get(j, "Marker"));
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(j, "Policies"), 0), "PolicyName")),
                     "a&b<A");
    json_decref(j);
}

Test(audit_live, credential_report_and_jobs)
{
    json_t *j = convert("<GenerateCredentialReportResponse " NS "><GenerateCredentialReportResult>"
                        "<State>STARTED</State><Description>No report</Description>"
                        "</GenerateCredentialReportResult></GenerateCredentialReportResponse>",
                        "GenerateCredentialReport");
    cr_assert_str_eq(json_string_value(json_object_get(j, "State")), "STARTED");
    json_decref(j);
    j = convert("<GetServiceLastAccessedDetailsResponse " NS ">"
                "<GetServiceLastAccessedDetailsResult><JobStatus>COMPLETED</JobStatus>"
                "<ServicesLastAccessed><member><ServiceName>Amazon S3</ServiceName>"
                "<ServiceNamespace>s3</ServiceNamespace>"
                "<TotalAuthenticatedEntities>0</TotalAuthenticatedEntities></member>"
                "</ServicesLastAccessed><IsTruncated>false</IsTruncated>"
                "</GetServiceLastAccessedDetailsResult></GetServiceLastAccessedDetailsResponse>",
                "GetServiceLastAccessedDetails");
    json_t *s = json_array_get(json_object_get(j, "ServicesLastAccessed"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(s, "ServiceNamespace")), "s3");
    cr_assert_eq(json_integer_value(json_object_get(s, "TotalAuthenticatedEntities")), 0);
    cr_assert_null(json_object_get(s, "LastAuthenticated"));
    json_decref(j);
}

Test(audit_live, hostile_xml_is_refused)
{
    char err[256];
    /* A DOCTYPE (and with it every entity declaration: billion laughs, external files). */
    cr_assert_eq(refuse("<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"aaaa\">"
                        "<!ENTITY b \"&a;&a;&a;&a;\">]><XResponse><XResult><A>&b;</A>"
                        "</XResult></XResponse>",
                        "X", err, sizeof(err)),
                 -FERRY_EMALFORMED);
    cr_assert(strstr(err, "DOCTYPE"), "%s", err);
    cr_assert_null(strstr(err, "aaaa"));
    cr_assert_eq(
        refuse("<!DOCTYPE x SYSTEM \"file:///etc/passwd\"><XResponse/>", "X", err, sizeof(err)),
        -FERRY_EMALFORMED);
    cr_assert(strstr(err, "DOCTYPE"), "%s", err);
    /* An entity that was never declared. */
    cr_assert_eq(
        refuse("<XResponse><XResult><A>&secret;</A></XResult></XResponse>", "X", err, sizeof(err)),
        -FERRY_EMALFORMED);
    cr_assert(strstr(err, "line 1"), "%s", err);
    /* A processing instruction inside the document. */
    cr_assert_eq(refuse("<XResponse><?php x ?><XResult/></XResponse>", "X", err, sizeof(err)),
                 -FERRY_EMALFORMED);
    cr_assert(strstr(err, "processing instruction"), "%s", err);
    /* Mixed content, <member> among named elements, a repeated member. */
    cr_assert_eq(
        refuse("<XResponse><XResult>text<A>1</A></XResult></XResponse>", "X", err, sizeof(err)),
        -FERRY_EMALFORMED);
    cr_assert(strstr(err, "mixed"), "%s", err);
    cr_assert_eq(refuse("<XResponse><XResult><L><member>1</member><A>2</A></L></XResult>"
                        "</XResponse>",
                        "X", err, sizeof(err)),
                 -FERRY_EMALFORMED);
    cr_assert_eq(refuse("<XResponse><XResult><Arn>a</Arn><Arn>b</Arn></XResult></XResponse>", "X",
                        err, sizeof(err)),
                 -FERRY_EMALFORMED);
    cr_assert(strstr(err, "<Arn> repeated"), "%s", err);
    /* Typed leaves with other text. */
    cr_assert_eq(refuse("<XResponse><XResult><IsTruncated>yes</IsTruncated></XResult>"
                        "</XResponse>",
                        "X", err, sizeof(err)),
                 -FERRY_EMALFORMED);
    cr_assert_eq(refuse("<XResponse><XResult><AttachmentCount>1e9</AttachmentCount></XResult>"
                        "</XResponse>",
                        "X", err, sizeof(err)),
                 -FERRY_EMALFORMED);
    /* The wrong document, an error document, a truncated one, nothing at all. */
    cr_assert_eq(refuse("<YResponse><YResult/></YResponse>", "X", err, sizeof(err)),
                 -FERRY_EMALFORMED);
    cr_assert(strstr(err, "expected a <XResponse>"), "%s", err);
    cr_assert_eq(refuse("<XResponse><Other/></XResponse>", "X", err, sizeof(err)),
                 -FERRY_EMALFORMED);
    cr_assert_eq(refuse("<XResponse><XResult><A>1</A>", "X", err, sizeof(err)), -FERRY_EMALFORMED);
    cr_assert(strstr(err, "malformed XML"), "%s", err);
    cr_assert_eq(refuse("", "X", err, sizeof(err)), -FERRY_EMALFORMED);
}

Test(audit_live, nesting_and_size_limits)
{
    char err[256];
    size_t depth = AUDIT_XML_MAX_DEPTH + 1, n = 0;
    char *x = malloc(depth * 16 + 64);
    cr_assert_not_null(x);
    n += (size_t)sprintf(x + n, "<XResponse><XResult>");
    for (size_t i = 2; i < depth; i++)
        n += (size_t)sprintf(x + n, "<A>");
    cr_assert_eq(refuse(x, "X", err, sizeof(err)), -FERRY_ETOOBIG);
    cr_assert(strstr(err, "nested deeper"), "%s", err);
    free(x);

    /* Just within the depth: accepted. */
    x = malloc(AUDIT_XML_MAX_DEPTH * 16 + 64);
    n = (size_t)sprintf(x, "<XResponse><XResult>");
    for (size_t i = 2; i < AUDIT_XML_MAX_DEPTH; i++)
        n += (size_t)sprintf(x + n, "<A>");
    n += (size_t)sprintf(x + n, "1");
    for (size_t i = 2; i < AUDIT_XML_MAX_DEPTH; i++)
        n += (size_t)sprintf(x + n, "</A>");
    (void)sprintf(x + n, "</XResult></XResponse>");
    json_decref(convert(x, "X"));
    free(x);

    /* One element's text past AUDIT_XML_MAX_TEXT, streamed over many slices. */
    size_t big = AUDIT_XML_MAX_TEXT + 10;
    x = malloc(big + 100);
    cr_assert_not_null(x);
    n = (size_t)sprintf(x, "<XResponse><XResult><Content>");
    memset(x + n, 'A', big);
    (void)sprintf(x + n + big, "</Content></XResult></XResponse>");
    cr_assert_eq(refuse(x, "X", err, sizeof(err)), -FERRY_ETOOBIG);
    cr_assert(strstr(err, "<Content>: text over"), "%s", err);
    cr_assert_eq(strlen(err) < 200, true);
    free(x);
}

/* ---- service last accessed and AWS-OP-011 ------------------------------------------------ */

static const char ROLE_AUTHZ[] =
    "{\"RoleDetailList\": [{\"RoleName\": \"app\", \"Arn\": \"arn:aws:iam::111122223333:role/app\","
    " \"CreateDate\": \"2020-01-01T00:00:00Z\", \"RolePolicyList\": [{\"PolicyName\": \"p\", "
    "\"PolicyDocument\": {\"Version\": \"2012-10-17\", \"Statement\": [{\"Effect\": \"Allow\", "
    "\"Action\": [\"s3:GetObject\", \"dynamodb:GetItem\", \"SQS:SendMessage\"], \"Resource\": "
    "\"arn:aws:s3:::b/*\"}]}}]}, {\"RoleName\": \"young\", \"Arn\": "
    "\"arn:aws:iam::111122223333:role/young\", \"CreateDate\": \"2026-09-20T00:00:00Z\", "
    "\"RolePolicyList\": [{\"PolicyName\": \"p\", \"PolicyDocument\": {\"Statement\": "
    "{\"Effect\": \"Allow\", \"Action\": \"ec2:Describe*\", \"Resource\": \"*\"}}}]}]}";

/* s3 used 10 days before NOW, dynamodb 200 days before, sqs not listed. */
static const char ROLE_USAGE[] =
    "{\"Arn\": \"arn:aws:iam::111122223333:role/app\", \"JobStatus\": \"COMPLETED\", "
    "\"JobCompletionDate\": \"2026-09-21T00:00:00Z\", \"ServicesLastAccessed\": ["
    "{\"ServiceNamespace\": \"s3\", \"LastAuthenticated\": \"2026-09-11T14:13:20Z\"},"
    "{\"ServiceNamespace\": \"dynamodb\", \"LastAuthenticated\": \"2026-03-05T00:00:00+00:00\"},"
    "{\"ServiceNamespace\": \"ec2\"}]}";

static const char YOUNG_USAGE[] =
    "{\"Arn\": \"arn:aws:iam::111122223333:role/young\", \"JobStatus\": \"COMPLETED\", "
    "\"ServicesLastAccessed\": [{\"ServiceNamespace\": \"ec2\"}]}";

static ferry_audit *run(const char *const *names, const char *const *texts, size_t n)
{
    ferry_audit_options o = {.now = NOW};
    ferry_audit *a = NULL;
    char err[512] = "";
    cr_assert_eq(ferry_audit_new(&o, &a), 0);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(
            ferry_audit_add_input(a, names[i], texts[i], strlen(texts[i]), NULL, err, sizeof(err)),
            0, "%s: %s", names[i], err);
    cr_assert_eq(ferry_audit_finish(a, err, sizeof(err)), 0, "%s", err);
    return a;
}

static size_t op011(ferry_audit *a, const ferry_audit_finding **ret)
{
    const ferry_audit_finding *fs;
    size_t n = ferry_audit_findings(a, &fs), k = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(fs[i].rule_id, "AWS-OP-011") == 0) {
            if (!k)
                *ret = &fs[i];
            k++;
        }
    return k;
}

Test(audit_live, op011_from_policies_and_last_accessed_in_any_order)
{
    const char *names[] = {"authz.json", "usage.json", "young.json"};
    const char *t1[] = {ROLE_AUTHZ, ROLE_USAGE, YOUNG_USAGE};
    const char *n2[] = {"usage.json", "young.json", "authz.json"};
    const char *t2[] = {ROLE_USAGE, YOUNG_USAGE, ROLE_AUTHZ};
    ferry_audit *a = run(names, t1, 3), *b = run(n2, t2, 3);
    const ferry_audit_finding *fa = NULL, *fb = NULL;

    /* One finding: the app role, dynamodb (old) and sqs (granted, never listed); s3 is used;
     * the young role is inside the grace period; no "not evaluated" note for the account. */
    cr_assert_eq(op011(a, &fa), 1);
    cr_assert_eq(op011(b, &fb), 1);
    cr_assert_str_eq(fa->resource, "arn:aws:iam::111122223333:role/app");
    cr_assert_eq(fa->severity, FERRY_AUDIT_MEDIUM);
    cr_assert_str_eq(fa->source, "usage.json");
    json_t *ev = json_loads(fa->evidence, 0, NULL);
    json_t *svcs = json_object_get(ev, "unused_services");
    cr_assert_eq(json_array_size(svcs), 2, "%s", fa->evidence);
    cr_assert_str_eq(json_string_value(json_array_get(svcs, 0)), "dynamodb");
    cr_assert_str_eq(json_string_value(json_array_get(svcs, 1)), "sqs");
    cr_assert_str_eq(json_string_value(json_object_get(ev, "granted_from")), "policies");
    cr_assert(json_is_null(json_object_get(json_object_get(ev, "last_authenticated"), "sqs")));
    json_decref(ev);
    /* The same finding whatever the order of the inputs. */
    cr_assert_str_eq(fa->fingerprint, fb->fingerprint);
    cr_assert_str_eq(fa->evidence, fb->evidence);
    ferry_audit_free(a);
    ferry_audit_free(b);
}

Test(audit_live, op011_note_only_for_accounts_without_usage)
{
    const char *names[] = {"authz.json"};
    const char *texts[] = {ROLE_AUTHZ};
    ferry_audit *a = run(names, texts, 1);
    const ferry_audit_finding *f = NULL;

    cr_assert_eq(op011(a, &f), 1);
    cr_assert_eq(f->severity, FERRY_AUDIT_INFO);
    cr_assert_str_eq(f->resource, "arn:aws:iam::111122223333:root");
    cr_assert(strstr(f->evidence, "\"evaluated\":false"), "%s", f->evidence);
    ferry_audit_free(a);

    /* Live mode's reason when the endpoint has no service-last-accessed. */
    ferry_audit_options o = {.now = NOW};
    char err[256];
    cr_assert_eq(ferry_audit_new(&o, &a), 0);
    cr_assert_eq(audit_aws_usage_unavailable(a, "the IAM endpoint does not implement it"), 0);
    cr_assert_eq(
        ferry_audit_add_input(a, "x", ROLE_AUTHZ, strlen(ROLE_AUTHZ), NULL, err, sizeof(err)), 0);
    cr_assert_eq(ferry_audit_finish(a, err, sizeof(err)), 0);
    cr_assert_eq(op011(a, &f), 1);
    cr_assert(strstr(f->evidence, "does not implement"), "%s", f->evidence);
    ferry_audit_free(a);
}

Test(audit_live, last_accessed_bundles_and_file_names)
{
    /* Without authorization details, the services the data lists are the grants. */
    const char *keyed = "{\"arn:aws:iam::111122223333:role/app\": {\"JobStatus\": \"COMPLETED\", "
                        "\"ServicesLastAccessed\": [{\"ServiceNamespace\": \"logs\"}]}}";
    const char *ndjson =
        "{\"Arn\": \"arn:aws:iam::111122223333:role/a\", \"ServicesLastAccessed\": "
        "[{\"ServiceNamespace\": \"logs\"}]}\n"
        "{\"Arn\": \"arn:aws:iam::111122223333:role/b\", \"ServicesLastAccessed\": "
        "[{\"ServiceNamespace\": \"s3\", \"LastAuthenticated\": \"2026-09-20T00:00:00Z\"}]}\n";
    /* CloudMapper's layout: the output as saved, named by the URL-encoded ARN. */
    const char *bare = "{\"JobStatus\": \"COMPLETED\", \"ServicesLastAccessed\": "
                       "[{\"ServiceNamespace\": \"logs\", \"LastAuthenticated\": "
                       "\"2019-04-15T04:19:00+00:00\"}]}";
    const char *names[] = {"keyed.json", "bundle.ndjson",
                           "dir/arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Flevel3"};
    const char *texts[] = {keyed, ndjson, bare};
    ferry_audit *a = run(names, texts, 3);
    const ferry_audit_finding *fs;
    size_t n = ferry_audit_findings(a, &fs), k = 0;
    const char *want[] = {"arn:aws:iam::111122223333:role/a", "arn:aws:iam::111122223333:role/app",
                          "arn:aws:iam::123456789012:role/level3"};
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_eq(fs[i].rule_id, "AWS-OP-011");
        cr_assert_eq(fs[i].severity, FERRY_AUDIT_MEDIUM);
        cr_assert(k < 3);
        cr_assert_str_eq(fs[i].resource, want[k], "%s", fs[i].resource);
        cr_assert(strstr(fs[i].evidence, "\"unused_services\":[\"logs\"]"), "%s", fs[i].evidence);
        cr_assert(strstr(fs[i].evidence, "\"granted_from\":\"service-last-accessed\""));
        k++;
    }
    cr_assert_eq(k, 3); /* role/b used s3 the day before */
    ferry_audit_free(a);
}

Test(audit_live, last_accessed_errors)
{
    ferry_audit_options o = {.now = NOW};
    ferry_audit *a = NULL;
    char err[512];
    const struct {
        const char *name, *text, *want;
    } cases[] = {
        {"plain.json", "{\"JobStatus\": \"COMPLETED\", \"ServicesLastAccessed\": []}",
         "plain.json: the output of get-service-last-accessed-details does not name its "
         "principal"},
        {"run.json",
         "{\"Arn\": \"arn:aws:iam::1:role/x\", \"JobStatus\": \"IN_PROGRESS\", "
         "\"ServicesLastAccessed\": []}",
         "run.json:1: arn:aws:iam::1:role/x: JobStatus is IN_PROGRESS, not COMPLETED"},
        {"ns.json",
         "{\"Arn\": \"arn:aws:iam::1:role/x\",\n \"ServicesLastAccessed\": [\n {\"ServiceName\": "
         "\"S3\"}]}",
         "ns.json:3: arn:aws:iam::1:role/x: ServicesLastAccessed[0]: expected a "
         "ServiceNamespace"},
        {"date.json",
         "[{\"Arn\": \"arn:aws:iam::1:role/x\", \"ServicesLastAccessed\": [{\"ServiceNamespace\": "
         "\"s3\", \"LastAuthenticated\": \"yesterday\"}]}]",
         "[0]: arn:aws:iam::1:role/x: ServicesLastAccessed[0].LastAuthenticated: expected a "
         "date"},
        {"b.ndjson",
         "{\"Arn\": \"arn:aws:iam::1:role/x\", \"ServicesLastAccessed\": []}\n{\"Arn\": 1}\n",
         "b.ndjson: line 2: expected a get-service-last-accessed-details object"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cr_assert_eq(ferry_audit_new(&o, &a), 0);
        err[0] = '\0';
        /* A file named like a job id waits for its generate output until the run ends. */
        int r = ferry_audit_add_input(a, cases[i].name, cases[i].text, strlen(cases[i].text), NULL,
                                      err, sizeof(err));
        if (r == 0 && i == 0)
            r = ferry_audit_finish(a, err, sizeof(err));
        cr_assert(r < 0, "%s", cases[i].name);
        cr_assert(strstr(err, cases[i].want), "%s\nwanted: %s", err, cases[i].want);
        ferry_audit_free(a);
    }
}

/* ---- allocation failures ------------------------------------------------------------------
 *
 * malloc, calloc and realloc are replaced in this program (allocfail.h): while armed, the Nth
 * allocation of the process fails, whoever makes it (expat, jansson, the library). The XML
 * conversion of a page and a whole run over authorization details and usage data in three
 * forms must either fail with -ENOMEM or give exactly what an undisturbed run gives. */
#define FERRY_ALLOCFAIL_NTH 1
#include "allocfail.h"
#include "audit-oom.h"
#ifdef HAVE_ALLOC_INJECTION
static char oom_err[512]; /* the reason of the last run's failure */

static int oom_once(char **ret)
{
    static const char ndjson[] =
        "{\"Arn\": \"arn:aws:iam::111122223333:role/young\", \"ServicesLastAccessed\": "
        "[{\"ServiceNamespace\": \"ec2\"}]}\n"
        "{\"Arn\": \"arn:aws:iam::111122223333:role/other\", \"ServicesLastAccessed\": "
        "[{\"ServiceNamespace\": \"logs\"}]}\n";
    static const char cm_details[] = "{\"ServicesLastAccessed\": [{\"ServiceNamespace\": "
                                     "\"kms\"}]}";
    static const char cm_job[] = "{\"JobId\": \"j-1\"}";
    ferry_audit_options o = {.now = NOW};
    ferry_audit *a = NULL;
    json_t *j = NULL;
    char *out = NULL, *err = oom_err;
    int r = audit_aws_xml_to_json(AUTHZ_PAGE, strlen(AUTHZ_PAGE), "GetAccountAuthorizationDetails",
                                  &j, err, sizeof(oom_err));

    if (r == 0) {
        out = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(j);
        r = out ? 0 : -ENOMEM;
        free(out);
        out = NULL;
    }
    if (r == 0)
        r = ferry_audit_new(&o, &a);
    if (r == 0)
        r = ferry_audit_add_input(a, "u.json", ROLE_USAGE, strlen(ROLE_USAGE), NULL, err,
                                  sizeof(oom_err));
    if (r == 0)
        r = ferry_audit_add_input(a, "a.json", ROLE_AUTHZ, strlen(ROLE_AUTHZ), NULL, err,
                                  sizeof(oom_err));
    if (r == 0)
        r = ferry_audit_add_input(a, "b.ndjson", ndjson, strlen(ndjson), NULL, err,
                                  sizeof(oom_err));
    if (r == 0) /* CloudMapper's job-id layout, the details first */
        r = ferry_audit_add_input(a, "get/j-1", cm_details, strlen(cm_details), NULL, err,
                                  sizeof(oom_err));
    if (r == 0)
        r = ferry_audit_add_input(a, "gen/arn%3Aaws%3Aiam%3A%3A111122223333%3Arole%2Fcm", cm_job,
                                  strlen(cm_job), NULL, err, sizeof(oom_err));
    return audit_oom_finish(a, r, ret);
}

Test(audit_live, allocation_failures_fail_or_change_nothing)
{
    char *ref = NULL;

    cr_assert_eq(oom_once(&ref), 0);
    cr_assert(strstr(ref, "role/cm") && strstr(ref, "unused_services"), "%s", ref);
    AUDIT_OOM_SWEEP(100000, ref, oom_once(&out));
    free(ref);
}
#endif

Test(audit_live, cloudmapper_job_ids_in_either_order)
{
    /* iam-generate-service-last-accessed-details/ARN holds the job id; the details are in
     * iam-get-service-last-accessed-details/JOBID. */
    const char *gen = "{\"JobId\": \"a2b53fd9-88bc-d0b5-1b9a-af9c4af22375\"}";
    const char *det = "{\"JobStatus\": \"COMPLETED\", \"ServicesLastAccessed\": "
                      "[{\"ServiceNamespace\": \"logs\"}]}";
    const char *gpath = "gen/arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Flevel3";
    const char *dpath = "get/a2b53fd9-88bc-d0b5-1b9a-af9c4af22375";
    const char *n1[] = {gpath, dpath}, *t1[] = {gen, det};
    const char *n2[] = {dpath, gpath}, *t2[] = {det, gen};
    ferry_audit *a = run(n1, t1, 2), *b = run(n2, t2, 2);
    const ferry_audit_finding *fa = NULL, *fb = NULL;

    cr_assert_eq(op011(a, &fa), 1);
    cr_assert_eq(op011(b, &fb), 1);
    cr_assert_str_eq(fa->resource, "arn:aws:iam::123456789012:role/level3");
    cr_assert_str_eq(fa->source, dpath);
    cr_assert_str_eq(fb->source, dpath);
    cr_assert_str_eq(fa->fingerprint, fb->fingerprint);
    ferry_audit_free(a);
    ferry_audit_free(b);

    /* A generate output not named by an ARN is refused. */
    ferry_audit_options o = {.now = NOW};
    char err[512] = "";
    cr_assert_eq(ferry_audit_new(&o, &a), 0);
    cr_assert_eq(ferry_audit_add_input(a, "job.json", gen, strlen(gen), NULL, err, sizeof(err)),
                 -FERRY_EMALFORMED);
    cr_assert(strstr(err, "job.json: the output of generate-service-last-accessed-details does "
                          "not name its principal"),
              "%s", err);
    ferry_audit_free(a);
}
