# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""fleetlib.py: what the fleet tests start, and how they stop it.

NatsServer: one nats-server with JetStream (its store in a directory of the
test's), on loopback ports picked free at start, optionally a member of a
cluster (routes on loopback); ready when its monitoring /healthz answers 200
(JetStream included). Daemon: one agentgated with its own pin root, state
directory, port and log. Every process is registered in PROCS and killed by
its id in cleanup(), which the test's finally block and signal handlers call.
"""
import http.client as httpclient
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from loopports import free_ports  # noqa: E402
from procs import stop_proc  # noqa: E402,F401  (also used by the tests)

PROCS = []      # every Popen started here (killed by id in cleanup)
PINS = []       # pin roots to remove
LAB_HOSTS = []  # lab/lab.sh edge hosts to take down (name, lab script)


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


def diag(msg):
    for line in str(msg).splitlines() or [""]:
        print("# " + line)


def wait_for(fn, timeout, interval=0.1, what="condition"):
    """Calls fn until it returns a true value; returns it, or raises Fail after timeout."""
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


def http(base, method, path, body=None, ctype="application/json", timeout=30):
    """(status, text, headers) of one request; body: JSON-able, bytes or str."""
    if body is None:
        data = None
    elif isinstance(body, bytes):
        data = body
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)
    except httpclient.HTTPException as e:     # e.g. the server died mid-answer
        raise OSError("%s %s: %s: %s" % (method, path, type(e).__name__, e))


def popen(cmd, log, **kw):
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=open(log, "ab"),
                         stderr=subprocess.STDOUT, **kw)
    PROCS.append(p)
    return p


# ---- nats-server ----------------------------------------------------------------

class NatsServer:
    """One nats-server; start() again after stop() reuses its ports and store."""

    def __init__(self, tmp, name, cluster_name=None):
        self.name = name
        self.dir = os.path.join(tmp, "nats-" + name)
        self.store = os.path.join(self.dir, "js")
        self.conf = os.path.join(self.dir, "server.conf")
        self.log = os.path.join(self.dir, "server.log")
        os.makedirs(self.store, exist_ok=True)
        self.port, self.mon, self.cport = free_ports(3)
        self.cluster_name = cluster_name
        self.routes = []
        self.proc = None

    @property
    def url(self):
        return "nats://127.0.0.1:%d" % self.port

    def write_conf(self):
        conf = ['server_name: "%s"' % self.name,
                'listen: "127.0.0.1:%d"' % self.port,
                'http: "127.0.0.1:%d"' % self.mon,
                'jetstream {',
                '  store_dir: "%s"' % self.store,
                '  max_memory_store: 64MB',
                '  max_file_store: 1GB',
                '}']
        if self.cluster_name:
            conf += ['cluster {',
                     '  name: "%s"' % self.cluster_name,
                     '  listen: "127.0.0.1:%d"' % self.cport,
                     '  routes: [%s]' % ", ".join('"nats://127.0.0.1:%d"' % p for p in self.routes),
                     '}']
        with open(self.conf, "w") as f:
            f.write("\n".join(conf) + "\n")

    def start(self):
        self.write_conf()
        with open(self.log, "a") as f:
            f.write("---- start %s\n" % time.strftime("%H:%M:%S"))
        self.proc = popen(["nats-server", "-c", self.conf], self.log)
        return self

    def monitor(self, path):
        return http("http://127.0.0.1:%d" % self.mon, "GET", path, timeout=3)

    def healthy(self):
        if self.proc is None or self.proc.poll() is not None:
            raise Fail("nats-server %s exited (%s): %s" % (
                self.name, self.proc and self.proc.returncode, self.log_tail()))
        try:
            st, body, _ = self.monitor("/healthz")
        except OSError:
            return False
        return st == 200 and json.loads(body).get("status") == "ok"

    def wait_ready(self, timeout=30):
        wait_for(self.healthy, timeout, what="nats-server %s /healthz" % self.name)
        st, body, _ = self.monitor("/jsz")
        check(st == 200 and json.loads(body).get("config", {}).get("store_dir", "").startswith(
            self.store), 
              "nats-server %s: JetStream not enabled on %s: %s" % (self.name, self.store,
                                                                   body[:500]))
        return self

    def jsz(self):
        return json.loads(self.monitor("/jsz")[1])

    def stop(self, sig=signal.SIGTERM):
        if self.proc is not None:
            stop_proc(self.proc, sig)
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=1500):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""


class NatsCluster:
    """Three (or n) nats-servers routed to each other on loopback, JetStream clustered."""

    def __init__(self, tmp, n=3, prefix="c"):
        self.nodes = [NatsServer(tmp, "%s%d" % (prefix, i + 1), cluster_name="agtest-" + prefix)
                      for i in range(n)]
        for s in self.nodes:
            s.routes = [o.cport for o in self.nodes if o is not s]

    @property
    def urls(self):
        return [s.url for s in self.nodes]

    def start(self):
        for s in self.nodes:
            s.start()
        return self

    def meta_leader(self, alive=None):
        for s in alive or self.nodes:
            if not s.running():
                continue
            try:
                leader = s.jsz().get("meta_cluster", {}).get("leader")
            except (OSError, ValueError):
                continue
            if leader:
                return leader
        return None

    def wait_ready(self, timeout=45):
        for s in self.nodes:
            s.wait_ready(timeout)
        wait_for(self.meta_leader, timeout, what="a JetStream meta leader")
        for s in self.nodes:
            wait_for(lambda: s.jsz().get("meta_cluster", {}).get("cluster_size") == len(self.nodes),
                     timeout, what="%s sees a cluster of %d" % (s.name, len(self.nodes)))
        return self

    def stop(self):
        for s in self.nodes:
            s.stop()


# ---- agentgated ------------------------------------------------------------------

class Daemon:
    """One agentgated in fleet mode (or standalone when nats is empty)."""

    def __init__(self, binary, tmp, bpffs, node, nats, extra=(), pin=None, state=None):
        self.binary, self.node = binary, node
        self.nats = list(nats)
        self.extra = list(extra)
        self.pin = pin or os.path.join(bpffs, "fleet-%d-%s" % (os.getpid(), node))
        self.state = state or os.path.join(tmp, "state-" + node)
        self.log = os.path.join(tmp, "daemon-%s.log" % node)
        self.port = free_ports(1)[0]
        self.base = "http://127.0.0.1:%d" % self.port
        self.proc = None
        os.makedirs(self.state, exist_ok=True)
        if self.pin not in PINS:
            PINS.append(self.pin)

    def cmd(self):
        c = [self.binary, "--config", "/dev/null", "--pin-path", self.pin, "--state-dir",
             self.state, "--listen", "127.0.0.1:%d" % self.port]
        for u in self.nats:
            c += ["--nats", u]
        if self.nats:
            c += ["--node", self.node]
        return c + self.extra

    def start(self):
        with open(self.log, "a") as f:
            f.write("---- start %s: %s\n" % (time.strftime("%H:%M:%S"), " ".join(self.cmd())))
        self.proc = popen(self.cmd(), self.log)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def ready(self, want=("ready",)):
        if not self.alive():
            raise Fail("daemon %s exited with %s: %s" % (
                self.node, self.proc and self.proc.returncode, self.log_tail(600)))
        try:
            st, body, _ = self.http("GET", "/readyz", timeout=3)
        except OSError:
            return False
        if st != 200:
            return False
        try:
            return json.loads(body).get("status") in want
        except ValueError:
            return False

    def wait_ready(self, timeout=30, want=("ready",)):
        wait_for(lambda: self.ready(want), timeout, what="daemon %s /readyz %s" % (self.node, want))
        return self

    def http(self, method, path, body=None, ctype="application/json", timeout=30):
        return http(self.base, method, path, body, ctype, timeout)

    def get_json(self, path):
        st, body, _ = self.http("GET", path)
        check(st == 200, "%s GET %s: %d %s" % (self.node, path, st, body))
        return json.loads(body)

    def agent(self, name):
        """GET /v1/agents/NAME: the object, or None on 404."""
        st, body, _ = self.http("GET", "/v1/agents/" + name)
        if st == 404:
            return None
        if st != 200:   # (ValueError: wait_for tries again)
            raise ValueError("%s GET /v1/agents/%s: %d %s" % (self.node, name, st, body))
        return json.loads(body)

    def metrics(self):
        st, body, _ = self.http("GET", "/metrics")
        check(st == 200, "%s GET /metrics: %d" % (self.node, st))
        return body

    def metric(self, name, labels=None):
        """The value of one sample (labels: dict, exact), or None when absent."""
        for line in self.metrics().splitlines():
            if not line or line.startswith("#"):
                continue
            key, _, val = line.rpartition(" ")
            n, _, lab = key.partition("{")
            if n != name:
                continue
            got = {}
            if lab:
                for part in lab.rstrip("}").split(","):
                    if part:
                        k, _, v = part.partition("=")
                        got[k] = v.strip('"')
            if (labels or {}) == got:
                return float(val)
        return None

    def kill9(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout=20):
        """SIGTERM; the exit code (None: had to be killed)."""
        return None if self.proc is None else stop_proc(self.proc, timeout=timeout)

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_tail(self, n=2000):
        return self.log_text()[-n:]


def cleanup(tmp, keep_tmp=False):
    """Kills every process started here (by id), takes down lab hosts, removes pins
    and the temporary directory. Safe to call twice."""
    for p in PROCS:
        if p.poll() is None:
            try:
                p.kill()
            except OSError:
                pass
    for p in PROCS:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            pass
    del PROCS[:]
    for name, lab in LAB_HOSTS:
        subprocess.run([lab, "down", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    del LAB_HOSTS[:]
    for pin in PINS:
        shutil.rmtree(pin, ignore_errors=True)
    del PINS[:]
    if tmp and not keep_tmp:
        shutil.rmtree(tmp, ignore_errors=True)
