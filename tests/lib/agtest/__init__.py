# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""agtest: the integration-test library of agentgate's Python suites and
benchmarks (standard library only).

  tap      the TAP runner: @case, @fixture, run(); AG_TEST_ONLY, AG_TEST_SHUFFLE
  util     Fail, Skip, check, diag, wait_for (a leaf)
  env      Env: build, binaries, scratch, bpffs, ports, cleanup of all of it
  daemon   daemon_argv (agentgated's command line, made here only), Daemon, run_daemon
  api      Client: HTTP(S) to the API, also into a network namespace
  checks   expect, expect_error, jcheck and the JSON helpers
  cli      the agentgate CLI in JSON mode
  jwt      tokens signed as agentgated checks them
  ws       a WebSocket client (also a script: ws.py URL)
  nats     nats-server, clusters of them, and a NATS/JetStream client
  prom     Prometheus text: Metrics, promtool_check
  rawhttp  hostile HTTP clients (framing shapes, trickles)
  lab      network namespaces, veth pairs, lab edge hosts, frames
  ports    loopback ports below the ephemeral range

A suite puts tests/lib on sys.path and imports from here; see tap.py for a
suite's shape. Shell scripts get the daemon's command line from
`python3 tests/lib/agtest daemon-argv ...` (see __main__.py).
"""
from .checks import (err_ok, expect, expect_agent, expect_error, expect_no_agent,  # noqa: F401
                     jcheck, near, rate_after, wait_agent)
from .daemon import Daemon, daemon_argv, has, run_daemon  # noqa: F401
from .tap import case, fixture, run  # noqa: F401
from .util import Fail, Skip, check, diag, skip_all, wait_for  # noqa: F401
