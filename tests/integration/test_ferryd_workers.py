#!/usr/bin/env python3
# TAP: ferryd's event threads never wait for I/O; requests that must wait go to the workers.
#   One ferryd with a single event thread (limits.threads 1), one worker and a worker queue of
#   one trusts two issuers: A, whose key set is a file, and B, whose key set is served by a
#   loopback server that holds every request until the test opens its gate. ferryd's start-up
#   fetch of B's keys is therefore in flight for as long as the test wants. Checked:
#   - a token of B (whose keys are being fetched) is deferred to the worker, and while it waits
#     there, exchanges of A and /healthz are answered on the event thread;
#   - a second token of B waits in the queue (ferryd_http_deferred_waiting 1 on /metrics), and
#     a third, with the queue full, gets 503 temporarily_unavailable with Retry-After: 1 and
#     no-store, and no audit record;
#   - once the gate opens, both waiting tokens of B get their tokens from the one key-set fetch;
#     the audit log holds exactly one record per exchange that ran, the metrics count two
#     deferred requests and one refused;
#   - with audit_log.sync "always" (an fdatasync per record), every exchange is deferred and
#     still answered 200; a chunked body longer than the first body buffer is read whole;
#   - limits.threads / workers / worker_queue out of range are configuration errors.
# No assertion depends on timing: the gate and /metrics tell the test where each request is.
import http.client
import json
import os
import re
import sys
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402
from ferrydtest import (FERRYD_BIN, FORM, GRANT, JWT_TYPE, JWKSServer, json_of,  # noqa: E402
                        records, request, start, stop, wait_ready)

ISS_A = "https://idp-a.workers.test"
ISS_B = "https://idp-b.workers.test"
AUD = "ferry"
TARGET = "https://registry.workers.test"
SCOPE = "models:read"
WAIT = 30  # seconds any single wait for ferryd may take before the test gives up


def exchange(port, token):
    body = urllib.parse.urlencode([("grant_type", GRANT), ("subject_token", token),
                                   ("subject_token_type", JWT_TYPE), ("audience", TARGET),
                                   ("scope", SCOPE)])
    return request(port, "POST", "/v1/token", body=body.encode(),
                   headers={"Content-Type": FORM})


def token_of(key, iss, sub):
    return ft.make_token(key, alg="ES256", typ="JWT",
                         claims=ft.claims(iss, AUD, sub=sub, now=int(time.time()), lifetime=300))


class Background:
    """One exchange in a thread; .result once done."""

    def __init__(self, port, token):
        self.result = None
        self.error = None

        def run():
            try:
                self.result = exchange(port, token)
            except Exception as e:  # noqa: BLE001 - reported by the test
                self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def done(self):
        return not self.thread.is_alive()

    def join(self):
        self.thread.join(WAIT)
        return self.result


def metric(port, name):
    r = request(port, "GET", "/metrics")
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", r.body.decode(), re.M)
    return float(m.group(1)) if m else None


def wait_metric(port, name, want):
    end = time.monotonic() + WAIT
    while time.monotonic() < end:
        if metric(port, name) == want:
            return True
        time.sleep(0.02)
    return False


def setup(d, key_a, key_b, gated_port, audit, port, sync="batch"):
    pol = os.path.join(d, "policies")
    os.makedirs(pol, exist_ok=True)
    ft.write_json(os.path.join(pol, "jobs.json"), {"version": 1, "policies": [
        {"id": f"jobs-{n}", "match": {"issuer": iss, "subject_glob": "job-*"},
         "grant": {"scopes": [SCOPE], "audiences": [TARGET], "max_ttl": 600}}
        for n, iss in (("a", ISS_A), ("b", ISS_B))]})
    jwks_a = ft.write_json(os.path.join(d, "a.jwks"), ft.jwks(key_a))
    issuers = [{"issuer": ISS_A, "audiences": [AUD], "jwks_file": jwks_a,
                "algorithms": ["ES256"], "profile": "id_token"}]
    if gated_port:
        issuers.append({"issuer": ISS_B, "audiences": [AUD], "algorithms": ["ES256"],
                        "profile": "id_token",
                        "jwks_uri": f"http://127.0.0.1:{gated_port}/jwks",
                        "allow_http_loopback": True,
                        "fetch": {"connect_timeout_ms": 5000, "timeout_ms": 60000}})
    return {
        "listen": [f"127.0.0.1:{port}"],
        "state_dir": os.path.join(d, "state-" + sync),
        "issuer": f"http://127.0.0.1:{port}",
        "policies": pol,
        "token": {"one_time_subject": True},
        "audit_log": {"path": audit, "sync": sync},
        "rate_limits": {"per_address": {"rate": 0}, "per_identity": {"rate": 0}},
        "limits": {"threads": 1, "workers": 1, "worker_queue": 1, "drain_timeout": 2},
        "issuers": issuers,
    }


