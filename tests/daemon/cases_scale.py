# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Listing 10^6 agents (the plain build, a daemon of its own)."""
import json
import os
import subprocess
import sys

from agtest import case, check, diag, jcheck

# Also the measurement docs/OPERATIONS.md quotes: kept a script.
LISTSCALE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "listscale.py")


@case("10^6 agents: first and deep pages right, 32 concurrent listings leave the peak memory "
      "within 64 MiB, a rating meanwhile acknowledged")
def t_agents_scale(env):
    """Pages are read from the store by key: a deep page costs what the
    first one does, and 32 listings at once leave the daemon's memory flat
    (before: each copied and sorted every name, about 65 MB a call at
    10^6). Asserted on content and memory; the timings are reported.
    AG_TEST_SCALE_AGENTS sets another count."""
    n = int(os.environ.get("AG_TEST_SCALE_AGENTS", "1000000"))
    d = env.daemon("scale", "--max-agents", str(n + 1024), "--max-body", "64MiB",
                   bin="plain").start(timeout=60)
    argv = [sys.executable, LISTSCALE, "127.0.0.1", str(d.port), str(d.proc.pid), str(n)]
    p = subprocess.run(argv, capture_output=True, text=True)
    check(p.returncode == 0, "listscale.py failed (exit %d): %s%s" % (p.returncode, p.stdout,
                                                                    p.stderr[-2000:]))
    diag("%d agents (seconds, KiB): %s" % (n, p.stdout.strip()))
    out = json.loads(p.stdout)
    jcheck(out, 'd["pages_ok"] == []', 'd["concurrent_ok"] == 32', 'd["rating_status"] == 200')
    if out["hwm_before_kb"] is None:
        diag("cannot reset the daemon's peak memory (/proc/PID/clear_refs): not measured")
    else:
        jcheck(out, 'd["hwm_after_kb"] - d["hwm_before_kb"] < 64 * 1024')
    d.stop(timeout=60)
