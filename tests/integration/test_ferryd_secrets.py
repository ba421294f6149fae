#!/usr/bin/env python3
# TAP: GET /v1/secrets/{ref} on ferryd, end to end, with the file backend.
#   The store under ferryd's state directory is seeded with `ferry secret put` (canary values);
#   a policy grants one subject of a local issuer the audience of ferryd's own issuer URL and
#   the secrets "file:team-a/*"; the test exchanges a subject token for a ferry token and then:
#   - a granted secret: 200, the exact value, application/octet-stream, Cache-Control no-store;
#   - a reference the policy does not grant: 403 insufficient_scope with WWW-Authenticate, and
#     no backend call (ferryd_secrets_backend_calls_total unchanged);
#   - no token: 401 with WWW-Authenticate: Bearer realm="ferry"; a forged, a foreign, an
#     expired ferry token, the subject token itself and a non-Bearer scheme: 401 with
#     error="invalid_token" (or the bare challenge for the other scheme), nothing else said;
#   - malformed references (percent-decoded by the server): 400 naming the part; a query
#     string: 400; POST: 405;
#   - a secret that does not exist: 404 not_found without backend text;
#   - a stampede of 1,000 requests (100 threads x 10) for one uncached secret: all 200 with the
#     value, exactly one backend call;
#   - the audit log: one secret.release record per decision (allow / deny / error) with the
#     reference, version and subject; no canary value in any record, log line or error body;
#   - with audit_log.sync "batch", a cached value is answered on the event thread (only the
#     first, uncached read is deferred to a worker: ferryd_http_deferred_total).
import json
import os
import re
import secrets
import sys
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402
from ferrydtest import (FORM, GRANT, JWT_TYPE, json_of, records, request,  # noqa: E402
                        start, stop, wait_ready)

ISS = "https://idp.secrets.test"
AUD = "ferry"
CALLS = "ferryd_secrets_backend_calls_total"


def metric(port, name):
    r = request(port, "GET", "/metrics")
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", r.body.decode(), re.M)
    return float(m.group(1)) if m else None


def exchange(port, key, sub, audience):
    tok = ft.make_token(key, alg="ES256", typ="JWT",
                        claims=ft.claims(ISS, AUD, sub=sub, now=int(time.time()), lifetime=300))
    body = urllib.parse.urlencode([("grant_type", GRANT), ("subject_token", tok),
                                   ("subject_token_type", JWT_TYPE), ("audience", audience)])
    r = request(port, "POST", "/v1/token", body=body.encode(), headers={"Content-Type": FORM})
    j = json_of(r) or {}
    return r, j.get("access_token"), tok


def get(port, ref, token=None, headers=None, method="GET"):
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = "Bearer " + token
    return request(port, method, "/v1/secrets/" + urllib.parse.quote(ref, safe=":/"), headers=h)


def body(tap):
    canary = "CANARY-A-" + secrets.token_hex(16)
    canary_b = "CANARY-B-" + secrets.token_hex(16)
    canary_s = "CANARY-S-" + secrets.token_hex(16)
    bodies = []
    with ft.tempdir() as d:
        state = os.path.join(d, "state")
        os.makedirs(state, mode=0o700)
        r = ft.ferry("secret", "init", "-d", state)
        tap.ok(r.rc == 0, "ferry secret init under the state directory", r)
        for name, value in (("team-a/db", canary), ("team-b/db", canary_b),
                            ("team-a/stampede", canary_s)):
            r = ft.ferry("secret", "put", "-d", state, name, stdin=value)
            tap.ok(r.rc == 0, f"ferry secret put {name}", r)

        key = ft.Key.for_alg("ES256", kid="idp-1")
        port = ft.free_port()
        me = f"http://127.0.0.1:{port}"
        pol = os.path.join(d, "policies")
        os.makedirs(pol)
        ft.write_json(os.path.join(pol, "secrets.json"), {"version": 1, "policies": [
            {"id": "team-a", "match": {"issuer": ISS, "subject": "job-a"},
             "grant": {"audiences": [me], "max_ttl": 600, "secrets": ["file:team-a/*"]}},
            {"id": "short", "match": {"issuer": ISS, "subject": "job-short"},
             "grant": {"audiences": [me], "max_ttl": 1, "secrets": ["file:team-a/*"]}},
            {"id": "other", "match": {"issuer": ISS, "subject": "job-x"},
             "grant": {"audiences": ["https://elsewhere.test"], "max_ttl": 600,
                       "secrets": ["file:team-a/*"]}}]})
        jwks = ft.write_json(os.path.join(d, "idp.jwks"), ft.jwks(key))
        audit = os.path.join(d, "audit.log")
        conf = {
            "listen": [f"127.0.0.1:{port}"],
            "state_dir": state,
            "issuer": me,
            "policies": pol,
            "audit_log": {"path": audit, "sync": "always"},
            "rate_limits": {"per_address": {"rate": 0}, "per_identity": {"rate": 0}},
            "limits": {"workers": 8, "worker_queue": 4096, "connections": 1000,
                       "connections_per_ip": 0},
            "issuers": [{"issuer": ISS, "audiences": [AUD], "jwks_file": jwks,
                         "algorithms": ["ES256"], "profile": "id_token"}],
            "secrets": {"file": {"cache_ttl": 600}, "cache": {"max_entries": 64}},
        }
        proc, err = start(ft.write_json(os.path.join(d, "ferryd.json"), conf), d, "secrets")
        try:
            if not wait_ready(port, proc):
                tap.ok(False, "ferryd starts", stop(proc, err))
                return
            run(tap, port, key, me, canary, canary_b, canary_s, bodies, audit)
        finally:
            log = stop(proc, err)
        tap.ok(proc.returncode == 0, "ferryd exits 0 on SIGTERM", log[-2000:])
        leaks = [c for c in (canary, canary_b, canary_s) if c in log]
        tap.ok(not leaks, "no canary value in any log line of ferryd", leaks)
        with open(audit) as f:
            text = f.read()
        tap.ok(not any(c in text for c in (canary, canary_b, canary_s)),
               "no canary value in the audit log")
        tap.ok(not any(c.encode() in b for b in bodies for c in (canary_b,)),
               "no refused value in any error body")

        # ---- event threads: a cached value is served there, only a miss goes to a worker ---
        conf["audit_log"] = {"path": os.path.join(d, "audit2.log"), "sync": "batch"}
        proc, err = start(ft.write_json(os.path.join(d, "ferryd2.json"), conf), d, "secrets2")
        try:
            if not wait_ready(port, proc):
                tap.ok(False, "ferryd starts (audit_log.sync batch)", stop(proc, err))
                return
            event_threads(tap, port, key, me, canary)
        finally:
            log = stop(proc, err)
        tap.ok(proc.returncode == 0 and canary not in log,
               "second ferryd exits 0, no canary in its log", log[-2000:])


