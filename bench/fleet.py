#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""bench/fleet.py BUILD_DIR [--seconds 5] [--rounds 200] [--json F]

The fleet over NATS JetStream, against a standalone daemon in the same run.
One nats-server (JetStream, file storage in a temporary directory) and
agentgated daemons of the optimized build on loopback, each with its own
state directory and pins in a private bpffs.

1. Ratings/s over HTTP keep-alive, every rating with its own id: batches of
   100 (4 clients) and single ratings (8 clients), for --seconds each,
   against (a) a standalone daemon, (b) one fleet daemon, (b1) one fleet
   daemon with --nats-batch 1 (a stream message per rating, as before batch
   messages), (c) the first of three fleet daemons on the one server, (d)
   the first of three fleet daemons on a 3-node NATS cluster, each daemon
   on its own node, --nats-replicas 3. A fleet answer comes after JetStream
   acknowledged the ratings and the daemon applied them. Ratio = fleet /
   standalone. Batch messages are used once every host's consumer reads
   them: the load starts after agentgate_fleet_rating_batches says so.
2. Convergence: --rounds times, one rating posted at host a; the time until
   hosts b and c both show it (polled over keep-alive, 0.2 ms apart),
   against the time host a took to answer (its own apply): p50 and p99.
Everything it starts is stopped and removed on exit (tests/lib/agtest: its
scratch directory, bpffs and processes).
"""
import argparse
import http.client
import json
import os
import signal
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "lib"))
from agtest.daemon import daemon_argv  # noqa: E402
from agtest.env import Env  # noqa: E402
from agtest.nats import NatsCluster, NatsServer  # noqa: E402
from agtest.proc import stop_proc  # noqa: E402
from agtest.util import SkipAll  # noqa: E402


def wait_http(port, path="/healthz", timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("port %d did not answer %s" % (port, path))


class Lab:
    """The nats-server and the daemons of one run, in the Env's scratch
    directory and bpffs."""

    def __init__(self, env):
        self.env = env
        self.nats = NatsServer(env, "bench")
        self.n = 0
        self.ports = {}
        self.cluster = None

    def start_nats(self):
        self.nats.start().wait_ready()

    def daemon(self, node=None, urls=None, extra=()):
        self.n += 1
        port = self.env.port()
        urls = urls or ([self.nats.url] if node else [])
        argv = daemon_argv(self.env.bin("agentgated"), self.env.pin_root("d%d" % self.n),
                           self.env.path("state%d" % self.n), "127.0.0.1:%d" % port,
                           nats=urls, node=node, extra=["--quiet"] + list(extra))
        proc = self.env.popen(argv, self.env.path("d%d.log" % self.n))
        wait_http(port, "/readyz")
        self.ports[port] = proc
        return port

    def stop(self, port):
        stop_proc(self.ports.pop(port), timeout=10)

    def close(self):
        """SIGTERM to everything, the daemons before the server; then the
        Env's cleanup (bpffs, scratch directory)."""
        for p in reversed(self.env.procs):
            stop_proc(p, timeout=10)
        if self.cluster:
            self.cluster.stop()
        self.env.cleanup()


