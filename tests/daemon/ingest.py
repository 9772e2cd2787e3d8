#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""ingest.py SOCKET: sends standard input to agentgated's --ingest-socket,
shuts down the writing side, and prints what the daemon answers (one JSON
line) once it closes the connection (agtest.api.ingest_raw, for shell
suites). Exit 1 on a socket error or a 10 s timeout."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from agtest.api import ingest_raw  # noqa: E402


def main():
    try:
        reply = ingest_raw(sys.argv[1], sys.stdin.buffer.read())
    except OSError as e:
        print("ingest.py: %s" % e, file=sys.stderr)
        return 1
    sys.stdout.write(reply.decode(errors="replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
