/* audit/shadow.c - shadow identities: the cloud service identities no ferry policy declares,
 * static credentials where ferry could federate, and ferry's own grants left unused
 * (docs/internals/audit.md, "Shadow identities").
 *
 * With --policies, the declared workload identities are indexed once (role ARNs, GCP service
 * accounts, Azure client ids with their tenant, Kubernetes service-account subjects with their
 * issuer). Every identity a loader notes is compared with them at once; only the undeclared
 * ones, and declared ones that carry a static credential or an exclusion flag, are kept: a
 * name and one integer of flags each. The rules are decided when the run finishes, after every
 * cloud's finish, so the flags of one identity seen in several inputs are merged first.
 * Without --policies nothing is kept.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "audit-internal.h"
#include "basic/errbuf.h"
#include "basic/macro.h"
#include "ferry/auditlog.h"
#include "ferry/error.h"
#include "ferry/policy.h"

#define DAY ((int64_t)86400)
/* Identities kept by one run (each is a name and an integer). */
#define SHADOW_MAX_IDENTITIES ((size_t)10 * 1000 * 1000)
/* Longest account and id of a noted identity; issuers compared. */
#define SHADOW_ACCOUNT_MAX 256
#define SHADOW_ID_MAX 2048
#define SHADOW_ISSUER_MAX 1024
/* Input files one run names as sources (the index is packed into the flags integer). */
#define SHADOW_MAX_SOURCES ((size_t)1 << 30)

/* Bits of the packed integer kept per identity, above the AUDIT_ID_* flags. */
#define K_FLAGS 0xffffu
#define K_TRUSTS_FERRY (1u << 16)
#define K_DECLARED (1u << 17)
#define K_SOURCE_SHIFT 24

static const audit_rule x_rules[] = {
    {"X-003", "Static secret where federation is possible", FERRY_AUDIT_MEDIUM,
     "A long-lived credential (AWS access key, GCP user-managed key, Azure client secret, "
     "Kubernetes legacy service-account token) exists on an identity that ferry's policies "
     "already declare, or on a cloud ferry brokers: the workload can get short-lived "
     "credentials through ferry instead.",
     "Move the workload to ferry-issued short-lived credentials (a policy granting this "
     "identity), then delete the static credential."},
    {"X-004", "Broker-unmanaged identity", FERRY_AUDIT_LOW,
     "A cloud service identity with active credentials (a static credential, or federation "
     "that was used) that no ferry policy declares: its credentials are issued and rotated "
     "outside the broker. Medium when the identity trusts ferry's own issuer but no policy "
     "grants it (a federation left behind, or set up around the policies).",
     "Declare the identity in a ferry policy (grant.aws / grant.gcp / grant.azure, or match the "
     "service account) and issue its credentials through ferry, or delete it when it is not "
     "needed; remove a trust of ferry's issuer that no policy uses."},
    {"X-005", "Unused ferry grant", FERRY_AUDIT_MEDIUM,
     "ferry's addition to the catalogue, from ferry's own audit log (--usage): a policy of "
     "--policies through which no token exchange was allowed within --unused-days, so the "
     "roles, service accounts, apps and secrets it grants stand unused.",
     "Remove the policy (or the grants in it that are not needed), or narrow it to the "
     "workloads that still use it."},
};

enum { C_AWS, C_GCP, C_AZURE, C_K8S, C_COUNT };
static const char *const cloud_names[C_COUNT] = {"aws", "gcp", "azure", "k8s"};

typedef struct k8s_decl {
    const char *subject; /* exact subject or glob (borrowed from the set) */
    bool glob;
    char *issuer; /* normalised */
} k8s_decl;

typedef struct shadow_state {
    ferry_policy_set *set;
    char *issuer;     /* ferry's issuer as given, or NULL */
    char *issuer_key; /* normalised */
    json_t *aws;      /* role ARN -> true */
    json_t *gcp;      /* lowercase SA e-mail -> true */
    json_t *azure;    /* lowercase client id and "tenant/client" -> true */
    k8s_decl *k8s;
    size_t n_k8s;
    unsigned brokered; /* bit per C_*: ferry's policies grant or match identities there */
    json_t *ids;       /* packed key -> integer (K_*), of the scopes in memory */
    json_t *sources;   /* input paths, indexed from the packed integer */
    /* The identities of the other scopes ("cloud:LEN:ACCOUNT", the packed key's start) wait in
     * spill under their scope (see shadow_resident); scopes: the scopes ever put there. */
    audit_spill spill;
    json_t *scopes;
    size_t evict_at; /* twice what stayed in memory at the last eviction (or a->spill_after) */
    bool finished;
    /* --usage */
    char *usage_path;
    json_t *last_used; /* policy id -> epoch of the last allowed exchange, or null */
    int64_t log_first, log_last;
    uint64_t log_records;
    bool usage;
} shadow_state;

