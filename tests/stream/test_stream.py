#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""tests/stream: GET /v1/stream against the real daemon (the sanitized
build), with real WebSocket clients (agtest.ws) and real ratings over HTTP.

Usage: test_stream.py BUILD_DIR   (TAP, as root; tests/lib/agtest: AG_TEST_ONLY=REGEX
runs some cases, AG_TEST_SHUFFLE=SEED in a random order, AG_TEST_KEEP=1 keeps the logs)

Cases: handshake and welcome; auth refusals (no token, bad, wrong scope)
and both token styles; ?topics= and subscribe/unsubscribe messages; topic
filtering with exact rating data; bucket updates at most once a second;
per-address and total connection limits; a slow client cut off while a
fast one receives every update; pings; close codes (client close, binary,
oversized, shutdown); TLS: HTTPS and WSS with a certificate made by
openssl, no plaintext, bad key pairs refused at start.

Three daemons are shared (fixtures "main", "full", "slow"); a case closes
the stream clients it opens (and the "connect" fixture drops those left
when a case fails), so the connection limits hold for the next case.
"""
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import types
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from agtest import Fail, case, check, diag, fixture, run, wait_for  # noqa: E402
from agtest.jwt import token  # noqa: E402
from agtest.prom import Metrics  # noqa: E402
from agtest.ws import WS, Closed  # noqa: E402


def claims(scope, exp="NOW+600"):
    return {"sub": "stream-test", "exp": exp, "scope": scope}


@fixture
def auth(env):
    """The key of "main" and tokens signed with it."""
    key = env.path("auth.key")
    with open(key, "w") as f:
        f.write("s" * 40 + "\n")
    return types.SimpleNamespace(
        key=key, admin=token(key, claims("agents:admin metrics:read")),
        stream=token(key, claims("stream:read")), write=token(key, claims("ratings:write")))


@fixture
def main(env, auth):
    """Auth on (a key on a loopback listener turns it on), 4 clients per address."""
    d = env.daemon("main", "--auth-key-file", auth.key, "--stream-max-per-ip", "4")
    yield d.start(timeout=15)
    d.stop()


@fixture
def full(env):
    """No auth; 2 clients in all; pings every 300 ms (on this daemon only: a
    client that does not read leaves pings unanswered, and the server closes it
    after five, before the slow-client cut could be seen)."""
    d = env.daemon("full", "--stream-max-clients", "2", "--stream-ping", "300ms")
    yield d.start(timeout=15)
    d.stop()


SLOW_ARGS = ("--stream-queue", "4096", "--stream-max-lag", "1s")


@fixture
def slow(env):
    d = env.daemon("slow", *SLOW_ARGS)
    yield d.start(timeout=15)
    d.stop()


@fixture(scope="case")
def connect():
    """connect(daemon, path="/v1/stream", **kw): a WS client of the daemon
    (wss:// when it serves TLS); the ones still open when the case ends are
    dropped."""
    made = []

    def ws(d, path="/v1/stream", **kw):
        c = WS.connect("127.0.0.1", d.port, path, cafile=d.tls_ca, **kw)
        made.append(c)
        return c
    yield ws
    for c in made:
        c.drop()


def metric(d, name, tok=None, **labels):
    """One sample of the daemon's /metrics (None when absent)."""
    r = d.client(tok).get("/metrics")
    check(r.status == 200, "GET /metrics: %d %s" % (r.status, r.text[:300]))
    return Metrics(r.text).get(name, **labels)


def no_clients(d, tok=None):
    """Waits until the daemon has no stream client (of an earlier case)."""
    wait_for(lambda: metric(d, "agentgate_stream_clients", tok) == 0, 10,
             what="no stream clients on daemon %s" % d.name)


def post_ratings(d, ratings, tok=None):
    r = d.client(tok).post("/v1/ratings", ratings)
    check(r.status == 200, "POST /v1/ratings: %d %s" % (r.status, r.text))
    return r.json()


def welcome(c):
    m = c.recv_json(5)
    check(m == {"type": "connection_success"}, "first message: %r" % (m,))


def subscribed(m):
    return m["type"] == "subscribed"


# ---- cases ---------------------------------------------------------------------------

@case("handshake 101 with the right Sec-WebSocket-Accept, connection_success; "
      "plain GET /v1/stream is 426")
def t_handshake(main, auth, connect):
    c = connect(main, "/v1/stream?token=" + auth.stream)
    check(c.status == 101, "status %d %s" % (c.status, c.body))
    check(c.accept_ok, "Sec-WebSocket-Accept does not match the key")
    welcome(c)
    check(c.close(1000) == 1000, "close 1000 not echoed")
    r = main.client(auth.stream).get("/v1/stream")
    check(r.status == 426 and r.json()["error"] == "upgrade_required",
          "plain GET /v1/stream: %d %s" % (r.status, r.text))


@case("no token 401, malformed/expired/other key 401, no stream:read 403; "
      "?token= and Authorization header accepted")
def t_auth(env, main, auth, connect):
    c = connect(main)
    check(c.status == 401 and json.loads(c.body)["error"] == "unauthorized",
          "no token: %d %s" % (c.status, c.body))
    check("?token=" in json.loads(c.body)["message"], "401 names ?token=: " + c.body)
    c = connect(main, "/v1/stream?token=not.a.jwt")
    check(c.status == 401, "malformed token: %d" % c.status)
    c = connect(main, "/v1/stream?token=" + token(auth.key, claims("stream:read", "NOW-60")))
    check(c.status == 401, "expired token: %d" % c.status)
    wrong = env.path("wrong.key")
    with open(wrong, "w") as f:
        f.write("w" * 40 + "\n")
    c = connect(main, "/v1/stream?token=" + token(wrong, claims("stream:read")))
    check(c.status == 401, "token of another key: %d" % c.status)
    c = connect(main, "/v1/stream?token=" + auth.admin)
    check(c.status == 403 and "stream:read" in json.loads(c.body)["message"],
          "token without stream:read: %d %s" % (c.status, c.body))
    c = connect(main, headers={"Authorization": "Bearer " + auth.stream})
    check(c.status == 101, "Authorization header: %d %s" % (c.status, c.body))
    welcome(c)
    c.close()


@case("?topics=a,b: subscribed replies in order; unknown topic or bad agent "
      "name: 400 naming it")
def t_query_topics(main, auth, connect):
    c = connect(main, "/v1/stream?token=%s&topics=rating.global,bucket.agent.sa%%2Done"
                % auth.stream)
    check(c.status == 101, "status %d" % c.status)
    msgs = c.collect(3, until=lambda m: m.get("topic") == "bucket.agent.sa-one")
    check(msgs == [{"type": "connection_success"},
                   {"type": "subscribed", "topic": "rating.global"},
                   {"type": "subscribed", "topic": "bucket.agent.sa-one"}], "replies: %r" % msgs)
    c.close()
    c = connect(main, "/v1/stream?token=%s&topics=rating.global,rating.agents.x" % auth.stream)
    check(c.status == 400 and "rating.agents.x" in json.loads(c.body)["message"],
          "unknown topic: %d %s" % (c.status, c.body))
    # The message states the name alphabet as ag_name_check() has it.
    check("[A-Za-z0-9._:-]" in json.loads(c.body)["message"],
          "unknown topic: alphabet not stated with ':': %s" % c.body)
    c = connect(main, "/v1/stream?token=%s&topics=rating.agent.%s" % (auth.stream, "x" * 65))
    check(c.status == 400, "agent name of 65: %d" % c.status)


@case("rating.global gets every rating, rating.agent.X only X's, with the new "
      "rate, mean, count; duplicates not pushed")
def t_filtering(main, auth, connect):
    for a in ("fa", "fb"):
        r = main.client(auth.admin).put("/v1/agents/" + a, {"rate": 100, "alpha": 10})
        check(r.status in (200, 201), "PUT %s: %d %s" % (a, r.status, r.text))
    g = connect(main, "/v1/stream?token=%s&topics=rating.global" % auth.stream)
    a = connect(main, "/v1/stream?token=%s&topics=rating.agent.fa" % auth.stream)
    b = connect(main, "/v1/stream?token=%s&topics=rating.agent.fb" % auth.stream)
    for c in (g, a, b):
        check(len(c.collect(3, until=subscribed)) == 2, "welcome")
    post_ratings(main, [{"id": "f1", "agent": "fa", "score": 5, "user": "u1",
                         "ts": 1700000000000},
                        {"id": "f2", "agent": "fb", "score": 1},
                        {"id": "f3", "agent": "fa", "score": 4}], auth.write)
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
    post_ratings(main, [{"id": "f1", "agent": "fa", "score": 5}], auth.write)
    check(g.collect(1) == [], "a duplicate was pushed")
    for c in (g, a, b):
        c.close()


@case("subscribe/unsubscribe messages; errors for bad JSON, action, "
      "topic; the connection stays")
def t_subscribe_messages(main, auth, connect):
    c = connect(main, "/v1/stream?token=" + auth.stream)
    welcome(c)
    c.send_json({"action": "subscribe", "topic": "rating.agent.sm"})
    check(c.recv_json(3) == {"type": "subscribed", "topic": "rating.agent.sm"}, "subscribed")
    post_ratings(main, [{"id": "s1", "agent": "sm", "score": 5}], auth.write)
    m = c.recv_json(3)
    check(m and m["type"] == "rating_update" and m["data"]["id"] == "s1", "update: %r" % m)
    c.send_json({"action": "unsubscribe", "topic": "rating.agent.sm"})
    check(c.recv_json(3) == {"type": "unsubscribed", "topic": "rating.agent.sm"}, "unsubscribed")
    post_ratings(main, [{"id": "s2", "agent": "sm", "score": 5}], auth.write)
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


@case("bucket.agent.X: tokens, capacity, rate, pps; at most one a second")
def t_bucket_updates(main, auth, connect):
    main.client(auth.admin).put("/v1/agents/bk", {"rate": 50, "burst": 200})
    c = connect(main, "/v1/stream?token=%s&topics=bucket.agent.bk" % auth.stream)
    c.collect(2, until=subscribed)
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


@case("bucket.parent.P: a parent's tokens, capacity, rate, pps, quota and refusals by reason; "
      "the agent topic of the same name gets nothing of it; a parent that goes stops them")
def t_parent_updates(main, auth, connect):
    adm = main.client(auth.admin)
    for r, want in ((adm.put("/v1/parents/sp-org", {"rate": 40, "burst": 80, "quota":
                                                    {"limit": 1000, "window": "hour"}}), 201),
                    (adm.put("/v1/agents/sp-a", {"rate": 10, "parent": "sp-org"}), 201),
                    (main.client(auth.write).post("/v1/agents/sp-a/consume", {"tokens": 3}),
                     200)):
        check(r.status == want, r.describe())
    c = connect(main, "/v1/stream?token=%s&topics=bucket.parent.sp-org,bucket.agent.sp-org"
                % auth.stream)
    c.collect(3, until=lambda m: m.get("topic") == "bucket.agent.sp-org")
    msgs = c.collect(2.6)
    ups = [m for m in msgs if m["type"] == "bucket_update"]
    check(ups and all(m["topic"] == "bucket.parent.sp-org" for m in ups),
          "updates: %r" % msgs)
    u = ups[-1]["data"]
    check(u["parent"] == "sp-org" and u["rate"] == 40.0 and u["capacity"] == 80 and
          0 <= u["tokens"] <= 80 and u["quota"] == {"limit": 1000, "window": "hour", "used": 3,
                                                    "remaining": 997} and
          u["refused"] == {"rate": 0, "quota": 0, "above": 0}, "update: %r" % u)
    check(set(u) == {"parent", "tokens", "capacity", "rate", "passed_pps", "dropped_pps",
                     "passed", "dropped", "quota", "refused", "ts"}, "fields: %r" % u)
    adm.put("/v1/agents/sp-a", {"parent": None})
    adm.delete("/v1/parents/sp-org")
    time.sleep(0.3)
    later = [m for m in c.collect(2.2) if m["type"] == "bucket_update"]
    check(not later, "updates for a parent that is gone: %r" % later)
    c.close()


@case("--stream-max-per-ip: 429 with Retry-After, room again after a close; "
      "--stream-max-clients: 503, HTTP still served")
def t_limits(main, full, auth, connect):
    no_clients(main, auth.admin)    # --stream-max-per-ip 4
    conns = [connect(main, "/v1/stream?token=" + auth.stream) for _ in range(4)]
    check(all(c.status == 101 for c in conns), "four clients: %r" % [c.status for c in conns])
    for c in conns:
        welcome(c)
    extra = connect(main, "/v1/stream?token=" + auth.stream)
    check(extra.status == 429 and extra.headers.get("retry-after") == "5" and
          "--stream-max-per-ip" in json.loads(extra.body)["message"],
          "fifth from one address: %d %r %s" % (extra.status, extra.headers, extra.body))
    conns.pop().close()
    time.sleep(0.3)
    again = connect(main, "/v1/stream?token=" + auth.stream)
    check(again.status == 101, "after one left: %d" % again.status)
    conns.append(again)
    for c in conns:
        c.close()
    # --stream-max-clients 2 on another daemon: the third gets 503.
    no_clients(full)
    cs = [connect(full) for _ in range(2)]
    check([c.status for c in cs] == [101, 101], "two clients: %r" % [c.status for c in cs])
    # The welcome comes once a client is registered; a handshake racing a
    # registration gets 101 and then close code 1013 (docs/STREAM.md).
    for c in cs:
        welcome(c)
    c3 = connect(full)
    check(c3.status == 503 and "--stream-max-clients" in json.loads(c3.body)["message"],
          "third client: %d %s" % (c3.status, c3.body))
    # The HTTP API still answers: stream clients hold workers of their own.
    check(full.api.get("/healthz").status == 200, "healthz with the stream full")
    for c in cs:
        c.close()
    time.sleep(0.3)
    check(metric(full, "agentgate_stream_connections_total", result="refused_full") == 1,
          "refused_full metric")


@case("a client that does not read is cut off (1008 or closed, metric); a fast "
      "one gets all 30000 updates in order")
def t_slow_client(slow, connect):
    d = slow  # --stream-queue 4096 --stream-max-lag 1s
    d.api.put("/v1/agents/sl", {"rate": 100})
    slow_c = connect(d, "/v1/stream?topics=rating.global", rcvbuf=4096)
    fast = connect(d, "/v1/stream?topics=rating.global")
    check(slow_c.status == 101 and fast.status == 101, "handshakes")
    fast.collect(2, until=subscribed)
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
        # At most two batches ahead of the fast reader: a Python client
        # reads slower than the daemon applies batches of 500, and a
        # client that falls --stream-queue behind has updates of one
        # topic coalesced (docs/STREAM.md), which is not this case's point.
        end = time.monotonic() + 20
        while len(got) < k - 1000 and not errors and time.monotonic() < end:
            time.sleep(0.005)
        post_ratings(d, [{"id": "r%d" % i, "agent": "sl", "score": 3, "user": pad}
                         for i in range(k, k + 500)])
    reader.join(60)
    check(not errors, "; ".join(errors))
    check(got == ["r%d" % i for i in range(total)],
          "fast client got %d of %d (in order: %s)" % (
              len(got), total, got == sorted(got, key=lambda x: int(x[1:]))))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not metric(d, "agentgate_stream_slow_disconnects_total"):
        time.sleep(0.2)
    check(metric(d, "agentgate_stream_slow_disconnects_total") == 1, "slow client not cut")
    # What the slow client reads now ends with the cut: a close frame 1008
    # naming the reason, or the bare end of the connection.
    n = 0
    try:
        while slow_c.recv_text(5) is not None:
            n += 1
    except Closed as e:
        check(e.code in (1008, None), "slow client close code %s %s" % (e.code, e.reason))
    check(slow_c.closed is not None, "slow client still connected after %d messages" % n)
    check(n < total, "slow client received all %d updates" % n)
    fast.send_json({"action": "subscribe", "topic": "rating.agent.sl"})
    m = fast.recv_json(3)
    check(m == {"type": "subscribed", "topic": "rating.agent.sl"}, "fast client after: %r" % m)
    fast.close()
    check(metric(d, "agentgate_stream_clients") == 0, "clients left")


@case("--stream-ping: idle clients are pinged")
def t_ping(full, connect):
    c = connect(full)  # --stream-ping 300ms
    welcome(c)
    c.collect(1.5)
    check(c.pings >= 2, "pings in 1.5 s idle: %d" % c.pings)
    check(c.close(1000) == 1000, "close after pings")


@case("client close code echoed; binary 1003; over 4096 bytes 1009")
def t_close_codes(slow, connect):
    c = connect(slow)
    welcome(c)
    check(c.close(4001, "bye") == 4001, "client close code not echoed")
    c = connect(slow)
    welcome(c)
    c.send_binary(b"\x00\x01")
    try:
        c.recv_text(3)
        raise Fail("binary message: no close")
    except Closed as e:
        check(e.code == 1003, "binary message: close %s" % e.code)
    c = connect(slow)
    welcome(c)
    c.send_text(json.dumps({"action": "subscribe", "topic": "rating.global", "pad": "x" * 5000}))
    try:
        c.recv_text(3)
        raise Fail("oversized message: no close")
    except Closed as e:
        check(e.code == 1009, "oversized message: close %s" % e.code)


@case("SIGTERM: clients get 1001, exit 0, no sanitizer report")
def t_shutdown(env, connect):
    d = env.daemon("shutdown", *SLOW_ARGS).start(timeout=15)
    c = connect(d, "/v1/stream?topics=rating.global")
    c.collect(2, until=subscribed)
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    try:
        while c.recv_text(10) is not None:
            pass
        raise Fail("no close on shutdown")
    except Closed as e:
        check(e.code == 1001, "shutdown close code %s %s" % (e.code, e.reason))
    c.drop()
    d.stop()
    diag("daemon with a stream client stopped in %.2f s" % (time.monotonic() - t0))


def openssl(*args):
    return subprocess.run(["openssl"] + list(args), capture_output=True, text=True)


def make_cert(env):
    """A self-signed certificate for 127.0.0.1: (cert, key)."""
    crt, key = env.path("tls.crt"), env.path("tls.key")
    r = openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1")
    check(r.returncode == 0, "openssl req: " + r.stderr)
    return crt, key


def no_plaintext_no_tls11(port):
    """No plain HTTP answer on the TLS port, and TLS 1.1 refused."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
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
        ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5)).close()
        raise Fail("a TLS 1.1 handshake succeeded")
    except (ssl.SSLError, OSError):
        pass


def installed_daemon(env):
    """agentgated as make install puts it (the TLS libraries found at
    ../lib/agentgate): its path."""
    dest = env.path("inst")
    r = subprocess.run(["make", "-s", "-C", env.root, "install", "OUTPUT=" + env.build,
                        "DESTDIR=" + dest, "PREFIX=/usr"], capture_output=True, text=True)
    check(r.returncode == 0, "make install: " + r.stdout + r.stderr)
    return os.path.join(dest, "usr/sbin/agentgated")


@case("--tls-cert/--tls-key: HTTPS and WSS, no plaintext, no TLS 1.1, also from the "
      "make install tree; bad key pairs exit 2 naming the problem")
def t_tls(env, connect):
    crt, key = make_cert(env)
    d = env.daemon("tls", "--tls-cert", crt, "--tls-key", key, tls_ca=crt).start(timeout=15)
    check("serving https://" in d.log(), "no https in the log")
    r = d.api.put("/v1/agents/tl", {"rate": 10})
    check(r.status == 201, "PUT over HTTPS: %d %s" % (r.status, r.text))
    c = connect(d, "/v1/stream?topics=rating.agent.tl")
    check(c.status == 101, "WSS handshake: %d" % c.status)
    c.collect(2, until=subscribed)
    r = d.api.post("/v1/ratings", {"id": "t1", "agent": "tl", "score": 5})
    check(r.status == 200, "rating over HTTPS: %d %s" % (r.status, r.text))
    m = c.recv_json(3)
    check(m and m["data"]["id"] == "t1" and m["data"]["rate"] == 30.0, "WSS update: %r" % m)
    check(c.close() == 1000, "WSS close")
    no_plaintext_no_tls11(d.port)
    d.stop()
    i = env.daemon("tlsinst", "--tls-cert", crt, "--tls-key", key, tls_ca=crt,
                   bin=installed_daemon(env)).start(timeout=15)
    check(i.api.get("/healthz").status == 200, "installed agentgated over HTTPS")
    i.stop()
    # Bad pairs: refused at start, exit 2, naming the file.
    other = env.path("other.key")
    check(openssl("genpkey", "-algorithm", "RSA", "-out", other).returncode == 0, "genpkey")
    for args, want in ((["--tls-cert", crt, "--tls-key", other], "does not belong"),
                       (["--tls-cert", crt], "go together"),
                       (["--tls-cert", crt, "--tls-key", env.path("none.key")], "none.key"),
                       (["--tls-cert", key, "--tls-key", key], "certificate")):
        b = env.daemon("tlsbad", *args).start(wait=False)
        rc = b.wait_exit(20)
        check(rc == 2 and want in b.log(), "%r: exit %d, log %s" % (args, rc, b.log()))
        b.san_clean()


if __name__ == "__main__":
    run(needs=("agentgated-san",))
