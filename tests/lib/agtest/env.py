# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Env: what one suite run owns, and its teardown.

The build directory and its binaries, a scratch directory, a bpffs under
/run (AG_TEST_BPFFS when tests/run.sh mounted one, else one of its own: `ip
netns exec` remounts /sys, so pins cannot live under /sys/fs/bpf), loopback
ports, and a registry of everything started or made: processes (killed by
id), pin roots, network namespaces, lab edge hosts, other cleanups.
cleanup() undoes all of it, also after a failure or a signal; AG_TEST_KEEP=1
keeps the scratch directory (logs, state dirs) and says where.
"""
import os
import shutil
import subprocess
import sys
import tempfile

from . import ports
from .util import SkipAll, diag

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))
# Sanitized binaries exit 86 on a report (told apart from the program's own codes).
SAN_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=86",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=86"}
SANITIZER_RE = r"Sanitizer|runtime error:"


def _is_bpffs(path):
    try:
        out = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True)
        return out.returncode == 0 and out.stdout.strip() == "bpf_fs"
    except OSError:
        return False


class Env:
    def __init__(self, build, needs=(), root=True):
        self.root = ROOT
        self.build = os.path.abspath(build)
        if not os.path.isdir(self.build):
            raise SystemExit("%s: no directory %s" % (sys.argv[0], build))
        self.san = self.bin("agentgated-san")
        self.plain = self.bin("agentgated")
        self.cli_bin = self.bin("agentgate")
        self.procs, self.pins, self.netns, self.labs, self.cleanups = [], [], [], [], []
        self.case_hooks = []
        self.tmp = None
        self.bpffs = None
        self.own_bpffs = None
        self.count = 0
        if root and os.geteuid() != 0:
            raise SkipAll("needs root (bpffs, XDP, network namespaces)")
        for n in needs:
            if not (os.path.exists(os.path.join(self.build, n)) or shutil.which(n)):
                raise SkipAll("%s not found (make all; scripts/deps.sh installs tools)" % n)
        os.environ.update(SAN_ENV)
        self.tmp = tempfile.mkdtemp(prefix="agtest-%s." % os.path.splitext(
            os.path.basename(sys.argv[0]))[0])
        if root:
            self.bpffs = self._bpffs()

    # ---- paths ----------------------------------------------------------

    def bin(self, name):
        return os.path.join(self.build, name)

    def path(self, *parts):
        """A path in the scratch directory."""
        return os.path.join(self.tmp, *parts)

    def unique(self, prefix):
        """prefix-N, N counting up in this run (pin roots, state dirs)."""
        self.count += 1
        return "%s-%d-%d" % (prefix, os.getpid(), self.count)

    def pin_root(self, name):
        pin = os.path.join(self.bpffs, self.unique(name))
        self.pins.append(pin)
        return pin

    def daemon_places(self, name):
        """A pin root, an empty state directory and a loopback address of
        their own, for a case that runs agentgated by hand (refusals)."""
        st = self.path(self.unique("state-" + name))
        os.makedirs(st)
        return self.pin_root(name), st, "127.0.0.1:%d" % self.port()

    def _bpffs(self):
        given = os.environ.get("AG_TEST_BPFFS", "")
        if given and os.path.isdir(given) and _is_bpffs(given):
            return given
        d = tempfile.mkdtemp(prefix="agtest-bpf.", dir="/run")
        if subprocess.run(["mount", "-t", "bpf", "bpf", d]).returncode != 0:
            os.rmdir(d)
            raise SkipAll("cannot mount a bpffs under /run (set AG_TEST_BPFFS)")
        self.own_bpffs = d
        return d

    def port(self):
        return ports.free_port()

    # ---- processes --------------------------------------------------------

    def popen(self, argv, log=None, stdin=None, **kw):
        """Starts argv with stdout and stderr appended to log (or discarded),
        registered for cleanup."""
        out = open(log, "ab") if log else subprocess.DEVNULL
        try:
            p = subprocess.Popen(argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT, **kw)
        finally:
            if log:
                out.close()
        self.procs.append(p)
        return p

    def daemon(self, name, *args, **kw):
        """A new agentgated instance (see daemon.Daemon); not started."""
        from .daemon import Daemon
        return Daemon(self, name, list(args), **kw)

    def cli(self, pin, *args, **kw):
        from .cli import run_cli
        return run_cli(self, pin, *args, **kw)

    def on_cleanup(self, fn):
        self.cleanups.append(fn)

    def after_case(self, name):
        for fn in self.case_hooks:
            fn(name)

    # ---- teardown ---------------------------------------------------------

    def cleanup(self):
        """Kills what was started here (by id), removes what was made. Safe twice."""
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - cleanup goes on
                diag("cleanup: %s" % e)
        self.cleanups = []
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.kill()
                except OSError:
                    pass
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []
        for ns in self.netns:
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        self.netns = []
        for name in self.labs:
            subprocess.run([os.path.join(ROOT, "lab", "lab.sh"), "down", name],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.labs = []
        for pin in self.pins:
            shutil.rmtree(pin, ignore_errors=True)
        self.pins = []
        if self.own_bpffs:
            subprocess.run(["umount", self.own_bpffs], stderr=subprocess.DEVNULL)
            try:
                os.rmdir(self.own_bpffs)
            except OSError:
                pass
            self.own_bpffs = None
        if self.tmp:
            if os.environ.get("AG_TEST_KEEP"):
                print("# kept %s" % self.tmp, file=sys.stderr)
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
