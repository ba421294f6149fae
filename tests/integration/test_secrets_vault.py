#!/usr/bin/env python3
# TAP: the vault secret backend end to end against tests/peers/vault_standin.mjs, a Vault
# stand-in written from Vault's API documentation.
#   - The stand-in is first proven faithful in this run by node-vault, Vault's official
#     JavaScript client (tests/peers/vault_client_check.mjs): KV v2 writes and reads (latest, a
#     version, check-and-set, metadata, a missing secret), AppRole login, token lookup-self and
#     renew-self, refused logins, a namespace; node-vault also validates the answers against
#     its own response schemas.
#   - Secrets are seeded over HTTP, then `ferry secret get --config` fetches them: JWT login
#     with a token minted by ferry's own keys (the stand-in verifies its signature against
#     `ferry keys jwks`, its audience, expiry, issuer and the role's bound subject), AppRole and
#     a token file; latest, a version, a non-string field, a namespace; a missing field, a
#     missing secret, a forbidden path, a wrong audience, throttling and 5xx retried then
#     bounded, bad configurations.
#   - Inside one process (vaultinproc.py: libferry.so through ctypes) the stand-in counts one
#     AppRole login for five reads (the Vault token is cached) and a renew-self, not a new
#     login, past 2/3 of a 6 s lease; no canary in any stderr.
# node and node-vault are required: when missing the test fails (contrib/deps.sh runs npm ci).
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402

SANITIZER = re.compile(r"ERROR: (Leak|Address)Sanitizer|runtime error:|SUMMARY: \w+Sanitizer")
ISSUER = "https://ferry.test"
SUBJECT = "spiffe://ferry.test/ci"
AUDIENCE = "vault.test"
ROOT = "root-" + secrets.token_hex(8)
ROLE_ID = "role-" + secrets.token_hex(4)
SECRET_ID = "sid-" + secrets.token_hex(16)
DEV_TOKEN = "dev-" + secrets.token_hex(16)
PEERS = os.path.join(ft.SRCDIR, "tests", "peers")
FILES = ("package.json", "package-lock.json", "vault_standin.mjs", "vault_client_check.mjs")
RUNS = []


def find_peers(t, tmp):
    """The directory holding the scripts with node-vault installed, or None (a failure)."""
    node = shutil.which("node")
    if not node:
        t.ok(False, "node is on PATH (contrib/deps.sh installs nodejs and npm)")
        return None
    with open(os.path.join(PEERS, "package.json")) as f:
        want = json.load(f)["dependencies"]["node-vault"]
    try:
        with open(os.path.join(PEERS, "node_modules", "node-vault", "package.json")) as f:
            have = json.load(f)["version"]
    except (OSError, ValueError):
        have = None
    if have == want:
        return PEERS
    npm = shutil.which("npm")
    if not npm:
        t.ok(False, f"node-vault {want} installed in {PEERS}/node_modules, or npm to install it")
        return None
    d = os.path.join(tmp, "peers")
    os.mkdir(d)
    for name in FILES:
        shutil.copy(os.path.join(PEERS, name), d)
    r = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"], cwd=d,
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        t.ok(False, "npm ci of the test peers (node-vault)", r.stderr[-800:])
        return None
    return d


