#!/usr/bin/env python3
# TAP: `ferry token verify` with key sets fetched over HTTPS from the loopback IdP stand-in
# (tests/peers/idp_standin.py, TLS from a throwaway CA made by tests/peers/mkcerts.sh):
#   discovery and static jwks_uri; D1 discovery issuer mismatch; D2 http:// jwks_uri (and a
#   redirect to one; allowed only with allow_http_loopback on 127.0.0.1), untrusted CA;
#   D4 1,000 random unknown kids cause at most one refresh while valid tokens keep verifying;
#   D7 https_proxy in the environment is not used (a counting listener sees nothing) unless
#   "proxy" is configured; A7 jku/x5u/x5c headers: refused and nothing is fetched;
#   C3 an unknown issuer causes no request anywhere.
import json
import os
import random
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402
from ferrytest import NOW, make_token  # noqa: E402

AUD = "ferry"
DISCOVERY = "/.well-known/openid-configuration"
FETCH = {"connect_timeout_ms": 2000, "timeout_ms": 5000}


def reason(r):
    return (r.json() or {}).get("reason")


def body(tap):
    if not ft.standin_available():
        tap.skip("IdP stand-in", f"{ft.STANDIN} not present")
        return
    key = ft.Key("P-256", "k1")
    key2 = ft.Key("RSA", "k2")

    with ft.tempdir() as d:
        certs = ft.make_certs(os.path.join(d, "certs"))
        ca = os.path.join(certs, "ca.pem")
        jwks_path = ft.write_json(os.path.join(d, "jwks.json"), ft.jwks(key, key2))
        procs = []
        try:
            idp = ft.Standin(certs, jwks_path)
            procs.append(idp)
            plain = ft.Standin(None, jwks_path)  # plain HTTP, for the http:// rows
            procs.append(plain)
            iss = idp.base

            def config(name, *issuers):
                return ft.write_json(os.path.join(d, name), {"issuers": list(issuers)})

            def issuer(**kw):
                c = {"issuer": iss, "audiences": [AUD], "algorithms": ["ES256", "RS256"],
                     "ca_file": ca, "fetch": FETCH}
                c.update(kw)
                return {k: v for k, v in c.items() if v is not None}

            def verify(conf, *tokens, env=None, batch=False):
                args = ["token", "verify", "--config", conf, "--now", str(NOW)]
                if batch:
                    return ft.ferry(*args, "--batch", stdin="".join(t + "\n" for t in tokens),
                                    env=env, timeout=60)
                return ft.ferry(*args, tokens[0], env=env)

            def tok(k=key, alg="ES256", i=None, hdr=None, **kw):
                return make_token(k, alg, ft.claims(i or iss, AUD, **kw), typ="JWT",
                                  extra_header=hdr)

            # ---- discovery -------------------------------------------------------------
            disc = config("disc.json", issuer(discovery=True))
            idp.reset()
            r = verify(disc, tok())
            tap.ok(r.rc == 0 and (r.json() or {}).get("issuer") == iss
                   and (r.json() or {}).get("kid") == "k1",
                   "discovery over HTTPS (ca_file): token accepted", r)
            st = idp.stats()["requests"]
            tap.ok(st.get(DISCOVERY) == 1 and st.get("/jwks") == 1,
                   "discovery: one discovery and one JWKS request", st)
            r = verify(disc, tok(key2, "RS256"))
            tap.eq(r.rc, 0, "discovery: RS256 key from the same set accepted", r)

            # ---- static jwks_uri ---------------------------------------------------------
            static_iss = "https://static.issuer.test"
            stat = config("static.json", issuer(issuer=static_iss, jwks_uri=iss + "/jwks"))
            idp.reset()
            r = verify(stat, tok(i=static_iss))
            tap.ok(r.rc == 0 and (r.json() or {}).get("issuer") == static_iss,
                   "static jwks_uri: token accepted", r)
            st = idp.stats()["requests"]
            tap.ok(st.get("/jwks") == 1 and not st.get(DISCOVERY),
                   "static jwks_uri: one JWKS request, no discovery", st)

            # ---- trust: no ca_file -> the test CA is not trusted ---------------------------
            noca = config("noca.json", issuer(ca_file=None, discovery=True))
            r = verify(noca, tok())
            tap.ok(r.rc == 1 and reason(r) == "issuer_unavailable",
                   "D2 no ca_file: certificate from an untrusted CA, issuer_unavailable", r)

            # ---- D1: discovery issuer mismatch --------------------------------------------
            for label, bad in (("trailing slash", iss + "/"), ("upper case", iss.upper()),
                               ("template", iss + "/{tenantid}")):
                idp.control({"discovery": {"issuer": bad}, "reset_stats": True})
                r = verify(disc, tok())
                st = idp.stats()["requests"]
                tap.ok(r.rc == 1 and reason(r) == "issuer_unavailable" and not st.get("/jwks"),
                       f"D1 discovery issuer differs ({label}): refused, JWKS never fetched",
                       f"{r}\n{st}")
            idp.control({"discovery": {"issuer": iss}})

            # ---- D2: http:// key URLs -----------------------------------------------------
            plain.reset()
            idp.control({"discovery": {"jwks_uri": plain.base + "/jwks"}})
            r = verify(disc, tok())
            tap.ok(r.rc == 1 and reason(r) == "issuer_unavailable",
                   "D2 discovery names an http:// jwks_uri: refused", r)
            tap.eq(plain.stats()["total"], 0, "D2 ... and the http:// server saw no request")
            idp.control({"discovery": {"jwks_uri": iss + "/jwks"}})
            idp.control({"faults": {"/jwks": "redirect:" + plain.base + "/jwks"}})
            r = verify(disc, tok())
            tap.ok(r.rc == 1 and reason(r) == "issuer_unavailable",
                   "D2 https jwks_uri redirecting to http://: refused", r)
            idp.control({"faults": {"/jwks": None}})
            http_static = config("http.json", issuer(issuer=static_iss,
                                                     jwks_uri=plain.base + "/jwks"))
            r = verify(http_static, tok(i=static_iss))
            tap.ok((r.rc == 2 and "http" in r.err) or (r.rc == 1 and reason(r) ==
                                                       "issuer_unavailable"),
                   "D2 static http:// jwks_uri without allow_http_loopback: refused", r)
            tap.eq(plain.stats()["total"], 0, "D2 ... and the http:// server saw no request")
            allow = config("allow.json", issuer(issuer=static_iss, jwks_uri=plain.base + "/jwks",
                                                allow_http_loopback=True))
            r = verify(allow, tok(i=static_iss))
            tap.ok(r.rc == 0 and plain.count("/jwks") == 1,
                   "D2 http://127.0.0.1 jwks_uri with allow_http_loopback: accepted", r)
            other = config("allow2.json", issuer(issuer=static_iss, allow_http_loopback=True,
                                                 jwks_uri="http://192.0.2.1:9/jwks"))
            r = verify(other, tok(i=static_iss))
            tap.ok(r.rc in (1, 2) and r.rc != 0 and (r.rc == 2 or reason(r) ==
                                                    "issuer_unavailable"),
                   "D2 allow_http_loopback does not allow http:// to a non-loopback host", r)

            # ---- D5: rotation inside one process (a new kid is fetched by one refresh) ----------
            # Feed --batch line by line: the first token makes ferry fetch the set, then the
            # IdP adds k3 and the next token (kid k3) must be accepted after one refresh; a
            # random kid right after that must not cause another fetch (cooldown).
            key3 = ft.Key("Ed25519", "k3")
            rotated = ft.write_json(os.path.join(d, "rotated.json"), ft.jwks(key, key2, key3))
            idp.reset()
            proc = subprocess.Popen([ft.FERRY_BIN, "token", "verify", "--config", config(
                "rot.json", issuer(discovery=True, algorithms=["ES256", "EdDSA"])),
                "--now", str(NOW), "--batch"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=ft.clean_env(), start_new_session=True)
            try:
                proc.stdin.write((tok() + "\n").encode())
                proc.stdin.flush()
                deadline = time.monotonic() + 10
                while idp.count("/jwks") < 1 and time.monotonic() < deadline:
                    time.sleep(0.05)
                first_fetch = idp.count("/jwks") == 1
                time.sleep(0.2)  # let ferry finish the first line before the set changes
                idp.control({"jwks_file": rotated})
                proc.stdin.write((tok(key3, "EdDSA") + "\n" + make_token(
                    key, "ES256", ft.claims(iss, AUD), kid="not-there", sig=os.urandom(64))
                    + "\n" + tok() + "\n").encode())
                out, err = proc.communicate(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            res = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
            got = [(o.get("verified"), o.get("kid") or o.get("reason")) for o in res]
            tap.ok(first_fetch, "D5 ferry fetched the set for the first line while stdin was "
                   "still open (it verifies line by line)")
            tap.eq(got, [(True, "k1"), (True, "k3"), (False, "unknown_kid"), (True, "k1")],
                   "D5 key added by the IdP during the run: accepted after a refresh", err)
            tap.eq(idp.count("/jwks"), 2, "D5 exactly one refresh (2 JWKS fetches in total); "
                   "the unknown kid right after it caused none")
            idp.control({"jwks_file": jwks_path})

            # ---- D4: random kids cause at most one refresh ---------------------------------
            idp.reset()
            rng = random.Random(4)
            batch, want = [], []
            valid = 0
            for i in range(1000):
                kid = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789")
                              for _ in range(16))
                batch.append(make_token(key, "ES256", ft.claims(iss, AUD), kid=kid,
                                        sig=os.urandom(64)))
                want.append(False)
                if i % 50 == 0:
                    batch.append(tok(key2, "RS256") if valid % 2 else tok())
                    want.append(True)
                    valid += 1
            r = verify(disc, *batch, batch=True)
            out = r.lines()
            got = [o.get("verified") if o else None for o in out]
            reasons = {o.get("reason") for o in out if o and not o.get("verified")}
            tap.ok(r.rc == 1 and got == want,
                   f"D4 --batch of 1,000 random kids + {valid} valid: every valid token "
                   "accepted, every random kid refused", f"{r.rc} {len(out)} lines")
            tap.eq(reasons, {"unknown_kid"}, "D4 random kids refused as unknown_kid")
            st = idp.stats()["requests"]
            tap.ok(st.get("/jwks", 0) <= 2 and st.get(DISCOVERY, 0) <= 2,
                   f"D4 at most 1 + 1 JWKS fetches for 1,000 unknown kids "
                   f"(jwks {st.get('/jwks', 0)}, discovery {st.get(DISCOVERY, 0)})", st)
            tap.ok(r.elapsed < 30, f"D4 batch finished in {r.elapsed:.1f} s")

            # ---- D7: https_proxy from the environment is not used -----------------------
            with ft.Listener() as lst:
                env = ft.clean_env({v: lst.url for v in ("https_proxy", "HTTPS_PROXY",
                                                         "http_proxy", "HTTP_PROXY",
                                                         "all_proxy", "ALL_PROXY")})
                r = verify(disc, tok(), env=env)
                tap.ok(r.rc == 0, "D7 https_proxy etc. set in the environment: token "
                       "accepted (direct connection)", r)
                tap.eq(lst.count, 0, "D7 ... and zero connections to the proxy listener",
                       lst.first_bytes)
            prox = ft.Standin(None, None, "--proxy")
            procs.append(prox)
            viaproxy = config("proxy.json", issuer(discovery=True, proxy=prox.base))
            r = verify(viaproxy, tok())
            tap.ok(r.rc == 0 and prox.stats()["connects"] >= 1,
                   "D7 \"proxy\" configured explicitly: fetched through it (CONNECT seen)",
                   f"{r}\n{prox.stats()}")

            # ---- A7: jku / x5u / x5c are never fetched ------------------------------------
            with ft.Listener() as lst:
                idp.reset()
                for hdr in ({"jku": lst.url + "/jwks"}, {"x5u": lst.url + "/cert.pem"},
                            {"jku": iss + "/jwks"},
                            {"jwk": key.public_jwk()}, {"x5c": ["MIIBIjAN"]},
                            {"jku": "http://169.254.169.254/latest/meta-data/"}):
                    r = verify(disc, tok(hdr=hdr))
                    tap.ok(r.rc == 1 and reason(r) == "bad_header",
                           f"A7 header {list(hdr)[0]}={str(list(hdr.values())[0])[:40]}: "
                           "refused (bad_header)", r)
                tap.eq(lst.count, 0, "A7 zero connections to the jku/x5u listener")
                st = idp.stats()["requests"]
                tap.ok(set(st) <= {DISCOVERY, "/jwks"} and st.get("/jwks", 0) <= 6,
                       "A7 the IdP saw only its own discovery/JWKS requests", st)

            # ---- C3: an unknown issuer causes no request ---------------------------------
            with ft.Listener() as lst:
                idp.reset()
                for i_unknown in (lst.url, iss + "/", iss.replace("127.0.0.1", "localhost"),
                                  "https://evil.test"):
                    r = verify(disc, tok(i=i_unknown))
                    tap.ok(r.rc == 1 and reason(r) == "unknown_issuer",
                           f"C3 token from unknown issuer {i_unknown}: unknown_issuer", r)
                tap.eq(idp.stats()["total"], 0, "C3 zero requests at the configured IdP")
                tap.eq(lst.count, 0, "C3 zero connections to the unknown issuer's address")
        finally:
            for p in procs:
                p.stop()


if __name__ == "__main__":
    ft.main("test_cli_jwks_fetch", body)
