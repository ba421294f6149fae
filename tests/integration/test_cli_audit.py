#!/usr/bin/env python3
# TAP: `ferry audit` over AWS IAM exports, as a security engineer runs it.
#   - every AWS rule: its positive fixture (tests/audit/aws) yields exactly the expected
#     findings (rule, resource, severity) and its negative fixture none of that rule;
#   - the real and documented-shape samples in ../shared/samples/aws give the findings a
#     reviewer expects (rule id + resource), and nothing on what is fine;
#   - the three credential-report forms (CSV, JSON with decoded and with base64 Content) give
#     the same findings and fingerprints; pages split over files or in one array give what
#     the merged export gives; fingerprints survive date changes;
#   - JSON (ferry.audit/v1) and SARIF 2.1.0 (checked against the required members and types
#     of the 2.1.0 schema), the table; --fail-on exit codes;
#   - malformed, truncated, unrecognised and wrongly shaped inputs exit 2 with file and
#     position, and print no report at all even when the other inputs were fine.
import copy
import json
import os
import re
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402
from audittest import (  # noqa: E402
    NOW, SCHEMA_PROBLEMS, audit, audit_json, bad_outcome, damage, schema_problems)

FIXTURES = os.path.join(ft.SRCDIR, "tests", "audit", "aws")
SHARED = os.environ.get("FERRY_SHARED") or os.path.join(ft.SRCDIR, "..", "shared")
SAMPLES = os.path.join(SHARED, "samples")
SEVERITIES = ["critical", "high", "medium", "low", "info"]


def pairs(j, rule=None):
    return sorted((f["rule_id"], f["resource"]) for f in j["findings"]
                  if rule is None or f["rule_id"] == rule)


def has(j, rule, resource, severity=None, **evidence):
    for f in j["findings"]:
        if f["rule_id"] == rule and f["resource"] == resource and \
                (severity is None or f["severity"] == severity) and \
                all(f["evidence"].get(k) == v for k, v in evidence.items()):
            return True
    return False


# ---- per-rule fixtures ------------------------------------------------------------------

def fixture_checks(tap):
    with open(os.path.join(FIXTURES, "expected.json")) as f:
        expected = json.load(f)
    tap.eq(expected["now"], NOW, "fixtures: generated for the clock the test uses")
    known = os.path.join(FIXTURES, "known-accounts.txt")
    for rule, case in sorted(expected["rules"].items()):
        # Options a rule needs; "@NAME" is a file of the fixtures directory.
        extra = [os.path.join(FIXTURES, a[1:]) if a.startswith("@") else a
                 for a in case.get("args", [])]
        j = audit_json(tap, f"{rule} positive", "--known-accounts", known, *extra,
                       os.path.join(FIXTURES, case["positive"]))
        got = sorted((f["resource"], f["severity"]) for f in j["findings"]
                     if f["rule_id"] == rule)
        want = sorted((x["resource"], x["severity"]) for x in case["findings"])
        tap.eq(got, want, f"{rule} positive: the expected findings")
        for f in j["findings"]:
            if f["rule_id"] == rule:
                tap.ok(f["remediation"] and f["evidence"] and f["title"] and
                       re.fullmatch(r"[0-9a-f]{64}", f["fingerprint"]) and
                       f["account"] == "111122223333" and f["cloud"] == "aws",
                       f"{rule} positive: {f['resource']}: evidence, remediation, fingerprint, "
                       f"account", f)
        j = audit_json(tap, f"{rule} negative", "--known-accounts", known, *extra,
                       os.path.join(FIXTURES, case["negative"]))
        tap.eq(pairs(j, rule), [], f"{rule} negative: no finding of the rule")
    # Every AWS rule the tool declares has its pair of fixtures.
    r = audit("--output-format", "sarif", os.path.join(FIXTURES, "AWS-OP-001.neg.json"))
    rules = [x["id"] for x in r.json()["runs"][0]["tool"]["driver"]["rules"]]
    missing = [x for x in rules if x.startswith("AWS-") and x not in expected["rules"]]
    tap.eq(missing, [], "every AWS rule has a positive and a negative fixture")


# ---- the samples --------------------------------------------------------------------------

