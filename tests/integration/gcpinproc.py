#!/usr/bin/env python3
# gcpinproc.py - fetch gcp-sm references several times inside ONE process through libferry.so
# (ctypes), with ferry's own mint lent as the web identity (ferry_secrets_env), so
# test_secrets_gcp.py can count at the stand-in how many STS exchanges one process makes
# (`ferry secret get` is one fetch per process).
#
#   gcpinproc.py LIBFERRY CONFIG_JSON STATE_DIR ISSUER SUBJECT REF [REF...]
#
# CONFIG_JSON is the "secrets" section. Each REF is fetched in turn. Prints one JSON line
# {"ok": [bool...], "values_match": [bool...], "versions": [...], "errors": [...]}; each value
# is compared with the expected text in the environment (GCP_EXPECT_<i> for the i-th REF),
# never printed.
import ctypes
import json
import os
import sys

lib_path, conf_text, state_dir, issuer, subject = sys.argv[1:6]
refs = sys.argv[6:]
jansson = ctypes.CDLL("libjansson.so.4")
jansson.json_loads.restype = ctypes.c_void_p
jansson.json_loads.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p]
jansson.json_delete.argtypes = [ctypes.c_void_p]
ferry = ctypes.CDLL(lib_path)


class Value(ctypes.Structure):
    _fields_ = [("data", ctypes.POINTER(ctypes.c_ubyte)), ("len", ctypes.c_size_t),
                ("version", ctypes.c_char * 128), ("ttl_hint", ctypes.c_uint32),
                ("locked", ctypes.c_bool), ("map_len", ctypes.c_size_t)]


class MintOptions(ctypes.Structure):  # include/ferry/mint.h
    _fields_ = [("issuer", ctypes.c_char_p), ("state_dir", ctypes.c_char_p),
                ("alg", ctypes.c_int), ("rsa_bits", ctypes.c_uint), ("max_ttl", ctypes.c_int64),
                ("clock", ctypes.c_void_p), ("clock_data", ctypes.c_void_p),
                ("flags", ctypes.c_uint)]


class MintRequest(ctypes.Structure):
    _fields_ = [("subject", ctypes.c_char_p), ("audience", ctypes.POINTER(ctypes.c_char_p)),
                ("n_audience", ctypes.c_size_t), ("scope", ctypes.c_char_p),
                ("client_id", ctypes.c_char_p), ("ttl", ctypes.c_int64),
                ("src_iss", ctypes.c_char_p), ("src_sub", ctypes.c_char_p),
                ("act", ctypes.c_void_p)]


IDENTITY_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p,
                               ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_size_t)


class Env(ctypes.Structure):  # ferry_secrets_env
    _fields_ = [("state_dir", ctypes.c_char_p), ("web_identity_token", IDENTITY_FN),
                ("web_identity_userdata", ctypes.c_void_p), ("clock_ms", ctypes.c_void_p),
                ("clock_userdata", ctypes.c_void_p)]


ferry.ferry_mint_open.argtypes = [ctypes.POINTER(MintOptions), ctypes.POINTER(ctypes.c_void_p),
                                  ctypes.c_char_p, ctypes.c_size_t]
ferry.ferry_mint_token.argtypes = [ctypes.c_void_p, ctypes.POINTER(MintRequest),
                                   ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p,
                                   ctypes.c_void_p]
ferry.ferry_mint_free.argtypes = [ctypes.c_void_p]
ferry.ferry_secrets_new.argtypes = [ctypes.c_void_p, ctypes.POINTER(Env),
                                    ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p,
                                    ctypes.c_size_t]
ferry.ferry_secrets_fetch.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p,
                                      ctypes.POINTER(ctypes.POINTER(Value)), ctypes.c_char_p,
                                      ctypes.c_size_t]
ferry.ferry_secrets_free.argtypes = [ctypes.c_void_p]
ferry.ferry_secret_value_free.argtypes = [ctypes.POINTER(Value)]

err = ctypes.create_string_buffer(768)
mint = ctypes.c_void_p()
opts = MintOptions(issuer=issuer.encode(), state_dir=state_dir.encode(), flags=1)
if ferry.ferry_mint_open(ctypes.byref(opts), ctypes.byref(mint), err, len(err)) < 0:
    print(json.dumps({"open": "mint", "error": err.value.decode()}))
    sys.exit(0)
minted = []


@IDENTITY_FN
def identity(userdata, audience, ret_token, errbuf, errlen):
    aud = (ctypes.c_char_p * 1)(audience)
    req = MintRequest(subject=subject.encode(), audience=aud, n_audience=1,
                      client_id=b"ferry", ttl=300, src_iss=issuer.encode(),
                      src_sub=subject.encode())
    tok = ctypes.c_void_p()
    jti = ctypes.create_string_buffer(23)
    r = ferry.ferry_mint_token(mint, ctypes.byref(req), ctypes.byref(tok), jti, None)
    if r == 0:
        ret_token[0] = tok.value
        minted.append(audience.decode())
    return r


conf = jansson.json_loads(conf_text.encode(), 0, None)
if not conf:
    sys.exit("bad configuration JSON")
env = Env(web_identity_token=identity)
s = ctypes.c_void_p()
r = ferry.ferry_secrets_new(conf, ctypes.byref(env), ctypes.byref(s), err, len(err))
jansson.json_delete(conf)
if r < 0:
    print(json.dumps({"open": r, "error": err.value.decode()}))
    sys.exit(0)
oks, match, versions, errors = [], [], [], []
for i, ref in enumerate(refs):
    v = ctypes.POINTER(Value)()
    err.value = b""
    r = ferry.ferry_secrets_fetch(s, ref.encode(), None, ctypes.byref(v), err, len(err))
    oks.append(r == 0)
    if r == 0:
        expect = os.environ.get(f"GCP_EXPECT_{i}", "").encode()
        match.append(ctypes.string_at(v.contents.data, v.contents.len) == expect)
        versions.append(v.contents.version.decode())
        ferry.ferry_secret_value_free(v)
    else:
        match.append(False)
        versions.append(None)
        errors.append(err.value.decode())
ferry.ferry_secrets_free(s)
ferry.ferry_mint_free(mint)
print(json.dumps({"ok": oks, "values_match": match, "versions": versions, "errors": errors,
                  "minted_audiences": minted}))