class Standin:
    def __init__(self, directory, conf_path):
        self.proc = subprocess.Popen([shutil.which("node"),
                                      os.path.join(directory, "vault_standin.mjs"),
                                      "--config", conf_path],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True, env=ft.clean_env())
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError("vault_standin.mjs did not start: " + line +
                               self.proc.stderr.read().decode()[-500:])
        self.url = line.split(" ", 1)[1]

    def call(self, method, path, body=None, token=None, namespace=None):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["X-Vault-Token"] = token
        if namespace:
            headers["X-Vault-Namespace"] = namespace
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def stats(self):
        return self.call("GET", "/_standin/stats")[1]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def body(t):
    tmp = tempfile.mkdtemp(prefix="ferry-vault-")
    standin = None
    try:
        directory = find_peers(t, tmp)
        if directory is None:
            return
        keys = os.path.join(tmp, "keys")
        r = ft.ferry("keys", "init", "--state-dir", keys)
        t.eq(r.rc, 0, "ferry keys init makes the keys that mint the Vault login token", r)
        jwks = ft.ferry("keys", "jwks", "--state-dir", keys)
        jwks_path = os.path.join(tmp, "jwks.json")
        with open(jwks_path, "w") as f:
            f.write(jwks.out)
        conf = {
            "root_token": ROOT, "namespaces": ["team-a"], "kv_mounts": ["secret", "kv"],
            "jwks_file": jwks_path, "bound_issuer": ISSUER,
            "jwt_roles": {
                "ci": {"bound_audiences": [AUDIENCE], "bound_subject": SUBJECT,
                       "token_ttl": 300, "paths": ["secret/data/ci/*"]},
                "other-sub": {"bound_audiences": [AUDIENCE], "bound_subject": "spiffe://x/y",
                              "token_ttl": 300, "paths": ["*"]},
                "ns-ci": {"namespace": "team-a", "bound_audiences": [AUDIENCE],
                          "bound_subject": SUBJECT, "token_ttl": 300,
                          "paths": ["secret/data/*"]}},
            "approle_roles": {"app": {"role_id": ROLE_ID, "secret_id": SECRET_ID,
                                      "token_ttl": 120, "token_max_ttl": 600,
                                      "paths": ["secret/data/ci/*"]},
                              "app-short": {"role_id": ROLE_ID + "-short",
                                            "secret_id": SECRET_ID, "token_ttl": 6,
                                            "token_max_ttl": 600,
                                            "paths": ["secret/data/ci/*"]}},
            "tokens": {DEV_TOKEN: {"paths": ["secret/data/ci/*"]}}}
        conf_path = os.path.join(tmp, "standin.json")
        ft.write_json(conf_path, conf)
        standin = Standin(directory, conf_path)
        faithful(t, directory, standin)
        fetches(t, tmp, keys, standin)
    finally:
        if standin:
            standin.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def faithful(t, directory, standin):
    r = subprocess.run([shutil.which("node"), os.path.join(directory, "vault_client_check.mjs"),
                        standin.url, ROOT, ROLE_ID, SECRET_ID, "team-a"],
                       capture_output=True, text=True, timeout=60, env=ft.clean_env())
    try:
        nv = json.loads(r.stdout)
    except ValueError:
        t.ok(False, "node-vault check ran", r.stderr[-800:])
        return
    t.ok(nv.get("health") is True, "node-vault: health() reads sys/health", nv.get("health"))
    t.eq((nv.get("write1"), nv.get("write2")), (1, 2),
         "node-vault: write() of KV v2 data answers versions 1 then 2")
    t.eq(nv.get("cas_conflict", {}).get("status"), 400,
         "node-vault: a stale check-and-set write is refused with 400")
    t.eq(nv.get("read_latest"), {"data": {"value": "two", "n": 2}, "version": 2},
         "node-vault: read() of the latest version: data.data and data.metadata.version")
    t.eq(nv.get("read_v1"), {"data": {"value": "one"}, "version": 1},
         "node-vault: read() of ?version=1")
    t.eq(nv.get("read_missing", {}).get("status"), 404, "node-vault: a missing secret is 404")
    t.eq(nv.get("metadata"), 2, "node-vault: the metadata endpoint counts the versions")
    t.eq(nv.get("no_token"), {"error": "permission denied", "status": 403},
         "node-vault: no token is 403 with Vault's \"permission denied\"")
    t.eq(nv.get("approle_login"), {"has_token": True, "lease_duration": 120, "renewable": True,
                                   "client_took_token": True},
         "node-vault: approleLogin() passes its schema, and the client adopts the token")
    lk = nv.get("lookup_self", {})
    t.ok(lk.get("id_matches") is True and 100 <= lk.get("ttl", 0) <= 120 and
         lk.get("renewable") is True and lk.get("path") == "auth/approle/login",
         "node-vault: tokenLookupSelf() describes the AppRole token (id, ttl, path)", lk)
    t.eq(nv.get("renew_self", {}).get("same_token"), True,
         "node-vault: tokenRenewSelf() renews the same token")
    t.eq(nv.get("approle_bad_secret", {}).get("status"), 400,
         "node-vault: a wrong secret_id is refused with 400")
    t.eq(nv.get("jwt_garbage", {}).get("status"), 400, "node-vault: jwtLogin() of garbage: 400")
    t.eq((nv.get("ns_write"), nv.get("ns_read")), (1, "in-ns"),
         "node-vault: write and read inside namespace team-a (X-Vault-Namespace)")
    t.eq(nv.get("ns_read_from_root", {}).get("status"), 404,
         "node-vault: the namespace's secret is not visible from the root namespace")


