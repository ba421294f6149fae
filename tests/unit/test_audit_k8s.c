/* tests/unit/test_audit_k8s.c - the Kubernetes part of the audit module (src/lib/audit/k8s.c).
 *
 * Every K8S rule and X-001 with a positive and a negative case (inline YAML and JSON), the
 * cross-file decisions (a binding and its role or subject in different inputs), aggregated
 * ClusterRoles, YAML scalars, and hostile YAML refused with FILE:LINE:COL.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

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

/* Audit the texts (name, text, name, text, ..., NULL) as one run; all must load. */
static ferry_audit *audit_files(const char *name, ...)
{
    ferry_audit *a = run_new();
    char err[1024] = "";
    va_list ap;
    va_start(ap, name);
    for (const char *n = name; n; n = va_arg(ap, const char *)) {
        const char *text = va_arg(ap, const char *);
        int r = ferry_audit_add_input(a, n, text, strlen(text), NULL, err, sizeof(err));
        cr_assert_eq(r, 0, "%s: %s", n, err);
    }
    va_end(ap);
    cr_assert_eq(ferry_audit_finish(a, err, sizeof(err)), 0, "%s", err);
    return a;
}

static ferry_audit *audit_yaml(const char *text)
{
    return audit_files("in.yaml", text, NULL);
}

/* Findings of rule (on resource when not NULL); the severity of the last one in *ret_sev. */
static size_t count(ferry_audit *a, const char *rule, const char *resource, int *ret_sev)
{
    const ferry_audit_finding *fs;
    size_t n = ferry_audit_findings(a, &fs), k = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(fs[i].rule_id, rule) == 0 &&
            (!resource || strcmp(fs[i].resource, resource) == 0)) {
            k++;
            if (ret_sev)
                *ret_sev = (int)fs[i].severity;
        }
    return k;
}

static const ferry_audit_finding *get(ferry_audit *a, const char *rule, const char *resource)
{
    const ferry_audit_finding *fs;
    size_t n = ferry_audit_findings(a, &fs);
    for (size_t i = 0; i < n; i++)
        if (strcmp(fs[i].rule_id, rule) == 0 && strcmp(fs[i].resource, resource) == 0)
            return &fs[i];
    return NULL;
}

#define expect(a, rule, res, sev)                                                                  \
    do {                                                                                           \
        int s_ = -1;                                                                               \
        cr_assert_eq(count(a, rule, res, &s_), 1, "%s on %s", rule, res);                          \
        cr_assert_eq(s_, sev, "%s on %s: severity %d", rule, res, s_);                             \
    } while (0)
#define expect_none(a, rule) cr_assert_eq(count(a, rule, NULL, NULL), 0, "%s fired", rule)
#define expect_none_on(a, rule, res)                                                               \
    cr_assert_eq(count(a, rule, res, NULL), 0, "%s fired on %s", rule, res)

/* Load text expecting a failure; the message in err. */
static int fail_load(const char *name, const char *text, size_t len, char *err, size_t errlen)
{
    ferry_audit *a = run_new();
    int r = ferry_audit_add_input(a, name, text, len, NULL, err, errlen);
    ferry_audit_free(a);
    return r;
}

#define CRB(name, role, subjects)                                                                  \
    "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  "       \
    "name: " name                                                                                  \
    "\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: " role        \
    "\nsubjects:\n" subjects
#define RB(ns, name, kind, role, subjects)                                                         \
    "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: " name   \
    "\n  namespace: " ns "\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: " kind        \
    "\n  name: " role "\nsubjects:\n" subjects
#define CR(name, rules)                                                                            \
    "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: " name   \
    "\nrules:\n" rules
#define SA_SUBJ(ns, name) "- kind: ServiceAccount\n  name: " name "\n  namespace: " ns "\n"
#define SA(ns, name)                                                                               \
    "---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: " name "\n  namespace: " ns "\n"

/* ---- OP rules ----------------------------------------------------------------------------- */

Test(k8s, op001_cluster_admin)
{
    ferry_audit *a = audit_yaml(CRB("ci-admin", "cluster-admin", SA_SUBJ("tools", "ci")));
    expect(a, "K8S-OP-001", "clusterrolebindings/ci-admin", FERRY_AUDIT_CRITICAL);
    const ferry_audit_finding *f = get(a, "K8S-OP-001", "clusterrolebindings/ci-admin");
    cr_assert(strstr(f->evidence, "\"system:serviceaccount:tools:ci\""), "%s", f->evidence);
    cr_assert_str_eq(f->account, "cluster");
    cr_assert_str_eq(f->cloud, "k8s");
    expect_none(a, "K8S-OP-003"); /* not repeated under cluster-admin */
    ferry_audit_free(a);

    /* The bootstrap binding to system:masters, and cluster-admin given in one namespace. */
    a = audit_yaml(
        CRB("cluster-admin", "cluster-admin", "- kind: Group\n  name: system:masters\n")
            RB("apps", "ns-admin", "ClusterRole", "cluster-admin", "- kind: User\n  name: bob\n"));
    expect_none(a, "K8S-OP-001");
    ferry_audit_free(a);
}

Test(k8s, op001_masters_with_another_subject_is_not_default)
{
    ferry_audit *a = audit_yaml(CRB("cluster-admin", "cluster-admin",
                                    "- kind: Group\n  name: system:masters\n"
                                    "- kind: User\n  name: mallory\n"));
    const ferry_audit_finding *f = get(a, "K8S-OP-001", "clusterrolebindings/cluster-admin");
    cr_assert(f);
    cr_assert(strstr(f->evidence, "user:mallory") && !strstr(f->evidence, "system:masters"), "%s",
              f->evidence);
    ferry_audit_free(a);
}

