/* audit/aws.c - AWS loaders (GetAccountAuthorizationDetails, the credential report) and the
 * AWS rules of the catalogue. docs/internals/audit.md says how each rule reads the model.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "audit-internal.h"
#include "aws-live.h"
#include "basic/b64.h"
#include "basic/buf.h"
#include "basic/errbuf.h"
#include "basic/macro.h"
#include "ferry/error.h"
#include "ferry/json.h"

#define CLOUD "aws"
#define DAY 86400

/* Policy analyses kept (each a few hundred bytes); the cache is emptied when full. */
#define AWS_CACHE_MAX 4096
/* Most lines of a credential report, and columns per line. */
#define CREDREPORT_MAX_COLS 64

static const audit_rule aws_rules[] = {
    {"AWS-OP-001", "Full admin policy", FERRY_AUDIT_CRITICAL,
     "An attached inline or managed policy allows Action \"*\" on Resource \"*\" (or NotAction "
     "with nothing excluded on \"*\"): the principal can do anything in the account.",
     "Replace the statement with the specific actions and resources the workload uses; keep "
     "break-glass admin in a separate, MFA-protected role."},
    {"AWS-OP-002", "Admin-equivalent principal", FERRY_AUDIT_HIGH,
     "Without full admin, the principal can make itself admin: write or attach policies on "
     "itself or its group, rewrite a managed policy attached to it, or create a role and give "
     "it any policy. Critical for a role trusted by compute or another account.",
     "Remove the IAM write actions from the principal's policies, or scope their Resource to "
     "ARNs that exclude the principal, its groups and its policies; add a permissions "
     "boundary."},
    {"AWS-OP-003", "Service-wide wildcard", FERRY_AUDIT_MEDIUM,
     "A policy allows every action of one service (\"svc:*\") on Resource \"*\"; severity is "
     "high for iam, sts, kms, secretsmanager, s3, organizations and cloudtrail.",
     "List the service's actions the workload needs and scope Resource to the ARNs it uses."},
    {"AWS-OP-004", "Allow with NotAction / NotResource", FERRY_AUDIT_HIGH,
     "An Allow statement uses NotAction or NotResource, granting everything except a list: "
     "every new action or resource AWS adds is granted too.",
     "Rewrite the statement as an Allow of explicit actions and resources; express exceptions "
     "as Deny statements or a permissions boundary."},
    {"AWS-OP-005", "Privilege-escalation capability", FERRY_AUDIT_HIGH,
     "The principal's policies together allow a known privilege-escalation combination on "
     "unconstrained resources (PassRole with a compute service, access keys or passwords for "
     "other users, policy writes, policy versions, function code updates). Statements with a "
     "Condition are not counted.",
     "Remove the combination or scope each action's Resource to the exact roles, users and "
     "policies the workload manages; restrict iam:PassRole with iam:PassedToService."},
    {"AWS-OP-006", "Privilege-escalation path", FERRY_AUDIT_HIGH,
     "A principal that is not admin can become an admin principal of its account in at most "
     "five steps: assuming a role that trusts it, passing a role to compute it can start, or "
     "minting credentials for another user.",
     "Break the first step of the path in the evidence: narrow the trust policy, the "
     "iam:PassRole resource or the iam:CreateAccessKey / *LoginProfile resource to what the "
     "principal needs, or take the admin rights off the principal at the end of the path."},
    {"AWS-OP-007", "Credentials-exposure actions unconstrained", FERRY_AUDIT_HIGH,
     "A policy allows actions that return or create credentials (iam:CreateAccessKey, "
     "secretsmanager:GetSecretValue, ssm:GetParameter*, sts:AssumeRole, ...) on Resource \"*\" "
     "without a Condition.",
     "Scope Resource to the specific secrets, parameters, users or roles, or add a Condition; "
     "let workloads get short-lived credentials from ferry instead of reading stored ones."},
    {"AWS-OP-008", "Data-exfiltration actions unconstrained", FERRY_AUDIT_MEDIUM,
     "A policy allows actions that read or copy data out (s3:GetObject, rds:CopyDBSnapshot, "
     "dynamodb:Scan, ...) on Resource \"*\" without a Condition.",
     "Scope Resource to the buckets, tables and snapshots the workload needs."},
    {"AWS-OP-009", "Resource-exposure actions unconstrained", FERRY_AUDIT_HIGH,
     "A policy allows actions that change who can access a resource (Put*Policy, Put*Acl, "
     "AddPermission, RAM shares, ...) on Resource \"*\" without a Condition.",
     "Remove the actions or scope them to specific resources; manage resource policies from "
     "infrastructure code, not workload identities."},
    {"AWS-OP-010", "Admin role assumable by compute", FERRY_AUDIT_HIGH,
     "A role that is admin or admin-equivalent is in an instance profile or trusted by a "
     "compute service (EC2, Lambda, ECS tasks, EKS, CodeBuild, SageMaker, Batch) or EKS pods "
     "through web identity: code running there, or anyone who can run code there, is admin.",
     "Give the workload a role with only what it uses; keep admin roles out of instance "
     "profiles and compute trust policies."},
    {"AWS-OP-011", "Unused permissions", FERRY_AUDIT_MEDIUM,
     "Services or actions granted but not used for --unused-days (Access Analyzer unused "
     "access or service-last-accessed data). Needs usage data: without it one info note per "
     "account says the rule was not evaluated.",
     "Supply service-last-accessed data to evaluate; then remove the services the principal "
     "has not used."},
    {"AWS-OP-012", "Dangerous non-default policy version", FERRY_AUDIT_MEDIUM,
     "A non-default version of an attached customer-managed policy grants full admin: anyone "
     "with iam:SetDefaultPolicyVersion on it becomes admin.",
     "Delete the old policy version (aws iam delete-policy-version)."},
    {"AWS-OP-013", "Unattached admin policy", FERRY_AUDIT_LOW,
     "A customer-managed policy grants full admin and is attached to nothing.",
     "Delete the policy (aws iam delete-policy) so it cannot be attached later."},
    {"AWS-TR-001", "Role assumable by anyone", FERRY_AUDIT_CRITICAL,
     "The role's trust policy allows Principal \"*\" (or AWS \"*\") without a Condition: any "
     "AWS account can assume it.",
     "Name the exact accounts or roles that may assume the role in the trust policy."},
    {"AWS-TR-002", "Role assumable by anyone, with conditions", FERRY_AUDIT_MEDIUM,
     "The role's trust policy allows Principal \"*\" restricted only by a Condition; review "
     "that the condition really limits who can assume it.",
     "Prefer naming the trusted principals; if the wildcard stays, pin aws:PrincipalOrgID or "
     "aws:PrincipalAccount in the condition."},
    {"AWS-TR-003", "Cross-account trust to unknown account", FERRY_AUDIT_MEDIUM,
     "The role trusts an account that is not in --known-accounts; high when the role is "
     "admin.",
     "Remove the account from the trust policy, or add it to the known accounts after review."},
    {"AWS-TR-004", "Third-party trust without ExternalId", FERRY_AUDIT_MEDIUM,
     "The role trusts principals of another account without an sts:ExternalId (or MFA) "
     "condition: a confused-deputy risk for third-party access.",
     "Add a Condition StringEquals sts:ExternalId with the value the third party gives you (or "
     "Bool aws:MultiFactorAuthPresent true for human access)."},
    {"AWS-TR-005", "OIDC/web-identity trust without subject pin", FERRY_AUDIT_CRITICAL,
     "The role trusts an OIDC provider (GitHub Actions, EKS, GitLab, ...) for "
     "AssumeRoleWithWebIdentity with no condition on the token's sub, or a wildcard one: "
     "any repository or workload of that issuer can assume it.",
     "Add a StringEquals (or narrow StringLike) condition on <provider>:sub naming the exact "
     "repository/branch or service account, next to <provider>:aud."},
    {"AWS-TR-006", "Service trust without confused-deputy guard", FERRY_AUDIT_MEDIUM,
     "The role trusts an AWS service principal without aws:SourceAccount, aws:SourceArn or "
     "aws:SourceOrgID in the Condition.",
     "Add a Condition with aws:SourceAccount (your account id) or aws:SourceArn (the resource "
     "that uses the role)."},
    {"AWS-SH-001", "Unused role", FERRY_AUDIT_MEDIUM,
     "The role has not been used for --unused-days (or never), and is older than the grace "
     "period.",
     "Delete the role, or document why it must stay and who owns it."},
    {"AWS-SH-002", "Unused access key", FERRY_AUDIT_MEDIUM,
     "An active access key has not been used for --key-unused-days.",
     "Deactivate, then delete the key (aws iam update-access-key --status Inactive)."},
    {"AWS-SH-003", "Never-used access key", FERRY_AUDIT_MEDIUM,
     "An active access key has never been used and is older than the grace period.",
     "Delete the key; issue credentials only when a workload needs them, short-lived through "
     "ferry where possible."},
    {"AWS-SH-004", "Access key not rotated", FERRY_AUDIT_MEDIUM,
     "An active access key is older than --key-max-age-days.",
     "Rotate the key (create a new one, switch the workload, delete the old one), or replace it "
     "with federation through ferry."},
    {"AWS-SH-005", "Two active access keys", FERRY_AUDIT_LOW,
     "The user has two active access keys.", "Deactivate and delete the key no longer in use."},
    {"AWS-SH-006", "Long-lived IAM-user credentials for workloads", FERRY_AUDIT_MEDIUM,
     "An IAM user with an active access key and no console password: a machine user holding "
     "a long-lived secret.",
     "Move the workload to a role it assumes with short-lived credentials (instance profile, "
     "IRSA, or a ferry-issued web-identity token), then delete the user's keys."},
    {"AWS-SH-007", "Service user with console password", FERRY_AUDIT_MEDIUM,
     "A user has both a console password and an active access key: a human login and a "
     "workload secret on one identity.",
     "Split the identity: remove the console password from the workload user, or move the "
     "person to SSO and the workload to a role."},
    {"AWS-SH-008", "Root access key present", FERRY_AUDIT_CRITICAL,
     "The account root user has an active access key.",
     "Delete the root user's access keys; use IAM roles for every automated task."},
    {"AWS-SH-009", "No owner", FERRY_AUDIT_LOW,
     "The role or user has no tag naming an owner (--owner-tag-keys); runs only when those keys "
     "are given.",
     "Tag the principal with its owning team (e.g. aws iam tag-role --tags Key=owner,Value=...), "
     "or delete it if nobody claims it."},
    {"AWS-SH-010", "Unmanaged principal", FERRY_AUDIT_LOW,
     "The role or user is not declared in the IaC inventory (--iac-inventory) and is not "
     "AWS-managed (service-linked, IAM Identity Center, Control Tower); medium when it is admin "
     "or admin-equivalent. Runs only when an inventory is given.",
     "Import the principal into Terraform/CloudFormation with its owner, or delete it if it was "
     "created by hand and is no longer needed."},
};

/* Actions by rule: a statement action (glob) matching one of these is a hit. Lower case. */
static const char *const credentials_exposure[] = {"iam:createaccesskey",
                                                   "iam:updateaccesskey",
                                                   "iam:createloginprofile",
                                                   "iam:updateloginprofile",
                                                   "iam:createservicespecificcredential",
                                                   "iam:resetservicespecificcredential",
                                                   "secretsmanager:getsecretvalue",
                                                   "ssm:getparameter",
                                                   "ssm:getparameters",
                                                   "ssm:getparametersbypath",
                                                   "sts:assumerole",
                                                   "sts:getfederationtoken",
                                                   "sts:getsessiontoken",
                                                   "ecr:getauthorizationtoken",
                                                   "redshift:getclustercredentials",
                                                   "ec2:getpassworddata",
                                                   "sso:getrolecredentials",
                                                   "cognito-identity:getcredentialsforidentity",
                                                   "lightsail:getinstanceaccessdetails",
                                                   "iot:createkeysandcertificate",
                                                   NULL};
static const char *const data_exfiltration[] = {
    "s3:getobject",         "s3:getobjectversion",
    "rds:copydbsnapshot",   "rds:copydbclustersnapshot",
    "dynamodb:scan",        "dynamodb:exporttabletopointintime",
    "ec2:getconsoleoutput", "kms:decrypt",
    "glacier:getjoboutput", NULL};
static const char *const resource_exposure[] = {"s3:putbucketpolicy",
                                                "s3:putbucketacl",
                                                "s3:putobjectacl",
                                                "s3:deletebucketpolicy",
                                                "s3:putbucketpublicaccessblock",
                                                "kms:putkeypolicy",
                                                "kms:creategrant",
                                                "secretsmanager:putresourcepolicy",
                                                "sqs:addpermission",
                                                "sqs:setqueueattributes",
                                                "sns:addpermission",
                                                "sns:settopicattributes",
                                                "lambda:addpermission",
                                                "ecr:setrepositorypolicy",
                                                "ram:createresourceshare",
                                                "ram:associateresourceshare",
                                                "glacier:setvaultaccesspolicy",
                                                "iam:updateassumerolepolicy",
                                                "ec2:modifysnapshotattribute",
                                                "rds:modifydbsnapshotattribute",
                                                "backup:putbackupvaultaccesspolicy",
                                                NULL};

static const char *const sensitive_services[] = {
    "iam", "sts", "kms", "secretsmanager", "s3", "organizations", "cloudtrail", NULL};

/* Service principals whose role is only handed to the account's own resources (through
 * iam:PassRole, which cannot cross accounts), where aws:SourceAccount is not how the role is
 * protected: Prowler's check flags them and users report it as a false positive (prowler#2810). */
static const char *const deputy_exempt_services[] = {"ec2.amazonaws.com", "lambda.amazonaws.com",
                                                     "ecs-tasks.amazonaws.com",
                                                     "edgelambda.amazonaws.com", NULL};

#define ADMIN_POLICY_ARN "arn:aws:iam::aws:policy/AdministratorAccess"

/* The grants of one principal for AWS-OP-011, kept until its usage data comes. The ARN itself
 * is not kept: only the rule's lookup needs it, and the first 128 bits of its SHA-256 name it
 * as surely (no two of even a billion ARNs share them, and no input can be made to). */
typedef struct aws_grant {
    uint8_t id[16];      /* SHA-256 of the ARN, first 16 bytes */
    int64_t created;     /* epoch seconds, -1 unknown */
    const char *account; /* interned (recs): the principal's, which keys its spilled records */
    const char *svcs;    /* interned (recs): the services its Allow statements name, sorted
                          * ("iam,s3"), "*" for every service, "" when none or too young to report
                          * (it cannot produce a finding, but its usage data must not be read as
                          * unmatched) */
} aws_grant;

/* Service-last-accessed data of one principal that came before its grants (AWS-OP-011). */
typedef struct aws_usage {
    const char *arn, *account, *source; /* interned (recs) */
    const char *data; /* interned (recs): {"completed": ..., "services": {...}} as compact
                       * text; NULL once its grants came */
} aws_usage;

/* An account of the run: audited (TR-003/TR-004 do not call it a third party), with usage data,
 * and the input its principals first came from (AWS-OP-011's "not evaluated" note). */
typedef struct aws_account {
    const char *id;    /* interned */
    const char *noted; /* interned: the first input of its principals, NULL none yet */
    bool audited, usage, note_done;
} aws_account;

/* A trust to another account for TR-003/TR-004 at the end of the run. */
typedef struct aws_cross {
    const char *account, *arn, *source; /* interned (recs) */
    const char *statement;              /* interned (recs): the statement as compact JSON text */
    char other[13];                     /* the trusted account */
    bool admin, guarded;
} aws_cross;

/* The key of the trusts put aside (no account id has a newline). */
#define CROSS_KEY "\n"

/* Most principals the OP-011 index holds, trusts kept for the end, and strings interned. */
#define GRANTS_MAX ((size_t)1 << 30)
#define CROSS_MAX ((size_t)1 << 26)
#define AWS_STRSET_MAX (SIZE_MAX > UINT32_MAX ? (size_t)UINT32_MAX * 4 : SIZE_MAX / 2)

typedef struct aws_state {
    json_t *pending; /* merged pages of an authorization-details export, or NULL */
    char *pending_path;
    json_t *cache;           /* sha256 of canonical document -> analysis (array of hits) */
    size_t analysed, reused; /* cache misses and hits, for tests */
    bool single; /* pending is exactly the one object page of the input being loaded, so its
                  * list indexes are the file's (for the error's line) */
    /* The accounts (OP-011's "not evaluated" note at the end of the run unless usage data came
     * for the account; TR-003/TR-004), with an open-addressing index by interned id. */
    aws_account *accounts;
    size_t n_accounts, alloc_accounts;
    uint32_t *account_slots;
    size_t n_account_slots;
    audit_strset strs; /* the accounts' ids and first inputs: kept for the whole run */
    /* The records of the accounts in memory (grants, usage, cross): grants and usage of other
     * accounts are in spill, under the account's id; trusts to other accounts under
     * CROSS_KEY (see aws_resident). */
    audit_strset recs; /* their ARNs, accounts, sources, service sets, statements */
    audit_spill spill;
    size_t evict_at; /* records held before the others' are put aside */
    /* AWS-OP-011 (service last accessed), decided as soon as both halves are known, in any
     * input order: */
    aws_grant *granted; /* the principals' grants, in the order found */
    size_t n_granted, alloc_granted;
    uint32_t *granted_slots; /* open addressing over granted: index + 1, 0 free */
    size_t n_granted_slots;
    aws_usage *usage; /* usage data not yet matched with its grants, in the order found */
    size_t n_usage, alloc_usage;
    uint32_t *usage_slots; /* open addressing by interned ARN over usage: index + 1, 0 free */
    size_t n_usage_slots;
    char *usage_reason; /* why there is none, for the note (live mode), or NULL */
    json_t *jobs;       /* CloudMapper: job id -> principal ARN (generate outputs) */
    json_t *orphans;    /* job id -> {doc, path}: details waiting for their job's ARN */
    /* Trusts to other accounts, decided at the end of the run (TR-003, TR-004): an account
     * audited in the same run (another input) is part of the estate, not a third party. */
    aws_cross *cross; /* in the order found */
    size_t n_cross, alloc_cross;
} aws_state;

static aws_state *state(ferry_audit *a)
{
    if (!a->aws) {
        aws_state *s = calloc(1, sizeof(aws_state));
        if (s) {
            audit_strset_init(&s->strs, AWS_STRSET_MAX);
            audit_strset_init(&s->recs, AWS_STRSET_MAX);
            audit_spill_init(&s->spill);
            s->evict_at = a->spill_after;
        }
        a->aws = s;
    }
    return a->aws;
}