def deferral(tap, d, key_a, key_b):
    with JWKSServer(ft.jwks(key_b), gated=True) as idp:
        port = ft.free_port()
        audit = os.path.join(d, "audit.log")
        conf = setup(d, key_a, key_b, idp.port, audit, port)
        proc, err = start(ft.write_json(os.path.join(d, "ferryd.json"), conf), d, "workers")
        try:
            # /readyz would wait for B's keys: /healthz says the server is up.
            if not wait_ready(port, proc, path="/healthz"):
                tap.ok(False, "ferryd starts", stop(proc, err))
                return
            tap.ok(idp.arrived.wait(WAIT) and idp.count == 1,
                   "start-up: ferryd's fetch of B's key set is in flight (held at the gate)",
                   idp.count)

            b1 = Background(port, token_of(key_b, ISS_B, "job-b1"))
            tap.ok(wait_metric(port, "ferryd_http_deferred_running", 1),
                   "a token of B, whose keys are being fetched, runs on the worker")
            ra = exchange(port, token_of(key_a, ISS_A, "job-a1"))
            rh = request(port, "GET", "/healthz")
            tap.ok(ra.status == 200 and "access_token" in (json_of(ra) or {})
                   and rh.status == 200 and not b1.done(),
                   "meanwhile the event thread answers A's exchange and /healthz", (ra, rh))

            b2 = Background(port, token_of(key_b, ISS_B, "job-b2"))
            tap.ok(wait_metric(port, "ferryd_http_deferred_waiting", 1),
                   "a second token of B waits in the worker queue")
            before = len(records(audit))
            r3 = exchange(port, token_of(key_b, ISS_B, "job-b3"))
            doc = json_of(r3) or {}
            tap.ok(r3.status == 503 and doc.get("error") == "temporarily_unavailable"
                   and r3.headers.get("retry-after") == "1"
                   and r3.headers.get("cache-control") == "no-store"
                   and "access_token" not in doc,
                   "a third, with the queue full: 503 temporarily_unavailable, Retry-After: 1, "
                   "no-store, no token", r3)
            tap.ok(len(records(audit)) == before,
                   "the refused request wrote no audit record (its exchange gave up unrun)")
            tap.ok(not b1.done() and not b2.done(), "both waiting tokens of B are still held")

            idp.open()
            r1, r2 = b1.join(), b2.join()
            tap.ok(r1 is not None and r2 is not None and r1.status == 200 and r2.status == 200
                   and "access_token" in (json_of(r1) or {})
                   and "access_token" in (json_of(r2) or {}),
                   "once the key set arrives, both deferred exchanges get their tokens",
                   (r1, r2, b1.error, b2.error))
            tap.ok(idp.count == 1, "one key-set fetch served them all", idp.count)
            subs = [r.get("subject") for r in records(audit)]
            tap.ok(sorted(subs) == ["job-a1", "job-b1", "job-b2"],
                   "the audit log holds one record per exchange that ran", subs)
            tap.ok(metric(port, "ferryd_http_deferred_total") == 2
                   and metric(port, "ferryd_http_deferred_refused_total") == 1
                   and metric(port, "ferryd_http_deferred_waiting") == 0
                   and metric(port, "ferryd_http_deferred_running") == 0,
                   "metrics: two deferred, one refused, none left")
            r = exchange(port, token_of(key_b, ISS_B, "job-b4"))
            tap.ok(r.status == 200 and metric(port, "ferryd_http_deferred_total") == 2,
                   "with B's keys cached, its tokens stay on the event thread", r)
        finally:
            text = stop(proc, err)
        tap.ok(proc.returncode == 0, "ferryd stops cleanly", text[-2000:])


