// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Demand sharing at fleet scale, in one process: N simulated hosts, each one
 * struct agd_dem_host (fleet/demand_host.h, the code agentgated runs) with a
 * NATS connection of its own to a real nats-server, ticked by a few worker
 * threads on the quarters of --interval on the wall clock, as the daemons
 * tick. The traffic is simulated: A agents, each
 * with fleet rate R; host h offers agent a d(h,a) tokens/s:
 *
 *   - the first overlap·A agents ("shared") are seen by every host, with
 *     d = M·R/N · w, w = (1 + (h + a) % 4) / 2.5 (mean 1; M: --demand, the
 *     fleet's demand as a multiple of R); at --shift-at, host 0's demand
 *     for each of them rises x10 and every other host's halves;
 *   - the others are seen by one host each (a % N), d = M·R · w, unshifted.
 *
 * The offered counters the hosts read are the integral of d (grow-only,
 * what was offered, not what was admitted). Every --tick (100 ms) a thread
 * of its own runs each host-agent's token bucket (rate R·share, burst
 * R·1 s·share): it admits min(offered, tokens), counted per agent
 * fleet-wide. The rounds are due on a shared schedule that --threads
 * workers take from, so a long round (an owner's) holds up one worker, not
 * the hosts after it, as long as another worker is free.
 *
 * Reports, one line a figure (and --json PATH): messages and bytes per
 * second through the server(s) in and out (deltas of /varz at the
 * --monitor ports over the window from --warmup to the end), the
 * server(s)' CPU (/proc/PID/stat of --server-pid, in cores), the
 * simulator's (getrusage), the time until the shares settle after the start
 * and after the shift (every host's share of every shared agent within 5 %
 * of max(floor, d_h / sum d)), in intervals, the fleet-wide overshoot (per
 * agent the largest admitted / (R·t·(1 + n·floor)) over sliding 10 s
 * windows once settled, n = hosts at the floor; the worst agent and the
 * mean; also against what exact shares would admit, and the largest 1 s
 * admitted while the shares settle), the rounds' duration and lateness, and
 * per host its messages (agd_dem_host_stats). A last line says whether the
 * scenario holds: server CPU under one core, settled within 2 intervals of
 * the shift, overshoot at most 1.05.
 *
 * Usage: fleet_sim --server URL[,URL..] [--monitor PORT[,..]]
 *        [--server-pid PID[,..]] [--hosts N] [--agents A] [--overlap F]
 *        [--interval MS] [--floor F] [--rate R] [--demand M] [--shift-at S]
 *        [--duration S] [--warmup S] [--threads T] [--replicas N] [--tick MS]
 *        [--json PATH] [--verbose] [--trace AGENT]
 * (bench/fleet_sim.sh starts the servers; --trace prints the share changes
 * of agent-AGENT to stderr.)
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <jansson.h>
#include <nats/nats.h>

#include "fleet/demand_host.h"

#define MAX_SERVERS 8
#define SETTLE_TOL 0.05
#define WINDOW_S 10.0

struct sim {
	/* options */
	char *urls[MAX_SERVERS];
	int monitor[MAX_SERVERS];
	int pid[MAX_SERVERS];
	unsigned int n_urls, n_monitor, n_pid;
	unsigned int hosts, agents, shared, threads, replicas;
	double overlap, floor, rate, demand, shift_at, duration, warmup, tick;
	uint64_t interval_ms;
	const char *json;
	bool verbose;
	int trace; /* an agent whose share changes go to stderr, or -1 */
	/* the demand pattern, per shared agent and phase (0 before the shift) */
	double *sum[2];          /* sum over hosts of d */
	unsigned int *at_floor[2]; /* hosts whose target is the floor */
	double *ideal[2];        /* sum over hosts of min(d, R·target) */
	/* the run */
	double t0;      /* CLOCK_MONOTONIC at sim time 0 */
	uint64_t wall0; /* CLOCK_REALTIME ms at sim time 0 */
	unsigned int n_ticks;
	unsigned int phase1_hosts; /* hosts that evaluate their shares against
				    * the targets after the shift (atomic) */
	struct host *h;
	struct worker *w;
	pthread_mutex_t lock; /* the schedule: next_round and busy of the hosts */
	pthread_t buckets;
	float *adm;        /* [tick][agent]: tokens admitted fleet-wide */
	double bucket_cpu; /* s, the bucket thread's */
	/* per phase: when the shares settled (s after the start or the
	 * shift; NAN: never), then polls and most host-agents off target */
	double settle[2];
	unsigned int disturbed[2], disturbed_max[2];
};

struct host {
	struct sim *s;
	unsigned int id;
	natsConnection *nc;
	jsCtx *js;
	struct agd_dem_host *dh;
	unsigned int n;       /* agents seen */
	unsigned int *agent;  /* their indices */
	double *d[2];         /* their demand before and after the shift */
	double *share, *level;
	char (*names)[16];    /* "agent-NNNNNN" of each, made once */
	unsigned char *off;   /* shared agents: share off its target */
	unsigned int n_off;   /* atomic: how many */
	int phase;
	bool busy; /* a worker runs its round */
	double last_tick, next_round, round_t;
	/* rounds */
	unsigned int rounds;
	double round_sum, round_max, late_max;
};

struct worker {
	struct sim *s;
	unsigned int id;
	pthread_t th;
};

static volatile int stop;

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static double sim_now(const struct sim *s)
{
	return mono_s() - s->t0;
}

static void sleep_s(double d)
{
	struct timespec ts;

	if (d <= 0)
		return;
	ts.tv_sec = (time_t)d;
	ts.tv_nsec = (long)((d - (double)ts.tv_sec) * 1e9);
	nanosleep(&ts, NULL);
}

/* ---- the demand pattern ---------------------------------------------------------- */

static double demand(const struct sim *s, unsigned int h, unsigned int a, int after)
{
	double w = (1 + (h + a) % 4) / 2.5, d;

	if (a >= s->shared)
		return s->demand * s->rate * w;
	d = s->demand * s->rate / s->hosts * w;
	if (after)
		d *= h == 0 ? 10 : 0.5;
	return d;
}

static double target(const struct sim *s, double d, unsigned int a, int phase)
{
	return fmax(s->floor, d / s->sum[phase][a]);
}

static int pattern(struct sim *s)
{
	unsigned int a, h;
	int p;

	for (p = 0; p < 2; p++) {
		s->sum[p] = calloc(s->shared + 1, sizeof(double));
		s->ideal[p] = calloc(s->shared + 1, sizeof(double));
		s->at_floor[p] = calloc(s->shared + 1, sizeof(unsigned int));
		if (!s->sum[p] || !s->ideal[p] || !s->at_floor[p])
			return -ENOMEM;
		for (a = 0; a < s->shared; a++)
			for (h = 0; h < s->hosts; h++)
				s->sum[p][a] += demand(s, h, a, p);
		for (a = 0; a < s->shared; a++)
			for (h = 0; h < s->hosts; h++) {
				double d = demand(s, h, a, p), t = target(s, d, a, p);

				if (d / s->sum[p][a] <= s->floor)
					s->at_floor[p][a]++;
				s->ideal[p][a] += fmin(d, s->rate * t);
			}
	}
	return 0;
}

/* Tokens offered to the host's i-th agent up to sim time t. */
static double offered(const struct host *x, unsigned int i, double t)
{
	double T = x->s->shift_at;

	if (t <= 0)
		return 0;
	return x->d[0][i] * fmin(t, T) + x->d[1][i] * fmax(0, t - T);
}

/* ---- shares against their targets ------------------------------------------------ */

static bool off_target(const struct host *x, unsigned int i, int phase)
{
	const struct sim *s = x->s;
	unsigned int a = x->agent[i];
	double t = target(s, x->d[phase][i], a, phase);

	return fabs(x->share[i] - t) > SETTLE_TOL * t;
}

/* Evaluates the host's shared agents against the targets of sim time t. */
static void set_phase(struct host *x, double t)
{
	struct sim *s = x->s;
	int phase = t >= s->shift_at;
	unsigned int i, n = 0;

	if (phase == x->phase)
		return;
	for (i = 0; i < x->n && x->agent[i] < s->shared; i++) {
		x->off[i] = off_target(x, i, phase);
		n += x->off[i];
	}
	x->phase = phase;
	__atomic_store_n(&x->n_off, n, __ATOMIC_RELAXED);
	if (phase)
		__atomic_add_fetch(&s->phase1_hosts, 1, __ATOMIC_RELAXED);
}

/* ---- agd_dem_ops ----------------------------------------------------------------- */

static unsigned int local_index(const struct host *x, unsigned int a)
{
	const struct sim *s = x->s;

	return a < s->shared ? a : s->shared + (a - s->shared) / s->hosts;
}

static int ops_agents(void *arg, struct agd_dem_local **out, size_t *n)
{
	struct host *x = arg;
	struct agd_dem_local *v = calloc(x->n ? x->n : 1, sizeof(*v));
	unsigned int i;

	*out = NULL;
	*n = 0;
	if (!v)
		return -ENOMEM;
	for (i = 0; i < x->n; i++) {
		memcpy(v[i].agent, x->names[i], sizeof(x->names[i]));
		v[i].offered = (uint64_t)offered(x, i, x->round_t);
		v[i].share = x->share[i];
	}
	*out = v;
	*n = x->n;
	return 0;
}

static void ops_set_share(void *arg, const char *agent, double share)
{
	struct host *x = arg;
	unsigned int a = (unsigned int)strtoul(agent + strlen("agent-"), NULL, 10), i;
	bool off;

	i = local_index(x, a);
	if (i >= x->n || x->agent[i] != a)
		return;
	__atomic_store(&x->share[i], &share, __ATOMIC_RELAXED); /* the bucket thread reads it */
	if ((int)a == x->s->trace)
		fprintf(stderr, "trace: %.3f s host %u %s share %.4f (target %.4f)\n", x->round_t,
			x->id, agent, share,
			a < x->s->shared ? target(x->s, x->d[x->phase][i], a, x->phase) : 1.0);
	if (a >= x->s->shared)
		return;
	off = off_target(x, i, x->phase);
	if (off != x->off[i]) {
		x->off[i] = off;
		if (off)
			__atomic_add_fetch(&x->n_off, 1, __ATOMIC_RELAXED);
		else
			__atomic_sub_fetch(&x->n_off, 1, __ATOMIC_RELAXED);
	}
}

static bool verbose;

static void ops_log(int level, const char *fmt, ...)
{
	va_list ap;

	if (!verbose && level > 4)
		return;
	va_start(ap, fmt);
	fprintf(stderr, "fleet_sim: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* ---- the workers ----------------------------------------------------------------- */

static void tick_host(struct sim *s, struct host *x, double t)
{
	double dt = t - x->last_tick, R = s->rate, T = s->shift_at;
	double dt0 = fmax(0, fmin(t, T) - x->last_tick), dt1 = fmax(0, t - fmax(x->last_tick, T));
	unsigned int k = (unsigned int)(t / s->tick), i;
	float *acc;

	if (dt <= 0)
		return;
	if (k >= s->n_ticks)
		k = s->n_ticks - 1;
	acc = s->adm + (size_t)k * s->agents;
	for (i = 0; i < x->n; i++) {
		double sh, off = x->d[0][i] * dt0 + x->d[1][i] * dt1, lv, a;

		__atomic_load(&x->share[i], &sh, __ATOMIC_RELAXED);
		lv = fmin(R * sh, x->level[i] + R * sh * dt); /* burst: R·1 s·share */
		a = fmin(off, lv);
		x->level[i] = lv - a;
		acc[x->agent[i]] += (float)a;
	}
	x->last_tick = t;
}

/* The buckets of every host, every tick, whatever the rounds do. */
static void *buckets(void *arg)
{
	struct sim *s = arg;
	double next = s->tick;
	struct timespec ts;
	unsigned int j;

	while (!stop) {
		double t = sim_now(s);

		if (t >= s->duration)
			break;
		if (t >= next) {
			for (j = 0; j < s->hosts; j++)
				tick_host(s, &s->h[j], t);
			while (next <= t)
				next += s->tick;
		}
		sleep_s(next - sim_now(s));
	}
	/* The last tick: everything admitted up to the end. */
	for (j = 0; j < s->hosts; j++)
		tick_host(s, &s->h[j], fmin(sim_now(s), s->duration));
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	s->bucket_cpu = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	return NULL;
}

static void round_host(struct host *x, double sched)
{
	struct sim *s = x->s;
	uint64_t now = wall_ms();
	double t1, d;

	x->round_t = (double)(int64_t)(now - s->wall0) / 1000.0;
	set_phase(x, x->round_t);
	t1 = mono_s();
	agd_dem_host_tick(x->dh, now);
	d = mono_s() - t1;
	x->rounds++;
	x->round_sum += d;
	if (d > x->round_max)
		x->round_max = d;
	if (x->round_t - sched > x->late_max)
		x->late_max = x->round_t - sched;
}

/* Takes the round due first that no other worker runs, until the end. */
static void *work(void *arg)
{
	struct worker *w = arg;
	struct sim *s = w->s;
	double I = (double)s->interval_ms / 1000.0;

	while (!stop) {
		struct host *x = NULL;
		double t = sim_now(s), due = s->duration;
		unsigned int j;

		if (t >= s->duration)
			break;
		pthread_mutex_lock(&s->lock);
		for (j = 0; j < s->hosts; j++) {
			struct host *y = &s->h[j];

			if (!y->busy && y->next_round < due) {
				due = y->next_round;
				x = y;
			}
		}
		if (x && due <= t)
			x->busy = true;
		pthread_mutex_unlock(&s->lock);
		if (!x || due > t) {
			sleep_s(fmin(due - t, 0.005));
			continue;
		}
		round_host(x, due);
		t = sim_now(s);
		pthread_mutex_lock(&s->lock);
		/* Like the daemon, no catching up: a round that overran skips
		 * the slots it covered, the host keeps its phase. */
		do
			x->next_round += I / 4;
		while (x->next_round <= t);
		x->busy = false;
		pthread_mutex_unlock(&s->lock);
	}
	return NULL;
}

/* ---- the servers' figures -------------------------------------------------------- */

struct sample {
	double t;
	double in_msgs[MAX_SERVERS], out_msgs[MAX_SERVERS];
	double in_bytes[MAX_SERVERS], out_bytes[MAX_SERVERS];
	double cpu[MAX_SERVERS]; /* s */
	double self_cpu;         /* s */
	bool varz_ok;
};

static char *http_get(int port, const char *path)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	size_t n = 0, cap = 65536;
	char req[256], *buf = malloc(cap), *body;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	ssize_t r;

	if (fd < 0 || !buf)
		goto fail;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
		goto fail;
	snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
	if (write(fd, req, strlen(req)) != (ssize_t)strlen(req))
		goto fail;
	while ((r = read(fd, buf + n, cap - n - 1)) > 0) {
		n += (size_t)r;
		if (cap - n < 2) {
			char *g = realloc(buf, cap * 2);

			if (!g)
				goto fail;
			buf = g;
			cap *= 2;
		}
	}
	buf[n] = 0;
	close(fd);
	body = strstr(buf, "\r\n\r\n");
	if (!body)
		goto fail_closed;
	memmove(buf, body + 4, strlen(body + 4) + 1);
	return buf;
fail:
	if (fd >= 0)
		close(fd);
fail_closed:
	free(buf);
	return NULL;
}

static double proc_cpu_s(int pid)
{
	char path[64], buf[2048], *p;
	unsigned long long ut = 0, st = 0;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return NAN;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	p = strrchr(buf, ')');
	/* after the name: state (field 3) ... utime (14), stime (15) */
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
			 &st) != 2)
		return NAN;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void take_sample(const struct sim *s, struct sample *x)
{
	struct rusage ru;
	unsigned int i;

	memset(x, 0, sizeof(*x));
	x->t = sim_now(s);
	x->varz_ok = s->n_monitor > 0;
	for (i = 0; i < s->n_monitor; i++) {
		char *body = http_get(s->monitor[i], "/varz");
		json_t *j = body ? json_loads(body, 0, NULL) : NULL;

		if (!j) {
			x->varz_ok = false;
		} else {
			x->in_msgs[i] = (double)json_integer_value(json_object_get(j, "in_msgs"));
			x->out_msgs[i] = (double)json_integer_value(json_object_get(j, "out_msgs"));
			x->in_bytes[i] = (double)json_integer_value(json_object_get(j, "in_bytes"));
			x->out_bytes[i] =
				(double)json_integer_value(json_object_get(j, "out_bytes"));
		}
		json_decref(j);
		free(body);
	}
	for (i = 0; i < s->n_pid; i++)
		x->cpu[i] = proc_cpu_s(s->pid[i]);
	getrusage(RUSAGE_SELF, &ru);
	x->self_cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
		      (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static unsigned int threads_now(void)
{
	char line[256];
	unsigned int n = 0;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Threads: %u", &n) == 1)
			break;
	fclose(f);
	return n;
}

/* ---- the overshoot --------------------------------------------------------------- */

struct over {
	bool ok;
	double from, to, window;   /* s */
	double worst, mean;        /* admitted / (R·t·(1 + n·floor)) */
	unsigned int worst_agent, worst_n;
	double worst_rate;         /* the worst agent's admitted / (R·t) */
	double worst_ideal, mean_ideal; /* admitted / what exact shares admit */
	double alone_worst;        /* agents seen by one host: admitted / (R·t) */
};

/* Per agent, the largest ratio over windows of `window` seconds sliding by
 * a tick within [from, to); adm: [tick][agent]. */
static void overshoot(const struct sim *s, const float *adm, double from, double to, int phase,
		      struct over *o)
{
	unsigned int k0 = (unsigned int)ceil(from / s->tick), k1 = (unsigned int)(to / s->tick), W;
	unsigned int a, k;
	double sum_ratio = 0, sum_ideal = 0;
	unsigned int n_shared = 0;

	memset(o, 0, sizeof(*o));
	if (k1 > s->n_ticks)
		k1 = s->n_ticks;
	if (k1 <= k0 + 1)
		return;
	W = (unsigned int)lround(WINDOW_S / s->tick);
	if (W > k1 - k0)
		W = k1 - k0;
	o->ok = true;
	o->from = k0 * s->tick;
	o->to = k1 * s->tick;
	o->window = W * s->tick;
	for (a = 0; a < s->agents; a++) {
		double win = 0, best = 0, t = W * s->tick, bound, ideal;
		unsigned int n = a < s->shared ? s->at_floor[phase][a] : 0;

		/* tick k holds what was admitted during (k-1, k]·tick */
		for (k = k0 + 1; k <= k0 + W; k++)
			win += adm[(size_t)k * s->agents + a];
		best = win;
		for (k = k0 + W + 1; k < k1; k++) {
			win += adm[(size_t)k * s->agents + a];
			win -= adm[(size_t)(k - W) * s->agents + a];
			if (win > best)
				best = win;
		}
		if (a >= s->shared) {
			if (best / (s->rate * t) > o->alone_worst)
				o->alone_worst = best / (s->rate * t);
			continue;
		}
		bound = s->rate * t * (1 + n * s->floor);
		ideal = s->ideal[phase][a] * t;
		sum_ratio += best / bound;
		sum_ideal += best / ideal;
		n_shared++;
		if (best / bound > o->worst) {
			o->worst = best / bound;
			o->worst_agent = a;
			o->worst_n = n;
			o->worst_rate = best / (s->rate * t);
		}
		if (best / ideal > o->worst_ideal)
			o->worst_ideal = best / ideal;
	}
	if (n_shared) {
		o->mean = sum_ratio / n_shared;
		o->mean_ideal = sum_ideal / n_shared;
	}
}

/* The largest admitted / (R·1 s) of any shared agent over 1 s windows in
 * [from, to): what the fleet let through while the shares moved. */
static double peak(const struct sim *s, const float *adm, double from, double to,
		   unsigned int *agent)
{
	unsigned int k0 = (unsigned int)(from / s->tick), k1 = (unsigned int)ceil(to / s->tick);
	unsigned int W = (unsigned int)lround(1.0 / s->tick), a, k;
	double best = 0;

	if (k1 > s->n_ticks)
		k1 = s->n_ticks;
	for (a = 0; a < s->shared; a++) {
		double win = 0;

		for (k = k0 + 1; k < k1; k++) {
			win += adm[(size_t)k * s->agents + a];
			if (k >= k0 + 1 + W)
				win -= adm[(size_t)(k - W) * s->agents + a];
			if (win / (s->rate * W * s->tick) > best) {
				best = win / (s->rate * W * s->tick);
				*agent = a;
			}
		}
	}
	return best;
}

/* ---- set-up ---------------------------------------------------------------------- */

static int host_init(struct sim *s, struct host *x, unsigned int id)
{
	struct agd_dem_opts o = { .interval_ms = s->interval_ms, .floor = s->floor,
				  .replicas = s->replicas, .log = ops_log };
	struct agd_dem_ops ops = { .agents = ops_agents, .set_share = ops_set_share, .arg = x };
	natsOptions *no = NULL;
	char node[AGD_DEM_NODE_MAX + 1], name[64];
	unsigned int a, i = 0;
	natsStatus st;

	x->s = s;
	x->id = id;
	x->n = s->shared;
	for (a = s->shared + id; a < s->agents; a += s->hosts)
		x->n++;
	x->agent = calloc(x->n + 1, sizeof(*x->agent));
	x->d[0] = calloc(x->n + 1, sizeof(double));
	x->d[1] = calloc(x->n + 1, sizeof(double));
	x->share = calloc(x->n + 1, sizeof(double));
	x->level = calloc(x->n + 1, sizeof(double));
	x->off = calloc(x->n + 1, 1);
	if (!x->agent || !x->d[0] || !x->d[1] || !x->share || !x->level || !x->off)
		return -ENOMEM;
	for (a = 0; a < s->shared; a++)
		x->agent[i++] = a;
	for (a = s->shared + id; a < s->agents; a += s->hosts)
		x->agent[i++] = a;
	x->names = calloc(x->n ? x->n : 1, sizeof(*x->names));
	if (!x->names)
		return -ENOMEM;
	for (i = 0; i < x->n; i++) {
		snprintf(x->names[i], sizeof(x->names[i]), "agent-%06u", x->agent[i]);
		x->d[0][i] = demand(s, id, x->agent[i], 0);
		x->d[1][i] = demand(s, id, x->agent[i], 1);
		x->share[i] = 1; /* a host that heard of nobody else */
		x->level[i] = s->rate;
	}
	x->phase = -1;
	set_phase(x, 0);
	{
		/* Every host ticks on the quarters of the interval on the wall
		 * clock, as the daemons do (demand_host.h). */
		uint64_t q = s->interval_ms / 4 ? s->interval_ms / 4 : 1;

		x->next_round = (double)((s->wall0 / q + 1) * q - s->wall0) / 1000.0;
	}

	snprintf(name, sizeof(name), "fleet_sim-%u", id);
	if ((st = natsOptions_Create(&no)) != NATS_OK ||
	    (st = natsOptions_SetURL(no, s->urls[id % s->n_urls])) != NATS_OK ||
	    (st = natsOptions_SetName(no, name)) != NATS_OK ||
	    /* one thread a connection (its reader): no flusher, and the
	     * JetStream replies' subscription delivered by the library's pool */
	    (st = natsOptions_SetSendAsap(no, true)) != NATS_OK ||
	    (st = natsOptions_UseGlobalMessageDelivery(no, true)) != NATS_OK ||
	    (st = natsConnection_Connect(&x->nc, no)) != NATS_OK ||
	    (st = natsConnection_JetStream(&x->js, x->nc, NULL)) != NATS_OK) {
		fprintf(stderr, "fleet_sim: host %u: %s: %s\n", id, s->urls[id % s->n_urls],
			natsStatus_GetText(st));
		natsOptions_Destroy(no);
		return -EIO;
	}
	natsOptions_Destroy(no);
	snprintf(node, sizeof(node), "sim-%04u", id);
	o.node = node;
	return agd_dem_host_new(x->nc, x->js, &o, &ops, &x->dh);
}

static void host_fini(struct host *x)
{
	agd_dem_host_free(x->dh);
	jsCtx_Destroy(x->js);
	natsConnection_Destroy(x->nc);
	free(x->agent);
	free(x->d[0]);
	free(x->d[1]);
	free(x->share);
	free(x->level);
	free(x->names);
	free(x->off);
}

static unsigned int split_list(char *arg, char **out, unsigned int max)
{
	unsigned int n = 0;
	char *save = NULL, *p;

	for (p = strtok_r(arg, ",", &save); p && n < max; p = strtok_r(NULL, ",", &save))
		out[n++] = p;
	return n;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: fleet_sim --server URL[,URL..] [--monitor PORT[,..]]\n"
		"       [--server-pid PID[,..]] [--hosts N] [--agents A] [--overlap F]\n"
		"       [--interval MS] [--floor F] [--rate R] [--demand M] [--shift-at S]\n"
		"       [--duration S] [--warmup S] [--threads T] [--replicas N] [--tick MS]\n"
		"       [--json PATH] [--verbose] [--trace AGENT]\n");
	exit(2);
}

/* ---- the report ------------------------------------------------------------------ */

static json_t *jout;

static void fig(const char *key, const char *unit, double v, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* One figure: "key: value unit[ (note)]" on stdout, "key (unit)": value in the JSON. */
static void fig(const char *key, const char *unit, double v, const char *fmt, ...)
{
	char note[256] = "";
	va_list ap;

	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(note, sizeof(note), fmt, ap);
		va_end(ap);
	}
	if (isnan(v))
		printf("%s: n/a", key);
	else if (fabs(v) >= 100 || v == floor(v))
		printf("%s: %.0f", key, v);
	else
		printf("%s: %.3g", key, v);
	printf("%s%s%s%s\n", unit[0] ? " " : "", unit, note[0] ? " " : "", note);
	if (jout) {
		char k[160];

		snprintf(k, sizeof(k), unit[0] ? "%s (%s)" : "%s", key, unit);
		json_object_set_new(jout, k, isnan(v) ? json_null() : json_real(v));
	}
}

static void report_over(const struct sim *s, const char *what, const struct over *o)
{
	char k[96];

	if (!o->ok) {
		printf("overshoot %s: n/a (no settled window)\n", what);
		return;
	}
	snprintf(k, sizeof(k), "overshoot %s worst", what);
	fig(k, "", o->worst,
	    "(agent-%06u, n %u at the floor: admitted %.3f R·t; window %.1f s in %.1f-%.1f s)",
	    o->worst_agent, o->worst_n, o->worst_rate, o->window, o->from, o->to);
	snprintf(k, sizeof(k), "overshoot %s mean", what);
	fig(k, "", o->mean, "(admitted / (R·t·(1 + n·floor)), the agents' worst windows)");
	snprintf(k, sizeof(k), "admitted over ideal %s worst", what);
	fig(k, "", o->worst_ideal, "(mean %.3f; ideal: exact shares, sum of min(d, R·target))",
	    o->mean_ideal);
	if (s->shared < s->agents) {
		snprintf(k, sizeof(k), "single-host agents %s worst", what);
		fig(k, "", o->alone_worst, "(admitted / (R·t))");
	}
}

/* The servers' traffic and CPU over the window; the largest CPU of one. */
static double report_servers(const struct sim *s, const struct sample *s0,
			     const struct sample *s1)
{
	static const char *const what[] = { "msgs in/s", "msgs out/s", "bytes in/s",
					    "bytes out/s" };
	double win = s1->t - s0->t, sum[4] = { 0 }, cpu = 0, cpu_max = 0;
	unsigned int i, f;
	char k[64];

	printf("window: %.1f-%.1f s (%.1f s)\n", s0->t, s1->t, win);
	if (s->n_monitor && s0->varz_ok && s1->varz_ok) {
		for (i = 0; i < s->n_monitor; i++) {
			double v[4] = { s1->in_msgs[i] - s0->in_msgs[i],
					s1->out_msgs[i] - s0->out_msgs[i],
					s1->in_bytes[i] - s0->in_bytes[i],
					s1->out_bytes[i] - s0->out_bytes[i] };

			for (f = 0; f < 4; f++) {
				sum[f] += v[f];
				if (s->n_monitor > 1) {
					snprintf(k, sizeof(k), "server %u %s", i, what[f]);
					fig(k, "", v[f] / win, NULL);
				}
			}
		}
		for (f = 0; f < 4; f++) {
			snprintf(k, sizeof(k), "server %s", what[f]);
			fig(k, "", sum[f] / win,
			    s->n_monitor > 1 ? "(all servers: a routed message counts at each)" :
					       NULL);
		}
	} else {
		printf("server msgs: n/a (no --monitor, or /varz did not answer)\n");
	}
	for (i = 0; i < s->n_pid; i++) {
		double c = (s1->cpu[i] - s0->cpu[i]) / win;

		snprintf(k, sizeof(k), s->n_pid > 1 ? "server %u cpu" : "server cpu", i);
		fig(k, "cores", c, "(pid %d, utime+stime)", s->pid[i]);
		cpu += c;
		cpu_max = fmax(cpu_max, c);
	}
	if (s->n_pid > 1)
		fig("server cpu all", "cores", cpu, NULL);
	fig("sim cpu", "cores", (s1->self_cpu - s0->self_cpu) / win,
	    "(getrusage: hosts' rounds, NATS client threads, the buckets)");
	fig("sim cpu buckets", "cores", s->bucket_cpu / s1->t,
	    "(the simulated buckets alone, whole run: not demand sharing's)");
	fig("sim threads", "", threads_now(), NULL);
	return s->n_pid ? cpu_max : NAN;
}

/* The settling, the peaks while settling and the overshoot once settled;
 * ov[phase] set. */
static void report_shares(const struct sim *s, struct over ov[2])
{
	double I = (double)s->interval_ms / 1000.0;
	unsigned int p;
	char k[64];

	for (p = 0; p < 2; p++) {
		snprintf(k, sizeof(k), "settle after %s", p ? "shift" : "start");
		if (isnan(s->settle[p]))
			fig(k, "intervals", NAN,
			    "(not settled: shares of shared agents off target by > 5 %%)");
		else
			fig(k, "intervals", s->settle[p] / I,
			    "(%.2f s; then off target in %u polls of 20 ms, "
			    "at most %u host-agents)",
			    s->settle[p], s->disturbed[p], s->disturbed_max[p]);
	}
	for (p = 0; p < 2; p++) {
		double from = p ? s->shift_at : 0, end = p ? s->duration : s->shift_at;
		double to = isnan(s->settle[p]) ? end : from + s->settle[p];
		unsigned int pa = 0;
		double pk = s->shared ? peak(s, s->adm, from, to, &pa) : NAN;

		snprintf(k, sizeof(k), "peak while settling after %s", p ? "shift" : "start");
		fig(k, "R", pk, "(agent-%06u, largest admitted in 1 s windows in %.1f-%.1f s)", pa,
		    from, to);
	}
	/* Before the shift from the first settling, after it from the second
	 * (unsettled: from 3 intervals on). */
	overshoot(s, s->adm, isnan(s->settle[0]) ? 3 * I : s->settle[0], s->shift_at, 0, &ov[0]);
	overshoot(s, s->adm, s->shift_at + (isnan(s->settle[1]) ? 3 * I : s->settle[1]),
		  s->duration, 1, &ov[1]);
	report_over(s, "before shift", &ov[0]);
	report_over(s, "after shift", &ov[1]);
}

static void report_rounds(const struct sim *s)
{
	double rsum = 0, rmax = 0, late = 0;
	unsigned int i, rounds = 0, rmin = ~0u, rmx = 0;

	for (i = 0; i < s->hosts; i++) {
		const struct host *x = &s->h[i];

		rounds += x->rounds;
		rsum += x->round_sum;
		rmax = fmax(rmax, x->round_max);
		late = fmax(late, x->late_max);
		rmin = x->rounds < rmin ? x->rounds : rmin;
		rmx = x->rounds > rmx ? x->rounds : rmx;
	}
	fig("round mean", "ms", rounds ? rsum / rounds * 1000 : NAN, "(%u rounds)", rounds);
	fig("round max", "ms", rmax * 1000, NULL);
	fig("round late max", "ms", late * 1000, "(start after its schedule: workers behind)");
	fig("rounds per host min", "", rmin, "(max %u, scheduled %.0f)", rmx,
	    ceil(s->duration * 1000.0 / (double)s->interval_ms));
}

/* Per host its agd_dem_host_stats, then the sums. */
static void report_hosts(const struct sim *s)
{
	struct agd_dem_stats tot = { 0 };
	json_t *hs = jout ? json_array() : NULL;
	unsigned int i;

	for (i = 0; i < s->hosts; i++) {
		const struct host *x = &s->h[i];
		double mean = x->rounds ? x->round_sum / x->rounds * 1000 : 0;
		struct agd_dem_stats st;

		agd_dem_host_stats(x->dh, &st);
		printf("host %u: msgs out %" PRIu64 " (%" PRIu64 " B), in %" PRIu64 " (%" PRIu64
		       " B), owns %" PRIu64 " groups, lease takes %" PRIu64 ", losses %" PRIu64
		       ", invalid %" PRIu64 ", rounds %u, mean %.2f ms, max %.1f ms\n",
		       i, st.msgs_out, st.bytes_out, st.msgs_in, st.bytes_in, st.groups_owned,
		       st.lease_takes, st.lease_losses, st.invalid, x->rounds, mean,
		       x->round_max * 1000);
		if (hs)
			json_array_append_new(hs, json_pack(
				"{sI sI sI sI sI sI sI sI sI sf sf}",
				"msgs_out", (json_int_t)st.msgs_out,
				"bytes_out", (json_int_t)st.bytes_out,
				"msgs_in", (json_int_t)st.msgs_in,
				"bytes_in", (json_int_t)st.bytes_in,
				"groups_owned", (json_int_t)st.groups_owned,
				"lease_takes", (json_int_t)st.lease_takes,
				"lease_losses", (json_int_t)st.lease_losses,
				"invalid", (json_int_t)st.invalid, "rounds", (json_int_t)x->rounds,
				"round_mean_ms", mean, "round_max_ms", x->round_max * 1000));
		tot.msgs_out += st.msgs_out;
		tot.bytes_out += st.bytes_out;
		tot.msgs_in += st.msgs_in;
		tot.bytes_in += st.bytes_in;
		tot.groups_owned += st.groups_owned;
		tot.lease_takes += st.lease_takes;
		tot.lease_losses += st.lease_losses;
		tot.invalid += st.invalid;
	}
	if (hs)
		json_object_set_new(jout, "hosts", hs);
	fig("hosts msgs out", "", (double)tot.msgs_out, "(%" PRIu64 " B, whole run)",
	    tot.bytes_out);
	fig("hosts msgs in", "", (double)tot.msgs_in, "(%" PRIu64 " B, whole run)", tot.bytes_in);
	fig("groups owned", "", (double)tot.groups_owned,
	    "(of %u; lease takes %" PRIu64 ", losses %" PRIu64 ", invalid messages %" PRIu64 ")",
	    AGD_DEM_GROUPS, tot.lease_takes, tot.lease_losses, tot.invalid);
}

static int report(const struct sim *s, const struct sample *s0, const struct sample *s1)
{
	double I = (double)s->interval_ms / 1000.0, cpu_max;
	bool cpu_ok, settle_ok, over_ok;
	struct over ov[2];

	cpu_max = report_servers(s, s0, s1);
	report_shares(s, ov);
	report_rounds(s);
	report_hosts(s);
	cpu_ok = !isnan(cpu_max) && cpu_max < 1;
	settle_ok = !isnan(s->settle[1]) && s->settle[1] <= 2 * I;
	over_ok = ov[1].ok && ov[1].worst <= 1.05;
	printf("holds: %s (server cpu < 1 core: %s, settle after shift <= 2 intervals: %s, "
	       "overshoot after shift <= 1.05: %s)\n",
	       cpu_ok && settle_ok && over_ok ? "yes" : "no",
	       isnan(cpu_max) ? "n/a" : cpu_ok ? "yes" : "no", settle_ok ? "yes" : "no",
	       over_ok ? "yes" : "no");
	if (!jout)
		return 0;
	json_object_set_new(jout, "scenario",
		json_pack("{si si si sI sf sf sf sf sf si si}", "hosts", s->hosts,
			  "agents", s->agents, "shared", s->shared,
			  "interval_ms", (json_int_t)s->interval_ms, "floor", s->floor,
			  "rate", s->rate, "demand", s->demand, "shift_at", s->shift_at,
			  "duration", s->duration, "threads", s->threads, "replicas", s->replicas));
	if (json_dump_file(jout, s->json, JSON_INDENT(1))) {
		fprintf(stderr, "fleet_sim: cannot write %s\n", s->json);
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "server", 1, 0, 's' },   { "monitor", 1, 0, 'm' }, { "server-pid", 1, 0, 'p' },
		{ "hosts", 1, 0, 'n' },    { "agents", 1, 0, 'a' },  { "overlap", 1, 0, 'o' },
		{ "interval", 1, 0, 'i' }, { "floor", 1, 0, 'f' },   { "rate", 1, 0, 'r' },
		{ "demand", 1, 0, 'd' },   { "shift-at", 1, 0, 'S' }, { "duration", 1, 0, 'D' },
		{ "warmup", 1, 0, 'w' },   { "threads", 1, 0, 't' }, { "replicas", 1, 0, 'R' },
		{ "tick", 1, 0, 'k' },     { "json", 1, 0, 'j' },    { "verbose", 0, 0, 'v' },
		{ "trace", 1, 0, 'T' },
		{ 0 }
	};
	struct sim s = { .hosts = 100, .agents = 10000, .threads = 2, .replicas = 1,
			 .overlap = 1, .floor = 0.05, .rate = 1000, .demand = 4, .shift_at = 20,
			 .duration = 40, .warmup = 5, .tick = 0.1, .interval_ms = 1000,
			 .trace = -1, .settle = { NAN, NAN } };
	char *mon[MAX_SERVERS], *pids[MAX_SERVERS];
	unsigned int i, n_workers = 0;
	bool bucket_thread = false;
	struct sample s0, s1;
	double t_setup;
	int c, rc = 0;

	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 's': s.n_urls = split_list(optarg, s.urls, MAX_SERVERS); break;
		case 'm':
			s.n_monitor = split_list(optarg, mon, MAX_SERVERS);
			for (i = 0; i < s.n_monitor; i++)
				s.monitor[i] = atoi(mon[i]);
			break;
		case 'p':
			s.n_pid = split_list(optarg, pids, MAX_SERVERS);
			for (i = 0; i < s.n_pid; i++)
				s.pid[i] = atoi(pids[i]);
			break;
		case 'n': s.hosts = (unsigned int)strtoul(optarg, NULL, 10); break;
		case 'a': s.agents = (unsigned int)strtoul(optarg, NULL, 10); break;
		case 'o': s.overlap = strtod(optarg, NULL); break;
		case 'i': s.interval_ms = strtoull(optarg, NULL, 10); break;
		case 'f': s.floor = strtod(optarg, NULL); break;
		case 'r': s.rate = strtod(optarg, NULL); break;
		case 'd': s.demand = strtod(optarg, NULL); break;
		case 'S': s.shift_at = strtod(optarg, NULL); break;
		case 'D': s.duration = strtod(optarg, NULL); break;
		case 'w': s.warmup = strtod(optarg, NULL); break;
		case 't': s.threads = (unsigned int)strtoul(optarg, NULL, 10); break;
		case 'R': s.replicas = (unsigned int)strtoul(optarg, NULL, 10); break;
		case 'k': s.tick = strtod(optarg, NULL) / 1000.0; break;
		case 'j': s.json = optarg; break;
		case 'v': s.verbose = verbose = true; break;
		case 'T': s.trace = atoi(optarg); break;
		default: usage();
		}
	}
	if (!s.n_urls || !s.hosts || !s.agents || !s.threads || !s.interval_ms ||
	    !(s.overlap >= 0 && s.overlap <= 1) || !(s.floor >= 0 && s.floor < 1) ||
	    !(s.rate > 0) || !(s.demand > 0) || !(s.tick > 0) || !(s.duration > s.tick) ||
	    !(s.shift_at > 0) || s.n_monitor > MAX_SERVERS)
		usage();
	if (s.threads > s.hosts)
		s.threads = s.hosts;
	s.shared = (unsigned int)lround(s.overlap * s.agents);
	s.n_ticks = (unsigned int)ceil(s.duration / s.tick) + 2;
	if (pattern(&s)) {
		fprintf(stderr, "fleet_sim: out of memory\n");
		return 1;
	}
	if (s.json)
		jout = json_object();
	pthread_mutex_init(&s.lock, NULL);

	printf("scenario: %u hosts x %u agents (%u shared by every host, %u seen by one), "
	       "interval %" PRIu64 " ms, floor %.3g, R %.0f tokens/s, demand %.3g R, "
	       "shift at %.1f s (host 0 x10, the others x0.5), %.1f s, %u threads, %u server(s), "
	       "replicas %u\n",
	       s.hosts, s.agents, s.shared, s.agents - s.shared, s.interval_ms, s.floor, s.rate,
	       s.demand, s.shift_at, s.duration, s.threads, s.n_urls, s.replicas);
	fflush(stdout);

	if (nats_Open(-1) != NATS_OK) {
		fprintf(stderr, "fleet_sim: nats_Open failed\n");
		return 1;
	}
	s.h = calloc(s.hosts, sizeof(*s.h));
	s.w = calloc(s.threads, sizeof(*s.w));
	if (!s.h || !s.w)
		return 1;
	t_setup = mono_s();
	for (i = 0; i < s.hosts; i++) {
		if (host_init(&s, &s.h[i], i)) {
			fprintf(stderr, "fleet_sim: host %u cannot start\n", i);
			s.hosts = i + 1;
			rc = 1;
			goto out;
		}
	}
	for (i = 0; i < s.threads; i++) {
		s.w[i].s = &s;
		s.w[i].id = i;
	}
	s.adm = calloc((size_t)s.n_ticks * s.agents, sizeof(float));
	if (!s.adm) {
		fprintf(stderr, "fleet_sim: out of memory\n");
		rc = 1;
		goto out;
	}
	printf("set-up: %.2f s (%u connections)\n", mono_s() - t_setup, s.hosts);

	s.t0 = mono_s();
	s.wall0 = wall_ms();
	if (pthread_create(&s.buckets, NULL, buckets, &s)) {
		fprintf(stderr, "fleet_sim: cannot start the bucket thread\n");
		rc = 1;
		goto out;
	}
	bucket_thread = true;
	for (n_workers = 0; n_workers < s.threads; n_workers++)
		if (pthread_create(&s.w[n_workers].th, NULL, work, &s.w[n_workers])) {
			fprintf(stderr, "fleet_sim: cannot start a worker\n");
			stop = 1;
			rc = 1;
			goto join;
		}
	take_sample(&s, &s0);
	/* Watch the shares; sample the servers at the end of the warm-up. */
	for (;;) {
		double t = sim_now(&s);
		unsigned int off = 0;
		int phase = t >= s.shift_at;

		if (t >= s.duration)
			break;
		if (t >= s.warmup && s0.t < s.warmup)
			take_sample(&s, &s0);
		if (!phase || __atomic_load_n(&s.phase1_hosts, __ATOMIC_RELAXED) == s.hosts) {
			for (i = 0; i < s.hosts; i++)
				off += __atomic_load_n(&s.h[i].n_off, __ATOMIC_RELAXED);
			if (isnan(s.settle[phase]) && !off) {
				s.settle[phase] = t - (phase ? s.shift_at : 0);
			} else if (!isnan(s.settle[phase]) && off) {
				s.disturbed[phase]++;
				if (off > s.disturbed_max[phase])
					s.disturbed_max[phase] = off;
			}
		}
		sleep_s(0.02);
	}
join:
	for (i = 0; i < n_workers; i++)
		pthread_join(s.w[i].th, NULL);
	if (bucket_thread)
		pthread_join(s.buckets, NULL);
	if (rc)
		goto out;
	take_sample(&s, &s1);

	rc = report(&s, &s0, &s1);
out:
	stop = 1;
	for (i = 0; i < s.hosts; i++)
		if (s.h[i].s)
			host_fini(&s.h[i]);
	free(s.adm);
	free(s.h);
	free(s.w);
	for (i = 0; i < 2; i++) {
		free(s.sum[i]);
		free(s.ideal[i]);
		free(s.at_floor[i]);
	}
	json_decref(jout);
	nats_Close();
	return rc;
}
