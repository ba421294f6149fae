#!/usr/bin/env python3
# TAP: `ferry token verify` and `ferry token inspect` as a user runs them.
#   - every profile (id_token, access_token, kubernetes, github_actions) accepts a token of its
#     real shape and refuses the SECURITY-TESTS A-C rows that apply from the CLI with a precise
#     reason (exit 1, {"verified":false,"reason":...});
#   - --config with two issuers, cross-issuer key use refused (C8);
#   - configuration and usage errors exit 2 and name the problem;
#   - token from the argument vs stdin; --batch with good, bad, empty and over-long lines;
#   - inspect prefixes every line with UNVERIFIED and never claims verification.
# Tokens are crafted byte by byte with `cryptography` (ferrytest.make_token).
import json
import os
import re
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402
from ferrytest import NOW, make_token  # noqa: E402

ISS = "https://issuer-a.test"
ISS_B = "https://issuer-b.test/tenant"
AT_ISS = "https://as.example.test"
K8S_ISS = "https://kubernetes.default.svc.cluster.local"
GH_ISS = "https://token.actions.githubusercontent.com"
AUD = "ferry"


def expect_refused(tap, desc, r, reasons):
    """exit 1, one JSON object {"verified": false, "reason": R} with R in reasons."""
    reasons = (reasons,) if isinstance(reasons, str) else tuple(reasons)
    j = r.json() or {}
    return tap.ok(r.rc == 1 and j.get("verified") is False and j.get("reason") in reasons
                  and "subject" not in j and "claims" not in j,
                  f"{desc}: refused ({'|'.join(reasons)})", r)


def expect_accepted(tap, desc, r, **fields):
    j = r.json() or {}
    bad = {k: j.get(k) for k, v in fields.items() if j.get(k) != v}
    return tap.ok(r.rc == 0 and j.get("verified") is True and not bad,
                  f"{desc}: accepted" + (f" ({', '.join(fields)})" if fields else ""),
                  f"{r}\nmismatched: {bad}")


def expect_usage(tap, desc, r, *needles):
    """exit 2, nothing on stdout claiming a decision, stderr naming the problem."""
    low = r.err.lower()
    missing = [n for n in needles if n.lower() not in low]
    return tap.ok(r.rc == 2 and '"verified"' not in r.out and not missing,
                  f"{desc}: exit 2, message names {', '.join(map(repr, needles)) or 'it'}",
                  f"{r}\nmissing in stderr: {missing}")