/* Free the records in memory (grants, usage data, trusts) and their strings. */
static void records_release(aws_state *s)
{
    free(s->granted);
    free(s->granted_slots);
    free(s->usage);
    free(s->usage_slots);
    free(s->cross);
    s->granted = NULL;
    s->granted_slots = NULL;
    s->usage = NULL;
    s->usage_slots = NULL;
    s->cross = NULL;
    s->n_granted = s->alloc_granted = s->n_granted_slots = 0;
    s->n_usage = s->alloc_usage = s->n_usage_slots = 0;
    s->n_cross = s->alloc_cross = 0;
    audit_strset_release(&s->recs);
}

static void aws_release(ferry_audit *a)
{
    aws_state *s = a->aws;
    if (!s)
        return;
    json_decref(s->pending);
    free(s->pending_path);
    json_decref(s->cache);
    free(s->accounts);
    free(s->account_slots);
    records_release(s);
    json_decref(s->jobs);
    json_decref(s->orphans);
    free(s->usage_reason);
    audit_strset_release(&s->strs);
    audit_spill_release(&s->spill);
    free(s);
    a->aws = NULL;
}

/* ---- small helpers --------------------------------------------------------------------- */

static bool in_list(const char *s, const char *const *list)
{
    for (size_t i = 0; list[i]; i++)
        if (strcasecmp(s, list[i]) == 0)
            return true;
    return false;
}

/* A value that may be one item or an array, as a new array reference (NULL -> []). */
static json_t *as_list(json_t *v)
{
    if (json_is_array(v))
        return json_incref(v);
    json_t *arr = json_array();
    if (arr && v && !json_is_null(v) && json_array_append(arr, v) < 0) {
        json_decref(arr);
        return NULL; /* out of memory, as when json_array() fails */
    }
    return arr;
}

static const char *str_member(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* Glob (* and ?) of an IAM pattern against a concrete action (ci: case-insensitive, as IAM
 * compares actions) or resource ARN (case-sensitive). */
static bool glob_match_case(const char *pat, const char *s, bool ci)
{
    const char *star = NULL, *resume = NULL;
    while (*s) {
        if (*pat == '?' ||
            (*pat && *pat != '*' && (ci ? (*pat | 0x20) == (*s | 0x20) : *pat == *s))) {
            pat++;
            s++;
        } else if (*pat == '*') {
            star = pat++;
            resume = s;
        } else if (star) {
            pat = star + 1;
            s = ++resume;
        } else {
            return false;
        }
    }
    while (*pat == '*')
        pat++;
    return *pat == '\0';
}

static bool glob_match(const char *pat, const char *s)
{
    return glob_match_case(pat, s, true);
}

/* The account id of an ARN ("arn:aws:iam::123456789012:role/x"), or of a bare 12-digit id,
 * into out[13]. False when there is none. */
static bool arn_account(const char *arn, char out[13])
{
    const char *p = arn;
    if (!arn)
        return false;
    if (strlen(arn) == 12 && strspn(arn, "0123456789") == 12) {
        memcpy(out, arn, 13);
        return true;
    }
    if (strncmp(arn, "arn:", 4) != 0)
        return false;
    for (int field = 0; field < 4; field++) {
        p = strchr(p, ':');
        if (!p)
            return false;
        p++;
    }
    if (strspn(p, "0123456789") != 12 || p[12] != ':')
        return false;
    memcpy(out, p, 12);
    out[12] = '\0';
    return true;
}

/* The account field of a principal's ARN into out[64] (whatever the export put there: real
 * exports have 12 digits, some test data "aws"). False when arn is not an ARN. */
static bool principal_account(const char *arn, char out[64])
{
    const char *p = arn, *end;
    if (!arn || strncmp(arn, "arn:", 4) != 0)
        return false;
    for (int field = 0; field < 4; field++) {
        p = strchr(p, ':');
        if (!p)
            return false;
        p++;
    }
    end = strchr(p, ':');
    if (!end || end - p > 63)
        return false;
    memcpy(out, p, (size_t)(end - p));
    out[end - p] = '\0';
    return true;
}

/* Percent-decode s into a new buffer. -FERRY_EMALFORMED on a bad escape. */
static int url_decode(const char *s, char **ret, size_t *ret_len)
{
    size_t n = strlen(s), j = 0;
    char *out = malloc(n + 1);
    if (!out)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int hi = i + 2 < n ? ferry_hexval((unsigned char)s[i + 1]) : -1;
            int lo = i + 2 < n ? ferry_hexval((unsigned char)s[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                free(out);
                return -FERRY_EMALFORMED;
            }
            out[j++] = (char)(hi << 4 | lo);
            i += 2;
            continue;
        }
        out[j++] = s[i];
    }
    out[j] = '\0';
    *ret = out;
    *ret_len = j;
    return 0;
}

/* A policy document as found in the export: an object, or URL-encoded JSON text (the raw API
 * form). *ret is a new reference, or NULL when the member is missing or null (tolerated: the
 * export simply has no document). what names the document in errors. */
static int policy_document(ferry_audit *a, json_t *v, const char *what, json_t **ret, char *errbuf,
                           size_t errlen)
{
    char *text = NULL, why[200];
    size_t len = 0;
    int r;

    if (json_is_object(v)) {
        *ret = json_incref(v);
        return 0;
    }
    if (!v || json_is_null(v)) {
        *ret = NULL; /* no document in the export: nothing to check */
        return 0;
    }
    if (!json_is_string(v))
        return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                "%s: expected a policy document (object or URL-encoded JSON "
                                "string)",
                                what);
    r = url_decode(json_string_value(v), &text, &len);
    if (r == -ENOMEM)
        return r;
    if (r < 0)
        return ferry_errbuf_set(errbuf, errlen, r,
                                "%s: bad percent-escape in URL-encoded policy "
                                "document",
                                what);
    r = audit_parse_json(a, text, len, ret, why, sizeof(why));
    free(text);
    if (r < 0)
        return ferry_errbuf_set(errbuf, errlen, r, "%s: URL-encoded policy document: %s", what,
                                why);
    if (!json_is_object(*ret)) {
        json_decref(*ret);
        return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                "%s: policy document is not a JSON object", what);
    }
    return 0;
}

/* ---- policy analysis (cached per canonical document) ----------------------------------- */

