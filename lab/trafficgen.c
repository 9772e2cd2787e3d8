// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * ag-trafficgen: UDP traffic from ranges of source addresses, the lab's
 * traffic generator (the demo, the end-to-end tests and the benchmarks use
 * it).
 *
 * One or more flows (each --src starts one: its source range, destination,
 * ports, frame size, rate and count) are sent by one or more threads, each
 * pinned to a CPU and carrying its share of every flow. A transmit engine
 * puts the frames on the wire (tg.h):
 *   live    the kernel generates them: BPF_PROG_TEST_RUN in
 *           BPF_F_TEST_XDP_LIVE_FRAMES mode runs the frame program
 *           (trafficgen.bpf.c) on the flow's template, which sets the next
 *           source and returns XDP_TX (tx_live.c). Frames leave as XDP frames,
 *           as a NIC would deliver them to the peer of a veth. Hardened
 *           kernels (a BPF LSM policy, lockdown) refuse it.
 *   packet  an AF_PACKET socket per thread, sendmmsg(2) with
 *           PACKET_QDISC_BYPASS (tx_packet.c): no BPF at all. Frames leave as
 *           socket buffers.
 *   auto    live where the kernel allows it (a probe run that transmits
 *           nothing), packet otherwise; the report says which ran and why.
 * Pacing: each round sends what the flow's schedule (rate x time since
 * start) owes, so a rate holds over any span longer than a few milliseconds;
 * within a round frames go out back to back.
 *
 * "sent" counts frames the device accepted. The packet engine also counts
 * "refused": transmit attempts the device turned away because its queue was
 * full (tried again, so a --count is still sent in full). What the live
 * engine's device refuses after XDP_TX is not seen here (on a veth: the
 * wire side's tx_queue_N_xdp_xmit_errors): count frames at the receiver.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <linux/if.h>

#include "tg.h"

#define UNPACED_BATCH 65536u
#define BATCH_MAX 65536u
/* A paced round sends at least this many frames, or 1 ms worth if less. */
#define ROUND_MAX 32.0
/* After the device turned frames away: wait this long before trying again. */
#define REFUSED_BACKOFF_S 0.0002

/* Exit codes: also in the usage text and docs/OPERATIONS.md. */
#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define EXIT_NO_ENGINE 3

volatile sig_atomic_t tg_stop;

