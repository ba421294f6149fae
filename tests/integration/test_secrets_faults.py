#!/usr/bin/env python3
# TAP: the vault, aws-sm and aws-kms secret backends (and the STS call behind the AWS ones)
# under faults, through `ferry secret get --config`.
#   - vault: tests/peers/vault_standin.mjs injects each fault into the KV v2 read;
#   - AWS: tests/peers/fault_proxy.py sits in front of moto_server (seeded with the aws CLI:
#     an IAM role, a Secrets Manager secret, a KMS key and a ciphertext) and injects each fault
#     into GetSecretValue, KMS Decrypt or STS AssumeRoleWithWebIdentity.
#   For each fault the stand-in or the proxy counts the requests that reached it:
#     429 with Retry-After 1        waited (at least 1 s), then the value; 2 requests
#     429 with Retry-After 30       a clear error at once ("retry after 30 s"); 1 request
#     503 twice                     retried with backoff, then the value; 3 requests
#     500 always                    a clear error "after 3 attempts"; 3 requests
#     slow past timeout_ms          "did not answer within 500 ms" (timed out), 3 requests
#     truncated body                no complete answer, no value
#     oversized body                refused ("over N bytes"), not retried; 1 request
#     wrong content type            refused, no value (the body held the real value)
#     redirect to another host      refused; a second listener on that host is never contacted
#   Every reason names the backend reference and what happened; no secret value, no token and
#   none of the remote's error text (a canary in every injected error body) reaches stdout or
#   stderr.
# node, moto_server and aws are required: when missing the test fails.
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402
from test_secrets_vault import Standin as VaultStandin  # noqa: E402

SANITIZER = re.compile(r"ERROR: (Leak|Address)Sanitizer|runtime error:|SUMMARY: \w+Sanitizer")
ISSUER = "https://ferry.test"
SUBJECT = "spiffe://ferry.test/ci"
PEERS = os.path.join(ft.SRCDIR, "tests", "peers")
SM = "secretsmanager.GetSecretValue"
KMS = "TrentService.Decrypt"
STS = "AssumeRoleWithWebIdentity"
RUNS = []


# ---- peers shared with test_ferryd_secrets_backends.py -------------------------------------

def http_json(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def start_vault(conf_path):
    """The Vault stand-in (tests/peers/vault_standin.mjs), or None when node is missing."""
    if not shutil.which("node"):
        return None
    return VaultStandin(PEERS, conf_path)


class Moto:
    """moto_server on a free loopback port, and the aws CLI pointed at it."""

    def __init__(self):
        self.port = ft.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        for _ in range(150):
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1).read()
                return
            except Exception:  # noqa: BLE001
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto_server did not answer")

    def aws(self, *args):
        env = ft.clean_env({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null",
                            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"})
        r = subprocess.run(["aws", "--endpoint-url", self.url, "--output", "json"] + list(args),
                           env=env, capture_output=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"aws {args[:2]} failed: {r.stderr.decode()[:400]}")
        return json.loads(r.stdout) if r.stdout.strip() else None

    def seed(self, d, secrets_by_name, kms_plaintext):
        """An IAM role for web identities, string secrets, a KMS key and the ciphertext of
        kms_plaintext. Returns (role ARN, standard base64 ciphertext)."""
        trust = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
            "Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/ferry.test"}}]}
        role = self.aws("iam", "create-role", "--role-name", "ferry-ci",
                        "--assume-role-policy-document", json.dumps(trust))["Role"]["Arn"]
        for name, value in secrets_by_name.items():
            self.aws("secretsmanager", "create-secret", "--name", name, "--secret-string", value)
        key_id = self.aws("kms", "create-key")["KeyMetadata"]["KeyId"]
        pt = os.path.join(d, "pt")
        with open(pt, "w") as f:
            f.write(kms_plaintext)
        blob = self.aws("kms", "encrypt", "--key-id", key_id, "--plaintext",
                        "fileb://" + pt)["CiphertextBlob"]
        os.unlink(pt)
        return role, blob

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class FaultProxy:
    """tests/peers/fault_proxy.py in front of target."""

    def __init__(self, target):
        self.proc = subprocess.Popen([ft.PYTHON3, os.path.join(PEERS, "fault_proxy.py"),
                                      "--target", target],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True, env=ft.clean_env())
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError("fault_proxy.py did not start: " + line)
        self.url = line.split(" ", 1)[1]

    def fault(self, **plan):
        return http_json("POST", self.url + "/_proxy/fault", plan)

    def reset(self):
        return http_json("POST", self.url + "/_proxy/reset", {})

    def stats(self):
        return http_json("GET", self.url + "/_proxy/stats")[1]

    def count(self, action):
        return self.stats()["actions"].get(action, 0)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def ferry_keys(d):
    """ferry's signing keys (they mint the Vault and STS web identities) and their JWKS file."""
    keys = os.path.join(d, "keys")
    r = ft.ferry("keys", "init", "--state-dir", keys)
    if r.rc != 0:
        raise RuntimeError(f"ferry keys init: {r}")
    jwks = os.path.join(d, "jwks.json")
    with open(jwks, "w") as f:
        f.write(ft.ferry("keys", "jwks", "--state-dir", keys).out)
    return keys, jwks


