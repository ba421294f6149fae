#!/usr/bin/env python3
# TAP: `ferry audit` over Kubernetes RBAC exports and manifests, as a security engineer runs it.
#   - the real manifests of rbac-tool and the bootstrap policy of kubernetes/kubernetes, and the
#     documented-shape kubectl -o json exports (tests/audit/k8s, copied from ../shared/samples)
#     give exactly the findings a reviewer expects (rule id, resource, severity), and the
#     bootstrap defaults give none;
#   - the cross-cloud chain X-001 from an IRSA annotation to an admin AWS role;
#   - --cluster, stdin, --format k8s-yaml on JSON, table/JSON/SARIF outputs, the JSON schema;
#   - hostile YAML (alias bomb, deep nesting, huge scalar, tags, truncation) and wrongly shaped
#     objects exit 2 with FILE:LINE:COL and print no report.
import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402
from audittest import SCHEMA_PROBLEMS, audit, audit_json  # noqa: E402

FIX = os.path.join(ft.SRCDIR, "tests", "audit", "k8s")


def fx(name):
    return os.path.join(FIX, name)


def triples(j, cloud="k8s"):
    return sorted((f["rule_id"], f["resource"], f["severity"]) for f in j["findings"]
                  if f["cloud"] == cloud)


def get(j, rule, resource):
    for f in j["findings"]:
        if f["rule_id"] == rule and f["resource"] == resource:
            return f
    return None


NOTE = ("K8S-SH-001", "cluster", "info")  # no pods in a manifest: SH-001 not evaluated


def manifest_checks(tap):
    expected = {
        # the API server's bootstrap bindings: system:masters, system:authenticated on
        # basic-user/discovery/public-info-viewer, controllers, kube-dns: all defaults
        "kubernetes_bootstrappolicy_cluster-role-bindings.yaml": [],
        "rbactool_viz_multiple-rolebindings-in-ns-missing-service-account.yaml": [
            ("K8S-SH-002", "namespaces/mynamespace/rolebindings/example-rolebinding-1", "medium"),
            ("K8S-SH-002", "namespaces/mynamespace/rolebindings/example-rolebinding-2", "medium"),
        ],
        "rbactool_viz_multiple-rolebindings-in-ns.yaml": [],  # the same, with the SA present
        "rbactool_whocan_impersonator.yaml": [
            ("K8S-OP-003", "namespaces/test/rolebindings/impersonator", "critical"),
        ],
        "rbactool_whocan_secret-reader.yaml": [
            ("K8S-OP-004", "namespaces/test/rolebindings/read-secrets", "high"),
        ],
        # pod creation in namespace "test" only: not kube-system, nothing to report
        "rbactool_whocan_pod-creator.yaml": [],
        # the aggregated ClusterRole takes "create pods" from a selected role, bound cluster-wide
        "rbactool_whocan_clusterrole-aggregate.yaml": [
            ("K8S-OP-005", "clusterrolebindings/aggregate-pod-creator", "high"),
        ],
        # get on "*" in the core group reads secrets; the named-secret grant alone would not
        "rbactool_policyrules_multiple-role-bindings.yaml": [
            ("K8S-OP-004", "namespaces/policyrules/rolebindings/more-rules-binding", "high"),
            ("K8S-OP-004", "namespaces/policyrules/rolebindings/some-rules-binding", "high"),
        ],
    }
    for name, want in expected.items():
        j = audit_json(tap, name, fx(name))
        tap.eq(triples(j), sorted(want + [NOTE]), f"{name}: exactly the expected findings")
    j = audit_json(tap, "missing SA", fx(
        "rbactool_viz_multiple-rolebindings-in-ns-missing-service-account.yaml"))
    f = get(j, "K8S-SH-002", "namespaces/mynamespace/rolebindings/example-rolebinding-1")
    tap.ok(f and f["evidence"].get("subject") == "system:serviceaccount:mynamespace:example-user"
           and f["evidence"].get("role") == "Role/mynamespace/example-role-1"
           and f["account"] == "cluster" and f["source"].endswith("missing-service-account.yaml"),
           "missing SA: the subject, role, default cluster name and source in the finding", f)
    j = audit_json(tap, "impersonator", fx("rbactool_whocan_impersonator.yaml"))
    f = get(j, "K8S-OP-003", "namespaces/test/rolebindings/impersonator")
    tap.ok(f and f["evidence"]["subjects"] == ["user:test-impersonator-user"] and
           f["evidence"]["rules"][0]["verbs"] == ["impersonate"] and
           f["evidence"]["scope"] == "namespace test",
           "impersonator: the subject and the impersonate rule in the evidence", f)