static void on_signal(int sig)
{
	tg_stop = 1;
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
		"Usage: ag-trafficgen --dev IFACE [--engine auto|live|packet] [--dst-mac MAC]\n"
		"                     [--threads N] [--duration SEC] [--json]\n"
		"                     [FLOW OPTIONS] --src RANGE [FLOW OPTIONS] [--src ...]\n"
		"Send UDP frames out of IFACE: the lab's traffic generator.\n"
		"\n"
		"  --dev IFACE        interface to transmit on (e.g. one end of a veth pair)\n"
		"  --engine E         how frames are sent (default auto):\n"
		"                       live    generated in the kernel: XDP live frames\n"
		"                               (BPF_PROG_TEST_RUN), as a NIC delivers them;\n"
		"                               refused by kernels with a BPF LSM or lockdown\n"
		"                       packet  an AF_PACKET socket per thread (sendmmsg,\n"
		"                               qdisc bypassed): socket buffers, no BPF\n"
		"                       auto    live where the kernel allows it, else packet\n"
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
		"SIGTERM, and prints the engine that ran and why, and the frames sent and the\n"
		"rate achieved, per flow and in all. Needs root (CAP_NET_RAW for packet;\n"
		"CAP_NET_ADMIN and CAP_BPF for live).\n"
		"Exit codes: 0 sent, 1 sending failed, 2 invalid arguments, 3 the engine asked\n"
		"for cannot run on this host (the reason on standard error).\n", TG_MAX_FLOWS);
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
uint32_t tg_low32(int family, const uint8_t a[16])
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
static int parse_range(const char *arg, struct tg_flow_opts *o)
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
		first = tg_low32(o->family, o->src_base);
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
		    tg_low32(o->family, last) < tg_low32(o->family, o->src_base)) {
			fprintf(stderr, "ag-trafficgen: --src '%s': the range must be ascending and "
					"differ only in the last 32 bits\n", arg);
			return -EINVAL;
		}
		uint64_t n = (uint64_t)tg_low32(o->family, last) - tg_low32(o->family, o->src_base) + 1;

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
static void build_frame(struct tg_flow_opts *fl, unsigned int i, const uint8_t dst_mac[6],
			const uint8_t src_mac[6])
{
	uint8_t *f = fl->frame, *ip = f + TG_ETH_HLEN, *udp;
	uint32_t len = fl->size, l4, sum;

	memset(f, 0, len);
	memcpy(f, dst_mac, 6);
	memcpy(f + 6, src_mac, 6);
	if (fl->family == AF_INET) {
		put16(f + 12, 0x0800);
		udp = ip + TG_IP4_HLEN;
		l4 = len - TG_ETH_HLEN - TG_IP4_HLEN;
		ip[0] = 0x45;
		put16(ip + 2, (uint16_t)(TG_IP4_HLEN + l4));
		put16(ip + 4, (uint16_t)i);
		put16(ip + 6, 0x4000); /* DF */
		ip[8] = 64;
		ip[9] = IPPROTO_UDP;
		memcpy(ip + 12, fl->src_base, 4);
		memcpy(ip + 16, fl->dst, 4);
		put16(ip + 10, csum_fold(csum_add(0, ip, TG_IP4_HLEN)));
	} else {
		put16(f + 12, 0x86dd);
		udp = ip + TG_IP6_HLEN;
		l4 = len - TG_ETH_HLEN - TG_IP6_HLEN;
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
	memset(udp + TG_UDP_HLEN, 0x5a, l4 - TG_UDP_HLEN);
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
	fl->src_first = tg_low32(fl->family, fl->src_base);
	fl->frame_csum = fl->family == AF_INET ? (uint16_t)(ip[10] << 8 | ip[11]) :
						 (uint16_t)(udp[6] << 8 | udp[7]);
}

/* One's-complement checksum update for a 32-bit field changing from -> to. */
static uint16_t csum_replace4(uint16_t sum, uint32_t from, uint32_t to)
{
	uint32_t s = (uint16_t)~sum;

	s += (uint16_t)~from + (uint16_t)~(from >> 16);
	s += (uint16_t)to + (uint16_t)(to >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

/*
 * A copy of the flow's template, given source addr: the address's varying
 * word and the checksum that covers it (IPv4 header, IPv6 UDP), updated
 * from the template's (RFC 1624), so nothing else of the frame is touched.
 */
void tg_frame_set_source(const struct tg_flow_opts *fl, uint8_t *frame, uint32_t addr)
{
	uint16_t c = csum_replace4(fl->frame_csum, fl->src_first, addr);
	uint8_t *ip = frame + TG_ETH_HLEN;

	if (fl->family == AF_INET) {
		put16(ip + 10, c);
		put16(ip + 12, (uint16_t)(addr >> 16));
		put16(ip + 14, (uint16_t)addr);
	} else {
		put16(ip + TG_IP6_HLEN + 6, c ? c : 0xffff);
		put16(ip + 20, (uint16_t)(addr >> 16));
		put16(ip + 22, (uint16_t)addr);
	}
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
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR && !tg_stop)
		;
}

static int flow_option(int c, const char *arg, struct tg_flow_opts *fl)
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
		if (parse_u64(arg, TG_FRAME_MAX, &v))
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
static int check_flow(struct tg_flow_opts *fl)
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
	if (fl->size < TG_ETH_HLEN + (fl->family == AF_INET ? TG_IP4_HLEN : TG_IP6_HLEN) + TG_UDP_HLEN) {
		fprintf(stderr, "ag-trafficgen: --src %s: --size %u is too small for the headers\n",
			fl->src_arg, fl->size);
		return -EINVAL;
	}
	return 0;
}

static int parse_args(int argc, char **argv, struct tg_opts *o)
{
	static const struct option longopts[] = {
		{ "dev", required_argument, NULL, 'd' },   { "src", required_argument, NULL, 's' },
		{ "dst", required_argument, NULL, 'D' },   { "dst-mac", required_argument, NULL, 'm' },
		{ "sport", required_argument, NULL, 'S' }, { "dport", required_argument, NULL, 'P' },
		{ "size", required_argument, NULL, 'z' },  { "count", required_argument, NULL, 'c' },
		{ "rate", required_argument, NULL, 'r' },  { "duration", required_argument, NULL, 't' },
		{ "threads", required_argument, NULL, 'T' }, { "json", no_argument, NULL, 'j' },
		{ "engine", required_argument, NULL, 'e' },
		{ "help", no_argument, NULL, 'h' },       {}
	};
	static struct tg_flow_opts defaults;
	struct tg_flow_opts *cur = &defaults;
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
		case 'e':
			if (!strcmp(optarg, "auto"))
				o->engine = TG_ENGINE_AUTO;
			else if (!strcmp(optarg, "live"))
				o->engine = TG_ENGINE_LIVE;
			else if (!strcmp(optarg, "packet"))
				o->engine = TG_ENGINE_PACKET;
			else {
				fprintf(stderr, "ag-trafficgen: --engine '%s': use auto, live or packet\n",
					optarg);
				return -EINVAL;
			}
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


/*
 * Frames of a share to send now. Unpaced: a large batch. Paced: what the
 * schedule owes by now once that is 1 ms worth or ROUND_MAX frames,
 * whichever is less (bursts a receiver's 256-frame ring takes while its
 * NAPI wakes up, at any rate), else 0 and *due tells when it will be. A round that takes long (a live-frames run sets up a page pool;
 * without the anchor link it also waits for RCU) makes the next batch
 * bigger, so the long-run rate stays exact.
 */
static uint32_t owed_now(const struct tg_share *sh, double start, double now, double *due)
{
	double least, owed;

	if (sh->rate <= 0)
		return UNPACED_BATCH;
	least = sh->rate * 0.001;
	least = least < 1 ? 1 : least > ROUND_MAX ? ROUND_MAX : least;
	owed = sh->rate * (now - start) - (double)sh->sent;
	if (owed < least) {
		*due = start + ((double)sh->sent + least) / sh->rate;
		return 0;
	}
	return owed > BATCH_MAX ? BATCH_MAX : (uint32_t)owed;
}

/*
 * One round over the thread's flows: each sends what it owes. Returns the
 * time of the next round (now: something went out, look again at once), or
 * a negative value when the thread is done or failed (w->err).
 */
static double round_robin(struct tg_worker *w, double start, double now, double next)
{
	const struct tg_opts *o = w->o;
	bool active = false;
	unsigned int i;

	for (i = 0; i < o->nflows && !tg_stop; i++) {
		struct tg_share *sh = &w->share[i];
		double due = 0;
		int64_t got;
		uint32_t n;

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
		got = w->eng->send(w, i, n);
		if (got < 0) {
			if (!tg_stop) { /* else: interrupted, or the device went as we stopped */
				w->err = (int)got;
				w->err_what = "transmit";
				tg_stop = 1; /* the run failed: every thread stops */
			}
			return -1;
		}
		sh->sent += (uint64_t)got;
		if (sh->quota && sh->sent >= sh->quota)
			sh->done = true;
		if (got) {
			next = now;
		} else if (sh->rate <= 0) {
			sched_yield(); /* the device's queue is full: let its receiver run */
			next = now;
		} else if (now + REFUSED_BACKOFF_S < next) {
			next = now + REFUSED_BACKOFF_S; /* paced: try again a little later */
		}
	}
	return active ? next : -1;
}

static void *worker_main(void *arg)
{
	struct tg_worker *w = arg;
	const struct tg_opts *o = w->o;
	double start, end;
	int err;

	pin_to_cpu(w->cpu); /* best effort: more threads than CPUs still work */
	err = w->eng->thread_open(w);
	if (err) {
		w->err = err;
		w->err_what = "setting up the thread";
		tg_stop = 1;
		return NULL;
	}
	start = now_s();
	w->t_start = start;
	end = o->duration > 0 ? start + o->duration : 0;
	while (!tg_stop) {
		double now = now_s(), next;

		if (end && now >= end)
			break;
		next = round_robin(w, start, now, end ? end : now + 1);
		if (next < 0)
			break;
		if (next > now_s())
			sleep_until(next);
	}
	w->t_end = now_s(); /* before closing: a socket's release waits for RCU */
	w->eng->thread_close(w);
	return NULL;
}

/* Every thread gets an equal share of every flow's rate and count. */
static void split_shares(struct tg_worker *w, const struct tg_opts *o, unsigned int t)
{
	unsigned int i;

	for (i = 0; i < o->nflows; i++) {
		const struct tg_flow_opts *fl = &o->flows[i];
		struct tg_share *sh = &w->share[i];

		sh->rate = fl->rate / o->threads;
		if (fl->count) {
			sh->quota = fl->count / o->threads + (t < fl->count % o->threads ? 1 : 0);
			sh->done = sh->quota == 0;
		}
	}
}

/* A JSON string of s (the reasons come from strerror and our own text). */
static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

struct totals {
	uint64_t sent[TG_MAX_FLOWS];
	uint64_t refused[TG_MAX_FLOWS];
	double cpu_s;             /* CPU time of the process while sending (user + system) */
};

static double cpu_seconds(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru))
		return 0;
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void report(const struct tg_opts *o, const struct tg_engine *eng, const char *why,
		   const struct totals *t, double secs)
{
	uint64_t total = 0, refused = 0;
	unsigned int i;

	for (i = 0; i < o->nflows; i++) {
		total += t->sent[i];
		refused += t->refused[i];
	}
	if (o->json) {
		printf("{\"engine\":\"%s\",\"engine_reason\":", eng->name);
		json_str(why);
		printf(",\"sent\":%llu,\"refused\":%llu,\"seconds\":%.6f,\"pps\":%.1f,"
		       "\"cpu_seconds\":%.6f,\"threads\":%u,\"flows\":[", (unsigned long long)total,
		       (unsigned long long)refused, secs, secs > 0 ? (double)total / secs : 0,
		       t->cpu_s, o->threads);
		for (i = 0; i < o->nflows; i++) {
			printf("%s{\"src\":", i ? "," : "");
			json_str(o->flows[i].src_arg);
			printf(",\"sources\":%u,\"size\":%u,\"rate\":%.1f,\"sent\":%llu,"
			       "\"refused\":%llu,\"pps\":%.1f}", o->flows[i].src_count,
			       o->flows[i].size, o->flows[i].rate, (unsigned long long)t->sent[i],
			       (unsigned long long)t->refused[i],
			       secs > 0 ? (double)t->sent[i] / secs : 0);
		}
		printf("]}\n");
		return;
	}
	printf("engine: %s (%s)\n", eng->name, why);
	for (i = 0; i < o->nflows && o->nflows > 1; i++)
		printf("  %-36s %12llu frames %12.0f frames/s\n", o->flows[i].src_arg,
		       (unsigned long long)t->sent[i], secs > 0 ? (double)t->sent[i] / secs : 0);
	printf("sent %llu frames in %.3f s: %.0f frames/s (%u flow%s, %u thread%s)",
	       (unsigned long long)total, secs, secs > 0 ? (double)total / secs : 0, o->nflows,
	       o->nflows == 1 ? "" : "s", o->threads, o->threads == 1 ? "" : "s");
	if (refused)
		printf("; %llu attempts refused by the device (queue full) and retried",
		       (unsigned long long)refused);
	printf("\n");
}

/*
 * The engine to run, opened; why says why it was chosen. NULL when the one
 * asked for cannot run here (the reason printed).
 */
static const struct tg_engine *pick_engine(const struct tg_opts *o, char *why, size_t len)
{
	char live_why[256] = "";
	int err;

	if (o->engine != TG_ENGINE_PACKET) {
		err = tg_engine_live.open(o, live_why, sizeof(live_why));
		if (!err) {
			snprintf(why, len, "%s", o->engine == TG_ENGINE_LIVE ? "asked for" :
				 "auto: the kernel allows live frames");
			return &tg_engine_live;
		}
		if (o->engine == TG_ENGINE_LIVE) {
			fprintf(stderr, "ag-trafficgen: --engine live cannot run here: %s "
					"(--engine packet needs no BPF)\n", live_why);
			return NULL;
		}
	}
	err = tg_engine_packet.open(o, why, len);
	if (err) {
		fprintf(stderr, "ag-trafficgen: --engine packet cannot run here: %s\n", why);
		return NULL;
	}
	if (o->engine == TG_ENGINE_PACKET)
		snprintf(why, len, "asked for");
	else
		snprintf(why, len, "auto: live frames unavailable: %s", live_why);
	return &tg_engine_packet;
}

static int run(struct tg_opts *o)
{
	const struct tg_engine *eng;
	struct tg_worker *w = NULL;
	struct totals t = {};
	char why[384];
	double cpu0;
	uint8_t src_mac[6];
	double t0 = 0, t1 = 0;
	unsigned int i, f;
	int err;

	err = dev_mac(o->dev, src_mac);
	if (err) {
		fprintf(stderr, "ag-trafficgen: %s: cannot read the MAC address: %s\n", o->dev,
			strerror(-err));
		return EXIT_FAILED;
	}
	for (i = 0; i < o->nflows; i++)
		build_frame(&o->flows[i], i, o->dst_mac, src_mac);
	eng = pick_engine(o, why, sizeof(why));
	if (!eng)
		return EXIT_NO_ENGINE;
	fprintf(stderr, "ag-trafficgen: engine %s (%s)\n", eng->name, why);

	w = calloc(o->threads, sizeof(*w));
	if (!w) {
		fprintf(stderr, "ag-trafficgen: out of memory\n");
		eng->close();
		return EXIT_FAILED;
	}
	cpu0 = cpu_seconds();
	for (i = 0; i < o->threads; i++) {
		w[i].o = o;
		w[i].eng = eng;
		w[i].index = i;
		w[i].cpu = thread_cpu(i);
		split_shares(&w[i], o, i);
		err = -pthread_create(&w[i].tid, NULL, worker_main, &w[i]);
		if (err) {
			tg_stop = 1;
			fprintf(stderr, "ag-trafficgen: cannot start a thread: %s\n", strerror(-err));
			break;
		}
		w[i].started = true;
	}
	for (i = 0; i < o->threads; i++) {
		if (!w[i].started)
			continue;
		pthread_join(w[i].tid, NULL);
		if (w[i].t_start > 0 && (!t0 || w[i].t_start < t0))
			t0 = w[i].t_start;
		if (w[i].t_end > t1)
			t1 = w[i].t_end;
		for (f = 0; f < o->nflows; f++) {
			t.sent[f] += w[i].share[f].sent;
			t.refused[f] += w[i].share[f].refused;
		}
		if (w[i].err && !err) {
			err = w[i].err;
			fprintf(stderr, "ag-trafficgen: %s engine on %s: %s: %s\n", eng->name, o->dev,
				w[i].err_what, strerror(-err));
		}
	}
	t.cpu_s = cpu_seconds() - cpu0;
	/* The seconds reported: first thread sending to last one done. */
	report(o, eng, why, &t, t1 > t0 ? t1 - t0 : 0);
	free(w);
	eng->close();
	return err ? EXIT_FAILED : 0;
}

int main(int argc, char **argv)
{
	static struct tg_opts o;
	struct sigaction sa = { .sa_handler = on_signal };

	if (parse_args(argc, argv, &o))
		return EXIT_USAGE;
	/* No SA_RESTART: a blocked send returns at once with EINTR. */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	return run(&o);
}
