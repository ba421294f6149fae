#!/usr/bin/env python3
# TAP: `ferry secret get --server URL --token-file PATH REF`, the workload's side of
# GET /v1/secrets/{ref}: a real ferryd (file backend, a policy granting "file:team-a/*" to one
# subject), a ferry access token obtained by exchange and written to a file, then:
#   - a granted secret: exit 0, the exact bytes on stdout (binary-safe, no newline added);
#   - $FERRY_TOKEN_FILE instead of --token-file;
#   - a reference the policy does not grant: exit 1, "403 insufficient_scope" on stderr;
#   - no such secret: exit 1, 404; a forged token: exit 1, 401 invalid_token;
#   - "vault:kv/app#password" reaches ferryd whole ('#' percent-encoded): ferryd answers that
#     the vault backend is not configured (501), not that the reference is malformed;
#   - usage: no token file, an unreadable or malformed token file, --server with --config,
#     --token-file without --server, an http URL to another host: exit 2, nothing on stdout;
#   - no canary value on stderr, in ferryd's log or in its audit log.
import os
import secrets
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402
from ferrydtest import start, stop, wait_ready  # noqa: E402
from test_ferryd_secrets import AUD, ISS, exchange  # noqa: E402




def body(tap):
    canary = "CANARY-R-" + secrets.token_hex(16)
    binary = bytes(range(256)) + canary.encode()
    with ft.tempdir() as d:
        state = os.path.join(d, "state")
        os.makedirs(state, mode=0o700)
        tap.ok(ft.ferry("secret", "init", "-d", state).rc == 0, "ferry secret init")
        for name, value in (("team-a/db", canary), ("team-b/db", canary)):
            r = ft.ferry("secret", "put", "-d", state, name, stdin=value)
            tap.ok(r.rc == 0, f"ferry secret put {name}", r)
        bin_path = os.path.join(d, "bin")
        with open(bin_path, "wb") as f:
            f.write(binary)
        r = ft.ferry("secret", "put", "-d", state, "--from-file", bin_path, "team-a/bin")
        tap.ok(r.rc == 0, "ferry secret put team-a/bin (binary)", r)

        key = ft.Key.for_alg("ES256", kid="idp-1")
        port = ft.free_port()
        me = f"http://127.0.0.1:{port}"
        pol = os.path.join(d, "policies")
        os.makedirs(pol)
        ft.write_json(os.path.join(pol, "p.json"), {"version": 1, "policies": [
            {"id": "a", "match": {"issuer": ISS, "subject": "job-a"},
             "grant": {"audiences": [me], "max_ttl": 600,
                       "secrets": ["file:team-a/*", "vault:kv/app#password"]}}]})
        audit = os.path.join(d, "audit.log")
        conf = {
            "listen": [f"127.0.0.1:{port}"], "state_dir": state, "issuer": me,
            "policies": pol, "audit_log": {"path": audit, "sync": "batch"},
            "issuers": [{"issuer": ISS, "audiences": [AUD],
                         "jwks_file": ft.write_json(os.path.join(d, "idp.jwks"), ft.jwks(key)),
                         "algorithms": ["ES256"], "profile": "id_token"}],
            "secrets": {"file": {}},
        }
        proc, err = start(ft.write_json(os.path.join(d, "ferryd.json"), conf), d, "remote")
        try:
            if not wait_ready(port, proc):
                tap.ok(False, "ferryd starts", stop(proc, err))
                return
            run(tap, d, port, key, me, canary, binary)
        finally:
            log = stop(proc, err)
        tap.ok(proc.returncode == 0 and canary not in log, "ferryd exits 0, no canary in its log",
               log[-2000:])
        with open(audit) as f:
            tap.ok(canary not in f.read(), "no canary in the audit log")