Test(k8s, op002_wildcard)
{
    ferry_audit *a =
        audit_yaml(CR("deployer", "- apiGroups: [\"apps\"]\n  resources: [\"*\"]\n"
                                  "  verbs: [\"*\"]\n") CR("all-groups", "- apiGroups: [\"*\"]\n"
                                                                         "  resources: [pods]\n"
                                                                         "  verbs: [\"*\"]\n"));
    expect(a, "K8S-OP-002", "clusterroles/deployer", FERRY_AUDIT_HIGH);
    expect(a, "K8S-OP-002", "clusterroles/all-groups", FERRY_AUDIT_HIGH);
    ferry_audit_free(a);

    /* Every resource but not every verb; the bootstrap cluster-admin. */
    a = audit_yaml(CR(
        "reader",
        "- apiGroups: [\"*\"]\n  resources: [\"*\"]\n  verbs: [get]\n") "---\nkind: "
                                                                        "ClusterRole\napiVersion: "
                                                                        "rbac.authorization.k8s.io/"
                                                                        "v1\n"
                                                                        "metadata:\n  name: "
                                                                        "cluster-admin\n  labels:\n"
                                                                        "    "
                                                                        "kubernetes.io/"
                                                                        "bootstrapping: "
                                                                        "rbac-defaults\n"
                                                                        "rules:\n- apiGroups: "
                                                                        "['*']\n  resources: "
                                                                        "['*']\n  verbs: ['*']\n");
    expect_none(a, "K8S-OP-002");
    ferry_audit_free(a);
}

Test(k8s, op003_escalation_verbs)
{
    ferry_audit *a = audit_yaml(
        CR("binder", "- apiGroups: [rbac.authorization.k8s.io]\n  resources: [clusterroles]\n"
                     "  verbs: [bind]\n")
            CR("imp", "- apiGroups: ['']\n  resources: [serviceaccounts]\n  verbs: [impersonate]\n")
                RB("ci", "b1", "ClusterRole", "binder", SA_SUBJ("ci", "x"))
                    RB("ci", "b2", "ClusterRole", "imp", "- kind: User\n  name: eve\n"));
    expect(a, "K8S-OP-003", "namespaces/ci/rolebindings/b1", FERRY_AUDIT_CRITICAL);
    expect(a, "K8S-OP-003", "namespaces/ci/rolebindings/b2", FERRY_AUDIT_CRITICAL);
    ferry_audit_free(a);

    /* create rolebindings without bind/escalate is held in check by the API server. */
    a = audit_yaml(CR("rb-writer", "- apiGroups: [rbac.authorization.k8s.io]\n"
                                   "  resources: [rolebindings]\n  verbs: [create, update]\n")
                       RB("ci", "b1", "ClusterRole", "rb-writer", SA_SUBJ("ci", "x")));
    expect_none(a, "K8S-OP-003");
    ferry_audit_free(a);
}

#define SECRETS "- apiGroups: ['']\n  resources: [secrets]\n  verbs: [get, list]\n"

Test(k8s, op004_secrets_and_tokens)
{
    ferry_audit *a = audit_yaml(
        CR("sr", SECRETS) CR("tok", "- apiGroups: ['']\n  resources: [serviceaccounts/token]\n"
                                    "  verbs: [create]\n")
            RB("kube-system", "ks", "ClusterRole", "sr", SA_SUBJ("kube-system", "x"))
                RB("apps", "ns", "ClusterRole", "sr", SA_SUBJ("apps", "x"))
                    CRB("cw", "sr", SA_SUBJ("apps", "x"))
                        RB("apps", "t", "ClusterRole", "tok", SA_SUBJ("apps", "x")));
    expect(a, "K8S-OP-004", "namespaces/kube-system/rolebindings/ks", FERRY_AUDIT_CRITICAL);
    expect(a, "K8S-OP-004", "clusterrolebindings/cw", FERRY_AUDIT_CRITICAL);
    expect(a, "K8S-OP-004", "namespaces/apps/rolebindings/ns", FERRY_AUDIT_HIGH);
    expect(a, "K8S-OP-004", "namespaces/apps/rolebindings/t", FERRY_AUDIT_HIGH);
    ferry_audit_free(a);

    /* One named secret; configmaps. */
    a = audit_yaml(CR("one", "- apiGroups: ['']\n  resources: [secrets]\n"
                             "  resourceNames: [tls-cert]\n  verbs: [get]\n")
                       CR("cm", "- apiGroups: ['']\n  resources: [configmaps]\n  verbs: [get]\n")
                           CRB("b1", "one", SA_SUBJ("a", "x")) CRB("b2", "cm", SA_SUBJ("a", "x")));
    expect_none(a, "K8S-OP-004");
    ferry_audit_free(a);
}

#define PODS "- apiGroups: ['']\n  resources: [pods]\n  verbs: [create]\n"

Test(k8s, op005_workloads_in_kube_system)
{
    ferry_audit *a =
        audit_yaml(CR("pc", PODS) CR("dep", "- apiGroups: [apps]\n  resources: [deployments]\n"
                                            "  verbs: [patch]\n")
                       RB("kube-system", "p", "ClusterRole", "pc", "- kind: User\n  name: u\n")
                           CRB("d", "dep", "- kind: Group\n  name: devs\n"));
    expect(a, "K8S-OP-005", "namespaces/kube-system/rolebindings/p", FERRY_AUDIT_HIGH);
    expect(a, "K8S-OP-005", "clusterrolebindings/d", FERRY_AUDIT_HIGH);
    ferry_audit_free(a);

    a = audit_yaml(CR("pc", PODS)
                       RB("apps", "p", "ClusterRole", "pc", "- kind: User\n  name: u\n"));
    expect_none(a, "K8S-OP-005");
    ferry_audit_free(a);
}

