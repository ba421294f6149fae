#!/usr/bin/env python3
# TAP: ferryd and the life of its upstream IdP, with real processes on loopback: ferryd trusts
# the real npm oidc-provider 9 peer (tests/peers/oidc_provider.mjs) through discovery, with a
# short JWKS cache (lifetime TTL s, refresh cooldown COOLDOWN s, stale window STALE s) so that
# every cache transition happens within seconds.
#   1. an exchange of the peer's at+jwt; the minted token verifies with joserfc against
#      ferryd's discovery document and JWKS fetched over HTTP (the full refusal catalogue is
#      test_ferryd_exchange.py's);
#   2. key rotation at the IdP while a background thread exchanges fresh peer tokens back to
#      back: the new kid is accepted on its first exchange after exactly one JWKS fetch, no
#      exchange of the flow fails, and once the peer has retired the old key a token of the
#      old kid is accepted until ferryd's cached set expires and refused (400 invalid_request,
#      unknown_kid in the audit record) from then on;
#   3. the IdP stopped: the cached set keeps serving past its lifetime (stale), then after
#      lifetime + stale window every exchange fails closed with 503 temporarily_unavailable
#      (no Retry-After: ferryd cannot know when the IdP returns), /healthz and /readyz stay 200
#      (readiness is the start-up state, by design: routes.c route_ready), and every refusal is
#      an audit record (decision error, issuer_unavailable);
#   4. the IdP restarted on the same port: with the same keys, exchanges (also of tokens issued
#      before the outage) succeed again without restarting ferryd; with new keys, the new kid
#      is accepted and tokens of the vanished key are refused;
#   then SIGTERM: ferryd exits 0, the audit log holds one token.exchange record per exchange and
#   `ferry log verify` passes.
# Assertions are on behaviour: every wait is a poll with a deadline, and the only time bounds
# asserted are lower bounds that the configured cache times imply.
# Skips (with the reason) when node or the npm packages are missing.
import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402
import oidcpeer  # noqa: E402
from oidcpeer import RESOURCE  # noqa: E402
from test_ferryd_exchange import (AT_TYPE, CLIENT_ID, SCOPE, TARGET,  # noqa: E402
                                  exchange_pairs, post_token, request)

try:
    from joserfc import jwt  # noqa: E402
    from joserfc.jwk import KeySet  # noqa: E402
except ImportError:
    jwt = None

FERRYD_BIN = os.environ.get("FERRYD_BIN") or os.path.join(ft.BUILDDIR, "ferryd")

# The JWKS cache of the peer's issuer. The peer sends no Cache-Control, so a fetched set (and
# the discovery document) lives TTL seconds. Cache times are whole seconds of the trust
# store's clock, so a set fetched at t is fresh until somewhere in (t + TTL - 1, t + TTL] and
# usable until somewhere in (t + TTL + STALE - 1, t + TTL + STALE].
TTL = 2
COOLDOWN = 1
STALE = 6
JWKS_CACHE = {"min_ttl": 1, "max_ttl": 60, "default_ttl": TTL, "refresh_cooldown": COOLDOWN,
              "stale_window": STALE}


def kid_of(token):
    h = token.split(".", 1)[0]
    return json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4))).get("kid")


def poll(pred, seconds, step=0.05):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


class Counter:
    """Exchanges sent to ferryd (each must leave exactly one audit record)."""

    def __init__(self):
        self.n = 0
        self.lock = threading.Lock()

    def exchange(self, port, token, **kw):
        with self.lock:
            self.n += 1
        return post_token(port, exchange_pairs(token, **kw))


def outcome(r):
    doc = r.json() or {}
    return r.status, doc.get("error")


