#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""tests/stream: GET /v1/stream against the real daemon (the sanitized
build), with real WebSocket clients (wsclient.py) and real ratings over HTTP.

Usage: test_stream.py BUILD_DIR   (TAP; AG_TEST_BPFFS: a bpffs for the pins;
AG_TEST_ONLY: space-separated case names to run, the others skipped)

Cases: handshake and welcome; auth refusals (no token, bad, wrong scope)
and both token styles; ?topics= and subscribe/unsubscribe messages; topic
filtering with exact rating data; bucket updates at most once a second;
per-address and total connection limits; a slow client cut off while a
fast one receives every update; pings; close codes (client close, binary,
oversized, shutdown); TLS: HTTPS and WSS with a certificate made by
openssl, no plaintext, bad key pairs refused at start.
"""
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from wsclient import WS, Closed, free_port  # noqa: E402
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
from procs import stop_proc  # noqa: E402

BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
DAEMON = os.path.join(BUILD, "agentgated-san")
BPFFS = os.environ.get("AG_TEST_BPFFS", "")
TMP = tempfile.mkdtemp(prefix="agentgate-stream.")
KEY = os.path.join(TMP, "auth.key")
daemons = {}


def diag(msg):
    for line in str(msg).splitlines() or [""]:
        print("# " + line)
    sys.stdout.flush()


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


def token(scope, key=KEY, exp="NOW+600"):
    claims = json.dumps({"sub": "stream-test", "exp": exp, "scope": scope})
    return subprocess.run([sys.executable, os.path.join(ROOT, "tests/daemon/jwt.py"), key, claims],
                          capture_output=True, text=True, check=True).stdout.strip()


class Daemon:
    def __init__(self, name, args, tls=None, binary=DAEMON):
        self.name, self.port, self.tls = name, free_port(), tls
        self.pin = os.path.join(BPFFS, "stream-" + name)
        self.state = os.path.join(TMP, name)
        self.log = os.path.join(TMP, name + ".log")
        os.makedirs(self.state, exist_ok=True)
        self.cmd = [binary, "--pin-path", self.pin, "--state-dir", self.state, "--listen",
                    "127.0.0.1:%d" % self.port] + args
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        daemons[name] = self
        self.base = "%s://127.0.0.1:%d" % ("https" if tls else "http", self.port)
        self.ctx = ssl.create_default_context(cafile=tls) if tls else None

    def wait_ready(self, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Fail("daemon %s exited with %d: %s" % (self.name, self.proc.returncode,
                                                             self.log_text()[-2000:]))
            try:
                if self.http("GET", "/readyz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise Fail("daemon %s not ready" % self.name)

    def http(self, method, path, body=None, tok=None, ctype="application/json"):
        data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) \
            else body
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", ctype)
        if tok:
            req.add_header("Authorization", "Bearer " + tok)
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ctx) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def ws(self, path="/v1/stream", **kw):
        return WS.connect("127.0.0.1", self.port, path, cafile=self.tls, **kw)

    def log_text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def stop(self, timeout=20):
        """SIGTERM; returns the exit code (None: killed after timeout)."""
        return stop_proc(self.proc, timeout=timeout)

    def stop_clean(self):
        rc = self.stop()
        text = self.log_text()
        check(rc == 0, "%s: exit code %s; log: %s" % (self.name, rc, text[-1500:]))
        check("AddressSanitizer" not in text and "runtime error" not in text,
              "%s: sanitizer report: %s" % (self.name, text[-3000:]))


def metric(d, name):
    st, text = d.http("GET", "/metrics", tok=ADMIN)
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


# Tokens (made once the key exists).
ADMIN = STREAM = WRITE = ""


def post_ratings(d, ratings):
    st, body = d.http("POST", "/v1/ratings", ratings, tok=WRITE)
    check(st == 200, "POST /v1/ratings: %d %s" % (st, body))
    return json.loads(body)


def welcome(c):
    m = c.recv_json(5)
    check(m == {"type": "connection_success"}, "first message: %r" % (m,))


# ---- cases ---------------------------------------------------------------------------

def t_handshake():
    d = daemons["main"]
    c = d.ws("/v1/stream?token=" + STREAM)
    check(c.status == 101, "status %d %s" % (c.status, c.body))
    check(c.accept_ok, "Sec-WebSocket-Accept does not match the key")
    welcome(c)
    check(c.close(1000) == 1000, "close 1000 not echoed")
    st, body = d.http("GET", "/v1/stream", tok=STREAM)
    check(st == 426 and json.loads(body)["error"] == "upgrade_required",
          "plain GET /v1/stream: %d %s" % (st, body))


def t_auth():
    d = daemons["main"]
    c = d.ws("/v1/stream")
    check(c.status == 401 and json.loads(c.body)["error"] == "unauthorized",
          "no token: %d %s" % (c.status, c.body))
    check("?token=" in json.loads(c.body)["message"], "401 names ?token=: " + c.body)
    c = d.ws("/v1/stream?token=not.a.jwt")
    check(c.status == 401, "malformed token: %d" % c.status)
    c = d.ws("/v1/stream?token=" + token("stream:read", exp="NOW-60"))
    check(c.status == 401, "expired token: %d" % c.status)
    wrong = os.path.join(TMP, "wrong.key")
    with open(wrong, "w") as f:
        f.write("w" * 40 + "\n")
    c = d.ws("/v1/stream?token=" + token("stream:read", key=wrong))
    check(c.status == 401, "token of another key: %d" % c.status)
    c = d.ws("/v1/stream?token=" + ADMIN)
    check(c.status == 403 and "stream:read" in json.loads(c.body)["message"],
          "token without stream:read: %d %s" % (c.status, c.body))
    c = d.ws("/v1/stream", headers={"Authorization": "Bearer " + STREAM})
    check(c.status == 101, "Authorization header: %d %s" % (c.status, c.body))
    welcome(c)
    c.close()


def t_query_topics():
    d = daemons["main"]
    c = d.ws("/v1/stream?token=%s&topics=rating.global,bucket.agent.sa%%2Done" % STREAM)
    check(c.status == 101, "status %d" % c.status)
    msgs = c.collect(3, until=lambda m: m.get("topic") == "bucket.agent.sa-one")
    check(msgs == [{"type": "connection_success"},
                   {"type": "subscribed", "topic": "rating.global"},
                   {"type": "subscribed", "topic": "bucket.agent.sa-one"}], "replies: %r" % msgs)
    c.close()
    c = d.ws("/v1/stream?token=%s&topics=rating.global,rating.agents.x" % STREAM)
    check(c.status == 400 and "rating.agents.x" in json.loads(c.body)["message"],
          "unknown topic: %d %s" % (c.status, c.body))
    # The message states the name alphabet as ag_name_check() has it.
    check("[A-Za-z0-9._:-]" in json.loads(c.body)["message"],
          "unknown topic: alphabet not stated with ':': %s" % c.body)
    c = d.ws("/v1/stream?token=%s&topics=rating.agent.%s" % (STREAM, "x" * 65))
    check(c.status == 400, "agent name of 65: %d" % c.status)


def t_filtering():
    d = daemons["main"]
    for a in ("fa", "fb"):
        st, body = d.http("PUT", "/v1/agents/" + a, {"rate": 100, "alpha": 10}, tok=ADMIN)
        check(st in (200, 201), "PUT %s: %d %s" % (a, st, body))
    g = d.ws("/v1/stream?token=%s&topics=rating.global" % STREAM)
    a = d.ws("/v1/stream?token=%s&topics=rating.agent.fa" % STREAM)
    b = d.ws("/v1/stream?token=%s&topics=rating.agent.fb" % STREAM)
    for c in (g, a, b):
        check(len(c.collect(3, until=lambda m: m["type"] == "subscribed")) == 2, "welcome")
    post_ratings(d, [{"id": "f1", "agent": "fa", "score": 5, "user": "u1", "ts": 1700000000000},
                     {"id": "f2", "agent": "fb", "score": 1},
                     {"id": "f3", "agent": "fa", "score": 4}])
    gm = g.collect(3, until=lambda m: m["data"]["id"] == "f3")
    am = a.collect(3, until=lambda m: m["data"]["id"] == "f3")
    bm = b.collect(1.5)
    check([m["data"]["id"] for m in gm] == ["f1", "f2", "f3"], "global: %r" % gm)
    check(all(m["type"] == "rating_update" and m["topic"] == "rating.global" for m in gm),
          "global shapes: %r" % gm)
    check([m["data"]["id"] for m in am] == ["f1", "f3"], "agent fa: %r" % am)
    check(am[0] == {"type": "rating_update", "topic": "rating.agent.fa", "data": {
        "agent": "fa", "score": 5, "id": "f1", "user": "u1", "ts": 1700000000000,
        "rate": 120.0, "mean_score": 5.0, "ratings": 1}}, "first fa update: %r" % am[0])
    check(am[1]["data"]["rate"] == 130.0 and am[1]["data"]["mean_score"] == 4.5 and
          am[1]["data"]["ratings"] == 2 and am[1]["data"]["user"] is None,
          "second fa update: %r" % am[1])
    check([m["data"]["id"] for m in bm] == ["f2"] and bm[0]["data"]["rate"] == 80.0,
          "agent fb: %r" % bm)
    # A duplicate id is not applied: nothing is pushed.
    post_ratings(d, [{"id": "f1", "agent": "fa", "score": 5}])
    check(g.collect(1) == [], "a duplicate was pushed")
    for c in (g, a, b):
        c.close()


def t_subscribe_messages():
    d = daemons["main"]
    c = d.ws("/v1/stream?token=" + STREAM)
    welcome(c)
    c.send_json({"action": "subscribe", "topic": "rating.agent.sm"})
    check(c.recv_json(3) == {"type": "subscribed", "topic": "rating.agent.sm"}, "subscribed")
    post_ratings(d, [{"id": "s1", "agent": "sm", "score": 5}])
    m = c.recv_json(3)
    check(m and m["type"] == "rating_update" and m["data"]["id"] == "s1", "update: %r" % m)
    c.send_json({"action": "unsubscribe", "topic": "rating.agent.sm"})
    check(c.recv_json(3) == {"type": "unsubscribed", "topic": "rating.agent.sm"}, "unsubscribed")
    post_ratings(d, [{"id": "s2", "agent": "sm", "score": 5}])
    check(c.collect(1) == [], "an update after unsubscribe")
    for bad, why in ((b"{", "JSON object"), ({"action": "watch", "topic": "rating.global"},
                                              "subscribe or unsubscribe"),
                     ({"action": "subscribe"}, "required"),
                     ({"action": "subscribe", "topic": "bucket.global"}, "unknown topic")):
        if isinstance(bad, bytes):
            c.send_text(bad.decode())
        else:
            c.send_json(bad)
        m = c.recv_json(3)
        check(m and m["type"] == "error" and why in m["message"], "%r: %r" % (bad, m))
    # Still connected and served.
    c.send_json({"action": "subscribe", "topic": "rating.global"})
    check(c.recv_json(3) == {"type": "subscribed", "topic": "rating.global"}, "after errors")
    c.close()


def t_bucket_updates():
    d = daemons["main"]
    d.http("PUT", "/v1/agents/bk", {"rate": 50, "burst": 200}, tok=ADMIN)
    c = d.ws("/v1/stream?token=%s&topics=bucket.agent.bk" % STREAM)
    c.collect(2, until=lambda m: m["type"] == "subscribed")
    t0 = time.monotonic()
    msgs = c.collect(4.6)
    span = time.monotonic() - t0
    ups = [m for m in msgs if m["type"] == "bucket_update"]
    check(len(ups) >= 2, "bucket updates in %.1f s: %r" % (span, msgs))
    # At most one a second: a 1 s period gives at most span + 1 of them.
    check(len(ups) <= int(span) + 1, "%d updates in %.1f s" % (len(ups), span))
    u = ups[-1]
    check(u["topic"] == "bucket.agent.bk" and u["data"]["agent"] == "bk" and
          u["data"]["rate"] == 50.0 and u["data"]["capacity"] == 200 and
          0 <= u["data"]["tokens"] <= 200 and u["data"]["passed_pps"] == 0 and
          u["data"]["dropped_pps"] == 0, "update: %r" % u)
    check(set(u["data"]) == {"agent", "tokens", "capacity", "rate", "passed_pps", "dropped_pps",
                             "passed", "dropped", "ts"}, "fields: %r" % u)
    c.close()


def t_limits():
    d = daemons["main"]  # --stream-max-per-ip 4
    conns = [d.ws("/v1/stream?token=" + STREAM) for _ in range(4)]
    check(all(c.status == 101 for c in conns), "four clients: %r" % [c.status for c in conns])
    for c in conns:
        welcome(c)
    extra = d.ws("/v1/stream?token=" + STREAM)
    check(extra.status == 429 and extra.headers.get("retry-after") == "5" and
          "--stream-max-per-ip" in json.loads(extra.body)["message"],
          "fifth from one address: %d %r %s" % (extra.status, extra.headers, extra.body))
    conns.pop().close()
    time.sleep(0.3)
    again = d.ws("/v1/stream?token=" + STREAM)
    check(again.status == 101, "after one left: %d" % again.status)
    conns.append(again)
    for c in conns:
        c.close()
    # --stream-max-clients 2 on another daemon: the third gets 503.
    f = daemons["full"]
    cs = [f.ws() for _ in range(2)]
    check([c.status for c in cs] == [101, 101], "two clients: %r" % [c.status for c in cs])
    # The welcome comes once a client is registered; a handshake racing a
    # registration gets 101 and then close code 1013 (docs/STREAM.md).
    for c in cs:
        welcome(c)
    c3 = f.ws()
    check(c3.status == 503 and "--stream-max-clients" in json.loads(c3.body)["message"],
          "third client: %d %s" % (c3.status, c3.body))
    # The HTTP API still answers: stream clients hold workers of their own.
    check(f.http("GET", "/healthz")[0] == 200, "healthz with the stream full")
    for c in cs:
        c.close()
    time.sleep(0.3)
    check(metric(f, 'agentgate_stream_connections_total{result="refused_full"}') == 1,
          "refused_full metric")


def t_slow_client():
    d = daemons["slow"]  # --stream-queue 4096 --stream-max-lag 1s
    d.http("PUT", "/v1/agents/sl", {"rate": 100}, tok=ADMIN)
    slow = d.ws("/v1/stream?topics=rating.global", rcvbuf=4096)
    fast = d.ws("/v1/stream?topics=rating.global")
    check(slow.status == 101 and fast.status == 101, "handshakes")
    fast.collect(2, until=lambda m: m["type"] == "subscribed")
    total, got, errors = 30000, [], []

    def read_fast():
        try:
            while len(got) < total:
                m = fast.recv_json(20)
                if m is None:
                    errors.append("fast client: nothing for 20 s after %d" % len(got))
                    return
                if m["type"] == "rating_update":
                    got.append(m["data"]["id"])
        except Closed as e:
            errors.append("fast client closed: %s %s" % (e.code, e.reason))

    reader = threading.Thread(target=read_fast)
    reader.start()
    pad = "p" * 120  # ~300-byte updates: the slow client's buffers fill sooner
    for k in range(0, total, 500):
        post_ratings(d, [{"id": "r%d" % i, "agent": "sl", "score": 3, "user": pad}
                         for i in range(k, k + 500)])
        time.sleep(0.01)
    reader.join(60)
    check(not errors, "; ".join(errors))
    check(got == ["r%d" % i for i in range(total)],
          "fast client got %d of %d (in order: %s)" % (len(got), total,
                                                       got == sorted(got, key=lambda x: int(x[1:]))))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not metric(d, "agentgate_stream_slow_disconnects_total"):
        time.sleep(0.2)
    check(metric(d, "agentgate_stream_slow_disconnects_total") == 1, "slow client not cut")
    # What the slow client reads now ends with the cut: a close frame 1008
    # naming the reason, or the bare end of the connection.
    n = 0
    try:
        while slow.recv_text(5) is not None:
            n += 1
    except Closed as e:
        check(e.code in (1008, None), "slow client close code %s %s" % (e.code, e.reason))
    check(slow.closed is not None, "slow client still connected after %d messages" % n)
    check(n < total, "slow client received all %d updates" % n)
    fast.send_json({"action": "subscribe", "topic": "rating.agent.sl"})
    m = fast.recv_json(3)
    check(m == {"type": "subscribed", "topic": "rating.agent.sl"}, "fast client after: %r" % m)
    fast.close()
    check(metric(d, "agentgate_stream_clients") == 0, "clients left")


def t_ping():
    d = daemons["full"]  # --stream-ping 300ms
    c = d.ws()
    welcome(c)
    c.collect(1.5)
    check(c.pings >= 2, "pings in 1.5 s idle: %d" % c.pings)
    check(c.close(1000) == 1000, "close after pings")


def t_close_codes():
    d = daemons["slow"]
    c = d.ws()
    welcome(c)
    check(c.close(4001, "bye") == 4001, "client close code not echoed")
    c = d.ws()
    welcome(c)
    c.send_binary(b"\x00\x01")
    try:
        c.recv_text(3)
        raise Fail("binary message: no close")
    except Closed as e:
        check(e.code == 1003, "binary message: close %s" % e.code)
    c = d.ws()
    welcome(c)
    c.send_text(json.dumps({"action": "subscribe", "topic": "rating.global", "pad": "x" * 5000}))
    try:
        c.recv_text(3)
        raise Fail("oversized message: no close")
    except Closed as e:
        check(e.code == 1009, "oversized message: close %s" % e.code)


def t_shutdown():
    d = daemons["slow"]
    c = d.ws("/v1/stream?topics=rating.global")
    c.collect(2, until=lambda m: m["type"] == "subscribed")
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    try:
        while c.recv_text(10) is not None:
            pass
        raise Fail("no close on shutdown")
    except Closed as e:
        check(e.code == 1001, "shutdown close code %s %s" % (e.code, e.reason))
    c.drop()
    d.stop_clean()
    diag("daemon with a stream client stopped in %.2f s" % (time.monotonic() - t0))
    for name in ("main", "full"):
        daemons[name].stop_clean()


def openssl(*args):
    return subprocess.run(["openssl"] + list(args), capture_output=True, text=True)


def t_tls():
    crt, key = os.path.join(TMP, "tls.crt"), os.path.join(TMP, "tls.key")
    r = openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1")
    check(r.returncode == 0, "openssl req: " + r.stderr)
    d = Daemon("tls", ["--tls-cert", crt, "--tls-key", key], tls=crt).wait_ready()
    check("serving https://" in d.log_text(), "no https in the log")
    st, body = d.http("PUT", "/v1/agents/tl", {"rate": 10})
    check(st == 201, "PUT over HTTPS: %d %s" % (st, body))
    c = d.ws("/v1/stream?topics=rating.agent.tl")
    check(c.status == 101, "WSS handshake: %d" % c.status)
    c.collect(2, until=lambda m: m["type"] == "subscribed")
    st, body = d.http("POST", "/v1/ratings", {"id": "t1", "agent": "tl", "score": 5})
    check(st == 200, "rating over HTTPS: %d %s" % (st, body))
    m = c.recv_json(3)
    check(m and m["data"]["id"] == "t1" and m["data"]["rate"] == 30.0, "WSS update: %r" % m)
    check(c.close() == 1000, "WSS close")
    # No plaintext on the TLS port, and TLS 1.1 refused.
    s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        reply = s.recv(100)
    except OSError:
        reply = b""
    s.close()
    check(not reply.startswith(b"HTTP/1.1 200"), "plain HTTP answered: %r" % reply)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.wrap_socket(socket.create_connection(("127.0.0.1", d.port), timeout=5)).close()
        raise Fail("a TLS 1.1 handshake succeeded")
    except (ssl.SSLError, OSError):
        pass
    d.stop_clean()
    # Installed by make install: the TLS libraries found at ../lib/agentgate.
    dest = os.path.join(TMP, "inst")
    r = subprocess.run(["make", "-s", "-C", ROOT, "install", "OUTPUT=" + BUILD, "DESTDIR=" + dest,
                        "PREFIX=/usr"], capture_output=True, text=True)
    check(r.returncode == 0, "make install: " + r.stdout + r.stderr)
    i = Daemon("tlsinst", ["--tls-cert", crt, "--tls-key", key], tls=crt,
               binary=os.path.join(dest, "usr/sbin/agentgated")).wait_ready()
    check(i.http("GET", "/healthz")[0] == 200, "installed agentgated over HTTPS")
    i.stop_clean()
    # Bad pairs: refused at start, exit 2, naming the file.
    other = os.path.join(TMP, "other.key")
    check(openssl("genpkey", "-algorithm", "RSA", "-out", other).returncode == 0, "genpkey")
    for args, want in ((["--tls-cert", crt, "--tls-key", other], "does not belong"),
                       (["--tls-cert", crt], "go together"),
                       (["--tls-cert", crt, "--tls-key", os.path.join(TMP, "none.key")],
                        "none.key"),
                       (["--tls-cert", key, "--tls-key", key], "certificate")):
        b = Daemon("tlsbad", args)
        try:
            rc = b.proc.wait(20)
        except subprocess.TimeoutExpired:
            b.stop()
            raise Fail("%r: still running" % args)
        check(rc == 2 and want in b.log_text(), "%r: exit %d, log %s" % (args, rc, b.log_text()))
        shutil.rmtree(b.state, ignore_errors=True)


CASES = [
    ("t_handshake", "handshake 101 with the right Sec-WebSocket-Accept, connection_success; "
                    "plain GET /v1/stream is 426"),
    ("t_auth", "no token 401, malformed/expired/other key 401, no stream:read 403; "
               "?token= and Authorization header accepted"),
    ("t_query_topics", "?topics=a,b: subscribed replies in order; unknown topic or bad agent "
                       "name: 400 naming it"),
    ("t_filtering", "rating.global gets every rating, rating.agent.X only X's, with the new "
                    "rate, mean, count; duplicates not pushed"),
    ("t_subscribe_messages", "subscribe/unsubscribe messages; errors for bad JSON, action, "
                             "topic; the connection stays"),
    ("t_bucket_updates", "bucket.agent.X: tokens, capacity, rate, pps; at most one a second"),
    ("t_limits", "--stream-max-per-ip: 429 with Retry-After, room again after a close; "
                 "--stream-max-clients: 503, HTTP still served"),
    ("t_slow_client", "a client that does not read is cut off (1008 or closed, metric); a fast "
                      "one gets all 30000 updates in order"),
    ("t_ping", "--stream-ping: idle clients are pinged"),
    ("t_close_codes", "client close code echoed; binary 1003; over 4096 bytes 1009"),
    ("t_shutdown", "SIGTERM: clients get 1001, exit 0, no sanitizer report"),
    ("t_tls", "--tls-cert/--tls-key: HTTPS and WSS, no plaintext, no TLS 1.1, also from the "
              "make install tree; bad key pairs exit 2 naming the problem"),
]


def setup():
    global ADMIN, STREAM, WRITE
    with open(KEY, "w") as f:
        f.write("s" * 40 + "\n")
    ADMIN = token("agents:admin metrics:read")
    STREAM = token("stream:read")
    WRITE = token("ratings:write")
    # Auth on for "main": a key on a loopback listener turns it on.
    Daemon("main", ["--auth-key-file", KEY, "--stream-max-per-ip", "4"]).wait_ready()
    # The others without (loopback, no key). Pings every 300 ms on "full"
    # only: a client that does not read leaves pings unanswered, and CivetWeb
    # closes it after five, before the slow-client cut could be seen.
    Daemon("full", ["--stream-max-clients", "2", "--stream-ping", "300ms"]).wait_ready()
    Daemon("slow", ["--stream-queue", "4096", "--stream-max-lag", "1s"]).wait_ready()


def teardown():
    for d in daemons.values():
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
        shutil.rmtree(d.pin, ignore_errors=True)
    shutil.rmtree(TMP, ignore_errors=True)


def main():
    if os.geteuid() != 0 or not os.path.isdir(BPFFS):
        print("1..0 # SKIP needs root and AG_TEST_BPFFS (a bpffs)")
        return 77
    if not os.access(DAEMON, os.X_OK):
        print("1..0 # SKIP %s not built" % DAEMON)
        return 77
    only = os.environ.get("AG_TEST_ONLY", "").split()
    print("1..%d" % len(CASES))
    failed = 0
    t_start = time.monotonic()
    try:
        setup()
    except Fail as e:
        diag("setup: %s" % e)
        teardown()
        for i, (name, desc) in enumerate(CASES, 1):
            print("not ok %d - %s" % (i, desc))
        return 1
    try:
        for i, (name, desc) in enumerate(CASES, 1):
            if only and name not in only:
                print("ok %d - %s # SKIP not in AG_TEST_ONLY" % (i, desc))
                continue
            t0 = time.monotonic()
            try:
                globals()[name]()
                print("ok %d - %s" % (i, desc))
            except (Fail, OSError, ValueError, KeyError, TypeError, Closed) as e:
                failed += 1
                print("not ok %d - %s" % (i, desc))
                diag("%s: %s: %s" % (name, type(e).__name__, e))
            if time.monotonic() - t0 > 5:
                diag("%s took %.0f s" % (name, time.monotonic() - t0))
            sys.stdout.flush()
    finally:
        teardown()
    print("# %d of %d failed, %.0f s" % (failed, len(CASES), time.monotonic() - t_start))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
