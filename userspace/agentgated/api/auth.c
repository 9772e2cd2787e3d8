// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"

static const struct {
	const char *name;
	unsigned int bit;
} scopes[] = {
	{ "ratings:write", AGD_SCOPE_RATINGS_WRITE },
	{ "agents:admin", AGD_SCOPE_AGENTS_ADMIN },
	{ "stream:read", AGD_SCOPE_STREAM_READ },
	{ "metrics:read", AGD_SCOPE_METRICS_READ },
};

unsigned int agd_scope_parse(const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < sizeof(scopes) / sizeof(scopes[0]); i++)
		if (strlen(scopes[i].name) == len && !memcmp(scopes[i].name, name, len))
			return scopes[i].bit;
	return 0;
}

const char *agd_scope_name(unsigned int scope)
{
	size_t i;

	for (i = 0; i < sizeof(scopes) / sizeof(scopes[0]); i++)
		if (scopes[i].bit == scope)
			return scopes[i].name;
	return "?";
}

static int refuse(char *why, size_t len, const char *reason)
{
	snprintf(why, len, "%s", reason);
	return -EACCES;
}

/* Unknown scope names are ignored: a token may carry scopes of other
 * services. */
static unsigned int scopes_of(jwt_t *jwt)
{
	const char *s = jwt_get_grant(jwt, "scope");
	unsigned int bits = 0;
	char *arr;

	while (s && *s) {
		size_t n = strcspn(s, " ");

		bits |= agd_scope_parse(s, n);
		s += n;
		s += strspn(s, " ");
	}
	arr = jwt_get_grants_json(jwt, "scopes");
	if (arr) {
		json_t *a = json_loads(arr, 0, NULL), *v;
		size_t i;

		json_array_foreach(a, i, v)
			if (json_is_string(v))
				bits |= agd_scope_parse(json_string_value(v), json_string_length(v));
		json_decref(a);
		free(arr);
	}
	return bits;
}

/* A NumericDate claim in whole seconds: 0, -ENOENT when absent, -EINVAL
 * when it is there but no integer (a real or a string must not pass as
 * absent: an "nbf" of 2e9 would then be ignored). */
static int claim_seconds(jwt_t *jwt, const char *name, long *out)
{
	char *text = jwt_get_grants_json(jwt, name);
	json_t *v;
	int err = -EINVAL;

	if (!text)
		return -ENOENT;
	v = json_loads(text, JSON_DECODE_ANY, NULL);
	if (json_is_integer(v)) {
		*out = (long)json_integer_value(v);
		err = 0;
	}
	json_decref(v);
	free(text);
	return err;
}

int agd_token_verify(const char *token, const unsigned char *key, size_t key_len, time_t now,
		    struct agd_token *out, char *why, size_t why_len)
{
	jwt_t *jwt = NULL;
	const char *sub, *alg;
	long exp = 0, nbf = 0;
	int err;

	if (!token || !*token)
		return refuse(why, why_len, "missing bearer token");
	if (jwt_decode(&jwt, token, key, (int)key_len) || !jwt) {
		if (jwt)
			jwt_free(jwt);
		return refuse(why, why_len, "invalid token (malformed, or bad signature)");
	}
	err = -EACCES;
	/* libjwt reads "alg" case-insensitively; JWS names are case-sensitive. */
	alg = jwt_get_header(jwt, "alg");
	if (jwt_get_alg(jwt) != JWT_ALG_HS256 || !alg || strcmp(alg, "HS256")) {
		refuse(why, why_len, "token algorithm must be HS256");
		goto cleanup;
	}
	switch (claim_seconds(jwt, "exp", &exp)) {
	case -ENOENT:
		refuse(why, why_len, "token has no exp claim");
		goto cleanup;
	case -EINVAL:
		refuse(why, why_len, "token exp is not a whole number of seconds");
		goto cleanup;
	}
	if (exp <= 0 || now >= exp) {
		refuse(why, why_len, "token expired");
		goto cleanup;
	}
	switch (claim_seconds(jwt, "nbf", &nbf)) {
	case -EINVAL:
		refuse(why, why_len, "token nbf is not a whole number of seconds");
		goto cleanup;
	case 0:
		if (nbf > now) {
			refuse(why, why_len, "token not valid yet (nbf)");
			goto cleanup;
		}
	}
	out->scopes = scopes_of(jwt);
	sub = jwt_get_grant(jwt, "sub");
	snprintf(out->subject, sizeof(out->subject), "%s", sub ? sub : "");
	err = 0;
cleanup:
	jwt_free(jwt);
	return err;
}

int agd_auth_key_load(const char *path, unsigned char *key, size_t *len, struct agd_err *why)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0) {
		int err = errno;

		return agd_errf(why, -err, "cannot read auth key file %s: %s", path, strerror(err));
	}
	n = read(fd, key, AGD_AUTH_KEY_MAX);
	close(fd);
	if (n < 0) {
		return agd_errf(why, -EIO, "cannot read auth key file %s: %s", path,
				strerror(errno));
	}
	if (n > 0 && key[n - 1] == '\n')
		n--;
	if (n > 0 && key[n - 1] == '\r')
		n--;
	if (n < 32) {
		return agd_errf(why, -EINVAL, "auth key file %s holds %zd bytes: an HS256 secret "
				"needs at least 32", path, n);
	}
	*len = (size_t)n;
	return 0;
}
