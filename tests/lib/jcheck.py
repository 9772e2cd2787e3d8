#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""jcheck.py JSON EXPR...: every Python expression over d (the parsed JSON)
must be True; prints each one that is not and exits 1.

The shell suites' (tap.sh's jcheck) door to agtest.checks: the same helpers
(num, isint, isbool, isstr, near, keys, canon, err_ok, agent_ok, json) and
the same evaluation as the Python suites.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agtest.checks import failing  # noqa: E402


def main():
    try:
        d = json.loads(sys.argv[1])
    except Exception as e:  # noqa: BLE001 - report any parse failure
        print("not JSON (%s): %r" % (e, sys.argv[1][:300]))
        return 1
    bad = failing(d, sys.argv[2:])
    for b in bad:
        print(b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
