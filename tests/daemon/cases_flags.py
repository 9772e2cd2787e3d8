# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Option bounds and reload classes (the option table, config.c)."""
import os

from agtest import case, check, daemon_argv, expect, expect_error, has, run_daemon
from cases_config import reload, write_file


@case("out-of-bounds values (minimum, maximum, zero, fleet-mode floor, config file) and threads "
      "plus stream clients: exit 2 naming option, value and bound; --help shows the bounds")
def t_flags_bounds(env):
    pin, st, listen = env.daemon_places("bounds")

    def refused(*flags, config="/dev/null"):
        return run_daemon(env, daemon_argv(env.san, pin, st, listen, config, extra=flags)[1:], 2)

    # Below a minimum, above a maximum, zero, an exclusive minimum in fleet
    # mode, a config-file key: exit 2 naming the option, its value and bound.
    has(refused("--store-size", "512KiB"), "store-size is 512KiB; it must be at least 1MiB")
    has(refused("--stream-queue", "2M"), "stream-queue is 2M; it must be 1 to 1M")
    has(refused("--max-agents", "0"), "max-agents is 0; it must be 1 to 16777216")
    has(refused("--nats", "nats://127.0.0.1:1", "--fleet-floor", "0"),
        "fleet-floor is 0; it must be above 0 and at most 1")
    conf = env.path(env.unique("bounds") + ".conf")
    write_file(conf, "dead-letter-max = 32k\n")
    has(refused(config=conf), "dead-letter-max is 32KiB; it must be at least 64KiB")
    # Across options, after each one's own bounds.
    has(refused("--threads", "20000", "--stream-max-clients", "1"),
        "threads plus stream-max-clients must be at most 20000")
    check(not os.path.exists(pin), "a refused start created " + pin)
    # --help says the same defaults and bounds, and what SIGHUP applies.
    has(run_daemon(env, ["--help"], 0), "--store-size BYTES", "(default 4GiB, at least 1MiB)",
        "(default 1024, 1 to 1M)", "(default 1MiB, at least 1; reloads on SIGHUP)")


@case("SIGHUP changing restart-only store-size and threads logs 'takes effect on restart' for "
      "each, reloadable max-body and rate apply at once; an out-of-bounds value fails the "
      "reload naming it")
def t_flags_reload(env):
    cfg = env.path(env.unique("flags") + ".conf")
    write_file(cfg, "max-body = 1000\nstore-size = 8MiB\nthreads = 8\n")
    d = env.daemon("flags", config=cfg).start()
    text = '[{"agent":"fl1","score":5}]'
    body = (text + " " * (1500 - len(text))).encode()    # 1500 bytes
    expect_error(d.api.post("/v1/ratings", body), 413, "payload_too_large")
    # Two restart-only options and two reloadable ones changed.
    reload(d, "max-body = 2000\nstore-size = 16MiB\nthreads = 9\nrate = 70\n")
    for o in ("store-size", "threads"):
        has(d.log(), "reload: '%s' changed; it takes effect on restart" % o)
    for o in ("max-body", "rate"):
        check("reload: '%s' changed" % o not in d.log(),
              "reloadable %s logged as needing a restart: %s" % (o, d.log()))
    # The reloadable ones apply at once: a 1500-byte body, a new agent at r0 70.
    expect(d.api.post("/v1/ratings", body), 200, 'd["applied"] == 1',
           'd["agents"][0]["rate"] == 90')
    # A value out of bounds on reload: refused naming it, the settings stay.
    reload(d, "max-body = 1000\nstream-ping = 50ms\n", "reload failed")
    has(d.log(), "stream-ping is 50ms; it must be at least 100ms")
    expect(d.api.post("/v1/ratings", body), 200, 'd["applied"] == 1')
    d.stop()
