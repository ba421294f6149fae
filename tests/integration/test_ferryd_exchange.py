#!/usr/bin/env python3
# TAP: ferryd end to end against the real upstream IdP (npm oidc-provider 9, tests/peers):
#   ferryd trusts the peer through discovery (profile access_token, http loopback) and a policy
#   grants the peer's client a scope and a target audience; /healthz and /readyz; an RFC 8693
#   exchange of the peer's at+jwt returns a token that joserfc verifies against ferryd's own
#   discovery document and JWKS (fetched over HTTP from ferryd); refusals: scope, audience,
#   grant type, forged and missing subject token, duplicate parameter, query string, content
#   type, malformed form, a 16 MiB Content-Length (413 without the body being read), chunked
#   bodies past the limit (413; far past it, closed), headers past the limit (431), GET on the
#   token path (405 with Allow), unknown path (404);
#   a unix socket listener; one audit record per exchange; `ferry log verify --live` while
#   running; SIGHUP with a broken policy keeps the old set; SIGHUP after `ferry keys rotate`; SIGTERM drains a request in flight,
#   exits 0 and the sealed log verifies; `ferryd --check-config` on contrib/ferry.example.json
#   and on broken files; start-up failures (missing policy directory, address in use, a host
#   name as listen address) exit non-zero with the reason.
# Skips (with the reason) when node or the npm packages are missing.
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402
import oidcpeer  # noqa: E402
from ferrydtest import (AT_TYPE, FERRYD_BIN, FORM, GRANT, form, open_log,  # noqa: E402
                        request, wait_ready)
from oidcpeer import RESOURCE  # noqa: E402

try:
    from joserfc import jwt  # noqa: E402
    from joserfc.jwk import KeySet  # noqa: E402
except ImportError:
    jwt = None

CLIENT_ID = oidcpeer.DEFAULT_CLIENT[0]
TARGET = "https://api.target.test"
OTHER_TARGET = "https://not-granted.test"
SCOPE = "deploy:write"


def exchange_pairs(subject, scope=SCOPE, audience=TARGET, grant=GRANT):
    p = [("grant_type", grant), ("subject_token_type", AT_TYPE)]
    if subject is not None:
        p.append(("subject_token", subject))
    if audience is not None:
        p.append(("audience", audience))
    if scope is not None:
        p.append(("scope", scope))
    return p


def post_token(port, body, ctype=FORM, path="/v1/token", unix=None):
    if isinstance(body, list):
        body = form(body)
    return request(port, "POST", path, body=body.encode() if isinstance(body, str) else body,
                   headers={"Content-Type": ctype}, unix=unix)