def sample_checks(tap, d):
    aws = os.path.join(SAMPLES, "aws")
    syn = os.path.join(SAMPLES, "synthetic", "aws_authz_details_edgecases.json")
    A = "arn:aws:iam::111122223333:"
    j = audit_json(tap, "synthetic edge cases", syn)
    for rule, res, sev, ev in [
            ("AWS-OP-001", A + "user/svc-legacy-etl", "critical",
             {"policy": "inline:inline-admin"}),
            ("AWS-OP-001", A + "role/vendor-xacct", "critical",
             {"policy": "arn:aws:iam::aws:policy/AdministratorAccess"}),
            ("AWS-TR-001", A + "role/public-assumable", "critical", {}),
            ("AWS-TR-005", A + "role/gha-deploy", "critical",
             {"provider": "token.actions.githubusercontent.com"}),
            ("AWS-OP-003", A + "role/service-role/app-ec2", "high", {"service": "s3"}),
            ("AWS-OP-004", A + "group/devs", "high", {"policy": "inline:dev-notaction"}),
            ("AWS-TR-004", A + "role/vendor-xacct", "medium", {"trusted_account": "999988887777"}),
            ("AWS-TR-004", A + "role/vendor-xacct", "medium", {"trusted_account": "444455556666"}),
            ("AWS-SH-001", A + "role/public-assumable", "medium", {}),
            ("AWS-SH-001", A + "role/vendor-xacct", "medium", {}),
            ("AWS-OP-013", A + "policy/unattached-admin", "low", {}),
            ("AWS-OP-005", A + "role/gha-deploy", "high", {"capabilities": [
                {"capability": "pass a role to a new EC2 instance",
                 "actions": ["iam:PassRole", "ec2:RunInstances"]},
                {"capability": "write a new version of any managed policy",
                 "actions": ["iam:CreatePolicyVersion"]}]}),
            ("AWS-OP-005", A + "group/devs", "high", {}),
            ("AWS-OP-011", A + "root", "info", {"evaluated": False})]:
        tap.ok(has(j, rule, res, sev, **ev), f"edge cases: {rule} {sev} on {res}", j)
    # What is fine stays quiet: the ExternalId-guarded vendor role, the conditioned
    # GetSecretValue, the EC2 service trust, the recently used roles, the human user.
    # carol holds the devs group's NotAction grant: reported on the group, not again on her.
    quiet = [(A + "role/vendor-xacct-extid", None), (A + "user/humans/carol", None),
             (A + "role/service-role/app-ec2", "AWS-OP-007"),
             (A + "role/service-role/app-ec2", "AWS-TR-006"),
             (A + "role/gha-deploy", "AWS-SH-001")]
    for res, rule in quiet:
        tap.ok(not any(f["resource"] == res and (rule is None or f["rule_id"] == rule)
                       for f in j["findings"]),
               f"edge cases: no {rule or 'finding'} on {res}")
    tap.eq(len(j["findings"]), 15, "edge cases: 15 findings in all", pairs(j))
    # TR-003 with --known-accounts: vendor-xacct is admin, so the unknown account is high.
    known = os.path.join(d, "known.txt")
    with open(known, "w") as f:
        f.write("999988887777  # the vendor we signed with\n\n")
    j3 = audit_json(tap, "edge cases with --known-accounts", "--known-accounts", known, syn)
    tap.ok(has(j3, "AWS-TR-003", A + "role/vendor-xacct", "high",
               trusted_account="444455556666") and
           not has(j3, "AWS-TR-003", A + "role/vendor-xacct", trusted_account="999988887777"),
           "edge cases: AWS-TR-003 high for the unknown account of an admin role, not for the "
           "known one", pairs(j3, "AWS-TR-003"))
    orgs = ft.write_json(os.path.join(d, "orgs.json"), {"Accounts": [
        {"Id": "999988887777", "Arn": "arn:aws:organizations::111122223333:account/o-x/"
         "999988887777", "Name": "vendor", "Status": "ACTIVE"}]})
    j4 = audit_json(tap, "edge cases with organizations list-accounts", "--known-accounts",
                    orgs, syn)
    tap.eq(pairs(j4, "AWS-TR-003"), pairs(j3, "AWS-TR-003"),
           "--known-accounts takes organizations list-accounts JSON too")
    badorgs = ft.write_json(os.path.join(d, "badorgs.json"), {"Accounts": [{"Id": "12"}]})
    r = audit("--known-accounts", badorgs, syn)
    tap.ok(r.rc == 2 and r.out == "" and "element 0: expected a 12-digit account id" in r.err,
           "--known-accounts JSON with a bad id: exit 2, element named", r)

    B = "arn:aws:iam::123456789012:"
    j = audit_json(tap, "cloudmapper authorization details",
                   os.path.join(aws, "cloudmapper_iam-get-account-authorization-details.json"))
    for rule, res in [("AWS-OP-001", B + "role/bad_role"), ("AWS-TR-001", B + "role/bad_role"),
                      ("AWS-OP-003", B + "role/exfiller"),
                      ("AWS-OP-007", B + "role/service-role/level1")]:
        tap.ok(has(j, rule, res), f"cloudmapper: {rule} on {res}", pairs(j))
    tap.eq(pairs(j, "AWS-SH-001"), [], "cloudmapper: no AWS-SH-001 (the export predates "
           "RoleLastUsed: unknown, not unused)")

    C = "arn:aws:iam::012345678901:"
    j = audit_json(tap, "cloudsplaining example",
                   os.path.join(aws, "cloudsplaining_example-authz-details.json"))
    for rule, res in [("AWS-OP-001", C + "user/obama"), ("AWS-OP-001", C + "group/admin"),
                      ("AWS-OP-007", C + "role/OverprivilegedEC2"),
                      ("AWS-OP-003", C + "user/biden"),
                      ("AWS-OP-009", C + "user/userwithlotsofpermissions"),
                      ("AWS-SH-001", C + "role/OverprivilegedEC2"),
                      ("AWS-OP-005", C + "role/OverprivilegedEC2"),
                      ("AWS-OP-005", C + "user/biden")]:
        tap.ok(has(j, rule, res), f"cloudsplaining: {rule} on {res}", pairs(j))
    tap.ok(has(j, "AWS-OP-007", C + "role/OverprivilegedEC2", actions=[
        "iam:createaccesskey", "secretsmanager:getsecretvalue"]),
        "cloudsplaining: OverprivilegedEC2's credential-exposure evidence names the actions")
    tap.ok(not any(f["resource"].startswith(C + "role/aws-service-role/") for f in j["findings"]),
           "cloudsplaining: nothing on service-linked roles")

    D = "arn:aws:iam::123456789012:"
    j = audit_json(tap, "aws-cli documentation example (object AttachedManagedPolicies, "
                   "IsTruncated)",
                   os.path.join(aws, "awscli_example_iam_get-account-authorization-details.json"))
    tap.ok(has(j, "AWS-OP-001", D + "group/Admins", "critical") and
           has(j, "AWS-SH-001", D + "role/EC2role"),
           "aws-cli example: Admins group is full admin, EC2role unused since 2019", pairs(j))

    reports = ["derived_credential_report.csv", "derived_get-credential-report_cli_base64.json",
               "cloudmapper_iam-get-credential-report.json"]
    results = [audit_json(tap, f"credential report {x}", os.path.join(aws, x)) for x in reports]
    E = "arn:aws:iam::123456789012:"
    j = results[0]
    for rule, res in [("AWS-SH-008", E + "root"), ("AWS-SH-006", E + "user/auditor_tmp"),
                      ("AWS-SH-003", E + "user/auditor_tmp"), ("AWS-SH-007", E + "user/user"),
                      ("AWS-SH-005", E + "user/user"), ("AWS-SH-002", E + "user/user"),
                      ("AWS-SH-004", E + "user/user")]:
        tap.ok(has(j, rule, res), f"credential report: {rule} on {res}", pairs(j))
    tap.ok(not any(f["resource"] == E + "root" and f["rule_id"] != "AWS-SH-008"
                   for f in j["findings"]), "credential report: root only gets AWS-SH-008")
    with open(os.path.join(aws, reports[1])) as f:
        cli = json.load(f)
    wrapped = dict(cli, Content="\n".join(cli["Content"][i:i + 76]
                                          for i in range(0, len(cli["Content"]), 76)))
    results.append(audit_json(tap, "credential report, base64 wrapped at 76 columns",
                              ft.write_json(os.path.join(d, "wrapped.json"), wrapped)))
    fps = [sorted(f["fingerprint"] for f in r["findings"]) for r in results]
    tap.ok(fps[0] and fps[0] == fps[1] == fps[2] == fps[3],
           "credential report: CSV, base64 JSON (one line or wrapped) and decoded JSON give the "
           "same fingerprints")
    r = audit("--output-format", "json", "--fail-on", "none", "--profile", "cis",
              os.path.join(aws, reports[0]))
    tap.ok(r.rc == 0 and has(r.json(), "AWS-SH-002", E + "user/user"),
           "credential report: --profile cis accepted", r)


