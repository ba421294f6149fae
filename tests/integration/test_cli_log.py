#!/usr/bin/env python3
# TAP: `ferry log verify` over audit logs written by the library (tests/unit/auditlog_writer)
# and over tampered copies of them.
#   - a sealed log verifies (exit 0, the verified range printed); a reopened and continued log,
#     a log written by four threads, and a live (unsealed) log with --live verify too;
#   - each kind of tampering exits 1 and names the first broken record, "line N (seq S):
#     reason": an edited record, an edited record with its hash redone, a deleted record,
#     deleted leading records, reordered records, an inserted copy, an inserted forged record,
#     a file cut mid-line, whole records removed from the end (final checkpoint included), a
#     rewritten chain, a forged checkpoint signature, a checkpoint signed by an unknown key;
#   - end to end with the mint key store: `ferry keys init`, a log signed with
#     <state>/keys/key-<kid>.pem, `ferry keys rotate`, the log continued with the new key
#     (verify_keys holding both), verified with `ferry keys jwks --all` (exit 0) and a tampered
#     copy (exit 1);
#   - usage errors exit 2.
# Every log and every tampered copy is also checked by an independent verifier written here
# from docs/internals/auditlog.md alone (hashlib, json, joserfc), which must accept the same
# logs and name the same first broken line and seq: proof that the format is documented
# exactly.
import hashlib
import json
import os
import re
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402

from joserfc import jws as jose_jws  # noqa: E402
from joserfc.jwk import ECKey, OKPKey, RSAKey  # noqa: E402

WRITER = os.path.join(ft.BUILDDIR, "tests", "unit", "auditlog_writer")
ZERO = "0" * 64
TYP = "ferry-auditlog-checkpoint"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
TYPE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MEMBERS = {"checkpoint", "decision", "details", "hash", "prev", "seq", "subject", "time",
           "token", "type"}
MAX_LINE = 16384


# ---- the independent verifier (docs/internals/auditlog.md) ----------------------------------

def canon(value):
    """Canonical bytes: sorted members, no whitespace, every code point outside 0x20-0x7e
    escaped (\\b \\f \\n \\r \\t short, others \\uXXXX lowercase), no reals. This is exactly
    Python's json.dumps with ensure_ascii and sorted keys."""
    def no_reals(v):
        if isinstance(v, float):
            raise ValueError("real number")
        if isinstance(v, dict):
            for x in v.values():
                no_reals(x)
        if isinstance(v, list):
            for x in v:
                no_reals(x)
    no_reals(value)
    return json.dumps(value, ensure_ascii=True, sort_keys=True, separators=(",", ":"))


