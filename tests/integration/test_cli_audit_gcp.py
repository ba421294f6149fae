#!/usr/bin/env python3
# TAP: `ferry audit` over Google Cloud exports, as a security engineer runs it.
#   - the real and documented-shape samples (tests/audit/gcp, copied from the shared
#     samples) give the findings a reviewer expects, by rule id, resource and severity, and
#     nothing on what is fine (users holding Owner, service agents, a viewer);
#   - the inputs of one project given together: cross-file rules, no "not evaluated" notes for
#     the usage rules whose data was given, identical reports in any input order;
#   - a CAI export as NDJSON gives what the same assets as a JSON array give;
#   - --trusted-projects, --include-service-agents, --gcp-resource, --format;
#   - JSON (valid against ferry-audit-v1.schema.json) and SARIF carry the GCP rules;
#   - malformed, truncated and wrongly shaped inputs exit 2 with file, line and what was
#     expected, and print no report; randomly damaged samples never crash.
import json
import os
import re
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402
from audittest import SCHEMA_PROBLEMS, audit, audit_json, bad_outcome, damage  # noqa: E402

FIXTURES = os.path.join(ft.SRCDIR, "tests", "audit", "gcp")


def fx(name):
    return os.path.join(FIXTURES, name)


def triples(j, rule=None):
    return sorted((f["rule_id"], f["resource"], f["severity"]) for f in j["findings"]
                  if rule is None or f["rule_id"] == rule)


def find(j, rule, resource):
    return [f for f in j["findings"] if f["rule_id"] == rule and f["resource"] == resource]


def sa(email, project):
    return f"//iam.googleapis.com/projects/{project}/serviceAccounts/{email}"


def crm(name):
    return "//cloudresourcemanager.googleapis.com/" + name


ACME = "acme-prod-123"
LEGACY = sa(f"legacy-batch@{ACME}.iam.gserviceaccount.com", ACME)
CI = sa(f"ci-deployer@{ACME}.iam.gserviceaccount.com", ACME)
KEYS = f"//iam.googleapis.com/projects/{ACME}/serviceAccounts/legacy-batch@{ACME}." \
    "iam.gserviceaccount.com/keys/"


# ---- samples ------------------------------------------------------------------------------

