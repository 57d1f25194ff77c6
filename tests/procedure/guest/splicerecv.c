/* splicerecv: accept one TCP connection on PORT and move everything it sends to /dev/null with
 * splice() through a pipe, so the kernel hands skb pages to the pipe (get_page) instead of
 * copying them. Usage: splicerecv PORT. Prints "splicerecv: bytes=N usec=T" when the peer
 * closes or on SIGTERM/SIGINT, and exits 0. */
#include "sys.h"

int main(int argc, char **argv)
{
	const char *me = "splicerecv";
	long port = port_arg(me, argc, argv);
	int sigfd = stop_signals(me);
	int pipefd[2];
	long r = sys(NR_pipe2, pipefd, 0, 0, 0, 0, 0);
	if (r < 0)
		die(me, "pipe", r);
	long devnull = sys(NR_openat, AT_FDCWD, "/dev/null", O_WRONLY, 0, 0, 0);
	if (devnull < 0)
		die(me, "open /dev/null", devnull);
	long long total = 0, start = now_usec();
	long s = tcp_serve(me, port, sigfd, 0);
	if (s >= 0) {
		start = now_usec();
		while (wait_readable(me, (int)s, sigfd)) {
			long n = sys(NR_splice, s, 0, pipefd[1], 0, 1 << 16, SPLICE_F_MOVE | SPLICE_F_MORE);
			if (n == 0)
				break;
			if (n == -EINTR || n == -EAGAIN)
				continue;
			if (n < 0)
				die(me, "splice from the socket", n);
			total += n;
			while (n > 0) {
				long m = sys(NR_splice, pipefd[0], 0, devnull, 0, n, SPLICE_F_MOVE);
				if (m == -EINTR)
					continue;
				if (m <= 0)
					die(me, "splice to /dev/null", m);
				n -= m;
			}
		}
	}
	out_str("splicerecv: bytes=");
	out_num(total);
	out_str(" usec=");
	out_num(now_usec() - start);
	out_line(1);
	return 0;
}
