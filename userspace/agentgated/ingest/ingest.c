// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/appendlog.h"
#include "core/intake.h"
#include "ingest.h"

#define READ_CHUNK (1u << 20)     /* bytes read at once; also the longest line */
#define MAX_CONNECTIONS 64
/* Batches of one stream in the engine at once: one applied, the others
 * waiting to go into the next group commit together (fewer fsyncs: 4
 * against 2 took 0-15 % less time for 10^6 lines with ids, paired runs),
 * while the next is read. A faster sender waits in its socket buffer
 * instead of in the daemon's memory (~9-15 MB a 1 MiB read). */
#define STREAM_INFLIGHT 4

struct agd_ingest {
	struct agd_engine *e;
	int stop_pipe[2];
	struct agd_caplog dl; /* the dead-letter file */
	char socket_path[108];
	int listen_fd;
	pthread_t stdin_thread, accept_thread;
	bool stdin_started, accept_started;
	pthread_mutex_t lock;
	pthread_cond_t cv;
	int live_streams; /* connection threads still running */
};

/* One input: standard input or one socket connection. */
struct stream {
	struct agd_ingest *in;
	int fd;
	char source[32];
	__u64 line_no;
	pthread_mutex_t lock;
	pthread_cond_t cv;
	size_t outstanding; /* batches submitted, not finished */
	__u64 applied, duplicates, invalid, rejected;
	__u64 limited; /* lines over --rating-user-rate (dead-lettered) */
	/* Settled batches kept for the next reads (under lock): a 1 MiB read
	 * makes arrays of ~9 MB, and fresh ones cost a page fault a 4 KiB
	 * (a fifth of the ingest's time, measured). */
	struct batch *spare[STREAM_INFLIGHT];
	size_t n_spare;
};

/* A batch of lines in flight; raw keeps the text for the dead-letter file. */
struct batch {
	struct agd_job job;
	struct stream *s;
	struct agd_rating *items;
	char *raw;
	size_t *off, *len; /* each item's line within raw */
	__u64 *line_no;
	int *item_err;
	size_t cap_lines, cap_raw; /* what the arrays hold */
};

static struct {
	atomic_ullong written, truncated, failed, dropped;
} dl_stats;

void agd_dead_letter_stats(struct agd_dead_letter_stats *s)
{
	s->written = atomic_load(&dl_stats.written);
	s->truncated = atomic_load(&dl_stats.truncated);
	s->failed = atomic_load(&dl_stats.failed);
	s->dropped = atomic_load(&dl_stats.dropped);
}

/* At most AGD_DEAD_LETTER_INPUT_MAX bytes of text, not cutting a UTF-8
 * sequence in two. */
static size_t cut_input(const char *text, size_t len)
{
	size_t n = AGD_DEAD_LETTER_INPUT_MAX, back;

	if (len <= n)
		return len;
	for (back = 0; back < 3 && ((unsigned char)text[n] & 0xc0) == 0x80; back++)
		n--;
	return n;
}

/* The line's JSON: its input cut to the bound (then marked), or replaced
 * when it is not UTF-8. total: the input's whole length, 0 when unknown
 * (a line past the reader's 1 MiB). */