def body(tap):
    # ---- --check-config, without the peer ---------------------------------------------------
    example = os.path.join(ft.SRCDIR, "contrib", "ferry.example.json")
    r = ft.run([FERRYD_BIN, "--check-config", "-c", example])
    tap.ok(r.rc == 0, "--check-config accepts contrib/ferry.example.json", r)
    with ft.tempdir() as d:
        bad = os.path.join(d, "bad.json")
        with open(bad, "w") as f:
            f.write('{\n  "listen": ["127.0.0.1:1"],\n  "limitz": {}\n}\n')
        r = ft.run([FERRYD_BIN, "--check-config", "-c", bad])
        tap.ok(r.rc == 2 and "bad.json:3" in r.err and "limitz" in r.err,
               "--check-config: an unknown member exits 2 naming file, line and member", r)
        with open(bad, "w") as f:
            f.write('{"limits": {"max_body": "big"}}')
        r = ft.run([FERRYD_BIN, "--check-config", "-c", bad])
        tap.ok(r.rc == 2 and "limits.max_body" in r.err,
               "--check-config: a wrong type exits 2 naming the member", r)
        with open(bad, "w") as f:
            f.write('{"issuers": [{"issuer": "https://x.test"}]}')
        r = ft.run([FERRYD_BIN, "--check-config", "-c", bad])
        tap.ok(r.rc == 2 and "audiences" in r.err,
               "--check-config: an invalid issuer exits 2 with the trust store's reason", r)

        # start-up failures exit non-zero with the reason (and free everything: ASan build)
        pol = os.path.join(d, "pol")
        os.mkdir(pol)
        st = os.path.join(d, "st")
        r = ft.run([FERRYD_BIN, "--listen", "127.0.0.1:1", "--state-dir", st, "-c",
                    ft.write_json(os.path.join(d, "c.json"),
                                  {"policies": os.path.join(d, "missing")})])
        tap.ok(r.rc == 2 and "missing" in r.err and "policies" in r.err,
               "a missing policy directory: exit 2 naming it", r)
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            addr = f"127.0.0.1:{busy.getsockname()[1]}"
            r = ft.run([FERRYD_BIN, "--listen", addr, "--state-dir", st, "-c",
                        ft.write_json(os.path.join(d, "c.json"), {"policies": pol})])
        tap.ok(r.rc == 1 and addr in r.err and "in use" in r.err,
               "a listen address in use: exit 1 naming it", r)
        r = ft.run([FERRYD_BIN, "--listen", "localhost:80", "--state-dir", st, "-c",
                    ft.write_json(os.path.join(d, "c.json"), {"policies": pol})])
        tap.ok(r.rc == 2 and "localhost:80" in r.err and "numeric" in r.err,
               "a host name as listen address: exit 2 (addresses are numeric)", r)

    directory, why = oidcpeer.find_peer()
    if directory is None:
        tap.skip("ferryd against oidc-provider", why)
        return
    if jwt is None:
        tap.skip("ferryd against oidc-provider", "joserfc is not installed")
        return

    with ft.tempdir() as d, oidcpeer.OidcPeer(alg="RS256") as peer:
        port = ft.free_port()
        me = f"http://127.0.0.1:{port}"
        state = os.path.join(d, "state")
        pol = os.path.join(d, "policies")
        os.mkdir(pol)
        sock = os.path.join(d, "ferryd.sock")
        policy = {"version": 1, "policies": [{
            "id": "peer-client",
            "match": {"issuer": peer.issuer, "subject": CLIENT_ID, "audience": [RESOURCE]},
            "grant": {"scopes": [SCOPE, "read"], "audiences": [TARGET], "max_ttl": 600}}]}
        ft.write_json(os.path.join(pol, "peer.json"), policy)
        audit = os.path.join(d, "audit.log")
        conf = {
            "listen": [f"127.0.0.1:{port}", f"unix:{sock}"],
            "state_dir": state,
            "issuer": me,
            "signing_alg": "ES256",
            # One subject token serves many of the cases below, so it is not one-time here;
            # one-time use (the default) is tested in test_ferryd_limits.py.
            "token": {"default_ttl": 300, "max_ttl": 900, "one_time_subject": False},
            "policies": pol,
            "audit_log": {"path": audit, "checkpoint_every": 5, "sync": "always"},
            "limits": {"max_body": 65536, "timeout": 10, "drain_timeout": 5},
            "issuers": [{"issuer": peer.issuer, "audiences": [RESOURCE], "discovery": True,
                         "algorithms": ["RS256"], "profile": "access_token",
                         "allow_http_loopback": True}],
        }
        cpath = ft.write_json(os.path.join(d, "ferryd.json"), conf)
        r = ft.run([FERRYD_BIN, "--check-config", "-c", cpath])
        tap.ok(r.rc == 0, "--check-config accepts the test configuration", r)
        errlog = open_log(d, "ferryd")
        proc = subprocess.Popen([FERRYD_BIN, "-c", cpath], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=errlog,
                                env=ft.clean_env())
        try:
            run_server(tap, peer, proc, port, me, d, state, audit, sock, pol, errlog)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            errlog.close()