static void shadow_release(ferry_audit *a)
{
    shadow_state *s = a->shadow;

    if (!s)
        return;
    ferry_policy_set_unref(s->set);
    free(s->issuer);
    free(s->issuer_key);
    json_decref(s->aws);
    json_decref(s->gcp);
    json_decref(s->azure);
    for (size_t i = 0; i < s->n_k8s; i++)
        free(s->k8s[i].issuer);
    free(s->k8s);
    json_decref(s->ids);
    json_decref(s->sources);
    audit_spill_release(&s->spill);
    json_decref(s->scopes);
    free(s->usage_path);
    json_decref(s->last_used);
    free(s);
    a->shadow = NULL;
}

const audit_cloud audit_cloud_x = {
    .name = "x",
    .rules = x_rules,
    .n_rules = ARRAY_SIZE(x_rules),
    .release = shadow_release,
};

static int cloud_index(const char *cloud)
{
    for (int i = 0; i < C_COUNT; i++)
        if (cloud && strcmp(cloud, cloud_names[i]) == 0)
            return i;
    return -1;
}

static char *lower_dup(const char *s)
{
    char *d = strdup(s);
    for (char *p = d; p && *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return d;
}

/* The comparable form of an issuer as exports write it: an AWS OIDC provider ARN
 * (arn:aws:iam::ACCOUNT:oidc-provider/HOST/PATH), a URL or a bare host. The scheme and the
 * trailing '/' go, the host is lowercased, the path is kept as it is. NULL for no memory;
 * "" for something that names no issuer. */
static char *issuer_key(const char *s)
{
    const char *p = strstr(s, ":oidc-provider/");
    char *k;
    size_t n, host;

    if (p && strncmp(s, "arn:", 4) == 0)
        s = p + strlen(":oidc-provider/");
    else if (strncasecmp(s, "https://", 8) == 0)
        s += 8;
    else if (strncasecmp(s, "http://", 7) == 0)
        s += 7;
    n = strnlen(s, SHADOW_ISSUER_MAX + 1);
    if (n > SHADOW_ISSUER_MAX)
        return strdup("");
    while (n > 0 && s[n - 1] == '/')
        n--;
    k = strndup(s, n);
    if (!k)
        return NULL;
    host = strcspn(k, "/");
    for (size_t i = 0; i < host; i++)
        k[i] = (char)tolower((unsigned char)k[i]);
    return k;
}

static int set_true(json_t *o, const char *key)
{
    return json_object_set_new_nocheck(o, key, json_true()) < 0 ? -ENOMEM : 0;
}

static const char k8s_prefix[] = "system:serviceaccount:";

static int index_policy(shadow_state *s, const ferry_policy_info *p)
{
    char key[600];
    int r = 0;

    for (size_t i = 0; i < p->n_aws && r == 0; i++) {
        r = set_true(s->aws, p->aws[i].role_arn);
        s->brokered |= 1u << C_AWS;
    }
    for (size_t i = 0; i < p->n_gcp && r == 0; i++) {
        char *e = lower_dup(p->gcp[i]);
        r = e ? set_true(s->gcp, e) : -ENOMEM;
        free(e);
        s->brokered |= 1u << C_GCP;
    }
    for (size_t i = 0; i < p->n_azure && r == 0; i++) {
        /* The policy module keeps both as lowercase GUIDs. */
        r = set_true(s->azure, p->azure[i].client_id);
        (void)snprintf(key, sizeof(key), "%s/%s", p->azure[i].tenant_id, p->azure[i].client_id);
        if (r == 0)
            r = set_true(s->azure, key);
        s->brokered |= 1u << C_AZURE;
    }
    if (r == 0 && strncmp(p->subject, k8s_prefix, strlen(k8s_prefix)) == 0) {
        k8s_decl *n = realloc(s->k8s, (s->n_k8s + 1) * sizeof(*n));
        if (!n)
            return -ENOMEM;
        s->k8s = n;
        n[s->n_k8s] = (k8s_decl){.subject = p->subject, .glob = p->subject_glob};
        n[s->n_k8s].issuer = issuer_key(p->issuer);
        if (!n[s->n_k8s].issuer)
            return -ENOMEM;
        s->n_k8s++;
        s->brokered |= 1u << C_K8S;
    }
    return r;
}

FERRY_EXPORT int ferry_audit_set_policies(ferry_audit *a, struct ferry_policy_set *set,
                                          const char *ferry_issuer)
{
    shadow_state *s;
    size_t n;
    int r = 0;

    if (!a || !set || a->shadow || json_array_size(a->inputs) > 0 ||
        (ferry_issuer && (!*ferry_issuer || strlen(ferry_issuer) > SHADOW_ISSUER_MAX)))
        return -EINVAL;
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    a->shadow = s;
    s->set = ferry_policy_set_ref(set);
    s->aws = json_object();
    s->gcp = json_object();
    s->azure = json_object();
    s->ids = json_object();
    s->sources = json_array();
    s->scopes = json_object();
    audit_spill_init(&s->spill);
    if (!s->aws || !s->gcp || !s->azure || !s->ids || !s->sources || !s->scopes)
        r = -ENOMEM;
    if (r == 0 && ferry_issuer) {
        s->issuer = strdup(ferry_issuer);
        s->issuer_key = issuer_key(ferry_issuer);
        if (!s->issuer || !s->issuer_key)
            r = -ENOMEM;
    }
    n = ferry_policy_set_count(set);
    for (size_t i = 0; i < n && r == 0; i++) {
        ferry_policy_info p;
        r = ferry_policy_set_get(set, i, &p);
        if (r == 0)
            r = index_policy(s, &p);
    }
    if (r < 0)
        shadow_release(a);
    return r;
}

static bool k8s_declared(const shadow_state *s, const audit_identity *id, char *const *issuers,
                         size_t n_issuers)
{
    for (size_t i = 0; i < s->n_k8s; i++) {
        const k8s_decl *d = &s->k8s[i];
        bool issuer_ok = n_issuers == 0;
        if (d->glob ? !ferry_policy_glob_match(d->subject, id->id) : strcmp(d->subject, id->id))
            continue;
        /* The cluster's issuer is not in every export: when it is, it must be the policy's. */
        for (size_t k = 0; k < n_issuers && !issuer_ok; k++)
            issuer_ok = strcmp(issuers[k], d->issuer) == 0;
        if (issuer_ok)
            return true;
    }
    return false;
}

static bool declared(const shadow_state *s, int cloud, const audit_identity *id,
                     char *const *issuers, size_t n_issuers)
{
    char key[SHADOW_ACCOUNT_MAX + SHADOW_ID_MAX + 2];
    const char *names[2] = {id->id, id->alias};

    switch (cloud) {
    case C_AWS:
        return json_object_get(s->aws, id->id) != NULL;
    case C_GCP:
        for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
            size_t k;
            if (!names[i] || strlen(names[i]) >= sizeof(key))
                continue;
            for (k = 0; names[i][k]; k++)
                key[k] = (char)tolower((unsigned char)names[i][k]);
            key[k] = '\0';
            if (json_object_get(s->gcp, key))
                return true;
        }
        return false;
    case C_AZURE:
        for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
            size_t k = 0;
            const char *p;
            if (!names[i])
                continue;
            /* With the tenant when the export names it, else the client id alone. */
            if (id->account && id->account[0]) {
                for (p = id->account; *p && k < SHADOW_ACCOUNT_MAX; p++)
                    key[k++] = (char)tolower((unsigned char)*p);
                key[k++] = '/';
            }
            for (p = names[i]; *p && k < sizeof(key) - 1; p++)
                key[k++] = (char)tolower((unsigned char)*p);
            key[k] = '\0';
            if (json_object_get(s->azure, key))
                return true;
        }
        return false;
    case C_K8S:
        return k8s_declared(s, id, issuers, n_issuers);
    }
    return false;
}

