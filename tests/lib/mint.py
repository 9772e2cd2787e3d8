#!/usr/bin/python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Keys and tokens made by an independent library (PyJWT with cryptography,
Debian's python3-jwt and python3-cryptography), for the token tests. Run
with Debian's /usr/bin/python3: agtest.tokens calls it.

  mint.py keygen TYPE PRIVATE PUBLIC   TYPE: rsa, rsa1024, ec, ec384, ed
  mint.py tokens                       JSON lines on stdin, one token each
                                       on stdout: {"key": PATH, "alg": A,
                                       "claims": {...}, "kid": K (optional),
                                       "headers": {...} (optional)}

A key PATH is a PEM private key, or (HS256) a secret file read as
agentgated reads it (one trailing newline removed). Claim values "NOW+N" /
"NOW-N" become times relative to now.
"""
import json
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


def keygen(kind, private, public):
    if kind in ("rsa", "rsa1024"):
        k = rsa.generate_private_key(public_exponent=65537,
                                     key_size=1024 if kind == "rsa1024" else 2048)
    elif kind in ("ec", "ec384"):
        k = ec.generate_private_key(ec.SECP384R1() if kind == "ec384" else ec.SECP256R1())
    elif kind == "ed":
        k = ed25519.Ed25519PrivateKey.generate()
    else:
        raise SystemExit("mint.py: unknown key type %s" % kind)
    with open(private, "wb") as f:
        f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))
    with open(public, "wb") as f:
        f.write(k.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo))


def read_key(path, alg):
    with open(path, "rb") as f:
        data = f.read()
    if alg.startswith("HS"):
        if data.endswith(b"\n"):
            data = data[:-1]
        if data.endswith(b"\r"):
            data = data[:-1]
    return data


def tokens():
    now = int(time.time())
    for line in sys.stdin:
        req = json.loads(line)
        claims = dict(req["claims"])
        for k, v in list(claims.items()):
            if isinstance(v, str) and v.startswith("NOW"):
                claims[k] = now + int(v[3:] or 0)
        headers = dict(req.get("headers", {}))
        if req.get("kid"):
            headers["kid"] = req["kid"]
        key = read_key(req["key"], req["alg"]) if req.get("key") else None
        if req["alg"].startswith("HS") and key and key.startswith(b"-----BEGIN"):
            # PyJWT refuses a PEM key as an HMAC secret: sign by hand, as
            # an attacker would, to try the confusion on the server.
            import base64
            import hashlib
            import hmac

            def b64(raw):
                return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
            h = dict(headers, alg=req["alg"], typ="JWT")
            signing = b64(json.dumps(h).encode()) + "." + b64(json.dumps(claims).encode())
            sig = hmac.new(key, signing.encode(), hashlib.sha256).digest()
            print(signing + "." + b64(sig))
            continue
        print(jwt.encode(claims, key, algorithm=req["alg"], headers=headers or None))
    sys.stdout.flush()


def main():
    if sys.argv[1:2] == ["keygen"] and len(sys.argv) == 5:
        keygen(*sys.argv[2:])
    elif sys.argv[1:] == ["tokens"]:
        tokens()
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
