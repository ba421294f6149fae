# The harness the `ferry audit` integration tests share (test_cli_audit*.py): the run's clock,
# running `ferry audit`, and the JSON reports checked against the ferry.audit/v1 schema.
import copy
import json
import os

import ferrytest as ft

NOW = 1790000000  # 2026-09-21T14:13:20Z, the clock every audit test passes as --now

with open(os.path.join(ft.SRCDIR, "tests", "audit", "ferry-audit-v1.schema.json")) as _f:
    SCHEMA = json.load(_f)
SCHEMA_PROBLEMS = []  # (desc, problem) of every JSON report audit_json saw


def schema_problems(j):
    try:
        import jsonschema
        return [e.message for e in jsonschema.Draft202012Validator(SCHEMA).iter_errors(j)]
    except ImportError:
        # Without python3-jsonschema, the required members of the schema are compared.
        item = SCHEMA["properties"]["findings"]["items"]
        return [f"missing {k}" for k in SCHEMA["required"] if k not in j] + \
            [f"finding misses {k}" for f in j.get("findings", []) for k in item["required"]
             if k not in f]


def audit(*args, stdin=None):
    return ft.ferry("audit", "--now", NOW, *args, stdin=stdin)


def audit_json(tap, desc, *args, stdin=None):
    """A run that must succeed with a JSON report; the report joins the schema check."""
    r = audit("--output-format", "json", "--fail-on", "none", *args, stdin=stdin)
    j = r.json()
    tap.ok(r.rc == 0 and j is not None and r.err == "", f"{desc}: audited (exit 0, JSON)", r)
    if j is not None:
        SCHEMA_PROBLEMS.extend((desc, p) for p in schema_problems(j))
    return j or {"findings": []}


def damage(rnd, doc, vals):
    """Damage doc in place at 1-6 random places: a member or element replaced by one of vals,
    deleted, or repeated. Returns doc."""
    for _ in range(rnd.randint(1, 6)):
        path, cur = [], doc
        while isinstance(cur, (dict, list)) and cur and rnd.random() < 0.85:
            k = rnd.choice(list(cur)) if isinstance(cur, dict) else rnd.randrange(len(cur))
            path.append((cur, k))
            cur = cur[k]
        if not path:
            continue
        parent, k = path[-1]
        x = rnd.random()
        if x < 0.6:
            parent[k] = copy.deepcopy(rnd.choice(vals))
        elif x < 0.8 and isinstance(parent, dict):
            del parent[k]
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[k]))
    return doc


def bad_outcome(r):
    """A run over a damaged input that did neither: report (exit 0/1 with JSON) or refuse
    (exit 2 with nothing on stdout), or that tripped a sanitizer."""
    return r.rc not in (0, 1, 2) or "Sanitizer" in r.err or "runtime error" in r.err or \
        (r.rc == 2 and r.out) or (r.rc != 2 and r.json() is None)