static char *dead_letter_json(const char *source, __u64 line_no, const char *reason,
			      const char *text, size_t len, size_t total)
{
	struct timespec ts;
	size_t keep = cut_input(text, len);
	json_t *o;
	char *s;

	clock_gettime(CLOCK_REALTIME, &ts);
	o = json_pack("{s:I,s:s,s:I,s:s}", "time_ms",
		      (json_int_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, "source", source, "line",
		      (json_int_t)line_no, "reason", reason);
	if (!o)
		return NULL;
	/* Text that is not UTF-8 is not reproduced. */
	if (json_object_set_new(o, "input", json_stringn(text, keep)))
		json_object_set_new(o, "input", json_string("(not valid UTF-8; not reproduced)"));
	if (keep < len || !total) {
		json_object_set_new(o, "truncated", json_true());
		if (total)
			json_object_set_new(o, "input_bytes", json_integer((json_int_t)total));
	}
	s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

static void dead_letter_failed(int err)
{
	__u64 n = atomic_fetch_add(&dl_stats.failed, 1) + 1;

	atomic_fetch_add(&dl_stats.dropped, 1);
	if (!(n & (n - 1))) /* the 1st, 2nd, 4th, 8th... */
		fprintf(stderr, "agentgated: warning: dead-letter file: line not written: %s "
			"(%llu so far)\n", strerror(-err), (unsigned long long)n);
}

/* total: see dead_letter_json. */
static void dead_letter_of(struct agd_ingest *in, const char *source, __u64 line_no,
			   const char *reason, const char *text, size_t len, size_t total)
{
	char *s = dead_letter_json(source, line_no, reason, text, len, total);
	__u64 gone = 0;
	int err;

	if (!s) {
		dead_letter_failed(-ENOMEM);
		return;
	}
	err = agd_caplog_append(&in->dl, s, strlen(s), &gone);
	if (gone)
		atomic_fetch_add(&dl_stats.dropped, gone);
	if (err)
		dead_letter_failed(err);
	else if (len > AGD_DEAD_LETTER_INPUT_MAX || !total)
		atomic_fetch_add(&dl_stats.truncated, 1);
	else
		atomic_fetch_add(&dl_stats.written, 1);
	free(s);
}

static void dead_letter(struct agd_ingest *in, const char *source, __u64 line_no,
			const char *reason, const char *text, size_t len)
{
	dead_letter_of(in, source, line_no, reason, text, len, len);
}

static void batch_free(struct batch *b)
{
	agd_job_release(&b->job);
	free(b->items);
	free(b->raw);
	free(b->off);
	free(b->len);
	free(b->line_no);
	free(b->item_err);
	free(b);
}

/* A batch for lines items of len bytes: a spare that holds them, or a new one. */
static struct batch *batch_get(struct stream *s, size_t lines, size_t len)
{
	struct batch *b = NULL;

	pthread_mutex_lock(&s->lock);
	while (s->outstanding >= STREAM_INFLIGHT)
		pthread_cond_wait(&s->cv, &s->lock);
	while (s->n_spare && !b) {
		b = s->spare[--s->n_spare];
		if (b->cap_lines < lines + 1 || b->cap_raw < len + 1) {
			batch_free(b); /* too small: a new one the size of today's reads */
			b = NULL;
		}
	}
	pthread_mutex_unlock(&s->lock);
	if (b) {
		memset(&b->job, 0, sizeof(b->job));
		memset(b->item_err, 0, (lines + 1) * sizeof(*b->item_err));
		return b;
	}
	b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	b->cap_lines = lines + 1;
	b->cap_raw = len + 1;
	b->items = calloc(lines + 1, sizeof(*b->items));
	b->raw = malloc(len + 1);
	b->off = calloc(lines + 1, sizeof(*b->off));
	b->len = calloc(lines + 1, sizeof(*b->len));
	b->line_no = calloc(lines + 1, sizeof(*b->line_no));
	b->item_err = calloc(lines + 1, sizeof(*b->item_err));
	if (!b->items || !b->raw || !b->off || !b->len || !b->line_no || !b->item_err) {
		batch_free(b);
		return NULL;
	}
	return b;
}

/* A batch back to its stream (s->lock held): kept as a spare, or
 * returned to be freed once the lock is let go. */
static struct batch *batch_keep(struct stream *s, struct batch *b)
{
	agd_job_release(&b->job);
	if (s->n_spare == STREAM_INFLIGHT)
		return b;
	s->spare[s->n_spare++] = b;
	return NULL;
}

/* In the apply thread, once the engine settled the batch. */
static void batch_done(struct agd_job *job)
{
	struct batch *b = (struct batch *)job;
	struct stream *s = b->s;
	size_t i, refused = 0;

	for (i = 0; i < job->n; i++) {
		const char *why = job->err.code ? job->err.msg :
				  b->item_err[i] == -ENOENT ? "unknown agent (auto-create is off)" :
				  b->item_err[i] == -EIDRM ? "agent deleted by an operator: only an "
							     "operator creates it again" :
				  b->item_err[i] == -EINVAL ? "field 'user': required (ratings without "
							      "a user are refused: --anonymous-ratings "
							      "refuse)" :
				  b->item_err[i] < 0 ? "no free agent slot" : NULL;

		if (!why)
			continue;
		dead_letter(s->in, s->source, b->line_no[i], why, b->raw + b->off[i], b->len[i]);
		refused++;
	}
	pthread_mutex_lock(&s->lock);
	s->rejected += refused;
	s->applied += job->applied;
	s->duplicates += job->duplicates;
	s->outstanding--;
	/* kept under the same hold: once outstanding is 0 the reader may free
	 * the spares and the stream */
	b = batch_keep(s, b);
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->lock);
	if (b)
		batch_free(b);
}

/* A rating whose user is over --rating-user-rate (the limits HTTP has;
 * a stream has no token): dead-lettered with when it would pass, and
 * counted like a 429. */
static bool over_limit(struct stream *s, const struct agd_rating *r, const char *line,
		       size_t len)
{
	struct agd_intake *lim = agd_engine_intake(s->in->e);
	char who[200], reason[300];
	unsigned int retry = 0;

	if (!r->user[0] || !lim ||
	    !agd_intake_charge(lim, r, 1, NULL, ag_now_ns(), &retry, who, sizeof(who)))
		return false;
	agd_engine_tally_refused(s->in->e, r, 1, AGD_TALLY_REFUSED_USER_RATE);
	snprintf(reason, sizeof(reason), "%s sends ratings faster than allowed "
		 "(--rating-user-rate); it would pass in %us", who, retry);
	dead_letter(s->in, s->source, s->line_no, reason, line, len);
	return true;
}

/* Parses the complete lines of text[0..len) and submits the valid ones. */
static int submit_lines(struct stream *s, const char *text, size_t len)
{
	size_t lines = 0, pos = 0, n = 0, invalid = 0, limited = 0;
	struct batch *b;
	const char *p;

	for (p = text; (p = memchr(p, '\n', (size_t)(text + len - p))); p++)
		lines++;
	b = batch_get(s, lines, len);
	if (!b)
		return -ENOMEM;
	b->s = s;
	memcpy(b->raw, text, len);
	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - text) : len, l = end, i;
		struct agd_rating_error err;
		bool blank = true;

		s->line_no++;
		if (l > pos && text[l - 1] == '\r')
			l--;
		for (i = pos; i < l && blank; i++)
			blank = text[i] == ' ' || text[i] == '\t';
		if (!blank) {
			if (agd_rating_parse_line(text + pos, l - pos, &b->items[n], &err)) {
				char reason[160];

				snprintf(reason, sizeof(reason), "%s%s%s", err.field[0] ? err.field : "",
					 err.field[0] ? ": " : "", err.reason);
				dead_letter(s->in, s->source, s->line_no, reason, text + pos, l - pos);
				invalid++;
			} else if (over_limit(s, &b->items[n], text + pos, l - pos)) {
				limited++;
			} else {
				b->off[n] = pos;
				b->len[n] = l - pos;
				b->line_no[n] = s->line_no;
				n++;
			}
		}
		pos = end + 1;
	}
	if (invalid) {
		agd_engine_count_invalid(s->in->e, invalid);
		pthread_mutex_lock(&s->lock);
		s->invalid += invalid;
		pthread_mutex_unlock(&s->lock);
	}
	if (limited) {
		pthread_mutex_lock(&s->lock);
		s->limited += limited;
		pthread_mutex_unlock(&s->lock);
	}
	if (!n) {
		pthread_mutex_lock(&s->lock);
		b = batch_keep(s, b);
		pthread_mutex_unlock(&s->lock);
		if (b)
			batch_free(b);
		return 0;
	}
	b->job.items = b->items;
	b->job.item_err = b->item_err;
	b->job.n = n;
	b->job.received_ns = ag_now_ns();
	b->job.done = batch_done;
	pthread_mutex_lock(&s->lock);
	s->outstanding++;
	pthread_mutex_unlock(&s->lock);
	if (agd_engine_submit(s->in->e, &b->job)) {
		size_t i;

		for (i = 0; i < n; i++)
			dead_letter(s->in, s->source, b->line_no[i], "agentgated is shutting down",
				    b->raw + b->off[i], b->len[i]);
		pthread_mutex_lock(&s->lock);
		s->outstanding--;
		s->rejected += n;
		pthread_mutex_unlock(&s->lock);
		batch_free(b);
		return -ESHUTDOWN;
	}
	return 0;
}