def stderr_of(errlog):
    errlog.flush()
    errlog.seek(0)
    return errlog.read()


def run_server(tap, peer, proc, port, me, d, state, audit, sock, pol, errlog):
    if not tap.ok(wait_ready(port, proc, path="/healthz"), "ferryd starts and /healthz answers 200",
                  stderr_of(errlog)):
        return
    r = request(port, "GET", "/healthz")
    tap.ok(r.status == 200 and r.body == b"ok\n", "/healthz: 200 ok", r)
    # Ready once the start-up prefetch of the peer's keys is done (it runs after the
    # listeners start, so /healthz may answer first).
    end = time.monotonic() + 20
    while True:
        r = request(port, "GET", "/readyz")
        if r.status == 200 or time.monotonic() > end:
            break
        time.sleep(0.1)
    tap.ok(r.status == 200 and r.body == b"ready\n",
           "/readyz: 200 (keys, policies and the peer's key set loaded)", r)
    n_exchanges = 0

    # ---- a valid exchange --------------------------------------------------------------------
    subject = peer.access_token()
    r = post_token(port, exchange_pairs(subject))
    n_exchanges += 1
    doc = r.json() or {}
    tap.ok(r.status == 200 and isinstance(doc.get("access_token"), str)
           and doc.get("issued_token_type") == AT_TYPE and doc.get("token_type") == "Bearer"
           and doc.get("expires_in") == 300 and doc.get("scope") == SCOPE,
           "exchange: 200 with access_token, issued_token_type, token_type Bearer, "
           "expires_in 300 (the configured default), scope", r)
    tap.ok(r.headers.get("cache-control") == "no-store"
           and r.headers.get("pragma") == "no-cache"
           and r.headers.get("content-type") == "application/json",
           "exchange: Cache-Control no-store, Pragma no-cache, Content-Type application/json",
           r.headers)
    minted = doc.get("access_token", "")

    # ---- verify it independently with joserfc against ferryd's own documents ----------------
    rd = request(port, "GET", "/.well-known/openid-configuration")
    disc = rd.json() or {}
    tap.ok(rd.status == 200 and disc.get("issuer") == me
           and disc.get("jwks_uri") == me + "/.well-known/jwks.json"
           and disc.get("token_endpoint") == me + "/v1/token",
           "discovery: issuer, jwks_uri and token_endpoint name the configured issuer", rd)
    jwks_path = urllib.parse.urlsplit(disc.get("jwks_uri", "")).path or "/none"
    rj = request(port, "GET", jwks_path)
    try:
        keyset = KeySet.import_key_set(rj.json())
        tok = jwt.decode(minted, keyset, algorithms=["ES256"])
        c, h = tok.claims, tok.header
        jwt.JWTClaimsRegistry(iss={"essential": True, "value": me},
                              aud={"essential": True, "value": TARGET},
                              sub={"essential": True, "value": CLIENT_ID}).validate(c)
        good = (h.get("typ") == "at+jwt" and c.get("scope") == SCOPE
                and c.get("src_iss") == peer.issuer and c.get("exp") - c.get("iat") == 300)
        diag = (h, c)
    except Exception as e:  # noqa: BLE001 - any failure is the check failing
        good, diag = False, repr(e)
    tap.ok(good, "joserfc verifies the minted token with ferryd's JWKS (from jwks_uri): "
           "typ at+jwt, iss = ferryd, aud = target, sub = the peer's client, scope, src_iss, "
           "lifetime 300 s", diag)

    # ---- refusals ----------------------------------------------------------------------------
    def refused(resp, status, error, desc):
        doc = resp.json() or {}
        tap.ok(resp.status == status and doc.get("error") == error
               and "access_token" not in doc
               and resp.headers.get("cache-control") == "no-store",
               f"{desc}: {status} {error}", resp)

    refused(post_token(port, exchange_pairs(subject, scope="admin")), 400, "invalid_scope",
            "a scope not granted")
    refused(post_token(port, exchange_pairs(subject, audience=OTHER_TARGET)), 400,
            "invalid_target", "an audience not granted")
    refused(post_token(port, exchange_pairs(subject, grant="client_credentials")), 400,
            "unsupported_grant_type", "grant_type client_credentials")
    hdr, payload, _sig = subject.split(".")
    forged = hdr + "." + payload + "." + ft.b64u(b"\x00" * 256)
    refused(post_token(port, exchange_pairs(forged)), 400, "invalid_request",
            "a forged subject token (bad signature)")
    refused(post_token(port, exchange_pairs(None)), 400, "invalid_request",
            "no subject_token")
    refused(post_token(port, exchange_pairs(subject) + [("scope", "read")]), 400,
            "invalid_request", "a duplicate parameter (scope twice)")
    n_exchanges += 6
    r = post_token(port, exchange_pairs(subject), path="/v1/token?subject_token=" + subject)
    refused(r, 400, "invalid_request", "a token in the query string")
    r = post_token(port, exchange_pairs(subject), path="/v1/token?")
    refused(r, 400, "invalid_request", "an empty query string")
    refused(post_token(port, json.dumps(dict(exchange_pairs(subject))), ctype="application/json"),
            400, "invalid_request", "Content-Type application/json")
    refused(post_token(port, form(exchange_pairs(subject)) + "&scope=%zz"), 400,
            "invalid_request", "a malformed percent escape")
    refused(post_token(port, form(exchange_pairs(subject)) + "&"), 400, "invalid_request",
            "a trailing '&'")

    # 16 MiB announced, a few bytes sent: 413 comes back without the body being read.
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(b"POST /v1/token HTTP/1.1\r\nHost: x\r\nContent-Type: " + FORM.encode()
                  + b"\r\nContent-Length: 16777216\r\n\r\ngrant_type=x")
        t0 = time.monotonic()
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        elapsed = time.monotonic() - t0
    finally:
        s.close()
    tap.ok(data.startswith(b"HTTP/1.1 413") and elapsed < 5,
           "a 16 MiB Content-Length: 413 at once, with only the headers and 12 bytes sent",
           (data[:300], elapsed))

    # A chunked body past the limit: 413 once it ends (its bytes are dropped, not kept) ...
    def chunked(n_chunks, terminate):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        got = b""
        try:
            s.sendall(b"POST /v1/token HTTP/1.1\r\nHost: x\r\nContent-Type: " + FORM.encode()
                      + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"a" * 16384
            for _ in range(n_chunks):
                s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            if terminate:
                s.sendall(b"0\r\n\r\n")
            while b"\r\n\r\n" not in got:
                c = s.recv(65536)
                if not c:
                    break
                got += c
        except socket.timeout:
            return None  # the server neither answered nor closed
        except OSError:
            pass
        finally:
            s.close()
        return got

    got = chunked(8, True)
    tap.ok(got.startswith(b"HTTP/1.1 413"), "a 128 KiB chunked body (limit 64 KiB): 413",
           got[:300])
    # ... and one far over the limit is cut off: the connection closes without an answer.
    got = chunked(64, False)
    tap.ok(got == b"", "a 1 MiB chunked body: the connection is closed while reading",
           got[:300])

    # Headers past limits.max_header (32 KiB): libmicrohttpd answers 431 itself.
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n")
        got = s.recv(200)
    except OSError as e:
        got = repr(e).encode()
    finally:
        s.close()
    tap.ok(got.startswith(b"HTTP/1.1 431"), "headers over 32 KiB: 431", got)
    r = post_token(port, exchange_pairs(subject), path="/v1/token?" + "q" * 9000)
    refused(r, 400, "invalid_request", "a 9000-byte query string")

    r = request(port, "GET", "/v1/token")
    tap.ok(r.status == 405 and r.headers.get("allow") == "POST",
           "GET /v1/token: 405 with Allow: POST", r)
    r = request(port, "GET", "/nope")
    tap.ok(r.status == 404 and (r.json() or {}).get("error") == "not_found",
           "an unknown path: 404 JSON", r)

    # '+' is a space and %XX an escape: "deploy%3Awrite+read" is the two scopes.
    body_plus = form(exchange_pairs(peer.access_token(), scope=None)) + "&scope=deploy%3Awrite+read"
    r = post_token(port, body_plus)
    n_exchanges += 1
    tap.ok(r.status == 200 and (r.json() or {}).get("scope") == "deploy:write read",
           "form decoding: '+' is a space, %3A a colon (both scopes granted)", r)

    # Concurrency: 8 clients at once, 4 exchanges each, all served.
    import threading
    tokens = [peer.access_token() for _ in range(8)]
    results = []

    def client(tok):
        for _ in range(4):
            try:
                results.append(post_token(port, exchange_pairs(tok)).status)
            except OSError as e:
                results.append(repr(e))

    threads = [threading.Thread(target=client, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    n_exchanges += 32
    tap.ok(results == [200] * 32, "32 exchanges from 8 concurrent clients: all 200", results)

    # ---- still serving; the unix socket listener ---------------------------------------------
    r = post_token(port, exchange_pairs(peer.access_token(), scope="read"))
    n_exchanges += 1
    tap.ok(r.status == 200 and (r.json() or {}).get("scope") == "read",
           "after all that a valid exchange still succeeds", r)
    r = post_token(None, exchange_pairs(peer.access_token()), unix=sock)
    n_exchanges += 1
    tap.ok(r.status == 200 and "access_token" in (r.json() or {}),
           "the unix socket listener serves an exchange", r)
    r = request(None, "GET", "/readyz", unix=sock)
    tap.ok(r.status == 200, "/readyz over the unix socket", r)

    # ---- logs --------------------------------------------------------------------------------
    err = stderr_of(errlog)
    lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    reqs = [x for x in lines if x.get("msg") == "request" and x.get("path") == "/v1/token"]
    tap.ok(len(lines) == len(err.splitlines())
           and any(x.get("status") == 400 and "scope" in x.get("reason", "") for x in reqs)
           and all(isinstance(x.get("duration_us"), int) for x in reqs),
           "stderr: JSON lines; the token requests carry status, duration and reason",
           err[-2000:])
    tap.ok(subject not in err and minted not in err and payload not in err,
           "stderr holds no token material")

    with open(audit) as f:
        recs = [json.loads(x) for x in f if x.strip()]
    ex = [x for x in recs if x.get("type") == "token.exchange"]
    tap.eq(len(ex), n_exchanges, "the audit log has one token.exchange record per exchange")
    jwks_all = os.path.join(d, "jwks-all.json")
    r = ft.ferry("keys", "jwks", "--all", "--state-dir", state)
    with open(jwks_all, "w") as f:
        f.write(r.out)
    r = ft.ferry("log", "verify", audit, "--jwks", jwks_all, "--live")
    tap.ok(r.rc == 0, "ferry log verify --live passes while ferryd runs", r)

    # ---- SIGHUP: a broken policy set is not installed; a good one is -------------------------
    hups = [0]

    def hup():
        """SIGHUP, then wait for the reload's last log line (about the keys)."""
        hups[0] += 1
        proc.send_signal(signal.SIGHUP)
        end = time.monotonic() + 15
        while time.monotonic() < end and stderr_of(errlog).count('"reload: keys') < hups[0]:
            time.sleep(0.05)

    with open(os.path.join(pol, "broken.json"), "w") as f:
        f.write('{"version": 1, "policies": [{"id": "x"}]}')
    hup()
    r = post_token(port, exchange_pairs(peer.access_token()))
    n_exchanges += 1
    tap.ok(r.status == 200 and "keeping the old set" in stderr_of(errlog),
           "SIGHUP with a broken policy file: logged, the old set keeps serving", r)
    os.unlink(os.path.join(pol, "broken.json"))
    policy = {"version": 1, "policies": [{
        "id": "peer-client",
        "match": {"issuer": peer.issuer, "subject": CLIENT_ID, "audience": [RESOURCE]},
        "grant": {"scopes": ["read"], "audiences": [TARGET], "max_ttl": 600}}]}
    ft.write_json(os.path.join(pol, "peer.json"), policy)
    hup()
    r = post_token(port, exchange_pairs(peer.access_token()))
    n_exchanges += 1
    tap.ok(r.status == 400 and (r.json() or {}).get("error") == "invalid_scope",
           "SIGHUP with a good policy set: the new set decides (deploy:write no longer granted)",
           r)

    # ---- SIGHUP after `ferry keys rotate`: the new key signs, both are published ----------
    kid_old = (KeySet.import_key_set(rj.json()).keys[0]).kid
    r = ft.ferry("keys", "rotate", "--state-dir", state)
    tap.ok(r.rc == 0, "ferry keys rotate on ferryd's state directory", r)
    hup()
    rj2 = request(port, "GET", "/.well-known/jwks.json")
    kids = [k.get("kid") for k in (rj2.json() or {}).get("keys", [])]
    r = post_token(port, exchange_pairs(peer.access_token(), scope="read"))
    n_exchanges += 1
    try:
        tok = jwt.decode((r.json() or {}).get("access_token", ""),
                         KeySet.import_key_set(rj2.json()), algorithms=["ES256"])
        new_kid = tok.header.get("kid")
    except Exception as e:  # noqa: BLE001
        new_kid = repr(e)
    tap.ok(len(kids) == 2 and kid_old in kids and new_kid in kids and new_kid != kid_old,
           "after rotate + SIGHUP: JWKS publishes old and new key, new tokens carry the new kid",
           (kids, kid_old, new_kid))
    r = ft.ferry("keys", "jwks", "--all", "--state-dir", state)
    with open(jwks_all, "w") as f:
        f.write(r.out)

    # ---- SIGTERM: an in-flight request is drained, new connections are refused -------------
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    late = b""
    try:
        part = b"grant_type=x"
        s.sendall(b"POST /v1/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Content-Type: " + FORM.encode() + b"\r\nContent-Length: %d\r\n\r\n"
                  % len(part) + part[:5])
        time.sleep(1)  # the request line has reached ferryd: the request is in flight
        proc.send_signal(signal.SIGTERM)
        refused_new = False
        end = time.monotonic() + 5
        while not refused_new and time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                time.sleep(0.05)
            except OSError:
                refused_new = True
        alive = proc.poll() is None
        s.sendall(part[5:])
        while True:
            c = s.recv(65536)
            if not c:
                break
            late += c
    finally:
        s.close()
    n_exchanges += 1
    tap.ok(alive and refused_new and late.startswith(b"HTTP/1.1 400")
           and b"unsupported_grant_type" in late,
           "SIGTERM: new connections refused, the request in flight is still answered",
           (alive, refused_new, late[:300]))
    try:
        rc = proc.wait(20)
    except subprocess.TimeoutExpired:
        rc = None
    tap.ok(rc == 0, "SIGTERM: ferryd exits 0", (rc, stderr_of(errlog)[-3000:]))
    tap.ok(not os.path.exists(sock), "the unix socket file is removed at exit")
    with open(audit) as f:
        recs = [json.loads(x) for x in f if x.strip()]
    tap.eq(len([x for x in recs if x.get("type") == "token.exchange"]), n_exchanges,
           "the audit log holds every exchange, once")
    r = ft.ferry("log", "verify", audit, "--jwks", jwks_all)
    tap.ok(r.rc == 0, "ferry log verify (not live) passes: the log was sealed at exit", r)


if __name__ == "__main__":
    ft.main("test_ferryd_exchange", body)