Test(k8s, op006_nodes_csr_webhooks)
{
    ferry_audit *a = audit_yaml(
        CR("np", "- apiGroups: ['']\n  resources: [nodes/proxy]\n  verbs: [get]\n")
            CR("csr", "- apiGroups: [certificates.k8s.io]\n"
                      "  resources: [certificatesigningrequests/approval]\n  verbs: [update]\n")
                CR("wh", "- apiGroups: [admissionregistration.k8s.io]\n"
                         "  resources: [mutatingwebhookconfigurations]\n  verbs: [patch]\n")
                    CRB("b1", "np", "- kind: User\n  name: u\n")
                        CRB("b2", "csr", "- kind: User\n  name: u\n")
                            CRB("b3", "wh", "- kind: User\n  name: u\n"));
    expect(a, "K8S-OP-006", "clusterrolebindings/b1", FERRY_AUDIT_HIGH);
    expect(a, "K8S-OP-006", "clusterrolebindings/b2", FERRY_AUDIT_HIGH);
    expect(a, "K8S-OP-006", "clusterrolebindings/b3", FERRY_AUDIT_HIGH);
    ferry_audit_free(a);

    /* Cluster-scoped resources through a RoleBinding grant nothing; nodes without proxy. */
    a = audit_yaml(CR("np", "- apiGroups: ['']\n  resources: [nodes/proxy]\n  verbs: [get]\n")
                       CR("n", "- apiGroups: ['']\n  resources: [nodes]\n  verbs: [get, list]\n")
                           RB("x", "b1", "ClusterRole", "np", "- kind: User\n  name: u\n")
                               CRB("b2", "n", "- kind: User\n  name: u\n"));
    expect_none(a, "K8S-OP-006");
    ferry_audit_free(a);
}

Test(k8s, op007_broad_groups)
{
    ferry_audit *a = audit_yaml(
        CRB("anon-view", "view", "- kind: Group\n  name: system:unauthenticated\n")
            RB("x", "anon", "ClusterRole", "edit", "- kind: User\n  name: system:anonymous\n"));
    expect(a, "K8S-OP-007", "clusterrolebindings/anon-view", FERRY_AUDIT_CRITICAL);
    expect(a, "K8S-OP-007", "namespaces/x/rolebindings/anon", FERRY_AUDIT_CRITICAL);
    ferry_audit_free(a);

    /* The bootstrap defaults, as the API server writes them. */
    a = audit_yaml(CRB("system:public-info-viewer", "system:public-info-viewer",
                       "- kind: Group\n  name: system:authenticated\n"
                       "- kind: Group\n  name: system:unauthenticated\n")
                       CRB("system:discovery", "system:discovery",
                           "- kind: Group\n  name: system:authenticated\n"));
    expect_none(a, "K8S-OP-007");
    ferry_audit_free(a);
}

#define CM_WRITE "- apiGroups: ['']\n  resources: [configmaps]\n  verbs: [update, patch]\n"
#define IRSA_SA                                                                                    \
    "---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: app\n  namespace: apps\n"       \
    "  annotations:\n    eks.amazonaws.com/role-arn: arn:aws:iam::111122223333:role/app\n"

Test(k8s, op008_aws_auth)
{
    ferry_audit *a = audit_files("sa.yaml", IRSA_SA, "rbac.yaml",
                                 CR("cmw", CM_WRITE) RB("kube-system", "cm", "ClusterRole", "cmw",
                                                        "- kind: User\n  name: u\n"),
                                 NULL);
    expect(a, "K8S-OP-008", "namespaces/kube-system/rolebindings/cm", FERRY_AUDIT_CRITICAL);
    ferry_audit_free(a);

    /* Not EKS (no IRSA, no aws-auth); EKS but in another namespace. */
    a = audit_yaml(CR("cmw", CM_WRITE)
                       RB("kube-system", "cm", "ClusterRole", "cmw", "- kind: User\n  name: u\n"));
    expect_none(a, "K8S-OP-008");
    ferry_audit_free(a);
    a = audit_yaml(IRSA_SA CR("cmw", CM_WRITE)
                       RB("apps", "cm", "ClusterRole", "cmw", "- kind: User\n  name: u\n"));
    expect_none(a, "K8S-OP-008");
    ferry_audit_free(a);
}

/* ---- SH rules ----------------------------------------------------------------------------- */

#define POD(ns, name, sa)                                                                          \
    "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: " name "\n  namespace: " ns                \
    "\nspec:\n  serviceAccountName: " sa "\n  containers: [{name: c, image: i}]\n"

Test(k8s, sh001_unused_sa)
{
    ferry_audit *a = audit_files(
        "sas.yaml",
        SA("apps", "idle") SA("apps", "bound-idle") SA("apps", "used") SA("apps", "default")
            SA("apps", "tmpl") SA("kube-system", "job-controller"),
        "rb.yaml", RB("apps", "b", "ClusterRole", "view", SA_SUBJ("apps", "bound-idle")),
        "pods.yaml",
        POD("apps", "p",
            "used") "---\napiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: cj\n"
                    "  namespace: apps\nspec:\n  jobTemplate:\n    spec:\n      template:\n"
                    "        spec:\n          serviceAccountName: tmpl\n",
        NULL);
    expect(a, "K8S-SH-001", "system:serviceaccount:apps:idle", FERRY_AUDIT_LOW);
    expect(a, "K8S-SH-001", "system:serviceaccount:apps:bound-idle", FERRY_AUDIT_MEDIUM);
    cr_assert_eq(count(a, "K8S-SH-001", NULL, NULL), 2);
    ferry_audit_free(a);

    /* Younger than the grace period. */
    a = audit_yaml("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: new\n  namespace: a\n"
                   "  creationTimestamp: \"2026-09-20T00:00:00Z\"\n" POD("a", "p", "other"));
    expect_none(a, "K8S-SH-001");
    ferry_audit_free(a);

    /* Without pods: one info note per cluster, nothing else. */
    a = audit_yaml(SA("apps", "idle"));
    expect(a, "K8S-SH-001", "cluster", FERRY_AUDIT_INFO);
    ferry_audit_free(a);
}

