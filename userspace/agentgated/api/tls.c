// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * TLS for the HTTP listener: the certificate and key (--tls-cert,
 * --tls-key) in an OpenSSL context that refuses TLS below 1.2. The same
 * code checks the files at start, so a wrong file is a configuration error
 * naming it, not a failed listener.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/ssl.h>

#include "tls.h"

/* The newest OpenSSL error as text (the queue is emptied). */
static const char *ssl_reason(char *buf, size_t len)
{
	unsigned long e = ERR_peek_last_error();

	if (!e)
		snprintf(buf, len, "unknown error");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

int agd_tls_configure(void *ssl_ctx, const char *cert, const char *key, struct agd_err *err)
{
	SSL_CTX *ctx = ssl_ctx;
	char why[256];

	ERR_clear_error();
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		return agd_errf(err, -1, "--tls-cert %s: not a readable PEM certificate (%s)", cert,
			 ssl_reason(why, sizeof(why)));
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH)
			snprintf(err->msg, sizeof(err->msg),
				"--tls-key %s does not belong to the certificate in %s",
				 key, cert);
		else
			snprintf(err->msg, sizeof(err->msg),
				"--tls-key %s: not a readable, unencrypted PEM private "
				 "key (%s)", key, ssl_reason(why, sizeof(why)));
		ERR_clear_error();
		return -1;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err->msg, sizeof(err->msg),
			"--tls-key %s does not belong to the certificate in %s", key, cert);
		ERR_clear_error();
		return -1;
	}
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		return agd_errf(err, -1,
			"cannot require TLS 1.2 (%s)", ssl_reason(why, sizeof(why)));
	}
	return 0;
}

int agd_tls_check(const char *cert, const char *key, struct agd_err *err)
{
	SSL_CTX *ctx;
	int rc;

	if (!cert[0] && !key[0])
		return 0;
	if (!cert[0] || !key[0]) {
		return agd_errf(err, -1,
			"--tls-cert and --tls-key go together: give both or neither");
	}
	if (access(cert, R_OK) || access(key, R_OK)) {
		const char *f = access(cert, R_OK) ? cert : key;

		return agd_errf(err, -1, "%s %s: %s", f == cert ? "--tls-cert" : "--tls-key", f,
			 strerror(errno));
	}
	ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		return agd_errf(err, -1, "cannot create a TLS context");
	}
	rc = agd_tls_configure(ctx, cert, key, err);
	SSL_CTX_free(ctx);
	return rc;
}

int agd_tls_context(const char *cert, const char *key, void **out, struct agd_err *err)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (!ctx)
		return agd_errf(err, -ENOMEM, "cannot create a TLS context");
	if (agd_tls_configure(ctx, cert, key, err)) {
		SSL_CTX_free(ctx);
		return -EINVAL;
	}
	/* Sessions resumed by ticket: no server-side cache to grow. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	*out = ctx;
	return 0;
}

void agd_tls_free(void *ctx)
{
	SSL_CTX_free(ctx);
}