# ---- pages, stdin and stable fingerprints -------------------------------------------------

def page_checks(tap, d):
    syn = os.path.join(SAMPLES, "synthetic", "aws_authz_details_edgecases.json")
    with open(syn) as f:
        whole = json.load(f)
    ref = audit_json(tap, "whole export", syn)
    p1 = {"UserDetailList": whole["UserDetailList"], "RoleDetailList": whole["RoleDetailList"][:2],
          "IsTruncated": True, "Marker": "m1"}
    p2 = {"GroupDetailList": whole["GroupDetailList"],
          "RoleDetailList": whole["RoleDetailList"][2:],
          "Policies": whole["Policies"], "IsTruncated": False}
    f1, f2, fa = (os.path.join(d, n) for n in ("page1.json", "page2.json", "pages.json"))
    ft.write_json(f1, p1)
    ft.write_json(f2, p2)
    ft.write_json(fa, [p1, p2])
    fp = sorted(f["fingerprint"] for f in ref["findings"])
    j = audit_json(tap, "two page files", f1, f2)
    tap.eq(sorted(f["fingerprint"] for f in j["findings"]), fp,
           "pages in two files: the findings of the whole export")
    with open(syn) as f:
        text_copy = f.read()
    dup = os.path.join(d, "yesterday.json")
    with open(dup, "w") as f:
        f.write(text_copy)
    j = audit_json(tap, "the same account in two inputs", syn, dup)
    tap.eq(sorted(f["fingerprint"] for f in j["findings"]), fp,
           "the same account in two inputs: each finding once (one fingerprint, one finding)")
    # Two accounts of one estate trusting each other: not third parties, in either order.
    acct_a = ft.write_json(os.path.join(d, "acct-a.json"), {"RoleDetailList": [{
        "Arn": "arn:aws:iam::111122223333:role/deploy-from-b", "AssumeRolePolicyDocument": {
            "Statement": {"Effect": "Allow", "Action": "sts:AssumeRole",
                          "Principal": {"AWS": "arn:aws:iam::555566667777:role/ci"}}}}]})
    acct_b = ft.write_json(os.path.join(d, "acct-b.json"), {"RoleDetailList": [{
        "Arn": "arn:aws:iam::555566667777:role/ci"}]})
    known = os.path.join(d, "known-a.txt")
    with open(known, "w") as f:
        f.write("111122223333\n")
    j = audit_json(tap, "account A alone", "--known-accounts", known, acct_a)
    tap.eq(sorted(f["rule_id"] for f in j["findings"] if f["rule_id"].startswith("AWS-TR")),
           ["AWS-TR-003", "AWS-TR-004"], "account A alone: its trust to B is unknown and "
           "third-party")
    for order in ((acct_a, acct_b), (acct_b, acct_a)):
        j = audit_json(tap, "accounts A and B", "--known-accounts", known, *order)
        tap.eq([f["rule_id"] for f in j["findings"] if f["rule_id"].startswith("AWS-TR")], [],
               f"accounts A and B audited together ({os.path.basename(order[0])} first): "
               "no cross-account finding")
    j = audit_json(tap, "array of pages", fa)
    tap.eq(sorted(f["fingerprint"] for f in j["findings"]), fp,
           "a JSON array of pages: the findings of the whole export")
    with open(syn) as f:
        text = f.read()
    r = audit("--output-format", "json", "--fail-on", "none", "-", stdin=text)
    tap.ok(r.rc == 0 and sorted(f["fingerprint"] for f in r.json()["findings"]) == fp,
           "stdin (-): the same findings", r)
    # Dates move, fingerprints stay: every CreateDate shifted, members reordered.
    moved = copy.deepcopy(whole)
    for lst in ("UserDetailList", "GroupDetailList", "RoleDetailList"):
        for p in moved[lst]:
            p["CreateDate"] = "2017-03-03 03:03:03+00:00"
        moved[lst].reverse()
    mf = os.path.join(d, "moved.json")
    ft.write_json(mf, moved)
    j = audit_json(tap, "dates moved", mf)
    tap.eq(sorted(f["fingerprint"] for f in j["findings"]), fp,
           "fingerprints do not depend on dates or order")
    r1 = audit("--output-format", "json", syn)
    r2 = audit("--output-format", "json", syn)
    tap.ok(r1.out == r2.out and r1.rc == 1, "two runs print identical JSON (sorted findings)")


