/* audit/k8s.c - Kubernetes loaders (kubectl -o json, multi-document YAML manifests through
 * libyaml) and the Kubernetes rules of the catalogue, with the cross-cloud chain X-001.
 *
 * Everything of one run is one cluster (--cluster names it). A file's objects are read, the
 * rules that need only one object (K8S-OP-002 on a role, K8S-SH-004 on a token secret) run at
 * once, and small indexes stay for the rules that join objects of several files: roles' rule
 * flags, bindings' subjects, ServiceAccounts, the SAs pods run as. Those rules are decided in
 * k8s_finish, which core.c calls after the other clouds' finish, so that X-001 sees their
 * findings. docs/internals/audit.md, section "Kubernetes".
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <yaml.h>

#include "audit-internal.h"
#include "basic/errbuf.h"
#include "basic/macro.h"
#include "ferry/error.h"

#define CLOUD "k8s"
#define DAY 86400

/* YAML limits: nodes per file (aliases are refused, so this bounds the tree by the text), the
 * longest scalar (an etcd object is at most 1.5 MiB), policy rules kept per role. */
#define K8S_YAML_MAX_NODES ((size_t)16 * 1024 * 1024)
#define K8S_YAML_MAX_SCALAR ((size_t)2 * 1024 * 1024)
#define K8S_MAX_HIT_RULES 16
#define K8S_MAX_NAME 512

static const audit_rule k8s_rules[] = {
    {"K8S-OP-001", "cluster-admin bound to SA/user", FERRY_AUDIT_CRITICAL,
     "A ClusterRoleBinding gives the cluster-admin ClusterRole to a user, group or "
     "ServiceAccount other than the system:masters group of the bootstrap binding.",
     "Bind a ClusterRole with only the verbs and resources the subject uses, in the namespaces "
     "it works in (RoleBinding); keep cluster-admin for break-glass access."},
    {"K8S-OP-002", "Wildcard RBAC", FERRY_AUDIT_HIGH,
     "A Role or ClusterRole has \"*\" in verbs together with \"*\" in resources or apiGroups: it "
     "grants every present and future verb on whole API groups.",
     "List the exact verbs, apiGroups and resources the role needs."},
    {"K8S-OP-003", "Escalation verbs", FERRY_AUDIT_CRITICAL,
     "A binding grants bind or escalate on roles, clusterroles, rolebindings or "
     "clusterrolebindings, or impersonate on users, groups or serviceaccounts: the subject can "
     "give itself any permission or act as anyone.",
     "Remove bind/escalate/impersonate from the role, or restrict them with resourceNames to the "
     "exact roles and identities an operator manages."},
    {"K8S-OP-004", "Token minting / secret read", FERRY_AUDIT_HIGH,
     "A binding grants create on serviceaccounts/token, or get/list/watch on secrets without "
     "resourceNames; critical when it reaches kube-system (a ClusterRoleBinding, or a binding "
     "in kube-system), high in one other namespace.",
     "Grant secrets access by resourceNames to the secrets the workload reads, never "
     "cluster-wide; drop serviceaccounts/token create unless the subject is a token broker."},
    {"K8S-OP-005", "Workload creation in privileged namespaces", FERRY_AUDIT_HIGH,
     "A binding lets its subjects create pods, exec into pods, add ephemeral containers or "
     "create/patch controllers (Deployments, DaemonSets, Jobs, ...) in kube-system (directly "
     "or cluster-wide): a pod there can run as any kube-system ServiceAccount.",
     "Bind workload-creation rights per application namespace (RoleBinding), never in "
     "kube-system or through a ClusterRoleBinding."},
    {"K8S-OP-006", "nodes/proxy, CSR approve, webhook config write", FERRY_AUDIT_HIGH,
     "A ClusterRoleBinding grants nodes/proxy (kubelet API: exec in any pod), approval of "
     "CertificateSigningRequests, or write access to mutating/validating webhook "
     "configurations.",
     "Remove these rights from the role; only the control plane and a reviewed CSR approver "
     "need them."},
    {"K8S-OP-007", "Broad group bound", FERRY_AUDIT_CRITICAL,
     "A binding names system:anonymous, system:unauthenticated or system:authenticated beyond "
     "the bootstrap defaults (system:basic-user, system:discovery, "
     "system:public-info-viewer): everyone (or anyone with any credential) gets the role.",
     "Delete the binding or replace the broad group with the exact users, groups or "
     "ServiceAccounts that need the role."},
    {"K8S-OP-008", "EKS aws-auth writable", FERRY_AUDIT_CRITICAL,
     "On EKS, a binding grants update or patch on ConfigMaps in kube-system (directly or "
     "cluster-wide), which covers aws-auth: the subject can map any IAM role to "
     "system:masters.",
     "Restrict configmap writes in kube-system to the platform pipeline, or migrate to EKS "
     "access entries and remove aws-auth."},
    {"K8S-SH-001", "Unused ServiceAccount", FERRY_AUDIT_LOW,
     "A ServiceAccount (other than default and kube-system controllers) that no Pod or pod "
     "template runs as and that made no request within --unused-days in an audit log of the "
     "run, older than --grace-days; medium when it has bindings. Needs Pods or workloads in "
     "the inputs: without them one info note per cluster says it was not evaluated.",
     "Supply pods and workloads (kubectl get pods,deployments,statefulsets,daemonsets,jobs,"
     "cronjobs -A -o json) to evaluate; then delete the unused ServiceAccount and its bindings, "
     "or document the workload that uses it."},
    {"K8S-SH-002", "Binding to missing subject", FERRY_AUDIT_MEDIUM,
     "A (Cluster)RoleBinding names a ServiceAccount that does not exist: whoever can create it "
     "in that namespace inherits the binding. Evaluated when ServiceAccounts (or Namespace "
     "manifests) are among the inputs.",
     "Delete the binding's stale subject (or the binding), or create the ServiceAccount "
     "deliberately."},
    {"K8S-SH-003", "Dangling roleRef", FERRY_AUDIT_LOW,
     "A binding references a Role or ClusterRole that does not exist: creating a role of that "
     "name later grants it silently. Evaluated when roles of that kind are among the inputs.",
     "Delete the binding, or create the role it should reference."},
    {"K8S-SH-004", "Legacy long-lived SA token", FERRY_AUDIT_MEDIUM,
     "A Secret of type kubernetes.io/service-account-token holds a token that never expires; "
     "high when its kubernetes.io/legacy-token-last-used label is missing or older than "
     "--unused-days.",
     "Delete the Secret; let pods use projected, expiring tokens (or TokenRequest)."},
    {"K8S-SH-005", "default SA has RBAC bindings / automount on", FERRY_AUDIT_MEDIUM,
     "A binding names a namespace's default ServiceAccount (every pod without its own SA gets "
     "those rights), or a pod runs as default with the token automounted.",
     "Give each workload its own ServiceAccount; set automountServiceAccountToken: false on "
     "default ServiceAccounts and on pods that do not call the API."},
    {"K8S-TR-001", "Cloud identity bound to K8s SA", FERRY_AUDIT_LOW,
     "A ServiceAccount is annotated for IRSA (eks.amazonaws.com/role-arn), GKE Workload "
     "Identity (iam.gke.io/gcp-service-account) or Azure Workload Identity "
     "(azure.workload.identity/client-id): its pods get that cloud principal's rights. "
     "Inherits the highest severity of the principal's findings in the run.",
     "Check that the cloud principal holds only what the workload needs and that the cloud "
     "side trusts exactly this namespace and ServiceAccount."},
    {"X-001", "Cross-cloud privilege chain", FERRY_AUDIT_CRITICAL,
     "A Kubernetes ServiceAccount is federated to an AWS role, GCP service account or Azure "
     "identity that has an admin-level finding in this run (AWS-OP-001/002, GCP-OP-001/002, "
     "AZ-OP-001/003/004): whoever can create pods or tokens for that ServiceAccount is cloud "
     "admin.",
     "Give the workload a cloud principal with only what it uses, and restrict who can create "
     "pods, tokens or impersonate in that namespace."},
};

/* ---- the string table ----------------------------------------------------------------------
 *
 * Every name the cross-file records keep (namespaces, names, role references, annotation
 * values, input paths) is stored once in one arena and named by its offset there, a uint32_t
 * id (0 = none). An open-addressing table over the arena finds a string's id. The arena moves
 * when it grows: a pointer from audit_k8s_str() is good until the next audit_k8s_intern(). */

struct audit_strtab {
    char *arena; /* NUL-terminated strings; byte 0 is reserved so that no string has id 0 */
    size_t len, cap, max;
    uint32_t *slots; /* ids, 0 = empty; n_slots is a power of two */
    size_t n_slots, count;
};

static uint64_t str_hash(const char *str, size_t n)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325); /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)str[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

int audit_k8s_strtab_new(size_t max_bytes, audit_strtab **ret)
{
    audit_strtab *t;
    if (!ret || max_bytes < 2 || max_bytes > UINT32_MAX)
        return -EINVAL;
    t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->max = max_bytes;
    *ret = t;
    return 0;
}

void audit_k8s_strtab_free(audit_strtab *t)
{
    if (!t)
        return;
    free(t->arena);
    free(t->slots);
    free(t);
}

/* The slot that holds str (n bytes) or the empty slot where it would go. */
static size_t strtab_slot(const audit_strtab *t, const char *str, size_t n, uint64_t h)
{
    size_t mask = t->n_slots - 1, i = (size_t)h & mask;
    for (;; i = (i + 1) & mask) {
        uint32_t id = t->slots[i];
        if (!id || (strncmp(t->arena + id, str, n) == 0 && t->arena[id + n] == '\0'))
            return i;
    }
}

static int strtab_grow_slots(audit_strtab *t)
{
    size_t n = t->n_slots ? 2 * t->n_slots : 1024;
    uint32_t *slots = calloc(n, sizeof(*slots)), *old = t->slots;
    size_t n_old = t->n_slots;
    if (!slots)
        return -ENOMEM;
    t->slots = slots;
    t->n_slots = n;
    for (size_t i = 0; i < n_old; i++) {
        if (!old[i])
            continue;
        const char *str = t->arena + old[i];
        size_t len = strlen(str);
        slots[strtab_slot(t, str, len, str_hash(str, len))] = old[i];
    }
    free(old);
    return 0;
}

int audit_k8s_intern(audit_strtab *t, const char *str, uint32_t *ret_id)
{
    size_t n = strlen(str), i;
    uint64_t h = str_hash(str, n);
    int r;

    if ((t->count + 1) * 4 > t->n_slots * 3 && (r = strtab_grow_slots(t)) < 0)
        return r;
    i = strtab_slot(t, str, n, h);
    if (t->slots[i]) {
        *ret_id = t->slots[i];
        return 0;
    }
    size_t len = t->len ? t->len : 1;
    if (n >= t->max - len)
        return -FERRY_ETOOBIG;
    if (len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < len + n + 1)
            cap *= 2;
        if (cap > t->max)
            cap = t->max;
        char *arena = realloc(t->arena, cap);
        if (!arena)
            return -ENOMEM;
        arena[0] = '\0';
        t->arena = arena;
        t->cap = cap;
    }
    memcpy(t->arena + len, str, n + 1);
    t->slots[i] = (uint32_t)len;
    t->len = len + n + 1;
    t->count++;
    *ret_id = (uint32_t)len;
    return 0;
}

uint32_t audit_k8s_strtab_find(const audit_strtab *t, const char *str)
{
    size_t n = strlen(str);
    if (!t || !t->count)
        return 0;
    return t->slots[strtab_slot(t, str, n, str_hash(str, n))];
}

const char *audit_k8s_str(const audit_strtab *t, uint32_t id)
{
    return t && id && id < t->len ? t->arena + id : NULL;
}

size_t audit_k8s_strtab_bytes(const audit_strtab *t)
{
    return t ? t->cap + t->n_slots * sizeof(*t->slots) : 0;
}

/* ---- id maps: interned id -> uint32_t (a set when the value is unused) --------------------- */

typedef struct k8s_map {
    struct k8s_map_slot {
        uint32_t key, val; /* key 0 = empty */
    } * slots;
    size_t n_slots, count; /* n_slots is a power of two */
} k8s_map;

static size_t map_slot(const k8s_map *m, uint32_t key)
{
    size_t mask = m->n_slots - 1;
    size_t i = (size_t)(((uint64_t)key * UINT64_C(0x9e3779b97f4a7c15)) >> 32) & mask;
    while (m->slots[i].key && m->slots[i].key != key)
        i = (i + 1) & mask;
    return i;
}

/* The value of key, or NULL. */
static uint32_t *map_get(const k8s_map *m, uint32_t key)
{
    if (!key || !m->count)
        return NULL;
    size_t i = map_slot(m, key);
    return m->slots[i].key ? &m->slots[i].val : NULL;
}

/* Set key (nonzero) to val. Returns 0 or -ENOMEM. */
static int map_put(k8s_map *m, uint32_t key, uint32_t val)
{
    if ((m->count + 1) * 4 > m->n_slots * 3) {
        size_t n = m->n_slots ? 2 * m->n_slots : 256, n_old = m->n_slots;
        struct k8s_map_slot *old = m->slots, *slots = calloc(n, sizeof(*slots));
        if (!slots)
            return -ENOMEM;
        m->slots = slots;
        m->n_slots = n;
        for (size_t i = 0; i < n_old; i++)
            if (old[i].key)
                slots[map_slot(m, old[i].key)] = old[i];
        free(old);
    }
    size_t i = map_slot(m, key);
    if (!m->slots[i].key)
        m->count++;
    m->slots[i].key = key;
    m->slots[i].val = val;
    return 0;
}

