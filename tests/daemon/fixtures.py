# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Fixtures the daemon suite's case files share."""
from agtest import fixture


@fixture
def api(env):
    """A daemon with the embedded defaults, shared by the API cases. Each
    case uses agent names (and rule prefixes) of its own; names sort before
    "zzzz-pg-5" (t_agents_paging lists every agent and wants its five last).
    Its teardown is the shell's t_api_stop: SIGTERM, exit 0, no sanitizer
    report."""
    d = env.daemon("api").start()
    yield d
    d.stop()


@fixture(scope="case")
def api_fresh(env):
    """A daemon with the embedded defaults for one case alone (no agents, an
    audit.log of its own); stopped, and checked as api is, at the case's end."""
    d = env.daemon("fresh").start()
    yield d
    d.stop()
