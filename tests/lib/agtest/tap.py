# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The one TAP runner of the Python suites: cases, fixtures, selection, order.

A suite is a module of cases:

    from agtest import case, check, fixture, run

    @fixture
    def api(env):                      # made when a selected case first asks for it
        d = env.daemon("api").start()
        yield d                        # shared by every case that names it
        d.stop()                       # checked at the end: a failure is a TAP line

    @case("POST /v1/ratings: 200")
    def t_ratings_single(api):         # parameters name fixtures
        r = api.api.post("/v1/ratings", {"agent": "rs1", "score": 5})
        expect(r, 200, 'd["applied"] == 1')

    if __name__ == "__main__":
        run()

A case passes when it returns, is skipped when it raises Skip, and fails on
any other exception (its message and the line of the suite it came from as
TAP diagnostics). Cases must not depend on one another: fixtures are made
lazily, so a case runs alone (AG_TEST_ONLY=REGEX on the function names; the
others are reported as skipped) and in any order (AG_TEST_SHUFFLE=SEED runs
them in a random order from SEED; "random" picks and prints one).

Fixtures are generator functions (setup, yield the value, teardown) or plain
functions. scope="suite" (the default) makes one for the whole run, torn
down at the end, its teardown reported as "teardown NAME" (a daemon that does
not exit 0 or leaves a sanitizer report fails it); scope="case" makes a
fresh one for each case, its teardown part of that case. A fixture may name
other fixtures; `env` (the Env: build, binaries, scratch, bpffs, cleanup) is
always there.

Output: a TAP stream with the plan at the end ("1..N"), then a diagnostic
summary; exit 0 when nothing failed, 1 otherwise, 77 when the whole suite is
skipped (skip_all).
"""
import inspect
import os
import random
import re
import signal
import sys
import time
import traceback

from .env import Env
from .util import Fail, Skip, SkipAll, diag


_CASES = []      # (name, description, function), in definition order
_FIXTURES = {}   # name -> (function, scope)


def case(description):
    def deco(fn):
        _CASES.append((fn.__name__, description, fn))
        return fn
    return deco


def fixture(fn=None, scope="suite"):
    if scope not in ("suite", "case"):
        raise ValueError("fixture scope is 'suite' or 'case'")

    def deco(f):
        _FIXTURES[f.__name__] = (f, scope)
        return f
    return deco(fn) if fn is not None else deco


class _Made:
    """A fixture's value and how to tear it down."""

    def __init__(self, name, value, gen):
        self.name, self.value, self.gen = name, value, gen

    def teardown(self):
        if self.gen is None:
            return
        try:
            next(self.gen)
        except StopIteration:
            return
        raise Fail("fixture %s yields more than once" % self.name)


class _Runner:
    def __init__(self, env):
        self.env = env
        self.suite_made = {}   # name -> _Made, in the order made
        self.n = 0
        self.failed = 0

    def make(self, name, case_made, stack=()):
        if name == "env":
            return self.env
        if name in stack:
            raise Fail("fixtures form a circle: %s" % " -> ".join(stack + (name,)))
        if name in self.suite_made:
            return self.suite_made[name].value
        if name in case_made:
            return case_made[name].value
        if name not in _FIXTURES:
            raise Fail("no fixture named %s" % name)
        fn, scope = _FIXTURES[name]
        args = [self.make(p, case_made, stack + (name,))
                for p in inspect.signature(fn).parameters]
        if inspect.isgeneratorfunction(fn):
            gen = fn(*args)
            made = _Made(name, next(gen), gen)
        else:
            made = _Made(name, fn(*args), None)
        (self.suite_made if scope == "suite" else case_made)[name] = made
        return made.value

    def report(self, ok, desc, why=None, skip=None):
        self.n += 1
        if skip is not None:
            print("ok %d - %s # SKIP %s" % (self.n, desc, skip))
        elif ok:
            print("ok %d - %s" % (self.n, desc))
        else:
            self.failed += 1
            print("not ok %d - %s" % (self.n, desc))
            if why:
                diag(why)
        sys.stdout.flush()

    def run_case(self, name, desc, fn):
        case_made = {}
        t0 = time.monotonic()
        ok, why, skip = True, None, None
        try:
            args = [self.make(p, case_made) for p in inspect.signature(fn).parameters]
            fn(*args)
        except Skip as e:
            skip = str(e) or "skipped"
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # noqa: BLE001 - every other exception fails the case
            ok, why = False, _explain(name, e)
        for made in reversed(list(case_made.values())):
            try:
                made.teardown()
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:  # noqa: BLE001
                if ok:
                    ok, why = False, _explain(name + " (teardown of %s)" % made.name, e)
        self.env.after_case(name)
        self.report(ok, desc, why, skip if ok else None)
        took = time.monotonic() - t0
        if took >= 10:
            diag("%s took %.0f s" % (name, took))

    def teardown_suite(self):
        for made in reversed(list(self.suite_made.values())):
            try:
                made.teardown()
                self.report(True, "teardown %s" % made.name)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:  # noqa: BLE001
                self.report(False, "teardown %s" % made.name, _explain(made.name, e))
        self.suite_made.clear()


def _explain(name, e):
    """The exception's message and where in the suite it came from."""
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if "/agtest/" not in f.filename] or traceback.extract_tb(e.__traceback__)[-1:]
    where = ""
    if frames:
        f = frames[-1]
        where = " (%s:%d)" % (os.path.basename(f.filename), f.lineno)
    kind = "" if isinstance(e, Fail) else type(e).__name__ + ": "
    return "%s%s: %s%s" % (name, where, kind, e)


def _selected():
    only = os.environ.get("AG_TEST_ONLY", "")
    cases = list(_CASES)
    seed = os.environ.get("AG_TEST_SHUFFLE", "")
    if seed:
        if seed == "random":
            seed = str(random.randrange(1 << 30))
        random.Random(seed).shuffle(cases)
        diag("AG_TEST_SHUFFLE=%s" % seed)
    return [(n, d, f, not only or re.search(only, n) is not None) for n, d, f in cases]


def _on_signal(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


def run(argv=None, needs=(), root=True):
    """Runs the suite's cases and exits. argv[1] is the build directory;
    needs: binaries (relative to it) or commands (on PATH) without which the
    whole suite is skipped; root: skipped unless run as root."""
    argv = sys.argv if argv is None else argv
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    t0 = time.monotonic()
    env = None
    runner = None
    rc = 0
    try:
        if len(argv) < 2:
            print("usage: %s BUILD_DIR" % argv[0], file=sys.stderr)
            sys.exit(2)
        env = Env(argv[1], needs=needs, root=root)
        runner = _Runner(env)
        for name, desc, fn, chosen in _selected():
            if chosen:
                runner.run_case(name, desc, fn)
            else:
                runner.report(True, desc, skip="not in AG_TEST_ONLY")
        runner.teardown_suite()
        print("1..%d" % runner.n)
        diag("%d of %d failed, %.0f s" % (runner.failed, runner.n, time.monotonic() - t0))
        rc = 1 if runner.failed else 0
    except SkipAll as e:
        print("1..0 # SKIP %s" % e)
        rc = 77
    except KeyboardInterrupt as e:
        diag("interrupted (%s)" % (e or "SIGINT"))
        rc = 130
    finally:
        if env is not None:
            env.cleanup()
    sys.stdout.flush()
    sys.exit(rc)
