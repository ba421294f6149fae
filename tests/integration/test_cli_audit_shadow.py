#!/usr/bin/env python3
# TAP: `ferry audit --policies DIR [--issuer URL | --ferryd-config FILE] [--usage LOG]`:
#   - roles and users of an AWS export against ferry's policies (tests/audit/shadow): declared
#     roles are not flagged, an undeclared role used within --unused-days and a machine user's
#     access key are X-004 (low), a role that trusts ferry's issuer without a policy is X-004
#     (medium), the machine user's key is also X-003; unused, service-linked roles and a
#     person's user are not flagged; without --policies no X finding at all;
#   - the issuer from --ferryd-config gives the same report as --issuer;
#   - --usage over an audit log written here from docs/internals/auditlog.md (hash chain and
#     an ES256-signed final checkpoint): a policy used 3 days ago is fine, one used 200 days
#     ago and one never used are X-005; a log that is edited, signed by another key or shorter
#     than the window is refused (exit 2) or not evaluated (info);
#   - usage errors: --usage or --issuer without --policies, policies that do not load;
#   - SARIF lists; every JSON report is valid against the v1 schema.
#   - the GCP, Azure and Kubernetes loaders' identities (service accounts with user-managed
#     keys, service principals with client secrets, service accounts with legacy tokens):
#     declared ones with a static credential are X-003 only, undeclared ones,
#     disabled, managed and kube-system ones nothing.
import datetime
import hashlib
import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402
from audittest import NOW, SCHEMA_PROBLEMS, audit, audit_json  # noqa: E402

FIX = os.path.join(ft.SRCDIR, "tests", "audit", "shadow")
POLICIES = os.path.join(FIX, "policies")
AUTHZ = os.path.join(FIX, "authz.json")
CREDREPORT = os.path.join(FIX, "credreport.csv")
DAY = 86400
ISSUER = "https://ferry.ml.example.com"
A = "arn:aws:iam::123456789012:"
ZERO = "0" * 64


def x_findings(j):
    return sorted((f["rule_id"], f["resource"], f["severity"]) for f in j["findings"]
                  if f["rule_id"].startswith("X-"))


def find(j, rule, resource):
    return next((f for f in j["findings"] if f["rule_id"] == rule and f["resource"] == resource),
                None)


# ---- an audit log, written from docs/internals/auditlog.md ----------------------------------

def canon(value):
    return json.dumps(value, ensure_ascii=True, sort_keys=True, separators=(",", ":"))


def stamp(epoch, us=0):
    t = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{us:06d}Z"


def write_log(path, events, key, kid="k1"):
    """events: (epoch, type, decision, details). Ends with a signed final checkpoint."""
    lines, prev, seq = [], ZERO, 0

    def put(rec):
        nonlocal prev, seq
        c = canon(rec)
        h = hashlib.sha256(bytes.fromhex(prev) + c.encode()).hexdigest()
        lines.append(c[:-1] + ',"hash":"' + h + '"}')
        prev = h

    first = events[0][0]
    seq += 1
    put({"seq": seq, "time": stamp(first), "type": "auditlog.open", "decision": "info",
         "subject": "auditlog", "details": {"previous": "none"}, "prev": prev})
    for i, (t, typ, dec, details) in enumerate(events):
        seq += 1
        put({"seq": seq, "time": stamp(t, i + 1), "type": typ, "decision": dec,
             "subject": "system:serviceaccount:ml-training:trainer", "details": details,
             "prev": prev})
    seq += 1
    t = stamp(events[-1][0], 999)
    payload = canon({"final": True, "first": 1, "head": prev, "last": seq - 1, "seq": seq,
                     "time": t}).encode()
    jws = ft.make_token(key, "ES256", header={"alg": "ES256", "kid": kid,
                                              "typ": "ferry-auditlog-checkpoint"},
                        payload_raw=payload)
    put({"seq": seq, "time": t, "type": "auditlog.checkpoint", "decision": "info",
         "subject": "auditlog", "prev": prev,
         "checkpoint": {"final": True, "first": 1, "head": prev, "jws": jws, "kid": kid,
                        "last": seq - 1}})
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def exchange(t, *policies, decision="allow"):
    return (t, "token.exchange", decision,
            {"issuer": "https://oidc.eks.us-west-2.amazonaws.com/id/5E3A1B0C7D2F4E6A8B9C0D1E2F3A4B5C",
             "policies": list(policies)})


