#!/usr/bin/env python3
# TAP: ferryd's GET /metrics (Prometheus text format 0.0.4) end to end.
#   ferryd trusts the loopback IdP stand-in (tests/peers/idp_standin.py, plain HTTP, discovery,
#   refresh_cooldown 0) whose JWKS is a file the test rewrites. The test scrapes /metrics,
#   makes successful and refused exchanges, 404s, a 405, a rotation (unknown kid -> refresh)
#   and a failed refresh (/jwks answering 500), scrapes again and checks, with a strict parser
#   of the exposition format written here: Content-Type; HELP and TYPE before every family's
#   samples; exact deltas of ferryd_http_requests_total by endpoint and status and of
#   ferryd_exchange_decisions_total by outcome; histogram invariants (le ascending, buckets
#   cumulative, +Inf == _count, _count == the request counter's total for the endpoint); the
#   JWKS fetch and failure counters (total and per issuer) moved by exactly the refreshes;
#   gauges (policies, audit seq, cached keys, replay capacity, in flight); no subject, token or
#   request path text in the output; HEAD; 405 with Allow for POST.
# Skips (with the reason) when the IdP stand-in is missing.
import math
import os
import re
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402
from ferrydtest import (FERRYD_BIN, FORM, GRANT, form, open_log, request,  # noqa: E402
                        wait_ready)

AUD = "ferry-metrics-test"
SUBJECT = "svc-metrics-7c1e9a"
TARGET = "https://api.target.test"
ID_TYPE = "urn:ietf:params:oauth:token-type:id_token"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# ---- a strict parser of the text exposition format 0.0.4 ---------------------------------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
SAMPLE = re.compile(r"^(" + NAME + r")(\{(.*)\})? (\S+)$")
LABEL_PAIR = re.compile(r'(' + LABEL + r')="((?:[^"\\\n]|\\\\|\\"|\\n)*)"(,|$)')


def unescape(v):
    out, i = [], 0
    while i < len(v):
        if v[i] == "\\":
            out.append({"\\": "\\", '"': '"', "n": "\n"}[v[i + 1]])
            i += 2
        else:
            out.append(v[i])
            i += 1
    return "".join(out)


def parse_value(text):
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?", text):
        raise ValueError(f"bad number {text!r}")
    return float(text)


class Exposition:
    """families: name -> {"type", "help", "samples": [(sample_name, labels dict, value)]}."""

    def __init__(self, text):
        self.families = {}
        if not text.endswith("\n"):
            raise ValueError("text does not end with a newline")
        current = None
        seen_samples = set()
        for n, line in enumerate(text.split("\n")[:-1], 1):
            if line.startswith("# HELP "):
                name, _, helptext = line[7:].partition(" ")
                if not re.fullmatch(NAME, name) or name in self.families:
                    raise ValueError(f"line {n}: bad or repeated HELP {name!r}")
                if not re.fullmatch(r"(?:[^\\\n]|\\\\|\\n)*", helptext):
                    raise ValueError(f"line {n}: bad escape in HELP")
                self.families[name] = {"help": helptext, "type": None, "samples": []}
                current = name
            elif line.startswith("# TYPE "):
                name, _, typ = line[7:].partition(" ")
                if name != current or self.families[name]["type"] is not None:
                    raise ValueError(f"line {n}: TYPE {name!r} not right after its HELP")
                if typ not in ("counter", "gauge", "histogram", "summary", "untyped"):
                    raise ValueError(f"line {n}: unknown type {typ!r}")
                self.families[name]["type"] = typ
            elif line.startswith("#") or not line:
                raise ValueError(f"line {n}: unexpected line {line!r}")
            else:
                m = SAMPLE.match(line)
                if not m or current is None:
                    raise ValueError(f"line {n}: not a sample: {line!r}")
                sname, _, labeltext, value = m.groups()
                fam = self.families[current]
                suffixes = ("_bucket", "_sum", "_count") if fam["type"] == "histogram" else ("",)
                if not any(sname == current + s for s in suffixes):
                    raise ValueError(f"line {n}: sample {sname} outside its family {current}")
                labels = {}
                rest = labeltext or ""
                while rest:
                    lm = LABEL_PAIR.match(rest)
                    if not lm or lm.group(1) in labels:
                        raise ValueError(f"line {n}: bad labels {labeltext!r}")
                    labels[lm.group(1)] = unescape(lm.group(2))
                    rest = rest[lm.end():]
                key = (sname, tuple(sorted(labels.items())))
                if key in seen_samples:
                    raise ValueError(f"line {n}: sample repeated: {line!r}")
                seen_samples.add(key)
                fam["samples"].append((sname, labels, parse_value(value)))
        for name, fam in self.families.items():
            if fam["type"] is None:
                raise ValueError(f"family {name} has no TYPE")

    def value(self, sname, **labels):
        fam = self.families.get(re.sub(r"_(bucket|sum|count)$", "", sname)) \
            or self.families.get(sname)
        for s, l, v in (fam or {"samples": []})["samples"]:
            if s == sname and l == labels:
                return v
        return None

    def series(self, family):
        return [(s, l, v) for s, l, v in self.families.get(family, {"samples": []})["samples"]]


