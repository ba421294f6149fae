#!/usr/bin/env python3
# TAP: `ferry audit` over Azure exports (az CLI, ARM REST, Microsoft Graph), as a security
# engineer runs it.
#   - the documented-shape samples in tests/audit/azure (copied from ../shared/samples/synthetic,
#     see the README there) give exactly the findings a reviewer expects: rule id, resource,
#     severity (the Owner/UAA service principals, the Contributor at subscription scope, the
#     year-2299 secret, the expired certificate, the principalType Unknown assignment, the
#     multi-tenant vendor SP, the custom roles, the owned privileged SP, the inactive SP);
#   - the ARM REST and az CLI shapes of one assignment are one finding; fingerprints survive
#     date changes; --trusted-tenants turns the vendor finding off; usage rules without sign-in
#     data leave one info "not evaluated" note per tenant;
#   - Graph pages ({"value": [...]}, @odata.nextLink) split over files give what one list gives;
#   - JSON reports are valid against ferry-audit-v1.schema.json; SARIF levels; the table;
#   - malformed, truncated and wrongly shaped inputs exit 2 with FILE:LINE and what was expected,
#     and print no report.
import copy
import json
import os
import re
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402
from audittest import SCHEMA_PROBLEMS, audit, audit_json, bad_outcome  # noqa: E402

FIX = os.path.join(ft.SRCDIR, "tests", "audit", "azure")
SUB = "00000000-1111-2222-3333-444444444444"
TENANT = "72f988bf-0000-0000-0000-000000000001"
VENDOR = "f8cdef31-0000-0000-0000-00000000beef"


def sp(n):
    return f"servicePrincipals/aaaaaaaa-0000-4000-8000-00000000000{n}"


def fx(name):
    return os.path.join(FIX, name)


SP_LIST = fx("azure_az_ad_sp_list.json")
RA_CLI = fx("azure_az_role_assignment_list_all.json")
RA_ARM = fx("azure_arm_roleAssignments_list_rest.json")
DEFS = fx("azure_az_role_definition_list_custom.json")
SIGNINS = fx("azure_graph_beta_servicePrincipalSignInActivities.json")
OWNERS = fx("azure_az_ad_sp_owner_list_ci-terraform.json")
ALL = [SP_LIST, RA_CLI, RA_ARM, DEFS, SIGNINS, OWNERS]


def triples(j, info=False):
    return sorted((f["rule_id"], f["resource"], f["severity"]) for f in j["findings"]
                  if info or f["severity"] != "info")


def find(j, rule, resource):
    return [f for f in j["findings"] if f["rule_id"] == rule and f["resource"] == resource]


RA = f"/subscriptions/{SUB}/providers/Microsoft.Authorization"
EXPECTED = sorted([
    # ci-terraform: Owner at the subscription; its secret is then Tier-0; owned by Alice.
    ("AZ-OP-001", sp(1), "critical"),
    ("AZ-SH-002", sp(1), "critical"),
    ("AZ-SH-003", sp(1), "medium"),  # 2024-03-01 .. 2027-03-01
    ("AZ-SH-008", sp(1), "high"),
    # the vendor's multi-tenant SP with User Access Administrator on the subscription
    ("AZ-OP-001", sp(4), "critical"),
    ("AZ-TR-001", sp(4), "high"),
    # legacy-reporting: Contributor at the subscription, the 2299 secret, the expired
    # certificate, no sign-in since 2025-01
    ("AZ-OP-002", sp(2), "high"),
    ("AZ-SH-002", sp(2), "medium"),
    ("AZ-SH-003", sp(2), "medium"),
    ("AZ-SH-004", sp(2), "low"),
    ("AZ-SH-001", sp(2), "medium"),
    # the assignment whose principal was deleted
    ("AZ-SH-006", f"/subscriptions/{SUB}/resourceGroups/rg-old/providers/"
                  "Microsoft.Authorization/roleAssignments/e1000000-0000-4000-8000-000000000005",
     "medium"),
    # custom roles: "*" assignable at the subscription; roleAssignments/write
    ("AZ-OP-003", f"{RA}/roleDefinitions/0badc0de-0000-4000-8000-000000000001", "critical"),
    ("AZ-OP-003", f"{RA}/roleDefinitions/c0ffee00-0000-4000-8000-00000000c0de", "high"),
])