Test(k8s, sh002_missing_subject)
{
    /* The binding and the SAs in different inputs. */
    ferry_audit *a = audit_files(
        "rb.yaml",
        RB("apps", "b", "ClusterRole", "view", SA_SUBJ("apps", "gone") SA_SUBJ("apps", "here")),
        "sa.yaml", SA("apps", "here"), NULL);
    expect(a, "K8S-SH-002", "namespaces/apps/rolebindings/b", FERRY_AUDIT_MEDIUM);
    const ferry_audit_finding *f = get(a, "K8S-SH-002", "namespaces/apps/rolebindings/b");
    cr_assert(strstr(f->evidence, "system:serviceaccount:apps:gone"), "%s", f->evidence);
    ferry_audit_free(a);

    /* Without any ServiceAccount or Namespace in the inputs it is not evaluated. */
    a = audit_yaml(RB("apps", "b", "ClusterRole", "view", SA_SUBJ("apps", "gone")));
    expect_none(a, "K8S-SH-002");
    ferry_audit_free(a);
}

Test(k8s, sh003_dangling_roleref)
{
    ferry_audit *a = audit_files("crb.yaml", CRB("b", "nope", "- kind: User\n  name: u\n"),
                                 "cr.yaml", CR("other", PODS), NULL);
    expect(a, "K8S-SH-003", "clusterrolebindings/b", FERRY_AUDIT_LOW);
    ferry_audit_free(a);

    /* The role in another input; a bootstrap role; no roles in the inputs at all. */
    a = audit_files("crb.yaml",
                    CRB("b", "pc", "- kind: User\n  name: u\n")
                        CRB("e", "edit", "- kind: User\n  name: u\n"),
                    "cr.yaml", CR("pc", PODS), NULL);
    expect_none(a, "K8S-SH-003");
    ferry_audit_free(a);
    a = audit_yaml(CRB("b", "nope", "- kind: User\n  name: u\n"));
    expect_none(a, "K8S-SH-003");
    ferry_audit_free(a);
}

#define TOKEN(name, labels)                                                                        \
    "---\napiVersion: v1\nkind: Secret\ntype: kubernetes.io/service-account-token\nmetadata:\n"    \
    "  name: " name "\n  namespace: apps\n  annotations:\n"                                        \
    "    kubernetes.io/service-account.name: app\n" labels "data:\n  token: c2VjcmV0\n"

Test(k8s, sh004_legacy_tokens)
{
    ferry_audit *a = audit_yaml(
        TOKEN("recent", "  labels:\n    kubernetes.io/legacy-token-last-used: \"2026-09-01\"\n")
            TOKEN("stale", "  labels:\n    kubernetes.io/legacy-token-last-used: \"2025-01-01\"\n")
                TOKEN("never", ""));
    expect(a, "K8S-SH-004", "namespaces/apps/secrets/recent", FERRY_AUDIT_MEDIUM);
    expect(a, "K8S-SH-004", "namespaces/apps/secrets/stale", FERRY_AUDIT_HIGH);
    expect(a, "K8S-SH-004", "namespaces/apps/secrets/never", FERRY_AUDIT_HIGH);
    /* The token never reaches a finding. */
    const ferry_audit_finding *f = get(a, "K8S-SH-004", "namespaces/apps/secrets/never");
    cr_assert(!strstr(f->evidence, "c2VjcmV0"));
    ferry_audit_free(a);

    a = audit_yaml("apiVersion: v1\nkind: Secret\ntype: Opaque\nmetadata:\n  name: s\n"
                   "  namespace: apps\ndata:\n  k: djE=\n");
    expect_none(a, "K8S-SH-004");
    ferry_audit_free(a);
}

Test(k8s, sh005_default_sa)
{
    ferry_audit *a = audit_yaml(RB("apps", "b", "ClusterRole", "view", SA_SUBJ("apps", "default"))
                                    POD("apps", "web", "default"));
    expect(a, "K8S-SH-005", "namespaces/apps/rolebindings/b", FERRY_AUDIT_MEDIUM);
    expect(a, "K8S-SH-005", "namespaces/apps/pods/web", FERRY_AUDIT_MEDIUM);
    ferry_audit_free(a);

    /* automount off on the pod, or on the default SA (in another input), is fine; a quoted
     * "false" is a string, not a boolean, so it does not turn automount off (p3). */
    a = audit_files(
        "pods.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p1, namespace: a}\n"
        "spec: {automountServiceAccountToken: false, containers: []}\n"
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p2, namespace: b}\n"
        "spec: {containers: []}\n"
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p3, namespace: c}\n"
        "spec: {automountServiceAccountToken: \"false\", containers: []}\n",
        "sa.yaml",
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: default, namespace: b}\n"
        "automountServiceAccountToken: false\n",
        NULL);
    cr_assert_eq(count(a, "K8S-SH-005", NULL, NULL), 1);
    expect(a, "K8S-SH-005", "namespaces/c/pods/p3", FERRY_AUDIT_MEDIUM);
    ferry_audit_free(a);
}

/* ---- TR-001, X-001 ------------------------------------------------------------------------ */

static const char AWS_ADMIN[] =
    "{\"RoleDetailList\": [{\"RoleName\": \"app\", \"RoleId\": \"AROA1\", \"Path\": \"/eks/\","
    " \"Arn\": \"arn:aws:iam::111122223333:role/eks/app\", \"CreateDate\": "
    "\"2020-01-01T00:00:00Z\","
    " \"RoleLastUsed\": {\"LastUsedDate\": \"2026-09-20T00:00:00Z\"},"
    " \"AssumeRolePolicyDocument\": {\"Statement\": []}, \"RolePolicyList\": [{\"PolicyName\": "
    "\"p\","
    " \"PolicyDocument\": {\"Statement\": [{\"Effect\": \"Allow\", \"Action\": \"%s\", "
    "\"Resource\": \"*\"}]}}]}]}";