static size_t map_bytes(const k8s_map *m)
{
    return m->n_slots * sizeof(*m->slots);
}

/* Room for one more element of size bytes in the vector *v of *alloc elements holding n. */
static int vec_reserve(void *v, size_t *alloc, size_t n, size_t size)
{
    void **p = v;
    if (n < *alloc)
        return 0;
    size_t want = *alloc ? 2 * *alloc : 64;
    if (want > UINT32_MAX || want > SIZE_MAX / size)
        return -FERRY_ETOOBIG;
    void *q = realloc(*p, want * size);
    if (!q)
        return -ENOMEM;
    *p = q;
    *alloc = want;
    return 0;
}

/* ---- per-run state ------------------------------------------------------------------------ */

enum {
    F_WILDCARD = 1u << 0,    /* OP-002 */
    F_ESCALATE = 1u << 1,    /* OP-003: bind/escalate */
    F_IMPERSONATE = 1u << 2, /* OP-003 */
    F_TOKEN = 1u << 3,       /* OP-004 */
    F_SECRETS = 1u << 4,     /* OP-004 */
    F_WORKLOAD = 1u << 5,    /* OP-005 */
    F_NODES_PROXY = 1u << 6, /* OP-006 */
    F_CSR = 1u << 7,         /* OP-006 */
    F_WEBHOOK = 1u << 8,     /* OP-006 */
    F_CM_WRITE = 1u << 9,    /* OP-008 */
    F_ALL = (1u << 10) - 1,
};

/* Strings below are ids in k8s_state.strs. */

enum { SUBJ_OTHER, SUBJ_USER, SUBJ_GROUP, SUBJ_SA }; /* a subject's kind */

typedef struct k8s_subject {
    uint32_t name, ns; /* ns: a ServiceAccount's (its binding's when not written), else 0 */
    uint8_t kind;      /* SUBJ_* */
} k8s_subject;

typedef struct k8s_binding {
    uint32_t ns;   /* 0 for a ClusterRoleBinding */
    uint32_t name; /* metadata.name */
    uint32_t rn;   /* roleRef.name */
    uint32_t src;  /* the input */
    uint32_t subj; /* its first subject in k8s_state.subjects */
    uint32_t n_subj : 29, cluster : 1, rk_cluster : 1 /* roleRef is a ClusterRole */, boot : 1;
} k8s_binding;

enum { AM_UNSET, AM_TRUE, AM_FALSE }; /* automountServiceAccountToken */

typedef struct k8s_sa {
    int64_t created;
    uint32_t key; /* "ns/name" */
    uint32_t src;
    uint32_t links[3]; /* the sa_links annotations, in their order; 0 = absent */
    uint8_t has_created : 1, automount : 2, bound : 1;
} k8s_sa;

typedef struct k8s_role {
    uint32_t key; /* "ClusterRole/name" | "Role/ns/name" */
    unsigned f;   /* F_* of its rules (and of the roles it aggregates, after aggregate_roles) */
    char *hits;   /* [[f, PolicyRule], ...] (at most K8S_MAX_HIT_RULES), compact JSON or NULL */
    char *labels; /* a ClusterRole's labels as {key: text}, compact JSON or NULL */
    char *agg;    /* a ClusterRole's aggregationRule.clusterRoleSelectors, compact JSON or NULL */
} k8s_role;

typedef struct k8s_pod { /* a Pod or pod template that runs as "default" */
    uint32_t ns, name, plural, src;
    uint8_t am; /* AM_* of the pod spec */
} k8s_pod;

typedef struct k8s_state {
    char *cluster;
    audit_strtab *strs;
    k8s_sa *sas; /* in the order first seen */
    size_t n_sas, alloc_sas;
    k8s_map sa_index; /* "ns/name" -> index in sas */
    k8s_role *roles;  /* in the order first seen */
    size_t n_roles, alloc_roles;
    k8s_map role_index; /* key -> index in roles */
    k8s_binding *bindings;
    size_t n_bindings, alloc_bindings;
    k8s_subject *subjects; /* the bindings' subjects, each binding's in a run */
    size_t n_subjects, alloc_subjects;
    k8s_pod *default_pods;
    size_t n_default_pods, alloc_default_pods;
    k8s_map pod_sas;   /* set of "ns/name" that a Pod or pod template runs as */
    k8s_map token_sas; /* set of "ns/name" with a legacy token Secret */
    k8s_map sa_seen;   /* "ns/name" -> index in seen_at */
    int64_t *seen_at;  /* last request in an audit.k8s.io log (epoch) */
    size_t n_seen, alloc_seen;
    bool loaded; /* some Kubernetes input was read */
    bool seen_pods, seen_sa_inventory, seen_roles, seen_clusterroles, eks;
    char *first_src; /* for the cluster-level notes */
} k8s_state;

/* Free the records (not the cluster name and the flags). */
static void records_free(k8s_state *s)
{
    audit_k8s_strtab_free(s->strs);
    free(s->sas);
    free(s->sa_index.slots);
    for (size_t i = 0; i < s->n_roles; i++) {
        free(s->roles[i].hits);
        free(s->roles[i].labels);
        free(s->roles[i].agg);
    }
    free(s->roles);
    free(s->role_index.slots);
    free(s->bindings);
    free(s->subjects);
    free(s->default_pods);
    free(s->pod_sas.slots);
    free(s->token_sas.slots);
    free(s->sa_seen.slots);
    free(s->seen_at);
    s->strs = NULL;
    s->sas = NULL;
    s->n_sas = s->alloc_sas = 0;
    s->sa_index = (k8s_map){0};
    s->roles = NULL;
    s->n_roles = s->alloc_roles = 0;
    s->role_index = (k8s_map){0};
    s->bindings = NULL;
    s->n_bindings = s->alloc_bindings = 0;
    s->subjects = NULL;
    s->n_subjects = s->alloc_subjects = 0;
    s->default_pods = NULL;
    s->n_default_pods = s->alloc_default_pods = 0;
    s->pod_sas = s->token_sas = s->sa_seen = (k8s_map){0};
    s->seen_at = NULL;
    s->n_seen = s->alloc_seen = 0;
}

static void k8s_release(ferry_audit *a)
{
    k8s_state *s = a->k8s;
    if (!s)
        return;
    free(s->cluster);
    free(s->first_src);
    records_free(s);
    free(s);
    a->k8s = NULL;
}

static k8s_state *state(ferry_audit *a)
{
    k8s_state *s = a->k8s;
    if (s && s->strs)
        return s;
    if (!s && !(s = a->k8s = calloc(1, sizeof(*s))))
        return NULL;
    /* New, or its records freed by k8s_finish. */
    return audit_k8s_strtab_new(UINT32_MAX, &s->strs) < 0 ? NULL : s;
}

static const char *str(const k8s_state *s, uint32_t id)
{
    return audit_k8s_str(s->strs, id);
}

/* The bytes the cross-file records hold (tests, measurements). */
size_t audit_k8s_state_bytes(const ferry_audit *a, size_t *ret_bindings, size_t *ret_sas)
{
    const k8s_state *s = a->k8s;
    size_t n;
    if (ret_bindings)
        *ret_bindings = s ? s->n_bindings : 0;
    if (ret_sas)
        *ret_sas = s ? s->n_sas : 0;
    if (!s)
        return 0;
    n = sizeof(*s) + audit_k8s_strtab_bytes(s->strs) + s->alloc_sas * sizeof(*s->sas) +
        map_bytes(&s->sa_index) + s->alloc_roles * sizeof(*s->roles) + map_bytes(&s->role_index) +
        s->alloc_bindings * sizeof(*s->bindings) + s->alloc_subjects * sizeof(*s->subjects) +
        s->alloc_default_pods * sizeof(*s->default_pods) + map_bytes(&s->pod_sas) +
        map_bytes(&s->token_sas) + map_bytes(&s->sa_seen) + s->alloc_seen * sizeof(*s->seen_at);
    for (size_t i = 0; i < s->n_roles; i++) {
        const k8s_role *ro = &s->roles[i];
        n += (ro->hits ? strlen(ro->hits) + 1 : 0) + (ro->labels ? strlen(ro->labels) + 1 : 0) +
             (ro->agg ? strlen(ro->agg) + 1 : 0);
    }
    return n;
}

static const char *cluster_name(const k8s_state *s)
{
    return s->cluster ? s->cluster : "cluster";
}

FERRY_EXPORT int ferry_audit_k8s_set_cluster(ferry_audit *a, const char *name)
{
    k8s_state *s;
    size_t n;
    char *copy;

    if (!a || !name)
        return -EINVAL;
    n = strlen(name);
    if (n == 0 || n > 253)
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x21 || name[i] == 0x7f)
            return -EINVAL;
    s = state(a);
    if (!s)
        return -ENOMEM;
    copy = strdup(name);
    if (!copy)
        return -ENOMEM;
    free(s->cluster);
    s->cluster = copy;
    return 0;
}

/* ---- small JSON helpers ------------------------------------------------------------------- */

static const char *str_member(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* A string value as text: label values written as plain true or 1 in YAML compare as text. */
static const char *scalar_text(const json_t *v, char *tmp, size_t tmplen)
{
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_true(v))
        return "true";
    if (json_is_false(v))
        return "false";
    if (json_is_integer(v)) {
        (void)snprintf(tmp, tmplen, "%lld", (long long)json_integer_value(v));
        return tmp;
    }
    return NULL;
}

/* ---- YAML -> JSON ------------------------------------------------------------------------ */

typedef struct yaml_conv {
    yaml_parser_t p;
    size_t nodes;
    size_t *item_marks; /* line, column (1-based) of each element of a top-level "items" */
    size_t n_items, alloc_items;
    char *errbuf;
    size_t errlen;
} yaml_conv;

static int yerr(yaml_conv *y, int code, const yaml_mark_t *m, const char *fmt, ...) _printf_(4, 5);
static int yerr(yaml_conv *y, int code, const yaml_mark_t *m, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return ferry_errbuf_set(y->errbuf, y->errlen, code, "%zu:%zu: %s", m->line + 1, m->column + 1,
                            msg);
}

static int next_event(yaml_conv *y, yaml_event_t *ev)
{
    if (yaml_parser_parse(&y->p, ev))
        return 0;
    if (y->p.error == YAML_MEMORY_ERROR)
        return -ENOMEM;
    /* libyaml says where the problem was seen (and sometimes the construct it was in). */
    const yaml_mark_t *m = &y->p.problem_mark;
    if (y->p.context)
        return ferry_errbuf_set(y->errbuf, y->errlen, -FERRY_EMALFORMED,
                                "%zu:%zu: malformed YAML: %s %s (from line %zu)", m->line + 1,
                                m->column + 1, y->p.context, y->p.problem ? y->p.problem : "error",
                                y->p.context_mark.line + 1);
    return ferry_errbuf_set(y->errbuf, y->errlen, -FERRY_EMALFORMED, "%zu:%zu: malformed YAML: %s",
                            m->line + 1, m->column + 1, y->p.problem ? y->p.problem : "error");
}

