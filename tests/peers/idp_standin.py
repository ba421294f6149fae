#!/usr/bin/env python3
"""idp_standin.py - a small OIDC identity-provider stand-in on loopback, for ferry's tests.

Python 3.11 standard library only. It serves discovery and a JWKS the test controls, can be
told to misbehave per path, and counts what it is asked, so tests can assert fetch counts.

START
    python3 idp_standin.py [options]
  --bind ADDR         listen address (default 127.0.0.1; "::1" for IPv6 loopback)
  --port N            port (default 0 = ephemeral)
  --port-file PATH    also write the chosen port (decimal + newline) to PATH
  --tls-cert PEM --tls-key PEM
                      serve HTTPS with this certificate (see mkcerts.sh); default plain HTTP
  --issuer URL        "issuer" in discovery (default: the base URL, e.g. https://127.0.0.1:PORT)
  --jwks-uri URL      "jwks_uri" in discovery (default: <base>/jwks)
  --jwks FILE         JWKS served at /jwks, re-read on EVERY request (rewrite the file, or
                      better rename a new one over it, to rotate keys); default {"keys":[]}
  --fault PATH=MODE   a fault for PATH (repeatable); modes below
  --header PATH=NAME:VALUE
                      an extra response header for PATH (repeatable), e.g.
                      --header '/jwks=Cache-Control:max-age=60'
  --parent PID        exit when PID is no longer our parent (default: the parent at start)
  --proxy             also act as a CONNECT proxy (tunnels only to 127.0.0.1 / ::1 / localhost)
  --verbose           log requests to stderr

  The first line on stdout is the chosen port (decimal), flushed; nothing else is printed on
  stdout afterwards. The process exits on SIGTERM/SIGINT and on its own when its parent
  process goes away (polled every 0.2 s), so a crashed test leaves nothing running.

ENDPOINTS (the path is matched without its query string)
  GET /.well-known/openid-configuration  {"issuer", "jwks_uri", "authorization_endpoint",
        "token_endpoint", "response_types_supported", "subject_types_supported",
        "id_token_signing_alg_values_supported"}, merged with the "discovery" overrides set
        through /_control (a null override deletes the member).
  GET /jwks      the JWKS file (application/json)
  GET /ok        {"ok":true} - a generic small JSON answer for the http client tests
  GET /_stats    {"requests": {PATH: count, ...}, "sent": {PATH: bytes}, "total": N,
                  "connections": N, "connects": N}
                  - counts of everything except /_stats and /_control;
                  "sent" counts body bytes the oversize mode managed to write (a client that
                  aborts at its cap keeps this far below what was offered);
                  "connections" counts accepted TCP connections (for "zero connections"
                  assertions) except those whose first request is /_stats or /_control;
                  "connects" counts CONNECT proxy requests (also under "CONNECT" in
                  "requests")
  POST /_control JSON object, every member optional, applied atomically:
        {"faults":   {PATH: MODE or null, ...},      null clears the fault of PATH
         "headers":  {PATH: {NAME: VALUE or null}},   extra response headers
         "discovery":{MEMBER: VALUE or null},         overrides merged into discovery
         "jwks_file": PATH,
         "reset_stats": true}
        answers {"ok":true}. Other paths without a fault answer 404.

FAULT MODES (a fault replaces the normal answer of its path, existing or not)
  ok                 200 {"ok":true}
  status:CODE        CODE with {"error":"injected"}            e.g. status:500
  body:TEXT          200 application/json with TEXT verbatim
  file:PATH          200 application/json with the file's content, re-read per request
  invalid-json       200 '{"keys": [' (truncated JSON)
  keys-not-array     200 {"keys": {"kty": "EC"}}
  oversize[:N]       200, chunked, no Content-Length, N bytes (default 300 KiB = 307200)
  length[:N]         200 with "Content-Length: N" (default 1 GiB), then stalls 30 s
  many-headers[:N]   200 {"ok":true} after N (default 200) extra headers of 1 KiB each
  slowloris[:N]      the whole response (status line, headers, body of N bytes, default 64)
                     dribbled at 1 byte per second
  stall[:S]          read the request, answer nothing for S seconds (default 30), close
  delay:S[:MODE]     wait S seconds (float), then answer with MODE (another fault mode, e.g.
                     delay:0.5:redirect:/b), or as if there were no fault
  close              close the connection without answering
  redirect:LOC       302 with "Location: LOC" (LOC verbatim: relative, absolute, any scheme)
  chain:N:LOC        a redirect chain of N hops ending at LOC: PATH -> PATH?hop=1 -> ... ->
                     PATH?hop=N-1 -> LOC (each a 302)
  echo               200 {"method", "path", "headers": [[NAME, VALUE], ...]} - the request as
                     received, to check what the client sends
  wrong-issuer       (for the discovery path) the discovery document with issuer + "/"

EXAMPLE (from a test)
  standin = Popen([python3, "idp_standin.py", "--tls-cert", d+"/good.pem", "--tls-key",
                   d+"/good.key", "--jwks", jwks_path, "--fault", "/jwks=status:500"])
  port = int(standin.stdout.readline())
"""

