# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""python3 tests/lib/agtest daemon-argv --bin B --pin P --state S --listen ADDR
         [--config FILE] [--nats URL]... [--node NAME] [-- FLAG...]

Prints agentgated's command line as the Python suites make it (daemon.py's
daemon_argv), NUL-separated, for shell scripts:

    mapfile -d '' cmd < <(python3 tests/lib/agtest daemon-argv --bin ... -- --quiet)
    "${cmd[@]}" &
"""
import argparse
import os
import sys

# Run as a directory: the package's parent, not the package, on the path.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from agtest.daemon import daemon_argv  # noqa: E402


def main(argv):
    if not argv or argv[0] != "daemon-argv":
        sys.stderr.write(__doc__)
        return 2
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(prog="agtest daemon-argv")
    p.add_argument("--bin", required=True)
    p.add_argument("--pin", required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--listen", required=True)
    p.add_argument("--config", default="/dev/null")
    p.add_argument("--nats", action="append", default=[])
    p.add_argument("--node")
    a = p.parse_args(argv[1:])
    out = daemon_argv(a.bin, a.pin, a.state, a.listen, a.config or None, a.nats, a.node, extra)
    sys.stdout.write("".join(x + "\0" for x in out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
