#!/usr/bin/env python3
# vaultinproc.py - fetch one vault reference N times inside ONE process through libferry.so
# (ctypes), sleeping between fetches, so test_secrets_vault.py can count at the stand-in how
# many logins and renewals one process makes (`ferry secret get` is one fetch per process).
#
#   vaultinproc.py LIBFERRY CONFIG_JSON REF N SLEEP_BEFORE_LAST
#
# CONFIG_JSON is the "secrets" section (no identity: approle or token methods). Prints one
# JSON line {"ok": [bool...], "values_match": bool, "errors": [...]}; the value itself is
# compared with the stand-in's copy passed in the environment (VAULT_EXPECT), never printed.
import ctypes
import json
import os
import sys
import time

lib_path, conf_text, ref, n, pause = sys.argv[1:6]
jansson = ctypes.CDLL("libjansson.so.4")
jansson.json_loads.restype = ctypes.c_void_p
jansson.json_loads.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p]
jansson.json_delete.argtypes = [ctypes.c_void_p]
ferry = ctypes.CDLL(lib_path)


class Value(ctypes.Structure):
    _fields_ = [("data", ctypes.POINTER(ctypes.c_ubyte)), ("len", ctypes.c_size_t),
                ("version", ctypes.c_char * 128), ("ttl_hint", ctypes.c_uint32),
                ("locked", ctypes.c_bool), ("map_len", ctypes.c_size_t)]


ferry.ferry_secrets_new.argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                    ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p,
                                    ctypes.c_size_t]
ferry.ferry_secrets_fetch.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p,
                                      ctypes.POINTER(ctypes.POINTER(Value)), ctypes.c_char_p,
                                      ctypes.c_size_t]
ferry.ferry_secrets_free.argtypes = [ctypes.c_void_p]
ferry.ferry_secret_value_free.argtypes = [ctypes.POINTER(Value)]

conf = jansson.json_loads(conf_text.encode(), 0, None)
if not conf:
    sys.exit("bad configuration JSON")
err = ctypes.create_string_buffer(768)
s = ctypes.c_void_p()
r = ferry.ferry_secrets_new(conf, None, ctypes.byref(s), err, len(err))
jansson.json_delete(conf)
if r < 0:
    print(json.dumps({"open": r, "error": err.value.decode()}))
    sys.exit(0)
expect = os.environ.get("VAULT_EXPECT", "").encode()
oks, match, errors = [], True, []
for i in range(int(n)):
    if i == int(n) - 1 and float(pause) > 0:
        time.sleep(float(pause))
    v = ctypes.POINTER(Value)()
    err.value = b""
    r = ferry.ferry_secrets_fetch(s, ref.encode(), None, ctypes.byref(v), err, len(err))
    oks.append(r == 0)
    if r == 0:
        match = match and ctypes.string_at(v.contents.data, v.contents.len) == expect
        ferry.ferry_secret_value_free(v)
    else:
        errors.append(err.value.decode())
ferry.ferry_secrets_free(s)
print(json.dumps({"ok": oks, "values_match": match, "errors": errors}))