Test(k8s, tr001_x001_chain)
{
    char aws[1024];
    (void)snprintf(aws, sizeof(aws), AWS_ADMIN, "*");
    /* The K8s input first: the chain is decided when the run ends, whatever the order. The
     * annotation names the role without its path. */
    ferry_audit *a = audit_files("sa.yaml",
                                 IRSA_SA CR("pc", PODS) RB("apps", "devs", "ClusterRole", "pc",
                                                           "- kind: Group\n  name: devs\n"),
                                 "aws.json", aws, NULL);
    expect(a, "X-001", "system:serviceaccount:apps:app", FERRY_AUDIT_CRITICAL);
    expect(a, "K8S-TR-001", "system:serviceaccount:apps:app", FERRY_AUDIT_CRITICAL);
    const ferry_audit_finding *f = get(a, "X-001", "system:serviceaccount:apps:app");
    cr_assert(strstr(f->evidence, "AWS-OP-001") && strstr(f->evidence, "group:devs"), "%s",
              f->evidence);
    ferry_audit_free(a);

    /* A role that is not admin: TR-001 low, no X-001. */
    (void)snprintf(aws, sizeof(aws), AWS_ADMIN, "s3:ListBucket");
    a = audit_files("sa.yaml", IRSA_SA, "aws.json", aws, NULL);
    expect(a, "K8S-TR-001", "system:serviceaccount:apps:app", FERRY_AUDIT_LOW);
    f = get(a, "K8S-TR-001", "system:serviceaccount:apps:app");
    cr_assert(strstr(f->evidence, "arn:aws:iam::111122223333:role/app"), "%s", f->evidence);
    expect_none(a, "X-001");
    ferry_audit_free(a);

    /* No annotation: neither. */
    a = audit_yaml(SA("apps", "plain"));
    expect_none(a, "K8S-TR-001");
    expect_none(a, "X-001");
    ferry_audit_free(a);
}

Test(k8s, gke_and_azure_annotations)
{
    ferry_audit *a = audit_yaml(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: g\n  namespace: n\n"
        "  annotations:\n    iam.gke.io/gcp-service-account: x@p.iam.gserviceaccount.com\n"
        "---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: z\n  namespace: n\n"
        "  annotations:\n    azure.workload.identity/client-id: "
        "11111111-2222-3333-4444-555555555555\n");
    expect(a, "K8S-TR-001", "system:serviceaccount:n:g", FERRY_AUDIT_LOW);
    expect(a, "K8S-TR-001", "system:serviceaccount:n:z", FERRY_AUDIT_LOW);
    ferry_audit_free(a);
}

/* ---- audit.k8s.io Events ------------------------------------------------------------------ */

#define EVENT(user, ts)                                                                            \
    "{\"kind\": \"Event\", \"apiVersion\": \"audit.k8s.io/v1\", \"auditID\": \"x\", "              \
    "\"verb\": \"get\", \"user\": {\"username\": \"" user "\"}, \"stageTimestamp\": \"" ts "\"}\n"

Test(k8s, audit_log_counts_sa_use)
{
    ferry_audit *a = audit_files(
        "sa.yaml", SA("ci", "recent") SA("ci", "stale") SA("ci", "never") POD("ci", "p", "other"),
        "audit.jsonl",
        EVENT("system:serviceaccount:ci:recent", "2026-09-20T10:00:00.123456Z")
            EVENT("system:serviceaccount:ci:stale", "2026-01-01T00:00:00Z")
                EVENT("admin", "2026-09-20T10:00:00Z"),
        NULL);
    expect_none_on(a, "K8S-SH-001", "system:serviceaccount:ci:recent");
    expect(a, "K8S-SH-001", "system:serviceaccount:ci:stale", FERRY_AUDIT_LOW);
    expect(a, "K8S-SH-001", "system:serviceaccount:ci:never", FERRY_AUDIT_LOW);
    cr_assert(strstr(get(a, "K8S-SH-001", "system:serviceaccount:ci:stale")->evidence,
                     "\"last_request\":1767225600"));
    ferry_audit_free(a);

    /* A line that is not an Event, located. */
    char err[512] = "";
    const char *bad = EVENT("admin", "2026-09-20T10:00:00Z") "{\"kind\": \"Pod\"}\n";
    cr_assert_eq(fail_load("a.jsonl", bad, strlen(bad), err, sizeof(err)), -FERRY_EMALFORMED);
    cr_assert(strstr(err, "a.jsonl:2: [1]: Pod: expected an audit.k8s.io Event"), "%s", err);
}

/* ---- loaders ------------------------------------------------------------------------------ */

Test(k8s, cluster_name_and_aggregation)
{
    ferry_audit *a = run_new();
    char err[512];
    const char *text =
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: agg}\n"
        "aggregationRule:\n  clusterRoleSelectors:\n  - matchLabels: {agg/to: \"true\"}\n"
        "rules: []\n"
        "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n"
        "metadata: {name: part, labels: {agg/to: true}}\nrules:\n" SECRETS CRB(
            "b", "agg", "- kind: User\n  name: u\n");
    cr_assert_eq(ferry_audit_k8s_set_cluster(a, "prod eu"), -EINVAL);
    cr_assert_eq(ferry_audit_k8s_set_cluster(a, "prod-eu"), 0);
    cr_assert_eq(ferry_audit_add_input(a, "m.yaml", text, strlen(text), NULL, err, sizeof(err)), 0,
                 "%s", err);
    cr_assert_eq(ferry_audit_finish(a, err, sizeof(err)), 0);
    expect(a, "K8S-OP-004", "clusterrolebindings/b", FERRY_AUDIT_CRITICAL);
    cr_assert_str_eq(get(a, "K8S-OP-004", "clusterrolebindings/b")->account, "prod-eu");
    ferry_audit_free(a);
}

