# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Authentication: refused starts, 401, 403, scopes, audit subjects, key
reloads (daemons on 0.0.0.0 with an HS256 key; JWTs from agtest.jwt)."""
import base64
import json
import os
import signal
import socket
import time
from collections import namedtuple

from agtest import case, check, expect, expect_error, fixture, has, jcheck, rawhttp, run_daemon
from agtest.api import Client
from agtest.daemon import daemon_argv
from agtest.jwt import token

ALL_SCOPES = "ratings:write agents:admin stream:read metrics:read"
Auth = namedtuple("Auth", "d key")


def new_key(path, size=40):
    """Writes a fresh key of size base64 characters (no newline) to path."""
    with open(path, "wb") as f:
        f.write(base64.b64encode(os.urandom(60))[:size])
    return path


def open_daemon(env, name, *args, **kw):
    """A daemon listening on every address (0.0.0.0, so it needs a key), started."""
    d = env.daemon(name, *args, **kw)
    d.listen = "0.0.0.0:%d" % d.port
    return d.start()


def auth_start(env, name):
    key = new_key(env.path(env.unique(name) + ".key"))
    return Auth(open_daemon(env, name, "--auth-key-file", key), key)


def bearer(t):
    return {"Authorization": "Bearer " + t}


def tok(key, scope=None, **claims):
    """A token for sub "x" expiring in 10 minutes, with scope (a string) and claims."""
    c = {"sub": "x", "exp": "NOW+600"}
    if scope is not None:
        c["scope"] = scope
    c.update(claims)
    return token(key, c)


@fixture
def auth_daemon(env):
    """The auth daemon the read-only cases share (none of them creates an agent)."""
    a = auth_start(env, "auth")
    yield a
    a.d.stop()


@fixture(scope="case")
def auth_fresh(env):
    """An auth daemon of the case's own: no agents, a key it may rotate."""
    a = auth_start(env, "authf")
    yield a
    a.d.stop()


@case("non-loopback --listen without --auth-key-file (IPv4 or IPv6): exit 2; short or "
      "missing key: exit 2; [::1] served without a key")
def t_auth_refuse_start(env):
    pin, st, listen = env.daemon_places("refuse")
    port = int(listen.rsplit(":", 1)[1])

    def refused(listen, *extra):
        return run_daemon(env, daemon_argv(env.san, pin, st, listen, extra=extra)[1:], 2)

    for l in ["0.0.0.0:%d" % port, "[::]:%d" % port, "192.0.2.1:%d" % port,
              "[2001:db8::1]:%d" % port]:
        has(refused(l), "refusing to serve %s without authentication" % l, "--auth-key-file")
    # A bare port (every address) is refused too, naming it.
    has(refused(str(port)), str(port))
    check(not os.path.exists(pin), "refused start created %s" % pin)
    # A key file too short for HS256, or missing.
    short = new_key(env.path(env.unique("short") + ".key"), 20)
    has(refused("0.0.0.0:%d" % port, "--auth-key-file", short), "at least 32")
    has(refused("127.0.0.1:%d" % port, "--auth-key-file", env.path("no-such.key")),
        "no-such.key")
    # An IPv6 loopback listener: served without a key.
    d = env.daemon("v6", listen="[::1]:%d" % port).start(wait=False)
    c = Client("http://[::1]:%d" % port, timeout=2)
    deadline = time.monotonic() + 20
    while True:
        try:
            r = c.get("/readyz")
            if r.status == 200:
                break
        except OSError:
            pass
        check(time.monotonic() < deadline and d.alive(), "no answer on [::1]:%d" % port,
              d.log_tail())
        time.sleep(0.1)
    expect(c.get("/healthz"), 200, 'd == {"status": "ok"}')
    d.stop()


@case("auth on 0.0.0.0 with a 40-byte key: /healthz and /readyz need no token")
def t_auth_start(auth_daemon):
    d, key = auth_daemon
    check(os.path.getsize(key) == 40, "key file is not 40 bytes")
    expect(d.api.get("/healthz"), 200, 'd == {"status": "ok"}')
    expect(d.api.get("/readyz"), 200, 'd == {"status": "ready"}')
    expect(d.api.get("/healthz", headers={"Authorization": "Bearer garbage"}), 200)


def expect_401(d, headers=None):
    """PUT /v1/agents/au-x is refused with 401 and the Bearer challenge."""
    r = d.api.put("/v1/agents/au-x", {"rate": 5}, headers=headers)
    expect_error(r, 401, "unauthorized")
    check(r.header("WWW-Authenticate") == 'Bearer realm="agentgate"',
          "WWW-Authenticate: %r" % r.header("WWW-Authenticate"), r.describe())