static int source_index(shadow_state *s, const char *path, size_t *ret)
{
    size_t n = json_array_size(s->sources);

    /* Loaders note the identities of one input together: the last source is the usual hit. */
    if (n && strcmp(json_string_value(json_array_get(s->sources, n - 1)), path) == 0) {
        *ret = n - 1;
        return 0;
    }
    if (n >= SHADOW_MAX_SOURCES)
        return -FERRY_ETOOBIG;
    if (json_array_append_new(s->sources, json_stringn_nocheck(path, strlen(path))) < 0)
        return -ENOMEM;
    *ret = n;
    return 0;
}

/* ---- identities of other scopes, in the temporary file ------------------------------------
 *
 * An identity's notes all name its scope (cloud and account: AWS account, GCP project, Azure
 * tenant, Kubernetes cluster), so, as aws.c does with its records, the state holds the
 * identities of the scopes being noted and, past a->spill_after of them (or twice what stayed
 * the last time), puts every other scope's in the temporary file, one segment per scope: each
 * identity as its packed key (audit_rec_put_str) and its int64. A note of a scope first takes
 * its identities back, so merging sees every earlier note; the end of the run decides them
 * scope by scope. */

/* The scope of a packed key: its "cloud:LEN:ACCOUNT" start, as a length. */
static size_t scope_len(const char *key)
{
    const char *colon = strchr(key, ':');
    char *end;
    unsigned long alen;

    if (!colon)
        return 0;
    alen = strtoul(colon + 1, &end, 10);
    if (*end != ':' || strlen(end + 1) < alen)
        return 0;
    return (size_t)(end + 1 - key) + alen;
}

