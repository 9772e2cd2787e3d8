#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""A WebSocket client (RFC 6455) on Python's standard library, for the
stream tests and benchmarks (and, as a script, for people): ws:// and wss://, text messages, pings
answered, close frames with their codes.

    c = WS.connect("127.0.0.1", 9470, "/v1/stream?topics=rating.global")
    c.status          # 101, or the HTTP status of a refusal (c.body: its body)
    c.recv_json(2.0)  # next text message as JSON, None on timeout
    c.send_json({"action": "subscribe", "topic": "rating.agent.a"})
    c.close(1000)
"""
import base64
import hashlib
import json
import os
import socket
import ssl
import struct
import sys
import time

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Closed(Exception):
    """The server closed: code and reason of its close frame (None, "" on a
    bare TCP close)."""

    def __init__(self, code, reason):
        super().__init__("closed %s %s" % (code, reason))
        self.code, self.reason = code, reason


class WS:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.status = 0
        self.headers = {}
        self.body = ""
        self.accept_ok = False
        self.pings = 0
        self.closed = None  # (code, reason) once the server closed

    @classmethod
    def connect(cls, host, port, path, headers=None, cafile=None, rcvbuf=None, timeout=5):
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(timeout)
        raw.connect((host, port))
        sock = raw
        if cafile:
            ctx = ssl.create_default_context(cafile=cafile)
            sock = ctx.wrap_socket(raw, server_hostname=host)
        c = cls(sock)
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
        sock.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                      "Sec-WebSocket-Version: 13\r\n%s\r\n" % (path, host, port, key, extra))
                     .encode())
        while b"\r\n\r\n" not in c.buf:
            chunk = sock.recv(65536)
            if not chunk:
                break
            c.buf += chunk
        head, _, c.buf = c.buf.partition(b"\r\n\r\n")
        lines = head.decode(errors="replace").split("\r\n")
        first = lines[0].split()
        c.status = int(first[1]) if len(first) > 1 and first[1].isdigit() else 0
        for line in lines[1:]:
            k, _, v = line.partition(":")
            c.headers[k.strip().lower()] = v.strip()
        want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        c.accept_ok = c.headers.get("sec-websocket-accept") == want
        if c.status != 101:
            n = int(c.headers.get("content-length", "0") or 0)
            try:
                while len(c.buf) < n:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    c.buf += chunk
            except (socket.timeout, OSError):
                pass
            c.body = c.buf[:n].decode(errors="replace")
            sock.close()
        return c

    def _frame(self, op, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | op, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | op, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | op, 0x80 | 127, n)
        body = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + body)

    def send_text(self, text):
        self._frame(0x1, text.encode())

    def send_json(self, obj):
        self.send_text(json.dumps(obj))

    def send_binary(self, data):
        self._frame(0x2, data)

    def _need(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed(None, "")
            self.buf += chunk

    def recv_frame(self, timeout):
        """(opcode, payload) of the next frame; socket.timeout when none."""
        deadline = time.monotonic() + timeout
        self._need(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._need(4, deadline)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10, deadline)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        if b1 & 0x80:
            raise ValueError("the server masked a frame")
        self._need(off + n, deadline)
        payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
        return b0 & 0x0F, payload

    def recv_text(self, timeout):
        """Next text message; pings answered on the way; None on timeout;
        Closed when the server closes."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                op, payload = self.recv_frame(max(0.0, deadline - time.monotonic()))
            except socket.timeout:
                return None
            except (ConnectionResetError, BrokenPipeError):
                self.closed = (None, "")
                raise Closed(None, "")
            except Closed as e:
                self.closed = (e.code, e.reason)
                raise
            if op == 0x9:
                self.pings += 1
                self._frame(0xA, payload)
            elif op == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                self.closed = (code, payload[2:].decode(errors="replace"))
                raise Closed(*self.closed)
            elif op == 0x1:
                return payload.decode()

    def recv_json(self, timeout):
        t = self.recv_text(timeout)
        return json.loads(t) if t is not None else None

    def collect(self, seconds, until=None):
        """Messages for `seconds`, or until until(msg) is true; stops at a close."""
        out = []
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                m = self.recv_json(deadline - time.monotonic())
                if m is None:
                    break
                out.append(m)
                if until and until(m):
                    break
        except Closed:
            pass
        return out

    def close(self, code=1000, reason=""):
        """Sends a close frame and returns the code of the server's answer."""
        try:
            self._frame(0x8, struct.pack("!H", code) + reason.encode())
            while True:
                self.recv_text(5)
        except Closed as e:
            return e.code
        except OSError:
            return None
        finally:
            self.sock.close()

    def drop(self):
        self.sock.close()


def main():
    """ws.py [--cacert FILE] [--token JWT] ws[s]://HOST:PORT/PATH?QUERY
    Prints each text message on a line until the server closes or Ctrl-C."""
    import argparse
    import urllib.parse
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--cacert")
    p.add_argument("--token")
    p.add_argument("url")
    a = p.parse_args()
    u = urllib.parse.urlsplit(a.url)
    if u.scheme not in ("ws", "wss"):
        p.error("the URL starts with ws:// or wss://")
    if u.scheme == "wss" and not a.cacert:
        p.error("wss:// needs --cacert FILE (the server's certificate or its CA)")
    path = u.path + ("?" + u.query if u.query else "")
    headers = {"Authorization": "Bearer " + a.token} if a.token else None
    c = WS.connect(u.hostname, u.port or (443 if u.scheme == "wss" else 80), path,
                   headers=headers, cafile=a.cacert if u.scheme == "wss" else None)
    if c.status != 101:
        print("HTTP %d %s" % (c.status, c.body), file=sys.stderr)
        return 1
    try:
        while True:
            t = c.recv_text(3600)
            if t is not None:
                print(t, flush=True)
    except Closed as e:
        print("closed: %s %s" % (e.code, e.reason), file=sys.stderr)
    except KeyboardInterrupt:
        c.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