def histogram_problems(expo, family):
    """Every series of a histogram: le ascending, buckets cumulative, +Inf == _count."""
    problems = []
    groups = {}
    for s, labels, v in expo.series(family):
        key = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
        groups.setdefault(key, {"buckets": [], "sum": None, "count": None})
        if s.endswith("_bucket"):
            groups[key]["buckets"].append((parse_value(labels["le"]), v))
        elif s.endswith("_sum"):
            groups[key]["sum"] = v
        else:
            groups[key]["count"] = v
    for key, g in groups.items():
        les = [le for le, _ in g["buckets"]]
        counts = [c for _, c in g["buckets"]]
        if les != sorted(les) or len(set(les)) != len(les) or not les or les[-1] != math.inf:
            problems.append((key, "le not ascending or no +Inf", les))
        if counts != sorted(counts):
            problems.append((key, "buckets not cumulative", counts))
        if g["count"] is None or not counts or counts[-1] != g["count"]:
            problems.append((key, "+Inf != _count", counts[-1:], g["count"]))
        if g["sum"] is None or g["sum"] < 0:
            problems.append((key, "no or negative _sum", g["sum"]))
    return problems, groups


# ---- HTTP ----------------------------------------------------------------------------------------

def exchange(port, token, scope="read", audience=TARGET, grant=GRANT):
    pairs = [("grant_type", grant), ("subject_token_type", ID_TYPE), ("subject_token", token),
             ("audience", audience), ("scope", scope)]
    return request(port, "POST", "/v1/token", body=form(pairs).encode(),
                   headers={"Content-Type": FORM})


def scrape(port):
    r = request(port, "GET", "/metrics")
    return r, Exposition(r.body.decode("utf-8")) if r.status == 200 else None


def body(tap):
    # ---- the parser itself refuses what it must (so its passes mean something) -----------------
    bad_texts = [
        "x 1\n",                                                   # sample before HELP/TYPE
        "# HELP a h\n# TYPE a counter\na{b=\"1\"} 1\na{b=\"1\"} 2\n",  # repeated sample
        "# HELP a h\n# TYPE a counter\na{b=\"x\\q\"} 1\n",         # bad escape
        "# HELP a h\n# TYPE a gauge\nb 1\n",                       # sample of another family
        "# HELP a h\n# TYPE a counter\na 1",                       # no final newline
        "# HELP a h\n# TYPE a counter\na one\n",                   # not a number
    ]
    refused = 0
    for t in bad_texts:
        try:
            Exposition(t)
        except ValueError:
            refused += 1
    good = Exposition('# HELP a h \\\\ \\n\n# TYPE a counter\na{b="q\\"\\\\\\n"} 3\n')
    tap.ok(refused == len(bad_texts) and good.value("a", b='q"\\\n') == 3,
           "the test's exposition parser refuses malformed text and unescapes label values",
           refused)

    if not ft.standin_available():
        tap.skip("ferryd /metrics", "tests/peers/idp_standin.py not found")
        return

    with ft.tempdir() as d:
        k1, k2, k3 = ft.Key("RSA", "k1"), ft.Key("RSA", "k2"), ft.Key("RSA", "k3")
        jwks_path = ft.write_json(os.path.join(d, "jwks.json"), ft.jwks(k1, alg="RS256"))
        with ft.Standin(None, jwks_path) as idp:
            run(tap, d, idp, jwks_path, k1, k2, k3)


