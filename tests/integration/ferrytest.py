# ferrytest.py - shared helpers for ferry's integration tests (TAP scripts run by automake).
#
# What is here:
#   TAP           plan/ok/eq/skip bookkeeping; the plan is printed at the end (valid TAP) and a
#                 crash prints "Bail out!" so the harness never mistakes it for a pass.
#   Key           test keys made with `cryptography` (RSA 2048, P-256, P-384, Ed25519) that sign
#                 with any JWS alg so hostile tokens can be crafted byte by byte.
#   make_token    compact JWS from a header and claims (dicts or raw bytes).
#   ferry()       run the built ferry binary with a timeout and return rc/stdout/stderr.
#   Listener      a loopback TCP listener that only counts connections (for "zero connections"
#                 assertions: jku/x5u targets, https_proxy).
#   Standin       start/stop tests/peers/idp_standin.py (the loopback OIDC IdP).
#   Children are always killed in finally blocks; temporary directories are removed.
#
# Only the standard library and `cryptography` are used here; joserfc is imported by the
# scripts that test interoperability with it.
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
import ssl

from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

sys.dont_write_bytecode = True

# The fixed clock every test decides at (also the clock of ../shared/vectors/cases.json).
NOW = 1700000000

SRCDIR = os.environ.get("FERRY_SRCDIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BUILDDIR = os.environ.get("FERRY_BUILDDIR") or os.getcwd()
FERRY_BIN = os.environ.get("FERRY_BIN") or os.path.join(BUILDDIR, "ferry")
PYTHON3 = os.environ.get("PYTHON3") or sys.executable

# Environment variables that would route traffic or change TLS trust behind the test's back.
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY",
               "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "CURL_CA_BUNDLE", "SSL_CERT_FILE",
               "SSL_CERT_DIR")


# ---- TAP -----------------------------------------------------------------------------------

class TAP:
    """Minimal TAP producer. Every check goes through ok(); done() prints the plan."""

    def __init__(self, name):
        self.name = name
        self.n = 0
        self.failed = 0
        self.started = time.monotonic()
        sys.stdout.reconfigure(line_buffering=True)

    def ok(self, cond, desc, diag=None, todo=None):
        """One check. todo: a known, reported defect; the harness counts the failure as XFAIL
        and a pass as XPASS (an error), so the TODO is dropped as soon as it is fixed."""
        self.n += 1
        desc = desc.replace("#", "%23").replace("\n", " ")
        directive = f" # TODO {todo}" if todo else ""
        if cond:
            print(f"ok {self.n} - {desc}{directive}")
        else:
            if not todo:
                self.failed += 1
            print(f"not ok {self.n} - {desc}{directive}")
            if diag is not None:
                self.diag(diag)
        return bool(cond)

    def eq(self, got, want, desc, diag=None):
        extra = f"got {got!r}, want {want!r}"
        if diag:
            extra += "\n" + str(diag)
        return self.ok(got == want, desc, extra)

    def skip(self, desc, why):
        self.n += 1
        print(f"ok {self.n} - {desc} # SKIP {why}")

    @staticmethod
    def diag(text):
        for line in str(text).splitlines() or [""]:
            print(f"# {line}")

    def done(self):
        print(f"1..{self.n}")
        self.diag(f"{self.name}: {self.n - self.failed}/{self.n} passed in "
                  f"{time.monotonic() - self.started:.1f} s")
        return 1 if self.failed else 0


def main(name, body):
    """Run body(tap) and exit with TAP semantics; an exception is a bail-out, never a pass."""
    import warnings
    warnings.simplefilter("ignore")  # joserfc warns about EdDSA (RFC 9864); noise in TAP
    tap = TAP(name)
    if not (os.path.isfile(FERRY_BIN) and os.access(FERRY_BIN, os.X_OK)):
        print(f"Bail out! ferry binary not found at {FERRY_BIN} (set FERRY_BIN)")
        sys.exit(99)
    try:
        body(tap)
    except Exception:  # report every crash as such, with its traceback
        TAP.diag(traceback.format_exc())
        print(f"Bail out! {name}: test script raised an exception")
        sys.exit(99)
    sys.exit(tap.done())


# ---- encoding and keys ---------------------------------------------------------------------

