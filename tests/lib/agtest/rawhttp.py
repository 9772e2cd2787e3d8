# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Hostile HTTP clients: bytes on a socket, as no well-behaved client sends them.

  send(host, port, data)                 data as is, then the answer until the close
  trickle_head(host, port)               a last header that never ends, a byte every 0.2 s
  trickle_body(host, port, agent)        PUT with Content-Length: 1000, a byte every 0.2 s
  send_shape(host, port, name, agent, victim)
                                         one request of the framing shape NAME (SHAPES) to
                                         POST /v1/agents/AGENT/consume with
                                         "DELETE /v1/agents/VICTIM" hidden behind it
Each returns {"status": the first response's (None: none), "body": its body,
"statuses": every response's status in order, "headers": the first
response's header lines, "closed": whether the server closed the
connection, "seconds": from the first byte sent to the close (or to giving
up), "sent": bytes sent}.
"""
import socket
import time

from .api import connect

GIVE_UP_S = 30.0
TRICKLE_S = 0.2
SHAPE_WAIT_S = 5.0


def parse(raw):
    """The responses in raw, each framed by its Content-Length: the first
    one's status, body and header lines, and every status."""
    statuses, first = [], None
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        try:
            status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError):
            status = None
        length = len(rest)
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and value.strip().isdigit():
                length = int(value.strip())
        statuses.append(status)
        if first is None:
            first = (status, rest[:length].decode("utf-8", "replace"),
                     [l.decode("latin-1") for l in lines[1:]])
        if not sep or status is None:
            break
        raw = rest[length:]
    if first is None:
        first = (None, "", [])
    return first[0], first[1], first[2], statuses


