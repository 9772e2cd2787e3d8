#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""jwt.py KEYFILE CLAIMS_JSON [--alg HS256|HS384|HS512|none] [--tamper]

Prints a JWT signed with the secret in KEYFILE (its bytes, one trailing
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
    with open(keyfile, "rb") as f:
        key = f.read()
    if key.endswith(b"\n"):
        key = key[:-1]
    if key.endswith(b"\r"):
        key = key[:-1]
    c = json.loads(claims)
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
    print(header + "." + payload + "." + sig)


if __name__ == "__main__":
    main()
