#!/usr/bin/env python3
# TAP: SECURITY-TESTS sections A, B, C and G over HTTP against a real ferryd.
#
# ferryd runs on free loopback ports and trusts local issuers whose key sets are JWKS files made
# here (RSA-2048, P-256, P-384, Ed25519; allow-lists RS256 / ES256+ES384 / PS256 / EdDSA), plus
# one remote issuer serving an empty key set and one whose key set is unreachable. A policy
# grants every valid token of these issuers. Good tokens are signed with `cryptography`
# (ferrytest.Key); hostile tokens are built by hand from raw base64url and JSON strings.
#
# For every hostile request: the exact status and RFC error (400 invalid_request for an invalid
# subject token, RFC 8693 §2.2.2; 413/431 for oversize; 405/404), Cache-Control: no-store, no
# access_token, and an error body without token material, key ids, issuer names or validation
# internals (G3). After each group a valid exchange still succeeds. At the end (after SIGTERM)
# the audit log holds one token.exchange record per request that reached the exchange, the
# number of "allow" records equals the number of valid exchanges made, and `ferry log verify`
# passes.
#
# Cases: A1-A9, B1-B6, C1-C8, G1-G3 (G4 when per-address rate limits exist; G5 is the exchange
# unit test's allocation-failure run, not repeated here). A second ferryd (long idle timeout)
# takes 1,000 concurrent idle connections from 40 loopback source addresses, and has rate
# limits for G4 (429 slow_down with Retry-After, per address and per identity).
#
# Every group of hostile tokens also checks the reason ferryd logged for each request, so a
# token refused for an unintended reason (e.g. a typo in the test making every case
# "malformed") fails. HOSTILE_REASONS=1 prints each case's logged reason.
#
# Three defects this test found are fixed and checked here: two Content-Type headers (400),
# slowloris (limits.request_timeout closes a connection that trickles bytes), and connections
# past descriptor 1024 (libmicrohttpd runs on poll(2), not select(2)).
import base64
import contextlib
import datetime
import http.client
import json
import os
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402
from ferrytest import b64u, jdump  # noqa: E402
from ferrydtest import JWKSServer  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

FERRYD_BIN = os.environ.get("FERRYD_BIN") or os.path.join(ft.BUILDDIR, "ferryd")
WP_DIR = os.path.join(os.environ.get("FERRY_VECTORS") or "/work/shared/vectors", "wycheproof",
                      "testvectors_v1")
AUD = "ferry-hostile"
TARGET = "https://api.hostile-target.test"
GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
FORM = "application/x-www-form-urlencoded"
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
ED25519_L = 2 ** 252 + 27742317777372353535851937790883648493
REASON_NAMES = ("too_large", "malformed", "bad_header", "alg_not_allowed", "unknown_issuer",
                "issuer_unavailable", "unknown_kid", "key_mismatch", "bad_signature", "bad_typ",
                "missing_claim", "bad_claim", "expired", "not_yet_valid", "issued_in_future",
                "lifetime_too_long", "bad_audience", "bad_subject", "claim_mismatch",
                "replayed", "replay_cache_full")
G3_WORDS = ("signature", "stack", "kid", "jwks", "key", "traceback", "0x", ".c:", "errno")

ISS_RS = "https://rs.hostile.test"
ISS_ES = "https://es.hostile.test"
ISS_PS = "https://ps.hostile.test"
ISS_ED = "https://ed.hostile.test"
ISS_EMPTY = "https://empty.hostile.test"
ISS_DOWN = "https://down.hostile.test"
ISSUERS = (ISS_RS, ISS_ES, ISS_PS, ISS_ED, ISS_EMPTY, ISS_DOWN)


def now():
    return int(time.time())


def b64u_raw(data):
    """base64url without touching the input's type (bytes in, str out)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def form(pairs):
    return "&".join(urllib.parse.quote(k, safe="") + "=" + urllib.parse.quote(v, safe="")
                    for k, v in pairs)


def exchange_pairs(subject, scope="read", audience=TARGET):
    return [("grant_type", GRANT), ("subject_token", subject),
            ("subject_token_type", JWT_TYPE), ("audience", audience), ("scope", scope)]


class Server:
    """One ferryd: its port, process, audit log, and the bookkeeping for the final checks."""

    def __init__(self, port, proc, audit, state, errpath):
        self.port, self.proc, self.audit, self.state, self.errpath = \
            port, proc, audit, state, errpath
        # Our own descriptor for reading: ferryd's stderr is another open file (O_APPEND), so
        # seeking here never moves the offset ferryd writes at.
        self.reader = open(errpath, "r", errors="replace")
        self.reached = 0  # requests that reached ferry_exchange_token (one record each)
        self.issued = 0   # valid exchanges made (200 with a token)
        self.sent = 0  # requests sent to /v1/token that ferryd logs with that path
        self._pos = 0
        self._partial = ""
        self.token_lines = []  # ferryd's request log lines for /v1/token, in order

    def pump(self):
        """Read the request log lines ferryd wrote since the last call."""
        self.reader.seek(self._pos)
        chunk = self.reader.read()
        self._pos = self.reader.tell()
        text = self._partial + chunk
        lines = text.split("\n")
        self._partial = lines.pop()
        for line in lines:
            try:
                x = json.loads(line)
            except ValueError:
                if os.environ.get("HOSTILE_REASONS"):
                    print("# unparsable log line: " + repr(line[:300]))
                continue
            if x.get("msg") == "request" and x.get("path") == "/v1/token":
                self.token_lines.append(x)
            elif os.environ.get("HOSTILE_REASONS") and x.get("msg") == "request":
                print("# other request line: " + repr(line[:300]))

    def settle(self, quiet=0.05, timeout=5):
        """Until the lines of all requests sent so far are in (each is written just after its
        answer), so the next line is the next request's; then until none came for `quiet`
        seconds, for any request the count missed."""
        self.wait_token_lines(self.sent, timeout)
        end = time.monotonic() + timeout
        n, last = len(self.token_lines), time.monotonic()
        while time.monotonic() < end and time.monotonic() - last < quiet:
            time.sleep(0.01)
            self.pump()
            if len(self.token_lines) != n:
                n, last = len(self.token_lines), time.monotonic()

    def wait_token_lines(self, n, timeout=5):
        """Until n /v1/token request lines were logged (a line is written by the completion
        callback, just after the answer was sent)."""
        end = time.monotonic() + timeout
        delay = 0.0005
        while True:
            self.pump()
            if len(self.token_lines) >= n or time.monotonic() > end:
                return len(self.token_lines) >= n
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def stderr(self):
        with open(self.errpath, errors="replace") as f:
            return f.read()


def http_request(port, method, path, body=None, headers=None, source=None, timeout=20):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or []):
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        return ft.HTTPResult(r.status, r.read(), {k.lower(): v for k, v in r.getheaders()})
    finally:
        conn.close()


def post_form(srv, body, headers=(), path="/v1/token", source=None):
    if isinstance(body, list):
        body = form(body)
    if isinstance(body, str):
        body = body.encode()
    if path.split("?")[0] == "/v1/token":
        srv.sent += 1
    return http_request(srv.port, "POST", path, body,
                        [("Content-Type", FORM)] + list(headers), source=source)


def raw_exchange(port, head, timeout=10):
    """Send raw bytes, read until the server closes or a full header block arrived."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    got = b""
    try:
        s.sendall(head)
        while b"\r\n\r\n" not in got:
            c = s.recv(65536)
            if not c:
                break
            got += c
    except OSError as e:
        got += b"<" + repr(e).encode() + b">"
    finally:
        s.close()
    return got


# ---- tokens ---------------------------------------------------------------------------------

def claims_for(issuer, **over):
    t = now()
    c = {"iss": issuer, "sub": "user-1", "aud": AUD, "iat": t - 5, "nbf": t - 5, "exp": t + 300,
         "jti": b64u(os.urandom(12))}
    if issuer == ISS_ED:  # access_token profile (RFC 9068)
        c["client_id"] = "hostile-client"
    for k, v in over.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def header_for(key, alg, **over):
    h = {"alg": alg, "kid": key.kid}
    if key.kid and key.kid.startswith("ed"):
        h["typ"] = "at+jwt"
    for k, v in over.items():
        if v is None:
            h.pop(k, None)
        else:
            h[k] = v
    return h


def sign_raw(key, alg, header_raw, payload_raw, sig=None):
    si = (b64u_raw(header_raw) + "." + b64u_raw(payload_raw)).encode()
    if sig is None:
        sig = key.sign(alg, si)
    return si.decode() + "." + b64u_raw(sig)


def signed(key, alg, issuer, header=None, claims=None, **over):
    h = header if header is not None else header_for(key, alg)
    c = claims if claims is not None else claims_for(issuer, **over)
    return sign_raw(key, alg, jdump(h), jdump(c))


# ---- small loopback servers ------------------------------------------------------------------

def self_signed_cert(key):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")])
    t = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.priv.public_key()).serial_number(1)
            .not_valid_before(t - datetime.timedelta(days=1))
            .not_valid_after(t + datetime.timedelta(days=1))
            .sign(key.priv, hashes.SHA256()))
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


# ---- the test -------------------------------------------------------------------------------

def config_accepts(d, conf):
    p = ft.write_json(os.path.join(d, "probe.json"), conf)
    r = ft.run([FERRYD_BIN, "--check-config", "-c", p])
    return r.rc == 0, r


def start_ferryd(d, name, conf):
    cpath = ft.write_json(os.path.join(d, name + ".json"), conf)
    errpath = os.path.join(d, name + ".err")
    errlog = open(errpath, "ab")
    proc = subprocess.Popen([FERRYD_BIN, "-c", cpath], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=errlog, env=ft.clean_env())
    port = int(conf["listen"][0].rsplit(":", 1)[1])
    errlog.close()  # the child has its own copy
    srv = Server(port, proc, conf["audit_log"]["path"], conf["state_dir"], errpath)
    end = time.monotonic() + 30
    while time.monotonic() < end and proc.poll() is None:
        try:
            if http_request(port, "GET", "/healthz", timeout=2).status == 200:
                return srv
        except OSError:
            pass
        time.sleep(0.1)
    return srv


def stop_ferryd(srv):
    if srv.proc.poll() is None:
        srv.proc.send_signal(signal.SIGTERM)
        try:
            return srv.proc.wait(30)
        except subprocess.TimeoutExpired:
            srv.proc.kill()
            srv.proc.wait()
            return None
    return srv.proc.returncode


