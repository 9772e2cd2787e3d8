# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The agentgate CLI as the suites run it: JSON mode on a pin root.

    r = env.cli(pin, "agent", "show", "a")      # or daemon.cli("agent", ...)
    r.rc, r.out, r.json()
"""
import json
import subprocess

from .util import Fail


class Result:
    def __init__(self, argv, rc, out):
        self.argv, self.rc, self.out = argv, rc, out

    def json(self):
        try:
            return json.loads(self.out)
        except ValueError as e:
            raise Fail("%s: output is not JSON (%s): %s" % (" ".join(self.argv), e,
                                                            self.out[:1500]))

    def describe(self):
        return "command: %s\nexit %d; output: %s" % (" ".join(self.argv), self.rc,
                                                     self.out[:1500])


def run_cli(env, pin, *args, json_mode=True, netns=None, state_dir=None, timeout=60,
            input=None, binary=None):
    """Runs the CLI (stdout and stderr together in out)."""
    argv = [binary or env.cli_bin]
    if json_mode:
        argv.append("-j")
    if pin:
        argv += ["--pin-path", pin]
    if state_dir:
        argv += ["--state-dir", state_dir]
    argv += [str(a) for a in args]
    full = (["ip", "netns", "exec", netns] if netns else []) + argv
    p = subprocess.run(full, input=input, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout)
    return Result(argv, p.returncode, p.stdout.decode(errors="replace"))


def expect_cli(r, rc):
    if r.rc != rc:
        raise Fail("expected exit %d\n%s" % (rc, r.describe()))
    return r