/* Waits for data or the stop signal: 1 readable, 0 stopping. */
static int wait_readable(struct stream *s)
{
	struct pollfd p[2] = { { s->fd, POLLIN, 0 }, { s->in->stop_pipe[0], POLLIN, 0 } };

	for (;;) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return 0;
		}
		if (p[1].revents)
			return 0;
		return 1;
	}
}

/* Reads the stream to its end (or until stopping), then waits until all
 * its batches are settled. */
static void read_stream(struct stream *s)
{
	char *buf = malloc(READ_CHUNK);
	size_t have = 0;
	bool skipping = false; /* inside a line longer than READ_CHUNK */

	if (!buf)
		return;
	while (wait_readable(s)) {
		ssize_t n = read(s->fd, buf + have, READ_CHUNK - have);
		char *last;

		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			if (have && !skipping) { /* a last line without its newline */
				buf[have++] = '\n';
				submit_lines(s, buf, have);
			}
			have = 0;
			break;
		}
		have += (size_t)n;
		last = memrchr(buf, '\n', have);
		if (!last) {
			if (have == READ_CHUNK) {
				if (!skipping) {
					s->line_no++;
					dead_letter_of(s->in, s->source, s->line_no,
						       "line longer than 1 MiB", buf, have, 0);
					agd_engine_count_invalid(s->in->e, 1);
					pthread_mutex_lock(&s->lock);
					s->invalid++;
					pthread_mutex_unlock(&s->lock);
				}
				skipping = true;
				have = 0;
			}
			continue;
		}
		if (skipping) { /* the rest of the long line ends here */
			size_t rest = have - (size_t)(memchr(buf, '\n', have) - (void *)buf) - 1;

			memmove(buf, buf + have - rest, rest);
			have = rest;
			skipping = false;
			last = memrchr(buf, '\n', have);
			if (!last)
				continue;
		}
		if (submit_lines(s, buf, (size_t)(last - buf) + 1) == -ESHUTDOWN)
			break;
		have -= (size_t)(last - buf) + 1;
		memmove(buf, last + 1, have);
	}
	free(buf);
	pthread_mutex_lock(&s->lock);
	while (s->outstanding)
		pthread_cond_wait(&s->cv, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

static void stream_init(struct stream *s, struct agd_ingest *in, int fd, const char *source)
{
	memset(s, 0, sizeof(*s));
	s->in = in;
	s->fd = fd;
	snprintf(s->source, sizeof(s->source), "%s", source);
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cv, NULL);
}

