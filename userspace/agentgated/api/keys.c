// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The keys that verify bearer tokens (keys.h), with OpenSSL 3. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "keys.h"

static const char *const alg_names[] = {
	[AGD_ALG_HS256] = "HS256",
	[AGD_ALG_RS256] = "RS256",
	[AGD_ALG_ES256] = "ES256",
	[AGD_ALG_EDDSA] = "EdDSA",
};

enum agd_alg agd_alg_parse(const char *name)
{
	int a;

	for (a = AGD_ALG_HS256; a <= AGD_ALG_EDDSA; a++)
		if (name && !strcmp(name, alg_names[a]))
			return (enum agd_alg)a;
	return AGD_ALG_NONE;
}

const char *agd_alg_name(enum agd_alg alg)
{
	return alg >= AGD_ALG_HS256 && alg <= AGD_ALG_EDDSA ? alg_names[alg] : "none";
}

/* ---- reading -------------------------------------------------------------------- */

/* The file's bytes (at most AGD_AUTH_KEY_MAX) into buf: 0 and *len. */
static int read_small(const char *path, unsigned char *buf, size_t *len, struct agd_err *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), e;
	struct stat st;
	ssize_t n;

	if (fd < 0) {
		e = errno;
		return agd_errf(err, -e, "cannot read auth key file %s: %s", path, strerror(e));
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size > AGD_AUTH_KEY_MAX) {
		close(fd);
		return agd_errf(err, -EINVAL, "auth key file %s: not a regular file of at most "
				"%d bytes", path, AGD_AUTH_KEY_MAX);
	}
	n = read(fd, buf, AGD_AUTH_KEY_MAX);
	e = errno;
	close(fd);
	if (n < 0)
		return agd_errf(err, -e, "cannot read auth key file %s: %s", path, strerror(e));
	*len = (size_t)n;
	return 0;
}

static bool looks_pem(const unsigned char *b, size_t n)
{
	return n >= 10 && !memcmp(b, "-----BEGIN", 10);
}

static int load_secret(struct agd_key *k, const char *path, struct agd_err *err)
{
	size_t n;
	int rc = read_small(path, k->secret, &n, err);

	if (rc)
		return rc;
	if (n > 0 && k->secret[n - 1] == '\n')
		n--;
	if (n > 0 && k->secret[n - 1] == '\r')
		n--;
	if (looks_pem(k->secret, n))
		return agd_errf(err, -EINVAL, "auth key file %s holds a PEM key where an HS256 "
				"secret belongs (a public key is never an HMAC secret): name it "
				"KID.pem", path);
	if (n < 32)
		return agd_errf(err, -EINVAL, "auth key file %s holds %zu bytes: an HS256 secret "
				"needs at least 32", path, n);
	k->secret_len = n;
	k->alg = AGD_ALG_HS256;
	return 0;
}

static int load_public(struct agd_key *k, const char *path, const unsigned char *buf, size_t n,
		       struct agd_err *err)
{
	BIO *bio = BIO_new_mem_buf(buf, (int)n);
	EVP_PKEY *pkey = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
	char curve[32] = "";
	int id;

	BIO_free(bio);
	if (!pkey) {
		if (memmem(buf, n, "PRIVATE KEY", 11))
			return agd_errf(err, -EINVAL, "auth key file %s holds a private key: give "
					"agentgated the public key only (it never signs)", path);
		return agd_errf(err, -EINVAL, "auth key file %s: not a PEM public key "
				"(-----BEGIN PUBLIC KEY-----)", path);
	}
	id = EVP_PKEY_get_base_id(pkey);
	if (id == EVP_PKEY_RSA && EVP_PKEY_get_bits(pkey) >= 2048) {
		k->alg = AGD_ALG_RS256;
	} else if (id == EVP_PKEY_EC &&
		   EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, curve,
						  sizeof(curve), NULL) &&
		   !strcmp(curve, "prime256v1")) {
		k->alg = AGD_ALG_ES256;
	} else if (id == EVP_PKEY_ED25519) {
		k->alg = AGD_ALG_EDDSA;
	} else {
		EVP_PKEY_free(pkey);
		return agd_errf(err, -EINVAL, "auth key file %s: an RSA key of at least 2048 bits, "
				"an EC key on P-256 or an Ed25519 key is needed", path);
	}
	k->pkey = pkey;
	return 0;
}

