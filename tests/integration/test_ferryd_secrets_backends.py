#!/usr/bin/env python3
# TAP: GET /v1/secrets/{ref} on ferryd end to end with the vault, aws-sm and aws-kms backends.
#   ferryd is configured with the Vault stand-in (tests/peers/vault_standin.mjs; JWT login with
#   a token ferryd mints for itself, verified by the stand-in against ferryd's own JWKS) and
#   with aws-sm + aws-kms through tests/peers/fault_proxy.py in front of moto_server (seeded
#   with the aws CLI: an IAM role, a Secrets Manager secret, a KMS key and a ciphertext made by
#   `aws kms encrypt`; credentials from STS AssumeRoleWithWebIdentity with ferryd's token).
#   With a ferry bearer token obtained by exchange:
#   - each backend's secret: 200 and the exact value;
#   - a reference the policy does not grant: 403 and no backend call (the stand-in's and the
#     proxy's counters unchanged);
#   - backend faults surface as the route maps them, without backend text: throttled past the
#     retry budget, 5xx, slow past the timeout and a truncated body are 503
#     backend_unavailable with Retry-After; an oversized body, a wrong content type and a
#     redirect to another host are 502 backend_error (the other host never contacted);
#   - a stampede of 1,000 concurrent requests (1,000 connections opened at once with asyncio)
#     for one uncached secret while the backend holds its answer for 1.5 s: all 200 with the
#     value, and the stand-in counts exactly one KV read (the proxy exactly one
#     GetSecretValue for the aws-sm stampede); ferryd's limits admit them: limits.connections
#     4000, connections_per_ip 0, workers 16, worker_queue 8192, rate limits off;
#   - the audit log holds one secret.release record per decision (allow with reference,
#     version and subject; deny; error with the status) and no canary; neither does ferryd's
#     log nor any error body.
# node, moto_server and aws are required: when missing the test fails.
import asyncio
import os
import re
import secrets
import shutil
import sys
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402
from ferrydtest import (FORM, GRANT, JWT_TYPE, json_of, log_text, records,  # noqa: E402
                        request, start, stop, wait_ready)
from test_secrets_faults import SM, FaultProxy, Moto, start_vault  # noqa: E402

SANITIZER = re.compile(r"ERROR: (Leak|Address)Sanitizer|runtime error:|SUMMARY: \w+Sanitizer")
ISS = "https://idp.backends.test"
AUD = "ferry"
VAULT_AUD = "vault.ferry.test"
CALLS = "ferryd_secrets_backend_calls_total"
STAMPEDE = 1000
TIMEOUT_MS = 2500  # each backend's timeout_ms: above the stampede's hold, below the slow fault's
HOLD_MS = 1500     # how long the backend holds its answer during the stampede


def metric(port, name):
    r = request(port, "GET", "/metrics")
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", r.body.decode(), re.M)
    return float(m.group(1)) if m else 0.0


def exchange(port, key, sub, audience):
    tok = ft.make_token(key, alg="ES256", typ="JWT",
                        claims=ft.claims(ISS, AUD, sub=sub, now=int(time.time()), lifetime=300))
    body = urllib.parse.urlencode([("grant_type", GRANT), ("subject_token", tok),
                                   ("subject_token_type", JWT_TYPE), ("audience", audience)])
    r = request(port, "POST", "/v1/token", body=body.encode(), headers={"Content-Type": FORM})
    return r, (json_of(r) or {}).get("access_token")


def path_of(ref):
    return "/v1/secrets/" + urllib.parse.quote(ref, safe=":/")


def get(port, ref, token):
    return request(port, "GET", path_of(ref), headers={"Authorization": "Bearer " + token})


async def one_request(port, path, token):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n").encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 60)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return status, body


async def stampede_all(port, path, token, n):
    async def guarded(sem):
        async with sem:
            try:
                return await one_request(port, path, token)
            except (OSError, asyncio.TimeoutError, ValueError, IndexError) as e:
                return 0, repr(e).encode()
    sem = asyncio.Semaphore(n)
    return await asyncio.gather(*(guarded(sem) for _ in range(n)))


