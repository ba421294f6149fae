#!/usr/bin/env python3
# TAP: `ferry secret init|put|get|list|rm` end to end, as an operator runs them.
#   - init makes a 0600 key file and refuses to overwrite one or to orphan a store;
#   - put reads the value from stdin or --from-file only (a value on the command line is a
#     usage error), get prints it byte for byte, list shows names and versions only, rm removes;
#   - the store file is decrypted here independently (Python `cryptography`, from the format in
#     docs/internals/secrets.md), which proves the documented format and AAD;
#   - a key file readable by others, a wrong key, a modified store and unknown or malformed
#     references are refused with exit codes 2 / 1 / 1 / 2 and a clear reason;
#   - the canary values appear in no error output, no list output and not in the store file.
import hashlib
import hmac
import os
import re
import secrets
import stat
import struct
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

SANITIZER = re.compile(r"ERROR: (Leak|Address)Sanitizer|runtime error:|SUMMARY: \w+Sanitizer")
RUNS = []


def ferry(*args, stdin=None):
    r = ft.ferry("secret", *args, stdin=stdin)
    RUNS.append(r)
    return r


def read_store(store, key):
    """Parse and decrypt a store file per docs/internals/secrets.md; returns
    (generation, {name: (version, created, value)}). Raises on any mismatch."""
    with open(store, "rb") as f:
        b = f.read()
    enc = hmac.new(key, b"ferry-secrets v1 enc", hashlib.sha256).digest()
    mac = hmac.new(key, b"ferry-secrets v1 mac", hashlib.sha256).digest()
    kid = hmac.new(key, b"ferry-secrets v1 key-id", hashlib.sha256).digest()[:8]
    magic, fmt, flags, gen, count, reserved, hkid = struct.unpack(">8sIIQII8s", b[:40])
    assert magic == b"FERRYSEC" and fmt == 1 and flags == 0 and reserved == 0
    assert hkid == kid, "key id"
    assert hmac.compare_digest(hmac.new(mac, b[:-32], hashlib.sha256).digest(), b[-32:])
    out, o = {}, 40
    for _ in range(count):
        (nl,) = struct.unpack(">H", b[o:o + 2])
        name = b[o + 2:o + 2 + nl]
        o += 2 + nl
        version, created, vl = struct.unpack(">QQI", b[o:o + 20])
        o += 20
        nonce, ct = b[o:o + 12], b[o + 12:o + 12 + vl + 16]
        o += 12 + vl + 16
        aad = (b"FERRYSEC" + struct.pack(">IQH", 1, gen, nl) + name +
               struct.pack(">QQ", version, created))
        out[name.decode()] = (version, created, AESGCM(enc).decrypt(nonce, ct, aad))
    assert o == len(b) - 32
    return gen, out


