// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * ag-trafficgen: UDP traffic from ranges of source addresses, generated in
 * the kernel with BPF_PROG_TEST_RUN in BPF_F_TEST_XDP_LIVE_FRAMES mode.
 *
 * One or more flows (each --src starts one: its source range, destination,
 * ports, frame size, rate and count) are sent by one or more threads, each
 * pinned to a CPU and carrying its share of every flow. A thread runs the
 * frame program (trafficgen.bpf.c) on a flow's template frame with a repeat
 * count; the program sets the flow's next source address and returns XDP_TX,
 * and the kernel transmits every repetition out of --dev. On a veth pair the
 * frames arrive at the peer, through its XDP program, like frames from a
 * wire. Pacing: each call sends what the flow's schedule (rate x time since
 * start) owes, so a rate holds over any span longer than a few milliseconds;
 * within a call frames go out back to back.
 *
 * "sent" counts frames the program handed to the kernel for transmission;
 * frames the device then refuses (peer down, a full ring, no NAPI on a veth
 * peer without XDP or GRO) are not seen here: count them at the receiver.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/if.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "trafficgen.h"
#include "trafficgen.skel.h"

#define ETH_HLEN_ 14
#define IP4_HLEN 20
#define IP6_HLEN 40
#define UDP_HLEN 8
#define FRAME_MAX 1514 /* a veth refuses frames over MTU (1500) + Ethernet header */
#define UNPACED_BATCH 65536u
#define BATCH_MAX 65536u

struct flow {
	int family;               /* AF_INET or AF_INET6 */
	uint8_t src_base[16];     /* first source address, network order */
	uint32_t src_count;
	const char *src_arg;
	const char *dst_arg;
	uint8_t dst[16];
	uint16_t sport, dport;
	unsigned int size;        /* frame length, bytes */
	uint64_t count;           /* frames in all, 0: no limit */
	double rate;              /* frames per second in all, 0: as fast as possible */
	uint8_t frame[FRAME_MAX]; /* the template */
	uint32_t frame_len;
};

struct gen_opts {
	const char *dev;
	int ifindex;
	uint8_t dst_mac[6];
	double duration;          /* seconds, 0: until every count is sent or a signal */
	unsigned int threads;
	bool json;
	struct flow flows[TG_MAX_FLOWS];
	unsigned int nflows;
};

/* One thread's share of one flow. */
struct share {
	double rate;              /* 0: unpaced */
	uint64_t quota;           /* 0: no limit */
	uint64_t sent;
	bool done;
};

struct worker {
	pthread_t tid;
	bool started;
	const struct gen_opts *o;
	int prog_fd;
	int cpu;
	struct share share[TG_MAX_FLOWS];
	int err;                  /* negative errno of the first failed run */
};

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	stop = 1;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: ag-trafficgen --dev IFACE [--dst-mac MAC] [--threads N] [--duration SEC]\n"
		"                     [--json] [FLOW OPTIONS] --src RANGE [FLOW OPTIONS] [--src ...]\n"
		"Send UDP frames out of IFACE, generated in the kernel (XDP live frames).\n"
		"\n"
		"  --dev IFACE        interface to transmit on (e.g. one end of a veth pair)\n"
		"  --dst-mac MAC      destination MAC (default ff:ff:ff:ff:ff:ff)\n"
		"  --threads N        sending threads, one per CPU in turn (of the CPUs the\n"
		"                     process may use: see taskset), each carrying its share\n"
		"                     of every flow (default 1)\n"
		"  --duration SEC     stop after SEC seconds (default: when every --count is sent)\n"
		"  --json             print the result as one JSON object\n"
		"  --help             this text\n"
		"\n"
		"Each --src starts a flow (at most %d); the flow options after it are its own,\n"
		"those before the first --src apply to every flow:\n"
		"  --src RANGE        source addresses, taken in turn: ADDR, ADDR-ADDR or PREFIX/LEN\n"
		"                     (IPv4 or IPv6; for IPv6 only the last 32 bits vary)\n"
		"  --dst ADDR         destination address, same family as --src (required)\n"
		"  --sport P          UDP source port (default 40000)\n"
		"  --dport P          UDP destination port (default 9)\n"
		"  --size BYTES       frame length without FCS (default 64; 42..1514 IPv4, 62..1514 IPv6)\n"
		"  --count N          frames to send (default: no limit)\n"
		"  --rate PPS         frames per second (default: as fast as possible)\n"
		"\n"
		"Stops at --duration, when every flow has sent its --count, or on SIGINT or\n"
		"SIGTERM, and prints the frames sent and the rate achieved, per flow and in\n"
		"all. Needs root (CAP_NET_ADMIN, CAP_BPF).\n", TG_MAX_FLOWS);
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_double(const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < 0)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_addr(const char *s, int *family, uint8_t out[16])
{
	if (inet_pton(AF_INET, s, out) == 1) {
		*family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, s, out) == 1) {
		*family = AF_INET6;
		return 0;
	}
	return -EINVAL;
}

