/* sys.h: the little of a C library the guest helpers need, written against raw Linux syscalls so
 * the helpers build with a bare cross compiler (-nostdlib -ffreestanding, no libc headers, as
 * with a kernel.org toolchain) for aarch64 and x86_64. Signals are taken through a signalfd, so
 * no handler or sigreturn trampoline is needed. */
#ifndef PPKIT_GUEST_SYS_H
#define PPKIT_GUEST_SYS_H

#pragma GCC diagnostic ignored "-Wunused-function"

typedef unsigned long size_t;
typedef long ssize_t;
typedef unsigned long long u64;
typedef unsigned int u32;
typedef int s32;
typedef unsigned short u16;

#if defined(__aarch64__)
enum {
	NR_ioctl = 29, NR_openat = 56, NR_close = 57, NR_pipe2 = 59, NR_read = 63, NR_write = 64,
	NR_ppoll = 73, NR_signalfd4 = 74, NR_splice = 76, NR_exit_group = 94, NR_clock_gettime = 113,
	NR_rt_sigprocmask = 135, NR_socket = 198, NR_bind = 200, NR_listen = 201, NR_recvfrom = 207,
	NR_setsockopt = 208, NR_getsockopt = 209, NR_mmap = 222, NR_madvise = 233, NR_accept4 = 242,
};
static inline long syscall6(long n, long a, long b, long c, long d, long e, long f)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = e;
	register long x5 __asm__("x5") = f;
	__asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory", "cc");
	return x0;
}
__asm__(".text\n.global _start\n_start:\n\tmov x0, sp\n\tbl start_c\n");
#elif defined(__x86_64__)
enum {
	NR_read = 0, NR_write = 1, NR_close = 3, NR_mmap = 9, NR_rt_sigprocmask = 14, NR_ioctl = 16,
	NR_madvise = 28, NR_socket = 41, NR_recvfrom = 45, NR_bind = 49, NR_listen = 50,
	NR_setsockopt = 54, NR_getsockopt = 55, NR_clock_gettime = 228, NR_exit_group = 231,
	NR_openat = 257, NR_ppoll = 271, NR_splice = 275, NR_accept4 = 288, NR_signalfd4 = 289,
	NR_pipe2 = 293,
};
static inline long syscall6(long n, long a, long b, long c, long d, long e, long f)
{
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	long ret;
	__asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory");
	return ret;
}
__asm__(".text\n.global _start\n_start:\n\txor %rbp, %rbp\n\tmov %rsp, %rdi\n\tand $-16, %rsp\n\tcall start_c\n\thlt\n");
#else
#error "guest helpers support aarch64 and x86_64"
#endif

#define sys(n, a, b, c, d, e, f) syscall6(n, (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))

/* A non-empty .data, so the writable segment has file contents and .bss follows it: Linux
 * before 6.7 mishandles a segment that is all .bss (p_filesz 0 at an unaligned address) and the
 * process dies with SIGSEGV right after exec. */
__attribute__((used)) static volatile int data_anchor = 1;

/* Constants shared by both architectures. */
enum {
	EINTR = 4, EAGAIN = 11, ENETDOWN = 100,
	AF_INET = 2, AF_PACKET = 17, SOCK_STREAM = 1, SOCK_RAW = 3, ETH_P_ALL = 0x0003,
	SOL_SOCKET = 1, SO_REUSEADDR = 2, SO_RCVBUF = 8, SO_RCVBUFFORCE = 33, IPPROTO_TCP = 6, TCP_ZEROCOPY_RECEIVE = 35,
	SIOCGIFINDEX = 0x8933, O_WRONLY = 1, AT_FDCWD = -100,
	PROT_READ = 1, MAP_SHARED = 1, MADV_DONTNEED = 4,
	SPLICE_F_MOVE = 1, SPLICE_F_MORE = 4,
	SIGINT = 2, SIGTERM = 15, SIG_BLOCK = 0, POLLIN = 1, CLOCK_MONOTONIC = 1,
};

struct sockaddr_in { u16 family; u16 port; u32 addr; unsigned char zero[8]; };
struct sockaddr_ll { u16 family; u16 protocol; s32 ifindex; u16 hatype; unsigned char pkttype, halen, addr[8]; };
struct ifreq { char name[16]; union { s32 ifindex; char pad[24]; } u; };
struct pollfd { s32 fd; short events, revents; };
struct timespec { long sec, nsec; };

static inline u16 htons(u16 v) { return (u16)((v << 8) | (v >> 8)); }

void *memset(void *d, int c, size_t n)
{
	unsigned char *p = d;
	while (n--)
		*p++ = (unsigned char)c;
	return d;
}
void *memcpy(void *d, const void *s, size_t n)
{
	unsigned char *p = d;
	const unsigned char *q = s;
	while (n--)
		*p++ = *q++;
	return d;
}