def body(tap):
    canary = "CANARY-" + secrets.token_hex(16)
    canary2 = "CANARY2-" + secrets.token_hex(16) + "\nsecond line\n"
    with ft.tempdir() as d:
        store, key = os.path.join(d, "secrets.store"), os.path.join(d, "secrets.key")
        opts = ["--store", store, "--key", key]

        r = ferry("list", *opts)
        tap.ok(r.rc == 2 and "ferry secret init" in r.err, "no key yet: list says to init", r)
        r = ferry("init", *opts)
        tap.ok(r.rc == 0, "init: exit 0", r)
        st = os.stat(key)
        tap.eq(stat.S_IMODE(st.st_mode), 0o600, "key file mode 0600")
        tap.eq(st.st_size, 32, "key file holds 32 bytes")
        r = ferry("init", *opts)
        tap.ok(r.rc == 1 and "exists" in r.err, "init again: refused, key kept", r)

        r = ferry("put", *opts, "ml/wandb", stdin=canary)
        tap.ok(r.rc == 0 and "version 1" in r.err, "put from stdin: exit 0, version 1", r)
        src = os.path.join(d, "value.txt")
        with open(src, "w") as f:
            f.write(canary2)
        r = ferry("put", *opts, "--from-file", src, "hf")
        tap.ok(r.rc == 0 and "version 2" in r.err, "put --from-file: exit 0, version 2", r)
        r = ferry("put", *opts, "argv-value", canary)
        tap.ok(r.rc == 2 and "never from the command line" in r.err,
               "a value on the command line is a usage error", r)
        r = ferry("put", *opts, "../etc/x", stdin="v")
        tap.ok(r.rc == 2 and "segment" in r.err, "bad entry name refused", r)
        r = ferry("put", *opts, "big", stdin="x" * 65537)
        tap.ok(r.rc == 2 and "65536" in r.err, "value over 64 KiB refused", r)
        r = ferry("put", *opts, "empty", stdin="")
        tap.ok(r.rc == 1 and "empty value" in r.err, "empty value refused", r)

        r = ferry("get", *opts, "file:ml/wandb")
        tap.ok(r.rc == 0 and r.out == canary, "get prints the value byte for byte", r)
        r = ferry("get", *opts, "file:hf")
        tap.ok(r.rc == 0 and r.out == canary2, "value from a file, newlines kept", r)
        r = ferry("put", *opts, "ml/wandb", stdin=canary + "-v2")
        tap.ok(r.rc == 0 and "version 3" in r.err, "overwrite: version 3", r)
        r = ferry("get", *opts, "file:ml/wandb")
        tap.eq(r.out, canary + "-v2", "get returns the new value")

        r = ferry("list", *opts)
        lines = [ln.split("\t") for ln in r.out.splitlines()]
        tap.ok(r.rc == 0 and [ln[:2] for ln in lines] == [["hf", "2"], ["ml/wandb", "3"]],
               "list: names and versions, sorted", r)
        tap.ok(all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", ln[2]) for ln in lines),
               "list: creation times in UTC", r)

        with open(key, "rb") as f:
            k = f.read()
        try:
            gen, entries = read_store(store, k)
            ok = (gen == 3 and entries["ml/wandb"][2] == (canary + "-v2").encode() and
                  entries["hf"][2] == canary2.encode() and entries["hf"][0] == 2)
            tap.ok(ok, "store decrypted independently per the documented format", entries)
        except Exception as e:  # noqa: BLE001
            tap.ok(False, "store decrypted independently per the documented format", repr(e))
        with open(store, "rb") as f:
            raw = f.read()
        tap.ok(canary.encode() not in raw and b"CANARY" not in raw, "no value in clear in the store")
        tap.eq(stat.S_IMODE(os.stat(store).st_mode), 0o600, "store file mode 0600")
        tap.ok(not os.path.exists(store + ".tmp"), "no temporary file left")

        r = ferry("get", *opts, "file:missing")
        tap.ok(r.rc == 1 and "no secret named missing" in r.err, "missing secret: exit 1", r)
        r = ferry("get", *opts, "vault:kv/ml/x#token")
        tap.ok(r.rc == 2 and "needs --config" in r.err, "vault without --config: exit 2", r)
        r = ferry("get", *opts, "gcp-sm:projects/ml-prod/secrets/s/versions/1")
        tap.ok(r.rc == 2 and "needs --config" in r.err, "gcp-sm without --config: exit 2", r)
        r = ferry("get", *opts, "aws-sm:prod/db#password")
        tap.ok(r.rc == 2 and "needs --config" in r.err, "aws-sm without --config: exit 2", r)
        r = ferry("get", *opts, "file:a/../b")
        tap.ok(r.rc == 2 and "bad reference" in r.err and "\"..\"" in r.err,
               "malformed reference: exit 2 with the part named", r)
        r = ferry("get", *opts, "s3:bucket/x")
        tap.ok(r.rc == 2 and "backend" in r.err, "unknown backend: exit 2", r)

        r = ferry("rm", *opts, "hf")
        tap.ok(r.rc == 0, "rm: exit 0", r)
        r = ferry("rm", *opts, "hf")
        tap.ok(r.rc == 1 and "no secret named hf" in r.err, "rm again: exit 1", r)
        r = ferry("list", *opts)
        tap.ok(r.rc == 0 and r.out.startswith("ml/wandb\t3\t") and "hf" not in r.out,
               "list after rm", r)

        # ---- rekey: the store re-sealed under a new key file ---------------------------------
        newkey = key + ".new"
        r = ferry("rekey", *opts)
        tap.ok(r.rc == 2 and "--new-key" in r.err, "rekey without --new-key: exit 2", r)
        r = ferry("rekey", *opts, "--new-key", key)
        tap.ok(r.rc == 1 and "File exists" in r.err, "rekey onto an existing file: exit 1", r)
        r = ferry("rekey", *opts, "--new-key", newkey)
        tap.ok(r.rc == 0 and "re-sealed" in r.err and canary not in r.err, "rekey: exit 0", r)
        tap.eq(stat.S_IMODE(os.stat(newkey).st_mode), 0o600, "the new key file is mode 0600")
        r = ferry("get", *opts, "file:ml/wandb")
        tap.ok(r.rc == 1 and "different key" in r.err and r.out == "",
               "the old key no longer opens the store", r)
        newopts = ["--store", store, "--key", newkey]
        r = ferry("get", *newopts, "file:ml/wandb")
        tap.ok(r.rc == 0 and r.out == canary + "-v2", "the new key reads the same value", r)
        r = ferry("list", *newopts)
        tap.ok(r.rc == 0 and r.out.startswith("ml/wandb\t3\t"), "versions kept by rekey", r)
        r = ferry("put", *opts, "--new-key", newkey, "x", stdin="v")
        tap.ok(r.rc == 2 and "rekey option" in r.err, "--new-key on put: exit 2", r)
        os.replace(newkey, key)  # the operator's last step: the new key takes the old one's place
        with open(store, "rb") as f:
            raw = f.read()  # the tests below edit the store as it is now

        # ---- hostile state -------------------------------------------------------------------
        os.chmod(key, 0o644)
        r = ferry("get", *opts, "file:ml/wandb")
        tap.ok(r.rc == 2 and "0600 or stricter" in r.err and r.out == "",
               "key file mode 0644: refused with the reason", r)
        r = ferry("put", *opts, "x", stdin="y")
        tap.ok(r.rc == 2 and "0600 or stricter" in r.err, "put refused too", r)
        os.chmod(key, 0o600)

        other = os.path.join(d, "other.key")
        r = ferry("init", "--store", os.path.join(d, "none.store"), "--key", other)
        tap.ok(r.rc == 0, "second key created", r)
        r = ferry("get", "--store", store, "--key", other, "file:ml/wandb")
        tap.ok(r.rc == 1 and "different key" in r.err and r.out == "",
               "wrong key: exit 1, nothing printed", r)

        flipped = bytearray(raw)
        flipped[len(flipped) // 2] ^= 0x40
        with open(store, "wb") as f:
            f.write(flipped)
        r = ferry("get", *opts, "file:ml/wandb")
        tap.ok(r.rc == 1 and "integrity check failed" in r.err and r.out == "",
               "one byte changed: exit 1, nothing printed", r)
        r = ferry("list", *opts)
        tap.ok(r.rc == 1 and r.out == "", "list refuses the modified store", r)
        with open(store, "wb") as f:
            f.write(raw[:-7])
        r = ferry("get", *opts, "file:ml/wandb")
        tap.ok(r.rc == 1 and r.out == "", "truncated store: exit 1", r)

    # The canaries never reach an error or a listing.
    leaks = [r for r in RUNS if "CANARY" in r.err]
    tap.ok(not leaks, f"no canary in the stderr of {len(RUNS)} runs", leaks[0] if leaks else None)
    listing = [r for r in RUNS if "CANARY" in r.out and r.rc != 0]
    tap.ok(not listing, "no canary on stdout of a failed run", listing[0] if listing else None)
    bad = [r for r in RUNS if SANITIZER.search(r.err)]
    tap.ok(not bad, f"no sanitizer report in {len(RUNS)} runs", bad[0] if bad else None)


if __name__ == "__main__":
    ft.main("test_cli_secret", body)
