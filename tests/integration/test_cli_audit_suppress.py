#!/usr/bin/env python3
# TAP: `ferry audit --suppress`, `--baseline` and the NDJSON and CSV outputs, as a security
# team gates CI with them (docs/internals/audit.md, "Suppressions and baselines").
#   - an exact suppression leaves the counts and the exit code, stays in JSON (suppressed:
#     reason, owner, expires) and SARIF (suppressions: external, justification), the table
#     shows a count; the JSON form of the file does the same;
#   - an expired suppression suppresses nothing and is reported in every output, an unused one
#     too;
#   - a file with a missing reason or expiry, or an expiry too far ahead: exit 2, FILE:LINE,
#     nothing on stdout;
#   - a baseline: exit 0 when nothing is new, 1 when one new finding appears (marked "new" in
#     JSON and baselineState in SARIF), absent findings counted; a file that is not a
#     ferry.audit/v1 report: exit 2;
#   - CSV (RFC 4180, formula cells prefixed with '), NDJSON (one finding per line plus the
#     summary line); every JSON report valid against ferry-audit-v1.schema.json.
import csv
import io
import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402
from audittest import audit, schema_problems  # noqa: E402
import test_cli_audit as tca  # noqa: E402  (check_sarif)

FIX = os.path.join(ft.SRCDIR, "tests", "audit", "suppress")
EDGE = os.path.join(FIX, "edgecases.json")
A = "arn:aws:iam::111122223333:"
ETL = A + "user/svc-legacy-etl"
PROBLEMS = []


def report(tap, desc, *args, rc=None):
    r = audit("--output-format", "json", *args)
    j = r.json()
    tap.ok(j is not None and (rc is None or r.rc == rc) and r.err == "",
           f"{desc}: JSON report" + (f", exit {rc}" if rc is not None else ""), r)
    if j is not None:
        PROBLEMS.extend((desc, p) for p in schema_problems(j))
    return j or {"findings": [], "summary": {}}


def find(j, rule, res):
    return [f for f in j["findings"] if f["rule_id"] == rule and f["resource"] == res]


def sarif_results(r):
    log = r.json() or {}
    return log, (log.get("runs") or [{}])[0]


def check_sarif_extras(log):
    """SARIF 2.1.0 members this feature adds (suppression, baselineState, invocation,
    notification objects of sarif-schema-2.1.0)."""
    p = []
    run = log["runs"][0]
    for k, res in enumerate(run.get("results", [])):
        if res.get("baselineState", "new") not in ("new", "unchanged", "updated", "absent"):
            p.append(f"results[{k}]: baselineState")
        for s in res.get("suppressions", []):
            if s.get("kind") not in ("inSource", "external"):
                p.append(f"results[{k}]: suppression kind")
            if s.get("status", "accepted") not in ("accepted", "underReview", "rejected"):
                p.append(f"results[{k}]: suppression status")
            if not isinstance(s.get("justification", ""), str):
                p.append(f"results[{k}]: justification")
    for inv in run.get("invocations", []):
        if not isinstance(inv.get("executionSuccessful"), bool):
            p.append("invocation without executionSuccessful")
        for n in inv.get("toolExecutionNotifications", []):
            if not isinstance(n.get("message", {}).get("text"), str):
                p.append("notification without message text")
            if n.get("level", "warning") not in ("none", "note", "warning", "error"):
                p.append("notification level")
    return p


