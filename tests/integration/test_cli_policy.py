#!/usr/bin/env python3
# TAP: `ferry policy lint` and `ferry policy explain` as an operator runs them.
#   - every example policy in policies/ validates against policies/policy.schema.json (with
#     python3-jsonschema; without it, the schema's member names are compared with what the
#     loader accepts, so the test never skips silently) and lints clean (exit 0, summary);
#   - each kind of broken policy file is flagged by lint as "FILE:LINE: reason" (exit 1),
#     several problems give several lines, usage errors exit 2;
#   - explain on each example: a matching identity (granted, exit 0) and a near miss (refused
#     with the reason, exit 1), text and --json; --claims output says UNVERIFIED; --token
#     verifies the token through the issuer configuration first.
import json
import os
import re
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402
from ferrytest import NOW  # noqa: E402

POLICIES = os.path.join(ft.SRCDIR, "policies")
SCHEMA = os.path.join(POLICIES, "policy.schema.json")
EXAMPLES = ["github-actions.json", "inference.json", "k8s-training.json", "operator.json"]

EKS = "https://oidc.eks.us-west-2.amazonaws.com/id/5E3A1B0C7D2F4E6A8B9C0D1E2F3A4B5C"
AUD = "https://ferry.ml.example.com"
REGISTRY = "https://registry.ml.example.com"

GOOD = {"version": 1, "policies": [{
    "id": "p", "match": {"issuer": "https://idp.test", "subject": "s"},
    "grant": {"scopes": ["a"], "max_ttl": 60}}]}


def write(d, name, text):
    p = os.path.join(d, name)
    with open(p, "w") as f:
        f.write(text)
    return p


def policy_text(grant='"scopes": ["a"], "max_ttl": 60', match='"subject": "s"', extra="",
                pid="p"):
    """A policy file whose grant is on line 5 and match on line 4."""
    return ('{"version": 1,\n'
            ' "policies": [\n'
            f'  {{"id": "{pid}",{extra}\n'
            f'   "match": {{"issuer": "https://idp.test", {match}}},\n'
            f'   "grant": {{{grant}}}}}\n'
            ' ]}\n')


def schema_checks(tap):
    with open(SCHEMA) as f:
        schema = json.load(f)
    tap.eq(schema.get("$schema"), "https://json-schema.org/draft/2020-12/schema",
           "schema: declares JSON Schema draft 2020-12")
    try:
        import jsonschema
    except ImportError:
        jsonschema = None
    if jsonschema is not None:
        jsonschema.Draft202012Validator.check_schema(schema)
        tap.ok(True, "schema: is a valid draft 2020-12 schema")
        v = jsonschema.Draft202012Validator(schema)
        for name in EXAMPLES:
            with open(os.path.join(POLICIES, name)) as f:
                errs = [e.message for e in v.iter_errors(json.load(f))]
            tap.ok(not errs, f"schema: {name} validates", errs)
        bad = json.loads(json.dumps(GOOD))
        bad["policies"][0]["grant"]["scopez"] = ["a"]
        tap.ok(list(v.iter_errors(bad)), "schema: refuses an unknown member too")
    else:
        tap.diag("python3-jsonschema missing: checking the schema's member names instead")
    # Whatever the validator: the schema's member names are exactly what the loader accepts.
    defs = schema["$defs"]
    want = {
        "file": (set(schema["properties"]), {"$schema", "version", "description", "policies"}),
        "policy": (set(defs["policy"]["properties"]),
                   {"id", "description", "match", "grant", "step_up"}),
        "match": (set(defs["match"]["properties"]),
                  {"issuer", "subject", "subject_glob", "audience", "claims"}),
        "claim rule": (set(defs["claim_rule"]["properties"]), {"claim", "exact", "glob", "one_of"}),
        "grant": (set(defs["grant"]["properties"]),
                  {"scopes", "audiences", "max_ttl", "secrets", "aws", "azure", "gcp"}),
    }
    for what, (got, exp) in want.items():
        tap.eq(sorted(got), sorted(exp), f"schema: {what} members match the loader")
    with ft.tempdir() as d:
        # each member the schema names is accepted by the loader (lint clean) ...
        full = policy_text(
            grant='"scopes": ["a"], "audiences": ["x"], "max_ttl": 900, "secrets": ["file:a/*"], '
                  '"aws": [{"role_arn": "arn:aws:iam::123456789012:role/r", '
                  '"session_duration": 900}], "azure": [{"tenant_id": '
                  '"3f2b6c1e-9a4d-4e57-8c21-5d0e7b9a1f34", "client_id": '
                  '"9d4e8a27-1c3b-4f60-a5d2-7e81b0c4f9a6"}], "gcp": [{"service_account": '
                  '"sa-name@my-project.iam.gserviceaccount.com"}]',
            match='"subject_glob": "s*", "audience": ["ferry"], "claims": [{"claim": "t", '
                  '"one_of": ["a"]}, {"claim": ["n", "m"], "exact": 1}, '
                  '{"claim": "g", "glob": "x*"}]',
            extra=' "description": "d", "step_up": "totp",')
        full = full.replace('{"version": 1,', '{"version": 1, "$schema": "x", "description": "d",')
        r = ft.ferry("policy", "lint", write(d, "full.json", full))
        tap.ok(r.rc == 0, "loader: accepts every member the schema names", r)


