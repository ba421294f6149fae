# oidcpeer.py - run the upstream IdP peer (tests/peers/oidc_provider.mjs, npm oidc-provider 9)
# from an integration test.
#
#   find_peer()   -> (directory holding oidc_provider.mjs with its node_modules, None) or
#                    (None, reason to skip). Uses tests/peers in the source tree when
#                    `npm ci` has been run there (contrib/check.sh does); otherwise installs the
#                    locked packages into a temporary directory with `npm ci --prefer-offline`
#                    (a `make distcheck` tree has no node_modules). Node older than 20.12
#                    (no crypto.hash, which oidc-provider 9 needs) is a skip reason too.
#   OidcPeer(...) one running peer on 127.0.0.1 (a free port chosen by the peer itself, or
#                 port=N): .issuer, .token(), .discovery(), .jwks(), .rotate(), .retire(),
#                 .keys(), .stats(), .reset_stats(), .signal(), .stop() -> exit status,
#                 .restart() (same port; same keys when keys_file= was given).
#   cleanup()     removes a temporary install (call once at the end of the test).
#
# Only the standard library is used.
import atexit
import base64
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import ferrytest as ft

SRCDIR = os.environ.get("FERRY_SRCDIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PEERS = os.path.join(SRCDIR, "tests", "peers")
SCRIPT = "oidc_provider.mjs"
PACKAGE = "oidc-provider"

DEFAULT_CLIENT = ("ferry-test", "ferry-test-secret")
RESOURCE = "https://ferry.test"
OTHER_RESOURCE = "https://other.test"

_tmp_install = None
_found = None


def _env():
    # No proxy may route the loopback traffic; npm keeps its own configuration.
    drop = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
            "ALL_PROXY", "NO_PROXY"}
    return {k: v for k, v in os.environ.items() if k not in drop and
            not k.startswith("FERRY_PEER_")}


def _pinned_version(directory):
    with open(os.path.join(directory, "package.json")) as f:
        return json.load(f)["dependencies"][PACKAGE]


def _installed_ok(directory, want):
    """True when directory/node_modules holds the pinned oidc-provider and is not older than
    the lock file (what contrib/check.sh's `npm ci` leaves)."""
    mod = os.path.join(directory, "node_modules")
    try:
        with open(os.path.join(mod, PACKAGE, "package.json")) as f:
            have = json.load(f).get("version")
        stamp = os.path.getmtime(os.path.join(mod, ".package-lock.json"))
        lock = os.path.getmtime(os.path.join(directory, "package-lock.json"))
    except (OSError, ValueError):
        return False
    return have == want and stamp >= lock


def _node_reason():
    node = shutil.which("node")
    if not node:
        return "node is not on PATH (contrib/check.sh installs Debian's nodejs and npm)"
    try:
        out = subprocess.run([node, "-p", "process.versions.node"], capture_output=True,
                             text=True, timeout=30).stdout.strip()
        major, minor = (int(x) for x in out.split(".")[:2])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return "node does not run (node -p process.versions.node failed)"
    if (major, minor) < (20, 12):
        return f"node {out} is too old for oidc-provider 9 (needs 20.12 or later)"
    return None