static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t k;
        unsigned cp;
        if (c < 0x80) {
            if (c == 0)
                return false;
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            k = 1, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            k = 2, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            k = 3, cp = c & 0x07;
        else
            return false;
        if (i + k >= n)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (s[i + j] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if ((k == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (k == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return false;
        i += k + 1;
    }
    return true;
}

#define YAML_TAG_PREFIX "tag:yaml.org,2002:"

/* The JSON value of a plain scalar under the YAML 1.2 core schema: null, true/false, integers
 * and floats; every other plain scalar, and every quoted or block scalar, is a string. (YAML
 * 1.1's yes/no/on/off stay strings.) */
static json_t *plain_scalar(const char *v, size_t n)
{
    if (n == 0 || (n == 1 && v[0] == '~') ||
        (n == 4 &&
         (memcmp(v, "null", 4) == 0 || memcmp(v, "Null", 4) == 0 || memcmp(v, "NULL", 4) == 0)))
        return json_null();
    if (n == 4 &&
        (memcmp(v, "true", 4) == 0 || memcmp(v, "True", 4) == 0 || memcmp(v, "TRUE", 4) == 0))
        return json_true();
    if (n == 5 &&
        (memcmp(v, "false", 5) == 0 || memcmp(v, "False", 5) == 0 || memcmp(v, "FALSE", 5) == 0))
        return json_false();
    if (n <= 40) {
        char tmp[48], *end = NULL;
        memcpy(tmp, v, n);
        tmp[n] = '\0';
        size_t i = (tmp[0] == '-' || tmp[0] == '+') ? 1 : 0;
        if (i < n && strspn(tmp + i, "0123456789") == n - i) {
            errno = 0;
            long long x = strtoll(tmp, &end, 10);
            if (errno == 0 && end && *end == '\0')
                return json_integer((json_int_t)x);
        } else if (n > 2 && tmp[0] == '0' && (tmp[1] == 'x' || tmp[1] == 'o') &&
                   strspn(tmp + 2, tmp[1] == 'x' ? "0123456789abcdefABCDEF" : "01234567") ==
                       n - 2) {
            errno = 0;
            unsigned long long x = strtoull(tmp + 2, &end, tmp[1] == 'x' ? 16 : 8);
            if (errno == 0 && end && *end == '\0' && x <= (unsigned long long)INT64_MAX)
                return json_integer((json_int_t)x);
        } else if (i < n && strspn(tmp + i, "0123456789.eE+-") == n - i &&
                   strchr("0123456789.", tmp[i])) {
            /* [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )? */
            size_t j = i, d = 0;
            while (j < n && tmp[j] >= '0' && tmp[j] <= '9')
                j++, d++;
            if (j < n && tmp[j] == '.') {
                j++;
                while (j < n && tmp[j] >= '0' && tmp[j] <= '9')
                    j++, d++;
            }
            if (d && j < n && (tmp[j] == 'e' || tmp[j] == 'E')) {
                j++;
                if (j < n && (tmp[j] == '+' || tmp[j] == '-'))
                    j++;
                size_t e = 0;
                while (j < n && tmp[j] >= '0' && tmp[j] <= '9')
                    j++, e++;
                if (!e)
                    d = 0;
            }
            if (d && j == n) {
                double x = strtod(tmp, &end);
                if (end && *end == '\0')
                    return json_real(x);
            }
        }
    }
    return json_stringn(v, n);
}

static int yaml_node(yaml_conv *y, yaml_event_t *ev, unsigned depth, bool items, json_t **ret);

static int tag_ok(yaml_conv *y, const yaml_event_t *ev, const unsigned char *tag, const char *want)
{
    if (!tag || strcmp((const char *)tag, "!") == 0)
        return 0;
    if (want && strcmp((const char *)tag, want) == 0)
        return 0;
    return yerr(y, -FERRY_EUNSUPPORTED, &ev->start_mark,
                "YAML tag '%.64s' is not accepted (plain data only)", (const char *)tag);
}

static int yaml_scalar(yaml_conv *y, yaml_event_t *ev, json_t **ret)
{
    const char *v = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    /* Not named "tag": tests/check-banned.sh takes strcmp() on a "tag" for a MAC comparison. */
    const char *yt = (const char *)ev->data.scalar.tag;
    json_t *j;

    if (n > K8S_YAML_MAX_SCALAR)
        return yerr(y, -FERRY_ETOOBIG, &ev->start_mark,
                    "scalar of %zu bytes is over the %zu-byte limit", n, K8S_YAML_MAX_SCALAR);
    if (!utf8_valid((const unsigned char *)v, n))
        return yerr(y, -FERRY_EMALFORMED, &ev->start_mark,
                    "scalar with a NUL or invalid UTF-8 character");
    if (yt && strcmp(yt, "!") != 0) {
        if (strcmp(yt, YAML_TAG_PREFIX "str") == 0) {
            j = json_stringn(v, n);
        } else if (strcmp(yt, YAML_TAG_PREFIX "int") == 0 ||
                   strcmp(yt, YAML_TAG_PREFIX "bool") == 0 ||
                   strcmp(yt, YAML_TAG_PREFIX "null") == 0 ||
                   strcmp(yt, YAML_TAG_PREFIX "float") == 0) {
            j = plain_scalar(v, n);
            if (j && json_is_string(j)) {
                json_decref(j);
                return yerr(y, -FERRY_EMALFORMED, &ev->start_mark,
                            "scalar does not match its tag '%.64s'", yt);
            }
        } else {
            return tag_ok(y, ev, (const unsigned char *)yt, NULL);
        }
    } else if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !yt) {
        j = plain_scalar(v, n);
    } else {
        j = json_stringn(v, n);
    }
    if (!j)
        return -ENOMEM;
    *ret = j;
    return 0;
}

static int note_item_mark(yaml_conv *y, const yaml_mark_t *m)
{
    if (y->n_items == y->alloc_items) {
        size_t n = y->alloc_items ? y->alloc_items * 2 : 64;
        size_t *p = realloc(y->item_marks, n * 2 * sizeof(*p));
        if (!p)
            return -ENOMEM;
        y->item_marks = p;
        y->alloc_items = n;
    }
    y->item_marks[2 * y->n_items] = m->line + 1;
    y->item_marks[2 * y->n_items + 1] = m->column + 1;
    y->n_items++;
    return 0;
}

/* Convert the node that starts with ev (consumed here) and everything below it. items: this is
 * the value of a top-level "items" (a List): its elements' positions are kept for messages. */
static int yaml_node(yaml_conv *y, yaml_event_t *ev, unsigned depth, bool items, json_t **ret)
{
    json_t *j = NULL;
    yaml_event_t e;
    int r = 0;

    if (++y->nodes > K8S_YAML_MAX_NODES)
        return yerr(y, -FERRY_ETOOBIG, &ev->start_mark, "more than %zu YAML nodes in the file",
                    K8S_YAML_MAX_NODES);
    if (depth > AUDIT_JSON_MAX_DEPTH)
        return yerr(y, -FERRY_ETOOBIG, &ev->start_mark, "nested deeper than %d levels",
                    AUDIT_JSON_MAX_DEPTH);
    switch (ev->type) {
    case YAML_ALIAS_EVENT:
        return yerr(y, -FERRY_EUNSUPPORTED, &ev->start_mark,
                    "YAML aliases (*%.64s) are not accepted", (const char *)ev->data.alias.anchor);
    case YAML_SCALAR_EVENT:
        return yaml_scalar(y, ev, ret);
    case YAML_SEQUENCE_START_EVENT:
        r = tag_ok(y, ev, ev->data.sequence_start.tag, YAML_TAG_PREFIX "seq");
        if (r < 0)
            return r;
        j = json_array();
        if (!j)
            return -ENOMEM;
        for (;;) {
            json_t *child = NULL;
            r = next_event(y, &e);
            if (r < 0)
                break;
            if (e.type == YAML_SEQUENCE_END_EVENT) {
                yaml_event_delete(&e);
                break;
            }
            if (items)
                r = note_item_mark(y, &e.start_mark);
            if (r == 0)
                r = yaml_node(y, &e, depth + 1, false, &child);
            yaml_event_delete(&e);
            if (r < 0)
                break;
            if (json_array_append_new(j, child) < 0) {
                r = -ENOMEM;
                break;
            }
        }
        break;
    case YAML_MAPPING_START_EVENT:
        r = tag_ok(y, ev, ev->data.mapping_start.tag, YAML_TAG_PREFIX "map");
        if (r < 0)
            return r;
        j = json_object();
        if (!j)
            return -ENOMEM;
        for (;;) {
            json_t *child = NULL;
            yaml_event_t v;
            char *key;
            r = next_event(y, &e);
            if (r < 0)
                break;
            if (e.type == YAML_MAPPING_END_EVENT) {
                yaml_event_delete(&e);
                break;
            }
            if (e.type != YAML_SCALAR_EVENT) {
                r = e.type == YAML_ALIAS_EVENT ? yerr(y, -FERRY_EUNSUPPORTED, &e.start_mark,
                                                      "YAML aliases are not accepted")
                                               : yerr(y, -FERRY_EUNSUPPORTED, &e.start_mark,
                                                      "a mapping key must be a scalar");
                yaml_event_delete(&e);
                break;
            }
            if (e.data.scalar.length > 4096 ||
                !utf8_valid(e.data.scalar.value, e.data.scalar.length) ||
                (e.data.scalar.tag && strcmp((const char *)e.data.scalar.tag, "!") != 0 &&
                 strcmp((const char *)e.data.scalar.tag, YAML_TAG_PREFIX "str") != 0)) {
                r = yerr(y, -FERRY_EMALFORMED, &e.start_mark,
                         "a mapping key must be a plain string of at most 4096 bytes");
                yaml_event_delete(&e);
                break;
            }
            key = strndup((const char *)e.data.scalar.value, e.data.scalar.length);
            if (!key) {
                yaml_event_delete(&e);
                r = -ENOMEM;
                break;
            }
            if (json_object_get(j, key)) {
                r = yerr(y, -FERRY_EMALFORMED, &e.start_mark, "duplicate key '%.64s'", key);
                free(key);
                yaml_event_delete(&e);
                break;
            }
            yaml_event_delete(&e);
            r = next_event(y, &v);
            if (r == 0) {
                r = yaml_node(y, &v, depth + 1,
                              depth == 0 && strcmp(key, "items") == 0 &&
                                  v.type == YAML_SEQUENCE_START_EVENT,
                              &child);
                yaml_event_delete(&v);
            }
            if (r == 0 && json_object_set_new(j, key, child) < 0)
                r = -ENOMEM;
            free(key);
            if (r < 0)
                break;
        }
        break;
    default:
        return yerr(y, -FERRY_EMALFORMED, &ev->start_mark, "unexpected YAML event");
    }
    if (r < 0) {
        json_decref(j);
        return r;
    }
    *ret = j;
    return 0;
}

/* Parse buf as a YAML stream and call fn with each document converted to JSON (borrowed by
 * fn), its 1-based index and start position, and the positions of its "items" elements. */
typedef int (*yaml_doc_fn)(void *ctx, json_t *doc, size_t index, const yaml_mark_t *start,
                           const size_t *item_marks, size_t n_items);

static int yaml_each_document(const char *buf, size_t len, yaml_doc_fn fn, void *ctx, char *errbuf,
                              size_t errlen)
{
    yaml_conv y = {.errbuf = errbuf, .errlen = errlen};
    yaml_event_t e;
    size_t index = 0;
    int r;

    if (!yaml_parser_initialize(&y.p))
        return -ENOMEM;
    yaml_parser_set_input_string(&y.p, (const unsigned char *)buf, len);
    for (;;) {
        r = next_event(&y, &e);
        if (r < 0)
            break;
        if (e.type == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&e);
            break;
        }
        if (e.type != YAML_DOCUMENT_START_EVENT) { /* stream start */
            yaml_event_delete(&e);
            continue;
        }
        yaml_mark_t start;
        json_t *doc = NULL;
        yaml_event_delete(&e);
        r = next_event(&y, &e);
        if (r < 0)
            break;
        start = e.start_mark;
        y.n_items = 0;
        r = yaml_node(&y, &e, 0, false, &doc);
        yaml_event_delete(&e);
        if (r < 0)
            break;
        r = next_event(&y, &e); /* document end */
        if (r < 0) {
            json_decref(doc);
            break;
        }
        yaml_event_delete(&e);
        index++;
        r = json_is_null(doc) ? 0 : fn(ctx, doc, index, &start, y.item_marks, y.n_items);
        json_decref(doc);
        if (r < 0)
            break;
    }
    free(y.item_marks);
    yaml_parser_delete(&y.p);
    return r;
}

/* ---- loading resources ------------------------------------------------------------------- */

typedef struct k8s_ctx {
    ferry_audit *a;
    k8s_state *s;
    const char *path;
    char *errbuf;
    size_t errlen;
    bool yaml;
    size_t line, col; /* YAML: where the current resource starts */
    char jwhere[64];  /* JSON: "/items/3" or "" */
    char label[96];   /* "items[3]: " / "document 2: " or "" */
    uint32_t src;     /* the path interned, 0 until a record needs it */
} k8s_ctx;

/* The input's path as an id, interned once per input. */
static int ctx_src(k8s_ctx *c, uint32_t *ret)
{
    int r = c->src ? 0 : audit_k8s_intern(c->s->strs, c->path, &c->src);
    if (r == 0)
        *ret = c->src;
    return r;
}

/* Add key ("ns/name") to the set m. */
static int set_add(k8s_state *s, k8s_map *m, const char *key)
{
    uint32_t id;
    int r = audit_k8s_intern(s->strs, key, &id);
    return r < 0 ? r : map_put(m, id, 0);
}

/* The index of key in the id map m, or -1. */
static long map_find(const k8s_state *s, const k8s_map *m, const char *key)
{
    const uint32_t *v = map_get(m, audit_k8s_strtab_find(s->strs, key));
    return v ? (long)*v : -1;
}

static int fail(k8s_ctx *c, const json_t *obj, const char *member, const char *fmt, ...)
    _printf_(4, 5);
static int fail(k8s_ctx *c, const json_t *obj, const char *member, const char *fmt, ...)
{
    char msg[256], what[2 * K8S_MAX_NAME / 4];
    const json_t *md = json_object_get(obj, "metadata");
    const char *kind = str_member(obj, "kind"), *name = str_member(md, "name");
    va_list ap;

    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    what[0] = '\0';
    if (kind)
        (void)snprintf(what, sizeof(what), "%.40s%s%.64s: ", kind, name ? " " : "",
                       name ? name : "");
    if (!c->yaml)
        audit_error_where(c->a, "%s%s%s", c->jwhere, member ? "/" : "", member ? member : "");
    if (c->yaml)
        return ferry_errbuf_set(c->errbuf, c->errlen, -FERRY_EMALFORMED, "%zu:%zu: %s%s%s", c->line,
                                c->col, c->label, what, msg);
    return ferry_errbuf_set(c->errbuf, c->errlen, -FERRY_EMALFORMED, "%s%s%s", c->label, what, msg);
}

/* Strings of a member that is an array of strings or a single string; NULL array when
 * missing. Returns 0 or a negative code (an element that is not a string). */
static int string_list(k8s_ctx *c, const json_t *obj, const json_t *owner, const char *member,
                       const char *sub, json_t **ret)
{
    json_t *v = json_object_get(obj, member), *x;
    size_t i;

    *ret = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (json_is_string(v)) {
        *ret = v;
        return 0;
    }
    if (!json_is_array(v))
        return fail(c, owner, sub, "%s: expected a list of strings", member);
    json_array_foreach(v, i, x) if (!json_is_string(x)) return fail(
        c, owner, sub, "%s[%zu]: expected a string", member, i);
    *ret = v;
    return 0;
}

static bool list_has(const json_t *l, const char *s)
{
    size_t i;
    json_t *x;
    if (json_is_string(l))
        return strcmp(json_string_value(l), s) == 0;
    json_array_foreach(l, i, x) if (strcmp(json_string_value(x), s) == 0) return true;
    return false;
}

/* RBAC matching: "*" matches everything; "*\/sub" matches the subresource sub of anything. */
static bool resource_match(const json_t *resources, const char *res)
{
    const char *slash = strchr(res, '/');
    size_t i;
    json_t *x;
    if (json_is_string(resources))
        return strcmp(json_string_value(resources), "*") == 0 ||
               strcmp(json_string_value(resources), res) == 0;
    json_array_foreach(resources, i, x)
    {
        const char *r = json_string_value(x);
        if (strcmp(r, "*") == 0 || strcmp(r, res) == 0)
            return true;
        if (slash && r[0] == '*' && r[1] == '/' && strcmp(r + 1, slash) == 0)
            return true;
    }
    return false;
}

static bool verb_match(const json_t *verbs, const char *verb)
{
    return list_has(verbs, "*") || list_has(verbs, verb);
}

static bool group_match(const json_t *groups, const char *group)
{
    return groups && (list_has(groups, "*") || list_has(groups, group));
}

/* The OP flags one PolicyRule grants. resourceNames narrows a grant to named objects: such
 * rules count for the escalation verbs (bind/escalate/impersonate on a named identity is
 * still an escalation) and for aws-auth, not for secret reads, workloads or webhooks. */
static unsigned rule_flags(const json_t *verbs, const json_t *groups, const json_t *resources,
                           const json_t *names)
{
    static const char *const rbac_res[] = {"roles", "clusterroles", "rolebindings",
                                           "clusterrolebindings"};
    static const char *const imp_res[] = {"users", "groups", "serviceaccounts", "userextras",
                                          "uids"};
    static const struct {
        const char *group, *res;
        bool create_only;
    } workload[] = {
        {"", "pods", true},
        {"", "pods/exec", true},
        {"", "pods/ephemeralcontainers", false},
        {"", "replicationcontrollers", false},
        {"apps", "deployments", false},
        {"apps", "statefulsets", false},
        {"apps", "daemonsets", false},
        {"apps", "replicasets", false},
        {"batch", "jobs", false},
        {"batch", "cronjobs", false},
    };
    bool named = json_is_array(names) ? json_array_size(names) > 0 : json_is_string(names);
    unsigned f = 0;

    if (!verbs || !resources)
        return 0;
    if (list_has(verbs, "*") && (list_has(resources, "*") || list_has(groups, "*")))
        f |= F_WILDCARD;
    for (size_t i = 0; i < ARRAY_SIZE(rbac_res); i++)
        if (group_match(groups, "rbac.authorization.k8s.io") &&
            resource_match(resources, rbac_res[i]) &&
            (verb_match(verbs, "bind") || verb_match(verbs, "escalate")))
            f |= F_ESCALATE;
    for (size_t i = 0; i < ARRAY_SIZE(imp_res); i++)
        if ((group_match(groups, "") || group_match(groups, "authentication.k8s.io")) &&
            resource_match(resources, imp_res[i]) && verb_match(verbs, "impersonate"))
            f |= F_IMPERSONATE;
    if (group_match(groups, "") && resource_match(resources, "serviceaccounts/token") &&
        verb_match(verbs, "create"))
        f |= F_TOKEN;
    if (!named && group_match(groups, "") && resource_match(resources, "secrets") &&
        (verb_match(verbs, "get") || verb_match(verbs, "list") || verb_match(verbs, "watch")))
        f |= F_SECRETS;
    for (size_t i = 0; i < ARRAY_SIZE(workload) && !named; i++)
        if (group_match(groups, workload[i].group) && resource_match(resources, workload[i].res) &&
            (verb_match(verbs, "create") ||
             (!workload[i].create_only &&
              (verb_match(verbs, "update") || verb_match(verbs, "patch")))))
            f |= F_WORKLOAD;
    if (group_match(groups, "") && resource_match(resources, "nodes/proxy") &&
        (verb_match(verbs, "get") || verb_match(verbs, "create")))
        f |= F_NODES_PROXY;
    if (group_match(groups, "certificates.k8s.io") &&
        resource_match(resources, "certificatesigningrequests/approval") &&
        (verb_match(verbs, "update") || verb_match(verbs, "patch")))
        f |= F_CSR;
    if (!named && group_match(groups, "admissionregistration.k8s.io") &&
        (resource_match(resources, "mutatingwebhookconfigurations") ||
         resource_match(resources, "validatingwebhookconfigurations")) &&
        (verb_match(verbs, "create") || verb_match(verbs, "update") || verb_match(verbs, "patch") ||
         verb_match(verbs, "delete")))
        f |= F_WEBHOOK;
    if (group_match(groups, "") && resource_match(resources, "configmaps") &&
        (verb_match(verbs, "update") || verb_match(verbs, "patch")) &&
        (!named || list_has(names, "aws-auth")))
        f |= F_CM_WRITE;
    return f;
}

static bool is_bootstrap_role_name(const char *name)
{
    return strncmp(name, "system:", 7) == 0 || strcmp(name, "cluster-admin") == 0 ||
           strcmp(name, "admin") == 0 || strcmp(name, "edit") == 0 || strcmp(name, "view") == 0;
}

/* Labelled by the API server's bootstrap policy, with a bootstrap name: the label alone would
 * let anyone hide a binding from the rules. */
static bool is_bootstrap(const json_t *md, const char *name)
{
    const json_t *labels = json_object_get(md, "labels");
    const char *v = str_member(labels, "kubernetes.io/bootstrapping");
    return v && strcmp(v, "rbac-defaults") == 0 && is_bootstrap_role_name(name);
}

static int resource_path(char *out, size_t outlen, const char *plural, const char *ns,
                         const char *name)
{
    int n = ns ? snprintf(out, outlen, "namespaces/%s/%s/%s", ns, plural, name)
               : snprintf(out, outlen, "%s/%s", plural, name);
    return n < 0 || (size_t)n >= outlen ? -FERRY_ETOOBIG : 0;
}

static const char *meta_namespace(const json_t *md)
{
    const char *ns = str_member(md, "namespace");
    return ns && *ns ? ns : "default";
}

/* metadata.name of an object the rules need: a non-empty string of sane length. */
static int meta_name(k8s_ctx *c, const json_t *obj, const char **ret)
{
    const json_t *md = json_object_get(obj, "metadata");
    const char *name = str_member(md, "name"), *ns = str_member(md, "namespace");
    if (!json_is_object(md))
        return fail(c, obj, "metadata", "expected a metadata object");
    if (!name || !*name || strlen(name) > 253 || strchr(name, '/'))
        return fail(c, obj, "metadata", "expected metadata.name (1-253 characters, no '/')");
    if (json_object_get(md, "namespace") && !json_is_null(json_object_get(md, "namespace")) &&
        (!ns || strlen(ns) > 63 || strchr(ns, '/')))
        return fail(c, obj, "metadata",
                    "expected metadata.namespace to be a string of at most 63 characters");
    *ret = name;
    return 0;
}

/* A compact JSON text of j (NULL when j is NULL or empty) in *ret. Returns 0 or -ENOMEM. */
static int compact_text(const json_t *j, char **ret)
{
    *ret = NULL;
    if (!j || (json_is_array(j) && !json_array_size(j)) ||
        (json_is_object(j) && !json_object_size(j)))
        return 0;
    *ret = audit_json_dumps(j, JSON_COMPACT);
    return *ret ? 0 : -ENOMEM;
}

/* The tree of a text compact_text or audit_json_dumps made (NULL: memory ran out); new. */
static json_t *text_load(const char *text)
{
    return audit_json_reparse(text);
}

/* As text_load, an empty array for NULL. */
static json_t *text_tree(const char *text)
{
    return text ? text_load(text) : json_array();
}

static int role_load(k8s_ctx *c, const json_t *obj, bool cluster)
{
    const json_t *md = json_object_get(obj, "metadata"), *rules = json_object_get(obj, "rules");
    const json_t *agg = json_object_get(obj, "aggregationRule");
    const char *name, *ns = cluster ? NULL : meta_namespace(md);
    json_t *hits = NULL, *labels = NULL, *x;
    char key[K8S_MAX_NAME], res[K8S_MAX_NAME];
    k8s_role role = {0};
    unsigned flags = 0;
    size_t i;
    int r;

    r = meta_name(c, obj, &name);
    if (r < 0)
        return r;
    if (rules && !json_is_null(rules) && !json_is_array(rules))
        return fail(c, obj, "rules", "rules: expected a list of PolicyRules");
    (void)snprintf(key, sizeof(key), cluster ? "ClusterRole/%s" : "Role/%s/%s", cluster ? name : ns,
                   name);
    (void)resource_path(res, sizeof(res), cluster ? "clusterroles" : "roles", ns, name);
    if (cluster)
        c->s->seen_clusterroles = true;
    else
        c->s->seen_roles = true;
    if (strncmp(name, "eks:", 4) == 0)
        c->s->eks = true;
    if (map_find(c->s, &c->s->role_index, key) >= 0)
        return 0; /* the same role in an earlier input */
    hits = json_array();
    labels = json_object();
    if (!hits || !labels) {
        r = -ENOMEM;
        goto out;
    }
    json_array_foreach(rules, i, x)
    {
        json_t *verbs, *groups, *resources, *names;
        char sub[32];
        (void)snprintf(sub, sizeof(sub), "rules/%zu", i);
        if (!json_is_object(x)) {
            r = fail(c, obj, sub, "rules[%zu]: expected a PolicyRule object", i);
            goto out;
        }
        if ((r = string_list(c, x, obj, "verbs", sub, &verbs)) < 0 ||
            (r = string_list(c, x, obj, "apiGroups", sub, &groups)) < 0 ||
            (r = string_list(c, x, obj, "resources", sub, &resources)) < 0 ||
            (r = string_list(c, x, obj, "resourceNames", sub, &names)) < 0)
            goto out;
        unsigned f = rule_flags(verbs, groups, resources, names);
        if (!f)
            continue;
        flags |= f;
        if (json_array_size(hits) < K8S_MAX_HIT_RULES) {
            json_t *h = json_pack("[i, O]", (int)f, x);
            if (!h || json_array_append_new(hits, h) < 0) {
                r = -ENOMEM;
                goto out;
            }
        }
    }
    /* A ClusterRole's labels, as text, for aggregation selectors (only ClusterRoles are
     * aggregated). */
    const json_t *lab = cluster ? json_object_get(md, "labels") : NULL;
    const char *lk;
    json_object_foreach((json_t *)lab, lk, x)
    {
        char tmp[32];
        const char *v = scalar_text(x, tmp, sizeof(tmp));
        if (v && json_object_set_new(labels, lk, json_string(v)) < 0) {
            r = -ENOMEM;
            goto out;
        }
    }
    const json_t *sel = json_object_get(agg, "clusterRoleSelectors");
    if (cluster && agg && !json_is_null(agg) && !json_is_array(sel)) {
        r = fail(c, obj, "aggregationRule",
                 "aggregationRule: expected clusterRoleSelectors, a list of label selectors");
        goto out;
    }
    bool boot = is_bootstrap(md, name);
    role.f = flags;
    if ((r = compact_text(hits, &role.hits)) < 0 || (r = compact_text(labels, &role.labels)) < 0)
        goto out;
    if (cluster && json_is_array(sel) && !(role.agg = audit_json_dumps(sel, JSON_COMPACT))) {
        r = -ENOMEM;
        goto out;
    }
    if ((r = audit_k8s_intern(c->s->strs, key, &role.key)) < 0 ||
        (r = vec_reserve(&c->s->roles, &c->s->alloc_roles, c->s->n_roles, sizeof(role))) < 0 ||
        (r = map_put(&c->s->role_index, role.key, (uint32_t)c->s->n_roles)) < 0)
        goto out;
    c->s->roles[c->s->n_roles++] = role;
    role = (k8s_role){0};
    /* K8S-OP-002 reads the role alone; the bootstrap roles (cluster-admin) are wildcards by
     * design. An aggregated role's own rules are its selected roles', reported on them. */
    if ((flags & F_WILDCARD) && !boot && !json_is_array(sel)) {
        json_t *ev = json_pack("{s:s, s:[]}", "role", key, "rules");
        json_t *evr = json_object_get(ev, "rules");
        json_array_foreach(hits, i, x)
        {
            if ((json_integer_value(json_array_get(x, 0)) & F_WILDCARD) &&
                json_array_append(evr, json_array_get(x, 1)) < 0) {
                json_decref(ev);
                r = -ENOMEM;
                goto out;
            }
        }
        r = ev ? audit_emit(c->a, "K8S-OP-002", -1, CLOUD, cluster_name(c->s), res, ev, "wildcard",
                            c->path)
               : -ENOMEM;
        json_decref(ev);
    }
out:
    free(role.hits);
    free(role.labels);
    free(role.agg);
    json_decref(hits);
    json_decref(labels);
    return r;
}

static int binding_load(k8s_ctx *c, const json_t *obj, bool cluster)
{
    const json_t *md = json_object_get(obj, "metadata");
    const json_t *ref = json_object_get(obj, "roleRef"),
                 *subjects = json_object_get(obj, "subjects");
    const char *name, *ns = cluster ? NULL : meta_namespace(md), *rk, *rn;
    k8s_state *s = c->s;
    size_t first = s->n_subjects, i;
    k8s_binding b = {0};
    json_t *x;
    int r;

    r = meta_name(c, obj, &name);
    if (r < 0)
        return r;
    rk = str_member(ref, "kind");
    rn = str_member(ref, "name");
    if (!json_is_object(ref) || !rk || !rn || !*rn || strlen(rn) > 253 ||
        (strcmp(rk, "ClusterRole") != 0 && strcmp(rk, "Role") != 0) ||
        (cluster && strcmp(rk, "Role") == 0))
        return fail(c, obj, "roleRef", "expected roleRef with kind %s and a name",
                    cluster ? "ClusterRole" : "Role or ClusterRole");
    if (subjects && !json_is_null(subjects) && !json_is_array(subjects))
        return fail(c, obj, "subjects", "subjects: expected a list");
    if (strncmp(name, "eks:", 4) == 0)
        s->eks = true;
    json_array_foreach(subjects, i, x)
    {
        const char *k = str_member(x, "kind"), *n = str_member(x, "name");
        const char *sns = str_member(x, "namespace");
        k8s_subject sj = {0};
        char sub[32];
        (void)snprintf(sub, sizeof(sub), "subjects/%zu", i);
        if (!json_is_object(x) || !k || !n || !*n || strlen(n) > 253 || (sns && strlen(sns) > 63)) {
            s->n_subjects = first;
            return fail(c, obj, sub, "subjects[%zu]: expected an object with kind and name", i);
        }
        sj.kind = strcmp(k, "ServiceAccount") == 0 ? SUBJ_SA
                  : strcmp(k, "Group") == 0        ? SUBJ_GROUP
                  : strcmp(k, "User") == 0         ? SUBJ_USER
                                                   : SUBJ_OTHER;
        /* A ServiceAccount subject without a namespace is the binding's (rbac-tool reads it
         * so; the API server refuses it on a ClusterRoleBinding). Only a ServiceAccount's
         * namespace is read. */
        if (sj.kind == SUBJ_SA && (!sns || !*sns))
            sns = ns ? ns : "default";
        if ((r = audit_k8s_intern(s->strs, n, &sj.name)) < 0 ||
            (sj.kind == SUBJ_SA && (r = audit_k8s_intern(s->strs, sns, &sj.ns)) < 0) ||
            (r = vec_reserve(&s->subjects, &s->alloc_subjects, s->n_subjects, sizeof(sj))) < 0) {
            s->n_subjects = first;
            return r;
        }
        s->subjects[s->n_subjects++] = sj;
    }
    b.subj = (uint32_t)first;
    b.n_subj = (uint32_t)(s->n_subjects - first) & ((1u << 29) - 1);
    b.cluster = cluster;
    b.rk_cluster = strcmp(rk, "ClusterRole") == 0;
    b.boot = is_bootstrap(md, name);
    if ((size_t)b.n_subj != s->n_subjects - first)
        r = -FERRY_ETOOBIG;
    if (r < 0 || (ns && (r = audit_k8s_intern(s->strs, ns, &b.ns)) < 0) ||
        (r = audit_k8s_intern(s->strs, name, &b.name)) < 0 ||
        (r = audit_k8s_intern(s->strs, rn, &b.rn)) < 0 || (r = ctx_src(c, &b.src)) < 0 ||
        (r = vec_reserve(&s->bindings, &s->alloc_bindings, s->n_bindings, sizeof(b))) < 0) {
        s->n_subjects = first;
        return r;
    }
    s->bindings[s->n_bindings++] = b;
    return 0;
}

static const char *const sa_links[][2] = {
    {"eks.amazonaws.com/role-arn", "aws"},
    {"iam.gke.io/gcp-service-account", "gcp"},
    {"azure.workload.identity/client-id", "azure"},
};

static int sa_load(k8s_ctx *c, const json_t *obj)
{
    const json_t *md = json_object_get(obj, "metadata");
    const json_t *ann = json_object_get(md, "annotations");
    const json_t *am = json_object_get(obj, "automountServiceAccountToken");
    const char *name, *ns = meta_namespace(md), *created = str_member(md, "creationTimestamp");
    char key[K8S_MAX_NAME];
    k8s_state *s = c->s;
    k8s_sa e = {0};
    int64_t t;
    int r;

    r = meta_name(c, obj, &name);
    if (r < 0)
        return r;
    s->seen_sa_inventory = true;
    (void)snprintf(key, sizeof(key), "%s/%s", ns, name);
    if (map_find(s, &s->sa_index, key) >= 0)
        return 0;
    if (created && audit_parse_time(created, &t) == 0) {
        e.created = t;
        e.has_created = 1;
    }
    if (json_is_boolean(am))
        e.automount = json_is_true(am) ? AM_TRUE : AM_FALSE;
    for (size_t i = 0; i < ARRAY_SIZE(sa_links); i++) {
        const char *v = str_member(ann, sa_links[i][0]);
        if (!v || !*v || strlen(v) > 2048)
            continue;
        if (i == 0)
            s->eks = true;
        if ((r = audit_k8s_intern(s->strs, v, &e.links[i])) < 0)
            return r;
    }
    if ((r = audit_k8s_intern(s->strs, key, &e.key)) < 0 || (r = ctx_src(c, &e.src)) < 0 ||
        (r = vec_reserve(&s->sas, &s->alloc_sas, s->n_sas, sizeof(e))) < 0 ||
        (r = map_put(&s->sa_index, e.key, (uint32_t)s->n_sas)) < 0)
        return r;
    s->sas[s->n_sas++] = e;
    return 0;
}

static int secret_load(k8s_ctx *c, const json_t *obj)
{
    const json_t *md = json_object_get(obj, "metadata");
    const json_t *labels = json_object_get(md, "labels"), *ann = json_object_get(md, "annotations");
    const char *type = str_member(obj, "type"), *name, *ns = meta_namespace(md);
    const char *sa = str_member(ann, "kubernetes.io/service-account.name");
    const char *last = str_member(labels, "kubernetes.io/legacy-token-last-used");
    const char *invalid = str_member(labels, "kubernetes.io/legacy-token-invalid-since");
    char res[K8S_MAX_NAME], key[K8S_MAX_NAME];
    int64_t t;
    int sev = FERRY_AUDIT_MEDIUM, r;
    json_t *ev;

    if (!type || strcmp(type, "kubernetes.io/service-account-token") != 0)
        return 0; /* other secrets are not the audit's business; their data is never read */
    r = meta_name(c, obj, &name);
    if (r < 0)
        return r;
    if (sa && *sa) {
        (void)snprintf(key, sizeof(key), "%s/%s", ns, sa);
        if ((r = set_add(c->s, &c->s->token_sas, key)) < 0)
            return r;
    }
    if (!last || audit_parse_time(last, &t) < 0 ||
        audit_now(c->a) - t > (int64_t)c->a->opts.unused_days * DAY)
        sev = FERRY_AUDIT_HIGH;
    (void)resource_path(res, sizeof(res), "secrets", ns, name);
    ev = json_pack("{s:s, s:s?, s:s?, s:s?, s:s?}", "secret", name, "service_account",
                   sa && *sa ? sa : NULL, "last_used", last, "invalid_since", invalid, "created",
                   str_member(md, "creationTimestamp"));
    if (!ev)
        return -ENOMEM;
    r = audit_emit(c->a, "K8S-SH-004", sev, CLOUD, cluster_name(c->s), res, ev, "legacy-token",
                   c->path);
    json_decref(ev);
    return r;
}

/* A pod spec (of a Pod or of a workload's template): which SA it runs as. */
static int podspec_load(k8s_ctx *c, const json_t *obj, const json_t *spec, const char *plural)
{
    const json_t *md = json_object_get(obj, "metadata");
    const char *ns = meta_namespace(md), *name, *sa;
    const json_t *am;
    char key[K8S_MAX_NAME];
    k8s_pod p = {0};
    int r;

    r = meta_name(c, obj, &name);
    if (r < 0)
        return r;
    c->s->seen_pods = true;
    if (!json_is_object(spec))
        return 0; /* a template without a pod spec runs nothing */
    sa = str_member(spec, "serviceAccountName");
    if (!sa || !*sa)
        sa = str_member(spec, "serviceAccount"); /* deprecated alias */
    if (!sa || !*sa)
        sa = "default";
    if (strlen(sa) > 253)
        return fail(c, obj, "spec", "serviceAccountName: longer than 253 characters");
    (void)snprintf(key, sizeof(key), "%s/%s", ns, sa);
    if ((r = set_add(c->s, &c->s->pod_sas, key)) < 0)
        return r;
    if (strcmp(sa, "default") != 0)
        return 0;
    am = json_object_get(spec, "automountServiceAccountToken");
    if (json_is_boolean(am))
        p.am = json_is_true(am) ? AM_TRUE : AM_FALSE;
    if ((r = audit_k8s_intern(c->s->strs, ns, &p.ns)) < 0 ||
        (r = audit_k8s_intern(c->s->strs, name, &p.name)) < 0 ||
        (r = audit_k8s_intern(c->s->strs, plural, &p.plural)) < 0 || (r = ctx_src(c, &p.src)) < 0 ||
        (r = vec_reserve(&c->s->default_pods, &c->s->alloc_default_pods, c->s->n_default_pods,
                         sizeof(p))) < 0)
        return r;
    c->s->default_pods[c->s->n_default_pods++] = p;
    return 0;
}

static int resource_load(k8s_ctx *c, const json_t *obj)
{
    static const struct {
        const char *kind, *plural;
    } workloads[] = {
        {"Deployment", "deployments"},
        {"StatefulSet", "statefulsets"},
        {"DaemonSet", "daemonsets"},
        {"ReplicaSet", "replicasets"},
        {"Job", "jobs"},
        {"ReplicationController", "replicationcontrollers"},
    };
    const char *kind = str_member(obj, "kind");

    if (!json_is_object(obj))
        return fail(c, obj, NULL, "expected a Kubernetes resource object");
    if (!kind)
        return fail(c, obj, "kind", "expected a kind string");
    if (strcmp(kind, "ServiceAccount") == 0)
        return sa_load(c, obj);
    if (strcmp(kind, "Secret") == 0)
        return secret_load(c, obj);
    if (strcmp(kind, "Role") == 0 || strcmp(kind, "ClusterRole") == 0)
        return role_load(c, obj, kind[0] == 'C');
    if (strcmp(kind, "RoleBinding") == 0 || strcmp(kind, "ClusterRoleBinding") == 0)
        return binding_load(c, obj, kind[0] == 'C');
    if (strcmp(kind, "Pod") == 0)
        return podspec_load(c, obj, json_object_get(obj, "spec"), "pods");
    for (size_t i = 0; i < ARRAY_SIZE(workloads); i++)
        if (strcmp(kind, workloads[i].kind) == 0)
            return podspec_load(
                c, obj,
                json_object_get(json_object_get(json_object_get(obj, "spec"), "template"), "spec"),
                workloads[i].plural);
    if (strcmp(kind, "CronJob") == 0) {
        const json_t *jt = json_object_get(json_object_get(obj, "spec"), "jobTemplate");
        return podspec_load(
            c, obj,
            json_object_get(json_object_get(json_object_get(jt, "spec"), "template"), "spec"),
            "cronjobs");
    }
    if (strcmp(kind, "Namespace") == 0) {
        c->s->seen_sa_inventory = true; /* a manifest that declares its namespace's objects */
        return 0;
    }
    if (strcmp(kind, "ConfigMap") == 0) {
        const json_t *md = json_object_get(obj, "metadata");
        const char *n = str_member(md, "name");
        if (n && strcmp(n, "aws-auth") == 0 && strcmp(meta_namespace(md), "kube-system") == 0)
            c->s->eks = true;
        return 0;
    }
    return 0; /* other kinds carry nothing the rules read */
}

static bool is_list(const json_t *doc)
{
    const char *kind = str_member(doc, "kind");
    size_t n = kind ? strlen(kind) : 0;
    return n >= 4 && strcmp(kind + n - 4, "List") == 0 && json_object_get(doc, "items");
}

/* One document: a List (kind List or a typed FooList) or a single resource. */
static int document_load(k8s_ctx *c, const json_t *doc, const char *doclabel,
                         const size_t *item_marks, size_t n_items)
{
    const json_t *items = json_object_get(doc, "items"), *x;
    size_t i;
    int r;

    (void)snprintf(c->label, sizeof(c->label), "%s", doclabel);
    c->jwhere[0] = '\0';
    if (!json_is_object(doc))
        return fail(c, doc, NULL,
                    "expected a Kubernetes resource or List (a mapping with "
                    "apiVersion and kind)");
    if (!is_list(doc))
        return resource_load(c, doc);
    if (!json_is_array(items) && !json_is_null(items))
        return fail(c, doc, "items", "items: expected a list of resources");
    json_array_foreach(items, i, x)
    {
        (void)snprintf(c->label, sizeof(c->label), "%sitems[%zu]: ", doclabel, i);
        (void)snprintf(c->jwhere, sizeof(c->jwhere), "/items/%zu", i);
        if (c->yaml && i < n_items) {
            c->line = item_marks[2 * i];
            c->col = item_marks[2 * i + 1];
        }
        if (is_list(x))
            return fail(c, x, NULL, "a List inside a List is not accepted");
        r = resource_load(c, x);
        if (r < 0)
            return r;
    }
    return 0;
}

static int note_loaded(k8s_ctx *c)
{
    c->s->loaded = true;
    if (!c->s->first_src && !(c->s->first_src = strdup(c->path)))
        return -ENOMEM;
    return 0;
}

static bool detect_k8s_json(const json_t *doc)
{
    return json_is_object(doc) && json_is_string(json_object_get(doc, "kind")) &&
           json_is_string(json_object_get(doc, "apiVersion")) &&
           !json_object_get(doc, "auditID"); /* audit.k8s.io Events are another input */
}

static int load_k8s_json(ferry_audit *a, const char *path, const char *buf, size_t len, json_t *doc,
                         char *errbuf, size_t errlen)
{
    k8s_ctx c = {.a = a, .path = path, .errbuf = errbuf, .errlen = errlen};
    (void)buf;
    (void)len;
    if (!(c.s = state(a)))
        return -ENOMEM;
    if (!detect_k8s_json(doc))
        return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                "expected a Kubernetes object or List with apiVersion and kind "
                                "(kubectl get ... -o json)");
    int r = note_loaded(&c);
    return r < 0 ? r : document_load(&c, doc, "", NULL, 0);
}

