#!/usr/bin/env python3
# TAP: ferryd's rate limits, one-time subject tokens and the syslog configuration, end to end.
#   One ferryd on a free loopback port and a unix socket trusts a local issuer whose JWKS is a
#   file (tokens signed here with python cryptography), with small limits:
#   per address 2/s burst 10, per identity 0.2/s burst 2.
#   - per address: a burst past the limit from 127.0.0.1 gets 429 with Retry-After, a JSON
#     slow_down error and no-store, a token request is refused before it is read (no token, no
#     audit record); /healthz is never limited; the unix-socket client (uid:N) is still served;
#     after Retry-After seconds 127.0.0.1 is served again;
#   - per identity: a third exchange of one subject gets 429 slow_down with Retry-After and one
#     audit record (deny, slow_down, the subject), while another subject still gets a token;
#   - one_time_subject (the default): the same subject token twice -> the second is refused
#     with invalid_request and an audit record naming the replay;
#   - log.target "syslog" (facility, ident) is accepted by --check-config, a bad facility is
#     not; a ferryd started with it logs no request lines on stderr.
# Wall time: about 2 s.
import os
import socket
import sys
import time
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402
from ferrydtest import (FERRYD_BIN, FORM, GRANT, JWT_TYPE, json_of, records,  # noqa: E402
                        request, start, stop, wait_ready)

ISS = "https://idp.limits.test"
AUD = "ferry"
TARGET = "https://registry.limits.test"
SCOPE = "models:read"


def exchange(port, token, unix=None):
    body = urllib.parse.urlencode([("grant_type", GRANT), ("subject_token", token),
                                   ("subject_token_type", JWT_TYPE), ("audience", TARGET),
                                   ("scope", SCOPE)])
    return request(port, "POST", "/v1/token", body=body.encode(),
                   headers={"Content-Type": FORM}, unix=unix)


def token_of(key, sub):
    now = int(time.time())
    return ft.make_token(key, alg="ES256", typ="JWT",
                         claims=ft.claims(ISS, AUD, sub=sub, now=now, lifetime=300))


def setup_dir(d, key):
    pol = os.path.join(d, "policies")
    os.mkdir(pol)
    ft.write_json(os.path.join(pol, "jobs.json"), {"version": 1, "policies": [{
        "id": "jobs", "match": {"issuer": ISS, "subject_glob": "job-*"},
        "grant": {"scopes": [SCOPE], "audiences": [TARGET], "max_ttl": 600}}]})
    jwks = ft.write_json(os.path.join(d, "jwks.json"), ft.jwks(key))
    issuer = {"issuer": ISS, "audiences": [AUD], "jwks_file": jwks, "algorithms": ["ES256"],
              "profile": "id_token"}
    return pol, issuer


def limits(tap, port, sock, audit, key):
    # ---- per address ----------------------------------------------------------------------
    statuses = []
    refused = None
    for _ in range(12):
        r = request(port, "GET", "/.well-known/jwks.json")
        statuses.append(r.status)
        if r.status == 429 and refused is None:
            refused = r
    tap.ok(statuses[:10] == [200] * 10 and 429 in statuses[10:],
           "per address: the burst of 10 passes, then 429", statuses)
    doc = json_of(refused) if refused else None
    tap.ok(refused is not None and refused.headers.get("retry-after") == "1"
           and refused.headers.get("cache-control") == "no-store"
           and refused.headers.get("content-type", "").startswith("application/json")
           and doc == {"error": "slow_down",
                       "error_description": "too many requests; retry after 1 seconds"},
           "per address: 429 carries Retry-After: 1, no-store and the slow_down JSON error",
           refused)
    before = len(records(audit))
    r = exchange(port, token_of(key, "job-a"))
    tap.ok(r.status == 429 and b"access_token" not in r.body
           and (json_of(r) or {}).get("error") == "slow_down",
           "per address: a token request is refused with 429 and no token", r)
    tap.ok(len(records(audit)) == before,
           "per address: a refusal writes no audit record (no identity was looked at)")
    # The refusal comes as soon as the headers are in: a client over its limit does not get its
    # body read (here the body never comes; ferryd must answer without waiting for it).
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        raw.sendall(b"POST /v1/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: " + FORM.encode() + b"\r\nContent-Length: 4000\r\n\r\n")
        try:
            head = raw.recv(200)
        except socket.timeout:
            head = b"(no answer within 5 s)"
    finally:
        raw.close()
    tap.ok(head.startswith(b"HTTP/1.1 429"),
           "per address: the 429 is sent before the request body is read", head)
    r = request(port, "GET", "/healthz")
    tap.ok(r.status == 200, "per address: /healthz is never limited", r)
    r = request(port, "GET", "/.well-known/jwks.json", unix=sock)
    tap.ok(r.status == 200, "per address: another client (the unix socket peer) is served", r)
    time.sleep(1.05)
    r = request(port, "GET", "/.well-known/jwks.json")
    tap.ok(r.status == 200, "per address: served again after Retry-After seconds", r)

    # ---- per identity (over the unix socket, whose own budget is not spent) ------------------
    before = len(records(audit))
    r1 = exchange(port, token_of(key, "job-a"), unix=sock)
    r2 = exchange(port, token_of(key, "job-a"), unix=sock)
    tap.ok(r1.status == 200 and r2.status == 200 and "access_token" in (json_of(r2) or {}),
           "per identity: two exchanges of job-a within its burst get tokens", (r1, r2))
    r3 = exchange(port, token_of(key, "job-a"), unix=sock)
    doc = json_of(r3) or {}
    tap.ok(r3.status == 429 and r3.headers.get("retry-after") == "5"
           and doc.get("error") == "slow_down" and "access_token" not in doc
           and r3.headers.get("cache-control") == "no-store",
           "per identity: the third gets 429 slow_down with Retry-After: 5 and no token", r3)
    recs = records(audit)[before:]
    last = recs[-1] if recs else {}
    det = last.get("details", {})
    tap.ok(len(recs) == 3 and last.get("decision") == "deny" and last.get("subject") == "job-a"
           and det.get("error") == "slow_down" and det.get("rate_limited") == "per_identity"
           and det.get("retry_after") == 5 and "granted" not in det,
           "per identity: one audit record per decision, the refusal naming job-a", recs)
    r = exchange(port, token_of(key, "job-b"), unix=sock)
    tap.ok(r.status == 200 and "access_token" in (json_of(r) or {}),
           "per identity: another subject still gets a token", r)

    # ---- one-time subject tokens (the default) ------------------------------------------------
    tok = token_of(key, "job-c")
    first = exchange(port, tok, unix=sock)
    before = len(records(audit))
    second = exchange(port, tok, unix=sock)
    doc = json_of(second) or {}
    recs = records(audit)[before:]
    tap.ok(first.status == 200 and second.status == 400
           and doc.get("error") == "invalid_request" and "access_token" not in doc,
           "one_time_subject: the same subject token twice, the second is invalid_request",
           (first, second))
    tap.ok(len(recs) == 1 and recs[0].get("decision") == "deny"
           and "replayed" in recs[0].get("details", {}).get("reason", ""),
           "one_time_subject: the replay is on record", recs)