static void stream_fini(struct stream *s)
{
	while (s->n_spare)
		batch_free(s->spare[--s->n_spare]);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cv);
}

static void *stdin_main(void *arg)
{
	struct agd_ingest *in = arg;
	struct stream s;

	stream_init(&s, in, STDIN_FILENO, "stdin");
	read_stream(&s);
	fprintf(stderr, "agentgated: stdin closed: %llu applied, %llu duplicates, %llu invalid, "
		"%llu rejected, %llu limited\n", (unsigned long long)s.applied,
		(unsigned long long)s.duplicates, (unsigned long long)s.invalid,
		(unsigned long long)s.rejected, (unsigned long long)s.limited);
	stream_fini(&s);
	return NULL;
}

struct conn_arg {
	struct agd_ingest *in;
	int fd;
	unsigned long long id;
};

static void *conn_main(void *arg)
{
	struct conn_arg *ca = arg;
	struct agd_ingest *in = ca->in;
	char source[32], reply[200];
	struct stream s;
	int n;

	snprintf(source, sizeof(source), "socket:%llu", ca->id);
	stream_init(&s, in, ca->fd, source);
	read_stream(&s);
	n = snprintf(reply, sizeof(reply),
		     "{\"applied\":%llu,\"duplicates\":%llu,\"invalid\":%llu,\"rejected\":%llu,"
		     "\"limited\":%llu}\n",
		     (unsigned long long)s.applied, (unsigned long long)s.duplicates,
		     (unsigned long long)s.invalid, (unsigned long long)s.rejected,
		     (unsigned long long)s.limited);
	if (send(ca->fd, reply, (size_t)n, MSG_NOSIGNAL) < 0 && errno != EPIPE)
		fprintf(stderr, "agentgated: %s: cannot reply: %s\n", source, strerror(errno));
	close(ca->fd);
	stream_fini(&s);
	free(ca);
	pthread_mutex_lock(&in->lock);
	in->live_streams--;
	pthread_cond_broadcast(&in->cv);
	pthread_mutex_unlock(&in->lock);
	return NULL;
}

static void *accept_main(void *arg)
{
	struct agd_ingest *in = arg;
	unsigned long long id = 0;

	for (;;) {
		struct pollfd p[2] = { { in->listen_fd, POLLIN, 0 }, { in->stop_pipe[0], POLLIN, 0 } };
		struct conn_arg *ca;
		pthread_t t;
		int fd;

		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		if (!p[0].revents)
			continue;
		fd = accept4(in->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
				usleep(100000); /* out of descriptors: do not spin */
			continue;
		}
		pthread_mutex_lock(&in->lock);
		if (in->live_streams >= MAX_CONNECTIONS) {
			static const char busy[] = "{\"error\":\"unavailable\",\"message\":\"too many "
						   "ingest connections\"}\n";

			pthread_mutex_unlock(&in->lock);
			/* Best effort: the connection is closed either way. */
			(void)!send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL);
			close(fd);
			continue;
		}
		in->live_streams++;
		pthread_mutex_unlock(&in->lock);
		ca = malloc(sizeof(*ca));
		if (ca) {
			*ca = (struct conn_arg){ in, fd, ++id };
			if (!pthread_create(&t, NULL, conn_main, ca)) {
				pthread_detach(t);
				continue;
			}
			free(ca);
		}
		close(fd);
		pthread_mutex_lock(&in->lock);
		in->live_streams--;
		pthread_mutex_unlock(&in->lock);
	}
	return NULL;
}