# ---- outputs and exit codes --------------------------------------------------------------

def check_sarif(log):
    """Problems against the required members and types of SARIF 2.1.0 (sarif-schema-2.1.0:
    sarifLog, run, tool, toolComponent, reportingDescriptor, result, message, location)."""
    p = []

    def need(obj, key, typ, where):
        if not isinstance(obj, dict) or key not in obj:
            p.append(f"{where}: missing {key}")
            return None
        if not isinstance(obj[key], typ):
            p.append(f"{where}.{key}: wrong type {type(obj[key]).__name__}")
            return None
        return obj[key]

    if log.get("version") != "2.1.0":
        p.append("version is not 2.1.0")
    if not isinstance(log.get("$schema", ""), str):
        p.append("$schema is not a string")
    runs = need(log, "runs", list, "sarifLog") or []
    for i, run in enumerate(runs):
        w = f"runs[{i}]"
        tool = need(run, "tool", dict, w) or {}
        driver = need(tool, "driver", dict, w + ".tool") or {}
        need(driver, "name", str, w + ".tool.driver")
        rules = driver.get("rules", [])
        ids = []
        for k, rd in enumerate(rules):
            rid = need(rd, "id", str, f"rules[{k}]")
            ids.append(rid)
            for m in ("shortDescription", "fullDescription", "help"):
                if m in rd:
                    need(rd[m], "text", str, f"rules[{k}].{m}")
            lvl = rd.get("defaultConfiguration", {}).get("level", "warning")
            if lvl not in ("none", "note", "warning", "error"):
                p.append(f"rules[{k}]: bad level {lvl}")
            ss = rd.get("properties", {}).get("security-severity")
            if not (isinstance(ss, str) and re.fullmatch(r"\d+\.\d", ss)):
                p.append(f"rules[{k}]: security-severity {ss!r}")
        if len(set(ids)) != len(ids):
            p.append("duplicate rule ids")
        for k, res in enumerate(run.get("results", [])):
            w = f"results[{k}]"
            msg = need(res, "message", dict, w) or {}
            if "text" not in msg and "id" not in msg:
                p.append(f"{w}.message: neither text nor id")
            if res.get("level", "warning") not in ("none", "note", "warning", "error"):
                p.append(f"{w}: bad level")
            idx = res.get("ruleIndex", -1)
            if not isinstance(idx, int) or idx < -1 or (idx >= 0 and
                                                          ids[idx] != res.get("ruleId")):
                p.append(f"{w}: ruleIndex {idx} does not point at ruleId")
            for fk, fv in res.get("partialFingerprints", {}).items():
                if not isinstance(fv, str):
                    p.append(f"{w}.partialFingerprints.{fk}: not a string")
            for loc in res.get("locations", []):
                al = loc.get("physicalLocation", {}).get("artifactLocation", {})
                if "uri" in al and not isinstance(al["uri"], str):
                    p.append(f"{w}: artifactLocation.uri not a string")
                for ll in loc.get("logicalLocations", []):
                    if not isinstance(ll.get("fullyQualifiedName", ""), str):
                        p.append(f"{w}: logicalLocation name")
            if not isinstance(res.get("properties", {}), dict):
                p.append(f"{w}: properties not an object")
    return p