def find_peer():
    """(directory, None) when the peer can run, else (None, why not). Cached."""
    global _found, _tmp_install
    if _found is not None:
        return _found
    why = _node_reason()
    if why:
        _found = (None, why)
        return _found
    for name in ("package.json", "package-lock.json", SCRIPT):
        if not os.path.isfile(os.path.join(PEERS, name)):
            _found = (None, f"{os.path.join(PEERS, name)} is missing")
            return _found
    want = _pinned_version(PEERS)
    if _installed_ok(PEERS, want):
        _found = (PEERS, None)
        return _found
    npm = shutil.which("npm")
    if not npm:
        _found = (None, f"{PACKAGE} {want} is not installed in {PEERS}/node_modules and npm "
                        "is not on PATH (run `npm ci` there; contrib/check.sh does)")
        return _found
    # Install the locked packages next to a copy of the script (a distcheck tree is
    # read-only and has no node_modules); npm's cache makes this quick and offline-capable.
    _tmp_install = tempfile.mkdtemp(prefix="ferry-peers-")
    atexit.register(cleanup)
    for name in ("package.json", "package-lock.json", SCRIPT):
        shutil.copy(os.path.join(PEERS, name), _tmp_install)
    try:
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
                           cwd=_tmp_install, capture_output=True, text=True, timeout=600,
                           env=_env())
        rc, err = r.returncode, r.stderr
    except subprocess.TimeoutExpired:
        rc, err = -1, "timed out after 600 s"
    if rc != 0 or not _installed_ok(_tmp_install, want):
        tail = " | ".join(err.strip().splitlines()[-3:])
        _found = (None, f"{PACKAGE} {want} not installed in {PEERS}/node_modules and "
                        f"`npm ci` into a temporary directory failed (rc {rc}): {tail}")
        return _found
    _found = (_tmp_install, None)
    return _found


def cleanup():
    global _tmp_install
    if _tmp_install:
        shutil.rmtree(_tmp_install, ignore_errors=True)
        _tmp_install = None