/* The 32 bits that vary: the whole IPv4 address or the last word of IPv6. */
static uint32_t low32(int family, const uint8_t a[16])
{
	uint32_t v;

	memcpy(&v, family == AF_INET ? a : a + 12, 4);
	return ntohl(v);
}

static void set_low32(int family, uint8_t a[16], uint32_t v)
{
	v = htonl(v);
	memcpy(family == AF_INET ? a : a + 12, &v, 4);
}

/* ADDR, FIRST-LAST or PREFIX/LEN. Errors name what is wrong. */
static int parse_range(const char *arg, struct flow *o)
{
	char buf[INET6_ADDRSTRLEN * 2 + 2];
	char *sep;
	uint8_t last[16];
	int fam2;

	if (strlen(arg) >= sizeof(buf)) {
		fprintf(stderr, "ag-trafficgen: --src '%s': too long\n", arg);
		return -EINVAL;
	}
	strcpy(buf, arg);
	o->src_count = 1;
	if ((sep = strchr(buf, '/'))) {
		uint64_t len;
		unsigned int bits, host;
		uint32_t first;

		*sep = '\0';
		if (parse_addr(buf, &o->family, o->src_base) ||
		    parse_u64(sep + 1, o->family == AF_INET ? 32 : 128, &len)) {
			fprintf(stderr, "ag-trafficgen: --src '%s': not a prefix\n", arg);
			return -EINVAL;
		}
		bits = o->family == AF_INET ? 32 : 128;
		host = bits - (unsigned int)len;
		if (host > 32) {
			fprintf(stderr, "ag-trafficgen: --src '%s': at most 2^32 addresses "
					"(only the last 32 bits vary)\n", arg);
			return -EINVAL;
		}
		first = low32(o->family, o->src_base);
		if (host == 32) {
			first = 0;
			o->src_count = UINT32_MAX; /* every address but one */
		} else {
			first &= ~((1u << host) - 1);
			o->src_count = 1u << host;
		}
		set_low32(o->family, o->src_base, first);
		return 0;
	}
	if ((sep = strchr(buf, '-'))) {
		*sep = '\0';
		if (parse_addr(buf, &o->family, o->src_base) || parse_addr(sep + 1, &fam2, last) ||
		    fam2 != o->family) {
			fprintf(stderr, "ag-trafficgen: --src '%s': not a range of one family\n", arg);
			return -EINVAL;
		}
		if ((o->family == AF_INET6 && memcmp(o->src_base, last, 12)) ||
		    low32(o->family, last) < low32(o->family, o->src_base)) {
			fprintf(stderr, "ag-trafficgen: --src '%s': the range must be ascending and "
					"differ only in the last 32 bits\n", arg);
			return -EINVAL;
		}
		uint64_t n = (uint64_t)low32(o->family, last) - low32(o->family, o->src_base) + 1;

		o->src_count = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
		return 0;
	}
	if (parse_addr(buf, &o->family, o->src_base)) {
		fprintf(stderr, "ag-trafficgen: --src '%s': not an address\n", arg);
		return -EINVAL;
	}
	return 0;
}

