#!/usr/bin/env python3
# TAP: `ferry audit aws --live` against moto_server, and service-last-accessed (AWS-OP-011).
#   - moto is seeded with the real AWS CLI: roles, users, a group, access keys, inline and
#     customer-managed policies that trigger full admin, service wildcards, credential
#     exposure, an unattached admin policy, trust to anyone and to another account, unused
#     roles and never-used keys;
#   - (a) the CLI's own exports of that account (get-account-authorization-details,
#     get-credential-report) audited as files and (b) `ferry audit aws --live` against the
#     same moto find the same set of (rule, resource, severity) and the same fingerprints,
#     including the specific findings the seed was made for; moto has no
#     service-last-accessed, which live mode reports as the AWS-OP-011 info note, not an error;
#   - through tests/peers/fault_proxy.py in front of moto: AccessDenied, throttling past the
#     retry budget and 5xx end in exit 2 with a clear reason and no report; a throttle with a
#     short Retry-After is waited out; no secret key and none of the remote's error text is
#     printed; credentials from a shared credentials profile and from a web identity (STS at
#     AWS_ENDPOINT_URL_STS) work too; missing credentials are a clear error;
#   - a stand-in in front of moto serves service-last-accessed jobs (in progress at first,
#     two pages): AWS-OP-011 on the principals with unused granted services, no note;
#   - the CloudMapper samples (a directory of get-service-last-accessed-details files named by
#     the URL-encoded ARN, or CloudMapper's job-id layout, in either order) with their
#     authorization details give AWS-OP-011 on the roles whose granted services were not used,
#     and no "not evaluated" note for that account;
#   - usage errors of the aws --live form exit 2.
# moto_server and aws are required: when missing the test fails (CI installs them), as in
# test_secrets_aws.py and test_secrets_faults.py.
import base64
import json
import os
import shutil
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402
from test_secrets_faults import FaultProxy, Moto  # noqa: E402

ACCOUNT = "123456789012"  # moto's
A = f"arn:aws:iam::{ACCOUNT}:"
FIXTURES = os.path.join(ft.SRCDIR, "tests", "audit", "live")
SECRET = "CANARY-SECRET-" + base64.b32encode(os.urandom(10)).decode()
KEY_ID = "AKIAFERRYLIVETEST01"
OTHER = "999988887777"


