#!/usr/bin/env python3
# TAP: the aws-sm and aws-kms secret backends end to end against moto_server (../shared/PEERS.md).
#   - moto is seeded with the real AWS CLI: an IAM role trusting a web identity, a string
#     secret, a JSON secret with keys (and a second version staged AWSPREVIOUS), a binary
#     secret, a KMS key and a canary encrypted under it;
#   - `ferry secret get --config` fetches each of them through ferry's own SigV4, with
#     credentials from STS AssumeRoleWithWebIdentity; the web identity token is minted by
#     ferry's keys (`ferry keys init`), and a recording proxy in front of moto's STS proves it
#     is a ferry-minted JWT that verifies against `ferry keys jwks` (moto itself accepts any);
#   - aws-kms:b64:<blob> and aws-kms:file:<name> (the blob sealed in the file backend);
#   - a missing secret, a missing JSON key and an unknown configuration member fail with a
#     clear reason and exit 1 / 1 / 2; no canary appears in any stderr.
# moto_server and aws are required: when missing the test fails (CI installs them).
import base64
import http.server
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402

from joserfc import jwt  # noqa: E402
from joserfc.jwk import KeySet  # noqa: E402

SANITIZER = re.compile(r"ERROR: (Leak|Address)Sanitizer|runtime error:|SUMMARY: \w+Sanitizer")
ISSUER = "https://ferry.test"
SUBJECT = "spiffe://ferry.test/ci"
ROLE = "ferry-ci"
RUNS = []


def ferry(*args, stdin=None):
    r = ft.ferry(*args, stdin=stdin)
    RUNS.append(r)
    return r


class STSProxy:
    """Records the form of each STS call and forwards it to moto unchanged."""

    def __init__(self, upstream):
        self.calls = []
        proxy = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                proxy.calls.append(urllib.parse.parse_qs(body.decode()))
                req = urllib.request.Request(upstream + "/", data=body, method="POST", headers={
                    "Content-Type": self.headers.get("Content-Type", "")})
                try:
                    with urllib.request.urlopen(req, timeout=10) as resp:
                        status, data, ctype = resp.status, resp.read(), resp.headers["Content-Type"]
                except urllib.error.HTTPError as e:
                    status, data, ctype = e.code, e.read(), e.headers["Content-Type"]
                self.send_response(status)
                self.send_header("Content-Type", ctype or "text/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def body(t):
    if not shutil.which("moto_server") or not shutil.which("aws"):
        t.ok(False, "moto_server and aws are installed (pip install 'moto[server]' awscli)")
        return
    port = ft.free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    proxy = None
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).read()
                break
            except Exception:
                time.sleep(0.1)
        else:
            t.ok(False, "moto_server answers")
            return
        proxy = STSProxy(endpoint)
        with ft.tempdir() as d:
            run_all(t, d, endpoint, proxy)
    finally:
        if proxy:
            proxy.close()
        moto.terminate()
        try:
            moto.wait(10)
        except subprocess.TimeoutExpired:
            moto.kill()
            moto.wait()