Test(k8s, json_list_and_yaml_agree)
{
    const char *json = "{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": ["
                       "{\"apiVersion\": \"rbac.authorization.k8s.io/v1\", \"kind\": "
                       "\"ClusterRoleBinding\", \"metadata\": {\"name\": \"x\"}, \"roleRef\": "
                       "{\"kind\": \"ClusterRole\", \"name\": \"cluster-admin\"}, \"subjects\": "
                       "[{\"kind\": \"User\", \"name\": \"u\"}]}]}";
    const char *yaml =
        "apiVersion: v1\nkind: ClusterRoleBindingList\nitems:\n"
        "- apiVersion: rbac.authorization.k8s.io/v1\n  kind: ClusterRoleBinding\n"
        "  metadata: {name: x}\n  roleRef: {kind: ClusterRole, name: cluster-admin}\n"
        "  subjects: [{kind: User, name: u}]\n";
    ferry_audit *a = audit_files("l.json", json, NULL), *b = audit_files("l.yaml", yaml, NULL);
    const ferry_audit_finding *fa = get(a, "K8S-OP-001", "clusterrolebindings/x");
    const ferry_audit_finding *fb = get(b, "K8S-OP-001", "clusterrolebindings/x");
    cr_assert(fa && fb);
    cr_assert_str_eq(fa->fingerprint, fb->fingerprint);
    ferry_audit_free(a);
    ferry_audit_free(b);
}

static void expect_refused(const char *name, const char *text, size_t len, int code,
                           const char *where, const char *what)
{
    char err[1024] = "";
    int r = fail_load(name, text, len == SIZE_MAX ? strlen(text) : len, err, sizeof(err));
    cr_assert_eq(r, code, "%s: %d (%s)", name, r, err);
    cr_assert(strncmp(err, where, strlen(where)) == 0, "%s: '%s' does not start with '%s'", name,
              err, where);
    cr_assert(strstr(err, what), "%s: '%s' lacks '%s'", name, err, what);
}

Test(k8s, hostile_yaml)
{
    /* Billion laughs: the first alias is refused, before any expansion. */
    expect_refused("bomb.yaml",
                   "apiVersion: v1\nkind: ConfigMap\na: &a [\"x\",\"x\",\"x\",\"x\"]\n"
                   "b: &b [*a,*a,*a,*a]\nc: [*b,*b,*b,*b]\n",
                   SIZE_MAX, -FERRY_EUNSUPPORTED, "bomb.yaml:4:", "aliases");
    /* Merge keys need aliases too. */
    expect_refused("merge.yaml", "kind: Pod\napiVersion: v1\nbase: &b {x: 1}\nm:\n  <<: *b\n",
                   SIZE_MAX, -FERRY_EUNSUPPORTED, "merge.yaml:5:", "aliases");

    /* 100 levels of nesting. */
    char deep[512] = "kind: Pod\napiVersion: v1\nx: ";
    memset(deep + strlen(deep), '[', 100); /* the rest of deep is zero */
    expect_refused("deep.yaml", deep, SIZE_MAX, -FERRY_ETOOBIG, "deep.yaml:3:", "nested deeper");

    /* A 3 MiB scalar. */
    size_t big = 3 * 1024 * 1024;
    char *huge = malloc(big + 64);
    cr_assert(huge);
    int n = snprintf(huge, 64, "kind: Pod\napiVersion: v1\nx: ");
    memset(huge + n, 'A', big);
    huge[n + big] = '\0';
    expect_refused("huge.yaml", huge, SIZE_MAX, -FERRY_ETOOBIG, "huge.yaml:3:4:", "limit");
    free(huge);

    /* Tags other than the plain YAML ones. */
    expect_refused("tag.yaml", "kind: Secret\napiVersion: v1\ndata: !!binary aGVsbG8=\n", SIZE_MAX,
                   -FERRY_EUNSUPPORTED, "tag.yaml:3:7:", "tag");
    expect_refused("tag2.yaml", "kind: Pod\napiVersion: v1\nspec: !custom {a: 1}\n", SIZE_MAX,
                   -FERRY_EUNSUPPORTED, "tag2.yaml:3:7:", "tag");
    expect_refused("tag3.yaml", "kind: Pod\napiVersion: v1\nn: !!int abc\n", SIZE_MAX,
                   -FERRY_EMALFORMED, "tag3.yaml:3:4:", "tag");

    /* Truncated documents. */
    expect_refused("trunc.yaml",
                   "apiVersion: v1\nkind: List\nitems:\n- kind: Role\n  rules: [{verbs: [get",
                   SIZE_MAX, -FERRY_EMALFORMED, "trunc.yaml:6:1: malformed YAML", "(from line 5)");
    expect_refused("trunc2.yaml", "kind: Pod\napiVersion: v1\nname: \"unterminated\n", SIZE_MAX,
                   -FERRY_EMALFORMED, "trunc2.yaml:", "malformed YAML");

    /* Duplicate keys, complex keys, a document that is not a mapping. */
    expect_refused("dup.yaml", "kind: Pod\napiVersion: v1\nkind: Role\n", SIZE_MAX,
                   -FERRY_EMALFORMED, "dup.yaml:3:1:", "duplicate key 'kind'");
    expect_refused("ckey.yaml", "kind: Pod\napiVersion: v1\n? [a]\n: b\n", SIZE_MAX,
                   -FERRY_EUNSUPPORTED, "ckey.yaml:3:", "key");
    expect_refused("seq.yaml", "kind: Namespace\napiVersion: v1\n---\n- a\n- b\n", SIZE_MAX,
                   -FERRY_EMALFORMED, "seq.yaml:4:1:", "document 2");
    /* A NUL character inside a scalar (through an escape). */
    expect_refused("nul.yaml", "kind: Pod\napiVersion: v1\nx: \"a\\0b\"\n", SIZE_MAX,
                   -FERRY_EMALFORMED, "nul.yaml:3:4:", "NUL");
}

Test(k8s, wrong_shapes_are_located)
{
    /* YAML: the position of the resource, its place in the file and what was expected. */
    expect_refused("rb.yaml",
                   "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n"
                   "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n"
                   "metadata: {name: b, namespace: a}\nroleRef: {kind: Role, name: r}\n"
                   "subjects: {kind: User}\n",
                   SIZE_MAX, -FERRY_EMALFORMED,
                   "rb.yaml:5:1: document 2: RoleBinding b:", "subjects: expected a list");
    expect_refused(
        "list.yaml",
        "apiVersion: v1\nkind: List\nitems:\n- kind: ServiceAccount\n  apiVersion: v1\n"
        "  metadata: {name: a}\n- kind: ClusterRole\n  metadata: {name: c}\n"
        "  rules: [{verbs: [get], resources: [pods, 7]}]\n",
        SIZE_MAX, -FERRY_EMALFORMED,
        "list.yaml:7:3: document 1: items[1]: ClusterRole c:", "resources[1]: expected a string");
    /* JSON: the line of the bad member. */
    expect_refused("l.json",
                   "{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [\n"
                   "{\"kind\": \"ServiceAccount\", \"metadata\": {\"name\": \"a\"}},\n"
                   "{\"kind\": \"ClusterRoleBinding\", \"metadata\": {\"name\": \"b\"},\n"
                   " \"roleRef\": {\"kind\": \"Role\", \"name\": \"r\"}}]}\n",
                   SIZE_MAX, -FERRY_EMALFORMED, "l.json:4: items[1]: ClusterRoleBinding b:",
                   "expected roleRef with kind ClusterRole");
    expect_refused("n.json", "{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {}}",
                   SIZE_MAX, -FERRY_EMALFORMED, "n.json:", "metadata.name");
}

/* fail_load with len SIZE_MAX measures the text. */
static int fail_load_len(const char *name, const char *text, char *err, size_t errlen)
{
    return fail_load(name, text, strlen(text), err, errlen);
}

Test(k8s, yaml_scalars_and_detection)
{
    char err[256];
    /* Not a Kubernetes manifest: not recognised. */
    cr_assert_eq(fail_load_len("x.yaml", "rule: AWS-OP-001\nreason: ok\n", err, sizeof(err)),
                 -FERRY_EUNSUPPORTED, "%s", err);
    /* Explicit !!str and plain values of every type load. */
    ferry_audit *a = audit_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
                                "data: {a: !!str 1, b: 0x1f, c: 1.5e3, d: ~, e: yes, f: .5}\n");
    cr_assert_eq(count(a, "K8S-SH-001", "cluster", NULL), 1);
    ferry_audit_free(a);
    /* A buffer without a terminating NUL that ends in "---" (found by fuzz_audit_inputs: the
     * detection read past the end under ASan). */
    const char tail[] = "a: 1\n---";
    char *exact = malloc(sizeof(tail) - 1);
    cr_assert(exact);
    memcpy(exact, tail, sizeof(tail) - 1);
    cr_assert_eq(fail_load("t.yaml", exact, sizeof(tail) - 1, err, sizeof(err)),
                 -FERRY_EUNSUPPORTED);
    free(exact);
    /* Documents written as one flow mapping each. */
    a = audit_yaml("---\n{\"apiVersion\": \"v1\", \"kind\": \"Secret\", \"type\": "
                   "\"kubernetes.io/service-account-token\", \"metadata\": {\"name\": \"t\"}}\n");
    expect(a, "K8S-SH-004", "namespaces/default/secrets/t", FERRY_AUDIT_HIGH);
    ferry_audit_free(a);
}