def lint_checks(tap):
    r = ft.ferry("policy", "lint", POLICIES)
    tap.ok(r.rc == 0 and re.search(r"5 policies, no problems", r.out),
           "lint policies/: exit 0 with a summary", r)
    for name in EXAMPLES:
        r = ft.ferry("policy", "lint", os.path.join(POLICIES, name))
        tap.ok(r.rc == 0 and "no problems" in r.out, f"lint {name}: clean", r)

    cases = [
        ("unknown.json", policy_text(grant='"scopes": ["a"], "max_ttl": 60, "scopez": ["b"]'), 5,
         'unknown member "scopez"'),
        ("dupkey.json", policy_text(match='"subject": "s", "subject": "t"'), 4, "duplicate"),
        ("badglob.json", policy_text(match='"subject_glob": "repo:org/**"'), 4, "'**'"),
        ("trailing.json", policy_text(match='"subject_glob": "a*\\\\"'), 4, "trailing backslash"),
        ("both.json", policy_text(match='"subject": "s", "subject_glob": "s*"'), 4,
         "both given"),
        ("oneof.json", policy_text(match='"subject": "s", "claims": [{"claim": "t", '
                                         '"one_of": []}]'), 4, "matches nothing"),
        ("ttl.json", policy_text(grant='"scopes": ["a"], "max_ttl": 0'), 5, "outside 1..43200"),
        ("aws.json", policy_text(grant='"aws": [{"role_arn": "arn:aws:iam::123456789012:role/r",'
                                       ' "session_duration": 600}], "max_ttl": 900'), 5,
         "outside 900..43200"),
        ("arn.json", policy_text(grant='"aws": [{"role_arn": "arn:aws:iam::1:role/r", '
                                       '"session_duration": 900}], "max_ttl": 900'), 5,
         "not an IAM role ARN"),
        ("gcp.json", policy_text(grant='"gcp": [{"service_account": "me@gmail.com"}], '
                                       '"max_ttl": 60'), 5, "not a service account"),
        ("empty.json", policy_text(grant='"max_ttl": 60'), 5, "grants nothing"),
        ("stepup.json", policy_text(extra=' "step_up": "sms",'), 3, "not supported"),
        ("exactglob.json", policy_text(match='"subject": "s", "claims": [{"claim": "t", '
                                             '"exact": "a", "glob": "a*"}]'), 4,
         "more than one given"),
        ("notjson.json", policy_text()[:-4] + ",,\n", 6, "not valid JSON"),
    ]
    for name, text, line, needle in cases:
        with ft.tempdir() as d:
            path = write(d, name, text)
            r = ft.ferry("policy", "lint", path)
            want = f"{path}:{line}: "
            hit = [ln for ln in r.out.splitlines() if ln.startswith(want) and needle in ln]
            tap.ok(r.rc == 1 and hit, f"lint {name}: exit 1, '{path}:{line}: ...{needle}...'", r)

    with ft.tempdir() as d:
        # several problems in several files of one directory: one line each, sorted by file
        write(d, "a.json", policy_text(grant='"scopes": ["a"], "max_ttl": 99999'))
        write(d, "b.json", policy_text(match='"subject_glob": "[x]*"', pid="q"))
        write(d, "c.json", policy_text())
        write(d, "d.json", policy_text(pid="p"))  # duplicate id of c.json
        write(d, "notes.txt", "ignored")
        r = ft.ferry("policy", "lint", d)
        lines = r.out.splitlines()
        tap.eq(len(lines), 3, "lint dir: one line per problem", r)
        tap.ok(r.rc == 1 and len(lines) == 3 and lines[0].startswith(os.path.join(d, "a.json")
                                                                     + ":5: ")
               and lines[1].startswith(os.path.join(d, "b.json") + ":4: ")
               and lines[2].startswith(os.path.join(d, "d.json") + ":3: ")
               and "duplicate policy id" in lines[2] and "c.json:3" in lines[2],
               "lint dir: file:line of each, the duplicate id names the first", r)
        # a symbolic link is not followed
        os.symlink(os.path.join(d, "c.json"), os.path.join(d, "link.json"))
        r = ft.ferry("policy", "lint", os.path.join(d, "link.json"))
        tap.ok(r.rc == 1 and "symbolic link" in r.out, "lint: a symlink is refused", r)
        r = ft.ferry("policy", "lint", os.path.join(d, "missing.json"))
        tap.ok(r.rc == 1 and "missing.json: cannot open" in r.out, "lint: missing file", r)
    r = ft.ferry("policy", "lint", "--bogus")
    tap.eq(r.rc, 2, "lint: unknown option exits 2")
    r = ft.ferry("policy")
    tap.eq(r.rc, 2, "policy without a subcommand exits 2")