def suppress_checks(tap, d):
    plain = report(tap, "no suppressions", "--fail-on", "none", EDGE, rc=0)
    crit = plain["summary"].get("critical")
    tap.eq(len(find(plain, "AWS-OP-001", ETL)), 1, "the legacy ETL user is full admin (AWS-OP-001)")

    sup = os.path.join(FIX, "suppress.yaml")
    j = report(tap, "suppress.yaml", "--suppress", sup, "--fail-on", "none", EDGE, rc=0)
    f = find(j, "AWS-OP-001", ETL)
    tap.ok(len(f) == 1 and f[0].get("suppressed") == {
        "reason": "legacy ETL user, replaced by the federated role in SEC-1234",
        "owner": "data-platform@example.com", "expires": "2026-12-31", "file": sup, "line": 4},
        "suppressed finding stays in JSON with reason, owner, expiry and where", f)
    tap.eq(j["summary"].get("critical"), crit - 1, "critical count without the suppressed one")
    tap.eq(j["summary"].get("suppressed"), 1, "summary.suppressed")
    tap.eq(j["summary"].get("total"), len(j["findings"]) - 1, "total leaves the suppressed out")
    sec = j.get("suppressions", {})
    tap.eq((sec.get("entries"), sec.get("suppressed")), (3, 1), "3 entries read, 1 suppressed")
    exp = sec.get("expired", [])
    tap.ok(len(exp) == 1 and exp[0].get("resource_glob") == A + "role/vendor-*" and
           exp[0].get("line") == 12 and exp[0].get("expires") == "2026-09-01" and
           exp[0].get("matched") == 1 and exp[0].get("owner") == "vendor-mgmt@example.com",
           "expired glob suppression reported with its line and the finding it would match", exp)
    tap.eq(len(find(j, "AWS-SH-001", A + "role/vendor-xacct")), 1, "expired: vendor-xacct's "
           "AWS-SH-001 is reported")
    tap.ok(not any("suppressed" in x for x in find(j, "AWS-SH-001", A + "role/vendor-xacct")),
           "expired: the finding is not marked suppressed")
    un = sec.get("unused", [])
    tap.ok(len(un) == 1 and un[0].get("resource") == A + "role/deleted-last-year" and
           un[0].get("line") == 18 and un[0].get("reason") == "kept until the role is gone",
           "unused suppression reported (folded reason trimmed)", un)

    # Exit code: only the suppressed critical -> --fail-on critical still fails for the others.
    r = audit("--suppress", sup, "--fail-on", "critical", EDGE)
    tap.eq(r.rc, 1, "other criticals still fail the run")
    only = os.path.join(d, "only-etl.json")
    ft.write_json(only, {"UserDetailList": [u for u in json.load(open(EDGE))["UserDetailList"]
                                           if u["UserName"] == "svc-legacy-etl"]})
    r0 = audit("--fail-on", "critical", only)
    r1 = audit("--suppress", sup, "--fail-on", "critical", only)
    tap.ok(r0.rc == 1 and r1.rc == 0, "the suppressed critical alone: exit 1 without, 0 with "
           "--suppress", (r0, r1))

    # JSON form.
    jj = report(tap, "suppress.json", "--suppress", os.path.join(FIX, "suppress.json"),
                "--fail-on", "none", EDGE, rc=0)
    tap.eq(find(jj, "AWS-OP-001", ETL)[0].get("suppressed", {}).get("line"), 3,
           "JSON suppression file: same suppression, its line")

    # SARIF.
    r = audit("--output-format", "sarif", "--suppress", sup, EDGE)
    log, run = sarif_results(r)
    probs = tca.check_sarif(log) + check_sarif_extras(log) if log else ["no SARIF"]
    tap.ok(not probs, "SARIF with suppressions is valid", probs[:5])
    sres = [x for x in run.get("results", []) if x.get("suppressions")]
    tap.ok(len(sres) == 1 and sres[0]["ruleId"] == "AWS-OP-001" and
           sres[0]["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == ETL and
           sres[0]["suppressions"][0]["kind"] == "external" and
           sres[0]["suppressions"][0]["justification"].startswith("legacy ETL user"),
           "SARIF: the suppressed result has an external suppression with the justification",
           sres)
    notes = [n for inv in run.get("invocations", []) for n in
             inv.get("toolExecutionNotifications", [])]
    ids = sorted(n.get("descriptor", {}).get("id") for n in notes)
    tap.eq(ids, ["ferry/suppression-expired", "ferry/suppression-unused"],
           "SARIF: expired and unused suppressions as tool notifications")
    tap.eq(run.get("properties", {}).get("suppressed"), 1, "SARIF: run.properties.suppressed")

    # Table.
    r = audit("--suppress", sup, "--fail-on", "none", EDGE)
    tap.ok(r.rc == 0 and "1 finding suppressed (3 suppressions read)" in r.out and
           "user/svc-legacy-etl" not in r.out and
           f"expired suppression {sup}:12: AWS-SH-001 {A}role/vendor-* (glob)" in r.out and
           f"unused suppression {sup}:18: AWS-OP-001 {A}role/deleted-last-year" in r.out,
           "table: the count, expired and unused lines, the suppressed finding not listed", r)


def refused_checks(tap):
    for name, want in [("no-reason.yaml", ":6: suppression without a reason"),
                       ("no-expiry.yaml", ":2: suppression without expires"),
                       ("far-expiry.yaml", ":2: expires 2030-01-01 is more than 366 days")]:
        p = os.path.join(FIX, name)
        for fmt in ("table", "json"):
            r = audit("--output-format", fmt, "--suppress", p, EDGE)
            tap.ok(r.rc == 2 and r.out == "" and f"--suppress {p}{want}" in r.err,
                   f"{name} ({fmt}): exit 2, {want.strip(': ')}, nothing on stdout", r)
    r = audit("--suppress", os.path.join(FIX, "missing.yaml"), EDGE)
    tap.ok(r.rc == 2 and "missing.yaml" in r.err and r.out == "", "missing file: exit 2", r)


def baseline_checks(tap, d):
    base = os.path.join(d, "base.json")
    r = audit("--output-format", "json", EDGE)
    with open(base, "w") as f:
        f.write(r.out)
    j0 = r.json()
    j = report(tap, "baseline, same export", "--baseline", base, EDGE, rc=0)
    tap.ok(all(f.get("baseline") == "unchanged" for f in j["findings"]) and
           j.get("baseline", {}).get("new") == 0 and
           j.get("baseline", {}).get("unchanged") == len(j0["findings"]),
           "nothing new: every finding unchanged, exit 0", j.get("baseline"))
    # The same export with the ETL user's finding missing from the baseline: one new finding.
    older = dict(j0, findings=[f for f in j0["findings"]
                              if not (f["rule_id"] == "AWS-OP-001" and f["resource"] == ETL)])
    ft.write_json(base, older)
    j = report(tap, "baseline without the ETL finding", "--baseline", base, EDGE, rc=1)
    new = [(f["rule_id"], f["resource"]) for f in j["findings"] if f.get("baseline") == "new"]
    tap.eq(new, [("AWS-OP-001", ETL)], "one new finding: exit 1, marked new")
    tap.eq(j.get("baseline", {}).get("new"), 1, "baseline.new = 1")
    r = audit("--baseline", base, "--fail-on", "high", EDGE)
    tap.eq(r.rc, 1, "--fail-on high: the new critical fails")
    r = audit("--baseline", base, "--suppress", os.path.join(FIX, "suppress.json"), EDGE)
    tap.eq(r.rc, 0, "the one new finding suppressed: exit 0")
    r = audit("--output-format", "sarif", "--baseline", base, EDGE)
    log, run = sarif_results(r)
    states = sorted({x.get("baselineState") for x in run.get("results", [])})
    tap.ok(r.rc == 1 and states == ["new", "unchanged"] and
           [x["locations"][0]["logicalLocations"][0]["fullyQualifiedName"]
            for x in run["results"] if x.get("baselineState") == "new"] == [ETL] and
           not tca.check_sarif(log) and not check_sarif_extras(log),
           "SARIF: baselineState new for the ETL user, unchanged for the rest, valid", states)
    # A baseline with a finding since fixed: absent.
    extra = dict(j0["findings"][0], fingerprint="0" * 64, resource=A + "role/fixed-since")
    ft.write_json(base, dict(j0, findings=j0["findings"] + [extra]))
    j = report(tap, "baseline with a fixed finding", "--baseline", base, EDGE, rc=0)
    tap.ok(j.get("baseline", {}).get("absent") == 1 and
           [x["resource"] for x in j["baseline"]["absent_findings"]] == [A + "role/fixed-since"],
           "absent finding counted and listed", j.get("baseline"))
    r = audit("--output-format", "csv", "--baseline", base, EDGE)
    rows = list(csv.reader(io.StringIO(r.out)))
    tap.ok([x[6] for x in rows if x[0] == "absent"] == [A + "role/fixed-since"],
           "CSV: an absent row", rows[-1:])
    # Not a report.
    for desc, content, want in [
            ("an IAM export", open(EDGE).read(), ":1: not a ferry audit report"),
            ("SARIF", audit("--output-format", "sarif", EDGE).out, ":1: not a ferry audit report"),
            ("truncated report", j0 and json.dumps(j0)[:200], "malformed JSON"),
            ("bad fingerprint", json.dumps(dict(j0, findings=[dict(j0["findings"][0],
                                                                  fingerprint="xyz")]),
                                           indent=1), "findings[0]: fingerprint")]:
        p = os.path.join(d, "bad-base.json")
        with open(p, "w") as f:
            f.write(content)
        r = audit("--baseline", p, EDGE)
        tap.ok(r.rc == 2 and r.out == "" and want in r.err and p in r.err,
               f"baseline {desc}: exit 2 naming the file and '{want}'", r)


def output_checks(tap, d):
    sup = os.path.join(d, "inject.yaml")
    with open(sup, "w") as f:
        f.write("suppressions:\n"
                f"  - rule: AWS-OP-001\n    resource: {ETL}\n"
                "    reason: '=HYPERLINK(\"https://evil.example/\",\"click\")'\n"
                "    owner: '@cmd|calc'\n    expires: 2026-12-01\n"
                "  - rule: AWS-TR-001\n    resource: '-2+3'\n    reason: '+SUM(A1)'\n"
                "    expires: 2026-12-01\n")
    r = audit("--output-format", "csv", "--suppress", sup, EDGE)
    rows = list(csv.reader(io.StringIO(r.out)))
    tap.ok(r.rc == 1 and r.out.endswith("\r\n") and rows and rows[0][:4] ==
           ["record", "fingerprint", "rule_id", "severity"], "CSV: header, CRLF records", r)
    j = report(tap, "json for csv", "--suppress", sup, "--fail-on", "none", EDGE)
    findings = [x for x in rows[1:] if x[0] == "finding"]
    tap.eq(len(findings), len(j["findings"]), "CSV: one row per finding (suppressed included)")
    etl = [x for x in findings if x[6] == ETL]
    tap.ok(len(etl) == 1 and etl[0][10] == "yes" and
           etl[0][11] == "'=HYPERLINK(\"https://evil.example/\",\"click\")" and
           etl[0][12] == "'@cmd|calc", "CSV: formula cells prefixed with ', quotes kept", etl)
    un = [x for x in rows if x[0] == "unused-suppression"]
    tap.ok(len(un) == 1 and un[0][6] == "'-2+3" and un[0][11] == "'+SUM(A1)" and
           un[0][14] == f"{sup}:7", "CSV: unused suppression row, prefixed", un)
    tap.ok(all(len(x) == 17 for x in rows), "CSV: 17 fields in every row")
    ev = [x[16] for x in findings]
    tap.ok(all(json.loads(e) is not None for e in ev), "CSV: evidence column is JSON")

    r = audit("--output-format", "ndjson", EDGE)
    lines = r.out.split("\n")
    tap.ok(r.rc == 1 and r.out.endswith("\n") and lines[-1] == "",
           "NDJSON: newline-terminated", r)
    recs = [json.loads(x) for x in lines[:-1]]
    jf = report(tap, "json for ndjson", EDGE)
    tap.eq(len(recs), len(jf["findings"]) + 1, "NDJSON: one line per finding plus the summary")
    tap.ok(all(x["record"] == "finding" for x in recs[:-1]) and recs[-1]["record"] == "summary"
           and recs[-1]["schema"] == "ferry.audit/v1" and recs[-1]["summary"] == jf["summary"]
           and "findings" not in recs[-1], "NDJSON: findings, then the summary line")
    tap.eq([{k: v for k, v in x.items() if k != "record"} for x in recs[:-1]], jf["findings"],
           "NDJSON: the same finding objects as the JSON report, in order")
    r = audit("--output-format", "ndjson", "--suppress", os.path.join(FIX, "suppress.yaml"),
              EDGE)
    last = json.loads(r.out.splitlines()[-1])
    tap.ok(len(last.get("suppressions", {}).get("expired", [])) == 1 and
           len(last["suppressions"]["unused"]) == 1, "NDJSON: expired and unused in the summary")
    r = audit("--output-format", "xml", EDGE)
    tap.ok(r.rc == 2 and "table, json, sarif, ndjson or csv" in r.err, "unknown output: exit 2")


def body(tap):
    try:
        with ft.tempdir() as d:
            suppress_checks(tap, d)
            refused_checks(tap)
            baseline_checks(tap, d)
            output_checks(tap, d)
    finally:
        tap.ok(not PROBLEMS, "every JSON report valid against ferry-audit-v1.schema.json",
               PROBLEMS[:5])


if __name__ == "__main__":
    ft.main("test_cli_audit_suppress", body)
