#!/usr/bin/env python3
# TAP: the azure-kv secret backend end to end against tests/peers/azure_standin.mjs, an HTTPS
# stand-in of Entra ID's v2 token endpoint and Key Vault's Get Secret API written from
# Microsoft's references.
#   - The stand-in is first proven faithful in this run by Microsoft's official clients
#     (tests/peers/azure_client_check.mjs): @azure/identity's ClientAssertionCredential signs in
#     with a ferry-minted assertion (the stand-in verifies it against `ferry keys jwks` and the
#     federated credential's issuer, subject and audience); @azure/keyvault-secrets'
#     SecretClient reads the latest and an older version after the unauthenticated first
#     request and its 401 challenge, with api-version 2025-07-01 and 7.4; a missing secret
#     surfaces as RestError 404; the SDK's own challenge resource verification refuses the
#     loopback vault, as it would refuse any vault outside the resource's domain.
#   - `ferry secret get --config` then fetches with only a ferry-minted assertion: latest and
#     versioned reads, 404, 403 (not a reader; a disabled secret), expired and not-yet-valid
#     secrets, 429 with Retry-After honoured (counted), a too-long Retry-After refused at once,
#     500 then success, a slow answer timed out and retried, truncated, oversized and non-JSON
#     answers, a Bearer challenge to another resource followed (a new token for its scope), a
#     challenge naming another tenant or authority host refused with no token request there,
#     a federated credential that does not match, an unsupported api-version, bad
#     configurations.
#   - Inside one process (azureinproc.py: libferry.so through ctypes) the stand-in counts one
#     token request for five reads, one new token after the tokens are revoked (the challenge
#     of a cached token), one token for six secrets read at once from six threads, and a
#     renewal before a short token expires.
#   - No canary value, access token or Entra/Key Vault error text appears in any stderr.
# node and the Azure SDK packages are required: when missing the test fails.
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402

SANITIZER = re.compile(r"ERROR: (Leak|Address)Sanitizer|runtime error:|SUMMARY: \w+Sanitizer")
ISSUER = "https://ferry.test"
SUBJECT = "spiffe://ferry.test/ml-train"
AUD = "api://AzureADTokenExchange"
TENANT = "3f0c9a2e-5b7d-4e1a-9c8f-2d6b4a1e7c05"
OTHER_TENANT = "99999999-8888-7777-6666-555555555555"
CLIENT = "6e1b2c3d-4f5a-4b6c-8d7e-9f0a1b2c3d4e"
OUTSIDER = "0a0a0a0a-1b1b-4c2c-8d3d-4e4e4e4e4e4e"
PEERS = os.path.join(ft.SRCDIR, "tests", "peers")
PKGS = ("@azure/identity", "@azure/keyvault-secrets")
RUNS = []


def peers_ok(t, tmp):
    """The directory holding the pinned Azure SDK packages: tests/peers when `npm ci` was run
    there, else a copy of its lock file installed with npm under tmp (a distcheck tree has no
    node_modules). None (with a failed test point) when neither works."""
    global CLIENT_PEERS
    if not shutil.which("node"):
        t.ok(False, "node is on PATH (contrib/deps.sh installs nodejs and npm)")
        return None
    with open(os.path.join(PEERS, "package.json")) as f:
        deps = json.load(f)["dependencies"]
    missing = []
    for pkg in PKGS:
        try:
            with open(os.path.join(PEERS, "node_modules", pkg, "package.json")) as f:
                have = json.load(f)["version"]
        except (OSError, ValueError):
            have = None
        if have != deps[pkg]:
            missing.append(f"{pkg} {deps[pkg]} (have {have})")
    if not missing:
        CLIENT_PEERS = PEERS
        return PEERS
    npm = shutil.which("npm")
    if not npm:
        t.ok(False, f"{', '.join(missing)} installed in {PEERS}/node_modules, or npm to "
             "install them")
        return None
    d = os.path.join(tmp, "peers")
    os.mkdir(d)
    for name in ("package.json", "package-lock.json", "azure_client_check.mjs"):
        shutil.copy(os.path.join(PEERS, name), d)
    r = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"], cwd=d,
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        t.ok(False, "npm ci of the test peers (Azure SDK)", r.stderr[-800:])
        return None
    CLIENT_PEERS = d
    return d


CLIENT_PEERS = PEERS