def event_threads(tap, port, key, me, canary):
    r, tok, _ = exchange(port, key, "job-a", me)
    tap.ok(r.status == 200 and tok, "exchange with audit_log.sync batch", r)
    if not tok:
        return
    deferred = metric(port, "ferryd_http_deferred_total")
    r = get(port, "file:team-a/db", tok)
    tap.ok(r.status == 200 and r.body == canary.encode(), "uncached read: 200 and the value")
    tap.eq(metric(port, "ferryd_http_deferred_total") - deferred, 1.0,
           "uncached read: deferred to a worker (the backend call)")
    n, t0 = 200, time.monotonic()
    ok = all(get(port, "file:team-a/db", tok).body == canary.encode() for _ in range(n))
    dt = time.monotonic() - t0
    tap.ok(ok, f"{n} cached reads: all the value")
    tap.eq(metric(port, "ferryd_http_deferred_total") - deferred, 1.0,
           "cached reads: answered on the event thread, none deferred")
    tap.eq(metric(port, CALLS), 1.0, "cached reads: still one backend call")
    tap.diag(f"{n} sequential cached reads (one connection each) in {dt:.3f} s "
             f"({n / dt:.0f}/s, Python client)")


def run(tap, port, key, me, canary, canary_b, canary_s, bodies, audit):
    r, tok, subject_tok = exchange(port, key, "job-a", me)
    tap.ok(r.status == 200 and tok, "exchange: a ferry token for ferryd's own audience", r)
    if not tok:
        return

    r = get(port, "file:team-a/db", tok)
    tap.ok(r.status == 200 and r.body == canary.encode(), "granted secret: 200 and the value",
           r.status)
    tap.eq(r.headers.get("content-type"), "application/octet-stream", "value as octet-stream")
    tap.eq(r.headers.get("cache-control"), "no-store", "Cache-Control: no-store")
    r = get(port, "file:team-a/db", tok)
    tap.ok(r.status == 200 and r.body == canary.encode(), "granted secret again: 200 (cached)")
    tap.eq(metric(port, CALLS), 1.0, "two reads of one secret: one backend call")
    tap.ok(metric(port, "ferryd_secrets_cache_hits_total") >= 1, "the second read was a hit")

    calls = metric(port, CALLS)
    r = get(port, "file:team-b/db", tok)
    bodies.append(r.body)
    tap.ok(r.status == 403 and (json_of(r) or {}).get("error") == "insufficient_scope",
           "not granted: 403 insufficient_scope", r)
    tap.eq(r.headers.get("www-authenticate"), 'Bearer realm="ferry", error="insufficient_scope"',
           "403 carries WWW-Authenticate with error=insufficient_scope")
    tap.eq(metric(port, CALLS), calls, "not granted: no backend call")

    r = get(port, "file:team-a/db")
    bodies.append(r.body)
    tap.ok(r.status == 401 and r.headers.get("www-authenticate") == 'Bearer realm="ferry"',
           "no token: 401 with WWW-Authenticate: Bearer realm=\"ferry\"", r)
    r = get(port, "file:team-a/db", headers={"Authorization": "Basic " + tok[:20]})
    tap.ok(r.status == 401 and r.headers.get("www-authenticate") == 'Bearer realm="ferry"',
           "another scheme: 401 with the bare challenge", r)

    h, p, s = tok.split(".")
    forged_sig = s[:-4] + ("AAAA" if s[-4:] != "AAAA" else "BBBB")
    other = ft.Key.for_alg("ES256", kid=json.loads(
        __import__("base64").urlsafe_b64decode(h + "==").decode())["kid"])
    now = int(time.time())
    foreign = ft.make_token(other, alg="ES256", typ="at+jwt", claims={
        "iss": me, "aud": me, "sub": "job-a", "src_iss": ISS, "src_sub": "job-a",
        "exp": now + 300, "iat": now, "nbf": now, "jti": "x", "client_id": "ferry"})
    for desc, t in (("forged signature", f"{h}.{p}.{forged_sig}"),
                    ("signed by another key with ferry's kid", foreign),
                    ("the subject token itself", subject_tok),
                    ("garbage", "not-a-token"),
                    ("bytes outside b64token", "a b\"c")):
        r = get(port, "file:team-a/db", t)
        bodies.append(r.body)
        tap.ok(r.status == 401 and r.headers.get("www-authenticate") ==
               'Bearer realm="ferry", error="invalid_token"' and
               (json_of(r) or {}).get("error") == "invalid_token",
               f"{desc}: 401 invalid_token", r)

    r, other_tok, _ = exchange(port, key, "job-x", "https://elsewhere.test")
    r = get(port, "file:team-a/db", other_tok or "x")
    tap.ok(other_tok and r.status == 401 and "invalid_token" in r.headers.get(
        "www-authenticate", ""), "a ferry token for another audience: 401 invalid_token", r)

    r, short_tok, _ = exchange(port, key, "job-short", me)
    tap.ok(r.status == 200 and short_tok, "exchange: a ferry token of one second", r)
    # Read once while it is valid: its verified signature is remembered, its lifetime is not.
    r = get(port, "file:team-a/db", short_tok or "x")
    tap.eq(r.status, 200, "the one-second token reads while it is valid")
    time.sleep(2.2)
    r = get(port, "file:team-a/db", short_tok or "x")
    tap.ok(r.status == 401 and "invalid_token" in r.headers.get("www-authenticate", ""),
           "an expired ferry token, read before: 401 invalid_token", r)

    for ref, part in (("file:../x", "file:"), ("nope:x", "backend"), ("file:", "file:"),
                      ("aws-sm:a%b", "percent")):
        r = get(port, ref, tok)
        j = json_of(r) or {}
        tap.ok(r.status == 400 and j.get("error") == "invalid_request" and
               part in j.get("error_description", ""),
               f"malformed reference {ref!r}: 400 naming {part!r}", r)
    r = request(port, "GET", "/v1/secrets/file:team-a/db?x=1",
                headers={"Authorization": "Bearer " + tok})
    tap.ok(r.status == 400, "a query string: 400", r)
    r = get(port, "file:team-a/db", tok, method="POST")
    tap.ok(r.status == 405 and r.headers.get("allow") == "GET", "POST: 405 with Allow: GET", r)
    r = get(port, "file:team-a/missing", tok)
    tap.ok(r.status == 404 and (json_of(r) or {}).get("error") == "not_found",
           "a granted reference that does not exist: 404 not_found", r)

    # ---- the stampede ---------------------------------------------------------------------
    calls = metric(port, CALLS)
    results = []
    lock = threading.Lock()
    gate = threading.Barrier(100)

    def worker():
        mine = []
        gate.wait()
        for _ in range(10):
            try:
                x = get(port, "file:team-a/stampede", tok)
                mine.append((x.status, x.body))
            except OSError as e:
                mine.append((0, str(e).encode()))
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    ok = [s for s, b in results if s == 200 and b == canary_s.encode()]
    tap.ok(len(results) == 1000 and len(ok) == 1000, "stampede: 1,000 requests, all 200 with the "
           "value", {(s, b[:80]) for s, b in results if s != 200})
    tap.eq(metric(port, CALLS) - calls, 1.0, "stampede: exactly one backend call")
    tap.diag(f"in-flight waits: {metric(port, 'ferryd_secrets_inflight_waits_total')}, "
             f"hits: {metric(port, 'ferryd_secrets_cache_hits_total')}")

    # ---- the audit log --------------------------------------------------------------------
    recs = records(audit, "secret.release")
    allow = [x for x in recs if x.get("decision") == "allow"]
    deny = [x for x in recs if x.get("decision") == "deny"]
    error = [x for x in recs if x.get("decision") == "error"]
    tap.eq((len(allow), len(deny), len(error)), (1003, 1, 1),
           "audit: one record per decision (1,003 allow, 1 deny, 1 error)")
    first = allow[0] if allow else {}
    det = first.get("details", {})
    tap.ok(det.get("ref") == "file:team-a/db" and det.get("version") == "1" and
           first.get("subject") and det.get("src_sub") == "job-a" and det.get("src_iss") == ISS,
           "audit: reference, version, subject and source identity", first)
    tap.ok(deny and deny[0]["details"]["ref"] == "file:team-b/db" and
           deny[0]["details"]["status"] == 403, "audit: the denial names the reference", deny[:1])


if __name__ == "__main__":
    ft.main("test_ferryd_secrets", body)
