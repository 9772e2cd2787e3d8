// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Rule feed refreshes (feeds.h). */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "feeds.h"

#ifndef AG_VERSION
#define AG_VERSION "dev"
#endif

/* A feed the thread looks after: when it is due next. */
struct due {
	char agent[AG_NAME_MAX + 1];
	char source[AGD_FEED_SOURCE_MAX + 1];
	__u64 next_ms; /* CLOCK_MONOTONIC */
	bool seen;     /* still bound (this pass) */
};

struct agd_feeds {
	struct agd_engine *e;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cv;
	struct agd_feeds_opts o;
	bool kicked;
	atomic_bool stop; /* also ends a fetch under way */
	struct due *due;
	size_t n_due, cap_due;
};

static __u64 now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (__u64)ts.tv_sec * 1000 + (__u64)ts.tv_nsec / 1000000;
}

/* ---- one fetch ------------------------------------------------------------------ */

static enum agd_fetch_result fail(struct agd_fetch *out, int reason, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static enum agd_fetch_result fail(struct agd_fetch *out, int reason, const char *fmt, ...)
{
	va_list ap;

	free(out->body);
	out->body = NULL;
	out->len = 0;
	out->reason = reason;
	va_start(ap, fmt);
	vsnprintf(out->why, sizeof(out->why), fmt, ap);
	va_end(ap);
	return AGD_FETCH_FAILED;
}

static enum agd_fetch_result fetch_file(const char *path, const char *etag, size_t max,
					struct agd_fetch *out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	struct stat st;
	size_t got = 0;

	if (fd < 0)
		return fail(out, AGD_FEED_UNREACHABLE, "cannot open %s: %s", path, strerror(errno));
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return fail(out, AGD_FEED_UNREACHABLE, "%s is not a regular file", path);
	}
	snprintf(out->etag, sizeof(out->etag), "file:%ju:%jd:%jd.%09ld", (uintmax_t)st.st_ino,
		 (intmax_t)st.st_size, (intmax_t)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
	if (etag && !strcmp(etag, out->etag)) {
		close(fd);
		return AGD_FETCH_NOT_MODIFIED;
	}
	if ((__u64)st.st_size > max) {
		close(fd);
		return fail(out, AGD_FEED_OVERSIZED, "%s holds %jd bytes, more than %zu", path,
			    (intmax_t)st.st_size, max);
	}
	out->body = malloc((size_t)st.st_size + 1);
	if (!out->body) {
		close(fd);
		return fail(out, AGD_FEED_UNREACHABLE, "out of memory");
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, out->body + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int e = n < 0 ? errno : 0;

			close(fd);
			return fail(out, AGD_FEED_UNREACHABLE, "cannot read %s: %s", path,
				    e ? strerror(e) : "it shrank while read");
		}
		got += (size_t)n;
	}
	close(fd);
	out->body[got] = 0;
	out->len = got;
	return AGD_FETCH_OK;
}

struct http_body {
	struct agd_fetch *out;
	size_t max, cap;
	bool too_big;
	const atomic_bool *stop;
};

static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	const struct http_body *b = arg;

	(void)dt, (void)dn, (void)ut, (void)un;
	return b->stop && atomic_load(b->stop);
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
	struct http_body *b = arg;
	size_t len = size * n;

	if (b->out->len + len > b->max) {
		b->too_big = true;
		return 0; /* aborts the transfer */
	}
	if (b->out->len + len + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 65536;
		char *grown;

		while (cap < b->out->len + len + 1)
			cap *= 2;
		grown = realloc(b->out->body, cap);
		if (!grown)
			return 0;
		b->out->body = grown;
		b->cap = cap;
	}
	memcpy(b->out->body + b->out->len, data, len);
	b->out->len += len;
	b->out->body[b->out->len] = 0;
	return len;
}

