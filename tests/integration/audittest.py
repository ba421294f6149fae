# The harness the `ferry audit` integration tests share (test_cli_audit*.py): the run's clock,
# running `ferry audit`, and the JSON reports checked against the ferry.audit/v1 schema.
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
