#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""restart.py [--kill PID] --log FILE --url URL [--timeout S] -- CMD...

Kills PID with SIGKILL (when given) and waits until it is gone, starts CMD
(standard input /dev/null, output appended to FILE, in a session of its
own so it outlives this script), then polls URL every 5 ms until it
answers 200. Prints one JSON object:
  {"pid": CMD's pid, "gone_s": kill to PID gone, "ready_s": start to 200,
   "kill_to_ready_s": kill to 200 (start to 200 without --kill), "ok": bool}
Times are CLOCK_MONOTONIC. Exit status 0 when URL answered within the
timeout (default 10 s), 1 otherwise (CMD is left running either way)."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request


def gone(pid):
    """No process, or a zombie leader whose other threads have exited too
    (only then are its descriptors, the listening socket, closed)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
        return zombie and len(os.listdir("/proc/%d/task" % pid)) <= 1
    except OSError:
        return True


def answers(url):
    try:
        with urllib.request.urlopen(url, timeout=0.5) as r:
            return r.status == 200
    except Exception:
        return False


def main():
    args, cmd = sys.argv[1:], []
    if "--" in args:
        cmd = args[args.index("--") + 1:]
        args = args[:args.index("--")]
    opts = dict(zip(args[::2], args[1::2]))
    if not cmd or "--log" not in opts or "--url" not in opts:
        sys.exit(__doc__)
    timeout = float(opts.get("--timeout", 10))
    t_kill = time.monotonic()
    gone_s = 0.0
    if "--kill" in opts:
        pid = int(opts["--kill"])
        os.kill(pid, signal.SIGKILL)
        while not gone(pid) and time.monotonic() - t_kill < timeout:
            time.sleep(0.001)
        gone_s = time.monotonic() - t_kill
    log = open(opts["--log"], "ab")
    t_start = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                         start_new_session=True)
    ok = False
    while time.monotonic() - t_start < timeout and p.poll() is None:
        if answers(opts["--url"]):
            ok = True
            break
        time.sleep(0.005)
    t_ready = time.monotonic()
    print(json.dumps({"pid": p.pid, "gone_s": round(gone_s, 4),
                      "ready_s": round(t_ready - t_start, 4),
                      "kill_to_ready_s": round(t_ready - t_kill, 4), "ok": ok}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
