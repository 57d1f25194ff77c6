/* tracepages: copy each CPU's ftrace ring-buffer pages (per_cpu/cpuN/trace_pipe_raw) to a
 * virtio-serial port as the kernel hands them out, so that the guest spends no CPU formatting,
 * encrypting or sending the trace over the network it is testing.
 * Usage: tracepages RAW PORT [RAW PORT]...  (RAW a trace_pipe_raw, PORT its /dev/vportNpM).
 * Every 50 ms it splices the whole pages each CPU has ready (splice hands out no page that is
 * still being filled; the pages go to the port without a copy). A CPU that had no whole page
 * in a tick gets what it has read() (the kernel copies the events of its partly filled page
 * out), so that a quiet trace reaches the host within a tick or two: the host watches the
 * pools drain in it. On SIGTERM or SIGINT — the host stops tracing first — it moves what is
 * left the same way, prints "tracepages: RAW bytes=N" for each pair (N: what it wrote to the
 * port) and exits 0. */
#include "sys.h"

enum { MAXPAIRS = 16, PAGE = 4096, PIPE_PAGES = 16, O_RDONLY = 0, O_NONBLOCK = 04000, SPLICE_F_NONBLOCK = 2 };

static char page[PAGE];
static const char *me = "tracepages";

/* put writes n bytes to the port or dies: a byte lost here would be a trace the host cannot
 * decode. */
static void put(int port, const char *p, long n)
{
	while (n > 0) {
		long w = sys(NR_write, port, p, n, 0, 0, 0);
		if (w == -EINTR)
			continue;
		if (w <= 0)
			die(me, "write to the port", w);
		p += w;
		n -= w;
	}
}

/* move_full_pages splices the whole pages raw has ready through pipe into port and returns the
 * bytes moved. */
static long long move_full_pages(int raw, int pipe[2], int port)
{
	long long total = 0;
	for (;;) {
		long n = sys(NR_splice, raw, 0, pipe[1], 0, PIPE_PAGES * PAGE, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n == -EINTR)
			continue;
		if (n == -EAGAIN || n == 0)
			return total;
		if (n < 0)
			die(me, "splice from trace_pipe_raw", n);
		total += n;
		while (n > 0) {
			long m = sys(NR_splice, pipe[0], 0, port, 0, n, SPLICE_F_MOVE);
			if (m == -EINTR)
				continue;
			if (m <= 0)
				die(me, "splice to the port", m);
			n -= m;
		}
	}
}

/* read_rest reads raw (non-blocking) until it has nothing more, the partly filled page
 * included, or max pages, and writes it to port. */
static long long read_rest(int raw, int port, int max)
{
	long long total = 0;
	for (int i = 0; i < max; i++) {
		long n = sys(NR_read, raw, page, PAGE, 0, 0, 0);
		if (n == -EINTR)
			continue;
		if (n == -EAGAIN || n == 0)
			return total;
		if (n < 0)
			die(me, "read trace_pipe_raw", n);
		put(port, page, n);
		total += n;
	}
	return total;
}

int main(int argc, char **argv)
{
	int pairs = (argc - 1) / 2;
	if (argc < 3 || (argc - 1) % 2 || pairs > MAXPAIRS) {
		out_str("usage: tracepages RAW PORT [RAW PORT]... (at most 16 pairs)");
		out_line(2);
		return 2;
	}
	int sigfd = stop_signals(me);
	int raw[MAXPAIRS], port[MAXPAIRS], pipes[MAXPAIRS][2];
	long long sent[MAXPAIRS];
	for (int i = 0; i < pairs; i++) {
		long r = sys(NR_openat, AT_FDCWD, argv[1 + 2 * i], O_RDONLY | O_NONBLOCK, 0, 0, 0);
		if (r < 0)
			die(me, argv[1 + 2 * i], r);
		raw[i] = (int)r;
		r = sys(NR_openat, AT_FDCWD, argv[2 + 2 * i], O_WRONLY, 0, 0, 0);
		if (r < 0)
			die(me, argv[2 + 2 * i], r);
		port[i] = (int)r;
		r = sys(NR_pipe2, pipes[i], 0, 0, 0, 0, 0);
		if (r < 0)
			die(me, "pipe", r);
		sent[i] = 0;
	}
	out_str("tracepages: copying ");
	out_num(pairs);
	out_str(" CPUs");
	out_line(1);
	for (;;) {
		struct pollfd p = {.fd = sigfd, .events = POLLIN};
		struct timespec tick = {.sec = 0, .nsec = 50 * 1000 * 1000};
		long r = sys(NR_ppoll, &p, 1, &tick, 0, 0, 0);
		if (r < 0 && r != -EINTR)
			die(me, "ppoll", r);
		for (int i = 0; i < pairs; i++) {
			long long n = move_full_pages(raw[i], pipes[i], port[i]);
			/* A few pages at most: a CPU that fills pages faster is spliced next tick. */
			if (n == 0)
				n = read_rest(raw[i], port[i], 4);
			sent[i] += n;
		}
		if (r > 0)
			break;
	}
	for (int i = 0; i < pairs; i++) {
		sent[i] += move_full_pages(raw[i], pipes[i], port[i]);
		sent[i] += read_rest(raw[i], port[i], 1 << 30);
		out_str("tracepages: ");
		out_str(argv[1 + 2 * i]);
		out_str(" bytes=");
		out_num(sent[i]);
		out_line(1);
	}
	return 0;
}