# ---- checks ---------------------------------------------------------------------------------

def identity_checks(tap, d):
    j = audit_json(tap, "AWS export against the policies", "--policies", POLICIES, "--issuer",
                   ISSUER, AUTHZ, CREDREPORT)
    tap.eq(x_findings(j), [
        ("X-003", A + "user/ci-bot", "medium"),
        ("X-004", A + "role/batch-etl", "low"),
        ("X-004", A + "role/ferry-dangling", "medium"),
        ("X-004", A + "user/ci-bot", "low"),
    ], "exactly: the undeclared used role, the role trusting ferry's issuer, the machine user's "
       "key (X-004 and X-003)")
    f = find(j, "X-004", A + "role/ferry-dangling")
    tap.ok(f and f["evidence"].get("trusts_ferry_issuer") is True and
           f["evidence"].get("ferry_issuer") == ISSUER and f["cloud"] == "aws" and
           f["account"] == "123456789012" and f["source"] == AUTHZ,
           "X-004 medium: evidence names ferry's issuer, account and source", f)
    f = find(j, "X-003", A + "user/ci-bot")
    tap.ok(f and f["evidence"] == {"credential": "access key", "declared": False,
                                   "why": "ferry's policies broker this cloud"},
           "X-003: an access key where ferry brokers AWS", f)
    for res, why in [("role/gha-model-publish", "declared (grant.aws), used"),
                     ("role/ml/training-s3-rw", "declared, trusts ferry's issuer"),
                     ("role/legacy-report", "undeclared but never used"),
                     ("role/aws-service-role/support.amazonaws.com/AWSServiceRoleForSupport",
                      "service-linked"),
                     ("user/alice", "a person (console password)")]:
        tap.ok(not any(f["rule_id"].startswith("X-") and f["resource"] == A + res
                       for f in j["findings"]), f"not flagged: {res} ({why})")
    tap.ok(find(j, "AWS-SH-006", A + "user/ci-bot") is not None,
           "the AWS rules still run alongside")

    j2 = audit_json(tap, "issuer from --ferryd-config", "--policies", POLICIES,
                    "--ferryd-config", os.path.join(FIX, "ferryd.json"), AUTHZ, CREDREPORT)
    tap.eq(x_findings(j2), x_findings(j), "--ferryd-config gives the issuer --issuer gives")
    tap.eq(sorted(f["fingerprint"] for f in j2["findings"]),
           sorted(f["fingerprint"] for f in j["findings"]), "and the same fingerprints")

    j3 = audit_json(tap, "without --issuer", "--policies", POLICIES, AUTHZ, CREDREPORT)
    tap.ok(find(j3, "X-004", A + "role/ferry-dangling") is None and
           find(j3, "X-004", A + "role/batch-etl") is not None,
           "without the issuer, the unused dangling role is only an unused role")

    j4 = audit_json(tap, "without --policies", AUTHZ, CREDREPORT)
    tap.eq(x_findings(j4), [], "without --policies no X finding")

    r = audit("--output-format", "sarif", "--fail-on", "none", "--policies", POLICIES,
              "--issuer", ISSUER, AUTHZ, CREDREPORT)
    s = r.json() or {}
    rules = [x["id"] for x in s.get("runs", [{}])[0].get("tool", {}).get("driver", {})
             .get("rules", [])]
    tap.ok(r.rc == 0 and all(x in rules for x in ("X-003", "X-004", "X-005")),
           "SARIF lists X-003, X-004 and X-005", rules[-8:])
    res = [x for x in s.get("runs", [{}])[0].get("results", []) if x["ruleId"] == "X-004"]
    tap.ok(res and all(x["level"] in ("note", "warning") for x in res),
           "SARIF: X-004 results at note (low) and warning (medium)", res[:1])

    r = audit("--fail-on", "medium", "--policies", POLICIES, "--issuer", ISSUER, AUTHZ)
    tap.ok(r.rc == 1 and "X-004" in r.out and "ferry-dangling" in r.out,
           "table: X-004 medium fails --fail-on medium", r)