def sample_checks(tap, d):
    j = audit_json(tap, "all six samples", *ALL)
    tap.eq(triples(j), EXPECTED, "samples: exactly the findings a reviewer expects "
           "(rule, resource, severity)")
    sev2299 = [f for f in find(j, "AZ-SH-003", sp(2)) if "2299" in json.dumps(f["evidence"])]
    tap.ok(len(sev2299) == 1 and sev2299[0]["evidence"]["key_id"] ==
           "bbbbbbbb-0000-4000-8000-000000000002" and sev2299[0]["account"] == TENANT,
           "the never-expiring (2299) secret: its key id, in the SPs' home tenant", sev2299)
    f = find(j, "AZ-SH-004", sp(2))
    tap.ok(f and f[0]["evidence"]["state"] == "expired" and f[0]["evidence"]["credential"] ==
           "keyCredentials", "the expired certificate: AZ-SH-004, expired", f)
    f = find(j, "AZ-TR-001", sp(4))
    tap.ok(f and f[0]["evidence"]["app_owner_tenant"] == VENDOR and
           f[0]["evidence"]["azure_rbac"] is True,
           "the vendor SP (a look-alike of Microsoft's tenant id is not first-party)", f)
    f = find(j, "AZ-OP-001", sp(4))
    tap.ok(f and f[0]["evidence"]["role"] == "User Access Administrator" and
           f[0]["evidence"]["scope_level"] == "subscription" and f[0]["account"] == SUB,
           "UAA known by the CLI's roleDefinitionName; account = the subscription", f)
    f = find(j, "AZ-OP-001", sp(1))
    tap.ok(len(f) == 1, "the same assignment in the CLI and the ARM REST export: one finding", f)
    tap.ok(not [x for x in j["findings"] if x["resource"] == sp(3)],
           "the managed identity with Storage Blob Data Reader on one account: nothing", j)
    notes = [(x["rule_id"], x["resource"]) for x in j["findings"] if x["severity"] == "info"]
    tap.eq(notes, [("AZ-SH-005", f"tenants/{TENANT}")],
           "with sign-in data only the credential-usage rule is 'not evaluated' (once)")
    tap.ok(all(x["cloud"] == "azure" for x in j["findings"]), "cloud is azure")

    # Without sign-in data: the usage rules say so once per tenant, and SH-001 is gone.
    j2 = audit_json(tap, "samples without sign-ins", SP_LIST, RA_CLI, DEFS, OWNERS)
    notes = sorted((x["rule_id"], x["resource"], x["evidence"].get("evaluated"))
                   for x in j2["findings"] if x["severity"] == "info")
    tap.eq(notes, [(r, f"tenants/{TENANT}", False) for r in ("AZ-OP-006", "AZ-SH-001",
                                                             "AZ-SH-005")],
           "no sign-in data: one info 'not evaluated' note per usage rule and tenant")
    tap.ok(not find(j2, "AZ-SH-001", sp(2)), "no SH-001 finding without sign-in data")

    # --trusted-tenants: the vendor is reviewed.
    tt = os.path.join(d, "trusted.txt")
    with open(tt, "w") as fh:
        fh.write("# reviewed vendors\n" + VENDOR.upper() + "  # SaaS connector\n\n")
    j3 = audit_json(tap, "--trusted-tenants", "--trusted-tenants", tt, *ALL)
    tap.ok(not find(j3, "AZ-TR-001", sp(4)) and find(j3, "AZ-OP-001", sp(4)),
           "--trusted-tenants: no AZ-TR-001 for the trusted vendor, its OP-001 stays")
    with open(tt, "w") as fh:
        fh.write("72f988bf-0000\n")
    r = audit("--trusted-tenants", tt, SP_LIST)
    tap.ok(r.rc == 2 and r.out == "" and re.search(r"trusted\.txt:1: expected a tenant id", r.err),
           "--trusted-tenants with a bad line: exit 2, file and line", r)

    # Input order does not matter for the cross-file rules.
    j4 = audit_json(tap, "samples, reverse order", *reversed(ALL))
    tap.eq(sorted(f["fingerprint"] for f in j4["findings"]),
           sorted(f["fingerprint"] for f in j["findings"]),
           "reverse input order: the same findings and fingerprints")

    # Dates moved: fingerprints stay.
    with open(SP_LIST) as fh:
        sps = json.load(fh)
    for s in sps:
        for c in s["passwordCredentials"] + s["keyCredentials"]:
            c["startDateTime"] = c["startDateTime"].replace("T00:00:00Z", "T00:00:00.0000000Z")
    moved = os.path.join(d, "sp_moved.json")
    ft.write_json(moved, sps)
    j5 = audit_json(tap, "dates rewritten", moved, RA_CLI, RA_ARM, DEFS, SIGNINS, OWNERS)
    tap.eq(sorted(f["fingerprint"] for f in j5["findings"]),
           sorted(f["fingerprint"] for f in j["findings"]),
           "fractional-second dates: the same fingerprints")

    # Graph pages: the SP list split over two {"value": [...]} pages gives the same report.
    p1, p2 = os.path.join(d, "sp_page1.json"), os.path.join(d, "sp_page2.json")
    ft.write_json(p1, {"@odata.context": "x", "value": sps[:2],
                       "@odata.nextLink": "https://graph.microsoft.com/v1.0/servicePrincipals?"
                                          "$skiptoken=abc"})
    ft.write_json(p2, {"@odata.context": "x", "value": sps[2:]})
    j6 = audit_json(tap, "SP list in two Graph pages", p1, p2, RA_CLI, RA_ARM, DEFS, SIGNINS,
                    OWNERS)
    tap.eq(triples(j6, True), triples(j, True), "two Graph pages: the findings of one list")

    # stdin and --format
    with open(RA_CLI) as fh:
        text = fh.read()
    r = audit("--output-format", "json", "--fail-on", "none", "--format",
              "azure-role-assignments", "-", stdin=text)
    jj = r.json() or {"findings": [], "inputs": []}
    tap.ok(r.rc == 0 and jj["inputs"] == [{"path": "-", "format": "azure-role-assignments"}] and
           find(jj, "AZ-SH-006", f"/subscriptions/{SUB}/resourceGroups/rg-old/providers/"
                "Microsoft.Authorization/roleAssignments/e1000000-0000-4000-8000-000000000005"),
           "stdin with --format azure-role-assignments", r)