static int add_hit(json_t *hits, const char *rule, int sev, json_t *stmt, json_t *extra)
{
    json_t *h = json_object();
    char *canon = audit_json_dumps(stmt, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    char *ecanon = extra ? audit_json_dumps(extra, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    ferry_buf key;
    int r = -ENOMEM;

    ferry_buf_init(&key, (size_t)64 * 1024 * 1024, false);
    if (!h || !canon || (extra && !ecanon))
        goto out;
    if (ferry_buf_append_str(&key, canon) < 0 || ferry_buf_append_str(&key, "\n") < 0 ||
        (ecanon && ferry_buf_append_str(&key, ecanon) < 0))
        goto out;
    if (json_object_set_new(h, "rule", json_string(rule)) < 0 ||
        json_object_set_new(h, "sev", json_integer(sev)) < 0 ||
        json_object_set(h, "statement", stmt) < 0 ||
        json_object_set_new(h, "key", json_string(key.data)) < 0 ||
        (extra && json_object_set(h, "extra", extra) < 0))
        goto out;
    r = json_array_append(hits, h);
out:
    json_decref(h);
    json_decref(extra);
    free(canon);
    free(ecanon);
    ferry_buf_release(&key);
    return r < 0 ? -ENOMEM : 0;
}

static bool list_has_str(const json_t *list, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) if (json_is_string(v) &&
                                       strcmp(json_string_value(v), s) == 0) return true;
    return false;
}

static int unconstrained_actions(json_t *hits, json_t *stmt, json_t *actions, const char *rule,
                                 const char *const *targets)
{
    json_t *matched = json_array();
    size_t i;
    json_t *v;

    if (!matched)
        return -ENOMEM;
    for (size_t t = 0; targets[t]; t++) {
        json_array_foreach(actions, i, v)
        {
            const char *act = json_string_value(v);
            size_t al;
            if (!act || strcmp(act, "*") == 0)
                continue;
            al = strlen(act);
            if (al > 2 && strcmp(act + al - 2, ":*") == 0)
                continue; /* service wildcard: AWS-OP-003 */
            if (glob_match(act, targets[t])) {
                if (json_array_append_new(matched, json_string(targets[t])) < 0) {
                    json_decref(matched);
                    return -ENOMEM;
                }
                break;
            }
        }
    }
    if (json_array_size(matched) == 0) {
        json_decref(matched);
        return 0;
    }
    json_t *extra = json_object();
    if (!extra) {
        json_decref(matched);
        return -ENOMEM;
    }
    if (json_object_set_new(extra, "actions", matched) < 0) { /* matched is released */
        json_decref(extra);
        return -ENOMEM;
    }
    return add_hit(hits, rule, -1, stmt, extra);
}

/* Analyse one policy document: the hits of the permission rules, each with its statement. */
static int analyse_statements(json_t *doc, json_t *hits)
{
    json_t *stmts = as_list(json_object_get(doc, "Statement")), *stmt;
    size_t i;
    int r = 0;

    if (!stmts)
        return -ENOMEM;
    json_array_foreach(stmts, i, stmt)
    {
        json_t *actions = NULL, *notactions = NULL, *resources = NULL;
        const char *effect = str_member(stmt, "Effect");
        bool res_star, has_cond, has_notaction, has_notres;

        if (!json_is_object(stmt) || !effect || strcmp(effect, "Allow") != 0)
            continue;
        actions = as_list(json_object_get(stmt, "Action"));
        notactions = as_list(json_object_get(stmt, "NotAction"));
        resources = as_list(json_object_get(stmt, "Resource"));
        if (!actions || !notactions || !resources) {
            r = -ENOMEM;
            goto next;
        }
        res_star = list_has_str(resources, "*");
        has_cond = json_object_get(stmt, "Condition") != NULL;
        has_notaction = json_object_get(stmt, "NotAction") != NULL;
        has_notres = json_object_get(stmt, "NotResource") != NULL;

        if (((list_has_str(actions, "*") || list_has_str(actions, "*:*")) && res_star) ||
            (has_notaction && json_array_size(notactions) == 0 && res_star)) {
            r = add_hit(hits, "AWS-OP-001", -1, stmt, NULL);
            goto next;
        }
        if (has_notaction || has_notres) {
            r = add_hit(hits, "AWS-OP-004", -1, stmt, NULL);
            if (r < 0 || has_notaction)
                goto next;
        }
        if (!res_star)
            goto next;
        size_t k;
        json_t *v;
        json_array_foreach(actions, k, v)
        {
            const char *act = json_string_value(v);
            size_t al = act ? strlen(act) : 0;
            if (al > 2 && strcmp(act + al - 2, ":*") == 0 && !strchr(act, '?') &&
                memchr(act, '*', al - 1) == NULL) {
                char svc[128];
                int sev = FERRY_AUDIT_MEDIUM;
                (void)snprintf(svc, sizeof(svc), "%.*s", (int)(al - 2), act);
                for (char *c = svc; *c; c++)
                    *c = (char)(*c | 0x20);
                if (in_list(svc, sensitive_services))
                    sev = FERRY_AUDIT_HIGH;
                json_t *extra = json_pack("{s:s}", "service", svc);
                r = extra ? add_hit(hits, "AWS-OP-003", sev, stmt, extra) : -ENOMEM;
                if (r < 0)
                    goto next;
            }
        }
        if (has_cond)
            goto next;
        r = unconstrained_actions(hits, stmt, actions, "AWS-OP-007", credentials_exposure);
        if (r == 0)
            r = unconstrained_actions(hits, stmt, actions, "AWS-OP-008", data_exfiltration);
        if (r == 0)
            r = unconstrained_actions(hits, stmt, actions, "AWS-OP-009", resource_exposure);
    next:
        json_decref(actions);
        json_decref(notactions);
        json_decref(resources);
        if (r < 0)
            break;
    }
    json_decref(stmts);
    return r;
}

/* The analysis of doc, from the cache or computed and cached. *ret is borrowed from the cache
 * (valid until the next call). */
static int analyse_policy(ferry_audit *a, json_t *doc, json_t **ret)
{
    aws_state *s = state(a);
    char hex[65], *canon;
    json_t *hits;
    int r;

    if (!s)
        return -ENOMEM;
    if (!s->cache && !(s->cache = json_object()))
        return -ENOMEM;
    canon = audit_json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    if (!canon)
        return -ENOMEM;
    r = audit_sha256_hex(canon, strlen(canon), hex);
    free(canon);
    if (r < 0)
        return r;
    hits = json_object_get(s->cache, hex);
    if (hits) {
        s->reused++;
        *ret = hits;
        return 0;
    }
    s->analysed++;
    hits = json_array();
    if (!hits)
        return -ENOMEM;
    r = analyse_statements(doc, hits);
    if (r < 0) {
        json_decref(hits);
        return r;
    }
    if (json_object_size(s->cache) >= AWS_CACHE_MAX)
        (void)json_object_clear(s->cache);
    if (json_object_set_new(s->cache, hex, hits) < 0)
        return -ENOMEM;
    *ret = hits;
    return 0;
}

static bool hits_have(const json_t *hits, const char *rule)
{
    size_t i;
    json_t *h;
    json_array_foreach(hits, i, h) if (strcmp(str_member(h, "rule"), rule) == 0) return true;
    return false;
}

void audit_aws_cache_stats(const ferry_audit *a, size_t *ret_analysed, size_t *ret_reused)
{
    const aws_state *s = a->aws;
    *ret_analysed = s ? s->analysed : 0;
    *ret_reused = s ? s->reused : 0;
}

size_t audit_aws_records(const ferry_audit *a, uint64_t *ret_spilled)
{
    const aws_state *s = a->aws;
    *ret_spilled = s ? s->spill.size : 0;
    return s ? s->n_granted + s->n_usage + s->n_cross : 0;
}

/* ---- authorization details: the model of one account ----------------------------------- */

typedef struct aws_ctx {
    ferry_audit *a;
    const char *path;
    json_t *policies; /* arn -> policy entry (borrowed from the document) */
    json_t *managed;  /* arn -> [default document, its analysis], or null: parsed once */
    aws_graph *graph; /* the account's principals, for AWS-OP-006 */
    char *errbuf;
    size_t errlen;
} aws_ctx;

/* The default version's document of a managed policy entry (new reference), NULL when the
 * export has none. */
static int default_document(aws_ctx *c, json_t *pol, const char *arn, json_t **ret)
{
    json_t *versions = as_list(json_object_get(pol, "PolicyVersionList")), *v;
    const char *def = str_member(pol, "DefaultVersionId");
    size_t i;
    int r = 0;

    *ret = NULL;
    if (!versions)
        return -ENOMEM;
    json_array_foreach(versions, i, v)
    {
        const char *vid = str_member(v, "VersionId");
        if (json_is_true(json_object_get(v, "IsDefaultVersion")) ||
            (def && vid && strcmp(def, vid) == 0)) {
            r = policy_document(c->a, json_object_get(v, "Document"), arn, ret, c->errbuf,
                                c->errlen);
            break;
        }
    }
    json_decref(versions);
    return r;
}

static json_t *builtin_admin_document(void)
{
    return json_pack("{s:s, s:[{s:s, s:s, s:s}]}", "Version", "2012-10-17", "Statement", "Effect",
                     "Allow", "Action", "*", "Resource", "*");
}

/* Emit the hits of one policy on a principal; *ret_admin set when it grants full admin. */
static int emit_hits(aws_ctx *c, const char *account, const char *resource, const char *policy,
                     const char *policy_type, json_t *doc, json_t *hits, bool *ret_admin)
{
    json_t *h;
    size_t i;
    int r = hits ? 0 : analyse_policy(c->a, doc, &hits);

    if (r < 0)
        return r;
    json_incref(hits); /* the cache may be cleared by a later analysis */
    json_array_foreach(hits, i, h)
    {
        const char *rule = str_member(h, "rule");
        json_t *ev = json_pack("{s:s, s:s, s:O}", "policy", policy, "policy_type", policy_type,
                               "statement", json_object_get(h, "statement"));
        json_t *extra = json_object_get(h, "extra");
        ferry_buf key;
        if (!ev || (extra && json_object_update(ev, extra) < 0)) {
            json_decref(ev);
            r = -ENOMEM;
            break;
        }
        ferry_buf_init(&key, (size_t)64 * 1024 * 1024, false);
        if (ferry_buf_append_str(&key, policy) < 0 || ferry_buf_append_str(&key, "\n") < 0 ||
            ferry_buf_append_str(&key, str_member(h, "key")) < 0)
            r = -ENOMEM;
        else
            r = audit_emit(c->a, rule, (int)json_integer_value(json_object_get(h, "sev")), CLOUD,
                           account, resource, ev, key.data, c->path);
        ferry_buf_release(&key);
        json_decref(ev);
        if (r < 0)
            break;
        if (strcmp(rule, "AWS-OP-001") == 0 && ret_admin)
            *ret_admin = true;
    }
    json_decref(hits);
    return r;
}

/* The default document of managed policy parn and its analysis, both borrowed from c (NULL
 * when the export has no document for it), parsed and analysed once per file however many
 * principals attach it. */
static int managed_policy(aws_ctx *c, const char *parn, json_t **ret_doc, json_t **ret_hits)
{
    json_t *e = json_object_get(c->managed, parn), *pol, *doc = NULL, *hits;
    int r = 0;

    *ret_doc = *ret_hits = NULL;
    if (!e) {
        pol = json_object_get(c->policies, parn);
        if (pol)
            r = default_document(c, pol, parn, &doc);
        if (r < 0)
            return r;
        if (!doc && strcmp(parn, ADMIN_POLICY_ARN) == 0 && !(doc = builtin_admin_document()))
            return -ENOMEM;
        if (doc && (r = analyse_policy(c->a, doc, &hits)) < 0) {
            json_decref(doc);
            return r;
        }
        e = doc ? json_pack("[o, O]", doc, hits) : json_null();
        if (!e || json_object_set_new(c->managed, parn, e) < 0)
            return -ENOMEM;
    } else if (json_is_array(e)) {
        ((aws_state *)c->a->aws)->reused++; /* the analysis of an earlier principal */
    }
    if (json_is_array(e)) {
        *ret_doc = json_array_get(e, 0);
        *ret_hits = json_array_get(e, 1);
    }
    return 0;
}

static bool service_linked_role(const json_t *role)
{
    const char *path = str_member(role, "Path"), *name = str_member(role, "RoleName");
    return (path && strstr(path, "/aws-service-role/")) ||
           (name && strncmp(name, "AWSServiceRoleFor", 17) == 0);
}

/* What principal_permissions gathers for the principal-wide rules (AWS-OP-002, OP-005). */
typedef struct aws_grants {
    json_t *docs; /* every policy document of the principal (and its groups, for users) */
    json_t *hits; /* the analysis of each of docs, null when not made yet (a user's groups') */
    json_t *cmps; /* ARNs of attached customer-managed policies */
    bool emit;    /* emit the per-policy findings (false: a user's groups, only gathered) */
} aws_grants;

/* Inline and attached managed policies of one principal: per-policy findings, and the
 * documents gathered into g. */
static int principal_permissions(aws_ctx *c, json_t *p, const char *inline_key, const char *account,
                                 const char *arn, bool *ret_admin, aws_grants *g)
{
    json_t *inl = as_list(json_object_get(p, inline_key)), *att = NULL, *v;
    size_t i;
    int r = 0;

    if (!inl)
        return -ENOMEM;
    json_array_foreach(inl, i, v)
    {
        const char *name = str_member(v, "PolicyName");
        char label[600];
        json_t *doc = NULL;
        if (!name) {
            r = ferry_errbuf_set(c->errbuf, c->errlen, -FERRY_EMALFORMED,
                                 "%s: %s[%zu]: expected a PolicyName string", arn, inline_key, i);
            break;
        }
        (void)snprintf(label, sizeof(label), "%s inline policy %s", arn, name);
        r = policy_document(c->a, json_object_get(v, "PolicyDocument"), label, &doc, c->errbuf,
                            c->errlen);
        if (r < 0)
            break;
        if (!doc)
            continue;
        (void)snprintf(label, sizeof(label), "inline:%s", name);
        json_t *hits = NULL; /* borrowed from the cache; kept in g->hits */
        if (g->emit)
            r = analyse_policy(c->a, doc, &hits);
        if (r == 0 && g->emit)
            r = emit_hits(c, account, arn, label, "inline", doc, hits, ret_admin);
        if (r == 0 && (json_array_append(g->docs, doc) < 0 ||
                       json_array_append(g->hits, hits ? hits : json_null()) < 0))
            r = -ENOMEM;
        json_decref(doc);
        if (r < 0)
            break;
    }
    json_decref(inl);
    if (r < 0)
        return r;
    att = as_list(json_object_get(p, "AttachedManagedPolicies"));
    if (!att)
        return -ENOMEM;
    json_array_foreach(att, i, v)
    {
        const char *parn = str_member(v, "PolicyArn");
        json_t *doc = NULL, *hits = NULL;
        if (!parn)
            continue;
        r = managed_policy(c, parn, &doc, &hits);
        if (r < 0)
            break;
        if (!doc)
            continue; /* an AWS-managed policy the export did not include */
        if (g->emit)
            r = emit_hits(c, account, arn, parn, "managed", doc, hits, ret_admin);
        if (r == 0 && (json_array_append(g->docs, doc) < 0 || json_array_append(g->hits, hits) < 0))
            r = -ENOMEM;
        if (r == 0 && strncmp(parn, "arn:aws:iam::aws:", 17) != 0 &&
            json_array_append_new(g->cmps, json_string(parn)) < 0)
            r = -ENOMEM;
        if (r < 0)
            break;
    }
    json_decref(att);
    return r;
}

/* The values of condition key (any operator), or NULL. */
static json_t *condition_values(json_t *cond, const char *key)
{
    const char *op, *k;
    json_t *keys, *v;
    json_object_foreach(cond, op, keys)
    {
        json_object_foreach(keys, k, v) if (strcasecmp(k, key) == 0) return v;
    }
    return NULL;
}

/* *ret_wild: a sub pattern that pins nothing ("*", "*..." or "repo:*"). -ENOMEM or 0. */
static int sub_is_wildcard(json_t *vals, bool *ret_wild)
{
    json_t *list = as_list(vals), *v;
    size_t i;

    if (!list)
        return -ENOMEM;
    *ret_wild = false;
    json_array_foreach(list, i, v)
    {
        const char *s = json_string_value(v);
        if (!s || s[0] == '*' || strncmp(s, "repo:*", 6) == 0)
            *ret_wild = true;
    }
    json_decref(list);
    return 0;
}

static int trust_finding(aws_ctx *c, const char *rule, int sev, const char *account,
                         const char *arn, json_t *stmt, const char *k, const char *v,
                         const char *key)
{
    json_t *ev = json_pack("{s:O}", "statement", stmt);
    char *canon = audit_json_dumps(stmt, JSON_COMPACT | JSON_SORT_KEYS);
    ferry_buf kb;
    int r = -ENOMEM;

    ferry_buf_init(&kb, (size_t)64 * 1024 * 1024, false);
    if (!ev || !canon || (k && json_object_set_new(ev, k, json_string(v)) < 0))
        goto out;
    if (ferry_buf_append_str(&kb, "trust\n") < 0 || ferry_buf_append_str(&kb, canon) < 0 ||
        ferry_buf_append_str(&kb, "\n") < 0 || ferry_buf_append_str(&kb, key ? key : "") < 0)
        goto out;
    r = audit_emit(c->a, rule, sev, CLOUD, account, arn, ev, kb.data, c->path);
out:
    json_decref(ev);
    free(canon);
    ferry_buf_release(&kb);
    return r;
}

static aws_account *account_find(aws_state *s, const char *account);
static int aws_resident(ferry_audit *a, aws_state *s, const char *account, char *errbuf,
                        size_t errlen);

/* Keep a trust to another account (its strings borrowed, interned in recs). */
static int cross_put(aws_state *s, const aws_cross *e)
{
    aws_cross k = *e;
    int r =
        audit_vec_room(&s->cross, &s->alloc_cross, s->n_cross, sizeof(*s->cross), 64, CROSS_MAX);

    if (r == 0)
        r = audit_strset_intern(&s->recs, e->statement, &k.statement);
    if (r == 0)
        r = audit_strset_intern(&s->recs, e->account, &k.account);
    if (r == 0)
        r = audit_strset_intern(&s->recs, e->arn, &k.arn);
    if (r == 0)
        r = audit_strset_intern(&s->recs, e->source, &k.source);
    if (r < 0)
        return r;
    s->cross[s->n_cross++] = k;
    return 0;
}

/* Remember a trust to another account for the end of the run (see aws_state.cross), the
 * statement as its compact text (parsed again only for a finding). A trust to an account
 * already known or audited is decided now: the estate's, which nothing makes a third party
 * later. */
static int cross_account_candidate(aws_ctx *c, const char *account, const char *arn, json_t *stmt,
                                   const char *other, bool admin, bool guarded)
{
    aws_state *s = state(c->a);
    aws_cross e = {
        .admin = admin, .guarded = guarded, .account = account, .arn = arn, .source = c->path};
    const aws_account *o;
    char *text;
    int r;

    if (!s)
        return -ENOMEM;
    o = account_find(s, other);
    if (audit_account_known(c->a, other) || (o && o->audited))
        return 0;
    if ((r = aws_resident(c->a, s, account, c->errbuf, c->errlen)) < 0)
        return r;
    text = audit_json_dumps(stmt, JSON_COMPACT);
    if (!text)
        return -ENOMEM;
    e.statement = text;
    (void)snprintf(e.other, sizeof(e.other), "%s", other);
    r = cross_put(s, &e);
    free(text);
    return r;
}

static size_t account_slot(const aws_account *accounts, const uint32_t *slots, size_t n_slots,
                           const char *id)
{
    size_t mask = n_slots - 1, i = (size_t)(((uintptr_t)id * 0x9e3779b97f4a7c15ULL) >> 17) & mask;
    while (slots[i] && accounts[slots[i] - 1].id != id)
        i = (i + 1) & mask;
    return i;
}

/* The record of an account, or NULL. */
static aws_account *account_find(aws_state *s, const char *account)
{
    const char *id = s->n_accounts ? audit_strset_find(&s->strs, account) : NULL;
    uint32_t at;

    if (!id)
        return NULL;
    at = s->account_slots[account_slot(s->accounts, s->account_slots, s->n_account_slots, id)];
    return at ? &s->accounts[at - 1] : NULL;
}

/* The record of an account, added on first sight, in *ret (good until the next add). */
static int account_get(aws_state *s, const char *account, aws_account **ret)
{
    aws_account *found = account_find(s, account);
    const char *id;
    int r;

    if (found) {
        *ret = found;
        return 0;
    }
    if ((r = audit_strset_intern(&s->strs, account, &id)) < 0)
        return r;
    if ((r = audit_vec_room(&s->accounts, &s->alloc_accounts, s->n_accounts, sizeof(*s->accounts),
                            64, GRANTS_MAX)) < 0)
        return r;
    if ((s->n_accounts + 1) * 2 > s->n_account_slots) {
        size_t n = s->n_account_slots ? s->n_account_slots * 2 : 128;
        uint32_t *slots = calloc(n, sizeof(*slots));
        if (!slots)
            return -ENOMEM;
        for (size_t i = 0; i < s->n_accounts; i++)
            slots[account_slot(s->accounts, slots, n, s->accounts[i].id)] = (uint32_t)i + 1;
        free(s->account_slots);
        s->account_slots = slots;
        s->n_account_slots = n;
    }
    s->accounts[s->n_accounts] = (aws_account){.id = id};
    s->account_slots[account_slot(s->accounts, s->account_slots, s->n_account_slots, id)] =
        (uint32_t)s->n_accounts + 1;
    *ret = &s->accounts[s->n_accounts++];
    return 0;
}

/* An account is part of the audited estate (so trusting it is not a third-party trust). */
static int account_audited(ferry_audit *a, const char *account)
{
    aws_state *s = state(a);
    aws_account *acct;
    int r = s ? account_get(s, account, &acct) : -ENOMEM;

    if (r == 0)
        acct->audited = true;
    return r;
}

/* TR-003 (with --known-accounts) and TR-004 for a trust, unless the account it trusts is
 * known or was audited in this run. */
static int cross_decide(ferry_audit *a, const aws_cross *e)
{
    aws_ctx c = {.a = a, .path = e->source};
    const aws_account *other = account_find(a->aws, e->other);
    json_t *stmt;
    int r = 0;

    if (audit_account_known(a, e->other) || (other && other->audited))
        return 0;
    if (!a->n_known && e->guarded)
        return 0;
    if (!(stmt = audit_json_reparse(e->statement)))
        return -ENOMEM;
    if (a->n_known)
        r = trust_finding(&c, "AWS-TR-003", e->admin ? FERRY_AUDIT_HIGH : FERRY_AUDIT_MEDIUM,
                          e->account, e->arn, stmt, "trusted_account", e->other, e->other);
    if (r == 0 && !e->guarded)
        r = trust_finding(&c, "AWS-TR-004", -1, e->account, e->arn, stmt, "trusted_account",
                          e->other, e->other);
    json_decref(stmt);
    return r;
}

static int cross_segment(void *userdata, const char *data, size_t len);

/* The trusts kept for the end of the run, in the order found: those put aside first. */
static int cross_account_rules(ferry_audit *a)
{
    aws_state *s = a->aws;
    int r;

    if (!s)
        return 0;
    r = audit_spill_take(&s->spill, CROSS_KEY, cross_segment, a);
    for (size_t i = 0; r == 0 && i < s->n_cross; i++)
        r = cross_decide(a, &s->cross[i]);
    free(s->cross);
    s->cross = NULL;
    s->n_cross = s->alloc_cross = 0;
    return r;
}

/* The trust rules over a role's parsed trust policy doc (borrowed; NULL when none). */
static int role_trust(aws_ctx *c, json_t *doc, const char *account, const char *arn, bool admin)
{
    json_t *stmts, *stmt;
    size_t i;
    int r = 0;

    if (!doc)
        return 0;
    stmts = as_list(json_object_get(doc, "Statement"));
    if (!stmts)
        return -ENOMEM;
    json_array_foreach(stmts, i, stmt)
    {
        json_t *principal = json_object_get(stmt, "Principal"), *cond, *list, *v;
        const char *effect = str_member(stmt, "Effect");
        size_t k;
        if (!effect || strcmp(effect, "Allow") != 0 || !principal)
            continue;
        cond = json_object_get(stmt, "Condition");
        json_t *aws = json_is_object(principal) ? json_object_get(principal, "AWS") : NULL;
        json_t *awsl = as_list(aws);
        if (!awsl) {
            r = -ENOMEM;
            break;
        }
        if ((json_is_string(principal) && strcmp(json_string_value(principal), "*") == 0) ||
            list_has_str(awsl, "*")) {
            r = trust_finding(c, cond ? "AWS-TR-002" : "AWS-TR-001", -1, account, arn, stmt, NULL,
                              NULL, NULL);
        }
        json_array_foreach(awsl, k, v)
        {
            char other[13];
            if (r < 0 || !arn_account(json_string_value(v), other) || strcmp(other, account) == 0)
                continue;
            r = cross_account_candidate(c, account, arn, stmt, other, admin,
                                        condition_values(cond, "sts:ExternalId") ||
                                            condition_values(cond, "aws:MultiFactorAuthPresent"));
        }
        json_decref(awsl);
        if (r < 0)
            break;
        list = as_list(json_is_object(principal) ? json_object_get(principal, "Federated") : NULL);
        if (!list) {
            r = -ENOMEM;
            break;
        }
        json_array_foreach(list, k, v)
        {
            const char *fed = json_string_value(v), *host;
            char subkey[600];
            json_t *sub;
            if (!fed || !(host = strstr(fed, ":oidc-provider/")))
                continue;
            host += strlen(":oidc-provider/");
            (void)snprintf(subkey, sizeof(subkey), "%s:sub", host);
            sub = condition_values(cond, subkey);
            bool wild = true;
            if (sub)
                r = sub_is_wildcard(sub, &wild);
            if (r == 0 && wild)
                r = trust_finding(c, "AWS-TR-005", -1, account, arn, stmt, "provider", host, host);
            if (r < 0)
                break;
        }
        json_decref(list);
        if (r < 0)
            break;
        list = as_list(json_is_object(principal) ? json_object_get(principal, "Service") : NULL);
        if (!list) {
            r = -ENOMEM;
            break;
        }
        json_array_foreach(list, k, v)
        {
            const char *svc = json_string_value(v);
            if (!svc || in_list(svc, deputy_exempt_services))
                continue;
            if (!condition_values(cond, "aws:SourceAccount") &&
                !condition_values(cond, "aws:SourceArn") &&
                !condition_values(cond, "aws:SourceOrgID") &&
                !condition_values(cond, "aws:SourceOrgPaths"))
                r = trust_finding(c, "AWS-TR-006", -1, account, arn, stmt, "service", svc, svc);
            if (r < 0)
                break;
        }
        json_decref(list);
        if (r < 0)
            break;
    }
    json_decref(stmts);
    return r;
}

static int role_usage(aws_ctx *c, json_t *role, const char *account, const char *arn)
{
    const ferry_audit_options *o = &c->a->opts;
    const char *created = str_member(role, "CreateDate");
    const char *last = str_member(json_object_get(role, "RoleLastUsed"), "LastUsedDate");
    int64_t now = audit_now(c->a), t;

    /* Exports made before IAM tracked role use have no RoleLastUsed at all: unknown, not
     * unused. An empty RoleLastUsed object means never used. */
    if (!json_is_object(json_object_get(role, "RoleLastUsed")))
        return 0;
    if (created && audit_parse_time(created, &t) == 0 && now - t < (int64_t)o->grace_days * DAY)
        return 0;
    if (last) {
        if (audit_parse_time(last, &t) < 0)
            return ferry_errbuf_set(c->errbuf, c->errlen, -FERRY_EMALFORMED,
                                    "%s: RoleLastUsed.LastUsedDate: expected a date, got '%.40s'",
                                    arn, last);
        if (now - t < (int64_t)o->unused_days * DAY)
            return 0;
    }
    json_t *ev = json_pack("{s:s?, s:s?, s:i}", "last_used", last, "created", created,
                           "unused_days", (int)o->unused_days);
    if (!ev)
        return -ENOMEM;
    int r = audit_emit(c->a, "AWS-SH-001", -1, CLOUD, account, arn, ev, "unused-role", c->path);
    json_decref(ev);
    return r;
}

/* ---- principal-wide rules: admin-equivalence, escalation, compute ------------------- */

/* v (a string or an array of strings) has a pattern matching s. */
static bool any_glob(const json_t *v, const char *s, bool ci)
{
    size_t i;
    json_t *e;
    if (json_is_string(v))
        return glob_match_case(json_string_value(v), s, ci);
    json_array_foreach(v, i, e) if (json_is_string(e) &&
                                    glob_match_case(json_string_value(e), s, ci)) return true;
    return false;
}

/* The members of a statement allowed() reads, found in one pass over its few members rather
 * than a hash look-up each: the principal-wide rules and the escalation graph ask this of
 * every statement of a principal many times. */
typedef struct stmt_parts {
    json_t *effect, *acts, *nacts, *res, *nres, *cond;
} stmt_parts;

static void stmt_split(json_t *stmt, stmt_parts *sp)
{
    const char *k;
    json_t *v;

    memset(sp, 0, sizeof(*sp));
    json_object_foreach(stmt, k, v)
    {
        switch (k[0]) {
        case 'E':
            if (strcmp(k, "Effect") == 0)
                sp->effect = v;
            break;
        case 'A':
            if (strcmp(k, "Action") == 0)
                sp->acts = v;
            break;
        case 'N':
            if (strcmp(k, "NotAction") == 0)
                sp->nacts = v;
            else if (strcmp(k, "NotResource") == 0)
                sp->nres = v;
            break;
        case 'R':
            if (strcmp(k, "Resource") == 0)
                sp->res = v;
            break;
        case 'C':
            if (strcmp(k, "Condition") == 0)
                sp->cond = v;
            break;
        default:
            break;
        }
    }
}

/* The statement (without Condition) covers action, on some resource. */
static bool stmt_covers_action(const stmt_parts *sp, const char *action)
{
    if (sp->cond)
        return false;
    return sp->acts ? any_glob(sp->acts, action, true)
                    : (sp->nacts && !any_glob(sp->nacts, action, true));
}

/* The statement (without Condition) covers action on resource. */
static bool stmt_covers(const stmt_parts *sp, const char *action, const char *resource)
{
    if (!stmt_covers_action(sp, action))
        return false;
    return sp->res ? any_glob(sp->res, resource, false)
                   : (sp->nres && !any_glob(sp->nres, resource, false));
}

/* Some statement of docs allows action on resource and none denies it. Statements with a
 * Condition are ignored on both sides (see docs/internals/audit.md). */
static bool allowed(const json_t *docs, const char *action, const char *resource)
{
    bool allow = false;
    size_t i, k;
    json_t *doc, *stmt, *stmts;

    json_array_foreach(docs, i, doc)
    {
        stmts = json_object_get(doc, "Statement");
        size_t n = json_is_array(stmts) ? json_array_size(stmts) : 1;
        for (k = 0; k < n; k++) {
            const char *effect;
            stmt_parts sp;
            stmt = json_is_array(stmts) ? json_array_get(stmts, k) : stmts;
            if (!json_is_object(stmt))
                continue;
            stmt_split(stmt, &sp);
            effect = json_string_value(sp.effect);
            if (!effect || !stmt_covers(&sp, action, resource))
                continue;
            if (strcmp(effect, "Deny") == 0)
                return false;
            if (strcmp(effect, "Allow") == 0)
                allow = true;
        }
    }
    return allow;
}

bool audit_aws_allowed(const json_t *docs, const char *action, const char *resource)
{
    return allowed(docs, action, resource);
}

bool audit_aws_glob_action(const char *pattern, const char *action)
{
    return glob_match_case(pattern, action, true);
}

bool audit_aws_action_allowed(const json_t *docs, const char *action)
{
    size_t i, k;
    json_t *doc, *stmt, *stmts;

    json_array_foreach(docs, i, doc)
    {
        stmts = json_object_get(doc, "Statement");
        size_t n = json_is_array(stmts) ? json_array_size(stmts) : 1;
        for (k = 0; k < n; k++) {
            const char *effect;
            stmt_parts sp;
            stmt = json_is_array(stmts) ? json_array_get(stmts, k) : stmts;
            if (!json_is_object(stmt))
                continue;
            stmt_split(stmt, &sp);
            effect = json_string_value(sp.effect);
            if (effect && strcmp(effect, "Allow") == 0 && stmt_covers_action(&sp, action))
                return true;
        }
    }
    return false;
}

/* Known privilege-escalation combinations (Cloudsplaining / pathfinding.cloud families). */
static const struct {
    const char *name;
    const char *actions[4];
} privesc[] = {
    {"pass a role to a new EC2 instance", {"iam:PassRole", "ec2:RunInstances"}},
    {"pass a role to a new Lambda function",
     {"iam:PassRole", "lambda:CreateFunction", "lambda:InvokeFunction"}},
    {"pass a role to a Lambda function run by an event source",
     {"iam:PassRole", "lambda:CreateFunction", "lambda:CreateEventSourceMapping"}},
    {"pass a role to a CloudFormation stack", {"iam:PassRole", "cloudformation:CreateStack"}},
    {"pass a role to a Glue dev endpoint", {"iam:PassRole", "glue:CreateDevEndpoint"}},
    {"pass a role to a Data Pipeline",
     {"iam:PassRole", "datapipeline:CreatePipeline", "datapipeline:PutPipelineDefinition"}},
    {"pass a role to a SageMaker notebook",
     {"iam:PassRole", "sagemaker:CreateNotebookInstance",
      "sagemaker:CreatePresignedNotebookInstanceUrl"}},
    {"pass a role to an ECS task", {"iam:PassRole", "ecs:RegisterTaskDefinition", "ecs:RunTask"}},
    {"pass a role to a CodeBuild project",
     {"iam:PassRole", "codebuild:CreateProject", "codebuild:StartBuild"}},
    {"create access keys for any user", {"iam:CreateAccessKey"}},
    {"set the console password of any user", {"iam:CreateLoginProfile"}},
    {"change the console password of any user", {"iam:UpdateLoginProfile"}},
    {"write a new version of any managed policy", {"iam:CreatePolicyVersion"}},
    {"switch the default version of any managed policy", {"iam:SetDefaultPolicyVersion"}},
    {"attach policies to any user", {"iam:AttachUserPolicy"}},
    {"attach policies to any group", {"iam:AttachGroupPolicy"}},
    {"attach policies to any role", {"iam:AttachRolePolicy"}},
    {"write inline policies of any user", {"iam:PutUserPolicy"}},
    {"write inline policies of any group", {"iam:PutGroupPolicy"}},
    {"write inline policies of any role", {"iam:PutRolePolicy"}},
    {"add any user to any group", {"iam:AddUserToGroup"}},
    {"rewrite any role's trust policy and assume it",
     {"iam:UpdateAssumeRolePolicy", "sts:AssumeRole"}},
    {"replace the code of any Lambda function", {"lambda:UpdateFunctionCode"}},
    {"take over any Glue dev endpoint", {"glue:UpdateDevEndpoint"}},
};

/* A resource no narrow grant names, in the principal's account: only a wildcard grant
 * covers it. IAM actions get an ARN of the type they act on. */
static void probe_resource(const char *action, const char *account, char *out, size_t outlen)
{
    const char *type = NULL;
    if (strncasecmp(action, "iam:", 4) == 0) {
        const char *a = action + 4;
        if (strcasestr(a, "Group"))
            type = "group";
        else if (strcasestr(a, "User") || strcasestr(a, "AccessKey") ||
                 strcasestr(a, "LoginProfile"))
            type = "user";
        else if (strcasestr(a, "PolicyVersion"))
            type = "policy";
        else
            type = "role";
    } else if (strcasecmp(action, "sts:AssumeRole") == 0) {
        type = "role";
    }
    if (type)
        (void)snprintf(out, outlen, "arn:aws:iam::%s:%s/ferry-audit-probe", account, type);
    else
        (void)snprintf(out, outlen, "*");
}

static bool allowed_anywhere(const json_t *docs, const char *action, const char *account)
{
    char probe[160];
    probe_resource(action, account, probe, sizeof(probe));
    return allowed(docs, action, probe);
}

/* Facts about a role's trust policy the principal-wide rules need. */
typedef struct aws_trust {
    bool compute;     /* a compute service, or EKS pods through web identity */
    bool external;    /* anyone, or a principal of another account */
    json_t *services; /* compute services named (new reference, or NULL) */
} aws_trust;

static const char *const compute_services[] = {
    "ec2.amazonaws.com",       "lambda.amazonaws.com",   "ecs-tasks.amazonaws.com",
    "eks.amazonaws.com",       "pods.eks.amazonaws.com", "codebuild.amazonaws.com",
    "sagemaker.amazonaws.com", "batch.amazonaws.com",    NULL};

static int trust_facts(json_t *doc, const char *account, aws_trust *t)
{
    json_t *stmts = json_object_get(doc, "Statement"), *stmt;
    size_t n = json_is_array(stmts) ? json_array_size(stmts) : (stmts ? 1 : 0);

    memset(t, 0, sizeof(*t));
    t->services = json_array();
    if (!t->services)
        return -ENOMEM;
    for (size_t k = 0; k < n; k++) {
        json_t *p, *v;
        const char *effect;
        size_t i;
        stmt = json_is_array(stmts) ? json_array_get(stmts, k) : stmts;
        effect = str_member(stmt, "Effect");
        p = json_object_get(stmt, "Principal");
        if (!effect || strcmp(effect, "Allow") != 0 || !p)
            continue;
        if (json_is_string(p)) {
            t->external = true;
            continue;
        }
        json_t *aws = json_object_get(p, "AWS"), *svc = json_object_get(p, "Service");
        json_t *fed = json_object_get(p, "Federated");
        for (i = 0; i < (json_is_array(aws) ? json_array_size(aws) : (aws ? 1 : 0)); i++) {
            char other[13];
            const char *s = json_string_value(json_is_array(aws) ? json_array_get(aws, i) : aws);
            if (s &&
                (strcmp(s, "*") == 0 || (arn_account(s, other) && strcmp(other, account) != 0)))
                t->external = true;
        }
        for (i = 0; i < (json_is_array(svc) ? json_array_size(svc) : (svc ? 1 : 0)); i++) {
            v = json_is_array(svc) ? json_array_get(svc, i) : svc;
            if (json_is_string(v) && in_list(json_string_value(v), compute_services)) {
                t->compute = true;
                if (json_array_append(t->services, v) < 0)
                    return -ENOMEM;
            }
        }
        for (i = 0; i < (json_is_array(fed) ? json_array_size(fed) : (fed ? 1 : 0)); i++) {
            const char *s = json_string_value(json_is_array(fed) ? json_array_get(fed, i) : fed);
            if (s && strstr(s, ":oidc-provider/oidc.eks.")) {
                t->compute = true;
                if (json_array_append_new(t->services, json_string(s)) < 0)
                    return -ENOMEM;
            }
        }
    }
    return 0;
}

/* The services the Allow statements without a Condition of some documents can grant at all:
 * allowed() is false for an action of any other service, so escalation() need not ask it.
 * any: a NotAction, or an Action pattern whose service part has a wildcard (or no ':'). The
 * service names are compared as glob_match_case() compares actions (each byte | 0x20). */
typedef struct grant_filter {
    bool any;
    char services[512]; /* ",svc,svc," */
} grant_filter;

static void filter_add(grant_filter *f, const char *pat)
{
    const char *colon = strchr(pat, ':');
    char item[128];
    size_t n, used;

    if (!colon || memchr(pat, '*', (size_t)(colon - pat)) ||
        memchr(pat, '?', (size_t)(colon - pat)) || (size_t)(colon - pat) + 3 > sizeof(item)) {
        f->any = true;
        return;
    }
    n = (size_t)(colon - pat);
    item[0] = ',';
    for (size_t i = 0; i < n; i++)
        item[i + 1] = (char)(pat[i] | 0x20);
    item[n + 1] = ',';
    item[n + 2] = '\0';
    if (strstr(f->services, item))
        return;
    used = strlen(f->services);
    if (used + n + 2 > sizeof(f->services)) {
        f->any = true;
        return;
    }
    memcpy(f->services + used, item + 1, n + 2); /* "svc," and the NUL */
}

static void grant_filter_init(grant_filter *f, const json_t *docs)
{
    size_t i, k;
    json_t *doc, *stmts, *stmt, *e;

    f->any = false;
    f->services[0] = ',';
    f->services[1] = '\0';
    json_array_foreach(docs, i, doc)
    {
        stmts = json_object_get(doc, "Statement");
        size_t n = json_is_array(stmts) ? json_array_size(stmts) : 1;
        for (k = 0; k < n && !f->any; k++) {
            stmt_parts sp;
            const char *effect;
            stmt = json_is_array(stmts) ? json_array_get(stmts, k) : stmts;
            if (!json_is_object(stmt))
                continue;
            stmt_split(stmt, &sp);
            effect = json_string_value(sp.effect);
            if (!effect || strcmp(effect, "Allow") != 0 || sp.cond)
                continue;
            if (!sp.acts) {
                f->any = f->any || sp.nacts;
                continue;
            }
            if (json_is_string(sp.acts))
                filter_add(f, json_string_value(sp.acts));
            size_t j;
            json_array_foreach(sp.acts, j, e) if (json_is_string(e))
                filter_add(f, json_string_value(e));
        }
    }
}

/* allowed(docs, action, ...) may be true for some resource. */
static bool grant_filter_may(const grant_filter *f, const char *action)
{
    const char *colon = strchr(action, ':');
    char item[128];
    size_t n;

    if (f->any || !colon || (size_t)(colon - action) + 3 > sizeof(item))
        return true;
    n = (size_t)(colon - action);
    item[0] = ',';
    for (size_t i = 0; i < n; i++)
        item[i + 1] = (char)(action[i] | 0x20);
    item[n + 1] = ',';
    item[n + 2] = '\0';
    return strstr(f->services, item) != NULL;
}

/* AWS-OP-002 and AWS-OP-005 for a principal that is not full admin. kind: 0 user, 1 group,
 * 2 role. group_arns: the user's groups. *ret_admin_eq set for OP-002. */
static int escalation(aws_ctx *c, int kind, const char *account, const char *arn,
                      const aws_grants *g, const json_t *group_docs, const json_t *group_arns,
                      const aws_trust *t, bool *ret_admin_eq)
{
    static const char *const self_put[] = {"iam:PutUserPolicy", "iam:PutGroupPolicy",
                                           "iam:PutRolePolicy"};
    static const char *const self_attach[] = {"iam:AttachUserPolicy", "iam:AttachGroupPolicy",
                                              "iam:AttachRolePolicy"};
    json_t *methods = json_array(), *caps = json_array(), *v, *ev = NULL;
    char probe[160], line[700];
    grant_filter gf; /* of g->docs, which hold group_docs too */
    size_t i;
    int r = -ENOMEM;

    if (!methods || !caps)
        goto out;
    grant_filter_init(&gf, g->docs);
#define METHOD(...)                                                                                \
    do {                                                                                           \
        (void)snprintf(line, sizeof(line), __VA_ARGS__);                                           \
        if (json_array_append_new(methods, json_string(line)) < 0)                                 \
            goto out;                                                                              \
    } while (0)
    if (allowed(g->docs, self_put[kind], arn))
        METHOD("%s on itself", self_put[kind]);
    if (allowed(g->docs, self_attach[kind], arn))
        METHOD("%s on itself", self_attach[kind]);
    json_array_foreach(group_arns, i, v)
    {
        const char *ga = json_string_value(v);
        if (allowed(g->docs, "iam:PutGroupPolicy", ga))
            METHOD("iam:PutGroupPolicy on its group %s", ga);
        if (allowed(g->docs, "iam:AttachGroupPolicy", ga))
            METHOD("iam:AttachGroupPolicy on its group %s", ga);
    }
    json_array_foreach(g->cmps, i, v)
    {
        if (allowed(g->docs, "iam:CreatePolicyVersion", json_string_value(v)))
            METHOD("iam:CreatePolicyVersion on its attached policy %s", json_string_value(v));
    }
    (void)snprintf(probe, sizeof(probe), "arn:aws:iam::%s:role/ferry-audit-probe", account);
    if (allowed(g->docs, "iam:CreateRole", probe) &&
        (allowed(g->docs, "iam:AttachRolePolicy", probe) ||
         allowed(g->docs, "iam:PutRolePolicy", probe)))
        METHOD("iam:CreateRole with iam:AttachRolePolicy or iam:PutRolePolicy on the new role");
#undef METHOD
    r = 0;
    if (json_array_size(methods) > 0) {
        int sev =
            kind == 2 && (t->compute || t->external) ? FERRY_AUDIT_CRITICAL : FERRY_AUDIT_HIGH;
        ev = json_pack("{s:O}", "methods", methods);
        r = ev ? audit_emit(c->a, "AWS-OP-002", sev, CLOUD, account, arn, ev, "admin-equivalent",
                            c->path)
               : -ENOMEM;
        json_decref(ev);
        ev = NULL;
        *ret_admin_eq = true;
        if (r < 0)
            goto out;
    }
    for (size_t k = 0; k < ARRAY_SIZE(privesc); k++) {
        bool all = true;
        json_t *acts;
        for (size_t a = 0; a < 4 && privesc[k].actions[a] && all; a++)
            all = grant_filter_may(&gf, privesc[k].actions[a]) &&
                  allowed_anywhere(g->docs, privesc[k].actions[a], account);
        if (!all)
            continue;
        /* A user's capability that its groups' policies give on their own is reported on
         * the group, not again on every member. */
        bool by_groups = json_array_size(group_docs) > 0;
        for (size_t a = 0; by_groups && a < 4 && privesc[k].actions[a]; a++)
            by_groups = allowed_anywhere(group_docs, privesc[k].actions[a], account);
        if (by_groups)
            continue;
        acts = json_array();
        for (size_t a = 0; acts && a < 4 && privesc[k].actions[a]; a++)
            if (json_array_append_new(acts, json_string(privesc[k].actions[a])) < 0) {
                json_decref(acts);
                acts = NULL;
            }
        if (!acts || json_array_append_new(caps, json_pack("{s:s, s:o}", "capability",
                                                           privesc[k].name, "actions", acts)) < 0) {
            r = -ENOMEM;
            goto out;
        }
    }
    if (json_array_size(caps) > 0) {
        ev = json_pack("{s:O}", "capabilities", caps);
        r = ev ? audit_emit(c->a, "AWS-OP-005", -1, CLOUD, account, arn, ev, "privesc", c->path)
               : -ENOMEM;
    }
out:
    json_decref(ev);
    json_decref(methods);
    json_decref(caps);
    return r;
}

/* AWS-OP-010: an admin (or admin-equivalent) role reachable from compute. */
static int compute_admin(aws_ctx *c, json_t *role, const char *account, const char *arn, bool admin,
                         const aws_trust *t)
{
    json_t *profiles = json_object_get(role, "InstanceProfileList"), *ips, *v, *ev;
    size_t i;
    int r;

    ips = json_array();
    if (!ips)
        return -ENOMEM;
    json_array_foreach(profiles, i, v)
    {
        json_t *pa = json_object_get(v, "Arn");
        if (json_is_string(pa) && json_array_append(ips, pa) < 0) {
            json_decref(ips);
            return -ENOMEM;
        }
    }
    if (!t->compute && json_array_size(ips) == 0) {
        json_decref(ips);
        return 0;
    }
    ev = json_pack("{s:s, s:o, s:O}", "admin", admin ? "full" : "equivalent", "instance_profiles",
                   ips, "trusted_compute", t->services);
    if (!ev)
        return -ENOMEM;
    r = audit_emit(c->a, "AWS-OP-010", -1, CLOUD, account, arn, ev, "compute", c->path);
    json_decref(ev);
    return r;
}

/* Full admin through any gathered document (a user through its groups, for instance); the
 * analyses principal_permissions made are reused. */
static int any_full_admin(ferry_audit *a, const aws_grants *g, bool *ret)
{
    size_t i;
    json_t *doc, *hits;
    json_array_foreach(g->docs, i, doc)
    {
        hits = json_array_get(g->hits, i);
        int r = hits && !json_is_null(hits) ? 0 : analyse_policy(a, doc, &hits);
        if (r < 0)
            return r;
        if (hits_have(hits, "AWS-OP-001")) {
            *ret = true;
            return 0;
        }
    }
    return 0;
}

static int usage_principal(aws_ctx *c, json_t *p, const char *arn, const json_t *docs);

/* Roles and users AWS creates and manages itself: never "unmanaged" (AWS-SH-010). */
static bool aws_managed_principal(const json_t *p)
{
    const char *path = str_member(p, "Path"), *name = str_member(p, "RoleName");
    static const char *const prefixes[] = {"AWSServiceRoleFor", "AWSReservedSSO_",
                                           "AWSControlTower", "aws-controltower-", NULL};
    if (path && (strstr(path, "/aws-service-role/") || strncmp(path, "/aws-reserved/", 14) == 0))
        return true;
    for (size_t i = 0; name && prefixes[i]; i++)
        if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0)
            return true;
    return false;
}