def stampede(tap, port, token, ref, value, label, arm, backend_reads):
    """STAMPEDE concurrent requests for ref while the backend holds its answer (arm())."""
    arm()
    reads0, calls0 = backend_reads(), metric(port, CALLS)
    waits0 = metric(port, "ferryd_secrets_inflight_waits_total")
    peak, done = [0.0], threading.Event()

    def sample():  # the most requests ferryd held at once while the stampede ran
        while not done.is_set():
            try:
                peak[0] = max(peak[0], metric(port, "ferryd_http_requests_in_flight"))
            except OSError:
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        results = asyncio.run(stampede_all(port, path_of(ref), token, STAMPEDE))
    finally:
        done.set()
        sampler.join()
    ok = [1 for s, b in results if s == 200 and b == value.encode()]
    bad = {(s, b[:80]) for s, b in results if not (s == 200 and b == value.encode())}
    tap.ok(len(ok) == STAMPEDE, f"{label} stampede: {STAMPEDE} concurrent requests, all 200 with "
           "the value", list(bad)[:5])
    tap.eq(backend_reads() - reads0, 1, f"{label} stampede: exactly one read reached the backend")
    tap.eq(metric(port, CALLS) - calls0, 1.0, f"{label} stampede: one backend call in ferryd")
    waits = metric(port, "ferryd_secrets_inflight_waits_total") - waits0
    tap.ok(waits >= 1, f"{label} stampede: requests overlapped the slow call (waited on it)",
           waits)
    tap.ok(peak[0] >= STAMPEDE // 4, f"{label} stampede: ferryd held many of the requests at "
           f"once (peak in flight {peak[0]:.0f})", peak[0])
    tap.diag(f"{label} stampede: {waits:.0f} requests waited on the one in-flight call on a "
             f"worker, the others queued for a worker and then found the value cached; peak "
             f"requests in flight {peak[0]:.0f}")


def body(tap):
    if not shutil.which("node"):
        tap.ok(False, "node is on PATH (the Vault stand-in)")
        return
    if not shutil.which("moto_server") or not shutil.which("aws"):
        tap.ok(False, "moto_server and aws are installed (pip install 'moto[server]' awscli)")
        return
    with ft.tempdir() as d, ft.Listener() as other:
        moto = Moto()
        peers = {}
        try:
            run_all(tap, d, moto, other, peers)
        finally:
            for p in peers.values():
                p.stop()
            moto.stop()
        tap.eq(other.count, 0, "the other host of the redirect was never contacted")


