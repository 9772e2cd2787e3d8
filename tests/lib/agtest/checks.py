# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Checks on API answers and JSON, with the failing expression, the request
and the body in the failure.

    expect(r, 200, 'd["applied"] == 1', lambda d: d["agents"][0]["rate"] == 120)
    expect_error(r, 404, "not_found", "ghost")    # exactly {"error", "message"}
    jcheck(obj, 'agent_ok(d)')                   # any JSON value

String expressions are evaluated with d (the parsed JSON) and the helpers
below: num, isint, isbool, isstr, near, keys, canon, err_ok, agent_ok, json.
"""
import json

from .util import Fail


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
    """The contract's agent fields (DESIGN.md section 5) with their types."""
    want = {"name": isstr, "slot": isint, "rate": num, "burst": isint,
            "unit": lambda u: u in ("pps", "bps", "conn"), "tokens": num, "pinned": isbool,
            "passed_packets": isint, "passed_bytes": isint,
            "dropped_packets": isint, "dropped_bytes": isint}
    bad = [k for k, ok in want.items() if k not in a or not ok(a[k])]
    if bad:
        raise AssertionError("bad or missing agent fields: %s" % bad)
    return True


def err_ok(o, code):
    return (isinstance(o, dict) and set(o) == {"error", "message"} and o["error"] == code
            and isstr(o["message"]) and o["message"] != "")


HELPERS = {"num": num, "isint": isint, "isbool": isbool, "isstr": isstr, "near": near,
           "keys": keys, "canon": canon, "agent_ok": agent_ok, "err_ok": err_ok, "json": json}


def failing(d, exprs, env=None):
    """The expressions (str or callable) that do not hold for d, each with why."""
    bad = []
    for e in exprs:
        try:
            if callable(e):
                ok = e(d)
            else:
                # d among the globals: comprehensions in e see it too.
                ok = eval(e, dict(HELPERS, **(env or {}), d=d))  # noqa: S307
            if ok is not True and not (callable(e) and ok):
                bad.append("failed: %s" % _name(e))
        except Exception as x:  # noqa: BLE001 - a raising check is a failing one
            bad.append("failed: %s (raised %s: %s)" % (_name(e), type(x).__name__, x))
    return bad


def _name(e):
    if not callable(e):
        return e
    try:
        import inspect
        return inspect.getsource(e).strip()
    except (OSError, TypeError):
        return repr(e)


def jcheck(d, *exprs, what=""):
    bad = failing(d, exprs)
    if bad:
        raise Fail("\n".join(bad + ["%sJSON: %s" % (what, json.dumps(d)[:1500])]))
    return d


def expect(r, status, *exprs):
    """r (http.Response) has status and every expression holds over its JSON;
    returns the JSON (None for an empty body)."""
    if r.status != status:
        raise Fail("expected status %d\n%s" % (status, r.describe()))
    if not exprs:
        try:
            return r.json() if r.body.strip() else None
        except ValueError:
            return None  # only the status was asked for
    try:
        d = r.json()
    except ValueError as e:
        raise Fail("not JSON (%s)\n%s" % (e, r.describe()))
    bad = failing(d, exprs)
    if bad:
        raise Fail("\n".join(bad + [r.describe()]))
    return d


def expect_error(r, status, code, *words):
    """An error answer: exactly {"error": code, "message": ...}, the message
    naming each word."""
    d = expect(r, status, "err_ok(d, %r)" % code)
    for w in words:
        if w not in d["message"]:
            raise Fail("error message does not mention %r\n%s" % (w, r.describe()))
    return d


def expect_agent(client, name, *exprs):
    """GET /v1/agents/NAME is 200 and every expression holds; the JSON."""
    return expect(client.get("/v1/agents/" + name), 200, *exprs)


def expect_no_agent(client, name):
    """GET /v1/agents/NAME is 404 naming it."""
    return expect_error(client.get("/v1/agents/" + name), 404, "not_found", name)


def wait_agent(client, name, expr, timeout=10):
    """Waits until expr (over the agent's JSON) holds; the JSON."""
    from .util import wait_for

    def ok():
        a = client.agent(name)
        return a if a is not None and not failing(a, [expr]) else None
    return wait_for(ok, timeout, what="agent %s: %s" % (name, expr if isinstance(expr, str)
                                                             else _name(expr)))


def rate_after(r0, alpha, r_min, r_max, scores):
    """The policy's rate after scores, as the contract computes it."""
    r = float(r0)
    for s in scores:
        r = min(r_max, max(r_min, r + alpha * (int(s) - 3)))
    return r
