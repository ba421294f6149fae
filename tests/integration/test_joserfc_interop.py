#!/usr/bin/env python3
# TAP: tokens signed by an independent JOSE implementation (Python joserfc) verify with
# `ferry token verify`, for every algorithm ferry supports, in single-token and --batch mode,
# and the identity ferry prints matches what was signed. Negative interop: a joserfc key that is
# not in the JWKS, an alg outside --alg, a key whose JWK pins another alg, and RFC 9864's
# "Ed25519" alg name (ferry speaks RFC 8037 "EdDSA" only; see docs/configuration.md).
import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402

try:
    from joserfc import jwt  # noqa: E402
    from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey  # noqa: E402
except ImportError:
    # The independent JOSE implementation is a test peer (../shared/PEERS.md); say so and skip.
    print("1..0 # SKIP Python module joserfc not installed for %s" % sys.executable)
    sys.exit(0)

ISS = "https://idp.interop.test"
AUD = "ferry"
ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]


def gen_key(alg):
    """A fresh joserfc private key for alg, kid = RFC 7638 thumbprint (joserfc's auto_kid)."""
    if alg[:2] in ("RS", "PS"):
        return RSAKey.generate_key(2048, auto_kid=True)
    if alg == "ES256":
        return ECKey.generate_key("P-256", auto_kid=True)
    if alg == "ES384":
        return ECKey.generate_key("P-384", auto_kid=True)
    return OKPKey.generate_key("Ed25519", auto_kid=True)  # joserfc: crv Ed25519, alg "EdDSA"


def sign(key, alg, claims, kid=None, **hdr):
    header = {"alg": alg, "kid": kid if kid is not None else key.kid}
    header.update(hdr)
    return jwt.encode(header, claims, key, algorithms=[alg])


def check_identity(tap, what, ident, claims, alg, kid):
    if not tap.ok(isinstance(ident, dict), f"{what}: output is a JSON object", ident):
        return
    tap.ok(ident.get("verified") is True and ident.get("issuer") == ISS
           and ident.get("subject") == claims["sub"]
           and ident.get("audience") == [AUD] and ident.get("alg") == alg
           and ident.get("kid") == kid and ident.get("profile") == "id_token"
           and ident.get("jti") == claims["jti"] and ident.get("exp") == claims["exp"]
           and ident.get("iat") == claims["iat"] and ident.get("nbf") == claims["nbf"]
           and ident.get("claims") == claims,
           f"{what}: identity fields (issuer, subject, audience, alg, kid, jti, times, claims)",
           json.dumps(ident, indent=1))