/* A YAML stream whose top level (column 0) has apiVersion: or kind: keys, or a document that
 * is one flow mapping on the line after "---" naming both ({"apiVersion": ..., "kind": ...}). */
static bool detect_k8s_yaml(const char *buf, size_t len)
{
    size_t i = 0;
    bool after_marker = false;
    while (i < len) {
        const char *l = buf + i, *nl = memchr(l, '\n', len - i);
        size_t n = nl ? (size_t)(nl - l) : len - i;
        if ((n >= 5 && memcmp(l, "kind:", 5) == 0) ||
            (n >= 11 && memcmp(l, "apiVersion:", 11) == 0) ||
            (after_marker && n > 0 && l[0] == '{' && memmem(l, n, "kind", 4) &&
             memmem(l, n, "apiVersion", 10)))
            return true;
        /* A flow mapping counts only after a "---" line: one JSON object per line without
         * markers is NDJSON, not YAML (audit logs, gcloud exports). */
        after_marker = n >= 3 && memcmp(l, "---", 3) == 0;
        for (size_t k = 3; k < n && after_marker; k++) /* buf is not NUL-terminated */
            after_marker = l[k] == ' ' || l[k] == '\t' || l[k] == '\r';
        i += n + 1;
    }
    return false;
}

static int yaml_doc(void *ctx, json_t *doc, size_t index, const yaml_mark_t *start,
                    const size_t *item_marks, size_t n_items)
{
    k8s_ctx *c = ctx;
    char label[32];
    c->line = start->line + 1;
    c->col = start->column + 1;
    (void)snprintf(label, sizeof(label), "document %zu: ", index);
    return document_load(c, doc, label, item_marks, n_items);
}