def body(tap):
    if not os.access(FERRYD_BIN, os.X_OK):
        tap.ok(False, f"ferryd binary at {FERRYD_BIN}")
        return
    key = ft.Key("P-256", kid="limits-1")
    with ft.tempdir() as d:
        pol, issuer = setup_dir(d, key)

        # ---- log.target syslog: configuration ----------------------------------------------
        base = {"policies": pol, "issuers": [issuer]}
        sys_conf = dict(base, log={"target": "syslog", "facility": "local3",
                                   "ident": "ferryd-limits"})
        p = ft.write_json(os.path.join(d, "syslog.json"), sys_conf)
        r = ft.run([FERRYD_BIN, "--check-config", "-c", p])
        tap.ok(r.rc == 0, "log.target syslog with a facility and ident: --check-config accepts",
               r)
        p = ft.write_json(os.path.join(d, "bad.json"),
                          dict(base, log={"target": "syslog", "facility": "kern"}))
        r = ft.run([FERRYD_BIN, "--check-config", "-c", p])
        tap.ok(r.rc == 2 and "log.facility" in r.err and "bad.json:" in r.err,
               "log.facility \"kern\": exit 2 naming file and member", r)
        p = ft.write_json(os.path.join(d, "bad.json"),
                          dict(base, rate_limits={"per_address": {"rate": 1, "brust": 2}}))
        r = ft.run([FERRYD_BIN, "--check-config", "-c", p])
        tap.ok(r.rc == 2 and "brust" in r.err and "rate_limits.per_address" in r.err,
               "an unknown member in rate_limits: exit 2 naming it", r)

        # ---- the limits ----------------------------------------------------------------------
        port = ft.free_port()
        sock = os.path.join(d, "ferryd.sock")
        audit = os.path.join(d, "audit.log")
        conf = dict(base,
                    listen=[f"127.0.0.1:{port}", f"unix:{sock}"],
                    state_dir=os.path.join(d, "state"),
                    audit_log={"path": audit},
                    rate_limits={"per_address": {"rate": 2, "burst": 10},
                                 "per_identity": {"rate": 0.2, "burst": 2},
                                 "max_tracked": 1000})
        cpath = ft.write_json(os.path.join(d, "ferryd.json"), conf)
        proc, err = start(cpath, d, "limits")
        try:
            if not wait_ready(port, proc):
                tap.ok(False, "ferryd starts and is ready", stop(proc, err))
                return
            limits(tap, port, sock, audit, key)
        finally:
            text = stop(proc, err)
        tap.ok(proc.returncode == 0, "ferryd stops cleanly (exit 0)", text[-2000:])
        tap.ok("rate limited: per-address limit for ipv4:127.0.0.1" in text
               and "rate limited: per-identity limit" in text,
               "the request log names the limit behind each 429", text[-2000:])

        # ---- log.target syslog: running ------------------------------------------------------
        # Whether or not a syslog daemon listens on /dev/log, ferryd's lines go to syslog
        # (glibc drops them when nobody listens): stderr carries no request line.
        port = ft.free_port()
        conf = dict(sys_conf, listen=[f"127.0.0.1:{port}"],
                    state_dir=os.path.join(d, "state2"))
        proc, err = start(ft.write_json(os.path.join(d, "syslog-run.json"), conf), d, "syslog")
        try:
            ready = wait_ready(port, proc)
            r = request(port, "GET", "/healthz") if ready else None
        finally:
            text = stop(proc, err)
        tap.ok(ready and r.status == 200 and proc.returncode == 0
               and '"msg":"request"' not in text and '"msg":"ferryd started"' not in text,
               "log.target syslog: ferryd serves and writes no log line on stderr", text[-2000:])


if __name__ == "__main__":
    ft.main("test_ferryd_limits", body)
