#!/usr/bin/env python3
# TAP: the gcp-sm secret backend end to end against tests/peers/gcp_standin.mjs, a stand-in
# for GCP STS, IAM Credentials and Secret Manager written from Google's API references.
#   - The stand-in is first proven faithful in this run by google-auth-library, Google's
#     official Node.js auth client (tests/peers/gcp_client_check.mjs): an external_account
#     (workload identity pool) credential with a file-sourced subject token exchanges it at the
#     stand-in's STS, optionally impersonates a service account through generateAccessToken,
#     and reads versions with client.request(); payloads and CRC32C are checked there, and
#     Google's error shapes (NOT_FOUND, PERMISSION_DENIED, OAuth invalid_target) observed.
#   - `ferry secret get --config` then fetches with nothing but a token minted by ferry's own
#     keys (the stand-in verifies its signature against `ferry keys jwks`, issuer, audience,
#     lifetime): latest and a numbered version, with and without impersonation; not found,
#     permission denied, a disabled version, a refused exchange; CRC mismatch, 429 with a
#     Retry-After honoured or too long, 5xx retried then bounded, slow, truncated, oversized
#     and wrongly typed answers; bad configurations.
#   - Inside one process (gcpinproc.py: libferry.so through ctypes, ferry's mint lent as the
#     identity) the stand-in counts one STS exchange (and one generateAccessToken) for several
#     reads: the access token is cached. No canary in any stderr or reason.
# node and google-auth-library are required: when missing the test fails (contrib/deps.sh
# runs npm ci).
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402

SANITIZER = re.compile(r"ERROR: (Leak|Address)Sanitizer|runtime error:|SUMMARY: \w+Sanitizer")
ISSUER = "https://ferry.test"
SUBJECT = "spiffe://ferry.test/ci"
NUMBER = "123456789012"
POOL = "//iam.googleapis.com/projects/%s/locations/global/workloadIdentityPools/ferry" % NUMBER
AUDIENCE = POOL + "/providers/ci"
PRINCIPAL = "principal://iam.googleapis.com/projects/%s/locations/global/" \
            "workloadIdentityPools/ferry/subject/%s" % (NUMBER, SUBJECT)
SA = "reader@my-project.iam.gserviceaccount.com"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
PEERS = os.path.join(ft.SRCDIR, "tests", "peers")
FILES = ("package.json", "package-lock.json", "gcp_standin.mjs", "gcp_client_check.mjs")
RUNS = []


def find_peers(t, tmp):
    """The directory holding the scripts with google-auth-library installed, or None."""
    if not shutil.which("node"):
        t.ok(False, "node is on PATH (contrib/deps.sh installs nodejs and npm)")
        return None
    with open(os.path.join(PEERS, "package.json")) as f:
        want = json.load(f)["dependencies"]["google-auth-library"]
    try:
        with open(os.path.join(PEERS, "node_modules", "google-auth-library",
                               "package.json")) as f:
            have = json.load(f)["version"]
    except (OSError, ValueError):
        have = None
    if have == want:
        return PEERS
    npm = shutil.which("npm")
    if not npm:
        t.ok(False, f"google-auth-library {want} in {PEERS}/node_modules, or npm to install it")
        return None
    d = os.path.join(tmp, "peers")
    os.mkdir(d)
    for name in FILES:
        shutil.copy(os.path.join(PEERS, name), d)
    r = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"], cwd=d,
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        t.ok(False, "npm ci of the test peers (google-auth-library)", r.stderr[-800:])
        return None
    return d


