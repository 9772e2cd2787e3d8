# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Keys and tokens from PyJWT with cryptography (tests/lib/mint.py, run by
Debian's /usr/bin/python3, where python3-jwt and python3-cryptography
live): an implementation independent of agentgated's."""
import json
import os
import subprocess

from .env import ROOT
from .util import Fail, Skip

PY = "/usr/bin/python3"
MINT = os.path.join(ROOT, "tests", "lib", "mint.py")


def need():
    """Skip unless python3-jwt and python3-cryptography are installed."""
    r = subprocess.run([PY, "-c", "import jwt, cryptography"], capture_output=True)
    if r.returncode:
        raise Skip("python3-jwt or python3-cryptography not installed (scripts/deps.sh)")


def keygen(kind, private, public):
    """A key pair of kind rsa, rsa1024, ec, ec384 or ed: PEM files."""
    r = subprocess.run([PY, MINT, "keygen", kind, private, public], capture_output=True,
                       text=True)
    if r.returncode:
        raise Fail("mint.py keygen %s: %s" % (kind, r.stderr[-500:]))
    return private, public


def mint(*reqs):
    """One token per request {"key": PATH, "alg": A, "claims": {...}, "kid":
    K, "headers": {...}}, in order."""
    text = "".join(json.dumps(q) + "\n" for q in reqs)
    r = subprocess.run([PY, MINT, "tokens"], input=text, capture_output=True, text=True)
    if r.returncode:
        raise Fail("mint.py tokens: %s" % r.stderr[-1000:])
    out = r.stdout.split()
    if len(out) != len(reqs):
        raise Fail("mint.py tokens: %d tokens for %d requests" % (len(out), len(reqs)))
    return out