static size_t str_len(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

static void write_all(int fd, const char *s, size_t n)
{
	while (n > 0) {
		long w = sys(NR_write, fd, s, n, 0, 0, 0);
		if (w == -EINTR)
			continue;
		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

/* A line buffer: out_str/out_num append, out_line writes it with a newline. */
static char out_buf[512];
static size_t out_len;
static void out_str(const char *s)
{
	while (*s && out_len < sizeof(out_buf) - 1)
		out_buf[out_len++] = *s++;
}
static void out_num(long long v)
{
	char tmp[24];
	int i = 0;
	unsigned long long u = v < 0 ? (unsigned long long)-v : (unsigned long long)v;
	if (v < 0)
		out_str("-");
	do {
		tmp[i++] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	while (i > 0 && out_len < sizeof(out_buf) - 1)
		out_buf[out_len++] = tmp[--i];
}
static void out_line(int fd)
{
	out_buf[out_len++] = '\n';
	write_all(fd, out_buf, out_len);
	out_len = 0;
}

/* die prints "NAME: WHAT: errno N" to stderr and exits 1. */
static void die(const char *name, const char *what, long err)
{
	out_str(name);
	out_str(": ");
	out_str(what);
	out_str(": errno ");
	out_num(-err);
	out_line(2);
	sys(NR_exit_group, 1, 0, 0, 0, 0, 0);
	__builtin_unreachable();
}

static long parse_num(const char *s)
{
	long v = 0;
	while (*s >= '0' && *s <= '9')
		v = v * 10 + (*s++ - '0');
	return *s ? -1 : v;
}

static long long now_usec(void)
{
	struct timespec ts;
	sys(NR_clock_gettime, CLOCK_MONOTONIC, &ts, 0, 0, 0, 0);
	return (long long)ts.sec * 1000000 + ts.nsec / 1000;
}

/* stop_signals blocks SIGTERM and SIGINT and returns a signalfd that becomes readable when one
 * arrives. */
static int stop_signals(const char *name)
{
	u64 mask = (1ULL << (SIGTERM - 1)) | (1ULL << (SIGINT - 1));
	long r = sys(NR_rt_sigprocmask, SIG_BLOCK, &mask, 0, 8, 0, 0);
	if (r < 0)
		die(name, "rt_sigprocmask", r);
	r = sys(NR_signalfd4, -1, &mask, 8, 0, 0, 0);
	if (r < 0)
		die(name, "signalfd", r);
	return (int)r;
}

/* wait_readable waits until fd is readable (returns 1) or a stop signal arrived (returns 0). */
static int wait_readable(const char *name, int fd, int sigfd)
{
	for (;;) {
		struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = sigfd, .events = POLLIN}};
		long r = sys(NR_ppoll, p, 2, 0, 0, 0, 0);
		if (r == -EINTR)
			continue;
		if (r < 0)
			die(name, "ppoll", r);
		if (p[1].revents)
			return 0;
		if (p[0].revents)
			return 1;
	}
}

/* tcp_listen returns a socket listening on 0.0.0.0:port. */
static int tcp_listen(const char *name, long port)
{
	long s = sys(NR_socket, AF_INET, SOCK_STREAM, 0, 0, 0, 0);
	if (s < 0)
		die(name, "socket", s);
	int one = 1;
	sys(NR_setsockopt, s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one), 0);
	struct sockaddr_in sin = {.family = AF_INET, .port = htons((u16)port)};
	long r = sys(NR_bind, s, &sin, sizeof(sin), 0, 0, 0);
	if (r < 0)
		die(name, "bind", r);
	r = sys(NR_listen, s, 1, 0, 0, 0, 0);
	if (r < 0)
		die(name, "listen", r);
	return (int)s;
}

/* port_arg returns PORT, a receiver helper's one argument, or prints the usage and exits 2. */
static long port_arg(const char *name, int argc, char **argv)
{
	long port = argc == 2 ? parse_num(argv[1]) : -1;
	if (port <= 0 || port > 65535) {
		out_str("usage: ");
		out_str(name);
		out_str(" PORT");
		out_line(2);
		sys(NR_exit_group, 2, 0, 0, 0, 0, 0);
	}
	return port;
}

/* tcp_serve listens on port (with a receive buffer of rcvbuf bytes unless 0, inherited by the
 * connection), says so on stdout, and waits for one connection: its socket, or -1 when a stop
 * signal came first. */
static long tcp_serve(const char *name, long port, int sigfd, int rcvbuf)
{
	int ls = tcp_listen(name, port);
	if (rcvbuf > 0) {
		long r = sys(NR_setsockopt, ls, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf), 0);
		if (r < 0)
			die(name, "setsockopt SO_RCVBUF", r);
	}
	out_str(name);
	out_str(": listening on port ");
	out_num(port);
	out_line(1);
	if (!wait_readable(name, ls, sigfd))
		return -1;
	long s = sys(NR_accept4, ls, 0, 0, 0, 0, 0);
	if (s < 0)
		die(name, "accept", s);
	return s;
}

int main(int argc, char **argv);

__attribute__((used)) void start_c(long *sp)
{
	int argc = (int)sp[0];
	char **argv = (char **)(sp + 1);
	sys(NR_exit_group, main(argc, argv), 0, 0, 0, 0, 0);
	__builtin_unreachable();
}

#endif