static int shadow_unspill(void *userdata, const char *data, size_t len)
{
    shadow_state *s = userdata;
    audit_rec_reader rd = {data, len};
    int r = 0;

    while (rd.left && r == 0) {
        const char *key;
        int64_t packed;
        json_t *v;
        r = audit_rec_get_str(&rd, &key);
        if (r == 0)
            r = audit_rec_get(&rd, &packed, sizeof(packed));
        if (r == 0 && !key)
            r = -EIO;
        if (r < 0)
            break;
        v = json_integer((json_int_t)packed);
        if (!v || json_object_set_new_nocheck(s->ids, key, v) < 0)
            r = -ENOMEM;
    }
    return r;
}

/* Put every identity of a scope other than keep in the temporary file. */
static int shadow_evict(ferry_audit *a, shadow_state *s, const char *keep)
{
    json_t *mine = json_object(), *groups = json_object(), *v;
    ferry_buf *bufs = NULL;
    size_t n = 0, alloc = 0;
    const char *key;
    int r = mine && groups ? 0 : -ENOMEM;

    json_object_foreach(s->ids, key, v)
    {
        size_t sl = scope_len(key);
        char *scope;
        json_t *at;
        int64_t packed = (int64_t)json_integer_value(v);
        if (r < 0)
            break;
        if (!sl) {
            r = -EINVAL;
            break;
        }
        if (strncmp(key, keep, sl) == 0 && keep[sl] == '\0') {
            if (json_object_set_nocheck(mine, key, v) < 0)
                r = -ENOMEM;
            continue;
        }
        if (!(scope = strndup(key, sl))) {
            r = -ENOMEM;
            break;
        }
        at = json_object_get(groups, scope);
        if (!at) {
            r = audit_vec_room(&bufs, &alloc, n, sizeof(*bufs), 16, SHADOW_MAX_IDENTITIES);
            if (r == 0) {
                ferry_buf_init(&bufs[n], (size_t)1 << 30, false);
                at = json_integer((json_int_t)n++);
                if (!at || json_object_set_new(groups, scope, at) < 0)
                    r = -ENOMEM;
            }
        }
        free(scope);
        if (r == 0)
            r = audit_rec_put_str(&bufs[json_integer_value(at)], key);
        if (r == 0)
            r = ferry_buf_append(&bufs[json_integer_value(at)], &packed, sizeof(packed));
    }
    json_object_foreach(groups, key, v)
    {
        if (r == 0)
            r = audit_spill_put(&s->spill, key, bufs[json_integer_value(v)].data,
                                bufs[json_integer_value(v)].len);
        if (r == 0 && json_object_set_new(s->scopes, key, json_true()) < 0)
            r = -ENOMEM;
    }
    if (r == 0) {
        json_decref(s->ids);
        s->ids = mine;
        mine = NULL;
    }
    s->evict_at = 2 * json_object_size(s->ids);
    for (size_t i = 0; i < n; i++)
        ferry_buf_release(&bufs[i]);
    free(bufs);
    json_decref(groups);
    json_decref(mine);
    return r;
}