/* ---- the string table and the size of the cross-file records --------------------------- */

Test(k8s, string_table)
{
    audit_strtab *t = NULL;
    uint32_t id, id2, empty, ab, abc;
    char name[32];
    size_t bytes;
    int r;

    cr_assert_eq(audit_k8s_strtab_new(1, &t), -EINVAL);
    cr_assert_eq(audit_k8s_strtab_new(1u << 20, &t), 0);
    cr_assert_eq(audit_k8s_strtab_find(t, "x"), 0);
    cr_assert_null(audit_k8s_str(t, 0));
    /* Enough strings to grow the arena and the slots several times. */
    for (size_t i = 0; i < 20000; i++) {
        (void)snprintf(name, sizeof(name), "ns-%zu/sa-%zu", i % 97, i);
        cr_assert_eq(audit_k8s_intern(t, name, &id), 0);
        cr_assert_neq(id, 0);
    }
    bytes = audit_k8s_strtab_bytes(t);
    for (size_t i = 0; i < 20000; i++) {
        (void)snprintf(name, sizeof(name), "ns-%zu/sa-%zu", i % 97, i);
        id = audit_k8s_strtab_find(t, name);
        cr_assert_neq(id, 0, "%s lost", name);
        cr_assert_str_eq(audit_k8s_str(t, id), name);
        cr_assert_eq(audit_k8s_intern(t, name, &id2), 0);
        cr_assert_eq(id2, id, "%s interned twice", name);
    }
    cr_assert_eq(audit_k8s_strtab_bytes(t), bytes, "interning known strings grew the table");
    cr_assert_eq(audit_k8s_strtab_find(t, "ns-1/sa-20000"), 0);
    cr_assert_eq(audit_k8s_intern(t, "", &empty), 0);
    cr_assert_neq(empty, 0);
    cr_assert_str_eq(audit_k8s_str(t, empty), "");
    cr_assert_eq(audit_k8s_intern(t, "ab", &ab), 0);
    cr_assert_eq(audit_k8s_intern(t, "abc", &abc), 0);
    cr_assert_neq(ab, abc);
    cr_assert_eq(audit_k8s_strtab_find(t, "a"), 0);
    cr_assert_str_eq(audit_k8s_str(t, ab), "ab");
    audit_k8s_strtab_free(t);

    /* The arena's bound: refused with -FERRY_ETOOBIG, what is in stays readable. */
    cr_assert_eq(audit_k8s_strtab_new(64, &t), 0);
    for (size_t i = 0;; i++) {
        (void)snprintf(name, sizeof(name), "name-%zu", i);
        r = audit_k8s_intern(t, name, &id);
        if (r < 0) {
            cr_assert_eq(r, -FERRY_ETOOBIG);
            cr_assert(i > 2 && i < 10, "%zu strings in 64 bytes", i);
            cr_assert_eq(audit_k8s_strtab_find(t, name), 0);
            break;
        }
    }
    cr_assert_str_eq(audit_k8s_str(t, audit_k8s_strtab_find(t, "name-0")), "name-0");
    audit_k8s_strtab_free(t);
    audit_k8s_strtab_free(NULL);
}