def body(tap):
    rsa = ft.Key("RSA", "rsa-1")
    p256 = ft.Key("P-256", "ec-1")
    p384 = ft.Key("P-384", "ec-384")
    ed = ft.Key("Ed25519", "ed-1")
    at_key = ft.Key("RSA", "as-1")
    k8s_key = ft.Key("RSA", "k8s-1")
    gh_key = ft.Key("RSA", "gh-1")

    with ft.tempdir() as d:
        jwks_a = ft.write_json(os.path.join(d, "a.json"), ft.jwks(rsa, p256, p384, ed))
        jwks_at = ft.write_json(os.path.join(d, "at.json"), ft.jwks(at_key))
        jwks_k8s = ft.write_json(os.path.join(d, "k8s.json"), ft.jwks(k8s_key))
        jwks_gh = ft.write_json(os.path.join(d, "gh.json"), ft.jwks(gh_key))
        all_algs = ("RS256", "ES256", "ES384", "EdDSA")

        def verify(tok, *extra, algs=all_algs, profile=None, issuer=ISS, jwks=jwks_a,
                   now=NOW, audience=AUD, stdin=None):
            args = ft.verify_args(issuer, jwks, audience, algs=algs, profile=profile, now=now,
                                  extra=extra)
            if tok is not None:
                args.append(tok)
            return ft.ferry(*args, stdin=stdin)

        def idt(**kw):
            """A valid id_token (RS256, typ JWT) with claims overridden by kw."""
            key = kw.pop("key", rsa)
            alg = kw.pop("alg", "RS256")
            typ = kw.pop("typ", "JWT")
            extra_header = kw.pop("extra_header", None)
            cl = ft.claims(ISS, AUD, sub="alice")
            for k, v in kw.items():
                if v is None:
                    cl.pop(k, None)
                else:
                    cl[k] = v
            return make_token(key, alg, cl, typ=typ, extra_header=extra_header)

        # ---- profiles: accepted shapes ------------------------------------------------------
        c = ft.claims(ISS, AUD, sub="alice", nonce="n-0S6_WzA2Mj", auth_time=NOW - 100,
                      azp=AUD, email="alice@example.test")
        tok = make_token(rsa, "RS256", c, typ="JWT")
        r = verify(tok)
        expect_accepted(tap, "id_token RS256 typ JWT", r, issuer=ISS, subject="alice",
                        audience=[AUD], profile="id_token", alg="RS256", kid="rsa-1",
                        jti=c["jti"], exp=c["exp"], iat=c["iat"], nbf=c["nbf"], claims=c)
        r2 = verify("-", stdin=tok + "\n")
        tap.ok(r2.rc == 0 and r2.json() == r.json(),
               "same token from stdin ('-') gives the same identity", r2)
        r2 = verify(None, stdin=tok)
        tap.ok(r2.rc == 0 and r2.json() == r.json(),
               "token from stdin without '-' and without a newline", r2)
        for key, alg in ((p256, "ES256"), (p384, "ES384"), (ed, "EdDSA")):
            expect_accepted(tap, f"id_token {alg}, no typ",
                            verify(idt(key=key, alg=alg, typ=None)), alg=alg, kid=key.kid)
        multi = make_token(rsa, "RS256", ft.claims(ISS, ["other", AUD], sub="alice", azp=AUD))
        expect_accepted(tap, "id_token with two audiences incl. ours", verify(multi),
                        audience=["other", AUD])
        expect_accepted(tap, "exp 30 s ago is inside the default 60 s leeway",
                        verify(idt(exp=NOW - 30, iat=NOW - 600, nbf=NOW - 600)))
        expect_accepted(tap, "typ 'jwt' (case-insensitive) at an id_token issuer",
                        verify(idt(typ="jwt")))
        expect_accepted(tap, "no kid, exactly one key of the set fits the alg",
                        verify(make_token(rsa, "RS256", ft.claims(ISS, AUD), kid=False)),
                        kid=None)
        expect_refused(tap, "C6 typ JOSE at an id_token issuer", verify(idt(typ="JOSE")),
                       "bad_typ")

        at_claims = ft.claims(AT_ISS, AUD, sub="svc-trainer", client_id="trainer",
                              scope="datasets:read models:write")
        for typ in ("at+jwt", "application/at+jwt"):
            expect_accepted(tap, f"access_token typ {typ}",
                            verify(make_token(at_key, "RS256", at_claims, typ=typ),
                                   issuer=AT_ISS, jwks=jwks_at, profile="access_token"),
                            profile="access_token", subject="svc-trainer")

        k8s_claims = {
            "aud": [AUD], "exp": NOW + 3600, "iat": NOW - 5, "nbf": NOW - 5, "iss": K8S_ISS,
            "jti": "3b5c8d2e-6f1a-4a8e-9d2b-7c1e0f9a8b7c",
            "kubernetes.io": {
                "namespace": "ml",
                "node": {"name": "gpu-node-7", "uid": "0b9a7e2c-1111-2222-3333-444455556666"},
                "pod": {"name": "trainer-0", "uid": "7d1f3c5e-aaaa-bbbb-cccc-ddddeeeeffff"},
                "serviceaccount": {"name": "trainer",
                                   "uid": "5a2e4c6d-1234-5678-9abc-def012345678"},
            },
            "sub": "system:serviceaccount:ml:trainer",
        }
        k8s_tok = make_token(k8s_key, "RS256", k8s_claims)  # header {alg, kid} as kube issues
        expect_accepted(tap, "kubernetes service-account token",
                        verify(k8s_tok, issuer=K8S_ISS, jwks=jwks_k8s, profile="kubernetes"),
                        profile="kubernetes", subject="system:serviceaccount:ml:trainer",
                        claims=k8s_claims)

        gh_claims = {
            "jti": "example-id", "sub": "repo:octo-org/octo-repo:environment:prod",
            "environment": "prod", "aud": AUD, "ref": "refs/heads/main",
            "sha": "example-sha", "repository": "octo-org/octo-repo",
            "repository_owner": "octo-org", "actor_id": "12", "repository_visibility":
            "private", "repository_id": "74", "repository_owner_id": "65", "run_id":
            "example-run-id", "run_number": "10", "run_attempt": "2",
            "runner_environment": "github-hosted", "actor": "octocat",
            "workflow": "example-workflow", "head_ref": "", "base_ref": "",
            "event_name": "workflow_dispatch", "ref_type": "branch",
            "job_workflow_ref":
                "octo-org/octo-automation/.github/workflows/oidc.yml@refs/heads/main",
            "iss": GH_ISS, "nbf": NOW - 20, "exp": NOW + 280, "iat": NOW - 20,
        }
        gh = dict(issuer=GH_ISS, jwks=jwks_gh, profile="github_actions")
        expect_accepted(tap, "github_actions token {typ, alg, kid}",
                        verify(make_token(gh_key, "RS256", gh_claims, typ="JWT"), **gh),
                        profile="github_actions", subject=gh_claims["sub"], audience=[AUD])
        # GitHub's real header also carries x5t (a certificate thumbprint, nothing to fetch;
        # docs.github.com "About security hardening with OpenID Connect"): accepted, never used.
        r = verify(make_token(gh_key, "RS256", gh_claims, header={
            "typ": "JWT", "alg": "RS256", "x5t": ft.b64u(os.urandom(20)), "kid": "gh-1"}), **gh)
        tap.ok(r.rc == 0 and (r.json() or {}).get("subject") == gh_claims["sub"],
               "github_actions token with GitHub's real header {typ, alg, x5t, kid}: accepted", r)

        # ---- profile-specific refusals -------------------------------------------------------
        expect_refused(tap, "C6 at+jwt token to an id_token issuer",
                       verify(idt(typ="at+jwt")), "bad_typ")
        for typ in ("JWT", None, "dpop+jwt"):
            expect_refused(tap, f"C6 access_token with typ {typ}",
                           verify(make_token(at_key, "RS256", at_claims, typ=typ), issuer=AT_ISS,
                                  jwks=jwks_at, profile="access_token"), "bad_typ")
        expect_refused(tap, "C6 dpop+jwt to an id_token issuer", verify(idt(typ="dpop+jwt")),
                       "bad_typ")
        k8s = dict(issuer=K8S_ISS, jwks=jwks_k8s, profile="kubernetes")
        legacy = {k: v for k, v in k8s_claims.items() if k != "kubernetes.io"}
        expect_refused(tap, "kubernetes token without the kubernetes.io claim",
                       verify(make_token(k8s_key, "RS256", legacy), **k8s), "missing_claim")
        kio = k8s_claims["kubernetes.io"]
        for desc, over in (
                ("sub not system:serviceaccount:<ns>:<name>", dict(sub="trainer")),
                ("sub with an empty namespace", dict(sub="system:serviceaccount::trainer")),
                ("kubernetes.io namespace differs from sub",
                 {"kubernetes.io": dict(kio, namespace="kube-system")}),
                ("kubernetes.io serviceaccount.name differs from sub",
                 {"kubernetes.io": dict(kio, serviceaccount={"name": "admin", "uid": "1"})}),
                ("kubernetes.io not an object (wrong type: bad_claim)", {"kubernetes.io": "ml"})):
            expect_refused(tap, f"kubernetes: {desc}",
                           verify(make_token(k8s_key, "RS256", dict(k8s_claims, **over)), **k8s),
                           "bad_claim" if "wrong type" in desc else "bad_subject")
        expect_refused(tap, "access_token without client_id",
                       verify(make_token(at_key, "RS256", {k: v for k, v in at_claims.items()
                                                           if k != "client_id"}, typ="at+jwt"),
                              issuer=AT_ISS, jwks=jwks_at, profile="access_token"),
                       "missing_claim")
        expect_refused(tap, "C8 kubernetes-shaped token signed by issuer A's key",
                       verify(make_token(rsa, "RS256", k8s_claims, kid="k8s-1"),
                              issuer=K8S_ISS, jwks=jwks_k8s, profile="kubernetes"),
                       "bad_signature")
        for claim in ("sub", "repository", "repository_owner", "ref", "jti"):
            expect_refused(tap, f"github_actions token without {claim}",
                           verify(make_token(gh_key, "RS256",
                                             {k: v for k, v in gh_claims.items() if k != claim},
                                             typ="JWT"), **gh), "missing_claim")

        # ---- A: parsing and encoding --------------------------------------------------------
        good = idt()
        h, p, s = good.split(".")
        big = idt(pad="x" * 9000)
        tap.ok(len(big) > 8192, "A1 fixture: a validly signed token over 8 KiB")
        expect_refused(tap, "A1 9 KiB validly signed token", verify(big), "too_large")
        for size, label in ((1 << 20, "1 MiB"), (16 << 20, "16 MiB")):
            t0 = time.monotonic()
            r = verify("-", stdin=b"e" * size + b".e.e\n")
            expect_refused(tap, f"A1 {label} token on stdin", r, "too_large")
            tap.ok(time.monotonic() - t0 < 5, f"A1 {label} refused within 5 s",
                   f"{time.monotonic() - t0:.2f} s")
        for desc, t in (("2 segments", f"{h}.{p}"), ("4 segments", f"{h}.{p}.{s}.{s}"),
                        ("5 segments", f"{h}.{p}.{s}.{s}.{s}"), ("trailing dot", good + "."),
                        ("empty header", f".{p}.{s}"), ("empty signature", f"{h}.{p}."),
                        ("single segment", h), ("only dots", "..")):
            expect_refused(tap, f"A2 {desc}", verify(t), "malformed")
        for desc, t in (("'=' padding on header", f"{h}==.{p}.{s}"),
                        ("'=' padding on signature", f"{h}.{p}.{s}="),
                        ("'+' in signature", f"{h}.{p}.{s[:-2]}+{s[-1]}"),
                        ("'/' in payload", f"{h}.{p[:-2]}/{p[-1]}"),
                        ("space inside payload", f"{h}.{p[:10]} {p[10:]}.{s}"),
                        ("leading space", " " + good), ("'!' in header", f"{h[:-1]}!.{p}.{s}"),
                        ("len % 4 == 1 signature", f"{h}.{p}.{s}" + "A" * ((1 - len(s)) % 4))):
            expect_refused(tap, f"A3 {desc}", verify(t), "malformed")
        expect_refused(tap, "A4 duplicate member in the header",
                       verify(make_token(rsa, "RS256", ft.claims(ISS, AUD),
                                         header_raw=b'{"alg":"RS256","kid":"rsa-1",'
                                                    b'"alg":"RS256"}')),
                       "malformed")
        expect_refused(tap, "A4 header is an array",
                       verify(make_token(rsa, "RS256", ft.claims(ISS, AUD),
                                         header_raw=b'["RS256"]')), "malformed")
        for alg in ("none", "None", "NONE", "nOnE"):
            expect_refused(tap, f"A5 alg {alg!r} with an empty signature",
                           verify(make_token(None, alg, ft.claims(ISS, AUD, sub="alice"),
                                             kid="rsa-1")), "malformed")
            expect_refused(tap, f"A5 alg {alg!r} with a signature",
                           verify(make_token(None, alg, ft.claims(ISS, AUD, sub="alice"),
                                             kid="rsa-1", sig=os.urandom(256))),
                           "alg_not_allowed")
        expect_refused(tap, "A5 alg 'rs256' (lowercase)",
                       verify(make_token(rsa, "RS256", ft.claims(ISS, AUD),
                                         header={"alg": "rs256", "kid": "rsa-1"})),
                       "alg_not_allowed")
        expect_refused(tap, "A5 alg 'RS256 ' (trailing space)",
                       verify(make_token(rsa, "RS256", ft.claims(ISS, AUD),
                                         header={"alg": "RS256 ", "kid": "rsa-1"})),
                       "alg_not_allowed")
        expect_refused(tap, "A5 ES384 token when only RS256 is allowed",
                       verify(idt(key=p384, alg="ES384"), algs=("RS256",)), "alg_not_allowed")
        for hdr in ({"crit": ["exp"], "exp": NOW}, {"b64": False, "crit": ["b64"]},
                    {"cty": "JWT"}, {"zip": "DEF"}, {"jwk": p256.public_jwk()},
                    {"x5c": ["MIIB"]}):
            expect_refused(tap, f"A6/A7 header {sorted(hdr)}", verify(idt(extra_header=hdr)),
                           "bad_header")

        # ---- B: algorithm and key binding ----------------------------------------------------
        pem = rsa.public_pem()
        for alg, secret, label in (("HS256", pem, "PEM"),
                                   ("HS256", json.dumps(rsa.public_jwk()).encode(), "JWK JSON"),
                                   ("HS384", pem, "PEM"), ("HS512", b"", "empty key")):
            signing = ft.b64u(ft.jdump({"alg": alg, "kid": "rsa-1"})) + "." + ft.b64u(
                ft.jdump(ft.claims(ISS, AUD, sub="alice")))
            forged = signing + "." + ft.b64u(ft.hs_sign(alg, secret, signing.encode()))
            expect_refused(tap, f"B1 {alg} keyed with the public key ({label})",
                           verify(forged, algs=("RS256",)), "alg_not_allowed")
        expect_refused(tap, "B2 RS256 header on an EC kid",
                       verify(make_token(rsa, "RS256", ft.claims(ISS, AUD), kid="ec-1")),
                       "key_mismatch")
        expect_refused(tap, "B2 ES384 header on the P-256 key",
                       verify(make_token(p384, "ES384", ft.claims(ISS, AUD), kid="ec-1")),
                       "key_mismatch")
        expect_refused(tap, "B2 ES256 header on the P-384 key",
                       verify(make_token(p256, "ES256", ft.claims(ISS, AUD), kid="ec-384")),
                       "key_mismatch")
        expect_refused(tap, "B6 unknown kid", verify(idt(extra_header={"kid": "nope"})),
                       "unknown_kid")
        sig = ft.b64u(b"\x00" * 64)
        expect_refused(tap, "B3 ES256 signature r = s = 0",
                       verify(f"{idt(key=p256, alg='ES256').rsplit('.', 1)[0]}.{sig}"),
                       "bad_signature")
        flipped = good[:-3] + ("A" if good[-3] != "A" else "B") + good[-2:]
        expect_refused(tap, "one signature character changed", verify(flipped), "bad_signature")

        # ---- C: claims -------------------------------------------------------------------
        cases = [
            ("C1 expired 61 s ago (leeway 60)", dict(exp=NOW - 61, iat=NOW - 600, nbf=NOW - 600),
             "expired"),
            ("C1 exp before iat", dict(exp=NOW + 10, iat=NOW + 50, nbf=None), "bad_claim"),
            ("C1 exp missing", dict(exp=None), "missing_claim"),
            ("C1 exp a string", dict(exp=str(NOW + 60)), "bad_claim"),
            ("C1 exp a float 1e300", dict(exp=1e300), "bad_claim"),
            ("C1 exp a float 1700000600.0", dict(exp=float(NOW + 600)), "bad_claim"),
            ("C1 exp negative", dict(exp=-1), "bad_claim"),
            ("C1 exp int64 max", dict(exp=2**63 - 1), "lifetime_too_long"),
            ("C1 exp 2^64 (beyond 64 bits)", dict(exp=2**64), "bad_claim"),
            ("C1 lifetime over 24 h", dict(exp=NOW + 2 * 86400), "lifetime_too_long"),
            ("C2 nbf 61 s ahead", dict(nbf=NOW + 61), "not_yet_valid"),
            ("C2 iat 61 s ahead", dict(iat=NOW + 61), "issued_in_future"),
            ("C2 iat missing (id_token)", dict(iat=None), "missing_claim"),
            ("C3 iss with a trailing slash", dict(iss=ISS + "/"), "unknown_issuer"),
            ("C3 iss in another case", dict(iss=ISS.upper()), "unknown_issuer"),
            ("C3 iss with a NUL", dict(iss=ISS + "\u0000"), "malformed"),
            ("C3 iss not a string", dict(iss=[ISS]), "unknown_issuer"),
            ("C3 iss missing", dict(iss=None), "unknown_issuer"),
            ("C3 unknown issuer", dict(iss="https://evil.test"), "unknown_issuer"),
            ("C4 aud of someone else", dict(aud="other"), "bad_audience"),
            ("C4 aud in another case", dict(aud="Ferry"), "bad_audience"),
            ("C4 aud with a space", dict(aud=AUD + " "), "bad_audience"),
            ("C4 aud empty array", dict(aud=[]), "bad_audience"),
            ("C4 aud a number", dict(aud=7), "bad_audience"),
            ("C4 aud an array with a number", dict(aud=[AUD, 7]), "bad_audience"),
            ("C4 aud missing", dict(aud=None), "bad_audience"),
            ("C5 sub missing", dict(sub=None), "missing_claim"),
            ("C5 sub empty", dict(sub=""), "bad_subject"),
            ("C5 sub not a string", dict(sub=42), "bad_subject"),
        ]
        for desc, over, reason in cases:
            cl = ft.claims(ISS, AUD, sub="alice")
            for k, v in over.items():
                if v is None:
                    cl.pop(k, None)
                else:
                    cl[k] = v
            expect_refused(tap, desc, verify(make_token(rsa, "RS256", cl, typ="JWT")), reason)
        dup = (b'{"iss":"%s","sub":"alice","sub":"admin","aud":"%s","iat":%d,"exp":%d}'
               % (ISS.encode(), AUD.encode(), NOW, NOW + 60))
        expect_refused(tap, "C5 duplicate claim name (sub twice)",
                       verify(make_token(rsa, "RS256", payload_raw=dup)), "malformed")
        expect_refused(tap, "claims not an object",
                       verify(make_token(rsa, "RS256", payload_raw=b'["a"]')), "malformed")
        expect_refused(tap, "claims not JSON",
                       verify(make_token(rsa, "RS256", payload_raw=b"hello")), "malformed")
        expect_refused(tap, "C1 --leeway 0 and exp 1 s ago",
                       verify(idt(exp=NOW - 1, iat=NOW - 100), "--leeway", "0"), "expired")
        expect_refused(tap, "without --now the real clock decides (token expired in 2023)",
                       verify(good, now=None), "expired")
        r = verify(good)
        tap.ok(r.rc == 0, "... and with --now the same token is accepted", r)

        # ---- C8: two issuers from --config --------------------------------------------------
        b_key = ft.Key("RSA", "rsa-1")  # same kid as issuer A's RSA key, another key
        b_key2 = ft.Key("P-256", "b-ec")
        conf = {"issuers": [
            {"issuer": ISS, "audiences": [AUD], "jwks_file": jwks_a,
             "algorithms": ["RS256", "ES256"]},
            {"issuer": ISS_B, "audiences": ["ferry-b"], "jwks": ft.jwks(b_key, b_key2),
             "algorithms": ["RS256", "ES256"], "profile": "id_token"},
        ]}
        conf_path = ft.write_json(os.path.join(d, "two.json"), conf)

        def vconf(tok, path=conf_path, *extra):
            return ft.ferry("token", "verify", "--config", path, "--now", NOW, *extra, tok)

        expect_accepted(tap, "--config: issuer A token", vconf(idt()), issuer=ISS)
        tok_b = make_token(b_key, "RS256", ft.claims(ISS_B, "ferry-b", sub="bob"))
        expect_accepted(tap, "--config: issuer B token (inline jwks)", vconf(tok_b),
                        issuer=ISS_B, subject="bob", audience=["ferry-b"])
        expect_refused(tap, "C8 issuer A's key, same kid, token claims issuer B",
                       vconf(make_token(rsa, "RS256", ft.claims(ISS_B, "ferry-b"))),
                       "bad_signature")
        expect_refused(tap, "C8 issuer A's EC key and kid, token claims issuer B",
                       vconf(make_token(p256, "ES256", ft.claims(ISS_B, "ferry-b"))),
                       "unknown_kid")
        expect_refused(tap, "C8 issuer B's key, token claims issuer A",
                       vconf(make_token(b_key2, "ES256", ft.claims(ISS, AUD), kid="ec-1")),
                       "bad_signature")
        expect_refused(tap, "C4 issuer A token with issuer B's audience",
                       vconf(make_token(rsa, "RS256", ft.claims(ISS, "ferry-b"))),
                       "bad_audience")
        expect_refused(tap, "--config: EdDSA not in issuer A's algorithms",
                       vconf(idt(key=ed, alg="EdDSA")), "alg_not_allowed")

        # required_claims (the GitHub example of docs/configuration.md)
        ghc = ft.write_json(os.path.join(d, "gh.conf"), {"issuers": [
            {"issuer": GH_ISS, "audiences": [AUD], "jwks_file": jwks_gh,
             "profile": "github_actions",
             "required_claims": {"repository_owner": "octo-org", "environment": None,
                                 "runner_environment": "github-hosted"}}]})
        expect_accepted(tap, "required_claims hold", vconf(make_token(gh_key, "RS256", gh_claims),
                                                           ghc), profile="github_actions")
        expect_refused(tap, "required_claims: repository_owner of another org",
                       vconf(make_token(gh_key, "RS256",
                                        dict(gh_claims, repository_owner="evil-org")), ghc),
                       "claim_mismatch")
        expect_refused(tap, "required_claims: runner_environment with another JSON type",
                       vconf(make_token(gh_key, "RS256",
                                        dict(gh_claims, runner_environment=["github-hosted"])),
                             ghc), "claim_mismatch")
        expect_refused(tap, "required_claims: environment (null = must be present) missing",
                       vconf(make_token(gh_key, "RS256", {k: v for k, v in gh_claims.items()
                                                          if k != "environment"}), ghc),
                       "missing_claim")

        # ---- configuration and usage errors ---------------------------------------------
        def bad_conf(name, text):
            path = os.path.join(d, name)
            with open(path, "w") as f:
                f.write(text)
            return path

        unk = ft.write_json(os.path.join(d, "unk.json"), {"issuers": [
            dict(conf["issuers"][0], colour="blue")]})
        expect_usage(tap, "config: unknown issuer member", vconf(good, unk), "colour")
        expect_usage(tap, "config: missing file",
                     vconf(good, os.path.join(d, "nope.json")), "nope.json")
        expect_usage(tap, "config: bad JSON", vconf(good, bad_conf("bad.json", '{"issuers": [')),
                     "bad.json")
        dupc = bad_conf("dup.json", '{"issuers": [], "issuers": []}')
        expect_usage(tap, "config: duplicate member", vconf(good, dupc), "dup.json")
        twice = ft.write_json(os.path.join(d, "twice.json"),
                              {"issuers": [conf["issuers"][0], conf["issuers"][0]]})
        expect_usage(tap, "config: same issuer twice", vconf(good, twice), ISS)
        noaud = ft.write_json(os.path.join(d, "noaud.json"), {"issuers": [
            {"issuer": ISS, "audiences": [], "jwks_file": jwks_a}]})
        expect_usage(tap, "config: empty audiences", vconf(good, noaud), "audiences")
        badalg = ft.write_json(os.path.join(d, "badalg.json"), {"issuers": [
            dict(conf["issuers"][0], algorithms=["RS256", "HS256"])]})
        expect_usage(tap, "config: algorithms lists HS256", vconf(good, badalg), "HS256")
        expect_usage(tap, "--jwks before --issuer",
                     ft.ferry("token", "verify", "--jwks", jwks_a, "--issuer", ISS,
                              "--audience", AUD, good), "--jwks")
        for v in ("abc", "-5", "0", "1e9", "", "17000000000000000000000"):
            expect_usage(tap, f"bad --now {v!r}", verify(good, now=v), "--now")
        expect_usage(tap, "--alg none", verify(good, algs=("none",)), "none")
        expect_usage(tap, "--profile unknown", verify(good, profile="saml"), "saml")
        expect_usage(tap, "--issuer without --audience",
                     ft.ferry("token", "verify", "--issuer", ISS, "--jwks", jwks_a, good),
                     "--audience")
        expect_usage(tap, "--config with --issuer",
                     ft.ferry("token", "verify", "--config", conf_path, "--issuer", ISS, good),
                     "--config")
        expect_usage(tap, "no token on stdin", verify(None, stdin=""), "no token")
        expect_usage(tap, "two tokens on stdin without --batch",
                     verify(None, stdin=good + "\n" + good + "\n"), "--batch")
        expect_usage(tap, "two token arguments", verify(good, good), "one token")
        expect_usage(tap, "unknown option", verify(good, "--frobnicate"), "usage")
        r = verify(None, "--jwks", jwks_a)
        tap.ok(r.rc == 2, "a second --jwks for one issuer: exit 2", r)
        r = ft.ferry("token", "verify", "--issuer", ISS, "--jwks", os.path.join(d, "none.json"),
                     "--audience", AUD, "--now", NOW, good)
        expect_usage(tap, "--jwks FILE that does not exist", r, "none.json")
        r = ft.ferry("token", "verify", "--help")
        tap.ok(r.rc == 0 and "--batch" in r.out and "--now" in r.out, "verify --help, exit 0",
               r)

        # ---- --batch ------------------------------------------------------------------------
        expired = idt(exp=NOW - 3600, iat=NOW - 4000, nbf=NOW - 4000)
        lines = [
            (good, True, None),
            (expired, False, "expired"),
            ("garbage", False, "malformed"),
            ("", False, "malformed"),
            (idt() + "\r", True, None),          # CRLF line ending
            (big, False, "too_large"),            # 9 KiB: refused by the verifier
            ("A" * (70 * 1024), False, "too_large"),  # over the CLI's 64 KiB line cap
            (idt(key=ed, alg="EdDSA"), True, None),
            (idt(iss="https://evil.test"), False, "unknown_issuer"),
            (good, True, None),
        ]
        stdin = "".join(t + "\n" for t, _, _ in lines)
        r = verify(None, "--batch", stdin=stdin)
        out = r.lines()
        tap.eq(r.rc, 1, "--batch mixed: exit 1 when any token is refused", r)
        tap.eq(len(out), len(lines), "--batch mixed: one output line per input line", r)
        ok = len(out) == len(lines)
        for i, (_, accepted, reason) in enumerate(lines):
            o = out[i] if i < len(out) else None
            good_line = (isinstance(o, dict) and o.get("line") == i + 1
                         and o.get("verified") is accepted
                         and (accepted or o.get("reason") == reason))
            if not good_line:
                tap.diag(f"line {i + 1}: want {accepted} {reason}, got {o}")
            ok &= good_line
        tap.ok(ok, "--batch mixed: each result carries its line number and the right reason "
               "(over-long line too_large, next line still processed)")
        tap.ok(all(o is not None and "\n" not in json.dumps(o) for o in out)
               and all(len(x) < 20000 for x in r.out.splitlines()),
               "--batch output is compact JSON lines", r.out[:500])
        r = verify(None, "--batch", stdin=good + "\n" + idt(key=p256, alg="ES256") + "\n")
        tap.ok(r.rc == 0 and [o.get("verified") for o in r.lines()] == [True, True],
               "--batch all good: exit 0", r)
        r = verify(None, "--batch", stdin=good)  # last line without a newline
        tap.ok(r.rc == 0 and len(r.lines()) == 1 and r.lines()[0].get("line") == 1,
               "--batch: last line without a newline is processed", r)
        r = verify(None, "--batch", stdin="")
        tap.ok(r.rc == 2, "--batch with empty stdin: exit 2 (no token)", r)
        r = verify(good, "--batch")
        tap.ok(r.rc == 2, "--batch with a token argument: exit 2", r)
        tap.ok("alice" not in r.err and good not in r.err,
               "usage error does not echo the token", r)
        r = verify(expired)
        tap.ok("ferry: token refused: expired" in r.err and expired not in r.err
               and expired not in r.out,
               "refusal: reason on stderr, token never echoed", r)

        # ---- inspect ------------------------------------------------------------------------
        def inspect(tok=None, stdin=None):
            return ft.ferry("token", "inspect", *([tok] if tok is not None else []),
                            stdin=stdin)

        def all_unverified(r):
            ls = r.out.splitlines()
            return bool(ls) and all(x.startswith("UNVERIFIED") for x in ls)

        def never_claims(r):
            text = r.out.lower().replace("not verified", "")
            return not re.search(r"\bverified\b|\bvalid\b|\baccepted\b|signature ok", text)

        ctrl = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x9b]")
        r = inspect(good)
        tap.ok(r.rc == 0 and all_unverified(r) and "alice" in r.out and "rsa-1" in r.out,
               "inspect: every line says UNVERIFIED, header and claims shown", r)
        tap.ok(never_claims(r), "inspect: output never claims verification", r)
        tap.ok("exp = 2023-11-14T22:23:20Z" in r.out, "inspect: exp shown as a UTC time", r)
        r2 = inspect("-", stdin=good + "\n")
        tap.ok(r2.rc == 0 and r2.out == r.out, "inspect: token from stdin, same output", r2)
        none_tok = make_token(None, "none", ft.claims(ISS, AUD, sub="root"), kid=False)
        r = inspect(none_tok)
        tap.ok(all_unverified(r) and never_claims(r) and "root" in r.out,
               "inspect: alg none token, every line UNVERIFIED, no claim of validity", r)
        sneaky = make_token(rsa, "RS256", {"verified": True, "note": "valid\nsignature OK",
                                           "iss": ISS})
        r = inspect(sneaky)
        tap.ok(all_unverified(r), "inspect: claims that say verified/valid still UNVERIFIED",
               r)
        hostile = [
            ("garbage", "garbage"), ("empty token ..", ".."), ("2 segments", f"{h}.{p}"),
            ("5 segments", f"{h}.{p}.{s}.{s}.{s}"), ("non-base64", "!!!.???.***"),
            ("header not JSON", ft.b64u(b"not json") + "." + p + "." + s),
            ("header JSON with a newline in a string", ft.b64u(b'{"a":"x\\ny"}') + f".{p}.{s}"),
            ("raw newline and ESC in header bytes",
             ft.b64u(b'{"a\n\x1b[2K":1\n}\x1b]0;pwn\x07\r') + f".{p}.{s}"),
            ("raw CR/ESC in payload (not JSON)",
             f"{h}." + ft.b64u(b"\rUNVERIFIED? no: \x1b[1;32mVERIFIED\x1b[0m\r\n") + f".{s}"),
            ("invalid UTF-8", ft.b64u(b'{"a":"\xff\xfe"}') + f".{p}.{s}"),
            # jansson's error text quotes the offending byte raw ("... near '\x1b'")
            ("ESC where a member name belongs", ft.b64u(b'{"a":1,\x1b[31mX}') + f".{p}.{s}"),
            ("BEL after a value", f"{h}." + ft.b64u(b'{"a":1}\x07') + f".{s}"),
            ("NUL in header", ft.b64u(b'{"a":"\x00"}') + f".{p}.{s}"),
        ]
        for desc, t in hostile:
            r = inspect(t)
            tap.ok(r.rc in (0, 1) and all_unverified(r) and never_claims(r)
                   and not ctrl.search(r.out),
                   f"inspect {desc}: every line UNVERIFIED, no control characters", r)
        r = inspect("A" * (70 * 1024))
        tap.ok(r.rc == 1 and (not r.out.strip() or all_unverified(r)),
               "inspect: over-long token refused without unprefixed output", r)
        r = inspect(None, stdin="")
        tap.ok(r.rc == 2 and not r.out, "inspect: empty stdin exit 2", r)
        r = ft.ferry("token", "inspect", good, good)
        tap.ok(r.rc == 2 and not r.out, "inspect: two tokens exit 2", r)


if __name__ == "__main__":
    ft.main("test_cli_verify", body)