def run_all(t, d, endpoint, proxy):
    env = ft.clean_env({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null",
                        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"})

    def aws(*args, stdin=None):
        r = subprocess.run(["aws", "--endpoint-url", endpoint, "--output", "json"] + list(args),
                           env=env, capture_output=True, timeout=60, input=stdin)
        if r.returncode != 0:
            raise RuntimeError(f"aws {args[:2]} failed: {r.stderr.decode()[:400]}")
        return json.loads(r.stdout) if r.stdout.strip() else None

    canary = "canary-" + secrets.token_hex(16)
    json_canary = "jcanary-" + secrets.token_hex(16)
    prev_canary = "prev-" + secrets.token_hex(16)
    bin_canary = b"\x00\xffbin-" + secrets.token_hex(8).encode() + b"\n\x01"
    kms_canary = "kms-" + secrets.token_hex(16)
    canaries = [canary, json_canary, prev_canary, kms_canary, bin_canary.hex()]

    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
        "Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/ferry.test"}}]}
    role_arn = aws("iam", "create-role", "--role-name", ROLE, "--assume-role-policy-document",
                   json.dumps(trust))["Role"]["Arn"]
    aws("secretsmanager", "create-secret", "--name", "ci/plain", "--secret-string", canary)
    aws("secretsmanager", "create-secret", "--name", "ci/json", "--secret-string",
        json.dumps({"user": "svc", "password": prev_canary}))
    aws("secretsmanager", "put-secret-value", "--secret-id", "ci/json", "--secret-string",
        json.dumps({"user": "svc", "password": json_canary, "port": 5432}))
    binfile = os.path.join(d, "bin")
    with open(binfile, "wb") as f:
        f.write(bin_canary)
    aws("secretsmanager", "create-secret", "--name", "ci/binary", "--secret-binary",
        "fileb://" + binfile)
    key_id = aws("kms", "create-key")["KeyMetadata"]["KeyId"]
    ptfile = os.path.join(d, "pt")
    with open(ptfile, "w") as f:
        f.write(kms_canary)
    blob = aws("kms", "encrypt", "--key-id", key_id, "--plaintext",
               "fileb://" + ptfile)["CiphertextBlob"]
    os.unlink(ptfile)
    os.unlink(binfile)

    keys = os.path.join(d, "keys")
    r = ferry("keys", "init", "--state-dir", keys)
    t.eq(r.rc, 0, "ferry keys init makes the keys that mint the web identity", r)
    store, key = os.path.join(d, "s.store"), os.path.join(d, "s.key")
    r = ferry("secret", "init", "--store", store, "--key", key)
    t.eq(r.rc, 0, "file store created", r)
    r = ferry("secret", "put", "--store", store, "--key", key, "kms/blob", stdin=blob)
    t.eq(r.rc, 0, "the KMS ciphertext blob is sealed in the file backend", r)

    aws_conf = {"region": "us-east-1", "endpoint": endpoint, "role_arn": role_arn,
                "session_name": "ferry-ci", "sts_endpoint": proxy.url,
                "allow_http_loopback": True}
    conf = {"secrets": {"aws-sm": aws_conf, "aws-kms": aws_conf,
                        "file": {"store": store, "key": key}},
            "identity": {"state_dir": keys, "issuer": ISSUER, "subject": SUBJECT}}
    cfg = os.path.join(d, "conf.json")
    ft.write_json(cfg, conf)

    def get(ref):
        return ferry("secret", "get", "--config", cfg, ref)

    r = get("aws-sm:ci/plain")
    t.ok(r.rc == 0 and r.out == canary, "aws-sm: a string secret, fetched with STS credentials",
         r)
    t.eq(len(proxy.calls), 1, "one AssumeRoleWithWebIdentity call for one fetch")
    if proxy.calls:
        c = proxy.calls[0]
        t.eq((c.get("Action"), c.get("Version"), c.get("RoleArn"), c.get("RoleSessionName")),
             (["AssumeRoleWithWebIdentity"], ["2011-06-15"], [role_arn], ["ferry-ci"]),
             "STS form: Action, Version, RoleArn, RoleSessionName", c)
        tok = (c.get("WebIdentityToken") or [""])[0]
        jwks = ferry("keys", "jwks", "--state-dir", keys)
        try:
            ks = KeySet.import_key_set(json.loads(jwks.out))
            claims = jwt.decode(tok, ks).claims
            ok = (claims.get("iss") == ISSUER and claims.get("sub") == SUBJECT and
                  claims.get("aud") == "sts.amazonaws.com" and claims["exp"] > time.time())
        except Exception as e:  # noqa: BLE001
            ok, claims = False, repr(e)
        t.ok(ok, "the web identity is a ferry-minted JWT (iss, sub, aud sts.amazonaws.com) "
             "that verifies against ferry keys jwks", claims)

    r = get("aws-sm:ci/json#password")
    t.ok(r.rc == 0 and r.out == json_canary, "aws-sm: one key of a JSON secret (#password)", r)
    r = get("aws-sm:ci/json#password?version-stage=AWSPREVIOUS")
    t.ok(r.rc == 0 and r.out == prev_canary, "aws-sm: a version stage (AWSPREVIOUS)", r)
    r = ft.run([ft.FERRY_BIN, "secret", "get", "--config", cfg, "aws-sm:ci/binary"])
    RUNS.append(r)
    got = subprocess.run([ft.FERRY_BIN, "secret", "get", "--config", cfg, "aws-sm:ci/binary"],
                         capture_output=True, env=ft.clean_env(), timeout=30)
    t.ok(got.returncode == 0 and got.stdout == bin_canary,
         "aws-sm: a binary secret, byte for byte (SecretBinary base64)", got.stderr)
    r = get("aws-kms:b64:" + blob)
    t.ok(r.rc == 0 and r.out == kms_canary, "aws-kms: Decrypt of an inline blob", r)
    r = get("aws-kms:file:kms/blob")
    t.ok(r.rc == 0 and r.out == kms_canary, "aws-kms: Decrypt of a blob from the file backend",
         r)

    r = get("aws-sm:ci/absent")
    t.ok(r.rc == 1 and "not found" in r.err and "ResourceNotFoundException" in r.err,
         "a missing secret: a clear 'not found' and exit 1 (refused)", r)
    r = get("aws-sm:ci/json#nope")
    t.ok(r.rc == 1 and "no key" in r.err, "a missing JSON key: exit 1 with the reason", r)
    r = get("aws-sm:ci/plain#k")
    t.ok(r.rc == 1 and "not a JSON object" in r.err,
         "a JSON key of a secret that is not JSON: refused, the value not echoed", r)
    r = get("aws-kms:b64:" + base64.b64encode(b"\x01" * 64).decode())
    t.ok(r.rc != 0 and "AWS" in r.err, "aws-kms: a forged blob is refused with AWS's error type",
         r)

    bad = json.loads(json.dumps(conf))
    bad["secrets"]["aws-sm"]["regoin"] = "x"
    ft.write_json(cfg + ".bad", bad)
    r = ferry("secret", "get", "--config", cfg + ".bad", "aws-sm:ci/plain")
    t.ok(r.rc == 2 and "unknown member" in r.err and "regoin" in r.err,
         "an unknown configuration member is refused by name (exit 2)", r)
    bad = json.loads(json.dumps(conf))
    bad["secrets"]["aws-sm"]["allow_http_loopback"] = False
    ft.write_json(cfg + ".bad", bad)
    r = ferry("secret", "get", "--config", cfg + ".bad", "aws-sm:ci/plain")
    t.ok(r.rc == 2 and canary not in r.out, "plain http is refused without allow_http_loopback",
         r)

    # Environment credentials (no role): moto accepts any key.
    envconf = {"secrets": {"aws-sm": {"region": "us-east-1", "endpoint": endpoint,
                                      "allow_http_loopback": True}}}
    ft.write_json(cfg + ".env", envconf)
    got = ft.run([ft.FERRY_BIN, "secret", "get", "--config", cfg + ".env", "aws-sm:ci/plain"],
                 env=ft.clean_env({"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
                                   "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}))
    RUNS.append(got)
    t.ok(got.rc == 0 and got.out == canary, "environment credentials when no role is set", got)
    got = ft.run([ft.FERRY_BIN, "secret", "get", "--config", cfg + ".env", "aws-sm:ci/plain"])
    RUNS.append(got)
    t.ok(got.rc == 2 and "AWS_ACCESS_KEY_ID" in got.err,
         "no role and no environment credentials: a clear configuration error", got)

    leaked = [r for r in RUNS for c in canaries if c in r.err]
    t.ok(not leaked, "no canary appears in any stderr", leaked[:1])
    san = [r for r in RUNS if SANITIZER.search(r.err)]
    t.ok(not san, "no sanitizer report", san[:1])


if __name__ == "__main__":
    ft.main("test_secrets_aws", body)