import argparse
import json
import os
import select
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STOP = threading.Event()


class State:
    """Everything a test can change at runtime; guarded by one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.faults = {}
        self.headers = {}
        self.discovery = {}
        self.jwks_file = None
        self.issuer = None
        self.jwks_uri = None
        self.requests = {}
        self.sent = {}
        self.total = 0
        self.connections = 0
        self.control_connections = 0
        self.connects = 0

    def count(self, path):
        with self.lock:
            self.requests[path] = self.requests.get(path, 0) + 1
            self.total += 1

    def stats(self):
        with self.lock:
            return {"requests": dict(self.requests), "sent": dict(self.sent),
                    "total": self.total,
                    "connections": self.connections - self.control_connections,
                    "connects": self.connects}

    def control(self, doc):
        if not isinstance(doc, dict):
            raise ValueError("control document must be an object")
        with self.lock:
            for path, mode in (doc.get("faults") or {}).items():
                if mode is None:
                    self.faults.pop(path, None)
                else:
                    self.faults[path] = str(mode)
            for path, hdrs in (doc.get("headers") or {}).items():
                cur = self.headers.setdefault(path, {})
                for name, value in (hdrs or {}).items():
                    if value is None:
                        cur.pop(name, None)
                    else:
                        cur[name] = str(value)
            for name, value in (doc.get("discovery") or {}).items():
                self.discovery[name] = value
            if "jwks_file" in doc:
                self.jwks_file = doc["jwks_file"]
            if doc.get("reset_stats"):
                self.requests = {}
                self.sent = {}
                self.total = 0
                self.connections = 0
                self.control_connections = 0
                self.connects = 0


STATE = State()
VERBOSE = False


def sleep(seconds):
    """Sleep that ends early when the server stops."""
    STOP.wait(seconds)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ferry-idp-standin/1"

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):
        if VERBOSE:
            sys.stderr.write("idp_standin: " + (fmt % args) + "\n")

    # ---- helpers --------------------------------------------------------------------------
    def split_path(self):
        u = urllib.parse.urlsplit(self.path)
        return u.path or "/", urllib.parse.parse_qs(u.query)

    def send(self, code, body, ctype="application/json", extra=None, path=None):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        if path is not None:
            with STATE.lock:
                hdrs = dict(STATE.headers.get(path, {}))
            for name, value in hdrs.items():
                self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, code, obj, path=None):
        self.send(code, json.dumps(obj), path=path)

    def discovery_doc(self):
        base = self.server.base_url
        with STATE.lock:
            doc = {
                "issuer": STATE.issuer or base,
                "jwks_uri": STATE.jwks_uri or base + "/jwks",
                "authorization_endpoint": base + "/authorize",
                "token_endpoint": base + "/token",
                "response_types_supported": ["code", "id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
            }
            for name, value in STATE.discovery.items():
                if value is None:
                    doc.pop(name, None)
                else:
                    doc[name] = value
        return doc

    def jwks_body(self):
        with STATE.lock:
            path = STATE.jwks_file
        if not path:
            return b'{"keys":[]}'
        with open(path, "rb") as f:
            return f.read()

    # ---- normal answers -------------------------------------------------------------------
    def normal(self, path):
        if path == "/.well-known/openid-configuration":
            self.send_json(200, self.discovery_doc(), path=path)
        elif path == "/jwks":
            try:
                body = self.jwks_body()
            except OSError:
                self.send_json(500, {"error": "jwks file unreadable"}, path=path)
                return
            self.send(200, body, path=path)
        elif path == "/ok":
            self.send_json(200, {"ok": True}, path=path)
        else:
            self.send_json(404, {"error": "not found"}, path=path)

    # ---- faults ---------------------------------------------------------------------------
    def fault(self, path, query, mode):
        name, _, arg = mode.partition(":")
        if name == "ok":
            self.send_json(200, {"ok": True}, path=path)
        elif name == "status":
            self.send_json(int(arg), {"error": "injected"}, path=path)
        elif name == "body":
            self.send(200, arg, path=path)
        elif name == "file":
            with open(arg, "rb") as f:
                self.send(200, f.read(), path=path)
        elif name == "invalid-json":
            self.send(200, '{"keys": [', path=path)
        elif name == "keys-not-array":
            self.send_json(200, {"keys": {"kty": "EC"}}, path=path)
        elif name == "oversize":
            self.oversize(path, int(arg) if arg else 300 * 1024)
        elif name == "length":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(int(arg) if arg else 1 << 30))
            self.end_headers()
            self.wfile.write(b"{")
            self.wfile.flush()
            sleep(30)
            self.close_connection = True
        elif name == "many-headers":
            n = int(arg) if arg else 200
            extra = {"X-Filler-%d" % i: "f" * 1024 for i in range(n)}
            self.send(200, '{"ok": true}', extra=extra, path=path)
        elif name == "slowloris":
            self.slowloris(int(arg) if arg else 64)
        elif name == "stall":
            sleep(float(arg) if arg else 30)
            self.close_connection = True
        elif name == "delay":
            secs, _, then = arg.partition(":")
            sleep(float(secs))
            if then:
                self.fault(path, query, then)
            else:
                self.normal(path)
        elif name == "close":
            self.close_connection = True
        elif name == "redirect":
            self.send(302, "", extra={"Location": arg}, path=path)
        elif name == "chain":
            n, _, final = arg.partition(":")
            hop = int(query.get("hop", ["0"])[0])
            loc = final if hop + 1 >= int(n) else "%s?hop=%d" % (path, hop + 1)
            self.send(302, "", extra={"Location": loc}, path=path)
        elif name == "echo":
            self.send_json(200, {"method": self.command, "path": self.path,
                                 "headers": [[k, v] for k, v in self.headers.items()]},
                           path=path)
        elif name == "wrong-issuer":
            doc = self.discovery_doc()
            doc["issuer"] = doc["issuer"] + "/"
            self.send_json(200, doc, path=path)
        else:
            self.send_json(500, {"error": "unknown fault mode " + name})

    def oversize(self, path, n):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b" " * 16384
        sent = 0
        while sent < n and not STOP.is_set():
            piece = chunk[: min(len(chunk), n - sent)]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
            with STATE.lock:
                STATE.sent[path] = STATE.sent.get(path, 0) + len(piece)
        self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True

    def slowloris(self, n):
        body = b" " * n
        head = ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\n\r\n" % n).encode()
        for b in head + body:
            if STOP.is_set():
                break
            self.wfile.write(bytes([b]))
            self.wfile.flush()
            sleep(1)
        self.close_connection = True

    # ---- dispatch -------------------------------------------------------------------------
    def parse_request(self):
        ok = super().parse_request()
        if ok and not getattr(self, "seen_request", False):
            # A connection whose first request is /_stats or /_control is the test talking to
            # us, not the code under test: keep it out of "connections".
            self.seen_request = True
            if self.split_path()[0] in ("/_stats", "/_control"):
                with STATE.lock:
                    STATE.control_connections += 1
        return ok

    def do_GET(self):
        path, query = self.split_path()
        if path == "/_stats":
            self.send_json(200, STATE.stats())
            return
        STATE.count(path)
        with STATE.lock:
            mode = STATE.faults.get(path)
        try:
            if mode:
                self.fault(path, query, mode)
            else:
                self.normal(path)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True

    do_HEAD = do_GET

    def do_POST(self):
        path, _ = self.split_path()
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > 1 << 20:
            self.send_json(413, {"error": "too large"})
            return
        body = self.rfile.read(length)
        if path != "/_control":
            STATE.count(path)
            self.send_json(405, {"error": "method not allowed"})
            return
        try:
            STATE.control(json.loads(body))
        except (ValueError, AttributeError, TypeError) as e:
            self.send_json(400, {"error": str(e)})
            return
        self.send_json(200, {"ok": True})

    def do_CONNECT(self):
        with STATE.lock:
            STATE.connects += 1
        STATE.count("CONNECT")
        if not self.server.proxy:
            self.send_json(405, {"error": "not a proxy"})
            return
        host, _, port = self.path.rpartition(":")
        host = host.strip("[]")
        if host not in ("127.0.0.1", "::1", "localhost") or not port.isdigit():
            self.send_json(403, {"error": "tunnels only to loopback"})
            return
        try:
            upstream = socket.create_connection((host, int(port)), timeout=5)
        except OSError:
            self.send_json(502, {"error": "upstream unreachable"})
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        self.relay(self.connection, upstream)
        self.close_connection = True

    @staticmethod
    def relay(a, b):
        socks = [a, b]
        try:
            a.settimeout(None)
            b.settimeout(None)
            while not STOP.is_set():
                ready, _, _ = select.select(socks, [], [], 0.2)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except OSError:
            pass
        finally:
            b.close()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, tls_ctx, proxy):
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.tls_ctx = tls_ctx
        self.proxy = proxy
        super().__init__(addr, Handler)
        host = self.server_address[0]
        hostpart = "[%s]" % host if ":" in host else host
        self.base_url = "%s://%s:%d" % ("https" if tls_ctx else "http", hostpart,
                                        self.server_address[1])

    def server_bind(self):
        # Bind only; HTTPServer.server_bind would do a reverse lookup of the address.
        import socketserver
        socketserver.TCPServer.server_bind(self)
        self.server_name = self.server_address[0]
        self.server_port = self.server_address[1]

    def finish_request(self, request, client_address):
        # The TLS handshake runs here, in the connection's own thread, so a client that never
        # completes it cannot block the accept loop.
        with STATE.lock:
            STATE.connections += 1
        # Headers and body go out in separate writes; without NODELAY, Nagle plus the
        # client's delayed ACK adds 40 ms to every answer.
        try:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if self.tls_ctx:
            request.settimeout(10)
            try:
                request = self.tls_ctx.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                # The client refused our certificate (expected in the TLS tests) or went away.
                return
            request.settimeout(60)
        try:
            super().finish_request(request, client_address)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
            pass

    def handle_error(self, request, client_address):
        if VERBOSE:
            super().handle_error(request, client_address)


def parse_kv(items, what):
    out = []
    for item in items or []:
        path, sep, rest = item.partition("=")
        if not sep or not path.startswith("/"):
            raise SystemExit("idp_standin: bad %s %r (want /PATH=...)" % (what, item))
        out.append((path, rest))
    return out


def exit_now():
    """Stop at once: nothing here needs flushing, and a stalled handler thread must not keep
    the process (and the test that waits for it) alive."""
    STOP.set()
    try:
        sys.stderr.flush()
    finally:
        os._exit(0)


def watch_parent(ppid):
    while not STOP.is_set():
        if os.getppid() != ppid:
            exit_now()
        STOP.wait(0.2)


def main():
    global VERBOSE
    ap = argparse.ArgumentParser(description="OIDC IdP stand-in for ferry's tests")
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--issuer")
    ap.add_argument("--jwks-uri")
    ap.add_argument("--jwks")
    ap.add_argument("--fault", action="append")
    ap.add_argument("--header", action="append")
    ap.add_argument("--parent", type=int)
    ap.add_argument("--proxy", action="store_true")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    VERBOSE = args.verbose

    ppid = args.parent if args.parent else os.getppid()
    tls_ctx = None
    if args.tls_cert:
        tls_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls_ctx.load_cert_chain(args.tls_cert, args.tls_key)
        tls_ctx.set_alpn_protocols(["http/1.1"])

    STATE.issuer = args.issuer
    STATE.jwks_uri = args.jwks_uri
    STATE.jwks_file = args.jwks
    for path, mode in parse_kv(args.fault, "--fault"):
        STATE.faults[path] = mode
    for path, hdr in parse_kv(args.header, "--header"):
        name, sep, value = hdr.partition(":")
        if not sep:
            raise SystemExit("idp_standin: bad --header %r" % hdr)
        STATE.headers.setdefault(path, {})[name.strip()] = value.strip()

    server = Server((args.bind, args.port), tls_ctx, args.proxy)

    def on_signal(signum, frame):
        exit_now()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    port = server.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    sys.stdout.write("%d\n" % port)
    sys.stdout.flush()

    threading.Thread(target=watch_parent, args=(ppid,), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        STOP.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