/* Keeps ETag and Last-Modified of the last response (after redirects). */
static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
	struct agd_fetch *out = arg;
	size_t len = size * n, vlen;
	const char *v;

	if (len >= 5 && !strncmp(data, "HTTP/", 5)) {
		out->etag[0] = out->last_modified[0] = 0;
		return len;
	}
	if (len > 5 && !strncasecmp(data, "ETag:", 5))
		v = data + 5;
	else if (len > 14 && !strncasecmp(data, "Last-Modified:", 14))
		v = data + 14;
	else
		return len;
	vlen = len - (size_t)(v - data);
	while (vlen && (*v == ' ' || *v == '\t'))
		v++, vlen--;
	while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
		vlen--;
	if (vlen > AGD_FEED_VALIDATOR_MAX || memchr(v, 0, vlen))
		return len; /* not kept: the next request is unconditional */
	if (tolower((unsigned char)data[0]) == 'e')
		snprintf(out->etag, sizeof(out->etag), "%.*s", (int)vlen, v);
	else
		snprintf(out->last_modified, sizeof(out->last_modified), "%.*s", (int)vlen, v);
	return len;
}

static enum agd_fetch_result fetch_http(const char *url, const char *etag, const char *lastmod,
					size_t max, __u64 timeout_ms, const char *ca_file,
					const atomic_bool *stop, struct agd_fetch *out)
{
	struct http_body b = { .out = out, .max = max, .stop = stop };
	struct curl_slist *hdrs = NULL;
	char errbuf[CURL_ERROR_SIZE] = "", h[AGD_FEED_VALIDATOR_MAX + 32];
	long status = 0;
	CURL *c = curl_easy_init();
	CURLcode rc;

	if (!c)
		return fail(out, AGD_FEED_UNREACHABLE, "cannot start an HTTP client");
	if (etag && etag[0]) {
		snprintf(h, sizeof(h), "If-None-Match: %s", etag);
		hdrs = curl_slist_append(hdrs, h);
	}
	if (lastmod && lastmod[0]) {
		snprintf(h, sizeof(h), "If-Modified-Since: %s", lastmod);
		hdrs = curl_slist_append(hdrs, h);
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "agentgated/" AG_VERSION);
	curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, ""); /* decoded bytes count to max */
	curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, out);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	if (ca_file && ca_file[0])
		curl_easy_setopt(c, CURLOPT_CAINFO, ca_file);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, &b);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	curl_slist_free_all(hdrs);
	if (b.too_big || rc == CURLE_FILESIZE_EXCEEDED)
		return fail(out, AGD_FEED_OVERSIZED, "%s: more than %zu bytes", url, max);
	if (rc != CURLE_OK)
		return fail(out, AGD_FEED_UNREACHABLE, "%s: %s", url,
			    errbuf[0] ? errbuf : curl_easy_strerror(rc));
	if (status == 304)
		return AGD_FETCH_NOT_MODIFIED;
	if (status != 200)
		return fail(out, AGD_FEED_UNREACHABLE, "%s: HTTP status %ld", url, status);
	if (!out->body) {
		out->body = calloc(1, 1);
		if (!out->body)
			return fail(out, AGD_FEED_UNREACHABLE, "out of memory");
	}
	return AGD_FETCH_OK;
}

enum agd_fetch_result agd_feed_fetch(const char *source, const char *etag,
				     const char *last_modified, size_t max_bytes,
				     __u64 timeout_ms, const char *ca_file, const atomic_bool *stop,
				     struct agd_fetch *out)
{
	memset(out, 0, sizeof(*out));
	out->reason = -1;
	if (source[0] == '/')
		return fetch_file(source, etag, max_bytes, out);
	if (!strncmp(source, "file://", 7))
		return fetch_file(source + 7, etag, max_bytes, out);
	return fetch_http(source, etag, last_modified, max_bytes, timeout_ms, ca_file, stop, out);
}

/* ---- one refresh ------------------------------------------------------------------ */

