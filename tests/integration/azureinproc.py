#!/usr/bin/env python3
# azureinproc.py - fetch one azure-kv reference several times inside ONE process through
# libferry.so (ctypes), so test_secrets_azure.py can count at the stand-in how many token
# requests one process makes (`ferry secret get` is one fetch per process).
#
#   azureinproc.py LIBFERRY CONFIG_JSON REF ASSERTIONS_FILE STEPS_JSON
#
# CONFIG_JSON is the "secrets" section. ASSERTIONS_FILE holds ferry-minted client assertions,
# one per line (tests/unit/mint_tool), handed out one per call of the backend's
# web_identity_token. STEPS_JSON is a list of steps: {"fetch": N} fetches N times,
# {"parallel": [REF...]} fetches each REF at once from a thread of its own (ctypes releases
# the GIL; distinct references, so the cache's single-flight does not merge them),
# {"sleep": S} sleeps, {"post": URL_PATH, "body": {...}} posts to the stand-in (ORIGIN and
# CA_FILE from the environment), {"mark": NAME} records the assertion calls so far. Prints one
# JSON line {"ok": [bool...], "values_match": bool, "errors": [...], "assertion_calls": N,
# "audiences": [...], "marks": {...}}; values are compared with AZURE_EXPECT, never printed.
import ctypes
import json
import os
import ssl
import sys
import threading
import time
import urllib.request

lib_path, conf_text, ref, assertions_path, steps_text = sys.argv[1:6]
with open(assertions_path) as f:
    assertions = [line.strip() for line in f if line.strip()]
jansson = ctypes.CDLL("libjansson.so.4")
jansson.json_loads.restype = ctypes.c_void_p
jansson.json_loads.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p]
jansson.json_delete.argtypes = [ctypes.c_void_p]
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
ferry = ctypes.CDLL(lib_path)

IDENTITY = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p,
                            ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_size_t)


class Env(ctypes.Structure):
    _fields_ = [("state_dir", ctypes.c_char_p), ("web_identity_token", IDENTITY),
                ("web_identity_userdata", ctypes.c_void_p), ("clock_ms", ctypes.c_void_p),
                ("clock_userdata", ctypes.c_void_p)]


class Value(ctypes.Structure):
    _fields_ = [("data", ctypes.POINTER(ctypes.c_ubyte)), ("len", ctypes.c_size_t),
                ("version", ctypes.c_char * 128), ("ttl_hint", ctypes.c_uint32),
                ("locked", ctypes.c_bool), ("map_len", ctypes.c_size_t)]


calls = {"n": 0, "audiences": []}


def identity(userdata, audience, ret_token, errbuf, errlen):
    i = calls["n"]
    calls["n"] += 1
    calls["audiences"].append(audience.decode())
    if i >= len(assertions):
        return -5  # -EIO: out of assertions
    tok = assertions[i].encode() + b"\0"
    p = libc.malloc(len(tok))
    if not p:
        return -12
    ctypes.memmove(p, tok, len(tok))
    ret_token[0] = p
    return 0


callback = IDENTITY(identity)
ferry.ferry_secrets_new.argtypes = [ctypes.c_void_p, ctypes.POINTER(Env),
                                    ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p,
                                    ctypes.c_size_t]
ferry.ferry_secrets_fetch.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p,
                                      ctypes.POINTER(ctypes.POINTER(Value)), ctypes.c_char_p,
                                      ctypes.c_size_t]
ferry.ferry_secrets_free.argtypes = [ctypes.c_void_p]
ferry.ferry_secret_value_free.argtypes = [ctypes.POINTER(Value)]

env = Env(None, callback, None, None, None)
conf = jansson.json_loads(conf_text.encode(), 0, None)
if not conf:
    sys.exit("bad configuration JSON")
err = ctypes.create_string_buffer(768)
s = ctypes.c_void_p()
r = ferry.ferry_secrets_new(conf, ctypes.byref(env), ctypes.byref(s), err, len(err))
jansson.json_delete(conf)
if r < 0:
    print(json.dumps({"open": r, "error": err.value.decode()}))
    sys.exit(0)
expect = os.environ.get("AZURE_EXPECT", "").encode()
ctx = ssl.create_default_context(cafile=os.environ.get("CA_FILE"))
oks, match, errors, marks = [], True, [], {}


def fetch_once(which=ref):
    v = ctypes.POINTER(Value)()
    e = ctypes.create_string_buffer(768)
    r = ferry.ferry_secrets_fetch(s, which.encode(), None, ctypes.byref(v), e, len(e))
    if r == 0:
        good = ctypes.string_at(v.contents.data, v.contents.len) == expect
        ferry.ferry_secret_value_free(v)
        return True, good, None
    return False, True, e.value.decode()


def record(res):
    global match
    oks.append(res[0])
    match = match and res[1]
    if res[2] is not None:
        errors.append(res[2])


for step in json.loads(steps_text):
    if "sleep" in step:
        time.sleep(step["sleep"])
    elif "post" in step:
        req = urllib.request.Request(os.environ["ORIGIN"] + step["post"], method="POST",
                                     data=json.dumps(step.get("body", {})).encode())
        urllib.request.urlopen(req, timeout=10, context=ctx).read()
    elif "mark" in step:
        marks[step["mark"]] = calls["n"]
    for _ in range(step.get("fetch", 0)):
        record(fetch_once())
    if step.get("parallel"):
        refs = step["parallel"]
        results = [None] * len(refs)
        gate = threading.Barrier(len(refs))

        def worker(i):
            gate.wait()
            results[i] = fetch_once(refs[i])
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(refs))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for res in results:
            record(res)
ferry.ferry_secrets_free(s)
print(json.dumps({"ok": oks, "values_match": match, "errors": errors,
                  "assertion_calls": calls["n"], "audiences": calls["audiences"],
                  "marks": marks}))