def run_all(tap, d, moto, other, peers):
    """peers: the stand-in and the proxy started here, for the caller to stop."""
    canary_v = "CANARY-V-" + secrets.token_hex(16)
    canary_vs = "CANARY-VS-" + secrets.token_hex(16)
    canary_sm = "CANARY-SM-" + secrets.token_hex(16)
    canary_ss = "CANARY-SS-" + secrets.token_hex(16)
    canary_k = "CANARY-K-" + secrets.token_hex(16)
    canary_x = "CANARY-X-" + secrets.token_hex(16)
    canary_err = "CANARY-ERR-" + secrets.token_hex(16)
    values = (canary_v, canary_vs, canary_sm, canary_ss, canary_k, canary_x)
    forbidden = values + (canary_err,)

    role, blob = moto.seed(d, {"ci/db": canary_sm, "ci/stampede": canary_ss,
                               "ci/faulty": canary_x, "other/db": canary_x}, canary_k)
    proxy = peers["proxy"] = FaultProxy(moto.url)

    port = ft.free_port()
    me = f"http://127.0.0.1:{port}"
    jwks_path = os.path.join(d, "ferryd-jwks.json")
    with open(jwks_path, "w") as f:
        f.write('{"keys": []}')
    root = "root-" + secrets.token_hex(8)
    vconf = {"root_token": root, "kv_mounts": ["secret"], "jwks_file": jwks_path,
             "bound_issuer": me,
             "jwt_roles": {"ferryd": {"bound_audiences": [VAULT_AUD], "bound_subject": me,
                                      "token_ttl": 600, "paths": ["secret/data/ci/*"]}}}
    standin = peers["vault"] = start_vault(ft.write_json(os.path.join(d, "vault.json"), vconf))
    for path, value in (("ci/db", canary_v), ("ci/stampede", canary_vs), ("ci/faulty", canary_x),
                        ("other/db", canary_x)):
        st, _ = standin.call("POST", "/v1/secret/data/" + path, {"data": {"password": value}},
                             token=root)
        tap.eq(st, 200, f"vault stand-in: secret/{path} written")

    state = os.path.join(d, "state")
    os.makedirs(state, mode=0o700)
    r = ft.ferry("secret", "init", "-d", state)  # the file backend, always on beside the others
    tap.ok(r.rc == 0, "ferry secret init under the state directory", r)
    key = ft.Key.for_alg("ES256", kid="idp-1")
    pol = os.path.join(d, "policies")
    os.makedirs(pol)
    ft.write_json(os.path.join(pol, "secrets.json"), {"version": 1, "policies": [
        {"id": "ci", "match": {"issuer": ISS, "subject": "job-ci"},
         "grant": {"audiences": [me], "max_ttl": 900,
                   "secrets": ["vault:secret/ci/*", "aws-sm:ci/*", "aws-kms:b64:*"]}}]})
    audit = os.path.join(d, "audit.log")
    backend = {"region": "us-east-1", "endpoint": proxy.url, "role_arn": role,
               "sts_endpoint": proxy.url, "allow_http_loopback": True, "timeout_ms": TIMEOUT_MS,
               "cache_ttl": 600}
    conf = {
        "listen": [f"127.0.0.1:{port}"],
        "state_dir": state,
        "issuer": me,
        "policies": pol,
        "audit_log": {"path": audit, "sync": "always"},
        "rate_limits": {"per_address": {"rate": 0}, "per_identity": {"rate": 0}},
        "limits": {"workers": 16, "worker_queue": 8192, "connections": 4000,
                   "connections_per_ip": 0},
        "issuers": [{"issuer": ISS, "audiences": [AUD], "jwks_file": ft.write_json(
            os.path.join(d, "idp.jwks"), ft.jwks(key)), "algorithms": ["ES256"],
            "profile": "id_token"}],
        "secrets": {"vault": {"address": standin.url, "allow_http_loopback": True,
                              "timeout_ms": TIMEOUT_MS, "cache_ttl": 600,
                              "auth": {"method": "jwt", "role": "ferryd",
                                       "audience": VAULT_AUD}},
                    "aws-sm": backend, "aws-kms": backend,
                    "cache": {"max_entries": 64}},
    }
    proc, err = start(ft.write_json(os.path.join(d, "ferryd.json"), conf), d, "backends")
    bodies = []
    try:
        if not wait_ready(port, proc):
            tap.ok(False, "ferryd starts", log_text(err)[-2000:])
            return
        r = request(port, "GET", "/.well-known/jwks.json")
        with open(jwks_path, "wb") as f:
            f.write(r.body)  # the stand-in reads it at each login
        tap.eq(r.status, 200, "ferryd's JWKS handed to the Vault stand-in")
        run(tap, port, key, me, standin, proxy, other, blob, canary_v, canary_vs, canary_sm,
            canary_ss, canary_k, canary_x, canary_err, bodies)
    finally:
        log = stop(proc, err)
    tap.ok(proc.returncode == 0, "ferryd exits 0 on SIGTERM", log[-2000:])
    tap.ok(not SANITIZER.search(log), "no sanitizer report in ferryd's log", log[-2000:])
    tap.ok(not [c for c in forbidden if c in log], "no value or remote error text in ferryd's log")
    with open(audit) as f:
        text = f.read()
    tap.ok(not [c for c in forbidden if c in text], "no value or remote error text in the audit "
           "log")
    tap.ok(not [c for c in forbidden for b in bodies if c.encode() in b],
           "no value or remote error text in any error body")
    audit_checks(tap, audit)


