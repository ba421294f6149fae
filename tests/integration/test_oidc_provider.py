#!/usr/bin/env python3
# TAP: ferry against the real upstream IdP, npm oidc-provider 9 (tests/peers/oidc_provider.mjs),
# on plain http://127.0.0.1 (trusted with --allow-http-loopback):
#   the peer's discovery and token endpoint; a client_credentials token with a resource
#   indicator is an RFC 9068 at+jwt (checked independently with joserfc); `ferry token verify
#   --profile access_token` finds the keys by discovery and accepts it; a tampered token, a
#   token for another audience, an opaque token, a wrong profile or algorithm are refused;
#   key rotation: a token of a key the IdP rotated in while ferry runs is accepted after one
#   JWKS refresh, tokens issued while keys rotate under load all verify, a retired key's token
#   is refused; SIGUSR2 rotates too; the ES256 variant; SIGTERM stops the peer cleanly.
# Skips (with the reason) when node or the npm packages are missing; contrib/check.sh installs
# them and counts a skip as a failure.
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402
import oidcpeer  # noqa: E402
from oidcpeer import OTHER_RESOURCE, RESOURCE  # noqa: E402

try:
    from joserfc import jwt  # noqa: E402
    from joserfc.jwk import KeySet  # noqa: E402
except ImportError:
    jwt = None

DISCOVERY = "/.well-known/openid-configuration"
CLIENT_ID = oidcpeer.DEFAULT_CLIENT[0]
TTL = 600


def reason(r):
    return (r.json() or {}).get("reason")


def segments(token):
    h, p, s = token.split(".")
    return (json.loads(ft.base64.urlsafe_b64decode(h + "=" * (-len(h) % 4))),
            json.loads(ft.base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))), s)


def verify_argv(peer, alg, audience=RESOURCE, profile="access_token", loopback=True):
    a = ["token", "verify", "--issuer", peer.issuer, "--profile", profile, "--alg", alg,
         "--audience", audience]
    return a + (["--allow-http-loopback"] if loopback else [])


def verify(peer, token, alg=None, **kw):
    # On stdin: an opaque token may start with "-".
    return ft.ferry(*verify_argv(peer, alg or peer.alg, **kw), "-", stdin=token + "\n")


def joserfc_check(tap, peer, token, label):
    """Decode with joserfc against the peer's published JWKS; check RFC 9068 shape."""
    keyset = KeySet.import_key_set(peer.jwks())
    tok = jwt.decode(token, keyset, algorithms=[peer.alg])
    hdr, c = tok.header, tok.claims
    now = time.time()
    tap.ok(hdr.get("typ") == "at+jwt" and hdr.get("alg") == peer.alg
           and hdr.get("kid") == peer.keys()["signing"][peer.alg],
           f"{label}: joserfc verifies it; header typ at+jwt, alg {peer.alg}, kid of the "
           "current signing key", hdr)
    ok_claims = (c.get("iss") == peer.issuer and c.get("aud") == RESOURCE
                 and c.get("sub") == CLIENT_ID and c.get("client_id") == CLIENT_ID
                 and isinstance(c.get("jti"), str) and len(c["jti"]) >= 16
                 and isinstance(c.get("iat"), int) and abs(c["iat"] - now) < 120
                 and c.get("exp") == c["iat"] + TTL)
    tap.ok(ok_claims, f"{label}: RFC 9068 claims iss, aud = resource, sub = client_id, jti, "
           f"iat now, exp = iat + {TTL}", c)
    registry = jwt.JWTClaimsRegistry(iss={"essential": True, "value": peer.issuer},
                                     aud={"essential": True, "value": RESOURCE},
                                     sub={"essential": True}, jti={"essential": True})
    try:
        registry.validate(c)
        tap.ok(True, f"{label}: joserfc claim registry accepts it (not expired, iss, aud)")
    except Exception as e:  # joserfc raises its own error types
        tap.ok(False, f"{label}: joserfc claim registry accepts it (not expired, iss, aud)", e)


