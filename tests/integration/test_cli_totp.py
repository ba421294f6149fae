#!/usr/bin/env python3
# TAP: `ferry totp enroll|verify|status` as an operator and a login front end run them.
#   - enroll prints one otpauth:// URI on stdout (nothing else anywhere), files are private;
#     the secret in the URI, decoded by Python, gives codes (RFC 6238 computed here with hmac,
#     independently of liboath) that ferry accepts;
#   - verify reads the code from stdin only: a code on the command line is a usage error;
#   - H1 replay, H2 window and malformed input, H3 lock-out from the CLI, with exit codes
#     0 accepted / 1 refused / 2 usage and the reason on stderr;
#   - hostile account names and state files; status never prints the secret.
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import stat
import struct
import sys
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402

NOW = 1700000010  # first second of time step 56666667
SANITIZER = re.compile(r"ERROR: (Leak|Address)Sanitizer|runtime error:|SUMMARY: \w+Sanitizer")
RUNS = []


def ferry(*args, stdin=None):
    """ft.ferry, remembering every result for the sanitizer check at the end."""
    r = ft.ferry(*args, stdin=stdin)
    RUNS.append(r)
    return r


def totp(secret, t, digits=6, period=30):
    """RFC 6238 / RFC 4226 with HMAC-SHA-1, written from the RFC text."""
    mac = hmac.new(secret, struct.pack(">Q", t // period), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    v = struct.unpack(">I", mac[off:off + 4])[0] & 0x7FFFFFFF
    return str(v % 10 ** digits).zfill(digits)


def enroll(tap, state, account, *extra):
    r = ferry("totp", "enroll", "--state-dir", state, *extra, account)
    tap.ok(r.rc == 0, f"enroll {account}: exit 0", r)
    return r


def secret_of(uri):
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)
    return base64.b32decode(q["secret"][0])


def verify(state, account, code, now=NOW):
    return ferry("totp", "verify", "--state-dir", state, "--now", str(now), account,
                    stdin=code)


def status_of(r):
    j = r.json() or {}
    return j.get("status")


def asan_build():
    """True when ferry was built with AddressSanitizer."""
    binary = os.path.join(ft.BUILDDIR, ".libs", "ferry")
    try:
        with open(binary, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


def core_at_exit(tap, desc, args, stdin_path=None):
    """Run ferry ARGS under gdb (stdout to a file, stdin from stdin_path), dump a core at
    exit_group; return (stdout text, core bytes, gdb result), or None after a failure.
    Not called in an ASan build (see body)."""
    gdb = shutil.which("gdb")
    binary = os.path.join(ft.BUILDDIR, ".libs", "ferry")
    if not gdb or not os.access(binary, os.X_OK):
        tap.skip(desc, "needs gdb (contrib/deps.sh installs it) and .libs/ferry")
        return None
    with ft.tempdir() as d:
        core, out = os.path.join(d, "core"), os.path.join(d, "out")
        env = ft.clean_env()
        libs = os.path.join(ft.BUILDDIR, ".libs")
        env["LD_LIBRARY_PATH"] = libs + (":" + env["LD_LIBRARY_PATH"]
                                         if env.get("LD_LIBRARY_PATH") else "")
        redir = f" > {out}" + (f" < {stdin_path}" if stdin_path else "")
        r = ft.run([gdb, "-q", "-batch", "-nx", "-ex", "set pagination off",
                    "-ex", "catch syscall exit_group",
                    "-ex", "run " + " ".join(args) + redir,
                    "-ex", f"generate-core-file {core}", binary], env=env, timeout=120)
        try:
            with open(out) as f:
                text = f.read()
            with open(core, "rb") as f:
                mem = f.read()
        except OSError as e:
            tap.ok(False, f"{desc}: gdb run failed: {e}", r)
            return None
    return text, mem, r


def code_left_in_memory(tap, state, account):
    """ferry totp verify must not leave the code in stdio's stdin buffer."""
    desc = "verify leaves no copy of the code in memory"
    code = "918273"
    path = os.path.join(state, "code-input")
    with open(path, "w") as f:
        f.write(code + "\n")
    got = core_at_exit(tap, desc, ["totp", "verify", "--state-dir", state, "--now", "1",
                                   account], stdin_path=path)
    if got is None:
        return
    text, mem, r = got
    tap.ok('"status"' in text, "verify under gdb decided", r)
    tap.ok(code.encode() not in mem, desc)


def uri_left_in_memory(tap):
    """ferry totp enroll must not leave the otpauth:// URI (the secret) in its memory once
    printed: not in stdio's stdout buffer either. Run it under gdb, dump a core at exit_group
    and look for the secret."""
    desc = "enroll leaves no copy of the secret in memory"
    with ft.tempdir() as d:
        state = os.path.join(d, "state")
        os.mkdir(state, 0o700)
        got = core_at_exit(tap, desc, ["totp", "enroll", "--state-dir", state, "alice"])
        if got is None:
            return
        text, mem, r = got
        uri = text.strip()
        tap.ok(uri.startswith("otpauth://totp/"), "enroll under gdb printed the URI", r)
        b32 = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)["secret"][0]
        tap.ok(b32.encode() not in mem, desc)


def body(tap):
    # The RFC's own value, to trust the Python reference below.
    tap.eq(totp(b"12345678901234567890", 59, 8), "94287082", "reference TOTP matches RFC 6238")

    with ft.tempdir() as state:
        # ---- enrolment -----------------------------------------------------------------
        r = enroll(tap, state, "alice@example.com", "--issuer", "ACME Corp")
        uri = r.out.strip()
        tap.ok(r.out.count("\n") == 1 and r.err == "", "enroll: one line on stdout, nothing on "
               "stderr", r)
        parts = urllib.parse.urlsplit(uri)
        q = urllib.parse.parse_qs(parts.query)
        tap.eq((parts.scheme, parts.netloc, parts.path),
               ("otpauth", "totp", "/ACME%20Corp:alice%40example.com"), "URI label")
        tap.eq({k: v[0] for k, v in q.items() if k != "secret"},
               {"issuer": "ACME Corp", "algorithm": "SHA1", "digits": "6", "period": "30"},
               "URI parameters")
        secret = secret_of(uri)
        tap.eq(len(secret), 20, "20-byte secret")
        d = os.path.join(state, "totp")
        tap.eq(stat.S_IMODE(os.stat(d).st_mode), 0o700, "totp folder 0700")
        rec = os.path.join(d, "alice@example.com.json")
        tap.eq(stat.S_IMODE(os.stat(rec).st_mode), 0o600, "record 0600")
        with open(rec) as f:
            stored = json.load(f)
        tap.eq(base64.b32decode(stored["secret"]), secret, "stored secret is the URI's")

        r = ferry("totp", "enroll", "--state-dir", state, "alice@example.com")
        tap.ok(r.rc == 1 and "already enrolled" in r.err and r.out == "",
               "second enroll refused (exit 1), no URI", r)
        r = enroll(tap, state, "alice@example.com", "--force")
        secret2 = secret_of(r.out.strip())
        tap.ok(secret2 != secret, "--force re-enrols with a new secret")
        secret = secret2

        # ---- verification ----------------------------------------------------------------
        code = totp(secret, NOW)
        r = verify(state, "alice@example.com", code + "\n")
        tap.ok(r.rc == 0 and status_of(r) == "ok", "current code accepted (exit 0)", r)
        tap.ok(code not in r.out and code not in r.err, "the code is not echoed")
        r = verify(state, "alice@example.com", code + "\n")
        tap.ok(r.rc == 1 and status_of(r) == "replayed" and "replayed" in r.err,
               "H1: same code again refused as replayed (exit 1)", r)
        r = verify(state, "alice@example.com", totp(secret, NOW + 30) + "\r\n")
        tap.ok(r.rc == 0, "next step's code accepted (CRLF line)", r)
        r = verify(state, "alice@example.com", totp(secret, NOW - 30))
        tap.ok(r.rc == 1 and status_of(r) == "replayed", "older step after newer refused", r)
        far = totp(secret, NOW + 90)
        if far not in (totp(secret, NOW), totp(secret, NOW + 30), totp(secret, NOW + 60)):
            r = verify(state, "alice@example.com", far)
            tap.ok(r.rc == 1 and status_of(r) == "bad_code", "H2: +3 steps refused", r)
        else:
            tap.skip("H2: +3 steps refused", "code collision")

        sb = secret_of(enroll(tap, state, "bob").out.strip())
        for bad in (" " + totp(sb, NOW), totp(sb, NOW) + " ", totp(sb, NOW)[:5], ""):
            r = verify(state, "bob", bad + "\n")
            tap.ok(r.rc == 1 and status_of(r) == "malformed", f"H2: malformed {bad!r}", r)
        r = verify(state, "bob", "9" * 100000)
        tap.ok(r.rc == 1 and status_of(r) == "malformed", "100 kB line refused as malformed", r)
        tap.ok((r.json() or {}).get("retry_after") == 30 and "locked" in r.err,
               "H3: the fifth failure says the account is now locked for 30 s", r)
        r = verify(state, "bob", totp(sb, NOW))
        tap.ok(r.rc == 1 and status_of(r) == "locked" and "retry after" in r.err,
               "H3: locked after five failures, even for the right code", r)
        tap.eq((r.json() or {}).get("retry_after"), 30, "retry_after 30 s")
        r = ferry("totp", "status", "--state-dir", state, "--now", str(NOW), "bob")
        j = r.json() or {}
        tap.ok(r.rc == 0 and j.get("locked") is True and j.get("lockouts") == 1
               and j.get("retry_after") == 30, "status shows the lock", r)
        tap.ok("secret" not in r.out and base64.b32encode(sb).decode() not in r.out,
               "status prints no secret", r)
        r = verify(state, "bob", totp(sb, NOW + 30), now=NOW + 30)
        tap.ok(r.rc == 0, "accepted once the lock has expired", r)

        # ---- usage -------------------------------------------------------------------------
        r = ferry("totp", "verify", "--state-dir", state, "bob", totp(sb, NOW + 60))
        tap.ok(r.rc == 2 and "stdin" in r.err, "a code on the command line is a usage error", r)
        r = ferry("totp", "verify", "--state-dir", state, "bob", stdin="")
        tap.ok(r.rc == 2 and "no code" in r.err, "empty stdin is a usage error", r)
        r = ferry("totp", "verify", "bob", stdin="123456")
        tap.ok(r.rc == 2 and "--state-dir" in r.err, "--state-dir is required", r)
        for name in ("../etc/passwd", "a/b", "..", ".hidden", "-x", "a\nb"):
            r = ferry("totp", "enroll", "--state-dir", state, "--", name)
            tap.ok(r.rc == 2 and "invalid account" in r.err, f"enroll refuses {name!r}", r)
            r = ferry("totp", "verify", "--state-dir", state, "--", name, stdin="123456")
            tap.ok(r.rc == 2, f"verify refuses {name!r}", r)
        tap.eq(sorted(os.listdir(state)), ["totp"], "nothing created outside totp/")
        r = verify(state, "ghost", "123456")
        tap.ok(r.rc == 1 and status_of(r) == "unknown_account", "unknown account refused", r)
        r = ferry("totp", "--help")
        tap.ok(r.rc == 0 and "enroll" in r.out, "--help exits 0", r)
        r = ferry("totp", "frobnicate")
        tap.eq(r.rc, 2, "unknown subcommand exits 2")

        # ---- hostile state -------------------------------------------------------------------
        os.chmod(rec, 0o644)
        r = verify(state, "alice@example.com", totp(secret, NOW + 60), now=NOW + 60)
        tap.ok(r.rc == 1 and status_of(r) == "error" and "group/other" in r.err,
               "record readable by others: refused, error names it", r)
        tap.ok(base64.b32encode(secret).decode() not in r.err + r.out, "no secret in the error")
        os.chmod(rec, 0o600)
        with open(rec) as f:
            j = json.load(f)
        j["comment"] = "x"
        with open(rec, "w") as f:
            json.dump(j, f)
        r = verify(state, "alice@example.com", totp(secret, NOW + 60), now=NOW + 60)
        tap.ok(r.rc == 1 and "unknown member" in r.err, "unknown member refused", r)

    # Secrets left in memory, read from a core dump taken at exit. Not in an ASan build: its
    # core holds the whole shadow memory (gigabytes), and the plain build runs these checks.
    if not asan_build():
        uri_left_in_memory(tap)
        with ft.tempdir() as state:
            enroll(tap, state, "carol")
            code_left_in_memory(tap, state, "carol")

    bad = [r for r in RUNS if SANITIZER.search(r.err)]
    tap.ok(not bad, f"no sanitizer report in {len(RUNS)} runs", bad[0] if bad else None)


if __name__ == "__main__":
    ft.main("test_cli_totp", body)
