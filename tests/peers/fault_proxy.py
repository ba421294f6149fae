#!/usr/bin/env python3
# fault_proxy.py - a small HTTP reverse proxy on 127.0.0.1 for ferry's fault tests: it forwards
# every request to a target (moto_server) unchanged and answers with what the target answered,
# unless a fault planned through its control endpoint matches the request, in which case it
# answers the fault instead (or holds the request before forwarding it). Standard library only.
#
#   python3 fault_proxy.py --target http://127.0.0.1:PORT [--port N]
#
# Prints "READY http://127.0.0.1:PORT" on stdout once listening.
#
# A request's action is its X-Amz-Target header (AWS JSON 1.1: "secretsmanager.GetSecretValue",
# "TrentService.Decrypt") or the Action member of a form body (AWS Query: STS
# "AssumeRoleWithWebIdentity").
#
# Control (not forwarded):
#   GET  /_proxy/stats   {"requests": N, "forwarded": N, "faults": N,
#                         "actions": {action: N, ...}, "faulted": {action: N, ...}}
#   POST /_proxy/reset   counters to zero, every fault plan dropped
#   POST /_proxy/fault   {"action": A, "count": N, "kind": K, ...}: the next N requests whose
#                        action is A (any request without "action") meet fault K:
#     "status"        answer "status" (default 503) with an AWS-shaped JSON error
#                     {"__type": "type", "message": body} ("type" default ThrottlingException
#                     for 429, ServiceUnavailable otherwise); Retry-After: "retry_after" when
#                     given. For STS (a form request) the error is AWS Query XML.
#     "slow"          hold "delay_ms", then answer "status" (default 503) as above (a slow
#                     failure: a client with a shorter timeout gives up first)
#     "delay"         hold "delay_ms", then forward the request normally (a slow success)
#     "truncate"      forward, then answer the target's status with a Content-Length "extra"
#                     bytes (default 64) larger than the part sent (3/4 of the body), and close
#     "oversize"      200 with the target's content type and "size" bytes (default 1 MiB) of a
#                     JSON string, chunked (no length announced)
#     "content_type"  forward, then answer the target's body with Content-Type
#                     "content_type" (default text/plain: ferry lets
#                     moto's text/html through on plain-http loopback endpoints)
#     "redirect"      "status" (default 307) with Location: "location" (another host)
#   Several plans may be queued; the first matching one with a count left applies.
import argparse
import http.client
import http.server
import json
import sys
import threading
import time
import urllib.parse

LOCK = threading.Lock()
PLANS = []
STATS = {}
TARGET = None


def reset():
    with LOCK:
        PLANS.clear()
        STATS.clear()
        STATS.update({"requests": 0, "forwarded": 0, "faults": 0, "actions": {}, "faulted": {}})


def action_of(headers, body):
    target = headers.get("X-Amz-Target")
    if target:
        return target
    ctype = headers.get("Content-Type", "")
    if ctype.startswith("application/x-www-form-urlencoded"):
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        return (form.get("Action") or [""])[0]
    return ""


def take_plan(action):
    """The first plan for action with a count left (counted down), or None."""
    with LOCK:
        STATS["requests"] += 1
        STATS["actions"][action] = STATS["actions"].get(action, 0) + 1
        for plan in PLANS:
            if plan.get("count", 0) > 0 and plan.get("action") in (None, action):
                plan["count"] -= 1
                STATS["faults"] += 1
                STATS["faulted"][action] = STATS["faulted"].get(action, 0) + 1
                return dict(plan)
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _read_body(self):
        n = int(self.headers.get("Content-Length") or "0")
        if n < 0 or n > 4 << 20:
            raise ValueError("body length")
        return self.rfile.read(n) if n else b""

    def _answer(self, status, body, headers=(), ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _control(self, body):
        if self.command == "GET" and self.path == "/_proxy/stats":
            with LOCK:
                doc = json.dumps(STATS).encode()
            return self._answer(200, doc)
        if self.command == "POST" and self.path == "/_proxy/reset":
            reset()
            return self._answer(200, b"{}")
        if self.command == "POST" and self.path == "/_proxy/fault":
            plan = json.loads(body)
            with LOCK:
                PLANS.append(plan)
            return self._answer(200, json.dumps(plan).encode())
        return self._answer(404, b'{"error": "no such control path"}')

    def _forward(self, body):
        u = urllib.parse.urlsplit(TARGET)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("connection", "content-length", "transfer-encoding")}
            conn.request(self.command, self.path, body=body or None, headers=headers)
            r = conn.getresponse()
            data = r.read()
            with LOCK:
                STATS["forwarded"] += 1
            return r.status, data, r.getheader("Content-Type") or "application/octet-stream"
        finally:
            conn.close()

    def _error(self, plan, form):
        status = plan.get("status", 503)
        etype = plan.get("type") or ("ThrottlingException" if status == 429 else
                                     "ServiceUnavailable")
        text = plan.get("body", "injected failure")
        extra = []
        if "retry_after" in plan:
            extra.append(("Retry-After", str(plan["retry_after"])))
        if form:
            xml = ("<ErrorResponse><Error><Type>Sender</Type><Code>%s</Code><Message>%s"
                   "</Message></Error><RequestId>x</RequestId></ErrorResponse>" % (etype, text))
            return self._answer(status, xml.encode(), extra, "text/xml")
        doc = json.dumps({"__type": etype, "message": text}).encode()
        return self._answer(status, doc, extra, "application/x-amz-json-1.1")

    def _handle(self):
        try:
            body = self._read_body()
        except ValueError:
            return self._answer(400, b'{"error": "bad length"}')
        if self.path.startswith("/_proxy/"):
            return self._control(body)
        action = action_of(self.headers, body)
        form = not self.headers.get("X-Amz-Target")
        plan = take_plan(action)
        kind = plan.get("kind", "status") if plan else None
        if kind in ("slow", "delay"):
            time.sleep(plan.get("delay_ms", 1000) / 1000.0)
        if kind in ("status", "slow"):
            return self._error(plan, form)
        if kind == "redirect":
            return self._answer(plan.get("status", 307), b"",
                                [("Location", plan.get("location", "http://127.0.0.1:9/"))])
        if kind == "oversize":
            self.send_response(200)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            size = plan.get("size", 1 << 20)
            parts = [b'{"SecretString": "'] + [b"A" * 16384] * (size // 16384 + 1) + [b'"}']
            try:
                for part in parts:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
            self.close_connection = True
            return None
        status, data, ctype = self._forward(body)
        if kind == "truncate":
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data) + plan.get("extra", 64)))
            self.end_headers()
            try:
                self.wfile.write(data[:len(data) * 3 // 4])
                self.wfile.flush()
            except OSError:
                pass
            self.close_connection = True
            return None
        if kind == "content_type":
            ctype = plan.get("content_type", "text/plain")
        return self._answer(status, data, (), ctype)

    def do_GET(self):  # noqa: N802
        self._handle()

    def do_POST(self):  # noqa: N802
        self._handle()


def main():
    global TARGET
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    TARGET = a.target.rstrip("/")
    reset()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True
    sys.stdout.write("READY http://127.0.0.1:%d\n" % srv.server_address[1])
    sys.stdout.flush()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