def graph_checks(tap, d):
    """The Graph inputs the samples lack: directory roles, app role assignments, credential
    sign-ins, federated credentials, identities and resources."""
    def w(name, obj):
        p = os.path.join(d, name)
        ft.write_json(p, obj)
        return p
    roles = w("dirroles.json", {"value": [
        {"id": "x", "principalId": "aaaaaaaa-0000-4000-8000-000000000002",
         "roleDefinitionId": "62e90394-69f5-4237-9190-012177145e10", "directoryScopeId": "/"}]})
    ara = w("ara.json", {"value": [
        {"id": "y", "principalId": "aaaaaaaa-0000-4000-8000-000000000004",
         "principalType": "ServicePrincipal", "resourceDisplayName": "Microsoft Graph",
         "appRoleId": "1bfefb4e-e0b5-418b-a88f-73c46d2cc8e9", "resourceId": "g"}]})
    creds = w("credsignins.json", {"value": [
        {"id": "z", "keyId": "bbbbbbbb-0000-4000-8000-000000000002",
         "appId": "11111111-aaaa-4bbb-8ccc-000000000002",
         "servicePrincipalObjectId": "aaaaaaaa-0000-4000-8000-000000000002",
         "credentialOrigin": "servicePrincipal", "expirationDateTime": "2299-12-31T00:00:00Z",
         "signInActivity": {"lastSignInDateTime": "2025-01-09T03:00:00Z"}}]})
    fic = w("fic.json", {
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#applications("
                          "'cccccccc-0000-4000-8000-000000000001')/federatedIdentityCredentials",
        "value": [{"id": "f1", "name": "any-pr", "issuer":
                   "https://token.actions.githubusercontent.com",
                   "subject": "repo:acme/infra:pull_request",
                   "audiences": ["api://AzureADTokenExchange"]},
                  {"id": "f2", "name": "prod", "issuer":
                   "https://token.actions.githubusercontent.com",
                   "subject": "repo:acme/infra:environment:prod",
                   "audiences": ["api://AzureADTokenExchange"]}]})
    uami = (f"/subscriptions/{SUB}/resourcegroups/rg-payments/providers/"
            "Microsoft.ManagedIdentity/userAssignedIdentities/id-payments-api")
    ids = w("identities.json", [
        {"id": uami, "name": "id-payments-api", "location": "westeurope",
         "clientId": "11111111-aaaa-4bbb-8ccc-000000000003",
         "principalId": "aaaaaaaa-0000-4000-8000-000000000003", "tenantId": TENANT,
         "type": "Microsoft.ManagedIdentity/userAssignedIdentities"}])
    res = w("resources.json", [
        {"id": f"/subscriptions/{SUB}/resourceGroups/rg-payments/providers/Microsoft.Web/"
               "sites/api", "type": "Microsoft.Web/sites", "location": "westeurope",
         "identity": {"type": "SystemAssigned"}}])
    j = audit_json(tap, "Graph inputs", SP_LIST, RA_CLI, roles, ara, creds, fic, ids, res)
    tap.ok(find(j, "AZ-OP-004", sp(2)) and find(j, "AZ-OP-004", sp(2))[0]["severity"] ==
           "critical", "Global Administrator on an SP: AZ-OP-004 critical")
    tap.ok(find(j, "AZ-OP-005", sp(4)) and find(j, "AZ-OP-005", sp(4))[0]["evidence"]["role"] ==
           "Application.ReadWrite.All", "Application.ReadWrite.All granted: AZ-OP-005")
    tap.ok([f for f in find(j, "AZ-SH-002", sp(2)) if f["severity"] == "critical"],
           "a secret on a Global Administrator SP is critical (Tier-0)")
    tap.ok(find(j, "AZ-SH-005", sp(2)) and find(j, "AZ-SH-005", sp(2))[0]["severity"] ==
           "medium", "a credential unused since 2025-01: AZ-SH-005")
    base = "applications/cccccccc-0000-4000-8000-000000000001/federatedIdentityCredentials/"
    tap.ok(find(j, "AZ-TR-002", base + "f1") and not find(j, "AZ-TR-002", base + "f2"),
           "federated credential for any pull request: AZ-TR-002; the pinned one: nothing")
    tap.ok(find(j, "AZ-SH-007", uami) and find(j, "AZ-SH-007", uami)[0]["severity"] == "low",
           "a user-assigned identity no resource uses: AZ-SH-007")