class Standin:
    def __init__(self, directory, conf_path):
        self.proc = subprocess.Popen([shutil.which("node"),
                                      os.path.join(directory, "gcp_standin.mjs"),
                                      "--config", conf_path],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True, env=ft.clean_env())
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError("gcp_standin.mjs did not start: " + line +
                               self.proc.stderr.read().decode()[-500:])
        self.url = line.split(" ", 1)[1]

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"{}")

    def stats(self):
        return self.call("GET", "/_standin/stats")

    def fail(self, path, count, **kw):
        self.call("POST", "/_standin/fail", dict(kw, path=path, count=count))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def delta(before, after, *keys):
    """after - before of the counters keys ("access" etc. are calls of that path)."""
    def get(st, k):
        return st["calls"][k] if k in ("sts", "iam", "access") else st[k]
    return {k: get(after, k) - get(before, k) for k in keys}


def body(t):
    tmp = tempfile.mkdtemp(prefix="ferry-gcp-")
    standin = None
    try:
        directory = find_peers(t, tmp)
        if directory is None:
            return
        keys = os.path.join(tmp, "keys")
        r = ft.ferry("keys", "init", "--state-dir", keys)
        t.eq(r.rc, 0, "ferry keys init makes the keys that mint the STS subject token", r)
        jwks = json.loads(ft.ferry("keys", "jwks", "--state-dir", keys).out)
        # The client check's subject token is signed by a test key the JWKS also holds.
        test_key = ft.Key("P-256", kid="client-check")
        jwks["keys"].append(test_key.public_jwk())
        jwks_path = ft.write_json(os.path.join(tmp, "jwks.json"), jwks)
        c = {k: k + "-" + secrets.token_hex(12)
             for k in ("latest", "v1", "sa", "private", "disabled")}
        conf = {
            "jwks_file": jwks_path,
            "providers": {AUDIENCE: {"issuer": ISSUER}},
            "projects": {"my-project": NUMBER},
            "service_accounts": {SA: {"members": [PRINCIPAL]}},
            "secrets": {
                "projects/my-project/secrets/db": {
                    "accessors": [PRINCIPAL, "serviceAccount:" + SA],
                    "versions": [{"text": c["v1"]}, {"text": c["latest"]}]},
                "projects/my-project/secrets/sa-only": {
                    "accessors": ["serviceAccount:" + SA],
                    "versions": [{"text": c["sa"]}]},
                "projects/my-project/secrets/private": {
                    "accessors": [], "versions": [{"text": c["private"]}]},
                "projects/my-project/secrets/old": {
                    "accessors": [PRINCIPAL],
                    "versions": [{"text": c["disabled"], "state": "DISABLED"}]}}}
        conf_path = ft.write_json(os.path.join(tmp, "standin.json"), conf)
        standin = Standin(directory, conf_path)
        faithful(t, directory, standin, tmp, test_key, c)
        fetches(t, tmp, keys, standin, c)
        inproc(t, tmp, keys, standin, c)
        canaries = list(c.values())
        leaked = [r for r in RUNS for x in canaries if x in r.err]
        t.ok(not leaked, "no canary value appears in any stderr or reason", leaked[:1])
        san = [r for r in RUNS if SANITIZER.search(r.err)]
        t.ok(not san, "no sanitizer report", san[:1])
    finally:
        if standin:
            standin.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def faithful(t, directory, standin, tmp, key, c):
    token = ft.make_token(key, "ES256", ft.claims(ISSUER, "https:" + AUDIENCE, sub=SUBJECT,
                                                  now=int(time.time())))
    token_file = os.path.join(tmp, "subject_token")
    with open(token_file, "w") as f:
        f.write(token)
    before = standin.stats()
    r = subprocess.run([shutil.which("node"), os.path.join(directory, "gcp_client_check.mjs"),
                        standin.url, token_file, AUDIENCE, SA, "projects/my-project/secrets/db",
                        "projects/my-project/secrets/private"],
                       capture_output=True, text=True, timeout=60,
                       env=ft.clean_env({"GCP_EXPECT_LATEST": c["latest"],
                                         "GCP_EXPECT_V1": c["v1"]}))
    after = standin.stats()
    RUNS.append(ft.Result(r.returncode, r.stdout, r.stderr, 0))
    try:
        g = json.loads(r.stdout)
    except ValueError:
        t.ok(False, "google-auth-library check ran", r.stderr[-800:])
        return
    t.ok("fatal" not in g, "google-auth-library: the check ran to its end", g.get("fatal"))
    t.ok(g.get("federated_token") is True,
         "google-auth-library: getAccessToken() of an identity-pool credential (file-sourced "
         "subject token) is answered by the stand-in's STS")
    t.eq(g.get("latest"), {"status": 200, "name_version": "2", "name_is_number_form": True,
                           "value_ok": True, "crc_ok": True, "crc_is_string": True,
                           "json": True},
         "google-auth-library: request() of versions/latest:access: the payload decodes to the "
         "value, its dataCrc32c (an int64 string) matches, name gives version 2")
    t.ok(g.get("impersonated_token") is True,
         "google-auth-library: with service_account_impersonation_url the token comes from "
         "generateAccessToken")
    t.ok(g.get("impersonated_expiry_ok") is True,
         "google-auth-library: the stand-in's expireTime (RFC 3339) parses into an expiry "
         "within the hour")
    t.eq(g.get("v1"), {"status": 200, "name_version": "1", "value_ok": True, "crc_ok": True},
         "google-auth-library: versions/1:access as the impersonated service account")
    t.eq((g.get("missing", {}).get("status"), g.get("missing", {}).get("google_status")),
         (404, "NOT_FOUND"), "google-auth-library: a missing secret is 404 NOT_FOUND")
    t.eq((g.get("denied", {}).get("status"), g.get("denied", {}).get("google_status")),
         (403, "PERMISSION_DENIED"), "google-auth-library: a secret it may not read is 403")
    t.ok(g.get("bad_audience", {}).get("status") == 400 and
         g.get("bad_audience", {}).get("message_has_code") is True,
         "google-auth-library: an unknown provider is refused with an OAuth error "
         "(invalid_target)", g.get("bad_audience"))
    t.eq(g.get("wrong_sa", {}).get("status"), 403,
         "google-auth-library: impersonating a service account not granted is 403")
    t.ok(after["sts_ok"] - before["sts_ok"] >= 2 and after["iam_ok"] - before["iam_ok"] >= 1,
         "the stand-in counted the library's exchanges",
         delta(before, after, "sts_ok", "iam_ok"))
    t.eq(after["last"]["sts"]["content_type"], "application/x-www-form-urlencoded",
         "google-auth-library posts STS a form body, as ferry does")