/* Bindings and ServiceAccounts of many inputs cost a few dozen bytes each, not a JSON tree. */
Test(k8s, cross_file_records_are_compact)
{
    enum { N = 2000 };
    ferry_audit *a = run_new();
    char err[512] = "", *sas = malloc(N * 200), *rbs = malloc(N * 400);
    size_t ls = 0, lr = 0, n_b = 0, n_sa = 0, bytes;

    cr_assert(sas && rbs);
    for (int i = 0; i < N; i++) {
        ls += (size_t)snprintf(sas + ls, 200,
                               "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa-%d, "
                               "namespace: ns-%d}\n",
                               i, i % 50);
        lr += (size_t)snprintf(rbs + lr, 400,
                               "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n"
                               "metadata: {name: rb-%d, namespace: ns-%d}\nroleRef: {kind: "
                               "ClusterRole, name: view}\nsubjects:\n- {kind: ServiceAccount, "
                               "name: sa-%d}\n",
                               i, i % 50, i);
    }
    cr_assert_eq(ferry_audit_add_input(a, "sas.yaml", sas, ls, NULL, err, sizeof(err)), 0, "%s",
                 err);
    cr_assert_eq(ferry_audit_add_input(a, "rbs.yaml", rbs, lr, NULL, err, sizeof(err)), 0, "%s",
                 err);
    bytes = audit_k8s_state_bytes(a, &n_b, &n_sa);
    cr_assert_eq(n_b, N);
    cr_assert_eq(n_sa, N);
    cr_assert_lt(bytes / (n_b + n_sa), 128, "%zu bytes for %zu bindings and %zu SAs", bytes, n_b,
                 n_sa);
    cr_assert_eq(ferry_audit_finish(a, err, sizeof(err)), 0, "%s", err);
    /* Nothing can give a finding after finish: the records are gone before the report. */
    bytes = audit_k8s_state_bytes(a, &n_b, &n_sa);
    cr_assert_eq(n_b + n_sa, 0);
    cr_assert_lt(bytes, 1024);
    ferry_audit_free(a);
    free(sas);
    free(rbs);
}

/* ---- allocation failures ------------------------------------------------------------------- *
 * As in test_audit.c: the Nth allocation of the process fails (libyaml's, jansson's, ours), for
 * N = 0, 1, ... until a whole run (YAML and JSON inputs, an AWS export for X-001, finish, the
 * outputs) completes. Each run fails with -ENOMEM (-FERRY_ECRYPTO from OpenSSL's digest) or
 * gives exactly the report of an undisturbed run. */
#define FERRY_ALLOCFAIL_NTH 1
#include "allocfail.h"
#include "audit-oom.h"
#ifdef HAVE_ALLOC_INJECTION
static const char OOM_YAML[] =
    "apiVersion: v1\nkind: List\nitems:\n" /* a List, with item positions kept */
    "- apiVersion: v1\n  kind: ServiceAccount\n  metadata:\n    name: app\n    namespace: "
    "apps\n"
    "    annotations: {eks.amazonaws.com/role-arn: \"arn:aws:iam::111122223333:role/app\"}\n"
    "- apiVersion: v1\n  kind: ServiceAccount\n  metadata: {name: idle, namespace: apps}\n"
    "- apiVersion: v1\n  kind: Secret\n  type: kubernetes.io/service-account-token\n"
    "  metadata:\n    name: t\n    namespace: apps\n"
    "    annotations: {kubernetes.io/service-account.name: app}\n" CR(
        "agg",
        "  []\naggregationRule:\n  clusterRoleSelectors: [{matchLabels: {a: "
        "'true'}}]\n") "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: "
                       "ClusterRole\n"
                       "metadata: {name: part, labels: {a: 'true'}}\nrules:\n" SECRETS PODS CR(
                           "w", "- apiGroups: ['*']\n  resources: ['*']\n  "
                                "verbs: ['*']\n")
                           CRB("b", "agg",
                               "- kind: Group\n  name: system:authenticated\n" SA_SUBJ("apps",
                                                                                       "gone"))
                               CRB("ca", "cluster-admin", SA_SUBJ("apps", "default"))
                                   RB("apps", "d", "Role", "nope", "- kind: User\n  name: u\n") POD(
                                       "apps", "web", "default") "---\napiVersion: "
                                                                 "rbac.authorization.k8s.io/"
                                                                 "v1\nkind: Role\n"
                                                                 "metadata: {name: r, namespace: "
                                                                 "apps}\nrules: []\n";

static int oom_run(char **ret_json)
{
    ferry_audit_options o = {.now = NOW};
    ferry_audit *a = NULL;
    char *out = NULL, err[256], aws[1024];
    int r = ferry_audit_new(&o, &a);

    (void)snprintf(aws, sizeof(aws), AWS_ADMIN, "*");
    if (r == 0)
        r = ferry_audit_k8s_set_cluster(a, "c1");
    if (r == 0)
        r = ferry_audit_add_input(a, "m.yaml", OOM_YAML, strlen(OOM_YAML), NULL, err, sizeof(err));
    if (r == 0)
        r = ferry_audit_add_input(a, "aws.json", aws, strlen(aws), NULL, err, sizeof(err));
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
    if (r < 0 && !injected)
        fprintf(stderr, "oom_run: %s\n", err);
    ferry_audit_free(a);
    if (r == 0)
        *ret_json = out;
    else
        free(out);
    return r;
}

Test(k8s, allocation_failures_fail_or_change_nothing)
{
    static const char *const rules[] = {"K8S-OP-001", "K8S-OP-002", "K8S-OP-004", "K8S-OP-005",
                                        "K8S-OP-007", "K8S-SH-001", "K8S-SH-002", "K8S-SH-003",
                                        "K8S-SH-004", "K8S-SH-005", "K8S-TR-001", "X-001"};
    char *ref = NULL;

    cr_assert_eq(oom_run(&ref), 0);
    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++)
        cr_assert(strstr(ref, rules[i]), "the reference run has %s: %s", rules[i], ref);
    AUDIT_OOM_SWEEP(400000, ref, oom_run(&out));
    free(ref);
}
#endif