/* A key file: PEM -> public key; else an HS256 secret when hs is true. */
static int load_key(struct agd_key *k, const char *path, bool hs, struct agd_err *err)
{
	unsigned char buf[AGD_AUTH_KEY_MAX];
	size_t n;
	int rc;

	snprintf(k->file, sizeof(k->file), "%s", path);
	if (hs)
		return load_secret(k, path, err);
	rc = read_small(path, buf, &n, err);
	if (rc)
		return rc;
	if (!looks_pem(buf, n))
		return agd_errf(err, -EINVAL, "auth key file %s: not a PEM public key%s", path,
				k->kid[0] ? " (a secret goes in KID.hs256)" : "");
	return load_public(k, path, buf, n, err);
}

/* KID.retired: a Unix time, an RFC 3339 UTC time, or empty (its mtime). */
static int load_retired(struct agd_key *k, const char *path, struct agd_err *err)
{
	unsigned char buf[AGD_AUTH_KEY_MAX + 1];
	struct stat st;
	struct tm tm = { 0 };
	char *text = (char *)buf, *end;
	size_t n;
	int rc = read_small(path, buf, &n, err);

	if (rc)
		return rc;
	buf[n] = 0;
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
		buf[--n] = 0;
	if (!n) {
		if (stat(path, &st))
			return agd_errf(err, -errno, "%s: %s", path, strerror(errno));
		k->retired = st.st_mtime;
		return 0;
	}
	errno = 0;
	k->retired = strtoll(text, &end, 10);
	if (!errno && !*end && k->retired > 0)
		return 0;
	end = strptime(text, "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (end && !*end) {
		k->retired = timegm(&tm);
		if (k->retired > 0)
			return 0;
	}
	return agd_errf(err, -EINVAL, "%s: expected a Unix time, a UTC time such as "
			"2026-12-01T00:00:00Z, or nothing (the file's mtime)", path);
}

static bool kid_ok(const char *s, size_t n)
{
	size_t i;

	if (!n || n > AGD_KID_MAX)
		return false;
	for (i = 0; i < n; i++)
		if (!(s[i] >= 'a' && s[i] <= 'z') && !(s[i] >= 'A' && s[i] <= 'Z') &&
		    !(s[i] >= '0' && s[i] <= '9') && !strchr("._-", s[i]))
			return false;
	return true;
}

static int by_file(const void *a, const void *b)
{
	return strcmp(((const struct agd_key *)a)->file, ((const struct agd_key *)b)->file);
}

static int load_dir(struct agd_keyset *ks, const char *dir, struct agd_err *err)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[4096];
	size_t i;
	int rc = 0;

	if (!d)
		return agd_errf(err, -errno, "cannot read the auth keys directory %s: %s", dir,
				strerror(errno));
	while (!rc && (de = readdir(d))) {
		const char *name = de->d_name, *dot = strrchr(name, '.');
		struct agd_key *k;
		bool hs;

		if (name[0] == '.' || !dot || (strcmp(dot, ".pem") && strcmp(dot, ".hs256")))
			continue;
		if (!kid_ok(name, (size_t)(dot - name))) {
			rc = agd_errf(err, -EINVAL, "%s/%s: a kid is 1 to %d of A-Z a-z 0-9 . _ -",
				      dir, name, AGD_KID_MAX);
			break;
		}
		if (ks->n == AGD_KEYS_MAX) {
			rc = agd_errf(err, -E2BIG, "%s: more than %d keys", dir, AGD_KEYS_MAX);
			break;
		}
		k = &ks->keys[ks->n];
		memset(k, 0, sizeof(*k));
		snprintf(k->kid, sizeof(k->kid), "%.*s", (int)(dot - name), name);
		for (i = 0; i < ks->n; i++)
			if (!strcmp(ks->keys[i].kid, k->kid))
				rc = agd_errf(err, -EINVAL, "%s: two keys with kid '%s'", dir, k->kid);
		hs = !strcmp(dot, ".hs256");
		snprintf(path, sizeof(path), "%s/%s", dir, name);
		if (!rc)
			rc = load_key(k, path, hs, err);
		if (!rc) {
			snprintf(path, sizeof(path), "%s/%s.retired", dir, k->kid);
			if (access(path, F_OK) == 0)
				rc = load_retired(k, path, err);
			ks->n++;
		}
	}
	closedir(d);
	if (!rc && !ks->n)
		rc = agd_errf(err, -ENOENT, "the auth keys directory %s holds no KID.pem or "
			      "KID.hs256 file", dir);
	qsort(ks->keys, ks->n, sizeof(*ks->keys), by_file);
	return rc;
}