def output_checks(tap):
    r = audit("--output-format", "sarif", "--fail-on", "none", *ALL)
    s = r.json() or {}
    run = (s.get("runs") or [{}])[0]
    ids = {x["id"] for x in run.get("tool", {}).get("driver", {}).get("rules", [])}
    want = {f"AZ-OP-00{i}" for i in range(1, 7)} | {f"AZ-SH-00{i}" for i in range(1, 9)} | \
        {"AZ-TR-001", "AZ-TR-002"}
    tap.ok(r.rc == 0 and want <= ids, "SARIF: every AZ rule in tool.driver.rules", sorted(ids))
    levels = {(x["ruleId"], x["level"]) for x in run.get("results", [])}
    tap.ok(("AZ-OP-001", "error") in levels and ("AZ-SH-003", "warning") in levels and
           ("AZ-SH-004", "note") in levels, "SARIF levels: critical error, medium warning, "
           "low note", sorted(levels))
    r = audit(*ALL)
    tap.ok(r.rc == 1 and "AZ-TR-001" in r.out and "servicePrincipals/aaaaaaaa-0000-4000-8000-"
           "000000000004" in r.out, "table: findings listed; exit 1 at the default --fail-on",
           r)
    r = audit("--fail-on", "critical", SIGNINS)
    tap.ok(r.rc == 0, "--fail-on critical over the sign-ins alone: exit 0", r)
    r = audit("--help")
    tap.ok(r.rc == 0 and "azure-role-assignments" in r.out and "--trusted-tenants" in r.out,
           "--help names the Azure loaders and --trusted-tenants")


