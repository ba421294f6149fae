/* audit/iac.c - the infrastructure-as-code inventory (--iac-inventory) and the owner tag keys
 * (--owner-tag-keys): what AWS-SH-009, AWS-SH-010 and the unmanaged half of GCP-SH-009 compare
 * the exports with (docs/internals/audit.md, "IaC inventory and owners").
 *
 * An inventory is `terraform show -json` (state or plan: values / planned_values /
 * prior_state, modules nested to any depth) or CloudFormation `describe-stack-resources` /
 * `list-stack-resources`. From it the run keeps a small set of identity keys:
 *   "aws:arn:ARN"                    a role or user ARN (Terraform state)
 *   "aws:name:ACCOUNT|*:KIND:NAME"   a role or user name (Terraform plan, CloudFormation)
 *   "gcp:EMAIL"                      a Google service account
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "audit-internal.h"
#include "basic/errbuf.h"
#include "basic/macro.h"
#include "ferry/error.h"

/* Most identity keys one run keeps from its inventories. */
#define IAC_MAX_KEYS 1000000
/* Deepest module nesting followed in a Terraform document. */
#define IAC_MAX_MODULE_DEPTH 32

static int add_key(ferry_audit *a, const char *fmt, ...) _printf_(2, 3);

static int add_key(ferry_audit *a, const char *fmt, ...)
{
    char key[2200];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(key, sizeof(key), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(key))
        return 0; /* longer than any ARN or e-mail: cannot match an identity */
    if (json_object_size(a->iac) >= IAC_MAX_KEYS)
        return -FERRY_ETOOBIG;
    return json_object_set_new(a->iac, key, json_true()) < 0 ? -ENOMEM : 0;
}

static const char *member(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* The account of an ARN (arn:PARTITION:SERVICE:REGION:ACCOUNT:...) into out[13], or "*". */
static void arn_account(const char *arn, char out[13])
{
    const char *p = arn;
    int colons = 0;
    out[0] = '*';
    out[1] = '\0';
    if (!arn || strncmp(arn, "arn:", 4) != 0)
        return;
    while (*p && colons < 4)
        if (*p++ == ':')
            colons++;
    if (colons == 4 && strspn(p, "0123456789") == 12 && p[12] == ':') {
        memcpy(out, p, 12);
        out[12] = '\0';
    }
}

/* One Terraform resource: {type, values: {...}}. */
static int terraform_resource(ferry_audit *a, const json_t *res)
{
    const char *type = member(res, "type");
    const json_t *v = json_object_get(res, "values");
    const char *mode = member(res, "mode");
    char account[13];
    int r = 0;

    if (!type || !json_is_object(v) || (mode && strcmp(mode, "managed") != 0))
        return 0;
    if (strcmp(type, "aws_iam_role") == 0 || strcmp(type, "aws_iam_user") == 0) {
        const char *arn = member(v, "arn"), *name = member(v, "name");
        const char *kind = type[8] == 'r' ? "role" : "user";
        arn_account(arn, account);
        if (arn)
            r = add_key(a, "aws:arn:%s", arn);
        if (r == 0 && name)
            r = add_key(a, "aws:name:%s:%s:%s", account, kind, name);
    } else if (strcmp(type, "google_service_account") == 0) {
        const char *email = member(v, "email"), *id = member(v, "account_id");
        const char *project = member(v, "project");
        if (email)
            r = add_key(a, "gcp:%s", email);
        else if (id && project)
            r = add_key(a, "gcp:%s@%s.iam.gserviceaccount.com", id, project);
    }
    return r;
}

static int terraform_module(ferry_audit *a, const json_t *mod, unsigned depth)
{
    const json_t *v;
    size_t i;
    int r;

    if (!json_is_object(mod))
        return 0;
    if (depth > IAC_MAX_MODULE_DEPTH)
        return -FERRY_ETOOBIG;
    json_array_foreach(json_object_get(mod, "resources"), i, v)
    {
        if ((r = terraform_resource(a, v)) < 0)
            return r;
    }
    json_array_foreach(json_object_get(mod, "child_modules"), i, v)
    {
        if ((r = terraform_module(a, v, depth + 1)) < 0)
            return r;
    }
    return 0;
}

static int cloudformation(ferry_audit *a, const json_t *list)
{
    const json_t *v;
    size_t i;
    int r = 0;

    json_array_foreach(list, i, v)
    {
        const char *type = member(v, "ResourceType"), *name = member(v, "PhysicalResourceId");
        char account[13];
        if (!type || !name)
            continue;
        arn_account(member(v, "StackId"), account);
        if (strcmp(type, "AWS::IAM::Role") == 0)
            r = add_key(a, "aws:name:%s:role:%s", account, name);
        else if (strcmp(type, "AWS::IAM::User") == 0)
            r = add_key(a, "aws:name:%s:user:%s", account, name);
        if (r < 0)
            return r;
    }
    return 0;
}

FERRY_EXPORT int ferry_audit_add_iac_inventory(ferry_audit *a, const char *path, const void *buf,
                                               size_t len, char *errbuf, size_t errlen)
{
    _cleanup_(json_decrefp) json_t *doc = NULL;
    json_t *cfn;
    char why[512];
    int r;

    if (!a || !path || (!buf && len))
        return -EINVAL;
    r = audit_parse_json(a, buf, len, &doc, why, sizeof(why));
    if (r < 0)
        return ferry_errbuf_set(errbuf, errlen, r, "%s:%s", path, why);
    if (!a->iac && !(a->iac = json_object()))
        return -ENOMEM;
    cfn = json_object_get(doc, "StackResources");
    if (!cfn)
        cfn = json_object_get(doc, "StackResourceSummaries");
    if (json_is_array(cfn)) {
        r = cloudformation(a, cfn);
    } else if (json_is_object(doc) && json_object_get(doc, "format_version") &&
               (json_object_get(doc, "values") || json_object_get(doc, "planned_values") ||
                json_object_get(doc, "prior_state"))) {
        static const char *const roots[] = {"values", "planned_values", "prior_state"};
        for (size_t i = 0; i < ARRAY_SIZE(roots) && r == 0; i++) {
            json_t *v = json_object_get(doc, roots[i]);
            if (strcmp(roots[i], "prior_state") == 0)
                v = json_object_get(v, "values");
            r = terraform_module(a, json_object_get(v, "root_module"), 0);
        }
    } else {
        return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                "%s: not an IaC inventory; expected terraform show -json output "
                                "(format_version with values or planned_values) or "
                                "CloudFormation describe-stack-resources ({\"StackResources\": "
                                "[...]})",
                                path);
    }
    if (r == -FERRY_ETOOBIG)
        return ferry_errbuf_set(errbuf, errlen, r,
                                "%s: more than %d identities or modules nested deeper than %d",
                                path, IAC_MAX_KEYS, IAC_MAX_MODULE_DEPTH);
    return r;
}