def fetches(t, tmp, keys, standin, c):
    identity = {"state_dir": keys, "issuer": ISSUER, "subject": SUBJECT}

    def config(name, **kw):
        g = {"audience": AUDIENCE, "sts_url": standin.url, "iamcredentials_url": standin.url,
             "secretmanager_url": standin.url, "allow_http_loopback": True}
        g.update(kw)
        g = {k: v for k, v in g.items() if v is not None}
        path = os.path.join(tmp, name + ".json")
        ft.write_json(path, {"secrets": {"gcp-sm": g}, "identity": identity})
        return path

    cfg = config("plain")
    imp = config("imp", service_account=SA)

    def get(ref, path=cfg):
        r = ft.ferry("secret", "get", "--config", path, ref, timeout=60)
        RUNS.append(r)
        return r

    db = "gcp-sm:projects/my-project/secrets/db/versions/"
    before = standin.stats()
    r = get(db + "latest")
    after = standin.stats()
    t.ok(r.rc == 0 and r.out == c["latest"],
         "latest, with an access token from STS for a ferry-minted JWT the stand-in verified", r)
    t.eq(delta(before, after, "sts_ok", "iam", "access_ok"),
         {"sts_ok": 1, "iam": 0, "access_ok": 1}, "one STS exchange, no impersonation, one read")
    last = after["last"]["sts"]
    t.eq(last, {"content_type": "application/x-www-form-urlencoded",
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "audience": AUDIENCE, "scope": SCOPE,
                "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt"},
         "the STS request: RFC 8693 form body with the provider audience and cloud-platform")
    ferry_kids = {k["kid"] for k in json.loads(
        ft.ferry("keys", "jwks", "--state-dir", keys).out)["keys"]}
    sub = after["last"].get("sts_subject", {})
    t.ok(sub.get("kid") in ferry_kids and sub.get("iss") == ISSUER and
         sub.get("sub") == SUBJECT and sub.get("aud") == "https:" + AUDIENCE,
         "the subject token STS accepted was signed by ferry's key, for the provider's default "
         "audience", sub)
    r = get(db + "1")
    t.ok(r.rc == 0 and r.out == c["v1"], "versions/1 reads the older version", r)
    r = get("gcp-sm:projects/%s/secrets/db/versions/2" % NUMBER)
    t.ok(r.rc == 0 and r.out == c["latest"], "the project may be named by its number", r)

    before = standin.stats()
    r = get("gcp-sm:projects/my-project/secrets/sa-only/versions/latest", imp)
    after = standin.stats()
    t.ok(r.rc == 0 and r.out == c["sa"],
         "service_account: a secret only the service account may read", r)
    t.eq(delta(before, after, "sts_ok", "iam_ok", "access_ok"),
         {"sts_ok": 1, "iam_ok": 1, "access_ok": 1},
         "one STS exchange, one generateAccessToken, one read")
    t.eq(after["last"]["iam"], {"email": SA, "scope": [SCOPE], "lifetime": "3600s"},
         "generateAccessToken asks for the scope as a list and lifetime 3600s")
    r = get("gcp-sm:projects/my-project/secrets/sa-only/versions/latest")
    t.ok(r.rc != 0 and "permission denied" in r.err and "PERMISSION_DENIED" in r.err and
         r.out == "", "without impersonation the pool principal is denied (403)", r)
    t.ok("secretmanager.versions.access" not in r.err,
         "Google's own error message is not copied into the reason, only its status word", r)

    r = get("gcp-sm:projects/my-project/secrets/nope/versions/latest")
    t.ok(r.rc == 1 and "not found" in r.err and "NOT_FOUND" in r.err,
         "a missing secret: exit 1, not found", r)
    r = get(db + "9")
    t.ok(r.rc == 1 and "not found" in r.err, "a missing version: not found", r)
    r = get("gcp-sm:projects/my-project/secrets/private/versions/latest")
    t.ok(r.rc != 0 and "permission denied" in r.err and r.out == "",
         "a secret the principal may not read: permission denied", r)
    r = get("gcp-sm:projects/my-project/secrets/old/versions/1")
    t.ok(r.rc == 1 and "disabled or destroyed" in r.err and "FAILED_PRECONDITION" in r.err,
         "a disabled version: a clear error (FAILED_PRECONDITION)", r)

    before = standin.stats()
    r = get(db + "latest", config("tokaud", token_audience="https://wrong.test"))
    after = standin.stats()
    t.ok(r.rc != 0 and "STS token exchange: refused" in r.err and "invalid_grant" in r.err,
         "a minted token with the wrong audience: STS refuses it (invalid_grant)", r)
    t.ok("does not match" not in r.err and "wrong.test" not in r.err,
         "STS's error_description is not copied into the reason", r)
    t.eq(delta(before, after, "sts_refused"), {"sts_refused": 1}, "the refusal is not retried")
    r = get(db + "latest", config("prov", audience=POOL + "/providers/other"))
    t.ok(r.rc != 0 and "invalid_target" in r.err, "an unknown provider: invalid_target", r)
    r = get(db + "latest", config("sa", service_account="other@x.iam.gserviceaccount.com"))
    t.ok(r.rc != 0 and "generateAccessToken: refused" in r.err and
         "PERMISSION_DENIED" in r.err, "a service account not granted: a clear error", r)

    # ---- faults ----
    standin.fail("access", 1, kind="bad_crc")
    r = get(db + "latest")
    t.ok(r.rc != 0 and "CRC32C" in r.err and r.out == "",
         "a payload that does not match its dataCrc32c: an error and no value", r)

    standin.fail("access", 1, kind="status", status=429, retry_after=1)
    before = standin.stats()
    r = get(db + "latest")
    after = standin.stats()
    t.ok(r.rc == 0 and r.out == c["latest"], "429 with Retry-After: 1 is waited out", r)
    t.eq(delta(before, after, "access", "injected", "early_retries"),
         {"access": 2, "injected": 1, "early_retries": 0},
         "two reads, the second not before the Retry-After the stand-in gave")

    standin.fail("access", 1, kind="status", status=503, retry_after=1)
    before = standin.stats()
    r = get(db + "latest")
    after = standin.stats()
    t.ok(r.rc == 0 and r.out == c["latest"] and
         delta(before, after, "access", "early_retries") == {"access": 2, "early_retries": 0},
         "503 with Retry-After: 1 is waited out as well", (r, delta(before, after, "access")))

    standin.fail("access", 5, kind="status", status=429, retry_after=30)
    before = standin.stats()
    r = get(db + "latest")
    after = standin.stats()
    standin.fail("access", 0)
    t.ok(r.rc != 0 and "throttled (429), retry after 30 s" in r.err and r.out == "",
         "429 with a Retry-After longer than a fetch may wait: a clear error at once", r)
    t.eq(delta(before, after, "access"), {"access": 1}, "no retry that would undercut it")

    standin.fail("access", 2, kind="status", status=500)
    before = standin.stats()
    r = get(db + "latest")
    after = standin.stats()
    t.ok(r.rc == 0 and r.out == c["latest"] and
         delta(before, after, "access", "injected") == {"access": 3, "injected": 2},
         "two 500s are retried (jittered backoff) and the third read answers", r)
    standin.fail("access", 10, kind="status", status=503)
    before = standin.stats()
    r = get(db + "latest")
    after = standin.stats()
    standin.fail("access", 0)
    t.ok(r.rc != 0 and "server error (503)" in r.err and "after 4 attempts" in r.err and
         r.out == "" and delta(before, after, "access") == {"access": 4},
         "503 without end: four attempts, then a clear error", r)

    standin.fail("sts", 1, kind="status", status=429, retry_after=1)
    r = get(db + "latest")
    t.ok(r.rc == 0 and r.out == c["latest"], "a throttled STS exchange is waited out too", r)

    standin.fail("access", 10, kind="truncate")
    r = get(db + "latest")
    standin.fail("access", 0)
    t.ok(r.rc != 0 and r.out == "" and "request failed" in r.err,
         "truncated answers: no partial value, a clear error", r)
    standin.fail("access", 1, kind="oversize")
    r = get(db + "latest")
    t.ok(r.rc != 0 and r.out == "" and "answer over 262144 bytes" in r.err,
         "an oversized answer is cut off at the cap: no value", r)
    standin.fail("access", 1, kind="content_type")
    r = get(db + "latest")
    t.ok(r.rc != 0 and r.out == "" and "not application/json" in r.err,
         "an answer that is not application/json is refused", r)
    standin.fail("access", 1, kind="slow", delay_ms=2500)
    before = standin.stats()
    r = get(db + "latest", config("slow", timeout_ms=1000))
    after = standin.stats()
    t.ok(r.rc == 0 and r.out == c["latest"] and delta(before, after, "access")["access"] == 2,
         "a slow answer times out (timeout_ms) and the retry answers", r)

    standin.fail("access", 10, kind="slow", delay_ms=1500)
    r = get(db + "latest", config("slow", timeout_ms=500))
    standin.fail("access", 0)
    t.ok(r.rc != 0 and r.out == "" and "no answer within 500 ms, after 4 attempts" in r.err,
         "an answer slower than timeout_ms every time: a timeout named as one, four attempts", r)

    # ---- configuration ----
    r = get(db + "latest", config("typo", audiance="x"))
    t.ok(r.rc == 2 and "unknown member" in r.err and "audiance" in r.err,
         "an unknown member is refused by name (exit 2)", r)
    r = get(db + "latest", config("badaud", audience="//iam.googleapis.com/projects/x"))
    t.ok(r.rc == 2 and "audience" in r.err, "an audience that is not a provider is refused", r)
    r = get(db + "latest", config("plainhttp", allow_http_loopback=None))
    t.ok(r.rc == 2 and "sts_url" in r.err, "plain http is refused without allow_http_loopback",
         r)
    path = ft.write_json(os.path.join(tmp, "noid.json"),
                         {"secrets": {"gcp-sm": {"audience": AUDIENCE}}})
    r = get(db + "latest", path)
    t.ok(r.rc == 2 and "identity" in r.err, "without ferry's identity: a clear error", r)