int agd_keyset_load(const char *file, const char *dir, struct agd_keyset **out,
		   struct agd_err *err)
{
	struct agd_keyset *ks;
	int rc = 0;

	*out = NULL;
	if ((!file || !*file) && (!dir || !*dir))
		return 0;
	ks = calloc(1, sizeof(*ks));
	if (ks)
		ks->keys = calloc(AGD_KEYS_MAX + 1, sizeof(*ks->keys));
	if (!ks || !ks->keys) {
		agd_keyset_free(ks);
		return agd_errf(err, -ENOMEM, "out of memory");
	}
	if (dir && *dir)
		rc = load_dir(ks, dir, err);
	if (!rc && file && *file) {
		struct agd_key *k = &ks->keys[ks->n];
		unsigned char head[16];
		size_t n = 0;
		int fd = open(file, O_RDONLY | O_CLOEXEC);

		if (fd >= 0) {
			ssize_t r = read(fd, head, sizeof(head));

			n = r > 0 ? (size_t)r : 0;
			close(fd);
		}
		rc = load_key(k, file, !looks_pem(head, n), err);
		if (!rc)
			ks->n++;
	}
	if (rc) {
		agd_keyset_free(ks);
		return rc;
	}
	*out = ks;
	return 0;
}

void agd_keyset_free(struct agd_keyset *ks)
{
	size_t i;

	if (!ks)
		return;
	for (i = 0; ks->keys && i < ks->n; i++) {
		EVP_PKEY_free(ks->keys[i].pkey);
		OPENSSL_cleanse(ks->keys[i].secret, sizeof(ks->keys[i].secret));
	}
	free(ks->keys);
	free(ks);
}

/* ---- verifying -------------------------------------------------------------------- */

static bool verify_hs256(const struct agd_key *k, const unsigned char *msg, size_t len,
			 const unsigned char *sig, size_t sig_len)
{
	unsigned char mac[32];
	unsigned int mac_len = 0;

	if (sig_len != sizeof(mac) ||
	    !HMAC(EVP_sha256(), k->secret, (int)k->secret_len, msg, len, mac, &mac_len) ||
	    mac_len != sizeof(mac))
		return false;
	return CRYPTO_memcmp(mac, sig, sizeof(mac)) == 0;
}

/* JWS ES256 signatures are r || s (32 bytes each); OpenSSL wants DER. */
static unsigned char *es256_der(const unsigned char *sig, size_t *der_len)
{
	ECDSA_SIG *es = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
	unsigned char *der = NULL;
	int n;

	if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
		BN_free(r);
		BN_free(s);
		ECDSA_SIG_free(es);
		return NULL;
	}
	n = i2d_ECDSA_SIG(es, &der);
	ECDSA_SIG_free(es);
	if (n <= 0)
		return NULL;
	*der_len = (size_t)n;
	return der;
}

bool agd_key_verify(const struct agd_key *k, const unsigned char *msg, size_t len,
		    const unsigned char *sig, size_t sig_len)
{
	EVP_MD_CTX *ctx;
	unsigned char *der = NULL;
	bool ok = false;

	if (k->alg == AGD_ALG_HS256)
		return verify_hs256(k, msg, len, sig, sig_len);
	if (!k->pkey || (k->alg == AGD_ALG_ES256 && sig_len != 64) ||
	    (k->alg == AGD_ALG_EDDSA && sig_len != 64))
		return false;
	if (k->alg == AGD_ALG_ES256) {
		der = es256_der(sig, &sig_len);
		if (!der)
			return false;
		sig = der;
	}
	ctx = EVP_MD_CTX_new();
	if (ctx && EVP_DigestVerifyInit(ctx, NULL, k->alg == AGD_ALG_EDDSA ? NULL : EVP_sha256(),
					NULL, k->pkey) == 1)
		ok = EVP_DigestVerify(ctx, sig, sig_len, msg, len) == 1;
	EVP_MD_CTX_free(ctx);
	OPENSSL_free(der);
	return ok;
}