def sample_checks(tap):
    j = audit_json(tap, "gcp_scanner project policy", fx("derived_gcp_scanner_get-iam-policy.json"))
    real = [t for t in triples(j) if t[2] != "info" or t[0] == "GCP-OP-003"]
    tap.eq(real, [
        ("GCP-OP-003", sa("413204024550-compute@developer.gserviceaccount.com", "413204024550"),
         "high"),
        ("GCP-OP-003", sa("413204024550@cloudservices.gserviceaccount.com", "413204024550"),
         "info"),
        ("GCP-OP-003", sa("test-gcp-scanner@appspot.gserviceaccount.com", "test-gcp-scanner"),
         "high"),
    ], "gcp_scanner: the default compute and App Engine SAs with Editor (high), cloudservices "
       "at info; the Owner users, the viewer SA and the service agents are not findings")
    tap.ok(all(f["account"] == "test-gcp-scanner" for f in j["findings"]),
           "gcp_scanner: the project is derived from the policy's own service accounts",
           [f["account"] for f in j["findings"]])
    tap.eq(sorted(f["rule_id"] for f in j["findings"] if f["severity"] == "info" and
                  f["rule_id"] != "GCP-OP-003"),
           ["GCP-OP-007", "GCP-SH-004", "GCP-SH-005"],
           "gcp_scanner: without usage data, one info 'not evaluated' note per usage rule")
    f = find(j, "GCP-OP-003", sa("413204024550-compute@developer.gserviceaccount.com",
                                 "413204024550"))[0]
    tap.ok(f["evidence"].get("role") == "roles/editor" and
           f["evidence"].get("resource") == crm("projects/test-gcp-scanner") and
           "roles/editor" in f["remediation"], "gcp_scanner: evidence names the binding, "
           "the remediation what to do", f)

    j = audit_json(tap, "synthetic get-iam-policy", fx("gcp_gcloud_projects_get-iam-policy.json"))
    proj = crm(f"projects/{ACME}")
    want = [
        ("GCP-OP-002", CI, "high"),
        ("GCP-OP-003", sa("123456789012-compute@developer.gserviceaccount.com", "123456789012"),
         "high"),
        ("GCP-OP-003", sa("123456789012@cloudservices.gserviceaccount.com", "123456789012"),
         "info"),
        ("GCP-OP-005", proj, "high"), ("GCP-OP-005", proj, "high"), ("GCP-OP-005", proj, "high"),
        ("GCP-OP-006", proj, "critical"),
        ("GCP-SH-007", proj, "medium"),
        ("GCP-SH-008", proj, "medium"),
    ]
    got = [t for t in triples(j) if not (t[2] == "info" and t[0] != "GCP-OP-003")]
    tap.eq(got, sorted(want), "get-iam-policy: projectIamAdmin SA, default SA with Editor, three "
           "project-wide impersonation grants, allAuthenticatedUsers, the deleted member, the "
           "external-project SA")
    ev = {f["rule_id"]: f["evidence"] for f in j["findings"]}
    tap.ok(ev["GCP-OP-006"]["member"] == "allAuthenticatedUsers" and
           ev["GCP-SH-007"]["member"].startswith("deleted:serviceAccount:gone-sa@") and
           ev["GCP-SH-008"]["member"] == "serviceAccount:svc-vendor@other-org-proj.iam."
           "gserviceaccount.com" and ev["GCP-SH-008"]["member_project"] == "other-org-proj",
           "get-iam-policy: the evidence names the public, deleted and external members", ev)
    tap.eq(sorted(f["evidence"]["member"] + " " + f["evidence"]["role"]
                  for f in j["findings"] if f["rule_id"] == "GCP-OP-005"),
           [f"serviceAccount:ci-deployer@{ACME}.iam.gserviceaccount.com "
            "roles/iam.serviceAccountTokenCreator",
            "user:bob@example.com roles/iam.serviceAccountTokenCreator",
            "user:bob@example.com roles/iam.serviceAccountUser"],
           "get-iam-policy: OP-005 once per member and role")
    tap.ok(not find(j, "GCP-OP-002", LEGACY),
           "get-iam-policy: compute.admin under a condition that expired in 2025 grants nothing")

    j = audit_json(tap, "asset search", fx("gcp_gcloud_asset_search-all-iam-policies.json"))
    got = [t for t in triples(j) if t[2] != "info"]
    tap.eq(got, [("GCP-OP-002", CI, "high"),
                 ("GCP-OP-003", sa("123456789012-compute@developer.gserviceaccount.com",
                                   "123456789012"), "high")],
           "asset search: organizationAdmin on the org SA, default SA Editor on the project")
    tap.eq(find(j, "GCP-OP-002", CI)[0]["account"], "organizations/999000111",
           "asset search: the org grant is accounted to the organization")

    j = audit_json(tap, "CAI bindings", fx("policylibrary_cai_iam_allowed_bindings.json"))
    p = crm("projects/12345")
    tap.eq([t for t in triples(j) if t[2] != "info"],
           [("GCP-OP-005", p, "high"), ("GCP-OP-006", p, "critical"),
            ("GCP-OP-006", p, "critical")],
           "CAI: allUsers and allAuthenticatedUsers on the project, serviceAccountUser for a "
           "user; nothing on the bucket and datasets")

    j = audit_json(tap, "CAI key age", fx("policylibrary_cai_gcp_iam_restrict_service_account_"
                                          "key_age.json"))
    k = "//iam.googleapis.com/projects/forseti-system-test/serviceAccounts/111111-compute@" \
        "developer.gserviceaccount.com/keys/"
    tap.eq(sorted((f["rule_id"], f["resource"][len(k):]) for f in j["findings"]
                  if f["rule_id"] == "GCP-SH-002"),
           [("GCP-SH-002", "testkeyageover100000days"), ("GCP-SH-002", "testkeyageover100days"),
            ("GCP-SH-002", "testkeyageover90days")],
           "CAI keys: the keys older than 90 days; not the future one nor the expired one")
    tap.ok(not [f for f in j["findings"] if f["resource"].endswith("testkeyexpired")],
           "CAI keys: an expired key is no finding")

    j = audit_json(tap, "CAI key type", fx("policylibrary_cai_gcp_iam_restrict_service_account_"
                                           "key_type.json"))
    tap.eq([t for t in triples(j) if t[2] != "info"], [],
           "CAI keys: a system-managed key and an expired user key are no findings")
    j = audit_json(tap, "CAI custom roles", fx("policylibrary_cai_iam_custom_role_permissions.json"))
    tap.eq(triples(j), [], "CAI roles: roles without setIamPolicy, not granted: nothing")
    j = audit_json(tap, "CAI GKE", fx("policylibrary_cai_gke_disable_default_service_account.json"))
    tap.eq(triples(j), [], "CAI clusters: assets the rules do not read are skipped")
    j = audit_json(tap, "CAI accounts", fx("policylibrary_cai_gcp_iam_restrict_service_account_"
                                           "creation.json"))
    tap.eq(sorted(f["resource"] for f in j["findings"] if f["rule_id"] == "GCP-SH-009"),
           [sa("773711848681-ke5v18ndptc8j6cb5rraooik5kh0plcs@developer.gserviceaccount.com",
               "-"),
            sa("my-account@test-project.iam.gserviceaccount.com", "test-project"),
            sa("myserviceaccount@test-project.iam.gserviceaccount.com", "test-project")],
           "CAI accounts: accounts without a description have no recorded owner (low)")