def run(tap, port, key, me, standin, proxy, other, blob, canary_v, canary_vs, canary_sm,
        canary_ss, canary_k, canary_x, canary_err, bodies):
    r, tok = exchange(port, key, "job-ci", me)
    tap.ok(r.status == 200 and tok, "exchange: a ferry token for ferryd's own audience", r)
    if not tok:
        return
    logins0 = standin.stats()["logins"]["jwt"]

    # ---- each backend's secret --------------------------------------------------------------
    for ref, value in (("vault:secret/ci/db#password", canary_v), ("aws-sm:ci/db", canary_sm),
                       ("aws-kms:b64:" + blob, canary_k)):
        r = get(port, ref, tok)
        tap.ok(r.status == 200 and r.body == value.encode(), f"{ref[:20]}: 200 and the value",
               r.status)
    tap.eq(standin.stats()["logins"]["jwt"] - logins0, 1,
           "vault: one JWT login with ferryd's own token (verified against ferryd's JWKS)")
    tap.eq(proxy.count("AssumeRoleWithWebIdentity"), 2,
           "aws-sm and aws-kms: one STS AssumeRoleWithWebIdentity each (one provider each)")

    # ---- not granted: 403 and no backend call --------------------------------------------------
    v0, p0, c0 = standin.stats()["requests"], proxy.stats()["requests"], metric(port, CALLS)
    for ref in ("vault:secret/other/db#password", "aws-sm:other/db",
                "aws-kms:file:kms/blob"):
        r = get(port, ref, tok)
        bodies.append(r.body)
        tap.ok(r.status == 403 and (json_of(r) or {}).get("error") == "insufficient_scope",
               f"{ref}: not granted: 403 insufficient_scope", r)
    tap.eq((standin.stats()["requests"] - v0, proxy.stats()["requests"] - p0,
            metric(port, CALLS) - c0), (0, 0, 0.0),
           "not granted: no request reached the stand-in or the proxy, no backend call")

    # ---- faults -------------------------------------------------------------------------------
    vault_faults = (
        ("429 with Retry-After past the budget",
         {"kind": "status", "status": 429, "retry_after": 60, "count": 3}, 503),
        ("500 always", {"kind": "status", "status": 500, "count": 3}, 503),
        ("slow past timeout_ms", {"kind": "slow", "delay_ms": TIMEOUT_MS + 1000, "count": 3},
         503),
        ("truncated body", {"kind": "truncate", "count": 3}, 503),
        ("oversized body", {"kind": "oversize", "count": 1}, 502),
        ("wrong content type", {"kind": "content_type", "count": 1}, 502),
        ("redirect to another host", {"kind": "redirect", "location": other.url, "count": 1},
         502),
    )
    for name, plan, want in vault_faults:
        standin.call("POST", "/_standin/fail", dict(plan, path="/data/ci/faulty",
                                                     body=canary_err))
        r = get(port, "vault:secret/ci/faulty#password", tok)
        standin.call("POST", "/_standin/fail", {"count": 0})
        bodies.append(r.body)
        check_fault(tap, "vault", name, r, want)
    for name, plan, want in vault_faults:
        proxy.fault(action=SM, body=canary_err, **plan)
        r = get(port, "aws-sm:ci/faulty", tok)
        proxy.reset()
        bodies.append(r.body)
        check_fault(tap, "aws-sm", name, r, want)
    r = get(port, "vault:secret/ci/faulty#password", tok)
    tap.ok(r.status == 200 and r.body == canary_x.encode(),
           "vault: after the faults the secret is served (no error was cached)", r.status)

    # ---- the stampede with a slow backend -----------------------------------------------------
    stampede(tap, port, tok, "vault:secret/ci/stampede#password", canary_vs, "vault",
             lambda: standin.call("POST", "/_standin/fail",
                                  {"kind": "slow", "delay_ms": HOLD_MS, "count": STAMPEDE,
                                   "path": "/data/ci/stampede"}),
             lambda: standin.stats()["reads"])
    standin.call("POST", "/_standin/fail", {"count": 0})
    stampede(tap, port, tok, "aws-sm:ci/stampede", canary_ss, "aws-sm",
             lambda: proxy.fault(action=SM, kind="delay", delay_ms=HOLD_MS, count=STAMPEDE),
             lambda: proxy.stats()["forwarded"])
    proxy.reset()


def check_fault(tap, label, name, r, want):
    j = json_of(r) or {}
    error = "backend_unavailable" if want == 503 else "backend_error"
    tap.ok(r.status == want and j.get("error") == error,
           f"{label}: {name}: {want} {error}", r)
    if want == 503:
        tap.eq(r.headers.get("retry-after"), "1", f"{label}: {name}: Retry-After on the 503")


def audit_checks(tap, audit):
    recs = records(audit, "secret.release")
    allow = [x for x in recs if x.get("decision") == "allow"]
    deny = [x for x in recs if x.get("decision") == "deny"]
    error = [x for x in recs if x.get("decision") == "error"]
    want_allow = 3 + 1 + 2 * STAMPEDE
    tap.eq((len(allow), len(deny), len(error)), (want_allow, 3, 14),
           f"audit: one secret.release per decision ({want_allow} allow, 3 deny, 14 error)")
    by_ref = {}
    for x in allow:
        by_ref.setdefault(x.get("details", {}).get("ref", "")[:16], x)
    first = allow[0] if allow else {}
    det = first.get("details", {})
    tap.ok(det.get("ref") == "vault:secret/ci/db#password" and det.get("version") == "1" and
           first.get("subject") and det.get("src_sub") == "job-ci" and
           det.get("src_iss") == ISS,
           "audit: the vault release names reference, version, subject and source", first)
    sm = by_ref.get("aws-sm:ci/db", {}).get("details", {})
    tap.ok(sm.get("version"), "audit: the aws-sm release carries the version id", sm)
    tap.ok(all(x.get("details", {}).get("status") in (502, 503) for x in error),
           "audit: each error record carries the status answered", error[:1])
    tap.ok(all(x.get("details", {}).get("status") == 403 for x in deny),
           "audit: each denial carries 403", deny[:1])


if __name__ == "__main__":
    ft.main("test_ferryd_secrets_backends", body)
