# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Network namespaces, lab edge hosts and traffic for the suites.

    ns = Netns(env, "xdp")                  # a namespace with lo up, IPv6 off
    a, b = ns.veth()                        # a veth pair inside it, both up
    ns.run("ip", "link", "show")            # a command inside (CompletedProcess)
    ns.xdp_prog(a)                          # the XDP program id on a, or None
    send_frames(ns, b, 20, "10.66.0.1", peer_if=a)   # UDP frames out of b into a

    host = lab_up(env, "fault")             # lab/lab.sh up: an edge host and its wire
    host["LAB_NS"], host["LAB_PIN"], host["LAB_WIRE_NS"], ...

Everything made here is registered with the Env and removed by its cleanup.
"""
import json
import os
import subprocess

from .env import ROOT
from .util import Fail, Skip, check

LAB = os.path.join(ROOT, "lab", "lab.sh")
SENDFRAMES = os.path.join(ROOT, "tests", "cli", "sendframes.py")


class Netns:
    def __init__(self, env, tag):
        self.env = env
        self.name = "agt-%s-%d" % (tag, os.getpid())
        self.nveth = 0
        if subprocess.run(["ip", "netns", "add", self.name],
                          stderr=subprocess.DEVNULL).returncode != 0:
            raise Skip("cannot create a network namespace")
        env.netns.append(self.name)
        self.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                 "net.ipv6.conf.default.disable_ipv6=1")
        self.must("ip", "link", "set", "lo", "up")

    def prefix(self):
        return ["ip", "netns", "exec", self.name]

    def run(self, *argv, **kw):
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.prefix() + [str(a) for a in argv], **kw)

    def must(self, *argv, **kw):
        r = self.run(*argv, **kw)
        check(r.returncode == 0, "in netns %s: %s: exit %d: %s" % (
            self.name, " ".join(map(str, argv)), r.returncode, (r.stderr or "")[-1000:]))
        return r

    def veth(self):
        """A new veth pair in the namespace, both ends up: (a, b)."""
        self.nveth += 1
        a, b = "agv%da" % self.nveth, "agv%db" % self.nveth
        self.must("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        self.must("ip", "link", "set", a, "up")
        self.must("ip", "link", "set", b, "up")
        return a, b

    def xdp_prog(self, ifname):
        r = self.must("ip", "-j", "link", "show", ifname)
        x = json.loads(r.stdout)[0].get("xdp")
        return x["prog"]["id"] if x else None


def send_frames(ns, out_if, count, src, peer_if=None, **opts):
    """Sends count UDP frames from src out of out_if inside ns
    (tests/cli/sendframes.py; opts: dst, dport, size, kind, every, duration);
    Fail unless all were sent."""
    argv = ["python3", SENDFRAMES, out_if, str(count), src]
    if peer_if:
        argv += ["--peer-if", peer_if]
    for k, v in opts.items():
        argv += ["--" + k.replace("_", "-"), str(v)]
    r = ns.run(*argv)
    check(r.returncode == 0 and r.stdout.strip() == str(count) if not opts.get("duration")
          else r.returncode == 0,
          "sendframes.py: exit %d, sent %s of %d: %s" % (r.returncode, r.stdout.strip(), count,
                                                         r.stderr[-500:]))
    return int(r.stdout.strip() or 0)


def lab_up(env, name):
    """lab/lab.sh up NAME: its variables (LAB_NS, LAB_WIRE_NS, LAB_PIN,
    LAB_STATE, ...) as a dict; Skip when the machine cannot host a lab."""
    r = subprocess.run([LAB, "up", name], capture_output=True, text=True)
    if r.returncode == 77:
        raise Skip("this machine cannot host a lab (lab/lab.sh up: 77)")
    if r.returncode != 0:
        raise Fail("lab/lab.sh up %s: exit %d: %s" % (name, r.returncode, r.stderr[-1000:]))
    env.labs.append(name)
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


def lab_down(env, name):
    subprocess.run([LAB, "down", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if name in env.labs:
        env.labs.remove(name)