class Flow(threading.Thread):
    """Fresh peer tokens exchanged back to back until stop(). Each exchange runs under
    self.lock, so the main thread can change the peer between two exchanges while the peer's
    own token requests keep flowing. When the first token signed with self.watch_kid is
    accepted, the peer's /jwks count at that moment is kept in self.first_new."""

    def __init__(self, peer, port, counter):
        super().__init__(daemon=True)
        self.peer, self.port, self.counter = peer, port, counter
        self.lock = threading.Lock()
        self.results = []  # (kid, status, error)
        self.watch_kid = None
        self.first_new = None
        self.trouble = []
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            try:
                tok = self.peer.access_token()
            except Exception as e:  # noqa: BLE001 - recorded, the check below fails
                self.trouble.append(repr(e))
                time.sleep(0.1)
                continue
            kid = kid_of(tok)
            with self.lock:
                try:
                    st, err = outcome(self.counter.exchange(self.port, tok))
                except OSError as e:
                    st, err = None, repr(e)
                self.results.append((kid, st, err))
                if (self.first_new is None and kid == self.watch_kid and st == 200):
                    self.first_new = {"jwks": self.peer.count("/jwks"),
                                      "index": len(self.results) - 1}

    def ok_count(self, kid=None, since=0):
        return sum(1 for k, s, _ in self.results[since:] if s == 200 and kid in (None, k))

    def stop(self):
        self._halt.set()
        self.join(30)


def read_text(path):
    with open(path, errors="replace") as f:
        return f.read()


def audit_records(path):
    with open(path) as f:
        return [json.loads(x) for x in f if x.strip()]


def body(tap):
    directory, why = oidcpeer.find_peer()
    if directory is None:
        tap.skip("ferryd and the IdP's life", why)
        return
    if jwt is None:
        tap.skip("ferryd and the IdP's life", "joserfc is not installed")
        return
    with ft.tempdir() as d:
        keys_file = os.path.join(d, "peer-keys.json")
        with oidcpeer.OidcPeer(alg="RS256", keys_file=keys_file) as peer:
            run(tap, peer, d)


def run(tap, peer, d):
    port = ft.free_port()
    me = f"http://127.0.0.1:{port}"
    state = os.path.join(d, "state")
    pol = os.path.join(d, "policies")
    os.mkdir(pol)
    ft.write_json(os.path.join(pol, "peer.json"), {"version": 1, "policies": [{
        "id": "peer-client",
        "match": {"issuer": peer.issuer, "subject": CLIENT_ID, "audience": [RESOURCE]},
        "grant": {"scopes": [SCOPE], "audiences": [TARGET], "max_ttl": 600}}]})
    audit = os.path.join(d, "audit.log")
    conf = {
        "listen": [f"127.0.0.1:{port}"],
        "state_dir": state,
        "issuer": me,
        "signing_alg": "ES256",
        "policies": pol,
        # Tokens of a retired or cached key are exchanged again and again, and the flow runs
        # faster than the per-identity default: neither one-time subjects nor rate limits
        # (test_ferryd_limits.py's subject) may refuse them here.
        "token": {"one_time_subject": False},
        "rate_limits": {"per_address": {"rate": 0}, "per_identity": {"rate": 0}},
        "audit_log": {"path": audit, "checkpoint_every": 50, "sync": "always"},
        "limits": {"timeout": 10, "drain_timeout": 5},
        "issuers": [{"issuer": peer.issuer, "audiences": [RESOURCE], "discovery": True,
                     "algorithms": ["RS256"], "profile": "access_token",
                     "allow_http_loopback": True, "jwks_cache": JWKS_CACHE,
                     "fetch": {"connect_timeout_ms": 1000, "timeout_ms": 3000}}],
    }
    cpath = ft.write_json(os.path.join(d, "ferryd.json"), conf)
    # ferryd appends (O_APPEND) and the test reads through its own descriptor, so reading
    # never moves the offset ferryd writes at.
    errpath = os.path.join(d, "ferryd.err")
    errlog = open(errpath, "a")
    proc = subprocess.Popen([FERRYD_BIN, "-c", cpath], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=errlog, env=ft.clean_env())
    flow = None
    try:
        def ready():
            try:
                return request(port, "GET", "/readyz").status == 200
            except OSError:
                return proc.poll() is not None
        poll(ready, 30, 0.1)
        if not tap.ok(proc.poll() is None and request(port, "GET", "/readyz").status == 200,
                      "ferryd starts; /readyz 200 once the peer's keys are fetched",
                      read_text(errpath)[-3000:]):
            return
        counter = Counter()
        exchange_verified(tap, peer, port, me, counter)
        flow = Flow(peer, port, counter)
        rotation(tap, peer, port, counter, flow)
        flow = None
        tok_cur = outage(tap, peer, port, audit, counter, proc)
        restarts(tap, peer, port, d, counter, proc, tok_cur)
        finish(tap, proc, state, audit, d, counter)
        err = read_text(errpath)
        odd = [x for x in err.splitlines() if not x.startswith("{")]
        tap.ok(err and not odd,
               "ferryd's stderr holds only JSON log lines (no sanitizer report)",
               "\n".join(odd[:60]))
    finally:
        if flow is not None:
            flow.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        errlog.close()