static int parse_mac(const char *s, uint8_t mac[6])
{
	unsigned int b[6];
	char tail;
	int i;

	if (sscanf(s, "%x:%x:%x:%x:%x:%x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &tail) != 6)
		return -EINVAL;
	for (i = 0; i < 6; i++) {
		if (b[i] > 0xff)
			return -EINVAL;
		mac[i] = (uint8_t)b[i];
	}
	return 0;
}

static int dev_mac(const char *dev, uint8_t mac[6])
{
	struct ifreq ifr = {};
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int err = 0;

	if (fd < 0)
		return -errno;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", dev);
	if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0)
		err = -errno;
	else
		memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
	close(fd);
	return err;
}

static uint32_t csum_add(uint32_t sum, const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i + 1 < n; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (n & 1)
		sum += (uint32_t)(p[n - 1] << 8);
	return sum;
}

static uint16_t csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/*
 * The template frame of flow index i, with valid lengths and checksums for
 * its first source, and i in the IPv4 identification or IPv6 flow label.
 */
static void build_frame(struct flow *fl, unsigned int i, const uint8_t dst_mac[6],
			const uint8_t src_mac[6])
{
	uint8_t *f = fl->frame, *ip = f + ETH_HLEN_, *udp;
	uint32_t len = fl->size, l4, sum;

	memset(f, 0, len);
	memcpy(f, dst_mac, 6);
	memcpy(f + 6, src_mac, 6);
	if (fl->family == AF_INET) {
		put16(f + 12, 0x0800);
		udp = ip + IP4_HLEN;
		l4 = len - ETH_HLEN_ - IP4_HLEN;
		ip[0] = 0x45;
		put16(ip + 2, (uint16_t)(IP4_HLEN + l4));
		put16(ip + 4, (uint16_t)i);
		put16(ip + 6, 0x4000); /* DF */
		ip[8] = 64;
		ip[9] = IPPROTO_UDP;
		memcpy(ip + 12, fl->src_base, 4);
		memcpy(ip + 16, fl->dst, 4);
		put16(ip + 10, csum_fold(csum_add(0, ip, IP4_HLEN)));
	} else {
		put16(f + 12, 0x86dd);
		udp = ip + IP6_HLEN;
		l4 = len - ETH_HLEN_ - IP6_HLEN;
		ip[0] = 0x60;
		put16(ip + 2, (uint16_t)i);
		put16(ip + 4, (uint16_t)l4);
		ip[6] = IPPROTO_UDP;
		ip[7] = 64;
		memcpy(ip + 8, fl->src_base, 16);
		memcpy(ip + 24, fl->dst, 16);
	}
	put16(udp, fl->sport);
	put16(udp + 2, fl->dport);
	put16(udp + 4, (uint16_t)l4);
	memset(udp + UDP_HLEN, 0x5a, l4 - UDP_HLEN);
	if (fl->family == AF_INET6) {
		/* Pseudo header: addresses, upper-layer length, next header. */
		uint16_t c;

		sum = csum_add(0, ip + 8, 32);
		sum += l4 + IPPROTO_UDP;
		sum = csum_add(sum, udp, l4);
		c = csum_fold(sum);
		put16(udp + 6, c ? c : 0xffff);
	}
	fl->frame_len = len;
}

/*
 * The CPU of thread i: the CPUs the process may run on, in turn, so that
 * `taskset -c 1 ag-trafficgen ...` keeps every thread on CPU 1.
 */
static int thread_cpu(unsigned int i)
{
	cpu_set_t allowed;
	unsigned int n = 0, k = 0;
	int c;

	if (sched_getaffinity(0, sizeof(allowed), &allowed) || !(n = CPU_COUNT(&allowed)))
		return (int)i;
	for (c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &allowed) && k++ == i % n)
			return c;
	return (int)i;
}

static int pin_to_cpu(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return -pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

/* Sleep until the absolute monotonic time t (seconds), or a signal. */
static void sleep_until(double t)
{
	struct timespec ts = { .tv_sec = (time_t)t };

	ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR && !stop)
		;
}

/*
 * Frames of a share to send now. Unpaced: a large batch. Paced: what the
 * schedule owes by now once that is at least 5 ms worth (about 200 calls a
 * second: smooth, light on the CPU), else 0 and *due tells when it will be.
 * A call that takes long (a page pool is set up per call; without the anchor
 * link each call also waits for RCU) makes the next batch bigger, so the
 * long-run rate stays exact.
 */
static uint32_t owed_now(const struct share *sh, double start, double now, double *due)
{
	double least, owed;

	if (sh->rate <= 0)
		return UNPACED_BATCH;
	least = sh->rate * 0.005 < 1 ? 1 : sh->rate * 0.005;
	owed = sh->rate * (now - start) - (double)sh->sent;
	if (owed < least) {
		*due = start + ((double)sh->sent + least) / sh->rate;
		return 0;
	}
	return owed > BATCH_MAX ? BATCH_MAX : (uint32_t)owed;
}