def output_checks(tap):
    syn = os.path.join(SAMPLES, "synthetic", "aws_authz_details_edgecases.json")
    r = audit("--output-format", "json", syn)
    j = r.json() or {}
    tap.ok(r.rc == 1 and j.get("schema") == "ferry.audit/v1" and
           j.get("tool", {}).get("name") == "ferry" and
           j.get("inputs") == [{"path": syn, "format": "aws-authz"}],
           "json: schema ferry.audit/v1, tool, inputs with the detected format", r)
    errors = schema_problems(j)
    tap.ok(not errors, "json: valid against tests/audit/ferry-audit-v1.schema.json", errors[:5])
    s = j.get("summary", {})
    tap.ok(all(s.get(k) == sum(1 for f in j["findings"] if f["severity"] == k)
               for k in SEVERITIES) and s.get("total") == len(j["findings"]),
           "json: summary counts match the findings", s)
    order = [SEVERITIES.index(f["severity"]) for f in j["findings"]]
    tap.ok(order == sorted(order), "json: findings sorted by severity, critical first")

    r = audit("--output-format", "sarif", syn)
    log = r.json() or {}
    problems = check_sarif(log)
    tap.ok(r.rc == 1 and not problems, "sarif: valid against the 2.1.0 required members",
           "\n".join(problems) or r)
    run = (log.get("runs") or [{}])[0]
    results = run.get("results", [])
    tap.eq(len(results), len(j["findings"]), "sarif: one result per finding")
    lv = {"critical": "error", "high": "error", "medium": "warning", "low": "note",
          "info": "note"}
    score = {"critical": "9.0", "high": "7.0", "medium": "4.0", "low": "2.0", "info": "0.0"}
    by_fp = {f["fingerprint"]: f for f in j["findings"]}
    ok = True
    for res in results:
        f = by_fp.get(res.get("partialFingerprints", {}).get("ferry/v1"))
        ll = res["locations"][0]["logicalLocations"][0]
        if not f or res["ruleId"] != f["rule_id"] or res["level"] != lv[f["severity"]] or \
                res["properties"]["security-severity"] != score[f["severity"]] or \
                ll["fullyQualifiedName"] != f["resource"] or \
                res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] != syn:
            ok = False
    tap.ok(ok, "sarif: ruleId, level, security-severity, fingerprint and resource per result")
    rules = {x["id"]: x for x in run["tool"]["driver"]["rules"]}
    tap.ok(rules.get("AWS-TR-005", {}).get("defaultConfiguration", {}).get("level") == "error"
           and "Remediation:" in rules["AWS-TR-005"]["help"]["text"]
           and rules.get("AWS-SH-005", {}).get("defaultConfiguration", {}).get("level") == "note",
           "sarif: rules carry help text, remediation and the default level")

    r = audit(syn)
    tap.ok(r.rc == 1 and "CRITICAL (4)" in r.out and "HIGH (4)" in r.out and "LOW (1)" in r.out and
           r.out.index("CRITICAL") < r.out.index("HIGH") < r.out.index("MEDIUM") and
           "15 findings: 4 critical, 4 high, 5 medium, 1 low, 1 info (1 input)" in r.out,
           "table: grouped by severity with counts and a summary", r)

    low_only = os.path.join(FIXTURES, "AWS-OP-013.pos.json")
    tap.eq(audit(low_only).rc, 1, "exit 1: a low finding fails by default")
    tap.eq(audit("--fail-on", "medium", low_only).rc, 0, "exit 0: --fail-on medium, only low")
    tap.eq(audit("--fail-on", "critical", syn).rc, 1, "exit 1: --fail-on critical, critical")
    tap.eq(audit("--fail-on", "none", syn).rc, 0, "exit 0: --fail-on none")
    r = audit(os.path.join(FIXTURES, "AWS-OP-001.neg.json"))
    tap.ok(r.rc == 0 and "1 finding: 0 critical, 0 high, 0 medium, 0 low, 1 info" in r.out,
           "exit 0: a clean input (only the info note that usage was not evaluated)", r)
    r = audit(os.path.join(FIXTURES, "AWS-SH-008.neg.csv"))
    tap.ok(r.rc == 0 and "0 findings" in r.out, "exit 0: a clean credential report", r)
    r = audit("--fail-on", "info", os.path.join(FIXTURES, "AWS-OP-001.neg.json"))
    tap.eq(r.rc, 1, "exit 1: --fail-on info counts the info note")