SYNTHETIC = ["k8s_kubectl_get_serviceaccounts_A.json", "k8s_kubectl_get_secrets_sa-tokens.json",
             "k8s_kubectl_get_clusterroles.json", "k8s_kubectl_get_clusterrolebindings.json",
             "k8s_kubectl_get_rolebindings_A.json", "k8s_kubectl_get_pods_A_minimal.json"]

SYNTHETIC_EXPECTED = sorted([
    ("K8S-OP-001", "clusterrolebindings/ci-bot-admin", "critical"),
    ("K8S-OP-003", "clusterrolebindings/deleted-sa-binding", "critical"),  # impersonate
    ("K8S-OP-004", "clusterrolebindings/anon-secret-read", "critical"),
    ("K8S-OP-004", "clusterrolebindings/deleted-sa-binding", "critical"),  # token minting
    ("K8S-OP-007", "clusterrolebindings/anon-secret-read", "critical"),
    ("K8S-OP-002", "clusterroles/ci-deployer", "high"),
    ("K8S-SH-004", "namespaces/kube-system/secrets/manual-admin-token", "high"),
    ("K8S-SH-004", "namespaces/tools/secrets/ci-bot-token-x7k2p", "high"),
    ("K8S-SH-001", "system:serviceaccount:tools:ci-bot", "medium"),  # bound: cluster-admin
    ("K8S-SH-002", "clusterrolebindings/deleted-sa-binding", "medium"),
    ("K8S-SH-005", "clusterrolebindings/dangling-roleref", "medium"),
    ("K8S-SH-005", "namespaces/payments/pods/web-0", "medium"),
    ("K8S-SH-005", "namespaces/payments/rolebindings/default-sa-admin", "medium"),
    ("K8S-SH-001", "system:serviceaccount:finance:ledger", "low"),
    ("K8S-SH-001", "system:serviceaccount:tools:orphan-sa", "low"),
    ("K8S-SH-003", "clusterrolebindings/dangling-roleref", "low"),
    ("K8S-TR-001", "system:serviceaccount:analytics:reporter", "low"),
    ("K8S-TR-001", "system:serviceaccount:finance:ledger", "low"),
    ("K8S-TR-001", "system:serviceaccount:payments:payments-api", "low"),
])