/* AWS-SH-009 (no owner tag) and AWS-SH-010 (not in the IaC inventory) for a role or user. */
static int principal_hygiene(aws_ctx *c, json_t *p, bool role, const char *account, const char *arn,
                             bool admin)
{
    const char *name = str_member(p, role ? "RoleName" : "UserName");
    json_t *ev;
    int r = 0;

    if (c->a->owner_tag_keys && !audit_owner_tagged(c->a, json_object_get(p, "Tags"))) {
        json_t *keys = json_array(), *v;
        const char *k;
        json_object_foreach(c->a->owner_tag_keys, k, v)
        {
            if (keys && json_array_append_new(keys, json_string(k)) < 0) {
                json_decref(keys);
                keys = NULL;
            }
        }
        ev = keys ? json_pack("{s:o}", "owner_tag_keys", keys) : NULL;
        r = ev ? audit_emit(c->a, "AWS-SH-009", -1, CLOUD, account, arn, ev, "no-owner-tag",
                            c->path)
               : -ENOMEM;
        json_decref(ev);
    }
    if (r == 0 && audit_iac_loaded(c->a) && !aws_managed_principal(p) &&
        !audit_iac_manages_aws(c->a, arn, account, role, name)) {
        ev = json_pack("{s:b, s:b}", "in_iac_inventory", 0, "admin", admin);
        r = ev ? audit_emit(c->a, "AWS-SH-010", admin ? FERRY_AUDIT_MEDIUM : -1, CLOUD, account,
                            arn, ev, "unmanaged", c->path)
               : -ENOMEM;
        json_decref(ev);
    }
    return r;
}

