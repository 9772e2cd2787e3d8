// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Bearer tokens (userspace/agentgated/api/auth.c): agd_token_verify with one
 * HS256 key and a 24 h lifetime limit, and agd_scope_parse.
 *
 * Input: one flag byte, then
 *   raw (flag bit 0 clear): the token text as a client sends it (with bit 2
 *   set: an --auth-max-lifetime value for agd_lifetimes_parse);
 *   built (bit 0 set): 4 bytes moving the clock, then the header JSON, a NUL
 *   and the payload JSON, which the harness encodes and signs with HS256
 *   (with the wrong key when bit 1 is set), so the fuzzer reaches the claim
 *   checks behind the signature.
 * Every accepted token is checked against a reference written from RFC 7519
 * and the API's documented rules with OpenSSL's HMAC: three base64url parts,
 * a header naming HS256 and no "crit", a signature that is the
 * HMAC-SHA256 of the first two parts under the daemon's key, an "exp"
 * claim in the future, no "nbf" or "iat" more than AGD_AUTH_SKEW in the
 * future, a lifetime (exp - iat, or exp - now) of at most LIFETIME, and
 * the scopes and subject the claims name. A built token that meets all of
 * these must be accepted.
 */
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <time.h>

#include "api/auth.h"
#include "fuzz.h"

#define NOW 1763700000L /* 2025-11-21 */
#define LIFETIME 86400

static const unsigned char key[] = "fuzz-key-0123456789-0123456789-0123456789";
static const unsigned char wrong_key[] = "not-the-key-0123456789-0123456789-0123456";

/* ---- base64url, from RFC 4648 section 5 ------------------------------------ */

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static char *b64url_encode(const unsigned char *p, size_t n)
{
	char *out = malloc(n / 3 * 4 + 5), *o = out;
	size_t i;

	if (!out)
		abort();
	for (i = 0; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];

		*o++ = b64url[v >> 18];
		*o++ = b64url[(v >> 12) & 63];
		*o++ = b64url[(v >> 6) & 63];
		*o++ = b64url[v & 63];
	}
	if (n - i == 1) {
		*o++ = b64url[p[i] >> 2];
		*o++ = b64url[(p[i] & 3) << 4];
	} else if (n - i == 2) {
		*o++ = b64url[p[i] >> 2];
		*o++ = b64url[((p[i] & 3) << 4) | (p[i + 1] >> 4)];
		*o++ = b64url[(p[i + 1] & 15) << 2];
	}
	*o = 0;
	return out;
}

/* Decodes n characters of base64url without padding; NULL if malformed. */
static unsigned char *b64url_decode(const char *s, size_t n, size_t *len)
{
	unsigned char *out = malloc(n * 3 / 4 + 1);
	uint32_t acc = 0;
	size_t i, o = 0;
	int bits = 0;

	if (!out)
		abort();
	for (i = 0; i < n; i++) {
		const char *c = s[i] ? strchr(b64url, s[i]) : NULL;

		if (!c) {
			free(out);
			return NULL;
		}
		acc = acc << 6 | (uint32_t)(c - b64url);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	out[o] = 0;
	*len = o;
	return out;
}

/* Up to the first NUL, as libjwt reads it: bytes after a NUL inside the
 * signed part are ignored, harmless since the signature covers them. */
static json_t *decode_part(const char *s, size_t n)
{
	size_t len;
	unsigned char *raw = b64url_decode(s, n, &len);
	json_t *j = raw ? json_loads((const char *)raw, 0, NULL) : NULL;

	free(raw);
	return j;
}

static char *hmac_b64(const unsigned char *k, size_t klen, const char *msg, size_t n)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;

	if (!HMAC(EVP_sha256(), k, (int)klen, (const unsigned char *)msg, n, mac, &mac_len))
		abort();
	return b64url_encode(mac, mac_len);
}

/* ---- the reference ------------------------------------------------------ */