ONE_PROJECT = ["gcp_gcloud_iam_service-accounts_list.json",
               "gcp_gcloud_iam_service-accounts_keys_list.json",
               "gcp_gcloud_projects_get-iam-policy.json",
               "gcp_gcloud_policy-intelligence_query-activity_sa.json",
               "gcp_gcloud_policy-intelligence_query-activity_keys.json",
               "gcp_gcloud_recommender_insights_serviceaccount.json"]


def project_checks(tap):
    j = audit_json(tap, "one project, every input", *map(fx, ONE_PROJECT))
    t = triples(j)
    for want, desc in [
        (("GCP-SH-001", KEYS + "90c48f61c65cd56224a12ab18e6ee9ca9c3aee7c", "medium"),
         "user-managed key"),
        (("GCP-SH-001", KEYS + "e5e3800831ac1adc8a5849da7d827b4724b1fce8", "medium"),
         "second user-managed key"),
        (("GCP-SH-002", KEYS + "90c48f61c65cd56224a12ab18e6ee9ca9c3aee7c", "medium"),
         "key older than 90 days"),
        (("GCP-SH-003", KEYS + "90c48f61c65cd56224a12ab18e6ee9ca9c3aee7c", "low"),
         "key valid until 9999-12-31"),
        (("GCP-SH-004", KEYS + "90c48f61c65cd56224a12ab18e6ee9ca9c3aee7c", "medium"),
         "key last used 2024-02-11"),
        (("GCP-SH-005", LEGACY, "medium"), "legacy-batch last authenticated 2025-11-02"),
        (("GCP-SH-009", LEGACY, "low"), "legacy-batch without a description"),
    ]:
        tap.ok(want in t, f"one project: {desc} ({want[0]})", t)
    tap.ok(not [x for x in t if "1111222233334444555566667777888899990000" in x[1] or
                "0a1b2c3d4e5f" in x[1]],
           "one project: the disabled and the system-managed keys are no findings")
    tap.ok(not find(j, "GCP-SH-005", CI), "one project: ci-deployer, used in July, is not unused")
    tap.eq(len(find(j, "GCP-SH-005", LEGACY)), 1,
           "one project: activity and the insight report legacy-batch once (same fingerprint)")
    notes = sorted(f["rule_id"] for f in j["findings"] if f["evidence"].get("evaluated") is False)
    tap.eq(notes, ["GCP-OP-007"], "one project: only the rule without its usage data (no "
           "recommendations given) has a 'not evaluated' note")
    tap.ok(not [f for f in j["findings"] if f["rule_id"] == "GCP-SH-006"],
           "one project: old-etl is disabled but neither bound nor keyed: no SH-006")
    rev = audit_json(tap, "one project, reversed", *map(fx, reversed(ONE_PROJECT)))
    tap.eq(sorted(f["fingerprint"] for f in rev["findings"]),
           sorted(f["fingerprint"] for f in j["findings"]),
           "one project: the same findings in the reverse input order")

    with ft.tempdir() as d:
        trusted = os.path.join(d, "trusted.txt")
        with open(trusted, "w") as f:
            f.write("# vendors\nprojects/other-org-proj\n")
        j = audit_json(tap, "trusted projects", "--trusted-projects", trusted,
                       fx("gcp_gcloud_projects_get-iam-policy.json"))
        tap.ok(not [f for f in j["findings"] if f["rule_id"] == "GCP-SH-008"],
               "--trusted-projects: the vendor project's SA is no longer external")
        with open(trusted, "w") as f:
            f.write("ok-project\nNot A Project\n")
        r = audit("--trusted-projects", trusted, fx("gcp_gcloud_projects_get-iam-policy.json"))
        tap.ok(r.rc == 2 and "trusted.txt:2: expected a project id" in r.err and r.out == "",
               "--trusted-projects: a bad line is a usage error with its line", r)

        agent = os.path.join(d, "agent.json")
        ft.write_json(agent, {"etag": "x", "bindings": [
            {"role": "roles/owner",
             "members": ["serviceAccount:service-42@gcp-sa-pubsub.iam.gserviceaccount.com"]}]})
        j = audit_json(tap, "agent", "--gcp-resource", "projects/p42", agent)
        tap.ok(not [f for f in j["findings"] if f["rule_id"] == "GCP-OP-001"],
               "service agents: excluded from the OP rules by default")
        j = audit_json(tap, "agent included", "--gcp-resource", "projects/p42",
                       "--include-service-agents", agent)
        tap.eq(triples(j, "GCP-OP-001"),
               [("GCP-OP-001", sa("service-42@gcp-sa-pubsub.iam.gserviceaccount.com", "42"),
                 "high")], "--include-service-agents: the agent's Owner is reported")
        j = audit_json(tap, "org resource", "--gcp-resource", "organizations/7",
                       "--include-service-agents", agent)
        tap.eq([(f["severity"], f["account"]) for f in j["findings"]
                if f["rule_id"] == "GCP-OP-001"], [("critical", "organizations/7")],
               "--gcp-resource organizations/N: an SA with Owner at the org is critical")
        r = audit("--gcp-resource", "buckets/x", agent)
        tap.ok(r.rc == 2 and "--gcp-resource" in r.err, "--gcp-resource: a bad name is a usage "
               "error", r)

        # CAI as NDJSON, as gcloud asset export writes it
        for name in ("policylibrary_cai_iam_allowed_bindings.json",
                     "policylibrary_cai_gcp_iam_restrict_service_account_key_age.json"):
            with open(fx(name)) as f:
                assets = json.load(f)
            nd = os.path.join(d, name.replace(".json", ".ndjson"))
            with open(nd, "w") as f:
                f.write("".join(json.dumps(a) + "\n" for a in assets))
            a1 = audit_json(tap, name, fx(name))
            a2 = audit_json(tap, name + " as NDJSON", nd)
            tap.eq(sorted(x["fingerprint"] for x in a2["findings"]),
                   sorted(x["fingerprint"] for x in a1["findings"]),
                   f"NDJSON: {name} one asset a line gives the findings of the array")
            tap.eq([i["format"] for i in a2["inputs"]], ["gcp-cai"], "NDJSON: detected as gcp-cai")

        # The service accounts reach the shadow-identity rules (audit_identity_note): one with
        # a user-managed key is X-003 (GCP is brokered), and X-004 too when undeclared.
        pol = os.path.join(d, "policies")
        os.mkdir(pol)
        inputs = [fx(n) for n in ONE_PROJECT[:3]]
        for declared, want in (("legacy-batch", [("X-003", "legacy-batch")]),
                               ("ci-deployer", [("X-003", "legacy-batch"),
                                                ("X-004", "legacy-batch")])):
            ft.write_json(os.path.join(pol, "p.json"), {
                "version": 1, "description": "t", "policies": [{
                    "id": "batch", "match": {
                        "issuer": "https://token.actions.githubusercontent.com",
                        "subject": "repo:acme/batch:ref:refs/heads/main"},
                    "grant": {"max_ttl": 900, "gcp": [
                        {"service_account": f"{declared}@{ACME}.iam.gserviceaccount.com"}]}}]})
            j = audit_json(tap, f"policies declaring {declared}", "--policies", pol, *inputs)
            got = sorted((f["rule_id"], f["resource"].split("@")[0]) for f in j["findings"]
                         if f["rule_id"] in ("X-003", "X-004"))
            tap.eq(got, want, f"shadow: with {declared} declared, legacy-batch (user key) is "
                   + " and ".join(w[0] for w in want))

        # --format names a loader; a wrong one is an error about the shape
        r = audit("--format", "gcp-sa-keys", fx("gcp_gcloud_iam_service-accounts_list.json"))
        tap.ok(r.rc == 2 and r.out == "" and "expected a key name" in r.err,
               "--format gcp-sa-keys on an account list: exit 2, what was expected", r)


