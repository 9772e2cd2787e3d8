// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * libagentgate-ssl.so: what CivetWeb 1.15 finds when it opens "libssl.so".
 *
 * CivetWeb loads OpenSSL with dlopen("libssl.so") and looks its functions up
 * by name. Built for OpenSSL 1.1 (as Debian 12 ships it), it requires
 * SSL_get_peer_certificate, which OpenSSL 3 provides only as a macro for
 * SSL_get1_peer_certificate, so TLS cannot start. agentgated loads this
 * library before CivetWeb starts TLS; its SONAME is "libssl.so", so the
 * dynamic loader hands it to CivetWeb's dlopen, and every other function is
 * found in libssl.so.3, which it depends on. It also spares production
 * hosts the libssl-dev package, the only one with the libssl.so symlink.
 */
#include <openssl/ssl.h>

#undef SSL_get_peer_certificate

X509 *SSL_get_peer_certificate(const SSL *ssl);

/* Both return a new reference, which CivetWeb frees with X509_free. */
X509 *SSL_get_peer_certificate(const SSL *ssl)
{
	return SSL_get1_peer_certificate(ssl);
}
