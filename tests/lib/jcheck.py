#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""jcheck.py JSON EXPR...: every Python expression over d (the parsed JSON)
must be True; prints each one that is not and exits 1.

Helpers for the expressions: num(x) (int or float, not bool), isint, isbool,
isstr, near(x, y, tol=1e-9), err_ok(d, code) (exactly {"error", "message"},
"error" == code, a non-empty message), keys(d) (the set of d's keys),
canon(rows) (rows in a comparable order), agent_ok(a) (the CLI contract's
agent fields with their types), and json (the module).

Shared by the shell suites; promcheck.py reuses check_all().
"""
import json
import sys


def num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def isint(x):
    return isinstance(x, int) and not isinstance(x, bool)


def isbool(x):
    return isinstance(x, bool)


def isstr(x):
    return isinstance(x, str)


def near(x, y, tol=1e-9):
    return num(x) and abs(x - y) <= tol


def keys(o):
    return set(o.keys())


def canon(rows):
    return sorted(json.dumps(r, sort_keys=True) for r in rows)


def agent_ok(a):
    # The contract's agent fields (DESIGN.md section 5), with their types.
    want = {"name": isstr, "slot": isint, "rate": num, "burst": isint,
            "unit": lambda u: u in ("pps", "bps"), "tokens": num, "pinned": isbool,
            "passed_packets": isint, "passed_bytes": isint,
            "dropped_packets": isint, "dropped_bytes": isint}
    bad = [k for k, ok in want.items() if k not in a or not ok(a[k])]
    if bad:
        raise AssertionError("bad or missing agent fields: %s" % bad)
    return True


def check_all(exprs, env):
    """Evaluates each expression in env; prints the failing ones; 0 or 1."""
    bad = 0
    for expr in exprs:
        try:
            ok = eval(expr, env) is True
        except Exception as e:  # noqa: BLE001
            ok = False
            expr += "  (raised %s: %s)" % (type(e).__name__, e)
        if not ok:
            print("failed: " + expr)
            bad = 1
    return bad


def err_ok(o, code):
    return (isinstance(o, dict) and set(o) == {"error", "message"} and o["error"] == code
            and isstr(o["message"]) and o["message"] != "")


def main():
    try:
        d = json.loads(sys.argv[1])
    except Exception as e:  # noqa: BLE001 - report any parse failure
        print("not JSON (%s): %r" % (e, sys.argv[1][:300]))
        return 1
    return check_all(sys.argv[2:], dict(globals(), d=d))


if __name__ == "__main__":
    sys.exit(main())