class Standin:
    def __init__(self, conf_path, ca):
        self.proc = subprocess.Popen([shutil.which("node"),
                                      os.path.join(PEERS, "azure_standin.mjs"),
                                      "--config", conf_path],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True, env=ft.clean_env())
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError("azure_standin.mjs did not start: " + line +
                               self.proc.stderr.read().decode()[-500:])
        self.url = line.split(" ", 1)[1]
        self.ctx = ssl.create_default_context(cafile=ca)

    def call(self, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data,
                                     method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ctx) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            return json.loads(e.read() or b"{}")

    def stats(self):
        return self.call("/_standin/stats")

    def seed(self, vault, name, value, **attrs):
        return self.call("/_standin/secret", dict(attrs, vault=vault, name=name,
                                                  value=value))["version"]

    def fail(self, **plan):
        self.call("/_standin/fail", plan)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def delta(before, after, *keys):
    return tuple(after[k] - before[k] for k in keys)


def body(t):
    tmp = tempfile.mkdtemp(prefix="ferry-azure-")
    if not peers_ok(t, tmp):
        shutil.rmtree(tmp, ignore_errors=True)
        return
    started = []
    try:
        certs = ft.make_certs(os.path.join(tmp, "certs"))
        ca = os.path.join(certs, "ca.pem")
        keys = os.path.join(tmp, "keys")
        r = ft.ferry("keys", "init", "--state-dir", keys)
        t.eq(r.rc, 0, "ferry keys init makes the keys that sign the client assertion", r)
        jwks_path = os.path.join(tmp, "jwks.json")
        with open(jwks_path, "w") as f:
            f.write(ft.ferry("keys", "jwks", "--state-dir", keys).out)

        def standin(name, resource="https://vault.azure.net", **extra):
            conf = {"cert": os.path.join(certs, "good.pem"),
                    "key": os.path.join(certs, "good.key"), "tenant_id": TENANT,
                    "jwks_file": jwks_path, "resource": resource,
                    "federated_credentials": [{"client_id": CLIENT, "issuer": ISSUER,
                                               "subject": SUBJECT, "audience": AUD}],
                    "vaults": {"kv-ml": {"readers": [CLIENT]},
                               "kv-other": {"readers": [OUTSIDER]}},
                    "default_vault": "kv-ml"}
            conf.update(extra)
            path = ft.write_json(os.path.join(tmp, name + ".json"), conf)
            s = Standin(path, ca)
            started.append(s)
            return s

        main = standin("main")
        sovereign = standin("sovereign", resource="https://vault.sovereign.test")
        faithful(t, tmp, keys, ca, main)
        fetches(t, tmp, keys, ca, main, sovereign)
    finally:
        for s in started:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def mint(keys, n=1, aud=AUD, sub=SUBJECT):
    r = ft.run([os.path.join(ft.BUILDDIR, "tests", "unit", "mint_tool"), "mint",
                "--state-dir", keys, "--issuer", ISSUER, "--sub", sub, "--aud", aud,
                "--client-id", "ferry", "--src-iss", ISSUER, "--src-sub", sub, "--ttl", "600",
                "--count", str(n)])
    if r.rc != 0:
        raise RuntimeError(f"mint_tool: {r}")
    return r.out


