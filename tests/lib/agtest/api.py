# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""An HTTP client for agentgated's API: one request per connection, any
method, body and headers, a bearer token, TLS with a given CA, and a daemon
inside a network namespace (the socket is made in that namespace).

    c = Client("http://127.0.0.1:9470", token=jwt)
    r = c.post("/v1/ratings", {"agent": "a", "score": 5})
    r.status, r.json(), r.header("Retry-After"), r.text
"""
import ctypes
import http.client
import json as jsonlib
import os
import socket
import ssl
import urllib.parse
from contextlib import contextmanager

from .util import Fail

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@contextmanager
def in_netns(name):
    """This thread in network namespace NAME (from `ip netns add`) for the
    block: sockets made in it stay in it."""
    if not name:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open("/run/netns/" + name, os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns to netns %s" % name)
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back from netns %s" % name)
    finally:
        os.close(own)
        os.close(target)


def connect(host, port, netns=None, timeout=15):
    with in_netns(netns):
        return socket.create_connection((host, port), timeout=timeout)


class Response:
    def __init__(self, method, url, status, reason, headers, body):
        self.method, self.url = method, url
        self.status, self.reason = status, reason
        self.headers = headers          # [(name, value)] in order
        self.body = body                # bytes
        self._json = None

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        if self._json is None:
            self._json = jsonlib.loads(self.body)
        return self._json

    def header(self, name):
        """The last header called name (any case), or None."""
        v = None
        for k, val in self.headers:
            if k.lower() == name.lower():
                v = val
        return v

    def describe(self):
        return "request: %s %s\nstatus: %s\nbody: %s" % (self.method, self.url, self.status,
                                                        self.text[:1500])

    def __repr__(self):
        return "<%s %s: %s %s>" % (self.method, self.url, self.status, self.text[:200])


class _Conn(http.client.HTTPConnection):
    def __init__(self, host, port, netns, timeout):
        super().__init__(host, port, timeout=timeout)
        self.netns = netns

    def connect(self):
        self.sock = connect(self.host, self.port, self.netns, self.timeout)


class _TLSConn(http.client.HTTPSConnection):
    def __init__(self, host, port, netns, timeout, context):
        super().__init__(host, port, timeout=timeout, context=context)
        self.netns = netns

    def connect(self):
        sock = connect(self.host, self.port, self.netns, self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def encode_body(body, ctype=None):
    """(bytes, content type) of a JSON-able value, str or bytes."""
    if body is None:
        return None, ctype
    if isinstance(body, bytes):
        return body, ctype or "application/json"
    if isinstance(body, str):
        return body.encode(), ctype or "application/json"
    return jsonlib.dumps(body).encode(), ctype or "application/json"


class Client:
    def __init__(self, base, token=None, netns=None, cafile=None, timeout=15):
        u = urllib.parse.urlsplit(base)
        self.base, self.scheme = base, u.scheme
        self.host, self.port = u.hostname, u.port or (443 if u.scheme == "https" else 80)
        self.token, self.netns, self.cafile, self.timeout = token, netns, cafile, timeout

    def with_token(self, token):
        return Client(self.base, token, self.netns, self.cafile, self.timeout)

    def request(self, method, path, body=None, headers=None, ctype=None, timeout=None):
        data, ctype = encode_body(body, ctype)
        h = {}
        if ctype and data is not None:
            h["Content-Type"] = ctype
        if self.token:
            h["Authorization"] = "Bearer " + self.token
        h.update(headers or {})
        t = timeout or self.timeout
        if self.scheme == "https":
            ctx = ssl.create_default_context(cafile=self.cafile)
            conn = _TLSConn(self.host, self.port, self.netns, t, ctx)
        else:
            conn = _Conn(self.host, self.port, self.netns, t)
        try:
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            body = r.read()
            return Response(method, self.base + path, r.status, r.reason, r.getheaders(), body)
        except http.client.HTTPException as e:   # the server closed mid-answer, say
            raise OSError("%s %s: %s: %s" % (method, path, type(e).__name__, e))
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body, **kw)

    def delete(self, path, body=None, **kw):
        return self.request("DELETE", path, body, **kw)

    def ndjson(self, path, lines, **kw):
        """POST NDJSON: lines is a str or a list of JSON-able values."""
        if not isinstance(lines, (str, bytes)):
            lines = "".join(jsonlib.dumps(x) + "\n" for x in lines)
        return self.request("POST", path, lines, ctype="application/x-ndjson", **kw)

    def json(self, path):
        """GET path: the JSON of a 200 (OSError otherwise)."""
        r = self.get(path)
        if r.status != 200:
            raise OSError("GET %s: %d %s" % (path, r.status, r.text[:300]))
        return r.json()

    def agent(self, name):
        """GET /v1/agents/NAME: the object, None on 404 (ValueError otherwise)."""
        r = self.get("/v1/agents/" + name)
        if r.status == 404:
            return None
        if r.status != 200:
            raise ValueError("GET /v1/agents/%s: %d %s" % (name, r.status, r.text[:300]))
        return r.json()


def recv_all(s):
    """Everything s receives until the peer closes it."""
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def ingest_raw(sock, data, timeout=10):
    """Sends data to an --ingest-socket (a Unix stream socket), shuts down the
    writing side and returns all the daemon answers, once it closes."""
    if isinstance(data, str):
        data = data.encode()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        reply = recv_all(s)
    except OSError as e:
        raise OSError("ingest to %s: %s" % (sock, e))
    finally:
        s.close()
    return reply


def ingest(sock, data, timeout=10):
    """ingest_raw's answer (one JSON line) parsed; Fail when it is not JSON."""
    reply = ingest_raw(sock, data, timeout)
    try:
        return jsonlib.loads(reply)
    except ValueError:
        raise Fail("the ingest answer is not JSON: %r" % reply[:1500])
