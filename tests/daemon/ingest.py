#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""ingest.py SOCKET: sends standard input to agentgated's --ingest-socket,
shuts down the writing side, and prints what the daemon answers (one JSON
line) once it closes the connection. Exit 1 on a socket error or a 10 s
timeout."""
import socket
import sys


def main():
    data = sys.stdin.buffer.read()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(sys.argv[1])
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    except OSError as e:
        print("ingest.py: %s" % e, file=sys.stderr)
        return 1
    finally:
        s.close()
    sys.stdout.write(reply.decode(errors="replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