def faithful(t, tmp, keys, ca, main):
    canary = "sdk-" + secrets.token_hex(12)
    v1 = main.seed("kv-ml", "sdk-check", "old-" + canary)
    v2 = main.seed("kv-ml", "sdk-check", canary)
    assertion = os.path.join(tmp, "assertion.jwt")
    with open(assertion, "w") as f:
        f.write(mint(keys))
    before = main.stats()
    r = subprocess.run([shutil.which("node"), os.path.join(CLIENT_PEERS, "azure_client_check.mjs"),
                        main.url, TENANT, CLIENT, assertion, "sdk-check", v1],
                       capture_output=True, text=True, timeout=120,
                       env=ft.clean_env({"NODE_EXTRA_CA_CERTS": ca}))
    after = main.stats()
    try:
        out = json.loads(r.stdout)
    except ValueError:
        t.ok(False, "the Azure SDK check ran", r.stderr[-800:])
        return
    t.eq(out.get("get_token"), {"has_token": True, "expires_in_future": True},
         "@azure/identity: ClientAssertionCredential gets a token with a ferry-minted assertion")
    t.eq(out.get("latest"), {"value": canary, "version": v2, "name": "sdk-check",
                             "enabled": True, "vaultUrl": main.url},
         "@azure/keyvault-secrets: getSecret(name) reads the latest SecretBundle")
    t.eq(out.get("versioned"), {"value": "old-" + canary, "version": v1},
         "@azure/keyvault-secrets: getSecret(name, {version}) reads the older version")
    miss = out.get("missing", {})
    t.ok(miss.get("name") == "RestError" and miss.get("statusCode") == 404 and
         miss.get("code") == "SecretNotFound",
         "a missing secret surfaces as the SDK's RestError, statusCode 404, SecretNotFound", miss)
    t.eq(out.get("old_api"), canary, "serviceVersion 7.4 reads the secret too")
    ver = out.get("verification_on", {})
    t.ok("does not match the requested domain" in str(ver.get("error")),
         "the SDK's challenge resource verification refuses a vault outside "
         "vault.azure.net: the stand-in's challenge names Key Vault's resource", ver)
    d = delta(before, after, "kv_unauthenticated", "challenges", "tokens_issued", "token_failures")
    t.ok(d[0] >= 1 and d[1] >= d[0] and d[2] >= 1 and d[3] == 0,
         "the SDK's first request was unauthenticated and answered with the 401 challenge; "
         "its token requests passed the stand-in's assertion checks", (d, after))
    t.eq(after["last_api_version"], "2025-07-01",
         "the SDK's default api-version is supported by the stand-in")


