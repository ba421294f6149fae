#!/usr/bin/env python3
# TAP: tokens ferry mints verify with an independent JOSE implementation (Python joserfc),
# with the key set fetched over HTTP exactly as ferry publishes it.
#
# For ES256, EdDSA and RS256: `ferry keys init` creates the key, `ferry keys discovery` and
# `ferry keys jwks` produce the documents, a loopback http.server serves them under the issuer
# (/.well-known/openid-configuration and the jwks_uri it names), tokens minted by the
# test-only tests/unit/mint_tool are verified by joserfc against the fetched set: header exactly
# {alg, kid, typ: at+jwt} (E1), kid = RFC 7638 thumbprint computed by joserfc, claims per
# RFC 9068 (E2, E6), served JWKS public only (E8), a tampered token refused.
# Rotation: the old token keeps verifying with the published set during the overlap, and
# after retired_at + max_ttl the published set drops the old key (joserfc: no key for kid),
# its private key file is gone, and `ferry keys jwks --all` still verifies the old signature.
# CLI: init twice refused, --import of an operator PEM, a world-readable private key refused.
import base64
import functools
import http.server
import json
import os
import stat
import sys
import threading
import time
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402

try:
    from joserfc import jwt  # noqa: E402
    from joserfc.errors import JoseError  # noqa: E402
    from joserfc.jwk import KeySet  # noqa: E402
    from joserfc.jwt import JWTClaimsRegistry  # noqa: E402
except ImportError:
    print("1..0 # SKIP Python module joserfc not installed for %s" % sys.executable)
    sys.exit(0)

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

MINT_TOOL = os.path.join(ft.BUILDDIR, "tests", "unit", "mint_tool")
PRIVATE = ("d", "p", "q", "dp", "dq", "qi", "k", "oth")
AUD = "sts.amazonaws.com"


class Server:
    """http.server on 127.0.0.1 serving a directory, in a thread."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    def __init__(self, root):
        handler = functools.partial(Server.Quiet, directory=root)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def fetch_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def mint_tool(*args):
    return ft.run([MINT_TOOL, *args])


def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def publish(tap, state, root, issuer, jwks_json=None):
    """Write discovery + JWKS (from the ferry CLI unless given) into root; return the JWKS
    fetched over HTTP by following discovery's jwks_uri."""
    os.makedirs(os.path.join(root, ".well-known"), exist_ok=True)
    disc = ft.ferry("keys", "discovery", "--state-dir", state, "--issuer", issuer)
    tap.eq(disc.rc, 0, "ferry keys discovery exits 0", disc.err)
    if jwks_json is None:
        j = ft.ferry("keys", "jwks", "--state-dir", state)
        tap.eq(j.rc, 0, "ferry keys jwks exits 0", j.err)
        jwks_json = j.out
    with open(os.path.join(root, ".well-known", "openid-configuration"), "w") as f:
        f.write(disc.out)
    with open(os.path.join(root, ".well-known", "jwks.json"), "w") as f:
        f.write(jwks_json)
    doc = fetch_json(issuer + "/.well-known/openid-configuration")
    tap.eq(doc.get("issuer"), issuer, "discovery issuer is the issuer, byte for byte")
    tap.eq(doc.get("jwks_uri"), issuer + "/.well-known/jwks.json", "discovery jwks_uri")
    tap.ok("urn:ietf:params:oauth:grant-type:token-exchange" in
           doc.get("grant_types_supported", []), "discovery names token exchange")
    return fetch_json(doc["jwks_uri"])


def mint(tap, state, issuer, *extra):
    r = mint_tool("mint", "--state-dir", state, "--issuer", issuer, "--sub", "job-42",
                  "--aud", AUD, "--client-id", "ferry-credential", "--src-iss",
                  "https://kubernetes.default.svc", "--src-sub",
                  "system:serviceaccount:train:job", "--scope", "s3:read wandb",
                  "--ttl", "600", "--max-ttl", "900", *extra)
    tap.eq(r.rc, 0, "mint_tool mint exits 0", r.err)
    return r.out.split()