FERRY_EXPORT int ferry_audit_set_owner_tag_keys(ferry_audit *a, const char *keys)
{
    const char *p = keys;

    if (!a || !keys)
        return -EINVAL;
    json_decref(a->owner_tag_keys);
    if (!(a->owner_tag_keys = json_object()))
        return -ENOMEM;
    while (*p) {
        size_t n = strcspn(p, ",");
        char key[129];
        if (n == 0 || n >= sizeof(key))
            return -EINVAL;
        memcpy(key, p, n);
        key[n] = '\0';
        for (char *k = key; *k; k++) {
            if ((unsigned char)*k < 0x20 || *k == 0x7f)
                return -EINVAL;
            *k = (char)(*k >= 'A' && *k <= 'Z' ? *k + 32 : *k);
        }
        if (json_object_set_new(a->owner_tag_keys, key, json_true()) < 0)
            return -ENOMEM;
        p += n;
        if (*p == ',' && !*++p)
            return -EINVAL;
    }
    return json_object_size(a->owner_tag_keys) ? 0 : -EINVAL;
}

bool audit_iac_loaded(const ferry_audit *a)
{
    return a->iac != NULL;
}

bool audit_iac_manages_aws(const ferry_audit *a, const char *arn, const char *account, bool role,
                           const char *name)
{
    char key[2200];
    if (!a->iac)
        return false;
    (void)snprintf(key, sizeof(key), "aws:arn:%s", arn);
    if (json_object_get(a->iac, key))
        return true;
    if (!name)
        return false;
    (void)snprintf(key, sizeof(key), "aws:name:%s:%s:%s", account, role ? "role" : "user", name);
    if (json_object_get(a->iac, key))
        return true;
    (void)snprintf(key, sizeof(key), "aws:name:*:%s:%s", role ? "role" : "user", name);
    return json_object_get(a->iac, key) != NULL;
}

bool audit_iac_manages_gcp(const ferry_audit *a, const char *email)
{
    char key[600];
    if (!a->iac || !email)
        return false;
    (void)snprintf(key, sizeof(key), "gcp:%s", email);
    return json_object_get(a->iac, key) != NULL;
}

bool audit_owner_tagged(const ferry_audit *a, const json_t *tags)
{
    const json_t *t;
    size_t i;
    json_array_foreach(tags, i, t)
    {
        const char *k = member(t, "Key"), *v = member(t, "Value");
        char low[129];
        size_t n;
        if (!k || !v || !*v || (n = strlen(k)) >= sizeof(low))
            continue;
        for (size_t j = 0; j <= n; j++)
            low[j] = (char)(k[j] >= 'A' && k[j] <= 'Z' ? k[j] + 32 : k[j]);
        if (json_object_get(a->owner_tag_keys, low))
            return true;
    }
    return false;
}
