// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Bearer tokens (auth.h): JWS compact serialization (RFC 7515), the claims
 * of RFC 7519 that agentgated reads, and the lifetime policy. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "core/policy.h"

static const struct {
	const char *name;
	unsigned int bit;
} scopes[] = {
	{ "ratings:write", AGD_SCOPE_RATINGS_WRITE },
	{ "agents:admin", AGD_SCOPE_AGENTS_ADMIN },
	{ "stream:read", AGD_SCOPE_STREAM_READ },
	{ "metrics:read", AGD_SCOPE_METRICS_READ },
};
_Static_assert(sizeof(scopes) / sizeof(scopes[0]) == AGD_SCOPES, "one row per scope");

#define AGD_AUTH_REASON_NAME(id, name) [AGD_AUTH_##id] = name,
static const char *const reason_names[] = { AGD_AUTH_REASONS(AGD_AUTH_REASON_NAME) };
#undef AGD_AUTH_REASON_NAME

const char *agd_auth_reason_name(enum agd_auth_reason r)
{
	return r > AGD_AUTH_OK && r < AGD_AUTH__MAX ? reason_names[r] : "ok";
}

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

/* ---- lifetimes ------------------------------------------------------------------ */

int agd_lifetimes_parse(const char *spec, struct agd_lifetimes *out, struct agd_err *err)
{
	const char *p = spec;

	memset(out, 0, sizeof(*out));
	while (p && *p) {
		size_t n = strcspn(p, ","), eq;
		char part[96], *val;
		double secs;
		unsigned int bit = 0;
		size_t i;

		if (n >= sizeof(part))
			return agd_errf(err, -EINVAL, "auth max lifetime '%.40s...': too long", p);
		memcpy(part, p, n);
		part[n] = 0;
		p += n + (p[n] == ',');
		eq = strcspn(part, "=");
		if (!part[eq])
			return agd_errf(err, -EINVAL, "auth max lifetime '%s': expected SCOPE=TIME "
					"or *=TIME", part);
		part[eq] = 0;
		val = part + eq + 1;
		if (strcmp(part, "*") && !(bit = agd_scope_parse(part, eq)))
			return agd_errf(err, -EINVAL, "auth max lifetime: unknown scope '%s' "
					"(ratings:write, agents:admin, stream:read, metrics:read "
					"or *)", part);
		if (agd_ttl_parse(val, &secs, err))
			return agd_errf(err, -EINVAL, "auth max lifetime for %s: '%s' is not a "
					"duration such as 15m or 24h (0: no limit)", part, val);
		if (!bit) {
			out->any = (int64_t)secs;
			continue;
		}
		for (i = 0; i < AGD_SCOPES; i++)
			if (bit == 1u << i)
				out->scope[i] = (int64_t)secs;
	}
	return 0;
}

/* The longest lifetime a token with these scopes may have; 0: none. */
static int64_t max_lifetime(const struct agd_lifetimes *l, unsigned int scopes_of)
{
	int64_t m = l->any;
	size_t i;

	for (i = 0; i < AGD_SCOPES; i++)
		if ((scopes_of & (1u << i)) && l->scope[i] && (!m || l->scope[i] < m))
			m = l->scope[i];
	return m;
}

/* ---- parsing -------------------------------------------------------------------- */

static int b64url_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	return c == '-' ? 62 : c == '_' ? 63 : -1;
}

/* Unpadded base64url (RFC 7515 section 2) into a new buffer; NULL when it
 * is not, including leftover bits that are not zero. */