def body(tap):
    keys = {alg: gen_key(alg) for alg in ALGS}
    stranger = {alg: gen_key(alg) for alg in ("RS256", "ES256", "EdDSA")}

    with ft.tempdir() as d:
        # The key set as joserfc exports it (public members only).
        exported = KeySet(list(keys.values())).as_dict(private=False)
        tap.ok(all(not ({"d", "p", "q", "dp", "dq", "qi"} & set(k)) for k in exported["keys"]),
               "joserfc JWKS export holds public members only")
        jwks_path = ft.write_json(os.path.join(d, "jwks.json"), exported)

        tokens = {}
        for i, alg in enumerate(ALGS):
            c = ft.claims(ISS, AUD, sub=f"interop-{alg}", email=f"{alg.lower()}@example.test",
                          groups=["ml", "gpu"], nested={"a": [1, 2, {"b": None}]},
                          unicode="h\u00e9llo \u2603")
            tokens[alg] = (sign(keys[alg], alg, c), c)

        # 1. single-token mode, one alg allowed at a time
        for alg in ALGS:
            tok, c = tokens[alg]
            r = ft.ferry(*ft.verify_args(ISS, jwks_path, AUD, algs=[alg]), tok)
            if tap.eq(r.rc, 0, f"{alg}: joserfc token accepted (exit 0)", r):
                check_identity(tap, alg, r.json(), c, alg, keys[alg].kid)
            else:
                tap.ok(False, f"{alg}: identity fields (not checked: refused)")

        # 2. the same token from stdin ("-")
        tok, c = tokens["ES256"]
        r = ft.ferry(*ft.verify_args(ISS, jwks_path, AUD, algs=["ES256"]), "-", stdin=tok + "\n")
        tap.ok(r.rc == 0 and (r.json() or {}).get("subject") == c["sub"],
               "ES256: token read from stdin accepted", r)

        # 3. --batch, every alg allowed, the tokens in a mix with refused ones
        stranger_tok = sign(stranger["RS256"], "RS256", ft.claims(ISS, AUD))
        batch = []
        expect = []  # (line, alg or None for refused)
        for alg in ALGS:
            batch.append(tokens[alg][0])
            expect.append(alg)
            if alg in ("RS512", "ES384"):
                batch.append(stranger_tok)
                expect.append(None)
        r = ft.ferry(*ft.verify_args(ISS, jwks_path, AUD, algs=ALGS, extra=["--batch"]),
                     stdin="\n".join(batch) + "\n")
        out = r.lines()
        tap.eq(r.rc, 1, "--batch with a refused token exits 1", r)
        tap.eq(len(out), len(batch), "--batch prints exactly one line per token", r)
        good = True
        for i, want in enumerate(expect):
            line = out[i] if i < len(out) else None
            if not isinstance(line, dict) or line.get("line") != i + 1:
                good = False
                tap.diag(f"line {i + 1}: {line}")
                continue
            if want is None:
                good &= line.get("verified") is False and line.get("reason") in (
                    "unknown_kid", "bad_signature")
            else:
                c = tokens[want][1]
                good &= (line.get("verified") is True and line.get("alg") == want
                         and line.get("kid") == keys[want].kid and line.get("claims") == c
                         and line.get("subject") == c["sub"])
            if not good:
                tap.diag(f"line {i + 1}: {line}")
        tap.ok(good, "--batch: each line numbered, accepted/refused and identified correctly")

        only_good = "\n".join(tokens[a][0] for a in ALGS) + "\n"
        r = ft.ferry(*ft.verify_args(ISS, jwks_path, AUD, algs=ALGS, extra=["--batch"]),
                     stdin=only_good)
        tap.ok(r.rc == 0 and [x.get("verified") for x in r.lines()] == [True] * len(ALGS)
               and [x.get("line") for x in r.lines()] == list(range(1, len(ALGS) + 1)),
               "--batch with only joserfc tokens of all 9 algs: all accepted, exit 0", r)

        # 4. negative interop
        for alg in ("RS256", "ES256", "EdDSA"):
            c = ft.claims(ISS, AUD)
            # a key that is not in the JWKS, with its own kid
            r = ft.ferry(*ft.verify_args(ISS, jwks_path, AUD, algs=ALGS),
                         sign(stranger[alg], alg, c))
            tap.ok(r.rc == 1 and (r.json() or {}).get("reason") == "unknown_kid"
                   and (r.json() or {}).get("verified") is False,
                   f"{alg}: key not in the JWKS (own kid) refused: unknown_kid", r)
            # the same foreign key claiming the kid of a JWKS key
            r = ft.ferry(*ft.verify_args(ISS, jwks_path, AUD, algs=ALGS),
                         sign(stranger[alg], alg, c, kid=keys[alg].kid))
            tap.ok(r.rc == 1 and (r.json() or {}).get("reason") == "bad_signature",
                   f"{alg}: key not in the JWKS using a JWKS kid refused: bad_signature", r)

        # alg outside the --alg list (token otherwise valid)
        for alg, allowed in (("ES256", ["RS256"]), ("PS256", ["RS256"]), ("RS256", ["PS256"]),
                             ("EdDSA", ["ES256", "ES384"])):
            r = ft.ferry(*ft.verify_args(ISS, jwks_path, AUD, algs=allowed), tokens[alg][0])
            tap.ok(r.rc == 1 and (r.json() or {}).get("reason") == "alg_not_allowed",
                   f"{alg} token with --alg {','.join(allowed)}: alg_not_allowed", r)

        # RFC 9864 fully-specified "Ed25519" alg: joserfc 1.6.5 signs it; ferry accepts only
        # RFC 8037 "EdDSA" (the documented alg name policy) and must refuse it.
        k = keys["EdDSA"]
        tok = sign(k, "Ed25519", ft.claims(ISS, AUD))
        r = ft.ferry(*ft.verify_args(ISS, jwks_path, AUD, algs=["EdDSA"]), tok)
        tap.ok(r.rc == 1 and (r.json() or {}).get("reason") == "alg_not_allowed",
               "joserfc alg \"Ed25519\" (RFC 9864) refused with alg_not_allowed", r)

        # A JWK that pins alg RS256 cannot verify a PS256 token made with the same RSA key (B2).
        rsa = keys["PS256"]
        pinned = dict(rsa.as_dict(private=False), alg="RS256", use="sig")
        pinned_path = ft.write_json(os.path.join(d, "pinned.json"), {"keys": [pinned]})
        c = ft.claims(ISS, AUD)
        r = ft.ferry(*ft.verify_args(ISS, pinned_path, AUD, algs=["RS256", "PS256"]),
                     sign(rsa, "PS256", c))
        tap.ok(r.rc == 1 and (r.json() or {}).get("reason") == "key_mismatch",
               "PS256 token on a JWK pinned to alg RS256: key_mismatch", r)
        r = ft.ferry(*ft.verify_args(ISS, pinned_path, AUD, algs=["RS256", "PS256"]),
                     sign(rsa, "RS256", c))
        tap.eq(r.rc, 0, "RS256 token on the same pinned JWK (use sig) accepted", r)

        # A token joserfc signed, then altered by one payload byte: refused.
        tok, c = tokens["ES384"]
        h, p, s = tok.split(".")
        c2 = dict(c, sub="someone-else")
        forged = h + "." + ft.b64u(ft.jdump(c2)) + "." + s
        r = ft.ferry(*ft.verify_args(ISS, jwks_path, AUD, algs=["ES384"]), forged)
        tap.ok(r.rc == 1 and (r.json() or {}).get("reason") == "bad_signature",
               "ES384 joserfc token with a changed sub: bad_signature", r)


if __name__ == "__main__":
    ft.main("test_joserfc_interop", body)