/* Everything about one user, group or role. l: index in principal_lists. */
/* The role for the shadow-identity rules (shadow.c): assumable (federated), used or unused
 * per RoleLastUsed, and the OIDC providers its trust policy names (at most 8 kept). SSO
 * permission-set roles (/aws-reserved/) are managed by IAM Identity Center: people's, never
 * shadow. */
static int note_role(aws_ctx *c, json_t *role, json_t *trust, const char *account, const char *arn)
{
    json_t *last_used = json_object_get(role, "RoleLastUsed"), *stmts, *stmt;
    const char *last = str_member(last_used, "LastUsedDate"), *rpath = str_member(role, "Path");
    const char *issuers[9] = {NULL};
    audit_identity id = {.cloud = CLOUD,
                         .account = account,
                         .id = arn,
                         .flags = AUDIT_ID_FEDERATED,
                         .issuers = issuers,
                         .source = c->path};
    size_t i, n = 0;
    int64_t t;
    int r;

    if (!c->a->shadow) /* no --policies */
        return 0;
    if (json_is_object(last_used))
        id.flags |= last && audit_parse_time(last, &t) == 0 &&
                            audit_now(c->a) - t < (int64_t)c->a->opts.unused_days * DAY
                        ? AUDIT_ID_USED
                        : AUDIT_ID_UNUSED;
    if (rpath && strncmp(rpath, "/aws-reserved/", 14) == 0)
        id.flags |= AUDIT_ID_MANAGED;
    stmts = as_list(trust ? json_object_get(trust, "Statement") : NULL);
    if (!stmts)
        return -ENOMEM;
    json_array_foreach(stmts, i, stmt)
    {
        const char *effect = str_member(stmt, "Effect");
        json_t *pr = json_object_get(stmt, "Principal"), *fed, *v;
        size_t k;
        if (!effect || strcmp(effect, "Allow") != 0 || !json_is_object(pr))
            continue;
        fed = as_list(json_object_get(pr, "Federated"));
        if (!fed) {
            json_decref(stmts);
            return -ENOMEM;
        }
        /* The strings stay alive in trust, which the caller holds. */
        json_array_foreach(
            fed, k, v) if (json_is_string(v) && strstr(json_string_value(v), ":oidc-provider/") &&
                           n < ARRAY_SIZE(issuers) - 1) issuers[n++] = json_string_value(v);
        json_decref(fed);
    }
    json_decref(stmts);
    r = audit_identity_note(c->a, &id);
    return r;
}

static int audit_principal(aws_ctx *c, size_t l, json_t *p, const char *account, const char *arn,
                           const json_t *groups)
{
    static const char *const inline_keys[] = {"UserPolicyList", "GroupPolicyList",
                                              "RolePolicyList"};
    aws_grants g = {.docs = json_array(), .hits = json_array(), .cmps = json_array(), .emit = true};
    aws_trust t = {0};
    json_t *group_arns = json_array(), *group_docs = json_array(), *trust = NULL, *v;
    bool admin = false, admin_eq = false;
    size_t i;
    int r = -ENOMEM;

    if (!g.docs || !g.hits || !g.cmps || !group_arns || !group_docs)
        goto out;
    r = principal_permissions(c, p, inline_keys[l], account, arn, &admin, &g);
    if (r < 0)
        goto out;
    if (l == 0) { /* a user also holds what its groups hold */
        size_t own = json_array_size(g.docs);
        g.emit = false;
        json_array_foreach(json_object_get(p, "GroupList"), i, v)
        {
            json_t *grp = json_object_get(groups, json_is_string(v) ? json_string_value(v) : "");
            const char *garn = str_member(grp, "Arn");
            if (!grp || !garn)
                continue;
            if (json_array_append_new(group_arns, json_string(garn)) < 0) {
                r = -ENOMEM;
                goto out;
            }
            r = principal_permissions(c, grp, "GroupPolicyList", account, garn, NULL, &g);
            if (r < 0)
                goto out;
        }
        for (i = own; i < json_array_size(g.docs); i++)
            if (json_array_append(group_docs, json_array_get(g.docs, i)) < 0) {
                r = -ENOMEM;
                goto out;
            }
    }
    if (l == 2 && json_object_get(p, "AssumeRolePolicyDocument")) {
        char label[600];
        (void)snprintf(label, sizeof(label), "%s AssumeRolePolicyDocument", arn);
        r = policy_document(c->a, json_object_get(p, "AssumeRolePolicyDocument"), label, &trust,
                            c->errbuf, c->errlen);
        if (r < 0)
            goto out;
    }
    r = trust_facts(trust, account, &t);
    if (r == 0)
        r = usage_principal(c, p, arn, g.docs);
    if (r == 0 && !admin)
        r = any_full_admin(c->a, &g, &admin);
    if (r == 0 && !admin)
        r = escalation(c, (int)l, account, arn, &g, group_docs, group_arns, &t, &admin_eq);
    if (r == 0 && l == 2 && (admin || admin_eq))
        r = compute_admin(c, p, account, arn, admin, &t);
    if (r == 0 && l != 1)
        r = audit_aws_graph_add(c->graph, l == 2, arn, account, g.docs, trust, admin || admin_eq);
    if (r == 0 && l != 1)
        r = principal_hygiene(c, p, l == 2, account, arn, admin || admin_eq);
    if (r == 0 && l == 2)
        r = role_trust(c, trust, account, arn, admin || admin_eq);
    if (r == 0 && l == 2)
        r = role_usage(c, p, account, arn);
    if (r == 0 && l == 2)
        r = note_role(c, p, trust, account, arn);
out:
    json_decref(g.docs);
    json_decref(g.hits);
    json_decref(g.cmps);
    json_decref(group_arns);
    json_decref(group_docs);
    json_decref(trust);
    json_decref(t.services);
    return r;
}

/* AWS-OP-011 needs usage data: remember each account audited (with its first input) so that
 * the accounts no service-last-accessed data came for get an info note when the run ends
 * (usage_finish), as the catalogue asks, instead of passing silently. */
static int usage_not_evaluated(aws_ctx *c, const char *account)
{
    aws_state *s = state(c->a);
    aws_account *acct;
    int r = s ? account_get(s, account, &acct) : -ENOMEM;

    if (r == 0 && !acct->noted && !acct->note_done)
        r = audit_strset_intern(&s->strs, c->path, &acct->noted);
    return r;
}

static const struct {
    const char *list, *inline_key;
} principal_lists[] = {
    {"UserDetailList", "UserPolicyList"},
    {"GroupDetailList", "GroupPolicyList"},
    {"RoleDetailList", "RolePolicyList"},
};

/* An error about element i of list: its place in the file, when the account being audited is
 * that file's single page (merged pages have other indexes). */
static void error_at(ferry_audit *a, const char *list, size_t i)
{
    const aws_state *s = a->aws;
    if (s && s->single && !a->err_where[0])
        audit_error_where(a, "/%s/%zu", list, i);
}

static int audit_account(ferry_audit *a, const char *path, json_t *doc, char *errbuf, size_t errlen)
{
    aws_ctx c = {.a = a, .path = path, .errbuf = errbuf, .errlen = errlen};
    json_t *pols = json_object_get(doc, "Policies"), *v;
    size_t i;
    int r = 0;

    json_t *groups = json_object(); /* GroupName -> group, for users' group policies */
    c.policies = json_object();
    c.managed = json_object();
    if (!c.policies || !c.managed || !groups || audit_aws_graph_new(&c.graph) < 0) {
        r = -ENOMEM;
        goto out;
    }
    json_array_foreach(json_object_get(doc, "GroupDetailList"), i, v)
    {
        const char *name = str_member(v, "GroupName");
        if (name && json_object_set(groups, name, v) < 0) {
            r = -ENOMEM;
            goto out;
        }
    }
    json_array_foreach(pols, i, v)
    {
        const char *arn = str_member(v, "Arn");
        if (!arn) {
            error_at(a, "Policies", i);
            r = ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                 "Policies[%zu]: expected an Arn string", i);
            goto out;
        }
        if (json_object_set(c.policies, arn, v) < 0) {
            r = -ENOMEM;
            goto out;
        }
    }
    for (size_t l = 0; l < ARRAY_SIZE(principal_lists); l++) {
        json_t *list = json_object_get(doc, principal_lists[l].list), *p;
        bool roles = l == 2;
        json_array_foreach(list, i, p)
        {
            const char *arn = str_member(p, "Arn");
            char account[64];
            if (!arn || !principal_account(arn, account)) {
                error_at(a, principal_lists[l].list, i);
                r = ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                     "%s[%zu]: expected an Arn string (arn:aws:iam::ACCOUNT:...)",
                                     principal_lists[l].list, i);
                goto out;
            }
            if (roles && service_linked_role(p))
                continue;
            r = account_audited(a, account);
            if (r == 0)
                r = audit_principal(&c, l, p, account, arn, groups);
            if (r == 0)
                r = usage_not_evaluated(&c, account);
            if (r < 0) {
                if (r != -ENOMEM)
                    error_at(a, principal_lists[l].list, i);
                goto out;
            }
        }
    }
    r = audit_aws_graph_run(c.graph, a, path);
    if (r < 0)
        goto out;
    /* Customer-managed policies as such: unattached admin, admin in an old version. */
    json_array_foreach(pols, i, v)
    {
        const char *arn = str_member(v, "Arn");
        json_t *count = json_object_get(v, "AttachmentCount"), *versions, *ver, *hits;
        char account[64];
        size_t k;
        if (strncmp(arn, "arn:aws:iam::aws:", 17) == 0 || !principal_account(arn, account))
            continue;
        versions = as_list(json_object_get(v, "PolicyVersionList"));
        if (!versions) {
            r = -ENOMEM;
            goto out;
        }
        json_array_foreach(versions, k, ver)
        {
            bool def = json_is_true(json_object_get(ver, "IsDefaultVersion"));
            const char *vid = str_member(ver, "VersionId");
            const char *rule = NULL;
            json_t *d = NULL;
            if (def && json_is_integer(count) && json_integer_value(count) == 0)
                rule = "AWS-OP-013";
            else if (!def && json_is_integer(count) && json_integer_value(count) > 0)
                rule = "AWS-OP-012";
            if (!rule)
                continue;
            r = policy_document(a, json_object_get(ver, "Document"), arn, &d, errbuf, errlen);
            if (r == 0 && !d)
                continue;
            if (r == 0)
                r = analyse_policy(a, d, &hits);
            if (r == 0 && hits_have(hits, "AWS-OP-001")) {
                json_t *ev = json_pack("{s:s?, s:O, s:b}", "version", vid, "attachment_count",
                                       count, "default", def);
                char key[200];
                (void)snprintf(key, sizeof(key), "version=%s", vid ? vid : "");
                r = ev ? audit_emit(a, rule, -1, CLOUD, account, arn, ev, key, path) : -ENOMEM;
                json_decref(ev);
            }
            json_decref(d);
            if (r < 0)
                break;
        }
        json_decref(versions);
        if (r < 0)
            goto out;
    }
out:
    audit_aws_graph_free(c.graph);
    json_decref(c.policies);
    json_decref(c.managed);
    json_decref(groups);
    return r;
}

/* ---- authorization details: detection, shape checks and pages ------------------------ */

static const char *const authz_lists[] = {"UserDetailList", "GroupDetailList", "RoleDetailList",
                                          "Policies", NULL};

static bool authz_page(const json_t *doc)
{
    if (!json_is_object(doc))
        return false;
    for (size_t i = 0; authz_lists[i]; i++)
        if (json_object_get(doc, authz_lists[i]))
            return true;
    return false;
}

static bool detect_authz(const json_t *doc)
{
    if (json_is_array(doc))
        return json_array_size(doc) > 0 && authz_page(json_array_get(doc, 0));
    return authz_page(doc);
}

static int check_page(ferry_audit *a, const json_t *page, size_t index, bool in_array, char *errbuf,
                      size_t errlen)
{
    char where[40] = "", ptr[24] = "";
    if (in_array) {
        (void)snprintf(where, sizeof(where), "page %zu: ", index + 1);
        (void)snprintf(ptr, sizeof(ptr), "/%zu", index);
    }
    if (!authz_page(page)) {
        audit_error_where(a, "%s", ptr);
        return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                "%sexpected an object with UserDetailList, GroupDetailList, "
                                "RoleDetailList or Policies",
                                where);
    }
    for (size_t i = 0; authz_lists[i]; i++) {
        json_t *l = json_object_get(page, authz_lists[i]), *e;
        size_t k;
        if (l && !json_is_array(l) && !json_is_null(l)) {
            audit_error_where(a, "%s/%s", ptr, authz_lists[i]);
            return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED, "%s%s: expected an array",
                                    where, authz_lists[i]);
        }
        json_array_foreach(l, k, e)
        {
            if (json_is_object(e))
                continue;
            audit_error_where(a, "%s/%s/%zu", ptr, authz_lists[i], k);
            return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                    "%s%s[%zu]: expected an object", where, authz_lists[i], k);
        }
    }
    return 0;
}

/* Append the lists of page to acc. */
static int merge_page(json_t *acc, json_t *page)
{
    for (size_t i = 0; authz_lists[i]; i++) {
        json_t *src = json_object_get(page, authz_lists[i]), *dst;
        if (!json_is_array(src))
            continue;
        dst = json_object_get(acc, authz_lists[i]);
        if (!dst) {
            if (json_object_set_new(acc, authz_lists[i], json_array()) < 0)
                return -ENOMEM;
            dst = json_object_get(acc, authz_lists[i]);
        }
        if (json_array_extend(dst, src) < 0)
            return -ENOMEM;
    }
    return 0;
}

static int flush_pending(ferry_audit *a, char *errbuf, size_t errlen)
{
    aws_state *s = a->aws;
    char why[400] = "";
    int r;

    if (!s || !s->pending)
        return 0;
    r = audit_account(a, s->pending_path, s->pending, why, sizeof(why));
    json_decref(s->pending);
    s->pending = NULL;
    if (r < 0)
        r = ferry_errbuf_set(errbuf, errlen, r, "%s: %s", s->pending_path,
                             why[0] ? why : ferry_strerror(r));
    free(s->pending_path);
    s->pending_path = NULL;
    return r;
}

static int load_authz(ferry_audit *a, const char *path, const char *buf, size_t len, json_t *doc,
                      char *errbuf, size_t errlen)
{
    aws_state *s = state(a);
    json_t *pages;
    size_t i;
    json_t *page;
    bool truncated = false;
    int r;

    (void)buf;
    (void)len;
    if (!s)
        return -ENOMEM;
    if (!json_is_object(doc) && !json_is_array(doc))
        return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                "expected a GetAccountAuthorizationDetails object or an array "
                                "of its pages");
    pages = as_list(doc);
    if (!pages)
        return -ENOMEM;
    json_array_foreach(pages, i, page)
    {
        r = check_page(a, page, i, json_is_array(doc), errbuf, errlen);
        if (r < 0)
            goto out;
    }
    /* Indexes of the merged account are this file's only when it is one object page that
     * starts an account. */
    s->single = !s->pending && json_is_object(doc);
    json_array_foreach(pages, i, page)
    {
        if (!s->pending) {
            s->pending = json_object();
            s->pending_path = strdup(path);
            if (!s->pending || !s->pending_path) {
                r = -ENOMEM;
                goto out;
            }
        }
        r = merge_page(s->pending, page);
        if (r < 0)
            goto out;
        truncated = json_is_true(json_object_get(page, "IsTruncated"));
    }
    r = 0;
    /* The account is complete unless its last page says more follow (in the next file). */
    if (!truncated) {
        char why[400] = "";
        r = flush_pending(a, why, sizeof(why));
        if (r < 0) {
            /* flush_pending names the path; core.c adds it again: strip ours. */
            const char *p = why, *pl = path;
            size_t n = strlen(pl);
            if (strncmp(p, pl, n) == 0 && p[n] == ':' && p[n + 1] == ' ')
                p += n + 2;
            r = ferry_errbuf_set(errbuf, errlen, r, "%s", p);
        }
    }