def cloud_checks(tap):
    """The GCP, Azure and Kubernetes loaders' identities against the same policies."""
    T = "3f2b6c1e-9a4d-4e57-8c21-5d0e7b9a1f34"
    G = "@ml-prod-417203.iam.gserviceaccount.com"
    files = [os.path.join(FIX, n) for n in (
        "gcp_service-accounts_list.json", "gcp_service-accounts_keys_list.json",
        "azure_az_ad_sp_list.json", "k8s_serviceaccounts_secrets.json")]
    j = audit_json(tap, "GCP, Azure and Kubernetes exports against the policies", "--policies",
                   POLICIES, "--issuer", ISSUER, *files)
    got = sorted((f["rule_id"], f["cloud"], f["account"], f["resource"],
                  f["evidence"].get("declared")) for f in j["findings"]
                 if f["rule_id"].startswith("X-"))
    tap.eq(got, sorted([
        # declared (grant.gcp, grant.azure with its tenant, subject_glob) with a static key
        ("X-003", "gcp", "ml-prod-417203", "llm-inference" + G, True),
        ("X-003", "azure", T, "9d4e8a27-1c3b-4f60-a5d2-7e81b0c4f9a6", True),
        ("X-003", "k8s", "cluster", "system:serviceaccount:inference:llm-server-a", True),
        # undeclared with a static key: broker-unmanaged, and a static secret
        ("X-003", "gcp", "ml-prod-417203", "etl-nightly" + G, False),
        ("X-004", "gcp", "ml-prod-417203", "etl-nightly" + G, False),
        ("X-003", "azure", T, "22222222-aaaa-4bbb-8ccc-000000000002", False),
        ("X-004", "azure", T, "22222222-aaaa-4bbb-8ccc-000000000002", False),
        ("X-003", "k8s", "cluster", "system:serviceaccount:batch:legacy-job", False),
        ("X-004", "k8s", "cluster", "system:serviceaccount:batch:legacy-job", False),
    ]), "exactly: declared identities with static keys get X-003 only; a disabled SA, a "
        "managed identity, kube-system's SA and a declared SA without token get nothing")
    tap.ok(any(f["rule_id"] == "GCP-SH-006" and "old-export" in f["resource"]
               for f in j["findings"]), "the disabled SA's key is the GCP rule's business")