# ---- 1. one exchange, verified independently -------------------------------------------------

def exchange_verified(tap, peer, port, me, counter):
    subject = peer.access_token()
    r = counter.exchange(port, subject)
    minted = (r.json() or {}).get("access_token", "")
    disc = request(port, "GET", "/.well-known/openid-configuration").json() or {}
    jwks_path = urllib.parse.urlsplit(disc.get("jwks_uri", "")).path or "/none"
    try:
        keyset = KeySet.import_key_set(request(port, "GET", jwks_path).json())
        tok = jwt.decode(minted, keyset, algorithms=["ES256"])
        jwt.JWTClaimsRegistry(iss={"essential": True, "value": me},
                              aud={"essential": True, "value": TARGET},
                              sub={"essential": True, "value": CLIENT_ID}).validate(tok.claims)
        good = (r.status == 200 and (r.json() or {}).get("issued_token_type") == AT_TYPE
                and tok.claims.get("src_iss") == peer.issuer)
        diag = (r, tok.header, tok.claims)
    except Exception as e:  # noqa: BLE001 - any failure is the check failing
        good, diag = False, (r, repr(e))
    tap.ok(good, "exchange of the peer's at+jwt: 200; joserfc verifies the minted token with "
           "the JWKS named by ferryd's discovery document (iss, aud, sub, src_iss)", diag)


# ---- 2. rotation while requests flow ---------------------------------------------------------

def rotation(tap, peer, port, counter, flow):
    old_kid = peer.keys()["signing"]["RS256"]
    tok_old = peer.access_token()
    flow.start()
    try:
        tap.ok(poll(lambda: flow.ok_count() >= 5, 30), "the flow of exchanges is running",
               (flow.results[-5:], flow.trouble))
        # Between two exchanges of the flow (the peer's token requests keep running): no
        # ferryd fetch is on the wire, so every /jwks request counted from here on is
        # ferryd's answer to what happens next.
        with flow.lock:
            jwks_before = peer.count("/jwks")
            rot = peer.rotate()
            new_kid = rot["signing"]["RS256"]
            flow.watch_kid = new_kid
            mark = len(flow.results)
        tap.ok(new_kid != old_kid and old_kid in rot["kids"],
               "the peer rotated: a new signing kid, the old key still published", rot)
        got = poll(lambda: flow.first_new is not None, 30)
        fetched = flow.first_new["jwks"] - jwks_before if got else None
        # Exactly one: either the unknown kid triggered the refresh at once (the first kid
        # refresh is not held back by the cooldown), or a lifetime refresh that ran after the
        # rotation had already brought the new key. Never a second fetch, never a refusal.
        tap.ok(got and fetched == 1,
               "the new kid is accepted on its first exchange after exactly one JWKS fetch",
               (fetched, flow.first_new, flow.results[mark:mark + 5]))
        poll(lambda: flow.ok_count(new_kid) >= 5, 30)

        # Retire the old key: the peer publishes only the new pair. The old kid's token stays
        # good while ferryd's cached set (which holds it) lives, and is refused once that set
        # expired and the refetched one lacks the key.
        with flow.lock:
            retired = peer.retire()
            jwks_retire = peer.count("/jwks")
        tap.ok(old_kid not in retired["kids"], "the peer retired the old key", retired)
        seq = []

        def old_refused():
            r = counter.exchange(port, tok_old)
            seq.append(outcome(r))
            return r.status != 200

        refused = poll(old_refused, TTL + STALE + 20, 0.2)
        for _ in range(3):  # and it stays refused (a kid refresh per cooldown changes nothing)
            old_refused()
            time.sleep(COOLDOWN / 2)
        first_refusal = next((i for i, x in enumerate(seq) if x[0] != 200), len(seq))
        tap.ok(refused and all(x == (200, None) for x in seq[:first_refusal])
               and all(x == (400, "invalid_request") for x in seq[first_refusal:])
               and peer.count("/jwks") > jwks_retire,
               "after the retirement the old kid's token is accepted until the cached set "
               "expires, then refused (400 invalid_request) after a refetch, and stays refused",
               seq)
        n_old = len(flow.results)
        poll(lambda: flow.ok_count(since=n_old) >= 3, 30)
    finally:
        flow.stop()
    bad = [x for x in flow.results if x[1] != 200]
    tap.ok(not bad and not flow.trouble and flow.ok_count(old_kid) >= 5
           and flow.ok_count(new_kid) >= 8,
           f"no exchange of the flow failed during rotation and retirement "
           f"({len(flow.results)} exchanges, old kid then new kid)",
           (bad[:10], flow.trouble[:5], len(flow.results)))
    return tok_old