def error_checks(tap, d):
    def bad(name, text, want, desc):
        p = os.path.join(d, name)
        with open(p, "w") as f:
            f.write(text)
        r = audit("--output-format", "json", SP_LIST, p)
        tap.ok(r.rc == 2 and r.out == "" and re.search(want, r.err), f"{desc}: exit 2, "
               f"'{want}', no report", r)

    with open(SP_LIST) as f:
        text = f.read()
    cut = text[:len(text) // 2]
    bad("truncated.json", cut, rf"truncated\.json:{cut.count(chr(10)) + 1}:\d+: malformed JSON",
        "truncated SP list: the line where it ends")
    bad("malformed.json", '[{"appId": "a",\n "id": "o", "servicePrincipalType": "x",}]',
        r"malformed\.json:2:\d+: malformed JSON", "malformed JSON: line and column")
    with open(RA_CLI) as f:
        ras = json.load(f)
    broken = copy.deepcopy(ras)
    del broken[3]["principalId"]
    p = os.path.join(d, "ra_noprincipal.json")
    with open(p, "w") as f:
        json.dump(broken, f, indent=2)
    with open(p) as f:
        line = [i + 1 for i, l in enumerate(f) if "e1000000-0000-4000-8000-000000000004" in l][0]
    r = audit(p)
    tap.ok(r.rc == 2 and r.out == "" and re.search(
        rf"ra_noprincipal\.json:\d+: element\[3\]\.principalId: expected a principalId string",
        r.err), "assignment without principalId: file, line, element and what was expected", r)
    m = re.search(r"ra_noprincipal\.json:(\d+):", r.err)
    tap.ok(m and abs(int(m.group(1)) - line) <= 20, "the line is that of the element", (r.err,
                                                                                        line))
    bad("arm.json", '{"value": [\n {"id": "/a", "properties": {"principalId": "p", '
        '"roleDefinitionId": "/r", "scope": "/"}},\n {"id": "/b", "properties": '
        '{"principalId": 7, "roleDefinitionId": "/r", "scope": "/"}}]}',
        r"arm\.json:3: value\[1\]\.properties\.principalId: expected a principalId string",
        "ARM shape with a number for principalId")
    bad("dates.json", '[{"appId": "a", "id": "o", "servicePrincipalType": "Application",\n'
        ' "passwordCredentials": [{"keyId": "k",\n  "endDateTime": "next year"}]}]',
        r"dates\.json:3: element\[0\]\.passwordCredentials\.0\.endDateTime: expected a date",
        "credential with a date that is not one")
    bad("defs.json", '{"value": [{"id": "/x", "roleName": "r", "roleType": "CustomRole",\n'
        ' "permissions": {"actions": ["*"]}}]}',
        r"defs\.json:2: value\[0\]\.permissions: expected an array",
        "role definition with permissions not an array")
    bad("notalist.json", '{"value": {"appId": "a"}}', r"notalist\.json: not a recognised export",
        "a value that is not a list")


def hostile_checks(tap, d):
    """Randomly damaged exports: a report or exit 2, never a crash or a half report."""
    import random
    rnd = random.Random(6)
    srcs = []
    for p in ALL:
        with open(p) as f:
            srcs.append(json.load(f))

    def mutate(o):
        nodes = []

        def walk(x):
            if isinstance(x, dict):
                for k in list(x):
                    nodes.append((x, k))
                    walk(x[k])
            elif isinstance(x, list):
                for i in range(len(x)):
                    nodes.append((x, i))
                    walk(x[i])
        walk(o)
        for _ in range(rnd.randint(1, 4)):
            if not nodes:
                break
            c, k = rnd.choice(nodes)
            c[k] = rnd.choice([None, 7, "x", [], {}, True, "2299-99-99T00:00:00Z", [1, 2]])
        return o

    p = os.path.join(d, "damaged.json")
    failures, codes = [], set()
    for i in range(60):
        ft.write_json(p, mutate(copy.deepcopy(rnd.choice(srcs))))
        r = audit("--output-format", "json", SP_LIST, p)
        codes.add(r.rc)
        if bad_outcome(r):
            failures.append((i, r))
    tap.ok(not failures, "60 damaged Azure exports: a report or exit 2, never a crash",
           failures[:2])
    tap.ok(2 in codes and 1 in codes, "damaged exports: both outcomes seen", codes)


def body(tap):
    try:
        with ft.tempdir() as d:
            sample_checks(tap, d)
            graph_checks(tap, d)
            output_checks(tap)
            error_checks(tap, d)
            hostile_checks(tap, d)
    finally:
        tap.ok(not SCHEMA_PROBLEMS, "every JSON report of this test is valid against "
               "ferry-audit-v1.schema.json", SCHEMA_PROBLEMS[:5])


if __name__ == "__main__":
    ft.main("test_cli_audit_azure", body)