def run(tap, d, idp, jwks_path, k1, k2, k3):
    port = ft.free_port()
    pol = os.path.join(d, "policies")
    os.mkdir(pol)
    ft.write_json(os.path.join(pol, "p.json"), {"version": 1, "policies": [{
        "id": "metrics-svc",
        "match": {"issuer": idp.base, "subject": SUBJECT, "audience": [AUD]},
        "grant": {"scopes": ["read"], "audiences": [TARGET], "max_ttl": 600}}]})
    conf = {
        "listen": [f"127.0.0.1:{port}"],
        "state_dir": os.path.join(d, "state"),
        "issuer": f"http://127.0.0.1:{port}",
        "policies": pol,
        "audit_log": {"path": os.path.join(d, "audit.log")},
        "issuers": [{"issuer": idp.base, "audiences": [AUD], "discovery": True,
                     "algorithms": ["RS256"], "allow_http_loopback": True,
                     "jwks_cache": {"refresh_cooldown": 0}}],
        # 15 exchanges per identity, practically no refill: the last phase runs into it
        "rate_limits": {"per_identity": {"rate": 0.01, "burst": 15}},
    }
    cpath = ft.write_json(os.path.join(d, "ferryd.json"), conf)
    errlog = open_log(d, "ferryd")
    proc = subprocess.Popen([FERRYD_BIN, "-c", cpath], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=errlog, env=ft.clean_env())
    try:
        if not tap.ok(wait_ready(port, proc), "ferryd starts and is ready", ""):
            return
        scenario(tap, port, idp, jwks_path, k1, k2, k3)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        errlog.seek(0)
        log = errlog.read()
        errlog.close()
    tap.ok(proc.returncode == 0, "ferryd stops cleanly (exit 0)", log[-2000:])


