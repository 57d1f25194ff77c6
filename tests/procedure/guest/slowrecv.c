/* slowrecv: accept one TCP connection on PORT and read it slower than a sender on a fast link
 * writes: 16 KiB, then a 2 ms pause. The receive queue fills, the kernel prunes it
 * (tcp_prune_queue() -> tcp_collapse(), which copies the queued data into freshly allocated
 * skbs), and the segments that arrive next are coalesced into those skbs (tcp_try_coalesce()),
 * as with any reader that falls behind. The socket's receive buffer is 256 KiB (SO_RCVBUF on
 * the listening socket, inherited by the connection), so the queue fills within a second.
 * Usage: slowrecv PORT. Prints "slowrecv: bytes=N usec=T" when the peer closes or on
 * SIGTERM/SIGINT, and exits 0. */
#include "sys.h"

static char buf[16384];

/* pause_or_stop sleeps usec microseconds unless a stop signal comes first (returns 0 then). */
static int pause_or_stop(const char *name, int sigfd, long usec)
{
	struct pollfd p = {.fd = sigfd, .events = POLLIN};
	struct timespec ts = {.sec = 0, .nsec = usec * 1000};
	long r = sys(NR_ppoll, &p, 1, &ts, 0, 0, 0);
	if (r < 0 && r != -EINTR)
		die(name, "ppoll", r);
	return !(r > 0 && p.revents);
}

int main(int argc, char **argv)
{
	const char *me = "slowrecv";
	long port = port_arg(me, argc, argv);
	int sigfd = stop_signals(me);
	long long total = 0, start = now_usec();
	long s = tcp_serve(me, port, sigfd, 256 << 10);
	if (s >= 0) {
		start = now_usec();
		while (wait_readable(me, (int)s, sigfd)) {
			long n = sys(NR_read, s, buf, sizeof(buf), 0, 0, 0);
			if (n == 0)
				break;
			if (n == -EINTR || n == -EAGAIN)
				continue;
			if (n < 0)
				die(me, "read", n);
			total += n;
			if (!pause_or_stop(me, sigfd, 2000))
				break;
		}
	}
	out_str("slowrecv: bytes=");
	out_num(total);
	out_str(" usec=");
	out_num(now_usec() - start);
	out_line(1);
	return 0;
}