# ---- 3. the IdP stopped ----------------------------------------------------------------------

def outage(tap, peer, port, audit, counter, proc):
    tok = peer.access_token()
    # Stop the peer right after ferryd fetched the set it will live on. That fetch ran inside
    # one exchange, between t_a and t_b: the set is past its lifetime by t_b + TTL, and
    # usable at least until t_a + TTL + STALE - 1 (whole seconds, see JWKS_CACHE).
    c = peer.count("/jwks")
    t_a = t_b = None

    def refetched():
        nonlocal t_a, t_b
        t_a = time.monotonic()
        counter.exchange(port, tok)
        t_b = time.monotonic()
        return peer.count("/jwks") > c

    aligned = poll(refetched, TTL + 10, 0.1)
    rc = peer.stop()
    tap.ok(aligned and rc == 0, "the peer is stopped right after a JWKS fetch", (aligned, rc))
    n_audit = len(audit_records(audit))
    seq = []  # (time, status, error)
    last = None

    def closed():
        nonlocal last
        t = time.monotonic()
        last = counter.exchange(port, tok)
        seq.append((t, last.status, (last.json() or {}).get("error")))
        return last.status == 503

    down = poll(closed, TTL + STALE + 20, 0.2)
    for _ in range(3):
        closed()
        time.sleep(0.2)
    statuses = [s for _, s, _ in seq]
    first503 = statuses.index(503) if 503 in statuses else len(seq)
    show = [(round(t - t_b, 2), s, e) for t, s, e in seq]
    served_stale = [x for x in seq[:first503] if x[0] > t_b + TTL]
    tap.ok(down and all(s == 200 for s in statuses[:first503])
           and all(s == 503 for s in statuses[first503:]),
           "IdP down: exchanges succeed on the cached keys, then fail closed, never back", show)
    tap.ok(served_stale,
           f"the cached set serves past its {TTL} s lifetime while refreshes fail (stale window)",
           show[:first503][-5:])
    tap.ok(first503 < len(seq) and seq[first503][0] > t_a + TTL + STALE - 1,
           f"fail-closed no earlier than the set's lifetime + the {STALE} s stale window",
           show[first503:first503 + 1])
    doc = (last.json() or {}) if last else {}
    tap.ok(last is not None and last.status == 503
           and doc.get("error") == "temporarily_unavailable" and "access_token" not in doc
           and last.headers.get("cache-control") == "no-store"
           and "retry-after" not in last.headers,
           "past the stale window: 503 temporarily_unavailable, no-store, no token, no "
           "Retry-After", last)
    r = request(port, "GET", "/readyz")
    h = request(port, "GET", "/healthz")
    tap.ok(r.status == 200 and h.status == 200,
           "/healthz and /readyz stay 200 during the outage (readiness is the start-up state; "
           "the outage shows at /v1/token)", (r, h))
    recs = [x for x in audit_records(audit)[n_audit:] if x.get("type") == "token.exchange"]
    errs = [x for x in recs if x.get("decision") == "error"]
    allows = [x for x in recs if x.get("decision") == "allow"]
    n503 = statuses.count(503)
    tap.ok(len(recs) == len(seq) and len(errs) == n503 and len(allows) == len(seq) - n503
           and all((x.get("details") or {}).get("error") == "temporarily_unavailable"
                   and "issuer_unavailable" in (x.get("details") or {}).get("reason", "")
                   for x in errs),
           f"the audit log records each of the {n503} refusals (decision error, "
           "temporarily_unavailable, issuer_unavailable) and each stale-served allow",
           [(x.get("decision"), x.get("details")) for x in errs[:2]])
    tap.ok(proc.poll() is None, "ferryd keeps running through the outage")
    return tok