def usage_checks(tap, d):
    key = ft.Key("P-256", kid="k1")
    jwks = ft.write_json(os.path.join(d, "jwks.json"), ft.jwks(key, alg="ES256"))
    other = ft.write_json(os.path.join(d, "other.json"),
                          ft.jwks(ft.Key("P-256", kid="k1"), alg="ES256"))
    log = write_log(os.path.join(d, "audit.log"), [
        exchange(NOW - 200 * DAY, "inference-llm-server"),
        exchange(NOW - 3 * DAY, "gha-model-release"),
        exchange(NOW - 1 * DAY, "k8s-trainer", decision="deny"),
        (NOW - DAY, "secret.release", "allow", {"ref": "aws-sm:ml-training/wandb-api-key"}),
    ], key)
    r = ft.ferry("log", "verify", log, "--jwks", jwks)
    tap.ok(r.rc == 0, "the test's log passes `ferry log verify`", r)

    j = audit_json(tap, "--usage", "--policies", POLICIES, "--usage", log, "--usage-jwks", jwks,
                   AUTHZ)
    x5 = sorted((f["resource"], f["severity"]) for f in j["findings"] if f["rule_id"] == "X-005")
    tap.eq(x5, [("ferry:policy/inference-llm-server", "medium"),
                ("ferry:policy/k8s-trainer", "medium")],
           "X-005: the policy used 200 days ago and the one only refused; not the one used "
           "3 days ago")
    f = find(j, "X-005", "ferry:policy/inference-llm-server")
    ev = f["evidence"] if f else {}
    tap.ok(f and f["cloud"] == "ferry" and f["source"] == log and
           ev.get("last_used", "").startswith("2026-03-05T") and ev.get("unused_days") == 90 and
           ev.get("gcp") == ["llm-inference@ml-prod-417203.iam.gserviceaccount.com"] and
           ev.get("azure") == ["9d4e8a27-1c3b-4f60-a5d2-7e81b0c4f9a6"],
           "X-005 evidence: when last used and what the policy grants", f)
    f = find(j, "X-005", "ferry:policy/k8s-trainer")
    tap.ok(f and f["evidence"].get("last_used") is None and
           f["evidence"].get("secrets") == ["aws-sm:ml-training/wandb-api-key"] and
           f["evidence"].get("aws") == [A + "role/ml/training-s3-rw"],
           "X-005: never used (a refused exchange is no use)", f)

    j2 = audit_json(tap, "--usage without the keys", "--policies", POLICIES, "--usage", log,
                    AUTHZ)
    tap.eq(sorted(f["fingerprint"] for f in j2["findings"] if f["rule_id"] == "X-005"),
           sorted(f["fingerprint"] for f in j["findings"] if f["rule_id"] == "X-005"),
           "without --usage-jwks the chain is read and gives the same X-005 findings")

    j3 = audit_json(tap, "--usage --unused-days 365", "--policies", POLICIES, "--usage", log,
                    "--unused-days", "365", AUTHZ)
    x5 = [(f["resource"], f["severity"]) for f in j3["findings"] if f["rule_id"] == "X-005"]
    tap.eq(x5, [("ferry:auditlog", "info")],
           "a log shorter than --unused-days: one info note, not evaluated")

    with open(log) as fh:
        lines = fh.read().split("\n")
    edited = os.path.join(d, "edited.log")
    with open(edited, "w") as fh:
        fh.write("\n".join([lines[0], lines[1].replace("inference-llm-server",
                                                       "gha-model-release")] + lines[2:]))
    r = audit("--policies", POLICIES, "--usage", edited, AUTHZ)
    tap.ok(r.rc == 2 and r.out == "" and "not a valid ferry audit log: line 2 (seq 2): hash "
           "does not match" in r.err, "an edited log is refused: exit 2, line and reason", r)
    r = audit("--policies", POLICIES, "--usage", log, "--usage-jwks", other, AUTHZ)
    tap.ok(r.rc == 2 and r.out == "" and "checkpoint signature does not verify" in r.err,
           "a log signed by another key is refused", r)
    notlog = os.path.join(d, "not.log")
    with open(notlog, "w") as fh:
        fh.write('{"hello": "world"}\n')
    r = audit("--policies", POLICIES, "--usage", notlog, AUTHZ)
    tap.ok(r.rc == 2 and r.out == "" and "line 1" in r.err, "a file that is not a log", r)
    r = audit("--policies", POLICIES, "--usage", os.path.join(d, "missing.log"), AUTHZ)
    tap.ok(r.rc == 2 and r.out == "" and "missing.log" in r.err, "a missing log", r)


def error_checks(tap, d):
    r = audit("--usage", "x.log", AUTHZ)
    tap.ok(r.rc == 2 and r.out == "" and "need --policies" in r.err, "--usage needs --policies", r)
    r = audit("--issuer", ISSUER, AUTHZ)
    tap.ok(r.rc == 2 and "need --policies" in r.err, "--issuer needs --policies", r)
    r = audit("--policies", os.path.join(FIX, "broken-policies"), AUTHZ)
    tap.ok(r.rc == 2 and r.out == "" and "bad.json:" in r.err and "do not load" in r.err,
           "policies that do not load: exit 2 naming the file", r)
    r = audit("--policies", os.path.join(d, "nowhere"), AUTHZ)
    tap.ok(r.rc == 2 and r.out == "", "a policy directory that does not exist", r)
    cfg = ft.write_json(os.path.join(d, "noiss.json"), {"listen": ["127.0.0.1:8787"]})
    r = audit("--policies", POLICIES, "--ferryd-config", cfg, AUTHZ)
    tap.ok(r.rc == 2 and "no \"issuer\"" in r.err, "a ferryd config without issuer", r)


def body(tap):
    try:
        with ft.tempdir() as d:
            identity_checks(tap, d)
            cloud_checks(tap)
            usage_checks(tap, d)
            error_checks(tap, d)
    finally:
        tap.ok(not SCHEMA_PROBLEMS, "every JSON report is valid against "
               "ferry-audit-v1.schema.json", SCHEMA_PROBLEMS[:5])


if __name__ == "__main__":
    ft.main("test_cli_audit_shadow", body)
