#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Hostile HTTP clients for tests/daemon (standard library only).

Usage: rawhttp.py HOST PORT MODE [ARG]
  send            send standard input as is, then read the answer
  trickle-head    a request whose last header never ends: one byte every
                  0.2 s for as long as the server reads
  trickle-body    PUT /v1/agents/ARG with Content-Length: 1000 and a body
                  sent one byte every 0.2 s
Prints one JSON object: {"status": int or null, "body": text, "closed":
whether the server closed the connection, "seconds": from the first byte
sent to the close (or to giving up after 30 s), "sent": bytes sent}.
"""
import json
import socket
import sys
import time

GIVE_UP_S = 30.0
TRICKLE_S = 0.2


def parse(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        status = None
    return status, body.decode("utf-8", "replace")


def read_rest(s, raw, t0):
    """Reads until the server closes; closed is False after GIVE_UP_S."""
    while time.monotonic() - t0 < GIVE_UP_S:
        s.settimeout(max(0.05, GIVE_UP_S - (time.monotonic() - t0)))
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


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    s = socket.create_connection((host, port), timeout=5)
    t0 = time.monotonic()
    if mode == "send":
        data = sys.stdin.buffer.read()
        s.sendall(data)
        raw, closed = read_rest(s, b"", t0)
        sent = len(data)
    elif mode == "trickle-head":
        raw, closed, sent = trickle(s, b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ", t0)
    elif mode == "trickle-body":
        head = ("PUT /v1/agents/%s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                "Content-Length: 1000\r\n\r\n{" % sys.argv[4]).encode()
        raw, closed, sent = trickle(s, head, t0)
    else:
        sys.exit("unknown mode %r" % mode)
    status, body = parse(raw)
    print(json.dumps({"status": status, "body": body, "closed": closed,
                      "seconds": round(time.monotonic() - t0, 3), "sent": sent}))


if __name__ == "__main__":
    main()
