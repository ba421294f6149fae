#!/usr/bin/env python3
# TAP: the file backend under a KMS-wrapped data key ("key_kms_file"), against moto_server.
#   - the data key (32 random bytes) is encrypted by the real AWS CLI under a moto KMS key with
#     the encryption context purpose=ferry-secret-store; only the ciphertext is kept;
#   - `ferry secret put | list | get | rm --config` work on the store through one KMS Decrypt
#     (ferry's SigV4, environment credentials), and the store holds no value in clear;
#   - the same store cannot be read with a blob of another data key (the store's MAC refuses),
#     nor with a blob encrypted without the context (KMS refuses);
#   - an "aws-kms:b64:<the store's wrapped key>" reference, as a workload granted aws-kms:*
#     could ask for it, does not unwrap the key: KMS refuses it without the context;
#   - configuration errors (no aws-kms section, key and key_kms_file together, a malformed
#     blob file): exit 2 with the member named; no canary and no key bytes in any stderr.
# moto_server and aws are required: when missing the test fails (CI installs them).
import base64
import json
import os
import secrets
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402
from test_secrets_faults import Moto  # noqa: E402

CONTEXT = "purpose=ferry-secret-store"


def body(t):
    if not shutil.which("moto_server") or not shutil.which("aws"):
        t.ok(False, "moto_server and aws are installed (pip install 'moto[server]' awscli)")
        return
    try:
        moto = Moto()
    except RuntimeError as e:
        t.ok(False, "moto_server answers", str(e))
        return
    try:
        with ft.tempdir() as d:
            run(t, d, moto.url)
    finally:
        moto.stop()


def run(t, d, endpoint):
    env = ft.clean_env({"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
                        "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null",
                        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"})

    def aws(*args):
        r = subprocess.run(["aws", "--endpoint-url", endpoint, "--output", "json"] + list(args),
                           env=env, capture_output=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"aws {args[:2]} failed: {r.stderr.decode()[:400]}")
        return json.loads(r.stdout) if r.stdout.strip() else None

    key_id = aws("kms", "create-key", "--description", "ferry store")["KeyMetadata"]["KeyId"]
    keys = []

    def wrap(name, context=True):
        """A new 32-byte data key encrypted under key_id; returns the blob file's path."""
        raw = os.path.join(d, name + ".raw")
        data = secrets.token_bytes(32)
        keys.append(data)
        with open(os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(data)
        args = ["kms", "encrypt", "--key-id", key_id, "--plaintext", "fileb://" + raw]
        if context:
            args += ["--encryption-context", CONTEXT]
        blob = aws(*args)["CiphertextBlob"]
        os.unlink(raw)
        path = os.path.join(d, name + ".kms")
        with open(path, "w") as f:
            f.write(blob + "\n")
        return path, blob

    store = os.path.join(d, "secrets.store")
    blob_file, blob = wrap("store")
    kms = {"region": "us-east-1", "endpoint": endpoint, "allow_http_loopback": True}

    def config(name, file_section, with_kms=True):
        sec = {"file": file_section}
        if with_kms:
            sec["aws-kms"] = kms
        return ft.write_json(os.path.join(d, name + ".json"), {"secrets": sec})

    good = config("good", {"store": store, "key_kms_file": blob_file})
    errs = []

    def ferry(*args, stdin=None):
        r = ft.ferry(*args, stdin=stdin, env=env)
        errs.append(r.err)
        return r

    canary = "CANARY-KMS-" + secrets.token_hex(16)
    r = ferry("secret", "put", "--config", good, "team/db", stdin=canary)
    t.ok(r.rc == 0 and "version 1" in r.err, "put --config: sealed under the unwrapped key", r)
    r = ferry("secret", "put", "--config", good, "team/other", stdin="x")
    t.ok(r.rc == 0, "put a second secret", r)
    r = ferry("secret", "list", "--config", good)
    t.ok(r.rc == 0 and [ln.split("\t")[0] for ln in r.out.splitlines()] ==
         ["team/db", "team/other"], "list --config: both names, no values", r)
    r = ferry("secret", "get", "--config", good, "file:team/db")
    t.ok(r.rc == 0 and r.out == canary, "get --config: the value", r)
    r = ferry("secret", "rm", "--config", good, "team/other")
    t.ok(r.rc == 0, "rm --config", r)
    r = ferry("secret", "list", "--config", good)
    t.eq([ln.split("\t")[0] for ln in r.out.splitlines()], ["team/db"], "list after rm")
    with open(store, "rb") as f:
        raw = f.read()
    t.ok(canary.encode() not in raw and not any(k in raw for k in keys),
         "the store holds neither the value nor the data key in clear")

    # Another data key: the store's MAC refuses it (nothing decrypts, nothing is overwritten).
    other_file, _ = wrap("other")
    other = config("other", {"store": store, "key_kms_file": other_file})
    r = ferry("secret", "get", "--config", other, "file:team/db")
    t.ok(r.rc == 1 and canary not in r.out, "another data key: refused (exit 1)", r)
    r = ferry("secret", "put", "--config", other, "team/evil", stdin="x")
    t.ok(r.rc != 0, "another data key: put refused", r)
    r = ferry("secret", "get", "--config", good, "file:team/db")
    t.ok(r.rc == 0 and r.out == canary, "the store is intact afterwards", r)

    # Without the encryption context KMS does not decrypt.
    noctx_file, _ = wrap("noctx", context=False)
    noctx = config("noctx", {"store": store, "key_kms_file": noctx_file})
    r = ferry("secret", "get", "--config", noctx, "file:team/db")
    t.ok(r.rc != 0 and "store key: KMS Decrypt" in r.err and "InvalidCiphertext" in r.err and
         r.out == "",
         "a blob without the context: KMS refuses, clear error", r)

    # The attack: the wrapped key asked for as an aws-kms reference.
    r = ferry("secret", "get", "--config", good, "aws-kms:b64:" + blob)
    t.ok(r.rc != 0 and "InvalidCiphertext" in r.err and r.out == "",
         "aws-kms:b64:<the store's wrapped key>: KMS refuses (no context), nothing out", r)

    # Configuration errors.
    for desc, path, want in (
            ("no aws-kms section", config("nokms", {"store": store, "key_kms_file": blob_file},
                                          with_kms=False), "aws-kms"),
            ("key and key_kms_file", config("both", {"store": store, "key_kms_file": blob_file,
                                                     "key": blob_file}), "exclude"),
            ("malformed blob file", config("bad", {"store": store,
                                                   "key_kms_file": good}), "base64"),
            ("missing blob file", config("miss", {"store": store,
                                                  "key_kms_file": d + "/nope"}), "key_kms_file")):
        r = ferry("secret", "get", "--config", path, "file:team/db")
        t.ok(r.rc == 2 and want in r.err and r.out == "", f"{desc}: exit 2 naming {want!r}", r)
    r = ferry("secret", "init", "--config", good)
    t.ok(r.rc == 2 and "aws kms encrypt" in r.err, "init --config: exit 2, says how", r)

    leaked = [e for e in errs if canary in e or any(base64.b64encode(k).decode() in e
                                                     for k in keys)]
    t.ok(not leaked, "no value and no data key in any stderr", leaked[:1])


if __name__ == "__main__":
    ft.main("test_secrets_kms_store", body)