def check_token(tap, tok, keyset, alg, issuer, label):
    try:
        t = jwt.decode(tok, keyset, algorithms=[alg])
    except JoseError as e:
        tap.ok(False, f"{label}: joserfc verifies the token", repr(e))
        return None
    tap.ok(True, f"{label}: joserfc verifies the token")
    # The raw header, as bytes: exactly alg, kid, typ.
    hdr = json.loads(b64d(tok.split(".")[0]))
    tap.eq(sorted(hdr), ["alg", "kid", "typ"], f"{label}: header has only alg, kid, typ")
    tap.eq((hdr["alg"], hdr["typ"]), (alg, "at+jwt"), f"{label}: alg and typ at+jwt")
    key = keyset.get_by_kid(hdr["kid"])
    tap.eq(key.thumbprint(), hdr["kid"], f"{label}: kid is the RFC 7638 thumbprint (joserfc)")
    c = t.claims
    reg = JWTClaimsRegistry(leeway=60, iss={"essential": True, "value": issuer},
                            aud={"essential": True, "value": AUD},
                            sub={"essential": True, "value": "job-42"},
                            jti={"essential": True}, client_id={"essential": True})
    try:
        reg.validate(c)
        tap.ok(True, f"{label}: claims validate (iss, aud, sub, exp, nbf, iat, jti)")
    except JoseError as e:
        tap.ok(False, f"{label}: claims validate", repr(e))
    tap.eq(c["exp"] - c["iat"], 600, f"{label}: exp - iat is the requested ttl")
    tap.eq(c["nbf"], c["iat"], f"{label}: nbf = iat")
    tap.eq(len(b64d(c["jti"])), 16, f"{label}: jti is 128 bits")
    tap.eq((c["scope"], c["src_iss"], c["src_sub"]),
           ("s3:read wandb", "https://kubernetes.default.svc",
            "system:serviceaccount:train:job"), f"{label}: scope, src_iss, src_sub")
    return t


def refused(tok, keyset, alg):
    try:
        jwt.decode(tok, keyset, algorithms=[alg])
        return False
    except (JoseError, ValueError):
        return True