# Requests on which two HTTP parsers may disagree about where a request ends
# (RFC 9112): each is to be refused with 400 and its connection closed, so
# the request hidden behind it (H) never runs. %(n)x is the length of the
# body B in hex. The last ones frame their bodies well: accepted (chunked:
# the connection closed after the answer; "pipelined": H runs, the control).
B = b'{"tokens":1}'
HEAD = b"POST /v1/agents/%(agent)s/consume HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
SHAPES = {
    "cl-and-te": HEAD + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-and-cl": HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "cl-twice-differing": HEAD + b"Content-Length: 0\r\nContent-Length: %(blen)d\r\n\r\n" + B,
    "cl-twice-same": HEAD + b"Content-Length: %(blen)d\r\nContent-Length: %(blen)d\r\n\r\n" + B,
    "cl-list": HEAD + b"Content-Length: %(blen)d, %(blen)d\r\n\r\n" + B,
    "cl-plus": HEAD + b"Content-Length: +%(blen)d\r\n\r\n" + B,
    "cl-minus": HEAD + b"Content-Length: -1\r\n\r\n" + B,
    "cl-inner-space": HEAD + b"Content-Length: 1 2\r\n\r\n" + B,
    "cl-trailing-space": HEAD + b"Content-Length: %(blen)d \r\n\r\n" + B,
    "cl-letters": HEAD + b"Content-Length: abc\r\n\r\n" + B,
    "cl-hex": HEAD + b"Content-Length: 0x0c\r\n\r\n" + B,
    "cl-space-before-colon": HEAD + b"Content-Length : %(blen)d\r\n\r\n" + B,
    "te-space-before-colon": HEAD + b"Content-Length: 5\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "te-only-space-before-colon": HEAD + b"Transfer-Encoding : chunked\r\n\r\n%(n)x\r\n" + B + b"\r\n0\r\n\r\n",
    "other-space-before-colon": HEAD + b"X-Any : v\r\nContent-Length: %(blen)d\r\n\r\n" + B,
    "te-identity": HEAD + b"Transfer-Encoding: identity\r\n\r\n",
    "te-gzip-chunked": HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "te-chunked-twice-list": HEAD + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "te-twice": HEAD + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-obs-fold": HEAD + b"Transfer-Encoding:\r\n chunked\r\nContent-Length: %(blen)d\r\n\r\n" + B,
    "te-http10": HEAD.replace(b"HTTP/1.1", b"HTTP/1.0") +
    b"Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "obs-fold": HEAD + b"X-Any: a\r\n b\r\nContent-Length: %(blen)d\r\n\r\n" + B,
    "obs-fold-tab": HEAD + b"X-Any: a\r\n\tb\r\nContent-Length: %(blen)d\r\n\r\n" + B,
    "bare-lf-everywhere": (HEAD + b"Content-Length: %(blen)d\r\n\r\n").replace(b"\r\n", b"\n") + B,
    "bare-lf-one-header": HEAD + b"X-Any: v\nContent-Length: %(blen)d\r\n\r\n" + B,
    "bare-lf-request-line": HEAD.replace(b"HTTP/1.1\r\n", b"HTTP/1.1\n") +
    b"Content-Length: %(blen)d\r\n\r\n" + B,
    "bare-lf-end-of-head": HEAD + b"Content-Length: %(blen)d\r\n\n" + B,
    "bare-cr-request-line": HEAD.replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r") +
    b"Content-Length: %(blen)d\r\n\r\n" + B,
    "bare-cr-header": HEAD + b"X-Any: a\rb\r\nContent-Length: %(blen)d\r\n\r\n" + B,
    "nul-in-value": HEAD + b"X-Any: a\x00b\r\nContent-Length: %(blen)d\r\n\r\n" + B,
    "nul-in-name": HEAD + b"X-A\x00ny: v\r\nContent-Length: %(blen)d\r\n\r\n" + B,
    "control-in-value": HEAD + b"X-Any: a\x01b\r\nContent-Length: %(blen)d\r\n\r\n" + B,
    "del-in-name": HEAD + b"X-A\x7fny: v\r\nContent-Length: %(blen)d\r\n\r\n" + B,
    "non-token-name": HEAD + b"X(Any): v\r\nContent-Length: %(blen)d\r\n\r\n" + B,
    "high-byte-name": HEAD + b"Content-Length: %(blen)d\r\n\xffX: v\r\n\r\n" + B,
    "no-host": HEAD.replace(b"Host: t\r\n", b"") + b"Content-Length: %(blen)d\r\n\r\n" + B,
    "host-twice": HEAD + b"Host: u\r\nContent-Length: %(blen)d\r\n\r\n" + B,
    "host-userinfo": HEAD.replace(b"Host: t", b"Host: u@t") + b"Content-Length: %(blen)d\r\n\r\n" + B,
    "host-path": HEAD.replace(b"Host: t", b"Host: t/x") + b"Content-Length: %(blen)d\r\n\r\n" + B,
    "host-space": HEAD.replace(b"Host: t", b"Host: t u") + b"Content-Length: %(blen)d\r\n\r\n" + B,
    "host-bad-port": HEAD.replace(b"Host: t", b"Host: t:8x") + b"Content-Length: %(blen)d\r\n\r\n" + B,
    "authorization-twice": HEAD + b"Authorization: Bearer a\r\nAuthorization: Bearer b\r\n"
    b"Content-Length: %(blen)d\r\n\r\n" + B,
    "double-space-method": HEAD.replace(b"POST ", b"POST  ") + b"Content-Length: %(blen)d\r\n\r\n" + B,
    "double-space-version": HEAD.replace(b" HTTP/1.1", b"  HTTP/1.1") +
    b"Content-Length: %(blen)d\r\n\r\n" + B,
    "tab-separator": HEAD.replace(b"POST ", b"POST\t") + b"Content-Length: %(blen)d\r\n\r\n" + B,
    "trailing-space-version": HEAD.replace(b"HTTP/1.1\r\n", b"HTTP/1.1 \r\n") +
    b"Content-Length: %(blen)d\r\n\r\n" + B,
    "absolute-form": HEAD.replace(b"POST /", b"POST http://mydomain.com:%(port)d/") +
    b"Content-Length: %(blen)d\r\n\r\n" + B,
    "chunk-extension": HEAD + b"Transfer-Encoding: chunked\r\n\r\n%(n)x;a=b\r\n" + B + b"\r\n0\r\n\r\n",
    "chunk-size-0x": HEAD + b"Transfer-Encoding: chunked\r\n\r\n0x%(n)x\r\n" + B + b"\r\n0\r\n\r\n",
    "chunk-size-plus": HEAD + b"Transfer-Encoding: chunked\r\n\r\n+%(n)x\r\n" + B + b"\r\n0\r\n\r\n",
    "chunk-size-space": HEAD + b"Transfer-Encoding: chunked\r\n\r\n%(n)x \r\n" + B + b"\r\n0\r\n\r\n",
    "chunk-size-overflow": HEAD + b"Transfer-Encoding: chunked\r\n\r\n1" + b"0" * 16 + b"\r\n" + B +
    b"\r\n0\r\n\r\n",
    "chunk-size-bare-lf": HEAD + b"Transfer-Encoding: chunked\r\n\r\n%(n)x\n" + B + b"\r\n0\r\n\r\n",
    "chunk-data-no-crlf": HEAD + b"Transfer-Encoding: chunked\r\n\r\n%(n)x\r\n" + B + b"0\r\n\r\n",
    "chunk-data-too-long": HEAD + b"Transfer-Encoding: chunked\r\n\r\n1\r\n" + B + b"\r\n0\r\n\r\n",
    "chunk-last-bad": HEAD + b"Transfer-Encoding: chunked\r\n\r\n%(n)x\r\n" + B + b"\r\nzz\r\n\r\n",
    "chunk-trailer-no-colon": HEAD + b"Transfer-Encoding: chunked\r\n\r\n%(n)x\r\n" + B +
    b"\r\n0\r\nNoColonHere\r\n\r\n",
    "chunk-trailer-space-before-colon": HEAD + b"Transfer-Encoding: chunked\r\n\r\n%(n)x\r\n" + B +
    b"\r\n0\r\nX-T : v\r\n\r\n",
    "chunk-size-bare-cr": HEAD + b"Transfer-Encoding: chunked\r\n\r\n%(n)x\r5\r\n" + B + b"\r\n0\r\n\r\n",
    # Well framed (a trailer section is read and discarded, which a proxy may
    # not do): the body is applied and the connection closed, the hidden
    # request unread.
    "chunk-trailer": HEAD + b"Transfer-Encoding: chunked\r\n\r\n%(n)x\r\n" + B +
    b"\r\n0\r\nX-Trailer: v\r\n\r\n",
    "chunked": HEAD + b"Transfer-Encoding: chunked\r\n\r\n%(n)x\r\n" + B + b"\r\n0\r\n\r\n",
    "pipelined": HEAD + b"Content-Length: %(blen)d\r\n\r\n" + B,
}
HIDDEN = (b"DELETE /v1/agents/%(victim)s HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n"
          b"Connection: close\r\n\r\n")