def post(conn, body):
    conn.request("POST", "/v1/ratings", body=body,
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        raise RuntimeError("POST /v1/ratings: %d %s" % (r.status, data[:200]))
    return data


def load(port, clients, batch, seconds, tag):
    """Ratings/s with `clients` keep-alive connections posting `batch` ratings
    per request (ids unique), for `seconds`."""
    done = [0] * clients
    errors = []
    stop = time.time() + seconds

    def run(k):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = 0
        try:
            while time.time() < stop:
                items = [{"id": "%s-%d-%d-%d" % (tag, k, i, j), "agent": "a%d" % (j % 16),
                          "score": 1 + (i + j) % 5} for j in range(batch)]
                i += 1
                post(c, json.dumps(items if batch > 1 else items[0]))
                done[k] += batch
        except (OSError, RuntimeError) as e:
            errors.append(str(e))

    t0 = time.time()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(errors[0])
    return sum(done) / (time.time() - t0)


def metric(port, name):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", "/metrics")
        for line in c.getresponse().read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    finally:
        c.close()
    return None


def batches(ports, want=1, timeout=30):
    """Waits until every daemon sends batch messages (want 1) or a message per
    rating (0); whether they did."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(metric(p, "agentgate_fleet_rating_batches") == want for p in ports):
            return True
        time.sleep(0.2)
    return False


def ratings_of(conn, agent):
    conn.request("GET", "/v1/agents/" + agent)
    r = conn.getresponse()
    data = r.read()
    return json.loads(data)["ratings"] if r.status == 200 else 0


def convergence(ports, rounds):
    a = http.client.HTTPConnection("127.0.0.1", ports[0], timeout=30)
    others = [http.client.HTTPConnection("127.0.0.1", p, timeout=30) for p in ports[1:]]
    local, fleet = [], []
    for i in range(rounds):
        t0 = time.perf_counter()
        post(a, json.dumps({"id": "conv-%d" % i, "agent": "conv", "score": 1 + i % 5}))
        local.append(time.perf_counter() - t0)
        pending = list(others)
        while pending:
            pending = [c for c in pending if ratings_of(c, "conv") < i + 1]
            if pending:
                time.sleep(0.0002)
        fleet.append(time.perf_counter() - t0)
        time.sleep(0.005)
    return local, fleet


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100.0 * len(xs)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--json")
    a = ap.parse_args()
    try:
        env = Env(a.build, needs=("agentgated", "nats-server"))
    except SkipAll as e:
        print("bench/fleet.py: %s" % e, file=sys.stderr)
        return 77
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: sys.exit(130))
    lab = Lab(env)
    res = {"date": time.strftime("%Y-%m-%d"), "nproc": os.cpu_count(),
           "kernel": os.uname().release}
    loads = (("batch100", 4, 100), ("single", 8, 1))

    def measure(key, what, port, ports=None):
        on = batches(ports or [port])
        for name, clients, batch in loads:
            got = load(port, clients, batch, a.seconds, key + "-" + name)
            res[name][key] = got
            print("%-9s %-44s %9.0f/s  ratio to standalone %.3f%s" %
                  (name, what, got, got / res[name]["standalone"],
                   "" if on else "  (batch messages never came on)"), flush=True)
    try:
        lab.start_nats()
        alone = lab.daemon()
        for name, clients, batch in loads:
            res[name] = {"standalone": load(alone, clients, batch, a.seconds, "s-" + name)}
            print("%-9s %-44s %9.0f/s" % (name, "standalone", res[name]["standalone"]),
                  flush=True)
        lab.stop(alone)
        one = lab.daemon("n1", extra=["--nats-batch", "1"])
        for name, clients, batch in loads:
            got = load(one, clients, batch, a.seconds, "n1-" + name)
            res[name]["fleet_1_per_rating"] = got
            print("%-9s %-44s %9.0f/s  ratio to standalone %.3f" %
                  (name, "fleet, 1 host, a message per rating", got,
                   got / res[name]["standalone"]), flush=True)
        lab.stop(one)
        f1 = lab.daemon("f1")
        measure("fleet_1", "fleet, 1 host", f1)
        f2, f3 = lab.daemon("f2"), lab.daemon("f3")
        measure("fleet_3", "fleet, 3 hosts on 1 server, load on one", f1, [f1, f2, f3])
        local, fleet = convergence([f1, f2, f3], a.rounds)
        res["convergence_ms"] = {
            "local_p50": 1e3 * pct(local, 50), "local_p99": 1e3 * pct(local, 99),
            "fleet_p50": 1e3 * pct(fleet, 50), "fleet_p99": 1e3 * pct(fleet, 99)}
        c = res["convergence_ms"]
        print("convergence over %d ratings: host a answered p50 %.2f ms p99 %.2f ms; hosts "
              "b and c had it p50 %.2f ms p99 %.2f ms (ratio p99 %.2f)" %
              (a.rounds, c["local_p50"], c["local_p99"], c["fleet_p50"], c["fleet_p99"],
               c["fleet_p99"] / c["local_p99"]), flush=True)
        for p in (f1, f2, f3):
            lab.stop(p)
        lab.nats.stop()
        # A 3-node NATS cluster, the stream with 3 replicas, a daemon on each node.
        cl = NatsCluster(lab.env, prefix="k").start().wait_ready()
        lab.cluster = cl
        ks = [lab.daemon("k%d" % i, urls=[cl.nodes[i].url], extra=["--nats-replicas", "3"])
              for i in range(3)]
        measure("cluster_3", "fleet, 3 hosts on a 3-node cluster (R3)", ks[0], ks)
    finally:
        lab.close()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