def fetches(t, tmp, keys, standin):
    canary = "canary-" + secrets.token_hex(16)
    old_canary = "old-" + secrets.token_hex(16)
    ns_canary = "ns-" + secrets.token_hex(16)
    private_canary = "priv-" + secrets.token_hex(16)
    canaries = [canary, old_canary, ns_canary, private_canary, ROOT, SECRET_ID, DEV_TOKEN]

    def seed(path, data, namespace=None):
        s, b = standin.call("POST", "/v1/secret/data/" + path, {"data": data}, ROOT, namespace)
        if s != 200:
            raise RuntimeError(f"seeding {path}: {s} {b}")
        return b["data"]["version"]

    seed("ci/db", {"password": old_canary})
    v2 = seed("ci/db", {"password": canary, "user": "svc", "port": 5432,
                        "opts": {"tls": True}, "gone": None})
    seed("ci/ns", {"password": ns_canary}, "team-a")
    seed("private/x", {"password": private_canary})
    t.eq(v2, 2, "seeded two versions of secret/ci/db")

    secret_id_file = os.path.join(tmp, "secret_id")
    token_file = os.path.join(tmp, "token")
    for path, text in ((secret_id_file, SECRET_ID + "\n"), (token_file, DEV_TOKEN)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, text.encode())
        os.close(fd)

    identity = {"state_dir": keys, "issuer": ISSUER, "subject": SUBJECT}
    jwt_auth = {"method": "jwt", "role": "ci", "audience": AUDIENCE}

    def config(name, auth=None, namespace=None, **extra):
        v = {"address": standin.url, "allow_http_loopback": True, "auth": auth or jwt_auth}
        if namespace:
            v["namespace"] = namespace
        v.update(extra)
        path = os.path.join(tmp, name + ".json")
        ft.write_json(path, {"secrets": {"vault": v}, "identity": identity})
        return path

    cfg = config("jwt")

    def get(ref, path=cfg):
        r = ft.ferry("secret", "get", "--config", path, ref)
        RUNS.append(r)
        return r

    before = standin.stats()
    r = get("vault:secret/ci/db#password")
    after = standin.stats()
    t.ok(r.rc == 0 and r.out == canary,
         "jwt: the latest version, logged in with a ferry-minted token the stand-in verified", r)
    t.eq(after["logins"]["jwt"] - before["logins"]["jwt"], 1,
         "one JWT login for the fetch", after)
    r = get("vault:secret/ci/db#password?version=1")
    t.ok(r.rc == 0 and r.out == old_canary, "jwt: ?version=1 reads the older version", r)
    r = get("vault:secret/ci/db#port")
    t.ok(r.rc == 0 and r.out == "5432", "a number field is handed out as its JSON text", r)
    r = get("vault:secret/ci/db#opts")
    t.ok(r.rc == 0 and r.out == '{"tls":true}', "an object field as compact JSON", r)
    r = get("vault:secret/ci/db#gone")
    t.ok(r.rc == 1 and "is null" in r.err, "a null field is refused (exit 1)", r)
    r = get("vault:secret/ci/db#nope")
    t.ok(r.rc == 1 and 'no field "nope"' in r.err and canary not in r.err,
         "a missing field: exit 1, the reason names the field", r)
    r = get("vault:secret/ci/absent#password")
    t.ok(r.rc == 1 and "not found" in r.err, "a missing secret: exit 1, 'not found'", r)
    r = get("vault:secret/ci/db#password?version=9")
    t.ok(r.rc == 1 and "not found" in r.err, "a missing version: exit 1, 'not found'", r)
    before = standin.stats()
    r = get("vault:secret/private/x#password")
    after = standin.stats()
    t.ok(r.rc != 0 and "permission denied" in r.err and private_canary not in r.out,
         "a path outside the role's policy: permission denied", r)
    t.eq((after["logins"]["jwt"] - before["logins"]["jwt"], after["denied"] - before["denied"]),
         (1, 1), "a 403 to a token just obtained is final: one login, one denied read", after)

    r = get("vault:secret/ci/ns#password", config("ns", dict(jwt_auth, role="ns-ci"),
                                                 namespace="team-a"))
    st = standin.stats()
    t.ok(r.rc == 0 and r.out == ns_canary and st["last_headers"]["namespace"] == "team-a",
         "namespace team-a: login and read carry X-Vault-Namespace", (r, st["last_headers"]))
    r = get("vault:secret/ci/ns#password")
    t.ok(r.rc == 1 and "not found" in r.err,
         "without the namespace the namespace's secret is not found", r)

    before = standin.stats()
    r = get("vault:secret/ci/db#password",
            config("approle", {"method": "approle", "role_id": ROLE_ID,
                               "secret_id_file": secret_id_file}))
    after = standin.stats()
    t.ok(r.rc == 0 and r.out == canary and
         after["logins"]["approle"] - before["logins"]["approle"] == 1,
         "approle: role_id with the secret_id from a 0600 file", (r, after["logins"]))
    r = get("vault:secret/ci/db#password",
            config("token", {"method": "token", "token_file": token_file}))
    t.ok(r.rc == 0 and r.out == canary, "token: a development token from a 0600 file", r)

    before = standin.stats()
    r = get("vault:secret/ci/db#password", config("aud", dict(jwt_auth, audience="wrong.test")))
    after = standin.stats()
    t.ok(r.rc != 0 and "jwt login" in r.err and "refused by Vault" in r.err and
         canary not in r.out,
         "a wrong audience: the stand-in refuses the JWT, a clear login error", r)
    t.eq(after["login_failures"] - before["login_failures"], 1,
         "the refused login reached the stand-in once (no retry of a 400)")
    t.ok("audience" not in r.err, "Vault's own error text is not copied into the reason", r)
    r = get("vault:secret/ci/db#password", config("sub", dict(jwt_auth, role="other-sub")))
    t.ok(r.rc != 0 and "refused by Vault" in r.err,
         "a role bound to another subject refuses ferry's token", r)

    standin.call("POST", "/_standin/fail", {"status": 503, "count": 2})
    before = standin.stats()
    r = get("vault:secret/ci/db#password")
    after = standin.stats()
    t.ok(r.rc == 0 and r.out == canary and after["injected"] - before["injected"] == 2,
         "two 503s are retried (with jitter) and the third attempt answers", (r, after))
    standin.call("POST", "/_standin/fail", {"status": 429, "count": 50})
    r = get("vault:secret/ci/db#password")
    st = standin.stats()
    standin.call("POST", "/_standin/fail", {"status": 0, "count": 0})
    t.ok(r.rc != 0 and "429" in r.err and "after 3 attempts" in r.err and r.out == "",
         "throttling is retried three times, then a clear error and no value", r)
    t.ok(st["injected"] - after["injected"] == 3, "exactly three attempts", st)

    inproc(t, standin, secret_id_file, canary)

    os.chmod(secret_id_file, 0o644)
    r = get("vault:secret/ci/db#password",
            config("approle644", {"method": "approle", "role_id": ROLE_ID,
                                  "secret_id_file": secret_id_file}))
    t.ok(r.rc != 0 and "mode 0600" in r.err, "a secret_id file readable by others is refused",
         r)
    os.chmod(secret_id_file, 0o600)
    r = get("vault:secret/ci/db#password",
            config("inline", {"method": "approle", "role_id": ROLE_ID, "secret_id": SECRET_ID}))
    t.ok(r.rc == 2 and "unknown member" in r.err and "secret_id" in r.err,
         "an inline secret_id is refused: secrets only from files", r)
    r = get("vault:secret/ci/db#password", config("typo", adress="x"))
    t.ok(r.rc == 2 and "unknown member" in r.err and "adress" in r.err,
         "an unknown member is refused by name (exit 2)", r)
    r = get("vault:secret/ci/db#password", config("plain", allow_http_loopback=False))
    t.ok(r.rc == 2 and "address" in r.err, "plain http is refused without allow_http_loopback",
         r)
    path = os.path.join(tmp, "noid.json")
    ft.write_json(path, {"secrets": {"vault": {"address": standin.url,
                                               "allow_http_loopback": True,
                                               "auth": jwt_auth}}})
    r = get("vault:secret/ci/db#password", path)
    t.ok(r.rc == 2 and "identity" in r.err, "jwt without ferry's identity: a clear error", r)

    leaked = [r for r in RUNS for c in canaries if c in r.err]
    t.ok(not leaked, "no canary, token or secret_id appears in any stderr", leaked[:1])
    san = [r for r in RUNS if SANITIZER.search(r.err)]
    t.ok(not san, "no sanitizer report", san[:1])


