#!/usr/bin/env python3
# TAP: SIGHUP re-reads ferryd's configuration file, all or nothing.
#   One ferryd on a free loopback port trusts issuer A (a JWKS file); tokens are signed here.
#   - a good new file that swaps issuer A for issuer B, points at another policy directory and
#     tightens the per-address limit: B's tokens are exchanged, A's are refused (unknown issuer),
#     the new policies decide, the new limit refuses with 429 (that the replay cache survives a
#     reload is a unit test of the trust store: tests/unit/test_oidc.c, reload);
#   - /metrics no longer reports the removed issuer's key set as loaded;
#   - a changed listen address is named as needing a restart and ferryd keeps its socket;
#   - a file with a syntax error, a policy directory with a broken policy, and an issuer the
#     trust store refuses: each is logged, and the previous issuers, policies and limits keep
#     deciding exactly as before;
#   - ferryd stops cleanly and its audit log verifies.
# Wall time: about 3 s.
import json
import os
import signal
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402
from ferrydtest import (FERRYD_BIN, json_of, log_text, records, request,  # noqa: E402
                        start, stop, wait_ready)
from test_ferryd_limits import exchange  # noqa: E402

ISS_A = "https://idp-a.reload.test"
ISS_B = "https://idp-b.reload.test"
AUD = "ferry"
TARGET = "https://registry.limits.test"  # the audience exchange() asks for
SCOPE = "models:read"                    # the scope exchange() asks for


def token(key, iss, sub):
    now = int(time.time())
    return ft.make_token(key, alg="ES256", typ="JWT",
                         claims=ft.claims(iss, AUD, sub=sub, now=now, lifetime=300))


def policy_dir(d, name, iss, subject_glob):
    pol = os.path.join(d, name)
    os.mkdir(pol)
    ft.write_json(os.path.join(pol, "jobs.json"), {"version": 1, "policies": [{
        "id": name, "match": {"issuer": iss, "subject_glob": subject_glob},
        "grant": {"scopes": [SCOPE], "audiences": [TARGET], "max_ttl": 600}}]})
    return pol


def issuer(d, iss, key):
    jwks = ft.write_json(os.path.join(d, key.kid + ".jwks.json"), ft.jwks(key))
    return {"issuer": iss, "audiences": [AUD], "jwks_file": jwks, "algorithms": ["ES256"],
            "profile": "id_token"}


def error_of(r):
    return (json_of(r) or {}).get("error")