static int send_batch(struct worker *w, const struct flow *fl, uint32_t n)
{
	struct xdp_md ctx = { .data_end = fl->frame_len, .ingress_ifindex = (__u32)w->o->ifindex };
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = fl->frame, .data_size_in = fl->frame_len,
		    .ctx_in = &ctx, .ctx_size_in = sizeof(ctx), .repeat = n,
		    .batch_size = n < 256 ? n : 256, .flags = BPF_F_TEST_XDP_LIVE_FRAMES);

	return bpf_prog_test_run_opts(w->prog_fd, &opts) ? -errno : 0;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	const struct gen_opts *o = w->o;
	double start = now_s(), end = o->duration > 0 ? start + o->duration : 0;

	pin_to_cpu(w->cpu); /* best effort: more threads than CPUs still work */
	while (!stop) {
		double now = now_s(), next = end ? end : now + 1;
		bool active = false;
		unsigned int i;

		if (end && now >= end)
			break;
		for (i = 0; i < o->nflows && !stop; i++) {
			struct share *sh = &w->share[i];
			double due = 0;
			uint32_t n;
			int err;

			if (sh->done)
				continue;
			active = true;
			n = owed_now(sh, start, now, &due);
			if (!n) {
				next = due < next ? due : next;
				continue;
			}
			if (sh->quota && sh->quota - sh->sent < n)
				n = (uint32_t)(sh->quota - sh->sent);
			err = send_batch(w, &o->flows[i], n);
			if (err) {
				if (!stop) /* else: interrupted, or the device went as we stopped */
					w->err = err;
				return NULL;
			}
			sh->sent += n;
			if (sh->quota && sh->sent >= sh->quota)
				sh->done = true;
			next = now; /* something was sent: look again at once */
		}
		if (!active)
			break;
		if (next > now_s())
			sleep_until(next);
	}
	return NULL;
}


static int flow_option(int c, const char *arg, struct flow *fl)
{
	uint64_t v;

	switch (c) {
	case 'D':
		fl->dst_arg = arg;
		return 0;
	case 'S':
	case 'P':
		if (parse_u64(arg, 65535, &v))
			return -EINVAL;
		*(c == 'S' ? &fl->sport : &fl->dport) = (uint16_t)v;
		return 0;
	case 'z':
		if (parse_u64(arg, FRAME_MAX, &v))
			return -EINVAL;
		fl->size = (unsigned int)v;
		return 0;
	case 'c':
		return parse_u64(arg, UINT64_MAX, &fl->count);
	case 'r':
		return parse_double(arg, &fl->rate);
	}
	return -EINVAL;
}

/* Every flow complete and consistent; errors name the flow by its --src. */
static int check_flow(struct flow *fl)
{
	int fam;

	if (!fl->dst_arg) {
		fprintf(stderr, "ag-trafficgen: --src %s: no --dst\n", fl->src_arg);
		return -EINVAL;
	}
	if (parse_addr(fl->dst_arg, &fam, fl->dst) || fam != fl->family) {
		fprintf(stderr, "ag-trafficgen: --src %s: --dst '%s' is not an address of its family\n",
			fl->src_arg, fl->dst_arg);
		return -EINVAL;
	}
	if (fl->size < ETH_HLEN_ + (fl->family == AF_INET ? IP4_HLEN : IP6_HLEN) + UDP_HLEN) {
		fprintf(stderr, "ag-trafficgen: --src %s: --size %u is too small for the headers\n",
			fl->src_arg, fl->size);
		return -EINVAL;
	}
	return 0;
}

