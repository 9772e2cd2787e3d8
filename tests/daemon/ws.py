#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""ws.py HOST PORT PATH: a WebSocket opening handshake (RFC 6455) on PATH.
Prints one JSON line: {"status": <HTTP status, 0 when the reply has no
HTTP status line>, "accept_ok": <bool: the Sec-WebSocket-Accept header
matches the key sent>, "headers": {...}, "raw": <the reply's first 200
bytes>, "body": <what followed the headers, for a non-101 reply>}."""
import base64
import hashlib
import json
import os
import socket
import sys

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def main():
    host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    key = base64.b64encode(os.urandom(16)).decode()
    req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, host, port, key))
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(req.encode())
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        if not data.startswith(b"HTTP/1.1 101"):
            while True:  # the rest of an error reply (until close or timeout)
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except socket.timeout:
        pass
    s.close()
    head_raw, _, body = data.partition(b"\r\n\r\n")
    head = head_raw.decode(errors="replace").split("\r\n")
    first = head[0].split()
    status = int(first[1]) if (len(first) > 1 and first[0].startswith("HTTP/")
                               and first[1].isdigit()) else 0
    headers = {}
    for line in head[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    print(json.dumps({"status": status, "accept_ok": headers.get("sec-websocket-accept") == want,
                      "headers": headers if status else {}, "raw": data[:200].decode(errors="replace"),
                      "body": body.decode(errors="replace") if status else ""}))


if __name__ == "__main__":
    main()
