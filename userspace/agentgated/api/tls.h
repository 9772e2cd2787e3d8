/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* TLS for the HTTP listener (HTTPS and WSS): certificate and key checks and
 * the OpenSSL context the server (server.c) serves with. */
#ifndef AGENTGATED_TLS_H
#define AGENTGATED_TLS_H

#include <stddef.h>
#include "core/err.h"

/* Both or neither given; if given, the certificate chain and the private key
 * load and belong together. 0, or -1 with a message naming the file. */
int agd_tls_check(const char *cert, const char *key, struct agd_err *err);

/* Put the certificate chain and key into an SSL_CTX (an SSL_CTX *), TLS 1.2
 * at least. 0, or -1 with a message. */
int agd_tls_configure(void *ssl_ctx, const char *cert, const char *key, struct agd_err *err);

/* A server context with cert and key (an SSL_CTX * into *out): 0, or a
 * negative errno with a message. */
int agd_tls_context(const char *cert, const char *key, void **out, struct agd_err *err);
void agd_tls_free(void *ctx);

#endif
