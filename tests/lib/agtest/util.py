# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""What every part of the library raises and prints (a leaf: imports nothing
of the library): Fail, Skip, SkipAll, check, diag, wait_for."""
import sys
import time


class Fail(Exception):
    """A check that did not hold."""


class Skip(Exception):
    """The case cannot run here (the reason is its message)."""


class SkipAll(Exception):
    pass


def check(cond, what, *more):
    """Raise Fail(what) unless cond; more: diagnostics added below it."""
    if not cond:
        raise Fail("\n".join([str(what)] + [str(m) for m in more]))
    return cond


def diag(msg):
    for line in str(msg).splitlines() or [""]:
        print("# " + line)
    sys.stdout.flush()


def skip_all(reason):
    raise SkipAll(reason)


def wait_for(fn, timeout, interval=0.05, what="condition"):
    """Calls fn until it returns a true value and returns that; Fail after
    timeout s (with the last value or error). OSError, ValueError and
    KeyError from fn count as "not yet"."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = fn()
            if v:
                return v
            last = v
        except (OSError, ValueError, KeyError) as e:
            last = e
        if time.monotonic() >= deadline:
            raise Fail("%s: not within %g s (last: %r)" % (what, timeout, last))
        time.sleep(interval)
