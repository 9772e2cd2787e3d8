#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""agentgated end-to-end: the real daemon over real HTTP. TAP output.

Usage: tests/daemon/test_daemon.py BUILD_DIR   (as root; tests/run.sh runs it)

The cases live in cases_*.py beside this file, one file per part of the
daemon they hold to its contract; the fixtures they share in fixtures.py.
Every daemon is BUILD_DIR/agentgated-san (ASan + UBSan; LSan at exit) unless
a case says otherwise, on its own pin root, state directory and loopback
port (tests/lib/agtest). A case runs alone (AG_TEST_ONLY=REGEX) and in any
order (AG_TEST_SHUFFLE=SEED): cases sharing a daemon use agent names of
their own and look only at those.
Exit: 0 all passed, 1 something failed, 77 skipped (not root).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from agtest import run  # noqa: E402

# Each module registers its cases when imported, in this order.
import cases_api  # noqa: E402,F401
import cases_policy  # noqa: E402,F401
import cases_ingest  # noqa: E402,F401
import cases_store  # noqa: E402,F401
import cases_metrics  # noqa: E402,F401
import cases_auth  # noqa: E402,F401
import cases_tls  # noqa: E402,F401
import cases_explain  # noqa: E402,F401
import cases_abuse  # noqa: E402,F401
import cases_scale  # noqa: E402,F401
import cases_config  # noqa: E402,F401
import cases_xdp  # noqa: E402,F401
import cases_owner  # noqa: E402,F401
import cases_flags  # noqa: E402,F401
import cases_expiry  # noqa: E402,F401
import cases_tokens  # noqa: E402,F401
import cases_voices  # noqa: E402,F401
import cases_feeds  # noqa: E402,F401

if __name__ == "__main__":
    run(needs=("agentgated-san", "agentgated", "agentgate"))