def body(tap):
    if not os.access(FERRYD_BIN, os.X_OK):
        tap.skip("ferryd hostile inputs", f"{FERRYD_BIN} not built")
        return
    # 1,000 client sockets here and as many in ferryd (which inherits the limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    keys = {
        "rs-1": ft.Key("RSA", "rs-1"), "rs-2": ft.Key("RSA", "rs-2"),
        "rs-ec": ft.Key("P-256", "rs-ec"),
        "es-1": ft.Key("P-256", "es-1"), "es-384": ft.Key("P-384", "es-384"),
        "ps-1": ft.Key("RSA", "ps-1"), "ps-rs": ft.Key("RSA", "ps-rs"),
        "ed-1": ft.Key("Ed25519", "ed-1"),
    }
    attacker = {"RSA": ft.Key("RSA", "rs-1"), "P-256": ft.Key("P-256", "es-1")}

    with ft.tempdir() as d, ft.Listener() as trap, \
            JWKSServer({"keys": []}) as empty_idp:
        down_port = ft.free_port()  # nothing listens there
        jw = {}
        for name, ks in (("rs", [(keys["rs-1"], None), (keys["rs-2"], None),
                                 (keys["rs-ec"], None)]),
                         ("es", [(keys["es-1"], None), (keys["es-384"], None)]),
                         ("ps", [(keys["ps-1"], "PS256"), (keys["ps-rs"], "RS256")]),
                         ("ed", [(keys["ed-1"], None)])):
            jw[name] = ft.write_json(os.path.join(d, name + ".jwks"),
                                     {"keys": [k.public_jwk(alg=a) for k, a in ks]})
        issuers = [
            {"issuer": ISS_RS, "audiences": [AUD], "algorithms": ["RS256"],
             "jwks_file": jw["rs"]},
            {"issuer": ISS_ES, "audiences": [AUD], "algorithms": ["ES256", "ES384"],
             "require_azp": True, "jwks_file": jw["es"]},
            {"issuer": ISS_PS, "audiences": [AUD], "algorithms": ["PS256"],
             "jwks_file": jw["ps"]},
            {"issuer": ISS_ED, "audiences": [AUD], "algorithms": ["EdDSA"],
             "profile": "access_token", "jwks_file": jw["ed"]},
            {"issuer": ISS_EMPTY, "audiences": [AUD], "algorithms": ["ES256"],
             "jwks_uri": f"http://127.0.0.1:{empty_idp.port}/jwks",
             "allow_http_loopback": True},
            {"issuer": ISS_DOWN, "audiences": [AUD], "algorithms": ["ES256"],
             "jwks_uri": f"http://127.0.0.1:{down_port}/jwks", "allow_http_loopback": True,
             "fetch": {"connect_timeout_ms": 500, "timeout_ms": 1000}},
        ]
        pol = os.path.join(d, "policies")
        os.mkdir(pol)
        ft.write_json(os.path.join(pol, "hostile.json"), {"version": 1, "policies": [
            {"id": f"p{i}", "match": {"issuer": iss, "subject_glob": "*"},
             "grant": {"scopes": ["read"], "audiences": [TARGET], "max_ttl": 600}}
            for i, iss in enumerate(ISSUERS)]})

        port = ft.free_port()
        conf = {
            "listen": [f"127.0.0.1:{port}"],
            "state_dir": os.path.join(d, "state"),
            "issuer": f"http://127.0.0.1:{port}",
            # one-time subject tokens (C7); rate limits off here, on in the second ferryd (G4)
            "token": {"default_ttl": 300, "max_ttl": 900, "one_time_subject": True},
            "rate_limits": {"per_address": {"rate": 0}, "per_identity": {"rate": 0}},
            "policies": pol,
            "audit_log": {"path": os.path.join(d, "audit.log"), "checkpoint_every": 200,
                          "sync": "checkpoint"},
            "limits": {"max_body": 65536, "max_header": 16384, "timeout": 2, "request_timeout": 3,
                       "connections": 256, "connections_per_ip": 64},
            "issuers": issuers,
        }
        ok, r = config_accepts(d, conf)
        tap.ok(ok, "--check-config accepts the hostile-test configuration", r)

        # B1: no issuer may allow an HMAC algorithm, so "HS256 in another issuer's allow-list"
        # cannot be configured at all.
        bad = dict(conf, issuers=[dict(issuers[0], algorithms=["RS256", "HS256"])])
        ok, r = config_accepts(d, bad)
        tap.ok(not ok and "HS256" in r.err,
               "B1: an issuer allow-list naming HS256 is a configuration error", r)

        srv = start_ferryd(d, "ferryd", conf)
        try:
            if not tap.ok(srv.proc.poll() is None, "ferryd starts", srv.stderr()[-3000:]):
                return
            run_cases(tap, srv, keys, attacker, trap, empty_idp)
        finally:
            rc = stop_ferryd(srv)
            srv.reader.close()
        tap.ok(rc == 0, "SIGTERM: ferryd exits 0 after all hostile input", rc)
        check_audit(tap, srv, "main ferryd")

        # ---- G2: 1,000 concurrent idle connections on a second ferryd -------------------------
        port2 = ft.free_port()
        conf2 = dict(conf, listen=[f"127.0.0.1:{port2}"], issuer=f"http://127.0.0.1:{port2}",
                     state_dir=os.path.join(d, "state2"),
                     audit_log={"path": os.path.join(d, "audit2.log"), "sync": "checkpoint"},
                     limits={"max_body": 65536, "timeout": 60, "request_timeout": 120,
                             "connections": 1100,
                             "connections_per_ip": 32})
        conf2["rate_limits"] = {"per_address": {"rate": 0.2, "burst": 4},
                                "per_identity": {"rate": 0.2, "burst": 3}}
        srv2 = start_ferryd(d, "ferryd2", conf2)
        try:
            if tap.ok(srv2.proc.poll() is None, "G2: a second ferryd (idle timeout 60 s, "
                      "1100 connections, 32 per address) starts", srv2.stderr()[-3000:]):
                idle_connections(tap, srv2, keys)
                rate_limits(tap, srv2, keys)
        finally:
            rc = stop_ferryd(srv2)
            srv2.reader.close()
        tap.ok(rc == 0, "G2: the second ferryd exits 0 on SIGTERM", rc)
        check_audit(tap, srv2, "second ferryd")


def check_audit(tap, srv, what):
    with open(srv.audit) as f:
        recs = [json.loads(x) for x in f if x.strip()]
    ex = [x for x in recs if x.get("type") == "token.exchange"]
    allow = [x for x in ex if x.get("decision") == "allow"]
    deny = [x for x in ex if x.get("decision") == "deny"]
    other = [x for x in ex if x.get("decision") not in ("allow", "deny")]
    tap.eq(len(ex), srv.reached,
           f"{what}: one token.exchange record per request that reached the exchange")
    tap.eq(len(allow), srv.issued,
           f"{what}: issued tokens (allow records) = valid exchanges made; nothing minted "
           "for hostile input")
    tap.ok(len(deny) + len(other) == srv.reached - srv.issued
           and all((x.get("details") or {}).get("error") for x in deny + other),
           f"{what}: every refused exchange has a refusal record naming its error",
           (len(deny), len(other), srv.reached, srv.issued))
    jwks_all = os.path.join(os.path.dirname(srv.audit), os.path.basename(srv.audit) + ".jwks")
    r = ft.ferry("keys", "jwks", "--all", "--state-dir", srv.state)
    with open(jwks_all, "w") as f:
        f.write(r.out)
    r = ft.ferry("log", "verify", srv.audit, "--jwks", jwks_all)
    tap.ok(r.rc == 0, f"{what}: ferry log verify passes on the sealed audit log", r)


class Checker:
    """The per-response checks, shared by every group."""

    def __init__(self, tap, srv, keys):
        self.tap, self.srv, self.keys = tap, srv, keys
        self.forbidden = [k for k in keys] + [k.replace("-", "") for k in keys] + \
            list(ISSUERS) + [i.split("//")[1] for i in ISSUERS]

    def body_clean(self, resp, token=None):
        """G3: no token material, key ids, issuer names or validation internals."""
        text = resp.body.decode("utf-8", "replace")
        low = text.lower()
        bad = [w for w in G3_WORDS + REASON_NAMES if w in low]
        bad += [k for k in self.forbidden if k.lower() in low]
        if token:
            for seg in token.split("."):
                if len(seg) >= 8 and seg in text:
                    bad.append("token segment")
                    break
        return bad

    def refused(self, resp, desc, status=400, error="invalid_request", token=None,
                reached=True, no_store=True):
        """One hostile request: exact status and error, no-store, no token, clean body."""
        if reached:
            self.srv.reached += 1
        doc = resp.json() if resp is not None else None
        doc = doc if isinstance(doc, dict) else {}
        bad = self.body_clean(resp, token) if resp is not None else ["no response"]
        good = (resp is not None and resp.status == status and doc.get("error") == error
                and "access_token" not in doc and b"access_token" not in resp.body
                and (not no_store or resp.headers.get("cache-control") == "no-store")
                and not bad)
        return self.tap.ok(good, f"{desc}: {status} {error}", (resp, bad))

    def many_refused(self, cases, desc, status=400, error="invalid_request", reasons=None):
        """Many tokens, one TAP line: every one refused exactly as expected. reasons: what the
        request log's reason (the exchange's internal reason, "subject_token: NAME: detail")
        may contain for them; each case's logged reason must contain one, so a case refused
        for an unintended reason shows up. Requests go one at a time, each waiting for its
        log line, so the lines pair up with the cases."""
        fails, wrong = [], []
        srv = self.srv
        t0 = time.monotonic()
        srv.settle()
        if os.environ.get("HOSTILE_REASONS"):
            self.tap.diag(f"settle {time.monotonic() - t0:.2f} s, sent {srv.sent}, "
                          f"lines {len(srv.token_lines)}")
        for label, tok in cases:
            n0 = len(srv.token_lines)
            resp = post_form(srv, exchange_pairs(tok))
            srv.reached += 1
            doc = resp.json()
            doc = doc if isinstance(doc, dict) else {}
            bad = self.body_clean(resp, tok)
            if not (resp.status == status and doc.get("error") == error
                    and b"access_token" not in resp.body
                    and resp.headers.get("cache-control") == "no-store" and not bad):
                fails.append((label, resp, bad))
            if not srv.wait_token_lines(n0 + 1):
                wrong.append((label, "no request log line"))
                continue
            reason = srv.token_lines[n0].get("reason", "")
            if os.environ.get("HOSTILE_REASONS"):
                self.tap.diag(f"  {label!r}: {reason}")
            if reasons is not None and not any(r in reason for r in reasons):
                wrong.append((label, reason))
        ok = self.tap.ok(not fails, f"{desc} ({len(cases)} requests): all {status} {error}",
                         "\n".join(repr(f) for f in fails[:10]))
        if reasons is not None:
            self.tap.ok(not wrong, f"{desc}: each logged reason is one of {', '.join(reasons)}",
                        "\n".join(repr(w) for w in wrong[:10]))
        return ok

    def valid(self, desc, key_name="es-1", source=None, sub="user-1"):
        """A valid exchange: 200 with a token (proves ferryd keeps serving)."""
        key = self.keys[key_name]
        alg = {"rs-1": "RS256", "es-1": "ES256", "ps-1": "PS256", "ed-1": "EdDSA"}[key_name]
        iss = {"rs": ISS_RS, "es": ISS_ES, "ps": ISS_PS, "ed": ISS_ED}[key_name[:2]]
        tok = signed(key, alg, iss, sub=sub)
        try:
            resp = post_form(self.srv, exchange_pairs(tok), source=source)
        except OSError as e:
            return self.tap.ok(False, f"{desc}: a valid exchange still succeeds", repr(e))
        self.srv.reached += 1
        doc = resp.json() or {}
        ok = resp.status == 200 and isinstance(doc.get("access_token"), str)
        if ok:
            self.srv.issued += 1
        return self.tap.ok(ok, f"{desc}: a valid exchange still succeeds", resp)