static unsigned int ref_scopes(json_t *claims)
{
	static const char *const names[] = { "ratings:write", "agents:admin", "stream:read",
					     "metrics:read" };
	const char *s = json_string_value(json_object_get(claims, "scope"));
	json_t *arr = json_object_get(claims, "scopes"), *v;
	unsigned int bits = 0, i;
	size_t k;

	for (i = 0; i < 4; i++) {
		size_t len = strlen(names[i]);
		const char *p = s;

		while (p && (p = strstr(p, names[i]))) {
			if ((p == s || p[-1] == ' ') && (p[len] == ' ' || !p[len]))
				bits |= 1u << i;
			p += len;
		}
		json_array_foreach(arr, k, v)
			if (json_is_string(v) && !strcmp(json_string_value(v), names[i]))
				bits |= 1u << i;
	}
	return bits;
}

/* An accepted token must meet every rule; returns what is broken or NULL. */
static const char *ref_broken(const char *token, time_t now, const struct agd_token *t)
{
	const char *dot1 = strchr(token, '.'), *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	const char *why = NULL, *sub;
	json_t *hdr = NULL, *claims = NULL, *exp, *nbf;
	char *mac = NULL;

	if (!dot2 || strchr(dot2 + 1, '.'))
		return "not three parts";
	hdr = decode_part(token, (size_t)(dot1 - token));
	claims = decode_part(dot1 + 1, (size_t)(dot2 - dot1 - 1));
	mac = hmac_b64(key, sizeof(key) - 1, token, (size_t)(dot2 - token));
	exp = json_object_get(claims, "exp");
	nbf = json_object_get(claims, "nbf");
	sub = json_string_value(json_object_get(claims, "sub"));
	if (!json_is_object(hdr) || !json_is_object(claims))
		why = "header or claims are not base64url JSON objects";
	else if (!json_is_string(json_object_get(hdr, "alg")) ||
		 strcmp(json_string_value(json_object_get(hdr, "alg")), "HS256"))
		why = "algorithm is not HS256";
	else if (strcmp(mac, dot2 + 1))
		why = "signature is not the HMAC-SHA256 under the key";
	else if (!json_is_number(exp) || json_number_value(exp) <= (double)now)
		why = "exp missing, not a number, or past";
	else if (nbf && (!json_is_number(nbf) ||
			 json_number_value(nbf) > (double)(now + AGD_AUTH_SKEW)))
		why = "nbf not a number, or in the future";
	else if (json_object_get(hdr, "crit"))
		why = "a crit header";
	else if (json_object_get(claims, "iat") &&
		 (!json_is_integer(json_object_get(claims, "iat")) ||
		  json_integer_value(json_object_get(claims, "iat")) > now + AGD_AUTH_SKEW))
		why = "iat not a whole number, or in the future";
	else if (json_number_value(exp) -
		 (json_object_get(claims, "iat") ?
			  (double)json_integer_value(json_object_get(claims, "iat")) : (double)now) >
		 LIFETIME)
		why = "lives longer than the lifetime limit";
	else if (t->scopes != ref_scopes(claims))
		why = "scopes differ from the claims";
	else if (strncmp(t->subject, sub ? sub : "", AGD_SUBJECT_MAX))
		why = "subject differs from sub";
	free(mac);
	json_decref(hdr);
	json_decref(claims);
	return why;
}

/* A built token meeting the rules with plain claims must pass. */
static bool plainly_valid(json_t *hdr, json_t *claims, time_t now)
{
	json_t *exp = json_object_get(claims, "exp"), *nbf = json_object_get(claims, "nbf");
	const char *k;
	json_t *v;

	if (!json_is_object(hdr) || !json_is_object(claims))
		return false;
	json_object_foreach(hdr, k, v)
		if (strcmp(k, "alg") && !(!strcmp(k, "typ") && json_is_string(v) &&
					  !strcmp(json_string_value(v), "JWT")))
			return false;
	if (!json_is_string(json_object_get(hdr, "alg")) ||
	    strcmp(json_string_value(json_object_get(hdr, "alg")), "HS256"))
		return false;
	json_t *iat = json_object_get(claims, "iat"), *sub = json_object_get(claims, "sub"),
	       *jti = json_object_get(claims, "jti");

	if (!json_is_integer(exp) || json_integer_value(exp) <= now ||
	    json_integer_value(exp) <= 0)
		return false;
	if (iat && (!json_is_integer(iat) || json_integer_value(iat) > now))
		return false;
	if (json_integer_value(exp) - (iat ? json_integer_value(iat) : now) > LIFETIME)
		return false;
	if ((json_is_string(sub) && json_string_length(sub) > AGD_SUBJECT_MAX) ||
	    (json_is_string(jti) && json_string_length(jti) > AGD_JTI_MAX))
		return false;
	return !nbf || (json_is_integer(nbf) && json_integer_value(nbf) <= now);
}