def identity_ok(tap, r, peer, kid, label):
    o = r.json() or {}
    return tap.ok(r.rc == 0 and o.get("verified") is True and o.get("issuer") == peer.issuer
                  and o.get("subject") == CLIENT_ID and o.get("profile") == "access_token"
                  and o.get("audience") == [RESOURCE] and o.get("kid") == kid
                  and o.get("alg") == peer.alg
                  and (o.get("claims") or {}).get("client_id") == CLIENT_ID,
                  f"{label}: ferry token verify exit 0, prints the identity "
                  f"(subject {CLIENT_ID}, kid {kid})", r)


def batch_proc(peer, alg):
    """`ferry token verify --batch` reading tokens from a pipe, one line at a time."""
    return subprocess.Popen([ft.FERRY_BIN] + verify_argv(peer, alg) + ["--batch"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ft.clean_env(), start_new_session=True)


def wait_for(pred, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def port_closed(port):
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def rotation_in_one_process(tap, peer):
    """A token of the old key, then a rotation at the IdP, then a token of the new key, all
    fed to one running ferry: the new kid is accepted after exactly one JWKS refresh."""
    old_kid = peer.keys()["signing"][peer.alg]
    tok_a = peer.access_token()
    peer.reset_stats()
    proc = batch_proc(peer, peer.alg)
    try:
        proc.stdin.write((tok_a + "\n").encode())
        proc.stdin.flush()
        # The peer counts a request before handing it to the provider of that moment, so
        # once /jwks is counted, ferry's set is the one from before the rotation below.
        first = wait_for(lambda: peer.count("/jwks") >= 1)
        rot = peer.rotate()
        new_kid = rot["signing"][peer.alg]
        tok_b = peer.access_token()
        tap.ok(new_kid != old_kid and segments(tok_b)[0].get("kid") == new_kid
               and old_kid in rot["kids"],
               f"{peer.alg} rotation: new tokens carry the new kid; the old key stays "
               "published", rot)
        proc.stdin.write((tok_b + "\n" + tok_a + "\n").encode())
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    res = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
    got = [(o.get("verified"), o.get("kid") or o.get("reason")) for o in res]
    tap.ok(first, f"{peer.alg} rotation: ferry fetched the key set for the first token")
    tap.eq(got, [(True, old_kid), (True, new_kid), (True, old_kid)],
           f"{peer.alg} rotation: one ferry process accepts the old kid, then the kid the "
           "IdP rotated in, then the old kid again", err.decode(errors="replace"))
    st = peer.stats()["requests"]
    tap.eq((st.get(DISCOVERY), st.get("/jwks")), (1, 2),
           f"{peer.alg} rotation: one discovery, one first fetch and exactly one refresh of "
           "the JWKS (on the unknown kid)", st)
    return tok_a, old_kid


def rotation_under_load(tap, peer):
    """Token requests from 4 threads while the IdP rotates 3 times: every request succeeds
    and every token (several kids) verifies in one ferry --batch run."""
    tokens, errors = [], []
    cond = threading.Condition()

    def worker():
        for _ in range(25):
            r = peer.token()
            with cond:
                if r.status == 200 and "access_token" in (r.json() or {}):
                    tokens.append(r.json()["access_token"])
                else:
                    errors.append(repr(r))
                cond.notify_all()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    rotations = 0
    for when in (20, 45, 70):  # rotate after this many answers, while requests are running
        with cond:
            cond.wait_for(lambda: len(tokens) + len(errors) >= when, timeout=60)
        peer.rotate()
        rotations += 1
    for t in threads:
        t.join(60)
    kids = {segments(t)[0].get("kid") for t in tokens}
    tap.ok(not errors and len(tokens) == 100 and len(kids) >= 3,
           f"under load: 100 token requests from 4 threads during {rotations} rotations all "
           f"succeed, signed by {len(kids)} different keys", errors[:3])
    r = ft.ferry(*verify_argv(peer, peer.alg), "--batch", stdin="".join(t + "\n" for t in
                                                                       tokens), timeout=120)
    out = r.lines()
    tap.ok(r.rc == 0 and len(out) == len(tokens) and all(o and o.get("verified") for o in out),
           f"under load: ferry --batch verifies all {len(tokens)} tokens", r)


def run_variant(tap, alg):
    with oidcpeer.OidcPeer(alg=alg, ttl=TTL) as peer:
        tap.ok(peer.issuer == f"http://127.0.0.1:{peer.port}",
               f"{alg} peer: READY line names the issuer http://127.0.0.1:PORT "
               f"(started in {peer.startup:.2f} s)", peer.issuer)
        disc = peer.discovery() or {}
        tap.ok(disc.get("issuer") == peer.issuer and disc.get("jwks_uri") == peer.issuer
               + "/jwks" and disc.get("token_endpoint") == peer.issuer + "/token"
               and "client_credentials" in disc.get("grant_types_supported", [])
               and "client_secret_basic" in disc.get("token_endpoint_auth_methods_supported",
                                                     []),
               f"{alg} peer: discovery names issuer, jwks_uri, token endpoint, "
               "client_credentials and client_secret_basic", disc)

        r = peer.token(scope="read")
        doc = r.json() or {}
        tap.ok(r.status == 200 and doc.get("token_type") == "Bearer"
               and doc.get("expires_in") == TTL and doc.get("scope") == "read"
               and doc.get("access_token", "").count(".") == 2,
               f"{alg}: client_credentials with resource={RESOURCE}: a Bearer JWT, "
               f"expires_in {TTL}, scope read", r)
        token = doc["access_token"]
        if jwt is not None:
            joserfc_check(tap, peer, token, alg)
        else:
            tap.skip(f"{alg}: joserfc checks", f"joserfc not installed for {sys.executable}")

        kid = peer.keys()["signing"][alg]
        peer.reset_stats()
        r = verify(peer, token)
        identity_ok(tap, r, peer, kid, alg)
        st = peer.stats()["requests"]
        tap.eq((st.get(DISCOVERY), st.get("/jwks")), (1, 1),
               f"{alg}: ferry found the keys by discovery (one discovery, one JWKS request)",
               st)

        # ---- refusals -----------------------------------------------------------------
        h, p, s = token.split(".")
        claims = segments(token)[1]
        forged = ft.b64u(ft.jdump(dict(claims, sub="admin")))
        r = verify(peer, f"{h}.{forged}.{s}")
        tap.ok(r.rc == 1 and reason(r) == "bad_signature",
               f"{alg}: payload changed (sub admin), signature kept: exit 1 bad_signature", r)
        sig = bytearray(ft.base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
        sig[len(sig) // 2] ^= 0x01
        r = verify(peer, f"{h}.{p}.{ft.b64u(bytes(sig))}")
        tap.ok(r.rc == 1 and reason(r) == "bad_signature",
               f"{alg}: one signature bit flipped: exit 1 bad_signature", r)

        other = peer.access_token(resource=OTHER_RESOURCE)
        tap.eq(segments(other)[1].get("aud"), OTHER_RESOURCE,
               f"{alg}: resource={OTHER_RESOURCE} gives a token for that audience")
        r = verify(peer, other)
        tap.ok(r.rc == 1 and reason(r) == "bad_audience",
               f"{alg}: token for {OTHER_RESOURCE} refused where {RESOURCE} is expected "
               "(bad_audience)", r)
        r = verify(peer, token, profile="id_token")
        tap.ok(r.rc == 1 and reason(r) == "bad_typ",
               f"{alg}: the at+jwt refused at an issuer configured for ID tokens (bad_typ)", r)
        wrong_alg = "ES256" if alg == "RS256" else "RS256"
        r = verify(peer, token, alg=wrong_alg)
        tap.ok(r.rc == 1 and reason(r) == "alg_not_allowed",
               f"{alg}: refused when only {wrong_alg} is allowed (alg_not_allowed)", r)
        r = verify(peer, token, loopback=False)
        tap.ok(r.rc != 0 and (r.rc == 2 or reason(r) == "issuer_unavailable"),
               f"{alg}: without --allow-http-loopback the http:// issuer is not trusted", r)

        opaque = peer.access_token(resource=None)
        tap.ok(opaque.count(".") == 0,
               f"{alg}: without a resource indicator the IdP issues an opaque token", opaque)
        r = verify(peer, opaque)
        tap.ok(r.rc == 1 and reason(r) == "malformed",
               f"{alg}: ferry refuses the opaque token as malformed", r)
        r = peer.token(resource="https://unknown.test")
        tap.ok(r.status == 400 and (r.json() or {}).get("error") == "invalid_target",
               f"{alg}: the IdP answers an unknown resource with invalid_target", r)
        r = peer.token(client=(CLIENT_ID, "wrong-secret"))
        tap.ok(r.status == 401 and (r.json() or {}).get("error") == "invalid_client",
               f"{alg}: the IdP refuses a wrong client secret (invalid_client)", r)

        # ---- rotation -----------------------------------------------------------------
        tok_a, old_kid = rotation_in_one_process(tap, peer)
        rotation_under_load(tap, peer)

        newest = peer.retire()
        tap.ok(old_kid not in newest["kids"] and len(newest["kids"]) == 2
               and {k["kid"] for k in peer.jwks()["keys"]} == set(newest["kids"]),
               f"{alg}: /_retire publishes only the newest pair of keys", newest)
        r = verify(peer, tok_a)
        tap.ok(r.rc == 1 and reason(r) == "unknown_kid",
               f"{alg}: a token of the retired key is refused (unknown_kid)", r)

        before = peer.keys()["signing"][alg]
        peer.signal(signal.SIGUSR2)
        rotated = wait_for(lambda: peer.keys()["signing"][alg] != before)
        after = peer.keys()["signing"][alg]
        tok_c = peer.access_token()
        r = verify(peer, tok_c)
        tap.ok(rotated and identity_ok(tap, r, peer, after, f"{alg} after SIGUSR2"),
               f"{alg}: SIGUSR2 rotates the signing key ({before} -> {after})")

        # ---- clean stop ----------------------------------------------------------------
        t0 = time.monotonic()
        rc = peer.stop()
        took = time.monotonic() - t0
        tap.ok(rc == 0 and took < 3 and "SIGTERM: stopping" in peer.stderr(),
               f"{alg}: SIGTERM stops the peer with exit 0 in {took:.2f} s", peer.stderr())
        tap.ok(port_closed(peer.port), f"{alg}: nothing listens on the port afterwards")


def body(tap):
    directory, why = oidcpeer.find_peer()
    if directory is None:
        tap.skip("oidc-provider peer", why)
        return
    tap.diag(f"oidc-provider peer from {directory}")
    try:
        # Bad arguments: the peer refuses them (exit 2) instead of starting half-configured.
        node = oidcpeer.shutil.which("node")
        script = os.path.join(directory, oidcpeer.SCRIPT)
        r = ft.run([node, script, "--alg", "HS256"], timeout=30)
        tap.ok(r.rc == 2 and "HS256" in r.err, "peer: --alg HS256 refused (exit 2)", r)
        r = ft.run([node, script, "--client", "no-secret"], timeout=30)
        tap.ok(r.rc == 2 and "ID:SECRET" in r.err, "peer: --client without a secret refused",
               r)
        run_variant(tap, "RS256")
        run_variant(tap, "ES256")
    finally:
        oidcpeer.cleanup()


if __name__ == "__main__":
    ft.main("test_oidc_provider", body)