static int load_k8s_yaml(ferry_audit *a, const char *path, const char *buf, size_t len, json_t *doc,
                         char *errbuf, size_t errlen)
{
    k8s_ctx c = {.a = a, .path = path, .errbuf = errbuf, .errlen = errlen, .yaml = true};
    int r;
    (void)doc;
    if (!(c.s = state(a)))
        return -ENOMEM;
    r = note_loaded(&c);
    if (r < 0)
        return r;
    return yaml_each_document(buf, len, yaml_doc, &c, errbuf, errlen);
}

/* ---- audit.k8s.io Events ----------------------------------------------------------------- */

static bool is_audit_event(const json_t *e)
{
    const char *kind = str_member(e, "kind"), *api = str_member(e, "apiVersion");
    return kind && strcmp(kind, "Event") == 0 && api && strncmp(api, "audit.k8s.io/", 13) == 0 &&
           json_is_string(json_object_get(e, "auditID"));
}

/* The API server's audit log: JSON Lines (read by core.c as an array), one Event, or an
 * EventList (a webhook batch). */
static bool detect_k8s_audit(const json_t *doc)
{
    const char *kind = str_member(doc, "kind");
    if (json_is_array(doc))
        return is_audit_event(json_array_get(doc, 0));
    if (kind && strcmp(kind, "EventList") == 0)
        return is_audit_event(json_array_get(json_object_get(doc, "items"), 0));
    return is_audit_event(doc);
}