# ---- outputs ------------------------------------------------------------------------------

def output_checks(tap):
    r = audit("--output-format", "sarif", fx("gcp_gcloud_projects_get-iam-policy.json"))
    log = r.json() or {}
    run = (log.get("runs") or [{}])[0]
    rules = {x["id"] for x in run.get("tool", {}).get("driver", {}).get("rules", [])}
    want = {f"GCP-OP-00{i}" for i in range(1, 9)} | {f"GCP-SH-00{i}" for i in range(1, 10)} | \
        {"GCP-TR-001"}
    tap.ok(r.rc == 1 and want <= rules, "sarif: every GCP rule in tool.driver.rules", rules)
    levels = {x["ruleId"]: x["level"] for x in run.get("results", [])}
    tap.ok(levels.get("GCP-OP-006") == "error" and levels.get("GCP-SH-007") == "warning",
           "sarif: critical -> error, medium -> warning", levels)
    r = audit(fx("gcp_gcloud_projects_get-iam-policy.json"))
    tap.ok(r.rc == 1 and "GCP-OP-006" in r.out and "CRITICAL (1)" in r.out,
           "table: grouped by severity, exit 1", r)
    r = audit("--fail-on", "critical", fx("gcp_gcloud_iam_service-accounts_list.json"))
    tap.eq(r.rc, 0, "--fail-on critical: a list with only a low finding exits 0")