static int listen_unix(struct agd_ingest *in, const char *path, struct agd_err *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		return agd_errf(err, -ENAMETOOLONG, "--ingest-socket %s: path too long", path);
	}
	/* A socket left by a previous run is replaced; any other file is not. */
	if (!lstat(path, &st)) {
		if (!S_ISSOCK(st.st_mode)) {
			return agd_errf(err, -EEXIST,
				"--ingest-socket %s: exists and is not a socket", path);
		}
		unlink(path);
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || chmod(path, 0660) ||
	    listen(fd, 64)) {
		int e = errno;

		snprintf(err->msg, sizeof(err->msg), "--ingest-socket %s: %s", path, strerror(e));
		if (fd >= 0)
			close(fd);
		return -e;
	}
	in->listen_fd = fd;
	snprintf(in->socket_path, sizeof(in->socket_path), "%s", path);
	return 0;
}

int agd_ingest_open(struct agd_engine *e, const struct agd_ingest_opts *o,
		    struct agd_ingest **out, struct agd_err *err)
{
	struct agd_ingest *in = calloc(1, sizeof(*in));
	int rc;

	if (!in)
		return -ENOMEM;
	in->e = e;
	in->listen_fd = in->dl.fd = -1;
	in->stop_pipe[0] = in->stop_pipe[1] = -1;
	pthread_mutex_init(&in->lock, NULL);
	pthread_cond_init(&in->cv, NULL);
	if (pipe2(in->stop_pipe, O_CLOEXEC)) {
		rc = -errno;
		snprintf(err->msg, sizeof(err->msg), "pipe: %s", strerror(-rc));
		goto fail;
	}
	rc = agd_caplog_open(&in->dl, o->dead_letter_path,
			     o->dead_letter_max ? o->dead_letter_max : AGD_DEAD_LETTER_MAX_DEFAULT,
			     err);
	if (rc)
		goto fail;
	if (o->socket_path && o->socket_path[0]) {
		rc = listen_unix(in, o->socket_path, err);
		if (rc)
			goto fail;
		rc = -pthread_create(&in->accept_thread, NULL, accept_main, in);
		if (rc)
			goto fail;
		in->accept_started = true;
	}
	if (o->in_fd >= 0) {
		rc = -pthread_create(&in->stdin_thread, NULL, stdin_main, in);
		if (rc)
			goto fail;
		in->stdin_started = true;
	}
	*out = in;
	return 0;
fail:
	agd_ingest_stop(in);
	return rc;
}

int agd_ingest_start(struct agd_engine *e, int in_fd, const char *socket_path,
		     const char *dead_letter_path, struct agd_ingest **out, struct agd_err *err)
{
	struct agd_ingest_opts o = { .in_fd = in_fd, .socket_path = socket_path,
				     .dead_letter_path = dead_letter_path };

	return agd_ingest_open(e, &o, out, err);
}

void agd_ingest_stop(struct agd_ingest *in)
{
	if (!in)
		return;
	if (in->stop_pipe[1] >= 0 && write(in->stop_pipe[1], "x", 1) < 0)
		fprintf(stderr, "agentgated: ingest stop: %s\n", strerror(errno));
	if (in->accept_started)
		pthread_join(in->accept_thread, NULL);
	if (in->stdin_started)
		pthread_join(in->stdin_thread, NULL);
	pthread_mutex_lock(&in->lock);
	while (in->live_streams)
		pthread_cond_wait(&in->cv, &in->lock);
	pthread_mutex_unlock(&in->lock);
	if (in->listen_fd >= 0) {
		close(in->listen_fd);
		unlink(in->socket_path);
	}
	agd_caplog_close(&in->dl);
	if (in->stop_pipe[0] >= 0)
		close(in->stop_pipe[0]);
	if (in->stop_pipe[1] >= 0)
		close(in->stop_pipe[1]);
	pthread_mutex_destroy(&in->lock);
	pthread_cond_destroy(&in->cv);
	free(in);
}