def body(tap):
    if not os.path.exists(FERRYD_BIN):
        tap.ok(False, f"ferryd binary at {FERRYD_BIN}")
        return
    key_a = ft.Key("P-256", kid="reload-a")
    key_b = ft.Key("P-256", kid="reload-b")
    with ft.tempdir() as d:
        pol_a = policy_dir(d, "policies-a", ISS_A, "job-*")
        pol_b = policy_dir(d, "policies-b", ISS_B, "svc-*")
        port = ft.free_port()
        audit = os.path.join(d, "audit.log")
        state = os.path.join(d, "state")
        base = {"listen": [f"127.0.0.1:{port}"], "state_dir": state,
                "audit_log": {"path": audit}, "token": {"one_time_subject": True}}
        conf_a = dict(base, policies=pol_a, issuers=[issuer(d, ISS_A, key_a)],
                      rate_limits={"per_address": {"rate": 0}, "per_identity": {"rate": 0}})
        conf_b = dict(base, policies=pol_b, issuers=[issuer(d, ISS_B, key_b)],
                      rate_limits={"per_address": {"rate": 0.01, "burst": 6},
                                   "per_identity": {"rate": 0}})
        cpath = os.path.join(d, "ferryd.json")
        ft.write_json(cpath, conf_a)
        proc, err = start(cpath, d, "reload")
        hups = [0]

        def hup():
            """SIGHUP, then wait for the reload's last line (about the signing keys)."""
            hups[0] += 1
            proc.send_signal(signal.SIGHUP)
            end = time.monotonic() + 15
            while time.monotonic() < end and log_text(err).count('"reload: keys') < hups[0]:
                time.sleep(0.05)

        try:
            if not wait_ready(port, proc):
                tap.ok(False, "ferryd starts and is ready", stop(proc, err))
                return
            spent = token(key_a, ISS_A, "job-1")
            r = exchange(port, spent)
            tap.ok(r.status == 200, "before: issuer A's token is exchanged", r)
            r = exchange(port, token(key_b, ISS_B, "svc-1"))
            tap.ok(r.status == 400 and error_of(r) == "invalid_request",
                   "before: issuer B is not trusted yet", r)

            r = request(port, "GET", "/metrics")
            tap.ok(r.status == 200 and f'ferryd_oidc_issuer_keyset_state{{issuer="{ISS_A}",'
                   f'state="static"}} 1' in r.body.decode(),
                   "before: /metrics shows issuer A's key set (static)", r)

            # ---- broken files: nothing changes -----------------------------------------------
            with open(cpath, "w") as f:
                f.write('{"issuers": [')
            hup()
            r = exchange(port, token(key_a, ISS_A, "job-2"))
            tap.ok(r.status == 200 and "configuration not loaded" in log_text(err)
                   and "ferryd.json:" in log_text(err),
                   "a file with a syntax error: logged with its name; A still decides", r)
            bad = dict(conf_b, issuers=[dict(issuer(d, ISS_B, key_b), algorithms=["HS256"])])
            ft.write_json(cpath, bad)
            hup()
            r = exchange(port, token(key_b, ISS_B, "svc-2"))
            r2 = exchange(port, token(key_a, ISS_A, "job-3"))
            tap.ok(r.status == 400 and r2.status == 200 and "issuers not reloaded" in log_text(err),
                   "an issuer the trust store refuses: logged; B still refused, A still served",
                   (r, r2))
            with open(os.path.join(pol_b, "broken.json"), "w") as f:
                f.write('{"version": 1, "policies": [{"id": "x"}]}')
            ft.write_json(cpath, conf_b)
            hup()
            r = exchange(port, token(key_b, ISS_B, "svc-3"))
            r2 = exchange(port, token(key_a, ISS_A, "job-4"))
            tap.ok(r.status == 400 and r2.status == 200
                   and "policies-b not loaded" in log_text(err),
                   "a broken policy in the new directory: logged; the issuers did not change "
                   "either (all or nothing)", (r, r2))
            os.unlink(os.path.join(pol_b, "broken.json"))

            # ---- a good file ------------------------------------------------------------------
            moved = dict(conf_b, listen=[f"127.0.0.1:{ft.free_port()}"])
            ft.write_json(cpath, moved)
            hup()
            text = log_text(err)
            tap.ok("reload: 1 issuers, 1 policies from " + pol_b in text,
                   "a good file: the reload is logged with its issuers and policies",
                   text[-1500:])
            tap.ok("reload: listen changed; it takes effect after a restart" in text,
                   "a changed listen address is named as needing a restart", text[-1500:])
            r = exchange(port, token(key_b, ISS_B, "svc-4"))
            doc = json_of(r) or {}
            tap.ok(r.status == 200 and "access_token" in doc,
                   "after: issuer B's token is exchanged on the old socket", r)
            r = exchange(port, token(key_a, ISS_A, "job-5"))
            tap.ok(r.status == 400 and error_of(r) == "invalid_request",
                   "after: issuer A is no longer trusted", r)
            r = exchange(port, token(key_b, ISS_B, "job-6"))
            tap.ok(r.status == 400 and error_of(r) == "invalid_target",
                   "after: the new policy directory decides (job-* is not granted)", r)
            # /metrics after the reload: the removed issuer's key set reads 0 in every state,
            # the new one's "static" reads 1 (a scrape is not rate-limited).
            r = request(port, "GET", "/metrics")
            text = r.body.decode()
            tap.ok(r.status == 200
                   and f'ferryd_oidc_issuer_keyset_state{{issuer="{ISS_A}",state="static"}} 0'
                   in text
                   and f'ferryd_oidc_issuer_keyset_state{{issuer="{ISS_B}",state="static"}} 1'
                   in text
                   and f'ferryd_oidc_issuer_cached_keys{{issuer="{ISS_A}"}} 0' in text,
                   "after: /metrics shows the removed issuer at 0 and the new one static",
                   text[-3000:])
            # The new per-address budget: burst 6, nearly no refill. Three exchanges above
            # spent three; the fourth, fifth and sixth pass, the seventh is refused.
            statuses = [request(port, "GET", "/.well-known/jwks.json").status
                        for _ in range(4)]
            tap.ok(statuses[:3] == [200] * 3 and statuses[3] == 429,
                   "after: the tightened per-address limit applies", statuses)
        finally:
            text = stop(proc, err)
        tap.ok(proc.returncode == 0, "ferryd stops cleanly (exit 0)", text[-2000:])
        recs = records(audit)
        tap.ok(len(recs) == 10, "one audit record per decision", len(recs))
        jwks_all = os.path.join(d, "jwks-all.json")
        r = ft.ferry("keys", "jwks", "--all", "--state-dir", state)
        with open(jwks_all, "w") as f:
            f.write(r.out)
        r = ft.ferry("log", "verify", audit, "--jwks", jwks_all)
        tap.ok(r.rc == 0, "ferry log verify passes on the audit log", r)
        lines = [ln for ln in text.splitlines() if ln.strip()]
        tap.ok(all(ln.startswith("{") and json.loads(ln) for ln in lines),
               "ferryd's stderr holds only JSON lines", text[-1500:])


if __name__ == "__main__":
    ft.main("test_ferryd_reload", body)