# ---- errors -------------------------------------------------------------------------------

def error_checks(tap, d):
    good = os.path.join(FIXTURES, "AWS-OP-001.pos.json")

    def bad(name, text, want, desc, *extra):
        p = os.path.join(d, name)
        with open(p, "w") as f:
            f.write(text)
        first = os.path.join(FIXTURES, "AWS-SH-005.pos.csv") if extra else good
        for fmt in ("table", "json", "sarif"):
            r = audit("--output-format", fmt, *extra, first, p)
            if not (r.rc == 2 and r.out == "" and re.search(want, r.err)):
                tap.ok(False, f"{desc} ({fmt})", r)
                return
        tap.ok(True, f"{desc}: exit 2, '{want}', no report even with a good input first")

    bad("malformed.json", '{"RoleDetailList": [\n  {"Arn": "x",}\n]}',
        r"malformed\.json:2:\d+: malformed JSON", "malformed JSON: file, line and column")
    with open(os.path.join(SAMPLES, "synthetic", "aws_authz_details_edgecases.json")) as f:
        text = f.read()
    cut = text[:len(text) * 2 // 3]
    line = cut.count("\n") + 1
    bad("truncated.json", cut, rf"truncated\.json:{line}:\d+: malformed JSON",
        "truncated export: file and the line where it ends")
    bad("other.json", '{"Buckets": []}', r"other\.json: not a recognised export; expected one "
        r"of: aws-authz", "unrecognised JSON: names what was expected")
    bad("notes.txt", "hello\n", r"notes\.txt: not a recognised export", "unrecognised text")
    bad("shape.json", '{"UserDetailList": [],\n "RoleDetailList": {"Arn": "x"}}',
        r"shape\.json:2: RoleDetailList: expected an array", "wrong shape: names the member "
        "and its line")
    bad("noarn.json", '{"UserDetailList": [\n {"Arn": "arn:aws:iam::111122223333:user/a"},\n'
        ' {"UserName": "u"}]}',
        r"noarn\.json:3: UserDetailList\[1\]: expected an Arn", "principal without Arn: its "
        "line and index")
    bad("baddoc.json", '{"RoleDetailList": [\n {"Arn": "arn:aws:iam::111122223333:role/r", '
        '"AssumeRolePolicyDocument": "%7B%22Statement%22%3A"}]}',
        r"baddoc\.json:2: arn:aws:iam::111122223333:role/r AssumeRolePolicyDocument: "
        r"URL-encoded policy document: 1:\d+: malformed JSON", "truncated URL-encoded document: "
        "the role's line, the role, the position inside the document")
    hdr = open(os.path.join(FIXTURES, "AWS-SH-005.pos.csv")).read().splitlines()[0]
    bad("short.csv", hdr + "\nalice,arn:aws:iam::111122223333:user/alice,2020\n",
        r"short\.csv: line 2: expected 22 comma-separated fields as in the header, got 3",
        "CSV row with missing fields")
    bad("b64.json", '{"Content": "not base64!", "ReportFormat": "text/csv"}',
        r"b64\.json: Content: expected base64", "credential report with bad base64")
    row = ["bob", "arn:aws:iam::111122223333:user/bob", "2020-01-01T00:00:00+00:00", "false",
           "N/A", "N/A", "N/A", "false", "true", "yesterday", "N/A", "N/A", "N/A", "false",
           "N/A", "N/A", "N/A", "N/A", "false", "N/A", "false", "N/A"]
    bad("date.csv", hdr + "\n" + ",".join(row) + "\n",
        r"date\.csv: line 2: access_key_1: expected a date or N/A, got 'yesterday'",
        "credential report with a bad date")
    bad("forced.json", '{"RoleDetailList": []}', r"forced\.json: line 1: expected the "
        r"credential report header", "--format overrides detection", "--format",
        "aws-credreport")
    bad("pages.json", '[{"RoleDetailList": []},\n {"Foo": 1}]',
        r"pages\.json:2: page 2: expected an object with UserDetailList",
        "array of pages with a stranger in it")

    # A directory's files are inputs (test_cli_audit_live.py); the bad ones here spoil the run.
    r = audit(good, d)
    tap.ok(r.rc == 2 and r.out == "" and (d + "/") in r.err,
           "a directory of inputs holding a bad one: exit 2 naming it, no report", r)
    r = audit(good, os.path.join(d, "does-not-exist.json"))
    tap.ok(r.rc == 2 and r.out == "" and "does-not-exist.json" in r.err,
           "missing file: exit 2, named, no report", r)
    with open(os.path.join(d, "big.json"), "w") as f:
        f.write('{"RoleDetailList": []' + " " * (1024 * 1024 + 10) + "}")
    r = audit("--max-input-size", "1", os.path.join(d, "big.json"))
    tap.ok(r.rc == 2 and "input size limit" in r.err and r.out == "",
           "an input over --max-input-size: exit 2 before parsing", r)
    for args, desc in [((), "no input"), (("--fail-on", "severe", good), "bad --fail-on"),
                       (("--output-format", "html", good), "bad --output-format"),
                       (("--format", "gcp-iam", good), "unknown --format"),
                       (("--unused-days", "ten", good), "bad --unused-days"),
                       (("--profile", "pci", good), "unknown --profile"),
                       (("--known-accounts", good, good), "--known-accounts not a list of ids"),
                       (("--owner-tag-keys", "", good), "empty --owner-tag-keys"),
                       (("--owner-tag-keys", "owner,", good), "--owner-tag-keys ending in ,")]:
        r = audit(*args)
        tap.ok(r.rc == 2 and r.out == "", f"usage error: {desc} exits 2", r)
    # An IaC inventory that is none: named, exit 2, no report.
    r = audit("--iac-inventory", good, good)
    tap.ok(r.rc == 2 and r.out == "" and "--iac-inventory" in r.err and
           "not an IaC inventory; expected terraform show -json" in r.err,
           "--iac-inventory given an IAM export: exit 2 saying what was expected", r)
    with open(os.path.join(d, "tf-cut.json"), "w") as f:
        f.write('{"format_version": "1.0",\n "values": {"root_module": {"resources": [')
    r = audit("--iac-inventory", os.path.join(d, "tf-cut.json"), good)
    tap.ok(r.rc == 2 and r.out == "" and re.search(r"tf-cut\.json:2:\d+: malformed JSON", r.err),
           "--iac-inventory truncated: exit 2 with file, line and column", r)
    r = ft.ferry("audit", "--help")
    tap.ok(r.rc == 0 and "--output-format" in r.out and "--fail-on" in r.out, "--help", r)


def hostile_checks(tap, d):
    """Seeded random damage to real exports: every run ends in a report (0/1) or an input
    error (2, nothing on stdout), never a crash or a sanitizer report."""
    import random
    rnd = random.Random(6)
    srcs = []
    for name in (os.path.join(SAMPLES, "synthetic", "aws_authz_details_edgecases.json"),
                 os.path.join(SAMPLES, "aws", "cloudsplaining_example-authz-details.json")):
        with open(name) as f:
            srcs.append(json.load(f))
    vals = [None, 0, -1, 1.5, True, "", "*", [], {}, ["*"], {"AWS": "*"}, "%", "%ZZ", "%7B",
            "arn:", "arn:aws:iam::1:x", [1, 2], {"a": {"b": []}}, "\u001b", "x" * 3000]


    p = os.path.join(d, "damaged.json")
    failures, codes = [], set()
    for i in range(80):
        ft.write_json(p, damage(rnd, copy.deepcopy(rnd.choice(srcs)), vals))
        r = audit("--output-format", "json", p)
        codes.add(r.rc)
        if bad_outcome(r):
            failures.append((i, r))
    tap.ok(not failures, "80 damaged exports: a report or exit 2, never a crash or half report",
           failures[:2])
    tap.ok(2 in codes and 1 in codes, "damaged exports: both outcomes seen", codes)


def body(tap):
    try:
        checks(tap)
    finally:
        tap.ok(not SCHEMA_PROBLEMS, "every JSON report of this test is valid against "
               "ferry-audit-v1.schema.json", SCHEMA_PROBLEMS[:5])


def spill_checks(tap, d):
    """Past 65,536 records in memory, the records of the accounts the run is not reading go to
    an unlinked file in $TMPDIR and come back when their account does: account A (40,000 roles,
    one granted s3), then B (40,000 roles, one trusting an account outside the run: A's records
    go to the file), then usage data of A's role (its grants read back from the file)."""
    A, B = "arn:aws:iam::111100000001:", "arn:aws:iam::111100000002:"

    def roles(prefix):
        return [{"RoleName": f"r{i}", "Arn": f"{prefix}role/r{i}",
                 "CreateDate": "2020-01-01T00:00:00Z"} for i in range(40000)]
    a, b = roles(A), roles(B)
    a[0]["RolePolicyList"] = [{"PolicyName": "p", "PolicyDocument": {"Statement": {
        "Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}}}]
    b[39999]["AssumeRolePolicyDocument"] = {"Statement": [{"Effect": "Allow", "Principal": {
        "AWS": "arn:aws:iam::999900000000:root"}, "Action": "sts:AssumeRole"}]}
    ft.write_json(os.path.join(d, "1-a.json"), {"RoleDetailList": a})
    ft.write_json(os.path.join(d, "2-b.json"), {"RoleDetailList": b})
    ft.write_json(os.path.join(d, "3-usage.json"), {
        "Arn": A + "role/r0", "JobStatus": "COMPLETED", "ServicesLastAccessed": [
            {"ServiceNamespace": "s3", "LastAuthenticated": None}]})
    inputs = [os.path.join(d, n) for n in ("1-a.json", "2-b.json", "3-usage.json")]
    tmp = os.path.join(d, "tmp")
    os.mkdir(tmp)
    r = ft.ferry("audit", "--now", NOW, "--output-format", "json", *inputs,
                 env=ft.clean_env({"TMPDIR": tmp}), timeout=300)
    j = r.json() or {"findings": []}
    tap.ok(r.rc == 1 and has(j, "AWS-OP-011", A + "role/r0", unused_services=["s3"],
                             granted_from="policies") and
           has(j, "AWS-TR-004", B + "role/r39999", trusted_account="999900000000"),
           "records put aside in the temporary file: the grants of A come back for its usage "
           "data, B's trust is decided at the end", pairs(j))
    tap.ok(os.listdir(tmp) == [], "nothing is left in TMPDIR", os.listdir(tmp))
    r = ft.ferry("audit", "--now", NOW, "--output-format", "json", *inputs,
                 env=ft.clean_env({"TMPDIR": os.path.join(d, "missing")}), timeout=300)
    tap.ok(r.rc == 2 and r.out == "" and "2-b.json" in r.err and
           "temporary file of audit records in " + os.path.join(d, "missing") in r.err,
           "a TMPDIR that cannot hold the file: exit 2 naming the input and the directory", r)


def checks(tap):
    fixture_checks(tap)
    with ft.tempdir() as d:
        spill_checks(tap, d)
    if not os.path.isdir(os.path.join(SAMPLES, "aws")):
        # A tarball build without ../shared: the in-tree fixtures above still ran.
        if os.environ.get("FERRY_REQUIRE_VECTORS") == "1":
            tap.ok(False, f"shared samples present at {SAMPLES} (FERRY_REQUIRE_VECTORS=1)")
        else:
            tap.skip("samples, pages, outputs, errors", f"{SAMPLES} not found")
        return
    with ft.tempdir() as d:
        sample_checks(tap, d)
        page_checks(tap, d)
        output_checks(tap)
        error_checks(tap, d)
        hostile_checks(tap, d)


if __name__ == "__main__":
    ft.main("test_cli_audit", body)