def synthetic_checks(tap):
    files = [fx(n) for n in SYNTHETIC]
    j = audit_json(tap, "kubectl exports", "--cluster", "prod-eks", *files)
    tap.eq(triples(j), SYNTHETIC_EXPECTED, "kubectl exports: exactly the expected findings")
    tap.ok(all(f["account"] == "prod-eks" for f in j["findings"]),
           "kubectl exports: --cluster is the account of every finding")
    f = get(j, "K8S-SH-002", "clusterrolebindings/deleted-sa-binding")
    tap.ok(f and f["evidence"]["subject"] == "system:serviceaccount:operators:removed-operator",
           "binding to a deleted SA: the missing subject named", f)
    f = get(j, "K8S-OP-007", "clusterrolebindings/anon-secret-read")
    tap.ok(f and f["evidence"]["subjects"] == ["group:system:anonymous",
                                               "group:system:authenticated"],
           "system:anonymous binding: the broad groups named", f)
    f = get(j, "K8S-SH-003", "clusterrolebindings/dangling-roleref")
    tap.ok(f and f["evidence"]["role_ref"] == "ClusterRole/does-not-exist",
           "dangling roleRef: the missing role named", f)
    f = get(j, "K8S-TR-001", "system:serviceaccount:payments:payments-api")
    tap.ok(f and f["evidence"]["principal"] == "arn:aws:iam::123456789012:role/payments-api-irsa"
           and f["evidence"]["cloud"] == "aws", "IRSA annotation: the AWS role in the evidence", f)
    f = get(j, "K8S-SH-004", "namespaces/tools/secrets/ci-bot-token-x7k2p")
    tap.ok(f and f["evidence"]["last_used"] == "2024-03-17" and
           "token" not in json.dumps(f["evidence"]).replace("legacy-token", "")
           .replace("ci-bot-token", ""), "legacy token: last use, and no secret data", f)

    # Files in another order give the same fingerprints (cross-file rules decided at the end).
    j2 = audit_json(tap, "kubectl exports reversed", "--cluster", "prod-eks", *reversed(files))
    tap.eq(sorted(f["fingerprint"] for f in j2["findings"]),
           sorted(f["fingerprint"] for f in j["findings"]), "input order: same fingerprints")
    # JSON is YAML: read as k8s-yaml, the same findings.
    j3 = audit_json(tap, "kubectl exports as YAML", "--cluster", "prod-eks", "--format",
                    "k8s-yaml", *files)
    tap.eq(sorted(f["fingerprint"] for f in j3["findings"]),
           sorted(f["fingerprint"] for f in j["findings"]), "--format k8s-yaml: same fingerprints")

    # The API server's audit log (rbac-tool's, requests by users, not SAs): read, changes nothing.
    j4 = audit_json(tap, "with the audit log", "--cluster", "prod-eks", *files,
                    fx("rbactool_auditgen_testdata-01.jsonl"))
    tap.ok(j4["inputs"][-1]["format"] == "k8s-audit" and triples(j4) == SYNTHETIC_EXPECTED,
           "audit.k8s.io JSON Lines: detected, no SA request in it, same findings", j4["inputs"])

    # Without pods: SH-001 is a single info note, no per-SA finding.
    j = audit_json(tap, "without pods", *[f for f in files if "pods" not in f])
    tap.ok(("K8S-SH-001", "cluster", "info") in triples(j) and
           not any(t[0] == "K8S-SH-001" and t[2] != "info" for t in triples(j)),
           "without pods: SH-001 only 'not evaluated'", triples(j))

    # X-001: the IRSA role is admin in the AWS export of the same run.
    j = audit_json(tap, "with AWS", fx("x001_aws_admin_role.json"), *files)
    f = get(j, "X-001", "system:serviceaccount:payments:payments-api")
    tap.ok(f and f["severity"] == "critical" and
           any(c["rule_id"] == "AWS-OP-001" for c in f["evidence"]["cloud_findings"]),
           "X-001: IRSA SA linked to an admin AWS role (AWS-OP-001), critical", f)
    f = get(j, "K8S-TR-001", "system:serviceaccount:payments:payments-api")
    tap.ok(f and f["severity"] == "critical", "TR-001 inherits the AWS role's severity", f)
    tap.ok(get(j, "X-001", "system:serviceaccount:analytics:reporter") is None,
           "X-001: not for an SA whose cloud principal has no admin finding")


