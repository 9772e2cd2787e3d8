#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Request-smuggling shapes against an HTTP/1.1 server (bench/front.sh).

Usage: smuggle.py HOST PORT [--md]

Each shape is a POST /v1/agents/bn-c0/consume (body {"tokens":1}; bn-c0 is
an agent bench/front.sh creates) with one framing oddity, followed on the
same socket by "GET /healthz HTTP/1.1", all in one write, on a new
connection. The answers are read until the server closes, resets or is
silent for IDLE_S. Prints one JSON object per shape (markdown rows with
--md): "responses" as STATUS[:handler|:healthz] (handler: the consume
answer, the handler ran; healthz: the appended request was answered;
"(Connection: close)" when the answer says so) and "end", how the
connection ended: closed, reset, or open (still open after IDLE_S).
Standard library only.
"""
import json
import re
import socket
import sys
import time

IDLE_S = 1.5
GIVE_UP_S = 10.0
BODY = b'{"tokens":1}'
POST = b"POST /v1/agents/bn-c0/consume HTTP/1.1\r\nHost: x\r\n"
CHUNKED = b"c\r\n" + BODY + b"\r\n0\r\n\r\n"
APPENDED = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"

SHAPES = [
    ("1a CL+TE (CL: 3 first)",
     POST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKED),
    ("1b TE+CL (TE first, CL: 3)",
     POST + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" + CHUNKED),
    ("2a two CL, equal (12, 12)",
     POST + b"Content-Length: 12\r\nContent-Length: 12\r\n\r\n" + BODY),
    ("2b two CL, different (12, 3)",
     POST + b"Content-Length: 12\r\nContent-Length: 3\r\n\r\n" + BODY),
    ("3 space before colon (Content-Length : 12)",
     POST + b"Content-Length : 12\r\n\r\n" + BODY),
    ("4 obs-fold (X-Folded: a CRLF SP b)",
     POST + b"Content-Length: 12\r\nX-Folded: a\r\n b\r\n\r\n" + BODY),
    ("5 bare LF line ends",
     POST.replace(b"\r\n", b"\n") + b"Content-Length: 12\n\n" + BODY),
    ("6 chunked, size '5;ext'",
     POST + b"Transfer-Encoding: chunked\r\n\r\n5;ext\r\n" + BODY[:5] + b"\r\n7\r\n" +
     BODY[5:] + b"\r\n0\r\n\r\n"),
]


def chunked_body(rest):
    """The decoded chunked body at the start of rest, and what follows it."""
    body, p = b"", 0
    while True:
        e = rest.find(b"\r\n", p)
        if e < 0:
            return body, b""
        try:
            n = int(rest[p:e].split(b";")[0], 16)
        except ValueError:
            return body, b""
        body += rest[e + 2:e + 2 + n]
        p = e + 2 + n + 2
        if n == 0:
            return body, rest[p:]


def parse(buf):
    """The HTTP responses in buf, each as 'STATUS[:tag]'."""
    out = []
    while buf:
        he = buf.find(b"\r\n\r\n")
        if he < 0:
            out.append("partial-head")
            break
        lines = buf[:he].decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            out.append("garbage")
            break
        hdrs = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        rest = buf[he + 4:]
        if "content-length" in hdrs:
            n = int(hdrs["content-length"])
            body, buf = rest[:n], rest[n:]
        elif "chunked" in hdrs.get("transfer-encoding", "").lower():
            body, buf = chunked_body(rest)
        elif status in (204, 304) or 100 <= status < 200:
            body, buf = b"", rest
        else:
            body, buf = rest, b""
        tag = ""
        if re.search(rb'"allowed"\s*:', body):
            tag = ":handler"
        elif re.search(rb'"status"\s*:\s*"ok"', body):
            tag = ":healthz"
        if hdrs.get("connection", "").lower() == "close":
            tag += "(Connection: close)"
        out.append("%d%s" % (status, tag))
    return out


def one(host, port, data):
    """Sends data + APPENDED on a new connection: (responses, end)."""
    s = socket.create_connection((host, port), timeout=5)
    buf, end = b"", "open"
    try:
        s.sendall(data + APPENDED)
        s.settimeout(IDLE_S)
        t0 = time.monotonic()
        while time.monotonic() - t0 < GIVE_UP_S:
            try:
                d = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                end = "reset"
                break
            if not d:
                end = "closed"
                break
            buf += d
    finally:
        s.close()
    return parse(buf), end


def main():
    if len(sys.argv) not in (3, 4) or (len(sys.argv) == 4 and sys.argv[3] != "--md"):
        sys.exit(__doc__)
    host, port, md = sys.argv[1], int(sys.argv[2]), len(sys.argv) == 4
    for name, data in SHAPES:
        try:
            resp, end = one(host, port, data)
        except OSError as e:
            resp, end = ["error: %s" % e], "?"
        if md:
            print("| %s | %s | %s |" % (name, ", ".join(resp) or "(nothing)", end))
        else:
            print(json.dumps({"shape": name, "responses": resp, "end": end}))


if __name__ == "__main__":
    main()