# Requests whose body their route does not read (a route without a body, or
# a refusal before the body is read), and requests after which a client asked
# for the close: each gets STATUS alone, with "Connection: close", and the
# connection closes, so neither the request in the body (HB) nor the one
# behind it (H) runs. (Read as the next request, HB would delete the victim.)
HB = b"DELETE /v1/agents/%(victim)s HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
CLB = b"Content-Length: %(hblen)d\r\n\r\n" + HB
UNREAD = {
    "get-with-body": (200, b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + CLB),
    "bodiless-post-with-body": (200, b"POST /v1/agents/%(agent)s/reset HTTP/1.1\r\nHost: t\r\n" + CLB),
    "delete-with-body": (404, b"DELETE /v1/agents/%(agent)s-none HTTP/1.1\r\nHost: t\r\n" + CLB),
    "not-found-with-body": (404, b"POST /nope HTTP/1.1\r\nHost: t\r\n" + CLB),
    "not-found-expect-continue": (404, b"POST /nope HTTP/1.1\r\nHost: t\r\n"
                                  b"Expect: 100-continue\r\n" + CLB),
    "method-not-allowed-with-body": (405, b"PUT /healthz HTTP/1.1\r\nHost: t\r\n" + CLB),
    "bad-query-with-body": (400, b"POST /v1/agents/%(agent)s/consume?x=1 HTTP/1.1\r\nHost: t\r\n"
                            + CLB),
    "bad-name-with-body": (400, b"POST /v1/agents/a%%20b/consume HTTP/1.1\r\nHost: t\r\n" + CLB),
    "get-with-chunked-body": (200, b"GET /healthz HTTP/1.1\r\nHost: t\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n%(hbhex)x\r\n" + HB +
                              b"\r\n0\r\n\r\n"),
    "connection-close-second-line": (200, b"GET /healthz HTTP/1.1\r\nHost: t\r\n"
                                     b"Connection: keep-alive\r\nConnection: close\r\n\r\n"),
    "connection-close-in-list": (200, b"GET /healthz HTTP/1.1\r\nHost: t\r\n"
                                 b"Connection: x, close\r\n\r\n"),
    "expect-twice": (417, HEAD + b"Expect: 100-continue\r\nExpect: 100-continue\r\n"
                     b"Content-Length: %(blen)d\r\n\r\n" + B),
}