def scenario(tap, port, idp, jwks_path, k1, k2, k3):
    r, before = scrape(port)
    tap.ok(r.status == 200 and r.headers.get("content-type") == CONTENT_TYPE,
           "GET /metrics: 200, Content-Type text/plain; version=0.0.4; charset=utf-8",
           (r.status, r.headers))
    expected_families = [
        ("ferryd_http_requests_total", "counter"),
        ("ferryd_http_request_duration_seconds", "histogram"),
        ("ferryd_http_requests_in_flight", "gauge"),
        ("ferryd_exchange_decisions_total", "counter"),
        ("ferryd_oidc_jwks_fetches_total", "counter"),
        ("ferryd_oidc_jwks_fetch_failures_total", "counter"),
        ("ferryd_oidc_issuer_jwks_fetches_total", "counter"),
        ("ferryd_oidc_issuer_jwks_fetch_failures_total", "counter"),
        ("ferryd_oidc_cached_keys", "gauge"),
        ("ferryd_replay_cache_entries", "gauge"),
        ("ferryd_replay_cache_capacity", "gauge"),
        ("ferryd_policies_loaded", "gauge"),
        ("ferryd_audit_log_last_seq", "gauge"),
        ("ferryd_signing_key_age_seconds", "gauge"),
        ("ferryd_start_time_seconds", "gauge"),
        ("ferryd_build_info", "gauge"),
    ]
    missing = [(n, t) for n, t in expected_families
               if (before.families.get(n) or {}).get("type") != t]
    tap.ok(not missing, "every expected family is declared with its type", missing)
    outcomes = {l["outcome"]: v for _, l, v in before.series("ferryd_exchange_decisions_total")}
    tap.ok(set(outcomes) >= {"ok", "invalid_request", "invalid_scope", "invalid_target",
                             "unsupported_grant_type", "server_error", "rate_limited"}
           and all(v == 0 for v in outcomes.values()),
           "decision outcomes are declared up front, all 0 before any exchange", outcomes)
    iss_fetches = before.value("ferryd_oidc_issuer_jwks_fetches_total", issuer=idp.base)
    tap.ok(iss_fetches is not None and iss_fetches >= 1
           and before.value("ferryd_oidc_jwks_fetches_total") >= iss_fetches,
           "the start-up prefetch is counted: a JWKS fetch for the issuer and in the total",
           iss_fetches)
    start = before.value("ferryd_start_time_seconds")
    tap.ok(start is not None and abs(start - time.time()) < 120
           and before.value("ferryd_build_info", version=before.series("ferryd_build_info")[0][1]
                            .get("version", "")) == 1
           and before.value("ferryd_policies_loaded") == 1,
           "start time, build_info 1 with a version label, 1 policy loaded",
           (start, before.series("ferryd_build_info")))

    # ---- traffic ----------------------------------------------------------------------------
    now = int(time.time())

    def token(key, sub=SUBJECT):
        return ft.make_token(key, "RS256", ft.claims(idp.base, AUD, sub=sub, now=now), typ="JWT")

    # a new token (new jti) for every exchange, in case one-time subjects are configured
    good = token(k1)
    results = []
    for _ in range(3):
        results.append(("ok", exchange(port, token(k1)).status))
    results.append(("invalid_scope", exchange(port, token(k1), scope="admin").status))
    results.append(("invalid_scope", exchange(port, token(k1), scope="write").status))
    results.append(("invalid_target",
                    exchange(port, token(k1), audience="https://other.test").status))
    results.append(("unsupported_grant_type",
                    exchange(port, token(k1), grant="client_credentials").status))
    h, p, _s = good.split(".")
    forged = h + "." + p + "." + ft.b64u(b"\x01" * 256)
    results.append(("invalid_request", exchange(port, forged).status))
    want_status = {"ok": 200, "invalid_scope": 400, "invalid_target": 400,
                   "unsupported_grant_type": 400, "invalid_request": 400}
    tap.ok(all(st == want_status[o] for o, st in results),
           "3 successful and 5 refused exchanges answered as expected", results)
    # 404s, one with a path that must never become a label, and a 405 on /metrics
    leak_path = "/secret-path-" + SUBJECT
    for path in ("/nope", "/v2/token", leak_path):
        request(port, "GET", path)
    r405 = request(port, "POST", "/metrics", body=b"x", headers={"Content-Type": FORM})
    tap.ok(r405.status == 405 and r405.headers.get("allow") == "GET, HEAD",
           "POST /metrics: 405 with Allow: GET, HEAD", r405)
    rh = request(port, "HEAD", "/metrics")
    tap.ok(rh.status == 200 and rh.body == b"" and rh.headers.get("content-type") == CONTENT_TYPE,
           "HEAD /metrics: 200 without a body, same Content-Type", rh)

    # rotation: the IdP now signs with k2; an unknown kid makes ferryd refresh (cooldown 0)
    ft.write_json(jwks_path, ft.jwks(k1, k2, alg="RS256"))
    r_rot = exchange(port, token(k2))
    # then the JWKS endpoint fails; an unknown kid (k3) makes a refresh that fails
    idp.control({"faults": {"/jwks": "status:500"}})
    r_fail = exchange(port, token(k3))
    idp.control({"faults": {"/jwks": None}})
    tap.ok(r_rot.status == 200 and r_fail.status == 400,
           "after rotation the new kid is fetched and accepted; with /jwks failing an unknown "
           "kid is refused", (r_rot, r_fail))
    n_ok, n_invalid_request = 4, 2

    # The completion callback runs just after the client has its answer: poll until the last
    # request is counted, then check exact values.
    n_token = len(results) + 2
    end = time.monotonic() + 10
    while True:
        r, after = scrape(port)

        def delta(fam, **labels):
            return (after.value(fam, **labels) or 0) - (before.value(fam, **labels) or 0)
        total_token = sum(delta("ferryd_http_requests_total", endpoint="/v1/token", status=s)
                          for s in ("200", "400"))
        total_dec = sum(v for _, _, v in after.series("ferryd_exchange_decisions_total")) - sum(
            v for _, _, v in before.series("ferryd_exchange_decisions_total"))
        if (total_token >= n_token and total_dec >= n_token) or time.monotonic() > end:
            break
        time.sleep(0.05)

    got = {
        "token 200": delta("ferryd_http_requests_total", endpoint="/v1/token", status="200"),
        "token 400": delta("ferryd_http_requests_total", endpoint="/v1/token", status="400"),
        "other 404": delta("ferryd_http_requests_total", endpoint="other", status="404"),
        "metrics 405": delta("ferryd_http_requests_total", endpoint="/metrics", status="405"),
        "healthz": delta("ferryd_http_requests_total", endpoint="/healthz", status="200"),
    }
    want = {"token 200": n_ok, "token 400": n_token - n_ok, "other 404": 3, "metrics 405": 1,
            "healthz": 0}
    tap.ok(got == want, "ferryd_http_requests_total: exact deltas by endpoint and status",
           {"got": got, "want": want})
    dec = {o: delta("ferryd_exchange_decisions_total", outcome=o)
           for o in ("ok", "invalid_scope", "invalid_target", "unsupported_grant_type",
                     "invalid_request", "server_error", "rate_limited", "other")}
    want_dec = {"ok": n_ok, "invalid_scope": 2, "invalid_target": 1, "unsupported_grant_type": 1,
                "invalid_request": n_invalid_request, "server_error": 0, "rate_limited": 0,
                "other": 0}
    tap.ok(dec == want_dec, "ferryd_exchange_decisions_total: exact deltas by outcome",
           {"got": dec, "want": want_dec})

    problems, groups = histogram_problems(after, "ferryd_http_request_duration_seconds")
    tap.ok(not problems and len(groups) >= 7,
           "duration histogram: le ascending to +Inf, buckets cumulative, +Inf == _count, "
           "for every endpoint", problems)
    tok_key = (("endpoint", "/v1/token"),)
    tok_count = groups.get(tok_key, {}).get("count")
    tok_total = sum(v for _, l, v in after.series("ferryd_http_requests_total")
                    if l["endpoint"] == "/v1/token")
    tap.ok(tok_count == tok_total and tok_count >= n_token
           and 0 < groups[tok_key]["sum"] < 60 * tok_count,
           "the /v1/token histogram counts every token request (its _count equals the request "
           "counter's total) and its _sum is plausible", (tok_count, tok_total))

    jw = delta("ferryd_oidc_issuer_jwks_fetches_total", issuer=idp.base)
    jf = delta("ferryd_oidc_issuer_jwks_fetch_failures_total", issuer=idp.base)
    tap.ok(jw == 2 and jf == 1 and delta("ferryd_oidc_jwks_fetches_total") == 2
           and delta("ferryd_oidc_jwks_fetch_failures_total") == 1,
           "JWKS fetches moved by 2 (rotation, failed refresh), failures by 1, per issuer and "
           "in total", (jw, jf))
    tap.ok(after.value("ferryd_oidc_issuer_cached_keys", issuer=idp.base) == 2
           and after.value("ferryd_oidc_cached_keys") == 2
           and after.value("ferryd_oidc_issuer_keyset_state", issuer=idp.base,
                           state="fresh") == 1,
           "cached keys 2 (k1 and k2, kept after the failed refresh), key set fresh",
           after.series("ferryd_oidc_issuer_keyset_state"))
    seq_before = before.value("ferryd_audit_log_last_seq")
    seq_after = after.value("ferryd_audit_log_last_seq")
    tap.ok(seq_after - seq_before == n_token,
           "ferryd_audit_log_last_seq moved by one record per exchange", (seq_before, seq_after))
    tap.ok(after.value("ferryd_replay_cache_capacity") > 0
           and after.value("ferryd_replay_cache_entries") >= 0
           and 1 <= after.value("ferryd_http_requests_in_flight") <= 3
           and 0 <= after.value("ferryd_signing_key_age_seconds") < 600,
           "replay cache capacity, in-flight (the scrape itself, perhaps the one before it) and "
           "signing key age",
           (after.value("ferryd_replay_cache_capacity"),
            after.value("ferryd_http_requests_in_flight"),
            after.value("ferryd_signing_key_age_seconds")))
    text = r.body.decode()
    secrets = [SUBJECT, good, forged, good.split(".")[1], "secret-path", "/nope", "/v2/token"]
    leaked = [s[:40] for s in secrets if s in text]
    tap.ok(not leaked, "no subject, token or requested path text appears in /metrics", leaked)
    endpoints = {l["endpoint"] for _, l, _ in after.series("ferryd_http_requests_total")}
    tap.ok(endpoints <= {"/v1/token", "/.well-known/openid-configuration",
                         "/.well-known/jwks.json", "/healthz", "/readyz", "/metrics", "other"},
           "endpoint labels come only from the fixed list", endpoints)

    # ---- the per-identity limit: 7 of the 15 tokens are spent (the 6 verified exchanges above
    # and the rotation); of 10 more, 8 pass and 2 are refused with 429 ------------------------
    statuses = [exchange(port, token(k1)).status for _ in range(10)]
    tap.ok(statuses == [200] * 8 + [429] * 2, "per-identity limit: 8 more pass, then 429",
           statuses)
    end = time.monotonic() + 10
    while True:
        _r, last = scrape(port)
        n429 = ((last.value("ferryd_http_requests_total", endpoint="/v1/token", status="429") or 0)
                - (after.value("ferryd_http_requests_total", endpoint="/v1/token",
                               status="429") or 0))
        n200 = (last.value("ferryd_http_requests_total", endpoint="/v1/token", status="200")
                - after.value("ferryd_http_requests_total", endpoint="/v1/token", status="200"))
        ndec = sum(v for _, _, v in last.series("ferryd_exchange_decisions_total")) - sum(
            v for _, _, v in after.series("ferryd_exchange_decisions_total"))
        if (n429 + n200 >= 10 and ndec >= 10) or time.monotonic() > end:
            break
        time.sleep(0.05)

    def d2(fam, **labels):
        return (last.value(fam, **labels) or 0) - (after.value(fam, **labels) or 0)
    got = (n200, n429, d2("ferryd_exchange_decisions_total", outcome="ok"),
           d2("ferryd_exchange_decisions_total", outcome="rate_limited"),
           d2("ferryd_ratelimit_refused_total", limiter="identity"),
           last.value("ferryd_ratelimit_tracked_keys", limiter="identity"),
           last.value("ferryd_ratelimit_max_keys", limiter="identity"))
    tap.ok(got[:6] == (8, 2, 8, 2, 2, 1) and got[6] and got[6] > 0,
           "rate limiting is counted: 200 x8, 429 x2, decisions ok +8 and rate_limited +2, "
           "ferryd_ratelimit_refused_total{limiter=identity} +2, one identity tracked", got)


if __name__ == "__main__":
    ft.main("test_ferryd_metrics", body)
