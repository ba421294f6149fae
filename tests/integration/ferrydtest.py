# Shared helpers of the ferryd integration tests (test_ferryd_*.py): HTTP requests over TCP or
# a unix socket, starting and stopping a ferryd with its stderr in a file, waiting until it
# answers, and reading its audit log.
import http.client
import http.server
import json
import os
import socket
import subprocess
import threading
import time
import urllib.parse

import ferrytest as ft

FERRYD_BIN = os.environ.get("FERRYD_BIN") or os.path.join(ft.BUILDDIR, "ferryd")
GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
AT_TYPE = "urn:ietf:params:oauth:token-type:access_token"
FORM = "application/x-www-form-urlencoded"


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=15):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def request(port, method, path, body=None, headers=None, unix=None):
    """One request on a fresh connection (TCP 127.0.0.1:port, or the unix socket unix)."""
    conn = UnixConnection(unix) if unix else http.client.HTTPConnection("127.0.0.1", port,
                                                                         timeout=15)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return ft.HTTPResult(r.status, r.read(), {k.lower(): v for k, v in r.getheaders()})
    finally:
        conn.close()


def form(pairs):
    """application/x-www-form-urlencoded, every byte that is not unreserved escaped."""
    return "&".join(urllib.parse.quote(k, safe="") + "=" + urllib.parse.quote(v, safe="")
                    for k, v in pairs)


def json_of(r):
    try:
        return json.loads(r.body)
    except ValueError:
        return None


def wait_ready(port, proc, path="/readyz", timeout=30):
    """Poll path until it answers 200; False when ferryd exits or the time is up."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            if request(port, "GET", path).status == 200:
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def open_log(d, name):
    """A file for ferryd's stderr, opened for appending: ferryd writes at the end whatever
    offset the test reads at (with "w+" both would share one offset)."""
    return open(os.path.join(d, name + ".err"), "a+")


def log_text(err):
    err.flush()
    with open(err.name) as f:
        return f.read()


def start(conf_path, d, name):
    """ferryd -c conf_path with its stderr in d/name.err; returns (process, log file)."""
    err = open_log(d, name)
    proc = subprocess.Popen([FERRYD_BIN, "-c", conf_path], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=err, env=ft.clean_env())
    return proc, err


def stop(proc, err):
    """SIGTERM (SIGKILL after 15 s); returns ferryd's whole stderr."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = log_text(err)
    err.close()
    return text


def records(audit, rtype="token.exchange"):
    """The audit log's records of one type, in order."""
    out = []
    with open(audit) as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("type") == rtype:
                out.append(rec)
    return out


class JWKSServer:
    """Serves one JSON document (a JWK Set) at any path over plain HTTP on loopback, in a
    thread; counts requests. gated: every request is held until open() is called (arrived
    is set when the first one is in), so a test can keep a key-set fetch in flight."""

    def __init__(self, doc, gated=False):
        outer = self
        self.count = 0
        self.gate = threading.Event()
        self.arrived = threading.Event()
        if not gated:
            self.gate.set()
        data = json.dumps(doc).encode()

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.count += 1
                outer.arrived.set()
                outer.gate.wait(120)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def open(self):
        self.gate.set()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()