def _args(agent, victim, port):
    hb = HB % {b"victim": victim.encode()}
    return {b"agent": agent.encode(), b"victim": victim.encode(), b"blen": len(B), b"n": len(B),
            b"port": port, b"hblen": len(hb), b"hbhex": len(hb)}


def shape(name, agent, victim, port):
    return (SHAPES[name] + HIDDEN) % _args(agent, victim, port)


def unread(name, agent, victim, port):
    """UNREAD[name]'s status and request, with H behind it."""
    status, req = UNREAD[name]
    return status, (req + HIDDEN) % _args(agent, victim, port)


def read_rest(s, raw, t0, give_up=GIVE_UP_S):
    """Reads until the server closes; closed is False after give_up s."""
    while time.monotonic() - t0 < give_up:
        s.settimeout(max(0.05, give_up - (time.monotonic() - t0)))
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            return raw, False
        except ConnectionResetError:
            return raw, True
        if not chunk:
            return raw, True
        raw += chunk
    return raw, False


def trickle(s, first, t0):
    """Sends first, then a byte every TRICKLE_S until the server answers or
    closes; returns what it answered, closed, bytes sent."""
    s.sendall(first)
    sent, raw = len(first), b""
    while time.monotonic() - t0 < GIVE_UP_S:
        s.settimeout(TRICKLE_S)
        try:
            chunk = s.recv(65536)
            if not chunk:
                return raw, True, sent
            raw += chunk
            break
        except socket.timeout:
            pass
        except ConnectionResetError:
            return raw, True, sent
        try:
            s.sendall(b"a")
            sent += 1
        except (BrokenPipeError, ConnectionResetError):
            break
    raw, closed = read_rest(s, raw, t0)
    return raw, closed, sent


def _result(raw, closed, t0, sent):
    status, body, headers, statuses = parse(raw)
    return {"status": status, "body": body, "statuses": statuses, "headers": headers,
            "closed": closed, "seconds": round(time.monotonic() - t0, 3), "sent": sent}


def send(host, port, data, give_up=GIVE_UP_S, netns=None):
    """Sends data as is, then reads until the server closes (or give_up s)."""
    s = connect(host, port, netns, timeout=5)
    try:
        t0 = time.monotonic()
        s.sendall(data)
        raw, closed = read_rest(s, b"", t0, give_up)
        return _result(raw, closed, t0, len(data))
    finally:
        s.close()


def send_shape(host, port, name, agent, victim, netns=None):
    """One request of the framing shape name with the hidden request behind it."""
    return send(host, port, shape(name, agent, victim, port), SHAPE_WAIT_S, netns)


def trickle_head(host, port, netns=None):
    """A request whose last header never ends: a byte every 0.2 s."""
    s = connect(host, port, netns, timeout=5)
    try:
        t0 = time.monotonic()
        raw, closed, sent = trickle(s, b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ", t0)
        return _result(raw, closed, t0, sent)
    finally:
        s.close()


def trickle_body(host, port, agent, netns=None):
    """PUT /v1/agents/AGENT with Content-Length: 1000, a byte every 0.2 s."""
    head = ("PUT /v1/agents/%s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n{" % agent).encode()
    s = connect(host, port, netns, timeout=5)
    try:
        t0 = time.monotonic()
        raw, closed, sent = trickle(s, head, t0)
        return _result(raw, closed, t0, sent)
    finally:
        s.close()