/* Requests made as a ServiceAccount: the last one per SA is kept (K8S-SH-001 and the identity
 * note count an SA seen within --unused-days as used). Other events are not kept. */
static int load_k8s_audit(ferry_audit *a, const char *path, const char *buf, size_t len,
                          json_t *doc, char *errbuf, size_t errlen)
{
    k8s_ctx c = {.a = a, .path = path, .errbuf = errbuf, .errlen = errlen};
    const json_t *events = json_is_array(doc) ? doc : json_object_get(doc, "items"), *e;
    json_t *one = NULL;
    size_t i;
    int r;

    (void)buf;
    (void)len;
    if (!(c.s = state(a)))
        return -ENOMEM;
    if ((r = note_loaded(&c)) < 0)
        return r;
    if (json_is_object(doc) && !json_is_array(events)) {
        if (!(one = json_array()) || json_array_append(one, doc) < 0) {
            json_decref(one);
            return -ENOMEM;
        }
        events = one;
    }
    json_array_foreach(events, i, e)
    {
        const char *user = str_member(json_object_get(e, "user"), "username");
        const char *ts = str_member(e, "stageTimestamp");
        char key[K8S_MAX_NAME];
        int64_t t;

        (void)snprintf(c.jwhere, sizeof(c.jwhere), "%s/%zu", json_is_array(doc) ? "" : "/items", i);
        (void)snprintf(c.label, sizeof(c.label), "%s%zu]: ", json_is_array(doc) ? "[" : "items[",
                       i);
        if (!is_audit_event(e)) {
            r = fail(&c, e, NULL, "expected an audit.k8s.io Event with auditID");
            break;
        }
        if (!ts)
            ts = str_member(e, "requestReceivedTimestamp");
        if (!user || strncmp(user, "system:serviceaccount:", 22) != 0)
            continue;
        const char *nsname = user + 22, *colon = strchr(nsname, ':');
        if (!colon || colon == nsname || !colon[1] || strchr(colon + 1, ':') ||
            strlen(nsname) > 320)
            continue; /* not an SA name the rules could match */
        if (!ts || audit_parse_time(ts, &t) < 0) {
            r = fail(&c, e, "stageTimestamp",
                     "expected a stageTimestamp or "
                     "requestReceivedTimestamp date");
            break;
        }
        (void)snprintf(key, sizeof(key), "%.*s/%s", (int)(colon - nsname), nsname, colon + 1);
        uint32_t id, *prev;
        if ((r = audit_k8s_intern(c.s->strs, key, &id)) < 0)
            break;
        if ((prev = map_get(&c.s->sa_seen, id))) {
            if (c.s->seen_at[*prev] < t)
                c.s->seen_at[*prev] = t;
            continue;
        }
        if ((r = vec_reserve(&c.s->seen_at, &c.s->alloc_seen, c.s->n_seen, sizeof(t))) < 0 ||
            (r = map_put(&c.s->sa_seen, id, (uint32_t)c.s->n_seen)) < 0)
            break;
        c.s->seen_at[c.s->n_seen++] = t;
    }
    json_decref(one);
    return r;
}

/* ---- finish: the rules that join objects ------------------------------------------------- */

static bool selector_matches(const json_t *sel, const json_t *labels)
{
    size_t i;
    json_t *one;
    bool match = false;
    json_array_foreach(sel, i, one)
    {
        const json_t *ml = json_object_get(one, "matchLabels"), *v;
        const json_t *me = json_object_get(one, "matchExpressions");
        const char *lk;
        bool ok = json_is_object(one);
        size_t j;
        json_t *ex;
        json_object_foreach((json_t *)ml, lk, v)
        {
            char tmp[32];
            const char *want = scalar_text(v, tmp, sizeof(tmp));
            const char *have = str_member(labels, lk);
            if (!want || !have || strcmp(want, have) != 0)
                ok = false;
        }
        json_array_foreach(me, j, ex)
        {
            const char *op = str_member(ex, "operator"), *key = str_member(ex, "key");
            const json_t *vals = json_object_get(ex, "values");
            const char *have = key ? str_member(labels, key) : NULL;
            bool in = false;
            size_t q;
            json_t *vv;
            json_array_foreach(vals, q, vv)
            {
                char tmp[32];
                const char *t = scalar_text(vv, tmp, sizeof(tmp));
                if (have && t && strcmp(t, have) == 0)
                    in = true;
            }
            if (!op || !key || (strcmp(op, "In") == 0 && !in) || (strcmp(op, "NotIn") == 0 && in) ||
                (strcmp(op, "Exists") == 0 && !have) || (strcmp(op, "DoesNotExist") == 0 && have) ||
                (strcmp(op, "In") != 0 && strcmp(op, "NotIn") != 0 && strcmp(op, "Exists") != 0 &&
                 strcmp(op, "DoesNotExist") != 0))
                ok = false;
        }
        if (ok)
            match = true;
    }
    return match;
}

