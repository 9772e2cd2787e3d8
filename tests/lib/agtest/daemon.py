# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""agentgated as the tests and benchmarks start it: the one place its
command line is made (daemon_argv), and Daemon, one instance with its own pin
root, state directory, loopback port and log.

    d = env.daemon("api", "--rate", "50").start()    # waits for /readyz 200
    d.api.post("/v1/ratings", {"agent": "a", "score": 5})
    d.cli("agent", "show", "a")                      # the CLI on its pins
    d.restart()                                      # same pins, state, port
    d.stop()                                         # SIGTERM: exit 0, no sanitizer report

Every run appends to the instance's log; log() is the current run's part.
The sanitized build (agentgated-san) is the default; bin="plain" runs the
optimized one, valgrind=LOGFILE runs it under valgrind, netns=NAME inside a
network namespace (its API then reached through that namespace).
"""
import os
import re
import signal
import subprocess
import time

from .env import ROOT, SANITIZER_RE
from .api import Client
from .util import Fail, check, diag, wait_for

VALGRIND = ["valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite",
            "--error-exitcode=99",
            "--suppressions=" + os.path.join(ROOT, "tests", "daemon", "valgrind.supp")]


def daemon_argv(binary, pin, state, listen, config="/dev/null", nats=(), node=None,
                extra=()):
    """agentgated's command line: its pin root, state directory and listener,
    a config file (/dev/null: the embedded defaults, whatever /etc holds),
    the NATS servers and node name in fleet mode, then extra flags."""
    argv = [binary]
    if config is not None:
        argv += ["--config", config]
    argv += ["--pin-path", pin, "--state-dir", state, "--listen", listen]
    for url in nats:
        argv += ["--nats", url]
    if nats and node:
        argv += ["--node", node]
    return argv + list(extra)


class Daemon:
    def __init__(self, env, name, args, bin="san", config="/dev/null", nats=(), node=None,
                 netns=None, valgrind=None, stdin=None, listen=None, pin=None, state=None,
                 tls_ca=None):
        self.env, self.name = env, name
        self.args = list(args)
        self.binary = {"san": env.san, "plain": env.plain}.get(bin, bin)
        self.config, self.nats, self.node = config, list(nats), node or name
        self.netns, self.valgrind, self.stdin = netns, valgrind, stdin
        self.pin = pin or env.pin_root("d-" + name)
        self.state = state or env.path(env.unique("state-" + name))
        self.log_path = env.path(env.unique("daemon-" + name) + ".log")
        self.port = env.port()
        self.listen = listen or "127.0.0.1:%d" % self.port
        self.scheme = "https" if tls_ca else "http"
        self.tls_ca = tls_ca
        self.proc = None
        self.offset = 0
        os.makedirs(self.state, exist_ok=True)
        open(self.log_path, "a").close()

    # ---- its command line and process -------------------------------------

    def argv(self):
        a = daemon_argv(self.binary, self.pin, self.state, self.listen, self.config,
                        self.nats, self.node, self.args)
        prefix = []
        if self.netns:
            prefix += ["ip", "netns", "exec", self.netns]
        if self.valgrind:
            prefix += VALGRIND + ["--log-file=" + self.valgrind]
        return prefix + a

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % (self.scheme, self.port)

    @property
    def api(self):
        """An API client for this daemon (no token)."""
        return Client(self.url, netns=self.netns, cafile=self.tls_ca)

    def client(self, token=None):
        return Client(self.url, token=token, netns=self.netns, cafile=self.tls_ca)

    def start(self, wait=True, timeout=10, args=None):
        """Starts it (again: on the same pins, state and port); args replace
        the extra flags. Waits for GET /readyz 200 unless wait is False."""
        if args is not None:
            self.args = list(args)
        self.offset = os.path.getsize(self.log_path)
        with open(self.log_path, "a") as f:
            f.write("=== %s %s\n" % (time.strftime("%H:%M:%S"), " ".join(self.argv())))
        stdin = self.stdin
        if isinstance(stdin, str):
            stdin = open(stdin, "rb")
        try:
            self.proc = self.env.popen(self.argv(), self.log_path, stdin=stdin)
        finally:
            if isinstance(self.stdin, str):
                stdin.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self):
        check(self.alive(), "daemon %s is not running (exit %s); its log:" % (
            self.name, self.proc and self.proc.returncode), self.log_tail())

    def ready(self, want=None):
        if not self.alive():
            raise Fail("daemon %s exited with code %s before it was ready; its log:\n%s" % (
                self.name, self.proc and self.proc.returncode, self.log_tail()))
        try:
            r = self.api.get("/readyz", timeout=2)
        except OSError:
            return False
        if r.status != 200:
            return False
        return want is None or r.json().get("status") in want

    def wait_ready(self, timeout=10, want=None):
        try:
            wait_for(lambda: self.ready(want), timeout, what="daemon %s /readyz" % self.name)
        except Fail as e:
            raise Fail("%s; its log:\n%s" % (e, self.log_tail()))
        return self

    def signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def wait_exit(self, timeout=20):
        """The exit code; killed (and Fail) after timeout s."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Fail("daemon %s still running %g s after the signal: killed; its log:\n%s" % (
                self.name, timeout, self.log_tail()))

    def stop(self, timeout=20, rc=0):
        """SIGTERM; the exit code must be rc and the log free of sanitizer reports."""
        if self.proc is None:
            raise Fail("daemon %s was never started" % self.name)
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        got = self.wait_exit(timeout)
        check(got == rc, "daemon %s exited with code %s after SIGTERM (expected %d); its log:" % (
            self.name, got, rc), self.log_tail(3000))
        self.san_clean()
        return self

    def kill9(self):
        if self.alive():
            self.proc.kill()
        got = self.proc.wait(10)
        check(got == -9, "kill -9: exit %s, expected -9" % got)
        return self

    def restart(self, args=None, timeout=10):
        self.stop()
        return self.start(timeout=timeout, args=args)

    # ---- its log ------------------------------------------------------------

    def log(self):
        """The current run's log."""
        with open(self.log_path, "rb") as f:
            f.seek(self.offset)
            return f.read().decode(errors="replace")

    def log_all(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def log_tail(self, n=2000):
        return self.log()[-n:]

    def wait_log(self, text, timeout=10, count=1):
        """Waits until text appears count times in the current run's log."""
        return wait_for(lambda: self.log().count(text) >= count, timeout,
                        what="%r in the log of daemon %s" % (text, self.name))

    def san_clean(self):
        m = re.search(SANITIZER_RE, self.log())
        if m:
            rep = self.log()[max(0, m.start() - 200):m.start() + 3000]
            raise Fail("sanitizer report in the log of daemon %s:\n%s" % (self.name, rep))

    # ---- shortcuts ------------------------------------------------------------

    def cli(self, *args, **kw):
        """The CLI in JSON mode on this daemon's pins (cli.Result)."""
        kw.setdefault("netns", self.netns)
        return self.env.cli(self.pin, *args, **kw)

    def metrics(self):
        from .prom import Metrics
        r = self.api.get("/metrics")
        check(r.status == 200, "GET /metrics: %d %s" % (r.status, r.text[:300]))
        return Metrics(r.text)


def run_daemon(env, args, rc, timeout=20, binary=None, stdin=None):
    """Runs agentgated in the foreground with exactly args (no pins or
    listener added) and expects exit code rc; returns its output (stdout and
    stderr). A sanitizer report fails it."""
    argv = [binary or env.san] + list(args)
    try:
        p = subprocess.run(argv, stdin=stdin or subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise Fail("%s: still running after %g s; output:\n%s" % (
            " ".join(argv), timeout, (e.output or b"").decode(errors="replace")))
    out = p.stdout.decode(errors="replace")
    check(p.returncode == rc, "%s: exit %d, expected %d; output:" % (
        " ".join(argv), p.returncode, rc), out)
    check(not re.search(SANITIZER_RE, out), "sanitizer report from %s:" % " ".join(argv), out)
    return out


def has(text, *wanted):
    """Each wanted string is in text (Fail naming the first missing one)."""
    for w in wanted:
        check(w in text, "no %r in:" % w, text[-3000:])
    return True


def diag_log(d):
    diag("log of daemon %s:" % d.name)
    diag(d.log_tail())