static int parse_args(int argc, char **argv, struct gen_opts *o)
{
	static const struct option longopts[] = {
		{ "dev", required_argument, NULL, 'd' },   { "src", required_argument, NULL, 's' },
		{ "dst", required_argument, NULL, 'D' },   { "dst-mac", required_argument, NULL, 'm' },
		{ "sport", required_argument, NULL, 'S' }, { "dport", required_argument, NULL, 'P' },
		{ "size", required_argument, NULL, 'z' },  { "count", required_argument, NULL, 'c' },
		{ "rate", required_argument, NULL, 'r' },  { "duration", required_argument, NULL, 't' },
		{ "threads", required_argument, NULL, 'T' }, { "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },       {}
	};
	static struct flow defaults;
	struct flow *cur = &defaults;
	uint64_t v;
	unsigned int i;
	int c;

	defaults.sport = 40000;
	defaults.dport = 9;
	defaults.size = 64;
	memset(o->dst_mac, 0xff, 6);
	o->threads = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			o->dev = optarg;
			break;
		case 's':
			if (o->nflows == TG_MAX_FLOWS) {
				fprintf(stderr, "ag-trafficgen: at most %d flows\n", TG_MAX_FLOWS);
				return -EINVAL;
			}
			cur = &o->flows[o->nflows++];
			*cur = defaults;
			cur->src_arg = optarg;
			if (parse_range(optarg, cur))
				return -EINVAL;
			break;
		case 'm':
			if (parse_mac(optarg, o->dst_mac))
				goto bad;
			break;
		case 't':
			if (parse_double(optarg, &o->duration))
				goto bad;
			break;
		case 'T':
			if (parse_u64(optarg, 1024, &v) || v == 0)
				goto bad;
			o->threads = (unsigned int)v;
			break;
		case 'j':
			o->json = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case 'D':
		case 'S':
		case 'P':
		case 'z':
		case 'c':
		case 'r':
			if (flow_option(c, optarg, cur))
				goto bad;
			break;
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "ag-trafficgen: unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	if (!o->dev || !o->nflows) {
		fprintf(stderr, "ag-trafficgen: --dev and at least one --src are required (see --help)\n");
		return -EINVAL;
	}
	for (i = 0; i < o->nflows; i++)
		if (check_flow(&o->flows[i]))
			return -EINVAL;
	o->ifindex = (int)if_nametoindex(o->dev);
	if (!o->ifindex) {
		fprintf(stderr, "ag-trafficgen: --dev '%s': no such interface\n", o->dev);
		return -ENODEV;
	}
	return 0;
bad:
	fprintf(stderr, "ag-trafficgen: %s: invalid value '%s'\n", argv[optind - 1], optarg);
	return -EINVAL;
}

static void report(const struct gen_opts *o, const uint64_t *sent, double secs)
{
	uint64_t total = 0;
	unsigned int i;

	for (i = 0; i < o->nflows; i++)
		total += sent[i];
	if (o->json) {
		printf("{\"sent\":%llu,\"seconds\":%.6f,\"pps\":%.1f,\"threads\":%u,\"flows\":[",
		       (unsigned long long)total, secs, secs > 0 ? (double)total / secs : 0,
		       o->threads);
		for (i = 0; i < o->nflows; i++)
			printf("%s{\"src\":\"%s\",\"sources\":%u,\"size\":%u,\"sent\":%llu,"
			       "\"pps\":%.1f}", i ? "," : "", o->flows[i].src_arg,
			       o->flows[i].src_count, o->flows[i].size, (unsigned long long)sent[i],
			       secs > 0 ? (double)sent[i] / secs : 0);
		printf("]}\n");
		return;
	}
	for (i = 0; i < o->nflows && o->nflows > 1; i++)
		printf("  %-36s %12llu frames %12.0f frames/s\n", o->flows[i].src_arg,
		       (unsigned long long)sent[i], secs > 0 ? (double)sent[i] / secs : 0);
	printf("sent %llu frames in %.3f s: %.0f frames/s (%u flow%s, %u thread%s)\n",
	       (unsigned long long)total, secs, secs > 0 ? (double)total / secs : 0, o->nflows,
	       o->nflows == 1 ? "" : "s", o->threads, o->threads == 1 ? "" : "s");
}

/* The flows' source ranges into the program's map. */
static int load_flows(struct trafficgen_bpf *skel, const struct gen_opts *o)
{
	int fd = bpf_map__fd(skel->maps.tg_flows);
	unsigned int i;

	for (i = 0; i < o->nflows; i++) {
		const struct flow *fl = &o->flows[i];
		struct tg_flow v = { .src_first = low32(fl->family, fl->src_base),
				     .src_count = fl->src_count,
				     .ip_version = fl->family == AF_INET ? 4 : 6 };

		if (bpf_map_update_elem(fd, &i, &v, 0))
			return -errno;
	}
	return 0;
}