static int aggregate_roles(k8s_state *s)
{
    /* An aggregated ClusterRole holds the rules of every ClusterRole its selectors match
     * (matchLabels; matchExpressions In, NotIn, Exists, DoesNotExist), to a fixed point. The
     * roles' texts are read back into trees only when some role aggregates. */
    json_t **labels = NULL, **hits = NULL, **sels = NULL;
    bool *grown = NULL, any = false, changed = true;
    size_t n = s->n_roles;
    int r = 0;

    for (size_t i = 0; i < n; i++)
        any = any || s->roles[i].agg;
    if (!any)
        return 0;
    labels = calloc(n, sizeof(*labels));
    hits = calloc(n, sizeof(*hits));
    sels = calloc(n, sizeof(*sels));
    grown = calloc(n, sizeof(*grown));
    if (!labels || !hits || !sels || !grown) {
        r = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const k8s_role *ro = &s->roles[i];
        if ((ro->labels && !(labels[i] = text_load(ro->labels))) ||
            !(hits[i] = text_tree(ro->hits)) || (ro->agg && !(sels[i] = text_load(ro->agg)))) {
            r = -ENOMEM;
            goto out;
        }
    }
    for (size_t pass = 0; changed && pass <= n; pass++) {
        changed = false;
        for (size_t i = 0; i < n; i++) {
            k8s_role *e = &s->roles[i];
            if (!json_is_array(sels[i]))
                continue;
            for (size_t j = 0; j < n; j++) {
                k8s_role *e2 = &s->roles[j];
                size_t q;
                json_t *h;
                if (j == i || strncmp(str(s, e2->key), "ClusterRole/", 12) != 0 ||
                    !selector_matches(sels[i], labels[j]))
                    continue;
                if ((e->f | e2->f) == e->f)
                    continue;
                json_array_foreach(hits[j], q, h)
                {
                    if (json_array_size(hits[i]) < K8S_MAX_HIT_RULES &&
                        json_array_append(hits[i], h) < 0) {
                        r = -ENOMEM;
                        goto out;
                    }
                }
                e->f |= e2->f;
                grown[i] = true;
                changed = true;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        char *text;
        if (!grown[i])
            continue;
        if ((r = compact_text(hits[i], &text)) < 0)
            goto out;
        free(s->roles[i].hits);
        s->roles[i].hits = text;
    }
out:
    for (size_t i = 0; i < n && labels && hits && sels; i++) {
        json_decref(labels[i]);
        json_decref(hits[i]);
        json_decref(sels[i]);
    }
    free(labels);
    free(hits);
    free(sels);
    free(grown);
    return r;
}

/* "system:serviceaccount:ns:name", "user:name", "group:name". */
static json_t *subject_name(const k8s_state *s, const k8s_subject *sj)
{
    char buf[K8S_MAX_NAME];
    if (sj->kind == SUBJ_SA)
        (void)snprintf(buf, sizeof(buf), "system:serviceaccount:%s:%s", str(s, sj->ns),
                       str(s, sj->name));
    else
        (void)snprintf(buf, sizeof(buf), "%s:%s", sj->kind == SUBJ_GROUP ? "group" : "user",
                       str(s, sj->name));
    return json_string(buf);
}

static bool subject_is(const k8s_state *s, const k8s_subject *sj, int kind, const char *name)
{
    return sj->kind == kind && strcmp(str(s, sj->name), name) == 0;
}

/* The broad-group bindings the API server (and kubeadm) create: binding, role, subject. */
static bool default_broad_binding(const k8s_state *s, const k8s_binding *b, const k8s_subject *sj)
{
    static const struct {
        bool cluster;
        const char *name;
        int kind;
        const char *subject;
    } defaults[] = {
        {true, "system:basic-user", SUBJ_GROUP, "system:authenticated"},
        {true, "system:discovery", SUBJ_GROUP, "system:authenticated"},
        {true, "system:public-info-viewer", SUBJ_GROUP, "system:authenticated"},
        {true, "system:public-info-viewer", SUBJ_GROUP, "system:unauthenticated"},
        {false, "kubeadm:bootstrap-signer-clusterinfo", SUBJ_USER, "system:anonymous"},
    };
    const char *name = str(s, b->name), *rn = str(s, b->rn);
    for (size_t i = 0; i < ARRAY_SIZE(defaults); i++)
        if (b->cluster == defaults[i].cluster && strcmp(name, defaults[i].name) == 0 &&
            strcmp(rn, defaults[i].name) == 0 &&
            subject_is(s, sj, defaults[i].kind, defaults[i].subject))
            return true;
    return false;
}

static bool broad_subject(const k8s_state *s, const k8s_subject *sj)
{
    return subject_is(s, sj, SUBJ_GROUP, "system:anonymous") ||
           subject_is(s, sj, SUBJ_GROUP, "system:unauthenticated") ||
           subject_is(s, sj, SUBJ_GROUP, "system:authenticated") ||
           subject_is(s, sj, SUBJ_USER, "system:anonymous");
}

typedef struct binding_view {
    const char *kind, *ns, *name, *rk, *rn, *src;
    char res[K8S_MAX_NAME], role_key[K8S_MAX_NAME], role_label[K8S_MAX_NAME];
    const k8s_role *role; /* index entry or NULL */
    unsigned flags;
    bool boot, cluster_scope, reaches_kube_system;
} binding_view;

static void binding_view_init(const k8s_state *s, const k8s_binding *b, binding_view *v)
{
    long ri;
    v->kind = b->cluster ? "ClusterRoleBinding" : "RoleBinding";
    v->ns = str(s, b->ns);
    v->name = str(s, b->name);
    v->rk = b->rk_cluster ? "ClusterRole" : "Role";
    v->rn = str(s, b->rn);
    v->src = str(s, b->src);
    v->boot = b->boot;
    v->cluster_scope = v->ns == NULL;
    v->reaches_kube_system = v->cluster_scope || strcmp(v->ns, "kube-system") == 0;
    (void)resource_path(v->res, sizeof(v->res), v->ns ? "rolebindings" : "clusterrolebindings",
                        v->ns, v->name);
    if (b->rk_cluster)
        (void)snprintf(v->role_key, sizeof(v->role_key), "ClusterRole/%s", v->rn);
    else
        (void)snprintf(v->role_key, sizeof(v->role_key), "Role/%s/%s", v->ns, v->rn);
    (void)snprintf(v->role_label, sizeof(v->role_label), "%s", v->role_key);
    ri = map_find(s, &s->role_index, v->role_key);
    v->role = ri >= 0 ? &s->roles[ri] : NULL;
    v->flags = v->role ? v->role->f : 0;
    /* cluster-admin is known without its definition. */
    if (!v->role && b->rk_cluster && strcmp(v->rn, "cluster-admin") == 0)
        v->flags = F_ALL;
}

/* The evidence of a grant finding: binding, role, scope, the subjects, the rules that matched
 * mask. */
static json_t *grant_evidence(const binding_view *v, const json_t *subjects, unsigned mask)
{
    json_t *ev, *rules = json_array(), *hits = NULL, *h;
    size_t i;
    char scope[96];

    if (!rules)
        return NULL;
    if (mask && v->role && v->role->hits && !(hits = text_load(v->role->hits))) {
        json_decref(rules);
        return NULL;
    }
    json_array_foreach(hits, i, h)
    {
        if ((json_integer_value(json_array_get(h, 0)) & mask) &&
            json_array_append(rules, json_array_get(h, 1)) < 0) {
            json_decref(hits);
            json_decref(rules);
            return NULL;
        }
    }
    json_decref(hits);
    (void)snprintf(scope, sizeof(scope), "%s%s", v->ns ? "namespace " : "cluster",
                   v->ns ? v->ns : "");
    ev = json_pack("{s:s, s:s, s:s, s:O}", "binding", v->res, "role", v->role_label, "scope", scope,
                   "subjects", subjects);
    /* OP-001 (mask 0) names its role; the others show the PolicyRules that matched. */
    if (ev && mask && json_object_set(ev, "rules", rules) < 0) {
        json_decref(ev);
        ev = NULL;
    }
    json_decref(rules);
    return ev;
}

static int emit_grant(ferry_audit *a, k8s_state *s, const binding_view *v, const json_t *subjects,
                      const char *rule, int sev, unsigned mask)
{
    json_t *ev = grant_evidence(v, subjects, mask);
    int r;
    if (!ev)
        return -ENOMEM;
    r = audit_emit(a, rule, sev, CLOUD, cluster_name(s), v->res, ev, v->role_key, v->src);
    json_decref(ev);
    return r;
}

static int binding_rules(ferry_audit *a, k8s_state *s, const k8s_binding *b)
{
    binding_view v;
    json_t *holders = NULL, *broad = NULL, *admins = NULL;
    int r = 0;

    binding_view_init(s, b, &v);
    /* SH-003: a dangling roleRef. The bootstrap roles are reconciled by the API server at every
     * start, so a reference to one is never dangling. */
    if (!v.role && !v.boot &&
        (strcmp(v.rk, "ClusterRole") == 0 ? s->seen_clusterroles && !is_bootstrap_role_name(v.rn)
                                          : s->seen_roles)) {
        json_t *ev = json_pack("{s:s, s:s}", "binding", v.res, "role_ref", v.role_key);
        r = ev ? audit_emit(a, "K8S-SH-003", -1, CLOUD, cluster_name(s), v.res, ev, v.role_key,
                            v.src)
               : -ENOMEM;
        json_decref(ev);
        if (r < 0)
            return r;
    }
    holders = json_array();
    broad = json_array();
    admins = json_array();
    if (!holders || !broad || !admins) {
        r = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < b->n_subj; i++) {
        const k8s_subject *sj = &s->subjects[b->subj + i];
        const char *n = str(s, sj->name);
        if (subject_is(s, sj, SUBJ_GROUP, "system:masters"))
            continue; /* cluster-admin by definition, whatever it is bound to */
        if (json_array_append_new(holders, subject_name(s, sj)) < 0 ||
            (broad_subject(s, sj) && !default_broad_binding(s, b, sj) &&
             json_array_append_new(broad, subject_name(s, sj)) < 0) ||
            json_array_append_new(admins, subject_name(s, sj)) < 0) {
            r = -ENOMEM;
            goto out;
        }
        if (sj->kind != SUBJ_SA)
            continue;
        char key[K8S_MAX_NAME];
        (void)snprintf(key, sizeof(key), "%s/%s", str(s, sj->ns), n);
        long si = map_find(s, &s->sa_index, key);
        k8s_sa *sa = si >= 0 ? &s->sas[si] : NULL;
        if (sa)
            sa->bound = 1;
        /* SH-002: the subject SA does not exist (with the SAs of the cluster in the inputs). */
        if (!sa && !v.boot && s->seen_sa_inventory) {
            json_t *ev = json_pack("{s:s, s:s, s:o}", "binding", v.res, "role", v.role_label,
                                   "subject", subject_name(s, sj));
            r = ev ? audit_emit(a, "K8S-SH-002", -1, CLOUD, cluster_name(s), v.res, ev, key, v.src)
                   : -ENOMEM;
            json_decref(ev);
            if (r < 0)
                goto out;
        }
        /* SH-005: the namespace's default SA is bound. */
        if (strcmp(n, "default") == 0 && !v.boot) {
            json_t *ev = json_pack("{s:s, s:s, s:o}", "binding", v.res, "role", v.role_label,
                                   "subject", subject_name(s, sj));
            r = ev ? audit_emit(a, "K8S-SH-005", -1, CLOUD, cluster_name(s), v.res, ev, key, v.src)
                   : -ENOMEM;
            json_decref(ev);
            if (r < 0)
                goto out;
        }
    }
    /* OP-007 before the bootstrap exemption: a broad group added to a default binding is not a
     * default. */
    if (json_array_size(broad)) {
        json_t *ev =
            json_pack("{s:s, s:s, s:O}", "binding", v.res, "role", v.role_label, "subjects", broad);
        r = ev ? audit_emit(a, "K8S-OP-007", -1, CLOUD, cluster_name(s), v.res, ev, v.role_key,
                            v.src)
               : -ENOMEM;
        json_decref(ev);
        if (r < 0)
            goto out;
    }
    if (!json_array_size(holders))
        goto out;
    /* OP-001: cluster-admin bound cluster-wide; it holds everything, so the other grant rules
     * are not repeated for it. */
    if (strcmp(v.kind, "ClusterRoleBinding") == 0 && strcmp(v.rk, "ClusterRole") == 0 &&
        strcmp(v.rn, "cluster-admin") == 0) {
        r = emit_grant(a, s, &v, admins, "K8S-OP-001", -1, 0);
        goto out;
    }
    if (v.boot)
        goto out; /* the bootstrap policy's own grants (controllers, nodes, kube-proxy) */
    if (v.flags & (F_ESCALATE | F_IMPERSONATE))
        r = emit_grant(a, s, &v, holders, "K8S-OP-003", -1, F_ESCALATE | F_IMPERSONATE);
    if (r == 0 && (v.flags & (F_TOKEN | F_SECRETS)))
        r = emit_grant(a, s, &v, holders, "K8S-OP-004",
                       v.reaches_kube_system ? FERRY_AUDIT_CRITICAL : FERRY_AUDIT_HIGH,
                       F_TOKEN | F_SECRETS);
    if (r == 0 && (v.flags & F_WORKLOAD) && v.reaches_kube_system)
        r = emit_grant(a, s, &v, holders, "K8S-OP-005", -1, F_WORKLOAD);
    /* Nodes, CSRs and webhook configurations are cluster-scoped: only a ClusterRoleBinding
     * grants them. */
    if (r == 0 && (v.flags & (F_NODES_PROXY | F_CSR | F_WEBHOOK)) && v.cluster_scope)
        r = emit_grant(a, s, &v, holders, "K8S-OP-006", -1, F_NODES_PROXY | F_CSR | F_WEBHOOK);
    if (r == 0 && (v.flags & F_CM_WRITE) && v.reaches_kube_system && s->eks)
        r = emit_grant(a, s, &v, holders, "K8S-OP-008", -1, F_CM_WRITE);
out:
    json_decref(holders);
    json_decref(broad);
    json_decref(admins);
    return r;
}

/* kube-system SAs the controller manager and the cluster's add-ons run as, and every
 * namespace's default SA: created by Kubernetes itself. */
static bool managed_sa(const char *ns, const char *name)
{
    static const char *const kube_system[] = {
        "attachdetach-controller",
        "bootstrap-signer",
        "generic-garbage-collector",
        "horizontal-pod-autoscaler",
        "persistent-volume-binder",
        "pod-garbage-collector",
        "root-ca-cert-publisher",
        "token-cleaner",
        "kube-proxy",
        "coredns",
        "kube-dns",
    };
    size_t n = strlen(name);
    if (strcmp(name, "default") == 0)
        return true;
    if (strcmp(ns, "kube-system") != 0)
        return false;
    if (n > 11 && strcmp(name + n - 11, "-controller") == 0)
        return true;
    for (size_t i = 0; i < ARRAY_SIZE(kube_system); i++)
        if (strcmp(name, kube_system[i]) == 0)
            return true;
    return false;
}

/* When the SA of key (an id) made its last request in an audit log of the run, or NULL. */
static const int64_t *sa_seen_at(const k8s_state *s, uint32_t key)
{
    const uint32_t *i = map_get(&s->sa_seen, key);
    return i ? &s->seen_at[*i] : NULL;
}

static int unused_sas(ferry_audit *a, k8s_state *s)
{
    int r = 0;

    if (!s->seen_pods) {
        json_t *ev = json_pack("{s:b, s:s}", "evaluated", 0, "reason",
                               "no Pod or workload (Deployment, Job, ...) in the inputs");
        r = ev ? audit_emit(a, "K8S-SH-001", FERRY_AUDIT_INFO, CLOUD, cluster_name(s),
                            cluster_name(s), ev, "not-evaluated", s->first_src)
               : -ENOMEM;
        json_decref(ev);
        return r;
    }
    for (size_t i = 0; i < s->n_sas; i++) {
        const k8s_sa *e = &s->sas[i];
        const char *key = str(s, e->key);
        char ns[K8S_MAX_NAME], id[2 * K8S_MAX_NAME];
        const char *slash = strchr(key, '/'), *name = slash + 1;
        bool bound = e->bound;
        (void)snprintf(ns, sizeof(ns), "%.*s", (int)(slash - key), key);
        const int64_t *seen = sa_seen_at(s, e->key);
        if (map_get(&s->pod_sas, e->key) || managed_sa(ns, name))
            continue;
        if (seen && audit_now(a) - *seen <= (int64_t)a->opts.unused_days * DAY)
            continue; /* it made API requests recently (audit log) */
        if (e->has_created && audit_now(a) - e->created < (int64_t)a->opts.grace_days * DAY)
            continue;
        (void)snprintf(id, sizeof(id), "system:serviceaccount:%s:%s", ns, name);
        json_t *ev = json_pack("{s:s, s:s, s:b}", "namespace", ns, "name", name, "bound", bound);
        if (ev && seen && json_object_set_new(ev, "last_request", json_integer(*seen)) < 0) {
            json_decref(ev);
            ev = NULL;
        }
        r = ev ? audit_emit(a, "K8S-SH-001", bound ? FERRY_AUDIT_MEDIUM : FERRY_AUDIT_LOW, CLOUD,
                            cluster_name(s), id, ev, "unused", str(s, e->src))
               : -ENOMEM;
        json_decref(ev);
        if (r < 0)
            return r;
    }
    return 0;
}

static int default_automount(ferry_audit *a, k8s_state *s)
{
    for (size_t i = 0; i < s->n_default_pods; i++) {
        const k8s_pod *p = &s->default_pods[i];
        const char *ns = str(s, p->ns);
        char key[K8S_MAX_NAME], res[K8S_MAX_NAME];
        const char *why = "pod";
        unsigned am = p->am;
        (void)snprintf(key, sizeof(key), "%s/default", ns);
        long si = map_find(s, &s->sa_index, key);
        if (am == AM_UNSET) { /* the pod's setting wins over the SA's */
            am = si >= 0 ? s->sas[si].automount : AM_UNSET;
            why = am != AM_UNSET ? "serviceaccount" : "default";
        }
        if (am == AM_FALSE)
            continue;
        (void)resource_path(res, sizeof(res), str(s, p->plural), ns, str(s, p->name));
        json_t *ev = json_pack("{s:s, s:s, s:s}", "service_account", "default", "automount", "true",
                               "set_by", why);
        int r = ev ? audit_emit(a, "K8S-SH-005", -1, CLOUD, cluster_name(s), res, ev, "automount",
                                str(s, p->src))
                   : -ENOMEM;
        json_decref(ev);
        if (r < 0)
            return r;
    }
    return 0;
}

static bool is_admin_rule(const char *id)
{
    static const char *const admin[] = {"AWS-OP-001", "AWS-OP-002", "GCP-OP-001", "GCP-OP-002",
                                        "AZ-OP-001",  "AZ-OP-003",  "AZ-OP-004"};
    for (size_t i = 0; i < ARRAY_SIZE(admin); i++)
        if (strcmp(id, admin[i]) == 0)
            return true;
    return false;
}

/* The part of an AWS role ARN after "role/" and its last path component. */
static bool aws_role_match(const char *arn, const char *res)
{
    const char *p = strstr(arn, ":role/"), *q = strstr(res, ":role/");
    size_t acct_len = p ? (size_t)(p - arn) : 0;
    if (strcmp(arn, res) == 0)
        return true;
    if (!p || !q || (size_t)(q - res) != acct_len || strncmp(arn, res, acct_len) != 0)
        return false;
    const char *n1 = strrchr(p, '/') + 1, *n2 = strrchr(q, '/') + 1;
    return strcmp(n1, n2) == 0;
}

/* The GCP email or Azure client id appears in the resource as a whole component. */
static bool id_in(const char *hay, const char *id)
{
    size_t n = strlen(id);
    for (const char *p = hay; (p = strcasestr(p, id)) != NULL; p++) {
        bool left = p == hay || strchr("/:='", p[-1]);
        bool right = p[n] == '\0' || strchr("/?:'", p[n]);
        if (left && right)
            return true;
    }
    return false;
}

static bool finding_is_principal(const ferry_audit_finding *f, const char *cloud, const char *id)
{
    if (strcmp(f->cloud, cloud) != 0)
        return false;
    if (strcmp(cloud, "aws") == 0)
        return aws_role_match(id, f->resource);
    if (id_in(f->resource, id))
        return true;
    /* An Azure finding may name the SP by object id and carry the appId in its evidence. */
    return strcmp(cloud, "azure") == 0 && strcasestr(f->evidence, id) != NULL;
}

/* The findings of the other clouds by the principals they name, for X-001: one 12-byte
 * reference per (key, finding), sorted by the key's 64-bit hash and then by finding, so that an
 * annotation's candidates are a binary search away and come in the order of the findings. A
 * hash names a key (collisions only add candidates, which finding_is_principal checks). */
typedef struct key_ref {
    uint64_t h;
    uint32_t finding;
} __attribute__((packed)) key_ref;

typedef struct key_index {
    key_ref *v;
    size_t n, alloc;
} key_index;

static uint64_t key_hash(const char *key)
{
    uint64_t h = UINT64_C(14695981039346656037); /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * UINT64_C(1099511628211);
    return h;
}

static int key_add(key_index *x, const char *key, size_t finding, json_t *ret_keys)
{
    if (!x)
        return json_array_append_new(ret_keys, json_string(key)) < 0 ? -ENOMEM : 0;
    if (finding > UINT32_MAX)
        return -FERRY_ETOOBIG;
    if (x->n == x->alloc) {
        size_t k = x->alloc ? x->alloc * 2 : 1024;
        key_ref *v = realloc(x->v, k * sizeof(*v));
        if (!v)
            return -ENOMEM;
        x->v = v;
        x->alloc = k;
    }
    x->v[x->n++] = (key_ref){.h = key_hash(key), .finding = (uint32_t)finding};
    return 0;
}

static int cmp_key_ref(const void *p, const void *q)
{
    const key_ref *x = p, *y = q;
    if (x->h != y->h)
        return x->h < y->h ? -1 : 1;
    return x->finding < y->finding ? -1 : x->finding > y->finding;
}

/* Index keys of the cloud principals a text names (an AWS role ARN, GCP SA emails, Azure GUIDs),
 * so that each annotation is matched against the findings that may be its principal's instead
 * of against every finding of the run. Candidates are then checked by finding_is_principal.
 * With index, each key is added to it for finding; without, appended to ret_keys. */
static int principal_keys(const char *cloud, const char *text, key_index *index, size_t finding,
                          json_t *ret_keys)
{
    char key[K8S_MAX_NAME];
    size_t n = strlen(text);

    if (strcmp(cloud, "aws") == 0) {
        const char *p = strstr(text, ":role/"), *last = p ? strrchr(p, '/') : NULL;
        if (!p || (size_t)(p - text) > 100 || strlen(last) > 200)
            return 0;
        (void)snprintf(key, sizeof(key), "aws|%.*s|%s", (int)(p - text), text, last + 1);
        return key_add(index, key, finding, ret_keys);
    }
    for (size_t i = 0; i < n;) {
        bool gcp = strcmp(cloud, "gcp") == 0;
        size_t j = i;
        if (gcp)
            while (j < n && !strchr("/:=?'\" ,", text[j]))
                j++;
        else
            while (j < n && (isxdigit((unsigned char)text[j]) || text[j] == '-'))
                j++;
        if ((gcp && j - i < 200 && memchr(text + i, '@', j - i)) || (!gcp && j - i == 36)) {
            int k = snprintf(key, sizeof(key), "%s|%.*s", cloud, (int)(j - i), text + i);
            for (int q = 0; q < k; q++)
                key[q] = (char)tolower((unsigned char)key[q]);
            int r = key_add(index, key, finding, ret_keys);
            if (r < 0)
                return r;
        }
        i = j + 1;
    }
    return 0;
}

static int findings_index(ferry_audit *a, key_index *index)
{
    int r = 0;
    for (size_t i = 0; i < a->n_findings && r == 0; i++) {
        const ferry_audit_finding *f = &a->findings[i];
        if (strcmp(f->cloud, "aws") != 0 && strcmp(f->cloud, "gcp") != 0 &&
            strcmp(f->cloud, "azure") != 0)
            continue;
        r = principal_keys(f->cloud, f->resource, index, i, NULL);
        if (r == 0 && strcmp(f->cloud, "azure") == 0)
            r = principal_keys(f->cloud, f->evidence, index, i, NULL);
    }
    if (r == 0 && index->n)
        qsort(index->v, index->n, sizeof(*index->v), cmp_key_ref);
    return r;
}

/* Subjects of bindings that can run pods, mint tokens or impersonate in namespace ns. */
static int who_can_use(k8s_state *s, const char *ns, json_t *out)
{
    for (size_t i = 0; i < s->n_bindings; i++) {
        const k8s_binding *b = &s->bindings[i];
        binding_view v;
        binding_view_init(s, b, &v);
        if (v.boot || !(v.flags & (F_WORKLOAD | F_TOKEN | F_IMPERSONATE)) ||
            (!v.cluster_scope && strcmp(v.ns, ns) != 0))
            continue;
        for (size_t j = 0; j < b->n_subj; j++) {
            if (json_array_size(out) >= 20)
                return 0;
            json_t *n = subject_name(s, &s->subjects[b->subj + j]);
            if (!n || json_array_append_new(out, n) < 0)
                return -ENOMEM;
        }
    }
    return 0;
}

/* TR-001 and X-001 for one annotation of the SA id in namespace ns. */
static int cloud_link(ferry_audit *a, k8s_state *s, const k8s_sa *sa, const char *ns,
                      const char *id, const char *ann, const char *principal,
                      const key_index *index)
{
    const char *cloud = NULL, *src = str(s, sa->src);
    json_t *found = json_array(), *keys = json_array(), *seen = json_object(), *who = NULL;
    json_t *ev = NULL, *kv;
    int sev = FERRY_AUDIT_LOW, r;
    bool admin = false;
    size_t ki;

    for (size_t i = 0; i < ARRAY_SIZE(sa_links); i++)
        if (strcmp(ann, sa_links[i][0]) == 0)
            cloud = sa_links[i][1];
    r = found && keys && seen && cloud ? principal_keys(cloud, principal, NULL, 0, keys) : -ENOMEM;
    /* Collected before emitting: audit_emit may move a->findings (not reorder them). */
    json_array_foreach(keys, ki, kv)
    {
        uint64_t h = key_hash(json_string_value(kv));
        size_t lo = 0, hi = index->n;
        while (lo < hi) { /* the first reference with hash h */
            size_t mid = lo + (hi - lo) / 2;
            if (index->v[mid].h < h)
                lo = mid + 1;
            else
                hi = mid;
        }
        for (size_t x = lo; x < index->n && index->v[x].h == h; x++) {
            size_t i = index->v[x].finding;
            const ferry_audit_finding *f = &a->findings[i];
            char num[32];
            if (r < 0)
                break;
            (void)snprintf(num, sizeof(num), "%zu", i);
            if (json_object_get(seen, num) || !finding_is_principal(f, cloud, principal))
                continue;
            json_t *o = json_pack("{s:s, s:s, s:s}", "rule_id", f->rule_id, "resource", f->resource,
                                  "severity", ferry_audit_severity_name(f->severity));
            if (!o || json_array_append_new(found, o) < 0 ||
                json_object_set_new(seen, num, json_true()) < 0) {
                r = -ENOMEM;
                break;
            }
            if ((int)f->severity > sev)
                sev = (int)f->severity;
            if (is_admin_rule(f->rule_id))
                admin = true;
        }
    }
    if (r < 0)
        goto out;
    ev = json_pack("{s:s, s:s, s:s, s:O}", "annotation", ann, "cloud", cloud, "principal",
                   principal, "cloud_findings", found);
    r = ev ? audit_emit(a, "K8S-TR-001", sev, CLOUD, cluster_name(s), id, ev, ann, src) : -ENOMEM;
    if (r < 0 || !admin)
        goto out;
    json_decref(ev);
    ev = NULL;
    who = json_array();
    r = who ? who_can_use(s, ns, who) : -ENOMEM;
    if (r < 0)
        goto out;
    ev = json_pack("{s:s, s:s, s:s, s:O, s:O}", "annotation", ann, "cloud", cloud, "principal",
                   principal, "cloud_findings", found, "can_run_as_sa", who);
    r = ev ? audit_emit(a, "X-001", -1, CLOUD, cluster_name(s), id, ev, ann, src) : -ENOMEM;
out:
    json_decref(ev);
    json_decref(who);
    json_decref(found);
    json_decref(keys);
    json_decref(seen);
    return r;
}

static int cloud_links(ferry_audit *a, k8s_state *s)
{
    key_index index = {0};
    bool indexed = false;
    int r = 0;

    for (size_t i = 0; i < s->n_sas; i++) {
        const k8s_sa *e = &s->sas[i];
        const char *key = str(s, e->key), *slash = strchr(key, '/');
        char ns[K8S_MAX_NAME], id[2 * K8S_MAX_NAME];
        (void)snprintf(ns, sizeof(ns), "%.*s", (int)(slash - key), key);
        (void)snprintf(id, sizeof(id), "system:serviceaccount:%s:%s", ns, slash + 1);
        for (size_t k = 0; k < ARRAY_SIZE(e->links); k++) {
            if (!e->links[k])
                continue;
            if (!indexed && (r = findings_index(a, &index)) < 0)
                goto out;
            indexed = true;
            r = cloud_link(a, s, e, ns, id, sa_links[k][0], str(s, e->links[k]), &index);
            if (r < 0)
                goto out;
        }
    }
out:
    free(index.v);
    return r;
}

static int identities(ferry_audit *a, k8s_state *s)
{
    for (size_t i = 0; i < s->n_sas; i++) {
        const k8s_sa *e = &s->sas[i];
        const char *key = str(s, e->key), *slash = strchr(key, '/');
        char ns[K8S_MAX_NAME], id[2 * K8S_MAX_NAME];
        (void)snprintf(ns, sizeof(ns), "%.*s", (int)(slash - key), key);
        (void)snprintf(id, sizeof(id), "system:serviceaccount:%s:%s", ns, slash + 1);
        unsigned flags = AUDIT_ID_FEDERATED;
        if (map_get(&s->token_sas, e->key))
            flags |= AUDIT_ID_STATIC_CRED;
        if (managed_sa(ns, slash + 1))
            flags |= AUDIT_ID_MANAGED;
        const int64_t *seen = sa_seen_at(s, e->key);
        if (seen && audit_now(a) - *seen <= (int64_t)a->opts.unused_days * DAY)
            flags |= AUDIT_ID_USED;
        audit_identity ident = {.cloud = CLOUD,
                                .account = cluster_name(s),
                                .id = id,
                                .flags = flags,
                                .source = str(s, e->src)};
        int r = audit_identity_note(a, &ident);
        if (r < 0)
            return r;
    }
    return 0;
}

static int k8s_finish(ferry_audit *a, char *errbuf, size_t errlen)
{
    k8s_state *s = a->k8s;
    int r;

    if (!s || !s->loaded)
        return 0;
    r = aggregate_roles(s);
    for (size_t i = 0; i < s->n_bindings && r == 0; i++)
        r = binding_rules(a, s, &s->bindings[i]);
    if (r == 0)
        r = unused_sas(a, s);
    if (r == 0)
        r = default_automount(a, s);
    if (r == 0)
        r = cloud_links(a, s);
    if (r == 0)
        r = identities(a, s);
    if (r < 0)
        return ferry_errbuf_set(errbuf, errlen, r, "Kubernetes rules: %s", ferry_strerror(r));
    /* No record can give another finding: the memory goes back before the report is written.
     * (A second finish emits nothing new, as before: every finding was emitted once.) */
    records_free(s);
    return 0;
}

static const audit_loader k8s_loaders[] = {
    {"k8s-json", "kubectl get ... -o json: a List or object with apiVersion and kind",
     detect_k8s_json, NULL, load_k8s_json},
    {"k8s-yaml", "Kubernetes YAML manifests (apiVersion:/kind: at the top level)", NULL,
     detect_k8s_yaml, load_k8s_yaml},
    {"k8s-audit", "the API server's audit log: audit.k8s.io Events (JSON Lines or EventList)",
     detect_k8s_audit, NULL, load_k8s_audit},
};

const audit_cloud audit_cloud_k8s = {
    .name = CLOUD,
    .rules = k8s_rules,
    .n_rules = ARRAY_SIZE(k8s_rules),
    .loaders = k8s_loaders,
    .n_loaders = ARRAY_SIZE(k8s_loaders),
    .finish = k8s_finish,
    .release = k8s_release,
};