def b64u(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_int(v):
    return b64u(v.to_bytes((v.bit_length() + 7) // 8 or 1, "big"))


def jdump(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


_HASH = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


class Key:
    """A test signing key. kind: "RSA" (2048), "P-256", "P-384" or "Ed25519"."""

    _cache = {}

    def __init__(self, kind, kid=None, priv=None):
        self.kind = kind
        if priv is None:
            if kind == "RSA":
                priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            elif kind == "P-256":
                priv = ec.generate_private_key(ec.SECP256R1())
            elif kind == "P-384":
                priv = ec.generate_private_key(ec.SECP384R1())
            elif kind == "Ed25519":
                priv = ed25519.Ed25519PrivateKey.generate()
            else:
                raise ValueError(kind)
        self.priv = priv
        self.kid = kid

    @staticmethod
    def for_alg(alg, kid=None):
        if alg.startswith(("RS", "PS")):
            return Key("RSA", kid)
        return Key({"ES256": "P-256", "ES384": "P-384", "EdDSA": "Ed25519"}[alg], kid)

    def public_jwk(self, alg=None, use=None):
        pub = self.priv.public_key()
        if self.kind == "RSA":
            nums = pub.public_numbers()
            jwk = {"kty": "RSA", "n": b64u_int(nums.n), "e": b64u_int(nums.e)}
        elif self.kind in ("P-256", "P-384"):
            nums = pub.public_numbers()
            size = 32 if self.kind == "P-256" else 48
            jwk = {"kty": "EC", "crv": self.kind,
                   "x": b64u(nums.x.to_bytes(size, "big")),
                   "y": b64u(nums.y.to_bytes(size, "big"))}
        else:
            raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64u(raw)}
        if self.kid is not None:
            jwk["kid"] = self.kid
        if alg:
            jwk["alg"] = alg
        if use:
            jwk["use"] = use
        return jwk

    def public_pem(self):
        return self.priv.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, alg, data):
        if alg.startswith("RS"):
            return self.priv.sign(data, padding.PKCS1v15(), _HASH[alg[2:]]())
        if alg.startswith("PS"):
            h = _HASH[alg[2:]]()
            return self.priv.sign(data, padding.PSS(mgf=padding.MGF1(h),
                                                    salt_length=h.digest_size), h)
        if alg.startswith("ES"):
            der = self.priv.sign(data, ec.ECDSA(_HASH[alg[2:]]()))
            r, s = decode_dss_signature(der)
            size = (self.priv.curve.key_size + 7) // 8
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        if alg == "EdDSA":
            return self.priv.sign(data)
        raise ValueError(alg)


def jwks(*keys, **kw):
    return {"keys": [k.public_jwk(**kw) if isinstance(k, Key) else k for k in keys]}


def hs_sign(alg, secret, data):
    h = hmac.HMAC(secret, _HASH[alg[2:]]())
    h.update(data)
    return h.finalize()


def make_token(key=None, alg="RS256", claims=None, header=None, typ=None, kid=True,
               header_raw=None, payload_raw=None, sig=None, extra_header=None):
    """Compact JWS. header/claims are dicts (or header_raw/payload_raw bytes taken verbatim).
    The default header is {"alg", "kid" (key's, unless kid is False or a string), "typ"}.
    sig overrides the signature bytes; otherwise key signs with alg (alg 'none' -> empty)."""
    if header_raw is None:
        if header is None:
            header = {"alg": alg}
            k = key.kid if kid is True and key is not None else kid
            if k not in (None, False):
                header["kid"] = k
            if typ is not None:
                header["typ"] = typ
        if extra_header:
            header = dict(header, **extra_header)
        header_raw = jdump(header)
    if payload_raw is None:
        payload_raw = jdump(claims if claims is not None else {})
    signing_input = (b64u(header_raw) + "." + b64u(payload_raw)).encode()
    if sig is None:
        sig = b"" if key is None else key.sign(alg, signing_input)
    return signing_input.decode() + "." + b64u(sig)


def claims(iss, aud, sub="user-1", now=NOW, lifetime=600, **extra):
    c = {"iss": iss, "sub": sub, "aud": aud, "iat": now - 10, "nbf": now - 10,
         "exp": now + lifetime, "jti": b64u(os.urandom(12))}
    for k, v in extra.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)
    return path


# ---- running ferry ---------------------------------------------------------------------------

class Result:
    def __init__(self, rc, out, err, elapsed):
        self.rc, self.out, self.err, self.elapsed = rc, out, err, elapsed

    def json(self):
        try:
            return json.loads(self.out)
        except ValueError:
            return None

    def lines(self):
        """Batch output: one JSON object per line (None for a line that is not JSON)."""
        res = []
        for line in self.out.splitlines():
            try:
                res.append(json.loads(line))
            except ValueError:
                res.append(None)
        return res

    def __repr__(self):
        return f"rc={self.rc}\nstdout: {self.out[:2000]}\nstderr: {self.err[:2000]}"


class HTTPResult:
    """One HTTP response: status, body (bytes) and headers (dict; the caller decides the key
    case)."""

    def __init__(self, status, body, headers):
        self.status, self.body, self.headers = status, body, headers

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def __repr__(self):
        return f"HTTP {self.status} {self.headers} {self.body[:500]!r}"


def free_port():
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
    env.setdefault("LC_ALL", "C")
    if extra:
        env.update(extra)
    return env


def run(argv, stdin=None, env=None, timeout=30):
    if isinstance(stdin, str):
        stdin = stdin.encode()
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env if env is not None else clean_env(),
                            start_new_session=True)
    try:
        out, err = proc.communicate(stdin if stdin is not None else b"", timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return Result(-999, out.decode("utf-8", "replace"),
                      err.decode("utf-8", "replace") + f"\n[killed after {timeout} s]",
                      time.monotonic() - t0)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return Result(proc.returncode, out.decode("utf-8", "replace"),
                  err.decode("utf-8", "replace"), time.monotonic() - t0)


def ferry(*args, stdin=None, env=None, timeout=30):
    return run([FERRY_BIN] + [str(a) for a in args], stdin=stdin, env=env, timeout=timeout)


def verify_args(issuer, jwks_path, audience="ferry", algs=("RS256",), profile=None,
                now=NOW, extra=()):
    a = ["token", "verify", "--issuer", issuer, "--jwks", jwks_path]
    for aud in ([audience] if isinstance(audience, str) else audience):
        a += ["--audience", aud]
    for alg in algs:
        a += ["--alg", alg]
    if profile:
        a += ["--profile", profile]
    if now is not None:
        a += ["--now", str(now)]
    return a + list(extra)


@contextlib.contextmanager
def tempdir(prefix="ferry-it-"):
    d = tempfile.mkdtemp(prefix=prefix)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---- loopback listeners ----------------------------------------------------------------------

class Listener:
    """Counts TCP connections on 127.0.0.1:port and closes each at once. Use as a context
    manager; .count is the number of accepted connections, .first_bytes what the first peer
    sent (best effort, for diagnostics)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.count = 0
        self.first_bytes = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.count += 1
            try:
                conn.settimeout(0.2)
                if not self.first_bytes:
                    self.first_bytes = conn.recv(256)
            except OSError:
                pass
            finally:
                conn.close()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"


# ---- the loopback OIDC IdP stand-in (tests/peers/idp_standin.py) ------------------------------

PEERS = os.path.join(SRCDIR, "tests", "peers")
STANDIN = os.path.join(PEERS, "idp_standin.py")
MKCERTS = os.path.join(PEERS, "mkcerts.sh")


def standin_available():
    return os.path.isfile(STANDIN) and os.path.isfile(MKCERTS)


def make_certs(directory):
    """Run tests/peers/mkcerts.sh into directory; returns it. Raises on failure."""
    env = clean_env({"OPENSSL": os.environ.get("OPENSSL") or "openssl"})
    r = run(["sh", MKCERTS, directory], env=env, timeout=60)
    if r.rc != 0 or not os.path.isfile(os.path.join(directory, "ca.pem")):
        raise RuntimeError(f"mkcerts.sh failed: {r}")
    return directory


class Standin:
    """The loopback OIDC IdP stand-in as a child process (see tests/peers/idp_standin.py).
    certs: a mkcerts.sh directory (HTTPS with good.pem) or None for plain HTTP."""

    def __init__(self, certs, jwks_path=None, *args, leaf="good"):
        self.certs = certs
        argv = [PYTHON3, STANDIN]
        if certs:
            argv += ["--tls-cert", os.path.join(certs, leaf + ".pem"),
                     "--tls-key", os.path.join(certs, leaf + ".key")]
        if jwks_path:
            argv += ["--jwks", jwks_path]
        argv += list(args)
        self.errfile = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.errfile, env=clean_env(),
                                     start_new_session=True)
        try:
            import select
            ready, _, _ = select.select([self.proc.stdout], [], [], 15)
            line = self.proc.stdout.readline() if ready else b""
            self.port = int(line)
        except (ValueError, OSError):
            self.stop()
            self.errfile.seek(0)
            raise RuntimeError("idp_standin did not start: "
                               + self.errfile.read().decode(errors="replace"))
        self.base = f"{'https' if certs else 'http'}://127.0.0.1:{self.port}"
        self._ctx = None
        if certs:
            self._ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))

    def _req(self, path, body=None):
        req = urllib.request.Request(self.base + path, data=body, method="POST" if body else
                                     "GET", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10, context=self._ctx) as resp:
            return json.loads(resp.read())

    def stats(self):
        """{"requests": {PATH: n}, "total", "connections", "connects"}; our own /_stats and
        /_control calls are not counted in requests, but they are TCP connections."""
        return self._req("/_stats")

    def count(self, path):
        return self.stats()["requests"].get(path, 0)

    def control(self, doc):
        return self._req("/_control", json.dumps(doc).encode())

    def reset(self):
        self.control({"reset_stats": True})

    def stop(self):
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(OSError):
            self.proc.stdout.close()
        self.errfile.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# ---- fixtures for shell tests -------------------------------------------------------------

FIXTURE_ISSUER = "https://fixture.issuer.test"


def write_fixture(directory, remote=None, ca_file=None):
    """`python3 ferrytest.py fixture DIR [ISSUER_URL CA_FILE]`: keys and tokens for shell tests
    (test_valgrind.sh). Writes jwks.json, conf.json, badconf.json, good.tok, bad.tok (expired),
    none.tok, batch.txt (mixed good and bad lines) and now (the decision clock); with an
    issuer URL (the IdP stand-in serving jwks.json) also remote.json (discovery, ca_file) and
    remote.tok (a token of that issuer)."""
    os.makedirs(directory, exist_ok=True)
    rsa_k, ec_k, ed_k = Key("RSA", "r1"), Key("P-256", "e1"), Key("Ed25519", "d1")
    iss, aud = FIXTURE_ISSUER, "ferry"
    jwks_path = write_json(os.path.join(directory, "jwks.json"), jwks(rsa_k, ec_k, ed_k))
    conf = {"issuer": iss, "audiences": [aud], "jwks_file": jwks_path,
            "algorithms": ["RS256", "ES256", "EdDSA"]}
    write_json(os.path.join(directory, "conf.json"), {"issuers": [conf]})
    write_json(os.path.join(directory, "badconf.json"),
               {"issuers": [dict(conf, unknown_member=True)]})
    good = make_token(rsa_k, "RS256", claims(iss, aud, sub="vg"), typ="JWT")
    bad = make_token(rsa_k, "RS256", claims(iss, aud, exp=NOW - 3600, iat=NOW - 4000,
                                            nbf=NOW - 4000), typ="JWT")
    none = make_token(None, "none", claims(iss, aud, sub="root"), kid=False)
    h, p, s = good.split(".")
    lines = [good, make_token(ec_k, "ES256", claims(iss, aud)),
             make_token(ed_k, "EdDSA", claims(iss, aud)), bad, "garbage", none,
             f"{h}.{p}.{s[:-4]}AAAA", make_token(rsa_k, "RS256", claims(iss, aud, pad="x" * 9000)),
             make_token(rsa_k, "RS256", claims("https://unknown.test", aud)),
             make_token(ec_k, "ES256", claims(iss, aud), kid="nope"), ""]
    if remote:
        rconf = dict(conf, issuer=remote, discovery=True, ca_file=ca_file,
                     fetch={"connect_timeout_ms": 5000, "timeout_ms": 20000})
        del rconf["jwks_file"]
        write_json(os.path.join(directory, "remote.json"), {"issuers": [rconf]})
        with open(os.path.join(directory, "remote.tok"), "w") as f:
            f.write(make_token(ec_k, "ES256", claims(remote, aud, sub="remote")) + "\n")
    for name, text in (("good.tok", good), ("bad.tok", bad), ("none.tok", none),
                       ("batch.txt", "\n".join(lines) + "\n"), ("now", str(NOW))):
        with open(os.path.join(directory, name), "w") as f:
            f.write(text + ("" if text.endswith("\n") else "\n"))


if __name__ == "__main__":
    if len(sys.argv) in (3, 5) and sys.argv[1] == "fixture":
        write_fixture(*sys.argv[2:])
    else:
        sys.exit("usage: ferrytest.py fixture DIR [ISSUER_URL CA_FILE]")
