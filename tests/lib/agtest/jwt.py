#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""JSON Web Tokens as agentgated checks them: token(key, claims, alg, tamper).

As a script: jwt.py KEYFILE CLAIMS_JSON [--alg HS256|HS384|HS512|none] [--tamper]
prints a JWT signed with the secret in KEYFILE (its bytes, one trailing
newline removed, as agentgated reads it). Claims may use the placeholder
values "NOW+N" / "NOW-N" (strings) for times relative to now, in seconds.
--alg none writes an unsigned token (empty signature); --tamper changes the
payload after signing (the signature no longer matches). Standard library
only.
"""
import base64
import hashlib
import hmac
import json
import sys
import time


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def read_key(keyfile):
    """The secret in keyfile: its bytes, one trailing newline removed, as
    agentgated reads it."""
    with open(keyfile, "rb") as f:
        key = f.read()
    if key.endswith(b"\n"):
        key = key[:-1]
    if key.endswith(b"\r"):
        key = key[:-1]
    return key


def token(key, claims, alg="HS256", tamper=False):
    """A JWT over claims (a dict) signed with key (bytes, or the path of a key
    file). "NOW+N" / "NOW-N" string values become times relative to now."""
    if isinstance(key, str):
        key = read_key(key)
    c = dict(claims)
    now = int(time.time())
    for k, v in list(c.items()):
        if isinstance(v, str) and v.startswith("NOW"):
            c[k] = now + int(v[3:] or 0)
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}, separators=(",", ":")).encode())
    payload = b64url(json.dumps(c, separators=(",", ":")).encode())
    signing_input = (header + "." + payload).encode()
    digests = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
    sig = "" if alg == "none" else b64url(hmac.new(key, signing_input, digests[alg]).digest())
    if tamper:
        c["scope"] = "ratings:write agents:admin stream:read metrics:read"
        c["sub"] = "mallory"
        payload = b64url(json.dumps(c, separators=(",", ":")).encode())
    return header + "." + payload + "." + sig


def main():
    args = sys.argv[1:]
    alg, tamper = "HS256", False
    if "--alg" in args:
        i = args.index("--alg")
        alg = args[i + 1]
        del args[i:i + 2]
    if "--tamper" in args:
        args.remove("--tamper")
        tamper = True
    keyfile, claims = args
    print(token(keyfile, json.loads(claims), alg, tamper))


if __name__ == "__main__":
    main()