static unsigned char *b64url_decode(const char *s, size_t n, size_t *out_len)
{
	unsigned char *out = malloc(n / 4 * 3 + 3);
	unsigned int acc = 0, bits = 0;
	size_t i, k = 0;

	if (!out || n % 4 == 1) {
		free(out);
		return NULL;
	}
	for (i = 0; i < n; i++) {
		int v = b64url_val((unsigned char)s[i]);

		if (v < 0) {
			free(out);
			return NULL;
		}
		acc = (acc << 6) | (unsigned int)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[k++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	if (acc) { /* non-canonical: another text for the same bytes */
		free(out);
		return NULL;
	}
	*out_len = k;
	return out;
}

static json_t *b64url_json(const char *s, size_t n)
{
	size_t len;
	unsigned char *raw = b64url_decode(s, n, &len);
	json_t *o = raw ? json_loadb((const char *)raw, len, JSON_REJECT_DUPLICATES, NULL) : NULL;

	free(raw);
	if (o && !json_is_object(o)) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* A NumericDate claim in whole seconds: 0, -ENOENT when absent, -EINVAL
 * when it is there but no integer (a real or a string must not pass as
 * absent: an "nbf" of 2e9 would then be ignored). */
static int claim_seconds(json_t *claims, const char *name, int64_t *out)
{
	json_t *v = json_object_get(claims, name);

	if (!v)
		return -ENOENT;
	if (!json_is_integer(v))
		return -EINVAL;
	*out = json_integer_value(v);
	return 0;
}

/* Unknown scope names are ignored: a token may carry scopes of other
 * services. */
static unsigned int scopes_of(json_t *claims)
{
	const char *s = json_string_value(json_object_get(claims, "scope"));
	json_t *arr = json_object_get(claims, "scopes"), *v;
	unsigned int bits = 0;
	size_t i;

	while (s && *s) {
		size_t n = strcspn(s, " ");

		bits |= agd_scope_parse(s, n);
		s += n;
		s += strspn(s, " ");
	}
	json_array_foreach(arr, i, v)
		if (json_is_string(v))
			bits |= agd_scope_parse(json_string_value(v), json_string_length(v));
	return bits;
}

static int refuse(enum agd_auth_reason *reason, enum agd_auth_reason r, char *why, size_t len,
		  const char *text)
{
	*reason = r;
	snprintf(why, len, "%s", text);
	return -EACCES;
}

/* The key that signed it: by kid, else each key of the token's algorithm
 * in turn. 0 and *key, or the refusal. */
static int find_key(const struct agd_auth *a, const char *alg_name, const char *kid,
		    const unsigned char *msg, size_t len, const unsigned char *sig,
		    size_t sig_len, const struct agd_key **key, enum agd_auth_reason *reason,
		    char *why, size_t why_len)
{
	enum agd_alg alg = agd_alg_parse(alg_name);
	bool kid_known = false, alg_known = false;
	size_t i;

	for (i = 0; a->keys && i < a->keys->n; i++) {
		const struct agd_key *k = &a->keys->keys[i];

		if (kid && k->kid[0] && strcmp(kid, k->kid))
			continue;
		if (kid && k->kid[0])
			kid_known = true;
		if (k->alg != alg)
			continue;
		alg_known = true;
		if (agd_key_verify(k, msg, len, sig, sig_len)) {
			*key = k;
			return 0;
		}
	}
	if (kid && !kid_known && !alg_known)
		return refuse(reason, AGD_AUTH_UNKNOWN_KID, why, why_len,
			      "token kid names no key of this server");
	if (!alg_known)
		return refuse(reason, AGD_AUTH_ALG, why, why_len,
			      "token algorithm is not the one of its key (HS256, RS256, ES256 or "
			      "EdDSA, fixed by the key)");
	return refuse(reason, AGD_AUTH_SIGNATURE, why, why_len,
		      "invalid token (bad signature)");
}

static int check_times(const struct agd_auth *a, json_t *claims, const struct agd_key *key,
		       time_t now, struct agd_token *out, enum agd_auth_reason *reason, char *why,
		       size_t why_len)
{
	int64_t nbf = 0, lim;

	switch (claim_seconds(claims, "exp", &out->exp)) {
	case -ENOENT:
		return refuse(reason, AGD_AUTH_EXPIRED, why, why_len, "token has no exp claim");
	case -EINVAL:
		return refuse(reason, AGD_AUTH_MALFORMED, why, why_len,
			      "token exp is not a whole number of seconds");
	}
	if (out->exp <= 0 || now >= out->exp)
		return refuse(reason, AGD_AUTH_EXPIRED, why, why_len, "token expired");
	switch (claim_seconds(claims, "nbf", &nbf)) {
	case -EINVAL:
		return refuse(reason, AGD_AUTH_MALFORMED, why, why_len,
			      "token nbf is not a whole number of seconds");
	case 0:
		if (nbf > now + AGD_AUTH_SKEW)
			return refuse(reason, AGD_AUTH_NOT_YET_VALID, why, why_len,
				      "token not valid yet (nbf)");
	}
	switch (claim_seconds(claims, "iat", &out->iat)) {
	case -EINVAL:
		return refuse(reason, AGD_AUTH_MALFORMED, why, why_len,
			      "token iat is not a whole number of seconds");
	case -ENOENT:
		out->iat = -1;
		break;
	case 0:
		if (out->iat > now + AGD_AUTH_SKEW)
			return refuse(reason, AGD_AUTH_NOT_YET_VALID, why, why_len,
				      "token issued in the future (iat)");
	}
	lim = max_lifetime(&a->life, out->scopes);
	if (lim && out->exp - (out->iat >= 0 ? out->iat : (int64_t)now) > lim) {
		snprintf(why, why_len, "token lives longer than its scopes allow (exp - %s at "
			 "most %lld s)", out->iat >= 0 ? "iat" : "now", (long long)lim);
		*reason = AGD_AUTH_LIFETIME;
		return -EACCES;
	}
	if (key->retired > 0 && (out->iat < 0 || out->iat > key->retired))
		return refuse(reason, AGD_AUTH_RETIRED_KEY, why, why_len,
			      "token signed by a retired key after it was retired (or without "
			      "iat)");
	return 0;
}

int agd_token_verify(const char *token, const struct agd_auth *a, time_t now,
		    struct agd_token *out, enum agd_auth_reason *reason, char *why, size_t why_len)
{
	const char *dot1, *dot2, *alg, *kid, *sub, *jti;
	const struct agd_key *key = NULL;
	json_t *header = NULL, *claims = NULL, *crit;
	unsigned char *sig = NULL;
	size_t sig_len, n;
	int err = -EACCES;

	memset(out, 0, sizeof(*out));
	*reason = AGD_AUTH_OK;
	if (!token || !*token)
		return refuse(reason, AGD_AUTH_MISSING, why, why_len, "missing bearer token");
	n = strlen(token);
	dot1 = strchr(token, '.');
	dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	if (n > AGD_TOKEN_MAX || !dot2 || strchr(dot2 + 1, '.') ||
	    !(header = b64url_json(token, (size_t)(dot1 - token))) ||
	    !(sig = b64url_decode(dot2 + 1, n - (size_t)(dot2 + 1 - token), &sig_len))) {
		refuse(reason, AGD_AUTH_MALFORMED, why, why_len,
		       "invalid token (malformed: three base64url parts of JSON)");
		goto out;
	}
	alg = json_string_value(json_object_get(header, "alg"));
	kid = json_string_value(json_object_get(header, "kid"));
	crit = json_object_get(header, "crit");
	if (!alg || crit || (json_object_get(header, "kid") && (!kid || strlen(kid) > AGD_KID_MAX))) {
		refuse(reason, AGD_AUTH_MALFORMED, why, why_len, "invalid token header (alg, kid "
		       "of at most 64 characters, no crit)");
		goto out;
	}
	if (find_key(a, alg, kid, (const unsigned char *)token, (size_t)(dot2 - token), sig,
		     sig_len, &key, reason, why, why_len))
		goto out;
	claims = b64url_json(dot1 + 1, (size_t)(dot2 - dot1 - 1));
	if (!claims) {
		refuse(reason, AGD_AUTH_MALFORMED, why, why_len, "invalid token (claims)");
		goto out;
	}
	out->scopes = scopes_of(claims);
	if (check_times(a, claims, key, now, out, reason, why, why_len))
		goto out;
	sub = json_string_value(json_object_get(claims, "sub"));
	jti = json_string_value(json_object_get(claims, "jti"));
	if ((sub && strlen(sub) > AGD_SUBJECT_MAX) || (jti && strlen(jti) > AGD_JTI_MAX)) {
		refuse(reason, AGD_AUTH_MALFORMED, why, why_len, "token sub or jti longer than "
		       "128 bytes");
		goto out;
	}
	snprintf(out->subject, sizeof(out->subject), "%s", sub ? sub : "");
	snprintf(out->jti, sizeof(out->jti), "%s", jti ? jti : "");
	snprintf(out->kid, sizeof(out->kid), "%s", key->kid);
	err = 0;
out:
	json_decref(header);
	json_decref(claims);
	free(sig);
	if (err)
		out->scopes = 0;
	return err;
}

/* ---- the operator's denylist ---------------------------------------------------- */

struct agd_denylist {
	char **jti, **sub; /* sorted */
	size_t n_jti, n_sub;
};

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void agd_denylist_free(struct agd_denylist *d)
{
	size_t i;

	if (!d)
		return;
	for (i = 0; i < d->n_jti; i++)
		free(d->jti[i]);
	for (i = 0; i < d->n_sub; i++)
		free(d->sub[i]);
	free(d->jti);
	free(d->sub);
	free(d);
}

static int deny_add(char ***list, size_t *n, const char *value)
{
	char **grown, *copy = strdup(value);

	if (!copy)
		return -ENOMEM;
	grown = realloc(*list, (*n + 1) * sizeof(**list));
	if (!grown) {
		free(copy);
		return -ENOMEM;
	}
	*list = grown;
	(*list)[(*n)++] = copy;
	return 0;
}

int agd_denylist_load(const char *path, struct agd_denylist **out, struct agd_err *err)
{
	struct agd_denylist *d;
	size_t cap = 0, lineno = 0;
	char *line = NULL;
	ssize_t len;
	FILE *f;
	int rc = 0;

	*out = NULL;
	if (!path || !*path)
		return 0;
	f = fopen(path, "re");
	if (!f)
		return agd_errf(err, -errno, "cannot read the denylist %s: %s", path,
				strerror(errno));
	d = calloc(1, sizeof(*d));
	if (!d) {
		fclose(f);
		return agd_errf(err, -ENOMEM, "out of memory");
	}
	while (!rc && (len = getline(&line, &cap, f)) >= 0) {
		char *p = line, *value;
		size_t vlen;

		lineno++;
		while (len && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' '))
			line[--len] = 0;
		p += strspn(p, " \t");
		if (!*p || *p == '#')
			continue;
		value = p + strcspn(p, " \t");
		if (*value)
			*value++ = 0;
		value += strspn(value, " \t");
		vlen = strlen(value);
		if ((strcmp(p, "jti") && strcmp(p, "sub")) || !vlen || vlen > AGD_JTI_MAX ||
		    strpbrk(value, " \t")) {
			rc = agd_errf(err, -EINVAL, "%s:%zu: expected 'jti ID' or 'sub SUBJECT' "
				      "(one value of 1 to %d bytes, no blanks)", path, lineno,
				      AGD_JTI_MAX);
			break;
		}
		if (d->n_jti + d->n_sub >= AGD_DENYLIST_MAX) {
			rc = agd_errf(err, -E2BIG, "%s:%zu: more than %d entries", path, lineno,
				      AGD_DENYLIST_MAX);
			break;
		}
		rc = !strcmp(p, "jti") ? deny_add(&d->jti, &d->n_jti, value) :
					 deny_add(&d->sub, &d->n_sub, value);
		if (rc)
			agd_errf(err, rc, "out of memory");
	}
	if (!rc && ferror(f))
		rc = agd_errf(err, -EIO, "cannot read the denylist %s", path);
	free(line);
	fclose(f);
	if (rc) {
		agd_denylist_free(d);
		return rc;
	}
	if (d->n_jti)
		qsort(d->jti, d->n_jti, sizeof(*d->jti), cmp_str);
	if (d->n_sub)
		qsort(d->sub, d->n_sub, sizeof(*d->sub), cmp_str);
	*out = d;
	return 0;
}

bool agd_denylist_has(const struct agd_denylist *d, const char *jti, const char *sub)
{
	if (!d)
		return false;
	if (jti && jti[0] && d->n_jti &&
	    bsearch(&jti, d->jti, d->n_jti, sizeof(*d->jti), cmp_str))
		return true;
	return sub && sub[0] && d->n_sub &&
	       bsearch(&sub, d->sub, d->n_sub, sizeof(*d->sub), cmp_str);
}