/* Every thread gets an equal share of every flow's rate and count. */
static void split_shares(struct worker *w, const struct gen_opts *o, unsigned int t)
{
	unsigned int i;

	for (i = 0; i < o->nflows; i++) {
		const struct flow *fl = &o->flows[i];
		struct share *sh = &w->share[i];

		sh->rate = fl->rate / o->threads;
		if (fl->count) {
			sh->quota = fl->count / o->threads + (t < fl->count % o->threads ? 1 : 0);
			sh->done = sh->quota == 0;
		}
	}
}

/*
 * Each XDP test run adds the program to the kernel's XDP dispatcher and
 * removes it again, and each change waits for an RCU grace period: about
 * 20 ms a call. A program already attached in native mode stays in the
 * dispatcher, so the runs change nothing and cost microseconds. Attach the
 * frame program to the device itself through a link (gone when this process
 * exits, however it exits); it passes received frames untouched. If the
 * device has a program already, go on without: slower calls, same frames.
 */
static struct bpf_link *attach_anchor(struct bpf_program *prog, int ifindex, const char *dev)
{
	struct bpf_link *link = bpf_program__attach_xdp(prog, ifindex);

	if (!link) {
		fprintf(stderr, "ag-trafficgen: note: cannot attach to %s (%s): each batch then "
				"costs about 20 ms, batches grow to match\n", dev, strerror(errno));
		return NULL;
	}
	return link;
}

static int run(struct gen_opts *o)
{
	struct trafficgen_bpf *skel = NULL;
	struct bpf_link *anchor = NULL;
	struct worker *w = NULL;
	uint64_t sent[TG_MAX_FLOWS] = {};
	uint8_t src_mac[6];
	double t0, secs;
	unsigned int i, f;
	int err;

	err = dev_mac(o->dev, src_mac);
	if (err) {
		fprintf(stderr, "ag-trafficgen: %s: cannot read the MAC address: %s\n", o->dev,
			strerror(-err));
		return err;
	}
	for (i = 0; i < o->nflows; i++)
		build_frame(&o->flows[i], i, o->dst_mac, src_mac);

	skel = trafficgen_bpf__open();
	if (!skel) {
		err = -errno;
		fprintf(stderr, "ag-trafficgen: cannot open the frame program: %s\n", strerror(-err));
		return err;
	}
	memcpy((void *)skel->rodata->own_mac, src_mac, 6);
	err = trafficgen_bpf__load(skel);
	if (!err)
		err = load_flows(skel, o);
	if (err) {
		fprintf(stderr, "ag-trafficgen: cannot load the frame program: %s\n", strerror(-err));
		goto cleanup;
	}
	anchor = attach_anchor(skel->progs.trafficgen_xdp, o->ifindex, o->dev);

	w = calloc(o->threads, sizeof(*w));
	if (!w) {
		err = -ENOMEM;
		goto cleanup;
	}
	t0 = now_s();
	for (i = 0; i < o->threads; i++) {
		w[i].o = o;
		w[i].prog_fd = bpf_program__fd(skel->progs.trafficgen_xdp);
		w[i].cpu = thread_cpu(i);
		split_shares(&w[i], o, i);
		err = -pthread_create(&w[i].tid, NULL, worker_main, &w[i]);
		if (err) {
			stop = 1;
			fprintf(stderr, "ag-trafficgen: cannot start a thread: %s\n", strerror(-err));
			break;
		}
		w[i].started = true;
	}
	for (i = 0; i < o->threads; i++) {
		if (!w[i].started)
			continue;
		pthread_join(w[i].tid, NULL);
		for (f = 0; f < o->nflows; f++)
			sent[f] += w[i].share[f].sent;
		if (w[i].err && !err) {
			err = w[i].err;
			fprintf(stderr, "ag-trafficgen: BPF_PROG_TEST_RUN (live frames) on %s: %s\n",
				o->dev, strerror(-err));
		}
	}
	secs = now_s() - t0;
	report(o, sent, secs);
cleanup:
	free(w);
	bpf_link__destroy(anchor);
	trafficgen_bpf__destroy(skel);
	return err;
}

int main(int argc, char **argv)
{
	static struct gen_opts o;
	struct sigaction sa = { .sa_handler = on_signal };

	if (parse_args(argc, argv, &o))
		return 2;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	return run(&o) ? 1 : 0;
}