def output_checks(tap, d):
    files = [fx(n) for n in SYNTHETIC]
    r = audit("--output-format", "sarif", *files)
    s = r.json()
    tap.ok(r.rc == 1 and s and s.get("version") == "2.1.0", "sarif: written, exit 1", r)
    if s:
        run = s["runs"][0]
        ids = {x["id"] for x in run["tool"]["driver"]["rules"]}
        tap.ok({"K8S-OP-001", "K8S-SH-005", "K8S-TR-001", "X-001"} <= ids,
               "sarif: the Kubernetes rules and X-001 in tool.driver.rules")
        res = [x for x in run["results"] if x["ruleId"] == "K8S-OP-001"]
        tap.ok(res and res[0]["level"] == "error" and
               res[0]["properties"]["security-severity"] == "9.0" and
               res[0]["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] ==
               "clusterrolebindings/ci-bot-admin", "sarif: K8S-OP-001 result", res[:1])
    r = audit(fx("rbactool_whocan_impersonator.yaml"))
    tap.ok(r.rc == 1 and "K8S-OP-003" in r.out and "namespaces/test/rolebindings/impersonator"
           in r.out and "CRITICAL (1)" in r.out, "table: the finding, exit 1", r)
    # stdin
    with open(fx("rbactool_whocan_secret-reader.yaml"), "rb") as f:
        data = f.read()
    j = audit_json(tap, "stdin", "-", stdin=data)
    tap.ok(("K8S-OP-004", "namespaces/test/rolebindings/read-secrets", "high") in triples(j),
           "stdin: YAML detected and audited", triples(j))
    r = audit("--cluster", "two words", fx("rbactool_whocan_impersonator.yaml"))
    tap.ok(r.rc == 2 and r.out == "" and "--cluster" in r.err, "--cluster: refused", r)
    r = audit("--help")
    tap.ok(r.rc == 0 and "k8s-yaml" in r.out and "--cluster NAME" in r.out,
           "usage names the Kubernetes formats and --cluster", r)


def error_checks(tap, d):
    good = fx("rbactool_whocan_impersonator.yaml")
    cases = [
        ("bomb.yaml", "apiVersion: v1\nkind: ConfigMap\na: &a [x, x, x, x, x, x, x, x, x]\n"
                      "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b]\n",
         "bomb.yaml:4:8: YAML aliases (*a) are not accepted"),
        ("deep.yaml", "kind: Pod\napiVersion: v1\nx: " + "[" * 200 + "]" * 200 + "\n",
         "deep.yaml:3:68: nested deeper than 64 levels"),
        ("huge.yaml", "kind: Pod\napiVersion: v1\nx: " + "A" * (3 * 1024 * 1024) + "\n",
         "huge.yaml:3:4: scalar of 3145728 bytes is over the 2097152-byte limit"),
        ("tag.yaml", "kind: Pod\napiVersion: v1\nx: !!python/object:os.system {}\n",
         "tag.yaml:3:4: YAML tag 'tag:yaml.org,2002:python/object:os.system' is not accepted"),
        ("trunc.yaml", "apiVersion: v1\nkind: List\nitems:\n- kind: Role\n  metadata: {name: \"x",
         "trunc.yaml:5:22: malformed YAML: while scanning a quoted scalar found unexpected "
         "end of stream"),
        ("shape.yaml", "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r}\n"
                       "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n"
                       "metadata: {name: c}\nrules: {verbs: [get]}\n",
         "shape.yaml:5:1: document 2: ClusterRole c: rules: expected a list of PolicyRules"),
        ("shape.json", '{"apiVersion": "v1", "kind": "List",\n "items": [\n'
                       '  {"kind": "RoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1",\n'
                       '   "metadata": {"name": "b", "namespace": "n"},\n'
                       '   "roleRef": {"kind": "Role", "name": "r"},\n   "subjects": [7]}]}\n',
         "shape.json:6: items[0]: RoleBinding b: subjects[0]: expected an object with kind"),
    ]
    for name, text, want in cases:
        p = os.path.join(d, name)
        with open(p, "w") as f:
            f.write(text)
        r = audit(good, p)
        tap.ok(r.rc == 2 and r.out == "" and
               r.err.startswith("ferry audit: " + os.path.join(d, want)),
               f"{name}: exit 2, '{want}', no report", r)


def body(tap):
    try:
        manifest_checks(tap)
        synthetic_checks(tap)
        with ft.tempdir() as d:
            output_checks(tap, d)
            error_checks(tap, d)
    finally:
        tap.ok(not SCHEMA_PROBLEMS, "every JSON report of this test is valid against "
               "ferry-audit-v1.schema.json", SCHEMA_PROBLEMS[:5])


if __name__ == "__main__":
    ft.main("test_cli_audit_k8s", body)