def run(tap, d, port, key, me, canary, binary):
    _, tok, _ = exchange(port, key, "job-a", me)
    tap.ok(bool(tok), "exchange: a ferry token for ferryd's own audience")
    tf = os.path.join(d, "token")
    with open(tf, "w") as f:
        f.write((tok or "x") + "\n")
    os.chmod(tf, 0o600)
    errs = []

    def get(*args, env=None):
        r = ft.run([ft.FERRY_BIN, "secret", "get"] + list(args), env=env)
        errs.append(r.err)
        return r

    r = get("--server", me, "--token-file", tf, "file:team-a/db")
    tap.ok(r.rc == 0 and r.out == canary, "granted: exit 0 and the exact value", r)
    rb = ft.subprocess.run([ft.FERRY_BIN, "secret", "get", "--server", me, "--token-file", tf,
                            "file:team-a/bin"], capture_output=True, env=ft.clean_env())
    tap.ok(rb.returncode == 0 and rb.stdout == binary, "binary value: the exact bytes",
           (rb.returncode, rb.stderr[-300:]))
    r = get("--server", me + "/", "file:team-a/db", env=ft.clean_env({"FERRY_TOKEN_FILE": tf}))
    tap.ok(r.rc == 0 and r.out == canary, "$FERRY_TOKEN_FILE and a trailing '/' on the URL", r)

    r = get("--server", me, "--token-file", tf, "file:team-b/db")
    tap.ok(r.rc == 1 and "403 insufficient_scope" in r.err and r.out == "",
           "not granted: exit 1, 403 insufficient_scope", r)
    r = get("--server", me, "--token-file", tf, "file:team-a/none")
    tap.ok(r.rc == 1 and "404" in r.err and r.out == "", "no such secret: exit 1, 404", r)
    r = get("--server", me, "--token-file", tf, "vault:kv/app#password")
    tap.ok(r.rc == 2 and "501" in r.err and "not_configured" in r.err,
           "'#' is percent-encoded: ferryd sees the whole vault reference (501, not 400)", r)

    h, p, s = (tok or "a.b.c").split(".")
    forged = os.path.join(d, "forged")
    with open(forged, "w") as f:
        f.write(f"{h}.{p}.{s[:-4]}{'AAAA' if s[-4:] != 'AAAA' else 'BBBB'}")
    r = get("--server", me, "--token-file", forged, "file:team-a/db")
    tap.ok(r.rc == 1 and "401 invalid_token" in r.err, "forged token: exit 1, 401", r)

    bad = os.path.join(d, "bad")
    with open(bad, "w") as f:
        f.write("two tokens\n")
    for desc, args, env, want in (
            ("no token file", ["--server", me, "file:team-a/db"], ft.clean_env(),
             "--token-file"),
            ("missing token file", ["--server", me, "--token-file", d + "/nope",
                                    "file:team-a/db"], None, "token file"),
            ("malformed token file", ["--server", me, "--token-file", bad, "file:team-a/db"],
             None, "not one bearer token"),
            ("a directory as token file", ["--server", me, "--token-file", d, "file:team-a/db"],
             None, "token file"),
            ("--server with --config", ["--server", me, "--config", tf, "file:team-a/db"], None,
             "exclude"),
            ("--token-file without --server", ["--token-file", tf, "file:team-a/db"], None,
             "go with --server"),
            ("plain http to another host", ["--server", "http://example.com", "--token-file", tf,
                                            "file:team-a/db"], None, "not an https URL"),
            ("--server on put", None, None, "get options")):
        if args is None:
            r = ft.ferry("secret", "put", "--server", me, "x", stdin="v")
            errs.append(r.err)
        else:
            r = get(*args, env=env)
        tap.ok(r.rc == 2 and want in r.err and r.out == "", f"{desc}: exit 2 ({want!r})", r)
    tap.ok(not any(canary in e for e in errs) and not any((tok or "@") in e for e in errs),
           "no value and no token on stderr")


if __name__ == "__main__":
    ft.main("test_cli_secret_remote", body)
