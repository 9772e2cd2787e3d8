// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * TLS for the HTTP listener. CivetWeb takes the certificate and key from one
 * file; agentgated takes them apart (--tls-cert, --tls-key) and fills the
 * OpenSSL context itself through CivetWeb's init_ssl callback, which also
 * lets it refuse TLS below 1.2. The same code checks the files at start, so
 * a wrong file is a configuration error naming it, not a failed listener.
 */
#include <dlfcn.h>
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

/*
 * CivetWeb opens OpenSSL by the names "libssl.so" and "libcrypto.so"; the
 * two compat libraries (userspace/tlscompat) carry those SONAMEs, so once
 * loaded here the dynamic loader gives them to CivetWeb. They are looked
 * for next to the executable: lib/ (the build tree), then ../lib/agentgate/
 * (an installed tree). Full paths, not a RUNPATH: sanitizers intercept
 * dlopen, and the RUNPATH of the caller would then be theirs. Loaded once,
 * never unloaded.
 */
int agd_tls_load_compat(struct agd_err *err)
{
	static const char *const libs[] = { AGD_TLS_COMPAT_CRYPTO, AGD_TLS_COMPAT_SSL };
	static const char *const dirs[] = { "lib", "../lib/agentgate" };
	char exe[4096], path[4200], *slash;
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	size_t i, d;

	if (n <= 0) {
		return agd_errf(err, -1,
			"TLS: cannot find agentgated's own path: %s", strerror(errno));
	}
	exe[n] = 0;
	slash = strrchr(exe, '/');
	if (slash)
		*slash = 0;
	for (i = 0; i < sizeof(libs) / sizeof(libs[0]); i++) {
		bool loaded = false;

		for (d = 0; d < sizeof(dirs) / sizeof(dirs[0]) && !loaded; d++) {
			snprintf(path, sizeof(path), "%s/%s/%s", exe, dirs[d], libs[i]);
			loaded = access(path, R_OK) == 0 && dlopen(path, RTLD_NOW | RTLD_GLOBAL);
		}
		if (!loaded) {
			return agd_errf(err, -1,
				"TLS: cannot load %s from %s/lib/ or %s/../lib/agentgate/ "
				 "(make install puts it there)%s%s", libs[i], exe, exe,
				 access(path, R_OK) ? "" : ": ", access(path, R_OK) ? "" : dlerror());
		}
	}
	return 0;
}
