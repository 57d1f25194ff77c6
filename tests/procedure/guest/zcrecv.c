/* zcrecv: accept one TCP connection on PORT and receive it with getsockopt(TCP_ZEROCOPY_RECEIVE)
 * into a read-only mapping of the socket, the way Linux's selftest tcp_mmap does: the kernel
 * maps whole, page-aligned skb frag pages (vm_insert_pages takes a page reference,
 * MADV_DONTNEED drops it); bytes it cannot map (recv_skip_hint) are read with read().
 * Usage: zcrecv PORT. Prints "zcrecv: bytes=N zerocopy_bytes=Z usec=T" at EOF or on
 * SIGTERM/SIGINT, and exits 0. */
#include "sys.h"

/* The leading fields of struct tcp_zerocopy_receive (unchanged since 4.18); 5.10 accepts any
 * optlen from offsetofend(length) up. */
struct zc_receive {
	u64 address;
	u32 length;
	u32 recv_skip_hint;
	u32 inq;
	s32 err;
};

#define CHUNK (128 * 4096UL)
static char buf[CHUNK];

int main(int argc, char **argv)
{
	const char *me = "zcrecv";
	long port = port_arg(me, argc, argv);
	int sigfd = stop_signals(me);
	long long total = 0, mapped = 0, start = now_usec();
	long s = tcp_serve(me, port, sigfd, 0);
	if (s >= 0) {
		start = now_usec();
		long addr = sys(NR_mmap, 0, CHUNK, PROT_READ, MAP_SHARED, s, 0);
		if (addr < 0 && addr > -4096)
			die(me, "mmap of the TCP socket", addr);
		while (wait_readable(me, (int)s, sigfd)) {
			struct zc_receive zc = {.address = (u64)addr, .length = CHUNK};
			u32 zl = sizeof(zc);
			long r = sys(NR_getsockopt, s, IPPROTO_TCP, TCP_ZEROCOPY_RECEIVE, &zc, &zl, 0);
			if (r == -EINTR)
				continue;
			if (r < 0) {
				/* Newer kernels fail with EIO once the peer has closed: read() tells. */
				long n = sys(NR_read, s, buf, CHUNK, 0, 0, 0);
				if (n == 0)
					break;
				if (n < 0)
					die(me, "getsockopt(TCP_ZEROCOPY_RECEIVE)", r);
				total += n;
				continue;
			}
			if (zc.length) {
				mapped += zc.length;
				total += zc.length;
				sys(NR_madvise, addr, zc.length, MADV_DONTNEED, 0, 0, 0);
			}
			unsigned long want = zc.recv_skip_hint;
			if (zc.length == 0 && want == 0)
				want = CHUNK; /* nothing mappable: read() also sees EOF */
			if (want) {
				if (want > CHUNK)
					want = CHUNK;
				long n = sys(NR_read, s, buf, want, 0, 0, 0);
				if (n == 0)
					break;
				if (n == -EINTR || n == -EAGAIN)
					continue;
				if (n < 0)
					die(me, "read", n);
				total += n;
			}
		}
	}
	out_str("zcrecv: bytes=");
	out_num(total);
	out_str(" zerocopy_bytes=");
	out_num(mapped);
	out_str(" usec=");
	out_num(now_usec() - start);
	out_line(1);
	return 0;
}