def fetches(t, tmp, keys, ca, main, sovereign):
    canary = "canary-" + secrets.token_hex(16)
    old = "old-" + secrets.token_hex(16)
    others = ["x-" + secrets.token_hex(16) for _ in range(6)]
    canaries = [canary, old] + others
    v_old = main.seed("kv-ml", "db-password", old)
    v_new = main.seed("kv-ml", "db-password", canary)
    main.seed("kv-ml", "disabled", others[0], enabled=False)
    main.seed("kv-ml", "expired", others[1], exp=1600000000)
    main.seed("kv-ml", "not-yet", others[2], nbf=4100000000)
    main.seed("kv-other", "db-password", others[3])
    sovereign.seed("kv-ml", "db-password", others[4])
    identity = {"state_dir": keys, "issuer": ISSUER, "subject": SUBJECT}

    def config(name, standin=main, ident=identity, **extra):
        v = {"tenant_id": TENANT, "client_id": CLIENT, "authority_host": standin.url,
             "vault_url": standin.url + "/{vault}", "ca_file": ca,
             "verify_challenge_resource": False}
        v.update(extra)
        v = {k: x for k, x in v.items() if x is not None}
        doc = {"secrets": {"azure-kv": v}}
        if ident:
            doc["identity"] = ident
        return ft.write_json(os.path.join(tmp, name + ".json"), doc)

    cfg = config("main")

    def get(ref, path=cfg):
        r = ft.ferry("secret", "get", "--config", path, ref)
        RUNS.append(r)
        return r

    keys_of = ("token_requests", "tokens_issued", "kv_requests", "kv_reads", "challenges",
               "injected")
    b = main.stats()
    r = get("azure-kv:kv-ml/db-password")
    a = main.stats()
    t.ok(r.rc == 0 and r.out == canary,
         "latest: a token from Entra (the stand-in checked the ferry-minted assertion), then "
         "Get Secret", r)
    t.eq(delta(b, a, *keys_of), (1, 1, 1, 1, 0, 0),
         "one token request and one read, no challenge (the default scope was right)")
    t.eq(a["scopes"][-1], "https://vault.azure.net/.default", "the token is for Key Vault")
    t.eq(a["last_api_version"], "7.4", "api-version 7.4 by default")
    r = get("azure-kv:kv-ml/DB-Password/" + v_old.upper())
    t.ok(r.rc == 0 and r.out == old, "a version (any case in the reference) reads that version",
         r)
    r = get("azure-kv:kv-ml/db-password/" + "0" * 32)
    t.ok(r.rc == 1 and "not found" in r.err and "SecretNotFound" in r.err,
         "a missing version: exit 1, not found, Key Vault's error code", r)
    r = get("azure-kv:kv-ml/absent")
    t.ok(r.rc == 1 and "not found" in r.err and "key vault. If" not in r.err,
         "a missing secret: not found, without Key Vault's message", r)
    r = get("azure-kv:kv-other/db-password")
    t.ok(r.rc != 0 and "permission denied" in r.err and "403" in r.err and r.out == "",
         "a vault the client may not read: permission denied (403)", r)
    r = get("azure-kv:kv-ml/disabled")
    t.ok(r.rc != 0 and "the secret is disabled" in r.err and "SecretDisabled" in r.err and
         r.out == "",
         "a disabled secret is refused (Key Vault's 403 SecretDisabled)", r)
    r = get("azure-kv:kv-ml/expired")
    t.ok(r.rc != 0 and "expired" in r.err and r.out == "", "an expired secret is refused", r)
    r = get("azure-kv:kv-ml/not-yet")
    t.ok(r.rc != 0 and "not valid yet" in r.err and r.out == "",
         "a secret before its nbf is refused", r)

    # Throttling and faults.
    main.fail(target="kv", count=1, status=429, retry_after=1)
    b = main.stats()
    r = get("azure-kv:kv-ml/db-password")
    a = main.stats()
    t.ok(r.rc == 0 and r.out == canary and r.elapsed >= 0.9,
         "429 with Retry-After: 1 is waited out, then the read succeeds", r)
    t.eq(delta(b, a, "kv_requests", "injected"), (2, 1), "two reads reached Key Vault")
    main.fail(target="kv", count=1, status=429, retry_after=30)
    b = main.stats()
    r = get("azure-kv:kv-ml/db-password")
    a = main.stats()
    t.ok(r.rc != 0 and "throttled (429), retry after 30 s" in r.err and r.out == "" and
         r.elapsed < 10,
         "429 with Retry-After: 30 (past max_retry_wait_ms): refused at once with a clear reason", r)
    t.eq(delta(b, a, "kv_requests"), (1,), "no second read after the long Retry-After")
    main.fail(target="kv", count=1, status=503, retry_after=1)
    r = get("azure-kv:kv-ml/db-password")
    t.ok(r.rc == 0 and r.out == canary, "503 with Retry-After is retried like 429", r)
    main.fail(target="kv", count=2, status=500)
    b = main.stats()
    r = get("azure-kv:kv-ml/db-password")
    a = main.stats()
    t.ok(r.rc == 0 and r.out == canary and delta(b, a, "kv_requests") == (3,),
         "two 500s, retried with jittered backoff, then success on the third read", (r, a))
    main.fail(target="kv", count=10, status=500, message="echo " + others[5])
    b = main.stats()
    r = get("azure-kv:kv-ml/db-password")
    a = main.stats()
    main.fail(count=0)
    t.ok(r.rc != 0 and "after 4 attempts" in r.err and delta(b, a, "kv_requests") == (4,) and
         "echo" not in r.err,
         "500s without end: four attempts, then a clear error without Key Vault's message",
         (r, a))
    main.fail(target="token", count=1, status=429, retry_after=1)
    r = get("azure-kv:kv-ml/db-password")
    t.ok(r.rc == 0 and r.out == canary, "a throttled token request is retried too", r)
    main.fail(target="kv", count=1, mode="slow", delay_ms=2500)
    r = get("azure-kv:kv-ml/db-password", config("slow", timeout_ms=1000))
    t.ok(r.rc == 0 and r.out == canary, "a slow answer times out (timeout_ms) and is retried", r)
    main.fail(target="kv", count=4, mode="slow", delay_ms=1500)
    b = main.stats()
    r = get("azure-kv:kv-ml/db-password", config("slow2", timeout_ms=500))
    a = main.stats()
    main.fail(count=0)
    t.ok(r.rc != 0 and r.out == "" and "no answer within 500 ms, after 4 attempts" in r.err and
         delta(b, a, "kv_requests") == (4,),
         "slow answers without end: four attempts, then a timeout named as one", (r, a))
    main.fail(target="kv", count=4, mode="truncate", value=others[5])
    r = get("azure-kv:kv-ml/db-password")
    main.fail(count=0)
    t.ok(r.rc != 0 and r.out == "" and "request failed" in r.err,
         "a truncated answer (connection closed short of Content-Length): no value", r)
    main.fail(target="kv", count=1, mode="oversize", value=others[5])
    r = get("azure-kv:kv-ml/db-password")
    t.ok(r.rc != 0 and r.out == "" and "over 262144 bytes" in r.err,
         "an oversized answer is cut at the cap: no value", r)
    main.fail(target="kv", count=1, mode="content_type")
    r = get("azure-kv:kv-ml/db-password")
    t.ok(r.rc != 0 and r.out == "" and "not application/json" in r.err,
         "an answer that is not application/json is refused", r)

    # The challenge.
    sov = config("sov", sovereign)
    b = sovereign.stats()
    r = get("azure-kv:kv-ml/db-password", sov)
    a = sovereign.stats()
    t.ok(r.rc == 0 and r.out == others[4],
         "a vault of another resource: its 401 challenge is followed with a token for it", r)
    t.eq((delta(b, a, "challenges", "tokens_issued", "kv_reads"), a["scopes"][-2:]),
         ((1, 2, 1), ["https://vault.azure.net/.default",
                      "https://vault.sovereign.test/.default"]),
         "one challenge, then a token for the challenge's resource")
    r = get("azure-kv:kv-ml/db-password", config("sov-verify", sovereign,
                                                 verify_challenge_resource=True))
    t.ok(r.rc != 0 and "challenge resource verification" in r.err,
         "with resource verification on, a resource outside the vault's domain is refused", r)
    evil = (f'Bearer authorization="{sovereign.url}/{TENANT}", '
            'resource="https://vault.azure.net"')
    main.fail(target="kv", count=1, mode="challenge", www_authenticate=evil)
    bs, bm = sovereign.stats(), main.stats()
    r = get("azure-kv:kv-ml/db-password")
    as_, am = sovereign.stats(), main.stats()
    t.ok(r.rc != 0 and "configured authority host" in r.err and r.out == "",
         "a challenge naming another authority host is refused", r)
    t.eq((delta(bs, as_, "token_requests"), delta(bm, am, "token_requests")), ((0,), (1,)),
         "no token request (no assertion) reached the other host; one to the configured one")
    other = (f'Bearer authorization="{main.url}/{OTHER_TENANT}", '
             'resource="https://vault.azure.net"')
    main.fail(target="kv", count=1, mode="challenge", www_authenticate=other)
    b = main.stats()
    r = get("azure-kv:kv-ml/db-password")
    a = main.stats()
    t.ok(r.rc != 0 and "configured tenant" in r.err and r.out == "",
         "a challenge naming another tenant is refused", r)
    t.ok(a["token_requests_by_tenant"].get(OTHER_TENANT) is None and
         delta(b, a, "token_requests") == (1,),
         "no token request for the other tenant", a["token_requests_by_tenant"])
    main.fail(target="kv", count=2, mode="challenge",
              www_authenticate=f'Bearer authorization="{main.url}/{TENANT}", '
                               'resource="https://vault.azure.net"')
    b = main.stats()
    r = get("azure-kv:kv-ml/db-password")
    a = main.stats()
    main.fail(count=0)
    t.ok(r.rc != 0 and "refused a new access token" in r.err and
         delta(b, a, "kv_requests", "token_requests") == (1, 1),
         "a 401 to a fresh token for the challenge's own scope: a clear error, no loop", (r, a))

    # Sign-in refusals and configuration.
    b = main.stats()
    r = get("azure-kv:kv-ml/db-password",
            config("wrongsub", ident=dict(identity, subject="spiffe://ferry.test/other")))
    a = main.stats()
    t.ok(r.rc != 0 and "refused by Entra ID" in r.err and "invalid_request" in r.err and
         "AADSTS" not in r.err,
         "a subject without a federated credential: Entra refuses, its error code (not its "
         "text) in the reason", r)
    t.eq(a["token_errors"][-1:], ["invalid_request:700213"],
         "the stand-in refused the assertion's subject (AADSTS700213)")
    r = get("azure-kv:kv-ml/db-password", config("aud", audience="api://other"))
    t.ok(r.rc != 0 and "refused by Entra ID" in r.err,
         "an assertion for another audience is refused by Entra", r)
    r = get("azure-kv:kv-ml/db-password", config("api", api_version="7.0"))
    t.ok(r.rc != 0 and "400" in r.err and "BadParameter" in r.err,
         "an api-version Key Vault does not support: 400 BadParameter", r)
    r = get("azure-kv:kv-ml/db-password", config("api75", api_version="7.5"))
    t.ok(r.rc == 0 and r.out == canary, "api_version 7.5", r)
    r = get("azure-kv:kv-ml/db-password", config("secret", client_secret="s3cr3t"))
    t.ok(r.rc == 2 and "no client secret" in r.err and "s3cr3t" not in r.err,
         "a client secret is refused: workload identity only", r)
    r = get("azure-kv:kv-ml/db-password", config("typo", tennant_id=TENANT))
    t.ok(r.rc == 2 and "unknown member" in r.err and "tennant_id" in r.err,
         "an unknown member is refused by name", r)
    r = get("azure-kv:kv-ml/db-password", config("noid", ident=None))
    t.ok(r.rc == 2 and "identity" in r.err, "without ferry's identity: a clear error", r)
    r = get("azure-kv:kv-ml/db-password", config("noca", ca_file=None))
    t.ok(r.rc != 0 and r.out == "", "without the test CA the stand-in's TLS is refused", r)

    inproc(t, tmp, keys, ca, main, canary)

    leaked = [r for r in RUNS for c in canaries if c in r.err]
    t.ok(not leaked, "no canary appears in any stderr", leaked[:1])
    san = [r for r in RUNS if SANITIZER.search(r.err)]
    t.ok(not san, "no sanitizer report", san[:1])