def doc(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def trust(principal, condition=None):
    st = {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": principal}
    if condition:
        st["Condition"] = condition
    return doc(st)


def seed(moto):
    """Principals and policies, each made for a rule of the catalogue."""
    aws = moto.aws
    # Full admin (OP-001) on a role another account can assume without ExternalId (TR-004).
    aws("iam", "create-role", "--role-name", "ops-admin", "--assume-role-policy-document",
        trust({"AWS": f"arn:aws:iam::{OTHER}:root"}))
    aws("iam", "put-role-policy", "--role-name", "ops-admin", "--policy-name", "all",
        "--policy-document", doc({"Effect": "Allow", "Action": "*", "Resource": "*"}))
    # A service wildcard on a sensitive service (OP-003, high) through a customer-managed
    # policy, on a role trusted by Lambda.
    pol = aws("iam", "create-policy", "--policy-name", "s3-everything", "--policy-document",
              doc({"Effect": "Allow", "Action": "s3:*", "Resource": "*"}))["Policy"]["Arn"]
    aws("iam", "create-role", "--role-name", "etl", "--assume-role-policy-document",
        trust({"Service": "lambda.amazonaws.com"}))
    aws("iam", "attach-role-policy", "--role-name", "etl", "--policy-arn", pol)
    # Assumable by anyone (TR-001).
    aws("iam", "create-role", "--role-name", "open-door", "--assume-role-policy-document",
        trust({"AWS": "*"}))
    # A machine user with a key it never used (SH-003, SH-006) and an unconstrained
    # credential-exposure grant (OP-007).
    aws("iam", "create-user", "--user-name", "ci-bot")
    aws("iam", "create-access-key", "--user-name", "ci-bot")
    aws("iam", "put-user-policy", "--user-name", "ci-bot", "--policy-name", "read-secrets",
        "--policy-document",
        doc({"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}))
    # A group with a service wildcard (OP-003 on the group) and a member.
    aws("iam", "create-group", "--group-name", "builders")
    aws("iam", "put-group-policy", "--group-name", "builders", "--policy-name", "ec2",
        "--policy-document", doc({"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}))
    aws("iam", "create-user", "--user-name", "dev")
    aws("iam", "add-user-to-group", "--user-name", "dev", "--group-name", "builders")
    # An unattached customer-managed admin policy (OP-013).
    aws("iam", "create-policy", "--policy-name", "break-glass", "--policy-document",
        doc({"Effect": "Allow", "Action": "*", "Resource": "*"}))
    # The role live mode assumes with a web identity (no sub pin: TR-005), read-only.
    aws("iam", "create-role", "--role-name", "auditor", "--assume-role-policy-document",
        json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
            "Principal": {"Federated": A + "oidc-provider/ferry.test"}}]}))
    # Fine: a scoped role (nothing but SH-001, unused).
    aws("iam", "create-role", "--role-name", "reader", "--assume-role-policy-document",
        trust({"Service": "ec2.amazonaws.com"}))
    aws("iam", "put-role-policy", "--role-name", "reader", "--policy-name", "one-bucket",
        "--policy-document",
        doc({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}))


def export(moto, d):
    authz = moto.aws("iam", "get-account-authorization-details")
    for _ in range(50):
        if moto.aws("iam", "generate-credential-report")["State"] == "COMPLETE":
            break
        time.sleep(0.2)
    cred = moto.aws("iam", "get-credential-report")
    return ft.write_json(os.path.join(d, "authz.json"), authz), \
        ft.write_json(os.path.join(d, "credreport.json"), cred)


def triples(j):
    return sorted((f["rule_id"], f["resource"], f["severity"]) for f in j["findings"])


def has(j, rule, resource, severity):
    return (rule, resource, severity) in triples(j)


def live_env(extra=None):
    env = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    env.update(extra or {})
    return ft.clean_env(env)


def live(endpoint, now, *args, env=None):
    return ft.ferry("audit", "aws", "--live", "--endpoint-url", endpoint, "--now", now,
                    "--output-format", "json", "--fail-on", "none", *args,
                    env=env or live_env(), timeout=120)


def no_secret(t, desc, r):
    t.ok(SECRET not in r.out and SECRET not in r.err, f"{desc}: the secret key is not printed")


EXPECTED = [
    ("AWS-OP-001", A + "role/ops-admin", "critical"),
    ("AWS-TR-004", A + "role/ops-admin", "medium"),
    ("AWS-OP-003", A + "role/etl", "high"),
    ("AWS-TR-001", A + "role/open-door", "critical"),
    ("AWS-OP-007", A + "user/ci-bot", "high"),
    ("AWS-SH-003", A + "user/ci-bot", "medium"),
    ("AWS-SH-006", A + "user/ci-bot", "medium"),
    ("AWS-OP-003", A + "group/builders", "medium"),
    ("AWS-OP-013", A + "policy/break-glass", "low"),
    ("AWS-SH-001", A + "role/reader", "medium"),
    ("AWS-TR-005", A + "role/auditor", "critical"),
    ("AWS-OP-011", A + "root", "info"),
]


class UsageStandin:
    """In front of moto, which has no service-last-accessed: answers
    GenerateServiceLastAccessedDetails and GetServiceLastAccessedDetails as IAM does (a job id;
    IN_PROGRESS at the first poll, then COMPLETED in pages of two services) from usage[arn]
    ({namespace: date or None}), and forwards every other request to moto unchanged."""

    def __init__(self, target, usage):
        import http.server
        import threading
        import urllib.parse
        self.target = urllib.parse.urlsplit(target)
        self.usage, self.jobs, self.calls = usage, {}, {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                form = urllib.parse.parse_qs(body.decode())
                action = (form.get("Action") or [""])[0]
                outer.calls[action] = outer.calls.get(action, 0) + 1
                if action == "GenerateServiceLastAccessedDetails":
                    job = f"job-{len(outer.jobs) + 1}"
                    outer.jobs[job] = {"arn": form["Arn"][0], "polls": 0}
                    return self.xml(action, f"<JobId>{job}</JobId>")
                if action == "GetServiceLastAccessedDetails":
                    return self.details(form)
                status, data, ctype = outer.forward(self.headers, body)
                self.answer(status, data, ctype)

            def details(self, form):
                job = outer.jobs[form["JobId"][0]]
                job["polls"] += 1
                action = "GetServiceLastAccessedDetails"
                if job["polls"] == 1:
                    return self.xml(action, "<JobStatus>IN_PROGRESS</JobStatus>")
                svcs = sorted(outer.usage.get(job["arn"], {}).items())
                start = 2 if form.get("Marker") == ["m2"] else 0
                page = svcs[start:start + 2]
                more = start + 2 < len(svcs)
                members = "".join(
                    f"<member><ServiceName>{ns}</ServiceName><ServiceNamespace>{ns}"
                    f"</ServiceNamespace>" +
                    (f"<LastAuthenticated>{last}</LastAuthenticated>" if last else "") +
                    "<TotalAuthenticatedEntities>0</TotalAuthenticatedEntities></member>"
                    for ns, last in page)
                self.xml(action, "<JobStatus>COMPLETED</JobStatus><JobCompletionDate>"
                         "2026-01-01T00:00:00Z</JobCompletionDate><ServicesLastAccessed>"
                         f"{members}</ServicesLastAccessed><IsTruncated>"
                         f"{'true' if more else 'false'}</IsTruncated>" +
                         ("<Marker>m2</Marker>" if more else ""))

            def xml(self, action, inner):
                self.answer(200, (f'<{action}Response xmlns="https://iam.amazonaws.com/doc/'
                                  f'2010-05-08/"><{action}Result>{inner}</{action}Result>'
                                  f'</{action}Response>').encode(), "text/xml")

            def answer(self, status, data, ctype):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def forward(self, headers, body):
        import http.client
        c = http.client.HTTPConnection(self.target.hostname, self.target.port, timeout=30)
        try:
            c.request("POST", "/", body, {k: v for k, v in headers.items()
                                          if k.lower() not in ("host", "content-length")})
            r = c.getresponse()
            return r.status, r.read(), r.getheader("Content-Type", "text/xml")
        finally:
            c.close()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def usage_live_part(t, moto, files, now):
    """Live mode with service-last-accessed data: the jobs, their polling and pages."""
    day = 86400
    usage = {
        A + "role/etl": {"s3": iso(now - 10 * day)},                      # used: nothing
        A + "role/reader": {"s3": None},                                  # never: s3
        A + "role/ops-admin": {"s3": iso(now - 10 * day), "ec2": iso(now - 200 * day),
                               "iam": None},                              # ec2 and iam
        A + "user/ci-bot": {"secretsmanager": iso(now - 120 * day)},      # secretsmanager
        A + "user/dev": {"ec2": iso(now - day)},                          # used: nothing
    }
    standin = UsageStandin(moto.url, usage)
    try:
        r = live(standin.url, now)
        j = r.json() or {"findings": [], "inputs": []}
        t.ok(r.rc == 0 and r.err == "", "live with usage: audited (exit 0)", r)
        want_jobs = 7  # 5 roles and 2 users, no service-linked role
        t.eq(standin.calls.get("GenerateServiceLastAccessedDetails"), want_jobs,
             "live with usage: one job per role and user")
        t.ok(all(job["polls"] >= 2 for job in standin.jobs.values()),
             "live with usage: jobs IN_PROGRESS at first were polled again", standin.jobs)
        t.ok(standin.calls.get("GetServiceLastAccessedDetails", 0) >= 2 * want_jobs + 1,
             "live with usage: a second page was fetched with the Marker", standin.calls)
        t.ok("aws-last-accessed" in [i["format"] for i in j["inputs"]],
             "live with usage: the details went through the aws-last-accessed loader")
        op = {f["resource"]: f for f in j["findings"] if f["rule_id"] == "AWS-OP-011"}
        want = {A + "role/reader": ["s3"], A + "role/ops-admin": ["ec2", "iam"],
                A + "user/ci-bot": ["secretsmanager"]}
        t.eq(sorted(op), sorted(want),
             "live with usage: AWS-OP-011 on exactly the principals with unused services, "
             "and no 'not evaluated' note")
        for arn, svcs in want.items():
            f = op.get(arn, {"evidence": {}, "severity": None})
            t.ok(f["severity"] == "medium" and f["evidence"].get("unused_services") == svcs,
                 f"live with usage: {arn}: {svcs} unused for 90 days (medium)", f)
        others = sorted(x for x in triples(j) if x[0] != "AWS-OP-011")
        t.eq(others, sorted(x for x in triples(files) if x[0] != "AWS-OP-011"),
             "live with usage: every other finding as in the exports")
    finally:
        standin.stop()


def moto_part(t, d):
    moto = Moto()
    proxy = None
    try:
        seed(moto)
        authz, cred = export(moto, d)
        # A clock a month on: the keys and roles are past the grace period, never used.
        now = int(time.time()) + 30 * 86400

        r = ft.ferry("audit", "--now", now, "--output-format", "json", "--fail-on", "none",
                     authz, cred)
        files = r.json() or {"findings": []}
        t.ok(r.rc == 0 and r.err == "", "exports: audited (exit 0, JSON)", r)

        r = live(moto.url, now)
        lv = r.json() or {"findings": [], "inputs": []}
        t.ok(r.rc == 0 and r.err == "", "live: audited (exit 0, JSON)", r)
        no_secret(t, "live", r)
        t.eq(sorted(i["format"] for i in lv["inputs"]), ["aws-authz", "aws-credreport-json"],
             "live: the authorization details and the credential report went through the "
             "export loaders")
        t.ok(all(i["path"].startswith("aws-live:127.0.0.1:") for i in lv["inputs"]),
             "live: inputs are named after the endpoint", lv["inputs"])

        for rule, res, sev in EXPECTED:
            t.ok(has(files, rule, res, sev), f"exports: {rule} {res} {sev}", triples(files))
            t.ok(has(lv, rule, res, sev), f"live: {rule} {res} {sev}", triples(lv))
        t.eq(triples(lv), triples(files),
             "live and exports: the same set of (rule, resource, severity)")
        t.eq(sorted(f["fingerprint"] for f in lv["findings"]),
             sorted(f["fingerprint"] for f in files["findings"]),
             "live and exports: the same fingerprints")
        t.ok(not any(f["resource"].endswith("role/reader") and f["rule_id"] != "AWS-SH-001"
                     for f in lv["findings"]),
             "live: nothing but SH-001 on the scoped role", triples(lv))
        note = [f for f in lv["findings"] if f["rule_id"] == "AWS-OP-011"]
        t.ok(len(note) == 1 and note[0]["evidence"].get("evaluated") is False and
             "does not implement" in note[0]["evidence"].get("reason", ""),
             "live: moto has no service-last-accessed: the OP-011 info note says so", note)
        t.ok(any(f["rule_id"] == "AWS-OP-001" and f["evidence"]["statement"] ==
                 {"Action": "*", "Effect": "Allow", "Resource": "*"} for f in lv["findings"]),
             "live: OP-001 evidence is the statement, from the URL-encoded document")

        usage_live_part(t, moto, files, now)

        # Table output and --fail-on over the live data.
        r = ft.ferry("audit", "aws", "--live", "--endpoint-url", moto.url, "--now", now,
                     "--fail-on", "critical", env=live_env(), timeout=120)
        t.ok(r.rc == 1 and "AWS-OP-001" in r.out and "ops-admin" in r.out,
             "live: table output, exit 1 at --fail-on critical", r)

        # Faults in front of moto.
        proxy = FaultProxy(moto.url)
        canary_err = "CANARY-ERR-REMOTE-TEXT"
        faults = [
            ("AccessDenied on GetAccountAuthorizationDetails",
             {"action": "GetAccountAuthorizationDetails", "kind": "status", "status": 403,
              "type": "AccessDenied", "body": canary_err, "count": 1},
             ["GetAccountAuthorizationDetails", "AccessDenied", "403"]),
            ("throttled past the retry budget",
             {"action": "GetAccountAuthorizationDetails", "kind": "status", "status": 400,
              "type": "Throttling", "retry_after": 30, "body": canary_err, "count": 3},
             ["GetAccountAuthorizationDetails", "Throttling", "retry after 30 s"]),
            ("500 on GetCredentialReport, every attempt",
             {"action": "GetCredentialReport", "kind": "status", "status": 500,
              "body": canary_err, "count": 3},
             ["GetCredentialReport", "500", "after 3 attempts"]),
        ]
        for name, plan, words in faults:
            proxy.reset()
            proxy.fault(**plan)
            r = live(proxy.url, now)
            t.ok(r.rc == 2 and r.out == "" and all(w in r.err for w in words),
                 f"fault: {name}: exit 2, no report, the reason names {words}", r)
            t.ok(canary_err not in r.err, f"fault: {name}: the remote's text is not printed")
            no_secret(t, f"fault: {name}", r)
        proxy.reset()
        proxy.fault(action="GenerateCredentialReport", kind="status", status=429,
                    retry_after=1, count=1)
        r = live(proxy.url, now)
        t.ok(r.rc == 0 and triples(r.json() or {"findings": []}) == triples(files) and
             proxy.stats()["actions"].get("GenerateCredentialReport", 0) >= 2,
             "fault: a 429 with Retry-After 1 is waited out and the run completes", r)

        # Keys from a shared credentials file's profile instead of the environment.
        creds = os.path.join(d, "credentials")
        with open(creds, "w") as f:
            f.write(f"[audit]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n")
        env = ft.clean_env({"AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": creds,
                            "AWS_PROFILE": "audit"})
        r = live(moto.url, now, env=env)
        t.ok(r.rc == 0 and triples(r.json() or {"findings": []}) == triples(files),
             "profile credentials: the same findings", r)
        no_secret(t, "profile credentials", r)

        # A web identity (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE), assumed at the STS
        # endpoint the SDKs' AWS_ENDPOINT_URL_STS names.
        token = os.path.join(d, "token")
        with open(token, "w") as f:
            f.write("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhdWRpdCJ9.")
        env = ft.clean_env({"AWS_CONFIG_FILE": "/dev/null",
                            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                            "AWS_ROLE_ARN": A + "role/auditor",
                            "AWS_WEB_IDENTITY_TOKEN_FILE": token,
                            "AWS_ENDPOINT_URL_STS": moto.url})
        r = live(moto.url, now, env=env)
        got = set(triples(r.json() or {"findings": []}))
        t.ok(r.rc == 0 and got == set(triples(files)) - {("AWS-SH-001", A + "role/auditor",
                                                          "medium")},
             "web identity credentials (STS at AWS_ENDPOINT_URL_STS): the same findings, but "
             "the role assumed is no longer unused",
             (sorted(got - set(triples(files))), sorted(set(triples(files)) - got), r.err))

        # No credentials at all.
        env = ft.clean_env({"AWS_CONFIG_FILE": "/dev/null",
                            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"})
        r = live(moto.url, now, env=env)
        t.ok(r.rc == 2 and r.out == "" and "AWS credentials" in r.err,
             "no credentials: exit 2 with the reason", r)
    finally:
        if proxy:
            proxy.stop()
        moto.stop()


def usage_part(t):
    authz = os.path.join(FIXTURES, "cloudmapper-authz.json")
    usage = os.path.join(FIXTURES, "last-accessed")
    r = ft.ferry("audit", "--now", "1790000000", "--output-format", "json", "--fail-on", "none",
                 authz, usage)
    j = r.json() or {"findings": [], "inputs": []}
    t.ok(r.rc == 0 and r.err == "", "CloudMapper layout: the directory is read (exit 0)", r)
    t.eq(sorted(i["format"] for i in j["inputs"]),
         ["aws-authz", "aws-last-accessed", "aws-last-accessed"],
         "CloudMapper layout: each file of the directory is an aws-last-accessed input")
    op = {f["resource"]: f for f in j["findings"]
          if f["rule_id"] == "AWS-OP-011" and f["severity"] != "info"}
    want = {A + "role/service-role/level1": ["ecr", "s3"], A + "role/level3": ["s3"]}
    t.eq(sorted(op), sorted(want), "CloudMapper layout: AWS-OP-011 on level1 and level3 only")
    # The sample also has principals in an account spelt "aws", which no usage data covers.
    notes = sorted(f["resource"] for f in j["findings"]
                   if f["rule_id"] == "AWS-OP-011" and f["severity"] == "info")
    t.eq(notes, ["arn:aws:iam::aws:root"],
         "CloudMapper layout: the 'not evaluated' note only for the account without usage data")
    for arn, svcs in want.items():
        f = op.get(arn, {"evidence": {}, "severity": None})
        t.ok(f["severity"] == "medium" and f["evidence"].get("unused_services") == svcs and
             f["evidence"].get("granted_from") == "policies",
             f"CloudMapper layout: {arn}: {svcs} granted and not used in 90 days (medium)", f)
    # Either order of the inputs: the same findings.
    r2 = ft.ferry("audit", "--now", "1790000000", "--output-format", "json", "--fail-on",
                  "none", usage, authz)
    t.eq(triples(r2.json() or {"findings": []}), triples(j),
         "CloudMapper layout: the same findings with the usage data first")
    # CloudMapper's own layout: job ids in the generate outputs, details named by job id; in
    # either order of the two directories.
    cm = os.path.join(FIXTURES, "cloudmapper")
    gen = os.path.join(cm, "iam-generate-service-last-accessed-details")
    get = os.path.join(cm, "iam-get-service-last-accessed-details")
    for order in ((gen, get), (get, gen)):
        r3 = ft.ferry("audit", "--now", "1790000000", "--output-format", "json", "--fail-on",
                      "none", authz, *order)
        j3 = r3.json() or {"findings": []}
        t.ok(r3.rc == 0 and triples(j3) == triples(j) and
             [f["evidence"] for f in j3["findings"] if f["rule_id"] == "AWS-OP-011"] ==
             [f["evidence"] for f in j["findings"] if f["rule_id"] == "AWS-OP-011"],
             "CloudMapper's job-id layout " + ("(generate outputs first)" if order[0] == gen
                                               else "(details first)") +
             ": the same findings as the ARN-named files", r3)
    # A single output of get-service-last-accessed-details names no principal.
    with ft.tempdir() as d:
        bare = os.path.join(d, "details.json")
        shutil.copy(os.path.join(usage, os.listdir(usage)[0]), bare)
        r = ft.ferry("audit", authz, bare)
        t.ok(r.rc == 2 and r.out == "" and "details.json" in r.err and "Arn" in r.err,
             "a last-accessed file without Arn or ARN name: exit 2 naming the file", r)


def usage_errors(t):
    for args, words, desc in [
        (["--live", "x.json"], "only `ferry audit aws --live`", "--live without aws"),
        (["--endpoint-url", "http://127.0.0.1:1", "x.json"], "need `aws --live`",
         "--endpoint-url without --live"),
        (["aws", "--live", "--region", "Bad_Region!"], "region", "a bad --region"),
        (["aws", "--live", "--endpoint-url", "http://example.com"], "http only",
         "plain http to a host that is not loopback"),
    ]:
        r = ft.ferry("audit", *args, env=live_env())
        t.ok(r.rc == 2 and r.out == "" and words in r.err, f"usage: {desc}: exit 2", r)


def body(t):
    usage_errors(t)
    usage_part(t)
    if not shutil.which("moto_server") or not shutil.which("aws"):
        t.ok(False, "moto_server and aws are installed (pip install 'moto[server]' awscli)")
        return
    with ft.tempdir() as d:
        moto_part(t, d)


if __name__ == "__main__":
    ft.main("test_cli_audit_live", body)