# ---- the faults ------------------------------------------------------------------------------

# (name, plan, expected requests, success?, words of the reason)
def fault_table(canary_err, other):
    return [
        ("429 with Retry-After 1", {"kind": "status", "status": 429, "retry_after": 1,
                                    "count": 1}, 2, True, []),
        ("429 with Retry-After 30 (past the budget)",
         {"kind": "status", "status": 429, "retry_after": 30, "count": 3}, 1, False,
         ["throttl", "retry after 30 s"]),
        ("503 twice", {"kind": "status", "status": 503, "count": 2}, 3, True, []),
        ("500 always", {"kind": "status", "status": 500, "count": 3}, 3, False,
         ["500", "after 3 attempts"]),
        ("slow past timeout_ms", {"kind": "slow", "delay_ms": 2500, "count": 3}, 3, False,
         ["within 500 ms", "after 3 attempts"]),
        ("truncated body", {"kind": "truncate", "count": 3}, 3, False,
         ["cut short", "after 3 attempts"]),
        ("oversized body", {"kind": "oversize", "count": 1}, 1, False, ["over"]),
        ("wrong content type", {"kind": "content_type", "count": 1}, 1, False, ["not "]),
        ("redirect to another host", {"kind": "redirect", "location": other, "count": 1}, 1,
         False, ["redirect"]),
    ]


def check_fault(t, label, run, count, plan_fn, reset_fn, name, plan, want_n, success, words,
                value, ref_prefix, forbidden, other):
    reset_fn()
    plan_fn(plan)
    n0 = count()
    r = run()
    RUNS.append(r)
    n = count() - n0
    reset_fn()
    if success:
        t.ok(r.rc == 0 and r.out == value, f"{label}: {name}: the value", r)
        if "retry_after" in plan:
            t.ok(r.elapsed >= plan["retry_after"] - 0.05,
                 f"{label}: {name}: Retry-After honoured (waited at least "
                 f"{plan['retry_after']} s)", r.elapsed)
    else:
        t.ok(r.rc != 0 and r.out == "" and ref_prefix in r.err and
             all(w in r.err for w in words),
             f"{label}: {name}: a clear error naming {ref_prefix!r} and {words}, no value", r)
        if not any(c in r.err for c in forbidden):
            t.diag("reason: " + r.err.strip()[:400])
    t.eq(n, want_n, f"{label}: {name}: {want_n} request(s) reached the backend")
    leaked = [c for c in forbidden if c in r.err or (not success and c in r.out)]
    t.ok(not leaked, f"{label}: {name}: no value, token or remote error text in the output",
         leaked)
    if plan.get("kind") == "redirect":
        t.eq(other.count, 0, f"{label}: {name}: the other host was never contacted")