out:
    json_decref(pages);
    return r;
}

static int usage_finish(ferry_audit *a, char *errbuf, size_t errlen);

static int aws_finish(ferry_audit *a, char *errbuf, size_t errlen)
{
    int r;
    if (a->aws)
        ((aws_state *)a->aws)->single = false;
    r = flush_pending(a, errbuf, errlen);
    if (r == 0)
        r = cross_account_rules(a);
    if (r == 0)
        r = usage_finish(a, errbuf, errlen);
    return a->aws ? audit_spill_error(&((aws_state *)a->aws)->spill, r, errbuf, errlen) : r;
}

/* ---- credential report --------------------------------------------------------------------- */

static const char credreport_header[] = "user,arn,user_creation_time";

static bool detect_credreport_text(const char *buf, size_t len)
{
    size_t n = strlen(credreport_header);
    return len >= n && memcmp(buf, credreport_header, n) == 0;
}

static bool detect_credreport_json(const json_t *doc)
{
    return json_is_object(doc) && json_is_string(json_object_get(doc, "Content")) &&
           (json_object_get(doc, "ReportFormat") || json_object_get(doc, "GeneratedTime"));
}

/* Split one CSV line (RFC 4180 quoting) into at most max fields, in place. Returns the
 * number of fields or -1 on a bad quote / too many fields. */
static int csv_split(char *line, char **fields, int max)
{
    int n = 0;
    char *p = line;
    for (;;) {
        char *out = p, *start = p;
        if (n == max)
            return -1;
        if (*p == '"') {
            p++;
            for (;;) {
                if (*p == '\0')
                    return -1;
                if (*p == '"') {
                    if (p[1] == '"') {
                        *out++ = '"';
                        p += 2;
                        continue;
                    }
                    p++;
                    break;
                }
                *out++ = *p++;
            }
            if (*p != ',' && *p != '\0')
                return -1;
        } else {
            while (*p && *p != ',') {
                if (*p == '"')
                    return -1;
                p++;
            }
            out = p;
        }
        char sep = *p;
        *out = '\0';
        fields[n++] = start;
        if (sep == '\0')
            return n;
        p++;
    }
}

enum {
    C_USER,
    C_ARN,
    C_CREATED,
    C_PWD,
    C_K1_ACTIVE,
    C_K1_ROTATED,
    C_K1_USED,
    C_K2_ACTIVE,
    C_K2_ROTATED,
    C_K2_USED,
    C_COUNT
};
static const char *const credreport_cols[C_COUNT] = {
    "user",
    "arn",
    "user_creation_time",
    "password_enabled",
    "access_key_1_active",
    "access_key_1_last_rotated",
    "access_key_1_last_used_date",
    "access_key_2_active",
    "access_key_2_last_rotated",
    "access_key_2_last_used_date",
};

/* A report date: -1 for N/A, no_information, not_supported (or empty); 0 ok; <0 error. */
static int report_date(const char *s, int64_t *ret)
{
    if (!*s || strcmp(s, "N/A") == 0 || strcmp(s, "no_information") == 0 ||
        strcmp(s, "not_supported") == 0)
        return 1;
    return audit_parse_time(s, ret);
}

static int key_finding(ferry_audit *a, const char *path, const char *rule, const char *account,
                       const char *arn, const char *user, int slot, const char *field,
                       const char *value)
{
    char key[32];
    json_t *ev = json_pack("{s:s, s:s?}", "user", user, field, value);
    int r;
    if (!ev || (slot && json_object_set_new(ev, "key", json_integer(slot)) < 0)) {
        json_decref(ev);
        return -ENOMEM;
    }
    (void)snprintf(key, sizeof(key), "access_key_%d", slot);
    r = audit_emit(a, rule, -1, CLOUD, account, arn, ev, slot ? key : "user", path);
    json_decref(ev);
    return r;
}

static int credreport_row(ferry_audit *a, const char *path, size_t lineno, char **f, const int *col,
                          char *errbuf, size_t errlen)
{
    const ferry_audit_options *o = &a->opts;
    const char *user = f[col[C_USER]], *arn = f[col[C_ARN]];
    bool root = strcmp(user, "<root_account>") == 0;
    int64_t now = audit_now(a);
    char account[64];
    int active = 0, r = 0;
    bool key_used = false;

    if (!principal_account(arn, account))
        return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                "line %zu: arn: expected an IAM ARN, got '%.80s'", lineno, arn);
    if ((r = account_audited(a, account)) < 0)
        return r;
    for (int slot = 1; slot <= 2 && r == 0; slot++) {
        int ca = slot == 1 ? C_K1_ACTIVE : C_K2_ACTIVE;
        int cr = slot == 1 ? C_K1_ROTATED : C_K2_ROTATED;
        int cu = slot == 1 ? C_K1_USED : C_K2_USED;
        const char *rot = col[cr] >= 0 ? f[col[cr]] : "N/A";
        const char *used = col[cu] >= 0 ? f[col[cu]] : "N/A";
        int64_t trot = 0, tused = 0;
        int rr, ru;
        if (col[ca] < 0 || strcmp(f[col[ca]], "true") != 0)
            continue;
        active++;
        rr = report_date(rot, &trot);
        ru = report_date(used, &tused);
        if (rr < 0 || ru < 0)
            return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                    "line %zu: access_key_%d: expected a date or N/A, got '%.40s'",
                                    lineno, slot, rr < 0 ? rot : used);
        if (root) {
            r = key_finding(a, path, "AWS-SH-008", account, arn, user, slot, "last_rotated", rot);
            continue;
        }
        key_used = key_used || (ru == 0 && now - tused < (int64_t)o->unused_days * DAY);
        if (ru == 0 && now - tused >= (int64_t)o->key_unused_days * DAY)
            r = key_finding(a, path, "AWS-SH-002", account, arn, user, slot, "last_used", used);
        if (r == 0 && ru == 1 && rr == 0 && now - trot >= (int64_t)o->grace_days * DAY)
            r = key_finding(a, path, "AWS-SH-003", account, arn, user, slot, "last_rotated", rot);
        if (r == 0 && rr == 0 && now - trot >= (int64_t)o->key_max_age_days * DAY)
            r = key_finding(a, path, "AWS-SH-004", account, arn, user, slot, "last_rotated", rot);
    }
    if (r < 0 || root || active == 0)
        return r;
    if (a->shadow) { /* --policies: the user and its keys for the shadow-identity rules */
        const char *pwd = col[C_PWD] >= 0 ? f[col[C_PWD]] : "false";
        audit_identity id = {.cloud = CLOUD,
                             .account = account,
                             .id = arn,
                             .source = path,
                             .flags = AUDIT_ID_STATIC_CRED |
                                      (key_used ? AUDIT_ID_USED : AUDIT_ID_UNUSED) |
                                      (strcmp(pwd, "true") == 0 ? AUDIT_ID_HUMAN : 0)};
        if ((r = audit_identity_note(a, &id)) < 0)
            return r;
    }
    if (active == 2)
        r = key_finding(a, path, "AWS-SH-005", account, arn, user, 0, "active_keys", "2");
    if (r == 0) {
        const char *pwd = col[C_PWD] >= 0 ? f[col[C_PWD]] : "false";
        r = key_finding(a, path, strcmp(pwd, "true") == 0 ? "AWS-SH-007" : "AWS-SH-006", account,
                        arn, user, 0, "password_enabled", pwd);
    }
    return r;
}

static int credreport_csv(ferry_audit *a, const char *path, const char *buf, size_t len,
                          char *errbuf, size_t errlen)
{
    char *text, *line, *next, *fields[CREDREPORT_MAX_COLS], *hdr[CREDREPORT_MAX_COLS];
    int col[C_COUNT], ncols, r = 0;
    size_t lineno = 1;

    if (memchr(buf, '\0', len))
        return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                "credential report: NUL byte in the CSV text");
    text = strndup(buf, len);
    if (!text)
        return -ENOMEM;
    next = text;
    line = strsep(&next, "\n");
    if (line[0] && line[strlen(line) - 1] == '\r')
        line[strlen(line) - 1] = '\0';
    ncols = csv_split(line, hdr, CREDREPORT_MAX_COLS);
    if (ncols < 0) {
        r = ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                             "line 1: malformed credential report header");
        goto out;
    }
    for (int c = 0; c < C_COUNT; c++) {
        col[c] = -1;
        for (int k = 0; k < ncols; k++)
            if (strcmp(hdr[k], credreport_cols[c]) == 0)
                col[c] = k;
    }
    if (col[C_USER] < 0 || col[C_ARN] < 0 || col[C_K1_ACTIVE] < 0) {
        r = ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                             "line 1: expected a credential report header with user, arn and "
                             "access_key_1_active");
        goto out;
    }
    while ((line = strsep(&next, "\n")) != NULL) {
        int n;
        lineno++;
        if (line[0] && line[strlen(line) - 1] == '\r')
            line[strlen(line) - 1] = '\0';
        if (!line[0] && !next)
            break; /* final newline */
        n = csv_split(line, fields, CREDREPORT_MAX_COLS);
        if (n < 0) {
            r = ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                 "line %zu: malformed CSV (a stray or unclosed quote, or more "
                                 "than %d fields)",
                                 lineno, CREDREPORT_MAX_COLS);
            goto out;
        }
        if (n != ncols) {
            r = ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                 "line %zu: expected %d comma-separated fields as in the header, "
                                 "got %d",
                                 lineno, ncols, n);
            goto out;
        }
        r = credreport_row(a, path, lineno, fields, col, errbuf, errlen);
        if (r < 0)
            goto out;
    }
out:
    free(text);
    return r;
}

static int load_credreport(ferry_audit *a, const char *path, const char *buf, size_t len,
                           json_t *doc, char *errbuf, size_t errlen)
{
    const char *content;
    unsigned char *raw;
    size_t clen, rlen = 0;
    int r;

    if (!doc) {
        if (!detect_credreport_text(buf, len))
            return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                    "line 1: expected the credential report header "
                                    "'user,arn,user_creation_time,...'");
        return credreport_csv(a, path, buf, len, errbuf, errlen);
    }
    content = str_member(doc, "Content");
    if (!content)
        return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                "expected a get-credential-report object with a Content string");
    clen = strlen(content);
    if (detect_credreport_text(content, clen))
        return credreport_csv(a, path, content, clen, errbuf, errlen);
    /* Base64 wrapped over lines (as some tools save it) is accepted: line breaks dropped. */
    char *b64 = malloc(clen + 1);
    size_t blen = 0;
    if (!b64)
        return -ENOMEM;
    for (size_t i = 0; i < clen; i++)
        if (content[i] != '\n' && content[i] != '\r')
            b64[blen++] = content[i];
    raw = malloc(blen / 4 * 3 + 1);
    if (!raw) {
        free(b64);
        return -ENOMEM;
    }
    r = ferry_b64_decode(b64, blen, raw, &rlen);
    free(b64);
    if (r < 0) {
        free(raw);
        return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                "Content: expected base64 of the CSV report (or the CSV text)");
    }
    if (!detect_credreport_text((const char *)raw, rlen))
        r = ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                             "Content: the decoded report does not start with "
                             "'user,arn,user_creation_time'");
    else
        r = credreport_csv(a, path, (const char *)raw, rlen, errbuf, errlen);
    free(raw);
    return r;
}

/* ---- service last accessed (AWS-OP-011) ------------------------------------------------- */

/* Most services one principal is granted by name (beyond: "every service"), and most entries
 * of one ServicesLastAccessed list. */
#define USAGE_MAX_SERVICES 1024
#define USAGE_ARN_MAX 2048

/* Add the service prefixes the Allow statements of doc grant to svcs (an object used as a
 * set); *ret_all when one grants every service ("*", a wildcard in the service part,
 * NotAction). */
static int granted_services(const json_t *doc, json_t *svcs, bool *ret_all)
{
    json_t *stmts = as_list(json_object_get(doc, "Statement")), *st, *acts, *v;
    size_t i, k;
    int r = 0;

    if (!stmts)
        return -ENOMEM;
    json_array_foreach(stmts, i, st)
    {
        const char *eff = str_member(st, "Effect");
        if (!eff || strcmp(eff, "Allow") != 0)
            continue;
        if (json_object_get(st, "NotAction")) {
            *ret_all = true;
            continue;
        }
        acts = as_list(json_object_get(st, "Action"));
        if (!acts) {
            r = -ENOMEM;
            break;
        }
        json_array_foreach(acts, k, v)
        {
            const char *act = json_string_value(v), *colon;
            char svc[64];
            size_t n;
            if (!act)
                continue;
            colon = strchr(act, ':');
            n = colon ? (size_t)(colon - act) : 0;
            if (!colon || strcspn(act, "*?") < n) {
                if (strcspn(act, "*?") < strlen(act))
                    *ret_all = true;
                continue;
            }
            if (n == 0 || n >= sizeof(svc))
                continue;
            for (size_t j = 0; j < n; j++)
                svc[j] = (char)((act[j] >= 'A' && act[j] <= 'Z') ? act[j] + 32 : act[j]);
            svc[n] = '\0';
            if (json_object_size(svcs) >= USAGE_MAX_SERVICES)
                *ret_all = true;
            else if (json_object_set_new(svcs, svc, json_true()) < 0) {
                r = -ENOMEM;
                break;
            }
        }
        json_decref(acts);
        if (r < 0)
            break;
    }
    json_decref(stmts);
    return r;
}