/* Make scope's identities the ones in memory: the others' put aside when too many are held,
 * then what was put aside of scope taken back. */
static int shadow_resident(ferry_audit *a, shadow_state *s, const char *scope)
{
    int r = 0;

    if (json_object_size(s->ids) > (s->evict_at > a->spill_after ? s->evict_at : a->spill_after))
        r = shadow_evict(a, s, scope);
    if (r == 0 && audit_spill_holds(&s->spill, scope))
        r = audit_spill_take(&s->spill, scope, shadow_unspill, s);
    return r;
}

size_t audit_shadow_held(const ferry_audit *a, uint64_t *ret_spilled)
{
    const shadow_state *s = a->shadow;
    *ret_spilled = s ? s->spill.size : 0;
    return s ? json_object_size(s->ids) : 0;
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

int audit_identity_note(ferry_audit *a, const audit_identity *id)
{
    shadow_state *s = a->shadow;
    char **issuers = NULL, *key = NULL;
    size_t n_issuers = 0, src = 0, alen, ilen, slen;
    json_int_t packed = 0, old = 0;
    json_t *prev;
    bool trusts = false;
    int cloud, r = 0;

    if (!s) /* no --policies: nothing to compare with */
        return 0;
    cloud = cloud_index(id ? id->cloud : NULL);
    if (cloud < 0 || !id->id || !*id->id)
        return -EINVAL;
    alen = id->account ? strlen(id->account) : 0;
    ilen = strlen(id->id);
    if (alen > SHADOW_ACCOUNT_MAX || ilen > SHADOW_ID_MAX)
        return -FERRY_ETOOBIG;
    for (size_t i = 0; id->issuers && id->issuers[i]; i++)
        n_issuers++;
    if (n_issuers) {
        issuers = calloc(n_issuers, sizeof(*issuers));
        if (!issuers)
            return -ENOMEM;
        for (size_t i = 0; i < n_issuers; i++) {
            issuers[i] = issuer_key(id->issuers[i]);
            if (!issuers[i]) {
                free_strv(issuers, n_issuers);
                return -ENOMEM;
            }
            trusts = trusts || (s->issuer_key && strcmp(issuers[i], s->issuer_key) == 0);
        }
    }
    packed = (json_int_t)(id->flags & K_FLAGS);
    if (trusts)
        packed |= K_TRUSTS_FERRY;
    if (declared(s, cloud, id, issuers, n_issuers))
        packed |= K_DECLARED;
    free_strv(issuers, n_issuers);
    /* "cloud:LEN:ACCOUNTid": the account's length makes the split unambiguous. */
    if (asprintf(&key, "%s:%zu:%s%s", cloud_names[cloud], alen, id->account ? id->account : "",
                 id->id) < 0)
        return -ENOMEM;
    /* its scope: the key without the id */
    slen = strlen(key) - ilen;
    key[slen] = '\0';
    r = shadow_resident(a, s, key);
    key[slen] = id->id[0];
    if (r < 0) {
        if (s->spill.why[0]) /* for core.c's message: the caller has no error buffer */
            (void)snprintf(a->spill_why, sizeof(a->spill_why), "%s", s->spill.why);
        goto out;
    }
    prev = json_object_get(s->ids, key);
    if (prev) {
        old = json_integer_value(prev);
        packed |= old; /* flags and trust merge; the first source stays */
    } else if ((packed & K_DECLARED) && !(packed & (AUDIT_ID_STATIC_CRED | AUDIT_ID_DISABLED |
                                                    AUDIT_ID_MANAGED | AUDIT_ID_HUMAN))) {
        goto out; /* declared and nothing a rule needs: not kept */
    } else if (json_object_size(s->ids) >= SHADOW_MAX_IDENTITIES) {
        r = -FERRY_ETOOBIG;
        goto out;
    } else {
        r = source_index(s, id->source ? id->source : "", &src);
        if (r < 0)
            goto out;
        packed |= (json_int_t)src << K_SOURCE_SHIFT;
    }
    if (!prev || packed != old) {
        json_t *v = json_integer(packed);
        if (!v || json_object_set_new_nocheck(s->ids, key, v) < 0)
            r = -ENOMEM;
    }
out:
    free(key);
    return r;
}

/* ---- the rules, when the run finishes ----------------------------------------------------- */

static const char *static_kind(int cloud)
{
    static const char *const kinds[C_COUNT] = {"access key", "user-managed key", "client secret",
                                               "legacy service-account token"};
    return kinds[cloud];
}

static int shadow_identity(ferry_audit *a, shadow_state *s, const char *key, json_int_t packed)
{
    unsigned flags = (unsigned)(packed & K_FLAGS);
    bool trusts = packed & K_TRUSTS_FERRY, decl = packed & K_DECLARED;
    bool stat = flags & AUDIT_ID_STATIC_CRED, used = flags & AUDIT_ID_USED;
    bool fed = flags & AUDIT_ID_FEDERATED;
    const char *source =
        json_string_value(json_array_get(s->sources, (size_t)(packed >> K_SOURCE_SHIFT)));
    char cloud_s[8], *account = NULL, *end;
    const char *colon = strchr(key, ':'), *id;
    unsigned long alen;
    int cloud, r = 0;

    if (flags & (AUDIT_ID_MANAGED | AUDIT_ID_DISABLED | AUDIT_ID_HUMAN))
        return 0;
    if (!colon || (size_t)(colon - key) >= sizeof(cloud_s))
        return -EINVAL;
    memcpy(cloud_s, key, (size_t)(colon - key));
    cloud_s[colon - key] = '\0';
    cloud = cloud_index(cloud_s);
    alen = strtoul(colon + 1, &end, 10);
    if (cloud < 0 || *end != ':' || strlen(end + 1) < alen)
        return -EINVAL;
    account = strndup(end + 1, alen);
    if (!account)
        return -ENOMEM;
    id = end + 1 + alen;

    if (!decl && (stat || (fed && used) || trusts)) {
        json_t *creds = json_array(), *ev;
        if (!creds || (stat && json_array_append_new(creds, json_string(static_kind(cloud)))) ||
            (fed && json_array_append_new(creds, json_string("federated")))) {
            json_decref(creds);
            r = -ENOMEM;
            goto out;
        }
        ev = json_pack("{s:b, s:o, s:b, s:b}", "declared", 0, "credentials", creds, "used",
                       (int)used, "trusts_ferry_issuer", (int)trusts);
        if (ev && trusts && json_object_set_new(ev, "ferry_issuer", json_string(s->issuer)) < 0) {
            json_decref(ev);
            ev = NULL;
        }
        r = ev ? audit_emit(a, "X-004", trusts ? FERRY_AUDIT_MEDIUM : -1, cloud_names[cloud],
                            account, id, ev, "undeclared", source)
               : -ENOMEM;
        json_decref(ev);
        if (r < 0)
            goto out;
    }
    if (stat && (decl || (s->brokered & (1u << cloud)))) {
        json_t *ev = json_pack("{s:s, s:b, s:s}", "credential", static_kind(cloud), "declared",
                               (int)decl, "why",
                               decl ? "a ferry policy already declares this identity"
                                    : "ferry's policies broker this cloud");
        r = ev ? audit_emit(a, "X-003", -1, cloud_names[cloud], account, id, ev,
                            "static-credential", source)
               : -ENOMEM;
        json_decref(ev);
    }
out:
    free(account);
    return r;
}

static json_t *str_list(const char *const *v, size_t n)
{
    json_t *l = json_array();
    for (size_t i = 0; l && i < n; i++)
        if (json_array_append_new(l, json_string(v[i])) < 0) {
            json_decref(l);
            return NULL;
        }
    return l;
}

static int format_time(int64_t t, char out[32])
{
    struct tm tm;
    time_t tt = (time_t)t;
    if (!gmtime_r(&tt, &tm) || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        return -EINVAL;
    return 0;
}

static int unused_policy(ferry_audit *a, shadow_state *s, const ferry_policy_info *p,
                         const json_t *last)
{
    json_t *ev, *aws = json_array(), *azure = json_array(), *gcp, *secrets;
    char when[32];
    int r;

    gcp = str_list(p->gcp, p->n_gcp);
    secrets = str_list(p->secrets, p->n_secrets);
    for (size_t i = 0; aws && i < p->n_aws; i++)
        if (json_array_append_new(aws, json_string(p->aws[i].role_arn)) < 0) {
            json_decref(aws);
            aws = NULL;
        }
    for (size_t i = 0; azure && i < p->n_azure; i++)
        if (json_array_append_new(azure, json_string(p->azure[i].client_id)) < 0) {
            json_decref(azure);
            azure = NULL;
        }
    if (!aws || !azure || !gcp || !secrets) {
        json_decref(aws);
        json_decref(azure);
        json_decref(gcp);
        json_decref(secrets);
        return -ENOMEM;
    }
    ev = json_pack("{s:s, s:s, s:i, s:o, s:o, s:o, s:o, s:i}", "policy", p->id, "file", p->file,
                   "line", (int)p->line, "aws", aws, "azure", azure, "gcp", gcp, "secrets", secrets,
                   "unused_days", (int)a->opts.unused_days);
    if (!ev)
        return -ENOMEM;
    if (json_is_integer(last) && format_time(json_integer_value(last), when) == 0)
        r = json_object_set_new(ev, "last_used", json_string(when));
    else
        r = json_object_set_new(ev, "last_used", json_null());
    if (r == 0) {
        char res[FERRY_POLICY_ID_MAX + 32];
        (void)snprintf(res, sizeof(res), "ferry:policy/%s", p->id);
        r = audit_emit(a, "X-005", -1, "ferry", "", res, ev, "unused-policy", s->usage_path);
    } else {
        r = -ENOMEM;
    }
    json_decref(ev);
    return r;
}

static int usage_rules(ferry_audit *a, shadow_state *s)
{
    int64_t since = audit_now(a) - (int64_t)a->opts.unused_days * DAY;
    size_t n = ferry_policy_set_count(s->set);
    int r = 0;

    if (s->log_records == 0 || s->log_first > since) {
        /* The log does not reach back over the whole window: a grant not seen in it may still
         * have been used before it starts. Say so instead of guessing. */
        char from[32] = "";
        json_t *ev;
        if (s->log_records)
            (void)format_time(s->log_first, from);
        ev = json_pack("{s:b, s:s, s:s?, s:i}", "evaluated", 0, "reason",
                       "the audit log does not cover --unused-days", "log_from",
                       from[0] ? from : NULL, "unused_days", (int)a->opts.unused_days);
        if (!ev)
            return -ENOMEM;
        r = audit_emit(a, "X-005", FERRY_AUDIT_INFO, "ferry", "", "ferry:auditlog", ev,
                       "not-evaluated", s->usage_path);
        json_decref(ev);
        return r;
    }
    for (size_t i = 0; i < n && r == 0; i++) {
        ferry_policy_info p;
        const json_t *last;
        r = ferry_policy_set_get(s->set, i, &p);
        if (r < 0)
            break;
        last = json_object_get(s->last_used, p.id);
        if (json_is_integer(last) && json_integer_value(last) >= since)
            continue;
        r = unused_policy(a, s, &p, last);
    }
    return r;
}

struct decide_ctx {
    ferry_audit *a;
    shadow_state *s;
};

/* The end of the run: the identities of a segment decided. */
static int decide_segment(void *userdata, const char *data, size_t len)
{
    struct decide_ctx *d = userdata;
    audit_rec_reader rd = {data, len};
    int r = 0;

    while (rd.left && r == 0) {
        const char *key;
        int64_t packed;
        r = audit_rec_get_str(&rd, &key);
        if (r == 0)
            r = audit_rec_get(&rd, &packed, sizeof(packed));
        if (r == 0)
            r = key ? shadow_identity(d->a, d->s, key, (json_int_t)packed) : -EIO;
    }
    return r;
}

int audit_shadow_finish(ferry_audit *a, char *errbuf, size_t errlen)
{
    shadow_state *s = a->shadow;
    const char *key;
    json_t *v;
    int r = 0;

    if (!s || s->finished)
        return 0;
    /* scope by scope those put aside, then those in memory */
    json_object_foreach(s->scopes, key, v)
    {
        struct decide_ctx d = {a, s};
        if ((r = audit_spill_take(&s->spill, key, decide_segment, &d)) < 0)
            return audit_spill_error(&s->spill, r, errbuf, errlen);
    }
    json_object_foreach(s->ids, key, v)
    {
        r = shadow_identity(a, s, key, json_integer_value(v));
        if (r < 0)
            return r;
    }
    if (s->usage)
        r = usage_rules(a, s);
    if (r == 0)
        s->finished = true;
    return r;
}

/* ---- --usage: ferry's own audit log ------------------------------------------------------- */

struct usage_ctx {
    ferry_audit *a;
    shadow_state *s;
    int64_t first, last;
    uint64_t records;
    bool bad_time;
    char problem[FERRY_AUDITLOG_REASON_LEN + 64]; /* the first problem, "line N (seq S): ..." */
};

static int note_policies(struct usage_ctx *u, const json_t *list, int64_t t)
{
    size_t i;
    json_t *v;

    json_array_foreach(list, i, v)
    {
        const char *id = json_string_value(v);
        json_t *cur = id ? json_object_get(u->s->last_used, id) : NULL;
        /* Only ids of the policies given: the index stays as small as the set. */
        if (!cur || (json_is_integer(cur) && json_integer_value(cur) >= t))
            continue;
        if (json_object_set_new(u->s->last_used, id, json_integer(t)) < 0)
            return -ENOMEM;
    }
    return 0;
}

static int usage_record(void *userdata, const json_t *rec)
{
    struct usage_ctx *u = userdata;
    const char *type = json_string_value(json_object_get(rec, "type"));
    const char *dec = json_string_value(json_object_get(rec, "decision"));
    const json_t *details = json_object_get(rec, "details");
    int64_t t;
    int r;

    /* The verifier checked the time's shape; audit_parse_time reads it. */
    if (audit_parse_time(json_string_value(json_object_get(rec, "time")), &t) < 0) {
        u->bad_time = true;
        return -FERRY_EMALFORMED;
    }
    if (u->records++ == 0)
        u->first = t;
    u->last = t;
    if (!type || !dec || strcmp(type, "token.exchange") != 0 || strcmp(dec, "allow") != 0)
        return 0;
    r = note_policies(u, json_object_get(details, "policies"), t);
    if (r == 0)
        r = note_policies(u, json_object_get(details, "actor_policies"), t);
    return r;
}

static void usage_problem(void *userdata, const ferry_auditlog_problem *p)
{
    struct usage_ctx *u = userdata;
    if (u->problem[0] || p->warning)
        return;
    (void)snprintf(u->problem, sizeof(u->problem), "line %" PRIu64 " (seq %" PRIu64 "): %s",
                   p->line, p->seq, p->reason);
}

FERRY_EXPORT int ferry_audit_add_usage(ferry_audit *a, const char *path,
                                       const struct ferry_jwks *keys, char *errbuf, size_t errlen)
{
    shadow_state *s = a ? a->shadow : NULL;
    struct usage_ctx u = {.a = a, .s = s};
    ferry_auditlog_verify_options vo = {
        .live = true, /* ferryd may still be writing it: the unsigned tail is read too */
        .on_problem = usage_problem,
        .userdata = &u,
        .max_problems = 1,
        .on_record = usage_record,
        .skip_unknown_kid = keys == NULL,
    };
    ferry_auditlog_report rep;
    size_t n;
    int r;

    if (!s || !path || s->usage_path)
        return ferry_errbuf_set(errbuf, errlen, -EINVAL,
                                "--usage needs --policies, and is given once");
    s->usage_path = strdup(path);
    s->last_used = json_object();
    if (!s->usage_path || !s->last_used)
        return -ENOMEM;
    n = ferry_policy_set_count(s->set);
    for (size_t i = 0; i < n; i++) {
        ferry_policy_info p;
        if (ferry_policy_set_get(s->set, i, &p) < 0 ||
            json_object_set_new(s->last_used, p.id, json_null()) < 0)
            return -ENOMEM;
    }
    r = ferry_auditlog_verify(path, keys, &vo, &rep);
    if (r == -ENOMEM || r == -FERRY_ECRYPTO)
        return r;
    if (u.bad_time)
        return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                "%s: a record's time cannot be read", path);
    if (r == -FERRY_EREFUSED)
        return ferry_errbuf_set(errbuf, errlen, r, "%s: not a valid ferry audit log: %s", path,
                                u.problem[0] ? u.problem : rep.first_bad_reason);
    if (r < 0)
        return ferry_errbuf_set(errbuf, errlen, r, "%s: %s", path, ferry_strerror(r));
    s->log_first = u.first;
    s->log_last = u.last;
    s->log_records = u.records;
    s->usage = true;
    return 0;
}