@case("missing, malformed, alg none, expired, no exp, wrong key, HS512, tampered, nbf: 401")
def t_auth_401(env, auth_daemon):
    d, key = auth_daemon
    wrong = new_key(env.path(env.unique("wrong") + ".key"))
    expect_401(d)
    expect_401(d, {"Authorization": "Basic dXNlcjpwYXNz"})
    expect_401(d, {"Authorization": "Bearer"})
    expect_401(d, bearer("not.a.jwt"))
    for t in (token(key, {"sub": "x", "exp": "NOW+600", "scope": ALL_SCOPES}, alg="none"),
              tok(key, ALL_SCOPES, exp="NOW-60"),
              token(key, {"sub": "x", "scope": ALL_SCOPES}),
              tok(wrong, ALL_SCOPES),
              token(key, {"sub": "x", "exp": "NOW+600", "scope": ALL_SCOPES}, alg="HS512"),
              token(key, {"sub": "x", "exp": "NOW+600", "scope": "metrics:read"}, tamper=True),
              tok(key, ALL_SCOPES, nbf="NOW+3600")):
        expect_401(d, bearer(t))
    # Every route behind a scope.
    for route in ("GET /v1/agents", "GET /v1/agents/au-x", "POST /v1/ratings", "GET /v1/rules",
                  "GET /metrics", "POST /v1/agents/au-x/consume", "GET /bucket/au-x",
                  "POST /rate"):
        m, p = route.split(" ")
        expect_error(d.api.request(m, p), 401, "unauthorized")
    # Nothing was changed by the refused requests.
    expect_error(d.client(tok(key, "agents:admin")).get("/v1/agents/au-x"), 404, "not_found",
                 "au-x")


@case("a valid token without the route's scope: 403")
def t_auth_403(auth_daemon):
    d, key = auth_daemon
    c = d.client(tok(key, "metrics:read ratings:write"))
    expect_error(c.put("/v1/agents/au-x", {"rate": 5}), 403, "forbidden", "agents:admin")
    c = d.client(tok(key, scopes=["agents:admin", "stream:read"]))
    expect_error(c.post("/v1/ratings", {"agent": "au-x", "score": 5}), 403, "forbidden",
                 "ratings:write")
    c = d.client(tok(key, "ratings:write"))
    expect_error(c.get("/metrics"), 403, "forbidden")
    expect_error(c.get("/v1/agents"), 403, "forbidden")
    expect_error(d.client(tok(key, "other:thing")).get("/v1/rules"), 403, "forbidden")
    expect_error(d.client(tok(key, "agents:admin")).get("/v1/agents/au-x"), 404, "not_found",
                 "au-x")


@case("a request refused 401 or answered without reading its body, its Content-Length "
      "holding a request with an admin token, or ending in a prefix for the next client's "
      "request: the answer closes the connection, nothing hidden runs")
def t_auth_unread_body(auth_fresh):
    d, key = auth_fresh
    admin = tok(key, "agents:admin")
    c = d.client(admin)
    expect(c.put("/v1/agents/au-victim", {"rate": 5}), 201)
    port = int(d.listen.rsplit(":", 1)[1])
    hidden = ("DELETE /v1/agents/au-victim HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
              "Content-Length: 0\r\n\r\n" % admin).encode()
    for opener, status in ((b"POST /v1/ratings", 401), (b"GET /healthz", 200),
                           (b"PUT /v1/agents/au-other", 401)):
        req = opener + b" HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(hidden) + hidden
        jcheck(rawhttp.send("127.0.0.1", port, req, 5), 'd["statuses"] == [%d]' % status,
               'd["closed"]', '"Connection: close" in d["headers"]', what="%s: " % opener)
        expect(c.get("/v1/agents/au-victim"), 200)
    # A prefix: the body ends mid-head, so that the next request on the
    # connection (a client's own, with its token) would complete it.
    prefix = b"DELETE /v1/agents/au-victim HTTP/1.1\r\nX-Swallow: "
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(prefix)
                  + prefix)
        time.sleep(0.2)
        try:
            s.sendall(("GET /v1/agents/au-x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
                       "\r\n" % admin).encode())
        except OSError:
            pass  # already closed: as it should be
        raw, closed = rawhttp.read_rest(s, b"", time.monotonic(), 5)
    finally:
        s.close()
    status, _, headers, statuses = rawhttp.parse(raw)
    check(statuses == [200] and closed, "prefix: %s, closed %s" % (statuses, closed))
    expect(c.get("/v1/agents/au-victim"), 200)