# ---- 4. the IdP restarted --------------------------------------------------------------------

def restarts(tap, peer, port, d, counter, proc, tok_before):
    with open(peer.keys_file) as f:
        keys_before = json.load(f)
    peer.restart()
    tap.ok(peer.keys()["kids"] == [k["jwk"]["kid"] for k in keys_before["keys"]],
           "the peer is back on the same port with the same keys", peer.keys())
    seq = []

    def back():
        r = counter.exchange(port, tok_before)
        seq.append(outcome(r))
        return r.status == 200

    up = poll(back, COOLDOWN + 20, 0.2)
    n = seq.index((200, None)) if (200, None) in seq else len(seq)
    tap.ok(up and all(x == (503, "temporarily_unavailable") for x in seq[:n])
           and peer.count("/jwks") >= 1,
           "same keys: ferryd refetches (no restart of ferryd) and a token issued before the "
           "outage exchanges again", seq)
    r = counter.exchange(port, peer.access_token())
    tap.ok(r.status == 200 and "access_token" in (r.json() or {}),
           "same keys: a token the restarted peer issued exchanges", r)

    # New keys at the same address: another realistic restart (an IdP without persistent
    # keys). The new kid triggers a refresh; the vanished key's tokens are refused.
    peer.restart(keys_file=os.path.join(d, "peer-keys-2.json"))
    new_kid = peer.keys()["signing"]["RS256"]
    tok_new = peer.access_token()
    seq = []

    def accepted():
        r = counter.exchange(port, tok_new)
        seq.append(outcome(r))
        return r.status == 200

    up = poll(accepted, COOLDOWN + 20, 0.2)
    tap.ok(up and new_kid != kid_of(tok_before) and kid_of(tok_new) == new_kid
           and peer.count("/jwks") >= 1,
           "new keys: the restarted peer's new kid is accepted after a refetch", seq)
    r = counter.exchange(port, tok_before)
    tap.ok(outcome(r) == (400, "invalid_request"),
           "new keys: a token of the key the IdP no longer publishes is refused", r)
    tap.ok(proc.poll() is None, "the same ferryd process served before, during and after")


# ---- the end ---------------------------------------------------------------------------------

def finish(tap, proc, state, audit, d, counter):
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(20)
    except subprocess.TimeoutExpired:
        rc = None
    tap.ok(rc == 0, "SIGTERM: ferryd exits 0", rc)
    recs = audit_records(audit)
    ex = [x for x in recs if x.get("type") == "token.exchange"]
    tap.eq(len(ex), counter.n, "the audit log holds one token.exchange record per exchange")
    unknown = [x for x in ex if x.get("decision") == "deny"]
    tap.ok(unknown and all("unknown_kid" in (x.get("details") or {}).get("reason", "")
                           for x in unknown),
           "every refused retired or vanished kid is recorded as unknown_kid",
           [(x.get("details") or {}).get("reason") for x in unknown[:5]])
    jwks_all = os.path.join(d, "jwks-all.json")
    r = ft.ferry("keys", "jwks", "--all", "--state-dir", state)
    with open(jwks_all, "w") as f:
        f.write(r.out)
    r = ft.ferry("log", "verify", audit, "--jwks", jwks_all)
    tap.ok(r.rc == 0, "ferry log verify passes on the sealed log", r)


if __name__ == "__main__":
    ft.main("test_ferryd_idp", body)