class OidcPeer:
    """One oidc_provider.mjs process. alg: "RS256" or "ES256" (signs access tokens);
    clients: [(id, secret)]; resources: [url]; port: 0 lets the peer pick a free one;
    keys_file: where the peer keeps its private keys (loaded at start when it exists, saved
    after every rotate/retire), so restart() brings back the same keys. Raises RuntimeError
    when it does not start."""

    def __init__(self, alg="RS256", clients=None, resources=None, ttl=None, extra_args=(),
                 port=0, keys_file=None):
        directory, why = find_peer()
        if directory is None:
            raise RuntimeError(why)
        argv = [shutil.which("node"), os.path.join(directory, SCRIPT), "--port", str(port),
                "--alg", alg]
        if keys_file is not None:
            argv += ["--keys", keys_file]
        for cid, secret in clients or [DEFAULT_CLIENT]:
            argv += ["--client", f"{cid}:{secret}"]
        for res in resources or [RESOURCE, OTHER_RESOURCE]:
            argv += ["--resource", res]
        if ttl is not None:
            argv += ["--ttl", str(ttl)]
        argv += list(extra_args)
        self.alg = alg
        self.client = (clients or [DEFAULT_CLIENT])[0]
        self.keys_file = keys_file
        self._directory = directory
        self._launch(argv)
        self.issuer = self._ready.split(" ", 1)[1]
        self.port = int(self.issuer.rsplit(":", 1)[1])
        self._argv = argv

    def _launch(self, argv):
        """Start the process; sets self._ready to its READY line or raises RuntimeError."""
        directory = self._directory
        # Start-up takes about 0.4 s. On a 2-core machine running the sanitizer suite and the
        # fuzzers at once, node was seen stuck before READY (not even handling SIGTERM) in 2
        # of 40 starts; a start that has not said READY within 60 s is killed and tried again,
        # at most three times, and each failed try is reported on stderr.
        for attempt in range(1, 4):
            text = self._start(argv, directory, 60)
            if text.startswith("READY http://127.0.0.1:"):
                break
            why = (f"oidc_provider.mjs did not start in {self.startup:.1f} s (try {attempt}, "
                   f"exit {self.proc.returncode}, stdout {text!r}): " + self.stderr())
            sys.stderr.write(why + "\n")
        else:
            raise RuntimeError(why)
        self._ready = text

    def restart(self, keys_file=None):
        """Stop the peer (SIGTERM) and start it again on the same port, so the issuer URL is
        the same. With keys_file=None the peer keeps the keys_file it was started with (same
        keys when it had one, new keys otherwise); a different path (one that does not exist
        yet: new keys) replaces it. The request counters start again from zero. Returns the
        old process's exit status; raises RuntimeError when the new one does not start or
        does not come up as the same issuer."""
        rc = self.stop()
        with contextlib.suppress(OSError):
            self.errfile.close()
        argv = list(self._argv)
        argv[argv.index("--port") + 1] = str(self.port)
        if keys_file is not None:
            if "--keys" in argv:
                argv[argv.index("--keys") + 1] = keys_file
            else:
                argv += ["--keys", keys_file]
            self.keys_file = keys_file
        self._argv = argv
        self._launch(argv)
        if self._ready.split(" ", 1)[1] != self.issuer:
            self.stop()
            raise RuntimeError(f"restarted peer is {self._ready!r}, not {self.issuer}")
        return rc

    def _start(self, argv, directory, timeout):
        """One try: start the process, wait for its first stdout line; stop it when that is
        not READY. Returns the line."""
        self.errfile = tempfile.TemporaryFile()
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.errfile, env=_env(), cwd=directory,
                                     start_new_session=True)
        line = b""
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if ready:
            line = self.proc.stdout.readline()
        self.startup = time.monotonic() - self.t_start
        text = line.decode(errors="replace").strip()
        if not text.startswith("READY http://127.0.0.1:"):
            self.stop()
        return text

    # ---- HTTP ---------------------------------------------------------------------------

    def request(self, path, data=None, headers=None, method=None, timeout=15):
        req = urllib.request.Request(self.issuer + path, data=data, headers=headers or {},
                                     method=method or ("POST" if data is not None else "GET"))
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return ft.HTTPResult(resp.status, resp.read(), dict(resp.headers))
        except urllib.error.HTTPError as e:
            return ft.HTTPResult(e.code, e.read(), dict(e.headers))

    def token(self, resource=RESOURCE, scope=None, client=None, grant="client_credentials"):
        """POST /token with client_secret_basic. Returns the HTTPResult (JSON body)."""
        cid, secret = client or self.client
        form = {"grant_type": grant}
        if resource is not None:
            form["resource"] = resource
        if scope is not None:
            form["scope"] = scope
        # RFC 6749 2.3.1: id and secret are form-urlencoded before Basic encoding.
        cred = (urllib.parse.quote(cid, safe="") + ":" +
                urllib.parse.quote(secret, safe="")).encode()
        return self.request("/token", urllib.parse.urlencode(form).encode(), {
            "Authorization": "Basic " + base64.b64encode(cred).decode(),
            "Content-Type": "application/x-www-form-urlencoded"})

    def access_token(self, **kw):
        """The access_token string of a successful token request (raises otherwise)."""
        r = self.token(**kw)
        doc = r.json() or {}
        if r.status != 200 or "access_token" not in doc:
            raise RuntimeError(f"token request failed: {r}")
        return doc["access_token"]

    def discovery(self):
        return self.request("/.well-known/openid-configuration").json()

    def jwks(self):
        return self.request("/jwks").json()

    def rotate(self):
        """New RS256 + ES256 keys in front; old ones stay published. Returns /_keys."""
        return self.request("/_rotate", b"").json()

    def retire(self):
        """Publish only the newest pair of keys. Returns /_keys."""
        return self.request("/_retire", b"").json()

    def keys(self):
        """{"signing": {"RS256": kid, "ES256": kid}, "kids": [...], "alg": ...}"""
        return self.request("/_keys").json()

    def stats(self):
        """{"requests": {PATH: n}, "total": n}; control requests are not counted."""
        return self.request("/_stats").json()

    def count(self, path):
        return self.stats()["requests"].get(path, 0)

    def reset_stats(self):
        return self.request("/_stats/reset", b"").json()

    # ---- process ------------------------------------------------------------------------

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def stderr(self):
        self.errfile.seek(0)
        return self.errfile.read().decode(errors="replace")

    def stop(self, timeout=5):
        """SIGTERM, wait; SIGKILL when it does not exit in time. Returns the exit status
        (negative: killed by that signal; -9 means it did not stop cleanly)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(OSError):
            self.proc.stdout.close()
        return self.proc.returncode

    def close(self):
        self.stop()
        with contextlib.suppress(OSError):
            self.errfile.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