def run_cases(tap, srv, keys, attacker, trap, empty_idp):
    ck = Checker(tap, srv, keys)
    rs, es, es384, ps, ed = keys["rs-1"], keys["es-1"], keys["es-384"], keys["ps-1"], keys["ed-1"]
    for name, alg in (("rs-1", "RS256"), ("es-1", "ES256"), ("ps-1", "PS256"), ("ed-1", "EdDSA")):
        ck.valid(f"start: {alg} issuer", name)

    # ================= A1: size ===============================================================
    big = signed(rs, "RS256", ISS_RS, claims=claims_for(ISS_RS, pad="x" * 9000))
    ck.many_refused([("12 KiB token", big)], f"A1: a signed token of {len(big)} bytes (> 8 KiB)",
                    reasons=("subject_token over 8192 bytes",))
    # 1 MiB token: the 413 comes back on the headers alone (read it first: the server closes
    # the connection after answering, so the body's bytes are then refused by the socket).
    mib = form(exchange_pairs("eyJ" + "A" * (1 << 20))).encode()
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    got = b""
    try:
        sock.sendall(b"POST /v1/token HTTP/1.1\r\nHost: x\r\nContent-Type: " + FORM.encode()
                     + b"\r\nContent-Length: %d\r\n\r\n" % len(mib))
        while b"\r\n\r\n" not in got:
            c = sock.recv(65536)
            if not c:
                break
            got += c
        with contextlib.suppress(OSError):
            sock.sendall(mib)
    finally:
        sock.close()
    srv.sent += 1
    tap.ok(got.startswith(b"HTTP/1.1 413 ") and b"access_token" not in got,
           "A1: a 1 MiB token in the body (over limits.max_body): 413", got[:300])
    # 16 MiB: only the headers are sent; the 413 arriving proves the body was never awaited.
    got = raw_exchange(srv.port, b"POST /v1/token HTTP/1.1\r\nHost: x\r\nContent-Type: "
                       + FORM.encode() + b"\r\nContent-Length: 16777216\r\n\r\n")
    srv.sent += 1
    tap.ok(got.startswith(b"HTTP/1.1 413 "),
           "A1: Content-Length 16777216 with no body byte sent: 413 arrives (body not read)",
           got[:300])
    # Authorization header > 16 KiB (limits.max_header 16 KiB): 431 from libmicrohttpd.
    got = raw_exchange(srv.port, b"POST /v1/token HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                       + b"A" * 17000 + b"\r\nContent-Length: 0\r\n\r\n")
    tap.ok(got.startswith(b"HTTP/1.1 431 ") or got == b"" or b"Errno" in got,
           "A1: an Authorization header over 16 KiB: 431 (or the connection is closed)",
           got[:300])
    resp = post_form(srv, exchange_pairs("x"), headers=[("Authorization", "Bearer " + big)])
    ck.refused(resp, "A1: a 9 KiB token in an Authorization header (under max_header)",
               reached=False)
    ck.valid("after A1")

    # ================= A2: segments ===========================================================
    good = signed(rs, "RS256", ISS_RS)
    h, p, s = good.split(".")
    jwe_hdr = b64u(jdump({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": "rs-1"}))
    cases = [("2 segments", f"{h}.{p}"), ("4 segments", f"{h}.{p}.{s}.{s}"),
             ("5 segments", f"{h}.{p}.{s}.{s}.{s}"), ("trailing dot", good + "."),
             ("leading dot", "." + good), ("empty header", f".{p}.{s}"),
             ("empty payload", f"{h}..{s}"), ("empty signature", f"{h}.{p}."),
             ("only dots", ".."), ("single dot", "."), ("no dot", h + p + s),
             ("JSON serialization", json.dumps({"protected": h, "payload": p, "signature": s})),
             ("flattened JSON with header", json.dumps({"protected": h, "header": {"kid": "x"},
                                                        "payload": p, "signature": s})),
             ("general JSON", json.dumps({"payload": p, "signatures": [{"protected": h,
                                                                        "signature": s}]})),
             ("JWE shape", f"{jwe_hdr}.{b64u(os.urandom(256))}.{b64u(os.urandom(12))}."
                           f"{b64u(os.urandom(64))}.{b64u(os.urandom(16))}"),
             ("empty token", "")]
    # the empty value is "missing subject_token" (RFC 6749 §3.1: an empty value is absent)
    ck.many_refused(cases, "A2: wrong segment count, empty segments, JSON serialization, JWE",
                    reasons=("malformed", "subject_token not valid text", "no subject_token"))
    ck.valid("after A2")

    # ================= A3: base64url ==========================================================
    hdr_raw = jdump(header_for(rs, "RS256"))
    pl_raw = jdump(claims_for(ISS_RS))
    hb, pb = b64u_raw(hdr_raw), b64u_raw(pl_raw)
    si = f"{hb}.{pb}"
    sig = b64u_raw(rs.sign("RS256", si.encode()))
    std = base64.b64encode(rs.sign("RS256", si.encode())).decode()

    def resign(hb2, pb2):
        return f"{hb2}.{pb2}." + b64u_raw(rs.sign("RS256", f"{hb2}.{pb2}".encode()))

    # A payload whose base64url needs padding, so '=' can be appended.
    pad_pl = claims_for(ISS_RS)
    while len(jdump(pad_pl)) % 3 == 0:
        pad_pl["x"] = pad_pl.get("x", "") + "y"
    pad_b = b64u_raw(jdump(pad_pl))
    padded = pad_b + "=" * (-len(pad_b) % 4)
    # Non-canonical trailing bits: the last char of a segment with a partial group, +1.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    nc = pad_b[:-1] + alphabet[alphabet.index(pad_b[-1]) + 1]
    cases = [
        ("'=' padding (re-signed)", resign(hb, padded)),
        ("'=' padding on the signature", f"{si}.{sig}" + "=" * (-len(sig) % 4 or 4)),
        ("standard alphabet signature", f"{si}.{std.rstrip('=')}"),
        ("'+' in header", resign(hb[:3] + "+" + hb[4:], pb)),
        ("'/' in payload", resign(hb, pb[:5] + "/" + pb[6:])),
        ("space inside", f"{hb}.{pb[:10]} {pb[10:]}.{sig}"),
        ("newline inside", f"{hb}.{pb[:10]}\n{pb[10:]}.{sig}"),
        ("tab inside", f"{hb}\t.{pb}.{sig}"),
        ("'!' inside", f"{hb}.{pb[:10]}!{pb[11:]}.{sig}"),
        ("non-canonical trailing bits (re-signed)", resign(hb, nc)),
        ("leading space", " " + good), ("trailing space", good + " "),
        ("trailing newline", good + "\n"), ("leading CRLF", "\r\n" + good),
        ("UTF-8 BOM", "\ufeff" + good), ("NUL appended", good + "\x00"),
        ("percent-escaped in token", good.replace(".", "%2E", 1)),
        ("non-ASCII letter", good[:20] + "\u00e9" + good[21:]),
    ]
    # A segment of length 1 mod 4 is never valid base64url.
    one_mod4 = pb + "A" * ((1 - len(pb)) % 4)
    cases.append(("length = 1 mod 4 (re-signed)", resign(hb, one_mod4)))
    ck.many_refused(cases, "A3: base64url violations",
                    reasons=("malformed", "subject_token not valid text"))
    ck.valid("after A3")

    # ================= A4: header JSON ========================================================
    cl = jdump(claims_for(ISS_RS))

    def with_hdr(raw, payload=None):
        return sign_raw(rs, "RS256", raw, payload if payload is not None else jdump(
            claims_for(ISS_RS)))

    deep = b'{"alg":"RS256","kid":"rs-1","x":' + b"[" * 40 + b"]" * 40 + b"}"
    cases = [
        ("header an array", with_hdr(b'["RS256"]')), ("header a string", with_hdr(b'"RS256"')),
        ("header a number", with_hdr(b"1")), ("header null", with_hdr(b"null")),
        ("duplicate alg", with_hdr(b'{"alg":"RS256","alg":"RS256","kid":"rs-1"}')),
        ("duplicate kid", with_hdr(b'{"alg":"RS256","kid":"rs-2","kid":"rs-1"}')),
        ("\\u0000 in kid", with_hdr(b'{"alg":"RS256","kid":"rs-1\\u0000"}')),
        ("\\u0000 in a member name", with_hdr(b'{"alg":"RS256","kid":"rs-1","a\\u0000":1}')),
        ("invalid UTF-8", with_hdr(b'{"alg":"RS256","kid":"rs-1","x":"\xc3\x28"}')),
        ("overlong UTF-8", with_hdr(b'{"alg":"RS256","kid":"rs-1","x":"\xc0\xaf"}')),
        ("lone surrogate escape", with_hdr(b'{"alg":"RS256","kid":"rs-1","x":"\\ud800"}')),
        ("trailing garbage", with_hdr(b'{"alg":"RS256","kid":"rs-1"}x')),
        ("two objects", with_hdr(b'{"alg":"RS256","kid":"rs-1"}{}')),
        ("raw NUL", with_hdr(b'{"alg":"RS256","kid":"rs-1"}\x00')),
        ("raw NUL inside a string", with_hdr(b'{"alg":"RS256","kid":"rs-1","x":"a\x00b"}')),
        ("nesting 40 deep", with_hdr(deep)),
        ("single quotes", with_hdr(b"{'alg':'RS256','kid':'rs-1'}")),
        ("comment", with_hdr(b'{"alg":"RS256",/*c*/"kid":"rs-1"}')),
        ("trailing comma", with_hdr(b'{"alg":"RS256","kid":"rs-1",}')),
        ("empty header", with_hdr(b"")),
        ("payload: duplicate iss", with_hdr(jdump(header_for(rs, "RS256")),
                                            cl[:-1] + b',"iss":"' + ISS_RS.encode() + b'"}')),
        ("payload: \\u0000", with_hdr(jdump(header_for(rs, "RS256")),
                                      cl[:-1] + b',"x":"\\u0000"}')),
        ("payload: trailing garbage", with_hdr(jdump(header_for(rs, "RS256")), cl + b" x")),
        ("payload: an array", with_hdr(jdump(header_for(rs, "RS256")), b"[" + cl + b"]")),
        ("payload: nesting 40 deep", with_hdr(jdump(header_for(rs, "RS256")),
                                              cl[:-1] + b',"x":' + b"[" * 40 + b"]" * 40
                                              + b"}")),
    ]
    ck.many_refused(cases, "A4: header (and payload) JSON violations",
                    reasons=("malformed", "bad_header"))
    ck.valid("after A4")

    # ================= A5: alg ================================================================
    cases = []
    for alg in ("none", "None", "NONE", "nOnE"):
        hdr = jdump({"alg": alg, "kid": "rs-1"})
        cases.append((f"alg {alg}, empty signature", sign_raw(rs, "RS256", hdr, cl, sig=b"")))
        cases.append((f"alg {alg}, RS256 signature", sign_raw(rs, "RS256", hdr, cl)))
    for label, hdr in (("alg missing", b'{"kid":"rs-1"}'),
                       ("alg null", b'{"alg":null,"kid":"rs-1"}'),
                       ("alg a number", b'{"alg":256,"kid":"rs-1"}'),
                       ("alg an array", b'{"alg":["RS256"],"kid":"rs-1"}'),
                       ("alg an object", b'{"alg":{"RS256":1},"kid":"rs-1"}'),
                       ("alg true", b'{"alg":true,"kid":"rs-1"}'),
                       ("alg lowercase", b'{"alg":"rs256","kid":"rs-1"}'),
                       ("alg trailing space", b'{"alg":"RS256 ","kid":"rs-1"}'),
                       ("alg leading space", b'{"alg":" RS256","kid":"rs-1"}'),
                       ("alg with NUL", b'{"alg":"RS256\\u0000","kid":"rs-1"}'),
                       ("alg empty", b'{"alg":"","kid":"rs-1"}')):
        cases.append((label, sign_raw(rs, "RS256", hdr, cl)))
    # Real algorithms outside this issuer's allow-list (RS256 only), correctly signed.
    cases.append(("RS384 at an RS256-only issuer", signed(rs, "RS384", ISS_RS)))
    cases.append(("PS256 at an RS256-only issuer", signed(rs, "PS256", ISS_RS)))
    cases.append(("ES256 at an RS256-only issuer",
                  signed(keys["rs-ec"], "ES256", ISS_RS)))
    cases.append(("EdDSA at an ES-only issuer", sign_raw(ed, "EdDSA", jdump(
        {"alg": "EdDSA", "kid": "es-1"}), jdump(claims_for(ISS_ES)))))
    cases.append(("Ed25519 (RFC 9864 name)", sign_raw(ed, "EdDSA", jdump(
        {"alg": "Ed25519", "kid": "ed-1", "typ": "at+jwt"}), jdump(claims_for(ISS_ED)))))
    cases.append(("ES512", sign_raw(es, "ES256", jdump({"alg": "ES512", "kid": "es-1"}),
                                    jdump(claims_for(ISS_ES)))))
    ck.many_refused(cases, "A5: alg none (any case), missing, null, non-string, lowercase, "
                    "spaces, not allowed", reasons=("malformed", "alg_not_allowed"))
    ck.valid("after A5")

    # ================= A6: crit, b64, cty, nested, enc, zip ===================================
    inner = signed(rs, "RS256", ISS_RS)
    cases = []
    for label, extra in (("crit [exp]", {"crit": ["exp"], "exp": 1}),
                         ("crit []", {"crit": []}), ("crit a string", {"crit": "b64"}),
                         ("crit [b64] with b64 false", {"crit": ["b64"], "b64": False}),
                         ("b64 false alone", {"b64": False}), ("b64 true", {"b64": True}),
                         ("crit null", {"crit": None}), ("cty JWT", {"cty": "JWT"}),
                         ("cty jwt", {"cty": "jwt"}), ("enc A128GCM", {"enc": "A128GCM"}),
                         ("zip DEF", {"zip": "DEF"})):
        h = dict(header_for(rs, "RS256"))
        h.update(extra)
        if extra.get("crit", 0) is None:
            h["crit"] = None
        cases.append((label, sign_raw(rs, "RS256", jdump(h), jdump(claims_for(ISS_RS)))))
    nested_hdr = jdump(dict(header_for(rs, "RS256"), cty="JWT"))
    cases.append(("nested JWT (payload is a JWS, cty JWT)",
                  sign_raw(rs, "RS256", nested_hdr, inner.encode())))
    cases.append(("nested JWT without cty", sign_raw(rs, "RS256", jdump(header_for(rs, "RS256")),
                                                     inner.encode())))
    ck.many_refused(cases, "A6: crit, b64, cty JWT, nested JWT, enc, zip",
                    reasons=("bad_header", "malformed: claims are not valid JSON"))
    ck.valid("after A6")

    # ================= A7: key-location headers ===============================================
    trap_url = trap.url + "/jwks.json"
    atk_rs, atk_ec = attacker["RSA"], attacker["P-256"]
    x5c = self_signed_cert(atk_rs)
    cases = []
    for name, url in (("loopback trap", trap_url),
                      ("metadata address", "http://169.254.169.254/latest/meta-data/jwks"),
                      ("attacker URL", "https://attacker.example/jwks.json")):
        for member in ("jku", "x5u"):
            cases.append((f"{member} -> {name}", signed(atk_rs, "RS256", ISS_RS,
                                                        header=dict(header_for(rs, "RS256"),
                                                                    **{member: url}))))
            cases.append((f"{member} -> {name}, no kid",
                          signed(atk_rs, "RS256", ISS_RS,
                                 header={"alg": "RS256", member: url})))
    cases.append(("embedded jwk (attacker RSA key)",
                  signed(atk_rs, "RS256", ISS_RS,
                         header={"alg": "RS256", "jwk": atk_rs.public_jwk()})))
    cases.append(("embedded jwk with the issuer's kid",
                  signed(atk_rs, "RS256", ISS_RS,
                         header={"alg": "RS256", "kid": "rs-1", "jwk": atk_rs.public_jwk()})))
    cases.append(("embedded jwk (attacker EC key)",
                  signed(atk_ec, "ES256", ISS_ES,
                         header={"alg": "ES256", "jwk": atk_ec.public_jwk()})))
    cases.append(("x5c (attacker self-signed certificate)",
                  signed(atk_rs, "RS256", ISS_RS, header={"alg": "RS256", "x5c": [x5c]})))
    cases.append(("x5c with the issuer's kid",
                  signed(atk_rs, "RS256", ISS_RS,
                         header={"alg": "RS256", "kid": "rs-1", "x5c": [x5c]})))
    cases.append(("jku + jwk + x5u + x5c at once",
                  signed(atk_rs, "RS256", ISS_RS, header={
                      "alg": "RS256", "jku": trap_url, "x5u": trap_url, "jwk": atk_rs.public_jwk(),
                      "x5c": [x5c]})))
    # Also with the issuer's real key: the headers alone are refused.
    cases.append(("jku on a token signed by the issuer's key",
                  signed(rs, "RS256", ISS_RS, header=dict(header_for(rs, "RS256"), jku=trap_url))))
    ck.many_refused(cases, "A7: jku / x5u / jwk / x5c headers",
                    reasons=("bad_header",))
    tap.eq(trap.count, 0, "A7: the loopback trap named by jku/x5u received zero connections",
           trap.first_bytes)
    ck.valid("after A7")

    # ================= A8: Wycheproof JWS strings =============================================
    wp_cases = []
    for fname in ("json_web_signature_test.json", "json_web_crypto_test.json",
                  "json_web_key_test.json"):
        path = os.path.join(WP_DIR, fname)
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            doc = json.load(f)
        for g in doc.get("testGroups", []):
            for t in g.get("tests", []):
                tok = t.get("jws", t.get("jwe"))
                if isinstance(tok, dict):
                    tok = json.dumps(tok, separators=(",", ":"))
                if isinstance(tok, str):
                    wp_cases.append((f"{fname} tcId {t.get('tcId')}", tok))
    if wp_cases:
        # The payloads are not JWT claim sets of a trusted issuer (e.g. "foo"), so over HTTP
        # every one - valid-labelled or not - must be refused; the labels themselves are
        # matched by tests/unit/test_wycheproof.c, with the deviations 367/370/372/373.
        ck.many_refused(wp_cases, "A8: every Wycheproof JWS/JWE/JWK-set token string")
    else:
        tap.skip("A8: Wycheproof JWS strings", f"{WP_DIR} not found")
    ck.valid("after A8")

    # ================= A9: deterministic mutation =============================================
    base = signed(es, "ES256", ISS_ES)
    mutants = set()
    seg_ends = [i - 1 for i, c in enumerate(base) if c == "."] + [len(base) - 1]
    positions = sorted({0, 5, seg_ends[0], seg_ends[0] + 2, seg_ends[1] - 1, seg_ends[1] + 1,
                        len(base) - 1})
    for pos in positions:
        for c in alphabet:
            m = base[:pos] + c + base[pos + 1:]
            if m != base:
                mutants.add(m)
    for n in (1, 2, 3, 4, 10, 43, 64, 85, len(base) // 2):
        mutants.add(base[:-n])
    mutants.add(base[:seg_ends[1] + 1])
    mutants.add(base[:seg_ends[1] + 2])
    segs = base.split(".")
    raw = [base64.urlsafe_b64decode(x + "=" * (-len(x) % 4)) for x in segs]
    for si_, seg in enumerate(raw):
        for bit in range(0, len(seg) * 8, max(1, len(seg) * 8 // 14)):
            b = bytearray(seg)
            b[bit // 8] ^= 1 << (bit % 8)
            parts = [b64u_raw(x) for x in raw]
            parts[si_] = b64u_raw(bytes(b))
            m = ".".join(parts)
            if m != base:
                mutants.add(m)
    mutants.discard(base)
    ordered = sorted(mutants)
    t0 = time.monotonic()
    ck.many_refused([(f"mutant {i}", m) for i, m in enumerate(ordered)],
                    "A9: single-character substitutions, truncations and bit flips of a "
                    "valid ES256 token")
    tap.diag(f"A9: {len(ordered)} mutants in {time.monotonic() - t0:.1f} s")
    resp = post_form(srv, exchange_pairs(base))
    srv.reached += 1
    if resp.status == 200:
        srv.issued += 1
    tap.ok(resp.status == 200, "A9: the unmutated token is accepted", resp)
    ck.valid("after A9")

    # ================= B1: HMAC with the public key ===========================================
    pub = rs.priv.public_key()
    reps = {
        "PEM": pub.public_bytes(serialization.Encoding.PEM,
                                serialization.PublicFormat.SubjectPublicKeyInfo),
        "PKCS1 PEM": pub.public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.PKCS1),
        "DER": pub.public_bytes(serialization.Encoding.DER,
                                serialization.PublicFormat.SubjectPublicKeyInfo),
        "JWK JSON": jdump(rs.public_jwk()),
        "modulus": pub.public_numbers().n.to_bytes(256, "big"),
        "n base64url": rs.public_jwk()["n"].encode(),
        "empty key": b"",
    }
    cases = []
    for alg in ("HS256", "HS384", "HS512"):
        for rname, secret in reps.items():
            if alg != "HS256" and rname not in ("PEM", "empty key"):
                continue
            hdr = jdump({"alg": alg, "kid": "rs-1"})
            si_b = (b64u_raw(hdr) + "." + b64u_raw(jdump(claims_for(ISS_RS)))).encode()
            cases.append((f"{alg} keyed with {rname}",
                          si_b.decode() + "." + b64u_raw(ft.hs_sign(alg, secret, si_b))))
    hdr = jdump({"alg": "HS256", "kid": "es-1"})
    ec_pub = es.priv.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    si_b = (b64u_raw(hdr) + "." + b64u_raw(jdump(claims_for(ISS_ES)))).encode()
    cases.append(("HS256 keyed with the EC issuer's PEM",
                  si_b.decode() + "." + b64u_raw(ft.hs_sign("HS256", ec_pub, si_b))))
    ck.many_refused(cases, "B1: HS256/384/512 keyed with the issuer's public key, empty key",
                    reasons=("alg_not_allowed",))
    ck.valid("after B1")

    # ================= B2: alg vs key =========================================================
    cases = [
        ("RS256 on an EC kid", sign_raw(rs, "RS256", jdump({"alg": "RS256", "kid": "rs-ec"}),
                                        jdump(claims_for(ISS_RS)))),
        ("PS256 on a key declared RS256", sign_raw(keys["ps-rs"], "PS256", jdump(
            {"alg": "PS256", "kid": "ps-rs"}), jdump(claims_for(ISS_PS)))),
        ("ES256 with a P-384 key", sign_raw(es384, "ES384", jdump(
            {"alg": "ES256", "kid": "es-384"}), jdump(claims_for(ISS_ES)))),
        ("ES256 header, P-384 kid, P-256 signature", sign_raw(es, "ES256", jdump(
            {"alg": "ES256", "kid": "es-384"}), jdump(claims_for(ISS_ES)))),
        ("ES384 with a P-256 key", sign_raw(es, "ES256", jdump(
            {"alg": "ES384", "kid": "es-1"}), jdump(claims_for(ISS_ES)))),
        ("ES384 on a P-256 kid, ES384-size signature", sign_raw(es384, "ES384", jdump(
            {"alg": "ES384", "kid": "es-1"}), jdump(claims_for(ISS_ES)))),
    ]
    ck.many_refused(cases, "B2: alg does not fit the key", reasons=("key_mismatch",))
    # ES384 with its own P-384 key is fine (the issuer allows it): the binding, not the alg,
    # refused the cases above.
    tok = sign_raw(es384, "ES384", jdump({"alg": "ES384", "kid": "es-384"}),
                   jdump(claims_for(ISS_ES)))
    resp = post_form(srv, exchange_pairs(tok))
    srv.reached += 1
    srv.issued += resp.status == 200
    tap.ok(resp.status == 200, "B2: control: ES384 with the P-384 key is accepted", resp)

    # ================= B3: ECDSA r/s ==========================================================
    hdr = jdump(header_for(es, "ES256"))

    def es_tok(sig_bytes, c=None):
        return sign_raw(es, "ES256", hdr, jdump(c or claims_for(ISS_ES)), sig=sig_bytes)

    c_es = claims_for(ISS_ES)
    si_b = (b64u_raw(hdr) + "." + b64u_raw(jdump(c_es))).encode()
    sig = es.sign("ES256", si_b)
    r_, s_ = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")

    def rs_bytes(r, s, size=32):
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")

    cases = []
    for label, (r, s) in (("r=0", (0, s_)), ("s=0", (r_, 0)), ("r=s=0", (0, 0)),
                          ("r=1", (1, s_)), ("s=1", (r_, 1)), ("r=n-1", (P256_N - 1, s_)),
                          ("s=n-1", (r_, P256_N - 1)), ("r=n", (P256_N, s_)),
                          ("s=n", (r_, P256_N)), ("s=n+s", (r_, P256_N + s_)),
                          ("r=n+r", (P256_N + r_, s_)), ("s=2^256-1", (r_, 2 ** 256 - 1))):
        if r < 2 ** 256 and s < 2 ** 256:
            cases.append((label, es_tok(rs_bytes(r, s), c_es)))
    cases += [
        ("DER-encoded signature", es_tok(encode_dss_signature(r_, s_), c_es)),
        ("63 bytes", es_tok(sig[:63], c_es)), ("65 bytes", es_tok(sig + b"\x00", c_es)),
        ("65 bytes, leading zero", es_tok(b"\x00" + sig, c_es)),
        ("empty", es_tok(b"", c_es)), ("96 bytes (P-384 size)", es_tok(sig + sig[:32], c_es)),
        ("r and s swapped", es_tok(sig[32:] + sig[:32], c_es)),
    ]
    ck.many_refused(cases, "B3: ECDSA r/s out of range, DER, wrong length",
                    reasons=("bad_signature", "malformed"))
    ck.valid("after B3")

    # ================= B4: Ed25519 and RSA lengths ============================================
    ed_hdr = jdump(header_for(ed, "EdDSA"))
    c_ed = claims_for(ISS_ED)
    si_b = (b64u_raw(ed_hdr) + "." + b64u_raw(jdump(c_ed))).encode()
    esig = ed.sign("EdDSA", si_b)
    S = int.from_bytes(esig[32:], "little")
    cases = [
        ("Ed25519 S+L (S >= L)", sign_raw(ed, "EdDSA", ed_hdr, jdump(c_ed),
                                          sig=esig[:32] + (S + ED25519_L).to_bytes(32, "little"))),
        ("Ed25519 S=L", sign_raw(ed, "EdDSA", ed_hdr, jdump(c_ed),
                                 sig=esig[:32] + ED25519_L.to_bytes(32, "little"))),
        ("Ed25519 all zero", sign_raw(ed, "EdDSA", ed_hdr, jdump(c_ed), sig=b"\x00" * 64)),
        ("Ed25519 truncated to 63", sign_raw(ed, "EdDSA", ed_hdr, jdump(c_ed), sig=esig[:63])),
        ("Ed25519 65 bytes", sign_raw(ed, "EdDSA", ed_hdr, jdump(c_ed), sig=esig + b"\x00")),
        ("Ed25519 R only", sign_raw(ed, "EdDSA", ed_hdr, jdump(c_ed), sig=esig[:32])),
    ]
    rh = jdump(header_for(rs, "RS256"))
    c_rs = claims_for(ISS_RS)
    si_b = (b64u_raw(rh) + "." + b64u_raw(jdump(c_rs))).encode()
    rsig = rs.sign("RS256", si_b)
    cases += [
        ("RSA 255 bytes", sign_raw(rs, "RS256", rh, jdump(c_rs), sig=rsig[1:])),
        ("RSA 257 bytes (leading zero)", sign_raw(rs, "RS256", rh, jdump(c_rs),
                                                  sig=b"\x00" + rsig)),
        ("RSA 257 bytes (trailing zero)", sign_raw(rs, "RS256", rh, jdump(c_rs),
                                                   sig=rsig + b"\x00")),
        ("RSA 512 bytes", sign_raw(rs, "RS256", rh, jdump(c_rs), sig=rsig + rsig)),
        ("RSA signature = modulus", sign_raw(rs, "RS256", rh, jdump(c_rs),
                                             sig=rs.priv.public_key().public_numbers().n
                                             .to_bytes(256, "big"))),
        ("RSA all zero", sign_raw(rs, "RS256", rh, jdump(c_rs), sig=b"\x00" * 256)),
        ("RSA one", sign_raw(rs, "RS256", rh, jdump(c_rs), sig=(1).to_bytes(256, "big"))),
    ]
    ck.many_refused(cases, "B4: Ed25519 S >= L, zero, truncated; RSA signature length != modulus",
                    reasons=("bad_signature",))
    # The untouched Ed25519 token of the same claims is valid (control).
    resp = post_form(srv, exchange_pairs(sign_raw(ed, "EdDSA", ed_hdr, jdump(c_ed), sig=esig)))
    srv.reached += 1
    srv.issued += resp.status == 200
    tap.ok(resp.status == 200, "B4: control: the untouched EdDSA token is accepted", resp)

    # ================= B5: PSS salt length ====================================================
    ph = jdump(header_for(ps, "PS256"))
    cases = []
    for salt in (0, 20, 31, 33, 64, padding.PSS.MAX_LENGTH):
        c_ps = claims_for(ISS_PS)
        si_b = (b64u_raw(ph) + "." + b64u_raw(jdump(c_ps))).encode()
        sgn = ps.priv.sign(si_b, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                             salt_length=salt), hashes.SHA256())
        label = f"PS256 salt {salt if isinstance(salt, int) else 'max'}"
        cases.append((label, si_b.decode() + "." + b64u_raw(sgn)))
    c_ps = claims_for(ISS_PS)
    si_b = (b64u_raw(ph) + "." + b64u_raw(jdump(c_ps))).encode()
    sgn = ps.priv.sign(si_b, padding.PSS(mgf=padding.MGF1(hashes.SHA1()), salt_length=32),
                       hashes.SHA256())
    cases.append(("PS256 with MGF1-SHA1", si_b.decode() + "." + b64u_raw(sgn)))
    cases.append(("PS256 with a PKCS#1 v1.5 signature", sign_raw(ps, "RS256", ph, jdump(c_ps))))
    ck.many_refused(cases, "B5: PS256 with a salt length other than 32, MGF1 hash mismatch",
                    reasons=("bad_signature",))
    ck.valid("after B5", "ps-1")

    # ================= B6: key lookup failure =================================================
    before = empty_idp.count
    cases = [
        ("unknown kid", signed(rs, "RS256", ISS_RS, header={"alg": "RS256", "kid": "nope"})),
        ("kid empty string", signed(rs, "RS256", ISS_RS, header={"alg": "RS256", "kid": ""})),
        ("kid a number", signed(rs, "RS256", ISS_RS, header={"alg": "RS256", "kid": 1})),
        ("kid null", signed(rs, "RS256", ISS_RS, header={"alg": "RS256", "kid": None})),
        ("no kid, two RS256 keys", signed(rs, "RS256", ISS_RS, header={"alg": "RS256"})),
        ("kid very long", signed(rs, "RS256", ISS_RS, header={"alg": "RS256",
                                                              "kid": "k" * 2000})),
        ("empty remote key set", signed(es, "ES256", ISS_EMPTY)),
        ("empty remote key set, no kid", signed(es, "ES256", ISS_EMPTY,
                                                header={"alg": "ES256"})),
    ]
    ck.many_refused(cases, "B6: unknown kid, kid of the wrong type, empty remote key set",
                    reasons=("unknown_kid", "malformed", "bad_header"))
    tap.ok(empty_idp.count - before <= 1,
           "B6: unknown kids at the empty set's issuer cost at most one fetch (cooldown)",
           empty_idp.count - before)
    resp = post_form(srv, exchange_pairs(signed(es, "ES256", ISS_DOWN)))
    ck.refused(resp, "B6: an issuer whose key set is unreachable", 503,
               "temporarily_unavailable", token=None)
    ck.valid("after B6")

    # ================= C1: exp ================================================================
    t = now()
    cases = []
    for label, over in (("exp 120 s past (leeway 60)", {"exp": t - 120}),
                        ("exp missing", {"exp": None}), ("exp a string", {"exp": str(t + 300)}),
                        ("exp negative", {"exp": -1}), ("exp a real", {"exp": t + 300.5}),
                        ("exp 1e300", {"exp": 1e300}), ("exp true", {"exp": True}),
                        ("exp null", {"exp": None, "x": 0}), ("exp an array", {"exp": [t + 300]}),
                        ("exp far future (10 days)", {"exp": t + 864000}),
                        ("exp int64 max", {"exp": 2 ** 63 - 1}), ("exp 2^64", {"exp": 2 ** 64}),
                        ("exp 2^70", {"exp": 2 ** 70}), ("exp 0", {"exp": 0}),
                        ("exp before iat", {"exp": t - 10, "iat": t})):
        cl_ = claims_for(ISS_RS, **over)
        if label == "exp null":
            cl_["exp"] = None
        cases.append((label, signed(rs, "RS256", ISS_RS, claims=cl_)))
    # 1e300 as a JSON text, not Python's repr (1e+300)
    cases.append(("exp 1e300 literal", sign_raw(rs, "RS256", jdump(header_for(rs, "RS256")),
                                                jdump(claims_for(ISS_RS, exp=0)).replace(
                                                    b'"exp":0', b'"exp":1e300'))))
    cases.append(("exp -0", sign_raw(rs, "RS256", jdump(header_for(rs, "RS256")),
                                     jdump(claims_for(ISS_RS, exp=0)).replace(
                                         b'"exp":0', b'"exp":-0'))))
    cases.append(("exp 99999999999999999999999", sign_raw(
        rs, "RS256", jdump(header_for(rs, "RS256")),
        jdump(claims_for(ISS_RS, exp=0)).replace(b'"exp":0', b'"exp":99999999999999999999999'))))
    ck.many_refused(cases, "C1: exp past, missing, wrong type, negative, far future, int64 max, "
                    "1e300", reasons=("expired", "missing_claim", "bad_claim", "lifetime_too_long"))
    ck.valid("after C1")

    # ================= C2: nbf, iat ===========================================================
    t = now()
    cases = [(label, signed(rs, "RS256", ISS_RS, **over)) for label, over in (
        ("nbf now+600", {"nbf": t + 600}), ("iat now+600", {"iat": t + 600, "exp": t + 900}),
        ("iat missing", {"iat": None}), ("iat a string", {"iat": str(t)}),
        ("nbf a string", {"nbf": str(t)}), ("iat negative", {"iat": -5}),
        ("nbf 1e300", {"nbf": 1e300}))]
    ck.many_refused(cases, "C2: nbf and iat in the future, iat missing or of a wrong type",
                    reasons=("not_yet_valid", "issued_in_future", "missing_claim", "bad_claim"))
    ck.valid("after C2")

    # ================= C3: iss ================================================================
    trap_before = trap.count
    cases = [(label, signed(rs, "RS256", ISS_RS, iss=v)) for label, v in (
        ("iss trailing slash", ISS_RS + "/"), ("iss upper case", ISS_RS.upper()),
        ("iss host upper case", ISS_RS.replace("rs.", "RS.")),
        ("iss homoglyph (Cyrillic s)", ISS_RS.replace("rs.", "r\u0455.")),
        ("iss leading space", " " + ISS_RS), ("iss trailing space", ISS_RS + " "),
        ("iss http", ISS_RS.replace("https", "http")), ("iss with NUL", ISS_RS + "\x00"),
        ("iss a number", 123), ("iss an array", [ISS_RS]), ("iss an object", {"iss": ISS_RS}),
        ("iss empty", ""), ("iss missing", None),
        ("unknown issuer at the loopback trap", trap.url),
        ("unknown issuer", "https://unknown.hostile.test"))]
    cases.append(("iss prefix of a trusted one", signed(rs, "RS256", ISS_RS,
                                                        iss=ISS_RS[:-1])))
    ck.many_refused(cases, "C3: iss differs by a byte, has the wrong type, or is unknown",
                    reasons=("unknown_issuer", "malformed: claims are not valid JSON"))
    tap.eq(trap.count - trap_before, 0,
           "C3: an unknown issuer at the loopback trap caused no discovery fetch")
    ck.valid("after C3")

    # ================= C4: aud ================================================================
    cases = [(label, signed(es, "ES256", ISS_ES, aud=v) if v != "absent" else
              signed(es, "ES256", ISS_ES, aud=None)) for label, v in (
        ("aud absent", "absent"), ("aud empty string", ""), ("aud empty array", []),
        ("aud a number", 7), ("aud an object", {"aud": AUD}), ("aud null-like array", [None]),
        ("aud other", "someone-else"), ("aud array without us", ["a", "b"]),
        ("aud upper case", AUD.upper()), ("aud leading space", " " + AUD),
        ("aud trailing space", AUD + " "), ("aud array of a number", [1]),
        ("several audiences, no azp (require_azp)", [AUD, "other"]))]
    ck.many_refused(cases, "C4: aud absent, empty, wrong type, not us, case/space variants, "
                    "several without azp", reasons=("bad_audience",))
    tok = signed(es, "ES256", ISS_ES, aud=[AUD, "other"], azp="other")
    resp = post_form(srv, exchange_pairs(tok))
    srv.reached += 1
    srv.issued += resp.status == 200
    tap.ok(resp.status == 200, "C4: control: several audiences with azp are accepted", resp)

    # ================= C5: sub ================================================================
    cases = [(label, signed(rs, "RS256", ISS_RS, sub=v)) for label, v in (
        ("sub missing", None), ("sub empty", ""), ("sub a number", 42), ("sub an array", ["a"]),
        ("sub an object", {"a": 1}), ("sub true", True), ("sub with NUL", "a\x00b"),
        ("sub with a newline", "a\nb"), ("sub 600 bytes", "s" * 600))]
    cl_ = jdump(claims_for(ISS_RS))
    cases.append(("sub duplicated", sign_raw(rs, "RS256", jdump(header_for(rs, "RS256")),
                                             cl_[:-1] + b',"sub":"root"}')))
    cases.append(("exp duplicated", sign_raw(rs, "RS256", jdump(header_for(rs, "RS256")),
                                             cl_[:-1] + b',"exp":99}')))
    ck.many_refused(cases, "C5: sub missing, empty, non-string, duplicate claim names",
                    reasons=("missing_claim", "bad_subject", "duplicate object key",
                             "not allowed", "sub too long or not printable"))
    ck.valid("after C5")

    # ================= C6: typ confusion ======================================================
    cases = [
        ("at+jwt at an id_token issuer", signed(rs, "RS256", ISS_RS,
                                                header=dict(header_for(rs, "RS256"),
                                                            typ="at+jwt"))),
        ("application/at+jwt at an id_token issuer",
         signed(rs, "RS256", ISS_RS, header=dict(header_for(rs, "RS256"),
                                                 typ="application/at+jwt"))),
        ("dpop+jwt", signed(rs, "RS256", ISS_RS, header=dict(header_for(rs, "RS256"),
                                                             typ="dpop+jwt"))),
        ("logout+jwt", signed(rs, "RS256", ISS_RS, header=dict(header_for(rs, "RS256"),
                                                               typ="logout+jwt"))),
        ("JOSE", signed(rs, "RS256", ISS_RS, header=dict(header_for(rs, "RS256"), typ="JOSE"))),
        ("typ a number", signed(rs, "RS256", ISS_RS, header=dict(header_for(rs, "RS256"),
                                                                 typ=1))),
        ("plain JWT at an access_token issuer", signed(ed, "EdDSA", ISS_ED,
                                                       header=dict(header_for(ed, "EdDSA"),
                                                                   typ="JWT"))),
        ("no typ at an access_token issuer", signed(ed, "EdDSA", ISS_ED,
                                                    header={"alg": "EdDSA", "kid": "ed-1"})),
        ("at+jwt without client_id", signed(ed, "EdDSA", ISS_ED, client_id=None)),
        ("at+jwt without jti", signed(ed, "EdDSA", ISS_ED, jti=None)),
    ]
    # A token ferryd minted, presented back as a subject token: its issuer (ferryd) is not
    # trusted by ferryd.
    tok = signed(rs, "RS256", ISS_RS)
    resp = post_form(srv, exchange_pairs(tok))
    srv.reached += 1
    srv.issued += resp.status == 200
    minted = (resp.json() or {}).get("access_token", "")
    tap.ok(resp.status == 200 and minted, "C6: a valid exchange (its token is reused below)",
           resp)
    if minted:
        cases.append(("a ferryd-minted token presented upstream", minted))
    ck.many_refused(cases, "C6: typ confusion",
                    reasons=("bad_typ", "malformed", "missing_claim", "unknown_issuer"))
    for label, tok in (("subject_token_type id_token for an at+jwt",
                        signed(ed, "EdDSA", ISS_ED)),
                       ("subject_token_type access_token for an ID token",
                        signed(rs, "RS256", ISS_RS))):
        ttype = ("urn:ietf:params:oauth:token-type:id_token" if "id_token for" in label
                 else "urn:ietf:params:oauth:token-type:access_token")
        pairs = exchange_pairs(tok)
        pairs[2] = ("subject_token_type", ttype)
        ck.refused(post_form(srv, pairs), f"C6: {label}", token=tok)
    ck.valid("after C6")

    # ================= C7: replay =============================================================
    tok = signed(rs, "RS256", ISS_RS)
    r1 = post_form(srv, exchange_pairs(tok))
    srv.reached += 1
    srv.issued += r1.status == 200
    tap.ok(r1.status == 200, "C7: a fresh token is accepted the first time", r1)
    ck.many_refused([("the same token again", tok)], "C7: the same token a second time",
                    reasons=("replayed",))
    # The malleated ECDSA pair (r, n-s): a second valid signature of the same claims.
    c_es = claims_for(ISS_ES)
    hdr = jdump(header_for(es, "ES256"))
    si_b = (b64u_raw(hdr) + "." + b64u_raw(jdump(c_es))).encode()
    sig = es.sign("ES256", si_b)
    r_, s_ = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    t_orig = si_b.decode() + "." + b64u_raw(sig)
    t_mall = si_b.decode() + "." + b64u_raw(rs_bytes(r_, P256_N - s_))
    r1 = post_form(srv, exchange_pairs(t_mall))
    srv.reached += 1
    srv.issued += r1.status == 200
    tap.ok(r1.status == 200, "C7: the malleated ECDSA signature (r, n-s) is accepted once", r1)
    ck.many_refused([("original (r, s), same jti", t_orig),
                     ("malleated again", t_mall)],
                    "C7: then the original (r, s) and the malleated one again: replays",
                    reasons=("replayed",))
    ck.valid("after C7")

    # ================= C8: cross-issuer key use ===============================================
    cases = [
        ("RS issuer, kid of the PS issuer's key, signed by it",
         sign_raw(ps, "RS256", jdump({"alg": "RS256", "kid": "ps-1"}),
                  jdump(claims_for(ISS_RS)))),
        ("RS issuer, kid of the PS issuer's RS256 key, signed by it",
         sign_raw(keys["ps-rs"], "RS256", jdump({"alg": "RS256", "kid": "ps-rs"}),
                  jdump(claims_for(ISS_RS)))),
        ("RS issuer, rs-1 kid, signed by the PS issuer's key",
         sign_raw(ps, "RS256", jdump({"alg": "RS256", "kid": "rs-1"}),
                  jdump(claims_for(ISS_RS)))),
        ("ES issuer, kid of the RS issuer's EC key, signed by it",
         sign_raw(keys["rs-ec"], "ES256", jdump({"alg": "ES256", "kid": "rs-ec"}),
                  jdump(claims_for(ISS_ES, azp=None)))),
        ("ES issuer, no kid, signed by the RS issuer's EC key",
         sign_raw(keys["rs-ec"], "ES256", jdump({"alg": "ES256"}),
                  jdump(claims_for(ISS_ES)))),
        ("RS issuer, rs-2 kid, signed by rs-1", sign_raw(rs, "RS256", jdump(
            {"alg": "RS256", "kid": "rs-2"}), jdump(claims_for(ISS_RS)))),
    ]
    ck.many_refused(cases, "C8: a key of another issuer (or another kid)",
                    reasons=("unknown_kid", "bad_signature"))
    ck.valid("after C8")

    # ================= G1: credentials in the wrong place =====================================
    tok = signed(rs, "RS256", ISS_RS)
    pairs = exchange_pairs(tok)
    g1 = [
        ("two Authorization headers", [("Authorization", "Bearer " + tok),
                                       ("Authorization", "Bearer " + tok)], "/v1/token", pairs),
        ("Bearer header with the token, no body token",
         [("Authorization", "Bearer " + tok)], "/v1/token", pairs[:1] + pairs[2:]),
        ("lower-case bearer scheme", [("Authorization", "bearer " + tok)], "/v1/token",
         pairs[:1] + pairs[2:]),
        ("Basic scheme", [("Authorization", "Basic " + base64.b64encode(b"a:b").decode())],
         "/v1/token", pairs),
        ("DPoP scheme", [("Authorization", "DPoP " + tok)], "/v1/token", pairs),
        ("empty Authorization", [("Authorization", "")], "/v1/token", pairs),
        ("token in header and body", [("Authorization", "Bearer " + tok)], "/v1/token", pairs),
        ("token in the query string", [], "/v1/token?subject_token=" + tok,
         pairs[:1] + pairs[2:]),
        ("token in query and body", [], "/v1/token?subject_token=" + tok, pairs),
        ("access_token in the query", [], "/v1/token?access_token=" + tok, pairs),
    ]
    for label, hdrs, path, prs in g1:
        resp = post_form(srv, prs, headers=hdrs, path=path)
        ck.refused(resp, f"G1: {label}", token=tok, reached=False)
    # Other wrong requests at the HTTP layer.
    resp = http_request(srv.port, "GET", "/v1/token?subject_token=" + tok)
    tap.ok(resp.status == 405 and resp.headers.get("allow") == "POST"
           and b"access_token" not in resp.body and not ck.body_clean(resp, tok),
           "G1: GET with the token in the query: 405 with Allow: POST", resp)
    resp = http_request(srv.port, "PUT", "/v1/token", form(pairs).encode(),
                        [("Content-Type", FORM)])
    tap.ok(resp.status == 405 and not ck.body_clean(resp, tok), "G1: PUT: 405", resp)
    resp = post_form(srv, pairs, path="/v1/token/")
    tap.ok(resp.status == 404 and (resp.json() or {}).get("error") == "not_found"
           and not ck.body_clean(resp, tok), "G1: POST /v1/token/ (trailing slash): 404", resp)
    resp = http_request(srv.port, "POST", "/v1/token", json.dumps(dict(pairs)).encode(),
                        [("Content-Type", "application/json")])
    ck.refused(resp, "G1: a JSON body", token=tok, reached=False)
    resp = http_request(srv.port, "POST", "/v1/token", form(pairs).encode(),
                        [("Content-Type", FORM), ("Content-Type", "text/plain")])
    # libmicrohttpd hands ferryd the first of two Content-Type headers; the token is valid,
    # so a 200 here is an ambiguity, not a forged grant.
    if resp.status == 200:
        srv.reached += 1
        srv.issued += 1
    tap.ok(resp.status == 400 and b"access_token" not in resp.body,
           "G1: two Content-Type headers (form, then text/plain): refused", resp)
    ck.valid("after G1")

    # ================= G2: oversized request line and headers, pipelining, slowloris ==========
    got = raw_exchange(srv.port, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    tap.ok(got[:12] in (b"HTTP/1.1 414", b"HTTP/1.1 431") or got == b"",
           "G2: a 20 KB request line: 414/431 (or closed)", got[:200])
    got = raw_exchange(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                       + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(300))
                       + b"\r\n")
    tap.ok(got.startswith(b"HTTP/1.1 431"), "G2: 300 headers (30 KB): 431", got[:200])
    got = raw_exchange(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n b\r\n\r\n")
    tap.ok(got.startswith(b"HTTP/1.1 200") or got.startswith(b"HTTP/1.1 400"),
           "G2: an obsolete folded header: answered (200 or 400), no hang", got[:200])
    # Pipelined: a valid request, then garbage, then a valid request, on one connection. The
    # garbage must never be taken for a request: it is answered 4xx/505 and the connection
    # closed, or (libmicrohttpd) a line starting with NUL is skipped as an empty line.
    outcomes = []
    for garbage in (b"\x00\xff\xfeGARBAGE \x01\x02 HTTP/9.9\r\n\r\n", b"GARBAGE\r\n\r\n",
                    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", b"\x01\x02\x03 / HTTP/1.1\r\n\r\n",
                    b"POST /v1/token HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        data = b""
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + garbage
                      + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            while True:
                c = s.recv(65536)
                if not c:
                    break
                data += c
        except OSError as e:
            data += b"<" + repr(e).encode() + b">"
        finally:
            s.close()
        statuses = [int(x) for x in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]
        outcomes.append((garbage[:12], statuses))
        fine = (statuses[:1] == [200]
                and all(x in (200, 400, 404, 413, 501, 505) for x in statuses)
                and len(statuses) <= 3 and b"access_token" not in data)
        if not fine:
            outcomes.append(("FAIL", data[:400]))
    tap.ok(not any(o[0] == "FAIL" for o in outcomes),
           "G2: pipelined garbage after a valid request: the first is answered 200; the garbage "
           "gets 400/404/505 (and a close), or is skipped; nothing else", outcomes)
    tap.diag(f"pipelined garbage: {outcomes}")
    got = raw_exchange(srv.port, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + os.urandom(64))
    tap.ok(got == b"" or got.startswith(b"HTTP/1.1 400") or b"Errno" in got,
           "G2: a TLS ClientHello on the plain port: 400 or closed", got[:200])
    got = raw_exchange(srv.port, b"POST /v1/token HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                       b"Content-Length: 7\r\n\r\nabcde")
    tap.ok(got.startswith(b"HTTP/1.1 400") or got == b"",
           "G2: two different Content-Length headers: 400 (or closed)", got[:200])
    got = raw_exchange(srv.port, b"POST /v1/token HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                       b"Transfer-Encoding: chunked\r\nContent-Type: " + FORM.encode()
                       + b"\r\n\r\n0\r\n\r\n")
    tap.ok(not got.startswith(b"HTTP/1.1 200"),
           "G2: Content-Length and chunked together: not a 200 (no smuggled exchange)",
           got[:200])
    if got.startswith(b"HTTP/1.1 400"):
        # The empty chunked body reached the exchange only if the answer is its JSON.
        if b"invalid_request" in got or b"unsupported_grant" in got:
            srv.reached += 1

    # Slowloris: one byte per second never completes a request; the server must close it.
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    head = b"POST /v1/token HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    closed_after = None
    t0 = time.monotonic()
    try:
        for i in range(8):
            try:
                s.sendall(head[i:i + 1])
            except OSError:
                closed_after = i
                break
            r_ready, _, _ = select.select([s], [], [], 1.0)
            if r_ready:
                try:
                    c = s.recv(4096)
                except OSError:
                    c = b""
                if not c or c.startswith(b"HTTP/1.1 408") or c.startswith(b"HTTP/1.1 4"):
                    closed_after = i + 1
                    break
    finally:
        s.close()
    elapsed = time.monotonic() - t0
    tap.ok(closed_after is not None,
           "G2: slowloris (1 byte/s, limits.request_timeout 3 s): ferryd closes the connection",
           f"still open after {elapsed:.1f} s and 8 bytes")
    tap.diag(f"slowloris: closed after {closed_after} bytes, {elapsed:.1f} s")
    # An idle connection (nothing sent) is closed by the 2 s timeout.
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        c = s.recv(100)
    except OSError as e:
        c = repr(e).encode()
    finally:
        s.close()
    tap.ok(c == b"" or b"reset" in c.lower(),
           "G2: an idle connection is closed by limits.timeout (2 s)", c)
    ck.valid("after G2")

    # ================= G3: error bodies ======================================================
    # Every refusal above went through body_clean (no token segments, kids, issuer names,
    # reason names, "signature"/"stack"/...). One more explicit pair: bad signature vs unknown
    # issuer give the same body.
    t_bad = signed(rs, "RS256", ISS_RS)
    t_bad = t_bad[:-4] + ("AAAA" if t_bad[-4:] != "AAAA" else "BBBB")
    t_unk = signed(rs, "RS256", "https://nobody.hostile.test")
    r_bad = post_form(srv, exchange_pairs(t_bad))
    r_unk = post_form(srv, exchange_pairs(t_unk))
    srv.reached += 2
    tap.ok(r_bad.status == r_unk.status == 400 and r_bad.body == r_unk.body
           and not ck.body_clean(r_bad, t_bad),
           "G3: a bad signature and an unknown issuer get byte-identical error bodies",
           (r_bad, r_unk))
    err = srv.stderr()
    leaked = [k for k in keys if f'"{k}"' in err]
    tap.ok(t_bad.split(".")[2] not in err and good.split(".")[1] not in err and not leaked,
           "G3: ferryd's log holds no token material", leaked)
    tap.ok("Bail" not in err and "AddressSanitizer" not in err and "runtime error" not in err,
           "ferryd's stderr has no sanitizer report", err[-2000:])

    # G4 (rate limits) runs on the second ferryd, where they are configured.
    ck.valid("at the end", "rs-1")
    ck.valid("at the end", "ed-1")


def readable(socks, timeout):
    """The sockets of socks that are readable (data or EOF) within timeout seconds (poll: the
    descriptors may be above FD_SETSIZE)."""
    p = select.poll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        p.register(fd, select.POLLIN)
    return [by_fd[fd] for fd, _ in p.poll(int(timeout * 1000))]


def rate_limits(tap, srv, keys):
    """G4 on the second ferryd (per address: rate 0.2/s, burst 4; per identity: burst 3)."""
    ck = Checker(tap, srv, keys)

    def limited(resp, desc):
        doc = resp.json() if resp is not None else None
        doc = doc if isinstance(doc, dict) else {}
        ra = resp.headers.get("retry-after", "") if resp is not None else ""
        return tap.ok(resp is not None and resp.status == 429 and doc.get("error") == "slow_down"
                      and ra.isdigit() and int(ra) >= 1 and "access_token" not in doc
                      and resp.headers.get("cache-control") == "no-store"
                      and not ck.body_clean(resp), f"{desc}: 429 slow_down with Retry-After",
                      resp)

    # Per address: four hostile requests are answered by the exchange, the fifth is refused
    # before anything of it is parsed (no audit record for it).
    st = []
    for _ in range(4):
        resp = post_form(srv, exchange_pairs("x.y.z"), source="127.0.5.1")
        srv.reached += 1
        st.append(resp.status)
    tap.eq(st, [400] * 4, "G4: four hostile requests from one address within its burst: 400")
    limited(post_form(srv, exchange_pairs("x.y.z"), source="127.0.5.1"),
            "G4: the fifth from that address")
    limited(post_form(srv, exchange_pairs(signed(keys["es-1"], "ES256", ISS_ES)),
                      source="127.0.5.1"),
            "G4: a valid token from that address while it is limited")
    ck.valid("G4: another address is not limited", "es-1", source="127.0.5.2")
    # Per identity: three exchanges of one subject from three addresses, the fourth is 429
    # (decided by the exchange after the token verified: one refusal record, nothing minted).
    for i in range(3):
        ck.valid(f"G4: identity g4-user, exchange {i + 1} of its burst", "ps-1",
                 source=f"127.0.6.{i + 1}", sub="g4-user")
    resp = post_form(srv, exchange_pairs(signed(keys["ps-1"], "PS256", ISS_PS, sub="g4-user")),
                     source="127.0.6.9")
    srv.reached += 1
    limited(resp, "G4: the fourth exchange of one identity from a fresh address")


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def connect_from(src, port):
    s = socket.socket()
    s.bind((src, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    return s


def healthz_on(s):
    """GET /healthz on an open connection: the status, or None when it was closed."""
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while b"\r\n\r\n" not in got:
            c = s.recv(4096)
            if not c:
                return None
            got += c
        return int(got[9:12])
    except (OSError, ValueError):
        return None


def idle_connections(tap, srv, keys):
    """G2: 1,000 idle connections from 40 loopback addresses (25 each, under the per-address
    limit of 32); a valid exchange on a fresh connection is served; the idle ones are still
    served afterwards; connections past 1,024 descriptors; the per-address limit closes the
    33rd connection from one address."""
    ck = Checker(tap, srv, keys)
    socks = []
    errors = []
    try:
        for i in range(1000):
            try:
                socks.append(connect_from(f"127.0.1.{1 + i // 25}", srv.port))
            except OSError as e:
                errors.append(repr(e))
        closed = 0
        for s in readable(socks, 0.5):
            try:
                if s.recv(1, socket.MSG_PEEK) == b"":
                    closed += 1
            except OSError:
                closed += 1
        tap.ok(len(socks) == 1000 and not errors and closed == 0,
               "G2: 1,000 concurrent idle connections are accepted and held",
               (len(socks), errors[:3], closed))
        ck.valid("G2: with 1,000 idle connections open, from a fresh address", "es-1",
                 source="127.0.2.1")
        ck.valid("G2: with 1,000 idle connections open, from an address holding 25", "rs-1",
                 source="127.0.1.1")
        sample = socks[::50]
        st = [healthz_on(s) for s in sample]
        tap.ok(st == [200] * len(sample),
               f"G2: {len(sample)} of the idle connections (every 50th) are then served", st)
        # limits.connections is 1100: 60 more connections (descriptors past 1,024 in ferryd).
        more = []
        for i in range(60):
            with contextlib.suppress(OSError):
                more.append(connect_from(f"127.0.4.{1 + i // 25}", srv.port))
        socks.extend(more)
        st = [healthz_on(s) for s in more]
        tap.ok(len(more) == 60 and st == [200] * 60,
               "G2: 60 more connections (1,060 of limits.connections 1,100) are served",
               f"served {st.count(200)} of {len(more)}; {st}")
    finally:
        for s in socks:
            s.close()
    # Wait until ferryd has let the closed connections go (its descriptors drop back).
    end = time.monotonic() + 20
    while fd_count(srv.proc.pid) > 200 and time.monotonic() < end:
        time.sleep(0.05)
    tap.ok(0 < fd_count(srv.proc.pid) <= 200,
           "G2: ferryd releases the connections once the clients close them",
           fd_count(srv.proc.pid))
    # Per-address limit: 32 connections from one address are held, the 33rd is closed.
    extra = []
    try:
        for _ in range(32):
            extra.append(connect_from("127.0.3.1", srv.port))
        st = healthz_on(connect_from("127.0.3.1", srv.port))
        held = [healthz_on(s) for s in extra]
        tap.ok(st is None and held == [200] * 32,
               "G2: the 33rd connection from one address is closed unanswered "
               "(limits.connections_per_ip 32); the 32 others are served", (st, held))
        resp = None
        with contextlib.suppress(OSError):
            resp = post_form(srv, exchange_pairs("x"), source="127.0.3.1")
        tap.ok(resp is None, "G2: a token request from that address is refused at connect "
               "while it holds 32 connections", resp)
    finally:
        for s in extra:
            s.close()
    # After the flood, ferryd still serves.
    ck.valid("G2: after the idle connections are gone", "es-1")
    r = http_request(srv.port, "GET", "/healthz")
    tap.ok(r.status == 200, "G2: /healthz answers after the flood", r)


if __name__ == "__main__":
    ft.main("test_ferryd_hostile", body)