static void refresh(struct agd_feeds *f, const struct agd_feed_info *fi,
		    const struct agd_feeds_opts *o)
{
	const char *agent = fi->agent, *source = fi->meta.source;
	struct agd_feed_set set = { 0 };
	struct agd_feed_meta m;
	struct agd_err why = { 0 };
	struct agd_fetch got;
	size_t before;
	int reason = -1, err;

	switch (agd_feed_fetch(source, fi->meta.etag, fi->meta.last_modified, o->max_bytes,
			       o->timeout_ms, o->ca_file, &f->stop, &got)) {
	case AGD_FETCH_NOT_MODIFIED:
		agd_engine_feed_checked(f->e, agent, source, -1, false, NULL, NULL, NULL);
		return;
	case AGD_FETCH_FAILED:
		reason = got.reason;
		snprintf(why.msg, sizeof(why.msg), "%s", got.why);
		goto failed;
	case AGD_FETCH_OK:
		break;
	}
	err = agd_feed_parse(got.body, got.len, o->max_prefixes, &set, &why);
	free(got.body);
	if (err) {
		reason = err == -E2BIG ? AGD_FEED_OVERSIZED : AGD_FEED_MALFORMED;
		goto failed;
	}
	if (agd_feed_digest(&set) == fi->meta.digest && fi->meta.applied_ms) {
		agd_engine_feed_checked(f->e, agent, source, -1, false, NULL, got.etag,
					got.last_modified);
		agd_feed_set_free(&set);
		return;
	}
	before = fi->prefixes;
	if (before && o->max_shrink < 1 && (double)(before - (set.n < before ? set.n : before)) >
						   o->max_shrink * (double)before) {
		reason = AGD_FEED_SHRUNK;
		agd_errf(&why, -EINVAL, "%zu of its %zu prefixes would go (more than %g%%, "
			 "--rule-feed-max-shrink)", before - set.n, before, o->max_shrink * 100);
		goto failed;
	}
	memset(&m, 0, sizeof(m));
	snprintf(m.source, sizeof(m.source), "%s", source);
	snprintf(m.etag, sizeof(m.etag), "%s", got.etag);
	snprintf(m.last_modified, sizeof(m.last_modified), "%s", got.last_modified);
	err = agd_engine_feed_set(f->e, agent, &set, &m, "feed", &why);
	if (err == -ESTALE || err == -ENOENT) { /* rebound or deleted meanwhile */
		agd_feed_set_free(&set);
		return;
	}
	if (err) {
		reason = AGD_FEED_REFUSED;
		goto failed;
	}
	o->log(AGD_LOG_INFO, "feed of '%s': %zu prefixes from %s", agent, set.n, source);
	agd_feed_set_free(&set);
	agd_engine_feed_checked(f->e, agent, source, -1, true, NULL, NULL, NULL);
	return;
failed:
	agd_feed_set_free(&set);
	o->log(AGD_LOG_WARN, "feed of '%s' not refreshed (%s), its last good set of %zu prefixes "
	       "stays: %s", agent, agd_feed_reason_names[reason], fi->prefixes, why.msg);
	agd_engine_feed_checked(f->e, agent, source, reason, false, why.msg, NULL, NULL);
}

/* ---- the thread ----------------------------------------------------------------------- */

static struct due *due_of(struct agd_feeds *f, const struct agd_feed_info *fi)
{
	size_t i;

	for (i = 0; i < f->n_due; i++)
		if (!strcmp(f->due[i].agent, fi->agent) && !strcmp(f->due[i].source, fi->meta.source))
			return &f->due[i];
	if (f->n_due == f->cap_due) {
		size_t cap = f->cap_due ? f->cap_due * 2 : 16;
		struct due *grown = realloc(f->due, cap * sizeof(*grown));

		if (!grown)
			return NULL;
		f->due = grown;
		f->cap_due = cap;
	}
	memset(&f->due[f->n_due], 0, sizeof(f->due[0]));
	snprintf(f->due[f->n_due].agent, sizeof(f->due[0].agent), "%s", fi->agent);
	snprintf(f->due[f->n_due].source, sizeof(f->due[0].source), "%s", fi->meta.source);
	f->due[f->n_due].next_ms = 0; /* new: due now */
	return &f->due[f->n_due++];
}

