// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * POST /v1/ratings: a JSON batch or NDJSON, parsed whole (core/rating.c),
 * then given to the engine (core/dispatch.c says where it goes).
 */
#include "server.h"
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/rating.h"
#include "handlers.h"

static bool is_ndjson(const struct agd_conn *conn)
{
	const char *ct = agd_conn_header(conn, "Content-Type");

	return ct && (!strncasecmp(ct, "application/x-ndjson", 20) ||
		      !strncasecmp(ct, "application/ndjson", 18) ||
		      !strncasecmp(ct, "application/jsonl", 17));
}

static int invalid_ratings(struct req *r, const struct agd_rating_batch *b)
{
	json_t *errs = json_array(), *o;
	char msg[256];
	size_t i;

	agd_engine_count_invalid(r->h->e, b->n_errors);
	for (i = 0; i < b->n_errors && i < AGD_RATING_ERRORS_MAX; i++) {
		const struct agd_rating_error *x = &b->errors[i];

		json_array_append_new(errs, json_pack("{s:I,s:s,s:s}", "index", (json_int_t)x->index,
						      "field", x->field, "reason", x->reason));
	}
	if (b->n_errors)
		snprintf(msg, sizeof(msg), "%zu invalid rating%s, none applied; first: item %zu%s%s%s: %s",
			 b->n_errors, b->n_errors == 1 ? "" : "s", b->errors[0].index,
			 b->errors[0].field[0] ? " field '" : "", b->errors[0].field,
			 b->errors[0].field[0] ? "'" : "", b->errors[0].reason);
	else
		snprintf(msg, sizeof(msg), "invalid ratings, none applied");
	o = json_pack("{s:s,s:s,s:o}", "error", "bad_request", "message", msg, "errors", errs);
	return agd_reply_json(r->conn, 400, o, NULL);
}

/* The answer to a rating job the engine finished (err: its outcome). */
static int rated(struct agd_conn *conn, struct agd_job *job, int err)
{
	json_t *agents, *o;
	size_t i;

	if (err)
		return agd_reply_error(conn, agd_engine_status(err), NULL, "%s",
				       job->err.msg[0] ? job->err.msg : strerror(-err));
	agents = json_array();
	for (i = 0; i < job->n_agents; i++) {
		const struct agd_job_agent *a = &job->agents[i];

		json_array_append_new(agents, json_pack("{s:s,s:f,s:f,s:I}", "agent", a->name,
							"rate", a->rate, "mean_score",
							a->mean_score, "ratings",
							(json_int_t)a->ratings));
	}
	o = json_pack("{s:I,s:I,s:o}", "applied", (json_int_t)job->applied, "duplicates",
		      (json_int_t)job->duplicates, "agents", agents);
	/* Fleet: the log's sequence; refusals by the log; or kept in the
	 * outbox while the log is unreachable (202: accepted, not applied). */
	if (job->routed.sequence)
		json_object_set_new(o, "sequence", json_integer((json_int_t)job->routed.sequence));
	if (job->routed.refused)
		json_object_set_new(o, "refused", json_integer((json_int_t)job->routed.refused));
	if (job->routed.queued)
		json_object_set_new(o, "queued", json_integer((json_int_t)job->n));
	return agd_reply_json(conn, job->routed.queued ? 202 : 200, o, NULL);
}

/*
 * A rating job answered without a worker waiting for it (small bodies,
 * standalone: http.c runs them in the event loop): queued with the engine
 * without waiting, the answer written when the apply thread has finished
 * it. The batch lives with the job until then.
 */
struct later {
	struct agd_job job;
	struct agd_rating_batch b;
	struct agd_conn *conn;
};

static void later_done(struct agd_job *job) /* the apply thread */
{
	agd_conn_resume(((struct later *)job->arg)->conn);
}

static void later_finish(struct agd_conn *conn, void *arg) /* the loop */
{
	struct later *l = arg;

	rated(conn, &l->job, l->job.err.code);
	agd_job_release(&l->job);
	agd_rating_batch_free(&l->b);
	free(l);
}