static int cmp_str(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* The services the documents grant, in the form the index keeps ("svc,svc" sorted, or "*"), as
 * a new string. */
static int grants_string(const json_t *docs, char **ret)
{
    json_t *svcs = json_object(), *doc, *v;
    const char **names = NULL;
    const char *ns;
    bool all = false;
    ferry_buf b;
    size_t i, n = 0;
    int r = -ENOMEM;

    ferry_buf_init(&b, 64 * USAGE_MAX_SERVICES + 64, false);
    if (!svcs)
        goto out;
    json_array_foreach(docs, i, doc)
    {
        r = granted_services(doc, svcs, &all);
        if (r < 0)
            goto out;
    }
    r = -ENOMEM;
    names = calloc(json_object_size(svcs) + 1, sizeof(*names));
    if (!names)
        goto out;
    json_object_foreach(svcs, ns, v) names[n++] = ns;
    qsort(names, n, sizeof(*names), cmp_str);
    r = ferry_buf_append_str(&b, ""); /* allocates: no service is "", not NULL */
    if (r == 0 && all)
        r = ferry_buf_append_str(&b, "*");
    for (i = 0; r == 0 && !all && i < n; i++) {
        r = ferry_buf_append_str(&b, names[i]);
        if (r == 0 && i + 1 < n)
            r = ferry_buf_append_str(&b, ",");
    }
    if (r == 0 && !b.data)
        r = -ENOMEM;
    if (r == 0)
        *ret = ferry_buf_steal(&b, NULL);
out:
    free(names);
    json_decref(svcs);
    ferry_buf_release(&b);
    return r < 0 ? -ENOMEM : 0;
}

/* Created less than --grace-days ago: its services may simply not have been needed yet. */
static bool young(const ferry_audit *a, int64_t created)
{
    return created >= 0 && audit_now(a) - created < (int64_t)a->opts.grace_days * DAY;
}

static bool recently(const json_t *v, int64_t now, unsigned days)
{
    int64_t t;
    return json_is_string(v) && audit_parse_time(json_string_value(v), &t) == 0 &&
           now - t < (int64_t)days * DAY;
}

/* Decide AWS-OP-011 for one principal: its grants (NULL: unknown, then the services the data
 * lists, which AWS limits to those the principal's policies allow) against its usage entry
 * {"account", "source", "completed", "services": {namespace: date | null}}. */
static int usage_evaluate(ferry_audit *a, const char *arn, const aws_grant *g, const json_t *entry)
{
    const ferry_audit_options *o = &a->opts;
    const json_t *svcs = json_object_get(entry, "services");
    const char *sep = g ? g->svcs : NULL, *ns;
    int64_t now = audit_now(a);
    json_t *unused = json_array(), *last = json_object(), *v, *ev;
    const char **names = NULL;
    size_t n = 0;
    ferry_buf key;
    int r = -ENOMEM;

    ferry_buf_init(&key, 64 * USAGE_MAX_SERVICES + 64, false);
    if (!unused || !last)
        goto out;
    if (g && young(a, g->created)) {
        r = 0;
        goto out;
    }
    if (!sep || strcmp(sep, "*") == 0) {
        json_object_foreach((json_t *)svcs, ns, v)
        {
            if (recently(v, now, o->unused_days))
                continue;
            if (json_object_set(last, ns, v) < 0)
                goto out;
        }
    } else {
        const char *p = sep;
        while (*p) {
            size_t l = strcspn(p, ",");
            char svc[64];
            (void)snprintf(svc, sizeof(svc), "%.*s", (int)l, p);
            p += l + (p[l] == ',');
            v = json_object_get(svcs, svc);
            if (recently(v, now, o->unused_days))
                continue;
            if (json_object_set_new(last, svc, v ? json_incref(v) : json_null()) < 0)
                goto out;
        }
    }
    if (json_object_size(last) == 0) {
        r = 0;
        goto out;
    }
    names = calloc(json_object_size(last), sizeof(*names));
    if (!names)
        goto out;
    json_object_foreach(last, ns, v) names[n++] = ns;
    qsort(names, n, sizeof(*names), cmp_str);
    r = ferry_buf_append_str(&key, "services=");
    for (size_t i = 0; r == 0 && i < n; i++) {
        r = ferry_buf_append_str(&key, names[i]);
        if (r == 0 && i + 1 < n)
            r = ferry_buf_append_str(&key, ",");
        if (r == 0 && json_array_append_new(unused, json_string(names[i])) < 0)
            r = -ENOMEM;
    }
    if (r < 0) {
        r = -ENOMEM;
        goto out;
    }
    ev = json_pack("{s:O, s:O, s:i, s:s, s:O?}", "unused_services", unused, "last_authenticated",
                   last, "unused_days", (int)o->unused_days, "granted_from",
                   sep ? "policies" : "service-last-accessed", "job_completed",
                   json_object_get(entry, "completed"));
    r = ev ? audit_emit(a, "AWS-OP-011", -1, CLOUD, str_member(entry, "account"), arn, ev, key.data,
                        str_member(entry, "source"))
           : -ENOMEM;
    json_decref(ev);
out:
    free(names);
    ferry_buf_release(&key);
    json_decref(unused);
    json_decref(last);
    return r;
}

/* The id of an ARN in the index (aws_grant.id). */
static int grant_id(const char *arn, uint8_t id[16])
{
    char hex[65];
    int r = audit_sha256_hex(arn, strlen(arn), hex);

    for (size_t i = 0; r == 0 && i < 16; i++)
        id[i] = (uint8_t)(ferry_hexval((unsigned char)hex[2 * i]) << 4 |
                          ferry_hexval((unsigned char)hex[2 * i + 1]));
    return r;
}

/* The slot of id in slots (n_slots a power of two): its own, or the free one it would take. */
static size_t grant_slot(const aws_grant *granted, const uint32_t *slots, size_t n_slots,
                         const uint8_t id[16])
{
    size_t mask = n_slots - 1, i;
    uint64_t h;

    memcpy(&h, id, sizeof(h)); /* a SHA-256 is as good a hash as any */
    for (i = (size_t)h & mask; slots[i]; i = (i + 1) & mask)
        if (memcmp(granted[slots[i] - 1].id, id, 16) == 0)
            break;
    return i;
}

/* The grants kept for a principal: *ret, NULL when none. */
static int grant_find(aws_state *s, const char *arn, const aws_grant **ret)
{
    uint8_t id[16];
    uint32_t at;
    int r;

    *ret = NULL;
    if (!s->n_granted)
        return 0;
    if ((r = grant_id(arn, id)) < 0)
        return r;
    at = s->granted_slots[grant_slot(s->granted, s->granted_slots, s->n_granted_slots, id)];
    *ret = at ? &s->granted[at - 1] : NULL;
    return 0;
}

/* Keep g in the index, replacing what an earlier input said of the same principal. */
static int grant_keep(aws_state *s, const aws_grant *g)
{
    size_t at;
    int r = audit_vec_room(&s->granted, &s->alloc_granted, s->n_granted, sizeof(*s->granted), 1024,
                           GRANTS_MAX);

    if (r < 0)
        return r;
    if ((s->n_granted + 1) * 2 > s->n_granted_slots) {
        size_t n = s->n_granted_slots ? s->n_granted_slots * 2 : 2048;
        uint32_t *slots = calloc(n, sizeof(*slots));
        if (!slots)
            return -ENOMEM;
        for (size_t i = 0; i < s->n_granted; i++)
            slots[grant_slot(s->granted, slots, n, s->granted[i].id)] = (uint32_t)i + 1;
        free(s->granted_slots);
        s->granted_slots = slots;
        s->n_granted_slots = n;
    }
    at = grant_slot(s->granted, s->granted_slots, s->n_granted_slots, g->id);
    if (s->granted_slots[at]) {
        s->granted[s->granted_slots[at] - 1] = *g;
        return 0;
    }
    s->granted[s->n_granted] = *g;
    s->granted_slots[at] = (uint32_t)++s->n_granted;
    return 0;
}

static size_t usage_slot(const aws_usage *usage, const uint32_t *slots, size_t n_slots,
                         const char *arn)
{
    size_t mask = n_slots - 1, i = (size_t)(((uintptr_t)arn * 0x9e3779b97f4a7c15ULL) >> 17) & mask;
    while (slots[i] && usage[slots[i] - 1].arn != arn)
        i = (i + 1) & mask;
    return i;
}

/* The usage data kept for a principal, or NULL. */
static aws_usage *usage_find(aws_state *s, const char *arn)
{
    const char *key = s->n_usage ? audit_strset_find(&s->recs, arn) : NULL;
    uint32_t at;

    if (!key)
        return NULL;
    at = s->usage_slots[usage_slot(s->usage, s->usage_slots, s->n_usage_slots, key)];
    return at && s->usage[at - 1].data ? &s->usage[at - 1] : NULL;
}

/* Keep the usage data of a principal (strings borrowed, interned in recs), replacing what an
 * earlier input said of it. */
static int usage_put(aws_state *s, const aws_usage *e)
{
    aws_usage u;
    size_t at;
    int r = audit_strset_intern(&s->recs, e->data, &u.data);

    if (r == 0)
        r = audit_strset_intern(&s->recs, e->arn, &u.arn);
    if (r == 0)
        r = audit_strset_intern(&s->recs, e->account, &u.account);
    if (r == 0)
        r = audit_strset_intern(&s->recs, e->source, &u.source);
    if (r == 0)
        r = audit_vec_room(&s->usage, &s->alloc_usage, s->n_usage, sizeof(*s->usage), 64,
                           GRANTS_MAX);
    if (r == 0 && (s->n_usage + 1) * 2 > s->n_usage_slots) {
        size_t n = s->n_usage_slots ? s->n_usage_slots * 2 : 128;
        uint32_t *slots = calloc(n, sizeof(*slots));
        if (!slots)
            return -ENOMEM;
        for (size_t i = 0; i < s->n_usage; i++)
            slots[usage_slot(s->usage, slots, n, s->usage[i].arn)] = (uint32_t)i + 1;
        free(s->usage_slots);
        s->usage_slots = slots;
        s->n_usage_slots = n;
    }
    if (r < 0)
        return r;
    at = usage_slot(s->usage, s->usage_slots, s->n_usage_slots, u.arn);
    if (s->usage_slots[at] && s->usage[s->usage_slots[at] - 1].data) {
        s->usage[s->usage_slots[at] - 1] = u;
        return 0;
    }
    /* new, or again after its grants came: last, as the order found */
    s->usage[s->n_usage] = u;
    s->usage_slots[at] = (uint32_t)++s->n_usage;
    return 0;
}

/* Keep the usage entry of arn (as usage_evaluate reads it) for its grants still to come. */
static int usage_keep(aws_state *s, const char *arn, const json_t *entry)
{
    aws_usage u = {
        .arn = arn, .account = str_member(entry, "account"), .source = str_member(entry, "source")};
    json_t *data = json_pack("{s:O?, s:O}", "completed", json_object_get(entry, "completed"),
                             "services", json_object_get(entry, "services"));
    char *text = data ? audit_json_dumps(data, JSON_COMPACT) : NULL;
    int r = text ? 0 : -ENOMEM;

    json_decref(data);
    u.data = text;
    if (r == 0)
        r = usage_put(s, &u);
    free(text);
    return r;
}

/* The usage entry u keeps, as a new tree in *ret. */
static int usage_entry(const aws_usage *u, json_t **ret)
{
    json_t *entry = audit_json_reparse(u->data);
    int r = entry ? 0 : -ENOMEM;

    if (r == 0 && (json_object_set_new(entry, "account", json_string(u->account)) < 0 ||
                   json_object_set_new(entry, "source", json_string(u->source)) < 0))
        r = -ENOMEM;
    if (r < 0)
        json_decref(entry);
    else
        *ret = entry;
    return r;
}

/* The authorization-details side of one principal (any order with its usage data): decided
 * now when its usage came first, else its grants are kept for usage data still to come. A
 * principal too young to report keeps no services: only that it was seen. */
static int usage_principal(aws_ctx *c, json_t *p, const char *arn, const json_t *docs)
{
    aws_state *s = state(c->a);
    const char *cd = str_member(p, "CreateDate");
    aws_grant g = {.created = -1};
    char *grants = NULL, account[64];
    aws_usage *u;
    json_t *entry = NULL;
    int r;

    if (!s)
        return -ENOMEM;
    if (!principal_account(arn, account))
        account[0] = '\0';
    if ((r = aws_resident(c->a, s, account, c->errbuf, c->errlen)) < 0)
        return r;
    if (cd && audit_parse_time(cd, &g.created) < 0)
        g.created = -1;
    r = audit_strset_intern(&s->recs, account, &g.account);
    if (r == 0 && young(c->a, g.created))
        r = audit_strset_intern(&s->recs, "", &g.svcs);
    else if (r == 0) {
        r = grants_string(docs, &grants);
        if (r == 0)
            r = audit_strset_intern(&s->recs, grants, &g.svcs);
        free(grants);
    }
    if (r < 0)
        return r;
    u = usage_find(s, arn);
    if (u) {
        r = usage_entry(u, &entry);
        if (r == 0)
            r = usage_evaluate(c->a, arn, &g, entry);
        if (r == 0)
            u->data = NULL;
        json_decref(entry);
        return r;
    }
    r = grant_id(arn, g.id);
    return r < 0 ? r : grant_keep(s, &g);
}

/* The usage side of one principal: decided now when its grants are known, else kept. */
static int usage_add(ferry_audit *a, const char *arn, json_t *entry, char *errbuf, size_t errlen)
{
    aws_state *s = state(a);
    const char *account = str_member(entry, "account");
    const aws_grant *g;
    int r;

    aws_account *acct;

    if (!s)
        return -ENOMEM;
    if ((r = account_get(s, account, &acct)) < 0)
        return r;
    acct->usage = true;
    if ((r = aws_resident(a, s, account, errbuf, errlen)) < 0)
        return r;
    if ((r = grant_find(s, arn, &g)) < 0)
        return r;
    if (g)
        return usage_evaluate(a, arn, g, entry);
    return usage_keep(s, arn, entry);
}

/* ---- records of the accounts not worked on, in the temporary file ------------------------
 *
 * The grants and usage data of AWS-OP-011 are looked up by principal, and a principal's are
 * in its own account: the state holds those of the accounts the run is working on, and when it
 * holds more than a->spill_after records (or twice what stayed the last time), every other
 * account's go to s->spill as one segment under the account's id, with the trusts kept for
 * the end under CROSS_KEY. Touching an account again (aws_resident) brings its segments back,
 * in the order they went, before anything is added, so every lookup and replacement sees what
 * it would have seen with everything in memory. Memory is then the records of the current
 * input's account, the run's spill_after, and the index of the file (per account). */

/* One record of a segment: 'G' a grant, 'U' usage data, 'C' a trust (strings point into the
 * segment; a grant's and usage data's account is the segment's key). */
typedef struct aws_rec {
    char tag;
    aws_grant g;
    aws_usage u;
    aws_cross c;
} aws_rec;

static int rec_put_grant(ferry_buf *b, const aws_grant *g)
{
    int r = ferry_buf_append(b, "G", 1);
    if (r == 0)
        r = ferry_buf_append(b, g->id, sizeof(g->id));
    if (r == 0)
        r = ferry_buf_append(b, &g->created, sizeof(g->created));
    return r == 0 ? audit_rec_put_str(b, g->svcs) : r;
}

static int rec_put_usage(ferry_buf *b, const aws_usage *u)
{
    int r = ferry_buf_append(b, "U", 1);
    if (r == 0)
        r = audit_rec_put_str(b, u->arn);
    if (r == 0)
        r = audit_rec_put_str(b, u->source);
    return r == 0 ? audit_rec_put_str(b, u->data) : r;
}

static int rec_put_cross(ferry_buf *b, const aws_cross *e)
{
    uint8_t flags = (uint8_t)(e->admin | e->guarded << 1);
    int r = ferry_buf_append(b, "C", 1);
    if (r == 0)
        r = audit_rec_put_str(b, e->account);
    if (r == 0)
        r = audit_rec_put_str(b, e->arn);
    if (r == 0)
        r = audit_rec_put_str(b, e->source);
    if (r == 0)
        r = audit_rec_put_str(b, e->statement);
    if (r == 0)
        r = ferry_buf_append(b, e->other, sizeof(e->other));
    return r == 0 ? ferry_buf_append(b, &flags, 1) : r;
}

/* The next record of a segment into *ret. -EIO when it is not one rec_put_* wrote. */
static int rec_next(audit_rec_reader *rd, const char *account, aws_rec *ret)
{
    uint8_t flags;
    int r = audit_rec_get(rd, &ret->tag, 1);

    if (r < 0)
        return r;
    switch (ret->tag) {
    case 'G':
        ret->g = (aws_grant){.account = account};
        r = audit_rec_get(rd, ret->g.id, sizeof(ret->g.id));
        if (r == 0)
            r = audit_rec_get(rd, &ret->g.created, sizeof(ret->g.created));
        if (r == 0)
            r = audit_rec_get_str(rd, &ret->g.svcs);
        return r == 0 && !ret->g.svcs ? -EIO : r;
    case 'U':
        ret->u = (aws_usage){.account = account};
        r = audit_rec_get_str(rd, &ret->u.arn);
        if (r == 0)
            r = audit_rec_get_str(rd, &ret->u.source);
        if (r == 0)
            r = audit_rec_get_str(rd, &ret->u.data);
        return r == 0 && (!ret->u.arn || !ret->u.source || !ret->u.data) ? -EIO : r;
    case 'C':
        ret->c = (aws_cross){.account = NULL};
        r = audit_rec_get_str(rd, &ret->c.account);
        if (r == 0)
            r = audit_rec_get_str(rd, &ret->c.arn);
        if (r == 0)
            r = audit_rec_get_str(rd, &ret->c.source);
        if (r == 0)
            r = audit_rec_get_str(rd, &ret->c.statement);
        if (r == 0)
            r = audit_rec_get(rd, ret->c.other, sizeof(ret->c.other));
        if (r == 0)
            r = audit_rec_get(rd, &flags, 1);
        if (r < 0 || !ret->c.account || !ret->c.arn || !ret->c.source || !ret->c.statement ||
            ret->c.other[sizeof(ret->c.other) - 1] != '\0')
            return r < 0 ? r : -EIO;
        ret->c.admin = flags & 1;
        ret->c.guarded = flags & 2;
        return 0;
    default:
        return -EIO;
    }
}

typedef struct unspill_ctx {
    aws_state *s;
    const char *account;
} unspill_ctx;

/* A segment of an account's grants and usage data, back into the state. */
static int aws_unspill(void *userdata, const char *data, size_t len)
{
    unspill_ctx *u = userdata;
    audit_rec_reader rd = {data, len};
    int r = 0;

    while (rd.left && r == 0) {
        aws_rec rec;
        if ((r = rec_next(&rd, u->account, &rec)) < 0)
            break;
        if (rec.tag == 'G') {
            r = audit_strset_intern(&u->s->recs, rec.g.svcs, &rec.g.svcs);
            if (r == 0)
                r = audit_strset_intern(&u->s->recs, u->account, &rec.g.account);
            if (r == 0)
                r = grant_keep(u->s, &rec.g);
        } else if (rec.tag == 'U')
            r = usage_put(u->s, &rec.u);
        else
            r = -EIO;
    }
    return r;
}

/* The end of the run: a segment's trusts decided, in their order. */
static int cross_segment(void *userdata, const char *data, size_t len)
{
    audit_rec_reader rd = {data, len};
    int r = 0;

    while (rd.left && r == 0) {
        aws_rec rec;
        r = rec_next(&rd, NULL, &rec);
        if (r == 0)
            r = rec.tag == 'C' ? cross_decide(userdata, &rec.c) : -EIO;
    }
    return r;
}

/* Usage data no authorization details came for, decided on its own. */
static int usage_unmatched(ferry_audit *a, const aws_usage *u)
{
    json_t *entry = NULL;
    int r;

    if (!u->data)
        return 0;
    r = usage_entry(u, &entry);
    if (r == 0)
        r = usage_evaluate(a, u->arn, NULL, entry);
    json_decref(entry);
    return r;
}

/* The end of the run: the unmatched usage data of a segment (its grants are not needed). */
static int usage_segment(void *userdata, const char *data, size_t len)
{
    audit_rec_reader rd = {data, len};
    int r = 0;

    while (rd.left && r == 0) {
        aws_rec rec;
        /* the account is only read for the finding, which the source's entry names */
        r = rec_next(&rd, "", &rec);
        if (r == 0 && rec.tag == 'U') {
            char account[64];
            rec.u.account = principal_account(rec.u.arn, account) ? account : "";
            r = usage_unmatched(userdata, &rec.u);
        }
    }
    return r;
}

typedef struct evict_group {
    const char *account; /* interned in recs */
    ferry_buf b;
} evict_group;

/* The group of account (interned in recs) in *ret, added when new. */
static int evict_group_get(evict_group **groups, size_t *n, size_t *alloc, uint32_t *slots,
                           size_t n_slots, const char *account, ferry_buf **ret)
{
    size_t mask = n_slots - 1,
           i = (size_t)(((uintptr_t)account * 0x9e3779b97f4a7c15ULL) >> 17) & mask;
    int r;

    while (slots[i] && (*groups)[slots[i] - 1].account != account)
        i = (i + 1) & mask;
    if (!slots[i]) {
        if ((r = audit_vec_room(groups, alloc, *n, sizeof(**groups), 16, n_slots)) < 0)
            return r;
        (*groups)[*n].account = account;
        ferry_buf_init(&(*groups)[*n].b, (size_t)1 << 30, false);
        slots[i] = (uint32_t)++ * n;
    }
    *ret = &(*groups)[slots[i] - 1].b;
    return 0;
}

/* Put every account's records but keep's (and every trust) in the temporary file, start the
 * record strings afresh and take keep's back. */
static int aws_evict(ferry_audit *a, aws_state *s, const char *keep)
{
    size_t n_slots = 16, n = 0, alloc = 0;
    evict_group *groups = NULL;
    ferry_buf cross, mine, *b;
    uint32_t *slots;
    int r = 0;

    while (n_slots < 2 * (s->n_granted + s->n_usage + 1))
        n_slots *= 2;
    slots = calloc(n_slots, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    ferry_buf_init(&cross, (size_t)1 << 30, false);
    ferry_buf_init(&mine, (size_t)1 << 30, false);
    for (size_t i = 0; i < s->n_granted && r == 0; i++) {
        r = evict_group_get(&groups, &n, &alloc, slots, n_slots, s->granted[i].account, &b);
        if (r == 0)
            r = rec_put_grant(b, &s->granted[i]);
    }
    for (size_t i = 0; i < s->n_usage && r == 0; i++) {
        if (!s->usage[i].data) /* matched: usage_find never returns it */
            continue;
        r = evict_group_get(&groups, &n, &alloc, slots, n_slots, s->usage[i].account, &b);
        if (r == 0)
            r = rec_put_usage(b, &s->usage[i]);
    }
    for (size_t i = 0; i < s->n_cross && r == 0; i++)
        r = rec_put_cross(&cross, &s->cross[i]);
    for (size_t i = 0; i < n && r == 0; i++) {
        if (strcmp(groups[i].account, keep) == 0)
            r = ferry_buf_append(&mine, groups[i].b.data, groups[i].b.len);
        else
            r = audit_spill_put(&s->spill, groups[i].account, groups[i].b.data, groups[i].b.len);
    }
    if (r == 0)
        r = audit_spill_put(&s->spill, CROSS_KEY, cross.data, cross.len);
    if (r == 0) {
        records_release(s);
        if (mine.len) {
            unspill_ctx u = {s, keep};
            r = aws_unspill(&u, mine.data, mine.len);
        }
    }
    n = 2 * (s->n_granted + s->n_usage);
    s->evict_at = n > a->spill_after ? n : a->spill_after;
    for (size_t i = 0; i < n_slots && groups; i++)
        if (slots[i])
            ferry_buf_release(&groups[slots[i] - 1].b);
    free(groups);
    free(slots);
    ferry_buf_release(&cross);
    ferry_buf_release(&mine);
    return r;
}

/* Make account's records the ones in memory (see above): the others' put aside when the state
 * holds too many, then what was put aside of account taken back. */
static int aws_resident(ferry_audit *a, aws_state *s, const char *account, char *errbuf,
                        size_t errlen)
{
    int r = 0;

    if (s->n_granted + s->n_usage + s->n_cross > s->evict_at)
        r = aws_evict(a, s, account);
    if (r == 0 && audit_spill_holds(&s->spill, account)) {
        unspill_ctx u = {s, account};
        r = audit_spill_take(&s->spill, account, aws_unspill, &u);
    }
    return audit_spill_error(&s->spill, r, errbuf, errlen);
}

/* End of the run: usage data of principals no authorization details came for is decided on
 * the services it lists; the accounts audited without usage data get the info note. */
static int usage_finish(ferry_audit *a, char *errbuf, size_t errlen)
{
    aws_state *s = a->aws;
    json_t *v;
    int r = 0;

    if (!s)
        return 0;
    v = json_object_iter_value(json_object_iter(s->orphans));
    if (v)
        return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                "%s: the output of get-service-last-accessed-details does not "
                                "name its principal: expected an Arn member "
                                "(arn:aws:iam::ACCOUNT:role/NAME), a file named by the "
                                "URL-encoded ARN, or (CloudMapper) a file named by its job id "
                                "with the generate-service-last-accessed-details output giving "
                                "that JobId, named by the ARN",
                                str_member(v, "path"));
    /* account by account those put aside (in the order the accounts came), then the rest */
    for (size_t i = 0; i < s->n_accounts && r == 0; i++)
        if (s->accounts[i].usage)
            r = audit_spill_take(&s->spill, s->accounts[i].id, usage_segment, a);
    for (size_t i = 0; i < s->n_usage && r == 0; i++)
        r = usage_unmatched(a, &s->usage[i]);
    if (r < 0)
        return r;
    free(s->usage);
    free(s->usage_slots);
    s->usage = NULL;
    s->usage_slots = NULL;
    s->n_usage = s->alloc_usage = s->n_usage_slots = 0;
    for (size_t i = 0; i < s->n_accounts; i++) {
        aws_account *acct = &s->accounts[i];
        const char *k = acct->id;
        char root[128];
        json_t *ev;
        if (!acct->noted || acct->note_done || acct->usage)
            continue;
        (void)snprintf(root, sizeof(root), "arn:aws:iam::%s:root", k);
        ev = json_pack("{s:b, s:s}", "evaluated", 0, "reason",
                       s->usage_reason ? s->usage_reason
                                       : "no service-last-accessed or Access Analyzer input");
        if (!ev)
            return -ENOMEM;
        r = audit_emit(a, "AWS-OP-011", FERRY_AUDIT_INFO, CLOUD, k, root, ev, "not-evaluated",
                       acct->noted);
        json_decref(ev);
        if (r < 0)
            return r;
        /* Noted once: a later finish (more inputs) does not repeat it. */
        acct->noted = NULL;
        acct->note_done = true;
    }
    return 0;
}

int audit_aws_usage_unavailable(ferry_audit *a, const char *reason)
{
    aws_state *s = state(a);
    char *d = reason ? strdup(reason) : NULL;

    if (!s || (reason && !d)) {
        free(d);
        return -ENOMEM;
    }
    free(s->usage_reason);
    s->usage_reason = d;
    return 0;
}

/* ---- service last accessed: the loader ---- */

static bool last_accessed_object(const json_t *o)
{
    return json_is_object(o) && json_is_array(json_object_get(o, "ServicesLastAccessed"));
}

/* One get-service-last-accessed-details object, a JSON array of them, or an object keyed by
 * principal ARN whose values are such objects. */
static bool detect_last_accessed(const json_t *doc)
{
    const char *k;
    json_t *v;

    if (json_is_array(doc))
        return json_array_size(doc) > 0 && last_accessed_object(json_array_get(doc, 0));
    if (last_accessed_object(doc))
        return true;
    if (!json_is_object(doc) || json_object_size(doc) == 0)
        return false;
    k = json_object_iter_key(json_object_iter((json_t *)doc));
    v = json_object_get(doc, k);
    return strncmp(k, "arn:", 4) == 0 && last_accessed_object(v);
}

/* The principal ARN a file of CloudMapper's layout is named by: the URL-encoded ARN as the
 * base name (".json" allowed). Decoded into out without allocating; false when the name is not
 * one. */
static bool arn_from_path(const char *path, char *out, size_t outlen)
{
    const char *base = strrchr(path, '/');
    size_t n = 0;

    base = base ? base + 1 : path;
    for (size_t i = 0; base[i]; i++) {
        int hi = base[i] == '%' ? ferry_hexval((unsigned char)base[i + 1]) : 0;
        int lo =
            hi >= 0 && base[i] == '%' && base[i + 1] ? ferry_hexval((unsigned char)base[i + 2]) : 0;
        if (n + 1 >= outlen || hi < 0 || lo < 0)
            return false;
        if (base[i] == '%') {
            out[n++] = (char)(hi << 4 | lo);
            i += 2;
        } else
            out[n++] = base[i];
    }
    out[n] = '\0';
    if (n > 5 && strcmp(out + n - 5, ".json") == 0)
        out[n -= 5] = '\0';
    return strncmp(out, "arn:", 4) == 0 && strstr(out, ":iam::") && strcspn(out, "\t\n\r ") == n;
}

/* The job id a file of CloudMapper's iam-get-service-last-accessed-details/ is named by (its
 * base name: letters, digits and '-'), into out; false when the name is not one. */
static bool job_from_path(const char *path, char *out, size_t outlen)
{
    const char *base = strrchr(path, '/');
    size_t n;

    base = base ? base + 1 : path;
    n = strlen(base);
    if (n > 5 && strcmp(base + n - 5, ".json") == 0)
        n -= 5;
    if (n == 0 || n >= outlen || n > 128 ||
        strspn(base, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP"
                     "QRSTUVWXYZ0123456789-") < n)
        return false;
    memcpy(out, base, n);
    out[n] = '\0';
    return true;
}

/* One object of a last-accessed input: where is its place in the document for the error line
 * ("" or "/3"), label a prefix for messages ("" or "[3]: " or "line 3: "). arn_hint: the ARN
 * the file name or bundle key gives, used when the object has no Arn. */
static int last_accessed_one(ferry_audit *a, const char *path, json_t *o, const char *arn_hint,
                             const char *where, const char *label, char *errbuf, size_t errlen)
{
    const char *arn = str_member(o, "Arn"), *status = str_member(o, "JobStatus");
    json_t *list = json_object_get(o, "ServicesLastAccessed"), *svcs = NULL, *entry = NULL, *v;
    char account[64];
    size_t i;
    int r;

    if (!arn)
        arn = arn_hint;
    if (!arn || !principal_account(arn, account)) {
        audit_error_where(a, "%s", where);
        return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                "%sthe output of get-service-last-accessed-details does not name "
                                "its principal: expected an Arn member "
                                "(arn:aws:iam::ACCOUNT:role/NAME), or a file named by the "
                                "URL-encoded ARN",
                                label);
    }
    if (!json_is_array(list)) {
        audit_error_where(a, "%s/ServicesLastAccessed", where);
        return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                "%s%s: ServicesLastAccessed: expected an array", label, arn);
    }
    if (status && strcmp(status, "COMPLETED") != 0) {
        audit_error_where(a, "%s/JobStatus", where);
        return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                "%s%s: JobStatus is %.20s, not COMPLETED: fetch the details "
                                "again once the job has completed",
                                label, arn, status);
    }
    if (json_array_size(list) > USAGE_MAX_SERVICES) {
        audit_error_where(a, "%s/ServicesLastAccessed", where);
        return ferry_errbuf_set(errbuf, errlen, -FERRY_ETOOBIG,
                                "%s%s: ServicesLastAccessed: more than %d services", label, arn,
                                USAGE_MAX_SERVICES);
    }
    svcs = json_object();
    if (!svcs)
        return -ENOMEM;
    json_array_foreach(list, i, v)
    {
        const char *ns = str_member(v, "ServiceNamespace");
        json_t *last = json_object_get(v, "LastAuthenticated");
        int64_t t;
        if (!ns || !*ns || strlen(ns) >= 64) {
            audit_error_where(a, "%s/ServicesLastAccessed/%zu", where, i);
            r = ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                 "%s%s: ServicesLastAccessed[%zu]: expected a ServiceNamespace "
                                 "string",
                                 label, arn, i);
            goto out;
        }
        if (last && !json_is_null(last) &&
            (!json_is_string(last) || audit_parse_time(json_string_value(last), &t) < 0)) {
            audit_error_where(a, "%s/ServicesLastAccessed/%zu/LastAuthenticated", where, i);
            r = ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                 "%s%s: ServicesLastAccessed[%zu].LastAuthenticated: expected a "
                                 "date",
                                 label, arn, i);
            goto out;
        }
        if (json_object_set_new(
                svcs, ns, last && !json_is_null(last) ? json_incref(last) : json_null()) < 0) {
            r = -ENOMEM;
            goto out;
        }
    }
    entry = json_pack("{s:s, s:s, s:O?, s:O}", "account", account, "source", path, "completed",
                      json_object_get(o, "JobCompletionDate"), "services", svcs);
    r = entry ? usage_add(a, arn, entry, errbuf, errlen) : -ENOMEM;