def _no_dups(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate member {k}")
        d[k] = v
    return d


def load_keys(jwks_doc):
    keys = {}
    for jwk in jwks_doc["keys"]:
        cls = {"EC": ECKey, "OKP": OKPKey, "RSA": RSAKey}[jwk["kty"]]
        keys[jwk["kid"]] = cls.import_key(jwk)
    return keys


def py_verify(path, jwks_doc, live=False):
    """Returns (problems, stats): problems a list of (line, seq, text), first break first."""
    keys = load_keys(jwks_doc)
    problems = []
    expect, prev, prev_seq, cp_first = 1, ZERO, 0, 1
    after_final = sealed = False
    stats = {"records": 0, "checkpoints": 0, "last_cp": 0, "last_seq": 0, "unsigned": 0}
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    partial = lines.pop()  # b"" when the file ends with a newline
    n = 0
    for n, raw in enumerate(lines, 1):
        sealed = False
        if len(raw) > MAX_LINE - 1:
            problems.append((n, 0, "too long"))
            expect, prev, prev_seq = expect + 1, None, 0
            continue
        try:
            rec = json.loads(raw.decode("ascii"), object_pairs_hook=_no_dups)
            assert isinstance(rec, dict)
        except (ValueError, AssertionError, UnicodeDecodeError):
            problems.append((n, 0, "not JSON"))
            expect, prev, prev_seq = expect + 1, None, 0
            continue
        seq = rec.get("seq") if isinstance(rec.get("seq"), int) and rec.get("seq") > 0 else 0
        cp = rec.get("checkpoint")
        ok = (set(rec) <= MEMBERS and seq and TYPE.match(str(rec.get("type", "")))
              and rec.get("decision") in ("allow", "deny", "error", "info")
              and isinstance(rec.get("subject"), str) and TIME.match(str(rec.get("time", "")))
              and HEX64.match(str(rec.get("prev", ""))) and HEX64.match(str(rec.get("hash", "")))
              and ((rec.get("type") == "auditlog.checkpoint") == (cp is not None)))
        if not ok:
            problems.append((n, seq, "bad record"))
            expect, prev, prev_seq = expect + 1, None, 0
            continue
        stored = rec.pop("hash")
        try:
            c = canon(rec)
        except ValueError:
            c = None
        if c is None or raw.decode() != c[:-1] + ',"hash":"' + stored + '"}':
            problems.append((n, seq, "not canonical"))
            expect, prev, prev_seq = seq + 1, stored, seq
            continue
        bad = False
        if seq != expect:
            problems.append((n, seq, "seq"))
            if seq < prev_seq:
                continue
            bad = True
        elif prev is not None and rec["prev"] != prev:
            problems.append((n, seq, "prev"))
            bad = True
        elif hashlib.sha256(bytes.fromhex(rec["prev"]) + c.encode()).hexdigest() != stored:
            problems.append((n, seq, "hash"))
            bad = True
        elif after_final and rec["type"] != "auditlog.open":
            problems.append((n, seq, "after final"))
            bad = True
        final = False
        if not bad and cp is not None:
            why = check_cp(rec, cp, seq, rec["prev"], cp_first, keys)
            if why:
                problems.append((n, seq, why))
                bad = True
            final = cp.get("final") is True
        expect, prev, prev_seq, after_final = seq + 1, stored, seq, False
        stats["last_seq"] = seq
        if cp is not None:
            cp_first = seq  # a checkpoint bounds the next range even when it failed
        if bad:
            continue
        stats["records"] += 1
        if cp is not None:
            stats["checkpoints"] += 1
            stats["last_cp"] = seq
            stats["unsigned"] = 0
            after_final, sealed = final, final
        else:
            stats["unsigned"] += 1
    last_bad = bool(problems) and problems[-1][0] == n
    if partial:
        n += 1
        if not live:
            problems.append((n, 0, "incomplete last line"))
            last_bad = True
    if not live and not sealed and not last_bad and n:
        problems.append((n, stats["last_seq"] if not partial else 0, "not sealed"))
    if live and stats["last_cp"] == 0:
        problems.append((n, stats["last_seq"], "nothing signed"))
    return problems, stats


def check_cp(rec, cp, seq, prev, cp_first, keys):
    if (rec["decision"] != "info" or rec["subject"] != "auditlog" or "details" in rec
            or "token" in rec):
        return "checkpoint record shape"
    if sorted(cp) != ["final", "first", "head", "jws", "kid", "last"]:
        return "checkpoint members"
    if cp["first"] != cp_first or cp["last"] != seq - 1 or cp["head"] != prev:
        return "checkpoint range/head"
    kid = cp["kid"]
    if kid not in keys:
        return "unknown key"
    try:
        obj = jose_jws.deserialize_compact(cp["jws"], keys[kid])
    except Exception:
        return "signature"
    hdr = obj.protected
    if hdr.get("kid") != kid or hdr.get("typ") != TYP:
        return "header"
    want = canon({"final": cp["final"], "first": cp["first"], "head": cp["head"],
                  "last": cp["last"], "seq": seq, "time": rec["time"]})
    if obj.payload != want.encode():
        return "payload"
    return None


# ---- tampering helpers ------------------------------------------------------------------------

def read_lines(path):
    with open(path) as f:
        return f.read().split("\n")[:-1]


def write_lines(path, lines, final_newline=True):
    with open(path, "w") as f:
        f.write("\n".join(lines) + ("\n" if final_newline and lines else ""))
    return path


def rehash(line):
    rec = json.loads(line)
    rec.pop("hash")
    c = canon(rec)
    h = hashlib.sha256(bytes.fromhex(rec["prev"]) + c.encode()).hexdigest()
    return c[:-1] + ',"hash":"' + h + '"}'


def rechain(lines, start):
    """Redo prev links and hashes from index start on, as a forger without the key would."""
    out = list(lines)
    for i in range(start, len(out)):
        rec = json.loads(out[i])
        if i > 0:
            rec["prev"] = json.loads(out[i - 1])["hash"]
        rec.pop("hash")
        out[i] = rehash(canon(rec)[:-1] + ',"hash":"' + ZERO + '"}')
    return out


def resign_checkpoint(line, key, kid):
    """Re-sign a checkpoint record's payload with key under kid and fix the record's hash."""
    rec = json.loads(line)
    cp = rec["checkpoint"]
    cp["head"] = rec["prev"]
    payload = canon({"final": cp["final"], "first": cp["first"], "head": cp["head"],
                     "last": cp["last"], "seq": rec["seq"], "time": rec["time"]}).encode()
    cp["jws"] = ft.make_token(key, "ES256", header={"alg": "ES256", "kid": kid, "typ": TYP},
                              payload_raw=payload)
    cp["kid"] = kid
    rec["hash"] = ZERO
    return rehash(canon(rec))


def body(tap):
    if not os.access(WRITER, os.X_OK):
        print(f"Bail out! {WRITER} not built (make check builds it)")
        sys.exit(99)
    with ft.tempdir("ferry-log-") as d:
        key, jwks_path, log = (os.path.join(d, n) for n in ("key.pem", "jwks.json", "a.log"))

        def write(path, *extra, count=40, every=10):
            r = ft.run([WRITER, "--log", path, "--key", key, "--jwks-out", jwks_path,
                        "--count", str(count), "--checkpoint-every", str(every)] + list(extra),
                       timeout=120)
            if r.rc != 0:
                raise RuntimeError(f"auditlog_writer failed: {r}")
            return r

        def verify(path, *extra, jwks=None):
            return ft.ferry("log", "verify", path, "--jwks", jwks or jwks_path, *extra)

        write(log)
        with open(jwks_path) as f:
            jwks_doc = json.load(f)
        lines = read_lines(log)
        n = len(lines)  # open + 40 events + 4 checkpoints + final = 46

        # ---- good logs
        r = verify(log)
        tap.ok(r.rc == 0 and re.search(
            rf"^verified: seq 1\.\.{n} \({n} records\), 5 checkpoint\(s\), last checkpoint seq "
            rf"{n} \(final: sealed\)$", r.out, re.M), "sealed log verifies, range printed", r)
        probs, st = py_verify(log, jwks_doc)
        tap.eq((probs, st["records"], st["checkpoints"]), ([], n, 5),
               "independent verifier accepts the sealed log")
        first = json.loads(lines[0])
        tap.ok(first["seq"] == 1 and first["prev"] == ZERO and first["type"] == "auditlog.open",
               "first record: seq 1, prev 64 zeros, auditlog.open")
        tap.ok(all(0x20 <= b < 0x7f for b in open(log, "rb").read().replace(b"\n", b"")),
               "the log is printable ASCII (controls and non-ASCII escaped)")
        tap.ok(not re.search(r"eyJ[A-Za-z0-9_-]+\.eyJ", "\n".join(
            line for line in lines if '"checkpoint"' not in line)),
            "no token appears outside the checkpoint signatures")
        ev = json.loads(lines[1])
        tap.ok(set(ev["token"]) == {"jti", "sha256"} and HEX64.match(ev["token"]["sha256"])
               and ev["token"]["jti"].startswith("jti-"), "tokens appear as jti + sha256 only")

        log2 = os.path.join(d, "b.log")
        write(log2, count=7, every=5)
        write(log2, count=3, every=5)  # reopen: continues the chain
        r = verify(log2)
        probs, st = py_verify(log2, jwks_doc)
        opens = [json.loads(x) for x in read_lines(log2) if '"auditlog.open"' in x]
        tap.ok(r.rc == 0 and not probs and len(opens) == 2
               and opens[1]["details"]["previous"] == "sealed",
               "a reopened log continues the chain and verifies (both verifiers)", r)

        # cut back to the first session's final checkpoint: a valid sealed log on its own,
        # caught only when the verifier is told the seq the log reached (--min-last-seq)
        blines = read_lines(log2)
        seal1 = next(i for i, x in enumerate(blines) if '"final":true' in x) + 1
        cut = write_lines(os.path.join(d, "b-cut.log"), blines[:seal1])
        r = verify(cut)
        tap.ok(r.rc == 0 and "(final: sealed)" in r.out,
               "a log cut back to an earlier session's seal verifies on its own", r)
        r = verify(cut, "--min-last-seq", str(len(blines)))
        tap.ok(r.rc == 1 and re.search(
            rf"^line {seal1} \(seq {seal1}\): log ends at seq {seal1}, before seq "
            rf"{len(blines)} which it must reach", r.out, re.M) and "FAILED" in r.err,
            "--min-last-seq: the cut log exits 1 naming its last line", r)
        r = verify(log2, "--min-last-seq", str(len(blines)))
        tap.ok(r.rc == 0, "--min-last-seq: the whole log still verifies", r)

        log3 = os.path.join(d, "c.log")
        write(log3, "--threads", "4", count=400, every=33)
        r = verify(log3)
        probs, st = py_verify(log3, jwks_doc)
        tap.ok(r.rc == 0 and not probs and st["records"] == len(read_lines(log3)),
               "four writer threads make one valid chain (both verifiers)", r)

        live = os.path.join(d, "live.log")
        write(live, "--no-close", count=25, every=10)  # cps at 11, 22; 23..28 unsigned
        r = verify(live)
        m = re.search(r"^line (\d+) \(seq (\d+)\): log is not sealed", r.out, re.M)
        tap.ok(r.rc == 1 and m and m.group(1) == "28",
               "an unsealed log fails without --live (names its last line)", r)
        r = verify(live, "--live")
        tap.ok(r.rc == 0 and re.search(r"^verified: seq 1\.\.22 signed \(22 records; 6 more "
                                       r"unsigned\), 2 checkpoint\(s\), last checkpoint seq 22$",
                                       r.out, re.M)
               and re.search(r"^warning: line 23 \(seq 23\): 6 record\(s\) after the last "
                             r"checkpoint \(seq 23\.\.28\) are not signed yet$", r.out, re.M),
               "--live: the signed range is printed and the unsigned tail is a warning", r)
        probs, st = py_verify(live, jwks_doc, live=True)
        tap.ok(not probs and st["last_cp"] == 22 and st["unsigned"] == 6,
               "independent verifier agrees on the live log")

        # ---- tampering: ferry and the independent verifier name the same first break
        other = ft.Key("P-256")
        real_kid = jwks_doc["keys"][0]["kid"]

        def edited(ls):
            ls = list(ls)
            ls[4] = ls[4].replace("trainer-3", "trainer-9")
            return ls

        def inserted_forged(ls):
            forged = rehash(ls[4].replace("trainer-3", "trainer-7"))
            return ls[:4] + [forged] + ls[4:]

        def rewritten(ls):
            return rechain(edited(ls), 4)

        def forged_sig(ls):
            ls = rechain(edited(ls), 4)
            cp = next(i for i in range(4, n) if '"checkpoint"' in ls[i])
            ls[cp] = resign_checkpoint(ls[cp], other, real_kid)
            return rechain(ls, cp + 1)

        def unknown_key(ls):
            ls = list(ls)
            ls[-1] = resign_checkpoint(ls[-1], other, "attacker-key")
            return ls

        def final_edited(ls, name, value):
            """The final checkpoint record itself edited and rehashed (no later checkpoint
            covers it: only its own signature and fixed shape can)."""
            rec = json.loads(ls[-1])
            rec[name] = value
            rec["hash"] = ZERO
            return ls[:-1] + [rehash(canon(rec))]

        cps = [i + 1 for i, x in enumerate(lines) if '"checkpoint"' in x]  # 1-based lines
        cases = [
            # name, tampered lines, final newline, line, seq, reason fragment
            ("edited record", edited(lines), True, 5, 5, "hash does not match the record"),
            ("edited record with its hash redone",
             [rehash(x) if i == 4 else x for i, x in enumerate(edited(lines))], True, 6, 6,
             "prev does not match the hash of the previous record (line 5"),
            ("deleted record", lines[:4] + lines[5:], True, 5, 6, "record(s) missing"),
            ("deleted leading records", lines[2:], True, 1, 3, "where 1 was expected"),
            ("reordered records", lines[:4] + [lines[5], lines[4]] + lines[6:], True, 5, 6,
             "deleted or reordered"),
            ("inserted copy", lines[:5] + [lines[4]] + lines[5:], True, 6, 5,
             "inserted or duplicated"),
            ("inserted forged record", inserted_forged(lines), True, 6, 5,
             "inserted or duplicated"),
            ("cut mid-line", lines[:-1] + [lines[-1][:100]], False, n, None,
             "incomplete last line"),
            ("final checkpoint removed", lines[:-1], True, n - 1, n - 1, "not sealed"),
            ("last records removed", lines[:-5], True, n - 5, n - 5, "not sealed"),
            ("rewritten chain", rewritten(lines), True, cps[0], cps[0],
             "checkpoint head is not the hash"),
            ("forged checkpoint signature", forged_sig(lines), True, cps[0], cps[0],
             "checkpoint signature does not verify"),
            ("checkpoint signed by an unknown key", unknown_key(lines), True, n, n,
             "checkpoint signed by unknown key 'attacker-key'"),
            ("final checkpoint's time edited",
             final_edited(lines, "time", "2001-01-01T00:00:00.000000Z"), True, n, n,
             "covers a different range, head, final flag or time"),
            ("final checkpoint's subject edited", final_edited(lines, "subject", "mallory"),
             True, n, n, "checkpoint record must have decision info, subject auditlog"),
            ("details added to the final checkpoint",
             final_edited(lines, "details", {"note": "added later"}), True, n, n,
             "checkpoint record must have decision info, subject auditlog"),
        ]
        for name, ls, nl, want_line, want_seq, frag in cases:
            path = write_lines(os.path.join(d, "t.log"), ls, nl)
            r = verify(path)
            out_lines = [x for x in r.out.splitlines() if x.startswith("line ")]
            head = (f"line {want_line} (seq {want_seq}): " if want_seq
                    else f"line {want_line}: ")
            tap.ok(r.rc == 1 and out_lines and out_lines[0].startswith(head)
                   and frag in out_lines[0] and "FAILED" in r.err,
                   f"{name}: exit 1, first problem '{head}...{frag}'", r)
            probs, _ = py_verify(path, jwks_doc)
            tap.ok(probs and probs[0][0] == want_line and probs[0][1] == (want_seq or 0),
                   f"{name}: independent verifier names line {want_line} too", probs[:3])

        # reordering is two problems, not a cascade
        path = write_lines(os.path.join(d, "t.log"), lines[:4] + [lines[5], lines[4]]
                           + lines[6:])
        r = verify(path)
        tap.eq([x.split(":")[0] for x in r.out.splitlines()],
               ["line 5 (seq 6)", "line 6 (seq 5)"], "a swap is reported as two problems")

        # a key set holding the old and the new key: the unknown-key copy verifies with it
        both = ft.write_json(os.path.join(d, "both.json"),
                             {"keys": jwks_doc["keys"] + [other.public_jwk(alg="ES256")]})
        path = write_lines(os.path.join(d, "t.log"), unknown_key(lines))
        with open(both) as f:
            both_doc = json.load(f)
        both_doc["keys"][1]["kid"] = "attacker-key"
        ft.write_json(both, both_doc)
        r = verify(path, jwks=both)
        tap.ok(r.rc == 0, "the same copy verifies once its signer's key is trusted", r)

        # ---- end to end with the mint key store: checkpoints signed with ferry's own minting
        # keys across a rotation, verified with `ferry keys jwks --all`
        state = os.path.join(d, "state")
        mlog = os.path.join(d, "mint.log")

        def kid_pem(kid):
            return os.path.join(state, "keys", f"key-{kid}.pem")

        def mwrite(pem, *extra, count=12):
            return ft.run([WRITER, "--log", mlog, "--key", pem, "--count", str(count),
                           "--checkpoint-every", "5"] + list(extra), timeout=120)

        r = ft.ferry("keys", "init", "--state-dir", state)
        kid1 = json.loads(r.out)["kid"] if r.rc == 0 else None
        r1 = mwrite(kid_pem(kid1)) if kid1 else None
        r = ft.ferry("keys", "rotate", "--state-dir", state)
        kid2 = json.loads(r.out)[-1]["kid"] if r.rc == 0 else None
        jwks_all = os.path.join(d, "jwks-all.json")
        r = ft.ferry("keys", "jwks", "--all", "--state-dir", state)
        with open(jwks_all, "w") as f:
            f.write(r.out)
        only_new = ft.write_json(os.path.join(d, "jwks-new.json"), {"keys": [
            k for k in json.loads(r.out)["keys"] if k["kid"] == kid2]})
        # reopening with the new key but trusting only it refuses the log (old checkpoints
        # cannot be verified); trusting both continues it
        r_refused = mwrite(kid_pem(kid2), "--verify-jwks", only_new, count=1)
        r2 = mwrite(kid_pem(kid2), "--verify-jwks", jwks_all)
        mlines = read_lines(mlog)
        kids = [json.loads(x)["checkpoint"]["kid"] for x in mlines if '"checkpoint"' in x]
        tap.ok(kid1 and kid2 and kid1 != kid2 and r1.rc == 0 and r2.rc == 0
               and r_refused.rc == 1 and "unknown key" in r_refused.err
               and kid1 in kids and kids[-1] == kid2,
               "mint keys: a log signed with key-<kid>.pem, continued after ferry keys rotate "
               "with the new key", (r1, r_refused, r2, kids))
        r = verify(mlog, jwks=jwks_all)
        tap.ok(r.rc == 0 and re.search(rf"^verified: seq 1\.\.{len(mlines)} \({len(mlines)} "
                                       r"records\), \d+ checkpoint\(s\), last checkpoint seq "
                                       rf"{len(mlines)} \(final: sealed\)$", r.out, re.M),
               "mint keys: ferry log verify --jwks (ferry keys jwks --all) exits 0", r)
        with open(jwks_all) as f:
            probs, _ = py_verify(mlog, json.load(f))
        tap.eq(probs, [], "mint keys: the independent verifier accepts it too")
        r = verify(mlog, jwks=only_new)
        tap.ok(r.rc == 1 and f"checkpoint signed by unknown key '{kid1}'" in r.out,
               "mint keys: without the retired key the old checkpoints are not trusted", r)
        tampered = write_lines(os.path.join(d, "mint-t.log"),
                               [x.replace("trainer-3", "trainer-8") if i == 4 else x
                                for i, x in enumerate(mlines)])
        r = verify(tampered, jwks=jwks_all)
        tap.ok(r.rc == 1 and re.search(r"^line 5 \(seq 5\): hash does not match the record",
                                       r.out, re.M) and "FAILED" in r.err,
               "mint keys: a tampered copy exits 1 naming line 5", r)

        # ---- usage errors
        for desc, args, needle in [
            ("no subcommand", ["log"], "usage"),
            ("unknown subcommand", ["log", "check", log], "unknown subcommand"),
            ("no --jwks", ["log", "verify", log], "--jwks"),
            ("no file", ["log", "verify", "--jwks", jwks_path], "exactly one log"),
            ("two files", ["log", "verify", log, log, "--jwks", jwks_path], "exactly one log"),
            ("missing log", ["log", "verify", os.path.join(d, "nope.log"), "--jwks",
                             jwks_path], "nope.log"),
            ("missing jwks", ["log", "verify", log, "--jwks", os.path.join(d, "nope.json")],
             "nope.json"),
            ("bad jwks", ["log", "verify", log, "--jwks", log], "JWK Set"),
            ("unknown option", ["log", "verify", log, "--jwks", jwks_path, "--bogus"],
             "usage"),
            ("bad --max-problems", ["log", "verify", log, "--jwks", jwks_path,
                                    "--max-problems", "x"], "max-problems"),
            ("bad --min-last-seq", ["log", "verify", log, "--jwks", jwks_path,
                                    "--min-last-seq", "-1"], "min-last-seq"),
        ]:
            r = ft.ferry(*args)
            tap.ok(r.rc == 2 and needle.lower() in r.err.lower() and "verified" not in r.out,
                   f"usage: {desc}: exit 2", r)
        with open(jwks_path) as f:
            r = ft.ferry("log", "verify", log, "--jwks", "-", stdin=f.read())
        tap.ok(r.rc == 0 and "(final: sealed)" in r.out, "--jwks - reads the key set from stdin",
               r)
        big = ft.write_json(os.path.join(d, "big.json"),
                            {"keys": jwks_doc["keys"], "pad": "x" * (256 * 1024)})
        r = verify(log, jwks=big)
        tap.ok(r.rc == 2 and "big.json" in r.err and "verified" not in r.out,
               "usage: a key set over 256 KiB is refused: exit 2", r)
        r = ft.ferry("log", "verify", "--help")
        tap.ok(r.rc == 0 and "--live" in r.out, "--help exits 0", r)


if __name__ == "__main__":
    ft.main("test_cli_log", body)