def inproc(t, tmp, keys, standin, c):
    lib = os.path.join(ft.BUILDDIR, ".libs", "libferry.so")
    env = ft.clean_env({"GCP_EXPECT_0": c["latest"], "GCP_EXPECT_1": c["v1"],
                        "GCP_EXPECT_2": c["latest"], "GCP_EXPECT_3": c["v1"]})
    ldd = subprocess.run(["ldd", lib], capture_output=True, text=True).stdout
    if "libasan" in ldd:
        pre = [subprocess.run(["gcc", "-print-file-name=" + n], capture_output=True,
                              text=True).stdout.strip() for n in ("libasan.so", "libubsan.so")]
        env["LD_PRELOAD"] = ":".join(p for p in pre if os.path.isabs(p))
        env["ASAN_OPTIONS"] = "detect_leaks=0"
    db = "gcp-sm:projects/my-project/secrets/db/versions/"
    refs = [db + "latest", db + "1", db + "latest", db + "1"]

    def run(**kw):
        g = {"audience": AUDIENCE, "sts_url": standin.url, "iamcredentials_url": standin.url,
             "secretmanager_url": standin.url, "allow_http_loopback": True, "cache_ttl": 0}
        g.update(kw)
        before = standin.stats()
        r = subprocess.run([sys.executable, os.path.join(os.path.dirname(
            os.path.abspath(__file__)), "gcpinproc.py"), lib, json.dumps({"gcp-sm": g}),
            keys, ISSUER, SUBJECT] + refs, capture_output=True, text=True, timeout=60, env=env)
        after = standin.stats()
        try:
            out = json.loads(r.stdout)
        except ValueError:
            out = {"stdout": r.stdout, "stderr": r.stderr[-600:]}
        # The reasons the library gave count as error output for the canary check.
        RUNS.append(ft.Result(r.returncode, "", r.stderr + "\n".join(out.get("errors", [])), 0))
        return out, delta(before, after, "sts_ok", "iam_ok", "access_ok")

    out, d = run()
    t.ok(out.get("ok") == [True] * 4 and out.get("values_match") == [True] * 4 and
         out.get("versions") == ["2", "1", "2", "1"],
         "in one process: four reads (cache off) answer the values and resolved versions", out)
    t.eq(d, {"sts_ok": 1, "iam_ok": 0, "access_ok": 4},
         "one STS exchange for four reads: the access token is cached")
    t.eq(out.get("minted_audiences"), ["https:" + AUDIENCE],
         "the one token minted has the provider's default audience (https: + audience)")
    out, d = run(service_account=SA)
    t.ok(out.get("ok") == [True] * 4 and out.get("values_match") == [True] * 4,
         "in one process with impersonation: four reads answer", out)
    t.eq(d, {"sts_ok": 1, "iam_ok": 1, "access_ok": 4},
         "one exchange and one generateAccessToken for four reads")


if __name__ == "__main__":
    ft.main("test_secrets_gcp", body)