def sync_always(tap, d, key_a):
    port = ft.free_port()
    audit = os.path.join(d, "audit-always.log")
    conf = setup(d, key_a, None, None, audit, port, sync="always")
    proc, err = start(ft.write_json(os.path.join(d, "always.json"), conf), d, "always")
    try:
        if not wait_ready(port, proc):
            tap.ok(False, "ferryd (sync always) starts", stop(proc, err))
            return
        rs = [exchange(port, token_of(key_a, ISS_A, f"job-s{i}")) for i in range(3)]
        tap.ok(all(r.status == 200 for r in rs) and len(records(audit)) == 3,
               "sync always: exchanges succeed, one record each", rs)
        tap.ok(metric(port, "ferryd_http_deferred_total") == 3,
               "sync always: every exchange ran on a worker (an fdatasync per record)")
        # A chunked body in pieces, longer than the first buffer (1 KiB): it grows, and the
        # exchange sees the whole body.
        claims = ft.claims(ISS_A, AUD, sub="job-chunked", now=int(time.time()), lifetime=300)
        claims["pad"] = "c" * 1500
        tok = ft.make_token(key_a, alg="ES256", typ="JWT", claims=claims)
        form_body = urllib.parse.urlencode([("grant_type", GRANT), ("subject_token", tok),
                                            ("subject_token_type", JWT_TYPE),
                                            ("audience", TARGET), ("scope", SCOPE)]).encode()
        pieces = [form_body[i:i + 300] for i in range(0, len(form_body), 300)]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        try:
            conn.request("POST", "/v1/token", body=iter(pieces), encode_chunked=True,
                         headers={"Content-Type": FORM, "Transfer-Encoding": "chunked"})
            resp = conn.getresponse()
            status, doc = resp.status, json.loads(resp.read() or b"null")
        finally:
            conn.close()
        tap.ok(len(form_body) > 2048 and status == 200 and "access_token" in (doc or {})
               and records(audit)[-1].get("subject") == "job-chunked",
               f"a chunked body of {len(form_body)} bytes in {len(pieces)} pieces is read whole",
               (status, doc))
    finally:
        text = stop(proc, err)
    tap.ok(proc.returncode == 0, "ferryd (sync always) stops cleanly", text[-2000:])


def config_errors(tap, d, key_a):
    base = setup(d, key_a, None, None, os.path.join(d, "x.log"), ft.free_port())
    for key, value in (("threads", 65), ("workers", 0), ("worker_queue", 0),
                       ("workers", "many")):
        conf = dict(base, limits={key: value})
        p = ft.write_json(os.path.join(d, "bad.json"), conf)
        r = ft.run([FERRYD_BIN, "--check-config", "-c", p])
        tap.ok(r.rc == 2 and f"limits.{key}" in r.err and "bad.json" in r.err,
               f"limits.{key} = {value!r}: exit 2 naming it", r)
    # --check-config also opens the secrets section (each backend refuses what it does not know).
    conf = dict(base, secrets={"file": {"stor": os.path.join(d, "s.store")}})
    r = ft.run([FERRYD_BIN, "--check-config", "-c", ft.write_json(os.path.join(d, "bad.json"),
                                                                  conf)])
    tap.ok(r.rc == 2 and "secrets" in r.err and "stor" in r.err and "bad.json" in r.err,
           "--check-config: an unknown member in secrets.file is exit 2 naming it", r)
    conf = dict(base, limits={"threads": 0, "workers": 256, "worker_queue": 65536})
    r = ft.run([FERRYD_BIN, "--check-config", "-c",
                ft.write_json(os.path.join(d, "good.json"), conf)])
    tap.ok(r.rc == 0, "threads 0 (one per CPU), workers 256, worker_queue 65536: accepted", r)


def body(tap):
    if not os.access(FERRYD_BIN, os.X_OK):
        tap.ok(False, f"ferryd binary at {FERRYD_BIN}")
        return
    key_a = ft.Key("P-256", kid="workers-a")
    key_b = ft.Key("P-256", kid="workers-b")
    with ft.tempdir() as d:
        config_errors(tap, d, key_a)
        deferral(tap, d, key_a, key_b)
        sync_always(tap, d, key_a)


if __name__ == "__main__":
    ft.main("test_ferryd_workers", body)