/* ---- the harness ----------------------------------------------------------- */

static void verify(const char *token, time_t now, bool must_pass)
{
	struct agd_token t;
	char why[128] = "";
	const char *broken;
	int err;

	struct agd_key k = { .alg = AGD_ALG_HS256, .secret_len = sizeof(key) - 1 };
	struct agd_keyset ks = { &k, 1 };
	struct agd_auth a = { .keys = &ks, .life = { .any = LIFETIME } };
	enum agd_auth_reason reason;

	memcpy(k.secret, key, sizeof(key) - 1);
	memset(&t, 0xa5, sizeof(t));
	err = agd_token_verify(token, &a, now, &t, &reason, why, sizeof(why));
	if (err) {
		FUZZ_CHECK(err == -EACCES && why[0] && reason > AGD_AUTH_OK && reason < AGD_AUTH__MAX,
			   "refusal %d without a reason", err);
		FUZZ_CHECK(!must_pass, "valid token refused (%s): %s", why, token);
		return;
	}
	FUZZ_CHECK(memchr(t.subject, 0, sizeof(t.subject)), "subject unterminated");
	broken = ref_broken(token, now, &t);
	FUZZ_CHECK(!broken, "token accepted although %s: %s", broken, token);
}

static void fuzz_built(uint8_t flags, struct fuzz_in *in)
{
	time_t now = NOW + (int32_t)fuzz_uint(in, 4);
	size_t len, hlen;
	char *text = fuzz_rest_str(in, &len), *b64h, *b64c, *msg, *mac, *token;
	const char *claims_text = memchr(text, 0, len) ? text + strlen(text) + 1 : text;
	const char *hdr_text = claims_text == text ? "{\"alg\":\"HS256\",\"typ\":\"JWT\"}" : text;
	bool wrong = flags & 2;
	json_t *hdr, *claims;

	hlen = strlen(hdr_text);
	b64h = b64url_encode((const unsigned char *)hdr_text, hlen);
	b64c = b64url_encode((const unsigned char *)claims_text,
			     len - (size_t)(claims_text - text));
	if (asprintf(&msg, "%s.%s", b64h, b64c) < 0)
		abort();
	mac = wrong ? hmac_b64(wrong_key, sizeof(wrong_key) - 1, msg, strlen(msg)) :
		      hmac_b64(key, sizeof(key) - 1, msg, strlen(msg));
	if (asprintf(&token, "%s.%s", msg, mac) < 0)
		abort();
	hdr = json_loads(hdr_text, JSON_REJECT_DUPLICATES, NULL);
	/* A NUL inside the claims: libjwt reads them as a C string. */
	claims = memchr(claims_text, 0, len - (size_t)(claims_text - text)) ?
			 NULL :
			 json_loadb(claims_text, len - (size_t)(claims_text - text),
				    JSON_REJECT_DUPLICATES, NULL);
	verify(token, now, !wrong && plainly_valid(hdr, claims, now));
	json_decref(hdr);
	json_decref(claims);
	free(token);
	free(mac);
	free(msg);
	free(b64c);
	free(b64h);
	free(text);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_keep_stderr();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	uint8_t flags = fuzz_u8(&in);
	char *text;
	size_t len;

	if (flags & 1) {
		fuzz_built(flags, &in);
		return 0;
	}
	text = fuzz_rest_str(&in, &len);
	if (flags & 4) { /* --auth-max-lifetime's syntax */
		struct agd_lifetimes l;
		struct agd_err why = { 0 };
		size_t i;

		if (agd_lifetimes_parse(text, &l, &why))
			FUZZ_CHECK(strstr(why.msg, "lifetime"), "refused without naming it: %s",
				   why.msg);
		else
			for (i = 0; i < AGD_SCOPES; i++)
				FUZZ_CHECK(l.scope[i] >= 0 && l.any >= 0, "a negative lifetime");
		free(text);
		return 0;
	}
	verify(text, NOW, false);
	FUZZ_CHECK(agd_scope_parse(text, len) == 0 || agd_scope_name(agd_scope_parse(text, len))[0] != '?',
		   "scope name");
	free(text);
	return 0;
}