def vault_part(t, d, canary, canary_err, other):
    token = "hvs.dev-" + secrets.token_hex(16)
    conf = {"root_token": "root-" + secrets.token_hex(8), "kv_mounts": ["secret"],
            "jwks_file": os.path.join(d, "none.json"),
            "tokens": {token: {"paths": ["secret/data/ci/*"]}}}
    standin = start_vault(ft.write_json(os.path.join(d, "vault.json"), conf))
    if standin is None:
        t.ok(False, "node is on PATH (the Vault stand-in)")
        return
    try:
        st, _ = standin.call("POST", "/v1/secret/data/ci/db", {"data": {"password": canary}},
                             token=conf["root_token"])
        t.eq(st, 200, "vault: the secret is written to the stand-in")
        token_file = os.path.join(d, "vault-token")
        with open(token_file, "w") as f:
            f.write(token)
        os.chmod(token_file, 0o600)
        cfg = ft.write_json(os.path.join(d, "ferry-vault.json"), {"secrets": {"vault": {
            "address": standin.url, "allow_http_loopback": True, "timeout_ms": 500,
            "auth": {"method": "token", "token_file": token_file}}}})
        ref = "vault:secret/ci/db#password"

        def run():
            return ft.ferry("secret", "get", "--config", cfg, ref)

        r = run()
        RUNS.append(r)
        t.ok(r.rc == 0 and r.out == canary, "vault: no fault: the value", r)

        def plan_fn(plan):
            p = dict(plan, path="/data/", body=canary_err)
            if p["kind"] == "content_type" or p["kind"] == "truncate":
                p["body"] = canary  # the real value in the faulty answer
            standin.call("POST", "/_standin/fail", p)

        def reset_fn():
            standin.call("POST", "/_standin/fail", {"count": 0})

        for name, plan, n, ok, words in fault_table(canary_err, other.url):
            check_fault(t, "vault", run, lambda: standin.stats()["requests"], plan_fn, reset_fn,
                        name, plan, n, ok, words, canary, "vault:secret/ci/db",
                        [canary, canary_err, token], other)
    finally:
        standin.stop()


def aws_part(t, d, canary, kms_canary, canary_err, other):
    if not shutil.which("moto_server") or not shutil.which("aws"):
        t.ok(False, "moto_server and aws are installed (pip install 'moto[server]' awscli)")
        return
    moto = Moto()
    proxy = None
    try:
        role, blob = moto.seed(d, {"ci/db": canary}, kms_canary)
        proxy = FaultProxy(moto.url)
        keys, _ = ferry_keys(d)
        aws_conf = {"region": "us-east-1", "endpoint": proxy.url, "role_arn": role,
                    "sts_endpoint": proxy.url, "allow_http_loopback": True, "timeout_ms": 500}
        cfg = ft.write_json(os.path.join(d, "ferry-aws.json"), {
            "secrets": {"aws-sm": aws_conf, "aws-kms": aws_conf},
            "identity": {"state_dir": keys, "issuer": ISSUER, "subject": SUBJECT}})
        cases = (("aws-sm GetSecretValue", SM, "aws-sm:ci/db", "aws-sm:ci/db", canary),
                 ("aws-kms Decrypt", KMS, "aws-kms:b64:" + blob, "aws-kms:b64:", kms_canary),
                 ("STS AssumeRoleWithWebIdentity", STS, "aws-sm:ci/db", "aws-sm:ci/db", canary))
        for label, action, ref, prefix, value in cases:
            def run(ref=ref):
                return ft.ferry("secret", "get", "--config", cfg, ref)

            proxy.reset()
            r = run()
            RUNS.append(r)
            t.ok(r.rc == 0 and r.out == value and proxy.count(action) == 1,
                 f"{label}: no fault: the value, one request", r)

            def plan_fn(plan, action=action):
                proxy.fault(action=action, body=canary_err, **plan)

            for name, plan, n, ok, words in fault_table(canary_err, other.url):
                if action == STS and plan["kind"] == "content_type":
                    words = ["not text/xml"]
                check_fault(t, label, run, lambda a=action: proxy.count(a), plan_fn,
                            proxy.reset, name, plan, n, ok, words, value, prefix,
                            [canary, kms_canary, canary_err], other)
    finally:
        if proxy:
            proxy.stop()
        moto.stop()


def body(t):
    canary = "CANARY-V-" + secrets.token_hex(16)
    kms_canary = "CANARY-K-" + secrets.token_hex(16)
    canary_err = "CANARY-ERR-" + secrets.token_hex(16)
    with ft.tempdir() as d, ft.Listener() as other:
        vault_part(t, d, canary, canary_err, other)
        aws_part(t, d, canary, kms_canary, canary_err, other)
        t.eq(other.count, 0, "the other host of the redirects was never contacted")
    san = [r for r in RUNS if SANITIZER.search(r.err)]
    t.ok(not san, "no sanitizer report", san[:1])


if __name__ == "__main__":
    ft.main("test_secrets_faults", body)