def grant_scopes(d, key):
    """The scope string and the scopes array grant their routes; leaves
    agent au-ok at rate 17, created and updated by subject "x"."""
    c = d.client(tok(key, "metrics:read"))
    r = c.get("/metrics")
    check(r.status == 200, "expected status 200", r.describe())
    expect(c.get("/v1/agents"), 200, 'd["agents"] == []')
    c = d.client(tok(key, "ratings:write agents:admin"))
    expect(c.put("/v1/agents/au-ok", {"rate": 5}), 201, 'd["rate"] == 5')
    expect(c.post("/v1/ratings", {"agent": "au-ok", "score": 5}), 200, 'd["applied"] == 1')
    c = d.client(tok(key, scopes=["agents:admin"]))
    expect(c.put("/v1/agents/au-ok", {"rate": 7}), 200, 'd["rate"] == 7')
    c = d.client(tok(key, scopes=["ratings:write"]))
    expect(c.post("/v1/ratings", {"agent": "au-ok", "score": 4}), 200,
           'd["agents"][0]["rate"] == 17')
    expect(c.post("/v1/agents/au-ok/consume", {"tokens": 1}), 200, 'd["allowed"] is True')


@case("scope string and scopes array grant their routes")
def t_auth_scopes_ok(auth_fresh):
    grant_scopes(*auth_fresh)


@case("audit.log subject is the token's sub")
def t_auth_audit_subject(auth_fresh):
    d, key = auth_fresh
    grant_scopes(d, key)
    c = d.client(tok(key, "agents:admin", sub="alice@example.com"))
    expect(c.put("/v1/agents/au-sub", {"rate": 9}), 201)
    c = d.client(tok(key, "agents:admin", sub="bob"))
    expect(c.put("/v1/agents/au-sub", {"rate": 11}), 200)
    expect(c.post("/v1/rules", {"prefix": "10.99.0.0/16", "agent": "au-sub"}), 201)
    with open(os.path.join(d.state, "audit.log")) as f:
        log = [json.loads(line) for line in f]

    def of(agent, kind):
        return [l for l in log if l["agent"] == agent and l["action"].startswith(kind)]
    got = [(l["subject"], l["action"], l["after"]["rate"]) for l in of("au-sub", "agent.")]
    check(got == [("alice@example.com", "agent.create", 9), ("bob", "agent.update", 11)],
          "au-sub agent entries: %s" % got)
    got = [(l["subject"], l["action"]) for l in of("au-sub", "rule.")]
    check(got == [("bob", "rule.add")], "au-sub rule entries: %s" % got)
    got = [l["subject"] for l in log if l["agent"] == "au-ok"]
    check(got == ["x", "x"], "au-ok subjects: %s" % got)


@case("SIGHUP re-reads the key file: old tokens 401, new ones 200")
def t_auth_key_rotation(auth_fresh):
    d, key = auth_fresh
    grant_scopes(d, key)
    old = tok(key, "agents:admin")
    new_key(key + ".new")
    os.replace(key + ".new", key)
    n = d.log().count("settings reloaded")
    d.signal(signal.SIGHUP)
    d.wait_log("settings reloaded", count=n + 1)
    expect_error(d.client(old).get("/v1/agents/au-ok"), 401, "unauthorized")
    expect(d.client(tok(key, "agents:admin")).get("/v1/agents/au-ok"), 200, 'd["rate"] == 17')


@case("SIGHUP dropping the key of a non-loopback listener is refused; auth stays on")
def t_auth_reload_keeps_auth(env):
    key = new_key(env.path(env.unique("authcfg") + ".key"))
    cfg = env.path(env.unique("authcfg") + ".conf")
    with open(cfg, "w") as f:
        f.write("auth-key-file = %s\n" % key)
    d = open_daemon(env, "authcfg", config=cfg)
    expect_error(d.api.put("/v1/agents/ar1", {}), 401, "unauthorized")
    # A reload that would drop the key on a non-loopback listener is refused.
    n = d.log().count("reload failed")
    with open(cfg, "w") as f:
        f.write("# no key\n")
    d.signal(signal.SIGHUP)
    d.wait_log("reload failed", count=n + 1)
    expect_error(d.api.put("/v1/agents/ar1", {}), 401, "unauthorized")
    expect_error(d.api.get("/v1/agents"), 401, "unauthorized")
    d.stop()