static int rate_later(struct req *r, struct agd_rating_batch *b, __u64 received_ns)
{
	struct later *l = calloc(1, sizeof(*l));
	int err;

	if (!l) {
		agd_rating_batch_free(b);
		return send_error(r->conn, 500, "out of memory");
	}
	l->b = *b;
	l->conn = r->conn;
	l->job.items = l->b.items;
	l->job.n = l->b.n;
	l->job.received_ns = received_ns;
	l->job.done = later_done;
	l->job.arg = l;
	agd_conn_defer(r->conn, later_finish, l); /* before: the answer may come at once */
	err = agd_engine_try_queue(r->h->e, &l->job);
	if (err)
		agd_conn_defer(r->conn, NULL, NULL);
	if (err == -EAGAIN) {
		/* The queue is full: a worker waits for room, with the batch as
		 * parsed and charged here (ratings_post takes it back). */
		agd_conn_set_data(r->conn, l);
		agd_conn_to_worker(r->conn);
		return 0;
	}
	if (err) {
		agd_rating_batch_free(&l->b);
		free(l);
		return send_error(r->conn, agd_engine_status(err), "%s", strerror(-err));
	}
	return 0;
}

/* On a worker: a batch rate_later could not queue without waiting. */
static int rate_now(struct req *r, struct later *l)
{
	int err;

	agd_conn_set_data(r->conn, NULL);
	l->job.done = NULL;
	err = agd_engine_rate(r->h->e, &l->job);
	err = rated(r->conn, &l->job, err);
	agd_job_release(&l->job);
	agd_rating_batch_free(&l->b);
	free(l);
	return err;
}

int ratings_post(struct req *r)
{
	struct agd_rating_batch b;
	struct agd_job job = { 0 };
	int err;

	if (agd_conn_data(r->conn))
		return rate_now(r, agd_conn_data(r->conn));
	job.received_ns = ag_now_ns();
	err = agd_ratings_parse(r->body, r->body_len, is_ndjson(r->conn) ? AGD_RATING_NDJSON :
									  AGD_RATING_JSON, &b);
	if (err == -EINVAL) {
		err = invalid_ratings(r, &b);
		agd_rating_batch_free(&b);
		return err;
	}
	if (err)
		return send_error(r->conn, 500, "out of memory");
	if (!b.n) {
		agd_rating_batch_free(&b);
		return send_error(r->conn, 400, "request body: no ratings");
	}
	if (r->h->intake) {
		unsigned int retry = 0;
		char who[200] = "", hdr[48];
		/* A request with a token is limited by its subject, "" when it
		 * has none; without authentication (no scopes) there is none. */
		enum agd_intake_by by = agd_intake_charge(r->h->intake, b.items, b.n,
							  r->tok.scopes ? r->tok.subject : NULL,
							  ag_now_ns(), &retry, who, sizeof(who));

		if (by) {
			agd_engine_tally_refused(r->h->e, b.items, b.n, by == AGD_INTAKE_USER ?
						 AGD_TALLY_REFUSED_USER_RATE :
						 AGD_TALLY_REFUSED_TOKEN_RATE);
			agd_rating_batch_free(&b);
			snprintf(hdr, sizeof(hdr), "Retry-After: %u\r\n", retry);
			return agd_reply_error(r->conn, 429, hdr, "%s sends ratings faster than "
					       "allowed (--rating-%s-rate); nothing applied",
					       who, by == AGD_INTAKE_USER ? "user" : "token");
		}
	}
	if (!agd_conn_may_wait(r->conn))
		return rate_later(r, &b, job.received_ns);
	job.items = b.items;
	job.n = b.n;
	err = agd_engine_rate(r->h->e, &job);
	agd_rating_batch_free(&b);
	err = rated(r->conn, &job, err);
	agd_job_release(&job);
	return err;
}
