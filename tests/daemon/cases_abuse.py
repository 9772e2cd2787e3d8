# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Body limits, Expect: 100-continue, hostile clients (slow, too many
headers, deep JSON, unknown fields), request framing and agent names; the
last on a shared daemon with --request-timeout 1s (agtest.rawhttp sends the
bytes no well-behaved client sends)."""
import concurrent.futures
import http.client
import json
import socket
import threading
import time

from agtest import (case, check, expect, expect_agent, expect_error, expect_no_agent, fixture,
                    jcheck, rawhttp)
from agtest.api import Response

HOST = "127.0.0.1"


@fixture
def abuse_daemon(env):
    """The daemon the hostile clients share (each case on agents of its own)."""
    d = env.daemon("abuse", "--request-timeout", "1s", "--max-body", "2MiB").start()
    yield d
    d.stop()


# ---- 9. body limit --------------------------------------------------------------

def padded(size, text):
    """text (JSON) padded with spaces to exactly size bytes."""
    return (text + " " * (size - len(text))).encode()


def send_chunked(d, method, path, body):
    """METHOD PATH with a JSON body sent chunked (Transfer-Encoding: chunked)."""
    conn = http.client.HTTPConnection(HOST, d.port, timeout=15)
    try:
        conn.request(method, path, body=body, encode_chunked=True,
                     headers={"Content-Type": "application/json",
                              "Transfer-Encoding": "chunked"})
        r = conn.getresponse()
        return Response(method, d.url + path, r.status, r.reason, r.getheaders(), r.read())
    finally:
        conn.close()


@case("--max-body 1000: 413 with Content-Length and chunked; at the limit 200")
def t_body_limit(env):
    d = env.daemon("lim", "--max-body", "1000").start()
    rating5, rating4 = '[{"agent":"bl1","score":5}]', '[{"agent":"bl1","score":4}]'
    expect_error(d.api.post("/v1/ratings", padded(5000, rating5)), 413, "payload_too_large")
    expect_error(send_chunked(d, "POST", "/v1/ratings", padded(5000, rating5)), 413,
                 "payload_too_large")
    expect_error(d.api.post("/v1/ratings", padded(1001, rating5)), 413, "payload_too_large")
    expect_error(d.api.put("/v1/agents/bl2", padded(2000, '{"rate":5}')), 413,
                 "payload_too_large")
    expect_no_agent(d.api, "bl1")
    expect_no_agent(d.api, "bl2")
    # At the limit, and chunked under it: accepted.
    expect(d.api.post("/v1/ratings", padded(1000, rating5)), 200, 'd["applied"] == 1')
    expect(send_chunked(d, "POST", "/v1/ratings", padded(500, rating4)), 200,
           'd["applied"] == 1', 'd["agents"][0]["ratings"] == 2')
    expect(d.api.get("/healthz"), 200)
    d.stop()


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def read_head(s):
    data = b""
    while b"\r\n\r\n" not in data:
        c = s.recv(65536)
        if not c:
            break
        data += c
    return data


def read_all(s):
    rest = b""
    while True:
        try:
            c = s.recv(65536)
        except socket.timeout:
            return rest + b"(timeout)"
        if not c:
            return rest
        rest += c


def ask(port, method, path, body, version="1.1", expect="100-continue"):
    """Sends the head with Expect; waits for 100 Continue (HTTP/1.1 and
    100-continue only) before the body; (what came before the body, the rest)."""
    s = socket.create_connection((HOST, port), timeout=10)
    try:
        s.sendall(("%s %s HTTP/%s\r\nHost: t\r\nContent-Type: application/json\r\n"
                   "Content-Length: %d\r\nExpect: %s\r\nConnection: close\r\n\r\n"
                   % (method, path, version, len(body), expect)).encode())
        first = b""
        if version == "1.1" and expect == "100-continue":
            try:
                first = read_head(s)   # the body is not sent until this comes
            except socket.timeout:
                first = b"(nothing within 10 s)"
        if expect == "100-continue":
            s.sendall(body)
        return first, read_all(s)
    finally:
        s.close()


def continue_problems(port):
    bad = []
    body = json.dumps([{"id": "ex%d" % i, "agent": "ex1", "user": "u%d" % i, "score": 4}
                       for i in range(40)]).encode()          # over 1 KiB, as curl sends it
    for method, path, b, want in (("POST", "/v1/ratings", body, 200),
                                  ("PUT", "/v1/agents/ex2", b'{"rate":50}', 201),
                                  ("POST", "/v1/agents/ex2/consume", b'{"tokens":1}', 200)):
        first, rest = ask(port, method, path, b)
        status = b"HTTP/1.1 %d " % want
        if not first.startswith(CONTINUE):
            bad.append("%s %s: no 100 Continue before the body: %r" % (method, path, first[:80]))
        if not rest.startswith(status) and not first[len(CONTINUE):].startswith(status):
            bad.append("%s %s: final status not %d: %r" % (method, path, want,
                                                           (first + rest)[:120]))
    first, rest = ask(port, "POST", "/v1/ratings",
                      json.dumps({"agent": "ex3", "score": 5}).encode(), "1.0")
    if b"100 Continue" in rest or not rest.startswith(b"HTTP/1.1 200 "):
        bad.append("HTTP/1.0: %r" % rest[:120])
    first, rest = ask(port, "POST", "/v1/ratings", b"", expect="fancy-thing")
    if not rest.startswith(b"HTTP/1.1 417 ") or b"expectation_failed" not in rest:
        bad.append("Expect: fancy-thing: %r" % rest[:160])
    return bad


@case("200 clients posting single ratings at once with --queue-max 1 --threads 2: every one "
      "200 with its agent's rate (answered by the event loop, or by a worker once the queue "
      "is full), all applied exactly once; a daemon stopped with ratings in flight answers them")
def t_ratings_in_flight(env):
    d = env.daemon("inflight", "--queue-max", "1", "--threads", "2").start()
    for a in ("if-a", "if-b"):
        expect(d.api.put("/v1/agents/" + a, {"rate": 1000, "r_min": 1, "r_max": 100000}), 201)
    answers = []

    def post(i):
        try:
            r = d.api.post("/v1/ratings", {"id": "if-%d" % i, "score": 5, "user": "u%d" % i,
                                           "agent": "if-a" if i % 2 else "if-b"})
        except OSError as e:  # only once the daemon is stopping
            answers.append((None, str(e)))
            return
        answers.append((r.status, r.json() if r.status == 200 else r.text))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    bad = [a for a in answers if a[0] != 200 or a[1]["applied"] != 1 or
           a[1]["agents"][0]["ratings"] < 1]
    check(len(answers) == 200 and not bad, "%d answers, not 200 applied 1: %r" % (
        len(answers), bad[:3]))
    expect_agent(d.api, "if-a", 'd["ratings"] == 100')
    expect_agent(d.api, "if-b", 'd["ratings"] == 100')
    # The same ids again: duplicates, nothing applied.
    r = d.api.post("/v1/ratings", {"id": "if-1", "agent": "if-a", "score": 1, "user": "u1"})
    expect(r, 200, 'd["applied"] == 0', 'd["duplicates"] == 1')
    # SIGTERM while ratings are in flight: each gets its answer or a closed
    # connection, never a hang, and the daemon exits 0 (d.stop checks).
    answers.clear()
    threads = [threading.Thread(target=post, args=(1000 + i,)) for i in range(100)]
    for t in threads:
        t.start()
    d.stop()
    for t in threads:
        t.join(30)
    check(not any(t.is_alive() for t in threads), "a request hung across the stop")


@case("Expect: 100-continue: 100 Continue before the body on every body route, then the "
      "answer; none for HTTP/1.0; other expectations 417")
def t_expect_continue(env):
    # Expect: 100-continue (curl sends it for bodies over 1 KiB and waits a
    # second without an answer): "100 Continue" comes before the body is
    # sent, on every route with a body, then the final status; HTTP/1.0 gets
    # none; any other expectation is 417 and the connection closed, nothing
    # applied.
    d = env.daemon("exp").start()
    bad = continue_problems(d.port)
    check(not bad, "\n".join(bad))
    expect_agent(d.api, "ex1", 'd["ratings"] == 40')
    expect_agent(d.api, "ex3", 'd["ratings"] == 1')
    d.stop()


# ---- 10b. hostile clients (--request-timeout 1s) ----------------------------------

def raw_check(d, res, *exprs):
    """Checks on a rawhttp result, and the daemon still answers."""
    jcheck(res, *exprs)
    expect(d.api.get("/healthz"), 200)


@case("10 clients trickling headers: each cut off (400 JSON, closed) within the timeout; the "
      "API answers meanwhile")
def t_slow_headers(abuse_daemon):
    d = abuse_daemon
    # Ten clients trickling headers at once: each is cut off with a 400
    # (JSON) once its request is not complete after the timeout (1 s; the
    # bound asserted is generous), and the API answers meanwhile.
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        slow = [pool.submit(rawhttp.trickle_head, HOST, d.port) for _ in range(10)]
        time.sleep(0.3)
        expect(d.api.get("/healthz"), 200)
        results = [f.result() for f in slow]
    for res in results:
        raw_check(d, res, 'd["closed"]', 'd["seconds"] < 6', 'd["status"] == 400',
                  'err_ok(json.loads(d["body"]), "bad_request")',
                  '"--request-timeout" in d["body"]')


@case("a body trickling a byte at a time: 408 JSON, closed, within the timeout; nothing created")
def t_slow_body(abuse_daemon):
    d = abuse_daemon
    # A body sent a byte every 0.2 s: 408 once the timeout has passed,
    # connection closed; nothing created.
    res = rawhttp.trickle_body(HOST, d.port, "slowb1")
    raw_check(d, res, 'd["closed"]', 'd["seconds"] < 6', 'd["status"] == 408',
              'err_ok(json.loads(d["body"]), "request_timeout")')
    expect_no_agent(d.api, "slowb1")


def request_with_headers(n):
    """GET /healthz with n header fields in all (Host and Connection: close among them)."""
    return ("GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" +
            "".join("X-H%d: v\r\n" % i for i in range(n - 2)) + "\r\n").encode()


@case("63 header fields served; 64: 431; over 16 KiB of headers: refused in JSON and closed")
def t_header_limits(abuse_daemon):
    d = abuse_daemon
    raw_check(d, rawhttp.send(HOST, d.port, request_with_headers(63)), 'd["status"] == 200')
    # 64: over the limit of 63: 431.
    raw_check(d, rawhttp.send(HOST, d.port, request_with_headers(64)), 'd["closed"]',
              'd["status"] == 431', 'err_ok(json.loads(d["body"]), "header_fields_too_large")')
    # Request line and headers over 16 KiB: refused in JSON, closed.
    big = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    raw_check(d, rawhttp.send(HOST, d.port, big), 'd["closed"]', 'd["status"] in (400, 431)',
              '"16384 bytes" in d["body"]',
              'err_ok(json.loads(d["body"]), "bad_request" if d["status"] == 400 '
              'else "header_fields_too_large")')


def nested(n):
    """n levels of JSON arrays around a 1."""
    return "[" * n + "1" + "]" * n


@case("JSON nested 32 deep accepted, 33 refused naming the limit; 500000 deep: 400 (batch, "
      "NDJSON line, PUT)")
def t_json_depth(abuse_daemon):
    c = abuse_daemon.api
    # The tutorial's free-form metadata: 31 arrays inside the object are 32
    # levels, accepted; 33 refused before parsing, naming the limit.
    expect(c.put("/v1/agents/nest1", {"rate": 1000}), 201)
    rate = '{"agent_id":"nest1","event_type":"e","metadata":%s}'
    expect(c.post("/rate", rate % nested(31)), 200)
    expect_error(c.post("/rate", rate % nested(32)), 400, "bad_request", "nested deeper than 32")
    # A megabyte of brackets as ratings, as a policy, and one bad NDJSON line.
    deep = nested(500000) + "\n"
    expect(c.post("/v1/ratings", deep), 400, 'd["error"] == "bad_request"',
           '"nested deeper than 32" in d["message"]')
    expect(c.ndjson("/v1/ratings", '{"agent":"nest1","score":5}\n' + nested(40)), 400,
           'd["errors"][0]["index"] == 1')
    expect_error(c.put("/v1/agents/nest2", deep), 400, "bad_request", "nested deeper than 32")
    expect_no_agent(c, "nest2")
    expect_agent(c, "nest1", 'd["ratings"] == 0')


# Every route with a body, with an unknown field (agent uf-ag exists).
UNKNOWN_FIELD_BODIES = (
    ("PUT", "/v1/agents/uf1", '{"rate":5,"bogus":1}'),
    ("POST", "/v1/agents/uf-ag/drain", '{"tokens":1,"bogus":1}'),
    ("POST", "/v1/agents/uf-ag/consume", '{"tokens":1,"bogus":1}'),
    ("POST", "/v1/rules", '{"prefix":"10.1.0.0/16","agent":"uf-ag","bogus":1}'),
    ("DELETE", "/v1/rules", '{"prefix":"10.1.0.0/16","bogus":1}'),
    ("POST", "/bucket/uf1", '{"capacity":5,"bogus":1}'),
    ("POST", "/rate", '{"agent_id":"uf-ag","event_type":"e","bogus":1}'))


@case("unknown body fields on every body route and unknown query parameters: 400 naming them")
def t_unknown_fields(abuse_daemon):
    c = abuse_daemon.api
    # Every route with a body names an unknown field with 400 and changes
    # nothing; every route refuses query parameters it does not take.
    expect(c.put("/v1/agents/uf-ag", {"rate": 1000}), 201)
    expect(c.post("/v1/ratings", '{"agent":"uf1","score":5,"bogus":1}'), 400,
           'd["errors"] == [{"index": 0, "field": "", "reason": "unknown field \'bogus\'"}]')
    for m, p, body in UNKNOWN_FIELD_BODIES:
        expect_error(c.request(m, p, body), 400, "bad_request", "bogus")
    expect_no_agent(c, "uf1")
    for r in ("/v1/agents?limit=5&bogus=1", "/healthz?bogus", "/metrics?bogus=1",
              "/v1/agents/uf-ag?bogus=1", "/v1/rules?bogus=1"):
        expect_error(c.get(r), 400, "bad_request", "query 'bogus'")
    expect(c.get("/v1/agents?limit=5&after=a"), 200)


# ---- 10c. request framing and agent names -------------------------------------------

def shape_ok(sh, res):
    """res (rawhttp.send_shape) is what shape sh must get."""
    if sh == "pipelined":   # the control: well framed, so the request behind it runs
        jcheck(res, 'd["statuses"] == [200, 200]', what="shape %s: " % sh)
    elif sh in ("chunked", "chunk-trailer"):
        # The body is taken; the connection closes after a chunked body
        # (a trailer section is read and discarded; a proxy may keep it),
        # so nothing behind it runs.
        jcheck(res, 'd["statuses"] == [200]', 'd["closed"]',
               '"Connection: close" in d["headers"]', what="shape %s: " % sh)
    else:
        jcheck(res, 'd["statuses"] == [400]', 'd["closed"]', 'd["seconds"] < 4',
               '"Connection: close" in d["headers"]',
               'err_ok(json.loads(d["body"]), "bad_request")', what="shape %s: " % sh)


@case("every request framing ambiguity (CL+TE, CL lists and signs, TE other than chunked, "
      "whitespace before a colon, bare CR/LF, obs-fold, control bytes, request-line "
      "anomalies, bad chunks): 400, closed, the request hidden behind it not run")
def t_framing_shapes(abuse_daemon):
    d = abuse_daemon
    c = d.api
    # Each shape carries "DELETE /v1/agents/fr-victim" in the same bytes:
    # refused with 400 and closed, so the hidden request never runs.
    expect(c.put("/v1/agents/fr-ag", {"rate": 1000, "burst": 100000}), 201)
    for sh in rawhttp.SHAPES:
        r = c.put("/v1/agents/fr-victim", {})
        check(r.status in (200, 201), "PUT fr-victim", r.describe())
        shape_ok(sh, rawhttp.send_shape(HOST, d.port, sh, "fr-ag", "fr-victim"))
        if sh == "pipelined":
            expect_no_agent(c, "fr-victim")
        else:
            r = c.get("/v1/agents/fr-victim")
            check(r.status == 200, "shape %s: the hidden DELETE ran" % sh, r.describe())
    check(len(rawhttp.SHAPES) >= 50, "only %d shapes" % len(rawhttp.SHAPES))
    expect_agent(c, "fr-ag", 'd["tokens"] >= 100000 - 4')


@case("a body its route does not read (GET, bodiless POST, 404, 405, 400 before the body, "
      "chunked on GET), 'close' in a second Connection line or in a list, Expect twice: that "
      "answer alone, Connection: close, closed; the request in the body and the one behind "
      "never run")
def t_framing_unread_body(abuse_daemon):
    d = abuse_daemon
    c = d.api
    expect(c.put("/v1/agents/fu-ag", {"rate": 1000, "burst": 100000}), 201)
    for name in rawhttp.UNREAD:
        r = c.put("/v1/agents/fu-victim", {})
        check(r.status in (200, 201), "PUT fu-victim", r.describe())
        status, req = rawhttp.unread(name, "fu-ag", "fu-victim", d.port)
        jcheck(rawhttp.send(HOST, d.port, req, rawhttp.SHAPE_WAIT_S),
               'd["statuses"] == [%d]' % status, 'd["closed"]', 'd["seconds"] < 4',
               '"Connection: close" in d["headers"]', what="%s: " % name)
        r = c.get("/v1/agents/fu-victim")
        check(r.status == 200, "%s: a hidden DELETE ran" % name, r.describe())
    # The control: a body the route reads keeps the connection for the next.
    res = rawhttp.send(HOST, d.port, (b"POST /v1/agents/fu-ag/consume HTTP/1.1\r\nHost: t\r\n"
                                      b"Content-Length: 12\r\n\r\n{\"tokens\":1}"
                                      b"GET /healthz HTTP/1.1\r\nHost: t\r\n"
                                      b"Connection: close\r\n\r\n"), rawhttp.SHAPE_WAIT_S)
    jcheck(res, 'd["statuses"] == [200, 200]', 'd["closed"]', what="control: ")


def head_at_end(skip, end):
    """A GET /healthz head of exactly 16384 bytes (the head limit) after
    skip spaces, ending in end."""
    head = b" " * skip + b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX: "
    return head + b"a" * (16384 - len(head) - len(end)) + end


@case("a request head of 16 KiB: 431; after leading spaces (skipped, not counted): judged "
      "right (bare LF 400, CRLF 200) with no read outside the buffer")
def t_framing_buffer_end(abuse_daemon):
    d = abuse_daemon
    # A head of 16384 bytes is over the limit (431); with 100 leading
    # spaces before it (skipped) the same bytes are judged by their line
    # ends, reading nothing outside the buffer (the sanitizer build would
    # abort on such a read).
    raw_check(d, rawhttp.send(HOST, d.port, head_at_end(0, b"\r\n\r\n"), 5),
              'd["statuses"] == [431]', 'd["closed"]')
    raw_check(d, rawhttp.send(HOST, d.port, head_at_end(100, b"\n\n"), 5),
              'd["statuses"] == [400]', 'd["closed"]', '"bare LF" in d["body"]')
    raw_check(d, rawhttp.send(HOST, d.port, head_at_end(100, b"\r\n\n"), 5),
              'd["statuses"] == [400]', 'd["closed"]')
    raw_check(d, rawhttp.send(HOST, d.port, head_at_end(100, b"\r\n\r\n"), 5),
              'd["statuses"] == [200]')


WS_HANDSHAKE = ("GET /v1/stream HTTP/1.1\r\nHost: t\r\n%sConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


@case("the WebSocket handshake with a duplicate Host or whitespace before a colon: 400, closed")
def t_framing_stream(abuse_daemon):
    d = abuse_daemon
    # The WebSocket handshake is checked the same way before it is taken.
    req = (WS_HANDSHAKE % "Host: u\r\nUpgrade: websocket\r\n").encode()
    raw_check(d, rawhttp.send(HOST, d.port, req, 5), 'd["statuses"] == [400]', 'd["closed"]',
              '"Host" in d["body"]')
    req = (WS_HANDSHAKE % "Upgrade : websocket\r\n").encode()
    raw_check(d, rawhttp.send(HOST, d.port, req, 5), 'd["statuses"] == [400]', 'd["closed"]',
              '"colon" in d["body"]')


# Every route that takes an agent in its path, with a body where it needs one.
NAME_ROUTES = ("GET /v1/agents/%s", "PUT /v1/agents/%s", "DELETE /v1/agents/%s",
               "POST /v1/agents/%s/reset", "POST /v1/agents/%s/drain",
               "POST /v1/agents/%s/consume", "POST /bucket/%s", "GET /bucket/%s")
# A path segment and words of the message refusing it: the decoded segment
# must never be cut (%00), split (%2F) or normalised away (dot segments)
# into another name.
BAD_SEGMENTS = (("nm-a%00x", "%00 (NUL)"), ("nm-a%00", "%00 (NUL)"), ("nm%2Fa", "%2F"),
                ("nm%2fa", "%2F"), (".", "'.' and '..'"), ("..", "'.' and '..'"),
                ("%2E", "'.' and '..'"), ("%2e%2E", "'.' and '..'"),
                ("nm%20a", "invalid character 0x20"), ("nm%C3%A9", "invalid character 0xc3"),
                ("nm%0Aa", "invalid character 0x0a"), ("nm%zz", "two hex digits"),
                ("nm%4", "two hex digits"), ("nm\\a", "byte 0x5c"), ('nm"a', "byte 0x22"))


def refused_by_name(c, m, p, words):
    """Why METHOD PATH was not a 400 bad_request naming words ("" when it was)."""
    r = c.request(m, p, '{"tokens":1}')
    try:
        d = r.json()
        ok = (r.status == 400 and set(d) == {"error", "message"} and
              d["error"] == "bad_request" and words in d["message"])
    except ValueError:
        ok = False
    return "" if ok else "%s %s: %s %s (expected 400 naming %r)" % (m, p, r.status,
                                                                   r.text[:300], words)


@case("%00, %2F, dot segments, bytes outside the name alphabet in the agent segment of every "
      "route: 400 naming the problem, no other agent touched")
def t_names_path(abuse_daemon):
    c = abuse_daemon.api
    expect(c.put("/v1/agents/nm-a", {"rate": 1000, "burst": 1000}), 201)
    # Every answer is collected, then checked in one go.
    bad = []
    for seg, words in BAD_SEGMENTS:
        for rt in NAME_ROUTES:
            m, p = rt.split(" ")
            bad.append(refused_by_name(c, m, p % seg, words))
    bad = [b for b in bad if b]
    check(not bad, "\n".join(bad))
    # Too long, however much: 400 naming the limit (not 404).
    expect_error(c.get("/v1/agents/" + "y" * 300), 400, "bad_request", "1 to 64 characters")
    # A dot segment around a name is not resolved into it.
    expect_error(c.delete("/v1/agents/x/../nm-a"), 400, "bad_request", "'.' and '..'")
    # Escapes of allowed characters decode to them.
    expect(c.get("/v1/agents/nm%2Da"), 200, 'd["agent"] == "nm-a"')
    expect_agent(c, "nm-a", 'd["tokens"] == 1000', 'd["rate"] == 1000')


@case("\".\" and \"..\" refused in ratings (JSON, NDJSON), rules, /rate, ?after= and the CLI; "
      "\"...\" is a name")
def t_names_bodies(abuse_daemon):
    d = abuse_daemon
    c = d.api
    expect(c.put("/v1/agents/nb-a", {"rate": 1000, "burst": 1000}), 201)
    # Names in bodies and queries go through the same check: "." and ".."
    # are refused everywhere, as are bytes outside the alphabet.
    for n in (".", ".."):
        rating = '{"agent":"%s","score":5}' % n
        expect(c.post("/v1/ratings", rating), 400, 'd["errors"][0]["field"] == "agent"')
        expect(c.ndjson("/v1/ratings", rating), 400, 'd["errors"][0]["field"] == "agent"')
        expect_error(c.post("/v1/rules", '{"prefix":"10.99.0.0/16","agent":"%s"}' % n), 400,
                     "bad_request", "field 'agent'", "reserved")
        expect_error(c.post("/rate", '{"agent_id":"%s"}' % n), 400, "bad_request",
                     "field 'agent_id'", "reserved")
        expect_error(c.get("/v1/agents?after=" + n), 400, "bad_request", "query 'after'",
                     "reserved")
        r = d.cli("agent", "show", n)
        check(r.rc != 0 and "reserved" in r.out,
              "agentgate agent show '%s': exit %d, expected a refusal naming it reserved" % (
                  n, r.rc), r.describe())
    expect_error(c.post("/v1/rules", '{"prefix":"10.99.0.0/16","agent":"nm b"}'), 400,
                 "bad_request", "field 'agent'", "0x20")
    expect_error(c.post("/rate", '{"agent_id":"nb-a\\u0000x"}'), 400, "bad_request", "NUL")
    expect(c.post("/v1/ratings", '{"agent":"nb-a\\u0000x","score":5}'), 400)
    expect_error(c.get("/v1/agents?after=nb-a%00"), 400, "bad_request", "query 'after'", "%00")
    # Names made only of dots beyond two are ordinary names.
    expect(c.put("/v1/agents/...", {"rate": 5}), 201, 'd["agent"] == "..."')
    expect_agent(c, "nb-a", 'd["ratings"] == 0')