def inproc(t, tmp, keys, ca, main, canary):
    lib = os.path.join(ft.BUILDDIR, ".libs", "libferry.so")
    assertions = os.path.join(tmp, "assertions.txt")
    with open(assertions, "w") as f:
        f.write(mint(keys, 8))
    env = ft.clean_env({"AZURE_EXPECT": canary, "ORIGIN": main.url, "CA_FILE": ca})
    ldd = subprocess.run(["ldd", lib], capture_output=True, text=True).stdout
    if "libasan" in ldd:
        pre = [subprocess.run(["gcc", "-print-file-name=" + n], capture_output=True,
                              text=True).stdout.strip() for n in ("libasan.so", "libubsan.so")]
        env["LD_PRELOAD"] = ":".join(p for p in pre if os.path.isabs(p))
        env["ASAN_OPTIONS"] = "detect_leaks=0"
    conf = {"azure-kv": {"tenant_id": TENANT, "client_id": CLIENT, "authority_host": main.url,
                         "vault_url": main.url + "/{vault}", "ca_file": ca, "cache_ttl": 0,
                         "verify_challenge_resource": False}}

    def run(steps):
        b = main.stats()
        r = subprocess.run([sys.executable, os.path.join(os.path.dirname(
            os.path.abspath(__file__)), "azureinproc.py"), lib, json.dumps(conf),
            "azure-kv:kv-ml/db-password", assertions, json.dumps(steps)],
            capture_output=True, text=True, timeout=90, env=env)
        RUNS.append(ft.Result(r.returncode, r.stdout, r.stderr, 0))
        a = main.stats()
        try:
            out = json.loads(r.stdout)
        except ValueError:
            out = {"stdout": r.stdout, "stderr": r.stderr[-600:]}
        return out, delta(b, a, "token_requests", "kv_reads", "challenges")

    out, d = run([{"fetch": 5}, {"mark": "five"}, {"post": "/_standin/revoke", "body": {}},
                  {"fetch": 1}])
    t.ok(out.get("ok") == [True] * 6 and out.get("values_match") is True,
         "in one process: six fetches (cache off) answer the value", out)
    t.eq((out.get("marks", {}).get("five"), out.get("audiences", [None])[0]), (1, AUD),
         "one client assertion (audience api://AzureADTokenExchange) for five reads")
    t.eq(d, (2, 6, 1), "the stand-in saw one token for five reads, then after the tokens were "
                       "revoked one challenge and one new token")
    refs = []
    for i in range(6):
        main.seed("kv-ml", f"par-{i}", canary)
        refs.append(f"azure-kv:kv-ml/par-{i}")
    out, d = run([{"parallel": refs}])
    t.ok(out.get("ok") == [True] * 6 and out.get("values_match") is True and
         out.get("assertion_calls") == 1 and d == (1, 6, 0),
         "six different secrets fetched at once from six threads: one token request (the "
         "token is requested under the backend's lock)", (out, d))
    main.call("/_standin/config", {"token_lifetime": 10})
    out, d = run([{"fetch": 1}, {"sleep": 9.5}, {"fetch": 1}])
    main.call("/_standin/config", {"token_lifetime": 3599})
    t.ok(out.get("ok") == [True] * 2 and out.get("assertion_calls") == 2 and
         d == (2, 2, 0),
         "a 10 s token is renewed before it expires (a new token, no challenge)", (out, d))


if __name__ == "__main__":
    ft.main("test_secrets_azure", body)