# ---- errors -------------------------------------------------------------------------------

def error_checks(tap, d):
    good = fx("gcp_gcloud_iam_service-accounts_list.json")

    def bad(name, text, want, desc):
        p = os.path.join(d, name)
        with open(p, "w") as f:
            f.write(text)
        r = audit("--output-format", "json", good, p)
        tap.ok(r.rc == 2 and r.out == "" and re.search(want, r.err),
               f"{desc}: exit 2, '{want}', no report even with a good input first", r)

    with open(fx("gcp_gcloud_projects_get-iam-policy.json")) as f:
        text = f.read()
    cut = text[:len(text) * 2 // 3]
    bad("truncated.json", cut, rf"truncated\.json:{cut.count(chr(10)) + 1}:\d+: malformed JSON",
        "truncated get-iam-policy: the line where it ends")
    bad("malformed.json", '{"bindings": [\n {"role": "roles/owner",}\n], "etag": "x"}',
        r"malformed\.json:2:\d+: malformed JSON", "malformed JSON: file, line and column")
    bad("members.json", '{"etag": "x", "bindings": [\n {"role": "roles/owner",\n'
        '  "members": {"m": "serviceAccount:a@p.iam.gserviceaccount.com"}}]}',
        r"members\.json:3: bindings/0: members: expected an array",
        "members not an array: the member, its line and what was expected")
    bad("keys.json", '[{"keyType": "USER_MANAGED", "validAfterTime": "2020-01-01T00:00:00Z",\n'
        ' "name": "projects/p/serviceAccounts/a@p.iam.gserviceaccount.com/keys/k"},\n'
        ' {"keyType": "USER_MANAGED", "validAfterTime": "soon",\n'
        '  "name": "projects/p/serviceAccounts/a@p.iam.gserviceaccount.com/keys/k2"}]',
        r"keys\.json:3: 1: validAfterTime: expected a timestamp", "a bad key date: its line")
    bad("export.ndjson", '{"name": "n", "asset_type": "t"}\n{"name": "n", "asset_type": "t"}\n'
        '{"name": "n", "asset_ty', r"export\.ndjson:3:\d+: malformed JSON",
        "NDJSON cut inside line 3")
    bad("noproject.json", '{"etag": "x", "bindings": [{"role": "roles/owner", "members": '
        '["user:a@example.com"]}]}', r"noproject\.json: cannot tell which project.*"
        r"--gcp-resource projects/ID", "get-iam-policy of unknown project: asks for "
        "--gcp-resource")
    bad("other.json", '[{"kind": "storage#bucket"}]',
        r"other\.json: not a recognised export; expected one of:",
        "unrecognised JSON (no GCP loader claims a bucket list)")


def hostile_checks(tap, d):
    """Seeded random damage to the GCP samples: every run ends in a report (0/1) or an input
    error (2, nothing on stdout), never a crash or a sanitizer report."""
    import copy
    import random
    rnd = random.Random(6)
    names = sorted(n for n in os.listdir(FIXTURES) if n.endswith(".json"))
    srcs = []
    for n in names:
        with open(fx(n)) as f:
            srcs.append(json.load(f))
    vals = [None, 0, -1, 1.5, True, "", "*", [], {}, ["allUsers"], "deleted:", "serviceAccount:",
            "serviceAccount:a@b", "projects/", "//iam.googleapis.com/projects/p/serviceAccounts/",
            "9999-12-31T23:59:59Z", "request.time < timestamp(\"", [1, 2], {"a": {"b": []}},
            "\u001b", "x" * 3000]


    p = os.path.join(d, "damaged.json")
    failures, codes = [], set()
    for i in range(120):
        src = rnd.choice(srcs)
        ft.write_json(p, damage(rnd, copy.deepcopy(src), vals))
        r = audit("--output-format", "json", "--gcp-resource", "projects/p1", p)
        codes.add(r.rc)
        if bad_outcome(r):
            failures.append((i, r))
    tap.ok(not failures, "120 damaged GCP exports: a report or exit 2, never a crash or half "
           "report", failures[:2])
    tap.ok(2 in codes and 1 in codes, "damaged exports: both outcomes seen", codes)


def body(tap):
    try:
        sample_checks(tap)
        project_checks(tap)
        output_checks(tap)
        with ft.tempdir() as d:
            error_checks(tap, d)
            hostile_checks(tap, d)
    finally:
        tap.ok(not SCHEMA_PROBLEMS, "every JSON report of this test is valid against "
               "ferry-audit-v1.schema.json", SCHEMA_PROBLEMS[:5])


if __name__ == "__main__":
    ft.main("test_cli_audit_gcp", body)