out:
    json_decref(entry);
    json_decref(svcs);
    return r;
}

static int load_last_accessed(ferry_audit *a, const char *path, const char *buf, size_t len,
                              json_t *doc, char *errbuf, size_t errlen)
{
    char hint[USAGE_ARN_MAX + 1], where[32];
    const char *k;
    json_t *v;
    size_t i;
    int r = 0;

    (void)buf;
    (void)len;
    if (last_accessed_object(doc)) {
        aws_state *s = state(a);
        char job[130];
        json_t *held;
        if (!s)
            return -ENOMEM;
        if (json_object_get(doc, "Arn") || arn_from_path(path, hint, sizeof(hint)))
            return last_accessed_one(a, path, doc, json_object_get(doc, "Arn") ? NULL : hint, "",
                                     "", errbuf, errlen);
        if (!job_from_path(path, job, sizeof(job)))
            return last_accessed_one(a, path, doc, NULL, "", "", errbuf, errlen);
        /* CloudMapper names the details by job id: its ARN comes from the generate output. */
        if (s->jobs && json_object_get(s->jobs, job))
            return last_accessed_one(a, path, doc, json_string_value(json_object_get(s->jobs, job)),
                                     "", "", errbuf, errlen);
        if (!s->orphans && !(s->orphans = json_object()))
            return -ENOMEM;
        held = json_pack("{s:O, s:s}", "doc", doc, "path", path);
        if (!held || json_object_set_new(s->orphans, job, held) < 0) /* held is released */
            return -ENOMEM;
        return 0;
    }
    if (json_is_array(doc)) {
        json_array_foreach(doc, i, v)
        {
            char label[32];
            (void)snprintf(where, sizeof(where), "/%zu", i);
            (void)snprintf(label, sizeof(label), "[%zu]: ", i);
            if (!last_accessed_object(v)) {
                audit_error_where(a, "%s", where);
                return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                        "[%zu]: expected a get-service-last-accessed-details "
                                        "object with Arn and ServicesLastAccessed",
                                        i);
            }
            r = last_accessed_one(a, path, v, NULL, where, label, errbuf, errlen);
            if (r < 0)
                return r;
        }
        return 0;
    }
    if (!json_is_object(doc))
        return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                "expected a get-service-last-accessed-details object, an array "
                                "of them, or an object keyed by principal ARN");
    json_object_foreach(doc, k, v)
    {
        if (strncmp(k, "arn:", 4) != 0 || !last_accessed_object(v)) {
            audit_error_where(a, "/%s", k);
            return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                    "member %.200s: expected a principal ARN with a "
                                    "get-service-last-accessed-details object",
                                    k);
        }
        char label[USAGE_ARN_MAX + 8];
        (void)snprintf(label, sizeof(label), "%.*s: ", USAGE_ARN_MAX, k);
        r = last_accessed_one(a, path, v, k, "", label, errbuf, errlen);
        a->err_where[0] = '\0'; /* an ARN key is no path component: no line */
        if (r < 0)
            return r;
    }
    return 0;
}

/* CloudMapper's iam-generate-service-last-accessed-details/: {"JobId": ...} in a file named by
 * the URL-encoded ARN of the principal. */
static bool detect_last_accessed_job(const json_t *doc)
{
    return json_is_object(doc) && json_object_size(doc) == 1 &&
           json_is_string(json_object_get(doc, "JobId"));
}

static int load_last_accessed_job(ferry_audit *a, const char *path, const char *buf, size_t len,
                                  json_t *doc, char *errbuf, size_t errlen)
{
    aws_state *s = state(a);
    const char *job = str_member(doc, "JobId");
    char arn[USAGE_ARN_MAX + 1], label[USAGE_ARN_MAX + 8];
    json_t *held;
    int r;

    (void)buf;
    (void)len;
    if (!s)
        return -ENOMEM;
    if (!job || !*job || strlen(job) > 128)
        return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                "expected {\"JobId\": ...} (generate-service-last-accessed-"
                                "details)");
    if (!arn_from_path(path, arn, sizeof(arn)))
        return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                "the output of generate-service-last-accessed-details does not "
                                "name its principal: expected a file named by the URL-encoded "
                                "ARN (CloudMapper's layout)");
    if (!s->jobs && !(s->jobs = json_object()))
        return -ENOMEM;
    if (json_object_set_new(s->jobs, job, json_string(arn)) < 0)
        return -ENOMEM;
    held = s->orphans ? json_object_get(s->orphans, job) : NULL;
    if (!held)
        return 0;
    /* Its details came first: decided now, reported from their file. */
    (void)snprintf(label, sizeof(label), "%.*s: ", USAGE_ARN_MAX, str_member(held, "path"));
    r = last_accessed_one(a, str_member(held, "path"), json_object_get(held, "doc"), arn, "", label,
                          errbuf, errlen);
    a->err_where[0] = '\0'; /* the error is in the other file */
    if (r == 0 && json_object_del(s->orphans, job) < 0)
        r = -ENOMEM;
    return r;
}

/* NDJSON: a text whose first line is a get-service-last-accessed-details object and which
 * does not parse as one JSON document (core.c asks the text loaders then). */
static bool detect_last_accessed_ndjson(const char *buf, size_t len)
{
    const char *nl = memchr(buf, '\n', len);
    size_t n = nl ? (size_t)(nl - buf) : len;

    /* A look at the first line only, without allocating: the loader parses every line. */
    return n > 1 && buf[0] == '{' && memmem(buf, n, "\"ServicesLastAccessed\"", 22) &&
           memmem(buf, n, "\"Arn\"", 5);
}

static int load_last_accessed_ndjson(ferry_audit *a, const char *path, const char *buf, size_t len,
                                     json_t *doc, char *errbuf, size_t errlen)
{
    size_t off = 0, lineno = 0;
    int r = 0;

    (void)doc;
    while (off < len && r == 0) {
        const char *nl = memchr(buf + off, '\n', len - off);
        size_t n = nl ? (size_t)(nl - (buf + off)) : len - off;
        char why[256];
        json_t *o = NULL;
        lineno++;
        if (n && buf[off + n - 1] == '\r')
            n--;
        if (strspn(buf + off, " \t") < n) {
            r = audit_parse_json(a, buf + off, n, &o, why, sizeof(why));
            if (r < 0)
                r = ferry_errbuf_set(errbuf, errlen, r, "line %zu: %s", lineno, why);
            else if (!last_accessed_object(o) || !json_is_string(json_object_get(o, "Arn")))
                r = ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                     "line %zu: expected a get-service-last-accessed-details "
                                     "object with Arn and ServicesLastAccessed",
                                     lineno);
            else {
                char label[48];
                (void)snprintf(label, sizeof(label), "line %zu: ", lineno);
                r = last_accessed_one(a, path, o, NULL, "", label, errbuf, errlen);
                a->err_where[0] = '\0'; /* not a path into one document */
            }
            json_decref(o);
        }
        off += (nl ? (size_t)(nl - (buf + off)) + 1 : len - off);
    }
    return r;
}

static const audit_loader aws_loaders[] = {
    {"aws-authz", "aws iam get-account-authorization-details: RoleDetailList/UserDetailList/...",
     detect_authz, NULL, load_authz},
    {"aws-credreport-json", "aws iam get-credential-report: Content + ReportFormat",
     detect_credreport_json, NULL, load_credreport},
    {"aws-credreport", "credential report CSV starting 'user,arn,user_creation_time'", NULL,
     detect_credreport_text, load_credreport},
    {"aws-last-accessed",
     "aws iam get-service-last-accessed-details: ServicesLastAccessed (with Arn, or in a file "
     "named by the URL-encoded ARN)",
     detect_last_accessed, NULL, load_last_accessed},
    {"aws-last-accessed-job",
     "aws iam generate-service-last-accessed-details: {JobId} in a file named by the "
     "URL-encoded ARN (CloudMapper)",
     detect_last_accessed_job, NULL, load_last_accessed_job},
    {"aws-last-accessed-ndjson", "one get-service-last-accessed-details object with Arn a line",
     NULL, detect_last_accessed_ndjson, load_last_accessed_ndjson},
};

const audit_cloud audit_cloud_aws = {
    .name = CLOUD,
    .rules = aws_rules,
    .n_rules = ARRAY_SIZE(aws_rules),
    .loaders = aws_loaders,
    .n_loaders = ARRAY_SIZE(aws_loaders),
    .finish = aws_finish,
    .release = aws_release,
};