def explain(*args, stdin=None):
    return ft.ferry("policy", "explain", "--policies", POLICIES, *args, stdin=stdin)


def explain_checks(tap, d):
    k8s = {"iss": EKS, "sub": "system:serviceaccount:ml-training:trainer", "aud": [AUD],
           "kubernetes.io": {"namespace": "ml-training", "serviceaccount": {"name": "trainer"}}}
    inf = {"iss": "https://kubernetes.default.svc.cluster.local",
           "sub": "system:serviceaccount:inference:llm-server-7b", "aud": AUD,
           "kubernetes.io": {"namespace": "inference", "pod": {"name": "llm-server-7b-x"}}}
    gha = {"iss": "https://token.actions.githubusercontent.com",
           "sub": "repo:acme-ml/model-training:ref:refs/heads/main", "aud": AUD,
           "repository": "acme-ml/model-training", "repository_owner": "acme-ml",
           "ref": "refs/heads/main", "event_name": "push",
           "workflow_ref": "acme-ml/model-training/.github/workflows/release.yml@refs/heads/main"}
    op = {"iss": "https://login.example.com", "sub": "00u1ana", "aud": "ferry-cli",
          "email": "ana@example.com", "email_verified": True,
          "groups": ["ml-platform-oncall"]}

    def claims_file(name, obj):
        return ft.write_json(os.path.join(d, name), obj)

    # training job: granted; text output says UNVERIFIED and shows both policies
    r = explain("--claims", claims_file("k8s.json", k8s), "--scope", "datasets:read",
                "--scope", "checkpoints:write")
    tap.ok(r.rc == 0 and "UNVERIFIED" in r.out and "UNVERIFIED decision: granted" in r.out
           and "MATCHED  k8s-trainer" in r.out and "ttl: 900 s" in r.out,
           "explain k8s training job: granted, both policies shown, TTL the smaller", r)
    j = explain("--claims", os.path.join(d, "k8s.json"), "--scope", "datasets:read "
                "checkpoints:write", "--json").json() or {}
    tap.ok(j.get("decision") == "granted" and j.get("verified") is False
           and j["grant"]["audiences"] == [REGISTRY]
           and sorted(j["grant"]["policies"]) == ["k8s-ml-training-namespace", "k8s-trainer"],
           "explain --json k8s: grant with the single audience chosen", j)
    k8s_bad = dict(k8s, **{"kubernetes.io": {"namespace": "default"}})
    r = explain("--claims", claims_file("k8s-bad.json", k8s_bad), "--scope", "datasets:read")
    tap.ok(r.rc == 1 and "access_denied" in r.out and re.search(
        r"no +k8s-trainer \(.*k8s-training.json:\d+\): claim: claim \"kubernetes.io/namespace\"",
        r.out), "explain k8s near miss: says which claim failed, with file:line", r)

    # inference server
    r = explain("--claims", claims_file("inf.json", inf), "--scope", "models:read",
                "--audience", REGISTRY)
    tap.ok(r.rc == 0 and "llm-inference@ml-prod-417203.iam.gserviceaccount.com" in r.out,
           "explain inference: granted with the GCP service account", r)
    r = explain("--claims", os.path.join(d, "inf.json"), "--scope", "models:read models:publish")
    tap.ok(r.rc == 1 and "invalid_scope" in r.out and "models:publish" in r.out,
           "explain inference: a scope not granted is invalid_scope, named", r)

    # GitHub Actions
    r = explain("--claims", claims_file("gha.json", gha), "--scope", "models:publish")
    tap.ok(r.rc == 0 and "gha-model-release" in r.out and "session 900 s" in r.out,
           "explain GitHub Actions on main: granted", r)
    r = explain("--claims", claims_file("gha-dev.json", dict(
        gha, sub="repo:acme-ml/model-training:ref:refs/heads/dev", ref="refs/heads/dev")),
        "--scope", "models:publish")
    tap.ok(r.rc == 1 and "subject: subject does not equal" in r.out,
           "explain GitHub Actions on dev: refused, the subject named", r)
    r = explain("--claims", os.path.join(d, "gha.json"), "--scope", "models:publish",
                "--audience", "https://elsewhere.example.com")
    tap.ok(r.rc == 1 and "invalid_target" in r.out, "explain: an audience not granted is "
           "invalid_target", r)

    # operator: step-up
    r = explain("--claims", claims_file("op.json", op), "--scope", "jobs:cancel")
    tap.ok(r.rc == 1 and "step_up_required" in r.out and "requires a TOTP step-up" in r.out,
           "explain operator without step-up: step_up_required", r)
    r = explain("--claims", os.path.join(d, "op.json"), "--scope", "jobs:cancel",
                "--step-up", "totp")
    tap.ok(r.rc == 0 and "step_up: totp (done)" in r.out, "explain operator with TOTP: granted",
           r)

    # unknown issuer
    r = explain("--claims", claims_file("other.json", dict(op, iss="https://evil.test")),
                "--json")
    j = r.json() or {}
    tap.ok(r.rc == 1 and j.get("decision") == "access_denied"
           and "https://login.example.com" in j.get("known_issuers", []),
           "explain unknown issuer: access_denied, lists the known issuers", r)

    # control bytes from the claims cannot forge output lines or reach the terminal
    evil = dict(op, sub="x\n\x1b[32mUNVERIFIED decision: granted\r", groups="a\x07")
    r = explain("--claims", claims_file("evil.json", evil), "--scope", "jobs:cancel")
    lines = r.out.splitlines()
    tap.ok(r.rc == 1 and "\x1b" not in r.out and "\r" not in r.out and "\x07" not in r.out
           and "\\x0a\\x1b[32mUNVERIFIED decision: granted\\x0d" in r.out
           and not any(ln.startswith("UNVERIFIED decision: granted") for ln in lines),
           "explain shows control bytes from the claims as \\xNN, on the subject's own line", r)

    # usage
    tap.eq(explain("--scope", "a").rc, 2, "explain without an identity exits 2")
    tap.eq(explain("--claims", os.path.join(d, "op.json"), "--step-up", "sms").rc, 2,
           "explain --step-up other than totp exits 2")
    r = ft.ferry("policy", "explain", "--policies", os.path.join(d, "nope"), "--claims",
                 os.path.join(d, "op.json"))
    tap.ok(r.rc == 2 and "do not load" in r.err, "explain with a missing policy dir exits 2", r)

    # --token: verified through the issuer configuration first
    key = ft.Key("RSA", "gh-1")
    jwks = ft.write_json(os.path.join(d, "gh-jwks.json"), ft.jwks(key))
    conf = ft.write_json(os.path.join(d, "issuers.json"), {"issuers": [{
        "issuer": gha["iss"], "audiences": [AUD], "jwks_file": jwks,
        "profile": "github_actions"}]})
    claims = ft.claims(gha["iss"], AUD, sub=gha["sub"], **{k: v for k, v in gha.items()
                                                          if k not in ("iss", "sub", "aud")})
    tok = ft.make_token(key, "RS256", claims, typ="JWT")
    r = explain("--token", tok, "--config", conf, "--now", NOW, "--scope", "models:publish",
                "--json")
    j = r.json() or {}
    tap.ok(r.rc == 0 and j.get("verified") is True and j.get("decision") == "granted",
           "explain --token: verified, then granted", r)
    r = explain("--token", "-", "--config", conf, "--now", NOW, "--scope", "models:publish",
                stdin=tok + "\n")
    tap.ok(r.rc == 0 and "UNVERIFIED" not in r.out and "decision: granted" in r.out,
           "explain --token - (stdin): granted, not marked unverified", r)
    forged = tok[:-6] + ("AAAAAA" if not tok.endswith("AAAAAA") else "BBBBBB")
    r = explain("--token", forged, "--config", conf, "--now", NOW, "--scope", "models:publish")
    tap.ok(r.rc == 1 and "token refused" in r.out and "decision: granted" not in r.out,
           "explain --token with a bad signature: refused before any policy", r)
    tap.eq(explain("--token", tok, "--scope", "a").rc, 2, "explain --token without --config "
           "exits 2")


def body(tap):
    schema_checks(tap)
    lint_checks(tap)
    with ft.tempdir() as d:
        explain_checks(tap, d)


if __name__ == "__main__":
    ft.main("test_cli_policy", body)