/* One pass: refreshes what is due; returns when the next one is. */
static __u64 pass(struct agd_feeds *f)
{
	struct agd_feed_info *list = NULL;
	struct agd_feeds_opts o;
	__u64 next = now_ms() + 1000;
	size_t n = 0, i, k;

	pthread_mutex_lock(&f->lock);
	o = f->o;
	pthread_mutex_unlock(&f->lock);
	if (agd_engine_feeds(f->e, &list, &n))
		return next;
	for (i = 0; i < f->n_due; i++)
		f->due[i].seen = false;
	for (i = 0; i < n; i++) {
		struct due *d;

		if (!list[i].meta.source[0])
			continue; /* a set given whole: nothing to read */
		d = due_of(f, &list[i]);
		if (!d)
			continue;
		d->seen = true;
		if (now_ms() >= d->next_ms) {
			refresh(f, &list[i], &o);
			d->next_ms = now_ms() + (list[i].meta.interval_ms ? list[i].meta.interval_ms :
									      o.interval_ms);
		}
		if (d->next_ms < next)
			next = d->next_ms;
		if (atomic_load(&f->stop))
			break;
	}
	for (i = k = 0; i < f->n_due; i++) /* forget unbound feeds */
		if (f->due[i].seen)
			f->due[k++] = f->due[i];
	f->n_due = k;
	free(list);
	return next;
}

static void *feeds_thread(void *arg)
{
	struct agd_feeds *f = arg;

	for (;;) {
		__u64 next = pass(f), now;
		struct timespec ts;

		pthread_mutex_lock(&f->lock);
		now = now_ms();
		if (next > now + 1000)
			next = now + 1000; /* new feeds are seen within a second */
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += (time_t)((next - now) / 1000);
		ts.tv_nsec += (long)((next - now) % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		while (!atomic_load(&f->stop) && !f->kicked &&
		       pthread_cond_timedwait(&f->cv, &f->lock, &ts) != ETIMEDOUT)
			;
		f->kicked = false;
		if (atomic_load(&f->stop)) {
			pthread_mutex_unlock(&f->lock);
			return NULL;
		}
		pthread_mutex_unlock(&f->lock);
	}
}

int agd_feeds_start(struct agd_engine *e, const struct agd_feeds_opts *o, struct agd_feeds **out,
		    struct agd_err *err)
{
	struct agd_feeds *f;
	pthread_condattr_t ca;
	int rc;

	*out = NULL;
	if (curl_global_init(CURL_GLOBAL_DEFAULT))
		return agd_errf(err, -EIO, "cannot initialise libcurl");
	f = calloc(1, sizeof(*f));
	if (!f)
		return agd_errf(err, -ENOMEM, "out of memory");
	f->e = e;
	f->o = *o;
	pthread_mutex_init(&f->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&f->cv, &ca);
	pthread_condattr_destroy(&ca);
	rc = pthread_create(&f->thread, NULL, feeds_thread, f);
	if (rc) {
		pthread_cond_destroy(&f->cv);
		pthread_mutex_destroy(&f->lock);
		free(f);
		return agd_errf(err, -rc, "cannot start the rule feed thread: %s", strerror(rc));
	}
	*out = f;
	return 0;
}

void agd_feeds_reload(struct agd_feeds *f, const struct agd_feeds_opts *o)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->lock);
	f->o = *o;
	pthread_mutex_unlock(&f->lock);
}

void agd_feeds_kick(struct agd_feeds *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->lock);
	f->kicked = true;
	pthread_cond_signal(&f->cv);
	pthread_mutex_unlock(&f->lock);
}

void agd_feeds_stop(struct agd_feeds *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->lock);
	atomic_store(&f->stop, true);
	pthread_cond_signal(&f->cv);
	pthread_mutex_unlock(&f->lock);
	pthread_join(f->thread, NULL);
	pthread_cond_destroy(&f->cv);
	pthread_mutex_destroy(&f->lock);
	free(f->due);
	free(f);
	curl_global_cleanup();
}
