# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""TLS (--tls-cert, --tls-key)."""
import shutil
import subprocess

from agtest import Skip, case, check, expect
from agtest.api import Client


@case("--tls-cert/--tls-key: HTTPS with the certificate, no plaintext on the port")
def t_tls(env):
    if not shutil.which("openssl"):
        raise Skip("openssl not found")
    crt, key = env.path("tls.crt"), env.path("tls.key")
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", crt, "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
                        "subjectAltName=IP:127.0.0.1"], capture_output=True)
    check(p.returncode == 0, "openssl cannot make a certificate")
    d = env.daemon("tls", "--tls-cert", crt, "--tls-key", key, tls_ca=crt).start()
    expect(d.api.get("/healthz"), 200, 'd == {"status": "ok"}')
    expect(d.api.put("/v1/agents/tl1", {"rate": 5}), 201, 'd["rate"] == 5')
    # No plaintext on the TLS port.
    try:
        status = Client("http://127.0.0.1:%d" % d.port).get("/healthz").status
    except OSError:
        status = None
    check(status != 200, "plain HTTP answered on the TLS listener")
    d.stop()