def inproc(t, standin, secret_id_file, canary):
    """Several fetches in one process (libferry.so through ctypes): one login, then renewal."""
    lib = os.path.join(ft.BUILDDIR, ".libs", "libferry.so")
    env = ft.clean_env({"VAULT_EXPECT": canary})
    ldd = subprocess.run(["ldd", lib], capture_output=True, text=True).stdout
    if "libasan" in ldd:
        # The sanitizer runtimes must come first in a python process; python's own
        # allocations are not ours to leak-check (the unit test checks the backend's).
        pre = [subprocess.run(["gcc", "-print-file-name=" + n], capture_output=True,
                              text=True).stdout.strip() for n in ("libasan.so", "libubsan.so")]
        env["LD_PRELOAD"] = ":".join(p for p in pre if os.path.isabs(p))
        env["ASAN_OPTIONS"] = "detect_leaks=0"

    def run(role_id, n, pause):
        conf = {"vault": {"address": standin.url, "allow_http_loopback": True, "cache_ttl": 0,
                          "auth": {"method": "approle", "role_id": role_id,
                                   "secret_id_file": secret_id_file}}}
        before = standin.stats()
        r = subprocess.run([sys.executable, os.path.join(os.path.dirname(
            os.path.abspath(__file__)), "vaultinproc.py"), lib, json.dumps(conf),
            "vault:secret/ci/db#password", str(n), str(pause)],
            capture_output=True, text=True, timeout=60, env=env)
        RUNS.append(ft.Result(r.returncode, r.stdout, r.stderr, 0))
        after = standin.stats()
        try:
            out = json.loads(r.stdout)
        except ValueError:
            out = {"stdout": r.stdout, "stderr": r.stderr[-600:]}
        return out, {k: (after[k]["approle"] - before[k]["approle"] if k == "logins"
                         else after[k] - before[k]) for k in ("logins", "renewals", "reads")}

    out, d = run(ROLE_ID, 5, 0)
    t.ok(out.get("ok") == [True] * 5 and out.get("values_match") is True,
         "in one process: five fetches (cache off) answer the value", out)
    t.eq(d, {"logins": 1, "renewals": 0, "reads": 5},
         "the stand-in saw one AppRole login for five reads: the Vault token is cached")
    out, d = run(ROLE_ID + "-short", 2, 4.2)
    t.ok(out.get("ok") == [True] * 2 and out.get("values_match") is True,
         "a fetch after 2/3 of a 6 s lease still answers", out)
    t.eq(d, {"logins": 1, "renewals": 1, "reads": 2},
         "past 2/3 of the lease the token was renewed (renew-self), not replaced by a login")


if __name__ == "__main__":
    ft.main("test_secrets_vault", body)