def body(tap):
    if not os.access(MINT_TOOL, os.X_OK):
        print(f"Bail out! {MINT_TOOL} not built (make check builds it)")
        sys.exit(99)
    with ft.tempdir() as d:
        for alg in ("ES256", "EdDSA", "RS256"):
            state = os.path.join(d, "state-" + alg)
            root = os.path.join(d, "www-" + alg)
            os.makedirs(root)
            srv = Server(root)
            try:
                issuer = srv.base
                extra = ["--rsa-bits", "2048"] if alg == "RS256" else []
                r = ft.ferry("keys", "init", "--state-dir", state, "--alg", alg, *extra)
                tap.eq(r.rc, 0, f"{alg}: ferry keys init exits 0", r.err)
                kid = json.loads(r.out)["kid"]
                tap.eq(stat.S_IMODE(os.stat(os.path.join(state, "keys")).st_mode), 0o700,
                       f"{alg}: keys/ is 0700")
                tap.eq(stat.S_IMODE(os.stat(os.path.join(state, "keys", f"key-{kid}.pem"))
                                    .st_mode), 0o600, f"{alg}: private key file is 0600")
                r = ft.ferry("keys", "init", "--state-dir", state)
                tap.eq(r.rc, 1, f"{alg}: a second init is refused", r.err)

                served = publish(tap, state, root, issuer)
                tap.ok(all(m not in k for k in served["keys"] for m in PRIVATE),
                       f"{alg}: served JWKS has no private members (E8)")
                tap.eq([k["kid"] for k in served["keys"]], [kid], f"{alg}: served JWKS has the key")
                ks = KeySet.import_key_set(served)
                tokens = mint(tap, state, issuer, "--count", "3",
                              "--act", '{"sub":"ferryd","act":{"sub":"ci"}}')
                tap.eq(len(tokens), 3, f"{alg}: three tokens minted")
                jtis = set()
                for i, tok in enumerate(tokens):
                    t = check_token(tap, tok, ks, alg, issuer, f"{alg} token {i}")
                    if t:
                        jtis.add(t.claims["jti"])
                        if i == 0:
                            tap.eq(t.claims.get("act"), {"sub": "ferryd", "act": {"sub": "ci"}},
                                   f"{alg}: act claim nested as given")
                tap.eq(len(jtis), 3, f"{alg}: jti differs per token")
                h, p, s = tokens[0].split(".")
                forged = h + "." + ft.b64u(b64d(p).replace(b"job-42", b"job-43")) + "." + s
                tap.ok(refused(forged, ks, alg), f"{alg}: a changed payload is refused")
            finally:
                srv.close()

        # ---- rotation: ES256 -> EdDSA ---------------------------------------------------
        state = os.path.join(d, "state-rot")
        root = os.path.join(d, "www-rot")
        os.makedirs(root)
        srv = Server(root)
        try:
            issuer = srv.base
            r = ft.ferry("keys", "init", "--state-dir", state, "--alg", "ES256")
            tap.eq(r.rc, 0, "rotation: init", r.err)
            old_kid = json.loads(r.out)["kid"]
            old_tok = mint(tap, state, issuer)[0]
            r = ft.ferry("keys", "rotate", "--state-dir", state, "--alg", "EdDSA",
                         "--max-ttl", "900")
            tap.eq(r.rc, 0, "rotation: ferry keys rotate exits 0", r.err)
            listed = json.loads(r.out)
            tap.eq([k["state"] for k in listed], ["retired", "active"],
                   "rotation: old key retired, new key active")
            tap.eq(listed[0]["publish_until"] - listed[0]["retired_at"], 900,
                   "rotation: published until retired_at + max_ttl")
            new_tok = mint(tap, state, issuer)[0]
            tap.ok(json.loads(b64d(new_tok.split(".")[0]))["kid"] != old_kid,
                   "rotation: the new key signs")
            served = publish(tap, state, root, issuer)
            tap.eq(len(served["keys"]), 2, "rotation: both keys published during the overlap")
            ks = KeySet.import_key_set(served)
            tap.ok(check_token(tap, old_tok, ks, "ES256", issuer, "rotation old") is not None,
                   "rotation: the old token verifies during the overlap")
            tap.ok(check_token(tap, new_tok, ks, "EdDSA", issuer, "rotation new") is not None,
                   "rotation: the new token verifies")

            # After retired_at + max_ttl (mint_tool's clock moved forward; opening the store
            # then also wipes the old private key).
            later = str(int(time.time()) + 901 + 60)
            r = mint_tool("jwks", "--state-dir", state, "--now", later, "--max-ttl", "900")
            tap.eq(r.rc, 0, "rotation: jwks after the overlap", r.err)
            served = publish(tap, state, root, issuer, jwks_json=r.out)
            tap.eq(len(served["keys"]), 1, "rotation: the old key left the published set")
            ks = KeySet.import_key_set(served)
            tap.ok(refused(old_tok, ks, "ES256"),
                   "rotation: the old token no longer verifies with the published set")
            tap.ok(not os.path.exists(os.path.join(state, "keys", f"key-{old_kid}.pem")),
                   "rotation: the old private key file was removed")
            r = ft.ferry("keys", "jwks", "--all", "--state-dir", state)
            tap.eq(r.rc, 0, "rotation: ferry keys jwks --all", r.err)
            archive = json.loads(r.out)
            tap.eq(len(archive["keys"]), 2, "rotation: the archive keeps every public key")
            tap.ok(all(m not in k for k in archive["keys"] for m in PRIVATE),
                   "rotation: the archive has no private members")
            tap.ok(not refused(old_tok, KeySet.import_key_set(archive), "ES256"),
                   "rotation: the old signature still verifies with the archive")
        finally:
            srv.close()

        # ---- operator PEM, hostile modes --------------------------------------------------
        state = os.path.join(d, "state-pem")
        priv = ec.generate_private_key(ec.SECP256R1())
        pem = os.path.join(d, "op.pem")
        with open(pem, "wb") as f:
            f.write(priv.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
        r = ft.ferry("keys", "init", "--state-dir", state, "--import", pem)
        tap.eq(r.rc, 0, "import: ferry keys init --import exits 0", r.err)
        want = KeySet.import_key_set({"keys": [ft.Key("P-256", priv=priv).public_jwk()]})
        tap.eq(json.loads(r.out).get("kid"), want.keys[0].thumbprint(),
               "import: kid is the thumbprint of the operator's key")
        r = ft.ferry("keys", "rotate", "--state-dir", state, "--import", pem)
        tap.eq(r.rc, 1, "import: the same key again is refused", r.err)
        kid = want.keys[0].thumbprint()
        os.chmod(os.path.join(state, "keys", f"key-{kid}.pem"), 0o644)
        r = ft.ferry("keys", "jwks", "--state-dir", state)
        tap.eq(r.rc, 2, "hostile: a world-readable private key is refused")
        tap.ok("private key accessible" in r.err, "hostile: the message says why", r.err)
        os.chmod(os.path.join(state, "keys", f"key-{kid}.pem"), 0o600)
        os.chmod(os.path.join(state, "keys"), 0o777)
        r = ft.ferry("keys", "list", "--state-dir", state)
        tap.eq(r.rc, 2, "hostile: a world-writable keys/ directory is refused")
        tap.ok("world-writable" in r.err, "hostile: the message names the directory", r.err)
        os.chmod(os.path.join(state, "keys"), 0o700)

        # ---- read-only subcommands create and change nothing ------------------------------
        missing = os.path.join(d, "missing")
        for cmd in (["jwks"], ["list"], ["discovery", "--issuer", "https://ferry.test"]):
            r = ft.ferry("keys", *cmd, "--state-dir", missing)
            tap.eq(r.rc, 2, f"read-only: keys {cmd[0]} on a missing store exits 2", r.err)
            tap.ok("does not exist" in r.err and "ferry keys init" in r.err,
                   f"read-only: keys {cmd[0]} says the store is missing", r.err)
            tap.ok(not os.path.exists(missing),
                   f"read-only: keys {cmd[0]} did not create the state directory")
        bare = os.path.join(d, "bare")
        os.makedirs(bare, mode=0o700)
        r = ft.ferry("keys", "jwks", "--state-dir", bare)
        tap.eq(r.rc, 2, "read-only: a state directory without keys/ exits 2", r.err)
        tap.ok(os.listdir(bare) == [], "read-only: keys/ was not created", os.listdir(bare))

        # A retired key past its overlap: list/jwks report it, but neither rewrites keys.json
        # nor wipes the private key file (that is a writer's job: rotate, or ferryd).
        ro = os.path.join(d, "state-ro")
        r = ft.ferry("keys", "init", "--state-dir", ro)
        tap.eq(r.rc, 0, "read-only: init", r.err)
        old_kid = json.loads(r.out)["kid"]
        r = ft.ferry("keys", "rotate", "--state-dir", ro, "--max-ttl", "1")
        tap.eq(r.rc, 0, "read-only: rotate with a 1 s overlap", r.err)
        os.unlink(os.path.join(ro, "keys", ".lock"))
        time.sleep(2.1)
        with open(os.path.join(ro, "keys", "keys.json"), "rb") as f:
            before = f.read()
        for cmd in ("list", "jwks"):
            r = ft.ferry("keys", cmd, "--state-dir", ro, "--max-ttl", "1")
            tap.eq(r.rc, 0, f"read-only: keys {cmd} after the overlap", r.err)
        with open(os.path.join(ro, "keys", "keys.json"), "rb") as f:
            tap.ok(f.read() == before, "read-only: keys.json unchanged")
        tap.ok(os.path.exists(os.path.join(ro, "keys", f"key-{old_kid}.pem")),
               "read-only: the expired key's private file was left for a writer to wipe")
        tap.ok(not os.path.exists(os.path.join(ro, "keys", ".lock")),
               "read-only: no lock file was created")
        tap.eq(len(json.loads(r.out)["keys"]), 1, "read-only: jwks leaves out the expired key")
        r = ft.ferry("keys", "rotate", "--state-dir", ro, "--max-ttl", "1")
        tap.eq(r.rc, 0, "read-only: a writer prunes", r.err)
        tap.ok(not os.path.exists(os.path.join(ro, "keys", f"key-{old_kid}.pem")),
               "read-only: the writer wiped the expired key's private file")


if __name__ == "__main__":
    ft.main("test_mint_interop", body)
